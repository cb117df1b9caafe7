/* qwave crypto: the crypto service from the command line. hash and keygen
 * are here with the shared option parsing and file helpers; encrypt/decrypt/
 * mac in cmd_crypto_cipher.c, sign/verify in cmd_crypto_sign.c, random in
 * cmd_crypto_random.c. Reference and formats: docs/crypto.md. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "cli.h"
#include "cmd_crypto.h"
#include "commands.h"
#include "qwave/aead.h"
#include "qwave/encoding.h"
#include "qwave/error.h"
#include "qwave/hash.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"
#include "qwave/sm2.h"

#define HMAC_KEY_MIN 16
#define HMAC_KEY_MAX 1024

/* ---- option parsing ---- */

struct opt_def {
	const char *name;
	unsigned group;
	int has_value;
};

static const struct opt_def opt_defs[] = {
	{ "--alg", CO_ALG, 1 },
	{ "--in", CO_IN, 1 },
	{ "--out", CO_OUT, 1 },
	{ "--key-file", CO_KEY, 1 },
	{ "--json", CO_JSON, 0 },
	{ "--count", CO_ZUC, 1 },
	{ "--bearer", CO_ZUC, 1 },
	{ "--direction", CO_ZUC, 1 },
	{ "--bits", CO_ZUC, 1 },
	{ "--bytes", CO_BYTES, 1 },
	{ "--source", CO_SOURCE, 1 },
	{ "--min-entropy", CO_SOURCE, 1 },
	{ "--bits-per-sample", CO_SOURCE, 1 },
	{ "--pub-out", CO_PUBOUT, 1 },
	{ "--sig", CO_SIG, 1 },
	{ "--id", CO_ID, 1 },
	{ "--aad", CO_AAD, 1 },
	{ "--in-hex", CO_INHEX, 0 },
	{ "--out-hex", CO_OUTHEX, 0 },
	{ "--expect", CO_EXPECT, 1 },
};

