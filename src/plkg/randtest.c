/* NIST SP 800-22 Rev. 1a statistical tests (see include/qwave/randtest.h
 * and docs/randtest.md). Section numbers below are those of SP 800-22. */
#include <complex.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qwave/randtest.h"
#include "qwave/secmem.h"

#define MAX_PATTERN_BITS 20 /* counts of 2^20 patterns (4 MiB) at most */
#define PI 3.14159265358979323846

/* ---------------------------------------------------------------- special
 * functions (SP 800-22 5.5.3) */

/* log Gamma(a) for a > 0 (the sign is always +, so lgamma's global signgam
 * carries no information we need). */
static double lgam(double a)
{
	return lgamma(a);
}

/* Series for the regularized lower incomplete gamma P(a, x), used when
 * x < a + 1 where it converges fastest: P = e^-x x^a / Gamma(a+1) *
 * sum_k x^k / ((a+1)...(a+k)). */
static double igam_series(double a, double x)
{
	double ap = a, term = 1.0 / a, sum = term;

	for (int k = 0; k < 10000000; k++) {
		ap += 1.0;
		term *= x / ap;
		sum += term;
		if (fabs(term) < fabs(sum) * 1e-17)
			break;
	}
	return sum * exp(-x + a * log(x) - lgam(a));
}

/* Continued fraction for Q(a, x) (modified Lentz), for x >= a + 1:
 * Q = e^-x x^a / Gamma(a) * 1/(x+1-a- 1(1-a)/(x+3-a- 2(2-a)/(x+5-a- ...))). */
static double igamc_cf(double a, double x)
{
	const double tiny = 1e-300;
	double b = x + 1.0 - a, c = 1.0 / tiny, d = 1.0 / b, h = d;

	for (int i = 1; i < 10000000; i++) {
		double an = -i * (i - a), del;

		b += 2.0;
		d = an * d + b;
		if (fabs(d) < tiny)
			d = tiny;
		c = b + an / c;
		if (fabs(c) < tiny)
			c = tiny;
		d = 1.0 / d;
		del = d * c;
		h *= del;
		if (fabs(del - 1.0) < 1e-16)
			break;
	}
	return exp(-x + a * log(x) - lgam(a)) * h;
}

double qw_randtest_igamc(double a, double x)
{
	if (!(a > 0) || !(x >= 0) || isinf(a))
		return NAN;
	if (x == 0)
		return 1.0;
	if (isinf(x))
		return 0.0;
	if (x < a + 1.0)
		return 1.0 - igam_series(a, x);
	return igamc_cf(a, x);
}

double qw_randtest_normal_cdf(double x)
{
	return 0.5 * erfc(-x / sqrt(2.0));
}

/* ---------------------------------------------------------------- helpers */

static void set_note(struct qw_randtest_result *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void set_note(struct qw_randtest_result *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->note, sizeof(r->note), fmt, ap);
	va_end(ap);
}

static void init_result(struct qw_randtest_result *r, const char *name)
{
	memset(r, 0, sizeof(*r));
	r->name = name;
	r->p_value = NAN;
	r->p_value2 = NAN;
}

static void check_args(const struct qw_bitvec *bits, double alpha,
		       const struct qw_randtest_result *r)
{
	QW_REQUIRE(bits != NULL);
	QW_REQUIRE(r != NULL);
	QW_REQUIRE(alpha > 0 && alpha < 1);
}

/* Not applicable: ret is QW_ERANGE (too short) or QW_EINVAL. */
static int not_applicable(struct qw_randtest_result *r, int ret)
{
	r->applicable = 0;
	r->passed = 0;
	r->p_value = NAN;
	r->p_value2 = NAN;
	return ret;
}

static int verdict(struct qw_randtest_result *r, double alpha)
{
	r->applicable = 1;
	r->passed = r->p_value >= alpha && (isnan(r->p_value2) || r->p_value2 >= alpha);
	return 0;
}

static unsigned floor_log2(size_t n)
{
	unsigned l = 0;

	while (n >>= 1)
		l++;
	return l;
}

/* ---------------------------------------------------------------- 2.1 */

