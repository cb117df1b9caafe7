/* Key Service Center core, driven through qw_ksc_handle (the API without
 * TLS): Shamir sharing, initialisation and master key binding, roles and
 * hierarchical administration, the key life cycle with quorum recovery,
 * devices and offline filling, remote destroy, the audit chain and its
 * tamper detection, and bad input changing nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "ksc/ksc_internal.h"
#include "qwave/aead.h"
#include "qwave/encoding.h"
#include "qwave/ksc.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

struct fx {
	char dir[64], db[96];
	uint8_t mk[32];
	struct qw_ksc *k;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct qw_ksc_opts o = { 0 };
	int err;

	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/qw_ksc_XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->db, sizeof(f->db), "%s/ksc.db", f->dir);
	if (qw_random_bytes(f->mk, sizeof(f->mk)) || qw_ksc_init(f->db, f->mk, "root"))
		return -1;
	o.db_path = f->db;
	o.master_key = f->mk;
	o.sync_normal = 1;
	f->k = qw_ksc_open(&o, &err);
	if (!f->k)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	qw_ksc_close(f->k);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd))
		return -1;
	free(f);
	return 0;
}

/* Call the API; returns the status, *out the parsed body (caller decrefs;
 * may pass NULL). Every response body must be a JSON object, and every
 * error one must carry a message. */
static int call(struct fx *f, const char *who, const char *method, const char *path,
		const char *body, json_t **out)
{
	struct qw_ksc_resp r;
	json_t *j;
	char p[256], *q;

	snprintf(p, sizeof(p), "%s", path);
	q = strchr(p, '?');
	if (q)
		*q++ = '\0';
	assert_int_equal(qw_ksc_handle(f->k, who, method, p, q, (const uint8_t *)body,
				       body ? strlen(body) : 0, &r), 0);
	/* no statement left running (it would pin a read snapshot) or handed
	 * out of the cache and never given back */
	for (sqlite3_stmt *s = sqlite3_next_stmt(f->k->db, NULL); s; s = sqlite3_next_stmt(f->k->db, s))
		if (sqlite3_stmt_busy(s))
			fail_msg("%s %s left a statement running: %s", method, path, sqlite3_sql(s));
	for (size_t i = 0; i < f->k->nstmts; i++)
		if (f->k->stmts[i].in_use)
			fail_msg("%s %s kept a statement: %s", method, path, f->k->stmts[i].sql);
	/* uncached statements must have been finalized */
	{
		size_t n = 0;

		for (sqlite3_stmt *s = sqlite3_next_stmt(f->k->db, NULL); s;
		     s = sqlite3_next_stmt(f->k->db, s))
			n++;
		assert_int_equal(n, f->k->nstmts);
	}
	assert_true(sqlite3_get_autocommit(f->k->db));
	j = json_loadb(r.body, r.len, 0, NULL);
	assert_non_null(j);
	assert_true(json_is_object(j));
	if (r.status >= 400)
		assert_true(json_is_string(json_object_get(j, "message")));
	qw_ksc_resp_clear(&r);
	if (out)
		*out = j;
	else
		json_decref(j);
	return r.status;
}

static int file_contains(const char *path, const uint8_t *needle, size_t n);

static int64_t audit_count(struct fx *f)
{
	sqlite3_stmt *st;
	int64_t n = -1;

	assert_int_equal(sqlite3_prepare_v2(f->k->db, "SELECT count(*) FROM audit", -1, &st, NULL),
			 SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

static void expect_intact(struct fx *f)
{
	uint64_t n, bad;

	assert_int_equal(qw_ksc_audit_verify(f->k, &n, &bad), 0);
	assert_int_equal(bad, 0);
	assert_int_equal((int64_t)n, audit_count(f));
}

static size_t b64dec(const char *s, uint8_t *out, size_t cap)
{
	size_t n = 0;

	assert_non_null(s);
	assert_int_equal(qw_base64_decode(out, cap, &n, s, strlen(s)), 0);
	return n;
}

static void test_shamir(void **state)
{
	uint8_t secret[32], shares[5 * 33], pick[3 * 33], out[32];
	unsigned sets[][3] = { { 0, 1, 2 }, { 4, 2, 0 }, { 1, 3, 4 }, { 3, 4, 0 } };

	(void)state;
	assert_int_equal(qw_random_bytes(secret, sizeof(secret)), 0);
	assert_int_equal(qw_ksc_shamir_split(secret, 32, 3, 5, shares), 0);
	for (size_t s = 0; s < sizeof(sets) / sizeof(sets[0]); s++) {
		for (int i = 0; i < 3; i++)
			memcpy(pick + i * 33, shares + sets[s][i] * 33, 33);
		assert_int_equal(qw_ksc_shamir_combine(pick, 3, 32, out), 0);
		assert_memory_equal(out, secret, 32);
	}
	/* two shares of a 3-of-5 sharing do not give the secret */
	assert_int_equal(qw_ksc_shamir_combine(shares, 2, 32, out), 0);
	assert_memory_not_equal(out, secret, 32);
	/* all five also work (over-determined, consistent) */
	assert_int_equal(qw_ksc_shamir_combine(shares, 5, 32, out), 0);
	assert_memory_equal(out, secret, 32);
	/* a repeated x is refused */
	memcpy(pick, shares, 33);
	memcpy(pick + 33, shares, 33);
	assert_int_equal(qw_ksc_shamir_combine(pick, 2, 32, out), QW_EINVAL);
	assert_int_equal(qw_ksc_shamir_split(secret, 32, 1, 5, shares), QW_EINVAL);
	assert_int_equal(qw_ksc_shamir_split(secret, 32, 6, 5, shares), QW_EINVAL);
	/* known answer, by hand in GF(2^8): f(x) = 0x53 + 0xca x (t = 2);
	 * 0x53 * 0xca = 0x01 in the AES field (FIPS 197 section 4.2), so
	 * f(1) = 0x99, f(2) = 0x53 ^ gf(0xca * 2) = 0x53 ^ 0x8f = 0xdc */
	{
		uint8_t sh[2 * 2] = { 1, 0x99, 2, 0xdc }, s1;

		assert_int_equal(qw_ksc_shamir_combine(sh, 2, 1, &s1), 0);
		assert_int_equal(s1, 0x53);
	}
}

static void test_init_open(void **state)
{
	struct fx *f = *state;
	struct qw_ksc_opts o = { 0 };
	uint8_t other[32];
	int err = 0;

	assert_int_equal(qw_ksc_init(f->db, f->mk, "root"), QW_EEXIST);
	memcpy(other, f->mk, 32);
	other[0] ^= 1;
	o.db_path = f->db;
	o.master_key = other;
	assert_null(qw_ksc_open(&o, &err));
	assert_int_equal(err, QW_EAUTH);
	expect_intact(f);
	assert_int_equal(audit_count(f), 1);
}

static void test_roles(void **state)
{
	struct fx *f = *state;
	json_t *j;
	int64_t n0;

	assert_int_equal(call(f, "root", "GET", "/status", NULL, &j), 200);
	assert_string_equal(json_string_value(json_object_get(j, "role")), "super");
	json_decref(j);
	assert_int_equal(call(f, "nobody", "GET", "/status", NULL, NULL), 403);
	assert_int_equal(call(f, NULL, "GET", "/status", NULL, NULL), 403);
	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":\"op1\",\"role\":\"operator\"}",
			      NULL), 201);
	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":\"aud1\",\"role\":\"auditor\"}",
			      NULL), 201);
	n0 = audit_count(f);
	/* hierarchy: an operator creates auditors only, an auditor nothing */
	assert_int_equal(call(f, "op1", "POST", "/admins", "{\"id\":\"op2\",\"role\":\"operator\"}",
			      NULL), 403);
	assert_int_equal(call(f, "op1", "POST", "/admins", "{\"id\":\"sup2\",\"role\":\"super\"}",
			      NULL), 403);
	assert_int_equal(call(f, "aud1", "POST", "/admins", "{\"id\":\"x\",\"role\":\"auditor\"}",
			      NULL), 403);
	assert_int_equal(call(f, "aud1", "POST", "/devices",
			      "{\"id\":\"d\",\"kind\":\"sim\",\"owner\":\"o\"}", NULL), 403);
	assert_int_equal(call(f, "aud1", "POST", "/keys", "{}", NULL), 403);
	/* operators do not read the audit log; auditors do */
	assert_int_equal(call(f, "op1", "GET", "/audit", NULL, NULL), 403);
	assert_int_equal(call(f, "aud1", "GET", "/audit", NULL, &j), 200);
	assert_int_equal(json_array_size(json_object_get(j, "records")), (size_t)n0);
	json_decref(j);
	/* bad input: clear 4xx, nothing changes */
	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":", NULL), 400);
	assert_int_equal(call(f, "root", "POST", "/admins", "[1,2]", NULL), 400);
	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":\"a b\",\"role\":\"auditor\"}",
			      NULL), 400);
	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":\"zz\",\"role\":\"god\"}",
			      NULL), 400);
	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":7,\"role\":\"auditor\"}",
			      NULL), 400);
	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":\"op1\",\"role\":\"auditor\"}",
			      NULL), 409);
	assert_int_equal(call(f, "root", "GET", "/nowhere", NULL, NULL), 404);
	assert_int_equal(call(f, "root", "DELETE", "/audit", NULL, NULL), 405);
	assert_int_equal(call(f, "root", "GET", "/status", "{}", NULL), 400);
	assert_int_equal(call(f, "root", "POST", "/admins/ghost/revoke", NULL, NULL), 404);
	assert_int_equal(audit_count(f), n0);
	/* revocation: the revoked administrator is refused from then on */
	assert_int_equal(call(f, "op1", "POST", "/admins/root/revoke", NULL, NULL), 403);
	assert_int_equal(call(f, "root", "POST", "/admins/op1/revoke", NULL, NULL), 200);
	assert_int_equal(call(f, "op1", "GET", "/status", NULL, NULL), 403);
	assert_int_equal(call(f, "root", "POST", "/admins/root/revoke", NULL, NULL), 409);
	expect_intact(f);
}

