/* Wireless physical-layer key generation (PLKG) end to end: probing,
 * quantization of decorrelated features, and the distillation chain
 * (reconciliation, verification, privacy amplification) that turns them
 * into equal secret keys at a terminal and an access point.
 *
 * Layers (docs/plkg.md, sections 5-9):
 *  - struct qw_plkg_end: ONE end (Alice = access point, Bob = terminal, or
 *    an eavesdropper). It is fed its own channel estimates, probe by probe,
 *    and cuts them into windows of `window` probes. Each window is projected
 *    on a two-dimensional Karhunen-Loeve basis - the frequency KLT of the
 *    channel model (or of a public sample covariance) times the eigenvectors
 *    of the probes' temporal correlation J0(2 pi f_D (i - j) / F_p) - so
 *    that, under the model, every feature is independent of every other;
 *    each real feature is quantized to b equiprobable Gray-coded levels,
 *    b chosen from the feature's Alice/Bob correlation. Nothing is
 *    exchanged for quantization (no guard bands, no kept indices): both ends
 *    derive the same plan from the public parameters.
 *  - The plan also gives every window's entropy estimate: the raw bits
 *    (full entropy under the model: independent equiprobable levels) minus
 *    what Eve's two estimates tell about Alice's features (Gaussian mutual
 *    information, which bounds what they tell about the quantized bits),
 *    capped by the new secret-key information the channel offers per window
 *    with Eve (I(X;Y|Z) over 2 windows minus over 1, qw_plkg_bound_compute).
 *  - Blocks of whole windows (at least block_bits raw bits) go through the
 *    stages of qw_plkg_stages(): reconciliation (Cascade, the BCH secure
 *    sketch or LDPC), verification (qw_stage_verify), the length stage
 *    (secret = entropy estimate - every disclosed bit - 2 log2(1/eps_pa),
 *    block dropped at <= 0) and privacy amplification (qw_stage_pa). The
 *    stages talk over a struct qw_distill_chan, so the same blocks run
 *    in-process (qw_plkg_distill_local) or between a terminal and an access
 *    point over a socket (qw_pipeline_run with the same stage table).
 *  - qw_plkg_simulate(): the whole thing over the simulated channel of
 *    plkg_channel.h, with Eve, and the metrics of docs/plkg.md.
 *
 * Quasi-static remedy (QW_PLKG_REMEDY_RANDOM_WEIGHTS): the access point
 * transmits and receives through n_elements antenna elements (or
 * reconfigurable-surface elements) combined with fresh secret random complex
 * weights every probe round, held for the round's two TDD pilots, so the
 * effective channel sum_e w_e H_e stays reciprocal but changes every probe
 * even when nothing moves. The frequency basis then comes from a sample
 * covariance of Alice's first window, sent in the clear. Security
 * assumption and Eve's measured advantage: docs/plkg.md section 8. */
#ifndef QWAVE_PLKG_H
#define QWAVE_PLKG_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/bch.h"
#include "qwave/bitvec.h"
#include "qwave/cascade.h"
#include "qwave/distill.h"
#include "qwave/error.h"
#include "qwave/ldpc.h"
#include "qwave/plkg_channel.h"
#include "qwave/toeplitz.h"

enum qw_plkg_reconcile {
	QW_PLKG_REC_CASCADE, /* interactive, near the Shannon limit (cascade.h) */
	QW_PLKG_REC_BCH,     /* one-way BCH secure sketch (bch.h) */
	QW_PLKG_REC_LDPC,    /* one-way rate-adaptive LDPC (ldpc.h), large blocks */
};

enum qw_plkg_remedy {
	QW_PLKG_REMEDY_NONE,
	QW_PLKG_REMEDY_RANDOM_WEIGHTS,
};

