/* Authenticated framing of the classical channel of a QKD link.
 *
 * Every message between the two endpoints of a link travels in one frame:
 *
 *   header (QW_FRAME_HEADER_BYTES, big endian)
 *     u8  version     QW_FRAME_VERSION
 *     u8  kind        enum qw_frame_kind
 *     u16 reserved    0
 *     u32 type        message type of the stage that sent it (DATA frames)
 *     u32 length      body bytes, <= QW_FRAME_MAX_BODY
 *     u64 stream      key block id (0 = the connection itself)
 *     u64 seq         per-direction sequence number, 0, 1, 2, ...
 *   body (length bytes)
 *   tag  (QW_FRAME_TAG_BYTES): Wegman-Carter MAC of header || body
 *
 * Authentication is information-theoretic (Wegman-Carter): tag =
 * GHASH-style polynomial hash over GF(2^128) of header || body under a fixed
 * per-direction hash key, XOR a fresh 16-byte one-time pad. The pad of frame
 * number seq in direction d is bytes [16 seq, 16 seq + 16) of d's pad stream,
 * so the sequence number is also the pad index: both ends consume pads in
 * lock-step by construction, and a replayed or reordered frame names a pad
 * that is already spent (rejected, QW_EPROTO).
 *
 * The pad streams live in a struct qw_auth_pool:
 *   pre-shared material = k_AB (16) || k_BA (16) || P,
 *     k_AB / k_BA: hash keys for Alice->Bob / Bob->Alice frames,
 *     P split in two halves: first half -> Alice->Bob pad stream,
 *                            second half -> Bob->Alice pad stream;
 *   every replenishment (a share of a distilled key block) is split the same
 *   way, and replenishments are appended strictly in block-id order (a
 *   dropped block is recorded as an empty replenishment), so both ends hold
 *   byte-identical pad streams whatever order their worker threads finish in.
 *
 * Failure policy: any frame that fails authentication, arrives out of
 * sequence, is truncated or malformed kills the connection (not just the
 * block): after a MAC failure nothing later on the byte stream can be
 * trusted to be aligned, and the pads named by forged frames are burned. */
#ifndef QWAVE_FRAME_H
#define QWAVE_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "qwave/distill.h"
#include "qwave/error.h"

#define QW_FRAME_VERSION 1
#define QW_FRAME_HEADER_BYTES 28
#define QW_FRAME_TAG_BYTES 16
#define QW_FRAME_MAX_BODY (64u << 20)
#define QW_AUTH_HASHKEY_BYTES 16
#define QW_AUTH_PAD_BYTES 16
/* Replenishments and the pad part of pre-shared material come in units of
 * one pad per direction. */
#define QW_AUTH_UNIT_BYTES (2 * QW_AUTH_PAD_BYTES)
/* Smallest pre-shared key: both hash keys and one pad per direction. */
#define QW_AUTH_PSK_MIN_BYTES (2 * QW_AUTH_HASHKEY_BYTES + QW_AUTH_UNIT_BYTES)

enum qw_frame_kind {
	QW_FRAME_DATA = 1, /* a stage message for block `stream` */
	QW_FRAME_DROP = 2, /* the sender dropped block `stream`; body = reason */
	QW_FRAME_FIN = 3,  /* the sender will send no further frames */
};

/* Direction of a pad stream. */
enum qw_auth_dir { QW_AUTH_A2B = 0, QW_AUTH_B2A = 1 };

/* A byte stream: a socket, a pipe, or (later) a TLS session. read returns
 * the number of bytes read (> 0), 0 at end of stream, or a negative QW_E*;
 * write returns bytes written (> 0) or QW_E*. shutdown (optional) must make
 * a blocked read in another thread return, and the peer see end of stream. */
struct qw_frame_io {
	void *ctx;
	ssize_t (*read)(void *ctx, uint8_t *buf, size_t len);
	ssize_t (*write)(void *ctx, const uint8_t *buf, size_t len);
	void (*shutdown)(void *ctx);
};

/* Fill io for a connected file descriptor (socket or pipe). The fd is not
 * owned: the caller closes it after the connection is freed. */
void qw_frame_io_fd(struct qw_frame_io *io, int fd);
/* A connected pair of loopback TCP sockets (Nagle off on both), for running
 * both endpoints of a link in one process over real TCP. 0, or -1 with
 * errno set. */
int qw_frame_tcp_pair(int fds[2]);

/* ---- authentication key pool ------------------------------------------ */

struct qw_auth_pool;

struct qw_auth_pool_stats {
	uint64_t psk_bytes;          /* pre-shared material loaded */
	uint64_t deposited_bytes;    /* replenished from distilled keys */
	uint64_t deposits;           /* block ids resolved (incl. empty) */
	uint64_t consumed[2];        /* pad bytes used, per enum qw_auth_dir */
	uint64_t available[2];       /* pad bytes left, per direction */
	uint64_t pending;            /* deposits held back for an earlier id */
};

