/* Durable, encrypted key store of a trusted node (SYSTEM.md section 3).
 *
 * Two layers of secret material, both per neighbour ("peer"):
 *
 *   pools  raw link-key material: append-only blocks of distilled secret
 *          bits, identified by (peer, block id) - the id both ends of the
 *          link agree on - consumed from the front in block-id order with a
 *          cursor. Relay (OTP, MAC keys) takes bits straight from a pool;
 *          keys are cut from it.
 *   keys   {key id (UUID v4, ETSI GS QKD 014 key_ID), peer, size in bits,
 *          state, master SAE, slave SAE(s), created, expires, delivered_at}
 *          cut from a pool's material.
 *
 * Key states and the only legal transitions:
 *
 *     create(no SAE) --> AVAILABLE --reserve--> RESERVED --deliver--> DELIVERED
 *     create(SAE pair) ---------------------->  RESERVED
 *     AVAILABLE, RESERVED --erase/expire/resync--> ERASED
 *
 * DELIVERED and ERASED are terminal tombstones without material: a key is
 * handed out at most once (delivery returns the material and destroys it in
 * the same transaction), and its id can never come back. Anything else is
 * QW_ESTATE. Tombstones are removed by qw_store_purge().
 *
 * At rest every piece of material is sealed with AES-256-GCM under a data
 * key derived (HKDF-SHA-256) from the node master key, with the row's
 * identity and metadata as associated data, so rows cannot be swapped or
 * edited without QW_EAUTH. Erased material is overwritten in the database
 * file (SQLite secure_delete) rather than unlinked. Every public call that
 * changes state is one transaction (SQLite WAL, synchronous=FULL by
 * default): after a crash at any point each call either happened entirely
 * or not at all. docs/store.md gives the schema, the crash model and the
 * resynchronisation protocol.
 *
 * Bit strings are bytes, MSB first (as qw_bitvec_to_bytes), tail bits of a
 * last partial byte zero.
 *
 * A struct qw_store is thread-safe: every public function takes the store's
 * lock and delegates to the backend (SQLite now; the backend table is in
 * src/store/store_internal.h). */
#ifndef QWAVE_STORE_H
#define QWAVE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"
#include "qwave/uuid.h"

#define QW_STORE_MASTER_KEY_BYTES 32
/* Longest peer name or SAE id, without the NUL. */
#define QW_STORE_NAME_MAX 127
/* Most slave SAEs of one key (ETSI 014 additional_slave_SAE_IDs + 1). */
#define QW_STORE_SLAVES_MAX 8
/* Largest key (ETSI 014 max_key_size is the node's choice; 1 Mbit here). */
#define QW_STORE_KEY_MAX_BITS (1u << 20)
/* Largest pool block accepted by qw_store_pool_append (64 Mbit). */
#define QW_STORE_BLOCK_MAX_BITS (UINT64_C(1) << 26)

enum qw_store_key_state {
	QW_STORE_AVAILABLE = 1,
	QW_STORE_RESERVED = 2,
	QW_STORE_DELIVERED = 3,
	QW_STORE_ERASED = 4,
};

enum qw_store_sync {
	QW_STORE_SYNC_FULL = 0,   /* fsync at every commit (default, durable) */
	QW_STORE_SYNC_NORMAL = 1, /* WAL: atomic, but the last commits may be
				   * lost on power failure (not on kill -9) */
};

struct qw_store_opts {
	enum qw_store_sync sync;
	int busy_timeout_ms; /* 0: 5000 */
	/* scrypt cost for qw_store_open_passphrase on a NEW store (log2 N,
	 * 10..22, else QW_EINVAL; 0: 15, i.e. 32 MiB with r = 8). Existing
	 * stores keep theirs. */
	unsigned scrypt_log2n;
};

/* A position in a peer's pool: bit offset inside a block. Both ends of a
 * link consume their pools in the same order, so the position where a cut
 * starts names the same bits on both sides. */
struct qw_store_pos {
	uint64_t block_id;
	uint64_t bit;
};

