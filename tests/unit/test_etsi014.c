/* ETSI GS QKD 014 over HTTPS with mutual TLS, end to end: a CA and node/SAE
 * certificates from pki.h, the server on 127.0.0.1 (kernel-chosen port) in
 * a thread, libcurl as the SAEs. The key manager is a test double of kme.h
 * holding keys in memory and enforcing the spec's rules (keys go to the
 * named slaves only, each once). Also the pure request parser. */
#define _XOPEN_SOURCE 700
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>
#include <openssl/rand.h>

#include "qwave/encoding.h"
#include "qwave/etsi014.h"
#include "qwave/https.h"
#include "qwave/kme.h"
#include "qwave/pki.h"
#include "qwave/uuid.h"

/* ---- the key manager test double ---- */

#define MAXK 512
#define NSAE 3

struct tkey {
	char id[QW_KEY_ID_STR_BYTES];
	uint8_t mat[128];
	uint32_t bits;
	char master[QW_KME_ID_MAX + 1];
	char slaves[4][QW_KME_ID_MAX + 1]; /* "" once delivered to that slave */
	int live;
};

struct tkme {
	struct event_base *base;
	struct tkey keys[MAXK];
	uint64_t pool_bits; /* key material left to cut keys from */
};

static const char *const saes[NSAE] = { "sae-A", "sae-B", "sae-C" };

static int known(const char *sae)
{
	for (int i = 0; i < NSAE; i++)
		if (!strcmp(sae, saes[i]))
			return 1;
	return 0;
}

static int t_status(void *ctx, const char *caller, const char *slave, struct qw_kme_status *o)
{
	struct tkme *k = ctx;

	if (!known(caller))
		return QW_EPERM;
	if (!known(slave))
		return QW_ENOTFOUND;
	snprintf(o->source_kme_id, sizeof(o->source_kme_id), "kme-A");
	snprintf(o->target_kme_id, sizeof(o->target_kme_id), "kme-B");
	o->key_size = 256;
	o->stored_key_count = k->pool_bits / 256;
	o->max_key_count = 100000;
	o->max_key_per_request = 128;
	o->max_key_size = 1024;
	o->min_key_size = 64;
	o->max_sae_id_count = 2;
	return 0;
}

static void t_get_keys(void *ctx, const struct qw_kme_get_key_req *r, qw_kme_keys_cb cb, void *arg)
{
	struct tkme *k = ctx;
	struct qw_kme_key *out;
	size_t done = 0;

	if ((uint64_t)r->number * r->size_bits > k->pool_bits) {
		cb(arg, QW_EAGAIN, NULL, 0);
		return;
	}
	for (size_t i = 0; i < r->n_additional; i++)
		if (!known(r->additional_slaves[i])) {
			cb(arg, QW_ENOTFOUND, NULL, 0);
			return;
		}
	out = calloc(r->number, sizeof(*out));
	assert_non_null(out);
	for (size_t i = 0; i < MAXK && done < r->number; i++) {
		struct tkey *t = &k->keys[i];
		struct qw_uuid u;

		if (t->live)
			continue;
		memset(t, 0, sizeof(*t));
		t->live = 1;
		t->bits = r->size_bits;
		assert_int_equal(RAND_bytes(t->mat, (int)(t->bits / 8)), 1);
		assert_int_equal(qw_uuid_generate(&u), 0);
		qw_uuid_format(&u, t->id);
		snprintf(t->master, sizeof(t->master), "%s", r->master_sae);
		snprintf(t->slaves[0], sizeof(t->slaves[0]), "%s", r->slave_sae);
		for (size_t j = 0; j < r->n_additional; j++)
			snprintf(t->slaves[j + 1], sizeof(t->slaves[0]), "%s", r->additional_slaves[j]);
		memcpy(out[done].key_id, t->id, sizeof(t->id));
		out[done].size_bits = t->bits;
		out[done].key = malloc(t->bits / 8);
		memcpy(out[done].key, t->mat, t->bits / 8);
		done++;
	}
	assert_int_equal(done, r->number);
	k->pool_bits -= (uint64_t)r->number * r->size_bits;
	cb(arg, 0, out, done);
}

static struct tkey *find(struct tkme *k, const char *id)
{
	for (int i = 0; i < MAXK; i++)
		if (k->keys[i].live && !strcmp(k->keys[i].id, id))
			return &k->keys[i];
	return NULL;
}

static int slave_index(const struct tkey *t, const char *sae)
{
	for (int i = 0; i < 4; i++)
		if (t->slaves[i][0] && !strcmp(t->slaves[i], sae))
			return i;
	return -1;
}

/* Completed later on the loop, as a real KM would after a KM-link round
 * trip, so the HTTP layer's asynchronous path is exercised. */
struct deferred {
	qw_kme_keys_cb cb;
	void *arg;
	int err;
	struct qw_kme_key *keys;
	size_t n;
};

static void fire(evutil_socket_t fd, short what, void *arg)
{
	struct deferred *d = arg;

	(void)fd;
	(void)what;
	d->cb(d->arg, d->err, d->keys, d->n);
	free(d);
}

