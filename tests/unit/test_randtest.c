/* NIST SP 800-22 Rev. 1a tests (src/plkg/randtest.c).
 *
 * Known answers: the standard's worked examples, sections 2.x.4 (10-bit
 * sequences) and 2.x.8 (the 100-bit sequence below, which is the first 100
 * bits of pi's binary expansion 11.0010010000111111...), and, for the
 * 1,000,000 bits of e (computed here exactly with OpenSSL big numbers by
 * binary splitting of sum 1/k!), the 2.11.8 example and the e column of the
 * standard's Appendix B reference results. All P-values to 1e-6 (the
 * precision the standard prints).
 *
 * Statistical properties: a constant sequence fails; a seeded DRBG stream
 * of 10^6 bits passes everything at alpha = 0.01; over 100 seeds of 10^5
 * bits the pass proportion of each test lies in the SP 800-22 4.2.1
 * interval (1 - a) +- 3 sqrt(a (1 - a) / k) and the P-values are uniform
 * (4.2.2, P-value_T >= 0.0001). Seeds are fixed, so nothing can flake. */
#include <complex.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bn.h>

#include "qwave/bitvec.h"
#include "qwave/error.h"
#include "qwave/randtest.h"
#include "qwave/rng.h"

#define TOL 1.0e-6

static const char *const EPS100 =
	"1100100100001111110110101010001000100001011010001100001000110100110001001100011001100010100010111000";
static const char *const EPS128 =
	"11001100000101010110110001001100111000000000001001001101010100010001001111010110100000001101011111001100111001101101100010110010";

static struct qw_bitvec *from_string(const char *s)
{
	size_t n = strlen(s);
	struct qw_bitvec *v = qw_bitvec_new(n);

	assert_non_null(v);
	for (size_t i = 0; i < n; i++)
		qw_bitvec_set(v, i, s[i] == '1');
	return v;
}

static struct qw_bitvec *from_rng(uint64_t seed, size_t nbits)
{
	struct qw_rng *r = qw_rng_new_seeded(seed);
	struct qw_bitvec *v = qw_bitvec_new(nbits);

	assert_non_null(r);
	assert_non_null(v);
	for (size_t w = 0; w < v->nwords; w++)
		v->w[w] = qw_rng_u64(r);
	if (nbits % 64)
		v->w[v->nwords - 1] &= ((uint64_t)1 << (nbits % 64)) - 1;
	qw_rng_free(r);
	return v;
}

/* ---- e to n bits: floor(e * 2^(n-2)), integer part "10" first, as in the
 * standard's data file. */

static void split(BN_CTX *ctx, unsigned long a, unsigned long b, BIGNUM *p, BIGNUM *q)
{
	BIGNUM *p2, *q2;
	unsigned long m;

	/* sum_{k=a+1}^{b} a!/k! = p / q, q = (a+1)...b */
	if (b - a == 1) {
		assert_int_equal(BN_set_word(p, 1), 1);
		assert_int_equal(BN_set_word(q, b), 1);
		return;
	}
	m = a + (b - a) / 2;
	p2 = BN_new();
	q2 = BN_new();
	assert_non_null(p2);
	assert_non_null(q2);
	split(ctx, a, m, p, q);
	split(ctx, m, b, p2, q2);
	assert_int_equal(BN_mul(p, p, q2, ctx), 1);
	assert_int_equal(BN_add(p, p, p2), 1);
	assert_int_equal(BN_mul(q, q, q2, ctx), 1);
	BN_free(p2);
	BN_free(q2);
}

static struct qw_bitvec *e_bits(size_t n)
{
	const int guard = 64;
	BN_CTX *ctx = BN_CTX_new();
	BIGNUM *p = BN_new(), *q = BN_new(), *x = BN_new();
	unsigned long terms = 2;
	uint8_t *buf = malloc((n + 7) / 8);
	struct qw_bitvec *v = qw_bitvec_new(0);

	assert_true(ctx && p && q && x && buf && v);
	/* The tail after 1/N! is below 1/N!; make it < 2^-(n + guard). */
	while (lgamma((double)terms + 1.0) / log(2.0) < (double)(n + guard) + 8)
		terms++;
	split(ctx, 0, terms, p, q);
	/* e = 1 + p/q; x = floor((q + p) 2^(n - 2 + guard) / q) >> guard */
	assert_int_equal(BN_add(x, q, p), 1);
	assert_int_equal(BN_lshift(x, x, (int)(n - 2 + (size_t)guard)), 1);
	assert_int_equal(BN_div(x, NULL, x, q, ctx), 1);
	assert_int_equal(BN_rshift(x, x, guard), 1);
	assert_int_equal((size_t)BN_num_bits(x), n);
	assert_int_equal(n % 8, 0);
	assert_int_equal(BN_bn2binpad(x, buf, (int)(n / 8)), (int)(n / 8));
	assert_int_equal(qw_bitvec_from_bytes(v, buf, n), 0);
	free(buf);
	BN_free(p);
	BN_free(q);
	BN_free(x);
	BN_CTX_free(ctx);
	return v;
}

