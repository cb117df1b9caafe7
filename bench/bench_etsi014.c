/* `qwave bench etsi014`: Get key (enc_keys, 1 key of 256 bits) requests per
 * second through the ETSI GS QKD 014 server over keep-alive mutual-TLS
 * connections, with latency percentiles, and the same load against nginx
 * serving a static body of the same size under the same TLS settings.
 *
 * Two key sources:
 *   node    (default) the real key manager end to end: two nodes, each on
 *           its own event-loop thread with its own encrypted SQLite store,
 *           joined by a KM link over loopback TCP. The master's node (the
 *           link's leader) cuts the keys, announces them with KEYS_NEW, and
 *           answers only after the slave's node committed them and ACKed
 *           (ETSI GS QKD 014 / km.h), then delivers from its store.
 *   memory  an in-memory pool of random material in this file: the HTTPS +
 *           ETSI front end's own cost.
 * The load generator (one thread and one keep-alive connection per client)
 * runs on the same machine and competes with the servers for the CPU. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <ftw.h>

#include <curl/curl.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "../src/cmd/cli.h"
#include "bench.h"
#include "qwave/encoding.h"
#include "qwave/etsi014.h"
#include "qwave/config.h"
#include "qwave/frame.h"
#include "qwave/https.h"
#include "qwave/km.h"
#include "qwave/kme.h"
#include "qwave/log.h"
#include "qwave/store.h"
#include "qwave/pki.h"
#include "qwave/secmem.h"
#include "qwave/uuid.h"

#define NGINX "/usr/sbin/nginx"
#define POOL_BYTES (1u << 20)
#define MAX_CLIENTS 256
#define KEY_BITS 256
#define TARGET "/api/v1/keys/sae-B/enc_keys?number=1&size=256"

int qw_bench_etsi014(int argc, char **argv);

/* ---- in-memory key source ---- */

struct pool {
	uint8_t *buf;
	size_t pos;
	uint64_t keys;
};

static int src_status(void *ctx, const char *caller, const char *slave, struct qw_kme_status *o)
{
	(void)ctx;
	(void)caller;
	if (strcmp(slave, "sae-B"))
		return QW_ENOTFOUND;
	snprintf(o->source_kme_id, sizeof(o->source_kme_id), "kme-bench-A");
	snprintf(o->target_kme_id, sizeof(o->target_kme_id), "kme-bench-B");
	o->key_size = KEY_BITS;
	o->stored_key_count = POOL_BYTES / (KEY_BITS / 8);
	o->max_key_count = o->stored_key_count;
	o->max_key_per_request = 128;
	o->max_key_size = 1024;
	o->min_key_size = 64;
	o->max_sae_id_count = 0;
	return 0;
}

/* Cut keys from the pool; refill it with fresh random material when it
 * runs out (a real KM would answer 503 instead). */
static void src_get_keys(void *ctx, const struct qw_kme_get_key_req *r, qw_kme_keys_cb cb,
			 void *arg)
{
	struct pool *p = ctx;
	size_t kb = r->size_bits / 8;
	struct qw_kme_key *keys = calloc(r->number, sizeof(*keys));
	struct qw_uuid u;

	if (!keys) {
		cb(arg, QW_ENOMEM, NULL, 0);
		return;
	}
	for (uint32_t i = 0; i < r->number; i++) {
		if (p->pos + kb > POOL_BYTES) {
			if (RAND_bytes(p->buf, POOL_BYTES) != 1) {
				qw_kme_keys_free(keys, i);
				cb(arg, QW_ECRYPTO, NULL, 0);
				return;
			}
			p->pos = 0;
		}
		keys[i].key = malloc(kb);
		if (!keys[i].key || qw_uuid_generate(&u)) {
			qw_kme_keys_free(keys, i + 1);
			cb(arg, QW_ENOMEM, NULL, 0);
			return;
		}
		memcpy(keys[i].key, p->buf + p->pos, kb);
		qw_wipe(p->buf + p->pos, kb); /* handed out once */
		p->pos += kb;
		keys[i].size_bits = r->size_bits;
		qw_uuid_format(&u, keys[i].key_id);
		p->keys++;
	}
	cb(arg, 0, keys, r->number);
}

static void src_get_with_ids(void *ctx, const char *caller, const char *master,
			     const char *const *ids, size_t n, qw_kme_keys_cb cb, void *arg)
{
	(void)ctx;
	(void)caller;
	(void)master;
	(void)ids;
	(void)n;
	cb(arg, QW_ENOTFOUND, NULL, 0);
}

static const struct qw_kme_ops src_ops = {
	.status = src_status,
	.get_keys = src_get_keys,
	.get_keys_with_ids = src_get_with_ids,
};

/* ---- load generator ---- */

struct load {
	const char *dir;
	uint16_t port;
	double t_start, t_end;
	/* per client */
	double *lat;
	size_t n, cap;
	uint64_t errors, all;
	size_t body_len;
	double cpu_s;
};

