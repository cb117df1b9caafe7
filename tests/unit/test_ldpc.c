#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>
#include <pthread.h>

#include "distill/ldpc_internal.h"
#include "qwave/chan_local.h"
#include "qwave/ldpc.h"
#include "qwave/rng.h"

#define SEED 0x716b64ull

static struct qw_bitvec *random_bits(struct qw_rng *r, size_t n)
{
	struct qw_bitvec *v = qw_bitvec_new(n);

	assert_non_null(v);
	assert_int_equal(qw_rng_bytes(r, v->w, v->nwords * 8), 0);
	if (n & 63)
		v->w[v->nwords - 1] &= ((uint64_t)1 << (n & 63)) - 1;
	return v;
}

/* Bob's copy: exactly round(q n) positions flipped. */
static struct qw_bitvec *noisy_copy(struct qw_rng *r, const struct qw_bitvec *a, double q)
{
	struct qw_bitvec *b = qw_bitvec_dup(a);
	size_t nerr = (size_t)llround(q * (double)a->nbits);

	assert_non_null(b);
	for (size_t k = 0; k < nerr;) {
		size_t pos = (size_t)qw_rng_below(r, a->nbits);

		if (qw_bitvec_get(b, pos) == qw_bitvec_get(a, pos)) {
			qw_bitvec_flip(b, pos);
			k++;
		}
	}
	return b;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Two builds from one seed are identical; another seed gives other shifts. */
static void test_construction_deterministic(void **unused)
{
	(void)unused;
	for (unsigned i = 0; i < QW_LDPC_NRATES; i += 4) {
		struct qw_ldpc_code *a = ldpc_code_build(i, 64, 42), *b = ldpc_code_build(i, 64, 42);
		struct qw_ldpc_code *c = ldpc_code_build(i, 64, 43);

		assert_non_null(a);
		assert_non_null(b);
		assert_non_null(c);
		assert_int_equal(a->nent, b->nent);
		assert_memory_equal(a->ent_col, b->ent_col, a->nent * sizeof(*a->ent_col));
		assert_memory_equal(a->ent_shift, b->ent_shift, a->nent * sizeof(*a->ent_shift));
		assert_memory_equal(a->row_start, b->row_start, (a->mb + 1) * sizeof(uint32_t));
		assert_int_equal(a->p_max, b->p_max);
		assert_memory_equal(a->punct, b->punct, a->p_max * sizeof(uint32_t));
		assert_memory_equal(a->shorten, b->shorten, (a->n - a->p_max) * sizeof(uint32_t));
		assert_true(c->nent != a->nent ||
			    memcmp(c->ent_shift, a->ent_shift, a->nent * sizeof(*a->ent_shift)) ||
			    memcmp(c->ent_col, a->ent_col, a->nent * sizeof(*a->ent_col)));
		/* the design: mb = 256 (1 - R) rows of Z checks */
		assert_int_equal(a->n, 256 * 64);
		assert_int_equal(a->mb, (unsigned)lround(256 * (1 - qw_ldpc_mother_rate(i))));
		ldpc_code_free(a);
		ldpc_code_free(b);
		ldpc_code_free(c);
	}
	assert_null(qw_ldpc_code_get(QW_LDPC_NRATES, 64, SEED));
	assert_null(qw_ldpc_code_get(0, 96, SEED));
	assert_ptr_equal(qw_ldpc_code_get(3, 64, SEED), qw_ldpc_code_get(3, 64, SEED));
}

/* No 4-cycles, checked on the lifted graph independently of the
 * construction's own count: two variables may share at most one check. */
static void test_no_4cycles(void **unused)
{
	(void)unused;
	for (unsigned i = 0; i < QW_LDPC_NRATES; i++) {
		const struct qw_ldpc_code *c = qw_ldpc_code_get(i, 64, SEED);

		assert_non_null(c);
		assert_int_equal(qw_ldpc_code_4cycles(c), 0);
	}
	for (unsigned i = 0; i < QW_LDPC_NRATES; i += 4) {
		const struct qw_ldpc_code *c = qw_ldpc_code_get(i, 64, SEED);
		size_t e = qw_ldpc_code_edges(c, NULL, NULL, 0), np = 0, a = 0;
		uint32_t *chk = malloc(e * 4), *var = malloc(e * 4);
		uint64_t *pairs;

		assert_non_null(chk);
		assert_non_null(var);
		assert_int_equal(qw_ldpc_code_edges(c, chk, var, e), e);
		/* count pairs first */
		while (a < e) {
			size_t b = a;

			while (b < e && chk[b] == chk[a])
				b++;
			np += (b - a) * (b - a - 1) / 2;
			a = b;
		}
		pairs = malloc(np * sizeof(*pairs));
		assert_non_null(pairs);
		np = 0;
		for (a = 0; a < e;) {
			size_t b = a;

			while (b < e && chk[b] == chk[a])
				b++;
			for (size_t x = a; x < b; x++)
				for (size_t y = x + 1; y < b; y++) {
					uint64_t v1 = var[x] < var[y] ? var[x] : var[y];
					uint64_t v2 = var[x] < var[y] ? var[y] : var[x];

					assert_true(v1 != v2); /* no double edge */
					pairs[np++] = v1 << 32 | v2;
				}
			a = b;
		}
		qsort(pairs, np, sizeof(*pairs), cmp_u64);
		for (size_t k = 1; k < np; k++)
			assert_true(pairs[k] != pairs[k - 1]);
		free(pairs);
		free(chk);
		free(var);
	}
}

/* The packed syndrome equals H x computed edge by edge. */
static void test_syndrome_vs_naive(void **unused)
{
	struct qw_rng *r = qw_rng_new_seeded(11);

	(void)unused;
	for (unsigned i = 0; i < QW_LDPC_NRATES; i += 2) {
		unsigned z = i == 4 ? 256 : i == 6 ? 128 : 64;
		const struct qw_ldpc_code *c = qw_ldpc_code_get(i, z, SEED);
		size_t n = qw_ldpc_code_n(c), m = qw_ldpc_code_m(c), e;
		struct qw_bitvec *x = random_bits(r, n), *s = qw_bitvec_new(m),
				 *s2 = qw_bitvec_new(m), *bad = qw_bitvec_new(m + 1);
		uint32_t *chk, *var;

		e = qw_ldpc_code_edges(c, NULL, NULL, 0);
		chk = malloc(e * 4);
		var = malloc(e * 4);
		assert_non_null(chk);
		assert_non_null(var);
		qw_ldpc_code_edges(c, chk, var, e);
		assert_int_equal(qw_ldpc_code_syndrome(c, x, s), 0);
		for (size_t k = 0; k < e; k++)
			if (qw_bitvec_get(x, var[k]))
				qw_bitvec_flip(s2, chk[k]);
		assert_true(qw_bitvec_equal(s, s2));
		assert_int_equal(qw_ldpc_code_syndrome(c, x, bad), QW_EINVAL);
		free(chk);
		free(var);
		qw_bitvec_free(x);
		qw_bitvec_free(s);
		qw_bitvec_free(s2);
		qw_bitvec_free(bad);
	}
	qw_rng_free(r);
}

/* Untainted puncturing: no check has two punctured neighbours (so each
 * punctured column owns rows and the columns are independent). */
static void test_untainted_puncturing(void **unused)
{
	(void)unused;
	for (unsigned i = 0; i < QW_LDPC_NRATES; i++) {
		const struct qw_ldpc_code *c = qw_ldpc_code_get(i, 64, SEED);
		size_t n = qw_ldpc_code_n(c), m = qw_ldpc_code_m(c), e, pm;
		const uint32_t *po = qw_ldpc_code_puncture_order(c);
		uint8_t *isp = calloc(n, 1), *hit = calloc(m, 1);
		uint32_t *chk, *var;

		pm = qw_ldpc_code_max_punctured(c);
		assert_true(pm >= n / 25); /* at least 4 % of n for every rate */
		e = qw_ldpc_code_edges(c, NULL, NULL, 0);
		chk = malloc(e * 4);
		var = malloc(e * 4);
		assert_non_null(isp);
		assert_non_null(hit);
		qw_ldpc_code_edges(c, chk, var, e);
		for (size_t k = 0; k < pm; k++) {
			assert_true(po[k] < n);
			assert_int_equal(isp[po[k]], 0);
			isp[po[k]] = 1;
		}
		for (size_t k = 0; k < e; k++)
			if (isp[var[k]]) {
				assert_int_equal(hit[chk[k]], 0);
				hit[chk[k]] = 1;
			}
		free(isp);
		free(hit);
		free(chk);
		free(var);
	}
}

/* Decode a clean frame with both kernels: bit-identical outcome. */
static void test_kernels_agree(void **unused)
{
	const struct qw_ldpc_code *c = qw_ldpc_code_get(5, 64, SEED);
	struct qw_rng *r = qw_rng_new_seeded(5);
	size_t n = qw_ldpc_code_n(c), m = qw_ldpc_code_m(c);
	struct qw_bitvec *x = random_bits(r, n), *s = qw_bitvec_new(m), *y1 = qw_bitvec_new(n),
			 *y2 = qw_bitvec_new(n);
	int16_t *llr = malloc(n * sizeof(*llr));
	unsigned it1, it2;
	int r1, r2;

	(void)unused;
	assert_non_null(llr);
	assert_int_equal(qw_ldpc_code_syndrome(c, x, s), 0);
	for (size_t v = 0; v < n; v++) {
		int b = qw_bitvec_get(x, v) ^ (qw_rng_uniform(r) < 0.035);

		llr[v] = (int16_t)(b ? -53 : 53);
	}
	r1 = qw_ldpc_code_decode(c, llr, s, 60, y1, &it1);
	ldpc_force_portable = 1;
	r2 = qw_ldpc_code_decode(c, llr, s, 60, y2, &it2);
	ldpc_force_portable = 0;
	assert_int_equal(r1, 0);
	assert_int_equal(r2, 0);
	assert_int_equal(it1, it2);
	assert_true(it1 > 1);
	assert_true(qw_bitvec_equal(y1, x));
	assert_true(qw_bitvec_equal(y2, x));
	/* and a hopeless frame is reported as not converged */
	for (size_t v = 0; v < n; v++)
		llr[v] = (int16_t)(qw_rng_uniform(r) < 0.5 ? -10 : 10);
	assert_int_equal(qw_ldpc_code_decode(c, llr, s, 10, y1, &it1), 1);
	assert_int_equal(it1, 10);
	free(llr);
	qw_bitvec_free(x);
	qw_bitvec_free(s);
	qw_bitvec_free(y1);
	qw_bitvec_free(y2);
	qw_rng_free(r);
}

/* ~48 frames of n = 16384 at QBER q: count frame errors, check every frame
 * reported decoded equals Alice's bits, and the leak formula. Bounds from
 * measurements with these very settings (docs/ldpc.md): FER 2.4 % at 1 %
 * (f = 1.4), 0.7 % at 3 % and 0 % at 5 % (f = 1.2) over 288 frames; the
 * bounds allow 12.5 % / 8 % / 8 %. A broken decoder gives FER 1. */
static void fer_case(double q, double f, uint32_t max_fail)
{
	struct qw_ldpc_params p;
	struct qw_rng *r = qw_rng_new_seeded((uint64_t)(q * 1e6));
	size_t nbits = 720000;
	struct qw_bitvec *a = random_bits(r, nbits), *b = noisy_copy(r, a, q);
	struct qw_bitvec *b0 = qw_bitvec_dup(b);
	struct qw_ldpc_stats st;
	const struct qw_ldpc_code *c;
	uint32_t bad = 0;

	qw_ldpc_params_init(&p);
	p.lift = 64;
	p.efficiency = f;
	p.blind_rounds = 0; /* one-way: the decoder alone */
	assert_int_equal(qw_ldpc_run_local(&p, a, b, q, 99, &st), 0);
	c = qw_ldpc_code_get(st.rate_index, 64, p.code_seed);
	assert_true(st.frames >= 45);
	assert_int_equal(st.leaked_bits, (uint64_t)st.frames * (qw_ldpc_code_m(c) - st.punctured));
	assert_true(st.frame_errors <= max_fail);
	assert_int_equal(st.round_trips, 1);
	for (uint32_t i = 0; i < st.frames; i++) {
		size_t off, len, diff = 0, was = 0;

		qw_ldpc_frame_span(nbits, st.frames, i, &off, &len);
		for (size_t t = off; t < off + len; t++) {
			diff += qw_bitvec_get(a, t) != qw_bitvec_get(b, t);
			was += qw_bitvec_get(a, t) != qw_bitvec_get(b0, t);
		}
		if (diff) {
			bad++;
			/* a failed frame keeps Bob's bits */
			assert_int_equal(diff, was);
		}
	}
	assert_int_equal(bad, st.frame_errors);
	/* the leak matches the target efficiency (floor of p: within 1 bit
	 * per frame above f h(Q) N) */
	{
		double hq = -q * log2(q) - (1 - q) * log2(1 - q), want = f * hq * (double)nbits;

		assert_true((double)st.leaked_bits >= want - 1e-6);
		assert_true((double)st.leaked_bits <= want + st.frames + 1);
	}
	qw_bitvec_free(a);
	qw_bitvec_free(b);
	qw_bitvec_free(b0);
	qw_rng_free(r);
}

static void test_fer_1pct(void **unused)
{
	(void)unused;
	fer_case(0.01, 1.4, 6);
}

static void test_fer_3pct(void **unused)
{
	(void)unused;
	fer_case(0.03, 1.2, 4);
}

static void test_fer_5pct(void **unused)
{
	(void)unused;
	fer_case(0.05, 1.2, 4);
}

/* Blind rounds: each round reveals cnt punctured values of every frame
 * still failing; the leak grows by exactly that, and Bob converges. */
static void test_blind_leak_exact(void **unused)
{
	struct qw_ldpc_params p;
	struct qw_rng *r = qw_rng_new_seeded(77), *ar = qw_rng_new_seeded(78);
	size_t nbits = 300000;
	struct qw_bitvec *a = random_bits(r, nbits), *b = noisy_copy(r, a, 0.03);
	struct qw_ldpc_alice *alice;
	struct qw_ldpc_bob *bob;
	struct qw_ldpc_stats sa, sb;
	const struct qw_ldpc_code *c;
	const uint8_t *msg, *rep;
	size_t len, rlen;
	uint64_t expect;
	uint32_t failed0 = 0;
	int rb, ra, rounds = 0;

	(void)unused;
	qw_ldpc_params_init(&p);
	p.lift = 64;
	p.efficiency = 1.02; /* too ambitious: most frames fail at first */
	p.blind_rounds = 20;
	p.blind_step = 100;
	p.blind_max_puncture = 1;
	alice = qw_ldpc_alice_new(&p, a, 0.03, ar, NULL);
	bob = qw_ldpc_bob_new(&p, b);
	assert_non_null(alice);
	assert_non_null(bob);
	assert_int_equal(qw_ldpc_alice_syndrome(alice, &msg, &len), 0);
	assert_int_equal(qw_ldpc_alice_syndrome(alice, &msg, &len), QW_ESTATE);
	qw_ldpc_alice_stats(alice, &sa);
	c = qw_ldpc_code_get(sa.rate_index, 64, p.code_seed);
	expect = (uint64_t)sa.frames * (qw_ldpc_code_m(c) - sa.punctured);
	assert_int_equal(sa.leaked_bits, expect);
	for (;;) {
		rb = qw_ldpc_bob_decode(bob, msg, len, &rep, &rlen);
		assert_true(rb >= 0);
		qw_ldpc_bob_stats(bob, &sb);
		if (rounds == 0)
			failed0 = sb.frame_errors;
		ra = qw_ldpc_alice_consume(alice, rep, rlen, &msg, &len);
		assert_int_equal(ra, rb);
		if (ra == 1)
			break;
		/* REVEAL header: count, first, cnt */
		{
			uint32_t cnt = (uint32_t)msg[12] << 24 | (uint32_t)msg[13] << 16 |
				       (uint32_t)msg[14] << 8 | msg[15];
			uint32_t nf = (uint32_t)msg[4] << 24 | (uint32_t)msg[5] << 16 |
				      (uint32_t)msg[6] << 8 | msg[7];

			assert_int_equal(nf, sb.frame_errors);
			assert_true(cnt <= 100 && cnt > 0);
			expect += (uint64_t)cnt * nf;
		}
		rounds++;
	}
	qw_ldpc_alice_stats(alice, &sa);
	qw_ldpc_bob_stats(bob, &sb);
	assert_true(failed0 > 0);
	assert_true(rounds > 0);
	assert_int_equal(sa.leaked_bits, expect);
	assert_int_equal(sb.leaked_bits, expect);
	assert_int_equal(sb.round_trips, (uint32_t)rounds + 1);
	assert_int_equal(sb.frame_errors, 0);
	assert_true(qw_bitvec_equal(a, b));
	qw_ldpc_alice_free(alice);
	qw_ldpc_bob_free(bob);
	qw_bitvec_free(a);
	qw_bitvec_free(b);
	qw_rng_free(r);
	qw_rng_free(ar);
}

/* Malformed SYNDROME messages are rejected and leave Bob's key alone;
 * malformed or dishonest RESULTs are rejected by Alice. */
static void test_malformed(void **unused)
{
	struct qw_ldpc_params p;
	struct qw_rng *r = qw_rng_new_seeded(3), *ar = qw_rng_new_seeded(4);
	struct qw_bitvec *a = random_bits(r, 40000), *b = noisy_copy(r, a, 0.04);
	struct qw_bitvec *b0 = qw_bitvec_dup(b), *other = random_bits(r, 39999);
	struct qw_ldpc_alice *alice;
	struct qw_ldpc_bob *bob;
	const uint8_t *msg, *rep, *m2;
	uint8_t *cp;
	size_t len, rlen, l2;
	/* byte offset, value: each corrupts one header field */
	static const struct {
		size_t off;
		uint8_t val;
	} bad[] = {
		{ 0, 2 },    /* type */
		{ 1, 9 },    /* version */
		{ 2, 9 },    /* rate index */
		{ 3, 5 },    /* lift 32 */
		{ 3, 9 },    /* lift 512 */
		{ 15, 0 },   /* nbits */
		{ 19, 0 },   /* frames = 0 */
		{ 20, 0x7f }, /* p beyond the code's maximum */
		{ 24, 0 },   /* qber 0 (whole field cleared below) */
		{ 24, 0xff }, /* qber > 0.3 */
		{ 29, 1 },   /* reserved */
		{ 32, 0 }, /* step 0 when combined with 33..35 = 0 */
	};

	(void)unused;
	qw_ldpc_params_init(&p);
	p.lift = 64;
	alice = qw_ldpc_alice_new(&p, a, 0.04, ar, NULL);
	assert_non_null(alice);
	assert_int_equal(qw_ldpc_alice_syndrome(alice, &msg, &len), 0);
	cp = malloc(len);
	assert_non_null(cp);
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		bob = qw_ldpc_bob_new(&p, b);
		assert_non_null(bob);
		memcpy(cp, msg, len);
		cp[bad[k].off] = bad[k].val;
		if (bad[k].off == 32 || (bad[k].off == 24 && bad[k].val == 0))
			memset(cp + bad[k].off, 0, 4);
		assert_int_equal(qw_ldpc_bob_decode(bob, cp, len, &rep, &rlen), QW_EPARSE);
		qw_ldpc_bob_free(bob);
	}
	bob = qw_ldpc_bob_new(&p, b);
	/* truncated anywhere, one byte too long */
	assert_int_equal(qw_ldpc_bob_decode(bob, msg, 0, &rep, &rlen), QW_EPARSE);
	assert_int_equal(qw_ldpc_bob_decode(bob, msg, 39, &rep, &rlen), QW_EPARSE);
	assert_int_equal(qw_ldpc_bob_decode(bob, msg, len - 1, &rep, &rlen), QW_EPARSE);
	assert_int_equal(qw_ldpc_bob_decode(bob, msg, len - 8, &rep, &rlen), QW_EPARSE);
	memcpy(cp, msg, len);
	assert_int_equal(qw_ldpc_bob_decode(bob, cp, len + 0, &rep, &rlen) >= 0, 1);
	qw_ldpc_bob_free(bob);
	/* a key of another length */
	bob = qw_ldpc_bob_new(&p, other);
	assert_int_equal(qw_ldpc_bob_decode(bob, msg, len, &rep, &rlen), QW_EPARSE);
	qw_ldpc_bob_free(bob);
	free(cp);