static void t_get_with_ids(void *ctx, const char *caller, const char *master,
			   const char *const *ids, size_t n, qw_kme_keys_cb cb, void *arg)
{
	struct tkme *k = ctx;
	struct deferred *d = calloc(1, sizeof(*d));
	int missing = 0;

	assert_non_null(d);
	d->cb = cb;
	d->arg = arg;
	/* 5.4: 401 unless the caller was a named slave of every key found;
	 * judged before "not found" so nobody probes others' key IDs. */
	for (size_t i = 0; i < n; i++) {
		struct tkey *t = find(k, ids[i]);

		if (!t) {
			missing = 1;
			continue;
		}
		if (strcmp(t->master, master) || slave_index(t, caller) < 0) {
			d->err = QW_EPERM;
			goto out;
		}
	}
	if (missing) {
		d->err = QW_ENOTFOUND;
		goto out;
	}
	d->keys = calloc(n, sizeof(*d->keys));
	assert_non_null(d->keys);
	for (size_t i = 0; i < n; i++) {
		struct tkey *t = find(k, ids[i]);
		int s = slave_index(t, caller);

		memcpy(d->keys[i].key_id, t->id, sizeof(t->id));
		d->keys[i].size_bits = t->bits;
		d->keys[i].key = malloc(t->bits / 8);
		memcpy(d->keys[i].key, t->mat, t->bits / 8);
		t->slaves[s][0] = '\0'; /* each slave gets it once */
		if (!t->slaves[0][0] && !t->slaves[1][0] && !t->slaves[2][0] && !t->slaves[3][0])
			t->live = 0;
	}
	d->n = n;
out:
	assert_int_equal(event_base_once(k->base, -1, EV_TIMEOUT, fire, d, NULL), 0);
}

static const struct qw_kme_ops tops = {
	.status = t_status,
	.get_keys = t_get_keys,
	.get_keys_with_ids = t_get_with_ids,
};

/* ---- server fixture ---- */

static char dir[64], other[80];
static struct tkme kme;
static struct event_base *base;
static struct qw_https_server *srv, *srv_slow;
static uint16_t port_slow;
static struct qw_etsi014 *api;
static pthread_t loop_thread;
static uint16_t port;
static char last_note[128], last_peer[QW_PKI_ID_MAX + 2];
static int last_status;

static void access_log(void *arg, const struct qw_https_access *a)
{
	(void)arg;
	snprintf(last_note, sizeof(last_note), "%s", a->note);
	snprintf(last_peer, sizeof(last_peer), "%s", a->peer_id);
	last_status = a->status;
}

/* A generic route as /metrics will use: peer identity, immediate reply. */
static void metrics(void *arg, struct qw_https_req *r)
{
	char body[160];
	size_t len;
	int n;

	(void)arg;
	(void)qw_https_req_body(r, &len);
	n = snprintf(body, sizeof(body), "{\"peer\":\"%s\",\"kind\":%d,\"path\":\"%s\",\"query\":\"%s\"}",
		     qw_https_req_peer_id(r) ? qw_https_req_peer_id(r) : "",
		     (int)qw_https_req_peer_kind(r), qw_https_req_path(r),
		     qw_https_req_query(r) ? qw_https_req_query(r) : "");
	qw_https_reply(r, 200, body, (size_t)n);
}

static void *loop(void *arg)
{
	(void)arg;
	event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void issue(const char *d, enum qw_pki_kind kind, const char *id)
{
	struct qw_pki_issue_opts o = { .kind = kind, .id = id };

	assert_int_equal(qw_pki_issue(d, &o), 0);
}

static int setup(void **state)
{
	char crt[128], key[128], ca[128];
	struct qw_https_opts o = { 0 };
	int err;

	(void)state;
	strcpy(dir, "/tmp/qw-test-etsi-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(other, sizeof(other), "%s/other", dir);
	if (qw_pki_ca_init(dir, QW_PK_ECDSA_P256, "test CA", 0) ||
	    qw_pki_ca_init(other, QW_PK_ECDSA_P256, "test CA", 0))
		return -1;
	issue(dir, QW_PKI_NODE, "kme-A");
	issue(dir, QW_PKI_NODE, "kme-B");
	for (int i = 0; i < NSAE; i++)
		issue(dir, QW_PKI_SAE, saes[i]);
	issue(other, QW_PKI_SAE, "sae-A"); /* same name, foreign CA */

	curl_global_init(CURL_GLOBAL_DEFAULT);
	/* As qwaved does (https.h): a client that gives up mid-reply must not
	 * kill the server's process. */
	signal(SIGPIPE, SIG_IGN);
	evthread_use_pthreads();
	base = event_base_new();
	kme.base = base;
	kme.pool_bits = 1u << 20;
	snprintf(crt, sizeof(crt), "%s/node-kme-A.crt", dir);
	snprintf(key, sizeof(key), "%s/node-kme-A.key", dir);
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	o.cert_file = crt;
	o.key_file = key;
	o.ca_file = ca;
	o.access_log = access_log;
	srv = qw_https_server_new(base, &o, &err);
	if (!srv)
		return -1;
	port = qw_https_server_port(srv);
	api = qw_etsi014_new(srv, &tops, &kme, &err);
	if (!api || port == 0)
		return -1;
	if (qw_https_route(srv, QW_HTTP_GET, "/metrics", metrics, NULL))
		return -1;
	/* a second server with a 1 s timeout, for idle connections */
	o.timeout_s = 1;
	o.access_log = NULL;
	if (!(srv_slow = qw_https_server_new(base, &o, &err)))
		return -1;
	port_slow = qw_https_server_port(srv_slow);
	return pthread_create(&loop_thread, NULL, loop, NULL);
}

static int teardown(void **state)
{
	(void)state;
	event_base_loopbreak(base);
	pthread_join(loop_thread, NULL);
	qw_https_server_free(srv);
	qw_https_server_free(srv_slow);
	for (int i = 0; i < 10; i++) /* deferred bufferevent frees, which may defer more */
		event_base_loop(base, EVLOOP_NONBLOCK);
	qw_etsi014_free(api);
	event_base_free(base);
	curl_global_cleanup();
	return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- client ---- */

struct resp {
	long status;
	char body[1 << 17];
	size_t len;
	json_t *json;
	long connects;
	CURLcode rc;
};

static size_t sink(char *p, size_t sz, size_t n, void *arg)
{
	struct resp *r = arg;
	size_t len = sz * n;

	if (r->len + len >= sizeof(r->body))
		return 0;
	memcpy(r->body + r->len, p, len);
	r->len += len;
	r->body[r->len] = '\0';
	return len;
}

/* An SAE's keep-alive client: cert_dir/<kind>-<id>.crt, or no certificate
 * at all when id is NULL. */
static CURL *client(const char *cert_dir, const char *kind, const char *id)
{
	CURL *c = curl_easy_init();
	char p[160];

	assert_non_null(c);
	snprintf(p, sizeof(p), "%s/ca.crt", dir);
	curl_easy_setopt(c, CURLOPT_CAINFO, p);
	if (id) {
		snprintf(p, sizeof(p), "%s/%s-%s.crt", cert_dir, kind, id);
		curl_easy_setopt(c, CURLOPT_SSLCERT, p);
		snprintf(p, sizeof(p), "%s/%s-%s.key", cert_dir, kind, id);
		curl_easy_setopt(c, CURLOPT_SSLKEY, p);
	}
	curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
	return c;
}

static struct resp *req(CURL *c, const char *method, const char *target, const char *body,
			size_t blen)
{
	static struct resp r;
	struct curl_slist *h = NULL;
	char url[1024];
	json_error_t je;

	json_decref(r.json);
	memset(&r, 0, sizeof(r));
	snprintf(url, sizeof(url), "https://localhost:%u%s", port, target);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		h = curl_slist_append(h, "Content-Type: application/json");
		h = curl_slist_append(h, "Expect:"); /* no 1 s wait for 100-continue */
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)blen);
	} else {
		curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	r.rc = curl_easy_perform(c);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(h);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
	curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &r.connects);
	/* 413 and refusals of unknown methods come from libevent itself
	 * (HTML), before any handler runs. */
	if (r.rc == CURLE_OK && r.len && r.status != 413 && strcmp(method, "FOO")) {
		char *ct = NULL;

		curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
		assert_non_null(ct);
		assert_string_equal(ct, "application/json");
		r.json = json_loadb(r.body, r.len, 0, &je);
	}
	return &r;
}

