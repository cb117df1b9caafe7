/* Logging for daemons and the CLI's edge code. Library modules return
 * errors instead of logging. Never pass key material to these functions:
 * log key IDs, sizes and counts only. */
#ifndef QWAVE_LOG_H
#define QWAVE_LOG_H

#include "qwave/error.h"

enum qw_log_level { QW_LOG_DEBUG, QW_LOG_INFO, QW_LOG_WARN, QW_LOG_ERROR };

void qw_log_set_level(enum qw_log_level level);
/* Parse "debug|info|warn|error"; 0 or QW_EINVAL. */
QW_WUR int qw_log_parse_level(const char *s, enum qw_log_level *out);
/* Emit JSON lines ({"ts":..,"level":..,"msg":..}) instead of text. */
void qw_log_set_json(int on);
void qw_log(enum qw_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
