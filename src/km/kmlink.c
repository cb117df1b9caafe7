/* The KM link on the event loop: resynchronisation on (re)connect and the
 * key-creation exchange (KEYS_REQ / KEYS_NEW / ACK / NACK) of km.h. */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "km_internal.h"
#include "qwave/log.h"
#include "qwave/secmem.h"

int km_send(struct km_peer *p, const struct qw_kmlink_msg *m)
{
	struct qw_buf b;
	int ret;

	if (!p->bev)
		return QW_ECLOSED;
	qw_buf_init(&b, 0);
	ret = qw_kmlink_encode(m, &b);
	if (!ret && bufferevent_write(p->bev, b.data, b.len))
		ret = QW_ENOMEM;
	qw_buf_free(&b);
	return ret;
}

static void send_nack(struct km_peer *p, uint64_t seq, int err)
{
	struct qw_kmlink_msg m = { .type = QW_KMLINK_KEYS_NACK, .seq = seq };

	m.u.nack_error = err < 0 && err >= -64 ? err : QW_EPROTO;
	(void)km_send(p, &m);
}

void km_erase_ids(struct qw_km *km, const struct qw_uuid *ids, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int ret = qw_store_key_erase(km->store, &ids[i]);
		if (ret && ret != QW_ESTATE && ret != QW_ENOTFOUND)
			qw_log(QW_LOG_WARN, "erasing a refused key failed: %s", qw_strerror(ret));
	}
}

static void in_free(struct km_in *in)
{
	qw_kmlink_msg_clear(&in->m);
	free(in);
}

void km_peer_drop(struct km_peer *p, const char *why)
{
	struct km_req *r;

	if (!p->bev)
		return;
	qw_log(QW_LOG_WARN, "KM link to %s down: %s", p->id, why);
	bufferevent_free(p->bev);
	p->bev = NULL;
	p->up = p->got_pool = p->got_keys = p->got_done = p->sent_done = 0;
	/* Requests waiting on the peer fail. A leader's own cut is erased
	 * (the master never saw it; the follower's copy, if any, goes at the
	 * next key resync). Cuts made for the follower stay: the follower may
	 * already have handed them to its master SAE, and the key resync on
	 * reconnect decides from the follower's list. */
	while ((r = p->reqs)) {
		if (r->cut_here && r->k.ids)
			km_erase_ids(p->km, r->k.ids, r->k.count);
		km_req_finish(r, QW_ECLOSED, NULL, 0);
	}
	while (p->cuts) {
		struct km_cut *c = p->cuts;
		p->cuts = c->next;
		free(c->ids);
		free(c);
	}
	while (p->in_head) {
		struct km_in *in = p->in_head;
		p->in_head = in->next;
		in_free(in);
	}
	p->in_tail = NULL;
	if (p->retry_ev)
		event_del(p->retry_ev);
	km_relay_link_changed(p);
	km_route_link_changed(p);
	if (p->km->down_cb)
		p->km->down_cb(p->km->down_arg, p->id);
}

static struct km_req *req_find(struct km_peer *p, uint64_t seq)
{
	for (struct km_req *r = p->reqs; r; r = r->next)
		if (r->seq == seq)
			return r;
	return NULL;
}

/* ---- resynchronisation ---- */

static int send_lists(struct km_peer *p)
{
	struct qw_kmlink_msg m;
	int ret;

	memset(&m, 0, sizeof(m));
	m.type = QW_KMLINK_POOL_BLOCKS;
	ret = qw_store_pool_blocks(p->km->store, p->id, &m.u.pool.blocks, &m.u.pool.n);
	if (!ret)
		ret = km_send(p, &m);
	free(m.u.pool.blocks);
	if (ret)
		return ret;
	memset(&m, 0, sizeof(m));
	m.type = QW_KMLINK_KEY_LIST;
	ret = qw_store_key_resync_list(p->km->store, p->id, &m.u.keylist.ids, &m.u.keylist.n);
	if (!ret)
		ret = km_send(p, &m);
	free(m.u.keylist.ids);
	return ret;
}

