/* qwave bench pa: Toeplitz privacy amplification throughput (input key
 * bits per second), median over --runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/cmd/cli.h"
#include "bench.h"
#include "qwave/toeplitz.h"

/* Benchmark data only (the hash speed does not depend on the bit values):
 * a local xorshift keeps the driver independent of the DRBG's speed. */
static uint64_t xorshift64(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void fill(struct qw_bitvec *v, uint64_t *st)
{
	for (size_t i = 0; i < v->nwords; i++)
		v->w[i] = xorshift64(st);
	if (v->nbits & 63)
		v->w[v->nwords - 1] &= ((uint64_t)1 << (v->nbits & 63)) - 1;
}

/* CPU seconds of this thread: on a shared machine the per-core cost,
 * which wall time overstates whenever other jobs take the core. */
static double thread_cpu_now(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts))
		return 0;
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(void)
{
	printf("usage: qwave bench pa [--bits N] [--ratio R] [--runs K]\n"
	       "                      [--method auto|fft|karatsuba|schoolbook|reference]\n"
	       "                      [--portable|--pclmul-only] [--json]\n\n"
	       "Toeplitz privacy amplification of an N-bit key (default 2^20) to R N bits\n"
	       "(default R 0.5). Reports the median time over K runs (default 5) and the\n"
	       "throughput in input Mbit/s, by wall clock and by this thread's CPU time\n"
	       "(the per-core figure on a shared machine). --portable disables carry-less multiply\n"
	       "instructions, --pclmul-only the 256-bit VPCLMULQDQ ones.\n");
}

int qw_bench_pa(int argc, char **argv)
{
	uint64_t bits = (uint64_t)1 << 20, runs = 5, st = 0x2545f4914f6cdd1du;
	double ratio = 0.5, *t = NULL, *tc = NULL, med, medc;
	struct qw_toeplitz_opts o = { QW_TOEPLITZ_AUTO, QW_TOEPLITZ_ISA_BEST };
	struct qw_bitvec *key = NULL, *seed = NULL, *out = NULL;
	int json = 0, ret = QW_EXIT_FAIL;
	size_t m;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage();
			return QW_EXIT_OK;
		} else if (!strcmp(a, "--json")) {
			json = 1;
		} else if (!strcmp(a, "--portable")) {
			o.isa = QW_TOEPLITZ_ISA_PORTABLE;
		} else if (!strcmp(a, "--pclmul-only")) {
			o.isa = QW_TOEPLITZ_ISA_PCLMUL;
		} else if (!strcmp(a, "--bits") && v) {
			if (qw_cli_parse_u64(v, &bits) || bits < 2 || bits > ((uint64_t)1 << 34))
				return qw_cli_usage_error("bench pa", "bad --bits '%s'", v);
			i++;
		} else if (!strcmp(a, "--ratio") && v) {
			if (qw_cli_parse_double(v, &ratio) || !(ratio > 0 && ratio <= 1))
				return qw_cli_usage_error("bench pa", "bad --ratio '%s' (0 < R <= 1)", v);
			i++;
		} else if (!strcmp(a, "--runs") && v) {
			if (qw_cli_parse_u64(v, &runs) || runs < 1 || runs > 1000)
				return qw_cli_usage_error("bench pa", "bad --runs '%s'", v);
			i++;
		} else if (!strcmp(a, "--method") && v) {
			int mm = qw_toeplitz_method_parse(v);

			if (mm < 0)
				return qw_cli_usage_error("bench pa", "unknown --method '%s'", v);
			o.method = (enum qw_toeplitz_method)mm;
			i++;
		} else {
			return qw_cli_usage_error("bench pa", "unknown option '%s'", a);
		}
	}
	m = (size_t)((double)bits * ratio);
	if (m < 1)
		m = 1;
	key = qw_bitvec_new((size_t)bits);
	seed = qw_bitvec_new((size_t)bits + m - 1);
	out = qw_bitvec_new(0);
	t = calloc((size_t)runs, sizeof(*t));
	tc = calloc((size_t)runs, sizeof(*tc));
	if (!key || !seed || !out || !t || !tc) {
		qw_cli_fail("out of memory");
		goto out;
	}
	fill(key, &st);
	fill(seed, &st);
	for (uint64_t r = 0; r < runs; r++) {
		double t0 = qw_bench_now(), c0 = thread_cpu_now();
		int err = qw_toeplitz_hash_ex(key, seed, m, out, &o);

		tc[r] = thread_cpu_now() - c0;
		t[r] = qw_bench_now() - t0;
		if (err) {
			qw_cli_fail("toeplitz hash: %s", qw_strerror(err));
			goto out;
		}
		qw_cli_progress("bench pa: run %llu/%llu %.3f s (cpu %.3f s)",
				(unsigned long long)r + 1, (unsigned long long)runs, t[r], tc[r]);
	}
	qw_cli_progress_done();
	med = qw_bench_median(t, (int)runs);
	medc = qw_bench_median(tc, (int)runs);
	if (json) {
		qw_cli_print_json(json_pack("{s:s, s:I, s:I, s:f, s:s, s:s, s:I, s:f, s:f, s:f, s:f}",
					    "bench", "pa", "bits", (json_int_t)bits, "out_bits",
					    (json_int_t)m, "ratio", ratio, "method",
					    qw_toeplitz_method_name(o.method), "isa",
					    o.isa == QW_TOEPLITZ_ISA_PORTABLE ? "portable" :
					    o.isa == QW_TOEPLITZ_ISA_PCLMUL ? "pclmul" : "best",
					    "runs", (json_int_t)runs, "median_s", med,
					    "throughput_mbps", (double)bits / med / 1e6, "median_cpu_s",
					    medc, "cpu_throughput_mbps", (double)bits / medc / 1e6));
	} else {
		printf("toeplitz %s%s: %llu bits -> %zu bits, median %.6f s over %llu runs, "
		       "%.1f Mbit/s (input); thread CPU median %.6f s, %.1f Mbit/s\n",
		       qw_toeplitz_method_name(o.method),
		       o.isa == QW_TOEPLITZ_ISA_PORTABLE ? " (portable)" :
		       o.isa == QW_TOEPLITZ_ISA_PCLMUL ? " (pclmul only)" : "",
		       (unsigned long long)bits, m, med, (unsigned long long)runs,
		       (double)bits / med / 1e6, medc, (double)bits / medc / 1e6);
	}
	ret = QW_EXIT_OK;
out:
	free(t);
	free(tc);
	qw_bitvec_free(key);
	qw_bitvec_free(seed);
	qw_bitvec_free(out);
	return ret;
}
