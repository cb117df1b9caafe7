/* The KSC's REST API: request parsing, the caller's identity and role, the
 * route table, and the administrator and audit endpoints. Every error is a
 * 4xx/5xx with {"message": ...}; a request that fails changes nothing (each
 * mutation runs in one transaction, rolled back on any error). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ksc_internal.h"
#include "qwave/encoding.h"
#include "qwave/secmem.h"

static const char *const role_names[] = { "none", "auditor", "operator", "super" };

int ksc_id_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n < 1 || n > QW_KSC_ID_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

static void set_body(struct ksc_req *r, int status, char *text, int secret)
{
	struct qw_ksc_resp *o = r->resp;

	if (o->body)
		qw_ksc_resp_clear(o);
	o->status = status;
	o->body = text;
	o->len = text ? strlen(text) : 0;
	o->secret = secret;
}

/* json_dumps allocates with jansson's allocator, which a daemon may have
 * replaced (qwksc installs a wiping one): hand out a plain malloc() copy so
 * that callers free bodies with free(). */
static char *dump(json_t *obj)
{
	json_malloc_t jm;
	json_free_t jf;
	char *t = obj ? json_dumps(obj, JSON_COMPACT) : NULL, *c;
	size_t n;

	if (!t)
		return NULL;
	n = strlen(t);
	c = malloc(n + 1);
	if (c)
		memcpy(c, t, n + 1);
	qw_wipe(t, n);
	json_get_alloc_funcs(&jm, &jf);
	jf(t);
	return c;
}

void ksc_reply(struct ksc_req *r, int status, json_t *obj)
{
	char *t = dump(obj);

	json_decref(obj);
	if (!t) {
		ksc_err(r, 500, "out of memory");
		return;
	}
	set_body(r, status, t, 0);
}

void ksc_reply_secret(struct ksc_req *r, int status, json_t *obj)
{
	char *t = dump(obj);

	/* the strings inside obj are freed by jansson: wiped only when the
	 * process installed a wiping allocator (qwksc does) */
	json_decref(obj);
	if (!t) {
		ksc_err(r, 500, "out of memory");
		return;
	}
	set_body(r, status, t, 1);
}

void ksc_err(struct ksc_req *r, int status, const char *fmt, ...)
{
	char msg[256];
	json_t *o;
	char *t;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	o = json_pack("{s:s}", "message", msg);
	t = dump(o);
	json_decref(o);
	set_body(r, status, t, 0);
	/* the note is a short log line: the message cut at its size, never past
	 * the message's own end */
	snprintf(r->resp->note, sizeof(r->resp->note), "%.*s", (int)sizeof(r->resp->note) - 1,
		 msg);
}

void ksc_fail(struct ksc_req *r, int err, const char *what)
{
	switch (err) {
	case QW_ENOTFOUND:
		ksc_err(r, 404, "%s: not found", what);
		break;
	case QW_ESTATE:
		ksc_err(r, 409, "%s: not allowed in the current state", what);
		break;
	case QW_EEXIST:
		ksc_err(r, 409, "%s: already exists", what);
		break;
	case QW_EAGAIN:
		ksc_err(r, 409, "%s: not enough key material", what);
		break;
	case QW_EPERM:
		ksc_err(r, 403, "%s: not permitted", what);
		break;
	case QW_EAUTH:
		ksc_err(r, 401, "%s: authentication failed", what);
		break;
	case QW_EINVAL:
	case QW_EPARSE:
	case QW_ERANGE:
		ksc_err(r, 400, "%s: invalid request (%s)", what, qw_strerror(err));
		break;
	case QW_EUNSUPPORTED:
		ksc_err(r, 501, "%s: not available on this KSC", what);
		break;
	default:
		ksc_err(r, 500, "%s: %s", what, qw_strerror(err));
	}
}

const char *ksc_str(struct ksc_req *r, const char *name, int required)
{
	json_t *v = r->body ? json_object_get(r->body, name) : NULL;

	if (!v) {
		if (required)
			ksc_err(r, 400, "missing field '%s'", name);
		return NULL;
	}
	if (!json_is_string(v)) {
		ksc_err(r, 400, "field '%s' must be a string", name);
		return NULL;
	}
	return json_string_value(v);
}

