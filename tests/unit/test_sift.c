/* Sifting: the protocol on simulated batches (keys equal without errors,
 * identical statistics at both ends, QBER estimate and key error rate
 * against the model), the message formats (round trips, every truncation
 * and hand-crafted malformations rejected with QW_EPARSE), protocol
 * mismatches (QW_EPROTO), and the RAW -> SIFTED stage over an in-process
 * channel between two threads. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/chan_local.h"
#include "qwave/optics.h"
#include "qwave/rng.h"
#include "qwave/sift.h"

#define NC QW_OPTICS_NCLASS

static void assert_close(const char *what, double x, double mean, double sd, double k)
{
	if (!(fabs(x - mean) <= k * sd))
		fail_msg("%s: %.8g vs expected %.8g (sd %.3g)", what, x, mean, sd);
}

/* One simulated batch: both records of `pulses` pulses. */
static void batch(const struct qw_optics_config *c, uint64_t seed, uint64_t pulses,
		  struct qw_detections **alice, struct qw_detections **bob, double *e_signal)
{
	struct qw_rng *r = qw_rng_new_seeded(seed);
	struct qw_optics *o;
	int err;

	assert_non_null(r);
	o = qw_optics_new(c, r, &err);
	assert_non_null(o);
	*alice = qw_detections_new(QW_ROLE_ALICE);
	*bob = qw_detections_new(QW_ROLE_BOB);
	assert_non_null(*alice);
	assert_non_null(*bob);
	assert_int_equal(qw_optics_run(o, pulses, *alice, *bob), 0);
	if (e_signal)
		qw_optics_expected(o, QW_CLASS_SIGNAL, NULL, e_signal);
	qw_optics_free(o);
	qw_rng_free(r);
}

/* The four steps, every message through its wire encoding. */
static void run_protocol(const struct qw_sift_params *pa, const struct qw_sift_params *pb,
			 const struct qw_detections *alice, const struct qw_detections *bob,
			 struct qw_sift_result *ra, struct qw_sift_result *rb)
{
	struct qw_rng *r = qw_rng_new_seeded(99);
	struct qw_sift_bases b1 = { 0 }, b2 = { 0 };
	struct qw_sift_match m1 = { 0 }, m2 = { 0 };
	struct qw_sift_bits s1 = { 0 }, s2 = { 0 };
	uint8_t *w = NULL;
	size_t len = 0;

	assert_int_equal(qw_sift_bob_bases(bob, &b1), 0);
	assert_int_equal(qw_sift_bases_encode(&b1, &w, &len), 0);
	assert_int_equal(qw_sift_bases_decode(&b2, w, len), 0);
	free(w);
	assert_int_equal(qw_sift_alice_match(pa, r, alice, &b2, &m1), 0);
	assert_int_equal(qw_sift_match_encode(&m1, &w, &len), 0);
	assert_int_equal(qw_sift_match_decode(&m2, w, len), 0);
	free(w);
	assert_int_equal(qw_sift_bob_finish(pb, bob, &m2, &s1, rb), 0);
	assert_int_equal(qw_sift_bits_encode(&s1, &w, &len), 0);
	assert_int_equal(qw_sift_bits_decode(&s2, w, len), 0);
	free(w);
	assert_int_equal(qw_sift_alice_finish(pa, alice, &b2, &m1, &s2, ra), 0);
	qw_sift_bases_clear(&b1);
	qw_sift_bases_clear(&b2);
	qw_sift_match_clear(&m1);
	qw_sift_match_clear(&m2);
	qw_sift_bits_clear(&s1);
	qw_sift_bits_clear(&s2);
	qw_rng_free(r);
}

/* The signal-only layout ([MQZL]): key from the signal class, a 10% QBER
 * sample, every decoy/vacuum bit disclosed. */
static void params_signal_only(struct qw_sift_params *p)
{
	qw_sift_params_default(p);
	p->key_all_classes = 0;
	p->pe_fraction = 0.1;
}

/* e_det = 0, Y0 = 0, signal-only layout: the keys agree bit for bit, and
 * the bookkeeping adds up. */
