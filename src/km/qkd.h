/* QKD link endpoint threads of a node (src/km/qkd.c), driven by net.c. */
#ifndef QWAVE_KM_QKD_H
#define QWAVE_KM_QKD_H

#include <stddef.h>

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

#endif
