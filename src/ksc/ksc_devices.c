/* Device and secure-medium management (docs/ksc.md "Devices"):
 *
 *   register --> active <--suspend/resume--> suspended
 *   active, suspended --retire--> retired               (terminal)
 *   active, suspended --destroy--> lost --erased--> lost (acknowledged)
 *
 * A device is also a principal (its certificate's ID is the device ID).
 * Its medium key (shared once, at registration, with whoever personalises
 * the medium) encrypts the images of offline filling; the filled keys stay
 * in the KSC too, sealed under the device's KEK, because session keys and
 * challenges are built from them. Remote destroy erases the KSC's copy at
 * once and tells the device to erase its own on its next contact. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ksc_internal.h"
#include "qwave/secmem.h"
#include "qwave/uuid.h"

static const char *const kinds[] = { "server-crypto", "pcie-card", "sim", "usim", "tf-card",
				     "sd-card", "usb-key", "softkey", "iot-chip", NULL };

int ksc_device_load(struct qw_ksc *k, const char *id, struct ksc_device *d)
{
	sqlite3_stmt *st = NULL;
	int ret = QW_ENOTFOUND;

	if (ksc_prep(k, &st, "SELECT kind, owner, status, quota_bits, filled_bits, balance_bits,"
			     " destroy_pending FROM devices WHERE id = ?"))
		return QW_EDB;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		memset(d, 0, sizeof(*d));
		snprintf(d->id, sizeof(d->id), "%s", id);
		snprintf(d->kind, sizeof(d->kind), "%s", sqlite3_column_text(st, 0));
		snprintf(d->owner, sizeof(d->owner), "%s", sqlite3_column_text(st, 1));
		snprintf(d->status, sizeof(d->status), "%s", sqlite3_column_text(st, 2));
		d->quota_bits = (uint64_t)sqlite3_column_int64(st, 3);
		d->filled_bits = (uint64_t)sqlite3_column_int64(st, 4);
		d->balance_bits = (uint64_t)sqlite3_column_int64(st, 5);
		d->destroy_pending = sqlite3_column_int(st, 6);
		ret = 0;
	}
	ksc_finish(k, st);
	return ret;
}

/* Bits of filled key the KSC still holds for the device (not yet used). */
static int64_t outstanding_bits(struct qw_ksc *k, const char *id)
{
	sqlite3_stmt *st = NULL;
	int64_t n = -1;

	if (ksc_prep(k, &st, "SELECT coalesce(sum(slots - next_slot), 0) FROM keys WHERE device = ?"
			     " AND purpose = 'fill' AND state = 'distributed'"))
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0) * QW_KSC_SLOT_BITS;
	ksc_finish(k, st);
	return n;
}

static json_t *device_json(struct qw_ksc *k, const struct ksc_device *d)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:b}", "id", d->id, "kind",
			 d->kind, "owner", d->owner, "status", d->status, "quota_bits",
			 (json_int_t)d->quota_bits, "filled_bits", (json_int_t)d->filled_bits,
			 "outstanding_bits", (json_int_t)outstanding_bits(k, d->id),
			 "reported_balance_bits", (json_int_t)d->balance_bits, "erase_pending",
			 d->destroy_pending);
}

#define CHUNK_SLOTS 64
#define CHUNK_BYTES (CHUNK_SLOTS * QW_KSC_SLOT_BYTES)

