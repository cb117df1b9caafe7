/* Products in GF(2)[x] by the additive FFT over GF(2^64), for Toeplitz
 * hashing of long keys (QW_TOEPLITZ_FFT, docs/pa.md).
 *
 * A binary polynomial is cut into 32-bit chunks a_j, read as elements of
 * F = GF(2^64) = GF(2)[x] / (x^64 + x^4 + x^3 + x + 1), giving A(y) in F[y]
 * with a(x) = A(x^32). Two chunks multiply to degree <= 62, so no product
 * or sum in C = A B is ever reduced: C's coefficients are exactly those of
 * the binary product in y = x^32, and a(x) b(x) = sum_j c_j x^(32 j) (the
 * overlapping halves XOR together).
 *
 * C is computed by evaluation at the 2^k points of a GF(2)-subspace of F,
 * pointwise products and interpolation (S.-J. Lin, W.-H. Chung, Y. S. Han,
 * "Novel polynomial basis and its application to Reed-Solomon erasure
 * codes", FOCS 2014; used for binary polynomials by M.-S. Chen, C.-M. Cheng,
 * P.-C. Kuo, W.-D. Li, B.-Y. Yang, "Faster multiplication for long binary
 * polynomials", arXiv:1708.09746):
 *
 * - The subspace is spanned by a Cantor basis v_0 = 1, v_i^2 + v_i =
 *   v_(i-1). Its vanishing polynomials are s_i = s_1 o ... o s_1 (i times),
 *   s_1(y) = y^2 + y, so s_i(v_i) = 1 (no normalisation), s_i(v_j) =
 *   v_(j-i) for j >= i, and s_(2^t)(y) = y^(2^(2^t)) + y.
 * - Novel basis X_j = prod_i s_i^(j_i) (j_i the bits of j). Evaluation of
 *   sum_j d_j X_j at omega_u = sum_i u_i v_i, u < 2^k: at level i the block
 *   of 2^(i+1) coefficients whose points are beta + span(v_0..v_i) with
 *   beta = sum_b t_b v_(i+1+b) splits as f0 + s_i f1; s_i is c = s_i(beta)
 *   = sum_b t_b v_(1+b) = omega_(2t) on beta + span(v_0..v_(i-1)) and c + 1
 *   on the other half, so (LCH eq. for the butterfly)
 *       f0 <- f0 + c f1,   f1 <- f1 + f0,
 *   one multiplication by a constant per pair. The twiddle of block t does
 *   not depend on the level.
 * - Monomial <-> novel basis by Taylor expansions (S. Gao, T. Mateer,
 *   "Additive fast Fourier transforms over finite fields", IEEE TIT 56(12),
 *   2010): with tau = 2^a, a a power of two, s_a(y) = y^tau + y and
 *   X_(j + tau j') = X_j(y) X_j'(s_a(y)). Write f = sum_p T_p(y) s_a(y)^p
 *   (deg T_p < tau); then convert the tau "columns" sum_p T_p[l] Y^p and
 *   the rows T_p, recursively. XORs only.
 *
 * The key's chunks are multiplied only by public values (twiddles and the
 * seed's transform), so no branch or table index depends on the key. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "qwave/error.h"
#include "qwave/secmem.h"
#include "toeplitz_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#define QW_HAVE_X86 1
#include <immintrin.h>
#endif

#define HUGE_BYTES ((size_t)2 << 20)

/* The in-cache part of the transforms: blocks of 2^15 words (256 KiB). */
#define FFT_CACHE_LOG 15

static uint64_t cantor[64];
static uint64_t omega_tab[4][256];
/* Monomial -> novel basis for 2^k <= 2^CONV_BASE coefficients as a
 * straight list of XOR runs (element offsets; the inverse runs them
 * backwards), recorded from the recursion at set-up. */
#define CONV_BASE 4
#define CONV_MAXOPS 256
struct xor_op {
	uint16_t d, s, n;
};
static struct xor_op conv_ops[CONV_BASE + 1][CONV_MAXOPS];
static unsigned conv_nops[CONV_BASE + 1];
static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
#ifdef QW_HAVE_X86
static int have_avx2; /* for the XOR runs of the basis conversions */
#endif
/* Per-thread workspace of qw_tpz_fft_hash, kept between calls (a PA stage
 * hashes block after block of one size: fresh pages cost the kernel more
 * than the hash's own passes). Wiped after every use; freed at thread
 * exit or by qw_toeplitz_release(). */
struct workspace {
	uint64_t *p;
	size_t words;
};
static pthread_key_t ws_key;
static void free_words(uint64_t *p, size_t n);
static uint64_t *alloc_words(size_t n);

/* ---- GF(2^64) ------------------------------------------------------------ */

/* lo + hi x^64 mod x^64 + x^4 + x^3 + x + 1. hi x^64 = hi g with g = x^4 +
 * x^3 + x + 1; the part of hi g past x^63 is o = hi >> 60 + hi >> 61 +
 * hi >> 63 (4 bits), and o g fits in 8 bits, so hi' = hi + o folds both
 * at once: result lo + hi' g (linear in hi'). */
static uint64_t gf64_reduce(uint64_t lo, uint64_t hi)
{
	hi ^= (hi >> 60) ^ (hi >> 61) ^ (hi >> 63);
	return lo ^ hi ^ (hi << 1) ^ (hi << 3) ^ (hi << 4);
}

/* Constant time in both operands (masks, no tables, no branches on data). */
static uint64_t gf64_mul_portable(uint64_t a, uint64_t b)
{
	uint64_t lo = 0, hi = 0;

	for (unsigned i = 0; i < 64; i++) {
		uint64_t mask = (uint64_t)0 - ((b >> i) & 1);

		lo ^= (a << i) & mask;
		hi ^= (i ? a >> (64 - i) : 0) & mask;
	}
	return gf64_reduce(lo, hi);
}

#ifdef QW_HAVE_X86
__attribute__((target("pclmul,sse4.1"))) static inline __m128i mul2(__m128i a, __m128i b)
{
	__m128i pe = _mm_clmulepi64_si128(a, b, 0x00), po = _mm_clmulepi64_si128(a, b, 0x11);
	__m128i lo = _mm_unpacklo_epi64(pe, po), hi = _mm_unpackhi_epi64(pe, po);
	const __m128i fold = _mm_setr_epi8(0, 1, 3, 2, 6, 7, 5, 4, 13, 12, 14, 15, 11, 10, 8, 9);

	/* as gf64_reduce, the top-nibble fold by table (see mul4) */
	hi = _mm_xor_si128(hi, _mm_shuffle_epi8(fold, _mm_srli_epi64(hi, 60)));
	hi = _mm_xor_si128(hi, _mm_slli_epi64(hi, 1));
	return _mm_xor_si128(lo, _mm_xor_si128(hi, _mm_slli_epi64(hi, 3)));
}

