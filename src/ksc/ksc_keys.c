/* Key life cycle (docs/ksc.md "Key life cycle"):
 *
 *   generate --> active --distribute--> distributed
 *   active, distributed --revoke--> revoked          (terminal)
 *   active, distributed --expire--> expired          (terminal)
 *   any but destroyed --destroy--> destroyed --recover (quorum)--> active
 *
 * Leaving active/distributed erases the material (the row keeps its
 * metadata as a tombstone; SQLite secure_delete overwrites the freed
 * bytes). Only a destroyed key that was backed up can come back, and only
 * when a threshold of custodian administrators each submit their Shamir
 * share: a revoked key was withdrawn for a reason and stays gone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ksc_internal.h"
#include "qwave/secmem.h"
#include "qwave/uuid.h"

#define SHARE_BYTES (32 + 1)

struct ksc_key {
	char id[QW_UUID_STR_BYTES];
	char device[QW_KSC_ID_MAX + 1];
	char owner[QW_KSC_ID_MAX + 1];
	char purpose[16], state[16], alg[24];
	char source[96];
	uint64_t size_bits;
	int64_t created, expires;
	int has_material;
};

static void col_copy(char *dst, size_t cap, sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

static int key_load(struct qw_ksc *k, const char *id, struct ksc_key *o)
{
	sqlite3_stmt *st = NULL;
	int ret = QW_ENOTFOUND;

	if (ksc_prep(k, &st, "SELECT id, device, owner, purpose, state, alg, source, size_bits,"
			     " created, expires, material IS NOT NULL FROM keys WHERE id = ?"))
		return QW_EDB;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		memset(o, 0, sizeof(*o));
		col_copy(o->id, sizeof(o->id), st, 0);
		col_copy(o->device, sizeof(o->device), st, 1);
		col_copy(o->owner, sizeof(o->owner), st, 2);
		col_copy(o->purpose, sizeof(o->purpose), st, 3);
		col_copy(o->state, sizeof(o->state), st, 4);
		col_copy(o->alg, sizeof(o->alg), st, 5);
		col_copy(o->source, sizeof(o->source), st, 6);
		o->size_bits = (uint64_t)sqlite3_column_int64(st, 7);
		o->created = sqlite3_column_int64(st, 8);
		o->expires = sqlite3_column_int64(st, 9);
		o->has_material = sqlite3_column_int(st, 10);
		ret = 0;
	}
	ksc_finish(k, st);
	return ret;
}

static json_t *key_json(const struct ksc_key *o)
{
	return json_pack("{s:s, s:s?, s:s?, s:s, s:s, s:s?, s:s, s:I, s:I, s:I}", "id", o->id,
			 "device", o->device[0] ? o->device : NULL, "owner",
			 o->owner[0] ? o->owner : NULL, "purpose", o->purpose, "state", o->state,
			 "alg", o->alg[0] ? o->alg : NULL, "source", o->source, "size_bits",
			 (json_int_t)o->size_bits, "created", (json_int_t)o->created, "expires",
			 (json_int_t)o->expires);
}

static const uint8_t *key_kek(struct qw_ksc *k, const struct ksc_key *o, uint8_t buf[32])
{
	if (!o->device[0])
		return k->data_key;
	return ksc_device_kek(k, o->device, buf) ? NULL : buf;
}

/* The material of key o (active or distributed), *out freed with
 * qw_free_secret(*out, *len). */
static int key_material(struct qw_ksc *k, const struct ksc_key *o, uint8_t **out, size_t *len)
{
	sqlite3_stmt *st = NULL;
	uint8_t kb[32];
	const uint8_t *kek = key_kek(k, o, kb);
	int ret = QW_ESTATE;

	*out = NULL;
	if (!kek)
		return QW_ECRYPTO;
	if (ksc_prep(k, &st, "SELECT material FROM keys WHERE id = ?"))
		return QW_EDB;
	sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_BLOB)
		ret = ksc_open_sealed(kek, "key", o->id, sqlite3_column_blob(st, 0),
				      (size_t)sqlite3_column_bytes(st, 0), out, len);
	ksc_finish(k, st);
	qw_wipe(kb, sizeof(kb));
	return ret;
}

/* A revoked or expired key is terminal: its backup, the custodians' shares
 * and any submitted recovery shares go with it, so that no quorum can bring
 * it back after a later destroy (inside the caller's transaction). */
