/* Authenticated framing and the authentication key pool of a QKD link.
 * Wire format, key layout and failure policy: include/qwave/frame.h. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "qwave/frame.h"
#include "qwave/secmem.h"
#include "qwave/uhash.h"

/* ---- byte stream over a file descriptor --------------------------------- */

static ssize_t fd_read(void *ctx, uint8_t *buf, size_t len)
{
	int fd = (int)(intptr_t)ctx;

	for (;;) {
		ssize_t r = read(fd, buf, len);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		return errno == ECONNRESET ? QW_ECLOSED : QW_EIO;
	}
}

static ssize_t fd_write(void *ctx, const uint8_t *buf, size_t len)
{
	int fd = (int)(intptr_t)ctx;

	for (;;) {
		/* MSG_NOSIGNAL: a peer that went away must give EPIPE, not
		 * kill the process with SIGPIPE. */
		ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
		if (w < 0 && errno == ENOTSOCK)
			w = write(fd, buf, len);
		if (w >= 0)
			return w;
		if (errno == EINTR)
			continue;
		return (errno == EPIPE || errno == ECONNRESET) ? QW_ECLOSED : QW_EIO;
	}
}

static void fd_shutdown(void *ctx)
{
	(void)shutdown((int)(intptr_t)ctx, SHUT_RDWR);
}

void qw_frame_io_fd(struct qw_frame_io *io, int fd)
{
	QW_REQUIRE(io != NULL && fd >= 0);
	io->ctx = (void *)(intptr_t)fd;
	io->read = fd_read;
	io->write = fd_write;
	io->shutdown = fd_shutdown;
}

/* ---- authentication key pool -------------------------------------------- */

struct pad_stream {
	uint8_t *buf;
	size_t cap, off, len; /* unconsumed pads are buf[off..len) */
	uint64_t next_index;  /* pad index of buf[off] */
	uint64_t consumed;
};

struct pending {
	uint64_t id;
	uint8_t *bytes;
	size_t n;
	struct pending *next;
};

struct qw_auth_pool {
	pthread_mutex_t mu;
	pthread_cond_t grew;
	uint8_t hashkey[2][QW_AUTH_HASHKEY_BYTES];
	struct pad_stream s[2];
	uint64_t next_id; /* the next block id whose deposit may be appended */
	struct pending *pending; /* sorted by id */
	uint64_t npending;
	uint64_t psk_bytes, deposited, deposits;
};

static int stream_append(struct pad_stream *s, const uint8_t *b, size_t n)
{
	if (n == 0)
		return 0;
	if (s->off > 0 && s->len + n > s->cap) {
		/* Compact: move the live pads down and wipe the vacated tail. */
		memmove(s->buf, s->buf + s->off, s->len - s->off);
		qw_wipe(s->buf + (s->len - s->off), s->off);
		s->len -= s->off;
		s->off = 0;
	}
	if (s->len + n > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		uint8_t *nb;

		while (cap < s->len + n)
			cap *= 2;
		/* No realloc: it could leave a copy of the pads in freed memory. */
		nb = malloc(cap);
		if (!nb)
			return QW_ENOMEM;
		if (s->len)
			memcpy(nb, s->buf, s->len);
		qw_free_secret(s->buf, s->cap);
		s->buf = nb;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, b, n);
	s->len += n;
	return 0;
}

/* Split n bytes (a multiple of QW_AUTH_UNIT_BYTES): first half A->B,
 * second half B->A. Caller holds the lock. */
static int pool_append(struct qw_auth_pool *p, const uint8_t *b, size_t n)
{
	int ret = stream_append(&p->s[QW_AUTH_A2B], b, n / 2);

	if (!ret)
		ret = stream_append(&p->s[QW_AUTH_B2A], b + n / 2, n / 2);
	return ret;
}

