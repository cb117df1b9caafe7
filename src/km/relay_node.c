/* Key relay on the node (docs/relay-routing.md "The relay protocol, step
 * by step"; include/qwave/relay.h): ETSI 014 Get key for a slave SAE at a
 * node that is not a neighbour. The origin draws fresh keys from its DRBG,
 * stores them (RESERVED for the master and slaves, peer = destination), and
 * sends them hop by hop along a path from the routing database; every hop
 * is one-time-pad encrypted and Wegman-Carter authenticated with bits of
 * that hop's link pool (formula (1) of relay.h, exactly). The destination
 * stores the keys and ACKs along the reverse path; only then does the
 * origin hand the keys to its master SAE. A lone request is topped up with
 * stock keys of its own binding (struct rl_stock), which serve the next
 * requests of that binding without a relay.
 *
 * Pool order. Only a link's leader decides where its pool is consumed
 * (km.h). A hop from the leader takes its pad at once and states the
 * position. A hop from the follower asks the leader (RELAY_PAD_REQ); the
 * leader takes and keeps the pad and grants the position (RELAY_PAD). The
 * follower applies every position the leader states - RELAY pads and
 * grants here, KEYS_NEW cuts in kmlink.c - in the leader's order: each
 * take is made with expect = the stated position, and a take whose
 * position the pool has not reached yet (a KEYS_NEW still queued ahead of
 * it, or a block still on its way) waits and is retried like a KEYS_NEW
 * (KM_APPLY_RETRY_MS); a KEYS_NEW queued behind a waiting relay pad gets
 * QW_ESTATE and retries the same way. A position behind the pool's cursor
 * (already consumed) means the ends are out of step: the link is dropped
 * and resynchronised. Bits once taken at one end are always taken at the
 * other, whatever becomes of the relay (a refused or tampered message
 * still consumes its pad at the receiver), so the pools stay in step. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "km_internal.h"
#include "qwave/log.h"
#include "qwave/relay.h"
#include "qwave/rng.h"
#include "qwave/routing.h"
#include "qwave/secmem.h"

/* Fallback paths an origin tries after a failure (relay-routing.md step 2). */
#define RL_MAX_PATHS 3
/* Retry step of a take whose position the pool has not reached yet. */
#define RL_RETRY_STEP_MS 2
/* Replay window at the destination (relay-routing.md "replay protection"). */
#define RL_REPLAY_CAP 65536
#define RL_REPLAY_AGE_MS 60000
/* Deadline sweep of relays in flight and granted pads. */
#define RL_SWEEP_MS 50
/* Expiry sweep of the store's keys: a quarter of [relay] key_lifetime_s,
 * within these bounds (each sweep is one store transaction that reads
 * every key row, so not much more often than needed). */
#define RL_EXPIRE_MIN_MS 250
#define RL_EXPIRE_MAX_MS 10000
/* A link's authentication alarm (routing avoids the link) is cleared after
 * this many relay timeouts without a new MAC failure on it. */
#define RL_ALARM_HOLD_TIMEOUTS 1
/* Relay latency histogram bounds (seconds). */
static const double lat_bounds[] = { 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5 };
#define RL_NBUCKETS (sizeof(lat_bounds) / sizeof(lat_bounds[0]))

enum { RL_APPLY_RELAY = 1, RL_APPLY_GRANT = 2 };
/* ACK hop of a leader refusing a pad: "the node after you" (it does not
 * know its index in the path). */
#define RL_HOP_NEXT 0xff

/* Follower: a take at a position the leader stated, in arrival order. */
struct rl_apply {
	struct rl_apply *next;
	int kind;
	struct qw_store_pos pos;
	uint64_t bits;
	struct qw_uuid relay_id;   /* GRANT */
	struct qw_relay_msg m;     /* RELAY: the parsed hop message */
	int64_t first_ms;
};

/* Leader: a pad granted to the follower, kept until its RELAY arrives. */
struct rl_pad {
	struct rl_pad *next;
	struct qw_uuid relay_id;
	uint64_t bits;
	struct qw_store_pos pos;
	uint8_t *pad;
	size_t len;
	int64_t expires_ms;
};

struct km_relay_link {
	struct qw_relay_mac tx, rx;
	/* follower as sender: the tx hash key state as the RELAY_PAD_REQs
	 * already sent will leave it (the flags are fixed when asking) */
	int plan_key;
	uint32_t plan_uses;
	struct rl_apply *q_head, *q_tail;
	struct rl_pad *pads;
	struct event *retry;
	int64_t alarm_until_ms;    /* 0: no authentication alarm raised here */
	int drop_pending;          /* pools out of step: drop (resync) at the next sweep */
	uint64_t bits_consumed, mac_failures, hops_sent, hops_received;
};

struct rl_batch;

/* One relay through this node: origin (prev NULL), intermediate or (only
 * while a follower's hop waits for its pad) any sender. */
struct rl_entry {
	struct rl_entry *next;
	struct qw_uuid id;
	struct km_peer *prev, *nextp;
	unsigned idx;              /* this node's index in the path */
	int64_t deadline_ms;
	struct rl_batch *b;        /* origin only */
	struct qw_relay_msg m;     /* the hop to send */
	uint8_t *keys;             /* its plaintext (secure), until sealed */
	size_t klen;
	int awaiting_pad;
	uint8_t planned_flags;
};

/* One ETSI request in a batch: keys [off, off + number) of group gi.
 * Requests for the same SAE binding and size share one group (one store
 * transaction at each end for all of them). */
struct rl_req {
	qw_kme_keys_cb cb;
	void *arg;
	uint32_t gi, off, number;
};

/* Stock (relay-routing.md "Batching"): keys a lone request's relay
 * carried beyond it, in the request's own group - so the destination holds
 * them RESERVED for the same master and slaves, committed before the ACK -
 * kept RESERVED here and handed to the next requests with that binding
 * without a relay. */
struct rl_stock {
	struct rl_stock *next;
	char dst[QW_KMLINK_ID_MAX + 1];
	struct qw_relay_group g;   /* binding and size; g.ids = ids */
	struct qw_uuid *ids;
	uint32_t used;             /* ids[0, used) handed out */
	int64_t expires;           /* Unix s, as stored at both ends */
};

/* Requests for one destination sent as one relay (relay-routing.md
 * "batching"). */
struct rl_batch {
	struct rl_batch *next;
	struct km_relay *R;
	char dst[QW_KMLINK_ID_MAX + 1];
	struct rl_req *w;
	size_t nw, capw;
	struct qw_relay_group g[QW_RELAY_MAX_GROUPS]; /* g[i].ids point into ids */
	uint32_t ng;
	uint32_t keys;
	uint64_t payload_bits;
	int sent;
	struct event *timer;
	struct qw_route_path paths[RL_MAX_PATHS];
	size_t npaths, pi;
	struct qw_uuid *ids;       /* this attempt's key ids, stored here */
	int stored;
	int64_t t0_us;
	uint32_t stock_gi, stock_n; /* the last stock_n keys of group stock_gi
				     * are stock, not asked for */
};

struct km_relay {
	struct qw_km *km;
	struct qw_rng *rng;
	struct qw_relay_replay *replay;
	struct rl_entry *entries;
	struct rl_batch *batches;
	struct rl_stock *stock;
	struct event *sweep;
	struct event *expire;      /* expired keys erased (on_expire) */
	struct km_relay_link *links; /* one per peer, same index */
	uint64_t key_bits;         /* payload bits of relays committed (origin) */
	uint64_t lat_count, lat_bucket[RL_NBUCKETS];
	double lat_sum;
	uint64_t batched_requests; /* requests sent in relays (origin) */
	uint64_t origin_relays;    /* relay attempts started (origin) */
	uint64_t keys_expired;     /* keys the expiry sweep erased */
	uint64_t stock_added, stock_served; /* stock keys (origin) */
};