int ksc_slot_key(struct qw_ksc *k, const char *device, const char *batch, uint64_t slot,
		 uint8_t key[static QW_KSC_SLOT_BYTES])
{
	sqlite3_stmt *st = NULL;
	uint8_t kek[32], *mat = NULL;
	size_t len = 0;
	char cid[64];
	uint64_t idx = slot / CHUNK_SLOTS;
	int ret = QW_ENOTFOUND;

	if (ksc_device_kek(k, device, kek))
		return QW_ECRYPTO;
	/* only a live fill of this device: destroyed batches have no chunks */
	if (ksc_prep(k, &st, "SELECT c.material FROM fill_chunks c JOIN keys k ON k.id = c.batch"
			     " WHERE c.batch = ? AND c.idx = ? AND k.device = ? AND"
			     " k.purpose = 'fill' AND k.state = 'distributed' AND ? < k.slots")) {
		qw_wipe(kek, sizeof(kek));
		return QW_EDB;
	}
	sqlite3_bind_text(st, 1, batch, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)idx);
	sqlite3_bind_text(st, 3, device, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)slot);
	snprintf(cid, sizeof(cid), "%s#%llu", batch, (unsigned long long)idx);
	if (sqlite3_step(st) == SQLITE_ROW)
		ret = ksc_open_sealed(kek, "chunk", cid, sqlite3_column_blob(st, 0),
				      (size_t)sqlite3_column_bytes(st, 0), &mat, &len);
	ksc_finish(k, st);
	qw_wipe(kek, sizeof(kek));
	if (ret)
		return ret;
	if ((slot % CHUNK_SLOTS + 1) * QW_KSC_SLOT_BYTES > len)
		ret = QW_ERANGE;
	else
		memcpy(key, mat + (slot % CHUNK_SLOTS) * QW_KSC_SLOT_BYTES, QW_KSC_SLOT_BYTES);
	qw_free_secret(mat, len);
	return ret;
}

/* Store a fill: its key row (metadata, state distributed, no material of
 * its own) and the material in sealed chunks. batch gets the new ID. */
static int fill_store(struct qw_ksc *k, const char *device, const uint8_t *mat, size_t n,
		      const char *label, char batch[static 37])
{
	struct qw_uuid u;
	sqlite3_stmt *st = NULL;
	uint8_t kek[32];
	int ret;

	if ((ret = qw_uuid_generate(&u)) || (ret = ksc_device_kek(k, device, kek)))
		return ret;
	qw_uuid_format(&u, batch);
	ret = QW_EDB;
	if (ksc_prep(k, &st, "INSERT INTO keys(id, device, owner, purpose, source, size_bits, state,"
			     " created, updated, slots) VALUES(?1, ?2, ?2, 'fill', ?3, ?4, 'distributed',"
			     " ?5, ?5, ?6)"))
		goto out;
	sqlite3_bind_text(st, 1, batch, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, device, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, label, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)n * 8);
	sqlite3_bind_int64(st, 5, ksc_now());
	sqlite3_bind_int64(st, 6, (sqlite3_int64)(n / QW_KSC_SLOT_BYTES));
	if (sqlite3_step(st) != SQLITE_DONE)
		goto out;
	ksc_finish(k, st);
	st = NULL;
	if (ksc_prep(k, &st, "INSERT INTO fill_chunks(batch, idx, material) VALUES(?, ?, ?)"))
		goto out;
	for (size_t off = 0, idx = 0; off < n; off += CHUNK_BYTES, idx++) {
		size_t len = n - off < CHUNK_BYTES ? n - off : CHUNK_BYTES, sl = 0;
		uint8_t *sealed = NULL;
		char cid[64];

		snprintf(cid, sizeof(cid), "%s#%zu", batch, idx);
		if ((ret = ksc_seal(kek, "chunk", cid, mat + off, len, &sealed, &sl)))
			goto out;
		sqlite3_reset(st);
		sqlite3_bind_text(st, 1, batch, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)idx);
		sqlite3_bind_blob(st, 3, sealed, (int)sl, SQLITE_TRANSIENT);
		free(sealed);
		ret = QW_EDB;
		if (sqlite3_step(st) != SQLITE_DONE)
			goto out;
	}
	ret = 0;
out:
	ksc_finish(k, st);
	qw_wipe(kek, sizeof(kek));
	return ret;
}

