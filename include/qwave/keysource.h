/* Key sources of the key manager: anything that hands a node secret key
 * blocks shared with one neighbour. The simulated QKD link (link.h) is one;
 * a vendor's QKD device reached through its KME over ETSI GS QKD 014 is
 * the other (below). The KM does not care where keys come from (SYSTEM.md
 * section 2): every source ends in the same sink.
 *
 * The sink has the shape of the QKD link's (link.h: deliver(block_id, key),
 * dropped(block_id, reason), alarm) plus what a source outside qwave needs:
 * the external key IDs of a block, its state, and back-pressure. */
#ifndef QWAVE_KEYSOURCE_H
#define QWAVE_KEYSOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/bitvec.h"
#include "qwave/config.h"
#include "qwave/error.h"
#include "qwave/etsi014_client.h"
#include "qwave/uuid.h"

/* Where a block came from when the source is not qwave's own link. */
struct qw_key_source_ids {
	/* ETSI 014: the KME's key IDs whose material makes up the block, in
	 * block order (key i is bits [i * key_bits, (i + 1) * key_bits)). */
	const char (*key_ids)[QW_UUID_STR_BYTES];
	size_t n;
	uint32_t key_bits;
};

struct qw_key_sink {
	void *ctx;
	/* A secret block (the same block_id and bits at both ends of the
	 * link). key and ids are borrowed for the call; ids is NULL for
	 * sources without external IDs. */
	void (*deliver)(void *ctx, uint64_t block_id, const struct qw_bitvec *key,
			const struct qw_key_source_ids *ids);
	/* A block announced (or asked for) but never delivered. May be NULL. */
	void (*dropped)(void *ctx, uint64_t block_id, const char *reason);
	/* The source's state changed: err 0 working again, else a QW_E* code
	 * and a one-line reason (no key material). Called on changes only, so
	 * the node can raise and clear a "link down" alarm. May be NULL. */
	void (*state)(void *ctx, int err, const char *reason);
	/* Back-pressure: 0 when the node wants no more key now (its pool is
	 * full); the source then skips its next pull. May be NULL (always). */
	int (*want)(void *ctx);
};

struct qw_key_source;

struct qw_key_source_ops {
	/* Begin producing blocks (a thread of the source's own). 0,
	 * QW_ESTATE (already running), QW_ENOMEM, QW_EIO. */
	int (*start)(struct qw_key_source *s);
	/* Stop and wait until no sink callback runs or will run. */
	void (*stop)(struct qw_key_source *s);
	/* stop, then free. */
	void (*free)(struct qw_key_source *s);
};

struct qw_key_source {
	const struct qw_key_source_ops *ops;
	const char *kind;   /* "etsi014" */
	void *impl;
};

/* Dispatch to s->ops (src/km/keysource.c). free accepts NULL. */
QW_WUR int qw_key_source_start(struct qw_key_source *s);
void qw_key_source_stop(struct qw_key_source *s);
void qw_key_source_free(struct qw_key_source *s);

/* ---- ETSI GS QKD 014 source (src/km/source_etsi.c) ----------------------
 *
 * A pair of qwave nodes A and B sits next to a vendor's QKD pair whose
 * KMEs are KME-a (A's site) and KME-b (B's site). Each node is an SAE of
 * its vendor KME (its certificate from the vendor's CA). The pair uses
 * clause 5.3/5.4 exactly as two applications would:
 *
 *   A (MASTER role)                                     B (SLAVE role)
 *   Get key (KME-a, slave = B's SAE ID,
 *            number = batch, size = key_bits)
 *   deliver(block_id, bits, ids)  -- node A sends block_id + ids over the
 *                                    KM link (a message of the node's) -->
 *                                       qw_etsi_source_fetch(block_id, ids)
 *                                       Get key with key IDs (KME-b,
 *                                            master = A's SAE ID)
 *                                       deliver(block_id, bits, ids)
 *
 * Both ends deliver identical bits under the same block_id. The master's
 * block must not enter its pool until the slave delivered it too (the node
 * confirms over the KM link, as for KEYS_NEW/ACK); a slave fetch that
 * fails is reported by dropped(), and the node then tells the master to
 * discard that block. The node whose ID sorts first (the KM link's leader,
 * km.h) should be the master, so that one side both cuts and pulls.
 *
 * Threading: one thread per source runs the blocking HTTPS calls; every
 * sink callback runs on it (the node posts to its loop, as
 * qw_km_submit_block does). Master: one Get key per poll_ms while want()
 * allows; on 503 or a transport error the wait doubles up to
 * max_backoff_ms and returns to poll_ms after a success. Slave: fetches run
 * in arrival order; a fetch that fails transiently (503, I/O, timeout,
 * "not found" while the vendor KMEs synchronise) is retried with the same
 * backoff until fetch_retry_ms after it was queued, then dropped; a 401 or
 * 400 (other than not found) drops it at once. Stop aborts a transfer in
 * progress (the client's abort_cb) and drops queued fetches ("source
 * stopped"). */