/* Decimal (also "1e6") or 0x-prefixed hexadecimal, at most max. */
static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v;

	if (s && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		char *end;
		if (!isxdigit((unsigned char)s[2]))
			return -1;
		errno = 0;
		v = strtoull(s + 2, &end, 16);
		if (errno || *end)
			return -1;
	} else if (qw_cli_parse_u64(s, &v)) {
		return -1;
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

static int set_value(struct crypto_opts *o, const char *name, const char *val)
{
	const char *cmd = o->cmd;

	if (!strcmp(name, "--alg"))
		o->alg = val;
	else if (!strcmp(name, "--in"))
		o->in = val;
	else if (!strcmp(name, "--out"))
		o->out = val, o->out_given = 1;
	else if (!strcmp(name, "--key-file"))
		o->key_file = val;
	else if (!strcmp(name, "--pub-out"))
		o->pub_out = val;
	else if (!strcmp(name, "--sig"))
		o->sig = val;
	else if (!strcmp(name, "--id"))
		o->id = val;
	else if (!strcmp(name, "--aad"))
		o->aad = val;
	else if (!strcmp(name, "--expect"))
		o->expect = val;
	else if (!strcmp(name, "--source"))
		o->source = val;
	else if (!strcmp(name, "--count")) {
		if (parse_uint(val, UINT32_MAX, &o->count))
			return qw_cli_usage_error(cmd, "--count: '%s' is not an integer in "
						  "0..4294967295 (decimal or 0x hex)", val);
		o->have_count = 1;
	} else if (!strcmp(name, "--bearer")) {
		if (parse_uint(val, 31, &o->bearer))
			return qw_cli_usage_error(cmd, "--bearer: '%s' is not an integer in 0..31",
						  val);
		o->have_bearer = 1;
	} else if (!strcmp(name, "--direction")) {
		if (parse_uint(val, 1, &o->direction))
			return qw_cli_usage_error(cmd, "--direction: '%s' is not 0 or 1", val);
		o->have_direction = 1;
	} else if (!strcmp(name, "--bits")) {
		if (parse_uint(val, UINT32_MAX, &o->bits))
			return qw_cli_usage_error(cmd, "--bits: '%s' is not an integer in "
						  "0..4294967295", val);
		o->have_bits = 1;
	} else if (!strcmp(name, "--bytes")) {
		if (parse_uint(val, UINT64_MAX, &o->bytes) || o->bytes < 1)
			return qw_cli_usage_error(cmd, "--bytes: '%s' is not a positive integer",
						  val);
		if (o->bytes > CRYPTO_MAX_BYTES)
			return qw_cli_usage_error(cmd, "--bytes: %s is above the limit of "
						  "1073741824 bytes (1 GiB)", val);
		o->have_bytes = 1;
	} else if (!strcmp(name, "--min-entropy")) {
		if (qw_cli_parse_double(val, &o->min_entropy) || !(o->min_entropy > 0.0) ||
		    o->min_entropy > 8.0)
			return qw_cli_usage_error(cmd, "--min-entropy: '%s' is not a number in "
						  "(0, 8] bits/sample", val);
	} else if (!strcmp(name, "--bits-per-sample")) {
		if (parse_uint(val, 8, &o->bits_per_sample) || o->bits_per_sample < 1)
			return qw_cli_usage_error(cmd, "--bits-per-sample: '%s' is not an "
						  "integer in 1..8", val);
	}
	return -1;
}

int crypto_parse(int argc, char **argv, const char *cmd, unsigned allowed,
		 void (*help)(void), struct crypto_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->cmd = cmd;
	o->in = "-";
	o->out = "-";
	o->min_entropy = 1.0;
	o->bits_per_sample = 8;

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *eq, *val = NULL;
		const struct opt_def *d = NULL;
		size_t n;
		int rc;

		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			help();
			return QW_EXIT_OK;
		}
		if (strncmp(arg, "--", 2))
			return qw_cli_usage_error(cmd, "unexpected argument '%s'", arg);
		eq = strchr(arg, '=');
		n = eq ? (size_t)(eq - arg) : strlen(arg);
		for (size_t k = 0; k < sizeof(opt_defs) / sizeof(opt_defs[0]); k++)
			if (strlen(opt_defs[k].name) == n && !strncmp(opt_defs[k].name, arg, n))
				d = &opt_defs[k];
		if (!d || !(d->group & allowed))
			return qw_cli_usage_error(cmd, "unknown option '%.*s'", (int)n, arg);
		if (!d->has_value) {
			if (eq)
				return qw_cli_usage_error(cmd, "option '%s' takes no value", d->name);
			if (d->group == CO_JSON)
				o->json = 1;
			else if (d->group == CO_INHEX)
				o->in_hex = 1;
			else
				o->out_hex = 1;
			continue;
		}
		if (eq) {
			val = eq + 1;
		} else {
			if (i + 1 >= argc)
				return qw_cli_usage_error(cmd, "option '%s' needs a value", d->name);
			val = argv[++i];
		}
		rc = set_value(o, d->name, val);
		if (rc >= 0)
			return rc;
	}
	/* keygen alone may put its result (the key) inside the JSON object. */
	if (o->json && o->out_given && !strcmp(o->out, "-") && !(allowed & CO_PUBOUT))
		return qw_cli_usage_error(cmd, "--json prints the JSON object on stdout: give "
					  "--out FILE, or leave --out out");
	if ((allowed & CO_SOURCE) && !o->source &&
	    (o->min_entropy != 1.0 || o->bits_per_sample != 8))
		return qw_cli_usage_error(cmd, "--min-entropy and --bits-per-sample need "
					  "--source PATH");
	if (o->min_entropy > (double)o->bits_per_sample)
		return qw_cli_usage_error(cmd, "--min-entropy %g exceeds --bits-per-sample %llu",
					  o->min_entropy, (unsigned long long)o->bits_per_sample);
	return -1;
}

/* ---- files, hex, keys ---- */

int crypto_read_path(const char *path, const char *what, uint8_t **data, size_t *len)
{
	switch (qw_cli_read_file_max(path, CRYPTO_MAX_BYTES, data, len)) {
	case 0:
		return -1;
	case QW_ENOTFOUND:
		return qw_cli_fail("cannot open %s '%s': %s", what, path, strerror(errno));
	case QW_ERANGE:
		return qw_cli_fail("%s '%s' is larger than 1 GiB", what, path);
	case QW_ENOMEM:
		return qw_cli_fail("out of memory reading %s '%s'", what, path);
	default:
		return qw_cli_fail("cannot read %s '%s': %s", what, path, strerror(errno));
	}
}

int crypto_hex_to_bytes(const char *text, size_t len, uint8_t **out, size_t *outlen)
{
	char *clean = malloc(len + 1);
	uint8_t *bytes = NULL;
	size_t m = 0, got;
	int ret = QW_ENOMEM;

	if (!clean)
		return QW_ENOMEM;
	for (size_t i = 0; i < len; i++)
		if (!isspace((unsigned char)text[i]))
			clean[m++] = text[i];
	bytes = malloc(m / 2 + 1);
	if (!bytes)
		goto out;
	ret = qw_hex_decode(bytes, m / 2 + 1, &got, clean, m);
	if (ret) {
		free(bytes);
		goto out;
	}
	*out = bytes;
	*outlen = got;
out:
	qw_free_secret(clean, len + 1);
	return ret;
}