static int64_t unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static struct km_relay_link *link_of(struct km_peer *p)
{
	return p->relay;
}

static struct km_peer *up_peer(struct qw_km *km, const char *id)
{
	struct km_peer *p = km_peer_find(km, id);

	return p && p->up && p->relay ? p : NULL;
}

static int pos_less(const struct qw_store_pos *a, const struct qw_store_pos *b)
{
	return a->block_id < b->block_id || (a->block_id == b->block_id && a->bit < b->bit);
}

static int send_body(struct km_peer *p, uint8_t type, const struct qw_buf *body)
{
	struct qw_kmlink_msg m;

	memset(&m, 0, sizeof(m));
	m.type = type;
	m.u.raw.body = body->data;
	m.u.raw.len = body->len;
	return km_send(p, &m);
}

static void send_ack(struct km_peer *p, const struct qw_uuid *id, unsigned hop, int status)
{
	struct qw_relay_ack a;
	struct qw_buf b;

	if (!p)
		return;
	memset(&a, 0, sizeof(a));
	a.relay_id = *id;
	a.hop = (uint8_t)hop;
	a.status = status <= 0 && status >= -99 ? status : QW_EPROTO;
	qw_buf_init(&b, 0);
	if (!qw_relay_ack_encode(&a, &b))
		(void)send_body(p, QW_KMLINK_RELAY_ACK, &b);
	qw_buf_free(&b);
}

static void mac_reset_tx(struct km_relay_link *L)
{
	qw_relay_mac_reset(&L->tx);
	L->plan_key = 0;
	L->plan_uses = 0;
}

static void count_bits(struct qw_km *km, struct km_relay_link *L, uint64_t bits)
{
	L->bits_consumed += bits;
	km->relays.bits_consumed += bits;
}

/* A hop's MAC failed on the link to p (tampering, or a lost hash key):
 * alarm, and routing avoids the link for a while. */
static void mac_failure(struct km_relay *R, struct km_peer *p, const struct qw_relay_msg *m)
{
	struct km_relay_link *L = link_of(p);
	char id[QW_UUID_STR_BYTES];

	L->mac_failures++;
	R->km->relays.auth_failures++;
	qw_uuid_format(&m->relay_id, id);
	qw_log(QW_LOG_ERROR, "relay %s: hop from %s failed authentication (tampering?): keys discarded",
	       id, p->id);
	L->alarm_until_ms = km_now_ms() + (int64_t)R->km->conf->relay.timeout_ms * RL_ALARM_HOLD_TIMEOUTS;
	km_route_set_alarm(p, 1);
}

/* ---- entries -------------------------------------------------------------- */

static struct rl_entry *entry_find(struct km_relay *R, const struct qw_uuid *id)
{
	for (struct rl_entry *e = R->entries; e; e = e->next)
		if (!qw_uuid_compare(&e->id, id))
			return e;
	return NULL;
}

static void entry_unlink(struct km_relay *R, struct rl_entry *e)
{
	for (struct rl_entry **pe = &R->entries; *pe; pe = &(*pe)->next)
		if (*pe == e) {
			*pe = e->next;
			return;
		}
}

static void entry_drop_keys(struct rl_entry *e)
{
	if (e->keys)
		qw_secure_free(e->keys, e->klen ? e->klen : 1);
	e->keys = NULL;
	e->klen = 0;
	qw_relay_msg_clear(&e->m);
}

static void entry_free(struct km_relay *R, struct rl_entry *e)
{
	entry_unlink(R, e);
	entry_drop_keys(e);
	free(e);
}

static struct rl_entry *entry_new(struct km_relay *R, const struct qw_uuid *id)
{
	struct rl_entry *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->id = *id;
	e->deadline_ms = km_now_ms() + R->km->conf->relay.timeout_ms;
	qw_relay_msg_init(&e->m);
	e->next = R->entries;
	R->entries = e;
	return e;
}

static void origin_done(struct km_relay *R, struct rl_entry *e, int status, unsigned hop);

/* The relay of e failed here (this node is path[e->idx]) or further on:
 * tell the previous hop, or (origin) try the next path. */
static void entry_fail(struct km_relay *R, struct rl_entry *e, int status, unsigned hop)
{
	if (e->b) {
		origin_done(R, e, status, hop);
		return;
	}
	send_ack(e->prev, &e->id, hop, status);
	entry_free(R, e);
}

/* ---- sending one hop ------------------------------------------------------ */

/* Seal e's hop with pad (its draw at e->m.pad_pos) and send it to
 * e->nextp. The plaintext is wiped either way. */
static int seal_send(struct km_relay *R, struct rl_entry *e, const uint8_t *pad, size_t len)
{
	struct km_relay_link *L = link_of(e->nextp);
	struct qw_buf out;
	int ret;

	qw_buf_init(&out, 0);
	ret = qw_relay_seal_hop(&e->m, e->keys, e->klen, pad, len, &L->tx, &out);
	qw_secure_free(e->keys, e->klen ? e->klen : 1);
	e->keys = NULL;
	if (!ret)
		ret = send_body(e->nextp, QW_KMLINK_RELAY, &out);
	qw_buf_free(&out);
	if (!ret) {
		L->hops_sent++;
		if (e->b)
			R->km->relays.sent++;
		else
			R->km->relays.forwarded++;
	}
	/* only the header and groups are needed from now on (log, ACK) */
	free(e->m.ct);
	e->m.ct = NULL;
	return ret;
}

/* Send the hop of e (e->m with its plaintext e->keys) to e->nextp: at once
 * when this node leads the link, else after the leader's pad grant. 0 or
 * the error that ends the relay here. */
static int hop_send(struct km_relay *R, struct rl_entry *e)
{
	struct km_peer *p = e->nextp;
	struct km_relay_link *L = link_of(p);
	uint64_t bits;
	int ret;

	e->m.hop = (uint8_t)e->idx;
	if (p->leader) {
		uint8_t *pad;
		size_t len;

		e->m.flags = qw_relay_mac_due(&L->tx) ? QW_RELAY_F_NEWKEY : 0;
		bits = qw_relay_hop_pad_bits(&e->m);
		len = (size_t)(bits / 8);
		pad = qw_secure_alloc(len);
		if (!pad)
			return QW_ENOMEM;
		ret = qw_store_pool_take(R->km->store, p->id, bits, NULL, pad, len, &e->m.pad_pos);
		if (ret) {
			qw_secure_free(pad, len);
			return ret == QW_EAGAIN ? QW_EAGAIN : ret;
		}
		count_bits(R->km, L, bits);
		ret = seal_send(R, e, pad, len);
		qw_secure_free(pad, len);
		if (ret) {
			/* the pad is gone here but the follower will never take
			 * it: resynchronise (from the sweep, not from inside
			 * this relay's own call chain) */
			L->drop_pending = 1;
		}
		return ret;
	}
	/* follower: fix the flags now (the grants come back in request
	 * order, so the seals happen in this order too) */
	{
		struct qw_relay_pad rq;
		struct qw_buf b;
		int due = !L->plan_key || (L->tx.rekey_every && L->plan_uses >= L->tx.rekey_every);

		e->m.flags = due ? QW_RELAY_F_NEWKEY : 0;
		if (due) {
			L->plan_key = 1;
			L->plan_uses = 0;
		}
		L->plan_uses++;
		e->planned_flags = e->m.flags;
		memset(&rq, 0, sizeof(rq));
		rq.relay_id = e->id;
		rq.bits = qw_relay_hop_pad_bits(&e->m);
		qw_buf_init(&b, 0);
		ret = qw_relay_pad_encode(&rq, 0, &b);
		if (!ret)
			ret = send_body(p, QW_KMLINK_RELAY_PAD_REQ, &b);
		qw_buf_free(&b);
		if (!ret)
			e->awaiting_pad = 1;
		return ret;
	}
}

/* ---- origin --------------------------------------------------------------- */

