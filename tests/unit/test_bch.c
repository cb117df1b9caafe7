/* BCH codes and the BCH reconciliation stage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include <cmocka.h>

#include "qwave/bch.h"
#include "qwave/rng.h"

static void random_bits(struct qw_rng *r, struct qw_bitvec *v)
{
	for (size_t i = 0; i < v->nbits; i++)
		qw_bitvec_set(v, i, (int)(qw_rng_u64(r) & 1));
}

/* Flip e distinct random positions of [0, len). */
static void flip_random(struct qw_rng *r, struct qw_bitvec *v, size_t len, unsigned e)
{
	uint8_t *hit = calloc(len, 1);

	assert_non_null(hit);
	for (unsigned k = 0; k < e;) {
		size_t i = (size_t)qw_rng_below(r, len);
		if (hit[i])
			continue;
		hit[i] = 1;
		qw_bitvec_flip(v, i);
		k++;
	}
	free(hit);
}

/* Known generator polynomials: BCH(15,7) t=2: g = x^8+x^7+x^6+x^4+1;
 * BCH(15,5) t=3: 10 parity bits; BCH(31,21) t=2; BCH(255,131) t=18 has
 * 124 parity bits; BCH(1023, 923) t=10 has 100. */
static void test_parameters(void **state)
{
	struct qw_bch *c;
	static const struct { unsigned m, t; size_t deg; } kv[] = {
		{ 4, 1, 4 }, { 4, 2, 8 }, { 4, 3, 10 }, { 5, 2, 10 }, { 8, 18, 124 },
		{ 10, 10, 100 }, { 13, 4, 52 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
		assert_int_equal(qw_bch_new(&c, kv[i].m, kv[i].t), 0);
		assert_int_equal(qw_bch_parity_bits(c), kv[i].deg);
		assert_int_equal(qw_bch_n(c), (1u << kv[i].m) - 1);
		qw_bch_free(c);
	}
	/* every field table is primitive (construction checks the period) */
	for (unsigned m = QW_BCH_MIN_M; m <= QW_BCH_MAX_M; m++) {
		assert_int_equal(qw_bch_new(&c, m, 1), 0);
		qw_bch_free(c);
	}
	assert_int_equal(qw_bch_new(&c, 2, 1), QW_EINVAL);
	assert_null(c);
	assert_int_equal(qw_bch_new(&c, 16, 1), QW_EINVAL);
	assert_int_equal(qw_bch_new(&c, 4, 0), QW_EINVAL);
	assert_int_equal(qw_bch_new(&c, 4, 8), QW_EINVAL);
	qw_bch_free(NULL);
}

/* (15,7) generator x^8 + x^7 + x^6 + x^4 + 1: the codeword of data 1 (bit 0)
 * is x^8 + (x^8 mod g) = x^8 + x^7 + x^6 + x^4 + 1. */
static void test_encode_known(void **state)
{
	struct qw_bch *c;
	struct qw_bitvec *d = qw_bitvec_new(7), *cw = qw_bitvec_new(0);
	uint16_t s[2];

	(void)state;
	assert_int_equal(qw_bch_new(&c, 4, 2), 0);
	qw_bitvec_set(d, 0, 1);
	assert_int_equal(qw_bch_encode(c, d, cw), 0);
	assert_int_equal(cw->nbits, 15);
	assert_int_equal(cw->w[0], (1u << 0) | (1u << 4) | (1u << 6) | (1u << 7) | (1u << 8));
	qw_bch_syndromes(c, cw, 0, 15, s);
	assert_int_equal(s[0], 0);
	assert_int_equal(s[1], 0);
	qw_bch_free(c);
	qw_bitvec_free(d);
	qw_bitvec_free(cw);
}

/* Every pattern of up to t errors is corrected; codewords have zero
 * syndromes; beyond t the decoder either reports a failure or lands on
 * another codeword, never on a non-codeword. */
static void test_correct_up_to_t(void **state)
{
	static const struct { unsigned m, t; } cfg[] = { { 5, 3 }, { 8, 10 }, { 10, 25 }, { 12, 40 } };
	struct qw_rng *r = qw_rng_new_seeded(7);

	(void)state;
	for (size_t ci = 0; ci < sizeof(cfg) / sizeof(cfg[0]); ci++) {
		struct qw_bch *c;
		size_t n, k;
		struct qw_bitvec *d, *cw = qw_bitvec_new(0), *rx;
		unsigned detected = 0, trials = 0;

		assert_int_equal(qw_bch_new(&c, cfg[ci].m, cfg[ci].t), 0);
		n = qw_bch_n(c);
		k = n - qw_bch_parity_bits(c);
		d = qw_bitvec_new(k);
		for (int trial = 0; trial < 20; trial++) {
			uint16_t s[64];
			unsigned e = (unsigned)qw_rng_below(r, cfg[ci].t + 1);

			random_bits(r, d);
			assert_int_equal(qw_bch_encode(c, d, cw), 0);
			qw_bch_syndromes(c, cw, 0, n, s);
			for (unsigned j = 0; j < cfg[ci].t; j++)
				assert_int_equal(s[j], 0);
			rx = qw_bitvec_dup(cw);
			flip_random(r, rx, n, e);
			assert_int_equal(qw_bch_decode(c, rx, n), (int)e);
			assert_true(qw_bitvec_equal(rx, cw));
			qw_bitvec_free(rx);

			/* t + 1 .. 3t errors */
			rx = qw_bitvec_dup(cw);
			flip_random(r, rx, n, cfg[ci].t + 1 + (unsigned)qw_rng_below(r, 2 * cfg[ci].t));
			{
				struct qw_bitvec *before = qw_bitvec_dup(rx);
				int ret = qw_bch_decode(c, rx, n);
				trials++;
				if (ret == QW_ERANGE) {
					detected++;
					assert_true(qw_bitvec_equal(rx, before)); /* unchanged */
				} else {
					assert_true(ret >= 0 && ret <= (int)cfg[ci].t);
					qw_bch_syndromes(c, rx, 0, n, s);
					for (unsigned j = 0; j < cfg[ci].t; j++)
						assert_int_equal(s[j], 0);
					assert_false(qw_bitvec_equal(rx, cw));
				}
				qw_bitvec_free(before);
			}
			qw_bitvec_free(rx);
		}
		/* most beyond-t patterns are detected for these codes */
		assert_true(detected * 2 > trials);
		qw_bch_free(c);
		qw_bitvec_free(d);
		qw_bitvec_free(cw);
	}
	qw_rng_free(r);
}

/* The sketch: Alice's syndromes + Bob's give the error pattern's, for a
 * shortened segment of arbitrary content (no codeword needed). */
static void test_sketch_shortened(void **state)
{
	struct qw_rng *r = qw_rng_new_seeded(11);
	struct qw_bch *c;
	struct qw_bitvec *a = qw_bitvec_new(3000), *b;
	uint16_t sa[30], sb[30];

	(void)state;
	assert_int_equal(qw_bch_new(&c, 12, 30), 0);
	for (int trial = 0; trial < 10; trial++) {
		size_t off = 500, len = 1800;
		random_bits(r, a);
		b = qw_bitvec_dup(a);
		flip_random(r, b, 3000, 0);
		{
			/* errors only inside the segment */
			uint8_t *hit = calloc(len, 1);
			for (unsigned k = 0; k < 30;) {
				size_t i = (size_t)qw_rng_below(r, len);
				if (!hit[i]) {
					hit[i] = 1;
					qw_bitvec_flip(b, off + i);
					k++;
				}
			}
			free(hit);
		}
		qw_bch_syndromes(c, a, off, len, sa);
		qw_bch_syndromes(c, b, off, len, sb);
		for (int j = 0; j < 30; j++)
			sb[j] ^= sa[j];
		assert_int_equal(qw_bch_correct(c, b, off, len, sb), 30);
		assert_true(qw_bitvec_equal(a, b));
		qw_bitvec_free(b);
	}
	qw_bch_free(c);
	qw_bitvec_free(a);
	qw_rng_free(r);
}

static void test_plan(void **state)
{
	unsigned m, t;
	uint32_t segs;

	(void)state;
	/* binomial tail: len 100, p 0.01: P(X > 4) = 0.0034, P(X > 5) = 0.00059 */
	assert_int_equal(qw_bch_t_for(100, 0.01, 1e-3), 5);
	assert_int_equal(qw_bch_t_for(100, 0.01, 1e-2), 4);
	assert_int_equal(qw_bch_plan(8000, 0.01, 1e-3, 6, 13, &m, &t, &segs), 0);
	assert_true(m >= 6 && m <= 13);
	assert_true((size_t)segs * ((1u << m) - 1) >= 8000);
	assert_true(qw_bch_t_for((8000 + segs - 1) / segs, 0.01, 1e-3) == t);
	/* leak above Shannon (h(0.01) = 0.081 bit/bit) but bounded */
	assert_true((double)segs * m * t > 0.081 * 8000);
	assert_true((double)segs * m * t < 0.3 * 8000);
	assert_int_equal(qw_bch_plan(8000, 0.3, 1e-3, 6, 8, &m, &t, &segs), QW_ERANGE);
	assert_int_equal(qw_bch_plan(0, 0.01, 1e-3, 6, 8, &m, &t, &segs), QW_EINVAL);
}

/* ---- the stage over an in-process channel (two threads) ------------------ */

struct q {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint8_t *m[8];
	size_t len[8];
	uint32_t type[8];
	unsigned head, count;
};

struct duplex {
	struct q *in, *out;
};

static int q_send(void *ctx, uint32_t type, const uint8_t *msg, size_t len)
{
	struct q *q = ((struct duplex *)ctx)->out;
	uint8_t *copy = malloc(len ? len : 1);

	if (!copy)
		return QW_ENOMEM;
	memcpy(copy, msg, len);
	pthread_mutex_lock(&q->mu);
	while (q->count == 8)
		pthread_cond_wait(&q->cv, &q->mu);
	q->m[(q->head + q->count) % 8] = copy;
	q->len[(q->head + q->count) % 8] = len;
	q->type[(q->head + q->count) % 8] = type;
	q->count++;
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
	return 0;
}

static int q_recv(void *ctx, uint32_t *type, uint8_t **msg, size_t *len)
{
	struct q *q = ((struct duplex *)ctx)->in;

	pthread_mutex_lock(&q->mu);
	while (q->count == 0)
		pthread_cond_wait(&q->cv, &q->mu);
	*msg = q->m[q->head];
	*len = q->len[q->head];
	*type = q->type[q->head];
	q->head = (q->head + 1) % 8;
	q->count--;
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
	return 0;
}

struct party {
	void *state;
	struct qw_key_block *blk;
	struct qw_distill_chan chan;
	enum qw_stage_result res;
};

static void *party_run(void *arg)
{
	struct party *pt = arg;

	pt->res = qw_bch_stage.process(pt->state, pt->blk, &pt->chan);
	return NULL;
}

static void run_pair(struct qw_bitvec *a, struct qw_bitvec *b, double p, int keep,
		     struct party *pa, struct party *pb)
{
	struct q qa, qb;
	struct duplex da = { &qa, &qb }, db = { &qb, &qa };
	pthread_t th;

	memset(&qa, 0, sizeof(qa));
	memset(&qb, 0, sizeof(qb));
	pthread_mutex_init(&qa.mu, NULL);
	pthread_cond_init(&qa.cv, NULL);
	pthread_mutex_init(&qb.mu, NULL);
	pthread_cond_init(&qb.cv, NULL);
	struct qw_bch_stage_params sp = { 0, 0, 0, keep };

	assert_int_equal(qw_bch_stage.init(&pa->state, &sp), 0);
	assert_int_equal(qw_bch_stage.init(&pb->state, &sp), 0);
	pa->blk = qw_block_new(1, QW_ROLE_ALICE, a);
	pb->blk = qw_block_new(1, QW_ROLE_BOB, b);
	pa->blk->qber_estimate = pb->blk->qber_estimate = p;
	pa->chan = (struct qw_distill_chan){ &da, q_send, q_recv };
	pb->chan = (struct qw_distill_chan){ &db, q_send, q_recv };
	assert_int_equal(pthread_create(&th, NULL, party_run, pa), 0);
	party_run(pb);
	assert_int_equal(pthread_join(th, NULL), 0);
	qw_bch_stage.free(pa->state);
	qw_bch_stage.free(pb->state);
	pthread_mutex_destroy(&qa.mu);
	pthread_cond_destroy(&qa.cv);
	pthread_mutex_destroy(&qb.mu);
	pthread_cond_destroy(&qb.cv);
}

static void test_stage(void **state)
{
	struct qw_rng *r = qw_rng_new_seeded(5);
	unsigned m, t;
	uint32_t segs;

	(void)state;
	for (int trial = 0; trial < 5; trial++) {
		struct qw_bitvec *a = qw_bitvec_new(10000), *b;
		struct party pa, pb;

		random_bits(r, a);
		b = qw_bitvec_dup(a);
		for (size_t i = 0; i < 10000; i++)
			if (qw_rng_uniform(r) < 0.01)
				qw_bitvec_flip(b, i);
		run_pair(a, b, 0.01, trial & 1, &pa, &pb);
		assert_int_equal(pa.res, QW_STAGE_FORWARD);
		assert_int_equal(pb.res, QW_STAGE_FORWARD);
		assert_true(qw_bitvec_equal(pa.blk->key, pb.blk->key));
		assert_int_equal(pa.blk->state, QW_BLOCK_CORRECTED);
		assert_int_equal(qw_bch_plan(10000, 0.01, 1e-3, 6, 13, &m, &t, &segs), 0);
		assert_int_equal(pa.blk->disclosed_bits, (uint64_t)segs * m * t);
		assert_int_equal(pb.blk->disclosed_bits, pa.blk->disclosed_bits);
		assert_int_equal(pa.blk->ec_parity_bits, pb.blk->ec_parity_bits);
		assert_int_equal(pa.blk->ec_round_trips, 1);
		qw_block_free(pa.blk);
		qw_block_free(pb.blk);
	}
	/* far too many errors: segments fail, are removed on both sides, or the
	 * whole block is dropped - never a FORWARD with unequal keys of equal
	 * length claimed decoded... leak still counted */
	{
		struct qw_bitvec *a = qw_bitvec_new(5000), *b;
		struct party pa, pb;

		random_bits(r, a);
		b = qw_bitvec_dup(a);
		for (size_t i = 0; i < 5000; i++)
			if (qw_rng_uniform(r) < 0.08)
				qw_bitvec_flip(b, i);
		run_pair(a, b, 0.01, 1, &pa, &pb);
		assert_int_equal(pa.res, pb.res);
		assert_true(pa.blk->disclosed_bits > 0);
		assert_int_equal(pa.blk->disclosed_bits, pb.blk->disclosed_bits);
		if (pa.res == QW_STAGE_FORWARD)
			assert_int_equal(pa.blk->key->nbits, pb.blk->key->nbits);
		else
			assert_int_equal(pa.res, QW_STAGE_DROP);
		qw_block_free(pa.blk);
		qw_block_free(pb.blk);
	}
	/* without keep_partial the same block is dropped by both sides */
	{
		struct qw_bitvec *a = qw_bitvec_new(5000), *b;
		struct party pa, pb;

		random_bits(r, a);
		b = qw_bitvec_dup(a);
		for (size_t i = 0; i < 5000; i++)
			if (qw_rng_uniform(r) < 0.08)
				qw_bitvec_flip(b, i);
		run_pair(a, b, 0.01, 0, &pa, &pb);
		assert_int_equal(pa.res, QW_STAGE_DROP);
		assert_int_equal(pb.res, QW_STAGE_DROP);
		assert_int_equal(pa.blk->disclosed_bits, pb.blk->disclosed_bits);
		assert_true(pa.blk->disclosed_bits > 0);
		qw_block_free(pa.blk);
		qw_block_free(pb.blk);
	}
	qw_rng_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parameters),
		cmocka_unit_test(test_encode_known),
		cmocka_unit_test(test_correct_up_to_t),
		cmocka_unit_test(test_sketch_shortened),
		cmocka_unit_test(test_plan),
		cmocka_unit_test(test_stage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
