/* Service layer (docs/ksc.md "Services"): device authentication with
 * pre-shared quantum keys, session keys for two terminals, group keys with
 * rekeying on every membership change.
 *
 * All three spend the devices' pre-filled keys in 256-bit slots, in the
 * order the KSC chooses (ksc_take_slot) and names in each message, so a
 * device never has to guess and refuses a slot it has used before. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "ksc_internal.h"
#include "qwave/aead.h"
#include "qwave/secmem.h"
#include "qwave/uuid.h"

#define NONCE_BYTES 16
#define GROUP_MAX 64

/* The device must exist and be active; 0 or a reply already sent. */
static int need_active_device(struct ksc_req *r, const char *id, struct ksc_device *d)
{
	int ret;

	if (!id)
		return -1;
	ret = ksc_device_load(r->k, id, d);
	if (ret == QW_ENOTFOUND) {
		ksc_err(r, 404, "no device '%.64s'", id);
		return -1;
	}
	if (ret) {
		ksc_err(r, 500, "database error");
		return -1;
	}
	if (strcmp(d->status, "active")) {
		ksc_err(r, 409, "device %s is %s", d->id, d->status);
		return -1;
	}
	return 0;
}

/* Wrap key (32 bytes) for device under its next slot; appends
 * {device, batch, slot, wrapped} to arr. Inside the caller's transaction. */
static int wrap_for(struct qw_ksc *k, const char *kind, const char *id, uint64_t epoch,
		    const char *device, const uint8_t key[32], json_t *arr)
{
	uint8_t slot_key[QW_KSC_SLOT_BYTES], msg[32 + QW_AEAD_MSG_MAX_OVERHEAD];
	char batch[37], aad[256];
	uint64_t slot;
	size_t mlen = 0;
	json_t *o;
	int n, ret;

	ret = ksc_take_slot(k, device, batch, &slot, slot_key);
	if (ret)
		return ret;
	n = qw_ksc_wrap_aad(aad, sizeof(aad), kind, id, epoch, device);
	ret = qw_aead_seal_msg(QW_AEAD_AES256_GCM, slot_key, sizeof(slot_key), (const uint8_t *)aad,
			       (size_t)n, key, 32, msg, sizeof(msg), &mlen);
	qw_wipe(slot_key, sizeof(slot_key));
	if (ret)
		return ret;
	o = json_pack("{s:s, s:s, s:I}", "device", device, "batch", batch, "slot", (json_int_t)slot);
	if (!o || ksc_put_b64(o, "wrapped", msg, mlen) || json_array_append_new(arr, o)) {
		json_decref(o);
		return QW_ENOMEM;
	}
	return 0;
}

/* ---- authentication ---- */

/* 1 when id is an active principal of kind user. */
static int user_active(struct qw_ksc *k, const char *id)
{
	sqlite3_stmt *st = NULL;
	int ok = 0;

	if (ksc_prep(k, &st, "SELECT 1 FROM principals WHERE id = ? AND kind = 'user' AND"
			     " status = 'active'"))
		return 0;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	ok = sqlite3_step(st) == SQLITE_ROW;
	ksc_finish(k, st);
	return ok;
}

/* POST /auth/challenge {device, method} or {user, method: cert}: users
 * (people, registered with POST /users) authenticate by certificate. */