struct qw_auth_pool *qw_auth_pool_new(const uint8_t *psk, size_t len, uint64_t first_block_id,
				      int *err)
{
	struct qw_auth_pool *p;
	size_t pads;
	int dummy;

	if (!err)
		err = &dummy;
	QW_REQUIRE(psk != NULL || len == 0);
	if (len < QW_AUTH_PSK_MIN_BYTES ||
	    (len - 2 * QW_AUTH_HASHKEY_BYTES) % QW_AUTH_UNIT_BYTES) {
		*err = QW_EINVAL;
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		*err = QW_ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->grew, NULL);
	memcpy(p->hashkey[QW_AUTH_A2B], psk, QW_AUTH_HASHKEY_BYTES);
	memcpy(p->hashkey[QW_AUTH_B2A], psk + QW_AUTH_HASHKEY_BYTES, QW_AUTH_HASHKEY_BYTES);
	pads = len - 2 * QW_AUTH_HASHKEY_BYTES;
	if (pool_append(p, psk + 2 * QW_AUTH_HASHKEY_BYTES, pads)) {
		qw_auth_pool_free(p);
		*err = QW_ENOMEM;
		return NULL;
	}
	p->psk_bytes = len;
	p->next_id = first_block_id;
	*err = 0;
	return p;
}

void qw_auth_pool_free(struct qw_auth_pool *p)
{
	if (!p)
		return;
	for (int d = 0; d < 2; d++)
		qw_free_secret(p->s[d].buf, p->s[d].cap);
	while (p->pending) {
		struct pending *n = p->pending->next;
		qw_free_secret(p->pending->bytes, p->pending->n);
		free(p->pending);
		p->pending = n;
	}
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->grew);
	qw_wipe(p, sizeof(*p));
	free(p);
}

int qw_auth_pool_deposit(struct qw_auth_pool *p, uint64_t block_id, const uint8_t *bytes,
			 size_t n)
{
	struct pending *e = NULL, **pp;
	int ret = QW_EINVAL;

	QW_REQUIRE(p != NULL && (bytes != NULL || n == 0));
	if (n % QW_AUTH_UNIT_BYTES)
		return QW_EINVAL;
	pthread_mutex_lock(&p->mu);
	if (block_id < p->next_id)
		goto out;
	for (pp = &p->pending; *pp && (*pp)->id < block_id; pp = &(*pp)->next)
		;
	if (*pp && (*pp)->id == block_id)
		goto out;
	ret = QW_ENOMEM;
	e = calloc(1, sizeof(*e));
	if (!e)
		goto out;
	if (n) {
		e->bytes = malloc(n);
		if (!e->bytes) {
			free(e);
			goto out;
		}
		memcpy(e->bytes, bytes, n);
	}
	e->id = block_id;
	e->n = n;
	e->next = *pp;
	*pp = e;
	p->npending++;
	/* Append in id order only: the pad streams must be byte-identical on
	 * both ends whatever order their blocks complete in. */
	ret = 0;
	while (p->pending && p->pending->id == p->next_id) {
		e = p->pending;
		if (!ret)
			ret = pool_append(p, e->bytes, e->n);
		p->deposited += e->n;
		p->deposits++;
		p->next_id++;
		p->npending--;
		p->pending = e->next;
		qw_free_secret(e->bytes, e->n);
		free(e);
	}
	pthread_cond_broadcast(&p->grew);
out:
	pthread_mutex_unlock(&p->mu);
	return ret;
}

void qw_auth_pool_hashkey(const struct qw_auth_pool *p, enum qw_auth_dir dir,
			  uint8_t key[static QW_AUTH_HASHKEY_BYTES])
{
	QW_REQUIRE(p != NULL && (dir == QW_AUTH_A2B || dir == QW_AUTH_B2A));
	memcpy(key, p->hashkey[dir], QW_AUTH_HASHKEY_BYTES);
}

int qw_auth_pool_take(struct qw_auth_pool *p, enum qw_auth_dir dir, uint64_t index,
		      int timeout_ms, uint8_t pad[static QW_AUTH_PAD_BYTES])
{
	struct pad_stream *s;
	struct timespec deadline;
	int ret = QW_EPROTO;

	QW_REQUIRE(p != NULL && (dir == QW_AUTH_A2B || dir == QW_AUTH_B2A));
	s = &p->s[dir];
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&p->mu);
	if (index != s->next_index)
		goto out;
	while (s->len - s->off < QW_AUTH_PAD_BYTES) {
		if (pthread_cond_timedwait(&p->grew, &p->mu, &deadline) == ETIMEDOUT &&
		    s->len - s->off < QW_AUTH_PAD_BYTES) {
			ret = QW_EAGAIN;
			goto out;
		}
	}
	memcpy(pad, s->buf + s->off, QW_AUTH_PAD_BYTES);
	qw_wipe(s->buf + s->off, QW_AUTH_PAD_BYTES);
	s->off += QW_AUTH_PAD_BYTES;
	s->next_index++;
	s->consumed += QW_AUTH_PAD_BYTES;
	ret = 0;
