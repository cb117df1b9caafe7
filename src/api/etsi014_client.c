/* ETSI GS QKD 014 V1.1.1 client over libcurl (see etsi014_client.h).
 *
 * Secrets: the response body (base64 keys) lives in a buffer wiped when
 * the call ends; decoded keys are wiped by qw_etsi_keys_free(); the copies
 * jansson makes of the "key" strings are overwritten in place as soon as
 * they are decoded. */
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "qwave/encoding.h"
#include "qwave/etsi014_client.h"
#include "qwave/pki.h"
#include "qwave/secmem.h"
#include "qwave/uuid.h"

#define API_PREFIX "/api/v1/keys/"

struct qw_etsi_client {
	CURL *curl;
	char *base;               /* without trailing '/' */
	char *expect_kme_id;
	int (*abort_cb)(void *arg);
	void *abort_arg;
	/* Set by the verify callback when the KME's certificate names another
	 * KME (the handshake then fails). */
	int id_mismatch;
	char seen_id[QW_ETSI_ID_MAX + 1];
	/* TLS events of the current call (info callback): a fatal alert from
	 * the KME, and whether a handshake completed. */
	char alert[64];
	int handshake_done;
	uint64_t connects;        /* TCP+TLS connections opened so far */
	char errbuf[CURL_ERROR_SIZE];
	/* response body of the current call */
	char *resp;
	size_t resp_len, resp_cap;
	int resp_too_big;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;
static int ssl_ctx_idx = -1;

static void curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
	ssl_ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static void set_err(struct qw_etsi_error *err, int http_status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(struct qw_etsi_error *err, int http_status, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	err->http_status = http_status;
	err->details[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	/* messages may quote what the KME sent: keep them one printable line */
	for (char *p = err->message; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
}

static void clear_err(struct qw_etsi_error *err)
{
	if (err) {
		err->http_status = 0;
		err->message[0] = '\0';
		err->details[0] = '\0';
	}
}

/* Copy text from the KME for a terminal: control characters become '?',
 * so a hostile server cannot inject escape sequences into the CLI. */
static void copy_printable(char *dst, size_t size, const char *src)
{
	size_t i = 0;

	for (; src[i] && i + 1 < size; i++)
		dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? '?' : src[i];
	dst[i] = '\0';
}

/* ---- URL and request building ---- */

char *qw_etsi_client_url(const char *base, const char *sae, const char *method,
			 const char *query)
{
	char *esc, *url = NULL;
	size_t n;

	QW_REQUIRE(base && sae && method);
	/* clause 5.2-5.4: {slave_SAE_ID}/{master_SAE_ID} are URL-encoded */
	esc = curl_easy_escape(NULL, sae, (int)strlen(sae));
	if (!esc)
		return NULL;
	n = strlen(base) + sizeof(API_PREFIX) + strlen(esc) + 1 + strlen(method) +
	    (query ? 1 + strlen(query) : 0) + 1;
	url = malloc(n);
	if (url)
		snprintf(url, n, "%s" API_PREFIX "%s/%s%s%s", base, esc, method,
			 query ? "?" : "", query ? query : "");
	curl_free(esc);
	return url;
}

/* text must be a JSON array of objects (clause 6.2, extension_*). */
static int parse_extension(const char *text, const char *name, json_t **out,
			   struct qw_etsi_error *err)
{
	json_error_t je;
	json_t *a = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	size_t i;
	json_t *v;

	*out = NULL;
	if (!a) {
		set_err(err, 0, "%s: not JSON: %s", name, je.text);
		return QW_EINVAL;
	}
	if (!json_is_array(a)) {
		json_decref(a);
		set_err(err, 0, "%s: must be a JSON array of objects", name);
		return QW_EINVAL;
	}
	json_array_foreach(a, i, v) {
		if (!json_is_object(v)) {
			json_decref(a);
			set_err(err, 0, "%s: element %zu is not an object", name, i);
			return QW_EINVAL;
		}
	}
	*out = a;
	return 0;
}

int qw_etsi_client_key_request_json(const struct qw_etsi_key_request *req, char **out,
				    struct qw_etsi_error *err)
{
	json_t *o = json_object(), *a = NULL, *ext = NULL;
	int ret = QW_ENOMEM;

	QW_REQUIRE(req && out);
	*out = NULL;
	if (!o)
		goto out;
	if (req->number && json_object_set_new(o, "number", json_integer(req->number)))
		goto out;
	if (req->size_bits && json_object_set_new(o, "size", json_integer(req->size_bits)))
		goto out;
	if (req->n_additional) {
		QW_REQUIRE(req->additional_slaves);
		a = json_array();
		if (!a)
			goto out;
		for (size_t i = 0; i < req->n_additional; i++)
			if (json_array_append_new(a, json_string(req->additional_slaves[i])))
				goto out;
		if (json_object_set(o, "additional_slave_SAE_IDs", a))
			goto out;
	}
	if (req->extension_mandatory) {
		ret = parse_extension(req->extension_mandatory, "extension_mandatory", &ext, err);
		if (ret)
			goto out;
		ret = QW_ENOMEM;
		if (json_object_set_new(o, "extension_mandatory", ext))
			goto out;
	}
	if (req->extension_optional) {
		ret = parse_extension(req->extension_optional, "extension_optional", &ext, err);
		if (ret)
			goto out;
		ret = QW_ENOMEM;
		if (json_object_set_new(o, "extension_optional", ext))
			goto out;
	}
	*out = json_dumps(o, JSON_COMPACT);
	if (*out)
		ret = 0;
out:
	json_decref(a);
	json_decref(o);
	return ret;
}

/* ---- response parsing ---- */

static int get_str(json_t *o, const char *what, const char *key, char *dst, size_t size,
		   struct qw_etsi_error *err)
{
	json_t *v = json_object_get(o, key);

	if (!v) {
		set_err(err, 0, "%s: missing \"%s\"", what, key);
		return QW_EPROTO;
	}
	if (!json_is_string(v)) {
		set_err(err, 0, "%s: \"%s\" is not a string", what, key);
		return QW_EPROTO;
	}
	if (json_string_length(v) >= size || strlen(json_string_value(v)) != json_string_length(v)) {
		set_err(err, 0, "%s: \"%s\" is longer than %zu characters or holds a NUL", what,
			key, size - 1);
		return QW_EPROTO;
	}
	/* IDs end up on terminals and in logs: no escape sequences. */
	for (const char *p = json_string_value(v); *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			set_err(err, 0, "%s: \"%s\" holds a control character", what, key);
			return QW_EPROTO;
		}
	memcpy(dst, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

static int get_uint(json_t *o, const char *what, const char *key, uint64_t max, uint64_t *dst,
		    struct qw_etsi_error *err)
{
	json_t *v = json_object_get(o, key);

	if (!v) {
		set_err(err, 0, "%s: missing \"%s\"", what, key);
		return QW_EPROTO;
	}
	if (!json_is_integer(v)) {
		set_err(err, 0, "%s: \"%s\" is not an integer", what, key);
		return QW_EPROTO;
	}
	if (json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max) {
		set_err(err, 0, "%s: \"%s\" = %" JSON_INTEGER_FORMAT " is out of range", what,
			key, json_integer_value(v));
		return QW_EPROTO;
	}
	*dst = (uint64_t)json_integer_value(v);
	return 0;
}

/* Optional extension object: absent -> NULL, object -> compact JSON text. */
static int get_ext(json_t *o, const char *what, const char *key, char **dst,
		   struct qw_etsi_error *err)
{
	json_t *v = json_object_get(o, key);

	*dst = NULL;
	if (!v)
		return 0;
	if (!json_is_object(v)) {
		set_err(err, 0, "%s: \"%s\" is not an object", what, key);
		return QW_EPROTO;
	}
	*dst = json_dumps(v, JSON_COMPACT);
	return *dst ? 0 : QW_ENOMEM;
}

/* secret: the body holds keys, so jansson's error text (which quotes the
 * token it stopped at, possibly a piece of a key) is not passed on. */
static json_t *load_object(const char *body, size_t len, const char *what, int secret,
			   struct qw_etsi_error *err)
{
	json_error_t je;
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);

	if (!root) {
		if (secret)
			set_err(err, 0, "%s: not valid JSON (line %d, column %d)", what, je.line,
				je.column);
		else
			set_err(err, 0, "%s: not valid JSON (line %d: %s)", what, je.line, je.text);
		qw_wipe(&je, sizeof(je));
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		set_err(err, 0, "%s: not a JSON object", what);
		return NULL;
	}
	return root;
}

void qw_etsi_status_clear(struct qw_etsi_status *s)
{
	if (!s)
		return;
	free(s->status_extension);
	memset(s, 0, sizeof(*s));
}

int qw_etsi_client_parse_status(const char *body, size_t len, struct qw_etsi_status *out,
				struct qw_etsi_error *err)
{
	static const char what[] = "Status";
	struct {
		const char *key;
		uint64_t max;
		uint64_t v;
	} num[] = {
		{ "key_size", UINT32_MAX, 0 },
		{ "stored_key_count", INT64_MAX, 0 },
		{ "max_key_count", INT64_MAX, 0 },
		{ "max_key_per_request", UINT32_MAX, 0 },
		{ "max_key_size", UINT32_MAX, 0 },
		{ "min_key_size", UINT32_MAX, 0 },
		{ "max_SAE_ID_count", UINT32_MAX, 0 },
	};
	json_t *root;
	int ret = QW_EPROTO;

	QW_REQUIRE(body || len == 0);
	QW_REQUIRE(out);
	memset(out, 0, sizeof(*out));
	root = load_object(body, len, what, 0, err);
	if (!root)
		return QW_EPROTO;
	if ((ret = get_str(root, what, "source_KME_ID", out->source_kme_id,
			   sizeof(out->source_kme_id), err)) ||
	    (ret = get_str(root, what, "target_KME_ID", out->target_kme_id,
			   sizeof(out->target_kme_id), err)) ||
	    (ret = get_str(root, what, "master_SAE_ID", out->master_sae_id,
			   sizeof(out->master_sae_id), err)) ||
	    (ret = get_str(root, what, "slave_SAE_ID", out->slave_sae_id,
			   sizeof(out->slave_sae_id), err)))
		goto out;
	for (size_t i = 0; i < sizeof(num) / sizeof(num[0]); i++)
		if ((ret = get_uint(root, what, num[i].key, num[i].max, &num[i].v, err)))
			goto out;
	out->key_size = (uint32_t)num[0].v;
	out->stored_key_count = num[1].v;
	out->max_key_count = num[2].v;
	out->max_key_per_request = (uint32_t)num[3].v;
	out->max_key_size = (uint32_t)num[4].v;
	out->min_key_size = (uint32_t)num[5].v;
	out->max_sae_id_count = (uint32_t)num[6].v;
	ret = get_ext(root, what, "status_extension", &out->status_extension, err);
out:
	json_decref(root);
	if (ret)
		qw_etsi_status_clear(out);
	return ret;
}

void qw_etsi_keys_free(struct qw_etsi_keys *k)
{
	if (!k)
		return;
	for (size_t i = 0; i < k->n; i++) {
		qw_free_secret(k->keys[i].key, k->keys[i].len);
		free(k->keys[i].key_id_extension);
		free(k->keys[i].key_extension);
	}
	qw_free_secret(k->keys, k->n * sizeof(*k->keys));
	free(k->container_extension);
	free(k);
}

/* Overwrite a JSON string's characters in place (jansson owns a private,
 * writable copy; its const is an API promise to callers, not a property of
 * the memory). Used on the base64 text of keys once decoded. */
static void wipe_json_string(json_t *v)
{
	if (json_is_string(v))
		qw_wipe((char *)json_string_value(v), json_string_length(v));
}

static int parse_one_key(json_t *e, size_t i, struct qw_etsi_key *k, struct qw_etsi_error *err)
{
	char what[48];
	json_t *v;
	struct qw_uuid u;
	const char *b64;
	size_t b64len, max, got;
	int ret;

	snprintf(what, sizeof(what), "Key container: keys[%zu]", i);
	if (!json_is_object(e)) {
		set_err(err, 0, "%s is not an object", what);
		return QW_EPROTO;
	}
	v = json_object_get(e, "key_ID");
	if (!v) {
		set_err(err, 0, "%s: missing \"key_ID\"", what);
		return QW_EPROTO;
	}
	if (!json_is_string(v)) {
		set_err(err, 0, "%s: \"key_ID\" is not a string", what);
		return QW_EPROTO;
	}
	if (json_string_length(v) != QW_UUID_STR_BYTES - 1 ||
	    qw_uuid_parse(&u, json_string_value(v))) {
		char shown[48];

		copy_printable(shown, sizeof(shown), json_string_value(v));
		set_err(err, 0, "%s: key_ID \"%s\" is not a UUID (8-4-4-4-12 hex)", what, shown);
		return QW_EPROTO;
	}
	memcpy(k->key_id, json_string_value(v), QW_UUID_STR_BYTES);
	v = json_object_get(e, "key");
	if (!v) {
		set_err(err, 0, "%s: missing \"key\"", what);
		return QW_EPROTO;
	}
	if (!json_is_string(v)) {
		set_err(err, 0, "%s: \"key\" is not a string", what);
		return QW_EPROTO;
	}
	b64 = json_string_value(v);
	b64len = json_string_length(v);
	max = qw_base64_decoded_max(b64len);
	if (b64len == 0) {
		set_err(err, 0, "%s (%s): \"key\" is empty", what, k->key_id);
		return QW_EPROTO;
	}
	k->key = qw_calloc(1, max);
	if (!k->key)
		return QW_ENOMEM;
	k->len = max;
	ret = qw_base64_decode(k->key, max, &got, b64, b64len);
	wipe_json_string(v);
	if (ret == QW_EPARSE) {
		/* never quote the text: it is (a corrupted form of) key material */
		set_err(err, 0, "%s (%s): \"key\" is not valid base64", what, k->key_id);
		return QW_EPROTO;
	}
	if (ret)
		return ret;
	if (got == 0) {
		set_err(err, 0, "%s (%s): \"key\" is empty", what, k->key_id);
		return QW_EPROTO;
	}
	/* keep len = allocation size for the wipe; shrink the view */
	if (got < max)
		qw_wipe(k->key + got, max - got);
	k->len = got;
	if ((ret = get_ext(e, what, "key_ID_extension", &k->key_id_extension, err)))
		return ret;
	return get_ext(e, what, "key_extension", &k->key_extension, err);
}

static int cmp_key_id(const void *a, const void *b)
{
	const struct qw_etsi_key *x = *(const struct qw_etsi_key *const *)a;
	const struct qw_etsi_key *y = *(const struct qw_etsi_key *const *)b;
	int c = strcasecmp(x->key_id, y->key_id);

	return c ? c : (x > y) - (x < y);
}

/* A key_ID listed twice (in either case). Sorted, not compared pairwise:
 * a 16 MiB container holds some 300 000 keys, and a hostile KME must not
 * buy 10^10 comparisons with it. Reports what the pairwise scan would: the
 * lowest index i that repeats an earlier j, and the first such j. */
static int find_repeat(const struct qw_etsi_keys *k, const char *what, struct qw_etsi_error *err)
{
	const struct qw_etsi_key **v;
	size_t bi = SIZE_MAX, bj = 0;

	if (k->n < 2)
		return 0;
	v = qw_calloc(k->n, sizeof(*v));
	if (!v)
		return QW_ENOMEM;
	for (size_t i = 0; i < k->n; i++)
		v[i] = &k->keys[i];
	qsort(v, k->n, sizeof(*v), cmp_key_id);
	/* Within a run of equal IDs (in index order) the second one is the
	 * first repeat, of the run's first. */
	for (size_t a = 0, b; a < k->n; a = b) {
		for (b = a + 1; b < k->n && !strcasecmp(v[a]->key_id, v[b]->key_id); b++)
			;
		if (b - a > 1 && (size_t)(v[a + 1] - k->keys) < bi) {
			bi = (size_t)(v[a + 1] - k->keys);
			bj = (size_t)(v[a] - k->keys);
		}
	}
	free(v);
	if (bi == SIZE_MAX)
		return 0;
	set_err(err, 0, "%s: keys[%zu].key_ID %s repeats keys[%zu]", what, bi,
		k->keys[bi].key_id, bj);
	return QW_EPROTO;
}

int qw_etsi_client_parse_keys(const char *body, size_t len, struct qw_etsi_keys **out,
			      struct qw_etsi_error *err)
{
	static const char what[] = "Key container";
	struct qw_etsi_keys *k = NULL;
	json_t *root, *arr, *e;
	size_t i;
	int ret = QW_EPROTO;

	QW_REQUIRE((body || len == 0) && out);
	*out = NULL;
	root = load_object(body, len, what, 1, err);
	if (!root)
		return QW_EPROTO;
	arr = json_object_get(root, "keys");
	if (!arr) {
		set_err(err, 0, "%s: missing \"keys\"", what);
		goto out;
	}
	if (!json_is_array(arr)) {
		set_err(err, 0, "%s: \"keys\" is not an array", what);
		goto out;
	}
	ret = QW_ENOMEM;
	k = calloc(1, sizeof(*k));
	if (!k)
		goto out;
	if (json_array_size(arr)) {
		k->keys = qw_calloc(json_array_size(arr), sizeof(*k->keys));
		if (!k->keys)
			goto out;
	}
	json_array_foreach(arr, i, e) {
		/* count it first so a partly filled entry is freed too */
		k->n = i + 1;
		ret = parse_one_key(e, i, &k->keys[i], err);
		if (ret)
			goto out;
	}
	if ((ret = find_repeat(k, what, err)))
		goto out;
	ret = get_ext(root, what, "key_container_extension", &k->container_extension, err);
out:
	/* wipe every key string, also those after a failing entry */
	if (arr && json_is_array(arr))
		json_array_foreach(arr, i, e)
			wipe_json_string(json_object_get(e, "key"));
	json_decref(root);
	if (ret) {
		qw_etsi_keys_free(k);
		return ret;
	}
	*out = k;
	return 0;
}

int qw_etsi_client_http_error(int status, const char *body, size_t len,
			      struct qw_etsi_error *err)
{
	/* Tables 4, 6, 8 */
	const char *dflt = status == 400 ? "Bad request format" :
			   status == 401 ? "Unauthorized" :
			   status == 503 ? "Error on server side" : "unexpected HTTP status";
	int ret = status == 400 ? QW_EINVAL :
		  status == 401 ? QW_EPERM :
		  status == 503 ? QW_EAGAIN : QW_EPROTO;
	json_t *root = NULL, *m, *d;

	if (!err)
		return ret;
	set_err(err, status, "%s", dflt);
	if (body && len)
		root = json_loadb(body, len, 0, NULL);
	if (root && json_is_object(root)) {
		m = json_object_get(root, "message");
		if (json_is_string(m) && json_string_length(m))
			copy_printable(err->message, sizeof(err->message), json_string_value(m));
		d = json_object_get(root, "details");
		if (d) {
			char *t = json_dumps(d, JSON_COMPACT | JSON_ENCODE_ANY);

			if (t) {
				copy_printable(err->details, sizeof(err->details), t);
				free(t);
			}
		}
	}
	json_decref(root);
	/* clause 6.4: the one 400 a caller treats differently (keys gone) */
	if (status == 400 && !strcmp(err->message, "one or more keys specified are not found on KME"))
		ret = QW_ENOTFOUND;
	return ret;
}

/* ---- transport ---- */

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct qw_etsi_client *c = arg;
	size_t n = size * nmemb;

	if (n > QW_ETSI_MAX_RESPONSE_BYTES - c->resp_len) {
		c->resp_too_big = 1;
		return 0;
	}
	if (c->resp_len + n + 1 > c->resp_cap) {
		size_t cap = c->resp_cap ? c->resp_cap : 4096;
		char *p;

		while (cap < c->resp_len + n + 1)
			cap *= 2;
		/* not realloc: the old buffer may hold keys and must be wiped */
		p = malloc(cap);
		if (!p)
			return 0;
		if (c->resp_len)
			memcpy(p, c->resp, c->resp_len);
		qw_free_secret(c->resp, c->resp_cap);
		c->resp = p;
		c->resp_cap = cap;
	}
	memcpy(c->resp + c->resp_len, data, n);
	c->resp_len += n;
	c->resp[c->resp_len] = '\0';
	return n;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	struct qw_etsi_client *c = arg;

	(void)dt;
	(void)dn;
	(void)ut;
	(void)un;
	return c->abort_cb(c->abort_arg) ? 1 : 0;
}

/* Clause 5.1: "SAE ... shall confirm the KME ID of the KME it is connecting
 * to, based on the certificate". Runs inside the handshake, so nothing is
 * sent to a KME that is not the expected one. */
static int verify_kme_id(int preverify_ok, X509_STORE_CTX *xs)
{
	SSL *ssl;
	struct qw_etsi_client *c;
	X509 *cert;
	enum qw_pki_kind kind;
	char id[QW_PKI_ID_MAX + 1];

	if (!preverify_ok || X509_STORE_CTX_get_error_depth(xs) != 0)
		return preverify_ok;
	ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	c = ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ssl_ctx_idx) : NULL;
	if (!c || !c->expect_kme_id)
		return preverify_ok;
	cert = X509_STORE_CTX_get_current_cert(xs);
	id[0] = '\0';
	if (cert && qw_pki_cert_identity(cert, &kind, id) == 0) {
		if (kind != QW_PKI_NODE)
			snprintf(id, sizeof(id), "%s", "(an SAE certificate)");
	} else if (cert) {
		X509_NAME *sn = X509_get_subject_name(cert);

		if (!sn || X509_NAME_get_text_by_NID(sn, NID_commonName, id, sizeof(id)) < 0)
			id[0] = '\0';
	}
	if (!strcmp(id, c->expect_kme_id))
		return 1;
	c->id_mismatch = 1;
	copy_printable(c->seen_id, sizeof(c->seen_id), id[0] ? id : "(no name)");
	X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
	return 0;
}

static void on_tls_info(const SSL *ssl, int where, int ret)
{
	struct qw_etsi_client *c = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ssl_ctx_idx);

	if (!c)
		return;
	if (where & SSL_CB_HANDSHAKE_DONE)
		c->handshake_done = 1;
	if ((where & SSL_CB_READ_ALERT) && !strcmp(SSL_alert_type_string(ret), "F"))
		snprintf(c->alert, sizeof(c->alert), "%s", SSL_alert_desc_string_long(ret));
}

static CURLcode on_ssl_ctx(CURL *curl, void *sslctx, void *arg)
{
	SSL_CTX *ctx = sslctx;
	struct qw_etsi_client *c = arg;

	(void)curl;
	if (!SSL_CTX_set_ex_data(ctx, ssl_ctx_idx, c))
		return CURLE_OUT_OF_MEMORY;
	SSL_CTX_set_info_callback(ctx, on_tls_info);
	if (c->expect_kme_id)
		SSL_CTX_set_verify(ctx, SSL_CTX_get_verify_mode(ctx) | SSL_VERIFY_PEER,
				   verify_kme_id);
	return CURLE_OK;
}

void qw_etsi_client_free(struct qw_etsi_client *c)
{
	if (!c)
		return;
	if (c->curl)
		curl_easy_cleanup(c->curl);
	qw_free_secret(c->resp, c->resp_cap);
	free(c->base);
	free(c->expect_kme_id);
	free(c);
}

#define SETOPT(opt, val)                                                       \
	do {                                                                   \
		if (curl_easy_setopt(c->curl, opt, val) != CURLE_OK) {         \
			set_err(err, 0, "libcurl refused option %s", #opt);    \
			ret = QW_EUNSUPPORTED;                                 \
			goto out;                                              \
		}                                                              \
	} while (0)

int qw_etsi_client_new(const struct qw_etsi_client_opts *o, struct qw_etsi_client **out,
		       struct qw_etsi_error *err)
{
	struct qw_etsi_client *c = NULL;
	size_t n;
	long tmo;
	int ret = QW_EINVAL;

	QW_REQUIRE(o && out);
	*out = NULL;
	clear_err(err);
	if (!o->base_url || strncasecmp(o->base_url, "https://", 8) || !o->base_url[8]) {
		set_err(err, 0, "KME URL must be https://host[:port] (got '%s')",
			o->base_url ? o->base_url : "");
		return QW_EINVAL;
	}
	if (!o->cert_file || !o->key_file || !o->ca_file) {
		set_err(err, 0, "a client certificate, its key and a CA file are required "
				"(ETSI GS QKD 014 clause 5.1: mutual TLS)");
		return QW_EINVAL;
	}
	if (o->expect_kme_id && (!*o->expect_kme_id || strlen(o->expect_kme_id) > QW_ETSI_ID_MAX)) {
		set_err(err, 0, "expected KME ID must have 1 to %d characters", QW_ETSI_ID_MAX);
		return QW_EINVAL;
	}
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_rc != CURLE_OK || ssl_ctx_idx < 0) {
		set_err(err, 0, "libcurl initialisation failed");
		return QW_EIO;
	}
	ret = QW_ENOMEM;
	c = calloc(1, sizeof(*c));
	if (!c)
		goto out;
	c->base = strdup(o->base_url);
	if (!c->base)
		goto out;
	n = strlen(c->base);
	while (n > 8 && c->base[n - 1] == '/')
		c->base[--n] = '\0';
	if (o->expect_kme_id && !(c->expect_kme_id = strdup(o->expect_kme_id)))
		goto out;
	c->abort_cb = o->abort_cb;
	c->abort_arg = o->abort_arg;
	c->curl = curl_easy_init();
	if (!c->curl) {
		set_err(err, 0, "libcurl could not create a handle");
		ret = QW_EIO;
		goto out;
	}
	tmo = (long)(o->timeout_ms ? o->timeout_ms : QW_ETSI_DEFAULT_TIMEOUT_MS);
	SETOPT(CURLOPT_ERRORBUFFER, c->errbuf);
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_PROTOCOLS_STR, "https");
	SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(CURLOPT_TIMEOUT_MS, tmo);
	SETOPT(CURLOPT_CONNECTTIMEOUT_MS, tmo);
	SETOPT(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
	SETOPT(CURLOPT_CAINFO, o->ca_file);
	/* only ca_file: not the system's trust store */
	SETOPT(CURLOPT_CAPATH, (char *)NULL);
	SETOPT(CURLOPT_SSLCERT, o->cert_file);
	SETOPT(CURLOPT_SSLCERTTYPE, "PEM");
	SETOPT(CURLOPT_SSLKEY, o->key_file);
	SETOPT(CURLOPT_SSLKEYTYPE, "PEM");
	SETOPT(CURLOPT_WRITEFUNCTION, on_write);
	SETOPT(CURLOPT_WRITEDATA, c);
	if (c->abort_cb) {
		SETOPT(CURLOPT_XFERINFOFUNCTION, on_progress);
		SETOPT(CURLOPT_XFERINFODATA, c);
		SETOPT(CURLOPT_NOPROGRESS, 0L);
	}
	/* OpenSSL hooks: the KME ID check, and TLS alerts for clear messages.
	 * Other TLS back ends lack them; only the KME ID check is required. */
	if (curl_easy_setopt(c->curl, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx) != CURLE_OK ||
	    curl_easy_setopt(c->curl, CURLOPT_SSL_CTX_DATA, c) != CURLE_OK) {
		if (c->expect_kme_id) {
			set_err(err, 0, "checking the KME ID needs libcurl built with OpenSSL");
			ret = QW_EUNSUPPORTED;
			goto out;
		}
	}
	*out = c;
	c = NULL;
	ret = 0;
out:
	qw_etsi_client_free(c);
	return ret;
}

uint64_t qw_etsi_client_connections(const struct qw_etsi_client *c)
{
	QW_REQUIRE(c);
	return c->connects;
}

static int transport_error(struct qw_etsi_client *c, CURLcode rc, struct qw_etsi_error *err)
{
	const char *why = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);

	if (c->id_mismatch) {
		set_err(err, 0, "KME certificate names KME '%s', expected '%s'", c->seen_id,
			c->expect_kme_id);
		return QW_EAUTH;
	}
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		set_err(err, 0, "KME did not answer in time: %s", why);
		return QW_ETIMEOUT;
	case CURLE_ABORTED_BY_CALLBACK:
		set_err(err, 0, "request aborted");
		return QW_ECLOSED;
	case CURLE_PEER_FAILED_VERIFICATION:
		set_err(err, 0, "KME certificate not accepted (wrong CA or host name?): %s", why);
		return QW_EAUTH;
	case CURLE_SSL_CACERT_BADFILE:
		set_err(err, 0, "CA file unusable: %s", why);
		return QW_EIO;
	case CURLE_SSL_CERTPROBLEM:
		set_err(err, 0, "client certificate or key unusable: %s", why);
		return QW_EIO;
	case CURLE_WRITE_ERROR:
		if (c->resp_too_big) {
			set_err(err, 0, "KME response larger than %u bytes",
				QW_ETSI_MAX_RESPONSE_BYTES);
			return QW_EPROTO;
		}
		set_err(err, 0, "out of memory reading the response");
		return QW_ENOMEM;
	case CURLE_OUT_OF_MEMORY:
		set_err(err, 0, "out of memory");
		return QW_ENOMEM;
	default:
		break;
	}
	/* A KME that refuses our certificate ends the handshake with a fatal
	 * alert (RFC 8446 6.2); in TLS 1.3 it comes after the client's
	 * Finished, so the client may only see the connection drop. */
	if (c->alert[0]) {
		static const char *const cert_alerts[] = {
			"certificate required", "unknown CA", "bad certificate",
			"certificate unknown", "certificate expired", "certificate revoked",
			"unsupported certificate", "access denied", "decrypt error",
		};

		for (size_t i = 0; i < sizeof(cert_alerts) / sizeof(cert_alerts[0]); i++)
			if (!strcasecmp(c->alert, cert_alerts[i])) {
				set_err(err, 0, "KME refused our client certificate (TLS alert: %s)",
					c->alert);
				return QW_EAUTH;
			}
		set_err(err, 0, "KME ended the TLS handshake (alert: %s): %s", c->alert, why);
		return QW_EIO;
	}
	if (c->handshake_done && (rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
				  rc == CURLE_GOT_NOTHING || rc == CURLE_COULDNT_CONNECT)) {
		set_err(err, 0, "KME closed the connection right after the TLS handshake: it "
				"refused our client certificate? (%s)", why);
		return QW_EAUTH;
	}
	if (rc == CURLE_SSL_CONNECT_ERROR) {
		set_err(err, 0, "TLS handshake with the KME failed: %s", why);
		return QW_EIO;
	}
	set_err(err, 0, "cannot reach the KME: %s", why);
	return QW_EIO;
}