/* ---- special functions */

static void test_special(void **state)
{
	(void)state;
	/* Q(1, x) = e^-x; Q(1/2, x) = erfc(sqrt x). */
	for (double x = 0.0; x < 60.0; x += 0.37) {
		assert_true(fabs(qw_randtest_igamc(1.0, x) - exp(-x)) <= 1e-14 + 1e-12 * exp(-x));
		assert_true(fabs(qw_randtest_igamc(0.5, x) - erfc(sqrt(x))) <= 1e-14);
	}
	/* Integer a: Q(a, x) = e^-x sum_{k<a} x^k / k!, both branches. */
	for (int a = 1; a <= 60; a += 7) {
		for (double x = 0.5; x < 120; x *= 1.7) {
			double term = exp(-x), sum = 0;

			for (int k = 0; k < a; k++) {
				sum += term;
				term *= x / (k + 1);
			}
			assert_true(fabs(qw_randtest_igamc(a, x) - sum) <= 1e-12);
		}
	}
	assert_true(isnan(qw_randtest_igamc(0.0, 1.0)));
	assert_true(isnan(qw_randtest_igamc(1.0, -1.0)));
	assert_true(fabs(qw_randtest_normal_cdf(1.959963984540054) - 0.975) < 1e-12);
	assert_true(fabs(qw_randtest_normal_cdf(0.0) - 0.5) < 1e-15);
}

static double direct_dft_p(const struct qw_bitvec *v, double *margin);

/* ---- the standard's worked examples */

static void check_p(const struct qw_randtest_result *r, double p1, double p2)
{
	assert_int_equal(r->applicable, 1);
	if (fabs(r->p_value - p1) > TOL)
		fail_msg("%s: P-value %.7f, expected %.7f (%s)", r->name, r->p_value, p1, r->note);
	if (isnan(p2)) {
		assert_true(isnan(r->p_value2));
	} else if (fabs(r->p_value2 - p2) > TOL) {
		fail_msg("%s: P-value2 %.7f, expected %.7f (%s)", r->name, r->p_value2, p2, r->note);
	}
}

static void test_examples_short(void **state)
{
	struct qw_randtest_result r;
	struct qw_bitvec *v;
	const unsigned f = QW_RANDTEST_NO_MIN;
	double margin;

	(void)state;
	v = from_string("1011010101"); /* 2.1.4 */
	assert_int_equal(qw_randtest_frequency(v, 0.01, f, &r), 0);
	check_p(&r, 0.527089, NAN);
	assert_true(r.passed);
	qw_bitvec_free(v);

	v = from_string("0110011010"); /* 2.2.4, M = 3 */
	assert_int_equal(qw_randtest_block_frequency(v, 3, 0.01, f, &r), 0);
	check_p(&r, 0.801252, NAN);
	qw_bitvec_free(v);

	v = from_string("1001101011"); /* 2.3.4 */
	assert_int_equal(qw_randtest_runs(v, 0.01, f, &r), 0);
	check_p(&r, 0.147232, NAN);
	qw_bitvec_free(v);

	/* 2.6.4: the standard prints N1 = 4, P = 0.029523, which no exact DFT
	 * of this sequence gives: its moduli |X_0..4| are 0, 2, 4.47, 2, 4.47,
	 * all below T = 5.47, so N1 = 5 and P = 0.468160 (the value other
	 * independent implementations also report). We check against the
	 * direct transform. */
	v = from_string("1001010011");
	assert_int_equal(qw_randtest_dft(v, 0.01, f, &r), 0);
	check_p(&r, direct_dft_p(v, &margin), NAN);
	assert_true(margin > 0.5);
	assert_true(fabs(r.p_value - 0.468160) < TOL);
	qw_bitvec_free(v);

	v = from_string("0011011101"); /* 2.11.4, m = 3 */
	assert_int_equal(qw_randtest_serial(v, 3, 0.01, f, &r), 0);
	check_p(&r, 0.808792, 0.670320);
	qw_bitvec_free(v);

	v = from_string("0100110101"); /* 2.12.4, m = 3 */
	assert_int_equal(qw_randtest_approx_entropy(v, 3, 0.01, f, &r), 0);
	check_p(&r, 0.261961, NAN);
	qw_bitvec_free(v);

	v = from_string("1011010111"); /* 2.13.4, forward */
	assert_int_equal(qw_randtest_cusum(v, 0.01, f, &r), 0);
	assert_true(fabs(r.p_value - 0.4116588) < TOL); /* we get 0.4116586 */
	qw_bitvec_free(v);
}