	/* Bob's key was modified only by the one well-formed decode above;
	 * start again from b0 for the RESULT checks. */
	bob = qw_ldpc_bob_new(&p, b0);
	assert_int_equal(qw_ldpc_bob_decode(bob, msg, len, &rep, &rlen), 1);
	assert_int_equal(qw_ldpc_bob_decode(bob, msg, len, &m2, &l2), QW_ESTATE);
	cp = malloc(rlen + 1);
	assert_non_null(cp);
	memcpy(cp, rep, rlen);
	assert_int_equal(qw_ldpc_alice_consume(alice, cp, rlen - 1, &m2, &l2), QW_EPARSE);
	cp[0] = 1;
	assert_int_equal(qw_ldpc_alice_consume(alice, cp, rlen, &m2, &l2), QW_EPARSE);
	cp[0] = rep[0];
	cp[19] ^= 1; /* Bob's leak count */
	assert_int_equal(qw_ldpc_alice_consume(alice, cp, rlen, &m2, &l2), QW_EPROTO);
	cp[19] ^= 1;
	cp[11] ^= 1; /* failed count inconsistent with the bitmap */
	assert_int_equal(qw_ldpc_alice_consume(alice, cp, rlen, &m2, &l2), QW_EPARSE);
	cp[11] ^= 1;
	assert_int_equal(qw_ldpc_alice_consume(alice, cp, rlen, &m2, &l2), 1);
	assert_int_equal(qw_ldpc_alice_consume(alice, cp, rlen, &m2, &l2), QW_ESTATE);
	free(cp);
	qw_ldpc_bob_free(bob);
	qw_ldpc_alice_free(alice);
	qw_bitvec_free(a);
	qw_bitvec_free(b);
	qw_bitvec_free(b0);
	qw_bitvec_free(other);
	qw_rng_free(r);
	qw_rng_free(ar);
}

