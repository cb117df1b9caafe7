/* ETSI GS QKD 014 V1.1.1: request parsing (clause 5 URLs and methods,
 * clause 6 data formats), the three handlers and the mapping of kme.h
 * results to HTTP statuses. Parsing is pure; handlers only glue it to the
 * HTTPS server and the key manager. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "qwave/encoding.h"
#include "qwave/etsi014.h"
#include "qwave/secmem.h"
#include "qwave/uuid.h"

#define ECHO_MAX 40

/* ---- errors ---- */

static int fail(struct qw_etsi014_error *e, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct qw_etsi014_error *e, int status, const char *fmt, ...)
{
	va_list ap;

	e->status = status;
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	return QW_EINVAL;
}

/* Client text echoed in a message: printable ASCII only, shortened, so a
 * message is always valid UTF-8 and bounded. */
static const char *echo(char out[ECHO_MAX + 4], const char *s, size_t n)
{
	size_t j = 0;

	for (size_t i = 0; i < n && j < ECHO_MAX; i++)
		out[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (n > ECHO_MAX) {
		memcpy(out + j, "...", 3);
		j += 3;
	}
	out[j] = '\0';
	return out;
}

void qw_etsi014_error_clear(struct qw_etsi014_error *e)
{
	if (!e)
		return;
	json_decref(e->details);
	memset(e, 0, sizeof(*e));
}

char *qw_etsi014_error_json(const struct qw_etsi014_error *e)
{
	json_t *o = json_pack("{s:s}", "message", e->message);
	char *txt = NULL;

	if (!o)
		return NULL;
	if (e->details && json_object_set(o, "details", e->details) != 0)
		goto out;
	txt = json_dumps(o, JSON_COMPACT);
out:
	json_decref(o);
	return txt;
}

void qw_etsi014_request_clear(struct qw_etsi014_request *r)
{
	if (!r)
		return;
	free(r->additional);
	free(r->key_ids);
	memset(r, 0, sizeof(*r));
}

/* ---- URL ---- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Strict RFC 3986 percent-decoding of s[0..n) into out (cap bytes with the
 * NUL); '+' stays '+'. -1 on a malformed escape or overflow. */
static int pct_decode(const char *s, size_t n, char *out, size_t cap, size_t *outlen)
{
	size_t j = 0;

	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)s[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= n)
				return -1;
			hi = hexval(s[i + 1]);
			lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = hi * 16 + lo;
			i += 2;
		}
		if (j + 1 >= cap)
			return -1;
		out[j++] = (char)c;
	}
	out[j] = '\0';
	*outlen = j;
	return 0;
}

/* SAE IDs: 1..QW_KME_ID_MAX printable ASCII characters (qwave's own are
 * [A-Za-z0-9._-], pki.h; others may come from foreign certificates). */
static int sae_id_ok(const char *s, size_t n)
{
	if (n == 0 || n > QW_KME_ID_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] >= 0x7f)
			return 0;
	return 1;
}

static int parse_path(const char *path, struct qw_etsi014_request *r, struct qw_etsi014_error *e)
{
	static const size_t plen = sizeof(QW_ETSI014_PREFIX) - 1;
	char buf[QW_KME_ID_MAX + 2];
	const char *rest, *slash;
	size_t n;

	if (strncmp(path, QW_ETSI014_PREFIX, plen) != 0)
		return fail(e, 404, "no such resource");
	rest = path + plen;
	slash = strchr(rest, '/');
	if (!slash)
		return fail(e, 404, "no such resource");
	if (!strcmp(slash + 1, "status"))
		r->op = QW_ETSI014_STATUS;
	else if (!strcmp(slash + 1, "enc_keys"))
		r->op = QW_ETSI014_ENC_KEYS;
	else if (!strcmp(slash + 1, "dec_keys"))
		r->op = QW_ETSI014_DEC_KEYS;
	else
		return fail(e, 404, "no such resource");
	if (pct_decode(rest, (size_t)(slash - rest), buf, sizeof(buf), &n) != 0 ||
	    strlen(buf) != n || !sae_id_ok(buf, n))
		return fail(e, 400, "%s in the URL is not a valid SAE ID",
			    r->op == QW_ETSI014_DEC_KEYS ? "master_SAE_ID" : "slave_SAE_ID");
	memcpy(r->sae_id, buf, n + 1);
	return 0;
}

/* ---- numbers ---- */

