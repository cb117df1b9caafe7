/* The distillation pipeline runner: one endpoint of a link runs key blocks
 * through an array of stages (include/qwave/distill.h) while the peer runs
 * the mirrored array, the two talking over one authenticated framed
 * connection (include/qwave/frame.h).
 *
 * Several blocks are in flight at once so that round trips do not idle the
 * CPU: frames are routed by stream id (= block id) to per-block queues;
 * `workers` threads each take the next block from the source and run it
 * through every stage, a stage's chan->recv waiting on that block's queue
 * only; sends from all workers are serialized by the connection. A worker
 * whose queue is empty reads the connection itself when no other thread
 * does (queuing other blocks' frames on the way), so a frame usually costs
 * one thread wake-up; a demultiplexer thread reads only when no worker
 * does (and until the peer's FIN once the workers are done).
 *
 * Both ends draw blocks from their own source in the same order with
 * consecutive ids (the ids the auth pool expects). A block ends in one of
 * two ways, the same on both sides in a correct run:
 *   delivered: every stage returned FORWARD and the block is AMPLIFIED; the
 *     first auth share of its key (see auth_share) is deposited into the
 *     auth pool, the rest goes to sink->deliver;
 *   dropped: a stage returned DROP or ERROR, or the peer dropped it (a DROP
 *     frame carries the reason; the local stage then sees QW_EABORT from
 *     recv); an empty deposit keeps the pool in step, sink->dropped reports
 *     the reason.
 * Auth pads return only as blocks finish, in id order, so a worker never
 * starts block id >= (oldest unfinished id) + workers. The pool must hold
 * the pads of `workers` blocks in flight; a delivered block gives back at
 * least what its frames spent, a dropped block nothing, so a long run of
 * dropped blocks (an attack) ends in QW_EAGAIN: pool exhausted.
 * A connection failure (MAC failure, replay, closed socket, pad pool
 * exhausted) aborts the whole run. When both sources are exhausted each side
 * sends FIN; the run returns once it has sent FIN and received the peer's. */
#ifndef QWAVE_PIPELINE_H
#define QWAVE_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/distill.h"
#include "qwave/error.h"
#include "qwave/frame.h"

struct qw_pipeline_source {
	void *ctx;
	/* Next block (ids consecutive, starting at the auth pool's first id),
	 * owned by the runner from then on; *b = NULL when there are no more.
	 * Called by one worker at a time, without the runner's internal lock
	 * held, so it may block (e.g. until a block is ready). 0 or QW_E*
	 * (aborts the run). */
	int (*next)(void *ctx, struct qw_key_block **b);
};

struct qw_pipeline_sink {
	void *ctx;
	/* A finished block: b->key holds the secret bits after the auth share
	 * was taken, b->secret_bits the length before. b is borrowed for the
	 * call. Calls are serialized but come from worker threads, in
	 * completion order (not necessarily id order). May be NULL. */
	void (*deliver)(void *ctx, const struct qw_key_block *b);
	/* A dropped block and why (b->key may be NULL or partial). May be NULL. */
	void (*dropped)(void *ctx, const struct qw_key_block *b, const char *reason);
};

struct qw_pipeline_params {
	enum qw_role role;
	const struct qw_stage *stages; /* nstages entries */
	size_t nstages;
	/* stage_params[i] is handed to stages[i].init (array may be NULL). */
	const void *const *stage_params;
	/* Worker threads (0 = 2). Each inits its own state of every stage, so
	 * stage state needs no locking. */
	unsigned workers;
	/* Auth pool replenishment from each delivered block: the first
	 *   min(n, max(auth_share n, 256 F))
	 * bits of its n secret bits, rounded down to whole QW_AUTH_UNIT_BYTES
	 * (256 bits), where F = frames of the block in the busier direction
	 * (the pads it spent; the same number at both ends). Both ends must
	 * use the same value. 0 disables replenishment. */
	double auth_share;
	/* Wait for a peer message before giving up (0 = 60000 ms). */
	int recv_timeout_ms;
};

struct qw_pipeline_stats {
	uint64_t blocks_delivered, blocks_dropped;
	uint64_t secret_bits;       /* delivered to the sink (after the auth share) */
	uint64_t auth_bits;         /* deposited into the auth pool */
	uint64_t frames_sent, frames_received;
	uint64_t bytes_sent, bytes_received; /* frame bodies */
};

/* Run the pipeline on this endpoint until both ends are done. conn, pool,
 * src and sink are borrowed (sink may be NULL). stats (may be NULL) is
 * filled in every case. Returns 0 when every block was delivered or dropped
 * and both FINs were exchanged; QW_EINVAL for bad params (no stages, share
 * outside [0, 1]); QW_EPROTO / QW_EAUTH / QW_ECLOSED / QW_EIO / QW_EAGAIN /
 * QW_ETIMEOUT when the connection failed (the run is aborted and the
 * connection shut down, so the peer's run fails too); QW_ENOMEM; or the
 * source's error. */
QW_WUR int qw_pipeline_run(const struct qw_pipeline_params *p, struct qw_frame_conn *conn,
			   struct qw_auth_pool *pool, const struct qw_pipeline_source *src,
			   const struct qw_pipeline_sink *sink, struct qw_pipeline_stats *stats);

#endif