/* Rows of table tbl about key id (backups, custody, recovery). */
static int table_rows(struct fx *f, const char *tbl, const char *id)
{
	sqlite3_stmt *st = NULL;
	char sql[96];
	int n = -1;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE key_id = ?", tbl);
	assert_int_equal(sqlite3_prepare_v2(f->k->db, sql, -1, &st, NULL), SQLITE_OK);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return n;
}

static void test_key_life_cycle(void **state)
{
	struct fx *f = *state;
	json_t *j;
	char id[64], path[160];
	uint8_t k1[64], k2[64], share[3][40];
	size_t n1, n2;
	int64_t n0;

	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":\"op\",\"role\":\"operator\"}",
			      NULL), 201);
	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":\"s2\",\"role\":\"super\"}",
			      NULL), 201);
	assert_int_equal(call(f, "op", "POST", "/apps", "{\"id\":\"app1\"}", NULL), 201);
	assert_int_equal(call(f, "op", "POST", "/apps", "{\"id\":\"app2\"}", NULL), 201);
	assert_int_equal(call(f, "op", "POST", "/keys", "{\"size_bits\":256,\"owner\":\"app1\"}", &j),
			 201);
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "id")));
	assert_string_equal(json_string_value(json_object_get(j, "state")), "active");
	assert_string_equal(json_string_value(json_object_get(j, "source")), "entropy:os");
	assert_null(json_object_get(j, "key"));
	json_decref(j);
	/* bad generation requests */
	n0 = audit_count(f);
	assert_int_equal(call(f, "op", "POST", "/keys", "{\"size_bits\":7}", NULL), 400);
	assert_int_equal(call(f, "op", "POST", "/keys", "{\"size_bits\":\"x\"}", NULL), 400);
	assert_int_equal(call(f, "op", "POST", "/keys", "{\"size_bits\":99999999}", NULL), 400);
	assert_int_equal(call(f, "op", "POST", "/keys", "{\"owner\":\"ghost\"}", NULL), 404);
	assert_int_equal(call(f, "op", "POST", "/keys", "{\"source\":\"moon\"}", NULL), 400);
	assert_int_equal(call(f, "op", "POST", "/keys", "{\"source\":\"qkd\"}", NULL), 501);
	assert_int_equal(call(f, "op", "GET", "/keys/not-a-key", NULL, NULL), 404);
	assert_int_equal(audit_count(f), n0);
	/* only the owner receives it, once */
	snprintf(path, sizeof(path), "/keys/%s/distribute", id);
	assert_int_equal(call(f, "app2", "POST", path, NULL, NULL), 403);
	assert_int_equal(call(f, "op", "POST", path, NULL, NULL), 403);
	assert_int_equal(call(f, "app1", "POST", path, NULL, &j), 200);
	n1 = b64dec(json_string_value(json_object_get(j, "key")), k1, sizeof(k1));
	assert_int_equal(n1, 32);
	json_decref(j);
	assert_int_equal(call(f, "app1", "POST", path, NULL, NULL), 409);
	/* backup 2-of-3 among root, s2, op */
	snprintf(path, sizeof(path), "/keys/%s/backup", id);
	assert_int_equal(call(f, "op", "POST", path,
			      "{\"threshold\":2,\"custodians\":[\"root\",\"s2\",\"op\"]}", NULL),
			 403);
	assert_int_equal(call(f, "root", "POST", path,
			      "{\"threshold\":4,\"custodians\":[\"root\",\"s2\",\"op\"]}", NULL),
			 400);
	assert_int_equal(call(f, "root", "POST", path,
			      "{\"threshold\":2,\"custodians\":[\"root\",\"ghost\"]}", NULL), 404);
	assert_int_equal(call(f, "root", "POST", path,
			      "{\"threshold\":2,\"custodians\":[\"root\",\"s2\",\"op\"]}", NULL),
			 201);
	assert_int_equal(call(f, "root", "POST", path,
			      "{\"threshold\":2,\"custodians\":[\"root\",\"s2\",\"op\"]}", NULL),
			 409);
	snprintf(path, sizeof(path), "/keys/%s/share", id);
	assert_int_equal(call(f, "app1", "GET", path, NULL, NULL), 403);
	{
		const char *who[3] = { "root", "s2", "op" };

		for (int i = 0; i < 3; i++) {
			assert_int_equal(call(f, who[i], "GET", path, NULL, &j), 200);
			assert_int_equal(b64dec(json_string_value(json_object_get(j, "share")),
						share[i], sizeof(share[i])), 33);
			json_decref(j);
			/* collected once */
			assert_int_equal(call(f, who[i], "GET", path, NULL, NULL), 409);
		}
	}
	/* recover refused while the key is alive */
	snprintf(path, sizeof(path), "/keys/%s/recover", id);
	{
		char body[128], b64[64];

		assert_int_equal(qw_base64_encode(b64, sizeof(b64), share[0], 33), 0);
		snprintf(body, sizeof(body), "{\"share\":\"%s\"}", b64);
		assert_int_equal(call(f, "root", "POST", path, body, NULL), 409);
	}
	/* revoke is for live keys; destroy */
	snprintf(path, sizeof(path), "/keys/%s/destroy", id);
	assert_int_equal(call(f, "aud", "POST", path, NULL, NULL), 403);
	assert_int_equal(call(f, "op", "POST", path, "{\"reason\":\"end of use\"}", &j), 200);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "destroyed");
	json_decref(j);
	assert_int_equal(call(f, "op", "POST", path, NULL, NULL), 409);
	snprintf(path, sizeof(path), "/keys/%s/revoke", id);
	assert_int_equal(call(f, "op", "POST", path, NULL, NULL), 409);
	/* quorum recovery: one share is not enough, a forged one spoils the
	 * set, two genuine ones restore the same material */
	snprintf(path, sizeof(path), "/keys/%s/recover", id);
	{
		char body[128], b64[64];
		uint8_t forged[33];

		memcpy(forged, share[1], 33);
		forged[5] ^= 0x40;
		assert_int_equal(qw_base64_encode(b64, sizeof(b64), share[0], 33), 0);
		snprintf(body, sizeof(body), "{\"share\":\"%s\"}", b64);
		assert_int_equal(call(f, "root", "POST", path, body, &j), 202);
		assert_int_equal(json_integer_value(json_object_get(j, "shares")), 1);
		json_decref(j);
		assert_int_equal(qw_base64_encode(b64, sizeof(b64), forged, 33), 0);
		snprintf(body, sizeof(body), "{\"share\":\"%s\"}", b64);
		assert_int_equal(call(f, "s2", "POST", path, body, NULL), 409);
		/* a non-custodian cannot submit */
		assert_int_equal(call(f, "app1", "POST", path, body, NULL), 403);
		assert_int_equal(call(f, "root", "POST", path, "{\"share\":\"!!\"}", NULL), 400);
		/* again, genuine */
		assert_int_equal(qw_base64_encode(b64, sizeof(b64), share[2], 33), 0);
		snprintf(body, sizeof(body), "{\"share\":\"%s\"}", b64);
		assert_int_equal(call(f, "op", "POST", path, body, &j), 202);
		json_decref(j);
		assert_int_equal(qw_base64_encode(b64, sizeof(b64), share[1], 33), 0);
		snprintf(body, sizeof(body), "{\"share\":\"%s\"}", b64);
		assert_int_equal(call(f, "s2", "POST", path, body, &j), 200);
		assert_string_equal(json_string_value(json_object_get(j, "state")), "active");
		json_decref(j);
	}
	snprintf(path, sizeof(path), "/keys/%s/distribute", id);
	assert_int_equal(call(f, "app1", "POST", path, NULL, &j), 200);
	n2 = b64dec(json_string_value(json_object_get(j, "key")), k2, sizeof(k2));
	json_decref(j);
	assert_int_equal(n2, 32);
	assert_memory_equal(k1, k2, 32);
	/* revoke: gone for good */
	snprintf(path, sizeof(path), "/keys/%s/revoke", id);
	assert_int_equal(call(f, "op", "POST", path, NULL, NULL), 200);
	snprintf(path, sizeof(path), "/keys/%s/distribute", id);
	assert_int_equal(call(f, "app1", "POST", path, NULL, NULL), 409);
	/* revoked is terminal: revoke -> destroy -> recover does not bring it
	 * back, even with a full quorum of genuine shares, and the backup and
	 * custody rows went with the revocation */
	assert_int_equal(table_rows(f, "backups", id) + table_rows(f, "custody", id), 0);
	snprintf(path, sizeof(path), "/keys/%s/destroy", id);
	assert_int_equal(call(f, "op", "POST", path, NULL, NULL), 200);
	snprintf(path, sizeof(path), "/keys/%s/recover", id);
	for (int i = 0; i < 3; i++) {
		const char *who[3] = { "root", "s2", "op" };
		char body[128], b64[64];

		assert_int_equal(qw_base64_encode(b64, sizeof(b64), share[i], 33), 0);
		snprintf(body, sizeof(body), "{\"share\":\"%s\"}", b64);
		assert_int_equal(call(f, who[i], "POST", path, body, NULL), 409);
	}
	snprintf(path, sizeof(path), "/keys/%s", id);
	assert_int_equal(call(f, "op", "GET", path, NULL, &j), 200);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "destroyed");
	json_decref(j);
	/* expiry */
	assert_int_equal(call(f, "op", "POST", "/keys", "{\"owner\":\"app1\",\"expires_in\":1}", &j),
			 201);
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "id")));
	json_decref(j);
	assert_int_equal(sqlite3_exec(f->k->db, "UPDATE keys SET expires = 1 WHERE expires > 0", NULL,
				      NULL, NULL), SQLITE_OK);
	snprintf(path, sizeof(path), "/keys/%s", id);
	assert_int_equal(call(f, "app1", "GET", path, NULL, &j), 200);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "expired");
	json_decref(j);
	assert_int_equal(call(f, "root", "GET", "/keys?state=expired", NULL, &j), 200);
	assert_int_equal(json_array_size(json_object_get(j, "keys")), 1);
	json_decref(j);
	expect_intact(f);
}

