/* Unit tests for the PLKG quantizers and decorrelating transforms
 * (src/plkg/quant.c), including end-to-end raw key disagreement on the
 * simulated channel (src/plkg/channel.c, probe.c). */
#include <complex.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/bitvec.h"
#include "qwave/error.h"
#include "qwave/plkg_channel.h"
#include "qwave/plkg_quant.h"
#include "qwave/rng.h"

static void test_gray(void **state)
{
	(void)state;
	for (unsigned v = 0; v + 1 < 1024; v++) {
		unsigned d = qw_plkg_gray(v) ^ qw_plkg_gray(v + 1);

		assert_true(d != 0 && (d & (d - 1)) == 0); /* exactly one bit */
		assert_int_equal(qw_plkg_gray_inv(qw_plkg_gray(v)), v);
	}
	assert_int_equal(qw_plkg_gray(0), 0);
	assert_int_equal(qw_plkg_gray(2), 3);
	assert_int_equal(qw_plkg_gray(3), 2);
}

/* Guard band [Mathur08]: every sample inside mean +- alpha sd is dropped,
 * every other one kept with the right side; with min_run only run centres
 * survive. */
static void test_guard(void **state)
{
	struct qw_rng *r = qw_rng_new_seeded(3);
	enum { N = 2000 };
	double x[2 * N], mean = 0, var = 0, sd, alpha = 0.4;
	uint16_t lv[N];
	uint8_t kp[N];
	size_t kept = 0;

	(void)state;
	for (int i = 0; i < N; i++) {
		x[2 * i] = 3.0 + 2.0 * qw_rng_gaussian(r);
		x[2 * i + 1] = NAN; /* stride 2: never read */
		mean += x[2 * i];
	}
	mean /= N;
	for (int i = 0; i < N; i++)
		var += (x[2 * i] - mean) * (x[2 * i] - mean);
	sd = sqrt(var / (N - 1));
	assert_int_equal(qw_plkg_quant_guard(x, N, 2, alpha, 1, lv, kp), 0);
	for (int i = 0; i < N; i++) {
		double v = x[2 * i];

		if (v > mean - alpha * sd && v < mean + alpha * sd) {
			assert_int_equal(kp[i], 0);
		} else {
			assert_int_equal(kp[i], 1);
			assert_int_equal(lv[i], v > mean ? 1 : 0);
			kept++;
		}
	}
	/* Gaussian: P(|z| > 0.4) = 0.689. */
	assert_true(fabs((double)kept / N - 0.689) < 0.04);
	/* Runs of >= 3: only centres, each kept one on the right side. */
	{
		/* mean 0, sd ~4.4: the zeros are in the band. */
		double y[18] = { 5, 5, 5, 0, -5, -5, 0, 5, 5, 5, 5, 0, -5, -5, -5, -5, -5, 0 };
		uint16_t l2[18];
		uint8_t k2[18];

		assert_int_equal(qw_plkg_quant_guard(y, 18, 1, 0.3, 3, l2, k2), 0);
		for (int i = 0; i < 18; i++)
			assert_int_equal(k2[i], i == 1 || i == 9 || i == 14);
		assert_int_equal(l2[1], 1);
		assert_int_equal(l2[9], 1);
		assert_int_equal(l2[14], 0);
	}
	assert_int_equal(qw_plkg_quant_guard(x, 1, 2, alpha, 1, lv, kp), QW_EINVAL);
	assert_int_equal(qw_plkg_quant_guard(x, N, 1, alpha, 1, lv, kp), QW_EINVAL); /* NaN */
	qw_rng_free(r);
}

/* Multi-bit [Jana09]: equiprobable levels; the guard drops the expected
 * mass around each inner threshold. */