static void test_no_errors(void **state)
{
	struct qw_optics_config c;
	struct qw_sift_params p;
	struct qw_detections *alice, *bob;
	struct qw_sift_result ra = { 0 }, rb = { 0 };
	const struct qw_sift_stats *st = &ra.st;
	uint64_t det = 0;
	int k;

	(void)state;
	qw_optics_config_default(&c);
	c.distance_km = 10.0;
	c.link.e_det = 0.0;
	c.link.y0 = 0.0;
	params_signal_only(&p);
	batch(&c, 1, 20000000ull, &alice, &bob, NULL);
	run_protocol(&p, &p, alice, bob, &ra, &rb);
	assert_memory_equal(&ra.st, &rb.st, sizeof(ra.st));
	assert_true(ra.key->nbits == rb.key->nbits);
	assert_true(ra.key->nbits == st->key_bits && st->key_bits > 10000);
	assert_true(qw_bitvec_equal(ra.key, rb.key));
	assert_true(ra.qber_estimate == 0.0 && rb.qber_estimate == 0.0);
	/* Z key: the signal Z bits are key or sample; everything else sifted
	 * is disclosed. */
	assert_true(st->key_bits + st->disclosed[0][QW_BASIS_Z] == st->sifted[0][QW_BASIS_Z]);
	for (k = 0; k < NC; k++) {
		assert_true(st->sent[k] == alice->sent[k]);
		assert_true(st->disclosed[k][QW_BASIS_X] == st->sifted[k][QW_BASIS_X]);
		if (k != QW_CLASS_SIGNAL)
			assert_true(st->disclosed[k][QW_BASIS_Z] == st->sifted[k][QW_BASIS_Z]);
		assert_true(st->errors[k][0] == 0 && st->errors[k][1] == 0);
		det += st->detected[k];
	}
	assert_true(det == bob->n);
	assert_true(st->first_pulse == 0 && st->end_pulse == 20000000ull);
	/* The sample is a pe_fraction share of the signal Z bits. */
	assert_close("sample fraction", (double)st->disclosed[0][QW_BASIS_Z],
		     0.1 * (double)st->sifted[0][QW_BASIS_Z],
		     sqrt(0.09 * (double)st->sifted[0][QW_BASIS_Z]), 4.0);
	qw_sift_result_clear(&ra);
	qw_sift_result_clear(&rb);
	qw_detections_free(alice);
	qw_detections_free(bob);
}

/* GYS link at 50 km: the key's error rate and the sample's estimate agree
 * with the model, and the gains in the statistics are the simulator's. */
static void test_gys_50km(void **state)
{
	struct qw_optics_config c;
	struct qw_sift_params p;
	struct qw_detections *alice, *bob;
	struct qw_sift_result ra = { 0 }, rb = { 0 };
	const struct qw_sift_stats *st = &ra.st;
	double e, kerr, n;

	(void)state;
	qw_optics_config_default(&c);
	params_signal_only(&p);
	p.pe_fraction = 0.2;
	batch(&c, 2, 1000000000ull, &alice, &bob, &e);
	run_protocol(&p, &p, alice, bob, &ra, &rb);
	assert_memory_equal(&ra.st, &rb.st, sizeof(ra.st));
	assert_true(ra.qber_estimate == rb.qber_estimate);
	n = (double)ra.key->nbits;
	kerr = (double)qw_bitvec_hamming(ra.key, rb.key) / n;
	assert_close("key error rate", kerr, e, sqrt(e * (1 - e) / n), 4.0);
	n = (double)st->disclosed[0][QW_BASIS_Z];
	assert_close("QBER estimate", ra.qber_estimate, e, sqrt(e * (1 - e) / n), 4.0);
	/* Test basis (X) of the signal: same model error rate. */
	n = (double)st->disclosed[0][QW_BASIS_X];
	assert_close("X-basis QBER", (double)st->errors[0][QW_BASIS_X] / n, e,
		     sqrt(e * (1 - e) / n), 4.0);
	print_message("  50 km, 1e9 pulses: %zu key bits, key QBER %.4f, estimate %.4f "
		      "(model %.4f)\n", ra.key->nbits, kerr, ra.qber_estimate, e);
	qw_sift_result_clear(&ra);
	qw_sift_result_clear(&rb);
	qw_detections_free(alice);
	qw_detections_free(bob);
}

/* The [LCWXZ] layout (the default): the Z bits of EVERY class are key,
 * every X bit is disclosed, nothing of Z is; without errors the keys agree
 * and the counts per class add up to the key. */
static void test_all_classes_no_errors(void **state)
{
	struct qw_optics_config c;
	struct qw_sift_params p;
	struct qw_detections *alice, *bob;
	struct qw_sift_result ra = { 0 }, rb = { 0 };
	const struct qw_sift_stats *st = &ra.st;
	uint64_t keysum = 0;

	(void)state;
	qw_optics_config_default(&c);
	c.distance_km = 10.0;
	c.link.e_det = 0.0;
	c.link.y0 = 0.0;
	c.p_z_alice = c.p_z_bob = 0.8;
	qw_sift_params_default(&p);
	assert_true(p.key_all_classes == 1 && p.pe_fraction == 0.0 && !p.key_both_bases);
	batch(&c, 21, 20000000ull, &alice, &bob, NULL);
	run_protocol(&p, &p, alice, bob, &ra, &rb);
	assert_memory_equal(&ra.st, &rb.st, sizeof(ra.st));
	assert_true(qw_bitvec_equal(ra.key, rb.key));
	for (int k = 0; k < NC; k++) {
		/* every class contributes key bits */
		assert_true(st->sifted[k][QW_BASIS_Z] > 0 || k == QW_CLASS_VACUUM);
		assert_int_equal(st->disclosed[k][QW_BASIS_Z], 0);
		assert_int_equal(st->disclosed[k][QW_BASIS_X], st->sifted[k][QW_BASIS_X]);
		keysum += st->sifted[k][QW_BASIS_Z];
	}
	assert_true(st->sifted[QW_CLASS_DECOY][QW_BASIS_Z] > 1000);
	assert_int_equal(st->key_bits, keysum);
	assert_int_equal(ra.key->nbits, keysum);
	assert_true(ra.qber_estimate == 0.0);
	/* Z:X sifted ratio is p_z^2 : (1 - p_z)^2 = 16 */
	{
		double z = 0, x = 0;
		for (int k = 0; k < NC; k++) {
			z += (double)st->sifted[k][QW_BASIS_Z];
			x += (double)st->sifted[k][QW_BASIS_X];
		}
		assert_close("Z/(Z+X)", z / (z + x), 16.0 / 17.0,
			     sqrt(16.0 / 289.0 / (z + x)), 4.0);
	}
	qw_sift_result_clear(&ra);
	qw_sift_result_clear(&rb);
	qw_detections_free(alice);
	qw_detections_free(bob);
}