char *crypto_hex(const uint8_t *data, size_t len)
{
	size_t n = qw_hex_encoded_len(len) + 1;
	char *s = malloc(n);

	if (s && qw_hex_encode(s, n, data, len)) {
		free(s);
		s = NULL;
	}
	return s;
}

char *crypto_b64(const uint8_t *data, size_t len)
{
	size_t n = qw_base64_encoded_len(len) + 1;
	char *s = malloc(n);

	if (s && qw_base64_encode(s, n, data, len)) {
		free(s);
		s = NULL;
	}
	return s;
}

int crypto_read_input(const struct crypto_opts *o, uint8_t **data, size_t *len)
{
	uint8_t *raw, *dec;
	size_t rawlen, declen;
	int rc = crypto_read_path(o->in, "input", &raw, &rawlen);

	if (rc >= 0 || !o->in_hex) {
		if (rc < 0) {
			*data = raw;
			*len = rawlen;
		}
		return rc;
	}
	rc = crypto_hex_to_bytes((const char *)raw, rawlen, &dec, &declen);
	qw_free_secret(raw, rawlen);
	if (rc)
		return qw_cli_fail("input '%s' is not hex text (--in-hex): %s", o->in,
				   rc == QW_EPARSE ? "odd length or a non-hex character"
						   : qw_strerror(rc));
	*data = dec;
	*len = declen;
	return -1;
}

static int all_hex(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isxdigit(p[i]))
			return 0;
	return 1;
}

int crypto_read_key(const char *path, size_t want, uint8_t **key, size_t *len)
{
	uint8_t *raw, *k = NULL;
	size_t rawlen, a = 0, b, n;
	int rc;

	rc = crypto_read_path(path, "key file", &raw, &rawlen);
	if (rc >= 0)
		return rc;
	b = rawlen;
	if (want == 0) {
		/* HMAC: the file's bytes are the key. */
		if (rawlen < HMAC_KEY_MIN || rawlen > HMAC_KEY_MAX) {
			rc = qw_cli_fail("key file '%s' holds %zu bytes; an HMAC key needs "
					 "%d..%d bytes", path, rawlen, HMAC_KEY_MIN, HMAC_KEY_MAX);
			goto out;
		}
		n = rawlen;
	} else if (rawlen == want) {
		n = want;
	} else {
		while (a < b && isspace(raw[a]))
			a++;
		while (b > a && isspace(raw[b - 1]))
			b--;
		if (b - a != 2 * want || !all_hex(raw + a, b - a)) {
			rc = qw_cli_fail("key file '%s' holds %zu bytes; expected %zu raw bytes "
					 "or %zu hex characters", path, rawlen, want, 2 * want);
			goto out;
		}
		n = want;
	}
	k = qw_secure_alloc(n);
	if (!k) {
		rc = qw_cli_fail("out of memory");
		goto out;
	}
	if (n == rawlen) {
		memcpy(k, raw, n);
	} else {
		size_t got;
		if (qw_hex_decode(k, n, &got, (const char *)raw + a, b - a)) {
			rc = qw_cli_fail("key file '%s': bad hex", path);
			goto out;
		}
	}
	*key = k;
	*len = n;
	k = NULL;
	rc = -1;
out:
	if (k)
		qw_secure_free(k, n);
	qw_free_secret(raw, rawlen);
	return rc;
}

int crypto_write_output(const struct crypto_opts *o, const uint8_t *data, size_t len,
			int secret)
{
	int ret;

	if (o->out_hex) {
		char *h = crypto_hex(data, len);
		size_t hl = qw_hex_encoded_len(len);
		if (!h)
			return qw_cli_fail("out of memory");
		h[hl] = '\n';
		ret = qw_cli_write_file(o->out, (const uint8_t *)h, hl + 1, secret);
		qw_free_secret(h, hl + 1);
	} else {
		ret = qw_cli_write_file(o->out, data, len, secret);
	}
	if (ret == QW_EPERM && secret)
		return qw_cli_fail("refusing to write '%s': it exists and is readable by "
				   "group/others, is a symlink or not a regular file, or is "
				   "not writable", o->out);
	if (ret)
		return qw_cli_fail("cannot write '%s': %s", o->out, qw_strerror(ret));
	return -1;
}