/* Apply the peer's pool list. A local block newer than every block the
 * peer listed is kept: the peer's copy may still be queued behind its
 * resynchronisation (both link threads finish a session at about the same
 * time). If the peer really lost it, the next cut there fails with
 * QW_ESTATE and the reconnect after it drops the block (km.h). */
static int apply_pool(struct km_peer *p, const struct qw_kmlink_msg *m)
{
	struct qw_store_block_state *mine = NULL, *theirs = NULL;
	size_t nmine = 0, n = m->u.pool.n;
	uint64_t maxid = 0, dropped = 0;
	int ret;

	for (size_t i = 0; i < m->u.pool.n; i++)
		if (m->u.pool.blocks[i].block_id > maxid)
			maxid = m->u.pool.blocks[i].block_id;
	ret = qw_store_pool_blocks(p->km->store, p->id, &mine, &nmine);
	if (ret)
		return ret;
	theirs = qw_calloc(n + nmine + 1, sizeof(*theirs));
	if (!theirs) {
		free(mine);
		return QW_ENOMEM;
	}
	if (n)
		memcpy(theirs, m->u.pool.blocks, n * sizeof(*theirs));
	for (size_t i = 0; i < nmine; i++)
		if (mine[i].block_id > maxid)
			theirs[n++] = mine[i];
	ret = qw_store_pool_resync(p->km->store, p->id, theirs, n, &dropped);
	free(mine);
	free(theirs);
	if (!ret && dropped)
		qw_log(QW_LOG_INFO, "resync with %s: dropped %llu pool bits the peer no longer has",
		       p->id, (unsigned long long)dropped);
	return ret;
}

static void maybe_up(struct km_peer *p)
{
	if (p->got_pool && p->got_keys && !p->sent_done) {
		struct qw_kmlink_msg m = { .type = QW_KMLINK_RESYNC_DONE };
		if (km_send(p, &m)) {
			km_peer_drop(p, "cannot send");
			return;
		}
		p->sent_done = 1;
	}
	if (p->sent_done && p->got_done && !p->up) {
		p->up = 1;
		p->resyncs++;
		qw_log(QW_LOG_INFO, "KM link to %s up (%s, resynchronised)", p->id,
		       p->leader ? "leader" : "follower");
		km_src_link_up(p);
		km_drain_blocks(p);
		km_relay_link_changed(p);
		km_route_link_changed(p);
	}
}

/* ---- leader ---- */

static void on_keys_req(struct km_peer *p, const struct qw_kmlink_msg *m)
{
	const struct qw_kmlink_keys *k = &m->u.keys;
	const char *slaves[QW_STORE_SLAVES_MAX];
	struct qw_store_key_req rq = { 0 };
	struct qw_kmlink_msg out;
	struct km_cut *cut = NULL;
	int ret;

	if (!p->leader || (m->seq & KM_SEQ_LEADER)) {
		km_peer_drop(p, "KEYS_REQ sent to the follower");
		return;
	}
	for (uint32_t i = 0; i < k->n_slaves; i++)
		slaves[i] = k->slaves[i];
	cut = calloc(1, sizeof(*cut));
	if (cut)
		cut->ids = qw_calloc(k->count, sizeof(*cut->ids));
	if (!cut || !cut->ids) {
		ret = QW_ENOMEM;
		goto refuse;
	}
	rq.peer = p->id;
	rq.size_bits = k->size_bits;
	rq.master_sae = k->master;
	rq.slave_saes = slaves;
	rq.n_slaves = k->n_slaves;
	memset(&out, 0, sizeof(out));
	out.type = QW_KMLINK_KEYS_NEW;
	out.seq = m->seq;
	out.u.keys = *k;
	ret = qw_store_key_create(p->km->store, &rq, k->count, cut->ids, &out.u.keys.pos);
	if (ret)
		goto refuse;
	out.u.keys.ids = cut->ids;
	cut->seq = m->seq;
	cut->count = k->count;
	ret = km_send(p, &out);
	if (ret) {
		km_erase_ids(p->km, cut->ids, cut->count);
		goto refuse;
	}
	p->keys_cut += k->count;
	cut->next = p->cuts;
	p->cuts = cut;
	return;
refuse:
	if (cut)
		free(cut->ids);
	free(cut);
	send_nack(p, m->seq, ret);
}