/* A malformed message leaves Bob's key untouched. */
static void test_malformed_keeps_key(void **unused)
{
	struct qw_ldpc_params p;
	struct qw_rng *r = qw_rng_new_seeded(8), *ar = qw_rng_new_seeded(9);
	struct qw_bitvec *a = random_bits(r, 20000), *b = noisy_copy(r, a, 0.03);
	struct qw_bitvec *b0 = qw_bitvec_dup(b);
	struct qw_ldpc_alice *alice;
	struct qw_ldpc_bob *bob;
	const uint8_t *msg, *rep;
	size_t len, rlen;

	(void)unused;
	qw_ldpc_params_init(&p);
	p.lift = 64;
	alice = qw_ldpc_alice_new(&p, a, 0.03, ar, NULL);
	assert_int_equal(qw_ldpc_alice_syndrome(alice, &msg, &len), 0);
	bob = qw_ldpc_bob_new(&p, b);
	assert_int_equal(qw_ldpc_bob_decode(bob, msg, len - 1, &rep, &rlen), QW_EPARSE);
	assert_true(qw_bitvec_equal(b, b0));
	qw_ldpc_bob_free(bob);
	qw_ldpc_alice_free(alice);
	qw_bitvec_free(a);
	qw_bitvec_free(b);
	qw_bitvec_free(b0);
	qw_rng_free(r);
	qw_rng_free(ar);
}