int crypto_zuc_params(const struct crypto_opts *o, size_t inlen, size_t *bits)
{
	if (!o->have_count || !o->have_bearer || !o->have_direction)
		return qw_cli_usage_error(o->cmd, "%s needs --count, --bearer and --direction "
					  "(the 3GPP COUNT, BEARER, DIRECTION)", o->alg);
	if (!o->have_bits) {
		if (inlen > (size_t)UINT32_MAX / 8)
			return qw_cli_fail("input of %zu bytes is above the 2^32-bit LENGTH "
					   "limit of %s", inlen, o->alg);
		*bits = inlen * 8;
		return -1;
	}
	if ((o->bits + 7) / 8 > inlen)
		return qw_cli_fail("--bits %llu needs %llu input bytes, the input has %zu",
				   (unsigned long long)o->bits,
				   (unsigned long long)((o->bits + 7) / 8), inlen);
	*bits = (size_t)o->bits;
	return -1;
}

/* ---- hash ---- */

static void hash_help(void)
{
	printf("usage: qwave crypto hash [--alg sm3|sha256|sha512] [--in FILE] [--out FILE]\n"
	       "                         [--in-hex] [--out-hex] [--json]\n"
	       "\n"
	       "Digest of a file or stdin (OpenSSL EVP): SM3 (GB/T 32905, the default),\n"
	       "SHA-256 or SHA-512 (FIPS 180-4).\n"
	       "\n"
	       "  --alg ALG     sm3 (default), sha256, sha512\n"
	       "  --in FILE     message (default - = stdin)\n"
	       "  --in-hex      the input is hex text (whitespace ignored)\n"
	       "  --out FILE    write the raw digest to FILE (- = stdout); without --out\n"
	       "                the digest is printed as one line of hex\n"
	       "  --out-hex     with --out: write hex text instead of raw bytes\n"
	       "  --json        {\"alg\", \"digest\" (hex), \"bits\", \"input_bytes\"}\n");
}

static int crypto_hash(int argc, char **argv)
{
	struct crypto_opts o;
	enum qw_hash_alg alg = QW_HASH_SM3;
	uint8_t *msg = NULL, dig[QW_HASH_MAX_BYTES];
	size_t len, dlen;
	int rc = crypto_parse(argc, argv, "crypto hash",
			      CO_ALG | CO_IN | CO_OUT | CO_JSON | CO_INHEX | CO_OUTHEX, hash_help, &o);

	if (rc >= 0)
		return rc;
	if (o.alg && qw_hash_parse(o.alg, &alg))
		return qw_cli_usage_error(o.cmd, "--alg: '%s' is not sm3, sha256 or sha512", o.alg);
	rc = crypto_read_input(&o, &msg, &len);
	if (rc >= 0)
		return rc;
	dlen = qw_hash_bytes(alg);
	if (qw_hash(alg, msg, len, dig)) {
		rc = qw_cli_fail("%s failed in the crypto library", qw_hash_name(alg));
		goto out;
	}
	if (o.out_given) {
		rc = crypto_write_output(&o, dig, dlen, 0);
		if (rc >= 0)
			goto out;
	}
	{
		char *hex = crypto_hex(dig, dlen);
		if (!hex) {
			rc = qw_cli_fail("out of memory");
			goto out;
		}
		if (o.json) {
			json_t *j = json_pack("{s:s, s:s, s:i, s:I}", "alg", qw_hash_name(alg),
					      "digest", hex, "bits", (int)(8 * dlen), "input_bytes",
					      (json_int_t)len);
			if (o.out_given)
				json_object_set_new(j, "out", json_string(o.out));
			qw_cli_print_json(j);
		} else if (!o.out_given) {
			printf("%s\n", hex);
		}
		free(hex);
	}
	rc = QW_EXIT_OK;
out:
	qw_free_secret(msg, len);
	return rc;
}

/* ---- keygen ---- */

