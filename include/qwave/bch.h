/* Binary BCH codes and a one-way BCH secure sketch for information
 * reconciliation on small devices (wireless PLKG terminals).
 *
 * A narrow-sense primitive binary BCH code of length n = 2^m - 1 with
 * designed distance 2t + 1 has the roots alpha^1 .. alpha^2t, alpha a
 * primitive element of GF(2^m) (R. C. Bose, D. K. Ray-Chaudhuri 1960;
 * A. Hocquenghem 1959). A word r (bit i = coefficient of x^i) has the
 * syndromes S_j = r(alpha^j); in characteristic 2, S_2j = S_j^2, so the t
 * odd syndromes S_1, S_3, .., S_2t-1 (m bits each) determine all 2t.
 * Decoding: the error-locator polynomial from the 2t syndromes by the
 * Berlekamp-Massey algorithm (J. L. Massey, "Shift-register synthesis and
 * BCH decoding", IEEE Trans. Inf. Theory 15(1), 1969), its roots by Chien
 * search; a locator of degree > t, or one whose roots are not all distinct
 * positions inside the (possibly shortened) word, is a detected failure.
 *
 * Secure sketch (Y. Dodis, L. Reyzin, A. Smith, "Fuzzy extractors",
 * EUROCRYPT 2004, syndrome construction): Alice sends the t odd syndromes
 * of each segment of her key (at most n bits, shorter segments are
 * shortened codewords: the missing high positions are public zeros); Bob
 * adds his own syndromes, which gives the syndromes of the difference
 * pattern, decodes it and flips those bits. The sketch discloses m t bits
 * per segment (counted in full, also for segments that fail). */
#ifndef QWAVE_BCH_H
#define QWAVE_BCH_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/bitvec.h"
#include "qwave/distill.h"
#include "qwave/error.h"

#define QW_BCH_MIN_M 3
#define QW_BCH_MAX_M 15
/* Message types on a struct qw_distill_chan used by the BCH stage. */
#define QW_BCH_CHAN_SYNDROME 0x42430001u /* Alice -> Bob */
#define QW_BCH_CHAN_RESULT 0x42430002u   /* Bob -> Alice */

struct qw_bch;

/* Code of length 2^m - 1 correcting t errors (QW_BCH_MIN_M <= m <=
 * QW_BCH_MAX_M, t >= 1, 2t < 2^m - 1, and the generator polynomial must
 * leave at least one data bit). Returns 0, QW_EINVAL or QW_ENOMEM; *out is
 * NULL on failure. */
QW_WUR int qw_bch_new(struct qw_bch **out, unsigned m, unsigned t);
/* NULL accepted. */
void qw_bch_free(struct qw_bch *c);

unsigned qw_bch_m(const struct qw_bch *c);
unsigned qw_bch_t(const struct qw_bch *c);
/* Code length n = 2^m - 1. */
size_t qw_bch_n(const struct qw_bch *c);
/* Degree of the generator polynomial (parity bits, <= m t); data bits
 * k = n - qw_bch_parity_bits(). */
size_t qw_bch_parity_bits(const struct qw_bch *c);

/* Systematic encoding: data (k bits) -> cw (resized to n bits): positions
 * 0 .. n-k-1 hold the parity (remainder of x^(n-k) d(x) mod g(x)),
 * positions n-k .. n-1 the data. 0, QW_EINVAL (wrong data length) or
 * QW_ENOMEM. */
QW_WUR int qw_bch_encode(const struct qw_bch *c, const struct qw_bitvec *data,
			 struct qw_bitvec *cw);

/* The t odd syndromes S_1, S_3, .., S_2t-1 of bits [off, off + len) of v
 * read as a word of length len <= n (bit off + i = coefficient of x^i), to
 * s[0 .. t-1]. */
void qw_bch_syndromes(const struct qw_bch *c, const struct qw_bitvec *v, size_t off, size_t len,
		      uint16_t *s);

/* Correct bits [off, off + len) of v given the odd syndromes s[0 .. t-1] of
 * the ERROR pattern (the XOR of the sender's and receiver's syndromes).
 * Returns the number of bits flipped (0..t), or QW_ERANGE when the pattern
 * is not decodable (more than t errors detected; v is then unchanged). A
 * pattern of more than t errors may also be miscorrected without
 * detection: the verification hash catches that. */
QW_WUR int qw_bch_correct(const struct qw_bch *c, struct qw_bitvec *v, size_t off, size_t len,
			  const uint16_t *s);

/* Decode a received (possibly shortened) codeword in place: bits [0, len)
 * of cw, len <= n. Returns the number of corrected bits or QW_ERANGE
 * (detected failure, cw unchanged). */
QW_WUR int qw_bch_decode(const struct qw_bch *c, struct qw_bitvec *cw, size_t len);

/* Smallest t such that a segment of len bits with independent bit errors of
 * probability p has more than t errors with probability <= fail (exact
 * binomial tail); 0 when even t = len does not reach it. */
unsigned qw_bch_t_for(size_t len, double p, double fail);

/* The sketch plan for an nbits key at error rate p: the field degree m in
 * [m_min, m_max] and t minimising the total disclosure segments * m * t,
 * with every segment of at most 2^m - 1 bits failing with probability <=
 * fail. 0, or QW_ERANGE when no m in the range fits (t would not be below
 * the segment length / m). */
QW_WUR int qw_bch_plan(size_t nbits, double p, double fail, unsigned m_min, unsigned m_max,
		       unsigned *m, unsigned *t, uint32_t *segments);
/* Span of segment i of segments over nbits bits (balanced lengths). */
void qw_bch_segment_span(size_t nbits, uint32_t segments, uint32_t i, size_t *off, size_t *len);

/* Distillation stage "bch": params is a const struct qw_bch_stage_params *
 * (NULL = defaults). Accepts RAW or SIFTED blocks. Alice plans from the
 * block's qber_estimate, sends (m, t, segments) and every segment's
 * syndromes in one message; Bob corrects each segment and replies with the
 * bitmap of segments that failed (detected). With keep_partial both sides
 * then remove the failed segments' bits from their keys (DROP "BCH decoding
 * failed" when none is left); without, any failed segment drops the block.
 * Both add segments * m * t to ec_parity_bits and
 * disclosed_bits; one round trip; qber_observed = corrected bits / bits
 * of decoded segments; state CORRECTED. Channel or protocol failures
 * return ERROR. */
struct qw_bch_stage_params {
	double fail_prob;   /* per-segment failure target (0 = 1e-3) */
	unsigned m_min;     /* field degrees tried (0 = 6 .. 13) */
	unsigned m_max;
	int keep_partial;   /* remove failed segments (1) or drop the block (0) */
};
extern const struct qw_stage qw_bch_stage;

#endif
