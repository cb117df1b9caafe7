/* kme.h on the key manager: Status, Get key (master side, through the KM
 * link) and Get key with key IDs (slave side, from the local store). */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "km_internal.h"
#include "qwave/log.h"
#include "qwave/secmem.h"

static int sae_is_local(const struct qw_km_conf *c, const char *sae)
{
	for (size_t i = 0; i < c->nsaes; i++)
		if (!strcmp(c->saes[i].id, sae))
			return !strcmp(c->saes[i].node, c->id);
	return 0;
}

static int kme_status(void *ctx, const char *caller, const char *slave, struct qw_kme_status *out)
{
	struct qw_km *km = ctx;
	const struct qw_km_limits *l = &km->conf->limits;
	const char *peer = NULL;
	uint64_t bits = 0;
	int ret;

	if (!sae_is_local(km->conf, caller))
		return QW_EPERM;
	if (km_policy_check(km, caller, slave))
		return QW_EPERM;
	ret = qw_km_route(km, slave, &peer);
	if (ret == QW_EUNSUPPORTED) {
		/* a node further away: what a relay could bring now */
		peer = km_sae_node(km, slave);
		ret = km_relay_status(km, peer, &bits);
	} else if (!ret) {
		ret = qw_store_pool_available(km->store, peer, &bits);
	} else if (ret == QW_ESTATE) {
		ret = QW_ENOTFOUND;
	}
	if (ret)
		return ret;
	memset(out, 0, sizeof(*out));
	snprintf(out->source_kme_id, sizeof(out->source_kme_id), "%s", km->conf->id);
	snprintf(out->target_kme_id, sizeof(out->target_kme_id), "%s", peer);
	out->key_size = l->key_size;
	out->stored_key_count = bits / l->key_size;
	if (out->stored_key_count > l->max_key_count)
		out->stored_key_count = l->max_key_count;
	out->max_key_count = l->max_key_count;
	out->max_key_per_request = l->max_key_per_request;
	out->max_key_size = l->max_key_size;
	out->min_key_size = l->min_key_size;
	out->max_sae_id_count = l->max_sae_id_count;
	return 0;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct km_req *r = arg;

	(void)fd;
	(void)what;
	qw_log(QW_LOG_WARN, "key request %llx to %s timed out", (unsigned long long)r->seq, r->p->id);
	if (r->cut_here && r->k.ids)
		km_erase_ids(r->km, r->k.ids, r->k.count);
	if (r->sent && (r->seq & KM_SEQ_LEADER)) {
		/* the follower may have applied our KEYS_NEW already: tell it
		 * to erase its copy, which no master SAE will ever ask for */
		struct qw_kmlink_msg m = { .type = QW_KMLINK_KEYS_NACK, .seq = r->seq };

		m.u.nack_error = QW_ETIMEOUT;
		(void)km_send(r->p, &m);
	}
	km_req_finish(r, QW_ETIMEOUT, NULL, 0);
}

/* Cut (leader) or ask for (follower) the keys of batch r. */
static void batch_send(struct km_req *r)
{
	struct km_peer *p = r->p;
	struct qw_km *km = r->km;
	const char *slaves[QW_STORE_SLAVES_MAX];
	struct qw_store_key_req rq = { 0 };
	struct qw_kmlink_msg m;
	int ret;

	r->sent = 1;
	p->inflight++;
	p->batches++;
	r->seq = p->next_seq++ | (p->leader ? KM_SEQ_LEADER : 0);
	memset(&m, 0, sizeof(m));
	m.seq = r->seq;
	if (p->leader) {
		r->k.ids = qw_calloc(r->k.count, sizeof(*r->k.ids));
		if (!r->k.ids) {
			km_req_finish(r, QW_ENOMEM, NULL, 0);
			return;
		}
		for (uint32_t i = 0; i < r->k.n_slaves; i++)
			slaves[i] = r->k.slaves[i];
		rq.peer = p->id;
		rq.size_bits = r->k.size_bits;
		rq.master_sae = r->k.master;
		rq.slave_saes = slaves;
		rq.n_slaves = r->k.n_slaves;
		m.type = QW_KMLINK_KEYS_NEW;
		m.u.keys = r->k;
		ret = qw_store_key_create(km->store, &rq, r->k.count, r->k.ids, &m.u.keys.pos);
		if (ret) {
			km_req_finish(r, ret, NULL, 0);
			return;
		}
		r->cut_here = 1;
	} else {
		m.type = QW_KMLINK_KEYS_REQ;
		m.u.keys = r->k;
	}
	ret = km_send(p, &m);
	if (ret) {
		if (r->cut_here)
			km_erase_ids(km, r->k.ids, r->k.count);
		km_req_finish(r, ret == QW_ECLOSED ? QW_EAGAIN : ret, NULL, 0);
	}
}