out:
	pthread_mutex_unlock(&p->mu);
	return ret;
}

void qw_auth_pool_stats(struct qw_auth_pool *p, struct qw_auth_pool_stats *out)
{
	QW_REQUIRE(p != NULL && out != NULL);
	pthread_mutex_lock(&p->mu);
	out->psk_bytes = p->psk_bytes;
	out->deposited_bytes = p->deposited;
	out->deposits = p->deposits;
	for (int d = 0; d < 2; d++) {
		out->consumed[d] = p->s[d].consumed;
		out->available[d] = p->s[d].len - p->s[d].off;
	}
	out->pending = p->npending;
	pthread_mutex_unlock(&p->mu);
}

/* ---- framed connection -------------------------------------------------- */

struct qw_frame_conn {
	const struct qw_frame_io *io;
	struct qw_auth_pool *pool;
	enum qw_auth_dir tx_dir, rx_dir;
	struct qw_wcmac *tx_mac, *rx_mac;
	int pad_timeout_ms;
	pthread_mutex_t send_mu;
	_Atomic uint64_t tx_seq, rx_seq;
	_Atomic int failed; /* first fatal error, 0 while healthy */
	/* Bytes read ahead from io (rxbuf[rxoff..rxlen)): one read call
	 * usually brings a whole frame, or several, instead of one call for
	 * the header and one for the rest. Used by the one reader at a time
	 * (qw_frame_recv's contract); wiped on free. */
	uint8_t rxbuf[16384];
	size_t rxoff, rxlen;
	/* no read-ahead (qw_frame_conn_exact_reads) */
	int exact;
};

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

struct qw_frame_conn *qw_frame_conn_new(const struct qw_frame_io *io, struct qw_auth_pool *pool,
					enum qw_role role, int pad_timeout_ms)
{
	uint8_t key[QW_AUTH_HASHKEY_BYTES];
	struct qw_frame_conn *c;

	QW_REQUIRE(io != NULL && io->read != NULL && io->write != NULL && pool != NULL);
	QW_REQUIRE(role == QW_ROLE_ALICE || role == QW_ROLE_BOB);
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->io = io;
	c->pool = pool;
	c->tx_dir = role == QW_ROLE_ALICE ? QW_AUTH_A2B : QW_AUTH_B2A;
	c->rx_dir = role == QW_ROLE_ALICE ? QW_AUTH_B2A : QW_AUTH_A2B;
	qw_auth_pool_hashkey(pool, c->tx_dir, key);
	c->tx_mac = qw_wcmac_new(key);
	qw_auth_pool_hashkey(pool, c->rx_dir, key);
	c->rx_mac = qw_wcmac_new(key);
	qw_wipe(key, sizeof(key));
	if (!c->tx_mac || !c->rx_mac) {
		qw_wcmac_free(c->tx_mac);
		qw_wcmac_free(c->rx_mac);
		free(c);
		return NULL;
	}
	c->pad_timeout_ms = pad_timeout_ms > 0 ? pad_timeout_ms : 30000;
	pthread_mutex_init(&c->send_mu, NULL);
	return c;
}

void qw_frame_conn_exact_reads(struct qw_frame_conn *c)
{
	c->exact = 1;
}

void qw_frame_conn_free(struct qw_frame_conn *c)
{
	if (!c)
		return;
	pthread_mutex_destroy(&c->send_mu);
	qw_wcmac_free(c->tx_mac);
	qw_wcmac_free(c->rx_mac);
	qw_wipe(c, sizeof(*c));
	free(c);
}

