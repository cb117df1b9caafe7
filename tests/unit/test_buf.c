/* Byte buffers and readers: round trips of every integer width, exact
 * big-endian encodings, growth, and short-input errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/buf.h"

static void test_known_encoding(void **state)
{
	static const uint8_t want[] = { 0xab, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef,
					0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
					0x08, 'h', 'i' };
	struct qw_buf b;

	(void)state;
	qw_buf_init(&b, 0);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(qw_buf_append_u8(&b, 0xab), 0);
	assert_int_equal(qw_buf_append_u16be(&b, 0x1234), 0);
	assert_int_equal(qw_buf_append_u32be(&b, 0xdeadbeef), 0);
	assert_int_equal(qw_buf_append_u64be(&b, 0x0102030405060708ULL), 0);
	assert_int_equal(qw_buf_append(&b, "hi", 2), 0);
	assert_int_equal(qw_buf_append(&b, NULL, 0), 0);
	assert_int_equal(b.len, sizeof(want));
	assert_true(b.cap >= b.len);
	assert_memory_equal(b.data, want, sizeof(want));
	qw_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
	qw_buf_free(&b); /* twice is harmless */
	qw_buf_free(NULL);
}

static void round_trip(int secret)
{
	struct qw_buf b;
	struct qw_reader r;
	uint8_t u8, raw[5];
	uint16_t u16;
	uint32_t u32;
	uint64_t u64;
	const uint8_t *ref;

	qw_buf_init(&b, secret);
	/* enough records to force several growths */
	for (uint32_t i = 0; i < 2000; i++) {
		assert_int_equal(qw_buf_append_u8(&b, (uint8_t)i), 0);
		assert_int_equal(qw_buf_append_u16be(&b, (uint16_t)(i * 31)), 0);
		assert_int_equal(qw_buf_append_u32be(&b, i * 2654435761u), 0);
		assert_int_equal(qw_buf_append_u64be(&b, (uint64_t)i * 0x9e3779b97f4a7c15ULL), 0);
		assert_int_equal(qw_buf_append(&b, "abcde", 5), 0);
	}
	assert_int_equal(b.secret, secret);
	assert_int_equal(b.len, 2000 * 20);

	qw_reader_init(&r, b.data, b.len);
	for (uint32_t i = 0; i < 2000; i++) {
		assert_int_equal(qw_reader_read_u8(&r, &u8), 0);
		assert_int_equal(u8, (uint8_t)i);
		assert_int_equal(qw_reader_read_u16be(&r, &u16), 0);
		assert_int_equal(u16, (uint16_t)(i * 31));
		assert_int_equal(qw_reader_read_u32be(&r, &u32), 0);
		assert_int_equal(u32, i * 2654435761u);
		assert_int_equal(qw_reader_read_u64be(&r, &u64), 0);
		assert_true(u64 == (uint64_t)i * 0x9e3779b97f4a7c15ULL);
		if (i & 1) {
			assert_int_equal(qw_reader_read_bytes(&r, raw, 5), 0);
			assert_memory_equal(raw, "abcde", 5);
		} else {
			assert_int_equal(qw_reader_read_ref(&r, &ref, 5), 0);
			assert_ptr_equal(ref, b.data + r.off - 5);
			assert_memory_equal(ref, "abcde", 5);
		}
	}
	assert_int_equal(qw_reader_remaining(&r), 0);
	assert_int_equal(qw_reader_expect_end(&r), 0);

	/* reset keeps the allocation and empties the buffer */
	{
		size_t cap = b.cap;

		qw_buf_reset(&b);
		assert_int_equal(b.len, 0);
		assert_int_equal(b.cap, cap);
		if (secret)
			for (size_t i = 0; i < cap; i++)
				assert_int_equal(b.data[i], 0);
	}
	qw_buf_free(&b);
	assert_int_equal(b.secret, secret);
}

static void test_round_trip_plain(void **state)
{
	(void)state;
	round_trip(0);
}

static void test_round_trip_secret(void **state)
{
	(void)state;
	round_trip(1);
}

