/* A QKD link endpoint: Alice or Bob of a simulated decoy-state BB84 link,
 * running the whole classical protocol with its peer over one
 * authenticated, framed byte stream (include/qwave/frame.h):
 *
 *   sift -> estimate (QBER abort, decoy bounds) -> cascade -> verify
 *        -> secret length -> privacy amplification -> sink
 *
 * on several key blocks at once (include/qwave/pipeline.h). Each endpoint
 * reads only its OWN detection record through a struct qw_link_records: in
 * `qwave sim link` both records come from one in-process simulation
 * (struct qw_link_sim), in a daemon Alice's node runs the optics and hands
 * Bob's record to Bob's node. docs/qkd-link.md describes the message flow,
 * what is disclosed and how every bit is accounted. */
#ifndef QWAVE_LINK_H
#define QWAVE_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/bitvec.h"
#include "qwave/cascade.h"
#include "qwave/distill.h"
#include "qwave/error.h"
#include "qwave/estimate.h"
#include "qwave/frame.h"
#include "qwave/ldpc.h"
#include "qwave/optics.h"
#include "qwave/sift.h"

/* ---- parameter estimation stages (src/distill/estimate_stage.c) -------- */

enum qw_link_bounds {
	/* [LCWXZ] finite-key bounds on the block's own counts (default) */
	QW_LINK_BOUNDS_FINITE = 0,
	/* the same [LCWXZ] bounds with the statistical terms removed
	 * (qw_finite_bounds_asymptotic: the counts taken as exact
	 * expectations): optimistic for any finite block, for comparison */
	QW_LINK_BOUNDS_ASYMPTOTIC = 1,
};

struct qw_estimate_stage_params {
	/* The public protocol: intensities mu > nu > vacuum and the
	 * probabilities Alice picks them with (enum qw_intensity_class). */
	double intensity[QW_OPTICS_NCLASS];
	double p_class[QW_OPTICS_NCLASS];
	double qber_threshold;        /* abort above this (0 = 0.11) */
	enum qw_link_bounds bounds;
	struct qw_finite_eps eps;     /* zeros = 1e-10 / 1e-15 */
	void *ctx;
	/* The sift statistics of block_id (both ends hold the same). 0, or
	 * QW_ENOTFOUND (the block is then dropped). */
	int (*get_stats)(void *ctx, uint64_t block_id, struct qw_sift_stats *out);
	/* Optional alarm: the block's QBER estimate exceeded the threshold. */
	void (*alarm)(void *ctx, uint64_t block_id, double qber, double threshold);
};

/* "estimate": SIFTED block -> SIFTED block with sec_n_vacuum, sec_n_single
 * and sec_e1_upper set for its kept key bits: [LCWXZ]'s s_X0, s_X1 and
 * phi_X, computed by qw_finite_bounds() (or qw_finite_bounds_asymptotic())
 * from the block's counts per class: key bits (sifted Z minus any sample),
 * disclosed X bits and their errors. The kept key must be the Z bits of
 * every class (sift's key_all_classes), else the block is an ERROR. DROP
 * with reason "QBER x% above threshold y%" (after calling alarm) when the
 * block's QBER estimate (b->qber_estimate, from the disclosed bits)
 * exceeds the threshold, and DROP "no secret key possible ..." when even
 * an error correction that disclosed nothing would leave no key.
 * params: const struct qw_estimate_stage_params * (copied). */
extern const struct qw_stage qw_estimate_stage;

/* "seclen": VERIFIED block -> secret_bits decided by qw_secret_length()
 * (estimate.h, the one audited function) from the estimate stage's bounds
 * and every bit disclosed so far (EC parities and the verification tag);
 * DROP when it is 0. Same params as the estimate stage. */
extern const struct qw_stage qw_seclen_stage;

/* ---- the endpoint ---------------------------------------------------- */

/* This endpoint's detection record of each block. fetch returns a record
 * of the endpoint's own role (ownership passes to the caller) or NULL when
 * the block has none. Called from worker threads, in increasing block id. */
