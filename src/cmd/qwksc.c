/* qwksc: the Key Service Center daemon (include/qwave/ksc.h, docs/ksc.md).
 *
 *   qwksc -c ksc.conf init --admin ID   system initialisation: master key
 *                                        file and database, first super admin
 *   qwksc -c ksc.conf [--check]         serve the REST API over HTTPS with
 *                                        mutual TLS until SIGTERM/SIGINT
 *
 * One libevent loop; the API at /api/v1/ksc/. With an [air] section the
 * KSC is also the access point of over-the-air refill: a thread accepts
 * terminals on that TCP listener (standing for the radio link) and serves
 * their refills one at a time (qw_ksc_air_serve). The bound ports go to
 * data_dir/status.json ("port", "air_port") so tests and scripts can use
 * port 0. The access
 * log names caller, method, path, status and a short note: never a body,
 * never key material. jansson's allocator is replaced by one that wipes
 * every block it frees, so key material that passes through JSON objects
 * does not linger in freed heap memory. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "qwave/config.h"
#include "qwave/error.h"
#include "qwave/https.h"
#include "qwave/ksc.h"
#include "qwave/log.h"
#include "qwave/secmem.h"
#include "qwave/store.h"

#define API_ROOT "/api/v1/ksc"

/* The air listener's thread (one refill at a time). */
struct air {
	int lfd;
	uint16_t port;
	uint64_t max_bits;
	unsigned timeout_s;
	struct qw_ksc *ksc;
	pthread_t th;
	int started;
	atomic_int stop;
	pthread_mutex_t mu; /* guards cfd: the connection being served */
	int cfd;
};

struct kscd {
	size_t max_body;
	struct event_base *base;
	struct qw_https_server *srv;
	struct qw_ksc *ksc;
	char data_dir[512];
	struct air air;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: qwksc -c FILE [--check]\n"
		   "       qwksc -c FILE init --admin ID\n"
		   "\n"
		   "The qwave Key Service Center: devices, secure media, key life cycle,\n"
		   "audit, authentication, session keys and crypto services over a REST API\n"
		   "(HTTPS, mutual TLS). docs/ksc.md describes the configuration and the API.\n"
		   "\n"
		   "  -c, --config FILE  configuration ([ksc], optional [air] for over-the-air\n"
		   "                     refill; examples/ksc.conf)\n"
		   "  --check            validate the configuration and exit\n"
		   "  init --admin ID    create the master key and the database; ID (the CN of\n"
		   "                     its client certificate) becomes the first super admin\n");
}

/* jansson allocator: blocks are wiped on free. Plain malloc() blocks, so
 * that code freeing json_dumps() text with free() stays correct; the size
 * comes from glibc's malloc_usable_size (elsewhere: jansson's default). */
#ifdef __GLIBC__
static void wipe_free(void *p)
{
	if (p) {
		qw_wipe(p, malloc_usable_size(p));
		free(p);
	}
}
#endif

static const char *const keys_allowed[] = {
	"data_dir", "listen", "cert", "key", "ca", "pki_dir", "qrng_file", "qrng_bits_per_sample",
	"qrng_h", "kme_url", "kme_cert", "kme_key", "kme_ca", "kme_slave_sae", "max_body",
	"sync", "log_level", "challenge_ttl", NULL,
};

static const char *const air_keys[] = { "listen", "max_bits", "timeout", NULL };

struct conf {
	const char *air_listen;
	uint64_t air_max_bits, air_timeout;
	const char *data_dir, *listen, *cert, *key, *ca, *pki_dir, *qrng_file;
	const char *kme_url, *kme_cert, *kme_key, *kme_ca, *kme_slave;
	uint64_t qrng_bits, max_body, ttl;
	double qrng_h;
	int sync_normal;
};

