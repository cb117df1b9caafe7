/* Cascade: agreement of Alice/Bob key pairs at set error rates for every
 * variant, exact leak accounting on both sides, the message format (round
 * trips, truncation, corruption) and the distillation stage over a
 * channel. Error patterns have an exact number of errors at random
 * positions (deterministic qw_rng_new_seeded). No timing assertions. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/cascade.h"
#include "qwave/distill.h"
#include "qwave/rng.h"

static const enum qw_cascade_variant all_variants[] = {
	QW_CASCADE_ORIGINAL, QW_CASCADE_YAN, QW_CASCADE_OPTION8, QW_CASCADE_OPTIMIZED,
	QW_CASCADE_FAST,
};
#define NVARIANTS (sizeof(all_variants) / sizeof(all_variants[0]))

static double h2(double q)
{
	return q <= 0 || q >= 1 ? 0 : -q * log2(q) - (1 - q) * log2(1 - q);
}

/* Random Alice key of n bits and Bob = Alice xor exactly nerr errors. */
static void make_pair(struct qw_rng *rng, size_t n, size_t nerr, struct qw_bitvec **a,
		      struct qw_bitvec **b)
{
	*a = qw_bitvec_new(n);
	*b = qw_bitvec_new(n);
	assert_non_null(*a);
	assert_non_null(*b);
	assert_int_equal(qw_rng_bytes(rng, (*a)->w, (*a)->nwords * sizeof(uint64_t)), 0);
	if (n & 63)
		(*a)->w[(*a)->nwords - 1] &= ((uint64_t)1 << (n & 63)) - 1;
	memcpy((*b)->w, (*a)->w, (*a)->nwords * sizeof(uint64_t));
	for (size_t k = 0; k < nerr;) {
		size_t pos = (size_t)qw_rng_below(rng, n);

		if (qw_bitvec_get(*a, pos) == qw_bitvec_get(*b, pos)) {
			qw_bitvec_flip(*b, pos);
			k++;
		}
	}
	assert_int_equal(qw_bitvec_hamming(*a, *b), nerr);
}