static void h_challenge(struct ksc_req *r)
{
	const char *dev = ksc_str(r, "device", 0), *method = NULL;
	int user = 0;
	struct ksc_device d;
	struct qw_uuid u;
	uint8_t nonce[NONCE_BYTES], slot_key[QW_KSC_SLOT_BYTES];
	char cid[QW_UUID_STR_BYTES], batch[37] = "";
	uint64_t slot = 0;
	int64_t exp = ksc_now() + r->k->challenge_ttl_s;
	sqlite3_stmt *st = NULL;
	json_t *res = NULL, *det = NULL;
	int ret, cert;

	if (!dev && !r->resp->body && (dev = ksc_str(r, "user", 0)))
		user = 1;
	if (!dev) {
		if (!r->resp->body)
			ksc_err(r, 400, "missing field 'device' (or 'user')");
		return;
	}
	method = ksc_str(r, "method", 0);
	if (r->resp->body)
		return;
	if (!method)
		method = user ? "cert" : "hmac-sm3";
	cert = !strcmp(method, "cert");
	if (user && !cert) {
		ksc_err(r, 400, "users authenticate by certificate (method cert)");
		return;
	}
	if (strcmp(method, "hmac-sm3") && strcmp(method, "zuc-eia3") && !cert) {
		ksc_err(r, 400, "method must be hmac-sm3, zuc-eia3 or cert");
		return;
	}
	if (cert && !r->k->pki_dir) {
		ksc_err(r, 501, "certificate authentication needs pki_dir in the configuration");
		return;
	}
	if (r->who.kind == KP_ADMIN && r->who.role < KR_OPERATOR) {
		ksc_err(r, 403, "auditors do not authenticate devices");
		return;
	}
	if ((r->who.kind == KP_DEVICE || r->who.kind == KP_USER) && strcmp(r->who.id, dev)) {
		ksc_err(r, 403, "a device or user asks challenges for itself only");
		return;
	}
	if (user && !user_active(r->k, dev)) {
		ksc_err(r, 404, "no active user '%.64s'", dev);
		return;
	}
	if (!user && (need_active_device(r, dev, &d) || ksc_need_grant(r, dev)))
		return;
	if (ksc_begin(r->k)) {
		ksc_err(r, 500, "database busy");
		return;
	}
	/* challenges nobody answered go when they expire */
	if (ksc_prep(r->k, &st, "DELETE FROM challenges WHERE expires < ?") == 0) {
		sqlite3_bind_int64(st, 1, ksc_now());
		ret = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
		ksc_finish(r->k, st);
		st = NULL;
		if (ret)
			goto fail;
	}
	if ((ret = qw_uuid_generate(&u)) || (ret = ksc_random(r->k, nonce, sizeof(nonce))))
		goto fail;
	qw_uuid_format(&u, cid);
	if (!cert && (ret = ksc_take_slot(r->k, dev, batch, &slot, slot_key)))
		goto fail;
	qw_wipe(slot_key, sizeof(slot_key));
	ret = QW_EDB;
	if (ksc_prep(r->k, &st, "INSERT INTO challenges(id, device, method, nonce, batch, slot,"
				" expires, subject) VALUES(?, ?, ?, ?, ?, ?, ?, ?)"))
		goto fail;
	sqlite3_bind_text(st, 8, user ? "user" : "device", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 1, cid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, dev, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, method, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 4, nonce, sizeof(nonce), SQLITE_STATIC);
	if (cert)
		sqlite3_bind_null(st, 5);
	else
		sqlite3_bind_text(st, 5, batch, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, (sqlite3_int64)slot);
	sqlite3_bind_int64(st, 7, exp);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto fail;
	ksc_finish(r->k, st);
	st = NULL;
	det = json_pack("{s:s, s:s, s:s?, s:I}", "challenge", cid, "method", method, "batch",
			cert ? NULL : batch, "slot", (json_int_t)slot);
	if (ksc_audit(r->k, r->who.id, "auth.challenge", dev, det) || ksc_commit(r->k))
		goto fail;
	res = json_pack("{s:s, s:s, s:s, s:I}", "challenge_id", cid, user ? "user" : "device", dev,
			"method", method, "expires", (json_int_t)exp);
	if (res && !cert) {
		json_object_set_new(res, "batch", json_string(batch));
		json_object_set_new(res, "slot", json_integer((json_int_t)slot));
	}
	if (!res || ksc_put_b64(res, "nonce", nonce, sizeof(nonce))) {
		ksc_err(r, 500, "out of memory");
		goto out;
	}
	ksc_reply(r, 201, res);
	res = NULL;
	goto out;
fail:
	ksc_finish(r->k, st);
	ksc_rollback(r->k);
	ksc_fail(r, ret, "challenge");
out:
	json_decref(res);
	json_decref(det);
}

