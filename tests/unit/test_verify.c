/* The verification and privacy amplification stages run by Alice and Bob
 * over an in-process channel (Alice on a thread, Bob on the test thread). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/chan_local.h"
#include "qwave/rng.h"
#include "qwave/toeplitz.h"
#include "qwave/uhash.h"

struct side {
	const struct qw_stage *stage;
	const void *params;
	struct qw_key_block *b;
	struct qw_distill_chan chan;
	enum qw_stage_result res;
};

static void run_side(struct side *s)
{
	void *state = NULL;

	assert_int_equal(s->stage->init(&state, s->params), 0);
	s->res = s->stage->process(state, s->b, &s->chan);
	s->stage->free(state);
}

static void *alice_thread(void *arg)
{
	run_side(arg);
	return NULL;
}

static struct qw_rng *rng;

static struct qw_bitvec *random_bits(size_t n)
{
	struct qw_bitvec *v = qw_bitvec_new(n);

	assert_non_null(v);
	assert_int_equal(qw_rng_bytes(rng, v->w, v->nwords * 8), 0);
	if (n & 63)
		v->w[v->nwords - 1] &= ((uint64_t)1 << (n & 63)) - 1;
	return v;
}

/* Run stage on a pair of blocks; Alice's params may carry a seeded rng. */
static void run_pair(const struct qw_stage *stage, const void *pa, const void *pb,
		     struct qw_key_block *ba, struct qw_key_block *bb, enum qw_stage_result *ra,
		     enum qw_stage_result *rb)
{
	struct side a = { stage, pa, ba, { 0 }, QW_STAGE_ERROR };
	struct side b = { stage, pb, bb, { 0 }, QW_STAGE_ERROR };
	struct qw_chan_local *ch = qw_chan_local_pair_new(&a.chan, &b.chan);
	pthread_t t;

	assert_non_null(ch);
	assert_int_equal(pthread_create(&t, NULL, alice_thread, &a), 0);
	run_side(&b);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(qw_chan_local_pending(ch), 0);
	qw_chan_local_pair_free(ch);
	*ra = a.res;
	*rb = b.res;
}

static void make_pair(size_t n, size_t nerr, struct qw_key_block **ba,
		      struct qw_key_block **bb)
{
	struct qw_bitvec *ka = random_bits(n), *kb = qw_bitvec_dup(ka);

	assert_non_null(kb);
	for (size_t i = 0; i < nerr; i++)
		qw_bitvec_flip(kb, (size_t)qw_rng_below(rng, n));
	*ba = qw_block_new(42, QW_ROLE_ALICE, ka);
	*bb = qw_block_new(42, QW_ROLE_BOB, kb);
	assert_non_null(*ba);
	assert_non_null(*bb);
	(*ba)->state = (*bb)->state = QW_BLOCK_CORRECTED;
}

static void test_verify_match_and_mismatch(void **st)
{
	struct qw_verify_params p = { 40, rng };
	static const size_t sizes[] = { 1, 100, 4096, 100003 };

	(void)st;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		for (size_t nerr = 0; nerr <= 1; nerr++) {
			struct qw_key_block *ba, *bb;
			enum qw_stage_result ra, rb;

			make_pair(sizes[i], nerr, &ba, &bb);
			ba->disclosed_bits = bb->disclosed_bits = 1000;
			run_pair(&qw_stage_verify, &p, &p, ba, bb, &ra, &rb);
			assert_int_equal(ba->disclosed_bits, 1040);
			assert_int_equal(bb->disclosed_bits, 1040);
			if (nerr == 0) {
				assert_int_equal(ra, QW_STAGE_FORWARD);
				assert_int_equal(rb, QW_STAGE_FORWARD);
				assert_int_equal(ba->state, QW_BLOCK_VERIFIED);
				assert_int_equal(bb->state, QW_BLOCK_VERIFIED);
			} else {
				/* One flipped bit: the hash is linear in the key with a
				 * nonzero difference polynomial; a 40-bit tag misses it
				 * with probability <= 2^-40 * (n/128 + 1). */
				assert_int_equal(ra, QW_STAGE_DROP);
				assert_int_equal(rb, QW_STAGE_DROP);
				assert_string_equal(ba->drop_reason, "verification hash mismatch");
				assert_string_equal(bb->drop_reason, "verification hash mismatch");
			}
			qw_block_free(ba);
			qw_block_free(bb);
		}
	}
}

