/* Shamir secret sharing (Shamir, "How to share a secret", CACM 1979) over
 * GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1, byte by byte:
 * each secret byte is the constant term of its own random polynomial of
 * degree t - 1, share i is the polynomials evaluated at x = i + 1.
 * Arithmetic is constant time (no log tables indexed by secrets). */
#include <string.h>

#include "qwave/ksc.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

static uint8_t gf_mul(uint8_t a, uint8_t b)
{
	uint8_t p = 0;

	for (int i = 0; i < 8; i++) {
		p ^= (uint8_t)(-(b & 1) & a);
		a = (uint8_t)((a << 1) ^ (-(a >> 7) & 0x1b));
		b >>= 1;
	}
	return p;
}

/* a^254 = a^-1 (a != 0) by square and multiply over a fixed chain. */
static uint8_t gf_inv(uint8_t a)
{
	uint8_t r = 1, x = a;

	for (int e = 254; e; e >>= 1) {
		if (e & 1)
			r = gf_mul(r, x);
		x = gf_mul(x, x);
	}
	return r;
}

int qw_ksc_shamir_split(const uint8_t *secret, size_t len, unsigned t, unsigned n,
			uint8_t *shares)
{
	uint8_t coef[255];
	int ret;

	if (!secret || !shares || len == 0 || t < 2 || t > n || n > 255)
		return QW_EINVAL;
	for (unsigned i = 0; i < n; i++)
		shares[i * (len + 1)] = (uint8_t)(i + 1);
	for (size_t b = 0; b < len; b++) {
		coef[0] = secret[b];
		ret = qw_random_bytes(coef + 1, t - 1);
		if (ret) {
			qw_wipe(coef, sizeof(coef));
			qw_wipe(shares, n * (len + 1));
			return ret;
		}
		for (unsigned i = 0; i < n; i++) {
			uint8_t x = (uint8_t)(i + 1), y = 0;

			for (unsigned j = t; j-- > 0;) /* Horner */
				y = (uint8_t)(gf_mul(y, x) ^ coef[j]);
			shares[i * (len + 1) + 1 + b] = y;
		}
	}
	qw_wipe(coef, sizeof(coef));
	return 0;
}

int qw_ksc_shamir_combine(const uint8_t *shares, size_t m, size_t len, uint8_t *secret)
{
	uint8_t lag[255];

	if (!shares || !secret || m < 1 || m > 255 || len == 0)
		return QW_EINVAL;
	/* Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i); in
	 * characteristic 2 subtraction is XOR */
	for (size_t i = 0; i < m; i++) {
		uint8_t xi = shares[i * (len + 1)], num = 1, den = 1;

		if (xi == 0)
			return QW_EINVAL;
		for (size_t j = 0; j < m; j++) {
			uint8_t xj = shares[j * (len + 1)];

			if (j == i)
				continue;
			if (xj == xi)
				return QW_EINVAL;
			num = gf_mul(num, xj);
			den = gf_mul(den, (uint8_t)(xj ^ xi));
		}
		lag[i] = gf_mul(num, gf_inv(den));
	}
	for (size_t b = 0; b < len; b++) {
		uint8_t s = 0;

		for (size_t i = 0; i < m; i++)
			s ^= gf_mul(lag[i], shares[i * (len + 1) + 1 + b]);
		secret[b] = s;
	}
	return 0;
}
