/* Key store backend table (STYLE.md item 5). store.c holds the logic and
 * the cryptography, takes the lock and wraps each public call in
 * begin..commit; a backend only keeps rows. Secret material reaches a
 * backend only sealed (blob = nonce | ciphertext | tag).
 *
 * Every backend function returns 0 or a QW_E* code (QW_ENOTFOUND for an
 * absent row, QW_EEXIST for a duplicate key, QW_EDB otherwise). Blobs
 * returned through an out-row are malloc()ed and owned by the caller. */
#ifndef QWAVE_STORE_INTERNAL_H
#define QWAVE_STORE_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "qwave/aead.h"
#include "qwave/store.h"

/* Per-peer pool accounting (exact: bits_in = taken + keyed + dropped +
 * bits still in blocks). last_block: largest block id ever appended. */
struct qw_sb_peer {
	uint64_t bits_in, taken, keyed, dropped;
	uint64_t last_block;
	int has_last;
};

struct qw_sb_block {
	uint64_t block_id, nbits, used;
};

/* A sealed piece of a block: bits [start, start + nbits) of the block. */
struct qw_sb_chunk {
	uint64_t block_id, seq, start, nbits;
	uint8_t *blob;
	size_t bloblen;
};

struct qw_sb_key {
	struct qw_uuid id;
	char peer[QW_STORE_NAME_MAX + 1];
	uint32_t size_bits;
	int state;
	char master[QW_STORE_NAME_MAX + 1];
	/* slave SAE ids joined with '\n' */
	char slaves[QW_STORE_SLAVES_MAX * (QW_STORE_NAME_MAX + 1)];
	int64_t created, expires, delivered_at, closed_at;
	uint8_t *blob; /* NULL: no material (DELIVERED, ERASED) */
	size_t bloblen;
};

struct qw_store_backend {
	const char *name;
	int (*open)(void **db, const char *path, const struct qw_store_opts *o);
	void (*close)(void *db);
	int (*begin)(void *db); /* a write transaction */
	int (*commit)(void *db);
	int (*rollback)(void *db);

	int (*meta_get)(void *db, const char *name, uint8_t **val, size_t *len);
	int (*meta_put)(void *db, const char *name, const uint8_t *val,
			size_t len);

	/* Absent peer: all-zero row and 0. */
	int (*peer_get)(void *db, const char *peer, struct qw_sb_peer *p);
	int (*peer_put)(void *db, const char *peer, const struct qw_sb_peer *p);
	/* Summed over all peers. */
	int (*peer_total)(void *db, struct qw_sb_peer *p);

	int (*block_insert)(void *db, const char *peer,
			    const struct qw_sb_block *b);
	int (*block_update)(void *db, const char *peer,
			    const struct qw_sb_block *b);
	/* Delete rows of fully consumed blocks; *n gets how many. */
	int (*block_purge)(void *db, size_t *n);
	/* Blocks with used < nbits, by block id; *out malloc()ed. peer NULL:
	 * all peers. */
	int (*block_list)(void *db, const char *peer, struct qw_sb_block **out,
			  size_t *n);

	int (*chunk_insert)(void *db, const char *peer,
			    const struct qw_sb_chunk *c);
	/* Lowest-seq chunk of a block. */
	int (*chunk_first)(void *db, const char *peer, uint64_t block_id,
			   struct qw_sb_chunk *c);
	int (*chunk_update)(void *db, const char *peer,
			    const struct qw_sb_chunk *c);
	int (*chunk_delete)(void *db, const char *peer, uint64_t block_id,
			    uint64_t seq);
	/* Every chunk of a block (resync drops whole blocks). */
	int (*chunk_delete_block)(void *db, const char *peer, uint64_t block_id);

