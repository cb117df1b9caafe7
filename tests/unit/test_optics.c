/* Statistical tests of the simulated decoy-state BB84 optics: gains and
 * QBERs per intensity class against the model of Ma, Qi, Zhao, Lo, PRA 72,
 * 012326 (2005) (qw_decoy_model) at 0, 50 and 100 km, the intercept-resend
 * attack (QBER 25%), pulses per class, afterpulses, the consistency of
 * Alice's and Bob's records, and the exact binomial sampler. Every
 * statistical check is a 4-standard-deviation bound (binomial standard
 * deviation of the estimate); the seeds are fixed, so runs are
 * reproducible. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "qwave/estimate.h"
#include "qwave/optics.h"
#include "qwave/rng.h"

#define NC QW_OPTICS_NCLASS

struct tally {
	uint64_t sifted[NC]; /* detections with matching bases */
	uint64_t errors[NC]; /* ... where Bob's bit differs from Alice's */
	uint64_t sifted_z_errors;
	uint64_t sifted_z;
	uint64_t detections;
};

/* Run `pulses` pulses in chunks, checking the two records against each
 * other, and count errors per class. */
static void simulate(struct qw_optics *o, uint64_t pulses, uint64_t chunk, struct tally *t)
{
	struct qw_detections *a = qw_detections_new(QW_ROLE_ALICE);
	struct qw_detections *b = qw_detections_new(QW_ROLE_BOB);

	assert_non_null(a);
	assert_non_null(b);
	memset(t, 0, sizeof(*t));
	while (pulses) {
		uint64_t c = pulses < chunk ? pulses : chunk;
		size_t i;

		assert_int_equal(qw_optics_run(o, c, a, b), 0);
		assert_int_equal(a->n, b->n);
		assert_true(a->first_pulse == b->first_pulse && a->end_pulse == b->end_pulse);
		assert_true(a->end_pulse - a->first_pulse == c);
		assert_true(a->sent[0] + a->sent[1] + a->sent[2] == c);
		for (i = 0; i < a->n; i++) {
			assert_true(a->index[i] == b->index[i]);
			assert_true(a->index[i] >= a->first_pulse && a->index[i] < a->end_pulse);
			assert_true(i == 0 || a->index[i] > a->index[i - 1]);
			assert_true(a->bit[i] <= 1 && b->bit[i] <= 1 && a->cls[i] < NC);
			if (a->basis[i] != b->basis[i])
				continue;
			t->sifted[a->cls[i]]++;
			t->errors[a->cls[i]] += a->bit[i] != b->bit[i];
			if (a->basis[i] == QW_BASIS_Z) {
				t->sifted_z++;
				t->sifted_z_errors += a->bit[i] != b->bit[i];
			}
		}
		t->detections += a->n;
		qw_detections_reset(a);
		qw_detections_reset(b);
		pulses -= c;
	}
	qw_detections_free(a);
	qw_detections_free(b);
}

/* |x - mean| within k standard deviations sd. */
static void assert_close(const char *what, double x, double mean, double sd, double k)
{
	if (!(fabs(x - mean) <= k * sd))
		fail_msg("%s: %.8g vs expected %.8g (sd %.3g, %.2f sd off)", what, x, mean, sd,
			 (x - mean) / sd);
}

static struct qw_optics *make(const struct qw_optics_config *c, struct qw_rng *r)
{
	int err = -1;
	struct qw_optics *o = qw_optics_new(c, r, &err);

	assert_int_equal(err, 0);
	assert_non_null(o);
	return o;
}