static void test_multibit(void **state)
{
	struct qw_rng *r = qw_rng_new_seeded(4);
	enum { N = 4096 };
	double *x = malloc(N * sizeof(double));
	uint16_t *lv = malloc(N * sizeof(uint16_t));
	uint8_t *kp = malloc(N * sizeof(uint8_t));
	size_t cnt[8] = { 0 }, kept = 0;

	(void)state;
	assert_true(x && lv && kp);
	for (int i = 0; i < N; i++)
		x[i] = exp(qw_rng_gaussian(r)); /* any continuous law */
	assert_int_equal(qw_plkg_quant_multibit(x, N, 1, 3, 0.0, lv, kp), 0);
	for (int i = 0; i < N; i++) {
		assert_true(lv[i] < 8 && kp[i] == 1);
		cnt[lv[i]]++;
	}
	for (int l = 0; l < 8; l++)
		assert_true(cnt[l] == N / 8);
	/* Order preserved: larger sample, level not smaller. */
	for (int i = 0; i < N; i++)
		for (int j = 0; j < 50; j++)
			if (x[i] > x[j])
				assert_true(lv[i] >= lv[j]);
	/* Guard 0.05 around each of 7 inner thresholds drops 35 % of samples. */
	assert_int_equal(qw_plkg_quant_multibit(x, N, 1, 3, 0.05, lv, kp), 0);
	for (int i = 0; i < N; i++)
		kept += kp[i];
	assert_true(fabs((double)kept / N - 0.65) < 0.01);
	assert_int_equal(qw_plkg_quant_multibit(x, N, 1, 3, 0.2, lv, kp), QW_EINVAL);
	assert_int_equal(qw_plkg_quant_multibit(x, N, 1, 0, 0.0, lv, kp), QW_EINVAL);
	free(x);
	free(lv);
	free(kp);
	qw_rng_free(r);
}

static void test_pack(void **state)
{
	uint16_t lv[5] = { 0, 1, 2, 3, 2 };
	uint8_t ka[5] = { 1, 1, 0, 1, 1 }, kb[5] = { 1, 0, 1, 1, 1 };
	struct qw_bitvec *v = qw_bitvec_new(0);

	(void)state;
	assert_non_null(v);
	/* Kept by both: 0, 3, 4 -> Gray 00, 10, 11 (MSB first). */
	assert_int_equal(qw_plkg_quant_pack(lv, ka, kb, 5, 2, v), 0);
	assert_int_equal(v->nbits, 6);
	assert_int_equal(qw_bitvec_get(v, 0), 0);
	assert_int_equal(qw_bitvec_get(v, 1), 0);
	assert_int_equal(qw_bitvec_get(v, 2), 1);
	assert_int_equal(qw_bitvec_get(v, 3), 0);
	assert_int_equal(qw_bitvec_get(v, 4), 1);
	assert_int_equal(qw_bitvec_get(v, 5), 1);
	lv[0] = 4; /* does not fit in 2 bits */
	assert_int_equal(qw_plkg_quant_pack(lv, ka, NULL, 5, 2, v), QW_EINVAL);
	qw_bitvec_free(v);
}

/* KLT of the model covariance: orthonormal eigenvectors, C u = lambda u,
 * eigenvalues summing to the trace; TGn D offers more modes than TGn B; a
 * sample KLT recovers the leading eigenvalue; DCT is orthonormal. */