static void test_schedules(void **state)
{
	struct qw_cascade_params p;
	uint32_t k[QW_CASCADE_MAX_PASSES];
	unsigned np;

	(void)state;
	qw_cascade_params_init(&p, QW_CASCADE_ORIGINAL);
	assert_int_equal(qw_cascade_schedule(&p, 100000, 0.01, k, &np), 0);
	assert_int_equal(np, 4);
	assert_int_equal(k[0], 73); /* ceil(0.73 / 0.01) */
	assert_int_equal(k[1], 146);
	assert_int_equal(k[3], 584);

	qw_cascade_params_init(&p, QW_CASCADE_YAN);
	assert_int_equal(qw_cascade_schedule(&p, 100000, 0.02, k, &np), 0);
	assert_int_equal(np, 10);
	assert_int_equal(k[0], 40);  /* ceil(0.8 / 0.02) */
	assert_int_equal(k[1], 200); /* 5 k1 */
	assert_int_equal(k[2], 50000);
	assert_int_equal(k[9], 50000);

	qw_cascade_params_init(&p, QW_CASCADE_OPTION8);
	assert_int_equal(qw_cascade_schedule(&p, 100000, 0.01, k, &np), 0);
	assert_int_equal(np, 14);
	assert_int_equal(k[0], 128);  /* 2^ceil(log2(100) - 0.5) */
	assert_int_equal(k[1], 1024); /* 2^ceil((6.14 + 12) / 2) */
	assert_int_equal(k[2], 4096);
	assert_int_equal(k[13], 50000);
	assert_int_equal(qw_cascade_schedule(&p, 100000, 0.05, k, &np), 0);
	assert_int_equal(k[0], 16);
	assert_int_equal(k[1], 256);

	qw_cascade_params_init(&p, QW_CASCADE_OPTIMIZED);
	assert_int_equal(p.policy, QW_CASCADE_FEWEST_ROUNDS);
	assert_int_equal(p.biconf_streak, 24);
	assert_int_equal(qw_cascade_schedule(&p, 100000, 0.02, k, &np), 0);
	assert_int_equal(np, QW_CASCADE_MAX_PASSES);
	assert_int_equal(k[0], 32); /* 2^floor(log2(50)) */
	assert_int_equal(k[1], 512);
	assert_int_equal(k[2], 50000);
	assert_int_equal(k[QW_CASCADE_MAX_PASSES - 1], 50000);

	qw_cascade_params_init(&p, QW_CASCADE_FAST);
	assert_int_equal(p.policy, QW_CASCADE_FEWEST_ROUNDS);
	assert_int_equal(p.biconf_streak, 8);
	assert_int_equal(qw_cascade_schedule(&p, 1000000, 0.02, k, &np), 0);
	assert_int_equal(np, QW_CASCADE_MAX_PASSES);
	assert_int_equal(k[0], 32); /* 2^round(log2(0.73 / 0.02)) = 2^round(5.19) */
	assert_int_equal(k[1], 64);
	assert_int_equal(k[2], 256);
	assert_int_equal(k[3], 500000); /* then BICONF halves */
	assert_int_equal(k[QW_CASCADE_MAX_PASSES - 1], 500000);
	assert_int_equal(qw_cascade_schedule(&p, 1000000, 0.05, k, &np), 0);
	assert_int_equal(k[0], 16); /* 2^round(3.87): rounded up */
	assert_int_equal(k[2], 128);
	assert_int_equal(qw_cascade_schedule(&p, 1000000, 0.01, k, &np), 0);
	assert_int_equal(k[0], 64); /* 2^round(6.19) */
	assert_int_equal(qw_cascade_schedule(&p, 1000000, 0.49, k, &np), 0);
	assert_int_equal(k[0], 2);

	qw_cascade_params_init(&p, QW_CASCADE_OPTIMIZED);
	/* Overrides, clamping and bad lengths. */
	p.npasses = 5;
	p.block_size[0] = 1000000;
	assert_int_equal(qw_cascade_schedule(&p, 4096, 0.0, k, &np), 0);
	assert_int_equal(np, 5);
	assert_int_equal(k[0], 4096);
	assert_int_equal(qw_cascade_schedule(&p, 0, 0.02, k, &np), QW_EINVAL);
	/* Too many passes with permutations. */
	for (unsigned i = 0; i < QW_CASCADE_MAX_BLOCK_PASSES + 1; i++)
		p.block_size[i] = 64;
	p.npasses = QW_CASCADE_MAX_BLOCK_PASSES + 1;
	assert_int_equal(qw_cascade_schedule(&p, 100000, 0.02, k, &np), QW_EINVAL);

	{
		enum qw_cascade_variant v;

		for (unsigned i = 0; i < NVARIANTS; i++) {
			assert_int_equal(
				qw_cascade_variant_parse(qw_cascade_variant_name(all_variants[i]), &v), 0);
			assert_int_equal(v, all_variants[i]);
		}
		assert_int_equal(qw_cascade_variant_parse("bogus", &v), QW_EINVAL);
	}
}

/* Thousands of small frames per variant across QBER 0.5-8%. For every
 * frame: Bob flips only true errors (corrected = initial - residual), both
 * sides count the same leak. The optimized variant must leave no frame
 * wrong at QBER <= 5%; the published variants' natural residual is
 * bounded loosely and printed. */
static void test_small_frames(void **state)
{
	static const double qbers[] = { 0.005, 0.01, 0.02, 0.05, 0.08 };
	const size_t n = 4096;
	const unsigned runs = 250;
	struct qw_rng *rng = qw_rng_new_seeded(42);

	(void)state;
	assert_non_null(rng);
	for (unsigned vi = 0; vi < NVARIANTS; vi++) {
		for (unsigned qi = 0; qi < sizeof(qbers) / sizeof(qbers[0]); qi++) {
			struct qw_cascade_params p;
			size_t nerr = (size_t)llround(qbers[qi] * (double)n);
			unsigned fails = 0;
			double eff = 0;

			qw_cascade_params_init(&p, all_variants[vi]);
			for (unsigned r = 0; r < runs; r++) {
				struct qw_bitvec *a, *b;
				struct qw_cascade_stats st;
				size_t resid;

				make_pair(rng, n, nerr, &a, &b);
				assert_int_equal(qw_cascade_run_local(&p, a, b, qbers[qi],
								      qw_rng_u64(rng), &st),
						 0);
				resid = qw_bitvec_hamming(a, b);
				assert_int_equal(st.corrected_bits + resid, nerr);
				assert_true(st.round_trips > 0);
				eff += (double)st.leaked_bits / ((double)n * h2((double)nerr / (double)n));
				fails += resid != 0;
				qw_bitvec_free(a);
				qw_bitvec_free(b);
			}
			print_message("cascade %-9s qber %.3f n %zu: efficiency %.3f, FER %u/%u\n",
				      qw_cascade_variant_name(all_variants[vi]), qbers[qi], n,
				      eff / runs, fails, runs);
			if (all_variants[vi] == QW_CASCADE_OPTIMIZED && qbers[qi] <= 0.05)
				assert_int_equal(fails, 0);
			else
				assert_true(fails <= runs / 20);
		}
	}
	qw_rng_free(rng);
}