int ksc_take_slot(struct qw_ksc *k, const char *device, char batch[static 37], uint64_t *slot,
		  uint8_t key[static QW_KSC_SLOT_BYTES])
{
	sqlite3_stmt *st = NULL;
	int ret = QW_EAGAIN;

	if (ksc_prep(k, &st, "SELECT id, next_slot FROM keys WHERE device = ? AND purpose = 'fill'"
			     " AND state = 'distributed' AND next_slot < slots ORDER BY created, rowid"
			     " LIMIT 1"))
		return QW_EDB;
	sqlite3_bind_text(st, 1, device, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		snprintf(batch, 37, "%s", sqlite3_column_text(st, 0));
		*slot = (uint64_t)sqlite3_column_int64(st, 1);
		ret = 0;
	}
	ksc_finish(k, st);
	st = NULL;
	if (ret)
		return ret;
	if ((ret = ksc_slot_key(k, device, batch, *slot, key)))
		return ret;
	if (ksc_prep(k, &st, "UPDATE keys SET next_slot = next_slot + 1, updated = ? WHERE id = ?")) {
		qw_wipe(key, QW_KSC_SLOT_BYTES);
		return QW_EDB;
	}
	sqlite3_bind_int64(st, 1, ksc_now());
	sqlite3_bind_text(st, 2, batch, -1, SQLITE_STATIC);
	ret = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
	ksc_finish(k, st);
	if (ret)
		qw_wipe(key, QW_KSC_SLOT_BYTES);
	return ret;
}

static int exec_bind(struct qw_ksc *k, const char *sql, const char *a, const char *b)
{
	sqlite3_stmt *st = NULL;
	int ret;

	if (ksc_prep(k, &st, sql))
		return QW_EDB;
	sqlite3_bind_int64(st, 1, ksc_now());
	sqlite3_bind_text(st, 2, a, -1, SQLITE_STATIC);
	if (b)
		sqlite3_bind_text(st, 3, b, -1, SQLITE_STATIC);
	ret = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
	ksc_finish(k, st);
	return ret;
}

/* POST /devices {id, kind, owner, quota_bits} */
static void h_register(struct ksc_req *r)
{
	const char *id = ksc_str(r, "id", 1), *kind = id ? ksc_str(r, "kind", 1) : NULL;
	const char *owner = kind ? ksc_str(r, "owner", 1) : NULL;
	uint64_t quota = 512 * 1024;
	uint8_t mk[QW_KSC_MEDIUM_KEY_BYTES], kek[32], *sealed = NULL;
	size_t slen = 0;
	sqlite3_stmt *st = NULL;
	struct ksc_device d;
	json_t *res = NULL, *det = NULL;
	int ok = 0, rc, ret;

	if (!owner || ksc_uint(r, "quota_bits", QW_KSC_SLOT_BITS, QW_KSC_FILL_MAX_BITS, &quota, 0) < 0)
		return;
	for (int i = 0; kinds[i]; i++)
		ok |= !strcmp(kinds[i], kind);
	if (!ok) {
		ksc_err(r, 400, "kind must be one of server-crypto, pcie-card, sim, usim, tf-card, "
			"sd-card, usb-key, softkey, iot-chip");
		return;
	}
	if (!ksc_id_valid(id) || strlen(owner) < 1 || strlen(owner) > 128) {
		ksc_err(r, 400, "invalid id (1..64 of [A-Za-z0-9._-]) or owner (1..128 characters)");
		return;
	}
	if (ksc_need_role(r, KR_OPERATOR))
		return;
	if (ksc_begin(r->k)) {
		ksc_err(r, 500, "database busy");
		return;
	}
	if ((ret = ksc_random(r->k, mk, sizeof(mk))) || (ret = ksc_device_kek(r->k, id, kek)) ||
	    (ret = ksc_seal(kek, "medium", id, mk, sizeof(mk), &sealed, &slen)))
		goto fail;
	ret = QW_EDB;
	if (ksc_prep(r->k, &st, "INSERT INTO principals(id, kind, role, status, created_by, created)"
				" VALUES(?, 'device', NULL, 'active', ?, ?)"))
		goto fail;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->who.id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, ksc_now());
	rc = sqlite3_step(st);
	ksc_finish(r->k, st);
	st = NULL;
	if (rc == SQLITE_CONSTRAINT) {
		ret = QW_EEXIST;
		goto fail;
	}
	if (rc != SQLITE_DONE ||
	    ksc_prep(r->k, &st, "INSERT INTO devices(id, kind, owner, status, quota_bits, medium_key,"
				" created, updated) VALUES(?, ?, ?, 'active', ?, ?, ?, ?)"))
		goto fail;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, owner, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)quota);
	sqlite3_bind_blob(st, 5, sealed, (int)slen, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, ksc_now());
	sqlite3_bind_int64(st, 7, ksc_now());
	rc = sqlite3_step(st);
	ksc_finish(r->k, st);
	st = NULL;
	if (rc == SQLITE_CONSTRAINT) {
		ret = QW_EEXIST;
		goto fail;
	}
	if (rc != SQLITE_DONE)
		goto fail;
	det = json_pack("{s:s, s:s, s:I, s:s}", "kind", kind, "owner", owner, "quota_bits",
			(json_int_t)quota, "medium_key_source", r->k->source);
	if (ksc_audit(r->k, r->who.id, "device.register", id, det) || ksc_commit(r->k))
		goto fail;
	if (ksc_device_load(r->k, id, &d) || !(res = device_json(r->k, &d)) ||
	    ksc_put_b64(res, "medium_key", mk, sizeof(mk))) {
		ksc_err(r, 500, "out of memory");
		goto out;
	}
	ksc_reply_secret(r, 201, res);
	res = NULL;
	goto out;
