/* The KSC's QKD key source against a KME (the real ETSI GS QKD 014 server of
 * etsi014.h over mutual TLS, with an in-memory key source whose keys are
 * known): the prefetch thread fills the pool, keys made from source "qkd"
 * are exactly the KME's keys in order and say so, keys a terminal refills
 * over the air (qw_ksc_air_serve) are the next KME key, and requests beyond
 * what the pool holds are refused without waiting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>
#include <pthread.h>

#include "qwave/encoding.h"
#include "qwave/etsi014.h"
#include "qwave/https.h"
#include "qwave/kme.h"
#include "qwave/ksc.h"
#include "qwave/pki.h"
#include "qwave/refill.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"
#include "qwave/uuid.h"

static struct event_base *base;
static unsigned delivered; /* keys handed out by the fake KME */
static unsigned requests;  /* Get key requests it answered */
static int short_keys;	   /* answer with keys one byte short of the size asked */

static int kme_status(void *ctx, const char *caller, const char *slave, struct qw_kme_status *o)
{
	(void)ctx;
	(void)caller;
	if (strcmp(slave, "sae-B"))
		return QW_ENOTFOUND;
	snprintf(o->source_kme_id, sizeof(o->source_kme_id), "kme-A");
	snprintf(o->target_kme_id, sizeof(o->target_kme_id), "kme-B");
	o->key_size = 256;
	o->stored_key_count = 100000;
	o->max_key_count = 100000;
	o->max_key_per_request = 128;
	o->max_key_size = 1024;
	o->min_key_size = 64;
	return 0;
}

/* Key number j (1, 2, ...) is the byte j mod 256 repeated. */
static void kme_get(void *ctx, const struct qw_kme_get_key_req *r, qw_kme_keys_cb cb, void *arg)
{
	struct qw_kme_key *keys = calloc(r->number, sizeof(*keys));
	struct qw_uuid u;

	(void)ctx;
	if (!keys || strcmp(r->slave_sae, "sae-B")) {
		free(keys);
		cb(arg, keys ? QW_ENOTFOUND : QW_ENOMEM, NULL, 0);
		return;
	}
	requests++;
	for (uint32_t i = 0; i < r->number; i++) {
		size_t len = r->size_bits / 8 - (short_keys ? 1 : 0);

		keys[i].key = malloc(r->size_bits / 8);
		if (!keys[i].key || qw_uuid_generate(&u)) {
			qw_kme_keys_free(keys, i + 1);
			cb(arg, QW_ENOMEM, NULL, 0);
			return;
		}
		delivered++;
		memset(keys[i].key, (int)(delivered & 0xff), len);
		keys[i].size_bits = (uint32_t)len * 8;
		qw_uuid_format(&u, keys[i].key_id);
	}
	cb(arg, 0, keys, r->number);
}

static void kme_get_ids(void *ctx, const char *caller, const char *master, const char *const *ids,
			size_t n, qw_kme_keys_cb cb, void *arg)
{
	(void)ctx;
	(void)caller;
	(void)master;
	(void)ids;
	(void)n;
	cb(arg, QW_ENOTFOUND, NULL, 0);
}

static const struct qw_kme_ops ops = { kme_status, kme_get, kme_get_ids };

static void *loop(void *arg)
{
	(void)arg;
	event_base_dispatch(base);
	return NULL;
}

static int call(struct qw_ksc *k, const char *who, const char *m, const char *p, const char *body,
		json_t **out)
{
	struct qw_ksc_resp r;
	int st;

	assert_int_equal(qw_ksc_handle(k, who, m, p, NULL, (const uint8_t *)body,
				       body ? strlen(body) : 0, &r), 0);
	st = r.status;
	if (out)
		*out = json_loadb(r.body, r.len, 0, NULL);
	qw_ksc_resp_clear(&r);
	return st;
}

struct air_ap {
	struct qw_ksc *k;
	int fd, ret;
	struct qw_ksc_air_result res;
};

static void *air_ap_main(void *arg)
{
	struct air_ap *a = arg;
	struct qw_frame_io io;

	qw_frame_io_fd(&io, a->fd);
	a->ret = qw_ksc_air_serve(a->k, &io, "test", NULL, 0, &a->res);
	shutdown(a->fd, SHUT_RDWR);
	return NULL;
}