static int drop_backup(struct qw_ksc *k, const char *id)
{
	static const char *const sql[3] = { "DELETE FROM backups WHERE key_id = ?",
					    "DELETE FROM custody WHERE key_id = ?",
					    "DELETE FROM recovery WHERE key_id = ?" };
	int ret = 0;

	for (int i = 0; i < 3 && !ret; i++) {
		sqlite3_stmt *st = NULL;

		if (ksc_prep(k, &st, sql[i]))
			return QW_EDB;
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		ret = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
		ksc_finish(k, st);
	}
	return ret;
}

static int is_terminal(const char *state)
{
	return !strcmp(state, "revoked") || !strcmp(state, "expired");
}

static int set_state(struct qw_ksc *k, const char *id, const char *state, int erase)
{
	sqlite3_stmt *st = NULL;
	int ret;

	if (is_terminal(state) && (ret = drop_backup(k, id)))
		return ret;

	if (ksc_prep(k, &st, erase ? "UPDATE keys SET state = ?, updated = ?, material = NULL"
				     " WHERE id = ?" :
				     "UPDATE keys SET state = ?, updated = ? WHERE id = ?"))
		return QW_EDB;
	sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, ksc_now());
	sqlite3_bind_text(st, 3, id, -1, SQLITE_STATIC);
	ret = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
	ksc_finish(k, st);
	return ret;
}

/* Expire every live key whose time has come, one audit record each
 * (inside the caller's transaction). */
static int expire_sweep(struct qw_ksc *k, const char *actor, uint64_t *count)
{
	sqlite3_stmt *st = NULL;
	char ids[64][QW_UUID_STR_BYTES];
	size_t n = 0;
	int ret = 0;

	*count = 0;
	do {
		n = 0;
		if (ksc_prep(k, &st, "SELECT id FROM keys WHERE state IN ('active', 'distributed')"
				     " AND expires > 0 AND expires <= ? LIMIT 64"))
			return QW_EDB;
		sqlite3_bind_int64(st, 1, ksc_now());
		while (sqlite3_step(st) == SQLITE_ROW)
			col_copy(ids[n++], QW_UUID_STR_BYTES, st, 0);
		ksc_finish(k, st);
		for (size_t i = 0; i < n && !ret; i++) {
			ret = set_state(k, ids[i], "expired", 1);
			if (!ret)
				ret = ksc_audit(k, actor, "key.expire", ids[i], NULL);
		}
		*count += n;
	} while (!ret && n == 64);
	return ret;
}

