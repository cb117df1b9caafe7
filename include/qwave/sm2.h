/* Public-key operations over OpenSSL 3 EVP_PKEY: SM2 (GB/T 32918) signature
 * with SM3 and public-key encryption, and ECDSA P-256 with SHA-256 through
 * the same functions (for certificates).
 *
 * SM2 signatures hash Z_A || M where Z_A binds the signer's distinguishing
 * identifier (GB/T 32918.2 section 5.5); the identifier defaults to
 * "1234567812345678" (GM/T 0009-2012 section 10 / RFC 8998). Signatures are
 * DER-encoded SEQUENCE { r INTEGER, s INTEGER } for both algorithms. SM2
 * ciphertexts are the DER form of GM/T 0009 (C1 point, C3 = SM3 hash, C2).
 *
 * Private keys are PEM PKCS#8, unencrypted: protect them with file mode
 * 0600 (qw_sm2_key_save does) or wrap them with qw_aead_seal_msg. */
#ifndef QWAVE_SM2_H
#define QWAVE_SM2_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "qwave/error.h"

enum qw_sm2_alg {
	QW_PK_SM2 = 1,        /* SM2 on the GB/T 32918.5 curve, SM3 digest */
	QW_PK_ECDSA_P256 = 2, /* ECDSA on NIST P-256, SHA-256 digest */
};

#define QW_SM2_DEFAULT_ID "1234567812345678"
#define QW_SM2_DEFAULT_ID_BYTES 16
/* DER signature of two 256-bit integers: at most 2 + 2 * (2 + 33). */
#define QW_SM2_SIG_MAX_BYTES 72
/* SM2 ciphertext size is plaintext + at most this many bytes. */
#define QW_SM2_CT_OVERHEAD 116
#define QW_SM2_FINGERPRINT_BYTES 32

struct qw_sm2_key;

/* New key pair (QW_PK_SM2 or QW_PK_ECDSA_P256) from OpenSSL's DRBG. NULL
 * and *err (may be NULL): QW_EINVAL, QW_ECRYPTO, QW_ENOMEM. */
struct qw_sm2_key *qw_sm2_key_generate(enum qw_sm2_alg alg, int *err);
/* Frees (OpenSSL clears the private scalar); NULL accepted. */
void qw_sm2_key_free(struct qw_sm2_key *k);
enum qw_sm2_alg qw_sm2_key_alg(const struct qw_sm2_key *k);
/* 1 when the key holds the private half. */
int qw_sm2_key_has_private(const struct qw_sm2_key *k);
/* Borrowed EVP_PKEY for code that needs OpenSSL directly (X.509). */
EVP_PKEY *qw_sm2_key_get0_evp(const struct qw_sm2_key *k);
/* SM3 hash of the DER SubjectPublicKeyInfo: a stable key fingerprint. */
QW_WUR int qw_sm2_key_fingerprint(const struct qw_sm2_key *k,
				  uint8_t out[QW_SM2_FINGERPRINT_BYTES]);
/* Copy of the public half only; NULL on failure. */
struct qw_sm2_key *qw_sm2_key_public_copy(const struct qw_sm2_key *k);

/* PEM text (NUL-terminated, *len excludes the NUL) of the private key
 * (private != 0; QW_EINVAL if the key has none) or the public key. *pem is
 * heap memory: free a private PEM with qw_free_secret(*pem, *len + 1), a
 * public one with free(). 0, QW_EINVAL, QW_ENOMEM, QW_ECRYPTO. */
QW_WUR int qw_sm2_key_to_pem(const struct qw_sm2_key *k, int private,
			     char **pem, size_t *len);
/* Parse a PEM private key (PKCS#8 or traditional) or, failing that, a PEM
 * public key (SubjectPublicKeyInfo). SM2 and P-256 keys only. 0 and *out,
 * or QW_EPARSE, QW_EUNSUPPORTED (another key type/curve), QW_ENOMEM. */
QW_WUR int qw_sm2_key_from_pem(const char *pem, size_t len,
			       struct qw_sm2_key **out);
/* Write the key to path as PEM. Private: the file is created with mode
 * 0600; an existing file is overwritten only when it is a regular file not
 * readable or writable by group/others (QW_EPERM otherwise, leaving it
 * untouched). Public: mode 0644, overwritten. 0, QW_EPERM, QW_EIO,
 * QW_EINVAL, QW_ENOMEM, QW_ECRYPTO. */
QW_WUR int qw_sm2_key_save(const struct qw_sm2_key *k, const char *path,
			   int private);
/* Read a PEM key file (as qw_sm2_key_from_pem). QW_EIO if unreadable. */
QW_WUR int qw_sm2_key_load(const char *path, struct qw_sm2_key **out);

/* Sign msg. id/idlen is the SM2 distinguishing identifier (NULL for the
 * default; ignored for ECDSA). sig has room for QW_SM2_SIG_MAX_BYTES;
 * *siglen gets the DER length. 0, QW_EINVAL (no private key), QW_ECRYPTO. */
QW_WUR int qw_sm2_sign(const struct qw_sm2_key *k, const uint8_t *id,
		       size_t idlen, const void *msg, size_t len, uint8_t *sig,
		       size_t *siglen);
/* Verify a DER signature. 0, QW_EAUTH (bad or malformed signature, or a
 * different id), QW_ECRYPTO. */
QW_WUR int qw_sm2_verify(const struct qw_sm2_key *k, const uint8_t *id,
			 size_t idlen, const void *msg, size_t len,
			 const uint8_t *sig, size_t siglen);

/* SM2 public-key encryption (QW_PK_SM2 keys only; QW_EUNSUPPORTED else).
 * *ct is malloc()ed (free()). 0, QW_EINVAL, QW_ENOMEM, QW_ECRYPTO. */
QW_WUR int qw_sm2_encrypt(const struct qw_sm2_key *k, const void *pt,
			  size_t ptlen, uint8_t **ct, size_t *ctlen);
/* SM2 decryption with the private key. *pt is malloc()ed: free it with
 * qw_free_secret(*pt, *ptlen). QW_EAUTH when the ciphertext is malformed
 * or its C3 hash does not match; QW_EINVAL without a private key. */
QW_WUR int qw_sm2_decrypt(const struct qw_sm2_key *k, const uint8_t *ct,
			  size_t ctlen, uint8_t **pt, size_t *ptlen);

#endif
