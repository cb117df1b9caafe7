/* Cascade: schedules, the shared block layouts, message helpers and
 * Alice's side. Bob's state machine is in cascade_bob.c, the distillation
 * stage and the in-process driver in cascade_stage.c. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "distill/cascade_internal.h"
#include "qwave/secmem.h"

/* ---- variants and schedules ------------------------------------------ */

static const char *const variant_names[] = { "original", "yan", "option8", "optimized",
					      "fast" };

void qw_cascade_params_init(struct qw_cascade_params *p, enum qw_cascade_variant v)
{
	QW_REQUIRE(p != NULL);
	memset(p, 0, sizeof(*p));
	p->variant = v;
	/* The published variants are measured with the sequential order;
	 * the optimized one batches every open bisection per round. */
	p->policy = v == QW_CASCADE_OPTIMIZED || v == QW_CASCADE_FAST ? QW_CASCADE_FEWEST_ROUNDS
								      : QW_CASCADE_LEAST_LEAK;
	/* A residual error pattern survives a BICONF pass with probability
	 * 1/2. Every correction restarts the streak with a new pattern, so a
	 * frame fails with about (1 + BICONF corrections) 2^-24: ~1e-6 at 5%
	 * QBER, where some 20 errors are left after the first two passes. */
	p->biconf_streak = v == QW_CASCADE_OPTIMIZED ? 24 : v == QW_CASCADE_FAST ? 8 : 0;
}

int qw_cascade_variant_parse(const char *name, enum qw_cascade_variant *v)
{
	for (unsigned i = 0; i < sizeof(variant_names) / sizeof(variant_names[0]); i++)
		if (name && strcmp(name, variant_names[i]) == 0) {
			*v = (enum qw_cascade_variant)i;
			return 0;
		}
	return QW_EINVAL;
}

const char *qw_cascade_variant_name(enum qw_cascade_variant v)
{
	if ((unsigned)v < sizeof(variant_names) / sizeof(variant_names[0]))
		return variant_names[v];
	return "unknown";
}

static uint32_t clamp_k(double k, size_t n)
{
	if (!(k >= 1.0))
		return 1;
	if (k > (double)n)
		return (uint32_t)n;
	return (uint32_t)k;
}

static uint32_t pow2_ceil(double e)
{
	double c = ceil(e);

	if (c < 0)
		c = 0;
	if (c > 30)
		c = 30;
	return (uint32_t)1 << (unsigned)c;
}

/* Passes that are not BICONF halves: each costs a permutation table of n
 * entries (and a permuted copy of the key on each side), so a peer's HELLO
 * may not ask for many. */
static unsigned count_block_passes(const uint32_t *k, unsigned np, size_t n)
{
	unsigned c = 0;

	for (unsigned p = 0; p < np; p++)
		c += cas_kind_of(p, k[p], n) != CAS_KIND_MASK;
	return c;
}

