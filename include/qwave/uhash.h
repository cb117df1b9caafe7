/* Universal hashing over GF(2^128): the polynomial-evaluation hash used for
 * error verification, and the Wegman-Carter MAC that authenticates the
 * classical channel with information-theoretic security.
 *
 * Field convention (qwave's own, stated once): GF(2^128) = GF(2)[x] /
 * (x^128 + x^7 + x^2 + x + 1). An element is two 64-bit words {lo, hi}:
 * bit i of lo is the coefficient of x^i, bit i of hi that of x^(64+i). As
 * 16 bytes it is lo then hi, each little-endian. (This is GCM's field with
 * the bit order un-reflected: GHASH's "first bit of byte 0 = x^0" maps to
 * bit 0 of lo here; the tests check the two agree through that map.)
 *
 * Polynomial hash of a message M of len bytes under key k:
 *   blocks m_1..m_L: M cut into 16-byte blocks, the last one zero-padded,
 *   L = ceil(len / 16); m_(L+1) = {lo = len (or nbits for bit strings),
 *   hi = domain}; h_k(M) = m_1 k^(L+1) + m_2 k^L + ... + m_(L+1) k
 *   (Horner: acc = (acc + m_i) k). The length block makes messages of
 * different lengths distinct polynomials, so for M != M' and any delta,
 *   Pr_k[h_k(M) + h_k(M') = delta] <= (L + 1) / 2^128
 * with L the larger block count: h is (L+1)/2^128-almost-XOR-universal
 * (the difference is a nonzero polynomial of degree <= L+1 in k). Keeping
 * only t bits of the value gives collision probability <= (L + 1) / 2^t
 * (each of the 2^(128-t) completions has at most L+1 roots). */
#ifndef QWAVE_UHASH_H
#define QWAVE_UHASH_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/bitvec.h"
#include "qwave/error.h"

#define QW_UHASH_KEY_BYTES 16
#define QW_UHASH_BYTES 16
#define QW_WCMAC_KEY_BYTES 16
#define QW_WCMAC_OTP_BYTES 16
#define QW_WCMAC_TAG_BYTES 16

/* r = a * b in GF(2^128) (convention above). r may alias a or b. Uses
 * PCLMULQDQ when the CPU has it, else a portable constant-time multiply. */
void qw_gf128_mul(uint64_t r[2], const uint64_t a[2], const uint64_t b[2]);
/* The portable multiply, exposed so tests can compare the two paths. */
void qw_gf128_mul_portable(uint64_t r[2], const uint64_t a[2], const uint64_t b[2]);
/* 1 when qw_gf128_mul uses carry-less multiply instructions. */
int qw_gf128_has_clmul(void);

/* Polynomial hash of len bytes of msg under key (16 bytes); msg may be NULL
 * when len is 0. The length block carries len in bytes, hi = 0. */
void qw_uhash_bytes(const uint8_t key[static QW_UHASH_KEY_BYTES], const uint8_t *msg,
		    size_t len, uint8_t out[static QW_UHASH_BYTES]);
/* Polynomial hash of the bit string v: blocks are v's packed words (bit i of
 * v is bit i % 128 of block i / 128, tail zero), the length block carries
 * nbits, hi = 1 (so a bit string never collides with a byte string by
 * construction). */
void qw_uhash_bits(const uint8_t key[static QW_UHASH_KEY_BYTES], const struct qw_bitvec *v,
		   uint8_t out[static QW_UHASH_BYTES]);
/* Upper bound (L + 1) / 2^tag_bits on the collision probability of two
 * different inputs of at most len_bits bits hashed and truncated to
 * tag_bits (1..128) bits. */
double qw_uhash_collision_bound(uint64_t len_bits, unsigned tag_bits);

/* Wegman-Carter MAC [M. N. Wegman, J. L. Carter, "New hash functions and
 * their use in authentication and set equality", JCSS 22 (1981) 265-279;
 * D. R. Stinson, "Universal hashing and authentication codes", Des. Codes
 * Cryptogr. 4 (1994)]:
 *   tag = h_k(msg) XOR r
 * with h the AXU polynomial hash above (qw_uhash_bytes), k a 128-bit hash
 * key and r a 128-bit one-time pad. Both come from pre-shared (QKD) key
 * material. The hash key k MAY be reused for many messages; the pad r MUST
 * be fresh for every message and never reused. Then a forger who has seen
 * any number of (message, tag) pairs, each under its own pad, succeeds in
 * replacing a message of at most len bytes with probability at most
 * (ceil(len / 16) + 1) / 2^128 per attempt, whatever his computing power.
 * Reusing a pad leaks h_k(M) + h_k(M'), from which k can be solved for:
 * the caller owns pad bookkeeping. */
struct qw_wcmac;

/* New MAC context holding a copy of hash_key (in locked memory). NULL on
 * allocation failure. */
struct qw_wcmac *qw_wcmac_new(const uint8_t hash_key[static QW_WCMAC_KEY_BYTES]);
/* Wipes the key and frees; NULL accepted. */
void qw_wcmac_free(struct qw_wcmac *mac);
/* tag = h_k(msg) XOR otp. msg may be NULL when len is 0. */
void qw_wcmac_tag(const struct qw_wcmac *mac, const uint8_t otp[static QW_WCMAC_OTP_BYTES],
		  const uint8_t *msg, size_t len, uint8_t tag[static QW_WCMAC_TAG_BYTES]);
/* 0 if tag is the tag of msg under mac and otp, QW_EAUTH otherwise. The tag
 * comparison is constant-time. */
QW_WUR int qw_wcmac_verify(const struct qw_wcmac *mac,
			   const uint8_t otp[static QW_WCMAC_OTP_BYTES], const uint8_t *msg,
			   size_t len, const uint8_t tag[static QW_WCMAC_TAG_BYTES]);

#endif