/* Full-size frames: the optimized variant at n = 1e5 agrees and stays
 * close to the Shannon limit (statistical bound well above the measured
 * ~1.04, docs/cascade.md). */
static void test_large_frames(void **state)
{
	static const double qbers[] = { 0.01, 0.02, 0.05 };
	const size_t n = 100000;
	struct qw_rng *rng = qw_rng_new_seeded(7);
	struct qw_cascade_params p;

	(void)state;
	assert_non_null(rng);
	qw_cascade_params_init(&p, QW_CASCADE_OPTIMIZED);
	for (unsigned qi = 0; qi < 3; qi++) {
		for (unsigned r = 0; r < 4; r++) {
			size_t nerr = (size_t)llround(qbers[qi] * (double)n);
			struct qw_bitvec *a, *b;
			struct qw_cascade_stats st;
			double eff;

			make_pair(rng, n, nerr, &a, &b);
			assert_int_equal(qw_cascade_run_local(&p, a, b, qbers[qi], 1000 + r, &st), 0);
			assert_true(qw_bitvec_equal(a, b));
			assert_int_equal(st.corrected_bits, nerr);
			eff = (double)st.leaked_bits / ((double)n * h2(qbers[qi]));
			assert_true(eff > 1.0 && eff < 1.10);
			qw_bitvec_free(a);
			qw_bitvec_free(b);
		}
	}
	qw_rng_free(rng);
}

/* The throughput schedule at n = 1e5: keys agree, and it leaks less than
 * the original schedule it derives from (measured f 1.09-1.11 at 1-5%
 * against the original's 1.14-1.18; bound 1.14), in fewer round trips
 * than the least-leak variants (at most 120 here; ~45-70 measured). */
static void test_fast_frames(void **state)
{
	static const double qbers[] = { 0.01, 0.02, 0.05 };
	const size_t n = 100000;
	struct qw_rng *rng = qw_rng_new_seeded(11);
	struct qw_cascade_params p;

	(void)state;
	assert_non_null(rng);
	qw_cascade_params_init(&p, QW_CASCADE_FAST);
	for (unsigned qi = 0; qi < 3; qi++) {
		for (unsigned r = 0; r < 4; r++) {
			size_t nerr = (size_t)llround(qbers[qi] * (double)n);
			struct qw_bitvec *a, *b;
			struct qw_cascade_stats st;
			double eff;

			make_pair(rng, n, nerr, &a, &b);
			assert_int_equal(qw_cascade_run_local(&p, a, b, qbers[qi], 2000 + r, &st), 0);
			assert_true(qw_bitvec_equal(a, b));
			assert_int_equal(st.corrected_bits, nerr);
			eff = (double)st.leaked_bits / ((double)n * h2(qbers[qi]));
			print_message("cascade fast qber %.2f n %zu: efficiency %.4f, %u round trips\n",
				      qbers[qi], n, eff, st.round_trips);
			assert_true(eff > 1.0 && eff < 1.14);
			assert_true(st.round_trips <= 120);
			qw_bitvec_free(a);
			qw_bitvec_free(b);
		}
	}
	qw_rng_free(rng);
}