fail:
	ksc_rollback(r->k);
	if (ret == QW_EEXIST)
		ksc_err(r, 409, "a principal or device '%s' already exists", id);
	else
		ksc_fail(r, ret, "register");
out:
	json_decref(det);
	json_decref(res);
	free(sealed);
	qw_wipe(mk, sizeof(mk));
	qw_wipe(kek, sizeof(kek));
}

static void h_list(struct ksc_req *r)
{
	sqlite3_stmt *st = NULL;
	json_t *a = json_array();

	if (ksc_need_role(r, KR_AUDITOR)) {
		json_decref(a);
		return;
	}
	if (!a || ksc_prep(r->k, &st, "SELECT id FROM devices ORDER BY created, id")) {
		json_decref(a);
		ksc_err(r, 500, "database error");
		return;
	}
	while (sqlite3_step(st) == SQLITE_ROW) {
		struct ksc_device d;

		if (!ksc_device_load(r->k, (const char *)sqlite3_column_text(st, 0), &d))
			json_array_append_new(a, device_json(r->k, &d));
	}
	ksc_finish(r->k, st);
	ksc_reply(r, 200, json_pack("{s:o}", "devices", a));
}

/* Erase every key of the device (fill batches and anything bound to it). */
static int erase_device_keys(struct qw_ksc *k, const char *id, int64_t *n)
{
	sqlite3_stmt *st = NULL;
	int ret;

	if (ksc_prep(k, &st, "UPDATE keys SET state = 'destroyed', material = NULL, updated = ?"
			     " WHERE device = ? AND state != 'destroyed'"))
		return QW_EDB;
	sqlite3_bind_int64(st, 1, ksc_now());
	sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
	ret = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
	*n = sqlite3_changes(k->db);
	ksc_finish(k, st);
	st = NULL;
	if (!ret && !ksc_prep(k, &st, "DELETE FROM fill_chunks WHERE batch IN"
				      " (SELECT id FROM keys WHERE device = ?)")) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		ret = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
	}
	ksc_finish(k, st);
	st = NULL;
	/* and the access point's carried frame pool for it (ksc_air.c) */
	if (!ret && !ksc_prep(k, &st, "DELETE FROM air_carry WHERE device = ?")) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		ret = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
	}
	ksc_finish(k, st);
	st = NULL;
	/* keys generated for the device (owner) are withdrawn too: revoked,
	 * so that not even a backup brings them back */
	if (!ret && !ksc_prep(k, &st, "UPDATE keys SET state = 'revoked', material = NULL,"
				      " updated = ? WHERE owner = ? AND device IS NULL AND"
				      " state IN ('active', 'distributed')")) {
		sqlite3_bind_int64(st, 1, ksc_now());
		sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
		ret = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
		*n += sqlite3_changes(k->db);
	}
	ksc_finish(k, st);
	return ret;
}

