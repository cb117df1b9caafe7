/* Hashes, HMAC and HKDF against published known-answer vectors:
 * SM3 (GB/T 32905-2016 appendix A), SHA-256/512 (FIPS 180-4 examples),
 * HMAC-SHA-256/512 (RFC 4231), HMAC-SM3 (the vector of Bouncy Castle's
 * HMacTest, an independent implementation; `openssl mac` on this machine
 * gives the same value), HKDF-SHA-256 (RFC 5869 test cases 1 and 3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/hash.h"

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

static void check_hex(const uint8_t *got, const char *want_hex)
{
	uint8_t want[256];
	size_t n = unhex(want_hex, want);
	assert_memory_equal(got, want, n);
}

static void test_sm3_kat(void **state)
{
	(void)state;
	uint8_t d[QW_SM3_BYTES];
	/* GB/T 32905-2016 A.1 */
	assert_int_equal(qw_hash(QW_HASH_SM3, "abc", 3, d), 0);
	check_hex(d, "66c7f0f462eeedd9d1f2d46bdc10e4e2"
		     "4167c4875cf2f7a2297da02b8f4ba8e0");
	/* GB/T 32905-2016 A.2: "abcd" repeated 16 times (512 bits) */
	char m[65] = {0};
	for (int i = 0; i < 16; i++)
		memcpy(m + 4 * i, "abcd", 4);
	assert_int_equal(qw_hash(QW_HASH_SM3, m, 64, d), 0);
	check_hex(d, "debe9ff92275b8a138604889c18e5a4d"
		     "6fdb70e5387e5765293dcba39c0c5732");
	assert_int_equal(qw_hash_bytes(QW_HASH_SM3), 32);
}

static void test_sha2_kat(void **state)
{
	(void)state;
	uint8_t d[QW_SHA512_BYTES];
	assert_int_equal(qw_hash(QW_HASH_SHA256, "abc", 3, d), 0);
	check_hex(d, "ba7816bf8f01cfea414140de5dae2223"
		     "b00361a396177a9cb410ff61f20015ad");
	assert_int_equal(qw_hash(QW_HASH_SHA512, "abc", 3, d), 0);
	check_hex(d, "ddaf35a193617abacc417349ae204131"
		     "12e6fa4e89a97ea20a9eeee64b55d39a"
		     "2192992a274fc1a836ba3c23a3feebbd"
		     "454d4423643ce80e2a9ac94fa54ca49f");
	/* Empty message, NULL data allowed. */
	assert_int_equal(qw_hash(QW_HASH_SHA256, NULL, 0, d), 0);
	check_hex(d, "e3b0c44298fc1c149afbf4c8996fb924"
		     "27ae41e4649b934ca495991b7852b855");
}

/* Streaming in uneven pieces equals one-shot, and the object is reusable
 * after final. */
static void test_streaming(void **state)
{
	(void)state;
	uint8_t msg[1000];
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 31 + 7);
	enum qw_hash_alg algs[] = {QW_HASH_SM3, QW_HASH_SHA256,
				   QW_HASH_SHA512};
	for (size_t a = 0; a < 3; a++) {
		uint8_t one[64], inc[64];
		assert_int_equal(qw_hash(algs[a], msg, sizeof(msg), one), 0);
		struct qw_hash *h = qw_hash_new(algs[a]);
		assert_non_null(h);
		for (int round = 0; round < 2; round++) {
			size_t off = 0, step = 1;
			while (off < sizeof(msg)) {
				size_t m = step < sizeof(msg) - off
						   ? step
						   : sizeof(msg) - off;
				assert_int_equal(qw_hash_update(h, msg + off, m), 0);
				off += m;
				step = step * 3 + 1;
			}
			assert_int_equal(qw_hash_final(h, inc), 0);
			assert_memory_equal(one, inc, qw_hash_bytes(algs[a]));
		}
		qw_hash_free(h);
	}
	qw_hash_free(NULL);
}

static void test_hmac_rfc4231(void **state)
{
	(void)state;
	uint8_t key[131], out[64];
	memset(key, 0x0b, 20);
	/* Test case 1 */
	assert_int_equal(qw_hmac(QW_HASH_SHA256, key, 20, "Hi There", 8, out), 0);
	check_hex(out, "b0344c61d8db38535ca8afceaf0bf12b"
		       "881dc200c9833da726e9376c2e32cff7");
	assert_int_equal(qw_hmac(QW_HASH_SHA512, key, 20, "Hi There", 8, out), 0);
	check_hex(out, "87aa7cdea5ef619d4ff0b4241a1d6cb0"
		       "2379f4e2ce4ec2787ad0b30545e17cde"
		       "daa833b7d6b8a702038b274eaea3f4e4"
		       "be9d914eeb61f1702e696c203a126854");
	/* Test case 2 */
	const char *d2 = "what do ya want for nothing?";
	assert_int_equal(qw_hmac(QW_HASH_SHA256, "Jefe", 4, d2, strlen(d2), out), 0);
	check_hex(out, "5bdcc146bf60754e6a042426089575c7"
		       "5a003f089d2739839dec58b964ec3843");
	/* Test case 6: key longer than the block (131 bytes of 0xaa) */
	memset(key, 0xaa, 131);
	const char *d6 = "Test Using Larger Than Block-Size Key - Hash Key First";
	assert_int_equal(qw_hmac(QW_HASH_SHA256, key, 131, d6, strlen(d6), out), 0);
	check_hex(out, "60e431591ee0b67f0d8a26aacbf5b77f"
		       "8e0bc6213728c5140546040f0ee37f54");
}

