/* Private to the LDPC module (src/distill/ldpc*.c): the code structure
 * shared by construction, decoder and protocol. */
#ifndef QWAVE_LDPC_INTERNAL_H
#define QWAVE_LDPC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/ldpc.h"

/* A quasi-cyclic parity-check matrix: an mb x nb base matrix whose entries
 * are Z x Z circulant permutations (or zero). Base entry (i, j) with shift
 * s connects check i Z + k to variable j Z + ((k + s) mod Z), k < Z. */
struct qw_ldpc_code {
	unsigned rate_index;
	unsigned z;  /* lift, a multiple of 64 */
	unsigned zw; /* z / 64: words per circulant block */
	unsigned nb, mb;
	size_t n, m;
	uint64_t seed;
	uint32_t nent;         /* base entries (edges / z) */
	uint32_t *row_start;   /* mb + 1: entries of row i are [row_start[i], row_start[i+1]) */
	uint16_t *ent_col;     /* base column of each entry (row-major) */
	uint16_t *ent_row;     /* base row of each entry */
	uint16_t *ent_shift;   /* circulant shift of each entry */
	uint32_t *col_start;   /* nb + 1: entries of column j, by index into col_ent */
	uint32_t *col_ent;
	unsigned max_row_deg;
	uint64_t cycles4;      /* 4-cycles of the lifted graph */
	size_t p_max;
	uint32_t *punct;       /* p_max variables: untainted puncturing order */
	uint32_t *shorten;     /* n - p_max variables: shortening order */
};

/* Build a code outside the cache (tests compare two builds); the caller
 * frees it with ldpc_code_free. NULL on allocation failure. */
struct qw_ldpc_code *ldpc_code_build(unsigned rate, unsigned z, uint64_t seed);
void ldpc_code_free(struct qw_ldpc_code *c);

/* Per-thread decoder scratch for one code size; reused across frames. */
struct ldpc_work;
struct ldpc_work *ldpc_work_new(const struct qw_ldpc_code *c);
void ldpc_work_free(struct ldpc_work *w);
/* Decode with scratch w (made for c or a code of the same n, m and row
 * degree bound): see qw_ldpc_code_decode. */
int ldpc_decode(const struct qw_ldpc_code *c, struct ldpc_work *w, const int16_t *llr,
		const uint64_t *syn, unsigned max_iter, uint64_t *x, unsigned *iters);
/* syn (m bits, zeroed first) = H x over packed words. */
void ldpc_syndrome_words(const struct qw_ldpc_code *c, const uint64_t *x, uint64_t *syn);
/* Number of checks of H x = syn that fail; acc is scratch of z / 64 words. */
size_t ldpc_syndrome_unsat(const struct qw_ldpc_code *c, const uint64_t *x, const uint64_t *syn,
			   uint64_t *acc);

/* Tests set this to run the portable kernel on AVX2 machines. */
extern int ldpc_force_portable;

#define LDPC_LLR_SCALE 16.0
#define LDPC_LLR_MAX 30000

#endif
