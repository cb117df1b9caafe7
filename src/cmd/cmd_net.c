/* qwave net up|down: a whole qwave network on this machine from one
 * topology file (include/qwave/km.h, docs/operations.md). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "qwave/config.h"
#include "qwave/km.h"
#include "qwave/pki.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

int qw_cmd_net(int argc, char **argv);
/* src/cmd/cmd_net_status.c */
int qw_cmd_net_status(int argc, char **argv);
int qw_cmd_net_attack(int argc, char **argv);

#define NET_DEFAULT_DIR ".qwave-net"
#define NET_START_TIMEOUT_S 30
#define NET_STOP_TIMEOUT_S 10

struct net_node {
	const char *id;
	uint16_t km_port, etsi_port, metrics_port;
	pid_t pid;
	off_t log_off;             /* its log's size when this start began */
};

/* Starts of the whole network when a node finds its KM port taken. */
#define NET_PORT_ATTEMPTS 3

/* snprintf for paths; a truncated path is caught where the file is used. */
static void pathf(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pathf(char *out, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(out, n, fmt, ap);
	va_end(ap);
}

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];

	if (strlen(path) >= sizeof(buf))
		return -1;
	pathf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, mode) && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, mode) && errno != EEXIST ? -1 : 0;
}

static int write_text(const char *path, const char *text, mode_t mode)
{
	char tmp[PATH_MAX + 8];
	size_t n = strlen(text);
	int fd, ok;

	pathf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	ok = write(fd, text, n) == (ssize_t)n;
	close(fd);
	return ok && !rename(tmp, path) ? 0 : -1;
}

/* A port the kernel considers free now. The KM listener ports must be in
 * the peers' configurations before any node starts; the ETSI and metrics
 * ports are chosen by each qwaved itself (port 0, reported in its status
 * file), so only these can race with another program. */
static int free_port(uint16_t *port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ret = -1;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && !bind(fd, (struct sockaddr *)&sin, sizeof(sin)) &&
	    !getsockname(fd, (struct sockaddr *)&sin, &sl)) {
		*port = ntohs(sin.sin_port);
		ret = 0;
	}
	if (fd >= 0)
		close(fd);
	return ret;
}

static int tcp_answers(uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons(port);
	ok = fd >= 0 && !connect(fd, (struct sockaddr *)&sin, sizeof(sin));
	if (fd >= 0)
		close(fd);
	return ok;
}

/* 1 when pid is a live (not zombie) qwaved. */
static int is_qwaved(pid_t pid)
{
	char path[64], buf[256];
	FILE *f;
	size_t n;
	int ok = 0;

	if (pid <= 0 || kill(pid, 0))
		return 0;
	pathf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	f = fopen(path, "r");
	if (f) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		buf[n] = 0;
		fclose(f);
		{
			char *rp = strrchr(buf, ')');
			if (rp && (rp[2] == 'Z' || rp[2] == 'X'))
				return 0;
		}
		ok = strstr(buf, "(qwaved)") != NULL;
	}
	return ok;
}

static void qwaved_path(char *out, size_t n)
{
	const char *env = getenv("QWAVED");
	char self[PATH_MAX];
	ssize_t len;

	if (env && *env) {
		pathf(out, n, "%s", env);
		return;
	}
	len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (len <= 0) {
		pathf(out, n, "qwaved");
		return;
	}
	self[len] = 0;
	*strrchr(self, '/') = 0;
	pathf(out, n, "%s/qwaved", self);
}

