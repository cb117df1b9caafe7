/* Layered belief-propagation decoding of the quasi-cyclic codes.
 *
 * Schedule: one layer per base row, i.e. Z checks at once whose variables
 * are all distinct (each base entry is a single circulant), so the Z lanes
 * are independent and map onto SIMD lanes (Hocevar, "A reduced complexity
 * decoder architecture via layered decoding of LDPC codes", SiPS 2004).
 * For each check c of a layer and each of its edges e:
 *   t_e    = L_v(e) - R_e                     (extrinsic input)
 *   R_e    = (-1)^(s_c + sign bits of the other t) * [+]_{others} |t|
 *   L_v(e) = t_e + R_e
 * where [+] is the box-plus (the exact sum-product check rule), computed
 * with forward/backward partial results and log(1 + e^-u) replaced by the
 * linear approximation max(0, ln 2 - u/4) (see bpm_s). The syndrome bit
 * s_c enters the sign because Bob decodes to the coset H x = s rather
 * than to a codeword. Normalised min-sum (Chen and Fossorier 2002) was
 * tried first and failed badly on these highly irregular codes (variable
 * degrees up to 71, check degrees up to 50); docs/ldpc.md has the figures.
 * Messages are 16-bit integers (LLR scaled by 16) with saturating
 * arithmetic; the AVX2 kernel and the portable one compute bit-identical
 * results. Decoding stops as soon as the hard decisions satisfy the
 * syndrome. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "distill/ldpc_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LDPC_X86 1
#endif

int ldpc_force_portable;
/* Iterations without a new minimum of unsatisfied checks before a frame
 * is given up (measured: 12 loses no frame that 60 iterations save at
 * Q = 2-5 %, 8 starts to). */
#define LDPC_STALL 12u

struct ldpc_work {
	size_t n, m;
	unsigned z, maxdeg;
	uint32_t nent;
	int16_t *L;    /* posteriors: block column j at L + j (z + 16), its first
			* 16 values mirrored after the z (see layer_avx2) */
	size_t nL;     /* values in L: nb (z + 16) */
	int16_t *R;    /* nent * z check-to-variable messages */
	int16_t *t;    /* maxdeg * z rotated copies for one layer */
	int16_t *synm; /* m: INT16_MIN where the syndrome bit is 1, else 0 */
	uint64_t *x;   /* n bits of hard decisions */
	uint64_t *acc; /* z / 64 words */
	int16_t *fw;   /* maxdeg * 16 forward box-plus values */
	int16_t **lj;  /* maxdeg block pointers of the current layer */
};

static void *alloc32(size_t bytes)
{
	return aligned_alloc(32, (bytes + 31) & ~(size_t)31);
}

struct ldpc_work *ldpc_work_new(const struct qw_ldpc_code *c)
{
	struct ldpc_work *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->n = c->n;
	w->m = c->m;
	w->z = c->z;
	w->maxdeg = c->max_row_deg;
	w->nent = c->nent;
	w->nL = (size_t)c->nb * (c->z + 16);
	w->L = alloc32(w->nL * sizeof(int16_t));
	w->R = alloc32((size_t)c->nent * c->z * sizeof(int16_t));
	w->t = alloc32((size_t)c->max_row_deg * c->z * sizeof(int16_t));
	w->synm = alloc32(c->m * sizeof(int16_t));
	w->x = alloc32(c->n / 8);
	w->acc = alloc32(c->z / 8);
	w->fw = alloc32((size_t)c->max_row_deg * 16 * sizeof(int16_t));
	w->lj = malloc((size_t)c->max_row_deg * sizeof(*w->lj));
	if (!w->lj || !w->fw || !w->L || !w->R || !w->t || !w->synm || !w->x || !w->acc) {
		ldpc_work_free(w);
		return NULL;
	}
	return w;
}

void ldpc_work_free(struct ldpc_work *w)
{
	if (!w)
		return;
	/* L and x hold Bob's (corrected) key bits. */
	if (w->L)
		memset(w->L, 0, w->nL * sizeof(int16_t));
	if (w->x)
		memset(w->x, 0, w->n / 8);
	free(w->L);
	free(w->R);
	free(w->t);
	free(w->synm);
	free(w->x);
	free(w->acc);
	free(w->fw);
	free(w->lj);
	free(w);
}

