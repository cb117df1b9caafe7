/* Key-relay routing and authorization: the QKDN controller functions of
 * ITU-T TR.SEC-QKD clause 5 ("authentication and authorization control,
 * routing control of key relay") run distributed on every node
 * (SYSTEM.md section 1, control layer; docs/relay-routing.md).
 *
 * Link-state routing in the manner of OSPF (RFC 2328, sections 12-13,
 * simplified): every node originates a link-state advertisement (LSA)
 * listing its KM links with their live state (up/down, pool level, QBER
 * alarm, key rate) and floods it over the KM links; every node keeps the
 * newest LSA of every origin (its link-state database) and computes relay
 * paths over it. The database and the flooding rules are a pure state
 * machine driven by the caller's clock (milliseconds, monotonic), so they
 * are tested without a network:
 *
 *   - an LSA is accepted when its sequence number is higher than the one
 *     held (or than a recently aged-out one) for its origin, and then
 *     forwarded to every neighbour whose KM link is up except the one it
 *     came from; anything else is dropped (this ends the flood);
 *   - the origin re-originates (sequence + 1) every refresh_ms, and at once
 *     when a link goes up or down, an alarm changes, or a pool crosses the
 *     low mark;
 *   - an LSA not refreshed for max_age_ms is removed (the node is dead), and
 *     its sequence number remembered for another max_age_ms, so a late copy
 *     cannot bring it back;
 *   - a node that receives its own LSA with a sequence number at least its
 *     own (it restarted and the network still holds its old LSA) jumps past
 *     it and re-originates.
 *
 * A link a-b is usable for a relay when both a's and b's LSAs are held and
 * list each other as up and not alarmed (two-way check: a dead node's
 * links vanish as soon as its neighbours see the KM link drop, before its
 * own LSA ages out) and both report at least the bits the relay needs
 * (the lower of the two reports counts).
 *
 * Wire format of an LSA (big-endian; IDs as in relay.h):
 *
 *   u8  version   QW_ROUTE_VERSION
 *   u8  reserved  0
 *   u16 n_links   0..QW_ROUTE_MAX_LINKS
 *   u64 seq       >= 1
 *   ID  origin
 *   n_links x { ID peer (distinct, != origin) | u8 flags QW_ROUTE_LINK_* |
 *               u64 pool_bits | u64 key_rate_bps | u32 qber_ppm (<= 10^6) } */
#ifndef QWAVE_ROUTING_H
#define QWAVE_ROUTING_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/buf.h"
#include "qwave/error.h"
#include "qwave/kmlink.h"
#include "qwave/relay.h"

#define QW_ROUTE_VERSION 1
#define QW_ROUTE_MAX_LINKS 64
#define QW_ROUTE_MAX_NODES 1024
/* Longest path in nodes (the relay message's limit). */
#define QW_ROUTE_MAX_PATH QW_RELAY_MAX_PATH
/* Most paths qw_route_paths returns. */
#define QW_ROUTE_MAX_K 8
/* Default timers (docs/relay-routing.md): a dead node is gone from every
 * database within max_age + one flood; its links at once. */
#define QW_ROUTE_REFRESH_MS 1000
#define QW_ROUTE_MAX_AGE_MS 4000

enum {
	QW_ROUTE_LINK_UP = 0x01,    /* KM link connected and resynchronised */
	QW_ROUTE_LINK_ALARM = 0x02, /* QBER alarm (eavesdropper) or MAC failure */
};

struct qw_route_link {
	char peer[QW_KMLINK_ID_MAX + 1];
	uint8_t flags;
	uint64_t pool_bits;     /* unconsumed link-key bits */
	uint64_t key_rate_bps;  /* secret key rate, bit/s */
	uint32_t qber_ppm;      /* last QBER, parts per million */
};

struct qw_lsa {
	char origin[QW_KMLINK_ID_MAX + 1];
	uint64_t seq;
	uint16_t n_links;
	struct qw_route_link links[QW_ROUTE_MAX_LINKS];
};

/* 0 or QW_EINVAL (limits as the parser), QW_ENOMEM. */
QW_WUR int qw_lsa_encode(const struct qw_lsa *l, struct qw_buf *out);
/* Parse one LSA of exactly len bytes. 0 or QW_EPARSE; *l undefined on
 * error. */
QW_WUR int qw_lsa_parse(const uint8_t *buf, size_t len, struct qw_lsa *l);

/* ---- link-state database ------------------------------------------------ */

struct qw_route_opts {
	int64_t refresh_ms;     /* 0: QW_ROUTE_REFRESH_MS */
	int64_t max_age_ms;     /* 0: QW_ROUTE_MAX_AGE_MS; must exceed refresh_ms */
	uint64_t low_pool_bits; /* crossing it floods at once (0: only 0 <-> >0) */
};

/* What the caller must send after a database call (every call taking an
 * out accepts NULL: nothing to report). Pointers point into the database
 * and stay valid until its next call. A struct qw_route_db is not
 * thread-safe: one owner (the node's event loop). */
struct qw_route_out {
	size_t n_fwd;            /* forward the received LSA (as received) to these */
	const char *fwd[QW_ROUTE_MAX_LINKS];
	int originate;           /* send qw_route_db_own() to every up neighbour */
};

struct qw_route_db;

/* Database of node self. first_seq (>= 1) is the sequence number of its
 * first LSA: use the Unix time in milliseconds, so that a restarted node
 * starts above its previous life. opts may be NULL. NULL on QW_ENOMEM or
 * invalid arguments. */