static struct resp *get(CURL *c, const char *target)
{
	return req(c, "GET", target, NULL, 0);
}

static struct resp *post(CURL *c, const char *target, const char *body)
{
	return req(c, "POST", target, body, strlen(body));
}

static void expect_error(const struct resp *r, long status, const char *message)
{
	assert_int_equal(r->rc, CURLE_OK);
	assert_int_equal(r->status, status);
	assert_non_null(r->json);
	assert_string_equal(json_string_value(json_object_get(r->json, "message")), message);
}

static void expect_error_prefix(const struct resp *r, long status, const char *prefix)
{
	const char *m;

	assert_int_equal(r->rc, CURLE_OK);
	assert_int_equal(r->status, status);
	assert_non_null(r->json);
	m = json_string_value(json_object_get(r->json, "message"));
	assert_non_null(m);
	assert_memory_equal(m, prefix, strlen(prefix));
}

/* Keys of a Key container: n entries, each a UUID and size_bits of key. */
struct got {
	char id[8][QW_KEY_ID_STR_BYTES];
	uint8_t key[8][128];
};

static void expect_keys(const struct resp *r, size_t n, uint32_t bits, struct got *g)
{
	json_t *keys, *k;
	size_t i;

	assert_int_equal(r->rc, CURLE_OK);
	assert_int_equal(r->status, 200);
	assert_non_null(r->json);
	assert_int_equal(json_object_size(r->json), 1); /* no key_container_extension */
	keys = json_object_get(r->json, "keys");
	assert_true(json_is_array(keys));
	assert_int_equal(json_array_size(keys), n);
	json_array_foreach(keys, i, k) {
		const char *id = json_string_value(json_object_get(k, "key_ID"));
		const char *b64 = json_string_value(json_object_get(k, "key"));
		uint8_t buf[256];
		size_t len;
		struct qw_uuid u;

		assert_int_equal(json_object_size(k), 2);
		assert_non_null(id);
		assert_non_null(b64);
		assert_int_equal(qw_uuid_parse(&u, id), 0);
		assert_int_equal(qw_base64_decode(buf, sizeof(buf), &len, b64, strlen(b64)), 0);
		assert_int_equal(len, bits / 8);
		if (g && i < 8) {
			snprintf(g->id[i], sizeof(g->id[i]), "%s", id);
			memcpy(g->key[i], buf, len);
		}
	}
}

/* ---- tests ---- */

