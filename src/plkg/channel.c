/* PLKG channel model: OFDM over a tapped delay line with Clarke/Jakes
 * fading taps, and an eavesdropper whose taps are spatially correlated with
 * the legitimate ones. See include/qwave/plkg_channel.h and docs/plkg.md. */
#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plkg/plkg_internal.h"
#include "qwave/plkg_channel.h"
#include "qwave/rng.h"

#define NEG_INF_DB (-1000.0)

void qw_plkg_config_default(struct qw_plkg_config *c)
{
	QW_REQUIRE(c != NULL);
	memset(c, 0, sizeof(*c));
	c->n_sc = 52;
	c->sc_spacing_hz = 312.5e3;
	c->fc_hz = 5.2e9;
	c->pdp = QW_PLKG_PDP_TGN_D;
	c->exp_rms_s = 50e-9;
	c->los = 0;
	c->k_factor_db = 3.0;
	c->speed_kmh = 3.0;
	c->snr_db = 20.0;
	c->probe_rate_hz = 100.0;
	c->tdd_delay_s = 0.5e-3;
	c->pilot = QW_PLKG_PILOT_LTF;
	c->n_ltf = 2;
	c->pilot_step = 3;
	c->mismatch_db = 0.5;
	c->mismatch_deg = 3.0;
	c->calibrate = 1;
	c->eve_distance_m = 0.5 * QW_PLKG_SPEED_OF_LIGHT / c->fc_hz;
	c->eve_snr_db = 20.0;
	c->n_sinusoids = 32;
	c->bound_window = 256;
}

static int finite_nonneg(double x)
{
	return isfinite(x) && x >= 0.0;
}

int qw_plkg_config_check(const struct qw_plkg_config *c)
{
	QW_REQUIRE(c != NULL);
	if (c->n_sc < 1 || c->n_sc > QW_PLKG_MAX_SC)
		return QW_EINVAL;
	if (!(c->sc_spacing_hz > 0) || !isfinite(c->sc_spacing_hz) || !(c->fc_hz > 0) ||
	    !isfinite(c->fc_hz))
		return QW_EINVAL;
	if (c->pdp != QW_PLKG_PDP_TGN_B && c->pdp != QW_PLKG_PDP_TGN_D &&
	    c->pdp != QW_PLKG_PDP_EXP && c->pdp != QW_PLKG_PDP_FLAT)
		return QW_EINVAL;
	if (c->pdp == QW_PLKG_PDP_EXP && !(c->exp_rms_s > 0 && c->exp_rms_s < 1e-6))
		return QW_EINVAL;
	if (!isfinite(c->k_factor_db) || !finite_nonneg(c->speed_kmh) || !isfinite(c->snr_db) ||
	    !isfinite(c->eve_snr_db) || !(c->probe_rate_hz > 0) || !isfinite(c->probe_rate_hz) ||
	    !finite_nonneg(c->tdd_delay_s) || !finite_nonneg(c->mismatch_db) ||
	    !finite_nonneg(c->mismatch_deg) || !finite_nonneg(c->eve_distance_m))
		return QW_EINVAL;
	if (c->pilot == QW_PLKG_PILOT_LTF) {
		if (c->n_ltf < 1 || c->n_ltf > 16)
			return QW_EINVAL;
	} else if (c->pilot == QW_PLKG_PILOT_COMB) {
		if (c->pilot_step < 1 || c->pilot_step > c->n_sc)
			return QW_EINVAL;
	} else {
		return QW_EINVAL;
	}
	if (c->n_sinusoids < 1 || c->n_sinusoids > 1024)
		return QW_EINVAL;
	if (c->bound_window < 1 || c->bound_window > 2048)
		return QW_EINVAL;
	return 0;
}

double qw_plkg_wavelength(const struct qw_plkg_config *c)
{
	return QW_PLKG_SPEED_OF_LIGHT / c->fc_hz;
}

double qw_plkg_doppler_hz(const struct qw_plkg_config *c)
{
	return c->speed_kmh / 3.6 * c->fc_hz / QW_PLKG_SPEED_OF_LIGHT;
}

double qw_plkg_eve_rho(const struct qw_plkg_config *c)
{
	/* Clarke's isotropic-scattering spatial correlation (Jakes 1974). */
	return j0(2.0 * M_PI * c->eve_distance_m / qw_plkg_wavelength(c));
}

