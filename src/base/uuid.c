#include <string.h>

#include "qwave/rng.h"
#include "qwave/uuid.h"

/* Text offsets of the hyphens in 8-4-4-4-12. */
static int is_hyphen_pos(size_t i)
{
	return i == 8 || i == 13 || i == 18 || i == 23;
}

int qw_uuid_generate(struct qw_uuid *out)
{
	int ret;

	QW_REQUIRE(out);
	ret = qw_random_bytes(out->b, sizeof(out->b));
	if (ret) {
		memset(out->b, 0, sizeof(out->b));
		return ret;
	}
	/* RFC 4122 section 4.4: version 0100 in the high nibble of
	 * time_hi_and_version (octet 6), variant bits 10 at the top of
	 * clock_seq_hi_and_reserved (octet 8). */
	out->b[6] = (uint8_t)((out->b[6] & 0x0f) | 0x40);
	out->b[8] = (uint8_t)((out->b[8] & 0x3f) | 0x80);
	return 0;
}

void qw_uuid_format(const struct qw_uuid *u, char out[static QW_UUID_STR_BYTES])
{
	static const char digits[] = "0123456789abcdef";
	size_t j = 0;

	QW_REQUIRE(u && out);
	for (size_t i = 0; i < QW_UUID_BYTES; i++) {
		if (is_hyphen_pos(j))
			out[j++] = '-';
		out[j++] = digits[u->b[i] >> 4];
		out[j++] = digits[u->b[i] & 0x0f];
	}
	out[j] = '\0';
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int qw_uuid_parse(struct qw_uuid *out, const char *s)
{
	struct qw_uuid u;
	size_t j = 0;

	QW_REQUIRE(out && s);
	for (size_t i = 0; i < QW_UUID_BYTES; i++) {
		int hi, lo;

		if (is_hyphen_pos(j) && s[j++] != '-')
			return QW_EPARSE;
		/* A NUL is not a hex digit, so a short string stops here
		 * before reading past its end. */
		if ((hi = hex_value(s[j])) < 0 || (lo = hex_value(s[j + 1])) < 0)
			return QW_EPARSE;
		u.b[i] = (uint8_t)(hi << 4 | lo);
		j += 2;
	}
	if (s[j] != '\0')
		return QW_EPARSE;
	*out = u;
	return 0;
}

int qw_uuid_compare(const struct qw_uuid *a, const struct qw_uuid *b)
{
	QW_REQUIRE(a && b);
	return memcmp(a->b, b->b, QW_UUID_BYTES);
}

int qw_uuid_version(const struct qw_uuid *u)
{
	QW_REQUIRE(u);
	return u->b[6] >> 4;
}