static void test_status(void **state)
{
	CURL *a = client(dir, "sae", "sae-A");
	struct resp *r;
	json_t *j;

	(void)state;
	r = get(a, "/api/v1/keys/sae-B/status");
	assert_int_equal(r->rc, CURLE_OK);
	assert_int_equal(r->status, 200);
	j = r->json;
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "source_KME_ID")), "kme-A");
	assert_string_equal(json_string_value(json_object_get(j, "target_KME_ID")), "kme-B");
	assert_string_equal(json_string_value(json_object_get(j, "master_SAE_ID")), "sae-A");
	assert_string_equal(json_string_value(json_object_get(j, "slave_SAE_ID")), "sae-B");
	assert_int_equal(json_integer_value(json_object_get(j, "key_size")), 256);
	assert_int_equal(json_integer_value(json_object_get(j, "stored_key_count")),
			 kme.pool_bits / 256);
	assert_int_equal(json_integer_value(json_object_get(j, "max_key_count")), 100000);
	assert_int_equal(json_integer_value(json_object_get(j, "max_key_per_request")), 128);
	assert_int_equal(json_integer_value(json_object_get(j, "max_key_size")), 1024);
	assert_int_equal(json_integer_value(json_object_get(j, "min_key_size")), 64);
	assert_int_equal(json_integer_value(json_object_get(j, "max_SAE_ID_count")), 2);
	assert_int_equal(json_object_size(j), 11); /* status_extension omitted */
	assert_string_equal(last_peer, "sae-A");

	/* the SAE ID in the URL is percent-decoded */
	r = get(a, "/api/v1/keys/sae%2DB/status");
	assert_int_equal(r->status, 200);
	assert_string_equal(json_string_value(json_object_get(r->json, "slave_SAE_ID")), "sae-B");
	expect_error(get(a, "/api/v1/keys/sae%2/status"), 400,
		     "slave_SAE_ID in the URL is not a valid SAE ID");
	expect_error(get(a, "/api/v1/keys/sae%00B/status"), 400,
		     "slave_SAE_ID in the URL is not a valid SAE ID");
	expect_error(get(a, "/api/v1/keys/sae-Z/status"), 400,
		     "one or more SAE IDs are unknown to this KME");
	expect_error(get(a, "/api/v1/keys/sae-B/status?number=1"), 400,
		     "Get status takes no query parameters");
	r = post(a, "/api/v1/keys/sae-B/status", "{}");
	expect_error(r, 405, "Get status takes GET only");
	curl_easy_cleanup(a);
}

static void test_enc_dec_get(void **state)
{
	CURL *a = client(dir, "sae", "sae-A"), *b = client(dir, "sae", "sae-B");
	struct got g, h;
	struct resp *r;
	char path[200];

	(void)state;
	/* default: one key of key_size bits */
	r = get(a, "/api/v1/keys/sae-B/enc_keys");
	expect_keys(r, 1, 256, &g);
	assert_string_equal(last_note, "keys=1 size=256");
	/* the slave gets the same key by its ID, once */
	snprintf(path, sizeof(path), "/api/v1/keys/sae-A/dec_keys?key_ID=%s", g.id[0]);
	r = get(b, path);
	expect_keys(r, 1, 256, &h);
	assert_string_equal(h.id[0], g.id[0]);
	assert_memory_equal(h.key[0], g.key[0], 32);
	expect_error(get(b, path), 400, "one or more keys specified are not found on KME");

	/* number and size as URI parameters */
	r = get(a, "/api/v1/keys/sae-B/enc_keys?number=3&size=512");
	expect_keys(r, 3, 512, &g);
	assert_string_not_equal(g.id[0], g.id[1]);
	assert_memory_not_equal(g.key[0], g.key[1], 64);
	r = get(a, "/api/v1/keys/sae-B/enc_keys?size=64");
	expect_keys(r, 1, 64, NULL);
	/* key IDs in upper case name the same keys */
	for (int i = 0; i < 3; i++) {
		char up[QW_KEY_ID_STR_BYTES];

		for (int c = 0; c < 36; c++)
			up[c] = (char)(g.id[i][c] >= 'a' && g.id[i][c] <= 'f' ? g.id[i][c] - 32 : g.id[i][c]);
		up[36] = '\0';
		snprintf(path, sizeof(path), "/api/v1/keys/sae-A/dec_keys?key_ID=%s", up);
		r = get(b, path);
		expect_keys(r, 1, 512, &h);
		assert_string_equal(h.id[0], g.id[i]);
		assert_memory_equal(h.key[0], g.key[i], 64);
	}
	curl_easy_cleanup(a);
	curl_easy_cleanup(b);
}

static void test_enc_dec_post(void **state)
{
	CURL *a = client(dir, "sae", "sae-A"), *b = client(dir, "sae", "sae-B"),
	     *c = client(dir, "sae", "sae-C");
	struct got g, h;
	struct resp *r;
	char body[600];

	(void)state;
	r = post(a, "/api/v1/keys/sae-B/enc_keys", "{\"number\": 3, \"size\": 128}");
	expect_keys(r, 3, 128, &g);
	snprintf(body, sizeof(body),
		 "{\"key_IDs\": [{\"key_ID\": \"%s\"}, {\"key_ID\": \"%s\", \"key_ID_extension\": {}},"
		 " {\"key_ID\": \"%s\"}], \"key_IDs_extension\": {\"x\": 1}}",
		 g.id[2], g.id[0], g.id[1]);
	r = post(b, "/api/v1/keys/sae-A/dec_keys", body);
	expect_keys(r, 3, 128, &h);
	assert_string_equal(h.id[0], g.id[2]);
	assert_memory_equal(h.key[0], g.key[2], 16);
	assert_string_equal(h.id[1], g.id[0]);
	assert_memory_equal(h.key[1], g.key[0], 16);
	assert_string_equal(h.id[2], g.id[1]);
	assert_memory_equal(h.key[2], g.key[1], 16);

	/* the largest request: 128 keys of 1024 bits, a body of several TLS
	 * records */
	r = post(a, "/api/v1/keys/sae-B/enc_keys", "{\"number\": 128, \"size\": 1024}");
	expect_keys(r, 128, 1024, NULL);
	assert_true(r->len > 16384);

	/* empty Key request, as {} or no body at all */
	expect_keys(post(a, "/api/v1/keys/sae-B/enc_keys", "{}"), 1, 256, NULL);
	expect_keys(post(a, "/api/v1/keys/sae-B/enc_keys", ""), 1, 256, NULL);
	/* extension_optional is ignored */
	expect_keys(post(a, "/api/v1/keys/sae-B/enc_keys",
			 "{\"number\": 2, \"extension_optional\": [{\"abc_max_age\": 30000}]}"),
		    2, 256, NULL);

	/* multicast: the same key for sae-B and sae-C */
	r = post(a, "/api/v1/keys/sae-B/enc_keys",
		 "{\"number\": 1, \"size\": 1024, \"additional_slave_SAE_IDs\": [\"sae-C\"]}");
	expect_keys(r, 1, 1024, &g);
	snprintf(body, sizeof(body), "{\"key_IDs\": [{\"key_ID\": \"%s\"}]}", g.id[0]);
	r = post(c, "/api/v1/keys/sae-A/dec_keys", body);
	expect_keys(r, 1, 1024, &h);
	assert_memory_equal(h.key[0], g.key[0], 128);
	r = post(b, "/api/v1/keys/sae-A/dec_keys", body);
	expect_keys(r, 1, 1024, &h);
	assert_memory_equal(h.key[0], g.key[0], 128);
	expect_error(post(b, "/api/v1/keys/sae-A/dec_keys", body), 400,
		     "one or more keys specified are not found on KME");
	curl_easy_cleanup(a);
	curl_easy_cleanup(b);
	curl_easy_cleanup(c);
}

