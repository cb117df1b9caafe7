/* Private state of the key manager shared by node.c, kmlink.c and
 * kme_impl.c. */
#ifndef QWAVE_KM_INTERNAL_H
#define QWAVE_KM_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "qwave/dashboard.h"
#include "qwave/km.h"
#include "qwave/kmlink.h"

struct event;
struct qw_route_path;
struct qw_route_db;
struct km_route;
struct km_relay;
struct km_relay_link;

/* Requests originated by the leader carry this bit in their seq, so the
 * two ends' request ids never collide on the one connection. */
#define KM_SEQ_LEADER (UINT64_C(1) << 63)
/* How long a follower retries a cut it cannot apply yet (its copy of the
 * block may still be on its way from the QKD link thread). */
#define KM_APPLY_RETRY_MS 3000
#define KM_APPLY_RETRY_STEP_MS 20

/* What the loop does with a queued block (external sources, source.c). */
enum km_block_kind {
	KM_BLOCK_POOL = 0,     /* append to the pool */
	KM_BLOCK_ACK = 1,      /* slave: append, then SOURCE_ACK (DROP if refused) */
	KM_BLOCK_DROP = 2,     /* slave: the fetch failed: SOURCE_DROP only */
	KM_BLOCK_ANNOUNCE = 3, /* master: hold it, SOURCE_BLOCK to the slave */
};

struct km_block {
	struct km_block *next;
	uint64_t id, nbits;
	uint8_t *bits;
	size_t nbytes;
	enum km_block_kind kind;
	uint32_t key_bits;     /* ANNOUNCE: the vendor keys' size */
	struct qw_uuid *ids;   /* ANNOUNCE: their IDs */
	size_t nids;
};

/* One SAE request waiting in a batch: number keys, answered through cb. */
struct km_waiter {
	qw_kme_keys_cb cb;
	void *arg;
	uint32_t number;
};

/* A batch of key requests originated at this node (its SAE is the master)
 * for one (master, slaves, size): group commit. Requests that arrive while
 * a batch to the same peer is in flight join an open batch, which is sent
 * as one cut - one store transaction and one KEYS_NEW at each end and one
 * delivery transaction for all of them - when the batch ahead completes. */
struct km_req {
	struct km_req *next;
	struct qw_km *km;
	struct km_peer *p;
	uint64_t seq;
	int sent;                  /* 0: open, still collecting requests */
	struct km_waiter *w;
	size_t nw, capw;
	struct qw_kmlink_keys k;   /* k.count = sum of numbers; k.ids set once
				    * the keys exist here */
	int cut_here;              /* leader: erase our keys if the peer refuses */
	struct event *timer;
};
/* Most keys one batch collects. */
#define KM_BATCH_MAX_KEYS 1024

/* Leader: a cut made for the follower's KEYS_REQ, awaiting its ACK.
 * Follower: a cut of the leader's own request, applied and ACKed here,
 * kept for a while so that the leader's NACK after its request timed out
 * can erase it (otherwise both ends keep keys nobody fetches). */
struct km_cut {
	struct km_cut *next;
	uint64_t seq;
	struct qw_uuid *ids;
	uint32_t count;
	int64_t ms;                /* follower: when applied */
};

/* Follower: an announced cut waiting to be applied, in arrival order. */
struct km_in {
	struct km_in *next;
	struct qw_kmlink_msg m;
	int64_t first_ms;
	int cancelled;             /* the leader timed it out: cut, then erase */
};

struct km_peer {
	struct qw_km *km;
	const struct qw_km_link_conf *lc;
	const char *id;
	int leader;
	struct bufferevent *bev;
	int up, got_pool, got_keys, got_done, sent_done;
	uint64_t next_seq;
	struct km_req *reqs;
	struct km_cut *cuts;
	struct km_in *in_head, *in_tail;
	struct event *retry_ev;
	/* blocks from the QKD link thread (mu) */
	pthread_mutex_t mu;
	struct km_block *blk_head, *blk_tail;
	struct qw_km_link_report rep;
	/* external source (source.c): master's announced blocks awaiting the
	 * slave's ACK, in id order (loop thread) */
	struct km_src *src;
	struct km_block *held_head, *held_tail;
	/* dashboard watcher (dashboard_state.c, loop thread): what the last
	 * look saw, so that an alarm is raised once per transition */
	int dash_was_up, dash_pool_ok, dash_qber_alarm;
	uint64_t dash_alarms, dash_sessions, dash_resyncs;
	uint64_t dash_auth_failures; /* QKD sessions that failed authentication */
	/* counters (loop thread) */
	uint64_t keys_master, keys_slave, keys_cut, resyncs, resync_dropped_keys;
	uint64_t requests_failed, blocks_appended, blocks_refused, batches;
	int inflight;              /* batches sent, not completed */
	int64_t last_rx_ms;        /* last frame received (heartbeat, route_node.c) */
	struct km_relay_link *relay; /* relay_node.c per-link state, or NULL */
	struct km_qkd *qkd;        /* qkd.c: the link's QKD endpoint (drill), or NULL */
};

