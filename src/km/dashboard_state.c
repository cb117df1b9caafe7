/* The node's own view for the manager's dashboard (docs/dashboard.md, "How
 * the node wires it"): its links and neighbours, and a ring of recent
 * alarms raised from link transitions. Routing's LSAs are not wired into
 * the node yet, so the picture stops at the neighbours; the whole network
 * arrives with link-state flooding. */
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

void km_alarm(struct qw_km *km, enum qw_dashboard_severity sev, const char *kind,
	      const char *peer, const char *fmt, ...)
{
	struct km_alarm *a;
	va_list ap;

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
	va_start(ap, fmt);
	vsnprintf(a->message, sizeof(a->message), fmt, ap);
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

int qw_km_dashboard_state(void *arg, struct qw_dashboard_state *st)
{
	struct qw_km *km = arg;
	struct km_dash *d;

	QW_REQUIRE(km != NULL && st != NULL);
	d = km->dash;
	if (!d)
		return QW_ENOMEM;
	km_dash_watch(km);
	d->nodes[0].id = km->conf->id;
	d->nodes[0].up = 1;
	for (size_t i = 0; i < km->npeers; i++) {
		struct km_peer *p = &km->peers[i];
		struct qw_dashboard_link *l = &d->links[i];
		struct qw_km_link_report r;
		uint64_t bits;

		pthread_mutex_lock(&p->mu);
		r = p->rep;
		pthread_mutex_unlock(&p->mu);
		/* without its LSA, a neighbour counts as reachable while the KM
		 * link to it is up */
		d->nodes[i + 1].id = p->id;
		d->nodes[i + 1].up = p->up;
		l->a = km->conf->id;
		l->b = p->id;
		l->length_km = p->lc->source == QW_KM_SOURCE_SIM ? p->lc->optics.distance_km : -1;
		l->up = p->up;
		/* no session yet: unknown, not 0 */
		l->qber = r.sessions && r.qber >= 0 && r.qber <= 1 ? r.qber : NAN;
		l->key_rate_bps = r.sessions || r.blocks_delivered ? r.key_rate_bps : NAN;
		l->qber_alarm = p->dash_qber_alarm;
		l->pool_bits_a = qw_store_pool_available(km->store, p->id, &bits) ? QW_DASHBOARD_UNKNOWN
										     : bits;
		l->pool_bits_b = QW_DASHBOARD_UNKNOWN;
	}
	/* newest first */
	for (size_t i = 0; i < d->n; i++) {
		const struct km_alarm *a =
			&d->ring[(d->head + KM_DASH_ALARMS - 1 - i) % KM_DASH_ALARMS];
		struct qw_dashboard_alarm *o = &d->alarms[i];

		o->ts_ms = a->ts_ms;
		o->severity = a->severity;
		o->kind = a->kind;
		o->node = a->peer ? NULL : km->conf->id;
		o->link_a = a->peer ? km->conf->id : NULL;
		o->link_b = a->peer;
		o->message = a->message;
	}
	st->self = km->conf->id;
	st->nodes = d->nodes;
	st->nnodes = km->npeers + 1;
	st->links = d->links;
	st->nlinks = km->npeers;
	st->alarms = d->alarms;
	st->nalarms = d->n;
	st->relays = km->relays;
	return 0;
}
