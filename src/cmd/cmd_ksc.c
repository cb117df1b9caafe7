/* qwave ksc: the Key Service Center's administration and service API from
 * the command line (include/qwave/ksc.h, docs/ksc.md). Each subcommand is
 * one API call, described by a row of the table below: method, path
 * template, and which options become which JSON fields. Secrets in a
 * response (keys, medium keys, shares, images) are shown as (hidden) unless
 * --show-secrets; --out FILE writes the secret field to FILE (mode 0600).
 * With --json the response object is printed as it came, secrets included:
 * whoever reads stdout reads them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "commands.h"
#include "qwave/error.h"
#include "qwave/ksc.h"
#include "qwave/secmem.h"

#define MAX_OPTS 8

/* bench/bench_ksc.c (also `qwave bench ksc` once registered there) */
int qw_bench_ksc(int argc, char **argv);

struct optspec {
	const char *opt;   /* "--size" */
	const char *field; /* JSON field, or "{id}" for the path */
	char type;         /* s string, i integer, a repeatable string array, f file text */
	int required;
	const char *help;
};

struct spec {
	const char *name; /* "device register" */
	const char *method, *path;
	const char *summary;
	const char *secret; /* response field holding a secret, or NULL */
	struct optspec o[MAX_OPTS];
};

static const struct spec specs[] = {
	{ "status", "GET", "/status", "the caller's identity and role, the KSC's key sources", NULL, { { 0 } } },
	{ "admin add", "POST", "/admins", "create an administrator (hierarchical: lower ranks only)", NULL,
	  { { "--id", "id", 's', 1, "administrator ID (its certificate's CN)" },
	    { "--role", "role", 's', 1, "super, operator or auditor" } } },
	{ "admin list", "GET", "/admins", "list administrators", NULL, { { 0 } } },
	{ "admin revoke", "POST", "/admins/{id}/revoke", "revoke an administrator", NULL,
	  { { "--id", "{id}", 's', 1, "administrator ID" } } },
	{ "app add", "POST", "/apps", "register an application (crypto services, sessions)", NULL,
	  { { "--id", "id", 's', 1, "application ID (its certificate's CN)" } } },
	{ "app list", "GET", "/apps", "list applications", NULL, { { 0 } } },
	{ "app revoke", "POST", "/apps/{id}/revoke", "revoke an application", NULL,
	  { { "--id", "{id}", 's', 1, "application ID" } } },
	{ "device register", "POST", "/devices", "register a device or secure medium", "medium_key",
	  { { "--id", "id", 's', 1, "device ID (its certificate's CN)" },
	    { "--kind", "kind", 's', 1, "server-crypto, pcie-card, sim, usim, tf-card, sd-card, usb-key, softkey, iot-chip" },
	    { "--owner", "owner", 's', 1, "owner (person or organisation)" },
	    { "--quota", "quota_bits", 'i', 0, "key quota in bits (default 524288)" } } },
	{ "device list", "GET", "/devices", "list devices", NULL, { { 0 } } },
	{ "device show", "GET", "/devices/{id}", "show one device", NULL,
	  { { "--id", "{id}", 's', 1, "device ID" } } },
	{ "device suspend", "POST", "/devices/{id}/suspend", "suspend a device", NULL,
	  { { "--id", "{id}", 's', 1, "device ID" }, { "--reason", "reason", 's', 0, "why" } } },
	{ "device resume", "POST", "/devices/{id}/resume", "resume a suspended device", NULL,
	  { { "--id", "{id}", 's', 1, "device ID" }, { "--reason", "reason", 's', 0, "why" } } },
	{ "device retire", "POST", "/devices/{id}/retire", "retire a device (its keys are erased)", NULL,
	  { { "--id", "{id}", 's', 1, "device ID" }, { "--reason", "reason", 's', 0, "why" } } },
	{ "device destroy", "POST", "/devices/{id}/destroy",
	  "remote destroy of a lost device: its keys are erased here now, on the device at its next contact", NULL,
	  { { "--id", "{id}", 's', 1, "device ID" }, { "--reason", "reason", 's', 0, "why" } } },
	{ "device fill", "POST", "/devices/{id}/fill",
	  "offline filling: an image of BITS key bits for the device's secure medium", "image",
	  { { "--id", "{id}", 's', 1, "device ID" },
	    { "--bits", "bits", 'i', 1, "key bits (multiple of 256, e.g. 524288)" },
	    { "--source", "source", 's', 0, "qrng (default) or qkd" } } },
	{ "key generate", "POST", "/keys", "generate a key", NULL,
	  { { "--size", "size_bits", 'i', 0, "bits (default 256)" },
	    { "--owner", "owner", 's', 0, "application or device entitled to it" },
	    { "--expires-in", "expires_in", 'i', 0, "lifetime in seconds" },
	    { "--source", "source", 's', 0, "qrng (default) or qkd" } } },
	{ "key list", "GET", "/keys", "list keys (metadata only)", NULL,
	  { { "--state", "?state", 's', 0, "active, distributed, expired, revoked, destroyed" } } },
	{ "key show", "GET", "/keys/{id}", "show a key's metadata", NULL,
	  { { "--id", "{id}", 's', 1, "key ID" } } },
	{ "key distribute", "POST", "/keys/{id}/distribute", "receive a key assigned to the caller (once)", "key",
	  { { "--id", "{id}", 's', 1, "key ID" } } },
	{ "key revoke", "POST", "/keys/{id}/revoke", "revoke a key (terminal)", NULL,
	  { { "--id", "{id}", 's', 1, "key ID" }, { "--reason", "reason", 's', 0, "why" } } },
	{ "key destroy", "POST", "/keys/{id}/destroy", "destroy a key (recoverable if backed up)", NULL,
	  { { "--id", "{id}", 's', 1, "key ID" }, { "--reason", "reason", 's', 0, "why" } } },
	{ "key expire", "POST", "/keys/expire", "expire every key past its lifetime now", NULL, { { 0 } } },
	{ "key backup", "POST", "/keys/{id}/backup", "back a key up, split t-of-n among administrators", NULL,
	  { { "--id", "{id}", 's', 1, "key ID" },
	    { "--threshold", "threshold", 'i', 1, "shares needed to recover" },
	    { "--custodian", "custodians", 'a', 1, "administrator holding a share (repeat)" } } },
	{ "key share", "GET", "/keys/{id}/share", "collect this administrator's backup share (once)", "share",
	  { { "--id", "{id}", 's', 1, "key ID" } } },
	{ "key recover", "POST", "/keys/{id}/recover", "submit this administrator's share to recover a key", NULL,
	  { { "--id", "{id}", 's', 1, "key ID" },
	    { "--share-file", "share", 'f', 1, "file written by 'key share --out'" } } },
	{ "app grant", "POST", "/apps/{id}/grant",
	  "entitle an application to involve a device (sessions, groups, challenges)", NULL,
	  { { "--id", "{id}", 's', 1, "application ID" }, { "--device", "device", 's', 1, "device ID" } } },
	{ "app ungrant", "POST", "/apps/{id}/ungrant", "withdraw an application's entitlement to a device",
	  NULL, { { "--id", "{id}", 's', 1, "application ID" }, { "--device", "device", 's', 1, "device ID" } } },
	{ "user add", "POST", "/users", "register a user (authenticated by certificate)", NULL,
	  { { "--id", "id", 's', 1, "user ID (the CN of the user's certificate)" } } },
	{ "user list", "GET", "/users", "list users", NULL, { { 0 } } },
	{ "user revoke", "POST", "/users/{id}/revoke", "revoke a user", NULL,
	  { { "--id", "{id}", 's', 1, "user ID" } } },
	{ "session create", "POST", "/sessions",
	  "a session key for two terminals (one key per call), wrapped for each under its pre-filled keys", NULL,
	  { { "--a", "a", 's', 1, "terminal a (the caller, unless an application calls)" },
	    { "--b", "b", 's', 1, "terminal b" },
	    { "--source", "source", 's', 0, "qrng (default) or qkd" } } },
	{ "group create", "POST", "/groups", "a key group (push-to-talk, video) at epoch 1", NULL,
	  { { "--id", "id", 's', 1, "group ID" },
	    { "--member", "members", 'a', 1, "member device (repeat, 2..64)" } } },
	{ "group show", "GET", "/groups/{id}", "a group's members and epoch", NULL,
	  { { "--id", "{id}", 's', 1, "group ID" } } },
	{ "group join", "POST", "/groups/{id}/join", "add a member: rekey to a new epoch", NULL,
	  { { "--id", "{id}", 's', 1, "group ID" }, { "--device", "device", 's', 1, "device" } } },
	{ "group leave", "POST", "/groups/{id}/leave", "remove a member: rekey to a new epoch", NULL,
	  { { "--id", "{id}", 's', 1, "group ID" }, { "--device", "device", 's', 1, "device" } } },
	{ "crypto key", "POST", "/crypto/keys", "a service key named by ID (material stays in the KSC)", NULL,
	  { { "--alg", "alg", 's', 1, "aes-256-gcm, sm4-gcm, sm4-ctr-hmac-sm3, zuc-eea3, hmac-sm3, zuc-eia3, sm2" },
	    { "--source", "source", 's', 0, "qrng (default) or qkd" } } },
	{ "cert issue", "POST", "/certs", "issue a device or user certificate (the key is returned once)", "key",
	  { { "--id", "id", 's', 1, "subject ID (CN)" },
	    { "--alg", "alg", 's', 0, "sm2 or ecdsa-p256 (default)" },
	    { "--days", "days", 'i', 0, "validity (default 365)" } } },
	{ "cert revoke", "POST", "/certs/{id}/revoke", "revoke a certificate issued here", NULL,
	  { { "--serial", "{id}", 's', 1, "serial number (hex, as issued)" } } },
	{ "crl", "GET", "/crl", "the certificate revocation list (X.509 CRL, PEM)", NULL, { { 0 } } },
	{ "audit list", "GET", "/audit", "read the audit log", NULL,
	  { { "--from", "?from", 's', 0, "first sequence number" },
	    { "--limit", "?limit", 's', 0, "records (default 1000)" } } },
	{ "audit verify", "GET", "/audit/verify",
	  "verify the audit log's SM3 hash chain and head (and an anchor kept outside the KSC)", NULL,
	  { { "--seq", "?seq", 's', 0, "anchor: sequence number from 'audit head'" },
	    { "--hash", "?hash", 's', 0, "anchor: its hash" } } },
	{ "audit head", "GET", "/audit/head", "the last record's sequence number and hash, to keep as an anchor",
	  NULL, { { 0 } } },
	{ NULL, NULL, NULL, NULL, NULL, { { 0 } } },
};

