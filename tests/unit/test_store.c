/* Key store: master key files, pool and key round trips, every legal and
 * illegal state transition, encryption at rest (raw file scan and SQLite
 * reads), tampering, wrong master key, secure deletion, resynchronisation
 * of two ends, exact pool accounting, and concurrent takes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>
#include <sqlite3.h>

#include "qwave/rng.h"
#include "qwave/store.h"

struct fx {
	char dir[64];
	char db[96], db2[96], mkfile[96];
	uint8_t mk[QW_STORE_MASTER_KEY_BYTES];
	struct qw_rng *rng;
};

static void rm_db(const char *db)
{
	char p[128];

	unlink(db);
	snprintf(p, sizeof(p), "%s-wal", db);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", db);
	unlink(p);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/qw_store_XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->db, sizeof(f->db), "%s/a.db", f->dir);
	snprintf(f->db2, sizeof(f->db2), "%s/b.db", f->dir);
	snprintf(f->mkfile, sizeof(f->mkfile), "%s/master.key", f->dir);
	f->rng = qw_rng_new_seeded(20261121);
	if (!f->rng || qw_rng_bytes(f->rng, f->mk, sizeof(f->mk)))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	rm_db(f->db);
	rm_db(f->db2);
	unlink(f->mkfile);
	rmdir(f->dir);
	qw_rng_free(f->rng);
	free(f);
	return 0;
}

static struct qw_store *open_store(const char *path, const uint8_t *mk)
{
	int err = 1;
	struct qw_store *s = qw_store_open(path, mk, NULL, &err);

	assert_non_null(s);
	assert_int_equal(err, 0);
	return s;
}

/* Bit i of buf, MSB first. */
static int bit_at(const uint8_t *buf, uint64_t i)
{
	return (buf[i / 8] >> (7 - i % 8)) & 1;
}

static void assert_bits_equal(const uint8_t *a, uint64_t aoff, const uint8_t *b, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		assert_int_equal(bit_at(a, aoff + i), bit_at(b, i));
}

/* Read a whole file (missing file: empty). */
static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	*len = 0;
	if (!fp)
		return calloc(1, 1);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	buf = malloc(n > 0 ? (size_t)n : 1);
	assert_non_null(buf);
	*len = fread(buf, 1, (size_t)n, fp);
	fclose(fp);
	return buf;
}

static int contains(const uint8_t *hay, size_t hn, const uint8_t *needle, size_t nn)
{
	for (size_t i = 0; i + nn <= hn; i++)
		if (hay[i] == needle[0] && memcmp(hay + i, needle, nn) == 0)
			return 1;
	return 0;
}

/* Does any 16-byte window of secret appear in the database or its WAL? */
static int file_has_any(const char *db, const uint8_t *secret, size_t n)
{
	char wal[128];
	const char *paths[2] = { db, wal };
	int found = 0;

	snprintf(wal, sizeof(wal), "%s-wal", db);
	for (int p = 0; p < 2; p++) {
		size_t len;
		uint8_t *buf = slurp(paths[p], &len);

		for (size_t i = 0; i + 16 <= n && !found; i += 8)
			found = contains(buf, len, secret + i, 16);
		free(buf);
	}
	return found;
}

/* ---- master key ---- */