/* One request: GET (body NULL) or POST of a JSON body. On return 0,
 * c->resp holds the 200 answer's body. */
static int perform(struct qw_etsi_client *c, const char *url, const char *body,
		   struct qw_etsi_error *err)
{
	struct curl_slist *hdr = NULL, *h;
	CURLcode rc;
	long status = 0;
	int ret = QW_ENOMEM;

	c->errbuf[0] = '\0';
	c->id_mismatch = 0;
	c->alert[0] = '\0';
	c->handshake_done = 0;
	c->resp_too_big = 0;
	if (c->resp)
		qw_wipe(c->resp, c->resp_cap);
	c->resp_len = 0;
	h = curl_slist_append(hdr, "Accept: application/json");
	if (!h)
		goto out;
	hdr = h;
	if (body) {
		if (!(h = curl_slist_append(hdr, "Content-Type: application/json")))
			goto out;
		/* no "100 Continue" round trip for large Key IDs bodies */
		if (!(h = curl_slist_append(hdr, "Expect:")))
			goto out;
		hdr = h;
	}
	ret = QW_EIO;
	if (curl_easy_setopt(c->curl, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdr) != CURLE_OK) {
		set_err(err, 0, "libcurl refused the URL");
		ret = QW_EINVAL;
		goto out;
	}
	if (body) {
		if (curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body)) != CURLE_OK ||
		    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body) != CURLE_OK)
			goto out;
	} else if (curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L) != CURLE_OK) {
		goto out;
	}
	rc = curl_easy_perform(c->curl);
	{
		long nc = 0;

		if (curl_easy_getinfo(c->curl, CURLINFO_NUM_CONNECTS, &nc) == CURLE_OK && nc > 0)
			c->connects += (uint64_t)nc;
	}
	/* the handle must not keep pointers into hdr/body past this call */
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
	if (body)
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, (char *)NULL);
	if (rc != CURLE_OK) {
		ret = transport_error(c, rc, err);
		goto out;
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		ret = qw_etsi_client_http_error((int)status, c->resp, c->resp_len, err);
		goto out;
	}
	ret = 0;
