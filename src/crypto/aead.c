/* AEAD over OpenSSL 3 EVP: AES-256-GCM, SM4-GCM (when the provider has it)
 * and SM4-CTR + HMAC-SM3 encrypt-then-MAC. Constructions and key/nonce
 * layouts are documented in include/qwave/aead.h. */
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "qwave/aead.h"
#include "qwave/hash.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

/* SP 800-38D section 5.2.1.1: plaintext <= 2^39 - 256 bits. */
#define GCM_MAX_PT (((uint64_t)1 << 36) - 32)
/* 32-bit block counter in the SM4-CTR counter block (see aead.h). */
#define CTR_MAX_PT ((uint64_t)1 << 36)
/* EVP update lengths are int: feed long buffers in chunks. */
#define CHUNK ((size_t)1 << 30)

#define ETM_ENC_BYTES 16
#define ETM_MAC_BYTES 32
static const char etm_enc_info[] = "qwave sm4-ctr enc";
static const char etm_mac_info[] = "qwave hmac-sm3 mac";

struct qw_aead {
	enum qw_aead_alg alg;
	EVP_CIPHER_CTX *cctx;  /* GCM, or SM4-CTR keyed with enc_key */
	struct qw_hmac *mac;   /* EtM only: HMAC-SM3 keyed with mac_key */
};

enum { C_AES256_GCM, C_SM4_GCM, C_SM4_CTR, C_N };
static const char *const cipher_names[C_N] = {"AES-256-GCM", "SM4-GCM",
					      "SM4-CTR"};

/* Fetch once per process; a missing cipher is remembered as missing so
 * qw_aead_available stays cheap. States: 0 untried, 1 present, 2 absent. */
static const EVP_CIPHER *cipher_get(int which)
{
	static _Atomic(EVP_CIPHER *) cache[C_N];
	static atomic_int state[C_N];
	EVP_CIPHER *c = atomic_load(&cache[which]);
	if (c)
		return c;
	if (atomic_load(&state[which]) == 2)
		return NULL;
	c = EVP_CIPHER_fetch(NULL, cipher_names[which], NULL);
	if (!c) {
		atomic_store(&state[which], 2);
		return NULL;
	}
	EVP_CIPHER *expected = NULL;
	if (!atomic_compare_exchange_strong(&cache[which], &expected, c)) {
		EVP_CIPHER_free(c);
		return expected;
	}
	atomic_store(&state[which], 1);
	return c;
}

static int alg_cipher(enum qw_aead_alg alg)
{
	switch (alg) {
	case QW_AEAD_AES256_GCM: return C_AES256_GCM;
	case QW_AEAD_SM4_GCM: return C_SM4_GCM;
	case QW_AEAD_SM4_CTR_HMAC_SM3: return C_SM4_CTR;
	}
	return -1;
}

size_t qw_aead_key_bytes(enum qw_aead_alg alg)
{
	switch (alg) {
	case QW_AEAD_AES256_GCM: return QW_AEAD_AES256_GCM_KEY_BYTES;
	case QW_AEAD_SM4_GCM: return QW_AEAD_SM4_GCM_KEY_BYTES;
	case QW_AEAD_SM4_CTR_HMAC_SM3: return QW_AEAD_SM4_CTR_HMAC_SM3_KEY_BYTES;
	}
	return 0;
}

size_t qw_aead_nonce_bytes(enum qw_aead_alg alg)
{
	return alg_cipher(alg) < 0 ? 0 : QW_AEAD_NONCE_BYTES;
}

size_t qw_aead_tag_bytes(enum qw_aead_alg alg)
{
	switch (alg) {
	case QW_AEAD_AES256_GCM:
	case QW_AEAD_SM4_GCM: return QW_AEAD_GCM_TAG_BYTES;
	case QW_AEAD_SM4_CTR_HMAC_SM3: return QW_AEAD_SM4_CTR_HMAC_SM3_TAG_BYTES;
	}
	return 0;
}

