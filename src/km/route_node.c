/* Routing on the node: the QKDN controller function of ITU-T TR.SEC-QKD
 * clause 5 run on every node (docs/relay-routing.md, "Routing"). The pure
 * link-state database of routing.h is driven here: this node's links are
 * read from its KM links, store and QKD link reports; LSAs travel as
 * QW_KMLINK_LSA frames over the KM links (flooding table of the design);
 * a heartbeat (QW_KMLINK_PING) on idle links lets a dead neighbour be
 * noticed within dead_ms instead of TCP's minutes; relay paths and the
 * authorization policy are answered from here. Loop thread only. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/ioctl.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "km_internal.h"
#include "qwave/log.h"
#include "qwave/routing.h"
#include "qwave/secmem.h"

/* The database timer (routing.h: at least every refresh_ms / 2). */
#define ROUTE_TICK_MS 250

/* What this node remembers per KM link (index = peer index). */
struct route_peer {
	int64_t last_tx_ms;        /* our last LSA or PING on it */
	struct bufferevent *seen_bev; /* connection the silence clock belongs to */
	int64_t seen_ms;           /* when that connection was first seen, or
				    * last showed bytes arriving (below) */
	size_t in_len;             /* its input buffer at the last look */
	int mac_alarm;             /* km_route_set_alarm */
};

/* The best path last handed out per destination (path change counter). */
struct route_last {
	char dst[QW_KMLINK_ID_MAX + 1];
	char path[QW_ROUTE_MAX_PATH * (QW_KMLINK_ID_MAX + 1)];
};

struct km_route {
	struct qw_route_db *db;
	struct qw_route_policy *policy;
	struct event *tick;
	struct route_peer *peer;
	int64_t last_tick_ms;
	/* origins held at the last look: an origin that vanished aged out */
	char (*known)[QW_KMLINK_ID_MAX + 1];
	size_t nknown, capknown;
	struct route_last *last;
	size_t nlast, caplast;
	/* node IDs alarms point to: kept until the node stops (the alarm
	 * ring holds pointers, km_alarm_node) */
	char **names;
	size_t nnames;
	/* counters */
	uint64_t lsa_rx, lsa_rx_new, lsa_tx, lsa_originated, pings_tx, heartbeat_drops;
	uint64_t paths_computed, path_changes, aged_out;
};

static int64_t unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t peer_index(const struct km_peer *p)
{
	return (size_t)(p - p->km->peers);
}

/* ---- sending ---- */

static void send_body(struct km_route *r, struct km_peer *p, uint8_t *body, size_t len)
{
	struct qw_kmlink_msg m;

	/* the peer refuses an LSA before its side of the link is up
	 * (kmlink.c), and a frame after our RESYNC_DONE arrives after it */
	if (!p->up)
		return;
	memset(&m, 0, sizeof(m));
	m.type = QW_KMLINK_LSA;
	m.u.raw.body = body;
	m.u.raw.len = len;
	if (km_send(p, &m) == 0) {
		r->lsa_tx++;
		r->peer[peer_index(p)].last_tx_ms = km_now_ms();
	}
}

static int send_lsa(struct km_route *r, struct km_peer *p, const struct qw_lsa *l)
{
	struct qw_buf b;
	int ret;

	qw_buf_init(&b, 0);
	ret = qw_lsa_encode(l, &b);
	if (!ret)
		send_body(r, p, b.data, b.len);
	qw_buf_free(&b);
	return ret;
}

/* The own LSA to every up neighbour (out.originate). */
static void flood_own(struct qw_km *km)
{
	struct km_route *r = km->route;
	const struct qw_lsa *own = qw_route_db_own(r->db);
	struct qw_buf b;

	r->lsa_originated++;
	qw_buf_init(&b, 0);
	if (qw_lsa_encode(own, &b) == 0)
		for (size_t i = 0; i < km->npeers; i++)
			send_body(r, &km->peers[i], b.data, b.len);
	qw_buf_free(&b);
}

/* ---- the own links ---- */