static void test_choose(void **unused)
{
	struct qw_ldpc_params p;
	unsigned ri;
	size_t pp;
	uint32_t fr;

	(void)unused;
	qw_ldpc_params_init(&p);
	p.lift = 64;
	p.efficiency = 1.15;
	assert_int_equal(qw_ldpc_choose(&p, 0.03, 1000000, &ri, &pp, &fr), 0);
	/* f h(Q) N leaked, roughly: the frames' payloads cover the key */
	{
		const struct qw_ldpc_code *c = qw_ldpc_code_get(ri, 64, p.code_seed);
		double hq = -0.03 * log2(0.03) - 0.97 * log2(0.97);
		double leak = (double)fr * (double)(qw_ldpc_code_m(c) - pp);

		assert_true(pp <= qw_ldpc_code_max_punctured(c));
		assert_true(leak >= 1.15 * hq * 1e6 - 1e-6);
		assert_true(leak <= 1.15 * hq * 1e6 + fr);
		assert_true((size_t)fr * (16384 - pp) >= 1000000);
	}
	assert_int_equal(qw_ldpc_choose(&p, 0.3, 1000, &ri, &pp, &fr), QW_ERANGE);
	/* automatic efficiency: the calibration points, monotone between */
	assert_true(fabs(qw_ldpc_auto_efficiency(0.001) - 1.35) < 1e-12);
	assert_true(fabs(qw_ldpc_auto_efficiency(0.03) - 1.18) < 1e-12);
	assert_true(fabs(qw_ldpc_auto_efficiency(0.2) - 1.12) < 1e-12);
	for (double q = 0.01; q < 0.1; q += 0.001)
		assert_true(qw_ldpc_auto_efficiency(q + 0.001) <= qw_ldpc_auto_efficiency(q) + 1e-12);
	assert_int_equal(qw_ldpc_choose(&p, 0.03, 0, &ri, &pp, &fr), QW_EINVAL);
	p.lift = 100;
	assert_int_equal(qw_ldpc_choose(&p, 0.03, 1000, &ri, &pp, &fr), QW_EINVAL);
	/* very low QBER: the rate-0.9 code fully punctured, efficiency > f */
	p.lift = 64;
	assert_int_equal(qw_ldpc_choose(&p, 0.001, 100000, &ri, &pp, &fr), 0);
	assert_int_equal(ri, QW_LDPC_NRATES - 1);
	assert_int_equal(pp, qw_ldpc_code_max_punctured(qw_ldpc_code_get(ri, 64, p.code_seed)));
}