static int parse_u32_text(const char *s, uint32_t *out)
{
	uint64_t v = 0;
	size_t n = strlen(s);

	if (n == 0 || n > 10)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

/* Clause 6.2 rules for number and size that do not depend on the KME. */
static int check_number(int64_t v, uint32_t *out, struct qw_etsi014_error *e)
{
	if (v < 1 || v > UINT32_MAX)
		return fail(e, 400, "number shall be a positive integer");
	*out = (uint32_t)v;
	return 0;
}

static int check_size(int64_t v, uint32_t *out, struct qw_etsi014_error *e)
{
	if (v < 1 || v > UINT32_MAX)
		return fail(e, 400, "size shall be a positive integer");
	if (v % 8 != 0)
		return fail(e, 400, "size shall be a multiple of 8");
	*out = (uint32_t)v;
	return 0;
}

/* ---- query (GET forms of 6.2 and 6.4) ---- */

static int parse_query(const char *q, struct qw_etsi014_request *r, struct qw_etsi014_error *e)
{
	char val[QW_KEY_ID_STR_BYTES + 8], eb[ECHO_MAX + 4];
	int seen_number = 0, seen_size = 0, seen_key = 0;

	while (q && *q) {
		const char *amp = strchr(q, '&'), *eq;
		size_t len = amp ? (size_t)(amp - q) : strlen(q), nlen, vlen;

		eq = memchr(q, '=', len);
		nlen = eq ? (size_t)(eq - q) : len;
		if (len == 0)
			goto next;
		if (!eq)
			return fail(e, 400, "query parameter '%s' has no value", echo(eb, q, nlen));
		if (pct_decode(eq + 1, len - nlen - 1, val, sizeof(val), &vlen) != 0 ||
		    strlen(val) != vlen)
			return fail(e, 400, "malformed value of query parameter '%s'",
				    echo(eb, q, nlen));
		if (r->op == QW_ETSI014_ENC_KEYS && nlen == 6 && !memcmp(q, "number", 6)) {
			uint32_t v;

			if (seen_number++)
				return fail(e, 400, "query parameter 'number' given twice");
			if (parse_u32_text(val, &v) != 0)
				return fail(e, 400, "number shall be a positive integer");
			if (check_number(v, &r->number, e))
				return QW_EINVAL;
		} else if (r->op == QW_ETSI014_ENC_KEYS && nlen == 4 && !memcmp(q, "size", 4)) {
			uint32_t v;

			if (seen_size++)
				return fail(e, 400, "query parameter 'size' given twice");
			if (parse_u32_text(val, &v) != 0)
				return fail(e, 400, "size shall be a positive integer");
			if (check_size(v, &r->size_bits, e))
				return QW_EINVAL;
		} else if (r->op == QW_ETSI014_DEC_KEYS && nlen == 6 && !memcmp(q, "key_ID", 6)) {
			struct qw_uuid u;

			if (seen_key++)
				return fail(e, 400, "query parameter 'key_ID' given twice: use POST "
						    "with Key IDs for several keys");
			if (qw_uuid_parse(&u, val) != 0)
				return fail(e, 400, "key_ID '%s' is not a UUID",
					    echo(eb, val, vlen));
			if (!(r->key_ids = calloc(1, sizeof(*r->key_ids))))
				return QW_ENOMEM;
			qw_uuid_format(&u, r->key_ids[0]);
			r->n_key_ids = 1;
		} else {
			return fail(e, 400, "unknown query parameter '%s'", echo(eb, q, nlen));
		}
	next:
		q = amp ? amp + 1 : NULL;
	}
	if (r->op == QW_ETSI014_DEC_KEYS && !seen_key)
		return fail(e, 400, "key_ID query parameter is required (or POST Key IDs)");
	return 0;
}

/* ---- JSON bodies ---- */

static int load_object(const uint8_t *body, size_t len, const char *what, json_t **out,
		       struct qw_etsi014_error *e)
{
	char eb[ECHO_MAX + 4];
	json_error_t je;
	json_t *j;

	j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &je);
	if (!j)
		return fail(e, 400, "malformed JSON (line %d column %d): %s", je.line, je.column,
			    echo(eb, je.text, strlen(je.text)));
	if (!json_is_object(j)) {
		json_decref(j);
		return fail(e, 400, "%s shall be a JSON object", what);
	}
	*out = j;
	return 0;
}

