/* The Key Service Center's database (SQLite, WAL), its key hierarchy and
 * its audit log. Schema and rationale: docs/ksc.md. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "ksc_internal.h"
#include "qwave/aead.h"
#include "qwave/entropy.h"
#include "qwave/hash.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

#define SCHEMA_VERSION "1"

static const char schema[] =
	"CREATE TABLE meta(k TEXT PRIMARY KEY, v BLOB NOT NULL);"
	"CREATE TABLE principals(id TEXT PRIMARY KEY, kind TEXT NOT NULL, role TEXT,"
	" status TEXT NOT NULL, created_by TEXT, created INTEGER NOT NULL);"
	"CREATE TABLE devices(id TEXT PRIMARY KEY, kind TEXT NOT NULL, owner TEXT NOT NULL,"
	" status TEXT NOT NULL, quota_bits INTEGER NOT NULL, filled_bits INTEGER NOT NULL DEFAULT 0,"
	" balance_bits INTEGER NOT NULL DEFAULT 0, medium_key BLOB NOT NULL,"
	" destroy_pending INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL, updated INTEGER NOT NULL);"
	"CREATE TABLE keys(id TEXT PRIMARY KEY, device TEXT, owner TEXT, purpose TEXT NOT NULL,"
	" source TEXT NOT NULL, alg TEXT, size_bits INTEGER NOT NULL, state TEXT NOT NULL,"
	" created INTEGER NOT NULL, updated INTEGER NOT NULL, expires INTEGER NOT NULL DEFAULT 0,"
	" material BLOB, slots INTEGER NOT NULL DEFAULT 0, next_slot INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX keys_device ON keys(device, purpose, state);"
	/* a fill batch's material, in chunks of 64 slots (2 KiB): taking a
	 * slot opens one chunk, not the whole fill */
	"CREATE TABLE fill_chunks(batch TEXT NOT NULL, idx INTEGER NOT NULL, material BLOB NOT NULL,"
	" PRIMARY KEY(batch, idx));"
	"CREATE TABLE backups(key_id TEXT PRIMARY KEY, threshold INTEGER NOT NULL, n INTEGER NOT NULL,"
	" blob BLOB NOT NULL, created INTEGER NOT NULL);"
	"CREATE TABLE custody(key_id TEXT NOT NULL, admin TEXT NOT NULL, share BLOB,"
	" PRIMARY KEY(key_id, admin));"
	"CREATE TABLE recovery(key_id TEXT NOT NULL, admin TEXT NOT NULL, share BLOB NOT NULL,"
	" PRIMARY KEY(key_id, admin));"
	"CREATE TABLE challenges(id TEXT PRIMARY KEY, device TEXT NOT NULL,"
	" subject TEXT NOT NULL DEFAULT 'device', method TEXT NOT NULL,"
	" nonce BLOB NOT NULL, batch TEXT, slot INTEGER, expires INTEGER NOT NULL);"
	"CREATE TABLE groups(id TEXT PRIMARY KEY, owner TEXT NOT NULL, epoch INTEGER NOT NULL,"
	" created INTEGER NOT NULL);"
	/* which devices an application may involve (sessions, groups,
	 * challenges) */
	"CREATE TABLE grants(app TEXT NOT NULL, device TEXT NOT NULL, PRIMARY KEY(app, device));"
	"CREATE TABLE group_members(grp TEXT NOT NULL, device TEXT NOT NULL, PRIMARY KEY(grp, device));"
	"CREATE TABLE certs(serial TEXT PRIMARY KEY, subject TEXT NOT NULL, kind TEXT NOT NULL,"
	" alg TEXT NOT NULL, status TEXT NOT NULL, issued INTEGER NOT NULL, revoked INTEGER);"
	"CREATE TABLE audit(seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, actor TEXT NOT NULL,"
	" action TEXT NOT NULL, object TEXT NOT NULL, detail TEXT NOT NULL, prev BLOB NOT NULL,"
	" hash BLOB NOT NULL);" KSC_AIR_SCHEMA;

int64_t ksc_now(void)
{
	return (int64_t)time(NULL);
}