/* Random corruptions of valid messages: every result is a clean error
 * code or a valid outcome, never a crash or out-of-bounds access (run
 * under the sanitizers). */
static void test_mutations(void **unused)
{
	struct qw_ldpc_params p;
	struct qw_rng *r = qw_rng_new_seeded(31), *ar = qw_rng_new_seeded(32);
	struct qw_bitvec *a = random_bits(r, 20000), *b = noisy_copy(r, a, 0.04);
	struct qw_ldpc_alice *alice;
	const uint8_t *msg, *rep;
	uint8_t *syn, *res;
	size_t len, rlen;

	(void)unused;
	qw_ldpc_params_init(&p);
	p.lift = 64;
	alice = qw_ldpc_alice_new(&p, a, 0.04, ar, NULL);
	assert_non_null(alice);
	assert_int_equal(qw_ldpc_alice_syndrome(alice, &msg, &len), 0);
	syn = malloc(len);
	assert_non_null(syn);
	memcpy(syn, msg, len);
	{
		struct qw_bitvec *bb = qw_bitvec_dup(b);
		struct qw_ldpc_bob *bob = qw_ldpc_bob_new(&p, bb);

		assert_int_equal(qw_ldpc_bob_decode(bob, syn, len, &rep, &rlen), 1);
		res = malloc(rlen);
		assert_non_null(res);
		memcpy(res, rep, rlen);
		qw_ldpc_bob_free(bob);
		qw_bitvec_free(bb);
	}
	for (int k = 0; k < 60; k++) {
		struct qw_bitvec *bb = qw_bitvec_dup(b);
		struct qw_ldpc_bob *bob = qw_ldpc_bob_new(&p, bb);
		uint8_t *m = malloc(len);
		/* mostly the header, sometimes the syndrome bits */
		size_t pos = k % 4 ? (size_t)qw_rng_below(r, 40) : (size_t)qw_rng_below(r, len);
		size_t cut = k % 7 == 3 ? (size_t)qw_rng_below(r, len) : len;
		int ret;

		assert_non_null(m);
		memcpy(m, syn, len);
		m[pos] ^= (uint8_t)(1u << qw_rng_below(r, 8));
		ret = qw_ldpc_bob_decode(bob, m, cut, &rep, &rlen);
		assert_true(ret == QW_EPARSE || ret == 0 || ret == 1);
		if (ret == QW_EPARSE)
			assert_true(qw_bitvec_equal(bb, b));
		free(m);
		qw_ldpc_bob_free(bob);
		qw_bitvec_free(bb);
	}
	for (int k = 0; k < 200; k++) {
		struct qw_ldpc_alice *al;
		uint8_t *m = malloc(rlen);
		const uint8_t *out;
		size_t olen, pos = (size_t)qw_rng_below(r, rlen);
		int ret;

		al = qw_ldpc_alice_new(&p, a, 0.04, ar, NULL);
		assert_int_equal(qw_ldpc_alice_syndrome(al, &out, &olen), 0);
		assert_non_null(m);
		memcpy(m, res, rlen);
		m[pos] ^= (uint8_t)(1u << qw_rng_below(r, 8));
		ret = qw_ldpc_alice_consume(al, m, k % 5 ? rlen : pos, &out, &olen);
		assert_true(ret == QW_EPARSE || ret == QW_EPROTO || ret == 0 || ret == 1);
		free(m);
		qw_ldpc_alice_free(al);
	}
	free(syn);
	free(res);
	qw_ldpc_alice_free(alice);
	qw_bitvec_free(a);
	qw_bitvec_free(b);
	qw_rng_free(r);
	qw_rng_free(ar);
}