static void test_hmac_sm3(void **state)
{
	(void)state;
	uint8_t key[20], out[32];
	memset(key, 0x0b, sizeof(key));
	assert_int_equal(qw_hmac(QW_HASH_SM3, key, 20, "Hi There", 8, out), 0);
	check_hex(out, "51b00d1fb49832bfb01c3ce27848e59f"
		       "871d9ba938dc563b338ca964755cce70");
}

/* Streaming HMAC equals one-shot, restarts with the same key after final,
 * and verify accepts the right (possibly truncated) tag and rejects a
 * flipped bit. */
static void test_hmac_streaming_verify(void **state)
{
	(void)state;
	uint8_t key[20], full[32];
	memset(key, 0x0b, sizeof(key));
	assert_int_equal(qw_hmac(QW_HASH_SM3, key, 20, "Hi There", 8, full), 0);
	struct qw_hmac *m = qw_hmac_new(QW_HASH_SM3, key, sizeof(key));
	assert_non_null(m);
	for (int round = 0; round < 2; round++) {
		uint8_t out[32];
		assert_int_equal(qw_hmac_update(m, "Hi ", 3), 0);
		assert_int_equal(qw_hmac_update(m, "There", 5), 0);
		assert_int_equal(qw_hmac_final(m, out), 0);
		assert_memory_equal(out, full, 32);
	}
	assert_int_equal(qw_hmac_update(m, "Hi There", 8), 0);
	assert_int_equal(qw_hmac_verify(m, full, 32), 0);
	assert_int_equal(qw_hmac_update(m, "Hi There", 8), 0);
	assert_int_equal(qw_hmac_verify(m, full, 16), 0);
	full[31] ^= 1;
	assert_int_equal(qw_hmac_update(m, "Hi There", 8), 0);
	assert_int_equal(qw_hmac_verify(m, full, 32), QW_EAUTH);
	assert_int_equal(qw_hmac_verify(m, full, 8), QW_EINVAL);
	qw_hmac_free(m);
	qw_hmac_free(NULL);
}

static void test_hkdf_rfc5869(void **state)
{
	(void)state;
	uint8_t ikm[22], salt[13], info[10], okm[42];
	memset(ikm, 0x0b, sizeof(ikm));
	for (int i = 0; i < 13; i++)
		salt[i] = (uint8_t)i;
	for (int i = 0; i < 10; i++)
		info[i] = (uint8_t)(0xf0 + i);
	/* Test case 1 */
	assert_int_equal(qw_hkdf(QW_HASH_SHA256, ikm, 22, salt, 13, info, 10,
				 okm, 42), 0);
	check_hex(okm, "3cb25f25faacd57a90434f64d0362f2a"
		       "2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
		       "34007208d5b887185865");
	/* Test case 3: no salt, no info */
	assert_int_equal(qw_hkdf(QW_HASH_SHA256, ikm, 22, NULL, 0, NULL, 0,
				 okm, 42), 0);
	check_hex(okm, "8da4e775a563c18f715f802a063c5a31"
		       "b8a11f5c5ee1879ec3454e5f3c738d2d"
		       "9d201395faa4b61a96c8");
	/* RFC 5869 2.3 length limit */
	static uint8_t big[255 * 32 + 1];
	assert_int_equal(qw_hkdf(QW_HASH_SHA256, ikm, 22, NULL, 0, NULL, 0,
				 big, sizeof(big)), QW_ERANGE);
	assert_int_equal(qw_hkdf(QW_HASH_SHA256, ikm, 22, NULL, 0, NULL, 0,
				 big, sizeof(big) - 1), 0);
	/* HKDF-SM3 works and differs from HKDF-SHA-256 */
	uint8_t okm3[42];
	assert_int_equal(qw_hkdf(QW_HASH_SM3, ikm, 22, salt, 13, info, 10,
				 okm3, 42), 0);
	assert_memory_not_equal(okm3, okm, 42);
}

static void test_names(void **state)
{
	(void)state;
	enum qw_hash_alg a;
	assert_int_equal(qw_hash_parse("sm3", &a), 0);
	assert_int_equal(a, QW_HASH_SM3);
	assert_int_equal(qw_hash_parse("SHA256", &a), 0);
	assert_int_equal(a, QW_HASH_SHA256);
	assert_int_equal(qw_hash_parse("sha-512", &a), 0);
	assert_int_equal(a, QW_HASH_SHA512);
	assert_int_equal(qw_hash_parse("md5", &a), QW_EPARSE);
	assert_string_equal(qw_hash_name(QW_HASH_SHA512), "sha512");
	assert_int_equal(qw_hash_bytes((enum qw_hash_alg)99), 0);
	uint8_t d[64];
	assert_int_equal(qw_hash((enum qw_hash_alg)99, "x", 1, d), QW_EINVAL);
	assert_null(qw_hash_new((enum qw_hash_alg)99));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sm3_kat),
		cmocka_unit_test(test_sha2_kat),
		cmocka_unit_test(test_streaming),
		cmocka_unit_test(test_hmac_rfc4231),
		cmocka_unit_test(test_hmac_sm3),
		cmocka_unit_test(test_hmac_streaming_verify),
		cmocka_unit_test(test_hkdf_rfc5869),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