static const char conn_help[] =
	"connection (each falls back to an environment variable):\n"
	"  --url URL        the KSC, https://host:port                  (QWAVE_KSC_URL)\n"
	"  --cert FILE      the caller's certificate, PEM               (QWAVE_CERT)\n"
	"  --key FILE       its private key, PEM                        (QWAVE_KEY)\n"
	"  --cacert FILE    CA the KSC's certificate must chain to      (QWAVE_CACERT)\n"
	"  --json           print the response as one JSON object (secrets included)\n"
	"  --out FILE       write the response's secret field to FILE (mode 0600)\n"
	"  --show-secrets   print secret fields instead of (hidden)\n";

static void spec_help(const struct spec *s)
{
	printf("usage: qwave ksc %s", s->name);
	for (int i = 0; i < MAX_OPTS && s->o[i].opt; i++)
		printf(s->o[i].required ? " %s V" : " [%s V]", s->o[i].opt);
	printf(" [connection options]\n\n%s.\n\n", s->summary);
	for (int i = 0; i < MAX_OPTS && s->o[i].opt; i++)
		printf("  %-14s %s\n", s->o[i].opt, s->o[i].help);
	printf("\n%s\nAPI: %s /api/v1/ksc%s\n", conn_help, s->method, s->path);
}

static void group_help(void)
{
	printf("usage: qwave ksc <command> [options]\n\n"
	       "The Key Service Center over its REST API (mutual TLS). Commands:\n\n");
	for (const struct spec *s = specs; s->name; s++)
		printf("  %-16s %s\n", s->name, s->summary);
	printf("  %-16s %s\n", "call", "any API call: qwave ksc call METHOD PATH [JSON]");
	printf("  %-16s %s\n", "bench", "session keys/s and crypto requests/s over mutual TLS");
	printf("\nEvery command takes --help.\n\n%s", conn_help);
}

