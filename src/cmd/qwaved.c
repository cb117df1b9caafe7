/* qwaved: one trusted node.
 *
 * Reads and validates the node configuration (every error names the file
 * and line; --check stops there), then runs the node on one libevent loop:
 * the key store (data_dir/keys.db, master key data_dir/master.key), the
 * key manager with its KM links (src/km/), the QKD link endpoint threads,
 * the ETSI GS QKD 014 listener and the manager listener (/metrics and the
 * dashboard, docs/dashboard.md; both HTTPS with mutual TLS). The bound
 * ports go to a status file (JSON) so that `qwave net up` can use port 0.
 * SIGTERM/SIGINT stop it cleanly: new requests are refused, requests in
 * flight finish (up to 3 s), link threads stop, blocks already distilled
 * reach the store, the store is checkpointed and closed.
 * docs/operations.md shows how to run it. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "qwave/config.h"
#include "qwave/dashboard.h"
#include "qwave/error.h"
#include "qwave/etsi014.h"
#include "qwave/https.h"
#include "qwave/km.h"
#include "qwave/log.h"
#include "qwave/secmem.h"
#include "qwave/store.h"

#define STOP_GRACE_MS 3000

struct qwaved {
	struct qw_km_conf conf;
	struct event_base *base;
	struct qw_store *store;
	struct qw_km *km;
	struct qw_km_net *net;
	struct qw_https_server *etsi_srv, *metrics_srv;
	struct qw_etsi014 *etsi;
	struct qw_dashboard *dash;
	struct event *stop_ev;
	int stopping;
	int64_t stop_deadline;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: qwaved -c node.conf [--check]\n\n"
		   "Run one trusted node of a qwave network.\n\n"
		   "  -c, --config FILE  node configuration (INI; docs/operations.md)\n"
		   "      --check        validate the configuration and exit\n"
		   "  -h, --help         this help\n");
}

/* Files named by the configuration must be readable (--check too). */
static int check_files(const struct qw_config *cfg, struct qw_config_error *err)
{
	static const char *const keys[] = { "cert", "key", "ca", "psk_file", "master_key_file",
					    "kme_cert", "kme_key", "kme_ca" };

	for (size_t i = 0; i < qw_config_nsections(cfg); i++) {
		const struct qw_config_section *s = qw_config_section_at(cfg, i);
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
			int line;
			const char *v = qw_config_section_get(s, keys[k], &line);
			if (!v || access(v, R_OK) == 0)
				continue;
			if (!strcmp(keys[k], "master_key_file") && errno == ENOENT)
				continue; /* created on first start */
			snprintf(err->msg, sizeof(err->msg), "%s:%d: key '%s' in [%s]: cannot read '%.80s': %s",
				 qw_config_source(cfg), line, keys[k], qw_config_section_name(s), v,
				 strerror(errno));
			return QW_EIO;
		}
	}
	return 0;
}

static int open_store(struct qwaved *d)
{
	const struct qw_km_conf *c = &d->conf;
	uint8_t mk[QW_STORE_MASTER_KEY_BYTES];
	struct qw_store_opts so = { .sync = c->sync };
	char mkpath[1024], db[1024];
	int ret;

	if (c->master_key_file)
		snprintf(mkpath, sizeof(mkpath), "%s", c->master_key_file);
	else
		snprintf(mkpath, sizeof(mkpath), "%s/master.key", c->data_dir);
	snprintf(db, sizeof(db), "%s/keys.db", c->data_dir);
	ret = qw_store_masterkey_load(mkpath, mk);
	if (ret == QW_ENOTFOUND) {
		ret = qw_store_masterkey_create(mkpath, mk);
		if (!ret)
			qw_log(QW_LOG_INFO, "created master key %s", mkpath);
	}
	if (ret) {
		qw_log(QW_LOG_ERROR, "master key %s: %s", mkpath, qw_strerror(ret));
		return ret;
	}
	d->store = qw_store_open(db, mk, &so, &ret);
	qw_wipe(mk, sizeof(mk));
	if (!d->store)
		qw_log(QW_LOG_ERROR, "key store %s: %s", db, qw_strerror(ret));
	return d->store ? 0 : ret;
}

