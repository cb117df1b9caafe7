/* Unit tests for the authenticated framing and the auth key pool
 * (src/qkd/frame.c): round trips, every kind of tampering, replay,
 * reordering, truncation, and exact one-time-pad accounting on both ends. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "qwave/frame.h"

/* A byte stream in memory: writes append, reads consume. Lets a test edit
 * the bytes between sender and receiver. */
struct memio {
	uint8_t *buf;
	size_t len, cap, rpos;
};

static ssize_t mem_read(void *ctx, uint8_t *b, size_t n)
{
	struct memio *m = ctx;
	size_t k = m->len - m->rpos < n ? m->len - m->rpos : n;

	if (k)
		memcpy(b, m->buf + m->rpos, k);
	m->rpos += k;
	return (ssize_t)k;
}

static ssize_t mem_write(void *ctx, const uint8_t *b, size_t n)
{
	struct memio *m = ctx;

	if (m->len + n > m->cap) {
		m->cap = (m->len + n) * 2;
		m->buf = realloc(m->buf, m->cap);
		assert_non_null(m->buf);
	}
	memcpy(m->buf + m->len, b, n);
	m->len += n;
	return (ssize_t)n;
}

static void mem_io(struct qw_frame_io *io, struct memio *m)
{
	memset(m, 0, sizeof(*m));
	io->ctx = m;
	io->read = mem_read;
	io->write = mem_write;
	io->shutdown = NULL;
}

/* Deterministic pre-shared key of npads pads per direction. */
static uint8_t *make_psk(size_t npads, size_t *len, uint8_t seed)
{
	uint8_t *k;

	*len = 2 * QW_AUTH_HASHKEY_BYTES + npads * QW_AUTH_UNIT_BYTES;
	k = malloc(*len);
	assert_non_null(k);
	for (size_t i = 0; i < *len; i++)
		k[i] = (uint8_t)(i * 131 + seed * 7 + (i >> 8) * 29 + 1);
	return k;
}

/* Both endpoints, each with its own pool made from the same psk. */
struct pair {
	struct qw_auth_pool *pa, *pb;
	struct qw_frame_conn *a, *b;
	struct qw_frame_io ioa, iob;
	struct memio m; /* Alice -> Bob bytes */
};

static void pair_init(struct pair *p, size_t npads)
{
	size_t len;
	uint8_t *psk = make_psk(npads, &len, 1);
	int err;

	memset(p, 0, sizeof(*p));
	p->pa = qw_auth_pool_new(psk, len, 1, &err);
	assert_non_null(p->pa);
	p->pb = qw_auth_pool_new(psk, len, 1, &err);
	assert_non_null(p->pb);
	free(psk);
	mem_io(&p->ioa, &p->m);
	p->iob = p->ioa;
	p->a = qw_frame_conn_new(&p->ioa, p->pa, QW_ROLE_ALICE, 200);
	p->b = qw_frame_conn_new(&p->iob, p->pb, QW_ROLE_BOB, 200);
	assert_non_null(p->a);
	assert_non_null(p->b);
}

static void pair_free(struct pair *p)
{
	qw_frame_conn_free(p->a);
	qw_frame_conn_free(p->b);
	qw_auth_pool_free(p->pa);
	qw_auth_pool_free(p->pb);
	free(p->m.buf);
}