struct qw_link_records {
	void *ctx;
	struct qw_detections *(*fetch)(void *ctx, uint64_t block_id);
};

enum qw_link_ec { QW_LINK_EC_CASCADE = 0, QW_LINK_EC_LDPC = 1 };

struct qw_link_params {
	/* Public protocol parameters (intensities, class probabilities) are
	 * read from here; the physical link parameters are not used by the
	 * endpoints (only the simulation knows them). */
	struct qw_optics_config optics;
	uint64_t nblocks;             /* blocks to run, ids 1..nblocks */
	/* key_both_bases must be 0 (Z key, X test basis) and key_all_classes
	 * 1 (the [LCWXZ] protocol the estimate is about); qber_abort is
	 * ignored: the estimate stage aborts */
	struct qw_sift_params sift;
	double qber_threshold;        /* default 0.11 */
	enum qw_link_bounds bounds;
	struct qw_finite_eps eps;     /* 1e-10 / 1e-15 */
	enum qw_link_ec ec;
	struct qw_cascade_params cascade; /* original, fewest round trips */
	struct qw_ldpc_params ldpc;   /* defaults; a failed frame drops the block */
	unsigned workers;             /* blocks in flight (default 2) */
	double auth_share;            /* of each secret block, to the auth pool (0.05) */
	int recv_timeout_ms;          /* 60000 */
	/* Sink: a secret block (identical at both ends). key is borrowed. */
	void *sink_ctx;
	void (*deliver)(void *ctx, uint64_t block_id, const struct qw_bitvec *key);
	void (*dropped)(void *ctx, uint64_t block_id, const char *reason);
	/* QBER alarm (the node raises it to the manager). */
	void (*alarm)(void *ctx, uint64_t block_id, double qber, double threshold);
};

/* Defaults as documented above; optics from qw_optics_config_default()
 * (signal 0.5, decoy 0.1, vacuum; 70/20/10 %; bases 1/2 each: a fixed set,
 * far from the finite-key optimum: see qw_link_params_optimize()). */
void qw_link_params_default(struct qw_link_params *p);

/* The [LCWXZ] protocol p runs, for the theory module's predictions:
 * intensities and class probabilities from p->optics, q_x = p_z_alice
 * (the model takes Bob's bias equal; [LCWXZ]'s key basis X is the link's
 * Z), eps from p->eps, and f_ec as qw_finite_protocol_default() (1.22). */
void qw_link_protocol(const struct qw_link_params *p, struct qw_finite_protocol *pr);

/* Set p->optics' signal and decoy intensities, class probabilities and
 * basis bias (p_z_alice = p_z_bob) to the theory module's finite-key
 * optimum (qw_finite_optimize_pulses) for blocks of pulses_per_block pulses
 * on p->optics' link and distance; the vacuum class keeps its intensity.
 * The current setting is the first starting point and stays if nothing
 * beats it. out (may be NULL) receives the model's prediction for one
 * block. 0, or QW_EINVAL (the current setting is not a valid [LCWXZ]
 * protocol, or a block yields less than one expected key bit). */
QW_WUR int qw_link_params_optimize(struct qw_link_params *p, double pulses_per_block,
				   struct qw_finite_result *out);

