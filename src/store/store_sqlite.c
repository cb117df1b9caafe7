/* SQLite backend of the key store: rows only, material arrives sealed.
 *
 * Durability: WAL journal, synchronous=FULL by default (each commit is
 * fsync'ed before it returns), BEGIN IMMEDIATE for every write transaction
 * (the write lock is taken up front, so two connections never deadlock
 * upgrading a read lock). secure_delete=ON makes SQLite zero the space of
 * deleted and rewritten records and freed pages, which is how erased
 * material leaves the file (docs/store.md).
 *
 * Checkpoints: SQLite's automatic checkpoint runs inside the commit that
 * pushes the WAL past 1000 pages, on the caller's thread - for the node,
 * its event loop, where the checkpoint's page copy and fsyncs stalled
 * every request in flight (docs/PERFORMANCE.md). The store's connection
 * therefore has no automatic checkpoint; its WAL hook wakes a thread of
 * the store that checkpoints through a connection of its own: PASSIVE
 * (never waits for, nor blocks, the writer), and TRUNCATE (waits for the
 * writer, then empties the WAL) only when the WAL has grown past
 * CKPT_WAL_MAX_BYTES anyway, so it stays bounded. A checkpoint copies
 * committed pages into the database file; it never changes what a commit
 * guarantees, and the thread's connection syncs as configured. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store_internal.h"

enum {
	S_META_GET, S_META_PUT,
	S_PEER_GET, S_PEER_PUT, S_PEER_TOTAL,
	S_BLOCK_INS, S_BLOCK_UPD, S_BLOCK_PURGE, S_BLOCK_LIST, S_BLOCK_LIST_ALL,
	S_CHUNK_INS, S_CHUNK_FIRST, S_CHUNK_UPD, S_CHUNK_DEL, S_CHUNK_DEL_BLOCK,
	S_KEY_INS, S_KEY_GET, S_KEY_UPD, S_KEY_IDS, S_KEY_COUNT, S_KEY_COUNT_ALL,
	S_KEY_PURGE,
	S_BEGIN, S_COMMIT, S_ROLLBACK,
	S_COUNT
};

static const char *const sql_text[S_COUNT] = {
	[S_META_GET] = "SELECT value FROM meta WHERE name = ?1",
	[S_META_PUT] = "INSERT OR REPLACE INTO meta(name, value) VALUES (?1, ?2)",
	[S_PEER_GET] = "SELECT bits_in, taken, keyed, dropped, last_block FROM peer WHERE name = ?1",
	[S_PEER_PUT] = "INSERT OR REPLACE INTO peer(name, bits_in, taken, keyed, dropped, last_block)"
		       " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[S_PEER_TOTAL] = "SELECT total(bits_in), total(taken), total(keyed), total(dropped),"
			 " count(*) FROM peer",
	[S_BLOCK_INS] = "INSERT INTO block(peer, block_id, nbits, used) VALUES (?1, ?2, ?3, ?4)",
	[S_BLOCK_UPD] = "UPDATE block SET used = ?3 WHERE peer = ?1 AND block_id = ?2",
	[S_BLOCK_PURGE] = "DELETE FROM block WHERE used = nbits",
	[S_BLOCK_LIST] = "SELECT block_id, nbits, used FROM block WHERE peer = ?1 AND used < nbits"
			 " ORDER BY block_id",
	[S_BLOCK_LIST_ALL] = "SELECT block_id, nbits, used FROM block WHERE used < nbits"
			     " ORDER BY peer, block_id",
	[S_CHUNK_INS] = "INSERT INTO chunk(peer, block_id, seq, start, nbits, blob)"
			" VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[S_CHUNK_FIRST] = "SELECT seq, start, nbits, blob FROM chunk WHERE peer = ?1 AND block_id = ?2"
			  " ORDER BY seq LIMIT 1",
	[S_CHUNK_UPD] = "UPDATE chunk SET start = ?4, nbits = ?5, blob = ?6"
			" WHERE peer = ?1 AND block_id = ?2 AND seq = ?3",
	[S_CHUNK_DEL] = "DELETE FROM chunk WHERE peer = ?1 AND block_id = ?2 AND seq = ?3",
	[S_CHUNK_DEL_BLOCK] = "DELETE FROM chunk WHERE peer = ?1 AND block_id = ?2",
	[S_KEY_INS] = "INSERT INTO key(id, peer, size_bits, state, master, slaves, created, expires,"
		      " delivered_at, closed_at, blob) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
	[S_KEY_GET] = "SELECT peer, size_bits, state, master, slaves, created, expires, delivered_at,"
		      " closed_at, blob FROM key WHERE id = ?1",
	[S_KEY_UPD] = "UPDATE key SET state = ?2, master = ?3, slaves = ?4, delivered_at = ?5,"
		      " closed_at = ?6, blob = ?7 WHERE id = ?1",
	[S_KEY_IDS] = "SELECT id FROM key WHERE (?1 IS NULL OR peer = ?1) AND (?2 = 0 OR state = ?2)"
		      " AND (?3 = 0 OR (expires > 0 AND expires <= ?3)) ORDER BY rowid",
	[S_KEY_COUNT] = "SELECT state, count(*) FROM key WHERE peer = ?1 GROUP BY state",
	[S_KEY_COUNT_ALL] = "SELECT state, count(*) FROM key GROUP BY state",
	[S_KEY_PURGE] = "DELETE FROM key WHERE state IN (3, 4) AND closed_at < ?1",
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value BLOB NOT NULL);"
	"CREATE TABLE IF NOT EXISTS peer(name TEXT PRIMARY KEY, bits_in INTEGER NOT NULL,"
	" taken INTEGER NOT NULL, keyed INTEGER NOT NULL, dropped INTEGER NOT NULL,"
	" last_block INTEGER);"
	"CREATE TABLE IF NOT EXISTS block(peer TEXT NOT NULL, block_id INTEGER NOT NULL,"
	" nbits INTEGER NOT NULL, used INTEGER NOT NULL CHECK (used <= nbits),"
	" PRIMARY KEY (peer, block_id));"
	"CREATE TABLE IF NOT EXISTS chunk(peer TEXT NOT NULL, block_id INTEGER NOT NULL,"
	" seq INTEGER NOT NULL, start INTEGER NOT NULL, nbits INTEGER NOT NULL,"
	" blob BLOB NOT NULL, PRIMARY KEY (peer, block_id, seq));"
	"CREATE TABLE IF NOT EXISTS key(id BLOB NOT NULL UNIQUE, peer TEXT NOT NULL,"
	" size_bits INTEGER NOT NULL, state INTEGER NOT NULL CHECK (state BETWEEN 1 AND 4),"
	" master TEXT NOT NULL, slaves TEXT NOT NULL, created INTEGER NOT NULL,"
	" expires INTEGER NOT NULL, delivered_at INTEGER NOT NULL, closed_at INTEGER NOT NULL,"
	" blob BLOB, CHECK ((state IN (1, 2)) = (blob IS NOT NULL)));"
	"CREATE INDEX IF NOT EXISTS key_peer_state ON key(peer, state);";

/* WAL pages that wake the checkpointer (SQLite's own default). */
#define CKPT_PAGES 1000
/* A WAL above this size is emptied by a TRUNCATE checkpoint. */
#define CKPT_WAL_MAX_BYTES (64 * 1024 * 1024)

