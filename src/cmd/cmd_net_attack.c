/* qwave net attack: the eavesdropper drill on a running simulated link of
 * the network 'qwave net up' started. The node that simulates the link's
 * optics (its Alice: the node whose ID sorts first) is told over its
 * manager listener (POST /drill/eve, mutual TLS with that node's own
 * certificate) to let an intercept-resend eavesdropper act on a fraction of
 * the pulses from the link's next session on (docs/operations.md,
 * "Eavesdropper drill"). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cli.h"
#include "commands.h"
#include "qwave/km.h"

int qw_cmd_net_attack(int argc, char **argv);

#define AT_DEFAULT_DIR ".qwave-net"
#define AT_ID_MAX 64
#define AT_TIMEOUT_MS 5000L
#define AT_MAX_BODY 4096u

struct at_body {
	char p[AT_MAX_BODY + 1];
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

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
	struct at_body *b = arg;
	size_t n = size * nmemb;

	if (b->n + n > AT_MAX_BODY)
		return 0;
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = '\0';
	return n;
}

static int valid_id(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > AT_ID_MAX)
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '-' || *s == '_' || *s == '.'))
			return 0;
	return 1;
}

/* The manager port of node id from the state directory's status file. */
static long manager_port(const char *dir, const char *id)
{
	char path[PATH_MAX];
	json_error_t je;
	json_t *j;
	json_int_t port = 0;

	strf(path, sizeof(path), "%s/nodes/%s.status.json", dir, id);
	j = json_load_file(path, 0, &je);
	if (!j)
		return 0;
	if (json_unpack(j, "{s:I}", "metrics_port", &port) || port <= 0 || port >= 65536)
		port = 0;
	json_decref(j);
	return (long)port;
}

static void help(void)
{
	printf("usage: qwave net attack A:B --fraction F [--state-dir D] [--json]\n"
	       "\n"
	       "Eavesdropper drill on the running simulated QKD link between nodes A and B\n"
	       "of the network 'qwave net up' started in D (default ./%s): from the link's\n"
	       "next session on, an intercept-resend eavesdropper measures a fraction F of\n"
	       "the pulses (0 <= F <= 1; 0 ends the drill). Expect the link's QBER near\n"
	       "F x 25 %%, sessions aborted on the QBER alarm and no key from them; the\n"
	       "node that simulates the link (the one whose ID sorts first) logs the drill.\n"
	       "It is told over its manager listener (POST /drill/eve, mutual TLS with its\n"
	       "own certificate); the listener must be on the loopback interface.\n"
	       "\n"
	       "  --fraction F   intercepted fraction of the pulses, 0..1\n"
	       "  --state-dir D  state directory (default ./%s)\n"
	       "  --json         {\"link\", \"simulated_by\", \"peer\", \"fraction\", \"manager_url\"}\n",
	       AT_DEFAULT_DIR, AT_DEFAULT_DIR);
}

