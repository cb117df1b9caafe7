#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qwave/error.h"
#include "qwave/secmem.h"
#include "cli.h"

int qw_cli_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("qwave: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return QW_EXIT_FAIL;
}

int qw_cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs("qwave: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (cmd)
		fprintf(stderr, "\nTry 'qwave %s --help'.\n", cmd);
	else
		fputs("\nTry 'qwave --help'.\n", stderr);
	return QW_EXIT_USAGE;
}

static void group_help(FILE *f, const char *group, const char *summary,
		       const struct qw_cli_cmd *cmds)
{
	fprintf(f, "usage: qwave %s <command> [options]\n\n%s\n\ncommands:\n", group, summary);
	for (const struct qw_cli_cmd *c = cmds; c->name; c++)
		fprintf(f, "  %-14s %s\n", c->name, c->summary);
	fprintf(f, "\nEvery command takes --help, and --json for one JSON object on stdout.\n");
}

int qw_cli_dispatch(const char *group, const char *summary,
		    const struct qw_cli_cmd *cmds, int argc, char **argv)
{
	if (argc < 2) {
		group_help(stderr, group, summary, cmds);
		return QW_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		group_help(stdout, group, summary, cmds);
		return QW_EXIT_OK;
	}
	for (const struct qw_cli_cmd *c = cmds; c->name; c++)
		if (!strcmp(argv[1], c->name))
			return c->fn(argc - 1, argv + 1);
	return qw_cli_usage_error(group, "unknown command '%s %s'", group, argv[1]);
}

int qw_cli_parse_double(const char *s, double *out)
{
	char *end;
	double v;

	if (!s || !*s)
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !isfinite(v))
		return -1;
	*out = v;
	return 0;
}

int qw_cli_parse_u64(const char *s, uint64_t *out)
{
	char *end;
	double d;

	if (!s || !*s || *s == '-' || *s == '+')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (!errno && !*end) {
		*out = v;
		return 0;
	}
	/* "1e9": accepted when it names an exact integer that fits. */
	if (qw_cli_parse_double(s, &d) || d < 0 || d > 18446744073709549568.0 || d != floor(d))
		return -1;
	*out = (uint64_t)d;
	return 0;
}

void qw_cli_print_json(json_t *obj)
{
	char *s = json_dumps(obj, JSON_INDENT(2) | JSON_REAL_PRECISION(10));

	if (s) {
		fputs(s, stdout);
		fputc('\n', stdout);
		free(s);
	}
	json_decref(obj);
}

int qw_cli_read_file(const char *path, uint8_t **data, size_t *len)
{
	return qw_cli_read_file_max(path, SIZE_MAX, data, len);
}

int qw_cli_read_file_max(const char *path, size_t max, uint8_t **data, size_t *len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	uint8_t *buf = NULL, *nb;
	size_t cap = 0, n = 0, got;
	int ret = QW_EIO;

	if (!f)
		return QW_ENOTFOUND;
	for (;;) {
		if (n == cap) {
			if (cap >= max || cap > SIZE_MAX / 2) {
				ret = QW_ERANGE;
				goto out;
			}
			cap = cap ? cap * 2 : 4096;
			nb = malloc(cap);
			if (!nb) {
				ret = QW_ENOMEM;
				goto out;
			}
			if (buf)
				memcpy(nb, buf, n);
			qw_free_secret(buf, n);
			buf = nb;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f))
		goto out;
	*data = buf; /* never NULL: the loop allocated before the first read */
	*len = n;
	buf = NULL;
	ret = 0;
out:
	qw_free_secret(buf, cap);
	if (f != stdin)
		fclose(f);
	return ret;
}

int qw_cli_open_out(const char *path, int secret)
{
	struct stat st;
	int fd, ret = QW_EIO;

	/* A secret file is opened without O_TRUNC and judged by fstat() on
	 * what was opened: a stat() of the path before open() could be
	 * answered by one file and the write go to another (swapped in
	 * between, or through a symlink). */
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (secret ? O_NOFOLLOW : O_TRUNC),
		  secret ? 0600 : 0644);
	if (fd < 0)
		return errno == EACCES || errno == ELOOP ? QW_EPERM : QW_EIO;
	if (!secret)
		return fd;
	if (fstat(fd, &st) != 0)
		goto fail;
	if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
		ret = QW_EPERM;
		goto fail;
	}
	if (ftruncate(fd, 0) != 0)
		goto fail;
	return fd;
fail:
	close(fd);
	return ret;
}

int qw_cli_write_file(const char *path, const uint8_t *data, size_t len, int secret)
{
	int fd, ret = QW_EIO;
	size_t off = 0;

	if (!strcmp(path, "-")) {
		if (fwrite(data, 1, len, stdout) != len || fflush(stdout))
			return QW_EIO;
		return 0;
	}
	fd = qw_cli_open_out(path, secret);
	if (fd < 0)
		return fd;
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			goto out;
		}
		off += (size_t)w;
	}
	ret = 0;
out:
	if (close(fd) && !ret)
		ret = QW_EIO;
	return ret;
}

static int progress_on(void)
{
	const char *e = getenv("QW_PROGRESS");

	if (e)
		return strcmp(e, "0") != 0;
	return isatty(STDERR_FILENO);
}

void qw_cli_progress(const char *fmt, ...)
{
	va_list ap;

	if (!progress_on())
		return;
	fputs("\r\033[K", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fflush(stderr);
}

void qw_cli_progress_done(void)
{
	if (progress_on())
		fputs("\r\033[K", stderr);
}
