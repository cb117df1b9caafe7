/* ZUC-128, 128-EEA3, 128-EIA3, ZUC-256 and its MAC. See qwave/zuc.h for
 * the documents implemented; clause numbers below refer to them
 * ("Doc2" = ZUC specification v1.6, "Doc1" = 128-EEA3/128-EIA3
 * specification, "Z256" = the 2018 ZUC-256 paper). */
#include "qwave/zuc.h"

#include <limits.h>
#include <string.h>

#include "qwave/secmem.h"

/* Doc2 3.4.2: the S-boxes S0 and S1. */
static const uint8_t S0[256] = {
	0x3e, 0x72, 0x5b, 0x47, 0xca, 0xe0, 0x00, 0x33, 0x04, 0xd1, 0x54, 0x98, 0x09, 0xb9, 0x6d, 0xcb,
	0x7b, 0x1b, 0xf9, 0x32, 0xaf, 0x9d, 0x6a, 0xa5, 0xb8, 0x2d, 0xfc, 0x1d, 0x08, 0x53, 0x03, 0x90,
	0x4d, 0x4e, 0x84, 0x99, 0xe4, 0xce, 0xd9, 0x91, 0xdd, 0xb6, 0x85, 0x48, 0x8b, 0x29, 0x6e, 0xac,
	0xcd, 0xc1, 0xf8, 0x1e, 0x73, 0x43, 0x69, 0xc6, 0xb5, 0xbd, 0xfd, 0x39, 0x63, 0x20, 0xd4, 0x38,
	0x76, 0x7d, 0xb2, 0xa7, 0xcf, 0xed, 0x57, 0xc5, 0xf3, 0x2c, 0xbb, 0x14, 0x21, 0x06, 0x55, 0x9b,
	0xe3, 0xef, 0x5e, 0x31, 0x4f, 0x7f, 0x5a, 0xa4, 0x0d, 0x82, 0x51, 0x49, 0x5f, 0xba, 0x58, 0x1c,
	0x4a, 0x16, 0xd5, 0x17, 0xa8, 0x92, 0x24, 0x1f, 0x8c, 0xff, 0xd8, 0xae, 0x2e, 0x01, 0xd3, 0xad,
	0x3b, 0x4b, 0xda, 0x46, 0xeb, 0xc9, 0xde, 0x9a, 0x8f, 0x87, 0xd7, 0x3a, 0x80, 0x6f, 0x2f, 0xc8,
	0xb1, 0xb4, 0x37, 0xf7, 0x0a, 0x22, 0x13, 0x28, 0x7c, 0xcc, 0x3c, 0x89, 0xc7, 0xc3, 0x96, 0x56,
	0x07, 0xbf, 0x7e, 0xf0, 0x0b, 0x2b, 0x97, 0x52, 0x35, 0x41, 0x79, 0x61, 0xa6, 0x4c, 0x10, 0xfe,
	0xbc, 0x26, 0x95, 0x88, 0x8a, 0xb0, 0xa3, 0xfb, 0xc0, 0x18, 0x94, 0xf2, 0xe1, 0xe5, 0xe9, 0x5d,
	0xd0, 0xdc, 0x11, 0x66, 0x64, 0x5c, 0xec, 0x59, 0x42, 0x75, 0x12, 0xf5, 0x74, 0x9c, 0xaa, 0x23,
	0x0e, 0x86, 0xab, 0xbe, 0x2a, 0x02, 0xe7, 0x67, 0xe6, 0x44, 0xa2, 0x6c, 0xc2, 0x93, 0x9f, 0xf1,
	0xf6, 0xfa, 0x36, 0xd2, 0x50, 0x68, 0x9e, 0x62, 0x71, 0x15, 0x3d, 0xd6, 0x40, 0xc4, 0xe2, 0x0f,
	0x8e, 0x83, 0x77, 0x6b, 0x25, 0x05, 0x3f, 0x0c, 0x30, 0xea, 0x70, 0xb7, 0xa1, 0xe8, 0xa9, 0x65,
	0x8d, 0x27, 0x1a, 0xdb, 0x81, 0xb3, 0xa0, 0xf4, 0x45, 0x7a, 0x19, 0xdf, 0xee, 0x78, 0x34, 0x60,
};