struct km_status_count {
	int status;
	uint64_t n;
};

/* Recent alarms the node keeps for the dashboard (a ring, oldest
 * overwritten): enough for a screen, not a log (the log has them all). */
#define KM_DASH_ALARMS 100
#define KM_DASH_MSG_BYTES 160

struct km_alarm {
	int64_t ts_ms;             /* Unix time, ms */
	enum qw_dashboard_severity severity;
	const char *kind;          /* static string (dashboard.h kinds) */
	const char *peer;          /* link self-peer (conf string), or NULL: the node */
	const char *node;          /* another node it names (km_alarm_node), or NULL */
	char message[KM_DASH_MSG_BYTES];
};

struct km_dash {
	struct km_alarm ring[KM_DASH_ALARMS];
	size_t head, n;            /* next slot, alarms held */
	/* what qw_km_dashboard_state points the state into (loop thread) */
	struct qw_dashboard_node *nodes;
	struct qw_dashboard_link *links;
	struct qw_dashboard_alarm alarms[KM_DASH_ALARMS];
	struct event *tick;
};

struct qw_km {
	struct event_base *base;
	const struct qw_km_conf *conf;
	struct qw_store *store;
	struct km_peer *peers;
	size_t npeers;
	struct event *blocks_ev;
	void (*down_cb)(void *arg, const char *peer);
	void *down_arg;
	size_t pending;
	struct km_status_count status[16];
	uint64_t keys_delivered;
	/* keys DELIVERED in the store whose material never reached the SAE
	 * (allocation failure after the delivery transaction) */
	uint64_t keys_lost;
	struct km_dash *dash;
	/* key relay counters (relay-routing.md); zero until relaying is
	 * wired into the node */
	struct qw_dashboard_relays relays;
	struct km_route *route;    /* route_node.c: LSA database, policy, timers */
	struct km_relay *relay;    /* relay_node.c: relays in flight, replay window */
};

struct km_src;

struct km_peer *km_peer_find(struct qw_km *km, const char *id);
/* Thread-safe: queue a block of kind for p (bits and ids copied). */
int km_submit(struct km_peer *p, enum km_block_kind kind, uint64_t block_id, const uint8_t *bits,
	      uint64_t nbits, uint32_t key_bits, const struct qw_uuid *ids, size_t nids);
void km_block_free(struct km_block *b);
/* External sources (source.c), on the loop thread. */
void km_src_on_message(struct km_peer *p, const struct qw_kmlink_msg *m);
void km_src_link_up(struct km_peer *p);
void km_src_announce(struct km_peer *p, const struct km_block *b);
/* Start the vendor-KME source of link lc (its thread); stop joins it. */
struct km_src *km_src_start(struct qw_km *km, const struct qw_km_link_conf *lc, int *err);
void km_src_stop(struct km_src *s);
int64_t km_now_ms(void);
/* Send m on p's connection. 0, QW_ECLOSED (down), QW_ENOMEM, QW_EINVAL. */
int km_send(struct km_peer *p, const struct qw_kmlink_msg *m);
/* Drop p's connection: fail the requests waiting on it and tell down_cb. */
void km_peer_drop(struct km_peer *p, const char *why);
/* Append the queued blocks of p to the store (unless resynchronising). */
void km_drain_blocks(struct km_peer *p);
/* The same without retrying queued cuts; returns the blocks taken. */
size_t km_append_blocks(struct km_peer *p);
/* Complete r (err or keys), unlink and free it. */
void km_req_finish(struct km_req *r, int err, struct qw_kme_key *keys, size_t n);
/* Send the oldest open batch of p if none is in flight. */
void km_kick(struct km_peer *p);
/* Deliver the keys of r to its master SAE and complete it. */
void km_req_deliver(struct km_req *r);
/* Count and log (error level: IDs and count, never material) n keys
 * already DELIVERED in the store that did not reach sae: by ids, or (ids
 * NULL) by the key_id of keys. */
void km_keys_lost(struct qw_km *km, const char *sae, const struct qw_uuid *ids,
		  const struct qw_kme_key *keys, size_t n);