static void test_zero_errors(void **state)
{
	struct qw_rng *rng = qw_rng_new_seeded(3);

	(void)state;
	for (unsigned vi = 0; vi < NVARIANTS; vi++) {
		struct qw_cascade_params p;
		struct qw_bitvec *a, *b;
		struct qw_cascade_stats st;

		qw_cascade_params_init(&p, all_variants[vi]);
		make_pair(rng, 10000, 0, &a, &b);
		/* Estimates of 0 and of 3% both work on an error-free key. */
		assert_int_equal(qw_cascade_run_local(&p, a, b, 0.0, 9, &st), 0);
		assert_true(qw_bitvec_equal(a, b));
		assert_int_equal(st.corrected_bits, 0);
		assert_true(st.leaked_bits > 0);
		assert_int_equal(qw_cascade_run_local(&p, a, b, 0.03, 9, &st), 0);
		assert_true(qw_bitvec_equal(a, b));
		assert_int_equal(st.corrected_bits, 0);
		qw_bitvec_free(a);
		qw_bitvec_free(b);
	}
	qw_rng_free(rng);
}

/* Odd lengths and tiny keys, including blocks that do not divide n. */
static void test_odd_sizes(void **state)
{
	static const size_t sizes[] = { 1, 2, 3, 7, 63, 64, 65, 100, 1000, 4097 };
	struct qw_rng *rng = qw_rng_new_seeded(11);

	(void)state;
	for (unsigned si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		for (unsigned vi = 0; vi < NVARIANTS; vi++) {
			for (unsigned r = 0; r < 20; r++) {
				struct qw_cascade_params p;
				size_t n = sizes[si], nerr = (size_t)qw_rng_below(rng, n / 10 + 2);
				struct qw_bitvec *a, *b;
				struct qw_cascade_stats st;

				if (nerr > n)
					nerr = n;
				qw_cascade_params_init(&p, all_variants[vi]);
				make_pair(rng, n, nerr, &a, &b);
				assert_int_equal(qw_cascade_run_local(&p, a, b, 0.05, r, &st), 0);
				assert_int_equal(st.corrected_bits + qw_bitvec_hamming(a, b), nerr);
				qw_bitvec_free(a);
				qw_bitvec_free(b);
			}
		}
	}
	qw_rng_free(rng);
}

/* Decode the count of an ANSWER message (type byte, LEB128 count). */
static uint64_t answer_count(const uint8_t *m, size_t len)
{
	uint64_t v = 0;

	assert_true(len >= 2);
	assert_int_equal(m[0], 0x81);
	for (size_t i = 1, sh = 0; i < len; i++, sh += 7) {
		v |= (uint64_t)(m[i] & 0x7f) << sh;
		if (!(m[i] & 0x80))
			break;
	}
	return v;
}

/* Drive both parties by hand: every message goes through the public
 * serialisation; the leak counted by each side equals the number of
 * parities in Alice's answers, and each answer carries exactly
 * ceil(count / 8) bitmap bytes. */
