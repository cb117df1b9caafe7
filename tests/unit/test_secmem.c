/* Secret memory: wiping, constant-time comparison, locked allocations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/secmem.h"

static void test_wipe(void **state)
{
	uint8_t buf[100];

	(void)state;
	memset(buf, 0xa5, sizeof(buf));
	qw_wipe(buf + 10, 50);
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], (i >= 10 && i < 60) ? 0 : 0xa5);
	/* NULL with n == 0 is allowed and does nothing */
	qw_wipe(NULL, 0);
	qw_wipe(buf, 0);
	assert_int_equal(buf[0], 0xa5);
}

static void test_ct_equal(void **state)
{
	uint8_t a[64], b[64];

	(void)state;
	for (size_t i = 0; i < sizeof(a); i++)
		a[i] = b[i] = (uint8_t)(i * 7 + 1);
	assert_int_equal(qw_ct_equal(a, b, sizeof(a)), 1);
	assert_int_equal(qw_ct_equal(a, b, 0), 1);
	/* a difference in any position, including a single bit, is seen */
	for (size_t i = 0; i < sizeof(a); i++) {
		for (int bit = 0; bit < 8; bit++) {
			b[i] ^= (uint8_t)(1u << bit);
			assert_int_equal(qw_ct_equal(a, b, sizeof(a)), 0);
			b[i] ^= (uint8_t)(1u << bit);
		}
	}
	/* only the first n bytes are compared */
	b[63] ^= 1;
	assert_int_equal(qw_ct_equal(a, b, 63), 1);
}

static void test_secure_alloc(void **state)
{
	static const size_t sizes[] = { 0, 1, 32, 4095, 4096, 4097, 100000 };

	(void)state;
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t n = sizes[k];
		uint8_t *p = qw_secure_alloc(n);

		assert_non_null(p);
		assert_true(((uintptr_t)p & 4095) == 0);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(p[i], 0);
		memset(p, 0x5a, n);
		qw_secure_free(p, n);
	}
	qw_secure_free(NULL, 10);
}

static void test_calloc_and_free_secret(void **state)
{
	uint8_t *p;

	(void)state;
	p = qw_calloc(10, 8);
	assert_non_null(p);
	for (size_t i = 0; i < 80; i++)
		assert_int_equal(p[i], 0);
	qw_free_secret(p, 80);
	qw_free_secret(NULL, 5);
	/* n * size overflowing size_t is refused rather than wrapped */
	assert_null(qw_calloc(SIZE_MAX / 2, 4));
	p = qw_calloc(0, 0);
	assert_non_null(p);
	qw_free_secret(p, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wipe),
		cmocka_unit_test(test_ct_equal),
		cmocka_unit_test(test_secure_alloc),
		cmocka_unit_test(test_calloc_and_free_secret),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
