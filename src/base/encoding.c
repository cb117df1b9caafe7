#include <limits.h>
#include <string.h>

#include <openssl/evp.h>

#include "qwave/encoding.h"
#include "qwave/secmem.h"

/* The encoded texts are often keys, so character classification avoids
 * secret-dependent branches and table lookups: in_range() is all ones when
 * lo <= x <= hi and 0 otherwise (x, lo, hi in 0..255; relies on the
 * arithmetic right shift gcc and clang implement). */
static int in_range(int x, int lo, int hi)
{
	return ((lo - 1 - x) & (x - hi - 1)) >> 8;
}

/* Value 0..63 of a base64 character (RFC 4648 Table 1), or -1. */
static int b64_value(unsigned char ch)
{
	int c = ch;

	return -1 + (in_range(c, 'A', 'Z') & (c - 'A' + 1)) +
	       (in_range(c, 'a', 'z') & (c - 'a' + 27)) +
	       (in_range(c, '0', '9') & (c - '0' + 53)) +
	       (in_range(c, '+', '+') & 63) + (in_range(c, '/', '/') & 64);
}

/* Value 0..15 of a hex digit of either case, or -1. */
static int hex_value(unsigned char ch)
{
	int c = ch;

	return -1 + (in_range(c, '0', '9') & (c - '0' + 1)) +
	       (in_range(c, 'a', 'f') & (c - 'a' + 11)) +
	       (in_range(c, 'A', 'F') & (c - 'A' + 11));
}

/* EVP_EncodeBlock/EVP_DecodeBlock take int lengths: work in chunks that
 * are whole 3-byte / 4-character groups. */
#define B64_CHUNK_BYTES (3u << 20)
#define B64_CHUNK_CHARS (4u << 20)

size_t qw_base64_encoded_len(size_t n)
{
	return (n / 3 + (n % 3 != 0)) * 4;
}

size_t qw_base64_decoded_max(size_t len)
{
	return len / 4 * 3;
}

int qw_base64_encode(char *out, size_t outsize, const uint8_t *in, size_t n)
{
	size_t done = 0;

	QW_REQUIRE(out && (in || n == 0));
	if (n > SIZE_MAX / 2 || outsize < qw_base64_encoded_len(n) + 1)
		return QW_ERANGE;
	while (done < n) {
		size_t k = n - done < B64_CHUNK_BYTES ? n - done : B64_CHUNK_BYTES;
		int w = EVP_EncodeBlock((unsigned char *)out, in + done, (int)k);

		if (w < 0 || (size_t)w != qw_base64_encoded_len(k))
			return QW_ECRYPTO;
		out += w;
		done += k;
	}
	*out = '\0';
	return 0;
}

int qw_base64_decode(uint8_t *out, size_t outsize, size_t *outlen,
		     const char *in, size_t len)
{
	const unsigned char *s = (const unsigned char *)in;
	unsigned char last[3];
	size_t pad = 0, body, n, done;
	int bad = 0, ret = QW_ECRYPTO;

	QW_REQUIRE(outlen && (in || len == 0) && (out || outsize == 0));
	if (len % 4 != 0)
		return QW_EPARSE;
	if (len == 0) {
		*outlen = 0;
		return 0;
	}
	/* EVP_DecodeBlock decodes '=' as a zero sextet anywhere, skips
	 * surrounding whitespace and does not report how much padding there
	 * was, so the text is checked here first: padding only as the last
	 * one or two characters, everything else in the alphabet. */
	if (s[len - 1] == '=')
		pad = s[len - 2] == '=' ? 2 : 1;
	for (size_t i = 0; i < len - pad; i++)
		bad |= b64_value(s[i]) < 0;
	/* RFC 4648 section 3.5: the bits that padding leaves over must be
	 * zero, or one byte string would have several encodings. */
	if (pad == 2)
		bad |= (b64_value(s[len - 3]) & 0x0f) != 0;
	else if (pad == 1)
		bad |= (b64_value(s[len - 2]) & 0x03) != 0;
	if (bad)
		return QW_EPARSE;
	n = len / 4 * 3 - pad;
	if (n > outsize)
		return QW_ERANGE;

	/* All groups but the last decode in place; the last one goes through
	 * last[] because DecodeBlock writes 3 bytes for it whatever the
	 * padding, which may not fit in out. */
	body = len - 4;
	for (done = 0; done < body;) {
		size_t k = body - done < B64_CHUNK_CHARS ? body - done : B64_CHUNK_CHARS;
		int w = EVP_DecodeBlock(out + done / 4 * 3, s + done, (int)k);

		if (w < 0 || (size_t)w != k / 4 * 3)
			goto out;
		done += k;
	}
	if (EVP_DecodeBlock(last, s + body, 4) != 3)
		goto out;
	memcpy(out + body / 4 * 3, last, 3 - pad);
	*outlen = n;
	ret = 0;
out:
	if (ret)
		qw_wipe(out, n);
	qw_wipe(last, sizeof(last));
	return ret;
}

size_t qw_hex_encoded_len(size_t n)
{
	return 2 * n;
}

static char hex_digit(unsigned nib)
{
	int c = (int)nib;

	/* '0' + c, moved up to 'a'.. when c > 9. */
	return (char)('0' + c + (((9 - c) >> 8) & ('a' - '0' - 10)));
}

int qw_hex_encode(char *out, size_t outsize, const uint8_t *in, size_t n)
{
	QW_REQUIRE(out && (in || n == 0));
	if (n > (SIZE_MAX - 1) / 2 || outsize < 2 * n + 1)
		return QW_ERANGE;
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex_digit(in[i] >> 4);
		out[2 * i + 1] = hex_digit(in[i] & 0x0f);
	}
	out[2 * n] = '\0';
	return 0;
}

int qw_hex_decode(uint8_t *out, size_t outsize, size_t *outlen,
		  const char *in, size_t len)
{
	const unsigned char *s = (const unsigned char *)in;
	int bad = 0;

	QW_REQUIRE(outlen && (in || len == 0) && (out || outsize == 0));
	if (len % 2 != 0)
		return QW_EPARSE;
	for (size_t i = 0; i < len; i++)
		bad |= hex_value(s[i]) < 0;
	if (bad)
		return QW_EPARSE;
	if (len / 2 > outsize)
		return QW_ERANGE;
	for (size_t i = 0; i < len / 2; i++)
		out[i] = (uint8_t)((hex_value(s[2 * i]) << 4) | hex_value(s[2 * i + 1]));
	*outlen = len / 2;
	return 0;
}