/* Four products: lanes (0, 2) from the even, (1, 3) from the odd clmul. */
__attribute__((target("vpclmulqdq,avx2,pclmul"))) static inline __m256i mul4(__m256i a, __m256i b)
{
	__m256i pe = _mm256_clmulepi64_epi128(a, b, 0x00);
	__m256i po = _mm256_clmulepi64_epi128(a, b, 0x11);
	__m256i lo = _mm256_unpacklo_epi64(pe, po), hi = _mm256_unpackhi_epi64(pe, po);
	/* hi >> 60 + hi >> 61 + hi >> 63 depends on the top nibble v only:
	 * v + v >> 1 + v >> 3, looked up (the other bytes index entry 0 = 0) */
	const __m256i fold = _mm256_setr_epi8(0, 1, 3, 2, 6, 7, 5, 4, 13, 12, 14, 15, 11, 10, 8, 9,
					      0, 1, 3, 2, 6, 7, 5, 4, 13, 12, 14, 15, 11, 10, 8, 9);

	hi = _mm256_xor_si256(hi, _mm256_shuffle_epi8(fold, _mm256_srli_epi64(hi, 60)));
	/* hi g mod x^64 with g = (1 + x)(1 + x^3) */
	hi = _mm256_xor_si256(hi, _mm256_slli_epi64(hi, 1));
	return _mm256_xor_si256(lo, _mm256_xor_si256(hi, _mm256_slli_epi64(hi, 3)));
}

__attribute__((target("pclmul,sse4.1"))) static uint64_t gf64_mul_clmul(uint64_t a, uint64_t b)
{
	return (uint64_t)_mm_cvtsi128_si64(
		mul2(_mm_cvtsi64_si128((long long)a), _mm_cvtsi64_si128((long long)b)));
}

__attribute__((target("vpclmulqdq,avx2,pclmul"))) static uint64_t gf64_mul_vclmul(uint64_t a,
										uint64_t b)
{
	__m256i r = mul4(_mm256_set_epi64x(0, 0, 0, (long long)a),
			 _mm256_set_epi64x(0, 0, 0, (long long)b));

	return (uint64_t)_mm256_extract_epi64(r, 0);
}
#endif

uint64_t qw_tpz_gf64_mul(uint64_t a, uint64_t b, int level)
{
#ifdef QW_HAVE_X86
	if (level >= 2)
		return gf64_mul_vclmul(a, b);
	if (level == 1)
		return gf64_mul_clmul(a, b);
#endif
	(void)level;
	return gf64_mul_portable(a, b);
}

/* ---- set-up: Cantor basis, twiddles, small conversion matrices ---------- */

/* A solution x of x^2 + x = a (x and x + 1 both are; take the one with
 * bit 0 clear), by Gaussian elimination on the GF(2)-linear map
 * x -> x^2 + x; returns 0 with *x set, -1 when there is none (Tr(a) = 1). */
static int solve_artin_schreier(uint64_t a, uint64_t *x)
{
	uint64_t rows[64], col[64], sol = 0;
	unsigned rhs[64], pivot_col[64], rank = 0;

	for (unsigned j = 0; j < 64; j++)
		col[j] = gf64_mul_portable((uint64_t)1 << j, (uint64_t)1 << j) ^ ((uint64_t)1 << j);
	for (unsigned r = 0; r < 64; r++) {
		rows[r] = 0;
		for (unsigned j = 0; j < 64; j++)
			rows[r] |= ((col[j] >> r) & 1) << j;
		rhs[r] = (unsigned)(a >> r) & 1;
	}
	/* Gauss-Jordan; column 0 is zero (1 maps to 0), so x_0 stays 0. */
	for (unsigned j = 0; j < 64 && rank < 64; j++) {
		unsigned p = rank;

		while (p < 64 && !((rows[p] >> j) & 1))
			p++;
		if (p == 64)
			continue;
		if (p != rank) {
			uint64_t t = rows[p];
			unsigned tb = rhs[p];

			rows[p] = rows[rank];
			rhs[p] = rhs[rank];
			rows[rank] = t;
			rhs[rank] = tb;
		}
		for (unsigned r = 0; r < 64; r++)
			if (r != rank && ((rows[r] >> j) & 1)) {
				rows[r] ^= rows[rank];
				rhs[r] ^= rhs[rank];
			}
		pivot_col[rank++] = j;
	}
	for (unsigned r = rank; r < 64; r++)
		if (rhs[r])
			return -1;
	for (unsigned r = 0; r < rank; r++)
		sol |= (uint64_t)rhs[r] << pivot_col[r];
	*x = sol;
	return 0;
}

static unsigned split_pow2(unsigned k);

static int record_xor(unsigned k, size_t d, size_t src, size_t n)
{
	if (conv_nops[k] == CONV_MAXOPS)
		return -1;
	conv_ops[k][conv_nops[k]++] = (struct xor_op){ (uint16_t)d, (uint16_t)src, (uint16_t)n };
	return 0;
}

/* The XOR runs of taylor() and conv_rec() below on element offsets, for
 * the small base conversions. */
static int record_taylor(unsigned k, size_t off, size_t n, size_t tau, size_t w)
{
	size_t d;

	if (n <= tau)
		return 0;
	d = n / (2 * tau);
	if (record_xor(k, off + tau * d * w, off + (2 * tau - 1) * d * w, d * w) ||
	    record_xor(k, off + d * w, off + tau * d * w, (tau - 1) * d * w))
		return -1;
	return record_taylor(k, off, n / 2, tau, w) || record_taylor(k, off + n / 2 * w, n / 2, tau, w);
}

static int record_conv(unsigned k, size_t off, size_t w, unsigned kk)
{
	unsigned a;
	size_t tau;

	if (kk <= 1)
		return 0;
	a = split_pow2(kk);
	tau = (size_t)1 << a;
	if (record_taylor(k, off, (size_t)1 << kk, tau, w) || record_conv(k, off, tau * w, kk - a))
		return -1;
	for (size_t r = 0; r < ((size_t)1 << (kk - a)); r++)
		if (record_conv(k, off + r * tau * w, w, a))
			return -1;
	return 0;
}

