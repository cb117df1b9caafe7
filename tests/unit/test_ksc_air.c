/* The Key Service Center as the access point of over-the-air refill
 * (ksc.h qw_ksc_air_serve): a terminal in this thread, the KSC's air end in
 * another, over a socketpair standing for the radio link. The terminal side
 * is written here from the wire format of ksc.h (hello, preamble) and
 * refill.h, independently of the CLI. Checked: the keys delivered are the
 * KSC's own key for that device (the stored material, opened under the
 * device's KEK, equals what the terminal got), recorded through the key life
 * cycle and the audit log; the named slots advance the KSC's slot cursor, so
 * slots spent before (by a refill or a challenge) are refused with nothing
 * delivered; the second refill runs on the pool carried from the first with
 * a different PLKG key; an unknown device is refused before anything is
 * spent. */
#include <pthread.h>
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
#include <jansson.h>

#include "ksc/ksc_internal.h"
#include "qwave/encoding.h"
#include "qwave/ksc.h"
#include "qwave/refill.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

#define WANT 256u

struct fx {
	char dir[64], db[96];
	uint8_t mk[32];
	struct qw_ksc *k;
	uint8_t *fill;
	size_t nfill;
	char batch[37];
};

static int call(struct fx *f, const char *who, const char *method, const char *path,
		const char *body, json_t **out)
{
	struct qw_ksc_resp r;
	int status;

	assert_int_equal(qw_ksc_handle(f->k, who, method, path, NULL, (const uint8_t *)body,
				       body ? strlen(body) : 0, &r), 0);
	status = r.status;
	if (out) {
		*out = json_loadb(r.body, r.len, 0, NULL);
		assert_non_null(*out);
	}
	qw_ksc_resp_clear(&r);
	return status;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct qw_ksc_opts o = { 0 };
	uint8_t mk[40];
	size_t mkl = 0;
	char dev[QW_KSC_ID_MAX + 1];
	json_t *j = NULL;
	const char *s;
	int err;

	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/qw_ksc_air_XXXXXX");
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
	/* register, personalise (medium key) and fill tf-1 offline */
	if (call(f, "root", "POST", "/devices", "{\"id\":\"tf-1\",\"kind\":\"tf-card\",\"owner\":\"o\"}",
		 &j) != 201)
		return -1;
	s = json_string_value(json_object_get(j, "medium_key"));
	if (!s || qw_base64_decode(mk, sizeof(mk), &mkl, s, strlen(s)) || mkl != 32)
		return -1;
	json_decref(j);
	if (call(f, "root", "POST", "/devices/tf-1/fill", "{\"bits\":8192}", &j) != 201)
		return -1;
	s = json_string_value(json_object_get(j, "image"));
	if (!s || qw_ksc_image_open((const uint8_t *)s, strlen(s), mk, &f->fill, &f->nfill,
				    f->batch, dev))
		return -1;
	json_decref(j);
	qw_wipe(mk, sizeof(mk));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	qw_ksc_close(f->k);
	qw_free_secret(f->fill, f->nfill);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd))
		return -1;
	free(f);
	return 0;
}

/* ---- the two ends ---------------------------------------------------------- */

struct ap {
	struct qw_ksc *k;
	int fd, ret;
	struct qw_ksc_air_result res;
};

static void *ap_main(void *arg)
{
	struct ap *a = arg;
	struct qw_frame_io io;

	qw_frame_io_fd(&io, a->fd);
	a->ret = qw_ksc_air_serve(a->k, &io, "test", NULL, 0, &a->res);
	shutdown(a->fd, SHUT_RDWR);
	return NULL;
}

struct term {
	const char *device;
	uint64_t seed;
	const uint64_t *slots;     /* QW_KSC_AIR_SLOTS slot numbers of the fill */
	struct qw_refill_carry carry; /* offered when valid; then the next one */
	int hello_verdict, carry_verdict, slot_verdict, used_carry;
	uint8_t *keys;
	size_t n;
	struct qw_refill_result res;
};

static int wr(int fd, const uint8_t *p, size_t n)
{
	return write(fd, p, n) == (ssize_t)n ? 0 : -1;
}

static int rd1(int fd)
{
	uint8_t b;

	return read(fd, &b, 1) == 1 ? b : -1;
}

/* One refill: the terminal here, the KSC's end in a thread. Returns the
 * terminal's result (0: keys taken); *ap the KSC's. */