static inline int16_t sat16(int32_t v)
{
	return (int16_t)(v > 32767 ? 32767 : v < -32768 ? -32768 : v);
}

/* Rotated copies of the layer's blocks: t_d[k] = L[j Z + (k + s) mod Z]. */
static void layer_gather(const struct qw_ldpc_code *c, struct ldpc_work *w, unsigned i)
{
	unsigned z = c->z;

	for (uint32_t e = c->row_start[i], d = 0; e < c->row_start[i + 1]; e++, d++) {
		const int16_t *lj = w->L + (size_t)c->ent_col[e] * (z + 16);
		int16_t *t = w->t + (size_t)d * z;
		unsigned s = c->ent_shift[e];

		memcpy(t, lj + s, (z - s) * sizeof(int16_t));
		memcpy(t + (z - s), lj, s * sizeof(int16_t));
	}
}

static void layer_scatter(const struct qw_ldpc_code *c, struct ldpc_work *w, unsigned i)
{
	unsigned z = c->z;

	for (uint32_t e = c->row_start[i], d = 0; e < c->row_start[i + 1]; e++, d++) {
		int16_t *lj = w->L + (size_t)c->ent_col[e] * (z + 16);
		const int16_t *t = w->t + (size_t)d * z;
		unsigned s = c->ent_shift[e];

		memcpy(lj + s, t, (z - s) * sizeof(int16_t));
		memcpy(lj, t + (z - s), s * sizeof(int16_t));
		memcpy(lj + z, lj, 16 * sizeof(int16_t));
	}
}

/* Box-plus of two magnitudes, exact up to the linear approximation of
 * log(1 + e^-u) ~ max(0, ln 2 - u / 4) (LLR units; with LLRs scaled by 16
 * this is max(0, 44 - u) / 4):
 *   |a [+] b| = min(|a|, |b|) + corr(|a| + |b|) - corr(||a| - |b||).
 * The result is clamped at 0. */
static inline int32_t corr_s(int32_t u)
{
	return u < 44 ? (44 - u) >> 2 : 0;
}

static inline int32_t bpm_s(int32_t x, int32_t y)
{
	int32_t r = (x < y ? x : y) + corr_s(x + y > 32767 ? 32767 : x + y) -
		    corr_s(x > y ? x - y : y - x);

	return r < 0 ? 0 : r > 32767 ? 32767 : r;
}

static void layer_portable(const struct qw_ldpc_code *c, struct ldpc_work *w, unsigned i)
{
	unsigned z = c->z, deg = c->row_start[i + 1] - c->row_start[i];
	int16_t *R0 = w->R + (size_t)c->row_start[i] * z;
	const int16_t *synm = w->synm + (size_t)i * z;
	int16_t *fw = w->fw;

	for (unsigned k = 0; k < z; k++) {
		int16_t sx = synm[k];
		int32_t f = 32767, bk = 32767;

		for (unsigned d = 0; d < deg; d++) {
			int16_t *tp = w->t + (size_t)d * z + k;
			int32_t v = sat16((int32_t)*tp - R0[(size_t)d * z + k]);

			if (v < -32767)
				v = -32767;
			*tp = (int16_t)v;
			fw[d] = (int16_t)f; /* box-plus of inputs 0 .. d-1 */
			f = bpm_s(f, v < 0 ? -v : v);
			sx ^= (int16_t)v;
		}
		for (unsigned d = deg; d-- > 0;) {
			int16_t *tp = w->t + (size_t)d * z + k;
			int32_t v = *tp, mag = bpm_s(fw[d], bk);
			int32_t r = (int16_t)(sx ^ (int16_t)v) < 0 ? -mag : mag;

			bk = bpm_s(bk, v < 0 ? -v : v);
			R0[(size_t)d * z + k] = (int16_t)r;
			*tp = sat16(v + r);
		}
	}
}