static int setup_ok;

static void ws_destroy(void *v)
{
	struct workspace *ws = v;

	if (ws)
		free_words(ws->p, 0); /* wiped after each use */
	free(ws);
}

static void setup(void)
{
	if (pthread_key_create(&ws_key, ws_destroy))
		return;
#ifdef QW_HAVE_X86
	have_avx2 = __builtin_cpu_supports("avx2");
#endif
	cantor[0] = 1;
	for (unsigned i = 1; i < 64; i++)
		if (solve_artin_schreier(cantor[i - 1], &cantor[i]))
			return; /* cannot happen in GF(2^64); setup_ok stays 0 */
	for (unsigned b = 0; b < 4; b++)
		for (unsigned v = 0; v < 256; v++) {
			uint64_t o = 0;

			for (unsigned i = 0; i < 8; i++)
				if ((v >> i) & 1)
					o ^= cantor[8 * b + i];
			omega_tab[b][v] = o;
		}
	for (unsigned k = 2; k <= CONV_BASE; k++)
		if (record_conv(k, 0, 1, k))
			return;
	setup_ok = 1;
}

static int ensure_setup(void)
{
	if (pthread_once(&setup_once, setup))
		return QW_ENOMEM;
	return setup_ok ? 0 : QW_ENOMEM;
}

static uint64_t omega(uint64_t u)
{
	return omega_tab[0][u & 255] ^ omega_tab[1][(u >> 8) & 255] ^
	       omega_tab[2][(u >> 16) & 255] ^ omega_tab[3][(u >> 24) & 255];
}

uint64_t qw_tpz_omega(uint64_t u)
{
	if (ensure_setup())
		return 0;
	return omega(u);
}

/* ---- monomial <-> novel basis ------------------------------------------- */

#ifdef QW_HAVE_X86
__attribute__((target("avx2"))) static void xor_run_avx2(uint64_t *restrict d,
							  const uint64_t *restrict s, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		__m256i *pd = (__m256i *)(void *)(d + i);
		const __m256i *ps = (const __m256i *)(const void *)(s + i);

		_mm256_storeu_si256(pd, _mm256_xor_si256(_mm256_loadu_si256(pd),
							 _mm256_loadu_si256(ps)));
		_mm256_storeu_si256(pd + 1, _mm256_xor_si256(_mm256_loadu_si256(pd + 1),
							     _mm256_loadu_si256(ps + 1)));
	}
	for (; i < n; i++)
		d[i] ^= s[i];
}
#endif

/* d[i] ^= s[i], i < n (the ranges never overlap) */
static void xor_run(uint64_t *restrict d, const uint64_t *restrict s, size_t n)
{
#ifdef QW_HAVE_X86
	if (n >= 8 && have_avx2) {
		xor_run_avx2(d, s, n);
		return;
	}
#endif
	for (size_t i = 0; i < n; i++)
		d[i] ^= s[i];
}

/* f (n elements of w words, n a power of two) = sum_p T_p Y^p with
 * Y = y^tau + y and deg T_p < tau, T_p left in elements [p tau, p tau +
 * tau). Split f = A + y^(tau D) B (n = 2 tau D, deg A, B < tau D) and B =
 * B0 + y^((tau-1) D) B1 (deg B1 < D). Since Y^D = y^(tau D) + y^D,
 *   f = (A + y^D (B0 + B1)) + Y^D (B + B1),
 * both parts of degree < tau D: two runs of XORs, then recurse. Elements
 * from len on are zero (and stay zero: every step is triangular), which
 * skips the runs and halves that read only zeros. */
static size_t min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

static void taylor_runs(uint64_t *f, size_t n, size_t tau, size_t w, size_t len)
{
	size_t d = n / (2 * tau);

	if (len > (2 * tau - 1) * d)
		xor_run(f + tau * d * w, f + (2 * tau - 1) * d * w,
			min_size(d, len - (2 * tau - 1) * d) * w);
	if (len > tau * d)
		xor_run(f + d * w, f + tau * d * w, min_size((tau - 1) * d, len - tau * d) * w);
}

static void taylor(uint64_t *f, size_t n, size_t tau, size_t w, size_t len)
{
	if (n <= tau || len == 0)
		return;
	taylor_runs(f, n, tau, w, len);
	taylor(f, n / 2, tau, w, min_size(len, n / 2));
	if (len > n / 2)
		taylor(f + n / 2 * w, n / 2, tau, w, len - n / 2);
}

static void itaylor(uint64_t *f, size_t n, size_t tau, size_t w, size_t len)
{
	size_t d;

	if (n <= tau || len == 0)
		return;
	d = n / (2 * tau);
	itaylor(f, n / 2, tau, w, min_size(len, n / 2));
	if (len > n / 2)
		itaylor(f + n / 2 * w, n / 2, tau, w, len - n / 2);
	/* the two runs again, in the opposite order */
	if (len > tau * d)
		xor_run(f + d * w, f + tau * d * w, min_size((tau - 1) * d, len - tau * d) * w);
	if (len > (2 * tau - 1) * d)
		xor_run(f + tau * d * w, f + (2 * tau - 1) * d * w,
			min_size(d, len - (2 * tau - 1) * d) * w);
}

static void apply_ops(uint64_t *f, unsigned k, size_t w, int inv)
{
	const struct xor_op *op = conv_ops[k];
	unsigned n = conv_nops[k];

	if (w == 1) {
		for (unsigned i = 0; i < n; i++) {
			const struct xor_op *o = inv ? &op[n - 1 - i] : &op[i];

			for (unsigned j = 0; j < o->n; j++)
				f[o->d + j] ^= f[o->s + j];
		}
		return;
	}
	for (unsigned i = 0; i < n; i++) {
		const struct xor_op *o = inv ? &op[n - 1 - i] : &op[i];

		xor_run(f + o->d * w, f + o->s * w, o->n * w);
	}
}

/* The 16-coefficient conversion (the bottom of every recursion) written
 * out: the XOR runs conv_rec records for k = 4 (setup() records them too;
 * the tests check the transforms against direct evaluation). */