static void test_errors(void **state)
{
	CURL *a = client(dir, "sae", "sae-A"), *b = client(dir, "sae", "sae-B");
	const char *enc = "/api/v1/keys/sae-B/enc_keys", *dec = "/api/v1/keys/sae-A/dec_keys";
	struct resp *r;
	json_t *d;

	(void)state;
	expect_error_prefix(post(a, enc, "{\"number\": 1"), 400, "malformed JSON");
	expect_error_prefix(post(a, enc, "{\"number\": 1, \"number\": 2}"), 400, "malformed JSON");
	expect_error(post(a, enc, "[1]"), 400, "Key request shall be a JSON object");
	expect_error(post(a, enc, "{\"number\": \"3\"}"), 400, "number shall be an integer");
	expect_error(post(a, enc, "{\"number\": 2.0}"), 400, "number shall be an integer");
	expect_error(post(a, enc, "{\"number\": 0}"), 400, "number shall be a positive integer");
	expect_error(post(a, enc, "{\"number\": -4}"), 400, "number shall be a positive integer");
	expect_error(post(a, enc, "{\"number\": 129}"), 400,
		     "number exceeds max_key_per_request (128)");
	expect_error(get(a, "/api/v1/keys/sae-B/enc_keys?number=129"), 400,
		     "number exceeds max_key_per_request (128)");
	expect_error(get(a, "/api/v1/keys/sae-B/enc_keys?number=0"), 400,
		     "number shall be a positive integer");
	expect_error(get(a, "/api/v1/keys/sae-B/enc_keys?number=1x"), 400,
		     "number shall be a positive integer");
	/* clause 6.2: the exact message */
	expect_error(post(a, enc, "{\"size\": 100}"), 400, "size shall be a multiple of 8");
	expect_error(get(a, "/api/v1/keys/sae-B/enc_keys?size=257"), 400,
		     "size shall be a multiple of 8");
	expect_error(post(a, enc, "{\"size\": 2048}"), 400,
		     "size shall be between min_key_size (64) and max_key_size (1024)");
	expect_error(post(a, enc, "{\"size\": 32}"), 400,
		     "size shall be between min_key_size (64) and max_key_size (1024)");
	expect_error(post(a, enc, "{\"size\": \"256\"}"), 400, "size shall be an integer");
	expect_error(post(a, enc, "{\"additional_slave_SAE_IDs\": [\"sae-C\", \"sae-A\", \"x\"]}"),
		     400, "additional_slave_SAE_IDs exceeds max_SAE_ID_count (2)");
	expect_error(post(a, enc, "{\"additional_slave_SAE_IDs\": \"sae-C\"}"), 400,
		     "additional_slave_SAE_IDs shall be an array of strings");
	expect_error(post(a, enc, "{\"additional_slave_SAE_IDs\": [\"sae-C\", \"sae-C\"]}"), 400,
		     "additional_slave_SAE_IDs lists an SAE ID twice");
	expect_error(post(a, enc, "{\"additional_slave_SAE_IDs\": [\"sae-Q\"]}"), 400,
		     "one or more SAE IDs are unknown to this KME");
	expect_error(post(a, enc, "{\"numbr\": 1}"), 400, "unknown field 'numbr' in Key request");
	expect_error(post(a, "/api/v1/keys/sae-B/enc_keys?number=1", "{}"), 400,
		     "POST requests take their parameters in the JSON body, not in the query");
	expect_error(get(a, "/api/v1/keys/sae-B/enc_keys?count=1"), 400,
		     "unknown query parameter 'count'");
	expect_error(get(a, "/api/v1/keys/sae-B/enc_keys?number=1&number=2"), 400,
		     "query parameter 'number' given twice");
	/* GET with a body */
	expect_error(req(a, "GET", enc, "{}", 2), 400, "GET requests take no message body");

	/* clause 6.2 extension_mandatory: qwave supports none */
	r = post(a, enc, "{\"number\": 20, \"size\": 512, \"extension_mandatory\": "
			 "[{\"abc_route_type\": \"direct\"}, {\"abc_transfer_method\": \"qkd\"}],"
			 " \"extension_optional\": [{\"abc_max_age\": 30000}]}");
	expect_error(r, 400, "not all extension_mandatory parameters are supported");
	d = json_object_get(r->json, "details");
	assert_int_equal(json_array_size(d), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(d, 0),
							      "extension_mandatory_unsupported")),
			    "abc_route_type is not supported");
	assert_string_equal(json_string_value(json_object_get(json_array_get(d, 1),
							      "extension_mandatory_unsupported")),
			    "abc_transfer_method is not supported");
	/* an empty one asks for nothing */
	expect_keys(post(a, enc, "{\"extension_mandatory\": []}"), 1, 256, NULL);

	/* Key IDs */
	expect_error(get(b, "/api/v1/keys/sae-A/dec_keys?key_ID=not-a-uuid"), 400,
		     "key_ID 'not-a-uuid' is not a UUID");
	expect_error(get(b, "/api/v1/keys/sae-A/dec_keys"), 400,
		     "key_ID query parameter is required (or POST Key IDs)");
	expect_error(post(b, dec, "{\"key_IDs\": [{\"key_ID\": \"bc490419-7d60-487f-adc1\"}]}"),
		     400, "key_ID 'bc490419-7d60-487f-adc1' is not a UUID");
	expect_error(post(b, dec, "{\"key_IDs\": []}"), 400, "key_IDs shall list at least one key");
	expect_error(post(b, dec, "{\"key_IDs\": [\"bc490419-7d60-487f-adc1-4ddcc177c139\"]}"),
		     400, "key_IDs shall be an array of objects");
	expect_error(post(b, dec, "{}"), 400, "key_IDs is required");
	expect_error(post(b, dec, ""), 400, "Key IDs body is required");
	expect_error(post(b, dec, "{\"key_IDs\": [{\"key_ID\": \"bc490419-7d60-487f-adc1-4ddcc177c139\"},"
				  " {\"key_ID\": \"BC490419-7D60-487F-ADC1-4DDCC177C139\"}]}"),
		     400, "key_ID bc490419-7d60-487f-adc1-4ddcc177c139 is listed twice");
	expect_error(post(b, dec, "{\"key_IDs\": [{\"key_ID\": \"bc490419-7d60-487f-adc1-4ddcc177c139\"}]}"),
		     400, "one or more keys specified are not found on KME");
	expect_error(get(b, "/api/v1/keys/sae-A/dec_keys?key_ID=550e8400-e29b-41d4-a716-446655440000"),
		     400, "one or more keys specified are not found on KME");

	/* not in the spec: unknown resources and methods */
	expect_error(get(a, "/api/v1/keys/sae-B/keys"), 404, "no such resource");
	expect_error(get(a, "/api/v1/keys/sae-B"), 404, "no such resource");
	expect_error(get(a, "/nothing"), 404, "no such resource");
	r = req(a, "PUT", enc, "{}", 2);
	expect_error(r, 405, "Get key takes GET or POST only");
	r = req(b, "DELETE", dec, NULL, 0);
	expect_error(r, 405, "Get key with key IDs takes GET or POST only");
	/* a method HTTP does not know: libevent answers 501 (RFC 7231 4.1) */
	r = req(b, "FOO", dec, NULL, 0);
	assert_int_equal(r->rc, CURLE_OK);
	assert_int_equal(r->status, 501);

	/* server side: not enough key material */
	kme.pool_bits = 300;
	expect_error(get(a, "/api/v1/keys/sae-B/enc_keys?number=2"), 503,
		     "insufficient key material");
	expect_keys(get(a, "/api/v1/keys/sae-B/enc_keys"), 1, 256, NULL);
	kme.pool_bits = 1u << 20;
	curl_easy_cleanup(a);
	curl_easy_cleanup(b);
}