static int sae_list(json_t *a, struct qw_etsi014_request *r, struct qw_etsi014_error *e)
{
	size_t n = json_array_size(a);

	if (!json_is_array(a))
		return fail(e, 400, "additional_slave_SAE_IDs shall be an array of strings");
	if (n > QW_ETSI014_MAX_SAE_IDS)
		return fail(e, 400, "additional_slave_SAE_IDs lists more than %d SAE IDs",
			    QW_ETSI014_MAX_SAE_IDS);
	if (n && !(r->additional = calloc(n, sizeof(*r->additional))))
		return QW_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_array_get(a, i);
		const char *v = json_string_value(s);
		size_t vl = json_string_length(s);

		if (!json_is_string(s) || !sae_id_ok(v, vl))
			return fail(e, 400, "additional_slave_SAE_IDs[%zu] is not a valid SAE ID",
				    i);
		if (!strcmp(v, r->sae_id))
			return fail(e, 400, "additional_slave_SAE_IDs repeats the slave_SAE_ID");
		for (size_t k = 0; k < i; k++)
			if (!strcmp(r->additional[k], v))
				return fail(e, 400, "additional_slave_SAE_IDs lists an SAE ID twice");
		memcpy(r->additional[i], v, vl + 1);
	}
	r->n_additional = n;
	return 0;
}

/* extension_mandatory: qwave supports no extension parameter, so any one
 * present refuses the request (6.2), naming each in details. */
static int ext_mandatory(json_t *a, struct qw_etsi014_error *e)
{
	json_t *details = NULL;
	size_t i;
	json_t *obj;

	if (!json_is_array(a))
		return fail(e, 400, "extension_mandatory shall be an array of objects");
	json_array_foreach(a, i, obj) {
		const char *name;
		json_t *v;

		if (!json_is_object(obj)) {
			json_decref(details);
			return fail(e, 400, "extension_mandatory shall be an array of objects");
		}
		json_object_foreach(obj, name, v) {
			char eb[ECHO_MAX + 4], msg[ECHO_MAX + 32];

			(void)v;
			if (!details && !(details = json_array()))
				return QW_ENOMEM;
			snprintf(msg, sizeof(msg), "%s is not supported",
				 echo(eb, name, strlen(name)));
			if (json_array_append_new(details, json_pack("{s:s}",
								      "extension_mandatory_unsupported",
								      msg))) {
				json_decref(details);
				return QW_ENOMEM;
			}
		}
	}
	if (!details)
		return 0;
	e->details = details;
	return fail(e, 400, "not all extension_mandatory parameters are supported");
}

static int ext_optional(json_t *a, struct qw_etsi014_error *e)
{
	size_t i;
	json_t *obj;

	if (!json_is_array(a))
		return fail(e, 400, "extension_optional shall be an array of objects");
	json_array_foreach(a, i, obj)
		if (!json_is_object(obj))
			return fail(e, 400, "extension_optional shall be an array of objects");
	return 0; /* ignored, as 6.2 permits: the keys are returned as usual */
}

static int integer_of(json_t *v, const char *name, int64_t *out, struct qw_etsi014_error *e)
{
	if (!json_is_integer(v))
		return fail(e, 400, "%s shall be an integer", name);
	*out = (int64_t)json_integer_value(v);
	return 0;
}

/* Key request (6.2). An empty body is the empty Key request. */
static int parse_key_request(const uint8_t *body, size_t len, struct qw_etsi014_request *r,
			     struct qw_etsi014_error *e)
{
	json_t *j = NULL, *v, *mand = NULL;
	const char *name;
	int64_t num = 0;
	int ret;

	if (len == 0)
		return 0;
	if ((ret = load_object(body, len, "Key request", &j, e)))
		return ret;
	json_object_foreach(j, name, v) {
		char eb[ECHO_MAX + 4];

		if (!strcmp(name, "number")) {
			if ((ret = integer_of(v, "number", &num, e)) || (ret = check_number(num, &r->number, e)))
				goto out;
		} else if (!strcmp(name, "size")) {
			if ((ret = integer_of(v, "size", &num, e)) || (ret = check_size(num, &r->size_bits, e)))
				goto out;
		} else if (!strcmp(name, "additional_slave_SAE_IDs")) {
			if ((ret = sae_list(v, r, e)))
				goto out;
		} else if (!strcmp(name, "extension_mandatory")) {
			mand = v; /* judged last: a malformed field elsewhere comes first */
		} else if (!strcmp(name, "extension_optional")) {
			if ((ret = ext_optional(v, e)))
				goto out;
		} else {
			ret = fail(e, 400, "unknown field '%s' in Key request",
				   echo(eb, name, strlen(name)));
			goto out;
		}
	}
	ret = mand ? ext_mandatory(mand, e) : 0;
out:
	json_decref(j);
	return ret;
}

static int cmp_id_ptr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Duplicate key IDs in O(n log n): 1024 IDs must not cost the event loop
 * half a million comparisons. Reports the first duplicate in sort order. */
