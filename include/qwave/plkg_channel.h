/* Wireless physical-layer key generation (PLKG): the channel model, channel
 * probing with least-squares estimation at each end, and the
 * information-theoretic key-rate bounds of the configured channel.
 *
 * Model (details, formulas and sources in docs/plkg.md):
 *  - OFDM: n_sc used subcarriers spaced sc_spacing_hz around fc_hz (defaults
 *    IEEE 802.11n 20 MHz, 52 data subcarriers, 5.2 GHz). The channel is
 *    evaluated per subcarrier, H[k] = sum_l h_l(t) exp(-j 2 pi f_k tau_l),
 *    which is exact for OFDM with a cyclic prefix longer than the delay
 *    spread.
 *  - Tapped delay line: IEEE 802.11n TGn model B or D (IEEE 802.11-03/940r4)
 *    or an exponential profile; total power normalised to 1 (E|H[k]|^2 = 1).
 *  - Each tap is Rayleigh (or Rician on the first tap when los is set, with
 *    a static line-of-sight part) with a Clarke/Jakes Doppler spectrum at
 *    f_D = v f_c / c, generated as a sum of sinusoids with random
 *    stratified arrival angles so that E[h(t+tau) h*(t)] = P J0(2 pi f_D tau).
 *  - TDD probing: Alice's pilot at time t is measured by Bob (H(t)); Bob's
 *    answer at t + tdd_delay_s is measured by Alice (H(t + delta)): the same
 *    reciprocal realisation, evolved.
 *  - Independent estimation noise at each end (AWGN at snr_db per received
 *    pilot symbol) and a fixed hardware transmit/receive gain-and-phase
 *    ripple per end and subcarrier; reciprocity calibration removes it
 *    when calibrate is set.
 *  - Eve at eve_distance_m from the terminal (Bob): each of her channels
 *    (to Alice and to Bob) has taps rho h_l + sqrt(1 - rho^2) w_l with
 *    rho = J0(2 pi d / lambda) and w_l an independent process with the same
 *    Doppler spectrum; the line-of-sight part is common to all.
 *
 * Everything random is drawn from a seeded struct qw_rng: the same seed and
 * configuration give the same channel, estimates and bits. */
#ifndef QWAVE_PLKG_CHANNEL_H
#define QWAVE_PLKG_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"

#define QW_PLKG_SPEED_OF_LIGHT 299792458.0
#define QW_PLKG_MAX_TAPS 64
#define QW_PLKG_MAX_SC 4096

enum qw_plkg_pdp {
	QW_PLKG_PDP_TGN_B,   /* residential, 15 ns rms, 9 taps 10 ns apart */
	QW_PLKG_PDP_TGN_D,   /* typical office, 50 ns rms, 18 taps to 390 ns */
	QW_PLKG_PDP_EXP,     /* exponential, exp_rms_s, taps 10 ns apart */
	QW_PLKG_PDP_FLAT,    /* one tap (flat fading) */
};

enum qw_plkg_pilot {
	QW_PLKG_PILOT_LTF,   /* 802.11 L-LTF: every subcarrier, n_ltf symbols */
	QW_PLKG_PILOT_COMB,  /* LTE/5G style: a pilot every pilot_step subcarriers */
};

struct qw_plkg_config {
	unsigned n_sc;           /* used subcarriers (DC excluded), 1..QW_PLKG_MAX_SC */
	double sc_spacing_hz;    /* subcarrier spacing */
	double fc_hz;            /* carrier frequency */
	enum qw_plkg_pdp pdp;
	double exp_rms_s;        /* rms delay spread of QW_PLKG_PDP_EXP */
	int los;                 /* nonzero: Rician first tap with k_factor_db */
	double k_factor_db;      /* LOS / scattered power of the first tap */
	double speed_kmh;        /* terminal speed (Doppler), >= 0 */
	double snr_db;           /* per received pilot symbol and subcarrier */
	double probe_rate_hz;    /* probe rounds per second */
	double tdd_delay_s;      /* Alice->Bob pilot to Bob->Alice pilot */
	enum qw_plkg_pilot pilot;
	unsigned n_ltf;          /* LTF symbols averaged (802.11 L-LTF: 2) */
	unsigned pilot_step;     /* comb spacing in subcarriers (COMB) */
	double mismatch_db;      /* std of each tx/rx chain's gain ripple */
	double mismatch_deg;     /* std of each tx/rx chain's phase ripple */
	int calibrate;           /* nonzero: reciprocity calibration at both ends */
	double eve_distance_m;   /* Eve's distance from Bob */
	double eve_snr_db;       /* Eve's pilot SNR */
	unsigned n_sinusoids;    /* per tap and process (sum of sinusoids) */
	unsigned bound_window;   /* probes per block in the temporal bound */
};

