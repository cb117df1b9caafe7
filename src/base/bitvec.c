#include <stdlib.h>
#include <string.h>

#include "qwave/bitvec.h"
#include "qwave/secmem.h"

static inline uint64_t low_mask(unsigned n)
{
	return n >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1);
}

static void clear_tail(struct qw_bitvec *v)
{
	if (v->nbits & 63)
		v->w[v->nwords - 1] &= low_mask((unsigned)(v->nbits & 63));
}

struct qw_bitvec *qw_bitvec_new(size_t nbits)
{
	struct qw_bitvec *v = calloc(1, sizeof(*v));

	if (!v)
		return NULL;
	v->nbits = nbits;
	v->nwords = QW_BITVEC_WORDS(nbits);
	v->capwords = v->nwords ? v->nwords : 1;
	v->w = qw_calloc(v->capwords, sizeof(uint64_t));
	if (!v->w) {
		free(v);
		return NULL;
	}
	return v;
}

void qw_bitvec_free(struct qw_bitvec *v)
{
	if (!v)
		return;
	qw_free_secret(v->w, v->capwords * sizeof(uint64_t));
	free(v);
}

struct qw_bitvec *qw_bitvec_dup(const struct qw_bitvec *v)
{
	struct qw_bitvec *d = qw_bitvec_new(v->nbits);

	if (d && v->nwords)
		memcpy(d->w, v->w, v->nwords * sizeof(uint64_t));
	return d;
}

/* Reallocation goes through a fresh buffer so that the old one can be
 * wiped: realloc() might leave key bits behind in freed memory. */
static int reserve(struct qw_bitvec *v, size_t words)
{
	uint64_t *nw;
	size_t cap;

	if (words <= v->capwords)
		return 0;
	cap = v->capwords * 2 > words ? v->capwords * 2 : words;
	nw = qw_calloc(cap, sizeof(uint64_t));
	if (!nw)
		return QW_ENOMEM;
	memcpy(nw, v->w, v->nwords * sizeof(uint64_t));
	qw_free_secret(v->w, v->capwords * sizeof(uint64_t));
	v->w = nw;
	v->capwords = cap;
	return 0;
}

int qw_bitvec_resize(struct qw_bitvec *v, size_t nbits)
{
	size_t words = QW_BITVEC_WORDS(nbits);
	int ret = reserve(v, words);

	if (ret)
		return ret;
	if (words < v->nwords)
		qw_wipe(v->w + words, (v->nwords - words) * sizeof(uint64_t));
	else if (words > v->nwords)
		memset(v->w + v->nwords, 0, (words - v->nwords) * sizeof(uint64_t));
	v->nbits = nbits;
	v->nwords = words;
	clear_tail(v);
	return 0;
}

int qw_bitvec_push(struct qw_bitvec *v, int bit)
{
	size_t i = v->nbits;
	int ret;

	if ((i & 63) == 0) {
		ret = reserve(v, v->nwords + 1);
		if (ret)
			return ret;
		v->w[v->nwords++] = 0;
	}
	v->nbits = i + 1;
	if (bit)
		v->w[i >> 6] |= (uint64_t)1 << (i & 63);
	return 0;
}

void qw_bitvec_clear(struct qw_bitvec *v)
{
	qw_wipe(v->w, v->capwords * sizeof(uint64_t));
}

size_t qw_bitvec_popcount_range(const struct qw_bitvec *v, size_t from, size_t to)
{
	size_t wf, wt, n = 0;

	QW_REQUIRE(from <= to && to <= v->nbits);
	if (from == to)
		return 0;
	wf = from >> 6;
	wt = (to - 1) >> 6;
	if (wf == wt)
		return (size_t)__builtin_popcountll(
			(v->w[wf] >> (from & 63)) & low_mask((unsigned)(to - from)));
	n = (size_t)__builtin_popcountll(v->w[wf] >> (from & 63));
	for (size_t i = wf + 1; i < wt; i++)
		n += (size_t)__builtin_popcountll(v->w[i]);
	n += (size_t)__builtin_popcountll(v->w[wt] & low_mask((unsigned)(((to - 1) & 63) + 1)));
	return n;
}

int qw_bitvec_parity(const struct qw_bitvec *v, size_t from, size_t to)
{
	size_t wf, wt;
	uint64_t acc;

	QW_REQUIRE(from <= to && to <= v->nbits);
	if (from == to)
		return 0;
	wf = from >> 6;
	wt = (to - 1) >> 6;
	if (wf == wt)
		return __builtin_parityll((v->w[wf] >> (from & 63)) &
					  low_mask((unsigned)(to - from)));
	/* XOR the words first: one parity instruction instead of a popcount
	 * per word. */
	acc = v->w[wf] >> (from & 63);
	for (size_t i = wf + 1; i < wt; i++)
		acc ^= v->w[i];
	acc ^= v->w[wt] & low_mask((unsigned)(((to - 1) & 63) + 1));
	return __builtin_parityll(acc);
}

size_t qw_bitvec_popcount(const struct qw_bitvec *v)
{
	size_t n = 0;

	for (size_t i = 0; i < v->nwords; i++)
		n += (size_t)__builtin_popcountll(v->w[i]);
	return n;
}