int qw_cascade_schedule(const struct qw_cascade_params *p, size_t n, double qber,
			uint32_t *sizes, unsigned *npasses)
{
	unsigned np = 0;
	uint32_t half;
	double q = qber, a;

	QW_REQUIRE(p != NULL && sizes != NULL && npasses != NULL);
	if (n == 0 || n > QW_CASCADE_MAX_BITS)
		return QW_EINVAL;
	if (!(q >= 1e-5))
		q = 1e-5;
	if (q > 0.49)
		q = 0.49;
	half = (uint32_t)((n + 1) / 2);
	switch (p->variant) {
	case QW_CASCADE_ORIGINAL:
		/* Brassard-Salvail: k1 ~ 0.73/Q, doubling, four passes. */
		np = 4;
		sizes[0] = clamp_k(ceil(0.73 / q), n);
		for (unsigned i = 1; i < np; i++)
			sizes[i] = clamp_k(2.0 * sizes[i - 1], n);
		break;
	case QW_CASCADE_YAN:
		/* Yan et al. as tabulated in Martinez-Mateo et al. 2015,
		 * "Cascade opt. (2)": k1 = 0.8/Q, k2 = 5 k1, then n/2. */
		np = 10;
		sizes[0] = clamp_k(ceil(0.80 / q), n);
		sizes[1] = clamp_k(5.0 * sizes[0], n);
		for (unsigned i = 2; i < np; i++)
			sizes[i] = half;
		break;
	case QW_CASCADE_OPTION8:
		/* Martinez-Mateo et al. 2015, "Cascade opt. (8)". */
		np = 14;
		a = log2(1.0 / q) - 0.5;
		sizes[0] = clamp_k(pow2_ceil(a), n);
		sizes[1] = clamp_k(pow2_ceil((a + 12.0) / 2.0), n);
		sizes[2] = clamp_k(4096, n);
		for (unsigned i = 3; i < np; i++)
			sizes[i] = half;
		break;
	case QW_CASCADE_FAST:
		/* Throughput first (docs/cascade.md). Powers of two make
		 * block indices shifts and, from 64 bits on, block parities
		 * whole words; 2 k1 then 8 k1 measured better than doubling
		 * (32,64,128,256: f 1.150 at 2%) and than a fourth pass
		 * (32,64,256,1024: f 1.116, one more permutation) at
		 * n = 1e6; rounding k1 to the nearest power rather than
		 * down (8 at 5%: f 1.275 against 1.107 with 16). Three
		 * block passes leave a pair of errors sharing a block in
		 * every pass often enough to matter in small frames (FER 1-5%
		 * at n = 4096), so BICONF halves follow until the params'
		 * streak (8 by default) passes find nothing: FER 0 in 1000
		 * such frames, for ~8 more round trips and 8 parities. */
		np = QW_CASCADE_MAX_PASSES;
		sizes[0] = clamp_k(pow2_ceil(floor(log2(0.73 / q) + 0.5)), n);
		sizes[1] = clamp_k(2.0 * sizes[0], n);
		sizes[2] = clamp_k(8.0 * sizes[0], n);
		for (unsigned i = 3; i < np; i++)
			sizes[i] = half;
		break;
	case QW_CASCADE_OPTIMIZED:
	default:
		/* Cascade with BICONF. k1 = the largest power of two <= 1/Q
		 * (0.5 to 1 expected errors per block; powers of two make a
		 * bisection cost exactly log2 k parities), k2 as opt. (8),
		 * then BICONF halves until the params' error-free streak (24
		 * by default) ends them. Measured against opt. (8)'s k1 (one
		 * power of two larger) and its third pass of 4096, this
		 * keeps the efficiency within 0.002 at n = 1e5 with a third
		 * fewer round trips and no third permutation
		 * (docs/cascade.md). */
		np = QW_CASCADE_MAX_PASSES;
		a = log2(1.0 / q) - 0.5;
		sizes[0] = clamp_k(pow2_ceil(floor(log2(1.0 / q))), n);
		sizes[1] = clamp_k(pow2_ceil((a + 12.0) / 2.0), n);
		for (unsigned i = 2; i < np; i++)
			sizes[i] = half;
		break;
	}
	if (p->npasses) {
		unsigned want = p->npasses > QW_CASCADE_MAX_PASSES ? QW_CASCADE_MAX_PASSES
								   : p->npasses;
		for (unsigned i = np; i < want; i++)
			sizes[i] = half;
		np = want;
	}
	for (unsigned i = 0; i < np; i++)
		if (p->block_size[i])
			sizes[i] = clamp_k(p->block_size[i], n);
	if (count_block_passes(sizes, np, n) > QW_CASCADE_MAX_BLOCK_PASSES)
		return QW_EINVAL;
	*npasses = np;
	return 0;
}

/* ---- layouts ------------------------------------------------------------ */

/* The layout generator is part of the wire protocol (both ends must derive
 * the same permutations from the public seed), so it is a fixed, documented
 * function - SplitMix64 (Steele, Lea, Flood 2014) - not a DRBG whose output
 * might change. The layouts are public; they need no unpredictability. */
static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

enum cas_kind cas_kind_of(unsigned pass, uint32_t k, size_t n)
{
	if ((size_t)k >= n / 2)
		return CAS_KIND_MASK;
	return pass == 0 ? CAS_KIND_IDENT : CAS_KIND_PERM;
}

static void layout_free(struct cas_layout *l)
{
	if (!l)
		return;
	for (unsigned p = 0; p < QW_CASCADE_MAX_PASSES; p++) {
		free(l->perm[p]);
		qw_bitvec_free(l->mask[p]);
	}
	free(l);
}

