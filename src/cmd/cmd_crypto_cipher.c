/* qwave crypto encrypt / decrypt / mac: AEAD sealed messages (aead.h), the
 * 3GPP ZUC algorithms 128-EEA3 / 128-EIA3 (zuc.h) and HMAC (hash.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "cli.h"
#include "cmd_crypto.h"
#include "qwave/aead.h"
#include "qwave/error.h"
#include "qwave/hash.h"
#include "qwave/secmem.h"
#include "qwave/zuc.h"

static void encrypt_help(void)
{
	printf("usage: qwave crypto encrypt --alg ALG --key-file F [--in FILE] [--out FILE]\n"
	       "                            [--aad TEXT] [--in-hex] [--out-hex] [--json]\n"
	       "       qwave crypto encrypt --alg zuc-eea3 --key-file F --count N --bearer B\n"
	       "                            --direction D [--bits LENGTH] [...]\n"
	       "\n"
	       "Authenticated encryption into a self-describing sealed message\n"
	       "[alg id (1 byte) | nonce (12) | ciphertext | tag], fresh random nonce, so\n"
	       "`qwave crypto decrypt` needs only the key.\n"
	       "\n"
	       "  --alg ALG         aes-256-gcm       AES-256-GCM, 32-byte key\n"
	       "                    sm4               best authenticated SM4 mode here: %s\n"
	       "                    sm4-gcm           SM4-GCM, 16-byte key (only if OpenSSL has it;\n"
	       "                                      OpenSSL 3.0 does not)\n"
	       "                    sm4-ctr-hmac-sm3  SM4-CTR + HMAC-SM3 encrypt-then-MAC, 32-byte key\n"
	       "                    zuc-eea3          3GPP 128-EEA3 (ZUC-128) keystream cipher,\n"
	       "                                      16-byte key. NO AUTHENTICATION: anyone can\n"
	       "                                      flip ciphertext bits undetected; pair it\n"
	       "                                      with `mac --alg zuc-eia3`. Never reuse a\n"
	       "                                      COUNT/BEARER/DIRECTION under one key.\n"
	       "  --key-file F      raw key bytes, or the key as hex text (2 chars per byte);\n"
	       "                    make one with `qwave crypto keygen --alg ALG --out F`\n"
	       "  --in FILE         plaintext (default - = stdin)\n"
	       "  --out FILE        ciphertext (default - = stdout, raw bytes)\n"
	       "  --aad TEXT        associated data: authenticated, not encrypted, not stored\n"
	       "                    (decrypt needs the same --aad)\n"
	       "  --in-hex          the input is hex text (whitespace ignored)\n"
	       "  --out-hex         write hex text instead of raw bytes\n"
	       "  --count N         zuc-eea3: COUNT, 32 bits (decimal or 0x hex)\n"
	       "  --bearer B        zuc-eea3: BEARER, 0..31\n"
	       "  --direction D     zuc-eea3: DIRECTION, 0 or 1\n"
	       "  --bits LENGTH     zuc-eea3: message length in bits (default: 8 x input bytes);\n"
	       "                    the output has ceil(LENGTH/8) bytes, trailing bits zero\n"
	       "  --json            {\"alg\", \"ciphertext_b64\" (or \"out\"), sizes}\n",
	       qw_aead_name(qw_aead_sm4_best()));
}

static void decrypt_help(void)
{
	printf("usage: qwave crypto decrypt --key-file F [--alg ALG] [--in FILE] [--out FILE]\n"
	       "                            [--aad TEXT] [--in-hex] [--out-hex] [--json]\n"
	       "       qwave crypto decrypt --alg zuc-eea3 --key-file F --count N --bearer B\n"
	       "                            --direction D [--bits LENGTH] [...]\n"
	       "\n"
	       "Open a sealed message made by `qwave crypto encrypt`: the algorithm is read\n"
	       "from the message; with --alg the message must use that algorithm (no\n"
	       "downgrade). A wrong key, a wrong --aad or a modified message fails with\n"
	       "exit 1 and writes no plaintext.\n"
	       "zuc-eea3 has no header and no authentication: give --alg zuc-eea3 and the\n"
	       "same COUNT/BEARER/DIRECTION/LENGTH as for encryption (EEA3 is its own\n"
	       "inverse).\n"
	       "\n"
	       "Options as for `qwave crypto encrypt --help`. --json gives\n"
	       "{\"alg\", \"plaintext_b64\" (or \"out\"), sizes}.\n");
}

static void mac_help(void)
{
	printf("usage: qwave crypto mac --alg ALG --key-file F [--in FILE] [--out FILE]\n"
	       "                        [--expect HEX] [--in-hex] [--out-hex] [--json]\n"
	       "       qwave crypto mac --alg zuc-eia3 --key-file F --count N --bearer B\n"
	       "                        --direction D [--bits LENGTH] [...]\n"
	       "\n"
	       "Message authentication code of a file or stdin.\n"
	       "\n"
	       "  --alg ALG       zuc-eia3     3GPP 128-EIA3 (ZUC-128): 32-bit MAC, 16-byte key\n"
	       "                  hmac-sm3     HMAC (RFC 2104) with SM3: 256-bit MAC\n"
	       "                  hmac-sha256  HMAC with SHA-256: 256-bit MAC\n"
	       "  --key-file F    zuc-eia3: 16 raw bytes or 32 hex characters;\n"
	       "                  hmac-*: the file's bytes are the key (16..1024 bytes)\n"
	       "  --in FILE       message (default - = stdin)\n"
	       "  --in-hex        the input is hex text (whitespace ignored)\n"
	       "  --out FILE      write the raw MAC to FILE; without --out it is printed as hex\n"
	       "  --out-hex       with --out: write hex text\n"
	       "  --expect HEX    compare with this MAC (constant time): prints \"MAC OK\", or\n"
	       "                  fails with exit 1\n"
	       "  --count N --bearer B --direction D --bits LENGTH\n"
	       "                  zuc-eia3 parameters as in `encrypt --help` (bits of the\n"
	       "                  input past LENGTH are ignored)\n"
	       "  --json          {\"alg\", \"mac\" (hex), \"bits\", [\"match\"]}\n");
}

static int is_zuc_alg(const char *alg, const char *want)
{
	return alg && !strcasecmp(alg, want);
}

static json_t *zuc_json(const struct crypto_opts *o, const char *alg, size_t bits)
{
	return json_pack("{s:s, s:I, s:I, s:I, s:I}", "alg", alg, "count", (json_int_t)o->count,
			 "bearer", (json_int_t)o->bearer, "direction", (json_int_t)o->direction,
			 "length_bits", (json_int_t)bits);
}

/* JSON or the raw/hex output of encrypt/decrypt; field is "ciphertext" or
 * "plaintext". -1 on success, else the exit code. */