static const uint8_t S1[256] = {
	0x55, 0xc2, 0x63, 0x71, 0x3b, 0xc8, 0x47, 0x86, 0x9f, 0x3c, 0xda, 0x5b, 0x29, 0xaa, 0xfd, 0x77,
	0x8c, 0xc5, 0x94, 0x0c, 0xa6, 0x1a, 0x13, 0x00, 0xe3, 0xa8, 0x16, 0x72, 0x40, 0xf9, 0xf8, 0x42,
	0x44, 0x26, 0x68, 0x96, 0x81, 0xd9, 0x45, 0x3e, 0x10, 0x76, 0xc6, 0xa7, 0x8b, 0x39, 0x43, 0xe1,
	0x3a, 0xb5, 0x56, 0x2a, 0xc0, 0x6d, 0xb3, 0x05, 0x22, 0x66, 0xbf, 0xdc, 0x0b, 0xfa, 0x62, 0x48,
	0xdd, 0x20, 0x11, 0x06, 0x36, 0xc9, 0xc1, 0xcf, 0xf6, 0x27, 0x52, 0xbb, 0x69, 0xf5, 0xd4, 0x87,
	0x7f, 0x84, 0x4c, 0xd2, 0x9c, 0x57, 0xa4, 0xbc, 0x4f, 0x9a, 0xdf, 0xfe, 0xd6, 0x8d, 0x7a, 0xeb,
	0x2b, 0x53, 0xd8, 0x5c, 0xa1, 0x14, 0x17, 0xfb, 0x23, 0xd5, 0x7d, 0x30, 0x67, 0x73, 0x08, 0x09,
	0xee, 0xb7, 0x70, 0x3f, 0x61, 0xb2, 0x19, 0x8e, 0x4e, 0xe5, 0x4b, 0x93, 0x8f, 0x5d, 0xdb, 0xa9,
	0xad, 0xf1, 0xae, 0x2e, 0xcb, 0x0d, 0xfc, 0xf4, 0x2d, 0x46, 0x6e, 0x1d, 0x97, 0xe8, 0xd1, 0xe9,
	0x4d, 0x37, 0xa5, 0x75, 0x5e, 0x83, 0x9e, 0xab, 0x82, 0x9d, 0xb9, 0x1c, 0xe0, 0xcd, 0x49, 0x89,
	0x01, 0xb6, 0xbd, 0x58, 0x24, 0xa2, 0x5f, 0x38, 0x78, 0x99, 0x15, 0x90, 0x50, 0xb8, 0x95, 0xe4,
	0xd0, 0x91, 0xc7, 0xce, 0xed, 0x0f, 0xb4, 0x6f, 0xa0, 0xcc, 0xf0, 0x02, 0x4a, 0x79, 0xc3, 0xde,
	0xa3, 0xef, 0xea, 0x51, 0xe6, 0x6b, 0x18, 0xec, 0x1b, 0x2c, 0x80, 0xf7, 0x74, 0xe7, 0xff, 0x21,
	0x5a, 0x6a, 0x54, 0x1e, 0x41, 0x31, 0x92, 0x35, 0xc4, 0x33, 0x07, 0x0a, 0xba, 0x7e, 0x0e, 0x34,
	0x88, 0xb1, 0x98, 0x7c, 0xf3, 0x3d, 0x60, 0x6c, 0x7b, 0xca, 0xd3, 0x1f, 0x32, 0x65, 0x04, 0x28,
	0x64, 0xbe, 0x85, 0x9b, 0x2f, 0x59, 0x8a, 0xd7, 0xb0, 0x25, 0xac, 0xaf, 0x12, 0x03, 0xe2, 0xf2,
};

/* Doc2 3.5: the 15-bit constants d0..d15 of ZUC-128 key loading. */
static const uint16_t EK_D[16] = {
	0x44d7, 0x26bc, 0x626b, 0x135e, 0x5789, 0x35e2, 0x7135, 0x09af,
	0x4d78, 0x2f13, 0x6bc4, 0x1af1, 0x5e26, 0x3c4d, 0x789a, 0x47ac,
};

/* Z256 section 2: the 7-bit constants of ZUC-256 key loading. Only d0 and
 * d2 differ between keystream generation and the three MAC lengths, which
 * is what separates the four uses of one key. */