static void test_roundtrip_mem(void **state)
{
	struct pair p;
	uint8_t body[1000];
	struct qw_frame f;

	(void)state;
	pair_init(&p, 64);
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(i * 7);
	for (size_t n = 0; n <= sizeof(body); n += 97) {
		assert_int_equal(qw_frame_send(p.a, QW_FRAME_DATA, 0x1000 + (uint32_t)n, 5 + n,
					       body, n), 0);
		assert_int_equal(qw_frame_recv(p.b, &f), 0);
		assert_int_equal(f.kind, QW_FRAME_DATA);
		assert_int_equal(f.type, 0x1000 + n);
		assert_int_equal(f.stream, 5 + n);
		assert_int_equal(f.seq, n / 97);
		assert_int_equal(f.len, n);
		if (n)
			assert_memory_equal(f.body, body, n);
		qw_frame_release(&f);
	}
	/* drop and fin kinds carry through as well */
	assert_int_equal(qw_frame_send(p.a, QW_FRAME_DROP, 0, 9, (const uint8_t *)"why", 3), 0);
	assert_int_equal(qw_frame_send(p.a, QW_FRAME_FIN, 0, 0, NULL, 0), 0);
	assert_int_equal(qw_frame_recv(p.b, &f), 0);
	assert_int_equal(f.kind, QW_FRAME_DROP);
	assert_memory_equal(f.body, "why", 3);
	qw_frame_release(&f);
	assert_int_equal(qw_frame_recv(p.b, &f), 0);
	assert_int_equal(f.kind, QW_FRAME_FIN);
	/* clean end of stream between frames */
	assert_int_equal(qw_frame_recv(p.b, &f), QW_ECLOSED);
	assert_int_equal(qw_frame_send(p.a, 0, 0, 1, NULL, 0), QW_EINVAL);
	pair_free(&p);
}

struct big_writer {
	struct qw_frame_conn *c;
	const uint8_t *body;
	size_t len;
	int ret;
};

static void *big_write(void *arg)
{
	struct big_writer *w = arg;

	w->ret = qw_frame_send(w->c, QW_FRAME_DATA, 7, 1, w->body, w->len);
	return NULL;
}

/* A frame much larger than a socket buffer, both directions, real fds. */
static void test_roundtrip_socket(void **state)
{
	int sv[2];
	size_t len, n = 3u << 20;
	uint8_t *psk = make_psk(8, &len, 3), *body = malloc(n);
	struct qw_auth_pool *pa, *pb;
	struct qw_frame_io ioa, iob;
	struct qw_frame_conn *a, *b;
	struct big_writer w;
	struct qw_frame f;
	pthread_t t;
	int err;

	(void)state;
	assert_non_null(body);
	for (size_t i = 0; i < n; i++)
		body[i] = (uint8_t)(i ^ (i >> 9));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	qw_frame_io_fd(&ioa, sv[0]);
	qw_frame_io_fd(&iob, sv[1]);
	pa = qw_auth_pool_new(psk, len, 1, &err);
	pb = qw_auth_pool_new(psk, len, 1, &err);
	a = qw_frame_conn_new(&ioa, pa, QW_ROLE_ALICE, 1000);
	b = qw_frame_conn_new(&iob, pb, QW_ROLE_BOB, 1000);
	w = (struct big_writer){ a, body, n, -100 };
	assert_int_equal(pthread_create(&t, NULL, big_write, &w), 0);
	assert_int_equal(qw_frame_recv(b, &f), 0);
	pthread_join(t, NULL);
	assert_int_equal(w.ret, 0);
	assert_int_equal(f.len, n);
	assert_memory_equal(f.body, body, n);
	qw_frame_release(&f);
	/* and back */
	assert_int_equal(qw_frame_send(b, QW_FRAME_DATA, 8, 2, body, 100), 0);
	assert_int_equal(qw_frame_recv(a, &f), 0);
	assert_int_equal(f.type, 8);
	assert_memory_equal(f.body, body, 100);
	qw_frame_release(&f);
	/* abort from one side: the other sees the end of the stream */
	qw_frame_conn_abort(a);
	assert_int_equal(qw_frame_recv(b, &f), QW_ECLOSED);
	assert_int_equal(qw_frame_send(a, QW_FRAME_DATA, 1, 1, NULL, 0), QW_ESTATE);
	qw_frame_conn_free(a);
	qw_frame_conn_free(b);
	qw_auth_pool_free(pa);
	qw_auth_pool_free(pb);
	close(sv[0]);
	close(sv[1]);
	free(psk);
	free(body);
}

/* Raw bytes written after a frame on the same stream (the next QKD
 * session's header) stay in the stream for the next raw reader once the
 * receiver asked for exact reads; with read-ahead they would be gone with
 * the connection. */
