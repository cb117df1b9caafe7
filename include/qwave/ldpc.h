/* Rate-adaptive LDPC information reconciliation (one-way syndrome coding).
 *
 * Codes: quasi-cyclic LDPC codes of length n = 256 Z (Z = 64, 128 or 256:
 * n = 16384, 32768 or 65536) for nine mother rates 0.50, 0.55, ..., 0.90.
 * Each base matrix (256 columns) follows the variable-node degree
 * distribution optimised for the BSC by Elkouss, Leverrier, Alleaume and
 * Boutros, "Efficient reconciliation protocol for discrete-variable QKD",
 * ISIT 2009 (arXiv:0901.2140), Table I, with concentrated check degrees;
 * circulant shifts are chosen greedily to avoid 4-cycles. Everything is
 * derived from a public seed, so both parties build the same matrices.
 *
 * Rate adaptation (Elkouss, Martinez-Mateo, Lancho, Martin, "Rate
 * compatible protocol for information reconciliation", ISITA 2010): from
 * the QBER estimate Q and a target efficiency f, each frame of k payload
 * bits must leak m - p ~ f h(Q) k; a mother code is punctured (p bits)
 * and shortened (s = n - k - p bits) to get there (qw_ldpc_choose).
 * Punctured positions follow an "untainted" order (no check node has two
 * punctured neighbours; Elkouss, Martinez-Mateo, Martin, IEEE WCL 2012),
 * which also makes the punctured columns linearly independent.
 *
 * Protocol: the key is cut into frames of n - p - s payload bits. Alice
 * fills each frame's punctured positions with private random bits and its
 * shortened positions with zeros, and sends the syndromes in one message.
 * Bob decodes every frame (layered belief propagation over 16-bit LLRs,
 * box-plus with a linear correction term) and replies with the list of
 * frames that failed. Optionally (blind reconciliation, Martinez-Mateo,
 * Elkouss, Martin, QIC 12 (2012) 791) Alice then reveals some punctured
 * values of the failed frames and Bob retries.
 *
 * Leakage, counted per frame: m - p + r, where m = n (1 - R0) is
 * the syndrome length, p the punctured positions and r the punctured
 * values revealed in blind rounds. (The syndrome tells at most m bits about
 * the frame; p of them are absorbed by Alice's private uniform punctured
 * bits because the punctured columns are independent. Shortened positions
 * hold public zeros, not key bits, and leak nothing. m - p is an upper
 * bound, exact when H has full rank.) Frames that fail are still counted.
 * docs/ldpc.md describes the codes and measurements. */
#ifndef QWAVE_LDPC_H
#define QWAVE_LDPC_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/bitvec.h"
#include "qwave/distill.h"
#include "qwave/error.h"
#include "qwave/rng.h"

#define QW_LDPC_NRATES 9      /* mother rates 0.50 + 0.05 i */
#define QW_LDPC_BASE_COLS 256 /* n = 256 Z */
/* Largest key handled per call (frame counts and offsets are 32-bit). */
#define QW_LDPC_MAX_BITS ((size_t)1 << 31)
/* Message types used on a struct qw_distill_chan by the LDPC stage. */
#define QW_LDPC_CHAN_SYNDROME 0x4c440001u /* Alice -> Bob */
#define QW_LDPC_CHAN_RESULT 0x4c440002u   /* Bob -> Alice */
#define QW_LDPC_CHAN_REVEAL 0x4c440003u   /* Alice -> Bob (blind rounds) */

struct qw_ldpc_params {
	unsigned lift;         /* Z: 64, 128 or 256 (0 = 128, n = 32768) */
	double efficiency;     /* target f for the rate choice (0 = automatic,
				* qw_ldpc_auto_efficiency) */
	unsigned max_iter;     /* decoder iterations per attempt (0 = 60) */
	uint64_t code_seed;    /* public seed of the matrices */
	int rate_index;        /* -1: choose from the QBER; else force mother code i */
	/* Blind rounds after a failure (0 = one-way): each reveals
	 * blind_step punctured values per failed frame (0 = ceil(n/200)).
	 * With blind_max_puncture the frames start from the code's maximal
	 * puncturing at efficiency f (blind reconciliation proper); without,
	 * the one-way plan is kept and the rounds only rescue failed frames. */
	unsigned blind_rounds;
	unsigned blind_step;
	int blind_max_puncture;
	/* Stage only: on frame failures, remove the failed frames' bits from
	 * both keys and keep the block (1), or drop the whole block (0). */
	int keep_partial;
};