static void test_masterkey_file(void **state)
{
	struct fx *f = *state;
	uint8_t mk[QW_STORE_MASTER_KEY_BYTES], mk2[QW_STORE_MASTER_KEY_BYTES];
	struct stat st;
	FILE *fp;

	assert_int_equal(qw_store_masterkey_load(f->mkfile, mk), QW_ENOTFOUND);
	assert_int_equal(qw_store_masterkey_create(f->mkfile, mk), 0);
	assert_int_equal(stat(f->mkfile, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, QW_STORE_MASTER_KEY_BYTES);
	assert_int_equal(qw_store_masterkey_load(f->mkfile, mk2), 0);
	assert_memory_equal(mk, mk2, sizeof(mk));
	/* never overwritten */
	assert_int_equal(qw_store_masterkey_create(f->mkfile, mk2), QW_EEXIST);
	assert_int_equal(qw_store_masterkey_load(f->mkfile, mk2), 0);
	assert_memory_equal(mk, mk2, sizeof(mk));
	/* readable or writable by group/others: refused, and mk wiped */
	const mode_t bad[] = { 0640, 0604, 0620, 0602, 0644 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(chmod(f->mkfile, bad[i]), 0);
		memset(mk2, 0xaa, sizeof(mk2));
		assert_int_equal(qw_store_masterkey_load(f->mkfile, mk2), QW_EPERM);
		for (size_t j = 0; j < sizeof(mk2); j++)
			assert_int_equal(mk2[j], 0);
	}
	assert_int_equal(chmod(f->mkfile, 0400), 0);
	assert_int_equal(qw_store_masterkey_load(f->mkfile, mk2), 0);
	/* wrong length */
	unlink(f->mkfile);
	fp = fopen(f->mkfile, "wb");
	assert_non_null(fp);
	fwrite(mk, 1, 31, fp);
	fclose(fp);
	assert_int_equal(chmod(f->mkfile, 0600), 0);
	assert_int_equal(qw_store_masterkey_load(f->mkfile, mk2), QW_EPARSE);
	/* a symlink is not followed */
	{
		char link[128];

		snprintf(link, sizeof(link), "%s/link.key", f->dir);
		assert_int_equal(symlink(f->mkfile, link), 0);
		assert_int_equal(qw_store_masterkey_load(link, mk2), QW_EPERM);
		unlink(link);
	}
}

static void test_passphrase(void **state)
{
	struct fx *f = *state;
	struct qw_store_opts o = { .scrypt_log2n = 10 };
	uint8_t salt[16] = { 1, 2, 3 }, a[32], b[32];
	struct qw_store *s;
	int err = 1;

	assert_int_equal(qw_store_masterkey_derive("pw", 2, salt, 16, 10, a), 0);
	assert_int_equal(qw_store_masterkey_derive("pw", 2, salt, 16, 10, b), 0);
	assert_memory_equal(a, b, 32);
	salt[0] ^= 1;
	assert_int_equal(qw_store_masterkey_derive("pw", 2, salt, 16, 10, b), 0);
	assert_memory_not_equal(a, b, 32);
	assert_int_equal(qw_store_masterkey_derive("pw", 2, salt, 16, 9, b), QW_EINVAL);
	assert_int_equal(qw_store_masterkey_derive("pw", 2, salt, 8, 10, b), QW_EINVAL);

	s = qw_store_open_passphrase(f->db, "correct horse", 13, &o, &err);
	assert_non_null(s);
	assert_int_equal(err, 0);
	qw_store_close(s);
	s = qw_store_open_passphrase(f->db, "correct horse", 13, NULL, &err);
	assert_non_null(s);
	qw_store_close(s);
	s = qw_store_open_passphrase(f->db, "correct horsf", 13, NULL, &err);
	assert_null(s);
	assert_int_equal(err, QW_EAUTH);
	/* a cost the KDF refuses is refused before it is stored: the same
	 * file then opens with a valid one */
	rm_db(f->db);
	o.scrypt_log2n = 9;
	s = qw_store_open_passphrase(f->db, "correct horse", 13, &o, &err);
	assert_null(s);
	assert_int_equal(err, QW_EINVAL);
	o.scrypt_log2n = 23;
	s = qw_store_open_passphrase(f->db, "correct horse", 13, &o, &err);
	assert_null(s);
	assert_int_equal(err, QW_EINVAL);
	o.scrypt_log2n = 10;
	s = qw_store_open_passphrase(f->db, "correct horse", 13, &o, &err);
	assert_non_null(s);
	assert_int_equal(err, 0);
	qw_store_close(s);
	/* a store made under a key file opens with no passphrase */
	s = open_store(f->db2, f->mk);
	qw_store_close(s);
	s = qw_store_open_passphrase(f->db2, "", 0, &o, &err);
	assert_null(s);
	assert_int_equal(err, QW_EAUTH);
	s = open_store(f->db2, f->mk);
	qw_store_close(s);
}

/* ---- pools ---- */

static void test_pool_roundtrip(void **state)
{
	struct fx *f = *state;
	/* block sizes cross the 4096-bit chunk boundary and are not byte
	 * multiples */
	const uint64_t sizes[3] = { 10001, 77, 4096 };
	uint8_t all[(10001 + 77 + 4096) / 8 + 2] = { 0 }, out[2048];
	uint64_t total = 0, avail, off = 0;
	struct qw_store_pos at;
	struct qw_store *s = open_store(f->db, f->mk);

	for (int i = 0; i < 3; i++) {
		uint8_t blk[1300];

		assert_int_equal(qw_rng_bytes(f->rng, blk, sizeof(blk)), 0);
		assert_int_equal(qw_store_pool_append(s, "bob", 10 + i, blk, sizes[i]), 0);
		/* remember the concatenation, bit by bit */
		for (uint64_t j = 0; j < sizes[i]; j++)
			if (bit_at(blk, j))
				all[(total + j) / 8] |= (uint8_t)(0x80 >> ((total + j) % 8));
		total += sizes[i];
	}
	assert_int_equal(qw_store_pool_available(s, "bob", &avail), 0);
	assert_int_equal(avail, total);
	assert_int_equal(qw_store_pool_available(s, "carol", &avail), 0);
	assert_int_equal(avail, 0);
	/* ids must grow */
	assert_int_equal(qw_store_pool_append(s, "bob", 12, all, 8), QW_EEXIST);
	assert_int_equal(qw_store_pool_append(s, "bob", 5, all, 8), QW_EEXIST);
	assert_int_equal(qw_store_pool_append(s, "bob", 13, all, 0), QW_EINVAL);
	assert_int_equal(qw_store_pool_append(s, "", 13, all, 8), QW_EINVAL);

	/* odd-sized takes, in order, return exactly the appended bits */
	const uint64_t takes[] = { 3, 1000, 4093, 8, 5000, 1 };
	for (size_t i = 0; i < sizeof(takes) / sizeof(takes[0]); i++) {
		assert_int_equal(qw_store_pool_cursor(s, "bob", &at), 0);
		memset(out, 0xff, sizeof(out));
		assert_int_equal(qw_store_pool_take(s, "bob", takes[i], NULL, out, sizeof(out), &at), 0);
		assert_bits_equal(all, off, out, takes[i]);
		/* tail bits of the last byte are zero */
		for (uint64_t j = takes[i]; j % 8; j++)
			assert_int_equal(bit_at(out, j), 0);
		off += takes[i];
	}
	assert_int_equal(qw_store_pool_available(s, "bob", &avail), 0);
	assert_int_equal(avail, total - off);
	/* too much: nothing taken */
	assert_int_equal(qw_store_pool_take(s, "bob", avail + 1, NULL, out, sizeof(out), NULL),
			 QW_EAGAIN);
	assert_int_equal(qw_store_pool_take(s, "bob", 100, NULL, out, 12, NULL), QW_ERANGE);
	/* the bytes of a huge bit count must not wrap round to fit the room */
	assert_int_equal(qw_store_pool_take(s, "bob", UINT64_MAX, NULL, out, sizeof(out), NULL),
			 QW_ERANGE);
	assert_int_equal(qw_store_pool_take(s, "bob", UINT64_MAX - 6, NULL, out, sizeof(out), NULL),
			 QW_ERANGE);
	assert_int_equal(qw_store_pool_available(s, "bob", &avail), 0);
	assert_int_equal(avail, total - off);
	/* expected position check */
	assert_int_equal(qw_store_pool_cursor(s, "bob", &at), 0);
	at.bit++;
	assert_int_equal(qw_store_pool_take(s, "bob", 8, &at, out, sizeof(out), NULL), QW_ESTATE);
	at.bit--;
	assert_int_equal(qw_store_pool_take(s, "bob", avail, &at, out, sizeof(out), NULL), 0);
	assert_bits_equal(all, off, out, avail);
	assert_int_equal(qw_store_pool_cursor(s, "bob", &at), QW_EAGAIN);
	qw_store_close(s);
}

/* ---- keys ---- */

static const char *const slaves_b[] = { "sae-B" };

static void fill_pool(struct fx *f, struct qw_store *s, const char *peer, uint64_t id,
		      uint8_t *bits, size_t nbytes)
{
	assert_int_equal(qw_rng_bytes(f->rng, bits, nbytes), 0);
	assert_int_equal(qw_store_pool_append(s, peer, id, bits, nbytes * 8), 0);
}

static void test_key_states(void **state)
{
	struct fx *f = *state;
	struct qw_store *s = open_store(f->db, f->mk);
	uint8_t pool[256], out[64];
	struct qw_uuid ids[8], unknown;
	struct qw_store_key_info info;
	struct qw_store_key_req req = {
		.peer = "bob", .size_bits = 256, .master_sae = "sae-A",
		.slave_saes = slaves_b, .n_slaves = 1,
	};
	struct qw_store_pos at;
	size_t n;

	fill_pool(f, s, "bob", 1, pool, sizeof(pool));
	/* two reserved keys, cut in order from the pool */
	assert_int_equal(qw_store_key_create(s, &req, 2, ids, &at), 0);
	assert_int_equal(at.block_id, 1);
	assert_int_equal(at.bit, 0);
	assert_int_not_equal(qw_uuid_compare(&ids[0], &ids[1]), 0);
	assert_int_equal(qw_uuid_version(&ids[0]), 4);
	assert_int_equal(qw_store_key_info(s, &ids[0], &info), 0);
	assert_int_equal(info.state, QW_STORE_RESERVED);
	assert_string_equal(info.peer, "bob");
	assert_string_equal(info.master_sae, "sae-A");
	assert_int_equal(info.n_slaves, 1);
	assert_string_equal(info.slave_saes[0], "sae-B");
	assert_int_equal(info.size_bits, 256);

	/* wrong SAE, small buffer: refused and nothing changes */
	assert_int_equal(qw_store_key_deliver(s, &ids[0], "sae-C", out, sizeof(out), NULL), QW_EPERM);
	assert_int_equal(qw_store_key_deliver(s, &ids[0], "sae-A", out, 31, NULL), QW_ERANGE);
	/* delivery: exactly the pool bits, once */
	assert_int_equal(qw_store_key_deliver(s, &ids[0], "sae-A", out, sizeof(out), &info), 0);
	assert_memory_equal(out, pool, 32);
	assert_int_equal(info.state, QW_STORE_DELIVERED);
	assert_true(info.delivered_at > 0);
	assert_int_equal(qw_store_key_deliver(s, &ids[0], "sae-A", out, sizeof(out), NULL), QW_ESTATE);
	assert_int_equal(qw_store_key_deliver(s, &ids[0], "sae-B", out, sizeof(out), NULL), QW_ESTATE);
	for (size_t i = 0; i < sizeof(out); i++)
		assert_int_equal(out[i], 0); /* wiped on failure */
	/* the slave may take the other one */
	assert_int_equal(qw_store_key_deliver(s, &ids[1], "sae-B", out, sizeof(out), NULL), 0);
	assert_memory_equal(out, pool + 32, 32);
	/* terminal states refuse everything */
	assert_int_equal(qw_store_key_erase(s, &ids[0]), QW_ESTATE);
	assert_int_equal(qw_store_key_reserve(s, &ids[1], "x", slaves_b, 1), QW_ESTATE);

	/* AVAILABLE keys: not deliverable until reserved */
	req.master_sae = NULL;
	req.n_slaves = 0;
	req.slave_saes = NULL;
	assert_int_equal(qw_store_key_create(s, &req, 2, ids + 2, NULL), 0);
	assert_int_equal(qw_store_key_info(s, &ids[2], &info), 0);
	assert_int_equal(info.state, QW_STORE_AVAILABLE);
	assert_string_equal(info.master_sae, "");
	assert_int_equal(qw_store_key_deliver(s, &ids[2], "sae-A", out, sizeof(out), NULL), QW_ESTATE);
	assert_int_equal(qw_store_key_reserve(s, &ids[2], "sae-A", slaves_b, 1), 0);
	assert_int_equal(qw_store_key_reserve(s, &ids[2], "sae-A", slaves_b, 1), QW_ESTATE);
	assert_int_equal(qw_store_key_reserve(s, &ids[3], "sae-A", slaves_b, 0), QW_EINVAL);
	assert_int_equal(qw_store_key_deliver(s, &ids[2], "sae-B", out, sizeof(out), NULL), 0);
	assert_memory_equal(out, pool + 64, 32);
	/* erase: AVAILABLE -> ERASED, then nothing */
	assert_int_equal(qw_store_key_erase(s, &ids[3]), 0);
	assert_int_equal(qw_store_key_info(s, &ids[3], &info), 0);
	assert_int_equal(info.state, QW_STORE_ERASED);
	assert_int_equal(qw_store_key_erase(s, &ids[3]), QW_ESTATE);
	assert_int_equal(qw_store_key_reserve(s, &ids[3], "sae-A", slaves_b, 1), QW_ESTATE);
	assert_int_equal(qw_store_key_deliver(s, &ids[3], "sae-A", out, sizeof(out), NULL), QW_ESTATE);
	/* unknown ids */
	assert_int_equal(qw_uuid_generate(&unknown), 0);
	assert_int_equal(qw_store_key_deliver(s, &unknown, "sae-A", out, sizeof(out), NULL), QW_ENOTFOUND);
	assert_int_equal(qw_store_key_erase(s, &unknown), QW_ENOTFOUND);
	assert_int_equal(qw_store_key_info(s, &unknown, &info), QW_ENOTFOUND);
	/* bad requests */
	req.size_bits = 12;
	assert_int_equal(qw_store_key_create(s, &req, 1, ids, NULL), QW_EINVAL);
	req.size_bits = 256;
	req.master_sae = "sae-A"; /* a master without slaves */
	assert_int_equal(qw_store_key_create(s, &req, 1, ids, NULL), QW_EINVAL);
	req.master_sae = NULL;
	/* pool too small for 5 keys: none cut (all or nothing) */
	uint64_t avail;
	assert_int_equal(qw_store_pool_available(s, "bob", &avail), 0);
	assert_int_equal(avail, 2048 - 4 * 256);
	assert_int_equal(qw_store_key_create(s, &req, 5, ids, NULL), QW_EAGAIN);
	assert_int_equal(qw_store_pool_available(s, "bob", &avail), 0);
	assert_int_equal(avail, 2048 - 4 * 256);

	/* expiry: only live keys past their time */
	req.expires = 1000;
	assert_int_equal(qw_store_key_create(s, &req, 2, ids, NULL), 0);
	req.expires = 3000;
	assert_int_equal(qw_store_key_create(s, &req, 1, ids + 2, NULL), 0);
	assert_int_equal(qw_store_key_expire(s, 999, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(qw_store_key_expire(s, 2000, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(qw_store_key_info(s, &ids[0], &info), 0);
	assert_int_equal(info.state, QW_STORE_ERASED);
	assert_int_equal(qw_store_key_info(s, &ids[2], &info), 0);
	assert_int_equal(info.state, QW_STORE_AVAILABLE);
	assert_int_equal(qw_store_key_expire(s, 2000, &n), 0);
	assert_int_equal(n, 0);

	struct qw_store_stats st;
	assert_int_equal(qw_store_stats(s, "bob", &st), 0);
	assert_int_equal(st.keys[QW_STORE_AVAILABLE], 1);
	assert_int_equal(st.keys[QW_STORE_RESERVED], 0);
	assert_int_equal(st.keys[QW_STORE_DELIVERED], 3);
	assert_int_equal(st.keys[QW_STORE_ERASED], 3);
	assert_int_equal(st.bits_keyed, 7 * 256);
	/* tombstones go with purge; the live key stays */
	assert_int_equal(qw_store_purge(s, INT64_MAX, &n), 0);
	assert_int_equal(n, 6);
	assert_int_equal(qw_store_key_info(s, &ids[0], &info), QW_ENOTFOUND);
	assert_int_equal(qw_store_key_info(s, &ids[2], &info), 0);
	qw_store_close(s);
}

static void test_deliver_many(void **state)
{
	struct fx *f = *state;
	struct qw_store *s = open_store(f->db, f->mk);
	uint8_t pool[256], out[128];
	struct qw_uuid ids[4], two[2];
	struct qw_store_key_info infos[4];
	struct qw_store_key_req req = {
		.peer = "bob", .size_bits = 128, .master_sae = "A",
		.slave_saes = slaves_b, .n_slaves = 1,
	};
	size_t len = 99;

	fill_pool(f, s, "bob", 1, pool, sizeof(pool));
	assert_int_equal(qw_store_key_create(s, &req, 4, ids, NULL), 0);
	/* one id twice: nothing delivered */
	two[0] = ids[0];
	two[1] = ids[0];
	assert_int_equal(qw_store_key_deliver_many(s, two, 2, "sae-B", out, sizeof(out), &len, NULL),
			 QW_ESTATE);
	assert_int_equal(len, 0);
	assert_int_equal(qw_store_key_info(s, &ids[0], &infos[0]), 0);
	assert_int_equal(infos[0].state, QW_STORE_RESERVED);
	/* too small for all three: nothing delivered */
	assert_int_equal(qw_store_key_deliver_many(s, ids + 1, 3, "sae-B", out, 40, &len, NULL),
			 QW_ERANGE);
	assert_int_equal(qw_store_key_deliver_many(s, ids + 1, 3, "sae-B", out, sizeof(out), &len,
						   infos), 0);
	assert_int_equal(len, 48);
	assert_memory_equal(out, pool + 16, 48);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(infos[i].state, QW_STORE_DELIVERED);
		assert_int_equal(qw_uuid_compare(&infos[i].id, &ids[1 + i]), 0);
	}
	assert_int_equal(qw_store_key_deliver(s, &ids[0], "A", out, sizeof(out), NULL), 0);
	assert_memory_equal(out, pool, 16);
	qw_store_close(s);
}

/* A create of many keys (material taken from the pool in groups) gives
 * every key exactly the pool bits a plain take at the same position gives:
 * across group boundaries, block boundaries at odd bit offsets, key sizes
 * that do not divide the group, and keys larger than a group. */
static void test_create_many(void **state)
{
	static const struct { uint32_t size_bits; size_t count; } cases[] = {
		{ 256, 300 }, { 24, 1500 }, { 40000, 3 }, { 8, 1 },
	};
	static const uint64_t block_bits[] = { 30001, 26999, 77777, 120000, 40003 };
	struct fx *f = *state;
	struct qw_store *a = open_store(f->db, f->mk), *b = open_store(f->db2, f->mk);
	struct qw_store_key_req req = {
		.peer = "bob", .master_sae = "A", .slave_saes = slaves_b, .n_slaves = 1,
	};
	uint8_t *blk = malloc(120000 / 8 + 1), *want = malloc(20000), *got = malloc(20000);
	struct qw_uuid *ids = calloc(1500, sizeof(*ids));
	uint64_t left_a = 0, left_b = 0;

	assert_non_null(blk);
	assert_non_null(want);
	assert_non_null(got);
	assert_non_null(ids);
	for (size_t i = 0; i < sizeof(block_bits) / sizeof(block_bits[0]); i++) {
		size_t nb = (size_t)((block_bits[i] + 7) / 8);

		assert_int_equal(qw_rng_bytes(f->rng, blk, nb), 0);
		if (block_bits[i] % 8)
			blk[nb - 1] &= (uint8_t)(0xff00u >> (block_bits[i] % 8));
		assert_int_equal(qw_store_pool_append(a, "bob", i + 1, blk, block_bits[i]), 0);
		assert_int_equal(qw_store_pool_append(b, "bob", i + 1, blk, block_bits[i]), 0);
	}
	/* a first cut off the byte grid, so later keys start at odd offsets */
	req.size_bits = 8;
	assert_int_equal(qw_store_key_create(a, &req, 1, ids, NULL), 0);
	assert_int_equal(qw_store_pool_take(b, "bob", 8, NULL, want, 1, NULL), 0);
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		size_t kb = cases[c].size_bits / 8, total = kb * cases[c].count, len = 0;
		struct qw_store_pos at_a, at_b;

		req.size_bits = cases[c].size_bits;
		assert_true(total <= 20000);
		assert_int_equal(qw_store_key_create(a, &req, cases[c].count, ids, &at_a), 0);
		assert_int_equal(qw_store_pool_take(b, "bob", (uint64_t)total * 8, NULL, want, total,
						    &at_b), 0);
		assert_int_equal(at_a.block_id, at_b.block_id);
		assert_int_equal(at_a.bit, at_b.bit);
		assert_int_equal(qw_store_key_deliver_many(a, ids, cases[c].count, "sae-B", got, total,
							   &len, NULL), 0);
		assert_int_equal(len, total);
		assert_memory_equal(got, want, total);
		for (size_t i = 1; i < cases[c].count; i++)
			assert_int_not_equal(qw_uuid_compare(&ids[i - 1], &ids[i]), 0);
	}
	/* a cut the pool cannot cover takes nothing */
	assert_int_equal(qw_store_pool_available(a, "bob", &left_a), 0);
	assert_int_equal(qw_store_pool_available(b, "bob", &left_b), 0);
	assert_int_equal(left_a, left_b);
	req.size_bits = 256;
	assert_int_equal(qw_store_key_create(a, &req, (size_t)(left_a / 256 + 1), ids, NULL),
			 QW_EAGAIN);
	assert_int_equal(qw_store_pool_available(a, "bob", &left_b), 0);
	assert_int_equal(left_a, left_b);
	free(blk);
	free(want);
	free(got);
	free(ids);
	qw_store_close(a);
	qw_store_close(b);
}

/* Deliver one batch and cut the next in one transaction; a cut that
 * fails leaves the delivery committed and the pool untouched, and a
 * delivery that fails leaves both undone. */
static void test_deliver_create(void **state)
{
	struct fx *f = *state;
	struct qw_store *s = open_store(f->db, f->mk);
	uint8_t pool[128], out[64];
	struct qw_uuid ids[4], next[4], zero[4];
	struct qw_store_key_req req = {
		.peer = "bob", .size_bits = 128, .master_sae = "A",
		.slave_saes = slaves_b, .n_slaves = 1,
	};
	struct qw_store_key_info info;
	struct qw_store_pos at, cur;
	uint64_t left = 0;
	size_t len = 0;
	int cerr = 99;

	memset(zero, 0, sizeof(zero));
	fill_pool(f, s, "bob", 1, pool, sizeof(pool)); /* 8 keys of 128 bits */
	assert_int_equal(qw_store_key_create(s, &req, 2, ids, NULL), 0);
	assert_int_equal(qw_store_pool_cursor(s, "bob", &cur), 0);
	assert_int_equal(qw_store_key_deliver_create(s, ids, 2, "A", out, sizeof(out), &len, &req,
						     4, next, &at, &cerr), 0);
	assert_int_equal(cerr, 0);
	assert_int_equal(len, 32);
	assert_memory_equal(out, pool, 32);
	assert_int_equal(at.block_id, cur.block_id);
	assert_int_equal(at.bit, cur.bit);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(qw_store_key_info(s, &next[i], &info), 0);
		assert_int_equal(info.state, QW_STORE_RESERVED);
	}
	/* the cut cannot be covered (2 keys left, 3 asked): delivered alone */
	assert_int_equal(qw_store_key_deliver_create(s, next, 2, "A", out, sizeof(out), &len, &req,
						     3, ids, &at, &cerr), 0);
	assert_int_equal(cerr, QW_EAGAIN);
	assert_int_equal(len, 32);
	assert_memory_equal(out, pool + 32, 32);
	assert_memory_equal(ids, zero, 3 * sizeof(ids[0]));
	assert_int_equal(qw_store_key_info(s, &next[1], &info), 0);
	assert_int_equal(info.state, QW_STORE_DELIVERED);
	assert_int_equal(qw_store_pool_available(s, "bob", &left), 0);
	assert_int_equal(left, 256);
	/* a delivery that fails (already delivered) cuts nothing */
	assert_int_equal(qw_store_key_deliver_create(s, next + 1, 2, "A", out, sizeof(out), &len,
						     &req, 1, ids, &at, &cerr), QW_ESTATE);
	assert_int_equal(len, 0);
	assert_int_equal(qw_store_key_info(s, &next[2], &info), 0);
	assert_int_equal(info.state, QW_STORE_RESERVED);
	assert_int_equal(qw_store_pool_available(s, "bob", &left), 0);
	assert_int_equal(left, 256);
	assert_int_equal(qw_store_key_deliver(s, &next[3], "sae-B", out, sizeof(out), NULL), 0);
	assert_memory_equal(out, pool + 80, 16);
	qw_store_close(s);
}

/* Apply a cut announced by the peer for our own master SAE: cut and
 * delivered in one transaction. A cut that fails (position mismatch) does
 * nothing; a delivery that fails leaves the cut committed RESERVED. */
static void test_create_deliver(void **state)
{
	struct fx *f = *state;
	struct qw_store *s = open_store(f->db, f->mk);
	uint8_t pool[128], out[64];
	struct qw_uuid ids[3], given[3], got[3];
	struct qw_store_key_req req = {
		.peer = "bob", .size_bits = 128, .master_sae = "A",
		.slave_saes = slaves_b, .n_slaves = 1, .key_ids = given,
	};
	struct qw_store_key_info info;
	struct qw_store_pos pos, wrong;
	uint64_t left = 0;
	size_t len = 0;
	int derr = 99;

	fill_pool(f, s, "bob", 1, pool, sizeof(pool)); /* 8 keys of 128 bits */
	for (int i = 0; i < 3; i++)
		assert_int_equal(qw_uuid_generate(&given[i]), 0);
	assert_int_equal(qw_store_pool_cursor(s, "bob", &pos), 0);
	wrong = pos;
	wrong.bit += 8;
	req.expect = &wrong;
	assert_int_equal(qw_store_key_create_deliver(s, &req, 2, ids, NULL, "A", out, sizeof(out),
						     &len, &derr), QW_ESTATE);
	assert_int_equal(len, 0);
	assert_int_equal(qw_store_key_info(s, &given[0], &info), QW_ENOTFOUND);
	req.expect = &pos;
	assert_int_equal(qw_store_key_create_deliver(s, &req, 2, ids, NULL, "A", out, sizeof(out),
						     &len, &derr), 0);
	assert_int_equal(derr, 0);
	assert_int_equal(len, 32);
	assert_memory_equal(out, pool, 32);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(qw_uuid_compare(&ids[i], &given[i]), 0);
		assert_int_equal(qw_store_key_info(s, &given[i], &info), 0);
		assert_int_equal(info.state, QW_STORE_DELIVERED);
	}
	/* a caller outside the pair: the cut stays, nothing delivered */
	for (int i = 0; i < 3; i++)
		assert_int_equal(qw_uuid_generate(&given[i]), 0);
	req.expect = NULL;
	assert_int_equal(qw_store_key_create_deliver(s, &req, 3, got, NULL, "C", out, sizeof(out),
						     &len, &derr), 0);
	assert_int_equal(derr, QW_EPERM);
	assert_int_equal(len, 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(qw_store_key_info(s, &given[i], &info), 0);
		assert_int_equal(info.state, QW_STORE_RESERVED);
	}
	assert_int_equal(qw_store_pool_available(s, "bob", &left), 0);
	assert_int_equal(left, 3 * 128);
	assert_int_equal(qw_store_key_deliver(s, &given[2], "sae-B", out, sizeof(out), NULL), 0);
	assert_memory_equal(out, pool + 64, 16);
	qw_store_close(s);
}

struct list_ctx {
	int n;
	enum qw_store_key_state want;
	int bad;
};

static int list_cb(const struct qw_store_key_info *info, void *arg)
{
	struct list_ctx *c = arg;

	c->n++;
	if (c->want && info->state != c->want)
		c->bad++;
	return 0;
}

static int list_stop(const struct qw_store_key_info *info, void *arg)
{
	(void)info;
	(*(int *)arg)++;
	return 42;
}

static void test_key_list(void **state)
{
	struct fx *f = *state;
	struct qw_store *s = open_store(f->db, f->mk);
	uint8_t pool[128], out[16];
	struct qw_uuid ids[8];
	struct qw_store_key_req req = { .peer = "bob", .size_bits = 128 };
	struct list_ctx c = { 0 };
	int stops = 0;

	fill_pool(f, s, "bob", 1, pool, sizeof(pool));
	fill_pool(f, s, "carol", 1, pool, sizeof(pool));
	assert_int_equal(qw_store_key_create(s, &req, 4, ids, NULL), 0);
	req.peer = "carol";
	assert_int_equal(qw_store_key_create(s, &req, 3, ids + 4, NULL), 0);
	assert_int_equal(qw_store_key_reserve(s, &ids[0], "m", slaves_b, 1), 0);
	assert_int_equal(qw_store_key_reserve(s, &ids[1], "m", slaves_b, 1), 0);
	assert_int_equal(qw_store_key_deliver(s, &ids[1], "m", out, sizeof(out), NULL), 0);
	c.want = QW_STORE_AVAILABLE;
	assert_int_equal(qw_store_key_list(s, "bob", QW_STORE_AVAILABLE, list_cb, &c), 0);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.bad, 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(qw_store_key_list(s, NULL, 0, list_cb, &c), 0);
	assert_int_equal(c.n, 7);
	memset(&c, 0, sizeof(c));
	assert_int_equal(qw_store_key_list(s, "carol", QW_STORE_RESERVED, list_cb, &c), 0);
	assert_int_equal(c.n, 0);
	assert_int_equal(qw_store_key_list(s, NULL, 0, list_stop, &stops), 42);
	assert_int_equal(stops, 1);
	assert_string_equal(qw_store_state_name(QW_STORE_DELIVERED), "delivered");
	qw_store_close(s);
}

/* Both ends of a link: the same blocks, cuts announced by position and
 * followed with the same key ids give the same keys. */
static void test_two_ends(void **state)
{
	struct fx *f = *state;
	struct qw_store *a = open_store(f->db, f->mk), *b;
	uint8_t mk2[QW_STORE_MASTER_KEY_BYTES], pool[512], ka[32], kb[32];
	struct qw_uuid ids[3], dup[3];
	struct qw_store_key_req req = {
		.peer = "link", .size_bits = 256, .master_sae = "A",
		.slave_saes = slaves_b, .n_slaves = 1,
	};
	struct qw_store_pos at, at2;
	uint64_t avail;

	/* the other node has its own master key */
	assert_int_equal(qw_rng_bytes(f->rng, mk2, sizeof(mk2)), 0);
	b = open_store(f->db2, mk2);
	assert_int_equal(qw_rng_bytes(f->rng, pool, sizeof(pool)), 0);
	assert_int_equal(qw_store_pool_append(a, "link", 7, pool, 4096), 0);
	assert_int_equal(qw_store_pool_append(b, "link", 7, pool, 4096), 0);
	assert_int_equal(qw_store_pool_take(a, "link", 13, NULL, ka, sizeof(ka), NULL), 0);
	assert_int_equal(qw_store_pool_take(b, "link", 13, NULL, kb, sizeof(kb), NULL), 0);

	assert_int_equal(qw_store_key_create(a, &req, 3, ids, &at), 0);
	req.key_ids = ids;
	req.expect = &at;
	/* out of step: refused, nothing consumed */
	at2 = at;
	at2.bit = 12;
	req.expect = &at2;
	assert_int_equal(qw_store_key_create(b, &req, 3, dup, NULL), QW_ESTATE);
	req.expect = &at;
	assert_int_equal(qw_store_key_create(b, &req, 3, dup, &at2), 0);
	assert_int_equal(at2.bit, 13);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(qw_uuid_compare(&ids[i], &dup[i]), 0);
		assert_int_equal(qw_store_key_deliver(a, &ids[i], "A", ka, sizeof(ka), NULL), 0);
		assert_int_equal(qw_store_key_deliver(b, &ids[i], "sae-B", kb, sizeof(kb), NULL), 0);
		assert_memory_equal(ka, kb, sizeof(ka));
		assert_bits_equal(pool, 13 + 256 * (uint64_t)i, ka, 256);
	}
	/* a key id already in the store: the whole create is undone */
	assert_int_equal(qw_store_pool_available(b, "link", &avail), 0);
	req.expect = NULL;
	dup[0] = ids[2];
	assert_int_equal(qw_uuid_generate(&dup[1]), 0);
	req.key_ids = dup + 1;
	assert_int_equal(qw_store_key_create(b, &req, 1, ids, NULL), 0);
	req.key_ids = dup;
	assert_int_equal(qw_store_key_create(b, &req, 1, ids, NULL), QW_EEXIST);
	{
		uint64_t after;

		assert_int_equal(qw_store_pool_available(b, "link", &after), 0);
		assert_int_equal(after, avail - 256);
	}
	qw_store_close(a);
	qw_store_close(b);
}

