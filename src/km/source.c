/* External key sources in the node: a link whose keys come from a vendor
 * QKD pair's KMEs over ETSI GS QKD 014 (include/qwave/keysource.h).
 *
 * The leader's node is the source's MASTER: it pulls blocks of keys from
 * its vendor KME (Get key). A pulled block is HELD, not pooled: the leader
 * announces it to the follower (SOURCE_BLOCK {block id, the vendor's key
 * IDs}) and pools it only when the follower answers SOURCE_ACK, which the
 * follower sends after it fetched the same keys from its own vendor KME
 * (Get key with key IDs) and appended them to its pool. SOURCE_DROP (the
 * follower could not fetch them) discards the held block. Both pools thus
 * receive the same blocks in the same order, as with the simulated link.
 * Held blocks are announced again after a reconnect; a follower that
 * already pooled an announced block just ACKs it again. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "km_internal.h"
#include "qkd.h"
#include "qwave/log.h"
#include "qwave/secmem.h"

struct km_src {
	struct qw_km *km;
	struct km_peer *p;
	const struct qw_km_link_conf *lc;
	struct qw_key_source *src;
	int master;
	pthread_mutex_t mu;
	struct qw_km_link_report rep;
	int64_t t0;
};

static void report(struct km_src *s)
{
	struct qw_km_link_report r;

	pthread_mutex_lock(&s->mu);
	r = s->rep;
	pthread_mutex_unlock(&s->mu);
	qw_km_link_report(s->km, s->p->id, &r);
}

/* ---- sink (the source's thread) ---- */

static void s_deliver(void *ctx, uint64_t block_id, const struct qw_bitvec *key,
		      const struct qw_key_source_ids *ids)
{
	struct km_src *s = ctx;
	size_t nbytes = (size_t)((key->nbits + 7) / 8);
	uint8_t *bits = qw_secure_alloc(nbytes ? nbytes : 1);
	struct qw_uuid *uu = NULL;
	int ret = QW_ENOMEM;

	if (!bits)
		goto out;
	qw_bitvec_to_bytes(key, bits);
	if (s->master) {
		ret = QW_EINVAL;
		if (!ids || ids->n == 0)
			goto out;
		ret = QW_ENOMEM;
		uu = qw_calloc(ids->n, sizeof(*uu));
		if (!uu)
			goto out;
		ret = QW_EINVAL;
		for (size_t i = 0; i < ids->n; i++)
			if (qw_uuid_parse(&uu[i], ids->key_ids[i]))
				goto out;
		ret = km_submit(s->p, KM_BLOCK_ANNOUNCE, block_id, bits, key->nbits, ids->key_bits, uu,
				ids->n);
	} else {
		ret = km_submit(s->p, KM_BLOCK_ACK, block_id, bits, key->nbits, 0, NULL, 0);
	}
	if (!ret) {
		int64_t el = km_now_ms() - s->t0;
		pthread_mutex_lock(&s->mu);
		s->rep.up = 1;
		s->rep.secret_bits += key->nbits;
		s->rep.blocks_delivered++;
		s->rep.key_rate_bps = el > 0 ? (double)s->rep.secret_bits * 1000.0 / (double)el : 0;
		pthread_mutex_unlock(&s->mu);
		report(s);
	}
out:
	if (ret)
		qw_log(QW_LOG_WARN, "key source %s: block %" PRIu64 " lost: %s", s->p->id, block_id,
		       qw_strerror(ret));
	free(uu);
	if (bits)
		qw_secure_free(bits, nbytes ? nbytes : 1);
}

static void s_dropped(void *ctx, uint64_t block_id, const char *reason)
{
	struct km_src *s = ctx;

	qw_log(QW_LOG_WARN, "key source %s: block %" PRIu64 " dropped: %s", s->p->id, block_id,
	       reason);
	pthread_mutex_lock(&s->mu);
	s->rep.blocks_dropped++;
	pthread_mutex_unlock(&s->mu);
	if (!s->master && km_submit(s->p, KM_BLOCK_DROP, block_id, NULL, 0, 0, NULL, 0))
		qw_log(QW_LOG_WARN, "key source %s: cannot report the drop", s->p->id);
	report(s);
}

static void s_state(void *ctx, int err, const char *reason)
{
	struct km_src *s = ctx;

	qw_log(err ? QW_LOG_WARN : QW_LOG_INFO, "key source %s (vendor KME %s): %s", s->p->id,
	       s->lc->etsi.client.base_url, reason);
	pthread_mutex_lock(&s->mu);
	s->rep.up = !err;
	pthread_mutex_unlock(&s->mu);
	report(s);
}

static int s_want(void *ctx)
{
	struct km_src *s = ctx;
	const struct qw_km_limits *l = &s->km->conf->limits;
	uint64_t bits = 0;

	/* a full pool (max_key_count keys of key_size) pulls no more */
	if (qw_store_pool_available(s->km->store, s->p->id, &bits))
		return 1;
	return bits / l->key_size < l->max_key_count;
}

