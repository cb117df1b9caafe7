/* Bit vectors checked against a naive one-byte-per-bit model. Random data
 * comes from a fixed-seed xorshift64* so that every run checks the same
 * cases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/bitvec.h"

static uint64_t rng_state;

static void seed(uint64_t s)
{
	rng_state = s ? s : 1;
}

/* xorshift64* (Vigna 2016). */
static uint64_t next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

static size_t below(size_t n)
{
	return (size_t)(next() % n);
}

/* A random vector and its naive model. */
static struct qw_bitvec *random_vec(size_t nbits, uint8_t *model)
{
	struct qw_bitvec *v = qw_bitvec_new(nbits);

	assert_non_null(v);
	for (size_t i = 0; i < nbits; i++) {
		model[i] = (uint8_t)(next() & 1);
		qw_bitvec_set(v, i, model[i]);
	}
	return v;
}

static void assert_matches(const struct qw_bitvec *v, const uint8_t *model, size_t nbits)
{
	assert_int_equal(v->nbits, nbits);
	for (size_t i = 0; i < nbits; i++)
		assert_int_equal(qw_bitvec_get(v, i), model[i]);
}

/* Bits past nbits in the last word must be zero (the header's invariant). */
static void assert_tail_clear(const struct qw_bitvec *v)
{
	assert_int_equal(v->nwords, QW_BITVEC_WORDS(v->nbits));
	if (v->nbits & 63)
		assert_int_equal(v->w[v->nwords - 1] >> (v->nbits & 63), 0);
}

static void test_get_set_flip(void **state)
{
	enum { N = 200 };
	uint8_t model[N] = { 0 };
	struct qw_bitvec *v = qw_bitvec_new(N);

	(void)state;
	assert_non_null(v);
	assert_int_equal(v->nbits, N);
	assert_int_equal(v->nwords, 4);
	assert_int_equal(qw_bitvec_popcount(v), 0);
	seed(1);
	for (int round = 0; round < 5000; round++) {
		size_t i = below(N);

		switch (next() % 3) {
		case 0:
			qw_bitvec_set(v, i, 1);
			model[i] = 1;
			break;
		case 1:
			qw_bitvec_set(v, i, 0);
			model[i] = 0;
			break;
		default:
			qw_bitvec_flip(v, i);
			model[i] ^= 1;
		}
	}
	assert_matches(v, model, N);
	assert_tail_clear(v);
	/* set with any nonzero value means 1 */
	qw_bitvec_set(v, 3, 7);
	assert_int_equal(qw_bitvec_get(v, 3), 1);
	qw_bitvec_clear(v);
	assert_int_equal(qw_bitvec_popcount(v), 0);
	qw_bitvec_free(v);
	qw_bitvec_free(NULL);
}

static void naive_range(const uint8_t *m, size_t from, size_t to, size_t *ones, int *parity)
{
	size_t n = 0;

	for (size_t i = from; i < to; i++)
		n += m[i];
	*ones = n;
	*parity = (int)(n & 1);
}

static void check_range(const struct qw_bitvec *v, const uint8_t *m, size_t from, size_t to)
{
	size_t ones;
	int parity;

	naive_range(m, from, to, &ones, &parity);
	assert_int_equal(qw_bitvec_parity(v, from, to), parity);
	assert_int_equal(qw_bitvec_popcount_range(v, from, to), ones);
}

static void test_parity_popcount_ranges(void **state)
{
	enum { N = 1000 };
	static const size_t edges[] = { 0, 1, 2, 62, 63, 64, 65, 127, 128, 129,
					191, 192, 193, 500, 511, 512, 513, 959, 960,
					961, 998, 999, 1000 };
	const size_t ne = sizeof(edges) / sizeof(edges[0]);
	uint8_t model[N];
	struct qw_bitvec *v;
	size_t ones;
	int parity;

	(void)state;
	seed(2);
	v = random_vec(N, model);
	/* every pair of word-boundary positions */
	for (size_t a = 0; a < ne; a++)
		for (size_t b = a; b < ne; b++)
			check_range(v, model, edges[a], edges[b]);
	/* every range inside and across the first two words */
	for (size_t from = 0; from <= 130; from++)
		for (size_t to = from; to <= 130; to++)
			check_range(v, model, from, to);
	/* many random ranges over the whole vector */
	for (int i = 0; i < 20000; i++) {
		size_t a = below(N + 1), b = below(N + 1);

		check_range(v, model, a < b ? a : b, a < b ? b : a);
	}
	naive_range(model, 0, N, &ones, &parity);
	assert_int_equal(qw_bitvec_popcount(v), ones);
	qw_bitvec_free(v);
}