/* [LCWXZ] layout on the GYS link at 50 km: the key mixes the classes in
 * proportion to their gains, so its error rate is the detection-weighted
 * mean of the classes' QBERs, and the estimate from the disclosed X bits of
 * every class (the same mixture: the basis is chosen independently of the
 * class) agrees with it. With pe_fraction > 0 the sample is drawn from the
 * Z bits of every class. */
static void test_all_classes_gys(void **state)
{
	struct qw_optics_config c;
	struct qw_sift_params p;
	struct qw_detections *alice, *bob;
	struct qw_sift_result ra = { 0 }, rb = { 0 };
	const struct qw_sift_stats *st = &ra.st;
	struct qw_rng *r = qw_rng_new_seeded(5);
	struct qw_optics *o;
	double g, e, num = 0, den = 0, emix, kerr, n, nx = 0, ex = 0;
	int err;

	(void)state;
	qw_optics_config_default(&c);
	c.p_z_alice = c.p_z_bob = 0.7;
	qw_sift_params_default(&p);
	assert_non_null(r);
	o = qw_optics_new(&c, r, &err);
	assert_non_null(o);
	for (int k = 0; k < NC; k++) {
		qw_optics_expected(o, k, &g, &e);
		num += c.p_class[k] * g * e;
		den += c.p_class[k] * g;
	}
	emix = num / den;
	qw_optics_free(o);
	qw_rng_free(r);
	batch(&c, 22, 300000000ull, &alice, &bob, NULL);
	run_protocol(&p, &p, alice, bob, &ra, &rb);
	assert_memory_equal(&ra.st, &rb.st, sizeof(ra.st));
	assert_true(ra.qber_estimate == rb.qber_estimate);
	n = (double)ra.key->nbits;
	kerr = (double)qw_bitvec_hamming(ra.key, rb.key) / n;
	assert_close("key error rate", kerr, emix, sqrt(emix * (1 - emix) / n), 4.0);
	for (int k = 0; k < NC; k++) {
		nx += (double)st->disclosed[k][QW_BASIS_X];
		ex += (double)st->errors[k][QW_BASIS_X];
	}
	assert_true(ra.qber_estimate == ex / nx);
	assert_close("QBER estimate", ra.qber_estimate, emix, sqrt(emix * (1 - emix) / nx), 4.0);
	/* the vacuum class errs half the time */
	n = (double)st->disclosed[QW_CLASS_VACUUM][QW_BASIS_X];
	assert_true(n > 0);
	print_message("  50 km, 3e8 pulses, p_z 0.7: %zu key bits (%llu decoy, %llu vacuum), "
		      "key QBER %.4f, X estimate %.4f (model %.4f)\n",
		      ra.key->nbits, (unsigned long long)st->sifted[1][QW_BASIS_Z],
		      (unsigned long long)st->sifted[2][QW_BASIS_Z], kerr, ra.qber_estimate, emix);
	qw_sift_result_clear(&ra);
	qw_sift_result_clear(&rb);

	/* A 20% sample of the Z bits of every class: the key is the rest. */
	p.pe_fraction = 0.2;
	run_protocol(&p, &p, alice, bob, &ra, &rb);
	n = 0;
	for (int k = 0; k < NC; k++) {
		assert_true(st->disclosed[k][QW_BASIS_Z] > 0 || k == QW_CLASS_VACUUM);
		n += (double)(st->sifted[k][QW_BASIS_Z] - st->disclosed[k][QW_BASIS_Z]);
	}
	assert_true(n == (double)st->key_bits);
	assert_close("sample fraction", (double)st->disclosed[QW_CLASS_DECOY][QW_BASIS_Z],
		     0.2 * (double)st->sifted[QW_CLASS_DECOY][QW_BASIS_Z],
		     sqrt(0.16 * (double)st->sifted[QW_CLASS_DECOY][QW_BASIS_Z]), 4.0);
	n = 0;
	e = 0;
	for (int k = 0; k < NC; k++) {
		n += (double)st->disclosed[k][QW_BASIS_Z];
		e += (double)st->errors[k][QW_BASIS_Z];
	}
	assert_true(ra.qber_estimate == e / n);

	/* Bob on the signal-only layout cannot place Alice's decoy key bits. */
	{
		struct qw_sift_params pl;
		struct qw_sift_bases b = { 0 };
		struct qw_sift_match m = { 0 };
		struct qw_sift_bits sb = { 0 };
		struct qw_sift_result rr = { 0 };
		struct qw_rng *r2 = qw_rng_new_seeded(6);

		params_signal_only(&pl);
		p.pe_fraction = 0.0;
		assert_int_equal(qw_sift_bob_bases(bob, &b), 0);
		assert_int_equal(qw_sift_alice_match(&p, r2, alice, &b, &m), 0);
		assert_int_equal(qw_sift_bob_finish(&pl, bob, &m, &sb, &rr), QW_EPROTO);
		assert_null(rr.key);
		qw_sift_bases_clear(&b);
		qw_sift_match_clear(&m);
		qw_rng_free(r2);
	}
	qw_sift_result_clear(&ra);
	qw_sift_result_clear(&rb);
	qw_detections_free(alice);
	qw_detections_free(bob);
}