/* 1 found, 0 absent (not required), -1 error sent. */
int ksc_uint(struct ksc_req *r, const char *name, uint64_t min, uint64_t max, uint64_t *out,
	     int required)
{
	json_t *v = r->body ? json_object_get(r->body, name) : NULL;

	if (!v) {
		if (required) {
			ksc_err(r, 400, "missing field '%s'", name);
			return -1;
		}
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) < min || (uint64_t)json_integer_value(v) > max) {
		ksc_err(r, 400, "field '%s' must be an integer in [%llu, %llu]", name,
			(unsigned long long)min, (unsigned long long)max);
		return -1;
	}
	*out = (uint64_t)json_integer_value(v);
	return 1;
}

int ksc_b64(struct ksc_req *r, const char *name, uint8_t **out, size_t *len, int required)
{
	const char *s = ksc_str(r, name, required);
	size_t n, cap;

	*out = NULL;
	*len = 0;
	if (!s)
		return r->resp->body ? -1 : 0;
	n = strlen(s);
	cap = qw_base64_decoded_max(n);
	*out = malloc(cap ? cap : 1);
	if (!*out) {
		ksc_err(r, 500, "out of memory");
		return -1;
	}
	if (qw_base64_decode(*out, cap, len, s, n)) {
		/* a partial decode may already hold secret bytes (shares, keys) */
		qw_free_secret(*out, cap);
		*out = NULL;
		ksc_err(r, 400, "field '%s' is not valid base64", name);
		return -1;
	}
	return 1;
}

int ksc_put_b64(json_t *obj, const char *name, const uint8_t *p, size_t n)
{
	size_t m = qw_base64_encoded_len(n) + 1;
	char *t = malloc(m);
	int ret;

	if (!t)
		return QW_ENOMEM;
	ret = qw_base64_encode(t, m, p, n);
	if (!ret)
		ret = json_object_set_new(obj, name, json_string(t)) ? QW_ENOMEM : 0;
	qw_free_secret(t, m);
	return ret;
}

int ksc_need_role(struct ksc_req *r, enum ksc_role role)
{
	if (r->who.kind != KP_ADMIN || r->who.role < role) {
		ksc_err(r, 403, "this needs an administrator with role %s or higher",
			role_names[role]);
		return -1;
	}
	return 0;
}

static enum ksc_role parse_role(const char *s)
{
	for (int i = 1; i <= 3; i++)
		if (s && !strcmp(s, role_names[i]))
			return (enum ksc_role)i;
	return KR_NONE;
}

static int resolve_caller(struct ksc_req *r, const char *peer)
{
	sqlite3_stmt *st = NULL;
	int ret = -1;

	if (!peer) {
		ksc_err(r, 403, "the client certificate names no identity");
		return -1;
	}
	if (ksc_prep(r->k, &st, "SELECT kind, role, status FROM principals WHERE id = ?")) {
		ksc_err(r, 500, "database error");
		return -1;
	}
	sqlite3_bind_text(st, 1, peer, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_ROW) {
		ksc_err(r, 403, "'%s' is not registered with this KSC", peer);
		goto out;
	}
	if (strcmp((const char *)sqlite3_column_text(st, 2), "active")) {
		ksc_err(r, 403, "'%s' is %s", peer, (const char *)sqlite3_column_text(st, 2));
		goto out;
	}
	r->who.id = peer;
	{
		const char *kind = (const char *)sqlite3_column_text(st, 0);

		r->who.kind = !strcmp(kind, "admin") ? KP_ADMIN :
			      !strcmp(kind, "device") ? KP_DEVICE :
			      !strcmp(kind, "user") ? KP_USER : KP_APP;
	}
	r->who.role = parse_role((const char *)sqlite3_column_text(st, 1));
	ret = 0;
out:
	ksc_finish(r->k, st);
	return ret;
}

static const char *kind_name(enum ksc_kind k)
{
	return k == KP_ADMIN ? "admin" : k == KP_DEVICE ? "device" : k == KP_APP ? "app" :
	       k == KP_USER ? "user" : "none";
}

