/* Hop-by-hop OTP key relay (include/qwave/relay.h): multi-hop round trips
 * with an independent simulated pool per link, tamper detection on every
 * hop and every field, exact link-key accounting against formula (1), the
 * efficiency target of formula (2), replay window, parser round trips and
 * malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/relay.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"
#include "qwave/store.h"

/* One link's pool as both ends see it: the same random bytes, each end
 * with its own cursor (as two stores holding the same blocks). */
struct sim_pool {
	uint8_t *bits;
	size_t len;
	size_t cur[2]; /* 0: the hop's sender, 1: its receiver */
	uint64_t taken_bits[2];
};

static struct qw_rng *rng;

static void pool_init(struct sim_pool *p, size_t len)
{
	p->bits = malloc(len);
	assert_non_null(p->bits);
	p->len = len;
	assert_int_equal(qw_rng_bytes(rng, p->bits, len), 0);
	p->cur[0] = p->cur[1] = 0;
	p->taken_bits[0] = p->taken_bits[1] = 0;
}

/* Take n bytes at side's cursor; expect (if not SIZE_MAX) must be the
 * cursor, as qw_store_pool_take's expect. */
static const uint8_t *pool_take(struct sim_pool *p, int side, size_t n, size_t expect,
				size_t *at)
{
	const uint8_t *r;

	if (expect != SIZE_MAX)
		assert_int_equal(p->cur[side], expect);
	assert_true(p->cur[side] + n <= p->len);
	r = p->bits + p->cur[side];
	if (at)
		*at = p->cur[side];
	p->cur[side] += n;
	p->taken_bits[side] += 8 * (uint64_t)n;
	return r;
}

static void pool_free(struct sim_pool *p)
{
	free(p->bits);
}

static const char *const nodes[] = { "alice", "n1", "n2", "n3", "n4", "bob" };

/* A message of ngroups groups of count keys of size_bits, with fresh ids,
 * and its plaintext. */
static void make_msg(struct qw_relay_msg *m, size_t path_len, uint32_t ngroups, uint32_t count,
		     uint32_t size_bits, uint8_t **keys, size_t *keys_len)
{
	qw_relay_msg_init(m);
	assert_int_equal(qw_uuid_generate(&m->relay_id), 0);
	m->created = 1763700000000;
	assert_int_equal(qw_relay_msg_set_path(m, (const char *const *)nodes, path_len), 0);
	/* the destination is always "bob" */
	strcpy(m->path[path_len - 1], "bob");
	for (uint32_t g = 0; g < ngroups; g++) {
		struct qw_relay_group grp;

		memset(&grp, 0, sizeof(grp));
		grp.size_bits = size_bits;
		grp.count = count;
		grp.expires = g ? 1763800000 : 0;
		if (g % 2 == 0) {
			snprintf(grp.master, sizeof(grp.master), "sae-a%u", g);
			grp.n_slaves = 1 + g % 3;
			for (uint32_t s = 0; s < grp.n_slaves; s++)
				snprintf(grp.slaves[s], sizeof(grp.slaves[s]), "sae-b%u.%u", g, s);
		} /* odd groups: stock keys */
		grp.ids = malloc(count * sizeof(*grp.ids));
		assert_non_null(grp.ids);
		for (uint32_t i = 0; i < count; i++)
			assert_int_equal(qw_uuid_generate(&grp.ids[i]), 0);
		assert_int_equal(qw_relay_msg_add_group(m, &grp), 0);
		free(grp.ids);
	}
	*keys_len = qw_relay_payload_bits(m) / 8;
	*keys = malloc(*keys_len);
	assert_non_null(*keys);
	assert_int_equal(qw_rng_bytes(rng, *keys, *keys_len), 0);
}

/* Per-link state of a simulated network: pool and the two ends' MAC states. */
struct sim_link {
	struct sim_pool pool;
	struct qw_relay_mac tx, rx;
};

static void links_init(struct sim_link *l, size_t n, size_t pool_bytes)
{
	for (size_t i = 0; i < n; i++) {
		pool_init(&l[i].pool, pool_bytes);
		qw_relay_mac_init(&l[i].tx, QW_RELAY_REKEY_DEFAULT);
		qw_relay_mac_init(&l[i].rx, QW_RELAY_REKEY_DEFAULT);
	}
}

static void links_free(struct sim_link *l, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		pool_free(&l[i].pool);
		qw_relay_mac_reset(&l[i].tx);
		qw_relay_mac_reset(&l[i].rx);
	}
}

/* Relay keys over the path of m (hop 0..path_len-2) through links; each
 * hop: the sender draws its pad and seals, the wire bytes are parsed at the
 * receiver, which checks the link and the stated pool position (as
 * qw_store_pool_take's expect: QW_ESTATE when they differ), draws and
 * opens. tamper_hop >= 0 flips bit tamper_bit of that hop's wire bytes
 * (tamper_bit > SIZE_MAX / 2: bit SIZE_MAX - tamper_bit counted from the
 * end). Returns the first error (0 on success); the plaintext at the
 * destination goes to out. */
static int relay_path(struct qw_relay_msg *m, struct sim_link *links, const uint8_t *keys,
		      size_t keys_len, uint8_t *out, int tamper_hop, size_t tamper_bit)
{
	uint8_t *plain = malloc(keys_len);
	int ret = 0;

	assert_non_null(plain);
	memcpy(plain, keys, keys_len);
	for (uint8_t h = 0; h + 1 < m->path_len; h++) {
		struct sim_link *l = &links[h];
		struct qw_relay_msg rx;
		struct qw_buf wire;
		const uint8_t *pad;
		size_t at, n;
		int last;

		m->hop = h;
		m->flags = qw_relay_mac_due(&l->tx) ? QW_RELAY_F_NEWKEY : 0;
		n = qw_relay_hop_pad_bits(m) / 8;
		pad = pool_take(&l->pool, 0, n, SIZE_MAX, &at);
		m->pad_pos.block_id = 7;
		m->pad_pos.bit = 8 * (uint64_t)at;
		qw_buf_init(&wire, 0);
		assert_int_equal(qw_relay_seal_hop(m, plain, keys_len, pad, n, &l->tx, &wire), 0);
		if (h == tamper_hop) {
			size_t bit = tamper_bit > SIZE_MAX / 2
					     ? 8 * wire.len - 1 - (SIZE_MAX - tamper_bit)
					     : tamper_bit;

			wire.data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		}
		ret = qw_relay_parse(wire.data, wire.len, &rx);
		qw_buf_free(&wire);
		if (ret)
			break;
		ret = qw_relay_hop_check(&rx, m->path[h + 1], m->path[h], &last);
		if (!ret && (rx.pad_pos.block_id != 7 || rx.pad_pos.bit != 8 * (uint64_t)l->pool.cur[1]))
			ret = QW_ESTATE;
		if (ret) {
			qw_relay_msg_clear(&rx);
			break;
		}
		assert_int_equal(last, h + 2 == m->path_len);
		pad = pool_take(&l->pool, 1, qw_relay_hop_pad_bits(&rx) / 8,
				(size_t)(rx.pad_pos.bit / 8), NULL);
		memset(plain, 0xA5, keys_len);
		ret = qw_relay_open_hop(&rx, pad, qw_relay_hop_pad_bits(&rx) / 8, &l->rx, plain,
					keys_len);
		qw_relay_msg_clear(&rx);
		if (ret) {
			/* no plaintext written */
			for (size_t i = 0; i < keys_len; i++)
				assert_int_equal(plain[i], 0xA5);
			break;
		}
	}
	if (!ret)
		memcpy(out, plain, keys_len);
	qw_free_secret(plain, keys_len);
	return ret;
}

