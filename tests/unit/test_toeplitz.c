#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "qwave/toeplitz.h"

/* Local xorshift until the seeded qw_rng lands; the values are arbitrary
 * test data, not key material. */
static uint64_t xs_state = 0x9e3779b97f4a7c15u;

static uint64_t xs64(void)
{
	xs_state ^= xs_state << 13;
	xs_state ^= xs_state >> 7;
	xs_state ^= xs_state << 17;
	return xs_state;
}

static struct qw_bitvec *random_bits(size_t n)
{
	struct qw_bitvec *v = qw_bitvec_new(n);

	assert_non_null(v);
	for (size_t i = 0; i < v->nwords; i++)
		v->w[i] = xs64();
	if (n & 63)
		v->w[v->nwords - 1] &= ((uint64_t)1 << (n & 63)) - 1;
	return v;
}

static void hash_with(const struct qw_bitvec *key, const struct qw_bitvec *seed, size_t m,
		      struct qw_bitvec *out, enum qw_toeplitz_method method, int isa)
{
	struct qw_toeplitz_opts o = { .method = method, .isa = (enum qw_toeplitz_isa)isa };

	assert_int_equal(qw_toeplitz_hash_ex(key, seed, m, out, &o), 0);
	assert_int_equal(out->nbits, m);
}

static void check_all_methods(size_t n, size_t m)
{
	struct qw_bitvec *key = random_bits(n), *seed = random_bits(n + m - 1);
	struct qw_bitvec *ref = qw_bitvec_new(0), *got = qw_bitvec_new(0);
	static const enum qw_toeplitz_method fast[] = { QW_TOEPLITZ_SCHOOLBOOK,
							QW_TOEPLITZ_KARATSUBA,
							QW_TOEPLITZ_AUTO };

	hash_with(key, seed, m, ref, QW_TOEPLITZ_REFERENCE, 0);
	for (size_t i = 0; i < sizeof(fast) / sizeof(fast[0]); i++) {
		for (int isa = 0; isa < 3; isa++) {
			hash_with(key, seed, m, got, fast[i], isa);
			if (!qw_bitvec_equal(ref, got))
				fail_msg("n=%zu m=%zu method=%s isa=%d differs from reference",
					 n, m, qw_toeplitz_method_name(fast[i]), isa);
		}
	}
	qw_bitvec_free(key);
	qw_bitvec_free(seed);
	qw_bitvec_free(ref);
	qw_bitvec_free(got);
}

static void test_small_against_reference(void **st)
{
	static const size_t sizes[][2] = { { 1, 1 },     { 2, 1 },     { 7, 3 },
					   { 64, 64 },   { 65, 1 },    { 128, 64 },
					   { 129, 127 }, { 1000, 1 },  { 1000, 999 },
					   { 2048, 1024 }, { 3000, 1500 }, { 4096, 4096 } };

	(void)st;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		check_all_methods(sizes[i][0], sizes[i][1]);
	for (int r = 0; r < 25; r++) {
		size_t n = 1 + (size_t)(xs64() % 3000), m = 1 + (size_t)(xs64() % n);

		check_all_methods(n, m);
	}
}

/* Definition check independent of the implementation's indexing: a seed
 * with a single one at position p gives T[i][j] = 1 iff i - j + n - 1 = p,
 * so y_i = x_(i + n - 1 - p). */
static void test_unit_seed_is_shift(void **st)
{
	size_t n = 300, m = 100;
	struct qw_bitvec *key = random_bits(n), *out = qw_bitvec_new(0);

	(void)st;
	for (size_t p = 0; p < n + m - 1; p += 37) {
		struct qw_bitvec *seed = qw_bitvec_new(n + m - 1);

		qw_bitvec_set(seed, p, 1);
		assert_int_equal(qw_toeplitz_hash(key, seed, m, out), 0);
		for (size_t i = 0; i < m; i++) {
			long long j = (long long)i + (long long)n - 1 - (long long)p;
			int want = j >= 0 && j < (long long)n ? qw_bitvec_get(key, (size_t)j) : 0;

			assert_int_equal(qw_bitvec_get(out, i), want);
		}
		qw_bitvec_free(seed);
	}
	qw_bitvec_free(key);
	qw_bitvec_free(out);
}

static void test_large_paths_agree(void **st)
{
	static const size_t sizes[][2] = { { (size_t)1 << 20, (size_t)1 << 19 },
					   { ((size_t)1 << 20) - 77, 300001 } };

	(void)st;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i][0], m = sizes[i][1];
		struct qw_bitvec *key = random_bits(n), *seed = random_bits(n + m - 1);
		struct qw_bitvec *a = qw_bitvec_new(0), *b = qw_bitvec_new(0);

		hash_with(key, seed, m, a, QW_TOEPLITZ_KARATSUBA, 0);
		hash_with(key, seed, m, b, QW_TOEPLITZ_KARATSUBA, QW_TOEPLITZ_ISA_PORTABLE);
		assert_true(qw_bitvec_equal(a, b));
		hash_with(key, seed, m, b, QW_TOEPLITZ_KARATSUBA, QW_TOEPLITZ_ISA_PCLMUL);
		assert_true(qw_bitvec_equal(a, b));
		hash_with(key, seed, m, b, QW_TOEPLITZ_SCHOOLBOOK, 0);
		assert_true(qw_bitvec_equal(a, b));
		/* Linearity in the key: T(x + e) = T x + T e. */
		{
			struct qw_bitvec *e = random_bits(n), *xe = qw_bitvec_dup(key);
			struct qw_bitvec *te = qw_bitvec_new(0);

			assert_non_null(xe);
			qw_bitvec_xor(xe, e);
			hash_with(xe, seed, m, b, QW_TOEPLITZ_AUTO, 0);
			hash_with(e, seed, m, te, QW_TOEPLITZ_AUTO, 0);
			qw_bitvec_xor(te, a);
			assert_true(qw_bitvec_equal(b, te));
			qw_bitvec_free(e);
			qw_bitvec_free(xe);
			qw_bitvec_free(te);
		}
		qw_bitvec_free(key);
		qw_bitvec_free(seed);
		qw_bitvec_free(a);
		qw_bitvec_free(b);
	}
}

static void test_invalid_lengths(void **st)
{
	struct qw_bitvec *key = random_bits(100), *seed = random_bits(149);
	struct qw_bitvec *out = qw_bitvec_new(0), *big = random_bits(100 + 101 - 1);

	(void)st;
	assert_int_equal(qw_toeplitz_hash(key, seed, 50, out), 0);
	assert_int_equal(qw_toeplitz_hash(key, seed, 49, out), QW_EINVAL);
	assert_int_equal(qw_toeplitz_hash(key, seed, 51, out), QW_EINVAL);
	assert_int_equal(qw_toeplitz_hash(key, seed, 0, out), QW_EINVAL);
	assert_int_equal(qw_toeplitz_hash(key, big, 101, out), QW_EINVAL); /* m > n */
	qw_bitvec_free(key);
	qw_bitvec_free(seed);
	qw_bitvec_free(out);
	qw_bitvec_free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_small_against_reference),
		cmocka_unit_test(test_unit_seed_is_shift),
		cmocka_unit_test(test_large_paths_agree),
		cmocka_unit_test(test_invalid_lengths),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