static void conv16(uint64_t *f, size_t w, int inv)
{
	for (size_t q = 0; q < w; q++) {
		uint64_t x[16];

		for (unsigned i = 0; i < 16; i++)
			x[i] = f[i * w + q];
		if (!inv) {
			x[8] ^= x[14]; x[9] ^= x[15]; x[2] ^= x[8]; x[3] ^= x[9]; x[4] ^= x[10]; x[5] ^= x[11];
			x[6] ^= x[12]; x[7] ^= x[13]; x[4] ^= x[7]; x[1] ^= x[4]; x[2] ^= x[5]; x[3] ^= x[6];
			x[12] ^= x[15]; x[9] ^= x[12]; x[10] ^= x[13]; x[11] ^= x[14]; x[8] ^= x[12];
			x[9] ^= x[13]; x[10] ^= x[14]; x[11] ^= x[15]; x[4] ^= x[8]; x[5] ^= x[9];
			x[6] ^= x[10]; x[7] ^= x[11]; x[2] ^= x[3]; x[1] ^= x[2]; x[6] ^= x[7]; x[5] ^= x[6];
			x[10] ^= x[11]; x[9] ^= x[10]; x[14] ^= x[15]; x[13] ^= x[14];
		} else {
			x[13] ^= x[14]; x[14] ^= x[15]; x[9] ^= x[10]; x[10] ^= x[11]; x[5] ^= x[6];
			x[6] ^= x[7]; x[1] ^= x[2]; x[2] ^= x[3]; x[4] ^= x[8]; x[5] ^= x[9]; x[6] ^= x[10];
			x[7] ^= x[11]; x[8] ^= x[12]; x[9] ^= x[13]; x[10] ^= x[14]; x[11] ^= x[15];
			x[9] ^= x[12]; x[10] ^= x[13]; x[11] ^= x[14]; x[12] ^= x[15]; x[1] ^= x[4];
			x[2] ^= x[5]; x[3] ^= x[6]; x[4] ^= x[7]; x[2] ^= x[8]; x[3] ^= x[9]; x[4] ^= x[10];
			x[5] ^= x[11]; x[6] ^= x[12]; x[7] ^= x[13]; x[8] ^= x[14]; x[9] ^= x[15];
		}
		for (unsigned i = 0; i < 16; i++)
			f[i * w + q] = x[i];
	}
}

static unsigned split_pow2(unsigned k)
{
	unsigned a = 1;

	while (2 * a < k)
		a *= 2;
	return a;
}

/* 2^k elements of w words each, from monomial to novel coefficients;
 * elements from len on are zero. The novel basis is triangular (deg X_j =
 * j), so they stay zero, and so do the rows of the Taylor expansion past
 * ceil(len / tau). */
static void conv_rec(uint64_t *f, unsigned k, size_t w, size_t len)
{
	unsigned a;
	size_t tau, rows;

	if (k <= 1 || len == 0)
		return;
	if (k == 4 && w == 1) {
		conv16(f, w, 0);
		return;
	}
	if (k <= CONV_BASE) {
		apply_ops(f, k, w, 0);
		return;
	}
	a = split_pow2(k);
	tau = (size_t)1 << a;
	rows = (len + tau - 1) >> a;
	taylor(f, (size_t)1 << k, tau, w, len);
	conv_rec(f, k - a, tau * w, rows);
	for (size_t r = 0; r < rows; r++)
		conv_rec(f + r * tau * w, a, w, tau);
}

static void iconv_rec(uint64_t *f, unsigned k, size_t w, size_t len)
{
	unsigned a;
	size_t tau, rows;

	if (k <= 1 || len == 0)
		return;
	if (k == 4 && w == 1) {
		conv16(f, w, 1);
		return;
	}
	if (k <= CONV_BASE) {
		apply_ops(f, k, w, 1);
		return;
	}
	a = split_pow2(k);
	tau = (size_t)1 << a;
	rows = (len + tau - 1) >> a;
	for (size_t r = 0; r < rows; r++)
		iconv_rec(f + r * tau * w, a, w, tau);
	iconv_rec(f, k - a, tau * w, rows);
	itaylor(f, (size_t)1 << k, tau, w, len);
}

int qw_tpz_to_novel(uint64_t *f, unsigned logn)
{
	int ret = ensure_setup();

	if (ret)
		return ret;
	conv_rec(f, logn, 1, (size_t)1 << logn);
	return 0;
}

int qw_tpz_from_novel(uint64_t *f, unsigned logn)
{
	int ret = ensure_setup();

	if (ret)
		return ret;
	iconv_rec(f, logn, 1, (size_t)1 << logn);
	return 0;
}

/* ---- the transform ------------------------------------------------------ */

/* One butterfly run: lo, hi of h elements, twiddle c. */
static void bfly_portable(uint64_t *lo, uint64_t *hi, size_t h, uint64_t c, int inv)
{
	for (size_t j = 0; j < h; j++) {
		if (inv) {
			hi[j] ^= lo[j];
			lo[j] ^= gf64_mul_portable(hi[j], c);
		} else {
			lo[j] ^= gf64_mul_portable(hi[j], c);
			hi[j] ^= lo[j];
		}
	}
}

#ifdef QW_HAVE_X86
__attribute__((target("pclmul,sse4.1"))) static void bfly_clmul(uint64_t *lo, uint64_t *hi,
								size_t h, uint64_t c, int inv)
{
	__m128i cc = _mm_set1_epi64x((long long)c);
	size_t j = 0;

	for (; j + 2 <= h; j += 2) {
		__m128i *pl = (__m128i *)(void *)(lo + j), *ph = (__m128i *)(void *)(hi + j);
		__m128i l = _mm_loadu_si128(pl), u = _mm_loadu_si128(ph);

		if (inv) {
			u = _mm_xor_si128(u, l);
			l = _mm_xor_si128(l, mul2(u, cc));
		} else {
			l = _mm_xor_si128(l, mul2(u, cc));
			u = _mm_xor_si128(u, l);
		}
		_mm_storeu_si128(pl, l);
		_mm_storeu_si128(ph, u);
	}
	for (; j < h; j++) {
		if (inv) {
			hi[j] ^= lo[j];
			lo[j] ^= gf64_mul_clmul(hi[j], c);
		} else {
			lo[j] ^= gf64_mul_clmul(hi[j], c);
			hi[j] ^= lo[j];
		}
	}
}