/* The background checkpointer of one store (see the top of the file). */
struct sqlite_ckpt {
	sqlite3 *db;               /* its own connection, used by its thread */
	pthread_t thread;
	pthread_mutex_t mu;        /* want, stop */
	pthread_cond_t cv;
	int want, stop;
	pthread_mutex_t run;       /* held while a checkpoint runs */
	int64_t page_bytes;
};

struct sqlite_db {
	sqlite3 *db;
	sqlite3_stmt *st[S_COUNT];
	struct sqlite_ckpt *ck;    /* NULL: SQLite checkpoints automatically */
};

static int map_rc(int rc)
{
	switch (rc) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_CONSTRAINT:
		return QW_EEXIST;
	case SQLITE_NOMEM:
		return QW_ENOMEM;
	case SQLITE_IOERR:
	case SQLITE_FULL:
	case SQLITE_CANTOPEN:
		return QW_EIO;
	default:
		return QW_EDB;
	}
}

/* The cached statement for id, reset and with its bindings cleared. */
static sqlite3_stmt *stmt(struct sqlite_db *d, int id)
{
	sqlite3_stmt *s = d->st[id];

	if (!s) {
		if (sqlite3_prepare_v3(d->db, sql_text[id], -1, SQLITE_PREPARE_PERSISTENT,
				       &d->st[id], NULL) != SQLITE_OK)
			return NULL;
		return d->st[id];
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return s;
}

/* Step a statement that returns no row; 0 or the mapped error. The
 * statement is reset so it holds no lock or blob reference afterwards. */
static int exec_stmt(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);

	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return QW_EDB;
	return rc == SQLITE_DONE ? 0 : map_rc(rc & 0xff);
}

