/* qwave bench ksc: Key Service Center throughput over mutual TLS on this
 * machine - session keys issued per second (POST /sessions: one fresh key
 * wrapped for two terminals under their pre-filled keys, audited, in one
 * SQLite transaction) and crypto-service requests per second (POST
 * /crypto/encrypt, AES-256-GCM under a service key). The KSC runs in this
 * process on its own libevent thread (the same glue as qwksc); the clients
 * are threads with one kept-alive libcurl connection each. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>

#include "bench.h"
#include "cmd/cli.h"
#include "qwave/https.h"
#include "qwave/ksc.h"
#include "qwave/pki.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

int qw_bench_ksc(int argc, char **argv);

#define MAX_CLIENTS 16

static struct event_base *srv_base;

static void on_api(void *arg, struct qw_https_req *req)
{
	struct qw_ksc *k = arg;
	struct qw_ksc_resp r;
	const uint8_t *body;
	size_t len;

	body = qw_https_req_body(req, &len);
	if (qw_ksc_handle(k, qw_https_req_peer_id(req), qw_https_req_method_name(req),
			  qw_https_req_path(req) + strlen("/api/v1/ksc"), qw_https_req_query(req),
			  body, len, &r)) {
		qw_https_reply_error(req, 500, "out of memory");
		return;
	}
	if (r.secret) {
		qw_https_reply_secret(req, r.status, r.body, r.len);
		r.body = NULL;
	} else {
		qw_https_reply(req, r.status, r.body, r.len);
	}
	qw_ksc_resp_clear(&r);
}

static void *loop(void *arg)
{
	(void)arg;
	event_base_dispatch(srv_base);
	return NULL;
}

struct load {
	const char *dir, *url, *path;
	char body[256];
	double seconds;
	uint64_t ok, failed;
};

static void *client(void *arg)
{
	struct load *l = arg;
	char crt[600], key[600], ca[600], *resp;
	struct qw_ksc_client *c;
	double end;
	size_t rlen;
	int status, err;

	snprintf(crt, sizeof(crt), "%s/sae-bench-app.crt", l->dir);
	snprintf(key, sizeof(key), "%s/sae-bench-app.key", l->dir);
	snprintf(ca, sizeof(ca), "%s/ca.crt", l->dir);
	c = qw_ksc_client_new(l->url, crt, key, ca, &err);
	if (!c)
		return NULL;
	end = qw_bench_now() + l->seconds;
	while (qw_bench_now() < end) {
		if (qw_ksc_client_call(c, "POST", l->path, l->body, &status, &resp, &rlen, NULL)) {
			l->failed++;
			continue;
		}
		if (status == 200 || status == 201)
			l->ok++;
		else
			l->failed++;
		qw_free_secret(resp, rlen + 1);
	}
	qw_ksc_client_free(c);
	return NULL;
}

/* Run n clients on path with per-client bodies from mk(i); requests/s. */
static double run(struct load *l, int n, const char *dir, const char *url, const char *path,
		  double seconds, void (*mk)(int i, char *b, size_t cap, void *arg), void *arg,
		  uint64_t *failed)
{
	pthread_t th[MAX_CLIENTS];
	uint64_t ok = 0;
	int started = 0;
	double t0 = qw_bench_now(), dt;

	*failed = 0;
	for (int i = 0; i < n; i++) {
		memset(&l[i], 0, sizeof(l[i]));
		l[i].dir = dir;
		l[i].url = url;
		l[i].path = path;
		l[i].seconds = seconds;
		mk(i, l[i].body, sizeof(l[i].body), arg);
		if (pthread_create(&th[started], NULL, client, &l[i]) == 0)
			started++;
	}
	for (int i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		ok += l[i].ok;
		*failed += l[i].failed;
	}
	dt = qw_bench_now() - t0;
	return dt > 0 ? (double)ok / dt : 0;
}

static void mk_session(int i, char *b, size_t cap, void *arg)
{
	(void)arg;
	snprintf(b, cap, "{\"a\":\"term-a%d\",\"b\":\"term-b%d\"}", i, i);
}

