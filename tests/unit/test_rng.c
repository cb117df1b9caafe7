/* Random number generators: determinism of the seeded generator, that a
 * source-backed DRBG is seeded from the source alone (identical source
 * bytes give identical output) and stops on a failed source, and the
 * distributions: qw_rng_below uniform (chi-square, and no modulo bias
 * where plain modulo would be grossly biased), uniform/gaussian/
 * exponential moments within 6 standard errors. Thresholds are set at
 * p ~ 1e-6 or 6 sigma so the tests cannot flake in practice; the seeded
 * generator keeps the statistical tests reproducible anyway. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <cmocka.h>

#include "qwave/entropy.h"
#include "qwave/rng.h"

static void test_seeded_determinism(void **state)
{
	(void)state;
	struct qw_rng *a = qw_rng_new_seeded(42), *b = qw_rng_new_seeded(42);
	struct qw_rng *c = qw_rng_new_seeded(43);
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	int same_c = 0;
	for (int i = 0; i < 2000; i++) {
		uint64_t x = qw_rng_u64(a);
		assert_int_equal(x, qw_rng_u64(b));
		same_c += x == qw_rng_u64(c);
	}
	assert_true(same_c < 2);
	/* Bytes and words come from one stream: interleaving them the same
	 * way reproduces the same values, and a byte read continues the
	 * stream where u64 left off. */
	uint8_t ba[5000], bb[5000];
	assert_int_equal(qw_rng_bytes(a, ba, 3), 0);
	assert_int_equal(qw_rng_bytes(b, bb, 3), 0);
	assert_memory_equal(ba, bb, 3);
	assert_int_equal(qw_rng_u64(a), qw_rng_u64(b));
	assert_int_equal(qw_rng_bytes(a, ba, sizeof(ba)), 0);
	assert_int_equal(qw_rng_bytes(b, bb, sizeof(bb)), 0);
	assert_memory_equal(ba, bb, sizeof(ba));
	assert_int_equal(qw_rng_gaussian(a), qw_rng_gaussian(b));
	qw_rng_free(a);
	qw_rng_free(b);
	qw_rng_free(c);

	/* Stream continuity: 16 bytes then 16 bytes == 32 bytes at once. */
	a = qw_rng_new_seeded(7);
	b = qw_rng_new_seeded(7);
	assert_int_equal(qw_rng_bytes(a, ba, 16), 0);
	assert_int_equal(qw_rng_bytes(a, ba + 16, 4096), 0);
	assert_int_equal(qw_rng_bytes(b, bb, 4112), 0);
	assert_memory_equal(ba, bb, 4112);
	qw_rng_free(a);
	qw_rng_free(b);
	qw_rng_free(NULL);
}

static void test_system(void **state)
{
	(void)state;
	struct qw_rng *r = qw_rng_new_system();
	assert_non_null(r);
	uint8_t x[32], y[32];
	assert_int_equal(qw_rng_bytes(r, x, 32), 0);
	assert_int_equal(qw_rng_bytes(r, y, 32), 0);
	assert_memory_not_equal(x, y, 32);
	static uint8_t big[200000]; /* more than one DRBG request */
	assert_int_equal(qw_rng_bytes(r, big, sizeof(big)), 0);
	assert_int_not_equal(qw_rng_u64(r), qw_rng_u64(r));
	qw_rng_free(r);
	assert_int_equal(qw_random_bytes(x, 32), 0);
	assert_int_equal(qw_random_bytes(y, 32), 0);
	assert_memory_not_equal(x, y, 32);
}