/* ---- encryption at rest, tampering, secure delete ---- */

static sqlite3 *raw_open(const char *path)
{
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	sqlite3_busy_timeout(db, 2000);
	return db;
}

/* Copy the blob of the key row with this id (exactly len bytes). */
static void raw_key_blob(sqlite3 *db, const struct qw_uuid *id, uint8_t *out, size_t len)
{
	sqlite3_stmt *st;

	assert_int_equal(sqlite3_prepare_v2(db, "SELECT blob FROM key WHERE id = ?1", -1, &st, NULL),
			 SQLITE_OK);
	sqlite3_bind_blob(st, 1, id->b, 16, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_bytes(st, 0), (int)len);
	memcpy(out, sqlite3_column_blob(st, 0), len);
	sqlite3_finalize(st);
}

static void raw_exec(sqlite3 *db, const char *sql, const struct qw_uuid *id, const uint8_t *blob,
		     size_t len)
{
	sqlite3_stmt *st;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (id)
		sqlite3_bind_blob(st, 1, id->b, 16, SQLITE_STATIC);
	if (blob)
		sqlite3_bind_blob(st, 2, blob, (int)len, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
}

static void test_encrypted_at_rest(void **state)
{
	struct fx *f = *state;
	struct qw_store *s = open_store(f->db, f->mk);
	uint8_t pool[1024];
	struct qw_uuid ids[8];
	struct qw_store_key_req req = { .peer = "bob", .size_bits = 512 };
	sqlite3 *db;
	sqlite3_stmt *st;
	int rows = 0;

	fill_pool(f, s, "bob", 1, pool, sizeof(pool));
	assert_int_equal(qw_store_key_create(s, &req, 8, ids, NULL), 0);
	/* the first half of the pool is now in keys, the rest in chunks */
	assert_false(file_has_any(f->db, pool, sizeof(pool)));
	assert_int_equal(qw_store_checkpoint(s), 0);
	assert_false(file_has_any(f->db, pool, sizeof(pool)));
	/* the database and its WAL are private to the owner */
	{
		char wal[128];
		struct stat sb;

		snprintf(wal, sizeof(wal), "%s-wal", f->db);
		assert_int_equal(stat(f->db, &sb), 0);
		assert_int_equal(sb.st_mode & 077, 0);
		assert_int_equal(stat(wal, &sb), 0);
		assert_int_equal(sb.st_mode & 077, 0);
	}
	qw_store_close(s);
	assert_false(file_has_any(f->db, pool, sizeof(pool)));
	/* every blob in the database, read through SQLite */
	db = raw_open(f->db);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT blob FROM key UNION ALL SELECT blob FROM chunk",
					    -1, &st, NULL), SQLITE_OK);
	while (sqlite3_step(st) == SQLITE_ROW) {
		const uint8_t *b = sqlite3_column_blob(st, 0);
		int n = sqlite3_column_bytes(st, 0);

		for (size_t i = 0; i + 16 <= sizeof(pool); i += 8)
			assert_false(contains(b, (size_t)n, pool + i, 16));
		rows++;
	}
	assert_int_equal(rows, 8 + 1); /* 8 keys and the untouched second chunk */
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void test_tamper(void **state)
{
	struct fx *f = *state;
	struct qw_store *s = open_store(f->db, f->mk);
	uint8_t pool[256], blob[2][32 + 28], out[32];
	struct qw_uuid ids[4];
	struct qw_store_key_req req = {
		.peer = "bob", .size_bits = 256, .master_sae = "A",
		.slave_saes = slaves_b, .n_slaves = 1,
	};
	struct qw_store_key_info info;
	sqlite3 *db;

	fill_pool(f, s, "bob", 1, pool, sizeof(pool));
	assert_int_equal(qw_store_key_create(s, &req, 4, ids, NULL), 0);
	db = raw_open(f->db);
	raw_key_blob(db, &ids[0], blob[0], sizeof(blob[0]));
	raw_key_blob(db, &ids[1], blob[1], sizeof(blob[1]));

	/* one flipped ciphertext bit */
	blob[0][20] ^= 1;
	raw_exec(db, "UPDATE key SET blob = ?2 WHERE id = ?1", &ids[0], blob[0], sizeof(blob[0]));
	assert_int_equal(qw_store_key_deliver(s, &ids[0], "A", out, sizeof(out), NULL), QW_EAUTH);
	assert_int_equal(qw_store_key_info(s, &ids[0], &info), 0);
	assert_int_equal(info.state, QW_STORE_RESERVED); /* nothing changed */
	/* a valid blob moved to another row */
	raw_exec(db, "UPDATE key SET blob = ?2 WHERE id = ?1", &ids[2], blob[1], sizeof(blob[1]));
	assert_int_equal(qw_store_key_deliver(s, &ids[2], "A", out, sizeof(out), NULL), QW_EAUTH);
	/* the SAE binding edited: the key would go to someone else */
	raw_exec(db, "UPDATE key SET master = 'mallory' WHERE id = ?1", &ids[3], NULL, 0);
	assert_int_equal(qw_store_key_deliver(s, &ids[3], "mallory", out, sizeof(out), NULL), QW_EAUTH);
	/* untouched row still fine */
	assert_int_equal(qw_store_key_deliver(s, &ids[1], "A", out, sizeof(out), NULL), 0);
	assert_memory_equal(out, pool + 32, 32);
	/* pool chunks: a flipped bit in the remaining material */
	raw_exec(db, "UPDATE chunk SET blob = zeroblob(length(blob))", NULL, NULL, 0);
	assert_int_equal(qw_store_pool_take(s, "bob", 8, NULL, out, sizeof(out), NULL), QW_EAUTH);
	sqlite3_close(db);
	qw_store_close(s);
}

