/* Logging: one line per message whatever the message holds (no forged
 * lines from peer-supplied text, no message lost in JSON mode). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "qwave/log.h"

/* Run qw_log(level, "%s", text) with stderr sent to a temporary file and
 * return what it wrote (static buffer). */
static const char *logged(enum qw_log_level level, const char *text)
{
	static char out[4096];
	FILE *tmp = tmpfile();
	int saved = dup(STDERR_FILENO);
	size_t n;

	assert_non_null(tmp);
	assert_true(saved >= 0);
	fflush(stderr);
	assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
	qw_log(level, "%s", text);
	fflush(stderr);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	rewind(tmp);
	n = fread(out, 1, sizeof(out) - 1, tmp);
	out[n] = '\0';
	fclose(tmp);
	return out;
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void test_parse_level(void **state)
{
	enum qw_log_level l = QW_LOG_DEBUG;

	(void)state;
	assert_int_equal(qw_log_parse_level("warn", &l), 0);
	assert_int_equal(l, QW_LOG_WARN);
	assert_int_equal(qw_log_parse_level("loud", &l), QW_EINVAL);
	assert_int_equal(l, QW_LOG_WARN);
}

static void test_text_one_line(void **state)
{
	const char *out;

	(void)state;
	qw_log_set_json(0);
	qw_log_set_level(QW_LOG_INFO);
	out = logged(QW_LOG_INFO, "peer sae-X\n2026-01-01T00:00:00.000Z error forged\x1b[2J");
	assert_int_equal(count_lines(out), 1);
	assert_null(strchr(out, '\x1b'));
	assert_non_null(strstr(out, "peer sae-X?2026"));
	/* below the level: nothing */
	assert_string_equal(logged(QW_LOG_DEBUG, "quiet"), "");
}

static void test_json_not_lost(void **state)
{
	json_error_t je;
	json_t *o;
	const char *out;

	(void)state;
	qw_log_set_json(1);
	qw_log_set_level(QW_LOG_INFO);
	/* not UTF-8: the message must still come out, as valid JSON */
	out = logged(QW_LOG_WARN, "id \xff\xfe from peer\nsecond");
	assert_int_equal(count_lines(out), 1);
	o = json_loads(out, 0, &je);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "level")), "warn");
	assert_string_equal(json_string_value(json_object_get(o, "msg")),
			    "id ?? from peer?second");
	json_decref(o);
	qw_log_set_json(0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_level),
		cmocka_unit_test(test_text_one_line),
		cmocka_unit_test(test_json_not_lost),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
