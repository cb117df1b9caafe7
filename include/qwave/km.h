/* The key manager (KM) of one trusted node: its configuration, its KM links
 * to neighbouring nodes, and the kme.h operations the ETSI GS QKD 014 front
 * end calls (docs/operations.md describes running it).
 *
 * Pool ownership rule (one order of consumption per link pool): of the two
 * nodes of a link, the one whose ID sorts first (strcmp) is the link's
 * LEADER - it is also the QKD link's Alice and the side that connects. Only
 * the leader cuts keys from the pool. When an SAE at the leader asks for
 * keys, the leader cuts (one store transaction), announces the cut with
 * KEYS_NEW {ids, position, size, master, slaves} and answers the SAE only
 * after the follower's ACK, i.e. after the follower's store committed the
 * same keys (qw_store_key_create with the announced ids and expected
 * position): the slave SAE can never ask too early. When an SAE at the
 * follower asks, the follower sends KEYS_REQ; the leader cuts and replies
 * KEYS_NEW; the follower commits, answers its SAE, and ACKs. The follower
 * applies KEYS_NEW strictly in arrival order, so both stores consume the
 * pool identically; a cut the follower cannot apply (QW_ESTATE after a
 * short retry) makes it drop the connection, and the resynchronisation on
 * reconnect (docs/store.md) brings both ends back in step.
 *
 * Threading: a struct qw_km lives on one libevent loop; every function
 * below is called on that loop's thread except qw_km_submit_block and
 * qw_km_link_report, which QKD link threads call. */
#ifndef QWAVE_KM_H
#define QWAVE_KM_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/buf.h"
#include "qwave/config.h"
#include "qwave/error.h"
#include "qwave/keysource.h"
#include "qwave/kme.h"
#include "qwave/link.h"
#include "qwave/log.h"
#include "qwave/optics.h"
#include "qwave/store.h"

struct event_base;
struct bufferevent;

/* ---- configuration (src/km/config.c) ---------------------------------- */

enum qw_km_source {
	QW_KM_SOURCE_SIM = 1,      /* simulated decoy-state BB84 link run by qwaved */
	QW_KM_SOURCE_ETSI014 = 2,  /* keys of a vendor QKD pair pulled from its KMEs
				    * over ETSI 014 (keysource.h) */
};

struct qw_km_link_conf {
	const char *peer;          /* neighbour node ID */
	const char *address;       /* peer's listener "host:port" (the leader dials it) */
	enum qw_km_source source;
	struct qw_optics_config optics;
	double block_bits;         /* kept key bits per distillation block */
	uint32_t blocks_per_session;
	enum qw_link_bounds bounds;
	enum qw_link_ec ec;
	double qber_threshold;
	double pace;               /* 1: real time at pulse_rate_hz; 0: as fast as the CPU */
	const char *psk_file;      /* bootstrap authentication key (both ends alike) */
	/* source etsi014: the vendor KME (kme_* keys, keysource.h); the
	 * leader must be the master */
	struct qw_etsi_source_conf etsi;
	int line;
};

struct qw_km_sae_conf {
	const char *id;
	const char *node;          /* node the SAE is attached to */
	int line;
};

struct qw_km_limits {
	uint32_t key_size, max_key_per_request, max_key_size, min_key_size;
	uint64_t max_key_count;
	uint32_t max_sae_id_count;
};

/* A validated node configuration. Strings point into the struct qw_config
 * it was loaded from, which must outlive it. */
struct qw_km_conf {
	const char *id, *data_dir;
	enum qw_log_level log_level;
	int json_log;
	const char *listen;        /* KM-link/classical-channel listener, or NULL */
	const char *cert, *key, *ca; /* node certificate, key, network CA */
	const char *master_key_file; /* NULL: <data_dir>/master.key */
	const char *status_file;   /* NULL: <data_dir>/status.json */
	enum qw_store_sync sync;
	const char *etsi_listen, *etsi_cert, *etsi_key, *etsi_ca; /* listen NULL: none */
	const char *metrics_listen;
	struct qw_km_limits limits;
	uint32_t request_timeout_ms;
	/* [routing] (docs/relay-routing.md, routing.h struct qw_route_opts) */
	struct {
		uint32_t refresh_ms, max_age_ms; /* LSA refresh and ageing */
		uint64_t low_pool_bits;          /* pool level that re-originates at once */
		uint32_t heartbeat_ms, dead_ms;  /* PING on idle KM links; link down after dead_ms silent */
	} routing;
	/* [relay] (relay.h) */
	struct {
		uint32_t rekey_every;    /* WC hash key lifetime, messages */
		double batch_target;     /* link-key efficiency a batch waits for */
		uint32_t batch_wait_ms;  /* longest a request waits for a batch to fill */
		uint32_t timeout_ms;     /* relay end to end (then the next path) */
		uint32_t key_lifetime_s; /* relayed keys not fetched by then are erased */
	} relay;
	/* [policy]: default allow/deny, rules in file order
	 * (qw_route_policy_add_text; rule_lines for error messages) */
	int policy_default_allow;
	const char **policy_rules;
	int *policy_rule_lines;
	size_t npolicy_rules;
	struct qw_km_link_conf *links;
	size_t nlinks;
	struct qw_km_sae_conf *saes;
	size_t nsaes;
};

