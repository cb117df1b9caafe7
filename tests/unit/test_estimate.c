/* Unit tests for the decoy-state estimators (src/distill/estimate.c) and the
 * SVG plot writer they feed (src/base/svgplot.c).
 *
 * Published figures checked (GYS parameters, [MQZL] Table I, f = 1.22):
 *  - infinite decoys, mu = 0.48: key rate reaches zero at ~142 km;
 *  - vacuum+weak, nu = 0.05: zero at ~140.6 km (published 140.55 km);
 *  - vacuum+weak, nu = 0.12, at 40 km: Y1^L 3.5 % below and e1^U 16.8 %
 *    above the infinite-decoy values;
 *  - the optimal mu for infinite decoys is ~0.48.
 * Everything else is an invariant that must hold whatever the numbers. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "qwave/error.h"
#include "qwave/estimate.h"
#include "qwave/svgplot.h"

static struct qw_optics_params gys(void)
{
	struct qw_optics_params p;

	qw_optics_gys(&p);
	return p;
}

static double rate_at(enum qw_decoy_method m, double km, double mu, double nu, double nu2)
{
	struct qw_optics_params p = gys();
	struct qw_keyrate_point pt;

	assert_int_equal(qw_decoy_keyrate(&p, km, m, mu, nu, nu2, 0.5, 1.22, &pt), 0);
	return pt.key_rate;
}

/* First distance (0.01 km grid) at which the rate is zero. */
static double cutoff_km(enum qw_decoy_method m, double mu, double nu, double nu2)
{
	double lo = 0.0, hi = 300.0;

	assert_true(rate_at(m, lo, mu, nu, nu2) > 0.0);
	assert_true(rate_at(m, hi, mu, nu, nu2) == 0.0);
	while (hi - lo > 0.01) {
		double mid = 0.5 * (lo + hi);
		if (rate_at(m, mid, mu, nu, nu2) > 0.0)
			lo = mid;
		else
			hi = mid;
	}
	return hi;
}

static void test_h2_values(void **state)
{
	(void)state;
	assert_true(qw_h2(0.0) == 0.0);
	assert_true(qw_h2(1.0) == 0.0);
	assert_true(qw_h2(-0.1) == 0.0);
	assert_true(qw_h2(1.5) == 0.0);
	assert_true(isnan(qw_h2(NAN)));
	assert_true(fabs(qw_h2(0.5) - 1.0) < 1e-15);
	/* h(1/4) = 2 - (3/4) log2 3 */
	assert_true(fabs(qw_h2(0.25) - (2.0 - 0.75 * log2(3.0))) < 1e-15);
	/* h(0.11) ~ 0.4999 (the classic BB84 threshold 1 - 2h(e) = 0) */
	assert_true(fabs(qw_h2(0.11) - 0.499915958164528) < 1e-12);
	assert_true(fabs(qw_h2(0.3) - qw_h2(0.7)) < 1e-15);
	/* Tiny p: h(p) ~ p log2(e/p), no cancellation. */
	assert_true(fabs(qw_h2(1e-12) / (1e-12 * log2(M_E / 1e-12)) - 1.0) < 1e-6);
}

static void test_h2_inverse(void **state)
{
	(void)state;
	assert_true(qw_h2_inv(0.0) == 0.0);
	assert_true(qw_h2_inv(-1.0) == 0.0);
	assert_true(qw_h2_inv(1.0) == 0.5);
	assert_true(qw_h2_inv(2.0) == 0.5);
	assert_true(isnan(qw_h2_inv(NAN)));
	for (double p = 1e-9; p < 0.5; p = p * 1.7 + 1e-4) {
		double q = qw_h2_inv(qw_h2(p));
		assert_true(fabs(q - p) <= 1e-12 + 1e-9 * p);
	}
	assert_true(fabs(qw_h2(qw_h2_inv(0.5)) - 0.5) < 1e-14);
}