__attribute__((target("vpclmulqdq,avx2,pclmul"))) static void
bfly_vclmul(uint64_t *lo, uint64_t *hi, size_t h, uint64_t c, int inv)
{
	__m256i cc = _mm256_set1_epi64x((long long)c);
	size_t j = 0;

	if (h < 4) {
		bfly_clmul(lo, hi, h, c, inv);
		return;
	}
	if (c == 0) { /* the first block of every level: t = 0 */
		for (; j < h; j += 4) {
			__m256i *pl = (__m256i *)(void *)(lo + j), *ph = (__m256i *)(void *)(hi + j);

			_mm256_storeu_si256(ph, _mm256_xor_si256(_mm256_loadu_si256(ph),
								 _mm256_loadu_si256(pl)));
		}
		return;
	}
	for (; j < h; j += 4) {
		__m256i *pl = (__m256i *)(void *)(lo + j), *ph = (__m256i *)(void *)(hi + j);
		__m256i l = _mm256_loadu_si256(pl), u = _mm256_loadu_si256(ph);

		if (inv) {
			u = _mm256_xor_si256(u, l);
			l = _mm256_xor_si256(l, mul4(u, cc));
		} else {
			l = _mm256_xor_si256(l, mul4(u, cc));
			u = _mm256_xor_si256(u, l);
		}
		_mm256_storeu_si256(pl, l);
		_mm256_storeu_si256(ph, u);
	}
}

/* Levels 1 and 0 over n elements (n a multiple of 8) whose first level-1
 * block is t1 (level-0 block 2 t1): two blocks per vector. */
__attribute__((target("vpclmulqdq,avx2,pclmul"))) static void
low_levels_vclmul(uint64_t *f, size_t n, uint64_t t1, int inv)
{
	__m256i d1 = _mm256_set_epi64x((long long)omega(2), (long long)omega(2), 0, 0);
	__m256i d0 = _mm256_set_epi64x((long long)omega(6), (long long)omega(2),
				       (long long)omega(4), 0);

	for (size_t i = 0; i < n; i += 8, t1 += 2) {
		__m256i *p = (__m256i *)(void *)(f + i);
		__m256i a = _mm256_loadu_si256(p), b = _mm256_loadu_si256(p + 1);
		/* level 1: blocks t1, t1 + 1 of 4 elements; t1 even */
		__m256i c1 = _mm256_xor_si256(_mm256_set1_epi64x((long long)omega(2 * t1)), d1);
		/* level 0: blocks 2 t1 .. 2 t1 + 3 of 2 elements, lanes ordered
		 * (0, 2, 1, 3) by the unpacks */
		__m256i c0 = _mm256_xor_si256(_mm256_set1_epi64x((long long)omega(4 * t1)), d0);
		__m256i lo, hi;

		if (!inv) {
			lo = _mm256_permute2x128_si256(a, b, 0x20);
			hi = _mm256_permute2x128_si256(a, b, 0x31);
			lo = _mm256_xor_si256(lo, mul4(hi, c1));
			hi = _mm256_xor_si256(hi, lo);
			a = _mm256_permute2x128_si256(lo, hi, 0x20);
			b = _mm256_permute2x128_si256(lo, hi, 0x31);
			lo = _mm256_unpacklo_epi64(a, b);
			hi = _mm256_unpackhi_epi64(a, b);
			lo = _mm256_xor_si256(lo, mul4(hi, c0));
			hi = _mm256_xor_si256(hi, lo);
			a = _mm256_unpacklo_epi64(lo, hi);
			b = _mm256_unpackhi_epi64(lo, hi);
		} else {
			lo = _mm256_unpacklo_epi64(a, b);
			hi = _mm256_unpackhi_epi64(a, b);
			hi = _mm256_xor_si256(hi, lo);
			lo = _mm256_xor_si256(lo, mul4(hi, c0));
			a = _mm256_unpacklo_epi64(lo, hi);
			b = _mm256_unpackhi_epi64(lo, hi);
			lo = _mm256_permute2x128_si256(a, b, 0x20);
			hi = _mm256_permute2x128_si256(a, b, 0x31);
			hi = _mm256_xor_si256(hi, lo);
			lo = _mm256_xor_si256(lo, mul4(hi, c1));
			a = _mm256_permute2x128_si256(lo, hi, 0x20);
			b = _mm256_permute2x128_si256(lo, hi, 0x31);
		}
		_mm256_storeu_si256(p, a);
		_mm256_storeu_si256(p + 1, b);
	}
}
#endif

static void bfly(uint64_t *lo, uint64_t *hi, size_t h, uint64_t c, int inv, int level)
{
#ifdef QW_HAVE_X86
	if (level >= 2) {
		bfly_vclmul(lo, hi, h, c, inv);
		return;
	}
	if (level == 1) {
		bfly_clmul(lo, hi, h, c, inv);
		return;
	}
#endif
	(void)level;
	bfly_portable(lo, hi, h, c, inv);
}

#ifdef QW_HAVE_X86
/* Levels top and top - 1 of a block of 4q elements in one sweep (one pass
 * over memory instead of two): quarters a, b, c, d; level top pairs (a, c)
 * and (b, d) with twiddle c_t, level top - 1 pairs (a, b) with c_2t and
 * (c, d) with c_(2t+1). */
__attribute__((target("vpclmulqdq,avx2,pclmul"))) static void
radix4_vclmul(uint64_t *f, size_t q, uint64_t t, int inv)
{
	uint64_t o4 = omega(4 * t);
	__m256i w0 = _mm256_set1_epi64x((long long)omega(2 * t));
	__m256i w1 = _mm256_set1_epi64x((long long)o4);
	__m256i w2 = _mm256_set1_epi64x((long long)(o4 ^ cantor[1])); /* omega(4 t + 2) */

	for (size_t j = 0; j < q; j += 4) {
		__m256i *pa = (__m256i *)(void *)(f + j), *pb = (__m256i *)(void *)(f + q + j);
		__m256i *pc = (__m256i *)(void *)(f + 2 * q + j);
		__m256i *pd = (__m256i *)(void *)(f + 3 * q + j);
		__m256i a = _mm256_loadu_si256(pa), b = _mm256_loadu_si256(pb);
		__m256i c = _mm256_loadu_si256(pc), d = _mm256_loadu_si256(pd);

		if (!inv) {
			a = _mm256_xor_si256(a, mul4(c, w0));
			c = _mm256_xor_si256(c, a);
			b = _mm256_xor_si256(b, mul4(d, w0));
			d = _mm256_xor_si256(d, b);
			a = _mm256_xor_si256(a, mul4(b, w1));
			b = _mm256_xor_si256(b, a);
			c = _mm256_xor_si256(c, mul4(d, w2));
			d = _mm256_xor_si256(d, c);
		} else {
			b = _mm256_xor_si256(b, a);
			a = _mm256_xor_si256(a, mul4(b, w1));
			d = _mm256_xor_si256(d, c);
			c = _mm256_xor_si256(c, mul4(d, w2));
			c = _mm256_xor_si256(c, a);
			a = _mm256_xor_si256(a, mul4(c, w0));
			d = _mm256_xor_si256(d, b);
			b = _mm256_xor_si256(b, mul4(d, w0));
		}
		_mm256_storeu_si256(pa, a);
		_mm256_storeu_si256(pb, b);
		_mm256_storeu_si256(pc, c);
		_mm256_storeu_si256(pd, d);
	}
}
#endif