struct conn {
	const char *url, *cert, *key, *ca, *out;
	int json, show;
};

static int conn_opt(struct conn *c, const char *name, const char *val)
{
	if (!strcmp(name, "--url"))
		c->url = val;
	else if (!strcmp(name, "--cert"))
		c->cert = val;
	else if (!strcmp(name, "--key"))
		c->key = val;
	else if (!strcmp(name, "--cacert"))
		c->ca = val;
	else if (!strcmp(name, "--out"))
		c->out = val;
	else
		return 0;
	return 1;
}

static void conn_defaults(struct conn *c)
{
	if (!c->url)
		c->url = getenv("QWAVE_KSC_URL");
	if (!c->cert)
		c->cert = getenv("QWAVE_CERT");
	if (!c->key)
		c->key = getenv("QWAVE_KEY");
	if (!c->ca)
		c->ca = getenv("QWAVE_CACERT");
}

/* Perform the call and present the answer. */
static int run_call(struct conn *c, const char *cmd, const char *method, const char *path,
		    const char *body, const char *secret)
{
	struct qw_ksc_client *cl;
	char msg[256] = "", *resp = NULL;
	size_t rlen = 0;
	int status = 0, err = 0, rc = QW_EXIT_FAIL;
	json_t *j = NULL;

	conn_defaults(c);
	if (!c->url || !c->cert || !c->key || !c->ca)
		return qw_cli_usage_error(cmd, "--url, --cert, --key and --cacert are required "
					       "(or QWAVE_KSC_URL, QWAVE_CERT, QWAVE_KEY, QWAVE_CACERT)");
	cl = qw_ksc_client_new(c->url, c->cert, c->key, c->ca, &err);
	if (!cl)
		return qw_cli_usage_error(cmd, "--url must be an https:// URL");
	err = qw_ksc_client_call(cl, method, path, body, &status, &resp, &rlen, msg);
	qw_ksc_client_free(cl);
	if (err)
		return qw_cli_fail("%s", msg[0] ? msg : qw_strerror(err));
	j = json_loadb(resp, rlen, 0, NULL);
	if (!json_is_object(j)) {
		rc = qw_cli_fail("the KSC answered HTTP %d without a JSON object", status);
		goto out;
	}
	if (status >= 400) {
		rc = qw_cli_fail("HTTP %d: %s", status,
				 json_string_value(json_object_get(j, "message")) ?
					 json_string_value(json_object_get(j, "message")) :
					 "(no message)");
		goto out;
	}
	/* a verification that found an alteration is a failure of the command */
	if (json_is_false(json_object_get(j, "intact"))) {
		rc = qw_cli_fail("the audit log was altered: first bad record %lld of %lld checked",
				 (long long)json_integer_value(json_object_get(j, "first_bad_seq")),
				 (long long)json_integer_value(json_object_get(j, "records")));
		if (c->json) {
			qw_cli_print_json(j);
			j = NULL;
		}
		goto out;
	}
	if (secret && c->out && json_is_string(json_object_get(j, secret))) {
		const char *v = json_string_value(json_object_get(j, secret));

		if (qw_cli_write_file(c->out, (const uint8_t *)v, strlen(v), 1)) {
			rc = qw_cli_fail("cannot write %s (an existing file must not be readable by "
					 "group or others)", c->out);
			goto out;
		}
	}
	if (c->json) {
		qw_cli_print_json(j);
		j = NULL;
	} else {
		const char *k;
		json_t *v;

		json_object_foreach(j, k, v) {
			char *t;

			if (secret && !strcmp(k, secret) && !c->show) {
				printf("%-22s (hidden)%s%s\n", k, c->out ? ", written to " : "",
				       c->out ? c->out : "");
				continue;
			}
			t = json_is_string(v) ? NULL : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
			printf("%-22s %s\n", k, t ? t : json_string_value(v));
			free(t);
		}
	}
	rc = QW_EXIT_OK;
out:
	json_decref(j);
	if (resp)
		qw_free_secret(resp, rlen + 1);
	return rc;
}