static void test_hamming_equal_xor(void **state)
{
	static const size_t lens[] = { 1, 63, 64, 65, 130, 1000 };
	uint8_t ma[1000], mb[1000];

	(void)state;
	seed(3);
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		size_t n = lens[k], diff = 0;
		struct qw_bitvec *a = random_vec(n, ma);
		struct qw_bitvec *b = random_vec(n, mb);
		struct qw_bitvec *c = qw_bitvec_dup(a);

		assert_non_null(c);
		for (size_t i = 0; i < n; i++)
			diff += ma[i] != mb[i];
		assert_int_equal(qw_bitvec_hamming(a, b), diff);
		assert_int_equal(qw_bitvec_hamming(a, c), 0);
		assert_int_equal(qw_bitvec_equal(a, c), 1);
		assert_int_equal(qw_bitvec_equal(a, b), diff == 0);
		/* a single differing bit, at either end, makes them unequal */
		qw_bitvec_flip(c, n - 1);
		assert_int_equal(qw_bitvec_equal(a, c), 0);
		assert_int_equal(qw_bitvec_hamming(a, c), 1);
		qw_bitvec_flip(c, n - 1);
		qw_bitvec_flip(c, 0);
		assert_int_equal(qw_bitvec_equal(a, c), 0);
		qw_bitvec_flip(c, 0);

		qw_bitvec_xor(c, b);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(qw_bitvec_get(c, i), ma[i] ^ mb[i]);
		assert_int_equal(qw_bitvec_popcount(c), diff);
		assert_tail_clear(c);
		/* xor is its own inverse */
		qw_bitvec_xor(c, b);
		assert_int_equal(qw_bitvec_equal(a, c), 1);
		qw_bitvec_free(a);
		qw_bitvec_free(b);
		qw_bitvec_free(c);
	}
	{
		/* same contents, different lengths */
		struct qw_bitvec *x = qw_bitvec_new(64), *y = qw_bitvec_new(65);

		assert_non_null(x);
		assert_non_null(y);
		assert_int_equal(qw_bitvec_equal(x, y), 0);
		qw_bitvec_free(x);
		qw_bitvec_free(y);
	}
}

static void test_permute(void **state)
{
	static const size_t lens[] = { 1, 64, 100, 1000 };
	uint8_t m[1000];
	uint32_t perm[1000];

	(void)state;
	seed(4);
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		size_t n = lens[k];
		struct qw_bitvec *src = random_vec(n, m);
		struct qw_bitvec *dst = qw_bitvec_new(n);

		assert_non_null(dst);
		for (size_t i = 0; i < n; i++)
			perm[i] = (uint32_t)i;
		for (size_t i = n; i > 1; i--) {
			size_t j = below(i);
			uint32_t t = perm[i - 1];

			perm[i - 1] = perm[j];
			perm[j] = t;
		}
		qw_bitvec_permute(dst, src, perm);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(qw_bitvec_get(dst, i), m[perm[i]]);
		assert_int_equal(qw_bitvec_popcount(dst), qw_bitvec_popcount(src));
		assert_tail_clear(dst);
		qw_bitvec_free(src);
		qw_bitvec_free(dst);
	}
}