/* Insert a new key row (material sealed under its KEK). */
static int key_insert(struct qw_ksc *k, const char *id, const char *device, const char *owner,
		      const char *purpose, const char *alg, const char *source, uint64_t size_bits,
		      int64_t expires, const char *state, const uint8_t *mat, size_t matlen,
		      uint64_t slots)
{
	uint8_t kb[32], *sealed = NULL;
	size_t slen = 0;
	sqlite3_stmt *st = NULL;
	int ret;

	if (device && (ret = ksc_device_kek(k, device, kb)))
		return ret;
	ret = ksc_seal(device ? kb : k->data_key, "key", id, mat, matlen, &sealed, &slen);
	qw_wipe(kb, sizeof(kb));
	if (ret)
		return ret;
	ret = QW_EDB;
	if (ksc_prep(k, &st, "INSERT INTO keys(id, device, owner, purpose, source, alg, size_bits,"
			     " state, created, updated, expires, material, slots)"
			     " VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
		goto out;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, device, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, owner, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, purpose, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, source, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, alg, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, (sqlite3_int64)size_bits);
	sqlite3_bind_text(st, 8, state, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 9, ksc_now());
	sqlite3_bind_int64(st, 10, ksc_now());
	sqlite3_bind_int64(st, 11, expires);
	sqlite3_bind_blob(st, 12, sealed, (int)slen, SQLITE_STATIC);
	sqlite3_bind_int64(st, 13, (sqlite3_int64)slots);
	if (sqlite3_step(st) == SQLITE_DONE)
		ret = 0;
out:
	ksc_finish(k, st);
	free(sealed);
	return ret;
}

/* Generate a key of size_bits from source (or store `given` material,
 * labelled by *label) and insert it; id gets its UUID. */
int ksc_key_create(struct qw_ksc *k, const char *device, const char *owner, const char *purpose,
		   const char *alg, const char *source, uint64_t size_bits, int64_t expires,
		   const char *state, uint64_t slots, const uint8_t *given, char id[static 37],
		   const char **label)
{
	struct qw_uuid u;
	size_t n = (size_t)(size_bits / 8);
	uint8_t *mat = qw_secure_alloc(n ? n : 1);
	int ret;

	if (!mat)
		return QW_ENOMEM;
	if (given) {
		memcpy(mat, given, n);
		ret = 0;
	} else {
		ret = ksc_key_material(k, source, mat, n, label);
	}
	if (ret || (ret = qw_uuid_generate(&u)))
		goto out;
	qw_uuid_format(&u, id);
	ret = key_insert(k, id, device, owner, purpose, alg, *label, size_bits, expires, state, mat,
			 n, slots);
out:
	qw_secure_free(mat, n ? n : 1);
	return ret;
}

static int principal_exists(struct qw_ksc *k, const char *id)
{
	sqlite3_stmt *st = NULL;
	int found = 0;

	if (ksc_prep(k, &st, "SELECT 1 FROM principals WHERE id = ? AND kind != 'admin'"))
		return 0;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	found = sqlite3_step(st) == SQLITE_ROW;
	ksc_finish(k, st);
	return found;
}

/* POST /keys {size_bits, owner?, expires_in?, source?} */
static void h_generate(struct ksc_req *r)
{
	uint64_t bits = 256, ttl = 0;
	const char *owner = ksc_str(r, "owner", 0), *source = ksc_str(r, "source", 0);
	const char *label = NULL;
	char id[37];
	json_t *d;
	int ret;

	if (r->resp->body || ksc_uint(r, "size_bits", 8, QW_KSC_KEY_MAX_BITS, &bits, 0) < 0 ||
	    ksc_uint(r, "expires_in", 1, 10ull * 365 * 86400, &ttl, 0) < 0)
		return;
	if (bits % 8) {
		ksc_err(r, 400, "size_bits must be a multiple of 8");
		return;
	}
	if (source && strcmp(source, "qrng") && strcmp(source, "qkd")) {
		ksc_err(r, 400, "source must be qrng or qkd");
		return;
	}
	if (ksc_need_role(r, KR_OPERATOR))
		return;
	if (owner && !principal_exists(r->k, owner)) {
		ksc_err(r, 404, "no application or device '%.64s'", owner);
		return;
	}
	if (ksc_begin(r->k)) {
		ksc_err(r, 500, "database busy");
		return;
	}
	ret = ksc_key_create(r->k, NULL, owner, "general", NULL, source, bits,
			     ttl ? ksc_now() + (int64_t)ttl : 0, "active", 0, NULL, id, &label);
	if (ret) {
		ksc_rollback(r->k);
		ksc_fail(r, ret, "key generation");
		return;
	}
	d = json_pack("{s:I, s:s, s:s?}", "size_bits", (json_int_t)bits, "source", label, "owner",
		      owner);
	ret = ksc_audit(r->k, r->who.id, "key.generate", id, d);
	json_decref(d);
	if (ret || ksc_commit(r->k)) {
		ksc_rollback(r->k);
		ksc_err(r, 500, "database error");
		return;
	}
	snprintf(r->resp->note, sizeof(r->resp->note), "key=%s", id);
	{
		struct ksc_key o;

		if (key_load(r->k, id, &o))
			ksc_err(r, 500, "database error");
		else
			ksc_reply(r, 201, key_json(&o));
	}
}

static void h_list(struct ksc_req *r)
{
	sqlite3_stmt *st = NULL;
	json_t *a = json_array();
	char state[16] = "";

	if (ksc_need_role(r, KR_AUDITOR)) {
		json_decref(a);
		return;
	}
	if (r->query && !strncmp(r->query, "state=", 6))
		snprintf(state, sizeof(state), "%s", r->query + 6);
	if (!a || ksc_prep(r->k, &st, "SELECT id FROM keys WHERE (?1 = '' OR state = ?1)"
				      " AND purpose IN ('general', 'service') ORDER BY created, id"
				      " LIMIT 10000")) {
		json_decref(a);
		ksc_err(r, 500, "database error");
		return;
	}
	sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW) {
		struct ksc_key o;

		if (!key_load(r->k, (const char *)sqlite3_column_text(st, 0), &o))
			json_array_append_new(a, key_json(&o));
	}
	ksc_finish(r->k, st);
	ksc_reply(r, 200, json_pack("{s:o}", "keys", a));
}