/* CPU seconds used by the calling thread. */
static double thread_cpu(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts))
		return 0;
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void record(struct load *l, double t0, double t1);

static size_t count_body(char *p, size_t sz, size_t n, void *arg)
{
	(void)p;
	*(size_t *)arg += sz * n;
	return sz * n;
}

static void *client(void *arg)
{
	struct load *l = arg;
	CURL *c = curl_easy_init();
	char p[600], url[128];
	size_t got;

	if (!c)
		return NULL;
	snprintf(url, sizeof(url), "https://127.0.0.1:%u" TARGET, l->port);
	snprintf(p, sizeof(p), "%s/ca.crt", l->dir);
	curl_easy_setopt(c, CURLOPT_CAINFO, p);
	snprintf(p, sizeof(p), "%s/sae-sae-A.crt", l->dir);
	curl_easy_setopt(c, CURLOPT_SSLCERT, p);
	snprintf(p, sizeof(p), "%s/sae-sae-A.key", l->dir);
	curl_easy_setopt(c, CURLOPT_SSLKEY, p);
	curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_3);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, count_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &got);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* no sigaction per request */
	for (;;) {
		double t0 = qw_bench_now(), t1;
		long status = 0;
		CURLcode rc;

		if (t0 >= l->t_end)
			break;
		got = 0;
		rc = curl_easy_perform(c);
		t1 = qw_bench_now();
		l->all++;
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
		if (t0 < l->t_start)
			continue; /* warm-up: handshake, first allocations */
		if (rc != CURLE_OK || status != 200) {
			l->errors++;
			continue;
		}
		l->body_len = got;
		record(l, t0, t1);
	}
	curl_easy_cleanup(c);
	l->cpu_s = thread_cpu();
	return NULL;
}

/* The light load generator: a blocking OpenSSL TLS 1.3 client speaking
 * just enough HTTP/1.1 (one request at a time, Content-Length bodies). It
 * costs a fraction of libcurl's CPU per request, which matters when the
 * clients share the cores with the server they measure. */
static int raw_connect(const struct load *l, SSL_CTX **ctxp, SSL **sslp, int *fdp)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(l->port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	char p[600];
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = NULL;
	int fd = -1, one = 1;

	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION))
		goto fail;
	snprintf(p, sizeof(p), "%s/ca.crt", l->dir);
	if (SSL_CTX_load_verify_locations(ctx, p, NULL) != 1)
		goto fail;
	snprintf(p, sizeof(p), "%s/sae-sae-A.crt", l->dir);
	if (SSL_CTX_use_certificate_chain_file(ctx, p) != 1)
		goto fail;
	snprintf(p, sizeof(p), "%s/sae-sae-A.key", l->dir);
	if (SSL_CTX_use_PrivateKey_file(ctx, p, SSL_FILETYPE_PEM) != 1)
		goto fail;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
	    connect(fd, (struct sockaddr *)&a, sizeof(a)))
		goto fail;
	if (!(ssl = SSL_new(ctx)) || !SSL_set_fd(ssl, fd) ||
	    !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1") ||
	    SSL_connect(ssl) != 1)
		goto fail;
	*ctxp = ctx;
	*sslp = ssl;
	*fdp = fd;
	return 0;
fail:
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	if (fd >= 0)
		close(fd);
	return -1;
}

/* One request/response; 0 with the body length, -1 on any failure. */
static int raw_request(SSL *ssl, size_t *body_len)
{
	static const char rq[] = "GET " TARGET " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	char buf[8192], *end, *cl;
	size_t have = 0, need = 0, hdr = 0;
	int n;

	if (SSL_write(ssl, rq, (int)sizeof(rq) - 1) != (int)sizeof(rq) - 1)
		return -1;
	for (;;) {
		n = SSL_read(ssl, buf + have, (int)(sizeof(buf) - 1 - have));
		if (n <= 0)
			return -1;
		have += (size_t)n;
		buf[have] = '\0';
		if (!hdr) {
			if (!(end = strstr(buf, "\r\n\r\n")))
				continue;
			hdr = (size_t)(end - buf) + 4;
			if (strncmp(buf, "HTTP/1.1 200 ", 13))
				return -1;
			cl = strstr(buf, "Content-Length:");
			if (!cl || cl > end)
				return -1;
			need = hdr + strtoul(cl + 15, NULL, 10);
		}
		if (have >= need) {
			*body_len = need - hdr;
			return have == need ? 0 : -1;
		}
		if (have >= sizeof(buf) - 1)
			return -1;
	}
}

static void record(struct load *l, double t0, double t1)
{
	if (l->n == l->cap) {
		size_t nc = l->cap ? 2 * l->cap : 4096;
		double *nl = realloc(l->lat, nc * sizeof(*nl));

		if (!nl) {
			l->errors++;
			return;
		}
		l->lat = nl;
		l->cap = nc;
	}
	l->lat[l->n++] = (t1 - t0) * 1e3;
}