static int load_conf(struct qw_config *cfg, struct conf *c, struct qw_config_error *e)
{
	static const char *const sections[] = { "ksc", "air", NULL };
	const struct qw_config_section *s;
	const char *v;

	memset(c, 0, sizeof(*c));
	c->qrng_bits = 8;
	c->qrng_h = 7.0;
	c->max_body = QW_KSC_DEFAULT_MAX_BODY;
	c->air_max_bits = 65536;
	c->air_timeout = 120;
	if (qw_config_check_sections(cfg, sections, e))
		return QW_EINVAL;
	s = qw_config_find(cfg, "air", NULL);
	if (s) {
		if (qw_config_check_keys(s, air_keys, e) ||
		    qw_config_require(s, "listen", &c->air_listen, e) ||
		    qw_config_get_uint(s, "max_bits", QW_REFILL_UNIT_BITS, QW_KSC_KEY_MAX_BITS,
				       &c->air_max_bits, e) ||
		    qw_config_get_uint(s, "timeout", 1, 3600, &c->air_timeout, e))
			return QW_EINVAL;
	}
	s = qw_config_find(cfg, "ksc", NULL);
	if (!s) {
		snprintf(e->msg, sizeof(e->msg), "%s: no [ksc] section", qw_config_source(cfg));
		return QW_EINVAL;
	}
	if (qw_config_check_keys(s, keys_allowed, e) || qw_config_require(s, "data_dir", &c->data_dir, e))
		return QW_EINVAL;
	c->listen = qw_config_section_get(s, "listen", NULL);
	c->cert = qw_config_section_get(s, "cert", NULL);
	c->key = qw_config_section_get(s, "key", NULL);
	c->ca = qw_config_section_get(s, "ca", NULL);
	c->pki_dir = qw_config_section_get(s, "pki_dir", NULL);
	c->qrng_file = qw_config_section_get(s, "qrng_file", NULL);
	c->kme_url = qw_config_section_get(s, "kme_url", NULL);
	c->kme_cert = qw_config_section_get(s, "kme_cert", NULL);
	c->kme_key = qw_config_section_get(s, "kme_key", NULL);
	c->kme_ca = qw_config_section_get(s, "kme_ca", NULL);
	c->kme_slave = qw_config_section_get(s, "kme_slave_sae", NULL);
	if (qw_config_get_uint(s, "qrng_bits_per_sample", 1, 8, &c->qrng_bits, e) ||
	    qw_config_get_double(s, "qrng_h", 0.01, 8, &c->qrng_h, e) ||
	    qw_config_get_uint(s, "max_body", 1024, 64u << 20, &c->max_body, e) ||
	    qw_config_get_uint(s, "challenge_ttl", 1, 3600, &c->ttl, e))
		return QW_EINVAL;
	v = qw_config_section_get(s, "sync", NULL);
	if (v && strcmp(v, "full") && strcmp(v, "normal")) {
		snprintf(e->msg, sizeof(e->msg), "%s: sync must be full or normal",
			 qw_config_source(cfg));
		return QW_EINVAL;
	}
	c->sync_normal = v && !strcmp(v, "normal");
	v = qw_config_section_get(s, "log_level", NULL);
	if (v) {
		enum qw_log_level lv;

		if (qw_log_parse_level(v, &lv)) {
			snprintf(e->msg, sizeof(e->msg), "%s: log_level: debug, info, warn or error",
				 qw_config_source(cfg));
			return QW_EINVAL;
		}
		qw_log_set_level(lv);
	}
	if (c->kme_url && (!c->kme_cert || !c->kme_key || !c->kme_ca || !c->kme_slave)) {
		snprintf(e->msg, sizeof(e->msg), "%s: kme_url needs kme_cert, kme_key, kme_ca and "
			 "kme_slave_sae", qw_config_source(cfg));
		return QW_EINVAL;
	}
	return 0;
}

static void on_access(void *arg, const struct qw_https_access *a)
{
	(void)arg;
	qw_log(a->status >= 500 ? QW_LOG_WARN : QW_LOG_INFO, "%s %s %s -> %d %s (%.1f ms)",
	       a->peer_id, a->method, a->path, a->status, a->note, a->ms);
}

static void on_api(void *arg, struct qw_https_req *req)
{
	struct kscd *d = arg;
	struct qw_ksc_resp r;
	const char *path = qw_https_req_path(req) + strlen(API_ROOT);
	const uint8_t *body;
	size_t len;

	if (*path && *path != '/') {
		qw_https_reply_error(req, 404, "no such endpoint");
		return;
	}
	body = qw_https_req_body(req, &len);
	if (len > d->max_body) {
		qw_https_reply_error(req, 413, "request body too large");
		return;
	}
	if (qw_ksc_handle(d->ksc, qw_https_req_peer_id(req), qw_https_req_method_name(req), path,
			  qw_https_req_query(req), body, len, &r)) {
		qw_https_reply_error(req, 500, "out of memory");
		return;
	}
	if (r.note[0])
		qw_https_req_note(req, "%s", r.note);
	if (r.secret) {
		qw_https_reply_secret(req, r.status, r.body, r.len);
		r.body = NULL;
	} else {
		qw_https_reply(req, r.status, r.body, r.len);
	}
	qw_ksc_resp_clear(&r);
}