/* A bind that failed (SQLITE_NOMEM, SQLITE_TOOBIG, SQLITE_RANGE) leaves
 * the parameter NULL, and a NULL peer filter matches every peer: the
 * statement must not run. */
static int bind_failed(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return QW_EDB;
}

static int bind_text(sqlite3_stmt *s, int i, const char *t)
{
	return t ? sqlite3_bind_text(s, i, t, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i);
}

static int bind_u64(sqlite3_stmt *s, int i, uint64_t v)
{
	return sqlite3_bind_int64(s, i, (sqlite3_int64)v);
}

static int bind_blob(sqlite3_stmt *s, int i, const uint8_t *b, size_t n)
{
	if (!b)
		return sqlite3_bind_null(s, i);
	return sqlite3_bind_blob64(s, i, b, n, SQLITE_STATIC);
}

/* Copy column i (a blob) to a new buffer; NULL column -> *out NULL. */
static int column_blob(sqlite3_stmt *s, int i, uint8_t **out, size_t *len)
{
	const void *p = sqlite3_column_blob(s, i);
	int n = sqlite3_column_bytes(s, i);

	*out = NULL;
	*len = 0;
	if (sqlite3_column_type(s, i) == SQLITE_NULL)
		return 0;
	if (n > 0 && !p)
		return QW_ENOMEM; /* SQLite could not materialise the value */
	*out = malloc(n > 0 ? (size_t)n : 1);
	if (!*out)
		return QW_ENOMEM;
	if (n > 0)
		memcpy(*out, p, (size_t)n);
	*len = (size_t)n;
	return 0;
}

static void column_text(sqlite3_stmt *s, int i, char *out, size_t cap)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	size_t n = t ? strlen((const char *)t) : 0;

	if (n >= cap)
		n = cap - 1;
	if (n)
		memcpy(out, t, n);
	out[n] = '\0';
}

static int exec_sql(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : QW_EDB;
}

/* A pragma whose single result must read back as want (text compare):
 * SQLite silently ignores some pragmas (e.g. WAL on a filesystem without
 * shared memory), and the store's guarantees depend on them. */
static int pragma_check(sqlite3 *db, const char *sql, const char *want)
{
	sqlite3_stmt *s = NULL;
	int ret = QW_EDB;

	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
		goto out;
	if (sqlite3_step(s) != SQLITE_ROW)
		goto out;
	/* NULL: no text (out of memory, or a pragma this SQLite ignores) */
	if (want && (!sqlite3_column_text(s, 0) ||
		     strcmp((const char *)sqlite3_column_text(s, 0), want) != 0))
		goto out;
	ret = 0;
out:
	sqlite3_finalize(s);
	return ret;
}

/* Main connection, after each commit (the loop thread): wake the
 * checkpointer once the WAL holds CKPT_PAGES pages. */
static int on_wal(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct sqlite_ckpt *ck = arg;

	(void)db;
	(void)name;
	if (pages >= CKPT_PAGES) {
		pthread_mutex_lock(&ck->mu);
		if (!ck->want) {
			ck->want = 1;
			pthread_cond_signal(&ck->cv);
		}
		pthread_mutex_unlock(&ck->mu);
	}
	return SQLITE_OK;
}

static void *ckpt_main(void *arg)
{
	struct sqlite_ckpt *ck = arg;

	for (;;) {
		int log = 0, done = 0;

		pthread_mutex_lock(&ck->mu);
		while (!ck->want && !ck->stop)
			pthread_cond_wait(&ck->cv, &ck->mu);
		if (ck->stop) {
			pthread_mutex_unlock(&ck->mu);
			return NULL;
		}
		ck->want = 0;
		pthread_mutex_unlock(&ck->mu);
		pthread_mutex_lock(&ck->run);
		/* Errors (BUSY from a concurrent checkpoint, I/O) leave the
		 * pages in the WAL, where they are safe: the next wake-up
		 * tries again. */
		if (sqlite3_wal_checkpoint_v2(ck->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done) ==
			    SQLITE_OK &&
		    (int64_t)log * ck->page_bytes > CKPT_WAL_MAX_BYTES)
			(void)sqlite3_wal_checkpoint_v2(ck->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL,
							NULL);
		pthread_mutex_unlock(&ck->run);
	}
}

