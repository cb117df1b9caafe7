/* INI configuration files (parsed with inih).
 *
 * A file is a list of sections in file order; a section name may repeat
 * (one [link] section per link), so sections are iterated rather than
 * looked up by name alone. Each section keeps its key = value entries in
 * file order with their line numbers, so every complaint names
 * "file:line". Syntax (inih's, with one restriction):
 *   [section]            a section header
 *   key = value          or key: value; whitespace around both is dropped
 *   ; comment / # comment at the start of a line; " ;" starts an inline
 *                        comment
 * Leading whitespace is ignored, so there are no multi-line (continuation)
 * values. Keys before the first header belong to a section named "".
 * Values may be secrets (pre-shared keys): qw_config_free() wipes them.
 *
 * Errors are returned as QW_E* codes and described for a person in a
 * caller-provided struct qw_config_error (err may be NULL when the caller
 * does not want the text). */
#ifndef QWAVE_CONFIG_H
#define QWAVE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"

struct qw_config;
struct qw_config_section;

struct qw_config_error {
	char msg[256]; /* "file:line: what is wrong", NUL-terminated */
	int line;      /* 1-based line, or 0 when no line applies */
};

/* Largest file qw_config_load() reads. */
#define QW_CONFIG_MAX_BYTES (1u << 20)

/* Parse the file at path. On success *out owns the result (free with
 * qw_config_free). Errors: QW_EIO (cannot open/read), QW_ERANGE (file over
 * QW_CONFIG_MAX_BYTES), QW_EPARSE (syntax error, over-long line or NUL
 * byte; err->line is the first bad line), QW_ENOMEM. *out is NULL on
 * failure. */
QW_WUR int qw_config_load(const char *path, struct qw_config **out,
			  struct qw_config_error *err);
/* Same for the NUL-terminated text; name stands for the file name in
 * messages ("<string>" if NULL). */
QW_WUR int qw_config_parse_string(const char *text, const char *name,
				  struct qw_config **out,
				  struct qw_config_error *err);
/* Wipes every name and value, then frees; NULL accepted. */
void qw_config_free(struct qw_config *cfg);

/* The name given at load/parse time (the path for files). */
const char *qw_config_source(const struct qw_config *cfg);
size_t qw_config_nsections(const struct qw_config *cfg);
/* Section i in file order (i < nsections). */
const struct qw_config_section *qw_config_section_at(const struct qw_config *cfg, size_t i);
/* The first section called name after the section after (NULL: from the
 * start), or NULL if none. Loop with
 *   for (s = qw_config_find(c, "link", NULL); s; s = qw_config_find(c, "link", s)) */
const struct qw_config_section *qw_config_find(const struct qw_config *cfg,
					       const char *name,
					       const struct qw_config_section *after);
const char *qw_config_section_name(const struct qw_config_section *sec);
/* Line of the [header] (of the first key for the "" section). */
int qw_config_section_line(const struct qw_config_section *sec);
size_t qw_config_section_nkeys(const struct qw_config_section *sec);
/* Entry i of a section in file order: its key, value and line. */
void qw_config_section_entry(const struct qw_config_section *sec, size_t i,
			     const char **key, const char **value, int *line);

/* The value of key in sec, or NULL. If the key repeats, the last one wins
 * (qw_config_check_keys() reports repeats). If line is not NULL it
 * receives the value's line (0 when absent). */
const char *qw_config_section_get(const struct qw_config_section *sec,
				  const char *key, int *line);
/* The value of key in the first section called section, or NULL. */
const char *qw_config_get(const struct qw_config *cfg, const char *section,
			  const char *key);

/* Typed getters. When the key is absent they return 0 and leave *out
 * untouched, so the caller stores the default in *out first. When it is
 * present but invalid they leave *out untouched, fill err with e.g.
 *   "node.ini:12: key 'port' in [api]: 'http' is not a number: expected a
 *    number between 1 and 65535"
 * and return QW_EPARSE (not a number) or QW_ERANGE (outside [min, max]). */
QW_WUR int qw_config_get_int(const struct qw_config_section *sec, const char *key,
			     int64_t min, int64_t max, int64_t *out,
			     struct qw_config_error *err);
QW_WUR int qw_config_get_uint(const struct qw_config_section *sec, const char *key,
			      uint64_t min, uint64_t max, uint64_t *out,
			      struct qw_config_error *err);
/* Finite decimal or exponent notation ("0.05", "1e-9"). */
QW_WUR int qw_config_get_double(const struct qw_config_section *sec, const char *key,
				double min, double max, double *out,
				struct qw_config_error *err);
/* true/yes/on/1 or false/no/off/0 (lowercase); else QW_EPARSE. */
QW_WUR int qw_config_get_bool(const struct qw_config_section *sec, const char *key,
			      int *out, struct qw_config_error *err);
/* The value of a key that must be present: 0 and *out set, or QW_ENOTFOUND
 * with "file:line: [section] needs key 'x'" (the header's line). */
QW_WUR int qw_config_require(const struct qw_config_section *sec, const char *key,
			     const char **out, struct qw_config_error *err);

/* Reject typos: every key of sec must be in the NULL-terminated list
 * allowed, and no key may appear twice. 0, or QW_EINVAL for the first
 * offending entry in file order, with "file:line: unknown key 'prot' in
 * [api]" or "file:line: key 'port' in [api] repeated (first at line 5)". */
QW_WUR int qw_config_check_keys(const struct qw_config_section *sec,
				const char *const *allowed,
				struct qw_config_error *err);
/* Every section name must be in the NULL-terminated list allowed; else
 * QW_EINVAL naming the first other section and its line. */
QW_WUR int qw_config_check_sections(const struct qw_config *cfg,
				    const char *const *allowed,
				    struct qw_config_error *err);

#endif