static void access_log(void *arg, const struct qw_https_access *a)
{
	struct qwaved *d = arg;

	if (!strncmp(a->path, QW_ETSI014_PREFIX, strlen(QW_ETSI014_PREFIX)))
		qw_km_count_status(d->km, a->status);
	qw_log(a->status >= 500 ? QW_LOG_WARN : QW_LOG_DEBUG, "%s %s %s -> %d %s(%.1f ms)",
	       a->peer_id, a->method, a->path, a->status, a->note, a->ms);
}

static void on_metrics(void *arg, struct qw_https_req *req)
{
	struct qwaved *d = arg;
	struct qw_buf b;

	qw_buf_init(&b, 0);
	if (qw_km_metrics(d->km, &b)) {
		qw_buf_free(&b);
		qw_https_reply_error(req, 500, "metrics unavailable");
		return;
	}
	/* Prometheus text exposition format 0.0.4 */
	qw_https_req_add_header(req, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	qw_https_reply(req, 200, (const char *)b.data, b.len);
	qw_buf_free(&b);
}

/* A query parameter's value (raw, no percent-decoding: the drill's
 * values are node IDs and numbers), copied to out; 0 or -1. */
static int query_get(const char *q, const char *name, char *out, size_t n)
{
	size_t len = strlen(name);

	while (q && *q) {
		const char *amp = strchr(q, '&');
		size_t seg = amp ? (size_t)(amp - q) : strlen(q);

		if (seg > len && !strncmp(q, name, len) && q[len] == '=') {
			if (seg - len - 1 >= n)
				return -1;
			memcpy(out, q + len + 1, seg - len - 1);
			out[seg - len - 1] = '\0';
			return 0;
		}
		q = amp ? amp + 1 : NULL;
	}
	return -1;
}

/* POST /drill/eve?peer=ID&fraction=F: the eavesdropper drill
 * (docs/operations.md, "Eavesdropper drill"): intercept-resend on a
 * fraction F of the pulses of the simulated QKD link to ID, from its next
 * session on; F = 0 ends it. Routed only on a loopback manager listener and
 * accepted only from a client holding this node's own certificate (what
 * qwave net attack uses): the attack is a drill, never a remote control. */
static void on_drill_eve(void *arg, struct qw_https_req *req)
{
	struct qwaved *d = arg;
	const char *q = qw_https_req_query(req), *who = qw_https_req_peer_id(req);
	char peer[128], fs[32], *end;
	double f;
	int ret;

	if (!who || strcmp(who, d->conf.id)) {
		qw_https_reply_error(req, 403, "the drill needs this node's own certificate");
		return;
	}
	if (query_get(q, "peer", peer, sizeof(peer)) || query_get(q, "fraction", fs, sizeof(fs))) {
		qw_https_reply_error(req, 400, "expected ?peer=ID&fraction=F");
		return;
	}
	errno = 0;
	f = strtod(fs, &end);
	if (errno || end == fs || *end || !(f >= 0.0 && f <= 1.0)) {
		qw_https_reply_error(req, 400, "fraction must be a number in [0, 1]");
		return;
	}
	for (const char *c = peer; *c; c++) {
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
		      *c == '-' || *c == '_' || *c == '.')) {
			qw_https_reply_error(req, 400, "bad peer ID");
			return;
		}
	}
	ret = qw_km_drill_eve(d->km, peer, f);
	if (ret == QW_ENOTFOUND) {
		qw_https_reply_error(req, 404, "no simulated QKD link to that peer");
		return;
	}
	if (ret == QW_ESTATE) {
		qw_https_reply_error(req, 409, "the peer's end simulates this link: send the drill there");
		return;
	}
	if (ret) {
		qw_https_reply_error(req, 500, qw_strerror(ret));
		return;
	}
	qw_log(QW_LOG_WARN, "DRILL: eavesdropper (intercept-resend) on %.1f%% of the pulses of the QKD link to %s from its next session%s",
	       100 * f, peer, f > 0 ? "" : " (attack off)");
	qw_https_req_note(req, "drill eve %s %.3f", peer, f);
	{
		char body[200];
		int n = snprintf(body, sizeof(body), "{\"peer\": \"%s\", \"fraction\": %.6g}", peer, f);
		qw_https_reply(req, 200, body, (size_t)n);
	}
}