static void *raw_client(void *arg)
{
	struct load *l = arg;
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	int fd = -1;

	if (raw_connect(l, &ctx, &ssl, &fd)) {
		l->errors++;
		l->cpu_s = thread_cpu();
		return NULL;
	}
	for (;;) {
		double t0 = qw_bench_now(), t1;
		size_t len = 0;
		int rc;

		if (t0 >= l->t_end)
			break;
		rc = raw_request(ssl, &len);
		t1 = qw_bench_now();
		l->all++;
		if (rc) {
			l->errors++;
			break; /* the connection is in an unknown state */
		}
		if (t0 < l->t_start)
			continue;
		l->body_len = len;
		record(l, t0, t1);
	}
	SSL_shutdown(ssl);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	l->cpu_s = thread_cpu();
	return NULL;
}

struct figures {
	double rps, p50, p99;
	double client_cpu_us; /* load generator CPU per request */
	uint64_t requests, errors;
	size_t body_len;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int use_curl;

static int run_load(const char *dir, uint16_t port, int clients, double seconds,
		    struct figures *f)
{
	struct load *l = calloc((size_t)clients, sizeof(*l));
	pthread_t th[MAX_CLIENTS];
	double now = qw_bench_now(), *all = NULL;
	size_t total = 0, k = 0;
	int started = 0, ret = QW_ENOMEM;

	memset(f, 0, sizeof(*f));
	if (!l)
		return QW_ENOMEM;
	for (int i = 0; i < clients; i++) {
		l[i].dir = dir;
		l[i].port = port;
		l[i].t_start = now + 0.5;
		l[i].t_end = now + 0.5 + seconds;
	}
	for (; started < clients; started++)
		if (pthread_create(&th[started], NULL, use_curl ? client : raw_client, &l[started]))
			break;
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < clients; i++) {
		total += l[i].n;
		f->errors += l[i].errors;
		f->client_cpu_us += l[i].cpu_s;
		k += l[i].all;
		if (l[i].body_len)
			f->body_len = l[i].body_len;
	}
	f->client_cpu_us = k ? f->client_cpu_us * 1e6 / (double)k : 0;
	k = 0;
	if (started < clients)
		goto out;
	if (total && !(all = malloc(total * sizeof(*all))))
		goto out;
	for (int i = 0; i < clients; i++) {
		memcpy(all + k, l[i].lat, l[i].n * sizeof(*all));
		k += l[i].n;
	}
	if (total) {
		qsort(all, total, sizeof(*all), cmp_double);
		f->p50 = all[total / 2];
		f->p99 = all[(size_t)((double)(total - 1) * 0.99)];
	}
	f->requests = total;
	f->rps = (double)total / seconds;
	ret = 0;
out:
	for (int i = 0; i < clients; i++)
		free(l[i].lat);
	free(l);
	free(all);
	return ret;
}

/* ---- the real key manager: two nodes ---- */

#define NODE_BLOCK_BITS (UINT64_C(1) << 22)

/* Node i's configuration: its id, its peer's id, the data directory,
 * the sync mode; sae-A (the client, master) is at node 0, sae-B at node 1. */
static const char node_conf_fmt[] =
	"[node]\nid = %s\ndata_dir = %s\nlisten = 127.0.0.1:%d\nsync = %s\n"
	"cert = a.crt\nkey = a.key\nca = ca.crt\nrequest_timeout_ms = 10000\n"
	"[limits]\nkey_size = 256\nmax_key_per_request = 128\nmax_key_size = 1024\n"
	"min_key_size = 64\nmax_key_count = 100000000\n"
	"[link]\npeer = %s\naddress = 127.0.0.1:%d\npsk_file = psk\n"
	"[sae]\nid = sae-A\nnode = %s\n[sae]\nid = sae-B\nnode = %s\n";

/* The link's leader is the node whose id sorts first: node 0 (the master
 * SAE's) is the leader by default, the follower with --master follower. */
static const char *node_id[2] = { "kme-A", "kme-B" };

struct bnode {
	struct qw_config *cfg;
	struct qw_km_conf conf;
	struct qw_store *store;
	struct qw_km *km;
	struct event_base *base;
	double cpu_s;
};

static enum qw_store_sync node_sync = QW_STORE_SYNC_NORMAL;
static int use_memory;

static struct event_base *base_new(void)
{
	struct event_config *cfg = event_config_new();
	struct event_base *b;

	/* Batch the read/write interest changes of each loop iteration into
	 * one epoll_ctl per socket (libevent's epoll changelist). */
	if (!cfg)
		return NULL;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	b = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return b;
}

static void node_free(struct bnode *n)
{
	qw_km_free(n->km);
	qw_store_close(n->store);
	qw_km_conf_clear(&n->conf);
	qw_config_free(n->cfg);
	memset(n, 0, sizeof(*n));
}

