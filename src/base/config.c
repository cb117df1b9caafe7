#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "qwave/config.h"
#include "qwave/secmem.h"

struct entry {
	char *key;
	char *value;
	int line;
};

struct qw_config_section {
	const struct qw_config *cfg;
	char *name;
	int line;
	struct entry *e;
	size_t n, cap;
};

struct qw_config {
	char *source;
	/* Pointers, so that sections handed out stay put while more are
	 * added. */
	struct qw_config_section **sec;
	size_t n, cap;
};

/* State shared by the line reader and the key handler given to inih. */
struct parse {
	struct qw_config *cfg;
	const char *text;
	size_t len, pos;
	int line;     /* lines handed to inih so far */
	int err;      /* our own failure: QW_EPARSE or QW_ENOMEM */
	int err_line;
	const char *why;
	int max_line;
	int overlong;
};

__attribute__((format(printf, 3, 4)))
static void set_err(struct qw_config_error *err, int line, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	err->line = line;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

static char *dup_str(const char *s, size_t n)
{
	char *d = malloc(n + 1);

	if (d) {
		memcpy(d, s, n);
		d[n] = '\0';
	}
	return d;
}

static void free_str(char *s)
{
	if (s)
		qw_free_secret(s, strlen(s) + 1);
}

static void free_section(struct qw_config_section *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++) {
		free_str(s->e[i].key);
		free_str(s->e[i].value);
	}
	free(s->e);
	free_str(s->name);
	free(s);
}

void qw_config_free(struct qw_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n; i++)
		free_section(cfg->sec[i]);
	free(cfg->sec);
	free(cfg->source);
	free(cfg);
}

static struct qw_config_section *add_section(struct qw_config *cfg,
					     const char *name, size_t namelen,
					     int line)
{
	struct qw_config_section *s;

	if (cfg->n == cfg->cap) {
		size_t cap = cfg->cap ? cfg->cap * 2 : 8;
		struct qw_config_section **ns = realloc(cfg->sec, cap * sizeof(*ns));

		if (!ns)
			return NULL;
		cfg->sec = ns;
		cfg->cap = cap;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->name = dup_str(name, namelen);
	if (!s->name) {
		free(s);
		return NULL;
	}
	s->cfg = cfg;
	s->line = line;
	cfg->sec[cfg->n++] = s;
	return s;
}

static int add_entry(struct qw_config_section *s, const char *key,
		     const char *value, int line)
{
	struct entry *e;

	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 8;
		struct entry *ne = realloc(s->e, cap * sizeof(*ne));

		if (!ne)
			return QW_ENOMEM;
		s->e = ne;
		s->cap = cap;
	}
	e = &s->e[s->n];
	e->key = dup_str(key, strlen(key));
	e->value = dup_str(value, strlen(value));
	if (!e->key || !e->value) {
		free_str(e->key);
		free_str(e->value);
		return QW_ENOMEM;
	}
	e->line = line;
	s->n++;
	return 0;
}

static void parse_fail(struct parse *p, int err, const char *why)
{
	if (p->err)
		return;
	p->err = err;
	p->err_line = p->line;
	p->why = why;
}

/* inih reports keys with their section's name but not where a section
 * starts, so two [link] sections in a row would merge. This fgets-style
 * reader hands inih one line at a time, which lets it count lines, record
 * each [header] as a new section, and reject what inih would silently
 * split (over-long lines) or truncate (NUL bytes). It also drops leading
 * whitespace, which turns off inih's continuation lines: an indented
 * "[x]" is then a header for both of us. */
static char *read_line(char *str, int num, void *stream)
{
	struct parse *p = stream;
	const char *s, *nl;
	size_t n;

	if (p->err || p->pos >= p->len)
		return NULL;
	s = p->text + p->pos;
	nl = memchr(s, '\n', p->len - p->pos);
	n = nl ? (size_t)(nl - s) + 1 : p->len - p->pos;
	p->pos += n;
	p->line++;
	p->max_line = num;
	if (memchr(s, '\0', n)) {
		parse_fail(p, QW_EPARSE, "NUL byte in line");
		return NULL;
	}
	if (p->line == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
		s += 3;
		n -= 3;
	}
	while (n && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\v' || *s == '\f')) {
		s++;
		n--;
	}
	if (num < 2 || n > (size_t)num - 1) {
		parse_fail(p, QW_EPARSE, "line too long");
		p->overlong = 1;
		return NULL;
	}
	memcpy(str, s, n);
	str[n] = '\0';
	if (*s == '[') {
		/* inih's rule: the name runs to the first ']' unless an
		 * inline comment (" ;") starts first, which inih reports as
		 * an error itself. */
		size_t i = 1;
		int was_space = 0;

		while (i < n && s[i] != ']' && !(was_space && s[i] == ';')) {
			was_space = s[i] == ' ' || s[i] == '\t';
			i++;
		}
		if (i < n && s[i] == ']' &&
		    !add_section(p->cfg, s + 1, i - 1, p->line))
			parse_fail(p, QW_ENOMEM, "out of memory");
	}
	return str;
}