/* Validate cfg as a node configuration into *c (zeroed first). Sections:
 * [node] [etsi] [metrics] [limits] [link]* [sae]* [routing] [relay]
 * [policy] (its `rule` key repeats: one rule per line, in order); every
 * key is listed in docs/operations.md. 0, or QW_EINVAL/QW_EPARSE/QW_ERANGE/QW_ENOTFOUND
 * with err->msg "file:line: ..." for the first problem; QW_ENOMEM. Release
 * with qw_km_conf_clear (also after an error). */
QW_WUR int qw_km_conf_load(const struct qw_config *cfg, struct qw_km_conf *c,
			   struct qw_config_error *err);
void qw_km_conf_clear(struct qw_km_conf *c);

/* Split "host:port" (port 0..65535; host a dotted IPv4 address or
 * "localhost"). 0 or QW_EPARSE. */
QW_WUR int qw_km_parse_addr(const char *s, char host[64], uint16_t *port);

/* ---- network topology (src/km/topology.c) ------------------------------ */

/* A whole network on one machine, for `qwave net up` (docs/operations.md):
 *   [node] id = ...                      one per node
 *   [link] a = .. b = .. length_km = ..  plus any [link] key of a node
 *                                        configuration except peer,
 *                                        address, psk_file, distance_km
 *   [sae]  id = .. node = ..             the node an SAE is attached to
 *   [limits]                             copied into every node
 *   [routing] [relay] [policy]           copied into every node (checked
 *                                        as a node configuration would)
 * Strings point into the struct qw_config, which must outlive it. */
struct qw_km_topo_link {
	const char *a, *b;
	double length_km;
	const struct qw_config_section *sec; /* optics/distillation overrides */
	int line;
};

struct qw_km_topo {
	const char **nodes;
	size_t nnodes;
	struct qw_km_topo_link *links;
	size_t nlinks;
	struct qw_km_sae_conf *saes;
	size_t nsaes;
	const struct qw_config_section *limits; /* or NULL */
};

/* Validate a topology (IDs, unknown keys, links between declared nodes,
 * no duplicate link, SAEs at declared nodes; override values are checked
 * as a node configuration would). 0 or QW_E* with err "file:line: ...";
 * release with qw_km_topo_clear (also after an error). */
QW_WUR int qw_km_topo_load(const struct qw_config *cfg, struct qw_km_topo *t,
			   struct qw_config_error *err);
void qw_km_topo_clear(struct qw_km_topo *t);
/* Keys a topology [link] may carry besides a, b and length_km (the node
 * configuration's [link] keys it passes through), NULL-terminated. */
extern const char *const qw_km_topo_link_keys[];

/* ---- the key manager (src/km/node.c, kme_impl.c) ----------------------- */

struct qw_km;

/* New key manager for conf (borrowed, must outlive it) on base, keeping
 * keys in store (borrowed). NULL and *err: QW_ENOMEM. */
struct qw_km *qw_km_new(struct event_base *base, const struct qw_km_conf *conf,
			struct qw_store *store, int *err);
/* Fails every request still pending (QW_ECLOSED), closes the KM links,
 * frees. NULL accepted. */
void qw_km_free(struct qw_km *km);

/* The ETSI 014 operations; ctx is the struct qw_km. */
const struct qw_kme_ops *qw_km_kme_ops(void);

/* 1 when this node leads (cuts keys on) the link to peer. */
int qw_km_is_leader(const char *self, const char *peer);

/* Hand the KM link to peer a connected, mutually authenticated transport
 * (TLS in qwaved, a bufferevent pair in tests). Ownership of bev passes to
 * km (also on error). Any earlier connection to peer is closed; the
 * resynchronisation starts at once. 0, QW_ENOTFOUND (no [link] to peer),
 * QW_ENOMEM. */
QW_WUR int qw_km_attach(struct qw_km *km, const char *peer, struct bufferevent *bev);
/* 1 when the KM link to peer is up and resynchronised. */
int qw_km_link_up(struct qw_km *km, const char *peer);
/* Called (on the loop) whenever a KM link goes down, so the caller can
 * reconnect. */
void qw_km_set_down_cb(struct qw_km *km, void (*cb)(void *arg, const char *peer), void *arg);

/* The neighbour that serves slave SAE sae (a [sae] attached to a peer node
 * of one of this node's links): 0 and *peer, QW_ENOTFOUND (unknown SAE),
 * QW_ESTATE (the SAE is attached to this node itself: keys between two
 * SAEs of one node are not served yet), QW_EUNSUPPORTED (the SAE's node is
 * not a neighbour: multi-hop relay is the next step). */
