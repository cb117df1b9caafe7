/* The air interface: the Key Service Center as the access point of
 * over-the-air refill (ksc.h qw_ksc_air_serve, docs/ksc.md "Air interface",
 * docs/plkg.md section 12).
 *
 * The KSC holds what the access point needs without trusting the terminal's
 * word for any of it: the device's pre-filled slots (its own sealed copy of
 * the offline fill, fill_chunks), the slot cursor that makes every slot
 * single-use across challenges, session keys and refills (keys.next_slot),
 * the carried frame pool of the device's last refill (air_carry, sealed
 * under the device's KEK) and the keys it delivers (its own key life cycle:
 * generated, audited, distributed or destroyed). The lock of struct qw_ksc
 * is held for those database steps only, never while probing and
 * distilling, so the REST API keeps answering during a refill. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "ksc_internal.h"
#include "qwave/secmem.h"

#define MAGIC_BYTES 6
#define CARRY_SEALED_BYTES (QW_REFILL_CARRY_ID_BYTES + QW_REFILL_PSK_BYTES)

int qw_ksc_air_hello(const char *device, uint64_t air_seed,
		     uint8_t out[static QW_KSC_AIR_HELLO_BYTES])
{
	QW_REQUIRE(device && out);
	if (!ksc_id_valid(device))
		return QW_EINVAL;
	memset(out, 0, QW_KSC_AIR_HELLO_BYTES);
	memcpy(out, "QWRI1\n", MAGIC_BYTES);
	memcpy(out + MAGIC_BYTES, device, strlen(device));
	for (int i = 0; i < 8; i++)
		out[MAGIC_BYTES + QW_KSC_ID_MAX + i] = (uint8_t)(air_seed >> (56 - 8 * i));
	return 0;
}

static int io_read_full(const struct qw_frame_io *io, uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = io->read(io->ctx, p, n);

		if (r == 0)
			return QW_ECLOSED;
		if (r < 0)
			return (int)r;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int io_write_full(const struct qw_frame_io *io, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = io->write(io->ctx, p, n);

		if (w <= 0)
			return w ? (int)w : QW_EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* One audit record in its own transaction (refusals and outcomes that are
 * not part of another transaction). */
static int audit_alone(struct qw_ksc *k, const char *actor, const char *action,
		       const char *object, json_t *detail)
{
	int ret = ksc_begin(k);

	if (!ret)
		ret = ksc_audit(k, actor, action, object, detail);
	if (!ret)
		ret = ksc_commit(k);
	if (ret)
		ksc_rollback(k);
	return ret;
}

static void refuse(struct qw_ksc *k, const char *peer, const char *device, const char *why,
		   struct qw_ksc_air_result *res)
{
	json_t *d = json_pack("{s:s, s:s}", "peer", peer, "reason", why);

	(void)audit_alone(k, "air", "air.refuse", device[0] ? device : "-", d);
	json_decref(d);
	snprintf(res->refill.reason, sizeof(res->refill.reason), "refused: %s", why);
}

/* ---- the carried pool of a device --------------------------------------- */

/* Take (and delete, in its own committed transaction) the device's carried
 * pool; c->valid = 0 when there is none or it does not open. */