/* Both bases as key: signal X bits join the key, sampled like Z. */
static void test_both_bases(void **state)
{
	struct qw_optics_config c;
	struct qw_sift_params p, pz;
	struct qw_detections *alice, *bob;
	struct qw_sift_result ra = { 0 }, rb = { 0 };
	struct qw_sift_bases b = { 0 };
	struct qw_sift_match m = { 0 };
	struct qw_sift_bits s = { 0 };
	struct qw_rng *r = qw_rng_new_seeded(3);
	const struct qw_sift_stats *st = &ra.st;
	uint64_t sifted_s;

	(void)state;
	qw_optics_config_default(&c);
	c.distance_km = 5.0;
	c.link.e_det = 0.0;
	c.link.y0 = 0.0;
	params_signal_only(&p);
	p.key_both_bases = 1;
	batch(&c, 3, 10000000ull, &alice, &bob, NULL);
	run_protocol(&p, &p, alice, bob, &ra, &rb);
	assert_true(qw_bitvec_equal(ra.key, rb.key));
	sifted_s = st->sifted[0][0] + st->sifted[0][1];
	assert_true(st->key_bits + st->disclosed[0][0] + st->disclosed[0][1] == sifted_s);
	assert_true(st->sifted[0][1] > 0 && st->disclosed[0][1] < st->sifted[0][1] / 2);

	/* The same batch when Bob expects a Z-only key: Alice left signal X
	 * bits undisclosed that Bob cannot place. */
	qw_sift_params_default(&pz);
	assert_int_equal(qw_sift_bob_bases(bob, &b), 0);
	assert_int_equal(qw_sift_alice_match(&p, r, alice, &b, &m), 0);
	qw_sift_result_clear(&rb);
	assert_int_equal(qw_sift_bob_finish(&pz, bob, &m, &s, &rb), QW_EPROTO);
	assert_null(rb.key);
	assert_null(s.bits);

	qw_sift_bases_clear(&b);
	qw_sift_match_clear(&m);
	qw_sift_result_clear(&ra);
	qw_sift_result_clear(&rb);
	qw_detections_free(alice);
	qw_detections_free(bob);
	qw_rng_free(r);
}

/* Records that do not belong together. */
static void test_protocol_mismatch(void **state)
{
	struct qw_sift_params p;
	struct qw_detections *alice = qw_detections_new(QW_ROLE_ALICE);
	struct qw_detections *bob = qw_detections_new(QW_ROLE_BOB);
	struct qw_sift_bases b = { 0 };
	struct qw_sift_match m = { 0 };
	struct qw_sift_bits s = { 0 };
	struct qw_sift_result res = { 0 };
	struct qw_rng *r = qw_rng_new_seeded(4);

	(void)state;
	qw_sift_params_default(&p);
	assert_int_equal(qw_detections_push(alice, 10, 1, 0, 0), 0);
	assert_int_equal(qw_detections_push(alice, 20, 0, 1, 1), 0);
	alice->end_pulse = 30;
	alice->sent[0] = 20;
	alice->sent[1] = 10;
	alice->first_pulse = 0;
	assert_int_equal(qw_detections_push(bob, 10, 1, 0, 0), 0);
	assert_int_equal(qw_detections_push(bob, 15, 0, 0, 0), 0);
	bob->first_pulse = 0;
	bob->end_pulse = 30;
	/* Bob reports index 15, of which Alice has no record. */
	assert_int_equal(qw_sift_bob_bases(bob, &b), 0);
	assert_int_equal(qw_sift_alice_match(&p, r, alice, &b, &m), QW_EPROTO);
	assert_null(m.flags);
	/* Other range. */
	b.index[1] = 20;
	b.end_pulse = 31;
	assert_int_equal(qw_sift_alice_match(&p, r, alice, &b, &m), QW_EPROTO);
	b.end_pulse = 30;
	assert_int_equal(qw_sift_alice_match(&p, r, alice, &b, &m), 0);
	assert_int_equal(m.n, 2);
	assert_true(m.sent[0] == 20 && m.sent[1] == 10);
	/* Bob's record has another count. */
	m.n = 1;
	assert_int_equal(qw_sift_bob_finish(&p, bob, &m, &s, &res), QW_EPROTO);
	m.n = 2;
	/* Alice's finish with a BITS reply of the wrong length. */
	s.ndisc = m.ndisc + 1;
	assert_int_equal(qw_sift_alice_finish(&p, alice, &b, &m, &s, &res), QW_EPROTO);
	s.ndisc = 0;
	qw_sift_bases_clear(&b);
	qw_sift_match_clear(&m);
	qw_detections_free(alice);
	qw_detections_free(bob);
	qw_rng_free(r);
}

