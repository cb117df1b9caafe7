/* Hop-by-hop trusted-node key relay (SYSTEM.md section 3; ITU-T TR.SEC-QKD
 * clause 5 "trusted relay using one-time pad" and clause 6 item 1 A-D).
 *
 * A batch of fresh keys travels from an origin node to a destination node
 * along a path of trusted nodes. On every hop (path[h] -> path[h+1]) the
 * key material is one-time-pad encrypted with the next bits of that hop's
 * link pool and the whole message is authenticated with a Wegman-Carter MAC
 * (include/qwave/uhash.h) whose one-time pad also comes from that pool. The
 * intermediate node decrypts (it is trusted: it sees the keys) and
 * re-encrypts for the next hop with the next link's pool. There is no
 * end-to-end tag: origin and destination share no key before the relay, so
 * integrity is the conjunction of the per-hop tags (trusted-node model;
 * docs/relay-routing.md).
 *
 * Pool draw of one hop, in this order, from the position the sender states
 * (pad_pos, as the store's cut/take API reports it):
 *
 *   [16 bytes new hash key, only when QW_RELAY_F_NEWKEY]
 *   [16 bytes tag pad]
 *   [payload bytes: key pad, key i of group g at its place in the payload]
 *
 * so the link-key bits one hop consumes are exactly
 *   payload_bits + 128 + (NEWKEY ? 128 : 0)                      (1)
 * and, with the hash key refreshed every N messages, the link-key
 * efficiency of a relay of B payload bits is
 *   eta = B / (B + 128 + 128 / N)                                 (2)
 * per hop, whatever the path length. eta >= 0.95 needs
 * B >= 19 (128 + 128/N): ten 256-bit keys at N = 256 (eta = 0.9522),
 * not one (eta = 0.667). Batching is therefore explicit: a message carries
 * groups of keys (one group per ETSI 014 request, or stock keys without an
 * SAE) and qw_relay_batch_ready() says when a batch has reached the target.
 *
 * Wire format of a RELAY body (big-endian; IDs are u8 length + 1..64
 * characters of [A-Za-z0-9._-], qw_kmlink_id_valid):
 *
 *   u8  version   QW_RELAY_VERSION
 *   u8  flags     QW_RELAY_F_* (other bits 0)
 *   u8  hop       h: this message goes path[h] -> path[h+1], h < n - 1
 *   u8  n         path length, 2..QW_RELAY_MAX_PATH, nodes distinct
 *   16  relay id  UUID chosen by the origin
 *   u64 created   origin's clock, Unix milliseconds
 *   u64 block id  } pad_pos: first bit of this hop's pool draw
 *   u64 bit       }
 *   n x ID        path (origin = path[0], destination = path[n-1])
 *   u8  groups    1..QW_RELAY_MAX_GROUPS, then per group:
 *       u32 size_bits   multiple of 8, 8..QW_STORE_KEY_MAX_BITS
 *       u32 count       >= 1; all groups together <= QW_RELAY_MAX_KEYS
 *       u64 expires     Unix seconds, 0 = never
 *       u8 + chars      master SAE ID; length 0 = stock keys (no SAE)
 *       u8  n_slaves    0 for stock keys, else 1..QW_STORE_SLAVES_MAX
 *       n_slaves x ID   slave SAE IDs
 *       count x 16      key IDs (unique within the message)
 *   u32 ct_len    = payload bytes (sum of count * size_bits / 8)
 *   ct_len        ciphertext: payload XOR key pad
 *   16  tag       WC-MAC: h_k(every byte above) XOR tag pad
 *
 * Parsing is a pure function of the bytes (fuzzed by tests/fuzz/fuzz_relay.c)
 * and the encoding is canonical (parse then encode gives the same bytes),
 * so the tag can be checked over the re-encoded message. */
#ifndef QWAVE_RELAY_H
#define QWAVE_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/buf.h"
#include "qwave/error.h"
#include "qwave/kmlink.h"
#include "qwave/store.h"
#include "qwave/uhash.h"
#include "qwave/uuid.h"