static void h_response(struct ksc_req *r)
{
	const char *cid = ksc_str(r, "challenge_id", 1);
	uint8_t nonce[64], slot_key[QW_KSC_SLOT_BYTES], want[32], *mac = NULL;
	size_t nlen = 0, maclen = 0, wlen = 0;
	char dev[QW_KSC_ID_MAX + 1] = "", method[16] = "", batch[40] = "", subject[8] = "";
	uint64_t slot = 0;
	int64_t exp = 0;
	sqlite3_stmt *st = NULL;
	const char *why = NULL;
	json_t *det = NULL;
	int found = 0, ok = 0, ret;

	if (!cid)
		return;
	if (r->who.kind == KP_ADMIN && r->who.role < KR_OPERATOR) {
		ksc_err(r, 403, "auditors do not authenticate devices");
		return;
	}
	if (ksc_begin(r->k)) {
		ksc_err(r, 500, "database busy");
		return;
	}
	if (ksc_prep(r->k, &st, "SELECT device, method, nonce, batch, slot, expires, subject"
				" FROM challenges WHERE id = ?")) {
		ksc_rollback(r->k);
		ksc_err(r, 500, "database error");
		return;
	}
	sqlite3_bind_text(st, 1, cid, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 2) <= (int)sizeof(nonce)) {
		found = 1;
		snprintf(dev, sizeof(dev), "%s", sqlite3_column_text(st, 0));
		snprintf(method, sizeof(method), "%s", sqlite3_column_text(st, 1));
		nlen = (size_t)sqlite3_column_bytes(st, 2);
		memcpy(nonce, sqlite3_column_blob(st, 2), nlen);
		if (sqlite3_column_type(st, 3) == SQLITE_TEXT)
			snprintf(batch, sizeof(batch), "%s", sqlite3_column_text(st, 3));
		slot = (uint64_t)sqlite3_column_int64(st, 4);
		exp = sqlite3_column_int64(st, 5);
		snprintf(subject, sizeof(subject), "%s", sqlite3_column_text(st, 6));
	}
	ksc_finish(r->k, st);
	st = NULL;
	if (!found) {
		/* unknown, or already answered: a replay */
		ksc_rollback(r->k);
		ksc_err(r, 401, "authentication failed: unknown or already used challenge");
		return;
	}
	if ((r->who.kind == KP_DEVICE || r->who.kind == KP_USER) && strcmp(r->who.id, dev)) {
		ksc_rollback(r->k);
		ksc_err(r, 403, "a device or user answers its own challenges only");
		return;
	}
	/* single use: the challenge goes whatever the outcome */
	if (ksc_prep(r->k, &st, "DELETE FROM challenges WHERE id = ?") ||
	    (sqlite3_bind_text(st, 1, cid, -1, SQLITE_STATIC), sqlite3_step(st) != SQLITE_DONE)) {
		ksc_finish(r->k, st);
		ksc_rollback(r->k);
		ksc_err(r, 500, "database error");
		return;
	}
	ksc_finish(r->k, st);
	st = NULL;
	if (exp < ksc_now()) {
		why = "challenge expired";
	} else if (!strcmp(subject, "user")) {
		if (!user_active(r->k, dev))
			why = "user not active";
	} else {
		struct ksc_device d;

		if (ksc_device_load(r->k, dev, &d) || strcmp(d.status, "active"))
			why = "device not active";
	}
	if (!why && !strcmp(method, "cert")) {
		const char *pem = ksc_str(r, "certificate", 1);
		uint8_t *sig = NULL;
		size_t siglen = 0;
		char m[200];
		int ml;

		if (!pem || ksc_b64(r, "signature", &sig, &siglen, 1) < 0) {
			ksc_rollback(r->k);
			return;
		}
		ml = snprintf(m, sizeof(m), "qwave-ksc-auth|%s|", cid);
		memcpy(m + ml, nonce, nlen);
		ret = ksc_cert_auth(r->k, dev, pem, sig, siglen, (const uint8_t *)m, (size_t)ml + nlen,
				    &why);
		free(sig);
		if (ret && !why)
			why = "certificate check failed";
		ok = !why;
	} else if (!why) {
		if (ksc_b64(r, "mac", &mac, &maclen, 1) < 0) {
			ksc_rollback(r->k);
			return;
		}
		ret = ksc_slot_key(r->k, dev, batch, slot, slot_key);
		if (!ret)
			ret = qw_ksc_auth_mac(method, slot_key, cid, nonce, nlen, dev, want, &wlen);
		qw_wipe(slot_key, sizeof(slot_key));
		if (ret)
			why = "the pre-shared key is no longer available";
		else if (maclen != wlen || CRYPTO_memcmp(mac, want, wlen))
			why = "wrong response";
		else
			ok = 1;
	}
	det = json_pack("{s:s, s:s, s:s?}", "challenge", cid, "method", method, "reason", why);
	if (ksc_audit(r->k, r->who.id, ok ? "auth.success" : "auth.failure", dev, det) ||
	    ksc_commit(r->k)) {
		ksc_rollback(r->k);
		ksc_err(r, 500, "database error");
	} else if (ok) {
		ksc_reply(r, 200, json_pack("{s:b, s:s, s:s}", "authenticated", 1, "device", dev,
					    "method", method));
	} else {
		ksc_err(r, 401, "authentication failed: %s", why);
	}
	json_decref(det);
	free(mac);
	qw_wipe(want, sizeof(want));
}

