/* `qwave bench store`: transaction rate of the key store, each operation
 * one durable transaction as the daemon runs them:
 *   cut+deliver  cut one reserved key from the pool, then deliver it
 *                (two transactions per key: the ETSI 014 enc_keys path)
 *   pool take    take bits from a pool (relay OTP/MAC path)
 * with synchronous=FULL (fsync per commit, the default) and NORMAL (WAL,
 * no fsync per commit). Figures depend on the disk's fsync latency far
 * more than on the CPU: record the filesystem with them.
 * Keys are random test material in a scratch directory, deleted after. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/cmd/cli.h"
#include "bench.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"
#include "qwave/store.h"

#define DEFAULT_KEYS 200
#define DEFAULT_RUNS 3
#define DEFAULT_BITS 256

int qw_bench_store(int argc, char **argv);

struct result {
	double keys_per_s, takes_per_s;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: qwave bench store [--keys N] [--bits B] [--runs R] [--dir D] [--json]\n\n"
		"Key store transactions per second (median over R runs), with SQLite\n"
		"synchronous=FULL (fsync at every commit, the default) and NORMAL:\n"
		"  keys/s   N keys of B bits cut from a pool and delivered (2 commits each)\n"
		"  takes/s  N pool takes of B bits (1 commit each)\n\n"
		"  --keys N   operations per run (default %d, at most 100000)\n"
		"  --bits B   key/take size in bits, multiple of 8 (default %d)\n"
		"  --runs R   runs (default %d, at most 100)\n"
		"  --dir D    scratch directory for the database (default /tmp)\n"
		"  --json     print one JSON object\n",
		DEFAULT_KEYS, DEFAULT_BITS, DEFAULT_RUNS);
}

static void remove_db(const char *db)
{
	char p[600];

	unlink(db);
	snprintf(p, sizeof(p), "%s-wal", db);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", db);
	unlink(p);
}

static int run_once(const char *dir, enum qw_store_sync sync, uint64_t n, uint32_t bits,
		    struct result *res)
{
	static const char *const slaves[] = { "sae-B" };
	struct qw_store_opts o = { .sync = sync };
	struct qw_store_key_req req = {
		.peer = "peer", .size_bits = bits, .master_sae = "sae-A",
		.slave_saes = slaves, .n_slaves = 1,
	};
	uint8_t mk[QW_STORE_MASTER_KEY_BYTES], *buf = NULL;
	char db[512];
	struct qw_store *s = NULL;
	uint64_t need = 2 * n * bits, id = 1;
	double t0;
	int ret;

	snprintf(db, sizeof(db), "%s/qwave-bench-store-%ld.db", dir, (long)getpid());
	remove_db(db);
	if ((ret = qw_random_bytes(mk, sizeof(mk))))
		return ret;
	s = qw_store_open(db, mk, &o, &ret);
	qw_wipe(mk, sizeof(mk));
	if (!s)
		goto out;
	ret = QW_ENOMEM;
	buf = malloc(1u << 16);
	if (!buf)
		goto out;
	/* the pool, in 512 kbit blocks (not timed) */
	for (uint64_t have = 0; have < need; have += 8u << 16) {
		if ((ret = qw_random_bytes(buf, 1u << 16)))
			goto out;
		if ((ret = qw_store_pool_append(s, "peer", id++, buf, 8u << 16)))
			goto out;
	}
	t0 = qw_bench_now();
	for (uint64_t i = 0; i < n; i++) {
		struct qw_uuid kid;

		if ((ret = qw_store_key_create(s, &req, 1, &kid, NULL)))
			goto out;
		if ((ret = qw_store_key_deliver(s, &kid, "sae-A", buf, 1u << 16, NULL)))
			goto out;
	}
	res->keys_per_s = (double)n / (qw_bench_now() - t0);
	t0 = qw_bench_now();
	for (uint64_t i = 0; i < n; i++)
		if ((ret = qw_store_pool_take(s, "peer", bits, NULL, buf, 1u << 16, NULL)))
			goto out;
	res->takes_per_s = (double)n / (qw_bench_now() - t0);
	ret = 0;
