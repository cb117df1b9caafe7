/* PKI: CA creation, node/SAE issuance (ECDSA P-256 and SM2), chain
 * verification, identity extraction (CN checked against the SAN URN), file
 * modes, refusal of foreign CAs and of certificates without a qwave
 * identity. */
#define _XOPEN_SOURCE 700
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ftw.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "qwave/pki.h"
#include "qwave/sm2.h"

static char tmp[64];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static int setup(void **state)
{
	(void)state;
	strcpy(tmp, "/tmp/qw-test-pki-XXXXXX");
	return mkdtemp(tmp) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	return nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void path(char *out, size_t n, const char *sub, const char *name)
{
	snprintf(out, n, "%s/%s/%s", tmp, sub, name);
}

static X509 *load(const char *p)
{
	FILE *f = fopen(p, "r");
	X509 *x;

	assert_non_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

static mode_t mode_of(const char *p)
{
	struct stat st;

	assert_int_equal(stat(p, &st), 0);
	return st.st_mode & 0777;
}

static int has_san_uri(X509 *x, const char *uri)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	int found = 0;

	for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);

		if (g->type == GEN_URI &&
		    !strcmp((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), uri))
			found = 1;
	}
	GENERAL_NAMES_free(names);
	return found;
}

static void test_ca_and_issue_ecdsa(void **state)
{
	char dir[128], p[256], ca[256], id[QW_PKI_ID_MAX + 1];
	enum qw_pki_kind kind;
	X509 *cax, *sae, *node;
	struct qw_pki_issue_opts o = { .kind = QW_PKI_SAE, .id = "sae-A" };
	ASN1_INTEGER *s1;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/ec", tmp);
	assert_int_equal(qw_pki_ca_init(dir, QW_PK_ECDSA_P256, "test CA", 0), 0);
	path(ca, sizeof(ca), "ec", "ca.crt");
	path(p, sizeof(p), "ec", "ca.key");
	assert_int_equal(mode_of(p), 0600);
	assert_int_equal(mode_of(dir), 0700);
	/* an existing CA is never replaced */
	assert_int_equal(qw_pki_ca_init(dir, QW_PK_ECDSA_P256, NULL, 0), QW_EEXIST);

	cax = load(ca);
	assert_int_equal(X509_check_ca(cax), 1);
	assert_true(X509_get_key_usage(cax) & KU_KEY_CERT_SIGN);
	assert_int_equal(X509_check_issued(cax, cax), X509_V_OK);
	assert_int_equal(X509_verify(cax, X509_get0_pubkey(cax)), 1);

	assert_int_equal(qw_pki_issue(dir, &o), 0);
	o.kind = QW_PKI_NODE;
	o.id = "node-1";
	assert_int_equal(qw_pki_issue(dir, &o), 0);

	path(p, sizeof(p), "ec", "sae-sae-A.key");
	assert_int_equal(mode_of(p), 0600);
	path(p, sizeof(p), "ec", "node-node-1.key");
	assert_int_equal(mode_of(p), 0600);

	path(p, sizeof(p), "ec", "sae-sae-A.crt");
	assert_int_equal(qw_pki_verify_file(ca, p, &kind, id), 0);
	assert_int_equal(kind, QW_PKI_SAE);
	assert_string_equal(id, "sae-A");
	sae = load(p);
	assert_int_equal(X509_check_ca(sae), 0);
	assert_true(X509_get_extended_key_usage(sae) & XKU_SSL_CLIENT);
	assert_true(X509_get_extended_key_usage(sae) & XKU_SSL_SERVER);
	assert_true(has_san_uri(sae, "urn:qwave:sae:sae-A"));
	assert_int_equal(X509_verify(sae, X509_get0_pubkey(cax)), 1);
	assert_int_equal(X509_get_signature_nid(sae), NID_ecdsa_with_SHA256);

	path(p, sizeof(p), "ec", "node-node-1.crt");
	assert_int_equal(qw_pki_verify_file(ca, p, &kind, id), 0);
	assert_int_equal(kind, QW_PKI_NODE);
	assert_string_equal(id, "node-1");
	node = load(p);
	assert_true(has_san_uri(node, "urn:qwave:node:node-1"));
	assert_int_equal(X509_check_host(node, "localhost", 0, 0, NULL), 1);
	assert_int_equal(X509_check_ip_asc(node, "127.0.0.1", 0), 1);
	assert_int_equal(X509_check_host(sae, "localhost", 0, 0, NULL), 0);

	/* serials are random, positive and distinct */
	s1 = X509_get_serialNumber(sae);
	assert_int_not_equal(ASN1_INTEGER_cmp(s1, X509_get_serialNumber(node)), 0);
	assert_int_equal(ASN1_STRING_type(s1), V_ASN1_INTEGER);

	X509_free(cax);
	X509_free(sae);
	X509_free(node);
}