static void keygen_help(void)
{
	printf("usage: qwave crypto keygen --alg ALG --out FILE [--pub-out FILE] [--json]\n"
	       "\n"
	       "Generate a key from the system DRBG. Symmetric keys are written as raw\n"
	       "bytes, file mode 0600; an SM2 (or ECDSA P-256) key pair as PEM: the\n"
	       "private key (PKCS#8, mode 0600) to --out, the public key to --pub-out.\n"
	       "Keys are never printed unless you give --out - explicitly.\n"
	       "\n"
	       "  --alg ALG       the algorithm the key is for:\n"
	       "                    sm4               the SM4 AEAD `encrypt --alg sm4` uses\n"
	       "                                      (%s here: %zu bytes)\n"
	       "                    sm4-gcm           16 bytes\n"
	       "                    sm4-ctr-hmac-sm3  32 bytes (split by HKDF-SM3)\n"
	       "                    aes-256, aes-256-gcm            32 bytes\n"
	       "                    zuc, zuc-eea3, zuc-eia3         16 bytes\n"
	       "                    hmac-sm3, hmac-sha256           32 bytes\n"
	       "                    sm2, ecdsa-p256   key pair (PEM)\n"
	       "  --out FILE      the (private) key; - prints it on stdout\n"
	       "  --pub-out FILE  sm2/ecdsa-p256: also write the public key\n"
	       "  --json          {\"alg\", \"key_bytes\" or \"fingerprint\", \"out\", ...}\n",
	       qw_aead_name(qw_aead_sm4_best()), qw_aead_key_bytes(qw_aead_sm4_best()));
}

/* Key length for a symmetric --alg name; 0 if unknown. */
static size_t sym_key_bytes(const char *alg, const char **canon)
{
	static const struct {
		const char *name;
		size_t bytes;
	} tab[] = {
		{ "sm4-gcm", QW_AEAD_SM4_GCM_KEY_BYTES },
		{ "sm4-ctr-hmac-sm3", QW_AEAD_SM4_CTR_HMAC_SM3_KEY_BYTES },
		{ "aes-256", QW_AEAD_AES256_GCM_KEY_BYTES },
		{ "aes-256-gcm", QW_AEAD_AES256_GCM_KEY_BYTES },
		{ "zuc", 16 },
		{ "zuc-eea3", 16 },
		{ "zuc-eia3", 16 },
		{ "hmac-sm3", 32 },
		{ "hmac-sha256", 32 },
	};

	if (!strcasecmp(alg, "sm4")) {
		*canon = qw_aead_name(qw_aead_sm4_best());
		return qw_aead_key_bytes(qw_aead_sm4_best());
	}
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (!strcasecmp(alg, tab[i].name)) {
			*canon = tab[i].name;
			return tab[i].bytes;
		}
	return 0;
}

static int keygen_pk(const struct crypto_opts *o, enum qw_sm2_alg alg, const char *name)
{
	struct qw_sm2_key *k;
	uint8_t fp[QW_SM2_FINGERPRINT_BYTES];
	char *fphex = NULL, *pem = NULL;
	size_t pemlen = 0;
	int err = 0, rc = QW_EXIT_FAIL;

	k = qw_sm2_key_generate(alg, &err);
	if (!k)
		return qw_cli_fail("%s key generation failed: %s", name, qw_strerror(err));
	if (qw_sm2_key_fingerprint(k, fp) || !(fphex = crypto_hex(fp, sizeof(fp)))) {
		qw_cli_fail("cannot compute the key fingerprint");
		goto out;
	}
	if (!strcmp(o->out, "-")) {
		err = qw_sm2_key_to_pem(k, 1, &pem, &pemlen);
		if (err || (!o->json && qw_cli_write_file("-", (const uint8_t *)pem, pemlen, 1))) {
			qw_cli_fail("cannot print the private key: %s", qw_strerror(err));
			goto out;
		}
	} else {
		err = qw_sm2_key_save(k, o->out, 1);
		if (err == QW_EPERM) {
			qw_cli_fail("refusing to write '%s': it exists and is not a private "
				    "(mode 0600) regular file", o->out);
			goto out;
		}
		if (err) {
			qw_cli_fail("cannot write private key '%s': %s", o->out, qw_strerror(err));
			goto out;
		}
	}
	if (o->pub_out) {
		err = qw_sm2_key_save(k, o->pub_out, 0);
		if (err) {
			qw_cli_fail("cannot write public key '%s': %s", o->pub_out,
				    qw_strerror(err));
			goto out;
		}
	}
	if (o->json) {
		json_t *j = json_pack("{s:s, s:s, s:s}", "alg", name, "fingerprint_sm3", fphex,
				      "out", o->out);
		if (o->pub_out)
			json_object_set_new(j, "pub_out", json_string(o->pub_out));
		if (pem)
			json_object_set_new(j, "private_pem", json_string(pem));
		qw_cli_print_json(j);
	} else if (strcmp(o->out, "-")) {
		printf("%s key pair generated (256-bit curve)\n", name);
		printf("private key written to %s (hidden, mode 0600)\n", o->out);
		if (o->pub_out)
			printf("public key written to %s\n", o->pub_out);
		printf("fingerprint (SM3 of the public key) %s\n", fphex);
	}
	rc = QW_EXIT_OK;
out:
	if (pem)
		qw_free_secret(pem, pemlen + 1);
	free(fphex);
	qw_sm2_key_free(k);
	return rc;
}

