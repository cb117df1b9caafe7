/* Base64 and hex: RFC 4648 section 10 test vectors, strict rejection of
 * malformed text, round trips over many lengths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/encoding.h"

struct vec {
	const char *raw, *b64, *hex;
};

/* RFC 4648 section 10 (BASE16 given there in upper case). */
static const struct vec rfc4648[] = {
	{ "", "", "" },
	{ "f", "Zg==", "66" },
	{ "fo", "Zm8=", "666F" },
	{ "foo", "Zm9v", "666F6F" },
	{ "foob", "Zm9vYg==", "666F6F62" },
	{ "fooba", "Zm9vYmE=", "666F6F6261" },
	{ "foobar", "Zm9vYmFy", "666F6F626172" },
};

static uint64_t rng_state = 0x1234567;

static uint8_t next_byte(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint8_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 56);
}

static void test_base64_rfc4648(void **state)
{
	char text[16];
	uint8_t raw[8];
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
		const struct vec *v = &rfc4648[i];
		size_t len = strlen(v->raw);

		assert_int_equal(qw_base64_encoded_len(len), strlen(v->b64));
		assert_int_equal(qw_base64_encode(text, sizeof(text), (const uint8_t *)v->raw, len), 0);
		assert_string_equal(text, v->b64);
		/* decode into a buffer of exactly the decoded size */
		n = 99;
		assert_int_equal(qw_base64_decode(raw, len, &n, v->b64, strlen(v->b64)), 0);
		assert_int_equal(n, len);
		assert_memory_equal(raw, v->raw, len);
		assert_true(qw_base64_decoded_max(strlen(v->b64)) >= len);
	}
}

static void test_hex_rfc4648(void **state)
{
	char text[16], lower[16];
	uint8_t raw[8];
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
		const struct vec *v = &rfc4648[i];
		size_t len = strlen(v->raw), j;

		for (j = 0; v->hex[j]; j++)
			lower[j] = (char)(v->hex[j] >= 'A' && v->hex[j] <= 'F' ? v->hex[j] + 32 : v->hex[j]);
		lower[j] = '\0';
		assert_int_equal(qw_hex_encoded_len(len), strlen(v->hex));
		assert_int_equal(qw_hex_encode(text, sizeof(text), (const uint8_t *)v->raw, len), 0);
		assert_string_equal(text, lower);
		/* the RFC's upper case and our lower case both decode */
		assert_int_equal(qw_hex_decode(raw, len, &n, v->hex, strlen(v->hex)), 0);
		assert_int_equal(n, len);
		assert_memory_equal(raw, v->raw, len);
		assert_int_equal(qw_hex_decode(raw, len, &n, lower, strlen(lower)), 0);
		assert_int_equal(n, len);
		assert_memory_equal(raw, v->raw, len);
	}
}

static void test_base64_rejects(void **state)
{
	static const char *const bad[] = {
		"Zg=",        /* length not a multiple of 4 */
		"Zg",         /* missing padding */
		"Z",
		"Zm9vY",
		"Z===",       /* too much padding */
		"====",
		"Zm9v====",
		"Zg=a",       /* padding not at the end */
		"Z=g=",
		"=Zg=",
		"Zm=vYmFy",
		"Zh==",       /* non-zero pad bits (RFC 4648 section 3.5) */
		"Zm9=",
		"Zm9vYmF=",
		"Zm9v\n",     /* whitespace anywhere */
		" Zm9",
		"Zm9 ",
		"Zm 9v",
		"Zm9v\r\n\r\n",
		"Zm-v",       /* base64url characters */
		"Zm_v",
		"Zm9\x80",    /* non-ASCII */
		"Zm9\xff",
		"Zm.v",
	};
	uint8_t out[16];
	size_t n = 42;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(out, 0xcc, sizeof(out));
		assert_int_equal(qw_base64_decode(out, sizeof(out), &n, bad[i], strlen(bad[i])),
				 QW_EPARSE);
		assert_int_equal(n, 42);
		for (size_t j = 0; j < sizeof(out); j++)
			assert_int_equal(out[j], 0xcc);
	}
	/* an embedded NUL counts as a character, and is not base64 */
	assert_int_equal(qw_base64_decode(out, sizeof(out), &n, "Zm\0v", 4), QW_EPARSE);
	/* the decoded bytes must fit */
	assert_int_equal(qw_base64_decode(out, 5, &n, "Zm9vYmFy", 8), QW_ERANGE);
	assert_int_equal(qw_base64_decode(out, 0, &n, "Zg==", 4), QW_ERANGE);
	assert_int_equal(qw_base64_decode(out, 3, &n, "Zm9vYg==", 8), QW_ERANGE);
	assert_int_equal(n, 42);
}

