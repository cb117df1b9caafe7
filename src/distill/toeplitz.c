/* Toeplitz hashing for privacy amplification (include/qwave/toeplitz.h).
 *
 * y = T x with T[i][j] = s[i - j + n - 1] is the middle of the GF(2)[z]
 * product s(z) x(z): y_i = (s x)_(n-1+i). The matrix is cut into square
 * Toeplitz blocks of K = 64 W bits (W words). Block (I, J) maps x bits
 * [J K, J K + K) to y bits [I K, I K + K) and is itself Toeplitz with the
 * 2K - 1 seed bits starting at s[(I - J) K + n - K]. Each block is stored
 * as S' = those bits shifted up by one (S'[t] = S[t - 1], S'[0] unused), so
 * that its output is exactly words [W, 2W) of the product S' x: word
 * aligned, no bit shifts in the inner loops.
 *
 * A block product is a Toeplitz-matrix-vector product (TMVP). Split
 * T = [A B; C A] into K/2 blocks (A, B, C Toeplitz, with seeds S' words
 * [W/2, 3W/2), [0, W), [W, 2W)); then (M. A. Hasan, C. Negre, "Low space
 * complexity CRT-based bit-parallel GF(2^n) polynomial basis multipliers",
 * and the TMVP form of Karatsuba of H. Fan, M. A. Hasan, IEEE TC 56(2),
 * 2007, eq. (6)):
 *   P0 = A (x0 + x1),  P1 = (A + B) x1,  P2 = (A + C) x0,
 *   y0 = P0 + P1,      y1 = P0 + P2,
 * three half-size TMVPs plus O(W) XORs: O(W^log2(3)) word products. The
 * recursion stops at a schoolbook base of b words (16 <= b < 32), using
 * 256-bit VPCLMULQDQ or 128-bit PCLMULQDQ when the CPU has them (checked at
 * run time), else a portable table method indexed by the public seed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qwave/rng.h"
#include "qwave/secmem.h"
#include "qwave/toeplitz.h"
#include "toeplitz_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#define QW_HAVE_X86 1
#include <immintrin.h>
#include <smmintrin.h>
#include <wmmintrin.h>
#endif

#define KARATSUBA_BASE 16 /* base case words: [BASE, 2 BASE) */

struct tctx {
	int clmul; /* 0 portable, 1 PCLMULQDQ, 2 VPCLMULQDQ on 256-bit vectors */
	size_t base; /* recursion stops at or below this many words */
	uint64_t *z; /* 2 (max base + 1) words for the base case */
};

/* ---- base case: schoolbook middle product ------------------------------ */

/* y[q] = word b + q of S' x (q < b), S' of 2b words, x of b words. With
 * Z_k = sum_j S'[k - j] x[j] (128-bit), y[q] = lo(Z_(b+q)) + hi(Z_(b+q-1)),
 * so only k in [b - 1, 2b - 1] is needed. */
static void base_portable(size_t b, const uint64_t *s, const uint64_t *x, uint64_t *y,
			  uint64_t *z)
{
	uint64_t *zlo = z, *zhi = z + b + 1;

	memset(z, 0, 2 * (b + 1) * sizeof(*z));
	for (size_t j = 0; j < b; j++) {
		uint64_t tlo[16], thi[16];

		/* Multiples of the (secret) key word by every 4-bit value; the
		 * (public) seed nibbles index the table, so lookups reveal
		 * nothing about the key. */
		tlo[0] = thi[0] = 0;
		for (unsigned v = 1; v < 16; v++) {
			unsigned low = v & (v - 1); /* v without its lowest bit */
			unsigned bit = v ^ low;
			unsigned sh = (unsigned)__builtin_ctz(bit);

			tlo[v] = tlo[low] ^ (x[j] << sh);
			thi[v] = thi[low] ^ (sh ? x[j] >> (64 - sh) : 0);
		}
		for (size_t k = b - 1; k <= 2 * b - 1; k++) {
			uint64_t sw = s[k - j], lo = 0, hi = 0;

			for (int i = 60; i >= 0; i -= 4) {
				unsigned v = (unsigned)(sw >> i) & 15;

				hi = (hi << 4) | (lo >> 60);
				lo <<= 4;
				lo ^= tlo[v];
				hi ^= thi[v];
			}
			zlo[k - (b - 1)] ^= lo;
			zhi[k - (b - 1)] ^= hi;
		}
		qw_wipe(tlo, sizeof(tlo));
		qw_wipe(thi, sizeof(thi));
	}
	for (size_t q = 0; q < b; q++)
		y[q] = zlo[q + 1] ^ zhi[q];
}