static void test_copy_range(void **state)
{
	enum { NS = 700, ND = 600 };
	uint8_t ms[NS], md[ND];
	struct qw_bitvec *src, *dst;

	(void)state;
	seed(5);
	src = random_vec(NS, ms);
	dst = random_vec(ND, md);
	for (int round = 0; round < 3000; round++) {
		size_t n = below(ND + 1);
		size_t so = below(NS - n + 1), d = below(ND - n + 1);

		/* bias towards short copies and word-edge offsets too */
		if (round % 3 == 0) {
			n = below(130);
			so = below(NS - n + 1);
			d = (size_t)(64 * below(ND / 64)) + (size_t)(next() % 3) - 1;
			if (d > ND - n)
				d = ND - n;
		}
		qw_bitvec_copy_range(dst, d, src, so, n);
		memcpy(md + d, ms + so, n);
		if (round % 100 == 0 || n < 130)
			assert_matches(dst, md, ND);
	}
	assert_matches(dst, md, ND);
	assert_tail_clear(dst);
	/* copying within the same vector between disjoint ranges */
	qw_bitvec_copy_range(dst, 3, dst, 300, 250);
	memmove(md + 3, md + 300, 250);
	assert_matches(dst, md, ND);
	qw_bitvec_free(src);
	qw_bitvec_free(dst);
}

static void test_get_bits(void **state)
{
	enum { N = 300 };
	uint8_t m[N];
	struct qw_bitvec *v;

	(void)state;
	seed(6);
	v = random_vec(N, m);
	for (size_t from = 0; from < N; from++) {
		for (unsigned n = 0; n <= 64 && from + n <= N; n += (n < 3 || n > 60) ? 1 : 7) {
			uint64_t want = 0;

			for (unsigned i = 0; i < n; i++)
				want |= (uint64_t)m[from + i] << i;
			assert_true(qw_bitvec_get_bits(v, from, n) == want);
		}
	}
	qw_bitvec_free(v);
}

static void test_bytes_known_pattern(void **state)
{
	/* MSB first: bit 0 is the top bit of byte 0. */
	static const uint8_t bytes[3] = { 0x80, 0x01, 0xa5 };
	static const uint8_t bits[24] = { 1, 0, 0, 0, 0, 0, 0, 0,
					  0, 0, 0, 0, 0, 0, 0, 1,
					  1, 0, 1, 0, 0, 1, 0, 1 };
	struct qw_bitvec *v = qw_bitvec_new(0);
	uint8_t back[3];

	(void)state;
	assert_non_null(v);
	assert_int_equal(qw_bitvec_from_bytes(v, bytes, 24), 0);
	assert_matches(v, bits, 24);
	qw_bitvec_to_bytes(v, back);
	assert_memory_equal(back, bytes, 3);

	/* 13 bits: the low 3 bits of byte 1 are not loaded, and come back
	 * as zeros. */
	assert_int_equal(qw_bitvec_from_bytes(v, (const uint8_t[]){ 0xff, 0xff }, 13), 0);
	assert_int_equal(v->nbits, 13);
	assert_int_equal(qw_bitvec_popcount(v), 13);
	assert_tail_clear(v);
	qw_bitvec_to_bytes(v, back);
	assert_int_equal(back[0], 0xff);
	assert_int_equal(back[1], 0xf8);
	qw_bitvec_free(v);
}

static void test_bytes_round_trip(void **state)
{
	static const size_t lens[] = { 0, 1, 7, 8, 9, 63, 64, 65, 100, 1024, 1031 };
	uint8_t in[130], out[130];

	(void)state;
	seed(7);
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		size_t nbits = lens[k], nbytes = (nbits + 7) / 8;
		struct qw_bitvec *v = qw_bitvec_new(5);

		assert_non_null(v);
		for (size_t i = 0; i < nbytes; i++)
			in[i] = (uint8_t)next();
		if (nbits & 7)
			in[nbytes - 1] &= (uint8_t)(0xff << (8 - (nbits & 7)));
		assert_int_equal(qw_bitvec_from_bytes(v, in, nbits), 0);
		assert_int_equal(v->nbits, nbits);
		for (size_t i = 0; i < nbits; i++)
			assert_int_equal(qw_bitvec_get(v, i), (in[i / 8] >> (7 - i % 8)) & 1);
		assert_tail_clear(v);
		memset(out, 0xee, sizeof(out));
		qw_bitvec_to_bytes(v, out);
		assert_memory_equal(out, in, nbytes);
		assert_int_equal(out[nbytes], 0xee); /* nothing written past */
		qw_bitvec_free(v);
	}
}

