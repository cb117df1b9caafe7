/* Key store crash model: a child process changes the store as fast as it
 * can (appends, key cuts, deliveries, erasures, pool takes) and reports
 * each change on a pipe only after its commit returned; the parent kills
 * it with SIGKILL at a random moment, reopens the store and checks that
 * the file is intact and that every reported change is there, nothing was
 * done twice and no transaction is half applied. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "qwave/rng.h"
#include "qwave/store.h"

enum { ITERATIONS = 10, MAX_KEYS = 4096, REC_BYTES = 24 };

enum { OP_CREATE = 'C', OP_DELIVER = 'D', OP_ERASE = 'E', OP_TAKE = 'T', OP_APPEND = 'A' };

static const char *const slaves[] = { "sae-B" };

struct rec {
	uint8_t op;
	struct qw_uuid id;
	uint32_t nbits;
};

struct known {
	struct qw_uuid id;
	int created, delivered, erased;
};

struct fx {
	char dir[64], db[96];
	uint8_t mk[QW_STORE_MASTER_KEY_BYTES];
	struct known *keys;
	size_t nkeys;
	uint64_t taken, appended;
};

static void put_rec(int fd, const struct rec *r)
{
	uint8_t b[REC_BYTES] = { 0 };

	b[0] = r->op;
	memcpy(b + 1, r->id.b, QW_UUID_BYTES);
	memcpy(b + 17, &r->nbits, 4);
	/* A record below PIPE_BUF is written whole or not at all. */
	if (write(fd, b, sizeof(b)) != (ssize_t)sizeof(b))
		_exit(3);
}

struct collect {
	struct qw_uuid ids[MAX_KEYS];
	size_t n;
};

static int collect_cb(const struct qw_store_key_info *info, void *arg)
{
	struct collect *c = arg;

	if (c->n < MAX_KEYS)
		c->ids[c->n++] = info->id;
	return 0;
}

/* The child: never returns. Exit 0 only if it ran out of work. */
static void child(const struct fx *f, int fd, unsigned iter)
{
	struct qw_store_opts o = { .sync = iter % 2 ? QW_STORE_SYNC_NORMAL : QW_STORE_SYNC_FULL };
	struct qw_rng *rng = qw_rng_new_seeded(1000 + iter);
	static struct collect live;
	uint8_t buf[1024];
	uint64_t next_block = (uint64_t)(iter + 1) * 1000000;
	struct qw_store *s;
	int err;

	s = qw_store_open(f->db, f->mk, &o, &err);
	if (!s || !rng)
		_exit(4);
	live.n = 0;
	if (qw_store_key_list(s, "bob", QW_STORE_RESERVED, collect_cb, &live))
		_exit(5);
	for (int step = 0; step < 100000; step++) {
		uint64_t r = qw_rng_below(rng, 10);
		struct rec rc = { 0 };
		int ret;

		if (r == 0) {
			if (qw_rng_bytes(rng, buf, sizeof(buf)))
				_exit(6);
			rc.nbits = 8000 + (uint32_t)qw_rng_below(rng, 192);
			if (qw_store_pool_append(s, "bob", next_block++, buf, rc.nbits))
				_exit(7);
			rc.op = OP_APPEND;
			put_rec(fd, &rc);
		} else if (r <= 3) {
			struct qw_store_key_req req = {
				.peer = "bob", .master_sae = "sae-A", .slave_saes = slaves,
				.n_slaves = 1, .size_bits = 256,
			};
			struct qw_uuid ids[2];

			ret = qw_store_key_create(s, &req, 2, ids, NULL);
			if (ret == QW_EAGAIN)
				continue;
			if (ret)
				_exit(8);
			for (int i = 0; i < 2; i++) {
				rc.op = OP_CREATE;
				rc.id = ids[i];
				rc.nbits = 256;
				put_rec(fd, &rc);
				if (live.n < MAX_KEYS)
					live.ids[live.n++] = ids[i];
			}
		} else if (r <= 6 && live.n) {
			size_t i = (size_t)qw_rng_below(rng, live.n);
			uint8_t key[32];

			ret = qw_store_key_deliver(s, &live.ids[i], "sae-A", key, sizeof(key), NULL);
			if (ret)
				_exit(9);
			rc.op = OP_DELIVER;
			rc.id = live.ids[i];
			put_rec(fd, &rc);
			live.ids[i] = live.ids[--live.n];
		} else if (r == 7 && live.n) {
			size_t i = (size_t)qw_rng_below(rng, live.n);

			if (qw_store_key_erase(s, &live.ids[i]))
				_exit(10);
			rc.op = OP_ERASE;
			rc.id = live.ids[i];
			put_rec(fd, &rc);
			live.ids[i] = live.ids[--live.n];
		} else {
			rc.nbits = 1 + (uint32_t)qw_rng_below(rng, 700);
			ret = qw_store_pool_take(s, "bob", rc.nbits, NULL, buf, sizeof(buf), NULL);
			if (ret == QW_EAGAIN)
				continue;
			if (ret)
				_exit(11);
			rc.op = OP_TAKE;
			put_rec(fd, &rc);
		}
	}
	_exit(0);
}