static void hard_portable(struct ldpc_work *w)
{
	memset(w->x, 0, w->n / 8);
	for (size_t v = 0; v < w->n; v++)
		w->x[v >> 6] |= (uint64_t)(w->L[v / w->z * (w->z + 16) + v % w->z] < 0) << (v & 63);
}

#ifdef LDPC_X86
/* corr_s and bpm_s with unsigned saturation doing the clamps at 0: the
 * values are in [0, 32767], and min + corr(x + y) <= 32767 + 11 fits. */
__attribute__((target("avx2"))) static inline __m256i corr_v(__m256i u)
{
	return _mm256_srli_epi16(_mm256_subs_epu16(_mm256_set1_epi16(44), u), 2);
}

__attribute__((target("avx2"))) static inline __m256i bpm_v(__m256i x, __m256i y)
{
	__m256i r = _mm256_adds_epu16(_mm256_min_epi16(x, y), corr_v(_mm256_adds_epi16(x, y)));

	return _mm256_subs_epu16(r, corr_v(_mm256_abs_epi16(_mm256_sub_epi16(x, y))));
}

/* The AVX2 layer reads and writes the posteriors in place: lane k of
 * entry d is variable (k + s_d) mod z, so 16 lanes are 16 consecutive
 * values starting at (k + s_d) mod z, except for the one chunk per entry
 * that wraps past z. That chunk reads the 16-value mirror kept after each
 * block and writes into it; the written part is copied back to the front
 * and the mirror refreshed after the layer. No rotated copies are made. */
__attribute__((target("avx2"))) static void layer_avx2(const struct qw_ldpc_code *c,
						       struct ldpc_work *w, unsigned i)
{
	unsigned z = c->z, deg = c->row_start[i + 1] - c->row_start[i];
	uint32_t e0 = c->row_start[i];
	int16_t *R0 = w->R + (size_t)e0 * z;
	const int16_t *synm = w->synm + (size_t)i * z;
	__m256i *fw = (__m256i *)w->fw;
	int16_t **lj = w->lj;
	const uint16_t *sh = c->ent_shift + e0;
	const __m256i lo = _mm256_set1_epi16(-32767), big = _mm256_set1_epi16(32767);
	const __m256i one = _mm256_set1_epi16(1);

	for (unsigned d = 0; d < deg; d++)
		lj[d] = w->L + (size_t)c->ent_col[e0 + d] * (z + 16);
	for (unsigned k = 0; k < z; k += 16) {
		__m256i f = big, bk = big;
		__m256i sx = _mm256_load_si256((const __m256i *)(synm + k));

		for (unsigned d = 0; d < deg; d++) {
			unsigned st = k + sh[d];
			__m256i r = _mm256_load_si256((const __m256i *)(R0 + (size_t)d * z + k));
			__m256i v;

			st -= st >= z ? z : 0;
			v = _mm256_loadu_si256((const __m256i *)(lj[d] + st));
			v = _mm256_max_epi16(_mm256_subs_epi16(v, r), lo);
			_mm256_store_si256((__m256i *)(w->t + (size_t)d * 16), v);
			fw[d] = f;
			f = bpm_v(f, _mm256_abs_epi16(v));
			sx = _mm256_xor_si256(sx, v);
		}
		for (unsigned d = deg; d-- > 0;) {
			unsigned st = k + sh[d];
			__m256i v = _mm256_load_si256((const __m256i *)(w->t + (size_t)d * 16));
			__m256i mag = bpm_v(fw[d], bk);
			__m256i r = _mm256_sign_epi16(mag, _mm256_or_si256(_mm256_xor_si256(sx, v), one));

			st -= st >= z ? z : 0;
			bk = bpm_v(bk, _mm256_abs_epi16(v));
			_mm256_store_si256((__m256i *)(R0 + (size_t)d * z + k), r);
			_mm256_storeu_si256((__m256i *)(lj[d] + st), _mm256_adds_epi16(v, r));
		}
	}
	for (unsigned d = 0; d < deg; d++) {
		unsigned s = sh[d] % 16;

		/* the wrapping chunk starts at z - 16 + s: its last s values
		 * went to the mirror */
		if (s)
			memcpy(lj[d], lj[d] + z, s * sizeof(int16_t));
		memcpy(lj[d] + z, lj[d], 16 * sizeof(int16_t));
	}
}