static int node_open(struct bnode *n, int i, const char *dir, struct event_base *base)
{
	struct qw_store_opts so = { .sync = node_sync };
	struct qw_config_error e;
	uint8_t mk[QW_STORE_MASTER_KEY_BYTES];
	char text[1024], db[600];
	int err;

	snprintf(text, sizeof(text), node_conf_fmt, node_id[i], dir, 1 + i,
		 node_sync == QW_STORE_SYNC_FULL ? "full" : "normal", node_id[!i], 2 - i, node_id[0],
		 node_id[1]);
	if ((err = qw_config_parse_string(text, node_id[i], &n->cfg, &e)) ||
	    (err = qw_km_conf_load(n->cfg, &n->conf, &e)))
		return err;
	snprintf(db, sizeof(db), "%s/%c.db", dir, 'a' + i);
	if (RAND_bytes(mk, sizeof(mk)) != 1)
		return QW_ECRYPTO;
	n->store = qw_store_open(db, mk, &so, &err);
	qw_wipe(mk, sizeof(mk));
	if (!n->store)
		return err;
	n->base = base;
	n->km = qw_km_new(base, &n->conf, n->store, &err);
	return n->km ? 0 : err;
}

/* The same link key at both ends, as the QKD link threads deliver it:
 * enough for the whole run at 40 000 requests/s. */
static int fill_pools(struct bnode *n, double seconds)
{
	uint64_t want = (uint64_t)((seconds + 1.5) * 40000.0 * KEY_BITS);
	uint8_t *bits = qw_secure_alloc(NODE_BLOCK_BITS / 8);
	int ret = 0;

	if (!bits)
		return QW_ENOMEM;
	for (uint64_t id = 1, got = 0; got < want && !ret; id++, got += NODE_BLOCK_BITS) {
		if (RAND_bytes(bits, NODE_BLOCK_BITS / 8) != 1) {
			ret = QW_ECRYPTO;
			break;
		}
		if (!(ret = qw_store_pool_append(n[0].store, node_id[1], id, bits, NODE_BLOCK_BITS)))
			ret = qw_store_pool_append(n[1].store, node_id[0], id, bits, NODE_BLOCK_BITS);
	}
	qw_secure_free(bits, NODE_BLOCK_BITS / 8);
	return ret;
}

/* Join the nodes over loopback TCP and run both loops here until the KM
 * link is up (before the loop threads start, so no state is shared). */
static int link_nodes(struct bnode *n)
{
	struct bufferevent *bev[2] = { NULL, NULL };
	int fds[2], ret;

	if (qw_frame_tcp_pair(fds))
		return QW_EIO;
	for (int i = 0; i < 2; i++) {
		evutil_make_socket_nonblocking(fds[i]);
		bev[i] = bufferevent_socket_new(n[i].base, fds[i], BEV_OPT_CLOSE_ON_FREE);
		if (!bev[i]) {
			close(fds[i]);
			if (i == 0)
				close(fds[1]);
			else
				bufferevent_free(bev[0]);
			return QW_ENOMEM;
		}
	}
	if ((ret = qw_km_attach(n[0].km, node_id[1], bev[0]))) {
		bufferevent_free(bev[1]);
		return ret;
	}
	if ((ret = qw_km_attach(n[1].km, node_id[0], bev[1])))
		return ret;
	for (int i = 0; i < 50000; i++) {
		if (qw_km_link_up(n[0].km, node_id[1]) && qw_km_link_up(n[1].km, node_id[0]))
			return 0;
		event_base_loop(n[0].base, EVLOOP_NONBLOCK);
		event_base_loop(n[1].base, EVLOOP_NONBLOCK);
		if (i % 16 == 15)
			usleep(1000);
	}
	return QW_ETIMEOUT;
}

/* ---- our server ---- */

static void *loop(void *arg)
{
	struct bnode *n = arg;

	event_base_loop(n->base, EVLOOP_NO_EXIT_ON_EMPTY);
	n->cpu_s = thread_cpu();
	return NULL;
}

/* A counter from the node's metrics text (0 when absent). */
static uint64_t metric(struct qw_km *km, const char *prefix)
{
	struct qw_buf b;
	uint64_t v = 0;
	const char *p;

	qw_buf_init(&b, 0);
	if (!qw_km_metrics(km, &b) && !qw_buf_append_u8(&b, 0) &&
	    (p = strstr((const char *)b.data, prefix)) && (p = strchr(p, ' ')))
		v = strtoull(p + 1, NULL, 10);
	qw_buf_free(&b);
	return v;
}

struct qwave_run {
	uint64_t keys;         /* delivered to the master SAE */
	uint64_t slave_keys;   /* committed at the slave's node (RESERVED) */
	uint64_t batches;      /* cuts the master's node made (group commit) */
	double server_cpu_s;   /* both nodes' loop threads */
};

