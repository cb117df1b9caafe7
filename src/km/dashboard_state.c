/* The node's view for the manager's dashboard (docs/dashboard.md, "How
 * the node wires it"): the whole network from the link-state database
 * (route_node.c) - every node and link the LSAs describe, with each end's
 * pool level - its own links with their local detail, and a ring of
 * recent alarms raised from link transitions and routing events. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "km_internal.h"
#include "qwave/log.h"
#include "qwave/routing.h"
#include "qwave/secmem.h"

/* How often the watcher looks at the links: an alarm shows within a
 * second of the page's own 1 s poll (SYSTEM.md section 5: at once). */
#define DASH_TICK_MS 1000

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void alarm_v(struct qw_km *km, enum qw_dashboard_severity sev, const char *kind,
		    const char *peer, const char *node, const char *fmt, va_list ap)
{
	struct km_alarm *a;

	if (!km->dash)
		return;
	a = &km->dash->ring[km->dash->head];
	km->dash->head = (km->dash->head + 1) % KM_DASH_ALARMS;
	if (km->dash->n < KM_DASH_ALARMS)
		km->dash->n++;
	a->ts_ms = wall_ms();
	a->severity = sev;
	a->kind = kind;
	a->peer = peer;
	a->node = node;
	vsnprintf(a->message, sizeof(a->message), fmt, ap);
}

void km_alarm(struct qw_km *km, enum qw_dashboard_severity sev, const char *kind,
	      const char *peer, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	alarm_v(km, sev, kind, peer, NULL, fmt, ap);
	va_end(ap);
}

void km_alarm_node(struct qw_km *km, enum qw_dashboard_severity sev, const char *kind,
		   const char *node, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	alarm_v(km, sev, kind, NULL, node, fmt, ap);
	va_end(ap);
}

static void watch_peer(struct qw_km *km, struct km_peer *p)
{
	struct qw_km_link_report r;
	uint64_t bits = 0;
	int pool_ok;

	pthread_mutex_lock(&p->mu);
	r = p->rep;
	pthread_mutex_unlock(&p->mu);
	/* a link that never came up is not "down" news: only the edge is;
	 * a new resync count means it dropped and came back between looks */
	if (p->dash_was_up && !p->up)
		km_alarm(km, QW_DASHBOARD_WARNING, "link_down", p->id, "KM link to %s down", p->id);
	else if (p->dash_was_up && p->resyncs != p->dash_resyncs)
		km_alarm(km, QW_DASHBOARD_WARNING, "link_down", p->id,
			 "KM link to %s was down (back up, resynchronised)", p->id);
	p->dash_was_up = p->up;
	p->dash_resyncs = p->resyncs;
	if (r.alarms > p->dash_alarms) {
		/* qkd.c counts blocks whose QBER estimate exceeded the link's
		 * threshold (and were dropped) */
		km_alarm(km, QW_DASHBOARD_CRITICAL, "qber", p->id,
			 "QBER above the threshold %.2f %% in %" PRIu64 " block(s) (eavesdropper?)",
			 100 * p->lc->qber_threshold, r.alarms - p->dash_alarms);
		p->dash_qber_alarm = 1;
	} else if (r.sessions > p->dash_sessions && r.qber <= p->lc->qber_threshold) {
		/* a clean session since the last alarm clears the flag */
		p->dash_qber_alarm = 0;
	}
	p->dash_alarms = r.alarms;
	p->dash_sessions = r.sessions;
	if (r.auth_failures > p->dash_auth_failures)
		/* qkd.c logs each one (ALARM QKD link ...) */
		km_alarm(km, QW_DASHBOARD_CRITICAL, "mac_failure", p->id,
			 "QKD session authentication failed on the classical channel to %s in %" PRIu64 " session(s) (tampering, or keys out of step)",
			 p->id, r.auth_failures - p->dash_auth_failures);
	p->dash_auth_failures = r.auth_failures;
	if (qw_store_pool_available(km->store, p->id, &bits))
		return;
	/* exhausted: not even one key of the default size left, after the
	 * pool held one (an empty pool at start is not an alarm) */
	pool_ok = bits >= km->conf->limits.key_size;
	if (p->dash_pool_ok && !pool_ok) {
		qw_log(QW_LOG_WARN, "ALARM pool %s exhausted: %" PRIu64 " bits left, less than one %" PRIu32 "-bit key",
		       p->id, bits, km->conf->limits.key_size);
		km_alarm(km, QW_DASHBOARD_WARNING, "pool_empty", p->id,
			 "key pool exhausted: %" PRIu64 " bits left, less than one %" PRIu32 "-bit key",
			 bits, km->conf->limits.key_size);
	}
	p->dash_pool_ok = pool_ok;
}

