/* PLKG quantization: turning channel estimates into raw key bits.
 *
 * Each end quantizes its own real-valued feature stream (n samples read at
 * a stride, e.g. one subcarrier's amplitude over a block of probes) into a
 * secret LEVEL per sample and a public KEEP flag (0 when the sample fell in
 * a guard band or was not selected). The ends exchange the keep flags (or
 * the kept indices) in the clear and keep the samples both kept;
 * qw_plkg_quant_pack then emits the Gray-coded levels of those samples as
 * bits. Thresholds are computed from the block itself (adaptive), so a
 * fixed gain offset between the ends does not bias the bits.
 *
 * Quantizers (sources in docs/plkg.md):
 *  - guard band, S. Mathur, W. Trappe, N. Mandayam, C. Ye, A. Reznik,
 *    "Radio-telepathy: extracting a secret key from an unauthenticated
 *    wireless channel", MobiCom 2008: thresholds mean +- alpha std, samples
 *    between them dropped, optionally only the centres of excursions of at
 *    least min_run consecutive samples kept;
 *  - multi-bit adaptive, S. Jana, S. N. Premnath, M. Clark, S. K. Kasera,
 *    N. Patwari, S. V. Krishnamurthy, "On the effectiveness of secret key
 *    extraction from wireless signal strength in real environments",
 *    MobiCom 2009: 2^bits equiprobable levels from the block's empirical
 *    quantiles, Gray coded, optional guard mass around each threshold;
 *  - decorrelated features: the CSI vector of each probe is projected on a
 *    KLT (or DCT) basis across subcarriers and only the modes carrying the
 *    energy are quantized, so correlated subcarriers do not inflate the key
 *    with predictable bits. */
#ifndef QWAVE_PLKG_QUANT_H
#define QWAVE_PLKG_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/bitvec.h"
#include "qwave/error.h"

#define QW_PLKG_MAX_BITS 8

/* Binary reflected Gray code of v, and its inverse. */
unsigned qw_plkg_gray(unsigned v);
unsigned qw_plkg_gray_inv(unsigned g);

/* Guard-band quantizer [Mathur08]. x[i * stride], i < n: level 1 above
 * mean + alpha std, 0 below mean - alpha std, keep 0 in between. With
 * min_run > 1 only the centre sample of each run of >= min_run consecutive
 * samples on the same side is kept (Alice's side of Mathur's protocol; Bob
 * uses min_run = 1 and keeps Alice's indices where he is outside the band).
 * level and keep have n entries. 0, or QW_EINVAL (n < 2, alpha < 0,
 * min_run 0, non-finite samples). */
QW_WUR int qw_plkg_quant_guard(const double *x, size_t n, size_t stride, double alpha,
			       unsigned min_run, uint16_t *level, uint8_t *keep);

/* Multi-bit adaptive quantizer [Jana09]: 2^bits equiprobable intervals
 * from the empirical quantiles of the n samples; a sample whose empirical
 * CDF value lies within guard / 2 of an inner threshold is not kept
 * (guard in [0, 1 / 2^bits)). bits in 1..QW_PLKG_MAX_BITS. Levels are
 * natural-order interval numbers (Gray coding happens in pack). 0,
 * QW_EINVAL or QW_ENOMEM. */
QW_WUR int qw_plkg_quant_multibit(const double *x, size_t n, size_t stride, unsigned bits,
				  double guard, uint16_t *level, uint8_t *keep);

/* Append to out the Gray-coded level (bits bits, most significant first)
 * of every sample i < n with keep_a[i] && keep_b[i] (keep_b may be NULL).
 * Returns 0, QW_EINVAL (bits out of range, or a level that does not fit)
 * or QW_ENOMEM; on failure out may hold part of the bits. */
QW_WUR int qw_plkg_quant_pack(const uint16_t *level, const uint8_t *keep_a,
			      const uint8_t *keep_b, size_t n, unsigned bits,
			      struct qw_bitvec *out);

/* ---- decorrelated features (KLT / DCT across subcarriers) --------------- */

struct qw_plkg_klt;

/* Basis from a Hermitian covariance (n x n, row major, e.g.
 * qw_plkg_freq_cov or a sample covariance): eigenvectors by decreasing
 * eigenvalue, keeping the fewest modes whose eigenvalues sum to at least
 * energy_frac of the trace (0 < energy_frac < 1; 1 keeps all n). 0,
 * QW_EINVAL, QW_ENOMEM. */
QW_WUR int qw_plkg_klt_new_cov(struct qw_plkg_klt **out, const double _Complex *cov,
			       unsigned n, double energy_frac);
/* Basis from the sample covariance of nprobes CSI vectors (csi is
 * nprobes x n, row major) after removing their mean (the LOS/static part,
 * which carries no secret). The basis is public (a second-order statistic,
 * not the realisation); one end computes it and sends it. */
QW_WUR int qw_plkg_klt_new_samples(struct qw_plkg_klt **out, const double _Complex *csi,
				   size_t nprobes, unsigned n, double energy_frac);
/* Orthonormal DCT-II basis truncated to the n_modes lowest frequencies
 * (data independent: nothing to exchange). */
QW_WUR int qw_plkg_klt_new_dct(struct qw_plkg_klt **out, unsigned n, unsigned n_modes);
/* NULL accepted. */
void qw_plkg_klt_free(struct qw_plkg_klt *k);

unsigned qw_plkg_klt_modes(const struct qw_plkg_klt *k);
unsigned qw_plkg_klt_dim(const struct qw_plkg_klt *k);
/* All n eigenvalues, decreasing (zeros for a DCT basis). */
const double *qw_plkg_klt_eigenvalues(const struct qw_plkg_klt *k);
/* Project one CSI vector (n entries): feat[2m] and feat[2m + 1] are the real
 * and imaginary parts of u_m^H csi for each kept mode m. */
void qw_plkg_klt_apply(const struct qw_plkg_klt *k, const double _Complex *csi, double *feat);

/* Bits per real feature for a pair of jointly Gaussian features (Alice's
 * and Bob's) with correlation rho (e.g. rho_tdd lambda / (lambda + sigma^2)
 * for a KLT mode of power lambda under LS noise sigma^2): the conditional
 * spread sqrt(1 - rho^2) of one given the other is compared with the width
 * of 2^b equiprobable Gaussian levels, b = floor(log2(0.3 / sqrt(1 - rho^2)))
 * clamped to [0, max_bits] (about one level disagreement in ten samples). */
unsigned qw_plkg_bits_for_rho(double rho, unsigned max_bits);

#endif
