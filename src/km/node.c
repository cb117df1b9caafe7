/* The key manager of a node: peers, the pool feed from the QKD link
 * threads, request completion, routing and metrics (include/qwave/km.h). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "km_internal.h"
#include "qwave/log.h"
#include "qwave/secmem.h"

int64_t km_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct km_peer *km_peer_find(struct qw_km *km, const char *id)
{
	for (size_t i = 0; i < km->npeers; i++)
		if (!strcmp(km->peers[i].id, id))
			return &km->peers[i];
	return NULL;
}

void km_block_free(struct km_block *b)
{
	if (!b)
		return;
	qw_free_secret(b->bits, b->nbytes);
	free(b->ids);
	free(b);
}

size_t km_append_blocks(struct km_peer *p)
{
	size_t n = 0;

	/* A pool list sent to the peer must not be outdated by our own
	 * append before the peer applied it. */
	if (p->bev && !p->up)
		return 0;
	for (;; n++) {
		struct km_block *b;
		int ret;

		pthread_mutex_lock(&p->mu);
		b = p->blk_head;
		if (b) {
			p->blk_head = b->next;
			if (!p->blk_head)
				p->blk_tail = NULL;
		}
		pthread_mutex_unlock(&p->mu);
		if (!b)
			break;
		if (b->kind == KM_BLOCK_ANNOUNCE) {
			/* held until the slave has the same block */
			if (p->held_tail)
				p->held_tail->next = b;
			else
				p->held_head = b;
			p->held_tail = b;
			b->next = NULL;
			if (p->up)
				km_src_announce(p, b);
			continue;
		}
		ret = b->kind == KM_BLOCK_DROP ? QW_EABORT
					       : qw_store_pool_append(p->km->store, p->id, b->id, b->bits, b->nbits);
		if (ret && b->kind != KM_BLOCK_DROP) {
			p->blocks_refused++;
			qw_log(QW_LOG_WARN, "pool %s: block %" PRIu64 " refused: %s", p->id, b->id,
			       qw_strerror(ret));
		} else if (!ret) {
			p->blocks_appended++;
		}
		if (b->kind == KM_BLOCK_ACK || b->kind == KM_BLOCK_DROP) {
			struct qw_kmlink_msg m;
			memset(&m, 0, sizeof(m));
			m.type = ret ? QW_KMLINK_SOURCE_DROP : QW_KMLINK_SOURCE_ACK;
			m.u.source.block_id = b->id;
			(void)km_send(p, &m);
		}
		km_block_free(b);
	}
	return n;
}

void km_drain_blocks(struct km_peer *p)
{
	if (km_append_blocks(p) && p->in_head)
		km_process_in(p);
}

static void on_blocks(evutil_socket_t fd, short what, void *arg)
{
	struct qw_km *km = arg;

	(void)fd;
	(void)what;
	for (size_t i = 0; i < km->npeers; i++)
		km_drain_blocks(&km->peers[i]);
}

int qw_km_submit_block(struct qw_km *km, const char *peer, uint64_t block_id,
		       const uint8_t *bits, uint64_t nbits)
{
	struct km_peer *p = km_peer_find(km, peer);

	if (!p)
		return QW_ENOTFOUND;
	return km_submit(p, KM_BLOCK_POOL, block_id, bits, nbits, 0, NULL, 0);
}

int km_submit(struct km_peer *p, enum km_block_kind kind, uint64_t block_id, const uint8_t *bits,
	      uint64_t nbits, uint32_t key_bits, const struct qw_uuid *ids, size_t nids)
{
	struct qw_km *km = p->km;
	struct km_block *b;

	b = calloc(1, sizeof(*b));
	if (!b)
		return QW_ENOMEM;
	b->id = block_id;
	b->kind = kind;
	b->nbits = nbits;
	b->key_bits = key_bits;
	b->nbytes = (size_t)((nbits + 7) / 8);
	b->bits = malloc(b->nbytes ? b->nbytes : 1);
	if (nids) {
		b->ids = qw_calloc(nids, sizeof(*b->ids));
		if (b->ids)
			memcpy(b->ids, ids, nids * sizeof(*ids));
		b->nids = nids;
	}
	if (!b->bits || (nids && !b->ids)) {
		km_block_free(b);
		return QW_ENOMEM;
	}
	if (b->nbytes)
		memcpy(b->bits, bits, b->nbytes);
	pthread_mutex_lock(&p->mu);
	if (p->blk_tail)
		p->blk_tail->next = b;
	else
		p->blk_head = b;
	p->blk_tail = b;
	pthread_mutex_unlock(&p->mu);
	event_active(km->blocks_ev, EV_READ, 0);
	return 0;
}