static void h_action(struct ksc_req *r, struct ksc_device *d, const char *act)
{
	const char *to = NULL, *reason = ksc_str(r, "reason", 0);
	int ok = 0;
	int64_t erased = 0;
	json_t *det;
	char action[32];

	if (r->resp->body)
		return;
	if (ksc_need_role(r, KR_OPERATOR))
		return;
	if (!strcmp(act, "suspend")) {
		to = "suspended";
		ok = !strcmp(d->status, "active");
	} else if (!strcmp(act, "resume")) {
		to = "active";
		ok = !strcmp(d->status, "suspended");
	} else if (!strcmp(act, "retire")) {
		to = "retired";
		ok = !strcmp(d->status, "active") || !strcmp(d->status, "suspended");
	} else { /* destroy: lost or stolen */
		to = "lost";
		ok = !strcmp(d->status, "active") || !strcmp(d->status, "suspended");
	}
	if (!ok) {
		ksc_err(r, 409, "device %s is %s: cannot %s it", d->id, d->status, act);
		return;
	}
	if (ksc_begin(r->k)) {
		ksc_err(r, 500, "database busy");
		return;
	}
	if (exec_bind(r->k, !strcmp(act, "destroy") ?
				    "UPDATE devices SET status = 'lost', destroy_pending = 1,"
				    " updated = ?1 WHERE id = ?2" :
				    "UPDATE devices SET status = ?3, updated = ?1 WHERE id = ?2",
		      d->id, !strcmp(act, "destroy") ? NULL : to))
		goto fail;
	if ((!strcmp(act, "destroy") || !strcmp(act, "retire")) &&
	    erase_device_keys(r->k, d->id, &erased))
		goto fail;
	if (!strcmp(act, "retire") &&
	    exec_bind(r->k, "UPDATE principals SET status = 'revoked'"
			    " WHERE id = ?2 AND ?1 IS NOT NULL", d->id, NULL))
		goto fail;
	det = json_pack("{s:s, s:s, s:I, s:s?}", "from", d->status, "to", to, "keys_erased",
			(json_int_t)erased, "reason", reason);
	snprintf(action, sizeof(action), "device.%s", act);
	if (ksc_audit(r->k, r->who.id, action, d->id, det) || ksc_commit(r->k)) {
		json_decref(det);
		goto fail;
	}
	json_decref(det);
	if (ksc_device_load(r->k, d->id, d)) {
		ksc_err(r, 500, "database error");
		return;
	}
	ksc_reply(r, 200, device_json(r->k, d));
	return;
fail:
	ksc_rollback(r->k);
	ksc_err(r, 500, "database error");
}

/* POST /devices/{id}/fill {bits}: an image for the device's secure medium
 * (offline filling at a service point). */
