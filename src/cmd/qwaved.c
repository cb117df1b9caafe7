/* qwaved: one trusted node.
 *
 * This is the node's process shell: it reads and validates the node
 * configuration (every error names the file and line), sets up logging,
 * and runs the node's libevent loop until SIGTERM/SIGINT, stopping cleanly.
 * The services hosted by a node (key store, QKD link endpoints, ETSI GS QKD
 * 014 listener) are attached to this loop by the key-management layer. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/event.h>

#include "qwave/config.h"
#include "qwave/error.h"
#include "qwave/log.h"

static const char *const node_keys[] = { "id", "data_dir", "log_level", "log_format", NULL };
static const char *const sections[] = { "node", NULL };

struct qwaved_conf {
	const char *id;
	const char *data_dir;
	enum qw_log_level level;
	int json_log;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: qwaved -c node.conf [--check]\n\n"
		   "Run one trusted node of a qwave network.\n\n"
		   "  -c, --config FILE  node configuration (INI)\n"
		   "      --check        validate the configuration and exit\n"
		   "  -h, --help         this help\n");
}

/* Validate the configuration; on failure err holds "file:line: ...". */
static int load_conf(const struct qw_config *cfg, struct qwaved_conf *c,
		     struct qw_config_error *err)
{
	const struct qw_config_section *node = qw_config_find(cfg, "node", NULL);
	const char *v;
	int ret;

	ret = qw_config_check_sections(cfg, sections, err);
	if (ret)
		return ret;
	if (!node) {
		snprintf(err->msg, sizeof(err->msg), "%s: missing [node] section",
			 qw_config_source(cfg));
		return QW_EINVAL;
	}
	if ((ret = qw_config_check_keys(node, node_keys, err)) ||
	    (ret = qw_config_require(node, "id", &c->id, err)) ||
	    (ret = qw_config_require(node, "data_dir", &c->data_dir, err)))
		return ret;
	c->level = QW_LOG_INFO;
	v = qw_config_section_get(node, "log_level", NULL);
	if (v && qw_log_parse_level(v, &c->level)) {
		int line;

		(void)qw_config_section_get(node, "log_level", &line);
		snprintf(err->msg, sizeof(err->msg),
			 "%s:%d: key 'log_level' in [node]: '%.40s' is not one of debug, info, warn, error",
			 qw_config_source(cfg), line, v);
		return QW_EINVAL;
	}
	v = qw_config_section_get(node, "log_format", NULL);
	c->json_log = v && !strcmp(v, "json");
	return 0;
}

static void on_signal(evutil_socket_t sig, short events, void *arg)
{
	struct event_base *base = arg;

	(void)events;
	qw_log(QW_LOG_INFO, "signal %d: stopping", (int)sig);
	event_base_loopexit(base, NULL);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct qw_config_error err = { { 0 }, 0 };
	struct qw_config *cfg = NULL;
	struct qwaved_conf conf;
	struct event_base *base = NULL;
	struct event *sigterm = NULL, *sigint = NULL;
	const char *path = NULL;
	int check = 0, c, ret = 1;
	struct stat st;

	while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c': path = optarg; break;
		case 'k': check = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!path || optind != argc) {
		fprintf(stderr, "qwaved: error: %s\n", path ? "unexpected argument" : "-c FILE is required");
		usage(stderr);
		return 2;
	}
	if (qw_config_load(path, &cfg, &err) || load_conf(cfg, &conf, &err)) {
		fprintf(stderr, "qwaved: error: %s\n", err.msg);
		goto out;
	}
	if (stat(conf.data_dir, &st) == 0 && !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "qwaved: error: data_dir '%s' is not a directory\n", conf.data_dir);
		goto out;
	}
	if (check) {
		printf("%s: configuration OK (node %s)\n", path, conf.id);
		ret = 0;
		goto out;
	}
	if (mkdir(conf.data_dir, 0700) && errno != EEXIST) {
		fprintf(stderr, "qwaved: error: cannot create data_dir '%s': %s\n",
			conf.data_dir, strerror(errno));
		goto out;
	}
	qw_log_set_level(conf.level);
	qw_log_set_json(conf.json_log);
	base = event_base_new();
	if (!base)
		goto out;
	sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	sigint = evsignal_new(base, SIGINT, on_signal, base);
	if (!sigterm || !sigint || event_add(sigterm, NULL) || event_add(sigint, NULL))
		goto out;
	signal(SIGPIPE, SIG_IGN);
	qw_log(QW_LOG_INFO, "node %s started (data_dir %s)", conf.id, conf.data_dir);
	if (event_base_dispatch(base) < 0)
		goto out;
	qw_log(QW_LOG_INFO, "node %s stopped", conf.id);
	ret = 0;
out:
	if (sigterm)
		event_free(sigterm);
	if (sigint)
		event_free(sigint);
	if (base)
		event_base_free(base);
	qw_config_free(cfg);
	return ret;
}
