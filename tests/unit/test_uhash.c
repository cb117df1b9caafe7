#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "qwave/rng.h"
#include "qwave/uhash.h"

static struct qw_rng *rng;

static int setup(void **st)
{
	(void)st;
	rng = qw_rng_new_seeded(0x7561736800000001u);
	return rng ? 0 : -1;
}

static int teardown(void **st)
{
	(void)st;
	qw_rng_free(rng);
	return 0;
}

static void rand_elem(uint64_t e[2])
{
	e[0] = qw_rng_u64(rng);
	e[1] = qw_rng_u64(rng);
}

static void mul_both(uint64_t r[2], const uint64_t a[2], const uint64_t b[2])
{
	uint64_t p[2], q[2];

	qw_gf128_mul(q, a, b);
	qw_gf128_mul_portable(p, a, b);
	assert_memory_equal(q, p, sizeof(p));
	r[0] = q[0];
	r[1] = q[1];
}

static void test_field_axioms(void **st)
{
	(void)st;
	for (int i = 0; i < 2000; i++) {
		uint64_t a[2], b[2], c[2], ab[2], ba[2], abc1[2], abc2[2], bc[2], s[2], l[2], r1[2],
			r2[2];

		rand_elem(a);
		rand_elem(b);
		rand_elem(c);
		mul_both(ab, a, b);
		mul_both(ba, b, a);
		assert_memory_equal(ab, ba, sizeof(ab));
		mul_both(abc1, ab, c);
		mul_both(bc, b, c);
		mul_both(abc2, a, bc);
		assert_memory_equal(abc1, abc2, sizeof(abc1));
		/* a (b + c) = a b + a c */
		s[0] = b[0] ^ c[0];
		s[1] = b[1] ^ c[1];
		mul_both(l, a, s);
		mul_both(r1, a, c);
		r2[0] = ab[0] ^ r1[0];
		r2[1] = ab[1] ^ r1[1];
		assert_memory_equal(l, r2, sizeof(l));
	}
}

static void test_known_products(void **st)
{
	uint64_t one[2] = { 1, 0 }, x[2] = { 2, 0 }, x127[2] = { 0, (uint64_t)1 << 63 };
	uint64_t x64[2] = { 0, 1 }, r[2], a[2];

	(void)st;
	/* x * x^127 = x^128 = x^7 + x^2 + x + 1 */
	mul_both(r, x, x127);
	assert_true(r[0] == 0x87 && r[1] == 0);
	mul_both(r, x64, x64);
	assert_true(r[0] == 0x87 && r[1] == 0);
	/* x^127 * x^127 = x^254 = x^126 (x^7 + x^2 + x + 1) = x^133 + x^128 + x^127 + x^126
	 * = x^5 (x^7 + x^2 + x + 1) + (x^7 + x^2 + x + 1) + x^127 + x^126. */
	mul_both(r, x127, x127);
	assert_true(r[0] == ((0x87u << 5) ^ 0x87u) && r[1] == ((uint64_t)3 << 62));
	rand_elem(a);
	mul_both(r, one, a);
	assert_memory_equal(r, a, sizeof(r));
}

/* GCM's GHASH (NIST SP 800-38D, 6.4) is polynomial evaluation in this field
 * with the bits of each 16-byte block reflected. Take GHASH out of OpenSSL's
 * AES-GCM (tag = GHASH_H(C) xor E_K(J0), H = E_K(0^128)) and recompute it. */
static void from_gcm(uint64_t e[2], const uint8_t b[16])
{
	e[0] = e[1] = 0;
	for (unsigned i = 0; i < 128; i++)
		if ((b[i / 8] >> (7 - i % 8)) & 1)
			e[i / 64] |= (uint64_t)1 << (i % 64);
}

static void aes_block(const uint8_t key[16], const uint8_t in[16], uint8_t out[16])
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int len = 0;

	assert_non_null(ctx);
	assert_int_equal(EVP_EncryptInit_ex(ctx, EVP_aes_128_ecb(), NULL, key, NULL), 1);
	EVP_CIPHER_CTX_set_padding(ctx, 0);
	assert_int_equal(EVP_EncryptUpdate(ctx, out, &len, in, 16), 1);
	assert_int_equal(len, 16);
	EVP_CIPHER_CTX_free(ctx);
}