static struct cas_layout *layout_build(size_t n, uint64_t seed, unsigned npasses,
				       const uint32_t *k)
{
	struct cas_layout *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->n = n;
	l->seed = seed;
	l->npasses = npasses;
	for (unsigned p = 0; p < npasses; p++) {
		uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (p + 1));

		l->k[p] = k[p];
		l->kind[p] = (uint8_t)cas_kind_of(p, k[p], n);
		if (l->kind[p] == CAS_KIND_PERM) {
			struct cas_feistel *fe = &l->fe[p];
			unsigned m = cas_depth(n) < 2 ? 2 : cas_depth(n);
			uint32_t *pm = malloc(n * sizeof(*pm));

			l->perm[p] = pm;
			if (!pm)
				goto fail;
			fe->n = (uint32_t)n;
			fe->abits = (m + 1) / 2;
			fe->bbits = m / 2;
			for (unsigned r = 0; r < CAS_FEISTEL_ROUNDS; r++)
				fe->key[r] = splitmix64(&s);
			for (size_t i = 0; i < n; i++)
				pm[i] = cas_fe_fwd(fe, (uint32_t)i);
		} else if (l->kind[p] == CAS_KIND_MASK) {
			struct qw_bitvec *m = qw_bitvec_new(n);

			l->mask[p] = m;
			if (!m)
				goto fail;
			for (size_t w = 0; w < m->nwords; w++)
				m->w[w] = splitmix64(&s);
			if (n & 63)
				m->w[m->nwords - 1] &= ((uint64_t)1 << (n & 63)) - 1;
		}
	}
	return l;
fail:
	layout_free(l);
	return NULL;
}

#define CACHE_SLOTS 8
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cas_layout *cache[CACHE_SLOTS];
static uint64_t cache_used[CACHE_SLOTS];
static uint64_t cache_clock;

static int layout_matches(const struct cas_layout *l, size_t n, uint64_t seed,
			  unsigned npasses, const uint32_t *k)
{
	return l->n == n && l->seed == seed && l->npasses == npasses &&
	       memcmp(l->k, k, npasses * sizeof(*k)) == 0;
}

/* The cache holds one reference to each layout it lists. */
struct cas_layout *cas_layout_get(size_t n, uint64_t seed, unsigned npasses, const uint32_t *k)
{
	struct cas_layout *l = NULL;
	unsigned victim = 0;

	pthread_mutex_lock(&cache_lock);
	for (unsigned i = 0; i < CACHE_SLOTS; i++)
		if (cache[i] && layout_matches(cache[i], n, seed, npasses, k)) {
			l = cache[i];
			l->refs++;
			cache_used[i] = ++cache_clock;
			pthread_mutex_unlock(&cache_lock);
			return l;
		}
	pthread_mutex_unlock(&cache_lock);
	/* Build outside the lock: a few milliseconds for large keys. */
	l = layout_build(n, seed, npasses, k);
	if (!l)
		return NULL;
	l->refs = 2;
	pthread_mutex_lock(&cache_lock);
	for (unsigned i = 0; i < CACHE_SLOTS; i++) {
		if (!cache[i]) {
			victim = i;
			break;
		}
		if (cache_used[i] < cache_used[victim])
			victim = i;
	}
	if (cache[victim] && --cache[victim]->refs == 0)
		layout_free(cache[victim]);
	cache[victim] = l;
	cache_used[victim] = ++cache_clock;
	pthread_mutex_unlock(&cache_lock);
	return l;
}

void cas_layout_put(struct cas_layout *l)
{
	int last;

	if (!l)
		return;
	pthread_mutex_lock(&cache_lock);
	last = --l->refs == 0;
	pthread_mutex_unlock(&cache_lock);
	if (last)
		layout_free(l);
}

/* ---- per-thread scratch ---------------------------------------------- */

#define SCRATCH_SLOTS 24
#define SCRATCH_MAX_BYTES ((size_t)96 << 20) /* kept per thread at most */

struct scratch {
	void *p[SCRATCH_SLOTS];
	size_t n[SCRATCH_SLOTS];
	size_t total;
};

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_ok;

static void scratch_destroy(void *v)
{
	struct scratch *sc = v;

	if (!sc)
		return;
	for (unsigned i = 0; i < SCRATCH_SLOTS; i++)
		free(sc->p[i]); /* wiped when they were cached */
	free(sc);
}

static void scratch_setup(void)
{
	scratch_ok = pthread_key_create(&scratch_key, scratch_destroy) == 0;
}

static struct scratch *scratch_get(int create)
{
	struct scratch *sc;

	pthread_once(&scratch_once, scratch_setup);
	if (!scratch_ok)
		return NULL;
	sc = pthread_getspecific(scratch_key);
	if (!sc && create) {
		sc = calloc(1, sizeof(*sc));
		if (sc && pthread_setspecific(scratch_key, sc)) {
			free(sc);
			sc = NULL;
		}
	}
	return sc;
}

void *cas_zalloc(size_t bytes)
{
	struct scratch *sc = scratch_get(0);

	if (bytes == 0)
		bytes = 1;
	if (sc) {
		for (unsigned i = 0; i < SCRATCH_SLOTS; i++) {
			if (sc->p[i] && sc->n[i] == bytes) {
				void *p = sc->p[i];

				sc->p[i] = NULL;
				sc->total -= bytes;
				return p;
			}
		}
	}
	return calloc(1, bytes);
}