static void test_leak_equals_answers(void **state)
{
	struct qw_rng *rng = qw_rng_new_seeded(5);

	(void)state;
	for (unsigned vi = 0; vi < NVARIANTS; vi++) {
		for (int pol = 0; pol < 2; pol++) {
			struct qw_cascade_params p;
			struct qw_bitvec *a, *b;
			struct qw_cascade_bob *bob;
			struct qw_cascade_alice *alice;
			struct qw_cascade_stats sb, sa;
			uint64_t answered = 0, rts = 0;
			int rb, first = 1;

			qw_cascade_params_init(&p, all_variants[vi]);
			p.policy = pol ? QW_CASCADE_FEWEST_ROUNDS : QW_CASCADE_LEAST_LEAK;
			make_pair(rng, 20000, 600, &a, &b);
			bob = qw_cascade_bob_new(&p, b, 0.03, 77);
			alice = qw_cascade_alice_new(a);
			assert_non_null(bob);
			assert_non_null(alice);
			for (;;) {
				const uint8_t *m, *ans;
				size_t len, alen;
				uint64_t cnt;

				rb = qw_cascade_bob_next(bob, &m, &len);
				assert_true(rb == 0 || rb == 1);
				/* HELLO first, then QUERY, DONE last. */
				assert_int_equal(m[0], rb == 1 ? 0x03 : first ? 0x01 : 0x02);
				first = 0;
				if (rb == 1) {
					assert_int_equal(qw_cascade_alice_answer(alice, m, len, &ans, &alen), 1);
					break;
				}
				/* An answer is due: asking again is a state error. */
				assert_int_equal(qw_cascade_bob_next(bob, &m, &len), QW_ESTATE);
				assert_int_equal(qw_cascade_alice_answer(alice, m, len, &ans, &alen), 0);
				cnt = answer_count(ans, alen);
				assert_true(alen - 1 >= (cnt + 7) / 8);
				answered += cnt;
				rts++;
				assert_int_equal(qw_cascade_bob_consume(bob, ans, alen), 0);
				assert_int_equal(qw_cascade_bob_consume(bob, ans, alen), QW_ESTATE);
			}
			qw_cascade_bob_stats(bob, &sb);
			qw_cascade_alice_stats(alice, &sa);
			assert_int_equal(sb.leaked_bits, answered);
			assert_int_equal(sa.leaked_bits, answered);
			assert_int_equal(sb.round_trips, rts);
			assert_int_equal(sa.round_trips, rts);
			assert_int_equal(sa.corrected_bits, sb.corrected_bits);
			assert_int_equal(sb.bytes_to_alice, sa.bytes_to_alice);
			assert_int_equal(sb.bytes_to_bob, sa.bytes_to_bob);
			assert_true(qw_bitvec_equal(a, b));
			/* Bob keeps answering DONE; Alice refuses anything now. */
			{
				const uint8_t *m, *ans;
				size_t len, alen;

				assert_int_equal(qw_cascade_bob_next(bob, &m, &len), 1);
				assert_int_equal(qw_cascade_alice_answer(alice, m, len, &ans, &alen),
						 QW_ESTATE);
			}
			qw_cascade_bob_free(bob);
			qw_cascade_alice_free(alice);
			qw_bitvec_free(a);
			qw_bitvec_free(b);
		}
	}
	qw_rng_free(rng);
}

/* Record every message of one reconciliation. */
struct transcript {
	uint8_t *msg[4096], *ans[4096];
	size_t mlen[4096], alen[4096];
	size_t n;
};

static void record(struct transcript *t, const struct qw_bitvec *a, struct qw_bitvec *b)
{
	struct qw_cascade_params p;
	struct qw_cascade_bob *bob;
	struct qw_cascade_alice *alice;

	qw_cascade_params_init(&p, QW_CASCADE_OPTIMIZED);
	bob = qw_cascade_bob_new(&p, b, 0.04, 1234);
	alice = qw_cascade_alice_new(a);
	assert_non_null(bob);
	assert_non_null(alice);
	memset(t, 0, sizeof(*t));
	for (;;) {
		const uint8_t *m, *ans;
		size_t len, alen;
		int rb = qw_cascade_bob_next(bob, &m, &len), ra;

		assert_true(t->n < 4096);
		t->msg[t->n] = malloc(len);
		memcpy(t->msg[t->n], m, len);
		t->mlen[t->n] = len;
		ra = qw_cascade_alice_answer(alice, m, len, &ans, &alen);
		if (rb == 1) {
			assert_int_equal(ra, 1);
			t->n++;
			break;
		}
		assert_int_equal(ra, 0);
		t->ans[t->n] = malloc(alen);
		memcpy(t->ans[t->n], ans, alen);
		t->alen[t->n] = alen;
		t->n++;
		assert_int_equal(qw_cascade_bob_consume(bob, ans, alen), 0);
	}
	qw_cascade_bob_free(bob);
	qw_cascade_alice_free(alice);
}

static void transcript_free(struct transcript *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->msg[i]);
		free(t->ans[i]);
	}
}

/* Every strict prefix of every message is rejected with QW_EPARSE and
 * leaves the receiver as it was: replaying the transcript with a
 * truncated copy before each real message reproduces the same answers. */