__attribute__((target("avx2"))) static void hard_avx2(struct ldpc_work *w)
{
	uint32_t *x32 = (uint32_t *)w->x;

	for (size_t v = 0; v < w->n; v += 32) {
		const int16_t *l = w->L + v / w->z * (w->z + 16) + v % w->z;
		__m256i a = _mm256_load_si256((const __m256i *)l);
		__m256i b = _mm256_load_si256((const __m256i *)(l + 16));
		__m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi16(a, b), 0xD8);

		/* little-endian: 32-bit half words of the 64-bit bit words */
		x32[v / 32] = (uint32_t)_mm256_movemask_epi8(p);
	}
}

/* libgcc initialises the CPU model before main, so this is a read. */
static int have_avx2(void)
{
	return __builtin_cpu_supports("avx2") ? 1 : 0;
}
#endif

int ldpc_decode(const struct qw_ldpc_code *c, struct ldpc_work *w, const int16_t *llr,
		const uint64_t *syn, unsigned max_iter, uint64_t *x, unsigned *iters)
{
	int simd = 0, ok = 0;
	unsigned it = 0, best_it = 0;
	size_t unsat, best = SIZE_MAX;

	QW_REQUIRE(w->n == c->n && w->m == c->m && w->z == c->z && w->nent == c->nent &&
		   w->maxdeg >= c->max_row_deg);
#ifdef LDPC_X86
	simd = !ldpc_force_portable && have_avx2() && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
#endif
	for (unsigned j = 0; j < c->nb; j++) {
		int16_t *lj = w->L + (size_t)j * (c->z + 16);

		memcpy(lj, llr + (size_t)j * c->z, c->z * sizeof(int16_t));
		memcpy(lj + c->z, lj, 16 * sizeof(int16_t));
	}
	memset(w->R, 0, (size_t)c->nent * c->z * sizeof(int16_t));
	for (size_t k = 0; k < c->m; k++)
		w->synm[k] = (int16_t)((syn[k >> 6] >> (k & 63)) & 1 ? -32768 : 0);
	for (;;) {
#ifdef LDPC_X86
		if (simd)
			hard_avx2(w);
		else
#endif
			hard_portable(w);
		unsat = ldpc_syndrome_unsat(c, w->x, syn, w->acc);
		if (unsat == 0) {
			ok = 1;
			break;
		}
		if (unsat < best) {
			best = unsat;
			best_it = it;
		}
		/* Give up when the number of unsatisfied checks has not
		 * reached a new minimum for LDPC_STALL iterations: such frames
		 * practically never converge later (docs/ldpc.md), and failed
		 * frames would otherwise cost max_iter iterations each. */
		if (it >= max_iter || it - best_it >= LDPC_STALL)
			break;
		it++;
		for (unsigned i = 0; i < c->mb; i++) {
#ifdef LDPC_X86
			if (simd) {
				layer_avx2(c, w, i);
				continue;
			}
#endif
			layer_gather(c, w, i);
			layer_portable(c, w, i);
			layer_scatter(c, w, i);
		}
	}
	memcpy(x, w->x, c->n / 8);
	if (iters)
		*iters = it;
	return ok ? 0 : 1;
}

int qw_ldpc_code_decode(const struct qw_ldpc_code *c, const int16_t *llr,
			const struct qw_bitvec *syn, unsigned max_iter, struct qw_bitvec *x,
			unsigned *iters)
{
	struct ldpc_work *w;
	int ret;

	QW_REQUIRE(c != NULL && llr != NULL && syn != NULL && x != NULL);
	if (syn->nbits != c->m || x->nbits != c->n)
		return QW_EINVAL;
	if (!(w = ldpc_work_new(c)))
		return QW_ENOMEM;
	ret = ldpc_decode(c, w, llr, syn->w, max_iter, x->w, iters);
	ldpc_work_free(w);
	return ret;
}