static void test_ghash_via_openssl_gcm(void **st)
{
	(void)st;
	for (int trial = 0; trial < 20; trial++) {
		uint8_t key[16], iv[12], pt[64], ct[64], tag[16], zero[16] = { 0 }, hb[16], j0[16],
			ek0[16], gh[16], lenblk[16] = { 0 };
		uint64_t h[2], acc[2] = { 0, 0 }, m[2], want[2];
		EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
		int len = 0;

		assert_int_equal(qw_rng_bytes(rng, key, sizeof(key)), 0);
		assert_int_equal(qw_rng_bytes(rng, iv, sizeof(iv)), 0);
		assert_int_equal(qw_rng_bytes(rng, pt, sizeof(pt)), 0);
		assert_int_equal(EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, key, iv), 1);
		assert_int_equal(EVP_EncryptUpdate(ctx, ct, &len, pt, sizeof(pt)), 1);
		assert_int_equal(EVP_EncryptFinal_ex(ctx, ct + len, &len), 1);
		assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag), 1);
		EVP_CIPHER_CTX_free(ctx);

		aes_block(key, zero, hb);
		memcpy(j0, iv, 12);
		j0[12] = j0[13] = j0[14] = 0;
		j0[15] = 1;
		aes_block(key, j0, ek0);
		for (int i = 0; i < 16; i++)
			gh[i] = tag[i] ^ ek0[i];
		from_gcm(h, hb);
		for (int blk = 0; blk < 4; blk++) {
			from_gcm(m, ct + 16 * blk);
			acc[0] ^= m[0];
			acc[1] ^= m[1];
			mul_both(acc, acc, h);
		}
		lenblk[14] = (uint8_t)((8 * sizeof(ct)) >> 8); /* len(C) in bits, 64-bit BE */
		lenblk[15] = (uint8_t)(8 * sizeof(ct));
		from_gcm(m, lenblk);
		acc[0] ^= m[0];
		acc[1] ^= m[1];
		mul_both(acc, acc, h);
		from_gcm(want, gh);
		assert_memory_equal(acc, want, sizeof(acc));
	}
}

static void load16(uint64_t e[2], const uint8_t *b)
{
	e[0] = e[1] = 0;
	for (int i = 7; i >= 0; i--) {
		e[0] = (e[0] << 8) | b[i];
		e[1] = (e[1] << 8) | b[8 + i];
	}
}

/* h = m1 k^4 + m2 k^3 + m3 k^2 + {len, 0} k for a 40-byte message. */
static void test_uhash_bytes_formula(void **st)
{
	uint8_t key[16], msg[48] = { 0 }, out[16];
	uint64_t k[2], k2[2], k3[2], k4[2], m[2], t[2], want[2] = { 0, 0 }, got[2];

	(void)st;
	assert_int_equal(qw_rng_bytes(rng, key, sizeof(key)), 0);
	assert_int_equal(qw_rng_bytes(rng, msg, 40), 0);
	load16(k, key);
	mul_both(k2, k, k);
	mul_both(k3, k2, k);
	mul_both(k4, k3, k);
	const uint64_t *pw[3] = { k4, k3, k2 };
	for (int i = 0; i < 3; i++) {
		load16(m, msg + 16 * i); /* bytes 40..47 are the zero padding */
		mul_both(t, m, pw[i]);
		want[0] ^= t[0];
		want[1] ^= t[1];
	}
	m[0] = 40;
	m[1] = 0;
	mul_both(t, m, k);
	want[0] ^= t[0];
	want[1] ^= t[1];
	qw_uhash_bytes(key, msg, 40, out);
	load16(got, out);
	assert_memory_equal(got, want, sizeof(got));
	/* Zero padding does not make "msg" and "msg || 0" collide. */
	{
		uint8_t o2[16];

		qw_uhash_bytes(key, msg, 41, o2);
		assert_memory_not_equal(out, o2, 16);
	}
}

static void test_uhash_bits_formula(void **st)
{
	uint8_t key[16], out[16];
	struct qw_bitvec *v = qw_bitvec_new(200);
	uint64_t k[2], k2[2], k3[2], m[2], t[2], want[2] = { 0, 0 }, got[2];

	(void)st;
	assert_non_null(v);
	assert_int_equal(qw_rng_bytes(rng, key, sizeof(key)), 0);
	for (size_t i = 0; i < v->nwords; i++)
		v->w[i] = qw_rng_u64(rng);
	v->w[3] &= ((uint64_t)1 << (200 - 192)) - 1;
	load16(k, key);
	mul_both(k2, k, k);
	mul_both(k3, k2, k);
	m[0] = v->w[0];
	m[1] = v->w[1];
	mul_both(t, m, k3);
	want[0] ^= t[0];
	want[1] ^= t[1];
	m[0] = v->w[2];
	m[1] = v->w[3];
	mul_both(t, m, k2);
	want[0] ^= t[0];
	want[1] ^= t[1];
	m[0] = 200;
	m[1] = 1;
	mul_both(t, m, k);
	want[0] ^= t[0];
	want[1] ^= t[1];
	qw_uhash_bits(key, v, out);
	load16(got, out);
	assert_memory_equal(got, want, sizeof(got));
	qw_bitvec_free(v);
}

