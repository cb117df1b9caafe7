/* PLKG end to end: the per-end quantizer plan, the length stage's leakage
 * accounting, the in-process distillation chain and short simulated
 * sessions (3 km/h, static with and without the remedy, Eve at d = 0). */
#include <complex.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/plkg.h"
#include "qwave/plkg_quant.h"
#include "qwave/rng.h"

static void test_params(void **state)
{
	struct qw_plkg_params p;
	enum qw_plkg_reconcile r;

	(void)state;
	qw_plkg_params_default(&p);
	assert_int_equal(qw_plkg_params_check(&p), 0);
	assert_int_equal(p.reconcile, QW_PLKG_REC_CASCADE);
	p.window = 0;
	assert_int_equal(qw_plkg_params_check(&p), QW_EINVAL);
	qw_plkg_params_default(&p);
	p.level_scale = -1;
	assert_int_equal(qw_plkg_params_check(&p), QW_EINVAL);
	qw_plkg_params_default(&p);
	p.eps_pa = 0;
	assert_int_equal(qw_plkg_params_check(&p), QW_EINVAL);
	qw_plkg_params_default(&p);
	p.remedy = QW_PLKG_REMEDY_RANDOM_WEIGHTS;
	p.n_elements = 0;
	assert_int_equal(qw_plkg_params_check(&p), QW_EINVAL);
	assert_int_equal(qw_plkg_reconcile_parse("bch", &r), 0);
	assert_int_equal(r, QW_PLKG_REC_BCH);
	assert_string_equal(qw_plkg_reconcile_name(r), "bch");
	assert_int_equal(qw_plkg_reconcile_parse("turbo", &r), QW_EINVAL);
}

/* secret = floor(H - disclosed - 2 log2(1/eps)), never negative, at most
 * the key length. */
static void test_length_stage(void **state)
{
	void *st;
	double eps = 1e-10;
	struct qw_key_block *b = qw_block_new(1, QW_ROLE_ALICE, qw_bitvec_new(1000));
	struct qw_distill_chan chan = { NULL, NULL, NULL };

	(void)state;
	assert_int_equal(qw_plkg_length_stage.init(&st, &eps), 0);
	b->state = QW_BLOCK_VERIFIED;
	b->sec_n_single = 900.5;
	b->disclosed_bits = 200;
	assert_int_equal(qw_plkg_length_stage.process(st, b, &chan), QW_STAGE_FORWARD);
	assert_int_equal(b->secret_bits, (uint64_t)floor(900.5 - 200 - 2 * log2(1e10)));
	b->disclosed_bits = 850; /* more disclosed than the entropy: 0, not negative */
	assert_int_equal(qw_plkg_length_stage.process(st, b, &chan), QW_STAGE_FORWARD);
	assert_int_equal(b->secret_bits, 0);
	b->sec_n_single = 5000; /* never longer than the key */
	b->disclosed_bits = 0;
	assert_int_equal(qw_plkg_length_stage.process(st, b, &chan), QW_STAGE_FORWARD);
	assert_int_equal(b->secret_bits, 1000);
	b->state = QW_BLOCK_CORRECTED;
	assert_int_equal(qw_plkg_length_stage.process(st, b, &chan), QW_STAGE_ERROR);
	qw_plkg_length_stage.free(st);
	qw_block_free(b);
}

static void make_pair(struct qw_rng *r, size_t n, double p, struct qw_bitvec **a,
		      struct qw_bitvec **b)
{
	*a = qw_bitvec_new(n);
	for (size_t i = 0; i < n; i++)
		qw_bitvec_set(*a, i, (int)(qw_rng_u64(r) & 1));
	*b = qw_bitvec_dup(*a);
	for (size_t i = 0; i < n; i++)
		if (qw_rng_uniform(r) < p)
			qw_bitvec_flip(*b, i);
}

/* The chain in process, Cascade and BCH, many seeds: delivered keys equal,
 * lengths from the accounting, a block whose entropy is all disclosed is
 * dropped at privacy amplification. */
