/* The manager's web dashboard (include/qwave/dashboard.h): the embedded
 * assets equal the files in src/api/dashboard/, the /api/network JSON
 * follows docs/dashboard.md for a sample network, invalid states are
 * refused, and the routes answer over real HTTPS with mutual TLS (pki.h
 * certificates, libcurl client) with the right status and content type.
 *
 * Run with "--serve PORTFILE [SECONDS]" it is instead the integration
 * test's plain-HTTP shim (tests/integration/test_dashboard.sh): it serves
 * the same replies (qw_dashboard_handle) on 127.0.0.1 so headless
 * Chromium, which has no client certificate, can load the page. */
#define _XOPEN_SOURCE 700
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <jansson.h>

#include "qwave/dashboard.h"
#include "qwave/https.h"
#include "qwave/pki.h"

/* ---- the sample network: metro ring alpha-bravo-carol-delta-alpha plus
 * the cross link alpha-carol; carol-delta in QBER alarm ---- */

#define T0_MS INT64_C(1795261781000) /* 2026-11-21T11:49:41Z */

static const struct qw_dashboard_node sample_nodes[] = {
	{ "alpha", 1 }, { "bravo", 1 }, { "carol", 1 }, { "delta", 1 },
};

/* Pool of alpha on alpha-bravo: 812.0 kbit in the first /api/network
 * reply, 1337.5 kbit afterwards (the shim's proof of a live update). */
#define POOL_FIRST 812000u
#define POOL_LATER 1337500u

static void sample_links(struct qw_dashboard_link l[5], uint64_t alpha_bravo_pool)
{
	const struct qw_dashboard_link init[5] = {
		{ "alpha", "bravo", 12.5, 1, 0.0213, 0, 4520.0, 0, 809344 },
		{ "bravo", "carol", 18.0, 1, 0.0287, 0, 2875.0, 254016, 254016 },
		{ "carol", "delta", 9.8, 1, 0.134, 1, 0.0, 40960, 40960 },
		{ "delta", "alpha", 22.1, 0, NAN, 0, NAN, 131072, QW_DASHBOARD_UNKNOWN },
		{ "alpha", "carol", 30.4, 1, 0.0342, 0, 1210.0, 65536, 66048 },
	};

	memcpy(l, init, sizeof(init));
	l[0].pool_bits_a = alpha_bravo_pool;
}

static const struct qw_dashboard_alarm sample_alarms[] = {
	{ T0_MS - 4000, QW_DASHBOARD_CRITICAL, "qber", NULL, "carol", "delta",
	  "QBER 13.40 % above the threshold 11.00 % (eavesdropper?)" },
	{ T0_MS - 65000, QW_DASHBOARD_WARNING, "link_down", NULL, "delta", "alpha",
	  "KM link down since 65 s" },
	{ T0_MS - 1500, QW_DASHBOARD_WARNING, "relay_failed", "bravo", NULL, NULL,
	  "relay to \"delta\" failed: no path" },
};

struct sample {
	struct qw_dashboard_link links[5];
	unsigned calls;
	int fail;
};

static int sample_state(void *arg, struct qw_dashboard_state *st)
{
	struct sample *s = arg;

	if (s->fail)
		return QW_EIO;
	sample_links(s->links, s->calls++ == 0 ? POOL_FIRST : POOL_LATER);
	st->self = "alpha";
	st->generated_at_ms = T0_MS;
	st->nodes = sample_nodes;
	st->nnodes = 4;
	st->links = s->links;
	st->nlinks = 5;
	st->alarms = sample_alarms;
	st->nalarms = 3;
	st->relays = (struct qw_dashboard_relays){ 17, 5, 12, 1, 0, 311296 };
	return 0;
}

