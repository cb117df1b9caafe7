/* Hashes, HMAC and HKDF: thin wrappers over OpenSSL 3 EVP_MD, EVP_MAC and
 * EVP_KDF (see include/qwave/hash.h). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "qwave/hash.h"
#include "qwave/secmem.h"

struct qw_hash {
	enum qw_hash_alg alg;
	EVP_MD_CTX *ctx;
	const EVP_MD *md;
};

struct qw_hmac {
	enum qw_hash_alg alg;
	EVP_MAC_CTX *ctx;
};

static const char *md_name(enum qw_hash_alg alg)
{
	switch (alg) {
	case QW_HASH_SM3: return "SM3";
	case QW_HASH_SHA256: return "SHA2-256";
	case QW_HASH_SHA512: return "SHA2-512";
	}
	return NULL;
}

/* Fetched digests are cached for the process lifetime: EVP_MD_fetch costs a
 * provider lookup per call, which dominates short messages. Racing threads
 * may both fetch; the loser's copy is freed, never the published one. */
static const EVP_MD *md_get(enum qw_hash_alg alg)
{
	static _Atomic(EVP_MD *) cache[4];
	const char *name = md_name(alg);
	if (!name)
		return NULL;
	EVP_MD *m = atomic_load(&cache[alg]);
	if (m)
		return m;
	m = EVP_MD_fetch(NULL, name, NULL);
	if (!m)
		return NULL;
	EVP_MD *expected = NULL;
	if (!atomic_compare_exchange_strong(&cache[alg], &expected, m)) {
		EVP_MD_free(m);
		return expected;
	}
	return m;
}

size_t qw_hash_bytes(enum qw_hash_alg alg)
{
	switch (alg) {
	case QW_HASH_SM3: return QW_SM3_BYTES;
	case QW_HASH_SHA256: return QW_SHA256_BYTES;
	case QW_HASH_SHA512: return QW_SHA512_BYTES;
	}
	return 0;
}

const char *qw_hash_name(enum qw_hash_alg alg)
{
	switch (alg) {
	case QW_HASH_SM3: return "sm3";
	case QW_HASH_SHA256: return "sha256";
	case QW_HASH_SHA512: return "sha512";
	}
	return "unknown";
}

int qw_hash_parse(const char *name, enum qw_hash_alg *alg)
{
	QW_REQUIRE(name && alg);
	static const struct {
		const char *s;
		enum qw_hash_alg a;
	} tab[] = {
		{"sm3", QW_HASH_SM3},       {"sha256", QW_HASH_SHA256},
		{"sha-256", QW_HASH_SHA256}, {"sha2-256", QW_HASH_SHA256},
		{"sha512", QW_HASH_SHA512}, {"sha-512", QW_HASH_SHA512},
		{"sha2-512", QW_HASH_SHA512},
	};
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (strcasecmp(name, tab[i].s) == 0) {
			*alg = tab[i].a;
			return 0;
		}
	}
	return QW_EPARSE;
}

int qw_hash(enum qw_hash_alg alg, const void *data, size_t len, uint8_t *out)
{
	QW_REQUIRE(out && (data || len == 0));
	const EVP_MD *md = md_get(alg);
	if (!md)
		return md_name(alg) ? QW_ECRYPTO : QW_EINVAL;
	unsigned int outl = 0;
	if (!EVP_Digest(len ? data : "", len, out, &outl, md, NULL))
		return QW_ECRYPTO;
	return 0;
}

struct qw_hash *qw_hash_new(enum qw_hash_alg alg)
{
	const EVP_MD *md = md_get(alg);
	if (!md)
		return NULL;
	struct qw_hash *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->alg = alg;
	h->md = md;
	h->ctx = EVP_MD_CTX_new();
	if (!h->ctx || !EVP_DigestInit_ex2(h->ctx, md, NULL)) {
		qw_hash_free(h);
		return NULL;
	}
	return h;
}

void qw_hash_free(struct qw_hash *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->ctx); /* clears the state */
	free(h);
}

int qw_hash_update(struct qw_hash *h, const void *data, size_t len)
{
	QW_REQUIRE(h && (data || len == 0));
	if (len == 0)
		return 0;
	return EVP_DigestUpdate(h->ctx, data, len) ? 0 : QW_ECRYPTO;
}

int qw_hash_final(struct qw_hash *h, uint8_t *out)
{
	QW_REQUIRE(h && out);
	unsigned int outl = 0;
	if (!EVP_DigestFinal_ex(h->ctx, out, &outl))
		return QW_ECRYPTO;
	return EVP_DigestInit_ex2(h->ctx, h->md, NULL) ? 0 : QW_ECRYPTO;
}

static EVP_MAC *hmac_get(void)
{
	static _Atomic(EVP_MAC *) cache;
	EVP_MAC *m = atomic_load(&cache);
	if (m)
		return m;
	m = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!m)
		return NULL;
	EVP_MAC *expected = NULL;
	if (!atomic_compare_exchange_strong(&cache, &expected, m)) {
		EVP_MAC_free(m);
		return expected;
	}
	return m;
}