#define QW_RELAY_VERSION 1
/* Longest path, in nodes (15 hops). */
#define QW_RELAY_MAX_PATH 16
/* Most key groups (ETSI requests) in one message. */
#define QW_RELAY_MAX_GROUPS 64
/* Most keys in one message (as a KEYS_NEW). */
#define QW_RELAY_MAX_KEYS QW_KMLINK_MAX_KEYS
/* Most payload (key material) in one message: 8 Mbit. */
#define QW_RELAY_MAX_PAYLOAD_BYTES (1u << 20)
/* Pool bits of the tag pad and of a new hash key. */
#define QW_RELAY_TAG_PAD_BITS (8 * QW_WCMAC_OTP_BYTES)
#define QW_RELAY_HASH_KEY_BITS (8 * QW_WCMAC_KEY_BYTES)
/* Default hash key lifetime in messages (docs/relay-routing.md): costs
 * 128/256 = 0.5 link-key bit per message. */
#define QW_RELAY_REKEY_DEFAULT 256
/* Efficiency target of the issue. */
#define QW_RELAY_EFFICIENCY_TARGET 0.95
#define QW_RELAY_ACK_BYTES 22

enum {
	/* This hop's draw starts with a new 128-bit hash key, which replaces
	 * the link's old one from this message on. */
	QW_RELAY_F_NEWKEY = 0x01,
};

/* One group of keys: the keys of one ETSI 014 request (same size, same SAE
 * binding), or stock keys (master "" and no slaves) that become AVAILABLE
 * at the destination. */
struct qw_relay_group {
	uint32_t size_bits;
	uint32_t count;
	int64_t expires;
	char master[QW_KMLINK_ID_MAX + 1];
	uint32_t n_slaves;
	char slaves[QW_STORE_SLAVES_MAX][QW_KMLINK_ID_MAX + 1];
	struct qw_uuid *ids; /* count ids, owned by the message */
};

/* One hop's RELAY message. Build with qw_relay_msg_init, set the fields,
 * qw_relay_msg_add_group; or fill with qw_relay_parse. groups (and their
 * ids) and ct are owned: release with qw_relay_msg_clear. */
struct qw_relay_msg {
	struct qw_uuid relay_id;
	int64_t created;       /* origin's Unix milliseconds */
	uint8_t flags;         /* QW_RELAY_F_* */
	uint8_t hop;
	uint8_t path_len;
	char path[QW_RELAY_MAX_PATH][QW_KMLINK_ID_MAX + 1];
	struct qw_store_pos pad_pos;
	uint32_t n_groups;
	struct qw_relay_group *groups;
	/* set by qw_relay_parse (and used by qw_relay_encode); ignored by
	 * qw_relay_seal_hop, which computes its own */
	uint32_t ct_len;
	uint8_t *ct;
	uint8_t tag[QW_WCMAC_TAG_BYTES];
};

/* Zero m (no allocation). */
void qw_relay_msg_init(struct qw_relay_msg *m);
/* Free what m owns and zero it. NULL accepted. */
void qw_relay_msg_clear(struct qw_relay_msg *m);
/* Set the path (n node IDs, 2..QW_RELAY_MAX_PATH, valid and distinct) and
 * hop 0. 0 or QW_EINVAL (then m is unchanged). */
QW_WUR int qw_relay_msg_set_path(struct qw_relay_msg *m, const char *const *nodes, size_t n);
/* Append a copy of g (its ids copied too) as the next group. 0, QW_EINVAL
 * (g or the resulting message violates the limits the parser enforces,
 * except key-id uniqueness, which the parser checks), QW_ENOMEM; m is
 * unchanged on error. */
QW_WUR int qw_relay_msg_add_group(struct qw_relay_msg *m, const struct qw_relay_group *g);
/* Total keys of m. */
uint32_t qw_relay_msg_keys(const struct qw_relay_msg *m);

/* Key material bits of m (sum over groups of count * size_bits). */
uint64_t qw_relay_payload_bits(const struct qw_relay_msg *m);
/* Link-key bits the hop of m consumes, formula (1). */
uint64_t qw_relay_hop_pad_bits(const struct qw_relay_msg *m);
/* Formula (2): payload / (payload + tag pad + hash key / rekey_every);
 * rekey_every 0 means the hash key is never refreshed. 0 for payload 0. */
double qw_relay_efficiency(uint64_t payload_bits, uint32_t rekey_every);
/* Smallest number of key_bits-bit keys whose relay reaches efficiency
 * target (0 < target < 1) by formula (2); 0 when key_bits is 0 or the
 * target is out of range. */