/* ---- assets ---- */

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
		buf[n] = '\0';
		*len = (size_t)n;
	} else {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

static void test_assets_equal_sources(void **state)
{
	static const char *const names[] = { "index.html", "app.js", "style.css" };
	const char *src = getenv("QW_SOURCE_DIR");
	const struct qw_dashboard_asset *a;
	size_t n;

	(void)state;
	assert_non_null(src);
	a = qw_dashboard_assets(&n);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < 3; i++) {
		char path[512];
		size_t len = 0;
		char *txt;

		assert_string_equal(a[i].name, names[i]);
		snprintf(path, sizeof(path), "%s/src/api/dashboard/%s", src, names[i]);
		txt = read_all(path, &len);
		assert_non_null(txt);
		assert_int_equal(a[i].len, len);
		assert_memory_equal(a[i].data, txt, len);
		assert_int_equal(a[i].data[len], 0);
		free(txt);
	}
	assert_string_equal(a[0].content_type, "text/html; charset=utf-8");
	assert_string_equal(a[1].content_type, "text/javascript; charset=utf-8");
	assert_string_equal(a[2].content_type, "text/css; charset=utf-8");
	/* the page loads its script and style from the routes below, nothing
	 * from elsewhere */
	assert_non_null(strstr((const char *)a[0].data, "src=\"/dashboard/app.js\""));
	assert_non_null(strstr((const char *)a[0].data, "href=\"/dashboard/style.css\""));
	for (size_t i = 0; i < 3; i++) {
		/* the one absolute URL is the SVG namespace name, never fetched */
		const char *p = (const char *)a[i].data;
		size_t urls = 0, ns = 0;

		for (const char *q = p; (q = strstr(q, "http")); q++)
			urls++;
		for (const char *q = p; (q = strstr(q, "http://www.w3.org/2000/svg")); q++)
			ns++;
		assert_int_equal(urls, ns);
	}
	assert_non_null(strstr((const char *)a[1].data, "'/api/network'"));
}

static void test_asset_lookup(void **state)
{
	static const char *const index_paths[] = { "/", "/dashboard", "/dashboard/",
						   "/dashboard/index.html" };
	static const char *const none[] = { "", "/x", "/dashboard/nope.js", "/dashboard/../app.js",
					    "/dashboardx", "/dashboard//app.js", "/app.js",
					    "/dashboard/app.js/" };

	(void)state;
	for (size_t i = 0; i < sizeof(index_paths) / sizeof(*index_paths); i++)
		assert_string_equal(qw_dashboard_asset(index_paths[i])->name, "index.html");
	assert_string_equal(qw_dashboard_asset("/dashboard/app.js")->name, "app.js");
	assert_string_equal(qw_dashboard_asset("/dashboard/style.css")->name, "style.css");
	for (size_t i = 0; i < sizeof(none) / sizeof(*none); i++)
		assert_null(qw_dashboard_asset(none[i]));
}

/* ---- the JSON contract ---- */

static json_t *get_type(json_t *o, const char *k, json_type t)
{
	json_t *v = json_object_get(o, k);

	if (!v)
		fail_msg("missing \"%s\"", k);
	if (json_typeof(v) != t)
		fail_msg("\"%s\" has type %d, want %d", k, (int)json_typeof(v), (int)t);
	return v;
}

static json_t *sample_json(struct sample *s)
{
	struct qw_dashboard_state st;
	json_error_t je;
	json_t *o;
	char *txt;
	size_t len;

	memset(&st, 0, sizeof(st));
	assert_int_equal(sample_state(s, &st), 0);
	assert_int_equal(qw_dashboard_json(&st, &txt, &len), 0);
	assert_int_equal(strlen(txt), len);
	o = json_loadb(txt, len, JSON_REJECT_DUPLICATES, &je);
	if (!o)
		fail_msg("invalid JSON: %s", je.text);
	free(txt);
	return o;
}

