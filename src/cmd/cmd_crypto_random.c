/* qwave crypto random: bytes from a CTR-DRBG seeded by the OS or by a raw
 * entropy source under the SP 800-90B health tests (entropy.h, rng.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "cmd_crypto.h"
#include "qwave/encoding.h"
#include "qwave/entropy.h"
#include "qwave/error.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

#define RANDOM_CHUNK 65536
/* --json without --out carries the random bytes inline, up to this many. */
#define RANDOM_JSON_MAX 65536

static void random_help(void)
{
	printf("usage: qwave crypto random --bytes N [--source PATH [--min-entropy H]\n"
	       "                           [--bits-per-sample B]] [--out FILE] [--out-hex] [--json]\n"
	       "\n"
	       "N random bytes from a CTR-DRBG (AES-256, SP 800-90A) seeded from the OS,\n"
	       "or from a raw entropy source (a QRNG device or a file of raw samples) that\n"
	       "passes the SP 800-90B start-up and continuous health tests (Repetition\n"
	       "Count and Adaptive Proportion). A failing source stops with exit 1 and\n"
	       "the failed test.\n"
	       "\n"
	       "  --bytes N              1..1073741824 (1 GiB)\n"
	       "  --source PATH          raw samples, one per byte (NIST SP 800-90B tool format)\n"
	       "  --min-entropy H        assessed min-entropy per sample, bits (default 1;\n"
	       "                         claim it conservatively)\n"
	       "  --bits-per-sample B    sample width 1..8 (default 8; higher bits masked)\n"
	       "  --out FILE             write raw bytes (file mode 0600; - = stdout); without\n"
	       "                         --out the bytes are printed as hex\n"
	       "  --out-hex              with --out: write hex text\n"
	       "  --json                 {\"bytes\", \"source\", \"random_hex\" (without --out,\n"
	       "                         N <= 65536), health-test figures with --source}\n");
}

/* Open the random output; stdout for "-". fd or -1 (message printed). */
static int open_out(const char *path)
{
	int fd;

	if (!strcmp(path, "-"))
		return STDOUT_FILENO;
	fd = qw_cli_open_out(path, 1);
	if (fd == QW_EPERM)
		qw_cli_fail("refusing to write '%s': it exists and is readable by group/others, "
			    "is a symlink or not a regular file, or is not writable", path);
	else if (fd < 0)
		qw_cli_fail("cannot write '%s': %s", path, strerror(errno));
	return fd < 0 ? -1 : fd;
}