static void test_round_trip_hops(void **state)
{
	(void)state;
	for (size_t path_len = 2; path_len <= 6; path_len++) {
		struct sim_link links[5];
		struct qw_relay_msg m;
		uint8_t *keys, *out;
		size_t keys_len;
		uint64_t consumed = 0;

		links_init(links, path_len - 1, 1 << 16);
		make_msg(&m, path_len, 3, 4, 256, &keys, &keys_len);
		out = malloc(keys_len);
		assert_non_null(out);
		/* two relays: the first draws a hash key on every link, the
		 * second reuses it */
		for (int round = 0; round < 2; round++) {
			assert_int_equal(relay_path(&m, links, keys, keys_len, out, -1, 0), 0);
			assert_memory_equal(out, keys, keys_len);
			assert_int_equal(qw_uuid_generate(&m.relay_id), 0);
		}
		/* exact accounting, formula (1): per hop and per relay
		 * payload + 128, plus 128 once for the hash key */
		for (size_t h = 0; h + 1 < path_len; h++) {
			uint64_t want = 2 * (keys_len * 8 + 128) + 128;

			assert_int_equal(links[h].pool.taken_bits[0], want);
			assert_int_equal(links[h].pool.taken_bits[1], want);
			assert_int_equal(links[h].pool.cur[0], links[h].pool.cur[1]);
			consumed += links[h].pool.taken_bits[0];
		}
		assert_int_equal(consumed, (path_len - 1) * (2 * (keys_len * 8 + 128) + 128));
		free(out);
		free(keys);
		qw_relay_msg_clear(&m);
		links_free(links, path_len - 1);
	}
}

/* The pads of different hops are independent: the ciphertexts of hop 0 and
 * hop 1 differ (they would be equal only if the two pools' draws were). */
static void test_hops_independent_ciphertext(void **state)
{
	struct sim_link links[2];
	struct qw_relay_msg m, a, b;
	struct qw_buf w0, w1;
	uint8_t *keys;
	size_t keys_len, n;
	const uint8_t *pad;

	(void)state;
	links_init(links, 2, 1 << 14);
	make_msg(&m, 3, 1, 8, 256, &keys, &keys_len);
	qw_buf_init(&w0, 0);
	qw_buf_init(&w1, 0);
	for (int h = 0; h < 2; h++) {
		m.hop = (uint8_t)h;
		m.flags = QW_RELAY_F_NEWKEY;
		n = qw_relay_hop_pad_bits(&m) / 8;
		pad = pool_take(&links[h].pool, 0, n, SIZE_MAX, NULL);
		assert_int_equal(qw_relay_seal_hop(&m, keys, keys_len, pad, n, &links[h].tx,
						   h ? &w1 : &w0),
				 0);
	}
	assert_int_equal(qw_relay_parse(w0.data, w0.len, &a), 0);
	assert_int_equal(qw_relay_parse(w1.data, w1.len, &b), 0);
	assert_int_equal(a.ct_len, keys_len);
	assert_true(memcmp(a.ct, b.ct, keys_len) != 0);
	assert_true(memcmp(a.ct, keys, keys_len) != 0);
	qw_relay_msg_clear(&a);
	qw_relay_msg_clear(&b);
	qw_buf_free(&w0);
	qw_buf_free(&w1);
	free(keys);
	qw_relay_msg_clear(&m);
	links_free(links, 2);
}

/* Flip one bit anywhere in any hop's message: the receiver refuses it -
 * the parser (QW_EPARSE), the link check (QW_EPROTO: path[hop] is not the
 * peer), the pool position check (QW_ESTATE, as the store's expect), or
 * the tag (QW_EAUTH) - and no plaintext comes out. A flip in the
 * ciphertext or the tag is always QW_EAUTH. Every bit of the first hop's
 * message is tried; on the later hops a spread of positions. */
static void test_tamper_every_bit(void **state)
{
	struct qw_relay_msg m;
	uint8_t *keys, *out;
	size_t keys_len, wire_len;
	unsigned count[4] = { 0 }; /* EAUTH, EPARSE, EPROTO, ESTATE */

	(void)state;
	make_msg(&m, 4, 2, 2, 128, &keys, &keys_len);
	out = malloc(keys_len);
	assert_non_null(out);
	{
		struct qw_buf w;
		struct qw_relay_mac mk;
		uint8_t pad[4096];

		qw_relay_mac_init(&mk, 0);
		m.flags = QW_RELAY_F_NEWKEY;
		qw_buf_init(&w, 0);
		memset(pad, 0, sizeof(pad));
		assert_int_equal(qw_relay_seal_hop(&m, keys, keys_len, pad,
						   qw_relay_hop_pad_bits(&m) / 8, &mk, &w),
				 0);
		wire_len = w.len;
		qw_buf_free(&w);
		qw_relay_mac_reset(&mk);
	}
	for (int hop = 0; hop < 3; hop++) {
		size_t step = hop == 0 ? 1 : 13;

		for (size_t bit = 0; bit < 8 * wire_len; bit += step) {
			struct sim_link links[3];
			int ret;

			links_init(links, 3, 1 << 12);
			ret = relay_path(&m, links, keys, keys_len, out, hop, bit);
			if (bit >= 8 * (wire_len - keys_len - QW_WCMAC_TAG_BYTES))
				assert_int_equal(ret, QW_EAUTH);
			switch (ret) {
			case QW_EAUTH:
				count[0]++;
				/* the receiver forgot its hash key */
				assert_null(links[hop].rx.wc);
				break;
			case QW_EPARSE: count[1]++; break;
			case QW_EPROTO: count[2]++; break;
			case QW_ESTATE: count[3]++; break;
			default: fail_msg("hop %d bit %zu: %d", hop, bit, ret);
			}
			links_free(links, 3);
		}
	}
	/* each mechanism was exercised, and the tag caught the most */
	for (int i = 0; i < 4; i++)
		assert_true(count[i] > 0);
	assert_true(count[0] > count[1] + count[2] + count[3]);
	free(out);
	free(keys);
	qw_relay_msg_clear(&m);
}