struct qw_link_stats {
	uint64_t pulses, detections;  /* of the blocks sifted */
	uint64_t sifted_bits;         /* bases agreed, all classes */
	uint64_t key_bits;            /* sifted bits kept as key (after sampling) */
	/* the bits the QBER estimate came from, as sift's qber_estimate: the
	 * key-basis sample if any (pe_fraction > 0), else every disclosed bit
	 * of the key-making classes (the X test basis of every class) */
	uint64_t sample_errors, sample_bits;
	double qber;                  /* sample_errors / sample_bits */
	uint64_t ec_bits;             /* key bits that went through EC */
	uint64_t ec_leak_bits;        /* parities disclosed by EC */
	uint64_t ec_errors;           /* bits corrected (Bob; 0 at Alice) */
	double ec_efficiency;         /* leak / (ec_bits h(ec_errors / ec_bits)) (Bob) */
	uint64_t verify_bits;         /* verification tag bits disclosed */
	/* The estimate's bounds, summed over blocks that reached EC's end:
	 * vacuum and single-photon bits among the kept key (lower bounds) and
	 * the largest phase-error upper bound. */
	double vacuum_bits, single_photon_bits, phase_error;
	uint64_t secret_bits;         /* delivered to the sink */
	uint64_t auth_bits;           /* put back into the auth pool */
	uint64_t auth_used_bits;      /* pads spent by the frames, both directions */
	uint64_t blocks, blocks_delivered, blocks_dropped;
	int aborted;                  /* a block hit the QBER alarm, or the link failed */
	char abort_reason[128];       /* first such reason ("" if none) */
	char last_drop_reason[128];
	int error;                    /* QW_E* of a failed run, 0 otherwise */
};

struct qw_link;

/* New endpoint of role `role`. io (borrowed, must outlive the link) is the
 * byte stream to the peer; psk (copied) is the pre-shared authentication
 * key material (frame.h layout, the same at both ends); records gives this
 * end's detection records. NULL with *err = QW_EINVAL (bad params or psk,
 * a key from both bases, or LDPC with keep_partial: the estimate cannot
 * follow either), QW_ENOMEM. */
struct qw_link *qw_link_new(const struct qw_link_params *p, enum qw_role role,
			    const struct qw_frame_io *io, const uint8_t *psk, size_t psk_len,
			    const struct qw_link_records *records, int *err);

/* Run every block (blocking; the peer must run qw_link_run concurrently).
 * Returns 0 when both ends finished (blocks may still have been dropped:
 * see the stats), or the QW_E* that aborted the connection (QW_EAUTH,
 * QW_EPROTO, QW_ECLOSED, QW_EAGAIN for an exhausted auth pool, ...). */
QW_WUR int qw_link_run(struct qw_link *l);

void qw_link_get_stats(struct qw_link *l, struct qw_link_stats *st);

/* The endpoint's authenticated connection (borrowed, lives as long as l),
 * for a caller's own frames on stream 0 before qw_link_run (e.g. a key
 * confirmation handshake) or after it returned 0 (a commit step; the run
 * reads nothing past the peer's FIN). Never while qw_link_run runs. */
struct qw_frame_conn *qw_link_conn(struct qw_link *l);

/* Wipes and frees; NULL accepted. */
void qw_link_free(struct qw_link *l);

/* ---- the in-process simulation ---------------------------------------- */

/* Both records of a simulated link, produced block by block on demand:
 * block id k (1-based) covers pulses [(k-1) P, min(k P, N)). Each role's
 * record is handed out once, to that role only. Thread-safe. */
struct qw_link_sim;

/* Simulate `pulses` pulses in blocks of pulses_per_block with optics c and
 * a generator seeded with seed. NULL with *err = QW_EINVAL / QW_ENOMEM. */
struct qw_link_sim *qw_link_sim_new(const struct qw_optics_config *c, uint64_t pulses,
				    uint64_t pulses_per_block, uint64_t seed, int *err);
void qw_link_sim_free(struct qw_link_sim *s);
uint64_t qw_link_sim_blocks(const struct qw_link_sim *s);
/* The record source of one endpoint: it reads only records of `role`. */
void qw_link_sim_records(struct qw_link_sim *s, enum qw_role role, struct qw_link_records *out);
void qw_link_sim_stats(struct qw_link_sim *s, struct qw_optics_stats *out);

/* Pulses per block that give about key_bits kept key bits on the expected
 * statistics of c with sifting p (every class's key-basis bits, or the
 * signal's only, minus the sample; at least 1). */
uint64_t qw_link_pulses_for_bits(const struct qw_optics_config *c,
				 const struct qw_sift_params *p, double key_bits);

#endif
