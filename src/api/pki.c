/* The qwave CA: X.509 v3 certificates (RFC 5280) for nodes and SAEs, signed
 * with ECDSA P-256/SHA-256 or SM2/SM3 through OpenSSL 3. Keys come from
 * sm2.h so they are generated and stored (0600) one way everywhere. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "qwave/pki.h"
#include "qwave/sm2.h"

#define CA_NAME_MAX 64
#define PATH_MAX_BYTES 4096
#define URN_PREFIX "urn:qwave:"

const char *qw_pki_kind_name(enum qw_pki_kind kind)
{
	return kind == QW_PKI_NODE ? "node" : kind == QW_PKI_SAE ? "sae" : "?";
}

int qw_pki_id_valid(const char *id)
{
	size_t n;

	if (!id)
		return 0;
	n = strlen(id);
	if (n == 0 || n > QW_PKI_ID_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* Sign x with the issuer key. SM2 signatures use the default
 * distinguishing ID "1234567812345678" (GM/T 0015-2012 for certificates,
 * as sm2.h): OpenSSL 3.0 would otherwise hash an empty ID, which other SM2
 * implementations reject. */
static int sign_cert(X509 *x, const struct qw_sm2_key *k)
{
	OSSL_PARAM params[2] = { OSSL_PARAM_construct_end(), OSSL_PARAM_construct_end() };
	int sm2 = qw_sm2_key_alg(k) == QW_PK_SM2;
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	int ret = QW_ECRYPTO;

	if (!m)
		return QW_ENOMEM;
	if (sm2)
		params[0] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_DIST_ID,
							      (void *)QW_SM2_DEFAULT_ID,
							      QW_SM2_DEFAULT_ID_BYTES);
	if (EVP_DigestSignInit_ex(m, NULL, sm2 ? "SM3" : "SHA256", NULL, NULL,
				  qw_sm2_key_get0_evp(k), params) == 1 &&
	    X509_sign_ctx(x, m) > 0)
		ret = 0;
	EVP_MD_CTX_free(m);
	return ret;
}

/* Verification of an SM2-signed certificate needs the same ID. */
static int set_sm2_id(X509 *x)
{
	ASN1_OCTET_STRING *id;

	if (X509_get_signature_nid(x) != NID_SM2_with_SM3)
		return 0;
	if (!(id = ASN1_OCTET_STRING_new()))
		return QW_ENOMEM;
	if (!ASN1_OCTET_STRING_set(id, (const unsigned char *)QW_SM2_DEFAULT_ID,
				   QW_SM2_DEFAULT_ID_BYTES)) {
		ASN1_OCTET_STRING_free(id);
		return QW_ENOMEM;
	}
	X509_set0_distinguishing_id(x, id);
	return 0;
}

/* RFC 5280 4.1.2.2: positive, at most 20 octets; 127 random bits. */
static int set_random_serial(X509 *x)
{
	unsigned char b[16];
	BIGNUM *bn = NULL;
	int ret = QW_ECRYPTO;

	if (RAND_bytes(b, sizeof(b)) != 1)
		return QW_ECRYPTO;
	b[0] &= 0x7f;
	b[0] |= 0x40; /* fixed length, never zero */
	bn = BN_bin2bn(b, sizeof(b), NULL);
	if (bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		ret = 0;
	BN_free(bn);
	return ret;
}

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	int ok;

	if (!ext)
		return QW_ECRYPTO;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : QW_ECRYPTO;
}

static int write_cert(const char *path, X509 *x)
{
	FILE *f;
	int fd, ok;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return QW_EIO;
	f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		return QW_EIO;
	}
	ok = PEM_write_X509(f, x);
	if (fclose(f) != 0)
		ok = 0;
	return ok ? 0 : QW_EIO;
}

static int read_cert(const char *path, X509 **out)
{
	FILE *f = fopen(path, "r");

	if (!f)
		return errno == ENOENT ? QW_ENOTFOUND : QW_EIO;
	*out = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!*out) {
		ERR_clear_error();
		return QW_EPARSE;
	}
	return 0;
}

static int join(char *out, size_t size, const char *dir, const char *name)
{
	int n = snprintf(out, size, "%s/%s", dir, name);

	return n < 0 || (size_t)n >= size ? QW_EINVAL : 0;
}

/* Validity from now (minus a minute for clock skew between hosts). */
static int set_validity(X509 *x, unsigned days)
{
	if (!X509_gmtime_adj(X509_getm_notBefore(x), -60))
		return QW_ECRYPTO;
	if (!X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL))
		return QW_ECRYPTO;
	return 0;
}

static int set_cn(X509_NAME *nm, const char *cn)
{
	return X509_NAME_add_entry_by_NID(nm, NID_commonName, MBSTRING_UTF8,
					  (const unsigned char *)cn, -1, -1, 0)
		       ? 0
		       : QW_ECRYPTO;
}