static void test_klt(void **state)
{
	struct qw_plkg_config c;
	double complex *cov = malloc(52 * 52 * sizeof(double complex)), e[52], f[52];
	struct qw_plkg_klt *k = NULL, *kb = NULL, *ks = NULL, *kd = NULL;
	const double *lam;
	double sum = 0, feat[2 * 52];
	unsigned m;

	(void)state;
	assert_non_null(cov);
	qw_plkg_config_default(&c);
	assert_int_equal(qw_plkg_freq_cov(&c, cov), 0);
	assert_int_equal(qw_plkg_klt_new_cov(&k, cov, 52, 1.0), 0);
	assert_int_equal(qw_plkg_klt_modes(k), 52);
	lam = qw_plkg_klt_eigenvalues(k);
	for (int i = 0; i < 52; i++) {
		sum += lam[i];
		if (i)
			assert_true(lam[i] <= lam[i - 1] + 1e-12);
	}
	assert_true(fabs(sum - 52.0) < 1e-8);
	/* Columns via apply on unit vectors: feature m of e_i is conj(u_m[i]). */
	for (int m1 = 0; m1 < 6; m1++) {
		double complex u[52];

		for (int i = 0; i < 52; i++) {
			memset(e, 0, sizeof(e));
			e[i] = 1;
			qw_plkg_klt_apply(k, e, feat);
			u[i] = feat[2 * m1] - I * feat[2 * m1 + 1];
		}
		for (int i = 0; i < 52; i++) {
			double complex s = 0;

			for (int j = 0; j < 52; j++)
				s += cov[i * 52 + j] * u[j];
			assert_true(cabs(s - lam[m1] * u[i]) < 1e-8);
		}
		sum = 0;
		for (int i = 0; i < 52; i++)
			sum += creal(u[i] * conj(u[i]));
		assert_true(fabs(sum - 1) < 1e-10);
	}
	qw_plkg_klt_free(k);
	assert_int_equal(qw_plkg_klt_new_cov(&k, cov, 52, 0.99), 0);
	lam = qw_plkg_klt_eigenvalues(k);
	m = qw_plkg_klt_modes(k);
	c.pdp = QW_PLKG_PDP_TGN_B;
	{
		double complex *cb = malloc(52 * 52 * sizeof(double complex));

		assert_non_null(cb);
		assert_int_equal(qw_plkg_freq_cov(&c, cb), 0);
		assert_int_equal(qw_plkg_klt_new_cov(&kb, cb, 52, 0.99), 0);
		free(cb);
	}
	/* ~ bandwidth x delay span + 1: 16.25 MHz x 390 ns ~ 7 (D), x 80 ns ~ 2 (B). */
	assert_true(m >= 4 && m <= 9);
	assert_true(qw_plkg_klt_modes(kb) >= 2 && qw_plkg_klt_modes(kb) < m);
	/* Sample KLT from 400 independent channel realisations. */
	c.pdp = QW_PLKG_PDP_TGN_D;
	{
		double complex *csi = malloc(400 * 52 * sizeof(double complex));

		assert_non_null(csi);
		for (int r = 0; r < 400; r++) {
			struct qw_plkg_channel *ch = NULL;

			assert_int_equal(qw_plkg_channel_new(&ch, &c, 900 + (uint64_t)r), 0);
			qw_plkg_channel_freq(ch, QW_PLKG_LINK_AB, 0.0, csi + r * 52);
			qw_plkg_channel_free(ch);
		}
		assert_int_equal(qw_plkg_klt_new_samples(&ks, csi, 400, 52, 0.99), 0);
		assert_true(fabs(qw_plkg_klt_eigenvalues(ks)[0] / lam[0] - 1) < 0.25);
		free(csi);
	}
	/* DCT: orthonormal, so a vector in its span round-trips. */
	assert_int_equal(qw_plkg_klt_new_dct(&kd, 52, 52), 0);
	for (int i = 0; i < 52; i++)
		f[i] = cos(0.2 * i) + I * sin(0.1 * i * i);
	qw_plkg_klt_apply(kd, f, feat);
	sum = 0;
	for (int i = 0; i < 104; i++)
		sum += feat[i] * feat[i];
	{
		double en = 0;

		for (int i = 0; i < 52; i++)
			en += creal(f[i] * conj(f[i]));
		assert_true(fabs(sum - en) < 1e-9);
	}
	{
		struct qw_plkg_klt *bad = NULL;

		assert_int_equal(qw_plkg_klt_new_dct(&bad, 52, 53), QW_EINVAL);
		assert_null(bad);
	}
	qw_plkg_klt_free(k);
	qw_plkg_klt_free(kb);
	qw_plkg_klt_free(ks);
	qw_plkg_klt_free(kd);
	free(cov);
}

static void test_bits_for_rho(void **state)
{
	unsigned prev = 0;

	(void)state;
	assert_int_equal(qw_plkg_bits_for_rho(0.0, 8), 0);
	assert_int_equal(qw_plkg_bits_for_rho(0.9, 8), 0);
	/* sqrt(1 - rho^2) = 0.3 / 4 -> 2 bits. */
	assert_int_equal(qw_plkg_bits_for_rho(sqrt(1 - 0.075 * 0.075) + 1e-12, 8), 2);
	assert_int_equal(qw_plkg_bits_for_rho(1.0, 5), 5);
	for (double x = 0.5; x < 1.0; x += 0.001) {
		unsigned b = qw_plkg_bits_for_rho(x, 8);

		assert_true(b >= prev);
		prev = b;
	}
}

/* Raw key disagreement on the simulated channel. Per-subcarrier amplitude
 * streams over blocks of 100 probes, 1-bit multi-bit quantizer. Returns the
 * Alice/Bob KDR and, in *eve, the better (lower) of Eve's two KDRs against
 * Alice on the same samples. */