static void test_exact_reads(void **state)
{
	static const uint8_t raw[5] = { 'n', 'e', 'x', 't', '!' };
	int sv[2];
	size_t len;
	uint8_t *psk = make_psk(8, &len, 4), got[sizeof(raw)], body[64];
	struct qw_auth_pool *pa, *pb;
	struct qw_frame_io ioa, iob;
	struct qw_frame_conn *a, *b;
	struct qw_frame f;
	int err;

	(void)state;
	memset(body, 0x5a, sizeof(body));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	qw_frame_io_fd(&ioa, sv[0]);
	qw_frame_io_fd(&iob, sv[1]);
	pa = qw_auth_pool_new(psk, len, 1, &err);
	pb = qw_auth_pool_new(psk, len, 1, &err);
	a = qw_frame_conn_new(&ioa, pa, QW_ROLE_ALICE, 1000);
	b = qw_frame_conn_new(&iob, pb, QW_ROLE_BOB, 1000);
	assert_non_null(a);
	assert_non_null(b);
	/* two frames: the first read ahead would bring both and the raw tail */
	assert_int_equal(qw_frame_send(a, QW_FRAME_DATA, 1, 1, body, sizeof(body)), 0);
	assert_int_equal(qw_frame_send(a, QW_FRAME_DATA, 2, 1, body, 10), 0);
	assert_int_equal(write(sv[0], raw, sizeof(raw)), (ssize_t)sizeof(raw));
	qw_frame_conn_exact_reads(b);
	assert_int_equal(qw_frame_recv(b, &f), 0);
	assert_int_equal(f.type, 1);
	qw_frame_release(&f);
	assert_int_equal(qw_frame_recv(b, &f), 0);
	assert_int_equal(f.type, 2);
	assert_int_equal(f.len, 10);
	qw_frame_release(&f);
	qw_frame_conn_free(b);
	assert_int_equal(recv(sv[1], got, sizeof(got), MSG_DONTWAIT), (ssize_t)sizeof(got));
	assert_memory_equal(got, raw, sizeof(raw));
	qw_frame_conn_free(a);
	qw_auth_pool_free(pa);
	qw_auth_pool_free(pb);
	close(sv[0]);
	close(sv[1]);
	free(psk);
}

/* Flip every bit of one framed message, one at a time: each corrupted frame
 * must be refused (tag mismatch, or a malformed/out-of-sequence header). */
static void test_tamper_every_bit(void **state)
{
	const uint8_t body[40] = "the bases Bob measured in, block 17....";
	size_t frame_len = QW_FRAME_HEADER_BYTES + sizeof(body) + QW_FRAME_TAG_BYTES;

	(void)state;
	for (size_t bit = 0; bit < 8 * frame_len; bit++) {
		struct pair p;
		struct qw_frame f;
		int ret;

		pair_init(&p, 4);
		assert_int_equal(qw_frame_send(p.a, QW_FRAME_DATA, 3, 17, body, sizeof(body)), 0);
		assert_int_equal(p.m.len, frame_len);
		p.m.buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		ret = qw_frame_recv(p.b, &f);
		assert_true(ret == QW_EAUTH || ret == QW_EPROTO);
		/* the failure is final */
		assert_int_equal(qw_frame_recv(p.b, &f), ret);
		pair_free(&p);
	}
}