/* ---- the stage over an in-process channel (Alice in a thread) ------------- */

struct alice_job {
	void *state;
	struct qw_key_block *blk;
	struct qw_distill_chan *chan;
	enum qw_stage_result res;
};

static void *alice_thread(void *arg)
{
	struct alice_job *j = arg;

	j->res = qw_ldpc_stage.process(j->state, j->blk, j->chan);
	return NULL;
}

static void run_stage(const struct qw_ldpc_params *p, struct qw_key_block *ba,
		      struct qw_key_block *bb, enum qw_stage_result *ra, enum qw_stage_result *rb)
{
	struct qw_distill_chan ca, cb;
	struct qw_chan_local *ch = qw_chan_local_pair_new(&ca, &cb);
	void *sa, *sb;
	struct alice_job job;
	pthread_t th;

	assert_non_null(ch);
	assert_int_equal(qw_ldpc_stage.init(&sa, p), 0);
	assert_int_equal(qw_ldpc_stage.init(&sb, p), 0);
	job.state = sa;
	job.blk = ba;
	job.chan = &ca;
	assert_int_equal(pthread_create(&th, NULL, alice_thread, &job), 0);
	*rb = qw_ldpc_stage.process(sb, bb, &cb);
	pthread_join(th, NULL);
	*ra = job.res;
	qw_ldpc_stage.free(sa);
	qw_ldpc_stage.free(sb);
	assert_int_equal(qw_chan_local_pending(ch), 0);
	qw_chan_local_pair_free(ch);
}