out:
	/* A transfer that failed part-way may have left a piece of a Key
	 * container behind. */
	if (ret && c->resp) {
		qw_wipe(c->resp, c->resp_cap);
		c->resp_len = 0;
	}
	curl_slist_free_all(hdr);
	return ret;
}

static void end_call(struct qw_etsi_client *c, int ret, struct qw_etsi_error *err)
{
	if (c->resp)
		qw_wipe(c->resp, c->resp_cap);
	c->resp_len = 0;
	/* parse errors say what was wrong; tell also that the HTTP part was fine */
	if (ret == QW_EPROTO && err && !err->http_status)
		err->http_status = 200;
}

/* Get key and Get key with key IDs: one request answered by a Key
 * container. url NULL (its allocation failed): QW_ENOMEM. */
static int fetch_keys(struct qw_etsi_client *c, const char *url, const char *body,
		      struct qw_etsi_keys **out, struct qw_etsi_error *err)
{
	int ret;

	if (!url)
		return QW_ENOMEM;
	ret = perform(c, url, body, err);
	if (!ret) {
		ret = qw_etsi_client_parse_keys(c->resp, c->resp_len, out, err);
		end_call(c, ret, err);
	}
	return ret;
}

static int check_sae(const char *sae, const char *what, struct qw_etsi_error *err)
{
	if (!sae || !*sae || strlen(sae) > QW_ETSI_ID_MAX) {
		set_err(err, 0, "%s SAE ID must have 1 to %d characters", what, QW_ETSI_ID_MAX);
		return QW_EINVAL;
	}
	return 0;
}