void ksc_h_auth(struct ksc_req *r)
{
	if (r->nseg != 2 || strcmp(r->method, "POST")) {
		ksc_err(r, r->nseg == 2 ? 405 : 404, "auth: POST /auth/challenge, /auth/response");
		return;
	}
	if (!strcmp(r->seg[1], "challenge"))
		h_challenge(r);
	else if (!strcmp(r->seg[1], "response"))
		h_response(r);
	else
		ksc_err(r, 404, "no such endpoint");
}

/* ---- session keys: one key per call ----
 * POST /sessions {a, b}: the caller is terminal a itself, or an
 * application. The session key exists in the KSC only between its
 * generation and the two wraps; it is not stored or logged. */
void ksc_h_sessions(struct ksc_req *r)
{
	const char *a = NULL, *b = NULL, *label = NULL;
	struct ksc_device da, db;
	struct qw_uuid u;
	char sid[QW_UUID_STR_BYTES];
	uint8_t sk[32];
	json_t *arr = NULL, *det = NULL;
	int ret;

	if (r->nseg != 1 || strcmp(r->method, "POST")) {
		ksc_err(r, r->nseg == 1 ? 405 : 404, "sessions: POST /sessions");
		return;
	}
	a = ksc_str(r, "a", 1);
	b = a ? ksc_str(r, "b", 1) : NULL;
	if (!b)
		return;
	if (!strcmp(a, b)) {
		ksc_err(r, 400, "a session needs two different terminals");
		return;
	}
	if (r->who.kind == KP_ADMIN || (r->who.kind == KP_DEVICE && strcmp(r->who.id, a))) {
		ksc_err(r, 403, "session keys are requested by terminal a or an application");
		return;
	}
	/* a terminal may call any active terminal; an application only
	 * involves devices it is entitled to */
	if (need_active_device(r, a, &da) || need_active_device(r, b, &db) ||
	    (r->who.kind == KP_APP && (ksc_need_grant(r, a) || ksc_need_grant(r, b))))
		return;
	arr = json_array();
	if (!arr || ksc_begin(r->k)) {
		json_decref(arr);
		ksc_err(r, 500, "database busy");
		return;
	}
	if ((ret = qw_uuid_generate(&u)) ||
	    (ret = ksc_key_material(r->k, ksc_str(r, "source", 0), sk, sizeof(sk), &label)))
		goto fail;
	qw_uuid_format(&u, sid);
	if ((ret = wrap_for(r->k, "session", sid, 0, a, sk, arr)) ||
	    (ret = wrap_for(r->k, "session", sid, 0, b, sk, arr)))
		goto fail;
	qw_wipe(sk, sizeof(sk));
	det = json_pack("{s:s, s:s, s:s, s:I, s:I}", "a", a, "b", b, "source", label, "slot_a",
			json_integer_value(json_object_get(json_array_get(arr, 0), "slot")), "slot_b",
			json_integer_value(json_object_get(json_array_get(arr, 1), "slot")));
	if ((ret = ksc_audit(r->k, r->who.id, "session.create", sid, det)) ||
	    (ret = ksc_commit(r->k)))
		goto fail;
	json_decref(det);
	snprintf(r->resp->note, sizeof(r->resp->note), "session %s", sid);
	ksc_reply(r, 201, json_pack("{s:s, s:s, s:o}", "session_id", sid, "source", label,
				    "terminals", arr));
	return;
fail:
	qw_wipe(sk, sizeof(sk));
	json_decref(arr);
	json_decref(det);
	ksc_rollback(r->k);
	ksc_fail(r, ret, "session");
}

/* ---- group keys (push-to-talk, video) ----
 * Every membership change is a new epoch with a fresh key wrapped for the
 * members of that epoch only: a member who left cannot read what follows
 * (forward secrecy towards leavers) and one who joined cannot read what
 * came before (backward secrecy). */
