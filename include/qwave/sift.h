/* Sifting of a decoy-state BB84 batch, and its three public messages.
 *
 *   1. BASES  Bob -> Alice: the pulse range, Bob's detection indices and his
 *             measurement bases.
 *   2. MATCH  Alice -> Bob: per detection, whether the bases agree, the
 *             intensity class Alice used (announced only now, after Bob's
 *             detections are fixed), and whether the bit is disclosed; the
 *             pulses she sent per class in the range; her disclosed bits.
 *   3. BITS   Bob -> Alice: Bob's bits at the same disclosed positions, so
 *             both ends compute the same error counts.
 *
 * Two protocols (struct qw_sift_params.key_all_classes):
 *
 *  - [LCWXZ] (default; C. C. W. Lim et al., PRA 89, 022307 (2014), Sec. II):
 *    kept as key are the sifted (matching-basis) key-basis bits of EVERY
 *    intensity class; disclosed are all sifted bits of the test basis (X in
 *    Z-key mode), of every class: their per-class error counts bound the
 *    phase error. Key-basis errors are never sampled (pe_fraction 0): error
 *    correction and verification reveal them, and the secret length
 *    subtracts what they disclose.
 *  - signal-only (key_all_classes = 0, the [MQZL] asymptotic layout): kept
 *    are the signal class's key-basis bits; every sifted decoy and vacuum
 *    bit is disclosed (their error rates feed the [MQZL] bounds).
 *
 * In both, a random sample of the key-basis candidates (fraction
 * pe_fraction, chosen by Alice) can be disclosed for a direct QBER
 * estimate. Bits of mismatched bases are discarded unseen.
 *
 * All three messages are authenticated by the link's channel; the parsers
 * here still treat them as hostile: every length, count and flag is
 * checked, and a malformed message gives QW_EPARSE. */
#ifndef QWAVE_SIFT_H
#define QWAVE_SIFT_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/bitvec.h"
#include "qwave/distill.h"
#include "qwave/error.h"
#include "qwave/optics.h"

struct qw_rng;

/* Message type numbers for struct qw_distill_chan. */
#define QW_SIFT_MSG_BASES 0x53494601u /* "SIF" 1 */
#define QW_SIFT_MSG_MATCH 0x53494602u
#define QW_SIFT_MSG_BITS 0x53494603u

struct qw_sift_params {
	int key_both_bases;  /* 0: key from Z only, X disclosed; 1: both bases */
	double pe_fraction;  /* key-basis candidates sampled for the QBER, [0, 1) */
	double qber_abort;   /* stage only: drop a block whose estimate exceeds this (0: never) */
	int key_all_classes; /* 1: key from every intensity class ([LCWXZ]); 0: signal only */
};

/* [LCWXZ] layout: Z key from every class, X test basis, no QBER sample, no
 * abort threshold. (Before key_all_classes existed the default was the
 * signal-only key with a 10% sample: set key_all_classes = 0 and
 * pe_fraction = 0.1 for that.) */
void qw_sift_params_default(struct qw_sift_params *p);

/* ---- messages ----------------------------------------------------------- */

/* Each struct owns its arrays (qw_sift_*_clear frees them and zeroes the
 * struct; a zeroed struct is a valid empty message). Encoders return a
 * malloc()ed buffer in *out (caller frees) and 0, QW_ENOMEM, or QW_ERANGE
 * when a count does not fit the wire format. Decoders fill a zeroed or
 * cleared struct and return 0, QW_EPARSE (malformed: wrong version/kind,
 * truncation, trailing bytes, indices not strictly increasing or outside the
 * range, inconsistent counts or flags, non-zero padding) or QW_ENOMEM; on
 * failure the struct is left cleared. */

struct qw_sift_bases {
	uint64_t first_pulse, end_pulse; /* the batch's pulse range */
	size_t n;
	uint64_t *index;                 /* strictly increasing, in [first, end) */
	uint8_t *basis;                  /* enum qw_basis */
};

#define QW_SIFT_F_MATCH 0x1u     /* Alice's basis equals Bob's */
#define QW_SIFT_F_CLASS_SHIFT 1  /* bits 1-2: enum qw_intensity_class */
#define QW_SIFT_F_CLASS_MASK 0x6u
#define QW_SIFT_F_DISCLOSE 0x8u  /* sifted bit disclosed (only with MATCH) */

struct qw_sift_match {
	uint64_t first_pulse, end_pulse;
	uint64_t sent[QW_OPTICS_NCLASS]; /* pulses Alice sent per class; sum = end - first */
	size_t n;                        /* = n of the BASES message answered */
	uint8_t *flags;                  /* QW_SIFT_F_* per detection */
	size_t ndisc;                    /* number of DISCLOSE flags */
	uint8_t *bits;                   /* Alice's disclosed bits, in detection order */
};

struct qw_sift_bits {
	size_t ndisc;
	uint8_t *bits;                   /* Bob's bits at the disclosed positions */
};