static void test_examples_100(void **state)
{
	struct qw_randtest_result r;
	struct qw_bitvec *v = from_string(EPS100);
	double margin;

	(void)state;
	assert_int_equal(v->nbits, 100);
	assert_int_equal(qw_randtest_frequency(v, 0.01, 0, &r), 0); /* 2.1.8 */
	check_p(&r, 0.109599, NAN);
	assert_int_equal(qw_randtest_block_frequency(v, 10, 0.01, QW_RANDTEST_NO_MIN, &r), 0);
	check_p(&r, 0.706438, NAN); /* 2.2.8 */
	assert_int_equal(qw_randtest_runs(v, 0.01, 0, &r), 0); /* 2.3.8 */
	check_p(&r, 0.500798, NAN);
	/* 2.6.8: the standard prints N1 = 46, P = 0.168669; the exact DFT has
	 * N1 = 48 (no modulus within 0.05 of T), P = 0.646355. See 2.6.4. */
	assert_int_equal(qw_randtest_dft(v, 0.01, QW_RANDTEST_NO_MIN, &r), 0);
	check_p(&r, direct_dft_p(v, &margin), NAN);
	assert_true(margin > 0.05);
	assert_true(fabs(r.p_value - 0.646355) < TOL);
	assert_int_equal(qw_randtest_approx_entropy(v, 2, 0.01, QW_RANDTEST_NO_MIN, &r), 0);
	check_p(&r, 0.235301, NAN); /* 2.12.8 */
	assert_int_equal(qw_randtest_cusum(v, 0.01, 0, &r), 0); /* 2.13.8 */
	check_p(&r, 0.219194, 0.114866);
	qw_bitvec_free(v);

	/* 2.4.8, M = 8: we reproduce the standard's chi^2 = 4.882605 exactly;
	 * igamc(3/2, 4.882605/2) = erfc(sqrt x) + 2 sqrt(x/pi) e^-x = 0.180598,
	 * where the standard prints 0.180609 (1.1e-5 off its own chi^2). */
	v = from_string(EPS128);
	assert_int_equal(qw_randtest_longest_run(v, 0.01, 0, &r), 0);
	assert_non_null(strstr(r.note, "chi2=4.882605"));
	check_p(&r, 0.180598, NAN);
	assert_true(fabs(r.p_value - 0.180609) < 2e-5);
	qw_bitvec_free(v);
}

static void test_examples_e(void **state)
{
	struct qw_randtest_result r, all[QW_RANDTEST_COUNT];
	struct qw_bitvec *v = e_bits(1000000);
	size_t n = QW_RANDTEST_COUNT;

	(void)state;
	/* The first bits of data.e: 10.1011011111100001010100010110... */
	assert_int_equal(qw_bitvec_get_bits(v, 0, 16), 0x1fb5); /* 1010110111111000 LSB first */
	assert_int_equal(qw_randtest_serial(v, 2, 0.01, 0, &r), 0); /* 2.11.8 */
	check_p(&r, 0.843764, 0.561915);
	/* Appendix B, e column (block frequency with M = 128). */
	assert_int_equal(qw_randtest_block_frequency(v, 128, 0.01, 0, &r), 0);
	check_p(&r, 0.211072, NAN);
	assert_int_equal(qw_randtest_run_all(v, 0.01, all, &n), 0);
	assert_int_equal(n, QW_RANDTEST_COUNT);
	check_p(&all[0], 0.953749, NAN);
	check_p(&all[2], 0.561917, NAN);
	check_p(&all[3], 0.718945, NAN);
	check_p(&all[4], 0.847187, NAN);
	check_p(&all[5], 0.766182, 0.462921); /* m = 16 */
	check_p(&all[6], 0.700073, NAN);      /* m = 10 */
	assert_true(fabs(all[7].p_value - 0.669887) <= 1.5e-6); /* printed 0.669886/7 */
	for (size_t i = 0; i < n; i++)
		assert_true(all[i].passed);
	qw_bitvec_free(v);
}