static int bench_qwave(const char *dir, int clients, double seconds, struct figures *f,
		       struct qwave_run *run)
{
	struct pool pool = { 0 };
	struct qw_https_opts o = { 0 };
	struct qw_https_server *srv = NULL;
	struct qw_etsi014 *api = NULL;
	struct bnode n[2];
	char crt[600], key[600], ca[600];
	pthread_t th[2];
	int err = QW_ENOMEM, nth = use_memory ? 1 : 2, started = 0;

	memset(n, 0, sizeof(n));
	memset(run, 0, sizeof(*run));
	evthread_use_pthreads();
	for (int i = 0; i < nth; i++)
		if (!(n[i].base = base_new()))
			goto out;
	if (use_memory) {
		if (!(pool.buf = qw_secure_alloc(POOL_BYTES)))
			goto out;
		pool.pos = POOL_BYTES; /* filled on first use */
	} else {
		qw_cli_progress("two nodes, stores synchronous=%s: filling the pools",
				node_sync == QW_STORE_SYNC_FULL ? "FULL" : "NORMAL");
		for (int i = 0; i < 2; i++)
			if ((err = node_open(&n[i], i, dir, n[i].base)))
				goto out;
		if ((err = fill_pools(n, seconds)) || (err = link_nodes(n)))
			goto out;
	}
	snprintf(crt, sizeof(crt), "%s/node-kme-bench.crt", dir);
	snprintf(key, sizeof(key), "%s/node-kme-bench.key", dir);
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	o.cert_file = crt;
	o.key_file = key;
	o.ca_file = ca;
	if (!(srv = qw_https_server_new(n[0].base, &o, &err)))
		goto out;
	if (!(api = use_memory ? qw_etsi014_new(srv, &src_ops, &pool, &err)
			       : qw_etsi014_new(srv, qw_km_kme_ops(), n[0].km, &err)))
		goto out;
	qw_cli_progress("qwave ETSI 014 server (%s keys): %d clients, %.1f s",
			use_memory ? "in-memory" : "key manager", clients, seconds);
	for (; started < nth; started++)
		if (pthread_create(&th[started], NULL, loop, &n[started])) {
			err = QW_ENOMEM;
			break;
		}
	if (started == nth)
		err = run_load(dir, qw_https_server_port(srv), clients, seconds, f);
	for (int i = 0; i < started; i++) {
		event_base_loopbreak(n[i].base);
		pthread_join(th[i], NULL);
		run->server_cpu_s += n[i].cpu_s;
	}
	if (use_memory) {
		run->keys = run->slave_keys = pool.keys;
	} else if (!err) {
		struct qw_store_stats st;

		if (!(err = qw_store_stats(n[0].store, node_id[1], &st)))
			run->keys = st.keys[QW_STORE_DELIVERED];
		if (!err && !(err = qw_store_stats(n[1].store, node_id[0], &st)))
			run->slave_keys = st.keys[QW_STORE_RESERVED];
		if (!err)
			run->batches = metric(n[0].km, "qwave_km_batches_total{");
	}
out:
	qw_https_server_free(srv);
	qw_etsi014_free(api);
	for (int i = 0; i < 2; i++) {
		qw_km_free(n[i].km);
		n[i].km = NULL;
	}
	for (int i = 0; i < 2; i++) {
		if (n[i].base) {
			event_base_loop(n[i].base, EVLOOP_NONBLOCK); /* deferred frees */
			event_base_free(n[i].base);
		}
		node_free(&n[i]);
	}
	qw_secure_free(pool.buf, POOL_BYTES);
	return err;
}

/* ---- nginx ---- */

static uint16_t free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	uint16_t port = 0;

	if (fd < 0)
		return 0;
	if (!bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &sl))
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static int wait_listening(uint16_t port, pid_t pid)
{
	for (int i = 0; i < 500; i++) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

		if (fd < 0)
			return -1;
		ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		close(fd);
		if (ok)
			return 0;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -1;
		usleep(10000);
	}
	return -1;
}

static int write_text(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (!f)
		return -1;
	ok = fwrite(text, 1, len, f) == len;
	return fclose(f) == 0 && ok ? 0 : -1;
}

/* A Key container of the same size as the server's answer. */
static size_t sample_body(char *out, size_t cap)
{
	uint8_t k[KEY_BITS / 8];
	char b64[64], id[QW_UUID_STR_BYTES];
	struct qw_uuid u;

	if (RAND_bytes(k, sizeof(k)) != 1 || qw_uuid_generate(&u) ||
	    qw_base64_encode(b64, sizeof(b64), k, sizeof(k)))
		return 0;
	qw_uuid_format(&u, id);
	return (size_t)snprintf(out, cap, "{\"keys\":[{\"key_ID\":\"%s\",\"key\":\"%s\"}]}", id, b64);
}