/* One statement, through the cache. */
int ksc_exec(struct qw_ksc *k, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int ret;

	if (ksc_prep(k, &st, sql))
		return QW_EDB;
	ret = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
	ksc_finish(k, st);
	return ret;
}

int ksc_begin(struct qw_ksc *k)
{
	return ksc_exec(k, "BEGIN IMMEDIATE");
}

int ksc_commit(struct qw_ksc *k)
{
	if (ksc_exec(k, "COMMIT")) {
		ksc_rollback(k);
		return QW_EDB;
	}
	return 0;
}

void ksc_rollback(struct qw_ksc *k)
{
	if (!sqlite3_get_autocommit(k->db) && ksc_exec(k, "ROLLBACK"))
		sqlite3_exec(k->db, "ROLLBACK", NULL, NULL, NULL);
}

int ksc_prep(struct qw_ksc *k, sqlite3_stmt **st, const char *sql)
{
	int cached = 0;

	for (size_t i = 0; i < k->nstmts; i++) {
		if (k->stmts[i].sql != sql)
			continue;
		if (!k->stmts[i].in_use) {
			k->stmts[i].in_use = 1;
			*st = k->stmts[i].st;
			return 0;
		}
		cached = 1; /* in use (a nested use): a private copy below */
	}
	*st = NULL;
	if (sqlite3_prepare_v3(k->db, sql, -1, cached ? 0 : SQLITE_PREPARE_PERSISTENT, st, NULL) !=
	    SQLITE_OK) {
		sqlite3_finalize(*st);
		*st = NULL;
		return QW_EDB;
	}
	if (!cached && k->nstmts < KSC_STMT_CACHE) {
		k->stmts[k->nstmts].sql = sql;
		k->stmts[k->nstmts].st = *st;
		k->stmts[k->nstmts].in_use = 1;
		k->nstmts++;
	}
	return 0;
}

void ksc_finish(struct qw_ksc *k, sqlite3_stmt *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < k->nstmts; i++) {
		if (k->stmts[i].st == st) {
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			k->stmts[i].in_use = 0;
			return;
		}
	}
	sqlite3_finalize(st);
}

void ksc_stmt_cache_clear(struct qw_ksc *k)
{
	for (size_t i = 0; i < k->nstmts; i++)
		sqlite3_finalize(k->stmts[i].st);
	k->nstmts = 0;
}

int ksc_db_create_schema(sqlite3 *db)
{
	return sqlite3_exec(db, schema, NULL, NULL, NULL) == SQLITE_OK ? 0 : QW_EDB;
}

/* The key hierarchy (docs/ksc.md "Keys at rest"): from the master key MK,
 * HKDF-SHA-256 (RFC 5869) with distinct info strings gives the data key
 * (rows not bound to a device), the audit key, the check value stored in
 * the database, and a root from which each device's KEK is expanded with
 * the device ID as info. A device's keys are sealed under its KEK only,
 * so remote destroy can drop them without touching anything else. */
static int derive(const uint8_t mk[static 32], const char *info, uint8_t out[static 32])
{
	return qw_hkdf(QW_HASH_SHA256, mk, 32, "qwave-ksc", 9, info, strlen(info), out, 32);
}

int ksc_derive_keys(struct qw_ksc *k, const uint8_t mk[static 32])
{
	if (derive(mk, "data key", k->data_key) || derive(mk, "audit key", k->audit_key) ||
	    derive(mk, "device kek root", k->kek_root))
		return QW_ECRYPTO;
	return 0;
}

int ksc_device_kek(struct qw_ksc *k, const char *device, uint8_t kek[static 32])
{
	char info[QW_KSC_ID_MAX + 32];

	snprintf(info, sizeof(info), "device kek|%s", device);
	return derive(k->kek_root, info, kek) ? QW_ECRYPTO : 0;
}