static void ckpt_stop(struct sqlite_ckpt *ck)
{
	if (!ck)
		return;
	pthread_mutex_lock(&ck->mu);
	ck->stop = 1;
	pthread_cond_signal(&ck->cv);
	pthread_mutex_unlock(&ck->mu);
	pthread_join(ck->thread, NULL);
	sqlite3_close(ck->db);
	pthread_cond_destroy(&ck->cv);
	pthread_mutex_destroy(&ck->mu);
	pthread_mutex_destroy(&ck->run);
	free(ck);
}

/* Open the checkpointer's connection and start its thread, then move
 * d's checkpoints to it. On failure d keeps SQLite's automatic ones. */
static int ckpt_start(struct sqlite_db *d, const char *path, const struct qw_store_opts *o)
{
	struct sqlite_ckpt *ck;
	char sql[64];
	int ret = QW_ENOMEM;

	if (!sqlite3_threadsafe())
		return 0; /* no second thread: keep the automatic checkpoint */
	ck = calloc(1, sizeof(*ck));
	if (!ck)
		return QW_ENOMEM;
	if (pthread_mutex_init(&ck->mu, NULL)) {
		free(ck);
		return QW_ENOMEM;
	}
	if (pthread_mutex_init(&ck->run, NULL)) {
		pthread_mutex_destroy(&ck->mu);
		free(ck);
		return QW_ENOMEM;
	}
	if (pthread_cond_init(&ck->cv, NULL)) {
		pthread_mutex_destroy(&ck->run);
		pthread_mutex_destroy(&ck->mu);
		free(ck);
		return QW_ENOMEM;
	}
	ret = QW_EDB;
	if (sqlite3_open_v2(path, &ck->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK)
		goto fail;
	sqlite3_busy_timeout(ck->db, o->busy_timeout_ms);
	/* the checkpoint syncs the WAL before and the database after the copy
	 * at this connection's level: the configured one */
	snprintf(sql, sizeof(sql), "PRAGMA synchronous=%s",
		 o->sync == QW_STORE_SYNC_NORMAL ? "NORMAL" : "FULL");
	if ((ret = exec_sql(ck->db, sql)))
		goto fail;
	{
		sqlite3_stmt *s = NULL;
		ret = QW_EDB;
		if (sqlite3_prepare_v2(ck->db, "PRAGMA page_size", -1, &s, NULL) == SQLITE_OK &&
		    sqlite3_step(s) == SQLITE_ROW)
			ck->page_bytes = sqlite3_column_int64(s, 0) + 24; /* + WAL frame header */
		sqlite3_finalize(s);
		if (ck->page_bytes <= 24)
			goto fail;
	}
	ret = QW_ENOMEM;
	if (pthread_create(&ck->thread, NULL, ckpt_main, ck))
		goto fail;
	/* from here on, no checkpoint on the caller's thread */
	sqlite3_wal_autocheckpoint(d->db, 0);
	sqlite3_wal_hook(d->db, on_wal, ck);
	d->ck = ck;
	return 0;
fail:
	sqlite3_close(ck->db);
	pthread_cond_destroy(&ck->cv);
	pthread_mutex_destroy(&ck->run);
	pthread_mutex_destroy(&ck->mu);
	free(ck);
	return ret;
}

static void sq_close(void *db)
{
	struct sqlite_db *d = db;

	if (!d)
		return;
	if (d->ck) {
		sqlite3_wal_hook(d->db, NULL, NULL);
		ckpt_stop(d->ck);
		d->ck = NULL;
	}
	for (int i = 0; i < S_COUNT; i++)
		sqlite3_finalize(d->st[i]);
	if (d->db) {
		/* Fold the WAL into the database (and empty it) so that
		 * overwritten pages do not linger in the -wal file. */
		sqlite3_wal_checkpoint_v2(d->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
		sqlite3_close(d->db);
	}
	free(d);
}

static int sq_open(void **out, const char *path, const struct qw_store_opts *o)
{
	struct sqlite_db *d = NULL;
	char sql[64];
	int fd, ret = QW_ENOMEM;

	*out = NULL;
	/* Create the file ourselves with mode 0600: SQLite gives its -wal and
	 * -shm files the database file's permissions. */
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return QW_EIO;
	close(fd);
	d = calloc(1, sizeof(*d));
	if (!d)
		goto out;
	ret = QW_EDB;
	if (sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK)
		goto out;
	sqlite3_extended_result_codes(d->db, 0);
	sqlite3_busy_timeout(d->db, o->busy_timeout_ms);
	if ((ret = pragma_check(d->db, "PRAGMA journal_mode=WAL", "wal")))
		goto out;
	snprintf(sql, sizeof(sql), "PRAGMA synchronous=%s",
		 o->sync == QW_STORE_SYNC_NORMAL ? "NORMAL" : "FULL");
	if ((ret = exec_sql(d->db, sql)))
		goto out;
	if ((ret = pragma_check(d->db, "PRAGMA secure_delete=ON", "1")))
		goto out;
	/* Every page is verified as it is read; integrity failures then show
	 * as QW_EDB instead of wrong rows. */
	if ((ret = exec_sql(d->db, "PRAGMA cell_size_check=ON")))
		goto out;
	if ((ret = exec_sql(d->db, "BEGIN IMMEDIATE")))
		goto out;
	if ((ret = exec_sql(d->db, schema))) {
		exec_sql(d->db, "ROLLBACK");
		goto out;
	}
	if ((ret = exec_sql(d->db, "COMMIT")))
		goto out;
	if ((ret = ckpt_start(d, path, o)))
		goto out;
	*out = d;
	d = NULL;
	ret = 0;
out:
	sq_close(d);
	return ret;
}

static int sq_simple(void *db, int id)
{
	sqlite3_stmt *s = stmt(db, id);

	return s ? exec_stmt(s) : QW_EDB;
}

static int sq_begin(void *db)
{
	return sq_simple(db, S_BEGIN);
}

static int sq_commit(void *db)
{
	return sq_simple(db, S_COMMIT);
}

static int sq_rollback(void *db)
{
	struct sqlite_db *d = db;

	/* Some errors (SQLITE_FULL, IOERR) roll the transaction back
	 * themselves; a second ROLLBACK would then fail harmlessly. */
	if (sqlite3_get_autocommit(d->db))
		return 0;
	return sq_simple(db, S_ROLLBACK);
}

static int sq_meta_get(void *db, const char *name, uint8_t **val, size_t *len)
{
	sqlite3_stmt *s = stmt(db, S_META_GET);
	int rc, ret;

	*val = NULL;
	*len = 0;
	if (!s)
		return QW_EDB;
	rc = bind_text(s, 1, name);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		ret = QW_ENOTFOUND;
	else if (rc == SQLITE_ROW)
		ret = column_blob(s, 0, val, len);
	else
		ret = QW_EDB;
	sqlite3_reset(s);
	return ret;
}

static int sq_meta_put(void *db, const char *name, const uint8_t *val, size_t len)
{
	sqlite3_stmt *s = stmt(db, S_META_PUT);
	int rc;

	if (!s)
		return QW_EDB;
	rc = bind_text(s, 1, name);
	rc |= sqlite3_bind_blob64(s, 2, len ? (const void *)val : "", len, SQLITE_STATIC);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	return exec_stmt(s);
}

static int sq_peer_get(void *db, const char *peer, struct qw_sb_peer *p)
{
	sqlite3_stmt *s = stmt(db, S_PEER_GET);
	int rc;

	memset(p, 0, sizeof(*p));
	if (!s)
		return QW_EDB;
	rc = bind_text(s, 1, peer);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		p->bits_in = (uint64_t)sqlite3_column_int64(s, 0);
		p->taken = (uint64_t)sqlite3_column_int64(s, 1);
		p->keyed = (uint64_t)sqlite3_column_int64(s, 2);
		p->dropped = (uint64_t)sqlite3_column_int64(s, 3);
		p->has_last = sqlite3_column_type(s, 4) != SQLITE_NULL;
		p->last_block = (uint64_t)sqlite3_column_int64(s, 4);
	}
	sqlite3_reset(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : QW_EDB;
}

static int sq_peer_put(void *db, const char *peer, const struct qw_sb_peer *p)
{
	sqlite3_stmt *s = stmt(db, S_PEER_PUT);
	int rc;

	if (!s)
		return QW_EDB;
	rc = bind_text(s, 1, peer);
	rc |= bind_u64(s, 2, p->bits_in);
	rc |= bind_u64(s, 3, p->taken);
	rc |= bind_u64(s, 4, p->keyed);
	rc |= bind_u64(s, 5, p->dropped);
	if (p->has_last)
		rc |= bind_u64(s, 6, p->last_block);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	return exec_stmt(s);
}

static int sq_peer_total(void *db, struct qw_sb_peer *p)
{
	sqlite3_stmt *s = stmt(db, S_PEER_TOTAL);
	int rc;

	memset(p, 0, sizeof(*p));
	if (!s)
		return QW_EDB;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		/* total() is a double: exact up to 2^53 bits per counter. */
		p->bits_in = (uint64_t)sqlite3_column_double(s, 0);
		p->taken = (uint64_t)sqlite3_column_double(s, 1);
		p->keyed = (uint64_t)sqlite3_column_double(s, 2);
		p->dropped = (uint64_t)sqlite3_column_double(s, 3);
	}
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? 0 : QW_EDB;
}

static int sq_block_insert(void *db, const char *peer, const struct qw_sb_block *b)
{
	sqlite3_stmt *s = stmt(db, S_BLOCK_INS);
	int rc;

	if (!s)
		return QW_EDB;
	rc = bind_text(s, 1, peer);
	rc |= bind_u64(s, 2, b->block_id);
	rc |= bind_u64(s, 3, b->nbits);
	rc |= bind_u64(s, 4, b->used);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	return exec_stmt(s);
}

static int sq_block_update(void *db, const char *peer, const struct qw_sb_block *b)
{
	sqlite3_stmt *s = stmt(db, S_BLOCK_UPD);
	int rc, ret;

	if (!s)
		return QW_EDB;
	rc = bind_text(s, 1, peer);
	rc |= bind_u64(s, 2, b->block_id);
	rc |= bind_u64(s, 3, b->used);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	ret = exec_stmt(s);
	if (!ret && sqlite3_changes(((struct sqlite_db *)db)->db) != 1)
		ret = QW_ENOTFOUND;
	return ret;
}

static int sq_block_purge(void *db, size_t *n)
{
	sqlite3_stmt *s = stmt(db, S_BLOCK_PURGE);
	int ret;

	*n = 0;
	if (!s)
		return QW_EDB;
	ret = exec_stmt(s);
	if (!ret)
		*n = (size_t)sqlite3_changes(((struct sqlite_db *)db)->db);
	return ret;
}

static int sq_block_list(void *db, const char *peer, struct qw_sb_block **out, size_t *n)
{
	sqlite3_stmt *s = stmt(db, peer ? S_BLOCK_LIST : S_BLOCK_LIST_ALL);
	struct qw_sb_block *v = NULL, *nv;
	size_t cnt = 0, cap = 0;
	int rc, ret = QW_EDB;

	*out = NULL;
	*n = 0;
	if (!s)
		return QW_EDB;
	if (peer && bind_text(s, 1, peer) != SQLITE_OK)
		return bind_failed(s);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (cnt == cap) {
			cap = cap ? 2 * cap : 16;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				ret = QW_ENOMEM;
				goto out;
			}
			v = nv;
		}
		v[cnt].block_id = (uint64_t)sqlite3_column_int64(s, 0);
		v[cnt].nbits = (uint64_t)sqlite3_column_int64(s, 1);
		v[cnt].used = (uint64_t)sqlite3_column_int64(s, 2);
		cnt++;
	}
	if (rc != SQLITE_DONE)
		goto out;
	*out = v;
	*n = cnt;
	v = NULL;
	ret = 0;
