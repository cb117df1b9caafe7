/* KM link: the message protocol between the key managers (KMEs) of two
 * neighbouring trusted nodes.
 *
 * Transport: one TLS 1.3 connection with mutual certificate authentication
 * (node certificates of the network's CA, include/qwave/pki.h); the peer
 * node is known by its certificate identity, never by what it says. The
 * same listener also accepts the classical channels of QKD links; the
 * client's first message (HELLO) says which kind of connection it opens.
 *
 * Every message is one frame (big-endian):
 *
 *   u8  version   QW_KMLINK_VERSION
 *   u8  type      enum qw_kmlink_type
 *   u16 reserved  0
 *   u32 length    body bytes, <= QW_KMLINK_MAX_BODY
 *   u64 seq       request id: a reply carries its request's seq
 *   body
 *
 * Type space (room for the relay protocol of the next issue):
 *   0x01-0x07  connection and resynchronisation
 *   0x08-0x0f  key supply from external sources (an ETSI 014 vendor KME
 *              pair: the master announces a block, the slave fetches it)
 *   0x10-0x1f  key creation for ETSI 014 (KEYS_REQ, KEYS_NEW, ACK/NACK)
 *   0x20-0x3f  reserved: multi-hop relay (OTP-encrypted, MACed key hops)
 *   0x40-0x4f  reserved: management
 * Unknown types inside a known range are a protocol error (QW_EPARSE), so
 * a peer speaking a newer protocol fails loudly rather than silently.
 *
 * Parsing is a pure function of the bytes (qw_kmlink_parse): it is the
 * target of tests/fuzz/fuzz_kmlink.c. */
#ifndef QWAVE_KMLINK_H
#define QWAVE_KMLINK_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/buf.h"
#include "qwave/error.h"
#include "qwave/store.h"
#include "qwave/uuid.h"

#define QW_KMLINK_VERSION 1
#define QW_KMLINK_HEADER_BYTES 16
#define QW_KMLINK_MAX_BODY (16u << 20)
/* Longest node or SAE ID on the wire (pki.h QW_PKI_ID_MAX). */
#define QW_KMLINK_ID_MAX 64
/* Most keys in one KEYS_NEW / KEYS_REQ. */
#define QW_KMLINK_MAX_KEYS 4096
/* Most entries in one resynchronisation list. */
#define QW_KMLINK_MAX_LIST (1u << 20)

enum qw_kmlink_type {
	QW_KMLINK_HELLO = 0x01,       /* client's first message: channel kind */
	QW_KMLINK_POOL_BLOCKS = 0x02, /* qw_store_pool_blocks of the sender */
	QW_KMLINK_KEY_LIST = 0x03,    /* qw_store_key_resync_list of the sender */
	QW_KMLINK_RESYNC_DONE = 0x04, /* sender applied the other's lists */
	QW_KMLINK_SOURCE_BLOCK = 0x08,/* master: block id = these vendor key IDs */
	QW_KMLINK_SOURCE_ACK = 0x09,  /* slave: fetched and pooled that block */
	QW_KMLINK_SOURCE_DROP = 0x0a, /* slave: could not fetch it: discard */
	QW_KMLINK_KEYS_REQ = 0x10,    /* follower asks the leader to cut keys */
	QW_KMLINK_KEYS_NEW = 0x11,    /* leader announces a committed cut */
	QW_KMLINK_KEYS_ACK = 0x12,    /* receiver committed the announced keys */
	QW_KMLINK_KEYS_NACK = 0x13,   /* refused: body = error code */
	QW_KMLINK_RELAY_FIRST = 0x20, /* relay and routing range */
	QW_KMLINK_RELAY = 0x20,       /* relay.h: one hop of a key relay */
	QW_KMLINK_RELAY_ACK = 0x21,   /* relay.h: end-to-end answer of a relay */
	QW_KMLINK_RELAY_PAD_REQ = 0x22, /* relay.h: follower asks the leader for a hop pad */
	QW_KMLINK_RELAY_PAD = 0x23,   /* relay.h: the leader grants it */
	QW_KMLINK_LSA = 0x30,         /* routing.h: link-state advertisement */
	QW_KMLINK_PING = 0x31,        /* heartbeat on an idle link (empty body) */
	QW_KMLINK_RELAY_LAST = 0x3f,
};