static int find_duplicate(const struct qw_etsi014_request *r, struct qw_etsi014_error *e)
{
	const char **p = calloc(r->n_key_ids, sizeof(*p));
	int ret = 0;

	if (!p)
		return QW_ENOMEM;
	for (size_t i = 0; i < r->n_key_ids; i++)
		p[i] = r->key_ids[i];
	qsort(p, r->n_key_ids, sizeof(*p), cmp_id_ptr);
	for (size_t i = 1; i < r->n_key_ids && !ret; i++)
		if (!strcmp(p[i - 1], p[i]))
			ret = fail(e, 400, "key_ID %s is listed twice", p[i]);
	free(p);
	return ret;
}

/* Key IDs (6.4). */
static int parse_key_ids(const uint8_t *body, size_t len, struct qw_etsi014_request *r,
			 struct qw_etsi014_error *e)
{
	json_t *j = NULL, *v, *ids = NULL;
	const char *name;
	size_t n, i;
	int ret;

	if (len == 0)
		return fail(e, 400, "Key IDs body is required");
	if ((ret = load_object(body, len, "Key IDs", &j, e)))
		return ret;
	json_object_foreach(j, name, v) {
		char eb[ECHO_MAX + 4];

		if (!strcmp(name, "key_IDs")) {
			ids = v;
		} else if (!strcmp(name, "key_IDs_extension")) {
			if (!json_is_object(v)) {
				ret = fail(e, 400, "key_IDs_extension shall be an object");
				goto out;
			}
		} else {
			ret = fail(e, 400, "unknown field '%s' in Key IDs", echo(eb, name, strlen(name)));
			goto out;
		}
	}
	if (!ids) {
		ret = fail(e, 400, "key_IDs is required");
		goto out;
	}
	if (!json_is_array(ids)) {
		ret = fail(e, 400, "key_IDs shall be an array of objects");
		goto out;
	}
	n = json_array_size(ids);
	if (n == 0) {
		ret = fail(e, 400, "key_IDs shall list at least one key");
		goto out;
	}
	if (n > QW_ETSI014_MAX_KEY_IDS) {
		ret = fail(e, 400, "key_IDs lists more than %d keys", QW_ETSI014_MAX_KEY_IDS);
		goto out;
	}
	ret = QW_ENOMEM;
	if (!(r->key_ids = calloc(n, sizeof(*r->key_ids))))
		goto out;
	json_array_foreach(ids, i, v) {
		json_t *kid = json_object_get(v, "key_ID"), *x;
		const char *kname;
		struct qw_uuid u;
		char eb[ECHO_MAX + 4];

		if (!json_is_object(v)) {
			ret = fail(e, 400, "key_IDs shall be an array of objects");
			goto out;
		}
		json_object_foreach(v, kname, x) {
			if (strcmp(kname, "key_ID") && strcmp(kname, "key_ID_extension")) {
				ret = fail(e, 400, "unknown field '%s' in key_IDs[%zu]",
					   echo(eb, kname, strlen(kname)), i);
				goto out;
			}
			if (!strcmp(kname, "key_ID_extension") && !json_is_object(x)) {
				ret = fail(e, 400, "key_ID_extension shall be an object");
				goto out;
			}
		}
		if (!json_is_string(kid)) {
			ret = fail(e, 400, "key_IDs[%zu].key_ID shall be a string", i);
			goto out;
		}
		if (strlen(json_string_value(kid)) != json_string_length(kid) ||
		    qw_uuid_parse(&u, json_string_value(kid)) != 0) {
			ret = fail(e, 400, "key_ID '%s' is not a UUID",
				   echo(eb, json_string_value(kid), json_string_length(kid)));
			goto out;
		}
		qw_uuid_format(&u, r->key_ids[i]);
		r->n_key_ids = i + 1;
	}
	ret = find_duplicate(r, e);
out:
	json_decref(j);
	return ret;
}

int qw_etsi014_parse(enum qw_http_method method, const char *path, const char *query,
		     const uint8_t *body, size_t len, struct qw_etsi014_request *out,
		     struct qw_etsi014_error *err)
{
	struct qw_etsi014_request r = { .number = 1 };
	int ret;

