/* Key relay on the node (src/km/relay_node.c, docs/relay-routing.md): a
 * chain of trusted nodes in one process, each with its own store, KM links
 * over in-process bufferevent pairs, routing by the nodes' own LSA
 * flooding. ETSI 014 Get key at the first node for an SAE at the last one
 * (leader -> follower hops) and the reverse (follower -> leader hops:
 * RELAY_PAD_REQ/RELAY_PAD), dec_keys at the far end gives the same
 * material, once only; the link-key bits every link consumed at both ends
 * are exactly formula (1) of relay.h; a bit flipped on a KM link by a
 * man in the middle is refused (QW_EAUTH), raises the mac_failure alarm,
 * stores nothing at the destination and gives the master SAE nothing,
 * and the pools stay in step (the next relay succeeds); relays
 * interleaved with neighbour KEYS_NEW cuts on the same pools; a lost ACK
 * leaves keys at the destination that the origin never handed out and
 * that are erased at their expiry ([relay] key_lifetime_s). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "qwave/buf.h"
#include "qwave/config.h"
#include "qwave/dashboard.h"
#include "qwave/km.h"
#include "qwave/kmlink.h"
#include "qwave/log.h"
#include "qwave/relay.h"
#include "qwave/rng.h"
#include "qwave/store.h"

#define MAXN 5
#define BLOCK_BITS 65536

struct node {
	struct qw_config *cfg;
	struct qw_km_conf conf;
	struct qw_store *store;
	struct qw_km *km;
	char db[128];
	char text[2048];
	char id[16], sae[16];
};

/* A man in the middle on one KM link: forwards frames both ways and flips
 * one ciphertext bit of the next RELAY frame read from `from` when armed,
 * or drops every RELAY_ACK read from `from` while drop_acks is set. */
struct mitm {
	struct bufferevent *l, *r; /* l faces the lower-numbered node */
	struct bufferevent *from;
	int armed, tampered;
	int drop_acks, dropped;
};

struct fx {
	char dir[64];
	struct event_base *base;
	struct node n[MAXN];
	int N;
	struct qw_rng *rng;
	uint64_t next_block[MAXN];
	struct mitm mitm;
	int mitm_link;
	int ring;                  /* extra link node-0 - node-(N-1) */
};

struct result {
	int done, err;
	struct qw_kme_key *keys;
	size_t n;
};

static const struct qw_kme_ops *ops;
/* Appended to every node's configuration by the next net_new. */
static const char *extra_conf = "";

static void run_until(struct fx *f, int (*cond)(void *), void *arg)
{
	for (int i = 0; i < 200000 && !cond(arg); i++) {
		event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		if (i % 16 == 15)
			usleep(1000);
	}
	assert_true(cond(arg));
}

static void mitm_read(struct bufferevent *bev, void *arg)
{
	struct mitm *m = arg;
	struct bufferevent *out = bev == m->l ? m->r : m->l;
	struct evbuffer *in = bufferevent_get_input(bev);

	for (;;) {
		size_t have = evbuffer_get_length(in), flen;
		uint8_t *fr;

		if (have < QW_KMLINK_HEADER_BYTES)
			return;
		fr = evbuffer_pullup(in, QW_KMLINK_HEADER_BYTES);
		assert_int_equal(qw_kmlink_frame_len(fr, have, &flen), 0);
		if (have < flen)
			return;
		fr = evbuffer_pullup(in, (ssize_t)flen);
		if (m->armed && bev == m->from && fr[1] == QW_KMLINK_RELAY) {
			/* the last ciphertext byte, just before the 16-byte tag */
			fr[flen - QW_WCMAC_TAG_BYTES - 1] ^= 0x10;
			m->armed = 0;
			m->tampered++;
		}
		if (m->drop_acks && bev == m->from && fr[1] == QW_KMLINK_RELAY_ACK) {
			m->dropped++;
			evbuffer_drain(in, flen);
			continue;
		}
		assert_int_equal(bufferevent_write(out, fr, flen), 0);
		evbuffer_drain(in, flen);
	}
}

static void pair(struct fx *f, struct bufferevent *p[2])
{
	assert_int_equal(bufferevent_pair_new(f->base, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS, p),
			 0);
}

static void connect_link(struct fx *f, int i)
{
	struct bufferevent *a[2], *b[2];

	pair(f, a);
	if (i == f->mitm_link) {
		pair(f, b);
		f->mitm.l = a[1];
		f->mitm.r = b[0];
		bufferevent_setcb(a[1], mitm_read, NULL, NULL, &f->mitm);
		bufferevent_setcb(b[0], mitm_read, NULL, NULL, &f->mitm);
		assert_int_equal(bufferevent_enable(a[1], EV_READ | EV_WRITE), 0);
		assert_int_equal(bufferevent_enable(b[0], EV_READ | EV_WRITE), 0);
		assert_int_equal(qw_km_attach(f->n[i].km, f->n[i + 1].id, a[0]), 0);
		assert_int_equal(qw_km_attach(f->n[i + 1].km, f->n[i].id, b[1]), 0);
		return;
	}
	assert_int_equal(qw_km_attach(f->n[i].km, f->n[i + 1].id, a[0]), 0);
	assert_int_equal(qw_km_attach(f->n[i + 1].km, f->n[i].id, a[1]), 0);
}

static int all_up(void *arg)
{
	struct fx *f = arg;

	for (int i = 0; i + 1 < f->N; i++)
		if (!qw_km_link_up(f->n[i].km, f->n[i + 1].id) ||
		    !qw_km_link_up(f->n[i + 1].km, f->n[i].id))
			return 0;
	return 1;
}

