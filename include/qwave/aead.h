/* Authenticated encryption with associated data (AEAD) over OpenSSL 3 EVP.
 *
 * Algorithms (the enum value is also the 1-byte algorithm id of the sealed
 * message format below, so the values are frozen):
 *
 *   QW_AEAD_AES256_GCM        AES-256-GCM (NIST SP 800-38D): key 32 bytes,
 *                             nonce 12 bytes, tag 16 bytes.
 *   QW_AEAD_SM4_GCM           SM4-GCM (GB/T 32907 block cipher in GCM, RFC
 *                             8998): key 16, nonce 12, tag 16. Only when the
 *                             OpenSSL in use provides "SM4-GCM" (checked at
 *                             run time; OpenSSL 3.0 does not): otherwise
 *                             every call returns QW_EUNSUPPORTED.
 *   QW_AEAD_SM4_CTR_HMAC_SM3  SM4-CTR + HMAC-SM3, encrypt-then-MAC (the
 *                             generic composition proved secure by Bellare
 *                             and Namprempre, ISO/IEC 19772 mechanism 5
 *                             shape). Key 32 bytes, nonce 12, tag 32.
 *                             The 32-byte key is split into independent
 *                             sub-keys with HKDF-SM3 (RFC 5869, salt empty):
 *                               enc_key (16) = HKDF(key, "qwave sm4-ctr enc")
 *                               mac_key (32) = HKDF(key, "qwave hmac-sm3 mac")
 *                             so a 256-bit QKD key feeds it exactly as it
 *                             feeds AES-256-GCM. The SM4-CTR initial counter
 *                             block is nonce || 00000000 (big-endian 32-bit
 *                             block counter), so one message is limited to
 *                             2^32 blocks (64 GiB; longer -> QW_ERANGE).
 *                             tag = HMAC-SM3(mac_key, aad || nonce || ct ||
 *                             be64(aadlen) || be64(ctlen)) (full 32 bytes);
 *                             the length trailer makes the aad/ct split
 *                             unambiguous.
 *
 * A nonce must never repeat under one key (GCM loses confidentiality and
 * authenticity on reuse). Use qw_random_bytes for nonces, or the sealed
 * message API which does it for you. */
#ifndef QWAVE_AEAD_H
#define QWAVE_AEAD_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"

enum qw_aead_alg {
	QW_AEAD_AES256_GCM = 1,
	QW_AEAD_SM4_GCM = 2,
	QW_AEAD_SM4_CTR_HMAC_SM3 = 3,
};

#define QW_AEAD_AES256_GCM_KEY_BYTES 32
#define QW_AEAD_SM4_GCM_KEY_BYTES 16
#define QW_AEAD_SM4_CTR_HMAC_SM3_KEY_BYTES 32
#define QW_AEAD_NONCE_BYTES 12      /* every algorithm above */
#define QW_AEAD_GCM_TAG_BYTES 16
#define QW_AEAD_SM4_CTR_HMAC_SM3_TAG_BYTES 32
#define QW_AEAD_MAX_KEY_BYTES 32
#define QW_AEAD_MAX_TAG_BYTES 32
/* Sealed message: [alg id (1) | nonce | ciphertext | tag]. */
#define QW_AEAD_MSG_MAX_OVERHEAD (1 + QW_AEAD_NONCE_BYTES + QW_AEAD_MAX_TAG_BYTES)

/* Sizes for alg; 0 for an unknown alg. */
size_t qw_aead_key_bytes(enum qw_aead_alg alg);
size_t qw_aead_nonce_bytes(enum qw_aead_alg alg);
size_t qw_aead_tag_bytes(enum qw_aead_alg alg);
/* Bytes a sealed message adds to the plaintext (1 + nonce + tag); 0 for an
 * unknown alg. */
size_t qw_aead_msg_overhead(enum qw_aead_alg alg);

/* 1 when alg is known and usable with the OpenSSL in use, else 0. */
int qw_aead_available(enum qw_aead_alg alg);
/* SM4-GCM when available, else SM4-CTR-HMAC-SM3. */
enum qw_aead_alg qw_aead_sm4_best(void);

/* Canonical lower-case name ("aes-256-gcm", "sm4-gcm", "sm4-ctr-hmac-sm3");
 * "unknown" for an unknown alg. Never NULL. */
const char *qw_aead_name(enum qw_aead_alg alg);
/* Parse a name (case-insensitive): the canonical names above, plus
 * "aes256gcm"/"aes-gcm" for AES-256-GCM and "sm4" = qw_aead_sm4_best().
 * 0, QW_EPARSE for an unknown name, QW_EUNSUPPORTED for a known but
 * unavailable algorithm (*alg is still set). */
