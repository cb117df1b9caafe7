/* The manager's web dashboard (include/qwave/dashboard.h, docs/dashboard.md):
 * the embedded page and the /api/network JSON built from the node's state. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "qwave/dashboard.h"
#include "qwave/https.h"

/* Generated at build time by cmake/embed.cmake from src/api/dashboard/. */
extern const struct qw_dashboard_asset qw_dashboard_embedded[];
extern const size_t qw_dashboard_nembedded;

#define DASH_PREFIX "/dashboard"
#define API_PATH "/api/network"

/* The page loads nothing from elsewhere and runs no inline script, so the
 * browser may refuse everything else: an injected node ID or alarm text
 * could not run code even if the page ever inserted it as HTML. */
#define CSP "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " \
	    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

struct qw_dashboard {
	qw_dashboard_state_fn fn;
	void *arg;
};

const struct qw_dashboard_asset *qw_dashboard_assets(size_t *n)
{
	if (!n)
		qw_misuse("qw_dashboard_assets: n is NULL");
	*n = qw_dashboard_nembedded;
	return qw_dashboard_embedded;
}

static const struct qw_dashboard_asset *by_name(const char *name)
{
	for (size_t i = 0; i < qw_dashboard_nembedded; i++)
		if (!strcmp(qw_dashboard_embedded[i].name, name))
			return &qw_dashboard_embedded[i];
	return NULL;
}

const struct qw_dashboard_asset *qw_dashboard_asset(const char *path)
{
	if (!path)
		qw_misuse("qw_dashboard_asset: path is NULL");
	if (!strcmp(path, "/") || !strcmp(path, DASH_PREFIX) || !strcmp(path, DASH_PREFIX "/"))
		return by_name("index.html");
	if (strncmp(path, DASH_PREFIX "/", strlen(DASH_PREFIX "/")))
		return NULL;
	/* Exact names only: no directories, so no traversal to consider. */
	return by_name(path + strlen(DASH_PREFIX "/"));
}

/* ---- the JSON contract (docs/dashboard.md) ---- */

static const char *severity_name(enum qw_dashboard_severity s)
{
	switch (s) {
	case QW_DASHBOARD_INFO: return "info";
	case QW_DASHBOARD_WARNING: return "warning";
	case QW_DASHBOARD_CRITICAL: return "critical";
	}
	return NULL;
}

/* RFC 3339 UTC with milliseconds: what JavaScript's Date parses. */
static void iso_time(int64_t ms, char out[32])
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	size_t n;

	if (ms < 0 || !gmtime_r(&s, &tm) ||
	    !(n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm)) || n > 32 - 6) {
		snprintf(out, 32, "1970-01-01T00:00:00.000Z");
		return;
	}
	snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int has_node(const struct qw_dashboard_state *st, const char *id)
{
	for (size_t i = 0; i < st->nnodes; i++)
		if (!strcmp(st->nodes[i].id, id))
			return 1;
	return 0;
}

static int same_link(const char *a1, const char *b1, const char *a2, const char *b2)
{
	return (!strcmp(a1, a2) && !strcmp(b1, b2)) || (!strcmp(a1, b2) && !strcmp(b1, a2));
}

static int validate(const struct qw_dashboard_state *st)
{
	if ((st->nnodes && !st->nodes) || (st->nlinks && !st->links) ||
	    (st->nalarms && !st->alarms))
		return QW_EINVAL;
	for (size_t i = 0; i < st->nnodes; i++) {
		if (!st->nodes[i].id)
			return QW_EINVAL;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(st->nodes[i].id, st->nodes[j].id))
				return QW_EINVAL;
	}
	for (size_t i = 0; i < st->nlinks; i++) {
		const struct qw_dashboard_link *l = &st->links[i];

		if (!l->a || !l->b || !has_node(st, l->a) || !has_node(st, l->b))
			return QW_EINVAL;
		if (!isnan(l->qber) && !(l->qber >= 0 && l->qber <= 1))
			return QW_EINVAL;
	}
	for (size_t i = 0; i < st->nalarms; i++) {
		const struct qw_dashboard_alarm *a = &st->alarms[i];

		if (!a->kind || !severity_name(a->severity) || (!a->link_a != !a->link_b))
			return QW_EINVAL;
		if (a->node && !has_node(st, a->node))
			return QW_EINVAL;
	}
	return 0;
}

/* Owned-reference helpers: jansson's *_new steals the value. */
static int put(json_t *o, const char *k, json_t *v)
{
	return v ? json_object_set_new(o, k, v) : -1;
}

