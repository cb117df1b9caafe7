/* Routing on the node (src/km/route_node.c): four key managers, each on
 * its own event loop, joined in a ring by socketpair KM links. Checks
 * that LSA flooding gives every node the whole database and the right
 * relay paths (fewest hops, widest bottleneck pool) over real KM links,
 * that a link cut cleanly reroutes, that a node that freezes (a dead
 * process whose sockets stay open) is noticed by the heartbeat, routed
 * around and aged out with a node_down alarm, the routing metrics, the
 * whole-network dashboard state, a link alarm, a restarted node, and the
 * authorization policy from the configuration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "km/km_internal.h"
#include "qwave/config.h"
#include "qwave/dashboard.h"
#include "qwave/km.h"
#include "qwave/rng.h"
#include "qwave/routing.h"
#include "qwave/store.h"

#define NN 4
#define NL 4

static const char *const ids[NN] = { "n-a", "n-b", "n-c", "n-d" };
/* ring a-b-c-d-a; pool bits on each link (both ends alike) */
static const int lk[NL][2] = { { 0, 1 }, { 1, 2 }, { 2, 3 }, { 3, 0 } };
static const uint64_t pool_bits[NL] = { 100000, 50000, 200000, 300000 };

/* Short timers so the test runs in a few seconds: heartbeat 100 ms, dead
 * after 400 ms, refresh 200 ms, age 800 ms. */
static const char routing_sec[] =
	"[routing]\nrefresh_ms = 200\nmax_age_ms = 800\nheartbeat_ms = 100\ndead_ms = 400\n"
	"low_pool_bits = 1000\n"
	"[policy]\ndefault = deny\nrule = deny sae-a -> sae-x*\nrule = allow sae-a <-> sae-*\n"
	"rule = allow sae-b -> sae-c\n";

struct node {
	char *text;
	struct qw_config *cfg;
	struct qw_km_conf conf;
	struct qw_store *store;
	struct qw_km *km;
	struct event_base *base;
	int frozen;            /* its loop no longer runs: a hung process */
	char db[96];
};

struct fx {
	char dir[64];
	struct node n[NN];
	struct qw_rng *rng;
	int fds[NL][2];        /* socketpair per link: [0] at lk[i][0] */
};

static void rm_db(const char *db)
{
	char p[128];

	unlink(db);
	snprintf(p, sizeof(p), "%s-wal", db);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", db);
	unlink(p);
}

static char *conf_of(int i)
{
	char *t = malloc(4096);
	size_t off;

	assert_non_null(t);
	off = (size_t)snprintf(t, 4096,
			       "[node]\nid = %s\ndata_dir = /nonexistent\nlisten = 127.0.0.1:1\n"
			       "cert = c\nkey = k\nca = ca\n%s",
			       ids[i], routing_sec);
	for (int l = 0; l < NL; l++) {
		int me = lk[l][0] == i ? 0 : lk[l][1] == i ? 1 : -1;
		if (me < 0)
			continue;
		off += (size_t)snprintf(t + off, 4096 - off,
					"[link]\npeer = %s\naddress = 127.0.0.1:2\npsk_file = p\n",
					ids[lk[l][1 - me]]);
	}
	for (int s = 0; s < NN; s++)
		off += (size_t)snprintf(t + off, 4096 - off, "[sae]\nid = sae-%c\nnode = %s\n", 'a' + s,
					ids[s]);
	assert_true(off < 4096);
	return t;
}

