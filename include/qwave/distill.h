/* The distillation pipeline shared by QKD links and wireless (PLKG) key
 * generation: a chain of stages over key blocks.
 *
 * A key block carries its identity, its state, the bits, the error estimate
 * and every bit disclosed about it so far. Each stage checks the state it
 * receives, does its work, and returns FORWARD (hand the block on), DROP
 * (discard it, with a reason) or ERROR (a fault, not a property of the
 * block). The same stage table serves both endpoints; a stage that talks to
 * the peer does so through the block's channel (struct qw_distill_chan), so
 * stages never know whether the peer is in-process or across a socket. */
#ifndef QWAVE_DISTILL_H
#define QWAVE_DISTILL_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/bitvec.h"
#include "qwave/error.h"

enum qw_block_state {
	QW_BLOCK_RAW,
	QW_BLOCK_SIFTED,
	QW_BLOCK_CORRECTED,
	QW_BLOCK_VERIFIED,
	QW_BLOCK_AMPLIFIED,
};

enum qw_role { QW_ROLE_ALICE, QW_ROLE_BOB };

enum qw_stage_result { QW_STAGE_FORWARD, QW_STAGE_DROP, QW_STAGE_ERROR };

/* A message channel to the peer's instance of the same pipeline. Messages
 * are opaque byte strings, delivered in order and authenticated by the
 * channel (the link layer MACs every frame). send/recv return 0 or QW_E*;
 * recv allocates *msg (caller frees with free()). */
struct qw_distill_chan {
	void *ctx;
	int (*send)(void *ctx, uint32_t type, const uint8_t *msg, size_t len);
	int (*recv)(void *ctx, uint32_t *type, uint8_t **msg, size_t *len);
};

struct qw_key_block {
	uint64_t id;                /* unique per link and direction */
	enum qw_block_state state;
	enum qw_role role;
	struct qw_bitvec *key;      /* the block's bits (owned) */
	double qber_estimate;       /* from parameter estimation */
	double qber_observed;       /* errors corrected / bits, after EC */
	uint64_t disclosed_bits;    /* leaked to Eve by EC + verification */
	uint64_t ec_parity_bits;    /* the EC part of disclosed_bits */
	uint32_t ec_round_trips;
	/* Inputs to the secret-length computation (set by the estimation
	 * stage; unused fields are zero). */
	double sec_n_single;        /* lower bound on single-photon bits */
	double sec_n_vacuum;        /* lower bound on vacuum bits */
	double sec_e1_upper;        /* upper bound on single-photon phase error */
	uint64_t secret_bits;       /* length decided for privacy amplification */
	char drop_reason[96];       /* set when a stage drops the block */
};

/* New block owning key (may be NULL for a block that gets its key later). */
struct qw_key_block *qw_block_new(uint64_t id, enum qw_role role, struct qw_bitvec *key);
/* Wipes and frees the key and the block; NULL accepted. */
void qw_block_free(struct qw_key_block *b);

struct qw_stage {
	const char *name;
	/* Create per-pipeline stage state from a parameter blob; 0 or QW_E*. */
	int (*init)(void **state, const void *params);
	enum qw_stage_result (*process)(void *state, struct qw_key_block *b,
					struct qw_distill_chan *chan);
	void (*free)(void *state);
};

#endif