static void test_truncated_messages(void **state)
{
	struct qw_rng *rng = qw_rng_new_seeded(17);
	struct qw_bitvec *a, *b, *b2;
	struct transcript *t = malloc(sizeof(*t));
	struct qw_cascade_params p;
	struct qw_cascade_bob *bob;
	struct qw_cascade_alice *alice;

	(void)state;
	assert_non_null(t);
	make_pair(rng, 3000, 120, &a, &b);
	b2 = qw_bitvec_dup(b);
	record(t, a, b);
	assert_true(qw_bitvec_equal(a, b));

	alice = qw_cascade_alice_new(a);
	qw_cascade_params_init(&p, QW_CASCADE_OPTIMIZED);
	bob = qw_cascade_bob_new(&p, b2, 0.04, 1234);
	for (size_t i = 0; i < t->n; i++) {
		const uint8_t *ans, *m;
		size_t alen, len;

		for (size_t cut = 0; cut < t->mlen[i]; cut++)
			assert_int_equal(qw_cascade_alice_answer(alice, t->msg[i], cut, &ans, &alen),
					 QW_EPARSE);
		/* Bob produces the same message again (deterministic). */
		assert_true(qw_cascade_bob_next(bob, &m, &len) >= 0);
		assert_int_equal(len, t->mlen[i]);
		assert_memory_equal(m, t->msg[i], len);
		if (i + 1 == t->n) {
			assert_int_equal(qw_cascade_alice_answer(alice, t->msg[i], t->mlen[i], &ans, &alen), 1);
			break;
		}
		assert_int_equal(qw_cascade_alice_answer(alice, t->msg[i], t->mlen[i], &ans, &alen), 0);
		assert_int_equal(alen, t->alen[i]);
		assert_memory_equal(ans, t->ans[i], alen);
		for (size_t cut = 0; cut < alen; cut++)
			assert_int_equal(qw_cascade_bob_consume(bob, ans, cut), QW_EPARSE);
		/* One byte too many, or a wrong type, is refused as well. */
		{
			uint8_t *x = malloc(alen + 1);

			memcpy(x, ans, alen);
			x[alen] = 0;
			assert_int_equal(qw_cascade_bob_consume(bob, x, alen + 1), QW_EPARSE);
			x[0] = 0x01;
			assert_int_equal(qw_cascade_bob_consume(bob, x, alen), QW_EPARSE);
			free(x);
		}
		assert_int_equal(qw_cascade_bob_consume(bob, t->ans[i], t->alen[i]), 0);
	}
	assert_true(qw_bitvec_equal(a, b2));
	qw_cascade_bob_free(bob);
	qw_cascade_alice_free(alice);
	transcript_free(t);
	free(t);
	qw_bitvec_free(a);
	qw_bitvec_free(b);
	qw_bitvec_free(b2);
	qw_rng_free(rng);
}

/* Corrupted and hostile messages never crash either side (the sanitizer
 * build checks memory safety): Alice answers or refuses; layout headers
 * that do not fit her key are QW_EPARSE. */
