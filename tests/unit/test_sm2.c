/* SM2 and ECDSA P-256: sign/verify round trips; verification fails on any
 * flipped bit of message or signature and on a different SM2 identifier;
 * the default identifier is "1234567812345678" (explicit and NULL agree);
 * SM2 encryption round trip, tampered ciphertexts rejected; PEM save/load
 * round trips, keys written 0600 and a group/world-readable file refused
 * and left untouched. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "qwave/secmem.h"
#include "qwave/sm2.h"

static const char msg[] = "message digest"; /* GB/T 32918.2 example text */

static void sign_verify(enum qw_sm2_alg alg)
{
	int err;
	struct qw_sm2_key *k = qw_sm2_key_generate(alg, &err);
	assert_non_null(k);
	assert_int_equal(err, 0);
	assert_int_equal(qw_sm2_key_alg(k), alg);
	assert_true(qw_sm2_key_has_private(k));
	uint8_t sig[QW_SM2_SIG_MAX_BYTES], sig2[QW_SM2_SIG_MAX_BYTES];
	size_t sl, sl2;
	assert_int_equal(qw_sm2_sign(k, NULL, 0, msg, strlen(msg), sig, &sl), 0);
	assert_true(sl > 8 && sl <= QW_SM2_SIG_MAX_BYTES);
	assert_int_equal(sig[0], 0x30); /* DER SEQUENCE */
	assert_int_equal(qw_sm2_verify(k, NULL, 0, msg, strlen(msg), sig, sl), 0);
	/* Randomised signatures: a second one differs, and verifies too. */
	assert_int_equal(qw_sm2_sign(k, NULL, 0, msg, strlen(msg), sig2, &sl2), 0);
	assert_false(sl == sl2 && memcmp(sig, sig2, sl) == 0);
	assert_int_equal(qw_sm2_verify(k, NULL, 0, msg, strlen(msg), sig2, sl2), 0);

	/* Every bit of the message, and of the signature. */
	char m[sizeof(msg)];
	memcpy(m, msg, sizeof(msg));
	for (size_t bit = 0; bit < strlen(msg) * 8; bit++) {
		m[bit / 8] ^= (char)(1 << (bit % 8));
		assert_int_equal(qw_sm2_verify(k, NULL, 0, m, strlen(msg), sig, sl),
				 QW_EAUTH);
		m[bit / 8] ^= (char)(1 << (bit % 8));
	}
	for (size_t bit = 0; bit < sl * 8; bit++) {
		sig[bit / 8] ^= (uint8_t)(1 << (bit % 8));
		assert_int_equal(qw_sm2_verify(k, NULL, 0, msg, strlen(msg), sig, sl),
				 QW_EAUTH);
		sig[bit / 8] ^= (uint8_t)(1 << (bit % 8));
	}
	assert_int_equal(qw_sm2_verify(k, NULL, 0, msg, strlen(msg), sig, sl - 1),
			 QW_EAUTH);

	/* The public half alone verifies but cannot sign. */
	struct qw_sm2_key *pub = qw_sm2_key_public_copy(k);
	assert_non_null(pub);
	assert_false(qw_sm2_key_has_private(pub));
	assert_int_equal(qw_sm2_verify(pub, NULL, 0, msg, strlen(msg), sig, sl), 0);
	assert_int_equal(qw_sm2_sign(pub, NULL, 0, msg, 3, sig2, &sl2), QW_EINVAL);
	uint8_t f1[32], f2[32];
	assert_int_equal(qw_sm2_key_fingerprint(k, f1), 0);
	assert_int_equal(qw_sm2_key_fingerprint(pub, f2), 0);
	assert_memory_equal(f1, f2, 32);

	/* Another key does not verify it. */
	struct qw_sm2_key *other = qw_sm2_key_generate(alg, NULL);
	assert_non_null(other);
	assert_int_equal(qw_sm2_verify(other, NULL, 0, msg, strlen(msg), sig, sl),
			 QW_EAUTH);
	assert_int_equal(qw_sm2_key_fingerprint(other, f2), 0);
	assert_memory_not_equal(f1, f2, 32);
	qw_sm2_key_free(other);
	qw_sm2_key_free(pub);
	qw_sm2_key_free(k);
}

static void test_sm2_sign(void **state)
{
	(void)state;
	sign_verify(QW_PK_SM2);
}

static void test_p256_sign(void **state)
{
	(void)state;
	sign_verify(QW_PK_ECDSA_P256);
}