static void test_unauthorized(void **state)
{
	CURL *a = client(dir, "sae", "sae-A"), *b = client(dir, "sae", "sae-B"),
	     *c = client(dir, "sae", "sae-C"), *n = client(dir, "node", "kme-B");
	struct got g, h;
	struct resp *r;
	char path[200];

	(void)state;
	expect_keys(get(a, "/api/v1/keys/sae-B/enc_keys"), 1, 256, &g);
	snprintf(path, sizeof(path), "/api/v1/keys/sae-A/dec_keys?key_ID=%s", g.id[0]);
	/* 5.4: sae-C was not named in the Get key request */
	r = get(c, path);
	expect_error(r, 401, "unauthorized");
	assert_memory_equal(last_note, "unauthorized", 12);
	/* a wrong master in the URL is not the Get key that issued it */
	snprintf(path, sizeof(path), "/api/v1/keys/sae-C/dec_keys?key_ID=%s", g.id[0]);
	expect_error(get(b, path), 401, "unauthorized");
	/* a node certificate is not an SAE's */
	expect_error(get(n, "/api/v1/keys/sae-B/status"), 401, "unauthorized");
	expect_error(get(n, "/api/v1/keys/sae-A/enc_keys"), 401, "unauthorized");
	/* none of that consumed the key: the named slave still gets it */
	snprintf(path, sizeof(path), "/api/v1/keys/sae-A/dec_keys?key_ID=%s", g.id[0]);
	expect_keys(get(b, path), 1, 256, &h);
	assert_memory_equal(h.key[0], g.key[0], 32);
	curl_easy_cleanup(a);
	curl_easy_cleanup(b);
	curl_easy_cleanup(c);
	curl_easy_cleanup(n);
}