static void test_model(void **state)
{
	struct qw_optics_params p = gys();
	double q, e, q0, e0;

	(void)state;
	assert_int_equal(qw_optics_check(&p), 0);
	/* 100 km at 0.21 dB/km is 21 dB. */
	assert_true(fabs(qw_optics_eta(&p, 100.0) / (pow(10.0, -2.1) * 0.045) - 1.0) < 1e-12);
	assert_int_equal(qw_decoy_model(&p, 0.0, 0.0, &q0, &e0), 0);
	assert_true(q0 == p.y0 && e0 == 0.5);
	assert_int_equal(qw_decoy_model(&p, 0.0, 0.48, &q, &e), 0);
	assert_true(fabs(q - (p.y0 + 1.0 - exp(-0.045 * 0.48))) < 1e-15);
	/* QBER between e_det and 1/2, approaching e_det when the signal dominates. */
	assert_true(e > p.e_det && e < p.e_det * 1.01);
	assert_int_equal(qw_decoy_model(&p, 200.0, 0.48, &q, &e), 0);
	assert_true(e > 0.1 && e < 0.5);
	assert_int_equal(qw_decoy_model(&p, -1.0, 0.48, &q, &e), QW_EINVAL);
	assert_int_equal(qw_decoy_model(&p, 1.0, -0.1, &q, &e), QW_EINVAL);
	p.eta_bob = 0.0;
	assert_int_equal(qw_decoy_model(&p, 1.0, 0.5, &q, &e), QW_EINVAL);
}

static void test_published_cutoffs(void **state)
{
	double inf, vw, two;

	(void)state;
	inf = cutoff_km(QW_DECOY_INFINITE, 0.48, 0.05, 0.0);
	vw = cutoff_km(QW_DECOY_VACUUM_WEAK, 0.48, 0.05, 0.0);
	two = cutoff_km(QW_DECOY_TWO_DECOY, 0.48, 0.05, 0.0);
	/* [MQZL]: ~142 km for infinite decoys, 140.55 km for vacuum+weak. */
	assert_true(inf > 141.5 && inf < 142.5);
	assert_true(vw > 140.2 && vw < 140.9);
	assert_true(vw < inf);
	/* Two-decoy with nu2 = 0 is the vacuum+weak protocol. */
	assert_true(fabs(two - vw) <= 0.02);
}

static void test_published_40km_deviation(void **state)
{
	struct qw_optics_params p = gys();
	struct qw_keyrate_point ex, vw;

	(void)state;
	assert_int_equal(qw_decoy_keyrate(&p, 40.0, QW_DECOY_INFINITE, 0.48, 0.12, 0.0, 0.5, 1.22,
					  &ex), 0);
	assert_int_equal(qw_decoy_keyrate(&p, 40.0, QW_DECOY_VACUUM_WEAK, 0.48, 0.12, 0.0, 0.5,
					  1.22, &vw), 0);
	/* [MQZL] Sec. 3.4: 3.5 % and 16.8 % at 40 km with nu = 0.12. */
	assert_true(fabs(100.0 * (1.0 - vw.b.y1 / ex.b.y1) - 3.5) < 0.05);
	assert_true(fabs(100.0 * (vw.b.e1 / ex.b.e1 - 1.0) - 16.8) < 0.1);
}

static void test_optimal_mu(void **state)
{
	double best_mu = 0.0, best = -1.0;

	(void)state;
	for (double mu = 0.20; mu <= 0.80 + 1e-9; mu += 0.005) {
		double r = rate_at(QW_DECOY_INFINITE, 50.0, mu, 0.05, 0.0);
		if (r > best) {
			best = r;
			best_mu = mu;
		}
	}
	/* [MQZL] Sec. 3.1: mu_opt = 0.48 with GYS and f = 1.22. */
	assert_true(best_mu > 0.45 && best_mu < 0.51);
}

static void test_monotone_and_ordered(void **state)
{
	double prev_inf = INFINITY, prev_vw = INFINITY;

	(void)state;
	for (double km = 0.0; km <= 200.0; km += 2.5) {
		double ri = rate_at(QW_DECOY_INFINITE, km, 0.48, 0.05, 0.0);
		double rv = rate_at(QW_DECOY_VACUUM_WEAK, km, 0.48, 0.05, 0.0);
		double rt = rate_at(QW_DECOY_TWO_DECOY, km, 0.48, 0.05, 0.01);
		assert_true(ri >= 0.0 && rv >= 0.0 && rt >= 0.0);
		assert_true(ri <= prev_inf);
		assert_true(rv <= prev_vw);
		assert_true(rv <= ri);
		assert_true(rt <= rv); /* a non-vacuum second decoy is worse */
		if (km >= 150.0)
			assert_true(ri == 0.0 && rv == 0.0 && rt == 0.0);
		prev_inf = ri;
		prev_vw = rv;
	}
}

/* On model data, the bounds are bounds, and they close in on the exact
 * values as the weak decoy goes to 0. */