/* Z_A binds the identifier (GB/T 32918.2 5.5): NULL means the default,
 * and another identifier does not verify. */
static void test_sm2_id(void **state)
{
	(void)state;
	struct qw_sm2_key *k = qw_sm2_key_generate(QW_PK_SM2, NULL);
	assert_non_null(k);
	uint8_t sig[QW_SM2_SIG_MAX_BYTES];
	size_t sl;
	const uint8_t *def = (const uint8_t *)QW_SM2_DEFAULT_ID;
	const uint8_t alice[] = "ALICE123@YAHOO.COM";
	assert_int_equal(qw_sm2_sign(k, def, 16, msg, strlen(msg), sig, &sl), 0);
	assert_int_equal(qw_sm2_verify(k, NULL, 0, msg, strlen(msg), sig, sl), 0);
	assert_int_equal(qw_sm2_verify(k, alice, 18, msg, strlen(msg), sig, sl),
			 QW_EAUTH);
	assert_int_equal(qw_sm2_sign(k, alice, 18, msg, strlen(msg), sig, &sl), 0);
	assert_int_equal(qw_sm2_verify(k, alice, 18, msg, strlen(msg), sig, sl), 0);
	assert_int_equal(qw_sm2_verify(k, NULL, 0, msg, strlen(msg), sig, sl),
			 QW_EAUTH);
	/* Empty message */
	assert_int_equal(qw_sm2_sign(k, NULL, 0, NULL, 0, sig, &sl), 0);
	assert_int_equal(qw_sm2_verify(k, NULL, 0, NULL, 0, sig, sl), 0);
	qw_sm2_key_free(k);
}

static void test_sm2_encrypt(void **state)
{
	(void)state;
	struct qw_sm2_key *k = qw_sm2_key_generate(QW_PK_SM2, NULL);
	assert_non_null(k);
	struct qw_sm2_key *pub = qw_sm2_key_public_copy(k);
	assert_non_null(pub);
	static const size_t lens[] = {1, 32, 100, 1000};
	for (size_t i = 0; i < 4; i++) {
		uint8_t pt[1000];
		for (size_t j = 0; j < lens[i]; j++)
			pt[j] = (uint8_t)(j * 7 + i);
		uint8_t *ct, *back;
		size_t cl, bl;
		assert_int_equal(qw_sm2_encrypt(pub, pt, lens[i], &ct, &cl), 0);
		assert_true(cl > lens[i] && cl <= lens[i] + QW_SM2_CT_OVERHEAD);
		assert_int_equal(qw_sm2_decrypt(k, ct, cl, &back, &bl), 0);
		assert_int_equal(bl, lens[i]);
		assert_memory_equal(back, pt, bl);
		qw_free_secret(back, bl);
		/* The public key cannot decrypt; a flipped last byte (in C2 or
		 * the DER tail) and a truncation are rejected. */
		assert_int_equal(qw_sm2_decrypt(pub, ct, cl, &back, &bl), QW_EINVAL);
		ct[cl - 1] ^= 1;
		assert_int_equal(qw_sm2_decrypt(k, ct, cl, &back, &bl), QW_EAUTH);
		ct[cl - 1] ^= 1;
		assert_int_equal(qw_sm2_decrypt(k, ct, cl - 1, &back, &bl), QW_EAUTH);
		free(ct);
	}
	struct qw_sm2_key *p256 = qw_sm2_key_generate(QW_PK_ECDSA_P256, NULL);
	assert_non_null(p256);
	uint8_t *ct;
	size_t cl;
	assert_int_equal(qw_sm2_encrypt(p256, "x", 1, &ct, &cl), QW_EUNSUPPORTED);
	qw_sm2_key_free(p256);
	qw_sm2_key_free(pub);
	qw_sm2_key_free(k);
}

