/* Packed bit vectors: the currency of distillation (raw, sifted, corrected
 * and secret keys are all bit vectors).
 *
 * Bit i lives in word i / 64 at bit position i % 64 (LSB first). Bits past
 * nbits in the last word are always zero, so whole-word operations
 * (popcount, xor, compare) need no masking. Byte conversion is MSB first
 * within each byte (bit 0 is the most significant bit of byte 0), the
 * convention of the 3GPP and ETSI specifications. */
#ifndef QWAVE_BITVEC_H
#define QWAVE_BITVEC_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"

struct qw_bitvec {
	size_t nbits;
	size_t nwords;   /* words in use: ceil(nbits / 64) */
	size_t capwords; /* words allocated */
	uint64_t *w;
};

#define QW_BITVEC_WORDS(nbits) (((nbits) + 63) / 64)

/* New zeroed vector of nbits bits; NULL on allocation failure. */
struct qw_bitvec *qw_bitvec_new(size_t nbits);
/* Wipes the bits (they may be key material) and frees; NULL accepted. */
void qw_bitvec_free(struct qw_bitvec *v);
/* Deep copy; NULL on allocation failure. */
struct qw_bitvec *qw_bitvec_dup(const struct qw_bitvec *v);
/* Grow or shrink to nbits; new bits are zero. 0 or QW_ENOMEM. */
QW_WUR int qw_bitvec_resize(struct qw_bitvec *v, size_t nbits);
/* Append one bit (amortised O(1)). 0 or QW_ENOMEM. */
QW_WUR int qw_bitvec_push(struct qw_bitvec *v, int bit);
/* Set every bit to zero (wipes). */
void qw_bitvec_clear(struct qw_bitvec *v);

static inline int qw_bitvec_get(const struct qw_bitvec *v, size_t i)
{
	return (int)((v->w[i >> 6] >> (i & 63)) & 1u);
}

static inline void qw_bitvec_set(struct qw_bitvec *v, size_t i, int bit)
{
	uint64_t m = (uint64_t)1 << (i & 63);
	v->w[i >> 6] = bit ? (v->w[i >> 6] | m) : (v->w[i >> 6] & ~m);
}

static inline void qw_bitvec_flip(struct qw_bitvec *v, size_t i)
{
	v->w[i >> 6] ^= (uint64_t)1 << (i & 63);
}

/* Number of ones in [from, to). Requires from <= to <= nbits. */
size_t qw_bitvec_popcount_range(const struct qw_bitvec *v, size_t from, size_t to);
/* Parity (0 or 1) of bits [from, to), by word popcount. */
int qw_bitvec_parity(const struct qw_bitvec *v, size_t from, size_t to);
/* Number of ones. */
size_t qw_bitvec_popcount(const struct qw_bitvec *v);
/* Number of positions where a and b differ (equal lengths required). */
size_t qw_bitvec_hamming(const struct qw_bitvec *a, const struct qw_bitvec *b);
/* 1 if a and b have equal length and bits, else 0; constant time in the
 * contents (the lengths are public). */
int qw_bitvec_equal(const struct qw_bitvec *a, const struct qw_bitvec *b);
/* dst ^= src; lengths must be equal. */
void qw_bitvec_xor(struct qw_bitvec *dst, const struct qw_bitvec *src);
/* dst[i] = src[perm[i]] for i < src->nbits; dst must have src's length and
 * perm must be a permutation of 0..nbits-1. */
void qw_bitvec_permute(struct qw_bitvec *dst, const struct qw_bitvec *src,
		       const uint32_t *perm);
/* Copy n bits from src[src_off..] to dst[dst_off..]; ranges must fit. */
void qw_bitvec_copy_range(struct qw_bitvec *dst, size_t dst_off,
			  const struct qw_bitvec *src, size_t src_off, size_t n);
/* Load nbits bits from bytes (MSB first). Resizes v. 0 or QW_ENOMEM. */
QW_WUR int qw_bitvec_from_bytes(struct qw_bitvec *v, const uint8_t *bytes, size_t nbits);
/* Store v's bits into ceil(nbits/8) bytes (MSB first, tail bits zero). */
void qw_bitvec_to_bytes(const struct qw_bitvec *v, uint8_t *bytes);
/* Bits [from, from+n) as an integer, bit from at the least significant
 * position; n <= 64. */
uint64_t qw_bitvec_get_bits(const struct qw_bitvec *v, size_t from, unsigned n);

#endif
