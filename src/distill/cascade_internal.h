/* Private to the Cascade module (src/distill/cascade*.c): block layouts,
 * the message encoding and helpers shared by Bob and Alice. */
#ifndef QWAVE_CASCADE_INTERNAL_H
#define QWAVE_CASCADE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/bitvec.h"
#include "qwave/cascade.h"

/* Message types (first byte). */
enum {
	CAS_MSG_HELLO = 0x01, /* layout header, then queries */
	CAS_MSG_QUERY = 0x02,
	CAS_MSG_DONE = 0x03,
	CAS_MSG_ANSWER = 0x81,
};
#define CAS_WIRE_VERSION 1

/* How a pass groups the key into blocks. */
enum cas_kind {
	CAS_KIND_IDENT = 0, /* blocks of k consecutive key bits */
	CAS_KIND_PERM = 1,  /* blocks of k consecutive bits of a permuted copy */
	CAS_KIND_MASK = 2,  /* BICONF: block 0 = a random half S, block 1 = its complement */
};

/* A keyed permutation of [0, n): an unbalanced Feistel network on m-bit
 * values (m = ceil(log2 n)), cycle-walked into [0, n) (Black and Rogaway,
 * "Ciphers with arbitrary finite domains", CT-RSA 2002). Evaluating it
 * either way costs a few multiplications and no memory, which beats a
 * cache miss into a table of n entries. */
#define CAS_FEISTEL_ROUNDS 4
struct cas_feistel {
	uint32_t n, abits, bbits;
	uint64_t key[CAS_FEISTEL_ROUNDS];
};

static inline uint32_t cas_fe_f(uint32_t v, uint64_t k)
{
	uint64_t z = ((uint64_t)v + k) * 0x9E3779B97F4A7C15ull;

	z ^= z >> 29;
	z *= 0xBF58476D1CE4E5B9ull;
	return (uint32_t)(z >> 32);
}

static inline uint32_t cas_fe_round_trip(const struct cas_feistel *f, uint32_t x, int fwd)
{
	uint32_t ma = ((uint32_t)1 << f->abits) - 1, mb = ((uint32_t)1 << f->bbits) - 1;
	uint32_t l = x >> f->bbits, r = x & mb;

	for (int i = 0; i < CAS_FEISTEL_ROUNDS; i++) {
		int j = fwd ? i : CAS_FEISTEL_ROUNDS - 1 - i;

		if (j & 1)
			r = (r ^ cas_fe_f(l, f->key[j])) & mb;
		else
			l = (l ^ cas_fe_f(r, f->key[j])) & ma;
	}
	return (l << f->bbits) | r;
}

/* The pass's permutation: copy[i] = key[cas_fe_fwd(i)]. */
static inline uint32_t cas_fe_fwd(const struct cas_feistel *f, uint32_t i)
{
	do
		i = cas_fe_round_trip(f, i, 1);
	while (i >= f->n);
	return i;
}

/* Position in the permuted copy of key bit x. */
static inline uint32_t cas_fe_inv(const struct cas_feistel *f, uint32_t x)
{
	do
		x = cas_fe_round_trip(f, x, 0);
	while (x >= f->n);
	return x;
}

/* The public block structure of one reconciliation: shared (read-only,
 * reference counted) between every Bob and Alice using the same n, seed
 * and schedule, so that frames of one size pay for the permutations once. */
struct cas_layout {
	size_t n;
	uint64_t seed;
	unsigned npasses;
	uint32_t k[QW_CASCADE_MAX_PASSES];
	uint8_t kind[QW_CASCADE_MAX_PASSES];
	struct cas_feistel fe[QW_CASCADE_MAX_PASSES]; /* PERM passes */
	uint32_t *perm[QW_CASCADE_MAX_PASSES]; /* PERM: table of cas_fe_fwd */
	struct qw_bitvec *mask[QW_CASCADE_MAX_PASSES]; /* MASK: the set S */
	unsigned refs;
};

/* Get (building or reusing a cached one) the layout; NULL on ENOMEM. */
struct cas_layout *cas_layout_get(size_t n, uint64_t seed, unsigned npasses, const uint32_t *k);
void cas_layout_put(struct cas_layout *l);
/* Kind of a pass with block size k in an n-bit key. */
enum cas_kind cas_kind_of(unsigned pass, uint32_t k, size_t n);
static inline uint32_t cas_nblocks(const struct cas_layout *l, unsigned p)
{
	return l->kind[p] == CAS_KIND_MASK ? 2 : (uint32_t)((l->n + l->k[p] - 1) / l->k[p]);
}
/* Bisection tree depth of a block of len bits: ceil(log2(len)). */
unsigned cas_depth(size_t len);
/* Range [lo, hi) of block b of pass p (positions in the pass's order). */
void cas_block_range(const struct cas_layout *l, unsigned p, uint32_t b, size_t *lo, size_t *hi);
/* Child split of [lo, hi): the left child is [lo, mid). */
static inline size_t cas_mid(size_t lo, size_t hi)
{
	return lo + (hi - lo + 1) / 2;
}