static void on_ack(struct km_peer *p, const struct qw_kmlink_msg *m, int err)
{
	if (m->seq & KM_SEQ_LEADER) {
		struct km_req *r = req_find(p, m->seq);
		if (!r)
			return; /* timed out meanwhile: the keys were erased here */
		if (err) {
			km_erase_ids(p->km, r->k.ids, r->k.count);
			km_req_finish(r, err == QW_EAGAIN || err == QW_ESTATE ? QW_EAGAIN : err, NULL, 0);
		} else {
			km_req_deliver(r);
		}
		return;
	}
	for (struct km_cut **pc = &p->cuts; *pc; pc = &(*pc)->next) {
		struct km_cut *c = *pc;
		if (c->seq != m->seq)
			continue;
		*pc = c->next;
		if (err)
			km_erase_ids(p->km, c->ids, c->count);
		free(c->ids);
		free(c);
		return;
	}
}

/* ---- follower ---- */

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	km_process_in(arg);
}

/* A cut announced in reply to our KEYS_REQ must be the one we asked for. */
static int same_keys(const struct qw_kmlink_keys *want, const struct qw_kmlink_keys *got)
{
	if (want->count != got->count || want->size_bits != got->size_bits ||
	    want->n_slaves != got->n_slaves || strcmp(want->master, got->master))
		return 0;
	for (uint32_t i = 0; i < want->n_slaves; i++)
		if (strcmp(want->slaves[i], got->slaves[i]))
			return 0;
	return 1;
}

/* Follower: keep the ids of a leader's cut just applied, for as long as
 * the leader may still time its request out (then it NACKs). */
static void remember_cut(struct km_peer *p, struct km_in *in)
{
	int64_t now = km_now_ms(), keep = 2 * (int64_t)p->km->conf->request_timeout_ms + 1000;
	struct km_cut *c;

	/* The list is newest first, so everything behind the first expired
	 * entry is expired too. At thousands of cuts per second it holds tens
	 * of thousands of entries: sweep on every 64th leader seq only. */
	if ((in->m.seq & 63) == 0)
		for (struct km_cut **pc = &p->cuts; *pc; pc = &(*pc)->next)
			if (now - (*pc)->ms > keep) {
				while ((c = *pc)) {
					*pc = c->next;
					free(c->ids);
					free(c);
				}
				break;
			}
	c = calloc(1, sizeof(*c));
	if (!c)
		return; /* only the cancel after a leader timeout is lost */
	c->seq = in->m.seq;
	c->ids = in->m.u.keys.ids;
	c->count = in->m.u.keys.count;
	c->ms = now;
	in->m.u.keys.ids = NULL;
	c->next = p->cuts;
	p->cuts = c;
}

/* Follower: our own request r, whose keys were cut and delivered here in
 * one transaction (material in out): answer the master SAE. */
static void deliver_done(struct km_req *r, const uint8_t *out)
{
	struct qw_km *km = r->km;
	size_t bytes = r->k.size_bits / 8;
	struct qw_kme_key *keys = qw_calloc(r->k.count, sizeof(*keys));

	for (uint32_t i = 0; keys && i < r->k.count; i++) {
		keys[i].key = malloc(bytes);
		if (!keys[i].key) {
			qw_kme_keys_free(keys, i);
			keys = NULL;
			break;
		}
		memcpy(keys[i].key, out + (size_t)i * bytes, bytes);
		keys[i].size_bits = r->k.size_bits;
		qw_uuid_format(&r->k.ids[i], keys[i].key_id);
	}
	if (!keys) {
		/* delivered in the store already: lost, never duplicated */
		km_keys_lost(km, r->k.master, r->k.ids, NULL, r->k.count);
		km_req_finish(r, QW_ENOMEM, NULL, 0);
		return;
	}
	r->p->keys_master += r->k.count;
	km->keys_delivered += r->k.count;
	km_req_finish(r, 0, keys, r->k.count);
}

