/* Link-state routing and authorization (include/qwave/routing.h): LSA wire
 * round trips and malformed input; flooding on simulated networks (every
 * LSA goes through the encoder and the parser) converges to equal
 * databases; a killed node is routed around at once and ages out within
 * max_age; alarmed and empty links are avoided; a restarted node
 * re-establishes its sequence numbers; metro ring and chain paths, k
 * paths, avoid lists; policy rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/rng.h"
#include "qwave/routing.h"

/* ---- simulated network ----------------------------------------------------- */

enum { MAXN = 16 };

struct msg {
	int to, from;
	struct qw_buf wire;
};

struct net {
	int n;
	char name[MAXN][16];
	struct qw_route_db *db[MAXN];
	int adj[MAXN][MAXN];
	int alive[MAXN];
	int was_up[MAXN][MAXN];
	uint64_t pool[MAXN][MAXN];
	int alarm[MAXN][MAXN];
	struct msg *q;
	size_t qh, qn, qcap;
	uint64_t sent;
};

static int idx_of(const struct net *net, const char *name)
{
	for (int i = 0; i < net->n; i++)
		if (!strcmp(net->name[i], name))
			return i;
	fail_msg("unknown node %s", name);
	return -1;
}

static void send_lsa(struct net *net, int from, int to, const struct qw_lsa *l)
{
	struct msg *m;

	if (net->qn == net->qcap) {
		net->qcap = net->qcap ? 2 * net->qcap : 64;
		net->q = realloc(net->q, net->qcap * sizeof(*net->q));
		assert_non_null(net->q);
	}
	m = &net->q[net->qn++];
	m->to = to;
	m->from = from;
	qw_buf_init(&m->wire, 0);
	assert_int_equal(qw_lsa_encode(l, &m->wire), 0);
	net->sent++;
}

static void handle_out(struct net *net, int i, const struct qw_route_out *out,
		       const struct qw_lsa *fwd)
{
	for (size_t k = 0; k < out->n_fwd; k++)
		send_lsa(net, i, idx_of(net, out->fwd[k]), fwd);
	if (out->originate) {
		const struct qw_lsa *own = qw_route_db_own(net->db[i]);

		for (uint16_t k = 0; k < own->n_links; k++)
			if (own->links[k].flags & QW_ROUTE_LINK_UP)
				send_lsa(net, i, idx_of(net, own->links[k].peer), own);
	}
}

static int link_up(const struct net *net, int i, int j)
{
	return net->adj[i][j] && net->alive[i] && net->alive[j];
}

/* Node i reports its links as the KM would: a KM link is up when both ends
 * run. A link that just came up gets the whole database (the exchange at
 * adjacency). */
static void report_links(struct net *net, int i, int64_t now)
{
	struct qw_route_link links[MAXN];
	struct qw_route_out out;
	size_t n = 0;

	if (!net->alive[i])
		return;
	memset(links, 0, sizeof(links));
	for (int j = 0; j < net->n; j++) {
		if (!net->adj[i][j])
			continue;
		strcpy(links[n].peer, net->name[j]);
		links[n].flags = (uint8_t)((link_up(net, i, j) ? QW_ROUTE_LINK_UP : 0) |
					   (net->alarm[i][j] ? QW_ROUTE_LINK_ALARM : 0));
		links[n].pool_bits = net->pool[i][j];
		links[n].key_rate_bps = 1000;
		links[n].qber_ppm = net->alarm[i][j] ? 150000 : 20000;
		n++;
	}
	assert_int_equal(qw_route_db_set_links(net->db[i], links, n, now, &out), 0);
	handle_out(net, i, &out, NULL);
	for (int j = 0; j < net->n; j++) {
		int up = link_up(net, i, j);

		if (up && !net->was_up[i][j])
			for (size_t k = 0; k < qw_route_db_count(net->db[i]); k++)
				send_lsa(net, i, j, qw_route_db_get(net->db[i], k));
		net->was_up[i][j] = up;
	}
}

static void deliver_all(struct net *net, int64_t now)
{
	while (net->qh < net->qn) {
		struct msg m = net->q[net->qh++];
		struct qw_route_out out;
		struct qw_lsa l;
		int ret;

		if (net->alive[m.to] && link_up(net, m.from, m.to)) {
			assert_int_equal(qw_lsa_parse(m.wire.data, m.wire.len, &l), 0);
			ret = qw_route_db_receive(net->db[m.to], &l, net->name[m.from], now, &out);
			assert_true(ret == 0 || ret == 1);
			handle_out(net, m.to, &out, &l);
		}
		qw_buf_free(&m.wire);
	}
	net->qh = net->qn = 0;
}

/* Run the network from t0 to t1 in 100 ms steps: timers, then every
 * message sent in the step is delivered within it (flooding is fast
 * compared with the timers). */