static int write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t w = write(fd, b, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static int source_error(const struct crypto_opts *o, struct qw_entropy *src, int err)
{
	const char *why = src ? qw_entropy_failure_reason(src) : NULL;

	if (err == QW_EHEALTH)
		return qw_cli_fail("entropy source '%s' failed its SP 800-90B health test: %s",
				   o->source, why ? why : "no reason recorded");
	if (err == QW_EIO)
		return qw_cli_fail("entropy source '%s': read failed or ran out of samples "
				   "(a file needs about %.0f raw samples per 32 output bytes)",
				   o->source, (256.0 + 64.0) / o->min_entropy);
	return qw_cli_fail("entropy source '%s': %s", o->source, qw_strerror(err));
}

int crypto_cmd_random(int argc, char **argv)
{
	struct crypto_opts o;
	struct qw_entropy *src = NULL;
	struct qw_rng *rng = NULL;
	uint8_t *buf = NULL;
	char *hex = NULL, *inline_hex = NULL;
	int fd = -1, err = 0, rc;
	uint64_t left;
	/* Hex to stdout without --out; raw (or --out-hex) to --out. */
	int as_hex;

	rc = crypto_parse(argc, argv, "crypto random",
			  CO_BYTES | CO_SOURCE | CO_OUT | CO_OUTHEX | CO_JSON, random_help, &o);
	if (rc >= 0)
		return rc;
	if (!o.have_bytes)
		return qw_cli_usage_error(o.cmd, "--bytes N is required");
	if (o.json && !o.out_given && o.bytes > RANDOM_JSON_MAX)
		return qw_cli_usage_error(o.cmd, "--json without --out carries at most %d bytes; "
					  "give --out FILE", RANDOM_JSON_MAX);
	as_hex = !o.out_given || o.out_hex;

	if (o.source) {
		src = qw_entropy_new_file(o.source, (unsigned)o.bits_per_sample, o.min_entropy,
					  &err);
		if (!src) {
			if (err == QW_EIO)
				return qw_cli_fail("cannot open entropy source '%s': %s", o.source,
						   strerror(errno));
			return qw_cli_fail("entropy source '%s': %s", o.source, qw_strerror(err));
		}
		rng = qw_rng_new_from_source(src, &err);
		if (!rng) {
			rc = source_error(&o, src, err);
			goto out;
		}
	} else {
		rng = qw_rng_new_system();
		if (!rng) {
			rc = qw_cli_fail("cannot create the system DRBG");
			goto out;
		}
	}
	buf = malloc(RANDOM_CHUNK);
	hex = malloc(2 * RANDOM_CHUNK + 1);
	if (!buf || !hex) {
		rc = qw_cli_fail("out of memory");
		goto out;
	}
	if (o.json && !o.out_given) {
		inline_hex = malloc(2 * (size_t)o.bytes + 1);
		if (!inline_hex) {
			rc = qw_cli_fail("out of memory");
			goto out;
		}
		inline_hex[0] = '\0';
	} else {
		fd = open_out(o.out);
		if (fd < 0) {
			rc = QW_EXIT_FAIL;
			goto out;
		}
	}
	if (o.bytes > 16 * (uint64_t)RANDOM_CHUNK)
		qw_cli_progress("random: generating %llu bytes", (unsigned long long)o.bytes);
	for (left = o.bytes; left > 0;) {
		size_t n = left < RANDOM_CHUNK ? (size_t)left : RANDOM_CHUNK;
		err = qw_rng_bytes(rng, buf, n);
		if (err) {
			qw_cli_progress_done();
			rc = o.source ? source_error(&o, src, err)
				      : qw_cli_fail("DRBG failure: %s", qw_strerror(err));
			goto out;
		}
		left -= n;
		if (inline_hex) {
			(void)qw_hex_encode(inline_hex + 2 * (o.bytes - left - n), 2 * n + 1, buf, n);
			continue;
		}
		if (as_hex) {
			(void)qw_hex_encode(hex, 2 * RANDOM_CHUNK + 1, buf, n);
			err = write_all(fd, hex, 2 * n);
		} else {
			err = write_all(fd, buf, n);
		}
		if (err || (!left && as_hex && write_all(fd, "\n", 1))) {
			int e = errno; /* before isatty() in progress_done */
			qw_cli_progress_done();
			rc = qw_cli_fail("cannot write '%s': %s", o.out, strerror(e));
			goto out;
		}
	}
	if (o.bytes > 16 * (uint64_t)RANDOM_CHUNK)
		qw_cli_progress_done();

	if (o.json) {
		json_t *j = json_pack("{s:I, s:s, s:s}", "bytes", (json_int_t)o.bytes, "source",
				      o.source ? o.source : "os", "drbg", "CTR-DRBG AES-256");
		if (inline_hex)
			json_object_set_new(j, "random_hex", json_string(inline_hex));
		else
			json_object_set_new(j, "out", json_string(o.out));
		if (src) {
			struct qw_entropy_stats st;
			qw_entropy_get_stats(src, &st);
			json_object_set_new(
				j, "health",
				json_pack("{s:f, s:i, s:I, s:I, s:i, s:i, s:i, s:i, s:i}",
					  "min_entropy", o.min_entropy, "bits_per_sample",
					  (int)o.bits_per_sample, "raw_samples",
					  (json_int_t)st.samples, "conditioned_bytes",
					  (json_int_t)st.out_bytes, "rct_cutoff", (int)st.rct_cutoff,
					  "apt_window", (int)st.apt_window, "apt_cutoff",
					  (int)st.apt_cutoff, "max_run", (int)st.max_run, "max_apt",
					  (int)st.max_apt));
		}
		qw_cli_print_json(j);
	} else if (o.out_given && strcmp(o.out, "-")) {
		printf("%llu random bytes written to %s", (unsigned long long)o.bytes,
		       o.out);
		if (src) {
			struct qw_entropy_stats st;
			qw_entropy_get_stats(src, &st);
			printf("; source %s passed the health tests on %llu raw samples",
			       o.source, (unsigned long long)st.samples);
		}
		putchar('\n');
	}
	rc = QW_EXIT_OK;
out:
	if (fd > STDOUT_FILENO && close(fd) && rc == QW_EXIT_OK)
		rc = qw_cli_fail("cannot write '%s': %s", o.out, strerror(errno));
	qw_free_secret(buf, RANDOM_CHUNK);
	qw_free_secret(hex, 2 * RANDOM_CHUNK + 1);
	if (inline_hex)
		qw_free_secret(inline_hex, 2 * (size_t)o.bytes + 1);
	qw_rng_free(rng);
	qw_entropy_free(src);
	return rc;
}
