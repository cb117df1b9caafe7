#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "qwave/error.h"
#include "qwave/log.h"

static enum qw_log_level min_level = QW_LOG_INFO;
static int json_mode;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void qw_log_set_level(enum qw_log_level level)
{
	min_level = level;
}

void qw_log_set_json(int on)
{
	json_mode = on;
}

int qw_log_parse_level(const char *s, enum qw_log_level *out)
{
	for (int i = 0; i < 4; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum qw_log_level)i;
			return 0;
		}
	}
	return QW_EINVAL;
}

void qw_log(enum qw_log_level level, const char *fmt, ...)
{
	char msg[1024], ts[64];
	struct timespec now;
	struct tm tm;
	va_list ap;

	if (level < min_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* Messages quote what peers sent (IDs, reasons): a newline or an
	 * escape sequence in one must not forge a log line or drive the
	 * terminal, and bytes that are not ASCII would make json_pack()
	 * refuse the line (it takes UTF-8 only) and the message vanish. */
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
	if (json_mode) {
		json_t *o = json_pack("{s:s, s:s, s:s}", "ts", ts, "level",
				      level_names[level], "msg", msg);
		char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;

		if (line)
			fprintf(stderr, "%s\n", line);
		free(line);
		json_decref(o);
	} else {
		fprintf(stderr, "%s %-5s %s\n", ts, level_names[level], msg);
	}
}