static void own_links(struct qw_km *km, struct qw_route_link *links, size_t *n)
{
	struct km_route *r = km->route;

	*n = 0;
	for (size_t i = 0; i < km->npeers && *n < QW_ROUTE_MAX_LINKS; i++) {
		struct km_peer *p = &km->peers[i];
		struct qw_route_link *k = &links[(*n)++];
		struct qw_km_link_report rep;
		uint64_t bits = 0;

		pthread_mutex_lock(&p->mu);
		rep = p->rep;
		pthread_mutex_unlock(&p->mu);
		memset(k, 0, sizeof(*k));
		snprintf(k->peer, sizeof(k->peer), "%s", p->id);
		k->flags = p->up ? QW_ROUTE_LINK_UP : 0;
		/* QBER alarm: the QKD link's (a session hit the threshold,
		 * until a clean one) or the dashboard watcher's per-transition
		 * flag; MAC failure: km_route_set_alarm */
		if (rep.qber_alarm || p->dash_qber_alarm || r->peer[i].mac_alarm)
			k->flags |= QW_ROUTE_LINK_ALARM;
		if (qw_store_pool_available(km->store, p->id, &bits) == 0)
			k->pool_bits = bits;
		if (rep.sessions && rep.qber >= 0 && rep.qber <= 1)
			k->qber_ppm = (uint32_t)(rep.qber * 1e6 + 0.5);
		if (rep.key_rate_bps > 0)
			k->key_rate_bps = (uint64_t)rep.key_rate_bps;
	}
}

static void refresh_links(struct qw_km *km)
{
	struct qw_route_link links[QW_ROUTE_MAX_LINKS];
	struct qw_route_out out;
	size_t n;

	own_links(km, links, &n);
	if (qw_route_db_set_links(km->route->db, links, n, km_now_ms(), &out) == 0 && out.originate)
		flood_own(km);
}

/* ---- node appearance and disappearance ---- */

static int known_has(const struct km_route *r, const char *id)
{
	for (size_t i = 0; i < r->nknown; i++)
		if (!strcmp(r->known[i], id))
			return 1;
	return 0;
}

/* A stable copy of id for the alarm ring; NULL (the alarm then names no
 * node, only its text does) when out of memory. */
static const char *intern(struct km_route *r, const char *id)
{
	char **g;

	for (size_t i = 0; i < r->nnames; i++)
		if (!strcmp(r->names[i], id))
			return r->names[i];
	g = realloc(r->names, (r->nnames + 1) * sizeof(*g));
	if (!g)
		return NULL;
	r->names = g;
	if (!(g[r->nnames] = malloc(strlen(id) + 1)))
		return NULL;
	strcpy(g[r->nnames], id);
	return g[r->nnames++];
}

/* Compare the origins held now with the last look: an origin gone from
 * the database aged out (no LSA for max_age): the node is dead or cut off. */
static void watch_nodes(struct qw_km *km)
{
	struct km_route *r = km->route;
	size_t n = qw_route_db_count(r->db);

	for (size_t i = 0; i < r->nknown; i++) {
		if (qw_route_db_find(r->db, r->known[i]))
			continue;
		r->aged_out++;
		qw_log(QW_LOG_WARN, "ALARM node %s unreachable: no LSA from it for %" PRIu32 " ms",
		       r->known[i], km->conf->routing.max_age_ms);
		km_alarm_node(km, QW_DASHBOARD_CRITICAL, "node_down", intern(r, r->known[i]),
			      "node %s unreachable: its link-state advertisement aged out (no news for %" PRIu32 " ms)",
			      r->known[i], km->conf->routing.max_age_ms);
	}
	if (n > r->capknown) {
		void *g = realloc(r->known, n * sizeof(*r->known));
		if (!g)
			return;
		r->known = g;
		r->capknown = n;
	}
	for (size_t i = 0; i < n; i++) {
		const char *id = qw_route_db_get(r->db, i)->origin;
		if (i && !known_has(r, id))
			qw_log(QW_LOG_INFO, "routing: node %s reachable (its LSA arrived)", id);
	}
	r->nknown = 0;
	for (size_t i = 0; i < n; i++)
		snprintf(r->known[r->nknown++], QW_KMLINK_ID_MAX + 1, "%s",
			 qw_route_db_get(r->db, i)->origin);
}

/* ---- timer ---- */