/* ---- message formats --------------------------------------------------- */

static void random_bases(struct qw_rng *r, struct qw_sift_bases *m, size_t n)
{
	uint64_t idx;
	size_t i;

	memset(m, 0, sizeof(*m));
	m->first_pulse = qw_rng_below(r, 1000000);
	idx = m->first_pulse;
	m->n = n;
	m->index = malloc((n ? n : 1) * sizeof(uint64_t));
	m->basis = malloc(n ? n : 1);
	assert_non_null(m->index);
	assert_non_null(m->basis);
	for (i = 0; i < n; i++) {
		/* Gaps of every varint length, up to 2^40. */
		idx += (i ? 1 : 0) + (qw_rng_u64(r) >> (24 + qw_rng_below(r, 40)));
		m->index[i] = idx;
		m->basis[i] = (uint8_t)(qw_rng_u64(r) & 1);
	}
	m->end_pulse = idx + 1 + qw_rng_below(r, 3);
}

static void random_match(struct qw_rng *r, struct qw_sift_match *m, size_t n)
{
	size_t i;

	memset(m, 0, sizeof(*m));
	m->first_pulse = qw_rng_below(r, 1000);
	m->sent[0] = n + qw_rng_below(r, 1000);
	m->sent[1] = n + qw_rng_below(r, 1000);
	m->sent[2] = n;
	m->end_pulse = m->first_pulse + m->sent[0] + m->sent[1] + m->sent[2];
	m->n = n;
	m->flags = malloc(n ? n : 1);
	m->bits = malloc(n ? n : 1);
	assert_non_null(m->flags);
	assert_non_null(m->bits);
	for (i = 0; i < n; i++) {
		uint64_t v = qw_rng_u64(r);
		uint8_t f = (uint8_t)((v % 3) << QW_SIFT_F_CLASS_SHIFT);

		if (v & 8)
			f |= QW_SIFT_F_MATCH;
		if ((v & 16) && (f & QW_SIFT_F_MATCH)) {
			f |= QW_SIFT_F_DISCLOSE;
			m->bits[m->ndisc++] = (uint8_t)((v >> 5) & 1);
		}
		m->flags[i] = f;
	}
}

static void test_roundtrip(void **state)
{
	static const size_t sizes[] = { 0, 1, 2, 7, 8, 9, 15, 16, 17, 1000 };
	struct qw_rng *r = qw_rng_new_seeded(5);
	size_t t;

	(void)state;
	for (t = 0; t < sizeof(sizes) / sizeof(sizes[0]); t++) {
		struct qw_sift_bases b = { 0 }, b2 = { 0 };
		struct qw_sift_match m = { 0 }, m2 = { 0 };
		struct qw_sift_bits s = { 0 }, s2 = { 0 };
		uint8_t *w = NULL, *w2 = NULL;
		size_t len, len2, n = sizes[t];

		random_bases(r, &b, n);
		assert_int_equal(qw_sift_bases_encode(&b, &w, &len), 0);
		assert_int_equal(qw_sift_bases_decode(&b2, w, len), 0);
		assert_true(b2.n == n && b2.first_pulse == b.first_pulse &&
			    b2.end_pulse == b.end_pulse);
		if (n) {
			assert_memory_equal(b.index, b2.index, n * sizeof(uint64_t));
			assert_memory_equal(b.basis, b2.basis, n);
		}
		assert_int_equal(qw_sift_bases_encode(&b2, &w2, &len2), 0);
		assert_int_equal(len, len2);
		assert_memory_equal(w, w2, len);
		free(w);
		free(w2);

		random_match(r, &m, n);
		assert_int_equal(qw_sift_match_encode(&m, &w, &len), 0);
		assert_int_equal(qw_sift_match_decode(&m2, w, len), 0);
		assert_true(m2.n == n && m2.ndisc == m.ndisc && m2.end_pulse == m.end_pulse);
		assert_memory_equal(m.sent, m2.sent, sizeof(m.sent));
		if (n)
			assert_memory_equal(m.flags, m2.flags, n);
		if (m.ndisc)
			assert_memory_equal(m.bits, m2.bits, m.ndisc);
		free(w);

		s.ndisc = m.ndisc;
		s.bits = m.bits;
		assert_int_equal(qw_sift_bits_encode(&s, &w, &len), 0);
		assert_int_equal(qw_sift_bits_decode(&s2, w, len), 0);
		assert_true(s2.ndisc == s.ndisc);
		if (s.ndisc)
			assert_memory_equal(s.bits, s2.bits, s.ndisc);
		free(w);

		qw_sift_bases_clear(&b);
		qw_sift_bases_clear(&b2);
		qw_sift_match_clear(&m);
		qw_sift_match_clear(&m2);
		qw_sift_bits_clear(&s2);
	}
	qw_rng_free(r);
}

