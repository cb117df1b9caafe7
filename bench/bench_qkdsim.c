/* qwave bench qkdsim: speed of the optics simulator (src/qkd/optics.c) as a
 * link runs it: decoy-state BB84 on the GYS link (qw_optics_config_default),
 * both detection records produced, records emptied between chunks. The
 * simulator samples per detection (a geometric gap to the next click), so
 * its cost follows the detections, not the pulses: the figure that matters
 * is how much faster than real time it runs for a given source rate
 * (docs/qkd-sim.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/cmd/cli.h"
#include "bench.h"
#include "qwave/optics.h"
#include "qwave/rng.h"

/* CPU seconds of this thread (the simulator is single-threaded): the
 * per-core cost, which wall time overstates when other jobs share the core. */
static double thread_cpu_now(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts))
		return 0;
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(void)
{
	printf("usage: qwave bench qkdsim [--distance KM] [--pulses N] [--runs R]\n"
	       "                          [--rate HZ] [--chunk N] [--json]\n\n"
	       "Simulates N pulses (default 1e9) of decoy-state BB84 over KM km of fiber\n"
	       "(default 50; GYS link, mu 0.5/0.1/0) with both detection records, as a link\n"
	       "does, in chunks of --chunk pulses (default 1e8). Reports the median over R\n"
	       "runs (default 3) of this thread's CPU time and of the wall-clock time, the\n"
	       "pulses simulated per second, the detections per second, and the ratio to\n"
	       "real time for a source of --rate pulses/s (default 1e9): above 1 the\n"
	       "simulation outruns the source.\n");
}

/* One run: a fresh simulator over `pulses`, the same seed every run so each
 * run does the same work; 0 or QW_E*. */
static int one_run(const struct qw_optics_config *c, uint64_t pulses, uint64_t chunk,
		   uint64_t seed, double *cpu, double *wall, uint64_t *det, double *gain)
{
	struct qw_detections *a = qw_detections_new(QW_ROLE_ALICE);
	struct qw_detections *b = qw_detections_new(QW_ROLE_BOB);
	struct qw_rng *r = qw_rng_new_seeded(seed);
	struct qw_optics *o = NULL;
	struct qw_optics_stats st;
	uint64_t left = pulses;
	double t0, c0;
	int ret = QW_ENOMEM;

	*det = 0;
	if (!a || !b || !r)
		goto out;
	o = qw_optics_new(c, r, &ret);
	if (!o)
		goto out;
	t0 = qw_bench_now();
	c0 = thread_cpu_now();
	while (left) {
		uint64_t n = left < chunk ? left : chunk;

		ret = qw_optics_run(o, n, a, b);
		if (ret)
			goto out;
		*det += a->n;
		qw_detections_reset(a);
		qw_detections_reset(b);
		left -= n;
	}
	*cpu = thread_cpu_now() - c0;
	*wall = qw_bench_now() - t0;
	qw_optics_get_stats(o, &st);
	*gain = st.sent[0] ? (double)st.detections[0] / (double)st.sent[0] : 0.0;
	ret = 0;
out:
	qw_optics_free(o);
	qw_detections_free(a);
	qw_detections_free(b);
	qw_rng_free(r);
	return ret;
}