static void h_status(struct ksc_req *r)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s?}", "principal", r->who.id, "kind",
			      kind_name(r->who.kind), "role", role_names[r->who.role],
			      "key_source", r->k->source, "qkd_source",
			      r->k->qkd ? r->k->kme_label : NULL);
	sqlite3_stmt *st = NULL;

	if (o && r->who.kind == KP_ADMIN &&
	    !ksc_prep(r->k, &st, "SELECT (SELECT count(*) FROM devices),"
				 " (SELECT count(*) FROM keys),"
				 " (SELECT count(*) FROM principals),"
				 " (SELECT coalesce(max(seq), 0) FROM audit)") &&
	    sqlite3_step(st) == SQLITE_ROW) {
		json_object_set_new(o, "devices", json_integer(sqlite3_column_int64(st, 0)));
		json_object_set_new(o, "keys", json_integer(sqlite3_column_int64(st, 1)));
		json_object_set_new(o, "principals", json_integer(sqlite3_column_int64(st, 2)));
		json_object_set_new(o, "audit_records", json_integer(sqlite3_column_int64(st, 3)));
	}
	ksc_finish(r->k, st);
	if (o && r->k->qkd) {
		size_t have, cap;
		uint64_t dropped;
		int last;

		ksc_qkd_status(r->k, &have, &cap, &last, &dropped);
		json_object_set_new(o, "qkd_pool_bits", json_integer((json_int_t)have * 8));
		json_object_set_new(o, "qkd_pool_capacity_bits", json_integer((json_int_t)cap * 8));
		json_object_set_new(o, "qkd_last_fetch", json_string(last ? qw_strerror(last) : "ok"));
		json_object_set_new(o, "qkd_keys_dropped", json_integer((json_int_t)dropped));
	}
	ksc_reply(r, 200, o);
}

/* ---- principals: administrators, applications and users ----
 * Hierarchical administration: an administrator creates and revokes only
 * principals of a lower rank (super > operator > auditor); applications
 * are created by operators and above. Supers may create supers (the
 * quorum of key recovery needs several). */
static void h_principal_create(struct ksc_req *r, int admin, const char *pkind)
{
	const char *id = ksc_str(r, "id", 1), *role_s = admin ? ksc_str(r, "role", 1) : NULL;
	enum ksc_role role = parse_role(role_s);
	sqlite3_stmt *st = NULL;
	json_t *d = NULL;
	int rc;

	if (!id || (admin && !role_s))
		return;
	if (!ksc_id_valid(id)) {
		ksc_err(r, 400, "invalid id '%.64s': 1..64 characters of [A-Za-z0-9._-]", id);
		return;
	}
	if (admin && role == KR_NONE) {
		ksc_err(r, 400, "role must be super, operator or auditor");
		return;
	}
	if (ksc_need_role(r, admin ? (role == KR_SUPER ? KR_SUPER : role + 1) : KR_OPERATOR))
		return;
	if (ksc_begin(r->k)) {
		ksc_err(r, 500, "database busy");
		return;
	}
	if (ksc_prep(r->k, &st, "INSERT INTO principals(id, kind, role, status, created_by, created)"
				" VALUES(?, ?, ?, 'active', ?, ?)"))
		goto fail;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, pkind, -1, SQLITE_STATIC);
	if (admin)
		sqlite3_bind_text(st, 3, role_names[role], -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 3);
	sqlite3_bind_text(st, 4, r->who.id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, ksc_now());
	rc = sqlite3_step(st);
	ksc_finish(r->k, st);
	if (rc == SQLITE_CONSTRAINT) {
		ksc_rollback(r->k);
		ksc_err(r, 409, "principal '%s' already exists", id);
		return;
	}
	if (rc != SQLITE_DONE)
		goto fail;
	d = admin ? json_pack("{s:s}", "role", role_names[role]) : json_object();
	{
		char action[32];

		snprintf(action, sizeof(action), "%s.create", pkind);
		if (ksc_audit(r->k, r->who.id, action, id, d) || ksc_commit(r->k))
			goto fail;
	}
	json_decref(d);
	ksc_reply(r, 201, admin ? json_pack("{s:s, s:s, s:s}", "id", id, "kind", "admin", "role",
					    role_names[role]) :
				  json_pack("{s:s, s:s}", "id", id, "kind", pkind));
	return;