static void test_bad_ids(void **state)
{
	static const char *bad[] = { "", "a b", "sae/1", "x%41", "\xc3\xa9",
				     "0123456789012345678901234567890123456789012345678901234567890123X" };
	char dir[128];
	struct qw_pki_issue_opts o = { .kind = QW_PKI_SAE };

	(void)state;
	snprintf(dir, sizeof(dir), "%s/ids", tmp);
	assert_int_equal(qw_pki_ca_init(dir, QW_PK_ECDSA_P256, NULL, 30), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		o.id = bad[i];
		assert_false(qw_pki_id_valid(bad[i]));
		assert_int_equal(qw_pki_issue(dir, &o), QW_EINVAL);
	}
	o.id = "0123456789012345678901234567890123456789012345678901234567890123";
	assert_true(qw_pki_id_valid(o.id));
	assert_int_equal(qw_pki_issue(dir, &o), 0);
	o.kind = 7;
	assert_int_equal(qw_pki_issue(dir, &o), QW_EINVAL);
	/* no CA there */
	o.kind = QW_PKI_SAE;
	o.id = "x";
	snprintf(dir, sizeof(dir), "%s/none", tmp);
	assert_int_equal(qw_pki_issue(dir, &o), QW_ENOTFOUND);
}

static void test_foreign_ca_refused(void **state)
{
	char d1[128], d2[128], ca1[256], crt2[256], id[QW_PKI_ID_MAX + 1];
	struct qw_pki_issue_opts o = { .kind = QW_PKI_SAE, .id = "sae-X" };
	enum qw_pki_kind kind;

	(void)state;
	snprintf(d1, sizeof(d1), "%s/ca1", tmp);
	snprintf(d2, sizeof(d2), "%s/ca2", tmp);
	/* the same name on both: only the signature tells them apart */
	assert_int_equal(qw_pki_ca_init(d1, QW_PK_ECDSA_P256, "qwave CA", 0), 0);
	assert_int_equal(qw_pki_ca_init(d2, QW_PK_ECDSA_P256, "qwave CA", 0), 0);
	assert_int_equal(qw_pki_issue(d2, &o), 0);
	path(ca1, sizeof(ca1), "ca1", "ca.crt");
	path(crt2, sizeof(crt2), "ca2", "sae-sae-X.crt");
	assert_int_equal(qw_pki_verify_file(ca1, crt2, &kind, id), QW_EAUTH);
	path(ca1, sizeof(ca1), "ca2", "ca.crt");
	assert_int_equal(qw_pki_verify_file(ca1, crt2, &kind, id), 0);
}

