/* Privacy amplification by Toeplitz hashing, and the distillation stages
 * that verify corrected keys (universal hash) and amplify verified ones.
 *
 * An n-bit key x and a seed s of n + m - 1 bits give the m-bit output
 *   y = T x,  T[i][j] = s[i - j + n - 1]  (0 <= i < m, 0 <= j < n)
 * over GF(2). The family {T_s} is universal-2 (H. Krawczyk, CRYPTO 1994;
 * Carter-Wegman), so by the leftover hash lemma a key with smooth min-entropy
 * k given Eve's information is compressed to m bits that are
 * 2^(-(k - m)/2)-close to uniform. The seed is public but must be uniform and
 * chosen independently of the key.
 *
 * y_i is coefficient n - 1 + i of the GF(2)[z] product s(z) x(z) (the middle
 * product), which the implementation computes with carry-less multiplication
 * in Karatsuba form or by an additive FFT over GF(2^64); docs/pa.md gives the
 * algorithms and the measured speeds.
 * Bits follow struct qw_bitvec (bit i = word i/64, bit i%64). */
#ifndef QWAVE_TOEPLITZ_H
#define QWAVE_TOEPLITZ_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/bitvec.h"
#include "qwave/distill.h"
#include "qwave/error.h"

struct qw_rng;

enum qw_toeplitz_method {
	QW_TOEPLITZ_AUTO = 0,      /* karatsuba or fft, by measured cost (docs/pa.md) */
	QW_TOEPLITZ_REFERENCE,     /* bit by bit, O(m n): tests only */
	QW_TOEPLITZ_SCHOOLBOOK,    /* word-level carry-less middle product, O(m n / 64^2) */
	QW_TOEPLITZ_KARATSUBA,     /* Toeplitz-matrix-vector Karatsuba, O(n m^0.585) */
	QW_TOEPLITZ_FFT,           /* additive FFT over GF(2^64), O(n log n); QW_EINVAL
				    * when n + m > 2^33 */
};

/* Instruction sets the carry-less products may use (for tests and
 * benchmarks; BEST picks the widest the CPU has at run time). */
enum qw_toeplitz_isa {
	QW_TOEPLITZ_ISA_BEST = 0,
	QW_TOEPLITZ_ISA_PORTABLE, /* plain C */
	QW_TOEPLITZ_ISA_PCLMUL,   /* 128-bit PCLMULQDQ only */
};

struct qw_toeplitz_opts {
	enum qw_toeplitz_method method;
	enum qw_toeplitz_isa isa;
};

/* out = T_seed key (see above), m output bits. key has n >= 1 bits, seed
 * exactly n + m - 1 bits, 1 <= m <= n. out (caller-owned, any length) is
 * resized to m bits. Returns 0, QW_EINVAL for inconsistent lengths, or
 * QW_ENOMEM. The key's bits never select a branch or a table entry. */
QW_WUR int qw_toeplitz_hash(const struct qw_bitvec *key, const struct qw_bitvec *seed, size_t m,
			    struct qw_bitvec *out);
/* The same with a chosen method (opts NULL = AUTO). Every method gives the
 * same bits. QW_EUNSUPPORTED for an unknown method. */
QW_WUR int qw_toeplitz_hash_ex(const struct qw_bitvec *key, const struct qw_bitvec *seed,
			       size_t m, struct qw_bitvec *out,
			       const struct qw_toeplitz_opts *opts);
/* The fft method keeps a per-thread workspace between calls (up to about
 * 24 (n + m) / 8 bytes; wiped after every hash, so it holds no key material
 * between calls) because fresh pages for every block cost more than the
 * hash. This frees the calling thread's; thread exit frees it too. */
void qw_toeplitz_release(void);

/* Name of a method ("auto", "reference", ...) and its inverse (-1 when
 * unknown). */
const char *qw_toeplitz_method_name(enum qw_toeplitz_method m);
int qw_toeplitz_method_parse(const char *name);

/* ---- distillation stages ---------------------------------------------- */

/* Message types on struct qw_distill_chan ("PA"/"VE" tagged). */
#define QW_MSG_PA_SEED 0x50410001u       /* Alice -> Bob: Toeplitz seed */
#define QW_MSG_VERIFY_HASH 0x56450001u   /* Alice -> Bob: hash key and tag */
#define QW_MSG_VERIFY_RESULT 0x56450002u /* Bob -> Alice: 1 match, 0 mismatch */

/* Privacy amplification: VERIFIED block with secret_bits = m set -> key
 * replaced by its m-bit Toeplitz hash, state AMPLIFIED. Alice draws the
 * n + m - 1 bit seed and sends it (with the block id, n and m) to Bob; Bob
 * checks id, n and m against his block. secret_bits == 0 -> DROP;
 * secret_bits > n, wrong state, peer mismatch or channel failure -> ERROR.
 * params: struct qw_pa_params or NULL (defaults). */
struct qw_pa_params {
	/* Seed source (Alice); NULL: qw_random_bytes. A struct qw_rng is not
	 * thread-safe: leave NULL when several pipeline workers share params. */
	struct qw_rng *rng;
	enum qw_toeplitz_method method;
};
extern const struct qw_stage qw_stage_pa;

/* Error verification: CORRECTED block -> VERIFIED, or DROP "verification
 * hash mismatch". Alice draws a fresh 128-bit hash key and sends it with
 * the first tag_bits bits of qw_uhash_bits(key, block) to Bob; Bob compares
 * (constant time) with his own and sends the verdict back. Both add tag_bits
 * to disclosed_bits. A surviving pair of different keys has probability at
 * most qw_uhash_collision_bound(n, tag_bits) = (ceil(n/128) + 1) / 2^t
 * (eps_cor). params: struct qw_verify_params or NULL (tag_bits 64). */
struct qw_verify_params {
	unsigned tag_bits;  /* 1..128; 0 means the default 64 */
	struct qw_rng *rng; /* hash key source (Alice); NULL: qw_random_bytes
			     * (same thread-safety caveat as qw_pa_params) */
};
extern const struct qw_stage qw_stage_verify;

/* Smallest tag length t (bits, <= 128) with collision bound <= eps_cor for
 * keys of n_bits bits; 0 when even 128 bits do not reach eps_cor. */
unsigned qw_verify_tag_bits(uint64_t n_bits, double eps_cor);

/* The tag of one side: first tag_bits bits of qw_uhash_bits(hash_key, key),
 * as ceil(tag_bits / 8) bytes (lo word first, little-endian, unused high
 * bits of the last byte zero). */
void qw_verify_tag(const uint8_t hash_key[static 16], const struct qw_bitvec *key,
		   unsigned tag_bits, uint8_t tag[static 16]);

#endif