static int bench_nginx(const char *dir, int clients, double seconds, struct figures *f,
		       const char **why)
{
	char conf[8192], p[700], body[256];
	size_t blen;
	uint16_t port = free_port();
	pid_t pid;
	int ret, status;

	if (access(NGINX, X_OK) != 0) {
		*why = "nginx not installed";
		return 1;
	}
	if (!port || !(blen = sample_body(body, sizeof(body)))) {
		*why = "no free port";
		return 1;
	}
	snprintf(p, sizeof(p), "%s/www/api/v1/keys/sae-B", dir);
	for (char *s = strchr(p + strlen(dir) + 1, '/'); ; s = strchr(s + 1, '/')) {
		if (s)
			*s = '\0';
		if (mkdir(p, 0755) && errno != EEXIST) {
			*why = "cannot create the nginx document root";
			return 1;
		}
		if (!s)
			break;
		*s = '/';
	}
	snprintf(p, sizeof(p), "%s/www/api/v1/keys/sae-B/enc_keys", dir);
	if (write_text(p, body, blen)) {
		*why = "cannot write the nginx document";
		return 1;
	}
	/* Same TLS as qw_https: 1.2+ (the client asks for 1.3), client
	 * certificates verified against the CA, keep-alive without limit,
	 * one worker for our one event loop. */
	snprintf(conf, sizeof(conf),
		 "%s"
		 "worker_processes 1;\n"
		 "daemon off;\n"
		 "pid %s/nginx.pid;\n"
		 "error_log %s/nginx-error.log warn;\n"
		 "events { worker_connections 1024; }\n"
		 "http {\n"
		 "  access_log off;\n"
		 "  client_body_temp_path %s/tmp-body;\n"
		 "  proxy_temp_path %s/tmp-proxy;\n"
		 "  fastcgi_temp_path %s/tmp-fcgi;\n"
		 "  uwsgi_temp_path %s/tmp-uwsgi;\n"
		 "  scgi_temp_path %s/tmp-scgi;\n"
		 "  keepalive_requests 100000000;\n"
		 "  keepalive_timeout 60s;\n"
		 "  server {\n"
		 "    listen 127.0.0.1:%u ssl;\n"
		 "    ssl_certificate %s/node-kme-bench.crt;\n"
		 "    ssl_certificate_key %s/node-kme-bench.key;\n"
		 "    ssl_client_certificate %s/ca.crt;\n"
		 "    ssl_verify_client on;\n"
		 "    ssl_protocols TLSv1.2 TLSv1.3;\n"
		 "    location / { root %s/www; default_type application/json; }\n"
		 "  }\n"
		 "}\n",
		 geteuid() == 0 ? "user root;\n" : "", dir, dir, dir, dir, dir, dir, dir, port, dir,
		 dir, dir, dir);
	snprintf(p, sizeof(p), "%s/nginx.conf", dir);
	if (write_text(p, conf, strlen(conf))) {
		*why = "cannot write nginx.conf";
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		*why = "fork failed";
		return 1;
	}
	if (pid == 0) {
		char prefix[600];

		snprintf(prefix, sizeof(prefix), "%s/", dir);
		execl(NGINX, "nginx", "-q", "-p", prefix, "-c", p, (char *)NULL);
		_exit(127);
	}
	if (wait_listening(port, pid)) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
		*why = "nginx did not start (see its error log)";
		return 1;
	}
	ret = run_load(dir, port, clients, seconds, f);
	/* SIGTERM: fast shutdown of master and worker; nothing stays behind. */
	kill(pid, SIGTERM);
	waitpid(pid, &status, 0);
	if (ret) {
		*why = "load generator failed";
		return 1;
	}
	if (f->body_len != blen) {
		*why = "nginx answered with another body";
		return 1;
	}
	return 0;
}

/* ---- driver ---- */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: qwave bench etsi014 [--source node|memory] [--sync normal|full]\n"
		"                           [--master leader|follower]\n"
		"                           [--clients C] [--seconds S] [--client raw|curl]\n"
		"                           [--no-nginx] [--json]\n\n"
		"ETSI GS QKD 014 Get key (enc_keys, 1 key of %d bits) over keep-alive\n"
		"mutual-TLS (TLS 1.3, ECDSA P-256) connections from C concurrent clients\n"
		"(one thread and one connection each) for S seconds after 0.5 s of warm-up.\n"
		"Then the same load against nginx (" NGINX ", one worker) serving a\n"
		"static body of the same size with the same TLS settings. The load\n"
		"generator shares the machine's cores with the servers it measures.\n\n"
		"  --source node    keys from the real key manager (default): two nodes on\n"
		"                   two event-loop threads, each with its own encrypted\n"
		"                   SQLite store, KM link over loopback TCP; the answer\n"
		"                   waits for the slave node's commit (ETSI 014). Afterwards\n"
		"                   every key delivered is checked to be RESERVED at the slave\n"
		"  --source memory  keys from an in-memory pool of random material (the\n"
		"                   HTTPS + ETSI front end's own cost)\n"
		"  --sync MODE      the stores' synchronous mode: normal (default) or full\n"
		"  --master leader  the master SAE's node is the KM link's leader (default):\n"
		"                   it cuts, KEYS_NEW, waits for the slave node's ACK\n"
		"  --master follower  the master SAE's node is the follower: KEYS_REQ, the\n"
		"                   slave node cuts and announces, the master's node applies\n"
		"  --clients C      concurrent connections (default 8, at most %d)\n"
		"  --seconds S      measured time per server (default 5)\n"
		"  --client raw     load generator: a minimal blocking OpenSSL HTTP/1.1\n"
		"                   client (default; cheapest on the shared CPU)\n"
		"  --client curl    libcurl easy handles\n"
		"  --no-nginx       skip the nginx comparison\n"
		"  --json           print one JSON object\n",
		KEY_BITS, MAX_CLIENTS);
}