enum { Z256_KEYSTREAM, Z256_MAC32, Z256_MAC64, Z256_MAC128 };
static const uint8_t Z256_D[4][16] = {
	{ 0x22, 0x2f, 0x24, 0x2a, 0x6d, 0x40, 0x40, 0x40,
	  0x40, 0x40, 0x40, 0x40, 0x40, 0x52, 0x10, 0x30 },
	{ 0x22, 0x2f, 0x25, 0x2a, 0x6d, 0x40, 0x40, 0x40,
	  0x40, 0x40, 0x40, 0x40, 0x40, 0x52, 0x10, 0x30 },
	{ 0x23, 0x2f, 0x24, 0x2a, 0x6d, 0x40, 0x40, 0x40,
	  0x40, 0x40, 0x40, 0x40, 0x40, 0x52, 0x10, 0x30 },
	{ 0x23, 0x2f, 0x25, 0x2a, 0x6d, 0x40, 0x40, 0x40,
	  0x40, 0x40, 0x40, 0x40, 0x40, 0x52, 0x10, 0x30 },
};

#define P31 0x7fffffffu

static inline uint32_t rol32(uint32_t x, unsigned k)
{
	return (x << k) | (x >> (32 - k));
}

/* Reduce a < 2^54 modulo p = 2^31-1 (2^31 = 1 mod p, so the bits above
 * 31 fold back in). Two folds reach [1, p] for any non-zero a; folding never
 * produces 0, so a multiple of p comes out as p itself: exactly the "if
 * s16 = 0 then s16 = 2^31-1" rule of Doc2 3.2.1/3.2.2 (all LFSR cells are
 * non-zero, so the sums reduced here are too). */
static inline uint32_t mod31(uint64_t a)
{
	a = (a & P31) + (a >> 31);
	a = (a & P31) + (a >> 31);
	return (uint32_t)a;
}

/* Doc2 3.4.1: the linear transforms L1 and L2. */
static inline uint32_t L1(uint32_t x)
{
	return x ^ rol32(x, 2) ^ rol32(x, 10) ^ rol32(x, 18) ^ rol32(x, 24);
}

static inline uint32_t L2(uint32_t x)
{
	return x ^ rol32(x, 8) ^ rol32(x, 14) ^ rol32(x, 22) ^ rol32(x, 30);
}

/* Doc2 3.4.2: S = (S0, S1, S0, S1) applied bytewise, most significant
 * byte first. */
static inline uint32_t sbox(uint32_t x)
{
	return ((uint32_t)S0[x >> 24] << 24) | ((uint32_t)S1[(x >> 16) & 0xff] << 16) |
	       ((uint32_t)S0[(x >> 8) & 0xff] << 8) | S1[x & 0xff];
}

/* One clock with the LFSR cells addressed through a rotating offset o:
 * cell i of the spec is s[(o + i) & 15], and the new s16 overwrites s0's
 * slot. With o a compile-time constant in the unrolled loop below this costs
 * no data movement. Returns W (Doc2 3.4) and updates R1/R2.
 *
 * Bit reorganisation (Doc2 3.3): X0 = s15H||s14L, X1 = s11L||s9H,
 * X2 = s7L||s5H, X3 = s2L||s0H, where H is bits 30..15 and L bits 15..0.
 * mode: 0 = working mode (3.2.2), 1 = initialisation mode (3.2.1, the LFSR
 * also absorbs u = W >> 1); x3 receives X3 for keystream output. */
#define CELL(st, o, i) ((st)[((o) + (i)) & 15])

static inline uint32_t zuc_clock(uint32_t *s, unsigned o, uint32_t *r1,
				 uint32_t *r2, int init, uint32_t *x3)
{
	uint32_t X0 = ((CELL(s, o, 15) & 0x7fff8000u) << 1) | (CELL(s, o, 14) & 0xffffu);
	uint32_t X1 = (CELL(s, o, 11) << 16) | (CELL(s, o, 9) >> 15);
	uint32_t X2 = (CELL(s, o, 7) << 16) | (CELL(s, o, 5) >> 15);
	uint32_t W = (X0 ^ *r1) + *r2;
	uint32_t W1 = *r1 + X1;
	uint32_t W2 = *r2 ^ X2;
	uint32_t s0 = CELL(s, o, 0);
	uint64_t v;

	*x3 = (CELL(s, o, 2) << 16) | (s0 >> 15);
	*r1 = sbox(L1((W1 << 16) | (W2 >> 16)));
	*r2 = sbox(L2((W2 << 16) | (W1 >> 16)));

	/* Doc2 3.2: s16 = 2^15 s15 + 2^17 s13 + 2^21 s10 + 2^20 s4
	 * + (1 + 2^8) s0 mod (2^31 - 1). The products are summed unreduced
	 * (below 2^31 * 2^22) and reduced once, instead of one 31-bit
	 * rotation per term. */
	v = (uint64_t)s0 + ((uint64_t)s0 << 8) + ((uint64_t)CELL(s, o, 4) << 20) +
	    ((uint64_t)CELL(s, o, 10) << 21) + ((uint64_t)CELL(s, o, 13) << 17) +
	    ((uint64_t)CELL(s, o, 15) << 15);
	if (init)
		v += W >> 1;
	CELL(s, o, 0) = mod31(v);
	return W;
}