/* After a failed tag the link recovers: the receiver has no hash key, a
 * message without NEWKEY is QW_ESTATE (nothing verified); the sender,
 * told by the NACK, resets and the next NEWKEY message opens. */
static void test_recover_after_eauth(void **state)
{
	struct sim_link l[1];
	struct qw_relay_msg m;
	uint8_t *keys, *out;
	size_t keys_len;

	(void)state;
	links_init(l, 1, 1 << 14);
	make_msg(&m, 2, 1, 10, 256, &keys, &keys_len);
	out = malloc(keys_len);
	assert_non_null(out);
	assert_int_equal(relay_path(&m, l, keys, keys_len, out, 0, SIZE_MAX - 200), QW_EAUTH);
	assert_null(l[0].rx.wc);
	assert_non_null(l[0].tx.wc);
	/* sender still has its key: its next message lacks NEWKEY */
	assert_int_equal(relay_path(&m, l, keys, keys_len, out, -1, 0), QW_ESTATE);
	qw_relay_mac_reset(&l[0].tx);
	assert_int_equal(relay_path(&m, l, keys, keys_len, out, -1, 0), 0);
	assert_memory_equal(out, keys, keys_len);
	/* pools stayed in step through all of it */
	assert_int_equal(l[0].pool.cur[0], l[0].pool.cur[1]);
	free(out);
	free(keys);
	qw_relay_msg_clear(&m);
	links_free(l, 1);
}

/* Sealing without a hash key, or with a key due for refresh, is refused. */
static void test_seal_state(void **state)
{
	struct qw_relay_msg m;
	struct qw_relay_mac mk;
	struct qw_buf w;
	uint8_t *keys, pad[2048];
	size_t keys_len;

	(void)state;
	make_msg(&m, 3, 1, 2, 256, &keys, &keys_len);
	memset(pad, 0x3c, sizeof(pad));
	qw_relay_mac_init(&mk, 2);
	qw_buf_init(&w, 0);
	m.flags = 0;
	assert_int_equal(qw_relay_seal_hop(&m, keys, keys_len, pad, qw_relay_hop_pad_bits(&m) / 8,
					   &mk, &w),
			 QW_ESTATE);
	assert_int_equal(w.len, 0);
	m.flags = QW_RELAY_F_NEWKEY;
	/* wrong pad length */
	assert_int_equal(qw_relay_seal_hop(&m, keys, keys_len, pad,
					   qw_relay_hop_pad_bits(&m) / 8 - 1, &mk, &w),
			 QW_EINVAL);
	assert_int_equal(qw_relay_seal_hop(&m, keys, keys_len, pad, qw_relay_hop_pad_bits(&m) / 8,
					   &mk, &w),
			 0);
	assert_int_equal(qw_relay_mac_due(&mk), 0);
	m.flags = 0;
	assert_int_equal(qw_relay_seal_hop(&m, keys, keys_len, pad, qw_relay_hop_pad_bits(&m) / 8,
					   &mk, &w),
			 0);
	assert_int_equal(qw_relay_mac_due(&mk), 1);
	assert_int_equal(qw_relay_seal_hop(&m, keys, keys_len, pad, qw_relay_hop_pad_bits(&m) / 8,
					   &mk, &w),
			 QW_ESTATE);
	qw_relay_mac_reset(&mk);
	qw_buf_free(&w);
	free(keys);
	qw_relay_msg_clear(&m);
}

/* Formula (2) and the measured consumption of many relays agree, and the
 * chosen batch (ten 256-bit keys, hash key every 256 messages) reaches
 * 0.95 end to end on a 3-hop path; a single key does not. */
static void test_efficiency(void **state)
{
	const uint32_t batch = qw_relay_min_batch(256, QW_RELAY_EFFICIENCY_TARGET,
						  QW_RELAY_REKEY_DEFAULT);
	const int relays = 300;
	struct sim_link links[3];
	struct qw_relay_msg m;
	uint8_t *keys, *out;
	size_t keys_len;
	uint64_t relayed = 0, consumed = 0;
	double eta;

	(void)state;
	assert_int_equal(batch, 10);
	assert_true(qw_relay_efficiency(10 * 256, QW_RELAY_REKEY_DEFAULT) >= 0.95);
	assert_true(qw_relay_efficiency(9 * 256, QW_RELAY_REKEY_DEFAULT) < 0.95);
	/* one key alone: 256 / (256 + 128.5) */
	assert_true(qw_relay_efficiency(256, QW_RELAY_REKEY_DEFAULT) < 0.67);
	assert_int_equal(qw_relay_min_batch(256, 0.95, 0), 10);
	assert_int_equal(qw_relay_min_batch(128, 0.95, 0), 19);
	assert_int_equal(qw_relay_min_batch(0, 0.95, 0), 0);

	links_init(links, 3, (size_t)relays * (batch * 32 + 16) + 4096);
	make_msg(&m, 4, 1, batch, 256, &keys, &keys_len);
	assert_int_equal(qw_relay_batch_ready(&m, 0.95, QW_RELAY_REKEY_DEFAULT), 1);
	out = malloc(keys_len);
	assert_non_null(out);
	for (int i = 0; i < relays; i++) {
		assert_int_equal(qw_uuid_generate(&m.relay_id), 0);
		assert_int_equal(relay_path(&m, links, keys, keys_len, out, -1, 0), 0);
		assert_memory_equal(out, keys, keys_len);
		relayed += keys_len * 8;
	}
	for (int h = 0; h < 3; h++) {
		/* 300 relays at rekey 256: hash keys drawn twice */
		uint64_t want = (uint64_t)relays * (keys_len * 8 + 128) + 2 * 128;

		assert_int_equal(links[h].pool.taken_bits[0], want);
		assert_int_equal(links[h].pool.taken_bits[1], want);
		consumed += want;
	}
	/* per-hop efficiency (each relayed bit costs one bit per hop) */
	eta = (double)relayed * 3 / (double)consumed;
	assert_true(eta >= 0.95);
	assert_true(eta <= qw_relay_efficiency(keys_len * 8, 0));
	free(out);
	free(keys);
	qw_relay_msg_clear(&m);
	links_free(links, 3);
}