static int crypto_keygen(int argc, char **argv)
{
	struct crypto_opts o;
	const char *canon = NULL;
	uint8_t *key = NULL;
	size_t n;
	int rc = crypto_parse(argc, argv, "crypto keygen", CO_ALG | CO_OUT | CO_PUBOUT | CO_JSON,
			      keygen_help, &o);

	if (rc >= 0)
		return rc;
	if (!o.alg)
		return qw_cli_usage_error(o.cmd, "--alg ALG is required");
	if (!o.out_given)
		return qw_cli_usage_error(o.cmd, "--out FILE is required (--out - prints the key)");
	if (!strcasecmp(o.alg, "sm2") || !strcasecmp(o.alg, "ecdsa-p256")) {
		int sm2 = !strcasecmp(o.alg, "sm2");
		return keygen_pk(&o, sm2 ? QW_PK_SM2 : QW_PK_ECDSA_P256, sm2 ? "sm2" : "ecdsa-p256");
	}
	if (o.pub_out)
		return qw_cli_usage_error(o.cmd, "--pub-out is for sm2 and ecdsa-p256 key pairs");
	n = sym_key_bytes(o.alg, &canon);
	if (!n)
		return qw_cli_usage_error(o.cmd, "--alg: '%s' is not a known key type "
					  "(sm4, sm4-gcm, sm4-ctr-hmac-sm3, aes-256, zuc, "
					  "hmac-sm3, hmac-sha256, sm2, ecdsa-p256)", o.alg);
	key = qw_secure_alloc(n);
	if (!key)
		return qw_cli_fail("out of memory");
	if (qw_random_bytes(key, n)) {
		rc = qw_cli_fail("the system DRBG failed");
		goto out;
	}
	if (o.json && !strcmp(o.out, "-")) {
		char *hex = crypto_hex(key, n);
		if (!hex) {
			rc = qw_cli_fail("out of memory");
			goto out;
		}
		qw_cli_print_json(json_pack("{s:s, s:i, s:s}", "alg", canon, "key_bytes", (int)n,
					    "key_hex", hex));
		qw_free_secret(hex, 2 * n + 1);
		rc = QW_EXIT_OK;
		goto out;
	}
	rc = crypto_write_output(&o, key, n, 1);
	if (rc >= 0)
		goto out;
	if (o.json)
		qw_cli_print_json(json_pack("{s:s, s:i, s:s, s:s}", "alg", canon, "key_bytes",
					    (int)n, "out", o.out, "mode", "0600"));
	else if (strcmp(o.out, "-"))
		printf("%s key of %zu bytes (%zu bits) written to %s (hidden, mode 0600)\n", canon,
		       n, 8 * n, o.out);
	rc = QW_EXIT_OK;
out:
	qw_secure_free(key, n);
	return rc;
}

int qw_cmd_crypto(int argc, char **argv)
{
	static const struct qw_cli_cmd cmds[] = {
		{ "hash", crypto_hash, "SM3 / SHA-256 / SHA-512 digest" },
		{ "encrypt", crypto_cmd_encrypt, "SM4 / AES-256-GCM sealed message, ZUC 128-EEA3" },
		{ "decrypt", crypto_cmd_decrypt, "open a sealed message, ZUC 128-EEA3" },
		{ "mac", crypto_cmd_mac, "ZUC 128-EIA3, HMAC-SM3, HMAC-SHA256" },
		{ "sign", crypto_cmd_sign, "SM2 (or ECDSA P-256) signature" },
		{ "verify", crypto_cmd_verify, "check an SM2 (or ECDSA P-256) signature" },
		{ "keygen", crypto_keygen, "new symmetric key or SM2 key pair (mode 0600)" },
		{ "random", crypto_cmd_random, "random bytes: DRBG over the OS or a health-tested source" },
		{ NULL, NULL, NULL },
	};

	return qw_cli_dispatch("crypto",
			       "The crypto service: SM2/SM3/SM4/ZUC and AES, files or stdin/stdout.",
			       cmds, argc, argv);
}