int ksc_seal(const uint8_t key[static 32], const char *what, const char *id,
	     const uint8_t *pt, size_t ptlen, uint8_t **out, size_t *outlen)
{
	char aad[160];
	size_t cap = ptlen + qw_aead_msg_overhead(QW_AEAD_AES256_GCM);
	int n = snprintf(aad, sizeof(aad), "qwave-ksc|%s|%s", what, id);
	int ret;

	*out = malloc(cap ? cap : 1);
	if (!*out)
		return QW_ENOMEM;
	ret = qw_aead_seal_msg(QW_AEAD_AES256_GCM, key, 32, (const uint8_t *)aad, (size_t)n, pt,
			       ptlen, *out, cap, outlen);
	if (ret) {
		free(*out);
		*out = NULL;
	}
	return ret;
}

int ksc_open_sealed(const uint8_t key[static 32], const char *what, const char *id,
		    const uint8_t *ct, size_t ctlen, uint8_t **out, size_t *outlen)
{
	char aad[160];
	int n = snprintf(aad, sizeof(aad), "qwave-ksc|%s|%s", what, id);
	int ret;

	*out = malloc(ctlen ? ctlen : 1);
	if (!*out)
		return QW_ENOMEM;
	ret = qw_aead_open_msg(QW_AEAD_AES256_GCM, key, 32, (const uint8_t *)aad, (size_t)n, ct,
			       ctlen, *out, ctlen, outlen, NULL);
	if (ret) {
		qw_free_secret(*out, ctlen);
		*out = NULL;
	}
	return ret;
}

/* ---- audit log ----
 * Record i: hash_i = SM3(hash_{i-1} || be64(seq) || be64(ts) || for each
 * of actor, action, object, detail: be32(len) || bytes), hash_0 = 32 zero
 * bytes. The length prefixes make the encoding injective, so no two
 * different records hash the same way by shifting text between fields.
 * The head (last seq and hash) is kept in meta with an HMAC-SM3 under the
 * audit key: deleting records at the end is detected as well. */
static void be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static int audit_hash(const uint8_t prev[32], uint64_t seq, int64_t ts, const char *const f[4],
		      uint8_t out[32])
{
	struct qw_hash *h = qw_hash_new(QW_HASH_SM3);
	uint8_t b[8];
	int ret = QW_ECRYPTO;

	if (!h)
		return QW_ENOMEM;
	if (qw_hash_update(h, prev, 32))
		goto out;
	be64(b, seq);
	if (qw_hash_update(h, b, 8))
		goto out;
	be64(b, (uint64_t)ts);
	if (qw_hash_update(h, b, 8))
		goto out;
	for (int i = 0; i < 4; i++) {
		size_t n = strlen(f[i]);

		b[0] = (uint8_t)(n >> 24);
		b[1] = (uint8_t)(n >> 16);
		b[2] = (uint8_t)(n >> 8);
		b[3] = (uint8_t)n;
		if (qw_hash_update(h, b, 4) || qw_hash_update(h, f[i], n))
			goto out;
	}
	if (qw_hash_final(h, out))
		goto out;
	ret = 0;
out:
	qw_hash_free(h);
	return ret;
}

static int head_mac(struct qw_ksc *k, uint64_t seq, const uint8_t hash[32], uint8_t mac[32])
{
	uint8_t m[40];

	be64(m, seq);
	memcpy(m + 8, hash, 32);
	return qw_hmac(QW_HASH_SM3, k->audit_key, 32, m, sizeof(m), mac) ? QW_ECRYPTO : 0;
}

static int meta_get(struct qw_ksc *k, const char *key, uint8_t *out, size_t n)
{
	sqlite3_stmt *st = NULL;
	int ret = QW_EDB;

	if (ksc_prep(k, &st, "SELECT v FROM meta WHERE k = ?"))
		return QW_EDB;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW && (size_t)sqlite3_column_bytes(st, 0) == n) {
		memcpy(out, sqlite3_column_blob(st, 0), n);
		ret = 0;
	}
	ksc_finish(k, st);
	return ret;
}

static int meta_put(struct qw_ksc *k, const char *key, const uint8_t *v, size_t n)
{
	sqlite3_stmt *st = NULL;
	int ret;

	if (ksc_prep(k, &st, "INSERT OR REPLACE INTO meta(k, v) VALUES(?, ?)"))
		return QW_EDB;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, v, (int)n, SQLITE_STATIC);
	ret = sqlite3_step(st) == SQLITE_DONE ? 0 : QW_EDB;
	ksc_finish(k, st);
	return ret;
}