static void scratch_keep(void *p, size_t bytes);

void cas_zfree(void *p, size_t bytes)
{
	if (!p)
		return;
	if (bytes == 0)
		bytes = 1;
	qw_wipe(p, bytes);
	scratch_keep(p, bytes);
}

void cas_zfree_public(void *p, size_t bytes)
{
	if (!p)
		return;
	if (bytes == 0)
		bytes = 1;
	memset(p, 0, bytes);
	scratch_keep(p, bytes);
}

/* Keep the zeroed buffer p for a later cas_zalloc on this thread, or free
 * it. */
static void scratch_keep(void *p, size_t bytes)
{
	struct scratch *sc = scratch_get(1);

	if (sc && sc->total + bytes <= SCRATCH_MAX_BYTES) {
		for (unsigned i = 0; i < SCRATCH_SLOTS; i++) {
			if (!sc->p[i]) {
				sc->p[i] = p;
				sc->n[i] = bytes;
				sc->total += bytes;
				return;
			}
		}
	}
	free(p);
}

struct qw_bitvec *cas_bv_new(size_t n)
{
	struct qw_bitvec *v = malloc(sizeof(*v));

	if (!v)
		return NULL;
	v->nbits = n;
	v->nwords = v->capwords = QW_BITVEC_WORDS(n);
	v->w = cas_zalloc(v->capwords * sizeof(uint64_t));
	if (!v->w) {
		free(v);
		return NULL;
	}
	return v;
}

void cas_bv_free(struct qw_bitvec *v)
{
	if (!v)
		return;
	cas_zfree(v->w, v->capwords * sizeof(uint64_t));
	free(v);
}

void qw_cascade_cache_clear(void)
{
	struct scratch *sc = scratch_get(0);

	if (sc) {
		for (unsigned i = 0; i < SCRATCH_SLOTS; i++) {
			free(sc->p[i]);
			sc->p[i] = NULL;
		}
		sc->total = 0;
	}
	pthread_mutex_lock(&cache_lock);
	for (unsigned i = 0; i < CACHE_SLOTS; i++) {
		if (cache[i] && --cache[i]->refs == 0)
			layout_free(cache[i]);
		cache[i] = NULL;
	}
	pthread_mutex_unlock(&cache_lock);
}

unsigned cas_depth(size_t len)
{
	unsigned d = 0;

	while (((size_t)1 << d) < len)
		d++;
	return d;
}

void cas_block_range(const struct cas_layout *l, unsigned p, uint32_t b, size_t *lo, size_t *hi)
{
	if (l->kind[p] == CAS_KIND_MASK) {
		*lo = 0;
		*hi = l->n;
		return;
	}
	*lo = (size_t)b * l->k[p];
	*hi = *lo + l->k[p] < l->n ? *lo + l->k[p] : l->n;
}

/* ---- bit helpers --------------------------------------------------------- */

static inline uint64_t low_mask(unsigned n)
{
	return n >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1);
}

/* Word wi of the range [lo, hi) restricted to the range (bits outside
 * cleared). */
static inline uint64_t range_word(size_t wi, size_t lo, size_t hi)
{
	uint64_t m = ~(uint64_t)0;

	if (wi == lo >> 6)
		m &= ~low_mask((unsigned)(lo & 63));
	if (wi == (hi - 1) >> 6)
		m &= low_mask((unsigned)(((hi - 1) & 63) + 1));
	return m;
}

int cas_masked_parity(const struct qw_bitvec *v, const struct qw_bitvec *m, int inv,
		      size_t lo, size_t hi)
{
	uint64_t acc = 0, flip = inv ? ~(uint64_t)0 : 0;
	size_t wf, wt;

	if (lo >= hi)
		return 0;
	wf = lo >> 6;
	wt = (hi - 1) >> 6;
	if (wf == wt)
		return __builtin_parityll(v->w[wf] & (m->w[wf] ^ flip) & range_word(wf, lo, hi));
	acc = v->w[wf] & (m->w[wf] ^ flip) & range_word(wf, lo, hi);
	acc ^= v->w[wt] & (m->w[wt] ^ flip) & range_word(wt, lo, hi);
	{
		/* Four independent accumulators for the long ranges (BICONF
		 * halves span the whole key). */
		uint64_t a1 = 0, a2 = 0, a3 = 0;
		size_t wi = wf + 1;

		for (; wi + 4 <= wt; wi += 4) {
			acc ^= v->w[wi] & (m->w[wi] ^ flip);
			a1 ^= v->w[wi + 1] & (m->w[wi + 1] ^ flip);
			a2 ^= v->w[wi + 2] & (m->w[wi + 2] ^ flip);
			a3 ^= v->w[wi + 3] & (m->w[wi + 3] ^ flip);
		}
		for (; wi < wt; wi++)
			acc ^= v->w[wi] & (m->w[wi] ^ flip);
		acc ^= a1 ^ a2 ^ a3;
	}
	return __builtin_parityll(acc);
}