static void test_replay_reorder_truncate(void **state)
{
	struct pair p;
	struct qw_frame f;
	uint8_t f0[64], f1[64];
	size_t n0, n1;

	(void)state;
	/* replay: frame 0 delivered twice */
	pair_init(&p, 8);
	assert_int_equal(qw_frame_send(p.a, QW_FRAME_DATA, 1, 1, (const uint8_t *)"x", 1), 0);
	n0 = p.m.len;
	memcpy(f0, p.m.buf, n0);
	assert_int_equal(qw_frame_recv(p.b, &f), 0);
	qw_frame_release(&f);
	mem_write(&p.m, f0, n0);
	assert_int_equal(qw_frame_recv(p.b, &f), QW_EPROTO);
	pair_free(&p);

	/* reorder: frame 1 before frame 0 */
	pair_init(&p, 8);
	assert_int_equal(qw_frame_send(p.a, QW_FRAME_DATA, 1, 1, (const uint8_t *)"a", 1), 0);
	n0 = p.m.len;
	memcpy(f0, p.m.buf, n0);
	assert_int_equal(qw_frame_send(p.a, QW_FRAME_DATA, 1, 1, (const uint8_t *)"b", 1), 0);
	n1 = p.m.len - n0;
	memcpy(f1, p.m.buf + n0, n1);
	p.m.len = 0;
	mem_write(&p.m, f1, n1);
	mem_write(&p.m, f0, n0);
	assert_int_equal(qw_frame_recv(p.b, &f), QW_EPROTO);
	pair_free(&p);

	/* a frame with its sequence number rewritten to the expected one but
	 * carrying the later frame's pad/tag: the tag no longer matches */
	pair_init(&p, 8);
	assert_int_equal(qw_frame_send(p.a, QW_FRAME_DATA, 1, 1, (const uint8_t *)"a", 1), 0);
	assert_int_equal(qw_frame_send(p.a, QW_FRAME_DATA, 1, 1, (const uint8_t *)"b", 1), 0);
	memmove(p.m.buf, p.m.buf + n0, n1);
	p.m.len = n1;
	p.m.buf[27] = 0; /* seq 1 -> 0 */
	assert_int_equal(qw_frame_recv(p.b, &f), QW_EAUTH);
	pair_free(&p);

	/* truncation anywhere inside a frame */
	for (size_t cut = 1; cut < QW_FRAME_HEADER_BYTES + 5 + QW_FRAME_TAG_BYTES; cut++) {
		pair_init(&p, 8);
		assert_int_equal(qw_frame_send(p.a, QW_FRAME_DATA, 1, 1,
					       (const uint8_t *)"hello", 5), 0);
		p.m.len -= cut;
		assert_int_equal(qw_frame_recv(p.b, &f), QW_EPROTO);
		pair_free(&p);
	}
	/* a frame from the wrong direction (Bob's own pads) is refused */
	pair_init(&p, 8);
	assert_int_equal(qw_frame_send(p.b, QW_FRAME_DATA, 1, 1, (const uint8_t *)"z", 1), 0);
	assert_int_equal(qw_frame_recv(p.b, &f), QW_EAUTH);
	pair_free(&p);
}

/* Pads are used exactly once per frame, in the same order on both ends,
 * and deposits arriving in different orders give identical pad streams. */