struct qw_plkg_params {
	struct qw_plkg_config chan;  /* the channel model (public) */
	unsigned window;             /* probes per quantization window */
	/* Bits per real feature: b = floor(log2(level_scale / sqrt(1 - rho^2)))
	 * clamped to [0, max_bits] (rho: the feature's Alice/Bob correlation). */
	double level_scale;
	unsigned max_bits;
	size_t block_bits;           /* minimum raw bits per distillation block */
	enum qw_plkg_reconcile reconcile;
	/* KDR assumed for the first block (0: kdr_margin x the plan's model
	 * KDR + 0.002); later blocks use the running observed KDR times
	 * kdr_margin (plus 0.002). */
	double kdr_initial;
	double kdr_margin;
	enum qw_plkg_remedy remedy;
	unsigned n_elements;         /* remedy: AP elements with random weights */
	unsigned tag_bits;           /* verification tag (bits) */
	double eps_pa;               /* privacy amplification: 2 log2(1/eps) margin */
	/* Fraction of the raw bits not counted as entropy: the levels of one
	 * channel realisation are not exactly equiprobable (a 0.5 % bit bias
	 * was measured, -log2(0.505) = 0.985 bits of min-entropy per bit). */
	double model_margin;
};

/* Defaults: the channel of qw_plkg_config_default (TGn D, 3 km/h, 20 dB,
 * 100 probes/s, Eve at lambda/2), window 192 probes, max_bits 6, Cascade
 * with level_scale 1.5 and block_bits 16384 (qw_plkg_params_for: BCH 0.6
 * and 8192, LDPC 1.5 and 40000), KDR from the model (kdr_initial 0) with
 * margin 1.2, no remedy, 8 elements, 64-bit tag, eps_pa 1e-10,
 * model_margin 0.02. */
void qw_plkg_params_default(struct qw_plkg_params *p);
/* Set the reconciler and its level_scale / block_bits defaults. */
void qw_plkg_params_for(struct qw_plkg_params *p, enum qw_plkg_reconcile r);
/* 0 or QW_EINVAL (bad channel or out-of-range field). */
QW_WUR int qw_plkg_params_check(const struct qw_plkg_params *p);

/* "cascade", "bch", "ldpc" -> *r; 0 or QW_EINVAL. And the name of r. */
QW_WUR int qw_plkg_reconcile_parse(const char *name, enum qw_plkg_reconcile *r);
const char *qw_plkg_reconcile_name(enum qw_plkg_reconcile r);

/* ---- one end ---------------------------------------------------------------- */

struct qw_plkg_end;

/* New end for params (copied): Alice, Bob and Eve all use the same public
 * plan (Eve's gain normalisation absorbs her different noise). The first
 * end made for a configuration computes the channel bounds (about 2.5 s
 * of CPU for the default window; cached for the process). With the remedy the frequency basis is not ready until
 * qw_plkg_end_set_cov(). Returns 0, QW_EINVAL, QW_ENOMEM. */
QW_WUR int qw_plkg_end_new(struct qw_plkg_end **out, const struct qw_plkg_params *p);
/* Wipes the buffered estimates; NULL accepted. */
void qw_plkg_end_free(struct qw_plkg_end *e);

/* Append one probe's channel estimate (n_sc complex values). Returns 1 when
 * the window is full (call qw_plkg_end_quantize next), 0 otherwise,
 * QW_ESTATE when a full window has not been quantized yet. */
QW_WUR int qw_plkg_end_push(struct qw_plkg_end *e, const double _Complex *csi);
/* The sample covariance (n_sc x n_sc, row major) of the buffered full
 * window (Alice, remedy: sent to the peer in the clear). 0, QW_ESTATE. */
QW_WUR int qw_plkg_end_sample_cov(const struct qw_plkg_end *e, double _Complex *cov);
/* Use the frequency basis of a sample covariance (both ends, the same
 * matrix) and rebuild the plan. 0, QW_EINVAL, QW_ENOMEM. */
QW_WUR int qw_plkg_end_set_cov(struct qw_plkg_end *e, const double _Complex *cov);
/* Quantize the full window and append its bits to out, or, with out NULL,
 * to the end's own pending bits (with the window's entropy estimate) for
 * qw_plkg_end_take_block(); out_neg (may be NULL) receives the bits of the
 * negated features - an eavesdropper's option when her channel is
 * anti-correlated. Empties the window. *entropy (may be NULL) receives the
 * window's entropy estimate in bits. 0, QW_ESTATE (window not full or no
 * basis), QW_ENOMEM. */