static void test_tls_refusals(void **state)
{
	CURL *none = client(dir, "sae", NULL), *foreign = client(other, "sae", "sae-A");
	struct resp *r;

	(void)state;
	last_status = 0;
	r = get(none, "/api/v1/keys/sae-B/status");
	assert_int_not_equal(r->rc, CURLE_OK);
	assert_int_equal(r->status, 0);
	r = get(foreign, "/api/v1/keys/sae-B/status");
	assert_int_not_equal(r->rc, CURLE_OK);
	assert_int_equal(r->status, 0);
	/* TLS 1.3 only, too */
	curl_easy_setopt(none, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_3);
	r = get(none, "/api/v1/keys/sae-B/status");
	assert_int_not_equal(r->rc, CURLE_OK);
	assert_int_equal(last_status, 0); /* no request reached the server */
	curl_easy_cleanup(none);
	curl_easy_cleanup(foreign);
}

static void test_limits_keepalive(void **state)
{
	CURL *a = client(dir, "sae", "sae-A");
	size_t big = 70 * 1024;
	char *body = malloc(big + 1);
	struct resp *r;

	(void)state;
	/* keep-alive: the second request reuses the connection */
	r = get(a, "/api/v1/keys/sae-B/status");
	assert_int_equal(r->status, 200);
	assert_int_equal(r->connects, 1);
	r = get(a, "/api/v1/keys/sae-B/status");
	assert_int_equal(r->status, 200);
	assert_int_equal(r->connects, 0);
	expect_keys(get(a, "/api/v1/keys/sae-B/enc_keys"), 1, 256, NULL);
	assert_int_equal(r->connects, 0);

	/* TLS 1.2 is accepted too (clause 5.1: "TLS version 1.2 or higher") */
	curl_easy_cleanup(a);
	a = client(dir, "sae", "sae-A");
	curl_easy_setopt(a, CURLOPT_SSLVERSION,
			 (long)(CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2));
	r = get(a, "/api/v1/keys/sae-B/status");
	assert_int_equal(r->status, 200); /* the client offered nothing above 1.2 */

	/* a body over 64 KiB is refused before it is parsed */
	assert_non_null(body);
	memset(body, ' ', big);
	body[0] = '{';
	body[big - 1] = '}';
	body[big] = '\0';
	r = req(a, "POST", "/api/v1/keys/sae-B/enc_keys", body, big);
	assert_int_equal(r->rc, CURLE_OK);
	assert_int_equal(r->status, 413);
	/* and just under the limit is fine */
	memset(body, ' ', 60 * 1024);
	body[0] = '{';
	body[60 * 1024 - 1] = '}';
	r = req(a, "POST", "/api/v1/keys/sae-B/enc_keys", body, 60 * 1024);
	expect_keys(r, 1, 256, NULL);
	free(body);
	curl_easy_cleanup(a);
}

static void test_generic_routes(void **state)
{
	CURL *n = client(dir, "node", "kme-B");
	struct resp *r;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port_slow),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	char c;
	int fd;

	(void)state;
	/* any verified identity reaches a generic handler, with its kind */
	r = get(n, "/metrics/x?y=1");
	assert_int_equal(r->status, 200);
	assert_string_equal(json_string_value(json_object_get(r->json, "peer")), "kme-B");
	assert_int_equal(json_integer_value(json_object_get(r->json, "kind")), QW_PKI_NODE);
	assert_string_equal(json_string_value(json_object_get(r->json, "path")), "/metrics/x");
	assert_string_equal(json_string_value(json_object_get(r->json, "query")), "y=1");
	r = post(n, "/metrics", "{}");
	expect_error(r, 405, "method not allowed");
	curl_easy_cleanup(n);

	/* a connection that never starts its handshake is closed on timeout */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	{
		struct timeval tv = { .tv_sec = 10 };

		assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	}
	assert_int_equal(recv(fd, &c, 1, 0), 0); /* EOF from the server, not our 10 s */
	close(fd);
}