double qw_plkg_sc_freq(const struct qw_plkg_config *c, unsigned k)
{
	long n = (long)c->n_sc, idx;

	if (n % 2 == 0) {
		idx = (long)k - n / 2;
		if (idx >= 0)
			idx++; /* skip DC as 802.11 does */
	} else {
		idx = (long)k - (n - 1) / 2;
	}
	return (double)idx * c->sc_spacing_hz;
}

/* IEEE 802.11-03/940r4 (Erceg et al., "TGn Channel Models", May 2004),
 * the cluster power-delay profiles of models B and D, in dB relative to the
 * strongest tap; a tap's power is the sum over the clusters present there. */
static const double tgn_b_delay_ns[] = { 0, 10, 20, 30, 40, 50, 60, 70, 80 };
static const double tgn_b_db[][9] = {
	{ 0, -5.4, -10.8, -16.2, -21.7, NEG_INF_DB, NEG_INF_DB, NEG_INF_DB, NEG_INF_DB },
	{ NEG_INF_DB, NEG_INF_DB, -3.2, -6.3, -9.4, -12.5, -15.6, -18.7, -21.8 },
};
static const double tgn_d_delay_ns[] = { 0,  10, 20,  30,  40,  50,  60,  70,  80,
					 90, 110, 140, 170, 200, 240, 290, 340, 390 };
#define X NEG_INF_DB
static const double tgn_d_db[][18] = {
	{ 0, -0.9, -1.7, -2.6, -3.5, -4.3, -5.2, -6.1, -6.9, -7.8, -9.0, -11.1, -13.7, -16.3,
	  -19.3, -23.2, X, X },
	{ X, X, X, X, X, X, X, X, X, X, -6.6, -9.5, -12.1, -14.7, -17.4, -21.9, -25.5, X },
	{ X, X, X, X, X, X, X, X, X, X, X, X, X, X, -18.8, -23.2, -25.2, -26.7 },
};
#undef X

static double db2lin(double db)
{
	return db <= NEG_INF_DB ? 0.0 : pow(10.0, db / 10.0);
}

int qw_plkg_pdp(const struct qw_plkg_config *c, double *delay_s, double *power,
		double *los_power)
{
	int n = 0;
	double sum = 0.0;

	QW_REQUIRE(c != NULL && delay_s != NULL && power != NULL && los_power != NULL);
	switch (c->pdp) {
	case QW_PLKG_PDP_TGN_B:
		n = 9;
		for (int i = 0; i < n; i++) {
			delay_s[i] = tgn_b_delay_ns[i] * 1e-9;
			power[i] = db2lin(tgn_b_db[0][i]) + db2lin(tgn_b_db[1][i]);
		}
		break;
	case QW_PLKG_PDP_TGN_D:
		n = 18;
		for (int i = 0; i < n; i++) {
			delay_s[i] = tgn_d_delay_ns[i] * 1e-9;
			power[i] = db2lin(tgn_d_db[0][i]) + db2lin(tgn_d_db[1][i]) +
				   db2lin(tgn_d_db[2][i]);
		}
		break;
	case QW_PLKG_PDP_EXP: {
		/* Taps every 10 ns out to 10 rms delays, P_l ~ exp(-tau_l / rms)
		 * (the 802.11 exponential model; its rms spread is ~rms for rms
		 * well above the tap spacing). */
		double step = 10e-9;

		n = (int)ceil(10.0 * c->exp_rms_s / step) + 1;
		if (n > QW_PLKG_MAX_TAPS)
			n = QW_PLKG_MAX_TAPS;
		for (int i = 0; i < n; i++) {
			delay_s[i] = i * step;
			power[i] = exp(-delay_s[i] / c->exp_rms_s);
		}
		break;
	}
	case QW_PLKG_PDP_FLAT:
		n = 1;
		delay_s[0] = 0.0;
		power[0] = 1.0;
		break;
	default:
		return QW_EINVAL;
	}
	for (int i = 0; i < n; i++)
		sum += power[i];
	for (int i = 0; i < n; i++)
		power[i] /= sum;
	*los_power = 0.0;
	if (c->los) {
		/* TGn puts the LOS component on the first tap only: its power is
		 * split K/(K+1) static and 1/(K+1) scattered. */
		double k = pow(10.0, c->k_factor_db / 10.0);

		*los_power = power[0] * k / (k + 1.0);
		power[0] -= *los_power;
	}
	return n;
}

