/* Unit tests for the PLKG channel model, probing/estimation and bounds
 * (src/plkg/channel.c, probe.c, bound.c).
 *
 * Statistical checks use many independent channel realisations (seeds) and
 * tolerances of about four standard errors of the estimate, so they are
 * deterministic (fixed seeds) yet would fail for a wrong model. */
#include <complex.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/error.h"
#include "qwave/plkg_channel.h"
#include "qwave/rng.h"

static struct qw_plkg_channel *chan(const struct qw_plkg_config *c, uint64_t seed)
{
	struct qw_plkg_channel *ch = NULL;

	assert_int_equal(qw_plkg_channel_new(&ch, c, seed), 0);
	assert_non_null(ch);
	return ch;
}

static void test_defaults(void **state)
{
	struct qw_plkg_config c;

	(void)state;
	qw_plkg_config_default(&c);
	assert_int_equal(qw_plkg_config_check(&c), 0);
	assert_int_equal(c.n_sc, 52);
	/* f_D = v f_c / c: 3 km/h at 5.2 GHz is 14.45 Hz. */
	assert_true(fabs(qw_plkg_doppler_hz(&c) - 14.452) < 0.01);
	/* 802.11 numbering: -26..-1, 1..26 times 312.5 kHz. */
	assert_true(qw_plkg_sc_freq(&c, 0) == -26 * 312.5e3);
	assert_true(qw_plkg_sc_freq(&c, 25) == -1 * 312.5e3);
	assert_true(qw_plkg_sc_freq(&c, 26) == 1 * 312.5e3);
	assert_true(qw_plkg_sc_freq(&c, 51) == 26 * 312.5e3);
	c.n_sc = 0;
	assert_int_equal(qw_plkg_config_check(&c), QW_EINVAL);
	qw_plkg_config_default(&c);
	c.snr_db = NAN;
	assert_int_equal(qw_plkg_config_check(&c), QW_EINVAL);
	qw_plkg_config_default(&c);
	c.speed_kmh = -1;
	assert_int_equal(qw_plkg_config_check(&c), QW_EINVAL);
}

/* PDP: powers sum to 1 (with the LOS part), TGn rms delay spreads are the
 * published 15 ns (B) and 50 ns (D) [IEEE 802.11-03/940r4 Table 1]. */
static void test_pdp(void **state)
{
	struct qw_plkg_config c;
	double d[QW_PLKG_MAX_TAPS], p[QW_PLKG_MAX_TAPS], los;
	int pdps[] = { QW_PLKG_PDP_TGN_B, QW_PLKG_PDP_TGN_D, QW_PLKG_PDP_EXP, QW_PLKG_PDP_FLAT };

	(void)state;
	qw_plkg_config_default(&c);
	for (int l = 0; l < 2; l++) {
		for (size_t i = 0; i < sizeof(pdps) / sizeof(pdps[0]); i++) {
			double sum;
			int n;

			c.pdp = (enum qw_plkg_pdp)pdps[i];
			c.los = l;
			n = qw_plkg_pdp(&c, d, p, &los);
			assert_true(n > 0);
			sum = los;
			for (int t = 0; t < n; t++) {
				assert_true(p[t] >= 0);
				sum += p[t];
			}
			assert_true(fabs(sum - 1.0) < 1e-12);
			if (l)
				assert_true(fabs(los / (los + p[0]) -
						 1.0 / (1.0 + pow(10, -c.k_factor_db / 10))) < 1e-12);
		}
	}
	c.los = 0;
	c.pdp = QW_PLKG_PDP_TGN_B;
	assert_int_equal(qw_plkg_pdp(&c, d, p, &los), 9);
	assert_true(fabs(qw_plkg_rms_delay(d, p, 9) - 15e-9) < 1.5e-9);
	c.pdp = QW_PLKG_PDP_TGN_D;
	assert_int_equal(qw_plkg_pdp(&c, d, p, &los), 18);
	assert_true(fabs(qw_plkg_rms_delay(d, p, 18) - 50e-9) < 2.5e-9);
	c.pdp = QW_PLKG_PDP_EXP;
	c.exp_rms_s = 30e-9;
	{
		int n = qw_plkg_pdp(&c, d, p, &los);

		assert_true(fabs(qw_plkg_rms_delay(d, p, n) - 30e-9) < 3e-9);
	}
}

/* E|H_k|^2 = 1 per subcarrier, over realisations (power normalisation seen
 * through the frequency response), and the model covariance has trace n. */