static void batch_free(struct rl_batch *b)
{
	struct km_relay *R = b->R;

	for (struct rl_batch **pb = &R->batches; *pb; pb = &(*pb)->next)
		if (*pb == b) {
			*pb = b->next;
			break;
		}
	if (b->timer)
		event_free(b->timer);
	free(b->ids);
	free(b->w);
	free(b);
}

/* Answer every request of b with err and free it. */
static void batch_fail(struct rl_batch *b, int err)
{
	struct qw_km *km = b->R->km;

	for (size_t i = 0; i < b->nw; i++) {
		km->pending--;
		b->w[i].cb(b->w[i].arg, err, NULL, 0);
	}
	batch_free(b);
}

static void erase_stored(struct rl_batch *b)
{
	if (b->stored)
		km_erase_ids(b->R->km, b->ids, b->keys);
	b->stored = 0;
}

static void path_text(const struct qw_relay_msg *m, char *out, size_t cap)
{
	size_t off = 0;

	out[0] = 0;
	for (unsigned i = 0; i < m->path_len && off < cap; i++)
		off += (size_t)snprintf(out + off, cap - off, "%s%s", i ? ">" : "", m->path[i]);
}

/* Start the relay of b on paths[b->pi] (then the next ones): fresh keys,
 * stored here, hop 0 sent. On failure every request is answered. */
static void batch_attempt(struct rl_batch *b)
{
	struct km_relay *R = b->R;
	struct qw_km *km = R->km;
	int last_err = QW_EAGAIN, attempted = b->pi > 0;

	for (; b->pi < b->npaths; b->pi++) {
		const struct qw_route_path *path = &b->paths[b->pi];
		const char *nodes[QW_RELAY_MAX_PATH];
		struct rl_entry *e = NULL;
		struct km_peer *p;
		struct qw_uuid rid;
		size_t off = 0, klen = (size_t)(b->payload_bits / 8);
		int ret;

		if (path->n < 3 || path->n > QW_RELAY_MAX_PATH || strcmp(path->nodes[0], km->conf->id) ||
		    strcmp(path->nodes[path->n - 1], b->dst))
			continue;
		p = up_peer(km, path->nodes[1]);
		if (!p)
			continue;
		if ((ret = qw_uuid_generate(&rid)))
			goto fail;
		ret = QW_ENOMEM;
		if (!(e = entry_new(R, &rid)))
			goto fail;
		attempted = 1;
		e->b = b;
		e->nextp = p;
		e->idx = 0;
		for (size_t i = 0; i < path->n; i++)
			nodes[i] = path->nodes[i];
		if ((ret = qw_relay_msg_set_path(&e->m, nodes, path->n)))
			goto fail;
		e->m.relay_id = rid;
		e->m.created = unix_ms();
		/* an expiry at both ends (relay-routing.md "orphaned keys"):
		 * keys the destination committed but the master never got
		 * (ACK lost, origin timed out) are erased by then. At least
		 * key_lifetime_s from now: the store compares whole seconds. */
		for (uint32_t i = 0; i < b->ng; i++)
			b->g[i].expires = e->m.created / 1000 + (int64_t)km->conf->relay.key_lifetime_s + 1;
		for (uint32_t i = 0; i < b->keys; i++)
			if ((ret = qw_uuid_generate(&b->ids[i])))
				goto fail;
		/* fresh keys from the node's DRBG, stored here first: the
		 * origin's copy exists before any hop leaves */
		ret = QW_ENOMEM;
		if (!(e->keys = qw_secure_alloc(klen ? klen : 1)))
			goto fail;
		e->klen = klen;
		if ((ret = qw_rng_bytes(R->rng, e->keys, klen)))
			goto fail;
		{
			uint32_t at = 0;

			for (uint32_t i = 0; i < b->ng; i++) {
				struct qw_relay_group *g = &b->g[i];
				const char *slaves[QW_STORE_SLAVES_MAX];
				struct qw_store_key_req rq = { 0 };
				size_t gl = (size_t)g->count * (g->size_bits / 8);

				g->ids = b->ids + at;
				at += g->count;
				for (uint32_t j = 0; j < g->n_slaves; j++)
					slaves[j] = g->slaves[j];
				rq.peer = b->dst;
				rq.size_bits = g->size_bits;
				rq.master_sae = g->master;
				rq.slave_saes = slaves;
				rq.n_slaves = g->n_slaves;
				rq.expires = g->expires;
				rq.key_ids = g->ids;
				ret = qw_store_key_import(km->store, &rq, g->count, e->keys + off, gl);
				if (ret) {
					/* the groups before this one are stored */
					km_erase_ids(km, b->ids, at - g->count);
					goto fail;
				}
				off += gl;
				if ((ret = qw_relay_msg_add_group(&e->m, g))) {
					km_erase_ids(km, b->ids, at);
					goto fail;
				}
			}
		}
		b->stored = 1;
		R->origin_relays++;
		if ((ret = hop_send(R, e))) {
			erase_stored(b);
			goto fail;
		}
		return;
fail:
		last_err = ret;
		if (e) {
			char id[QW_UUID_STR_BYTES];

			qw_uuid_format(&rid, id);
			qw_log(QW_LOG_WARN, "relay %s to %s via %s could not start: %s", id, b->dst,
			       path->nodes[1], qw_strerror(ret));
			entry_free(R, e);
			km->relays.failed++;
		}
	}
	/* every path tried (each failed attempt counted where it failed;
	 * a batch that could start none counts once) */
	if (!attempted)
		km->relays.failed++;
	batch_fail(b, last_err == QW_ENOMEM ? QW_ENOMEM : QW_EAGAIN);
}

/* Copy n delivered keys (material in out, ids) into a new qw_kme_key
 * array. NULL on allocation failure: the keys are DELIVERED in the store
 * already, so they are counted lost, never handed out twice. */
static struct qw_kme_key *hand_out(struct qw_km *km, const char *master, uint32_t size_bits,
				   const struct qw_uuid *ids, const uint8_t *out, uint32_t n)
{
	size_t bytes = size_bits / 8;
	struct qw_kme_key *keys = qw_calloc(n, sizeof(*keys));

	for (uint32_t j = 0; keys && j < n; j++) {
		keys[j].key = malloc(bytes);
		if (!keys[j].key) {
			qw_kme_keys_free(keys, j);
			keys = NULL;
			break;
		}
		memcpy(keys[j].key, out + (size_t)j * bytes, bytes);
		keys[j].size_bits = size_bits;
		qw_uuid_format(&ids[j], keys[j].key_id);
	}
	if (!keys)
		km_keys_lost(km, master, ids, NULL, n);
	return keys;
}

static void stock_free(struct rl_stock *k)
{
	free(k->ids);
	free(k);
}

/* Keep the extra keys of group g (ids[0, n), RESERVED here and at dst) as
 * stock. On allocation failure they are erased (both ends' copies then
 * expire unused at the destination). */
static void stock_add(struct km_relay *R, const char *dst, const struct qw_relay_group *g,
		      const struct qw_uuid *ids, uint32_t n)
{
	struct rl_stock *k = calloc(1, sizeof(*k));

	if (!k || !(k->ids = qw_calloc(n, sizeof(*k->ids)))) {
		free(k);
		km_erase_ids(R->km, ids, n);
		return;
	}
	snprintf(k->dst, sizeof(k->dst), "%s", dst);
	k->g = *g;
	k->g.count = n;
	k->g.ids = k->ids;
	memcpy(k->ids, ids, n * sizeof(*ids));
	k->expires = g->expires;
	k->next = R->stock;
	R->stock = k;
	R->stock_added += n;
}

/* A stock record is served only while at least half the key lifetime is
 * left, so the slave SAE has that long to fetch what the master gets. */
static int stock_fresh(const struct km_relay *R, const struct rl_stock *k, int64_t now_s)
{
	return k->expires - now_s >= (int64_t)(R->km->conf->relay.key_lifetime_s + 1) / 2;
}