/* Defaults: 52 subcarriers x 312.5 kHz at 5.2 GHz, TGn model D (NLOS),
 * 3 km/h, 20 dB, 100 probes/s, TDD delay 0.5 ms, L-LTF with 2 symbols
 * (comb step 3 if COMB is chosen), ripple 0.5 dB / 3 deg with calibration
 * on, Eve at half a wavelength with 20 dB, 32 sinusoids, bound window 256. */
void qw_plkg_config_default(struct qw_plkg_config *c);
/* 0 if the configuration is usable, QW_EINVAL (non-finite or out-of-range
 * field) otherwise. */
QW_WUR int qw_plkg_config_check(const struct qw_plkg_config *c);

/* Derived quantities. */
double qw_plkg_wavelength(const struct qw_plkg_config *c);   /* m */
double qw_plkg_doppler_hz(const struct qw_plkg_config *c);   /* v f_c / c */
/* Correlation of Eve's taps with the legitimate ones, J0(2 pi d / lambda). */
double qw_plkg_eve_rho(const struct qw_plkg_config *c);
/* Baseband frequency of used subcarrier k (0..n_sc-1): 802.11 numbering
 * -n/2..-1, 1..n/2 (DC skipped) for even n, -(n-1)/2..(n-1)/2 for odd n. */
double qw_plkg_sc_freq(const struct qw_plkg_config *c, unsigned k);

/* The power-delay profile of the configuration: up to QW_PLKG_MAX_TAPS
 * delays (s) and powers (linear, summing to 1 including any LOS part).
 * *los_power is the static LOS power on tap 0 (0 when los is off). Returns
 * the number of taps, or QW_EINVAL. */
int qw_plkg_pdp(const struct qw_plkg_config *c, double *delay_s, double *power,
		double *los_power);
/* rms delay spread (s) of a profile of n taps. */
double qw_plkg_rms_delay(const double *delay_s, const double *power, int n);
/* Covariance of the scattered (non-LOS) part of H across the used
 * subcarriers: cov[k * n_sc + l] = E[H_k H_l^*] - LOS term. cov has
 * n_sc * n_sc entries. 0 or QW_EINVAL. */
QW_WUR int qw_plkg_freq_cov(const struct qw_plkg_config *c, double _Complex *cov);

/* ---- channel ------------------------------------------------------------ */

struct qw_plkg_channel;

/* Links whose frequency response can be read. */
enum qw_plkg_link {
	QW_PLKG_LINK_AB,  /* Alice <-> Bob (reciprocal) */
	QW_PLKG_LINK_AE,  /* Alice <-> Eve */
	QW_PLKG_LINK_BE,  /* Bob <-> Eve */
};

/* New channel realisation for cfg (copied), drawn from a generator seeded
 * with seed. The probe clock starts at t = 0. Returns 0, QW_EINVAL (bad
 * configuration) or QW_ENOMEM; *out is NULL on failure. */
QW_WUR int qw_plkg_channel_new(struct qw_plkg_channel **out,
			       const struct qw_plkg_config *cfg, uint64_t seed);
/* NULL accepted. */
void qw_plkg_channel_free(struct qw_plkg_channel *ch);
const struct qw_plkg_config *qw_plkg_channel_config(const struct qw_plkg_channel *ch);

/* Complex tap gains of link at time t (s), h[QW_PLKG_MAX_TAPS]; returns the
 * number of taps. Deterministic in (seed, link, t): the channel can be read
 * at any time, in any order. */
int qw_plkg_channel_taps(const struct qw_plkg_channel *ch, enum qw_plkg_link link,
			 double t, double _Complex *h);
/* True frequency response of link at time t over the n_sc subcarriers
 * (no ripple, no noise). */
void qw_plkg_channel_freq(const struct qw_plkg_channel *ch, enum qw_plkg_link link,
			  double t, double _Complex *H);

/* ---- probing and estimation -------------------------------------------- */

/* The estimates of one probe round, each n_sc long (caller-allocated). */
struct qw_plkg_probe {
	double t;                /* time of Alice's pilot */
	double _Complex *alice;  /* Alice's estimate of H(t + delta) */
	double _Complex *bob;    /* Bob's estimate of H(t) */
	double _Complex *eve_a;  /* Eve's estimate of Alice->Eve at t (or NULL) */
	double _Complex *eve_b;  /* Eve's estimate of Bob->Eve at t + delta (or NULL) */
};

