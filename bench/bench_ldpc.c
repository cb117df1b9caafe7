/* `qwave bench ldpc`: LDPC reconciliation of R keys of N bits with exactly
 * round(Q N) errors each, both parties in one thread exchanging the real
 * serialised messages (qw_ldpc_run_local).
 *
 *   efficiency       mean of leaked bits / (N h(Q)), Q = errors / N; the
 *                    leak is sum over frames of m - p + revealed values,
 *                    failed frames included
 *   frame_error_rate frames Bob could not decode / frames
 *   throughput_mbps  decoder throughput: key bits / Bob's decoding CPU time
 *                    (thread CPU clock, one core, 10^6 bit/s)
 *   end_to_end_mbps  N R / CPU time of whole runs (Alice's syndromes, Bob's
 *                    decoding, message coding; one thread); wall_mbps the
 *                    same over wall-clock time (lower on a shared machine)
 *   iterations       decoder iterations per frame (all attempts)
 * Keys and error patterns come from the deterministic qw_rng_new_seeded and
 * are made outside the clocks. Codes are built (and cached) before timing. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/cmd/cli.h"
#include "bench.h"
#include "qwave/ldpc.h"
#include "qwave/rng.h"

#define MAX_RUNS 100000

static void usage(FILE *f)
{
	fprintf(f,
		"usage: qwave bench ldpc [--qber Q] [--bits N] [--runs R] [--lift Z]\n"
		"                        [--efficiency F] [--estimate E] [--max-iter I]\n"
		"                        [--blind ROUNDS] [--step S] [--max-puncture]\n"
		"                        [--rate I] [--seed X]\n"
		"                        [--json]\n\n"
		"Rate-adaptive LDPC reconciliation of R keys of N bits, each with exactly\n"
		"round(Q*N) errors, through the real message path. Reports efficiency\n"
		"(leaked bits / (N h(Q))), frame error rate (frames Bob failed to decode),\n"
		"decoder throughput (Mbit/s of key per core, CPU time), end-to-end\n"
		"throughput (Mbit/s, one thread, CPU and wall clock), iterations per\n"
		"frame and round trips.\n\n"
		"  --qber Q        error rate of the keys (default 0.03)\n"
		"  --bits N        key length in bits (default 1000000)\n"
		"  --runs R        keys (default 10)\n"
		"  --lift Z        circulant size 64, 128 or 256: n = 256 Z (default 128)\n"
		"  --efficiency F  target efficiency of the rate choice (default: automatic,\n"
		"                  calibrated for frame error rates of ~3 %% or less)\n"
		"  --estimate E    QBER estimate given to the protocol (default Q)\n"
		"  --max-iter I    decoder iterations per attempt (default 60)\n"
		"  --blind ROUNDS  rounds revealing punctured bits of failed frames\n"
		"                  (default 4; 0 = strictly one-way)\n"
		"  --step S        punctured values revealed per round (default n/200)\n"
		"  --max-puncture  blind: start from maximal puncturing (else the rounds\n"
		"                  only rescue frames of the one-way plan)\n"
		"  --rate I        force mother code I (0..8: rate 0.50 + 0.05 I)\n"
		"  --seed X        seed of the keys and error patterns (default 1)\n"
		"  --json          print one JSON object\n");
}

/* CPU time of this thread: the machine may be shared, and the figures are
 * per core. */
static double cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double h2(double q)
{
	if (q <= 0 || q >= 1)
		return 0;
	return -q * log2(q) - (1 - q) * log2(1 - q);
}

