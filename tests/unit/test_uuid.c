/* UUID v4 (RFC 4122): version and variant bits, uniqueness, text round
 * trips, rejection of malformed text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/uuid.h"

enum { N = 10000 };

static int cmp(const void *a, const void *b)
{
	return qw_uuid_compare(a, b);
}

static void test_version_variant(void **state)
{
	int bit_seen[2][QW_UUID_BYTES * 8] = { { 0 } };

	(void)state;
	for (int i = 0; i < 1000; i++) {
		struct qw_uuid u;
		char s[QW_UUID_STR_BYTES];

		assert_int_equal(qw_uuid_generate(&u), 0);
		assert_int_equal(qw_uuid_version(&u), 4);
		assert_int_equal(u.b[6] >> 4, 4);
		/* RFC 4122 4.1.1: variant 10x in the top bits of octet 8 */
		assert_int_equal(u.b[8] >> 6, 2);
		qw_uuid_format(&u, s);
		assert_int_equal(s[14], '4');
		assert_non_null(strchr("89ab", s[19]));
		for (int j = 0; j < QW_UUID_BYTES * 8; j++)
			bit_seen[(u.b[j / 8] >> (j % 8)) & 1][j] = 1;
	}
	/* the 122 random bits all take both values over 1000 draws (the
	 * chance of a fair bit never flipping is 2^-999) */
	for (int j = 0; j < QW_UUID_BYTES * 8; j++) {
		int fixed = (j >= 52 && j < 56) || j == 70 || j == 71;

		assert_int_equal(bit_seen[0][j] && bit_seen[1][j], !fixed);
	}
}

static void test_unique(void **state)
{
	struct qw_uuid *u = malloc(N * sizeof(*u));

	(void)state;
	assert_non_null(u);
	for (int i = 0; i < N; i++)
		assert_int_equal(qw_uuid_generate(&u[i]), 0);
	qsort(u, N, sizeof(*u), cmp);
	for (int i = 1; i < N; i++)
		assert_true(qw_uuid_compare(&u[i - 1], &u[i]) < 0);
	free(u);
}

static void test_known_text(void **state)
{
	/* RFC 4122 Appendix B's example name space ID (DNS) */
	static const uint8_t dns[QW_UUID_BYTES] = { 0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad,
						    0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0,
						    0x4f, 0xd4, 0x30, 0xc8 };
	struct qw_uuid u, w;
	char s[QW_UUID_STR_BYTES];

	(void)state;
	memcpy(u.b, dns, sizeof(dns));
	qw_uuid_format(&u, s);
	assert_string_equal(s, "6ba7b810-9dad-11d1-80b4-00c04fd430c8");
	assert_int_equal(qw_uuid_version(&u), 1);
	assert_int_equal(qw_uuid_parse(&w, "6ba7b810-9dad-11d1-80b4-00c04fd430c8"), 0);
	assert_memory_equal(w.b, dns, sizeof(dns));
	/* upper case is accepted and means the same */
	assert_int_equal(qw_uuid_parse(&w, "6BA7B810-9DAD-11D1-80B4-00C04FD430C8"), 0);
	assert_int_equal(qw_uuid_compare(&u, &w), 0);
	assert_int_equal(qw_uuid_parse(&w, "00000000-0000-0000-0000-000000000000"), 0);
	assert_true(qw_uuid_compare(&w, &u) < 0);
	assert_true(qw_uuid_compare(&u, &w) > 0);
	assert_int_equal(qw_uuid_parse(&w, "ffffffff-ffff-ffff-ffff-ffffffffffff"), 0);
	qw_uuid_format(&w, s);
	assert_string_equal(s, "ffffffff-ffff-ffff-ffff-ffffffffffff");
}

static void test_round_trip(void **state)
{
	(void)state;
	for (int i = 0; i < 1000; i++) {
		struct qw_uuid u, w;
		char s[QW_UUID_STR_BYTES];

		assert_int_equal(qw_uuid_generate(&u), 0);
		qw_uuid_format(&u, s);
		assert_int_equal(strlen(s), 36);
		for (int j = 0; j < 36; j++) {
			if (j == 8 || j == 13 || j == 18 || j == 23)
				assert_int_equal(s[j], '-');
			else
				assert_non_null(strchr("0123456789abcdef", s[j]));
		}
		assert_int_equal(qw_uuid_parse(&w, s), 0);
		assert_int_equal(qw_uuid_compare(&u, &w), 0);
	}
}

static void test_malformed(void **state)
{
	static const char *const bad[] = {
		"",
		"6ba7b810-9dad-11d1-80b4-00c04fd430c",     /* short */
		"6ba7b810-9dad-11d1-80b4-00c04fd430c8a",   /* long */
		"6ba7b810-9dad-11d1-80b4-00c04fd430c8 ",
		" 6ba7b810-9dad-11d1-80b4-00c04fd430c8",
		"6ba7b8109dad11d180b400c04fd430c8",        /* no hyphens */
		"6ba7b810-9dad-11d1-80b400c04fd430c8",
		"6ba7b810_9dad-11d1-80b4-00c04fd430c8",    /* wrong separator */
		"6ba7b81-09dad-11d1-80b4-00c04fd430c8",    /* hyphen misplaced */
		"6ba7b810-9dad-11d1-80b4-00c04fd430cg",    /* non-hex */
		"6ba7b810-9dad-11d1-80b4-00c04fd430c\xff",
		"{6ba7b810-9dad-11d1-80b4-00c04fd430c8}",  /* braces */
		"urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8",
		"6ba7b810-9dad-11d1-80b4--0c04fd430c8",
		"+ba7b810-9dad-11d1-80b4-00c04fd430c8",
		"6ba7b810-9dad-11d1-80b4-00c04fd430c8\n",
	};
	struct qw_uuid w;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(w.b, 0x5a, sizeof(w.b));
		assert_int_equal(qw_uuid_parse(&w, bad[i]), QW_EPARSE);
		for (int j = 0; j < QW_UUID_BYTES; j++)
			assert_int_equal(w.b[j], 0x5a);
	}
	/* every prefix of a valid text is rejected */
	for (size_t len = 0; len < 36; len++) {
		char s[37];

		memcpy(s, "6ba7b810-9dad-11d1-80b4-00c04fd430c8", len);
		s[len] = '\0';
		assert_int_equal(qw_uuid_parse(&w, s), QW_EPARSE);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_version_variant),
		cmocka_unit_test(test_unique),
		cmocka_unit_test(test_known_text),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_malformed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
