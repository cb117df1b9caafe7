/* qwave crypto sign / verify: SM2 signatures with SM3 (GB/T 32918.2) and
 * ECDSA P-256 through sm2.h. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "cli.h"
#include "cmd_crypto.h"
#include "qwave/error.h"
#include "qwave/secmem.h"
#include "qwave/sm2.h"

static void sign_help(void)
{
	printf("usage: qwave crypto sign --key-file PRIVATE.pem [--alg sm2|ecdsa-p256]\n"
	       "                         [--in FILE] [--out FILE] [--id ID] [--in-hex] [--out-hex]\n"
	       "                         [--json]\n"
	       "\n"
	       "Sign a file or stdin: SM2 with SM3 over Z_A || M (GB/T 32918.2), or ECDSA\n"
	       "P-256 with SHA-256. The signature is DER SEQUENCE { r, s }.\n"
	       "\n"
	       "  --alg ALG        sm2 (default) or ecdsa-p256; must match the key\n"
	       "  --key-file F     PEM private key (`qwave crypto keygen --alg sm2`)\n"
	       "  --in FILE        message (default - = stdin)\n"
	       "  --in-hex         the input is hex text (whitespace ignored)\n"
	       "  --out FILE       write the DER signature to FILE; without --out it is\n"
	       "                   printed as hex\n"
	       "  --out-hex        with --out: write hex text\n"
	       "  --id ID          SM2 distinguishing identifier (default %s)\n"
	       "  --json           {\"alg\", \"signature\" (hex DER), \"fingerprint_sm3\"}\n",
	       QW_SM2_DEFAULT_ID);
}

static void verify_help(void)
{
	printf("usage: qwave crypto verify --key-file KEY.pem --sig FILE [--alg sm2|ecdsa-p256]\n"
	       "                           [--in FILE] [--id ID] [--in-hex] [--json]\n"
	       "\n"
	       "Check a signature made by `qwave crypto sign`. Prints \"signature OK\" (exit\n"
	       "0), or fails with exit 1: \"signature verification failed\".\n"
	       "\n"
	       "  --key-file F     PEM public key (or the private key)\n"
	       "  --sig FILE       the signature: raw DER, or hex text\n"
	       "  --alg ALG        sm2 (default) or ecdsa-p256; must match the key\n"
	       "  --in FILE        message (default - = stdin)\n"
	       "  --in-hex         the input is hex text (whitespace ignored)\n"
	       "  --id ID          SM2 distinguishing identifier (default %s)\n"
	       "  --json           {\"alg\", \"valid\": true, \"fingerprint_sm3\"}\n",
	       QW_SM2_DEFAULT_ID);
}

/* --alg and the key file; exit code or -1 with *k loaded. */
static int load_key(const struct crypto_opts *o, int need_private, struct qw_sm2_key **k)
{
	enum qw_sm2_alg want = QW_PK_SM2;
	int err;

	if (o->alg && !strcasecmp(o->alg, "ecdsa-p256"))
		want = QW_PK_ECDSA_P256;
	else if (o->alg && strcasecmp(o->alg, "sm2"))
		return qw_cli_usage_error(o->cmd, "--alg: '%s' is not sm2 or ecdsa-p256", o->alg);
	if (!o->key_file)
		return qw_cli_usage_error(o->cmd, "--key-file F is required");
	if (o->id && want != QW_PK_SM2)
		return qw_cli_usage_error(o->cmd, "--id is for sm2 only");
	err = qw_sm2_key_load(o->key_file, k);
	if (err == QW_EIO)
		return qw_cli_fail("cannot read key file '%s'", o->key_file);
	if (err == QW_EUNSUPPORTED)
		return qw_cli_fail("key file '%s' holds a key type other than SM2 or ECDSA P-256",
				   o->key_file);
	if (err)
		return qw_cli_fail("key file '%s' is not a PEM SM2/P-256 key: %s", o->key_file,
				   qw_strerror(err));
	if (qw_sm2_key_alg(*k) != want) {
		qw_sm2_key_free(*k);
		*k = NULL;
		return qw_cli_fail("key file '%s' holds an %s key, not %s", o->key_file,
				   want == QW_PK_SM2 ? "ECDSA P-256" : "SM2",
				   want == QW_PK_SM2 ? "SM2 (give --alg ecdsa-p256)" : "ECDSA P-256");
	}
	if (need_private && !qw_sm2_key_has_private(*k)) {
		qw_sm2_key_free(*k);
		*k = NULL;
		return qw_cli_fail("key file '%s' holds only a public key; signing needs the "
				   "private key", o->key_file);
	}
	return -1;
}

static const char *key_alg_name(const struct qw_sm2_key *k)
{
	return qw_sm2_key_alg(k) == QW_PK_SM2 ? "sm2" : "ecdsa-p256";
}

static char *fingerprint(const struct qw_sm2_key *k)
{
	uint8_t fp[QW_SM2_FINGERPRINT_BYTES];

	if (qw_sm2_key_fingerprint(k, fp))
		return NULL;
	return crypto_hex(fp, sizeof(fp));
}