int qw_randtest_frequency(const struct qw_bitvec *bits, double alpha, unsigned flags,
			  struct qw_randtest_result *r)
{
	size_t n = bits ? bits->nbits : 0, min = (flags & QW_RANDTEST_NO_MIN) ? 1 : 100;
	double s, s_obs;

	check_args(bits, alpha, r);
	init_result(r, "frequency");
	if (n < min) {
		set_note(r, "needs n >= %zu bits, have %zu (2.1.7)", min, n);
		return not_applicable(r, QW_ERANGE);
	}
	/* 2.1.4: S_n = sum of X_i = 2 eps_i - 1 = 2 * ones - n. */
	s = 2.0 * (double)qw_bitvec_popcount(bits) - (double)n;
	s_obs = fabs(s) / sqrt((double)n);
	r->p_value = erfc(s_obs / sqrt(2.0));
	set_note(r, "n=%zu S_n=%.0f s_obs=%.6f", n, s, s_obs);
	return verdict(r, alpha);
}

/* ---------------------------------------------------------------- 2.2 */

size_t qw_randtest_default_block_m(size_t n)
{
	size_t m;

	if (n < 100)
		return 0;
	/* 2.2.7: M >= 20, M > 0.01 n, N = floor(n / M) < 100. */
	m = n / 100 + 1;
	return m < 20 ? 20 : m;
}

int qw_randtest_block_frequency(const struct qw_bitvec *bits, size_t block_m, double alpha,
				unsigned flags, struct qw_randtest_result *r)
{
	size_t n = bits ? bits->nbits : 0, nblocks;
	int strict = !(flags & QW_RANDTEST_NO_MIN);
	double chi2 = 0;

	check_args(bits, alpha, r);
	init_result(r, "block_frequency");
	if (strict && n < 100) {
		set_note(r, "needs n >= 100 bits, have %zu (2.2.7)", n);
		return not_applicable(r, QW_ERANGE);
	}
	if (block_m == 0)
		block_m = qw_randtest_default_block_m(n);
	if (block_m == 0) {
		set_note(r, "block size M must be >= 1");
		return not_applicable(r, QW_EINVAL);
	}
	if (strict && block_m < 20) {
		set_note(r, "block size M=%zu below 20 (2.2.7)", block_m);
		return not_applicable(r, QW_ERANGE);
	}
	nblocks = n / block_m;
	if (nblocks == 0) {
		set_note(r, "needs n >= M=%zu bits, have %zu", block_m, n);
		return not_applicable(r, QW_ERANGE);
	}
	/* 2.2.4: chi^2 = 4 M sum_i (pi_i - 1/2)^2, P = igamc(N/2, chi^2/2). */
	for (size_t i = 0; i < nblocks; i++) {
		size_t ones = qw_bitvec_popcount_range(bits, i * block_m, (i + 1) * block_m);
		double d = (double)ones / (double)block_m - 0.5;

		chi2 += d * d;
	}
	chi2 *= 4.0 * (double)block_m;
	r->p_value = qw_randtest_igamc((double)nblocks / 2.0, chi2 / 2.0);
	set_note(r, "n=%zu M=%zu N=%zu chi2=%.6f", n, block_m, nblocks, chi2);
	return verdict(r, alpha);
}

/* ---------------------------------------------------------------- 2.3 */

int qw_randtest_runs(const struct qw_bitvec *bits, double alpha, unsigned flags,
		     struct qw_randtest_result *r)
{
	size_t n = bits ? bits->nbits : 0, min = (flags & QW_RANDTEST_NO_MIN) ? 2 : 100;
	size_t v_obs = 1;
	double pi, tau, num, den;

	check_args(bits, alpha, r);
	init_result(r, "runs");
	if (n < min) {
		set_note(r, "needs n >= %zu bits, have %zu (2.3.7)", min, n);
		return not_applicable(r, QW_ERANGE);
	}
	pi = (double)qw_bitvec_popcount(bits) / (double)n;
	tau = 2.0 / sqrt((double)n);
	/* 2.3.4 (2): the frequency prerequisite; when it fails the runs test
	 * is not run and P-value = 0 (a failure, not "not applicable"). */
	if (fabs(pi - 0.5) >= tau) {
		r->p_value = 0.0;
		set_note(r, "frequency prerequisite failed: |pi-1/2|=%.6f >= tau=%.6f",
			 fabs(pi - 0.5), tau);
		return verdict(r, alpha);
	}
	/* V_n(obs) = 1 + number of k with eps_k != eps_{k+1}. */
	for (size_t i = 1; i < n; i++)
		v_obs += qw_bitvec_get(bits, i) != qw_bitvec_get(bits, i - 1);
	num = fabs((double)v_obs - 2.0 * (double)n * pi * (1.0 - pi));
	den = 2.0 * sqrt(2.0 * (double)n) * pi * (1.0 - pi);
	r->p_value = erfc(num / den);
	set_note(r, "n=%zu pi=%.6f V_obs=%zu", n, pi, v_obs);
	return verdict(r, alpha);
}