static int emit_data(const struct crypto_opts *o, json_t *j, const char *field,
		     const uint8_t *data, size_t len)
{
	char key[32];

	if (!o->json) {
		json_decref(j);
		return crypto_write_output(o, data, len, 0);
	}
	if (o->out_given) {
		int rc = crypto_write_output(o, data, len, 0);
		if (rc >= 0) {
			json_decref(j);
			return rc;
		}
		json_object_set_new(j, "out", json_string(o->out));
	} else {
		char *b64 = crypto_b64(data, len);
		if (!b64) {
			json_decref(j);
			return qw_cli_fail("out of memory");
		}
		snprintf(key, sizeof(key), "%s_b64", field);
		json_object_set_new(j, key, json_string(b64));
		qw_free_secret(b64, strlen(b64) + 1);
	}
	snprintf(key, sizeof(key), "%s_bytes", field);
	json_object_set_new(j, key, json_integer((json_int_t)len));
	qw_cli_print_json(j);
	return -1;
}

/* 128-EEA3 in either direction (the cipher is its own inverse). */
static int zuc_crypt(const struct crypto_opts *o, int encrypt)
{
	uint8_t *key = NULL, *in = NULL, *out = NULL;
	size_t keylen = 0, inlen = 0, bits, outlen = 0;
	int rc, err;

	if (!o->key_file)
		return qw_cli_usage_error(o->cmd, "--key-file F is required");
	if (o->aad)
		return qw_cli_usage_error(o->cmd, "zuc-eea3 has no associated data (--aad)");
	if (!o->have_count || !o->have_bearer || !o->have_direction)
		return crypto_zuc_params(o, 0, &bits);
	rc = crypto_read_key(o->key_file, QW_ZUC128_KEY_BYTES, &key, &keylen);
	if (rc >= 0)
		return rc;
	rc = crypto_read_input(o, &in, &inlen);
	if (rc >= 0)
		goto out;
	rc = crypto_zuc_params(o, inlen, &bits);
	if (rc >= 0)
		goto out;
	outlen = (bits + 7) / 8;
	out = malloc(outlen ? outlen : 1);
	if (!out) {
		rc = qw_cli_fail("out of memory");
		goto out;
	}
	err = qw_zuc_eea3(key, (uint32_t)o->count, (uint8_t)o->bearer, (uint8_t)o->direction,
			  outlen ? in : NULL, bits, outlen ? out : NULL);
	if (err) {
		rc = qw_cli_fail("128-EEA3: %s", qw_strerror(err));
		goto out;
	}
	rc = emit_data(o, zuc_json(o, "zuc-eea3", bits), encrypt ? "ciphertext" : "plaintext",
		       out, outlen);
	if (rc < 0)
		rc = QW_EXIT_OK;
out:
	qw_free_secret(out, outlen ? outlen : 1);
	qw_free_secret(in, inlen);
	if (key)
		qw_secure_free(key, keylen);
	return rc;
}