/* One probe round at the channel's probe clock, which then advances by
 * 1 / probe_rate_hz. Every end transmits and estimates from known pilots
 * (least squares: L-LTF averaging over n_ltf symbols, or comb pilots with
 * linear interpolation across frequency), with its own estimation noise and
 * hardware ripple (removed by calibration when configured). NULL Eve
 * outputs skip Eve. Sets p->t. */
void qw_plkg_probe_next(struct qw_plkg_channel *ch, struct qw_plkg_probe *p);
/* The same at an explicit time t (the clock is not moved). */
void qw_plkg_probe_at(struct qw_plkg_channel *ch, double t, struct qw_plkg_probe *p);
/* Reset the probe clock to t. */
void qw_plkg_channel_seek(struct qw_plkg_channel *ch, double t);

/* LS estimate from received symbols: for each used subcarrier k,
 * H_hat[k] = (1/n_sym) sum_s rx[s][k] / pilot[k] (rx is n_sym x n_sc, row
 * major). pilot[k] must be nonzero. */
void qw_plkg_ls_estimate(const double _Complex *rx, const double _Complex *pilot,
			 unsigned n_sym, unsigned n_sc, double _Complex *H_hat);
/* Known pilot value on subcarrier k: the 802.11 L-LTF BPSK sequence (for
 * n_sc = 52; otherwise the sequence repeated), or the comb QPSK pilots. */
double _Complex qw_plkg_pilot_value(const struct qw_plkg_config *c, unsigned k);
/* Theoretical per-subcarrier LS error variance for pilot subcarriers:
 * 1 / (snr * n_ltf) for LTF, 1 / snr for comb pilots. */
double qw_plkg_ls_error_var(const struct qw_plkg_config *c, double snr_db);

/* ---- bounds --------------------------------------------------------------- */

/* Secret-key bounds of the configured channel for estimates that the ends
 * quantize probe by probe (docs/plkg.md, section "Bounds"). */
struct qw_plkg_bound {
	unsigned n_obs;             /* observed subcarriers (pilots) */
	unsigned n_modes;           /* KLT modes holding 99 % of scattered power */
	unsigned n_modes_total;     /* modes with nonzero power */
	double rho_tdd;             /* J0(2 pi f_D delta) */
	double rho_eve;             /* J0(2 pi d / lambda) */
	double doppler_hz;
	double coherence_s;         /* 0.423 / f_D (inf when static) */
	double probe_corr;          /* J0(2 pi f_D / probe_rate) */
	/* Probes treated as independent: sum_k -log2(1 - |rho_k|^2). */
	double iid_bits_per_probe;
	/* With the temporal correlation of the probes over bound_window
	 * probes (Gaussian mutual information per probe, I(X^N; Y^N) / N). */
	double bits_per_probe;
	/* Secret-key rate bound with Eve, I(X;Y|Z) per probe, Z = both of
	 * Eve's estimates (iid and temporal versions). */
	double iid_eve_bits_per_probe;
	double eve_bits_per_probe;
	double bits_per_s;          /* bits_per_probe * probe_rate */
	double eve_bits_per_s;
	double eff_independent_probes_per_s; /* temporal degrees of freedom */
};

#define QW_PLKG_BOUND_MAX_OBS 512

/* Compute the bounds for cfg. 0, QW_EINVAL, QW_ENOMEM, or QW_ERANGE when
 * more than QW_PLKG_BOUND_MAX_OBS subcarriers are observed (or n_sc exceeds
 * four times that): the dense eigen-decompositions are O(n^3). Takes about
 * 1 s for the default window of 256 probes (O(window^3)). */
QW_WUR int qw_plkg_bound_compute(const struct qw_plkg_config *cfg, struct qw_plkg_bound *b);

/* -log2(1 - |rho|^2): mutual information in bits of one complex circular
 * jointly Gaussian pair with correlation coefficient rho (|rho| < 1). */
double qw_plkg_mi_gauss(double rho);
/* I(X;Y|Z) in bits for complex circular jointly Gaussian X, Y, Z (real
 * covariance matrix cov, row major, of dimension 2 + nz: X, Y, then the nz
 * components of Z; nz <= 6). Uses
 * I = log2(det S_XZ det S_YZ / (det S_Z det S_XYZ)). Returns NaN when a
 * covariance block is not positive definite. */
double qw_plkg_mi_cond_gauss(const double *cov, unsigned nz);
/* Conditional correlation of X and Y given scalar Z from the pairwise
 * correlations: (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2)). */
double qw_plkg_partial_corr(double r_xy, double r_xz, double r_yz);

#endif