static void test_sm2(void **state)
{
	char dir[128], ca[256], p[256], id[QW_PKI_ID_MAX + 1];
	struct qw_pki_issue_opts o = { .kind = QW_PKI_SAE, .id = "ksc-dev-7", .alg = QW_PK_SM2 };
	struct qw_sm2_key *cak;
	enum qw_pki_kind kind;
	const ASN1_BIT_STRING *sig;
	unsigned char *tbs = NULL;
	X509 *x;
	int tbslen;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/sm2", tmp);
	assert_int_equal(qw_pki_ca_init(dir, QW_PK_SM2, "SM2 CA", 0), 0);
	assert_int_equal(qw_pki_issue(dir, &o), 0);
	path(ca, sizeof(ca), "sm2", "ca.crt");
	path(p, sizeof(p), "sm2", "sae-ksc-dev-7.crt");
	assert_int_equal(qw_pki_verify_file(ca, p, &kind, id), 0);
	assert_string_equal(id, "ksc-dev-7");
	x = load(p);
	assert_int_equal(X509_get_signature_nid(x), NID_SM2_with_SM3);
	/* The signature is a GB/T 32918.2 one with the default ID: our own SM2
	 * verifier (sm2.h) accepts it over the TBSCertificate. */
	path(p, sizeof(p), "sm2", "ca.key");
	assert_int_equal(qw_sm2_key_load(p, &cak), 0);
	tbslen = i2d_re_X509_tbs(x, &tbs);
	assert_true(tbslen > 0);
	X509_get0_signature(&sig, NULL, x);
	assert_int_equal(qw_sm2_verify(cak, NULL, 0, tbs, (size_t)tbslen,
				       ASN1_STRING_get0_data(sig), (size_t)ASN1_STRING_length(sig)),
			 0);
	OPENSSL_free(tbs);
	qw_sm2_key_free(cak);
	X509_free(x);

	/* an ECDSA CA can certify an SM2 device key, and the reverse */
	snprintf(dir, sizeof(dir), "%s/ec", tmp);
	o.id = "dev-sm2";
	assert_int_equal(qw_pki_issue(dir, &o), 0);
	path(ca, sizeof(ca), "ec", "ca.crt");
	path(p, sizeof(p), "ec", "sae-dev-sm2.crt");
	assert_int_equal(qw_pki_verify_file(ca, p, &kind, id), 0);
	x = load(p);
	assert_int_equal(EVP_PKEY_is_a(X509_get0_pubkey(x), "SM2"), 1);
	X509_free(x);
}

/* A certificate whose CN is not backed by a qwave SAN URN names nobody. */
static void test_identity_needs_san(void **state)
{
	struct qw_sm2_key *k = qw_sm2_key_generate(QW_PK_ECDSA_P256, NULL);
	char id[QW_PKI_ID_MAX + 1];
	enum qw_pki_kind kind;
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	X509 *x = X509_new();

	(void)state;
	assert_non_null(k);
	assert_non_null(x);
	assert_true(X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName,
					       MBSTRING_ASC, (const unsigned char *)"sae-A", -1, -1, 0));
	assert_true(X509_set_pubkey(x, qw_sm2_key_get0_evp(k)));
	assert_int_equal(qw_pki_cert_identity(x, &kind, id), QW_EPERM);
	/* SAN for another ID */
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, "URI:urn:qwave:sae:sae-B");
	assert_non_null(ext);
	assert_true(X509_add_ext(x, ext, -1));
	X509_EXTENSION_free(ext);
	assert_int_equal(qw_pki_cert_identity(x, &kind, id), QW_EPERM);
	/* and the matching one */
	X509_EXTENSION_free(X509_delete_ext(x, X509_get_ext_by_NID(x, NID_subject_alt_name, -1)));
	ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, "URI:urn:qwave:sae:sae-A");
	assert_true(X509_add_ext(x, ext, -1));
	X509_EXTENSION_free(ext);
	assert_int_equal(qw_pki_cert_identity(x, &kind, id), 0);
	assert_int_equal(kind, QW_PKI_SAE);
	assert_string_equal(id, "sae-A");
	X509_free(x);
	qw_sm2_key_free(k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ca_and_issue_ecdsa),
		cmocka_unit_test(test_bad_ids),
		cmocka_unit_test(test_foreign_ca_refused),
		cmocka_unit_test(test_sm2),
		cmocka_unit_test(test_identity_needs_san),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