static void on_signal(evutil_socket_t sig, short events, void *arg)
{
	struct kscd *d = arg;

	(void)events;
	qw_log(QW_LOG_INFO, "signal %d: stopping", (int)sig);
	event_base_loopexit(d->base, NULL);
}

/* ---- the air interface (over-the-air refill) ---------------------------- */

static int air_listen(struct air *a, const char *hp)
{
	char host[256];
	const char *c = strrchr(hp, ':');
	struct addrinfo hints = { 0 }, *ai = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int one = 1;

	a->lfd = -1;
	if (!c || c == hp || (size_t)(c - hp) >= sizeof(host))
		return QW_EINVAL;
	memcpy(host, hp, (size_t)(c - hp));
	host[c - hp] = '\0';
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (getaddrinfo(host, c + 1, &hints, &ai))
		return QW_EINVAL;
	for (struct addrinfo *i = ai; i && a->lfd < 0; i = i->ai_next) {
		a->lfd = socket(i->ai_family, i->ai_socktype | SOCK_CLOEXEC, i->ai_protocol);
		if (a->lfd >= 0 &&
		    (setsockopt(a->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
		     bind(a->lfd, i->ai_addr, i->ai_addrlen) || listen(a->lfd, 8))) {
			close(a->lfd);
			a->lfd = -1;
		}
	}
	freeaddrinfo(ai);
	if (a->lfd < 0)
		return QW_EIO;
	if (getsockname(a->lfd, (struct sockaddr *)&ss, &sl))
		return QW_EIO;
	a->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port :
						   ((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}

static void peer_name(const struct sockaddr_storage *ss, char *out, size_t cap)
{
	char h[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &s4->sin_addr, h, sizeof(h));
		port = ntohs(s4->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, h, sizeof(h));
		port = ntohs(s6->sin6_port);
	}
	snprintf(out, cap, "%s:%u", h, port);
}

static int air_should_stop(void *arg)
{
	return atomic_load(&((struct air *)arg)->stop);
}

static void *air_main(void *arg)
{
	struct air *a = arg;
	struct qw_refill_params p;

	qw_refill_params_default(&p);
	p.recv_timeout_ms = (int)a->timeout_s * 1000;
	p.should_stop = air_should_stop;
	p.stop_arg = a;
	while (!atomic_load(&a->stop)) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		struct timeval tv = { (time_t)a->timeout_s, 0 };
		struct qw_ksc_air_result res;
		struct qw_frame_io io;
		char peer[INET6_ADDRSTRLEN + 8];
		int fd = accept(a->lfd, (struct sockaddr *)&ss, &sl), ret;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (!atomic_load(&a->stop))
				qw_log(QW_LOG_ERROR, "air: accept: %s", strerror(errno));
			break;
		}
		peer_name(&ss, peer, sizeof(peer));
		/* a terminal that stops talking must not hold the air interface:
		 * every read and write gives up after the timeout */
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		pthread_mutex_lock(&a->mu);
		a->cfd = fd;
		pthread_mutex_unlock(&a->mu);
		if (atomic_load(&a->stop))
			shutdown(fd, SHUT_RDWR);
		qw_frame_io_fd(&io, fd);
		ret = qw_ksc_air_serve(a->ksc, &io, peer, &p, a->max_bits, &res);
		pthread_mutex_lock(&a->mu);
		a->cfd = -1;
		pthread_mutex_unlock(&a->mu);
		close(fd);
		if (ret)
			qw_log(QW_LOG_WARN, "air %s: refill for '%s' failed: %s", peer,
			       res.device[0] ? res.device : "-", res.refill.reason);
		else
			qw_log(QW_LOG_INFO, "air %s: refill for '%s': key %s, %llu bits delivered "
			       "(PLKG key %llu bits, %llu probes, frames on %s)", peer, res.device,
			       res.key_id, (unsigned long long)res.refill.delivered_bits,
			       (unsigned long long)res.refill.plkg_bits,
			       (unsigned long long)res.refill.probes,
			       res.carried ? "the carried pool" : "pre-filled slots");
	}
	return NULL;
}

static int air_start(struct air *a)
{
	if (pthread_mutex_init(&a->mu, NULL))
		return QW_ENOMEM;
	a->cfd = -1;
	if (pthread_create(&a->th, NULL, air_main, a)) {
		pthread_mutex_destroy(&a->mu);
		return QW_ENOMEM;
	}
	a->started = 1;
	return 0;
}

/* Stop accepting, end the refill being served (its socket shut down: the
 * refill fails at its next read or write, audited as such) and join. */