/* Strip whitespace at both ends of a file's text. */
static char *read_text(const char *path)
{
	uint8_t *d = NULL;
	size_t n = 0, a = 0;
	char *t;

	if (qw_cli_read_file(path, &d, &n))
		return NULL;
	while (a < n && (d[a] == ' ' || d[a] == '\n' || d[a] == '\r' || d[a] == '\t'))
		a++;
	while (n > a && (d[n - 1] == ' ' || d[n - 1] == '\n' || d[n - 1] == '\r' || d[n - 1] == '\t'))
		n--;
	t = malloc(n - a + 1);
	if (t) {
		memcpy(t, d + a, n - a);
		t[n - a] = '\0';
	}
	qw_free_secret(d, n);
	return t;
}

static int run_spec(const struct spec *s, int argc, char **argv)
{
	struct conn c = { 0 };
	json_t *body = json_object(), *arr = NULL;
	char path[512], query[256] = "", *text = NULL, cmd[40];
	const char *idv = NULL;
	int rc = QW_EXIT_USAGE, nbody = 0;
	int seen[MAX_OPTS] = { 0 };

	snprintf(cmd, sizeof(cmd), "ksc %s", s->name);
	if (!body)
		return qw_cli_fail("out of memory");
	for (int i = 0; i < argc; i++) {
		const char *name = argv[i], *val;
		int found = 0;

		if (!strcmp(name, "--help") || !strcmp(name, "-h")) {
			spec_help(s);
			rc = QW_EXIT_OK;
			goto out;
		}
		if (!strcmp(name, "--json")) {
			c.json = 1;
			continue;
		}
		if (!strcmp(name, "--show-secrets")) {
			c.show = 1;
			continue;
		}
		if (strncmp(name, "--", 2)) {
			rc = qw_cli_usage_error(cmd, "unexpected argument '%s'", name);
			goto out;
		}
		if (i + 1 >= argc) {
			rc = qw_cli_usage_error(cmd, "option '%s' needs a value", name);
			goto out;
		}
		val = argv[++i];
		if (conn_opt(&c, name, val))
			continue;
		for (int k = 0; k < MAX_OPTS && s->o[k].opt; k++) {
			const struct optspec *o = &s->o[k];
			uint64_t n;

			if (strcmp(o->opt, name))
				continue;
			found = 1;
			if (seen[k]++ && o->type != 'a') {
				rc = qw_cli_usage_error(cmd, "%s given twice", name);
				goto out;
			}
			if (!strcmp(o->field, "{id}")) {
				idv = val;
			} else if (o->field[0] == '?') {
				size_t q = strlen(query);

				snprintf(query + q, sizeof(query) - q, "%s%s=%s", q ? "&" : "?",
					 o->field + 1, val);
			} else if (o->type == 'i') {
				if (qw_cli_parse_u64(val, &n) || n > (uint64_t)INT64_MAX) {
					rc = qw_cli_usage_error(cmd, "%s: '%s' is not a number", name,
								val);
					goto out;
				}
				json_object_set_new(body, o->field, json_integer((json_int_t)n));
				nbody++;
			} else if (o->type == 'a') {
				if (!arr) {
					arr = json_array();
					json_object_set(body, o->field, arr);
					nbody++;
				}
				json_array_append_new(arr, json_string(val));
			} else if (o->type == 'f') {
				text = read_text(val);
				if (!text) {
					rc = qw_cli_fail("cannot read %s", val);
					goto out;
				}
				json_object_set_new(body, o->field, json_string(text));
				nbody++;
			} else {
				json_object_set_new(body, o->field, json_string(val));
				nbody++;
			}
		}
		if (!found) {
			rc = qw_cli_usage_error(cmd, "unknown option '%s'", name);
			goto out;
		}
	}
	for (int k = 0; k < MAX_OPTS && s->o[k].opt; k++)
		if (s->o[k].required && !seen[k]) {
			rc = qw_cli_usage_error(cmd, "%s is required", s->o[k].opt);
			goto out;
		}
	{
		const char *p = strstr(s->path, "{id}");

		if (p)
			snprintf(path, sizeof(path), "%.*s%s%s%s", (int)(p - s->path), s->path, idv,
				 p + 4, query);
		else
			snprintf(path, sizeof(path), "%s%s", s->path, query);
	}
	if (idv && strpbrk(idv, "/?#% ")) {
		rc = qw_cli_usage_error(cmd, "'%s' is not an ID", idv);
		goto out;
	}
	{
		char *b = nbody || !strcmp(s->method, "POST") ? json_dumps(body, JSON_COMPACT) : NULL;

		rc = run_call(&c, cmd, s->method, path, nbody ? b : NULL, s->secret);
		if (b)
			qw_free_secret(b, strlen(b) + 1);
	}
out:
	json_decref(arr);
	json_decref(body);
	if (text)
		qw_free_secret(text, strlen(text) + 1);
	return rc;
}