static int carry_take(struct qw_ksc *k, const char *device, struct qw_refill_carry *c)
{
	sqlite3_stmt *st = NULL;
	uint8_t kek[32], *pt = NULL;
	size_t len = 0;
	int ret;

	memset(c, 0, sizeof(*c));
	if ((ret = ksc_begin(k)))
		return ret;
	ret = QW_EDB;
	if (ksc_device_kek(k, device, kek))
		goto out;
	if (ksc_prep(k, &st, "SELECT sealed FROM air_carry WHERE device = ?"))
		goto out;
	sqlite3_bind_text(st, 1, device, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW &&
	    !ksc_open_sealed(kek, "air-carry", device, sqlite3_column_blob(st, 0),
			     (size_t)sqlite3_column_bytes(st, 0), &pt, &len) &&
	    len == CARRY_SEALED_BYTES) {
		memcpy(c->id, pt, QW_REFILL_CARRY_ID_BYTES);
		memcpy(c->pool, pt + QW_REFILL_CARRY_ID_BYTES, QW_REFILL_PSK_BYTES);
		c->valid = 1;
	}
	ksc_finish(k, st);
	st = NULL;
	/* spent before any frame goes under it, whatever the outcome */
	if (ksc_prep(k, &st, "DELETE FROM air_carry WHERE device = ?"))
		goto out;
	sqlite3_bind_text(st, 1, device, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto out;
	ksc_finish(k, st);
	st = NULL;
	ret = ksc_commit(k);
out:
	ksc_finish(k, st);
	if (ret) {
		ksc_rollback(k);
		qw_wipe(c, sizeof(*c));
	}
	if (pt)
		qw_free_secret(pt, len);
	qw_wipe(kek, sizeof(kek));
	return ret;
}

/* Store the next pool (inside the caller's transaction). */
static int carry_put(struct qw_ksc *k, const char *device, const struct qw_refill_carry *c)
{
	uint8_t kek[32], pt[CARRY_SEALED_BYTES], *sealed = NULL;
	size_t slen = 0;
	sqlite3_stmt *st = NULL;
	int ret;

	if ((ret = ksc_device_kek(k, device, kek)))
		return ret;
	memcpy(pt, c->id, QW_REFILL_CARRY_ID_BYTES);
	memcpy(pt + QW_REFILL_CARRY_ID_BYTES, c->pool, QW_REFILL_PSK_BYTES);
	ret = ksc_seal(kek, "air-carry", device, pt, sizeof(pt), &sealed, &slen);
	qw_wipe(pt, sizeof(pt));
	qw_wipe(kek, sizeof(kek));
	if (ret)
		return ret;
	ret = QW_EDB;
	if (!ksc_prep(k, &st, "INSERT OR REPLACE INTO air_carry(device, sealed, updated)"
			      " VALUES(?, ?, ?)")) {
		sqlite3_bind_text(st, 1, device, -1, SQLITE_STATIC);
		sqlite3_bind_blob(st, 2, sealed, (int)slen, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, ksc_now());
		if (sqlite3_step(st) == SQLITE_DONE)
			ret = 0;
	}
	ksc_finish(k, st);
	free(sealed);
	return ret;
}

/* ---- the named pre-filled slots ------------------------------------------ */

/* Check the named slots against the device's fills and the cursor, copy
 * their keys into psk and move the cursor past them, with an air.slots
 * record, in one committed transaction. *why gets a reason on refusal
 * (QW_EPERM). The terminal has proved nothing yet (its frames will), so the
 * record's actor is "air", not the device. Names are taken in order and each moves its fill's cursor, so
 * the same slot named twice, or a lower one after a higher, is refused too. */
static int spend_slots(struct qw_ksc *k, const char *peer, const char *device,
		       const uint8_t *names, uint8_t *psk, const char **why)
{
	json_t *list = json_array(), *d = NULL;
	int ret;

	if (!list)
		return QW_ENOMEM;
	if ((ret = ksc_begin(k))) {
		json_decref(list);
		return ret;
	}
	for (size_t i = 0; i < QW_KSC_AIR_SLOTS && !ret; i++) {
		const uint8_t *nm = names + i * QW_KSC_AIR_NAME_BYTES;
		uint64_t slot = be64(nm + 36), next = 0;
		sqlite3_stmt *st = NULL;
		char batch[37];
		int found = 0;

		memcpy(batch, nm, 36);
		batch[36] = '\0';
		if (strlen(batch) != 36 || slot > INT64_MAX - 1) {
			*why = "malformed slot name";
			ret = QW_EPERM;
			break;
		}
		if (ksc_prep(k, &st, "SELECT next_slot FROM keys WHERE id = ? AND device = ? AND"
				     " purpose = 'fill' AND state = 'distributed'")) {
			ret = QW_EDB;
			break;
		}
		sqlite3_bind_text(st, 1, batch, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, device, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_ROW) {
			next = (uint64_t)sqlite3_column_int64(st, 0);
			found = 1;
		}
		ksc_finish(k, st);
		st = NULL;
		if (!found) {
			*why = "a named slot is not of a live fill of this device";
			ret = QW_EPERM;
			break;
		}
		if (slot < next) {
			*why = "a named slot was spent before";
			ret = QW_EPERM;
			break;
		}
		ret = ksc_slot_key(k, device, batch, slot, psk + i * QW_KSC_SLOT_BYTES);
		if (ret) {
			if (ret == QW_ENOTFOUND || ret == QW_ERANGE) {
				*why = "a named slot is beyond its fill";
				ret = QW_EPERM;
			}
			break;
		}
		ret = QW_EDB;
		if (ksc_prep(k, &st, "UPDATE keys SET next_slot = ?, updated = ? WHERE id = ?"))
			break;
		sqlite3_bind_int64(st, 1, (sqlite3_int64)(slot + 1));
		sqlite3_bind_int64(st, 2, ksc_now());
		sqlite3_bind_text(st, 3, batch, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_DONE)
			ret = 0;
		ksc_finish(k, st);
		if (!ret && json_array_append_new(list, json_pack("{s:s, s:I}", "batch", batch,
								  "slot", (json_int_t)slot)))
			ret = QW_ENOMEM;
	}
	if (!ret) {
		d = json_pack("{s:s, s:O}", "peer", peer, "slots", list);
		ret = !d ? QW_ENOMEM : ksc_audit(k, "air", "air.slots", device, d);
	}
	if (!ret)
		ret = ksc_commit(k);
	if (ret) {
		ksc_rollback(k);
		qw_wipe(psk, QW_REFILL_PSK_BYTES);
	}
	json_decref(d);
	json_decref(list);
	return ret;
}

/* ---- the keys delivered -------------------------------------------------- */

struct air_src {
	struct qw_ksc *k;
	const char *device;
	char key_id[37];
	const char *label;
	uint64_t bits;
};

/* The key source of qw_refill_ap_carry: one KSC key for the device, from
 * the QKD pool when a KME is configured, else the entropy source. It is
 * called once the PLKG key exists, i.e. after the terminal authenticated
 * every frame under the device's slots or carried pool: the device is the
 * actor. */
static int air_get(void *ctx, uint8_t *out, size_t n)
{
	struct air_src *s = ctx;
	struct qw_ksc *k = s->k;
	const char *source = k->qkd ? "qkd" : NULL;
	json_t *d = NULL;
	int ret;

	if (s->key_id[0])
		return QW_ESTATE; /* one delivery per refill */
	if (!n || n > QW_KSC_KEY_MAX_BITS / 8)
		return QW_ERANGE;
	pthread_mutex_lock(&k->mu);
	if ((ret = ksc_begin(k)))
		goto out;
	ret = ksc_key_material(k, source, out, n, &s->label);
	if (!ret)
		ret = ksc_key_create(k, s->device, s->device, "refill", NULL, source,
				     (uint64_t)n * 8, 0, "active", 0, out, s->key_id, &s->label);
	if (!ret) {
		d = json_pack("{s:I, s:s, s:s, s:s, s:s}", "size_bits", (json_int_t)n * 8, "source",
			      s->label, "owner", s->device, "purpose", "refill", "via", "air");
		ret = !d ? QW_ENOMEM : ksc_audit(k, s->device, "key.generate", s->key_id, d);
	}
	if (!ret)
		ret = ksc_commit(k);
	if (ret) {
		ksc_rollback(k);
		s->key_id[0] = '\0';
		qw_wipe(out, n);
	} else {
		s->bits = (uint64_t)n * 8;
	}
out:
	pthread_mutex_unlock(&k->mu);
	json_decref(d);
	return ret;
}

/* The outcome, in one transaction: the key distributed to the device (and
 * the next pool stored), or destroyed when the terminal never acknowledged
 * it. */
static int record(struct qw_ksc *k, const struct air_src *s, int ok,
		  const struct qw_ksc_air_result *res, const struct qw_refill_carry *next)
{
	sqlite3_stmt *st = NULL;
	json_t *d = NULL;
	const struct qw_refill_result *r = &res->refill;
	int ret;

	if ((ret = ksc_begin(k)))
		return ret;
	if (s->key_id[0]) {
		ret = QW_EDB;
		if (ksc_prep(k, &st, ok ? "UPDATE keys SET state = 'distributed', updated = ?"
					  " WHERE id = ? AND state = 'active'" :
					  "UPDATE keys SET state = 'destroyed', material = NULL,"
					  " updated = ? WHERE id = ?"))
			goto out;
		sqlite3_bind_int64(st, 1, ksc_now());
		sqlite3_bind_text(st, 2, s->key_id, -1, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE || sqlite3_changes(k->db) != 1)
			goto out;
		if (ok)
			d = json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:b}", "via", "air", "device",
				      s->device, "bits", (json_int_t)s->bits, "plkg_key_bits",
				      (json_int_t)r->plkg_bits, "probes", (json_int_t)r->probes,
				      "frame_pool", res->carried ? "carried" : "pre-filled slots",
				      "remedy", r->remedy);
		else
			d = json_pack("{s:s, s:s}", "via", "air", "reason",
				      r->reason[0] ? r->reason : "refill failed");
		ret = !d ? QW_ENOMEM :
			   ksc_audit(k, ok ? s->device : "air", ok ? "key.distribute" : "key.destroy",
				     s->key_id, d);
		if (ret)
			goto out;
		json_decref(d);
		d = NULL;
	}
	if (!ok) {
		d = json_pack("{s:s, s:s}", "reason", r->reason[0] ? r->reason : "refill failed",
			      "frame_pool", res->carried ? "carried" : "pre-filled slots");
		if (!d || (ret = ksc_audit(k, "air", "air.fail", s->device, d))) {
			ret = d ? ret : QW_ENOMEM;
			goto out;
		}
	}
	if (ok && next->valid && (ret = carry_put(k, s->device, next)))
		goto out;
	ret = ksc_commit(k);