/* Empirical collision rate of 8-bit truncated hashes of two fixed
 * different messages over random keys: the bound is (L + 1) / 2^8 with
 * L = 2 blocks; allow 5 standard deviations of a binomial. */
static void test_truncated_collision_rate(void **st)
{
	const int trials = 20000;
	const uint8_t a[20] = "first message ......", b[20] = "second message .....";
	double p = 3.0 / 256, limit;
	int coll = 0;

	(void)st;
	for (int i = 0; i < trials; i++) {
		uint8_t key[16], ha[16], hb[16];

		assert_int_equal(qw_rng_bytes(rng, key, sizeof(key)), 0);
		qw_uhash_bytes(key, a, sizeof(a), ha);
		qw_uhash_bytes(key, b, sizeof(b), hb);
		coll += ha[0] == hb[0];
	}
	limit = trials * p + 5 * sqrt(trials * p * (1 - p));
	assert_true(coll <= (int)limit);
	assert_true(qw_uhash_collision_bound(160, 8) == 3.0 / 256);
	assert_true(qw_uhash_collision_bound(0, 64) == ldexp(1, -64));
	assert_true(qw_uhash_collision_bound((uint64_t)1 << 20, 64) == ldexp(8193, -64));
}

static void test_wcmac(void **st)
{
	uint8_t hk[16], otp[16], otp2[16], tag[16], tag2[16], h[16], msg[100];
	struct qw_wcmac *mac;

	(void)st;
	assert_int_equal(qw_rng_bytes(rng, hk, sizeof(hk)), 0);
	assert_int_equal(qw_rng_bytes(rng, otp, sizeof(otp)), 0);
	assert_int_equal(qw_rng_bytes(rng, otp2, sizeof(otp2)), 0);
	assert_int_equal(qw_rng_bytes(rng, msg, sizeof(msg)), 0);
	mac = qw_wcmac_new(hk);
	assert_non_null(mac);
	qw_wcmac_tag(mac, otp, msg, sizeof(msg), tag);
	/* tag = h_k(msg) xor r */
	qw_uhash_bytes(hk, msg, sizeof(msg), h);
	for (int i = 0; i < 16; i++)
		assert_int_equal(tag[i], h[i] ^ otp[i]);
	assert_int_equal(qw_wcmac_verify(mac, otp, msg, sizeof(msg), tag), 0);
	/* A fresh pad gives an unrelated-looking tag; both verify. */
	qw_wcmac_tag(mac, otp2, msg, sizeof(msg), tag2);
	assert_memory_not_equal(tag, tag2, 16);
	assert_int_equal(qw_wcmac_verify(mac, otp2, msg, sizeof(msg), tag2), 0);
	assert_int_equal(qw_wcmac_verify(mac, otp2, msg, sizeof(msg), tag), QW_EAUTH);
	/* Tampering: any flipped message or tag bit, truncation, extension. */
	for (size_t bit = 0; bit < 8 * sizeof(msg); bit += 13) {
		msg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		assert_int_equal(qw_wcmac_verify(mac, otp, msg, sizeof(msg), tag), QW_EAUTH);
		msg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	for (size_t bit = 0; bit < 128; bit++) {
		tag[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		assert_int_equal(qw_wcmac_verify(mac, otp, msg, sizeof(msg), tag), QW_EAUTH);
		tag[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	assert_int_equal(qw_wcmac_verify(mac, otp, msg, sizeof(msg) - 1, tag), QW_EAUTH);
	assert_int_equal(qw_wcmac_verify(mac, otp, msg, sizeof(msg), tag), 0);
	/* Empty message. */
	qw_wcmac_tag(mac, otp, NULL, 0, tag);
	assert_int_equal(qw_wcmac_verify(mac, otp, NULL, 0, tag), 0);
	assert_int_equal(qw_wcmac_verify(mac, otp, msg, 1, tag), QW_EAUTH);
	qw_wcmac_free(mac);
	qw_wcmac_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_field_axioms),
		cmocka_unit_test(test_known_products),
		cmocka_unit_test(test_ghash_via_openssl_gcm),
		cmocka_unit_test(test_uhash_bytes_formula),
		cmocka_unit_test(test_uhash_bits_formula),
		cmocka_unit_test(test_truncated_collision_rate),
		cmocka_unit_test(test_wcmac),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
