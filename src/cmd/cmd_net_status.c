/* qwave net status: the whole network 'qwave net up' started, merged from
 * every node's manager listener (GET /api/network, docs/dashboard.md) into
 * one view: nodes, links, pools, QBER, key rates, alarms. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cli.h"

int qw_cmd_net_status(int argc, char **argv);

#define ST_DEFAULT_DIR ".qwave-net"
#define ST_MAX_NODES 256
#define ST_ID_MAX 64
#define ST_TIMEOUT_MS 5000L
#define ST_MAX_BODY (4u * 1024u * 1024u)
#define ST_MAX_ALARMS 20

struct st_node {
	char id[ST_ID_MAX + 1];
	long pid;          /* 0: unknown */
	int alive, up;
	long metrics_port; /* 0: unknown */
	char error[256];
	json_t *report;    /* its /api/network, NULL when it did not answer */
};

struct body {
	char *p;
	size_t n;
};

static void strf(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void strf(char *out, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(out, n, fmt, ap);
	va_end(ap);
}

/* 1 when pid is a live (not zombie) qwaved: a recycled pid is not taken
 * for the node (as 'net down' does). */
static int is_qwaved(long pid)
{
	char path[64], buf[256];
	FILE *f;
	size_t n;
	char *rp;

	if (pid <= 0 || (kill((pid_t)pid, 0) && errno != EPERM))
		return 0;
	strf(path, sizeof(path), "/proc/%ld/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	rp = strrchr(buf, ')');
	if (!rp || rp[1] == 0 || rp[2] == 'Z' || rp[2] == 'X')
		return 0;
	return strstr(buf, "(qwaved)") != NULL;
}

static int cmp_node(const void *a, const void *b)
{
	return strcmp(((const struct st_node *)a)->id, ((const struct st_node *)b)->id);
}

/* The nodes are the nodes/<id>.conf files 'net up' wrote: they stay after
 * 'net down', so a stopped network still lists its nodes (as down). */
static int list_nodes(const char *dir, struct st_node *nodes, size_t *n)
{
	char path[PATH_MAX];
	DIR *d;
	struct dirent *e;

	*n = 0;
	strf(path, sizeof(path), "%s/nodes", dir);
	d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d)) && *n < ST_MAX_NODES) {
		size_t len = strlen(e->d_name);
		if (len <= 5 || len - 5 > ST_ID_MAX || strcmp(e->d_name + len - 5, ".conf"))
			continue;
		memset(&nodes[*n], 0, sizeof(nodes[*n]));
		memcpy(nodes[*n].id, e->d_name, len - 5);
		(*n)++;
	}
	closedir(d);
	qsort(nodes, *n, sizeof(*nodes), cmp_node);
	return 0;
}

static void read_pids(const char *dir, struct st_node *nodes, size_t n)
{
	char path[PATH_MAX], id[ST_ID_MAX + 1];
	long pid;
	FILE *f;

	strf(path, sizeof(path), "%s/pids", dir);
	f = fopen(path, "r");
	if (!f)
		return;
	while (fscanf(f, "%64s %ld", id, &pid) == 2)
		for (size_t i = 0; i < n; i++)
			if (!strcmp(nodes[i].id, id))
				nodes[i].pid = pid;
	fclose(f);
}

static void read_status(const char *dir, struct st_node *nd)
{
	char path[PATH_MAX];
	json_error_t je;
	json_t *j;
	json_int_t pid = 0, port = 0;

	strf(path, sizeof(path), "%s/nodes/%s.status.json", dir, nd->id);
	j = json_load_file(path, 0, &je);
	if (!j)
		return;
	if (!json_unpack(j, "{s:I, s:I}", "pid", &pid, "metrics_port", &port)) {
		/* the status file of an older process (restarted by hand, pids
		 * file not updated) names other ports: trust the pids file */
		if (!nd->pid)
			nd->pid = (long)pid;
		if (nd->pid == (long)pid && port > 0 && port < 65536)
			nd->metrics_port = (long)port;
	}
	json_decref(j);
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb;
	char *nb;

	if (b->n + n > ST_MAX_BODY || !(nb = realloc(b->p, b->n + n + 1)))
		return 0;
	memcpy(nb + b->n, p, n);
	b->p = nb;
	b->n += n;
	b->p[b->n] = 0;
	return n;
}

/* GET /api/network from the node's manager listener with mutual TLS: the
 * node's own certificate of the network CA (any certificate of the CA is
 * accepted there, docs/dashboard.md "Access"). */
