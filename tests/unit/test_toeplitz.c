#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "distill/toeplitz_internal.h"
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
							QW_TOEPLITZ_KARATSUBA, QW_TOEPLITZ_FFT,
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
		for (int isa = 0; isa < 3; isa++) {
			hash_with(key, seed, m, b, QW_TOEPLITZ_FFT, isa);
			assert_true(qw_bitvec_equal(a, b));
		}
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


/* ---- the additive FFT layer --------------------------------------------- */

/* GF(2^64) product by the definition: shift-and-add, then reduce bit by
 * bit with x^64 = x^4 + x^3 + x + 1. */
static uint64_t gf64_mul_def(uint64_t a, uint64_t b)
{
	uint64_t lo = 0, hi = 0;

	for (int i = 0; i < 64; i++)
		if ((b >> i) & 1) {
			lo ^= a << i;
			hi ^= i ? a >> (64 - i) : 0;
		}
	for (int i = 63; i >= 0; i--)
		if ((hi >> i) & 1) {
			/* x^(64 + i) = x^i (x^4 + x^3 + x + 1) */
			hi ^= (uint64_t)1 << i;
			if (i + 4 >= 64)
				hi ^= (uint64_t)1 << (i + 4 - 64);
			else
				lo ^= (uint64_t)1 << (i + 4);
			if (i + 3 >= 64)
				hi ^= (uint64_t)1 << (i + 3 - 64);
			else
				lo ^= (uint64_t)1 << (i + 3);
			if (i + 1 >= 64)
				hi ^= (uint64_t)1 << (i + 1 - 64);
			else
				lo ^= (uint64_t)1 << (i + 1);
			lo ^= (uint64_t)1 << i;
		}
	return lo;
}

static int max_level(void)
{
	return qw_tpz_isa_level(QW_TOEPLITZ_ISA_BEST);
}

static void test_gf64_mul(void **st)
{
	(void)st;
	/* x^63 x = x^64 = x^4 + x^3 + x + 1; (x^63)^2 = x^126 =
	 * x^63 + x^62 + x^6 + x^4 + x^3 + x (by hand). */
	for (int l = 0; l <= max_level(); l++) {
		assert_int_equal(qw_tpz_gf64_mul((uint64_t)1 << 63, 2, l), 0x1b);
		assert_int_equal(qw_tpz_gf64_mul((uint64_t)1 << 63, (uint64_t)1 << 63, l),
				 ((uint64_t)3 << 62) | 0x5a);
	}
	for (int r = 0; r < 20000; r++) {
		uint64_t a = xs64(), b = xs64(), c = xs64(), want = gf64_mul_def(a, b);

		for (int l = 0; l <= max_level(); l++) {
			assert_int_equal(qw_tpz_gf64_mul(a, b, l), want);
			/* distributive */
			assert_int_equal(qw_tpz_gf64_mul(a, b ^ c, l),
					 want ^ qw_tpz_gf64_mul(a, c, l));
		}
	}
}

/* v_0 = 1 and v_i^2 + v_i = v_(i-1): a Cantor basis; v_0 .. v_31 linearly
 * independent (so the 2^32 points omega_u are distinct) and omega additive. */
static void test_cantor_basis(void **st)
{
	uint64_t prev = 1, basis[64] = { 0 };

	(void)st;
	assert_int_equal(qw_tpz_omega(0), 0);
	assert_int_equal(qw_tpz_omega(1), 1);
	for (int i = 1; i < 32; i++) {
		uint64_t v = qw_tpz_omega((uint64_t)1 << i);

		assert_int_equal(gf64_mul_def(v, v) ^ v, prev);
		prev = v;
	}
	for (int i = 0; i < 32; i++) {
		uint64_t v = qw_tpz_omega((uint64_t)1 << i);
		int top = 63;

		/* reduce against the echelon basis; a dependent v reaches 0 */
		while (v) {
			while (!((v >> top) & 1))
				top--;
			if (!basis[top])
				break;
			v ^= basis[top];
		}
		assert_true(v != 0);
		basis[top] = v;
	}
	for (uint64_t u = 0; u < 1000; u++)
		assert_int_equal(qw_tpz_omega(u ^ 0x5a5a5), qw_tpz_omega(u) ^ qw_tpz_omega(0x5a5a5));
}

/* Monomial coefficients -> (to novel basis, FFT) -> the values f(omega_u),
 * checked by Horner's rule at every point. */
static void test_fft_evaluates(void **st)
{
	(void)st;
	for (unsigned k = 1; k <= 9; k++) {
		size_t n = (size_t)1 << k;
		uint64_t *f = malloc(n * sizeof(*f)), *g = malloc(n * sizeof(*g));

		assert_non_null(f);
		assert_non_null(g);
		for (size_t i = 0; i < n; i++)
			f[i] = xs64();
		for (int l = 0; l <= max_level(); l++) {
			memcpy(g, f, n * sizeof(*f));
			assert_int_equal(qw_tpz_to_novel(g, k), 0);
			assert_int_equal(qw_tpz_fft(g, k, l), 0);
			for (size_t u = 0; u < n; u++) {
				uint64_t w = qw_tpz_omega(u), v = 0;

				for (size_t i = n; i-- > 0;)
					v = gf64_mul_def(v, w) ^ f[i];
				if (v != g[u])
					fail_msg("k=%u level=%d: value %zu differs", k, l, u);
			}
		}
		free(f);
		free(g);
	}
}