QW_WUR int qw_aead_parse(const char *name, enum qw_aead_alg *alg);

/* One-shot encryption. key has keylen == qw_aead_key_bytes(alg) bytes,
 * nonce qw_aead_nonce_bytes(alg) bytes. Writes ptlen bytes to ct (ct == pt
 * for in-place operation is allowed; other overlap is not) and
 * qw_aead_tag_bytes(alg) bytes to tag. aad/pt may be NULL when their length
 * is 0. Returns 0, QW_EINVAL (wrong key length), QW_EUNSUPPORTED,
 * QW_ERANGE (message too long), QW_ECRYPTO. */
QW_WUR int qw_aead_seal(enum qw_aead_alg alg, const uint8_t *key, size_t keylen,
			const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
			const uint8_t *pt, size_t ptlen, uint8_t *ct, uint8_t *tag);
/* One-shot decryption and verification. Writes ctlen bytes to pt only when
 * the tag verifies; on QW_EAUTH no plaintext is left in pt (EtM verifies
 * before decrypting; GCM decrypts then wipes pt on a tag mismatch). pt == ct
 * is allowed (then ct is wiped on failure for GCM). Returns 0, QW_EAUTH,
 * QW_EINVAL, QW_EUNSUPPORTED, QW_ERANGE, QW_ECRYPTO. */
QW_WUR int qw_aead_open(enum qw_aead_alg alg, const uint8_t *key, size_t keylen,
			const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
			const uint8_t *ct, size_t ctlen, const uint8_t *tag,
			uint8_t *pt);

/* Reusable context bound to one algorithm and key: keeps the expanded key
 * in the EVP context(s) and only re-initialises the nonce per message (the
 * fast path for bulk traffic and the benchmark). The key is copied; the
 * caller may wipe its own copy. Returns NULL and sets *err (err may be
 * NULL): QW_EINVAL, QW_EUNSUPPORTED, QW_ENOMEM, QW_ECRYPTO. Not
 * thread-safe. */
struct qw_aead *qw_aead_new(enum qw_aead_alg alg, const uint8_t *key,
			    size_t keylen, int *err);
/* Wipes the key schedule; NULL accepted. */
void qw_aead_free(struct qw_aead *a);
enum qw_aead_alg qw_aead_get_alg(const struct qw_aead *a);
/* As qw_aead_seal / qw_aead_open with the context's algorithm and key. */
QW_WUR int qw_aead_ctx_seal(struct qw_aead *a, const uint8_t *nonce,
			    const uint8_t *aad, size_t aadlen, const uint8_t *pt,
			    size_t ptlen, uint8_t *ct, uint8_t *tag);
QW_WUR int qw_aead_ctx_open(struct qw_aead *a, const uint8_t *nonce,
			    const uint8_t *aad, size_t aadlen, const uint8_t *ct,
			    size_t ctlen, const uint8_t *tag, uint8_t *pt);

/* Self-describing sealed message [alg id | nonce | ct | tag] with a fresh
 * random nonce (qw_random_bytes). The id byte is authenticated as a prefix
 * of the aad (effective aad = id || aad), so it cannot be swapped for
 * another algorithm. out has room for outcap bytes; needs
 * ptlen + qw_aead_msg_overhead(alg) (QW_ERANGE otherwise). *outlen gets the
 * message length. aad is authenticated but not stored. Returns as
 * qw_aead_seal, plus QW_EIO/QW_ECRYPTO from the nonce generator. */
QW_WUR int qw_aead_seal_msg(enum qw_aead_alg alg, const uint8_t *key,
			    size_t keylen, const uint8_t *aad, size_t aadlen,
			    const uint8_t *pt, size_t ptlen, uint8_t *out,
			    size_t outcap, size_t *outlen);
/* Open a sealed message. The algorithm comes from the message; when
 * expect is nonzero the message must use that algorithm (QW_EAUTH
 * otherwise, preventing a downgrade). pt has room for ptcap bytes (msglen -
 * overhead suffices); *ptlen gets the plaintext length; *alg_out (may be
 * NULL) the algorithm. Returns 0, QW_EPARSE (truncated or unknown id),
 * QW_EAUTH, QW_EINVAL (key length), QW_ERANGE (ptcap too small),
 * QW_EUNSUPPORTED, QW_ECRYPTO. */
QW_WUR int qw_aead_open_msg(enum qw_aead_alg expect, const uint8_t *key,
			    size_t keylen, const uint8_t *aad, size_t aadlen,
			    const uint8_t *msg, size_t msglen, uint8_t *pt,
			    size_t ptcap, size_t *ptlen,
			    enum qw_aead_alg *alg_out);

#endif
