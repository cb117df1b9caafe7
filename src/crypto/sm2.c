/* SM2 and ECDSA P-256 over OpenSSL 3 EVP_PKEY (include/qwave/sm2.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "qwave/hash.h"
#include "qwave/secmem.h"
#include "qwave/sm2.h"

#define MAX_PEM_FILE (64 * 1024)

struct qw_sm2_key {
	enum qw_sm2_alg alg;
	int priv;
	EVP_PKEY *pkey;
};

static struct qw_sm2_key *wrap(EVP_PKEY *pkey, enum qw_sm2_alg alg, int priv)
{
	struct qw_sm2_key *k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	k->alg = alg;
	k->priv = priv;
	k->pkey = pkey;
	return k;
}

static const char *digest_of(enum qw_sm2_alg alg)
{
	return alg == QW_PK_SM2 ? "SM3" : "SHA256";
}

struct qw_sm2_key *qw_sm2_key_generate(enum qw_sm2_alg alg, int *err)
{
	int ret = QW_EINVAL;
	EVP_PKEY *pkey = NULL;
	struct qw_sm2_key *k = NULL;
	if (alg == QW_PK_SM2)
		pkey = EVP_PKEY_Q_keygen(NULL, NULL, "SM2");
	else if (alg == QW_PK_ECDSA_P256)
		pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	else
		goto out;
	ret = QW_ECRYPTO;
	if (!pkey)
		goto out;
	ret = QW_ENOMEM;
	if (!(k = wrap(pkey, alg, 1)))
		goto out;
	pkey = NULL;
	ret = 0;
out:
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	if (err)
		*err = ret;
	return k;
}

void qw_sm2_key_free(struct qw_sm2_key *k)
{
	if (!k)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

enum qw_sm2_alg qw_sm2_key_alg(const struct qw_sm2_key *k)
{
	QW_REQUIRE(k);
	return k->alg;
}

int qw_sm2_key_has_private(const struct qw_sm2_key *k)
{
	QW_REQUIRE(k);
	return k->priv;
}

EVP_PKEY *qw_sm2_key_get0_evp(const struct qw_sm2_key *k)
{
	QW_REQUIRE(k);
	return k->pkey;
}

static int spki_der(const struct qw_sm2_key *k, uint8_t **der, size_t *len)
{
	unsigned char *p = NULL;
	int n = i2d_PUBKEY(k->pkey, &p);
	if (n <= 0)
		return QW_ECRYPTO;
	*der = p;
	*len = (size_t)n;
	return 0;
}

int qw_sm2_key_fingerprint(const struct qw_sm2_key *k,
			   uint8_t out[QW_SM2_FINGERPRINT_BYTES])
{
	QW_REQUIRE(k && out);
	uint8_t *der;
	size_t len;
	int ret = spki_der(k, &der, &len);
	if (ret != 0)
		return ret;
	ret = qw_hash(QW_HASH_SM3, der, len, out);
	OPENSSL_free(der);
	return ret;
}

/* Classify a decoded key; only SM2 and P-256 are accepted. */
static int classify(EVP_PKEY *pkey, enum qw_sm2_alg *alg)
{
	if (EVP_PKEY_is_a(pkey, "SM2")) {
		*alg = QW_PK_SM2;
		return 0;
	}
	if (EVP_PKEY_is_a(pkey, "EC")) {
		char group[64];
		size_t glen = 0;
		if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME,
						   group, sizeof(group), &glen) &&
		    (strcmp(group, "prime256v1") == 0 ||
		     strcmp(group, "P-256") == 0)) {
			*alg = QW_PK_ECDSA_P256;
			return 0;
		}
	}
	return QW_EUNSUPPORTED;
}

struct qw_sm2_key *qw_sm2_key_public_copy(const struct qw_sm2_key *k)
{
	QW_REQUIRE(k);
	uint8_t *der;
	size_t len;
	if (spki_der(k, &der, &len) != 0)
		return NULL;
	const unsigned char *p = der;
	EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)len);
	OPENSSL_free(der);
	enum qw_sm2_alg alg;
	struct qw_sm2_key *c = NULL;
	if (pub && classify(pub, &alg) == 0 && (c = wrap(pub, alg, 0)))
		pub = NULL;
	EVP_PKEY_free(pub);
	ERR_clear_error();
	return c;
}