static void test_parse_round_trip(void **state)
{
	(void)state;
	for (uint32_t ng = 1; ng <= 5; ng++) {
		struct qw_relay_msg m, p;
		struct qw_relay_mac mk;
		struct qw_buf w, w2;
		uint8_t *keys, *pad;
		size_t keys_len, n;

		make_msg(&m, 2 + ng % 5, ng, ng, 8 * ng, &keys, &keys_len);
		m.flags = QW_RELAY_F_NEWKEY;
		m.hop = (uint8_t)(m.path_len - 2);
		m.pad_pos.block_id = (UINT64_C(1) << 63) - 1;
		m.pad_pos.bit = 123456789;
		n = qw_relay_hop_pad_bits(&m) / 8;
		pad = calloc(n, 1);
		assert_non_null(pad);
		qw_relay_mac_init(&mk, 0);
		qw_buf_init(&w, 0);
		qw_buf_init(&w2, 0);
		assert_int_equal(qw_relay_seal_hop(&m, keys, keys_len, pad, n, &mk, &w), 0);
		assert_int_equal(qw_relay_parse(w.data, w.len, &p), 0);
		assert_memory_equal(p.relay_id.b, m.relay_id.b, QW_UUID_BYTES);
		assert_int_equal(p.created, m.created);
		assert_int_equal(p.flags, m.flags);
		assert_int_equal(p.hop, m.hop);
		assert_int_equal(p.path_len, m.path_len);
		for (int i = 0; i < m.path_len; i++)
			assert_string_equal(p.path[i], m.path[i]);
		assert_int_equal(p.pad_pos.block_id, m.pad_pos.block_id);
		assert_int_equal(p.pad_pos.bit, m.pad_pos.bit);
		assert_int_equal(p.n_groups, ng);
		for (uint32_t g = 0; g < ng; g++) {
			assert_int_equal(p.groups[g].size_bits, m.groups[g].size_bits);
			assert_int_equal(p.groups[g].count, m.groups[g].count);
			assert_int_equal(p.groups[g].expires, m.groups[g].expires);
			assert_string_equal(p.groups[g].master, m.groups[g].master);
			assert_int_equal(p.groups[g].n_slaves, m.groups[g].n_slaves);
			for (uint32_t s = 0; s < m.groups[g].n_slaves; s++)
				assert_string_equal(p.groups[g].slaves[s], m.groups[g].slaves[s]);
			assert_memory_equal(p.groups[g].ids, m.groups[g].ids,
					    m.groups[g].count * sizeof(struct qw_uuid));
		}
		/* the all-zero pad leaves the plaintext in the clear: checks
		 * the ciphertext layout */
		assert_int_equal(p.ct_len, keys_len);
		assert_memory_equal(p.ct, keys, keys_len);
		/* canonical: re-encoding gives the same bytes */
		assert_int_equal(qw_relay_encode(&p, &w2), 0);
		assert_int_equal(w2.len, w.len);
		assert_memory_equal(w2.data, w.data, w.len);
		/* every strict prefix and any trailing byte are malformed */
		for (size_t cut = 0; cut < w.len; cut++) {
			struct qw_relay_msg t;

			assert_int_equal(qw_relay_parse(w.data, cut, &t), QW_EPARSE);
		}
		assert_int_equal(qw_buf_append_u8(&w, 0), 0);
		{
			struct qw_relay_msg t;

			assert_int_equal(qw_relay_parse(w.data, w.len, &t), QW_EPARSE);
		}
		qw_relay_msg_clear(&p);
		qw_relay_msg_clear(&m);
		qw_relay_mac_reset(&mk);
		qw_buf_free(&w);
		qw_buf_free(&w2);
		free(pad);
		free(keys);
	}
}