/* Move key id through transition `action`; the state machine above. */
static void h_transition(struct ksc_req *r, struct ksc_key *o, const char *action)
{
	const char *to;
	int ok, ret;
	json_t *d = NULL;
	const char *reason = ksc_str(r, "reason", 0);

	if (r->resp->body)
		return;
	if (!strcmp(action, "revoke")) {
		to = "revoked";
		ok = !strcmp(o->state, "active") || !strcmp(o->state, "distributed");
	} else {
		to = "destroyed";
		ok = strcmp(o->state, "destroyed") != 0;
	}
	if (!ok) {
		ksc_rollback(r->k);
		ksc_err(r, 409, "key %s is %s: cannot %s it", o->id, o->state, action);
		return;
	}
	d = json_pack("{s:s, s:s, s:s?}", "from", o->state, "to", to, "reason", reason);
	/* a key revoked along with its device never passed through set_state */
	ret = is_terminal(o->state) ? drop_backup(r->k, o->id) : 0;
	if (!ret)
		ret = set_state(r->k, o->id, to, 1);
	if (!ret)
		ret = ksc_audit(r->k, r->who.id, !strcmp(action, "revoke") ? "key.revoke" :
									     "key.destroy",
				o->id, d);
	json_decref(d);
	if (ret || ksc_commit(r->k)) {
		ksc_rollback(r->k);
		ksc_err(r, 500, "database error");
		return;
	}
	snprintf(o->state, sizeof(o->state), "%s", to);
	ksc_reply(r, 200, key_json(o));
}

/* POST /keys/{id}/distribute: the owner (an application or device the key
 * was generated for) receives the material, once. */
static void h_distribute(struct ksc_req *r, struct ksc_key *o)
{
	uint8_t *mat = NULL;
	size_t len = 0;
	json_t *res;
	int ret;

	if (!o->owner[0] || strcmp(o->owner, r->who.id)) {
		ksc_rollback(r->k);
		ksc_err(r, 403, "key %s is not assigned to '%s'", o->id, r->who.id);
		return;
	}
	if (strcmp(o->state, "active")) {
		ksc_rollback(r->k);
		ksc_err(r, 409, "key %s is %s: only an active key is distributed", o->id, o->state);
		return;
	}
	ret = key_material(r->k, o, &mat, &len);
	if (!ret)
		ret = set_state(r->k, o->id, "distributed", 0);
	if (!ret)
		ret = ksc_audit(r->k, r->who.id, "key.distribute", o->id, NULL);
	if (ret || (ret = ksc_commit(r->k))) {
		ksc_rollback(r->k);
		qw_free_secret(mat, len);
		ksc_fail(r, ret, "distribute");
		return;
	}
	snprintf(o->state, sizeof(o->state), "distributed");
	res = key_json(o);
	if (!res || ksc_put_b64(res, "key", mat, len)) {
		json_decref(res);
		res = NULL;
	}
	qw_free_secret(mat, len);
	ksc_reply_secret(r, 200, res);
}

/* POST /keys/{id}/backup {threshold, custodians: [admin, ...]} (super):
 * the material is sealed under a fresh backup key BK, BK is split t-of-n
 * (Shamir) and each share kept sealed for its custodian until collected;
 * the KSC keeps no copy of BK. */