/* The same random block at both ends of link i (i - i+1). */
static void fill_link(struct fx *f, int i, uint64_t nbits)
{
	size_t nb = (size_t)(nbits / 8);
	uint8_t *bits = malloc(nb);
	uint64_t id = ++f->next_block[i];

	assert_non_null(bits);
	assert_int_equal(qw_rng_bytes(f->rng, bits, nb), 0);
	assert_int_equal(qw_km_submit_block(f->n[i].km, f->n[i + 1].id, id, bits, nbits), 0);
	assert_int_equal(qw_km_submit_block(f->n[i + 1].km, f->n[i].id, id, bits, nbits), 0);
	free(bits);
}

struct route_q {
	struct fx *f;
	int from, to;
};

static int has_route(void *arg)
{
	struct route_q *q = arg;
	struct qw_kme_status st;

	return ops->status(q->f->n[q->from].km, q->f->n[q->from].sae, q->f->n[q->to].sae, &st) == 0 &&
	       st.stored_key_count > 0;
}

static void wait_route(struct fx *f, int from, int to)
{
	struct route_q q = { f, from, to };

	run_until(f, has_route, &q);
}

static int pools_filled(void *arg)
{
	struct fx *f = arg;

	for (int i = 0; i + 1 < f->N; i++) {
		uint64_t a = 0, b = 0;
		if (qw_store_pool_available(f->n[i].store, f->n[i + 1].id, &a) ||
		    qw_store_pool_available(f->n[i + 1].store, f->n[i].id, &b) || a == 0 || a != b)
			return 0;
	}
	return 1;
}

static int ring_up(void *arg)
{
	struct fx *f = arg;

	return qw_km_link_up(f->n[0].km, f->n[f->N - 1].id) &&
	       qw_km_link_up(f->n[f->N - 1].km, f->n[0].id);
}

static struct fx *net_new(int N, int mitm_link, int ring)
{
	struct fx *f = calloc(1, sizeof(*f));
	uint8_t mk[QW_STORE_MASTER_KEY_BYTES];
	struct qw_store_opts so = { .sync = QW_STORE_SYNC_NORMAL };

	assert_non_null(f);
	f->N = N;
	f->mitm_link = mitm_link;
	f->ring = ring;
	strcpy(f->dir, "/tmp/qw_relaynode_XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->rng = qw_rng_new_system();
	f->base = event_base_new();
	assert_true(f->rng && f->base);
	for (int i = 0; i < N; i++) {
		struct node *n = &f->n[i];
		struct qw_config_error e;
		char text[sizeof(n->text)];
		size_t off;
		int err = 0;

		snprintf(n->id, sizeof(n->id), "node-%d", i);
		snprintf(n->sae, sizeof(n->sae), "sae-%d", i);
		off = (size_t)snprintf(text, sizeof(text),
				       "[node]\nid = node-%d\ndata_dir = /nonexistent\nlisten = 127.0.0.1:%d\n"
				       "cert = c.crt\nkey = c.key\nca = ca.crt\nrequest_timeout_ms = 1000\n"
				       "[limits]\nkey_size = 256\nmax_key_per_request = 64\n"
				       "max_key_size = 1024\nmin_key_size = 64\n",
				       i, 1000 + i);
		if (i > 0)
			off += (size_t)snprintf(text + off, sizeof(text) - off,
						"[link]\npeer = node-%d\npsk_file = psk\n", i - 1);
		if (i + 1 < N)
			off += (size_t)snprintf(text + off, sizeof(text) - off,
						"[link]\npeer = node-%d\naddress = 127.0.0.1:%d\npsk_file = psk\n",
						i + 1, 1001 + i);
		if (ring && i == 0)
			off += (size_t)snprintf(text + off, sizeof(text) - off,
						"[link]\npeer = node-%d\naddress = 127.0.0.1:%d\npsk_file = psk\n",
						N - 1, 1000 + N - 1);
		if (ring && i == N - 1)
			off += (size_t)snprintf(text + off, sizeof(text) - off,
						"[link]\npeer = node-0\npsk_file = psk\n");
		for (int j = 0; j < N; j++)
			off += (size_t)snprintf(text + off, sizeof(text) - off,
						"[sae]\nid = sae-%d\nnode = node-%d\n", j, j);
		off += (size_t)snprintf(text + off, sizeof(text) - off, "%s", extra_conf);
		assert_true(off < sizeof(text));
		memcpy(n->text, text, off + 1);
		assert_int_equal(qw_config_parse_string(n->text, "relay.conf", &n->cfg, &e), 0);
		assert_int_equal(qw_km_conf_load(n->cfg, &n->conf, &e), 0);
		{
			char db[sizeof(n->db)];

			snprintf(db, sizeof(db), "%s/%d.db", f->dir, i);
			memcpy(n->db, db, sizeof(db));
		}
		assert_int_equal(qw_rng_bytes(f->rng, mk, sizeof(mk)), 0);
		n->store = qw_store_open(n->db, mk, &so, &err);
		assert_non_null(n->store);
		n->km = qw_km_new(f->base, &n->conf, n->store, &err);
		assert_non_null(n->km);
	}
	for (int i = 0; i + 1 < N; i++)
		connect_link(f, i);
	run_until(f, all_up, f);
	if (ring) {
		struct bufferevent *a[2];
		uint8_t *bits = malloc(BLOCK_BITS / 8);

		pair(f, a);
		assert_int_equal(qw_km_attach(f->n[0].km, f->n[N - 1].id, a[0]), 0);
		assert_int_equal(qw_km_attach(f->n[N - 1].km, f->n[0].id, a[1]), 0);
		run_until(f, ring_up, f);
		/* one block only: the ring's paths are narrower than the chain's */
		assert_non_null(bits);
		assert_int_equal(qw_rng_bytes(f->rng, bits, BLOCK_BITS / 8), 0);
		assert_int_equal(qw_km_submit_block(f->n[0].km, f->n[N - 1].id, 1, bits, BLOCK_BITS), 0);
		assert_int_equal(qw_km_submit_block(f->n[N - 1].km, f->n[0].id, 1, bits, BLOCK_BITS), 0);
		free(bits);
	}
	for (int i = 0; i + 1 < N; i++) {
		fill_link(f, i, BLOCK_BITS);
		fill_link(f, i, BLOCK_BITS);
	}
	run_until(f, pools_filled, f);
	return f;
}

static struct fx *chain_new(int N, int mitm_link)
{
	return net_new(N, mitm_link, 0);
}

static void rm_db(const char *db)
{
	char p[160];

	unlink(db);
	snprintf(p, sizeof(p), "%s-wal", db);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", db);
	unlink(p);
}

static void chain_free(struct fx *f)
{
	for (int i = 0; i < f->N; i++)
		qw_km_free(f->n[i].km);
	if (f->mitm.l)
		bufferevent_free(f->mitm.l);
	if (f->mitm.r)
		bufferevent_free(f->mitm.r);
	/* deferred bufferevent frees */
	for (int i = 0; i < 10; i++)
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	for (int i = 0; i < f->N; i++) {
		qw_store_close(f->n[i].store);
		qw_km_conf_clear(&f->n[i].conf);
		qw_config_free(f->n[i].cfg);
		rm_db(f->n[i].db);
	}
	rmdir(f->dir);
	event_base_free(f->base);
	qw_rng_free(f->rng);
	free(f);
}

static void on_keys(void *arg, int err, struct qw_kme_key *keys, size_t n)
{
	struct result *r = arg;

	r->done = 1;
	r->err = err;
	r->keys = keys;
	r->n = n;
}

static int is_done(void *arg)
{
	return ((struct result *)arg)->done;
}

static void get_keys(struct fx *f, int from, int to, uint32_t number, uint32_t size,
		     struct result *r)
{
	struct qw_kme_get_key_req req = { .master_sae = f->n[from].sae, .slave_sae = f->n[to].sae,
					  .number = number, .size_bits = size };