static void test_devices_fill_destroy(void **state)
{
	struct fx *f = *state;
	json_t *j;
	uint8_t mk[40], *keys = NULL, slot[32];
	size_t nmk, nkeys = 0;
	char batch[37], dev[65], *img;
	int64_t n0;

	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":\"op\",\"role\":\"operator\"}",
			      NULL), 201);
	assert_int_equal(call(f, "op", "POST", "/devices",
			      "{\"id\":\"tf-1\",\"kind\":\"tf-card\",\"owner\":\"alice\","
			      "\"quota_bits\":1024}", &j), 201);
	assert_string_equal(json_string_value(json_object_get(j, "status")), "active");
	nmk = b64dec(json_string_value(json_object_get(j, "medium_key")), mk, sizeof(mk));
	assert_int_equal(nmk, 32);
	json_decref(j);
	n0 = audit_count(f);
	assert_int_equal(call(f, "op", "POST", "/devices",
			      "{\"id\":\"tf-1\",\"kind\":\"tf-card\",\"owner\":\"a\"}", NULL), 409);
	assert_int_equal(call(f, "op", "POST", "/devices",
			      "{\"id\":\"x\",\"kind\":\"floppy\",\"owner\":\"a\"}", NULL), 400);
	assert_int_equal(call(f, "op", "POST", "/devices", "{\"id\":\"x\",\"kind\":\"sim\"}", NULL),
			 400);
	assert_int_equal(call(f, "op", "POST", "/devices/ghost/fill", "{\"bits\":256}", NULL), 404);
	assert_int_equal(call(f, "op", "POST", "/devices/tf-1/fill", "{\"bits\":100}", NULL), 400);
	assert_int_equal(call(f, "op", "POST", "/devices/tf-1/fill", "{\"bits\":2048}", NULL), 409);
	assert_int_equal(call(f, "op", "POST", "/devices/tf-1/explode", "{}", NULL), 404);
	assert_int_equal(call(f, "op", "POST", "/devices/tf-1/resume", NULL, NULL), 409);
	assert_int_equal(audit_count(f), n0);
	/* fill: the image opens with the medium key and holds what the KSC
	 * will use for slot 0 */
	assert_int_equal(call(f, "op", "POST", "/devices/tf-1/fill", "{\"bits\":512}", &j), 201);
	img = strdup(json_string_value(json_object_get(j, "image")));
	json_decref(j);
	assert_int_equal(qw_ksc_image_open((const uint8_t *)img, strlen(img), mk, &keys, &nkeys,
					   batch, dev), 0);
	assert_int_equal(nkeys, 64);
	assert_string_equal(dev, "tf-1");
	assert_int_equal(ksc_slot_key(f->k, "tf-1", batch, 1, slot), 0);
	assert_memory_equal(slot, keys + 32, 32);
	mk[3] ^= 1; /* another device's key */
	{
		uint8_t *k2 = NULL;
		size_t n2 = 0;

		assert_int_equal(qw_ksc_image_open((const uint8_t *)img, strlen(img), mk, &k2, &n2,
						   batch, dev), QW_EAUTH);
		mk[3] ^= 1;
		img[20] ^= 1; /* the header is authenticated */
		assert_int_not_equal(qw_ksc_image_open((const uint8_t *)img, strlen(img), mk, &k2,
						       &n2, batch, dev), 0);
	}
	free(img);
	qw_free_secret(keys, nkeys);
	/* quota: 512 held, 512 more fits, then no more */
	assert_int_equal(call(f, "op", "POST", "/devices/tf-1/fill", "{\"bits\":512}", NULL), 201);
	assert_int_equal(call(f, "op", "POST", "/devices/tf-1/fill", "{\"bits\":256}", NULL), 409);
	/* suspend / resume */
	assert_int_equal(call(f, "op", "POST", "/devices/tf-1/suspend", NULL, NULL), 200);
	assert_int_equal(call(f, "op", "POST", "/devices/tf-1/suspend", NULL, NULL), 409);
	assert_int_equal(call(f, "op", "POST", "/devices/tf-1/resume", NULL, NULL), 200);
	/* the device's own view and balance report */
	assert_int_equal(call(f, "tf-1", "POST", "/devices/tf-1/balance", "{\"bits\":1024}", NULL),
			 200);
	assert_int_equal(call(f, "op", "POST", "/devices/tf-1/balance", "{\"bits\":1}", NULL), 403);
	assert_int_equal(call(f, "tf-1", "GET", "/devices/tf-1/sync", NULL, &j), 200);
	assert_false(json_is_true(json_object_get(j, "erase")));
	json_decref(j);
	/* a key generated for the device, to be withdrawn with it */
	assert_int_equal(call(f, "op", "POST", "/keys", "{\"owner\":\"tf-1\"}", &j), 201);
	{
		char kp[96];

		snprintf(kp, sizeof(kp), "/keys/%s", json_string_value(json_object_get(j, "id")));
		json_decref(j);
		/* remote destroy: keys gone at the KSC at once, device told to erase */
		assert_int_equal(call(f, "op", "POST", "/devices/tf-1/destroy",
				      "{\"reason\":\"lost\"}", &j), 200);
		assert_int_equal(json_integer_value(json_object_get(j, "outstanding_bits")), 0);
		json_decref(j);
		assert_int_equal(call(f, "op", "GET", kp, NULL, &j), 200);
		assert_string_equal(json_string_value(json_object_get(j, "state")), "revoked");
		json_decref(j);
	}
	assert_int_equal(call(f, "op", "GET", "/devices/tf-1", NULL, &j), 200);
	assert_string_equal(json_string_value(json_object_get(j, "status")), "lost");
	json_decref(j);
	assert_int_equal(ksc_slot_key(f->k, "tf-1", batch, 1, slot), QW_ENOTFOUND);
	assert_int_equal(call(f, "op", "POST", "/devices/tf-1/fill", "{\"bits\":256}", NULL), 409);
	assert_int_equal(call(f, "tf-1", "GET", "/devices/tf-1/sync", NULL, &j), 200);
	assert_true(json_is_true(json_object_get(j, "erase")));
	json_decref(j);
	assert_int_equal(call(f, "tf-1", "POST", "/devices/tf-1/erased", NULL, NULL), 200);
	/* after the acknowledgement the device's identity is revoked */
	assert_int_equal(call(f, "tf-1", "GET", "/devices/tf-1/sync", NULL, NULL), 403);
	{
		sqlite3_stmt *st;

		assert_int_equal(sqlite3_prepare_v2(f->k->db, "SELECT count(*) FROM keys WHERE"
					" device = 'tf-1' AND material IS NOT NULL", -1, &st, NULL),
				 SQLITE_OK);
		assert_int_equal(sqlite3_step(st), SQLITE_ROW);
		assert_int_equal(sqlite3_column_int(st, 0), 0);
		sqlite3_finalize(st);
		assert_int_equal(sqlite3_prepare_v2(f->k->db, "SELECT count(*) FROM fill_chunks",
						    -1, &st, NULL), SQLITE_OK);
		assert_int_equal(sqlite3_step(st), SQLITE_ROW);
		assert_int_equal(sqlite3_column_int(st, 0), 0);
		sqlite3_finalize(st);
	}
	expect_intact(f);
}