/* The inverses undo the transforms exactly (up to 2^18 points). */
static void test_fft_round_trip(void **st)
{
	(void)st;
	for (unsigned k = 1; k <= 18; k++) {
		size_t n = (size_t)1 << k;
		uint64_t *f = malloc(n * sizeof(*f)), *g = malloc(n * sizeof(*g));

		assert_non_null(f);
		assert_non_null(g);
		for (size_t i = 0; i < n; i++)
			f[i] = xs64();
		memcpy(g, f, n * sizeof(*f));
		assert_int_equal(qw_tpz_to_novel(g, k), 0);
		assert_int_equal(qw_tpz_from_novel(g, k), 0);
		assert_memory_equal(f, g, n * sizeof(*f));
		for (int l = 0; l <= max_level(); l++) {
			if (l == 0 && k > 14)
				continue; /* the portable path is slow; small sizes cover it */
			memcpy(g, f, n * sizeof(*f));
			assert_int_equal(qw_tpz_fft(g, k, l), 0);
			assert_int_equal(qw_tpz_ifft(g, k, l), 0);
			if (memcmp(f, g, n * sizeof(*f)))
				fail_msg("k=%u level=%d: ifft(fft(f)) != f", k, l);
		}
		free(f);
		free(g);
	}
}

/* Schoolbook product in GF(2)[x], bit by word. */
static void poly_mul_def(uint64_t *c, const uint64_t *a, size_t abits, const uint64_t *b,
			 size_t bbits)
{
	size_t cw = (abits + bbits + 63) / 64, bw = (bbits + 63) / 64;

	memset(c, 0, cw * sizeof(*c));
	for (size_t i = 0; i < abits; i++) {
		if (!((a[i / 64] >> (i % 64)) & 1))
			continue;
		for (size_t j = 0; j < bw; j++) {
			size_t q = i / 64 + j;
			unsigned sh = (unsigned)(i % 64);

			c[q] ^= b[j] << sh;
			if (sh && q + 1 < cw)
				c[q + 1] ^= b[j] >> (64 - sh);
		}
	}
}

static void test_fft_product(void **st)
{
	(void)st;
	for (int r = 0; r < 40; r++) {
		size_t abits = 1 + (size_t)(xs64() % 5000), bbits = 1 + (size_t)(xs64() % 5000);
		struct qw_bitvec *a = random_bits(abits), *b = random_bits(bbits);
		size_t cw = (abits + bbits + 63) / 64;
		uint64_t *want = calloc(cw, 8), *got = calloc(cw, 8);

		assert_non_null(want);
		assert_non_null(got);
		poly_mul_def(want, a->w, abits, b->w, bbits);
		for (int l = 0; l <= max_level(); l++) {
			memset(got, 0xa5, cw * 8);
			assert_int_equal(qw_tpz_fft_mul(got, a->w, abits, b->w, bbits, l), 0);
			if (memcmp(want, got, cw * 8))
				fail_msg("product %zu x %zu bits, level %d differs", abits, bbits, l);
		}
		free(want);
		free(got);
		qw_bitvec_free(a);
		qw_bitvec_free(b);
	}
}

static void fft_equals_karatsuba(size_t n, size_t m)
{
	struct qw_bitvec *key = random_bits(n), *seed = random_bits(n + m - 1);
	struct qw_bitvec *a = qw_bitvec_new(0), *b = qw_bitvec_new(0);

	hash_with(key, seed, m, a, QW_TOEPLITZ_KARATSUBA, 0);
	hash_with(key, seed, m, b, QW_TOEPLITZ_FFT, 0);
	if (!qw_bitvec_equal(a, b))
		fail_msg("n=%zu m=%zu: fft differs from karatsuba", n, m);
	qw_bitvec_free(key);
	qw_bitvec_free(seed);
	qw_bitvec_free(a);
	qw_bitvec_free(b);
}

/* Mid-size and random larger sizes, the edges m = 1 and m = n included
 * (different block plans of the FFT method). QW_TEST_LARGE=1 adds keys of
 * 2^24 to 2^26 bits (about 10 s more). */
static void test_fft_matches_karatsuba(void **st)
{
	static const size_t sizes[][2] = { { 200013, 1 },       { 200013, 200013 },
					   { 200013, 77777 },   { 131072, 65536 },
					   { 999999, 12345 } };
	const char *large = getenv("QW_TEST_LARGE");

	(void)st;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		fft_equals_karatsuba(sizes[i][0], sizes[i][1]);
	for (int r = 0; r < 3; r++) {
		size_t n = ((size_t)1 << 20) + (size_t)(xs64() % (3u << 20));
		size_t m = 1 + (size_t)(xs64() % n);

		fft_equals_karatsuba(n, m);
	}
	if (large && !strcmp(large, "1")) {
		fft_equals_karatsuba((size_t)1 << 24, (size_t)1 << 23);
		fft_equals_karatsuba(((size_t)1 << 25) + 12345, 3000017);
		fft_equals_karatsuba((size_t)1 << 26, (size_t)1 << 25);
	}
	/* the cached workspace can be dropped and rebuilt */
	qw_toeplitz_release();
	fft_equals_karatsuba(100000, 50000);
	qw_toeplitz_release();
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
		cmocka_unit_test(test_gf64_mul),
		cmocka_unit_test(test_cantor_basis),
		cmocka_unit_test(test_fft_evaluates),
		cmocka_unit_test(test_fft_round_trip),
		cmocka_unit_test(test_fft_product),
		cmocka_unit_test(test_small_against_reference),
		cmocka_unit_test(test_unit_seed_is_shift),
		cmocka_unit_test(test_large_paths_agree),
		cmocka_unit_test(test_fft_matches_karatsuba),
		cmocka_unit_test(test_invalid_lengths),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