static int append(char **buf, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int append(char **buf, size_t *len, const char *fmt, ...)
{
	va_list ap;
	int n;
	char *nb;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !(nb = realloc(*buf, *len + (size_t)n + 1)))
		return -1;
	*buf = nb;
	va_start(ap, fmt);
	vsnprintf(*buf + *len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	*len += (size_t)n;
	return 0;
}

static const char *other_end(const struct qw_km_topo_link *l, const char *id)
{
	return !strcmp(l->a, id) ? l->b : !strcmp(l->b, id) ? l->a : NULL;
}

static int has_links(const struct qw_km_topo *t, const char *me)
{
	for (size_t i = 0; i < t->nlinks; i++)
		if (other_end(&t->links[i], me))
			return 1;
	return 0;
}

/* Copy a topology section into a node configuration as it is (the
 * [policy] rule lines repeat, in order). */
static int copy_section(char **b, size_t *len, const struct qw_config_section *sec)
{
	int bad = append(b, len, "[%s]\n", qw_config_section_name(sec));

	for (size_t k = 0; k < qw_config_section_nkeys(sec); k++) {
		const char *key, *val;
		int line;
		qw_config_section_entry(sec, k, &key, &val, &line);
		bad |= append(b, len, "%s = %s\n", key, val);
	}
	return bad;
}

static char *node_conf(const char *dir, const struct qw_config *cfg, const struct qw_km_topo *t,
		       const struct net_node *nodes, size_t i)
{
	static const char *const node_wide[] = { "routing", "relay", "policy", NULL };
	const char *me = nodes[i].id;
	char *b = NULL;
	size_t len = 0;
	int bad = 0;

	bad |= append(&b, &len,
		      "; written by qwave net up\n[node]\nid = %s\ndata_dir = %s/nodes/%s\n"
		      "listen = 127.0.0.1:%u\ncert = %s/pki/node-%s.crt\nkey = %s/pki/node-%s.key\n"
		      "ca = %s/pki/ca.crt\nstatus_file = %s/nodes/%s.status.json\n"
		      "; kill -9 safe (WAL); use full where power loss must not re-deliver\nsync = normal\n"
		      "[etsi]\nlisten = 127.0.0.1:0\n[metrics]\nlisten = 127.0.0.1:0\n",
		      me, dir, me, nodes[i].km_port, dir, me, dir, me, dir, dir, me);
	if (t->limits)
		bad |= copy_section(&b, &len, t->limits);
	/* the routing timers, relay batching and authorization policy of the
	 * whole network (qw_km_topo_load checked them as a node would) */
	for (size_t k = 0; node_wide[k]; k++) {
		const struct qw_config_section *sec = qw_config_find(cfg, node_wide[k], NULL);
		if (sec)
			bad |= copy_section(&b, &len, sec);
	}
	for (size_t l = 0; l < t->nlinks; l++) {
		const struct qw_km_topo_link *lk = &t->links[l];
		const char *peer = other_end(lk, me);
		uint16_t port = 0;
		if (!peer)
			continue;
		for (size_t j = 0; j < t->nnodes; j++)
			if (!strcmp(nodes[j].id, peer))
				port = nodes[j].km_port;
		bad |= append(&b, &len,
			      "[link]\npeer = %s\naddress = 127.0.0.1:%u\npsk_file = %s/psk/%s--%s.psk\n"
			      "distance_km = %.17g\n",
			      peer, port, dir, lk->a, lk->b, lk->length_km);
		for (size_t k = 0; k < qw_config_section_nkeys(lk->sec); k++) {
			const char *key, *val;
			int line;
			qw_config_section_entry(lk->sec, k, &key, &val, &line);
			if (strcmp(key, "a") && strcmp(key, "b") && strcmp(key, "length_km"))
				bad |= append(&b, &len, "%s = %s\n", key, val);
		}
	}
	/* every SAE with its node: one further away is reached by key relay
	 * (a node without links serves only its own) */
	for (size_t s = 0; s < t->nsaes; s++)
		if (!strcmp(me, t->saes[s].node) || has_links(t, me))
			bad |= append(&b, &len, "[sae]\nid = %s\nnode = %s\n", t->saes[s].id,
				      t->saes[s].node);
	if (bad) {
		free(b);
		return NULL;
	}
	return b;
}

/* 1 when node n (exited during start-up) failed to listen on its KM port:
 * another program took the port between free_port() and the node's bind.
 * qwaved logs "node network on 127.0.0.1:PORT: input/output error". */
static int km_port_taken(const char *dir, const struct net_node *n)
{
	char path[PATH_MAX], want[64], line[512];
	FILE *f;
	int hit = 0;

	pathf(path, sizeof(path), "%s/nodes/%s.log", dir, n->id);
	pathf(want, sizeof(want), "node network on 127.0.0.1:%u: ", n->km_port);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fseeko(f, n->log_off, SEEK_SET) == 0)
		while (!hit && fgets(line, sizeof(line), f))
			hit = strstr(line, want) && strstr(line, qw_strerror(QW_EIO));
	fclose(f);
	return hit;
}