static void test_corrupted_messages(void **state)
{
	struct qw_rng *rng = qw_rng_new_seeded(23);
	struct qw_bitvec *a, *b;
	struct transcript *t = malloc(sizeof(*t));

	(void)state;
	assert_non_null(t);
	make_pair(rng, 2000, 80, &a, &b);
	record(t, a, b);
	for (unsigned trial = 0; trial < 300; trial++) {
		struct qw_cascade_alice *alice = qw_cascade_alice_new(a);
		size_t upto = (size_t)qw_rng_below(rng, t->n);

		for (size_t i = 0; i <= upto; i++) {
			const uint8_t *ans;
			size_t alen, len = t->mlen[i];
			uint8_t *m = malloc(len + 8);
			int ra;

			memcpy(m, t->msg[i], len);
			if (i == upto) {
				for (unsigned k = 0; k < 1 + qw_rng_below(rng, 4); k++)
					m[qw_rng_below(rng, len)] ^= (uint8_t)(1 + qw_rng_below(rng, 255));
			}
			ra = qw_cascade_alice_answer(alice, m, len, &ans, &alen);
			assert_true(ra == 0 || ra == 1 || ra == QW_EPARSE || ra == QW_EPROTO ||
				    ra == QW_ESTATE);
			free(m);
			if (ra < 0)
				break;
		}
		qw_cascade_alice_free(alice);
	}
	/* Hand-made headers (n = 2000 = Alice's length unless said): wrong
	 * version, wrong length, zero or too many passes, a block size of
	 * zero, nine passes needing permutations, a query before HELLO, a
	 * DONE with trailing bytes, an unknown type. */
	{
		static const uint8_t bad[][24] = {
			{ 0x01, 0x02 },
			{ 0x01, 0x01, 0x10 },
			{ 0x01, 0x01, 0xd0, 0x0f, 1, 2, 3, 4, 5, 6, 7, 8, 0x00, 0x00 },
			{ 0x01, 0x01, 0xd0, 0x0f, 1, 2, 3, 4, 5, 6, 7, 8, 0x41, 0x01 },
			{ 0x01, 0x01, 0xd0, 0x0f, 1, 2, 3, 4, 5, 6, 7, 8, 0x01, 0x00, 0x00 },
			{ 0x01, 0x01, 0xd0, 0x0f, 1, 2, 3, 4, 5, 6, 7, 8, 0x09, 4, 4, 4, 4, 4, 4, 4, 4, 4 },
			{ 0x02, 0x00 },
			{ 0x03 },
			{ 0x7f, 0x00 },
		};
		struct qw_cascade_alice *alice = qw_cascade_alice_new(a);
		const uint8_t *ans;
		size_t alen;

		for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			assert_int_equal(qw_cascade_alice_answer(alice, bad[i], sizeof(bad[i]), &ans, &alen),
					 QW_EPARSE);
		assert_int_equal(qw_cascade_alice_answer(alice, NULL, 0, &ans, &alen), QW_EPARSE);
		qw_cascade_alice_free(alice);
	}
	/* A DONE whose leak count is not Alice's is a protocol violation. */
	{
		struct qw_cascade_alice *alice = qw_cascade_alice_new(a);
		static const uint8_t done[] = { 0x03, 0x05, 0x00, 0x00 };
		const uint8_t *ans;
		size_t alen;

		assert_int_equal(qw_cascade_alice_answer(alice, done, sizeof(done), &ans, &alen),
				 QW_EPROTO);
		qw_cascade_alice_free(alice);
	}
	/* Alice with a key of another length refuses Bob's HELLO. */
	{
		struct qw_bitvec *c = qw_bitvec_new(1999);
		struct qw_cascade_alice *alice = qw_cascade_alice_new(c);
		const uint8_t *ans;
		size_t alen;

		assert_int_equal(qw_cascade_alice_answer(alice, t->msg[0], t->mlen[0], &ans, &alen),
				 QW_EPARSE);
		qw_cascade_alice_free(alice);
		qw_bitvec_free(c);
	}
	transcript_free(t);
	free(t);
	qw_bitvec_free(a);
	qw_bitvec_free(b);
	qw_rng_free(rng);
}

/* ---- the stage over an in-process channel --------------------------------- */

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
	unsigned slot;

	pthread_mutex_lock(&q->mu);
	while (q->count == 8)
		pthread_cond_wait(&q->cv, &q->mu);
	slot = (q->head + q->count) % 8;
	q->m[slot] = malloc(len ? len : 1);
	memcpy(q->m[slot], msg, len);
	q->len[slot] = len;
	q->type[slot] = type;
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
	const struct qw_stage *st;
	void *state;
	struct qw_key_block *blk;
	struct qw_distill_chan chan;
	enum qw_stage_result res;
};

static void *party_run(void *arg)
{
	struct party *pt = arg;

	pt->res = pt->st->process(pt->state, pt->blk, &pt->chan);
	return NULL;
}