#ifdef QW_HAVE_X86
/* block_levels() with the vector kernels: levels top .. 2 two at a time
 * (radix4_vclmul; an odd count starts with one single level), then 1 and 0
 * together (low_levels_vclmul); the inverse in the opposite order. */
static void block_levels_vclmul(uint64_t *f, unsigned top, uint64_t t, int inv)
{
	int single = (top - 1) & 1;
	unsigned hi_pair = single ? top - 1 : top;

	if (!inv) {
		if (single)
			bfly_vclmul(f, f + ((size_t)1 << top), (size_t)1 << top, omega(2 * t), 0);
		for (unsigned i = hi_pair; i >= 3; i -= 2) {
			size_t q = (size_t)1 << (i - 1), nb = (size_t)1 << (top - i);

			for (size_t b = 0; b < nb; b++)
				radix4_vclmul(f + 4 * q * b, q, (t << (top - i)) + b, 0);
		}
		low_levels_vclmul(f, (size_t)2 << top, t << (top - 1), 0);
		return;
	}
	low_levels_vclmul(f, (size_t)2 << top, t << (top - 1), 1);
	for (unsigned i = 3; i <= hi_pair; i += 2) {
		size_t q = (size_t)1 << (i - 1), nb = (size_t)1 << (top - i);

		for (size_t b = 0; b < nb; b++)
			radix4_vclmul(f + 4 * q * b, q, (t << (top - i)) + b, 1);
	}
	if (single)
		bfly_vclmul(f, f + ((size_t)1 << top), (size_t)1 << top, omega(2 * t), 1);
}
#endif

/* Levels top .. 0 (forward) or 0 .. top (inverse) of the block of 2^(top+1)
 * elements at f whose level-top index is t, entirely in cache. */
static void block_levels(uint64_t *f, unsigned top, uint64_t t, int inv, int level)
{
#ifdef QW_HAVE_X86
	if (level >= 2 && top >= 2) {
		block_levels_vclmul(f, top, t, inv);
		return;
	}
#endif
	if (inv) {
		for (int i = 0; i <= (int)top; i++) {
			size_t h = (size_t)1 << i, nb = (size_t)1 << (top - (unsigned)i);

			for (size_t b = 0; b < nb; b++)
				bfly(f + 2 * h * b, f + 2 * h * b + h, h,
				     omega(2 * ((t << (top - (unsigned)i)) + b)), 1, level);
		}
		return;
	}
	for (int i = (int)top; i >= 0; i--) {
		size_t h = (size_t)1 << i, nb = (size_t)1 << (top - (unsigned)i);

		for (size_t b = 0; b < nb; b++)
			bfly(f + 2 * h * b, f + 2 * h * b + h, h,
			     omega(2 * ((t << (top - (unsigned)i)) + b)), 0, level);
	}
}

/* Depth first above the cache size: the top level (or two) over the whole
 * block, then each part. Forward only: elements from len on are zero; while
 * the upper half is zero the butterfly is a copy (f1 = 0: f0 stays, f1
 * becomes f0). */
static void fft_rec(uint64_t *f, unsigned top, uint64_t t, int inv, int level, size_t len)
{
	size_t h = (size_t)1 << top;

	if (top + 1 <= FFT_CACHE_LOG) {
		block_levels(f, top, t, inv, level);
		return;
	}
	if (!inv && len <= h) {
		memcpy(f + h, f, h * sizeof(*f));
		fft_rec(f, top - 1, 2 * t, 0, level, len);
		fft_rec(f + h, top - 1, 2 * t + 1, 0, level, len);
		return;
	}
#ifdef QW_HAVE_X86
	if (level >= 2 && top >= FFT_CACHE_LOG) {
		/* both levels top, top - 1 out of cache: fuse them */
		size_t q = h / 2;

		if (!inv)
			radix4_vclmul(f, q, t, 0);
		for (unsigned i = 0; i < 4; i++)
			fft_rec(f + i * q, top - 2, 4 * t + i, inv, level, 2 * q);
		if (inv)
			radix4_vclmul(f, q, t, 1);
		return;
	}
#endif
	if (!inv)
		bfly(f, f + h, h, omega(2 * t), 0, level);
	fft_rec(f, top - 1, 2 * t, inv, level, h);
	fft_rec(f + h, top - 1, 2 * t + 1, inv, level, h);
	if (inv)
		bfly(f, f + h, h, omega(2 * t), 1, level);
}

int qw_tpz_fft(uint64_t *f, unsigned logn, int level)
{
	int ret = ensure_setup();

	if (ret)
		return ret;
	if (logn >= 1)
		fft_rec(f, logn - 1, 0, 0, level, (size_t)1 << logn);
	return 0;
}

int qw_tpz_ifft(uint64_t *f, unsigned logn, int level)
{
	int ret = ensure_setup();

	if (ret)
		return ret;
	if (logn >= 1)
		fft_rec(f, logn - 1, 0, 1, level, (size_t)1 << logn);
	return 0;
}

#ifdef QW_HAVE_X86
__attribute__((target("vpclmulqdq,avx2,pclmul"))) static size_t
pointwise_vclmul(uint64_t *a, const uint64_t *b, size_t n)
{
	size_t i = 0;

	for (; i + 4 <= n; i += 4) {
		__m256i *pa = (__m256i *)(void *)(a + i);
		__m256i vb = _mm256_loadu_si256((const __m256i *)(const void *)(b + i));

		_mm256_storeu_si256(pa, mul4(_mm256_loadu_si256(pa), vb));
	}
	return i;
}
#endif