static void check_strings(json_t *arr, const char *const *want, size_t n)
{
	assert_int_equal(json_array_size(arr), n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(json_string_value(json_array_get(arr, i)), want[i]);
}

static void test_json_schema(void **state)
{
	static const char *const top[] = { "generated_at", "self", "nodes", "links", "alarms",
					   "relays" };
	static const char *const link_keys[] = { "a", "b", "length_km", "up", "qber",
						 "qber_alarm", "key_rate_bps", "pool_bits",
						 "alarms" };
	static const char *const alarm_keys[] = { "ts", "severity", "kind", "node", "link",
						  "message" };
	static const char *const qber_kind[] = { "qber" };
	static const char *const down_kind[] = { "link_down" };
	static const char *const relay_kind[] = { "relay_failed" };
	struct sample s = { 0 };
	json_t *o = sample_json(&s), *nodes, *links, *alarms, *l, *a, *r;

	(void)state;
	/* exactly the documented keys */
	assert_int_equal(json_object_size(o), sizeof(top) / sizeof(*top));
	assert_string_equal(json_string_value(get_type(o, "generated_at", JSON_STRING)),
			    "2026-11-21T11:49:41.000Z");
	assert_string_equal(json_string_value(get_type(o, "self", JSON_STRING)), "alpha");

	nodes = get_type(o, "nodes", JSON_ARRAY);
	assert_int_equal(json_array_size(nodes), 4);
	for (size_t i = 0; i < 4; i++) {
		json_t *n = json_array_get(nodes, i);

		assert_int_equal(json_object_size(n), 3);
		assert_string_equal(json_string_value(get_type(n, "id", JSON_STRING)),
				    sample_nodes[i].id);
		assert_true(json_is_true(json_object_get(n, "up")));
		/* only bravo has an alarm naming the node alone */
		if (i == 1)
			check_strings(get_type(n, "alarms", JSON_ARRAY), relay_kind, 1);
		else
			assert_int_equal(json_array_size(get_type(n, "alarms", JSON_ARRAY)), 0);
	}

	links = get_type(o, "links", JSON_ARRAY);
	assert_int_equal(json_array_size(links), 5);
	for (size_t i = 0; i < 5; i++) {
		l = json_array_get(links, i);
		assert_int_equal(json_object_size(l), sizeof(link_keys) / sizeof(*link_keys));
		for (size_t k = 0; k < sizeof(link_keys) / sizeof(*link_keys); k++)
			assert_non_null(json_object_get(l, link_keys[k]));
		get_type(l, "a", JSON_STRING);
		get_type(l, "b", JSON_STRING);
		get_type(l, "length_km", JSON_REAL);
		assert_true(json_is_boolean(json_object_get(l, "up")));
		assert_true(json_is_boolean(json_object_get(l, "qber_alarm")));
		assert_int_equal(json_object_size(get_type(l, "pool_bits", JSON_OBJECT)), 2);
		get_type(l, "alarms", JSON_ARRAY);
	}
	l = json_array_get(links, 0);
	assert_string_equal(json_string_value(json_object_get(l, "a")), "alpha");
	assert_string_equal(json_string_value(json_object_get(l, "b")), "bravo");
	assert_true(fabs(json_real_value(json_object_get(l, "length_km")) - 12.5) < 1e-12);
	assert_true(fabs(json_real_value(get_type(l, "qber", JSON_REAL)) - 0.0213) < 1e-12);
	assert_true(fabs(json_real_value(get_type(l, "key_rate_bps", JSON_REAL)) - 4520) < 1e-9);
	assert_int_equal(json_integer_value(get_type(get_type(l, "pool_bits", JSON_OBJECT), "a",
						     JSON_INTEGER)), POOL_FIRST);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(l, "pool_bits"), "b")),
			 809344);
	assert_true(json_is_true(json_object_get(l, "up")));
	assert_true(json_is_false(json_object_get(l, "qber_alarm")));
	assert_int_equal(json_array_size(json_object_get(l, "alarms")), 0);
	/* carol-delta: the QBER alarm, also listed on the link */
	l = json_array_get(links, 2);
	assert_true(json_is_true(json_object_get(l, "qber_alarm")));
	check_strings(json_object_get(l, "alarms"), qber_kind, 1);
	/* delta-alpha: down, unknowns are null, the alarm named alpha-delta
	 * the other way round still belongs to it */
	l = json_array_get(links, 3);
	assert_true(json_is_false(json_object_get(l, "up")));
	assert_true(json_is_null(json_object_get(l, "qber")));
	assert_true(json_is_null(json_object_get(l, "key_rate_bps")));
	assert_true(json_is_null(json_object_get(json_object_get(l, "pool_bits"), "b")));
	check_strings(json_object_get(l, "alarms"), down_kind, 1);

	alarms = get_type(o, "alarms", JSON_ARRAY);
	assert_int_equal(json_array_size(alarms), 3);
	for (size_t i = 0; i < 3; i++) {
		a = json_array_get(alarms, i);
		assert_int_equal(json_object_size(a), sizeof(alarm_keys) / sizeof(*alarm_keys));
		for (size_t k = 0; k < sizeof(alarm_keys) / sizeof(*alarm_keys); k++)
			assert_non_null(json_object_get(a, alarm_keys[k]));
	}
	a = json_array_get(alarms, 0);
	assert_string_equal(json_string_value(json_object_get(a, "ts")), "2026-11-21T11:49:37.000Z");
	assert_string_equal(json_string_value(json_object_get(a, "severity")), "critical");
	assert_string_equal(json_string_value(json_object_get(a, "kind")), "qber");
	assert_true(json_is_null(json_object_get(a, "node")));
	assert_string_equal(json_string_value(json_object_get(a, "link")), "carol-delta");
	assert_string_equal(json_string_value(json_object_get(a, "message")),
			    sample_alarms[0].message);
	a = json_array_get(alarms, 2);
	assert_string_equal(json_string_value(json_object_get(a, "severity")), "warning");
	assert_string_equal(json_string_value(json_object_get(a, "node")), "bravo");
	assert_true(json_is_null(json_object_get(a, "link")));
	/* quotes in the text survive the round trip */
	assert_string_equal(json_string_value(json_object_get(a, "message")),
			    "relay to \"delta\" failed: no path");

	r = get_type(o, "relays", JSON_OBJECT);
	assert_int_equal(json_object_size(r), 6);
	assert_int_equal(json_integer_value(get_type(r, "sent", JSON_INTEGER)), 17);
	assert_int_equal(json_integer_value(get_type(r, "forwarded", JSON_INTEGER)), 5);
	assert_int_equal(json_integer_value(get_type(r, "received", JSON_INTEGER)), 12);
	assert_int_equal(json_integer_value(get_type(r, "failed", JSON_INTEGER)), 1);
	assert_int_equal(json_integer_value(get_type(r, "auth_failures", JSON_INTEGER)), 0);
	assert_int_equal(json_integer_value(get_type(r, "bits_consumed", JSON_INTEGER)), 311296);
	json_decref(o);

	/* the second call sees the new pool level */
	o = sample_json(&s);
	assert_int_equal(json_integer_value(json_object_get(
		json_object_get(json_array_get(json_object_get(o, "links"), 0), "pool_bits"), "a")),
		POOL_LATER);
	json_decref(o);
}