void km_dash_watch(struct qw_km *km)
{
	for (size_t i = 0; i < km->npeers; i++)
		watch_peer(km, &km->peers[i]);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	km_dash_watch(arg);
}

int km_dash_init(struct qw_km *km)
{
	struct timeval tv = { DASH_TICK_MS / 1000, (DASH_TICK_MS % 1000) * 1000 };
	struct km_dash *d;

	d = calloc(1, sizeof(*d));
	if (!d)
		return QW_ENOMEM;
	km->dash = d;
	d->nodes = qw_calloc(km->npeers + 1, sizeof(*d->nodes));
	d->links = qw_calloc(km->npeers ? km->npeers : 1, sizeof(*d->links));
	d->tick = event_new(km->base, -1, EV_PERSIST, on_tick, km);
	if (!d->nodes || !d->links || !d->tick || event_add(d->tick, &tv))
		return QW_ENOMEM;
	return 0;
}

void km_dash_free(struct qw_km *km)
{
	struct km_dash *d = km->dash;

	if (!d)
		return;
	if (d->tick)
		event_free(d->tick);
	free(d->nodes);
	free(d->links);
	free(d);
	km->dash = NULL;
}

/* ---- the whole network, from the link-state database ---- */

struct dash_build {
	struct qw_km *km;
	const struct qw_route_db *db;
	struct qw_dashboard_node *nodes;
	size_t nn, capn;
	struct qw_dashboard_link *links;
	size_t nl, capl;
};

static struct qw_dashboard_node *node_add(struct dash_build *b, const char *id)
{
	for (size_t i = 0; i < b->nn; i++)
		if (!strcmp(b->nodes[i].id, id))
			return &b->nodes[i];
	if (b->nn == b->capn)
		return NULL;
	b->nodes[b->nn].id = id;
	b->nodes[b->nn].up = 0;
	return &b->nodes[b->nn++];
}

static struct qw_dashboard_link *link_find(struct dash_build *b, const char *x, const char *y)
{
	for (size_t i = 0; i < b->nl; i++) {
		struct qw_dashboard_link *l = &b->links[i];
		if ((!strcmp(l->a, x) && !strcmp(l->b, y)) || (!strcmp(l->a, y) && !strcmp(l->b, x)))
			return l;
	}
	return NULL;
}

static const struct qw_route_link *lsa_link(const struct qw_lsa *l, const char *peer)
{
	for (uint16_t i = 0; l && i < l->n_links; i++)
		if (!strcmp(l->links[i].peer, peer))
			return &l->links[i];
	return NULL;
}

/* A link between two other nodes as their LSAs describe it: up when every
 * report held says so; each end's pool from its own report; QBER and key
 * rate from a report giving them; the alarm flag (QBER or MAC failure)
 * from either. */
static void remote_link(struct dash_build *b, const char *x, const char *y)
{
	const struct qw_route_link *kx = lsa_link(qw_route_db_find(b->db, x), y);
	const struct qw_route_link *ky = lsa_link(qw_route_db_find(b->db, y), x);
	const struct qw_route_link *q = kx && (kx->qber_ppm || kx->key_rate_bps) ? kx : ky;
	struct qw_dashboard_link *l;

	if (link_find(b, x, y) || b->nl == b->capl || (!kx && !ky))
		return;
	l = &b->links[b->nl++];
	l->a = x;
	l->b = y;
	l->length_km = -1;
	l->up = (!kx || (kx->flags & QW_ROUTE_LINK_UP)) && (!ky || (ky->flags & QW_ROUTE_LINK_UP));
	l->qber_alarm = (kx && (kx->flags & QW_ROUTE_LINK_ALARM)) ||
			(ky && (ky->flags & QW_ROUTE_LINK_ALARM));
	l->qber = q && (q->qber_ppm || q->key_rate_bps) ? q->qber_ppm / 1e6 : NAN;
	l->key_rate_bps = q && (q->qber_ppm || q->key_rate_bps) ? (double)q->key_rate_bps : NAN;
	l->pool_bits_a = kx ? kx->pool_bits : QW_DASHBOARD_UNKNOWN;
	l->pool_bits_b = ky ? ky->pool_bits : QW_DASHBOARD_UNKNOWN;
}

/* A node is up when a relay path from here reaches it (its LSA is held
 * and the two-way check finds usable links to it); a neighbour also while
 * its KM link is up before its first LSA arrived. */