/* A device registered and filled offline refills 256 bits over the air
 * (terminal here, the KSC's air end in a thread, over a socketpair); with
 * a KME configured the KSC delivers QKD key: *keys gets what arrived. */
static void air_refill(struct qw_ksc *k, uint8_t *keys, size_t cap, size_t *n,
		       struct qw_ksc_air_result *res)
{
	uint8_t mk[40], hello[QW_KSC_AIR_HELLO_BYTES], pre[QW_KSC_AIR_PREAMBLE_BYTES] = "QWRF1\n";
	uint8_t psk[QW_REFILL_PSK_BYTES], *fill = NULL, *got = NULL, verdict = 1;
	size_t mkl = 0, nfill = 0, ng = 0;
	char batch[37], dev[QW_KSC_ID_MAX + 1];
	struct qw_refill_params p;
	struct qw_frame_io io;
	struct air_ap ap = { 0 };
	pthread_t t;
	int sv[2];
	json_t *j;

	assert_int_equal(call(k, "root", "POST", "/devices",
			      "{\"id\":\"tf-q\",\"kind\":\"tf-card\",\"owner\":\"o\"}", &j), 201);
	{
		const char *b = json_string_value(json_object_get(j, "medium_key"));

		assert_int_equal(qw_base64_decode(mk, sizeof(mk), &mkl, b, strlen(b)), 0);
	}
	json_decref(j);
	assert_int_equal(call(k, "root", "POST", "/devices/tf-q/fill", "{\"bits\":2048}", &j), 201);
	{
		const char *img = json_string_value(json_object_get(j, "image"));

		assert_int_equal(qw_ksc_image_open((const uint8_t *)img, strlen(img), mk, &fill,
						   &nfill, batch, dev), 0);
	}
	json_decref(j);
	for (size_t i = 0; i < QW_KSC_AIR_SLOTS; i++) {
		memcpy(pre + 6 + i * QW_KSC_AIR_NAME_BYTES, batch, 36);
		pre[6 + i * QW_KSC_AIR_NAME_BYTES + 43] = (uint8_t)i;
		memcpy(psk + i * QW_KSC_SLOT_BYTES, fill + i * QW_KSC_SLOT_BYTES, QW_KSC_SLOT_BYTES);
	}
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ap.k = k;
	ap.fd = sv[0];
	assert_int_equal(pthread_create(&t, NULL, air_ap_main, &ap), 0);
	qw_refill_params_default(&p);
	p.air_seed = 77;
	assert_int_equal(qw_ksc_air_hello("tf-q", p.air_seed, hello), 0);
	assert_int_equal(write(sv[1], hello, sizeof(hello)), (ssize_t)sizeof(hello));
	assert_int_equal(read(sv[1], &verdict, 1), 1);
	assert_int_equal(verdict, 0);
	assert_int_equal(write(sv[1], pre, sizeof(pre)), (ssize_t)sizeof(pre));
	assert_int_equal(read(sv[1], &verdict, 1), 1);
	assert_int_equal(verdict, 0);
	qw_frame_io_fd(&io, sv[1]);
	assert_int_equal(qw_refill_terminal(&p, &io, psk, sizeof(psk), 256, &got, &ng, NULL), 0);
	shutdown(sv[1], SHUT_RDWR);
	pthread_join(t, NULL);
	close(sv[0]);
	close(sv[1]);
	assert_int_equal(ap.ret, 0);
	*res = ap.res;
	assert_true(ng <= cap);
	memcpy(keys, got, ng);
	*n = ng;
	qw_free_secret(got, ng);
	qw_free_secret(fill, nfill);
	qw_wipe(psk, sizeof(psk));
	qw_wipe(mk, sizeof(mk));
}

