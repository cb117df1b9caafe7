/* Entropy sources with NIST SP 800-90B health tests and conditioning.
 *
 * An entropy source delivers CONDITIONED, full-entropy bytes. Two kinds:
 *
 *  - the OS source (getrandom(2)): the kernel's generator is already a
 *    conditioned, health-tested source; bytes are passed through.
 *  - a raw-sample source (a QRNG device, a file of raw samples, or a
 *    caller-supplied read function) with a claimed min-entropy H bits per
 *    sample. Every raw sample goes through the SP 800-90B section 4.4
 *    continuous health tests, and the first 1024 samples additionally form
 *    the start-up test (section 4.3, item 3; those samples are discarded):
 *
 *      Repetition Count Test (4.4.1): fail when one value repeats C times
 *        in a row, C = 1 + ceil(-log2(alpha) / H), alpha = 2^-20.
 *      Adaptive Proportion Test (4.4.2): in each window of W samples
 *        (W = 512 for binary, 1024 otherwise) count the occurrences of the
 *        window's first sample; fail when the count reaches
 *        C = 1 + CRITBINOM(W, 2^-H, 1 - alpha), i.e. one plus the smallest
 *        k with P[Binomial(W, 2^-H) <= k] >= 1 - alpha.
 *
 *    A failure is permanent: every later read returns QW_EHEALTH and
 *    qw_entropy_failure_reason() says which test failed and why. Raw samples
 *    are conditioned with SHA-256, a vetted conditioning function (SP
 *    800-90B section 3.1.5.1.1); each 32-byte output block hashes
 *    n_in = ceil((256 + 64) / H) samples so that n_in * H >= n_out + 64,
 *    the condition for full-entropy output (SP 800-90B 3.1.5.1.2, SP 800-90C
 *    section 2.3 "full entropy").
 *
 * Raw sample format: one sample per byte, in the low bits_per_sample bits
 * (higher bits are masked off); the convention of NIST's SP 800-90B entropy
 * assessment tool, so the same file can be assessed offline with it.
 *
 * A struct qw_entropy is not thread-safe. */
#ifndef QWAVE_ENTROPY_H
#define QWAVE_ENTROPY_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"

struct qw_entropy;

/* -log2(alpha): the false-positive rate of each health test per sample. */
#define QW_ENTROPY_ALPHA_LOG2 20
#define QW_ENTROPY_STARTUP_SAMPLES 1024

/* Raw-sample reader for qw_entropy_new_fn: fill buf with exactly n raw
 * samples (one per byte). Return 0, or a negative QW_E* code (e.g. QW_EIO). */
typedef int (*qw_entropy_read_fn)(void *arg, uint8_t *buf, size_t n);

/* The OS source. NULL on allocation failure. */
struct qw_entropy *qw_entropy_new_os(void);
/* Raw samples read from path (a device such as /dev/hwrng or a file).
 * bits_per_sample in 1..8, 0 < h_per_sample <= bits_per_sample (the
 * assessed min-entropy per sample; claim it conservatively). Returns NULL
 * and sets *err (may be NULL): QW_EINVAL for bad parameters, QW_EIO when
 * the path cannot be opened, QW_ENOMEM. Reading past the end of a file
 * returns QW_EIO. */
struct qw_entropy *qw_entropy_new_file(const char *path,
				       unsigned bits_per_sample,
				       double h_per_sample, int *err);
/* Raw samples from a caller function (arg is passed through, not owned). */
struct qw_entropy *qw_entropy_new_fn(qw_entropy_read_fn fn, void *arg,
				     unsigned bits_per_sample,
				     double h_per_sample, int *err);
/* Closes the file and wipes buffered samples; NULL accepted. */
void qw_entropy_free(struct qw_entropy *src);

/* Fill out with n conditioned full-entropy bytes. Runs the start-up test
 * first if it has not run yet. 0; QW_EHEALTH (out wiped) when a health test
 * fails now or failed before; QW_EIO from the device/file (the source is
 * then not marked failed: a retry may succeed). */
QW_WUR int qw_entropy_read(struct qw_entropy *src, void *out, size_t n);
/* Run the start-up test now (idempotent). 0, QW_EHEALTH or QW_EIO. */
QW_WUR int qw_entropy_startup(struct qw_entropy *src);
/* NULL while healthy, else a sentence naming the failed test. */
const char *qw_entropy_failure_reason(const struct qw_entropy *src);
/* 1 for the OS source. */
int qw_entropy_is_os(const struct qw_entropy *src);

/* Cutoffs, exposed for tests and for the CLI to display (h in (0, 8]):
 * the Repetition Count Test cutoff C (SP 800-90B 4.4.1), the Adaptive
 * Proportion Test window W for a sample width (4.4.2), and its cutoff C
 * for window W. */
unsigned qw_entropy_rct_cutoff(double h);
unsigned qw_entropy_apt_window(unsigned bits_per_sample);
unsigned qw_entropy_apt_cutoff(unsigned window, double h);

struct qw_entropy_stats {
	uint64_t samples;     /* raw samples tested */
	uint64_t out_bytes;   /* conditioned bytes delivered */
	unsigned rct_cutoff, apt_window, apt_cutoff;
	unsigned max_run;     /* longest repetition seen */
	unsigned max_apt;     /* highest window count seen */
};
/* Statistics of a raw-sample source (zeros for the OS source). */
void qw_entropy_get_stats(const struct qw_entropy *src,
			  struct qw_entropy_stats *st);

#endif