struct qw_route_db *qw_route_db_new(const char *self, uint64_t first_seq,
				    const struct qw_route_opts *opts);
void qw_route_db_free(struct qw_route_db *db);

/* Replace this node's own links (n <= QW_ROUTE_MAX_LINKS, distinct valid
 * peers, not self). When the change matters for routing (a link added or
 * removed, up/down or alarm flipped, a pool crossing the low mark or
 * zero) the own LSA gets seq + 1 and out->originate is set; otherwise the
 * new values go out with the next refresh. 0 or QW_EINVAL. */
QW_WUR int qw_route_db_set_links(struct qw_route_db *db, const struct qw_route_link *links,
				 size_t n, int64_t now_ms, struct qw_route_out *out);

/* An LSA l arrived from neighbour from (NULL: injected locally). 1 when it
 * was new (stored; forward it to out->fwd), 0 when it was not (dropped).
 * Its own LSA coming back newer than it holds sets out->originate. 0/1 or
 * QW_EINVAL (invalid LSA). */
QW_WUR int qw_route_db_receive(struct qw_route_db *db, const struct qw_lsa *l,
			       const char *from, int64_t now_ms, struct qw_route_out *out);

/* Timers: remove LSAs older than max_age (returns how many), and set
 * out->originate when the own LSA is due for its refresh (its seq is
 * incremented). Call it at least every refresh_ms / 2. */
int qw_route_db_tick(struct qw_route_db *db, int64_t now_ms, struct qw_route_out *out);

/* The own LSA (always present). */
const struct qw_lsa *qw_route_db_own(const struct qw_route_db *db);
/* LSAs held, own included; qw_route_db_get(db, i) for i < count, in no
 * particular order (stable until the next change); NULL past the end. */
size_t qw_route_db_count(const struct qw_route_db *db);
const struct qw_lsa *qw_route_db_get(const struct qw_route_db *db, size_t i);
/* The LSA of origin, or NULL. */
const struct qw_lsa *qw_route_db_find(const struct qw_route_db *db, const char *origin);

/* ---- path computation --------------------------------------------------- */

struct qw_route_path {
	size_t n;                /* nodes, n >= 1 (1: src == dst) */
	char nodes[QW_ROUTE_MAX_PATH][QW_KMLINK_ID_MAX + 1];
	uint64_t bottleneck_bits; /* smallest usable pool on the path (UINT64_MAX for n = 1) */
};

/* Nodes and links a path must avoid (e.g. the hop that just failed). links
 * holds n_links pairs: links[2i], links[2i+1] (either direction). */
struct qw_route_avoid {
	const char *const *nodes;
	size_t n_nodes;
	const char *const *links;
	size_t n_links;
};

/* Best path src -> dst over usable links with at least need_bits each:
 * fewest hops, then the largest bottleneck pool, then the smallest node IDs
 * (deterministic). avoid may be NULL. 0, QW_ENOTFOUND (no such path, or
 * src/dst unknown), QW_ERANGE (only paths longer than QW_ROUTE_MAX_PATH),
 * QW_EINVAL. */
QW_WUR int qw_route_path(const struct qw_route_db *db, const char *src, const char *dst,
			 uint64_t need_bits, const struct qw_route_avoid *avoid,
			 struct qw_route_path *p);
/* Up to k (<= QW_ROUTE_MAX_K) loopless paths in the order above (Yen's
 * algorithm, J. Y. Yen, Management Science 17 (1971) 712-716): the
 * fallbacks to try when a relay on the first fails. *n gets how many were
 * found (0: QW_ENOTFOUND). 0, QW_ENOTFOUND, QW_EINVAL, QW_ENOMEM. */
QW_WUR int qw_route_paths(const struct qw_route_db *db, const char *src, const char *dst,
			  uint64_t need_bits, size_t k, struct qw_route_path *paths, size_t *n);

/* ---- per-SAE authorization ---------------------------------------------- */

/* Rules "SAE a may obtain keys with SAE b", checked in order, first match
 * wins, else the default. A rule text is
 *     allow|deny <master pattern> -> <slave pattern>
 *     allow|deny <pattern> <-> <pattern>        (both directions)
 * patterns: SAE ID characters and '*' (any run of characters, also
 * empty). The ETSI 014 front end asks qw_route_policy_check(master, slave)
 * for enc_keys (caller = master, for each slave) and dec_keys (caller =
 * slave, master from the key); a deny is HTTP 401. */
struct qw_route_policy;

/* New empty policy answering default_allow (nonzero: allow) when no rule
 * matches. NULL on QW_ENOMEM. Checks may run concurrently once no rule is
 * being added. */
struct qw_route_policy *qw_route_policy_new(int default_allow);
void qw_route_policy_free(struct qw_route_policy *p);
/* Append a rule. 0, QW_EINVAL (pattern empty, too long (> 64) or with
 * other characters), QW_ENOMEM. */
QW_WUR int qw_route_policy_add(struct qw_route_policy *p, int allow, const char *master_pat,
			       const char *slave_pat, int both_ways);
/* Append a rule given as text (above; spaces and tabs separate words). 0,
 * QW_EPARSE, QW_ENOMEM. */
QW_WUR int qw_route_policy_add_text(struct qw_route_policy *p, const char *rule);
/* 0 when master may obtain keys with slave, QW_EPERM otherwise. */
QW_WUR int qw_route_policy_check(const struct qw_route_policy *p, const char *master,
				 const char *slave);
/* 1 when the '*'-pattern pat matches the whole of s. */
int qw_route_pattern_match(const char *pat, const char *s);

#endif