void qw_km_link_report(struct qw_km *km, const char *peer, const struct qw_km_link_report *r)
{
	struct km_peer *p = km_peer_find(km, peer);

	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->rep = *r;
	pthread_mutex_unlock(&p->mu);
}

struct qw_km *qw_km_new(struct event_base *base, const struct qw_km_conf *conf,
			struct qw_store *store, int *err)
{
	struct qw_km *km;
	int dummy;

	if (!err)
		err = &dummy;
	QW_REQUIRE(base != NULL && conf != NULL && store != NULL);
	*err = QW_ENOMEM;
	km = calloc(1, sizeof(*km));
	if (!km)
		return NULL;
	km->base = base;
	km->conf = conf;
	km->store = store;
	km->peers = qw_calloc(conf->nlinks ? conf->nlinks : 1, sizeof(*km->peers));
	km->blocks_ev = event_new(base, -1, 0, on_blocks, km);
	if (!km->peers || !km->blocks_ev) {
		qw_km_free(km);
		return NULL;
	}
	for (size_t i = 0; i < conf->nlinks; i++) {
		struct km_peer *p = &km->peers[i];
		p->km = km;
		p->lc = &conf->links[i];
		p->id = conf->links[i].peer;
		p->leader = qw_km_is_leader(conf->id, p->id);
		p->next_seq = 1;
		pthread_mutex_init(&p->mu, NULL);
		km->npeers++;
	}
	if (km_dash_init(km)) {
		qw_km_free(km);
		return NULL;
	}
	if ((*err = km_route_init(km)) || (*err = km_relay_init(km))) {
		qw_km_free(km);
		return NULL;
	}
	*err = 0;
	return km;
}

void qw_km_free(struct qw_km *km)
{
	if (!km)
		return;
	km->down_cb = NULL;
	km_relay_free(km);
	km_route_free(km);
	for (size_t i = 0; i < km->npeers; i++) {
		struct km_peer *p = &km->peers[i];
		km_peer_drop(p, "node stopping");
		while (p->reqs)
			km_req_finish(p->reqs, QW_ECLOSED, NULL, 0);
		if (p->retry_ev)
			event_free(p->retry_ev);
		while (p->blk_head) {
			struct km_block *b = p->blk_head;
			p->blk_head = b->next;
			km_block_free(b);
		}
		while (p->held_head) {
			struct km_block *b = p->held_head;
			p->held_head = b->next;
			km_block_free(b);
		}
		pthread_mutex_destroy(&p->mu);
	}
	if (km->blocks_ev)
		event_free(km->blocks_ev);
	km_dash_free(km);
	free(km->peers);
	free(km);
}

void qw_km_set_down_cb(struct qw_km *km, void (*cb)(void *arg, const char *peer), void *arg)
{
	km->down_cb = cb;
	km->down_arg = arg;
}

size_t qw_km_pending(struct qw_km *km)
{
	return km->pending;
}

const char *km_sae_node(const struct qw_km *km, const char *sae)
{
	for (size_t i = 0; i < km->conf->nsaes; i++)
		if (!strcmp(km->conf->saes[i].id, sae))
			return km->conf->saes[i].node;
	return NULL;
}

int qw_km_route(struct qw_km *km, const char *sae, const char **peer)
{
	const struct qw_km_conf *c = km->conf;

	for (size_t i = 0; i < c->nsaes; i++) {
		if (strcmp(c->saes[i].id, sae))
			continue;
		if (!strcmp(c->saes[i].node, c->id))
			return QW_ESTATE;
		for (size_t j = 0; j < c->nlinks; j++)
			if (!strcmp(c->links[j].peer, c->saes[i].node)) {
				*peer = c->links[j].peer;
				return 0;
			}
		return QW_EUNSUPPORTED;
	}
	return QW_ENOTFOUND;
}

/* ---- request completion ---- */