	memset(r, 0, sizeof(*r));
	ops->get_keys(f->n[from].km, &req, on_keys, r);
}

static void dec_keys(struct fx *f, int from, int to, const struct result *enc, struct result *r)
{
	const char *ids[64];

	assert_true(enc->n <= 64);
	for (size_t i = 0; i < enc->n; i++)
		ids[i] = enc->keys[i].key_id;
	memset(r, 0, sizeof(*r));
	ops->get_keys_with_ids(f->n[to].km, f->n[to].sae, f->n[from].sae, ids, enc->n, on_keys, r);
	assert_true(r->done); /* served from the local store, synchronously */
}

static uint64_t taken(struct fx *f, int node, int peer)
{
	struct qw_store_stats st;

	assert_int_equal(qw_store_stats(f->n[node].store, f->n[peer].id, &st), 0);
	return st.bits_taken;
}

/* bits_taken of both ends of every link, [link][end] */
static void snapshot(struct fx *f, uint64_t t[MAXN][2])
{
	for (int i = 0; i + 1 < f->N; i++) {
		t[i][0] = taken(f, i, i + 1);
		t[i][1] = taken(f, i + 1, i);
	}
}

/* Every link's both ends consumed exactly want bits since snapshot s. */
static void assert_link_bits(struct fx *f, uint64_t s[MAXN][2], uint64_t want)
{
	uint64_t now[MAXN][2];

	snapshot(f, now);
	for (int i = 0; i + 1 < f->N; i++) {
		assert_int_equal(now[i][0] - s[i][0], want);
		assert_int_equal(now[i][1] - s[i][1], want);
	}
}

static void assert_in_step(struct fx *f)
{
	for (int i = 0; i + 1 < f->N; i++) {
		struct qw_store_pos a, b;

		assert_int_equal(qw_store_pool_cursor(f->n[i].store, f->n[i + 1].id, &a), 0);
		assert_int_equal(qw_store_pool_cursor(f->n[i + 1].store, f->n[i].id, &b), 0);
		assert_int_equal(a.block_id, b.block_id);
		assert_int_equal(a.bit, b.bit);
	}
}

/* enc at from, dec at to: equal material; the second dec fails. */
static void relay_round_trip(struct fx *f, int from, int to, uint32_t number, uint32_t size)
{
	struct result enc, dec, again;

	get_keys(f, from, to, number, size, &enc);
	run_until(f, is_done, &enc);
	assert_int_equal(enc.err, 0);
	assert_int_equal(enc.n, number);
	/* the destination committed before the master got them */
	for (size_t i = 0; i < enc.n; i++) {
		struct qw_store_key_info in;
		struct qw_uuid id;

		assert_int_equal(qw_uuid_parse(&id, enc.keys[i].key_id), 0);
		assert_int_equal(qw_store_key_info(f->n[to].store, &id, &in), 0);
		assert_int_equal(in.state, QW_STORE_RESERVED);
		assert_string_equal(in.peer, f->n[from].id);
		assert_string_equal(in.master_sae, f->n[from].sae);
		assert_int_equal(qw_store_key_info(f->n[from].store, &id, &in), 0);
		assert_int_equal(in.state, QW_STORE_DELIVERED);
	}
	dec_keys(f, from, to, &enc, &dec);
	assert_int_equal(dec.err, 0);
	assert_int_equal(dec.n, number);
	for (size_t i = 0; i < number; i++) {
		assert_string_equal(dec.keys[i].key_id, enc.keys[i].key_id);
		assert_int_equal(dec.keys[i].size_bits, size);
		assert_memory_equal(dec.keys[i].key, enc.keys[i].key, size / 8);
	}
	/* never twice */
	dec_keys(f, from, to, &enc, &again);
	assert_int_not_equal(again.err, 0);
	assert_null(again.keys);
	qw_kme_keys_free(enc.keys, enc.n);
	qw_kme_keys_free(dec.keys, dec.n);
}

static int metric_has(struct qw_km *km, const char *line);

static void test_forward_chain(void **state)
{
	struct fx *f = chain_new(5, -1);
	uint64_t s[MAXN][2];

	(void)state;
	wait_route(f, 0, 4);
	snapshot(f, s);
	/* ten 256-bit keys: one group, sent at once (eta >= 0.95) */
	relay_round_trip(f, 0, 4, 10, 256);
	/* formula (1): B + tag pad + a new hash key on every hop's first
	 * message, at both ends of every link */
	assert_link_bits(f, s, 2560 + 128 + 128);
	snapshot(f, s);
	/* the hash keys are kept: B + 128 only. Three 512-bit keys alone
	 * (eta 0.92) wait batch_wait_ms and are topped up with two stock keys
	 * of the same binding to B = 2560 (eta 0.952) */
	relay_round_trip(f, 0, 4, 3, 512);
	assert_link_bits(f, s, 2560 + 128);
	assert_in_step(f);
	/* the same accounting in the metrics, at both ends of every link;
	 * the origin's relayed key bits make eta visible */
	for (int i = 0; i + 1 < f->N; i++) {
		char line[160];

		snprintf(line, sizeof(line), "qwave_relay_link_bits_total{node=\"%s\",peer=\"%s\"} %d\n",
			 f->n[i].id, f->n[i + 1].id, 2560 + 256 + 2560 + 128);
		assert_true(metric_has(f->n[i].km, line));
		snprintf(line, sizeof(line), "qwave_relay_link_bits_total{node=\"%s\",peer=\"%s\"} %d\n",
			 f->n[i + 1].id, f->n[i].id, 2560 + 256 + 2560 + 128);
		assert_true(metric_has(f->n[i + 1].km, line));
	}
	assert_true(metric_has(f->n[0].km, "qwave_relay_key_bits_total{node=\"node-0\"} 5120\n"));
	assert_true(metric_has(f->n[0].km,
			       "qwave_relay_stock_keys_total{node=\"node-0\",event=\"added\"} 2\n"));
	assert_true(metric_has(f->n[0].km, "qwave_relay_total{node=\"node-0\",event=\"sent\"} 2\n"));
	for (int i = 1; i < 4; i++) {
		char line[128];

		snprintf(line, sizeof(line), "qwave_relay_total{node=\"node-%d\",event=\"forwarded\"} 2\n", i);
		assert_true(metric_has(f->n[i].km, line));
	}
	assert_true(metric_has(f->n[4].km, "qwave_relay_total{node=\"node-4\",event=\"received\"} 2\n"));
	chain_free(f);
}

static void test_reverse_chain(void **state)
{
	struct fx *f = chain_new(4, -1);
	uint64_t s[MAXN][2];

	(void)state;
	/* node-3 -> node-0: every hop goes follower -> leader (pad granted
	 * by the leader, RELAY_PAD_REQ / RELAY_PAD) */
	wait_route(f, 3, 0);
	snapshot(f, s);
	relay_round_trip(f, 3, 0, 16, 256);
	assert_link_bits(f, s, 4096 + 256);
	snapshot(f, s);
	/* 2048 bits alone (eta 0.94): topped up with one stock key */
	relay_round_trip(f, 3, 0, 2, 1024);
	assert_link_bits(f, s, 3072 + 128);
	/* and a middle node to an end, both directions at once */
	wait_route(f, 1, 3);
	snapshot(f, s);
	{
		struct result a, b;

		get_keys(f, 1, 3, 12, 256, &a);
		get_keys(f, 3, 1, 12, 256, &b);
		run_until(f, is_done, &a);
		run_until(f, is_done, &b);
		assert_int_equal(a.err, 0);
		assert_int_equal(b.err, 0);
		qw_kme_keys_free(a.keys, a.n);
		qw_kme_keys_free(b.keys, b.n);
	}
	/* links 1-2 and 2-3 carried one relay each way: hash keys already
	 * drawn in the 3 -> 1 direction, new ones in the 1 -> 3 direction */
	{
		uint64_t now[MAXN][2];

		snapshot(f, now);
		assert_int_equal(now[0][0] - s[0][0], 0);
		for (int i = 1; i < 3; i++)
			for (int e = 0; e < 2; e++)
				assert_int_equal(now[i][e] - s[i][e], (3072 + 128 + 128) + (3072 + 128));
	}
	assert_in_step(f);
	chain_free(f);
}

/* Several small requests to one destination join one relay. */
static void test_batching(void **state)
{
	struct fx *f = chain_new(3, -1);
	struct result r[5];
	uint64_t s[MAXN][2];

	(void)state;
	wait_route(f, 0, 2);
	snapshot(f, s);
	for (int i = 0; i < 5; i++)
		get_keys(f, 0, 2, 2, 256, &r[i]);
	for (int i = 0; i < 5; i++) {
		run_until(f, is_done, &r[i]);
		assert_int_equal(r[i].err, 0);
		assert_int_equal(r[i].n, 2);
	}
	/* 10 keys reached the target: one message, one tag pad, one hash key */
	assert_link_bits(f, s, 5 * 512 + 256);
	for (int i = 0; i < 5; i++) {
		struct result d;

		dec_keys(f, 0, 2, &r[i], &d);
		assert_int_equal(d.err, 0);
		for (size_t k = 0; k < 2; k++)
			assert_memory_equal(d.keys[k].key, r[i].keys[k].key, 32);
		qw_kme_keys_free(d.keys, d.n);
		qw_kme_keys_free(r[i].keys, r[i].n);
	}
	chain_free(f);
}

static int has_alarm(struct qw_km *km, const char *kind)
{
	struct qw_dashboard_state st;
	int found = 0;

	memset(&st, 0, sizeof(st));
	assert_int_equal(qw_km_dashboard_state(km, &st), 0);
	for (size_t i = 0; i < st.nalarms; i++)
		found |= !strcmp(st.alarms[i].kind, kind);
	return found;
}

static uint64_t keys_of(struct fx *f, int node, int peer, enum qw_store_key_state state)
{
	struct qw_store_stats st;

	assert_int_equal(qw_store_stats(f->n[node].store, f->n[peer].id, &st), 0);
	return st.keys[state];
}

static int metric_has(struct qw_km *km, const char *line)
{
	struct qw_buf b;
	int found;

	qw_buf_init(&b, 0);
	assert_int_equal(qw_km_metrics(km, &b), 0);
	assert_int_equal(qw_buf_append(&b, "", 1), 0);
	found = strstr((const char *)b.data, line) != NULL;
	qw_buf_free(&b);
	return found;
}

/* One tampered hop from `from` to `to` across the MITM link (1-2). */
static void tamper_once(struct fx *f, int from, int to, int detector, int other)
{
	struct result r;
	uint64_t delivered, erased;

	wait_route(f, from, to);
	delivered = keys_of(f, from, to, QW_STORE_DELIVERED);
	erased = keys_of(f, from, to, QW_STORE_ERASED);
	f->mitm.armed = 1;
	f->mitm.from = from < to ? f->mitm.l : f->mitm.r;
	get_keys(f, from, to, 10, 256, &r);
	run_until(f, is_done, &r);
	assert_int_equal(f->mitm.tampered, 1);
	f->mitm.tampered = 0;
	/* the master SAE gets nothing (503); the origin erased its copy */
	assert_int_not_equal(r.err, 0);
	assert_null(r.keys);
	assert_int_equal(keys_of(f, from, to, QW_STORE_RESERVED), 0);
	assert_int_equal(keys_of(f, from, to, QW_STORE_DELIVERED), delivered);
	assert_int_equal(keys_of(f, from, to, QW_STORE_ERASED), erased + 10);
	/* nothing reached the destination */
	assert_int_equal(keys_of(f, to, from, QW_STORE_RESERVED), 0);
	/* the receiver of the tampered hop saw the bad tag and raised the
	 * alarm */
	assert_true(has_alarm(f->n[detector].km, "mac_failure"));
	{
		char line[128];

		snprintf(line, sizeof(line), "qwave_relay_mac_failures_total{node=\"%s\",peer=\"%s\"} 1",
			 f->n[detector].id, f->n[other].id);
		assert_true(metric_has(f->n[detector].km, line));
	}
	/* every link consumed the same bits at both ends: still in step */
	assert_in_step(f);
	/* the next relay over the same link succeeds (once the alarm that
	 * made routing avoid it has expired) */
	wait_route(f, from, to);
	relay_round_trip(f, from, to, 10, 256);
	assert_in_step(f);
}

static void test_tamper(void **state)
{
	struct fx *f = chain_new(4, 1);

	(void)state;
	/* leader -> follower hop node-1 -> node-2: node-2 detects */
	tamper_once(f, 0, 3, 2, 1);
	/* follower -> leader hop node-2 -> node-1: node-1 (holding the pad
	 * it granted) detects */
	tamper_once(f, 3, 0, 1, 2);
	chain_free(f);
}

/* Relay pads and neighbour KEYS_NEW cuts share the pools: the follower
 * applies both in the leader's order. */
static void test_mixed_with_neighbour_keys(void **state)
{
	struct fx *f = chain_new(3, -1);
	struct result rel[4], nb[4];

	(void)state;
	wait_route(f, 0, 2);
	wait_route(f, 2, 0);
	for (int round = 0; round < 3; round++) {
		get_keys(f, 0, 2, 10, 256, &rel[0]);
		get_keys(f, 0, 1, 4, 256, &nb[0]);   /* leader's KEYS_NEW on 0-1 */
		get_keys(f, 2, 0, 10, 256, &rel[1]); /* PAD_REQ on 1-2 and 0-1 */
		get_keys(f, 1, 0, 4, 256, &nb[1]);   /* follower's KEYS_REQ on 0-1 */
		get_keys(f, 2, 1, 3, 128, &nb[2]);   /* follower's KEYS_REQ on 1-2 */
		get_keys(f, 1, 2, 3, 128, &nb[3]);   /* leader's KEYS_NEW on 1-2 */
		for (int i = 0; i < 2; i++) {
			run_until(f, is_done, &rel[i]);
			assert_int_equal(rel[i].err, 0);
			qw_kme_keys_free(rel[i].keys, rel[i].n);
		}
		for (int i = 0; i < 4; i++) {
			run_until(f, is_done, &nb[i]);
			assert_int_equal(nb[i].err, 0);
			qw_kme_keys_free(nb[i].keys, nb[i].n);
		}
	}
	assert_in_step(f);
	chain_free(f);
}

/* Take nbits from both ends of link i alike (keeps them in step). */
static void consume(struct fx *f, int i, uint64_t nbits)
{
	static uint8_t buf[8192];

	while (nbits) {
		uint64_t k = nbits > 8 * sizeof(buf) ? 8 * sizeof(buf) : nbits;

		assert_int_equal(qw_store_pool_take(f->n[i].store, f->n[i + 1].id, k, NULL, buf,
						    sizeof(buf), NULL), 0);
		assert_int_equal(qw_store_pool_take(f->n[i + 1].store, f->n[i].id, k, NULL, buf,
						    sizeof(buf), NULL), 0);
		nbits -= k;
	}
}

static void append_one(struct fx *f, int node, int peer, uint64_t id, const uint8_t *bits)
{
	assert_int_equal(qw_store_pool_append(f->n[node].store, f->n[peer].id, id, bits, BLOCK_BITS),
			 0);
}

static int ms_passed(void *arg)
{
	int *n = arg;

	return ++*n >= 200;
}

/* The follower's copy of a block arrives late (its QKD link thread is
 * slower): a RELAY pad and a KEYS_NEW cut that reach into the block wait
 * for it, in the leader's order, whichever came first. */
static void test_follower_block_late(void **state)
{
	struct fx *f = chain_new(3, -1);
	static uint8_t block[BLOCK_BITS / 8];

	(void)state;
	wait_route(f, 0, 2);
	relay_round_trip(f, 0, 2, 10, 256);
	for (int order = 0; order < 2; order++) {
		struct result nb, rel, dec;
		uint64_t avail = 0, id = ++f->next_block[0];
		int spins = 0;

		assert_int_equal(qw_store_pool_available(f->n[0].store, "node-1", &avail), 0);
		consume(f, 0, avail - 512);
		assert_int_equal(qw_rng_bytes(f->rng, block, sizeof(block)), 0);
		append_one(f, 0, 1, id, block); /* the leader has it, the follower not yet */
		if (order == 0) {
			get_keys(f, 0, 1, 4, 256, &nb);   /* KEYS_NEW into the new block */
			get_keys(f, 0, 2, 10, 256, &rel); /* then a relay pad after it */
		} else {
			get_keys(f, 0, 2, 10, 256, &rel);
			get_keys(f, 0, 1, 4, 256, &nb);
		}
		/* a while without the block: nothing can complete */
		run_until(f, ms_passed, &spins);
		assert_false(nb.done);
		assert_false(rel.done);
		append_one(f, 1, 0, id, block);
		run_until(f, is_done, &nb);
		run_until(f, is_done, &rel);
		assert_int_equal(nb.err, 0);
		assert_int_equal(rel.err, 0);
		dec_keys(f, 0, 2, &rel, &dec);
		assert_int_equal(dec.err, 0);
		for (size_t k = 0; k < rel.n; k++)
			assert_memory_equal(dec.keys[k].key, rel.keys[k].key, 32);
		qw_kme_keys_free(dec.keys, dec.n);
		qw_kme_keys_free(rel.keys, rel.n);
		qw_kme_keys_free(nb.keys, nb.n);
		assert_in_step(f);
	}
	chain_free(f);
}

static int link_1_2_down(void *arg)
{
	struct fx *f = arg;

	return !qw_km_link_up(f->n[1].km, "node-2") && !qw_km_link_up(f->n[2].km, "node-1");
}

/* No path (a link of the chain is down): 503 at once, nothing stored. */
static void test_no_path(void **state)
{
	struct fx *f = chain_new(3, 1);
	struct qw_kme_status st;
	struct result r;

	(void)state;
	wait_route(f, 0, 2);
	/* the man in the middle hangs up: both nodes see the end of stream */
	bufferevent_flush(f->mitm.l, EV_WRITE, BEV_FINISHED);
	bufferevent_flush(f->mitm.r, EV_WRITE, BEV_FINISHED);
	bufferevent_free(f->mitm.l);
	bufferevent_free(f->mitm.r);
	f->mitm.l = f->mitm.r = NULL;
	run_until(f, link_1_2_down, f);
	get_keys(f, 0, 2, 10, 256, &r);
	run_until(f, is_done, &r);
	assert_int_equal(r.err, QW_EAGAIN);
	assert_null(r.keys);
	for (int s = QW_STORE_AVAILABLE; s <= QW_STORE_ERASED; s++)
		assert_int_equal(keys_of(f, 0, 2, (enum qw_store_key_state)s), 0);
	assert_int_equal(ops->status(f->n[0].km, "sae-0", "sae-2", &st), 0);
	assert_int_equal(st.stored_key_count, 0);
	chain_free(f);
}

/* node-0's link-state database shows all four links of the ring up with
 * key at both ends (the ring link's pool arrived after the first LSAs) */
static int ring_known(void *arg)
{
	struct fx *f = arg;
	struct qw_dashboard_state st;
	int n = 0;

	memset(&st, 0, sizeof(st));
	assert_int_equal(qw_km_dashboard_state(f->n[0].km, &st), 0);
	for (size_t i = 0; i < st.nlinks; i++)
		n += st.links[i].up && st.links[i].pool_bits_a != QW_DASHBOARD_UNKNOWN &&
		     st.links[i].pool_bits_b != QW_DASHBOARD_UNKNOWN &&
		     st.links[i].pool_bits_a > 10000 && st.links[i].pool_bits_b > 10000;
	return n == 4;
}

/* A ring 0-1-2-3-0: the relay 0 -> 2 first takes 0-1-2 (the wider
 * path); a man in the middle on 1-2 makes it fail authentication, and the
 * origin answers the SAE from the next path, 0-3-2, with new keys. */
static void test_next_path(void **state)
{
	struct fx *f = net_new(4, 1, 1);
	struct result r, d;
	struct qw_store_pos a, b;
	uint64_t ring0 = 0, ring3 = 0;

	(void)state;
	wait_route(f, 0, 2);
	run_until(f, ring_known, f);
	assert_int_equal(qw_store_pool_available(f->n[0].store, "node-3", &ring0), 0);
	f->mitm.armed = 1;
	f->mitm.from = f->mitm.l;
	get_keys(f, 0, 2, 10, 256, &r);
	run_until(f, is_done, &r);
	assert_int_equal(f->mitm.tampered, 1);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.n, 10);
	assert_true(has_alarm(f->n[2].km, "mac_failure"));
	/* the keys of the failed attempt are erased at the origin */
	assert_int_equal(keys_of(f, 0, 2, QW_STORE_ERASED), 10);
	assert_int_equal(keys_of(f, 0, 2, QW_STORE_DELIVERED), 10);
	dec_keys(f, 0, 2, &r, &d);
	assert_int_equal(d.err, 0);
	for (size_t k = 0; k < r.n; k++)
		assert_memory_equal(d.keys[k].key, r.keys[k].key, 32);
	qw_kme_keys_free(d.keys, d.n);
	qw_kme_keys_free(r.keys, r.n);
	/* the second path consumed formula (1) on the ring link, in step */
	assert_int_equal(qw_store_pool_available(f->n[0].store, "node-3", &ring3), 0);
	assert_int_equal(ring0 - ring3, 2560 + 256);
	assert_int_equal(qw_store_pool_cursor(f->n[0].store, "node-3", &a), 0);
	assert_int_equal(qw_store_pool_cursor(f->n[3].store, "node-0", &b), 0);
	assert_int_equal(a.block_id, b.block_id);
	assert_int_equal(a.bit, b.bit);
	assert_in_step(f);
	chain_free(f);
}