static void test_wrong_master_key(void **state)
{
	struct fx *f = *state;
	struct qw_store *s = open_store(f->db, f->mk);
	uint8_t other[QW_STORE_MASTER_KEY_BYTES];
	int err = 0;

	qw_store_close(s);
	memcpy(other, f->mk, sizeof(other));
	other[31] ^= 0x80;
	assert_null(qw_store_open(f->db, other, NULL, &err));
	assert_int_equal(err, QW_EAUTH);
	s = open_store(f->db, f->mk);
	qw_store_close(s);
}

static void test_secure_delete(void **state)
{
	struct fx *f = *state;
	struct qw_store *s = open_store(f->db, f->mk);
	/* large keys span overflow pages, small ones sit in the b-tree page */
	uint8_t pool[4096], *ct = malloc(2048 + 28), small[32 + 28], out[2048];
	struct qw_uuid ids[2], sid[2];
	struct qw_store_key_req req = {
		.peer = "bob", .size_bits = 2048 * 8, .master_sae = "A",
		.slave_saes = slaves_b, .n_slaves = 1,
	};
	sqlite3 *db;

	assert_non_null(ct);
	fill_pool(f, s, "bob", 1, pool, sizeof(pool));
	assert_int_equal(qw_store_key_create(s, &req, 1, ids, NULL), 0);
	req.size_bits = 256;
	assert_int_equal(qw_store_key_create(s, &req, 2, sid, NULL), 0);
	db = raw_open(f->db);
	raw_key_blob(db, &ids[0], ct, 2048 + 28);
	raw_key_blob(db, &sid[0], small, sizeof(small));
	sqlite3_close(db);
	assert_int_equal(qw_store_checkpoint(s), 0);
	/* sanity: the ciphertexts are in the file before */
	assert_true(file_has_any(f->db, ct + 12, 2048));
	assert_true(file_has_any(f->db, small + 12, 32));

	assert_int_equal(qw_store_key_deliver(s, &ids[0], "A", out, sizeof(out), NULL), 0);
	assert_int_equal(qw_store_key_erase(s, &sid[0]), 0);
	assert_int_equal(qw_store_checkpoint(s), 0);
	assert_false(file_has_any(f->db, ct + 12, 2048));
	assert_false(file_has_any(f->db, small + 12, 32));

	/* pool chunks consumed by a take are gone too */
	db = raw_open(f->db);
	{
		sqlite3_stmt *st;
		uint8_t chunk[512 + 28];

		assert_int_equal(sqlite3_prepare_v2(db, "SELECT blob FROM chunk ORDER BY seq DESC LIMIT 1",
						    -1, &st, NULL), SQLITE_OK);
		assert_int_equal(sqlite3_step(st), SQLITE_ROW);
		assert_int_equal(sqlite3_column_bytes(st, 0), (int)sizeof(chunk));
		memcpy(chunk, sqlite3_column_blob(st, 0), sizeof(chunk));
		sqlite3_finalize(st);
		sqlite3_close(db);
		assert_true(file_has_any(f->db, chunk + 12, 512));
		uint64_t avail;
		assert_int_equal(qw_store_pool_available(s, "bob", &avail), 0);
		assert_int_equal(qw_store_pool_take(s, "bob", avail, NULL, out, sizeof(out), NULL), 0);
		assert_int_equal(qw_store_checkpoint(s), 0);
		assert_false(file_has_any(f->db, chunk + 12, 512));
	}
	qw_store_close(s);
	free(ct);
}