#ifdef QW_HAVE_X86
__attribute__((target("pclmul,sse4.1"))) static void base_clmul(size_t b, const uint64_t *s,
							      const uint64_t *x, uint64_t *y,
							      uint64_t *z)
{
	uint64_t *zlo = z, *zhi = z + b + 1;

	for (size_t k = b - 1; k <= 2 * b - 1; k++) {
		__m128i a0 = _mm_setzero_si128(), a1 = _mm_setzero_si128();
		size_t j = 0;

		/* Pairs: (x[j], x[j+1]) against (S'[k-j-1], S'[k-j]). */
		for (; j + 2 <= b; j += 2) {
			__m128i xv = _mm_loadu_si128((const __m128i *)(const void *)(x + j));
			__m128i sv = _mm_loadu_si128((const __m128i *)(const void *)(s + k - j - 1));

			a0 = _mm_xor_si128(a0, _mm_clmulepi64_si128(xv, sv, 0x10));
			a1 = _mm_xor_si128(a1, _mm_clmulepi64_si128(xv, sv, 0x01));
		}
		if (j < b) {
			__m128i xv = _mm_loadl_epi64((const __m128i *)(const void *)(x + j));
			__m128i sv = _mm_loadl_epi64((const __m128i *)(const void *)(s + k - j));

			a0 = _mm_xor_si128(a0, _mm_clmulepi64_si128(xv, sv, 0x00));
		}
		a0 = _mm_xor_si128(a0, a1);
		zlo[k - (b - 1)] = (uint64_t)_mm_extract_epi64(a0, 0);
		zhi[k - (b - 1)] = (uint64_t)_mm_extract_epi64(a0, 1);
	}
	for (size_t q = 0; q < b; q++)
		y[q] = zlo[q + 1] ^ zhi[q];
}

/* The same with 256-bit VPCLMULQDQ: four word products per two
 * instructions. Each 128-bit lane multiplies a pair of x words by a pair of
 * seed words; x's lanes are swapped once per base case so that a plain
 * load of S'[k-j-3 .. k-j] lines up (lane 0: x[j+2], x[j+3] against
 * S'[k-j-3], S'[k-j-2]; lane 1: x[j], x[j+1] against S'[k-j-1], S'[k-j]). */
__attribute__((target("vpclmulqdq,avx2,pclmul,sse4.1"))) static void
base_vclmul(size_t b, const uint64_t *s, const uint64_t *x, uint64_t *y, uint64_t *z)
{
	uint64_t *zlo = z, *zhi = z + b + 1;
	size_t b4 = b & ~(size_t)3;
	__m256i xs[8];

	for (size_t j = 0; j < b4; j += 4)
		xs[j / 4] = _mm256_permute4x64_epi64(
			_mm256_loadu_si256((const __m256i *)(const void *)(x + j)), 0x4e);
	for (size_t k = b - 1; k <= 2 * b - 1; k++) {
		__m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
		__m128i r;
		size_t j = 0;

		for (; j < b4; j += 4) {
			__m256i sv = _mm256_loadu_si256((const __m256i *)(const void *)(s + k - j - 3));

			a0 = _mm256_xor_si256(a0, _mm256_clmulepi64_epi128(xs[j / 4], sv, 0x10));
			a1 = _mm256_xor_si256(a1, _mm256_clmulepi64_epi128(xs[j / 4], sv, 0x01));
		}
		a0 = _mm256_xor_si256(a0, a1);
		r = _mm_xor_si128(_mm256_castsi256_si128(a0), _mm256_extracti128_si256(a0, 1));
		for (; j < b; j++) {
			__m128i xv = _mm_loadl_epi64((const __m128i *)(const void *)(x + j));
			__m128i sv = _mm_loadl_epi64((const __m128i *)(const void *)(s + k - j));

			r = _mm_xor_si128(r, _mm_clmulepi64_si128(xv, sv, 0x00));
		}
		zlo[k - (b - 1)] = (uint64_t)_mm_extract_epi64(r, 0);
		zhi[k - (b - 1)] = (uint64_t)_mm_extract_epi64(r, 1);
	}
	for (size_t q = 0; q < b; q++)
		y[q] = zlo[q + 1] ^ zhi[q];
}
#endif