out:
	sqlite3_reset(s);
	free(v);
	return ret;
}

static int sq_chunk_insert(void *db, const char *peer, const struct qw_sb_chunk *c)
{
	sqlite3_stmt *s = stmt(db, S_CHUNK_INS);
	int rc;

	if (!s)
		return QW_EDB;
	rc = bind_text(s, 1, peer);
	rc |= bind_u64(s, 2, c->block_id);
	rc |= bind_u64(s, 3, c->seq);
	rc |= bind_u64(s, 4, c->start);
	rc |= bind_u64(s, 5, c->nbits);
	rc |= bind_blob(s, 6, c->blob, c->bloblen);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	return exec_stmt(s);
}

static int sq_chunk_first(void *db, const char *peer, uint64_t block_id, struct qw_sb_chunk *c)
{
	sqlite3_stmt *s = stmt(db, S_CHUNK_FIRST);
	int rc, ret = QW_EDB;

	memset(c, 0, sizeof(*c));
	if (!s)
		return QW_EDB;
	rc = bind_text(s, 1, peer);
	rc |= bind_u64(s, 2, block_id);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		ret = QW_ENOTFOUND;
	} else if (rc == SQLITE_ROW) {
		c->block_id = block_id;
		c->seq = (uint64_t)sqlite3_column_int64(s, 0);
		c->start = (uint64_t)sqlite3_column_int64(s, 1);
		c->nbits = (uint64_t)sqlite3_column_int64(s, 2);
		ret = column_blob(s, 3, &c->blob, &c->bloblen);
	}
	sqlite3_reset(s);
	return ret;
}