/* Hand-made malformed messages: each violates one rule. */
static void test_parse_malformed(void **state)
{
	struct qw_relay_msg m, p;
	struct qw_relay_mac mk;
	struct qw_buf w;
	uint8_t *keys, pad[1024];
	size_t keys_len;
	/* offsets in the encoding of make_msg(3 nodes, 1 group of 1 x 64 bits) */
	const size_t o_flags = 1, o_hop = 2, o_n = 3, o_block = 28, o_path = 44;

	(void)state;
	make_msg(&m, 3, 1, 1, 64, &keys, &keys_len);
	memset(pad, 0, sizeof(pad));
	qw_relay_mac_init(&mk, 0);
	m.flags = QW_RELAY_F_NEWKEY;
	qw_buf_init(&w, 0);
	assert_int_equal(qw_relay_seal_hop(&m, keys, keys_len, pad, qw_relay_hop_pad_bits(&m) / 8,
					   &mk, &w),
			 0);
	assert_int_equal(qw_relay_parse(w.data, w.len, &p), 0);
	qw_relay_msg_clear(&p);

#define MUTATE(off, val)                                                                   \
	do {                                                                               \
		uint8_t old_ = w.data[off];                                                \
		w.data[off] = (uint8_t)(val);                                              \
		assert_int_equal(qw_relay_parse(w.data, w.len, &p), QW_EPARSE);            \
		w.data[off] = old_;                                                        \
	} while (0)
	MUTATE(0, 2);                 /* version */
	MUTATE(o_flags, 0x02);        /* unknown flag */
	MUTATE(o_hop, 2);             /* hop = n - 1 */
	MUTATE(o_n, 1);               /* path of one node */
	MUTATE(o_n, QW_RELAY_MAX_PATH + 1);
	MUTATE(o_block, 0x80);        /* block id >= 2^63 */
	MUTATE(o_path, 0);            /* empty node ID */
	MUTATE(o_path, 65);           /* node ID too long */
	MUTATE(o_path + 1, '/');      /* bad character */
	MUTATE(o_path + 1, 0);        /* embedded NUL */
	/* a path that visits a node twice: n1 n2 n3 with the '3' made a '1' */
	{
		const char *p3[] = { "n1", "n2", "n3" };
		struct qw_buf w3;
		const size_t o_3 = o_path + 3 + 3 + 2;

		assert_int_equal(qw_relay_msg_set_path(&m, p3, 3), 0);
		qw_buf_init(&w3, 0);
		assert_int_equal(qw_relay_seal_hop(&m, keys, keys_len, pad,
						   qw_relay_hop_pad_bits(&m) / 8, &mk, &w3),
				 0);
		assert_int_equal(w3.data[o_3], '3');
		w3.data[o_3] = '1';
		assert_int_equal(qw_relay_parse(w3.data, w3.len, &p), QW_EPARSE);
		w3.data[o_3] = '4';
		assert_int_equal(qw_relay_parse(w3.data, w3.len, &p), 0);
		qw_relay_msg_clear(&p);
		qw_buf_free(&w3);
		assert_int_equal(qw_relay_msg_set_path(&m, p3, 1), QW_EINVAL);
		p3[2] = "n1";
		assert_int_equal(qw_relay_msg_set_path(&m, p3, 3), QW_EINVAL);
		p3[2] = "n/3";
		assert_int_equal(qw_relay_msg_set_path(&m, p3, 3), QW_EINVAL);
	}
	{
		/* group fields start after the path: 1 + 5 ("alice") + 1 + 2
		 * ("n1") + 1 + 3 ("bob") = 13 bytes, then the group count */
		size_t o_ng = o_path + 13, o_size = o_ng + 1, o_count = o_size + 4,
		       o_master = o_count + 4 + 8;

		MUTATE(o_ng, 0);               /* no groups */
		MUTATE(o_ng, 2);               /* more groups than present */
		MUTATE(o_size + 3, 65);        /* size not a multiple of 8 */
		MUTATE(o_size + 3, 0);         /* size 0 */
		MUTATE(o_size, 0xff);          /* size > 1 Mbit */
		MUTATE(o_count + 3, 0);        /* count 0 */
		MUTATE(o_count + 3, 2);        /* count 2 but one id */
		MUTATE(o_count + 2, 0xff);     /* count > 4096 */
		MUTATE(o_master, 0);           /* empty master with a slave */
		/* ct_len != payload: ct_len sits 16 + 16 bytes (ct + tag)
		 * plus 4 from the end */
		MUTATE(w.len - 16 - 8 - 1, 9);
	}
#undef MUTATE
	/* repeated key id across groups */
	{
		struct qw_relay_msg d;
		struct qw_relay_group g = m.groups[0];
		struct qw_buf w2;
		uint8_t *k2, pad2[1024];

		qw_relay_msg_init(&d);
		d.relay_id = m.relay_id;
		memcpy(d.path, m.path, sizeof(d.path));
		d.path_len = m.path_len;
		assert_int_equal(qw_relay_msg_add_group(&d, &g), 0);
		assert_int_equal(qw_relay_msg_add_group(&d, &g), 0);
		k2 = calloc(qw_relay_payload_bits(&d) / 8, 1);
		assert_non_null(k2);
		memset(pad2, 0, sizeof(pad2));
		qw_buf_init(&w2, 0);
		d.flags = QW_RELAY_F_NEWKEY;
		assert_int_equal(qw_relay_seal_hop(&d, k2, qw_relay_payload_bits(&d) / 8, pad2,
						   qw_relay_hop_pad_bits(&d) / 8, &mk, &w2),
				 0);
		assert_int_equal(qw_relay_parse(w2.data, w2.len, &p), QW_EPARSE);
		qw_buf_free(&w2);
		free(k2);
		qw_relay_msg_clear(&d);
	}
	/* the API refuses what the parser would */
	{
		struct qw_relay_group g = m.groups[0];

		g.size_bits = 12;
		assert_int_equal(qw_relay_msg_add_group(&m, &g), QW_EINVAL);
		g = m.groups[0];
		g.n_slaves = 0;
		assert_int_equal(qw_relay_msg_add_group(&m, &g), QW_EINVAL);
		g = m.groups[0];
		g.count = QW_RELAY_MAX_KEYS;
		assert_int_equal(qw_relay_msg_add_group(&m, &g), QW_EINVAL);
		assert_int_equal(m.n_groups, 1);
	}
	assert_int_equal(qw_relay_parse(NULL, 0, &p), QW_EPARSE);
	qw_relay_mac_reset(&mk);
	qw_buf_free(&w);
	free(keys);
	qw_relay_msg_clear(&m);
}

static void test_hop_check(void **state)
{
	struct qw_relay_msg m;
	uint8_t *keys;
	size_t keys_len;
	int last = -1;

	(void)state;
	make_msg(&m, 4, 1, 1, 8, &keys, &keys_len);
	m.hop = 1;
	assert_int_equal(qw_relay_hop_check(&m, "n2", "n1", &last), 0);
	assert_int_equal(last, 0);
	m.hop = 2;
	assert_int_equal(qw_relay_hop_check(&m, "bob", "n2", &last), 0);
	assert_int_equal(last, 1);
	assert_int_equal(qw_relay_hop_check(&m, "bob", "n1", &last), QW_EPROTO);
	assert_int_equal(qw_relay_hop_check(&m, "n3", "n2", &last), QW_EPROTO);
	free(keys);
	qw_relay_msg_clear(&m);
}

static void test_ack(void **state)
{
	struct qw_relay_ack a = { .hop = 3, .status = QW_EAUTH }, b;
	struct qw_buf w;

	(void)state;
	assert_int_equal(qw_uuid_generate(&a.relay_id), 0);
	qw_buf_init(&w, 0);
	assert_int_equal(qw_relay_ack_encode(&a, &w), 0);
	assert_int_equal(w.len, QW_RELAY_ACK_BYTES);
	assert_int_equal(qw_relay_ack_parse(w.data, w.len, &b), 0);
	assert_memory_equal(&b.relay_id, &a.relay_id, sizeof(a.relay_id));
	assert_int_equal(b.hop, 3);
	assert_int_equal(b.status, QW_EAUTH);
	assert_int_equal(qw_relay_ack_parse(w.data, w.len - 1, &b), QW_EPARSE);
	w.data[0] = 9;
	assert_int_equal(qw_relay_ack_parse(w.data, w.len, &b), QW_EPARSE);
	w.data[0] = QW_RELAY_VERSION;
	w.data[w.len - 1] = 1; /* status -255 */
	assert_int_equal(qw_relay_ack_parse(w.data, w.len, &b), QW_EPARSE);
	a.status = 5;
	assert_int_equal(qw_relay_ack_encode(&a, &w), QW_EINVAL);
	qw_buf_free(&w);
}

/* ---- with the real key store ------------------------------------------------- */