static void test_qkd_source(void **state)
{
	char dir[] = "/tmp/qw_ksc_qkd_XXXXXX", db[96], crt[96], key[96], ca[96], scrt[96], skey[96];
	char url[64], cmd[128], id[64], path[128];
	struct qw_pki_issue_opts io = { 0 };
	struct qw_https_opts ho = { 0 };
	struct qw_https_server *srv;
	struct qw_etsi014 *api;
	struct qw_ksc_opts ko = { 0 };
	struct qw_ksc *k;
	uint8_t mk[32], got[64], want[64];
	size_t n = 0;
	pthread_t th;
	json_t *j;
	int err, full = 0;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(qw_pki_ca_init(dir, QW_PK_ECDSA_P256, "test CA", 1), 0);
	io.kind = QW_PKI_NODE;
	io.id = "kme-A";
	assert_int_equal(qw_pki_issue(dir, &io), 0);
	io.kind = QW_PKI_SAE;
	io.id = "ksc-sae";
	assert_int_equal(qw_pki_issue(dir, &io), 0);
	snprintf(crt, sizeof(crt), "%s/node-kme-A.crt", dir);
	snprintf(key, sizeof(key), "%s/node-kme-A.key", dir);
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	snprintf(scrt, sizeof(scrt), "%s/sae-ksc-sae.crt", dir);
	snprintf(skey, sizeof(skey), "%s/sae-ksc-sae.key", dir);
	snprintf(db, sizeof(db), "%s/ksc.db", dir);
	evthread_use_pthreads();
	base = event_base_new();
	assert_non_null(base);
	ho.cert_file = crt;
	ho.key_file = key;
	ho.ca_file = ca;
	srv = qw_https_server_new(base, &ho, &err);
	assert_non_null(srv);
	api = qw_etsi014_new(srv, &ops, NULL, &err);
	assert_non_null(api);
	assert_int_equal(pthread_create(&th, NULL, loop, NULL), 0);
	snprintf(url, sizeof(url), "https://localhost:%u", qw_https_server_port(srv));

	assert_int_equal(qw_random_bytes(mk, sizeof(mk)), 0);
	assert_int_equal(qw_ksc_init(db, mk, "root"), 0);
	ko.db_path = db;
	ko.master_key = mk;
	ko.sync_normal = 1;
	ko.kme_url = url;
	ko.kme_cert = scrt;
	ko.kme_key = skey;
	ko.kme_ca = ca;
	ko.kme_slave_sae = "sae-B";
	k = qw_ksc_open(&ko, &err);
	assert_non_null(k);
	/* the pool fills in the background (128 Kbit = 512 keys) */
	for (int i = 0; i < 200 && !full; i++) {
		assert_int_equal(call(k, "root", "GET", "/status", NULL, &j), 200);
		full = json_integer_value(json_object_get(j, "qkd_pool_bits")) == 131072;
		if (full)
			assert_string_equal(json_string_value(json_object_get(j, "qkd_last_fetch")), "ok");
		json_decref(j);
		if (!full)
			usleep(50000);
	}
	assert_true(full);
	assert_int_equal(call(k, "root", "POST", "/apps", "{\"id\":\"app\"}", NULL), 201);
	/* a key from the QKD source is the KME's first key, then the next two */
	assert_int_equal(call(k, "root", "POST", "/keys",
			      "{\"owner\":\"app\",\"size_bits\":256,\"source\":\"qkd\"}", &j), 201);
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "id")));
	assert_int_equal(strncmp(json_string_value(json_object_get(j, "source")), "qkd:https://", 12),
			 0);
	json_decref(j);
	snprintf(path, sizeof(path), "/keys/%s/distribute", id);
	assert_int_equal(call(k, "app", "POST", path, NULL, &j), 200);
	{
		const char *b = json_string_value(json_object_get(j, "key"));

		assert_int_equal(qw_base64_decode(got, sizeof(got), &n, b, strlen(b)), 0);
	}
	json_decref(j);
	assert_int_equal(n, 32);
	memset(want, 1, 32);
	assert_memory_equal(got, want, 32);
	assert_int_equal(call(k, "root", "POST", "/keys",
			      "{\"owner\":\"app\",\"size_bits\":512,\"source\":\"qkd\"}", &j), 201);
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "id")));
	json_decref(j);
	snprintf(path, sizeof(path), "/keys/%s/distribute", id);
	assert_int_equal(call(k, "app", "POST", path, NULL, &j), 200);
	{
		const char *b = json_string_value(json_object_get(j, "key"));

		assert_int_equal(qw_base64_decode(got, sizeof(got), &n, b, strlen(b)), 0);
	}
	json_decref(j);
	assert_int_equal(n, 64);
	memset(want, 2, 32);
	memset(want + 32, 3, 32);
	assert_memory_equal(got, want, 64);
	/* a refill over the air delivers the next QKD key (the fourth), as a
	 * KSC key of the device labelled qkd:<url> */
	{
		struct qw_ksc_air_result ar;

		air_refill(k, got, sizeof(got), &n, &ar);
		assert_int_equal(n, 32);
		memset(want, 4, 32);
		assert_memory_equal(got, want, 32);
		snprintf(path, sizeof(path), "/keys/%s", ar.key_id);
		assert_int_equal(call(k, "root", "GET", path, NULL, &j), 200);
		assert_int_equal(strncmp(json_string_value(json_object_get(j, "source")),
					 "qkd:https://", 12), 0);
		assert_string_equal(json_string_value(json_object_get(j, "owner")), "tf-q");
		assert_string_equal(json_string_value(json_object_get(j, "state")), "distributed");
		json_decref(j);
	}
	/* more than the pool can ever hold: refused at once */
	assert_int_equal(call(k, "root", "POST", "/keys", "{\"size_bits\":262144,\"source\":\"qkd\"}",
			      NULL), 400);
	qw_ksc_close(k); /* stops the prefetch thread */
	/* a KME answering keys of the wrong size (here refused by the
	 * ETSI 014 layer before the KSC sees them): none enters the pool, the
	 * status names the fault, and the KSC backs off (1 s) instead of
	 * asking again at once */
	short_keys = 1;
	requests = 0;
	k = qw_ksc_open(&ko, &err);
	assert_non_null(k);
	usleep(500000);
	assert_int_equal(call(k, "root", "GET", "/status", NULL, &j), 200);
	assert_int_equal(json_integer_value(json_object_get(j, "qkd_pool_bits")), 0);
	assert_true(json_is_integer(json_object_get(j, "qkd_keys_dropped")));
	assert_string_not_equal(json_string_value(json_object_get(j, "qkd_last_fetch")), "ok");
	json_decref(j);
	qw_ksc_close(k);
	assert_in_range(requests, 1, 2);
	event_base_loopbreak(base);
	pthread_join(th, NULL);
	qw_https_server_free(srv); /* before the API it serves (etsi014.h) */
	qw_etsi014_free(api);
	for (int i = 0; i < 10; i++) /* deferred bufferevent frees, which may defer more */
		event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* No KME reachable: the KSC opens, says why in its status, and a QKD key
 * request is a 409 (retry later), not a stall. */