static double kdr_run(double snr_db, double eve_wl, double *eve)
{
	enum { NP = 400, BLK = 100, NSC = 52 };
	struct qw_plkg_config c;
	struct qw_plkg_channel *ch = NULL;
	double complex a[NSC], b[NSC], ea[NSC], eb[NSC];
	double *fa = malloc(NP * NSC * sizeof(double)), *fb = malloc(NP * NSC * sizeof(double));
	double *f1 = malloc(NP * NSC * sizeof(double)), *f2 = malloc(NP * NSC * sizeof(double));
	struct qw_bitvec *va = qw_bitvec_new(0), *vb = qw_bitvec_new(0), *v1 = qw_bitvec_new(0),
			 *v2 = qw_bitvec_new(0);
	double kdr, k1, k2;

	assert_true(fa && fb && f1 && f2 && va && vb && v1 && v2);
	qw_plkg_config_default(&c);
	c.snr_db = snr_db;
	c.eve_snr_db = snr_db;
	c.eve_distance_m = eve_wl * qw_plkg_wavelength(&c);
	assert_int_equal(qw_plkg_channel_new(&ch, &c, 2024), 0);
	for (int p = 0; p < NP; p++) {
		struct qw_plkg_probe pr = { 0, a, b, ea, eb };

		qw_plkg_probe_next(ch, &pr);
		for (int k = 0; k < NSC; k++) {
			fa[p * NSC + k] = cabs(a[k]);
			fb[p * NSC + k] = cabs(b[k]);
			f1[p * NSC + k] = cabs(ea[k]);
			f2[p * NSC + k] = cabs(eb[k]);
		}
	}
	for (int blk = 0; blk < NP / BLK; blk++) {
		for (int k = 0; k < NSC; k++) {
			size_t off = (size_t)blk * BLK * NSC + (size_t)k;
			uint16_t la[BLK], lb[BLK], l1[BLK], l2[BLK];
			uint8_t ka[BLK], kb[BLK], k1b[BLK], k2b[BLK];

			assert_int_equal(qw_plkg_quant_multibit(fa + off, BLK, NSC, 1, 0, la, ka), 0);
			assert_int_equal(qw_plkg_quant_multibit(fb + off, BLK, NSC, 1, 0, lb, kb), 0);
			assert_int_equal(qw_plkg_quant_multibit(f1 + off, BLK, NSC, 1, 0, l1, k1b), 0);
			assert_int_equal(qw_plkg_quant_multibit(f2 + off, BLK, NSC, 1, 0, l2, k2b), 0);
			assert_int_equal(qw_plkg_quant_pack(la, ka, kb, BLK, 1, va), 0);
			assert_int_equal(qw_plkg_quant_pack(lb, ka, kb, BLK, 1, vb), 0);
			/* Eve guesses on the samples the legitimate ends kept. */
			assert_int_equal(qw_plkg_quant_pack(l1, ka, kb, BLK, 1, v1), 0);
			assert_int_equal(qw_plkg_quant_pack(l2, ka, kb, BLK, 1, v2), 0);
		}
	}
	assert_true(va->nbits == (size_t)NP * NSC);
	kdr = (double)qw_bitvec_hamming(va, vb) / (double)va->nbits;
	k1 = (double)qw_bitvec_hamming(va, v1) / (double)va->nbits;
	k2 = (double)qw_bitvec_hamming(va, v2) / (double)va->nbits;
	*eve = fmin(k1, k2);
	qw_bitvec_free(va);
	qw_bitvec_free(vb);
	qw_bitvec_free(v1);
	qw_bitvec_free(v2);
	free(fa);
	free(fb);
	free(f1);
	free(f2);
	qw_plkg_channel_free(ch);
	return kdr;
}

static void test_kdr_snr(void **state)
{
	double e, k0 = kdr_run(0.0, 0.5, &e), k10 = kdr_run(10.0, 0.5, &e),
		  k20 = kdr_run(20.0, 0.5, &e), k30 = kdr_run(30.0, 0.5, &e);

	(void)state;
	assert_true(k0 > k10 && k10 > k20 && k20 > k30);
	assert_true(k0 > 0.1 && k30 < 0.05);
}

static void test_kdr_eve(void **state)
{
	double e0, e5, e10, k;

	(void)state;
	/* Eve at the terminal sees its channel: about the legitimate KDR. */
	k = kdr_run(20.0, 0.0, &e0);
	assert_true(e0 < k + 0.05);
	/* At half a wavelength and beyond: amplitudes nearly independent
	 * (amplitude correlation ~ J0^2 = 0.09 at 0.5, 0.05 at 1 wavelength). */
	kdr_run(20.0, 0.5, &e5);
	kdr_run(20.0, 1.0, &e10);
	assert_true(fabs(e5 - 0.5) < 0.07);
	assert_true(fabs(e10 - 0.5) < 0.07);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gray),
		cmocka_unit_test(test_guard),
		cmocka_unit_test(test_multibit),
		cmocka_unit_test(test_pack),
		cmocka_unit_test(test_klt),
		cmocka_unit_test(test_bits_for_rho),
		cmocka_unit_test(test_kdr_snr),
		cmocka_unit_test(test_kdr_eve),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