int qw_etsi_client_status(struct qw_etsi_client *c, const char *slave_sae,
			  struct qw_etsi_status *out, struct qw_etsi_error *err)
{
	char *url = NULL;
	int ret;

	QW_REQUIRE(c && out);
	memset(out, 0, sizeof(*out));
	clear_err(err);
	if ((ret = check_sae(slave_sae, "slave", err)))
		return ret;
	url = qw_etsi_client_url(c->base, slave_sae, "status", NULL);
	if (!url)
		return QW_ENOMEM;
	ret = perform(c, url, NULL, err);
	if (!ret) {
		ret = qw_etsi_client_parse_status(c->resp, c->resp_len, out, err);
		end_call(c, ret, err);
	}
	free(url);
	return ret;
}

int qw_etsi_client_get_key(struct qw_etsi_client *c, const char *slave_sae,
			   const struct qw_etsi_key_request *req, struct qw_etsi_keys **out,
			   struct qw_etsi_error *err)
{
	static const struct qw_etsi_key_request empty = { .use_get = 1 };
	char *url = NULL, *body = NULL, query[64];
	int ret;

	QW_REQUIRE(c && out);
	*out = NULL;
	clear_err(err);
	if (!req)
		req = &empty;
	QW_REQUIRE(req->additional_slaves || req->n_additional == 0);
	if ((ret = check_sae(slave_sae, "slave", err)))
		return ret;
	for (size_t i = 0; i < req->n_additional; i++)
		if ((ret = check_sae(req->additional_slaves[i], "additional slave", err)))
			return ret;
	if (req->use_get) {
		/* clause 6.2: GET only for number and/or size */
		if (req->n_additional || req->extension_mandatory || req->extension_optional) {
			set_err(err, 0, "GET can only carry number and size (ETSI GS QKD 014 "
					"clause 6.2); use POST");
			return QW_EINVAL;
		}
		query[0] = '\0';
		if (req->number && req->size_bits)
			snprintf(query, sizeof(query), "number=%u&size=%u", req->number,
				 req->size_bits);
		else if (req->number)
			snprintf(query, sizeof(query), "number=%u", req->number);
		else if (req->size_bits)
			snprintf(query, sizeof(query), "size=%u", req->size_bits);
		url = qw_etsi_client_url(c->base, slave_sae, "enc_keys", query[0] ? query : NULL);
	} else {
		if ((ret = qw_etsi_client_key_request_json(req, &body, err)))
			return ret;
		url = qw_etsi_client_url(c->base, slave_sae, "enc_keys", NULL);
	}
	ret = fetch_keys(c, url, body, out, err);
	free(url);
	free(body);
	return ret;
}