/* HELLO channel kinds. */
enum qw_kmlink_channel {
	QW_KMLINK_CHAN_KM = 1,  /* this connection is the KM link */
	QW_KMLINK_CHAN_QKD = 2, /* the classical channel of the QKD link */
};

struct qw_kmlink_keys {
	struct qw_store_pos pos;     /* KEYS_NEW: where the cut starts */
	uint32_t size_bits;
	uint32_t count;
	struct qw_uuid *ids;         /* KEYS_NEW: count ids (owned) */
	char master[QW_KMLINK_ID_MAX + 1];
	uint32_t n_slaves;           /* 1..QW_STORE_SLAVES_MAX */
	char slaves[QW_STORE_SLAVES_MAX][QW_KMLINK_ID_MAX + 1];
};

/* A parsed message. Arrays are owned; release with qw_kmlink_msg_clear. */
struct qw_kmlink_msg {
	uint8_t type;
	uint64_t seq;
	union {
		struct { uint8_t channel; char node[QW_KMLINK_ID_MAX + 1]; } hello;
		struct { struct qw_store_block_state *blocks; size_t n; } pool;
		struct { struct qw_uuid *ids; size_t n; } keylist;
		struct qw_kmlink_keys keys;  /* KEYS_REQ (no pos, no ids), KEYS_NEW */
		int32_t nack_error;          /* KEYS_NACK: a QW_E* code */
		/* SOURCE_BLOCK (ids: n UUIDs, key_bits each), SOURCE_ACK and
		 * SOURCE_DROP (block_id only) */
		struct {
			uint64_t block_id;
			uint32_t key_bits;
			struct qw_uuid *ids;
			size_t n;
		} source;
		/* RELAY, RELAY_ACK, RELAY_PAD_REQ, RELAY_PAD, LSA: the body as
		 * received (owned copy, len >= 1), parsed by relay.h/routing.h;
		 * PING: empty (body NULL, len 0) */
		struct { uint8_t *body; size_t len; } raw;
	} u;
};

void qw_kmlink_msg_clear(struct qw_kmlink_msg *m);

/* Inspect the start of a byte stream: 0 with *frame_len = header + body
 * bytes of the first frame when its header is complete and sane,
 * QW_EAGAIN when fewer than QW_KMLINK_HEADER_BYTES are there, QW_EPARSE
 * for a bad version or an over-long body. */
QW_WUR int qw_kmlink_frame_len(const uint8_t *buf, size_t len, size_t *frame_len);

/* Parse exactly one frame of len bytes into *m (zeroed first). 0, or
 * QW_EPARSE for anything malformed (bad header, unknown type, trailing or
 * missing bytes, counts over the limits, IDs that are not valid node/SAE
 * IDs, a KEYS_NEW without ids); QW_ENOMEM. *m holds nothing on error. */
QW_WUR int qw_kmlink_parse(const uint8_t *buf, size_t len, struct qw_kmlink_msg *m);

/* Append the frame of m to out. 0, QW_EINVAL (m violates the limits the
 * parser enforces), QW_ENOMEM. */
QW_WUR int qw_kmlink_encode(const struct qw_kmlink_msg *m, struct qw_buf *out);

/* 1 when id is 1..64 characters of [A-Za-z0-9._-]. */
int qw_kmlink_id_valid(const char *id);

/* The ID encoding of every KM-link body (this file, relay.h, routing.h):
 * u8 length, then the characters. allow_empty: "" is legal and is length 0
 * (the RELAY's stock keys have no master SAE).
 * Append id to b: 0, QW_EINVAL (not a valid ID), QW_ENOMEM. */
QW_WUR int qw_kmlink_id_write(struct qw_buf *b, const char *id, int allow_empty);
/* Read one ID into out: 0, or QW_EPARSE (short input, length over
 * QW_KMLINK_ID_MAX, a character outside the ID set, including an embedded
 * NUL; length 0 unless allow_empty). */
QW_WUR int qw_kmlink_id_read(struct qw_reader *r, char out[QW_KMLINK_ID_MAX + 1],
			     int allow_empty);

#endif