static void test_stage(void **state)
{
	struct qw_rng *rng = qw_rng_new_seeded(31);
	struct qw_bitvec *a, *b;
	struct q qa, qb;
	struct duplex da = { &qa, &qb }, db = { &qb, &qa };
	struct party pa, pb;
	pthread_t ta;
	struct qw_cascade_params params;

	(void)state;
	memset(&qa, 0, sizeof(qa));
	memset(&qb, 0, sizeof(qb));
	pthread_mutex_init(&qa.mu, NULL);
	pthread_cond_init(&qa.cv, NULL);
	pthread_mutex_init(&qb.mu, NULL);
	pthread_cond_init(&qb.cv, NULL);
	make_pair(rng, 50000, 1500, &a, &b);
	qw_cascade_params_init(&params, QW_CASCADE_OPTIMIZED);

	memset(&pa, 0, sizeof(pa));
	memset(&pb, 0, sizeof(pb));
	pa.st = pb.st = &qw_cascade_stage;
	assert_string_equal(qw_cascade_stage.name, "cascade");
	assert_int_equal(qw_cascade_stage.init(&pa.state, &params), 0);
	assert_int_equal(qw_cascade_stage.init(&pb.state, NULL), 0);
	pa.blk = qw_block_new(1, QW_ROLE_ALICE, a);
	pb.blk = qw_block_new(1, QW_ROLE_BOB, b);
	pa.blk->state = QW_BLOCK_SIFTED;
	pb.blk->state = QW_BLOCK_SIFTED;
	pa.blk->qber_estimate = pb.blk->qber_estimate = 0.03;
	pa.blk->disclosed_bits = pb.blk->disclosed_bits = 10; /* earlier disclosure */
	pa.chan = (struct qw_distill_chan){ &da, q_send, q_recv };
	pb.chan = (struct qw_distill_chan){ &db, q_send, q_recv };
	assert_int_equal(pthread_create(&ta, NULL, party_run, &pa), 0);
	party_run(&pb);
	assert_int_equal(pthread_join(ta, NULL), 0);

	assert_int_equal(pa.res, QW_STAGE_FORWARD);
	assert_int_equal(pb.res, QW_STAGE_FORWARD);
	assert_true(qw_bitvec_equal(pa.blk->key, pb.blk->key));
	assert_int_equal(pa.blk->state, QW_BLOCK_CORRECTED);
	assert_int_equal(pb.blk->state, QW_BLOCK_CORRECTED);
	assert_true(pb.blk->ec_parity_bits > 0);
	assert_int_equal(pa.blk->ec_parity_bits, pb.blk->ec_parity_bits);
	assert_int_equal(pb.blk->disclosed_bits, 10 + pb.blk->ec_parity_bits);
	assert_int_equal(pa.blk->disclosed_bits, pb.blk->disclosed_bits);
	assert_int_equal(pa.blk->ec_round_trips, pb.blk->ec_round_trips);
	assert_true(pb.blk->ec_round_trips > 0);
	assert_true(fabs(pb.blk->qber_observed - 0.03) < 1e-12);
	assert_true(fabs(pa.blk->qber_observed - 0.03) < 1e-12);

	/* A block in the wrong state is refused without talking. */
	pb.blk->state = QW_BLOCK_VERIFIED;
	assert_int_equal(qw_cascade_stage.process(pb.state, pb.blk, &pb.chan), QW_STAGE_ERROR);

	qw_cascade_stage.free(pa.state);
	qw_cascade_stage.free(pb.state);
	qw_block_free(pa.blk);
	qw_block_free(pb.blk);
	pthread_mutex_destroy(&qa.mu);
	pthread_cond_destroy(&qa.cv);
	pthread_mutex_destroy(&qb.mu);
	pthread_cond_destroy(&qb.cv);
	qw_rng_free(rng);
}

static void test_misc(void **state)
{
	struct qw_bitvec *a = qw_bitvec_new(100), *b = qw_bitvec_new(101), *e = qw_bitvec_new(0);
	struct qw_cascade_params p;

	(void)state;
	qw_cascade_params_init(&p, QW_CASCADE_OPTIMIZED);
	assert_int_equal(qw_cascade_run_local(&p, a, b, 0.01, 1, NULL), QW_EINVAL);
	assert_null(qw_cascade_bob_new(&p, e, 0.01, 1));
	assert_null(qw_cascade_alice_new(e));
	qw_cascade_bob_free(NULL);
	qw_cascade_alice_free(NULL);
	qw_bitvec_free(a);
	qw_bitvec_free(b);
	qw_bitvec_free(e);
}

static int teardown_cache(void **state)
{
	(void)state;
	qw_cascade_cache_clear();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_schedules),
		cmocka_unit_test(test_small_frames),
		cmocka_unit_test(test_large_frames),
		cmocka_unit_test(test_fast_frames),
		cmocka_unit_test(test_zero_errors),
		cmocka_unit_test(test_odd_sizes),
		cmocka_unit_test(test_leak_equals_answers),
		cmocka_unit_test(test_truncated_messages),
		cmocka_unit_test(test_corrupted_messages),
		cmocka_unit_test(test_stage),
		cmocka_unit_test(test_misc),
	};

	return cmocka_run_group_tests(tests, NULL, teardown_cache);
}