static int sq_chunk_update(void *db, const char *peer, const struct qw_sb_chunk *c)
{
	sqlite3_stmt *s = stmt(db, S_CHUNK_UPD);
	int rc;

	if (!s)
		return QW_EDB;
	rc = bind_text(s, 1, peer);
	rc |= bind_u64(s, 2, c->block_id);
	rc |= bind_u64(s, 3, c->seq);
	rc |= bind_u64(s, 4, c->start);
	rc |= bind_u64(s, 5, c->nbits);
	rc |= bind_blob(s, 6, c->blob, c->bloblen);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	return exec_stmt(s);
}

static int sq_chunk_delete(void *db, const char *peer, uint64_t block_id, uint64_t seq)
{
	sqlite3_stmt *s = stmt(db, S_CHUNK_DEL);
	int rc;

	if (!s)
		return QW_EDB;
	rc = bind_text(s, 1, peer);
	rc |= bind_u64(s, 2, block_id);
	rc |= bind_u64(s, 3, seq);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	return exec_stmt(s);
}

static int sq_chunk_delete_block(void *db, const char *peer, uint64_t block_id)
{
	sqlite3_stmt *s = stmt(db, S_CHUNK_DEL_BLOCK);
	int rc;

	if (!s)
		return QW_EDB;
	rc = bind_text(s, 1, peer);
	rc |= bind_u64(s, 2, block_id);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	return exec_stmt(s);
}