uint32_t qw_relay_min_batch(uint32_t key_bits, double target, uint32_t rekey_every);
/* 1 when m's payload reaches target by formula (2) (a batch worth sending
 * now), else 0. */
int qw_relay_batch_ready(const struct qw_relay_msg *m, double target, uint32_t rekey_every);

/* ---- the per-link Wegman-Carter hash key ------------------------------ */

/* One link's relay MAC state, one per (link, direction) at each end: the
 * current hash key (drawn from the link pool by a NEWKEY message) and how
 * many messages it has authenticated. */
struct qw_relay_mac {
	struct qw_wcmac *wc; /* NULL: no hash key yet (the next message must be NEWKEY) */
	uint32_t uses;
	uint32_t rekey_every; /* sender: refresh after this many messages (0: never) */
};

void qw_relay_mac_init(struct qw_relay_mac *mk, uint32_t rekey_every);
/* Forget the hash key (wiped). Call after any failure on the link (a NACK,
 * a reconnect, a resynchronisation): both ends then start over with a
 * NEWKEY message. NULL accepted. */
void qw_relay_mac_reset(struct qw_relay_mac *mk);
/* Sender: 1 when the next message must carry QW_RELAY_F_NEWKEY (no key
 * yet, or the key has authenticated rekey_every messages). */
int qw_relay_mac_due(const struct qw_relay_mac *mk);

/* ---- one hop -------------------------------------------------------------- */

/* Seal the hop of m: append the RELAY body to out with ciphertext = keys
 * XOR key pad and tag = WC-MAC over everything before it.
 *   keys     the key material, groups in order, keys_len =
 *            qw_relay_payload_bits(m) / 8 bytes;
 *   pad      this hop's pool draw at m->pad_pos, pad_len =
 *            qw_relay_hop_pad_bits(m) / 8 bytes, layout above;
 *   mk       the link's sender MAC state: with QW_RELAY_F_NEWKEY its key
 *            becomes the draw's first 16 bytes (uses restart at 0); every
 *            seal counts one use.
 * m->ct and m->tag are neither read nor written. The caller wipes keys and
 * pad. 0, QW_EINVAL (lengths, m violates the limits), QW_ESTATE (no
 * NEWKEY but mk has no key, or its key is due for refresh), QW_ENOMEM
 * (out unchanged on every error). */
QW_WUR int qw_relay_seal_hop(const struct qw_relay_msg *m, const uint8_t *keys, size_t keys_len,
			     const uint8_t *pad, size_t pad_len, struct qw_relay_mac *mk,
			     struct qw_buf *out);

/* Open a parsed hop message m with the receiver's pool draw at m->pad_pos
 * (pad_len = qw_relay_hop_pad_bits(m) / 8) and the link's receiver MAC
 * state mk. Verifies the tag (constant time) first; only then writes the
 * m->ct_len plaintext bytes to keys (cap bytes of room).
 * 0; QW_EAUTH (tag mismatch: keys untouched, mk reset, so the next message
 * on the link must bring a new hash key); QW_ESTATE (no NEWKEY and mk has
 * no key: nothing verified, keys untouched); QW_EINVAL (pad_len);
 * QW_ERANGE (cap); QW_ENOMEM. */
QW_WUR int qw_relay_open_hop(const struct qw_relay_msg *m, const uint8_t *pad, size_t pad_len,
			     struct qw_relay_mac *mk, uint8_t *keys, size_t cap);

/* Check that m arrived on the right link: path[hop] is from (the peer's
 * certificate identity) and path[hop+1] is self. *last = 1 when self is
 * the destination. 0 or QW_EPROTO. */
QW_WUR int qw_relay_hop_check(const struct qw_relay_msg *m, const char *self, const char *from,
			      int *last);

/* ---- wire --------------------------------------------------------------- */

/* Parse one RELAY body of len bytes into *m (initialised here). 0, or
 * QW_EPARSE for anything malformed (version, flags, counts or sizes out of
 * range, invalid or repeated path nodes, hop >= n - 1, invalid SAE IDs,
 * repeated key IDs, ct_len not the payload size, trailing or missing
 * bytes); QW_ENOMEM. m holds nothing on error. */