int qw_etsi_client_get_key_with_ids(struct qw_etsi_client *c, const char *master_sae,
				    const char *const *ids, size_t n, int use_get,
				    struct qw_etsi_keys **out, struct qw_etsi_error *err)
{
	char *url = NULL, *body = NULL, query[8 + QW_UUID_STR_BYTES];
	json_t *o = NULL, *a = NULL, *e;
	struct qw_uuid u;
	int ret;

	QW_REQUIRE(c && out && (ids || n == 0));
	*out = NULL;
	clear_err(err);
	if ((ret = check_sae(master_sae, "master", err)))
		return ret;
	if (n == 0) {
		set_err(err, 0, "no key IDs given");
		return QW_EINVAL;
	}
	for (size_t i = 0; i < n; i++)
		if (!ids[i] || qw_uuid_parse(&u, ids[i])) {
			char shown[48];

			copy_printable(shown, sizeof(shown), ids[i] ? ids[i] : "");
			set_err(err, 0, "key ID '%s' is not a UUID (8-4-4-4-12 hex)", shown);
			return QW_EINVAL;
		}
	if (use_get) {
		/* clause 6.4: GET only for a single key ID */
		if (n != 1) {
			set_err(err, 0, "GET can only carry one key ID (ETSI GS QKD 014 "
					"clause 6.4); use POST");
			return QW_EINVAL;
		}
		snprintf(query, sizeof(query), "key_ID=%s", ids[0]);
		url = qw_etsi_client_url(c->base, master_sae, "dec_keys", query);
	} else {
		ret = QW_ENOMEM;
		if (!(o = json_object()) || !(a = json_array()) || json_object_set(o, "key_IDs", a))
			goto out;
		for (size_t i = 0; i < n; i++) {
			e = json_pack("{s:s}", "key_ID", ids[i]);
			if (!e || json_array_append_new(a, e))
				goto out;
		}
		body = json_dumps(o, JSON_COMPACT);
		if (!body)
			goto out;
		url = qw_etsi_client_url(c->base, master_sae, "dec_keys", NULL);
	}
	ret = fetch_keys(c, url, body, out, err);
out:
	json_decref(a);
	json_decref(o);
	free(url);
	free(body);
	return ret;
}
