/* An in-process pair of connected distillation channels (struct
 * qw_distill_chan): what Alice sends, Bob receives, and the reverse, in
 * order. For running both ends of a pipeline stage in one process (one end
 * per thread), e.g. in tests, benchmarks and simulations; the link layer's
 * socket channel is the production equivalent.
 *
 * Messages are copied on send, so the sender may reuse or wipe its buffer at
 * once. recv blocks (condition variable) until a message arrives or the pair
 * is closed. Messages may carry key-derived data (parities, syndromes, MAC
 * tags), so undelivered ones are wiped when the pair is freed. */
#ifndef QWAVE_CHAN_LOCAL_H
#define QWAVE_CHAN_LOCAL_H

#include <stddef.h>

#include "qwave/distill.h"

struct qw_chan_local;

/* Create a connected pair and fill *alice and *bob with its two ends (both
 * non-NULL, else qw_misuse). The ends' ctx points into the returned handle:
 * they are valid until qw_chan_local_pair_free. send and recv are
 * thread-safe; send never blocks (unbounded queues); recv allocates *msg
 * (caller frees with free(), after wiping it if it matters). send returns 0,
 * QW_ENOMEM or QW_ECLOSED; recv returns 0 or QW_ECLOSED.
 * Returns NULL when out of memory. */
struct qw_chan_local *qw_chan_local_pair_new(struct qw_distill_chan *alice,
					     struct qw_distill_chan *bob);

/* Abort the pair: every receiver blocked now is woken with QW_ECLOSED, and
 * every later send or recv on either end returns QW_ECLOSED (messages still
 * queued are not delivered). Idempotent; thread-safe. */
void qw_chan_local_close(struct qw_chan_local *p);

/* Messages sent but not yet received, both directions together (lets a test
 * check that the two ends consumed everything the other sent). */
size_t qw_chan_local_pending(struct qw_chan_local *p);

/* Wipe and free undelivered messages and the pair; NULL accepted. No thread
 * may still be using an end. */
void qw_chan_local_pair_free(struct qw_chan_local *p);

#endif