/* One block as exchanged in a resynchronisation: its id and how many of its
 * bits are consumed (from the front). */
struct qw_store_block_state {
	uint64_t block_id;
	uint64_t nbits;
	uint64_t used;
};

struct qw_store_key_info {
	struct qw_uuid id;
	char peer[QW_STORE_NAME_MAX + 1];
	uint32_t size_bits;
	enum qw_store_key_state state;
	char master_sae[QW_STORE_NAME_MAX + 1]; /* "" when AVAILABLE */
	size_t n_slaves;
	char slave_saes[QW_STORE_SLAVES_MAX][QW_STORE_NAME_MAX + 1];
	int64_t created, expires, delivered_at; /* Unix seconds; 0 = none */
};

/* Counters for metrics. Pool accounting is exact and invariant:
 * bits_in == bits_taken + bits_keyed + bits_dropped + bits_available. */
struct qw_store_stats {
	uint64_t keys[5]; /* indexed by enum qw_store_key_state */
	uint64_t blocks;  /* blocks with material left */
	uint64_t bits_in, bits_taken, bits_keyed, bits_dropped, bits_available;
};

/* Request to cut keys from a pool (qw_store_key_create). */
struct qw_store_key_req {
	const char *peer;
	uint32_t size_bits;        /* multiple of 8, 8..QW_STORE_KEY_MAX_BITS */
	const char *master_sae;    /* NULL: keys are AVAILABLE, else RESERVED */
	const char *const *slave_saes; /* n_slaves ids (0 allowed only with */
	size_t n_slaves;               /* master_sae NULL) */
	int64_t expires;           /* Unix seconds; 0 = never */
	/* NULL: fresh UUIDs. Else count ids chosen by the other end of the
	 * link (the side following a cut announced by its peer). */
	const struct qw_uuid *key_ids;
	/* NULL: cut wherever the pool cursor is. Else the cut must start
	 * exactly here (QW_ESTATE otherwise: the two ends are out of step and
	 * must resynchronise). */
	const struct qw_store_pos *expect;
};

/* ---- master key (src/store/masterkey.c) ---- */

/* Create path (O_EXCL, mode 0600) holding 32 fresh random bytes, and copy
 * them to mk. 0, QW_EEXIST, QW_EIO, or the qw_random_bytes error; on error
 * mk is wiped and no file is left behind. */
QW_WUR int qw_store_masterkey_create(const char *path,
				     uint8_t mk[static QW_STORE_MASTER_KEY_BYTES]);
/* Read a master key file into mk. Refuses (QW_EPERM) a file that is not a
 * regular file owned by the caller or that group/others may read or
 * write (chmod 600 fixes it); QW_EPARSE unless it holds exactly 32 bytes;
 * QW_ENOTFOUND, QW_EIO. mk is wiped on error. */
QW_WUR int qw_store_masterkey_load(const char *path,
				   uint8_t mk[static QW_STORE_MASTER_KEY_BYTES]);
/* scrypt (RFC 7914, OpenSSL EVP_KDF "SCRYPT") of a passphrase with r = 8,
 * p = 1, N = 2^log2n (10 <= log2n <= 22). 0, QW_EINVAL, QW_ECRYPTO. */
QW_WUR int qw_store_masterkey_derive(const char *pass, size_t passlen,
				     const uint8_t *salt, size_t saltlen,
				     unsigned log2n,
				     uint8_t mk[static QW_STORE_MASTER_KEY_BYTES]);

/* ---- open / close ---- */

/* Open (creating if absent) the store at path (an SQLite file; "-wal" and
 * "-shm" files appear next to it, all mode 0600) under master key mk
 * (copied; the caller wipes its own). opts may be NULL for defaults.
 * Returns NULL and sets *err (err may be NULL): QW_EAUTH (the store was
 * created under another master key), QW_EDB (not a qwave store, corrupt,
 * or SQLite refused secure_delete/WAL), QW_EIO, QW_ENOMEM, QW_ECRYPTO. */
