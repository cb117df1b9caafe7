/* Entropy sources: SP 800-90B cutoff formulas, the health tests catching a
 * stuck source (Repetition Count Test) and biased sources (Adaptive
 * Proportion Test), permanent failure, a good source passing, and the
 * conditioning being exactly SHA-256 over n_in = ceil(320 / H) tested
 * samples taken after the 1024 start-up samples. */
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
#include "qwave/hash.h"

/* Write n bytes to a fresh temporary file; returns its path (static). */
static const char *temp_file(const uint8_t *data, size_t n)
{
	static char path[64];
	snprintf(path, sizeof(path), "/tmp/qw_test_entropy_XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	close(fd);
	return path;
}

static void random_fill(uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = getrandom(p, n, 0);
		assert_true(r > 0);
		p += r;
		n -= (size_t)r;
	}
}

/* SP 800-90B 4.4.1 and 4.4.2 cutoffs. The APT values were computed
 * independently of this code, with exact rational arithmetic over the
 * binomial distribution (Python fractions), from C = 1 + CRITBINOM(W,
 * 2^-H, 1 - 2^-20). */
static void test_cutoffs(void **state)
{
	(void)state;
	assert_int_equal(qw_entropy_rct_cutoff(1), 21);
	assert_int_equal(qw_entropy_rct_cutoff(0.5), 41);
	assert_int_equal(qw_entropy_rct_cutoff(6), 5);
	assert_int_equal(qw_entropy_rct_cutoff(7), 4);
	assert_int_equal(qw_entropy_rct_cutoff(8), 4);
	assert_int_equal(qw_entropy_apt_window(1), 512);
	assert_int_equal(qw_entropy_apt_window(8), 1024);
	assert_int_equal(qw_entropy_apt_cutoff(512, 1), 311);
	assert_int_equal(qw_entropy_apt_cutoff(512, 0.5), 410);
	assert_int_equal(qw_entropy_apt_cutoff(1024, 0.5), 793);
	assert_int_equal(qw_entropy_apt_cutoff(1024, 1), 589);
	assert_int_equal(qw_entropy_apt_cutoff(1024, 2), 325);
	assert_int_equal(qw_entropy_apt_cutoff(1024, 4), 105);
	assert_int_equal(qw_entropy_apt_cutoff(1024, 6), 39);
	assert_int_equal(qw_entropy_apt_cutoff(1024, 7), 26);
	assert_int_equal(qw_entropy_apt_cutoff(1024, 8), 18);
}

static void expect_failure(struct qw_entropy *s, const char *test_name)
{
	uint8_t out[64];
	memset(out, 0xaa, sizeof(out));
	assert_int_equal(qw_entropy_read(s, out, sizeof(out)), QW_EHEALTH);
	for (size_t i = 0; i < sizeof(out); i++)
		assert_int_equal(out[i], 0); /* wiped */
	const char *why = qw_entropy_failure_reason(s);
	assert_non_null(why);
	assert_non_null(strstr(why, test_name));
	/* Permanent: later reads fail too, without reading more samples. */
	struct qw_entropy_stats a, b;
	qw_entropy_get_stats(s, &a);
	assert_int_equal(qw_entropy_read(s, out, 1), QW_EHEALTH);
	assert_int_equal(qw_entropy_startup(s), QW_EHEALTH);
	qw_entropy_get_stats(s, &b);
	assert_int_equal(a.samples, b.samples);
}

/* A stuck source (every byte identical) trips the Repetition Count Test
 * at exactly the cutoff, during the start-up test. */
static void test_stuck_rct(void **state)
{
	(void)state;
	uint8_t data[4096];
	memset(data, 0x5a, sizeof(data));
	const char *path = temp_file(data, sizeof(data));
	struct qw_entropy *s = qw_entropy_new_file(path, 8, 7, NULL);
	assert_non_null(s);
	unlink(path); /* the open descriptor keeps the data readable */
	expect_failure(s, "repetition count");
	struct qw_entropy_stats st;
	qw_entropy_get_stats(s, &st);
	assert_int_equal(st.max_run, st.rct_cutoff);
	assert_int_equal(st.samples, st.rct_cutoff);
	assert_int_equal(st.out_bytes, 0);
	qw_entropy_free(s);
}

/* Binary samples, 90% ones, as 9 ones then a zero repeated: runs never
 * reach the RCT cutoff (21 for H = 1) but each 512-window holds ~461 ones
 * against an APT cutoff of 311. */
static void test_biased_binary_apt(void **state)
{
	(void)state;
	uint8_t data[4096];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i % 10 != 9);
	const char *path = temp_file(data, sizeof(data));
	struct qw_entropy *s = qw_entropy_new_file(path, 1, 1.0, NULL);
	assert_non_null(s);
	unlink(path);
	expect_failure(s, "adaptive proportion");
	struct qw_entropy_stats st;
	qw_entropy_get_stats(s, &st);
	assert_int_equal(st.apt_window, 512);
	assert_int_equal(st.apt_cutoff, 311);
	assert_true(st.max_run < st.rct_cutoff);
	assert_int_equal(st.max_apt, 311);
	qw_entropy_free(s);
}

/* Random i.i.d. bits with P(1) = 0.9 and a claim of H = 1: one of the two
 * tests must fail well within the start-up samples. */
static void test_biased_random_binary(void **state)
{
	(void)state;
	uint8_t data[8192];
	random_fill(data, sizeof(data));
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = data[i] < 230; /* 230/256 = 0.898 */
	const char *path = temp_file(data, sizeof(data));
	struct qw_entropy *s = qw_entropy_new_file(path, 1, 1.0, NULL);
	assert_non_null(s);
	unlink(path);
	uint8_t out[16];
	assert_int_equal(qw_entropy_read(s, out, sizeof(out)), QW_EHEALTH);
	assert_non_null(qw_entropy_failure_reason(s));
	qw_entropy_free(s);
}