static void heartbeat(struct qw_km *km, int64_t now, int stalled)
{
	struct km_route *r = km->route;
	const struct qw_km_conf *c = km->conf;

	for (size_t i = 0; i < km->npeers; i++) {
		struct km_peer *p = &km->peers[i];
		struct route_peer *rp = &r->peer[i];
		int64_t last;

		if (!p->bev) {
			rp->seen_bev = NULL;
			continue;
		}
		if (rp->seen_bev != p->bev || stalled) {
			/* a new connection (or our own loop was stalled, so
			 * silence says nothing about the peer): its silence
			 * starts now */
			rp->seen_bev = p->bev;
			rp->seen_ms = now;
		}
		/* bytes arriving count as life even before a frame is whole
		 * (a large RELAY in transit) or read (our loop was busy): data
		 * in the kernel's socket buffer, or the input buffer grown */
		{
			size_t in = evbuffer_get_length(bufferevent_get_input(p->bev));
			evutil_socket_t fd = bufferevent_getfd(p->bev);
			int nb = 0;

			if (in != rp->in_len ||
			    (fd >= 0 && ioctl(fd, FIONREAD, &nb) == 0 && nb > 0))
				rp->seen_ms = now;
			rp->in_len = in;
		}
		last = p->last_rx_ms > rp->seen_ms ? p->last_rx_ms : rp->seen_ms;
		if (c->routing.dead_ms && now - last > (int64_t)c->routing.dead_ms) {
			r->heartbeat_drops++;
			qw_log(QW_LOG_WARN, "KM link to %s: nothing received for %" PRId64 " ms",
			       p->id, now - last);
			km_peer_drop(p, "no heartbeat");
			continue;
		}
		if (c->routing.heartbeat_ms && now - rp->last_tx_ms >= (int64_t)c->routing.heartbeat_ms) {
			struct qw_kmlink_msg m;

			/* PING is spoken in any link state (kmlink.c) */
			memset(&m, 0, sizeof(m));
			m.type = QW_KMLINK_PING;
			if (km_send(p, &m) == 0) {
				rp->last_tx_ms = now;
				r->pings_tx++;
			}
		}
	}
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct qw_km *km = arg;
	struct km_route *r = km->route;
	struct qw_route_out out;
	int64_t now = km_now_ms();
	int stalled = r->last_tick_ms && now - r->last_tick_ms > 4 * ROUTE_TICK_MS;

	(void)fd;
	(void)what;
	r->last_tick_ms = now;
	heartbeat(km, now, stalled);
	refresh_links(km);
	if (qw_route_db_tick(r->db, now, &out) >= 0 && out.originate)
		flood_own(km);
	watch_nodes(km);
}

/* ---- hooks (km_internal.h) ---- */

int km_route_init(struct qw_km *km)
{
	const struct qw_km_conf *c = km->conf;
	struct qw_route_opts o;
	struct timeval tv = { 0, ROUTE_TICK_MS * 1000 };
	struct km_route *r;
	int ret = QW_ENOMEM;

	r = calloc(1, sizeof(*r));
	if (!r)
		return QW_ENOMEM;
	km->route = r;
	memset(&o, 0, sizeof(o));
	o.refresh_ms = c->routing.refresh_ms;
	o.max_age_ms = c->routing.max_age_ms;
	o.low_pool_bits = c->routing.low_pool_bits;
	/* first seq: Unix ms, so a restarted node starts above its previous
	 * life's LSAs still travelling (routing.h) */
	r->db = qw_route_db_new(c->id, (uint64_t)unix_ms(), &o);
	r->policy = qw_route_policy_new(c->policy_default_allow);
	r->peer = calloc(km->npeers ? km->npeers : 1, sizeof(*r->peer));
	r->tick = event_new(km->base, -1, EV_PERSIST, on_tick, km);
	if (!r->db) {
		ret = QW_EINVAL; /* timers the config check lets through are valid */
		goto fail;
	}
	if (!r->policy || !r->peer || !r->tick)
		goto fail;
	for (size_t i = 0; i < c->npolicy_rules; i++)
		if ((ret = qw_route_policy_add_text(r->policy, c->policy_rules[i])))
			goto fail;
	if (event_add(r->tick, &tv)) {
		ret = QW_ENOMEM;
		goto fail;
	}
	refresh_links(km);
	watch_nodes(km);
	return 0;
fail:
	km_route_free(km);
	return ret;
}

