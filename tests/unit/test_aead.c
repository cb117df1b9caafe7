/* AEAD: AES-256-GCM against the McGrew-Viega GCM specification test cases
 * 13-16 (the 256-bit key cases, also in NIST's GCM validation set), the SM4
 * block cipher against GB/T 32907-2016 appendix A (single block and the
 * 1,000,000-fold iteration) through the same EVP cipher our SM4-CTR mode
 * uses, round trips for every available algorithm and both APIs, and
 * tamper detection: any flipped bit of ciphertext, tag, aad or nonce gives
 * QW_EAUTH and leaves no plaintext in the output buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "qwave/aead.h"

static size_t unhex(const char *h, uint8_t *out)
{
	size_t n = strlen(h) / 2;
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		sscanf(h + 2 * i, "%2x", &v);
		out[i] = (uint8_t)v;
	}
	return n;
}

static const char *gcm_k15 =
	"feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
static const char *gcm_iv15 = "cafebabefacedbaddecaf888";
static const char *gcm_p15 =
	"d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
	"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
static const char *gcm_c15 =
	"522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
	"8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad";

struct gcm_case {
	const char *k, *iv, *p, *a, *c, *t;
	size_t plen; /* bytes of p/c used */
};

static void test_gcm_kat(void **state)
{
	(void)state;
	const char *z32 = "0000000000000000000000000000000000000000000000000000000000000000";
	const char *z12 = "000000000000000000000000";
	const struct gcm_case cases[] = {
		/* 13: empty everything */
		{z32, z12, "", "", "", "530f8afbc74536b9a963b4f1c4cb738b", 0},
		/* 14: one zero block */
		{z32, z12, "00000000000000000000000000000000", "",
		 "cea7403d4d606b6e074ec5d3baf39d18",
		 "d0d1c8a799996bf0265b98b5d48ab919", 16},
		/* 15: four blocks, no aad */
		{gcm_k15, gcm_iv15, gcm_p15, "", gcm_c15,
		 "b094dac5d93471bdec1a502270e3cc6c", 64},
		/* 16: 60 bytes with aad */
		{gcm_k15, gcm_iv15, gcm_p15,
		 "feedfacedeadbeeffeedfacedeadbeefabaddad2", gcm_c15,
		 "76fc6ece0f4e1768cddf8853bb2d551b", 60},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct gcm_case *c = &cases[i];
		uint8_t k[32], iv[12], p[64], a[32], ct[64], t[16];
		uint8_t out[64], tag[16], back[64];
		unhex(c->k, k);
		unhex(c->iv, iv);
		unhex(c->p, p);
		size_t alen = unhex(c->a, a);
		unhex(c->c, ct);
		unhex(c->t, t);
		assert_int_equal(qw_aead_seal(QW_AEAD_AES256_GCM, k, 32, iv, a,
					      alen, p, c->plen, out, tag), 0);
		assert_memory_equal(out, ct, c->plen);
		assert_memory_equal(tag, t, 16);
		assert_int_equal(qw_aead_open(QW_AEAD_AES256_GCM, k, 32, iv, a,
					      alen, ct, c->plen, t, back), 0);
		assert_memory_equal(back, p, c->plen);
	}
}

/* GB/T 32907-2016 appendix A examples 1 and 2. */
static void test_sm4_kat(void **state)
{
	(void)state;
	uint8_t k[16], blk[16], want[16];
	unhex("0123456789abcdeffedcba9876543210", k);
	memcpy(blk, k, 16);
	EVP_CIPHER *sm4 = EVP_CIPHER_fetch(NULL, "SM4-ECB", NULL);
	assert_non_null(sm4);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	assert_non_null(ctx);
	assert_true(EVP_EncryptInit_ex2(ctx, sm4, k, NULL, NULL));
	EVP_CIPHER_CTX_set_padding(ctx, 0);
	int outl;
	assert_true(EVP_EncryptUpdate(ctx, blk, &outl, blk, 16));
	unhex("681edf34d206965e86b3e94f536e4246", want);
	assert_memory_equal(blk, want, 16);
	for (int i = 1; i < 1000000; i++)
		assert_true(EVP_EncryptUpdate(ctx, blk, &outl, blk, 16));
	unhex("595298c7c6fd271f0402f804c33d3f66", want);
	assert_memory_equal(blk, want, 16);
	EVP_CIPHER_CTX_free(ctx);
	EVP_CIPHER_free(sm4);
}