static void air_stop(struct air *a)
{
	if (a->started) {
		atomic_store(&a->stop, 1);
		shutdown(a->lfd, SHUT_RDWR);
		pthread_mutex_lock(&a->mu);
		if (a->cfd >= 0)
			shutdown(a->cfd, SHUT_RDWR);
		pthread_mutex_unlock(&a->mu);
		pthread_join(a->th, NULL);
		pthread_mutex_destroy(&a->mu);
		a->started = 0;
	}
	if (a->lfd >= 0)
		close(a->lfd);
	a->lfd = -1;
}

static int write_status(const char *dir, uint16_t port, int air_port)
{
	char path[600], tmp[610], text[160];
	int fd, n, ret = 0;

	snprintf(path, sizeof(path), "%s/status.json", dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (air_port >= 0)
		n = snprintf(text, sizeof(text), "{\"pid\": %ld, \"port\": %u, \"air_port\": %d}\n",
			     (long)getpid(), port, air_port);
	else
		n = snprintf(text, sizeof(text), "{\"pid\": %ld, \"port\": %u}\n", (long)getpid(),
			     port);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, text, (size_t)n) != n)
		ret = QW_EIO;
	if (fd >= 0)
		close(fd);
	if (!ret && rename(tmp, path))
		ret = QW_EIO;
	return ret;
}

static int do_init(const struct conf *c, const char *admin)
{
	uint8_t mk[QW_STORE_MASTER_KEY_BYTES];
	char db[600], mkp[600];
	int ret;

	if (mkdir(c->data_dir, 0700) && errno != EEXIST) {
		fprintf(stderr, "qwksc: error: cannot create %s: %s\n", c->data_dir, strerror(errno));
		return 1;
	}
	snprintf(db, sizeof(db), "%s/ksc.db", c->data_dir);
	snprintf(mkp, sizeof(mkp), "%s/master.key", c->data_dir);
	ret = qw_store_masterkey_create(mkp, mk);
	if (ret) {
		fprintf(stderr, "qwksc: error: master key %s: %s\n", mkp, qw_strerror(ret));
		return 1;
	}
	ret = qw_ksc_init(db, mk, admin);
	qw_wipe(mk, sizeof(mk));
	if (ret) {
		unlink(mkp);
		fprintf(stderr, "qwksc: error: initialising %s: %s\n", db,
			ret == QW_EINVAL ? "invalid administrator ID" : qw_strerror(ret));
		return 1;
	}
	printf("initialised %s (master key %s, mode 0600); first super administrator: %s\n", db, mkp,
	       admin);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'k' },
		{ "admin", required_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct qw_config_error err = { { 0 }, 0 };
	struct qw_config *cfg = NULL;
	struct conf c;
	struct kscd d;
	struct qw_ksc_opts ko = { 0 };
	struct qw_https_opts ho = { 0 };
	struct event *sigterm = NULL, *sigint = NULL;
	const char *path = NULL, *admin = NULL;
	uint8_t mk[QW_STORE_MASTER_KEY_BYTES];
	char db[600], mkp[600], host[64];
	int check = 0, ch, ret = 1, r;

	memset(&d, 0, sizeof(d));
	d.air.lfd = -1;
	while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': path = optarg; break;
		case 'k': check = 1; break;
		case 'a': admin = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!path || (optind != argc && (optind + 1 != argc || strcmp(argv[optind], "init"))) ||
	    (optind != argc && !admin) || (optind == argc && admin)) {
		fprintf(stderr, "qwksc: error: %s\n",
			!path ? "-c FILE is required" :
			optind != argc && !admin ? "init needs --admin ID" : "unexpected argument");
		usage(stderr);
		return 2;
	}
	if (qw_config_load(path, &cfg, &err) || load_conf(cfg, &c, &err)) {
		fprintf(stderr, "qwksc: error: %s\n", err.msg[0] ? err.msg : "bad configuration");
		goto out;
	}
	if (admin) {
		ret = do_init(&c, admin);
		goto out;
	}
	if (!c.cert || !c.key || !c.ca) {
		fprintf(stderr, "qwksc: error: %s: [ksc] needs cert, key and ca (mutual TLS)\n", path);
		goto out;
	}
	if (check) {
		printf("%s: configuration ok\n", path);
		ret = 0;
		goto out;
	}
#ifdef __GLIBC__
	json_set_alloc_funcs(malloc, wipe_free);