static void reverse_cells(uint32_t *s, unsigned lo, unsigned hi)
{
	while (lo < hi) {
		uint32_t t = s[lo];

		s[lo++] = s[hi];
		s[hi--] = t;
	}
}

/* Rotate the 16 cells left by k (1..15) in place with three reversals,
 * so that the spec's s0 is again s[0] after k clocks at rotating offsets.
 * In place, so no copy of the state is left behind to wipe. */
static void realign(uint32_t s[16], unsigned k)
{
	reverse_cells(s, 0, k - 1);
	reverse_cells(s, k, 15);
	reverse_cells(s, 0, 15);
}

/* Shared tail of both key loadings (Doc2 3.6.1-3.6.2, Z256 section 2):
 * 32 initialisation rounds, then one working round whose output is
 * discarded. */
static void zuc_run_init(struct qw_zuc *st)
{
	uint32_t x3;
	unsigned o = 0;
	int i;

	st->r1 = 0;
	st->r2 = 0;
	for (i = 0; i < 32; i++) {
		(void)zuc_clock(st->s, o, &st->r1, &st->r2, 1, &x3);
		o = (o + 1) & 15;
	}
	(void)zuc_clock(st->s, o, &st->r1, &st->r2, 0, &x3);
	/* 33 clocks leave the cells rotated by one; restore canonical
	 * order so the generator can run from offset 0. */
	realign(st->s, 1);
}

void qw_zuc128_init(struct qw_zuc *st, const uint8_t key[static 16],
		    const uint8_t iv[static 16])
{
	int i;

	QW_REQUIRE(st != NULL && key != NULL && iv != NULL);
	/* Doc2 3.6.1: s_i = k_i || d_i || iv_i (8 + 15 + 8 bits). */
	for (i = 0; i < 16; i++)
		st->s[i] = ((uint32_t)key[i] << 23) | ((uint32_t)EK_D[i] << 8) | iv[i];
	zuc_run_init(st);
}

static inline uint32_t cell256(uint8_t a, uint8_t d, uint8_t b, uint8_t c)
{
	return ((uint32_t)a << 23) | ((uint32_t)d << 16) | ((uint32_t)b << 8) | c;
}

/* Z256 section 2, key loading: s_i = a || d || b || c with 8, 7, 8 and 8
 * bits, the six-bit IV17..IV24 and the two halves of K31 or-ed into the
 * 7-bit constants. */
static int zuc256_load(struct qw_zuc *st, const uint8_t *K, const uint8_t *IV,
		       const uint8_t *d)
{
	uint32_t *s = st->s;
	int i;

	for (i = 17; i < 25; i++)
		if (IV[i] > 0x3f)
			return QW_EINVAL;
	s[0] = cell256(K[0], d[0], K[21], K[16]);
	s[1] = cell256(K[1], d[1], K[22], K[17]);
	s[2] = cell256(K[2], d[2], K[23], K[18]);
	s[3] = cell256(K[3], d[3], K[24], K[19]);
	s[4] = cell256(K[4], d[4], K[25], K[20]);
	s[5] = cell256(IV[0], d[5] | IV[17], K[5], K[26]);
	s[6] = cell256(IV[1], d[6] | IV[18], K[6], K[27]);
	s[7] = cell256(IV[10], d[7] | IV[19], K[7], IV[2]);
	s[8] = cell256(K[8], d[8] | IV[20], IV[3], IV[11]);
	s[9] = cell256(K[9], d[9] | IV[21], IV[12], IV[4]);
	s[10] = cell256(IV[5], d[10] | IV[22], K[10], K[28]);
	s[11] = cell256(K[11], d[11] | IV[23], IV[6], IV[13]);
	s[12] = cell256(K[12], d[12] | IV[24], IV[7], IV[14]);
	s[13] = cell256(K[13], d[13], IV[15], IV[8]);
	s[14] = cell256(K[14], d[14] | (K[31] >> 4), IV[16], IV[9]);
	s[15] = cell256(K[15], d[15] | (K[31] & 0x0f), K[30], K[29]);
	zuc_run_init(st);
	return 0;
}

