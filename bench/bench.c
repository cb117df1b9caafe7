#include <stdlib.h>
#include <time.h>

#include "../src/cmd/cli.h"
#include "../src/cmd/commands.h"
#include "bench.h"

int qw_bench_store(int argc, char **argv);
int qw_bench_ldpc(int argc, char **argv);
int qw_bench_etsi014(int argc, char **argv);
int qw_bench_ksc(int argc, char **argv);
int qw_bench_relay(int argc, char **argv);

static const struct qw_cli_cmd benches[] = {
	{ "crypto", qw_bench_crypto, "ZUC-128, 128-EEA3, SM4 AEAD, AES-256-GCM vs AES-128-CTR throughput" },
	{ "pa", qw_bench_pa, "Toeplitz privacy amplification throughput (input Mbit/s)" },
	{ "pipeline", qw_bench_pipeline, "whole post-processing chain, both ends over loopback TCP: secret Mbit/s" },
	{ "store", qw_bench_store, "key store transactions/s (cut+deliver keys, pool takes), synchronous FULL vs NORMAL" },
	{ "cascade", qw_bench_cascade, "Cascade reconciliation: efficiency, frame error rate, Mbit/s, round trips" },
	{ "ldpc", qw_bench_ldpc, "rate-adaptive LDPC reconciliation: efficiency, frame error rate, decoder Mbit/s" },
	{ "qkdsim", qw_bench_qkdsim, "optics simulator: pulses simulated per second, ratio to real time" },
	{ "etsi014", qw_bench_etsi014, "ETSI 014 Get key requests/s and latency over mutual TLS, vs nginx" },
	{ "ksc", qw_bench_ksc, "Key Service Center: session keys/s and crypto requests/s over mutual TLS" },
	{ "relay", qw_bench_relay, "key relay over a 6-node chain: Get key latency, keys/s, link-key efficiency at 1, 3, 5 hops" },
	{ NULL, NULL, NULL },
};

double qw_bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double qw_bench_median(double *v, int n)
{
	if (n <= 0)
		return 0.0;
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int qw_cmd_bench(int argc, char **argv)
{
	return qw_cli_dispatch("bench",
			       "Benchmarks. Figures are medians over --runs; see docs/PERFORMANCE.md.",
			       benches, argc, argv);
}