/* A fill over several 64-slot chunks: every slot the KSC uses is the
 * slot the image gave the device. */
static void test_fill_chunks(void **state)
{
	struct fx *f = *state;
	uint8_t mk[40], *keys = NULL, slot[32];
	size_t nkeys = 0;
	char batch[37], dev[65];
	const uint64_t probe[] = { 0, 1, 63, 64, 127, 128, 200, 255 };
	json_t *j;

	assert_int_equal(call(f, "root", "POST", "/devices",
			      "{\"id\":\"card\",\"kind\":\"pcie-card\",\"owner\":\"o\","
			      "\"quota_bits\":65536}", &j), 201);
	assert_int_equal(b64dec(json_string_value(json_object_get(j, "medium_key")), mk,
				sizeof(mk)), 32);
	json_decref(j);
	assert_int_equal(call(f, "root", "POST", "/devices/card/fill", "{\"bits\":65536}", &j), 201);
	{
		const char *img = json_string_value(json_object_get(j, "image"));

		assert_int_equal(qw_ksc_image_open((const uint8_t *)img, strlen(img), mk, &keys,
						   &nkeys, batch, dev), 0);
	}
	json_decref(j);
	assert_int_equal(nkeys, 8192);
	for (size_t i = 0; i < sizeof(probe) / sizeof(probe[0]); i++) {
		assert_int_equal(ksc_slot_key(f->k, "card", batch, probe[i], slot), 0);
		assert_memory_equal(slot, keys + probe[i] * 32, 32);
	}
	assert_int_not_equal(ksc_slot_key(f->k, "card", batch, 256, slot), 0);
	assert_int_equal(ksc_slot_key(f->k, "other", batch, 0, slot), QW_ENOTFOUND);
	/* no plaintext copy of the fill in the database file */
	assert_int_equal(sqlite3_exec(f->k->db, "PRAGMA wal_checkpoint(FULL)", NULL, NULL, NULL),
			 SQLITE_OK);
	assert_false(file_contains(f->db, keys + 64 * 32, 32));
	qw_free_secret(keys, nkeys);
}

static void test_audit_tamper(void **state)
{
	struct fx *f = *state;
	uint64_t n, bad;

	for (int i = 0; i < 4; i++) {
		char b[96];

		snprintf(b, sizeof(b), "{\"id\":\"a%d\",\"role\":\"auditor\"}", i);
		assert_int_equal(call(f, "root", "POST", "/admins", b, NULL), 201);
	}
	expect_intact(f);
	/* edit a record's detail */
	assert_int_equal(sqlite3_exec(f->k->db, "UPDATE audit SET detail = '{\"role\":\"super\"}'"
				      " WHERE seq = 3", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(qw_ksc_audit_verify(f->k, &n, &bad), QW_EAUTH);
	assert_int_equal(bad, 3);
	{
		json_t *j;

		assert_int_equal(call(f, "root", "GET", "/audit/verify", NULL, &j), 200);
		assert_false(json_is_true(json_object_get(j, "intact")));
		assert_int_equal(json_integer_value(json_object_get(j, "first_bad_seq")), 3);
		json_decref(j);
	}
	/* restore by recomputing nothing: delete the edited record instead */
	assert_int_equal(sqlite3_exec(f->k->db, "DELETE FROM audit WHERE seq = 3", NULL, NULL, NULL),
			 SQLITE_OK);
	assert_int_equal(qw_ksc_audit_verify(f->k, &n, &bad), QW_EAUTH);
	assert_int_equal(bad, 3);
}

static void test_audit_truncation(void **state)
{
	struct fx *f = *state;
	uint64_t n, bad;

	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":\"a\",\"role\":\"auditor\"}",
			      NULL), 201);
	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":\"b\",\"role\":\"auditor\"}",
			      NULL), 201);
	expect_intact(f);
	/* the tail record removed: the chain itself is consistent, the head
	 * is not */
	assert_int_equal(sqlite3_exec(f->k->db, "DELETE FROM audit WHERE seq = 3", NULL, NULL, NULL),
			 SQLITE_OK);
	assert_int_equal(qw_ksc_audit_verify(f->k, &n, &bad), QW_EAUTH);
	assert_int_equal(bad, 3);
}


/* Register and fill a device; keys gets the image's material (the device
 * side's copy), batch its batch id. */
static void make_device(struct fx *f, const char *id, unsigned bits, uint8_t **keys,
			size_t *nkeys, char batch[37])
{
	char body[200], path[96], dev[65];
	uint8_t mk[40];
	json_t *j;

	snprintf(body, sizeof(body), "{\"id\":\"%s\",\"kind\":\"sim\",\"owner\":\"o\"}", id);
	assert_int_equal(call(f, "root", "POST", "/devices", body, &j), 201);
	assert_int_equal(b64dec(json_string_value(json_object_get(j, "medium_key")), mk,
				sizeof(mk)), 32);
	json_decref(j);
	snprintf(path, sizeof(path), "/devices/%s/fill", id);
	snprintf(body, sizeof(body), "{\"bits\":%u}", bits);
	assert_int_equal(call(f, "root", "POST", path, body, &j), 201);
	{
		const char *img = json_string_value(json_object_get(j, "image"));

		assert_int_equal(qw_ksc_image_open((const uint8_t *)img, strlen(img), mk, keys, nkeys,
						   batch, dev), 0);
	}
	json_decref(j);
}

/* What a terminal does with its entry of a session/group answer. */
static void unwrap(json_t *entry, const uint8_t *keys, const char *batch, const char *kind,
		   const char *id, uint64_t epoch, uint8_t out[32])
{
	uint8_t w[128];
	size_t wl = b64dec(json_string_value(json_object_get(entry, "wrapped")), w, sizeof(w)), n = 0;
	uint64_t slot = (uint64_t)json_integer_value(json_object_get(entry, "slot"));
	const char *dev = json_string_value(json_object_get(entry, "device"));
	char aad[200];

	assert_string_equal(json_string_value(json_object_get(entry, "batch")), batch);
	qw_ksc_wrap_aad(aad, sizeof(aad), kind, id, epoch, dev);
	assert_int_equal(qw_aead_open_msg(QW_AEAD_AES256_GCM, keys + slot * 32, 32,
					  (const uint8_t *)aad, strlen(aad), w, wl, out, 32, &n, NULL),
			 0);
	assert_int_equal(n, 32);
}