/* --alg of encrypt/decrypt to an AEAD; exit code or -1. */
static int parse_aead(const struct crypto_opts *o, enum qw_aead_alg *alg)
{
	int err = qw_aead_parse(o->alg, alg);

	if (err == QW_EUNSUPPORTED)
		return qw_cli_fail("%s is not available: %s provides no SM4-GCM; use --alg sm4 "
				   "(selects %s, authenticated SM4) or --alg sm4-ctr-hmac-sm3",
				   o->alg, OpenSSL_version(OPENSSL_VERSION),
				   qw_aead_name(qw_aead_sm4_best()));
	if (err)
		return qw_cli_usage_error(o->cmd, "--alg: '%s' is not aes-256-gcm, sm4, sm4-gcm, "
					  "sm4-ctr-hmac-sm3 or zuc-eea3", o->alg);
	return -1;
}

static const unsigned cipher_opts = CO_ALG | CO_IN | CO_OUT | CO_KEY | CO_JSON | CO_ZUC |
				    CO_AAD | CO_INHEX | CO_OUTHEX;

static int check_zuc_opts(const struct crypto_opts *o, int zuc)
{
	if (!zuc && (o->have_count || o->have_bearer || o->have_direction || o->have_bits))
		return qw_cli_usage_error(o->cmd, "--count/--bearer/--direction/--bits are for "
					  "the zuc algorithms");
	return -1;
}

int crypto_cmd_encrypt(int argc, char **argv)
{
	struct crypto_opts o;
	enum qw_aead_alg alg;
	uint8_t *key = NULL, *in = NULL, *out = NULL;
	size_t keylen = 0, inlen = 0, cap = 0, outlen = 0;
	int rc = crypto_parse(argc, argv, "crypto encrypt", cipher_opts, encrypt_help, &o);
	int err;

	if (rc >= 0)
		return rc;
	if (!o.alg)
		return qw_cli_usage_error(o.cmd, "--alg ALG is required");
	rc = check_zuc_opts(&o, is_zuc_alg(o.alg, "zuc-eea3"));
	if (rc >= 0)
		return rc;
	if (is_zuc_alg(o.alg, "zuc-eea3"))
		return zuc_crypt(&o, 1);
	if (!o.key_file)
		return qw_cli_usage_error(o.cmd, "--key-file F is required");
	rc = parse_aead(&o, &alg);
	if (rc >= 0)
		return rc;
	rc = crypto_read_key(o.key_file, qw_aead_key_bytes(alg), &key, &keylen);
	if (rc >= 0)
		return rc;
	rc = crypto_read_input(&o, &in, &inlen);
	if (rc >= 0)
		goto out;
	cap = inlen + qw_aead_msg_overhead(alg);
	out = malloc(cap);
	if (!out) {
		rc = qw_cli_fail("out of memory");
		goto out;
	}
	err = qw_aead_seal_msg(alg, key, keylen, (const uint8_t *)o.aad, o.aad ? strlen(o.aad) : 0,
			       in, inlen, out, cap, &outlen);
	if (err) {
		rc = qw_cli_fail("%s encryption failed: %s", qw_aead_name(alg), qw_strerror(err));
		goto out;
	}
	rc = emit_data(&o,
		       json_pack("{s:s, s:I}", "alg", qw_aead_name(alg), "plaintext_bytes",
				 (json_int_t)inlen),
		       "ciphertext", out, outlen);
	if (rc < 0)
		rc = QW_EXIT_OK;
out:
	free(out);
	qw_free_secret(in, inlen);
	if (key)
		qw_secure_free(key, keylen);
	return rc;
}