static void fetch(const char *dir, struct st_node *nd)
{
	char url[80], crt[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
	struct body b = { NULL, 0 };
	CURL *c = curl_easy_init();
	CURLcode rc;
	long code = 0;
	json_error_t je;

	if (!c) {
		strf(nd->error, sizeof(nd->error), "out of memory");
		return;
	}
	strf(url, sizeof(url), "https://127.0.0.1:%ld/api/network", nd->metrics_port);
	strf(crt, sizeof(crt), "%s/pki/node-%s.crt", dir, nd->id);
	strf(key, sizeof(key), "%s/pki/node-%s.key", dir, nd->id);
	strf(ca, sizeof(ca), "%s/pki/ca.crt", dir);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(c, CURLOPT_SSLCERT, crt);
	curl_easy_setopt(c, CURLOPT_SSLKEY, key);
	curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, ST_TIMEOUT_MS);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	rc = curl_easy_perform(c);
	if (rc != CURLE_OK) {
		strf(nd->error, sizeof(nd->error), "no answer from its manager listener: %s",
		     curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	if (code != 200) {
		strf(nd->error, sizeof(nd->error), "/api/network answered HTTP %ld", code);
		goto out;
	}
	nd->report = b.p ? json_loadb(b.p, b.n, 0, &je) : NULL;
	if (!json_is_object(nd->report) || !json_is_array(json_object_get(nd->report, "links")) ||
	    !json_is_array(json_object_get(nd->report, "nodes")) ||
	    !json_is_array(json_object_get(nd->report, "alarms"))) {
		json_decref(nd->report);
		nd->report = NULL;
		strf(nd->error, sizeof(nd->error), "/api/network answered no network state");
	}
out:
	free(b.p);
	curl_easy_cleanup(c);
}

/* ---- merging the per-node views ---- */

static int same_pair(json_t *l, const char *a, const char *b)
{
	const char *la = json_string_value(json_object_get(l, "a"));
	const char *lb = json_string_value(json_object_get(l, "b"));

	return la && lb && ((!strcmp(la, a) && !strcmp(lb, b)) || (!strcmp(la, b) && !strcmp(lb, a)));
}

static void add_unique_strings(json_t *dst, json_t *src)
{
	size_t i, k;
	json_t *v, *w;

	json_array_foreach(src, i, v) {
		int found = 0;
		if (!json_is_string(v))
			continue;
		json_array_foreach(dst, k, w)
			found |= json_equal(v, w);
		if (!found)
			json_array_append(dst, v);
	}
}

/* The pool at end `end` of report link rl, whose ends may be in either
 * order relative to the merged link. */
static json_t *pool_of(json_t *rl, const char *end)
{
	json_t *pb = json_object_get(rl, "pool_bits");
	const char *ra = json_string_value(json_object_get(rl, "a"));

	if (!json_is_object(pb) || !ra)
		return NULL;
	return json_object_get(pb, !strcmp(ra, end) ? "a" : "b");
}

/* One merged link per endpoint pair. Each end's pool comes from that end's
 * own report (the far end's figure in a neighbour's view is at best an
 * older copy), QBER and key rate from the first report giving them (both
 * ends distil the same sessions), the alarm flag and alarm kinds OR'ed; the
 * link is up only when every end that answered says so. */
static json_t *merge_links(struct st_node *nodes, size_t n)
{
	json_t *out = json_array();

	for (size_t i = 0; i < n; i++) {
		size_t k;
		json_t *rl;
		if (!nodes[i].report)
			continue;
		json_array_foreach(json_object_get(nodes[i].report, "links"), k, rl) {
			const char *a = json_string_value(json_object_get(rl, "a"));
			const char *b = json_string_value(json_object_get(rl, "b"));
			json_t *m = NULL, *v, *pb;
			size_t j;
			if (!a || !b)
				continue;
			json_array_foreach(out, j, v)
				if (same_pair(v, a, b))
					m = v;
			if (!m) {
				m = json_pack("{s:s, s:s, s:n, s:b, s:n, s:b, s:n, s:{s:n, s:n}, s:[], s:[]}",
					      "a", a, "b", b, "length_km", "up", 1, "qber", "qber_alarm", 0,
					      "key_rate_bps", "pool_bits", "a", "b", "alarms", "reported_by");
				if (!m)
					continue;
				json_array_append_new(out, m);
			}
			json_array_append_new(json_object_get(m, "reported_by"),
					      json_string(nodes[i].id));
			if (!json_is_true(json_object_get(rl, "up")))
				json_object_set_new(m, "up", json_false());
			if (json_is_true(json_object_get(rl, "qber_alarm")))
				json_object_set_new(m, "qber_alarm", json_true());
			if (json_is_null(json_object_get(m, "qber")) &&
			    json_is_number(json_object_get(rl, "qber"))) {
				json_object_set(m, "qber", json_object_get(rl, "qber"));
				json_object_set(m, "key_rate_bps", json_object_get(rl, "key_rate_bps"));
			}
			if (json_is_null(json_object_get(m, "length_km")) &&
			    json_is_number(json_object_get(rl, "length_km")))
				json_object_set(m, "length_km", json_object_get(rl, "length_km"));
			add_unique_strings(json_object_get(m, "alarms"), json_object_get(rl, "alarms"));
			pb = json_object_get(m, "pool_bits");
			for (int e = 0; e < 2; e++) {
				const char *end = json_string_value(json_object_get(m, e ? "b" : "a"));
				json_t *p = pool_of(rl, end);
				const char *key = e ? "b" : "a";
				if (!json_is_integer(p))
					continue;
				/* own report wins; another's only fills an unknown */
				if (!strcmp(end, nodes[i].id) || json_is_null(json_object_get(pb, key)))
					json_object_set(pb, key, p);
			}
		}
	}
	return out;
}

static int cmp_alarm_desc(const void *x, const void *y)
{
	const char *a = json_string_value(json_object_get(*(json_t *const *)x, "ts"));
	const char *b = json_string_value(json_object_get(*(json_t *const *)y, "ts"));

	/* RFC 3339 UTC with the same precision: text order is time order */
	return strcmp(b ? b : "", a ? a : "");
}

static json_t *merge_alarms(struct st_node *nodes, size_t n)
{
	json_t **all = NULL, *out = json_array(), *v;
	size_t cnt = 0, cap = 0, k;

	for (size_t i = 0; i < n; i++) {
		if (!nodes[i].report)
			continue;
		json_array_foreach(json_object_get(nodes[i].report, "alarms"), k, v) {
			json_t *c;
			if (!json_is_object(v))
				continue;
			if (cnt == cap) {
				json_t **na = realloc(all, (cap ? cap * 2 : 32) * sizeof(*all));
				if (!na)
					break;
				all = na;
				cap = cap ? cap * 2 : 32;
			}
			c = json_deep_copy(v);
			if (!c)
				break;
			json_object_set_new(c, "reported_by", json_string(nodes[i].id));
			all[cnt++] = c;
		}
	}
	if (cnt)
		qsort(all, cnt, sizeof(*all), cmp_alarm_desc);
	for (size_t i = 0; i < cnt; i++) {
		if (i < ST_MAX_ALARMS)
			json_array_append(out, all[i]);
		json_decref(all[i]);
	}
	free(all);
	return out;
}

/* A node as every answering node's link-state view shows it: reachable
 * when at least one of them routes to it (its LSA held and usable links
 * lead there), and the alarm kinds any of them attach to it (node_down
 * comes from the others, since a dead node reports nothing). */
static json_t *node_json(const struct st_node *nodes, size_t n, const struct st_node *nd)
{
	json_t *o = json_object(), *alarms = json_array(), *from = json_array();
	size_t seen = 0, reach = 0;
	char url[64];

	for (size_t i = 0; i < n; i++) {
		size_t k;
		json_t *v;
		if (!nodes[i].report)
			continue;
		json_array_foreach(json_object_get(nodes[i].report, "nodes"), k, v) {
			if (!json_is_string(json_object_get(v, "id")) ||
			    strcmp(json_string_value(json_object_get(v, "id")), nd->id))
				continue;
			add_unique_strings(alarms, json_object_get(v, "alarms"));
			if (&nodes[i] == nd)
				continue;
			seen++;
			if (json_is_true(json_object_get(v, "up"))) {
				reach++;
				json_array_append_new(from, json_string(nodes[i].id));
			}
		}
	}
	strf(url, sizeof(url), "https://127.0.0.1:%ld", nd->metrics_port);
	json_object_set_new(o, "id", json_string(nd->id));
	json_object_set_new(o, "up", json_boolean(nd->up));
	json_object_set_new(o, "pid", nd->pid ? json_integer(nd->pid) : json_null());
	json_object_set_new(o, "pid_alive", json_boolean(nd->alive));
	json_object_set_new(o, "manager_url", nd->metrics_port ? json_string(url) : json_null());
	json_object_set_new(o, "error", nd->up ? json_null() : json_string(nd->error));
	json_object_set_new(o, "alarms", alarms);
	/* null: no other node's view mentions it (a single node, or none
	 * answered) */
	json_object_set_new(o, "reachable", seen ? json_boolean(reach > 0) : json_null());
	json_object_set_new(o, "reachable_from", from);
	return o;
}

/* ---- human output ---- */

static void fmt_num(char *out, size_t n, json_t *v, double scale, const char *f, const char *unit)
{
	if (json_is_number(v))
		strf(out, n, f, json_number_value(v) * scale, unit);
	else
		strf(out, n, "- %s", unit);
}

static void print_human(const char *dir, json_t *nodes, json_t *links, json_t *alarms)
{
	size_t k, nup = 0, lup = 0;
	json_t *v;

	json_array_foreach(nodes, k, v)
		nup += json_is_true(json_object_get(v, "up"));
	json_array_foreach(links, k, v)
		lup += json_is_true(json_object_get(v, "up"));
	printf("network in %s: %zu node(s), %zu up; %zu link(s), %zu up\n\n", dir,
	       json_array_size(nodes), nup, json_array_size(links), lup);
	printf("%-16s %-5s %-11s %-8s %s\n", "node", "state", "routing", "pid",
	       "manager (dashboard) / why down");
	json_array_foreach(nodes, k, v) {
		json_t *pid = json_object_get(v, "pid");
		int up = json_is_true(json_object_get(v, "up"));
		char pids[24];
		strf(pids, sizeof(pids), "%s",
		     json_is_integer(pid) && json_is_true(json_object_get(v, "pid_alive")) ? "" : "-");
		if (!*pids)
			strf(pids, sizeof(pids), "%lld", (long long)json_integer_value(pid));
		json_t *reach = json_object_get(v, "reachable");
		printf("%-16s %-5s %-11s %-8s %s\n", json_string_value(json_object_get(v, "id")),
		       up ? "up" : "DOWN",
		       json_is_true(reach) ? "reachable" : json_is_false(reach) ? "UNREACHABLE" : "-", pids,
		       up ? json_string_value(json_object_get(v, "manager_url"))
			  : json_string_value(json_object_get(v, "error")));
	}
	printf("\n%-30s %-6s %10s %8s %14s %13s %13s\n", "link (a -- b)", "state", "length", "QBER",
	       "key rate", "pool at a", "pool at b");
	if (!json_array_size(links))
		printf("(no link reported: no node answered)\n");
	json_array_foreach(links, k, v) {
		char name[80], len[24], qber[24], rate[32], pa[24], pb[24];
		json_t *pool = json_object_get(v, "pool_bits");
		const char *state = !json_is_true(json_object_get(v, "up")) ? "down"
				    : json_is_true(json_object_get(v, "qber_alarm")) ? "ALARM"
										     : "up";
		strf(name, sizeof(name), "%s -- %s", json_string_value(json_object_get(v, "a")),
		     json_string_value(json_object_get(v, "b")));
		fmt_num(len, sizeof(len), json_object_get(v, "length_km"), 1, "%.1f %s", "km");
		fmt_num(qber, sizeof(qber), json_object_get(v, "qber"), 100, "%.2f %s", "%");
		fmt_num(rate, sizeof(rate), json_object_get(v, "key_rate_bps"), 1, "%.0f %s", "bit/s");
		fmt_num(pa, sizeof(pa), json_object_get(pool, "a"), 1e-3, "%.1f %s", "kbit");
		fmt_num(pb, sizeof(pb), json_object_get(pool, "b"), 1e-3, "%.1f %s", "kbit");
		printf("%-30s %-6s %10s %8s %14s %13s %13s\n", name, state, len, qber, rate, pa, pb);
	}
	printf("\nalarms (newest first, at most %d):\n", ST_MAX_ALARMS);
	if (!json_array_size(alarms))
		printf("  no alarms\n");
	json_array_foreach(alarms, k, v) {
		const char *link = json_string_value(json_object_get(v, "link"));
		const char *node = json_string_value(json_object_get(v, "node"));
		const char *msg = json_string_value(json_object_get(v, "message"));
		printf("  %s %-8s %-12s %s%s (seen by %s)%s%s\n",
		       json_string_value(json_object_get(v, "ts")),
		       json_string_value(json_object_get(v, "severity")),
		       json_string_value(json_object_get(v, "kind")), link ? "link " : "node ",
		       link ? link : node ? node : "-",
		       json_string_value(json_object_get(v, "reported_by")), msg && *msg ? ": " : "",
		       msg ? msg : "");
	}
}

static void help(void)
{
	printf("usage: qwave net status [--state-dir D] [--json]\n"
	       "\n"
	       "Show the network 'qwave net up' started in D (default ./%s): every node\n"
	       "(up when its process lives and its manager listener answers; reachable when\n"
	       "another node's link-state database routes to it), every link the nodes' LSAs\n"
	       "describe (state, length in km, QBER in %%, secret key rate in bit/s, the key\n"
	       "pool at each end in kbit) and the newest %d alarms, merged from each node's\n"
	       "GET /api/network (mutual TLS with the node's certificate of the network CA).\n"
	       "A node that does not answer is shown down; the exit status is still 0.\n"
	       "\n"
	       "  --state-dir D  state directory (default ./%s)\n"
	       "  --json         {\"state_dir\", \"nodes\": [{\"id\", \"up\", \"pid\", \"pid_alive\",\n"
	       "                 \"manager_url\", \"error\", \"alarms\", \"reachable\",\n"
	       "                 \"reachable_from\"}], \"links\": [{\"a\", \"b\",\n"
	       "                 \"length_km\", \"up\", \"qber\", \"qber_alarm\", \"key_rate_bps\",\n"
	       "                 \"pool_bits\": {\"a\", \"b\"}, \"alarms\", \"reported_by\"}],\n"
	       "                 \"alarms\": [{\"ts\", \"severity\", \"kind\", \"node\", \"link\",\n"
	       "                 \"message\", \"reported_by\"}]}  (unknown figures null)\n",
	       ST_DEFAULT_DIR, ST_MAX_ALARMS, ST_DEFAULT_DIR);
}

int qw_cmd_net_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state-dir", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sdir = ST_DEFAULT_DIR;
	char dir[PATH_MAX];
	struct st_node *nodes = NULL;
	size_t n = 0;
	json_t *jn = NULL, *jl = NULL, *ja = NULL;
	int json = 0, c, ret = QW_EXIT_FAIL, curl_up = 0;
	struct stat sb;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': sdir = optarg; break;
		case 'j': json = 1; break;
		case 'h': help(); return QW_EXIT_OK;
		default: return qw_cli_usage_error("net status", "unknown option");
		}
	}
	if (optind != argc)
		return qw_cli_usage_error("net status", "unexpected argument '%s'", argv[optind]);
	if (!realpath(sdir, dir) || stat(dir, &sb) || !S_ISDIR(sb.st_mode))
		return qw_cli_fail("no network state directory %s (start one with 'qwave net up FILE%s%s')",
				   sdir, strcmp(sdir, ST_DEFAULT_DIR) ? " --state-dir " : "",
				   strcmp(sdir, ST_DEFAULT_DIR) ? sdir : "");
	nodes = calloc(ST_MAX_NODES, sizeof(*nodes));
	if (!nodes)
		return qw_cli_fail("out of memory");
	if (list_nodes(dir, nodes, &n) || n == 0) {
		qw_cli_fail("%s is not a state directory of 'qwave net up' (no nodes/<id>.conf)", dir);
		goto out;
	}
	read_pids(dir, nodes, n);
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		qw_cli_fail("cannot initialise libcurl");
		goto out;
	}
	curl_up = 1;
	for (size_t i = 0; i < n; i++) {
		read_status(dir, &nodes[i]);
		nodes[i].alive = is_qwaved(nodes[i].pid);
		if (!nodes[i].alive)
			strf(nodes[i].error, sizeof(nodes[i].error), "%s",
			     nodes[i].pid ? "process not running" : "never started");
		else if (!nodes[i].metrics_port)
			strf(nodes[i].error, sizeof(nodes[i].error),
			     "no manager listener in its status file");
		else
			fetch(dir, &nodes[i]);
		nodes[i].up = nodes[i].report != NULL;
	}
	jn = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(jn, node_json(nodes, n, &nodes[i]));
	jl = merge_links(nodes, n);
	ja = merge_alarms(nodes, n);
	if (!jn || !jl || !ja) {
		qw_cli_fail("out of memory");
		goto out;
	}
	if (json) {
		json_t *o = json_object();
		json_object_set_new(o, "state_dir", json_string(dir));
		json_object_set(o, "nodes", jn);
		json_object_set(o, "links", jl);
		json_object_set(o, "alarms", ja);
		qw_cli_print_json(o);
	} else {
		print_human(dir, jn, jl, ja);
	}
	ret = QW_EXIT_OK;
out:
	json_decref(jn);
	json_decref(jl);
	json_decref(ja);
	for (size_t i = 0; i < n; i++)
		json_decref(nodes[i].report);
	free(nodes);
	if (curl_up)
		curl_global_cleanup();
	return ret;
}
