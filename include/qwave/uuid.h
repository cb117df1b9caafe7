/* UUIDs (RFC 4122): random version-4 identifiers for keys, as ETSI GS QKD
 * 014 requires for key_ID, in the canonical 8-4-4-4-12 text form. */
#ifndef QWAVE_UUID_H
#define QWAVE_UUID_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"

#define QW_UUID_BYTES 16
/* Text form: 36 characters plus the NUL. */
#define QW_UUID_STR_BYTES 37

struct qw_uuid {
	uint8_t b[QW_UUID_BYTES]; /* network byte order, as RFC 4122 4.1.2 */
};

/* New random UUID (RFC 4122 section 4.4: 122 random bits from
 * qw_random_bytes(), version 4, variant 10x). 0, or the error of
 * qw_random_bytes() (then *out is zeroed). */
QW_WUR int qw_uuid_generate(struct qw_uuid *out);
/* Write the lowercase 8-4-4-4-12 text form plus a NUL. */
void qw_uuid_format(const struct qw_uuid *u, char out[static QW_UUID_STR_BYTES]);
/* Parse exactly 36 characters in 8-4-4-4-12 form (hex digits of either
 * case) from the NUL-terminated s; any other length, separator or
 * character (braces, "urn:uuid:" prefix, whitespace) is QW_EPARSE, and
 * then *out is untouched. Any version and variant is accepted. */
QW_WUR int qw_uuid_parse(struct qw_uuid *out, const char *s);
/* <0, 0, >0 ordering by the 16 bytes (not secret: plain memcmp). */
int qw_uuid_compare(const struct qw_uuid *a, const struct qw_uuid *b);
/* The version field (RFC 4122 section 4.1.3): 4 for qw_uuid_generate(). */
int qw_uuid_version(const struct qw_uuid *u);

#endif