size_t qw_bitvec_hamming(const struct qw_bitvec *a, const struct qw_bitvec *b)
{
	size_t n = 0;

	QW_REQUIRE(a->nbits == b->nbits);
	for (size_t i = 0; i < a->nwords; i++)
		n += (size_t)__builtin_popcountll(a->w[i] ^ b->w[i]);
	return n;
}

int qw_bitvec_equal(const struct qw_bitvec *a, const struct qw_bitvec *b)
{
	uint64_t diff = 0;

	if (a->nbits != b->nbits)
		return 0;
	for (size_t i = 0; i < a->nwords; i++)
		diff |= a->w[i] ^ b->w[i];
	return diff == 0;
}

void qw_bitvec_xor(struct qw_bitvec *dst, const struct qw_bitvec *src)
{
	QW_REQUIRE(dst->nbits == src->nbits);
	for (size_t i = 0; i < dst->nwords; i++)
		dst->w[i] ^= src->w[i];
}

void qw_bitvec_permute(struct qw_bitvec *dst, const struct qw_bitvec *src,
		       const uint32_t *perm)
{
	QW_REQUIRE(dst != src && dst->nbits == src->nbits);
	for (size_t wi = 0; wi < dst->nwords; wi++) {
		size_t base = wi << 6;
		size_t end = base + 64 < src->nbits ? base + 64 : src->nbits;
		uint64_t word = 0;

		for (size_t i = base; i < end; i++)
			word |= (uint64_t)qw_bitvec_get(src, perm[i]) << (i - base);
		dst->w[wi] = word;
	}
}

uint64_t qw_bitvec_get_bits(const struct qw_bitvec *v, size_t from, unsigned n)
{
	size_t wi = from >> 6;
	unsigned sh = (unsigned)(from & 63);
	uint64_t x;

	QW_REQUIRE(n <= 64 && from + n <= v->nbits);
	if (n == 0)
		return 0;
	x = v->w[wi] >> sh;
	if (sh && sh + n > 64)
		x |= v->w[wi + 1] << (64 - sh);
	return x & low_mask(n);
}

static void set_bits(struct qw_bitvec *v, size_t at, uint64_t x, unsigned n)
{
	size_t wi = at >> 6;
	unsigned sh = (unsigned)(at & 63);
	uint64_t m = low_mask(n);

	x &= m;
	v->w[wi] = (v->w[wi] & ~(m << sh)) | (x << sh);
	if (sh && sh + n > 64) {
		unsigned hi = 64 - sh;
		v->w[wi + 1] = (v->w[wi + 1] & ~(m >> hi)) | (x >> hi);
	}
}

void qw_bitvec_copy_range(struct qw_bitvec *dst, size_t dst_off,
			  const struct qw_bitvec *src, size_t src_off, size_t n)
{
	QW_REQUIRE(dst_off + n <= dst->nbits && src_off + n <= src->nbits);
	while (n) {
		unsigned k = n > 64 ? 64 : (unsigned)n;

		set_bits(dst, dst_off, qw_bitvec_get_bits(src, src_off, k), k);
		dst_off += k;
		src_off += k;
		n -= k;
	}
}

/* Reverse the bit order inside each byte of x: word bit order is LSB
 * first, byte order on the wire MSB first. Shifts and masks only, so the
 * conversion of key material takes no key-dependent branch or table index. */
static uint64_t reverse_bits_in_bytes(uint64_t x)
{
	x = ((x >> 1) & 0x5555555555555555ull) | ((x & 0x5555555555555555ull) << 1);
	x = ((x >> 2) & 0x3333333333333333ull) | ((x & 0x3333333333333333ull) << 2);
	return ((x >> 4) & 0x0f0f0f0f0f0f0f0full) | ((x & 0x0f0f0f0f0f0f0f0full) << 4);
}

int qw_bitvec_from_bytes(struct qw_bitvec *v, const uint8_t *bytes, size_t nbits)
{
	size_t nbytes = (nbits + 7) / 8;
	int ret = qw_bitvec_resize(v, nbits);

	if (ret)
		return ret;
	for (size_t wi = 0; wi < v->nwords; wi++) {
		size_t base = wi * 8, n = nbytes - base < 8 ? nbytes - base : 8;
		uint64_t x = 0;

		for (size_t j = 0; j < n; j++)
			x |= (uint64_t)bytes[base + j] << (8 * j);
		v->w[wi] = reverse_bits_in_bytes(x);
	}
	clear_tail(v);
	return 0;
}

void qw_bitvec_to_bytes(const struct qw_bitvec *v, uint8_t *bytes)
{
	size_t nbytes = (v->nbits + 7) / 8;

	/* Bits past nbits are zero in the last word (the invariant), so the
	 * tail bits of the last byte come out zero as documented. */
	for (size_t wi = 0; wi < v->nwords; wi++) {
		size_t base = wi * 8, n = nbytes - base < 8 ? nbytes - base : 8;
		uint64_t x = reverse_bits_in_bytes(v->w[wi]);

		for (size_t j = 0; j < n; j++)
			bytes[base + j] = (uint8_t)(x >> (8 * j));
	}
}