static void test_freq_power(void **state)
{
	struct qw_plkg_config c;
	double complex H[52], *cov = malloc(52 * 52 * sizeof(double complex));
	double acc = 0, tr = 0;
	const int R = 300;

	(void)state;
	assert_non_null(cov);
	qw_plkg_config_default(&c);
	c.los = 1;
	for (int r = 0; r < R; r++) {
		struct qw_plkg_channel *ch = chan(&c, 1000 + (uint64_t)r);

		qw_plkg_channel_freq(ch, QW_PLKG_LINK_AB, 0.0, H);
		for (int k = 0; k < 52; k++)
			acc += creal(H[k] * conj(H[k]));
		qw_plkg_channel_free(ch);
	}
	acc /= R * 52.0;
	/* 52 correlated subcarriers, ~6 independent modes x 300: se ~ 0.03. */
	assert_true(fabs(acc - 1.0) < 0.12);
	c.los = 0;
	assert_int_equal(qw_plkg_freq_cov(&c, cov), 0);
	for (int k = 0; k < 52; k++) {
		tr += creal(cov[k * 52 + k]);
		assert_true(fabs(cimag(cov[k * 52 + k])) < 1e-12);
	}
	assert_true(fabs(tr - 52.0) < 1e-9);
	free(cov);
}

/* Tap autocorrelation E[h(t + tau) h*(t)] / P = J0(2 pi f_D tau). */
static void test_tap_autocorr(void **state)
{
	struct qw_plkg_config c;
	const double x[] = { 0.0, 1.0, 2.405, 3.8317, 5.52, 7.0 }; /* 2 pi f_D tau */
	const int nx = (int)(sizeof(x) / sizeof(x[0])), R = 200;
	double complex acc[6] = { 0 };
	double fourth = 0, d[QW_PLKG_MAX_TAPS], p[QW_PLKG_MAX_TAPS], los;
	long ns = 0;
	int ntaps;

	(void)state;
	qw_plkg_config_default(&c);
	c.speed_kmh = 30.0;
	ntaps = qw_plkg_pdp(&c, d, p, &los);
	for (int r = 0; r < R; r++) {
		struct qw_plkg_channel *ch = chan(&c, 77 + (uint64_t)r);
		double complex h0[QW_PLKG_MAX_TAPS], ht[QW_PLKG_MAX_TAPS];
		double wd = 2 * M_PI * qw_plkg_doppler_hz(&c), t0 = 0.37 * r;

		qw_plkg_channel_taps(ch, QW_PLKG_LINK_AB, t0, h0);
		for (int l = 0; l < ntaps; l++)
			fourth += pow(creal(h0[l] * conj(h0[l])) / p[l], 2);
		for (int i = 0; i < nx; i++) {
			qw_plkg_channel_taps(ch, QW_PLKG_LINK_AB, t0 + x[i] / wd, ht);
			for (int l = 0; l < ntaps; l++)
				acc[i] += ht[l] * conj(h0[l]) / p[l];
		}
		ns += ntaps;
		qw_plkg_channel_free(ch);
	}
	for (int i = 0; i < nx; i++) {
		double re = creal(acc[i]) / (double)ns, im = cimag(acc[i]) / (double)ns;

		/* 3600 unit-variance products: se <= 1/60. */
		assert_true(fabs(re - j0(x[i])) < 0.07);
		assert_true(fabs(im) < 0.07);
	}
	/* Near-Gaussian taps: E|h|^4 / P^2 = 2 - 1/M for the sum of sinusoids. */
	fourth /= (double)ns;
	assert_true(fabs(fourth - (2.0 - 1.0 / c.n_sinusoids)) < 0.2);
}

/* Eve's taps: corr(h_E, h) = J0(2 pi d / lambda) for both of her links;
 * her two innovations are independent of each other. */