/* Gains and QBERs per class within 4 sd of [MQZL] at one distance. */
static void check_distance(double km, uint64_t pulses, uint64_t seed)
{
	struct qw_optics_config c;
	struct qw_optics_stats st;
	struct qw_rng *r = qw_rng_new_seeded(seed);
	struct qw_optics *o;
	struct tally t;
	char what[96];
	int k;

	assert_non_null(r);
	qw_optics_config_default(&c);
	c.distance_km = km;
	o = make(&c, r);
	simulate(o, pulses, 100000000ull, &t);
	qw_optics_get_stats(o, &st);
	assert_true(st.pulses == pulses);
	for (k = 0; k < NC; k++) {
		double q_ma, e_ma, q_ex, e_ex, qhat, ehat;

		assert_int_equal(qw_decoy_model(&c.link, km, c.intensity[k], &q_ma, &e_ma), 0);
		qw_optics_expected(o, k, &q_ex, &e_ex);
		/* The simulator's exact expectation differs from [MQZL]'s
		 * by the neglected Y0 (1 - e^{-eta mu}) term only. */
		assert_true(fabs(q_ex - q_ma) <= c.link.y0 * q_ma);
		qhat = (double)st.detections[k] / (double)st.sent[k];
		snprintf(what, sizeof(what), "gain class %d at %.0f km", k, km);
		assert_close(what, qhat, q_ma, sqrt(q_ma * (1 - q_ma) / (double)st.sent[k]), 4.0);
		ehat = (double)t.errors[k] / (double)t.sifted[k];
		snprintf(what, sizeof(what), "QBER class %d at %.0f km", k, km);
		assert_close(what, ehat, e_ma, sqrt(e_ma * (1 - e_ma) / (double)t.sifted[k]), 4.0);
		assert_close(what, ehat, e_ex, sqrt(e_ex * (1 - e_ex) / (double)t.sifted[k]), 4.0);
		print_message("  %5.0f km class %d: gain %.4e (model %.4e), QBER %.4f (model %.4f), "
			      "%llu detections\n", km, k, qhat, q_ma, ehat, e_ma,
			      (unsigned long long)st.detections[k]);
	}
	qw_optics_free(o);
	qw_rng_free(r);
}

static void test_model_0km(void **state)
{
	(void)state;
	check_distance(0.0, 100000000ull, 1);
}

static void test_model_50km(void **state)
{
	clock_t t0 = clock();
	double secs;

	(void)state;
	check_distance(50.0, 1000000000ull, 2);
	secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
	/* Informational only (no timing assertion): the speed quoted in
	 * docs/qkd-sim.md includes these checks of the records. */
	print_message("  50 km: 1e9 pulses in %.2f s CPU (%.3g pulses/s incl. checks)\n", secs,
		      secs > 0 ? 1e9 / secs : 0.0);
}

static void test_model_100km(void **state)
{
	(void)state;
	check_distance(100.0, 10000000000ull, 3);
}

/* Intercept-resend on every pulse: 25% QBER on sifted bits (e_det = 0,
 * Y0 = 0), with every gain unchanged. */
static void test_eve_full(void **state)
{
	struct qw_optics_config c;
	struct qw_optics_stats st;
	struct qw_rng *r = qw_rng_new_seeded(4);
	struct qw_optics *o;
	struct tally t;
	uint64_t s = 0, e = 0;
	double ehat, q;
	int k;

	(void)state;
	qw_optics_config_default(&c);
	c.distance_km = 25.0;
	c.link.e_det = 0.0;
	c.link.y0 = 0.0;
	c.p_class[QW_CLASS_SIGNAL] = 0.8;
	c.p_class[QW_CLASS_DECOY] = 0.2;
	c.p_class[QW_CLASS_VACUUM] = 0.0;
	c.eve_fraction = 1.0;
	o = make(&c, r);
	simulate(o, 200000000ull, 50000000ull, &t);
	qw_optics_get_stats(o, &st);
	for (k = 0; k < NC; k++) {
		s += t.sifted[k];
		e += t.errors[k];
	}
	ehat = (double)e / (double)s;
	assert_close("QBER under full intercept-resend", ehat, 0.25, sqrt(0.25 * 0.75 / (double)s),
		     4.0);
	assert_true(st.attacked == t.detections);
	assert_int_equal(qw_decoy_model(&c.link, c.distance_km, c.intensity[0], &q, NULL), 0);
	assert_close("gain under attack", (double)st.detections[0] / (double)st.sent[0], q,
		     sqrt(q * (1 - q) / (double)st.sent[0]), 4.0);
	print_message("  intercept-resend on all pulses: QBER %.4f over %llu sifted bits\n", ehat,
		      (unsigned long long)s);
	qw_optics_free(o);
	qw_rng_free(r);
}

/* Partial attack on the GYS link: QBER follows the exact expectation
 * (1 - f) e_det + f (1/4 + e_det/2) for the light, plus the background. */