out:
	ksc_finish(k, st);
	if (ret)
		ksc_rollback(k);
	json_decref(d);
	return ret;
}

int qw_ksc_air_serve(struct qw_ksc *k, const struct qw_frame_io *io, const char *peer,
		     const struct qw_refill_params *p, uint64_t max_bits,
		     struct qw_ksc_air_result *res)
{
	struct qw_ksc_air_result local;
	struct qw_refill_params prm;
	struct qw_refill_carry cur, next;
	struct air_src src;
	struct qw_refill_source rs = { &src, air_get };
	struct ksc_device dev;
	uint8_t hello[QW_KSC_AIR_HELLO_BYTES], pre[QW_KSC_AIR_PREAMBLE_BYTES];
	uint8_t psk[QW_REFILL_PSK_BYTES], verdict = 1;
	const char *why = NULL;
	char device[QW_KSC_ID_MAX + 1];
	int ret, locked = 0;

	QW_REQUIRE(k && io);
	if (!res)
		res = &local;
	memset(res, 0, sizeof(*res));
	memset(&src, 0, sizeof(src));
	memset(&cur, 0, sizeof(cur));
	memset(&next, 0, sizeof(next));
	if (!peer)
		peer = "-";
	if (p)
		prm = *p;
	else
		qw_refill_params_default(&prm);