static int read_status(const char *path, struct net_node *n)
{
	json_error_t je;
	json_t *j = json_load_file(path, 0, &je);
	json_int_t pid = 0, km = 0, etsi = 0, met = 0;
	int ret = -1;

	if (!j)
		return -1;
	if (!json_unpack(j, "{s:I, s:I, s:I, s:I}", "pid", &pid, "km_port", &km, "etsi_port", &etsi,
			 "metrics_port", &met) &&
	    pid == n->pid) {
		n->etsi_port = (uint16_t)etsi;
		n->metrics_port = (uint16_t)met;
		ret = 0;
	}
	json_decref(j);
	return ret;
}

/* ---- pids file ---- */

static int read_pids(const char *dir, pid_t *pids, char ids[][QW_PKI_ID_MAX + 1], size_t max,
		     size_t *n)
{
	char path[PATH_MAX];
	FILE *f;
	long pid;
	char id[QW_PKI_ID_MAX + 1];

	*n = 0;
	pathf(path, sizeof(path), "%s/pids", dir);
	f = fopen(path, "r");
	if (!f)
		return errno == ENOENT ? 0 : -1;
	while (*n < max && fscanf(f, "%64s %ld", id, &pid) == 2) {
		pids[*n] = (pid_t)pid;
		pathf(ids[*n], QW_PKI_ID_MAX + 1, "%s", id);
		(*n)++;
	}
	fclose(f);
	return 0;
}

static int stop_all(const char *dir, int quiet)
{
	pid_t pids[256];
	char ids[256][QW_PKI_ID_MAX + 1];
	char path[PATH_MAX];
	size_t n, alive = 0;
	time_t t0;

	if (read_pids(dir, pids, ids, 256, &n))
		return qw_cli_fail("cannot read %s/pids: %s", dir, strerror(errno));
	for (size_t i = 0; i < n; i++)
		if (is_qwaved(pids[i]) && !kill(pids[i], SIGTERM))
			alive++;
	t0 = time(NULL);
	while (alive && time(NULL) - t0 < NET_STOP_TIMEOUT_S) {
		struct timespec ts = { 0, 50000000 };
		alive = 0;
		for (size_t i = 0; i < n; i++)
			alive += is_qwaved(pids[i]);
		if (alive)
			nanosleep(&ts, NULL);
	}
	for (size_t i = 0; i < n; i++)
		if (is_qwaved(pids[i])) {
			fprintf(stderr, "qwave: node %s (pid %ld) did not stop in %d s: killed\n", ids[i],
				(long)pids[i], NET_STOP_TIMEOUT_S);
			kill(pids[i], SIGKILL);
		}
	for (int k = 0; k < 100; k++) {
		struct timespec ts = { 0, 20000000 };
		alive = 0;
		for (size_t i = 0; i < n; i++)
			alive += is_qwaved(pids[i]);
		if (!alive)
			break;
		nanosleep(&ts, NULL);
	}
	pathf(path, sizeof(path), "%s/pids", dir);
	unlink(path);
	if (!quiet)
		printf("network down: %zu node(s) stopped (state kept in %s)\n", n, dir);
	return QW_EXIT_OK;
}

/* ---- up ---- */

static void up_help(void)
{
	printf("usage: qwave net up FILE [--state-dir D] [--json]\n"
	       "\n"
	       "Bring up the network of topology FILE on this machine: a CA and certificates\n"
	       "for every node and SAE (D/pki), one qwaved per node on loopback ports chosen\n"
	       "at run time (configurations, data and logs in D/nodes), the QKD links\n"
	       "distilling. Returns once every node's ETSI 014 listener answers; keys appear\n"
	       "as the links fill the pools. Topology format: docs/operations.md.\n"
	       "\n"
	       "  --state-dir D  state directory (default ./%s)\n"
	       "  --json         {\"state_dir\", \"ca\", \"nodes\": [{\"id\", \"kme_url\", \"metrics_url\",\n"
	       "                 \"pid\"}], \"saes\": [{\"id\", \"node\", \"cert\", \"key\"}]}\n",
	       NET_DEFAULT_DIR);
}

static int issue(const char *pki, enum qw_pki_kind kind, const char *id)
{
	char crt[PATH_MAX];
	struct qw_pki_issue_opts o = { .kind = kind, .id = id };
	int ret;

	pathf(crt, sizeof(crt), "%s/%s-%s.crt", pki, qw_pki_kind_name(kind), id);
	if (access(crt, R_OK) == 0)
		return 0;
	ret = qw_pki_issue(pki, &o);
	if (ret)
		qw_cli_fail("issuing the certificate of %s %s: %s", qw_pki_kind_name(kind), id,
			    qw_strerror(ret));
	return ret;
}