static int file_contains(const char *path, const uint8_t *needle, size_t n)
{
	FILE *fp = fopen(path, "rb");
	uint8_t *buf;
	long len;
	int found = 0;

	if (!fp)
		return 0;
	fseek(fp, 0, SEEK_END);
	len = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	buf = malloc((size_t)len + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)len, fp), (size_t)len);
	fclose(fp);
	for (long i = 0; i + (long)n <= len && !found; i++)
		found = !memcmp(buf + i, needle, n);
	free(buf);
	return found;
}

static void test_session(void **state)
{
	struct fx *f = *state;
	uint8_t *ka = NULL, *kb = NULL, sa[32], sb[32];
	size_t na = 0, nb = 0;
	char ba[37], bb[37], sid[40], p[128];
	json_t *j;

	make_device(f, "phone-a", 1024, &ka, &na, ba);
	make_device(f, "phone-b", 1024, &kb, &nb, bb);
	assert_int_equal(call(f, "root", "POST", "/apps", "{\"id\":\"voip\"}", NULL), 201);
	/* an application involves only devices it is entitled to */
	assert_int_equal(call(f, "voip", "POST", "/sessions", "{\"a\":\"phone-a\",\"b\":\"phone-b\"}",
			      NULL), 403);
	assert_int_equal(call(f, "root", "POST", "/apps/voip/grant", "{\"device\":\"phone-a\"}", NULL),
			 200);
	assert_int_equal(call(f, "voip", "POST", "/sessions", "{\"a\":\"phone-a\",\"b\":\"phone-b\"}",
			      NULL), 403);
	assert_int_equal(call(f, "root", "POST", "/apps/voip/grant", "{\"device\":\"phone-b\"}", NULL),
			 200);
	assert_int_equal(call(f, "root", "POST", "/apps/voip/grant", "{\"device\":\"ghost\"}", NULL),
			 404);
	assert_int_equal(call(f, "root", "POST", "/apps/nobody/grant", "{\"device\":\"phone-a\"}",
			      NULL), 404);
	/* bad requests */
	assert_int_equal(call(f, "voip", "POST", "/sessions", "{\"a\":\"phone-a\"}", NULL), 400);
	assert_int_equal(call(f, "voip", "POST", "/sessions", "{\"a\":\"phone-a\",\"b\":\"phone-a\"}",
			      NULL), 400);
	assert_int_equal(call(f, "voip", "POST", "/sessions", "{\"a\":\"phone-a\",\"b\":\"ghost\"}",
			      NULL), 404);
	assert_int_equal(call(f, "root", "POST", "/sessions", "{\"a\":\"phone-a\",\"b\":\"phone-b\"}",
			      NULL), 403);
	assert_int_equal(call(f, "phone-b", "POST", "/sessions",
			      "{\"a\":\"phone-a\",\"b\":\"phone-b\"}", NULL), 403);
	/* the call: each terminal opens its wrap; same key */
	assert_int_equal(call(f, "phone-a", "POST", "/sessions",
			      "{\"a\":\"phone-a\",\"b\":\"phone-b\"}", &j), 201);
	snprintf(sid, sizeof(sid), "%s", json_string_value(json_object_get(j, "session_id")));
	unwrap(json_array_get(json_object_get(j, "terminals"), 0), ka, ba, "session", sid, 0, sa);
	unwrap(json_array_get(json_object_get(j, "terminals"), 1), kb, bb, "session", sid, 0, sb);
	json_decref(j);
	assert_memory_equal(sa, sb, 32);
	/* the session key is nowhere in the KSC's database */
	assert_int_equal(sqlite3_exec(f->k->db, "PRAGMA wal_checkpoint(FULL)", NULL, NULL, NULL),
			 SQLITE_OK);
	assert_false(file_contains(f->db, sa, 32));
	snprintf(p, sizeof(p), "%s-wal", f->db);
	assert_false(file_contains(p, sa, 32));
	/* one key per call: the next call has another key, in fresh slots */
	assert_int_equal(call(f, "voip", "POST", "/sessions", "{\"a\":\"phone-a\",\"b\":\"phone-b\"}",
			      &j), 201);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(j,
		"terminals"), 0), "slot")), 1);
	unwrap(json_array_get(json_object_get(j, "terminals"), 0), ka, ba, "session",
	       json_string_value(json_object_get(j, "session_id")), 0, sb);
	json_decref(j);
	assert_memory_not_equal(sa, sb, 32);
	/* the pre-filled keys run out: 1024 bits = 4 slots */
	assert_int_equal(call(f, "voip", "POST", "/sessions", "{\"a\":\"phone-a\",\"b\":\"phone-b\"}",
			      NULL), 201);
	assert_int_equal(call(f, "voip", "POST", "/sessions", "{\"a\":\"phone-a\",\"b\":\"phone-b\"}",
			      NULL), 201);
	assert_int_equal(call(f, "voip", "POST", "/sessions", "{\"a\":\"phone-a\",\"b\":\"phone-b\"}",
			      NULL), 409);
	qw_free_secret(ka, na);
	qw_free_secret(kb, nb);
	expect_intact(f);
}

static void test_group(void **state)
{
	struct fx *f = *state;
	uint8_t *k[3], g1[3][32], g2[32], g3[32];
	size_t n[3];
	char b[3][37];
	const char *ids[3] = { "ptt-1", "ptt-2", "ptt-3" };
	json_t *j, *m;

	for (int i = 0; i < 3; i++)
		make_device(f, ids[i], 2048, &k[i], &n[i], b[i]);
	assert_int_equal(call(f, "root", "POST", "/apps", "{\"id\":\"ptt\"}", NULL), 201);
	for (int i = 0; i < 3; i++) {
		char gb[64];

		snprintf(gb, sizeof(gb), "{\"device\":\"%s\"}", ids[i]);
		assert_int_equal(call(f, "root", "POST", "/apps/ptt/grant", gb, NULL), 200);
	}
	assert_int_equal(call(f, "ptt", "POST", "/groups", "{\"id\":\"g\",\"members\":[\"ptt-1\"]}",
			      NULL), 400);
	assert_int_equal(call(f, "ptt", "POST", "/groups",
			      "{\"id\":\"g\",\"members\":[\"ptt-1\",\"ptt-1\"]}", NULL), 400);
	assert_int_equal(call(f, "ptt-1", "POST", "/groups",
			      "{\"id\":\"g\",\"members\":[\"ptt-1\",\"ptt-2\"]}", NULL), 403);
	assert_int_equal(call(f, "ptt", "POST", "/groups",
			      "{\"id\":\"g\",\"members\":[\"ptt-1\",\"ptt-2\",\"ptt-3\"]}", &j), 201);
	m = json_object_get(j, "members");
	assert_int_equal(json_array_size(m), 3);
	for (int i = 0; i < 3; i++)
		unwrap(json_array_get(m, (size_t)i), k[i], b[i], "group", "g", 1, g1[i]);
	json_decref(j);
	assert_memory_equal(g1[0], g1[1], 32);
	assert_memory_equal(g1[0], g1[2], 32);
	assert_int_equal(call(f, "ptt", "POST", "/groups",
			      "{\"id\":\"g\",\"members\":[\"ptt-1\",\"ptt-2\"]}", NULL), 409);
	/* leave: epoch 2 goes to the two who stay, with a new key */
	assert_int_equal(call(f, "ptt", "POST", "/groups/g/leave", "{\"device\":\"ptt-3\"}", &j),
			 200);
	assert_int_equal(json_integer_value(json_object_get(j, "epoch")), 2);
	m = json_object_get(j, "members");
	assert_int_equal(json_array_size(m), 2);
	for (size_t i = 0; i < 2; i++)
		assert_string_not_equal(json_string_value(json_object_get(json_array_get(m, i),
									  "device")), "ptt-3");
	unwrap(json_array_get(m, 0), k[0], b[0], "group", "g", 2, g2);
	assert_memory_not_equal(g2, g1[0], 32);
	json_decref(j);
	assert_int_equal(call(f, "ptt", "POST", "/groups/g/leave", "{\"device\":\"ptt-3\"}", NULL),
			 409);
	/* join: epoch 3, all three again, another new key */
	assert_int_equal(call(f, "ptt", "POST", "/groups/g/join", "{\"device\":\"ptt-3\"}", &j), 200);
	assert_int_equal(json_integer_value(json_object_get(j, "epoch")), 3);
	m = json_object_get(j, "members");
	assert_int_equal(json_array_size(m), 3);
	unwrap(json_array_get(m, 2), k[2], b[2], "group", "g", 3, g3);
	assert_memory_not_equal(g3, g2, 32);
	json_decref(j);
	assert_int_equal(call(f, "ptt", "GET", "/groups/g", NULL, &j), 200);
	assert_int_equal(json_integer_value(json_object_get(j, "epoch")), 3);
	json_decref(j);
	assert_int_equal(call(f, "ptt", "GET", "/groups/nope", NULL, NULL), 404);
	for (int i = 0; i < 3; i++)
		qw_free_secret(k[i], n[i]);
	expect_intact(f);
}