enum { K_BASES, K_MATCH, K_BITS };

static int decode(int kind, const uint8_t *in, size_t len)
{
	struct qw_sift_bases b;
	struct qw_sift_match m;
	struct qw_sift_bits s;
	int ret;

	switch (kind) {
	case K_BASES:
		ret = qw_sift_bases_decode(&b, in, len);
		assert_true(ret != 0 || b.n <= len);
		qw_sift_bases_clear(&b);
		return ret;
	case K_MATCH:
		ret = qw_sift_match_decode(&m, in, len);
		qw_sift_match_clear(&m);
		return ret;
	default:
		ret = qw_sift_bits_decode(&s, in, len);
		qw_sift_bits_clear(&s);
		return ret;
	}
}

/* Every proper prefix, the message plus a byte, and a wrong version or
 * kind byte are all rejected. */
static void reject_damaged(int kind, const uint8_t *w, size_t len)
{
	uint8_t *c = malloc(len + 1);
	size_t i;

	assert_non_null(c);
	assert_int_equal(decode(kind, w, len), 0);
	for (i = 0; i < len; i++)
		assert_int_equal(decode(kind, w, i), QW_EPARSE);
	memcpy(c, w, len);
	c[len] = 0;
	assert_int_equal(decode(kind, c, len + 1), QW_EPARSE);
	c[0] ^= 1;
	assert_int_equal(decode(kind, c, len), QW_EPARSE);
	c[0] ^= 1;
	c[1] = (uint8_t)(c[1] % 3 + 1);
	assert_int_equal(decode(kind, c, len), QW_EPARSE);
	free(c);
}