static int node_up(struct dash_build *b, const char *id)
{
	struct qw_route_path p;
	struct km_peer *nb = km_peer_find(b->km, id);

	if (!strcmp(id, b->km->conf->id) || (nb && nb->up))
		return 1;
	return b->db && qw_route_db_find(b->db, id) &&
	       qw_route_path(b->db, b->km->conf->id, id, 0, NULL, &p) == 0;
}

int qw_km_dashboard_state(void *arg, struct qw_dashboard_state *st)
{
	struct qw_km *km = arg;
	struct km_dash *d;
	struct dash_build b;
	size_t ndb = 0, nlinks = km->npeers;

	QW_REQUIRE(km != NULL && st != NULL);
	d = km->dash;
	if (!d)
		return QW_ENOMEM;
	km_dash_watch(km);
	memset(&b, 0, sizeof(b));
	b.km = km;
	b.db = km_route_db(km);
	if (b.db) {
		ndb = qw_route_db_count(b.db);
		for (size_t i = 0; i < ndb; i++)
			nlinks += qw_route_db_get(b.db, i)->n_links;
	}
	/* sized for the worst case: every origin, every peer named, every
	 * alarm's node */
	free(d->nodes);
	free(d->links);
	b.capn = 1 + km->npeers + ndb + nlinks + KM_DASH_ALARMS;
	b.capl = nlinks ? nlinks : 1;
	d->nodes = b.nodes = qw_calloc(b.capn, sizeof(*b.nodes));
	d->links = b.links = qw_calloc(b.capl, sizeof(*b.links));
	if (!b.nodes || !b.links)
		return QW_ENOMEM;
	node_add(&b, km->conf->id);
	/* this node's own links with its local detail */
	for (size_t i = 0; i < km->npeers; i++) {
		struct km_peer *p = &km->peers[i];
		struct qw_dashboard_link *l = &b.links[b.nl++];
		const struct qw_route_link *far =
			b.db ? lsa_link(qw_route_db_find(b.db, p->id), km->conf->id) : NULL;
		struct qw_km_link_report r;
		uint64_t bits;

		pthread_mutex_lock(&p->mu);
		r = p->rep;
		pthread_mutex_unlock(&p->mu);
		node_add(&b, p->id);
		l->a = km->conf->id;
		l->b = p->id;
		l->length_km = p->lc->source == QW_KM_SOURCE_SIM ? p->lc->optics.distance_km : -1;
		l->up = p->up;
		/* no session yet: unknown, not 0 */
		l->qber = r.sessions && r.qber >= 0 && r.qber <= 1 ? r.qber : NAN;
		l->key_rate_bps = r.sessions || r.blocks_delivered ? r.key_rate_bps : NAN;
		l->qber_alarm = p->dash_qber_alarm || r.qber_alarm;
		l->pool_bits_a = qw_store_pool_available(km->store, p->id, &bits) ? QW_DASHBOARD_UNKNOWN
										     : bits;
		/* the far end's pool as its last LSA reported it */
		l->pool_bits_b = far ? far->pool_bits : QW_DASHBOARD_UNKNOWN;
	}
	for (size_t i = 0; i < ndb; i++) {
		const struct qw_lsa *o = qw_route_db_get(b.db, i);

		node_add(&b, o->origin);
		for (uint16_t k = 0; k < o->n_links; k++) {
			node_add(&b, o->links[k].peer);
			remote_link(&b, o->origin, o->links[k].peer);
		}
	}
	/* newest first */
	for (size_t i = 0; i < d->n; i++) {
		const struct km_alarm *a =
			&d->ring[(d->head + KM_DASH_ALARMS - 1 - i) % KM_DASH_ALARMS];
		struct qw_dashboard_alarm *o = &d->alarms[i];

		o->ts_ms = a->ts_ms;
		o->severity = a->severity;
		o->kind = a->kind;
		o->node = a->node ? a->node : a->peer ? NULL : km->conf->id;
		o->link_a = a->peer ? km->conf->id : NULL;
		o->link_b = a->peer;
		o->message = a->message;
		if (o->node && !node_add(&b, o->node))
			o->node = NULL;
	}
	for (size_t i = 0; i < b.nn; i++)
		b.nodes[i].up = node_up(&b, b.nodes[i].id);
	st->self = km->conf->id;
	st->nodes = b.nodes;
	st->nnodes = b.nn;
	st->links = b.links;
	st->nlinks = b.nl;
	st->alarms = d->alarms;
	st->nalarms = d->n;
	st->relays = km->relays;
	return 0;
}