static int hmac_init(EVP_MAC_CTX *ctx, enum qw_hash_alg alg, const void *key,
		     size_t keylen)
{
	OSSL_PARAM params[2];
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
						     (char *)md_name(alg), 0);
	params[1] = OSSL_PARAM_construct_end();
	/* An empty key is legal for HMAC (RFC 2104 pads it to the block), but
	 * EVP_MAC_init treats a NULL key as "keep the previous key". */
	static const uint8_t zero = 0;
	return EVP_MAC_init(ctx, keylen ? key : &zero, keylen, params) ? 0
								      : QW_ECRYPTO;
}

struct qw_hmac *qw_hmac_new(enum qw_hash_alg alg, const void *key,
			    size_t keylen)
{
	QW_REQUIRE(key || keylen == 0);
	if (!md_name(alg))
		return NULL;
	EVP_MAC *mac = hmac_get();
	if (!mac)
		return NULL;
	struct qw_hmac *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->alg = alg;
	m->ctx = EVP_MAC_CTX_new(mac);
	if (!m->ctx || hmac_init(m->ctx, alg, key, keylen) != 0) {
		qw_hmac_free(m);
		return NULL;
	}
	return m;
}

void qw_hmac_free(struct qw_hmac *m)
{
	if (!m)
		return;
	EVP_MAC_CTX_free(m->ctx); /* the HMAC provider cleanses its key */
	free(m);
}

int qw_hmac_update(struct qw_hmac *m, const void *data, size_t len)
{
	QW_REQUIRE(m && (data || len == 0));
	if (len == 0)
		return 0;
	return EVP_MAC_update(m->ctx, data, len) ? 0 : QW_ECRYPTO;
}

int qw_hmac_final(struct qw_hmac *m, uint8_t *out)
{
	QW_REQUIRE(m && out);
	size_t outl = 0;
	if (!EVP_MAC_final(m->ctx, out, &outl, qw_hash_bytes(m->alg)))
		return QW_ECRYPTO;
	/* Re-initialise with a NULL key: EVP_MAC keeps the previous key. */
	return EVP_MAC_init(m->ctx, NULL, 0, NULL) ? 0 : QW_ECRYPTO;
}

int qw_hmac_verify(struct qw_hmac *m, const uint8_t *expected, size_t explen)
{
	QW_REQUIRE(m && expected);
	size_t full = qw_hash_bytes(m->alg);
	if (explen < 16 || explen > full)
		return QW_EINVAL;
	uint8_t mac[QW_HASH_MAX_BYTES];
	int ret = qw_hmac_final(m, mac);
	if (ret == 0 && !qw_ct_equal(mac, expected, explen))
		ret = QW_EAUTH;
	qw_wipe(mac, sizeof(mac));
	return ret;
}

int qw_hmac(enum qw_hash_alg alg, const void *key, size_t keylen,
	    const void *data, size_t len, uint8_t *out)
{
	QW_REQUIRE(out && (key || keylen == 0) && (data || len == 0));
	if (!md_name(alg))
		return QW_EINVAL;
	EVP_MAC *mac = hmac_get();
	if (!mac)
		return QW_ECRYPTO;
	int ret = QW_ENOMEM;
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
	if (!ctx)
		goto out;
	ret = hmac_init(ctx, alg, key, keylen);
	if (ret != 0)
		goto out;
	size_t outl = 0;
	ret = QW_ECRYPTO;
	if ((len && !EVP_MAC_update(ctx, data, len)) ||
	    !EVP_MAC_final(ctx, out, &outl, qw_hash_bytes(alg)))
		goto out;
	ret = 0;
out:
	EVP_MAC_CTX_free(ctx);
	return ret;
}

int qw_hkdf(enum qw_hash_alg alg, const void *ikm, size_t ikmlen,
	    const void *salt, size_t saltlen, const void *info, size_t infolen,
	    uint8_t *out, size_t outlen)
{
	QW_REQUIRE(out && (ikm || ikmlen == 0) && (salt || saltlen == 0) &&
		   (info || infolen == 0));
	if (!md_name(alg))
		return QW_EINVAL;
	/* RFC 5869 section 2.3: L <= 255 * HashLen. */
	if (outlen == 0 || outlen > 255 * qw_hash_bytes(alg))
		return QW_ERANGE;
	int ret = QW_ECRYPTO;
	EVP_KDF_CTX *ctx = NULL;
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	if (!kdf)
		goto out;
	ctx = EVP_KDF_CTX_new(kdf);
	if (!ctx) {
		ret = QW_ENOMEM;
		goto out;
	}
	static uint8_t empty[1];
	OSSL_PARAM p[5], *q = p;
	*q++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
						(char *)md_name(alg), 0);
	/* The provider rejects an absent key; a zero-length one is valid
	 * (RFC 5869 places no lower bound on IKM). */
	*q++ = OSSL_PARAM_construct_octet_string(
		OSSL_KDF_PARAM_KEY, ikmlen ? (void *)ikm : empty, ikmlen);
	if (saltlen) /* absent salt = HashLen zeros (RFC 5869 section 2.2) */
		*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
							 (void *)salt, saltlen);
	if (infolen)
		*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
							 (void *)info, infolen);
	*q = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(ctx, out, outlen, p) <= 0)
		goto out;
	ret = 0;
out:
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return ret;
}