/* ---- resynchronisation ---- */

static void test_resync(void **state)
{
	struct fx *f = *state;
	struct qw_store *a = open_store(f->db, f->mk), *b = open_store(f->db2, f->mk);
	uint8_t blk[4][256], oa[300], ob[300];
	struct qw_store_block_state *la, *lb;
	size_t na, nb, kd;
	uint64_t da, db_, avail_a, avail_b;
	struct qw_store_pos pa, pb;
	struct qw_uuid ka[3], kb[3];
	struct qw_store_key_req req = { .peer = "link", .size_bits = 64 };
	struct qw_store_stats st;

	for (int i = 0; i < 4; i++)
		assert_int_equal(qw_rng_bytes(f->rng, blk[i], sizeof(blk[i])), 0);
	/* a lost block 4 (crash before commit), b never saw block 1 (or
	 * consumed it) and is 100 bits further into block 2 */
	for (int i = 1; i <= 3; i++)
		assert_int_equal(qw_store_pool_append(a, "link", (uint64_t)i, blk[i - 1], 2048), 0);
	for (int i = 2; i <= 4; i++)
		assert_int_equal(qw_store_pool_append(b, "link", (uint64_t)i, blk[i - 1], 2048), 0);
	assert_int_equal(qw_store_pool_take(b, "link", 100, NULL, ob, sizeof(ob), NULL), 0);

	assert_int_equal(qw_store_pool_blocks(a, "link", &la, &na), 0);
	assert_int_equal(qw_store_pool_blocks(b, "link", &lb, &nb), 0);
	assert_int_equal(na, 3);
	assert_int_equal(nb, 3);
	assert_int_equal(lb[0].used, 100);
	assert_int_equal(qw_store_pool_resync(a, "link", lb, nb, &da), 0);
	assert_int_equal(qw_store_pool_resync(b, "link", la, na, &db_), 0);
	assert_int_equal(da, 2048 + 100);
	assert_int_equal(db_, 2048);
	free(la);
	free(lb);
	assert_int_equal(qw_store_pool_available(a, "link", &avail_a), 0);
	assert_int_equal(qw_store_pool_available(b, "link", &avail_b), 0);
	assert_int_equal(avail_a, 2 * 2048 - 100);
	assert_int_equal(avail_a, avail_b);
	assert_int_equal(qw_store_pool_cursor(a, "link", &pa), 0);
	assert_int_equal(qw_store_pool_cursor(b, "link", &pb), 0);
	assert_int_equal(pa.block_id, 2);
	assert_int_equal(pa.bit, 100);
	assert_int_equal(pb.block_id, pa.block_id);
	assert_int_equal(pb.bit, pa.bit);
	/* from here both ends take identical bits */
	assert_int_equal(qw_store_pool_take(a, "link", 2000, NULL, oa, sizeof(oa), NULL), 0);
	assert_int_equal(qw_store_pool_take(b, "link", 2000, NULL, ob, sizeof(ob), NULL), 0);
	assert_memory_equal(oa, ob, 250);
	assert_bits_equal(blk[1], 100, oa, 1948);
	for (uint64_t i = 0; i < 52; i++) /* the take crossed into block 3 */
		assert_int_equal(bit_at(oa, 1948 + i), bit_at(blk[2], i));

	/* keys: a has k0..k2, b has k1, k2 and one a never heard of */
	assert_int_equal(qw_store_key_create(a, &req, 3, ka, NULL), 0);
	req.key_ids = ka + 1;
	assert_int_equal(qw_store_key_create(b, &req, 2, kb, NULL), 0);
	req.key_ids = NULL;
	assert_int_equal(qw_store_key_create(b, &req, 1, kb + 2, NULL), 0);
	/* a delivered k1 to its master: b's copy is still owed to the slave */
	assert_int_equal(qw_store_key_reserve(a, &ka[1], "A", slaves_b, 1), 0);
	assert_int_equal(qw_store_key_deliver(a, &ka[1], "A", oa, sizeof(oa), NULL), 0);
	{
		struct qw_uuid *lka, *lkb;
		size_t nka, nkb;

		assert_int_equal(qw_store_key_resync_list(a, "link", &lka, &nka), 0);
		assert_int_equal(qw_store_key_resync_list(b, "link", &lkb, &nkb), 0);
		assert_int_equal(nka, 3);
		assert_int_equal(nkb, 3);
		assert_int_equal(qw_store_key_resync(a, "link", lkb, nkb, &kd), 0);
		assert_int_equal(kd, 1);
		assert_int_equal(qw_store_key_resync(b, "link", lka, nka, &kd), 0);
		assert_int_equal(kd, 1);
		free(lka);
		free(lkb);
	}
	assert_int_equal(qw_store_stats(a, "link", &st), 0);
	assert_int_equal(st.keys[QW_STORE_AVAILABLE], 1);
	assert_int_equal(st.keys[QW_STORE_DELIVERED], 1);
	assert_int_equal(st.keys[QW_STORE_ERASED], 1);
	assert_int_equal(qw_store_stats(b, "link", &st), 0);
	assert_int_equal(st.keys[QW_STORE_AVAILABLE], 2);
	assert_int_equal(st.keys[QW_STORE_ERASED], 1);
	/* the slave's copy survived (its bits are not a's here: this test
	 * cut b's keys without following a's positions) */
	assert_int_equal(qw_store_key_reserve(b, &ka[1], "A", slaves_b, 1), 0);
	assert_int_equal(qw_store_key_deliver(b, &ka[1], "sae-B", ob, sizeof(ob), NULL), 0);
	assert_int_equal(qw_store_stats(b, "link", &st), 0);
	/* accounting holds across resync on both ends */
	assert_int_equal(st.bits_in, st.bits_taken + st.bits_keyed + st.bits_dropped +
				     st.bits_available);
	assert_int_equal(qw_store_stats(a, "link", &st), 0);
	assert_int_equal(st.bits_in, st.bits_taken + st.bits_keyed + st.bits_dropped +
				     st.bits_available);
	/* a malformed list */
	struct qw_store_block_state bad = { .block_id = 3, .nbits = 10, .used = 11 };
	assert_int_equal(qw_store_pool_resync(a, "link", &bad, 1, NULL), QW_EINVAL);
	/* an empty list from the peer drops everything */
	assert_int_equal(qw_store_pool_resync(a, "link", NULL, 0, &da), 0);
	assert_int_equal(qw_store_pool_available(a, "link", &avail_a), 0);
	assert_int_equal(avail_a, 0);
	qw_store_close(a);
	qw_store_close(b);
}