static void test_eve_partial(void **state)
{
	struct qw_optics_config c;
	struct qw_optics_stats st;
	struct qw_rng *r = qw_rng_new_seeded(5);
	struct qw_optics *o;
	struct tally t;
	double e_ex, ehat, e_honest;

	(void)state;
	qw_optics_config_default(&c);
	c.distance_km = 20.0;
	c.eve_fraction = 0.3;
	o = make(&c, r);
	simulate(o, 200000000ull, 100000000ull, &t);
	qw_optics_get_stats(o, &st);
	qw_optics_expected(o, QW_CLASS_SIGNAL, NULL, &e_ex);
	assert_int_equal(qw_decoy_model(&c.link, c.distance_km, c.intensity[0], NULL, &e_honest), 0);
	assert_true(e_ex > e_honest + 0.05);
	ehat = (double)t.errors[0] / (double)t.sifted[0];
	assert_close("QBER under 30% intercept-resend", ehat, e_ex,
		     sqrt(e_ex * (1 - e_ex) / (double)t.sifted[0]), 4.0);
	assert_close("attacked fraction", (double)st.attacked / (double)t.detections, 0.3,
		     sqrt(0.3 * 0.7 / (double)t.detections), 4.0);
	qw_optics_free(o);
	qw_rng_free(r);
}

/* Pulses per class follow the class probabilities, over odd chunk sizes. */
static void test_pulses_per_class(void **state)
{
	static const uint64_t chunks[] = { 1, 7, 1000, 123456789, 3, 876543211 };
	struct qw_optics_config c;
	struct qw_optics_stats st;
	struct qw_rng *r = qw_rng_new_seeded(6);
	struct qw_optics *o;
	struct qw_detections *a = qw_detections_new(QW_ROLE_ALICE);
	uint64_t total = 0, sent[NC] = { 0 };
	size_t i;
	int k;

	(void)state;
	qw_optics_config_default(&c);
	c.distance_km = 80.0;
	c.p_class[0] = 0.5;
	c.p_class[1] = 0.3;
	c.p_class[2] = 0.2;
	o = make(&c, r);
	for (i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		assert_int_equal(qw_optics_run(o, chunks[i], a, NULL), 0);
		assert_true(a->end_pulse - a->first_pulse == chunks[i]);
		assert_true(a->sent[0] + a->sent[1] + a->sent[2] == chunks[i]);
		for (k = 0; k < NC; k++)
			sent[k] += a->sent[k];
		total += chunks[i];
		qw_detections_reset(a);
	}
	qw_optics_get_stats(o, &st);
	assert_true(st.pulses == total);
	assert_true(fabs(st.seconds - (double)total / c.pulse_rate_hz) < 1e-9);
	for (k = 0; k < NC; k++) {
		double n = (double)total, p = c.p_class[k];

		assert_true(st.sent[k] == sent[k]);
		assert_true(st.detections[k] <= st.sent[k]);
		assert_close("pulses per class", (double)sent[k], n * p, sqrt(n * p * (1 - p)), 4.0);
	}
	qw_detections_free(a);
	qw_optics_free(o);
	qw_rng_free(r);
}

/* No misalignment, no background: every sifted bit agrees, in both bases,
 * and the basis choices follow p_z. */
static void test_no_errors(void **state)
{
	struct qw_optics_config c;
	struct qw_rng *r = qw_rng_new_seeded(7);
	struct qw_optics *o;
	struct qw_optics_stats st;
	struct tally t;
	uint64_t sifted = 0;
	int k;

	(void)state;
	qw_optics_config_default(&c);
	c.distance_km = 10.0;
	c.link.e_det = 0.0;
	c.link.y0 = 0.0;
	c.p_z_alice = 0.9;
	c.p_z_bob = 0.8;
	o = make(&c, r);
	simulate(o, 20000000ull, 20000000ull, &t);
	qw_optics_get_stats(o, &st);
	for (k = 0; k < NC; k++) {
		assert_true(t.errors[k] == 0);
		sifted += t.sifted[k];
	}
	assert_true(st.detections[QW_CLASS_VACUUM] == 0);
	assert_true(st.dark_clicks == 0 && st.double_clicks == 0);
	assert_true(t.sifted_z > 0 && t.sifted_z_errors == 0);
	/* P(bases agree) = 0.9 * 0.8 + 0.1 * 0.2 = 0.74. */
	assert_close("sifting ratio", (double)sifted / (double)t.detections, 0.74,
		     sqrt(0.74 * 0.26 / (double)t.detections), 4.0);
	qw_optics_free(o);
	qw_rng_free(r);
}