	QW_REQUIRE(path && out && err && (body || len == 0));
	memset(err, 0, sizeof(*err));
	memset(out, 0, sizeof(*out));
	if ((ret = parse_path(path, &r, err)))
		goto out;
	if (query && !*query)
		query = NULL;
	switch (r.op) {
	case QW_ETSI014_STATUS:
		if (method != QW_HTTP_GET) {
			err->allow = QW_HTTP_GET;
			ret = fail(err, 405, "Get status takes GET only");
		} else if (query) {
			ret = fail(err, 400, "Get status takes no query parameters");
		} else if (len) {
			ret = fail(err, 400, "GET requests take no message body");
		}
		break;
	case QW_ETSI014_ENC_KEYS:
	case QW_ETSI014_DEC_KEYS:
		if (method == QW_HTTP_GET) {
			if (len)
				ret = fail(err, 400, "GET requests take no message body");
			else
				ret = parse_query(query, &r, err);
		} else if (method == QW_HTTP_POST) {
			if (query)
				ret = fail(err, 400, "POST requests take their parameters in the JSON "
						     "body, not in the query");
			else if (r.op == QW_ETSI014_ENC_KEYS)
				ret = parse_key_request(body, len, &r, err);
			else
				ret = parse_key_ids(body, len, &r, err);
		} else {
			err->allow = QW_HTTP_GET | QW_HTTP_POST;
			ret = fail(err, 405, "%s takes GET or POST only",
				   r.op == QW_ETSI014_ENC_KEYS ? "Get key" : "Get key with key IDs");
		}
		break;
	}
out:
	if (ret) {
		qw_etsi014_request_clear(&r);
		if (ret != QW_EINVAL)
			qw_etsi014_error_clear(err);
		return ret;
	}
	*out = r;
	return 0;
}

int qw_etsi014_check_limits(struct qw_etsi014_request *r, const struct qw_kme_status *st,
			    struct qw_etsi014_error *e)
{
	QW_REQUIRE(r && st && e);
	memset(e, 0, sizeof(*e));
	if (r->op != QW_ETSI014_ENC_KEYS)
		return 0;
	if (r->size_bits == 0)
		r->size_bits = st->key_size;
	if (r->number > st->max_key_per_request)
		return fail(e, 400, "number exceeds max_key_per_request (%u)",
			    st->max_key_per_request);
	if (r->size_bits % 8 != 0)
		return fail(e, 400, "size shall be a multiple of 8");
	if (r->size_bits < st->min_key_size || r->size_bits > st->max_key_size)
		return fail(e, 400, "size shall be between min_key_size (%u) and max_key_size (%u)",
			    st->min_key_size, st->max_key_size);
	if (r->n_additional > st->max_sae_id_count)
		return fail(e, 400, "additional_slave_SAE_IDs exceeds max_SAE_ID_count (%u)",
			    st->max_sae_id_count);
	return 0;
}

/* ---- handlers ---- */

/* Get key needs the KME's limits (clause 6.1) to check a request, and a
 * Status also counts the stored keys, which costs the key manager a store
 * query. Limits are configuration: Get key reuses the answer of the last
 * successful Status for the same SAE pair for up to LIMITS_TTL_S seconds.
 * Permission, routing and the limits themselves are checked again by
 * get_keys on every request; only the 400 texts could come from the cache. */
#define LIMITS_CACHED 8
#define LIMITS_TTL_S 1.0

struct limits {
	char caller[QW_KME_ID_MAX + 1], slave[QW_KME_ID_MAX + 1];
	struct qw_kme_status st;
	double t; /* 0: empty */
};

struct qw_etsi014 {
	const struct qw_kme_ops *ops;
	void *ctx;
	struct limits cache[LIMITS_CACHED];
	size_t next;
};

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The KME's status for caller -> slave, from the cache when fresh. */
static int limits_of(struct qw_etsi014 *e, const char *caller, const char *slave,
		     struct qw_kme_status *st)
{
	double now = mono_s();
	struct limits *c;
	int ret;

	for (size_t i = 0; i < LIMITS_CACHED; i++) {
		c = &e->cache[i];
		if (c->t > 0 && now - c->t < LIMITS_TTL_S && !strcmp(c->caller, caller) &&
		    !strcmp(c->slave, slave)) {
			*st = c->st;
			return 0;
		}
	}
	memset(st, 0, sizeof(*st));
	ret = e->ops->status(e->ctx, caller, slave, st);
	if (ret || strlen(caller) >= sizeof(c->caller) || strlen(slave) >= sizeof(c->slave))
		return ret;
	c = &e->cache[e->next];
	e->next = (e->next + 1) % LIMITS_CACHED;
	memcpy(c->caller, caller, strlen(caller) + 1);
	memcpy(c->slave, slave, strlen(slave) + 1);
	c->st = *st;
	c->t = now;
	return 0;
}