static int on_key(void *user, const char *section, const char *name,
		  const char *value)
{
	struct parse *p = user;
	struct qw_config *cfg = p->cfg;
	struct qw_config_section *cur = cfg->n ? cfg->sec[cfg->n - 1] : NULL;

	if (p->err)
		return 0;
	if (!cur && section[0] == '\0') {
		cur = add_section(cfg, "", 0, p->line);
		if (!cur) {
			parse_fail(p, QW_ENOMEM, "out of memory");
			return 0;
		}
	}
	/* Our header tracking and inih's must agree (they do not when inih
	 * truncates a long section name). */
	if (!cur || strcmp(cur->name, section) != 0) {
		parse_fail(p, QW_EPARSE, "section name not understood (too long?)");
		return 0;
	}
	/* inih accepts "= value" with an empty name. */
	if (name[0] == '\0') {
		parse_fail(p, QW_EPARSE, "syntax error: no key before '='");
		return 0;
	}
	if (add_entry(cur, name, value ? value : "", p->line)) {
		parse_fail(p, QW_ENOMEM, "out of memory");
		return 0;
	}
	return 1;
}

static int parse_text(const char *text, size_t len, const char *name,
		      struct qw_config **out, struct qw_config_error *err)
{
	struct parse p;
	int ret = QW_ENOMEM, r;

	QW_REQUIRE(text && out);
	*out = NULL;
	memset(&p, 0, sizeof(p));
	p.text = text;
	p.len = len;
	p.cfg = calloc(1, sizeof(*p.cfg));
	if (!p.cfg)
		goto nomem;
	p.cfg->source = dup_str(name, strlen(name));
	if (!p.cfg->source)
		goto nomem;

	r = ini_parse_stream(read_line, &p, on_key, &p);
	if (p.err == QW_ENOMEM || r < 0)
		goto nomem;
	if (p.err && (r == 0 || p.err_line <= r)) {
		ret = p.err;
		if (p.overlong)
			set_err(err, p.err_line, "%s:%d: line longer than %d characters",
				name, p.err_line, p.max_line - 2);
		else
			set_err(err, p.err_line, "%s:%d: %s", name, p.err_line, p.why);
		goto out;
	}
	if (r > 0) {
		ret = QW_EPARSE;
		set_err(err, r, "%s:%d: syntax error: expected [section], key = value or a comment",
			name, r);
		goto out;
	}
	*out = p.cfg;
	p.cfg = NULL;
	ret = 0;
	goto out;
nomem:
	set_err(err, 0, "%s: out of memory", name);
	ret = QW_ENOMEM;
out:
	qw_config_free(p.cfg);
	return ret;
}

int qw_config_parse_string(const char *text, const char *name,
			   struct qw_config **out, struct qw_config_error *err)
{
	QW_REQUIRE(text);
	return parse_text(text, strlen(text), name ? name : "<string>", out, err);
}

int qw_config_load(const char *path, struct qw_config **out,
		   struct qw_config_error *err)
{
	FILE *f = NULL;
	char *text = NULL;
	size_t len = 0;
	int ret = QW_EIO;

	QW_REQUIRE(path && out);
	*out = NULL;
	f = fopen(path, "rb");
	if (!f) {
		set_err(err, 0, "%s: cannot open: %s", path, strerror(errno));
		goto out;
	}
	/* Unbuffered: stdio's own buffer would keep a copy of the file (it
	 * may hold pre-shared keys) that fclose() frees without wiping. */
	(void)setvbuf(f, NULL, _IONBF, 0);
	/* One byte more than the limit, to tell "exactly at" from "over". */
	text = malloc(QW_CONFIG_MAX_BYTES + 1);
	if (!text) {
		ret = QW_ENOMEM;
		set_err(err, 0, "%s: out of memory", path);
		goto out;
	}
	len = fread(text, 1, QW_CONFIG_MAX_BYTES + 1, f);
	if (ferror(f)) {
		set_err(err, 0, "%s: read error", path);
		goto out;
	}
	if (len > QW_CONFIG_MAX_BYTES) {
		ret = QW_ERANGE;
		set_err(err, 0, "%s: larger than %u bytes", path, QW_CONFIG_MAX_BYTES);
		goto out;
	}
	ret = parse_text(text, len, path, out, err);
out:
	if (text)
		qw_free_secret(text, QW_CONFIG_MAX_BYTES + 1);
	if (f)
		fclose(f);
	return ret;
}