/* New pool from pre-shared material (layout above; len >=
 * QW_AUTH_PSK_MIN_BYTES and len - 32 a multiple of QW_AUTH_UNIT_BYTES).
 * first_block_id is the id whose deposit comes first. The psk buffer is
 * copied (the caller wipes its own). NULL on bad length (*err = QW_EINVAL)
 * or allocation failure (*err = QW_ENOMEM). Thread-safe object. */
struct qw_auth_pool *qw_auth_pool_new(const uint8_t *psk, size_t len,
				      uint64_t first_block_id, int *err);
/* Wipes every key and pad; NULL accepted. */
void qw_auth_pool_free(struct qw_auth_pool *p);

/* Replenish from block block_id: n bytes (a multiple of QW_AUTH_UNIT_BYTES,
 * 0 for a dropped block) are split between the two directions and appended
 * once every earlier id has been resolved. Returns 0, QW_EINVAL (bad n, id
 * already resolved or below first_block_id), QW_ENOMEM. The bytes are
 * copied. */
QW_WUR int qw_auth_pool_deposit(struct qw_auth_pool *p, uint64_t block_id,
				const uint8_t *bytes, size_t n);

/* The hash key of direction dir. */
void qw_auth_pool_hashkey(const struct qw_auth_pool *p, enum qw_auth_dir dir,
			  uint8_t key[static QW_AUTH_HASHKEY_BYTES]);

/* Take pad number index of direction dir (indexes must be taken in order
 * 0, 1, 2, ... per direction; the pad and all before it are then erased).
 * Waits up to timeout_ms for a replenishment when the pad is not there yet.
 * Returns 0, QW_EPROTO (index already spent or skipped), QW_EAGAIN (pool
 * exhausted: no pad within the timeout). */
QW_WUR int qw_auth_pool_take(struct qw_auth_pool *p, enum qw_auth_dir dir, uint64_t index,
			     int timeout_ms, uint8_t pad[static QW_AUTH_PAD_BYTES]);

void qw_auth_pool_stats(struct qw_auth_pool *p, struct qw_auth_pool_stats *out);

/* ---- framed connection ------------------------------------------------ */

struct qw_frame_conn;

/* A received, authenticated frame. body is malloc'ed (NULL when len is 0);
 * release with qw_frame_release(), which wipes it. */
struct qw_frame {
	uint8_t kind;
	uint32_t type;
	uint64_t stream;
	uint64_t seq;
	uint8_t *body;
	size_t len;
};
void qw_frame_release(struct qw_frame *f);

/* Connection for the endpoint of role `role` over io, authenticated from
 * pool. io and pool are borrowed and must outlive the connection. The pool
 * may be shared only by the two ends of one link (one per endpoint in a real
 * deployment). pad_timeout_ms bounds the wait for a replenishment (0 =
 * 30000). NULL on allocation failure. */
struct qw_frame_conn *qw_frame_conn_new(const struct qw_frame_io *io, struct qw_auth_pool *pool,
					enum qw_role role, int pad_timeout_ms);
void qw_frame_conn_free(struct qw_frame_conn *c);
/* From now on read from io only the bytes of the frame being received,
 * never beyond it (bytes already read ahead are still used first). For a
 * stream that carries other data after the last frame - the next QKD
 * session's raw header on the same connection - which read-ahead would
 * swallow into a buffer freed with c. Call it, on the receiving side,
 * before the last frames are received (no concurrent reader). */
void qw_frame_conn_exact_reads(struct qw_frame_conn *c);

/* Send one frame; safe to call from several threads (serialized). Returns
 * 0, QW_EINVAL (body too long, bad kind), QW_EAGAIN (no pad), QW_EIO /
 * QW_ECLOSED (stream failure), QW_ESTATE (connection already failed). */
QW_WUR int qw_frame_send(struct qw_frame_conn *c, enum qw_frame_kind kind, uint32_t type,
			 uint64_t stream, const uint8_t *body, size_t len);

/* Receive and verify the next frame (one reader thread only). Returns 0
 * with *f filled, or: QW_ECLOSED (clean end of stream between frames),
 * QW_EPROTO (bad version/kind/length, sequence gap, replay, truncation),
 * QW_EAUTH (tag mismatch), QW_EAGAIN (no pad), QW_EIO. Any error is
 * final: the connection stays failed and later calls return it again. */
QW_WUR int qw_frame_recv(struct qw_frame_conn *c, struct qw_frame *f);

/* Fail the connection from any thread: shuts the io down so that a blocked
 * qw_frame_recv returns and the peer sees the end of the stream. */
void qw_frame_conn_abort(struct qw_frame_conn *c);

/* Frames sent / received so far (also the next sequence numbers). */
uint64_t qw_frame_conn_sent(struct qw_frame_conn *c);
uint64_t qw_frame_conn_received(struct qw_frame_conn *c);

#endif