int crypto_cmd_decrypt(int argc, char **argv)
{
	struct crypto_opts o;
	enum qw_aead_alg expect = 0, alg = 0;
	uint8_t *key = NULL, *in = NULL, *pt = NULL;
	size_t keylen = 0, inlen = 0, cap = 0, ptlen = 0;
	int rc = crypto_parse(argc, argv, "crypto decrypt", cipher_opts, decrypt_help, &o);
	int err;

	if (rc >= 0)
		return rc;
	rc = check_zuc_opts(&o, is_zuc_alg(o.alg, "zuc-eea3"));
	if (rc >= 0)
		return rc;
	if (is_zuc_alg(o.alg, "zuc-eea3"))
		return zuc_crypt(&o, 0);
	if (!o.key_file)
		return qw_cli_usage_error(o.cmd, "--key-file F is required");
	if (o.alg) {
		rc = parse_aead(&o, &expect);
		if (rc >= 0)
			return rc;
	}
	rc = crypto_read_input(&o, &in, &inlen);
	if (rc >= 0)
		return rc;
	/* The key length follows from the message's algorithm id. */
	alg = inlen ? (enum qw_aead_alg)in[0] : 0;
	if (expect && qw_aead_key_bytes(alg) && alg != expect) {
		rc = qw_cli_fail("the message uses %s, not %s (--alg)", qw_aead_name(alg),
				 qw_aead_name(expect));
		goto out;
	}
	if (!qw_aead_key_bytes(alg) || inlen < qw_aead_msg_overhead(alg)) {
		rc = qw_cli_fail("input '%s' is not a qwave sealed message (%s)", o.in,
				 inlen && !qw_aead_key_bytes(alg) ? "unknown algorithm id"
								  : "too short");
		goto out;
	}
	rc = crypto_read_key(o.key_file, qw_aead_key_bytes(alg), &key, &keylen);
	if (rc >= 0)
		goto out;
	cap = inlen - qw_aead_msg_overhead(alg);
	pt = malloc(cap ? cap : 1);
	if (!pt) {
		rc = qw_cli_fail("out of memory");
		goto out;
	}
	err = qw_aead_open_msg(expect, key, keylen, (const uint8_t *)o.aad,
			       o.aad ? strlen(o.aad) : 0, in, inlen, pt, cap ? cap : 1, &ptlen,
			       &alg);
	if (err == QW_EAUTH) {
		rc = qw_cli_fail("authentication failed: wrong key, wrong --aad, a different "
				 "--alg, or the message was modified (no plaintext written)");
		goto out;
	}
	if (err == QW_EUNSUPPORTED) {
		rc = qw_cli_fail("the message uses %s, which this OpenSSL does not provide",
				 qw_aead_name(alg));
		goto out;
	}
	if (err) {
		rc = qw_cli_fail("cannot open the sealed message: %s", qw_strerror(err));
		goto out;
	}
	rc = emit_data(&o,
		       json_pack("{s:s, s:I}", "alg", qw_aead_name(alg), "ciphertext_bytes",
				 (json_int_t)inlen),
		       "plaintext", pt, ptlen);
	if (rc < 0)
		rc = QW_EXIT_OK;
out:
	qw_free_secret(pt, cap ? cap : 1);
	qw_free_secret(in, inlen);
	if (key)
		qw_secure_free(key, keylen);
	return rc;
}

