/* Random number generators (include/qwave/rng.h).
 *
 * system   CTR-DRBG (AES-256, derivation function) chained to OpenSSL's
 *          primary DRBG, which OpenSSL seeds and reseeds from the OS.
 * source   CTR-DRBG (AES-256, df) whose parent is a TEST-RAND instance that
 *          we fill, immediately before each (re)seed, with conditioned
 *          bytes from qw_entropy_read(). The DRBG pulls its entropy input
 *          and nonce (SP 800-90A 8.6.7, 10.2.1.3.2) from that parent and from
 *          nothing else, so its seed comes from our health-tested source
 *          alone (the test "same source bytes -> same output" checks
 *          this). Automatic reseeding is disabled; we reseed explicitly
 *          every RESEED_BYTES of output so each reseed draws fresh source
 *          entropy rather than failing on an empty parent.
 * seeded   AES-256-CTR keystream keyed by SHA-256("qwave seeded rng" ||
 *          le64(seed)), zero IV: deterministic, fast (AES-NI), for
 *          simulations only.
 *
 * All kinds serve qw_rng_u64 from a 4 KiB buffer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "qwave/entropy.h"
#include "qwave/hash.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

#define BUF_BYTES 4096
#define DRBG_MAX_REQUEST 65536 /* OpenSSL CTR-DRBG max_request */
#define RESEED_BYTES ((uint64_t)1 << 20)
#define SEED_ENTROPY 48 /* 384 bits >= strength 256 + nonce for df */
#define SEED_NONCE 16

enum kind { K_SYSTEM, K_SOURCE, K_SEEDED };

struct qw_rng {
	enum kind kind;
	EVP_RAND_CTX *drbg;
	EVP_RAND_CTX *parent;    /* K_SOURCE: TEST-RAND fed from src */
	struct qw_entropy *src;
	uint64_t since_reseed;
	EVP_CIPHER_CTX *ks;      /* K_SEEDED keystream */
	double spare;            /* second polar-method deviate */
	int has_spare;
	size_t pos;              /* next unread byte of buf */
	uint8_t buf[BUF_BYTES];
};

static const uint8_t zeros[BUF_BYTES];