static void test_push_across_words(void **state)
{
	enum { N = 300 };
	uint8_t m[N];
	struct qw_bitvec *v = qw_bitvec_new(0);

	(void)state;
	assert_non_null(v);
	seed(8);
	for (size_t i = 0; i < N; i++) {
		m[i] = (uint8_t)(next() & 1);
		assert_int_equal(qw_bitvec_push(v, m[i]), 0);
		assert_int_equal(v->nbits, i + 1);
		assert_tail_clear(v);
		/* the bit just pushed and the ones at the previous boundary */
		assert_int_equal(qw_bitvec_get(v, i), m[i]);
	}
	assert_matches(v, m, N);
	/* push after a resize onto a word boundary, and after a shrink */
	assert_int_equal(qw_bitvec_resize(v, 128), 0);
	assert_int_equal(qw_bitvec_push(v, 1), 0);
	assert_int_equal(v->nbits, 129);
	assert_int_equal(qw_bitvec_get(v, 128), 1);
	assert_int_equal(qw_bitvec_popcount_range(v, 0, 128),
			 qw_bitvec_popcount(v) - 1);
	qw_bitvec_free(v);
}

static void test_resize(void **state)
{
	struct qw_bitvec *v = qw_bitvec_new(200);

	(void)state;
	assert_non_null(v);
	for (size_t i = 0; i < 200; i++)
		qw_bitvec_set(v, i, 1);
	/* shrink inside a word: the dropped bits must not come back */
	assert_int_equal(qw_bitvec_resize(v, 70), 0);
	assert_int_equal(v->nbits, 70);
	assert_tail_clear(v);
	assert_int_equal(qw_bitvec_popcount(v), 70);
	assert_int_equal(qw_bitvec_resize(v, 200), 0);
	assert_int_equal(qw_bitvec_popcount(v), 70);
	for (size_t i = 70; i < 200; i++)
		assert_int_equal(qw_bitvec_get(v, i), 0);
	/* shrink to a word boundary, then grow far past the capacity */
	for (size_t i = 0; i < 200; i++)
		qw_bitvec_set(v, i, 1);
	assert_int_equal(qw_bitvec_resize(v, 64), 0);
	assert_int_equal(qw_bitvec_resize(v, 5000), 0);
	assert_int_equal(v->nbits, 5000);
	assert_int_equal(qw_bitvec_popcount(v), 64);
	assert_int_equal(qw_bitvec_popcount_range(v, 64, 5000), 0);
	assert_int_equal(qw_bitvec_parity(v, 0, 5000), 0);
	/* to zero and back */
	assert_int_equal(qw_bitvec_resize(v, 0), 0);
	assert_int_equal(v->nwords, 0);
	assert_int_equal(qw_bitvec_resize(v, 10), 0);
	assert_int_equal(qw_bitvec_popcount(v), 0);
	qw_bitvec_free(v);
}

static void test_dup_independent(void **state)
{
	uint8_t m[150];
	struct qw_bitvec *a, *b, *z, *zd;

	(void)state;
	seed(9);
	a = random_vec(150, m);
	b = qw_bitvec_dup(a);
	assert_non_null(b);
	assert_matches(b, m, 150);
	qw_bitvec_flip(b, 77);
	assert_int_equal(qw_bitvec_get(a, 77), m[77]);
	z = qw_bitvec_new(0);
	assert_non_null(z);
	zd = qw_bitvec_dup(z);
	assert_non_null(zd);
	assert_int_equal(zd->nbits, 0);
	assert_int_equal(qw_bitvec_equal(z, zd), 1);
	qw_bitvec_free(a);
	qw_bitvec_free(b);
	qw_bitvec_free(z);
	qw_bitvec_free(zd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_set_flip),
		cmocka_unit_test(test_parity_popcount_ranges),
		cmocka_unit_test(test_hamming_equal_xor),
		cmocka_unit_test(test_permute),
		cmocka_unit_test(test_copy_range),
		cmocka_unit_test(test_get_bits),
		cmocka_unit_test(test_bytes_known_pattern),
		cmocka_unit_test(test_bytes_round_trip),
		cmocka_unit_test(test_push_across_words),
		cmocka_unit_test(test_resize),
		cmocka_unit_test(test_dup_independent),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