int qw_zuc256_init(struct qw_zuc *st, const uint8_t key[static 32],
		   const uint8_t iv[static 25])
{
	int ret;

	QW_REQUIRE(st != NULL && key != NULL && iv != NULL);
	ret = zuc256_load(st, key, iv, Z256_D[Z256_KEYSTREAM]);
	if (ret != 0)
		qw_zuc_wipe(st);
	return ret;
}

/* Doc2 3.6.2: Z = F(X0, X1, X2) xor X3, then the LFSR in working mode. */
static inline uint32_t zuc_word(uint32_t *s, unsigned o, uint32_t *r1, uint32_t *r2)
{
	uint32_t x3;
	uint32_t w = zuc_clock(s, o, r1, r2, 0, &x3);
	return w ^ x3;
}

void qw_zuc_keystream(struct qw_zuc *st, uint32_t *out, size_t nwords)
{
	uint32_t r1, r2;

	QW_REQUIRE(st != NULL && (out != NULL || nwords == 0));
	r1 = st->r1;
	r2 = st->r2;
	/* Sixteen clocks bring the rotating offset back to 0, so whole
	 * blocks need no realignment; each CELL index folds to a constant. */
	while (nwords >= 16) {
		out[0] = zuc_word(st->s, 0, &r1, &r2);
		out[1] = zuc_word(st->s, 1, &r1, &r2);
		out[2] = zuc_word(st->s, 2, &r1, &r2);
		out[3] = zuc_word(st->s, 3, &r1, &r2);
		out[4] = zuc_word(st->s, 4, &r1, &r2);
		out[5] = zuc_word(st->s, 5, &r1, &r2);
		out[6] = zuc_word(st->s, 6, &r1, &r2);
		out[7] = zuc_word(st->s, 7, &r1, &r2);
		out[8] = zuc_word(st->s, 8, &r1, &r2);
		out[9] = zuc_word(st->s, 9, &r1, &r2);
		out[10] = zuc_word(st->s, 10, &r1, &r2);
		out[11] = zuc_word(st->s, 11, &r1, &r2);
		out[12] = zuc_word(st->s, 12, &r1, &r2);
		out[13] = zuc_word(st->s, 13, &r1, &r2);
		out[14] = zuc_word(st->s, 14, &r1, &r2);
		out[15] = zuc_word(st->s, 15, &r1, &r2);
		out += 16;
		nwords -= 16;
	}
	if (nwords > 0) {
		unsigned i;

		for (i = 0; i < nwords; i++)
			out[i] = zuc_word(st->s, i, &r1, &r2);
		realign(st->s, (unsigned)nwords);
	}
	st->r1 = r1;
	st->r2 = r2;
}

static inline uint32_t load_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void store_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

#define XOR_CHUNK_WORDS 64

void qw_zuc_xor(struct qw_zuc *st, const uint8_t *in, uint8_t *out, size_t len)
{
	uint32_t ks[XOR_CHUNK_WORDS];

	QW_REQUIRE(st != NULL && ((in != NULL && out != NULL) || len == 0));
	while (len > 0) {
		size_t nbytes = len < sizeof(ks) ? len : sizeof(ks);
		size_t nwords = (nbytes + 3) / 4;
		size_t i;

		qw_zuc_keystream(st, ks, nwords);
		for (i = 0; i + 4 <= nbytes; i += 4)
			store_be32(out + i, load_be32(in + i) ^ ks[i / 4]);
		for (; i < nbytes; i++)
			out[i] = in[i] ^ (uint8_t)(ks[i / 4] >> (24 - 8 * (i % 4)));
		in += nbytes;
		out += nbytes;
		len -= nbytes;
	}
	qw_wipe(ks, sizeof(ks));
}

void qw_zuc_wipe(struct qw_zuc *st)
{
	QW_REQUIRE(st != NULL);
	qw_wipe(st, sizeof(*st));
}

