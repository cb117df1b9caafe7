/* libFuzzer harness for the Key Service Center's request handling
 * (qw_ksc_handle, ksc.h) and its medium-image parser (qw_ksc_image_open).
 * Byte 0 selects the target: 0 = an image (the rest) opened under a fixed
 * medium key; otherwise byte 0 picks an endpoint and byte 1 a caller (super
 * admin, operator, auditor, application, device, unknown) and the rest is
 * the request body. Properties checked: every answer has a status in
 * 200..599 and a body that is a JSON object, every 4xx/5xx carries a
 * string "message", no SQLite transaction is left open, and the audit log
 * still verifies (checked every 64 inputs: nothing changes the database
 * but whole, audited transactions). The KSC lives in a scratch database for the whole
 * run, with a device filled, an application and a service key, so that the
 * handlers get past their lookups.
 *
 *   CC=clang cmake -S . -B build-fuzz -DQW_FUZZ=ON && cmake --build build-fuzz -j2
 *   build-fuzz/tests/fuzz/fuzz_ksc -max_total_time=60 tests/fuzz/corpus/ksc */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "ksc/ksc_internal.h"
#include "qwave/ksc.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct qw_ksc *ksc;
static unsigned long runs;
static char key_path[128], dev_path[128];
static const uint8_t medium[QW_KSC_MEDIUM_KEY_BYTES] = { 1, 2, 3 };

static const char *const callers[] = { "root", "op", "aud", "app", "dev", NULL };

static const struct {
	const char *method, *path;
} eps[] = {
	{ "POST", "/admins" },	       { "POST", "/apps" },	       { "POST", "/users" },
	{ "POST", "/keys" },	       { "GET", "/keys" },	       { "POST", "/keys/expire" },
	{ "POST", NULL /* key */ },    { "POST", "/devices" },	       { "POST", NULL /* dev */ },
	{ "GET", "/devices/dev/sync" }, { "POST", "/devices/dev/balance" }, { "POST", "/auth/challenge" },
	{ "POST", "/auth/response" },  { "POST", "/sessions" },	       { "POST", "/groups" },
	{ "POST", "/groups/g/join" },  { "POST", "/groups/g/leave" },   { "POST", "/crypto/keys" },
	{ "POST", "/crypto/encrypt" }, { "POST", "/crypto/decrypt" },   { "POST", "/crypto/mac" },
	{ "POST", "/crypto/sign" },    { "POST", "/crypto/derive" },    { "GET", "/audit" },
	{ "GET", "/audit/verify" },    { "POST", "/apps/app/grant" },   { "POST", "/devices/dev/fill" },
};

static int call(const char *who, const char *m, const char *p, const char *body, json_t **out)
{
	struct qw_ksc_resp r;
	int st;

	if (qw_ksc_handle(ksc, who, m, p, NULL, (const uint8_t *)body, body ? strlen(body) : 0, &r))
		abort();
	st = r.status;
	if (out)
		*out = json_loadb(r.body, r.len, 0, NULL);
	qw_ksc_resp_clear(&r);
	return st;
}

static void setup(void)
{
	char dir[] = "/tmp/qw_fuzz_ksc_XXXXXX", db[96];
	struct qw_ksc_opts o = { 0 };
	uint8_t mk[32] = { 7 };
	json_t *j = NULL;

	if (!mkdtemp(dir))
		abort();
	snprintf(db, sizeof(db), "%s/ksc.db", dir);
	if (qw_ksc_init(db, mk, "root"))
		abort();
	o.db_path = db;
	o.master_key = mk;
	o.sync_normal = 1;
	ksc = qw_ksc_open(&o, NULL);
	if (!ksc)
		abort();
	call("root", "POST", "/admins", "{\"id\":\"op\",\"role\":\"operator\"}", NULL);
	call("root", "POST", "/admins", "{\"id\":\"aud\",\"role\":\"auditor\"}", NULL);
	call("op", "POST", "/apps", "{\"id\":\"app\"}", NULL);
	call("op", "POST", "/devices", "{\"id\":\"dev\",\"kind\":\"sim\",\"owner\":\"o\"}", NULL);
	call("op", "POST", "/devices/dev/fill", "{\"bits\":65536}", NULL);
	call("op", "POST", "/apps/app/grant", "{\"device\":\"dev\"}", NULL);
	if (call("op", "POST", "/keys", "{\"owner\":\"app\"}", &j) != 201)
		abort();
	snprintf(key_path, sizeof(key_path), "/keys/%s/", json_string_value(json_object_get(j, "id")));
	json_decref(j);
	snprintf(dev_path, sizeof(dev_path), "/devices/dev/");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qw_ksc_resp r;
	char path[256], *body;
	const char *who, *p;
	json_t *j;
	uint64_t n, bad;

	if (!ksc)
		setup();
	if (size < 1)
		return 0;
	if (data[0] == 0) {
		uint8_t *keys = NULL;
		size_t nk = 0;
		char batch[37], dev[QW_KSC_ID_MAX + 1];

		if (!qw_ksc_image_open(data + 1, size - 1, medium, &keys, &nk, batch, dev)) {
			if (strlen(batch) != 36 || strlen(dev) > QW_KSC_ID_MAX)
				abort();
			qw_free_secret(keys, nk);
		}
		return 0;
	}
	if (size < 2)
		return 0;
	who = callers[data[1] % 6]; /* index 5: NULL, no identity */
	p = eps[data[0] % (sizeof(eps) / sizeof(eps[0]))].path;
	if (!p) {
		/* a sub-path of the key or device: the body's first line */
		const uint8_t *nl = memchr(data + 2, '\n', size - 2);
		size_t l = nl ? (size_t)(nl - data - 2) : 0;

		snprintf(path, sizeof(path), "%s%.*s", data[0] % 2 ? dev_path : key_path,
			 (int)(l < 64 ? l : 64), (const char *)data + 2);
		p = path;
	}
	body = malloc(size - 1);
	if (!body)
		return 0;
	memcpy(body, data + 2, size - 2);
	body[size - 2] = '\0';
	if (qw_ksc_handle(ksc, who, eps[data[0] % (sizeof(eps) / sizeof(eps[0]))].method, p, NULL,
			  (const uint8_t *)body, size - 2, &r))
		abort();
	free(body);
	if (r.status < 200 || r.status > 599 || !r.body)
		abort();
	j = json_loadb(r.body, r.len, 0, NULL);
	if (!json_is_object(j))
		abort();
	if (r.status >= 400 && !json_is_string(json_object_get(j, "message")))
		abort();
	json_decref(j);
	qw_ksc_resp_clear(&r);
	if (!sqlite3_get_autocommit(ksc->db))
		abort();
	if (++runs % 64 == 0 && qw_ksc_audit_verify(ksc, &n, &bad))
		abort();
	return 0;
}