size_t qw_aead_msg_overhead(enum qw_aead_alg alg)
{
	size_t t = qw_aead_tag_bytes(alg);
	return t ? 1 + QW_AEAD_NONCE_BYTES + t : 0;
}

int qw_aead_available(enum qw_aead_alg alg)
{
	int c = alg_cipher(alg);
	return c >= 0 && cipher_get(c) != NULL;
}

enum qw_aead_alg qw_aead_sm4_best(void)
{
	return qw_aead_available(QW_AEAD_SM4_GCM) ? QW_AEAD_SM4_GCM
						  : QW_AEAD_SM4_CTR_HMAC_SM3;
}

const char *qw_aead_name(enum qw_aead_alg alg)
{
	switch (alg) {
	case QW_AEAD_AES256_GCM: return "aes-256-gcm";
	case QW_AEAD_SM4_GCM: return "sm4-gcm";
	case QW_AEAD_SM4_CTR_HMAC_SM3: return "sm4-ctr-hmac-sm3";
	}
	return "unknown";
}

int qw_aead_parse(const char *name, enum qw_aead_alg *alg)
{
	QW_REQUIRE(name && alg);
	static const struct {
		const char *s;
		enum qw_aead_alg a;
	} tab[] = {
		{"aes-256-gcm", QW_AEAD_AES256_GCM},
		{"aes256gcm", QW_AEAD_AES256_GCM},
		{"aes-gcm", QW_AEAD_AES256_GCM},
		{"sm4-gcm", QW_AEAD_SM4_GCM},
		{"sm4-ctr-hmac-sm3", QW_AEAD_SM4_CTR_HMAC_SM3},
	};
	if (strcasecmp(name, "sm4") == 0) {
		*alg = qw_aead_sm4_best();
		return 0;
	}
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (strcasecmp(name, tab[i].s) == 0) {
			*alg = tab[i].a;
			return qw_aead_available(*alg) ? 0 : QW_EUNSUPPORTED;
		}
	}
	return QW_EPARSE;
}

struct qw_aead *qw_aead_new(enum qw_aead_alg alg, const uint8_t *key,
			    size_t keylen, int *err)
{
	QW_REQUIRE(key);
	int ret = QW_EINVAL;
	struct qw_aead *a = NULL;
	uint8_t sub[ETM_ENC_BYTES + ETM_MAC_BYTES];
	int which = alg_cipher(alg);
	if (which < 0 || keylen != qw_aead_key_bytes(alg))
		goto out;
	const EVP_CIPHER *cipher = cipher_get(which);
	ret = QW_EUNSUPPORTED;
	if (!cipher)
		goto out;
	ret = QW_ENOMEM;
	a = calloc(1, sizeof(*a));
	if (!a)
		goto out;
	a->alg = alg;
	a->cctx = EVP_CIPHER_CTX_new();
	if (!a->cctx)
		goto out;
	ret = QW_ECRYPTO;
	if (alg == QW_AEAD_SM4_CTR_HMAC_SM3) {
		ret = qw_hkdf(QW_HASH_SM3, key, keylen, NULL, 0, etm_enc_info,
			      sizeof(etm_enc_info) - 1, sub, ETM_ENC_BYTES);
		if (ret != 0)
			goto out;
		ret = qw_hkdf(QW_HASH_SM3, key, keylen, NULL, 0, etm_mac_info,
			      sizeof(etm_mac_info) - 1, sub + ETM_ENC_BYTES,
			      ETM_MAC_BYTES);
		if (ret != 0)
			goto out;
		ret = QW_ECRYPTO;
		if (!EVP_CipherInit_ex2(a->cctx, cipher, sub, NULL, 1, NULL))
			goto out;
		a->mac = qw_hmac_new(QW_HASH_SM3, sub + ETM_ENC_BYTES,
				     ETM_MAC_BYTES);
		if (!a->mac)
			goto out;
	} else {
		if (!EVP_CipherInit_ex2(a->cctx, cipher, key, NULL, 1, NULL))
			goto out;
	}
	ret = 0;
out:
	qw_wipe(sub, sizeof(sub));
	if (ret != 0) {
		qw_aead_free(a);
		a = NULL;
	}
	if (err)
		*err = ret;
	return a;
}