/* ---- the DFT test's P-value from a direct O(n^2) transform. Returns the
 * distance of the closest modulus to the threshold (a count that close to
 * the threshold would depend on rounding). */
static double direct_dft_p(const struct qw_bitvec *v, double *margin)
{
	size_t n = v->nbits, n1 = 0;
	double thr = sqrt(log(20.0) * (double)n), d;

	*margin = INFINITY;
	for (size_t k = 0; k < n / 2; k++) {
		double complex s = 0;

		for (size_t j = 0; j < n; j++) {
			double ang = -2.0 * 3.14159265358979323846 * (double)((k * j) % n) /
				     (double)n;
			s += (2.0 * qw_bitvec_get(v, j) - 1.0) * (cos(ang) + I * sin(ang));
		}
		n1 += cabs(s) < thr;
		*margin = fmin(*margin, fabs(cabs(s) - thr));
	}
	d = ((double)n1 - 0.95 * (double)n / 2.0) / sqrt((double)n * 0.95 * 0.05 / 4.0);
	return erfc(fabs(d) / sqrt(2.0));
}

/* The three code paths: n/2 a power of two, even n (Bluestein on n/2),
 * odd n (Bluestein on n). */
static void test_dft_direct(void **state)
{
	static const size_t lens[] = { 2048, 1500, 1001 };

	(void)state;
	for (size_t t = 0; t < sizeof(lens) / sizeof(lens[0]); t++) {
		struct qw_bitvec *v = from_rng(77 + t, lens[t]);
		struct qw_randtest_result r;
		double margin, p = direct_dft_p(v, &margin);

		assert_true(margin > 1e-6);
		assert_int_equal(qw_randtest_dft(v, 0.01, 0, &r), 0);
		assert_true(fabs(r.p_value - p) < 1e-12);
		qw_bitvec_free(v);
	}
}

/* ---- applicability */

static void test_too_short(void **state)
{
	struct qw_randtest_result r, all[QW_RANDTEST_COUNT];
	struct qw_bitvec *v = from_rng(5, 99);
	size_t n = QW_RANDTEST_COUNT - 1;

	(void)state;
	assert_int_equal(qw_randtest_frequency(v, 0.01, 0, &r), QW_ERANGE);
	assert_int_equal(r.applicable, 0);
	assert_int_equal(r.passed, 0);
	assert_true(isnan(r.p_value));
	assert_non_null(strstr(r.note, "100"));
	assert_int_equal(qw_randtest_dft(v, 0.01, 0, &r), QW_ERANGE);
	assert_int_equal(qw_randtest_longest_run(v, 0.01, 0, &r), QW_ERANGE);
	assert_int_equal(qw_randtest_block_frequency(v, 0, 0.01, 0, &r), QW_ERANGE);
	assert_int_equal(qw_randtest_block_frequency(v, 0, 0.01, QW_RANDTEST_NO_MIN, &r),
			 QW_EINVAL);
	assert_int_equal(qw_randtest_serial(v, 5, 0.01, 0, &r), QW_ERANGE); /* 5 >= 6 - 2 */
	assert_int_equal(qw_randtest_serial(v, 3, 0.01, 0, &r), 0);
	assert_int_equal(qw_randtest_serial(v, 1, 0.01, 0, &r), QW_EINVAL);
	assert_int_equal(qw_randtest_approx_entropy(v, 1, 0.01, 0, &r), QW_ERANGE);

	assert_int_equal(qw_randtest_run_all(v, 0.01, all, &n), QW_ERANGE);
	n = QW_RANDTEST_COUNT;
	assert_int_equal(qw_randtest_run_all(v, 0.01, all, &n), 0);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(all[i].name, "serial")) { /* serial: m = 3 fits 99 bits */
			assert_int_equal(all[i].applicable, 0);
			assert_int_equal(all[i].passed, 0);
		}
	}
	qw_bitvec_free(v);

	assert_int_equal(qw_randtest_default_block_m(1000000), 10001);
	assert_int_equal(qw_randtest_default_block_m(1000), 20);
	assert_int_equal(qw_randtest_default_serial_m(1000000), 16);
	assert_int_equal(qw_randtest_default_serial_m(4096), 9);
	assert_int_equal(qw_randtest_default_apen_m(1000000), 10);
	assert_int_equal(qw_randtest_default_apen_m(4096), 6);
	assert_int_equal(qw_randtest_default_apen_m(100), 0);
}