QW_WUR int qw_sift_bases_encode(const struct qw_sift_bases *m, uint8_t **out, size_t *len);
QW_WUR int qw_sift_bases_decode(struct qw_sift_bases *m, const uint8_t *in, size_t len);
void qw_sift_bases_clear(struct qw_sift_bases *m);

QW_WUR int qw_sift_match_encode(const struct qw_sift_match *m, uint8_t **out, size_t *len);
QW_WUR int qw_sift_match_decode(struct qw_sift_match *m, const uint8_t *in, size_t len);
void qw_sift_match_clear(struct qw_sift_match *m);

QW_WUR int qw_sift_bits_encode(const struct qw_sift_bits *m, uint8_t **out, size_t *len);
QW_WUR int qw_sift_bits_decode(struct qw_sift_bits *m, const uint8_t *in, size_t len);
void qw_sift_bits_clear(struct qw_sift_bits *m);

/* ---- the protocol ------------------------------------------------------- */

/* What a batch showed, identical at both ends after step 4. Index [k][b]:
 * intensity class k, basis b (enum qw_basis). */
struct qw_sift_stats {
	uint64_t first_pulse, end_pulse;
	uint64_t sent[QW_OPTICS_NCLASS];       /* pulses sent (Alice's announcement) */
	uint64_t detected[QW_OPTICS_NCLASS];   /* Bob's detections, any bases */
	uint64_t sifted[QW_OPTICS_NCLASS][2];  /* bases agreed */
	uint64_t disclosed[QW_OPTICS_NCLASS][2]; /* sifted bits compared in public */
	uint64_t errors[QW_OPTICS_NCLASS][2];  /* disagreements among the disclosed */
	uint64_t key_bits;                     /* sifted bits kept as key */
};

struct qw_sift_result {
	struct qw_sift_stats st;
	struct qw_bitvec *key;  /* owned; the kept bits in pulse order */
	/* QBER estimate of the key: errors / disclosed over the key-basis
	 * sample (of the classes that make key); if the sample is empty, over
	 * every disclosed bit of those classes (with key_all_classes: the
	 * whole test basis, whose classes mix in the key's proportions since
	 * the basis choice is independent of the class); if none, 1/2
	 * (nothing known: assume the worst). */
	double qber_estimate;
};

/* Frees the key (wiped) and zeroes res; NULL accepted. */
void qw_sift_result_clear(struct qw_sift_result *res);

/* Step 1 (Bob): message BASES for his whole detection record. 0 or
 * QW_ENOMEM. */
QW_WUR int qw_sift_bob_bases(const struct qw_detections *bob, struct qw_sift_bases *out);

/* Step 2 (Alice): answer BASES with MATCH from her record of the same pulse
 * range; rng draws the parameter-estimation sample. 0, QW_EPROTO (other
 * range, or an index Alice has no record of), QW_ENOMEM. */
QW_WUR int qw_sift_alice_match(const struct qw_sift_params *p, struct qw_rng *rng,
			       const struct qw_detections *alice,
			       const struct qw_sift_bases *in, struct qw_sift_match *out);

/* Step 3 (Bob): from MATCH, Bob's key and statistics (res, which must be
 * zeroed or cleared) and the BITS reply. 0, QW_EPROTO (MATCH does not fit
 * Bob's record), QW_ENOMEM. */
QW_WUR int qw_sift_bob_finish(const struct qw_sift_params *p, const struct qw_detections *bob,
			      const struct qw_sift_match *m, struct qw_sift_bits *reply,
			      struct qw_sift_result *res);

/* Step 4 (Alice): from her MATCH and Bob's BITS, Alice's key and the same
 * statistics. 0, QW_EPROTO, QW_ENOMEM. */
QW_WUR int qw_sift_alice_finish(const struct qw_sift_params *p,
				const struct qw_detections *alice,
				const struct qw_sift_bases *b, const struct qw_sift_match *m,
				const struct qw_sift_bits *bits, struct qw_sift_result *res);

/* ---- distillation stage: RAW -> SIFTED ---------------------------------- */

struct qw_sift_stage_params {
	struct qw_sift_params sift;
	struct qw_rng *rng;  /* Alice's sample draws (unused by Bob) */
	void *ctx;
	/* The detection record of block id for this end; ownership passes to
	 * the stage, which frees it. NULL: nothing to sift (block dropped). */
	struct qw_detections *(*fetch)(void *ctx, uint64_t block_id);
	/* Optional: the block's statistics, for the estimation stage. */
	void (*stats)(void *ctx, uint64_t block_id, const struct qw_sift_stats *st);
};

/* init takes a const struct qw_sift_stage_params * (copied). process
 * expects a RAW block without key; it runs the exchange over chan for the
 * block's role, then sets key, qber_estimate and state SIFTED and forwards.
 * It drops the block when fetch gives nothing, no key bit survives, or the
 * estimate exceeds qber_abort; a channel or protocol failure is ERROR. */
extern const struct qw_stage qw_sift_stage;

#endif