/* The recipe of docs/relay-routing.md on three real stores, A - B - C:
 * pads taken with qw_store_pool_take (the receiver with expect = the stated
 * position), relayed keys stored at both ends through a pool named after
 * the far end, delivered by id to the SAEs. The store's own counters give
 * the accounting: bits_taken on each link, at each end, is formula (1). A
 * tampered hop fails with QW_EAUTH and leaves both pools in step; a
 * tampered position is refused by the store (QW_ESTATE) before anything is
 * taken. */
static struct qw_store *open_node(const char *dir, const char *name)
{
	struct qw_store_opts o = { .sync = QW_STORE_SYNC_NORMAL };
	uint8_t mk[QW_STORE_MASTER_KEY_BYTES];
	char path[256];
	struct qw_store *st;
	int err = 0;

	assert_int_equal(qw_rng_bytes(rng, mk, sizeof(mk)), 0);
	snprintf(path, sizeof(path), "%s/%s.db", dir, name);
	st = qw_store_open(path, mk, &o, &err);
	assert_int_equal(err, 0);
	assert_non_null(st);
	return st;
}

static void store_hop(struct qw_relay_msg *m, struct qw_store *tx, const char *tx_peer,
		      struct qw_store *rx, const char *rx_peer, struct qw_relay_mac *txm,
		      struct qw_relay_mac *rxm, const uint8_t *plain, size_t len, uint8_t *out,
		      int tamper, int want)
{
	uint8_t pad[4096];
	struct qw_relay_msg r;
	struct qw_buf w;
	size_t n;
	int last;

	m->flags = qw_relay_mac_due(txm) ? QW_RELAY_F_NEWKEY : 0;
	n = qw_relay_hop_pad_bits(m) / 8;
	assert_true(n <= sizeof(pad));
	assert_int_equal(qw_store_pool_take(tx, tx_peer, 8 * n, NULL, pad, sizeof(pad), &m->pad_pos), 0);
	qw_buf_init(&w, 0);
	assert_int_equal(qw_relay_seal_hop(m, plain, len, pad, n, txm, &w), 0);
	qw_wipe(pad, sizeof(pad));
	if (tamper == 1)
		w.data[w.len - 20] ^= 0x40; /* ciphertext */
	if (tamper == 2)
		w.data[43] ^= 0x08;         /* pad position: bit offset */
	assert_int_equal(qw_relay_parse(w.data, w.len, &r), 0);
	qw_buf_free(&w);
	assert_int_equal(qw_relay_hop_check(&r, m->path[m->hop + 1], m->path[m->hop], &last), 0);
	n = qw_relay_hop_pad_bits(&r) / 8;
	if (tamper == 2) {
		assert_int_equal(qw_store_pool_take(rx, rx_peer, 8 * n, &r.pad_pos, pad, sizeof(pad),
						    NULL),
				 QW_ESTATE);
		qw_relay_msg_clear(&r);
		return;
	}
	assert_int_equal(qw_store_pool_take(rx, rx_peer, 8 * n, &r.pad_pos, pad, sizeof(pad), NULL),
			 0);
	assert_int_equal(qw_relay_open_hop(&r, pad, n, rxm, out, len), want);
	qw_wipe(pad, sizeof(pad));
	qw_relay_msg_clear(&r);
}

static void store_keys(struct qw_store *st, const char *far_end, uint64_t block,
		       const struct qw_relay_msg *m, const uint8_t *plain)
{
	const struct qw_relay_group *g = &m->groups[0];
	const char *slaves[QW_STORE_SLAVES_MAX];
	struct qw_store_key_req req;
	struct qw_uuid *got;

	for (uint32_t i = 0; i < g->n_slaves; i++)
		slaves[i] = g->slaves[i];
	assert_int_equal(qw_store_pool_append(st, far_end, block, plain,
					      qw_relay_payload_bits(m)),
			 0);
	memset(&req, 0, sizeof(req));
	req.peer = far_end;
	req.size_bits = g->size_bits;
	req.master_sae = g->master;
	req.slave_saes = slaves;
	req.n_slaves = g->n_slaves;
	req.key_ids = g->ids;
	got = malloc(g->count * sizeof(*got));
	assert_non_null(got);
	assert_int_equal(qw_store_key_create(st, &req, g->count, got, NULL), 0);
	assert_memory_equal(got, g->ids, g->count * sizeof(*got));
	free(got);
}

static void assert_taken(struct qw_store *st, const char *peer, uint64_t want)
{
	struct qw_store_stats s;

	assert_int_equal(qw_store_stats(st, peer, &s), 0);
	assert_int_equal(s.bits_taken, want);
	assert_int_equal(s.bits_in, s.bits_taken + s.bits_keyed + s.bits_dropped + s.bits_available);
}