	if ((ret = io_read_full(io, hello, sizeof(hello))))
		goto out;
	memcpy(device, hello + MAGIC_BYTES, QW_KSC_ID_MAX);
	device[QW_KSC_ID_MAX] = '\0';
	pthread_mutex_lock(&k->mu);
	locked = 1;
	if (memcmp(hello, "QWRI1\n", MAGIC_BYTES) || !ksc_id_valid(device)) {
		refuse(k, peer, "", "malformed hello", res);
		ret = QW_EPROTO;
		goto out;
	}
	snprintf(res->device, sizeof(res->device), "%s", device);
	prm.air_seed = be64(hello + MAGIC_BYTES + QW_KSC_ID_MAX);
	ret = ksc_device_load(k, device, &dev);
	if (ret == QW_ENOTFOUND || (!ret && strcmp(dev.status, "active"))) {
		refuse(k, peer, device, ret ? "unknown device" : "device not active", res);
		ret = QW_EPERM;
		pthread_mutex_unlock(&k->mu);
		locked = 0;
		(void)io_write_full(io, &verdict, 1);
		goto out;
	}
	if (ret)
		goto out;
	pthread_mutex_unlock(&k->mu);
	locked = 0;
	verdict = 0;
	if ((ret = io_write_full(io, &verdict, 1)) || (ret = io_read_full(io, pre, sizeof(pre))))
		goto out;