int qw_sm2_key_to_pem(const struct qw_sm2_key *k, int private, char **pem,
		      size_t *len)
{
	QW_REQUIRE(k && pem && len);
	if (private && !k->priv)
		return QW_EINVAL;
	int ret = QW_ENOMEM;
	BIO *b = BIO_new(BIO_s_secmem());
	if (!b)
		goto out;
	ret = QW_ECRYPTO;
	if (private ? !PEM_write_bio_PrivateKey(b, k->pkey, NULL, NULL, 0, NULL, NULL)
		    : !PEM_write_bio_PUBKEY(b, k->pkey))
		goto out;
	char *data;
	long n = BIO_get_mem_data(b, &data);
	if (n <= 0)
		goto out;
	ret = QW_ENOMEM;
	char *s = malloc((size_t)n + 1);
	if (!s)
		goto out;
	memcpy(s, data, (size_t)n);
	s[n] = '\0';
	*pem = s;
	*len = (size_t)n;
	ret = 0;
out:
	BIO_free(b); /* secure-memory BIO: cleansed on free */
	ERR_clear_error();
	return ret;
}

int qw_sm2_key_from_pem(const char *pem, size_t len, struct qw_sm2_key **out)
{
	QW_REQUIRE(pem && out);
	if (len > INT32_MAX)
		return QW_EPARSE;
	int ret = QW_ENOMEM;
	int priv = 1;
	EVP_PKEY *pkey = NULL;
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	if (!b)
		goto out;
	pkey = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	if (!pkey) {
		priv = 0;
		BIO_free(b);
		if (!(b = BIO_new_mem_buf(pem, (int)len)))
			goto out;
		pkey = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
	}
	ret = QW_EPARSE;
	if (!pkey)
		goto out;
	enum qw_sm2_alg alg;
	if ((ret = classify(pkey, &alg)) != 0)
		goto out;
	ret = QW_ENOMEM;
	if (!(*out = wrap(pkey, alg, priv)))
		goto out;
	pkey = NULL;
	ret = 0;
out:
	EVP_PKEY_free(pkey);
	BIO_free(b);
	ERR_clear_error();
	return ret;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return QW_EIO;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int qw_sm2_key_save(const struct qw_sm2_key *k, const char *path, int private)
{
	QW_REQUIRE(k && path);
	char *pem = NULL;
	size_t len = 0;
	int fd = -1;
	int ret = qw_sm2_key_to_pem(k, private, &pem, &len);
	if (ret != 0)
		return ret;
	/* Open without O_TRUNC so an existing file can be inspected before
	 * anything in it is destroyed; O_NOFOLLOW refuses a planted symlink. */
	fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
		  private ? 0600 : 0644);
	ret = QW_EIO;
	if (fd < 0) {
		if (errno == ELOOP)
			ret = QW_EPERM;
		goto out;
	}
	struct stat st;
	if (fstat(fd, &st) != 0)
		goto out;
	ret = QW_EPERM;
	if (!S_ISREG(st.st_mode) || (private && (st.st_mode & 077)))
		goto out;
	ret = QW_EIO;
	if (ftruncate(fd, 0) != 0 || (ret = write_all(fd, pem, len)) != 0)
		goto out;
	ret = fsync(fd) == 0 ? 0 : QW_EIO;
out:
	if (fd >= 0 && close(fd) != 0 && ret == 0)
		ret = QW_EIO;
	if (private)
		qw_free_secret(pem, len + 1);
	else
		free(pem);
	return ret;
}

int qw_sm2_key_load(const char *path, struct qw_sm2_key **out)
{
	QW_REQUIRE(path && out);
	int ret = QW_EIO;
	char *buf = NULL;
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return QW_EIO;
	ret = QW_ENOMEM;
	if (!(buf = malloc(MAX_PEM_FILE)))
		goto out;
	ret = QW_EIO;
	for (;;) {
		ssize_t r = read(fd, buf + len, MAX_PEM_FILE - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto out;
		if (r == 0)
			break;
		len += (size_t)r;
		if (len == MAX_PEM_FILE) {
			ret = QW_EPARSE; /* no key file is this large */
			goto out;
		}
	}
	ret = qw_sm2_key_from_pem(buf, len, out);
out:
	close(fd);
	qw_free_secret(buf, MAX_PEM_FILE);
	return ret;
}

/* A DigestSign/Verify context with the SM2 identifier set (SM2 only). */
static EVP_MD_CTX *md_ctx(const struct qw_sm2_key *k, const uint8_t *id,
			  size_t idlen, int sign)
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	if (!m)
		return NULL;
	OSSL_PARAM params[2] = {OSSL_PARAM_construct_end(),
				OSSL_PARAM_construct_end()};
	if (k->alg == QW_PK_SM2) {
		if (!id) {
			id = (const uint8_t *)QW_SM2_DEFAULT_ID;
			idlen = QW_SM2_DEFAULT_ID_BYTES;
		}
		params[0] = OSSL_PARAM_construct_octet_string(
			OSSL_PKEY_PARAM_DIST_ID, (void *)id, idlen);
	}
	int ok = sign ? EVP_DigestSignInit_ex(m, NULL, digest_of(k->alg), NULL,
					      NULL, k->pkey, params)
		      : EVP_DigestVerifyInit_ex(m, NULL, digest_of(k->alg), NULL,
						NULL, k->pkey, params);
	if (!ok) {
		EVP_MD_CTX_free(m);
		return NULL;
	}
	return m;
}