static void h_backup(struct ksc_req *r, struct ksc_key *o)
{
	json_t *cust = r->body ? json_object_get(r->body, "custodians") : NULL;
	uint64_t t = 0;
	size_t n = json_is_array(cust) ? json_array_size(cust) : 0;
	uint8_t bk[32], *mat = NULL, *blob = NULL, *shares = NULL;
	size_t len = 0, blen = 0;
	sqlite3_stmt *st = NULL;
	json_t *d = NULL;
	int ret = QW_EINVAL;

	if (ksc_uint(r, "threshold", 2, 255, &t, 1) < 0)
		goto bad;
	if (n < t || n > 255) {
		ksc_err(r, 400, "custodians must be an array of at least threshold (%llu) "
			"administrator IDs", (unsigned long long)t);
		goto bad;
	}
	for (size_t i = 0; i < n; i++) {
		const char *a = json_string_value(json_array_get(cust, i));
		sqlite3_stmt *q = NULL;
		int okc = 0;

		if (!a) {
			ksc_err(r, 400, "custodians must be strings");
			goto bad;
		}
		for (size_t j = 0; j < i; j++)
			if (!strcmp(a, json_string_value(json_array_get(cust, j)))) {
				ksc_err(r, 400, "custodian '%.64s' listed twice", a);
				goto bad;
			}
		if (!ksc_prep(r->k, &q, "SELECT 1 FROM principals WHERE id = ? AND kind = 'admin'"
					" AND status = 'active'")) {
			sqlite3_bind_text(q, 1, a, -1, SQLITE_STATIC);
			okc = sqlite3_step(q) == SQLITE_ROW;
		}
		ksc_finish(r->k, q);
		if (!okc) {
			ksc_err(r, 404, "no active administrator '%.64s'", a);
			goto bad;
		}
	}
	if (strcmp(o->state, "active") && strcmp(o->state, "distributed")) {
		ksc_err(r, 409, "key %s is %s: only a live key is backed up", o->id, o->state);
		goto bad;
	}
	shares = malloc(n * SHARE_BYTES);
	if (!shares) {
		ret = QW_ENOMEM;
		goto fail;
	}
	if ((ret = key_material(r->k, o, &mat, &len)) || (ret = ksc_random(r->k, bk, 32)) ||
	    (ret = ksc_seal(bk, "backup", o->id, mat, len, &blob, &blen)) ||
	    (ret = qw_ksc_shamir_split(bk, 32, (unsigned)t, (unsigned)n, shares)))
		goto fail;
	ret = QW_EDB;
	if (ksc_prep(r->k, &st, "INSERT INTO backups(key_id, threshold, n, blob, created)"
				" VALUES(?, ?, ?, ?, ?)"))
		goto fail;
	sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)t);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)n);
	sqlite3_bind_blob(st, 4, blob, (int)blen, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, ksc_now());
	ret = sqlite3_step(st);
	ksc_finish(r->k, st);
	st = NULL;
	if (ret != SQLITE_DONE) {
		/* only DONE means the row exists; anything else must not answer 201 */
		ret = ret == SQLITE_CONSTRAINT ? QW_EEXIST : QW_EDB;
		goto fail;
	}
	ret = QW_EDB;
	for (size_t i = 0; i < n; i++) {
		const char *a = json_string_value(json_array_get(cust, i));
		char sid[160];
		uint8_t *ss = NULL;
		size_t sl = 0;
		int rc;

		snprintf(sid, sizeof(sid), "%s|%s", o->id, a);
		if (ksc_seal(r->k->data_key, "share", sid, shares + i * SHARE_BYTES, SHARE_BYTES, &ss,
			     &sl) ||
		    ksc_prep(r->k, &st, "INSERT INTO custody(key_id, admin, share) VALUES(?, ?, ?)")) {
			free(ss);
			goto fail;
		}
		sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, a, -1, SQLITE_STATIC);
		sqlite3_bind_blob(st, 3, ss, (int)sl, SQLITE_STATIC);
		rc = sqlite3_step(st);
		ksc_finish(r->k, st);
		st = NULL;
		free(ss);
		if (rc != SQLITE_DONE)
			goto fail;
	}
	d = json_pack("{s:I, s:O}", "threshold", (json_int_t)t, "custodians", cust);
	if (ksc_audit(r->k, r->who.id, "key.backup", o->id, d) || ksc_commit(r->k))
		goto fail;
	ksc_reply(r, 201, json_pack("{s:s, s:I, s:O}", "key", o->id, "threshold", (json_int_t)t,
				    "custodians", cust));
	ret = 0;
	goto out;
fail:
	ksc_rollback(r->k);
	ksc_fail(r, ret, "backup");
	goto out;
bad:
	ksc_rollback(r->k);
out:
	json_decref(d);
	qw_wipe(bk, sizeof(bk));
	qw_free_secret(mat, len);
	if (shares)
		qw_free_secret(shares, n * SHARE_BYTES);
	free(blob);
}

/* GET /keys/{id}/share: a custodian collects its share, once. */
static void h_share(struct ksc_req *r, struct ksc_key *o)
{
	sqlite3_stmt *st = NULL;
	uint8_t *sh = NULL;
	size_t sl = 0;
	char sid[160];
	json_t *res = NULL;
	int ret = QW_ENOTFOUND;

	if (r->who.kind != KP_ADMIN) {
		ksc_err(r, 403, "shares are held by administrators");
		return;
	}
	snprintf(sid, sizeof(sid), "%s|%s", o->id, r->who.id);
	if (ksc_prep(r->k, &st, "SELECT share FROM custody WHERE key_id = ? AND admin = ?")) {
		ret = QW_EDB;
		goto fail;
	}
	sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->who.id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		if (sqlite3_column_type(st, 0) != SQLITE_BLOB)
			ret = QW_ESTATE;
		else
			ret = ksc_open_sealed(r->k->data_key, "share", sid, sqlite3_column_blob(st, 0),
					      (size_t)sqlite3_column_bytes(st, 0), &sh, &sl);
	}
	ksc_finish(r->k, st);
	st = NULL;
	if (ret == QW_ENOTFOUND) {
		ksc_rollback(r->k);
		ksc_err(r, 403, "'%s' is not a custodian of key %s", r->who.id, o->id);
		return;
	}
	if (ret == QW_ESTATE) {
		ksc_rollback(r->k);
		ksc_err(r, 409, "the share of '%s' for key %s was already collected", r->who.id,
			o->id);
		return;
	}
	if (ret)
		goto fail;
	ret = QW_EDB;
	if (ksc_prep(r->k, &st, "UPDATE custody SET share = NULL WHERE key_id = ? AND admin = ?"))
		goto fail;
	sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->who.id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto fail;
	ksc_finish(r->k, st);
	st = NULL;
	if (ksc_audit(r->k, r->who.id, "key.share_collect", o->id, NULL) || ksc_commit(r->k))
		goto fail;
	res = json_pack("{s:s, s:s}", "key", o->id, "custodian", r->who.id);
	if (!res || ksc_put_b64(res, "share", sh, sl)) {
		json_decref(res);
		res = NULL;
	}
	qw_free_secret(sh, sl);
	ksc_reply_secret(r, 200, res);
	return;