void qw_aead_free(struct qw_aead *a)
{
	if (!a)
		return;
	EVP_CIPHER_CTX_free(a->cctx); /* providers cleanse key schedules */
	qw_hmac_free(a->mac);
	free(a);
}

enum qw_aead_alg qw_aead_get_alg(const struct qw_aead *a)
{
	QW_REQUIRE(a);
	return a->alg;
}

/* EVP_CipherUpdate over a size_t length (pt/ct may be NULL when len is 0).
 * in == out is supported by the providers; aad updates pass out == NULL. */
static int cipher_update(EVP_CIPHER_CTX *ctx, uint8_t *out, const uint8_t *in,
			 size_t len)
{
	while (len) {
		size_t n = len < CHUNK ? len : CHUNK;
		int outl = 0;
		if (!EVP_CipherUpdate(ctx, out, &outl, in, (int)n))
			return QW_ECRYPTO;
		if (out) {
			if ((size_t)outl != n)
				return QW_ECRYPTO;
			out += n;
		}
		in += n;
		len -= n;
	}
	return 0;
}

static void be64(uint8_t b[8], uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		b[i] = (uint8_t)v;
}

/* The EtM tag (aead.h): HMAC-SM3(mac_key, aad || nonce || ct ||
 * be64(aadlen) || be64(ctlen)); aad arrives in two pieces (the sealed
 * message header and the caller's aad). */
static int etm_tag(struct qw_aead *a, const uint8_t *nonce, const uint8_t *h,
		   size_t hlen, const uint8_t *aad, size_t aadlen,
		   const uint8_t *ct, size_t ctlen, uint8_t tag[32])
{
	uint8_t lens[16];
	be64(lens, (uint64_t)(hlen + aadlen));
	be64(lens + 8, (uint64_t)ctlen);
	int ret;
	if ((ret = qw_hmac_update(a->mac, h, hlen)) != 0 ||
	    (ret = qw_hmac_update(a->mac, aad, aadlen)) != 0 ||
	    (ret = qw_hmac_update(a->mac, nonce, QW_AEAD_NONCE_BYTES)) != 0 ||
	    (ret = qw_hmac_update(a->mac, ct, ctlen)) != 0 ||
	    (ret = qw_hmac_update(a->mac, lens, sizeof(lens))) != 0)
		return ret;
	return qw_hmac_final(a->mac, tag);
}

static int ctr_crypt(struct qw_aead *a, const uint8_t *nonce,
		     const uint8_t *in, size_t len, uint8_t *out)
{
	uint8_t iv[16] = {0};
	memcpy(iv, nonce, QW_AEAD_NONCE_BYTES);
	if (!EVP_CipherInit_ex2(a->cctx, NULL, NULL, iv, 1, NULL))
		return QW_ECRYPTO;
	return cipher_update(a->cctx, out, in, len);
}

static int seal2(struct qw_aead *a, const uint8_t *nonce, const uint8_t *h,
		 size_t hlen, const uint8_t *aad, size_t aadlen,
		 const uint8_t *pt, size_t ptlen, uint8_t *ct, uint8_t *tag)
{
	int ret;
	if (a->alg == QW_AEAD_SM4_CTR_HMAC_SM3) {
		if ((uint64_t)ptlen > CTR_MAX_PT)
			return QW_ERANGE;
		if ((ret = ctr_crypt(a, nonce, pt, ptlen, ct)) != 0)
			return ret;
		return etm_tag(a, nonce, h, hlen, aad, aadlen, ct, ptlen, tag);
	}
	if ((uint64_t)ptlen > GCM_MAX_PT)
		return QW_ERANGE;
	if (!EVP_CipherInit_ex2(a->cctx, NULL, NULL, nonce, 1, NULL))
		return QW_ECRYPTO;
	if ((ret = cipher_update(a->cctx, NULL, h, hlen)) != 0 ||
	    (ret = cipher_update(a->cctx, NULL, aad, aadlen)) != 0 ||
	    (ret = cipher_update(a->cctx, ct, pt, ptlen)) != 0)
		return ret;
	int outl = 0;
	uint8_t dummy[16];
	if (!EVP_CipherFinal_ex(a->cctx, dummy, &outl) ||
	    !EVP_CIPHER_CTX_ctrl(a->cctx, EVP_CTRL_GCM_GET_TAG,
				 QW_AEAD_GCM_TAG_BYTES, tag))
		return QW_ECRYPTO;
	return 0;
}