/* Erase keys that will never be delivered (ignores those already gone). */
void km_erase_ids(struct qw_km *km, const struct qw_uuid *ids, size_t n);
/* Follower: apply queued KEYS_NEW in order. */
void km_process_in(struct km_peer *p);
/* Dashboard state (dashboard_state.c): allocate and start the 1 s watcher
 * that turns link transitions into alarms (0 or QW_ENOMEM); free. */
int km_dash_init(struct qw_km *km);
void km_dash_free(struct qw_km *km);
/* Record an alarm for the dashboard (loop thread; does not log: the caller
 * logs). peer NULL: the alarm names this node. kind: a static string. */
void km_alarm(struct qw_km *km, enum qw_dashboard_severity sev, const char *kind,
	      const char *peer, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Look at every link now and record new alarms (also run by the watcher). */
void km_dash_watch(struct qw_km *km);
/* An alarm about node (another node: a string that outlives the alarm
 * ring, e.g. interned by route_node.c), not about a link. */
void km_alarm_node(struct qw_km *km, enum qw_dashboard_severity sev, const char *kind,
		   const char *node, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* ---- routing (route_node.c): the QKDN controller on this node ---- */

/* From qw_km_new after the peers exist / from qw_km_free before they go:
 * 0 or a QW_E* code. km_route_free accepts km->route NULL. */
int km_route_init(struct qw_km *km);
void km_route_free(struct qw_km *km);
/* An LSA or PING frame from p (PING arrives in any link state, LSA only
 * once p is up). */
void km_route_on_message(struct km_peer *p, const struct qw_kmlink_msg *m);
/* p's KM link went up or down (p->up tells which). Also called while the
 * node stops, after km_route_free (then km->route is NULL). */
void km_route_link_changed(struct km_peer *p);
/* Relay paths from this node to dst_node whose every link holds at least
 * need_bits, best first (routing.h qw_route_paths). 0, QW_ENOTFOUND, ... */
int km_route_paths(struct qw_km *km, const char *dst_node, uint64_t need_bits,
		   struct qw_route_path *paths, size_t max, size_t *n);
/* The node's authorization policy: 0 (allow) or QW_EPERM (deny: 401). */
int km_policy_check(struct qw_km *km, const char *master, const char *slave);
/* Raise (on) or clear the link's authentication alarm (a MAC failure of
 * a relay hop or the link): the link goes out in the LSAs as ALARM, so
 * every node's relays avoid it, and the dashboard shows "mac_failure". */
void km_route_set_alarm(struct km_peer *p, int on);
/* Append the routing metrics (Prometheus text) to b: 0 or QW_ENOMEM. */
int km_route_metrics(struct qw_km *km, struct qw_buf *b);
/* The link-state database (dashboard), or NULL while stopping. */
const struct qw_route_db *km_route_db(const struct qw_km *km);

/* ---- relay (relay_node.c): keys for SAEs at non-neighbour nodes ---- */

int km_relay_init(struct qw_km *km);
void km_relay_free(struct qw_km *km);
/* A RELAY, RELAY_ACK, RELAY_PAD_REQ or RELAY_PAD frame from p (up). */
void km_relay_on_message(struct km_peer *p, const struct qw_kmlink_msg *m);
/* p's KM link went up or down (hash keys reset, relays through it fail).
 * Also called after km_relay_free (km->relay NULL). */
void km_relay_link_changed(struct km_peer *p);
/* ETSI 014 Get key whose slaves are all attached to dst_node, which is
 * not a neighbour (req validated against the limits and the policy):
 * relay fresh keys there, answer cb (exactly once) after the destination
 * committed them. */
void km_relay_get_keys(struct qw_km *km, const struct qw_kme_get_key_req *req,
		       const char *dst_node, qw_kme_keys_cb cb, void *arg);
/* ETSI 014 Status towards dst_node (not a neighbour): *bits = key bits a
 * relay could deliver now (the best path's bottleneck), 0 when no path.
 * 0 or a QW_E* code. */
int km_relay_status(struct qw_km *km, const char *dst_node, uint64_t *bits);

/* Append the relay metrics (Prometheus text) to b: 0 or QW_ENOMEM. */
int km_relay_metrics(struct qw_km *km, struct qw_buf *b);

/* Append one metrics line (printf format, at most 511 bytes) to b: 0,
 * QW_EINVAL or QW_ENOMEM. Shared by node.c, route_node.c, relay_node.c. */
int km_pf(struct qw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Node an SAE is attached to (the [sae] sections), or NULL. */
const char *km_sae_node(const struct qw_km *km, const char *sae);

#endif
