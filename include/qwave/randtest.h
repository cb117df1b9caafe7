/* Randomness report for generated keys: the NIST SP 800-22 Rev. 1a
 * statistical tests that suit sequences of a few thousand to a few million
 * bits (wireless PLKG keys, QKD keys, QRNG output).
 *
 * Implemented (SP 800-22 section numbers): 2.1 frequency (monobit),
 * 2.2 frequency within a block, 2.3 runs, 2.4 longest run of ones in a
 * block, 2.6 discrete Fourier transform (spectral, with the 2010 corrected
 * threshold and variance), 2.11 serial, 2.12 approximate entropy,
 * 2.13 cumulative sums (forward and backward). Formulas, parameters and
 * minimum lengths: docs/randtest.md.
 *
 * Every test fills a struct qw_randtest_result. An input shorter than the
 * test's minimum (SP 800-22 2.x.7 "input size recommendation") is reported
 * as not applicable (applicable = 0, the reason in note), never as a pass.
 * Bit i of the sequence is qw_bitvec_get(bits, i) (epsilon_{i+1} in the
 * standard's 1-based notation). The library only reads the bits; the report
 * holds statistics, never key bits. */
#ifndef QWAVE_RANDTEST_H
#define QWAVE_RANDTEST_H

#include <stddef.h>

#include "qwave/bitvec.h"
#include "qwave/error.h"

/* Number of results qw_randtest_run_all() produces. */
#define QW_RANDTEST_COUNT 8
/* Significance level of SP 800-22 1.1.5 when none is chosen. */
#define QW_RANDTEST_ALPHA_DEFAULT 0.01

/* Flag for the individual tests: skip the recommended minimum lengths and
 * parameter bounds (SP 800-22 2.x.7) and keep only what the computation
 * itself needs. For reproducing the standard's short worked examples
 * (n = 10); never for a verdict on a key. */
#define QW_RANDTEST_NO_MIN 1u

struct qw_randtest_result {
	const char *name;  /* static: "frequency", "block_frequency", ... */
	int applicable;    /* 0: input too short / parameter out of range */
	double p_value;    /* NAN when not applicable */
	double p_value2;   /* serial: P-value2; cumulative_sums: backward
			    * (p_value is forward); NAN for the other tests */
	int passed;        /* applicable and every P-value >= alpha */
	char note[96];     /* parameters and statistic, or why not applicable */
};

/* Each test: bits must be non-NULL, 0 < alpha < 1, r non-NULL. Returns 0
 * (r filled, applicable), QW_ERANGE (r filled with applicable = 0 and the
 * reason in r->note: the input is too short or a parameter is outside the
 * standard's recommendation), QW_EINVAL (a parameter no sequence can
 * satisfy, e.g. block size 0; r filled as not applicable) or QW_ENOMEM. */

/* 2.1 Frequency (monobit). n >= 100. */
QW_WUR int qw_randtest_frequency(const struct qw_bitvec *bits, double alpha,
				 unsigned flags, struct qw_randtest_result *r);
/* 2.2 Frequency within a block of block_m bits (0: the default,
 * qw_randtest_default_block_m()). n >= 100, block_m >= 20,
 * block_m > n / 100. */
QW_WUR int qw_randtest_block_frequency(const struct qw_bitvec *bits, size_t block_m,
				       double alpha, unsigned flags,
				       struct qw_randtest_result *r);
/* 2.3 Runs. n >= 100. When the frequency prerequisite fails
 * (|pi - 1/2| >= 2 / sqrt(n)) the test is applicable, P-value 0, failed. */
QW_WUR int qw_randtest_runs(const struct qw_bitvec *bits, double alpha, unsigned flags,
			    struct qw_randtest_result *r);
/* 2.4 Longest run of ones in a block; the block size follows the
 * standard's table: M = 8 (n >= 128), 128 (n >= 6272), 10^4 (n >= 750000). */
QW_WUR int qw_randtest_longest_run(const struct qw_bitvec *bits, double alpha,
				   unsigned flags, struct qw_randtest_result *r);
/* 2.6 Discrete Fourier transform (spectral), an exact DFT of length n
 * (any n; Bluestein's algorithm when n is not a power of two). n >= 1000.
 * Needs up to about 100 * n bytes of scratch memory. */
QW_WUR int qw_randtest_dft(const struct qw_bitvec *bits, double alpha, unsigned flags,
			   struct qw_randtest_result *r);
/* 2.11 Serial with block length m (0: qw_randtest_default_serial_m()):
 * p_value = P-value1, p_value2 = P-value2. 2 <= m < floor(log2 n) - 2,
 * m <= 20. */
QW_WUR int qw_randtest_serial(const struct qw_bitvec *bits, unsigned m, double alpha,
			      unsigned flags, struct qw_randtest_result *r);
/* 2.12 Approximate entropy with block length m (0:
 * qw_randtest_default_apen_m()). 1 <= m < floor(log2 n) - 5, m <= 19. */
QW_WUR int qw_randtest_approx_entropy(const struct qw_bitvec *bits, unsigned m,
				      double alpha, unsigned flags,
				      struct qw_randtest_result *r);
/* 2.13 Cumulative sums: p_value = forward (mode 0), p_value2 = backward
 * (mode 1). n >= 100. */
QW_WUR int qw_randtest_cusum(const struct qw_bitvec *bits, double alpha, unsigned flags,
			     struct qw_randtest_result *r);

/* Default parameters for a sequence of n bits (SP 800-22 2.2.7, 2.11.7,
 * 2.12.7): block_m = max(20, floor(n / 100) + 1) (at most 99 blocks);
 * serial m = min(16, floor(log2 n) - 3); approximate entropy
 * m = min(10, floor(log2 n) - 6). 0 when n is too short for any. */
size_t qw_randtest_default_block_m(size_t n);
unsigned qw_randtest_default_serial_m(size_t n);
unsigned qw_randtest_default_apen_m(size_t n);

/* Run all eight tests with the default parameters, in the order above.
 * *n is the capacity of out on entry (>= QW_RANDTEST_COUNT) and the number
 * of results written on return. Tests too long for the input are reported
 * as not applicable in their result, not as an error. Returns 0, QW_ERANGE
 * if the capacity is too small (nothing written), or QW_ENOMEM. */
QW_WUR int qw_randtest_run_all(const struct qw_bitvec *bits, double alpha,
			       struct qw_randtest_result *out, size_t *n);

/* Special functions, exposed for the tests and for other statistics code. */
/* Regularized upper incomplete gamma Q(a, x) = Gamma(a, x) / Gamma(a)
 * (SP 800-22 5.5.3 "igamc"); a > 0, x >= 0; NAN otherwise. */
double qw_randtest_igamc(double a, double x);
/* Standard normal cumulative distribution function Phi(x). */
double qw_randtest_normal_cdf(double x);

#endif