static void mk_encrypt(int i, char *b, size_t cap, void *arg)
{
	/* 64 bytes of data */
	(void)i;
	snprintf(b, cap, "{\"key_id\":\"%s\",\"data\":\"%s\"}", (const char *)arg,
		 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==");
}

static int setup_call(struct qw_ksc *k, const char *who, const char *method, const char *path,
		      const char *body, json_t **out)
{
	struct qw_ksc_resp r;
	int st;

	if (qw_ksc_handle(k, who, method, path, NULL, (const uint8_t *)body, body ? strlen(body) : 0,
			  &r))
		return 500;
	st = r.status;
	if (out)
		*out = json_loadb(r.body, r.len, 0, NULL);
	qw_ksc_resp_clear(&r);
	return st;
}

int qw_bench_ksc(int argc, char **argv)
{
	char dir[] = "/tmp/qwave-bench-ksc-XXXXXX", db[600], crt[600], key[600], ca[600], url[64];
	char kid[64] = "", cmd[700];
	uint64_t clients = 4, fill_bits = QW_KSC_FILL_MAX_BITS, failed_s = 0, failed_c = 0;
	double seconds = 3, sess_rate = 0, enc_rate = 0;
	int json = 0, sync_full = 0, err, rc = QW_EXIT_FAIL;
	uint8_t mk[32];
	struct qw_ksc_opts ko = { 0 };
	struct qw_ksc *k = NULL;
	struct qw_https_opts ho = { 0 };
	struct qw_https_server *srv = NULL;
	struct qw_pki_issue_opts io = { 0 };
	struct load l[MAX_CLIENTS];
	pthread_t th;
	int thread_up = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			printf("usage: qwave bench ksc [--clients N] [--seconds S] [--sync full|normal] [--json]\n\n"
			       "Key Service Center over mutual TLS on this machine: session keys issued per\n"
			       "second (POST /sessions, each a fresh key wrapped for two terminals and\n"
			       "audited in one transaction) and crypto-service requests per second (POST\n"
			       "/crypto/encrypt, 64 bytes, AES-256-GCM). N client threads (default 4), each\n"
			       "with one kept-alive connection and its own pair of terminals; S seconds per\n"
			       "phase (default 3); SQLite synchronous NORMAL (default) or FULL.\n");
			return QW_EXIT_OK;
		}
		if (!strcmp(argv[i], "--json")) {
			json = 1;
		} else if (i + 1 < argc && !strcmp(argv[i], "--clients")) {
			if (qw_cli_parse_u64(argv[++i], &clients) || clients < 1 || clients > MAX_CLIENTS)
				return qw_cli_usage_error("bench ksc", "--clients: 1..%d", MAX_CLIENTS);
		} else if (i + 1 < argc && !strcmp(argv[i], "--seconds")) {
			if (qw_cli_parse_double(argv[++i], &seconds) || seconds <= 0 || seconds > 600)
				return qw_cli_usage_error("bench ksc", "--seconds: (0, 600]");
		} else if (i + 1 < argc && !strcmp(argv[i], "--sync")) {
			i++;
			if (strcmp(argv[i], "full") && strcmp(argv[i], "normal"))
				return qw_cli_usage_error("bench ksc", "--sync: full or normal");
			sync_full = !strcmp(argv[i], "full");
		} else {
			return qw_cli_usage_error("bench ksc", "unknown option '%s'", argv[i]);
		}
	}
	if (!mkdtemp(dir))
		return qw_cli_fail("cannot create a scratch directory in /tmp");
	evthread_use_pthreads();
	snprintf(db, sizeof(db), "%s/ksc.db", dir);
	io.kind = QW_PKI_NODE;
	io.id = "ksc";
	if ((err = qw_pki_ca_init(dir, QW_PK_ECDSA_P256, "bench CA", 1)) ||
	    (err = qw_pki_issue(dir, &io))) {
		rc = qw_cli_fail("PKI: %s", qw_strerror(err));
		goto out;
	}
	io.kind = QW_PKI_SAE;
	io.id = "bench-app";
	if ((err = qw_pki_issue(dir, &io)) || (err = qw_random_bytes(mk, sizeof(mk))) ||
	    (err = qw_ksc_init(db, mk, "root"))) {
		rc = qw_cli_fail("setup: %s", qw_strerror(err));
		goto out;
	}
	ko.db_path = db;
	ko.master_key = mk;
	ko.sync_normal = !sync_full;
	k = qw_ksc_open(&ko, &err);
	if (!k) {
		rc = qw_cli_fail("open: %s", qw_strerror(err));
		goto out;
	}
	qw_cli_progress("filling %d terminal pairs with %llu bits each", (int)clients,
			(unsigned long long)fill_bits);
	if (setup_call(k, "root", "POST", "/apps", "{\"id\":\"bench-app\"}", NULL) != 201)
		goto setup_fail;
	for (int i = 0; i < (int)clients; i++) {
		for (int s = 0; s < 2; s++) {
			char b[200], p[64];

			snprintf(b, sizeof(b), "{\"id\":\"term-%c%d\",\"kind\":\"sim\",\"owner\":\"bench\","
				 "\"quota_bits\":%llu}", s ? 'b' : 'a', i, (unsigned long long)fill_bits);
			snprintf(p, sizeof(p), "/devices/term-%c%d/fill", s ? 'b' : 'a', i);
			if (setup_call(k, "root", "POST", "/devices", b, NULL) != 201)
				goto setup_fail;
			snprintf(b, sizeof(b), "{\"bits\":%llu}", (unsigned long long)fill_bits);
			if (setup_call(k, "root", "POST", p, b, NULL) != 201)
				goto setup_fail;
			snprintf(b, sizeof(b), "{\"device\":\"term-%c%d\"}", s ? 'b' : 'a', i);
			if (setup_call(k, "root", "POST", "/apps/bench-app/grant", b, NULL) != 200)
				goto setup_fail;
		}
	}
	{
		json_t *j = NULL;

		if (setup_call(k, "bench-app", "POST", "/crypto/keys", "{\"alg\":\"aes-256-gcm\"}", &j) !=
		    201) {
			json_decref(j);
			goto setup_fail;
		}
		snprintf(kid, sizeof(kid), "%s", json_string_value(json_object_get(j, "id")));
		json_decref(j);
	}
	qw_cli_progress_done();
	srv_base = event_base_new();
	if (!srv_base)
		goto setup_fail;
	snprintf(crt, sizeof(crt), "%s/node-ksc.crt", dir);
	snprintf(key, sizeof(key), "%s/node-ksc.key", dir);
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	ho.cert_file = crt;
	ho.key_file = key;
	ho.ca_file = ca;
	ho.max_body_bytes = QW_KSC_DEFAULT_MAX_BODY;
	if (!(srv = qw_https_server_new(srv_base, &ho, &err)) ||
	    qw_https_route(srv, QW_HTTP_ANY, "/api/v1/ksc", on_api, k) ||
	    pthread_create(&th, NULL, loop, NULL))
		goto setup_fail;
	thread_up = 1;
	snprintf(url, sizeof(url), "https://localhost:%u", qw_https_server_port(srv));
	qw_cli_progress("session keys, %d clients, %.0f s", (int)clients, seconds);
	sess_rate = run(l, (int)clients, dir, url, "/sessions", seconds, mk_session, NULL, &failed_s);
	qw_cli_progress("crypto encrypt, %d clients, %.0f s", (int)clients, seconds);
	enc_rate = run(l, (int)clients, dir, url, "/crypto/encrypt", seconds, mk_encrypt, kid,
		       &failed_c);
	qw_cli_progress_done();
	if (json) {
		qw_cli_print_json(json_pack("{s:s, s:I, s:f, s:s, s:f, s:I, s:f, s:I}", "transport",
					    "https mutual TLS, keep-alive", "clients",
					    (json_int_t)clients, "seconds", seconds, "sync",
					    sync_full ? "full" : "normal", "session_keys_per_s",
					    sess_rate, "session_failures", (json_int_t)failed_s,
					    "crypto_requests_per_s", enc_rate, "crypto_failures",
					    (json_int_t)failed_c));
	} else {
		printf("KSC over mutual TLS, %d kept-alive client connection(s), %.0f s per phase, "
		       "SQLite synchronous %s\n",
		       (int)clients, seconds, sync_full ? "FULL" : "NORMAL");
		printf("  session keys issued:      %10.0f keys/s  (%llu failed)\n", sess_rate,
		       (unsigned long long)failed_s);
		printf("  crypto encrypt (64 B):    %10.0f requests/s  (%llu failed)\n", enc_rate,
		       (unsigned long long)failed_c);
	}
	rc = failed_s || failed_c ? QW_EXIT_FAIL : QW_EXIT_OK;
	if (rc)
		qw_cli_fail("some requests failed");
	goto out;
setup_fail:
	qw_cli_progress_done();
	rc = qw_cli_fail("KSC setup failed");
out:
	if (thread_up) {
		event_base_loopbreak(srv_base);
		pthread_join(th, NULL);
	}
	qw_https_server_free(srv);
	if (srv_base) {
		event_base_loop(srv_base, EVLOOP_NONBLOCK);
		event_base_free(srv_base);
		srv_base = NULL;
	}
	qw_ksc_close(k);
	qw_wipe(mk, sizeof(mk));
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd))
		rc = QW_EXIT_FAIL;
	return rc;
}