struct qw_store *qw_store_open(const char *path,
			       const uint8_t mk[static QW_STORE_MASTER_KEY_BYTES],
			       const struct qw_store_opts *opts, int *err);
/* As qw_store_open with the master key derived from a passphrase with
 * scrypt; the salt and cost are kept in the store (created on first open).
 * QW_EAUTH for a wrong passphrase. */
struct qw_store *qw_store_open_passphrase(const char *path, const char *pass,
					  size_t passlen,
					  const struct qw_store_opts *opts,
					  int *err);
/* Checkpoint the WAL, close, and wipe the data key. NULL accepted. */
void qw_store_close(struct qw_store *s);

/* ---- pools ---- */

/* Append block block_id (< 2^63) of nbits (1..QW_STORE_BLOCK_MAX_BITS)
 * bits to peer's pool. Blocks are consumed in increasing block_id, so the
 * id must be larger than every id the pool has ever had (QW_EEXIST
 * otherwise, also after the block was consumed and purged). 0, QW_EINVAL,
 * QW_ERANGE, QW_EDB, QW_ECRYPTO. */
QW_WUR int qw_store_pool_append(struct qw_store *s, const char *peer,
				uint64_t block_id, const uint8_t *bits,
				uint64_t nbits);
/* Unconsumed bits in peer's pool (0 for an unknown peer). 0 or QW_EDB. */
QW_WUR int qw_store_pool_available(struct qw_store *s, const char *peer,
				   uint64_t *bits);
/* Take the next nbits bits of peer's pool (for one-time pads and MAC keys),
 * writing ceil(nbits/8) bytes to out (cap bytes of room): the bits are
 * marked consumed and their stored copy overwritten in the same
 * transaction. expect (may be NULL) as in struct qw_store_key_req; *at (may
 * be NULL) gets the position of the first bit taken. 0, QW_EAGAIN (fewer
 * than nbits available: nothing taken), QW_ESTATE, QW_ERANGE (cap),
 * QW_EAUTH (stored material was tampered with), QW_EDB. out is wiped on
 * error. */
QW_WUR int qw_store_pool_take(struct qw_store *s, const char *peer,
			      uint64_t nbits, const struct qw_store_pos *expect,
			      uint8_t *out, size_t cap, struct qw_store_pos *at);
/* The pool's current cursor (where the next take starts). QW_EAGAIN when
 * the pool is empty. */
QW_WUR int qw_store_pool_cursor(struct qw_store *s, const char *peer,
				struct qw_store_pos *pos);
/* Blocks of peer's pool that still hold material, in block order, as a new
 * array (*out, free() it; NULL when *n is 0) - the list one end sends to
 * the other on reconnect. 0, QW_ENOMEM, QW_EDB. */
QW_WUR int qw_store_pool_blocks(struct qw_store *s, const char *peer,
				struct qw_store_block_state **out, size_t *n);
/* Resynchronise peer's pool with the list the peer sent (its
 * qw_store_pool_blocks): local blocks absent from it are dropped and each
 * common block's cursor is advanced to the further of the two, so after
 * both ends have applied each other's list they hold identical material.
 * *dropped (may be NULL) gets the bits discarded. One transaction.
 * 0, QW_EINVAL, QW_EAUTH, QW_EDB. */
QW_WUR int qw_store_pool_resync(struct qw_store *s, const char *peer,
				const struct qw_store_block_state *theirs,
				size_t n, uint64_t *dropped);

/* ---- keys ---- */

/* Cut count keys of req->size_bits each from req->peer's pool, in one
 * transaction (all or none), writing their ids to ids (count entries) and
 * the start position of the cut to *at (may be NULL). 0, QW_EINVAL (sizes,
 * names), QW_EAGAIN (pool too small: nothing cut), QW_EEXIST (a given key
 * id is already in the store), QW_ESTATE (expect mismatch), QW_EAUTH,
 * QW_EDB, QW_ECRYPTO. */