static void add_pool(struct fx *f, int l)
{
	size_t nb = (size_t)(pool_bits[l] / 8);
	uint8_t *bits = malloc(nb);

	assert_non_null(bits);
	assert_int_equal(qw_rng_bytes(f->rng, bits, nb), 0);
	for (int e = 0; e < 2; e++)
		assert_int_equal(qw_store_pool_append(f->n[lk[l][e]].store, ids[lk[l][1 - e]], 1, bits,
						      pool_bits[l]),
				 0);
	free(bits);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	uint8_t mk[QW_STORE_MASTER_KEY_BYTES];
	struct qw_store_opts so = { .sync = QW_STORE_SYNC_NORMAL };

	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/qw_route_XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->rng = qw_rng_new_seeded(777);
	if (!f->rng)
		return -1;
	for (int i = 0; i < NN; i++) {
		struct node *n = &f->n[i];
		struct qw_config_error e;
		int err;

		n->text = conf_of(i);
		n->base = event_base_new();
		if (!n->base || qw_config_parse_string(n->text, ids[i], &n->cfg, &e) ||
		    qw_km_conf_load(n->cfg, &n->conf, &e)) {
			fprintf(stderr, "%s\n", e.msg);
			return -1;
		}
		snprintf(n->db, sizeof(n->db), "%s/%s.db", f->dir, ids[i]);
		if (qw_rng_bytes(f->rng, mk, sizeof(mk)))
			return -1;
		n->store = qw_store_open(n->db, mk, &so, &err);
		if (!n->store)
			return -1;
		n->km = qw_km_new(n->base, &n->conf, n->store, &err);
		if (!n->km)
			return -1;
	}
	for (int l = 0; l < NL; l++)
		add_pool(f, l);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	for (int i = 0; i < NN; i++) {
		struct node *n = &f->n[i];

		qw_km_free(n->km);
		/* deferred bufferevent frees run on the loop */
		for (int k = 0; k < 10; k++)
			event_base_loop(n->base, EVLOOP_NONBLOCK);
		qw_store_close(n->store);
		qw_km_conf_clear(&n->conf);
		qw_config_free(n->cfg);
		free(n->text);
		event_base_free(n->base);
		rm_db(n->db);
	}
	rmdir(f->dir);
	qw_rng_free(f->rng);
	free(f);
	return 0;
}

static void connect_link(struct fx *f, int l)
{
	for (int e = 0; e < 2; e++) {
		struct node *n = &f->n[lk[l][e]];
		struct bufferevent *bev;

		if (e == 0)
			assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f->fds[l]), 0);
		assert_int_equal(evutil_make_socket_nonblocking(f->fds[l][e]), 0);
		bev = bufferevent_socket_new(n->base, f->fds[l][e], BEV_OPT_CLOSE_ON_FREE);
		assert_non_null(bev);
		assert_int_equal(qw_km_attach(n->km, ids[lk[l][1 - e]], bev), 0);
	}
}

/* Drive every live loop until cond holds; the bound is a liveness limit
 * (the timers involved are below one second), not a measurement. */