static void test_relay_with_store(void **state)
{
	char dir[] = "/tmp/qw_relay_XXXXXX";
	struct qw_store *A, *B, *C;
	struct qw_relay_mac ab_tx, ab_rx, bc_tx, bc_rx;
	struct qw_relay_msg m;
	uint8_t *keys, *mid, *out, block[8192];
	size_t len;
	uint64_t per_hop;
	struct qw_store_pos pb, pc;

	(void)state;
	assert_non_null(mkdtemp(dir));
	A = open_node(dir, "A");
	B = open_node(dir, "B");
	C = open_node(dir, "C");
	/* the two links' pools: the same block at both ends */
	assert_int_equal(qw_rng_bytes(rng, block, sizeof(block)), 0);
	assert_int_equal(qw_store_pool_append(A, "B", 1, block, 8 * sizeof(block)), 0);
	assert_int_equal(qw_store_pool_append(B, "A", 1, block, 8 * sizeof(block)), 0);
	assert_int_equal(qw_rng_bytes(rng, block, sizeof(block)), 0);
	assert_int_equal(qw_store_pool_append(B, "C", 1, block, 8 * sizeof(block)), 0);
	assert_int_equal(qw_store_pool_append(C, "B", 1, block, 8 * sizeof(block)), 0);
	qw_wipe(block, sizeof(block));
	qw_relay_mac_init(&ab_tx, QW_RELAY_REKEY_DEFAULT);
	qw_relay_mac_init(&ab_rx, QW_RELAY_REKEY_DEFAULT);
	qw_relay_mac_init(&bc_tx, QW_RELAY_REKEY_DEFAULT);
	qw_relay_mac_init(&bc_rx, QW_RELAY_REKEY_DEFAULT);

	/* ten 256-bit keys for sae-a at A and sae-c at C */
	qw_relay_msg_init(&m);
	{
		const char *path[] = { "A", "B", "C" };
		struct qw_relay_group g;
		struct qw_uuid ids[10];

		assert_int_equal(qw_relay_msg_set_path(&m, path, 3), 0);
		memset(&g, 0, sizeof(g));
		g.size_bits = 256;
		g.count = 10;
		strcpy(g.master, "sae-a");
		g.n_slaves = 1;
		strcpy(g.slaves[0], "sae-c");
		for (int i = 0; i < 10; i++)
			assert_int_equal(qw_uuid_generate(&ids[i]), 0);
		g.ids = ids;
		assert_int_equal(qw_relay_msg_add_group(&m, &g), 0);
	}
	assert_int_equal(qw_uuid_generate(&m.relay_id), 0);
	len = qw_relay_payload_bits(&m) / 8;
	keys = malloc(len);
	mid = malloc(len);
	out = malloc(len);
	assert_true(keys && mid && out);
	assert_int_equal(qw_rng_bytes(rng, keys, len), 0);
	store_keys(A, "C", 1, &m, keys);

	m.hop = 0;
	store_hop(&m, A, "B", B, "A", &ab_tx, &ab_rx, keys, len, mid, 0, 0);
	m.hop = 1;
	store_hop(&m, B, "C", C, "B", &bc_tx, &bc_rx, mid, len, out, 0, 0);
	qw_wipe(mid, len);
	store_keys(C, "A", 1, &m, out);
	{
		uint8_t got[320];
		size_t glen;

		assert_int_equal(qw_store_key_deliver_many(C, m.groups[0].ids, 10, "sae-c", got,
							   sizeof(got), &glen, NULL),
				 0);
		assert_int_equal(glen, len);
		assert_memory_equal(got, keys, len);
		assert_int_equal(qw_store_key_deliver_many(A, m.groups[0].ids, 10, "sae-a", got,
							   sizeof(got), &glen, NULL),
				 0);
		assert_memory_equal(got, keys, len);
		qw_wipe(got, sizeof(got));
	}
	/* formula (1), first relay draws the hash key */
	per_hop = 8 * len + 128 + 128;
	assert_taken(A, "B", per_hop);
	assert_taken(B, "A", per_hop);
	assert_taken(B, "C", per_hop);
	assert_taken(C, "B", per_hop);

	/* second relay, tampered on hop 1: QW_EAUTH, no plaintext, the
	 * pools of B-C still in step (both ends took the same bits) */
	assert_int_equal(qw_uuid_generate(&m.relay_id), 0);
	m.hop = 0;
	store_hop(&m, A, "B", B, "A", &ab_tx, &ab_rx, keys, len, mid, 0, 0);
	m.hop = 1;
	memset(out, 0xA5, len);
	store_hop(&m, B, "C", C, "B", &bc_tx, &bc_rx, mid, len, out, 1, QW_EAUTH);
	for (size_t i = 0; i < len; i++)
		assert_int_equal(out[i], 0xA5);
	assert_taken(A, "B", 2 * per_hop - 128);
	assert_taken(B, "C", 2 * per_hop - 128);
	assert_taken(C, "B", 2 * per_hop - 128);
	assert_int_equal(qw_store_pool_cursor(B, "C", &pb), 0);
	assert_int_equal(qw_store_pool_cursor(C, "B", &pc), 0);
	assert_int_equal(pb.block_id, pc.block_id);
	assert_int_equal(pb.bit, pc.bit);
	/* C forgot its hash key; B learns it from the NACK */
	assert_null(bc_rx.wc);
	qw_relay_mac_reset(&bc_tx);
	/* third relay, the stated position altered on hop 1: the store
	 * refuses the take, nothing is consumed at C */
	assert_int_equal(qw_uuid_generate(&m.relay_id), 0);
	m.hop = 1;
	store_hop(&m, B, "C", C, "B", &bc_tx, &bc_rx, mid, len, out, 2, 0);
	assert_taken(C, "B", 2 * per_hop - 128);

	qw_relay_mac_reset(&ab_tx);
	qw_relay_mac_reset(&ab_rx);
	qw_relay_mac_reset(&bc_tx);
	qw_relay_mac_reset(&bc_rx);
	qw_free_secret(keys, len);
	qw_free_secret(mid, len);
	qw_free_secret(out, len);
	qw_relay_msg_clear(&m);
	qw_store_close(A);
	qw_store_close(B);
	qw_store_close(C);
	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		assert_int_equal(system(cmd), 0);
	}
}

static void test_pad_messages(void **state)
{
	struct qw_relay_pad a, b;
	struct qw_buf w;

	(void)state;
	memset(&a, 0, sizeof(a));
	assert_int_equal(qw_uuid_generate(&a.relay_id), 0);
	a.bits = 2560 + 256;
	a.pos.block_id = 99;
	a.pos.bit = 4096;
	for (int grant = 0; grant < 2; grant++) {
		qw_buf_init(&w, 0);
		assert_int_equal(qw_relay_pad_encode(&a, grant, &w), 0);
		assert_int_equal(w.len, grant ? QW_RELAY_PAD_GRANT_BYTES : QW_RELAY_PAD_REQ_BYTES);
		memset(&b, 0, sizeof(b));
		assert_int_equal(qw_relay_pad_parse(w.data, w.len, grant, &b), 0);
		assert_memory_equal(&b.relay_id, &a.relay_id, sizeof(a.relay_id));
		assert_int_equal(b.bits, a.bits);
		assert_int_equal(b.pos.block_id, grant ? 99 : 0);
		assert_int_equal(b.pos.bit, grant ? 4096 : 0);
		/* a request is not a grant and vice versa */
		assert_int_equal(qw_relay_pad_parse(w.data, w.len, !grant, &b), QW_EPARSE);
		w.data[w.len - 1 - (grant ? 16 : 0)] |= 1; /* bits not a multiple of 8 */
		assert_int_equal(qw_relay_pad_parse(w.data, w.len, grant, &b), QW_EPARSE);
		qw_buf_free(&w);
	}
	a.bits = QW_RELAY_MAX_HOP_PAD_BITS + 8;
	qw_buf_init(&w, 0);
	assert_int_equal(qw_relay_pad_encode(&a, 0, &w), QW_EINVAL);
	a.bits = 0;
	assert_int_equal(qw_relay_pad_encode(&a, 0, &w), QW_EINVAL);
	a.bits = 8;
	a.pos.block_id = UINT64_C(1) << 63;
	assert_int_equal(qw_relay_pad_encode(&a, 1, &w), QW_EINVAL);
	assert_int_equal(qw_relay_pad_encode(&a, 0, &w), 0);
	qw_buf_free(&w);
}