static json_t *num_or_null(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static json_t *bits_or_null(uint64_t v)
{
	/* JSON numbers are doubles in the browser: exact up to 2^53 bits,
	 * more than any pool will hold. */
	return v == QW_DASHBOARD_UNKNOWN ? json_null() : json_integer((json_int_t)v);
}

static json_t *node_json(const struct qw_dashboard_state *st, const struct qw_dashboard_node *n)
{
	json_t *o = json_object(), *al = json_array();

	if (!o || !al)
		goto fail;
	for (size_t i = 0; i < st->nalarms; i++) {
		const struct qw_dashboard_alarm *a = &st->alarms[i];

		if (a->node && !a->link_a && !strcmp(a->node, n->id) &&
		    json_array_append_new(al, json_string(a->kind)))
			goto fail;
	}
	if (put(o, "id", json_string(n->id)) || put(o, "up", json_boolean(n->up)))
		goto fail;
	/* set_new takes the reference even when it fails */
	if (json_object_set_new(o, "alarms", al)) {
		al = NULL;
		goto fail;
	}
	return o;
fail:
	json_decref(al);
	json_decref(o);
	return NULL;
}

static json_t *link_json(const struct qw_dashboard_state *st, const struct qw_dashboard_link *l)
{
	json_t *o = json_object(), *al = json_array(), *pool = json_object();

	if (!o || !al || !pool)
		goto fail;
	for (size_t i = 0; i < st->nalarms; i++) {
		const struct qw_dashboard_alarm *a = &st->alarms[i];

		if (a->link_a && same_link(a->link_a, a->link_b, l->a, l->b) &&
		    json_array_append_new(al, json_string(a->kind)))
			goto fail;
	}
	if (put(pool, "a", bits_or_null(l->pool_bits_a)) ||
	    put(pool, "b", bits_or_null(l->pool_bits_b)))
		goto fail;
	if (put(o, "a", json_string(l->a)) || put(o, "b", json_string(l->b)) ||
	    put(o, "length_km", l->length_km >= 0 ? num_or_null(l->length_km) : json_null()) ||
	    put(o, "up", json_boolean(l->up)) || put(o, "qber", num_or_null(l->qber)) ||
	    put(o, "qber_alarm", json_boolean(l->qber_alarm)) ||
	    put(o, "key_rate_bps", num_or_null(l->key_rate_bps)))
		goto fail;
	if (json_object_set_new(o, "pool_bits", pool)) {
		pool = NULL;
		goto fail;
	}
	pool = NULL;
	if (json_object_set_new(o, "alarms", al)) {
		al = NULL;
		goto fail;
	}
	return o;
fail:
	json_decref(pool);
	json_decref(al);
	json_decref(o);
	return NULL;
}

static json_t *alarm_json(const struct qw_dashboard_alarm *a)
{
	json_t *o = json_object();
	char ts[32], link[2 * 256 + 2];

	if (!o)
		return NULL;
	iso_time(a->ts_ms, ts);
	if (a->link_a)
		snprintf(link, sizeof(link), "%s-%s", a->link_a, a->link_b);
	if (put(o, "ts", json_string(ts)) ||
	    put(o, "severity", json_string(severity_name(a->severity))) ||
	    put(o, "kind", json_string(a->kind)) ||
	    put(o, "node", a->node ? json_string(a->node) : json_null()) ||
	    put(o, "link", a->link_a ? json_string(link) : json_null()) ||
	    put(o, "message", json_string(a->message ? a->message : ""))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *relays_json(const struct qw_dashboard_relays *r)
{
	return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "sent", (json_int_t)r->sent, "forwarded",
			 (json_int_t)r->forwarded, "received", (json_int_t)r->received, "failed",
			 (json_int_t)r->failed, "auth_failures", (json_int_t)r->auth_failures,
			 "bits_consumed", (json_int_t)r->bits_consumed);
}

static int append(json_t *arr, json_t *v)
{
	return v ? json_array_append_new(arr, v) : -1;
}

int qw_dashboard_json(const struct qw_dashboard_state *st, char **out, size_t *len)
{
	json_t *o = NULL, *nodes = NULL, *links = NULL, *alarms = NULL;
	char ts[32];
	int ret;

	if (!st || !out || !len)
		qw_misuse("qw_dashboard_json: NULL argument");
	*out = NULL;
	*len = 0;
	if ((ret = validate(st)))
		return ret;
	ret = QW_ENOMEM;
	iso_time(st->generated_at_ms ? st->generated_at_ms : now_ms(), ts);
	if (!(o = json_object()) || put(o, "generated_at", json_string(ts)) ||
	    put(o, "self", st->self ? json_string(st->self) : json_null()))
		goto out;
	if (!(nodes = json_array()) || json_object_set(o, "nodes", nodes))
		goto out;
	for (size_t i = 0; i < st->nnodes; i++)
		if (append(nodes, node_json(st, &st->nodes[i])))
			goto out;
	if (!(links = json_array()) || json_object_set(o, "links", links))
		goto out;
	for (size_t i = 0; i < st->nlinks; i++)
		if (append(links, link_json(st, &st->links[i])))
			goto out;
	if (!(alarms = json_array()) || json_object_set(o, "alarms", alarms))
		goto out;
	for (size_t i = 0; i < st->nalarms; i++)
		if (append(alarms, alarm_json(&st->alarms[i])))
			goto out;
	if (put(o, "relays", relays_json(&st->relays)))
		goto out;
	if (!(*out = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10))))
		goto out;
	*len = strlen(*out);
	ret = 0;
out:
	json_decref(nodes);
	json_decref(links);
	json_decref(alarms);
	json_decref(o);
	return ret;
}