/* Stock records used up or too close to their expiry: forgotten (their
 * keys, if any are left, are erased at both ends by the expiry sweep). */
static void stock_prune(struct km_relay *R)
{
	int64_t now_s = unix_ms() / 1000;

	for (struct rl_stock **pk = &R->stock; *pk;) {
		struct rl_stock *k = *pk;

		if (k->used == k->g.count || !stock_fresh(R, k, now_s)) {
			*pk = k->next;
			stock_free(k);
		} else {
			pk = &k->next;
		}
	}
}

static int same_binding(const struct qw_relay_group *g, const struct qw_kme_get_key_req *req);

/* Serve req from the stock for dst_node: 1 when answered (cb called),
 * 0 when the stock cannot serve it (then relay). */
static int stock_serve(struct km_relay *R, const struct qw_kme_get_key_req *req,
		       const char *dst_node, qw_kme_keys_cb cb, void *arg)
{
	struct qw_km *km = R->km;
	int64_t now_s = unix_ms() / 1000;

	for (struct rl_stock *k = R->stock; k; k = k->next) {
		size_t bytes = req->size_bits / 8, total = bytes * req->number, outlen = 0;
		struct qw_kme_key *keys;
		uint8_t *out;
		int ret;

		if (strcmp(k->dst, dst_node) || !same_binding(&k->g, req) ||
		    k->g.count - k->used < req->number || !stock_fresh(R, k, now_s))
			continue;
		if (!(out = qw_secure_alloc(total)))
			return 0;
		ret = qw_store_key_deliver_many(km->store, k->ids + k->used, req->number, req->master_sae,
						out, total, &outlen, NULL);
		if (ret) {
			/* erased or expired under us: give the record up */
			qw_secure_free(out, total);
			km_erase_ids(km, k->ids + k->used, k->g.count - k->used);
			k->used = k->g.count;
			stock_prune(R);
			return 0;
		}
		keys = hand_out(km, req->master_sae, req->size_bits, k->ids + k->used, out,
				req->number);
		qw_secure_free(out, total);
		k->used += req->number;
		R->stock_served += req->number;
		stock_prune(R);
		if (!keys) {
			cb(arg, QW_ENOMEM, NULL, 0);
			return 1;
		}
		km->keys_delivered += req->number;
		cb(arg, 0, keys, req->number);
		return 1;
	}
	return 0;
}

/* The relay of e (originated here) ended: status 0 = the destination
 * committed every key. */
static void origin_done(struct km_relay *R, struct rl_entry *e, int status, unsigned hop)
{
	struct rl_batch *b = e->b;
	struct qw_km *km = R->km;
	char id[QW_UUID_STR_BYTES], path[QW_RELAY_MAX_PATH * (QW_KMLINK_ID_MAX + 1) + 1];

	qw_uuid_format(&e->id, id);
	path_text(&e->m, path, sizeof(path));
	if (status) {
		const char *where = hop < e->m.path_len ? e->m.path[hop] : "?";

		qw_log(QW_LOG_WARN, "relay %s to %s: path %s failed at %s: %s", id, b->dst, path, where,
		       qw_strerror(status));
		km->relays.failed++;
		erase_stored(b);
		entry_free(R, e);
		b->pi++;
		batch_attempt(b);
		return;
	}
	qw_log(QW_LOG_INFO, "relay %s to %s: path %s (%u hops), %" PRIu32 " key(s) committed", id,
	       b->dst, path, (unsigned)(e->m.path_len - 1), b->keys);
	entry_free(R, e);
	b->stored = 0;
	{
		double s = (double)(mono_us() - b->t0_us) / 1e6;

		R->lat_count++;
		R->lat_sum += s;
		for (size_t i = 0; i < RL_NBUCKETS; i++)
			if (s <= lat_bounds[i])
				R->lat_bucket[i]++;
	}
	R->key_bits += b->payload_bits;
	R->batched_requests += b->nw;
	/* each group's keys delivered to its master in one transaction, then
	 * shared out among the group's requests */
	for (uint32_t gi = 0; gi < b->ng; gi++) {
		struct qw_relay_group *g = &b->g[gi];
		uint32_t asked = g->count - (gi == b->stock_gi ? b->stock_n : 0);
		size_t bytes = g->size_bits / 8, total = bytes * asked, outlen = 0;
		uint8_t *out = qw_secure_alloc(total);
		int ret = out ? 0 : QW_ENOMEM;

		if (!ret)
			ret = qw_store_key_deliver_many(km->store, g->ids, asked, g->master, out, total,
							&outlen, NULL);
		if (ret) {
			/* nothing delivered: never hand these out */
			km_erase_ids(km, g->ids, g->count);
			qw_log(QW_LOG_WARN, "delivering %u relayed key(s) to %s failed: %s", asked,
			       g->master, qw_strerror(ret));
		} else if (asked < g->count) {
			stock_add(R, b->dst, g, g->ids + asked, g->count - asked);
		}
		for (size_t i = 0; i < b->nw; i++) {
			struct rl_req *w = &b->w[i];
			struct qw_kme_key *keys = NULL;
			int err = ret;

			if (w->gi != gi)
				continue;
			if (!err && !(keys = hand_out(km, g->master, g->size_bits, g->ids + w->off,
						      out + (size_t)w->off * bytes, w->number)))
				err = QW_ENOMEM;
			km->pending--;
			if (err) {
				w->cb(w->arg, err, NULL, 0);
			} else {
				km->keys_delivered += w->number;
				w->cb(w->arg, 0, keys, w->number);
			}
		}
		if (out)
			qw_secure_free(out, total);
	}
	batch_free(b);
}

/* A batch that waited batch_wait_ms and is still below batch_target: add
 * keys to its first group until formula (2) reaches the target; they are
 * relayed with the group's binding and become stock (stock_add). */
static void batch_top_up(struct rl_batch *b)
{
	const struct qw_km_conf *c = b->R->km->conf;
	struct qw_relay_group *g = &b->g[0];
	uint32_t need = qw_relay_min_batch(g->size_bits, c->relay.batch_target, c->relay.rekey_every);
	uint64_t per = g->size_bits, extra = 0;

	if (!b->ng || c->relay.batch_target <= 0 ||
	    qw_relay_efficiency(b->payload_bits, c->relay.rekey_every) >= c->relay.batch_target)
		return;
	/* keys of g's size that bring the whole payload to the target */
	while (extra < need && qw_relay_efficiency(b->payload_bits + extra * per, c->relay.rekey_every) <
				       c->relay.batch_target)
		extra++;
	if (b->keys + extra > QW_RELAY_MAX_KEYS ||
	    b->payload_bits + extra * per > 8 * (uint64_t)QW_RELAY_MAX_PAYLOAD_BYTES)
		return;
	g->count += (uint32_t)extra;
	b->keys += (uint32_t)extra;
	b->payload_bits += extra * per;
	b->stock_gi = 0;
	b->stock_n = (uint32_t)extra;
}

static void batch_send(struct rl_batch *b)
{
	struct km_relay *R = b->R;
	int ret;

	b->sent = 1;
	if (b->timer)
		event_del(b->timer);
	b->ids = qw_calloc(b->keys, sizeof(*b->ids));
	if (!b->ids) {
		batch_fail(b, QW_ENOMEM);
		return;
	}
	/* every link of the path must hold the worst-case draw of formula (1) */
	ret = km_route_paths(R->km, b->dst, b->payload_bits + QW_RELAY_TAG_PAD_BITS + QW_RELAY_HASH_KEY_BITS,
			     b->paths, RL_MAX_PATHS, &b->npaths);
	if (ret || b->npaths == 0) {
		qw_log(QW_LOG_WARN, "relay to %s: no path with %" PRIu64 " key bits: %s", b->dst,
		       b->payload_bits, qw_strerror(ret ? ret : QW_ENOTFOUND));
		R->km->relays.failed++;
		batch_fail(b, QW_EAGAIN);
		return;
	}
	qw_log(QW_LOG_DEBUG, "relay to %s: %zu path(s) with %" PRIu64 " key bits", b->dst, b->npaths,
	       b->payload_bits);
	b->pi = 0;
	batch_attempt(b);
}