static void run(struct net *net, int64_t t0, int64_t t1)
{
	for (int64_t t = t0; t <= t1; t += 100) {
		for (int i = 0; i < net->n; i++) {
			struct qw_route_out out;

			if (!net->alive[i])
				continue;
			(void)qw_route_db_tick(net->db[i], t, &out);
			handle_out(net, i, &out, NULL);
		}
		deliver_all(net, t);
	}
}

static void net_init(struct net *net, int n, const char *prefix)
{
	memset(net, 0, sizeof(*net));
	net->n = n;
	for (int i = 0; i < n; i++) {
		snprintf(net->name[i], sizeof(net->name[i]), "%s%d", prefix, i);
		net->alive[i] = 1;
		net->db[i] = qw_route_db_new(net->name[i], 1000 + (uint64_t)i, NULL);
		assert_non_null(net->db[i]);
	}
}

static void net_link(struct net *net, int a, int b, uint64_t pool)
{
	net->adj[a][b] = net->adj[b][a] = 1;
	net->pool[a][b] = net->pool[b][a] = pool;
}

static void net_start(struct net *net, int64_t now)
{
	for (int i = 0; i < net->n; i++)
		report_links(net, i, now);
	deliver_all(net, now);
}

static void net_free(struct net *net)
{
	for (int i = 0; i < net->n; i++)
		qw_route_db_free(net->db[i]);
	for (size_t k = net->qh; k < net->qn; k++)
		qw_buf_free(&net->q[k].wire);
	free(net->q);
}

/* Every live node holds the same LSA (origin, seq, links) for every live
 * node, and none for a dead one. */
static void assert_converged(const struct net *net)
{
	int live = 0;

	for (int i = 0; i < net->n; i++)
		live += net->alive[i];
	for (int i = 0; i < net->n; i++) {
		if (!net->alive[i])
			continue;
		assert_int_equal(qw_route_db_count(net->db[i]), live);
		for (int j = 0; j < net->n; j++) {
			const struct qw_lsa *mine = qw_route_db_find(net->db[j], net->name[j]);
			const struct qw_lsa *seen = qw_route_db_find(net->db[i], net->name[j]);

			if (!net->alive[j]) {
				assert_null(seen);
				continue;
			}
			assert_non_null(seen);
			assert_int_equal(seen->seq, mine->seq);
			assert_int_equal(seen->n_links, mine->n_links);
			assert_memory_equal(seen->links, mine->links,
					    mine->n_links * sizeof(mine->links[0]));
		}
	}
}

