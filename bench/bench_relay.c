/* `qwave bench relay`: end-to-end ETSI 014 Get key (enc_keys at the first
 * node, dec_keys at the far node) over a chain of six trusted nodes in one
 * process - each node a struct qw_km with its own key store (SQLite,
 * synchronous NORMAL) in a scratch directory, KM links over in-process
 * bufferevent pairs, routing by the nodes' own LSA flooding. SAEs 1, 3
 * and 5 hops apart: 1 hop is a neighbour (a KEYS_NEW cut, no relay), 3 and
 * 5 hops are relays (docs/relay-routing.md). C clients run closed loops
 * (each issues its next request when the last one completed), so the
 * relay batches concurrent requests for the same destination. Reported:
 * latency (p50/p99, request to dec_keys done), keys/s, requests per relay
 * message, and the link-key efficiency of every hop (relayed key bits /
 * link-key bits the hop consumed, from the stores' counters). Keys are
 * random test material; the scratch directory is deleted after. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>

#include "../src/cmd/cli.h"
#include "bench.h"
#include "qwave/config.h"
#include "qwave/km.h"
#include "qwave/kme.h"
#include "qwave/log.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"
#include "qwave/store.h"

int qw_bench_relay(int argc, char **argv);

#define NODES 6
#define BLOCK_BITS (1u << 20)
#define DEFAULT_REQUESTS 2000
#define DEFAULT_CONC 10
#define DEFAULT_KEYS 1
#define DEFAULT_BITS 256
#define MAX_CONC 256

struct bnode {
	struct qw_config *cfg;
	struct qw_km_conf conf;
	struct qw_store *store;
	struct qw_km *km;
	char db[600];
	char text[4096];
	char id[16], sae[16];
};

struct bench;

struct client {
	struct bench *b;
	double t0;
	int busy;
};

struct bench {
	char dir[512];
	struct event_base *base;
	struct bnode n[NODES];
	const struct qw_kme_ops *ops;
	int from, to;
	uint32_t keys, bits;
	uint64_t want, issued, done, failed;
	double *lat;
	struct client cl[MAX_CONC];
	int err;
};

struct dist_result {
	int hops;
	double p50_ms, p99_ms, keys_per_s, req_per_relay, eta_min, eta_mean;
	uint64_t failed;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: qwave bench relay [--requests N] [--concurrency C] [--keys K] [--bits B]\n"
		"                         [--dir D] [--json]\n\n"
		"End-to-end ETSI 014 Get key + dec_keys over a chain of 6 in-process nodes\n"
		"(own key stores, synchronous NORMAL), between SAEs 1, 3 and 5 hops apart:\n"
		"latency p50/p99 (ms), keys/s, requests per relay message, and link-key\n"
		"efficiency per hop (relayed key bits / link-key bits consumed).\n\n"
		"  --requests N     requests per distance (default %d, at most 100000)\n"
		"  --concurrency C  clients in closed loop (default %d, at most %d)\n"
		"  --keys K         keys per request (default %d, at most 64)\n"
		"  --bits B         key size in bits, 64..1024, multiple of 8 (default %d)\n"
		"  --dir D          scratch directory (default /tmp)\n"
		"  --json           print one JSON object\n",
		DEFAULT_REQUESTS, DEFAULT_CONC, MAX_CONC, DEFAULT_KEYS, DEFAULT_BITS);
}

static void remove_db(const char *db)
{
	char p[700];

	unlink(db);
	snprintf(p, sizeof(p), "%s-wal", db);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", db);
	unlink(p);
}

static int all_up(struct bench *b)
{
	for (int i = 0; i + 1 < NODES; i++)
		if (!qw_km_link_up(b->n[i].km, b->n[i + 1].id) ||
		    !qw_km_link_up(b->n[i + 1].km, b->n[i].id))
			return 0;
	return 1;
}

/* Run the loop until cond holds or about limit_s seconds passed. */
static int run_until(struct bench *b, int (*cond)(struct bench *), double limit_s)
{
	double end = qw_bench_now() + limit_s;

	while (!cond(b) && !b->err) {
		if (qw_bench_now() > end)
			return QW_ETIMEOUT;
		event_base_loop(b->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	}
	return b->err;
}

static int routed(struct bench *b)
{
	struct qw_kme_status st;

	return b->ops->status(b->n[b->from].km, b->n[b->from].sae, b->n[b->to].sae, &st) == 0 &&
	       st.stored_key_count > 0;
}

static int all_done(struct bench *b)
{
	return b->done + b->failed >= b->want;
}

static int pools_ready(struct bench *b)
{
	for (int i = 0; i + 1 < NODES; i++) {
		uint64_t x = 0, y = 0;
		if (qw_store_pool_available(b->n[i].store, b->n[i + 1].id, &x) ||
		    qw_store_pool_available(b->n[i + 1].store, b->n[i].id, &y) || x == 0 || x != y)
			return 0;
	}
	return 1;
}

static void issue(struct client *c);

static void on_dec(void *arg, int err, struct qw_kme_key *keys, size_t n)
{
	struct client *c = arg;

	if (err) {
		c->b->failed++;
		c->b->err = err;
	}
	qw_kme_keys_free(keys, n);
}

static void on_enc(void *arg, int err, struct qw_kme_key *keys, size_t n)
{
	struct client *c = arg;
	struct bench *b = c->b;
	const char *ids[64];

	c->busy = 0;
	if (err) {
		b->failed++;
		b->err = err;
		return;
	}
	for (size_t i = 0; i < n; i++)
		ids[i] = keys[i].key_id;
	/* the slave SAE fetches them at the far node */
	b->ops->get_keys_with_ids(b->n[b->to].km, b->n[b->to].sae, b->n[b->from].sae, ids, n, on_dec,
				  c);
	qw_kme_keys_free(keys, n);
	if (b->err)
		return;
	b->lat[b->done++] = qw_bench_now() - c->t0;
	issue(c);
}

static void issue(struct client *c)
{
	struct bench *b = c->b;
	struct qw_kme_get_key_req req = { .master_sae = b->n[b->from].sae,
					  .slave_sae = b->n[b->to].sae,
					  .number = b->keys, .size_bits = b->bits };

	if (b->issued >= b->want || b->err)
		return;
	b->issued++;
	c->busy = 1;
	c->t0 = qw_bench_now();
	b->ops->get_keys(b->n[b->from].km, &req, on_enc, c);
}

static uint64_t bits_used(struct bench *b, int i)
{
	struct qw_store_stats st;

	if (qw_store_stats(b->n[i].store, b->n[i + 1].id, &st))
		return 0;
	return st.bits_taken + st.bits_keyed;
}

static uint64_t relays_sent(struct bench *b)
{
	struct qw_buf m;
	uint64_t v = 0;
	const char *p;

	qw_buf_init(&m, 0);
	if (!qw_km_metrics(b->n[b->from].km, &m) && !qw_buf_append(&m, "", 1)) {
		p = strstr((const char *)m.data, "qwave_relay_total{node=\"node-0\",event=\"sent\"} ");
		if (p)
			v = strtoull(strchr(p, '}') + 2, NULL, 10);
	}
	qw_buf_free(&m);
	return v;
}

static int run_distance(struct bench *b, int hops, uint64_t requests, int conc,
			struct dist_result *r)
{
	uint64_t before[NODES], relays0;
	double t0, el;
	int ret;

	memset(r, 0, sizeof(*r));
	r->hops = hops;
	b->from = 0;
	b->to = hops;
	b->want = requests;
	b->issued = b->done = b->failed = 0;
	if ((ret = run_until(b, routed, 10)))
		return ret;
	for (int i = 0; i < hops; i++)
		before[i] = bits_used(b, i);
	relays0 = relays_sent(b);
	t0 = qw_bench_now();
	for (int i = 0; i < conc; i++) {
		b->cl[i].b = b;
		issue(&b->cl[i]);
	}
	ret = run_until(b, all_done, 300);
	el = qw_bench_now() - t0;
	/* let the last dec_keys and ACKs settle */
	for (int i = 0; i < 100; i++)
		event_base_loop(b->base, EVLOOP_NONBLOCK);
	if (ret)
		return ret;
	r->failed = b->failed;
	r->keys_per_s = (double)(b->done * b->keys) / el;
	{
		double *v = malloc(b->done * sizeof(*v));

		if (!v)
			return QW_ENOMEM;
		memcpy(v, b->lat, b->done * sizeof(*v));
		r->p50_ms = 1e3 * qw_bench_median(v, (int)b->done);
		r->p99_ms = 1e3 * v[(size_t)((double)(b->done - 1) * 0.99)];
		free(v);
	}
	{
		double key_bits = (double)b->done * b->keys * b->bits, sum = 0;

		r->eta_min = 1;
		for (int i = 0; i < hops; i++) {
			double eta = key_bits / (double)(bits_used(b, i) - before[i]);
			sum += eta;
			if (eta < r->eta_min)
				r->eta_min = eta;
		}
		r->eta_mean = sum / hops;
	}
	{
		uint64_t rel = relays_sent(b) - relays0;

		r->req_per_relay = rel ? (double)b->done / (double)rel : 0;
	}
	return 0;
}

static int setup(struct bench *b, uint64_t pool_bits)
{
	struct qw_store_opts so = { .sync = QW_STORE_SYNC_NORMAL };
	struct qw_rng *rng = qw_rng_new_system();
	uint8_t *block = malloc(BLOCK_BITS / 8);
	uint8_t mk[QW_STORE_MASTER_KEY_BYTES];
	int ret = QW_ENOMEM;

	b->base = event_base_new();
	if (!rng || !block || !b->base)
		goto out;
	for (int i = 0; i < NODES; i++) {
		struct bnode *n = &b->n[i];
		struct qw_config_error e;
		int off, err = 0;

		snprintf(n->id, sizeof(n->id), "node-%d", i);
		snprintf(n->sae, sizeof(n->sae), "sae-%d", i);
		off = snprintf(n->text, sizeof(n->text),
			       "[node]\nid = node-%d\ndata_dir = /nonexistent\nlisten = 127.0.0.1:%d\n"
			       "cert = c.crt\nkey = c.key\nca = ca.crt\nrequest_timeout_ms = 5000\n"
			       "[limits]\nkey_size = 256\nmax_key_per_request = 64\n"
			       "max_key_size = 1024\nmin_key_size = 64\n",
			       i, 1000 + i);
		if (i > 0)
			off += snprintf(n->text + off, sizeof(n->text) - (size_t)off,
					"[link]\npeer = node-%d\npsk_file = psk\n", i - 1);
		if (i + 1 < NODES)
			off += snprintf(n->text + off, sizeof(n->text) - (size_t)off,
					"[link]\npeer = node-%d\naddress = 127.0.0.1:%d\npsk_file = psk\n",
					i + 1, 1001 + i);
		for (int j = 0; j < NODES; j++)
			off += snprintf(n->text + off, sizeof(n->text) - (size_t)off,
					"[sae]\nid = sae-%d\nnode = node-%d\n", j, j);
		ret = QW_EINVAL;
		if (qw_config_parse_string(n->text, "bench-relay.conf", &n->cfg, &e) ||
		    qw_km_conf_load(n->cfg, &n->conf, &e))
			goto out;
		snprintf(n->db, sizeof(n->db), "%s/node-%d.db", b->dir, i);
		if ((ret = qw_rng_bytes(rng, mk, sizeof(mk))))
			goto out;
		n->store = qw_store_open(n->db, mk, &so, &err);
		if (!n->store) {
			ret = err;
			goto out;
		}
		n->km = qw_km_new(b->base, &n->conf, n->store, &err);
		if (!n->km) {
			ret = err;
			goto out;
		}
	}
	for (int i = 0; i + 1 < NODES; i++) {
		struct bufferevent *p[2];

		ret = QW_ENOMEM;
		if (bufferevent_pair_new(b->base, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS, p))
			goto out;
		if ((ret = qw_km_attach(b->n[i].km, b->n[i + 1].id, p[0])) ||
		    (ret = qw_km_attach(b->n[i + 1].km, b->n[i].id, p[1])))
			goto out;
	}
	if ((ret = run_until(b, all_up, 10)))
		goto out;
	/* the same secret blocks at both ends of every link */
	for (int i = 0; i + 1 < NODES; i++)
		for (uint64_t k = 0; k * BLOCK_BITS < pool_bits; k++) {
			if ((ret = qw_rng_bytes(rng, block, BLOCK_BITS / 8)) ||
			    (ret = qw_km_submit_block(b->n[i].km, b->n[i + 1].id, k + 1, block, BLOCK_BITS)) ||
			    (ret = qw_km_submit_block(b->n[i + 1].km, b->n[i].id, k + 1, block, BLOCK_BITS)))
				goto out;
		}
	ret = run_until(b, pools_ready, 60);
out:
	if (block)
		qw_free_secret(block, BLOCK_BITS / 8);
	qw_rng_free(rng);
	return ret;
}

static void teardown(struct bench *b)
{
	for (int i = 0; i < NODES; i++)
		qw_km_free(b->n[i].km);
	for (int i = 0; b->base && i < 10; i++)
		event_base_loop(b->base, EVLOOP_NONBLOCK);
	for (int i = 0; i < NODES; i++) {
		qw_store_close(b->n[i].store);
		if (b->n[i].db[0])
			remove_db(b->n[i].db);
		qw_km_conf_clear(&b->n[i].conf);
		qw_config_free(b->n[i].cfg);
	}
	rmdir(b->dir);
	if (b->base)
		event_base_free(b->base);
}

int qw_bench_relay(int argc, char **argv)
{
	static const int dists[] = { 1, 3, 5 };
	struct dist_result res[3];
	uint64_t requests = DEFAULT_REQUESTS, conc = DEFAULT_CONC, keys = DEFAULT_KEYS, bits = DEFAULT_BITS;
	const char *dir = "/tmp";
	struct bench *b;
	int json = 0, ret;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--json")) {
			json = 1;
			continue;
		} else if (strcmp(a, "--requests") && strcmp(a, "--concurrency") && strcmp(a, "--keys") &&
			   strcmp(a, "--bits") && strcmp(a, "--dir")) {
			return qw_cli_usage_error("bench relay", "unknown option '%s'", a);
		} else if (!val) {
			return qw_cli_usage_error("bench relay", "%s needs a value", a);
		} else if (!strcmp(a, "--requests")) {
			if (qw_cli_parse_u64(val, &requests) || requests < 1 || requests > 100000)
				return qw_cli_usage_error("bench relay", "bad --requests '%s'", val);
		} else if (!strcmp(a, "--concurrency")) {
			if (qw_cli_parse_u64(val, &conc) || conc < 1 || conc > MAX_CONC)
				return qw_cli_usage_error("bench relay", "bad --concurrency '%s'", val);
		} else if (!strcmp(a, "--keys")) {
			if (qw_cli_parse_u64(val, &keys) || keys < 1 || keys > 64)
				return qw_cli_usage_error("bench relay", "bad --keys '%s'", val);
		} else if (!strcmp(a, "--bits")) {
			if (qw_cli_parse_u64(val, &bits) || bits < 64 || bits > 1024 || bits % 8)
				return qw_cli_usage_error("bench relay", "bad --bits '%s'", val);
		} else if (!strcmp(a, "--dir")) {
			if (strlen(val) > 400)
				return qw_cli_usage_error("bench relay", "--dir too long");
			dir = val;
		}
		i++;
	}
	b = calloc(1, sizeof(*b));
	if (!b || !(b->lat = calloc(requests, sizeof(*b->lat)))) {
		free(b);
		return qw_cli_fail("out of memory");
	}
	b->ops = qw_km_kme_ops();
	b->keys = (uint32_t)keys;
	b->bits = (uint32_t)bits;
	snprintf(b->dir, sizeof(b->dir), "%s/qw_bench_relay_XXXXXX", dir);
	if (!mkdtemp(b->dir)) {
		free(b->lat);
		free(b);
		return qw_cli_fail("cannot create a scratch directory in %s", dir);
	}
	qw_log_set_level(QW_LOG_ERROR); /* one info line per relay would drown the figures */
	qw_cli_progress("bench relay: filling the pools of 6 nodes");
	/* link 0-1 serves all three distances: every request's key bits plus
	 * the worst case of formula (1) per request, three times, and a spare
	 * block */
	ret = setup(b, 3 * requests * (keys * bits + 256) + BLOCK_BITS);
	for (int d = 0; !ret && d < 3; d++) {
		qw_cli_progress("bench relay: %d hop(s), %" PRIu64 " requests", dists[d], requests);
		ret = run_distance(b, dists[d], requests, (int)conc, &res[d]);
	}
	qw_cli_progress_done();
	teardown(b);
	free(b->lat);
	free(b);
	if (ret)
		return qw_cli_fail("relay benchmark: %s", qw_strerror(ret));
	if (json) {
		json_t *arr = json_array();

		for (int d = 0; d < 3; d++)
			json_array_append_new(arr, json_pack("{s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:I}",
							     "hops", res[d].hops, "p50_ms", res[d].p50_ms,
							     "p99_ms", res[d].p99_ms, "keys_per_s",
							     res[d].keys_per_s, "requests_per_relay",
							     res[d].req_per_relay, "efficiency_min",
							     res[d].eta_min, "efficiency_mean",
							     res[d].eta_mean, "failed",
							     (json_int_t)res[d].failed));
		qw_cli_print_json(json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:s, s:o}", "bench", "relay",
					    "nodes", NODES, "requests", (json_int_t)requests,
					    "concurrency", (json_int_t)conc, "keys", (json_int_t)keys,
					    "bits", (json_int_t)bits, "sync", "normal", "results", arr));
		return 0;
	}
	printf("relay over a chain of %d nodes: %" PRIu64 " requests of %" PRIu64 " x %" PRIu64
	       "-bit key(s) per distance, %" PRIu64 " clients, stores synchronous NORMAL\n",
	       NODES, requests, keys, bits, conc);
	printf("%5s %10s %10s %10s %14s %14s\n", "hops", "p50 (ms)", "p99 (ms)", "keys/s",
	       "req/relay", "eta min/mean");
	for (int d = 0; d < 3; d++)
		printf("%5d %10.3f %10.3f %10.0f %14.1f %7.4f/%.4f%s\n", res[d].hops, res[d].p50_ms,
		       res[d].p99_ms, res[d].keys_per_s, res[d].req_per_relay, res[d].eta_min,
		       res[d].eta_mean, res[d].hops == 1 ? "  (neighbour: KEYS_NEW cut, no relay)" : "");
	return 0;
}