static const char *temp_file(const uint8_t *data, size_t n, char path[64])
{
	snprintf(path, 64, "/tmp/qw_test_rng_XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	close(fd);
	return path;
}

/* Two DRBGs fed from two sources reading the same raw samples produce the
 * same output, across a reseed (more than 1 MiB): nothing but our source
 * (no OS entropy, no time) went into their seeds. A different file gives a
 * different stream. */
static void test_from_source(void **state)
{
	(void)state;
	static uint8_t raw[1 << 15], raw2[1 << 15];
	assert_int_equal(getrandom(raw, sizeof(raw), 0), (ssize_t)sizeof(raw));
	assert_int_equal(getrandom(raw2, sizeof(raw2), 0), (ssize_t)sizeof(raw2));
	char p1[64], p2[64];
	temp_file(raw, sizeof(raw), p1);
	temp_file(raw2, sizeof(raw2), p2);
	int err;
	/* H = 6: conservative for uniform bytes (see test_entropy.c). */
	struct qw_entropy *s1 = qw_entropy_new_file(p1, 8, 6, &err);
	struct qw_entropy *s2 = qw_entropy_new_file(p1, 8, 6, &err);
	struct qw_entropy *s3 = qw_entropy_new_file(p2, 8, 6, &err);
	assert_non_null(s1);
	assert_non_null(s2);
	assert_non_null(s3);
	unlink(p1);
	unlink(p2);
	struct qw_rng *r1 = qw_rng_new_from_source(s1, &err);
	assert_non_null(r1);
	struct qw_rng *r2 = qw_rng_new_from_source(s2, &err);
	assert_non_null(r2);
	struct qw_rng *r3 = qw_rng_new_from_source(s3, &err);
	assert_non_null(r3);
	static uint8_t o1[1 << 16], o2[1 << 16], o3[1 << 16];
	for (int i = 0; i < 20; i++) { /* 1.25 MiB: crosses the reseed */
		assert_int_equal(qw_rng_bytes(r1, o1, sizeof(o1)), 0);
		assert_int_equal(qw_rng_bytes(r2, o2, sizeof(o2)), 0);
		assert_int_equal(qw_rng_bytes(r3, o3, sizeof(o3)), 0);
		assert_memory_equal(o1, o2, sizeof(o1));
		assert_memory_not_equal(o1, o3, 64);
	}
	struct qw_entropy_stats st;
	qw_entropy_get_stats(s1, &st);
	assert_true(st.out_bytes >= 2 * 64); /* instantiate + >= 1 reseed */
	assert_int_equal(qw_rng_u64(r1), qw_rng_u64(r2));
	qw_rng_free(r1);
	qw_rng_free(r2);
	qw_rng_free(r3);
	qw_entropy_free(s1);
	qw_entropy_free(s2);
	qw_entropy_free(s3);
}

/* A stuck source cannot seed a DRBG. */
static void test_from_failed_source(void **state)
{
	(void)state;
	uint8_t raw[4096];
	memset(raw, 0, sizeof(raw));
	char p[64];
	temp_file(raw, sizeof(raw), p);
	struct qw_entropy *s = qw_entropy_new_file(p, 8, 4, NULL);
	assert_non_null(s);
	unlink(p);
	int err = 0;
	assert_null(qw_rng_new_from_source(s, &err));
	assert_int_equal(err, QW_EHEALTH);
	assert_non_null(qw_entropy_failure_reason(s));
	qw_entropy_free(s);
}

/* Pearson chi-square of qw_rng_below(k) counts against uniform. The
 * critical values are the chi-square upper 1e-6 quantiles for k - 1 degrees
 * of freedom (9: 44.81, 99: 180.79), computed from the regularised gamma
 * function. */
static void test_below_uniform(void **state)
{
	(void)state;
	struct qw_rng *r = qw_rng_new_seeded(2024);
	const struct {
		uint64_t k;
		double crit;
	} cases[] = {{10, 44.81}, {100, 180.79}};
	for (size_t c = 0; c < 2; c++) {
		uint64_t k = cases[c].k;
		const int n = 1000000;
		static unsigned cnt[100];
		memset(cnt, 0, sizeof(cnt));
		for (int i = 0; i < n; i++) {
			uint64_t v = qw_rng_below(r, k);
			assert_true(v < k);
			cnt[v]++;
		}
		double e = (double)n / (double)k, chi = 0;
		for (uint64_t i = 0; i < k; i++)
			chi += (cnt[i] - e) * (cnt[i] - e) / e;
		assert_true(chi < cases[c].crit);
	}
	for (int i = 0; i < 100; i++)
		assert_int_equal(qw_rng_below(r, 1), 0);
	/* bound = 3 * 2^62: x mod bound would put [0, 2^62) at probability
	 * 1/2; unbiased it is 1/3 (standard error 0.0015 for 1e5 draws). */
	const uint64_t bound = 3 * ((uint64_t)1 << 62);
	int low = 0;
	const int n = 100000;
	for (int i = 0; i < n; i++) {
		uint64_t v = qw_rng_below(r, bound);
		assert_true(v < bound);
		low += v < ((uint64_t)1 << 62);
	}
	double f = (double)low / n;
	assert_true(fabs(f - 1.0 / 3) < 6 * sqrt(2.0 / 9 / n));
	/* Full range and the top value are reachable for bound = 2^64 - 1. */
	for (int i = 0; i < 100; i++)
		assert_true(qw_rng_below(r, UINT64_MAX) < UINT64_MAX);
	qw_rng_free(r);
}

static void test_moments(void **state)
{
	(void)state;
	struct qw_rng *r = qw_rng_new_seeded(99);
	const int n = 1000000;
	double s = 0, s2 = 0, mn = 1, mx = 0;
	for (int i = 0; i < n; i++) {
		double u = qw_rng_uniform(r);
		assert_true(u >= 0 && u < 1);
		s += u;
		s2 += u * u;
		mn = u < mn ? u : mn;
		mx = u > mx ? u : mx;
	}
	/* U(0,1): mean 1/2 (sd 1/sqrt(12 n)), E[U^2] = 1/3 (sd sqrt(4/45/n)) */
	assert_true(fabs(s / n - 0.5) < 6 / sqrt(12.0 * n));
	assert_true(fabs(s2 / n - 1.0 / 3) < 6 * sqrt(4.0 / 45 / n));
	assert_true(mn < 1e-4 && mx > 1 - 1e-4);

	/* N(0,1): mean sd 1/sqrt(n); sample variance sd sqrt(2/n); the
	 * fourth moment 3 (sd sqrt(96/n)) catches a wrong shape. */
	double g1 = 0, g2 = 0, g4 = 0;
	for (int i = 0; i < n; i++) {
		double g = qw_rng_gaussian(r);
		g1 += g;
		g2 += g * g;
		g4 += g * g * g * g;
	}
	double mean = g1 / n, var = g2 / n - mean * mean;
	assert_true(fabs(mean) < 6 / sqrt((double)n));
	assert_true(fabs(var - 1) < 6 * sqrt(2.0 / n));
	assert_true(fabs(g4 / n - 3) < 6 * sqrt(96.0 / n));

	/* Exp(lambda = 2.5): mean 0.4 with sd 0.4 / sqrt(n); all >= 0. */
	double e1 = 0;
	for (int i = 0; i < n; i++) {
		double x = qw_rng_exponential(r, 2.5);
		assert_true(x >= 0 && isfinite(x));
		e1 += x;
	}
	assert_true(fabs(e1 / n - 0.4) < 6 * 0.4 / sqrt((double)n));
	qw_rng_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seeded_determinism),
		cmocka_unit_test(test_system),
		cmocka_unit_test(test_from_source),
		cmocka_unit_test(test_from_failed_source),
		cmocka_unit_test(test_below_uniform),
		cmocka_unit_test(test_moments),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