static void test_eve_corr(void **state)
{
	const double dwl[] = { 0.0, 0.2, 0.5, 1.0 };
	struct qw_plkg_config c;

	(void)state;
	qw_plkg_config_default(&c);
	for (size_t i = 0; i < sizeof(dwl) / sizeof(dwl[0]); i++) {
		double complex ca = 0, cb = 0, cab = 0;
		double pa = 0, ph = 0, d[QW_PLKG_MAX_TAPS], p[QW_PLKG_MAX_TAPS], los, rho;
		int ntaps = qw_plkg_pdp(&c, d, p, &los);
		long ns = 0;

		c.eve_distance_m = dwl[i] * qw_plkg_wavelength(&c);
		rho = j0(2 * M_PI * dwl[i]);
		assert_true(fabs(qw_plkg_eve_rho(&c) - rho) < 1e-15);
		for (int r = 0; r < 150; r++) {
			struct qw_plkg_channel *ch = chan(&c, 5000 + (uint64_t)r);
			double complex h[QW_PLKG_MAX_TAPS], ea[QW_PLKG_MAX_TAPS],
				eb[QW_PLKG_MAX_TAPS];

			qw_plkg_channel_taps(ch, QW_PLKG_LINK_AB, 1.0, h);
			qw_plkg_channel_taps(ch, QW_PLKG_LINK_AE, 1.0, ea);
			qw_plkg_channel_taps(ch, QW_PLKG_LINK_BE, 1.0, eb);
			for (int l = 0; l < ntaps; l++) {
				ca += ea[l] * conj(h[l]) / p[l];
				cb += eb[l] * conj(h[l]) / p[l];
				cab += ea[l] * conj(eb[l]) / p[l];
				pa += creal(ea[l] * conj(ea[l])) / p[l];
				ph += creal(h[l] * conj(h[l])) / p[l];
			}
			ns += ntaps;
			qw_plkg_channel_free(ch);
		}
		/* 2700 products, se <= 0.02. */
		assert_true(fabs(creal(ca) / ns - rho) < 0.08);
		assert_true(fabs(creal(cb) / ns - rho) < 0.08);
		assert_true(fabs(creal(cab) / ns - rho * rho) < 0.08);
		assert_true(fabs(pa / ns - 1.0) < 0.1);
		assert_true(fabs(ph / ns - 1.0) < 0.1);
	}
}

/* Estimation: measured SNR of the LS estimates within 0.5 dB of the
 * configured SNR plus the 10 log10(n_ltf) averaging gain, and the error
 * variance of comb-pilot LS at pilot subcarriers equal to 1/snr. */
static void test_estimation_snr(void **state)
{
	struct qw_plkg_config c;
	double complex a[52], b[52], ea[52], eb[52], H[52], H2[52];
	const double snrs[] = { 5.0, 20.0 };
	const unsigned nltf[] = { 1, 2 };

	(void)state;
	for (int pi = 0; pi < 2; pi++) {
		for (int si = 0; si < 2; si++) {
			struct qw_plkg_channel *ch;
			struct qw_plkg_probe pr = { 0, a, b, ea, eb };
			double sig = 0, err = 0, errp = 0, want;
			long np = 0;

			qw_plkg_config_default(&c);
			c.mismatch_db = 0;
			c.mismatch_deg = 0;
			c.snr_db = snrs[si];
			c.eve_snr_db = snrs[si];
			c.n_ltf = nltf[pi];
			/* Ensemble over realisations: the configured SNR is relative
			 * to the mean channel power E|H|^2 = 1, not to one fade. */
			for (int r = 0; r < 100; r++) {
				ch = chan(&c, 4200 + (uint64_t)r);
				for (int q = 0; q < 4; q++) {
					qw_plkg_probe_at(ch, q * 0.7, &pr);
					qw_plkg_channel_freq(ch, QW_PLKG_LINK_AB, pr.t, H);
					qw_plkg_channel_freq(ch, QW_PLKG_LINK_AB, pr.t + c.tdd_delay_s,
							     H2);
					for (int k = 0; k < 52; k++) {
						sig += creal(H[k] * conj(H[k]));
						err += creal((b[k] - H[k]) * conj(b[k] - H[k]));
						err += creal((a[k] - H2[k]) * conj(a[k] - H2[k]));
					}
				}
				qw_plkg_channel_free(ch);
			}
			want = c.snr_db + 10 * log10(c.n_ltf);
			assert_true(fabs(10 * log10(2 * sig / err) - want) < 0.5);
			/* Theory: per-subcarrier error variance 1 / (snr n_ltf). */
			assert_true(fabs(err / (2 * 400 * 52) / qw_plkg_ls_error_var(&c, c.snr_db) - 1) <
				    0.05);

			/* Comb pilots every 3rd subcarrier: error 1/snr at pilots. */
			c.pilot = QW_PLKG_PILOT_COMB;
			ch = chan(&c, 43);
			for (int r = 0; r < 400; r++) {
				qw_plkg_probe_next(ch, &pr);
				qw_plkg_channel_freq(ch, QW_PLKG_LINK_AB, pr.t, H);
				for (int k = 0; k < 52; k += 3) {
					errp += creal((b[k] - H[k]) * conj(b[k] - H[k]));
					np++;
				}
			}
			assert_true(fabs(errp / np / qw_plkg_ls_error_var(&c, c.snr_db) - 1) < 0.08);
			qw_plkg_channel_free(ch);
		}
	}
}