fail:
	json_decref(d);
	ksc_rollback(r->k);
	ksc_err(r, 500, "database error");
}

static void h_principal_list(struct ksc_req *r, const char *kind)
{
	sqlite3_stmt *st = NULL;
	json_t *a = json_array();

	if (ksc_need_role(r, KR_AUDITOR)) {
		json_decref(a);
		return;
	}
	if (!a || ksc_prep(r->k, &st, "SELECT id, role, status, created_by, created FROM principals"
				      " WHERE kind = ? ORDER BY created, id")) {
		json_decref(a);
		ksc_err(r, 500, "database error");
		return;
	}
	sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW)
		json_array_append_new(a, json_pack("{s:s, s:s?, s:s, s:s, s:I}", "id",
						   sqlite3_column_text(st, 0), "role",
						   sqlite3_column_text(st, 1), "status",
						   sqlite3_column_text(st, 2), "created_by",
						   sqlite3_column_text(st, 3), "created",
						   (json_int_t)sqlite3_column_int64(st, 4)));
	ksc_finish(r->k, st);
	ksc_reply(r, 200, json_pack("{s:o}", r->seg[0], a));
}

static void h_principal_revoke(struct ksc_req *r, const char *id, int admin, const char *pkind)
{
	sqlite3_stmt *st = NULL;
	enum ksc_role role = KR_NONE;
	int found = 0;

	if (ksc_need_role(r, KR_OPERATOR))
		return;
	if (ksc_begin(r->k)) {
		ksc_err(r, 500, "database busy");
		return;
	}
	if (ksc_prep(r->k, &st, "SELECT role, status FROM principals WHERE id = ? AND kind = ?"))
		goto fail;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, pkind, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		found = 1;
		role = parse_role((const char *)sqlite3_column_text(st, 0));
		found += !strcmp((const char *)sqlite3_column_text(st, 1), "revoked");
	}
	ksc_finish(r->k, st);
	st = NULL;
	if (!found) {
		ksc_rollback(r->k);
		ksc_err(r, 404, "no %s '%s'", admin ? "administrator" : pkind, id);
		return;
	}
	if (admin && (r->who.role <= role && r->who.role != KR_SUPER)) {
		ksc_rollback(r->k);
		ksc_err(r, 403, "an administrator revokes only lower ranks");
		return;
	}
	if (admin && !strcmp(id, r->who.id)) {
		ksc_rollback(r->k);
		ksc_err(r, 409, "an administrator cannot revoke itself");
		return;
	}
	if (found == 2) {
		ksc_rollback(r->k);
		ksc_err(r, 409, "'%s' is already revoked", id);
		return;
	}
	if (ksc_prep(r->k, &st, "UPDATE principals SET status = 'revoked' WHERE id = ?"))
		goto fail;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto fail;
	ksc_finish(r->k, st);
	st = NULL;
	{
		char action[32];

		snprintf(action, sizeof(action), "%s.revoke", pkind);
		if (ksc_audit(r->k, r->who.id, action, id, NULL) || ksc_commit(r->k))
			goto fail;
	}
	ksc_reply(r, 200, json_pack("{s:s, s:s}", "id", id, "status", "revoked"));
	return;
fail:
	ksc_finish(r->k, st);
	ksc_rollback(r->k);
	ksc_err(r, 500, "database error");
}

int ksc_need_grant(struct ksc_req *r, const char *device)
{
	sqlite3_stmt *st = NULL;
	int ok = 0;

	if (r->who.kind == KP_ADMIN || (r->who.kind == KP_DEVICE && !strcmp(r->who.id, device)))
		return 0;
	if (r->who.kind == KP_APP &&
	    !ksc_prep(r->k, &st, "SELECT 1 FROM grants WHERE app = ? AND device = ?")) {
		sqlite3_bind_text(st, 1, r->who.id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, device, -1, SQLITE_STATIC);
		ok = sqlite3_step(st) == SQLITE_ROW;
	}
	ksc_finish(r->k, st);
	if (!ok)
		ksc_err(r, 403, "'%s' is not entitled to device %.64s", r->who.id, device);
	return ok ? 0 : -1;
}