static void test_bounds_valid_and_converge(void **state)
{
	struct qw_optics_params p = gys();

	(void)state;
	for (double km = 0.0; km <= 130.0; km += 10.0) {
		struct qw_keyrate_point ex, b;
		double prev_gap_y = INFINITY, prev_gap_e = INFINITY;

		assert_int_equal(qw_decoy_keyrate(&p, km, QW_DECOY_INFINITE, 0.48, 0.05, 0.0, 0.5,
						  1.22, &ex), 0);
		for (double nu = 0.2; nu >= 0.001; nu /= 2.0) {
			assert_int_equal(qw_decoy_keyrate(&p, km, QW_DECOY_VACUUM_WEAK, 0.48, nu,
							  0.0, 0.5, 1.22, &b), 0);
			assert_true(b.b.y1 <= ex.b.y1 * (1.0 + 1e-12));
			assert_true(b.b.e1 >= ex.b.e1 * (1.0 - 1e-12));
			assert_true(ex.b.y1 - b.b.y1 <= prev_gap_y);
			assert_true(b.b.e1 - ex.b.e1 <= prev_gap_e);
			prev_gap_y = ex.b.y1 - b.b.y1;
			prev_gap_e = b.b.e1 - ex.b.e1;
			assert_int_equal(qw_decoy_keyrate(&p, km, QW_DECOY_TWO_DECOY, 0.48, nu,
							  nu / 4.0, 0.5, 1.22, &b), 0);
			assert_true(b.b.y1 <= ex.b.y1 * (1.0 + 1e-12));
			assert_true(b.b.e1 >= ex.b.e1 * (1.0 - 1e-12));
		}
		/* nu = 0.001: within 0.1 % (Y1) and 0.5 % (e1) of exact. */
		assert_true(prev_gap_y / ex.b.y1 < 1e-3);
		assert_true(prev_gap_e / ex.b.e1 < 5e-3);
	}
}

static void test_bounds_on_measured_input(void **state)
{
	struct qw_decoy_obs o = { 0 };
	struct qw_decoy_bounds b;

	(void)state;
	/* Hand-computed eq. (34)/(37) on round numbers. */
	o.mu = 0.5;
	o.nu = 0.1;
	o.q_mu = 1e-2;
	o.e_mu = 0.03;
	o.q_nu = 2e-3;
	o.e_nu = 0.04;
	o.y0 = 1e-5;
	assert_int_equal(qw_decoy_bounds_vacuum_weak(&o, &b), 0);
	{
		double y1 = 0.5 / (0.05 - 0.01) *
			    (2e-3 * exp(0.1) - 1e-2 * exp(0.5) * 0.01 / 0.25 - 0.24 / 0.25 * 1e-5);
		double e1 = (0.04 * 2e-3 * exp(0.1) - 0.5 * 1e-5) / (y1 * 0.1);
		assert_true(fabs(b.y1 / y1 - 1.0) < 1e-12);
		assert_true(fabs(b.e1 / e1 - 1.0) < 1e-12);
		assert_true(fabs(b.q1 / (y1 * 0.5 * exp(-0.5)) - 1.0) < 1e-12);
		assert_true(b.y0 == 1e-5);
	}
	/* Two-decoy with a measured vacuum decoy gives the same numbers. */
	o.nu2 = 0.0;
	o.q_nu2 = 1e-5;
	o.e_nu2 = 0.5;
	{
		struct qw_decoy_bounds b2;
		assert_int_equal(qw_decoy_bounds_two_decoy(&o, &b2), 0);
		assert_true(fabs(b2.y1 / b.y1 - 1.0) < 1e-12);
		assert_true(fabs(b2.e1 / b.e1 - 1.0) < 1e-12);
	}
	/* Data no honest channel produces (decoy gain too low): nothing certified. */
	o.q_nu = 1e-6;
	assert_int_equal(qw_decoy_bounds_vacuum_weak(&o, &b), 0);
	assert_true(b.y1 == 0.0 && b.e1 == 0.5 && b.q1 == 0.0);
	assert_true(qw_decoy_gllp_rate(0.5, 1.22, o.q_mu, o.e_mu, &b) == 0.0);
	/* Invalid intensities are refused. */
	o.q_nu = 2e-3;
	o.nu = 0.6;
	assert_int_equal(qw_decoy_bounds_vacuum_weak(&o, &b), QW_EINVAL);
	o.nu = 0.1;
	o.q_mu = NAN;
	assert_int_equal(qw_decoy_bounds_vacuum_weak(&o, &b), QW_EINVAL);
	o.q_mu = 1e-2;
	o.nu2 = 0.45; /* both [MQZL] eq. (13) margins negative */
	assert_int_equal(qw_decoy_bounds_two_decoy(&o, &b), QW_EINVAL);
	o.nu2 = 0.1;
	assert_int_equal(qw_decoy_bounds_two_decoy(&o, &b), QW_EINVAL);
}