	int (*key_insert)(void *db, const struct qw_sb_key *k);
	int (*key_get)(void *db, const struct qw_uuid *id, struct qw_sb_key *k);
	/* Rewrites every mutable column (state, SAEs, times, blob). */
	int (*key_update)(void *db, const struct qw_sb_key *k);
	/* Ids of keys of peer (NULL any) in state (0 any) whose expiry is in
	 * (0, expires_by] (expires_by 0: no filter), in creation order. */
	int (*key_ids)(void *db, const char *peer, int state, int64_t expires_by,
		       struct qw_uuid **out, size_t *n);
	int (*key_count)(void *db, const char *peer, uint64_t counts[5]);
	int (*key_purge)(void *db, int64_t before, size_t *n);

	int (*checkpoint)(void *db);
};

extern const struct qw_store_backend qw_store_backend_sqlite;

/* ---- shared by store.c, store_pool.c, store_key.c ---- */

#define QW_ST_NONCE QW_AEAD_NONCE_BYTES
#define QW_ST_TAG QW_AEAD_GCM_TAG_BYTES
#define QW_ST_BLOB_OVERHEAD (QW_ST_NONCE + QW_ST_TAG)
/* Pool blocks are sealed in chunks, so that taking a few bits re-seals at
 * most one chunk instead of the whole block. */
#define QW_ST_CHUNK_BITS 4096u
#define QW_ST_CHUNK_BYTES (QW_ST_CHUNK_BITS / 8)
#define QW_ST_AAD_MAX                                                          \
	(128 + QW_UUID_BYTES + (QW_STORE_SLAVES_MAX + 2) * (QW_STORE_NAME_MAX + 1))

struct qw_store {
	pthread_mutex_t lock;
	const struct qw_store_backend *be;
	void *db;
	struct qw_aead *aead; /* AES-256-GCM under the data key */
};

/* Associated data under construction. */
struct qw_st_aad {
	uint8_t b[QW_ST_AAD_MAX];
	size_t n;
};

void qw_st_aad_bytes(struct qw_st_aad *a, const void *p, size_t n);
/* Strings go in with their NUL, integers as 8 bytes big-endian. */
void qw_st_aad_str(struct qw_st_aad *a, const char *s);
void qw_st_aad_u64(struct qw_st_aad *a, uint64_t v);
/* Join slave ids (valid names, at most QW_STORE_SLAVES_MAX) with '\n'
 * into out (sized as struct qw_sb_key.slaves). 0 or QW_EINVAL. */
int qw_st_join_slaves(const char *const *sl, size_t n, char *out, size_t cap);
/* The associated data a key row's material is sealed under (store_key.c);
 * every writer of key rows (cut, import) uses it. */
void qw_st_key_aad(struct qw_st_aad *a, const struct qw_sb_key *k);
/* blob = nonce | ciphertext | tag, malloc()ed. 0 or QW_E*. */
QW_WUR int qw_st_seal(struct qw_store *s, const struct qw_st_aad *a, const uint8_t *pt,
		      size_t ptlen, uint8_t **blob, size_t *bloblen);
/* Opens a blob that must hold exactly ptlen bytes; QW_EAUTH otherwise. */
QW_WUR int qw_st_unseal(struct qw_store *s, const struct qw_st_aad *a,
			const uint8_t *blob, size_t bloblen, uint8_t *pt, size_t ptlen);
int64_t qw_st_now(void);
/* 1..QW_STORE_NAME_MAX printable bytes (no control characters). */
int qw_st_valid_name(const char *s);
/* Lock and BEGIN; on failure the lock is released again. */
int qw_st_tx_begin(struct qw_store *s);
/* Commit when ret is 0, roll back otherwise; releases the lock. */
int qw_st_tx_end(struct qw_store *s, int ret);
/* Inside a transaction: take nbits from the front of peer's pool into out
 * (zeroed first), booked as keyed (key cuts) or taken (raw takes). */
int qw_st_pool_take_locked(struct qw_store *s, const char *peer, uint64_t nbits,
			   const struct qw_store_pos *expect, uint8_t *out,
			   struct qw_store_pos *at, int keyed);

#endif