static void test_json_empty_and_now(void **state)
{
	struct qw_dashboard_state st;
	json_t *o;
	char *txt;
	size_t len;
	time_t t0 = time(NULL);

	(void)state;
	memset(&st, 0, sizeof(st));
	assert_int_equal(qw_dashboard_json(&st, &txt, &len), 0);
	o = json_loads(txt, 0, NULL);
	assert_non_null(o);
	assert_int_equal(json_array_size(json_object_get(o, "nodes")), 0);
	assert_int_equal(json_array_size(json_object_get(o, "links")), 0);
	assert_int_equal(json_array_size(json_object_get(o, "alarms")), 0);
	assert_true(json_is_null(json_object_get(o, "self")));
	/* generated_at 0 means now: the same UTC second as time() or the next */
	{
		const char *g = json_string_value(json_object_get(o, "generated_at"));
		char want[2][32];

		for (int i = 0; i < 2; i++) {
			time_t t = t0 + i;
			struct tm tm;

			gmtime_r(&t, &tm);
			strftime(want[i], sizeof(want[i]), "%Y-%m-%dT%H:%M:%S", &tm);
		}
		assert_non_null(g);
		assert_int_equal(strlen(g), 24);
		assert_true(!strncmp(g, want[0], 19) || !strncmp(g, want[1], 19));
	}
	json_decref(o);
	free(txt);
}