static void test_secret_length(void **state)
{
	struct qw_finite_bounds b = { 0 };
	struct qw_finite_eps eps = { 1e-10, 1e-15 };
	double overhead = 6.0 * log2(21.0 / 1e-10) + log2(2.0 / 1e-15);
	uint64_t len = 99;

	(void)state;
	b.n_x = 1e6;
	b.s_x0 = 1000.0;
	b.s_x1 = 5e5;
	b.phi_x = 0.05;
	assert_int_equal(qw_secret_length(&b, 2e5, &eps, &len), 0);
	assert_true(len == (uint64_t)floor(1000.0 + 5e5 * (1.0 - qw_h2(0.05)) - 2e5 - overhead));
	/* Leaking more than there is: drop the block. */
	assert_int_equal(qw_secret_length(&b, 1e6, &eps, &len), 0);
	assert_true(len == 0);
	/* phi >= 1/2: the single photons contribute nothing. */
	b.phi_x = 0.7;
	assert_int_equal(qw_secret_length(&b, 0.0, &eps, &len), 0);
	assert_true(len == (uint64_t)floor(1000.0 - overhead));
	/* Never longer than the block. */
	b.phi_x = 0.0;
	b.s_x0 = 2e6;
	assert_int_equal(qw_secret_length(&b, 0.0, &eps, &len), 0);
	assert_true(len == 1000000);
	/* Bad inputs. */
	b.s_x1 = NAN;
	assert_int_equal(qw_secret_length(&b, 0.0, &eps, &len), QW_EINVAL);
	assert_true(len == 0);
	b.s_x1 = 5e5;
	assert_int_equal(qw_secret_length(&b, -1.0, &eps, &len), QW_EINVAL);
	eps.eps_sec = 0.0;
	assert_int_equal(qw_secret_length(&b, 0.0, &eps, &len), QW_EINVAL);
}

static void test_finite_bounds_observed(void **state)
{
	struct qw_optics_params p = gys();
	struct qw_finite_protocol pr;
	struct qw_finite_result r;
	struct qw_finite_bounds b, big;
	struct qw_finite_counts c;
	double s1_true, s0_true, e1_true;
	double tau0 = 0.0, tau1 = 0.0, eta = qw_optics_eta(&p, 25.0);

	(void)state;
	qw_finite_protocol_default(&pr, 0.5, 0.15, 0.0);
	assert_int_equal(qw_finite_model(&p, 25.0, &pr, 1e8, &r), 0);
	/* Rounded counts, as a real block would have them. */
	c = r.counts;
	for (int k = 0; k < QW_FINITE_NINT; k++) {
		c.n_x[k] = floor(c.n_x[k]);
		c.n_z[k] = floor(c.n_z[k]);
		c.m_z[k] = floor(c.m_z[k]);
		tau0 += pr.p[k] * exp(-pr.mu[k]);
		tau1 += pr.p[k] * pr.mu[k] * exp(-pr.mu[k]);
	}
	assert_int_equal(qw_finite_bounds(&c, 1e-10, &b), 0);
	/* Expected true values on the model: s_X,n = N q_x^2 tau_n Y_n. */
	s0_true = r.pulses * pr.q_x * pr.q_x * tau0 * p.y0;
	s1_true = r.pulses * pr.q_x * pr.q_x * tau1 * (p.y0 + eta);
	e1_true = (0.5 * p.y0 + p.e_det * eta) / (p.y0 + eta);
	assert_true(b.s_x0 <= s0_true && b.s_x0 >= 0.0);
	assert_true(b.s_x1 <= s1_true && b.s_x1 > 0.5 * s1_true);
	assert_true(b.phi_x >= e1_true && b.phi_x < 0.5);
	assert_true(b.v_z1 / b.s_z1 >= e1_true);
	/* More statistics, tighter bounds (same ratios, 100x the counts). */
	for (int k = 0; k < QW_FINITE_NINT; k++) {
		c.n_x[k] *= 100.0;
		c.n_z[k] *= 100.0;
		c.m_z[k] *= 100.0;
	}
	assert_int_equal(qw_finite_bounds(&c, 1e-10, &big), 0);
	assert_true(big.s_x1 / 100.0 >= b.s_x1);
	assert_true(big.phi_x <= b.phi_x);
	/* Invalid inputs. */
	c.mu[1] = 0.6;
	assert_int_equal(qw_finite_bounds(&c, 1e-10, &b), QW_EINVAL);
	c.mu[1] = 0.15;
	c.p[0] = 0.9;
	assert_int_equal(qw_finite_bounds(&c, 1e-10, &b), QW_EINVAL);
	c.p[0] = pr.p[0];
	c.m_z[0] = c.n_z[0] + 1.0;
	assert_int_equal(qw_finite_bounds(&c, 1e-10, &b), QW_EINVAL);
	c.m_z[0] = 0.0;
	assert_int_equal(qw_finite_bounds(&c, 0.0, &b), QW_EINVAL);
}