static void respond(struct fx *f, json_t *ch, const uint8_t *keys, const char *dev, int corrupt,
		    char *body, size_t cap)
{
	uint8_t nonce[32], mac[32];
	size_t nl = b64dec(json_string_value(json_object_get(ch, "nonce")), nonce, sizeof(nonce)), ml;
	uint64_t slot = (uint64_t)json_integer_value(json_object_get(ch, "slot"));
	const char *cid = json_string_value(json_object_get(ch, "challenge_id"));
	char b64[64];
	uint8_t k[32];

	(void)f;
	memcpy(k, keys + slot * 32, 32);
	k[0] ^= (uint8_t)corrupt;
	assert_int_equal(qw_ksc_auth_mac(json_string_value(json_object_get(ch, "method")), k, cid,
					 nonce, nl, dev, mac, &ml), 0);
	assert_int_equal(qw_base64_encode(b64, sizeof(b64), mac, ml), 0);
	snprintf(body, cap, "{\"challenge_id\":\"%s\",\"mac\":\"%s\"}", cid, b64);
}

static void test_auth(void **state)
{
	struct fx *f = *state;
	uint8_t *k = NULL;
	size_t n = 0;
	char b[37], body[256];
	json_t *ch, *j;
	const char *methods[2] = { "hmac-sm3", "zuc-eia3" };

	make_device(f, "meter-1", 2048, &k, &n, b);
	for (int m = 0; m < 2; m++) {
		char rq[128];

		snprintf(rq, sizeof(rq), "{\"device\":\"meter-1\",\"method\":\"%s\"}", methods[m]);
		assert_int_equal(call(f, "meter-1", "POST", "/auth/challenge", rq, &ch), 201);
		respond(f, ch, k, "meter-1", 0, body, sizeof(body));
		json_decref(ch);
		assert_int_equal(call(f, "meter-1", "POST", "/auth/response", body, &j), 200);
		assert_true(json_is_true(json_object_get(j, "authenticated")));
		json_decref(j);
		/* replay of the same, correct, response */
		assert_int_equal(call(f, "meter-1", "POST", "/auth/response", body, NULL), 401);
		/* wrong key */
		assert_int_equal(call(f, "meter-1", "POST", "/auth/challenge", rq, &ch), 201);
		respond(f, ch, k, "meter-1", 1, body, sizeof(body));
		json_decref(ch);
		assert_int_equal(call(f, "meter-1", "POST", "/auth/response", body, &j), 401);
		assert_non_null(strstr(json_string_value(json_object_get(j, "message")), "wrong"));
		json_decref(j);
	}
	/* expired challenge */
	assert_int_equal(call(f, "root", "POST", "/auth/challenge", "{\"device\":\"meter-1\"}", &ch),
			 201);
	respond(f, ch, k, "meter-1", 0, body, sizeof(body));
	json_decref(ch);
	assert_int_equal(sqlite3_exec(f->k->db, "UPDATE challenges SET expires = 1", NULL, NULL,
				      NULL), SQLITE_OK);
	assert_int_equal(call(f, "root", "POST", "/auth/response", body, &j), 401);
	assert_non_null(strstr(json_string_value(json_object_get(j, "message")), "expired"));
	json_decref(j);
	/* bad input */
	assert_int_equal(call(f, "meter-1", "POST", "/auth/challenge",
			      "{\"device\":\"meter-1\",\"method\":\"md5\"}", NULL), 400);
	assert_int_equal(call(f, "meter-1", "POST", "/auth/challenge", "{\"device\":\"other\"}",
			      NULL), 403);
	assert_int_equal(call(f, "meter-1", "POST", "/auth/response", "{}", NULL), 400);
	assert_int_equal(call(f, "meter-1", "GET", "/auth/challenge", NULL, NULL), 405);
	/* a suspended device is not authenticated */
	assert_int_equal(call(f, "meter-1", "POST", "/auth/challenge", "{\"device\":\"meter-1\"}",
			      &ch), 201);
	respond(f, ch, k, "meter-1", 0, body, sizeof(body));
	json_decref(ch);
	assert_int_equal(call(f, "root", "POST", "/devices/meter-1/suspend", NULL, NULL), 200);
	assert_int_equal(call(f, "meter-1", "POST", "/auth/response", body, NULL), 401);
	{
		json_t *a;
		size_t i, fails = 0, oks = 0;

		assert_int_equal(call(f, "root", "GET", "/audit", NULL, &a), 200);
		json_array_foreach(json_object_get(a, "records"), i, j) {
			const char *act = json_string_value(json_object_get(j, "action"));

			fails += !strcmp(act, "auth.failure");
			oks += !strcmp(act, "auth.success");
		}
		json_decref(a);
		assert_int_equal(oks, 2);
		assert_int_equal(fails, 4);
	}
	qw_free_secret(k, n);
	expect_intact(f);
}

static void crypto_call(struct fx *f, const char *who, const char *op, const char *body, int want,
			json_t **out)
{
	char p[64];

	snprintf(p, sizeof(p), "/crypto/%s", op);
	assert_int_equal(call(f, who, "POST", p, body, out), want);
}

