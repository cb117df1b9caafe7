/* Private to the `qwave crypto` command group (cmd_crypto*.c): the shared
 * option parser and the input/output/key-file helpers. */
#ifndef QWAVE_CMD_CRYPTO_H
#define QWAVE_CMD_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Option bits: each subcommand says which options it accepts. */
enum {
	CO_ALG = 1u << 0,
	CO_IN = 1u << 1,
	CO_OUT = 1u << 2,
	CO_KEY = 1u << 3,
	CO_JSON = 1u << 4,
	CO_ZUC = 1u << 5,       /* --count --bearer --direction --bits */
	CO_BYTES = 1u << 6,
	CO_SOURCE = 1u << 7,    /* --source --min-entropy --bits-per-sample */
	CO_PUBOUT = 1u << 8,
	CO_SIG = 1u << 9,
	CO_ID = 1u << 10,
	CO_AAD = 1u << 11,
	CO_INHEX = 1u << 12,
	CO_OUTHEX = 1u << 13,
	CO_EXPECT = 1u << 14,
};

/* Largest input file and largest `random --bytes`: 1 GiB. */
#define CRYPTO_MAX_BYTES ((uint64_t)1 << 30)

struct crypto_opts {
	const char *cmd;        /* "crypto hash": for "Try 'qwave ... --help'" */
	const char *alg, *in, *out, *key_file, *pub_out, *sig, *source, *id;
	const char *aad, *expect;
	int json, in_hex, out_hex, out_given;
	uint64_t count, bearer, direction, bits, bytes;
	int have_count, have_bearer, have_direction, have_bits, have_bytes;
	double min_entropy;
	uint64_t bits_per_sample;
};

/* Parse argv[1..] into o (defaults filled in first). help() is printed on
 * --help. Returns -1 to go on, or the exit code to return now. */
int crypto_parse(int argc, char **argv, const char *cmd, unsigned allowed,
		 void (*help)(void), struct crypto_opts *o);

/* Read --in (raw, or hex text with --in-hex). Prints the error and
 * returns the exit code, or -1 on success. Free with qw_free_secret. */
int crypto_read_input(const struct crypto_opts *o, uint8_t **data, size_t *len);
/* Read a file whole; error printed, exit code or -1. what names the file
 * in messages ("key file"). */
int crypto_read_path(const char *path, const char *what, uint8_t **data,
		     size_t *len);
/* Read a symmetric key of exactly want bytes from path: a file of want raw
 * bytes, or 2*want hex characters (surrounding whitespace ignored). want 0:
 * any length of 16..1024 raw bytes (HMAC keys). The key lives in secure
 * memory; free with qw_secure_free(*key, *len). Exit code or -1. */
int crypto_read_key(const char *path, size_t want, uint8_t **key, size_t *len);
/* Decode hex text (whitespace anywhere ignored) into a new buffer. 0 or
 * QW_EPARSE/QW_ENOMEM. Free with qw_free_secret(*out, *outlen). */
int crypto_hex_to_bytes(const char *text, size_t len, uint8_t **out, size_t *outlen);
/* New string with the hex of data (free()), or NULL. */
char *crypto_hex(const uint8_t *data, size_t len);
/* New string with the base64 of data (free()), or NULL. */
char *crypto_b64(const uint8_t *data, size_t len);

/* Write a result to --out: raw bytes, or hex text plus a newline with
 * --out-hex. secret: create the file 0600. Exit code or -1. */
int crypto_write_output(const struct crypto_opts *o, const uint8_t *data,
			size_t len, int secret);

/* Check a ZUC command's 3GPP parameters: --count, --bearer and --direction
 * are required; LENGTH (--bits, default 8 * inlen) must fit the input.
 * Sets *bits. Exit code or -1. */
int crypto_zuc_params(const struct crypto_opts *o, size_t inlen, size_t *bits);

int crypto_cmd_encrypt(int argc, char **argv);
int crypto_cmd_decrypt(int argc, char **argv);
int crypto_cmd_mac(int argc, char **argv);
int crypto_cmd_sign(int argc, char **argv);
int crypto_cmd_verify(int argc, char **argv);
int crypto_cmd_random(int argc, char **argv);

#endif