static void test_hex_rejects(void **state)
{
	static const char *const bad[] = { "6", "666", "6g", "g6", "66 ", " 66", "0x66",
					   "6-", "6\xff", "66\n", "6G" };
	uint8_t out[8];
	size_t n = 42;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(out, 0xcc, sizeof(out));
		assert_int_equal(qw_hex_decode(out, sizeof(out), &n, bad[i], strlen(bad[i])),
				 QW_EPARSE);
		assert_int_equal(n, 42);
		assert_int_equal(out[0], 0xcc);
	}
	assert_int_equal(qw_hex_decode(out, 2, &n, "aabbcc", 6), QW_ERANGE);
	/* every byte value both ways */
	for (int c = 0; c < 256; c++) {
		char s[3];
		uint8_t b = (uint8_t)c;

		assert_int_equal(qw_hex_encode(s, sizeof(s), &b, 1), 0);
		assert_int_equal(qw_hex_decode(out, 1, &n, s, 2), 0);
		assert_int_equal(out[0], c);
	}
	/* every character as the low digit: exactly 0-9, a-f, A-F pass */
	for (int c = 1; c < 256; c++) {
		char s[3] = { '0', (char)c, '\0' };
		int ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');

		assert_int_equal(qw_hex_decode(out, 1, &n, s, 2), ok ? 0 : QW_EPARSE);
	}
}

static void test_base64_alphabet(void **state)
{
	uint8_t out[3];
	size_t n;
	int count = 0;

	(void)state;
	/* exactly the 64 characters of RFC 4648 Table 1 decode, as the first
	 * of four */
	for (int c = 0; c < 256; c++) {
		char s[5] = { (char)c, 'A', 'A', 'A', '\0' };

		if (qw_base64_decode(out, sizeof(out), &n, s, 4) == 0) {
			count++;
			assert_true((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
				    (c >= '0' && c <= '9') || c == '+' || c == '/');
		}
	}
	assert_int_equal(count, 64);
	/* and map to the right values: "+/" is 62, 63 */
	assert_int_equal(qw_base64_decode(out, sizeof(out), &n, "+/+/", 4), 0);
	assert_int_equal(n, 3);
	assert_int_equal(out[0], 0xfb);
	assert_int_equal(out[1], 0xff);
	assert_int_equal(out[2], 0xbf);
}

static void test_encode_buffer_too_small(void **state)
{
	char text[9];

	(void)state;
	/* 6 bytes -> 8 characters + NUL */
	assert_int_equal(qw_base64_encode(text, 8, (const uint8_t *)"foobar", 6), QW_ERANGE);
	assert_int_equal(qw_base64_encode(text, 9, (const uint8_t *)"foobar", 6), 0);
	assert_int_equal(qw_hex_encode(text, 8, (const uint8_t *)"abcd", 4), QW_ERANGE);
	assert_int_equal(qw_hex_encode(text, 9, (const uint8_t *)"abcd", 4), 0);
	assert_string_equal(text, "61626364");
}

static void test_round_trips(void **state)
{
	uint8_t in[300] = { 0 }, out[300];
	char text[420], hex[601], want[601];
	size_t n;

	(void)state;
	for (size_t len = 0; len <= sizeof(in); len++) {
		for (size_t i = 0; i < len; i++)
			in[i] = next_byte();
		assert_int_equal(qw_base64_encode(text, sizeof(text), in, len), 0);
		assert_int_equal(strlen(text), qw_base64_encoded_len(len));
		assert_int_equal(qw_base64_decode(out, len, &n, text, strlen(text)), 0);
		assert_int_equal(n, len);
		assert_memory_equal(out, in, len);

		want[0] = '\0';
		for (size_t i = 0; i < len; i++)
			snprintf(want + 2 * i, 3, "%02x", in[i]);
		assert_int_equal(qw_hex_encode(hex, sizeof(hex), in, len), 0);
		assert_string_equal(hex, want);
		assert_int_equal(qw_hex_decode(out, len, &n, hex, strlen(hex)), 0);
		assert_int_equal(n, len);
		assert_memory_equal(out, in, len);
	}
}

static void test_large_round_trip(void **state)
{
	/* past the 3 MiB chunk size the OpenSSL calls are made in */
	const size_t len = (6u << 20) + 5;
	uint8_t *in = malloc(len), *out = malloc(len);
	char *text = malloc(qw_base64_encoded_len(len) + 1);
	size_t n;

	(void)state;
	assert_non_null(in);
	assert_non_null(out);
	assert_non_null(text);
	for (size_t i = 0; i < len; i++)
		in[i] = (uint8_t)(i * 131 + (i >> 11));
	assert_int_equal(qw_base64_encode(text, qw_base64_encoded_len(len) + 1, in, len), 0);
	assert_int_equal(strlen(text), qw_base64_encoded_len(len));
	assert_int_equal(qw_base64_decode(out, len, &n, text, strlen(text)), 0);
	assert_int_equal(n, len);
	assert_memory_equal(out, in, len);
	free(in);
	free(out);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64_rfc4648),
		cmocka_unit_test(test_hex_rfc4648),
		cmocka_unit_test(test_base64_rejects),
		cmocka_unit_test(test_hex_rejects),
		cmocka_unit_test(test_base64_alphabet),
		cmocka_unit_test(test_encode_buffer_too_small),
		cmocka_unit_test(test_round_trips),
		cmocka_unit_test(test_large_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