/* Members of the mask (inv: of its complement) in [lo, hi), counted up to
 * two; *first gets the lowest one. Written without popcount, which is a
 * library call on baseline x86-64. */
unsigned cas_masked_few(const struct qw_bitvec *m, int inv, size_t lo, size_t hi, size_t *first)
{
	uint64_t flip = inv ? ~(uint64_t)0 : 0;
	unsigned c = 0;

	if (lo >= hi)
		return 0;
	for (size_t wi = lo >> 6; wi <= (hi - 1) >> 6; wi++) {
		uint64_t w = (m->w[wi] ^ flip) & range_word(wi, lo, hi);

		if (!w)
			continue;
		if (c || (w & (w - 1)))
			return 2;
		c = 1;
		*first = (wi << 6) + (size_t)__builtin_ctzll(w);
	}
	return c;
}

static inline void put_bit(uint64_t *out, size_t i, int b)
{
	uint64_t m = (uint64_t)1 << (i & 63);

	out[i >> 6] = b ? (out[i >> 6] | m) : (out[i >> 6] & ~m);
}

void cas_block_parities(const struct qw_bitvec *v, size_t k, size_t b0, size_t cnt,
			uint64_t *out, size_t at)
{
	size_t n = v->nbits;

	if (k < 64 && (k & (k - 1)) == 0) {
		/* Fold each word so that bit j*k holds the parity of its
		 * j-th k-bit chunk (bits past nbits are zero). */
		size_t cur_w = SIZE_MAX;
		uint64_t f = 0;

		for (size_t i = 0; i < cnt; i++) {
			size_t pos = (b0 + i) * k, wi = pos >> 6;

			if (wi != cur_w) {
				f = v->w[wi];
				for (size_t s = 1; s < k; s <<= 1)
					f ^= f >> s;
				cur_w = wi;
			}
			put_bit(out, at + i, (int)((f >> (pos & 63)) & 1));
		}
		return;
	}
	if ((k & 63) == 0) {
		size_t kw = k >> 6;

		for (size_t i = 0; i < cnt; i++) {
			size_t w0 = (b0 + i) * kw, w1 = w0 + kw;
			uint64_t acc = 0;

			if (w1 > v->nwords)
				w1 = v->nwords;
			for (size_t w = w0; w < w1; w++)
				acc ^= v->w[w];
			put_bit(out, at + i, __builtin_parityll(acc));
		}
		return;
	}
	for (size_t i = 0; i < cnt; i++) {
		size_t lo = (b0 + i) * k, hi = lo + k < n ? lo + k : n;

		put_bit(out, at + i, qw_bitvec_parity(v, lo, hi));
	}
}

#if (defined(__x86_64__) || defined(__i386__)) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#include <immintrin.h>
#define CAS_HAVE_AVX2_GATHER 1

/* Eight bits per step: gather the 32-bit words holding them, shift each
 * bit to the sign position, collect the signs. About 15% faster than the
 * scalar loop on Zen 3 (the gather itself is the limit). */
__attribute__((target("avx2"))) static void permute_avx2(uint64_t *dw, const uint64_t *sw,
							  size_t full, const uint32_t *perm)
{
	const int *base = (const int *)(const void *)sw;
	const __m256i m31 = _mm256_set1_epi32(31);

	for (size_t wi = 0; wi < full; wi++) {
		const uint32_t *pp = perm + (wi << 6);
		uint64_t w = 0;

		for (unsigned i = 0; i < 64; i += 8) {
			__m256i j = _mm256_loadu_si256((const __m256i *)(const void *)(pp + i));
			__m256i g = _mm256_i32gather_epi32(base, _mm256_srli_epi32(j, 5), 4);

			g = _mm256_sllv_epi32(g, _mm256_sub_epi32(m31, _mm256_and_si256(j, m31)));
			w |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(g)) << i;
		}
		dw[wi] = w;
	}
}

static int permute_simd(void)
{
	static _Atomic int have = -1;
	int h = have;

	if (h < 0) {
		h = __builtin_cpu_supports("avx2") ? 1 : 0;
		have = h;
	}
	return h;
}
#endif