static void on_batch_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	batch_top_up(arg);
	batch_send(arg);
}

/* 1 when req's keys can join group g (same size and SAE binding). */
static int same_binding(const struct qw_relay_group *g, const struct qw_kme_get_key_req *req)
{
	if (g->size_bits != req->size_bits || g->n_slaves != 1 + req->n_additional ||
	    strcmp(g->master, req->master_sae) || strcmp(g->slaves[0], req->slave_sae))
		return 0;
	for (size_t i = 0; i < req->n_additional; i++)
		if (strcmp(g->slaves[i + 1], req->additional_slaves[i]))
			return 0;
	return 1;
}

void km_relay_get_keys(struct qw_km *km, const struct qw_kme_get_key_req *req,
		       const char *dst_node, qw_kme_keys_cb cb, void *arg)
{
	struct km_relay *R = km->relay;
	struct rl_batch *b = NULL;
	uint64_t bits = (uint64_t)req->number * req->size_bits;
	struct rl_req *w;

	if (!R || !dst_node || !strcmp(dst_node, km->conf->id)) {
		cb(arg, QW_ENOTFOUND, NULL, 0);
		return;
	}
	if (req->number > QW_RELAY_MAX_KEYS || bits > 8 * (uint64_t)QW_RELAY_MAX_PAYLOAD_BYTES) {
		cb(arg, QW_ERANGE, NULL, 0);
		return;
	}
	if (stock_serve(R, req, dst_node, cb, arg))
		return;
	/* join the open batch for this destination if the request fits */
	for (struct rl_batch *x = R->batches; x; x = x->next)
		if (!x->sent && !strcmp(x->dst, dst_node) &&
		    x->keys + req->number <= QW_RELAY_MAX_KEYS &&
		    x->payload_bits + bits <= 8 * (uint64_t)QW_RELAY_MAX_PAYLOAD_BYTES &&
		    (x->ng < QW_RELAY_MAX_GROUPS || same_binding(&x->g[x->ng - 1], req))) {
			b = x;
			break;
		}
	if (!b) {
		struct timeval tv;

		b = calloc(1, sizeof(*b));
		if (!b || !(b->timer = evtimer_new(km->base, on_batch_timer, b))) {
			free(b);
			cb(arg, QW_ENOMEM, NULL, 0);
			return;
		}
		b->R = R;
		snprintf(b->dst, sizeof(b->dst), "%s", dst_node);
		b->t0_us = mono_us();
		b->next = R->batches;
		R->batches = b;
		tv.tv_sec = km->conf->relay.batch_wait_ms / 1000;
		tv.tv_usec = (km->conf->relay.batch_wait_ms % 1000) * 1000;
		evtimer_add(b->timer, &tv);
	}
	if (b->nw == b->capw) {
		size_t nc = b->capw ? 2 * b->capw : 16;
		struct rl_req *nw = realloc(b->w, nc * sizeof(*nw));

		if (!nw) {
			cb(arg, QW_ENOMEM, NULL, 0);
			if (!b->nw)
				batch_free(b);
			return;
		}
		b->w = nw;
		b->capw = nc;
	}
	if (!b->ng || !same_binding(&b->g[b->ng - 1], req)) {
		struct qw_relay_group *g = &b->g[b->ng++];

		memset(g, 0, sizeof(*g));
		g->size_bits = req->size_bits;
		snprintf(g->master, sizeof(g->master), "%s", req->master_sae);
		g->n_slaves = (uint32_t)(1 + req->n_additional);
		snprintf(g->slaves[0], sizeof(g->slaves[0]), "%s", req->slave_sae);
		for (size_t i = 0; i < req->n_additional; i++)
			snprintf(g->slaves[i + 1], sizeof(g->slaves[i + 1]), "%s",
				 req->additional_slaves[i]);
	}
	w = &b->w[b->nw];
	memset(w, 0, sizeof(*w));
	w->cb = cb;
	w->arg = arg;
	w->gi = b->ng - 1;
	w->off = b->g[w->gi].count;
	w->number = req->number;
	b->g[w->gi].count += req->number;
	b->nw++;
	b->keys += req->number;
	b->payload_bits += bits;
	km->pending++;
	/* send as soon as the batch pays for its tag (formula (2)) */
	if (qw_relay_efficiency(b->payload_bits, km->conf->relay.rekey_every) >=
		    km->conf->relay.batch_target ||
	    b->ng == QW_RELAY_MAX_GROUPS || b->keys == QW_RELAY_MAX_KEYS)
		batch_send(b);
}

int km_relay_status(struct qw_km *km, const char *dst_node, uint64_t *bits)
{
	struct qw_route_path path;
	size_t n = 0;
	uint64_t over = QW_RELAY_TAG_PAD_BITS + QW_RELAY_HASH_KEY_BITS;
	int ret;

	*bits = 0;
	if (!dst_node)
		return QW_ENOTFOUND;
	ret = km_route_paths(km, dst_node, over + 8, &path, 1, &n);
	if (ret == QW_ENOTFOUND || (!ret && n == 0))
		return 0;
	if (ret)
		return ret;
	*bits = path.bottleneck_bits > over ? path.bottleneck_bits - over : 0;
	return 0;
}

/* ---- receiving ------------------------------------------------------------ */

/* Destination: store every group (relay-routing.md step 6) and ACK. */
static void dest_commit(struct km_relay *R, struct km_peer *p, const struct qw_relay_msg *m,
			const uint8_t *keys)
{
	struct qw_km *km = R->km;
	unsigned me = m->path_len - 1u;
	size_t off = 0;
	int ret;

	ret = qw_relay_replay_check(R->replay, &m->relay_id, m->created, unix_ms());
	for (uint32_t i = 0; !ret && i < m->n_groups; i++) {
		const struct qw_relay_group *g = &m->groups[i];

		/* keys for SAEs of this node only: any other slave could never
		 * fetch them here */
		for (uint32_t j = 0; j < g->n_slaves; j++) {
			const char *n = km_sae_node(km, g->slaves[j]);
			if (!n || strcmp(n, km->conf->id))
				ret = QW_EPERM;
		}
	}
	for (uint32_t i = 0; !ret && i < m->n_groups; i++) {
		const struct qw_relay_group *g = &m->groups[i];
		const char *slaves[QW_STORE_SLAVES_MAX];
		struct qw_store_key_req rq = { 0 };
		size_t gl = (size_t)g->count * (g->size_bits / 8);

		for (uint32_t j = 0; j < g->n_slaves; j++)
			slaves[j] = g->slaves[j];
		rq.peer = m->path[0];
		rq.size_bits = g->size_bits;
		rq.master_sae = g->master[0] ? g->master : NULL;
		rq.slave_saes = slaves;
		rq.n_slaves = g->n_slaves;
		rq.expires = g->expires;
		rq.key_ids = g->ids;
		ret = qw_store_key_import(km->store, &rq, g->count, keys + off, gl);
		if (ret) {
			for (uint32_t k = 0; k < i; k++)
				km_erase_ids(km, m->groups[k].ids, m->groups[k].count);
		}
		off += gl;
	}
	if (!ret)
		km->relays.received++;
	else {
		char id[QW_UUID_STR_BYTES];

		qw_uuid_format(&m->relay_id, id);
		qw_log(QW_LOG_WARN, "relay %s from %s refused: %s", id, m->path[0], qw_strerror(ret));
	}
	send_ack(p, &m->relay_id, me, ret);
}

/* A hop from p whose pad (len bytes at m->pad_pos) is taken at this end:
 * open it, then store (destination) or forward. pad is wiped by the
 * caller. */