int qw_pki_ca_init(const char *dir, enum qw_sm2_alg alg, const char *name, unsigned days)
{
	char crt[PATH_MAX_BYTES], key[PATH_MAX_BYTES];
	struct qw_sm2_key *k = NULL;
	X509 *x = NULL;
	X509V3_CTX ctx;
	struct stat st;
	int ret = QW_EINVAL;

	QW_REQUIRE(dir);
	if (!name)
		name = "qwave CA";
	if (!*name || strlen(name) > CA_NAME_MAX)
		return QW_EINVAL;
	if (days == 0)
		days = QW_PKI_DEFAULT_CA_DAYS;
	if (join(crt, sizeof(crt), dir, "ca.crt") || join(key, sizeof(key), dir, "ca.key"))
		return QW_EINVAL;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return QW_EIO;
	if (stat(key, &st) == 0 || stat(crt, &st) == 0)
		return QW_EEXIST;
	k = qw_sm2_key_generate(alg, &ret);
	if (!k)
		goto out;
	ret = QW_ENOMEM;
	if (!(x = X509_new()))
		goto out;
	ret = QW_ECRYPTO;
	if (!X509_set_version(x, 2) || set_random_serial(x) || set_validity(x, days))
		goto out;
	if (set_cn(X509_get_subject_name(x), name) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(x)) ||
	    !X509_set_pubkey(x, qw_sm2_key_get0_evp(k)))
		goto out;
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
	    add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    add_ext(x, &ctx, NID_subject_key_identifier, "hash") ||
	    add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always"))
		goto out;
	if ((ret = sign_cert(x, k)))
		goto out;
	if ((ret = qw_sm2_key_save(k, key, 1)))
		goto out;
	if ((ret = write_cert(crt, x))) {
		unlink(key);
		goto out;
	}
	ret = 0;
out:
	ERR_clear_error();
	X509_free(x);
	qw_sm2_key_free(k);
	return ret;
}

int qw_pki_issue(const char *dir, const struct qw_pki_issue_opts *o)
{
	char ca_crt[PATH_MAX_BYTES], ca_key[PATH_MAX_BYTES];
	char crt[PATH_MAX_BYTES], key[PATH_MAX_BYTES], san[256];
	struct qw_sm2_key *cak = NULL, *k = NULL;
	X509 *ca = NULL, *x = NULL;
	X509V3_CTX ctx;
	const char *kind;
	int ret;

	QW_REQUIRE(dir && o);
	if ((o->kind != QW_PKI_NODE && o->kind != QW_PKI_SAE) || !qw_pki_id_valid(o->id))
		return QW_EINVAL;
	kind = qw_pki_kind_name(o->kind);
	if (join(ca_crt, sizeof(ca_crt), dir, "ca.crt") || join(ca_key, sizeof(ca_key), dir, "ca.key"))
		return QW_EINVAL;
	if (o->cert_path)
		ret = snprintf(crt, sizeof(crt), "%s", o->cert_path);
	else
		ret = snprintf(crt, sizeof(crt), "%s/%s-%s.crt", dir, kind, o->id);
	if (ret < 0 || (size_t)ret >= sizeof(crt))
		return QW_EINVAL;
	if (o->key_path)
		ret = snprintf(key, sizeof(key), "%s", o->key_path);
	else
		ret = snprintf(key, sizeof(key), "%s/%s-%s.key", dir, kind, o->id);
	if (ret < 0 || (size_t)ret >= sizeof(key))
		return QW_EINVAL;

	if ((ret = read_cert(ca_crt, &ca)))
		goto out;
	if ((ret = qw_sm2_key_load(ca_key, &cak))) {
		if (ret == QW_EIO && access(ca_key, F_OK) != 0)
			ret = QW_ENOTFOUND;
		goto out;
	}
	ret = QW_EAUTH;
	if (X509_check_private_key(ca, qw_sm2_key_get0_evp(cak)) != 1)
		goto out;
	k = qw_sm2_key_generate(o->alg ? o->alg : QW_PK_ECDSA_P256, &ret);
	if (!k)
		goto out;
	ret = QW_ENOMEM;
	if (!(x = X509_new()))
		goto out;
	ret = QW_ECRYPTO;
	if (!X509_set_version(x, 2) || set_random_serial(x) ||
	    set_validity(x, o->days ? o->days : QW_PKI_DEFAULT_DAYS))
		goto out;
	if (set_cn(X509_get_subject_name(x), o->id) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(ca)) ||
	    !X509_set_pubkey(x, qw_sm2_key_get0_evp(k)))
		goto out;
	if (o->kind == QW_PKI_NODE)
		snprintf(san, sizeof(san), "URI:" URN_PREFIX "%s:%s,IP:127.0.0.1,DNS:localhost", kind,
			 o->id);
	else
		snprintf(san, sizeof(san), "URI:" URN_PREFIX "%s:%s", kind, o->id);
	X509V3_set_ctx(&ctx, ca, x, NULL, NULL, 0);
	if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") ||
	    add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature") ||
	    add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth") ||
	    add_ext(x, &ctx, NID_subject_alt_name, san) ||
	    add_ext(x, &ctx, NID_subject_key_identifier, "hash") ||
	    add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always"))
		goto out;
	if ((ret = sign_cert(x, cak)))
		goto out;
	if ((ret = qw_sm2_key_save(k, key, 1)))
		goto out;
	if ((ret = write_cert(crt, x)))
		goto out;
	ret = 0;