QW_WUR int qw_relay_parse(const uint8_t *buf, size_t len, struct qw_relay_msg *m);
/* Append the body of a parsed (or otherwise complete) m, with its ct and
 * tag, to out: forwarding as is, and the canonical-encoding check. 0,
 * QW_EINVAL (m violates the limits; ct_len must be the payload size),
 * QW_ENOMEM. */
QW_WUR int qw_relay_encode(const struct qw_relay_msg *m, struct qw_buf *out);

/* End-to-end answer, sent by the destination back along the reverse path
 * (or by the node where the relay failed):
 *   u8 version | 16 relay id | u8 hop | i32 status   (22 bytes)
 * status 0: the destination committed every key of the relay; else the
 * QW_E* code, hop = index of the node that failed. */
struct qw_relay_ack {
	struct qw_uuid relay_id;
	uint8_t hop;
	int32_t status;
};

/* 0 or QW_ENOMEM; QW_EINVAL for a status that is not 0 or a QW_E* code. */
QW_WUR int qw_relay_ack_encode(const struct qw_relay_ack *a, struct qw_buf *out);
/* 0 or QW_EPARSE (length, version, status outside 0..-99). */
QW_WUR int qw_relay_ack_parse(const uint8_t *buf, size_t len, struct qw_relay_ack *a);

/* Pad allocation for a hop whose sender is the link's follower (only the
 * leader consumes a link pool, km.h; docs/relay-routing.md "pool
 * ownership"): the follower asks for bits, the leader takes them from the
 * pool, keeps them for the relay and grants the position.
 *   RELAY_PAD_REQ  u8 version | 16 relay id | u64 bits                  (25 bytes)
 *   RELAY_PAD      u8 version | 16 relay id | u64 bits | u64 block | u64 bit (41)
 * bits: a multiple of 8, 8..QW_RELAY_MAX_HOP_PAD_BITS; block < 2^63. */
#define QW_RELAY_PAD_REQ_BYTES 25
#define QW_RELAY_PAD_GRANT_BYTES 41
#define QW_RELAY_MAX_HOP_PAD_BITS                                                          \
	(8 * (uint64_t)QW_RELAY_MAX_PAYLOAD_BYTES + QW_RELAY_TAG_PAD_BITS + QW_RELAY_HASH_KEY_BITS)

struct qw_relay_pad {
	struct qw_uuid relay_id;
	uint64_t bits;
	struct qw_store_pos pos; /* RELAY_PAD only */
};

/* grant 0: RELAY_PAD_REQ, 1: RELAY_PAD. 0, QW_EINVAL (limits), QW_ENOMEM. */
QW_WUR int qw_relay_pad_encode(const struct qw_relay_pad *p, int grant, struct qw_buf *out);
/* 0 or QW_EPARSE; *p untouched on error. */
QW_WUR int qw_relay_pad_parse(const uint8_t *buf, size_t len, int grant, struct qw_relay_pad *p);

/* ---- replay window ------------------------------------------------------- */

/* Relay ids seen in the last max_age_ms milliseconds. A relay whose
 * created time is older than that (or further than that in the future) is
 * refused outright, so every relay that can be accepted is either in the
 * window or new. (A replayed hop is also refused by the store: its pad
 * position names consumed pool bits.) */
struct qw_relay_replay;

/* capacity: most ids held (>= 1); max_age_ms > 0. NULL on QW_ENOMEM or bad
 * arguments. */
struct qw_relay_replay *qw_relay_replay_new(size_t capacity, int64_t max_age_ms);
void qw_relay_replay_free(struct qw_relay_replay *r);
/* Record relay id (created at created_ms) at time now_ms. 0 (new; now
 * recorded), QW_EEXIST (seen before: a replay), QW_ERANGE (created outside
 * now +- max_age), QW_EAGAIN (window full of ids younger than max_age:
 * refuse the relay for now rather than forget one). Call it only for
 * authenticated messages, so only link-key holders can fill the window. */
QW_WUR int qw_relay_replay_check(struct qw_relay_replay *r, const struct qw_uuid *id,
				 int64_t created_ms, int64_t now_ms);
/* Ids currently held. */
size_t qw_relay_replay_count(const struct qw_relay_replay *r);

#endif