static void relay_in(struct km_relay *R, struct km_peer *p, struct qw_relay_msg *m,
		     const uint8_t *pad, size_t len)
{
	struct qw_km *km = R->km;
	struct km_relay_link *L = link_of(p);
	struct rl_entry *e;
	uint8_t *keys;
	int last = 0, ret;

	L->hops_received++;
	if ((ret = qw_relay_hop_check(m, km->conf->id, p->id, &last))) {
		send_ack(p, &m->relay_id, m->hop + 1u, ret);
		return;
	}
	keys = qw_secure_alloc(m->ct_len ? m->ct_len : 1);
	if (!keys) {
		send_ack(p, &m->relay_id, m->hop + 1u, QW_ENOMEM);
		return;
	}
	ret = qw_relay_open_hop(m, pad, len, &L->rx, keys, m->ct_len);
	if (ret) {
		if (ret == QW_EAUTH)
			mac_failure(R, p, m);
		qw_secure_free(keys, m->ct_len ? m->ct_len : 1);
		send_ack(p, &m->relay_id, m->hop + 1u, ret);
		return;
	}
	if (last) {
		dest_commit(R, p, m, keys);
		qw_secure_free(keys, m->ct_len ? m->ct_len : 1);
		return;
	}
	/* intermediate: forward to path[hop + 2], remember where the ACK goes */
	ret = QW_EEXIST;
	if (entry_find(R, &m->relay_id) || !(e = entry_new(R, &m->relay_id))) {
		qw_secure_free(keys, m->ct_len ? m->ct_len : 1);
		send_ack(p, &m->relay_id, m->hop + 1u, entry_find(R, &m->relay_id) ? ret : QW_ENOMEM);
		return;
	}
	e->prev = p;
	e->idx = m->hop + 1u;
	e->m = *m;
	qw_relay_msg_init(m); /* ownership moves to e */
	e->keys = keys;
	e->klen = e->m.ct_len;
	e->nextp = up_peer(km, e->m.path[e->idx + 1]);
	ret = e->nextp ? hop_send(R, e) : QW_EAGAIN;
	if (ret)
		entry_fail(R, e, ret, e->idx);
}

static void apply_free(struct rl_apply *a)
{
	qw_relay_msg_clear(&a->m);
	free(a);
}

static void arm_retry(struct km_relay_link *L)
{
	struct timeval tv = { 0, RL_RETRY_STEP_MS * 1000 };

	if (L->retry)
		event_add(L->retry, &tv);
}

/* Follower: apply the stated positions in order (see the top comment). */
static void apply_run(struct km_relay *R, struct km_peer *p)
{
	struct km_relay_link *L = link_of(p);
	struct rl_apply *a;

	while (L && (a = L->q_head)) {
		size_t len = (size_t)(a->bits / 8);
		uint8_t *pad = qw_secure_alloc(len ? len : 1);
		int ret = pad ? qw_store_pool_take(R->km->store, p->id, a->bits, &a->pos, pad, len, NULL)
			      : QW_ENOMEM;

		if (ret == QW_EAGAIN || ret == QW_ESTATE) {
			struct qw_store_pos cur;
			int c = qw_store_pool_cursor(R->km->store, p->id, &cur);
			int ahead = c == QW_EAGAIN || (!c && pos_less(&cur, &a->pos)) ||
				    (!c && ret == QW_EAGAIN && !pos_less(&a->pos, &cur));

			if (ahead && km_now_ms() - a->first_ms < KM_APPLY_RETRY_MS) {
				qw_secure_free(pad, len ? len : 1);
				(void)km_append_blocks(p);
				arm_retry(L);
				return;
			}
		}
		L->q_head = a->next;
		if (!L->q_head)
			L->q_tail = NULL;
		if (ret) {
			char id[QW_UUID_STR_BYTES];

			qw_uuid_format(a->kind == RL_APPLY_RELAY ? &a->m.relay_id : &a->relay_id, id);
			qw_log(QW_LOG_WARN, "relay %s: cannot take %" PRIu64 " pad bits from %s at block %" PRIu64
			       " bit %" PRIu64 ": %s", id, a->bits, p->id, a->pos.block_id, a->pos.bit,
			       qw_strerror(ret));
			if (pad)
				qw_secure_free(pad, len ? len : 1);
			if (a->kind == RL_APPLY_RELAY)
				send_ack(p, &a->m.relay_id, a->m.hop + 1u, ret);
			else {
				struct rl_entry *e = entry_find(R, &a->relay_id);
				if (e && e->awaiting_pad && e->nextp == p)
					entry_fail(R, e, ret, e->idx);
			}
			apply_free(a);
			if (ret == QW_ESTATE || ret == QW_EAGAIN) {
				km_peer_drop(p, "pools out of step (relay): resynchronising");
				return;
			}
			continue;
		}
		count_bits(R->km, L, a->bits);
		if (a->kind == RL_APPLY_RELAY) {
			relay_in(R, p, &a->m, pad, len);
		} else {
			struct rl_entry *e = entry_find(R, &a->relay_id);

			if (e && e->awaiting_pad && e->nextp == p &&
			    a->bits == qw_relay_hop_pad_bits(&e->m)) {
				e->awaiting_pad = 0;
				e->m.flags = e->planned_flags;
				e->m.pad_pos = a->pos;
				ret = seal_send(R, e, pad, len);
				if (ret)
					entry_fail(R, e, ret, e->idx);
			}
			/* else: the relay ended meanwhile; the bits are
			 * consumed at both ends all the same */
		}
		qw_secure_free(pad, len ? len : 1);
		apply_free(a);
		L = link_of(p);
	}
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	struct km_peer *p = arg;

	(void)fd;
	(void)what;
	if (p->km->relay)
		apply_run(p->km->relay, p);
}

static void enqueue(struct km_relay *R, struct km_peer *p, struct rl_apply *a)
{
	struct km_relay_link *L = link_of(p);

	a->first_ms = km_now_ms();
	if (L->q_tail)
		L->q_tail->next = a;
	else
		L->q_head = a;
	L->q_tail = a;
	if (L->q_head == a)
		apply_run(R, p);
}

static void on_relay(struct km_relay *R, struct km_peer *p, const struct qw_kmlink_msg *m)
{
	struct km_relay_link *L = link_of(p);
	struct rl_apply *a = calloc(1, sizeof(*a));
	int ret;

	if (!a) {
		km_peer_drop(p, "out of memory");
		return;
	}
	ret = qw_relay_parse(m->u.raw.body, m->u.raw.len, &a->m);
	if (ret) {
		free(a);
		km_peer_drop(p, ret == QW_EPARSE ? "malformed relay message" : qw_strerror(ret));
		return;
	}
	if (!p->leader) {
		/* from the leader: its pad position is applied in order */
		a->kind = RL_APPLY_RELAY;
		a->pos = a->m.pad_pos;
		a->bits = qw_relay_hop_pad_bits(&a->m);
		enqueue(R, p, a);
		return;
	}
	/* from the follower: the pad is the one this node granted */
	for (struct rl_pad **pp = &L->pads; *pp; pp = &(*pp)->next) {
		struct rl_pad *k = *pp;

		if (qw_uuid_compare(&k->relay_id, &a->m.relay_id))
			continue;
		*pp = k->next;
		if (k->bits == qw_relay_hop_pad_bits(&a->m) && k->pos.block_id == a->m.pad_pos.block_id &&
		    k->pos.bit == a->m.pad_pos.bit)
			relay_in(R, p, &a->m, k->pad, k->len);
		else
			send_ack(p, &a->m.relay_id, a->m.hop + 1u, QW_ESTATE);
		qw_secure_free(k->pad, k->len ? k->len : 1);
		free(k);
		apply_free(a);
		return;
	}
	send_ack(p, &a->m.relay_id, a->m.hop + 1u, QW_ESTATE);
	apply_free(a);
}