/* One Get key / Get key with key IDs in flight. */
struct flight {
	struct qw_etsi014_request r;
	struct qw_https_req *req;
	char caller[QW_KME_ID_MAX + 1];
	/* Pointers into r handed to the key manager: valid until completion,
	 * so an asynchronous implementation may keep them. */
	const char **ptrs;
};

static void reply_error(struct qw_https_req *req, struct qw_etsi014_error *e)
{
	char *txt = qw_etsi014_error_json(e);

	if (e->status == 405 && e->allow) {
		char allow[32];

		snprintf(allow, sizeof(allow), "%s%s%s", e->allow & QW_HTTP_GET ? "GET" : "",
			 (e->allow & QW_HTTP_GET) && (e->allow & QW_HTTP_POST) ? ", " : "",
			 e->allow & QW_HTTP_POST ? "POST" : "");
		qw_https_req_add_header(req, "Allow", allow);
	}
	qw_https_req_note(req, "%.80s", e->message);
	if (txt) {
		qw_https_reply(req, e->status, txt, strlen(txt));
		free(txt);
	} else {
		qw_https_reply_error(req, e->status, e->message);
	}
}

/* 401: the spec gives no body ("-"); qwave sends the same minimal Error
 * object every time and keeps the reason for the access log only. */
static void reply_401(struct qw_https_req *req, const char *why)
{
	qw_https_req_note(req, "unauthorized: %s", why);
	qw_https_reply(req, 401, "{\"message\":\"unauthorized\"}", 26);
}

static void reply_kme_error(struct qw_https_req *req, int err, enum qw_etsi014_op op)
{
	struct qw_etsi014_error e = { 0 };

	switch (err) {
	case QW_EPERM:
		reply_401(req, op == QW_ETSI014_DEC_KEYS ? "keys not issued to the caller"
							 : "caller not entitled");
		return;
	case QW_ENOTFOUND:
		if (op == QW_ETSI014_DEC_KEYS)
			fail(&e, 400, "one or more keys specified are not found on KME");
		else
			fail(&e, 400, "one or more SAE IDs are unknown to this KME");
		break;
	case QW_ERANGE:
		fail(&e, 400, "number or size outside this KME's limits");
		break;
	case QW_EAGAIN:
		fail(&e, 503, "insufficient key material");
		break;
	case QW_ETIMEOUT:
		fail(&e, 503, "peer KME did not answer in time");
		break;
	default:
		fail(&e, 503, "key data access error");
		break;
	}
	reply_error(req, &e);
}

/* Key container (6.3) written by hand into one buffer we own, so the
 * key material exists in exactly one plaintext copy that is wiped after
 * it is sent (jansson would leave unwiped copies behind). */
static int render_keys(const struct qw_kme_key *keys, size_t n, char **out, size_t *outlen)
{
	static const char head[] = "{\"keys\":[", k1[] = "{\"key_ID\":\"", k2[] = "\",\"key\":\"",
			  k3[] = "\"}", tail[] = "]}";
	size_t cap = sizeof(head) + sizeof(tail), pos = 0;
	char *buf;

	for (size_t i = 0; i < n; i++)
		cap += sizeof(k1) + 36 + sizeof(k2) + qw_base64_encoded_len(keys[i].size_bits / 8) +
		       sizeof(k3) + 1;
	if (!(buf = malloc(cap)))
		return QW_ENOMEM;
	memcpy(buf, head, sizeof(head) - 1);
	pos = sizeof(head) - 1;
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf[pos++] = ',';
		memcpy(buf + pos, k1, sizeof(k1) - 1);
		pos += sizeof(k1) - 1;
		memcpy(buf + pos, keys[i].key_id, 36);
		pos += 36;
		memcpy(buf + pos, k2, sizeof(k2) - 1);
		pos += sizeof(k2) - 1;
		if (qw_base64_encode(buf + pos, cap - pos, keys[i].key, keys[i].size_bits / 8)) {
			qw_free_secret(buf, cap);
			return QW_ECRYPTO;
		}
		pos += qw_base64_encoded_len(keys[i].size_bits / 8);
		memcpy(buf + pos, k3, sizeof(k3) - 1);
		pos += sizeof(k3) - 1;
	}
	memcpy(buf + pos, tail, sizeof(tail) - 1);
	pos += sizeof(tail) - 1;
	/* The reply owns exactly pos bytes: wipe the slack now. */
	qw_wipe(buf + pos, cap - pos);
	*out = buf;
	*outlen = pos;
	return 0;
}

/* What the key manager returned is what was asked for: count, sizes, and
 * (with key IDs) exactly the requested keys, each a canonical UUID. */