fail:
	ksc_finish(r->k, st);
	qw_free_secret(sh, sl);
	ksc_rollback(r->k);
	ksc_fail(r, ret, "share");
}

/* POST /keys/{id}/recover {share}: each custodian submits its share; the
 * submission that reaches the threshold reconstructs BK, opens the backup
 * (AES-GCM: wrong or forged shares fail here and every submitted share is
 * discarded) and the key is active again. */
static void h_recover(struct ksc_req *r, struct ksc_key *o)
{
	uint8_t *share = NULL, *all = NULL, bk[32], *mat = NULL, *blob = NULL;
	size_t slen = 0, mlen = 0, blen = 0, m = 0;
	uint64_t t = 0;
	sqlite3_stmt *st = NULL;
	char sid[160];
	int ret = QW_EDB, cust = 0;

	if (ksc_b64(r, "share", &share, &slen, 1) < 0)
		goto bad;
	if (slen != SHARE_BYTES || share[0] == 0) {
		ksc_err(r, 400, "a share is %d bytes with a nonzero first byte", SHARE_BYTES);
		goto bad;
	}
	if (r->who.kind != KP_ADMIN) {
		ksc_err(r, 403, "shares are submitted by administrators");
		goto bad;
	}
	{
		/* databases from before drop_backup may still hold the backup of
		 * a key revoked or expired before its destruction: the audit
		 * log records that, and such a key stays gone */
		int term = -1;

		if (!ksc_prep(r->k, &st, "SELECT count(*) FROM audit WHERE object = ? AND"
					 " action IN ('key.revoke', 'key.expire')")) {
			sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
			if (sqlite3_step(st) == SQLITE_ROW)
				term = sqlite3_column_int(st, 0) != 0;
		}
		ksc_finish(r->k, st);
		st = NULL;
		if (term < 0) {
			ret = QW_EDB;
			goto fail;
		}
		if (term) {
			ksc_err(r, 409, "key %s was revoked or expired before it was destroyed:"
				" it is not recovered", o->id);
			goto bad;
		}
	}
	if (!ksc_prep(r->k, &st, "SELECT 1 FROM custody WHERE key_id = ? AND admin = ?")) {
		sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, r->who.id, -1, SQLITE_STATIC);
		cust = sqlite3_step(st) == SQLITE_ROW;
	}
	ksc_finish(r->k, st);
	st = NULL;
	if (!cust) {
		ksc_err(r, 403, "'%s' is not a custodian of key %s", r->who.id, o->id);
		goto bad;
	}
	if (strcmp(o->state, "destroyed")) {
		ksc_err(r, 409, "key %s is %s: only a destroyed key is recovered", o->id, o->state);
		goto bad;
	}
	snprintf(sid, sizeof(sid), "%s|%s", o->id, r->who.id);
	{
		uint8_t *ss = NULL;
		size_t sl = 0;
		int rc;

		if ((ret = ksc_seal(r->k->data_key, "recovery", sid, share, slen, &ss, &sl)))
			goto fail;
		ret = QW_EDB;
		if (ksc_prep(r->k, &st, "INSERT OR REPLACE INTO recovery(key_id, admin, share)"
					" VALUES(?, ?, ?)")) {
			free(ss);
			goto fail;
		}
		sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, r->who.id, -1, SQLITE_STATIC);
		sqlite3_bind_blob(st, 3, ss, (int)sl, SQLITE_STATIC);
		rc = sqlite3_step(st);
		ksc_finish(r->k, st);
		st = NULL;
		free(ss);
		if (rc != SQLITE_DONE)
			goto fail;
	}
	if (ksc_prep(r->k, &st, "SELECT threshold, blob FROM backups WHERE key_id = ?"))
		goto fail;
	sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_ROW) {
		ksc_finish(r->k, st);
		st = NULL;
		ret = QW_ENOTFOUND;
		goto fail;
	}
	t = (uint64_t)sqlite3_column_int64(st, 0);
	blen = (size_t)sqlite3_column_bytes(st, 1);
	blob = malloc(blen ? blen : 1);
	if (!blob) {
		ret = QW_ENOMEM;
		goto fail;
	}
	memcpy(blob, sqlite3_column_blob(st, 1), blen);
	ksc_finish(r->k, st);
	st = NULL;
	/* gather the submitted shares */
	all = malloc(255 * SHARE_BYTES);
	if (!all || ksc_prep(r->k, &st, "SELECT admin, share FROM recovery WHERE key_id = ?")) {
		ret = all ? QW_EDB : QW_ENOMEM;
		goto fail;
	}
	sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW && m < 255) {
		uint8_t *p = NULL;
		size_t pl = 0;
		char aid[160];

		snprintf(aid, sizeof(aid), "%s|%s", o->id, sqlite3_column_text(st, 0));
		if (ksc_open_sealed(r->k->data_key, "recovery", aid, sqlite3_column_blob(st, 1),
				    (size_t)sqlite3_column_bytes(st, 1), &p, &pl) ||
		    pl != SHARE_BYTES) {
			qw_free_secret(p, pl);
			ret = QW_EAUTH;
			goto fail;
		}
		memcpy(all + m * SHARE_BYTES, p, SHARE_BYTES);
		qw_free_secret(p, pl);
		m++;
	}
	ksc_finish(r->k, st);
	st = NULL;
	if (m < t) {
		json_t *d = json_pack("{s:I, s:I}", "submitted", (json_int_t)m, "threshold",
				      (json_int_t)t);

		ret = ksc_audit(r->k, r->who.id, "key.recover_share", o->id, d);
		json_decref(d);
		if (ret || ksc_commit(r->k))
			goto fail;
		ksc_reply(r, 202, json_pack("{s:s, s:s, s:I, s:I}", "key", o->id, "state", o->state,
					    "shares", (json_int_t)m, "threshold", (json_int_t)t));
		goto out;
	}
	ret = qw_ksc_shamir_combine(all, m, 32, bk);
	if (!ret)
		ret = ksc_open_sealed(bk, "backup", o->id, blob, blen, &mat, &mlen);
	if (ret == QW_EAUTH || ret == QW_EINVAL) {
		/* wrong shares: discard them all, record the failure, and say so */
		int drc = QW_EDB;

		ksc_rollback(r->k);
		if (!ksc_begin(r->k)) {
			if (!ksc_prep(r->k, &st, "DELETE FROM recovery WHERE key_id = ?")) {
				sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
				drc = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
			}
			ksc_finish(r->k, st);
			st = NULL;
			/* stale shares left behind would let one custodian reach the
			 * threshold later: commit nothing unless they are gone */
			if (!drc)
				drc = ksc_audit(r->k, r->who.id, "key.recover_failed", o->id, NULL);
			if (!drc && ksc_commit(r->k))
				drc = QW_EDB;
			if (drc)
				ksc_rollback(r->k);
		}
		if (drc) {
			ksc_fail(r, QW_EDB, "recover");
			goto out;
		}
		ksc_err(r, 409, "the submitted shares do not reconstruct the backup key of %s; "
			"they were discarded", o->id);
		goto out;
	}
	if (ret)
		goto fail;
	{
		uint8_t kb[32], *sealed = NULL;
		const uint8_t *kek = key_kek(r->k, o, kb);
		size_t sl = 0;

		ret = kek ? ksc_seal(kek, "key", o->id, mat, mlen, &sealed, &sl) : QW_ECRYPTO;
		qw_wipe(kb, sizeof(kb));
		if (ret)
			goto fail;
		ret = QW_EDB;
		if (ksc_prep(r->k, &st, "UPDATE keys SET state = 'active', material = ?, updated = ?"
					" WHERE id = ?")) {
			free(sealed);
			goto fail;
		}
		sqlite3_bind_blob(st, 1, sealed, (int)sl, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, ksc_now());
		sqlite3_bind_text(st, 3, o->id, -1, SQLITE_STATIC);
		ret = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
		ksc_finish(r->k, st);
		st = NULL;
		free(sealed);
		if (ret)
			goto fail;
	}
	ret = QW_EDB;
	if (ksc_prep(r->k, &st, "DELETE FROM recovery WHERE key_id = ?"))
		goto fail;
	sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
	ret = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
	ksc_finish(r->k, st);
	st = NULL;
	if (ret)
		goto fail;
	{
		json_t *d = json_pack("{s:I, s:I}", "shares", (json_int_t)m, "threshold", (json_int_t)t);

		ret = ksc_audit(r->k, r->who.id, "key.recover", o->id, d);
		json_decref(d);
	}
	if (ret || ksc_commit(r->k))
		goto fail;
	snprintf(o->state, sizeof(o->state), "active");
	ksc_reply(r, 200, key_json(o));
	goto out;