struct km_src *km_src_start(struct qw_km *km, const struct qw_km_link_conf *lc, int *err)
{
	struct km_src *s = calloc(1, sizeof(*s));
	struct qw_key_sink sink;

	*err = QW_ENOMEM;
	if (!s)
		return NULL;
	s->km = km;
	s->lc = lc;
	s->p = km_peer_find(km, lc->peer);
	s->master = lc->etsi.role == QW_ETSI_SOURCE_MASTER;
	s->t0 = km_now_ms();
	pthread_mutex_init(&s->mu, NULL);
	memset(&sink, 0, sizeof(sink));
	sink.ctx = s;
	sink.deliver = s_deliver;
	sink.dropped = s_dropped;
	sink.state = s_state;
	sink.want = s->master ? s_want : NULL;
	if (!s->p)
		goto fail;
	s->src = qw_etsi_source_new(&lc->etsi, &sink, err);
	if (!s->src)
		goto fail;
	s->p->src = s;
	*err = qw_key_source_start(s->src);
	if (*err)
		goto fail;
	return s;
fail:
	km_src_stop(s);
	return NULL;
}

void km_src_stop(struct km_src *s)
{
	if (!s)
		return;
	/* after stop no sink callback runs any more */
	qw_key_source_free(s->src);
	if (s->p && s->p->src == s)
		s->p->src = NULL;
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* ---- loop side ---- */

void km_src_announce(struct km_peer *p, const struct km_block *b)
{
	struct qw_kmlink_msg m;

	memset(&m, 0, sizeof(m));
	m.type = QW_KMLINK_SOURCE_BLOCK;
	m.u.source.block_id = b->id;
	m.u.source.key_bits = b->key_bits;
	m.u.source.ids = b->ids;
	m.u.source.n = b->nids;
	if (km_send(p, &m))
		qw_log(QW_LOG_WARN, "key source %s: cannot announce block %" PRIu64, p->id, b->id);
}

void km_src_link_up(struct km_peer *p)
{
	for (struct km_block *b = p->held_head; b; b = b->next)
		km_src_announce(p, b);
}

static int in_pool(struct km_peer *p, uint64_t id)
{
	struct qw_store_block_state *bl = NULL;
	size_t n = 0;
	int found = 0;

	if (qw_store_pool_blocks(p->km->store, p->id, &bl, &n))
		return 0;
	for (size_t i = 0; i < n && !found; i++)
		found = bl[i].block_id == id;
	free(bl);
	return found;
}

static void reply(struct km_peer *p, int type, uint64_t id)
{
	struct qw_kmlink_msg m;

	memset(&m, 0, sizeof(m));
	m.type = (uint8_t)type;
	m.u.source.block_id = id;
	(void)km_send(p, &m);
}

void km_src_on_message(struct km_peer *p, const struct qw_kmlink_msg *m)
{
	uint64_t id = m->u.source.block_id;

	if (m->type == QW_KMLINK_SOURCE_BLOCK) {
		char (*str)[QW_UUID_STR_BYTES] = NULL;
		const char **ptr = NULL;
		int ret = QW_ESTATE;

		if (!p->src || p->src->master) {
			km_peer_drop(p, "SOURCE_BLOCK on a link without a slave source");
			return;
		}
		if (in_pool(p, id)) {
			reply(p, QW_KMLINK_SOURCE_ACK, id); /* announced again after a reconnect */
			return;
		}
		str = qw_calloc(m->u.source.n, sizeof(*str));
		ptr = qw_calloc(m->u.source.n, sizeof(*ptr));
		if (str && ptr) {
			for (size_t i = 0; i < m->u.source.n; i++) {
				qw_uuid_format(&m->u.source.ids[i], str[i]);
				ptr[i] = str[i];
			}
			ret = qw_etsi_source_fetch(p->src->src, id, ptr, m->u.source.n);
		}
		free(str);
		free(ptr);
		if (ret) {
			qw_log(QW_LOG_WARN, "key source %s: cannot fetch block %" PRIu64 ": %s", p->id, id,
			       qw_strerror(ret));
			reply(p, QW_KMLINK_SOURCE_DROP, id);
		}
		return;
	}
	/* SOURCE_ACK / SOURCE_DROP: the master's held block */
	if (!p->src || !p->src->master) {
		km_peer_drop(p, "SOURCE_ACK/DROP on a link without a master source");
		return;
	}
	for (struct km_block **pb = &p->held_head, *prev = NULL; *pb; prev = *pb, pb = &(*pb)->next) {
		struct km_block *b = *pb;
		if (b->id != id)
			continue;
		*pb = b->next;
		if (p->held_tail == b)
			p->held_tail = prev;
		if (m->type == QW_KMLINK_SOURCE_ACK &&
		    km_submit(p, KM_BLOCK_POOL, b->id, b->bits, b->nbits, 0, NULL, 0))
			qw_log(QW_LOG_WARN, "key source %s: block %" PRIu64 " lost", p->id, b->id);
		km_block_free(b);
		return;
	}
}