const char *qw_config_source(const struct qw_config *cfg)
{
	return cfg->source;
}

size_t qw_config_nsections(const struct qw_config *cfg)
{
	return cfg->n;
}

const struct qw_config_section *qw_config_section_at(const struct qw_config *cfg, size_t i)
{
	QW_REQUIRE(i < cfg->n);
	return cfg->sec[i];
}

const struct qw_config_section *qw_config_find(const struct qw_config *cfg,
					       const char *name,
					       const struct qw_config_section *after)
{
	size_t i = 0;

	QW_REQUIRE(cfg && name);
	if (after) {
		while (i < cfg->n && cfg->sec[i] != after)
			i++;
		QW_REQUIRE(i < cfg->n);
		i++;
	}
	for (; i < cfg->n; i++)
		if (strcmp(cfg->sec[i]->name, name) == 0)
			return cfg->sec[i];
	return NULL;
}

const char *qw_config_section_name(const struct qw_config_section *sec)
{
	return sec->name;
}

int qw_config_section_line(const struct qw_config_section *sec)
{
	return sec->line;
}

size_t qw_config_section_nkeys(const struct qw_config_section *sec)
{
	return sec->n;
}

void qw_config_section_entry(const struct qw_config_section *sec, size_t i,
			     const char **key, const char **value, int *line)
{
	QW_REQUIRE(i < sec->n);
	if (key)
		*key = sec->e[i].key;
	if (value)
		*value = sec->e[i].value;
	if (line)
		*line = sec->e[i].line;
}

static const struct entry *find_entry(const struct qw_config_section *sec,
				      const char *key)
{
	QW_REQUIRE(sec && key);
	for (size_t i = sec->n; i-- > 0;)
		if (strcmp(sec->e[i].key, key) == 0)
			return &sec->e[i];
	return NULL;
}

const char *qw_config_section_get(const struct qw_config_section *sec,
				  const char *key, int *line)
{
	const struct entry *e = find_entry(sec, key);

	if (line)
		*line = e ? e->line : 0;
	return e ? e->value : NULL;
}

const char *qw_config_get(const struct qw_config *cfg, const char *section,
			  const char *key)
{
	const struct qw_config_section *s = qw_config_find(cfg, section, NULL);

	return s ? qw_config_section_get(s, key, NULL) : NULL;
}

/* "in [name]", or a phrase for keys outside any section. */
static void where(const struct qw_config_section *sec, char *buf, size_t n)
{
	if (sec->name[0])
		snprintf(buf, n, "in [%s]", sec->name);
	else
		snprintf(buf, n, "before any [section]");
}

int qw_config_get_int(const struct qw_config_section *sec, const char *key,
		      int64_t min, int64_t max, int64_t *out,
		      struct qw_config_error *err)
{
	const struct entry *e = find_entry(sec, key);
	char w[80], *end;
	long long v;

	if (!e)
		return 0;
	where(sec, w, sizeof(w));
	errno = 0;
	v = strtoll(e->value, &end, 10);
	if (end == e->value || *end != '\0') {
		set_err(err, e->line, "%s:%d: key '%s' %s: '%.40s' is not a number: "
			"expected a number between %" PRId64 " and %" PRId64,
			sec->cfg->source, e->line, key, w, e->value, min, max);
		return QW_EPARSE;
	}
	if (errno == ERANGE || v < min || v > max) {
		set_err(err, e->line, "%s:%d: key '%s' %s: %.40s is out of range: "
			"expected a number between %" PRId64 " and %" PRId64,
			sec->cfg->source, e->line, key, w, e->value, min, max);
		return QW_ERANGE;
	}
	*out = v;
	return 0;
}

int qw_config_get_uint(const struct qw_config_section *sec, const char *key,
		       uint64_t min, uint64_t max, uint64_t *out,
		       struct qw_config_error *err)
{
	const struct entry *e = find_entry(sec, key);
	char w[80], *end;
	unsigned long long v;