static void on_pad_req(struct km_relay *R, struct km_peer *p, const struct qw_kmlink_msg *m)
{
	struct km_relay_link *L = link_of(p);
	struct qw_relay_pad rq;
	struct rl_pad *k;
	struct qw_buf b;
	int ret;

	if (!p->leader || qw_relay_pad_parse(m->u.raw.body, m->u.raw.len, 0, &rq)) {
		km_peer_drop(p, "bad relay pad request");
		return;
	}
	k = calloc(1, sizeof(*k));
	if (k) {
		k->len = (size_t)(rq.bits / 8);
		k->pad = qw_secure_alloc(k->len);
	}
	if (!k || !k->pad) {
		free(k);
		km_peer_drop(p, "out of memory");
		return;
	}
	ret = qw_store_pool_take(R->km->store, p->id, rq.bits, NULL, k->pad, k->len, &k->pos);
	if (ret) {
		/* nothing taken, nothing granted: the relay fails at the
		 * follower now (a failure ACK naming this node's hop, which the
		 * follower fills in: RL_HOP_NEXT) */
		char id[QW_UUID_STR_BYTES];

		qw_uuid_format(&rq.relay_id, id);
		qw_log(QW_LOG_WARN, "relay %s: no %" PRIu64 " pad bits for %s: %s", id, rq.bits, p->id,
		       qw_strerror(ret));
		qw_secure_free(k->pad, k->len);
		free(k);
		send_ack(p, &rq.relay_id, RL_HOP_NEXT, ret == QW_EAGAIN ? QW_EAGAIN : ret);
		return;
	}
	count_bits(R->km, L, rq.bits);
	k->relay_id = rq.relay_id;
	k->bits = rq.bits;
	k->expires_ms = km_now_ms() + R->km->conf->relay.timeout_ms;
	k->next = L->pads;
	L->pads = k;
	rq.pos = k->pos;
	qw_buf_init(&b, 0);
	ret = qw_relay_pad_encode(&rq, 1, &b);
	if (!ret)
		ret = send_body(p, QW_KMLINK_RELAY_PAD, &b);
	qw_buf_free(&b);
	if (ret)
		km_peer_drop(p, "relay pad grant not sent");
}

static void on_pad_grant(struct km_relay *R, struct km_peer *p, const struct qw_kmlink_msg *m)
{
	struct qw_relay_pad g;
	struct rl_apply *a;

	if (p->leader || qw_relay_pad_parse(m->u.raw.body, m->u.raw.len, 1, &g)) {
		km_peer_drop(p, "bad relay pad grant");
		return;
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		km_peer_drop(p, "out of memory");
		return;
	}
	qw_relay_msg_init(&a->m);
	a->kind = RL_APPLY_GRANT;
	a->relay_id = g.relay_id;
	a->bits = g.bits;
	a->pos = g.pos;
	enqueue(R, p, a);
}

static void on_ack(struct km_relay *R, struct km_peer *p, const struct qw_kmlink_msg *m)
{
	struct qw_relay_ack a;
	struct rl_entry *e;

	if (qw_relay_ack_parse(m->u.raw.body, m->u.raw.len, &a)) {
		km_peer_drop(p, "malformed relay ACK");
		return;
	}
	e = entry_find(R, &a.relay_id);
	if (e && e->nextp != p)
		return; /* only the next hop answers for a relay */
	/* the receiver of our hop lost its hash key (bad tag, or none): the
	 * next message on the link must bring a new one */
	if ((a.status == QW_EAUTH || a.status == QW_ESTATE) && (!e || a.hop == e->idx + 1u))
		mac_reset_tx(link_of(p));
	if (!e)
		return;
	if (a.hop == RL_HOP_NEXT && a.status)
		a.hop = (uint8_t)(e->idx + 1);
	if (e->b) {
		origin_done(R, e, a.status, a.hop);
		return;
	}
	send_ack(e->prev, &a.relay_id, a.hop, a.status);
	entry_free(R, e);
}

void km_relay_on_message(struct km_peer *p, const struct qw_kmlink_msg *m)
{
	struct km_relay *R = p->km->relay;

	if (!R || !p->relay)
		return;
	switch (m->type) {
	case QW_KMLINK_RELAY: on_relay(R, p, m); return;
	case QW_KMLINK_RELAY_ACK: on_ack(R, p, m); return;
	case QW_KMLINK_RELAY_PAD_REQ: on_pad_req(R, p, m); return;
	case QW_KMLINK_RELAY_PAD: on_pad_grant(R, p, m); return;
	default: km_peer_drop(p, "unknown relay message"); return;
	}
}

/* ---- link changes, deadlines ---------------------------------------------- */

void km_relay_link_changed(struct km_peer *p)
{
	struct km_relay *R = p->km->relay;
	struct km_relay_link *L = p->relay;
	struct rl_entry *e;

	if (!R || !L)
		return;
	/* both ends start over with a new hash key on every (re)connect */
	mac_reset_tx(L);
	qw_relay_mac_reset(&L->rx);
	if (L->retry)
		event_del(L->retry);
	/* positions stated on the old connection: the resynchronisation
	 * decides the pools now */
	while (L->q_head) {
		struct rl_apply *a = L->q_head;
		L->q_head = a->next;
		apply_free(a);
	}
	L->q_tail = NULL;
	while (L->pads) {
		struct rl_pad *k = L->pads;
		L->pads = k->next;
		qw_secure_free(k->pad, k->len ? k->len : 1);
		free(k);
	}
	if (p->up)
		return;
	/* relays through the link fail now instead of at their deadline */
	for (;;) {
		for (e = R->entries; e; e = e->next)
			if (e->nextp == p || e->prev == p)
				break;
		if (!e)
			break;
		if (e->nextp == p)
			entry_fail(R, e, QW_ECLOSED, e->idx);
		else
			entry_free(R, e);
	}
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct km_relay *R = arg;
	int64_t now = km_now_ms();
	struct rl_entry *e;

	(void)fd;
	(void)what;
	for (;;) {
		for (e = R->entries; e; e = e->next)
			if (e->deadline_ms <= now)
				break;
		if (!e)
			break;
		if (e->b) {
			origin_done(R, e, QW_ETIMEOUT, e->idx);
		} else {
			/* the origin times out on its own */
			entry_free(R, e);
		}
	}
	for (size_t i = 0; i < R->km->npeers; i++) {
		struct km_peer *p = &R->km->peers[i];
		struct km_relay_link *L = p->relay;

		for (struct rl_pad **pp = &L->pads; *pp;) {
			struct rl_pad *k = *pp;
			if (k->expires_ms <= now) {
				*pp = k->next;
				qw_secure_free(k->pad, k->len ? k->len : 1);
				free(k);
			} else {
				pp = &k->next;
			}
		}
		if (L->drop_pending) {
			L->drop_pending = 0;
			km_peer_drop(p, "relay pad taken but not sent: resynchronising");
		}
		if (L->alarm_until_ms && L->alarm_until_ms <= now) {
			L->alarm_until_ms = 0;
			km_route_set_alarm(p, 0);
		}
	}
}

/* Erase every key past its expiry (qw_store_key_expire): relayed keys
 * nobody fetched. Keys cut from a neighbour's pool have no expiry (0), so
 * this touches relayed keys only. */
static void on_expire(evutil_socket_t fd, short what, void *arg)
{
	struct km_relay *R = arg;
	size_t n = 0;
	int ret;

	(void)fd;
	(void)what;
	stock_prune(R);
	ret = qw_store_key_expire(R->km->store, unix_ms() / 1000, &n);
	if (ret) {
		qw_log(QW_LOG_WARN, "erasing expired keys failed: %s", qw_strerror(ret));
		return;
	}
	if (n) {
		R->keys_expired += n;
		qw_log(QW_LOG_INFO, "erased %zu expired key(s): relayed keys not fetched within %" PRIu32 " s",
		       n, R->km->conf->relay.key_lifetime_s);
	}
}