/* Same protocol with perfect knowledge of Y0, Y1, e1 on every intensity:
 * no decoy bound, no fluctuation can beat it. */
static double exact_reference(const struct qw_optics_params *p, double km,
			      const struct qw_finite_protocol *pr)
{
	double eta = qw_optics_eta(p, km), y1 = p->y0 + eta;
	double e1 = (0.5 * p->y0 + p->e_det * eta) / y1, r = 0.0;

	for (int k = 0; k < QW_FINITE_NINT; k++) {
		double q, e, mu = pr->mu[k];
		assert_int_equal(qw_decoy_model(p, km, mu, &q, &e), 0);
		r += pr->p[k] * (p->y0 * exp(-mu) + y1 * mu * exp(-mu) * (1.0 - qw_h2(e1)) -
				 pr->f_ec * q * qw_h2(e));
	}
	return pr->q_x * pr->q_x * r;
}

/* [LCWXZ] eqs. (1)-(5) on fixed counts, against values computed with an
 * independent transcription of the paper's formulas (Python, double
 * precision): mu = (0.45, 0.17, 0), p = (0.2, 0.5, 0.3), eps_sec = 1e-10,
 * eps_cor = 1e-15, n_X = (180000, 170000, 900), n_Z = (60000, 57000, 300),
 * m_Z = (2000, 2100, 150). With the statistical terms the vacuum bound of
 * eq. (2) is negative (clamped to 0); without them it is 2548.07. */
static void test_finite_bounds_known_counts(void **state)
{
	struct qw_finite_counts c = {
		.mu = { 0.45, 0.17, 0.0 },
		.p = { 0.2, 0.5, 0.3 },
		.n_x = { 180000.0, 170000.0, 900.0 },
		.n_z = { 60000.0, 57000.0, 300.0 },
		.m_z = { 2000.0, 2100.0, 150.0 },
	};
	struct qw_finite_eps eps = { 1e-10, 1e-15 };
	struct qw_finite_bounds b, a;
	uint64_t len;

	(void)state;
	assert_int_equal(qw_finite_bounds(&c, 1e-10, &b), 0);
	assert_true(b.n_x == 350900.0);
	assert_true(b.s_x0 == 0.0 && b.s_z0 == 0.0);
	assert_true(fabs(b.s_x1 - 224529.09648120817) < 1e-6);
	assert_true(fabs(b.s_z1 - 71446.95691968237) < 1e-6);
	assert_true(fabs(b.v_z1 - 4420.334904890025) < 1e-7);
	assert_true(fabs(b.phi_x - 0.0717815791593826) < 1e-12);
	/* eq. (1) with lambda_EC = 60000: 80607.144... */
	assert_int_equal(qw_secret_length(&b, 60000.0, &eps, &len), 0);
	assert_int_equal(len, 80607);

	assert_int_equal(qw_finite_bounds_asymptotic(&c, &a), 0);
	assert_true(fabs(a.s_x0 - 2548.07411586764) < 1e-7);
	assert_true(fabs(a.s_x1 - 242861.2580532341) < 1e-6);
	assert_true(fabs(a.s_z0 - 849.3580386225465) < 1e-8);
	assert_true(fabs(a.s_z1 - 81918.16783187575) < 1e-6);
	assert_true(fabs(a.v_z1 - 3400.807251423166) < 1e-7);
	assert_true(fabs(a.phi_x - 0.041514688883213205) < 1e-12);
	assert_int_equal(qw_secret_length(&a, 60000.0, &eps, &len), 0);
	assert_int_equal(len, 124613);
	/* The statistical terms only ever cost key. */
	assert_true(a.s_x1 > b.s_x1 && a.s_z1 > b.s_z1 && a.phi_x < b.phi_x);
	/* Same validation as the finite bounds. */
	c.mu[1] = 0.5;
	assert_int_equal(qw_finite_bounds_asymptotic(&c, &a), QW_EINVAL);
}