int qw_bench_ldpc(int argc, char **argv)
{
	struct qw_ldpc_params p;
	double q = 0.03, est = -1, eff_sum = 0, t_total = 0, dec_total = 0, f = 0, cpu_total = 0;
	uint64_t bits = 1000000, runs = 10, seed = 1, u, leak_sum = 0, frames = 0, ferr = 0;
	uint64_t iters = 0, rts = 0, lift = 128, maxit = 60, blind = 4, step = 0;
	int json = 0, ret = QW_EXIT_FAIL, err, rate = -1, maxp = 0;
	struct qw_bitvec *a = NULL, *b = NULL, *e = NULL;
	struct qw_rng *rng = NULL;
	struct qw_ldpc_stats st0;
	size_t nerr;

	memset(&st0, 0, sizeof(st0));
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
			usage(stdout);
			return QW_EXIT_OK;
		} else if (!strcmp(o, "--json")) {
			json = 1;
			continue;
		} else if (!strcmp(o, "--max-puncture")) {
			maxp = 1;
			continue;
		}
		if (!val)
			return qw_cli_usage_error("bench ldpc", "option %s needs a value", o);
		i++;
		if (!strcmp(o, "--qber")) {
			if (qw_cli_parse_double(val, &q) || !(q >= 0 && q < 0.5))
				return qw_cli_usage_error("bench ldpc", "bad --qber '%s'", val);
		} else if (!strcmp(o, "--estimate")) {
			if (qw_cli_parse_double(val, &est) || !(est > 0 && est < 0.5))
				return qw_cli_usage_error("bench ldpc", "bad --estimate '%s'", val);
		} else if (!strcmp(o, "--bits")) {
			if (qw_cli_parse_u64(val, &bits) || bits < 1 || bits > QW_LDPC_MAX_BITS)
				return qw_cli_usage_error("bench ldpc", "bad --bits '%s'", val);
		} else if (!strcmp(o, "--runs")) {
			if (qw_cli_parse_u64(val, &runs) || runs == 0 || runs > MAX_RUNS)
				return qw_cli_usage_error("bench ldpc", "bad --runs '%s'", val);
		} else if (!strcmp(o, "--lift")) {
			if (qw_cli_parse_u64(val, &lift) || (lift != 64 && lift != 128 && lift != 256))
				return qw_cli_usage_error("bench ldpc", "bad --lift '%s' (64, 128, 256)", val);
		} else if (!strcmp(o, "--efficiency")) {
			if (qw_cli_parse_double(val, &f) || !(f == 0 || (f >= 0.5 && f <= 10)))
				return qw_cli_usage_error("bench ldpc", "bad --efficiency '%s'", val);
		} else if (!strcmp(o, "--max-iter")) {
			if (qw_cli_parse_u64(val, &maxit) || maxit == 0 || maxit > 10000)
				return qw_cli_usage_error("bench ldpc", "bad --max-iter '%s'", val);
		} else if (!strcmp(o, "--blind")) {
			if (qw_cli_parse_u64(val, &blind) || blind > 255)
				return qw_cli_usage_error("bench ldpc", "bad --blind '%s'", val);
		} else if (!strcmp(o, "--step")) {
			if (qw_cli_parse_u64(val, &step) || step == 0 || step > 65536)
				return qw_cli_usage_error("bench ldpc", "bad --step '%s'", val);
		} else if (!strcmp(o, "--rate")) {
			if (qw_cli_parse_u64(val, &u) || u >= QW_LDPC_NRATES)
				return qw_cli_usage_error("bench ldpc", "bad --rate '%s'", val);
			rate = (int)u;
		} else if (!strcmp(o, "--seed")) {
			if (qw_cli_parse_u64(val, &seed))
				return qw_cli_usage_error("bench ldpc", "bad --seed '%s'", val);
		} else {
			return qw_cli_usage_error("bench ldpc", "unknown option '%s'", o);
		}
	}
	qw_ldpc_params_init(&p);
	p.lift = (unsigned)lift;
	p.efficiency = f;
	p.max_iter = (unsigned)maxit;
	p.blind_rounds = (unsigned)blind;
	p.blind_step = (unsigned)step;
	p.blind_max_puncture = maxp;
	p.rate_index = rate;
	if (est < 0)
		est = q > 0 ? q : 1e-4;

	nerr = (size_t)llround(q * (double)bits);
	a = qw_bitvec_new((size_t)bits);
	b = qw_bitvec_new((size_t)bits);
	e = qw_bitvec_new((size_t)bits);
	rng = qw_rng_new_seeded(seed);
	if (!a || !b || !e || !rng) {
		qw_cli_fail("out of memory");
		goto out;
	}
	{
		/* build the code outside the clock */
		unsigned ri;
		size_t pp;
		uint32_t fr;

		if ((err = qw_ldpc_choose(&p, est, (size_t)bits, &ri, &pp, &fr)) != 0) {
			qw_cli_fail("ldpc: %s", qw_strerror(err));
			goto out;
		}
	}
	for (uint64_t r = 0; r < runs; r++) {
		struct qw_ldpc_stats st;
		double t0, c0;

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
		t0 = qw_bench_now();
		c0 = cpu_now();
		err = qw_ldpc_run_local(&p, a, b, est, seed * 1000003u + r, &st);
		cpu_total += cpu_now() - c0;
		t_total += qw_bench_now() - t0;
		if (err) {
			qw_cli_fail("ldpc: %s", qw_strerror(err));
			goto out;
		}
		if (r == 0)
			st0 = st;
		leak_sum += st.leaked_bits;
		frames += st.frames;
		ferr += st.frame_errors;
		iters += st.iterations;
		rts += st.round_trips;
		dec_total += st.decode_seconds;
		if (nerr)
			eff_sum += (double)st.leaked_bits / ((double)bits * h2((double)nerr / (double)bits));
		if (!json && runs >= 20 && (r + 1) % (runs / 10) == 0)
			qw_cli_progress("ldpc: %llu/%llu keys", (unsigned long long)(r + 1),
					(unsigned long long)runs);
	}
	qw_cli_progress_done();
	{
		double eff = nerr ? eff_sum / (double)runs : 0;
		double fer = (double)ferr / (double)frames;
		double mbps = dec_total > 0 ? (double)bits * (double)runs / dec_total / 1e6 : 0;
		double e2e = cpu_total > 0 ? (double)bits * (double)runs / cpu_total / 1e6 : 0;
		double wall = t_total > 0 ? (double)bits * (double)runs / t_total / 1e6 : 0;
		double ft = f > 0 ? f : qw_ldpc_auto_efficiency(est);
		double itf = (double)iters / (double)frames;
		double rt = (double)rts / (double)runs;
		size_t n = (size_t)QW_LDPC_BASE_COLS * p.lift;

		if (json) {
			json_t *o = json_object();

			json_object_set_new(o, "qber", json_real(q));
			json_object_set_new(o, "qber_estimate", json_real(est));
			json_object_set_new(o, "bits", json_integer((json_int_t)bits));
			json_object_set_new(o, "runs", json_integer((json_int_t)runs));
			json_object_set_new(o, "code_length", json_integer((json_int_t)n));
			json_object_set_new(o, "mother_rate", json_real(qw_ldpc_mother_rate(st0.rate_index)));
			json_object_set_new(o, "punctured", json_integer(st0.punctured));
			json_object_set_new(o, "shortened", json_integer(st0.shortened));
			json_object_set_new(o, "frames_per_key", json_integer(st0.frames));
			json_object_set_new(o, "target_efficiency", json_real(ft));
			json_object_set_new(o, "efficiency", json_real(eff));
			json_object_set_new(o, "frame_error_rate", json_real(fer));
			json_object_set_new(o, "throughput_mbps", json_real(mbps));
			json_object_set_new(o, "end_to_end_mbps", json_real(e2e));
			json_object_set_new(o, "wall_mbps", json_real(wall));
			json_object_set_new(o, "iterations", json_real(itf));
			json_object_set_new(o, "round_trips", json_real(rt));
			qw_cli_print_json(o);
		} else {
			printf("LDPC n = %zu bits (Z = %u), mother rate %.2f, p = %u punctured, "
			       "s = %u shortened, %u frames per key\n",
			       n, p.lift, qw_ldpc_mother_rate(st0.rate_index), st0.punctured,
			       st0.shortened, st0.frames);
			printf("%llu keys of %llu bits, %zu errors each (QBER %.4g, estimate %.4g), "
			       "target f %.3f\n",
			       (unsigned long long)runs, (unsigned long long)bits, nerr, q, est, ft);
			printf("  efficiency        %.4f (leaked %.1f bits per key, N h(Q) = %.1f bits)\n",
			       eff, (double)leak_sum / (double)runs,
			       (double)bits * h2((double)nerr / (double)bits));
			printf("  frame error rate  %.3g (%llu of %llu frames)\n", fer,
			       (unsigned long long)ferr, (unsigned long long)frames);
			printf("  decoder           %.1f Mbit/s (CPU time, one core)\n", mbps);
			printf("  end to end        %.1f Mbit/s (CPU time, one thread, both parties; "
			       "%.1f Mbit/s wall clock)\n",
			       e2e, wall);
			printf("  iterations        %.1f per frame\n", itf);
			printf("  round trips       %.2f per key\n", rt);
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