int km_relay_init(struct qw_km *km)
{
	struct km_relay *R = calloc(1, sizeof(*R));
	struct timeval tv = { 0, RL_SWEEP_MS * 1000 }, etv;
	uint64_t ems;

	if (!R)
		return QW_ENOMEM;
	R->km = km;
	km->relay = R;
	R->rng = qw_rng_new_system();
	R->replay = qw_relay_replay_new(RL_REPLAY_CAP, RL_REPLAY_AGE_MS);
	R->links = qw_calloc(km->npeers ? km->npeers : 1, sizeof(*R->links));
	R->sweep = event_new(km->base, -1, EV_PERSIST, on_sweep, R);
	R->expire = event_new(km->base, -1, EV_PERSIST, on_expire, R);
	if (!R->rng || !R->replay || !R->links || !R->sweep || !R->expire) {
		km_relay_free(km);
		return QW_ENOMEM;
	}
	for (size_t i = 0; i < km->npeers; i++) {
		struct km_relay_link *L = &R->links[i];

		qw_relay_mac_init(&L->tx, km->conf->relay.rekey_every);
		qw_relay_mac_init(&L->rx, km->conf->relay.rekey_every);
		L->retry = evtimer_new(km->base, on_retry, &km->peers[i]);
		if (!L->retry) {
			km_relay_free(km);
			return QW_ENOMEM;
		}
		km->peers[i].relay = L;
	}
	event_add(R->sweep, &tv);
	ems = (uint64_t)km->conf->relay.key_lifetime_s * 1000 / 4;
	ems = ems < RL_EXPIRE_MIN_MS ? RL_EXPIRE_MIN_MS : ems > RL_EXPIRE_MAX_MS ? RL_EXPIRE_MAX_MS : ems;
	etv.tv_sec = (time_t)(ems / 1000);
	etv.tv_usec = (int)(ems % 1000) * 1000;
	event_add(R->expire, &etv);
	return 0;
}

void km_relay_free(struct qw_km *km)
{
	struct km_relay *R = km->relay;

	if (!R)
		return;
	while (R->batches) {
		struct rl_batch *b = R->batches;
		struct rl_entry *e;

		for (e = R->entries; e && e->b != b; e = e->next)
			;
		if (e)
			entry_free(R, e);
		erase_stored(b);
		batch_fail(b, QW_ECLOSED);
	}
	while (R->entries)
		entry_free(R, R->entries);
	while (R->stock) {
		struct rl_stock *k = R->stock;

		/* left RESERVED at both ends: the expiry sweep erases them
		 * (after a restart too) */
		R->stock = k->next;
		stock_free(k);
	}
	for (size_t i = 0; R->links && i < km->npeers; i++) {
		struct km_peer *p = &km->peers[i];
		struct km_relay_link *L = &R->links[i];

		if (p->relay)
			km_relay_link_changed(p); /* queues and granted pads */
		qw_relay_mac_reset(&L->tx);
		qw_relay_mac_reset(&L->rx);
		if (L->retry)
			event_free(L->retry);
		p->relay = NULL;
	}
	if (R->sweep)
		event_free(R->sweep);
	if (R->expire)
		event_free(R->expire);
	qw_relay_replay_free(R->replay);
	qw_rng_free(R->rng);
	free(R->links);
	free(R);
	km->relay = NULL;
}

/* ---- metrics -------------------------------------------------------------- */


int km_relay_metrics(struct qw_km *km, struct qw_buf *b)
{
	const struct qw_dashboard_relays *r = &km->relays;
	struct km_relay *R = km->relay;
	const char *node = km->conf->id;
	int ret = 0;

	if (!R)
		return 0;
	ret |= km_pf(b, "# HELP qwave_relay_total Key relays by what this node did: originated (sent), forwarded, received as destination, failed (originated here).\n"
		     "# TYPE qwave_relay_total counter\n");
	ret |= km_pf(b, "qwave_relay_total{node=\"%s\",event=\"sent\"} %" PRIu64 "\n", node, r->sent);
	ret |= km_pf(b, "qwave_relay_total{node=\"%s\",event=\"forwarded\"} %" PRIu64 "\n", node, r->forwarded);
	ret |= km_pf(b, "qwave_relay_total{node=\"%s\",event=\"received\"} %" PRIu64 "\n", node, r->received);
	ret |= km_pf(b, "qwave_relay_total{node=\"%s\",event=\"failed\"} %" PRIu64 "\n", node, r->failed);
	ret |= km_pf(b, "# HELP qwave_relay_mac_failures_total Relay hops refused for a bad Wegman-Carter tag (tampering alarm).\n"
		     "# TYPE qwave_relay_mac_failures_total counter\n");
	ret |= km_pf(b, "# HELP qwave_relay_link_bits_total Link-key bits consumed by relay hops on the link, formula (1) of relay.h.\n"
		     "# TYPE qwave_relay_link_bits_total counter\n");
	for (size_t i = 0; i < km->npeers; i++) {
		const struct km_relay_link *L = &R->links[i];

		ret |= km_pf(b, "qwave_relay_mac_failures_total{node=\"%s\",peer=\"%s\"} %" PRIu64 "\n", node,
			  km->peers[i].id, L->mac_failures);
		ret |= km_pf(b, "qwave_relay_link_bits_total{node=\"%s\",peer=\"%s\"} %" PRIu64 "\n", node,
			  km->peers[i].id, L->bits_consumed);
	}
	ret |= km_pf(b, "# HELP qwave_relay_key_bits_total Key bits relayed from this node and committed at the destination (eta = this / link bits of one hop).\n"
		     "# TYPE qwave_relay_key_bits_total counter\n"
		     "qwave_relay_key_bits_total{node=\"%s\"} %" PRIu64 "\n", node, R->key_bits);
	ret |= km_pf(b, "# HELP qwave_relay_requests_total ETSI requests served by relays from this node (requests per relay = batching).\n"
		     "# TYPE qwave_relay_requests_total counter\n"
		     "qwave_relay_requests_total{node=\"%s\"} %" PRIu64 "\n", node, R->batched_requests);
	ret |= km_pf(b, "# HELP qwave_relay_stock_keys_total Stock keys (origin): relayed beyond a lone request for the same SAE binding (added), handed out later without a relay (served).\n"
		     "# TYPE qwave_relay_stock_keys_total counter\n"
		     "qwave_relay_stock_keys_total{node=\"%s\",event=\"added\"} %" PRIu64 "\n"
		     "qwave_relay_stock_keys_total{node=\"%s\",event=\"served\"} %" PRIu64 "\n",
		  node, R->stock_added, node, R->stock_served);
	ret |= km_pf(b, "# HELP qwave_relay_keys_expired_total Keys erased at their expiry: relayed keys nobody fetched within [relay] key_lifetime_s (an ACK lost, the origin timed out, or the slave SAE never asked).\n"
		     "# TYPE qwave_relay_keys_expired_total counter\n"
		     "qwave_relay_keys_expired_total{node=\"%s\"} %" PRIu64 "\n", node, R->keys_expired);
	ret |= km_pf(b, "# HELP qwave_relay_latency_seconds Relay from the first request of a batch to the destination's ACK (origin).\n"
		     "# TYPE qwave_relay_latency_seconds histogram\n");
	for (size_t i = 0; i < RL_NBUCKETS; i++)
		ret |= km_pf(b, "qwave_relay_latency_seconds_bucket{node=\"%s\",le=\"%g\"} %" PRIu64 "\n", node,
			  lat_bounds[i], R->lat_bucket[i]);
	ret |= km_pf(b, "qwave_relay_latency_seconds_bucket{node=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", node,
		  R->lat_count);
	ret |= km_pf(b, "qwave_relay_latency_seconds_sum{node=\"%s\"} %.6f\n", node, R->lat_sum);
	ret |= km_pf(b, "qwave_relay_latency_seconds_count{node=\"%s\"} %" PRIu64 "\n", node, R->lat_count);
	return ret ? QW_ENOMEM : 0;
}