static struct known *find(struct fx *f, const struct qw_uuid *id, int add)
{
	for (size_t i = 0; i < f->nkeys; i++)
		if (qw_uuid_compare(&f->keys[i].id, id) == 0)
			return &f->keys[i];
	if (!add)
		return NULL;
	assert_true(f->nkeys < MAX_KEYS * ITERATIONS);
	memset(&f->keys[f->nkeys], 0, sizeof(f->keys[0]));
	f->keys[f->nkeys].id = *id;
	return &f->keys[f->nkeys++];
}

static void apply(struct fx *f, const uint8_t *b)
{
	struct qw_uuid id;
	uint32_t nbits;
	struct known *k;

	memcpy(id.b, b + 1, QW_UUID_BYTES);
	memcpy(&nbits, b + 17, 4);
	switch (b[0]) {
	case OP_CREATE:
		k = find(f, &id, 1);
		assert_int_equal(k->created, 0); /* an id is never issued twice */
		k->created = 1;
		break;
	case OP_DELIVER:
		k = find(f, &id, 0);
		/* a delivery can follow a create that was committed but not
		 * reported before the kill */
		if (!k)
			k = find(f, &id, 1);
		assert_int_equal(k->delivered, 0); /* never delivered twice */
		assert_int_equal(k->erased, 0);
		k->delivered = 1;
		break;
	case OP_ERASE:
		k = find(f, &id, 1);
		assert_int_equal(k->delivered + k->erased, 0);
		k->erased = 1;
		break;
	case OP_TAKE:
		f->taken += nbits;
		break;
	case OP_APPEND:
		f->appended += nbits;
		break;
	default:
		fail_msg("bad record %d", b[0]);
	}
}