QW_WUR int qw_store_key_create(struct qw_store *s,
			       const struct qw_store_key_req *req, size_t count,
			       struct qw_uuid *ids, struct qw_store_pos *at);
/* Store count keys whose material did not come from a local pool: keys
 * relayed from a distant node (relay.h), or drawn by the origin of a relay
 * from its own generator. req->key_ids is required (the relay's ids),
 * req->expect is ignored, req->peer names the node at the other end of
 * the relay (not a neighbour, so the KM-link resynchronisation never
 * lists these keys). material holds count * req->size_bits / 8 bytes, key
 * i at offset i * size_bits / 8; it is encrypted at rest like any key and
 * not kept by the store (the caller wipes it). One transaction, all or
 * none. 0, QW_EINVAL, QW_EEXIST (an id is already in the store), QW_EDB,
 * QW_ECRYPTO, QW_ENOMEM. (src/store/store_import.c) */
QW_WUR int qw_store_key_import(struct qw_store *s, const struct qw_store_key_req *req,
			       size_t count, const uint8_t *material, size_t material_len);
/* AVAILABLE -> RESERVED for master_sae and its slaves (1..8). 0,
 * QW_ENOTFOUND, QW_ESTATE, QW_EINVAL, QW_EAUTH, QW_EDB. */
QW_WUR int qw_store_key_reserve(struct qw_store *s, const struct qw_uuid *id,
				const char *master_sae,
				const char *const *slave_saes, size_t n_slaves);
/* Hand a RESERVED key to sae (its master or one of its slaves): writes
 * size_bits/8 bytes to out (cap bytes of room) and, in the same
 * transaction, moves the key to DELIVERED and destroys its stored
 * material, so a second call can never return it again (QW_ESTATE). info
 * (may be NULL) gets the metadata. 0, QW_ENOTFOUND, QW_ESTATE, QW_EPERM
 * (sae not in the pair), QW_ERANGE (cap), QW_EAUTH (tampered row: nothing
 * changes), QW_EDB. out is wiped on error. */
QW_WUR int qw_store_key_deliver(struct qw_store *s, const struct qw_uuid *id,
				const char *sae, uint8_t *out, size_t cap,
				struct qw_store_key_info *info);
/* Deliver n RESERVED keys to sae in one transaction, all or none (ETSI
 * 014 dec_keys with several key_IDs): the material of ids[i] follows that
 * of ids[i - 1] in out (cap bytes of room); *outlen gets the total bytes;
 * infos (may be NULL) gets n entries. Errors as qw_store_key_deliver for
 * the first key that fails (an id listed twice: QW_ESTATE); then nothing
 * is delivered and out is wiped. */
QW_WUR int qw_store_key_deliver_many(struct qw_store *s,
				     const struct qw_uuid *ids, size_t n,
				     const char *sae, uint8_t *out, size_t cap,
				     size_t *outlen,
				     struct qw_store_key_info *infos);
/* qw_store_key_deliver_many(ids, n, sae, ...) and then
 * qw_store_key_create(req, count, new_ids, at) in ONE transaction (one
 * commit, one fsync under FULL), for a node that delivers one batch of keys
 * and cuts the next. The delivery is the primary operation: it fails or
 * succeeds exactly as qw_store_key_deliver_many (on failure nothing is
 * delivered or cut). When the cut alone fails (QW_EAGAIN, QW_ESTATE,
 * QW_EINVAL...), the delivery is still committed, nothing is cut, new_ids
 * is zeroed and *create_err gets the cut's error; otherwise *create_err is
 * 0. (store_key.c) */
QW_WUR int qw_store_key_deliver_create(struct qw_store *s, const struct qw_uuid *ids,
				       size_t n, const char *sae, uint8_t *out, size_t cap,
				       size_t *outlen, const struct qw_store_key_req *req,
				       size_t count, struct qw_uuid *new_ids,
				       struct qw_store_pos *at, int *create_err);
