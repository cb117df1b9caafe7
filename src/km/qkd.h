/* QKD link endpoint threads of a node (src/km/qkd.c), driven by net.c. */
#ifndef QWAVE_KM_QKD_H
#define QWAVE_KM_QKD_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/km.h"

struct event;
struct km_qkd;

/* Start the endpoint thread of link lc. Alice's thread asks the loop for a
 * classical channel by activating want_ev (created on the loop's base,
 * libevent built thread-aware); Bob's waits for one. NULL and *err. */
struct km_qkd *km_qkd_start(struct qw_km *km, const struct qw_km_conf *c,
			    const struct qw_km_link_conf *lc, struct event *want_ev, int *err);
/* Loop side: 1 (and cleared) when the thread asked for a channel. */
int km_qkd_wants(struct km_qkd *q);
/* Hand the thread a connected channel (a socket whose other end the loop
 * bridges to the TLS connection); ownership of fd passes. */
void km_qkd_give_channel(struct km_qkd *q, int fd);
/* Stop (unblocking any I/O), join and free; NULL accepted. */
void km_qkd_stop(struct km_qkd *q);

/* ---- one session without a node (tests/unit/test_qkd_session.c) ---- */

/* The steps of a session's commit (docs/qkd-link.md, "Session commit"),
 * where a test may cut the classical connection. */
enum km_qkd_step {
	KM_QKD_STEP_RUN_DONE = 1,        /* the run ended well here; nothing written */
	KM_QKD_STEP_PENDING = 2,         /* next keys written as pending; COMMIT not sent */
	KM_QKD_STEP_COMMIT_SENT = 3,     /* our COMMIT sent; the peer's not read */
	KM_QKD_STEP_COMMIT_RECEIVED = 4, /* the peer's COMMIT verified; not yet adopted */
};

struct km_qkd_hooks {
	void *ctx;
	/* replaces qw_km_submit_block: a block for the pool (bits borrowed) */
	int (*submit)(void *ctx, uint64_t block_id, const uint8_t *bits, uint64_t nbits);
	/* called at each step (may be NULL); nonzero: the connection is shut
	 * down there and the session fails with QW_ECLOSED */
	int (*fault)(void *ctx, int alice, enum km_qkd_step step);
	/* authentication keys kept (2..8; 0: 8, as in qwaved) */
	unsigned keys;
};

/* An endpoint with no thread and no node: sessions run by
 * km_qkd_session() on the caller's thread, its keys in c->data_dir as in
 * qwaved. h is copied. Free with km_qkd_stop. NULL on allocation failure. */
struct km_qkd *km_qkd_new_detached(const struct qw_km_conf *c, const struct qw_km_link_conf *lc,
				   int alice, const struct km_qkd_hooks *h);
/* Run one session over the connected fd (not closed). 0 or QW_E*. */
int km_qkd_session(struct km_qkd *q, int fd);
/* The endpoint's counters (what it reports to the node). */
void km_qkd_get_report(struct km_qkd *q, struct qw_km_link_report *r);

#endif