int qw_bench_etsi014(int argc, char **argv)
{
	int clients = 8, json = 0, nginx = 1, ret = QW_EXIT_FAIL, err;
	double seconds = 5;
	char dir[] = "/tmp/qwave-bench-etsi014-XXXXXX";
	struct qw_pki_issue_opts io = { .kind = QW_PKI_NODE, .id = "kme-bench" };
	struct figures q, n;
	struct qwave_run run;
	const char *why = NULL, *source;
	int have_nginx = 0;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	for (int i = 1; i < argc; i++) {
		uint64_t v;
		double d;

		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return QW_EXIT_OK;
		} else if (!strcmp(argv[i], "--json")) {
			json = 1;
		} else if (!strcmp(argv[i], "--no-nginx")) {
			nginx = 0;
		} else if (!strcmp(argv[i], "--client") && i + 1 < argc) {
			i++;
			if (!strcmp(argv[i], "curl"))
				use_curl = 1;
			else if (!strcmp(argv[i], "raw"))
				use_curl = 0;
			else
				return qw_cli_usage_error("bench etsi014", "--client: raw or curl");
		} else if (!strcmp(argv[i], "--source") && i + 1 < argc) {
			i++;
			if (!strcmp(argv[i], "node"))
				use_memory = 0;
			else if (!strcmp(argv[i], "memory"))
				use_memory = 1;
			else
				return qw_cli_usage_error("bench etsi014", "--source: node or memory");
		} else if (!strcmp(argv[i], "--master") && i + 1 < argc) {
			i++;
			if (!strcmp(argv[i], "leader")) {
				node_id[0] = "kme-A";
				node_id[1] = "kme-B";
			} else if (!strcmp(argv[i], "follower")) {
				node_id[0] = "kme-B";
				node_id[1] = "kme-A";
			} else {
				return qw_cli_usage_error("bench etsi014", "--master: leader or follower");
			}
		} else if (!strcmp(argv[i], "--sync") && i + 1 < argc) {
			i++;
			if (!strcmp(argv[i], "normal"))
				node_sync = QW_STORE_SYNC_NORMAL;
			else if (!strcmp(argv[i], "full"))
				node_sync = QW_STORE_SYNC_FULL;
			else
				return qw_cli_usage_error("bench etsi014", "--sync: normal or full");
		} else if (!strcmp(argv[i], "--clients") && i + 1 < argc) {
			if (qw_cli_parse_u64(argv[++i], &v) || v < 1 || v > MAX_CLIENTS)
				return qw_cli_usage_error("bench etsi014", "--clients: 1..%d",
							  MAX_CLIENTS);
			clients = (int)v;
		} else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
			if (qw_cli_parse_double(argv[++i], &d) || !(d >= 0.5 && d <= 600))
				return qw_cli_usage_error("bench etsi014", "--seconds: 0.5..600");
			seconds = d;
		} else {
			return qw_cli_usage_error("bench etsi014", "unknown argument '%s'", argv[i]);
		}
	}
	source = use_memory ? "in-memory pool of random material (bench_etsi014.c)"
		 : node_sync == QW_STORE_SYNC_FULL
			 ? "key manager: two nodes, SQLite stores synchronous=FULL, KM link over loopback TCP"
			 : "key manager: two nodes, SQLite stores synchronous=NORMAL, KM link over loopback TCP";
	signal(SIGPIPE, SIG_IGN);
	qw_log_set_level(QW_LOG_ERROR); /* link up/down notes would mix with the figures */
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (!mkdtemp(dir)) {
		curl_global_cleanup();
		return qw_cli_fail("cannot create a scratch directory in /tmp");
	}
	qw_cli_progress("issuing certificates in %s", dir);
	if ((err = qw_pki_ca_init(dir, QW_PK_ECDSA_P256, "bench CA", 1)) ||
	    (err = qw_pki_issue(dir, &io))) {
		qw_cli_fail("PKI setup failed: %s", qw_strerror(err));
		goto out;
	}
	io.kind = QW_PKI_SAE;
	io.id = "sae-A";
	if ((err = qw_pki_issue(dir, &io))) {
		qw_cli_fail("PKI setup failed: %s", qw_strerror(err));
		goto out;
	}
	if ((err = bench_qwave(dir, clients, seconds, &q, &run))) {
		qw_cli_fail("benchmark failed: %s", qw_strerror(err));
		goto out;
	}
	if (run.slave_keys < run.keys) {
		qw_cli_fail("%llu keys delivered to the master SAE but only %llu committed at the slave's node",
			    (unsigned long long)run.keys, (unsigned long long)run.slave_keys);
		goto out;
	}
	if (nginx) {
		qw_cli_progress("nginx: %d clients, %.1f s", clients, seconds);
		have_nginx = bench_nginx(dir, clients, seconds, &n, &why) == 0;
	} else {
		why = "skipped (--no-nginx)";
	}
	qw_cli_progress_done();
	if (json) {
		json_t *o = json_pack("{s:s, s:i, s:f, s:i, s:s, s:s, s:I, s:I, s:I, s:f, s:f, s:f}",
				      "bench", "etsi014", "clients", clients, "seconds", seconds,
				      "key_bits", KEY_BITS, "key_source", source,
				      "load_generator",
				      use_curl ? "libcurl easy handles, one thread per client, same machine"
					       : "raw OpenSSL HTTP/1.1 client, one thread per client, same machine",
				      "cores", (json_int_t)ncpu, "requests", (json_int_t)q.requests,
				      "errors", (json_int_t)q.errors, "requests_per_s", q.rps,
				      "p50_ms", q.p50, "p99_ms", q.p99);

		json_object_set_new(o, "body_bytes", json_integer((json_int_t)q.body_len));
		json_object_set_new(o, "keys_delivered", json_integer((json_int_t)run.keys));
		if (!use_memory) {
			json_object_set_new(o, "keys_at_slave", json_integer((json_int_t)run.slave_keys));
			json_object_set_new(o, "keys_per_batch",
					    json_real(run.batches ? (double)run.keys / (double)run.batches : 0));
		}
		json_object_set_new(o, "server_cpu_us_per_request",
				    json_real(run.keys ? run.server_cpu_s * 1e6 / (double)run.keys : 0));
		json_object_set_new(o, "client_cpu_us_per_request", json_real(q.client_cpu_us));
		json_object_set_new(o, "nginx_requests_per_s", have_nginx ? json_real(n.rps) : json_null());
		json_object_set_new(o, "nginx_p50_ms", have_nginx ? json_real(n.p50) : json_null());
		json_object_set_new(o, "nginx_p99_ms", have_nginx ? json_real(n.p99) : json_null());
		json_object_set_new(o, "nginx_errors", have_nginx ? json_integer((json_int_t)n.errors) : json_null());
		json_object_set_new(o, "ratio_to_nginx",
				    have_nginx && n.rps > 0 ? json_real(q.rps / n.rps) : json_null());
		if (!have_nginx)
			json_object_set_new(o, "nginx_note", json_string(why));
		qw_cli_print_json(o);
	} else {
		printf("ETSI 014 Get key, 1 key of %d bits, %d keep-alive mutual-TLS clients, %.1f s\n"
		       "(keys: %s;\n load generator: %s on the same %ld cores)\n\n",
		       KEY_BITS, clients, seconds, source, use_curl ? "libcurl" : "raw OpenSSL client",
		       ncpu);
		printf("  %-8s %12s %10s %10s %8s\n", "server", "requests/s", "p50 (ms)", "p99 (ms)",
		       "errors");
		printf("  %-8s %12.0f %10.3f %10.3f %8llu\n", "qwave", q.rps, q.p50, q.p99,
		       (unsigned long long)q.errors);
		if (have_nginx)
			printf("  %-8s %12.0f %10.3f %10.3f %8llu\n\n  qwave / nginx = %.2f\n", "nginx",
			       n.rps, n.p50, n.p99, (unsigned long long)n.errors, q.rps / n.rps);
		else
			printf("  nginx: %s\n", why);
		printf("  response body %zu bytes, %llu keys delivered\n", q.body_len,
		       (unsigned long long)run.keys);
		if (!use_memory)
			printf("  %llu keys committed at the slave's node, %.1f keys per KM-link batch\n",
			       (unsigned long long)run.slave_keys,
			       run.batches ? (double)run.keys / (double)run.batches : 0);
		printf("  CPU per request: qwave server thread(s) %.1f us, load generator %.1f us\n",
		       run.keys ? run.server_cpu_s * 1e6 / (double)run.keys : 0, q.client_cpu_us);
	}
	ret = QW_EXIT_OK;
out:
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	curl_global_cleanup();
	return ret;
}
