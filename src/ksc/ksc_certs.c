/* The certificate system of the resource layer: device and user
 * certificates (SM2 or ECDSA P-256) issued by the KSC's CA (pki.h, the
 * directory pki_dir), revocation, a signed X.509 CRL, and the certificate
 * check of challenge-response authentication. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ksc_internal.h"
#include "qwave/pki.h"
#include "qwave/secmem.h"
#include "qwave/sm2.h"

static int read_all(const char *path, char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	long n;
	int ret = QW_EIO;

	*out = NULL;
	if (!f)
		return QW_EIO;
	if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || n > (1 << 20) || fseek(f, 0, SEEK_SET))
		goto out;
	*out = malloc((size_t)n + 1);
	if (!*out) {
		ret = QW_ENOMEM;
		goto out;
	}
	if (fread(*out, 1, (size_t)n, f) != (size_t)n) {
		free(*out);
		*out = NULL;
		goto out;
	}
	(*out)[n] = '\0';
	*len = (size_t)n;
	ret = 0;
out:
	fclose(f);
	return ret;
}

/* Serial number of a PEM certificate, as upper-case hex. */
static int pem_serial(const char *pem, char *hex, size_t cap, X509 **keep)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIGNUM *bn = x ? ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL) : NULL;
	char *h = bn ? BN_bn2hex(bn) : NULL;
	int ret = h ? 0 : QW_EPARSE;

	if (h)
		snprintf(hex, cap, "%s", h);
	OPENSSL_free(h);
	BN_free(bn);
	BIO_free(b);
	if (keep && !ret)
		*keep = x;
	else
		X509_free(x);
	return ret;
}

/* POST /certs {id, alg, days}: issue; the private key goes to the caller
 * (the operator personalising the device) and is not kept. */
static void h_issue(struct ksc_req *r)
{
	const char *id = ksc_str(r, "id", 1), *alg_s = id ? ksc_str(r, "alg", 0) : NULL;
	char dir[] = "/tmp/qwksc-cert-XXXXXX", crt[64], key[64], serial[80];
	struct qw_pki_issue_opts o = { 0 };
	char *cpem = NULL, *kpem = NULL;
	size_t clen = 0, klen = 0;
	uint64_t days = 365;
	sqlite3_stmt *st = NULL;
	json_t *res = NULL, *det = NULL;
	int ret;

	if (!id || r->resp->body || ksc_uint(r, "days", 1, 3650, &days, 0) < 0 ||
	    ksc_need_role(r, KR_OPERATOR))
		return;
	if (!qw_pki_id_valid(id)) {
		ksc_err(r, 400, "invalid id");
		return;
	}
	if (alg_s && strcmp(alg_s, "sm2") && strcmp(alg_s, "ecdsa-p256")) {
		ksc_err(r, 400, "alg must be sm2 or ecdsa-p256");
		return;
	}
	if (!mkdtemp(dir)) {
		ksc_err(r, 500, "no temporary directory");
		return;
	}
	snprintf(crt, sizeof(crt), "%s/c.crt", dir);
	snprintf(key, sizeof(key), "%s/c.key", dir);
	o.kind = QW_PKI_SAE;
	o.id = id;
	o.alg = alg_s && !strcmp(alg_s, "sm2") ? QW_PK_SM2 : QW_PK_ECDSA_P256;
	o.days = (unsigned)days;
	o.cert_path = crt;
	o.key_path = key;
	ret = qw_pki_issue(r->k->pki_dir, &o);
	if (!ret)
		ret = read_all(crt, &cpem, &clen);
	if (!ret)
		ret = read_all(key, &kpem, &klen);
	if (kpem) {
		/* overwrite the key file before unlinking it */
		FILE *f = fopen(key, "r+b");

		if (f) {
			for (size_t i = 0; i < klen; i++)
				fputc(0, f);
			fclose(f);
		}
	}
	unlink(crt);
	unlink(key);
	rmdir(dir);
	if (ret || (ret = pem_serial(cpem, serial, sizeof(serial), NULL)))
		goto fail;
	ret = QW_EDB;
	if (ksc_begin(r->k) ||
	    ksc_prep(r->k, &st, "INSERT INTO certs(serial, subject, kind, alg, status, issued)"
				" VALUES(?, ?, 'sae', ?, 'valid', ?)"))
		goto fail;
	sqlite3_bind_text(st, 1, serial, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, o.alg == QW_PK_SM2 ? "sm2" : "ecdsa-p256", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, ksc_now());
	if (sqlite3_step(st) != SQLITE_DONE)
		goto fail;
	det = json_pack("{s:s, s:s}", "serial", serial, "alg",
			o.alg == QW_PK_SM2 ? "sm2" : "ecdsa-p256");
	if (ksc_audit(r->k, r->who.id, "cert.issue", id, det) || ksc_commit(r->k))
		goto fail;
	res = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", id, "serial", serial, "alg",
			o.alg == QW_PK_SM2 ? "sm2" : "ecdsa-p256", "certificate", cpem, "key", kpem);
	ksc_reply_secret(r, 201, res);
	goto out;