static void base_case(const struct tctx *c, size_t b, const uint64_t *s, const uint64_t *x,
		      uint64_t *y)
{
#ifdef QW_HAVE_X86
	if (c->clmul == 2 && b <= 32) {
		base_vclmul(b, s, x, y, c->z);
		return;
	}
	if (c->clmul) {
		base_clmul(b, s, x, y, c->z);
		return;
	}
#endif
	base_portable(b, s, x, y, c->z);
}

/* ---- Karatsuba TMVP ----------------------------------------------------- */

static void xor_words(uint64_t *d, const uint64_t *a, const uint64_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		d[i] = a[i] ^ b[i];
}

/* y (W words) = block with seed S' (2W words) times x (W words). scratch:
 * 4W words. W is base * 2^L. */
static void tmvp(const struct tctx *c, size_t w, const uint64_t *s, const uint64_t *x,
		 uint64_t *y, uint64_t *scratch)
{
	size_t h = w / 2;
	uint64_t *xs, *ss, *p0, *next;

	if (w <= c->base || (w & 1)) {
		base_case(c, w, s, x, y);
		return;
	}
	xs = scratch;     /* h words */
	p0 = xs + h;      /* h words */
	ss = p0 + h;      /* w words */
	next = ss + w;    /* 2w words for the recursion */

	/* P0 = A (x0 + x1) */
	xor_words(xs, x, x + h, h);
	tmvp(c, h, s + h, xs, p0, next);
	/* y0 = P0 + (A + B) x1 */
	xor_words(ss, s + h, s, w);
	tmvp(c, h, ss, x + h, y, next);
	xor_words(y, y, p0, h);
	/* y1 = P0 + (A + C) x0 */
	xor_words(ss, s + h, s + w, w);
	tmvp(c, h, ss, x, y + h, next);
	xor_words(y + h, y + h, p0, h);
}

/* ---- driver ------------------------------------------------------------- */

/* 64 seed bits starting at bit off (may be negative), zero outside
 * [0, nbits); bits past nbits in the last word are zero by the bitvec
 * invariant. */
static uint64_t seed_word(const struct qw_bitvec *s, long long off)
{
	size_t q, sh;
	uint64_t v;

	if (off <= -64 || off >= (long long)s->nbits)
		return 0;
	if (off < 0)
		return s->w[0] << (unsigned)(-off);
	q = (size_t)off >> 6;
	sh = (size_t)off & 63;
	v = s->w[q] >> sh;
	if (sh && q + 1 < s->nwords)
		v |= s->w[q + 1] << (64 - sh);
	return v;
}

static void reference(const struct qw_bitvec *key, const struct qw_bitvec *seed, size_t m,
		      struct qw_bitvec *out)
{
	size_t n = key->nbits;

	for (size_t i = 0; i < m; i++) {
		int bit = 0;

		for (size_t j = 0; j < n; j++)
			bit ^= qw_bitvec_get(seed, i - j + n - 1) & qw_bitvec_get(key, j);
		qw_bitvec_set(out, i, bit);
	}
}

