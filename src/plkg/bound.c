/* Information-theoretic key-rate bounds of the configured PLKG channel:
 * mutual information between Alice's and Bob's estimates, and the
 * secret-key rate bound I(X;Y|Z) with Eve, for jointly Gaussian estimates.
 * Derivation in docs/plkg.md, section "Bounds". */
#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plkg/plkg_internal.h"
#include "qwave/plkg_channel.h"

double qw_plkg_mi_gauss(double rho)
{
	/* I(X;Y) = -log2(1 - |rho|^2) for one complex circular Gaussian pair
	 * (twice the real-valued -1/2 log2(1 - rho^2); Cover and Thomas,
	 * Elements of Information Theory, eq. 8.56 applied per real dimension). */
	return -log2(1.0 - rho * rho);
}

double qw_plkg_partial_corr(double r_xy, double r_xz, double r_yz)
{
	return (r_xy - r_xz * r_yz) / sqrt((1.0 - r_xz * r_xz) * (1.0 - r_yz * r_yz));
}

/* log2 det of the principal submatrix of cov (dimension d) on the index set
 * idx[0..m), by Cholesky; NaN unless positive definite. */
static double logdet_sub(const double *cov, unsigned d, const unsigned *idx, unsigned m)
{
	double l[8][8], ld = 0;

	for (unsigned i = 0; i < m; i++) {
		for (unsigned j = 0; j <= i; j++) {
			double s = cov[idx[i] * d + idx[j]];

			for (unsigned k = 0; k < j; k++)
				s -= l[i][k] * l[j][k];
			if (i == j) {
				if (!(s > 0))
					return NAN;
				l[i][i] = sqrt(s);
				ld += log2(s);
			} else {
				l[i][j] = s / l[j][j];
			}
		}
	}
	return ld;
}

double qw_plkg_mi_cond_gauss(const double *cov, unsigned nz)
{
	unsigned d = 2 + nz, xz[8], yz[8], z[8], all[8];

	QW_REQUIRE(cov != NULL && nz <= 6);
	xz[0] = 0;
	yz[0] = 1;
	for (unsigned i = 0; i < nz; i++) {
		xz[i + 1] = yz[i + 1] = z[i] = 2 + i;
	}
	for (unsigned i = 0; i < d; i++)
		all[i] = i;
	/* Complex circular Gaussian: h(V) = log2 det(pi e S_V), so
	 * I(X;Y|Z) = h(X,Z) + h(Y,Z) - h(Z) - h(X,Y,Z) and the pi e terms
	 * cancel. */
	return logdet_sub(cov, d, xz, nz + 1) + logdet_sub(cov, d, yz, nz + 1) -
	       (nz ? logdet_sub(cov, d, z, nz) : 0.0) - logdet_sub(cov, d, all, d);
}

/* Per scalar system (one KLT mode in frequency, one eigenmode of the probe
 * sequence in time) with scattered power s: Alice X = h_delta + n_A, Bob
 * Y = h + n_B, Eve Z_A = rho_e h + sqrt(1 - rho_e^2) w_A + n_E (Alice's
 * pilot at t), Z_B = rho_e h_delta + sqrt(1 - rho_e^2) w_B + n_E (Bob's at
 * t + delta), with h_delta = rho_t h + sqrt(1 - rho_t^2) v. */
static void mi_scalar(double s, double nab, double ne, double rt, double re, double *ixy,
		      double *ixy_z)
{
	double cov[16];

	if (!(s > 0)) {
		*ixy = 0;
		*ixy_z = 0;
		return;
	}
	*ixy = qw_plkg_mi_gauss(rt * s / (s + nab));
	cov[0] = s + nab;          /* X */
	cov[5] = s + nab;          /* Y */
	cov[10] = s + ne;          /* Z_A */
	cov[15] = s + ne;          /* Z_B */
	cov[1] = cov[4] = rt * s;  /* X, Y */
	cov[2] = cov[8] = rt * re * s;  /* X, Z_A */
	cov[3] = cov[12] = re * s;      /* X, Z_B */
	cov[6] = cov[9] = re * s;       /* Y, Z_A */
	cov[7] = cov[13] = rt * re * s; /* Y, Z_B */
	cov[11] = cov[14] = re * re * rt * s; /* Z_A, Z_B */
	*ixy_z = qw_plkg_mi_cond_gauss(cov, 2);
	if (!(*ixy_z >= 0))
		*ixy_z = 0; /* rounding at vanishing power */
}