/* a[i] = a[i] b[i] */
static void pointwise(uint64_t *a, const uint64_t *b, size_t n, int level)
{
	size_t i = 0;

#ifdef QW_HAVE_X86
	if (level >= 2)
		i = pointwise_vclmul(a, b, n);
#endif
	for (; i < n; i++)
		a[i] = qw_tpz_gf64_mul(a[i], b[i], level);
}

/* ---- products ----------------------------------------------------------- */

/* Chunk j (32 bits) of the bit string p of nbits bits. */
static void load_chunks(uint64_t *f, size_t n, const uint64_t *p, size_t nbits)
{
	size_t nc = (nbits + 31) / 32;

	for (size_t j = 0; j < nc; j++)
		f[j] = (p[j / 2] >> (32 * (j & 1))) & 0xffffffffu;
	if (nc && (nbits & 31))
		f[nc - 1] &= ((uint64_t)1 << (nbits & 31)) - 1;
	memset(f + nc, 0, (n - nc) * sizeof(*f));
}

/* Word w of sum_j c_j x^(32 j), c of nc coefficients. */
static uint64_t product_word(const uint64_t *c, size_t nc, size_t w)
{
	uint64_t v = 0;

	if (2 * w < nc)
		v ^= c[2 * w];
	if (2 * w + 1 < nc)
		v ^= c[2 * w + 1] << 32;
	if (w > 0 && 2 * w - 1 < nc)
		v ^= c[2 * w - 1] >> 32;
	return v;
}

/* out (ceil(nbits / 64) words) = bits [off, off + nbits) of the product. */
static void fold_range(const uint64_t *c, size_t nc, size_t off, size_t nbits, uint64_t *out)
{
	size_t nw = (nbits + 63) / 64, w0 = off / 64;
	unsigned sh = (unsigned)(off & 63);

	for (size_t q = 0; q < nw; q++) {
		uint64_t v = product_word(c, nc, w0 + q) >> sh;

		if (sh)
			v |= product_word(c, nc, w0 + q + 1) << (64 - sh);
		out[q] = v;
	}
	if (nbits & 63)
		out[nw - 1] &= ((uint64_t)1 << (nbits & 63)) - 1;
}

static unsigned log2_ceil(size_t n)
{
	unsigned k = 0;

	while (((size_t)1 << k) < n)
		k++;
	return k;
}

/* a (seed side) and b (key side) are loaded by the caller into A, B of
 * 2^k words, nonzero below la and lb; on return A holds the product's
 * chunk coefficients, zero from la + lb - 1 on. */
static int mul_core(uint64_t *A, size_t la, uint64_t *B, size_t lb, unsigned k, int level)
{
	int ret = ensure_setup();

	if (ret)
		return ret;
	conv_rec(A, k, 1, la);
	fft_rec(A, k - 1, 0, 0, level, la);
	conv_rec(B, k, 1, lb);
	fft_rec(B, k - 1, 0, 0, level, lb);
	pointwise(A, B, (size_t)1 << k, level);
	fft_rec(A, k - 1, 0, 1, level, (size_t)1 << k);
	iconv_rec(A, k, 1, la + lb - 1);
	return 0;
}