static int sq_key_insert(void *db, const struct qw_sb_key *k)
{
	sqlite3_stmt *s = stmt(db, S_KEY_INS);
	int rc;

	if (!s)
		return QW_EDB;
	rc = sqlite3_bind_blob(s, 1, k->id.b, QW_UUID_BYTES, SQLITE_STATIC);
	rc |= bind_text(s, 2, k->peer);
	rc |= sqlite3_bind_int64(s, 3, k->size_bits);
	rc |= sqlite3_bind_int(s, 4, k->state);
	rc |= bind_text(s, 5, k->master);
	rc |= bind_text(s, 6, k->slaves);
	rc |= sqlite3_bind_int64(s, 7, k->created);
	rc |= sqlite3_bind_int64(s, 8, k->expires);
	rc |= sqlite3_bind_int64(s, 9, k->delivered_at);
	rc |= sqlite3_bind_int64(s, 10, k->closed_at);
	rc |= bind_blob(s, 11, k->blob, k->bloblen);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	return exec_stmt(s);
}

static int sq_key_get(void *db, const struct qw_uuid *id, struct qw_sb_key *k)
{
	sqlite3_stmt *s = stmt(db, S_KEY_GET);
	int rc, ret = QW_EDB;

	memset(k, 0, sizeof(*k));
	if (!s)
		return QW_EDB;
	rc = sqlite3_bind_blob(s, 1, id->b, QW_UUID_BYTES, SQLITE_STATIC);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		ret = QW_ENOTFOUND;
	} else if (rc == SQLITE_ROW) {
		k->id = *id;
		column_text(s, 0, k->peer, sizeof(k->peer));
		k->size_bits = (uint32_t)sqlite3_column_int64(s, 1);
		k->state = sqlite3_column_int(s, 2);
		column_text(s, 3, k->master, sizeof(k->master));
		column_text(s, 4, k->slaves, sizeof(k->slaves));
		k->created = sqlite3_column_int64(s, 5);
		k->expires = sqlite3_column_int64(s, 6);
		k->delivered_at = sqlite3_column_int64(s, 7);
		k->closed_at = sqlite3_column_int64(s, 8);
		ret = column_blob(s, 9, &k->blob, &k->bloblen);
	}
	sqlite3_reset(s);
	return ret;
}

static int sq_key_update(void *db, const struct qw_sb_key *k)
{
	sqlite3_stmt *s = stmt(db, S_KEY_UPD);
	int rc, ret;

	if (!s)
		return QW_EDB;
	rc = sqlite3_bind_blob(s, 1, k->id.b, QW_UUID_BYTES, SQLITE_STATIC);
	rc |= sqlite3_bind_int(s, 2, k->state);
	rc |= bind_text(s, 3, k->master);
	rc |= bind_text(s, 4, k->slaves);
	rc |= sqlite3_bind_int64(s, 5, k->delivered_at);
	rc |= sqlite3_bind_int64(s, 6, k->closed_at);
	rc |= bind_blob(s, 7, k->blob, k->bloblen);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	ret = exec_stmt(s);
	if (!ret && sqlite3_changes(((struct sqlite_db *)db)->db) != 1)
		ret = QW_ENOTFOUND;
	return ret;
}