static const enum qw_aead_alg all_algs[] = {
	QW_AEAD_AES256_GCM, QW_AEAD_SM4_GCM, QW_AEAD_SM4_CTR_HMAC_SM3};

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 131 + (i >> 8));
}

static int all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

/* Round trips at lengths around block and chunk edges; the one-shot and
 * context APIs agree; a context is reusable across messages. */
static void test_round_trip(void **state)
{
	(void)state;
	static const size_t lens[] = {0, 1, 15, 16, 17, 63, 64, 65, 1000, 4096};
	for (size_t ai = 0; ai < 3; ai++) {
		enum qw_aead_alg alg = all_algs[ai];
		uint8_t key[32], nonce[12], aad[40], pt[4096], ct[4096], ct2[4096];
		uint8_t tag[32], tag2[32], back[4096];
		size_t kl = qw_aead_key_bytes(alg), tl = qw_aead_tag_bytes(alg);
		fill(key, sizeof(key), 1);
		if (!qw_aead_available(alg)) {
			assert_int_equal(alg, QW_AEAD_SM4_GCM);
			assert_int_equal(qw_aead_seal(alg, key, kl, nonce, NULL, 0,
						      NULL, 0, ct, tag),
					 QW_EUNSUPPORTED);
			continue;
		}
		int err;
		struct qw_aead *a = qw_aead_new(alg, key, kl, &err);
		assert_non_null(a);
		assert_int_equal(qw_aead_get_alg(a), alg);
		for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
			size_t n = lens[li];
			fill(nonce, 12, (unsigned)li);
			fill(aad, sizeof(aad), 7);
			fill(pt, n, (unsigned)(li + 3));
			assert_int_equal(qw_aead_seal(alg, key, kl, nonce, aad, 40,
						      pt, n, ct, tag), 0);
			assert_int_equal(qw_aead_ctx_seal(a, nonce, aad, 40, pt, n,
							  ct2, tag2), 0);
			assert_memory_equal(ct, ct2, n);
			assert_memory_equal(tag, tag2, tl);
			if (n >= 16)
				assert_memory_not_equal(ct, pt, n);
			memset(back, 0, sizeof(back));
			assert_int_equal(qw_aead_ctx_open(a, nonce, aad, 40, ct, n,
							  tag, back), 0);
			assert_memory_equal(back, pt, n);
			/* in place */
			memcpy(back, pt, n);
			assert_int_equal(qw_aead_ctx_seal(a, nonce, aad, 40, back,
							  n, back, tag2), 0);
			assert_memory_equal(back, ct, n);
			assert_int_equal(qw_aead_open(alg, key, kl, nonce, aad, 40,
						      back, n, tag2, back), 0);
			assert_memory_equal(back, pt, n);
		}
		qw_aead_free(a);
		/* Wrong key length */
		assert_int_equal(qw_aead_seal(alg, key, kl - 1, nonce, NULL, 0,
					      NULL, 0, ct, tag), QW_EINVAL);
		assert_null(qw_aead_new(alg, key, kl + 1, &err));
		assert_int_equal(err, QW_EINVAL);
	}
	qw_aead_free(NULL);
}

/* Every fifth bit of ct, tag, aad and nonce, flipped alone, is rejected
 * with QW_EAUTH and the output buffer holds no plaintext: it is either
 * untouched (the 0xee marker: EtM verifies before decrypting) or wiped to
 * zero (GCM decrypts, then wipes). */