fail:
	ksc_finish(r->k, st);
	ksc_rollback(r->k);
	ksc_fail(r, ret, "recover");
	goto out;
bad:
	ksc_rollback(r->k);
out:
	qw_wipe(bk, sizeof(bk));
	if (share)
		qw_free_secret(share, slen);
	if (all)
		qw_free_secret(all, 255 * SHARE_BYTES);
	qw_free_secret(mat, mlen);
	free(blob);
}

void ksc_h_keys(struct ksc_req *r)
{
	struct ksc_key o;
	const char *act = r->nseg == 3 ? r->seg[2] : NULL;
	int post = !strcmp(r->method, "POST");
	uint64_t n;
	int ret;

	if (r->nseg == 1) {
		if (post)
			h_generate(r);
		else if (!strcmp(r->method, "GET"))
			h_list(r);
		else
			ksc_err(r, 405, "keys: GET or POST");
		return;
	}
	if (r->nseg == 2 && post && !strcmp(r->seg[1], "expire")) {
		if (ksc_need_role(r, KR_OPERATOR))
			return;
		if (ksc_begin(r->k) || expire_sweep(r->k, r->who.id, &n) || ksc_commit(r->k)) {
			ksc_rollback(r->k);
			ksc_err(r, 500, "database error");
			return;
		}
		ksc_reply(r, 200, json_pack("{s:I}", "expired", (json_int_t)n));
		return;
	}
	if (r->nseg > 3 || (r->nseg == 3 && !post && strcmp(act, "share")) ||
	    (r->nseg == 2 && strcmp(r->method, "GET"))) {
		ksc_err(r, r->nseg == 3 || r->nseg == 2 ? 405 : 404, "no such endpoint");
		return;
	}
	if (ksc_begin(r->k)) {
		ksc_err(r, 500, "database busy");
		return;
	}
	/* expiry is applied before any key is looked at */
	if (expire_sweep(r->k, "-", &n) || (ret = key_load(r->k, r->seg[1], &o)) == QW_EDB) {
		ksc_rollback(r->k);
		ksc_err(r, 500, "database error");
		return;
	}
	/* fills are managed through their device */
	if (ret || !strcmp(o.purpose, "fill")) {
		ksc_commit(r->k);
		ksc_err(r, 404, "no key '%.64s'", r->seg[1]);
		return;
	}
	if (r->nseg == 2) {
		if (r->who.kind != KP_ADMIN && strcmp(o.owner, r->who.id)) {
			ksc_commit(r->k);
			ksc_err(r, 404, "no key '%.64s'", r->seg[1]);
			return;
		}
		ksc_commit(r->k);
		ksc_reply(r, 200, key_json(&o));
		return;
	}
	if (!strcmp(o.purpose, "service") && strcmp(act, "revoke") && strcmp(act, "destroy")) {
		ksc_err(r, 409, "key %s is a crypto-service key: it never leaves the KSC", o.id);
	} else if (!strcmp(act, "distribute")) {
		h_distribute(r, &o);
	} else if (!strcmp(act, "revoke") || !strcmp(act, "destroy")) {
		/* operators, and the application owning a service key */
		if ((r->who.kind == KP_APP && !strcmp(o.purpose, "service") &&
		     !strcmp(o.owner, r->who.id)) || !ksc_need_role(r, KR_OPERATOR))
			h_transition(r, &o, act);
	} else if (!strcmp(act, "backup")) {
		if (!ksc_need_role(r, KR_SUPER))
			h_backup(r, &o);
	} else if (!strcmp(act, "share")) {
		if (strcmp(r->method, "GET"))
			ksc_err(r, 405, "a share is collected with GET");
		else
			h_share(r, &o);
	} else if (!strcmp(act, "recover")) {
		h_recover(r, &o);
	} else {
		ksc_err(r, 404, "no such endpoint");
	}
	ksc_rollback(r->k);
}