QW_WUR int qw_plkg_end_quantize(struct qw_plkg_end *e, struct qw_bitvec *out,
				struct qw_bitvec *out_neg, double *entropy);
/* Raw bits and entropy estimate per window of the current plan, and the
 * bounds per probe behind the cap (I(X;Y|Z) and I(X;Y), new information
 * per window / window; per iid probe with the remedy). */
size_t qw_plkg_end_window_bits(const struct qw_plkg_end *e);
double qw_plkg_end_window_entropy(const struct qw_plkg_end *e);
double qw_plkg_end_bound(const struct qw_plkg_end *e, double *bound_xy);
/* Complex features that get bits, and frequency modes, in the plan. */
size_t qw_plkg_end_features(const struct qw_plkg_end *e);
/* Expected Alice/Bob bit disagreement of the plan's quantizer under the
 * model (Monte Carlo with a fixed public seed). */
double qw_plkg_end_model_kdr(const struct qw_plkg_end *e);
unsigned qw_plkg_end_modes(const struct qw_plkg_end *e);

/* The pending bits (read only; Alice's and Bob's grow in lock step). */
const struct qw_bitvec *qw_plkg_end_pending(const struct qw_plkg_end *e);
/* When at least block_bits bits are pending, or flush is set and any are:
 * *b = a new RAW block (id and role as given) owning them, qber_estimate =
 * kdr_est, sec_n_single = the sum of their windows' entropy estimates (what
 * the length stage needs). Otherwise *b = NULL. Both ends call it after the
 * same windows and get blocks of the same length. 0 or QW_ENOMEM. */
QW_WUR int qw_plkg_end_take_block(struct qw_plkg_end *e, uint64_t id, enum qw_role role,
				  double kdr_est, int flush, struct qw_key_block **b);

/* The KDR estimate for the next block, kept identically by both ends from
 * public facts only: first kdr_margin x the plan's model KDR + 0.002 (or
 * params.kdr_initial), then kdr_margin x the KDR reconciliation observed so
 * far + 0.002; a block whose reconciliation or verification failed raises
 * the estimate by half. Capped at 0.45. */
struct qw_plkg_kdr {
	double err, bits, margin;
	double est;      /* the estimate to put in the next block */
};
void qw_plkg_kdr_init(struct qw_plkg_kdr *k, const struct qw_plkg_params *p, double model_kdr);
/* After a block: raw_bits its length before reconciliation, reconciled
 * nonzero when it passed reconciliation and verification, qber_observed as
 * the reconciliation stage set it. */
void qw_plkg_kdr_update(struct qw_plkg_kdr *k, uint64_t raw_bits, int reconciled,
			double qber_observed);

/* ---- distillation ----------------------------------------------------------- */

/* Length stage "plkg-length": on a VERIFIED block whose sec_n_single holds
 * its entropy estimate (bits, set when the block was made from windows),
 * sets secret_bits = floor(sec_n_single - disclosed_bits - 2 log2(1/eps)),
 * 0 when that is not positive (the PA stage then drops the block), and at
 * most the key length. params: const double *eps (NULL = 1e-10). Talks to
 * nobody: both ends compute the same number. */
extern const struct qw_stage qw_plkg_length_stage;

#define QW_PLKG_MAX_STAGES 4

/* The stage chain for p: reconciler, qw_stage_verify, the length stage,
 * qw_stage_pa, with their parameter blobs (pointing into *storage, which
 * must outlive the chain). Returns the number of stages. */
struct qw_plkg_stage_storage {
	struct qw_cascade_params cascade;
	struct qw_ldpc_params ldpc;
	struct qw_bch_stage_params bch;
	struct qw_verify_params verify;
	struct qw_pa_params pa;
	double eps;
};
size_t qw_plkg_stages(const struct qw_plkg_params *p, struct qw_plkg_stage_storage *storage,
		      const struct qw_stage **stages, const void **params);

/* Outcome of one block through the in-process chain. */
struct qw_plkg_block_result {
	int delivered;            /* both ends delivered (AMPLIFIED) */
	int keys_equal;           /* delivered and bit-equal */
	int reconciled;           /* both passed reconciliation and verification */
	uint64_t secret_bits;
	uint64_t disclosed_bits;  /* EC + tag */
	uint64_t ec_bits;
	double qber_observed;
	char drop_reason[96];
};