static void test_tamper(void **state)
{
	(void)state;
	for (size_t ai = 0; ai < 3; ai++) {
		enum qw_aead_alg alg = all_algs[ai];
		if (!qw_aead_available(alg))
			continue;
		size_t kl = qw_aead_key_bytes(alg), tl = qw_aead_tag_bytes(alg);
		uint8_t key[32], nonce[12], aad[20], pt[50], ct[50], tag[32];
		uint8_t out[50];
		fill(key, 32, 9);
		fill(nonce, 12, 4);
		fill(aad, 20, 5);
		fill(pt, 50, 6);
		struct qw_aead *a = qw_aead_new(alg, key, kl, NULL);
		assert_non_null(a);
		assert_int_equal(qw_aead_ctx_seal(a, nonce, aad, 20, pt, 50, ct,
						  tag), 0);
		struct {
			uint8_t *p;
			size_t n;
		} fields[] = {{ct, 50}, {tag, tl}, {aad, 20}, {nonce, 12}};
		for (size_t f = 0; f < 4; f++) {
			for (size_t bit = 0; bit < fields[f].n * 8; bit += 5) {
				fields[f].p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
				memset(out, 0xee, sizeof(out));
				assert_int_equal(qw_aead_ctx_open(a, nonce, aad, 20,
								  ct, 50, tag, out),
						 QW_EAUTH);
				int untouched = 1;
				for (size_t i = 0; i < 50; i++)
					untouched &= out[i] == 0xee;
				assert_true(untouched || all_zero(out, 50));
				assert_memory_not_equal(out, pt, 16);
				fields[f].p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			}
		}
		/* Truncated ciphertext */
		assert_int_equal(qw_aead_ctx_open(a, nonce, aad, 20, ct, 49, tag,
						  out), QW_EAUTH);
		/* And the untampered message still opens. */
		assert_int_equal(qw_aead_ctx_open(a, nonce, aad, 20, ct, 50, tag,
						  out), 0);
		assert_memory_equal(out, pt, 50);
		qw_aead_free(a);
	}
}

/* The EtM key split is bound to the documented HKDF-SM3 derivation: a
 * different 32-byte key (one bit) gives a different ciphertext and tag. */
static void test_etm_key_separation(void **state)
{
	(void)state;
	enum qw_aead_alg alg = QW_AEAD_SM4_CTR_HMAC_SM3;
	uint8_t k1[32], k2[32], nonce[12] = {0}, pt[32] = {0};
	uint8_t c1[32], c2[32], t1[32], t2[32];
	fill(k1, 32, 1);
	memcpy(k2, k1, 32);
	k2[31] ^= 0x80;
	assert_int_equal(qw_aead_seal(alg, k1, 32, nonce, NULL, 0, pt, 32, c1, t1), 0);
	assert_int_equal(qw_aead_seal(alg, k2, 32, nonce, NULL, 0, pt, 32, c2, t2), 0);
	assert_memory_not_equal(c1, c2, 32);
	assert_memory_not_equal(t1, t2, 32);
	uint8_t out[32];
	assert_int_equal(qw_aead_open(alg, k2, 32, nonce, NULL, 0, c1, 32, t1, out),
			 QW_EAUTH);
	assert_int_equal(qw_aead_tag_bytes(alg), 32);
	assert_int_equal(qw_aead_key_bytes(alg), 32);
	assert_int_equal(qw_aead_nonce_bytes(alg), 12);
}