static int make_psk(const char *dir, const struct qw_km_topo_link *l)
{
	char path[PATH_MAX];
	const char *ec = qw_config_section_get(l->sec, "ec", NULL);
	/* the first session's key and a reserve (km.h) */
	size_t n = 2 * qw_km_psk_bytes(ec && !strcmp(ec, "ldpc") ? QW_LINK_EC_LDPC : QW_LINK_EC_CASCADE);
	uint8_t *psk;
	int ret;

	pathf(path, sizeof(path), "%s/psk/%s--%s.psk", dir, l->a, l->b);
	if (access(path, R_OK) == 0)
		return 0;
	psk = qw_secure_alloc(n);
	if (!psk)
		return QW_ENOMEM;
	/* the pre-shared key a real link is installed with, on both nodes */
	ret = qw_random_bytes(psk, n);
	if (!ret)
		ret = qw_cli_write_file(path, psk, n, 1);
	qw_secure_free(psk, n);
	return ret;
}

static pid_t spawn(const char *qwaved, const char *conf, const char *log)
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	{
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
		setsid();
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (nul >= 0)
			dup2(nul, 0);
		execl(qwaved, "qwaved", "-c", conf, (char *)NULL);
		_exit(127);
	}
}

static int net_up(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state-dir", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sdir = NET_DEFAULT_DIR, *file;
	char dir[PATH_MAX], pki[PATH_MAX], path[PATH_MAX], qwaved[PATH_MAX];
	struct qw_config *cfg = NULL;
	struct qw_config_error err;
	struct qw_km_topo t;
	struct net_node *nodes = NULL;
	pid_t old[256];
	char oldids[256][QW_PKI_ID_MAX + 1];
	size_t nold;
	char *pidtext = NULL;
	size_t pidlen = 0;
	int json = 0, c, ret = QW_EXIT_FAIL, r;
	time_t t0;

	memset(&t, 0, sizeof(t));
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': sdir = optarg; break;
		case 'j': json = 1; break;
		case 'h': up_help(); return QW_EXIT_OK;
		default: return qw_cli_usage_error("net up", "unknown option");
		}
	}
	if (optind != argc - 1)
		return qw_cli_usage_error("net up", "expected one topology FILE");
	file = argv[optind];
	if (qw_config_load(file, &cfg, &err) || qw_km_topo_load(cfg, &t, &err)) {
		qw_cli_fail("%s", err.msg);
		goto out;
	}
	if (mkdir_p(sdir, 0700) || !realpath(sdir, dir)) {
		qw_cli_fail("cannot create state directory %s: %s", sdir, strerror(errno));
		goto out;
	}
	if (read_pids(dir, old, oldids, 256, &nold) == 0)
		for (size_t i = 0; i < nold; i++)
			if (is_qwaved(old[i])) {
				qw_cli_fail("a network is already up in %s (node %s, pid %ld): run 'qwave net down' first",
					    dir, oldids[i], (long)old[i]);
				goto out;
			}
	pathf(pki, sizeof(pki), "%s/pki", dir);
	pathf(path, sizeof(path), "%s/ca.crt", pki);
	if (access(path, R_OK) && (r = qw_pki_ca_init(pki, QW_PK_ECDSA_P256, "qwave net CA", 0))) {
		qw_cli_fail("creating the CA in %s: %s", pki, qw_strerror(r));
		goto out;
	}
	for (size_t i = 0; i < t.nnodes; i++)
		if (issue(pki, QW_PKI_NODE, t.nodes[i]))
			goto out;
	for (size_t i = 0; i < t.nsaes; i++)
		if (issue(pki, QW_PKI_SAE, t.saes[i].id))
			goto out;
	pathf(path, sizeof(path), "%s/psk", dir);
	if (mkdir_p(path, 0700))
		goto out;
	for (size_t i = 0; i < t.nlinks; i++)
		if ((r = make_psk(dir, &t.links[i]))) {
			qw_cli_fail("link %s--%s: cannot write its pre-shared key: %s", t.links[i].a,
				    t.links[i].b, qw_strerror(r));
			goto out;
		}
	pathf(path, sizeof(path), "%s/nodes", dir);
	nodes = qw_calloc(t.nnodes, sizeof(*nodes));
	if (mkdir_p(path, 0700) || !nodes)
		goto out;
	qwaved_path(qwaved, sizeof(qwaved));
	if (access(qwaved, X_OK)) {
		qw_cli_fail("cannot run %s (set QWAVED to the qwaved binary)", qwaved);
		goto out;
	}
	/* The KM ports must be in the peers' configurations before any node
	 * starts, so they are picked here (free_port) and can be taken by
	 * another program before the node binds: then the whole network
	 * starts again on fresh ports (the peers know the old one). */
	for (int attempt = 1;; attempt++) {
		const struct net_node *lost = NULL;

		for (size_t i = 0; i < t.nnodes; i++) {
			nodes[i].id = t.nodes[i];
			if (free_port(&nodes[i].km_port)) {
				qw_cli_fail("no free loopback port");
				goto out;
			}
		}
		for (size_t i = 0; i < t.nnodes; i++) {
			char *text = node_conf(dir, cfg, &t, nodes, i);
			pathf(path, sizeof(path), "%s/nodes/%s.conf", dir, nodes[i].id);
			if (!text || write_text(path, text, 0600)) {
				free(text);
				qw_cli_fail("cannot write %s", path);
				goto out;
			}
			free(text);
			pathf(path, sizeof(path), "%s/nodes/%s.status.json", dir, nodes[i].id);
			unlink(path);
		}
		free(pidtext);
		pidtext = NULL;
		pidlen = 0;
		for (size_t i = 0; i < t.nnodes; i++) {
			char conf[PATH_MAX], log[PATH_MAX];
			struct stat sb;
			pathf(conf, sizeof(conf), "%s/nodes/%s.conf", dir, nodes[i].id);
			pathf(log, sizeof(log), "%s/nodes/%s.log", dir, nodes[i].id);
			nodes[i].log_off = stat(log, &sb) ? 0 : sb.st_size;
			nodes[i].pid = spawn(qwaved, conf, log);
			if (nodes[i].pid < 0 ||
			    append(&pidtext, &pidlen, "%s %ld\n", nodes[i].id, (long)nodes[i].pid)) {
				qw_cli_fail("cannot start qwaved: %s", strerror(errno));
				goto fail_stop;
			}
			pathf(path, sizeof(path), "%s/pids", dir);
			if (write_text(path, pidtext, 0600)) {
				qw_cli_fail("cannot write %s", path);
				goto fail_stop;
			}
		}
		t0 = time(NULL);
		for (size_t i = 0; i < t.nnodes && !lost; i++) {
			char st[PATH_MAX];
			pathf(st, sizeof(st), "%s/nodes/%s.status.json", dir, nodes[i].id);
			for (;;) {
				struct timespec ts = { 0, 50000000 };
				int status;
				if (!read_status(st, &nodes[i]) && tcp_answers(nodes[i].etsi_port))
					break;
				if (waitpid(nodes[i].pid, &status, WNOHANG) == nodes[i].pid) {
					if (attempt < NET_PORT_ATTEMPTS && km_port_taken(dir, &nodes[i])) {
						lost = &nodes[i];
						break;
					}
					qw_cli_fail("node %s exited during start-up: see %s/nodes/%s.log",
						    nodes[i].id, dir, nodes[i].id);
					goto fail_stop;
				}
				if (time(NULL) - t0 > NET_START_TIMEOUT_S) {
					qw_cli_fail("node %s did not answer within %d s: see %s/nodes/%s.log",
						    nodes[i].id, NET_START_TIMEOUT_S, dir, nodes[i].id);
					goto fail_stop;
				}
				qw_cli_progress("starting node %s", nodes[i].id);
				nanosleep(&ts, NULL);
			}
		}
		if (!lost)
			break;
		qw_cli_progress_done();
		fprintf(stderr,
			"qwave: node %s: its KM port %u was taken by another program meanwhile: starting the network again on fresh ports\n",
			lost->id, lost->km_port);
		(void)stop_all(dir, 1);
	}
	qw_cli_progress_done();
	if (json) {
		json_t *o = json_object(), *jn = json_array(), *js = json_array();
		char url[64], murl[80];
		for (size_t i = 0; i < t.nnodes; i++) {
			pathf(url, sizeof(url), "https://127.0.0.1:%u", nodes[i].etsi_port);
			pathf(murl, sizeof(murl), "https://127.0.0.1:%u/metrics", nodes[i].metrics_port);
			json_array_append_new(jn, json_pack("{s:s, s:s, s:s, s:I}", "id", nodes[i].id,
							    "kme_url", url, "metrics_url", murl, "pid",
							    (json_int_t)nodes[i].pid));
		}
		for (size_t i = 0; i < t.nsaes; i++) {
			char crt[PATH_MAX], key[PATH_MAX];
			pathf(crt, sizeof(crt), "%s/sae-%s.crt", pki, t.saes[i].id);
			pathf(key, sizeof(key), "%s/sae-%s.key", pki, t.saes[i].id);
			json_array_append_new(js, json_pack("{s:s, s:s, s:s, s:s}", "id", t.saes[i].id,
							    "node", t.saes[i].node, "cert", crt, "key", key));
		}
		pathf(path, sizeof(path), "%s/ca.crt", pki);
		json_object_set_new(o, "state_dir", json_string(dir));
		json_object_set_new(o, "ca", json_string(path));
		json_object_set_new(o, "nodes", jn);
		json_object_set_new(o, "saes", js);
		qw_cli_print_json(o);
	} else {
		printf("network up: %zu node(s), %zu link(s), %zu SAE(s); state in %s\n", t.nnodes,
		       t.nlinks, t.nsaes, dir);
		printf("CA certificate: %s/ca.crt\n\n", pki);
		printf("%-16s %-8s %-28s %s\n", "node", "pid", "KME (ETSI 014)", "metrics");
		for (size_t i = 0; i < t.nnodes; i++) {
			char url[64], murl[80];
			pathf(url, sizeof(url), "https://127.0.0.1:%u", nodes[i].etsi_port);
			pathf(murl, sizeof(murl), "https://127.0.0.1:%u/metrics", nodes[i].metrics_port);
			printf("%-16s %-8ld %-28s %s\n", nodes[i].id, (long)nodes[i].pid, url, murl);
		}
		printf("\n%-16s %-16s %s\n", "SAE", "node", "certificate (key: same name, .key)");
		for (size_t i = 0; i < t.nsaes; i++)
			printf("%-16s %-16s %s/sae-%s.crt\n", t.saes[i].id, t.saes[i].node, pki,
			       t.saes[i].id);
		printf("\nLinks are distilling; pools fill in the background. Stop with 'qwave net down%s%s'.\n",
		       strcmp(sdir, NET_DEFAULT_DIR) ? " --state-dir " : "",
		       strcmp(sdir, NET_DEFAULT_DIR) ? sdir : "");
	}
	ret = QW_EXIT_OK;
	goto out;