/* ---- accounting under a random workload ---- */

static void test_accounting(void **state)
{
	struct fx *f = *state;
	struct qw_store *s = open_store(f->db, f->mk);
	struct qw_store_opts o = { .sync = QW_STORE_SYNC_NORMAL };
	uint64_t in = 0, out_taken = 0, out_keyed = 0, next_id = 1;
	uint8_t buf[1024];
	struct qw_store_stats st;
	int err;

	qw_store_close(s);
	s = qw_store_open(f->db, f->mk, &o, &err);
	assert_non_null(s);
	for (int i = 0; i < 300; i++) {
		uint64_t r = qw_rng_below(f->rng, 3), n;
		int ret;

		if (r == 0) {
			n = 1 + qw_rng_below(f->rng, 8 * sizeof(buf));
			assert_int_equal(qw_rng_bytes(f->rng, buf, sizeof(buf)), 0);
			assert_int_equal(qw_store_pool_append(s, "p", next_id++, buf, n), 0);
			in += n;
		} else if (r == 1) {
			n = 1 + qw_rng_below(f->rng, 3000);
			ret = qw_store_pool_take(s, "p", n, NULL, buf, sizeof(buf), NULL);
			assert_true(ret == 0 || ret == QW_EAGAIN);
			if (!ret)
				out_taken += n;
		} else {
			struct qw_store_key_req req = { .peer = "p" };
			struct qw_uuid ids[3];
			size_t cnt = 1 + qw_rng_below(f->rng, 3);

			req.size_bits = 8 * (uint32_t)(1 + qw_rng_below(f->rng, 64));
			ret = qw_store_key_create(s, &req, cnt, ids, NULL);
			assert_true(ret == 0 || ret == QW_EAGAIN);
			if (!ret)
				out_keyed += cnt * req.size_bits;
		}
		assert_int_equal(qw_store_stats(s, "p", &st), 0);
		assert_int_equal(st.bits_in, in);
		assert_int_equal(st.bits_taken, out_taken);
		assert_int_equal(st.bits_keyed, out_keyed);
		assert_int_equal(st.bits_dropped, 0);
		assert_int_equal(st.bits_in, st.bits_taken + st.bits_keyed + st.bits_available);
	}
	qw_store_close(s);
}