fail:
	ksc_rollback(r->k);
	ksc_fail(r, ret, "certificate");
out:
	ksc_finish(r->k, st);
	json_decref(det);
	free(cpem);
	if (kpem)
		qw_free_secret(kpem, klen + 1);
}

static void h_revoke(struct ksc_req *r, const char *serial)
{
	sqlite3_stmt *st = NULL;
	int changed = 0;

	if (ksc_need_role(r, KR_OPERATOR))
		return;
	if (ksc_begin(r->k)) {
		ksc_err(r, 500, "database busy");
		return;
	}
	if (!ksc_prep(r->k, &st, "UPDATE certs SET status = 'revoked', revoked = ? WHERE serial = ?"
				 " AND status = 'valid'")) {
		sqlite3_bind_int64(st, 1, ksc_now());
		sqlite3_bind_text(st, 2, serial, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_DONE)
			changed = sqlite3_changes(r->k->db);
	}
	ksc_finish(r->k, st);
	if (!changed) {
		ksc_rollback(r->k);
		ksc_err(r, 404, "no valid certificate with serial '%.64s'", serial);
		return;
	}
	if (ksc_audit(r->k, r->who.id, "cert.revoke", serial, NULL) || ksc_commit(r->k)) {
		ksc_rollback(r->k);
		ksc_err(r, 500, "database error");
		return;
	}
	ksc_reply(r, 200, json_pack("{s:s, s:s}", "serial", serial, "status", "revoked"));
}

/* GET /crl: an X.509 v2 CRL (RFC 5280 section 5) signed by the CA, valid
 * for a day, plus the same list as JSON. */
static void h_crl(struct ksc_req *r)
{
	char cap[600], kp[600], *cpem = NULL, *kpem = NULL, *crl_pem = NULL;
	size_t clen = 0, klen = 0;
	X509 *ca = NULL;
	X509_CRL *crl = NULL;
	struct qw_sm2_key *key = NULL;
	BIO *b = NULL;
	sqlite3_stmt *st = NULL;
	json_t *list = json_array();
	ASN1_TIME *t = NULL;
	BUF_MEM *bm;
	int ret = QW_ECRYPTO;

	snprintf(cap, sizeof(cap), "%s/ca.crt", r->k->pki_dir);
	snprintf(kp, sizeof(kp), "%s/ca.key", r->k->pki_dir);
	if (!list || read_all(cap, &cpem, &clen) || read_all(kp, &kpem, &klen) ||
	    pem_serial(cpem, cap, sizeof(cap), &ca) ||
	    qw_sm2_key_from_pem(kpem, klen, &key)) {
		ret = QW_EIO;
		goto fail;
	}
	crl = X509_CRL_new();
	t = ASN1_TIME_new();
	if (!crl || !t || !X509_CRL_set_version(crl, 1) ||
	    !X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)) ||
	    !ASN1_TIME_set(t, time(NULL)) || !X509_CRL_set1_lastUpdate(crl, t) ||
	    !ASN1_TIME_set(t, time(NULL) + 86400) || !X509_CRL_set1_nextUpdate(crl, t))
		goto fail;
	if (ksc_prep(r->k, &st, "SELECT serial, subject, revoked FROM certs WHERE status ="
				" 'revoked' ORDER BY revoked")) {
		ret = QW_EDB;
		goto fail;
	}
	while (sqlite3_step(st) == SQLITE_ROW) {
		X509_REVOKED *rv = X509_REVOKED_new();
		BIGNUM *bn = NULL;
		ASN1_INTEGER *ai = NULL;
		int ok = rv && BN_hex2bn(&bn, (const char *)sqlite3_column_text(st, 0)) &&
			 (ai = BN_to_ASN1_INTEGER(bn, NULL)) && X509_REVOKED_set_serialNumber(rv, ai) &&
			 ASN1_TIME_set(t, (time_t)sqlite3_column_int64(st, 2)) &&
			 X509_REVOKED_set_revocationDate(rv, t) && X509_CRL_add0_revoked(crl, rv);

		ASN1_INTEGER_free(ai);
		BN_free(bn);
		if (!ok) {
			X509_REVOKED_free(rv);
			goto fail;
		}
		json_array_append_new(list, json_pack("{s:s, s:s, s:I}", "serial",
						      sqlite3_column_text(st, 0), "subject",
						      sqlite3_column_text(st, 1), "revoked",
						      (json_int_t)sqlite3_column_int64(st, 2)));
	}
	X509_CRL_sort(crl);
	if (X509_CRL_sign(crl, qw_sm2_key_get0_evp(key),
			  qw_sm2_key_alg(key) == QW_PK_SM2 ? EVP_sm3() : EVP_sha256()) <= 0)
		goto fail;
	b = BIO_new(BIO_s_mem());
	if (!b || !PEM_write_bio_X509_CRL(b, crl))
		goto fail;
	BIO_get_mem_ptr(b, &bm);
	crl_pem = strndup(bm->data, bm->length);
	if (!crl_pem)
		goto fail;
	ksc_reply(r, 200, json_pack("{s:o, s:s}", "revoked", list, "crl", crl_pem));
	list = NULL;
	goto out;