static void test_json_invalid(void **state)
{
	struct qw_dashboard_node dup[2] = { { "alpha", 1 }, { "alpha", 0 } };
	struct qw_dashboard_node nul[1] = { { NULL, 1 } };
	struct qw_dashboard_link links[5];
	struct qw_dashboard_alarm al;
	struct qw_dashboard_state st;
	struct sample s = { 0 };
	char *txt = (char *)"x";
	size_t len = 1;

	(void)state;
#define REFUSED()                                                              \
	do {                                                                   \
		assert_int_equal(qw_dashboard_json(&st, &txt, &len), QW_EINVAL); \
		assert_null(txt);                                              \
		assert_int_equal(len, 0);                                      \
	} while (0)
#define FRESH()                                           \
	do {                                              \
		memset(&st, 0, sizeof(st));               \
		assert_int_equal(sample_state(&s, &st), 0); \
		sample_links(links, POOL_FIRST);          \
		st.links = links;                         \
	} while (0)

	FRESH();
	st.nodes = dup;
	st.nnodes = 2;
	st.nlinks = 0;
	st.nalarms = 0;
	REFUSED();
	FRESH();
	st.nodes = nul;
	st.nnodes = 1;
	st.nlinks = 0;
	st.nalarms = 0;
	REFUSED();
	FRESH();
	links[1].b = "echo"; /* not a node */
	REFUSED();
	FRESH();
	links[1].a = NULL;
	REFUSED();
	FRESH();
	links[0].qber = 1.5;
	REFUSED();
	FRESH();
	links[0].qber = -0.01;
	REFUSED();
	FRESH();
	al = sample_alarms[0];
	al.link_b = NULL; /* one end only */
	st.alarms = &al;
	st.nalarms = 1;
	REFUSED();
	FRESH();
	al = sample_alarms[2];
	al.node = "echo";
	st.alarms = &al;
	st.nalarms = 1;
	REFUSED();
	FRESH();
	al = sample_alarms[2];
	al.kind = NULL;
	st.alarms = &al;
	st.nalarms = 1;
	REFUSED();
	FRESH();
	al = sample_alarms[2];
	al.severity = (enum qw_dashboard_severity)7;
	st.alarms = &al;
	st.nalarms = 1;
	REFUSED();
	FRESH();
	st.nodes = NULL; /* count without array */
	REFUSED();
	/* and the unchanged sample passes */
	FRESH();
	assert_int_equal(qw_dashboard_json(&st, &txt, &len), 0);
	free(txt);
#undef REFUSED
#undef FRESH
}

static void test_handle(void **state)
{
	struct sample s = { 0 };
	struct qw_dashboard_reply r;

	(void)state;
	qw_dashboard_handle("/", sample_state, &s, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.headers[0][0], "Content-Type");
	assert_string_equal(r.headers[0][1], "text/html; charset=utf-8");
	assert_ptr_equal(r.body, qw_dashboard_asset("/")->data);
	qw_dashboard_reply_clear(&r);

	qw_dashboard_handle("/api/network", sample_state, &s, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.headers[0][1], "application/json");
	assert_non_null(r.owned);
	assert_non_null(strstr(r.body, "\"pool_bits\":{\"a\":812000,"));
	qw_dashboard_reply_clear(&r);
	assert_null(r.owned);

	qw_dashboard_handle("/api/network/", sample_state, &s, &r);
	assert_int_equal(r.status, 404);
	assert_string_equal(r.headers[0][1], "application/json");
	assert_string_equal(r.body, "{\"message\":\"not found\"}");
	qw_dashboard_reply_clear(&r);

	s.fail = 1;
	qw_dashboard_handle("/api/network", sample_state, &s, &r);
	assert_int_equal(r.status, 503);
	assert_string_equal(r.body, "{\"message\":\"network state unavailable\"}");
	qw_dashboard_reply_clear(&r);
}

/* ---- over HTTPS with mutual TLS ---- */

static char dir[64];
static struct event_base *base;
static struct qw_https_server *srv;
static struct qw_dashboard *dash;
static struct sample https_sample;
static uint16_t port;
static pthread_t loop_thread;

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

static int https_setup(void **state)
{
	struct qw_pki_issue_opts io = { .kind = QW_PKI_NODE, .id = "alpha" };
	struct qw_https_opts o = { 0 };
	char crt[128], key[128], ca[128];
	int err;

	(void)state;
	strcpy(dir, "/tmp/qw-test-dash-XXXXXX");
	if (!mkdtemp(dir) || qw_pki_ca_init(dir, QW_PK_ECDSA_P256, "test CA", 0) ||
	    qw_pki_issue(dir, &io))
		return -1;
	io.id = "operator";
	if (qw_pki_issue(dir, &io))
		return -1;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	signal(SIGPIPE, SIG_IGN);
	evthread_use_pthreads();
	if (!(base = event_base_new()))
		return -1;
	snprintf(crt, sizeof(crt), "%s/node-alpha.crt", dir);
	snprintf(key, sizeof(key), "%s/node-alpha.key", dir);
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	o.cert_file = crt;
	o.key_file = key;
	o.ca_file = ca;
	if (!(srv = qw_https_server_new(base, &o, &err)))
		return -1;
	port = qw_https_server_port(srv);
	if (!(dash = qw_dashboard_new(srv, sample_state, &https_sample, &err)) || err)
		return -1;
	return pthread_create(&loop_thread, NULL, loop, NULL);
}