void km_req_finish(struct km_req *r, int err, struct qw_kme_key *keys, size_t n)
{
	struct km_peer *p = r->p;
	size_t off = 0;

	for (struct km_req **pr = &p->reqs; *pr; pr = &(*pr)->next)
		if (*pr == r) {
			*pr = r->next;
			break;
		}
	if (r->sent)
		p->inflight--;
	if (r->timer)
		event_free(r->timer);
	free(r->k.ids);
	r->km->pending -= r->nw;
	if (err)
		p->requests_failed += r->nw;
	/* the batch's keys in request order: each waiter gets its own array */
	for (size_t i = 0; i < r->nw; i++) {
		struct km_waiter *w = &r->w[i];
		struct qw_kme_key *mine = NULL;

		if (!err && keys && off + w->number <= n) {
			mine = qw_calloc(w->number, sizeof(*mine));
			if (mine) {
				memcpy(mine, keys + off, w->number * sizeof(*mine));
				memset(keys + off, 0, w->number * sizeof(*mine));
			} else {
				km_keys_lost(r->km, r->k.master, NULL, keys + off, w->number);
			}
			off += w->number;
			w->cb(w->arg, mine ? 0 : QW_ENOMEM, mine, mine ? w->number : 0);
		} else {
			w->cb(w->arg, err ? err : QW_ENOMEM, NULL, 0);
		}
	}
	qw_kme_keys_free(keys, n);
	free(r->w);
	free(r);
	km_kick(p);
}

/* Leader: the oldest batch still collecting requests for p, or NULL. */
static struct km_req *next_open(struct km_peer *p)
{
	for (struct km_req *q = p->reqs; q; q = q->next)
		if (!q->sent)
			return q;
	return NULL;
}

/* Leader: announce batch nb, whose keys (ids, cut at pos) the store has
 * just committed, as kme_impl.c's batch_send does after its own cut. */
static void announce_cut(struct km_req *nb, struct qw_uuid *ids, const struct qw_store_pos *pos)
{
	struct km_peer *p = nb->p;
	struct qw_kmlink_msg m;
	int ret;

	nb->sent = 1;
	p->inflight++;
	p->batches++;
	nb->seq = p->next_seq++ | KM_SEQ_LEADER;
	nb->k.ids = ids;
	nb->cut_here = 1;
	memset(&m, 0, sizeof(m));
	m.type = QW_KMLINK_KEYS_NEW;
	m.seq = nb->seq;
	m.u.keys = nb->k;
	m.u.keys.pos = *pos;
	ret = km_send(p, &m);
	if (ret) {
		km_erase_ids(nb->km, ids, nb->k.count);
		km_req_finish(nb, ret == QW_ECLOSED ? QW_EAGAIN : ret, NULL, 0);
	}
}

void km_req_deliver(struct km_req *r)
{
	struct qw_km *km = r->km;
	struct km_peer *p = r->p;
	size_t bytes = r->k.size_bits / 8, total = bytes * r->k.count, outlen = 0;
	struct qw_kme_key *keys = NULL;
	/* A batch of small keys passes through a wiped stack buffer; a larger
	 * one gets a locked buffer (an mlock per batch costs more than the
	 * rest of the copy). */
	uint8_t stack[4096], *out = total <= sizeof(stack) ? stack : NULL;
	/* Leader: the next batch is cut in the delivery's transaction (one
	 * commit, one fsync, instead of two); it is announced after that
	 * commit, exactly as a cut of its own would be. */
	struct km_req *nb = p->leader && p->up ? next_open(p) : NULL;
	const char *slaves[QW_STORE_SLAVES_MAX];
	struct qw_store_key_req rq = { 0 };
	struct qw_uuid *nids = NULL;
	struct qw_store_pos npos = { 0 };
	int ret = QW_ENOMEM, cerr = 0;

	if (!out)
		out = qw_secure_alloc(total);
	keys = qw_calloc(r->k.count, sizeof(*keys));
	if (!out || !keys)
		goto fail;
	if (nb && (nids = qw_calloc(nb->k.count, sizeof(*nids)))) {
		for (uint32_t i = 0; i < nb->k.n_slaves; i++)
			slaves[i] = nb->k.slaves[i];
		rq.peer = p->id;
		rq.size_bits = nb->k.size_bits;
		rq.master_sae = nb->k.master;
		rq.slave_saes = slaves;
		rq.n_slaves = nb->k.n_slaves;
		ret = qw_store_key_deliver_create(km->store, r->k.ids, r->k.count, r->k.master, out,
						  total, &outlen, &rq, nb->k.count, nids, &npos, &cerr);
	} else {
		ret = qw_store_key_deliver_many(km->store, r->k.ids, r->k.count, r->k.master, out,
						total, &outlen, NULL);
	}
	if (ret) {
		free(nids);
		goto fail;
	}
	if (nids && !cerr)
		announce_cut(nb, nids, &npos); /* owns nids now */
	else
		free(nids); /* nb is cut on its own when r completes */
	ret = QW_ENOMEM;
	for (uint32_t i = 0; i < r->k.count; i++) {
		keys[i].key = malloc(bytes);
		if (!keys[i].key) {
			km_keys_lost(km, r->k.master, r->k.ids, NULL, r->k.count);
			qw_kme_keys_free(keys, i);
			keys = NULL;
			goto fail_delivered;
		}
		memcpy(keys[i].key, out + (size_t)i * bytes, bytes);
		keys[i].size_bits = r->k.size_bits;
		qw_uuid_format(&r->k.ids[i], keys[i].key_id);
	}
	if (out == stack)
		qw_wipe(stack, total);
	else
		qw_secure_free(out, total);
	p->keys_master += r->k.count;
	km->keys_delivered += r->k.count;
	km_req_finish(r, 0, keys, r->k.count);
	return;
fail:
	/* after a failed deliver_many nothing was delivered: the keys stay
	 * RESERVED for the master, so erase them rather than strand them */
	if (ret != QW_ENOMEM || out)
		km_erase_ids(km, r->k.ids, r->k.count);
fail_delivered:
	if (out == stack)
		qw_wipe(stack, total);
	else
		qw_secure_free(out, total);
	free(keys);
	qw_log(QW_LOG_WARN, "delivering %u key(s) to %s failed: %s", r->k.count, r->k.master,
	       qw_strerror(ret));
	km_req_finish(r, ret, NULL, 0);
}