int qw_plkg_bound_compute(const struct qw_plkg_config *cfg, struct qw_plkg_bound *b)
{
	double complex *full = NULL, *sub = NULL, *u = NULL;
	double *lam = NULL, *toe = NULL, *mu = NULL;
	unsigned *obs = NULL, nobs = 0, nw;
	double nab, ne, wd, total = 0, acc = 0, mutot = 0;
	int ret = QW_EINVAL;

	QW_REQUIRE(cfg != NULL && b != NULL);
	memset(b, 0, sizeof(*b));
	if (qw_plkg_config_check(cfg) < 0)
		goto out;
	ret = QW_ERANGE;
	if (cfg->n_sc > 4 * QW_PLKG_BOUND_MAX_OBS)
		goto out;
	ret = QW_ENOMEM;
	nw = cfg->bound_window;
	full = malloc((size_t)cfg->n_sc * cfg->n_sc * sizeof(double complex));
	obs = malloc(cfg->n_sc * sizeof(unsigned));
	toe = malloc((size_t)nw * nw * sizeof(double));
	mu = malloc((size_t)nw * sizeof(double));
	if (full == NULL || obs == NULL || toe == NULL || mu == NULL)
		goto out;
	ret = qw_plkg_freq_cov(cfg, full);
	if (ret < 0)
		goto out;
	/* Only pilot subcarriers are observed: interpolated estimates are
	 * functions of them and add no information. */
	for (unsigned k = 0; k < cfg->n_sc; k++)
		if (cfg->pilot == QW_PLKG_PILOT_LTF || k % cfg->pilot_step == 0)
			obs[nobs++] = k;
	/* Dense eigen-decompositions below are O(n^3): keep to Wi-Fi/LTE
	 * resource-block scales. */
	ret = QW_ERANGE;
	if (nobs > QW_PLKG_BOUND_MAX_OBS)
		goto out;
	ret = QW_ENOMEM;
	sub = malloc((size_t)nobs * nobs * sizeof(double complex));
	u = malloc((size_t)nobs * nobs * sizeof(double complex));
	lam = malloc((size_t)nobs * sizeof(double));
	if (sub == NULL || u == NULL || lam == NULL)
		goto out;
	for (unsigned i = 0; i < nobs; i++)
		for (unsigned j = 0; j < nobs; j++)
			sub[(size_t)i * nobs + j] = full[(size_t)obs[i] * cfg->n_sc + obs[j]];
	/* KLT across frequency: the estimates' covariance is C + sigma^2 I with
	 * white LS noise, so the eigenvectors of C decouple the modes and the
	 * unitary transform leaves the noise white with the same variance. */
	ret = plkg_eig_herm(sub, nobs, lam, u);
	if (ret < 0)
		goto out;
	nab = qw_plkg_ls_error_var(cfg, cfg->snr_db);
	ne = qw_plkg_ls_error_var(cfg, cfg->eve_snr_db);
	wd = 2.0 * M_PI * qw_plkg_doppler_hz(cfg);
	b->n_obs = nobs;
	b->doppler_hz = qw_plkg_doppler_hz(cfg);
	b->coherence_s = b->doppler_hz > 0 ? 0.423 / b->doppler_hz : INFINITY;
	b->rho_tdd = j0(wd * cfg->tdd_delay_s);
	b->rho_eve = qw_plkg_eve_rho(cfg);
	b->probe_corr = j0(wd / cfg->probe_rate_hz);
	for (unsigned k = 0; k < nobs; k++)
		total += fmax(0.0, lam[k]);
	for (unsigned k = 0; k < nobs; k++) {
		if (lam[k] > 1e-9 * lam[0])
			b->n_modes_total++;
		if (acc < 0.99 * total) {
			acc += fmax(0.0, lam[k]);
			b->n_modes++;
		}
	}
	for (unsigned k = 0; k < nobs; k++) {
		double i1, i2;

		mi_scalar(fmax(0.0, lam[k]), nab, ne, b->rho_tdd, b->rho_eve, &i1, &i2);
		b->iid_bits_per_probe += i1;
		b->iid_eve_bits_per_probe += i2;
	}
	/* Time: over a window of N probes every mode's sequence has covariance
	 * lambda_k R with R_ij = J0(w_d (i - j) / F_p) (Clarke), the same R for
	 * h, v, w_A, w_B; R's eigenvectors decouple the window into N scalar
	 * systems of power lambda_k mu_i, so I(X^N; Y^N) = sum_i sum_k
	 * I(lambda_k mu_i) and the per-probe bound is that sum over N (the
	 * Gaussian mutual-information rate as N grows, by Szego's theorem). */
	for (unsigned i = 0; i < nw; i++)
		for (unsigned j = 0; j < nw; j++)
			toe[(size_t)i * nw + j] =
				j0(wd * fabs((double)i - (double)j) / cfg->probe_rate_hz);
	ret = plkg_eig_sym(toe, nw, mu, NULL);
	if (ret < 0)
		goto out;
	for (unsigned i = 0; i < nw; i++)
		mutot += fmax(0.0, mu[i]);
	acc = 0;
	for (unsigned i = 0; i < nw; i++) {
		if (acc < 0.99 * mutot) {
			acc += fmax(0.0, mu[i]);
			b->eff_independent_probes_per_s += 1.0;
		}
		for (unsigned k = 0; k < nobs; k++) {
			double i1, i2;

			mi_scalar(fmax(0.0, lam[k]) * fmax(0.0, mu[i]), nab, ne, b->rho_tdd,
				  b->rho_eve, &i1, &i2);
			b->bits_per_probe += i1;
			b->eve_bits_per_probe += i2;
		}
	}
	b->bits_per_probe /= nw;
	b->eve_bits_per_probe /= nw;
	b->eff_independent_probes_per_s *= cfg->probe_rate_hz / nw;
	b->bits_per_s = b->bits_per_probe * cfg->probe_rate_hz;
	b->eve_bits_per_s = b->eve_bits_per_probe * cfg->probe_rate_hz;
	ret = 0;
out:
	free(full);
	free(sub);
	free(u);
	free(lam);
	free(obs);
	free(toe);
	free(mu);
	return ret;
}