struct dest_keys {
	struct qw_uuid ids[16];
	size_t n;
	int64_t min_exp, max_exp;
};

static int collect_key(const struct qw_store_key_info *in, void *arg)
{
	struct dest_keys *d = arg;

	if (d->n < 16)
		d->ids[d->n] = in->id;
	d->n++;
	if (!d->min_exp || in->expires < d->min_exp)
		d->min_exp = in->expires;
	if (in->expires > d->max_exp)
		d->max_exp = in->expires;
	return 0;
}

struct expiry_q {
	struct fx *f;
	int node, peer;
};

static int dest_expired(void *arg)
{
	struct expiry_q *q = arg;

	return keys_of(q->f, q->node, q->peer, QW_STORE_RESERVED) == 0;
}

/* The ACK of a relay is lost on the last link: the destination committed
 * the keys, the origin times out, erases its copy and never hands them
 * out; the destination's orphans are erased at their expiry. */
static void test_lost_ack_keys_expire(void **state)
{
	struct fx *f;
	struct dest_keys d;
	struct expiry_q q;
	struct result r, dec;
	const char *ids[16];
	char idtext[16][QW_UUID_STR_BYTES];
	int64_t now;

	(void)state;
	extra_conf = "[relay]\ntimeout_ms = 300\nkey_lifetime_s = 1\n";
	f = chain_new(3, 1);
	extra_conf = "";
	wait_route(f, 0, 2);
	f->mitm.drop_acks = 1;
	f->mitm.from = f->mitm.r; /* node-2's side of link 1-2 */
	get_keys(f, 0, 2, 10, 256, &r);
	run_until(f, is_done, &r);
	f->mitm.drop_acks = 0;
	assert_true(f->mitm.dropped >= 1);
	/* the master SAE got nothing; the origin erased its copy */
	assert_int_not_equal(r.err, 0);
	assert_null(r.keys);
	assert_int_equal(keys_of(f, 0, 2, QW_STORE_RESERVED), 0);
	assert_int_equal(keys_of(f, 0, 2, QW_STORE_DELIVERED), 0);
	assert_int_equal(keys_of(f, 0, 2, QW_STORE_ERASED), 10);
	/* the destination holds them, with an expiry key_lifetime_s (+ the
	 * rounding second) after the relay */
	memset(&d, 0, sizeof(d));
	now = (int64_t)time(NULL);
	assert_int_equal(qw_store_key_list(f->n[2].store, "node-0", QW_STORE_RESERVED, collect_key, &d),
			 0);
	assert_int_equal(d.n, 10);
	assert_true(d.min_exp >= now);
	assert_true(d.max_exp <= now + 1 + 1);
	/* the loop's expiry sweep erases them */
	q.f = f;
	q.node = 2;
	q.peer = 0;
	run_until(f, dest_expired, &q);
	assert_true((int64_t)time(NULL) >= d.min_exp);
	assert_int_equal(keys_of(f, 2, 0, QW_STORE_ERASED), 10);
	assert_int_equal(keys_of(f, 2, 0, QW_STORE_DELIVERED), 0);
	assert_true(metric_has(f->n[2].km, "qwave_relay_keys_expired_total{node=\"node-2\"} 10\n"));
	/* the slave SAE cannot fetch them any more */
	for (size_t i = 0; i < 10; i++) {
		qw_uuid_format(&d.ids[i], idtext[i]);
		ids[i] = idtext[i];
	}
	memset(&dec, 0, sizeof(dec));
	ops->get_keys_with_ids(f->n[2].km, "sae-2", "sae-0", ids, 10, on_keys, &dec);
	assert_true(dec.done);
	assert_int_not_equal(dec.err, 0);
	assert_null(dec.keys);
	/* the pools stayed in step and the next relay (ACK through) works;
	 * its keys are fetched before they expire */
	assert_in_step(f);
	relay_round_trip(f, 0, 2, 10, 256);
	chain_free(f);
}