/* Run blocks a (Alice's) and b (Bob's) through the chain of p in this
 * process: Alice in a second thread, Bob in the caller's, over an
 * in-memory duplex channel that closes when either side stops, so a side
 * that drops never leaves the other waiting. The blocks are borrowed (keys
 * replaced by the final keys when delivered). When reconciled is not NULL
 * and the block is delivered, Alice's verified key before privacy
 * amplification is appended to it. 0 or QW_ENOMEM / QW_EIO (thread
 * creation). */
QW_WUR int qw_plkg_distill_local(const struct qw_plkg_params *p, struct qw_key_block *a,
				 struct qw_key_block *b, struct qw_bitvec *reconciled,
				 struct qw_plkg_block_result *res);

/* ---- simulation ----------------------------------------------------------------- */

struct qw_plkg_sim_result {
	uint64_t probes;
	double seconds;              /* probes / probe rate */
	uint64_t windows;
	uint64_t raw_bits;           /* quantized bits (Alice) */
	uint64_t raw_errors;         /* Alice/Bob disagreements before reconciliation */
	double kdr_raw;
	double kdr_model;            /* the plan's expected KDR (first estimate) */
	/* Eve: she quantizes the features of her estimate of Alice's pilot
	 * (a) or of Bob's (b), as they are or negated, and keeps the better of
	 * the four over the run (her best fixed strategy). */
	double eve_kdr;
	double eve_kdr_each[4];      /* a, a negated, b, b negated */
	double eve_kdr_per_block;    /* mean over blocks of her best per block
				      * (chosen after the fact: optimistic) */
	double entropy_bits;         /* sum of the windows' estimates */
	uint64_t blocks, blocks_delivered, blocks_dropped;
	uint64_t blocks_equal;       /* delivered with equal keys */
	uint64_t key_bits;           /* secret bits delivered */
	uint64_t final_errors;       /* Alice/Bob differences in delivered keys */
	double kdr_final;
	int keys_equal;              /* every delivered block equal */
	uint64_t leak_bits;          /* EC + verification tags, all blocks */
	uint64_t ec_leak_bits;
	double kgr_bits_per_probe, kgr_bits_per_s;
	double raw_bits_per_probe;
	/* Secret-key bound of the configured channel with Eve (I(X;Y|Z) per
	 * probe: the new information per window / window; iid probes with the
	 * remedy) and without Eve (I(X;Y)). */
	double bound_bits_per_probe;
	double bound_xy_bits_per_probe;
	double kgr_fraction_of_bound;
	/* Remedy only: upper bound on the whole session's secret bits against
	 * an eavesdropper who knows the random weights (docs/plkg.md 8): it
	 * grows like log(probes), so it is a budget per static position, not
	 * a rate. */
	double informed_eve_bound_bits;
	unsigned modes;              /* frequency modes */
	size_t features_per_window;  /* complex features with bits */
	char last_drop[96];          /* reason of the last dropped block */
	struct qw_bitvec *key;       /* Alice's delivered keys, concatenated */
	struct qw_bitvec *reconciled;/* Alice's reconciled bits before PA */
};

/* Simulate `probes` probe rounds over a channel drawn from seed: Alice,
 * Bob and Eve estimate, quantize by windows, and the blocks run through
 * qw_plkg_distill_local. The generated keys are simulation keys (seeded
 * generators): never for use outside the simulation. res->key and
 * res->reconciled are owned by the caller (qw_plkg_sim_result_free).
 * progress (may be NULL) is called after each block with the probes done.
 * 0, QW_EINVAL, QW_ENOMEM, or a distillation fault. */
QW_WUR int qw_plkg_simulate(const struct qw_plkg_params *p, uint64_t seed, uint64_t probes,
			    void (*progress)(void *ctx, uint64_t done, uint64_t total),
			    void *ctx, struct qw_plkg_sim_result *res);
/* Frees (wipes) res->key and res->reconciled; NULL accepted. */
void qw_plkg_sim_result_free(struct qw_plkg_sim_result *res);

#endif
