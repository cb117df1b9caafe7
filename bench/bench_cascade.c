/* `qwave bench cascade`: Cascade reconciliation of R frames of N bits with
 * exactly round(Q N) errors each, both parties in one thread exchanging the
 * real serialised messages (qw_cascade_run_local).
 *
 *   efficiency       mean of leaked parities / (N h(Q)), Q = errors / N
 *   frame_error_rate fraction of frames whose keys still differ afterwards
 *                    (compared directly; hash verification is a later stage)
 *   throughput_mbps  N R / (CPU time of all runs), 10^6 bits/s on one core,
 *                    both parties' work and the message coding included;
 *                    the keys and error patterns are made outside the
 *                    clock. The clock is the thread's CPU time, so other
 *                    load on the machine does not count as ours.
 *   round_trips      mean query/answer exchanges per frame
 * Keys and error patterns come from the deterministic qw_rng_new_seeded. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/cmd/cli.h"
#include "bench.h"
#include "qwave/cascade.h"
#include "qwave/rng.h"

#define MAX_RUNS 1000000

static double cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: qwave bench cascade [--qber Q] [--bits N] [--runs R]\n"
		"                           [--variant original|yan|option8|optimized]\n"
		"                           [--policy least-leak|fewest-rounds]\n"
		"                           [--passes P] [--blocks K1,K2,...] [--streak S]\n"
		"                           [--seed X] [--json]\n\n"
		"Cascade reconciliation of R frames of N bits, each with exactly\n"
		"round(Q*N) errors, through the real message path. Reports efficiency\n"
		"(leaked parities / (N h(Q))), frame error rate (keys differ after\n"
		"Cascade), throughput (corrected Mbit/s on one core, both parties) and\n"
		"round trips per frame.\n\n"
		"  --qber Q       error rate of the frames (default 0.02)\n"
		"  --bits N       frame length in bits (default 100000)\n"
		"  --runs R       frames (default 100)\n"
		"  --variant V    block-size schedule (default optimized)\n"
		"  --policy P     round scheduling (default: fewest-rounds for optimized,\n"
		"                 least-leak for the published variants)\n"
		"  --passes P     override the number of passes\n"
		"  --blocks LIST  override block sizes of the first passes\n"
		"  --streak S     stop after S error-free BICONF passes (0 = run all;\n"
		"                 default 24 for optimized, 0 otherwise)\n"
		"  --seed X       seed of the keys and error patterns (default 1)\n"
		"  --json         print one JSON object\n");
}

static double h2(double q)
{
	if (q <= 0 || q >= 1)
		return 0;
	return -q * log2(q) - (1 - q) * log2(1 - q);
}

static int parse_blocks(const char *s, struct qw_cascade_params *p)
{
	unsigned i = 0;
	char *end;

	while (*s) {
		unsigned long v = strtoul(s, &end, 10);

		if (end == s || v == 0 || v > UINT32_MAX || i >= QW_CASCADE_MAX_PASSES)
			return -1;
		p->block_size[i++] = (uint32_t)v;
		s = end;
		if (*s == ',')
			s++;
		else if (*s)
			return -1;
	}
	return i ? 0 : -1;
}

int qw_bench_cascade(int argc, char **argv)
{
	struct qw_cascade_params p;
	enum qw_cascade_variant v = QW_CASCADE_OPTIMIZED;
	double q = 0.02, eff_sum = 0, rt_sum = 0, t_total = 0;
	uint64_t bits = 100000, runs = 100, seed = 1, u, leak_sum = 0, fails = 0;
	uint64_t to_alice = 0, to_bob = 0;
	const char *blocks = NULL;
	int json = 0, policy = -1, streak = -1, ret = QW_EXIT_FAIL, err;
	unsigned passes = 0;
	struct qw_bitvec *a = NULL, *b = NULL, *e = NULL;
	struct qw_rng *rng = NULL;
	size_t nerr;

	for (int i = 1; i < argc; i++) {
		const char *o = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
			usage(stdout);
			return QW_EXIT_OK;
		} else if (!strcmp(o, "--json")) {
			json = 1;
			continue;
		}
		if (strcmp(o, "--qber") && strcmp(o, "--bits") && strcmp(o, "--runs") &&
		    strcmp(o, "--variant") && strcmp(o, "--policy") && strcmp(o, "--passes") &&
		    strcmp(o, "--blocks") && strcmp(o, "--streak") && strcmp(o, "--seed"))
			return qw_cli_usage_error("bench cascade", "unknown option '%s'", o);
		if (!val)
			return qw_cli_usage_error("bench cascade", "option %s needs a value", o);
		i++;
		if (!strcmp(o, "--qber")) {
			if (qw_cli_parse_double(val, &q) || !(q >= 0 && q < 0.5))
				return qw_cli_usage_error("bench cascade", "bad --qber '%s'", val);
		} else if (!strcmp(o, "--bits")) {
			if (qw_cli_parse_u64(val, &bits) || bits < 2 || bits > QW_CASCADE_MAX_BITS)
				return qw_cli_usage_error("bench cascade", "bad --bits '%s'", val);
		} else if (!strcmp(o, "--runs")) {
			if (qw_cli_parse_u64(val, &runs) || runs == 0 || runs > MAX_RUNS)
				return qw_cli_usage_error("bench cascade", "bad --runs '%s'", val);
		} else if (!strcmp(o, "--variant")) {
			if (qw_cascade_variant_parse(val, &v))
				return qw_cli_usage_error("bench cascade", "unknown --variant '%s'", val);
		} else if (!strcmp(o, "--policy")) {
			if (!strcmp(val, "least-leak"))
				policy = QW_CASCADE_LEAST_LEAK;
			else if (!strcmp(val, "fewest-rounds"))
				policy = QW_CASCADE_FEWEST_ROUNDS;
			else
				return qw_cli_usage_error("bench cascade", "unknown --policy '%s'", val);
		} else if (!strcmp(o, "--passes")) {
			if (qw_cli_parse_u64(val, &u) || u == 0 || u > QW_CASCADE_MAX_PASSES)
				return qw_cli_usage_error("bench cascade", "bad --passes '%s'", val);
			passes = (unsigned)u;
		} else if (!strcmp(o, "--blocks")) {
			blocks = val;
		} else if (!strcmp(o, "--streak")) {
			if (qw_cli_parse_u64(val, &u) || u > QW_CASCADE_MAX_PASSES)
				return qw_cli_usage_error("bench cascade", "bad --streak '%s'", val);
			streak = (int)u;
		} else if (!strcmp(o, "--seed")) {
			if (qw_cli_parse_u64(val, &seed))
				return qw_cli_usage_error("bench cascade", "bad --seed '%s'", val);
		} else {
			return qw_cli_usage_error("bench cascade", "unknown option '%s'", o);
		}
	}
	qw_cascade_params_init(&p, v);
	/* Only what was asked overrides the variant's defaults. */
	if (policy >= 0)
		p.policy = (enum qw_cascade_policy)policy;
	if (streak >= 0)
		p.biconf_streak = (unsigned)streak;
	p.npasses = passes;
	if (blocks && parse_blocks(blocks, &p))
		return qw_cli_usage_error("bench cascade", "bad --blocks '%s'", blocks);

	nerr = (size_t)llround(q * (double)bits);
	a = qw_bitvec_new((size_t)bits);
	b = qw_bitvec_new((size_t)bits);
	e = qw_bitvec_new((size_t)bits);
	rng = qw_rng_new_seeded(seed);
	if (!a || !b || !e || !rng) {
		qw_cli_fail("out of memory");
		goto out;
	}
	for (uint64_t r = 0; r < runs; r++) {
		struct qw_cascade_stats st;
		double t0;

		if (qw_rng_bytes(rng, a->w, a->nwords * sizeof(uint64_t))) {
			qw_cli_fail("random generator failed");
			goto out;
		}
		if (bits & 63)
			a->w[a->nwords - 1] &= ((uint64_t)1 << (bits & 63)) - 1;
		memset(e->w, 0, e->nwords * sizeof(uint64_t));
		for (size_t k = 0; k < nerr;) {
			size_t pos = (size_t)qw_rng_below(rng, bits);

			if (!qw_bitvec_get(e, pos)) {
				qw_bitvec_set(e, pos, 1);
				k++;
			}
		}
		memcpy(b->w, a->w, a->nwords * sizeof(uint64_t));
		qw_bitvec_xor(b, e);
		/* The same public layout seed for every frame: the
		 * permutations are then built once and cached, as a link
		 * reusing its frame size would. */
		t0 = cpu_now();
		err = qw_cascade_run_local(&p, a, b, q, 0x5eed, &st);
		t_total += cpu_now() - t0;
		if (err) {
			qw_cli_fail("cascade: %s", qw_strerror(err));
			goto out;
		}
		if (!qw_bitvec_equal(a, b))
			fails++;
		leak_sum += st.leaked_bits;
		to_alice += st.bytes_to_alice;
		to_bob += st.bytes_to_bob;
		rt_sum += st.round_trips;
		if (nerr)
			eff_sum += (double)st.leaked_bits / ((double)bits * h2((double)nerr / (double)bits));
		if (!json && runs >= 20 && (r + 1) % (runs / 10) == 0)
			qw_cli_progress("cascade: %llu/%llu frames", (unsigned long long)(r + 1),
					(unsigned long long)runs);
	}
	qw_cli_progress_done();
	{
		double eff = nerr ? eff_sum / (double)runs : 0;
		double fer = (double)fails / (double)runs;
		double mbps = t_total > 0 ? (double)bits * (double)runs / t_total / 1e6 : 0;
		double rts = rt_sum / (double)runs;

		if (json) {
			json_t *o = json_object();

			json_object_set_new(o, "variant", json_string(qw_cascade_variant_name(v)));
			json_object_set_new(o, "qber", json_real(q));
			json_object_set_new(o, "bits", json_integer((json_int_t)bits));
			json_object_set_new(o, "runs", json_integer((json_int_t)runs));
			json_object_set_new(o, "efficiency", json_real(eff));
			json_object_set_new(o, "frame_error_rate", json_real(fer));
			json_object_set_new(o, "throughput_mbps", json_real(mbps));
			json_object_set_new(o, "round_trips", json_real(rts));
			qw_cli_print_json(o);
		} else {
			printf("Cascade %s, %s policy: %llu frames of %llu bits, %zu errors each (QBER %.4g)\n",
			       qw_cascade_variant_name(v),
			       p.policy == QW_CASCADE_LEAST_LEAK ? "least-leak" : "fewest-rounds",
			       (unsigned long long)runs, (unsigned long long)bits, nerr, q);
			printf("  efficiency        %.4f (leaked %.1f bits per frame, N h(Q) = %.1f bits)\n",
			       eff, (double)leak_sum / (double)runs,
			       (double)bits * h2((double)nerr / (double)bits));
			printf("  frame error rate  %.3g (%llu of %llu frames differ)\n", fer,
			       (unsigned long long)fails, (unsigned long long)runs);
			printf("  throughput        %.1f Mbit/s (per CPU-second of one core, both parties)\n",
			       mbps);
			printf("  round trips       %.1f per frame\n", rts);
			printf("  messages          %.0f bytes to Alice, %.0f bytes to Bob per frame\n",
			       (double)to_alice / (double)runs, (double)to_bob / (double)runs);
		}
	}
	ret = QW_EXIT_OK;
out:
	qw_bitvec_free(a);
	qw_bitvec_free(b);
	qw_bitvec_free(e);
	qw_rng_free(rng);
	return ret;
}