static int sq_key_ids(void *db, const char *peer, int state, int64_t expires_by,
		      struct qw_uuid **out, size_t *n)
{
	sqlite3_stmt *s = stmt(db, S_KEY_IDS);
	struct qw_uuid *v = NULL, *nv;
	size_t cnt = 0, cap = 0;
	int rc, ret = QW_EDB;

	*out = NULL;
	*n = 0;
	if (!s)
		return QW_EDB;
	rc = bind_text(s, 1, peer);
	rc |= sqlite3_bind_int(s, 2, state);
	rc |= sqlite3_bind_int64(s, 3, expires_by);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const void *id = sqlite3_column_blob(s, 0);

		if (!id || sqlite3_column_bytes(s, 0) != QW_UUID_BYTES)
			goto out;
		if (cnt == cap) {
			cap = cap ? 2 * cap : 64;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				ret = QW_ENOMEM;
				goto out;
			}
			v = nv;
		}
		memcpy(v[cnt++].b, id, QW_UUID_BYTES);
	}
	if (rc != SQLITE_DONE)
		goto out;
	*out = v;
	*n = cnt;
	v = NULL;
	ret = 0;
out:
	sqlite3_reset(s);
	free(v);
	return ret;
}

static int sq_key_count(void *db, const char *peer, uint64_t counts[5])
{
	sqlite3_stmt *s = stmt(db, peer ? S_KEY_COUNT : S_KEY_COUNT_ALL);
	int rc;

	memset(counts, 0, 5 * sizeof(counts[0]));
	if (!s)
		return QW_EDB;
	if (peer && bind_text(s, 1, peer) != SQLITE_OK)
		return bind_failed(s);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int st = sqlite3_column_int(s, 0);

		if (st >= 1 && st <= 4)
			counts[st] = (uint64_t)sqlite3_column_int64(s, 1);
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : QW_EDB;
}

static int sq_key_purge(void *db, int64_t before, size_t *n)
{
	sqlite3_stmt *s = stmt(db, S_KEY_PURGE);
	int rc, ret;

	*n = 0;
	if (!s)
		return QW_EDB;
	rc = sqlite3_bind_int64(s, 1, before);
	if (rc != SQLITE_OK)
		return bind_failed(s);
	ret = exec_stmt(s);
	if (!ret)
		*n = (size_t)sqlite3_changes(((struct sqlite_db *)db)->db);
	return ret;
}

static int sq_checkpoint(void *db)
{
	struct sqlite_db *d = db;
	int rc;

	/* after the checkpointer's run, if one is under way: two checkpoints
	 * at once would leave this one BUSY */
	if (d->ck)
		pthread_mutex_lock(&d->ck->run);
	rc = sqlite3_wal_checkpoint_v2(d->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	if (d->ck)
		pthread_mutex_unlock(&d->ck->run);

	if (rc == SQLITE_BUSY)
		return QW_EAGAIN;
	return rc == SQLITE_OK ? 0 : QW_EDB;
}

const struct qw_store_backend qw_store_backend_sqlite = {
	.name = "sqlite",
	.open = sq_open,
	.close = sq_close,
	.begin = sq_begin,
	.commit = sq_commit,
	.rollback = sq_rollback,
	.meta_get = sq_meta_get,
	.meta_put = sq_meta_put,
	.peer_get = sq_peer_get,
	.peer_put = sq_peer_put,
	.peer_total = sq_peer_total,
	.block_insert = sq_block_insert,
	.block_update = sq_block_update,
	.block_purge = sq_block_purge,
	.block_list = sq_block_list,
	.chunk_insert = sq_chunk_insert,
	.chunk_first = sq_chunk_first,
	.chunk_update = sq_chunk_update,
	.chunk_delete = sq_chunk_delete,
	.chunk_delete_block = sq_chunk_delete_block,
	.key_insert = sq_key_insert,
	.key_get = sq_key_get,
	.key_update = sq_key_update,
	.key_ids = sq_key_ids,
	.key_count = sq_key_count,
	.key_purge = sq_key_purge,
	.checkpoint = sq_checkpoint,
};