fail_stop:
	qw_cli_progress_done();
	(void)stop_all(dir, 1);
out:
	free(pidtext);
	free(nodes);
	qw_km_topo_clear(&t);
	qw_config_free(cfg);
	return ret;
}

static int net_down(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state-dir", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sdir = NET_DEFAULT_DIR;
	char dir[PATH_MAX];
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': sdir = optarg; break;
		case 'h':
			printf("usage: qwave net down [FILE] [--state-dir D]\n\n"
			       "Stop every qwaved that 'qwave net up' started in D (default ./%s):\n"
			       "SIGTERM, then SIGKILL after %d s. Idempotent. FILE is accepted for\n"
			       "symmetry with 'net up' and not needed.\n",
			       NET_DEFAULT_DIR, NET_STOP_TIMEOUT_S);
			return QW_EXIT_OK;
		default: return qw_cli_usage_error("net down", "unknown option");
		}
	}
	if (argc - optind > 1)
		return qw_cli_usage_error("net down", "at most one FILE");
	if (!realpath(sdir, dir)) {
		printf("network down: nothing to stop (no %s)\n", sdir);
		return QW_EXIT_OK;
	}
	return stop_all(dir, 0);
}

int qw_cmd_net(int argc, char **argv)
{
	static const struct qw_cli_cmd cmds[] = {
		{ "up", net_up, "start a network from a topology file (CA, certificates, one qwaved per node)" },
		{ "down", net_down, "stop every node 'net up' started" },
		{ "status", qw_cmd_net_status, "the whole network: nodes, links, pools, QBER, key rates, alarms" },
		{ "attack", qw_cmd_net_attack, "eavesdropper drill: intercept-resend on a running link" },
		{ NULL, NULL, NULL },
	};

	return qw_cli_dispatch("net", "A whole qwave network on this machine.", cmds, argc, argv);
}