static int https_teardown(void **state)
{
	(void)state;
	event_base_loopbreak(base);
	pthread_join(loop_thread, NULL);
	qw_https_server_free(srv);
	for (int i = 0; i < 10; i++) /* deferred bufferevent frees, which may defer more */
		event_base_loop(base, EVLOOP_NONBLOCK);
	qw_dashboard_free(dash);
	event_base_free(base);
	curl_global_cleanup();
	return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

struct resp {
	long status;
	char body[1 << 16];
	size_t len;
	char ctypes[4][96]; /* every Content-Type header line's value */
	int nctypes;
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

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
	struct resp *r = arg;
	size_t len = sz * n;
	static const char name[] = "content-type:";

	if (len > sizeof(name) && !strncasecmp(p, name, sizeof(name) - 1) && r->nctypes < 4) {
		const char *v = p + sizeof(name) - 1;
		size_t vl = len - (sizeof(name) - 1);

		while (vl && (*v == ' ' || *v == '\t'))
			v++, vl--;
		while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
			vl--;
		snprintf(r->ctypes[r->nctypes++], sizeof(r->ctypes[0]), "%.*s", (int)vl, v);
	}
	return len;
}

static struct resp *request(const char *method, const char *target, int with_cert)
{
	static struct resp r;
	CURL *c = curl_easy_init();
	char url[256], p[160];

	assert_non_null(c);
	memset(&r, 0, sizeof(r));
	snprintf(p, sizeof(p), "%s/ca.crt", dir);
	curl_easy_setopt(c, CURLOPT_CAINFO, p);
	if (with_cert) {
		snprintf(p, sizeof(p), "%s/node-operator.crt", dir);
		curl_easy_setopt(c, CURLOPT_SSLCERT, p);
		snprintf(p, sizeof(p), "%s/node-operator.key", dir);
		curl_easy_setopt(c, CURLOPT_SSLKEY, p);
	}
	snprintf(url, sizeof(url), "https://localhost:%u%s", port, target);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
	r.rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
	curl_easy_cleanup(c);
	return &r;
}

/* Status, the one Content-Type, and for assets the exact bytes. */
static void expect(const char *target, long status, const char *ctype,
		   const struct qw_dashboard_asset *a)
{
	struct resp *r = request("GET", target, 1);

	assert_int_equal(r->rc, CURLE_OK);
	assert_int_equal(r->status, status);
	if (r->nctypes != 1)
		fail_msg("GET %s: %d Content-Type headers (first \"%s\", last \"%s\"), want one \"%s\"",
			 target, r->nctypes, r->ctypes[0], r->ctypes[r->nctypes ? r->nctypes - 1 : 0],
			 ctype);
	assert_string_equal(r->ctypes[0], ctype);
	if (a) {
		assert_int_equal(r->len, a->len);
		assert_memory_equal(r->body, a->data, a->len);
	}
}

static void test_https_routes(void **state)
{
	struct resp *r;
	json_t *o;

	(void)state;
	expect("/", 200, "text/html; charset=utf-8", qw_dashboard_asset("/"));
	expect("/dashboard", 200, "text/html; charset=utf-8", qw_dashboard_asset("/"));
	expect("/dashboard/", 200, "text/html; charset=utf-8", qw_dashboard_asset("/"));
	expect("/dashboard/app.js", 200, "text/javascript; charset=utf-8",
	       qw_dashboard_asset("/dashboard/app.js"));
	expect("/dashboard/style.css?v=2", 200, "text/css; charset=utf-8",
	       qw_dashboard_asset("/dashboard/style.css"));
	expect("/api/network", 200, "application/json", NULL);
	r = request("GET", "/api/network", 1);
	o = json_loadb(r->body, r->len, 0, NULL);
	assert_non_null(o);
	assert_int_equal(json_array_size(json_object_get(o, "nodes")), 4);
	assert_int_equal(json_array_size(json_object_get(o, "links")), 5);
	json_decref(o);
	expect("/api/networks", 404, "application/json", NULL);
	expect("/dashboard/nope.css", 404, "application/json", NULL);
	expect("/favicon.ico", 404, "application/json", NULL);
	/* GET only */
	r = request("POST", "/api/network", 1);
	assert_int_equal(r->status, 405);
	r = request("DELETE", "/", 1);
	assert_int_equal(r->status, 405);
	https_sample.fail = 1;
	expect("/api/network", 503, "application/json", NULL);
	https_sample.fail = 0;
	/* management traffic is authenticated: no certificate, no page */
	r = request("GET", "/", 0);
	assert_int_not_equal(r->rc, CURLE_OK);
	assert_int_equal(r->len, 0);
}

/* ---- --serve: the integration test's plain-HTTP shim ---- */

struct shim {
	struct sample sample;
	unsigned pages, api;
};

static void shim_request(struct evhttp_request *req, void *arg)
{
	struct shim *sh = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct qw_dashboard_reply r;

	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET || !path) {
		evhttp_add_header(h, "Allow", "GET");
		evhttp_send_reply(req, 405, "Method Not Allowed", NULL);
		return;
	}
	/* Every page load starts from the first state, so each browser run
	 * sees the pool level change after its own first poll. */
	if (qw_dashboard_asset(path) && !strcmp(qw_dashboard_asset(path)->name, "index.html"))
		sh->sample.calls = 0;
	qw_dashboard_handle(path, sample_state, &sh->sample, &r);
	for (size_t i = 0; i < r.nheaders; i++)
		evhttp_add_header(h, r.headers[i][0], r.headers[i][1]);
	evbuffer_add(evhttp_request_get_output_buffer(req), r.body, r.len);
	evhttp_send_reply(req, r.status, r.status == 200 ? "OK" : "Error", NULL);
	if (!strcmp(path, "/api/network"))
		sh->api++;
	else if (qw_dashboard_asset(path) && !strcmp(qw_dashboard_asset(path)->name, "index.html"))
		sh->pages++;
	/* one line per request for the script: how often the page loaded and
	 * how often it polled */
	printf("%s %d\n", path, r.status);
	fflush(stdout);
	qw_dashboard_reply_clear(&r);
}