#endif
	signal(SIGPIPE, SIG_IGN);
	snprintf(db, sizeof(db), "%s/ksc.db", c.data_dir);
	snprintf(mkp, sizeof(mkp), "%s/master.key", c.data_dir);
	r = qw_store_masterkey_load(mkp, mk);
	if (r) {
		fprintf(stderr, "qwksc: error: master key %s: %s%s\n", mkp, qw_strerror(r),
			r == QW_ENOTFOUND ? " (run 'qwksc -c FILE init --admin ID' first)" : "");
		goto out;
	}
	ko.db_path = db;
	ko.master_key = mk;
	ko.qrng_path = c.qrng_file;
	ko.qrng_bits_per_sample = (unsigned)c.qrng_bits;
	ko.qrng_h = c.qrng_h;
	ko.kme_url = c.kme_url;
	ko.kme_cert = c.kme_cert;
	ko.kme_key = c.kme_key;
	ko.kme_ca = c.kme_ca;
	ko.kme_slave_sae = c.kme_slave;
	ko.pki_dir = c.pki_dir;
	ko.sync_normal = c.sync_normal;
	ko.challenge_ttl_s = (unsigned)c.ttl;
	d.ksc = qw_ksc_open(&ko, &r);
	qw_wipe(mk, sizeof(mk));
	if (!d.ksc) {
		fprintf(stderr, "qwksc: error: opening %s: %s\n", db, qw_strerror(r));
		goto out;
	}
	d.base = event_base_new();
	if (!d.base)
		goto out;
	ho.port = 0;
	if (c.listen) {
		char *colon = strrchr(c.listen, ':');
		long p = colon ? strtol(colon + 1, NULL, 10) : -1;

		if (!colon || p < 0 || p > 65535 || (size_t)(colon - c.listen) >= sizeof(host)) {
			fprintf(stderr, "qwksc: error: listen: expected HOST:PORT, got '%s'\n", c.listen);
			goto out;
		}
		memcpy(host, c.listen, (size_t)(colon - c.listen));
		host[colon - c.listen] = '\0';
		ho.addr = host;
		ho.port = (uint16_t)p;
	}
	ho.cert_file = c.cert;
	ho.key_file = c.key;
	ho.ca_file = c.ca;
	/* The HTTPS layer answers bodies over its limit itself (libevent's
	 * HTML 413); give it four times ours so that an oversized body
	 * normally reaches on_api and gets a JSON 413 */
	d.max_body = (size_t)c.max_body;
	ho.max_body_bytes = (size_t)c.max_body * 4;
	ho.access_log = on_access;
	d.srv = qw_https_server_new(d.base, &ho, &r);
	if (!d.srv) {
		fprintf(stderr, "qwksc: error: HTTPS listener: %s\n", qw_strerror(r));
		goto out;
	}
	if (qw_https_route(d.srv, QW_HTTP_ANY, API_ROOT, on_api, &d)) {
		fprintf(stderr, "qwksc: error: route: out of memory\n");
		goto out;
	}
	sigterm = evsignal_new(d.base, SIGTERM, on_signal, &d);
	sigint = evsignal_new(d.base, SIGINT, on_signal, &d);
	if (!sigterm || !sigint || event_add(sigterm, NULL) || event_add(sigint, NULL))
		goto out;
	if (c.air_listen) {
		d.air.ksc = d.ksc;
		d.air.max_bits = c.air_max_bits;
		d.air.timeout_s = (unsigned)c.air_timeout;
		r = air_listen(&d.air, c.air_listen);
		if (r) {
			fprintf(stderr, "qwksc: error: [air] listen %s: %s\n", c.air_listen,
				qw_strerror(r));
			goto out;
		}
		if (air_start(&d.air)) {
			fprintf(stderr, "qwksc: error: cannot start the air interface\n");
			goto out;
		}
		qw_log(QW_LOG_INFO, "air interface on port %u (over-the-air refill)", d.air.port);
	}
	if (write_status(c.data_dir, qw_https_server_port(d.srv),
			 c.air_listen ? (int)d.air.port : -1)) {
		fprintf(stderr, "qwksc: error: cannot write %s/status.json\n", c.data_dir);
		goto out;
	}
	qw_log(QW_LOG_INFO, "ksc started (data_dir %s, port %u)", c.data_dir,
	       qw_https_server_port(d.srv));
	if (event_base_dispatch(d.base) < 0)
		goto out;
	ret = 0;
out:
	qw_wipe(mk, sizeof(mk));
	air_stop(&d.air);
	if (sigterm)
		event_free(sigterm);
	if (sigint)
		event_free(sigint);
	qw_https_server_free(d.srv);
	if (d.base) {
		event_base_loop(d.base, EVLOOP_NONBLOCK);
		event_base_free(d.base);
	}
	qw_ksc_close(d.ksc);
	qw_config_free(cfg);
	return ret;
}