static void conn_fail(struct qw_frame_conn *c, int err)
{
	int expect = 0;

	atomic_compare_exchange_strong(&c->failed, &expect, err);
}

void qw_frame_conn_abort(struct qw_frame_conn *c)
{
	QW_REQUIRE(c != NULL);
	conn_fail(c, QW_ECLOSED);
	if (c->io->shutdown)
		c->io->shutdown(c->io->ctx);
}

uint64_t qw_frame_conn_sent(struct qw_frame_conn *c)
{
	return atomic_load(&c->tx_seq);
}

uint64_t qw_frame_conn_received(struct qw_frame_conn *c)
{
	return atomic_load(&c->rx_seq);
}

static int write_all(const struct qw_frame_io *io, const uint8_t *b, size_t n)
{
	while (n) {
		ssize_t w = io->write(io->ctx, b, n);
		if (w < 0)
			return (int)w;
		if (w == 0)
			return QW_EIO;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Read exactly n bytes, through the read-ahead buffer. *got tells how many
 * arrived before a failure, so the caller can tell a clean end of stream
 * from a truncated frame. */
static int read_all(struct qw_frame_conn *c, uint8_t *b, size_t n, size_t *got)
{
	*got = 0;
	while (*got < n) {
		ssize_t r;

		if (c->rxoff < c->rxlen) {
			size_t k = c->rxlen - c->rxoff;

			if (k > n - *got)
				k = n - *got;
			memcpy(b + *got, c->rxbuf + c->rxoff, k);
			c->rxoff += k;
			*got += k;
			continue;
		}
		if (c->exact || n - *got >= sizeof(c->rxbuf)) {
			/* A large body goes straight to its buffer. */
			r = c->io->read(c->io->ctx, b + *got, n - *got);
			if (r > 0)
				*got += (size_t)r;
		} else {
			c->rxoff = c->rxlen = 0;
			r = c->io->read(c->io->ctx, c->rxbuf, sizeof(c->rxbuf));
			if (r > 0)
				c->rxlen = (size_t)r;
		}
		if (r < 0)
			return (int)r;
		if (r == 0)
			return QW_ECLOSED;
	}
	return 0;
}

int qw_frame_send(struct qw_frame_conn *c, enum qw_frame_kind kind, uint32_t type,
		  uint64_t stream, const uint8_t *body, size_t len)
{
	uint8_t pad[QW_AUTH_PAD_BYTES];
	uint8_t *buf = NULL;
	size_t total;
	uint64_t seq;
	int ret;

	QW_REQUIRE(c != NULL && (body != NULL || len == 0));
	if (kind < QW_FRAME_DATA || kind > QW_FRAME_FIN || len > QW_FRAME_MAX_BODY)
		return QW_EINVAL;
	total = QW_FRAME_HEADER_BYTES + len + QW_FRAME_TAG_BYTES;
	/* One buffer, one write: small frames must not wait on Nagle between
	 * header and body. */
	buf = malloc(total);
	if (!buf)
		return QW_ENOMEM;
	pthread_mutex_lock(&c->send_mu);
	ret = atomic_load(&c->failed);
	if (ret) {
		ret = QW_ESTATE;
		goto out;
	}
	seq = atomic_load(&c->tx_seq);
	buf[0] = QW_FRAME_VERSION;
	buf[1] = (uint8_t)kind;
	put_be16(buf + 2, 0);
	put_be32(buf + 4, type);
	put_be32(buf + 8, (uint32_t)len);
	put_be64(buf + 12, stream);
	put_be64(buf + 20, seq);
	if (len)
		memcpy(buf + QW_FRAME_HEADER_BYTES, body, len);
	ret = qw_auth_pool_take(c->pool, c->tx_dir, seq, c->pad_timeout_ms, pad);
	if (ret)
		goto fail;
	qw_wcmac_tag(c->tx_mac, pad, buf, QW_FRAME_HEADER_BYTES + len,
		     buf + QW_FRAME_HEADER_BYTES + len);
	/* The pad is spent even if the write fails: never reuse it. */
	atomic_store(&c->tx_seq, seq + 1);
	ret = write_all(c->io, buf, total);
	if (ret)
		goto fail;
	goto out;
fail:
	conn_fail(c, ret);
out:
	pthread_mutex_unlock(&c->send_mu);
	qw_wipe(pad, sizeof(pad));
	qw_free_secret(buf, total);
	return ret;
}

void qw_frame_release(struct qw_frame *f)
{
	if (!f)
		return;
	qw_free_secret(f->body, f->len);
	f->body = NULL;
	f->len = 0;
}

int qw_frame_recv(struct qw_frame_conn *c, struct qw_frame *f)
{
	uint8_t pad[QW_AUTH_PAD_BYTES];
	uint8_t *buf = NULL, *hdr;
	size_t len = 0, got, bufsize = QW_FRAME_HEADER_BYTES;
	uint64_t seq;
	int ret;

	QW_REQUIRE(c != NULL && f != NULL);
	memset(f, 0, sizeof(*f));
	ret = atomic_load(&c->failed);
	if (ret)
		return ret;
	buf = malloc(QW_FRAME_HEADER_BYTES);
	if (!buf) {
		ret = QW_ENOMEM;
		goto fail;
	}
	ret = read_all(c, buf, QW_FRAME_HEADER_BYTES, &got);
	if (ret) {
		if (ret == QW_ECLOSED && got > 0)
			ret = QW_EPROTO; /* truncated header */
		goto fail;
	}
	hdr = buf;
	len = get_be32(hdr + 8);
	seq = get_be64(hdr + 20);
	ret = QW_EPROTO;
	if (hdr[0] != QW_FRAME_VERSION || hdr[1] < QW_FRAME_DATA || hdr[1] > QW_FRAME_FIN ||
	    hdr[2] || hdr[3] || len > QW_FRAME_MAX_BODY)
		goto fail;
	/* The sequence number is the pad index: a replayed or reordered frame
	 * is refused before any pad is touched. */
	if (seq != atomic_load(&c->rx_seq))
		goto fail;
	{
		uint8_t *nb = realloc(buf, QW_FRAME_HEADER_BYTES + len + QW_FRAME_TAG_BYTES);
		if (!nb) {
			ret = QW_ENOMEM;
			goto fail;
		}
		buf = nb;
		bufsize = QW_FRAME_HEADER_BYTES + len + QW_FRAME_TAG_BYTES;
	}
	ret = read_all(c, buf + QW_FRAME_HEADER_BYTES, len + QW_FRAME_TAG_BYTES, &got);
	if (ret) {
		if (ret == QW_ECLOSED)
			ret = QW_EPROTO; /* truncated body or tag */
		goto fail;
	}
	ret = qw_auth_pool_take(c->pool, c->rx_dir, seq, c->pad_timeout_ms, pad);
	if (ret)
		goto fail;
	atomic_store(&c->rx_seq, seq + 1);
	ret = qw_wcmac_verify(c->rx_mac, pad, buf, QW_FRAME_HEADER_BYTES + len,
			      buf + QW_FRAME_HEADER_BYTES + len);
	if (ret)
		goto fail;
	f->kind = buf[1];
	f->type = get_be32(buf + 4);
	f->stream = get_be64(buf + 12);
	f->seq = seq;
	f->len = len;
	if (len) {
		f->body = malloc(len);
		if (!f->body) {
			ret = QW_ENOMEM;
			f->len = 0;
			goto fail;
		}
		memcpy(f->body, buf + QW_FRAME_HEADER_BYTES, len);
	}
	ret = 0;
	goto out;
fail:
	conn_fail(c, ret);
out:
	qw_wipe(pad, sizeof(pad));
	qw_free_secret(buf, bufsize);
	return ret;
}

int qw_frame_tcp_pair(int fds[2])
{
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	int ls = -1, c = -1, s = -1, one = 1;

	ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ls < 0)
		return -1;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 1) ||
	    getsockname(ls, (struct sockaddr *)&a, &alen))
		goto fail;
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)))
		goto fail;
	s = accept(ls, NULL, NULL);
	if (s < 0)
		goto fail;
	close(ls);
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fds[0] = s;
	fds[1] = c;
	return 0;
fail:
	if (c >= 0)
		close(c);
	close(ls);
	return -1;
}