static void out_free(uint8_t *out, uint8_t *stack, size_t total)
{
	if (out == stack)
		qw_wipe(stack, total);
	else
		qw_secure_free(out, total);
}

void km_process_in(struct km_peer *p)
{
	struct km_in *in;

	while ((in = p->in_head)) {
		const struct qw_kmlink_keys *k = &in->m.u.keys;
		const char *slaves[QW_STORE_SLAVES_MAX];
		struct qw_store_key_req rq = { 0 };
		struct qw_kmlink_msg ack = { .type = QW_KMLINK_KEYS_ACK, .seq = in->m.seq };
		struct km_req *r;
		/* our own request: its keys are cut and delivered to our
		 * master SAE in one transaction (small batches through a wiped
		 * stack buffer) */
		uint8_t stack[4096], *out = NULL;
		size_t total = 0, outlen = 0;
		int ret, derr = 0;

		r = (in->m.seq & KM_SEQ_LEADER) ? NULL : req_find(p, in->m.seq);
		if (r && !same_keys(&r->k, k)) {
			/* not what we asked for: refuse, commit nothing */
			p->in_head = in->next;
			if (!p->in_head)
				p->in_tail = NULL;
			send_nack(p, in->m.seq, QW_EPROTO);
			km_req_finish(r, QW_EPROTO, NULL, 0);
			in_free(in);
			continue;
		}
		for (uint32_t i = 0; i < k->n_slaves; i++)
			slaves[i] = k->slaves[i];
		rq.peer = p->id;
		rq.size_bits = k->size_bits;
		rq.master_sae = k->master;
		rq.slave_saes = slaves;
		rq.n_slaves = k->n_slaves;
		rq.key_ids = k->ids;
		rq.expect = &k->pos;
		if (r) {
			total = (size_t)k->count * (k->size_bits / 8);
			out = total <= sizeof(stack) ? stack : qw_secure_alloc(total);
		}
		{
			struct qw_uuid *scratch = qw_calloc(k->count, sizeof(*scratch));
			ret = !scratch ? QW_ENOMEM
			      : out   ? qw_store_key_create_deliver(p->km->store, &rq, k->count, scratch,
								NULL, r->k.master, out, total,
								&outlen, &derr)
				      : qw_store_key_create(p->km->store, &rq, k->count, scratch, NULL);
			free(scratch);
		}
		if ((ret == QW_EAGAIN || ret == QW_ESTATE) &&
		    km_now_ms() - in->first_ms < KM_APPLY_RETRY_MS) {
			struct timeval tv = { 0, KM_APPLY_RETRY_STEP_MS * 1000 };
			if (out)
				out_free(out, stack, total);
			(void)km_append_blocks(p);
			if (p->retry_ev)
				event_add(p->retry_ev, &tv);
			return;
		}
		p->in_head = in->next;
		if (!p->in_head)
			p->in_tail = NULL;
		if (ret) {
			qw_log(QW_LOG_WARN, "cannot apply %u key(s) announced by %s at block %llu bit %llu: %s",
			       k->count, p->id, (unsigned long long)k->pos.block_id,
			       (unsigned long long)k->pos.bit, qw_strerror(ret));
			send_nack(p, in->m.seq, ret);
			if (out)
				out_free(out, stack, total);
			if (r)
				km_req_finish(r, QW_EAGAIN, NULL, 0);
			in_free(in);
			if (ret == QW_ESTATE) {
				km_peer_drop(p, "pools out of step: resynchronising");
				return;
			}
			continue;
		}
		if ((!r && !(in->m.seq & KM_SEQ_LEADER)) || in->cancelled) {
			/* the answer to our request that timed out meanwhile, or
			 * a leader's request it has timed out: no master SAE
			 * will fetch these keys. They were cut here to keep the
			 * pools in step (the next cut expects this position);
			 * erase them, and NACK ours so the leader erases its
			 * copy. */
			km_erase_ids(p->km, k->ids, k->count);
			if (!in->cancelled)
				send_nack(p, in->m.seq, QW_ETIMEOUT);
			in_free(in);
			continue;
		}
		if (r) {
			/* our own request: the ids are now ours */
			r->k.ids = k->ids;
			in->m.u.keys.ids = NULL;
			r->k.count = k->count;
			if (out && !derr)
				deliver_done(r, out);
			else
				km_req_deliver(r); /* cut alone: deliver (or erase) now */
			if (out)
				out_free(out, stack, total);
		} else {
			p->keys_cut += k->count;
			remember_cut(p, in);
		}
		(void)km_send(p, &ack);
		in_free(in);
	}
}

