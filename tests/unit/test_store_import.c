/* qw_store_key_import: keys whose material came by relay (or from the
 * origin's generator). Round trip through deliver (the material comes back
 * exactly, once), AVAILABLE keys reserve then deliver, erase, the
 * all-or-none transaction on a duplicate id, argument checks, persistence
 * across a reopen, and that imports touch no pool (no pool bits booked). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "qwave/rng.h"
#include "qwave/store.h"

struct fx {
	char dir[64];
	char db[96];
	uint8_t mk[QW_STORE_MASTER_KEY_BYTES];
	struct qw_store *s;
	struct qw_rng *rng;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct qw_store_opts o = { .sync = QW_STORE_SYNC_NORMAL };
	int err = 0;

	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/qw_import_XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->db, sizeof(f->db), "%s/s.db", f->dir);
	f->rng = qw_rng_new_system();
	if (!f->rng || qw_rng_bytes(f->rng, f->mk, sizeof(f->mk)))
		return -1;
	f->s = qw_store_open(f->db, f->mk, &o, &err);
	if (!f->s)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char p[128];

	qw_store_close(f->s);
	unlink(f->db);
	snprintf(p, sizeof(p), "%s-wal", f->db);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", f->db);
	unlink(p);
	rmdir(f->dir);
	qw_rng_free(f->rng);
	free(f);
	return 0;
}

static void fresh_ids(struct qw_uuid *ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		assert_int_equal(qw_uuid_generate(&ids[i]), 0);
}

static void test_reserved_round_trip(void **state)
{
	struct fx *f = *state;
	const char *slaves[] = { "sae-d", "sae-e" };
	struct qw_store_key_req rq = { .peer = "node-4", .size_bits = 256, .master_sae = "sae-a",
				       .slave_saes = slaves, .n_slaves = 2, .expires = 0 };
	uint8_t mat[5 * 32], got[5 * 32];
	struct qw_store_key_info infos[5];
	struct qw_store_stats st;
	struct qw_uuid ids[5];
	size_t len = 0;

	fresh_ids(ids, 5);
	assert_int_equal(qw_rng_bytes(f->rng, mat, sizeof(mat)), 0);
	rq.key_ids = ids;
	assert_int_equal(qw_store_key_import(f->s, &rq, 5, mat, sizeof(mat)), 0);
	for (int i = 0; i < 5; i++) {
		struct qw_store_key_info in;

		assert_int_equal(qw_store_key_info(f->s, &ids[i], &in), 0);
		assert_int_equal(in.state, QW_STORE_RESERVED);
		assert_string_equal(in.peer, "node-4");
		assert_string_equal(in.master_sae, "sae-a");
		assert_int_equal(in.n_slaves, 2);
		assert_string_equal(in.slave_saes[1], "sae-e");
		assert_int_equal(in.size_bits, 256);
	}
	/* no pool is involved: nothing booked as taken or keyed */
	assert_int_equal(qw_store_stats(f->s, "node-4", &st), 0);
	assert_int_equal(st.bits_in, 0);
	assert_int_equal(st.bits_keyed, 0);
	assert_int_equal(st.bits_taken, 0);
	assert_int_equal(st.keys[QW_STORE_RESERVED], 5);
	/* a slave fetches them: the same material, in id order */
	assert_int_equal(qw_store_key_deliver_many(f->s, ids, 5, "sae-e", got, sizeof(got), &len,
						   infos),
			 0);
	assert_int_equal(len, sizeof(mat));
	assert_memory_equal(got, mat, sizeof(mat));
	/* once only */
	assert_int_equal(qw_store_key_deliver(f->s, &ids[0], "sae-d", got, sizeof(got), NULL),
			 QW_ESTATE);
	/* an imported id can never come back */
	assert_int_equal(qw_store_key_import(f->s, &rq, 5, mat, sizeof(mat)), QW_EEXIST);
}

static void test_available_reserve_erase(void **state)
{
	struct fx *f = *state;
	const char *slaves[] = { "sae-c" };
	struct qw_store_key_req rq = { .peer = "node-9", .size_bits = 128, .expires = 4102444800 };
	uint8_t mat[3 * 16], got[16];
	struct qw_store_key_info in;
	struct qw_uuid ids[3];

	fresh_ids(ids, 3);
	assert_int_equal(qw_rng_bytes(f->rng, mat, sizeof(mat)), 0);
	rq.key_ids = ids;
	assert_int_equal(qw_store_key_import(f->s, &rq, 3, mat, sizeof(mat)), 0);
	assert_int_equal(qw_store_key_info(f->s, &ids[1], &in), 0);
	assert_int_equal(in.state, QW_STORE_AVAILABLE);
	assert_int_equal(in.expires, 4102444800);
	/* stock keys: reserved later for a pair, then delivered */
	assert_int_equal(qw_store_key_reserve(f->s, &ids[1], "sae-a", slaves, 1), 0);
	assert_int_equal(qw_store_key_deliver(f->s, &ids[1], "sae-c", got, sizeof(got), NULL), 0);
	assert_memory_equal(got, mat + 16, 16);
	/* erase: gone for good */
	assert_int_equal(qw_store_key_erase(f->s, &ids[2]), 0);
	assert_int_equal(qw_store_key_info(f->s, &ids[2], &in), 0);
	assert_int_equal(in.state, QW_STORE_ERASED);
	assert_int_equal(qw_store_key_reserve(f->s, &ids[2], "sae-a", slaves, 1), QW_ESTATE);
}