static int open2(struct qw_aead *a, const uint8_t *nonce, const uint8_t *h,
		 size_t hlen, const uint8_t *aad, size_t aadlen,
		 const uint8_t *ct, size_t ctlen, const uint8_t *tag,
		 uint8_t *pt)
{
	int ret;
	if (a->alg == QW_AEAD_SM4_CTR_HMAC_SM3) {
		if ((uint64_t)ctlen > CTR_MAX_PT)
			return QW_ERANGE;
		uint8_t want[QW_AEAD_SM4_CTR_HMAC_SM3_TAG_BYTES];
		ret = etm_tag(a, nonce, h, hlen, aad, aadlen, ct, ctlen, want);
		if (ret == 0 && !qw_ct_equal(want, tag, sizeof(want)))
			ret = QW_EAUTH;
		qw_wipe(want, sizeof(want));
		if (ret != 0)
			return ret; /* nothing was written to pt */
		/* A failure part-way leaves no half-decrypted message. */
		ret = ctr_crypt(a, nonce, ct, ctlen, pt);
		if (ret != 0 && ctlen)
			qw_wipe(pt, ctlen);
		return ret;
	}
	if ((uint64_t)ctlen > GCM_MAX_PT)
		return QW_ERANGE;
	if (!EVP_CipherInit_ex2(a->cctx, NULL, NULL, nonce, 0, NULL))
		return QW_ECRYPTO;
	/* GCM can only check the tag after decrypting, so plaintext is
	 * produced first and wiped below on any failure (aead.h contract). */
	ret = QW_ECRYPTO;
	if (!EVP_CIPHER_CTX_ctrl(a->cctx, EVP_CTRL_GCM_SET_TAG,
				 QW_AEAD_GCM_TAG_BYTES, (void *)tag))
		goto out;
	if ((ret = cipher_update(a->cctx, NULL, h, hlen)) != 0 ||
	    (ret = cipher_update(a->cctx, NULL, aad, aadlen)) != 0 ||
	    (ret = cipher_update(a->cctx, pt, ct, ctlen)) != 0)
		goto out;
	int outl = 0;
	uint8_t dummy[16];
	ret = EVP_CipherFinal_ex(a->cctx, dummy, &outl) > 0 ? 0 : QW_EAUTH;
out:
	if (ret != 0 && ctlen)
		qw_wipe(pt, ctlen);
	return ret;
}

int qw_aead_ctx_seal(struct qw_aead *a, const uint8_t *nonce,
		     const uint8_t *aad, size_t aadlen, const uint8_t *pt,
		     size_t ptlen, uint8_t *ct, uint8_t *tag)
{
	QW_REQUIRE(a && nonce && tag && (aad || aadlen == 0) &&
		   ((pt && ct) || ptlen == 0));
	return seal2(a, nonce, NULL, 0, aad, aadlen, pt, ptlen, ct, tag);
}

int qw_aead_ctx_open(struct qw_aead *a, const uint8_t *nonce,
		     const uint8_t *aad, size_t aadlen, const uint8_t *ct,
		     size_t ctlen, const uint8_t *tag, uint8_t *pt)
{
	QW_REQUIRE(a && nonce && tag && (aad || aadlen == 0) &&
		   ((pt && ct) || ctlen == 0));
	return open2(a, nonce, NULL, 0, aad, aadlen, ct, ctlen, tag, pt);
}

