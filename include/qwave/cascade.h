/* Cascade information reconciliation (Brassard-Salvail 1993) with the
 * block-size schedules studied by Martinez-Mateo, Pacher, Peev, Ciurana and
 * Martin, "Demystifying the information reconciliation protocol Cascade",
 * QIC 15 (2015), arXiv:1407.3257.
 *
 * Cascade is interactive: Bob (the corrector) asks for parities of blocks of
 * Alice's key, compares them with his own and bisects blocks whose parities
 * differ. Here the two parties only exchange messages, batched per round:
 * bob_next() produces one message carrying every parity query of a round,
 * Alice answers it with one message (a bitmap of parities) and
 * bob_consume() reads it. Latency therefore costs round trips, not one
 * message per parity. Block layouts derive from a public seed chosen by Bob
 * and carried in his first message, so Alice needs nothing but her key.
 *
 * Every parity Alice sends is one leaked bit; both sides count them, and
 * Bob's final message carries his count so that Alice can check it.
 * docs/cascade.md describes the variants, schedules and message format. */
#ifndef QWAVE_CASCADE_H
#define QWAVE_CASCADE_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/bitvec.h"
#include "qwave/distill.h"
#include "qwave/error.h"

#define QW_CASCADE_MAX_PASSES 64
/* At most this many passes may be other than BICONF halves (each needs a
 * permutation of the key); schedules and HELLOs with more are refused. */
#define QW_CASCADE_MAX_BLOCK_PASSES 8
/* Largest key handled (block indices and positions travel as 32 bits). */
#define QW_CASCADE_MAX_BITS ((size_t)1 << 31)
/* Message types used on a struct qw_distill_chan by the Cascade stage. */
#define QW_CASCADE_CHAN_QUERY 0x43510001u /* Bob -> Alice */
#define QW_CASCADE_CHAN_ANSWER 0x43510002u /* Alice -> Bob */

enum qw_cascade_variant {
	/* Brassard-Salvail: k1 = ceil(0.73/Q), k_i = 2 k_{i-1}, 4 passes. */
	QW_CASCADE_ORIGINAL,
	/* Yan et al. (paper's "Cascade opt. (2)"): k1 = ceil(0.8/Q),
	 * k2 = 5 k1, then n/2 for passes 3..10. */
	QW_CASCADE_YAN,
	/* The paper's "Cascade opt. (8)": a = log2(1/Q) - 0.5,
	 * k1 = 2^ceil(a), k2 = 2^ceil((a+12)/2), k3 = 4096, then n/2 (BICONF
	 * halves) to 14 passes. */
	QW_CASCADE_OPTION8,
	/* qwave's "Cascade with BICONF" (docs/cascade.md): k1 = the largest
	 * power of two <= 1/Q, k2 as opt. (8), then BICONF halves until 24 consecutive ones find no error (at
	 * most QW_CASCADE_MAX_PASSES passes in all); every open bisection is
	 * advanced each round (QW_CASCADE_FEWEST_ROUNDS). */
	QW_CASCADE_OPTIMIZED,
	/* qwave's throughput schedule (docs/cascade.md): Brassard-Salvail's
	 * k1 ~ 0.73/Q rounded to the nearest power of two, k2 = 2 k1,
	 * k3 = 8 k1, then BICONF halves until 8 consecutive ones find no
	 * error; every open bisection advanced each round
	 * (QW_CASCADE_FEWEST_ROUNDS). Leaks less than ORIGINAL (f ~1.11 vs
	 * 1.15 at 2%) in fewer round trips and less CPU (one permuted pass
	 * fewer, word-aligned blocks); for links where CPU and round trips,
	 * not the last percent of efficiency, bound the key rate. */
	QW_CASCADE_FAST,
};

/* Round scheduling. LEAST_LEAK advances only the bisections of the
 * lowest-numbered pass with work (smallest blocks first, as the sequential
 * protocol does); FEWEST_ROUNDS advances every open bisection at once (fewer
 * round trips, a few more parities). */
enum qw_cascade_policy { QW_CASCADE_LEAST_LEAK, QW_CASCADE_FEWEST_ROUNDS };

struct qw_cascade_params {
	enum qw_cascade_variant variant;
	enum qw_cascade_policy policy;
	/* Overrides (0 = the variant's value): number of passes and the
	 * block size of each pass. A block size >= n/2 means a BICONF pass
	 * (a random half of the key and its complement). */
	unsigned npasses;
	uint32_t block_size[QW_CASCADE_MAX_PASSES];
	/* BICONF passes stop after this many consecutive passes found no
	 * error (0 = run them all). */
	unsigned biconf_streak;
};

struct qw_cascade_stats {
	uint64_t leaked_bits;     /* parities revealed by Alice */
	uint64_t corrected_bits;  /* bits Bob flipped */
	uint32_t round_trips;     /* query/answer exchanges */
	uint32_t passes;          /* passes started */
	uint64_t bytes_to_alice;  /* message bytes Bob -> Alice */
	uint64_t bytes_to_bob;    /* message bytes Alice -> Bob */
};