int ksc_audit(struct qw_ksc *k, const char *actor, const char *action, const char *object,
	      json_t *detail)
{
	uint8_t head[40], mac[32], hash[32];
	uint64_t seq = 0;
	int64_t ts = ksc_now();
	json_t *empty = detail ? NULL : json_object();
	char *dtext = json_dumps(detail ? detail : empty, JSON_COMPACT | JSON_SORT_KEYS);
	const char *f[4] = { actor ? actor : "-", action, object ? object : "-", dtext };
	sqlite3_stmt *st = NULL;
	int ret = QW_ENOMEM;

	if (!dtext) {
		json_decref(empty);
		return QW_ENOMEM;
	}
	memset(head, 0, sizeof(head));
	ret = meta_get(k, "audit_head", head, sizeof(head));
	if (ret)
		goto out;
	for (int i = 0; i < 8; i++)
		seq = seq << 8 | head[i];
	seq++;
	ret = audit_hash(head + 8, seq, ts, f, hash);
	if (ret)
		goto out;
	ret = QW_EDB;
	if (ksc_prep(k, &st, "INSERT INTO audit(seq, ts, actor, action, object, detail, prev, hash)"
			     " VALUES(?, ?, ?, ?, ?, ?, ?, ?)"))
		goto out;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)seq);
	sqlite3_bind_int64(st, 2, ts);
	for (int i = 0; i < 4; i++)
		sqlite3_bind_text(st, 3 + i, f[i], -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 7, head + 8, 32, SQLITE_STATIC);
	sqlite3_bind_blob(st, 8, hash, 32, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto out;
	be64(head, seq);
	memcpy(head + 8, hash, 32);
	if (head_mac(k, seq, hash, mac) || meta_put(k, "audit_head", head, sizeof(head)) ||
	    meta_put(k, "audit_mac", mac, sizeof(mac)))
		goto out;
	ret = 0;
out:
	ksc_finish(k, st);
	{
		json_malloc_t jm;
		json_free_t jf;

		json_get_alloc_funcs(&jm, &jf);
		jf(dtext); /* allocated by jansson's allocator */
	}
	json_decref(empty);
	return ret;
}

static int audit_verify(struct qw_ksc *k, uint64_t *n, uint64_t *bad_seq)
{
	uint8_t prev[32] = { 0 }, hash[32], head[40], mac[32], want[32];
	uint64_t expect = 1, last = 0;
	sqlite3_stmt *st = NULL;
	int rc, ret = QW_EDB;

	*n = 0;
	*bad_seq = 0;
	if (ksc_prep(k, &st, "SELECT seq, ts, actor, action, object, detail, prev, hash"
			     " FROM audit ORDER BY seq"))
		return QW_EDB;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint64_t seq = (uint64_t)sqlite3_column_int64(st, 0);
		const char *f[4];

		for (int i = 0; i < 4; i++) {
			f[i] = (const char *)sqlite3_column_text(st, 2 + i);
			if (!f[i])
				f[i] = "";
		}
		if (seq != expect || sqlite3_column_bytes(st, 6) != 32 ||
		    sqlite3_column_bytes(st, 7) != 32 ||
		    memcmp(sqlite3_column_blob(st, 6), prev, 32)) {
			*bad_seq = seq != expect ? expect : seq;
			ret = QW_EAUTH;
			goto out;
		}
		if (audit_hash(prev, seq, sqlite3_column_int64(st, 1), f, hash)) {
			ret = QW_ECRYPTO;
			goto out;
		}
		if (memcmp(hash, sqlite3_column_blob(st, 7), 32)) {
			*bad_seq = seq;
			ret = QW_EAUTH;
			goto out;
		}
		memcpy(prev, hash, 32);
		last = seq;
		expect++;
		(*n)++;
	}
	if (rc != SQLITE_DONE)
		goto out;
	/* the authenticated head must name the last record */
	if (meta_get(k, "audit_head", head, sizeof(head)) ||
	    meta_get(k, "audit_mac", mac, sizeof(mac)) || head_mac(k, last, prev, want) ||
	    CRYPTO_memcmp(want, mac, 32) || memcmp(head + 8, prev, 32)) {
		*bad_seq = last + 1;
		ret = QW_EAUTH;
		goto out;
	}
	ret = 0;