/* ---------------------------------------------------------------- 2.4 */

int qw_randtest_longest_run(const struct qw_bitvec *bits, double alpha, unsigned flags,
			    struct qw_randtest_result *r)
{
	/* 2.4.2 / 2.4.4: block size, classes and probabilities by n (the
	 * standard's 4-digit table values, which its examples use). */
	static const double pi8[] = { 0.2148, 0.3672, 0.2305, 0.1875 };
	static const double pi128[] = { 0.1174, 0.2430, 0.2493, 0.1752, 0.1027, 0.1124 };
	static const double pi10k[] = { 0.0882, 0.2092, 0.2483, 0.1933,
					0.1208, 0.0675, 0.0727 };
	size_t n = bits ? bits->nbits : 0, block_m, nblocks, v[7] = { 0 };
	const double *pi;
	unsigned k, vmin;
	double chi2 = 0;

	(void)flags; /* the table starts at n = 128; nothing to relax */
	check_args(bits, alpha, r);
	init_result(r, "longest_run");
	if (n < 128) {
		set_note(r, "needs n >= 128 bits, have %zu (2.4.2)", n);
		return not_applicable(r, QW_ERANGE);
	}
	if (n < 6272) {
		block_m = 8, k = 3, vmin = 1, pi = pi8;
	} else if (n < 750000) {
		block_m = 128, k = 5, vmin = 4, pi = pi128;
	} else {
		block_m = 10000, k = 6, vmin = 10, pi = pi10k;
	}
	nblocks = n / block_m;
	for (size_t b = 0; b < nblocks; b++) {
		unsigned run = 0, longest = 0, cls;

		for (size_t i = b * block_m; i < (b + 1) * block_m; i++) {
			if (qw_bitvec_get(bits, i)) {
				if (++run > longest)
					longest = run;
			} else {
				run = 0;
			}
		}
		cls = longest <= vmin ? 0 : longest - vmin;
		v[cls > k ? k : cls]++;
	}
	for (unsigned i = 0; i <= k; i++) {
		double e = (double)nblocks * pi[i], d = (double)v[i] - e;

		chi2 += d * d / e;
	}
	r->p_value = qw_randtest_igamc(k / 2.0, chi2 / 2.0);
	set_note(r, "n=%zu M=%zu N=%zu K=%u chi2=%.6f", n, block_m, nblocks, k, chi2);
	return verdict(r, alpha);
}

/* ---------------------------------------------------------------- 2.6 */

/* In-place radix-2 FFT of length len (a power of two); tw[j] =
 * exp(-2 pi i j / len) for j < len / 2; inverse uses conj(tw) (unscaled). */
static void fft_pow2(double complex *a, size_t len, const double complex *tw, int inverse)
{
	for (size_t i = 1, j = 0; i < len; i++) {
		size_t bit = len >> 1;

		for (; j & bit; bit >>= 1)
			j ^= bit;
		j ^= bit;
		if (i < j) {
			double complex t = a[i];
			a[i] = a[j];
			a[j] = t;
		}
	}
	for (size_t half = 1; half < len; half <<= 1) {
		size_t step = len / (2 * half);

		for (size_t s = 0; s < len; s += 2 * half) {
			for (size_t j = 0; j < half; j++) {
				double complex w = inverse ? conj(tw[j * step]) : tw[j * step];
				double complex u = a[s + j], v = a[s + j + half] * w;

				a[s + j] = u + v;
				a[s + j + half] = u - v;
			}
		}
	}
}