static void test_all_or_none(void **state)
{
	struct fx *f = *state;
	const char *slaves[] = { "sae-b" };
	struct qw_store_key_req rq = { .peer = "node-2", .size_bits = 64, .master_sae = "sae-a",
				       .slave_saes = slaves, .n_slaves = 1 };
	uint8_t mat[4 * 8];
	struct qw_store_key_info in;
	struct qw_uuid ids[4];

	fresh_ids(ids, 4);
	assert_int_equal(qw_rng_bytes(f->rng, mat, sizeof(mat)), 0);
	rq.key_ids = ids;
	assert_int_equal(qw_store_key_import(f->s, &rq, 1, mat, 8), 0);
	/* ids[0] again as the third key: nothing of this call stays */
	ids[2] = ids[0];
	assert_int_equal(qw_store_key_import(f->s, &rq, 4, mat, sizeof(mat)), QW_EEXIST);
	assert_int_equal(qw_store_key_info(f->s, &ids[1], &in), QW_ENOTFOUND);
	assert_int_equal(qw_store_key_info(f->s, &ids[3], &in), QW_ENOTFOUND);
	assert_int_equal(qw_store_key_info(f->s, &ids[0], &in), 0);
	assert_int_equal(in.state, QW_STORE_RESERVED);
}

static void test_arguments(void **state)
{
	struct fx *f = *state;
	const char *slaves[] = { "sae-b" };
	struct qw_store_key_req rq = { .peer = "node-2", .size_bits = 64, .master_sae = "sae-a",
				       .slave_saes = slaves, .n_slaves = 1 };
	uint8_t mat[16] = { 0 };
	struct qw_uuid ids[2];

	fresh_ids(ids, 2);
	/* key ids are required: the relay chose them */
	assert_int_equal(qw_store_key_import(f->s, &rq, 2, mat, 16), QW_EINVAL);
	rq.key_ids = ids;
	/* material must be count * size exactly */
	assert_int_equal(qw_store_key_import(f->s, &rq, 2, mat, 15), QW_EINVAL);
	assert_int_equal(qw_store_key_import(f->s, &rq, 1, mat, 16), QW_EINVAL);
	assert_int_equal(qw_store_key_import(f->s, &rq, 0, mat, 0), QW_EINVAL);
	rq.size_bits = 60;
	assert_int_equal(qw_store_key_import(f->s, &rq, 2, mat, 15), QW_EINVAL);
	rq.size_bits = 64;
	/* a master needs slaves, stock keys have none */
	rq.n_slaves = 0;
	assert_int_equal(qw_store_key_import(f->s, &rq, 2, mat, 16), QW_EINVAL);
	rq.master_sae = NULL;
	rq.n_slaves = 1;
	assert_int_equal(qw_store_key_import(f->s, &rq, 2, mat, 16), QW_EINVAL);
	rq.master_sae = "sae-a";
	rq.peer = "";
	assert_int_equal(qw_store_key_import(f->s, &rq, 2, mat, 16), QW_EINVAL);
	rq.peer = "node-2";
	rq.expires = -1;
	assert_int_equal(qw_store_key_import(f->s, &rq, 2, mat, 16), QW_EINVAL);
	rq.expires = 0;
	assert_int_equal(qw_store_key_import(f->s, &rq, 2, mat, 16), 0);
}

static void test_survives_reopen(void **state)
{
	struct fx *f = *state;
	const char *slaves[] = { "sae-b" };
	struct qw_store_key_req rq = { .peer = "node-3", .size_bits = 512, .master_sae = "sae-a",
				       .slave_saes = slaves, .n_slaves = 1 };
	struct qw_store_opts o = { .sync = QW_STORE_SYNC_NORMAL };
	uint8_t mat[2 * 64], got[2 * 64];
	struct qw_uuid ids[2];
	size_t len = 0;
	int err = 0;

	fresh_ids(ids, 2);
	assert_int_equal(qw_rng_bytes(f->rng, mat, sizeof(mat)), 0);
	rq.key_ids = ids;
	assert_int_equal(qw_store_key_import(f->s, &rq, 2, mat, sizeof(mat)), 0);
	qw_store_close(f->s);
	f->s = qw_store_open(f->db, f->mk, &o, &err);
	assert_non_null(f->s);
	assert_int_equal(qw_store_key_deliver_many(f->s, ids, 2, "sae-a", got, sizeof(got), &len,
						   NULL),
			 0);
	assert_memory_equal(got, mat, sizeof(mat));
	/* imported keys of a distant node never appear in a neighbour's
	 * resynchronisation list */
	{
		struct qw_uuid *l = NULL;
		size_t n = 0;

		assert_int_equal(qw_store_key_resync_list(f->s, "node-2", &l, &n), 0);
		for (size_t i = 0; i < n; i++)
			for (int j = 0; j < 2; j++)
				assert_int_not_equal(qw_uuid_compare(&l[i], &ids[j]), 0);
		free(l);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reserved_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_available_reserve_erase, setup, teardown),
		cmocka_unit_test_setup_teardown(test_all_or_none, setup, teardown),
		cmocka_unit_test_setup_teardown(test_arguments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_survives_reopen, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