/* Non-binary: 4 values cycling (no repetition at all) under a claim of
 * H = 7: each value fills 256 of 1024 slots, far above the cutoff 26. */
static void test_biased_nonbinary_apt(void **state)
{
	(void)state;
	uint8_t data[4096];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i % 4);
	const char *path = temp_file(data, sizeof(data));
	struct qw_entropy *s = qw_entropy_new_file(path, 8, 7, NULL);
	assert_non_null(s);
	unlink(path);
	expect_failure(s, "adaptive proportion");
	qw_entropy_free(s);
}

/* Good source: OS random bytes as raw 8-bit samples, claimed H = 6 (a
 * conservative claim also keeps the RCT false-alarm rate, 2^-32 per sample
 * for truly uniform bytes, negligible). Output = SHA-256 over successive
 * groups of n_in = ceil(320 / 6) = 54 samples after the 1024 start-up
 * samples, which proves both the discard and the conditioning. */
static void test_good_source(void **state)
{
	(void)state;
	static uint8_t data[1 << 16];
	random_fill(data, sizeof(data));
	const char *path = temp_file(data, sizeof(data));
	int err;
	struct qw_entropy *s = qw_entropy_new_file(path, 8, 6, &err);
	assert_non_null(s);
	unlink(path);
	assert_false(qw_entropy_is_os(s));
	uint8_t out[100], want[4 * 32];
	assert_int_equal(qw_entropy_read(s, out, 40), 0);
	assert_int_equal(qw_entropy_read(s, out + 40, 60), 0);
	for (int b = 0; b < 4; b++)
		assert_int_equal(qw_hash(QW_HASH_SHA256, data + 1024 + 54 * b, 54,
					 want + 32 * b), 0);
	assert_memory_equal(out, want, 100);
	assert_null(qw_entropy_failure_reason(s));
	struct qw_entropy_stats st;
	qw_entropy_get_stats(s, &st);
	assert_int_equal(st.samples, 1024 + 4 * 54);
	assert_int_equal(st.out_bytes, 100);
	assert_int_equal(st.rct_cutoff, 5);
	assert_int_equal(st.apt_cutoff, 39);
	/* A larger read keeps passing. */
	static uint8_t big[8192];
	assert_int_equal(qw_entropy_read(s, big, sizeof(big)), 0);
	qw_entropy_free(s);
}

/* Running out of file samples is an I/O error, not a health failure. */
static void test_eof(void **state)
{
	(void)state;
	uint8_t data[100];
	random_fill(data, sizeof(data));
	const char *path = temp_file(data, sizeof(data));
	struct qw_entropy *s = qw_entropy_new_file(path, 8, 6, NULL);
	assert_non_null(s);
	unlink(path);
	uint8_t out[8];
	assert_int_equal(qw_entropy_read(s, out, sizeof(out)), QW_EIO);
	assert_null(qw_entropy_failure_reason(s));
	qw_entropy_free(s);
}

/* A callback source producing 0,1,...,255,0,1,...: no repeats, each value
 * 4 times per 1024-window, so it passes with H = 7 (cutoffs 4 and 26). */
static int counter_fn(void *arg, uint8_t *buf, size_t n)
{
	unsigned *c = arg;
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)(*c)++;
	return 0;
}

static void test_fn_source(void **state)
{
	(void)state;
	unsigned c = 0;
	struct qw_entropy *s = qw_entropy_new_fn(counter_fn, &c, 8, 7, NULL);
	assert_non_null(s);
	uint8_t out[1000];
	assert_int_equal(qw_entropy_read(s, out, sizeof(out)), 0);
	struct qw_entropy_stats st;
	qw_entropy_get_stats(s, &st);
	assert_int_equal(st.max_run, 1);
	assert_int_equal(st.max_apt, 4);
	qw_entropy_free(s);
	qw_entropy_free(NULL);
}

static void test_params_and_os(void **state)
{
	(void)state;
	int err = 0;
	unsigned c = 0;
	assert_null(qw_entropy_new_fn(counter_fn, &c, 0, 0.5, &err));
	assert_int_equal(err, QW_EINVAL);
	assert_null(qw_entropy_new_fn(counter_fn, &c, 9, 1, &err));
	assert_int_equal(err, QW_EINVAL);
	assert_null(qw_entropy_new_fn(counter_fn, &c, 1, 1.5, &err));
	assert_int_equal(err, QW_EINVAL);
	assert_null(qw_entropy_new_fn(counter_fn, &c, 8, 0, &err));
	assert_int_equal(err, QW_EINVAL);
	assert_null(qw_entropy_new_file("/nonexistent/qwave/x", 8, 4, &err));
	assert_int_equal(err, QW_EIO);

	struct qw_entropy *os = qw_entropy_new_os();
	assert_non_null(os);
	assert_true(qw_entropy_is_os(os));
	uint8_t a[32], b[32];
	assert_int_equal(qw_entropy_read(os, a, 32), 0);
	assert_int_equal(qw_entropy_read(os, b, 32), 0);
	assert_memory_not_equal(a, b, 32);
	assert_null(qw_entropy_failure_reason(os));
	qw_entropy_free(os);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cutoffs),
		cmocka_unit_test(test_stuck_rct),
		cmocka_unit_test(test_biased_binary_apt),
		cmocka_unit_test(test_biased_random_binary),
		cmocka_unit_test(test_biased_nonbinary_apt),
		cmocka_unit_test(test_good_source),
		cmocka_unit_test(test_eof),
		cmocka_unit_test(test_fn_source),
		cmocka_unit_test(test_params_and_os),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