static double complex *twiddles(size_t len)
{
	double complex *tw = malloc((len / 2 + 1) * sizeof(*tw));

	if (!tw)
		return NULL;
	for (size_t j = 0; j < len / 2 + 1; j++) {
		double ang = -2.0 * PI * (double)j / (double)len;
		tw[j] = cos(ang) + I * sin(ang);
	}
	return tw;
}

/* Exact DFT of z[0..len) in place: X_k = sum_j z_j exp(-2 pi i jk / len),
 * for any len >= 1. Powers of two go straight to the FFT; any other length
 * through Bluestein's chirp z-transform (jk = (j^2 + k^2 - (k-j)^2) / 2),
 * a circular convolution of power-of-two length L >= 2 len - 1. */
static int dft_any(double complex *z, size_t len)
{
	double complex *a = NULL, *b = NULL, *w = NULL, *tw = NULL;
	size_t L = 1;
	int ret = QW_ENOMEM;

	if ((len & (len - 1)) == 0) {
		tw = twiddles(len);
		if (!tw)
			return QW_ENOMEM;
		fft_pow2(z, len, tw, 0);
		free(tw);
		return 0;
	}
	while (L < 2 * len - 1)
		L <<= 1;
	a = calloc(L, sizeof(*a));
	b = calloc(L, sizeof(*b));
	w = malloc(len * sizeof(*w));
	tw = twiddles(L);
	if (!a || !b || !w || !tw)
		goto out;
	for (size_t j = 0; j < len; j++) {
		/* j^2 mod 2 len keeps the chirp's angle exact for large j. */
		uint64_t q = ((uint64_t)j * j) % (2 * (uint64_t)len);
		double ang = -PI * (double)q / (double)len;

		w[j] = cos(ang) + I * sin(ang);
		a[j] = z[j] * w[j];
	}
	b[0] = 1.0;
	for (size_t j = 1; j < len; j++)
		b[j] = b[L - j] = conj(w[j]);
	fft_pow2(a, L, tw, 0);
	fft_pow2(b, L, tw, 0);
	for (size_t i = 0; i < L; i++)
		a[i] *= b[i];
	fft_pow2(a, L, tw, 1);
	for (size_t k = 0; k < len; k++)
		z[k] = w[k] * a[k] / (double)L;
	ret = 0;
out:
	qw_free_secret(a, a ? L * sizeof(*a) : 0);
	free(b);
	free(w);
	free(tw);
	return ret;
}

/* |X_k| for k < n / 2 of the DFT of the +-1 sequence x_j = 2 eps_j - 1.
 * For even n the real sequence is packed as n/2 complex values z_j =
 * x_2j + i x_2j+1 and split afterwards (the standard real-FFT identity),
 * halving time and memory. mod gets floor(n / 2) values. */
static int dft_moduli(const struct qw_bitvec *bits, double *mod)
{
	size_t n = bits->nbits, h = n / 2;
	double complex *z;
	int ret;

	if (n % 2 == 0) {
		z = malloc(h * sizeof(*z));
		if (!z)
			return QW_ENOMEM;
		for (size_t j = 0; j < h; j++)
			z[j] = (2.0 * qw_bitvec_get(bits, 2 * j) - 1.0) +
			       I * (2.0 * qw_bitvec_get(bits, 2 * j + 1) - 1.0);
		ret = dft_any(z, h);
		if (ret == 0) {
			for (size_t k = 0; k < h; k++) {
				double complex zk = z[k], zc = conj(z[k ? h - k : 0]);
				double complex even = 0.5 * (zk + zc);
				double complex odd = -0.5 * I * (zk - zc);
				double ang = -2.0 * PI * (double)k / (double)n;

				mod[k] = cabs(even + (cos(ang) + I * sin(ang)) * odd);
			}
		}
	} else {
		z = malloc(n * sizeof(*z));
		if (!z)
			return QW_ENOMEM;
		for (size_t j = 0; j < n; j++)
			z[j] = 2.0 * qw_bitvec_get(bits, j) - 1.0;
		ret = dft_any(z, n);
		if (ret == 0)
			for (size_t k = 0; k < h; k++)
				mod[k] = cabs(z[k]);
	}
	qw_free_secret(z, (n % 2 ? n : h) * sizeof(*z));
	return ret;
}