/* 1 when the manager listener is bound to the loopback interface. */
static int loopback_addr(const char *addr)
{
	char host[64];
	uint16_t port;

	if (qw_km_parse_addr(addr, host, &port))
		return 0;
	return !strcmp(host, "127.0.0.1") || !strcmp(host, "localhost") || !strcmp(host, "::1");
}

static int listen_https(struct qwaved *d, const char *addr, struct qw_https_server **out)
{
	const struct qw_km_conf *c = &d->conf;
	struct qw_https_opts o = { 0 };
	char host[64];
	uint16_t port;
	int ret;

	if (qw_km_parse_addr(addr, host, &port))
		return QW_EINVAL;
	o.addr = strcmp(host, "localhost") ? host : "127.0.0.1";
	o.port = port;
	o.cert_file = c->etsi_cert;
	o.key_file = c->etsi_key;
	o.ca_file = c->etsi_ca;
	o.tls13_only = 1;
	o.access_log = access_log;
	o.access_log_arg = d;
	*out = qw_https_server_new(d->base, &o, &ret);
	if (!*out)
		qw_log(QW_LOG_ERROR, "cannot listen on %s: %s", addr, qw_strerror(ret));
	return *out ? 0 : ret;
}

static int write_status(struct qwaved *d)
{
	const struct qw_km_conf *c = &d->conf;
	char path[1024], tmp[1040], text[512];
	int fd, n, ret = 0;

	if (c->status_file)
		snprintf(path, sizeof(path), "%s", c->status_file);
	else
		snprintf(path, sizeof(path), "%s/status.json", c->data_dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	n = snprintf(text, sizeof(text),
		     "{\"id\": \"%s\", \"pid\": %ld, \"km_port\": %u, \"etsi_port\": %u, \"metrics_port\": %u}\n",
		     c->id, (long)getpid(), d->net ? qw_km_net_port(d->net) : 0,
		     d->etsi_srv ? qw_https_server_port(d->etsi_srv) : 0,
		     d->metrics_srv ? qw_https_server_port(d->metrics_srv) : 0);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, text, (size_t)n) != n)
		ret = QW_EIO;
	if (fd >= 0)
		close(fd);
	if (!ret && rename(tmp, path))
		ret = QW_EIO;
	if (ret)
		qw_log(QW_LOG_ERROR, "cannot write status file %s: %s", path, strerror(errno));
	return ret;
}

static void on_stop_tick(evutil_socket_t fd, short events, void *arg)
{
	struct qwaved *d = arg;
	struct timeval tv = { 0, 50000 };
	size_t pend = qw_km_pending(d->km);

	(void)fd;
	(void)events;
	if (d->etsi_srv)
		pend += qw_https_server_pending(d->etsi_srv);
	if (pend == 0 || now_ms() >= d->stop_deadline) {
		if (pend)
			qw_log(QW_LOG_WARN, "stopping with %zu request(s) unanswered", pend);
		event_base_loopexit(d->base, NULL);
		return;
	}
	evtimer_add(d->stop_ev, &tv);
}

