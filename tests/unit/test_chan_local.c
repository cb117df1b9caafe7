/* The in-process channel pair: in-order delivery both ways across threads,
 * copy semantics, close waking a blocked receiver, cleanup of undelivered
 * messages (leaks are caught by the sanitizer build). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "qwave/chan_local.h"

#define N_MSG 500

/* Message i carries type i and i % 37 bytes, byte j = (i + j) & 0xff. */
static size_t msg_len(uint32_t i)
{
	return i % 37;
}

static void msg_fill(uint32_t i, uint8_t *buf)
{
	for (size_t j = 0; j < msg_len(i); j++)
		buf[j] = (uint8_t)(i + j);
}

static int msg_check(uint32_t i, uint32_t type, const uint8_t *data, size_t len)
{
	uint8_t want[64];

	if (type != i || len != msg_len(i))
		return 0;
	msg_fill(i, want);
	return memcmp(want, data, len) == 0;
}

struct peer {
	struct qw_distill_chan *chan;
	int sent_ok, recv_ok;
};

/* Send all messages first, then receive all: the queues must buffer. */
static void *send_then_recv(void *arg)
{
	struct peer *pe = arg;
	uint8_t buf[64];
	uint32_t i;

	pe->sent_ok = pe->recv_ok = 1;
	for (i = 0; i < N_MSG; i++) {
		msg_fill(i, buf);
		if (pe->chan->send(pe->chan->ctx, i, buf, msg_len(i)) != 0)
			pe->sent_ok = 0;
		/* The channel copied it: scribbling on ours changes nothing. */
		memset(buf, 0xa5, sizeof(buf));
	}
	for (i = 0; i < N_MSG; i++) {
		uint32_t type;
		uint8_t *data = NULL;
		size_t len;

		if (pe->chan->recv(pe->chan->ctx, &type, &data, &len) != 0 ||
		    !msg_check(i, type, data, len))
			pe->recv_ok = 0;
		free(data);
	}
	return NULL;
}

static void test_both_directions(void **state)
{
	struct qw_distill_chan a, b;
	struct qw_chan_local *p = qw_chan_local_pair_new(&a, &b);
	struct peer pa = { &a, 0, 0 }, pb = { &b, 0, 0 };
	pthread_t t;

	(void)state;
	assert_non_null(p);
	assert_int_equal(pthread_create(&t, NULL, send_then_recv, &pa), 0);
	send_then_recv(&pb);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(pa.sent_ok && pa.recv_ok);
	assert_true(pb.sent_ok && pb.recv_ok);
	assert_int_equal(qw_chan_local_pending(p), 0);
	qw_chan_local_pair_free(p);
}

/* Ping-pong: each reply depends on the request, so a message delivered to
 * the wrong end or out of order shows up at once. */
static void *echo_plus_one(void *arg)
{
	struct qw_distill_chan *c = arg;

	for (;;) {
		uint32_t type;
		uint8_t *data;
		size_t len;
		int r = c->recv(c->ctx, &type, &data, &len);

		if (r != 0)
			return (void *)(intptr_t)r;
		for (size_t j = 0; j < len; j++)
			data[j]++;
		r = c->send(c->ctx, type + 1, data, len);
		free(data);
		if (r != 0)
			return (void *)(intptr_t)r;
	}
}