static void test_pem(void **state)
{
	(void)state;
	enum qw_sm2_alg algs[] = {QW_PK_SM2, QW_PK_ECDSA_P256};
	for (int a = 0; a < 2; a++) {
		struct qw_sm2_key *k = qw_sm2_key_generate(algs[a], NULL);
		assert_non_null(k);
		char *priv, *pubpem;
		size_t pl, ul;
		assert_int_equal(qw_sm2_key_to_pem(k, 1, &priv, &pl), 0);
		assert_non_null(strstr(priv, "-----BEGIN PRIVATE KEY-----"));
		assert_int_equal(qw_sm2_key_to_pem(k, 0, &pubpem, &ul), 0);
		assert_non_null(strstr(pubpem, "-----BEGIN PUBLIC KEY-----"));
		struct qw_sm2_key *k2, *p2;
		assert_int_equal(qw_sm2_key_from_pem(priv, pl, &k2), 0);
		assert_int_equal(qw_sm2_key_from_pem(pubpem, ul, &p2), 0);
		assert_int_equal(qw_sm2_key_alg(k2), algs[a]);
		assert_int_equal(qw_sm2_key_alg(p2), algs[a]);
		assert_true(qw_sm2_key_has_private(k2));
		assert_false(qw_sm2_key_has_private(p2));
		/* The reloaded private key signs what the reloaded public key
		 * (and the original) verifies. */
		uint8_t sig[QW_SM2_SIG_MAX_BYTES];
		size_t sl;
		assert_int_equal(qw_sm2_sign(k2, NULL, 0, msg, 5, sig, &sl), 0);
		assert_int_equal(qw_sm2_verify(p2, NULL, 0, msg, 5, sig, sl), 0);
		assert_int_equal(qw_sm2_verify(k, NULL, 0, msg, 5, sig, sl), 0);
		char *pub_again;
		assert_int_equal(qw_sm2_key_to_pem(p2, 1, &pub_again, &ul), QW_EINVAL);
		qw_free_secret(priv, pl + 1);
		free(pubpem);
		qw_sm2_key_free(k2);
		qw_sm2_key_free(p2);
		qw_sm2_key_free(k);
	}
	struct qw_sm2_key *bad;
	const char junk[] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
	assert_int_equal(qw_sm2_key_from_pem(junk, strlen(junk), &bad), QW_EPARSE);
	assert_int_equal(qw_sm2_key_from_pem("", 0, &bad), QW_EPARSE);
}

static void test_save_load(void **state)
{
	(void)state;
	char dir[] = "/tmp/qw_test_sm2_XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[128], pubpath[128];
	snprintf(path, sizeof(path), "%s/key.pem", dir);
	snprintf(pubpath, sizeof(pubpath), "%s/key.pub", dir);
	struct qw_sm2_key *k = qw_sm2_key_generate(QW_PK_SM2, NULL);
	assert_non_null(k);
	assert_int_equal(qw_sm2_key_save(k, path, 1), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* Overwriting our own 0600 file is fine. */
	assert_int_equal(qw_sm2_key_save(k, path, 1), 0);
	assert_int_equal(qw_sm2_key_save(k, pubpath, 0), 0);

	struct qw_sm2_key *k2, *p2;
	assert_int_equal(qw_sm2_key_load(path, &k2), 0);
	assert_int_equal(qw_sm2_key_load(pubpath, &p2), 0);
	uint8_t f1[32], f2[32];
	assert_int_equal(qw_sm2_key_fingerprint(k, f1), 0);
	assert_int_equal(qw_sm2_key_fingerprint(p2, f2), 0);
	assert_memory_equal(f1, f2, 32);
	assert_true(qw_sm2_key_has_private(k2));
	qw_sm2_key_free(k2);
	qw_sm2_key_free(p2);

	/* A world-readable file is refused and left as it was. */
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(stat(path, &st), 0);
	off_t before = st.st_size;
	assert_int_equal(qw_sm2_key_save(k, path, 1), QW_EPERM);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, before);
	assert_int_equal(chmod(path, 0640), 0);
	assert_int_equal(qw_sm2_key_save(k, path, 1), QW_EPERM);
	/* A symlink is refused. */
	char link[128];
	snprintf(link, sizeof(link), "%s/link.pem", dir);
	assert_int_equal(symlink(pubpath, link), 0);
	assert_int_equal(qw_sm2_key_save(k, link, 1), QW_EPERM);

	struct qw_sm2_key *none;
	char missing[160];
	snprintf(missing, sizeof(missing), "%s/missing.pem", dir);
	assert_int_equal(qw_sm2_key_load(missing, &none), QW_EIO);

	unlink(link);
	unlink(path);
	unlink(pubpath);
	rmdir(dir);
	qw_sm2_key_free(k);
	qw_sm2_key_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sm2_sign),
		cmocka_unit_test(test_p256_sign),
		cmocka_unit_test(test_sm2_id),
		cmocka_unit_test(test_sm2_encrypt),
		cmocka_unit_test(test_pem),
		cmocka_unit_test(test_save_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