double qw_plkg_rms_delay(const double *delay_s, const double *power, int n)
{
	double p = 0, m1 = 0, m2 = 0;

	for (int i = 0; i < n; i++) {
		p += power[i];
		m1 += power[i] * delay_s[i];
		m2 += power[i] * delay_s[i] * delay_s[i];
	}
	m1 /= p;
	m2 /= p;
	return sqrt(fmax(0.0, m2 - m1 * m1));
}

int qw_plkg_freq_cov(const struct qw_plkg_config *c, double complex *cov)
{
	double delay[QW_PLKG_MAX_TAPS], power[QW_PLKG_MAX_TAPS], los;
	int n;

	QW_REQUIRE(c != NULL && cov != NULL);
	if (qw_plkg_config_check(c) < 0)
		return QW_EINVAL;
	n = qw_plkg_pdp(c, delay, power, &los);
	if (n < 0)
		return n;
	/* Uncorrelated scattering: E[H_k H_l^*] = sum_t P_t exp(-j 2 pi (f_k - f_l) tau_t). */
	for (unsigned k = 0; k < c->n_sc; k++) {
		for (unsigned l = 0; l < c->n_sc; l++) {
			double df = qw_plkg_sc_freq(c, k) - qw_plkg_sc_freq(c, l);
			double complex s = 0;

			for (int t = 0; t < n; t++)
				s += power[t] * cexp(-2.0 * M_PI * I * df * delay[t]);
			cov[(size_t)k * c->n_sc + l] = s;
		}
	}
	return 0;
}

static double complex ripple(struct qw_rng *r, double sd_db, double sd_deg)
{
	double g = pow(10.0, sd_db * qw_rng_gaussian(r) / 20.0);
	double ph = sd_deg * qw_rng_gaussian(r) * M_PI / 180.0;

	return g * cexp(I * ph);
}

void qw_plkg_channel_free(struct qw_plkg_channel *ch)
{
	if (ch == NULL)
		return;
	qw_rng_free(ch->rng);
	free(ch->cos_al);
	free(ch->phase);
	free(ch->steer);
	for (int e = 0; e < PLKG_NEND; e++) {
		free(ch->tx[e]);
		free(ch->rx[e]);
	}
	free(ch->pilot);
	free(ch->scratch);
	free(ch->hbuf);
	free(ch);
}

int qw_plkg_channel_new(struct qw_plkg_channel **out, const struct qw_plkg_config *cfg,
			uint64_t seed)
{
	struct qw_plkg_channel *ch = NULL;
	double power[QW_PLKG_MAX_TAPS], los_p;
	size_t nsin, nsc;
	int ret = QW_EINVAL;

	QW_REQUIRE(out != NULL && cfg != NULL);
	*out = NULL;
	if (qw_plkg_config_check(cfg) < 0)
		goto out;
	ret = QW_ENOMEM;
	ch = calloc(1, sizeof(*ch));
	if (ch == NULL)
		goto out;
	ch->cfg = *cfg;
	nsc = cfg->n_sc;
	ch->rng = qw_rng_new_seeded(seed);
	if (ch->rng == NULL)
		goto out;
	ch->ntaps = qw_plkg_pdp(cfg, ch->delay, power, &los_p);
	for (int l = 0; l < ch->ntaps; l++)
		ch->amp[l] = sqrt(power[l]);
	ch->los = sqrt(los_p) * cexp(2.0 * M_PI * I * qw_rng_uniform(ch->rng));
	ch->wd = 2.0 * M_PI * qw_plkg_doppler_hz(cfg);
	ch->rho_eve = qw_plkg_eve_rho(cfg);
	ch->m = cfg->n_sinusoids;
	nsin = (size_t)PLKG_NPROC * (size_t)ch->ntaps * ch->m;
	ch->cos_al = malloc(nsin * sizeof(double));
	ch->phase = malloc(nsin * sizeof(double));
	ch->steer = malloc((size_t)ch->ntaps * nsc * sizeof(double complex));
	ch->pilot = malloc(nsc * sizeof(double complex));
	ch->scratch = malloc((size_t)(cfg->n_ltf > 0 ? cfg->n_ltf : 1) * nsc *
			     sizeof(double complex));
	ch->hbuf = malloc(nsc * sizeof(double complex));
	if (!ch->cos_al || !ch->phase || !ch->steer || !ch->pilot || !ch->scratch || !ch->hbuf)
		goto out;
	for (int e = 0; e < PLKG_NEND; e++) {
		ch->tx[e] = malloc(nsc * sizeof(double complex));
		ch->rx[e] = malloc(nsc * sizeof(double complex));
		if (!ch->tx[e] || !ch->rx[e])
			goto out;
	}
	/* Sum of sinusoids with stratified random arrival angles: angle n of M
	 * is uniform on [2 pi n / M, 2 pi (n + 1) / M) and every phase is
	 * uniform and independent, so over realisations
	 * E[x(t + tau) x*(t)] = (1/M) sum_n E[exp(j w_d tau cos a_n)] = J0(w_d tau)
	 * exactly for any M (Clarke 1968; the stratification, as in Zheng and
	 * Xiao 2003, makes single realisations closer to Gaussian). */
	for (size_t i = 0; i < nsin; i++) {
		size_t n = i % ch->m;
		double a = 2.0 * M_PI * ((double)n + qw_rng_uniform(ch->rng)) / (double)ch->m;

		ch->cos_al[i] = cos(a);
		ch->phase[i] = 2.0 * M_PI * qw_rng_uniform(ch->rng);
	}
	for (int l = 0; l < ch->ntaps; l++)
		for (size_t k = 0; k < nsc; k++)
			ch->steer[(size_t)l * nsc + k] = cexp(
				-2.0 * M_PI * I * qw_plkg_sc_freq(cfg, (unsigned)k) * ch->delay[l]);
	for (int e = 0; e < PLKG_NEND; e++) {
		for (size_t k = 0; k < nsc; k++) {
			ch->tx[e][k] = ripple(ch->rng, cfg->mismatch_db, cfg->mismatch_deg);
			ch->rx[e][k] = ripple(ch->rng, cfg->mismatch_db, cfg->mismatch_deg);
		}
	}
	for (size_t k = 0; k < nsc; k++)
		ch->pilot[k] = qw_plkg_pilot_value(cfg, (unsigned)k);
	ch->t = 0.0;
	*out = ch;
	ch = NULL;
	ret = 0;
out:
	qw_plkg_channel_free(ch);
	return ret;
}