/* Doc1 3.3 (EEA3) and 4.3 (EIA3): the 128-bit IV built from COUNT, BEARER
 * and DIRECTION. EIA3 puts DIRECTION into bit 7 of IV8 and IV14 instead of
 * next to BEARER. */
static void eea3_iv(uint8_t iv[16], uint32_t count, uint8_t bearer, uint8_t direction)
{
	memset(iv, 0, 16);
	store_be32(iv, count);
	iv[4] = (uint8_t)((bearer << 3) | (direction << 2));
	memcpy(iv + 8, iv, 8);
}

static void eia3_iv(uint8_t iv[16], uint32_t count, uint8_t bearer, uint8_t direction)
{
	memset(iv, 0, 16);
	store_be32(iv, count);
	iv[4] = (uint8_t)(bearer << 3);
	memcpy(iv + 8, iv, 8);
	iv[8] ^= (uint8_t)(direction << 7);
	iv[14] ^= (uint8_t)(direction << 7);
}

int qw_zuc_eea3(const uint8_t key[static 16], uint32_t count, uint8_t bearer,
		uint8_t direction, const uint8_t *in, size_t length_bits, uint8_t *out)
{
	struct qw_zuc st;
	uint8_t iv[16];
	size_t nbytes;

	QW_REQUIRE(key != NULL);
	QW_REQUIRE((in != NULL && out != NULL) || length_bits == 0);
	if (bearer >= 32 || direction >= 2 || length_bits > UINT32_MAX)
		return QW_EINVAL;
	if (length_bits == 0)
		return 0;
	eea3_iv(iv, count, bearer, direction);
	qw_zuc128_init(&st, key, iv);
	/* Doc1 3.4: C = M xor Z over LENGTH bits; Z is consumed as a byte
	 * stream, so whole bytes can be XORed and the tail masked. */
	nbytes = (length_bits + 7) / 8;
	qw_zuc_xor(&st, in, out, nbytes);
	if (length_bits % 8)
		out[nbytes - 1] &= (uint8_t)(0xff << (8 - length_bits % 8));
	qw_zuc_wipe(&st);
	qw_wipe(iv, sizeof(iv));
	return 0;
}

/* XOR of the 32-bit keystream windows selected by the bits of m, for the
 * 64 keystream bits pair = z_j || z_{j+1}: bit i of m (i = 0 the most
 * significant) selects bits i .. i+31 of pair, i.e. the high word of
 * pair << i. Shifts distribute over XOR, so the selected windows can be
 * combined as one 64-bit accumulator from a 16-entry table of the XORs of
 * pair << 0..3, indexed by each message nibble: 8 lookups per word instead
 * of 32 masked steps. The table index is message data, the table content
 * keystream; the keystream never selects an address. */
static inline uint32_t window_sum(uint64_t pair, uint32_t m)
{
	uint64_t t[16], acc = 0;
	unsigned v, j;

	t[0] = 0;
	t[8] = pair;
	t[4] = pair << 1;
	t[2] = pair << 2;
	t[1] = pair << 3;
	for (v = 3; v < 16; v++)
		if (v & (v - 1))
			t[v] = t[v & (v - 1)] ^ t[v & (0u - v)];
	for (j = 0; j < 8; j++)
		acc ^= t[(m >> (28 - 4 * j)) & 0xf] << (4 * j);
	return (uint32_t)(acc >> 32);
}

/* Keystream words for the MACs, generated 16 at a time (the unrolled fast
 * path). Up to 15 words past the last one used are generated and wiped. */
struct ks_reader {
	struct qw_zuc *st;
	uint32_t w[16];
	unsigned pos;
};

static inline uint32_t ks_next(struct ks_reader *k)
{
	if (k->pos == 16) {
		qw_zuc_keystream(k->st, k->w, 16);
		k->pos = 0;
	}
	return k->w[k->pos++];
}

/* The universal-hash core shared by 128-EIA3 (Doc1 4.4) and the ZUC-256
 * MAC (Z256 3.2): for every message bit i that is 1, XOR into the tw-word
 * tag the tw-word keystream window starting at bit i of win; finally XOR
 * the window at bit position nbits. win[0..tw] must hold the keystream
 * words where the window of message bit 0 starts; on return it holds the
 * words around bit nbits (win[0] = the word containing it). */