/* Each clicked detector afterpulses in the next gate with probability p. */
static void test_afterpulse(void **state)
{
	struct qw_optics_config c;
	struct qw_rng *r = qw_rng_new_seeded(8);
	struct qw_optics *o;
	struct qw_optics_stats st;
	struct tally t;
	double p = 0.05, n, mean, var;

	(void)state;
	qw_optics_config_default(&c);
	c.distance_km = 0.0;
	c.link.y0 = 0.0;
	c.afterpulse = p;
	o = make(&c, r);
	simulate(o, 20000000ull, 1000000ull, &t);
	qw_optics_get_stats(o, &st);
	/* Without background a click is in one detector, so a double click is
	 * an afterpulse meeting the next pulse's click in the other detector. */
	assert_true(st.double_clicks <= st.afterpulses);
	/* Each detection but the last triggers an afterpulse at the next gate
	 * (which is then a detection) with probability p per clicked
	 * detector; the last one's would fall past the end. */
	n = (double)(t.detections - 1 - st.double_clicks);
	mean = n * p + (double)st.double_clicks * (1 - (1 - p) * (1 - p));
	var = n * p * (1 - p) + (double)st.double_clicks * (2 * p - p * p) * (1 - p) * (1 - p);
	assert_close("afterpulses", (double)st.afterpulses, mean, sqrt(var), 4.0);
	qw_optics_free(o);
	qw_rng_free(r);
}

static void test_config_and_state(void **state)
{
	struct qw_optics_config c, bad;
	struct qw_rng *r = qw_rng_new_seeded(9);
	struct qw_optics *o;
	struct qw_detections *a = qw_detections_new(QW_ROLE_ALICE);
	struct qw_detections *b = qw_detections_new(QW_ROLE_BOB);
	int err = 0;

	(void)state;
	qw_optics_config_default(&c);
	assert_int_equal(qw_optics_config_check(&c), 0);
	bad = c;
	bad.p_class[0] = 0.5;
	assert_int_equal(qw_optics_config_check(&bad), QW_EINVAL);
	assert_null(qw_optics_new(&bad, r, &err));
	assert_int_equal(err, QW_EINVAL);
	bad = c;
	bad.intensity[1] = -0.1;
	assert_int_equal(qw_optics_config_check(&bad), QW_EINVAL);
	bad = c;
	bad.afterpulse = 1.0;
	assert_int_equal(qw_optics_config_check(&bad), QW_EINVAL);
	bad = c;
	bad.eve_fraction = 1.5;
	assert_int_equal(qw_optics_config_check(&bad), QW_EINVAL);
	bad = c;
	bad.link.y0 = 1.0;
	assert_int_equal(qw_optics_config_check(&bad), QW_EINVAL);
	bad = c;
	bad.distance_km = NAN;
	assert_int_equal(qw_optics_config_check(&bad), QW_EINVAL);

	o = make(&c, r);
	/* Records swapped: wrong roles. */
	assert_int_equal(qw_optics_run(o, 1000, b, a), QW_ESTATE);
	assert_int_equal(qw_optics_run(o, 1000000, a, b), 0);
	assert_int_equal(qw_optics_run(o, 1000000, a, b), 0);
	assert_true(a->first_pulse == 0 && a->end_pulse == 2000000);
	/* A record that ends elsewhere cannot be extended... */
	qw_detections_reset(b);
	assert_int_equal(qw_detections_push(b, 5, 1, 0, 0), 0);
	assert_int_equal(qw_optics_run(o, 10, a, b), QW_ESTATE);
	/* ...but an empty one starts at the simulator's position. */
	qw_detections_reset(b);
	qw_detections_reset(a);
	assert_int_equal(qw_optics_run(o, 10, a, b), 0);
	assert_true(a->first_pulse == 2000000 && b->end_pulse == 2000010);
	/* push keeps indices increasing. */
	assert_int_equal(qw_detections_push(a, 2000010, 0, 0, 0), 0);
	assert_int_equal(qw_detections_push(a, 2000010, 0, 0, 0), QW_EINVAL);
	assert_int_equal(qw_detections_push(a, 2000011, 2, 0, 0), QW_EINVAL);
	assert_int_equal(qw_detections_push(a, 2000011, 1, 0, 3), QW_EINVAL);

	qw_detections_free(a);
	qw_detections_free(b);
	qw_optics_free(o);
	qw_optics_free(NULL);
	qw_detections_free(NULL);
	qw_rng_free(r);
}