/* Fill p with the defaults of variant v: no overrides; for OPTIMIZED the
 * FEWEST_ROUNDS policy and a BICONF streak of 24, for FAST the
 * FEWEST_ROUNDS policy and a streak of 8, for the published variants
 * LEAST_LEAK and all their passes. */
void qw_cascade_params_init(struct qw_cascade_params *p, enum qw_cascade_variant v);
/* "original", "yan", "option8", "optimized", "fast" -> *v; 0 or
 * QW_EINVAL. */
QW_WUR int qw_cascade_variant_parse(const char *name, enum qw_cascade_variant *v);
/* Name of v (as accepted by qw_cascade_variant_parse). */
const char *qw_cascade_variant_name(enum qw_cascade_variant v);
/* Block size of each pass for an n-bit key at estimated error rate qber
 * (clamped to [1e-5, 0.49]). Writes up to QW_CASCADE_MAX_PASSES sizes and
 * *npasses. 0 or QW_EINVAL (n = 0 or too large, or overrides asking for
 * more than QW_CASCADE_MAX_BLOCK_PASSES non-BICONF passes). */
QW_WUR int qw_cascade_schedule(const struct qw_cascade_params *p, size_t n, double qber,
			       uint32_t *sizes, unsigned *npasses);

/* Bob: the corrector. key is corrected in place; it is borrowed and must
 * outlive the object. seed selects the public block layouts (any value; a
 * fresh one per block is customary but not required). NULL on allocation
 * failure or an unusable key length (0 or above QW_CASCADE_MAX_BITS). */
struct qw_cascade_bob *qw_cascade_bob_new(const struct qw_cascade_params *p,
					  struct qw_bitvec *key, double qber_est,
					  uint64_t seed);
/* Produce Bob's next message in *msg / *len (owned by bob, valid until the
 * next call). Returns 0: a query message - deliver it to Alice and pass her
 * answer to qw_cascade_bob_consume(); 1: finished - *msg is the final DONE
 * message, deliver it and expect no answer; QW_ESTATE when an answer is
 * still due; QW_ENOMEM. */
QW_WUR int qw_cascade_bob_next(struct qw_cascade_bob *bob, const uint8_t **msg, size_t *len);
/* Read Alice's answer to the last query message. 0, QW_EPARSE (malformed,
 * truncated or of the wrong length; Bob's state is unchanged), QW_ESTATE
 * (no answer expected) or QW_ENOMEM. */
QW_WUR int qw_cascade_bob_consume(struct qw_cascade_bob *bob, const uint8_t *answer,
				  size_t len);
void qw_cascade_bob_stats(const struct qw_cascade_bob *bob, struct qw_cascade_stats *st);
/* Wipes Bob's copies of key material and frees; NULL accepted. */
void qw_cascade_bob_free(struct qw_cascade_bob *bob);

/* Alice: answers Bob's queries from her key (borrowed; must outlive the
 * object). NULL on allocation failure or an unusable key length. */
struct qw_cascade_alice *qw_cascade_alice_new(const struct qw_bitvec *key);
/* Answer one message of Bob's. Returns 0 with the answer in *ans / *anslen
 * (owned by alice, valid until the next call); 1 when msg was Bob's DONE
 * (nothing to send; the stats are final); QW_EPARSE for a malformed or
 * truncated message or one inconsistent with her key (length, layout);
 * QW_EPROTO when Bob's leak count in DONE differs from hers; QW_ESTATE
 * after DONE; QW_ENOMEM. */
QW_WUR int qw_cascade_alice_answer(struct qw_cascade_alice *alice, const uint8_t *msg,
				   size_t len, const uint8_t **ans, size_t *anslen);
void qw_cascade_alice_stats(const struct qw_cascade_alice *alice, struct qw_cascade_stats *st);
/* Wipes Alice's permuted copies of her key and frees; NULL accepted. */
void qw_cascade_alice_free(struct qw_cascade_alice *alice);

/* Run both parties in one process through the same serialised messages as
 * a real link: corrects bob_key towards alice_key (equal lengths). st may
 * be NULL. Bob and Alice each count the leaked bits; a disagreement is
 * QW_EPROTO. 0 or QW_E* (QW_EINVAL for unequal lengths). */
QW_WUR int qw_cascade_run_local(const struct qw_cascade_params *p,
				const struct qw_bitvec *alice_key, struct qw_bitvec *bob_key,
				double qber_est, uint64_t seed, struct qw_cascade_stats *st);

/* Release the cached block layouts (permutations, BICONF masks) kept per
 * (key length, seed). Optional; for leak checkers and long-lived tools. */
void qw_cascade_cache_clear(void);

/* Distillation stage "cascade": params is a const struct qw_cascade_params *
 * (NULL = optimized defaults). Accepts RAW or SIFTED blocks; Bob corrects
 * his key with messages over chan (layout seed drawn once per stage
 * instance, so blocks of one size share cached layouts), Alice answers
 * until Bob's DONE. Adds the
 * revealed parities to ec_parity_bits and disclosed_bits, the round trips
 * to ec_round_trips, sets qber_observed (corrected bits / length) and moves
 * the block to CORRECTED. Channel or protocol failures return ERROR. */
extern const struct qw_stage qw_cascade_stage;

#endif