static void test_ping_pong_and_close(void **state)
{
	struct qw_distill_chan a, b;
	struct qw_chan_local *p = qw_chan_local_pair_new(&a, &b);
	pthread_t t;
	void *res;
	uint32_t i;

	(void)state;
	assert_non_null(p);
	assert_int_equal(pthread_create(&t, NULL, echo_plus_one, &b), 0);
	for (i = 0; i < 200; i += 2) {
		uint8_t out[3] = { (uint8_t)i, 0, 0xff }, *in = NULL;
		uint32_t type;
		size_t len;

		assert_int_equal(a.send(a.ctx, i, out, sizeof(out)), 0);
		assert_int_equal(a.recv(a.ctx, &type, &in, &len), 0);
		assert_int_equal(type, i + 1);
		assert_int_equal(len, 3);
		assert_int_equal(in[0], (uint8_t)(i + 1));
		assert_int_equal(in[1], 1);
		assert_int_equal(in[2], 0);
		free(in);
	}
	/* Bob is now blocked (or about to block) in recv: closing wakes him. */
	qw_chan_local_close(p);
	assert_int_equal(pthread_join(t, &res), 0);
	assert_int_equal((int)(intptr_t)res, QW_ECLOSED);
	assert_int_equal(a.send(a.ctx, 1, (const uint8_t *)"x", 1), QW_ECLOSED);
	qw_chan_local_close(p); /* idempotent */
	qw_chan_local_pair_free(p);
}

struct waiter {
	struct qw_distill_chan *chan;
	int ret;
};

static void *wait_recv(void *arg)
{
	struct waiter *w = arg;
	uint32_t type;
	uint8_t *data = NULL;
	size_t len;

	w->ret = w->chan->recv(w->chan->ctx, &type, &data, &len);
	free(data);
	return NULL;
}

/* Both ends blocked in recv (nobody will ever send): close releases both. */
static void test_close_wakes_blocked(void **state)
{
	struct qw_distill_chan a, b;
	struct qw_chan_local *p = qw_chan_local_pair_new(&a, &b);
	struct waiter wa = { &a, 1 }, wb = { &b, 1 };
	struct timespec ts = { 0, 20 * 1000 * 1000 };
	pthread_t ta, tb;

	(void)state;
	assert_non_null(p);
	assert_int_equal(pthread_create(&ta, NULL, wait_recv, &wa), 0);
	assert_int_equal(pthread_create(&tb, NULL, wait_recv, &wb), 0);
	nanosleep(&ts, NULL); /* give them time to block; correct either way */
	qw_chan_local_close(p);
	assert_int_equal(pthread_join(ta, NULL), 0);
	assert_int_equal(pthread_join(tb, NULL), 0);
	assert_int_equal(wa.ret, QW_ECLOSED);
	assert_int_equal(wb.ret, QW_ECLOSED);
	qw_chan_local_pair_free(p);
}

/* Empty messages are delivered; undelivered ones are freed with the pair. */
static void test_empty_and_undelivered(void **state)
{
	struct qw_distill_chan a, b;
	struct qw_chan_local *p = qw_chan_local_pair_new(&a, &b);
	uint8_t key[32], *data = NULL;
	uint32_t type;
	size_t len = 99;

	(void)state;
	assert_non_null(p);
	assert_int_equal(a.send(a.ctx, 7, NULL, 0), 0);
	assert_int_equal(qw_chan_local_pending(p), 1);
	assert_int_equal(b.recv(b.ctx, &type, &data, &len), 0);
	assert_int_equal(type, 7);
	assert_int_equal(len, 0);
	assert_non_null(data);
	free(data);
	memset(key, 0x5c, sizeof(key));
	assert_int_equal(a.send(a.ctx, 1, key, sizeof(key)), 0);
	assert_int_equal(b.send(b.ctx, 2, key, 16), 0);
	assert_int_equal(b.send(b.ctx, 3, key, 8), 0);
	assert_int_equal(qw_chan_local_pending(p), 3);
	/* A closed pair delivers nothing more, even what is queued. */
	qw_chan_local_close(p);
	assert_int_equal(a.recv(a.ctx, &type, &data, &len), QW_ECLOSED);
	qw_chan_local_pair_free(p);
	qw_chan_local_pair_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_both_directions),
		cmocka_unit_test(test_ping_pong_and_close),
		cmocka_unit_test(test_close_wakes_blocked),
		cmocka_unit_test(test_empty_and_undelivered),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