static void test_stage(void **unused)
{
	struct qw_ldpc_params p;
	struct qw_rng *r = qw_rng_new_seeded(21);
	struct qw_bitvec *a = random_bits(r, 100000), *b = noisy_copy(r, a, 0.04);
	struct qw_key_block *ba = qw_block_new(7, QW_ROLE_ALICE, a);
	struct qw_key_block *bb = qw_block_new(7, QW_ROLE_BOB, b);
	enum qw_stage_result ra, rb;

	(void)unused;
	assert_string_equal(qw_ldpc_stage.name, "ldpc");
	qw_ldpc_params_init(&p);
	p.lift = 64;
	p.efficiency = 1.25;
	ba->qber_estimate = bb->qber_estimate = 0.04;
	ba->state = bb->state = QW_BLOCK_SIFTED;
	run_stage(&p, ba, bb, &ra, &rb);
	assert_int_equal(ra, QW_STAGE_FORWARD);
	assert_int_equal(rb, QW_STAGE_FORWARD);
	assert_int_equal(ba->state, QW_BLOCK_CORRECTED);
	assert_int_equal(bb->state, QW_BLOCK_CORRECTED);
	assert_true(qw_bitvec_equal(ba->key, bb->key));
	assert_int_equal(ba->ec_parity_bits, bb->ec_parity_bits);
	assert_int_equal(ba->disclosed_bits, ba->ec_parity_bits);
	assert_int_equal(bb->ec_round_trips, 1);
	assert_true(fabs(bb->qber_observed - 0.04) < 1e-9);
	assert_true(fabs(ba->qber_observed - 0.04) < 1e-9);
	/* wrong state */
	assert_int_equal(qw_ldpc_stage.process(&p, ba, NULL), QW_STAGE_ERROR);
	assert_int_equal(qw_ldpc_stage.process(&p, ba, &(struct qw_distill_chan){ 0 }),
			 QW_STAGE_ERROR);
	qw_block_free(ba);
	qw_block_free(bb);
	qw_rng_free(r);
}