int qw_randtest_dft(const struct qw_bitvec *bits, double alpha, unsigned flags,
		    struct qw_randtest_result *r)
{
	size_t n = bits ? bits->nbits : 0, min = (flags & QW_RANDTEST_NO_MIN) ? 2 : 1000;
	size_t n1 = 0;
	double *mod, t, n0, d;
	int ret;

	check_args(bits, alpha, r);
	init_result(r, "dft");
	if (n < min) {
		set_note(r, "needs n >= %zu bits, have %zu (2.6.7)", min, n);
		return not_applicable(r, QW_ERANGE);
	}
	mod = malloc((n / 2) * sizeof(*mod));
	if (!mod)
		return not_applicable(r, QW_ENOMEM);
	ret = dft_moduli(bits, mod);
	if (ret) {
		qw_free_secret(mod, (n / 2) * sizeof(*mod));
		return not_applicable(r, ret);
	}
	/* 2.6.4 as corrected in Rev. 1a: T = sqrt(ln(1/0.05) n) is the 95 %
	 * peak height, N0 = 0.95 n / 2, d = (N1 - N0) / sqrt(n 0.95 0.05 / 4). */
	t = sqrt(log(1.0 / 0.05) * (double)n);
	for (size_t k = 0; k < n / 2; k++)
		n1 += mod[k] < t;
	qw_free_secret(mod, (n / 2) * sizeof(*mod));
	n0 = 0.95 * (double)n / 2.0;
	d = ((double)n1 - n0) / sqrt((double)n * 0.95 * 0.05 / 4.0);
	r->p_value = erfc(fabs(d) / sqrt(2.0));
	set_note(r, "n=%zu T=%.4f N0=%.1f N1=%zu d=%.6f", n, t, n0, n1, d);
	return verdict(r, alpha);
}

/* ---------------------------------------------------------------- 2.11,
 * 2.12: overlapping m-bit patterns with wrap-around */

/* counts[0 .. 2^m) of the n overlapping m-bit windows of the sequence
 * extended by its first m - 1 bits; the window's first bit is the most
 * significant bit of its index, so the (m-1)-bit prefix is index >> 1. */
static void count_patterns(const struct qw_bitvec *bits, unsigned m, uint32_t *counts)
{
	size_t n = bits->nbits;
	uint32_t mask = (uint32_t)((1ull << m) - 1), val = 0;

	memset(counts, 0, ((size_t)1 << m) * sizeof(*counts));
	if (m == 0) {
		counts[0] = (uint32_t)n;
		return;
	}
	for (unsigned i = 0; i + 1 < m; i++)
		val = (val << 1) | (uint32_t)qw_bitvec_get(bits, i % n);
	for (size_t i = 0; i < n; i++) {
		size_t j = i + m - 1;

		val = ((val << 1) | (uint32_t)qw_bitvec_get(bits, j < n ? j : j % n)) & mask;
		counts[val]++;
	}
}

/* counts for m - 1 bits from counts for m bits, in place. */
static void fold_counts(uint32_t *counts, unsigned m)
{
	for (size_t p = 0; p < ((size_t)1 << (m - 1)); p++)
		counts[p] = counts[2 * p] + counts[2 * p + 1];
}

/* 2.11.4 (3): psi^2_m = 2^m / n sum (v_i - n / 2^m)^2 (the centred form
 * of 2^m / n sum v_i^2 - n, better conditioned). */
static double psi2(const uint32_t *counts, unsigned m, size_t n)
{
	double e = (double)n / ldexp(1.0, (int)m), s = 0;

	for (size_t p = 0; p < ((size_t)1 << m); p++) {
		double d = (double)counts[p] - e;
		s += d * d;
	}
	return ldexp(1.0, (int)m) / (double)n * s;
}

/* phi^(m) = sum_i C_i ln C_i, C_i = v_i / n (2.12.4 (4)). */
static double phi(const uint32_t *counts, unsigned m, size_t n)
{
	double s = 0;

	for (size_t p = 0; p < ((size_t)1 << m); p++) {
		if (counts[p]) {
			double c = (double)counts[p] / (double)n;
			s += c * log(c);
		}
	}
	return s;
}

unsigned qw_randtest_default_serial_m(size_t n)
{
	unsigned l = floor_log2(n);

	if (l < 5)
		return 0; /* m = 2 needs 2 < floor(log2 n) - 2 */
	return l - 3 > 16 ? 16 : l - 3;
}