/* The LS estimator itself: exact without noise, for any unit pilots. */
static void test_ls_exact(void **state)
{
	struct qw_plkg_config c;
	double complex rx[2 * 52], pilot[52], H[52], est[52];

	(void)state;
	qw_plkg_config_default(&c);
	for (int k = 0; k < 52; k++) {
		pilot[k] = qw_plkg_pilot_value(&c, (unsigned)k);
		assert_true(fabs(cabs(pilot[k]) - 1) < 1e-15);
		H[k] = cos(0.3 * k) + I * sin(0.7 * k);
		rx[k] = H[k] * pilot[k];
		rx[52 + k] = H[k] * pilot[k];
	}
	qw_plkg_ls_estimate(rx, pilot, 2, 52, est);
	for (int k = 0; k < 52; k++)
		assert_true(cabs(est[k] - H[k]) < 1e-14);
	/* 802.11 L-LTF: 26 + 26 BPSK values, first and last +1. */
	assert_true(creal(qw_plkg_pilot_value(&c, 0)) == 1 && creal(qw_plkg_pilot_value(&c, 51)) == 1);
	assert_true(creal(qw_plkg_pilot_value(&c, 2)) == -1);
}

/* Reciprocity: with no noise and no TDD delay, calibration makes Alice's
 * and Bob's estimates identical despite the hardware ripple; without it they
 * differ by the ripple. Same seed, same estimates. */
static void test_reciprocity_calibration(void **state)
{
	struct qw_plkg_config c;
	double complex a[52], b[52], a2[52], b2[52];
	struct qw_plkg_probe pr = { 0, a, b, NULL, NULL }, pr2 = { 0, a2, b2, NULL, NULL };
	struct qw_plkg_channel *ch, *ch2;
	double dmax = 0;

	(void)state;
	qw_plkg_config_default(&c);
	c.snr_db = 250;
	c.tdd_delay_s = 0;
	c.mismatch_db = 1.0;
	c.mismatch_deg = 10.0;
	ch = chan(&c, 9);
	qw_plkg_probe_next(ch, &pr);
	for (int k = 0; k < 52; k++)
		assert_true(cabs(a[k] - b[k]) < 1e-9 * (1 + cabs(a[k])));
	qw_plkg_channel_free(ch);
	c.calibrate = 0;
	ch = chan(&c, 9);
	ch2 = chan(&c, 9);
	qw_plkg_probe_next(ch, &pr);
	qw_plkg_probe_next(ch2, &pr2);
	for (int k = 0; k < 52; k++) {
		dmax = fmax(dmax, cabs(a[k] - b[k]) / cabs(b[k]));
		assert_true(a[k] == a2[k] && b[k] == b2[k]);
	}
	assert_true(dmax > 0.05);
	qw_plkg_channel_free(ch);
	qw_plkg_channel_free(ch2);
}

/* I(X;Y) and I(X;Y|Z) formulas on synthetic jointly Gaussian data with a
 * known correlation, against the closed forms. */
static void test_bound_formulas(void **state)
{
	struct qw_rng *r = qw_rng_new_seeded(123);
	const double rxy = 0.9, rxz = 0.6, ryz = 0.5;
	double cov[9] = { 1, rxy, rxz, rxy, 1, ryz, rxz, ryz, 1 }, s[9] = { 0 }, pc, closed;
	const int n = 200000;

	(void)state;
	assert_non_null(r);
	/* Exact covariance: conditional MI equals -log2(1 - rho_xy|z^2). */
	pc = qw_plkg_partial_corr(rxy, rxz, ryz);
	closed = -log2(1 - pc * pc);
	assert_true(fabs(qw_plkg_mi_cond_gauss(cov, 1) - closed) < 1e-12);
	{
		double c2[4] = { 1, rxy, rxy, 1 };

		assert_true(fabs(qw_plkg_mi_cond_gauss(c2, 0) - qw_plkg_mi_gauss(rxy)) < 1e-12);
		assert_true(fabs(qw_plkg_mi_gauss(rxy) - log2(1 / (1 - 0.81))) < 1e-12);
	}
	/* Sample covariance of complex Gaussian data built with those
	 * correlations (Cholesky of cov), through the same functions. */
	{
		double l10 = rxy, l11 = sqrt(1 - rxy * rxy), l20 = rxz;
		double l21 = (ryz - rxz * rxy) / l11, l22 = sqrt(1 - l20 * l20 - l21 * l21);

		for (int i = 0; i < n; i++) {
			double complex g0, g1, g2, v[3];

			g0 = (qw_rng_gaussian(r) + I * qw_rng_gaussian(r)) / sqrt(2);
			g1 = (qw_rng_gaussian(r) + I * qw_rng_gaussian(r)) / sqrt(2);
			g2 = (qw_rng_gaussian(r) + I * qw_rng_gaussian(r)) / sqrt(2);
			v[0] = g0;
			v[1] = l10 * g0 + l11 * g1;
			v[2] = l20 * g0 + l21 * g1 + l22 * g2;
			for (int a = 0; a < 3; a++)
				for (int b = 0; b < 3; b++)
					s[a * 3 + b] += creal(v[a] * conj(v[b])) / n;
		}
		assert_true(fabs(qw_plkg_mi_cond_gauss(s, 1) - closed) < 0.02);
		{
			double c2[4] = { s[0], s[1], s[3], s[4] };

			assert_true(fabs(qw_plkg_mi_cond_gauss(c2, 0) - qw_plkg_mi_gauss(rxy)) < 0.02);
		}
	}
	/* Not positive definite: NaN. */
	{
		double bad[4] = { 1, 1.2, 1.2, 1 };

		assert_true(isnan(qw_plkg_mi_cond_gauss(bad, 0)));
	}
	qw_rng_free(r);
}

