/* Unit tests for the pipeline runner (src/distill/pipeline.c) with trivial
 * stages: both ends over a socketpair, several workers, blocks dropped by
 * one side only, auth pool replenishment and accounting, and a tampering
 * man in the middle. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "qwave/pipeline.h"

#define KEY_BITS 4096
#define MAX_BLOCKS 256

/* Stage 1 ("xchg"): Alice sends the block id, Bob checks it and answers
 * with id * 3; a few round trips so blocks interleave on the wire. */
static int xchg_init(void **state, const void *params)
{
	(void)params;
	*state = NULL;
	return 0;
}

static enum qw_stage_result xchg_process(void *state, struct qw_key_block *b,
					 struct qw_distill_chan *ch)
{
	uint8_t m[8], *in = NULL;
	uint32_t type;
	size_t len;

	(void)state;
	for (int round = 0; round < 3; round++) {
		uint64_t v = b->id * 3 + (uint64_t)round;
		memcpy(m, &v, 8);
		if (b->role == QW_ROLE_ALICE) {
			if (ch->send(ch->ctx, 100 + round, m, 8))
				return QW_STAGE_ERROR;
			if (ch->recv(ch->ctx, &type, &in, &len))
				return QW_STAGE_ERROR;
		} else {
			if (ch->recv(ch->ctx, &type, &in, &len))
				return QW_STAGE_ERROR;
			if (ch->send(ch->ctx, 100 + round, m, 8)) {
				/* the connection failed (tampered run) */
				free(in);
				return QW_STAGE_ERROR;
			}
		}
		if (type != 100u + (uint32_t)round || len != 8 || memcmp(in, m, 8)) {
			free(in);
			return QW_STAGE_ERROR;
		}
		free(in);
	}
	return QW_STAGE_FORWARD;
}

/* Stage 2 ("finish"): Bob speaks first ("hi"); Alice alone drops every
 * block whose id is a multiple of 7 without reading it, so Bob's "hi"
 * reaches a block Alice already finished (discarded) or is still queued
 * when she ends it, and Bob learns of the drop from the DROP frame while
 * waiting in recv. The others get a key derived from the id, the same on
 * both sides. */
static enum qw_stage_result finish_process(void *state, struct qw_key_block *b,
					   struct qw_distill_chan *ch)
{
	uint8_t *in = NULL;
	uint32_t type;
	size_t len;

	(void)state;
	if (b->role == QW_ROLE_ALICE) {
		if (b->id % 7 == 0) {
			strcpy(b->drop_reason, "id is a multiple of 7");
			return QW_STAGE_DROP;
		}
		if (ch->recv(ch->ctx, &type, &in, &len))
			return QW_STAGE_ERROR;
		free(in);
		if (type != 201)
			return QW_STAGE_ERROR;
		if (ch->send(ch->ctx, 200, (const uint8_t *)"ok", 2))
			return QW_STAGE_ERROR;
	} else {
		int r;
		if (ch->send(ch->ctx, 201, (const uint8_t *)"hi", 2))
			return QW_STAGE_ERROR;
		r = ch->recv(ch->ctx, &type, &in, &len);
		free(in);
		if (r == QW_EABORT)
			return QW_STAGE_DROP;
		if (r || type != 200)
			return QW_STAGE_ERROR;
	}
	b->key = qw_bitvec_new(KEY_BITS);
	if (!b->key)
		return QW_STAGE_ERROR;
	for (size_t i = 0; i < KEY_BITS; i++)
		qw_bitvec_set(b->key, i, (int)(((b->id * 2654435761u) >> (i % 29)) ^ (i / 3)) & 1);
	b->state = QW_BLOCK_AMPLIFIED;
	return QW_STAGE_FORWARD;
}

static const struct qw_stage stages[] = {
	{ "xchg", xchg_init, xchg_process, NULL },
	{ "finish", NULL, finish_process, NULL },
};

struct src {
	uint64_t next, last;
};

static int src_next(void *ctx, struct qw_key_block **b)
{
	struct src *s = ctx;

	*b = NULL;
	if (s->next > s->last)
		return 0;
	*b = qw_block_new(s->next++, QW_ROLE_ALICE, NULL);
	return *b ? 0 : QW_ENOMEM;
}

struct collected {
	struct qw_bitvec *key[MAX_BLOCKS + 1];
	char reason[MAX_BLOCKS + 1][128];
	int delivered, dropped;
};

static void sink_deliver(void *ctx, const struct qw_key_block *b)
{
	struct collected *c = ctx;

	assert_true(b->id <= MAX_BLOCKS);
	c->key[b->id] = qw_bitvec_dup(b->key);
	c->delivered++;
}

static void sink_dropped(void *ctx, const struct qw_key_block *b, const char *reason)
{
	struct collected *c = ctx;

	snprintf(c->reason[b->id], sizeof(c->reason[0]), "%s", reason);
	c->dropped++;
}