/* Block size for the Karatsuba method: W = b 2^L >= mw with
 * BASE <= b < 2 BASE (or W = mw when mw is small). */
static size_t karatsuba_block(size_t mw, size_t *base)
{
	size_t l = 0;

	while ((mw + ((size_t)1 << l) - 1) >> l >= 2 * KARATSUBA_BASE)
		l++;
	*base = (mw + ((size_t)1 << l) - 1) >> l;
	return *base << l;
}

static int blocked(const struct qw_bitvec *key, const struct qw_bitvec *seed, size_t m,
		   struct qw_bitvec *out, int karatsuba, int clmul)
{
	size_t n = key->nbits, mw = QW_BITVEC_WORDS(m), w, base, rows, cols;
	uint64_t *buf = NULL, *s, *x, *y, *acc, *scratch;
	struct tctx c;
	long long kbits;
	int ret = QW_ENOMEM;

	if (karatsuba) {
		w = karatsuba_block(mw, &base);
	} else {
		w = mw;
		base = mw;
	}
	rows = (m + 64 * w - 1) / (64 * w);
	cols = (n + 64 * w - 1) / (64 * w);
	kbits = 64 * (long long)w;
	/* s: 2w, x: w, y: w, acc: rows w, scratch 4w, z 2 (w + 1). */
	buf = qw_calloc(2 * w + w + w + rows * w + 4 * w + 2 * (w + 1), sizeof(*buf));
	if (!buf)
		goto out;
	s = buf;
	x = s + 2 * w;
	y = x + w;
	acc = y + w;
	scratch = acc + rows * w;
	c.z = scratch + 4 * w;
	c.base = base;
	c.clmul = clmul;

	for (size_t jb = 0; jb < cols; jb++) {
		size_t x0 = jb * w, nx = x0 + w <= key->nwords ? w : key->nwords - x0;

		memcpy(x, key->w + x0, nx * sizeof(*x));
		memset(x + nx, 0, (w - nx) * sizeof(*x));
		for (size_t ib = 0; ib < rows; ib++) {
			/* S'[t] = s[t - 1 + (I - J) K + n - K]. */
			long long off = ((long long)ib - (long long)jb) * kbits + (long long)n -
					kbits - 1;

			for (size_t t = 0; t < 2 * w; t++)
				s[t] = seed_word(seed, off + 64 * (long long)t);
			tmvp(&c, w, s, x, y, scratch);
			xor_words(acc + ib * w, acc + ib * w, y, w);
		}
	}
	memcpy(out->w, acc, out->nwords * sizeof(*acc));
	if (m & 63)
		out->w[out->nwords - 1] &= ((uint64_t)1 << (m & 63)) - 1;
	ret = 0;
out:
	/* x, y, acc, scratch and z held key material. */
	qw_free_secret(buf, buf ? (2 * w + w + w + rows * w + 4 * w + 2 * (w + 1)) *
					  sizeof(*buf) : 0);
	return ret;
}

int qw_tpz_isa_level(enum qw_toeplitz_isa isa)
{
	if (isa == QW_TOEPLITZ_ISA_PORTABLE)
		return 0;
#ifdef QW_HAVE_X86
	if (!__builtin_cpu_supports("pclmul") || !__builtin_cpu_supports("sse4.1"))
		return 0;
	if (__builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("avx2"))
		return isa == QW_TOEPLITZ_ISA_PCLMUL ? 1 : 2;
	return 1;
#else
	return 0;
#endif
}

/* Measured (docs/pa.md, VPCLMULQDQ, per core): Karatsuba takes about
 * 3.1e-6 us n m^0.585 and the FFT 4.3e-4 us per qw_tpz_fft_cost unit, both
 * within 10% from n = 2^14 to 2^22 and m / n = 0.02 to 0.5. The crossover
 * is near m = 2^16 .. 2^17 bits. */
static int prefer_fft(size_t n, size_t m)
{
	double fft = qw_tpz_fft_cost(n, m);

	return fft > 0 && 4.3e-4 * fft < 3.1e-6 * (double)n * pow((double)m, 0.585);
}