fail:
	ksc_fail(r, ret, "crl");
out:
	ksc_finish(r->k, st);
	json_decref(list);
	ASN1_TIME_free(t);
	X509_CRL_free(crl);
	X509_free(ca);
	qw_sm2_key_free(key);
	BIO_free(b);
	free(crl_pem);
	free(cpem);
	if (kpem)
		qw_free_secret(kpem, klen + 1);
}

void ksc_h_certs(struct ksc_req *r)
{
	/* the caller's rights first, then whether the service is configured */
	if (!strcmp(r->method, "POST") && ksc_need_role(r, KR_OPERATOR))
		return;
	if (!r->k->pki_dir) {
		ksc_err(r, 501, "the certificate system needs pki_dir in the configuration");
		return;
	}
	if (!strcmp(r->seg[0], "crl")) {
		if (r->nseg != 1 || strcmp(r->method, "GET"))
			ksc_err(r, 405, "crl: GET /crl");
		else
			h_crl(r);
		return;
	}
	if (r->nseg == 1 && !strcmp(r->method, "POST"))
		h_issue(r);
	else if (r->nseg == 3 && !strcmp(r->seg[2], "revoke") && !strcmp(r->method, "POST"))
		h_revoke(r, r->seg[1]);
	else
		ksc_err(r, 404, "no such endpoint");
}

/* Certificate authentication: the presented certificate must chain to the
 * CA (qw_pki_verify_file: chain, dates, EKU), name the device, not be
 * revoked here, and its key must have signed msg (SM2 with the default ID,
 * or ECDSA). *why says which check failed. */
int ksc_cert_auth(struct qw_ksc *k, const char *device, const char *pem, const uint8_t *sig,
		  size_t siglen, const uint8_t *msg, size_t msglen, const char **why)
{
	char tmp[] = "/tmp/qwksc-auth-XXXXXX", ca[600], serial[80], id[QW_PKI_ID_MAX + 1];
	enum qw_pki_kind kind;
	sqlite3_stmt *st = NULL;
	X509 *x = NULL;
	struct qw_sm2_key *pub = NULL;
	BIO *b = NULL;
	BUF_MEM *bm;
	int fd, ret;
	size_t n = strlen(pem);

	*why = NULL;
	if (pem_serial(pem, serial, sizeof(serial), &x)) {
		*why = "not a PEM certificate";
		return QW_EPARSE;
	}
	fd = mkstemp(tmp);
	if (fd < 0 || write(fd, pem, n) != (ssize_t)n) {
		if (fd >= 0) {
			close(fd);
			unlink(tmp);
		}
		X509_free(x);
		return QW_EIO;
	}
	close(fd);
	snprintf(ca, sizeof(ca), "%s/ca.crt", k->pki_dir);
	ret = qw_pki_verify_file(ca, tmp, &kind, id);
	unlink(tmp);
	if (ret) {
		*why = "certificate does not verify against the CA";
		goto out;
	}
	if (strcmp(id, device)) {
		*why = "certificate names another subject";
		ret = QW_EAUTH;
		goto out;
	}
	if (ksc_prep(k, &st, "SELECT status FROM certs WHERE serial = ?")) {
		ret = QW_EDB;
		goto out;
	}
	sqlite3_bind_text(st, 1, serial, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW &&
	    !strcmp((const char *)sqlite3_column_text(st, 0), "revoked")) {
		*why = "certificate revoked";
		ret = QW_EAUTH;
		goto out;
	}
	b = BIO_new(BIO_s_mem());
	if (!b || !PEM_write_bio_PUBKEY(b, X509_get0_pubkey(x))) {
		ret = QW_ECRYPTO;
		goto out;
	}
	BIO_get_mem_ptr(b, &bm);
	ret = qw_sm2_key_from_pem(bm->data, bm->length, &pub);
	if (ret) {
		*why = "unsupported certificate key";
		goto out;
	}
	ret = qw_sm2_verify(pub, NULL, 0, msg, msglen, sig, siglen);
	if (ret)
		*why = "wrong signature";
out:
	ksc_finish(k, st);
	X509_free(x);
	qw_sm2_key_free(pub);
	BIO_free(b);
	return ret;
}