out:
	qw_store_close(s);
	if (buf)
		qw_free_secret(buf, 1u << 16);
	remove_db(db);
	return ret;
}

int qw_bench_store(int argc, char **argv)
{
	const char *dir = "/tmp";
	uint64_t n = DEFAULT_KEYS, runs = DEFAULT_RUNS, bits = DEFAULT_BITS;
	double v[4][100];
	int json = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return QW_EXIT_OK;
		} else if (!strcmp(a, "--json")) {
			json = 1;
		} else if (!strcmp(a, "--keys") && val) {
			if (qw_cli_parse_u64(val, &n) || n < 1 || n > 100000)
				return qw_cli_usage_error("bench store", "bad --keys '%s'", val);
			i++;
		} else if (!strcmp(a, "--bits") && val) {
			if (qw_cli_parse_u64(val, &bits) || bits < 8 || bits % 8 ||
			    bits > (1u << 16))
				return qw_cli_usage_error("bench store", "bad --bits '%s'", val);
			i++;
		} else if (!strcmp(a, "--runs") && val) {
			if (qw_cli_parse_u64(val, &runs) || runs < 1 || runs > 100)
				return qw_cli_usage_error("bench store", "bad --runs '%s'", val);
			i++;
		} else if (!strcmp(a, "--dir") && val) {
			if (strlen(val) > 400)
				return qw_cli_usage_error("bench store", "--dir too long");
			dir = val;
			i++;
		} else {
			return qw_cli_usage_error("bench store", "unknown option '%s'", a);
		}
	}
	for (uint64_t r = 0; r < runs; r++) {
		for (int m = 0; m < 2; m++) {
			struct result res = { 0, 0 };
			int err;

			qw_cli_progress("bench store: run %llu/%llu, synchronous=%s",
					(unsigned long long)r + 1, (unsigned long long)runs,
					m ? "NORMAL" : "FULL");
			err = run_once(dir, m ? QW_STORE_SYNC_NORMAL : QW_STORE_SYNC_FULL, n,
				       (uint32_t)bits, &res);
			if (err) {
				qw_cli_progress_done();
				return qw_cli_fail("key store in %s: %s", dir, qw_strerror(err));
			}
			v[2 * m][r] = res.keys_per_s;
			v[2 * m + 1][r] = res.takes_per_s;
		}
	}
	qw_cli_progress_done();
	double full_keys = qw_bench_median(v[0], (int)runs), full_takes = qw_bench_median(v[1], (int)runs);
	double norm_keys = qw_bench_median(v[2], (int)runs), norm_takes = qw_bench_median(v[3], (int)runs);

	if (json) {
		qw_cli_print_json(json_pack("{s:s, s:I, s:I, s:I, s:s, s:f, s:f, s:f, s:f}", "bench",
					    "store", "ops", (json_int_t)n, "bits", (json_int_t)bits,
					    "runs", (json_int_t)runs, "dir", dir,
					    "full_keys_per_s", full_keys, "full_takes_per_s", full_takes,
					    "normal_keys_per_s", norm_keys, "normal_takes_per_s",
					    norm_takes));
		return QW_EXIT_OK;
	}
	printf("key store, %llu ops of %llu bits per run, median of %llu runs, db in %s\n",
	       (unsigned long long)n, (unsigned long long)bits, (unsigned long long)runs, dir);
	printf("  %-22s %14s %14s\n", "", "sync=FULL", "sync=NORMAL");
	printf("  %-22s %12.0f/s %12.0f/s\n", "keys cut+delivered", full_keys, norm_keys);
	printf("  %-22s %12.0f/s %12.0f/s\n", "pool takes", full_takes, norm_takes);
	return QW_EXIT_OK;
}