static int keys_match(const struct flight *f, const struct qw_kme_key *keys, size_t n)
{
	const struct qw_etsi014_request *r = &f->r;

	if (r->op == QW_ETSI014_ENC_KEYS ? n != r->number : n != r->n_key_ids)
		return 0;
	for (size_t i = 0; i < n; i++) {
		struct qw_uuid u;
		char canon[QW_UUID_STR_BYTES];
		int found = r->op == QW_ETSI014_ENC_KEYS;

		if (!keys[i].key || keys[i].size_bits == 0 || keys[i].size_bits % 8 ||
		    memchr(keys[i].key_id, '\0', QW_KEY_ID_STR_BYTES) == NULL ||
		    qw_uuid_parse(&u, keys[i].key_id) != 0)
			return 0;
		qw_uuid_format(&u, canon);
		if (strcmp(canon, keys[i].key_id))
			return 0;
		if (r->op == QW_ETSI014_ENC_KEYS && keys[i].size_bits != r->size_bits)
			return 0;
		for (size_t k = 0; !found && k < r->n_key_ids; k++)
			found = !strcmp(r->key_ids[k], keys[i].key_id);
		if (!found)
			return 0;
	}
	return 1;
}

static void keys_done(void *arg, int err, struct qw_kme_key *keys, size_t n)
{
	struct flight *f = arg;
	char *body = NULL;
	size_t len = 0;
	uint32_t size;

	if (err) {
		qw_kme_keys_free(keys, n);
		reply_kme_error(f->req, err, f->r.op);
		goto out;
	}
	if (!keys_match(f, keys, n)) {
		qw_kme_keys_free(keys, n);
		reply_kme_error(f->req, QW_EPROTO, f->r.op);
		goto out;
	}
	size = n ? keys[0].size_bits : 0;
	err = render_keys(keys, n, &body, &len);
	qw_kme_keys_free(keys, n);
	if (err) {
		reply_kme_error(f->req, err, f->r.op);
		goto out;
	}
	qw_https_req_note(f->req, "keys=%zu size=%u", n, size);
	qw_https_reply_secret(f->req, 200, body, len);
out:
	qw_etsi014_request_clear(&f->r);
	free(f->ptrs);
	free(f);
}

/* Move r into a new flight, with the pointer array the key manager is
 * given (the additional slave SAEs, or the key IDs). On failure: answers
 * 503, clears r, NULL. */
static struct flight *flight_new(struct qw_https_req *req, const char *caller,
				 struct qw_etsi014_request *r)
{
	int enc = r->op == QW_ETSI014_ENC_KEYS;
	size_t n = enc ? r->n_additional : r->n_key_ids;
	struct flight *f = calloc(1, sizeof(*f));

	if (!f || !(f->ptrs = calloc(n + 1, sizeof(*f->ptrs)))) {
		free(f);
		reply_kme_error(req, QW_ENOMEM, r->op);
		qw_etsi014_request_clear(r);
		return NULL;
	}
	f->r = *r;
	f->req = req;
	snprintf(f->caller, sizeof(f->caller), "%s", caller);
	memset(r, 0, sizeof(*r));
	for (size_t i = 0; i < n; i++)
		f->ptrs[i] = enc ? f->r.additional[i] : f->r.key_ids[i];
	return f;
}

static void do_status(struct qw_etsi014 *e, struct qw_https_req *req, const char *caller,
		      struct qw_etsi014_request *r)
{
	struct qw_kme_status st;
	json_t *o;
	char *txt;
	int err;

	memset(&st, 0, sizeof(st));
	err = e->ops->status(e->ctx, caller, r->sae_id, &st);
	if (err) {
		reply_kme_error(req, err, QW_ETSI014_STATUS);
		return;
	}
	st.source_kme_id[QW_KME_ID_MAX] = st.target_kme_id[QW_KME_ID_MAX] = '\0';
	/* Table 9; status_extension is omitted. */
	o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
		      "source_KME_ID", st.source_kme_id, "target_KME_ID", st.target_kme_id,
		      "master_SAE_ID", caller, "slave_SAE_ID", r->sae_id,
		      "key_size", (json_int_t)st.key_size,
		      "stored_key_count", (json_int_t)st.stored_key_count,
		      "max_key_count", (json_int_t)st.max_key_count,
		      "max_key_per_request", (json_int_t)st.max_key_per_request,
		      "max_key_size", (json_int_t)st.max_key_size,
		      "min_key_size", (json_int_t)st.min_key_size,
		      "max_SAE_ID_count", (json_int_t)st.max_sae_id_count);
	txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!txt) {
		reply_kme_error(req, QW_ENOMEM, QW_ETSI014_STATUS);
		return;
	}
	qw_https_req_note(req, "stored_key_count=%llu", (unsigned long long)st.stored_key_count);
	qw_https_reply(req, 200, txt, strlen(txt));
	free(txt);
}