int crypto_cmd_mac(int argc, char **argv)
{
	struct crypto_opts o;
	enum qw_hash_alg halg = QW_HASH_SM3;
	uint8_t *key = NULL, *in = NULL, *want = NULL, mac[QW_HASH_MAX_BYTES];
	size_t keylen = 0, inlen = 0, maclen, wantlen = 0, bits = 0;
	int zuc, match = -1, err;
	char *hex = NULL;
	int rc = crypto_parse(argc, argv, "crypto mac",
			      CO_ALG | CO_IN | CO_OUT | CO_KEY | CO_JSON | CO_ZUC | CO_INHEX |
				      CO_OUTHEX | CO_EXPECT,
			      mac_help, &o);

	if (rc >= 0)
		return rc;
	if (!o.alg)
		return qw_cli_usage_error(o.cmd, "--alg ALG is required");
	zuc = is_zuc_alg(o.alg, "zuc-eia3");
	if (!zuc) {
		if (!strcasecmp(o.alg, "hmac-sm3"))
			halg = QW_HASH_SM3;
		else if (!strcasecmp(o.alg, "hmac-sha256"))
			halg = QW_HASH_SHA256;
		else
			return qw_cli_usage_error(o.cmd, "--alg: '%s' is not zuc-eia3, hmac-sm3 or "
						  "hmac-sha256", o.alg);
	}
	rc = check_zuc_opts(&o, zuc);
	if (rc >= 0)
		return rc;
	if (!o.key_file)
		return qw_cli_usage_error(o.cmd, "--key-file F is required");
	if (zuc && (!o.have_count || !o.have_bearer || !o.have_direction))
		return crypto_zuc_params(&o, 0, &bits);
	if (o.expect) {
		err = crypto_hex_to_bytes(o.expect, strlen(o.expect), &want, &wantlen);
		if (err)
			return qw_cli_usage_error(o.cmd, "--expect: '%s' is not hex", o.expect);
	}
	rc = crypto_read_key(o.key_file, zuc ? QW_ZUC128_KEY_BYTES : 0, &key, &keylen);
	if (rc >= 0)
		goto out;
	rc = crypto_read_input(&o, &in, &inlen);
	if (rc >= 0)
		goto out;
	if (zuc) {
		uint32_t m;
		rc = crypto_zuc_params(&o, inlen, &bits);
		if (rc >= 0)
			goto out;
		err = qw_zuc_eia3(key, (uint32_t)o.count, (uint8_t)o.bearer, (uint8_t)o.direction,
				  inlen ? in : NULL, bits, &m);
		maclen = QW_ZUC_EIA3_MAC_BYTES;
		mac[0] = (uint8_t)(m >> 24);
		mac[1] = (uint8_t)(m >> 16);
		mac[2] = (uint8_t)(m >> 8);
		mac[3] = (uint8_t)m;
	} else {
		maclen = qw_hash_bytes(halg);
		err = qw_hmac(halg, key, keylen, in, inlen, mac);
	}
	if (err) {
		rc = qw_cli_fail("%s failed: %s", o.alg, qw_strerror(err));
		goto out;
	}
	if (want) {
		if (wantlen != maclen) {
			rc = qw_cli_fail("--expect has %zu bytes, a %s MAC has %zu", wantlen, o.alg,
					 maclen);
			goto out;
		}
		match = qw_ct_equal(want, mac, maclen);
		if (!match) {
			rc = qw_cli_fail("MAC mismatch: the message or the key differs");
			goto out;
		}
	}
	if (o.out_given) {
		rc = crypto_write_output(&o, mac, maclen, 0);
		if (rc >= 0)
			goto out;
	}
	hex = crypto_hex(mac, maclen);
	if (!hex) {
		rc = qw_cli_fail("out of memory");
		goto out;
	}
	if (o.json) {
		json_t *j = zuc ? zuc_json(&o, "zuc-eia3", bits)
				: json_pack("{s:s, s:I}", "alg", zuc ? "zuc-eia3" : o.alg,
					    "input_bytes", (json_int_t)inlen);
		if (!zuc)
			json_object_set_new(j, "alg", json_string(halg == QW_HASH_SM3
									  ? "hmac-sm3"
									  : "hmac-sha256"));
		json_object_set_new(j, "mac", json_string(hex));
		json_object_set_new(j, "bits", json_integer((json_int_t)(8 * maclen)));
		if (match >= 0)
			json_object_set_new(j, "match", json_boolean(match));
		if (o.out_given)
			json_object_set_new(j, "out", json_string(o.out));
		qw_cli_print_json(j);
	} else if (match == 1 && !o.out_given) {
		printf("MAC OK (%s %s)\n", o.alg, hex);
	} else if (!o.out_given) {
		printf("%s\n", hex);
	}
	rc = QW_EXIT_OK;
out:
	free(hex);
	qw_free_secret(want, wantlen);
	qw_free_secret(in, inlen);
	if (key)
		qw_secure_free(key, keylen);
	return rc;
}