/* ---- statistical behaviour */

static void test_constant_fails(void **state)
{
	struct qw_randtest_result all[QW_RANDTEST_COUNT];
	struct qw_bitvec *v = qw_bitvec_new(20000);
	size_t n = QW_RANDTEST_COUNT;

	(void)state;
	assert_non_null(v);
	for (int ones = 0; ones < 2; ones++) {
		for (size_t i = 0; i < v->nbits; i++)
			qw_bitvec_set(v, i, ones);
		assert_int_equal(qw_randtest_run_all(v, 0.01, all, &n), 0);
		for (size_t i = 0; i < n; i++) {
			assert_int_equal(all[i].applicable, 1);
			assert_int_equal(all[i].passed, 0);
		}
		assert_true(all[0].p_value < 1e-100);
		assert_true(all[2].p_value == 0.0); /* frequency prerequisite */
	}
	/* Alternating bits: balanced, so the frequency test passes, but the
	 * runs test sees twice the expected number of runs. */
	for (size_t i = 0; i < v->nbits; i++)
		qw_bitvec_set(v, i, (int)(i & 1));
	assert_int_equal(qw_randtest_run_all(v, 0.01, all, &n), 0);
	assert_true(all[0].passed);
	assert_false(all[2].passed);
	assert_false(all[4].passed);
	qw_bitvec_free(v);
}

static void test_drbg_1e6(void **state)
{
	struct qw_randtest_result all[QW_RANDTEST_COUNT];
	struct qw_bitvec *v = from_rng(20260101, 1000000);
	size_t n = QW_RANDTEST_COUNT;

	(void)state;
	assert_int_equal(qw_randtest_run_all(v, 0.01, all, &n), 0);
	for (size_t i = 0; i < n; i++) {
		if (!all[i].applicable || !all[i].passed)
			fail_msg("%s: P=%g/%g %s", all[i].name, all[i].p_value, all[i].p_value2,
				 all[i].note);
	}
	qw_bitvec_free(v);
}

static void test_drbg_proportion(void **state)
{
	enum { K = 100, NP = 2 * QW_RANDTEST_COUNT };
	const double alpha = 0.01;
	double lo = (1 - alpha) - 3 * sqrt(alpha * (1 - alpha) / K);
	unsigned pass[NP] = { 0 }, bins[NP][10], used[NP] = { 0 };

	(void)state;
	memset(bins, 0, sizeof(bins));
	for (uint64_t seed = 1; seed <= K; seed++) {
		struct qw_randtest_result all[QW_RANDTEST_COUNT];
		struct qw_bitvec *v = from_rng(seed * 7919, 100000);
		size_t n = QW_RANDTEST_COUNT;

		assert_int_equal(qw_randtest_run_all(v, alpha, all, &n), 0);
		for (size_t i = 0; i < n; i++) {
			double ps[2] = { all[i].p_value, all[i].p_value2 };

			assert_int_equal(all[i].applicable, 1);
			for (int j = 0; j < 2; j++) {
				if (isnan(ps[j]))
					continue;
				used[2 * i + j] = 1;
				pass[2 * i + j] += ps[j] >= alpha;
				bins[2 * i + j][ps[j] >= 1.0 ? 9 : (int)(ps[j] * 10)]++;
			}
		}
		qw_bitvec_free(v);
	}
	for (int t = 0; t < NP; t++) {
		double chi2 = 0;

		if (!used[t])
			continue;
		/* 4.2.1: proportion of passing sequences */
		if ((double)pass[t] / K < lo)
			fail_msg("P-value %d: %u/%d pass, below %.4f", t, pass[t], K, lo);
		/* 4.2.2: uniformity of the P-values over 10 bins */
		for (int b = 0; b < 10; b++)
			chi2 += (bins[t][b] - K / 10.0) * (bins[t][b] - K / 10.0) / (K / 10.0);
		if (qw_randtest_igamc(9 / 2.0, chi2 / 2.0) < 0.0001)
			fail_msg("P-value %d: not uniform, chi2 = %.3f", t, chi2);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_special),
		cmocka_unit_test(test_examples_short),
		cmocka_unit_test(test_examples_100),
		cmocka_unit_test(test_examples_e),
		cmocka_unit_test(test_dft_direct),
		cmocka_unit_test(test_too_short),
		cmocka_unit_test(test_constant_fails),
		cmocka_unit_test(test_drbg_1e6),
		cmocka_unit_test(test_drbg_proportion),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