int qw_bench_qkdsim(int argc, char **argv)
{
	static const char *cmd = "bench qkdsim";
	uint64_t pulses = 1000000000ull, chunk = 100000000ull, runs = 3, det = 0;
	double km = 50.0, rate = 1e9, *cpu = NULL, *wall = NULL, gain = 0.0;
	double med_cpu, med_wall, sim_s;
	struct qw_optics_config c;
	int json = 0, ret = QW_EXIT_FAIL;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage();
			return QW_EXIT_OK;
		} else if (!strcmp(a, "--json")) {
			json = 1;
		} else if (!strcmp(a, "--distance") && v) {
			if (qw_cli_parse_double(v, &km) || !(km >= 0.0 && km <= 1000.0))
				return qw_cli_usage_error(cmd, "bad --distance '%s' (0..1000 km)", v);
			i++;
		} else if (!strcmp(a, "--pulses") && v) {
			if (qw_cli_parse_u64(v, &pulses) || pulses < 1 ||
			    pulses > 1000000000000000ull)
				return qw_cli_usage_error(cmd, "bad --pulses '%s' (1..1e15)", v);
			i++;
		} else if (!strcmp(a, "--chunk") && v) {
			if (qw_cli_parse_u64(v, &chunk) || chunk < 1 || chunk > 10000000000ull)
				return qw_cli_usage_error(cmd, "bad --chunk '%s' (1..1e10)", v);
			i++;
		} else if (!strcmp(a, "--runs") && v) {
			if (qw_cli_parse_u64(v, &runs) || runs < 1 || runs > 1000)
				return qw_cli_usage_error(cmd, "bad --runs '%s' (1..1000)", v);
			i++;
		} else if (!strcmp(a, "--rate") && v) {
			if (qw_cli_parse_double(v, &rate) || !(rate > 0.0 && isfinite(rate)))
				return qw_cli_usage_error(cmd, "bad --rate '%s' (pulses/s > 0)", v);
			i++;
		} else {
			return qw_cli_usage_error(cmd, "unknown option or missing value '%s'", a);
		}
	}
	qw_optics_config_default(&c);
	c.distance_km = km;
	c.pulse_rate_hz = rate;
	if (qw_optics_config_check(&c))
		return qw_cli_usage_error(cmd, "the optics model refuses these parameters");
	cpu = calloc((size_t)runs, sizeof(*cpu));
	wall = calloc((size_t)runs, sizeof(*wall));
	if (!cpu || !wall) {
		qw_cli_fail("out of memory");
		goto out;
	}
	for (uint64_t r = 0; r < runs; r++) {
		int err = one_run(&c, pulses, chunk, 0x71d5, &cpu[r], &wall[r], &det, &gain);

		if (err) {
			qw_cli_progress_done();
			qw_cli_fail("simulation: %s", qw_strerror(err));
			goto out;
		}
		qw_cli_progress("bench qkdsim: run %llu/%llu %.3f s (cpu %.3f s)",
				(unsigned long long)r + 1, (unsigned long long)runs, wall[r], cpu[r]);
	}
	qw_cli_progress_done();
	med_cpu = qw_bench_median(cpu, (int)runs);
	med_wall = qw_bench_median(wall, (int)runs);
	/* A clock tick floor keeps the rates finite (JSON has no infinity). */
	if (med_cpu < 1e-9)
		med_cpu = 1e-9;
	if (med_wall < 1e-9)
		med_wall = 1e-9;
	sim_s = (double)pulses / rate;
	if (json) {
		qw_cli_print_json(json_pack(
			"{s:s, s:f, s:I, s:I, s:I, s:f, s:f, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}",
			"bench", "qkdsim", "distance_km", km, "pulses", (json_int_t)pulses, "chunk",
			(json_int_t)chunk, "runs", (json_int_t)runs, "rate_hz", rate,
			"simulated_s", sim_s, "detections", (json_int_t)det, "signal_gain", gain,
			"median_cpu_s", med_cpu, "median_wall_s", med_wall, "pulses_per_cpu_s",
			(double)pulses / med_cpu, "pulses_per_wall_s", (double)pulses / med_wall,
			"detections_per_cpu_s", (double)det / med_cpu, "realtime_ratio_cpu",
			sim_s / med_cpu, "realtime_ratio_wall", sim_s / med_wall));
	} else {
		printf("qkdsim %.1f km: %.3g pulses (%.3g s of a %.3g Hz source), %llu detections "
		       "(signal gain %.4e)\n",
		       km, (double)pulses, sim_s, rate, (unsigned long long)det, gain);
		printf("  median over %llu runs: thread CPU %.3f s, wall %.3f s\n",
		       (unsigned long long)runs, med_cpu, med_wall);
		printf("  %.3g pulses/s CPU (%.3g pulses/s wall), %.3g detections/s CPU, "
		       "%.2fx real time (CPU; %.2fx wall)\n",
		       (double)pulses / med_cpu, (double)pulses / med_wall, (double)det / med_cpu,
		       sim_s / med_cpu, sim_s / med_wall);
	}
	ret = QW_EXIT_OK;
out:
	free(cpu);
	free(wall);
	return ret;
}