/* ---- concurrency ---- */

enum { THREAD_TAKES = 60, TAKE_BITS = 200 };

struct taker {
	struct qw_store *s;
	uint8_t out[THREAD_TAKES][TAKE_BITS / 8];
	struct qw_store_pos at[THREAD_TAKES];
	int err;
};

static void *take_thread(void *arg)
{
	struct taker *t = arg;

	for (int i = 0; i < THREAD_TAKES && !t->err; i++)
		t->err = qw_store_pool_take(t->s, "bob", TAKE_BITS, NULL, t->out[i],
					    sizeof(t->out[i]), &t->at[i]);
	return NULL;
}

static void test_concurrent_takes(void **state)
{
	struct fx *f = *state;
	struct qw_store_opts o = { .sync = QW_STORE_SYNC_NORMAL };
	struct qw_store *s;
	enum { POOL_BYTES = 2 * THREAD_TAKES * TAKE_BITS / 8 };
	static uint8_t pool[POOL_BYTES];
	static unsigned char seen[POOL_BYTES * 8];
	static struct taker t[2];
	pthread_t th[2];
	uint64_t avail;
	int err;

	s = qw_store_open(f->db, f->mk, &o, &err);
	assert_non_null(s);
	memset(seen, 0, sizeof(seen));
	/* three blocks, so takes also straddle block boundaries */
	assert_int_equal(qw_rng_bytes(f->rng, pool, sizeof(pool)), 0);
	assert_int_equal(qw_store_pool_append(s, "bob", 1, pool, 8 * 1000), 0);
	assert_int_equal(qw_store_pool_append(s, "bob", 2, pool + 1000, 8 * 1000), 0);
	assert_int_equal(qw_store_pool_append(s, "bob", 3, pool + 2000, 8 * (POOL_BYTES - 2000)), 0);
	for (int i = 0; i < 2; i++) {
		memset(&t[i], 0, sizeof(t[i]));
		t[i].s = s;
		assert_int_equal(pthread_create(&th[i], NULL, take_thread, &t[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(t[i].err, 0);
		for (int j = 0; j < THREAD_TAKES; j++) {
			uint64_t g = (t[i].at[j].block_id - 1) * 8000 + t[i].at[j].bit;

			/* each take is exactly the pool's bits at its position */
			assert_bits_equal(pool, g, t[i].out[j], TAKE_BITS);
			for (uint64_t b = g; b < g + TAKE_BITS; b++) {
				assert_int_equal(seen[b], 0); /* no bit handed out twice */
				seen[b] = 1;
			}
		}
	}
	for (size_t b = 0; b < sizeof(seen); b++)
		assert_int_equal(seen[b], 1);
	assert_int_equal(qw_store_pool_available(s, "bob", &avail), 0);
	assert_int_equal(avail, 0);
	qw_store_close(s);
}

static off_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : 0;
}

/* The store's connection never checkpoints in a commit: its own thread
 * does, once the WAL passes 1000 pages (store_sqlite.c). With the
 * automatic checkpoint off and no checkpointer, the database file would
 * never grow and the WAL would grow without bound. An explicit
 * checkpoint meanwhile waits for the thread's, never fails BUSY, and
 * empties the WAL. */
static void test_background_checkpoint(void **state)
{
	struct fx *f = *state;
	struct qw_store_opts o = { .sync = QW_STORE_SYNC_NORMAL };
	struct qw_store *s;
	char wal[128];
	uint8_t bits[8192];
	uint64_t id = 0, avail = 0;
	off_t db0;
	int err;

	snprintf(wal, sizeof(wal), "%s-wal", f->db);
	s = qw_store_open(f->db, f->mk, &o, &err);
	assert_non_null(s);
	db0 = file_size(f->db);
	/* WAL pages are 4096 bytes + a 24-byte frame header */
	while (file_size(f->db) == db0 && file_size(wal) < 1100 * 4120 && id < 20000) {
		assert_int_equal(qw_rng_bytes(f->rng, bits, sizeof(bits)), 0);
		assert_int_equal(qw_store_pool_append(s, "peer-x", ++id, bits, 8 * sizeof(bits)), 0);
	}
	assert_true(id < 20000);
	/* no store call from here on: only the thread can move the pages */
	for (int i = 0; i < 1000 && file_size(f->db) == db0; i++)
		usleep(10000);
	assert_true(file_size(f->db) > db0);
	assert_int_equal(qw_store_pool_available(s, "peer-x", &avail), 0);
	assert_int_equal(avail, id * 8 * sizeof(bits));
	for (int i = 0; i < 50; i++) {
		assert_int_equal(qw_rng_bytes(f->rng, bits, sizeof(bits)), 0);
		assert_int_equal(qw_store_pool_append(s, "peer-x", ++id, bits, 8 * sizeof(bits)), 0);
	}
	assert_int_equal(qw_store_checkpoint(s), 0);
	assert_int_equal(file_size(wal), 0);
	qw_store_close(s);
	s = qw_store_open(f->db, f->mk, &o, &err);
	assert_non_null(s);
	assert_int_equal(qw_store_pool_available(s, "peer-x", &avail), 0);
	assert_int_equal(avail, id * 8 * sizeof(bits));
	qw_store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_masterkey_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_passphrase, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pool_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_states, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_many, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_many, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_create, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_deliver, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_ends, setup, teardown),
		cmocka_unit_test_setup_teardown(test_encrypted_at_rest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tamper, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_master_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_secure_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_accounting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_takes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_background_checkpoint, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