struct side {
	double share;
	enum qw_role role;
	unsigned workers;
	struct qw_frame_io io;
	struct qw_auth_pool *pool;
	struct qw_frame_conn *conn;
	struct src src;
	struct collected col;
	struct qw_pipeline_stats st;
	int ret;
};

static void *side_main(void *arg)
{
	struct side *s = arg;
	struct qw_pipeline_params p = {
		.role = s->role,
		.stages = stages,
		.nstages = 2,
		.workers = s->workers,
		.auth_share = s->share,
		.recv_timeout_ms = 20000,
	};
	struct qw_pipeline_source src = { &s->src, src_next };
	struct qw_pipeline_sink sink = { &s->col, sink_deliver, sink_dropped };

	s->ret = qw_pipeline_run(&p, s->conn, s->pool, &src, &sink, &s->st);
	return NULL;
}

static uint8_t *psk_new(size_t npads, size_t *len)
{
	uint8_t *k;

	*len = 2 * QW_AUTH_HASHKEY_BYTES + npads * QW_AUTH_UNIT_BYTES;
	k = malloc(*len);
	assert_non_null(k);
	for (size_t i = 0; i < *len; i++)
		k[i] = (uint8_t)(i * 151 + (i >> 8) * 13 + 5);
	return k;
}

/* Optional man in the middle on the Alice->Bob direction: forwards bytes
 * and flips one bit at offset flip_at (or none when flip_at is SIZE_MAX). */
struct mitm {
	int from, to;
	size_t flip_at;
};

static void *mitm_main(void *arg)
{
	struct mitm *m = arg;
	uint8_t buf[4096];
	size_t off = 0;

	for (;;) {
		ssize_t r = read(m->from, buf, sizeof(buf));
		if (r <= 0)
			break;
		if (m->flip_at >= off && m->flip_at < off + (size_t)r)
			buf[m->flip_at - off] ^= 0x10;
		off += (size_t)r;
		if (send(m->to, buf, (size_t)r, MSG_NOSIGNAL) != r)
			break;
	}
	shutdown(m->to, SHUT_RDWR);
	shutdown(m->from, SHUT_RDWR);
	return NULL;
}

/* Run both ends; with flip_at != SIZE_MAX, through a tampering proxy. */
static void run_pair(struct side *a, struct side *b, unsigned wa, unsigned wb, uint64_t nblocks,
		     size_t npads, size_t flip_at, double share)
{
	int sv[2], sv2[2];
	size_t len;
	uint8_t *psk = psk_new(npads, &len);
	pthread_t ta, tb, tm, tm2;
	struct mitm m, m2;
	int err;

	memset(a, 0, sizeof(*a));
	memset(b, 0, sizeof(*b));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	if (flip_at != SIZE_MAX) {
		/* Alice <-> sv[0] | sv[1] <-> mitm <-> sv2[0] | sv2[1] <-> Bob;
		 * only the Alice -> Bob direction is tampered with. */
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv2), 0);
		m = (struct mitm){ sv[1], sv2[0], flip_at };
		m2 = (struct mitm){ sv2[0], sv[1], SIZE_MAX };
		assert_int_equal(pthread_create(&tm, NULL, mitm_main, &m), 0);
		assert_int_equal(pthread_create(&tm2, NULL, mitm_main, &m2), 0);
		qw_frame_io_fd(&b->io, sv2[1]);
	} else {
		qw_frame_io_fd(&b->io, sv[1]);
	}
	qw_frame_io_fd(&a->io, sv[0]);
	a->share = b->share = share;
	a->role = QW_ROLE_ALICE;
	b->role = QW_ROLE_BOB;
	a->workers = wa;
	b->workers = wb;
	a->src = (struct src){ 1, nblocks };
	b->src = a->src;
	a->pool = qw_auth_pool_new(psk, len, 1, &err);
	b->pool = qw_auth_pool_new(psk, len, 1, &err);
	assert_non_null(a->pool);
	assert_non_null(b->pool);
	a->conn = qw_frame_conn_new(&a->io, a->pool, QW_ROLE_ALICE, 5000);
	b->conn = qw_frame_conn_new(&b->io, b->pool, QW_ROLE_BOB, 5000);
	assert_int_equal(pthread_create(&ta, NULL, side_main, a), 0);
	assert_int_equal(pthread_create(&tb, NULL, side_main, b), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	if (flip_at != SIZE_MAX) {
		pthread_join(tm, NULL);
		pthread_join(tm2, NULL);
		close(sv2[0]);
		close(sv2[1]);
	}
	close(sv[0]);
	close(sv[1]);
	free(psk);
}

static void side_free(struct side *s)
{
	qw_frame_conn_free(s->conn);
	qw_auth_pool_free(s->pool);
	for (int i = 0; i <= MAX_BLOCKS; i++)
		qw_bitvec_free(s->col.key[i]);
}