/* ---- replies ---- */

static void header(struct qw_dashboard_reply *r, const char *name, const char *value)
{
	if (r->nheaders < QW_DASHBOARD_MAX_HEADERS) {
		r->headers[r->nheaders][0] = name;
		r->headers[r->nheaders][1] = value;
		r->nheaders++;
	}
}

static void json_reply(struct qw_dashboard_reply *r, int status, const char *static_body)
{
	r->status = status;
	header(r, "Content-Type", "application/json");
	header(r, "Cache-Control", "no-store");
	header(r, "X-Content-Type-Options", "nosniff");
	if (static_body) {
		r->body = static_body;
		r->len = strlen(static_body);
	}
}

void qw_dashboard_handle(const char *path, qw_dashboard_state_fn fn, void *arg,
			 struct qw_dashboard_reply *r)
{
	const struct qw_dashboard_asset *a;

	if (!path || !fn || !r)
		qw_misuse("qw_dashboard_handle: NULL argument");
	memset(r, 0, sizeof(*r));
	if (!strcmp(path, API_PATH)) {
		struct qw_dashboard_state st;

		memset(&st, 0, sizeof(st));
		if (fn(arg, &st) || qw_dashboard_json(&st, &r->owned, &r->len)) {
			json_reply(r, 503, "{\"message\":\"network state unavailable\"}");
			return;
		}
		json_reply(r, 200, NULL);
		r->body = r->owned;
		return;
	}
	if (!(a = qw_dashboard_asset(path))) {
		json_reply(r, 404, "{\"message\":\"not found\"}");
		return;
	}
	r->status = 200;
	header(r, "Content-Type", a->content_type);
	/* Revalidate each load: after an upgrade the page and its script must
	 * not come from two versions. */
	header(r, "Cache-Control", "no-cache");
	header(r, "X-Content-Type-Options", "nosniff");
	header(r, "Content-Security-Policy", CSP);
	header(r, "Referrer-Policy", "no-referrer");
	r->body = (const char *)a->data;
	r->len = a->len;
}

void qw_dashboard_reply_clear(struct qw_dashboard_reply *r)
{
	if (!r)
		return;
	free(r->owned);
	memset(r, 0, sizeof(*r));
}

/* ---- HTTPS routes ---- */

static void on_request(void *arg, struct qw_https_req *req)
{
	struct qw_dashboard *d = arg;
	struct qw_dashboard_reply r;

	qw_dashboard_handle(qw_https_req_path(req), d->fn, d->arg, &r);
	for (size_t i = 0; i < r.nheaders; i++)
		qw_https_req_add_header(req, r.headers[i][0], r.headers[i][1]);
	qw_https_reply(req, r.status, r.body, r.len);
	qw_dashboard_reply_clear(&r);
}

struct qw_dashboard *qw_dashboard_new(struct qw_https_server *srv, qw_dashboard_state_fn fn,
				      void *arg, int *err)
{
	struct qw_dashboard *d = NULL;
	int ret = QW_EINVAL;

	if (!srv || !fn)
		goto out;
	ret = QW_ENOMEM;
	if (!(d = malloc(sizeof(*d))))
		goto out;
	d->fn = fn;
	d->arg = arg;
	if ((ret = qw_https_route(srv, QW_HTTP_GET, "/", on_request, d)) ||
	    (ret = qw_https_route(srv, QW_HTTP_GET, DASH_PREFIX, on_request, d)) ||
	    (ret = qw_https_route(srv, QW_HTTP_GET, API_PATH, on_request, d))) {
		free(d);
		d = NULL;
		goto out;
	}
	ret = 0;
out:
	if (err)
		*err = ret;
	return d;
}

void qw_dashboard_free(struct qw_dashboard *d)
{
	free(d);
}
