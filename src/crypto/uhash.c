/* Polynomial hashing over GF(2^128) and the Wegman-Carter MAC; the field
 * convention and the security statements are in include/qwave/uhash.h. */
#include <math.h>
#include <string.h>

#include <openssl/crypto.h>

#include "qwave/secmem.h"
#include "qwave/uhash.h"

#if defined(__x86_64__) || defined(__i386__)
#define QW_HAVE_X86 1
#include <smmintrin.h>
#include <wmmintrin.h>
#endif

/* 64 x 64 -> 128 carry-less product, constant time (no table lookups or
 * branches on the operands: both may be secret). */
static void clmul64_ct(uint64_t a, uint64_t b, uint64_t *lo, uint64_t *hi)
{
	uint64_t l = 0, h = 0;

	l = a & (0 - (b & 1));
	for (unsigned i = 1; i < 64; i++) {
		uint64_t m = 0 - ((b >> i) & 1);

		l ^= (a << i) & m;
		h ^= (a >> (64 - i)) & m;
	}
	*lo = l;
	*hi = h;
}

/* Reduce the 256-bit product p[0..3] modulo x^128 + x^7 + x^2 + x + 1:
 * x^128 = x^7 + x^2 + x + 1, applied to p3 (landing in p1, p2) and then to
 * the updated p2 (landing in p0, p1). */
static void reduce_portable(uint64_t r[2], const uint64_t p[4])
{
	uint64_t p1 = p[1], p2 = p[2], p3 = p[3];

	p1 ^= p3 ^ (p3 << 1) ^ (p3 << 2) ^ (p3 << 7);
	p2 ^= (p3 >> 63) ^ (p3 >> 62) ^ (p3 >> 57);
	r[0] = p[0] ^ p2 ^ (p2 << 1) ^ (p2 << 2) ^ (p2 << 7);
	r[1] = p1 ^ (p2 >> 63) ^ (p2 >> 62) ^ (p2 >> 57);
}

void qw_gf128_mul_portable(uint64_t r[2], const uint64_t a[2], const uint64_t b[2])
{
	uint64_t l0, l1, h0, h1, m0, m1, p[4];

	/* Karatsuba: a0 b0, a1 b1, (a0 + a1)(b0 + b1). */
	clmul64_ct(a[0], b[0], &l0, &l1);
	clmul64_ct(a[1], b[1], &h0, &h1);
	clmul64_ct(a[0] ^ a[1], b[0] ^ b[1], &m0, &m1);
	m0 ^= l0 ^ h0;
	m1 ^= l1 ^ h1;
	p[0] = l0;
	p[1] = l1 ^ m0;
	p[2] = h0 ^ m1;
	p[3] = h1;
	reduce_portable(r, p);
}

#ifdef QW_HAVE_X86
__attribute__((target("pclmul,sse4.1"))) static void gf128_mul_clmul(uint64_t r[2],
								   const uint64_t a[2],
								   const uint64_t b[2])
{
	__m128i va = _mm_set_epi64x((long long)a[1], (long long)a[0]);
	__m128i vb = _mm_set_epi64x((long long)b[1], (long long)b[0]);
	__m128i lo = _mm_clmulepi64_si128(va, vb, 0x00);
	__m128i hi = _mm_clmulepi64_si128(va, vb, 0x11);
	__m128i mid = _mm_xor_si128(_mm_clmulepi64_si128(va, vb, 0x01),
				    _mm_clmulepi64_si128(va, vb, 0x10));
	__m128i poly = _mm_set_epi64x(0, 0x87);
	__m128i t, u;

	/* 256-bit product lo + mid x^64 + hi x^128 as words p0..p3. */
	lo = _mm_xor_si128(lo, _mm_slli_si128(mid, 8));
	hi = _mm_xor_si128(hi, _mm_srli_si128(mid, 8));
	/* p3 x^192 = p3 (x^7 + x^2 + x + 1) x^64: into p1, p2. */
	t = _mm_clmulepi64_si128(hi, poly, 0x01);
	lo = _mm_xor_si128(lo, _mm_slli_si128(t, 8));
	hi = _mm_xor_si128(hi, _mm_srli_si128(t, 8));
	/* p2 x^128 = p2 (x^7 + x^2 + x + 1): into p0, p1. */
	u = _mm_clmulepi64_si128(hi, poly, 0x00);
	lo = _mm_xor_si128(lo, u);
	r[0] = (uint64_t)_mm_extract_epi64(lo, 0);
	r[1] = (uint64_t)_mm_extract_epi64(lo, 1);
}
#endif

int qw_gf128_has_clmul(void)
{
#ifdef QW_HAVE_X86
	return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#else
	return 0;
#endif
}