static int group_rekey(struct ksc_req *r, const char *gid, uint64_t epoch, json_t **members_out,
		       const char **label)
{
	sqlite3_stmt *st = NULL;
	char devs[GROUP_MAX][QW_KSC_ID_MAX + 1];
	size_t n = 0;
	uint8_t gk[32];
	json_t *arr = json_array();
	int ret;

	if (!arr)
		return QW_ENOMEM;
	if (ksc_prep(r->k, &st, "SELECT device FROM group_members WHERE grp = ? ORDER BY device")) {
		json_decref(arr);
		return QW_EDB;
	}
	sqlite3_bind_text(st, 1, gid, -1, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW && n < GROUP_MAX)
		snprintf(devs[n++], QW_KSC_ID_MAX + 1, "%s", sqlite3_column_text(st, 0));
	ksc_finish(r->k, st);
	ret = ksc_key_material(r->k, NULL, gk, sizeof(gk), label);
	for (size_t i = 0; i < n && !ret; i++) {
		struct ksc_device d;

		if ((ret = ksc_device_load(r->k, devs[i], &d)))
			break;
		if (strcmp(d.status, "active"))
			continue; /* a suspended or lost member gets nothing */
		ret = wrap_for(r->k, "group", gid, epoch, devs[i], gk, arr);
	}
	qw_wipe(gk, sizeof(gk));
	if (!ret) {
		if (ksc_prep(r->k, &st, "UPDATE groups SET epoch = ? WHERE id = ?")) {
			ret = QW_EDB;
		} else {
			sqlite3_bind_int64(st, 1, (sqlite3_int64)epoch);
			sqlite3_bind_text(st, 2, gid, -1, SQLITE_STATIC);
			ret = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
			ksc_finish(r->k, st);
		}
	}
	if (ret) {
		json_decref(arr);
		return ret;
	}
	*members_out = arr;
	return 0;
}

static int member_op(struct qw_ksc *k, const char *sql, const char *gid, const char *dev)
{
	sqlite3_stmt *st = NULL;
	int ret;

	if (ksc_prep(k, &st, sql))
		return QW_EDB;
	sqlite3_bind_text(st, 1, gid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, dev, -1, SQLITE_STATIC);
	ret = sqlite3_step(st);
	ksc_finish(k, st);
	if (ret == SQLITE_CONSTRAINT)
		return QW_EEXIST;
	if (ret != SQLITE_DONE)
		return QW_EDB;
	return sqlite3_changes(k->db) ? 0 : QW_ENOTFOUND;
}

static void h_group_create(struct ksc_req *r)
{
	const char *gid = ksc_str(r, "id", 1), *label = NULL;
	json_t *mem = r->body ? json_object_get(r->body, "members") : NULL, *arr = NULL, *det;
	size_t n = json_array_size(mem);
	sqlite3_stmt *st = NULL;
	int ret = QW_EDB;

	if (!gid)
		return;
	if (!ksc_id_valid(gid) || !json_is_array(mem) || n < 2 || n > GROUP_MAX) {
		ksc_err(r, 400, "a group needs a valid id and members: an array of 2..%d device IDs",
			GROUP_MAX);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		struct ksc_device d;
		const char *dev = json_string_value(json_array_get(mem, i));

		if (!dev) {
			ksc_err(r, 400, "members must be strings");
			return;
		}
		if (need_active_device(r, dev, &d) || ksc_need_grant(r, dev))
			return;
	}
	if (ksc_begin(r->k)) {
		ksc_err(r, 500, "database busy");
		return;
	}
	if (ksc_prep(r->k, &st, "INSERT INTO groups(id, owner, epoch, created) VALUES(?, ?, 0, ?)"))
		goto fail;
	sqlite3_bind_text(st, 1, gid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->who.id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, ksc_now());
	ret = sqlite3_step(st);
	ksc_finish(r->k, st);
	if (ret == SQLITE_CONSTRAINT) {
		ret = QW_EEXIST;
		goto fail;
	}
	ret = ret == SQLITE_DONE ? 0 : QW_EDB;
	for (size_t i = 0; i < n && !ret; i++) {
		ret = member_op(r->k, "INSERT INTO group_members(grp, device) VALUES(?, ?)", gid,
				json_string_value(json_array_get(mem, i)));
		if (ret == QW_EEXIST) {
			ksc_rollback(r->k);
			ksc_err(r, 400, "member listed twice");
			return;
		}
	}
	if (ret || (ret = group_rekey(r, gid, 1, &arr, &label)))
		goto fail;
	det = json_pack("{s:I, s:O, s:s}", "epoch", (json_int_t)1, "members", mem, "source", label);
	ret = ksc_audit(r->k, r->who.id, "group.create", gid, det);
	json_decref(det);
	if (ret || (ret = ksc_commit(r->k))) {
		json_decref(arr);
		goto fail;
	}
	ksc_reply(r, 201, json_pack("{s:s, s:I, s:o}", "group", gid, "epoch", (json_int_t)1,
				    "members", arr));
	return;
fail:
	ksc_rollback(r->k);
	ksc_fail(r, ret, "group");
}