static void test_qkd_unreachable(void **state)
{
	char dir[] = "/tmp/qw_ksc_qkd_XXXXXX", db[96], ca[96], scrt[96], skey[96], cmd[128];
	struct qw_pki_issue_opts io = { 0 };
	struct qw_ksc_opts ko = { 0 };
	struct qw_ksc *k;
	uint8_t mk[32];
	json_t *j;
	int err;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(qw_pki_ca_init(dir, QW_PK_ECDSA_P256, "test CA", 1), 0);
	io.kind = QW_PKI_SAE;
	io.id = "ksc-sae";
	assert_int_equal(qw_pki_issue(dir, &io), 0);
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	snprintf(scrt, sizeof(scrt), "%s/sae-ksc-sae.crt", dir);
	snprintf(skey, sizeof(skey), "%s/sae-ksc-sae.key", dir);
	snprintf(db, sizeof(db), "%s/ksc.db", dir);
	assert_int_equal(qw_random_bytes(mk, sizeof(mk)), 0);
	assert_int_equal(qw_ksc_init(db, mk, "root"), 0);
	ko.db_path = db;
	ko.master_key = mk;
	ko.kme_url = "https://localhost:1"; /* nothing listens there */
	ko.kme_cert = scrt;
	ko.kme_key = skey;
	ko.kme_ca = ca;
	ko.kme_slave_sae = "sae-B";
	k = qw_ksc_open(&ko, &err);
	assert_non_null(k);
	usleep(200000);
	assert_int_equal(call(k, "root", "GET", "/status", NULL, &j), 200);
	assert_int_equal(json_integer_value(json_object_get(j, "qkd_pool_bits")), 0);
	assert_string_not_equal(json_string_value(json_object_get(j, "qkd_last_fetch")), "ok");
	json_decref(j);
	assert_int_equal(call(k, "root", "POST", "/keys", "{\"source\":\"qkd\"}", NULL), 409);
	qw_ksc_close(k);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_qkd_source),
		cmocka_unit_test(test_qkd_unreachable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