/* A block given in pulses: the model of qw_finite_model() at the expected
 * key bits of those pulses, and the optimizer at a fixed pulse count. */
static void test_finite_pulses(void **state)
{
	struct qw_optics_params p = gys();
	struct qw_finite_protocol pr, opt;
	struct qw_finite_result r, rb, ro;
	double px, q[3];

	(void)state;
	qw_finite_protocol_default(&pr, 0.5, 0.1, 0.0);
	for (int k = 0; k < 3; k++)
		assert_int_equal(qw_decoy_model(&p, 50.0, pr.mu[k], &q[k], NULL), 0);
	px = qw_finite_key_per_pulse(&p, 50.0, &pr);
	assert_true(fabs(px - 0.81 * (0.7 * q[0] + 0.2 * q[1] + 0.1 * q[2])) < 1e-15);
	assert_int_equal(qw_finite_model_pulses(&p, 50.0, &pr, 1e9, &r), 0);
	assert_true(fabs(r.pulses / 1e9 - 1.0) < 1e-12);
	assert_true(fabs(r.b.n_x - 1e9 * px) < 1e-3);
	assert_int_equal(qw_finite_model(&p, 50.0, &pr, 1e9 * px, &rb), 0);
	assert_true(r.length == rb.length);
	/* fewer than one expected key bit */
	assert_int_equal(qw_finite_model_pulses(&p, 50.0, &pr, 10.0, &r), QW_EINVAL);
	pr.q_x = 1.0;
	assert_true(qw_finite_key_per_pulse(&p, 50.0, &pr) == 0.0);
	pr.q_x = 0.9;

	/* The headline setting: 1e9 pulses at 50 km. The optimum beats the
	 * fixed set, yields a key, is reproducible and stays below its
	 * N -> infinity limit (itself below perfect knowledge). */
	assert_int_equal(qw_finite_model_pulses(&p, 50.0, &pr, 1e9, &r), 0);
	opt = pr;
	assert_int_equal(qw_finite_optimize_pulses(&p, 50.0, &opt, 1e9, &ro), 0);
	assert_true(ro.rate >= r.rate && ro.length > 0);
	assert_true(fabs(ro.pulses / 1e9 - 1.0) < 1e-12);
	assert_true(opt.mu[0] > opt.mu[1] + opt.mu[2] && opt.mu[1] > opt.mu[2]);
	assert_true(fabs(opt.p[0] + opt.p[1] + opt.p[2] - 1.0) < 1e-9);
	assert_true(ro.rate < ro.rate_limit);
	assert_true(ro.rate_limit <= exact_reference(&p, 50.0, &opt));
	assert_int_equal(qw_finite_model_pulses(&p, 50.0, &opt, 1e9, &rb), 0);
	assert_true(rb.length == ro.length);
	print_message("  50 km, 1e9 pulses: optimum mu %.3f/%.3f/%.3f p %.3f/%.3f/%.3f "
		      "q_x %.3f: %llu bits, rate %.3g (limit %.3g)\n",
		      opt.mu[0], opt.mu[1], opt.mu[2], opt.p[0], opt.p[1], opt.p[2], opt.q_x,
		      (unsigned long long)ro.length, ro.rate, ro.rate_limit);
}

static void test_finite_converges(void **state)
{
	struct qw_optics_params p = gys();
	static const double ns[] = { 1e6, 1e8, 1e10, 1e12 };
	static const double kms[] = { 10.0, 50.0 };

	(void)state;
	for (size_t d = 0; d < sizeof(kms) / sizeof(kms[0]); d++) {
		struct qw_finite_protocol pr;
		double prev = 0.0, limit = 0.0;

		qw_finite_protocol_default(&pr, 0.5, 0.15, 0.0);
		for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
			struct qw_finite_result r;
			assert_int_equal(qw_finite_model(&p, kms[d], &pr, ns[i], &r), 0);
			if (i == 0)
				limit = r.rate_limit;
			/* The limit does not depend on the block size. */
			assert_true(fabs(r.rate_limit / limit - 1.0) < 1e-9);
			assert_true(r.rate < r.rate_limit);
			assert_true(r.rate >= prev);
			if (i > 0)
				assert_true(r.rate > prev);
			prev = r.rate;
			assert_true((double)r.length <= ns[i]);
		}
		/* 1e12-bit blocks: within 2 % of the N -> infinity rate. */
		assert_true(prev > 0.98 * limit);
		assert_true(limit <= exact_reference(&p, kms[d], &pr));
	}
}

