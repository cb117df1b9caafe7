/* Random numbers: the one interface through which qwave draws every key bit
 * and every simulated random choice.
 *
 * A struct qw_rng is a DRBG (OpenSSL EVP_RAND, CTR-DRBG with AES-256) seeded
 * from an entropy source (include/qwave/entropy.h): the OS generator by
 * default, or a QRNG device/file that passes the NIST SP 800-90B continuous
 * health tests. A seeded generator (qw_rng_new_seeded) is deterministic and
 * exists for reproducible simulations and tests only; it must never produce
 * keys that leave a simulation. A struct qw_rng is not thread-safe: use one
 * per thread. */
#ifndef QWAVE_RNG_H
#define QWAVE_RNG_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"

struct qw_rng;
struct qw_entropy;

/* DRBG seeded (and reseeded) from the OS entropy source. NULL on failure. */
struct qw_rng *qw_rng_new_system(void);
/* DRBG seeded from src (health-tested); src must outlive the rng. Returns
 * NULL and sets *err (QW_EHEALTH when the source fails its tests). */
struct qw_rng *qw_rng_new_from_source(struct qw_entropy *src, int *err);
/* Deterministic generator: the same seed gives the same stream. */
struct qw_rng *qw_rng_new_seeded(uint64_t seed);
/* Wipes the generator state; NULL accepted. */
void qw_rng_free(struct qw_rng *r);

/* Fill out with n random bytes. 0, or QW_ECRYPTO / QW_EHEALTH on failure
 * (out is then wiped). */
QW_WUR int qw_rng_bytes(struct qw_rng *r, void *out, size_t n);
/* Uniform 64-bit value, and helpers built on it. These buffer a block of
 * DRBG output internally; on a DRBG failure they call qw_misuse() (the
 * failure is caught first by qw_rng_bytes-based health paths). */
uint64_t qw_rng_u64(struct qw_rng *r);
/* Uniform integer in [0, bound), bound > 0, without modulo bias. */
uint64_t qw_rng_below(struct qw_rng *r, uint64_t bound);
/* Uniform double in [0, 1) with 53 random bits. */
double qw_rng_uniform(struct qw_rng *r);
/* Standard normal deviate. */
double qw_rng_gaussian(struct qw_rng *r);
/* Exponential deviate with rate lambda > 0. */
double qw_rng_exponential(struct qw_rng *r, double lambda);

/* Process-wide system generator for code with no rng of its own (key IDs,
 * nonces). Thread-safe (one per thread internally). */
QW_WUR int qw_random_bytes(void *out, size_t n);

#endif