static void assert_path(const struct qw_route_db *db, const char *src, const char *dst,
			uint64_t need, const char *want)
{
	struct qw_route_path p;
	char got[256] = "";
	int ret = qw_route_path(db, src, dst, need, NULL, &p);

	if (!want) {
		assert_int_equal(ret, QW_ENOTFOUND);
		return;
	}
	assert_int_equal(ret, 0);
	for (size_t i = 0; i < p.n; i++) {
		strcat(got, p.nodes[i]);
		if (i + 1 < p.n)
			strcat(got, " ");
	}
	assert_string_equal(got, want);
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_lsa_wire(void **state)
{
	struct qw_lsa l, p;
	struct qw_buf w, w2;

	(void)state;
	memset(&l, 0, sizeof(l));
	strcpy(l.origin, "node-a");
	l.seq = UINT64_C(1763700000123);
	l.n_links = 3;
	for (int i = 0; i < 3; i++) {
		snprintf(l.links[i].peer, sizeof(l.links[i].peer), "peer.%d", i);
		l.links[i].flags = (uint8_t)i;
		l.links[i].pool_bits = UINT64_MAX - (uint64_t)i;
		l.links[i].key_rate_bps = 12345 * (uint64_t)i;
		l.links[i].qber_ppm = 1000000 - (uint32_t)i;
	}
	qw_buf_init(&w, 0);
	qw_buf_init(&w2, 0);
	assert_int_equal(qw_lsa_encode(&l, &w), 0);
	assert_int_equal(w.len, 12 + 7 + 3 * (7 + 1 + 8 + 8 + 4));
	assert_int_equal(qw_lsa_parse(w.data, w.len, &p), 0);
	assert_memory_equal(&p, &l, sizeof(l));
	assert_int_equal(qw_lsa_encode(&p, &w2), 0);
	assert_memory_equal(w2.data, w.data, w.len);
	for (size_t cut = 0; cut < w.len; cut++)
		assert_int_equal(qw_lsa_parse(w.data, cut, &p), QW_EPARSE);
#define MUTATE(off, val)                                                               \
	do {                                                                           \
		uint8_t old_ = w.data[off];                                            \
		w.data[off] = (uint8_t)(val);                                          \
		assert_int_equal(qw_lsa_parse(w.data, w.len, &p), QW_EPARSE);          \
		w.data[off] = old_;                                                    \
	} while (0)
	MUTATE(0, 2);          /* version */
	MUTATE(1, 1);          /* reserved */
	MUTATE(3, 4);          /* more links than present */
	MUTATE(3, 2);          /* fewer: trailing bytes */
	MUTATE(2, 1);          /* 259 links */
	MUTATE(12, 0);         /* empty origin */
	MUTATE(13, '*');       /* bad character */
	MUTATE(19 + 1, '/');   /* bad peer character */
	MUTATE(19 + 7, 4);     /* unknown link flag */
	MUTATE(19 + 24, 0x10); /* qber > 10^6 ppm */
	/* seq 0 */
	{
		struct qw_buf z;

		qw_buf_init(&z, 0);
		l.seq = 0;
		assert_int_equal(qw_lsa_encode(&l, &z), QW_EINVAL);
		l.seq = 1;
		/* a link to itself, and a repeated peer */
		strcpy(l.links[1].peer, "node-a");
		assert_int_equal(qw_lsa_encode(&l, &z), QW_EINVAL);
		strcpy(l.links[1].peer, "peer.0");
		assert_int_equal(qw_lsa_encode(&l, &z), QW_EINVAL);
		assert_int_equal(z.len, 0);
		qw_buf_free(&z);
	}
	/* peer.1 -> peer.0 in the wire: a repeated peer */
	w.data[19 + 28 + 6] = '0';
	assert_int_equal(qw_lsa_parse(w.data, w.len, &p), QW_EPARSE);
#undef MUTATE
	qw_buf_free(&w);
	qw_buf_free(&w2);
}

/* 12 nodes: a ring with chords. All databases equal after the first
 * flood; the periodic refresh keeps them equal; each LSA crosses each link
 * at most twice per origination (once each way), so a flood costs
 * O(links) messages. */
static void test_flood_converges(void **state)
{
	struct net net;
	uint64_t before;
	const int n = 12;
	int nlinks = 0;

	(void)state;
	net_init(&net, n, "q");
	for (int i = 0; i < n; i++) {
		net_link(&net, i, (i + 1) % n, 100000);
		nlinks++;
	}
	for (int i = 0; i < n; i += 3) {
		net_link(&net, i, (i + 5) % n, 50000);
		nlinks++;
	}
	net_start(&net, 0);
	assert_converged(&net);
	/* one refresh round: every node re-originates once */
	before = net.sent;
	run(&net, 1000, 1000);
	assert_converged(&net);
	assert_true(net.sent - before <= (uint64_t)n * 2 * nlinks);
	assert_true(net.sent - before >= (uint64_t)n * nlinks);
	run(&net, 1100, 10000);
	assert_converged(&net);
	/* a pool level change that crosses no mark waits for the refresh */
	net.pool[0][1] = net.pool[1][0] = 99999;
	before = net.sent;
	report_links(&net, 0, 10050);
	assert_int_equal(net.sent, before);
	run(&net, 10100, 11100);
	assert_string_equal(qw_route_db_find(net.db[7], "q0")->links[0].peer, "q1");
	assert_int_equal(qw_route_db_find(net.db[7], "q0")->links[0].pool_bits, 99999);
	assert_converged(&net);
	net_free(&net);
}

/* Kill node c1 of a ring: its neighbours notice the KM links drop and flood
 * at once, so paths avoid it at once; its own LSA is gone everywhere within
 * max_age (4 s) + one tick; a late copy cannot bring it back. */
static void test_dead_node(void **state)
{
	struct net net;
	struct qw_route_out out;
	struct qw_lsa stale;

	(void)state;
	net_init(&net, 5, "c");
	for (int i = 0; i < 5; i++)
		net_link(&net, i, (i + 1) % 5, 1u << 20);
	net_start(&net, 0);
	run(&net, 100, 2000);
	assert_converged(&net);
	assert_path(net.db[0], "c0", "c2", 256, "c0 c1 c2");
	stale = *qw_route_db_find(net.db[0], "c1");

	net.alive[1] = 0;
	report_links(&net, 0, 2050);
	report_links(&net, 2, 2050);
	deliver_all(&net, 2050);
	for (int i = 0; i < 5; i++)
		if (i != 1) {
			assert_non_null(qw_route_db_find(net.db[i], "c1"));
			assert_path(net.db[i], "c0", "c2", 256, "c0 c4 c3 c2");
			assert_path(net.db[i], "c0", "c1", 256, NULL);
			/* c1's own LSA still says its links are up: the
			 * two-way check ignores it */
			assert_path(net.db[i], "c1", "c2", 256, NULL);
			assert_path(net.db[i], "c2", "c0", 256, "c2 c3 c4 c0");
		}
	run(&net, 2100, 2000 + QW_ROUTE_MAX_AGE_MS);
	assert_non_null(qw_route_db_find(net.db[3], "c1"));
	run(&net, 2100 + QW_ROUTE_MAX_AGE_MS, 2200 + QW_ROUTE_MAX_AGE_MS);
	assert_converged(&net);
	/* a copy of its last LSA arriving late is refused */
	assert_int_equal(qw_route_db_receive(net.db[3], &stale, "c4", 6300, &out), 0);
	assert_null(qw_route_db_find(net.db[3], "c1"));
	/* node c1 comes back with a new life (higher first seq, as Unix ms) */
	qw_route_db_free(net.db[1]);
	net.db[1] = qw_route_db_new("c1", stale.seq + 100000, NULL);
	assert_non_null(net.db[1]);
	net.alive[1] = 1;
	for (int i = 0; i < 5; i++)
		report_links(&net, i, 9000);
	deliver_all(&net, 9000);
	run(&net, 9100, 12000);
	assert_converged(&net);
	assert_path(net.db[0], "c0", "c2", 256, "c0 c1 c2");
	net_free(&net);
}

/* A node that restarts with a sequence number below its previous life's
 * gets its old LSA back in the database exchange and jumps past it. */
static void test_restart_low_seq(void **state)
{
	struct net net;
	uint64_t old;

	(void)state;
	net_init(&net, 3, "r");
	net_link(&net, 0, 1, 1000);
	net_link(&net, 1, 2, 1000);
	net_start(&net, 0);
	run(&net, 100, 5000);
	assert_converged(&net);
	old = qw_route_db_own(net.db[2])->seq;
	/* restart within max_age: the others still hold the old LSA */
	qw_route_db_free(net.db[2]);
	net.db[2] = qw_route_db_new("r2", 1, NULL);
	memset(net.was_up[1], 0, sizeof(net.was_up[1]));
	memset(net.was_up[2], 0, sizeof(net.was_up[2]));
	report_links(&net, 2, 5050);
	report_links(&net, 1, 5050);
	deliver_all(&net, 5050);
	assert_true(qw_route_db_own(net.db[2])->seq > old);
	run(&net, 5100, 6000);
	assert_converged(&net);
	net_free(&net);
}

/* Metro ring A-B-C-D-A with the cross link A-C. */
static void test_metro_ring(void **state)
{
	struct net net;
	struct qw_route_path ps[QW_ROUTE_MAX_K];
	size_t np;
	enum { A, B, C, D };

	(void)state;
	net_init(&net, 4, "m");
	/* names m0..m3 = A..D */
	net_link(&net, A, B, 40000);
	net_link(&net, B, C, 90000);
	net_link(&net, C, D, 80000);
	net_link(&net, D, A, 60000);
	net_link(&net, A, C, 70000);
	net_start(&net, 0);
	run(&net, 100, 1000);
	assert_converged(&net);
	for (int i = 0; i < 4; i++) {
		const struct qw_route_db *db = net.db[i];

		assert_path(db, "m0", "m2", 256, "m0 m2");   /* cross link */
		assert_path(db, "m1", "m3", 256, "m1 m2 m3"); /* bottleneck 80000 > 40000 */
		assert_path(db, "m0", "m0", 256, "m0");
	}
	/* two 2-hop paths A -> C -> ... ; B -> D: k paths in order */
	assert_int_equal(qw_route_paths(net.db[1], "m1", "m3", 256, 4, ps, &np), 0);
	assert_int_equal(np, 4);
	assert_int_equal(ps[0].n, 3);
	assert_int_equal(ps[0].bottleneck_bits, 80000);
	assert_string_equal(ps[1].nodes[1], "m0");   /* B A D: bottleneck 40000 */
	assert_int_equal(ps[1].n, 3);
	assert_int_equal(ps[1].bottleneck_bits, 40000);
	/* then the two 3-hop ones: B C A D (60000) before B A C D (40000) */
	assert_int_equal(ps[2].n, 4);
	assert_int_equal(ps[2].bottleneck_bits, 60000);
	assert_string_equal(ps[2].nodes[1], "m2");
	assert_string_equal(ps[2].nodes[2], "m0");
	assert_int_equal(ps[3].n, 4);
	assert_int_equal(ps[3].bottleneck_bits, 40000);
	/* k larger than the number of loopless paths */
	assert_int_equal(qw_route_paths(net.db[1], "m1", "m3", 256, 8, ps, &np), 0);
	assert_int_equal(np, 4);
	/* need more than B-C and A-B hold except B-C: only via C */
	assert_path(net.db[1], "m1", "m3", 50000, "m1 m2 m3");
	assert_path(net.db[1], "m1", "m0", 50000, "m1 m2 m0");
	assert_path(net.db[1], "m1", "m3", 95000, NULL);

	/* QBER alarm on C-D (reported by C only is enough) */
	net.alarm[C][D] = 1;
	report_links(&net, C, 1050);
	deliver_all(&net, 1050);
	for (int i = 0; i < 4; i++) {
		assert_path(net.db[i], "m1", "m3", 256, "m1 m0 m3");
		/* a link is usable in neither direction when either end
		 * reports the alarm */
		assert_path(net.db[i], "m3", "m1", 256, "m3 m0 m1");
		assert_path(net.db[i], "m3", "m2", 256, "m3 m0 m2");
	}
	/* and the pool of A-D runs empty: D only through... nothing */
	net.pool[A][D] = net.pool[D][A] = 0;
	report_links(&net, A, 1060);
	report_links(&net, D, 1060);
	deliver_all(&net, 1060);
	for (int i = 0; i < 4; i++)
		assert_path(net.db[i], "m1", "m3", 256, NULL);
	/* the alarm clears: via C again */
	net.alarm[C][D] = 0;
	report_links(&net, C, 1070);
	deliver_all(&net, 1070);
	assert_path(net.db[3], "m1", "m3", 256, "m1 m2 m3");
	/* avoid list: the failed hop B-C, or node C */
	{
		const char *links[] = { "m2", "m1" }, *nodes[] = { "m2" };
		struct qw_route_avoid av = { .links = links, .n_links = 1 };
		struct qw_route_path p;

		assert_int_equal(qw_route_path(net.db[1], "m1", "m3", 256, &av, &p), 0);
		assert_int_equal(p.n, 4);
		assert_string_equal(p.nodes[1], "m0");
		assert_string_equal(p.nodes[2], "m2");
		av.n_links = 0;
		av.nodes = nodes;
		av.n_nodes = 1;
		assert_int_equal(qw_route_path(net.db[1], "m1", "m3", 256, &av, &p), QW_ENOTFOUND);
	}
	assert_path(net.db[1], "m1", "nowhere", 256, NULL);
	net_free(&net);
}

/* A chain of six: the only path, its sub-paths, a cut link. */
static void test_chain_of_six(void **state)
{
	struct net net;
	struct qw_route_path ps[2], p;
	size_t np;

	(void)state;
	net_init(&net, 6, "k");
	for (int i = 0; i + 1 < 6; i++)
		net_link(&net, i, i + 1, 10000 + 1000 * (uint64_t)i);
	net_start(&net, 0);
	run(&net, 100, 1500);
	assert_converged(&net);
	assert_int_equal(qw_route_path(net.db[5], "k0", "k5", 4096, NULL, &p), 0);
	assert_int_equal(p.n, 6);
	for (int i = 0; i < 6; i++) {
		char want[8];

		snprintf(want, sizeof(want), "k%d", i);
		assert_string_equal(p.nodes[i], want);
	}
	assert_int_equal(p.bottleneck_bits, 10000);
	assert_path(net.db[0], "k5", "k0", 256, "k5 k4 k3 k2 k1 k0");
	assert_path(net.db[0], "k2", "k4", 256, "k2 k3 k4");
	assert_path(net.db[0], "k0", "k5", 10001, NULL);
	assert_int_equal(qw_route_paths(net.db[0], "k0", "k5", 256, 2, ps, &np), 0);
	assert_int_equal(np, 1);
	/* the KM link k2-k3 drops */
	net.adj[2][3] = net.adj[3][2] = 0;
	report_links(&net, 2, 1550);
	report_links(&net, 3, 1550);
	deliver_all(&net, 1550);
	for (int i = 0; i < 6; i++) {
		assert_path(net.db[i], "k0", "k5", 256, NULL);
		assert_path(net.db[i], "k3", "k5", 256, "k3 k4 k5");
	}
	/* the two halves no longer hear each other: each forgets the other
	 * side within max_age */
	run(&net, 1600, 1600 + QW_ROUTE_MAX_AGE_MS + 200);
	assert_int_equal(qw_route_db_count(net.db[0]), 3);
	assert_int_equal(qw_route_db_count(net.db[5]), 3);
	assert_null(qw_route_db_find(net.db[0], "k4"));
	net_free(&net);
}

/* Database rules without a network. */
static void test_db_rules(void **state)
{
	struct qw_route_db *db;
	struct qw_route_opts o = { .refresh_ms = 500, .max_age_ms = 2000, .low_pool_bits = 4096 };
	struct qw_route_out out;
	struct qw_route_link links[2];
	struct qw_lsa l;
	uint64_t seq;

	(void)state;
	assert_null(qw_route_db_new("bad id", 1, NULL));
	assert_null(qw_route_db_new("x", 0, NULL));
	{
		struct qw_route_opts bad = { .refresh_ms = 3000, .max_age_ms = 2000 };

		assert_null(qw_route_db_new("x", 1, &bad));
	}
	db = qw_route_db_new("x", 10, &o);
	assert_non_null(db);
	assert_int_equal(qw_route_db_tick(db, 0, &out), 0);
	assert_int_equal(out.originate, 1);
	seq = qw_route_db_own(db)->seq;
	assert_int_equal(seq, 11);
	assert_int_equal(qw_route_db_tick(db, 400, &out), 0);
	assert_int_equal(out.originate, 0);
	assert_int_equal(qw_route_db_tick(db, 500, &out), 0);
	assert_int_equal(out.originate, 1);
	assert_int_equal(qw_route_db_own(db)->seq, 12);

	memset(links, 0, sizeof(links));
	strcpy(links[0].peer, "y");
	links[0].flags = QW_ROUTE_LINK_UP;
	links[0].pool_bits = 10000;
	strcpy(links[1].peer, "z");
	assert_int_equal(qw_route_db_set_links(db, links, 2, 600, &out), 0);
	assert_int_equal(out.originate, 1);
	/* above the low mark to above it: no flood; across it: flood */
	links[0].pool_bits = 5000;
	assert_int_equal(qw_route_db_set_links(db, links, 2, 610, &out), 0);
	assert_int_equal(out.originate, 0);
	links[0].pool_bits = 4000;
	assert_int_equal(qw_route_db_set_links(db, links, 2, 620, &out), 0);
	assert_int_equal(out.originate, 1);
	links[1].flags = QW_ROUTE_LINK_UP | QW_ROUTE_LINK_ALARM;
	assert_int_equal(qw_route_db_set_links(db, links, 2, 630, &out), 0);
	assert_int_equal(out.originate, 1);
	strcpy(links[1].peer, "x");
	assert_int_equal(qw_route_db_set_links(db, links, 2, 640, &out), QW_EINVAL);

	/* receive: newer accepted and forwarded to up neighbours except the
	 * sender; equal or older dropped */
	memset(&l, 0, sizeof(l));
	strcpy(l.origin, "w");
	l.seq = 5;
	assert_int_equal(qw_route_db_receive(db, &l, "z", 700, &out), 1);
	assert_int_equal(out.n_fwd, 1);
	assert_string_equal(out.fwd[0], "y");
	assert_int_equal(qw_route_db_receive(db, &l, "y", 700, &out), 0);
	assert_int_equal(out.n_fwd, 0);
	l.seq = 4;
	assert_int_equal(qw_route_db_receive(db, &l, "y", 700, &out), 0);
	l.seq = 6;
	assert_int_equal(qw_route_db_receive(db, &l, "y", 700, &out), 1);
	assert_int_equal(out.n_fwd, 1);
	assert_string_equal(out.fwd[0], "z");
	assert_int_equal(qw_route_db_count(db), 2);
	/* own LSA from a previous life */
	strcpy(l.origin, "x");
	l.seq = 1000;
	assert_int_equal(qw_route_db_receive(db, &l, "y", 710, &out), 0);
	assert_int_equal(out.originate, 1);
	assert_int_equal(qw_route_db_own(db)->seq, 1001);
	/* invalid */
	l.seq = 0;
	assert_int_equal(qw_route_db_receive(db, &l, "y", 710, &out), QW_EINVAL);
	/* ageing: w received at 700 lives until 2700 */
	assert_int_equal(qw_route_db_tick(db, 2700, &out), 0);
	assert_int_equal(qw_route_db_tick(db, 2701, &out), 1);
	assert_null(qw_route_db_find(db, "w"));
	strcpy(l.origin, "w");
	l.seq = 6;
	assert_int_equal(qw_route_db_receive(db, &l, "y", 2800, &out), 0);
	l.seq = 7; /* a new origination is welcome at once */
	assert_int_equal(qw_route_db_receive(db, &l, "y", 2800, &out), 1);
	qw_route_db_free(db);
}

/* Yen's k paths against brute force on random small networks: every
 * simple path src -> dst over usable links is enumerated; the k returned
 * paths must be distinct, loopless, made of usable links with enough key,
 * and their (hops, bottleneck) sequence must be the k best of the
 * enumeration in routing.h's order; the first must be qw_route_path's. */
enum { RN = 7 };

struct bf {
	uint64_t cap[RN][RN]; /* 0: no usable link */
	struct { size_t n; uint64_t b; } all[4096];
	size_t nall;
};

static void bf_dfs(struct bf *bf, int u, int dst, int *seen, size_t depth, uint64_t b)
{
	if (u == dst) {
		assert_true(bf->nall < 4096);
		bf->all[bf->nall].n = depth;
		bf->all[bf->nall].b = b;
		bf->nall++;
		return;
	}
	for (int v = 0; v < RN; v++) {
		if (!bf->cap[u][v] || seen[v])
			continue;
		seen[v] = 1;
		bf_dfs(bf, v, dst, seen, depth + 1, b < bf->cap[u][v] ? b : bf->cap[u][v]);
		seen[v] = 0;
	}
}

static int bf_cmp(const void *a, const void *b)
{
	const struct { size_t n; uint64_t b; } *x = a, *y = b;

	if (x->n != y->n)
		return x->n < y->n ? -1 : 1;
	return x->b > y->b ? -1 : x->b < y->b;
}

static void test_k_paths_brute_force(void **state)
{
	struct qw_rng *r = qw_rng_new_seeded(5);
	const uint64_t need = 1000;

	(void)state;
	assert_non_null(r);
	for (int trial = 0; trial < 300; trial++) {
		struct qw_route_db *db = qw_route_db_new("g0", 1, NULL);
		struct qw_lsa l[RN];
		struct bf bf;
		struct qw_route_path ps[QW_ROUTE_MAX_K], best;
		size_t np, k = 1 + qw_rng_below(r, QW_ROUTE_MAX_K);
		int seen[RN] = { 0 }, dst = 1 + (int)qw_rng_below(r, RN - 1);
		char dname[16];
		int ret;

		assert_non_null(db);
		memset(l, 0, sizeof(l));
		memset(&bf, 0, sizeof(bf));
		for (int i = 0; i < RN; i++) {
			snprintf(l[i].origin, sizeof(l[i].origin), "g%d", i);
			l[i].seq = 2;
		}
		for (int i = 0; i < RN; i++)
			for (int j = i + 1; j < RN; j++) {
				uint64_t pi, pj;
				uint8_t fi = QW_ROUTE_LINK_UP, fj = QW_ROUTE_LINK_UP;
				struct qw_route_link *a, *b;

				if (qw_rng_below(r, 100) < 45)
					continue;
				/* each end reports its own level; some links
				 * down or alarmed at one end, some short of key */
				pi = 500 + qw_rng_below(r, 4000);
				pj = pi - qw_rng_below(r, 300);
				if (qw_rng_below(r, 10) == 0)
					fi = 0;
				if (qw_rng_below(r, 10) == 0)
					fj |= QW_ROUTE_LINK_ALARM;
				a = &l[i].links[l[i].n_links++];
				b = &l[j].links[l[j].n_links++];
				strcpy(a->peer, l[j].origin);
				strcpy(b->peer, l[i].origin);
				a->flags = fi;
				b->flags = fj;
				a->pool_bits = pi;
				b->pool_bits = pj;
				if (fi == QW_ROUTE_LINK_UP && fj == QW_ROUTE_LINK_UP && pj >= need)
					bf.cap[i][j] = bf.cap[j][i] = pj;
			}
		assert_int_equal(qw_route_db_set_links(db, l[0].links, l[0].n_links, 0, NULL), 0);
		for (int i = 1; i < RN; i++)
			assert_int_equal(qw_route_db_receive(db, &l[i], NULL, 0, NULL), 1);
		seen[0] = 1;
		bf_dfs(&bf, 0, dst, seen, 1, UINT64_MAX);
		qsort(bf.all, bf.nall, sizeof(bf.all[0]), bf_cmp);
		snprintf(dname, sizeof(dname), "g%d", dst);
		ret = qw_route_paths(db, "g0", dname, need, k, ps, &np);
		if (bf.nall == 0) {
			assert_int_equal(ret, QW_ENOTFOUND);
			assert_int_equal(np, 0);
			assert_int_equal(qw_route_path(db, "g0", dname, need, NULL, &best),
					 QW_ENOTFOUND);
			qw_route_db_free(db);
			continue;
		}
		assert_int_equal(ret, 0);
		assert_int_equal(np, k < bf.nall ? k : bf.nall);
		assert_int_equal(qw_route_path(db, "g0", dname, need, NULL, &best), 0);
		assert_int_equal(best.n, ps[0].n);
		for (size_t i = 0; i < best.n; i++)
			assert_string_equal(best.nodes[i], ps[0].nodes[i]);
		for (size_t p = 0; p < np; p++) {
			uint64_t b = UINT64_MAX;
			int on[RN] = { 0 };

			assert_int_equal(ps[p].n, bf.all[p].n);
			assert_int_equal(ps[p].bottleneck_bits, bf.all[p].b);
			assert_string_equal(ps[p].nodes[0], "g0");
			assert_string_equal(ps[p].nodes[ps[p].n - 1], dname);
			for (size_t i = 0; i < ps[p].n; i++) {
				int u = ps[p].nodes[i][1] - '0';

				assert_int_equal(on[u], 0);
				on[u] = 1;
				if (i) {
					int w = ps[p].nodes[i - 1][1] - '0';

					assert_true(bf.cap[w][u] >= need);
					b = b < bf.cap[w][u] ? b : bf.cap[w][u];
				}
			}
			assert_int_equal(b, ps[p].bottleneck_bits);
			for (size_t q = 0; q < p; q++) {
				int same = ps[q].n == ps[p].n;

				for (size_t i = 0; same && i < ps[p].n; i++)
					same = !strcmp(ps[q].nodes[i], ps[p].nodes[i]);
				assert_false(same);
			}
		}
		qw_route_db_free(db);
	}
	qw_rng_free(r);
}

static void test_policy(void **state)
{
	struct qw_route_policy *p = qw_route_policy_new(0);

	(void)state;
	assert_non_null(p);
	/* default deny */
	assert_int_equal(qw_route_policy_check(p, "a", "b"), QW_EPERM);
	assert_int_equal(qw_route_policy_add_text(p, "deny  bank-*.test -> *"), 0);
	assert_int_equal(qw_route_policy_add_text(p, "allow bank-* <-> bank-*\n"), 0);
	assert_int_equal(qw_route_policy_add_text(p, "allow meter-* -> ksc"), 0);
	assert_int_equal(qw_route_policy_add(p, 1, "*", "audit", 0), 0);
	assert_int_equal(qw_route_policy_check(p, "bank-sh", "bank-bj"), 0);
	assert_int_equal(qw_route_policy_check(p, "bank-bj", "bank-sh"), 0);
	/* first match wins: the deny above the allow */
	assert_int_equal(qw_route_policy_check(p, "bank-x.test", "bank-bj"), QW_EPERM);
	/* ... but the reverse direction is not denied, and matches <-> */
	assert_int_equal(qw_route_policy_check(p, "bank-bj", "bank-x.test"), 0);
	assert_int_equal(qw_route_policy_check(p, "meter-17", "ksc"), 0);
	assert_int_equal(qw_route_policy_check(p, "ksc", "meter-17"), QW_EPERM);
	assert_int_equal(qw_route_policy_check(p, "meter-17", "ksc2"), QW_EPERM);
	assert_int_equal(qw_route_policy_check(p, "anyone", "audit"), 0);
	assert_int_equal(qw_route_policy_check(p, "bank", "bank-1"), QW_EPERM);
	/* malformed rules */
	assert_int_equal(qw_route_policy_add_text(p, "permit a -> b"), QW_EPARSE);
	assert_int_equal(qw_route_policy_add_text(p, "allow a => b"), QW_EPARSE);
	assert_int_equal(qw_route_policy_add_text(p, "allow a ->"), QW_EPARSE);
	assert_int_equal(qw_route_policy_add_text(p, "allow a -> b c"), QW_EPARSE);
	assert_int_equal(qw_route_policy_add_text(p, "allow a/b -> c"), QW_EPARSE);
	assert_int_equal(qw_route_policy_add_text(p, ""), QW_EPARSE);
	assert_int_equal(qw_route_policy_add(p, 1, "", "b", 0), QW_EINVAL);
	qw_route_policy_free(p);

	/* default allow with one deny */
	p = qw_route_policy_new(1);
	assert_non_null(p);
	assert_int_equal(qw_route_policy_add_text(p, "deny guest* <-> *"), 0);
	assert_int_equal(qw_route_policy_check(p, "a", "b"), 0);
	assert_int_equal(qw_route_policy_check(p, "guest1", "b"), QW_EPERM);
	assert_int_equal(qw_route_policy_check(p, "b", "guest1"), QW_EPERM);
	qw_route_policy_free(p);

	/* the glob itself */
	assert_true(qw_route_pattern_match("*", ""));
	assert_true(qw_route_pattern_match("a*b*c", "aXXbYYc"));
	assert_true(qw_route_pattern_match("a*b*c", "abc"));
	assert_true(qw_route_pattern_match("*ab", "aab"));
	assert_true(qw_route_pattern_match("a**", "a"));
	assert_false(qw_route_pattern_match("a*b*c", "aXXbYY"));
	assert_false(qw_route_pattern_match("abc", "abcd"));
	assert_false(qw_route_pattern_match("abc*", "ab"));
	assert_false(qw_route_pattern_match("", "a"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lsa_wire),
		cmocka_unit_test(test_flood_converges),
		cmocka_unit_test(test_dead_node),
		cmocka_unit_test(test_restart_low_seq),
		cmocka_unit_test(test_metro_ring),
		cmocka_unit_test(test_chain_of_six),
		cmocka_unit_test(test_db_rules),
		cmocka_unit_test(test_k_paths_brute_force),
		cmocka_unit_test(test_policy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