void ksc_h_groups(struct ksc_req *r)
{
	sqlite3_stmt *st = NULL;
	char owner[QW_KSC_ID_MAX + 1] = "";
	uint64_t epoch = 0;
	const char *dev, *label = NULL;
	json_t *arr = NULL, *det;
	int found = 0, ret, join;

	if (r->who.kind == KP_DEVICE || (r->who.kind == KP_ADMIN && r->who.role < KR_OPERATOR)) {
		ksc_err(r, 403, "groups are managed by applications and operators");
		return;
	}
	if (r->nseg == 1) {
		if (strcmp(r->method, "POST"))
			ksc_err(r, 405, "groups: POST to create");
		else
			h_group_create(r);
		return;
	}
	if (r->nseg > 3) {
		ksc_err(r, 404, "no such endpoint");
		return;
	}
	if (!ksc_prep(r->k, &st, "SELECT owner, epoch FROM groups WHERE id = ?")) {
		sqlite3_bind_text(st, 1, r->seg[1], -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_ROW) {
			found = 1;
			snprintf(owner, sizeof(owner), "%s", sqlite3_column_text(st, 0));
			epoch = (uint64_t)sqlite3_column_int64(st, 1);
		}
	}
	ksc_finish(r->k, st);
	st = NULL;
	if (!found || (r->who.kind == KP_APP && strcmp(owner, r->who.id))) {
		ksc_err(r, 404, "no group '%.64s'", r->seg[1]);
		return;
	}
	if (r->nseg == 2) {
		json_t *m = json_array();

		if (strcmp(r->method, "GET")) {
			json_decref(m);
			ksc_err(r, 405, "a group is read with GET");
			return;
		}
		if (m && !ksc_prep(r->k, &st, "SELECT device FROM group_members WHERE grp = ?"
					      " ORDER BY device")) {
			sqlite3_bind_text(st, 1, r->seg[1], -1, SQLITE_STATIC);
			while (sqlite3_step(st) == SQLITE_ROW)
				json_array_append_new(m, json_string((const char *)
								     sqlite3_column_text(st, 0)));
		}
		ksc_finish(r->k, st);
		ksc_reply(r, 200, json_pack("{s:s, s:s, s:I, s:o}", "group", r->seg[1], "owner",
					    owner, "epoch", (json_int_t)epoch, "members", m));
		return;
	}
	join = !strcmp(r->seg[2], "join");
	if (!join && strcmp(r->seg[2], "leave")) {
		ksc_err(r, 404, "no such endpoint");
		return;
	}
	if (strcmp(r->method, "POST")) {
		ksc_err(r, 405, "join/leave are POST");
		return;
	}
	dev = ksc_str(r, "device", 1);
	if (!dev)
		return;
	if (join) {
		struct ksc_device d;

		if (need_active_device(r, dev, &d) || ksc_need_grant(r, dev))
			return;
	}
	if (ksc_begin(r->k)) {
		ksc_err(r, 500, "database busy");
		return;
	}
	ret = member_op(r->k, join ? "INSERT INTO group_members(grp, device) VALUES(?, ?)" :
				     "DELETE FROM group_members WHERE grp = ? AND device = ?",
			r->seg[1], dev);
	if (ret == QW_EEXIST || ret == QW_ENOTFOUND) {
		ksc_rollback(r->k);
		ksc_err(r, 409, "device %.64s is %s a member of %s", dev, join ? "already" : "not",
			r->seg[1]);
		return;
	}
	if (ret || (ret = group_rekey(r, r->seg[1], epoch + 1, &arr, &label)))
		goto fail;
	det = json_pack("{s:s, s:I, s:s}", "device", dev, "epoch", (json_int_t)(epoch + 1),
			"source", label);
	ret = ksc_audit(r->k, r->who.id, join ? "group.join" : "group.leave", r->seg[1], det);
	json_decref(det);
	if (ret || (ret = ksc_commit(r->k))) {
		json_decref(arr);
		goto fail;
	}
	ksc_reply(r, 200, json_pack("{s:s, s:I, s:o}", "group", r->seg[1], "epoch",
				    (json_int_t)(epoch + 1), "members", arr));
	return;
fail:
	ksc_rollback(r->k);
	ksc_fail(r, ret, "group");
}