static int refill(struct fx *f, struct term *t, struct ap *ap)
{
	struct qw_refill_params p;
	struct qw_refill_carry next;
	struct qw_frame_io io;
	uint8_t hello[QW_KSC_AIR_HELLO_BYTES], pre[QW_KSC_AIR_PREAMBLE_BYTES];
	uint8_t psk[QW_REFILL_PSK_BYTES];
	int sv[2], ret = QW_EPERM;
	pthread_t th;

	memset(ap, 0, sizeof(*ap));
	memset(&next, 0, sizeof(next));
	t->keys = NULL;
	t->n = 0;
	t->hello_verdict = t->carry_verdict = t->slot_verdict = -1;
	t->used_carry = 0;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ap->k = f->k;
	ap->fd = sv[0];
	assert_int_equal(pthread_create(&th, NULL, ap_main, ap), 0);
	qw_refill_params_default(&p);
	p.air_seed = t->seed;
	assert_int_equal(qw_ksc_air_hello(t->device, t->seed, hello), 0);
	assert_int_equal(wr(sv[1], hello, sizeof(hello)), 0);
	t->hello_verdict = rd1(sv[1]);
	if (t->hello_verdict != 0)
		goto out;
	if (t->carry.valid) {
		memset(pre, 0, sizeof(pre));
		memcpy(pre, "QWRC1\n", 6);
		memcpy(pre + 6, t->carry.id, QW_REFILL_CARRY_ID_BYTES);
		assert_int_equal(wr(sv[1], pre, sizeof(pre)), 0);
		t->carry_verdict = rd1(sv[1]);
		t->used_carry = t->carry_verdict == 0;
		if (t->used_carry)
			memcpy(psk, t->carry.pool, sizeof(psk));
	}
	if (!t->used_carry) {
		memcpy(pre, "QWRF1\n", 6);
		for (size_t i = 0; i < QW_KSC_AIR_SLOTS; i++) {
			uint8_t *nm = pre + 6 + i * QW_KSC_AIR_NAME_BYTES;

			memcpy(nm, f->batch, 36);
			for (int b = 0; b < 8; b++)
				nm[36 + b] = (uint8_t)(t->slots[i] >> (56 - 8 * b));
			memcpy(psk + i * QW_KSC_SLOT_BYTES, f->fill + t->slots[i] * QW_KSC_SLOT_BYTES,
			       QW_KSC_SLOT_BYTES);
		}
		assert_int_equal(wr(sv[1], pre, sizeof(pre)), 0);
		t->slot_verdict = rd1(sv[1]);
		if (t->slot_verdict != 0)
			goto out;
	}
	qw_wipe(&t->carry, sizeof(t->carry));
	qw_frame_io_fd(&io, sv[1]);
	ret = qw_refill_terminal_carry(&p, &io, psk, sizeof(psk), WANT, &next, &t->keys, &t->n,
				       &t->res);
	if (!ret)
		t->carry = next;
out:
	shutdown(sv[1], SHUT_RDWR);
	pthread_join(th, NULL);
	close(sv[0]);
	close(sv[1]);
	qw_wipe(psk, sizeof(psk));
	qw_wipe(&next, sizeof(next));
	return ret;
}

/* Audit records with this action on this object. */
static size_t audit_count(struct fx *f, const char *action, const char *object)
{
	json_t *j, *r;
	size_t i, n = 0;
	uint64_t checked = 0, bad = 0;

	assert_int_equal(call(f, "root", "GET", "/audit", NULL, &j), 200);
	json_array_foreach(json_object_get(j, "records"), i, r)
		if (!strcmp(json_string_value(json_object_get(r, "action")), action) &&
		    !strcmp(json_string_value(json_object_get(r, "object")), object))
			n++;
	json_decref(j);
	assert_int_equal(qw_ksc_audit_verify(f->k, &checked, &bad), 0);
	return n;
}

static uint64_t outstanding(struct fx *f)
{
	json_t *j;
	uint64_t v;

	assert_int_equal(call(f, "root", "GET", "/devices/tf-1", NULL, &j), 200);
	v = (uint64_t)json_integer_value(json_object_get(j, "outstanding_bits"));
	json_decref(j);
	return v;
}