/* Follower: the leader's request seq timed out there (NACK): erase our
 * copy of its cut, whether still queued or already applied. Keys the slave
 * SAE already fetched are gone (km_erase_ids ignores them). */
static void cancel_leader_cut(struct km_peer *p, uint64_t seq)
{
	/* still queued: it is cut when its turn comes (the pools stay in
	 * step), then erased */
	for (struct km_in *in = p->in_head; in; in = in->next)
		if (in->m.seq == seq) {
			in->cancelled = 1;
			return;
		}
	for (struct km_cut **pc = &p->cuts; *pc; pc = &(*pc)->next) {
		struct km_cut *c = *pc;
		if (c->seq != seq)
			continue;
		*pc = c->next;
		qw_log(QW_LOG_INFO, "KM link %s: the leader's request %llx timed out there: erasing its %u key(s) here",
		       p->id, (unsigned long long)seq, c->count);
		km_erase_ids(p->km, c->ids, c->count);
		free(c->ids);
		free(c);
		return;
	}
}

static void on_keys_new(struct km_peer *p, struct qw_kmlink_msg *m)
{
	struct km_in *in;

	if (p->leader) {
		km_peer_drop(p, "KEYS_NEW sent to the leader");
		return;
	}
	in = calloc(1, sizeof(*in));
	if (!in) {
		send_nack(p, m->seq, QW_ENOMEM);
		return;
	}
	in->m = *m;
	memset(m, 0, sizeof(*m)); /* ownership of the ids moves */
	in->first_ms = km_now_ms();
	if (p->in_tail)
		p->in_tail->next = in;
	else
		p->in_head = in;
	p->in_tail = in;
	if (p->in_head == in)
		km_process_in(p);
}

/* ---- dispatch ---- */

