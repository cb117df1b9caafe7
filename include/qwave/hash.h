/* Hash functions, HMAC and HKDF over OpenSSL 3 EVP (EVP_MD, EVP_MAC,
 * EVP_KDF).
 *
 *   SM3      GB/T 32905-2016, 32-byte digest
 *   SHA-256  FIPS 180-4, 32-byte digest
 *   SHA-512  FIPS 180-4, 64-byte digest
 *
 * HMAC is RFC 2104 / FIPS 198-1 with any of the above; HKDF is RFC 5869
 * (extract-and-expand) with any of the above. */
#ifndef QWAVE_HASH_H
#define QWAVE_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"

enum qw_hash_alg {
	QW_HASH_SM3 = 1,
	QW_HASH_SHA256 = 2,
	QW_HASH_SHA512 = 3,
};

#define QW_SM3_BYTES 32
#define QW_SHA256_BYTES 32
#define QW_SHA512_BYTES 64
#define QW_HASH_MAX_BYTES 64

/* Digest size of alg; 0 for an unknown alg. */
size_t qw_hash_bytes(enum qw_hash_alg alg);
/* Canonical name ("sm3", "sha256", "sha512"); "unknown" otherwise. */
const char *qw_hash_name(enum qw_hash_alg alg);
/* Parse a name (case-insensitive; "sha-256"/"sha-512" also accepted).
 * 0 or QW_EPARSE. */
QW_WUR int qw_hash_parse(const char *name, enum qw_hash_alg *alg);

/* One-shot digest of len bytes (data may be NULL when len is 0) into out
 * (qw_hash_bytes(alg) bytes). 0, QW_EINVAL (unknown alg), QW_ECRYPTO. */
QW_WUR int qw_hash(enum qw_hash_alg alg, const void *data, size_t len,
		   uint8_t *out);

/* Streaming digest. qw_hash_new returns NULL on an unknown alg or failure.
 * After qw_hash_final the object is reset and can hash a new message. */
struct qw_hash *qw_hash_new(enum qw_hash_alg alg);
void qw_hash_free(struct qw_hash *h);
QW_WUR int qw_hash_update(struct qw_hash *h, const void *data, size_t len);
/* Writes qw_hash_bytes(alg) bytes to out. 0 or QW_ECRYPTO. */
QW_WUR int qw_hash_final(struct qw_hash *h, uint8_t *out);

/* One-shot HMAC (key of any length, may be NULL when keylen is 0) into
 * out (qw_hash_bytes(alg) bytes). 0, QW_EINVAL, QW_ECRYPTO. */
QW_WUR int qw_hmac(enum qw_hash_alg alg, const void *key, size_t keylen,
		   const void *data, size_t len, uint8_t *out);

/* Streaming HMAC; the key is copied into the EVP_MAC context and wiped by
 * qw_hmac_free. After qw_hmac_final the object restarts with the same key. */
struct qw_hmac *qw_hmac_new(enum qw_hash_alg alg, const void *key,
			    size_t keylen);
void qw_hmac_free(struct qw_hmac *m);
QW_WUR int qw_hmac_update(struct qw_hmac *m, const void *data, size_t len);
QW_WUR int qw_hmac_final(struct qw_hmac *m, uint8_t *out);
/* Finalise and compare, in constant time, against expected: explen bytes,
 * either the full MAC or a leading truncation of it (16 <= explen <= full
 * size; shorter tags are refused). 0, QW_EAUTH, QW_EINVAL, QW_ECRYPTO. */
QW_WUR int qw_hmac_verify(struct qw_hmac *m, const uint8_t *expected,
			  size_t explen);

/* HKDF (RFC 5869): okm = Expand(Extract(salt, ikm), info, outlen). salt,
 * info may be NULL with length 0; outlen <= 255 * qw_hash_bytes(alg)
 * (QW_ERANGE otherwise). 0, QW_EINVAL, QW_ERANGE, QW_ECRYPTO. */
QW_WUR int qw_hkdf(enum qw_hash_alg alg, const void *ikm, size_t ikmlen,
		   const void *salt, size_t saltlen, const void *info,
		   size_t infolen, uint8_t *out, size_t outlen);

#endif