out:
	ksc_finish(k, st);
	return ret;
}

int qw_ksc_audit_verify(struct qw_ksc *k, uint64_t *n, uint64_t *bad_seq)
{
	int ret;

	pthread_mutex_lock(&k->mu);
	ret = audit_verify(k, n, bad_seq);
	pthread_mutex_unlock(&k->mu);
	return ret;
}

/* ---- open / init ---- */

static int open_db(const char *path, int create, int sync_normal, sqlite3 **db)
{
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
	char pragmas[200];

	if (sqlite3_open_v2(path, db, flags, NULL) != SQLITE_OK)
		return QW_EDB;
	snprintf(pragmas, sizeof(pragmas),
		 "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA secure_delete=ON;"
		 "PRAGMA foreign_keys=ON;",
		 sync_normal ? "NORMAL" : "FULL");
	sqlite3_busy_timeout(*db, 5000);
	if (sqlite3_exec(*db, pragmas, NULL, NULL, NULL) != SQLITE_OK)
		return QW_EDB;
	return 0;
}

int qw_ksc_init(const char *path, const uint8_t mk[static QW_KSC_MASTER_KEY_BYTES],
		const char *first_admin)
{
	struct qw_ksc k;
	struct stat sb;
	uint8_t check[32];
	sqlite3_stmt *st = NULL;
	json_t *d = NULL;
	int ret;

	QW_REQUIRE(path && mk && first_admin);
	if (!ksc_id_valid(first_admin))
		return QW_EINVAL;
	if (!stat(path, &sb))
		return QW_EEXIST;
	memset(&k, 0, sizeof(k));
	ret = open_db(path, 1, 0, &k.db);
	if (ret)
		goto out;
	chmod(path, 0600);
	ret = ksc_derive_keys(&k, mk);
	if (ret || (ret = derive(mk, "check", check)))
		goto out;
	ret = QW_EDB;
	if (ksc_begin(&k) || ksc_db_create_schema(k.db) ||
	    meta_put(&k, "version", (const uint8_t *)SCHEMA_VERSION, 1) ||
	    meta_put(&k, "mk_check", check, 32))
		goto out;
	{
		uint8_t head[40] = { 0 };

		if (meta_put(&k, "audit_head", head, sizeof(head)))
			goto out;
	}
	if (ksc_prep(&k, &st, "INSERT INTO principals(id, kind, role, status, created_by, created)"
			      " VALUES(?, 'admin', 'super', 'active', '-', ?)"))
		goto out;
	sqlite3_bind_text(st, 1, first_admin, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, ksc_now());
	if (sqlite3_step(st) != SQLITE_DONE)
		goto out;
	d = json_pack("{s:s, s:s}", "role", "super", "schema", SCHEMA_VERSION);
	if (!d || ksc_audit(&k, "-", "system.init", first_admin, d) || ksc_commit(&k))
		goto out;
	ret = 0;
out:
	json_decref(d);
	ksc_finish(&k, st);
	if (k.db) {
		ksc_rollback(&k);
		ksc_stmt_cache_clear(&k);
		sqlite3_close(k.db);
	}
	if (ret && ret != QW_EEXIST && ret != QW_EINVAL) {
		unlink(path);
	}
	qw_wipe(&k, sizeof(k));
	qw_wipe(check, sizeof(check));
	return ret;
}