int crypto_cmd_sign(int argc, char **argv)
{
	struct crypto_opts o;
	struct qw_sm2_key *k = NULL;
	uint8_t *msg = NULL, sig[QW_SM2_SIG_MAX_BYTES];
	size_t len = 0, siglen = 0;
	char *hex = NULL, *fp = NULL;
	int err, rc = crypto_parse(argc, argv, "crypto sign",
				   CO_ALG | CO_IN | CO_OUT | CO_KEY | CO_JSON | CO_ID | CO_INHEX |
					   CO_OUTHEX,
				   sign_help, &o);

	if (rc >= 0)
		return rc;
	rc = load_key(&o, 1, &k);
	if (rc >= 0)
		return rc;
	rc = crypto_read_input(&o, &msg, &len);
	if (rc >= 0)
		goto out;
	err = qw_sm2_sign(k, (const uint8_t *)o.id, o.id ? strlen(o.id) : 0, msg, len, sig,
			  &siglen);
	if (err) {
		rc = qw_cli_fail("signing failed: %s", qw_strerror(err));
		goto out;
	}
	if (o.out_given) {
		rc = crypto_write_output(&o, sig, siglen, 0);
		if (rc >= 0)
			goto out;
	}
	hex = crypto_hex(sig, siglen);
	fp = fingerprint(k);
	if (!hex || !fp) {
		rc = qw_cli_fail("out of memory");
		goto out;
	}
	if (o.json) {
		json_t *j = json_pack("{s:s, s:s, s:s, s:I}", "alg", key_alg_name(k), "signature",
				      hex, "fingerprint_sm3", fp, "input_bytes", (json_int_t)len);
		if (o.out_given)
			json_object_set_new(j, "out", json_string(o.out));
		qw_cli_print_json(j);
	} else if (!o.out_given) {
		printf("%s\n", hex);
	}
	rc = QW_EXIT_OK;
out:
	free(hex);
	free(fp);
	qw_free_secret(msg, len);
	qw_sm2_key_free(k);
	return rc;
}

/* The signature file: hex text when it is nothing but hex digits (and
 * surrounding whitespace), else raw DER (whose 2nd/3rd bytes are never both
 * hex digits). Exit code or -1. */
static int read_sig(const char *path, uint8_t **sig, size_t *len)
{
	uint8_t *raw;
	size_t n, a = 0, b;
	int rc = crypto_read_path(path, "signature file", &raw, &n), hex = 1;

	if (rc >= 0)
		return rc;
	b = n;
	while (a < b && isspace(raw[a]))
		a++;
	while (b > a && isspace(raw[b - 1]))
		b--;
	for (size_t i = a; i < b; i++)
		if (!isxdigit(raw[i]))
			hex = 0;
	if (hex && b > a) {
		if (crypto_hex_to_bytes((const char *)raw + a, b - a, sig, len)) {
			free(raw);
			return qw_cli_fail("signature file '%s': odd number of hex digits", path);
		}
		free(raw);
		return -1;
	}
	*sig = raw;
	*len = n;
	return -1;
}

int crypto_cmd_verify(int argc, char **argv)
{
	struct crypto_opts o;
	struct qw_sm2_key *k = NULL;
	uint8_t *msg = NULL, *sig = NULL;
	size_t len = 0, siglen = 0;
	char *fp = NULL;
	int err, rc = crypto_parse(argc, argv, "crypto verify",
				   CO_ALG | CO_IN | CO_KEY | CO_JSON | CO_ID | CO_INHEX | CO_SIG,
				   verify_help, &o);

	if (rc >= 0)
		return rc;
	if (!o.sig)
		return qw_cli_usage_error(o.cmd, "--sig FILE is required");
	rc = load_key(&o, 0, &k);
	if (rc >= 0)
		return rc;
	rc = read_sig(o.sig, &sig, &siglen);
	if (rc >= 0)
		goto out;
	rc = crypto_read_input(&o, &msg, &len);
	if (rc >= 0)
		goto out;
	err = qw_sm2_verify(k, (const uint8_t *)o.id, o.id ? strlen(o.id) : 0, msg, len, sig,
			    siglen);
	if (err == QW_EAUTH) {
		rc = qw_cli_fail("signature verification failed");
		goto out;
	}
	if (err) {
		rc = qw_cli_fail("verification error: %s", qw_strerror(err));
		goto out;
	}
	fp = fingerprint(k);
	if (!fp) {
		rc = qw_cli_fail("out of memory");
		goto out;
	}
	if (o.json)
		qw_cli_print_json(json_pack("{s:s, s:b, s:s}", "alg", key_alg_name(k), "valid", 1,
					    "fingerprint_sm3", fp));
	else
		printf("signature OK (%s, key %.16s...)\n", key_alg_name(k), fp);
	rc = QW_EXIT_OK;
out:
	free(fp);
	free(sig);
	qw_free_secret(msg, len);
	qw_sm2_key_free(k);
	return rc;
}