static void test_verify_wrong_state_is_error(void **st)
{
	void *state = NULL;
	struct qw_key_block *ba, *bb;
	struct qw_distill_chan dead = { NULL, NULL, NULL }; /* never used */

	(void)st;
	make_pair(64, 0, &ba, &bb);
	ba->state = QW_BLOCK_SIFTED;
	assert_int_equal(qw_stage_verify.init(&state, NULL), 0);
	assert_int_equal(qw_stage_verify.process(state, ba, &dead), QW_STAGE_ERROR);
	qw_stage_verify.free(state);
	{
		struct qw_verify_params bad = { 129, NULL };

		assert_int_equal(qw_stage_verify.init(&state, &bad), QW_EINVAL);
	}
	qw_block_free(ba);
	qw_block_free(bb);
}

static void test_tag_bits_for_eps(void **st)
{
	(void)st;
	/* (2^20/128 + 1) / 2^t <= 1e-15 needs t = 63 (8193 / 2^63 = 8.9e-16). */
	assert_int_equal(qw_verify_tag_bits((uint64_t)1 << 20, 1e-15), 63);
	assert_int_equal(qw_verify_tag_bits(128, 0.5), 2); /* 2 / 2^t <= 0.5 */
	assert_int_equal(qw_verify_tag_bits(128, 1e-60), 0);
}

static void test_pa_stage(void **st)
{
	struct qw_pa_params pa = { rng, QW_TOEPLITZ_AUTO }, pb = { NULL, QW_TOEPLITZ_AUTO };
	static const size_t sizes[][2] = { { 1000, 321 }, { 70000, 35000 } };

	(void)st;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct qw_key_block *ba, *bb;
		enum qw_stage_result ra, rb;
		struct qw_bitvec *orig;

		make_pair(sizes[i][0], 0, &ba, &bb);
		orig = qw_bitvec_dup(ba->key);
		assert_non_null(orig);
		ba->state = bb->state = QW_BLOCK_VERIFIED;
		ba->secret_bits = bb->secret_bits = sizes[i][1];
		run_pair(&qw_stage_pa, &pa, &pb, ba, bb, &ra, &rb);
		assert_int_equal(ra, QW_STAGE_FORWARD);
		assert_int_equal(rb, QW_STAGE_FORWARD);
		assert_int_equal(ba->state, QW_BLOCK_AMPLIFIED);
		assert_int_equal(bb->state, QW_BLOCK_AMPLIFIED);
		assert_int_equal(ba->key->nbits, sizes[i][1]);
		assert_true(qw_bitvec_equal(ba->key, bb->key));
		/* Roughly balanced output (not the zero vector or a prefix). */
		{
			size_t ones = qw_bitvec_popcount(ba->key), m = sizes[i][1];

			assert_true(ones > m / 2 - m / 8 && ones < m / 2 + m / 8);
		}
		qw_bitvec_free(orig);
		qw_block_free(ba);
		qw_block_free(bb);
	}
}

static void test_pa_zero_length_drops(void **st)
{
	void *state = NULL;
	struct qw_key_block *ba, *bb;
	struct qw_distill_chan dead = { NULL, NULL, NULL }; /* never used */

	(void)st;
	make_pair(128, 0, &ba, &bb);
	ba->state = QW_BLOCK_VERIFIED;
	assert_int_equal(qw_stage_pa.init(&state, NULL), 0);
	ba->secret_bits = 0;
	assert_int_equal(qw_stage_pa.process(state, ba, &dead), QW_STAGE_DROP);
	assert_true(strlen(ba->drop_reason) > 0);
	ba->secret_bits = 129;
	assert_int_equal(qw_stage_pa.process(state, ba, &dead), QW_STAGE_ERROR);
	ba->state = QW_BLOCK_CORRECTED;
	ba->secret_bits = 10;
	assert_int_equal(qw_stage_pa.process(state, ba, &dead), QW_STAGE_ERROR);
	qw_stage_pa.free(state);
	qw_block_free(ba);
	qw_block_free(bb);
}

static int setup(void **st)
{
	(void)st;
	rng = qw_rng_new_seeded(0x7665726966790001u);
	return rng ? 0 : -1;
}

static int teardown(void **st)
{
	(void)st;
	qw_rng_free(rng);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_verify_match_and_mismatch),
		cmocka_unit_test(test_verify_wrong_state_is_error),
		cmocka_unit_test(test_tag_bits_for_eps),
		cmocka_unit_test(test_pa_stage),
		cmocka_unit_test(test_pa_zero_length_drops),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