static void on_signal(evutil_socket_t sig, short events, void *arg)
{
	struct qwaved *d = arg;

	(void)events;
	if (d->stopping)
		return;
	d->stopping = 1;
	qw_log(QW_LOG_INFO, "signal %d: stopping", (int)sig);
	d->stop_deadline = now_ms() + STOP_GRACE_MS;
	on_stop_tick(-1, 0, d);
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
	struct qwaved d;
	struct event *sigterm = NULL, *sigint = NULL;
	const char *path = NULL;
	int check = 0, c, ret = 1, r;
	struct stat st;

	memset(&d, 0, sizeof(d));
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
	if (qw_config_load(path, &cfg, &err) || qw_km_conf_load(cfg, &d.conf, &err) ||
	    check_files(cfg, &err)) {
		fprintf(stderr, "qwaved: error: %s\n", err.msg);
		goto out;
	}
	if (stat(d.conf.data_dir, &st) == 0 && !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "qwaved: error: data_dir '%s' is not a directory\n", d.conf.data_dir);
		goto out;
	}
	if (check) {
		printf("%s: configuration OK (node %s, %zu link(s), %zu SAE(s))\n", path, d.conf.id,
		       d.conf.nlinks, d.conf.nsaes);
		ret = 0;
		goto out;
	}
	if (mkdir(d.conf.data_dir, 0700) && errno != EEXIST) {
		fprintf(stderr, "qwaved: error: cannot create data_dir '%s': %s\n",
			d.conf.data_dir, strerror(errno));
		goto out;
	}
	qw_log_set_level(d.conf.log_level);
	qw_log_set_json(d.conf.json_log);
	signal(SIGPIPE, SIG_IGN);
	/* QKD link threads hand blocks and channel requests to the loop */
	if (evthread_use_pthreads() || !(d.base = event_base_new()))
		goto out;
	if (open_store(&d))
		goto out;
	d.km = qw_km_new(d.base, &d.conf, d.store, &r);
	if (!d.km)
		goto out;
	d.net = qw_km_net_start(d.km, d.base, &d.conf, &r);
	if (!d.net) {
		qw_log(QW_LOG_ERROR, "node network on %s: %s", d.conf.listen, qw_strerror(r));
		goto out;
	}
	if (d.conf.etsi_listen) {
		if (listen_https(&d, d.conf.etsi_listen, &d.etsi_srv))
			goto out;
		d.etsi = qw_etsi014_new(d.etsi_srv, qw_km_kme_ops(), d.km, &r);
		if (!d.etsi)
			goto out;
	}
	if (d.conf.metrics_listen) {
		if (listen_https(&d, d.conf.metrics_listen, &d.metrics_srv) ||
		    qw_https_route(d.metrics_srv, QW_HTTP_GET, "/metrics", on_metrics, &d))
			goto out;
		/* the manager's dashboard (docs/dashboard.md) on the same
		 * mutually authenticated listener */
		/* the eavesdropper drill, on a loopback listener only */
		if (loopback_addr(d.conf.metrics_listen) &&
		    qw_https_route(d.metrics_srv, QW_HTTP_POST, "/drill/eve", on_drill_eve, &d))
			goto out;
		d.dash = qw_dashboard_new(d.metrics_srv, qw_km_dashboard_state, d.km, &r);
		if (!d.dash) {
			qw_log(QW_LOG_ERROR, "dashboard: %s", qw_strerror(r));
			goto out;
		}
	}
	d.stop_ev = evtimer_new(d.base, on_stop_tick, &d);
	sigterm = evsignal_new(d.base, SIGTERM, on_signal, &d);
	sigint = evsignal_new(d.base, SIGINT, on_signal, &d);
	if (!d.stop_ev || !sigterm || !sigint || event_add(sigterm, NULL) || event_add(sigint, NULL))
		goto out;
	if (write_status(&d))
		goto out;
	qw_log(QW_LOG_INFO, "node %s started (data_dir %s, %zu link(s), KM port %u, ETSI port %u, metrics port %u)",
	       d.conf.id, d.conf.data_dir, d.conf.nlinks, qw_km_net_port(d.net),
	       d.etsi_srv ? qw_https_server_port(d.etsi_srv) : 0,
	       d.metrics_srv ? qw_https_server_port(d.metrics_srv) : 0);
	if (event_base_dispatch(d.base) < 0)
		goto out;
	ret = 0;
out:
	/* link threads first (they feed the loop), then the blocks they
	 * finished reach the store before it closes */
	qw_km_net_stop(d.net);
	if (d.base && d.km)
		event_base_loop(d.base, EVLOOP_NONBLOCK);
	qw_etsi014_free(d.etsi);
	qw_https_server_free(d.etsi_srv);
	/* the server's routes borrow the dashboard: server first */
	qw_https_server_free(d.metrics_srv);
	qw_dashboard_free(d.dash);
	qw_km_free(d.km);
	if (d.store) {
		if (qw_store_checkpoint(d.store))
			qw_log(QW_LOG_WARN, "key store checkpoint deferred to close");
		qw_store_close(d.store);
	}
	if (d.stop_ev)
		event_free(d.stop_ev);
	if (sigterm)
		event_free(sigterm);
	if (sigint)
		event_free(sigint);
	if (d.base)
		event_base_free(d.base);
	if (ret == 0 && !check)
		qw_log(QW_LOG_INFO, "node %s stopped", d.conf.id);
	qw_km_conf_clear(&d.conf);
	qw_config_free(cfg);
	return ret;
}