int qw_toeplitz_hash_ex(const struct qw_bitvec *key, const struct qw_bitvec *seed, size_t m,
			struct qw_bitvec *out, const struct qw_toeplitz_opts *opts)
{
	enum qw_toeplitz_method method = opts ? opts->method : QW_TOEPLITZ_AUTO;
	int clmul = qw_tpz_isa_level(opts ? opts->isa : QW_TOEPLITZ_ISA_BEST);
	size_t n;
	int ret;

	QW_REQUIRE(key && seed && out);
	n = key->nbits;
	if (n == 0 || m == 0 || m > n || seed->nbits != n + m - 1)
		return QW_EINVAL;
	ret = qw_bitvec_resize(out, m);
	if (ret)
		return ret;
	switch (method) {
	case QW_TOEPLITZ_REFERENCE:
		reference(key, seed, m, out);
		return 0;
	case QW_TOEPLITZ_SCHOOLBOOK:
		return blocked(key, seed, m, out, 0, clmul);
	case QW_TOEPLITZ_FFT:
		return qw_tpz_fft_hash(key, seed, m, out, clmul);
	case QW_TOEPLITZ_AUTO:
		if (prefer_fft(n, m))
			return qw_tpz_fft_hash(key, seed, m, out, clmul);
		return blocked(key, seed, m, out, 1, clmul);
	case QW_TOEPLITZ_KARATSUBA:
		return blocked(key, seed, m, out, 1, clmul);
	default:
		return QW_EUNSUPPORTED;
	}
}

int qw_toeplitz_hash(const struct qw_bitvec *key, const struct qw_bitvec *seed, size_t m,
		     struct qw_bitvec *out)
{
	return qw_toeplitz_hash_ex(key, seed, m, out, NULL);
}

static const char *const method_names[] = {
	[QW_TOEPLITZ_AUTO] = "auto",
	[QW_TOEPLITZ_REFERENCE] = "reference",
	[QW_TOEPLITZ_SCHOOLBOOK] = "schoolbook",
	[QW_TOEPLITZ_KARATSUBA] = "karatsuba",
	[QW_TOEPLITZ_FFT] = "fft",
};

const char *qw_toeplitz_method_name(enum qw_toeplitz_method m)
{
	if ((unsigned)m < sizeof(method_names) / sizeof(method_names[0]))
		return method_names[m];
	return "unknown";
}

int qw_toeplitz_method_parse(const char *name)
{
	for (size_t i = 0; i < sizeof(method_names) / sizeof(method_names[0]); i++)
		if (!strcmp(name, method_names[i]))
			return (int)i;
	return -1;
}

/* ---- the privacy amplification stage ------------------------------------ */

/* id (8) | n (8) | m (8), big-endian, then the seed's words little-endian */
#define PA_MSG_HDR 24

struct pa_state {
	struct qw_rng *rng;
	enum qw_toeplitz_method method;
};

static int pa_init(void **state, const void *params)
{
	const struct qw_pa_params *p = params;
	struct pa_state *s = calloc(1, sizeof(*s));

	if (!s)
		return QW_ENOMEM;
	if (p) {
		s->rng = p->rng;
		s->method = p->method;
	}
	*state = s;
	return 0;
}