static void test_crypto(void **state)
{
	struct fx *f = *state;
	const char *algs[3] = { "aes-256-gcm", "sm4-ctr-hmac-sm3", "zuc-eea3" };
	char body[512], id[40], ct[200];
	json_t *j;

	assert_int_equal(call(f, "root", "POST", "/apps", "{\"id\":\"bank\"}", NULL), 201);
	assert_int_equal(call(f, "root", "POST", "/apps", "{\"id\":\"other\"}", NULL), 201);
	crypto_call(f, "root", "keys", "{\"alg\":\"aes-256-gcm\"}", 403, NULL);
	crypto_call(f, "bank", "keys", "{\"alg\":\"rot13\"}", 400, NULL);
	for (int a = 0; a < 3; a++) {
		snprintf(body, sizeof(body), "{\"alg\":\"%s\"}", algs[a]);
		crypto_call(f, "bank", "keys", body, 201, &j);
		snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "id")));
		assert_string_equal(json_string_value(json_object_get(j, "source")), "entropy:os");
		assert_null(json_object_get(j, "key"));
		json_decref(j);
		/* "hello quantum" */
		snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"data\":\"aGVsbG8gcXVhbnR1bQ==\"}",
			 id);
		crypto_call(f, "bank", "encrypt", body, 200, &j);
		snprintf(ct, sizeof(ct), "%s", json_string_value(json_object_get(j, "ciphertext")));
		json_decref(j);
		crypto_call(f, "other", "encrypt", body, 404, NULL);
		snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"ciphertext\":\"%s\"}", id, ct);
		crypto_call(f, "bank", "decrypt", body, 200, &j);
		assert_string_equal(json_string_value(json_object_get(j, "plaintext")),
				    "aGVsbG8gcXVhbnR1bQ==");
		json_decref(j);
		crypto_call(f, "bank", "mac", body, 400, NULL);
		/* every encryption spends one use of the key's persistent
		 * counter: 128-EEA3's COUNT never repeats (a repeat is a two-time
		 * pad), and every algorithm stops at 2^32 messages per key */
		{
			uint8_t c1[64], c2[64];
			char ct2[200];

			snprintf(body, sizeof(body),
				 "{\"key_id\":\"%s\",\"data\":\"aGVsbG8gcXVhbnR1bQ==\"}", id);
			crypto_call(f, "bank", "encrypt", body, 200, &j);
			snprintf(ct2, sizeof(ct2), "%s",
				 json_string_value(json_object_get(j, "ciphertext")));
			json_decref(j);
			assert_string_not_equal(ct, ct2);
			if (a == 2) {
				assert_int_equal(b64dec(ct, c1, sizeof(c1)), 4 + 13);
				assert_int_equal(b64dec(ct2, c2, sizeof(c2)), 4 + 13);
				assert_memory_equal(c1, "\0\0\0\0", 4);
				assert_memory_equal(c2, "\0\0\0\1", 4);
			}
			snprintf(body, sizeof(body),
				 "UPDATE keys SET next_slot = 4294967295 WHERE id = '%s'", id);
			assert_int_equal(sqlite3_exec(f->k->db, body, NULL, NULL, NULL), SQLITE_OK);
			snprintf(body, sizeof(body),
				 "{\"key_id\":\"%s\",\"data\":\"aGVsbG8gcXVhbnR1bQ==\"}", id);
			crypto_call(f, "bank", "encrypt", body, 200, &j);
			snprintf(ct2, sizeof(ct2), "%s",
				 json_string_value(json_object_get(j, "ciphertext")));
			json_decref(j);
			if (a == 2) {
				assert_int_equal(b64dec(ct2, c2, sizeof(c2)), 4 + 13);
				assert_memory_equal(c2, "\377\377\377\377", 4);
			}
			crypto_call(f, "bank", "encrypt", body, 409, NULL);
			/* decryption spends nothing and still works */
			snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"ciphertext\":\"%s\"}",
				 id, ct2);
			crypto_call(f, "bank", "decrypt", body, 200, &j);
			assert_string_equal(json_string_value(json_object_get(j, "plaintext")),
					    "aGVsbG8gcXVhbnR1bQ==");
			json_decref(j);
			snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"ciphertext\":\"%s\"}",
				 id, ct);
		}
		if (a < 2) { /* AEADs refuse an altered ciphertext */
			ct[8] = ct[8] == 'A' ? 'B' : 'A';
			snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"ciphertext\":\"%s\"}", id,
				 ct);
			crypto_call(f, "bank", "decrypt", body, 400, NULL);
		}
	}
	/* MACs */
	crypto_call(f, "bank", "keys", "{\"alg\":\"hmac-sm3\"}", 201, &j);
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "id")));
	json_decref(j);
	snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"data\":\"AAEC\"}", id);
	crypto_call(f, "bank", "mac", body, 200, &j);
	snprintf(ct, sizeof(ct), "%s", json_string_value(json_object_get(j, "mac")));
	json_decref(j);
	snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"data\":\"AAEC\",\"mac\":\"%s\"}", id, ct);
	crypto_call(f, "bank", "verify-mac", body, 200, &j);
	assert_true(json_is_true(json_object_get(j, "valid")));
	json_decref(j);
	snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"data\":\"AAED\",\"mac\":\"%s\"}", id, ct);
	crypto_call(f, "bank", "verify-mac", body, 200, &j);
	assert_false(json_is_true(json_object_get(j, "valid")));
	json_decref(j);
	/* 128-EIA3: each tag under a fresh COUNT from the key's persistent
	 * counter (two tags under one COUNT are linear in the messages and
	 * forge a third); the COUNT comes back with the tag and verification
	 * needs it */
	{
		char m0[16], m1[16];
		char kid[40];

		crypto_call(f, "bank", "keys", "{\"alg\":\"zuc-eia3\"}", 201, &j);
		snprintf(kid, sizeof(kid), "%s", json_string_value(json_object_get(j, "id")));
		json_decref(j);
		snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"data\":\"AAEC\"}", kid);
		crypto_call(f, "bank", "mac", body, 200, &j);
		assert_int_equal(json_integer_value(json_object_get(j, "count")), 0);
		snprintf(m0, sizeof(m0), "%s", json_string_value(json_object_get(j, "mac")));
		json_decref(j);
		crypto_call(f, "bank", "mac", body, 200, &j);
		assert_true(json_is_integer(json_object_get(j, "count")));
		assert_int_equal(json_integer_value(json_object_get(j, "count")), 1);
		snprintf(m1, sizeof(m1), "%s", json_string_value(json_object_get(j, "mac")));
		json_decref(j);
		assert_string_not_equal(m0, m1);
		snprintf(body, sizeof(body),
			 "{\"key_id\":\"%s\",\"data\":\"AAEC\",\"mac\":\"%s\",\"count\":1}", kid,
			 m1);
		crypto_call(f, "bank", "verify-mac", body, 200, &j);
		assert_true(json_is_true(json_object_get(j, "valid")));
		json_decref(j);
		snprintf(body, sizeof(body),
			 "{\"key_id\":\"%s\",\"data\":\"AAEC\",\"mac\":\"%s\",\"count\":0}", kid,
			 m1);
		crypto_call(f, "bank", "verify-mac", body, 200, &j);
		assert_false(json_is_true(json_object_get(j, "valid")));
		json_decref(j);
		snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"data\":\"AAEC\",\"mac\":\"%s\"}",
			 kid, m1);
		crypto_call(f, "bank", "verify-mac", body, 400, NULL);
	}
	/* hybrid derivation: deterministic in (quantum key, classical key,
	 * info), and changes with the classical key */
	{
		char d1[100], d2[100];

		snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"classical\":\"AAECAwQFBgc=\","
			 "\"info\":\"tls\",\"length\":32}", id);
		crypto_call(f, "bank", "derive", body, 200, &j);
		snprintf(d1, sizeof(d1), "%s", json_string_value(json_object_get(j, "key")));
		json_decref(j);
		crypto_call(f, "bank", "derive", body, 200, &j);
		assert_string_equal(d1, json_string_value(json_object_get(j, "key")));
		json_decref(j);
		crypto_call(f, "other", "derive", body, 404, NULL);
		snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"classical\":\"AAECAwQFBgg=\","
			 "\"info\":\"tls\"}", id);
		crypto_call(f, "bank", "derive", body, 200, &j);
		snprintf(d2, sizeof(d2), "%s", json_string_value(json_object_get(j, "key")));
		json_decref(j);
		assert_string_not_equal(d1, d2);
	}
	/* SM2 signatures */
	crypto_call(f, "bank", "keys", "{\"alg\":\"sm2\"}", 201, &j);
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "id")));
	assert_non_null(strstr(json_string_value(json_object_get(j, "public_key")), "PUBLIC KEY"));
	json_decref(j);
	snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"data\":\"AAEC\"}", id);
	crypto_call(f, "bank", "sign", body, 200, &j);
	snprintf(ct, sizeof(ct), "%s", json_string_value(json_object_get(j, "signature")));
	json_decref(j);
	snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"data\":\"AAEC\",\"signature\":\"%s\"}", id,
		 ct);
	crypto_call(f, "bank", "verify", body, 200, &j);
	assert_true(json_is_true(json_object_get(j, "valid")));
	json_decref(j);
	snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"data\":\"AAED\",\"signature\":\"%s\"}", id,
		 ct);
	crypto_call(f, "bank", "verify", body, 200, &j);
	assert_false(json_is_true(json_object_get(j, "valid")));
	json_decref(j);
	/* bad input */
	crypto_call(f, "bank", "encrypt", "{\"key_id\":\"x\",\"data\":\"AA\"}", 404, NULL);
	snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"data\":\"***\"}", id);
	crypto_call(f, "bank", "sign", body, 400, NULL);
	crypto_call(f, "bank", "teleport", "{}", 404, NULL);
	/* service keys never leave; their owner (or an operator) destroys them */
	{
		char p[96];

		snprintf(p, sizeof(p), "/keys/%s/distribute", id);
		assert_int_equal(call(f, "bank", "POST", p, NULL, NULL), 409);
		snprintf(p, sizeof(p), "/keys/%s/destroy", id);
		assert_int_equal(call(f, "other", "POST", p, NULL, NULL), 403);
		assert_int_equal(call(f, "bank", "POST", p, NULL, NULL), 200);
		snprintf(body, sizeof(body), "{\"key_id\":\"%s\",\"data\":\"AAEC\"}", id);
		crypto_call(f, "bank", "sign", body, 409, NULL);
	}
	expect_intact(f);
}