static EVP_RAND_CTX *new_ctr_drbg(EVP_RAND_CTX *parent)
{
	EVP_RAND *rand = EVP_RAND_fetch(NULL, "CTR-DRBG", NULL);
	if (!rand)
		return NULL;
	EVP_RAND_CTX *ctx = EVP_RAND_CTX_new(rand, parent);
	EVP_RAND_free(rand);
	if (!ctx)
		return NULL;
	OSSL_PARAM p[2] = {
		OSSL_PARAM_construct_utf8_string(OSSL_DRBG_PARAM_CIPHER,
						 "AES-256-CTR", 0),
		OSSL_PARAM_construct_end(),
	};
	if (!EVP_RAND_CTX_set_params(ctx, p)) {
		EVP_RAND_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static struct qw_rng *rng_alloc(enum kind kind)
{
	struct qw_rng *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->kind = kind;
	r->pos = BUF_BYTES;
	return r;
}

struct qw_rng *qw_rng_new_system(void)
{
	struct qw_rng *r = rng_alloc(K_SYSTEM);
	if (!r)
		return NULL;
	/* The primary DRBG is shared and locked by OpenSSL; our child keeps
	 * its own state so parallel rngs do not contend on every call. */
	EVP_RAND_CTX *primary = RAND_get0_primary(NULL);
	if (!primary || !(r->drbg = new_ctr_drbg(primary)) ||
	    !EVP_RAND_instantiate(r->drbg, 256, 0, NULL, 0, NULL)) {
		qw_rng_free(r);
		return NULL;
	}
	return r;
}

/* Load fresh source entropy and nonce into the TEST-RAND parent. */
static int feed_parent(struct qw_rng *r)
{
	uint8_t ent[SEED_ENTROPY], nonce[SEED_NONCE];
	int ret = qw_entropy_read(r->src, ent, sizeof(ent));
	if (ret == 0)
		ret = qw_entropy_read(r->src, nonce, sizeof(nonce));
	if (ret == 0) {
		OSSL_PARAM p[3] = {
			OSSL_PARAM_construct_octet_string(
				OSSL_RAND_PARAM_TEST_ENTROPY, ent, sizeof(ent)),
			OSSL_PARAM_construct_octet_string(
				OSSL_RAND_PARAM_TEST_NONCE, nonce, sizeof(nonce)),
			OSSL_PARAM_construct_end(),
		};
		ret = EVP_RAND_CTX_set_params(r->parent, p) ? 0 : QW_ECRYPTO;
	}
	qw_wipe(ent, sizeof(ent));
	qw_wipe(nonce, sizeof(nonce));
	return ret;
}

struct qw_rng *qw_rng_new_from_source(struct qw_entropy *src, int *err)
{
	QW_REQUIRE(src);
	int ret = QW_ENOMEM;
	EVP_RAND *test = NULL;
	struct qw_rng *r = rng_alloc(K_SOURCE);
	if (!r)
		goto out;
	r->src = src;
	ret = QW_ECRYPTO;
	test = EVP_RAND_fetch(NULL, "TEST-RAND", NULL);
	if (!test || !(r->parent = EVP_RAND_CTX_new(test, NULL)))
		goto out;
	unsigned int strength = 256;
	OSSL_PARAM ps[2] = {
		OSSL_PARAM_construct_uint(OSSL_RAND_PARAM_STRENGTH, &strength),
		OSSL_PARAM_construct_end(),
	};
	if (!EVP_RAND_CTX_set_params(r->parent, ps) ||
	    !EVP_RAND_instantiate(r->parent, 256, 0, NULL, 0, NULL))
		goto out;
	if (!(r->drbg = new_ctr_drbg(r->parent)))
		goto out;
	/* We reseed ourselves (see the file comment). */
	unsigned int zero = 0;
	time_t zero_t = 0;
	OSSL_PARAM pd[3] = {
		OSSL_PARAM_construct_uint(OSSL_DRBG_PARAM_RESEED_REQUESTS, &zero),
		OSSL_PARAM_construct_time_t(OSSL_DRBG_PARAM_RESEED_TIME_INTERVAL,
					    &zero_t),
		OSSL_PARAM_construct_end(),
	};
	if (!EVP_RAND_CTX_set_params(r->drbg, pd))
		goto out;
	if ((ret = feed_parent(r)) != 0)
		goto out;
	ret = QW_ECRYPTO;
	if (!EVP_RAND_instantiate(r->drbg, 256, 0, NULL, 0, NULL))
		goto out;
	ret = 0;
out:
	EVP_RAND_free(test);
	if (ret != 0) {
		qw_rng_free(r);
		r = NULL;
	}
	if (err)
		*err = ret;
	return r;
}

struct qw_rng *qw_rng_new_seeded(uint64_t seed)
{
	static const char label[] = "qwave seeded rng";
	uint8_t in[sizeof(label) - 1 + 8], key[QW_SHA256_BYTES];
	uint8_t iv[16] = {0};
	memcpy(in, label, sizeof(label) - 1);
	for (int i = 0; i < 8; i++)
		in[sizeof(label) - 1 + i] = (uint8_t)(seed >> (8 * i));
	struct qw_rng *r = rng_alloc(K_SEEDED);
	if (!r)
		return NULL;
	if (qw_hash(QW_HASH_SHA256, in, sizeof(in), key) != 0 ||
	    !(r->ks = EVP_CIPHER_CTX_new()) ||
	    !EVP_EncryptInit_ex2(r->ks, EVP_aes_256_ctr(), key, iv, NULL)) {
		qw_rng_free(r);
		r = NULL;
	}
	qw_wipe(key, sizeof(key));
	return r;
}

void qw_rng_free(struct qw_rng *r)
{
	if (!r)
		return;
	EVP_RAND_CTX_free(r->drbg); /* uninstantiates: wipes V and Key */
	EVP_RAND_CTX_free(r->parent);
	EVP_CIPHER_CTX_free(r->ks);
	qw_wipe(r, sizeof(*r));
	free(r);
}

/* Raw generator output, bypassing the buffer. */
static int gen(struct qw_rng *r, uint8_t *out, size_t n)
{
	if (r->kind == K_SEEDED) {
		while (n) {
			size_t m = n < BUF_BYTES ? n : BUF_BYTES;
			int outl = 0;
			if (!EVP_EncryptUpdate(r->ks, out, &outl, zeros, (int)m))
				return QW_ECRYPTO;
			out += m;
			n -= m;
		}
		return 0;
	}
	while (n) {
		if (r->kind == K_SOURCE && r->since_reseed >= RESEED_BYTES) {
			int ret = feed_parent(r);
			if (ret != 0)
				return ret;
			if (!EVP_RAND_reseed(r->drbg, 0, NULL, 0, NULL, 0))
				return QW_ECRYPTO;
			r->since_reseed = 0;
		}
		size_t m = n < DRBG_MAX_REQUEST ? n : DRBG_MAX_REQUEST;
		if (!EVP_RAND_generate(r->drbg, out, m, 256, 0, NULL, 0))
			return QW_ECRYPTO;
		r->since_reseed += m;
		out += m;
		n -= m;
	}
	return 0;
}

int qw_rng_bytes(struct qw_rng *r, void *out, size_t n)
{
	QW_REQUIRE(r && (out || n == 0));
	uint8_t *o = out;
	int ret = 0;
	if (r->kind == K_SEEDED) {
		/* One stream: buffered bytes first, so bytes and u64 calls
		 * interleave reproducibly. */
		size_t m = BUF_BYTES - r->pos;
		if (m > n)
			m = n;
		memcpy(o, r->buf + r->pos, m);
		r->pos += m;
		ret = gen(r, o + m, n - m);
	} else {
		/* Keys come straight from the DRBG, never from the buffer, so
		 * no future key material sits in memory ahead of use. */
		ret = gen(r, o, n);
	}
	if (ret != 0)
		qw_wipe(o, n);
	return ret;
}

uint64_t qw_rng_u64(struct qw_rng *r)
{
	QW_REQUIRE(r);
	if (r->pos > BUF_BYTES - 8) {
		/* BUF_BYTES is a multiple of 8, so pos == BUF_BYTES here unless
		 * qw_rng_bytes left a partial word; the leftover is dropped. */
		if (gen(r, r->buf, BUF_BYTES) != 0)
			qw_misuse("qw_rng_u64: generator failure");
		r->pos = 0;
	}
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)r->buf[r->pos + i] << (8 * i);
	r->pos += 8;
	return v;
}

/* 64x64 -> 128-bit product without compiler extensions. */
static void mul64(uint64_t a, uint64_t b, uint64_t *hi, uint64_t *lo)
{
	uint64_t a0 = a & 0xffffffffu, a1 = a >> 32;
	uint64_t b0 = b & 0xffffffffu, b1 = b >> 32;
	uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
	uint64_t mid = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
	*hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
	*lo = (mid << 32) | (p00 & 0xffffffffu);
}

uint64_t qw_rng_below(struct qw_rng *r, uint64_t bound)
{
	QW_REQUIRE(r && bound > 0);
	/* Lemire, "Fast random integer generation in an interval" (ACM TOMACS
	 * 2019), algorithm 5: floor(x * bound / 2^64), rejecting the low
	 * products below 2^64 mod bound, is exactly uniform; the division
	 * runs only in the rare rejection-candidate case. */
	uint64_t hi, lo;
	mul64(qw_rng_u64(r), bound, &hi, &lo);
	if (lo < bound) {
		uint64_t t = (0 - bound) % bound; /* 2^64 mod bound */
		while (lo < t)
			mul64(qw_rng_u64(r), bound, &hi, &lo);
	}
	return hi;
}

double qw_rng_uniform(struct qw_rng *r)
{
	return (double)(qw_rng_u64(r) >> 11) * 0x1.0p-53;
}

double qw_rng_gaussian(struct qw_rng *r)
{
	QW_REQUIRE(r);
	if (r->has_spare) {
		r->has_spare = 0;
		return r->spare;
	}
	/* Marsaglia's polar form of Box-Muller: two deviates per accepted
	 * point, no trigonometric calls. */
	double u, v, s;
	do {
		u = 2.0 * qw_rng_uniform(r) - 1.0;
		v = 2.0 * qw_rng_uniform(r) - 1.0;
		s = u * u + v * v;
	} while (s >= 1.0 || s == 0.0);
	double f = sqrt(-2.0 * log(s) / s);
	r->spare = v * f;
	r->has_spare = 1;
	return u * f;
}

double qw_rng_exponential(struct qw_rng *r, double lambda)
{
	QW_REQUIRE(r && lambda > 0);
	/* Inversion; 1 - U lies in (0, 1], so the log is finite. */
	return -log(1.0 - qw_rng_uniform(r)) / lambda;
}

int qw_random_bytes(void *out, size_t n)
{
	QW_REQUIRE(out || n == 0);
	/* OpenSSL's per-thread private DRBG (seeded from the OS) is the
	 * thread-local system generator rng.h promises. */
	uint8_t *o = out;
	size_t total = n;
	while (n) {
		size_t m = n < (1u << 30) ? n : (1u << 30);
		if (RAND_priv_bytes(o, (int)m) != 1) {
			qw_wipe(out, total);
			return QW_ECRYPTO;
		}
		o += m;
		n -= m;
	}
	return 0;
}
