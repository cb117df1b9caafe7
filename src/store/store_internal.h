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

#include <stddef.h>
#include <stdint.h>

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

#endif