static void test_sealed_msg(void **state)
{
	(void)state;
	for (size_t ai = 0; ai < 3; ai++) {
		enum qw_aead_alg alg = all_algs[ai];
		if (!qw_aead_available(alg))
			continue;
		size_t kl = qw_aead_key_bytes(alg);
		size_t ovh = qw_aead_msg_overhead(alg);
		uint8_t key[32], pt[100], msg[100 + QW_AEAD_MSG_MAX_OVERHEAD];
		uint8_t msg2[sizeof(msg)], back[100];
		size_t mlen, mlen2, plen;
		enum qw_aead_alg got;
		fill(key, 32, 2);
		fill(pt, 100, 3);
		assert_int_equal(qw_aead_seal_msg(alg, key, kl, (const uint8_t *)"hdr",
						  3, pt, 100, msg, sizeof(msg),
						  &mlen), 0);
		assert_int_equal(mlen, 100 + ovh);
		assert_int_equal(msg[0], alg);
		/* Fresh random nonce each time. */
		assert_int_equal(qw_aead_seal_msg(alg, key, kl, (const uint8_t *)"hdr",
						  3, pt, 100, msg2, sizeof(msg2),
						  &mlen2), 0);
		assert_memory_not_equal(msg + 1, msg2 + 1, 12);
		assert_int_equal(qw_aead_open_msg(0, key, kl, (const uint8_t *)"hdr",
						  3, msg, mlen, back, sizeof(back),
						  &plen, &got), 0);
		assert_int_equal(plen, 100);
		assert_int_equal(got, alg);
		assert_memory_equal(back, pt, 100);
		/* Wrong aad, expected-alg mismatch, truncation, small buffer. */
		assert_int_equal(qw_aead_open_msg(0, key, kl, (const uint8_t *)"hdX",
						  3, msg, mlen, back, sizeof(back),
						  &plen, NULL), QW_EAUTH);
		enum qw_aead_alg other = alg == QW_AEAD_AES256_GCM
						 ? QW_AEAD_SM4_CTR_HMAC_SM3
						 : QW_AEAD_AES256_GCM;
		assert_int_equal(qw_aead_open_msg(other, key, kl, (const uint8_t *)"hdr",
						  3, msg, mlen, back, sizeof(back),
						  &plen, NULL), QW_EAUTH);
		assert_int_equal(qw_aead_open_msg(0, key, kl, (const uint8_t *)"hdr",
						  3, msg, ovh - 1, back, sizeof(back),
						  &plen, NULL), QW_EPARSE);
		assert_int_equal(qw_aead_open_msg(0, key, kl, (const uint8_t *)"hdr",
						  3, msg, mlen, back, 99, &plen,
						  NULL), QW_ERANGE);
		assert_int_equal(qw_aead_seal_msg(alg, key, kl, NULL, 0, pt, 100,
						  msg2, 100 + ovh - 1, &mlen2),
				 QW_ERANGE);
		/* Swapping the id byte to another algorithm with the same key
		 * length must not verify (the id is authenticated). */
		if (kl == 32) {
			msg[0] = (uint8_t)other;
			assert_int_not_equal(qw_aead_open_msg(0, key, kl,
							      (const uint8_t *)"hdr", 3,
							      msg, mlen, back,
							      sizeof(back), &plen, NULL),
					     0);
		}
		msg[0] = 0x7f;
		assert_int_equal(qw_aead_open_msg(0, key, kl, NULL, 0, msg, mlen,
						  back, sizeof(back), &plen, NULL),
				 QW_EPARSE);
	}
}

static void test_names(void **state)
{
	(void)state;
	enum qw_aead_alg a;
	assert_int_equal(qw_aead_parse("aes-256-gcm", &a), 0);
	assert_int_equal(a, QW_AEAD_AES256_GCM);
	assert_int_equal(qw_aead_parse("SM4-CTR-HMAC-SM3", &a), 0);
	assert_int_equal(a, QW_AEAD_SM4_CTR_HMAC_SM3);
	assert_int_equal(qw_aead_parse("sm4", &a), 0);
	assert_int_equal(a, qw_aead_sm4_best());
	int r = qw_aead_parse("sm4-gcm", &a);
	assert_int_equal(a, QW_AEAD_SM4_GCM);
	assert_int_equal(r, qw_aead_available(QW_AEAD_SM4_GCM) ? 0 : QW_EUNSUPPORTED);
	/* OpenSSL 3.0 has no SM4-GCM: the best SM4 mode is then EtM. */
	if (!qw_aead_available(QW_AEAD_SM4_GCM))
		assert_int_equal(qw_aead_sm4_best(), QW_AEAD_SM4_CTR_HMAC_SM3);
	assert_int_equal(qw_aead_parse("rot13", &a), QW_EPARSE);
	for (size_t i = 0; i < 3; i++) {
		assert_int_not_equal(qw_aead_parse(qw_aead_name(all_algs[i]), &a),
				     QW_EPARSE);
		assert_int_equal(a, all_algs[i]);
	}
	assert_string_equal(qw_aead_name((enum qw_aead_alg)0), "unknown");
	assert_int_equal(qw_aead_key_bytes((enum qw_aead_alg)9), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gcm_kat),
		cmocka_unit_test(test_sm4_kat),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_tamper),
		cmocka_unit_test(test_etm_key_separation),
		cmocka_unit_test(test_sealed_msg),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