int qw_sm2_sign(const struct qw_sm2_key *k, const uint8_t *id, size_t idlen,
		const void *msg, size_t len, uint8_t *sig, size_t *siglen)
{
	QW_REQUIRE(k && sig && siglen && (msg || len == 0));
	if (!k->priv)
		return QW_EINVAL;
	int ret = QW_ECRYPTO;
	EVP_MD_CTX *m = md_ctx(k, id, idlen, 1);
	size_t n = QW_SM2_SIG_MAX_BYTES;
	if (!m)
		goto out;
	if (!EVP_DigestSign(m, sig, &n, len ? msg : (const void *)"", len))
		goto out;
	*siglen = n;
	ret = 0;
out:
	EVP_MD_CTX_free(m);
	ERR_clear_error();
	return ret;
}

int qw_sm2_verify(const struct qw_sm2_key *k, const uint8_t *id, size_t idlen,
		  const void *msg, size_t len, const uint8_t *sig,
		  size_t siglen)
{
	QW_REQUIRE(k && sig && (msg || len == 0));
	int ret = QW_ECRYPTO;
	EVP_MD_CTX *m = md_ctx(k, id, idlen, 0);
	if (!m)
		goto out;
	/* 1 valid, 0 invalid, < 0 malformed: both failures are QW_EAUTH, as a
	 * forged signature may be malformed on purpose. */
	ret = EVP_DigestVerify(m, sig, siglen, len ? msg : (const void *)"",
			       len) == 1
		      ? 0
		      : QW_EAUTH;
out:
	EVP_MD_CTX_free(m);
	ERR_clear_error();
	return ret;
}

int qw_sm2_encrypt(const struct qw_sm2_key *k, const void *pt, size_t ptlen,
		   uint8_t **ct, size_t *ctlen)
{
	QW_REQUIRE(k && ct && ctlen && (pt || ptlen == 0));
	if (k->alg != QW_PK_SM2)
		return QW_EUNSUPPORTED;
	if (ptlen == 0)
		return QW_EINVAL; /* SM2 encryption of nothing is undefined */
	int ret = QW_ECRYPTO;
	uint8_t *out = NULL;
	size_t n = 0;
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
	if (!c || EVP_PKEY_encrypt_init(c) <= 0 ||
	    EVP_PKEY_encrypt(c, NULL, &n, pt, ptlen) <= 0)
		goto out;
	ret = QW_ENOMEM;
	if (!(out = malloc(n)))
		goto out;
	ret = QW_ECRYPTO;
	if (EVP_PKEY_encrypt(c, out, &n, pt, ptlen) <= 0)
		goto out;
	*ct = out;
	*ctlen = n;
	out = NULL;
	ret = 0;
out:
	free(out);
	EVP_PKEY_CTX_free(c);
	ERR_clear_error();
	return ret;
}

int qw_sm2_decrypt(const struct qw_sm2_key *k, const uint8_t *ct, size_t ctlen,
		   uint8_t **pt, size_t *ptlen)
{
	QW_REQUIRE(k && ct && pt && ptlen);
	if (k->alg != QW_PK_SM2)
		return QW_EUNSUPPORTED;
	if (!k->priv)
		return QW_EINVAL;
	int ret = QW_ECRYPTO;
	uint8_t *out = NULL;
	size_t cap = 0, n = 0;
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
	if (!c || EVP_PKEY_decrypt_init(c) <= 0)
		goto out;
	ret = QW_EAUTH; /* a size query fails only on a malformed ciphertext */
	if (EVP_PKEY_decrypt(c, NULL, &cap, ct, ctlen) <= 0)
		goto out;
	ret = QW_ENOMEM;
	if (!(out = malloc(cap ? cap : 1)))
		goto out;
	n = cap;
	ret = QW_EAUTH;
	if (EVP_PKEY_decrypt(c, out, &n, ct, ctlen) <= 0)
		goto out;
	*pt = out;
	*ptlen = n;
	out = NULL;
	ret = 0;
out:
	qw_free_secret(out, cap);
	EVP_PKEY_CTX_free(c);
	ERR_clear_error();
	return ret;
}