void cas_permute(struct qw_bitvec *dst, const struct qw_bitvec *src, const uint32_t *perm)
{
	const uint64_t *sw = src->w;
	size_t n = src->nbits, full = n >> 6;

#ifdef CAS_HAVE_AVX2_GATHER
	/* The 32-bit view of the key's words is little-endian bit order. Bit
	 * indices < 2^31 (QW_CASCADE_MAX_BITS) keep the gather's signed
	 * indices non-negative. */
	if (permute_simd()) {
		permute_avx2(dst->w, sw, full, perm);
		goto tail;
	}
#endif

	/* Four independent accumulators per word keep the gathers (random
	 * reads of an L1-resident key) overlapping. */
	for (size_t wi = 0; wi < full; wi++) {
		const uint32_t *pp = perm + (wi << 6);
		uint64_t w0 = 0, w1 = 0, w2 = 0, w3 = 0;

		for (unsigned i = 0; i < 64; i += 4) {
			uint32_t j0 = pp[i], j1 = pp[i + 1], j2 = pp[i + 2], j3 = pp[i + 3];

			w0 |= ((sw[j0 >> 6] >> (j0 & 63)) & 1) << i;
			w1 |= ((sw[j1 >> 6] >> (j1 & 63)) & 1) << (i + 1);
			w2 |= ((sw[j2 >> 6] >> (j2 & 63)) & 1) << (i + 2);
			w3 |= ((sw[j3 >> 6] >> (j3 & 63)) & 1) << (i + 3);
		}
		dst->w[wi] = w0 | w1 | w2 | w3;
	}
#ifdef CAS_HAVE_AVX2_GATHER
tail:
#endif
	if (n & 63) {
		uint64_t w = 0;

		for (size_t i = full << 6; i < n; i++) {
			uint32_t j = perm[i];

			w |= ((sw[j >> 6] >> (j & 63)) & 1) << (i & 63);
		}
		dst->w[full] = w;
	}
}

/* ---- message buffers ---------------------------------------------------- */

int cas_buf_reserve(struct cas_buf *b, size_t extra)
{
	size_t cap;
	uint8_t *np;

	if (b->len + extra <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra)
		cap *= 2;
	np = realloc(b->p, cap);
	if (!np)
		return QW_ENOMEM;
	b->p = np;
	b->cap = cap;
	return 0;
}