static void test_reserve(void **state)
{
	struct qw_buf b;

	(void)state;
	qw_buf_init(&b, 1);
	assert_int_equal(qw_buf_reserve(&b, 0), 0);
	assert_int_equal(qw_buf_reserve(&b, 1000), 0);
	assert_true(b.cap >= 1000);
	/* write through data + len, then advance len */
	memset(b.data, 0x77, 1000);
	b.len = 1000;
	assert_int_equal(qw_buf_append_u8(&b, 1), 0);
	assert_int_equal(b.data[999], 0x77);
	assert_int_equal(b.data[1000], 1);
	/* len + extra overflowing is refused, and the buffer is unchanged */
	assert_int_equal(qw_buf_reserve(&b, SIZE_MAX), QW_ENOMEM);
	assert_int_equal(qw_buf_reserve(&b, SIZE_MAX - 500), QW_ENOMEM);
	assert_int_equal(b.len, 1001);
	assert_int_equal(b.data[1000], 1);
	qw_buf_free(&b);
}

static void test_short_input(void **state)
{
	static const uint8_t in[7] = { 1, 2, 3, 4, 5, 6, 7 };
	struct qw_reader r;
	uint8_t u8 = 0x11, raw[8] = { 0 };
	uint16_t u16 = 0x2222;
	uint32_t u32 = 0x33333333;
	uint64_t u64 = 0x4444;
	const uint8_t *ref = NULL;

	(void)state;
	/* for every length shorter than each field, the read fails, consumes
	 * nothing and leaves the output alone */
	for (size_t len = 0; len < 8; len++) {
		qw_reader_init(&r, in, len);
		assert_int_equal(qw_reader_read_u64be(&r, &u64), QW_EPARSE);
		assert_true(u64 == 0x4444);
		if (len < 4) {
			assert_int_equal(qw_reader_read_u32be(&r, &u32), QW_EPARSE);
			assert_int_equal(u32, 0x33333333);
		}
		if (len < 2) {
			assert_int_equal(qw_reader_read_u16be(&r, &u16), QW_EPARSE);
			assert_int_equal(u16, 0x2222);
		}
		if (len < 1) {
			assert_int_equal(qw_reader_read_u8(&r, &u8), QW_EPARSE);
			assert_int_equal(u8, 0x11);
		}
		memset(raw, 0, sizeof(raw));
		assert_int_equal(qw_reader_read_bytes(&r, raw, len + 1), QW_EPARSE);
		assert_int_equal(raw[0], 0);
		assert_int_equal(qw_reader_read_ref(&r, &ref, len + 1), QW_EPARSE);
		assert_null(ref);
		assert_int_equal(qw_reader_skip(&r, len + 1), QW_EPARSE);
		assert_int_equal(r.off, 0);
		assert_int_equal(qw_reader_remaining(&r), len);
		assert_int_equal(qw_reader_expect_end(&r), len ? QW_EPARSE : 0);
		/* exactly the remaining bytes is fine */
		assert_int_equal(qw_reader_read_bytes(&r, raw, len), 0);
		assert_int_equal(qw_reader_expect_end(&r), 0);
	}
	/* a failure in the middle: the earlier fields stay consumed */
	qw_reader_init(&r, in, 7);
	assert_int_equal(qw_reader_read_u32be(&r, &u32), 0);
	assert_int_equal(u32, 0x01020304);
	assert_int_equal(qw_reader_read_u32be(&r, &u32), QW_EPARSE);
	assert_int_equal(r.off, 4);
	assert_int_equal(qw_reader_skip(&r, 1), 0);
	assert_int_equal(qw_reader_read_u16be(&r, &u16), 0);
	assert_int_equal(u16, 0x0607);
	assert_int_equal(qw_reader_read_u8(&r, &u8), QW_EPARSE);
	/* a length that would wrap off + n */
	qw_reader_init(&r, in, 7);
	assert_int_equal(qw_reader_skip(&r, 3), 0);
	assert_int_equal(qw_reader_skip(&r, SIZE_MAX), QW_EPARSE);
	assert_int_equal(r.off, 3);
	/* an empty reader over NULL */
	qw_reader_init(&r, NULL, 0);
	assert_int_equal(qw_reader_read_u8(&r, &u8), QW_EPARSE);
	assert_int_equal(qw_reader_expect_end(&r), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_known_encoding),
		cmocka_unit_test(test_round_trip_plain),
		cmocka_unit_test(test_round_trip_secret),
		cmocka_unit_test(test_reserve),
		cmocka_unit_test(test_short_input),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