/* qwave ksc call METHOD PATH [JSON] */
static int run_raw(int argc, char **argv)
{
	struct conn c = { 0 };
	const char *pos[3] = { NULL, NULL, NULL };
	int np = 0;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			printf("usage: qwave ksc call METHOD PATH [JSON] [connection options]\n\n"
			       "Any API call; PATH is below /api/v1/ksc (docs/ksc.md lists them).\n"
			       "Responses print as JSON; a 4xx/5xx is a failure (exit 1).\n\n%s",
			       conn_help);
			return QW_EXIT_OK;
		}
		if (!strcmp(argv[i], "--json") || !strcmp(argv[i], "--show-secrets"))
			continue;
		if (!strncmp(argv[i], "--", 2)) {
			if (i + 1 >= argc || !conn_opt(&c, argv[i], argv[i + 1]))
				return qw_cli_usage_error("ksc call", "unknown option '%s'", argv[i]);
			i++;
			continue;
		}
		if (np == 3)
			return qw_cli_usage_error("ksc call", "unexpected argument '%s'", argv[i]);
		pos[np++] = argv[i];
	}
	if (np < 2)
		return qw_cli_usage_error("ksc call", "METHOD and PATH are required");
	c.json = 1;
	return run_call(&c, "ksc call", pos[0], pos[1], pos[2], NULL);
}

int qw_cmd_ksc(int argc, char **argv)
{
	char name[48];

	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		group_help();
		return argc < 2 ? QW_EXIT_USAGE : QW_EXIT_OK;
	}
	if (!strcmp(argv[1], "call"))
		return run_raw(argc - 2, argv + 2);
	if (!strcmp(argv[1], "bench"))
		return qw_bench_ksc(argc - 1, argv + 1);
	for (const struct spec *s = specs; s->name; s++) {
		const char *sp = strchr(s->name, ' ');

		if (!sp) {
			if (!strcmp(s->name, argv[1]))
				return run_spec(s, argc - 2, argv + 2);
			continue;
		}
		if (argc < 3)
			continue;
		snprintf(name, sizeof(name), "%s %s", argv[1], argv[2]);
		if (!strcmp(s->name, name))
			return run_spec(s, argc - 3, argv + 3);
	}
	return qw_cli_usage_error("ksc", "unknown command '%s%s%s'", argv[1], argc > 2 ? " " : "",
				  argc > 2 ? argv[2] : "");
}