QW_WUR int qw_km_route(struct qw_km *km, const char *sae, const char **peer);

/* Thread-safe: a distilled secret block for peer's pool; queued and
 * appended to the store on the loop (paused during a resynchronisation, so
 * a pool list sent to the peer is never outdated by our own append).
 * bits are copied. 0, QW_ENOTFOUND, QW_ENOMEM. */
QW_WUR int qw_km_submit_block(struct qw_km *km, const char *peer, uint64_t block_id,
			      const uint8_t *bits, uint64_t nbits);

/* Thread-safe: QKD link state for metrics. */
struct qw_km_link_report {
	int up;                    /* classical channel connected */
	double qber;               /* last session's QBER estimate */
	double key_rate_bps;       /* secret bits / wall second, last session */
	uint64_t secret_bits;      /* total */
	uint64_t sessions, blocks_delivered, blocks_dropped;
	uint64_t alarms;           /* QBER alarms */
	/* 1 from a session whose blocks hit the QBER alarm until a session
	 * completes below the threshold: the link is under attack (or
	 * broken) and routing should avoid it */
	int qber_alarm;
	/* sessions that failed authentication on the classical channel
	 * (QW_EAUTH: a tag or the key-confirmation transcript did not
	 * verify): tampering, or keys out of step */
	uint64_t auth_failures;
};
void qw_km_link_report(struct qw_km *km, const char *peer, const struct qw_km_link_report *r);

/* Eavesdropper drill (docs/operations.md): intercept-resend on a fraction
 * f in [0, 1] of the pulses of the simulated QKD link to peer, from its
 * next session on (0 switches the attack off). Only the end that runs the
 * optics simulation (the link's Alice, qw_km_is_leader) can do it. Loop
 * thread. 0, QW_ENOTFOUND (no QKD link to peer), QW_ESTATE (the peer's
 * end simulates the link), QW_EINVAL (f outside [0, 1]). */
QW_WUR int qw_km_drill_eve(struct qw_km *km, const char *peer, double f);

/* Requests whose callback has not run yet. */
size_t qw_km_pending(struct qw_km *km);

/* Count an ETSI 014 reply status for metrics (the front end's access log). */
void qw_km_count_status(struct qw_km *km, int status);

/* ---- node networking (src/km/net.c, src/km/qkd.c) --------------------- */

struct qw_km_net;

/* Listen on conf->listen (TLS 1.3, mutual authentication with the node
 * certificate conf->cert/key against conf->ca; a peer is accepted only if
 * its certificate names a neighbour node), dial the KM links this node
 * leads (redialling every second while down), and run one QKD link
 * endpoint thread per [link] feeding km's pools. Needs libevent's thread
 * support (evthread_use_pthreads before base was made). A node without
 * links or listener gets an idle object. NULL and *err: QW_ECRYPTO
 * (certificate, key or CA unusable), QW_EIO (cannot listen), QW_EINVAL,
 * QW_ENOMEM. */
struct qw_km_net *qw_km_net_start(struct qw_km *km, struct event_base *base,
				  const struct qw_km_conf *conf, int *err);
/* The listener's bound TCP port (0 when none). */
uint16_t qw_km_net_port(const struct qw_km_net *net);
/* Stop the link threads (joined), close every connection. NULL accepted. */
void qw_km_net_stop(struct qw_km_net *net);
/* Bytes of one per-session authentication key of a link (Wegman-Carter
 * hash keys and one-time pads, frame.h layout) for error correction ec. A
 * bootstrap psk_file holds one such key, or two: the second is the reserve
 * that the session after a failed (crashed, stopped) one runs on, since a
 * key is marked used before its session starts and never serves twice. */
size_t qw_km_psk_bytes(enum qw_link_ec ec);

/* Append the node's metrics in Prometheus text exposition format 0.0.4 to
 * out. 0 or QW_ENOMEM. */
QW_WUR int qw_km_metrics(struct qw_km *km, struct qw_buf *out);

struct qw_dashboard_state;
/* The dashboard state (dashboard.h; a qw_dashboard_state_fn, arg the
 * struct qw_km) as this node sees it: the whole network of its link-state
 * database - every node an LSA names ("up" when a relay path from here
 * reaches it; a neighbour also while its KM link is up) and every link
 * with each end's pool as that end reports it, QBER, key rate and alarm
 * flag; its own links with the local detail (length, KM-link state, the
 * last session's QBER and key rate, the QBER alarm) - the last 100 alarms
 * (link down, QBER above the threshold, pool exhausted, MAC failure, node
 * unreachable) and the relay counters (docs/dashboard.md). A 1 s watcher on the loop raises
 * the alarms from link transitions. Pointers go into km, valid until the
 * next call or qw_km_free. Loop thread. 0 or QW_ENOMEM. */
int qw_km_dashboard_state(void *km, struct qw_dashboard_state *st);

#endif