static void test_distill_local(void **state)
{
	struct qw_rng *r = qw_rng_new_seeded(99);

	(void)state;
	for (int rec = 0; rec < 2; rec++)
		for (int seed = 0; seed < 5; seed++) {
			struct qw_plkg_params p;
			struct qw_bitvec *a, *b, *rec_bits = qw_bitvec_new(0);
			struct qw_key_block *ba, *bb;
			struct qw_plkg_block_result res;
			double h = 3500;

			qw_plkg_params_default(&p);
			qw_plkg_params_for(&p, rec ? QW_PLKG_REC_BCH : QW_PLKG_REC_CASCADE);
			make_pair(r, 6000, 0.03, &a, &b);
			ba = qw_block_new((uint64_t)seed + 1, QW_ROLE_ALICE, a);
			bb = qw_block_new((uint64_t)seed + 1, QW_ROLE_BOB, b);
			ba->qber_estimate = bb->qber_estimate = 0.036;
			ba->sec_n_single = bb->sec_n_single = h;
			assert_int_equal(qw_plkg_distill_local(&p, ba, bb, rec_bits, &res), 0);
			if (!res.delivered) {
				/* only a detected reconciliation failure may drop */
				assert_true(strstr(res.drop_reason, "BCH") != NULL ||
					    strstr(res.drop_reason, "verification") != NULL);
			} else {
				assert_true(res.keys_equal);
				assert_true(qw_bitvec_equal(ba->key, bb->key));
				assert_int_equal(res.disclosed_bits, res.ec_bits + p.tag_bits);
				assert_int_equal(res.secret_bits,
						 (uint64_t)floor(h - (double)res.disclosed_bits -
								 2 * log2(1 / p.eps_pa)));
				assert_int_equal(ba->key->nbits, res.secret_bits);
				assert_int_equal(rec_bits->nbits, 6000);
			}
			qw_block_free(ba);
			qw_block_free(bb);

			/* all entropy disclosed: dropped, both sides, no key */
			if (seed > 1) {
				qw_bitvec_free(rec_bits);
				continue;
			}
			make_pair(r, 6000, 0.03, &a, &b);
			ba = qw_block_new(100, QW_ROLE_ALICE, a);
			bb = qw_block_new(100, QW_ROLE_BOB, b);
			ba->qber_estimate = bb->qber_estimate = 0.036;
			ba->sec_n_single = bb->sec_n_single = 300;
			assert_int_equal(qw_plkg_distill_local(&p, ba, bb, NULL, &res), 0);
			assert_false(res.delivered);
			assert_int_equal(res.secret_bits, 0);
			qw_block_free(ba);
			qw_block_free(bb);
			qw_bitvec_free(rec_bits);
		}
	qw_rng_free(r);
}

/* One end's plan and windows on the simulated channel: Alice and Bob agree
 * on most bits, Eve at lambda/2 does not; the entropy estimate never
 * exceeds the raw bits; the levels are balanced. */
static void test_end_windows(void **state)
{
	struct qw_plkg_params p;
	struct qw_plkg_channel *ch;
	struct qw_plkg_end *ea, *eb, *ee;
	struct qw_bitvec *ba = qw_bitvec_new(0), *bb = qw_bitvec_new(0), *be = qw_bitvec_new(0),
			 *ben = qw_bitvec_new(0);
	double complex A[52], B[52], E[52], EB[52];
	size_t ones = 0;

	(void)state;
	qw_plkg_params_default(&p);
	p.window = 64;
	assert_int_equal(qw_plkg_channel_new(&ch, &p.chan, 3), 0);
	assert_int_equal(qw_plkg_end_new(&ea, &p), 0);
	assert_int_equal(qw_plkg_end_new(&eb, &p), 0);
	assert_int_equal(qw_plkg_end_new(&ee, &p), 0);
	assert_true(qw_plkg_end_window_bits(ea) > 0);
	assert_true(qw_plkg_end_window_entropy(ea) <= (double)qw_plkg_end_window_bits(ea));
	assert_true(qw_plkg_end_window_entropy(ea) > 0.5 * (double)qw_plkg_end_window_bits(ea));
	assert_int_equal(qw_plkg_end_modes(ea), 6);
	for (int w = 0; w < 8; w++)
		for (unsigned t = 0; t < p.window; t++) {
			struct qw_plkg_probe pr = { 0, A, B, E, EB };
			int ra, rb;
			qw_plkg_probe_next(ch, &pr);
			ra = qw_plkg_end_push(ea, A);
			rb = qw_plkg_end_push(eb, B);
			assert_int_equal(qw_plkg_end_push(ee, E), ra);
			assert_int_equal(ra, rb);
			if (ra == 1) {
				double h;
				assert_int_equal(qw_plkg_end_push(ea, A), QW_ESTATE);
				assert_int_equal(qw_plkg_end_quantize(ea, ba, NULL, &h), 0);
				assert_true(h > 0);
				assert_int_equal(qw_plkg_end_quantize(eb, bb, NULL, NULL), 0);
				assert_int_equal(qw_plkg_end_quantize(ee, be, ben, NULL), 0);
			}
		}
	assert_int_equal(ba->nbits, 8 * qw_plkg_end_window_bits(ea));
	assert_int_equal(bb->nbits, ba->nbits);
	{
		double kdr = (double)qw_bitvec_hamming(ba, bb) / ba->nbits;
		double ekdr = (double)qw_bitvec_hamming(ba, be) / ba->nbits;
		double ekdr_n = (double)qw_bitvec_hamming(ba, ben) / ba->nbits;
		assert_true(kdr < 0.08);
		assert_true(kdr < 2.5 * qw_plkg_end_model_kdr(ea));
		assert_true(ekdr > 0.4 && ekdr_n > 0.4);
	}
	ones = qw_bitvec_popcount(ba);
	assert_true(fabs((double)ones / ba->nbits - 0.5) < 0.03);
	qw_bitvec_free(ba);
	qw_bitvec_free(bb);
	qw_bitvec_free(be);
	qw_bitvec_free(ben);
	qw_plkg_end_free(ea);
	qw_plkg_end_free(eb);
	qw_plkg_end_free(ee);
	qw_plkg_end_free(NULL);
	qw_plkg_channel_free(ch);
}