unsigned qw_randtest_default_apen_m(size_t n)
{
	unsigned l = floor_log2(n);

	if (l < 7)
		return 0; /* m = 1 needs 1 < floor(log2 n) - 5 */
	return l - 6 > 10 ? 10 : l - 6;
}

int qw_randtest_serial(const struct qw_bitvec *bits, unsigned m, double alpha,
		       unsigned flags, struct qw_randtest_result *r)
{
	size_t n = bits ? bits->nbits : 0;
	int strict = !(flags & QW_RANDTEST_NO_MIN);
	uint32_t *counts;
	double p[3], d1, d2;

	check_args(bits, alpha, r);
	init_result(r, "serial");
	if (m == 0) {
		m = qw_randtest_default_serial_m(n);
		if (m == 0) {
			set_note(r, "needs n >= 32 bits, have %zu (2.11.7)", n);
			return not_applicable(r, QW_ERANGE);
		}
	}
	if (m < 2 || m > MAX_PATTERN_BITS) {
		set_note(r, "block length m=%u outside 2..%d", m, MAX_PATTERN_BITS);
		return not_applicable(r, QW_EINVAL);
	}
	if (n == 0 || n > UINT32_MAX || (strict && m + 2 >= floor_log2(n))) {
		set_note(r, "m=%u needs m < floor(log2 n) - 2, have n=%zu (2.11.7)", m, n);
		return not_applicable(r, QW_ERANGE);
	}
	counts = malloc(((size_t)1 << m) * sizeof(*counts));
	if (!counts)
		return not_applicable(r, QW_ENOMEM);
	count_patterns(bits, m, counts);
	for (unsigned i = 0; i < 3; i++) {
		p[i] = psi2(counts, m - i, n);
		if (i < 2)
			fold_counts(counts, m - i);
	}
	free(counts);
	/* 2.11.4 (4)-(5): first and second differences of psi^2. */
	d1 = fmax(p[0] - p[1], 0.0);
	d2 = fmax(p[0] - 2.0 * p[1] + p[2], 0.0);
	r->p_value = qw_randtest_igamc(ldexp(1.0, (int)m - 2), d1 / 2.0);
	r->p_value2 = qw_randtest_igamc(ldexp(1.0, (int)m - 3), d2 / 2.0);
	set_note(r, "n=%zu m=%u dpsi2=%.6f d2psi2=%.6f", n, m, d1, d2);
	return verdict(r, alpha);
}

int qw_randtest_approx_entropy(const struct qw_bitvec *bits, unsigned m, double alpha,
			       unsigned flags, struct qw_randtest_result *r)
{
	size_t n = bits ? bits->nbits : 0;
	int strict = !(flags & QW_RANDTEST_NO_MIN);
	uint32_t *counts;
	double phi_m1, phi_m, apen, chi2;

	check_args(bits, alpha, r);
	init_result(r, "approximate_entropy");
	if (m == 0) {
		m = qw_randtest_default_apen_m(n);
		if (m == 0) {
			set_note(r, "needs n >= 128 bits, have %zu (2.12.7)", n);
			return not_applicable(r, QW_ERANGE);
		}
	}
	if (m < 1 || m + 1 > MAX_PATTERN_BITS) {
		set_note(r, "block length m=%u outside 1..%d", m, MAX_PATTERN_BITS - 1);
		return not_applicable(r, QW_EINVAL);
	}
	if (n == 0 || n > UINT32_MAX || (strict && m + 5 >= floor_log2(n))) {
		set_note(r, "m=%u needs m < floor(log2 n) - 5, have n=%zu (2.12.7)", m, n);
		return not_applicable(r, QW_ERANGE);
	}
	counts = malloc(((size_t)1 << (m + 1)) * sizeof(*counts));
	if (!counts)
		return not_applicable(r, QW_ENOMEM);
	count_patterns(bits, m + 1, counts);
	phi_m1 = phi(counts, m + 1, n);
	fold_counts(counts, m + 1);
	phi_m = phi(counts, m, n);
	free(counts);
	/* 2.12.4 (5)-(7). */
	apen = phi_m - phi_m1;
	chi2 = fmax(2.0 * (double)n * (log(2.0) - apen), 0.0);
	r->p_value = qw_randtest_igamc(ldexp(1.0, (int)m - 1), chi2 / 2.0);
	set_note(r, "n=%zu m=%u ApEn=%.6f chi2=%.6f", n, m, apen, chi2);
	return verdict(r, alpha);
}