/* A lone one-key request is topped up with nine stock keys of its own
 * binding (eta 0.952 instead of 0.667); the next nine requests are served
 * from the stock without a relay, the destination holding every one of
 * them RESERVED for the same SAEs before the master gets it. */
static void test_stock(void **state)
{
	struct fx *f = chain_new(3, -1);
	struct result r[11], d;
	uint64_t s[MAXN][2];

	(void)state;
	wait_route(f, 0, 2);
	snapshot(f, s);
	get_keys(f, 0, 2, 1, 256, &r[0]);
	assert_false(r[0].done);
	run_until(f, is_done, &r[0]);
	assert_int_equal(r[0].err, 0);
	assert_int_equal(r[0].n, 1);
	/* one relay of ten keys: formula (1) with B = 2560 and a new hash key */
	assert_link_bits(f, s, 2560 + 256);
	assert_int_equal(keys_of(f, 0, 2, QW_STORE_DELIVERED), 1);
	assert_int_equal(keys_of(f, 0, 2, QW_STORE_RESERVED), 9);
	assert_int_equal(keys_of(f, 2, 0, QW_STORE_RESERVED), 10);
	assert_true(metric_has(f->n[0].km,
			       "qwave_relay_stock_keys_total{node=\"node-0\",event=\"added\"} 9\n"));
	/* nine more: answered at once from the stock, no link key used */
	snapshot(f, s);
	for (int i = 1; i < 10; i++) {
		get_keys(f, 0, 2, 1, 256, &r[i]);
		assert_true(r[i].done);
		assert_int_equal(r[i].err, 0);
		assert_int_equal(r[i].n, 1);
		for (int j = 0; j < i; j++)
			assert_string_not_equal(r[i].keys[0].key_id, r[j].keys[0].key_id);
	}
	assert_link_bits(f, s, 0);
	assert_int_equal(keys_of(f, 0, 2, QW_STORE_RESERVED), 0);
	assert_int_equal(keys_of(f, 0, 2, QW_STORE_DELIVERED), 10);
	assert_true(metric_has(f->n[0].km,
			       "qwave_relay_stock_keys_total{node=\"node-0\",event=\"served\"} 9\n"));
	/* the slave gets the same material at the destination, once */
	for (int i = 0; i < 10; i++) {
		struct result again;

		dec_keys(f, 0, 2, &r[i], &d);
		assert_int_equal(d.err, 0);
		assert_int_equal(d.n, 1);
		assert_memory_equal(d.keys[0].key, r[i].keys[0].key, 32);
		qw_kme_keys_free(d.keys, d.n);
		dec_keys(f, 0, 2, &r[i], &again);
		assert_int_not_equal(again.err, 0);
		assert_null(again.keys);
	}
	assert_int_equal(keys_of(f, 2, 0, QW_STORE_DELIVERED), 10);
	/* the stock is used up: the next request relays again (and refills) */
	snapshot(f, s);
	get_keys(f, 0, 2, 1, 256, &r[10]);
	assert_false(r[10].done);
	run_until(f, is_done, &r[10]);
	assert_int_equal(r[10].err, 0);
	assert_link_bits(f, s, 2560 + 128);
	/* another binding (the reverse direction) has no stock */
	get_keys(f, 2, 0, 1, 256, &d);
	assert_false(d.done);
	run_until(f, is_done, &d);
	assert_int_equal(d.err, 0);
	qw_kme_keys_free(d.keys, d.n);
	for (int i = 0; i < 11; i++)
		qw_kme_keys_free(r[i].keys, r[i].n);
	assert_in_step(f);
	chain_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_forward_chain),
		cmocka_unit_test(test_reverse_chain),
		cmocka_unit_test(test_batching),
		cmocka_unit_test(test_tamper),
		cmocka_unit_test(test_mixed_with_neighbour_keys),
		cmocka_unit_test(test_follower_block_late),
		cmocka_unit_test(test_no_path),
		cmocka_unit_test(test_next_path),
		cmocka_unit_test(test_lost_ack_keys_expire),
		cmocka_unit_test(test_stock),
	};

	ops = qw_km_kme_ops();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