void qw_gf128_mul(uint64_t r[2], const uint64_t a[2], const uint64_t b[2])
{
#ifdef QW_HAVE_X86
	if (qw_gf128_has_clmul()) {
		gf128_mul_clmul(r, a, b);
		return;
	}
#endif
	qw_gf128_mul_portable(r, a, b);
}

static uint64_t load_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void store_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void load_elem(uint64_t e[2], const uint8_t b[16])
{
	e[0] = load_le64(b);
	e[1] = load_le64(b + 8);
}

static void store_elem(uint8_t b[16], const uint64_t e[2])
{
	store_le64(b, e[0]);
	store_le64(b + 8, e[1]);
}

/* acc = (acc + m) k */
static void horner(uint64_t acc[2], const uint64_t m[2], const uint64_t k[2])
{
	acc[0] ^= m[0];
	acc[1] ^= m[1];
	qw_gf128_mul(acc, acc, k);
}

void qw_uhash_bytes(const uint8_t key[static QW_UHASH_KEY_BYTES], const uint8_t *msg,
		    size_t len, uint8_t out[static QW_UHASH_BYTES])
{
	uint64_t k[2], acc[2] = { 0, 0 }, m[2];
	uint8_t last[16];
	size_t i;

	QW_REQUIRE(msg || len == 0);
	load_elem(k, key);
	for (i = 0; i + 16 <= len; i += 16) {
		load_elem(m, msg + i);
		horner(acc, m, k);
	}
	if (i < len) {
		memset(last, 0, sizeof(last));
		memcpy(last, msg + i, len - i);
		load_elem(m, last);
		horner(acc, m, k);
		qw_wipe(last, sizeof(last));
	}
	m[0] = (uint64_t)len;
	m[1] = 0;
	horner(acc, m, k);
	store_elem(out, acc);
	qw_wipe(k, sizeof(k));
	qw_wipe(acc, sizeof(acc));
	qw_wipe(m, sizeof(m));
}

void qw_uhash_bits(const uint8_t key[static QW_UHASH_KEY_BYTES], const struct qw_bitvec *v,
		   uint8_t out[static QW_UHASH_BYTES])
{
	uint64_t k[2], acc[2] = { 0, 0 }, m[2];

	QW_REQUIRE(v);
	load_elem(k, key);
	/* Bits past nbits are zero (bitvec invariant), so whole words are the
	 * zero-padded blocks. */
	for (size_t i = 0; i < v->nwords; i += 2) {
		m[0] = v->w[i];
		m[1] = i + 1 < v->nwords ? v->w[i + 1] : 0;
		horner(acc, m, k);
	}
	m[0] = (uint64_t)v->nbits;
	m[1] = 1;
	horner(acc, m, k);
	store_elem(out, acc);
	qw_wipe(k, sizeof(k));
	qw_wipe(acc, sizeof(acc));
	qw_wipe(m, sizeof(m));
}

double qw_uhash_collision_bound(uint64_t len_bits, unsigned tag_bits)
{
	QW_REQUIRE(tag_bits >= 1 && tag_bits <= 128);
	return ldexp((double)(len_bits / 128 + (len_bits % 128 != 0) + 1), -(int)tag_bits);
}

struct qw_wcmac {
	uint8_t key[QW_WCMAC_KEY_BYTES];
};

struct qw_wcmac *qw_wcmac_new(const uint8_t hash_key[static QW_WCMAC_KEY_BYTES])
{
	struct qw_wcmac *mac = qw_secure_alloc(sizeof(*mac));

	if (!mac)
		return NULL;
	memcpy(mac->key, hash_key, QW_WCMAC_KEY_BYTES);
	return mac;
}

void qw_wcmac_free(struct qw_wcmac *mac)
{
	if (mac)
		qw_secure_free(mac, sizeof(*mac));
}

void qw_wcmac_tag(const struct qw_wcmac *mac, const uint8_t otp[static QW_WCMAC_OTP_BYTES],
		  const uint8_t *msg, size_t len, uint8_t tag[static QW_WCMAC_TAG_BYTES])
{
	QW_REQUIRE(mac);
	qw_uhash_bytes(mac->key, msg, len, tag);
	for (int i = 0; i < QW_WCMAC_TAG_BYTES; i++)
		tag[i] ^= otp[i];
}

int qw_wcmac_verify(const struct qw_wcmac *mac, const uint8_t otp[static QW_WCMAC_OTP_BYTES],
		    const uint8_t *msg, size_t len, const uint8_t tag[static QW_WCMAC_TAG_BYTES])
{
	uint8_t want[QW_WCMAC_TAG_BYTES];
	int ok;

	qw_wcmac_tag(mac, otp, msg, len, want);
	ok = CRYPTO_memcmp(want, tag, sizeof(want)) == 0;
	qw_wipe(want, sizeof(want));
	return ok ? 0 : QW_EAUTH;
}