static void shim_stop(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

static int serve(const char *portfile, int seconds)
{
	struct shim sh = { { { { 0 } }, 0, 0 }, 0, 0 };
	struct event_base *b = event_base_new();
	struct evhttp *http = b ? evhttp_new(b) : NULL;
	struct evhttp_bound_socket *bs;
	struct event *sigterm = NULL, *sigint = NULL, *timer = NULL;
	struct timeval tv = { seconds, 0 };
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	char tmp[512];
	FILE *f;
	int ret = 1;

	/* loopback only: the shim has no authentication */
	if (!http || !(bs = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0)) ||
	    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sa, &sl))
		goto out;
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
	evhttp_set_gencb(http, shim_request, &sh);
	sigterm = evsignal_new(b, SIGTERM, shim_stop, b);
	sigint = evsignal_new(b, SIGINT, shim_stop, b);
	timer = evtimer_new(b, shim_stop, b);
	if (!sigterm || !sigint || !timer || evsignal_add(sigterm, NULL) ||
	    evsignal_add(sigint, NULL) || evtimer_add(timer, &tv))
		goto out;
	snprintf(tmp, sizeof(tmp), "%s.tmp", portfile);
	if (!(f = fopen(tmp, "w")))
		goto out;
	fprintf(f, "%u\n", ntohs(sa.sin_port));
	if (fclose(f) || rename(tmp, portfile))
		goto out;
	event_base_dispatch(b);
	fprintf(stderr, "shim: %u page load(s), %u /api/network poll(s)\n", sh.pages, sh.api);
	ret = 0;
out:
	if (timer)
		event_free(timer);
	if (sigint)
		event_free(sigint);
	if (sigterm)
		event_free(sigterm);
	if (http)
		evhttp_free(http);
	if (b)
		event_base_free(b);
	return ret;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest pure[] = {
		cmocka_unit_test(test_assets_equal_sources),
		cmocka_unit_test(test_asset_lookup),
		cmocka_unit_test(test_json_schema),
		cmocka_unit_test(test_json_empty_and_now),
		cmocka_unit_test(test_json_invalid),
		cmocka_unit_test(test_handle),
	};
	const struct CMUnitTest https[] = {
		cmocka_unit_test(test_https_routes),
	};
	int fails;

	if (argc >= 3 && !strcmp(argv[1], "--serve"))
		return serve(argv[2], argc >= 4 ? atoi(argv[3]) : 60);
	fails = cmocka_run_group_tests_name("dashboard", pure, NULL, NULL);
	fails += cmocka_run_group_tests_name("dashboard_https", https, https_setup, https_teardown);
	return fails;
}