enum qw_etsi_source_role {
	QW_ETSI_SOURCE_MASTER = 1,
	QW_ETSI_SOURCE_SLAVE = 2,
};

struct qw_etsi_source_conf {
	enum qw_etsi_source_role role;
	/* The vendor KME and this node's SAE credentials for it; abort_cb is
	 * set by the source. */
	struct qw_etsi_client_opts client;
	/* master: the peer node's SAE ID at its KME (slave_SAE_ID);
	 * slave: the peer node's SAE ID (master_SAE_ID). */
	const char *peer_sae;
	uint32_t key_bits;       /* size of each key; 0: the KME's key_size */
	uint32_t batch;          /* keys per Get key = per block (16) */
	uint32_t poll_ms;        /* between pulls (1000) */
	uint32_t max_backoff_ms; /* longest wait after failures (30000) */
	uint32_t fetch_retry_ms; /* slave: give a fetch up after this (30000) */
	uint32_t max_queue;      /* slave: most queued fetches (1024) */
	uint64_t first_block_id; /* master: id of the first block (1) */
};

/* Keys of a [link] section that qw_etsi_source_conf_load reads (for the
 * node's qw_config_check_keys list), NULL-terminated:
 *   kme_role (master|slave), kme_url, kme_cert, kme_key, kme_ca, kme_id,
 *   kme_peer_sae, kme_key_bits, kme_batch, kme_poll_ms, kme_max_backoff_ms,
 *   kme_fetch_retry_ms, kme_timeout_ms */
extern const char *const qw_etsi_source_conf_keys[];

/* Defaults as documented above (role 0 and strings NULL: must be set). */
void qw_etsi_source_conf_default(struct qw_etsi_source_conf *c);
/* Fill c (defaults first) from sec, a section of cfg (named in messages);
 * strings point into cfg, which must outlive c. Required: kme_role, kme_url, kme_cert, kme_key, kme_ca,
 * kme_peer_sae. 0, or QW_ENOTFOUND/QW_EPARSE/QW_ERANGE/QW_EINVAL with
 * err->msg "file:line: ...". Unknown keys are the caller's check. */
QW_WUR int qw_etsi_source_conf_load(const struct qw_config *cfg,
				    const struct qw_config_section *sec,
				    struct qw_etsi_source_conf *c, struct qw_config_error *err);

/* New ETSI 014 source (not started). c and sink are copied; the strings
 * c points to are borrowed and must outlive the source. NULL and *err (may
 * be NULL): QW_EINVAL (role, peer_sae, batch 0, key_bits not a multiple of
 * 8, client options refused), QW_ENOMEM. */
struct qw_key_source *qw_etsi_source_new(const struct qw_etsi_source_conf *c,
					 const struct qw_key_sink *sink, int *err);

/* Slave: fetch the keys ids[0..n) that the peer master announced as
 * block_id; the block is delivered (or dropped) later on the source's
 * thread. ids are copied. 0; QW_EINVAL (not a slave source of kind
 * "etsi014", n == 0 or above QW_ETSI_SOURCE_MAX_IDS, an ID not a UUID);
 * QW_EAGAIN (queue full); QW_ESTATE (not started); QW_ENOMEM.
 * Thread-safe. */
#define QW_ETSI_SOURCE_MAX_IDS 1024
QW_WUR int qw_etsi_source_fetch(struct qw_key_source *s, uint64_t block_id,
				const char *const *ids, size_t n);

struct qw_etsi_source_stats {
	uint64_t requests;       /* HTTPS calls made */
	uint64_t blocks, keys, bits; /* delivered */
	uint64_t busy;           /* 503 answers */
	uint64_t failures;       /* other failed calls */
	uint64_t dropped;        /* blocks dropped (slave) */
	uint64_t queued;         /* slave fetches waiting now */
	int up;                  /* last call succeeded */
	int last_error;          /* QW_E* of the last failure, 0 if none */
	char last_reason[QW_ETSI_MSG_BYTES];
};
/* Thread-safe snapshot. */
void qw_etsi_source_stats(struct qw_key_source *s, struct qw_etsi_source_stats *out);

#endif