void km_route_free(struct qw_km *km)
{
	struct km_route *r = km->route;

	if (!r)
		return;
	if (r->tick)
		event_free(r->tick);
	qw_route_db_free(r->db);
	qw_route_policy_free(r->policy);
	free(r->peer);
	free(r->known);
	free(r->last);
	for (size_t i = 0; i < r->nnames; i++)
		free(r->names[i]);
	free(r->names);
	free(r);
	km->route = NULL;
}

void km_route_on_message(struct km_peer *p, const struct qw_kmlink_msg *m)
{
	struct qw_km *km = p->km;
	struct km_route *r = km->route;
	struct qw_route_out out;
	struct qw_lsa *l;
	int ret;

	if (!r || m->type != QW_KMLINK_LSA)
		return; /* PING: p->last_rx_ms is all it is for */
	r->lsa_rx++;
	l = malloc(sizeof(*l));
	if (!l)
		return; /* dropped: the next refresh brings it again */
	if (qw_lsa_parse(m->u.raw.body, m->u.raw.len, l)) {
		free(l);
		km_peer_drop(p, "malformed LSA");
		return;
	}
	ret = qw_route_db_receive(r->db, l, p->id, km_now_ms(), &out);
	free(l);
	if (ret == 1) {
		r->lsa_rx_new++;
		/* forward as received: the flood carries the origin's bytes */
		for (size_t i = 0; i < out.n_fwd; i++) {
			struct km_peer *q = km_peer_find(km, out.fwd[i]);
			if (q && q != p)
				send_body(r, q, m->u.raw.body, m->u.raw.len);
		}
	}
	if (ret >= 0 && out.originate)
		flood_own(km);
	if (ret == 1)
		watch_nodes(km);
}

void km_route_link_changed(struct km_peer *p)
{
	struct qw_km *km = p->km;
	struct km_route *r = km->route;
	const struct qw_lsa *own;
	uint64_t own_seq;

	if (!r)
		return;
	own_seq = qw_route_db_own(r->db)->seq;
	r->peer[peer_index(p)].seen_bev = NULL;
	/* up/down flips the UP flag: set_links originates at once */
	refresh_links(km);
	if (!p->up)
		return;
	/* database exchange: the new neighbour gets every LSA held (the own
	 * one too unless the refresh just flooded it) */
	own = qw_route_db_own(r->db);
	for (size_t i = 0; i < qw_route_db_count(r->db); i++) {
		const struct qw_lsa *l = qw_route_db_get(r->db, i);
		if (l == own && own->seq != own_seq)
			continue;
		(void)send_lsa(r, p, l);
	}
}

void km_route_set_alarm(struct km_peer *p, int on)
{
	struct km_route *r = p->km->route;
	struct route_peer *rp;

	if (!r)
		return;
	rp = &r->peer[peer_index(p)];
	if (!!on == rp->mac_alarm)
		return;
	rp->mac_alarm = !!on;
	if (on) {
		qw_log(QW_LOG_ERROR, "ALARM KM link %s: message authentication failed (tampering?): relays avoid the link",
		       p->id);
		km_alarm(p->km, QW_DASHBOARD_CRITICAL, "mac_failure", p->id,
			 "message authentication failed on the link to %s (tampering?): relays avoid it",
			 p->id);
	} else {
		qw_log(QW_LOG_INFO, "KM link %s: authentication alarm cleared", p->id);
	}
	refresh_links(p->km);
}

/* Count a change of the best path to dst (the relay's view). */
static void note_path(struct km_route *r, const char *dst, const struct qw_route_path *best)
{
	char text[sizeof(r->last[0].path)];
	size_t off = 0;
	struct route_last *e = NULL;

	text[0] = 0;
	for (size_t i = 0; best && i < best->n && off < sizeof(text); i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off, "%s%s", i ? " " : "",
					best->nodes[i]);
	for (size_t i = 0; i < r->nlast; i++)
		if (!strcmp(r->last[i].dst, dst))
			e = &r->last[i];
	if (!e) {
		if (r->nlast == r->caplast) {
			size_t nc = r->caplast ? 2 * r->caplast : 8;
			struct route_last *g;
			if (nc > QW_ROUTE_MAX_NODES ||
			    !(g = realloc(r->last, nc * sizeof(*g))))
				return;
			r->last = g;
			r->caplast = nc;
		}
		e = &r->last[r->nlast++];
		snprintf(e->dst, sizeof(e->dst), "%s", dst);
		snprintf(e->path, sizeof(e->path), "%s", text);
		return;
	}
	if (strcmp(e->path, text)) {
		r->path_changes++;
		/* debug: with pools draining, equal-length paths trade places
		 * often; qwave_route_path_changes_total counts them */
		qw_log(QW_LOG_DEBUG, "routing: best path to %s now %s (was %s)", dst,
		       *text ? text : "none", *e->path ? e->path : "none");
		snprintf(e->path, sizeof(e->path), "%s", text);
	}
}