void km_keys_lost(struct qw_km *km, const char *sae, const struct qw_uuid *ids,
		  const struct qw_kme_key *keys, size_t n)
{
	km->keys_lost += n;
	qw_log(QW_LOG_ERROR, "%zu key(s) delivered in the store are lost: out of memory before they reached %s",
	       n, sae);
	for (size_t i = 0; i < n; i++) {
		char id[QW_UUID_STR_BYTES];

		if (ids)
			qw_uuid_format(&ids[i], id);
		else
			snprintf(id, sizeof(id), "%s", keys[i].key_id);
		qw_log(QW_LOG_ERROR, "lost key %s (for %s)", id, sae);
	}
}

/* ---- metrics ---- */

void qw_km_count_status(struct qw_km *km, int status)
{
	size_t i;

	for (i = 0; i < 16 && km->status[i].status; i++)
		if (km->status[i].status == status)
			break;
	if (i == 16)
		return;
	km->status[i].status = status;
	km->status[i].n++;
}

int km_pf(struct qw_buf *b, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return QW_EINVAL;
	return qw_buf_append(b, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

#define HELP(b, name, type, text) \
	km_pf(b, "# HELP " name " " text "\n# TYPE " name " " type "\n")

int qw_km_metrics(struct qw_km *km, struct qw_buf *b)
{
	const char *node = km->conf->id;
	int ret = 0;

	ret |= HELP(b, "qwave_pool_bits", "gauge", "Unconsumed link-key bits in the pool shared with a neighbour.");
	for (size_t i = 0; i < km->npeers; i++) {
		uint64_t bits = 0;
		if (qw_store_pool_available(km->store, km->peers[i].id, &bits))
			continue;
		ret |= km_pf(b, "qwave_pool_bits{node=\"%s\",peer=\"%s\"} %" PRIu64 "\n", node,
			  km->peers[i].id, bits);
	}
	ret |= HELP(b, "qwave_pool_keys", "gauge", "Keys of the default key_size the pool can supply now.");
	for (size_t i = 0; i < km->npeers; i++) {
		uint64_t bits = 0;
		if (qw_store_pool_available(km->store, km->peers[i].id, &bits))
			continue;
		ret |= km_pf(b, "qwave_pool_keys{node=\"%s\",peer=\"%s\"} %" PRIu64 "\n", node,
			  km->peers[i].id, bits / km->conf->limits.key_size);
	}
	ret |= HELP(b, "qwave_pool_bits_dropped_total", "counter", "Pool bits discarded by resynchronisation.");
	for (size_t i = 0; i < km->npeers; i++) {
		struct qw_store_stats st;
		if (qw_store_stats(km->store, km->peers[i].id, &st))
			continue;
		ret |= km_pf(b, "qwave_pool_bits_dropped_total{node=\"%s\",peer=\"%s\"} %" PRIu64 "\n",
			  node, km->peers[i].id, st.bits_dropped);
	}
	ret |= HELP(b, "qwave_keys_delivered_total", "counter", "Keys handed to SAEs (master: enc_keys, slave: dec_keys).");
	for (size_t i = 0; i < km->npeers; i++) {
		ret |= km_pf(b, "qwave_keys_delivered_total{node=\"%s\",peer=\"%s\",role=\"master\"} %" PRIu64 "\n",
			  node, km->peers[i].id, km->peers[i].keys_master);
		ret |= km_pf(b, "qwave_keys_delivered_total{node=\"%s\",peer=\"%s\",role=\"slave\"} %" PRIu64 "\n",
			  node, km->peers[i].id, km->peers[i].keys_slave);
	}
	ret |= HELP(b, "qwave_keys_cut_total", "counter", "Keys cut from the pool for the other end's SAEs.");
	for (size_t i = 0; i < km->npeers; i++)
		ret |= km_pf(b, "qwave_keys_cut_total{node=\"%s\",peer=\"%s\"} %" PRIu64 "\n", node,
			  km->peers[i].id, km->peers[i].keys_cut);
	ret |= HELP(b, "qwave_km_batches_total", "counter", "Cuts this node originated (group commit: requests per cut = keys delivered / batches).");
	for (size_t i = 0; i < km->npeers; i++)
		ret |= km_pf(b, "qwave_km_batches_total{node=\"%s\",peer=\"%s\"} %" PRIu64 "\n", node,
			  km->peers[i].id, km->peers[i].batches);
	ret |= HELP(b, "qwave_etsi_requests_total", "counter", "ETSI GS QKD 014 requests by HTTP status code.");
	for (size_t i = 0; i < 16 && km->status[i].status; i++)
		ret |= km_pf(b, "qwave_etsi_requests_total{node=\"%s\",code=\"%d\"} %" PRIu64 "\n", node,
			  km->status[i].status, km->status[i].n);
	ret |= HELP(b, "qwave_km_keys_lost_total", "counter", "Keys delivered in the store whose material never reached the SAE (out of memory).");
	ret |= km_pf(b, "qwave_km_keys_lost_total{node=\"%s\"} %" PRIu64 "\n", node, km->keys_lost);
	ret |= HELP(b, "qwave_km_link_up", "gauge", "1 when the KM link to the neighbour is up and resynchronised.");
	for (size_t i = 0; i < km->npeers; i++)
		ret |= km_pf(b, "qwave_km_link_up{node=\"%s\",peer=\"%s\"} %d\n", node, km->peers[i].id,
			  km->peers[i].up);
	ret |= HELP(b, "qwave_km_resyncs_total", "counter", "KM link resynchronisations.");
	for (size_t i = 0; i < km->npeers; i++)
		ret |= km_pf(b, "qwave_km_resyncs_total{node=\"%s\",peer=\"%s\"} %" PRIu64 "\n", node,
			  km->peers[i].id, km->peers[i].resyncs);
	for (int k = 0; k < 8; k++) {
		static const char *const names[] = {
			"qwave_qkd_link_up", "qwave_qkd_qber", "qwave_qkd_secret_key_rate_bps",
			"qwave_qkd_secret_bits_total", "qwave_qkd_blocks_dropped_total",
			"qwave_qkd_qber_alarms_total", "qwave_qkd_qber_alarm",
			"qwave_qkd_auth_failures_total" };
		static const char *const types[] = { "gauge", "gauge", "gauge", "counter", "counter",
						     "counter", "gauge", "counter" };
		static const char *const helps[] = {
			"1 when the QKD link's classical channel is connected.",
			"QBER estimate of the last distillation session.",
			"Secret key rate of the last session (bit/s of wall time).",
			"Secret bits distilled into the pool.",
			"Key blocks dropped by the distillation.",
			"QBER alarms (a block's QBER above the threshold).",
			"1 while the link is in QBER alarm (until a session completes below the threshold).",
			"QKD sessions that failed authentication on the classical channel (tampering)." };
		ret |= km_pf(b, "# HELP %s %s\n# TYPE %s %s\n", names[k], helps[k], names[k], types[k]);
		for (size_t i = 0; i < km->npeers; i++) {
			struct km_peer *p = &km->peers[i];
			struct qw_km_link_report r;
			double v;
			pthread_mutex_lock(&p->mu);
			r = p->rep;
			pthread_mutex_unlock(&p->mu);
			v = k == 0 ? r.up : k == 1 ? r.qber : k == 2 ? r.key_rate_bps :
			    k == 3 ? (double)r.secret_bits : k == 4 ? (double)r.blocks_dropped :
			    k == 5 ? (double)r.alarms : k == 6 ? r.qber_alarm : (double)r.auth_failures;
			ret |= km_pf(b, "%s{node=\"%s\",peer=\"%s\"} %.6g\n", names[k], node, p->id, v);
		}
	}
	ret |= km_route_metrics(km, b);
	ret |= km_relay_metrics(km, b);
	return ret ? QW_ENOMEM : 0;
}