static void dispatch(struct km_peer *p, struct qw_kmlink_msg *m)
{
	struct qw_km *km = p->km;
	size_t dropped = 0;
	int ret;

	switch (m->type) {
	case QW_KMLINK_POOL_BLOCKS:
		if (p->got_pool)
			goto proto;
		if ((ret = apply_pool(p, m))) {
			km_peer_drop(p, qw_strerror(ret));
			return;
		}
		p->got_pool = 1;
		maybe_up(p);
		return;
	case QW_KMLINK_KEY_LIST:
		if (p->got_keys)
			goto proto;
		ret = qw_store_key_resync(km->store, p->id, m->u.keylist.ids, m->u.keylist.n, &dropped);
		if (ret) {
			km_peer_drop(p, qw_strerror(ret));
			return;
		}
		if (dropped)
			qw_log(QW_LOG_INFO, "resync with %s: erased %zu key(s) the peer does not have",
			       p->id, dropped);
		p->resync_dropped_keys += dropped;
		p->got_keys = 1;
		maybe_up(p);
		return;
	case QW_KMLINK_RESYNC_DONE:
		if (p->got_done)
			goto proto;
		p->got_done = 1;
		maybe_up(p);
		return;
	case QW_KMLINK_PING:
		km_route_on_message(p, m);
		return;
	default:
		break;
	}
	if (!p->up)
		goto proto;
	switch (m->type) {
	case QW_KMLINK_KEYS_REQ: on_keys_req(p, m); return;
	case QW_KMLINK_KEYS_NEW: on_keys_new(p, m); return;
	case QW_KMLINK_KEYS_ACK:
		if (!p->leader)
			goto proto;
		on_ack(p, m, 0);
		return;
	case QW_KMLINK_SOURCE_BLOCK:
	case QW_KMLINK_SOURCE_ACK:
	case QW_KMLINK_SOURCE_DROP:
		km_src_on_message(p, m);
		return;
	case QW_KMLINK_RELAY:
	case QW_KMLINK_RELAY_ACK:
	case QW_KMLINK_RELAY_PAD_REQ:
	case QW_KMLINK_RELAY_PAD:
		km_relay_on_message(p, m);
		return;
	case QW_KMLINK_LSA:
		km_route_on_message(p, m);
		return;
	case QW_KMLINK_KEYS_NACK:
		if (p->leader) {
			on_ack(p, m, m->u.nack_error);
		} else {
			struct km_req *r;
			if (m->seq & KM_SEQ_LEADER) {
				cancel_leader_cut(p, m->seq);
				return;
			}
			r = req_find(p, m->seq);
			if (r)
				km_req_finish(r, m->u.nack_error == QW_ESTATE ? QW_EAGAIN : m->u.nack_error, NULL, 0);
		}
		return;
	default:
		break;
	}
proto:
	km_peer_drop(p, "protocol violation");
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct km_peer *p = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (p->bev == bev) {
		size_t have = evbuffer_get_length(in), flen;
		uint8_t *hdr, *frame;
		struct qw_kmlink_msg m;
		int ret;

		if (have < QW_KMLINK_HEADER_BYTES)
			return;
		hdr = evbuffer_pullup(in, QW_KMLINK_HEADER_BYTES);
		if (!hdr || qw_kmlink_frame_len(hdr, have, &flen)) {
			km_peer_drop(p, "bad frame header");
			return;
		}
		if (have < flen)
			return;
		frame = evbuffer_pullup(in, (ssize_t)flen);
		ret = frame ? qw_kmlink_parse(frame, flen, &m) : QW_ENOMEM;
		evbuffer_drain(in, flen);
		p->last_rx_ms = km_now_ms();
		if (ret) {
			km_peer_drop(p, ret == QW_EPARSE ? "malformed message" : qw_strerror(ret));
			return;
		}
		dispatch(p, &m);
		qw_kmlink_msg_clear(&m);
	}
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct km_peer *p = arg;

	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
		km_peer_drop(p, what & BEV_EVENT_EOF ? "closed by the peer" : "connection error");
}

int qw_km_attach(struct qw_km *km, const char *peer, struct bufferevent *bev)
{
	struct km_peer *p;
	int ret;

	QW_REQUIRE(km != NULL && peer != NULL && bev != NULL);
	p = km_peer_find(km, peer);
	if (!p) {
		bufferevent_free(bev);
		return QW_ENOTFOUND;
	}
	km_peer_drop(p, "replaced by a new connection");
	p->bev = bev;
	bufferevent_setcb(bev, on_read, NULL, on_event, p);
	if (bufferevent_enable(bev, EV_READ | EV_WRITE)) {
		km_peer_drop(p, "cannot enable");
		return QW_ENOMEM;
	}
	if (!p->retry_ev) {
		p->retry_ev = evtimer_new(km->base, on_retry, p);
		if (!p->retry_ev) {
			km_peer_drop(p, "out of memory");
			return QW_ENOMEM;
		}
	}
	ret = send_lists(p);
	if (ret) {
		km_peer_drop(p, qw_strerror(ret));
		return ret;
	}
	/* bytes that arrived with the handshake are already buffered */
	if (evbuffer_get_length(bufferevent_get_input(bev)))
		on_read(bev, p);
	return 0;
}

int qw_km_link_up(struct qw_km *km, const char *peer)
{
	struct km_peer *p = km_peer_find(km, peer);

	return p && p->up;
}