/* qw_store_key_create(req, count, ids, at) and then
 * qw_store_key_deliver_many of those keys to sae, in ONE transaction, for
 * a node that applies a cut its peer announced for this node's own master
 * SAE. The cut is the primary operation: it fails or succeeds exactly as
 * qw_store_key_create (on failure nothing is cut or delivered). When the
 * delivery alone fails, the keys are still committed RESERVED, nothing is
 * delivered, out is wiped and *deliver_err gets the delivery's error;
 * otherwise *deliver_err is 0 and *outlen the bytes written. (store_key.c) */
QW_WUR int qw_store_key_create_deliver(struct qw_store *s, const struct qw_store_key_req *req,
				       size_t count, struct qw_uuid *ids,
				       struct qw_store_pos *at, const char *sae, uint8_t *out,
				       size_t cap, size_t *outlen, int *deliver_err);
/* Metadata of a key, any state. 0, QW_ENOTFOUND, QW_EDB. */
QW_WUR int qw_store_key_info(struct qw_store *s, const struct qw_uuid *id,
			     struct qw_store_key_info *info);
/* Erase (revoke) an AVAILABLE or RESERVED key: its material is overwritten
 * and the row becomes an ERASED tombstone. 0, QW_ENOTFOUND, QW_ESTATE,
 * QW_EDB. */
QW_WUR int qw_store_key_erase(struct qw_store *s, const struct qw_uuid *id);
/* Erase every AVAILABLE or RESERVED key with 0 < expires <= now; *n (may
 * be NULL) gets how many. 0 or QW_EDB. */
QW_WUR int qw_store_key_expire(struct qw_store *s, int64_t now, size_t *n);
/* Call fn for each key of peer (NULL: all peers) in state (0: any), in
 * creation order, until fn returns nonzero (that value is returned). The
 * store's lock is held: fn must not call the store. 0, QW_EDB, or fn's. */
QW_WUR int qw_store_key_list(struct qw_store *s, const char *peer,
			     enum qw_store_key_state state,
			     int (*fn)(const struct qw_store_key_info *, void *),
			     void *arg);
/* The ids of peer's keys that are not ERASED (AVAILABLE, RESERVED and
 * DELIVERED), as a new array (*ids, free() it; NULL when *n is 0): the
 * list one end sends for the other's qw_store_key_resync. DELIVERED keys
 * are in it because the other end's copy is still owed to the slave SAE.
 * 0, QW_ENOMEM, QW_EDB. */
QW_WUR int qw_store_key_resync_list(struct qw_store *s, const char *peer,
				    struct qw_uuid **ids, size_t *n);
/* Resynchronise keys with peer: erase every local AVAILABLE or RESERVED
 * key of peer whose id is not in ids (the peer's
 * qw_store_key_resync_list: it never had the key, lost it in a crash, or
 * erased it). *dropped (may be NULL) gets how many. One transaction.
 * 0, QW_EINVAL, QW_ENOMEM, QW_EDB. */
QW_WUR int qw_store_key_resync(struct qw_store *s, const char *peer,
			       const struct qw_uuid *ids, size_t n,
			       size_t *dropped);

/* ---- maintenance ---- */

/* Remove DELIVERED/ERASED key tombstones closed (delivered or erased)
 * before `before`, and the rows of fully consumed pool blocks; *n (may be
 * NULL) gets how many key tombstones went. 0 or QW_EDB. */
QW_WUR int qw_store_purge(struct qw_store *s, int64_t before, size_t *n);
/* Counters for peer (NULL: all peers). 0 or QW_EDB. */
QW_WUR int qw_store_stats(struct qw_store *s, const char *peer,
			  struct qw_store_stats *st);
/* Checkpoint and truncate the WAL, so that overwritten pages leave the
 * -wal file too. 0 or QW_EDB (QW_EAGAIN: a reader blocked it). */
QW_WUR int qw_store_checkpoint(struct qw_store *s);
/* Text name of a state ("available", ...; "unknown"). */
const char *qw_store_state_name(enum qw_store_key_state st);

#endif