static uint64_t *alloc_words(size_t n)
{
	size_t bytes = n * sizeof(uint64_t);
	uint64_t *p;

	if (bytes < HUGE_BYTES)
		return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
	/* Large transforms stride over the whole array: 2 MiB pages cut the
	 * page faults and TLB misses (a hint; ignored where unsupported). */
	bytes = (bytes + HUGE_BYTES - 1) & ~(HUGE_BYTES - 1);
	p = aligned_alloc(HUGE_BYTES, bytes);
#ifdef MADV_HUGEPAGE
	if (p)
		(void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
	return p;
}

/* The calling thread's workspace of at least n words, or NULL. */
static uint64_t *ws_get(size_t n)
{
	struct workspace *ws = pthread_getspecific(ws_key);

	if (!ws) {
		ws = calloc(1, sizeof(*ws));
		if (!ws || pthread_setspecific(ws_key, ws)) {
			free(ws);
			return NULL;
		}
	}
	if (ws->words < n) {
		free(ws->p);
		ws->words = 0;
		ws->p = alloc_words(n);
		if (!ws->p)
			return NULL;
		ws->words = n;
	}
	return ws->p;
}

void qw_toeplitz_release(void)
{
	struct workspace *ws;

	if (ensure_setup())
		return;
	ws = pthread_getspecific(ws_key);
	if (ws) {
		free(ws->p);
		ws->p = NULL;
		ws->words = 0;
	}
}

static void free_words(uint64_t *p, size_t n)
{
	if (p)
		qw_wipe(p, n * sizeof(*p));
	free(p);
}

/* The product of a (abits) and b (bbits): chunk coefficients left in
 * *A (2^k words, caller frees with free_words). */
static int product(const uint64_t *a, size_t abits, const uint64_t *b, size_t bbits,
		   uint64_t **pa, size_t *nc, unsigned *pk, int level)
{
	size_t na = (abits + 31) / 32, nb = (bbits + 31) / 32, n;
	uint64_t *A = NULL, *B = NULL;
	unsigned k;
	int ret;

	if (na == 0 || nb == 0)
		return QW_EINVAL;
	*nc = na + nb - 1;
	k = log2_ceil(*nc);
	if (k < 3)
		k = 3; /* the vector kernels work on 8 elements */
	if (k > QW_TPZ_FFT_MAXLOG)
		return QW_EINVAL;
	n = (size_t)1 << k;
	ret = QW_ENOMEM;
	A = alloc_words(n);
	B = alloc_words(n);
	if (!A || !B)
		goto out;
	load_chunks(A, n, a, abits);
	load_chunks(B, n, b, bbits);
	ret = mul_core(A, na, B, nb, k, level);
	if (ret)
		goto out;
	*pa = A;
	*pk = k;
	A = NULL;
out:
	free_words(A, n);
	free_words(B, n);
	return ret;
}

int qw_tpz_fft_mul(uint64_t *c, const uint64_t *a, size_t abits, const uint64_t *b, size_t bbits,
		   int level)
{
	uint64_t *A = NULL;
	size_t nc;
	unsigned k;
	int ret = product(a, abits, b, bbits, &A, &nc, &k, level);

	if (ret)
		return ret;
	fold_range(A, nc, 0, abits + bbits, c);
	free_words(A, (size_t)1 << k);
	return 0;
}

/* Bits [off, off + 64) of the string w (nw words), zero outside it; off
 * may be negative. */
static uint64_t bits64_at(const uint64_t *w, size_t nw, long long off)
{
	size_t q;
	unsigned sh;
	uint64_t v;

	if (off <= -64)
		return 0;
	if (off < 0)
		return nw ? w[0] << (unsigned)(-off) : 0;
	q = (size_t)off >> 6;
	sh = (unsigned)(off & 63);
	if (q >= nw)
		return 0;
	v = w[q] >> sh;
	if (sh && q + 1 < nw)
		v |= w[q + 1] << (64 - sh);
	return v;
}

/* f (2^k words) = 32-bit chunks of bits [off, off + len) of w. */
static void load_segment(uint64_t *f, size_t n, const uint64_t *w, size_t nw, long long off,
			 size_t len)
{
	size_t nc = (len + 31) / 32, c = 0;

	if (off >= 0 && !(off & 63)) { /* word aligned: no shifts */
		size_t q0 = (size_t)off >> 6;

		for (; c + 2 <= nc && q0 + c / 2 < nw; c += 2) {
			uint64_t v = w[q0 + c / 2];

			f[c] = v & 0xffffffffu;
			f[c + 1] = v >> 32;
		}
	}
	for (; c + 2 <= nc; c += 2) {
		uint64_t v = bits64_at(w, nw, off + 32 * (long long)c);

		f[c] = v & 0xffffffffu;
		f[c + 1] = v >> 32;
	}
	if (c < nc)
		f[c] = bits64_at(w, nw, off + 32 * (long long)c) & 0xffffffffu;
	if (len & 31)
		f[nc - 1] &= ((uint64_t)1 << (len & 31)) - 1;
	memset(f + nc, 0, (n - nc) * sizeof(*f));
}

#ifdef QW_HAVE_X86
__attribute__((target("vpclmulqdq,avx2,pclmul"))) static size_t
mul_acc_vclmul(uint64_t *acc, const uint64_t *a, const uint64_t *b, size_t n)
{
	size_t i = 0;

	for (; i + 4 <= n; i += 4) {
		__m256i *pc = (__m256i *)(void *)(acc + i);
		__m256i p = mul4(_mm256_loadu_si256((const __m256i *)(const void *)(a + i)),
				 _mm256_loadu_si256((const __m256i *)(const void *)(b + i)));

		_mm256_storeu_si256(pc, _mm256_xor_si256(_mm256_loadu_si256(pc), p));
	}
	return i;
}
#endif

/* acc[i] += a[i] b[i] */
static void mul_acc(uint64_t *acc, const uint64_t *a, const uint64_t *b, size_t n, int level)
{
	size_t i = 0;

#ifdef QW_HAVE_X86
	if (level >= 2)
		i = mul_acc_vclmul(acc, a, b, n);
#endif
	for (; i < n; i++)
		acc[i] ^= qw_tpz_gf64_mul(a[i], b[i], level);
}

/* The key is cut into B blocks of K bits (K a multiple of 32); block J
 * (bits j0 = J K ..) meets the seed bits from sigma_J = n - j0 - K on, and
 *   y_i = sum_J [s_J(z) x_J(z)]_(K - 1 + i),
 * s_J the K + m - 1 seed bits from sigma_J, x_J the block's bits. All the
 * products are read at the same place, so they add up before a single
 * inverse transform: 2 B + 1 transforms of 2^k >= (2 K + m) / 32 points.
 * Pick B by that cost (smaller transforms also stay in cache). */
static unsigned plan_blocks(size_t n, size_t m, size_t *kbits)
{
	double best = 0;
	unsigned best_k = 0;

	for (size_t b = 1; b <= 64; b++) {
		size_t k = (n + b - 1) / b, lp, nn;
		unsigned lg;
		double cost;

		k = (k + 31) & ~(size_t)31;
		if (b > 1 && (b - 1) * k >= n)
			break; /* no more distinct block counts */
		lp = (k + m - 1 + 31) / 32 + k / 32 - 1;
		lg = log2_ceil(lp);
		if (lg < 3)
			lg = 3;
		if (lg > QW_TPZ_FFT_MAXLOG)
			continue;
		nn = (size_t)1 << lg;
		/* butterflies plus about 6 word operations per point for the
		 * basis conversions, loads and the pointwise product */
		cost = (double)(2 * b + 1) * (double)nn * (lg + 6.0);
		if (!best_k || cost < best) {
			best = cost;
			best_k = lg;
			*kbits = k;
		}
	}
	return best_k;
}

double qw_tpz_fft_cost(size_t n, size_t m)
{
	size_t kb;
	unsigned k = plan_blocks(n, m, &kb);
	size_t b = (n + kb - 1) / (kb ? kb : 1);

	if (!k)
		return 0;
	return (double)(2 * b + 1) * (double)((size_t)1 << k) * (k + 6.0);
}

int qw_tpz_fft_hash(const struct qw_bitvec *key, const struct qw_bitvec *seed, size_t m,
		    struct qw_bitvec *out, int level)
{
	size_t n = key->nbits, kb = 0, nn = 0, ls, lx;
	uint64_t *acc = NULL, *S = NULL, *X = NULL;
	unsigned k = plan_blocks(n, m, &kb);
	int ret;

	if (!k)
		return QW_EINVAL;
	ret = ensure_setup();
	if (ret)
		return ret;
	nn = (size_t)1 << k;
	ls = (kb + m - 1 + 31) / 32;
	lx = kb / 32;
	acc = ws_get(3 * nn);
	if (!acc)
		return QW_ENOMEM;
	S = acc + nn;
	X = S + nn;
	memset(acc, 0, nn * sizeof(*acc));
	for (size_t j0 = 0; j0 < n; j0 += kb) {
		load_segment(S, nn, seed->w, seed->nwords, (long long)n - (long long)j0 - (long long)kb,
			     kb + m - 1);
		load_segment(X, nn, key->w, key->nwords, (long long)j0, kb);
		conv_rec(S, k, 1, ls);
		fft_rec(S, k - 1, 0, 0, level, ls);
		conv_rec(X, k, 1, lx);
		fft_rec(X, k - 1, 0, 0, level, lx);
		mul_acc(acc, S, X, nn, level);
	}
	fft_rec(acc, k - 1, 0, 1, level, nn);
	iconv_rec(acc, k, 1, ls + lx - 1);
	fold_range(acc, ls + lx - 1, kb - 1, m, out->w);
	/* key-dependent: acc, X (and S after the products) */
	qw_wipe(acc, 3 * nn * sizeof(*acc));
	return 0;
}