struct qw_ldpc_stats {
	uint64_t leaked_bits;     /* sum over frames of m - p + r */
	uint64_t corrected_bits;  /* payload bits Bob flipped (successful frames) */
	uint32_t frames;
	uint32_t frame_errors;    /* frames still undecoded at the end */
	uint32_t round_trips;     /* RESULT messages (1 + blind rounds used) */
	uint32_t rate_index;      /* mother code used */
	uint32_t punctured;       /* p per frame */
	uint32_t shortened;       /* s of the first frame (others differ by <= 1) */
	uint64_t iterations;      /* decoder iterations, all frames and attempts */
	uint64_t bytes_to_bob;    /* message bytes Alice -> Bob */
	uint64_t bytes_to_alice;  /* message bytes Bob -> Alice */
	double decode_seconds;    /* CPU time of Bob's decoding thread */
};

/* Defaults: Z = 128, automatic f, 60 iterations, automatic rate, up to 4
 * rescue rounds (blind_rounds = 4, one-way plan: a single message each
 * way unless a frame fails), drop the block on failure. */
void qw_ldpc_params_init(struct qw_ldpc_params *p);

/* The target efficiency used when params.efficiency is 0: calibrated for
 * a one-way frame error rate of about 3 % or less at n = 32768 (1.35 at
 * Q = 1 %, 1.22 at 2 %, 1.18 at 3 %, 1.12 from 5 %; docs/ldpc.md). */
double qw_ldpc_auto_efficiency(double qber);

/* Mother rate of code i (0.50 + 0.05 i). */
double qw_ldpc_mother_rate(unsigned i);

/* Rate adaptation for a key of nbits bits at estimated error rate qber:
 * the mother code, the punctured count p per frame and the number of
 * frames. Frames carry ceil(nbits / frames) or one bit fewer; the rest of
 * each frame is shortened. The plan takes the fewest frames for which some
 * mother code meets leak = m - p ~ f h(qber) payload with 0 <= p <= its
 * untainted maximum, and among those the code needing the least
 * puncturing. Below ~0.6 % QBER even the rate-0.9 code fully punctured
 * leaks more than f h(Q) per bit; the plan then uses it as is (the
 * efficiency exceeds f). QW_ERANGE when f h(qber) >= 1; QW_ENOMEM. */
QW_WUR int qw_ldpc_choose(const struct qw_ldpc_params *p, double qber, size_t nbits,
			  unsigned *rate_index, size_t *punctured, uint32_t *frames);

/* ---- the parity-check matrices (read-only, cached, shared) ---------------- */

struct qw_ldpc_code;
/* The code of mother rate i for lift z and seed, built on first use and
 * cached for the life of the process (thread-safe). NULL for a bad i or z
 * or on allocation failure. Do not free. */
const struct qw_ldpc_code *qw_ldpc_code_get(unsigned rate_index, unsigned lift, uint64_t seed);
/* Free every cached code. Only when no code pointer, Alice, Bob or stage
 * is in use; optional, for leak checkers and long-lived tools. */
void qw_ldpc_cache_clear(void);
size_t qw_ldpc_code_n(const struct qw_ldpc_code *c);
size_t qw_ldpc_code_m(const struct qw_ldpc_code *c);
/* Number of 4-cycles in the Tanner graph (0 for every shipped code). */
uint64_t qw_ldpc_code_4cycles(const struct qw_ldpc_code *c);
/* The edges of H as (check, variable) pairs, check-major: writes up to
 * max pairs and returns the number of edges. */
size_t qw_ldpc_code_edges(const struct qw_ldpc_code *c, uint32_t *chk, uint32_t *var,
			  size_t max);
/* syn (m bits) = H x (x: n bits). QW_EINVAL on wrong lengths. */
QW_WUR int qw_ldpc_code_syndrome(const struct qw_ldpc_code *c, const struct qw_bitvec *x,
				 struct qw_bitvec *syn);
/* Largest usable puncture count and the untainted puncturing order (the
 * first p entries are the punctured variables of a p-punctured frame). */
size_t qw_ldpc_code_max_punctured(const struct qw_ldpc_code *c);
const uint32_t *qw_ldpc_code_puncture_order(const struct qw_ldpc_code *c);
/* Decode one frame: llr (n values, log P(0)/P(1) scaled by 16 and clamped
 * to +-30000; punctured 0) and the target syndrome (m bits) -> x (n bits)
 * with H x = syn. Returns 0 when converged, 1 when not after max_iter
 * iterations (x then holds the last hard decisions), QW_ENOMEM.
 * *iters receives the iterations used. */
QW_WUR int qw_ldpc_code_decode(const struct qw_ldpc_code *c, const int16_t *llr,
			       const struct qw_bitvec *syn, unsigned max_iter, struct qw_bitvec *x,
			       unsigned *iters);

/* ---- the two parties -------------------------------------------------------- */

/* Alice: the key (borrowed; must outlive the object) is not modified. rng
 * (borrowed) draws the punctured values; a system generator in real links.
 * qber_est chooses the rate and travels to Bob. NULL on allocation failure,
 * an unusable key length (0 or above QW_LDPC_MAX_BITS) or no fitting rate
 * (*err receives QW_ENOMEM, QW_EINVAL or QW_ERANGE; err may be NULL). */