static void test_replay_window(void **state)
{
	struct qw_relay_replay *r = qw_relay_replay_new(4, 1000);
	struct qw_uuid id[8];

	(void)state;
	assert_non_null(r);
	assert_null(qw_relay_replay_new(0, 1000));
	assert_null(qw_relay_replay_new(4, 0));
	for (int i = 0; i < 8; i++)
		assert_int_equal(qw_uuid_generate(&id[i]), 0);
	assert_int_equal(qw_relay_replay_check(r, &id[0], 10000, 10000), 0);
	assert_int_equal(qw_relay_replay_check(r, &id[0], 10000, 10001), QW_EEXIST);
	/* too old, too far in the future */
	assert_int_equal(qw_relay_replay_check(r, &id[1], 8999, 10000), QW_ERANGE);
	assert_int_equal(qw_relay_replay_check(r, &id[1], 11001, 10000), QW_ERANGE);
	for (int i = 1; i < 4; i++)
		assert_int_equal(qw_relay_replay_check(r, &id[i], 10000 + i, 10010), 0);
	assert_int_equal(qw_relay_replay_count(r), 4);
	/* full of young ids: refuse rather than forget one */
	assert_int_equal(qw_relay_replay_check(r, &id[4], 10020, 10020), QW_EAGAIN);
	for (int i = 0; i < 4; i++)
		assert_int_equal(qw_relay_replay_check(r, &id[i], 10000 + i, 10500), QW_EEXIST);
	/* once id[0] is older than max_age it can go: its replays fail the
	 * created check */
	assert_int_equal(qw_relay_replay_check(r, &id[4], 11001, 11001), 0);
	assert_int_equal(qw_relay_replay_check(r, &id[0], 10000, 11001), QW_ERANGE);
	assert_int_equal(qw_relay_replay_check(r, &id[4], 11001, 11002), QW_EEXIST);
	/* much later, everything expired */
	assert_int_equal(qw_relay_replay_check(r, &id[5], 50000, 50000), 0);
	assert_int_equal(qw_relay_replay_count(r), 1);
	qw_relay_replay_free(r);

	/* a larger window with many ids: no false positives, all replays caught */
	r = qw_relay_replay_new(5000, 60000);
	assert_non_null(r);
	{
		struct qw_uuid *ids = malloc(5000 * sizeof(*ids));

		assert_non_null(ids);
		for (int i = 0; i < 5000; i++) {
			assert_int_equal(qw_uuid_generate(&ids[i]), 0);
			assert_int_equal(qw_relay_replay_check(r, &ids[i], 1000 + i, 1000 + i), 0);
		}
		for (int i = 0; i < 5000; i++)
			assert_int_equal(qw_relay_replay_check(r, &ids[i], 1000 + i, 7000),
					 QW_EEXIST);
		free(ids);
	}
	qw_relay_replay_free(r);
}

static int setup(void **state)
{
	(void)state;
	rng = qw_rng_new_seeded(20261121);
	return rng ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	qw_rng_free(rng);
	return 0;
}

/* The ID encoding shared by KM-link, RELAY and LSA bodies (kmlink.h). */
static void test_id_codec(void **state)
{
	char id65[66], out[QW_KMLINK_ID_MAX + 1];
	struct qw_reader r;
	struct qw_buf b;
	static const uint8_t nul[] = { 3, 'a', 0, 'b' }, bad[] = { 2, 'a', '/' },
			     empty[] = { 0 }, longer[] = { 65 }, shorter[] = { 4, 'a', 'b' };

	(void)state;
	qw_buf_init(&b, 0);
	assert_int_equal(qw_kmlink_id_write(&b, "node-1.x_Y", 0), 0);
	assert_int_equal(qw_kmlink_id_write(&b, "", 1), 0);
	assert_int_equal(b.len, 1 + 10 + 1);
	assert_int_equal(b.data[0], 10);
	assert_int_equal(b.data[11], 0);
	/* refused, nothing appended */
	memset(id65, 'a', 65);
	id65[65] = 0;
	assert_int_equal(qw_kmlink_id_write(&b, "", 0), QW_EINVAL);
	assert_int_equal(qw_kmlink_id_write(&b, id65, 0), QW_EINVAL);
	assert_int_equal(qw_kmlink_id_write(&b, "a b", 1), QW_EINVAL);
	assert_int_equal(b.len, 12);
	qw_reader_init(&r, b.data, b.len);
	assert_int_equal(qw_kmlink_id_read(&r, out, 0), 0);
	assert_string_equal(out, "node-1.x_Y");
	assert_int_equal(qw_kmlink_id_read(&r, out, 1), 0);
	assert_string_equal(out, "");
	assert_int_equal(qw_reader_remaining(&r), 0);
	qw_buf_free(&b);
	/* length 0 only where allowed; NUL or other characters; over 64; short */
	qw_reader_init(&r, empty, sizeof(empty));
	assert_int_equal(qw_kmlink_id_read(&r, out, 0), QW_EPARSE);
	qw_reader_init(&r, nul, sizeof(nul));
	assert_int_equal(qw_kmlink_id_read(&r, out, 1), QW_EPARSE);
	qw_reader_init(&r, bad, sizeof(bad));
	assert_int_equal(qw_kmlink_id_read(&r, out, 0), QW_EPARSE);
	qw_reader_init(&r, longer, sizeof(longer));
	assert_int_equal(qw_kmlink_id_read(&r, out, 0), QW_EPARSE);
	qw_reader_init(&r, shorter, sizeof(shorter));
	assert_int_equal(qw_kmlink_id_read(&r, out, 0), QW_EPARSE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_hops),
		cmocka_unit_test(test_hops_independent_ciphertext),
		cmocka_unit_test(test_tamper_every_bit),
		cmocka_unit_test(test_recover_after_eauth),
		cmocka_unit_test(test_seal_state),
		cmocka_unit_test(test_efficiency),
		cmocka_unit_test(test_parse_round_trip),
		cmocka_unit_test(test_parse_malformed),
		cmocka_unit_test(test_hop_check),
		cmocka_unit_test(test_ack),
		cmocka_unit_test(test_pad_messages),
		cmocka_unit_test(test_relay_with_store),
		cmocka_unit_test(test_replay_window),
		cmocka_unit_test(test_id_codec),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