/* POST /apps/{id}/grant|ungrant {device}: which devices an application may
 * involve in sessions, groups and challenges. */
static void h_grant(struct ksc_req *r, const char *app, int grant)
{
	const char *dev = ksc_str(r, "device", 1);
	sqlite3_stmt *st = NULL;
	json_t *d;
	int ok = 0, rc;

	if (!dev || ksc_need_role(r, KR_OPERATOR))
		return;
	if (!ksc_prep(r->k, &st, "SELECT (SELECT count(*) FROM principals WHERE id = ?1 AND"
				 " kind = 'app') + (SELECT count(*) FROM devices WHERE id = ?2)")) {
		sqlite3_bind_text(st, 1, app, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, dev, -1, SQLITE_STATIC);
		ok = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 2;
	}
	ksc_finish(r->k, st);
	st = NULL;
	if (!ok) {
		ksc_err(r, 404, "no application '%.64s' or no device '%.64s'", app, dev);
		return;
	}
	if (ksc_begin(r->k)) {
		ksc_err(r, 500, "database busy");
		return;
	}
	if (ksc_prep(r->k, &st, grant ? "INSERT OR IGNORE INTO grants(app, device) VALUES(?, ?)" :
					"DELETE FROM grants WHERE app = ? AND device = ?"))
		goto fail;
	sqlite3_bind_text(st, 1, app, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, dev, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	ksc_finish(r->k, st);
	if (rc != SQLITE_DONE)
		goto fail;
	d = json_pack("{s:s}", "device", dev);
	rc = ksc_audit(r->k, r->who.id, grant ? "app.grant" : "app.ungrant", app, d);
	json_decref(d);
	if (rc || ksc_commit(r->k))
		goto fail;
	ksc_reply(r, 200, json_pack("{s:s, s:s, s:b}", "app", app, "device", dev, "granted", grant));
	return;
fail:
	ksc_rollback(r->k);
	ksc_err(r, 500, "database error");
}

void ksc_h_admins(struct ksc_req *r)
{
	int admin = !strcmp(r->seg[0], "admins");
	const char *pkind = admin ? "admin" : !strcmp(r->seg[0], "users") ? "user" : "app";

	if (r->nseg == 3 && !strcmp(pkind, "app") && !strcmp(r->method, "POST") &&
	    (!strcmp(r->seg[2], "grant") || !strcmp(r->seg[2], "ungrant"))) {
		h_grant(r, r->seg[1], !strcmp(r->seg[2], "grant"));
		return;
	}

	if (r->nseg == 1 && !strcmp(r->method, "POST"))
		h_principal_create(r, admin, pkind);
	else if (r->nseg == 1 && !strcmp(r->method, "GET"))
		h_principal_list(r, pkind);
	else if (r->nseg == 3 && !strcmp(r->seg[2], "revoke") && !strcmp(r->method, "POST"))
		h_principal_revoke(r, r->seg[1], admin, pkind);
	else
		ksc_err(r, 404, "no such endpoint");
}

/* GET /audit?from=N&limit=M ; GET /audit/verify */
void ksc_h_audit(struct ksc_req *r)
{
	sqlite3_stmt *st = NULL;
	json_t *a;
	long long from = 1, limit = 1000;

	if (ksc_need_role(r, KR_AUDITOR))
		return;
	if (r->who.role == KR_OPERATOR) {
		ksc_err(r, 403, "the audit log is read by auditors and super administrators");
		return;
	}
	if (strcmp(r->method, "GET")) {
		ksc_err(r, 405, "the audit log is append-only");
		return;
	}
	if (r->nseg == 2 && !strcmp(r->seg[1], "head")) {
		/* an anchor for the auditor to keep outside the KSC */
		if (!ksc_prep(r->k, &st, "SELECT seq, lower(hex(hash)) FROM audit ORDER BY seq DESC"
					 " LIMIT 1") &&
		    sqlite3_step(st) == SQLITE_ROW)
			ksc_reply(r, 200, json_pack("{s:I, s:s}", "seq",
						    (json_int_t)sqlite3_column_int64(st, 0), "hash",
						    sqlite3_column_text(st, 1)));
		else
			ksc_err(r, 500, "database error");
		ksc_finish(r->k, st);
		return;
	}
	if (r->nseg == 2 && !strcmp(r->seg[1], "verify")) {
		uint64_t n, bad;
		int ret = qw_ksc_audit_verify(r->k, &n, &bad), anchored = -1;
		const char *q = r->query;
		long long aseq = 0;
		char ahash[65] = "";

		if (ret && ret != QW_EAUTH) {
			ksc_err(r, 500, "audit verification failed: %s", qw_strerror(ret));
			return;
		}
		/* ?seq=N&hash=H: a head the auditor kept (GET /audit/head). A
		 * chain rewritten consistently by someone holding the master key
		 * passes the checks above but not this one. */
		if (q && (strstr(q, "seq=") || strstr(q, "hash="))) {
			const char *ps = strstr(q, "seq="), *ph = strstr(q, "hash=");

			if (!ps || !ph || sscanf(ps + 4, "%lld", &aseq) != 1 || aseq < 1 ||
			    sscanf(ph + 5, "%64[0-9a-f]", ahash) != 1 || strlen(ahash) != 64) {
				ksc_err(r, 400, "an anchor is seq=N&hash=<64 lowercase hex digits>");
				return;
			}
			anchored = 0;
			if (!ksc_prep(r->k, &st, "SELECT lower(hex(hash)) FROM audit WHERE seq = ?")) {
				sqlite3_bind_int64(st, 1, aseq);
				anchored = sqlite3_step(st) == SQLITE_ROW &&
					   !strcmp((const char *)sqlite3_column_text(st, 0), ahash);
			}
			ksc_finish(r->k, st);
			st = NULL;
			if (!anchored && !ret) {
				ret = QW_EAUTH;
				bad = (uint64_t)aseq;
			}
		}
		a = json_pack("{s:b, s:I, s:I}", "intact", !ret, "records", (json_int_t)n,
			      "first_bad_seq", (json_int_t)bad);
		if (a && anchored >= 0)
			json_object_set_new(a, "anchor_matches", json_boolean(anchored));
		ksc_reply(r, 200, a);
		return;
	}
	if (r->nseg != 1) {
		ksc_err(r, 404, "no such endpoint");
		return;
	}
	if (r->query) {
		const char *p;

		if ((p = strstr(r->query, "from=")))
			from = atoll(p + 5);
		if ((p = strstr(r->query, "limit=")))
			limit = atoll(p + 6);
		if (from < 1 || limit < 1 || limit > 10000) {
			ksc_err(r, 400, "from >= 1 and 1 <= limit <= 10000");
			return;
		}
	}
	a = json_array();
	if (!a || ksc_prep(r->k, &st, "SELECT seq, ts, actor, action, object, detail, hex(hash)"
				      " FROM audit WHERE seq >= ? ORDER BY seq LIMIT ?")) {
		json_decref(a);
		ksc_err(r, 500, "database error");
		return;
	}
	sqlite3_bind_int64(st, 1, from);
	sqlite3_bind_int64(st, 2, limit);
	while (sqlite3_step(st) == SQLITE_ROW) {
		json_t *d = json_loads((const char *)sqlite3_column_text(st, 5), 0, NULL);

		json_array_append_new(a, json_pack("{s:I, s:I, s:s, s:s, s:s, s:o, s:s}", "seq",
						   (json_int_t)sqlite3_column_int64(st, 0), "ts",
						   (json_int_t)sqlite3_column_int64(st, 1), "actor",
						   sqlite3_column_text(st, 2), "action",
						   sqlite3_column_text(st, 3), "object",
						   sqlite3_column_text(st, 4), "detail",
						   d ? d : json_null(), "hash",
						   sqlite3_column_text(st, 6)));
	}
	ksc_finish(r->k, st);
	ksc_reply(r, 200, json_pack("{s:o}", "records", a));
}

/* ---- routing ---- */

struct route {
	const char *first;
	void (*fn)(struct ksc_req *r);
};

static const struct route routes[] = {
	{ "admins", ksc_h_admins },     { "apps", ksc_h_admins },
	{ "users", ksc_h_admins },
	{ "audit", ksc_h_audit },       { "keys", ksc_h_keys },
	{ "devices", ksc_h_devices },   { "auth", ksc_h_auth },
	{ "sessions", ksc_h_sessions }, { "groups", ksc_h_groups },
	{ "crypto", ksc_h_crypto },     { "certs", ksc_h_certs },
	{ "crl", ksc_h_certs },         { NULL, NULL },
};

static int split_path(struct ksc_req *r, const char *path)
{
	const char *p = path;

	while (*p) {
		const char *e;
		size_t n;

		while (*p == '/')
			p++;
		if (!*p)
			break;
		e = strchr(p, '/');
		n = e ? (size_t)(e - p) : strlen(p);
		if (r->nseg == sizeof(r->seg) / sizeof(r->seg[0]) || n > 128)
			return -1;
		r->seg[r->nseg] = strndup(p, n);
		if (!r->seg[r->nseg])
			return -1;
		r->nseg++;
		p += n;
	}
	return 0;
}

static int handle(struct qw_ksc *k, const char *peer_id, const char *method, const char *path,
		  const char *query, const uint8_t *body, size_t len, struct qw_ksc_resp *resp)
{
	struct ksc_req r;
	const struct route *rt;

	QW_REQUIRE(k && method && path && resp);
	memset(resp, 0, sizeof(*resp));
	memset(&r, 0, sizeof(r));
	r.k = k;
	r.method = method;
	r.query = query;
	r.resp = resp;
	if (split_path(&r, path) || r.nseg == 0) {
		ksc_err(&r, 404, "no such endpoint");
		goto out;
	}
	if (resolve_caller(&r, peer_id))
		goto out;
	if (len) {
		json_error_t e;

		if (strcmp(method, "POST") && strcmp(method, "PUT")) {
			ksc_err(&r, 400, "a %s request takes no body", method);
			goto out;
		}
		r.body = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &e);
		if (!r.body || !json_is_object(r.body)) {
			/* jansson's text may quote the body; a body may hold
			 * keys, so say where only */
			ksc_err(&r, 400, "the body is not a JSON object (line %d, column %d)",
				e.line, e.column);
			goto out;
		}
	}
	if (!strcmp(r.seg[0], "status") && r.nseg == 1) {
		if (strcmp(method, "GET"))
			ksc_err(&r, 405, "status is GET only");
		else
			h_status(&r);
		goto out;
	}
	for (rt = routes; rt->first; rt++) {
		if (!strcmp(rt->first, r.seg[0])) {
			rt->fn(&r);
			goto out;
		}
	}
	ksc_err(&r, 404, "no such endpoint");
out:
	ksc_rollback(k); /* a handler that forgot is never left in a transaction */
	json_decref(r.body);
	for (size_t i = 0; i < r.nseg; i++)
		free(r.seg[i]);
	if (!resp->body)
		return QW_ENOMEM;
	return 0;
}

int qw_ksc_handle(struct qw_ksc *k, const char *peer_id, const char *method, const char *path,
		  const char *query, const uint8_t *body, size_t len, struct qw_ksc_resp *resp)
{
	int ret;

	QW_REQUIRE(k && method && path && resp);
	pthread_mutex_lock(&k->mu);
	ret = handle(k, peer_id, method, path, query, body, len, resp);
	pthread_mutex_unlock(&k->mu);
	return ret;
}

void qw_ksc_resp_clear(struct qw_ksc_resp *resp)
{
	if (!resp || !resp->body)
		return;
	if (resp->secret)
		qw_free_secret(resp->body, resp->len);
	else
		free(resp->body);
	resp->body = NULL;
	resp->len = 0;
}