static int open_sources(struct qw_ksc *k, const struct qw_ksc_opts *o)
{
	int err = 0;

	if (o->qrng_path) {
		k->ent = qw_entropy_new_file(o->qrng_path,
					     o->qrng_bits_per_sample ? o->qrng_bits_per_sample : 8,
					     o->qrng_h > 0 ? o->qrng_h : 7.0, &err);
		if (!k->ent)
			return err ? err : QW_EIO;
		snprintf(k->source, sizeof(k->source), "qrng:%s", o->qrng_path);
	} else {
		k->ent = qw_entropy_new_os(); /* the OS source is conditioned already */
		if (!k->ent)
			return QW_ENOMEM;
		snprintf(k->source, sizeof(k->source), "entropy:os");
	}
	k->rng = qw_rng_new_from_source(k->ent, &err);
	if (!k->rng)
		return err ? err : QW_ECRYPTO;
	if (o->kme_url) {
		int ret = ksc_qkd_start(k, o);

		if (ret)
			return ret;
		snprintf(k->kme_label, sizeof(k->kme_label), "qkd:%.80s", o->kme_url);
	}
	return 0;
}

struct qw_ksc *qw_ksc_open(const struct qw_ksc_opts *o, int *err)
{
	struct qw_ksc *k = NULL;
	uint8_t check[32], want[32];
	struct stat sb;
	int ret = QW_ENOMEM;

	QW_REQUIRE(o && o->db_path && o->master_key);
	if (stat(o->db_path, &sb)) {
		ret = QW_ENOTFOUND;
		goto out;
	}
	k = calloc(1, sizeof(*k));
	if (!k)
		goto out;
	k->challenge_ttl_s = o->challenge_ttl_s ? o->challenge_ttl_s : 60;
	{
		pthread_mutexattr_t a;

		if (pthread_mutexattr_init(&a))
			goto out;
		if (!pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE) &&
		    !pthread_mutex_init(&k->mu, &a))
			k->mu_init = 1;
		pthread_mutexattr_destroy(&a);
		if (!k->mu_init)
			goto out;
	}
	ret = open_db(o->db_path, 0, o->sync_normal, &k->db);
	if (ret)
		goto out;
	ret = QW_EDB;
	if (sqlite3_exec(k->db, KSC_AIR_SCHEMA, NULL, NULL, NULL) != SQLITE_OK)
		goto out;
	ret = QW_EDB;
	if (meta_get(k, "mk_check", check, 32))
		goto out;
	ret = derive(o->master_key, "check", want) ? QW_ECRYPTO : 0;
	if (ret)
		goto out;
	if (CRYPTO_memcmp(check, want, 32)) {
		ret = QW_EAUTH;
		goto out;
	}
	ret = ksc_derive_keys(k, o->master_key);
	if (ret)
		goto out;
	if (o->pki_dir && !(k->pki_dir = strdup(o->pki_dir))) {
		ret = QW_ENOMEM;
		goto out;
	}
	ret = open_sources(k, o);
out:
	qw_wipe(want, sizeof(want));
	if (ret) {
		qw_ksc_close(k);
		k = NULL;
	}
	if (err)
		*err = ret;
	return k;
}

void qw_ksc_close(struct qw_ksc *k)
{
	if (!k)
		return;
	if (k->db) {
		ksc_stmt_cache_clear(k);
		sqlite3_exec(k->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
		sqlite3_close(k->db);
	}
	ksc_qkd_stop(k);
	qw_rng_free(k->rng);
	qw_entropy_free(k->ent);
	free(k->pki_dir);
	if (k->mu_init)
		pthread_mutex_destroy(&k->mu);
	qw_wipe(k, sizeof(*k));
	free(k);
}

int ksc_random(struct qw_ksc *k, uint8_t *out, size_t n)
{
	return qw_rng_bytes(k->rng, out, n);
}

/* QKD keys come from the prefetched pool (ksc_qkd.c): a request never
 * waits for the KME on the event loop; an empty pool is QW_EAGAIN (409,
 * "not enough key material"), to be retried. */
int ksc_key_material(struct qw_ksc *k, const char *source, uint8_t *out, size_t n,
		     const char **label)
{
	int ret;

	if (!source || !strcmp(source, "qrng") || !strcmp(source, "entropy")) {
		*label = k->source;
		return ksc_random(k, out, n);
	}
	if (!strcmp(source, "qkd")) {
		ret = ksc_qkd_take(k, out, n);
		if (!ret)
			*label = k->kme_label;
		return ret;
	}
	return QW_EINVAL;
}