/* share: the pipeline's auth_share; expect: auth bits taken per block. */
static void check_run(unsigned wa, unsigned wb, uint64_t n, double share, size_t expect,
		      size_t npads)
{
	struct side a, b;
	struct qw_auth_pool_stats pa, pb;
	int expect_drop = (int)(n / 7);

	/* npads per direction: far fewer than the ~4 frames per block each
	 * way need, so the run only finishes if replenishment works. */
	run_pair(&a, &b, wa, wb, n, npads, SIZE_MAX, share);
	assert_int_equal(a.ret, 0);
	assert_int_equal(b.ret, 0);
	assert_int_equal(a.col.dropped, expect_drop);
	assert_int_equal(b.col.dropped, expect_drop);
	assert_int_equal(a.col.delivered, (int)n - expect_drop);
	assert_int_equal(b.col.delivered, (int)n - expect_drop);
	for (uint64_t id = 1; id <= n; id++) {
		if (id % 7 == 0) {
			assert_null(a.col.key[id]);
			assert_null(b.col.key[id]);
			assert_string_equal(a.col.reason[id], "id is a multiple of 7");
			assert_string_equal(b.col.reason[id],
					    "peer dropped the block: id is a multiple of 7");
			continue;
		}
		assert_non_null(a.col.key[id]);
		assert_non_null(b.col.key[id]);
		assert_int_equal(a.col.key[id]->nbits, KEY_BITS - expect);
		assert_true(qw_bitvec_equal(a.col.key[id], b.col.key[id]));
	}
	assert_int_equal(a.st.secret_bits, (n - (uint64_t)expect_drop) * (KEY_BITS - expect));
	assert_int_equal(a.st.auth_bits, (n - (uint64_t)expect_drop) * expect);
	assert_int_equal(b.st.auth_bits, a.st.auth_bits);
	/* every frame one side sent, the other received, and the pads match */
	assert_int_equal(a.st.frames_sent, b.st.frames_received);
	assert_int_equal(b.st.frames_sent, a.st.frames_received);
	qw_auth_pool_stats(a.pool, &pa);
	qw_auth_pool_stats(b.pool, &pb);
	assert_int_equal(pa.consumed[QW_AUTH_A2B], a.st.frames_sent * QW_AUTH_PAD_BYTES);
	assert_int_equal(pa.consumed[QW_AUTH_B2A], b.st.frames_sent * QW_AUTH_PAD_BYTES);
	assert_memory_equal(&pa, &pb, sizeof(pa));
	assert_int_equal(pa.deposits, n);
	assert_int_equal(pa.deposited_bytes, a.st.auth_bits / 8);
	assert_int_equal(pa.available[0] + pa.consumed[0],
			 (pa.psk_bytes - 2 * QW_AUTH_HASHKEY_BYTES + pa.deposited_bytes) / 2);
	side_free(&a);
	side_free(&b);
}

static void test_one_worker(void **state)
{
	(void)state;
	/* half of each 4096-bit key to the auth pool */
	check_run(1, 1, 30, 0.5, 2048, 16);
	/* 1 %: less than the 4 frames (x 256 bits) Alice sends per block,
	 * so exactly what the block spent goes back; each dropped block
	 * (5 frames, no deposit) costs the pool for good, hence more pads. */
	check_run(1, 1, 30, 0.01, 4 * 256, 64);
}

static void test_many_workers(void **state)
{
	(void)state;
	check_run(2, 2, 100, 0.5, 2048, 16);
	check_run(4, 2, 100, 0.5, 2048, 16);
	check_run(2, 5, 60, 0.01, 4 * 256, 128);
}

static void test_tampered_run_fails(void **state)
{
	struct side a, b;

	(void)state;
	/* Flip one bit in the body of one of Alice's frames (well into the run). */
	run_pair(&a, &b, 2, 2, 40, 16, 2000, 0.5);
	assert_true(b.ret == QW_EAUTH || b.ret == QW_EPROTO);
	assert_true(a.ret != 0);
	side_free(&a);
	side_free(&b);
}

static void test_bad_params(void **state)
{
	struct side s;
	struct qw_pipeline_params p = { .role = QW_ROLE_ALICE, .stages = stages, .nstages = 2 };
	struct qw_pipeline_source src = { &s.src, src_next };
	struct qw_pipeline_stats st;
	size_t len;
	uint8_t *psk = psk_new(2, &len);
	int err;

	(void)state;
	memset(&s, 0, sizeof(s));
	qw_frame_io_fd(&s.io, 0);
	s.pool = qw_auth_pool_new(psk, len, 1, &err);
	s.conn = qw_frame_conn_new(&s.io, s.pool, QW_ROLE_ALICE, 10);
	p.auth_share = 1.5;
	assert_int_equal(qw_pipeline_run(&p, s.conn, s.pool, &src, NULL, &st), QW_EINVAL);
	p.auth_share = 0.1;
	p.nstages = 0;
	assert_int_equal(qw_pipeline_run(&p, s.conn, s.pool, &src, NULL, &st), QW_EINVAL);
	qw_frame_conn_free(s.conn);
	qw_auth_pool_free(s.pool);
	free(psk);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_worker),
		cmocka_unit_test(test_many_workers),
		cmocka_unit_test(test_tampered_run_fails),
		cmocka_unit_test(test_bad_params),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