/* Channel bounds: orderings that must hold whatever the numbers. */
static void test_bound_channel(void **state)
{
	struct qw_plkg_config c;
	struct qw_plkg_bound b, bb, bnear, bfar, bstatic, blow;

	(void)state;
	qw_plkg_config_default(&c);
	c.bound_window = 64;
	assert_int_equal(qw_plkg_bound_compute(&c, &b), 0);
	/* Independent dimensions ~ bandwidth x delay span + 1. */
	assert_true(b.n_modes >= 4 && b.n_modes <= 10);
	assert_true(b.iid_bits_per_probe > b.bits_per_probe);
	assert_true(b.bits_per_probe > b.eve_bits_per_probe && b.eve_bits_per_probe > 0);
	assert_true(b.iid_bits_per_probe >= b.iid_eve_bits_per_probe);
	assert_true(fabs(b.rho_tdd - j0(2 * M_PI * qw_plkg_doppler_hz(&c) * c.tdd_delay_s)) < 1e-15);
	/* About 2 f_D independent probes per second when probing faster. */
	assert_true(b.eff_independent_probes_per_s > 1.5 * b.doppler_hz &&
		    b.eff_independent_probes_per_s < 3.0 * b.doppler_hz);
	c.pdp = QW_PLKG_PDP_TGN_B;
	assert_int_equal(qw_plkg_bound_compute(&c, &bb), 0);
	assert_true(bb.n_modes < b.n_modes && bb.bits_per_probe < b.bits_per_probe);
	c.pdp = QW_PLKG_PDP_TGN_D;
	c.eve_distance_m = 0;
	assert_int_equal(qw_plkg_bound_compute(&c, &bnear), 0);
	assert_true(bnear.eve_bits_per_probe < 0.3 * bnear.bits_per_probe);
	c.eve_distance_m = 20 * qw_plkg_wavelength(&c);
	assert_int_equal(qw_plkg_bound_compute(&c, &bfar), 0);
	assert_true(bfar.eve_bits_per_probe > 0.95 * bfar.bits_per_probe);
	c.eve_distance_m = 0.5 * qw_plkg_wavelength(&c);
	c.snr_db = 5;
	assert_int_equal(qw_plkg_bound_compute(&c, &blow), 0);
	assert_true(blow.bits_per_probe < b.bits_per_probe);
	/* Quasi-static: one new channel per window, nearly nothing per probe. */
	c.snr_db = 20;
	c.speed_kmh = 0;
	assert_int_equal(qw_plkg_bound_compute(&c, &bstatic), 0);
	assert_true(bstatic.rho_tdd == 1.0);
	assert_true(bstatic.bits_per_probe < bstatic.iid_bits_per_probe / 20);
	/* Comb pilots observe fewer subcarriers. */
	c.speed_kmh = 3;
	c.pilot = QW_PLKG_PILOT_COMB;
	assert_int_equal(qw_plkg_bound_compute(&c, &bb), 0);
	assert_int_equal(bb.n_obs, 18);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_pdp),
		cmocka_unit_test(test_freq_power),
		cmocka_unit_test(test_tap_autocorr),
		cmocka_unit_test(test_eve_corr),
		cmocka_unit_test(test_estimation_snr),
		cmocka_unit_test(test_ls_exact),
		cmocka_unit_test(test_reciprocity_calibration),
		cmocka_unit_test(test_bound_formulas),
		cmocka_unit_test(test_bound_channel),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