int qw_cmd_net_attack(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "fraction", required_argument, NULL, 'f' },
		{ "state-dir", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sdir = AT_DEFAULT_DIR, *fstr = NULL, *sim, *peer;
	char dir[PATH_MAX], link[2 * AT_ID_MAX + 2], url[256], base[64], crt[PATH_MAX],
		key[PATH_MAX], ca[PATH_MAX], conf[PATH_MAX], *colon;
	struct at_body *b = NULL;
	struct stat sb;
	double f;
	long port, code = 0;
	int json = 0, c, ret = QW_EXIT_FAIL;
	CURL *cu = NULL;
	CURLcode rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'f': fstr = optarg; break;
		case 'd': sdir = optarg; break;
		case 'j': json = 1; break;
		case 'h': help(); return QW_EXIT_OK;
		default: return qw_cli_usage_error("net attack", "unknown option");
		}
	}
	if (optind + 1 != argc)
		return qw_cli_usage_error("net attack", optind == argc ? "the link A:B is required"
								      : "unexpected argument '%s'",
					  argv[optind + (optind < argc)]);
	if (!fstr)
		return qw_cli_usage_error("net attack", "--fraction F is required");
	if (qw_cli_parse_double(fstr, &f) || !(f >= 0.0 && f <= 1.0))
		return qw_cli_usage_error("net attack", "--fraction must be a number in [0, 1], not '%s'",
					  fstr);
	if (strlen(argv[optind]) >= sizeof(link))
		return qw_cli_usage_error("net attack", "link '%s' too long", argv[optind]);
	strf(link, sizeof(link), "%s", argv[optind]);
	colon = strchr(link, ':');
	if (!colon)
		return qw_cli_usage_error("net attack", "the link is A:B (two node IDs), not '%s'", link);
	*colon = '\0';
	if (!valid_id(link) || !valid_id(colon + 1) || !strcmp(link, colon + 1)) {
		*colon = ':';
		return qw_cli_usage_error("net attack", "bad link '%s' (A:B, two node IDs)", link);
	}
	/* the link's Alice runs the optics simulation (km.h) */
	sim = qw_km_is_leader(link, colon + 1) ? link : colon + 1;
	peer = sim == link ? colon + 1 : link;
	if (!realpath(sdir, dir) || stat(dir, &sb) || !S_ISDIR(sb.st_mode))
		return qw_cli_fail("no network state directory %s (start one with 'qwave net up FILE')",
				   sdir);
	strf(conf, sizeof(conf), "%s/nodes/%s.conf", dir, sim);
	if (stat(conf, &sb))
		return qw_cli_fail("node %s is not part of the network in %s", sim, dir);
	port = manager_port(dir, sim);
	if (!port)
		return qw_cli_fail("node %s has no manager listener in its status file (is it running?)",
				   sim);
	strf(base, sizeof(base), "https://127.0.0.1:%ld", port);
	strf(url, sizeof(url), "%s/drill/eve?peer=%s&fraction=%.6g", base, peer, f);
	strf(crt, sizeof(crt), "%s/pki/node-%s.crt", dir, sim);
	strf(key, sizeof(key), "%s/pki/node-%s.key", dir, sim);
	strf(ca, sizeof(ca), "%s/pki/ca.crt", dir);
	b = calloc(1, sizeof(*b));
	if (!b || curl_global_init(CURL_GLOBAL_DEFAULT)) {
		free(b);
		return qw_cli_fail("cannot initialise libcurl");
	}
	cu = curl_easy_init();
	if (!cu) {
		qw_cli_fail("out of memory");
		goto out;
	}
	curl_easy_setopt(cu, CURLOPT_URL, url);
	curl_easy_setopt(cu, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(cu, CURLOPT_POST, 1L);
	curl_easy_setopt(cu, CURLOPT_POSTFIELDS, "");
	curl_easy_setopt(cu, CURLOPT_POSTFIELDSIZE, 0L);
	curl_easy_setopt(cu, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(cu, CURLOPT_SSLCERT, crt);
	curl_easy_setopt(cu, CURLOPT_SSLKEY, key);
	curl_easy_setopt(cu, CURLOPT_CAINFO, ca);
	curl_easy_setopt(cu, CURLOPT_TIMEOUT_MS, AT_TIMEOUT_MS);
	curl_easy_setopt(cu, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(cu, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(cu, CURLOPT_WRITEDATA, b);
	rc = curl_easy_perform(cu);
	if (rc != CURLE_OK) {
		qw_cli_fail("node %s: no answer from its manager listener %s: %s", sim, base,
			    curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(cu, CURLINFO_RESPONSE_CODE, &code);
	if (code != 200) {
		json_error_t je;
		json_t *j = json_loadb(b->p, b->n, 0, &je);
		const char *msg = json_string_value(json_object_get(j, "message"));

		qw_cli_fail("node %s refused the drill (HTTP %ld): %s", sim, code,
			    msg ? msg : code == 404 ? "no drill endpoint (manager listener not on loopback?)"
						    : "no reason given");
		json_decref(j);
		goto out;
	}
	if (json) {
		json_t *o = json_object();
		char l[2 * AT_ID_MAX + 2];

		strf(l, sizeof(l), "%s:%s", link, colon + 1);
		json_object_set_new(o, "link", json_string(l));
		json_object_set_new(o, "simulated_by", json_string(sim));
		json_object_set_new(o, "peer", json_string(peer));
		json_object_set_new(o, "fraction", json_real(f));
		json_object_set_new(o, "manager_url", json_string(base));
		qw_cli_print_json(o);
	} else if (f > 0.0) {
		/* intercept-resend: 1/4 of the attacked sifted bits err
		 * (src/qkd/eve.c) */
		printf("eavesdropper drill: intercept-resend on %.1f %% of the pulses of link %s:%s "
		       "(simulated at %s) from its next session; expect the QBER %.1f %% above "
		       "the link's own and no key while it exceeds the threshold\n",
		       100 * f, link, colon + 1, sim, 25.0 * f);
	} else {
		printf("eavesdropper drill ended on link %s:%s (simulated at %s) from its next session\n",
		       link, colon + 1, sim);
	}
	ret = QW_EXIT_OK;
out:
	curl_easy_cleanup(cu);
	curl_global_cleanup();
	free(b);
	return ret;
}