/* Parity of v over [lo, hi) (lo < hi), without qw_bitvec_parity's
 * contract checks: the callers' ranges come from validated layouts. */
static inline int cas_parity(const struct qw_bitvec *v, size_t lo, size_t hi)
{
	size_t wf = lo >> 6, wt = (hi - 1) >> 6;
	uint64_t acc, top = ~(uint64_t)0 >> (63 - ((hi - 1) & 63));

	if (wf == wt)
		return __builtin_parityll((v->w[wf] & top) >> (lo & 63));
	acc = v->w[wf] >> (lo & 63);
	for (size_t i = wf + 1; i < wt; i++)
		acc ^= v->w[i];
	acc ^= v->w[wt] & top;
	return __builtin_parityll(acc);
}

/* Parity of v over [lo, hi) restricted to mask (inv: to its complement). */
int cas_masked_parity(const struct qw_bitvec *v, const struct qw_bitvec *m, int inv,
		      size_t lo, size_t hi);
/* Members of mask (inv: of its complement) in [lo, hi), counted up to 2;
 * *first = the lowest member when there is one. */
unsigned cas_masked_few(const struct qw_bitvec *m, int inv, size_t lo, size_t hi, size_t *first);
/* Parities of blocks b0 .. b0+cnt-1 of k consecutive bits of v, written to
 * bitmap out starting at bit position at. */
void cas_block_parities(const struct qw_bitvec *v, size_t k, size_t b0, size_t cnt,
			uint64_t *out, size_t at);

/* dst[i] = src[perm[i]] (both n bits). */
void cas_permute(struct qw_bitvec *dst, const struct qw_bitvec *src, const uint32_t *perm);

/* Zeroed scratch memory kept per thread between reconciliations. A block's
 * node tables and permuted copies are megabytes at n = 1e6; fresh pages
 * for each block (page faults, kernel zeroing, the allocator trimming them
 * back) cost about 7% of a pipeline's CPU. cas_zfree() wipes the buffer
 * (it may hold key bits) and keeps it for the next cas_zalloc() of the
 * same size on this thread (the wipe leaves it zeroed), or frees it.
 * Thread exit, or qw_cascade_cache_clear() on the thread, frees the
 * cache. NULL accepted by cas_zfree. */
void *cas_zalloc(size_t bytes);
void cas_zfree(void *p, size_t bytes);
/* The same for buffers holding nothing secret (Alice's disclosed parities,
 * block indices): zeroed with memset, which is several times faster than
 * the wipe (OPENSSL_cleanse) on megabyte tables. */
void cas_zfree_public(void *p, size_t bytes);
/* An n-bit zeroed bit vector on cas_zalloc memory; free with cas_bv_free
 * (wipes), never qw_bitvec_free. */
struct qw_bitvec *cas_bv_new(size_t n);
void cas_bv_free(struct qw_bitvec *v);

/* A growable byte buffer for messages. */
struct cas_buf {
	uint8_t *p;
	size_t len, cap;
};
int cas_buf_reserve(struct cas_buf *b, size_t extra);
/* Writers, after cas_buf_reserve(): a byte, an unsigned LEB128 (<= 10). */
static inline void cas_buf_put_u8(struct cas_buf *b, uint8_t x)
{
	b->p[b->len++] = x;
}

static inline void cas_buf_put_var(struct cas_buf *b, uint64_t x)
{
	while (x >= 0x80) {
		b->p[b->len++] = (uint8_t)(x | 0x80);
		x >>= 7;
	}
	b->p[b->len++] = (uint8_t)x;
}
void cas_buf_free(struct cas_buf *b);

/* Bounded reader; every get returns 0 or -1 (truncated / overlong). */
struct cas_rd {
	const uint8_t *p;
	size_t len, off;
};
int cas_rd_u8(struct cas_rd *r, uint8_t *x);
int cas_rd_var_slow(struct cas_rd *r, uint64_t *x);
static inline int cas_rd_var(struct cas_rd *r, uint64_t *x)
{
	if (r->off < r->len && r->p[r->off] < 0x80) {
		*x = r->p[r->off++];
		return 0;
	}
	if (r->off + 1 < r->len && r->p[r->off + 1] < 0x80 && r->p[r->off + 1] != 0) {
		*x = (uint64_t)(r->p[r->off] & 0x7f) | ((uint64_t)r->p[r->off + 1] << 7);
		r->off += 2;
		return 0;
	}
	return cas_rd_var_slow(r, x);
}

#endif