static void zuc_mac_core(struct ks_reader *ks, const uint8_t *msg, size_t nbits,
			 uint32_t *tag, uint32_t *win, unsigned tw)
{
	size_t full = nbits / 32;
	unsigned rem = (unsigned)(nbits % 32);
	size_t n;
	unsigned q, i;

	for (n = 0; n < full; n++) {
		uint32_t m = load_be32(msg + 4 * n);

		for (q = 0; q < tw; q++)
			tag[q] ^= window_sum(((uint64_t)win[q] << 32) | win[q + 1], m);
		for (q = 0; q < tw; q++)
			win[q] = win[q + 1];
		win[tw] = ks_next(ks);
	}
	if (rem) {
		uint32_t m = 0;

		for (i = 0; i < (rem + 7) / 8; i++)
			m |= (uint32_t)msg[4 * full + i] << (24 - 8 * i);
		/* Bits past the length must not select windows. */
		m &= ~(uint32_t)0 << (32 - rem);
		for (q = 0; q < tw; q++)
			tag[q] ^= window_sum(((uint64_t)win[q] << 32) | win[q + 1], m);
	}
	for (q = 0; q < tw; q++) {
		uint64_t pair = ((uint64_t)win[q] << 32) | win[q + 1];

		tag[q] ^= (uint32_t)(pair >> (32 - rem));
	}
}

int qw_zuc_eia3(const uint8_t key[static 16], uint32_t count, uint8_t bearer,
		uint8_t direction, const uint8_t *msg, size_t length_bits, uint32_t *mac)
{
	struct qw_zuc st;
	struct ks_reader ks = { .st = &st, .pos = 16 };
	uint8_t iv[16];
	uint32_t win[2];
	uint32_t t = 0;

	QW_REQUIRE(key != NULL && mac != NULL);
	QW_REQUIRE(msg != NULL || length_bits == 0);
	if (bearer >= 32 || direction >= 2 || length_bits > UINT32_MAX)
		return QW_EINVAL;
	eia3_iv(iv, count, bearer, direction);
	qw_zuc128_init(&st, key, iv);
	win[0] = ks_next(&ks);
	win[1] = ks_next(&ks);
	zuc_mac_core(&ks, msg, length_bits, &t, win, 1);
	/* Doc1 4.4-4.5: L = ceil(LENGTH/32) + 2 words, and the last one,
	 * z_{32(L-1)}, is word-aligned: it is win[1] when LENGTH is a
	 * multiple of 32 and the word after it otherwise. */
	t ^= length_bits % 32 == 0 ? win[1] : ks_next(&ks);
	*mac = t;
	qw_zuc_wipe(&st);
	qw_wipe(&ks, sizeof(ks));
	qw_wipe(iv, sizeof(iv));
	qw_wipe(win, sizeof(win));
	return 0;
}

int qw_zuc256_mac(const uint8_t key[static 32], const uint8_t iv[static 25],
		  const uint8_t *msg, size_t length_bits, unsigned tag_bits, uint8_t *tag)
{
	struct qw_zuc st;
	struct ks_reader ks = { .st = &st, .pos = 16 };
	uint32_t t[4] = { 0 };
	uint32_t win[5];
	unsigned tw, q;
	int kind, ret;

	QW_REQUIRE(key != NULL && iv != NULL && tag != NULL);
	QW_REQUIRE(msg != NULL || length_bits == 0);
	switch (tag_bits) {
	case 32: kind = Z256_MAC32; break;
	case 64: kind = Z256_MAC64; break;
	case 128: kind = Z256_MAC128; break;
	default: return QW_EINVAL;
	}
	tw = tag_bits / 32;
	ret = zuc256_load(&st, key, iv, Z256_D[kind]);
	if (ret != 0)
		goto out;
	/* Z256 3.2: Tag starts as the first t keystream bits; the window
	 * for message bit i starts at keystream bit t + i. */
	for (q = 0; q < tw; q++)
		t[q] = ks_next(&ks);
	for (q = 0; q <= tw; q++)
		win[q] = ks_next(&ks);
	zuc_mac_core(&ks, msg, length_bits, t, win, tw);
	for (q = 0; q < tw; q++)
		store_be32(tag + 4 * q, t[q]);
	ret = 0;
out:
	qw_zuc_wipe(&st);
	qw_wipe(&ks, sizeof(ks));
	qw_wipe(t, sizeof(t));
	qw_wipe(win, sizeof(win));
	return ret;
}