/* ---------------------------------------------------------------- 2.13 */

/* 2.13.4 (4). The summation limits use C integer division (truncation
 * toward zero) on the integers n and z, as the standard's reference
 * implementation does; its worked examples were computed that way. */
static double cusum_p(long long n, long long z)
{
	double sn = sqrt((double)n), s1 = 0, s2 = 0;

	for (long long k = (-n / z + 1) / 4; k <= (n / z - 1) / 4; k++)
		s1 += qw_randtest_normal_cdf((4.0 * k + 1) * z / sn) -
		      qw_randtest_normal_cdf((4.0 * k - 1) * z / sn);
	for (long long k = (-n / z - 3) / 4; k <= (n / z - 1) / 4; k++)
		s2 += qw_randtest_normal_cdf((4.0 * k + 3) * z / sn) -
		      qw_randtest_normal_cdf((4.0 * k + 1) * z / sn);
	return 1.0 - s1 + s2;
}

int qw_randtest_cusum(const struct qw_bitvec *bits, double alpha, unsigned flags,
		      struct qw_randtest_result *r)
{
	size_t n = bits ? bits->nbits : 0, min = (flags & QW_RANDTEST_NO_MIN) ? 1 : 100;
	long long s = 0, smin = 0, smax = 0, zf = 0, zb;

	check_args(bits, alpha, r);
	init_result(r, "cumulative_sums");
	if (n < min) {
		set_note(r, "needs n >= %zu bits, have %zu (2.13.7)", min, n);
		return not_applicable(r, QW_ERANGE);
	}
	/* Forward: z = max_k |S_k|. Backward (mode 1) sums from the end:
	 * S'_k = S_n - S_{n-k}, so z' = max over j < n of |S_n - S_j| with
	 * S_0 = 0, i.e. the larger distance from S_n to min / max S_j. */
	for (size_t i = 0; i < n; i++) {
		if (s < smin)
			smin = s;
		if (s > smax)
			smax = s;
		s += qw_bitvec_get(bits, i) ? 1 : -1;
		if (llabs(s) > zf)
			zf = llabs(s);
	}
	zb = llabs(s - smin) > llabs(s - smax) ? llabs(s - smin) : llabs(s - smax);
	r->p_value = cusum_p((long long)n, zf);
	r->p_value2 = cusum_p((long long)n, zb);
	set_note(r, "n=%zu z_forward=%lld z_backward=%lld", n, zf, zb);
	return verdict(r, alpha);
}

/* ---------------------------------------------------------------- all */

int qw_randtest_run_all(const struct qw_bitvec *bits, double alpha,
			struct qw_randtest_result *out, size_t *n)
{
	int rets[QW_RANDTEST_COUNT];

	QW_REQUIRE(bits != NULL && out != NULL && n != NULL);
	QW_REQUIRE(alpha > 0 && alpha < 1);
	if (*n < QW_RANDTEST_COUNT)
		return QW_ERANGE;
	rets[0] = qw_randtest_frequency(bits, alpha, 0, &out[0]);
	rets[1] = qw_randtest_block_frequency(bits, 0, alpha, 0, &out[1]);
	rets[2] = qw_randtest_runs(bits, alpha, 0, &out[2]);
	rets[3] = qw_randtest_longest_run(bits, alpha, 0, &out[3]);
	rets[4] = qw_randtest_dft(bits, alpha, 0, &out[4]);
	rets[5] = qw_randtest_serial(bits, 0, alpha, 0, &out[5]);
	rets[6] = qw_randtest_approx_entropy(bits, 0, alpha, 0, &out[6]);
	rets[7] = qw_randtest_cusum(bits, alpha, 0, &out[7]);
	*n = QW_RANDTEST_COUNT;
	for (int i = 0; i < QW_RANDTEST_COUNT; i++)
		if (rets[i] == QW_ENOMEM)
			return QW_ENOMEM;
	return 0;
}