int km_route_paths(struct qw_km *km, const char *dst_node, uint64_t need_bits,
		   struct qw_route_path *paths, size_t max, size_t *n)
{
	struct km_route *r = km->route;
	int ret;

	*n = 0;
	if (!r || max == 0)
		return QW_ENOTFOUND;
	if (max > QW_ROUTE_MAX_K)
		max = QW_ROUTE_MAX_K;
	r->paths_computed++;
	ret = qw_route_paths(r->db, km->conf->id, dst_node, need_bits, max, paths, n);
	if (!qw_kmlink_id_valid(dst_node))
		return ret;
	note_path(r, dst_node, ret == 0 && *n ? &paths[0] : NULL);
	return ret;
}

int km_policy_check(struct qw_km *km, const char *master, const char *slave)
{
	/* without routing state (stopping) nothing is authorised */
	if (!km->route)
		return QW_EPERM;
	return qw_route_policy_check(km->route->policy, master, slave);
}

/* ---- metrics ---- */


static size_t reachable(const struct km_route *r, const char *self)
{
	size_t n = 0;

	for (size_t i = 0; i < qw_route_db_count(r->db); i++) {
		struct qw_route_path p;
		const char *id = qw_route_db_get(r->db, i)->origin;

		if (strcmp(id, self) && qw_route_path(r->db, self, id, 0, NULL, &p) == 0)
			n++;
	}
	return n;
}

int km_route_metrics(struct qw_km *km, struct qw_buf *b)
{
	struct km_route *r = km->route;
	const char *node = km->conf->id;
	int ret = 0;
	static const struct {
		const char *name, *type, *help;
	} m[] = {
		{ "qwave_route_lsa_received_total", "counter", "Link-state advertisements received over KM links (new and duplicate)." },
		{ "qwave_route_lsa_accepted_total", "counter", "Received LSAs newer than the one held (stored and flooded on)." },
		{ "qwave_route_lsa_sent_total", "counter", "LSAs sent: originated, forwarded and database exchange." },
		{ "qwave_route_lsa_originated_total", "counter", "Own LSAs originated (refresh and link changes)." },
		{ "qwave_route_db_lsas", "gauge", "LSAs in the link-state database, the own included (nodes known)." },
		{ "qwave_route_nodes_reachable", "gauge", "Other nodes a relay path leads to now." },
		{ "qwave_route_nodes_aged_out_total", "counter", "Nodes removed from the database: no LSA for max_age (alarm node_down)." },
		{ "qwave_route_path_computations_total", "counter", "Relay path computations." },
		{ "qwave_route_path_changes_total", "counter", "Changes of the best path to a destination between computations." },
		{ "qwave_km_heartbeats_sent_total", "counter", "PINGs sent on idle KM links." },
		{ "qwave_km_heartbeat_drops_total", "counter", "KM links dropped for silence longer than dead_ms." },
	};
	uint64_t v[11];

	if (!r)
		return 0;
	v[0] = r->lsa_rx;
	v[1] = r->lsa_rx_new;
	v[2] = r->lsa_tx;
	v[3] = r->lsa_originated;
	v[4] = qw_route_db_count(r->db);
	v[5] = reachable(r, node);
	v[6] = r->aged_out;
	v[7] = r->paths_computed;
	v[8] = r->path_changes;
	v[9] = r->pings_tx;
	v[10] = r->heartbeat_drops;
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		ret |= km_pf(b, "# HELP %s %s\n# TYPE %s %s\n%s{node=\"%s\"} %" PRIu64 "\n", m[i].name,
			  m[i].help, m[i].name, m[i].type, m[i].name, node, v[i]);
	return ret ? QW_ENOMEM : 0;
}

/* ---- the database for the dashboard (dashboard_state.c) ---- */

const struct qw_route_db *km_route_db(const struct qw_km *km)
{
	return km->route ? km->route->db : NULL;
}