static void h_fill(struct ksc_req *r, struct ksc_device *d)
{
	uint64_t bits = 0;
	int64_t out;
	uint8_t mk[QW_KSC_MEDIUM_KEY_BYTES], kek[32], *mat = NULL, *mkp = NULL;
	size_t n = 0, mkl = 0, ilen = 0;
	char batch[37], *img = NULL;
	const char *label = NULL;
	sqlite3_stmt *st = NULL;
	json_t *det = NULL, *res = NULL;
	int ret = QW_EDB;

	if (ksc_uint(r, "bits", QW_KSC_SLOT_BITS, QW_KSC_FILL_MAX_BITS, &bits, 1) < 0 ||
	    ksc_need_role(r, KR_OPERATOR))
		return;
	if (bits % QW_KSC_SLOT_BITS) {
		ksc_err(r, 400, "bits must be a multiple of %u", QW_KSC_SLOT_BITS);
		return;
	}
	if (strcmp(d->status, "active")) {
		ksc_err(r, 409, "device %s is %s: only an active device is filled", d->id, d->status);
		return;
	}
	out = outstanding_bits(r->k, d->id);
	if (out < 0 || (uint64_t)out + bits > d->quota_bits) {
		ksc_err(r, 409, "device %s holds %lld bits; %llu more exceed its quota of %llu bits",
			d->id, (long long)out, (unsigned long long)bits,
			(unsigned long long)d->quota_bits);
		return;
	}
	n = (size_t)(bits / 8);
	mat = qw_secure_alloc(n);
	if (!mat) {
		ksc_err(r, 500, "out of memory");
		return;
	}
	if (ksc_begin(r->k))
		goto fail;
	if ((ret = ksc_key_material(r->k, ksc_str(r, "source", 0), mat, n, &label)) ||
	    (ret = fill_store(r->k, d->id, mat, n, label, batch)))
		goto fail;
	ret = QW_EDB;
	if (ksc_device_kek(r->k, d->id, kek) ||
	    ksc_prep(r->k, &st, "SELECT medium_key FROM devices WHERE id = ?"))
		goto fail;
	sqlite3_bind_text(st, 1, d->id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_ROW ||
	    ksc_open_sealed(kek, "medium", d->id, sqlite3_column_blob(st, 0),
			    (size_t)sqlite3_column_bytes(st, 0), &mkp, &mkl) ||
	    mkl != sizeof(mk)) {
		ret = QW_EAUTH;
		goto fail;
	}
	memcpy(mk, mkp, sizeof(mk));
	ksc_finish(r->k, st);
	st = NULL;
	if ((ret = qw_ksc_image_seal(d->id, batch, mat, n, mk, &img, &ilen)))
		goto fail;
	ret = QW_EDB;
	{
		sqlite3_stmt *u = NULL;

		if (ksc_prep(r->k, &u, "UPDATE devices SET filled_bits = filled_bits + ?, updated = ?"
				       " WHERE id = ?"))
			goto fail;
		sqlite3_bind_int64(u, 1, (sqlite3_int64)bits);
		sqlite3_bind_int64(u, 2, ksc_now());
		sqlite3_bind_text(u, 3, d->id, -1, SQLITE_STATIC);
		ret = sqlite3_step(u) == SQLITE_DONE ? 0 : QW_EDB;
		ksc_finish(r->k, u);
		if (ret)
			goto fail;
	}
	det = json_pack("{s:s, s:I, s:s}", "batch", batch, "bits", (json_int_t)bits, "source",
			label);
	if ((ret = ksc_audit(r->k, r->who.id, "device.fill", d->id, det)) ||
	    (ret = ksc_commit(r->k)))
		goto fail;
	res = json_pack("{s:s, s:s, s:I, s:s}", "device", d->id, "batch", batch, "bits",
			(json_int_t)bits, "source", label);
	if (!res || json_object_set_new(res, "image", json_stringn(img, ilen))) {
		ksc_err(r, 500, "out of memory");
		goto out;
	}
	snprintf(r->resp->note, sizeof(r->resp->note), "fill bits=%llu", (unsigned long long)bits);
	/* the image is ciphertext, but it is still sent and wiped as a secret */
	ksc_reply_secret(r, 201, res);
	res = NULL;
	goto out;
fail:
	ksc_finish(r->k, st);
	ksc_rollback(r->k);
	ksc_fail(r, ret, "fill");
out:
	json_decref(det);
	json_decref(res);
	qw_secure_free(mat, n);
	if (mkp)
		qw_free_secret(mkp, mkl);
	if (img)
		qw_free_secret(img, ilen);
	qw_wipe(mk, sizeof(mk));
	qw_wipe(kek, sizeof(kek));
}