static void test_pool_accounting(void **state)
{
	struct pair p;
	struct qw_auth_pool_stats sa, sb;
	struct qw_frame f;
	uint8_t dep[3][2 * QW_AUTH_UNIT_BYTES];
	uint8_t x[QW_AUTH_PAD_BYTES], y[QW_AUTH_PAD_BYTES];

	(void)state;
	pair_init(&p, 4); /* 4 pads per direction */
	for (int i = 0; i < 3; i++)
		for (size_t j = 0; j < sizeof(dep[i]); j++)
			dep[i][j] = (uint8_t)(0xa0 + i * 16 + j);
	/* Alice resolves blocks 1, 2, 3 in order 3, 1, 2 (2 is a drop); Bob
	 * in order 2, 3, 1. */
	assert_int_equal(qw_auth_pool_deposit(p.pa, 3, dep[2], sizeof(dep[2])), 0);
	assert_int_equal(qw_auth_pool_deposit(p.pa, 1, dep[0], sizeof(dep[0])), 0);
	qw_auth_pool_stats(p.pa, &sa);
	assert_int_equal(sa.pending, 1);
	assert_int_equal(sa.deposits, 1);
	assert_int_equal(qw_auth_pool_deposit(p.pa, 2, NULL, 0), 0);
	assert_int_equal(qw_auth_pool_deposit(p.pb, 2, NULL, 0), 0);
	assert_int_equal(qw_auth_pool_deposit(p.pb, 3, dep[2], sizeof(dep[2])), 0);
	assert_int_equal(qw_auth_pool_deposit(p.pb, 1, dep[0], sizeof(dep[0])), 0);
	/* a second deposit for a resolved id, or a partial unit, is refused */
	assert_int_equal(qw_auth_pool_deposit(p.pb, 2, NULL, 0), QW_EINVAL);
	assert_int_equal(qw_auth_pool_deposit(p.pb, 4, dep[0], 16), QW_EINVAL);
	qw_auth_pool_stats(p.pa, &sa);
	qw_auth_pool_stats(p.pb, &sb);
	assert_int_equal(sa.deposits, 3);
	assert_int_equal(sa.pending, 0);
	assert_int_equal(sa.deposited_bytes, 2 * sizeof(dep[0]));
	assert_int_equal(sa.available[QW_AUTH_A2B], 4 * 16 + 2 * 2 * 16);
	assert_int_equal(sa.available[QW_AUTH_B2A], sa.available[QW_AUTH_A2B]);
	assert_memory_equal(&sa, &sb, sizeof(sa));

	/* 5 frames A->B and 3 frames B->A over two in-memory streams */
	{
		struct memio back;
		struct qw_frame_io ioback;
		struct qw_frame_conn *b2, *a2;

		mem_io(&ioback, &back);
		b2 = qw_frame_conn_new(&ioback, p.pb, QW_ROLE_BOB, 100);
		a2 = qw_frame_conn_new(&ioback, p.pa, QW_ROLE_ALICE, 100);
		for (int i = 0; i < 5; i++) {
			assert_int_equal(qw_frame_send(p.a, QW_FRAME_DATA, 1, 1, NULL, 0), 0);
			assert_int_equal(qw_frame_recv(p.b, &f), 0);
		}
		for (int i = 0; i < 3; i++) {
			assert_int_equal(qw_frame_send(b2, QW_FRAME_DATA, 1, 1, NULL, 0), 0);
			assert_int_equal(qw_frame_recv(a2, &f), 0);
		}
		qw_frame_conn_free(a2);
		qw_frame_conn_free(b2);
		free(back.buf);
	}
	qw_auth_pool_stats(p.pa, &sa);
	qw_auth_pool_stats(p.pb, &sb);
	assert_int_equal(sa.consumed[QW_AUTH_A2B], 5 * QW_AUTH_PAD_BYTES);
	assert_int_equal(sa.consumed[QW_AUTH_B2A], 3 * QW_AUTH_PAD_BYTES);
	assert_memory_equal(&sa, &sb, sizeof(sa));
	assert_int_equal(sa.available[QW_AUTH_A2B] + sa.consumed[QW_AUTH_A2B],
			 (sa.psk_bytes - 32 + sa.deposited_bytes) / 2);
	/* the remaining pads are identical on both ends, and the deposits
	 * landed in id order: pad 6 of A->B is the first pad of block 1's
	 * deposit (psk gave pads 0..3, block 1 gives 4, 5) ... */
	for (uint64_t i = 5; i < 4 + 4; i++) {
		assert_int_equal(qw_auth_pool_take(p.pa, QW_AUTH_A2B, i, 10, x), 0);
		assert_int_equal(qw_auth_pool_take(p.pb, QW_AUTH_A2B, i, 10, y), 0);
		assert_memory_equal(x, y, sizeof(x));
		if (i == 5)
			assert_memory_equal(x, dep[0] + 16, 16);
		if (i == 6)
			assert_memory_equal(x, dep[2], 16);
	}
	/* B->A got the second halves */
	assert_int_equal(qw_auth_pool_take(p.pa, QW_AUTH_B2A, 3, 10, x), 0);
	assert_int_equal(qw_auth_pool_take(p.pa, QW_AUTH_B2A, 4, 10, x), 0);
	assert_memory_equal(x, dep[0] + 32, 16);
	/* spent or skipped indexes are refused; an empty pool times out */
	assert_int_equal(qw_auth_pool_take(p.pa, QW_AUTH_A2B, 3, 10, x), QW_EPROTO);
	assert_int_equal(qw_auth_pool_take(p.pa, QW_AUTH_A2B, 9, 10, x), QW_EPROTO);
	assert_int_equal(qw_auth_pool_take(p.pa, QW_AUTH_A2B, 8, 10, x), QW_EAGAIN);
	pair_free(&p);
}