	pthread_mutex_lock(&k->mu);
	locked = 1;
	if (!memcmp(pre, "QWRC1\n", MAGIC_BYTES)) {
		/* the terminal offers its carried pool by id: ours is spent now
		 * whether or not it matches */
		if ((ret = carry_take(k, device, &cur)))
			goto out;
		verdict = cur.valid && !CRYPTO_memcmp(cur.id, pre + MAGIC_BYTES,
						       QW_REFILL_CARRY_ID_BYTES) ? 0 : 1;
		if (!verdict)
			memcpy(psk, cur.pool, sizeof(psk));
		qw_wipe(&cur, sizeof(cur));
		pthread_mutex_unlock(&k->mu);
		locked = 0;
		if ((ret = io_write_full(io, &verdict, 1)) ||
		    (verdict && (ret = io_read_full(io, pre, sizeof(pre)))))
			goto out;
		pthread_mutex_lock(&k->mu);
		locked = 1;
		res->carried = !verdict;
	} else if ((ret = carry_take(k, device, &cur))) {
		goto out;
	}
	qw_wipe(&cur, sizeof(cur));
	if (!res->carried) {
		if (memcmp(pre, "QWRF1\n", MAGIC_BYTES)) {
			refuse(k, peer, device, "malformed preamble", res);
			ret = QW_EPROTO;
			goto out;
		}
		ret = spend_slots(k, peer, device, pre + MAGIC_BYTES, psk, &why);
		if (ret == QW_EPERM)
			refuse(k, peer, device, why, res);
		pthread_mutex_unlock(&k->mu);
		locked = 0;
		verdict = ret ? 1 : 0;
		if (ret == QW_EPERM || !ret) {
			int wr = io_write_full(io, &verdict, 1);

			ret = ret ? ret : wr;
		}
		if (ret)
			goto out;
		res->slot_bits = QW_REFILL_PSK_BYTES * 8;
	} else {
		pthread_mutex_unlock(&k->mu);
		locked = 0;
	}

	src.k = k;
	src.device = device;
	ret = qw_refill_ap_carry(&prm, io, psk, sizeof(psk), max_bits, &rs, &next, &res->refill);
	qw_wipe(psk, sizeof(psk));
	pthread_mutex_lock(&k->mu);
	locked = 1;
	{
		int rr = record(k, &src, !ret, res, &next);

		if (!ret && rr) {
			ret = rr;
			snprintf(res->refill.reason, sizeof(res->refill.reason), "%s",
				 "delivered, but the KSC could not record it");
		}
	}
	if (!ret)
		snprintf(res->key_id, sizeof(res->key_id), "%s", src.key_id);
out:
	if (locked)
		pthread_mutex_unlock(&k->mu);
	if (ret && !res->refill.reason[0])
		snprintf(res->refill.reason, sizeof(res->refill.reason), "%s", qw_strerror(ret));
	qw_wipe(psk, sizeof(psk));
	qw_wipe(&cur, sizeof(cur));
	qw_wipe(&next, sizeof(next));
	qw_wipe(hello, sizeof(hello));
	return ret;
}
