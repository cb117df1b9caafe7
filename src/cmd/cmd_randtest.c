/* qwave randtest: NIST SP 800-22 Rev. 1a randomness report for a key or
 * random-bit file (src/plkg/randtest.c; docs/randtest.md). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "cmd_crypto.h"
#include "commands.h"
#include "qwave/bitvec.h"
#include "qwave/encoding.h"
#include "qwave/error.h"
#include "qwave/randtest.h"
#include "qwave/secmem.h"

static const char *const CMD = "randtest";

/* SP 800-22 section of each result, in qw_randtest_run_all() order. */
static const char *const SECTIONS[QW_RANDTEST_COUNT] = {
	"2.1", "2.2", "2.3", "2.4", "2.6", "2.11", "2.12", "2.13",
};

static void help(void)
{
	printf("usage: qwave randtest [--in FILE|-] [--hex] [--bits N] [--alpha A] [--json]\n"
	       "\n"
	       "NIST SP 800-22 Rev. 1a statistical tests on a bit sequence (a key, QKD\n"
	       "or PLKG output, QRNG samples): frequency (2.1), block frequency (2.2),\n"
	       "runs (2.3), longest run of ones (2.4), spectral DFT (2.6), serial (2.11),\n"
	       "approximate entropy (2.12), cumulative sums (2.13). See docs/randtest.md.\n"
	       "\n"
	       "options:\n"
	       "  --in FILE|-   input (default: standard input); raw bytes, most\n"
	       "                significant bit of each byte first\n"
	       "  --hex         input is hex text (whitespace ignored)\n"
	       "  --bits N      test only the first N bits\n"
	       "  --alpha A     significance level, 0 < A < 1 (default 0.01)\n"
	       "  --json        one JSON object on stdout\n"
	       "\n"
	       "A test whose minimum length exceeds the input is 'n/a' (not applicable),\n"
	       "never a pass. A test passes when every P-value is >= alpha.\n"
	       "Exit codes: 0 every applicable test passed, 1 a test failed, no test\n"
	       "was applicable, or the input could not be read; 2 usage error.\n");
}

static json_t *num_or_null(double v)
{
	return isnan(v) ? json_null() : json_real(v);
}

static void print_human(const struct qw_randtest_result *res, size_t count, size_t nbits,
			double alpha)
{
	printf("NIST SP 800-22 Rev. 1a randomness report: %zu bits, alpha = %g\n\n", nbits,
	       alpha);
	printf("%-5s %-20s %-9s %-9s %-5s %s\n", "sect", "test", "P-value", "P-value2",
	       "result", "details");
	for (size_t i = 0; i < count; i++) {
		const struct qw_randtest_result *r = &res[i];
		char p1[16] = "-", p2[16] = "-";

		if (!isnan(r->p_value))
			snprintf(p1, sizeof(p1), "%.6f", r->p_value);
		if (!isnan(r->p_value2))
			snprintf(p2, sizeof(p2), "%.6f", r->p_value2);
		printf("%-5s %-20s %-9s %-9s %-6s %s\n", SECTIONS[i], r->name, p1, p2,
		       !r->applicable ? "n/a" : r->passed ? "pass" : "FAIL", r->note);
	}
}