/* Every endpoint: malformed JSON, a non-object body, unknown IDs and the
 * wrong caller each get a 4xx with a message, and change nothing. */
static void test_every_endpoint_bad_input(void **state)
{
	struct fx *f = *state;
	uint8_t *k = NULL;
	size_t n = 0;
	char b[37], p[160], kid[40], ck[40];
	json_t *j;
	int64_t n0;
	/* {method, path template ("%s" = an existing key/service key), role
	 * that must be refused} */
	static const struct {
		const char *m, *path, *refused;
	} eps[] = {
		{ "POST", "/admins", "aud" },	       { "POST", "/apps", "aud" },
		{ "POST", "/users", "aud" },	       { "POST", "/admins/op/revoke", "aud" },
		{ "POST", "/apps/app/revoke", "aud" }, { "POST", "/keys", "aud" },
		{ "POST", "/keys/expire", "aud" },     { "POST", "/keys/K/distribute", "aud" },
		{ "POST", "/keys/K/revoke", "aud" },   { "POST", "/keys/K/destroy", "aud" },
		{ "POST", "/keys/K/backup", "op" },    { "POST", "/keys/K/recover", "app" },
		{ "POST", "/devices", "aud" },	       { "POST", "/devices/dev/suspend", "aud" },
		{ "POST", "/devices/dev/resume", "aud" }, { "POST", "/devices/dev/retire", "aud" },
		{ "POST", "/devices/dev/destroy", "aud" }, { "POST", "/devices/dev/fill", "aud" },
		{ "POST", "/devices/dev/erased", "op" }, { "POST", "/devices/dev/balance", "op" },
		{ "POST", "/auth/challenge", "aud" },  { "POST", "/auth/response", "aud" },
		{ "POST", "/sessions", "op" },	       { "POST", "/groups", "aud" },
		{ "POST", "/crypto/keys", "op" },      { "POST", "/crypto/encrypt", "op" },
		{ "POST", "/crypto/decrypt", "op" },   { "POST", "/crypto/mac", "op" },
		{ "POST", "/crypto/verify-mac", "op" }, { "POST", "/crypto/sign", "op" },
		{ "POST", "/crypto/verify", "op" },    { "POST", "/crypto/derive", "op" },
		{ "POST", "/certs", "aud" },
	};

	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":\"op\",\"role\":\"operator\"}",
			      NULL), 201);
	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":\"aud\",\"role\":\"auditor\"}",
			      NULL), 201);
	assert_int_equal(call(f, "op", "POST", "/apps", "{\"id\":\"app\"}", NULL), 201);
	make_device(f, "dev", 1024, &k, &n, b);
	assert_int_equal(call(f, "op", "POST", "/keys", "{\"owner\":\"app\"}", &j), 201);
	snprintf(kid, sizeof(kid), "%s", json_string_value(json_object_get(j, "id")));
	json_decref(j);
	assert_int_equal(call(f, "app", "POST", "/crypto/keys", "{\"alg\":\"hmac-sm3\"}", &j), 201);
	snprintf(ck, sizeof(ck), "%s", json_string_value(json_object_get(j, "id")));
	json_decref(j);
	n0 = audit_count(f);
	for (size_t i = 0; i < sizeof(eps) / sizeof(eps[0]); i++) {
		const char *t = eps[i].path, *kp = strstr(t, "/K/");
		int st;

		if (kp)
			snprintf(p, sizeof(p), "%.*s/%s/%s", (int)(kp - t), t, kid, kp + 3);
		else
			snprintf(p, sizeof(p), "%s", t);
		st = call(f, "root", eps[i].m, p, "{\"id\":", NULL);
		if (st != 400)
			fail_msg("%s %s malformed JSON: %d", eps[i].m, p, st);
		st = call(f, "op", eps[i].m, p, "[1,2]", NULL);
		if (st != 400)
			fail_msg("%s %s array body: %d", eps[i].m, p, st);
		st = call(f, eps[i].refused, eps[i].m, p, "{}", NULL);
		if (st != 403 && st != 400)
			fail_msg("%s %s as %s: %d", eps[i].m, p, eps[i].refused, st);
		st = call(f, "nobody", eps[i].m, p, "{}", NULL);
		if (st != 403)
			fail_msg("%s %s unknown caller: %d", eps[i].m, p, st);
	}
	/* unknown IDs */
	assert_int_equal(call(f, "op", "POST", "/devices/ghost/suspend", NULL, NULL), 404);
	assert_int_equal(call(f, "op", "GET", "/devices/ghost", NULL, NULL), 404);
	assert_int_equal(call(f, "op", "POST", "/keys/ghost/revoke", NULL, NULL), 404);
	assert_int_equal(call(f, "op", "POST", "/apps/ghost/revoke", NULL, NULL), 404);
	assert_int_equal(call(f, "op", "POST", "/auth/challenge", "{\"device\":\"ghost\"}", NULL), 404);
	assert_int_equal(call(f, "op", "POST", "/auth/response", "{\"challenge_id\":\"ghost\",\"mac\":\"AA==\"}",
			      NULL), 401);
	assert_int_equal(call(f, "app", "POST", "/sessions", "{\"a\":\"dev\",\"b\":\"ghost\"}", NULL), 404);
	assert_int_equal(call(f, "app", "POST", "/groups/ghost/join", "{\"device\":\"dev\"}", NULL), 404);
	assert_int_equal(call(f, "app", "POST", "/crypto/mac", "{\"key_id\":\"ghost\",\"data\":\"AA==\"}",
			      NULL), 404);
	snprintf(p, sizeof(p), "{\"key_id\":\"%s\",\"data\":\"AA==\"}", ck);
	assert_int_equal(call(f, "app", "POST", "/crypto/mac", p, NULL), 200);
	assert_int_equal(audit_count(f), n0);
	qw_free_secret(k, n);
	expect_intact(f);
}

/* An anchor (seq, hash) kept by the auditor outside the KSC. */
static void test_audit_anchor(void **state)
{
	struct fx *f = *state;
	char q[200], h[65];
	long long seq;
	json_t *j;

	assert_int_equal(call(f, "root", "POST", "/admins", "{\"id\":\"aud\",\"role\":\"auditor\"}",
			      NULL), 201);
	assert_int_equal(call(f, "aud", "GET", "/audit/head", NULL, &j), 200);
	seq = (long long)json_integer_value(json_object_get(j, "seq"));
	snprintf(h, sizeof(h), "%s", json_string_value(json_object_get(j, "hash")));
	json_decref(j);
	assert_int_equal(seq, 2);
	assert_int_equal(strlen(h), 64);
	assert_int_equal(call(f, "root", "POST", "/apps", "{\"id\":\"later\"}", NULL), 201);
	snprintf(q, sizeof(q), "/audit/verify?seq=%lld&hash=%s", seq, h);
	assert_int_equal(call(f, "aud", "GET", q, NULL, &j), 200);
	assert_true(json_is_true(json_object_get(j, "intact")));
	assert_true(json_is_true(json_object_get(j, "anchor_matches")));
	assert_int_equal(json_integer_value(json_object_get(j, "records")), 3);
	json_decref(j);
	h[10] = h[10] == 'a' ? 'b' : 'a';
	snprintf(q, sizeof(q), "/audit/verify?seq=%lld&hash=%s", seq, h);
	assert_int_equal(call(f, "aud", "GET", q, NULL, &j), 200);
	assert_false(json_is_true(json_object_get(j, "intact")));
	assert_false(json_is_true(json_object_get(j, "anchor_matches")));
	assert_int_equal(json_integer_value(json_object_get(j, "first_bad_seq")), seq);
	json_decref(j);
	assert_int_equal(call(f, "aud", "GET", "/audit/verify?seq=2&hash=xyz", NULL, NULL), 400);
	assert_int_equal(call(f, "aud", "GET", "/audit/verify?seq=99&hash="
			      "0000000000000000000000000000000000000000000000000000000000000000",
			      NULL, &j), 200);
	assert_false(json_is_true(json_object_get(j, "anchor_matches")));
	json_decref(j);
	assert_int_equal(call(f, "op", "GET", "/audit/head", NULL, NULL), 403);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shamir),
		cmocka_unit_test_setup_teardown(test_init_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roles, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_life_cycle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_devices_fill_destroy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_tamper, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_truncation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_anchor, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fill_chunks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crypto, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_endpoint_bad_input, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
