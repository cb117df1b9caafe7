/* Private to src/distill/toeplitz*.c and tests/unit/test_toeplitz.c: the
 * additive-FFT product over GF(2^64) used by QW_TOEPLITZ_FFT, with hooks
 * that let the unit tests check each layer. */
#ifndef QWAVE_TOEPLITZ_INTERNAL_H
#define QWAVE_TOEPLITZ_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/bitvec.h"
#include "qwave/toeplitz.h"

/* Carry-less paths: 0 portable C, 1 128-bit PCLMULQDQ, 2 256-bit
 * VPCLMULQDQ with AVX2. The widest the CPU has, capped by isa. */
int qw_tpz_isa_level(enum qw_toeplitz_isa isa);

/* Largest transform: 2^QW_TPZ_FFT_MAXLOG points of 32-bit chunks, i.e.
 * products of up to 2^(QW_TPZ_FFT_MAXLOG + 5) bits. */
#define QW_TPZ_FFT_MAXLOG 28

/* a b in GF(2^64) = GF(2)[x] / (x^64 + x^4 + x^3 + x + 1), computed on the
 * given path (level as above). */
uint64_t qw_tpz_gf64_mul(uint64_t a, uint64_t b, int level);

/* omega_u = sum of u_i v_i over the bits of u, (v_i) the Cantor basis of
 * GF(2^64): the u-th evaluation point of the transforms. */
uint64_t qw_tpz_omega(uint64_t u);

/* In place on 2^logn elements (1 <= logn <= QW_TPZ_FFT_MAXLOG):
 * to_novel: monomial coefficients -> novel-basis coefficients (XORs only);
 * fft: novel-basis coefficients -> values at omega_0 .. omega_(2^logn - 1);
 * the inverses undo them exactly. Returns 0 or QW_ENOMEM (twiddle setup). */
int qw_tpz_to_novel(uint64_t *f, unsigned logn);
int qw_tpz_from_novel(uint64_t *f, unsigned logn);
int qw_tpz_fft(uint64_t *f, unsigned logn, int level);
int qw_tpz_ifft(uint64_t *f, unsigned logn, int level);

/* c (ceil((abits + bbits) / 64) words, overwritten) = a b in GF(2)[x], a of
 * abits bits, b of bbits bits (bits past the lengths must be zero), by the
 * additive FFT. Returns 0, QW_EINVAL (too large) or QW_ENOMEM. */
int qw_tpz_fft_mul(uint64_t *c, const uint64_t *a, size_t abits, const uint64_t *b, size_t bbits,
		   int level);

/* Cost units of qw_tpz_fft_hash for n, m (the plan's 2B + 1 transforms of
 * 2^k points times k + 6); 0 when it is too large for the transform. */
double qw_tpz_fft_cost(size_t n, size_t m);

/* out (m bits, already sized) = T_seed key by the additive FFT. Returns 0,
 * QW_EINVAL (too large for the transform) or QW_ENOMEM. */
int qw_tpz_fft_hash(const struct qw_bitvec *key, const struct qw_bitvec *seed, size_t m,
		    struct qw_bitvec *out, int level);

#endif
