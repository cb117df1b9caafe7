#include <stdlib.h>
#include <string.h>

#include "qwave/buf.h"
#include "qwave/secmem.h"

void qw_buf_init(struct qw_buf *b, int secret)
{
	QW_REQUIRE(b);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->secret = secret;
}

int qw_buf_reserve(struct qw_buf *b, size_t extra)
{
	size_t need, cap;
	uint8_t *nd;

	QW_REQUIRE(b);
	if (extra > SIZE_MAX - b->len)
		return QW_ENOMEM;
	need = b->len + extra;
	if (need <= b->cap)
		return 0;
	cap = b->cap < 64 ? 64 : b->cap;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (b->secret) {
		/* realloc() could move the bytes and leave the old copy in
		 * freed memory; copy and wipe instead. */
		nd = malloc(cap);
		if (!nd)
			return QW_ENOMEM;
		if (b->len)
			memcpy(nd, b->data, b->len);
		qw_free_secret(b->data, b->cap);
	} else {
		nd = realloc(b->data, cap);
		if (!nd)
			return QW_ENOMEM;
	}
	b->data = nd;
	b->cap = cap;
	return 0;
}

int qw_buf_append(struct qw_buf *b, const void *p, size_t n)
{
	int ret;

	QW_REQUIRE(p || n == 0);
	if (n == 0)
		return 0;
	ret = qw_buf_reserve(b, n);
	if (ret)
		return ret;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int qw_buf_append_u8(struct qw_buf *b, uint8_t v)
{
	return qw_buf_append(b, &v, 1);
}

int qw_buf_append_u16be(struct qw_buf *b, uint16_t v)
{
	uint8_t x[2] = { (uint8_t)(v >> 8), (uint8_t)v };

	return qw_buf_append(b, x, sizeof(x));
}

int qw_buf_append_u32be(struct qw_buf *b, uint32_t v)
{
	uint8_t x[4];

	for (int i = 0; i < 4; i++)
		x[i] = (uint8_t)(v >> (24 - 8 * i));
	return qw_buf_append(b, x, sizeof(x));
}

int qw_buf_append_u64be(struct qw_buf *b, uint64_t v)
{
	uint8_t x[8];

	for (int i = 0; i < 8; i++)
		x[i] = (uint8_t)(v >> (56 - 8 * i));
	return qw_buf_append(b, x, sizeof(x));
}

void qw_buf_reset(struct qw_buf *b)
{
	QW_REQUIRE(b);
	/* The whole capacity: callers may have written past len through
	 * qw_buf_reserve() without advancing it. */
	if (b->secret)
		qw_wipe(b->data, b->cap);
	b->len = 0;
}

void qw_buf_free(struct qw_buf *b)
{
	if (!b)
		return;
	if (b->secret)
		qw_free_secret(b->data, b->cap);
	else
		free(b->data);
	qw_buf_init(b, b->secret);
}

void qw_reader_init(struct qw_reader *r, const void *p, size_t len)
{
	QW_REQUIRE(r && (p || len == 0));
	r->p = p;
	r->len = len;
	r->off = 0;
}

size_t qw_reader_remaining(const struct qw_reader *r)
{
	return r->len - r->off;
}

/* Consume n bytes and return where they start, or NULL if too few remain. */
static const uint8_t *take(struct qw_reader *r, size_t n)
{
	const uint8_t *p;

	QW_REQUIRE(r && r->off <= r->len);
	if (n > r->len - r->off)
		return NULL;
	p = r->p + r->off;
	r->off += n;
	return p;
}

static int read_be(struct qw_reader *r, size_t n, uint64_t *out)
{
	const uint8_t *p = take(r, n);
	uint64_t v = 0;

	if (!p)
		return QW_EPARSE;
	for (size_t i = 0; i < n; i++)
		v = (v << 8) | p[i];
	*out = v;
	return 0;
}

int qw_reader_read_u8(struct qw_reader *r, uint8_t *out)
{
	uint64_t v;
	int ret = read_be(r, 1, &v);

	if (!ret)
		*out = (uint8_t)v;
	return ret;
}

int qw_reader_read_u16be(struct qw_reader *r, uint16_t *out)
{
	uint64_t v;
	int ret = read_be(r, 2, &v);

	if (!ret)
		*out = (uint16_t)v;
	return ret;
}

int qw_reader_read_u32be(struct qw_reader *r, uint32_t *out)
{
	uint64_t v;
	int ret = read_be(r, 4, &v);

	if (!ret)
		*out = (uint32_t)v;
	return ret;
}

int qw_reader_read_u64be(struct qw_reader *r, uint64_t *out)
{
	return read_be(r, 8, out);
}

int qw_reader_read_bytes(struct qw_reader *r, void *out, size_t n)
{
	const uint8_t *p = take(r, n);

	if (!p)
		return QW_EPARSE;
	if (n)
		memcpy(out, p, n);
	return 0;
}

int qw_reader_read_ref(struct qw_reader *r, const uint8_t **out, size_t n)
{
	const uint8_t *p = take(r, n);

	if (!p)
		return QW_EPARSE;
	*out = p;
	return 0;
}

int qw_reader_skip(struct qw_reader *r, size_t n)
{
	return take(r, n) ? 0 : QW_EPARSE;
}

int qw_reader_expect_end(const struct qw_reader *r)
{
	return r->off == r->len ? 0 : QW_EPARSE;
}