/* ---- the binomial sampler ---------------------------------------------- */

static double log_pmf(uint64_t n, double p, uint64_t k)
{
	return lgamma((double)n + 1) - lgamma((double)k + 1) - lgamma((double)(n - k) + 1) +
	       (double)k * log(p) + (double)(n - k) * log1p(-p);
}

/* Chi-square of the sampled histogram against the exact pmf, over bins
 * of consecutive values holding at least 5 expected counts each. */
static void chi_square(struct qw_rng *r, uint64_t n, double p, int draws)
{
	double obs[512] = { 0 }, chi = 0, be = 0, bo = 0, left = draws, lim;
	int i, df = -1;
	uint64_t k;

	assert_true(n < 512);
	for (i = 0; i < draws; i++) {
		k = qw_sim_binomial(r, n, p);
		assert_true(k <= n);
		obs[k]++;
	}
	for (k = 0; k <= n; k++) {
		double e = draws * exp(log_pmf(n, p, k));

		be += e;
		bo += obs[k];
		left -= e;
		/* Close the bin once it is big enough, unless what remains
		 * would make too small a last bin (then it joins this one). */
		if ((be >= 5 && left >= 5) || k == n) {
			chi += (bo - be) * (bo - be) / be;
			df++;
			be = bo = 0;
		}
	}
	/* Reject above the chi^2_df quantile of tail probability ~3e-6 (the
	 * 4.5-sigma point of a normal), by the Wilson-Hilferty cube-root
	 * approximation: chi^2 has a longer right tail than a normal of mean
	 * df and sd sqrt(2 df). */
	lim = 1.0 - 2.0 / (9.0 * df) + 4.5 * sqrt(2.0 / (9.0 * df));
	if (chi > df * lim * lim * lim)
		fail_msg("binomial(%llu, %g): chi^2 %.1f with %d dof", (unsigned long long)n, p,
			 chi, df);
}

static void moments(struct qw_rng *r, uint64_t n, double p, int draws)
{
	double sum = 0, sum2 = 0, mean, var, m = (double)n * p, v = m * (1 - p);
	int i;

	for (i = 0; i < draws; i++) {
		double k = (double)qw_sim_binomial(r, n, p);

		sum += k;
		sum2 += (k - m) * (k - m);
	}
	mean = sum / draws;
	var = sum2 / draws;
	assert_close("binomial mean", mean, m, sqrt(v / draws), 4.0);
	assert_close("binomial variance", var, v, v * sqrt(2.0 / draws), 4.5);
}

static void test_binomial(void **state)
{
	struct qw_rng *r = qw_rng_new_seeded(10);

	(void)state;
	assert_true(qw_sim_binomial(r, 0, 0.3) == 0);
	assert_true(qw_sim_binomial(r, 17, 0.0) == 0);
	assert_true(qw_sim_binomial(r, 17, 1.0) == 17);
	chi_square(r, 20, 0.3, 200000);   /* inversion */
	chi_square(r, 60, 0.25, 200000);  /* BTRS, small n */
	chi_square(r, 400, 0.5, 200000);  /* BTRS at p = 1/2 */
	chi_square(r, 300, 0.93, 200000); /* p > 1/2 by symmetry */
	chi_square(r, 500, 0.01, 200000); /* inversion, n p = 5 */
	moments(r, 1000000000ull, 0.2, 100000);
	moments(r, 4000000000000ull, 0.7, 100000);
	moments(r, 1000000000ull, 3e-9, 100000);
	qw_rng_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_binomial),
		cmocka_unit_test(test_config_and_state),
		cmocka_unit_test(test_model_0km),
		cmocka_unit_test(test_model_50km),
		cmocka_unit_test(test_model_100km),
		cmocka_unit_test(test_eve_full),
		cmocka_unit_test(test_eve_partial),
		cmocka_unit_test(test_pulses_per_class),
		cmocka_unit_test(test_no_errors),
		cmocka_unit_test(test_afterpulse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