out:
	ERR_clear_error();
	X509_free(x);
	X509_free(ca);
	qw_sm2_key_free(k);
	qw_sm2_key_free(cak);
	return ret;
}

/* The single subject CN, as a NUL-terminated ID. */
static int subject_cn(X509 *cert, char id[QW_PKI_ID_MAX + 1])
{
	X509_NAME *nm = X509_get_subject_name(cert);
	int pos = X509_NAME_get_index_by_NID(nm, NID_commonName, -1);
	const ASN1_STRING *s;
	int len;

	if (pos < 0 || X509_NAME_get_index_by_NID(nm, NID_commonName, pos) >= 0)
		return QW_EPERM;
	s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(nm, pos));
	len = ASN1_STRING_length(s);
	if (len <= 0 || len > QW_PKI_ID_MAX)
		return QW_EPERM;
	/* Valid IDs are ASCII, identical in every string type but BMP/UCS. */
	if (ASN1_STRING_type(s) == V_ASN1_BMPSTRING || ASN1_STRING_type(s) == V_ASN1_UNIVERSALSTRING)
		return QW_EPERM;
	memcpy(id, ASN1_STRING_get0_data(s), (size_t)len);
	id[len] = '\0';
	if (strlen(id) != (size_t)len || !qw_pki_id_valid(id))
		return QW_EPERM;
	return 0;
}

int qw_pki_cert_identity(X509 *cert, enum qw_pki_kind *kind, char id[QW_PKI_ID_MAX + 1])
{
	char cn[QW_PKI_ID_MAX + 1];
	GENERAL_NAMES *names;
	int ret;

	QW_REQUIRE(cert && kind && id);
	if ((ret = subject_cn(cert, cn)))
		return ret;
	names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	ret = QW_EPERM;
	for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
		static const enum qw_pki_kind kinds[] = { QW_PKI_NODE, QW_PKI_SAE };
		char want[sizeof(URN_PREFIX) + 8 + QW_PKI_ID_MAX];
		const unsigned char *u;
		int ulen;

		if (g->type != GEN_URI)
			continue;
		u = ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
		ulen = ASN1_STRING_length(g->d.uniformResourceIdentifier);
		for (size_t j = 0; j < sizeof(kinds) / sizeof(kinds[0]); j++) {
			int n = snprintf(want, sizeof(want), URN_PREFIX "%s:%s",
					 qw_pki_kind_name(kinds[j]), cn);

			if (n == ulen && !memcmp(want, u, (size_t)n)) {
				if (ret == 0 && *kind != kinds[j]) {
					ret = QW_EPERM; /* both kinds: ambiguous */
					goto out;
				}
				*kind = kinds[j];
				ret = 0;
			}
		}
	}
out:
	GENERAL_NAMES_free(names);
	if (ret == 0)
		memcpy(id, cn, sizeof(cn));
	return ret;
}

int qw_pki_verify_file(const char *ca_file, const char *cert_file, enum qw_pki_kind *kind,
		       char id[QW_PKI_ID_MAX + 1])
{
	X509_STORE *store = NULL;
	X509_STORE_CTX *ctx = NULL;
	X509 *ca = NULL, *x = NULL;
	int ret;

	QW_REQUIRE(ca_file && cert_file && kind && id);
	if ((ret = read_cert(ca_file, &ca)) || (ret = read_cert(cert_file, &x))) {
		if (ret == QW_ENOTFOUND)
			ret = QW_EIO;
		goto out;
	}
	if ((ret = set_sm2_id(x)) || (ret = set_sm2_id(ca)))
		goto out;
	ret = QW_ENOMEM;
	if (!(store = X509_STORE_new()) || !(ctx = X509_STORE_CTX_new()))
		goto out;
	/* Without the purpose a certificate lacking clientAuth would pass. */
	if (!X509_STORE_add_cert(store, ca) || !X509_STORE_CTX_init(ctx, store, x, NULL) ||
	    !X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT))
		goto out;
	ret = QW_EAUTH;
	if (X509_verify_cert(ctx) != 1)
		goto out;
	ret = qw_pki_cert_identity(x, kind, id);
out:
	ERR_clear_error();
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	X509_free(x);
	X509_free(ca);
	return ret;
}