/* The device's own calls: GET sync, POST erased, POST balance. */
static void h_self(struct ksc_req *r, struct ksc_device *d, const char *act)
{
	uint64_t bits = 0;
	json_t *det;

	if (r->who.kind != KP_DEVICE || strcmp(r->who.id, d->id)) {
		ksc_err(r, 403, "only device %s itself may call %s", d->id, act);
		return;
	}
	if (!strcmp(act, "sync")) {
		ksc_reply(r, 200, json_pack("{s:s, s:s, s:b, s:I}", "device", d->id, "status",
					    d->status, "erase", d->destroy_pending,
					    "outstanding_bits",
					    (json_int_t)outstanding_bits(r->k, d->id)));
		return;
	}
	if (!strcmp(act, "erased")) {
		if (!d->destroy_pending) {
			ksc_err(r, 409, "no erase is pending for device %s", d->id);
			return;
		}
		if (ksc_begin(r->k) ||
		    exec_bind(r->k, "UPDATE devices SET destroy_pending = 0, balance_bits = 0,"
				    " updated = ?1 WHERE id = ?2", d->id, NULL) ||
		    exec_bind(r->k, "UPDATE principals SET status = 'revoked'"
				    " WHERE id = ?2 AND ?1 IS NOT NULL", d->id, NULL) ||
		    ksc_audit(r->k, d->id, "device.erased", d->id, NULL) || ksc_commit(r->k)) {
			ksc_rollback(r->k);
			ksc_err(r, 500, "database error");
			return;
		}
		ksc_reply(r, 200, json_pack("{s:s, s:s, s:b}", "device", d->id, "status", "lost",
					    "erase", 0));
		return;
	}
	/* balance */
	if (ksc_uint(r, "bits", 0, QW_KSC_FILL_MAX_BITS * 16ull, &bits, 1) < 0)
		return;
	det = json_pack("{s:I}", "bits", (json_int_t)bits);
	if (ksc_begin(r->k)) {
		json_decref(det);
		ksc_err(r, 500, "database busy");
		return;
	}
	{
		sqlite3_stmt *st = NULL;
		int rc = QW_EDB;

		if (!ksc_prep(r->k, &st, "UPDATE devices SET balance_bits = ?, updated = ? WHERE id = ?")) {
			sqlite3_bind_int64(st, 1, (sqlite3_int64)bits);
			sqlite3_bind_int64(st, 2, ksc_now());
			sqlite3_bind_text(st, 3, d->id, -1, SQLITE_STATIC);
			rc = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
		}
		ksc_finish(r->k, st);
		if (rc || ksc_audit(r->k, d->id, "device.balance", d->id, det) || ksc_commit(r->k)) {
			json_decref(det);
			ksc_rollback(r->k);
			ksc_err(r, 500, "database error");
			return;
		}
	}
	json_decref(det);
	ksc_reply(r, 200, json_pack("{s:s, s:I, s:b}", "device", d->id, "reported_balance_bits",
				    (json_int_t)bits, "erase", d->destroy_pending));
}

void ksc_h_devices(struct ksc_req *r)
{
	struct ksc_device d;
	int get = !strcmp(r->method, "GET"), post = !strcmp(r->method, "POST");
	int ret;

	if (r->nseg == 1) {
		if (post)
			h_register(r);
		else if (get)
			h_list(r);
		else
			ksc_err(r, 405, "devices: GET or POST");
		return;
	}
	if (r->nseg > 3) {
		ksc_err(r, 404, "no such endpoint");
		return;
	}
	ret = ksc_device_load(r->k, r->seg[1], &d);
	if (ret) {
		if (ret == QW_ENOTFOUND)
			ksc_err(r, 404, "no device '%.64s'", r->seg[1]);
		else
			ksc_err(r, 500, "database error");
		return;
	}
	if (r->nseg == 2) {
		if (!get) {
			ksc_err(r, 405, "a device is read with GET");
			return;
		}
		if (r->who.kind != KP_ADMIN && strcmp(r->who.id, d.id)) {
			ksc_err(r, 403, "not your device");
			return;
		}
		ksc_reply(r, 200, device_json(r->k, &d));
		return;
	}
	if (!strcmp(r->seg[2], "sync")) {
		if (!get)
			ksc_err(r, 405, "sync is GET");
		else
			h_self(r, &d, "sync");
		return;
	}
	if (!post) {
		ksc_err(r, 405, "device actions are POST");
		return;
	}
	if (!strcmp(r->seg[2], "suspend") || !strcmp(r->seg[2], "resume") ||
	    !strcmp(r->seg[2], "retire") || !strcmp(r->seg[2], "destroy"))
		h_action(r, &d, r->seg[2]);
	else if (!strcmp(r->seg[2], "fill"))
		h_fill(r, &d);
	else if (!strcmp(r->seg[2], "erased") || !strcmp(r->seg[2], "balance"))
		h_self(r, &d, r->seg[2]);
	else
		ksc_err(r, 404, "no such endpoint");
}
