/* Helpers shared by the qwave CLI's subcommands: the one place where errors
 * become text for a person, and where --json output is produced. */
#ifndef QWAVE_CLI_H
#define QWAVE_CLI_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#define QW_EXIT_OK 0
#define QW_EXIT_FAIL 1
#define QW_EXIT_USAGE 2

/* One subcommand of a group: name, handler, one-line summary. */
struct qw_cli_cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
};

/* Print "qwave: error: <msg>" on stderr; returns QW_EXIT_FAIL. */
int qw_cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "qwave: error: <msg>" plus "Try 'qwave <cmd> --help'." (cmd NULL:
 * "Try 'qwave --help'."); returns QW_EXIT_USAGE. */
int qw_cli_usage_error(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Dispatch argv[1] among cmds (argv[0] is the group name, e.g. "crypto").
 * Handles --help/-h and unknown names (exit 2). */
int qw_cli_dispatch(const char *group, const char *summary,
		    const struct qw_cli_cmd *cmds, int argc, char **argv);

/* Strict number parsing for option values; 0 or -1 (value rejected).
 * Doubles accept scientific notation ("1e9"); u64 accepts "1e9" too when
 * the value is an exact integer. */
int qw_cli_parse_u64(const char *s, uint64_t *out);
int qw_cli_parse_double(const char *s, double *out);

/* Print obj as the single JSON object on stdout (steals the reference). */
void qw_cli_print_json(json_t *obj);

/* Read all of a file ("-" = stdin) into a new buffer (never NULL, also
 * for an empty file); 0, QW_ENOTFOUND (cannot open: errno says why),
 * QW_EIO, QW_ENOMEM. Caller frees (with qw_free_secret when the content is
 * secret). The _max form refuses (QW_ERANGE) a file that fills max bytes. */
int qw_cli_read_file(const char *path, uint8_t **data, size_t *len);
int qw_cli_read_file_max(const char *path, size_t max, uint8_t **data, size_t *len);
/* Write data to path ("-" = stdout); secret files are created 0600, and
 * an existing one is refused (QW_EPERM, left untouched) when it is a
 * symlink, not a regular file, or open to group/others. 0 or QW_E*. */
int qw_cli_write_file(const char *path, const uint8_t *data, size_t len, int secret);
/* Open path for writing as qw_cli_write_file does (not "-"): an fd, or a
 * negative QW_E* (QW_EPERM for a refused secret file). */
int qw_cli_open_out(const char *path, int secret);

/* Progress on stderr, only when stderr is a terminal or QW_PROGRESS=1. */
void qw_cli_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void qw_cli_progress_done(void);

#endif