/* QBER far above the estimate: every frame fails; the block is dropped
 * (leak still counted). With keep_partial and a mixed outcome, both keys
 * keep exactly the decoded frames. */
static void test_stage_failure(void **unused)
{
	struct qw_ldpc_params p;
	struct qw_rng *r = qw_rng_new_seeded(22);
	struct qw_bitvec *a = random_bits(r, 60000), *b = noisy_copy(r, a, 0.09);
	struct qw_key_block *ba = qw_block_new(8, QW_ROLE_ALICE, a);
	struct qw_key_block *bb = qw_block_new(8, QW_ROLE_BOB, b);
	enum qw_stage_result ra, rb;

	(void)unused;
	qw_ldpc_params_init(&p);
	p.lift = 64;
	ba->qber_estimate = bb->qber_estimate = 0.02;
	run_stage(&p, ba, bb, &ra, &rb);
	assert_int_equal(ra, QW_STAGE_DROP);
	assert_int_equal(rb, QW_STAGE_DROP);
	assert_non_null(strstr(bb->drop_reason, "LDPC decoding failed"));
	assert_non_null(strstr(ba->drop_reason, "LDPC decoding failed"));
	assert_true(bb->disclosed_bits > 0);
	assert_int_equal(ba->disclosed_bits, bb->disclosed_bits);
	qw_block_free(ba);
	qw_block_free(bb);

	/* keep_partial: first half of the key clean, second half noisy */
	a = random_bits(r, 60000);
	b = qw_bitvec_dup(a);
	for (size_t t = 30000; t < 60000; t++)
		if (qw_rng_uniform(r) < 0.12)
			qw_bitvec_flip(b, t);
	ba = qw_block_new(9, QW_ROLE_ALICE, a);
	bb = qw_block_new(9, QW_ROLE_BOB, b);
	ba->qber_estimate = bb->qber_estimate = 0.02;
	p.keep_partial = 1;
	run_stage(&p, ba, bb, &ra, &rb);
	assert_int_equal(ra, QW_STAGE_FORWARD);
	assert_int_equal(rb, QW_STAGE_FORWARD);
	assert_true(ba->key->nbits < 60000 && ba->key->nbits >= 20000);
	assert_int_equal(ba->key->nbits, bb->key->nbits);
	assert_true(qw_bitvec_equal(ba->key, bb->key));
	qw_block_free(ba);
	qw_block_free(bb);

	/* an estimate above what the codes handle: both drop, no message */
	a = random_bits(r, 5000);
	ba = qw_block_new(10, QW_ROLE_ALICE, a);
	bb = qw_block_new(10, QW_ROLE_BOB, qw_bitvec_dup(a));
	ba->qber_estimate = bb->qber_estimate = 0.3;
	p.efficiency = 1.2; /* f h(0.3) = 1.06 */
	run_stage(&p, ba, bb, &ra, &rb);
	assert_int_equal(ra, QW_STAGE_DROP);
	assert_int_equal(rb, QW_STAGE_DROP);
	assert_non_null(strstr(bb->drop_reason, "too high"));
	assert_int_equal(bb->disclosed_bits, 0);
	qw_block_free(ba);
	qw_block_free(bb);
	qw_rng_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_construction_deterministic),
		cmocka_unit_test(test_no_4cycles),
		cmocka_unit_test(test_syndrome_vs_naive),
		cmocka_unit_test(test_untainted_puncturing),
		cmocka_unit_test(test_kernels_agree),
		cmocka_unit_test(test_choose),
		cmocka_unit_test(test_fer_1pct),
		cmocka_unit_test(test_fer_3pct),
		cmocka_unit_test(test_fer_5pct),
		cmocka_unit_test(test_blind_leak_exact),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_malformed_keeps_key),
		cmocka_unit_test(test_mutations),
		cmocka_unit_test(test_stage),
		cmocka_unit_test(test_stage_failure),
	};

	int ret = cmocka_run_group_tests(tests, NULL, NULL);

	qw_ldpc_cache_clear();
	return ret;
}