static void put_u64(uint8_t *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static void test_malformed(void **state)
{
	struct qw_rng *r = qw_rng_new_seeded(6);
	struct qw_sift_bases b = { 0 };
	struct qw_sift_match m = { 0 };
	struct qw_sift_bits s = { 0 };
	uint8_t *w = NULL;
	size_t len;

	(void)state;
	/* Generic damage on each message kind. */
	random_bases(r, &b, 37);
	assert_int_equal(qw_sift_bases_encode(&b, &w, &len), 0);
	reject_damaged(K_BASES, w, len);
	free(w);
	random_match(r, &m, 37);
	assert_int_equal(qw_sift_match_encode(&m, &w, &len), 0);
	reject_damaged(K_MATCH, w, len);
	free(w);
	s.ndisc = m.ndisc;
	s.bits = m.bits;
	assert_int_equal(qw_sift_bits_encode(&s, &w, &len), 0);
	reject_damaged(K_BITS, w, len);
	free(w);
	qw_sift_bases_clear(&b);
	qw_sift_match_clear(&m);

	{
		/* BASES: version 1, kind 1, first, end, n, gaps, bases. */
		uint8_t ok[] = { 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10,
				 0, 0, 0, 2, 3, 5, 0x40 };
		uint8_t t[sizeof(ok) + 1];

		assert_int_equal(qw_sift_bases_decode(&b, ok, sizeof(ok)), 0);
		assert_true(b.n == 2 && b.index[0] == 3 && b.index[1] == 9);
		assert_true(b.basis[0] == 0 && b.basis[1] == 1);
		qw_sift_bases_clear(&b);
		/* Index 9 outside a range ending at 9. */
		memcpy(t, ok, sizeof(ok));
		t[17] = 9;
		assert_int_equal(decode(K_BASES, t, sizeof(ok)), QW_EPARSE);
		/* first > end. */
		memcpy(t, ok, sizeof(ok));
		t[9] = 11;
		assert_int_equal(decode(K_BASES, t, sizeof(ok)), QW_EPARSE);
		/* Non-zero padding after the two basis bits. */
		memcpy(t, ok, sizeof(ok));
		t[24] = 0x41;
		assert_int_equal(decode(K_BASES, t, sizeof(ok)), QW_EPARSE);
		/* n larger than the bytes that follow. */
		memcpy(t, ok, sizeof(ok));
		t[18] = 0x7f;
		assert_int_equal(decode(K_BASES, t, sizeof(ok)), QW_EPARSE);
		/* Non-minimal varint: 5 as 0x85 0x00. */
		memcpy(t, ok, 23);
		t[23] = 0x85;
		t[24] = 0x00;
		t[25] = 0x40;
		assert_int_equal(decode(K_BASES, t, sizeof(ok) + 1), QW_EPARSE);
		/* A two-byte gap of 133 (0x85 0x01) puts index 1 at 137,
		 * past the end; with the range extended to 200 it parses. */
		t[23] = 0x85;
		t[24] = 0x01;
		assert_int_equal(decode(K_BASES, t, sizeof(ok) + 1), QW_EPARSE);
		put_u64(t + 10, 200);
		assert_int_equal(decode(K_BASES, t, sizeof(ok) + 1), 0);
	}
	{
		/* MATCH: version, kind 2, first 0, end 4, sent 2/1/1, n 3,
		 * flags, ndisc 1, bits. */
		uint8_t ok[] = { 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4,
				 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1,
				 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3,
				 (QW_SIFT_F_MATCH | QW_SIFT_F_DISCLOSE) << 4 | 0x0,
				 (2 << QW_SIFT_F_CLASS_SHIFT | QW_SIFT_F_MATCH) << 4,
				 0, 0, 0, 1, 0x80 };
		uint8_t t[sizeof(ok)];
		size_t fl = 46; /* first flags byte */

		assert_int_equal(qw_sift_match_decode(&m, ok, sizeof(ok)), 0);
		assert_true(m.n == 3 && m.ndisc == 1 && m.bits[0] == 1);
		assert_true(m.flags[0] == (QW_SIFT_F_MATCH | QW_SIFT_F_DISCLOSE));
		qw_sift_match_clear(&m);
		/* Class 3. */
		memcpy(t, ok, sizeof(ok));
		t[fl] = (uint8_t)(t[fl] | (3 << QW_SIFT_F_CLASS_SHIFT) << 4);
		assert_int_equal(decode(K_MATCH, t, sizeof(ok)), QW_EPARSE);
		/* DISCLOSE without MATCH. */
		memcpy(t, ok, sizeof(ok));
		t[fl] = QW_SIFT_F_DISCLOSE << 4;
		assert_int_equal(decode(K_MATCH, t, sizeof(ok)), QW_EPARSE);
		/* ndisc disagrees with the flags. */
		memcpy(t, ok, sizeof(ok));
		t[51] = 2;
		assert_int_equal(decode(K_MATCH, t, sizeof(ok)), QW_EPARSE);
		/* Padding nibble set. */
		memcpy(t, ok, sizeof(ok));
		t[fl + 1] |= 0x01;
		assert_int_equal(decode(K_MATCH, t, sizeof(ok)), QW_EPARSE);
		/* Pulses per class do not add up to the range. */
		memcpy(t, ok, sizeof(ok));
		t[25] = 3;
		assert_int_equal(decode(K_MATCH, t, sizeof(ok)), QW_EPARSE);
		/* More detections of class 2 than class-2 pulses. */
		memcpy(t, ok, sizeof(ok));
		t[fl] = (uint8_t)((2 << QW_SIFT_F_CLASS_SHIFT | QW_SIFT_F_MATCH |
				   QW_SIFT_F_DISCLOSE) << 4);
		assert_int_equal(decode(K_MATCH, t, sizeof(ok)), QW_EPARSE);
		/* Non-zero padding in the disclosed bits. */
		memcpy(t, ok, sizeof(ok));
		t[sizeof(ok) - 1] = 0x81;
		assert_int_equal(decode(K_MATCH, t, sizeof(ok)), QW_EPARSE);
	}
	{
		uint8_t ok[] = { 1, 3, 0, 0, 0, 9, 0xff, 0x80 };
		uint8_t t[sizeof(ok)];

		assert_int_equal(decode(K_BITS, ok, sizeof(ok)), 0);
		memcpy(t, ok, sizeof(ok));
		t[7] = 0xc0;
		assert_int_equal(decode(K_BITS, t, sizeof(ok)), QW_EPARSE);
		t[5] = 0xff; /* claims far more bits than follow */
		assert_int_equal(decode(K_BITS, t, sizeof(ok)), QW_EPARSE);
	}
	/* The encoders refuse what the decoders would reject. */
	{
		uint64_t idx[2] = { 5, 5 };
		uint8_t bas[2] = { 0, 1 };
		struct qw_sift_bases bad = { 0, 10, 2, idx, bas };

		assert_int_equal(qw_sift_bases_encode(&bad, &w, &len), QW_EINVAL);
	}
	qw_rng_free(r);
}

/* ---- the stage --------------------------------------------------------- */

struct end {
	struct qw_detections *det;
	struct qw_sift_stats st;
	int stats_called;
};

static struct qw_detections *fetch(void *ctx, uint64_t id)
{
	struct end *e = ctx;
	struct qw_detections *d = e->det;

	(void)id;
	e->det = NULL;
	return d;
}

static void on_stats(void *ctx, uint64_t id, const struct qw_sift_stats *st)
{
	struct end *e = ctx;

	assert_true(id == 42);
	e->st = *st;
	e->stats_called = 1;
}

struct side {
	const struct qw_stage *stage;
	void *state;
	struct qw_key_block *blk;
	struct qw_distill_chan chan;
	enum qw_stage_result res;
};

static void *side_run(void *arg)
{
	struct side *s = arg;

	s->res = s->stage->process(s->state, s->blk, &s->chan);
	return NULL;
}

/* One block through the stage at both ends; returns the two results. */
static void stage_pair(const struct qw_optics_config *c, const struct qw_sift_params *sp,
		       uint64_t seed, struct side *sa, struct side *sb, struct end *ea,
		       struct end *eb)
{
	struct qw_sift_stage_params pa, pb;
	struct qw_rng *r = qw_rng_new_seeded(seed + 1000);
	struct qw_chan_local *ch;
	pthread_t th;

	memset(ea, 0, sizeof(*ea));
	memset(eb, 0, sizeof(*eb));
	batch(c, seed, 50000000ull, &ea->det, &eb->det, NULL);
	memset(&pa, 0, sizeof(pa));
	pa.sift = *sp;
	pa.rng = r;
	pa.ctx = ea;
	pa.fetch = fetch;
	pa.stats = on_stats;
	pb = pa;
	pb.rng = NULL;
	pb.ctx = eb;
	memset(sa, 0, sizeof(*sa));
	memset(sb, 0, sizeof(*sb));
	sa->stage = sb->stage = &qw_sift_stage;
	assert_int_equal(qw_sift_stage.init(&sa->state, &pa), 0);
	assert_int_equal(qw_sift_stage.init(&sb->state, &pb), 0);
	sa->blk = qw_block_new(42, QW_ROLE_ALICE, NULL);
	sb->blk = qw_block_new(42, QW_ROLE_BOB, NULL);
	assert_non_null(sa->blk);
	assert_non_null(sb->blk);
	ch = qw_chan_local_pair_new(&sa->chan, &sb->chan);
	assert_non_null(ch);
	assert_int_equal(pthread_create(&th, NULL, side_run, sa), 0);
	side_run(sb);
	assert_int_equal(pthread_join(th, NULL), 0);
	qw_sift_stage.free(sa->state);
	qw_sift_stage.free(sb->state);
	assert_int_equal(qw_chan_local_pending(ch), 0);
	qw_chan_local_pair_free(ch);
	qw_rng_free(r);
}

static void test_stage(void **state)
{
	struct qw_optics_config c;
	struct qw_sift_params p;
	struct side sa, sb;
	struct end ea, eb;
	void *st = NULL;

	(void)state;
	qw_optics_config_default(&c);
	c.distance_km = 20.0;
	c.link.e_det = 0.0;
	c.link.y0 = 0.0;
	qw_sift_params_default(&p);
	p.qber_abort = 0.11;
	stage_pair(&c, &p, 7, &sa, &sb, &ea, &eb);
	assert_int_equal(sa.res, QW_STAGE_FORWARD);
	assert_int_equal(sb.res, QW_STAGE_FORWARD);
	assert_int_equal(sa.blk->state, QW_BLOCK_SIFTED);
	assert_int_equal(sb.blk->state, QW_BLOCK_SIFTED);
	assert_true(qw_bitvec_equal(sa.blk->key, sb.blk->key) && sa.blk->key->nbits > 1000);
	assert_true(sa.blk->qber_estimate == 0.0 && sb.blk->qber_estimate == 0.0);
	assert_true(ea.stats_called && eb.stats_called);
	assert_memory_equal(&ea.st, &eb.st, sizeof(ea.st));
	assert_true(ea.st.key_bits == sa.blk->key->nbits);
	/* A block that is not RAW is refused. */
	assert_int_equal(qw_sift_stage.init(&st, &(struct qw_sift_stage_params){
		.sift = p, .fetch = fetch }), 0);
	assert_int_equal(qw_sift_stage.process(st, sa.blk, &sa.chan), QW_STAGE_ERROR);
	qw_sift_stage.free(st);
	qw_block_free(sa.blk);
	qw_block_free(sb.blk);
	assert_int_equal(qw_sift_stage.init(&st, NULL), QW_EINVAL);

	/* Eve on every pulse: both ends drop the block on the QBER estimate. */
	c.eve_fraction = 1.0;
	stage_pair(&c, &p, 8, &sa, &sb, &ea, &eb);
	assert_int_equal(sa.res, QW_STAGE_DROP);
	assert_int_equal(sb.res, QW_STAGE_DROP);
	assert_true(sa.blk->qber_estimate > 0.2 && sa.blk->qber_estimate == sb.blk->qber_estimate);
	assert_non_null(strstr(sa.blk->drop_reason, "QBER"));
	print_message("  stage under intercept-resend: %s\n", sa.blk->drop_reason);
	qw_block_free(sa.blk);
	qw_block_free(sb.blk);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_errors),
		cmocka_unit_test(test_gys_50km),
		cmocka_unit_test(test_all_classes_no_errors),
		cmocka_unit_test(test_all_classes_gys),
		cmocka_unit_test(test_both_bases),
		cmocka_unit_test(test_protocol_mismatch),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_stage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