/* The per-end block builder and the KDR tracker a terminal and an access
 * point use over a socket (docs/plkg.md 6.4). */
static void test_blocks_and_kdr(void **state)
{
	struct qw_plkg_params p;
	struct qw_plkg_channel *ch;
	struct qw_plkg_end *ea, *eb;
	struct qw_key_block *ka = NULL, *kb = NULL;
	struct qw_plkg_kdr k;
	double complex A[52], B[52];
	size_t wb;
	unsigned windows = 0;

	(void)state;
	qw_plkg_params_default(&p);
	p.window = 64;
	assert_int_equal(qw_plkg_channel_new(&ch, &p.chan, 4), 0);
	assert_int_equal(qw_plkg_end_new(&ea, &p), 0);
	assert_int_equal(qw_plkg_end_new(&eb, &p), 0);
	wb = qw_plkg_end_window_bits(ea);
	while (windows < 3) {
		struct qw_plkg_probe pr = { 0, A, B, NULL, NULL };
		qw_plkg_probe_next(ch, &pr);
		assert_true(qw_plkg_end_push(eb, B) >= 0);
		if (qw_plkg_end_push(ea, A) == 1) {
			assert_int_equal(qw_plkg_end_quantize(ea, NULL, NULL, NULL), 0);
			assert_int_equal(qw_plkg_end_quantize(eb, NULL, NULL, NULL), 0);
			windows++;
		}
	}
	assert_int_equal(qw_plkg_end_pending(ea)->nbits, 3 * wb);
	/* default block_bits (16384) not reached: no block unless flushed */
	assert_int_equal(qw_plkg_end_take_block(ea, 1, QW_ROLE_ALICE, 0.05, 0, &ka), 0);
	assert_null(ka);
	assert_int_equal(qw_plkg_end_take_block(ea, 1, QW_ROLE_ALICE, 0.05, 1, &ka), 0);
	assert_int_equal(qw_plkg_end_take_block(eb, 1, QW_ROLE_BOB, 0.05, 1, &kb), 0);
	assert_non_null(ka);
	assert_non_null(kb);
	assert_int_equal(ka->key->nbits, 3 * wb);
	assert_int_equal(kb->key->nbits, 3 * wb);
	assert_true(fabs(ka->sec_n_single - 3 * qw_plkg_end_window_entropy(ea)) < 1e-6);
	assert_true(fabs(ka->sec_n_single - kb->sec_n_single) < 1e-9);
	assert_true(ka->qber_estimate == 0.05 && ka->state == QW_BLOCK_RAW);
	assert_int_equal(qw_plkg_end_pending(ea)->nbits, 0);
	qw_block_free(ka);
	assert_int_equal(qw_plkg_end_take_block(ea, 2, QW_ROLE_ALICE, 0.05, 1, &ka), 0);
	assert_null(ka); /* nothing pending: no block even when flushed */
	qw_block_free(kb);

	qw_plkg_kdr_init(&k, &p, 0.05);
	assert_true(fabs(k.est - (1.2 * 0.05 + 0.002)) < 1e-12);
	qw_plkg_kdr_update(&k, 10000, 1, 0.04);
	assert_true(fabs(k.est - (1.2 * 0.04 + 0.002)) < 1e-12);
	qw_plkg_kdr_update(&k, 10000, 1, 0.02);
	assert_true(fabs(k.est - (1.2 * 0.03 + 0.002)) < 1e-12);
	qw_plkg_kdr_update(&k, 10000, 0, 0);
	assert_true(fabs(k.est - 1.5 * (1.2 * 0.03 + 0.002)) < 1e-12);
	p.kdr_initial = 0.2;
	qw_plkg_kdr_init(&k, &p, 0.05);
	assert_true(k.est == 0.2);

	qw_plkg_end_free(ea);
	qw_plkg_end_free(eb);
	qw_plkg_channel_free(ch);
}