struct qw_ldpc_alice *qw_ldpc_alice_new(const struct qw_ldpc_params *p,
					const struct qw_bitvec *key, double qber_est,
					struct qw_rng *rng, int *err);
/* Alice's first message: header and the syndromes of every frame, in *msg
 * / *len (owned by alice, valid until the next call). 0, QW_ESTATE when
 * called twice, QW_ECRYPTO (rng failure), QW_ENOMEM. */
QW_WUR int qw_ldpc_alice_syndrome(struct qw_ldpc_alice *alice, const uint8_t **msg,
				  size_t *len);
/* Read Bob's RESULT. Returns 1: finished (nothing to send; stats final);
 * 0: a REVEAL message for the failed frames is in *msg / *len - deliver it
 * and pass Bob's next RESULT here. QW_EPARSE for a malformed RESULT,
 * QW_EPROTO when Bob's leak count differs from Alice's, QW_ESTATE. */
QW_WUR int qw_ldpc_alice_consume(struct qw_ldpc_alice *alice, const uint8_t *result,
				 size_t len, const uint8_t **msg, size_t *mlen);
/* 1 when frame i was decoded by Bob (known after the final RESULT). */
int qw_ldpc_alice_frame_ok(const struct qw_ldpc_alice *alice, uint32_t i);
void qw_ldpc_alice_stats(const struct qw_ldpc_alice *alice, struct qw_ldpc_stats *st);
/* Wipes Alice's frame words and frees; NULL accepted. */
void qw_ldpc_alice_free(struct qw_ldpc_alice *alice);

/* Bob: key (borrowed) is corrected in place, frame by frame; frames that
 * fail keep Bob's original bits. NULL on allocation failure or an unusable
 * key length. */
struct qw_ldpc_bob *qw_ldpc_bob_new(const struct qw_ldpc_params *p, struct qw_bitvec *key);
/* Decode Alice's SYNDROME (first call) or REVEAL message and produce the
 * RESULT in *reply / *rlen (owned by bob, valid until the next call).
 * Returns 1 when the RESULT is final (no REVEAL will follow), 0 when Alice
 * will answer it with a REVEAL; QW_EPARSE for a malformed, truncated or
 * inconsistent message (Bob's key is then unchanged), QW_ESTATE, QW_ENOMEM. */
QW_WUR int qw_ldpc_bob_decode(struct qw_ldpc_bob *bob, const uint8_t *msg, size_t len,
			      const uint8_t **reply, size_t *rlen);
int qw_ldpc_bob_frame_ok(const struct qw_ldpc_bob *bob, uint32_t i);
void qw_ldpc_bob_stats(const struct qw_ldpc_bob *bob, struct qw_ldpc_stats *st);
/* Wipes Bob's decoder state and frees; NULL accepted. */
void qw_ldpc_bob_free(struct qw_ldpc_bob *bob);

/* Payload span of frame i of a key of nbits bits cut into frames frames:
 * bits [*off, *off + *len). Both parties use it to drop failed frames. */
void qw_ldpc_frame_span(size_t nbits, uint32_t frames, uint32_t i, size_t *off, size_t *len);

/* Both parties in one process through the serialised messages: corrects
 * bob_key towards alice_key (equal lengths). seed seeds the generator of
 * Alice's punctured values (simulation only). st may be NULL. Frame
 * failures are not an error: they are counted in st->frame_errors (those
 * frames keep Bob's bits). 0 or QW_E* (QW_EINVAL for unequal lengths,
 * QW_ERANGE for no fitting rate, QW_EPROTO on a leak-count mismatch). */
QW_WUR int qw_ldpc_run_local(const struct qw_ldpc_params *p, const struct qw_bitvec *alice_key,
			     struct qw_bitvec *bob_key, double qber_est, uint64_t seed,
			     struct qw_ldpc_stats *st);

/* Distillation stage "ldpc": params is a const struct qw_ldpc_params *
 * (NULL = defaults). Accepts RAW or SIFTED blocks. Alice sends the
 * syndromes, Bob decodes and replies (plus blind rounds if configured).
 * Adds the leak to ec_parity_bits and disclosed_bits, the RESULT messages
 * to ec_round_trips, sets qber_observed (corrected bits / decoded bits) and
 * moves the block to CORRECTED. If frames failed: DROP with "LDPC decoding
 * failed", or with keep_partial both sides remove those frames' bits (the
 * block is dropped only if nothing remains). A QBER estimate no code can
 * handle (qw_ldpc_choose gives QW_ERANGE) is a DROP at both ends without
 * any message. Channel or protocol failures return ERROR. */
extern const struct qw_stage qw_ldpc_stage;

#endif
