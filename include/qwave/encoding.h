/* Text encodings of binary data: base64 (RFC 4648 section 4, standard
 * alphabet with '=' padding, the form ETSI GS QKD 014 uses for keys) and
 * hexadecimal (RFC 4648 section 8).
 *
 * Style: the caller owns every buffer. The qw_*_encoded_len and
 * qw_base64_decoded_max functions give the sizes to allocate; encoders
 * write a NUL-terminated string, decoders write raw bytes and report their
 * count. Decoders are strict (no
 * whitespace, no missing or misplaced padding, no non-zero pad bits): they
 * check the whole input before writing anything, so on failure the output
 * buffer is untouched. */
#ifndef QWAVE_ENCODING_H
#define QWAVE_ENCODING_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"

/* Characters (without the NUL) that n bytes encode to. */
size_t qw_base64_encoded_len(size_t n);
/* Upper bound on the bytes that len base64 characters decode to. */
size_t qw_base64_decoded_max(size_t len);
/* Write the base64 text of in[0..n) plus a NUL into out (outsize bytes).
 * 0, or QW_ERANGE if outsize < qw_base64_encoded_len(n) + 1, or QW_ECRYPTO
 * if OpenSSL fails. */
int qw_base64_encode(char *out, size_t outsize, const uint8_t *in, size_t n);
/* Decode len characters of base64 text into out (outsize bytes) and set
 * *outlen. 0; QW_EPARSE for malformed text (length not a multiple of 4,
 * a character outside the alphabet, bad padding, non-zero pad bits);
 * QW_ERANGE if the decoded bytes do not fit in outsize; QW_ECRYPTO if
 * OpenSSL fails (out is then wiped). */
QW_WUR int qw_base64_decode(uint8_t *out, size_t outsize, size_t *outlen,
			    const char *in, size_t len);

/* 2 * n: characters (without the NUL) of the hex text of n bytes. */
size_t qw_hex_encoded_len(size_t n);
/* Write lowercase hex of in[0..n) plus a NUL into out (outsize bytes).
 * 0 or QW_ERANGE if outsize < 2 * n + 1. Constant time in the data. */
int qw_hex_encode(char *out, size_t outsize, const uint8_t *in, size_t n);
/* Decode len hex characters (either case) into out (outsize bytes) and set
 * *outlen = len / 2. 0; QW_EPARSE for an odd length or a non-hex
 * character; QW_ERANGE if len / 2 > outsize. */
QW_WUR int qw_hex_decode(uint8_t *out, size_t outsize, size_t *outlen,
			 const char *in, size_t len);

#endif