/* 3 km/h, 20 dB, 100 probes/s, Eve at lambda/2: a short run meets modest
 * versions of the targets (docs/plkg.md has the full-length figures). */
static void test_session_walking(void **state)
{
	struct qw_plkg_params p;
	struct qw_plkg_sim_result r;

	(void)state;
	qw_plkg_params_default(&p);
	p.window = 128; /* the bound over 256 probes costs less than over 384 */
	p.block_bits = 4096;
	assert_int_equal(qw_plkg_simulate(&p, 7, 2000, NULL, NULL, &r), 0);
	assert_int_equal(r.probes, 2000);
	assert_true(r.blocks >= 3);
	assert_int_equal(r.blocks_delivered, r.blocks);
	assert_int_equal(r.blocks_equal, r.blocks_delivered);
	assert_true(r.keys_equal);
	assert_int_equal(r.final_errors, 0);
	assert_true(r.kdr_raw > 0 && r.kdr_raw < 0.08);
	assert_true(r.eve_kdr > 0.4);
	assert_true(r.kgr_bits_per_probe > 4.27);
	/* accounting: key <= entropy estimate - everything disclosed */
	assert_true((double)r.key_bits <= r.entropy_bits - (double)r.leak_bits);
	assert_true(r.entropy_bits <= (double)r.raw_bits);
	assert_true(r.kgr_bits_per_probe < r.bound_bits_per_probe);
	assert_int_equal(r.key->nbits, r.key_bits);
	assert_true(r.reconciled->nbits <= r.raw_bits);
	qw_plkg_sim_result_free(&r);
	qw_plkg_sim_result_free(NULL);
}

/* Honest failures: a static terminal without the remedy, and Eve at the
 * terminal's position, leave no secret key. */
static void test_session_no_key(void **state)
{
	struct qw_plkg_params p;
	struct qw_plkg_sim_result r;

	(void)state;
	qw_plkg_params_default(&p);
	p.window = 64;
	p.block_bits = 2048;
	p.chan.speed_kmh = 0;
	assert_int_equal(qw_plkg_simulate(&p, 3, 1500, NULL, NULL, &r), 0);
	assert_int_equal(r.key_bits, 0);
	assert_true(r.entropy_bits < 0.05 * (double)r.probes);
	qw_plkg_sim_result_free(&r);

	qw_plkg_params_default(&p);
	p.window = 64;
	p.block_bits = 2048;
	p.chan.eve_distance_m = 0;
	assert_int_equal(qw_plkg_simulate(&p, 3, 1500, NULL, NULL, &r), 0);
	assert_int_equal(r.key_bits, 0);
	assert_true(r.eve_kdr < 2 * r.kdr_raw + 0.02);
	qw_plkg_sim_result_free(&r);
}

/* The quasi-static remedy: key from a still terminal, Eve at lambda/2 near
 * 0.5, and the informed-Eve budget grows like log(probes). */
static void test_session_remedy(void **state)
{
	struct qw_plkg_params p;
	struct qw_plkg_sim_result r1, r2;

	(void)state;
	qw_plkg_params_default(&p);
	p.window = 64;
	p.block_bits = 4096;
	p.chan.speed_kmh = 0;
	p.remedy = QW_PLKG_REMEDY_RANDOM_WEIGHTS;
	assert_int_equal(qw_plkg_simulate(&p, 5, 600, NULL, NULL, &r1), 0);
	assert_true(r1.key_bits > 256);
	assert_true(r1.keys_equal);
	assert_true(r1.eve_kdr > 0.4);
	assert_true(r1.informed_eve_bound_bits > 0);
	assert_int_equal(qw_plkg_simulate(&p, 5, 1200, NULL, NULL, &r2), 0);
	assert_true(r2.informed_eve_bound_bits < 1.2 * r1.informed_eve_bound_bits);
	assert_true(r2.key_bits > r1.key_bits);
	qw_plkg_sim_result_free(&r1);
	qw_plkg_sim_result_free(&r2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_params),
		cmocka_unit_test(test_length_stage),
		cmocka_unit_test(test_distill_local),
		cmocka_unit_test(test_end_windows),
		cmocka_unit_test(test_blocks_and_kdr),
		cmocka_unit_test(test_session_walking),
		cmocka_unit_test(test_session_no_key),
		cmocka_unit_test(test_session_remedy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