int qw_aead_seal(enum qw_aead_alg alg, const uint8_t *key, size_t keylen,
		 const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
		 const uint8_t *pt, size_t ptlen, uint8_t *ct, uint8_t *tag)
{
	int ret;
	struct qw_aead *a = qw_aead_new(alg, key, keylen, &ret);
	if (!a)
		return ret;
	ret = qw_aead_ctx_seal(a, nonce, aad, aadlen, pt, ptlen, ct, tag);
	qw_aead_free(a);
	return ret;
}

int qw_aead_open(enum qw_aead_alg alg, const uint8_t *key, size_t keylen,
		 const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
		 const uint8_t *ct, size_t ctlen, const uint8_t *tag,
		 uint8_t *pt)
{
	int ret;
	struct qw_aead *a = qw_aead_new(alg, key, keylen, &ret);
	if (!a)
		return ret;
	ret = qw_aead_ctx_open(a, nonce, aad, aadlen, ct, ctlen, tag, pt);
	qw_aead_free(a);
	return ret;
}

int qw_aead_seal_msg(enum qw_aead_alg alg, const uint8_t *key, size_t keylen,
		     const uint8_t *aad, size_t aadlen, const uint8_t *pt,
		     size_t ptlen, uint8_t *out, size_t outcap, size_t *outlen)
{
	QW_REQUIRE(key && out && outlen && (aad || aadlen == 0) &&
		   (pt || ptlen == 0));
	size_t ovh = qw_aead_msg_overhead(alg);
	if (!ovh || keylen != qw_aead_key_bytes(alg))
		return QW_EINVAL;
	if (ptlen > SIZE_MAX - ovh || outcap < ptlen + ovh)
		return QW_ERANGE;
	int ret;
	struct qw_aead *a = qw_aead_new(alg, key, keylen, &ret);
	if (!a)
		return ret;
	uint8_t *nonce = out + 1;
	out[0] = (uint8_t)alg;
	if ((ret = qw_random_bytes(nonce, QW_AEAD_NONCE_BYTES)) != 0)
		goto out;
	/* The id byte is authenticated as a prefix of the aad, so it cannot
	 * be swapped for another algorithm that shares the key length. */
	ret = seal2(a, nonce, out, 1, aad, aadlen, pt, ptlen,
		    out + 1 + QW_AEAD_NONCE_BYTES,
		    out + 1 + QW_AEAD_NONCE_BYTES + ptlen);
	if (ret == 0)
		*outlen = ptlen + ovh;
out:
	qw_aead_free(a);
	return ret;
}

int qw_aead_open_msg(enum qw_aead_alg expect, const uint8_t *key,
		     size_t keylen, const uint8_t *aad, size_t aadlen,
		     const uint8_t *msg, size_t msglen, uint8_t *pt,
		     size_t ptcap, size_t *ptlen, enum qw_aead_alg *alg_out)
{
	QW_REQUIRE(key && msg && ptlen && (aad || aadlen == 0));
	if (msglen < 1)
		return QW_EPARSE;
	enum qw_aead_alg alg = (enum qw_aead_alg)msg[0];
	size_t ovh = qw_aead_msg_overhead(alg);
	if (!ovh || msglen < ovh)
		return QW_EPARSE;
	if (expect && alg != expect)
		return QW_EAUTH;
	size_t n = msglen - ovh;
	if (ptcap < n)
		return QW_ERANGE;
	QW_REQUIRE(pt || n == 0);
	int ret;
	struct qw_aead *a = qw_aead_new(alg, key, keylen, &ret);
	if (!a)
		return ret;
	const uint8_t *nonce = msg + 1;
	const uint8_t *ct = nonce + QW_AEAD_NONCE_BYTES;
	ret = open2(a, nonce, msg, 1, aad, aadlen, ct, n, ct + n, pt);
	qw_aead_free(a);
	if (ret == 0) {
		*ptlen = n;
		if (alg_out)
			*alg_out = alg;
	}
	return ret;
}