static void pa_free(void *state)
{
	free(state);
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

/* Alice: draw the seed and send it. The seed is public; it only has to be
 * uniform and independent of the key, which the DRBG gives. */
static int seed_send(const struct pa_state *s, const struct qw_key_block *b, size_t m,
		     struct qw_bitvec *seed, struct qw_distill_chan *chan)
{
	size_t nw = seed->nwords, len = PA_MSG_HDR + 8 * nw;
	uint8_t *msg = malloc(len);
	int ret;

	if (!msg)
		return QW_ENOMEM;
	ret = s->rng ? qw_rng_bytes(s->rng, seed->w, nw * 8) : qw_random_bytes(seed->w, nw * 8);
	if (ret)
		goto out;
	if (seed->nbits & 63)
		seed->w[nw - 1] &= ((uint64_t)1 << (seed->nbits & 63)) - 1;
	put_be64(msg, b->id);
	put_be64(msg + 8, b->key->nbits);
	put_be64(msg + 16, m);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	/* The wire order is the words' little-endian bytes: one copy. */
	memcpy(msg + PA_MSG_HDR, seed->w, 8 * nw);
#else
	for (size_t i = 0; i < nw; i++)
		for (int k = 0; k < 8; k++)
			msg[PA_MSG_HDR + 8 * i + (size_t)k] = (uint8_t)(seed->w[i] >> (8 * k));
#endif
	ret = chan->send(chan->ctx, QW_MSG_PA_SEED, msg, len);
out:
	free(msg);
	return ret;
}

/* Bob: receive the seed for exactly this block, n and m. */
static int seed_recv(const struct qw_key_block *b, size_t m, struct qw_bitvec *seed,
		     struct qw_distill_chan *chan)
{
	size_t nw = seed->nwords, len;
	uint8_t *msg = NULL;
	uint32_t type;
	int ret = chan->recv(chan->ctx, &type, &msg, &len);

	if (ret)
		return ret;
	ret = QW_EPROTO;
	if (type != QW_MSG_PA_SEED || len != PA_MSG_HDR + 8 * nw || get_be64(msg) != b->id ||
	    get_be64(msg + 8) != b->key->nbits || get_be64(msg + 16) != m)
		goto out;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(seed->w, msg + PA_MSG_HDR, 8 * nw);
#else
	for (size_t i = 0; i < nw; i++) {
		uint64_t v = 0;

		for (int k = 7; k >= 0; k--)
			v = (v << 8) | msg[PA_MSG_HDR + 8 * i + (size_t)k];
		seed->w[i] = v;
	}
#endif
	if ((seed->nbits & 63) && (seed->w[nw - 1] >> (seed->nbits & 63)))
		goto out; /* bits past the seed's length must be zero */
	ret = 0;
out:
	free(msg);
	return ret;
}

static enum qw_stage_result pa_process(void *state, struct qw_key_block *b,
				       struct qw_distill_chan *chan)
{
	const struct pa_state *s = state;
	struct qw_toeplitz_opts o = { s ? s->method : QW_TOEPLITZ_AUTO, QW_TOEPLITZ_ISA_BEST };
	struct qw_bitvec *seed = NULL, *out = NULL;
	enum qw_stage_result res = QW_STAGE_ERROR;
	size_t n, m;

	QW_REQUIRE(s && b && chan);
	if (b->state != QW_BLOCK_VERIFIED || !b->key || b->key->nbits == 0)
		return QW_STAGE_ERROR;
	if (b->secret_bits == 0) {
		snprintf(b->drop_reason, sizeof(b->drop_reason),
			 "privacy amplification: secret length is zero");
		return QW_STAGE_DROP;
	}
	n = b->key->nbits;
	if (b->secret_bits > n)
		return QW_STAGE_ERROR;
	m = (size_t)b->secret_bits;
	seed = qw_bitvec_new(n + m - 1);
	out = qw_bitvec_new(m);
	if (!seed || !out)
		goto out;
	if (b->role == QW_ROLE_ALICE ? seed_send(s, b, m, seed, chan) : seed_recv(b, m, seed, chan))
		goto out;
	if (qw_toeplitz_hash_ex(b->key, seed, m, out, &o))
		goto out;
	qw_bitvec_free(b->key);
	b->key = out;
	out = NULL;
	b->state = QW_BLOCK_AMPLIFIED;
	res = QW_STAGE_FORWARD;
out:
	qw_bitvec_free(seed);
	qw_bitvec_free(out);
	return res;
}

const struct qw_stage qw_stage_pa = {
	.name = "pa",
	.init = pa_init,
	.process = pa_process,
	.free = pa_free,
};