static void run_until(struct fx *f, int (*cond)(struct fx *), int max_ms)
{
	for (int t = 0; t < max_ms && !cond(f); t++) {
		for (int i = 0; i < NN; i++)
			if (!f->n[i].frozen)
				event_base_loop(f->n[i].base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	assert_true(cond(f));
}

static int all_links_up(struct fx *f)
{
	for (int l = 0; l < NL; l++)
		if (!qw_km_link_up(f->n[lk[l][0]].km, ids[lk[l][1]]) ||
		    !qw_km_link_up(f->n[lk[l][1]].km, ids[lk[l][0]]))
			return 0;
	return 1;
}

static int all_known(struct fx *f)
{
	for (int i = 0; i < NN; i++)
		if (qw_route_db_count(km_route_db(f->n[i].km)) != NN)
			return 0;
	return 1;
}

/* Every node holds every node's LSA, each listing its two links up. */
static int converged(struct fx *f)
{
	for (int i = 0; i < NN; i++) {
		const struct qw_route_db *db = km_route_db(f->n[i].km);

		if (qw_route_db_count(db) != NN)
			return 0;
		for (int j = 0; j < NN; j++) {
			const struct qw_lsa *l = qw_route_db_find(db, ids[j]);
			if (!l || l->n_links != 2)
				return 0;
			for (int k = 0; k < 2; k++)
				if (!(l->links[k].flags & QW_ROUTE_LINK_UP) || !l->links[k].pool_bits)
					return 0;
		}
	}
	return 1;
}

static void path_is(struct fx *f, int from, int to, uint64_t need, const char *want,
		    uint64_t bottleneck)
{
	struct qw_route_path p[QW_ROUTE_MAX_K];
	char got[512] = "";
	size_t n = 0, off = 0;

	assert_int_equal(km_route_paths(f->n[from].km, ids[to], need, p, 3, &n), 0);
	assert_true(n >= 1);
	for (size_t i = 0; i < p[0].n; i++)
		off += (size_t)snprintf(got + off, sizeof(got) - off, "%s%s", i ? " " : "",
					p[0].nodes[i]);
	if (strcmp(got, want))
		fail_msg("%s -> %s: got path '%s', want '%s'", ids[from], ids[to], got, want);
	assert_int_equal(p[0].bottleneck_bits, bottleneck);
}

static uint64_t metric(struct fx *f, int i, const char *name)
{
	struct qw_buf b;
	char key[160];
	const char *at;
	uint64_t v = UINT64_MAX;

	qw_buf_init(&b, 0);
	assert_int_equal(qw_km_metrics(f->n[i].km, &b), 0);
	assert_int_equal(qw_buf_append_u8(&b, 0), 0);
	snprintf(key, sizeof(key), "\n%s{node=\"%s\"} ", name, ids[i]);
	at = strstr((const char *)b.data, key);
	if (at)
		v = strtoull(at + strlen(key), NULL, 10);
	qw_buf_free(&b);
	if (!at)
		fail_msg("metric %s missing", name);
	return v;
}

static int bc_cut_seen(struct fx *f)
{
	struct qw_route_path p[QW_ROUTE_MAX_K];
	size_t n = 0;

	return km_route_paths(f->n[1].km, ids[2], 0, p, 1, &n) == 0 && p[0].n == 4 &&
	       km_route_paths(f->n[0].km, ids[2], 0, p, 3, &n) == 0 && n == 1;
}

static int d_routed_around(struct fx *f)
{
	struct qw_route_path p[QW_ROUTE_MAX_K];
	size_t n = 0;

	/* with b-c cut and d dead, c is cut off from a and b */
	return !qw_km_link_up(f->n[0].km, "n-d") && !qw_km_link_up(f->n[2].km, "n-d") &&
	       km_route_paths(f->n[0].km, ids[2], 0, p, 1, &n) == QW_ENOTFOUND &&
	       km_route_paths(f->n[1].km, ids[2], 0, p, 1, &n) == QW_ENOTFOUND;
}

static int d_aged_out(struct fx *f)
{
	return !qw_route_db_find(km_route_db(f->n[0].km), ids[2]) &&
	       !qw_route_db_find(km_route_db(f->n[0].km), ids[3]) &&
	       !qw_route_db_find(km_route_db(f->n[2].km), ids[3]) &&
	       !qw_route_db_find(km_route_db(f->n[1].km), ids[3]);
}

static void test_ring(void **state)
{
	struct fx *f = *state;
	struct qw_route_path p[QW_ROUTE_MAX_K];
	struct qw_dashboard_state st;
	size_t n = 0;
	int found;

	/* a chain first, then the link closing the ring: every node knows
	 * every node before, and both ends see the new link after */
	for (int l = 0; l < NL - 1; l++)
		connect_link(f, l);
	run_until(f, all_known, 5000);
	connect_link(f, NL - 1);
	run_until(f, all_links_up, 5000);
	run_until(f, converged, 5000);

	/* adjacent nodes: one hop; opposite ones: the wider of the two ways
	 * (a-d-c: 200000 bits against a-b-c: 50000) */
	for (int l = 0; l < NL; l++)
		for (int e = 0; e < 2; e++) {
			char want[64];
			snprintf(want, sizeof(want), "%s %s", ids[lk[l][e]], ids[lk[l][1 - e]]);
			path_is(f, lk[l][e], lk[l][1 - e], 0, want, pool_bits[l]);
		}
	path_is(f, 0, 2, 0, "n-a n-d n-c", 200000);
	path_is(f, 2, 0, 0, "n-c n-d n-a", 200000);
	path_is(f, 1, 3, 0, "n-b n-a n-d", 100000);
	path_is(f, 3, 1, 0, "n-d n-a n-b", 100000);
	/* both ways in order, and the need filters the narrow one out */
	assert_int_equal(km_route_paths(f->n[0].km, "n-c", 0, p, 3, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(p[1].nodes[1], "n-b");
	assert_int_equal(p[1].bottleneck_bits, 50000);
	assert_int_equal(km_route_paths(f->n[0].km, "n-c", 150000, p, 3, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(km_route_paths(f->n[0].km, "n-c", 250000, p, 3, &n), QW_ENOTFOUND);
	assert_int_equal(km_route_paths(f->n[0].km, "nowhere", 0, p, 3, &n), QW_ENOTFOUND);

	for (int i = 0; i < NN; i++) {
		assert_int_equal(metric(f, i, "qwave_route_db_lsas"), NN);
		assert_int_equal(metric(f, i, "qwave_route_nodes_reachable"), NN - 1);
		assert_true(metric(f, i, "qwave_route_lsa_received_total") >= NN - 1);
		assert_true(metric(f, i, "qwave_route_lsa_sent_total") >= 1);
	}

	/* the dashboard of a sees the whole ring, b-c (not its link) with
	 * both ends' pools from the LSAs */
	memset(&st, 0, sizeof(st));
	assert_int_equal(qw_km_dashboard_state(f->n[0].km, &st), 0);
	assert_int_equal(st.nnodes, NN);
	assert_int_equal(st.nlinks, NL);
	found = 0;
	for (size_t i = 0; i < st.nlinks; i++) {
		const struct qw_dashboard_link *l = &st.links[i];
		if ((!strcmp(l->a, "n-b") && !strcmp(l->b, "n-c")) ||
		    (!strcmp(l->a, "n-c") && !strcmp(l->b, "n-b"))) {
			found = 1;
			assert_true(l->up);
			assert_int_equal(l->pool_bits_a, 50000);
			assert_int_equal(l->pool_bits_b, 50000);
		}
	}
	assert_true(found);
	for (size_t i = 0; i < st.nnodes; i++)
		assert_true(st.nodes[i].up);

	/* cut b-c cleanly: b reaches c the long way, a has one way left */
	shutdown(f->fds[1][0], SHUT_RDWR);
	run_until(f, bc_cut_seen, 5000);
	path_is(f, 1, 2, 0, "n-b n-a n-d n-c", 100000);
	assert_int_equal(metric(f, 1, "qwave_route_path_changes_total") >= 1, 1);

	/* d hangs: its sockets stay open but say nothing. Its neighbours'
	 * heartbeat drops the links, their LSAs route around it at once,
	 * and its own LSA ages out everywhere */
	f->n[3].frozen = 1;
	run_until(f, d_routed_around, 5000);
	assert_true(metric(f, 0, "qwave_km_heartbeat_drops_total") >= 1);
	assert_true(metric(f, 2, "qwave_km_heartbeat_drops_total") >= 1);
	run_until(f, d_aged_out, 5000);
	/* c is cut off from a too (b-c cut, d dead): the partition forgets
	 * it as well; a and b are left */
	assert_int_equal(metric(f, 0, "qwave_route_db_lsas"), 2);
	assert_int_equal(metric(f, 0, "qwave_route_nodes_reachable"), 1);
	assert_int_equal(metric(f, 0, "qwave_route_nodes_aged_out_total"), 2);
	assert_int_equal(qw_route_db_count(km_route_db(f->n[2].km)), 1);
	/* a still works with b */
	path_is(f, 0, 1, 0, "n-a n-b", 100000);

	/* the node_down alarm names d; d stays on the map (its links are
	 * still in a's and c's LSAs), as down */
	memset(&st, 0, sizeof(st));
	assert_int_equal(qw_km_dashboard_state(f->n[0].km, &st), 0);
	found = 0;
	for (size_t i = 0; i < st.nalarms; i++)
		if (!strcmp(st.alarms[i].kind, "node_down") && st.alarms[i].node &&
		    !strcmp(st.alarms[i].node, "n-d"))
			found = 1;
	assert_true(found);
	found = 0;
	for (size_t i = 0; i < st.nnodes; i++)
		if (!strcmp(st.nodes[i].id, "n-d")) {
			found = 1;
			assert_false(st.nodes[i].up);
		}
	assert_true(found);
	{
		char *json = NULL;
		size_t len = 0;
		assert_int_equal(qw_dashboard_json(&st, &json, &len), 0);
		free(json);
	}
}

/* A link alarm (MAC failure) goes out in the LSA: both ends and the
 * others stop routing over the link, and it comes back when cleared. */
static int ab_avoided(struct fx *f)
{
	struct qw_route_path p[QW_ROUTE_MAX_K];
	size_t n = 0;

	/* a reaches b the long way round; c reaches a through d only */
	return km_route_paths(f->n[0].km, "n-b", 0, p, 1, &n) == 0 && p[0].n == 4 &&
	       km_route_paths(f->n[1].km, "n-a", 0, p, 1, &n) == 0 && p[0].n == 4 &&
	       km_route_paths(f->n[2].km, "n-a", 0, p, 3, &n) == 0 && n == 1 &&
	       !strcmp(p[0].nodes[1], "n-d");
}

static int ab_back(struct fx *f)
{
	struct qw_route_path p[QW_ROUTE_MAX_K];
	size_t n = 0;

	return km_route_paths(f->n[0].km, "n-b", 0, p, 1, &n) == 0 && p[0].n == 2 &&
	       km_route_paths(f->n[2].km, "n-a", 0, p, 3, &n) == 0 && n == 2;
}

static void test_link_alarm(void **state)
{
	struct fx *f = *state;
	struct qw_dashboard_state st;
	int found = 0;

	for (int l = 0; l < NL; l++)
		connect_link(f, l);
	run_until(f, converged, 5000);
	km_route_set_alarm(km_peer_find(f->n[1].km, "n-a"), 1);
	run_until(f, ab_avoided, 5000);
	memset(&st, 0, sizeof(st));
	assert_int_equal(qw_km_dashboard_state(f->n[1].km, &st), 0);
	for (size_t i = 0; i < st.nalarms; i++)
		found |= !strcmp(st.alarms[i].kind, "mac_failure") && st.alarms[i].link_b &&
			 !strcmp(st.alarms[i].link_b, "n-a");
	assert_true(found);
	km_route_set_alarm(km_peer_find(f->n[1].km, "n-a"), 0);
	run_until(f, ab_back, 5000);
}

/* The QKD link's QBER alarm (a session above the threshold: an
 * eavesdropper) goes out in the LSA the same way, and a session that failed
 * authentication on the classical channel is a mac_failure alarm on the
 * dashboard. */
static void test_qber_alarm(void **state)
{
	struct fx *f = *state;
	struct qw_km_link_report rep;
	struct qw_dashboard_state st;
	int found = 0;

	for (int l = 0; l < NL; l++)
		connect_link(f, l);
	run_until(f, converged, 5000);
	memset(&rep, 0, sizeof(rep));
	rep.sessions = 1;
	rep.qber = 0.2;
	rep.qber_alarm = 1;
	rep.auth_failures = 1;
	qw_km_link_report(f->n[0].km, "n-b", &rep);
	run_until(f, ab_avoided, 5000);
	memset(&st, 0, sizeof(st));
	assert_int_equal(qw_km_dashboard_state(f->n[0].km, &st), 0);
	for (size_t i = 0; i < st.nalarms; i++)
		found |= !strcmp(st.alarms[i].kind, "mac_failure") && st.alarms[i].link_b &&
			 !strcmp(st.alarms[i].link_b, "n-b");
	assert_true(found);
	for (size_t i = 0; i < st.nlinks; i++)
		if (!strcmp(st.links[i].a, "n-a") && !strcmp(st.links[i].b, "n-b"))
			assert_true(st.links[i].qber_alarm);
	/* the other nodes' views carry it from the LSA */
	memset(&st, 0, sizeof(st));
	assert_int_equal(qw_km_dashboard_state(f->n[2].km, &st), 0);
	found = 0;
	for (size_t i = 0; i < st.nlinks; i++)
		if ((!strcmp(st.links[i].a, "n-a") && !strcmp(st.links[i].b, "n-b")) ||
		    (!strcmp(st.links[i].a, "n-b") && !strcmp(st.links[i].b, "n-a"))) {
			found = 1;
			assert_true(st.links[i].qber_alarm);
			assert_true(st.links[i].qber > 0.19 && st.links[i].qber < 0.21);
		}
	assert_true(found);
	rep.qber_alarm = 0;
	rep.sessions = 2;
	rep.qber = 0.03;
	qw_km_link_report(f->n[0].km, "n-b", &rep);
	run_until(f, ab_back, 5000);
}

static void test_policy(void **state)
{
	struct fx *f = *state;
	struct qw_km *b = f->n[1].km;

	/* the rules of routing_sec, first match wins, default deny */
	assert_int_equal(km_policy_check(b, "sae-a", "sae-c"), 0);
	assert_int_equal(km_policy_check(b, "sae-c", "sae-a"), 0);
	assert_int_equal(km_policy_check(b, "sae-a", "sae-x1"), QW_EPERM);
	assert_int_equal(km_policy_check(b, "sae-x1", "sae-a"), 0);
	assert_int_equal(km_policy_check(b, "sae-b", "sae-c"), 0);
	assert_int_equal(km_policy_check(b, "sae-c", "sae-b"), QW_EPERM);
	assert_int_equal(km_policy_check(b, "sae-b", "sae-d"), QW_EPERM);
	assert_int_equal(f->n[1].conf.npolicy_rules, 3);
	assert_int_equal(f->n[1].conf.policy_default_allow, 0);
	assert_int_equal(f->n[1].conf.routing.dead_ms, 400);
}

/* A node restarts (new key manager, same store): its first LSA's sequence
 * number is its Unix time in ms, above everything its previous life
 * flooded, so the others take the new LSA at once. */
static void test_restart(void **state)
{
	struct fx *f = *state;
	struct node *d = &f->n[3];
	uint64_t old_seq;
	int err;

	for (int l = 0; l < NL; l++)
		connect_link(f, l);
	run_until(f, converged, 5000);
	old_seq = qw_route_db_find(km_route_db(f->n[0].km), "n-d")->seq;
	qw_km_free(d->km);
	for (int k = 0; k < 10; k++)
		event_base_loop(d->base, EVLOOP_NONBLOCK);
	d->km = qw_km_new(d->base, &d->conf, d->store, &err);
	assert_non_null(d->km);
	connect_link(f, 2);
	connect_link(f, 3);
	run_until(f, all_links_up, 5000);
	run_until(f, converged, 5000);
	for (int i = 0; i < NN; i++)
		assert_true(qw_route_db_find(km_route_db(f->n[i].km), "n-d")->seq > old_seq);
	path_is(f, 0, 2, 0, "n-a n-d n-c", 200000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ring, setup, teardown),
		cmocka_unit_test_setup_teardown(test_link_alarm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_qber_alarm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_policy, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
