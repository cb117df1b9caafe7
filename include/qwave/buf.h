/* Growable byte buffers (for building protocol messages) and bounds-checked
 * readers (for taking them apart).
 *
 * Multi-byte integers are big-endian (network order) on both sides. A
 * buffer marked secret never leaves a copy of its bytes in freed memory: it
 * grows by copying into a fresh allocation and wiping the old one (never
 * realloc), and wipes on reset and free. */
#ifndef QWAVE_BUF_H
#define QWAVE_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"

struct qw_buf {
	uint8_t *data; /* NULL until the first append/reserve */
	size_t len;    /* bytes in use */
	size_t cap;    /* bytes allocated */
	int secret;    /* nonzero: wipe on growth, reset and free */
};

/* Empty buffer; no allocation. secret: see above. */
void qw_buf_init(struct qw_buf *b, int secret);
/* Make room for at least extra more bytes past len, so that the caller may
 * write into data + len and then advance len. 0, or QW_ENOMEM (also when
 * len + extra overflows); the contents are untouched on failure. */
QW_WUR int qw_buf_reserve(struct qw_buf *b, size_t extra);
/* Append n bytes from p (p may be NULL when n is 0). 0 or QW_ENOMEM; on
 * failure the buffer is unchanged. */
QW_WUR int qw_buf_append(struct qw_buf *b, const void *p, size_t n);
QW_WUR int qw_buf_append_u8(struct qw_buf *b, uint8_t v);
QW_WUR int qw_buf_append_u16be(struct qw_buf *b, uint16_t v);
QW_WUR int qw_buf_append_u32be(struct qw_buf *b, uint32_t v);
QW_WUR int qw_buf_append_u64be(struct qw_buf *b, uint64_t v);
/* Set len to 0, keeping the allocation (wiped first when secret). */
void qw_buf_reset(struct qw_buf *b);
/* Release the allocation (wiped first when secret) and return b to the
 * empty state of qw_buf_init() with the same secret flag. NULL accepted. */
void qw_buf_free(struct qw_buf *b);

/* A cursor over len bytes at p. It does not own the bytes; they must
 * outlive it. */
struct qw_reader {
	const uint8_t *p;
	size_t len;
	size_t off; /* bytes consumed so far */
};

void qw_reader_init(struct qw_reader *r, const void *p, size_t len);
/* Bytes not yet consumed. */
size_t qw_reader_remaining(const struct qw_reader *r);
/* Each reader function consumes its bytes and returns 0, or returns
 * QW_EPARSE when fewer bytes remain than it needs; then nothing is consumed
 * and *out is left untouched. */
QW_WUR int qw_reader_read_u8(struct qw_reader *r, uint8_t *out);
QW_WUR int qw_reader_read_u16be(struct qw_reader *r, uint16_t *out);
QW_WUR int qw_reader_read_u32be(struct qw_reader *r, uint32_t *out);
QW_WUR int qw_reader_read_u64be(struct qw_reader *r, uint64_t *out);
/* Copy the next n bytes into out. */
QW_WUR int qw_reader_read_bytes(struct qw_reader *r, void *out, size_t n);
/* Point *out at the next n bytes inside the reader's input (no copy). */
QW_WUR int qw_reader_read_ref(struct qw_reader *r, const uint8_t **out, size_t n);
/* Skip n bytes. */
QW_WUR int qw_reader_skip(struct qw_reader *r, size_t n);
/* 0 if every byte has been consumed, else QW_EPARSE (trailing garbage in a
 * message is a framing error, not something to ignore). */
QW_WUR int qw_reader_expect_end(const struct qw_reader *r);

#endif