static int64_t query_i64(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Consistency of the file after recovery, read below the store API. */
static void check_file(struct fx *f, uint64_t *bits_in, uint64_t *keyed)
{
	sqlite3 *db;
	sqlite3_stmt *st;

	assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
	sqlite3_finalize(st);
	/* no key id twice, no material left in a terminal state */
	assert_int_equal(query_i64(db, "SELECT count(*) - count(DISTINCT id) FROM key"), 0);
	assert_int_equal(query_i64(db, "SELECT count(*) FROM key WHERE state IN (3, 4) AND blob IS NOT NULL"), 0);
	/* every block's cursor sits exactly where its first chunk starts, and
	 * its chunks cover the rest of the block */
	assert_int_equal(query_i64(db,
		"SELECT count(*) FROM block b WHERE b.used < b.nbits AND ("
		" (SELECT start FROM chunk c WHERE c.peer = b.peer AND c.block_id = b.block_id"
		"  ORDER BY seq LIMIT 1) IS NOT b.used OR"
		" (SELECT total(nbits) FROM chunk c WHERE c.peer = b.peer AND c.block_id = b.block_id)"
		"  != b.nbits - b.used)"), 0);
	assert_int_equal(query_i64(db,
		"SELECT count(*) FROM chunk c WHERE NOT EXISTS (SELECT 1 FROM block b WHERE"
		" b.peer = c.peer AND b.block_id = c.block_id AND b.used < b.nbits)"), 0);
	/* counters agree with the rows: nothing half applied */
	*bits_in = (uint64_t)query_i64(db, "SELECT total(nbits) FROM block WHERE peer = 'bob'");
	*keyed = (uint64_t)query_i64(db, "SELECT total(size_bits) FROM key WHERE peer = 'bob'");
	assert_int_equal(query_i64(db, "SELECT bits_in FROM peer WHERE name = 'bob'"), *bits_in);
	assert_int_equal(query_i64(db, "SELECT keyed FROM peer WHERE name = 'bob'"), *keyed);
	sqlite3_close(db);
}

static void test_kill9(void **state)
{
	struct fx *f = *state;
	struct qw_rng *rng = qw_rng_new_seeded(424242);
	uint64_t bits_in = 0, keyed = 0;
	struct qw_store *s;
	int err;

	assert_non_null(rng);
	/* the initial pool */
	s = qw_store_open(f->db, f->mk, NULL, &err);
	assert_non_null(s);
	{
		uint8_t blk[4096];

		assert_int_equal(qw_rng_bytes(rng, blk, sizeof(blk)), 0);
		assert_int_equal(qw_store_pool_append(s, "bob", 1, blk, 8 * sizeof(blk)), 0);
		f->appended = 8 * sizeof(blk);
	}
	qw_store_close(s);

	for (unsigned it = 0; it < ITERATIONS; it++) {
		int p[2], status;
		uint8_t b[REC_BYTES];
		pid_t pid;
		struct timespec ts;
		ssize_t r;

		assert_int_equal(pipe(p), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			child(f, p[1], it);
		}
		close(p[1]);
		/* 20..150 ms: early kills hit the open and recovery, later
		 * ones the steady state */
		ts.tv_sec = 0;
		ts.tv_nsec = (long)(20 + qw_rng_below(rng, 130)) * 1000000L;
		nanosleep(&ts, NULL);
		assert_int_equal(kill(pid, SIGKILL), 0);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		/* killed by us, not dead of its own error */
		if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
			fail_msg("child exited with status %d", WEXITSTATUS(status));
		while ((r = read(p[0], b, sizeof(b))) == (ssize_t)sizeof(b))
			apply(f, b);
		assert_int_equal(r, 0);
		close(p[0]);

		check_file(f, &bits_in, &keyed);
		s = qw_store_open(f->db, f->mk, NULL, &err);
		assert_non_null(s);
		{
			struct qw_store_stats st;

			assert_int_equal(qw_store_stats(s, "bob", &st), 0);
			assert_int_equal(st.bits_in, st.bits_taken + st.bits_keyed + st.bits_dropped +
						     st.bits_available);
			assert_int_equal(st.bits_dropped, 0);
			/* every reported change is durable; at most the one
			 * change in flight at the kill is unreported */
			assert_true(st.bits_in >= f->appended);
			assert_true(st.bits_in - f->appended <= 8192);
			f->appended = st.bits_in;
			assert_true(st.bits_taken >= f->taken);
			assert_true(st.bits_taken - f->taken <= 700);
			f->taken = st.bits_taken;
		}
		for (size_t i = 0; i < f->nkeys; i++) {
			struct qw_store_key_info info;
			struct known *k = &f->keys[i];
			uint8_t out[32];

			assert_int_equal(qw_store_key_info(s, &k->id, &info), 0);
			if (k->delivered) {
				assert_int_equal(info.state, QW_STORE_DELIVERED);
				assert_int_equal(qw_store_key_deliver(s, &k->id, "sae-A", out, sizeof(out),
								      NULL), QW_ESTATE);
			} else if (k->erased) {
				assert_int_equal(info.state, QW_STORE_ERASED);
			} else {
				/* created, or delivered/erased in the commit the
				 * kill interrupted before its report */
				assert_true(info.state == QW_STORE_RESERVED ||
					    info.state == QW_STORE_DELIVERED ||
					    info.state == QW_STORE_ERASED);
				if (info.state == QW_STORE_DELIVERED)
					k->delivered = 1;
				if (info.state == QW_STORE_ERASED)
					k->erased = 1;
			}
		}
		qw_store_close(s);
	}
	/* In the end every reserved key still opens (no torn blob) */
	s = qw_store_open(f->db, f->mk, NULL, &err);
	assert_non_null(s);
	{
		static struct collect live;
		uint8_t out[32];

		live.n = 0;
		assert_int_equal(qw_store_key_list(s, "bob", QW_STORE_RESERVED, collect_cb, &live), 0);
		for (size_t i = 0; i < live.n; i++)
			assert_int_equal(qw_store_key_deliver(s, &live.ids[i], "sae-B", out, sizeof(out),
							      NULL), 0);
	}
	qw_store_close(s);
	{
		size_t nd = 0, ne = 0;

		for (size_t i = 0; i < f->nkeys; i++) {
			nd += (size_t)f->keys[i].delivered;
			ne += (size_t)f->keys[i].erased;
		}
		print_message("%d kills: %zu keys seen, %zu delivered, %zu erased, %llu pool bits "
			      "taken, %llu appended\n", ITERATIONS, f->nkeys, nd, ne,
			      (unsigned long long)f->taken, (unsigned long long)f->appended);
	}
	qw_rng_free(rng);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/qw_crash_XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->db, sizeof(f->db), "%s/k.db", f->dir);
	f->keys = calloc(MAX_KEYS * ITERATIONS, sizeof(*f->keys));
	if (!f->keys || qw_random_bytes(f->mk, sizeof(f->mk)))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char p[128];

	unlink(f->db);
	snprintf(p, sizeof(p), "%s-wal", f->db);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", f->db);
	unlink(p);
	rmdir(f->dir);
	free(f->keys);
	free(f);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_kill9, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