static void test_pool_exhausted_and_bad_psk(void **state)
{
	struct pair p;
	struct qw_frame f;
	uint8_t k[QW_AUTH_PSK_MIN_BYTES + 16] = { 0 };
	int err = 0;

	(void)state;
	pair_init(&p, 1);
	assert_int_equal(qw_frame_send(p.a, QW_FRAME_DATA, 1, 1, NULL, 0), 0);
	assert_int_equal(qw_frame_send(p.a, QW_FRAME_DATA, 1, 1, NULL, 0), QW_EAGAIN);
	assert_int_equal(qw_frame_recv(p.b, &f), 0);
	pair_free(&p);
	assert_null(qw_auth_pool_new(k, QW_AUTH_PSK_MIN_BYTES - 32, 1, &err));
	assert_int_equal(err, QW_EINVAL);
	assert_null(qw_auth_pool_new(k, QW_AUTH_PSK_MIN_BYTES + 16, 1, &err));
	assert_int_equal(err, QW_EINVAL);
}

/* Garbage and mutated frames never pass: a forged frame would need a
 * 128-bit tag guess. Deterministic pseudo-random inputs (xorshift). */
static void test_garbage_never_accepted(void **state)
{
	uint64_t x = 0x9e3779b97f4a7c15u;
	uint8_t body[64];

	(void)state;
	memset(body, 0x5a, sizeof(body));
	for (int round = 0; round < 3000; round++) {
		struct pair p;
		struct qw_frame f;
		size_t n;
		int ret;

		pair_init(&p, 2);
		if (round % 2) {
			/* a valid frame, then random bytes overwritten at random */
			assert_int_equal(qw_frame_send(p.a, QW_FRAME_DATA, 9, 3, body,
						       (size_t)(round % 64)), 0);
			for (int k = 0; k < 1 + round % 4; k++) {
				x ^= x << 13, x ^= x >> 7, x ^= x << 17;
				p.m.buf[x % p.m.len] ^= (uint8_t)(1 + (x >> 8) % 255);
			}
		} else {
			/* random bytes, with a plausible header now and then */
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			n = x % 200;
			for (size_t i = 0; i < n; i++) {
				uint8_t c;
				x ^= x << 13, x ^= x >> 7, x ^= x << 17;
				c = (uint8_t)x;
				mem_write(&p.m, &c, 1);
			}
			if (n >= QW_FRAME_HEADER_BYTES + QW_FRAME_TAG_BYTES && round % 4 == 0) {
				/* version, kind, seq 0 and a length that fits */
				memset(p.m.buf, 0, QW_FRAME_HEADER_BYTES);
				p.m.buf[0] = QW_FRAME_VERSION;
				p.m.buf[1] = QW_FRAME_DATA;
				p.m.buf[11] = (uint8_t)(n - QW_FRAME_HEADER_BYTES -
							QW_FRAME_TAG_BYTES);
			}
		}
		ret = qw_frame_recv(p.b, &f);
		assert_true(ret == QW_EAUTH || ret == QW_EPROTO || ret == QW_ECLOSED);
		pair_free(&p);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_mem),
		cmocka_unit_test(test_roundtrip_socket),
		cmocka_unit_test(test_exact_reads),
		cmocka_unit_test(test_tamper_every_bit),
		cmocka_unit_test(test_replay_reorder_truncate),
		cmocka_unit_test(test_pool_accounting),
		cmocka_unit_test(test_pool_exhausted_and_bad_psk),
		cmocka_unit_test(test_garbage_never_accepted),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
