/* ZUC stream cipher family, hand-written because OpenSSL 3.0 lacks it.
 *
 *  - ZUC-128 keystream generator: ETSI/SAGE "Specification of the 3GPP
 *    Confidentiality and Integrity Algorithms 128-EEA3 & 128-EIA3,
 *    Document 2: ZUC Specification" v1.6 (also GM/T 0001.1-2012).
 *  - 128-EEA3 / 128-EIA3: the same series, Document 1 (algorithm
 *    specification).
 *  - ZUC-256 keystream and MAC: "The ZUC-256 Stream Cipher", ZUC design
 *    team, 2018 (25-byte IV: IV0..IV16 are bytes, IV17..IV24 six-bit).
 *
 * Bit strings follow the 3GPP convention: bit 0 is the most significant bit
 * of byte 0, lengths are in bits. Keystream words are 32-bit values whose
 * most significant byte comes first in the stream.
 *
 * None of these functions allocate; states live wherever the caller puts
 * them. Functions that end a computation wipe their internal state. */
#ifndef QWAVE_ZUC_H
#define QWAVE_ZUC_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"

#define QW_ZUC128_KEY_BYTES 16
#define QW_ZUC128_IV_BYTES 16
#define QW_ZUC256_KEY_BYTES 32
#define QW_ZUC256_IV_BYTES 25 /* IV17..IV24 hold six-bit values */
#define QW_ZUC_EIA3_MAC_BYTES 4
#define QW_ZUC256_MAC_MAX_BYTES 16

/* Keystream generator state (LFSR s0..s15 over GF(2^31-1), FSM R1/R2).
 * Fields are internal; the size is public so the state can live on the
 * stack. Contains key-derived secrets: end with qw_zuc_wipe(). */
struct qw_zuc {
	uint32_t s[16];
	uint32_t r1, r2;
};

/* Load key and IV (Document 2, 3.6.1) and run the 32 initialisation rounds
 * plus the first working-mode round whose output is discarded (3.6.2). */
void qw_zuc128_init(struct qw_zuc *st, const uint8_t key[static 16],
		    const uint8_t iv[static 16]);

/* ZUC-256 initialisation with the keystream d constants. iv[17..24] must be
 * below 64. Returns 0, or QW_EINVAL when an IV17..IV24 value has more than
 * six bits (st is then left wiped). */
QW_WUR int qw_zuc256_init(struct qw_zuc *st, const uint8_t key[static 32],
			  const uint8_t iv[static 25]);

/* Write the next nwords keystream words z1, z2, ... to out (host order
 * uint32_t values; serialise big-endian to get the byte stream). */
void qw_zuc_keystream(struct qw_zuc *st, uint32_t *out, size_t nwords);

/* XOR the next keystream bytes into in, writing out (big-endian byte order
 * of each word; in == out allowed). len need not be a multiple of 4, but
 * bytes left over from a partial word are discarded, so call it with
 * multiples of 4 except for the last call. */
void qw_zuc_xor(struct qw_zuc *st, const uint8_t *in, uint8_t *out, size_t len);

/* Erase the state (key-derived). st may not be NULL. */
void qw_zuc_wipe(struct qw_zuc *st);

/* 128-EEA3 (Document 1, clause 3): encrypt or decrypt length_bits bits of
 * in into out (ceil(length_bits/8) bytes each; in == out allowed). The
 * unused trailing bits of the last output byte are set to zero, as in the
 * specification's test data. in/out may be NULL only when length_bits is 0.
 * Returns 0, or QW_EINVAL if bearer >= 32, direction >= 2 or
 * length_bits >= 2^32 (LENGTH is a 32-bit field); out is then not written. */
QW_WUR int qw_zuc_eea3(const uint8_t key[static 16], uint32_t count,
		       uint8_t bearer, uint8_t direction, const uint8_t *in,
		       size_t length_bits, uint8_t *out);

/* 128-EIA3 (Document 1, clause 4): 32-bit MAC of the first length_bits bits
 * of msg (msg may be NULL when length_bits is 0), stored in *mac (the
 * spec's MAC value; serialise big-endian for the wire). Returns 0, or
 * QW_EINVAL for bearer >= 32, direction >= 2 or length_bits >= 2^32
 * (LENGTH is a 32-bit field). Compare MACs with qw_ct_equal. */
QW_WUR int qw_zuc_eia3(const uint8_t key[static 16], uint32_t count,
		       uint8_t bearer, uint8_t direction, const uint8_t *msg,
		       size_t length_bits, uint32_t *mac);

/* ZUC-256 MAC (paper, section 3.2) of the first length_bits bits of msg,
 * with a tag of tag_bits = 32, 64 or 128 bits written to tag as tag_bits/8
 * bytes, big-endian. The generator is initialised with the d constants of
 * that tag length. Returns 0, or QW_EINVAL for another tag_bits or an
 * IV17..IV24 value above 63 (tag is then not written). */
QW_WUR int qw_zuc256_mac(const uint8_t key[static 32],
			 const uint8_t iv[static 25], const uint8_t *msg,
			 size_t length_bits, unsigned tag_bits, uint8_t *tag);

#endif