static void do_enc_keys(struct qw_etsi014 *e, struct qw_https_req *req, const char *caller,
			struct qw_etsi014_request *r)
{
	struct qw_kme_status st;
	struct qw_etsi014_error err = { 0 };
	struct qw_kme_get_key_req kr;
	struct flight *f;
	int ret;

	ret = limits_of(e, caller, r->sae_id, &st);
	if (ret) {
		reply_kme_error(req, ret, QW_ETSI014_ENC_KEYS);
		qw_etsi014_request_clear(r);
		return;
	}
	if (qw_etsi014_check_limits(r, &st, &err)) {
		reply_error(req, &err);
		qw_etsi014_error_clear(&err);
		qw_etsi014_request_clear(r);
		return;
	}
	if (!(f = flight_new(req, caller, r)))
		return;
	kr = (struct qw_kme_get_key_req){
		.master_sae = f->caller,
		.slave_sae = f->r.sae_id,
		.additional_slaves = f->ptrs,
		.n_additional = f->r.n_additional,
		.number = f->r.number,
		.size_bits = f->r.size_bits,
	};
	/* May complete (and free f) before returning. */
	e->ops->get_keys(e->ctx, &kr, keys_done, f);
}

static void do_dec_keys(struct qw_etsi014 *e, struct qw_https_req *req, const char *caller,
			struct qw_etsi014_request *r)
{
	struct flight *f = flight_new(req, caller, r);

	if (!f)
		return;
	e->ops->get_keys_with_ids(e->ctx, f->caller, f->r.sae_id, f->ptrs, f->r.n_key_ids,
				  keys_done, f);
}

static void handle(void *arg, struct qw_https_req *req)
{
	struct qw_etsi014 *e = arg;
	struct qw_etsi014_request r;
	struct qw_etsi014_error err;
	const uint8_t *body;
	size_t len;
	const char *caller = qw_https_req_peer_id(req);
	char who[QW_KME_ID_MAX + 1];
	int ret;

	body = qw_https_req_body(req, &len);
	ret = qw_etsi014_parse(qw_https_req_method(req), qw_https_req_path(req),
			       qw_https_req_query(req), body, len, &r, &err);
	if (ret == QW_ENOMEM) {
		reply_kme_error(req, QW_ENOMEM, 0);
		return;
	}
	/* Authentication first (clause 5.1): whoever is not an SAE learns
	 * nothing, not even whether the request was well formed. */
	if (!caller || qw_https_req_peer_kind(req) != QW_PKI_SAE) {
		if (!ret)
			qw_etsi014_request_clear(&r);
		else
			qw_etsi014_error_clear(&err);
		reply_401(req, caller ? "certificate is not an SAE's" : "no qwave identity");
		return;
	}
	if (ret) {
		reply_error(req, &err);
		qw_etsi014_error_clear(&err);
		return;
	}
	snprintf(who, sizeof(who), "%s", caller);
	switch (r.op) {
	case QW_ETSI014_STATUS:
		do_status(e, req, who, &r);
		qw_etsi014_request_clear(&r);
		break;
	case QW_ETSI014_ENC_KEYS:
		do_enc_keys(e, req, who, &r);
		break;
	case QW_ETSI014_DEC_KEYS:
		do_dec_keys(e, req, who, &r);
		break;
	}
}

struct qw_etsi014 *qw_etsi014_new(struct qw_https_server *srv, const struct qw_kme_ops *ops,
				  void *ctx, int *err)
{
	struct qw_etsi014 *e;
	int ret;

	QW_REQUIRE(srv && ops && ops->status && ops->get_keys && ops->get_keys_with_ids);
	if (!(e = calloc(1, sizeof(*e)))) {
		ret = QW_ENOMEM;
		goto out;
	}
	e->ops = ops;
	e->ctx = ctx;
	/* Every method reaches the handler so that the ETSI paths answer 405
	 * with an Error body of their own. */
	if ((ret = qw_https_route(srv, QW_HTTP_ANY, QW_ETSI014_PREFIX, handle, e))) {
		free(e);
		e = NULL;
	}
out:
	if (err)
		*err = e ? 0 : ret;
	return e;
}

void qw_etsi014_free(struct qw_etsi014 *e)
{
	free(e);
}