/* The KSC's stored material of key id equals what the terminal got. */
static void check_material(struct fx *f, const char *id, const uint8_t *keys, size_t n)
{
	sqlite3_stmt *st = NULL;
	uint8_t kek[32], *mat = NULL;
	size_t len = 0;

	assert_int_equal(ksc_device_kek(f->k, "tf-1", kek), 0);
	assert_int_equal(sqlite3_prepare_v2(f->k->db, "SELECT material FROM keys WHERE id = ?", -1,
					    &st, NULL), SQLITE_OK);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(ksc_open_sealed(kek, "key", id, sqlite3_column_blob(st, 0),
					 (size_t)sqlite3_column_bytes(st, 0), &mat, &len), 0);
	sqlite3_finalize(st);
	assert_int_equal(len, n);
	assert_memory_equal(mat, keys, n);
	qw_free_secret(mat, len);
	qw_wipe(kek, sizeof(kek));
}

static void check_key(struct fx *f, const char *id, const char *state, uint64_t bits)
{
	char path[96];
	json_t *j;

	snprintf(path, sizeof(path), "/keys/%s", id);
	assert_int_equal(call(f, "root", "GET", path, NULL, &j), 200);
	assert_string_equal(json_string_value(json_object_get(j, "state")), state);
	assert_string_equal(json_string_value(json_object_get(j, "owner")), "tf-1");
	assert_string_equal(json_string_value(json_object_get(j, "purpose")), "refill");
	assert_int_equal(json_integer_value(json_object_get(j, "size_bits")), bits);
	json_decref(j);
}

/* ---- tests --------------------------------------------------------------- */

static void test_hello(void **state)
{
	uint8_t h[QW_KSC_AIR_HELLO_BYTES];

	(void)state;
	assert_int_equal(qw_ksc_air_hello("tf-1", 0x0102030405060708ull, h), 0);
	assert_memory_equal(h, "QWRI1\ntf-1", 10);
	for (size_t i = 10; i < 6 + QW_KSC_ID_MAX; i++)
		assert_int_equal(h[i], 0);
	assert_int_equal(h[6 + QW_KSC_ID_MAX], 1);
	assert_int_equal(h[QW_KSC_AIR_HELLO_BYTES - 1], 8);
	assert_int_equal(qw_ksc_air_hello("", 1, h), QW_EINVAL);
	assert_int_equal(qw_ksc_air_hello("a b", 1, h), QW_EINVAL);
}