void cas_buf_free(struct cas_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

int cas_rd_u8(struct cas_rd *r, uint8_t *x)
{
	if (r->off >= r->len)
		return -1;
	*x = r->p[r->off++];
	return 0;
}

int cas_rd_var_slow(struct cas_rd *r, uint64_t *x)
{
	uint64_t v = 0;

	for (unsigned sh = 0; sh < 64; sh += 7) {
		uint8_t b;

		if (cas_rd_u8(r, &b))
			return -1;
		if (sh == 63 && b > 1)
			return -1;
		v |= (uint64_t)(b & 0x7f) << sh;
		if (!(b & 0x80)) {
			/* Reject non-minimal encodings (a trailing 0 byte). */
			if (b == 0 && sh)
				return -1;
			*x = v;
			return 0;
		}
	}
	return -1;
}

/* ---- Alice -------------------------------------------------------------- */

struct qw_cascade_alice {
	const struct qw_bitvec *key;
	struct cas_layout *lay;
	struct qw_bitvec *pk[QW_CASCADE_MAX_PASSES]; /* PERM passes, built lazily */
	int done;
	struct cas_buf out;
	uint64_t *bits; /* answer bits under construction */
	size_t bitcap;  /* in words */
	struct qw_cascade_stats st;
};

struct qw_cascade_alice *qw_cascade_alice_new(const struct qw_bitvec *key)
{
	struct qw_cascade_alice *a;

	QW_REQUIRE(key != NULL);
	if (key->nbits == 0 || key->nbits > QW_CASCADE_MAX_BITS)
		return NULL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->key = key;
	return a;
}

void qw_cascade_alice_free(struct qw_cascade_alice *a)
{
	if (!a)
		return;
	for (unsigned p = 0; p < QW_CASCADE_MAX_PASSES; p++)
		cas_bv_free(a->pk[p]);
	cas_layout_put(a->lay);
	/* Answers are parities Bob already holds; the bit scratch is wiped as
	 * it was computed from the key. */
	if (a->bits)
		qw_free_secret(a->bits, a->bitcap * sizeof(uint64_t));
	cas_buf_free(&a->out);
	free(a);
}

void qw_cascade_alice_stats(const struct qw_cascade_alice *a, struct qw_cascade_stats *st)
{
	*st = a->st;
}

static int alice_bits_reserve(struct qw_cascade_alice *a, size_t nbits)
{
	size_t words = (nbits + 63) / 64;
	uint64_t *nb;
	size_t cap;

	if (words <= a->bitcap)
		return 0;
	cap = a->bitcap ? a->bitcap * 2 : 64;
	while (cap < words)
		cap *= 2;
	nb = qw_calloc(cap, sizeof(uint64_t));
	if (!nb)
		return QW_ENOMEM;
	if (a->bits) {
		memcpy(nb, a->bits, a->bitcap * sizeof(uint64_t));
		qw_free_secret(a->bits, a->bitcap * sizeof(uint64_t));
	}
	a->bits = nb;
	a->bitcap = cap;
	return 0;
}

static int alice_hello(struct qw_cascade_alice *a, struct cas_rd *r)
{
	uint64_t n, np, kv;
	uint8_t ver, sb;
	uint64_t seed = 0;
	uint32_t k[QW_CASCADE_MAX_PASSES];

	if (cas_rd_u8(r, &ver) || ver != CAS_WIRE_VERSION)
		return QW_EPARSE;
	if (cas_rd_var(r, &n) || n != a->key->nbits)
		return QW_EPARSE;
	for (unsigned i = 0; i < 8; i++) {
		if (cas_rd_u8(r, &sb))
			return QW_EPARSE;
		seed |= (uint64_t)sb << (8 * i);
	}
	if (cas_rd_var(r, &np) || np == 0 || np > QW_CASCADE_MAX_PASSES)
		return QW_EPARSE;
	for (unsigned p = 0; p < np; p++) {
		if (cas_rd_var(r, &kv) || kv == 0 || kv > n)
			return QW_EPARSE;
		k[p] = (uint32_t)kv;
	}
	if (count_block_passes(k, (unsigned)np, (size_t)n) > QW_CASCADE_MAX_BLOCK_PASSES)
		return QW_EPARSE;
	a->lay = cas_layout_get((size_t)n, seed, (unsigned)np, k);
	return a->lay ? 0 : QW_ENOMEM;
}

/* Range of node heap (1 = the whole block) inside [lo, hi); -1 if the
 * node does not exist (the path bisects a range of fewer than two bits). */
static int node_range(size_t *lo, size_t *hi, uint64_t heap)
{
	int d;

	if (heap == 0 || heap >= ((uint64_t)1 << 40))
		return -1;
	d = 63 - __builtin_clzll(heap);
	for (int i = d - 1; i >= 0; i--) {
		size_t mid;

		if (*hi - *lo < 2)
			return -1;
		mid = cas_mid(*lo, *hi);
		if ((heap >> i) & 1)
			*lo = mid;
		else
			*hi = mid;
	}
	return 0;
}

static const struct qw_bitvec *alice_view(struct qw_cascade_alice *a, unsigned p)
{
	const struct cas_layout *l = a->lay;

	if (l->kind[p] != CAS_KIND_PERM)
		return a->key;
	if (!a->pk[p]) {
		a->pk[p] = cas_bv_new(l->n);
		if (!a->pk[p])
			return NULL;
		cas_permute(a->pk[p], a->key, l->perm[p]);
	}
	return a->pk[p];
}

static int alice_roots(struct qw_cascade_alice *a, unsigned p, uint64_t b0, uint64_t cnt,
		       size_t at)
{
	const struct cas_layout *l = a->lay;
	const struct qw_bitvec *v = alice_view(a, p);

	if (!v)
		return QW_ENOMEM;
	if (l->kind[p] == CAS_KIND_MASK) {
		for (uint64_t i = 0; i < cnt; i++)
			put_bit(a->bits, at + i,
				cas_masked_parity(v, l->mask[p], (int)(b0 + i), 0, l->n));
		return 0;
	}
	cas_block_parities(v, l->k[p], (size_t)b0, (size_t)cnt, a->bits, at);
	return 0;
}

static int alice_queries(struct qw_cascade_alice *a, struct cas_rd *r, size_t *nans)
{
	uint64_t ngroups, hdr, x, cnt;
	size_t total = 0;
	int ret;

	if (cas_rd_var(r, &ngroups) || ngroups > r->len)
		return QW_EPARSE;
	for (uint64_t g = 0; g < ngroups; g++) {
		unsigned p;
		uint32_t nb;

		if (cas_rd_var(r, &hdr) || (hdr >> 1) >= a->lay->npasses)
			return QW_EPARSE;
		p = (unsigned)(hdr >> 1);
		nb = cas_nblocks(a->lay, p);
		if (hdr & 1) {
			if (cas_rd_var(r, &x) || cas_rd_var(r, &cnt) || x > nb || cnt > nb - x)
				return QW_EPARSE;
			if ((ret = alice_bits_reserve(a, total + cnt)) != 0)
				return ret;
			if ((ret = alice_roots(a, p, x, cnt, total)) != 0)
				return ret;
			total += cnt;
		} else {
			const struct cas_layout *l = a->lay;
			const struct qw_bitvec *v = alice_view(a, p);
			uint32_t k = l->k[p];
			int fast = l->kind[p] != CAS_KIND_MASK && !(k & (k - 1));
			unsigned dk = cas_depth(k);

			/* Each entry takes at least two bytes. */
			if (cas_rd_var(r, &cnt) || cnt > (r->len - r->off) / 2)
				return QW_EPARSE;
			if (!v)
				return QW_ENOMEM;
			if ((ret = alice_bits_reserve(a, total + cnt + 1)) != 0)
				return ret;
			/* Bits before total in the current word are kept. */
			uint64_t acc = a->bits[total >> 6] & (((uint64_t)1 << (total & 63)) - 1);

			for (uint64_t i = 0; i < cnt; i++) {
				uint64_t heap;
				size_t lo, hi;
				int par;

				if (cas_rd_var(r, &x) || cas_rd_var(r, &heap) || x >= nb)
					return QW_EPARSE;
				lo = (size_t)x * k;
				if (fast && heap && heap < ((uint64_t)2 << dk) && lo + k <= l->n) {
					/* Full power-of-two block: aligned node ranges. */
					unsigned d = 63 - (unsigned)__builtin_clzll(heap);
					size_t sz = (size_t)k >> d;

					lo += (size_t)(heap - ((uint64_t)1 << d)) * sz;
					par = cas_parity(v, lo, lo + sz);
				} else {
					cas_block_range(l, p, (uint32_t)x, &lo, &hi);
					if (node_range(&lo, &hi, heap))
						return QW_EPARSE;
					par = l->kind[p] == CAS_KIND_MASK
						      ? cas_masked_parity(v, l->mask[p], x == 1, lo, hi)
						      : cas_parity(v, lo, hi);
				}
				acc |= (uint64_t)par << (total & 63);
				if ((++total & 63) == 0) {
					a->bits[(total - 1) >> 6] = acc;
					acc = 0;
				}
			}
			if (total & 63)
				a->bits[total >> 6] = acc;
		}
	}
	if (r->off != r->len)
		return QW_EPARSE;
	*nans = total;
	return 0;
}

int qw_cascade_alice_answer(struct qw_cascade_alice *a, const uint8_t *msg, size_t len,
			    const uint8_t **ans, size_t *anslen)
{
	struct cas_rd r = { msg, len, 0 };
	uint8_t type;
	size_t nans = 0, nbytes;
	int ret;

	QW_REQUIRE(a != NULL && (msg != NULL || len == 0) && ans != NULL && anslen != NULL);
	if (a->done)
		return QW_ESTATE;
	if (cas_rd_u8(&r, &type))
		return QW_EPARSE;
	if (type == CAS_MSG_DONE) {
		uint64_t leaked, corrected, rt;

		if (cas_rd_var(&r, &leaked) || cas_rd_var(&r, &corrected) || cas_rd_var(&r, &rt) ||
		    r.off != r.len)
			return QW_EPARSE;
		if (leaked != a->st.leaked_bits)
			return QW_EPROTO;
		a->st.corrected_bits = corrected;
		a->st.bytes_to_alice += len;
		a->done = 1;
		return 1;
	}
	if (type == CAS_MSG_HELLO) {
		if (a->lay)
			return QW_EPARSE;
		if ((ret = alice_hello(a, &r)) != 0)
			return ret;
	} else if (type != CAS_MSG_QUERY || !a->lay) {
		return QW_EPARSE;
	}
	if ((ret = alice_queries(a, &r, &nans)) != 0) {
		/* A HELLO that fails later leaves no layout behind: the next
		 * well-formed HELLO may start afresh. */
		if (type == CAS_MSG_HELLO) {
			cas_layout_put(a->lay);
			a->lay = NULL;
		}
		return ret;
	}
	nbytes = (nans + 7) / 8;
	a->out.len = 0;
	if (cas_buf_reserve(&a->out, 11 + nbytes))
		return QW_ENOMEM;
	cas_buf_put_u8(&a->out, CAS_MSG_ANSWER);
	cas_buf_put_var(&a->out, nans);
	for (size_t i = 0; i < nbytes; i++)
		a->out.p[a->out.len++] = (uint8_t)(a->bits[i >> 3] >> (8 * (i & 7)));
	if (nans & 7)
		a->out.p[a->out.len - 1] &= (uint8_t)((1u << (nans & 7)) - 1);
	a->st.leaked_bits += nans;
	a->st.round_trips++;
	a->st.bytes_to_alice += len;
	a->st.bytes_to_bob += a->out.len;
	*ans = a->out.p;
	*anslen = a->out.len;
	return 0;
}