void km_kick(struct km_peer *p)
{
	/* One batch in flight per neighbour: the requests arriving meanwhile
	 * join open batches, so the store's commits are shared (group commit). */
	while (p->up && p->inflight == 0) {
		struct km_req *r;

		for (r = p->reqs; r && r->sent; r = r->next)
			;
		if (!r)
			return;
		batch_send(r);
	}
}

static int same_pair(const struct km_req *r, const struct qw_kme_get_key_req *req,
		     const char *const *slaves, size_t ns)
{
	if (r->sent || r->k.size_bits != req->size_bits || r->k.n_slaves != ns ||
	    strcmp(r->k.master, req->master_sae) ||
	    r->k.count + req->number > KM_BATCH_MAX_KEYS || r->nw == r->capw)
		return 0;
	for (size_t i = 0; i < ns; i++)
		if (strcmp(r->k.slaves[i], slaves[i]))
			return 0;
	return 1;
}

static void kme_get_keys(void *ctx, const struct qw_kme_get_key_req *req, qw_kme_keys_cb cb,
			 void *arg)
{
	struct qw_km *km = ctx;
	const struct qw_km_limits *l = &km->conf->limits;
	const char *peer = NULL;
	const char *slaves[QW_STORE_SLAVES_MAX];
	struct timeval tv;
	struct km_peer *p;
	struct km_req *r, **tail;
	size_t ns;
	int ret;

	if (!sae_is_local(km->conf, req->master_sae)) {
		cb(arg, QW_EPERM, NULL, 0);
		return;
	}
	ret = qw_km_route(km, req->slave_sae, &peer);
	if (ret && ret != QW_EUNSUPPORTED) {
		cb(arg, ret == QW_ESTATE ? QW_ENOTFOUND : ret, NULL, 0);
		return;
	}
	ns = 1 + req->n_additional;
	if (req->number == 0 || req->number > l->max_key_per_request || req->size_bits % 8 ||
	    req->size_bits < l->min_key_size || req->size_bits > l->max_key_size ||
	    req->n_additional > l->max_sae_id_count || ns > QW_STORE_SLAVES_MAX) {
		cb(arg, QW_ERANGE, NULL, 0);
		return;
	}
	slaves[0] = req->slave_sae;
	for (size_t i = 0; i < req->n_additional; i++) {
		/* key multicast works only among the SAEs of one node */
		const char *n0 = km_sae_node(km, req->slave_sae);
		const char *ni = km_sae_node(km, req->additional_slaves[i]);

		if (!ni || strcmp(ni, n0)) {
			cb(arg, QW_ENOTFOUND, NULL, 0);
			return;
		}
		slaves[i + 1] = req->additional_slaves[i];
	}
	for (size_t i = 0; i < ns; i++)
		if (km_policy_check(km, req->master_sae, slaves[i])) {
			cb(arg, QW_EPERM, NULL, 0);
			return;
		}
	if (ret == QW_EUNSUPPORTED) {
		km_relay_get_keys(km, req, km_sae_node(km, req->slave_sae), cb, arg);
		return;
	}
	p = km_peer_find(km, peer);
	if (!p || !p->up) {
		cb(arg, QW_EAGAIN, NULL, 0);
		return;
	}
	for (tail = &p->reqs; *tail; tail = &(*tail)->next)
		if (same_pair(*tail, req, slaves, ns))
			break;
	r = *tail;
	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r) {
			cb(arg, QW_ENOMEM, NULL, 0);
			return;
		}
		r->km = km;
		r->p = p;
		r->k.size_bits = req->size_bits;
		snprintf(r->k.master, sizeof(r->k.master), "%s", req->master_sae);
		r->k.n_slaves = (uint32_t)ns;
		for (size_t i = 0; i < ns; i++)
			snprintf(r->k.slaves[i], sizeof(r->k.slaves[i]), "%s", slaves[i]);
		r->capw = 256;
		r->w = qw_calloc(r->capw, sizeof(*r->w));
		r->timer = evtimer_new(km->base, on_timeout, r);
		if (!r->w || !r->timer) {
			if (r->timer)
				event_free(r->timer);
			free(r->w);
			free(r);
			cb(arg, QW_ENOMEM, NULL, 0);
			return;
		}
		*tail = r; /* FIFO: batches leave in the order they opened */
		tv.tv_sec = km->conf->request_timeout_ms / 1000;
		tv.tv_usec = (km->conf->request_timeout_ms % 1000) * 1000;
		evtimer_add(r->timer, &tv);
	}
	r->w[r->nw].cb = cb;
	r->w[r->nw].arg = arg;
	r->w[r->nw].number = req->number;
	r->nw++;
	r->k.count += req->number;
	km->pending++;
	km_kick(p);
}