/* The parser alone, without sockets. */
static void test_parse(void **state)
{
	struct qw_etsi014_request r;
	struct qw_etsi014_error e;
	struct qw_kme_status st = { .key_size = 256, .max_key_per_request = 10, .min_key_size = 8,
				    .max_key_size = 4096, .max_sae_id_count = 0 };
	const char *b;

	(void)state;
	assert_int_equal(qw_etsi014_parse(QW_HTTP_GET, "/api/v1/keys/a%20b/enc_keys", "number=3", NULL,
					  0, &r, &e), 0);
	assert_int_equal(r.op, QW_ETSI014_ENC_KEYS);
	assert_string_equal(r.sae_id, "a b");
	assert_int_equal(r.number, 3);
	assert_int_equal(r.size_bits, 0);
	assert_int_equal(qw_etsi014_check_limits(&r, &st, &e), 0);
	assert_int_equal(r.size_bits, 256);
	qw_etsi014_request_clear(&r);

	b = "{\"additional_slave_SAE_IDs\": [\"x\"]}";
	assert_int_equal(qw_etsi014_parse(QW_HTTP_POST, "/api/v1/keys/s/enc_keys", NULL,
					  (const uint8_t *)b, strlen(b), &r, &e), 0);
	assert_int_equal(r.n_additional, 1);
	assert_string_equal(r.additional[0], "x");
	/* max_SAE_ID_count 0: no multicast */
	assert_int_equal(qw_etsi014_check_limits(&r, &st, &e), QW_EINVAL);
	assert_int_equal(e.status, 400);
	qw_etsi014_request_clear(&r);

	b = "{\"key_IDs\": [{\"key_ID\": \"550E8400-E29B-41D4-A716-446655440000\"}]}";
	assert_int_equal(qw_etsi014_parse(QW_HTTP_POST, "/api/v1/keys/m/dec_keys", NULL,
					  (const uint8_t *)b, strlen(b), &r, &e), 0);
	assert_int_equal(r.n_key_ids, 1);
	assert_string_equal(r.key_ids[0], "550e8400-e29b-41d4-a716-446655440000");
	qw_etsi014_request_clear(&r);

	/* the most key IDs one request may name, and one more; a duplicate
	 * far from its twin */
	{
		size_t cap = 1100 * 52 + 32, pos;
		char *big = malloc(cap);
		char ids[1025][QW_UUID_STR_BYTES];

		assert_non_null(big);
		for (int i = 0; i < 1025; i++) {
			struct qw_uuid u;

			assert_int_equal(qw_uuid_generate(&u), 0);
			qw_uuid_format(&u, ids[i]);
		}
		for (int n = 1024; n <= 1025; n++) {
			pos = (size_t)snprintf(big, cap, "{\"key_IDs\":[");
			for (int i = 0; i < n; i++)
				pos += (size_t)snprintf(big + pos, cap - pos, "%s{\"key_ID\":\"%s\"}",
							i ? "," : "", ids[i]);
			pos += (size_t)snprintf(big + pos, cap - pos, "]}");
			b = big;
			if (n == 1024) {
				assert_int_equal(qw_etsi014_parse(QW_HTTP_POST, "/api/v1/keys/m/dec_keys",
								  NULL, (const uint8_t *)b, pos, &r, &e),
						 0);
				assert_int_equal(r.n_key_ids, 1024);
				assert_string_equal(r.key_ids[1023], ids[1023]);
				qw_etsi014_request_clear(&r);
			} else {
				assert_int_equal(qw_etsi014_parse(QW_HTTP_POST, "/api/v1/keys/m/dec_keys",
								  NULL, (const uint8_t *)b, pos, &r, &e),
						 QW_EINVAL);
				assert_string_equal(e.message, "key_IDs lists more than 1024 keys");
				qw_etsi014_error_clear(&e);
			}
		}
		/* ID 0 again at the end */
		memcpy(ids[1000], ids[0], sizeof(ids[0]));
		pos = (size_t)snprintf(big, cap, "{\"key_IDs\":[");
		for (int i = 0; i <= 1000; i++)
			pos += (size_t)snprintf(big + pos, cap - pos, "%s{\"key_ID\":\"%s\"}",
						i ? "," : "", ids[i]);
		pos += (size_t)snprintf(big + pos, cap - pos, "]}");
		assert_int_equal(qw_etsi014_parse(QW_HTTP_POST, "/api/v1/keys/m/dec_keys", NULL,
						  (const uint8_t *)big, pos, &r, &e),
				 QW_EINVAL);
		assert_int_equal(e.status, 400);
		assert_memory_equal(e.message, "key_ID ", 7);
		assert_non_null(strstr(e.message, ids[0]));
		qw_etsi014_error_clear(&e);
		free(big);
	}

	/* a NUL inside the body or a string is never accepted silently */
	assert_int_equal(qw_etsi014_parse(QW_HTTP_POST, "/api/v1/keys/s/enc_keys", NULL,
					  (const uint8_t *)"{}\0", 3, &r, &e), QW_EINVAL);
	assert_int_equal(e.status, 400);
	qw_etsi014_error_clear(&e);
	b = "{\"additional_slave_SAE_IDs\": [\"x\\u0000y\"]}";
	assert_int_equal(qw_etsi014_parse(QW_HTTP_POST, "/api/v1/keys/s/enc_keys", NULL,
					  (const uint8_t *)b, strlen(b), &r, &e), QW_EINVAL);
	qw_etsi014_error_clear(&e);
	/* an SAE ID longer than 64 characters */
	assert_int_equal(qw_etsi014_parse(QW_HTTP_GET,
					  "/api/v1/keys/0123456789012345678901234567890123456789"
					  "0123456789012345678901234/status", NULL, NULL, 0, &r, &e),
			 QW_EINVAL);
	assert_int_equal(e.status, 400);
	assert_int_equal(qw_etsi014_parse(QW_HTTP_GET, "/api/v1/keys//status", NULL, NULL, 0, &r, &e),
			 QW_EINVAL);
	assert_int_equal(e.status, 400);
	assert_int_equal(qw_etsi014_parse(QW_HTTP_GET, "/api/v1/keys/a/status/", NULL, NULL, 0, &r, &e),
			 QW_EINVAL);
	assert_int_equal(e.status, 404);
	/* the Error body */
	b = "{\"extension_mandatory\": [{\"k\": {\"deep\": [1]}}]}";
	assert_int_equal(qw_etsi014_parse(QW_HTTP_POST, "/api/v1/keys/s/enc_keys", NULL,
					  (const uint8_t *)b, strlen(b), &r, &e), QW_EINVAL);
	{
		char *txt = qw_etsi014_error_json(&e);

		assert_string_equal(txt, "{\"message\":\"not all extension_mandatory parameters are "
					 "supported\",\"details\":[{\"extension_mandatory_unsupported\":"
					 "\"k is not supported\"}]}");
		free(txt);
	}
	qw_etsi014_error_clear(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_enc_dec_get),
		cmocka_unit_test(test_enc_dec_post),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_unauthorized),
		cmocka_unit_test(test_tls_refusals),
		cmocka_unit_test(test_limits_keepalive),
		cmocka_unit_test(test_generic_routes),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