static void test_refills_from_the_ksc(void **state)
{
	struct fx *f = *state;
	static const uint64_t s1[QW_KSC_AIR_SLOTS] = { 1, 2, 3, 4, 5, 6 };
	static const uint64_t s0[QW_KSC_AIR_SLOTS] = { 0, 7, 8, 9, 10, 11 };
	static const uint64_t sdesc[QW_KSC_AIR_SLOTS] = { 8, 7, 9, 10, 11, 12 };
	static const uint64_t s7[QW_KSC_AIR_SLOTS] = { 7, 8, 9, 10, 11, 12 };
	struct term t = { 0 };
	struct ap ap;
	uint8_t fp1[32];
	uint64_t full = f->nfill * 8, before;
	char key1[37];

	/* a challenge takes slot 0 (the KSC's cursor moves to 1) */
	assert_int_equal(call(f, "root", "POST", "/auth/challenge", "{\"device\":\"tf-1\"}", NULL),
			 201);
	assert_int_equal(outstanding(f), full - 256);

	/* refill 1 on slots 1..6 */
	t.device = "tf-1";
	t.seed = 101;
	t.slots = s1;
	assert_int_equal(refill(f, &t, &ap), 0);
	assert_int_equal(ap.ret, 0);
	assert_int_equal(t.hello_verdict, 0);
	assert_int_equal(t.slot_verdict, 0);
	assert_int_equal(t.n * 8, WANT);
	assert_int_equal(ap.res.refill.delivered_bits, WANT);
	assert_int_equal(ap.res.slot_bits, QW_REFILL_PSK_BYTES * 8);
	assert_false(ap.res.carried);
	assert_string_equal(ap.res.device, "tf-1");
	assert_int_equal(strlen(ap.res.key_id), 36);
	assert_memory_equal(ap.res.refill.plkg_fingerprint, t.res.plkg_fingerprint, 32);
	check_material(f, ap.res.key_id, t.keys, t.n);
	check_key(f, ap.res.key_id, "distributed", WANT);
	assert_int_equal(audit_count(f, "key.generate", ap.res.key_id), 1);
	assert_int_equal(audit_count(f, "key.distribute", ap.res.key_id), 1);
	assert_int_equal(audit_count(f, "air.slots", "tf-1"), 1);
	assert_int_equal(outstanding(f), full - 256 - QW_REFILL_PSK_BYTES * 8);
	assert_true(t.carry.valid);
	memcpy(fp1, t.res.plkg_fingerprint, 32);
	snprintf(key1, sizeof(key1), "%s", ap.res.key_id);
	qw_free_secret(t.keys, t.n);

	/* refill 2 on the carried pool: no slot, a new PLKG key, a new key */
	t.seed = 102;
	before = outstanding(f);
	assert_int_equal(refill(f, &t, &ap), 0);
	assert_int_equal(ap.ret, 0);
	assert_int_equal(t.carry_verdict, 0);
	assert_true(ap.res.carried);
	assert_int_equal(ap.res.slot_bits, 0);
	assert_int_equal(outstanding(f), before);
	assert_memory_not_equal(t.res.plkg_fingerprint, fp1, 32);
	assert_string_not_equal(ap.res.key_id, key1);
	check_material(f, ap.res.key_id, t.keys, t.n);
	qw_free_secret(t.keys, t.n);

	/* replay of refill 1's slots (a terminal without a carried pool) */
	memset(&t.carry, 0, sizeof(t.carry));
	t.slots = s1;
	t.seed = 103;
	assert_int_not_equal(refill(f, &t, &ap), 0);
	assert_int_equal(t.slot_verdict, 1);
	assert_int_equal(ap.ret, QW_EPERM);
	assert_null(t.keys);
	assert_string_equal(ap.res.key_id, "");
	assert_int_equal(ap.res.refill.delivered_bits, 0);
	/* the slot the challenge took, and a descending pair, likewise */
	t.slots = s0;
	assert_int_not_equal(refill(f, &t, &ap), 0);
	assert_int_equal(t.slot_verdict, 1);
	assert_int_equal(ap.ret, QW_EPERM);
	t.slots = sdesc;
	assert_int_not_equal(refill(f, &t, &ap), 0);
	assert_int_equal(t.slot_verdict, 1);
	assert_int_equal(ap.ret, QW_EPERM);
	assert_int_equal(audit_count(f, "air.refuse", "tf-1"), 3);
	/* refused spends nothing: the cursor is where refill 1 left it */
	assert_int_equal(outstanding(f), before);

	/* a carried pool the KSC does not hold falls back to slots */
	memset(&t.carry, 0, sizeof(t.carry));
	t.carry.valid = 1;
	memset(t.carry.id, 0x33, sizeof(t.carry.id));
	t.slots = s7;
	t.seed = 104;
	assert_int_equal(refill(f, &t, &ap), 0);
	assert_int_equal(t.carry_verdict, 1);
	assert_false(ap.res.carried);
	assert_int_equal(outstanding(f), before - QW_REFILL_PSK_BYTES * 8);
	qw_free_secret(t.keys, t.n);
	/* only successful refills were distributed */
	{
		json_t *j, *r;
		size_t i, n = 0;

		assert_int_equal(call(f, "root", "GET", "/audit", NULL, &j), 200);
		json_array_foreach(json_object_get(j, "records"), i, r)
			n += !strcmp(json_string_value(json_object_get(r, "action")), "key.distribute");
		json_decref(j);
		assert_int_equal(n, 3);
	}
}

static void test_unknown_device_refused(void **state)
{
	struct fx *f = *state;
	static const uint64_t s[QW_KSC_AIR_SLOTS] = { 0, 1, 2, 3, 4, 5 };
	struct term t = { 0 };
	struct ap ap;
	uint64_t before = outstanding(f);

	t.device = "ghost";
	t.seed = 5;
	t.slots = s;
	assert_int_not_equal(refill(f, &t, &ap), 0);
	assert_int_equal(t.hello_verdict, 1);
	assert_int_equal(ap.ret, QW_EPERM);
	assert_null(t.keys);
	assert_int_equal(audit_count(f, "air.refuse", "ghost"), 1);
	/* a suspended device is refused too */
	assert_int_equal(call(f, "root", "POST", "/devices/tf-1/suspend", "{}", NULL), 200);
	t.device = "tf-1";
	assert_int_not_equal(refill(f, &t, &ap), 0);
	assert_int_equal(t.hello_verdict, 1);
	assert_int_equal(ap.ret, QW_EPERM);
	assert_int_equal(outstanding(f), before);
	assert_int_equal(audit_count(f, "air.refuse", "tf-1"), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello),
		cmocka_unit_test_setup_teardown(test_refills_from_the_ksc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_device_refused, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