/* The decoy-limited N -> infinity rate closes in on perfect knowledge as the
 * weak decoy goes to 0 (the finite-key analogue of nu -> 0 in [MQZL]). */
static void test_finite_limit_converges_to_exact(void **state)
{
	struct qw_optics_params p = gys();
	double prev_ratio = 0.0;

	(void)state;
	for (double nu = 0.2; nu > 0.005; nu /= 2.0) {
		struct qw_finite_protocol pr;
		struct qw_finite_result r;
		double ratio;

		qw_finite_protocol_default(&pr, 0.5, nu, 0.0);
		assert_int_equal(qw_finite_model(&p, 50.0, &pr, 1e8, &r), 0);
		ratio = r.rate_limit / exact_reference(&p, 50.0, &pr);
		assert_true(ratio <= 1.0);
		assert_true(ratio > prev_ratio);
		prev_ratio = ratio;
	}
	assert_true(prev_ratio > 0.99);
}

static void test_finite_small_blocks(void **state)
{
	struct qw_optics_params p = gys();
	struct qw_finite_protocol pr;
	struct qw_finite_result r;

	(void)state;
	qw_finite_protocol_default(&pr, 0.5, 0.15, 0.0);
	/* 300 bits cannot even pay the eps terms (~277 bits) plus EC. */
	assert_int_equal(qw_finite_model(&p, 10.0, &pr, 300.0, &r), 0);
	assert_true(r.length == 0 && r.rate == 0.0);
	assert_int_equal(qw_finite_model(&p, 10.0, &pr, 1e4, &r), 0);
	assert_true(r.length == 0);
	/* Beyond the asymptotic cutoff no block size helps. */
	assert_int_equal(qw_finite_model(&p, 160.0, &pr, 1e12, &r), 0);
	assert_true(r.length == 0 && r.rate_limit == 0.0);
	assert_int_equal(qw_finite_model(&p, 10.0, &pr, 0.5, &r), QW_EINVAL);
	pr.q_x = 1.0;
	assert_int_equal(qw_finite_model(&p, 10.0, &pr, 1e6, &r), QW_EINVAL);
}

static void test_finite_optimize(void **state)
{
	struct qw_optics_params p = gys();
	struct qw_finite_protocol fixed, opt;
	struct qw_finite_result rf, ro;

	(void)state;
	qw_finite_protocol_default(&fixed, 0.48, 0.05, 0.0);
	opt = fixed;
	assert_int_equal(qw_finite_model(&p, 50.0, &fixed, 1e8, &rf), 0);
	assert_int_equal(qw_finite_optimize(&p, 50.0, &opt, 1e8, &ro), 0);
	assert_true(ro.rate > 0.0 && ro.rate >= rf.rate);
	/* The answer respects [LCWXZ]'s constraints and is reproducible. */
	assert_true(opt.mu[0] > opt.mu[1] + opt.mu[2] && opt.mu[1] > opt.mu[2]);
	assert_true(fabs(opt.p[0] + opt.p[1] + opt.p[2] - 1.0) < 1e-9);
	assert_true(opt.q_x > 0.0 && opt.q_x < 1.0);
	{
		struct qw_finite_result again;
		assert_int_equal(qw_finite_model(&p, 50.0, &opt, 1e8, &again), 0);
		assert_true(again.length == ro.length);
	}
	/* Optimized finite key still below its own limit and the exact reference. */
	assert_true(ro.rate < ro.rate_limit);
	assert_true(ro.rate_limit <= exact_reference(&p, 50.0, &opt));
	/* No key possible: the caller's protocol comes back unchanged. */
	opt = fixed;
	assert_int_equal(qw_finite_optimize(&p, 170.0, &opt, 1e6, &ro), 0);
	assert_true(ro.length == 0);
	assert_true(memcmp(&opt, &fixed, sizeof(opt)) == 0);
}