const struct qw_plkg_config *qw_plkg_channel_config(const struct qw_plkg_channel *ch)
{
	QW_REQUIRE(ch != NULL);
	return &ch->cfg;
}

static double complex sos(const struct qw_plkg_channel *ch, int proc, int tap, double t)
{
	size_t base = ((size_t)proc * (size_t)ch->ntaps + (size_t)tap) * ch->m;
	double re = 0, im = 0;

	for (unsigned n = 0; n < ch->m; n++) {
		double arg = ch->wd * t * ch->cos_al[base + n] + ch->phase[base + n];

		re += cos(arg);
		im += sin(arg);
	}
	return (re + I * im) / sqrt((double)ch->m);
}

int qw_plkg_channel_taps(const struct qw_plkg_channel *ch, enum qw_plkg_link link, double t,
			 double complex *h)
{
	double r, s;

	QW_REQUIRE(ch != NULL && h != NULL);
	r = ch->rho_eve;
	s = sqrt(fmax(0.0, 1.0 - r * r));
	for (int l = 0; l < ch->ntaps; l++) {
		double complex x = sos(ch, PLKG_PROC_H, l, t);

		/* Eve's taps: rho h + sqrt(1 - rho^2) w with w independent and of
		 * the same Doppler spectrum, so corr(h_E, h) = J0(2 pi d / lambda). */
		if (link == QW_PLKG_LINK_AE)
			x = r * x + s * sos(ch, PLKG_PROC_WA, l, t);
		else if (link == QW_PLKG_LINK_BE)
			x = r * x + s * sos(ch, PLKG_PROC_WB, l, t);
		h[l] = ch->amp[l] * x + (l == 0 ? ch->los : 0);
	}
	return ch->ntaps;
}

void qw_plkg_channel_freq(const struct qw_plkg_channel *ch, enum qw_plkg_link link, double t,
			  double complex *H)
{
	double complex h[QW_PLKG_MAX_TAPS];
	size_t nsc;

	QW_REQUIRE(ch != NULL && H != NULL);
	nsc = ch->cfg.n_sc;
	qw_plkg_channel_taps(ch, link, t, h);
	for (size_t k = 0; k < nsc; k++) {
		double complex s = 0;

		for (int l = 0; l < ch->ntaps; l++)
			s += h[l] * ch->steer[(size_t)l * nsc + k];
		H[k] = s;
	}
}

void qw_plkg_channel_seek(struct qw_plkg_channel *ch, double t)
{
	QW_REQUIRE(ch != NULL);
	ch->t = t;
}