int qw_cmd_randtest(int argc, char **argv)
{
	const char *in = "-";
	int hex = 0, json = 0, have_bits = 0, exit_code = QW_EXIT_FAIL, ret;
	uint64_t want_bits = 0;
	double alpha = QW_RANDTEST_ALPHA_DEFAULT;
	uint8_t *data = NULL, *bytes = NULL;
	size_t len = 0, nbytes = 0, nbits, count = QW_RANDTEST_COUNT, applicable = 0, passed = 0;
	struct qw_bitvec *bits = NULL;
	struct qw_randtest_result res[QW_RANDTEST_COUNT];

	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i];

		if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
			help();
			return QW_EXIT_OK;
		} else if (!strcmp(opt, "--hex")) {
			hex = 1;
		} else if (!strcmp(opt, "--json")) {
			json = 1;
		} else if (!strcmp(opt, "--in") || !strcmp(opt, "--bits") ||
			   !strcmp(opt, "--alpha")) {
			const char *val;

			if (i + 1 >= argc)
				return qw_cli_usage_error(CMD, "option '%s' needs a value", opt);
			val = argv[++i];
			if (!strcmp(opt, "--in")) {
				in = val;
			} else if (!strcmp(opt, "--bits")) {
				if (qw_cli_parse_u64(val, &want_bits) || want_bits == 0)
					return qw_cli_usage_error(
						CMD, "--bits: '%s' is not a positive integer", val);
				have_bits = 1;
			} else if (qw_cli_parse_double(val, &alpha) || !(alpha > 0 && alpha < 1)) {
				return qw_cli_usage_error(CMD, "--alpha: '%s' is not in (0, 1)", val);
			}
		} else {
			return qw_cli_usage_error(CMD, "unexpected argument '%s'", opt);
		}
	}

	ret = qw_cli_read_file(in, &data, &len);
	if (ret) {
		exit_code = qw_cli_fail("cannot read '%s': %s", in, qw_strerror(ret));
		goto out;
	}
	if (hex) {
		ret = crypto_hex_to_bytes((const char *)data, len, &bytes, &nbytes);
		if (ret) {
			exit_code = qw_cli_fail("'%s' is not hex text: %s", in, qw_strerror(ret));
			goto out;
		}
	} else {
		bytes = data;
		nbytes = len;
		data = NULL;
		len = 0;
	}
	nbits = nbytes * 8;
	if (have_bits) {
		if (want_bits > nbits) {
			exit_code = qw_cli_fail("--bits %llu exceeds the %zu bits of input",
						(unsigned long long)want_bits, nbits);
			goto out;
		}
		nbits = (size_t)want_bits;
	}
	if (nbits == 0) {
		exit_code = qw_cli_fail("empty input");
		goto out;
	}
	bits = qw_bitvec_new(0);
	if (!bits || qw_bitvec_from_bytes(bits, bytes, nbits)) {
		exit_code = qw_cli_fail("%s", qw_strerror(QW_ENOMEM));
		goto out;
	}
	if (nbits >= 2000000)
		qw_cli_progress("randtest: %zu bits...", nbits);
	ret = qw_randtest_run_all(bits, alpha, res, &count);
	if (nbits >= 2000000)
		qw_cli_progress_done();
	if (ret) {
		exit_code = qw_cli_fail("%s", qw_strerror(ret));
		goto out;
	}
	for (size_t i = 0; i < count; i++) {
		applicable += res[i].applicable != 0;
		passed += res[i].passed != 0;
	}

	if (json) {
		json_t *obj = json_object(), *arr = json_array();

		for (size_t i = 0; i < count; i++) {
			json_t *t = json_object();

			json_object_set_new(t, "name", json_string(res[i].name));
			json_object_set_new(t, "section", json_string(SECTIONS[i]));
			json_object_set_new(t, "applicable", json_boolean(res[i].applicable));
			json_object_set_new(t, "p_value", num_or_null(res[i].p_value));
			json_object_set_new(t, "p_value2", num_or_null(res[i].p_value2));
			json_object_set_new(t, "passed", json_boolean(res[i].passed));
			json_object_set_new(t, "note", json_string(res[i].note));
			json_array_append_new(arr, t);
		}
		json_object_set_new(obj, "bits", json_integer((json_int_t)nbits));
		json_object_set_new(obj, "alpha", json_real(alpha));
		json_object_set_new(obj, "tests", arr);
		json_object_set_new(obj, "applicable", json_integer((json_int_t)applicable));
		json_object_set_new(obj, "passed", json_integer((json_int_t)passed));
		json_object_set_new(obj, "all_passed",
				    json_boolean(applicable > 0 && passed == applicable));
		qw_cli_print_json(obj);
	} else {
		print_human(res, count, nbits, alpha);
		printf("\n%zu of %zu applicable tests passed (%zu not applicable)\n", passed,
		       applicable, count - applicable);
	}
	if (applicable == 0)
		exit_code = qw_cli_fail("%zu bits are too short for every test", nbits);
	else if (passed < applicable)
		exit_code = qw_cli_fail("%zu of %zu applicable tests failed at alpha = %g",
					applicable - passed, applicable, alpha);
	else
		exit_code = QW_EXIT_OK;
out:
	qw_bitvec_free(bits);
	qw_free_secret(data, len);
	qw_free_secret(bytes, nbytes);
	return exit_code;
}