static void test_block_bounds(void **state)
{
	struct qw_optics_params p = gys();
	struct qw_keyrate_point pt;
	struct qw_finite_bounds fb;
	struct qw_finite_eps eps = { 1e-10, 1e-15 };
	uint64_t len;
	double n = 1e7, leak;

	(void)state;
	assert_int_equal(qw_decoy_keyrate(&p, 50.0, QW_DECOY_VACUUM_WEAK, 0.48, 0.05, 0.0, 0.5,
					  1.22, &pt), 0);
	assert_int_equal(qw_decoy_block_bounds(&pt.b, 0.48, pt.gain, n, &fb), 0);
	leak = n * 1.22 * qw_h2(pt.qber);
	assert_int_equal(qw_secret_length(&fb, leak, &eps, &len), 0);
	/* Per signal detection, GLLP (with the vacuum term and without q) minus
	 * the eps overhead. */
	{
		double per = (fb.s_x0 + fb.s_x1 * (1.0 - qw_h2(pt.b.e1)) - leak) / n;
		double gllp = pt.key_rate / 0.5 / pt.gain;
		assert_true(per >= gllp);
		assert_true(fabs((double)len / n - per) < 400.0 / n);
	}
}

static void test_svgplot(void **state)
{
	static const double x[] = { 0, 50, 100, 150, 200 };
	static const double y[] = { 1e-3, 1e-4, 1e-6, 0.0, 0.0 };
	static const double y2[] = { 2e-3, NAN, 3e-6, 1e-8, 0.0 };
	struct qw_svgplot_series s[2] = {
		{ "a <b> & \"c\"", x, y, 5 },
		{ NULL, x, y2, 5 },
	};
	struct qw_svgplot plot = { 0 };
	char path[] = "/tmp/qw_test_svgXXXXXX";
	char buf[16384];
	struct stat st;
	size_t n;
	FILE *f;
	int fd;

	(void)state;
	plot.title = "t";
	plot.x_label = "km";
	plot.y_label = "rate";
	plot.log_y = 1;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(qw_svgplot_save(path, &plot, s, 2), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true((st.st_mode & 0600) == 0600 && (st.st_mode & 0133) == 0);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "<svg"));
	assert_non_null(strstr(buf, "</svg>"));
	assert_non_null(strstr(buf, "a &lt;b&gt; &amp; &quot;c&quot;"));
	assert_null(strstr(buf, "<b>"));
	/* Decade ticks cover 1e-8 .. 1e-2. */
	assert_non_null(strstr(buf, ">1e-8<"));
	assert_non_null(strstr(buf, ">1e-2<"));
	/* The NaN in series 2 splits its line: two "M" moves in that path. */
	{
		const char *p2 = strstr(strstr(buf, "<path") + 1, "<path");
		const char *end;
		int moves = 0;
		assert_non_null(p2);
		end = strstr(p2, "/>");
		for (const char *c = p2; c < end; c++)
			moves += *c == 'M';
		assert_int_equal(moves, 2);
	}
	/* Nothing plottable: refused, and the file is left alone. */
	{
		static const double z[] = { 0.0, -1.0 };
		struct qw_svgplot_series bad = { "z", x, z, 2 };
		assert_int_equal(qw_svgplot_save(path, &plot, &bad, 1), QW_EINVAL);
		assert_int_equal(stat(path, &st), 0);
		assert_true(st.st_size == (off_t)n);
	}
	unlink(path);
	assert_int_equal(qw_svgplot_save("/nonexistent-dir/x.svg", &plot, s, 1), QW_EIO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_h2_values),
		cmocka_unit_test(test_h2_inverse),
		cmocka_unit_test(test_model),
		cmocka_unit_test(test_published_cutoffs),
		cmocka_unit_test(test_published_40km_deviation),
		cmocka_unit_test(test_optimal_mu),
		cmocka_unit_test(test_monotone_and_ordered),
		cmocka_unit_test(test_bounds_valid_and_converge),
		cmocka_unit_test(test_bounds_on_measured_input),
		cmocka_unit_test(test_secret_length),
		cmocka_unit_test(test_finite_bounds_observed),
		cmocka_unit_test(test_finite_bounds_known_counts),
		cmocka_unit_test(test_finite_pulses),
		cmocka_unit_test(test_finite_converges),
		cmocka_unit_test(test_finite_limit_converges_to_exact),
		cmocka_unit_test(test_finite_small_blocks),
		cmocka_unit_test(test_finite_optimize),
		cmocka_unit_test(test_block_bounds),
		cmocka_unit_test(test_svgplot),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