	if (!e)
		return 0;
	where(sec, w, sizeof(w));
	errno = 0;
	/* strtoull() accepts "-1" and wraps it: require a digit first. */
	if (e->value[0] < '0' || e->value[0] > '9' ||
	    (v = strtoull(e->value, &end, 10), *end != '\0')) {
		set_err(err, e->line, "%s:%d: key '%s' %s: '%.40s' is not a number: "
			"expected a number between %" PRIu64 " and %" PRIu64,
			sec->cfg->source, e->line, key, w, e->value, min, max);
		return QW_EPARSE;
	}
	if (errno == ERANGE || v < min || v > max) {
		set_err(err, e->line, "%s:%d: key '%s' %s: %.40s is out of range: "
			"expected a number between %" PRIu64 " and %" PRIu64,
			sec->cfg->source, e->line, key, w, e->value, min, max);
		return QW_ERANGE;
	}
	*out = v;
	return 0;
}

int qw_config_get_double(const struct qw_config_section *sec, const char *key,
			 double min, double max, double *out,
			 struct qw_config_error *err)
{
	const struct entry *e = find_entry(sec, key);
	char w[80], *end;
	double v;
	unsigned char c0;

	if (!e)
		return 0;
	where(sec, w, sizeof(w));
	c0 = (unsigned char)e->value[0];
	errno = 0;
	v = strtod(e->value, &end);
	/* strtod() also takes hex floats, "inf" and "nan": a config file
	 * wants plain decimals. */
	if (end == e->value || *end != '\0' || !isfinite(v) ||
	    strpbrk(e->value, "xXiInN") ||
	    !((c0 >= '0' && c0 <= '9') || c0 == '-' || c0 == '+' || c0 == '.')) {
		set_err(err, e->line, "%s:%d: key '%s' %s: '%.40s' is not a number: "
			"expected a number between %g and %g",
			sec->cfg->source, e->line, key, w, e->value, min, max);
		return QW_EPARSE;
	}
	if (errno == ERANGE || v < min || v > max) {
		set_err(err, e->line, "%s:%d: key '%s' %s: %.40s is out of range: "
			"expected a number between %g and %g",
			sec->cfg->source, e->line, key, w, e->value, min, max);
		return QW_ERANGE;
	}
	*out = v;
	return 0;
}

int qw_config_get_bool(const struct qw_config_section *sec, const char *key,
		       int *out, struct qw_config_error *err)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };
	const struct entry *e = find_entry(sec, key);
	char w[80];

	if (!e)
		return 0;
	for (size_t i = 0; i < 4; i++) {
		if (strcmp(e->value, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcmp(e->value, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	where(sec, w, sizeof(w));
	set_err(err, e->line, "%s:%d: key '%s' %s: '%.40s' is not a boolean: "
		"expected true or false", sec->cfg->source, e->line, key, w, e->value);
	return QW_EPARSE;
}

int qw_config_require(const struct qw_config_section *sec, const char *key,
		      const char **out, struct qw_config_error *err)
{
	const struct entry *e = find_entry(sec, key);

	if (!e) {
		char w[80];

		where(sec, w, sizeof(w));
		set_err(err, sec->line, "%s:%d: missing key '%s' %s",
			sec->cfg->source, sec->line, key, w);
		return QW_ENOTFOUND;
	}
	*out = e->value;
	return 0;
}

static int in_list(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(s, *list) == 0)
			return 1;
	return 0;
}

int qw_config_check_keys(const struct qw_config_section *sec,
			 const char *const *allowed, struct qw_config_error *err)
{
	char w[80];

	QW_REQUIRE(sec && allowed);
	where(sec, w, sizeof(w));
	for (size_t i = 0; i < sec->n; i++) {
		const struct entry *e = &sec->e[i];

		if (!in_list(e->key, allowed)) {
			set_err(err, e->line, "%s:%d: unknown key '%s' %s",
				sec->cfg->source, e->line, e->key, w);
			return QW_EINVAL;
		}
		for (size_t j = 0; j < i; j++) {
			if (strcmp(sec->e[j].key, e->key) == 0) {
				set_err(err, e->line, "%s:%d: key '%s' %s repeated (first at line %d)",
					sec->cfg->source, e->line, e->key, w, sec->e[j].line);
				return QW_EINVAL;
			}
		}
	}
	return 0;
}

int qw_config_check_sections(const struct qw_config *cfg,
			     const char *const *allowed,
			     struct qw_config_error *err)
{
	QW_REQUIRE(cfg && allowed);
	for (size_t i = 0; i < cfg->n; i++) {
		const struct qw_config_section *s = cfg->sec[i];

		if (in_list(s->name, allowed))
			continue;
		if (s->name[0])
			set_err(err, s->line, "%s:%d: unknown section [%s]",
				cfg->source, s->line, s->name);
		else
			set_err(err, s->line, "%s:%d: key '%s' before any [section]",
				cfg->source, s->line, s->n ? s->e[0].key : "");
		return QW_EINVAL;
	}
	return 0;
}