static void kme_get_keys_with_ids(void *ctx, const char *caller, const char *master,
				  const char *const *key_ids, size_t n, qw_kme_keys_cb cb, void *arg)
{
	struct qw_km *km = ctx;
	struct qw_store_key_info *infos = NULL;
	struct qw_uuid *ids = NULL;
	struct qw_kme_key *keys = NULL;
	uint8_t *out = NULL;
	size_t total = 0, outlen = 0, off = 0;
	struct km_peer *p = NULL;
	int ret = QW_EPERM;

	if (!sae_is_local(km->conf, caller) || n == 0 || km_policy_check(km, master, caller))
		goto done;
	ret = QW_ENOMEM;
	ids = qw_calloc(n, sizeof(*ids));
	infos = qw_calloc(n, sizeof(*infos));
	if (!ids || !infos)
		goto done;
	for (size_t i = 0; i < n; i++) {
		struct qw_store_key_info *in = &infos[i];
		int slave = 0;

		ret = QW_ENOTFOUND;
		if (qw_uuid_parse(&ids[i], key_ids[i]))
			goto done;
		ret = qw_store_key_info(km->store, &ids[i], in);
		if (ret)
			goto done;
		/* a key already handed out is gone, whoever asks */
		ret = QW_ENOTFOUND;
		if (in->state != QW_STORE_RESERVED)
			goto done;
		for (size_t j = 0; j < in->n_slaves; j++)
			slave |= !strcmp(in->slave_saes[j], caller);
		ret = QW_EPERM;
		if (!slave || strcmp(in->master_sae, master))
			goto done;
		if (in->size_bits > QW_STORE_KEY_MAX_BITS)
			goto done;
		total += in->size_bits / 8;
	}
	ret = QW_ENOMEM;
	out = qw_secure_alloc(total ? total : 1);
	keys = qw_calloc(n, sizeof(*keys));
	if (!out || !keys)
		goto done;
	ret = qw_store_key_deliver_many(km->store, ids, n, caller, out, total, &outlen, infos);
	if (ret) {
		if (ret == QW_ESTATE)
			ret = QW_ENOTFOUND;
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		size_t bytes = infos[i].size_bits / 8;

		keys[i].key = malloc(bytes ? bytes : 1);
		if (!keys[i].key) {
			/* delivered already: the material is lost, never duplicated */
			km_keys_lost(km, caller, ids, NULL, n);
			ret = QW_ENOMEM;
			qw_kme_keys_free(keys, i);
			keys = NULL;
			goto done;
		}
		memcpy(keys[i].key, out + off, bytes);
		off += bytes;
		keys[i].size_bits = infos[i].size_bits;
		qw_uuid_format(&ids[i], keys[i].key_id);
	}
	p = km_peer_find(km, infos[0].peer);
	if (p)
		p->keys_slave += n;
	km->keys_delivered += n;
	ret = 0;
done:
	if (out)
		qw_secure_free(out, total ? total : 1);
	free(ids);
	free(infos);
	if (ret) {
		free(keys);
		cb(arg, ret, NULL, 0);
	} else {
		cb(arg, 0, keys, n);
	}
}

static const struct qw_kme_ops ops = {
	.status = kme_status,
	.get_keys = kme_get_keys,
	.get_keys_with_ids = kme_get_keys_with_ids,
};

const struct qw_kme_ops *qw_km_kme_ops(void)
{
	return &ops;
}
