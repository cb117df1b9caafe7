/* Parameter estimation for decoy-state BB84: the optics model, decoy-state
 * bounds on the single-photon yield and error (asymptotic), the finite-key
 * bounds, and the one audited secret-length computation.
 *
 * Sources (equation numbers as printed in the papers; see docs/theory.md):
 *   [MQZL] X. Ma, B. Qi, Y. Zhao, H.-K. Lo, "Practical decoy state for quantum
 *          key distribution", PRA 72, 012326 (2005), arXiv:quant-ph/0503005.
 *   [LCWXZ] C. C. W. Lim, M. Curty, N. Walenta, F. Xu, H. Zbinden, "Concise
 *          security bounds for practical decoy-state quantum key distribution",
 *          PRA 89, 022307 (2014).
 *
 * Everything here is pure arithmetic on doubles: no allocation, no I/O. The
 * estimators take MEASURED gains, error rates and counts, so the distillation
 * chain runs them on what a link observed; the model functions only predict
 * what an honest link would observe. */
#ifndef QWAVE_ESTIMATE_H
#define QWAVE_ESTIMATE_H

#include <stdint.h>

#include "qwave/error.h"

/* ---- entropy ---------------------------------------------------------- */

/* Binary entropy h(p) = -p log2 p - (1-p) log2(1-p) in bits. h(0) = h(1) = 0
 * exactly; p outside [0, 1] is clamped to the nearest end; NaN gives NaN. */
double qw_h2(double p);

/* Inverse of h on the branch [0, 1/2]: the p in [0, 1/2] with h(p) = y.
 * y <= 0 gives 0, y >= 1 gives 1/2, NaN gives NaN. Accurate to ~1e-15. */
double qw_h2_inv(double y);

/* ---- optics model [MQZL Sec. 2] ----------------------------------------- */

/* A fiber link with a threshold-detector receiver. */
struct qw_optics_params {
	double alpha_db_per_km; /* fiber loss coefficient (dB/km) */
	double eta_bob;         /* Bob's transmittance x detector efficiency */
	double y0;              /* background yield: click probability per pulse with no signal */
	double e_det;           /* probability that a photon hits the wrong detector */
	double e0;              /* error rate of a background click (1/2: random) */
};

/* Fill p with the GYS parameters used by [MQZL] Table I (C. Gobby, Z. Yuan,
 * A. Shields, APL 84, 3762 (2004)): alpha 0.21 dB/km, eta_Bob 0.045,
 * Y0 1.7e-6, e_det 0.033, e0 0.5. */
void qw_optics_gys(struct qw_optics_params *p);

/* 0 if every field of p is finite and physical (alpha >= 0, 0 < eta_bob <= 1,
 * 0 <= y0 < 1, 0 <= e_det <= 1/2, 0 <= e0 <= 1), QW_EINVAL otherwise. */
QW_WUR int qw_optics_check(const struct qw_optics_params *p);

/* Overall transmittance eta = 10^(-alpha L / 10) * eta_Bob [MQZL eq. (2)-(3)]
 * for a fiber of distance_km >= 0. */
double qw_optics_eta(const struct qw_optics_params *p, double distance_km);

/* Expected gain Q and QBER E of pulses of mean photon number intensity >= 0
 * over distance_km of fiber [MQZL Sec. 2]:
 *   Q = Y0 + 1 - exp(-eta intensity),
 *   E Q = e0 Y0 + e_det (1 - exp(-eta intensity)).
 * gain/qber may be NULL when not wanted. Returns 0, or QW_EINVAL for bad p,
 * negative or non-finite distance or intensity. */
QW_WUR int qw_decoy_model(const struct qw_optics_params *p, double distance_km,
			  double intensity, double *gain, double *qber);

/* ---- asymptotic decoy-state bounds [MQZL] ------------------------------- */

/* What Alice and Bob measured, per intensity (gains Q are detections per
 * pulse sent at that intensity, E the QBER of those detections). */
struct qw_decoy_obs {
	double mu;    /* signal intensity */
	double nu;    /* weak decoy intensity (nu1 of the two-decoy protocol) */
	double nu2;   /* second decoy (two-decoy only; 0 = vacuum) */
	double q_mu, e_mu;
	double q_nu, e_nu;
	double q_nu2, e_nu2; /* two-decoy only */
	double y0;    /* measured vacuum gain (vacuum+weak only) */
};

/* Estimates of the single-photon contribution. */
struct qw_decoy_bounds {
	double y0; /* background yield used (measured, or its lower bound) */
	double y1; /* single-photon yield (lower bound, or exact) */
	double e1; /* single-photon error rate (upper bound, or exact), in [0, 1/2] */
	double q1; /* single-photon gain of the signal: y1 mu e^-mu */
};

/* Infinite decoys: the exact Y1 = Y0 + eta, e1 = (e0 Y0 + e_det eta) / Y1
 * of the model [MQZL Sec. 2, Sec. 3.1] at intensity mu > 0. 0 or QW_EINVAL. */
QW_WUR int qw_decoy_exact(const struct qw_optics_params *p, double distance_km, double mu,
			  struct qw_decoy_bounds *out);

/* Vacuum + weak decoy [MQZL Sec. 3.4, eqs. (34), (35), (37)] from obs->mu,
 * nu, q_mu, q_nu, e_nu and y0 (the measured vacuum gain). Needs
 * 0 < nu < mu. A bound that comes out negative is reported as y1 = 0,
 * e1 = 1/2 (nothing certified) and is not an error. 0 or QW_EINVAL. */
QW_WUR int qw_decoy_bounds_vacuum_weak(const struct qw_decoy_obs *obs,
				       struct qw_decoy_bounds *out);

/* General two weak decoys nu1 = obs->nu, nu2 = obs->nu2 [MQZL Sec. 3.2,
 * eqs. (18), (22)], with Y0 lower-bounded from the decoys themselves
 * (obs->y0 is ignored). Needs 0 <= nu2 < nu1 and nu1 + nu2 < mu [MQZL
 * eq. (13)]. 0 or QW_EINVAL. */
QW_WUR int qw_decoy_bounds_two_decoy(const struct qw_decoy_obs *obs,
				     struct qw_decoy_bounds *out);

/* GLLP key rate per pulse [MQZL eq. (1)]:
 *   R = q { -Q_mu f h(E_mu) + Q1 [1 - h(e1)] },
 * clamped at 0. q is the sifting/protocol factor (1/2 for BB84), f the
 * error-correction inefficiency (>= 1). Returns the rate, or 0 when any
 * input is non-finite. */
double qw_decoy_gllp_rate(double q, double f, double q_mu, double e_mu,
			  const struct qw_decoy_bounds *b);

enum qw_decoy_method {
	QW_DECOY_INFINITE = 0,
	QW_DECOY_VACUUM_WEAK = 1,
	QW_DECOY_TWO_DECOY = 2,
};

/* One point of the model's key-rate curve. */
struct qw_keyrate_point {
	double distance_km, eta;
	double gain, qber;          /* of the signal intensity */
	struct qw_decoy_bounds b;   /* y1, e1, q1 */
	double key_rate;            /* GLLP, per pulse sent */
};

/* Key rate the model predicts at distance_km: the model's gains/QBERs are fed
 * to the chosen estimator exactly as measured data would be. mu, nu, nu2 as
 * in struct qw_decoy_obs (nu, nu2 unused for QW_DECOY_INFINITE). 0 or
 * QW_EINVAL. */
QW_WUR int qw_decoy_keyrate(const struct qw_optics_params *p, double distance_km,
			    enum qw_decoy_method method, double mu, double nu, double nu2,
			    double q, double f, struct qw_keyrate_point *out);

/* ---- finite key [LCWXZ] ------------------------------------------------- */

#define QW_FINITE_NINT 3 /* intensities mu1 (signal) > mu2 > mu3 (vacuum-like) */

/* Counts of one block, per intensity k (index 0 = mu1, 1 = mu2, 2 = mu3).
 * Doubles so the model's expected counts fit too (exact up to 2^53). */
struct qw_finite_counts {
	double mu[QW_FINITE_NINT]; /* mu1 > mu2 + mu3, mu2 > mu3 >= 0 */
	double p[QW_FINITE_NINT];  /* probability Alice picks each intensity */
	double n_x[QW_FINITE_NINT]; /* key-basis (X) detections, both chose X */
	double n_z[QW_FINITE_NINT]; /* test-basis (Z) detections */
	double m_z[QW_FINITE_NINT]; /* bit errors among the Z detections */
};

/* Bounds on the key block X_A, and the numbers they came from. */
struct qw_finite_bounds {
	double n_x;        /* block size: sum of n_x[k] (bits) */
	double s_x0, s_x1; /* lower bounds: vacuum / single-photon events in X [eqs. (2), (3)] */
	double s_z0, s_z1; /* the same in Z */
	double v_z1;       /* upper bound: bit errors of the single photons in Z [eq. (4)] */
	double phi_x;      /* upper bound: phase error rate of the X single photons [eq. (5)], <= 1/2 */
};

/* Security parameters of a block. */
struct qw_finite_eps {
	double eps_sec; /* secrecy (qwave default 1e-10) */
	double eps_cor; /* correctness (qwave default 1e-15) */
};

/* [LCWXZ] eqs. (2)-(5) on observed counts c: Hoeffding deviations with
 * failure probability eps_sec/21 each. Bounds that come out negative are
 * clamped to 0; phi_x is 1/2 when nothing is certified. Returns 0, or
 * QW_EINVAL when the intensities violate mu1 > mu2 + mu3, mu2 > mu3 >= 0, a
 * probability is not in (0, 1), a count is negative/non-finite, or eps_sec is
 * not in (0, 1). */
QW_WUR int qw_finite_bounds(const struct qw_finite_counts *c, double eps_sec,
			    struct qw_finite_bounds *out);

/* The same bounds with every statistical term removed (Hoeffding deltas 0,
 * gamma 0; no failure probability): [LCWXZ] eqs. (2)-(5) on the counts
 * taken as exact expectations. This is the N -> infinity limit of
 * qw_finite_bounds() (the rate_limit of qw_finite_model()), and what the
 * link's "asymptotic" mode applies to measured counts: optimistic for any
 * finite block. 0 or QW_EINVAL as qw_finite_bounds(). */
QW_WUR int qw_finite_bounds_asymptotic(const struct qw_finite_counts *c,
				       struct qw_finite_bounds *out);

/* THE secret-length computation: every key that leaves the distillation chain
 * is sized here, and nowhere else. [LCWXZ] eq. (1):
 *   l = floor( s_X0 + s_X1 (1 - h(phi_X)) - leak_ec - 6 log2(21/eps_sec)
 *              - log2(2/eps_cor) ),
 * with h(phi_X) taken as 1 for phi_X >= 1/2, and l capped at b->n_x (no key is
 * longer than its block). leak_ec is every bit disclosed by error correction
 * (the error-verification hash is accounted for by the eps_cor term).
 * *len is 0 when the block must be dropped. Returns 0, or QW_EINVAL for
 * negative/non-finite inputs or eps outside (0, 1); then *len = 0. */
QW_WUR int qw_secret_length(const struct qw_finite_bounds *b, double leak_ec,
			    const struct qw_finite_eps *eps, uint64_t *len);

/* Asymptotic bounds packaged for qw_secret_length(): for a block of n_x
 * detections of the signal (intensity mu, gain q_mu) it sets s_x0 =
 * n_x Y0 e^-mu / q_mu, s_x1 = n_x Q1 / q_mu, phi_x = e1 (no Z-basis fields).
 * For distillation running with asymptotic decoy estimates. 0 or QW_EINVAL. */
QW_WUR int qw_decoy_block_bounds(const struct qw_decoy_bounds *b, double mu, double q_mu,
				 double n_x, struct qw_finite_bounds *out);

/* Protocol choices of the [LCWXZ] asymmetric BB84. */
struct qw_finite_protocol {
	double mu[QW_FINITE_NINT];
	double p[QW_FINITE_NINT];
	double q_x;  /* probability of choosing the key basis X (each party) */
	double f_ec; /* error-correction inefficiency: leak = n_X f h(E_X) */
	struct qw_finite_eps eps;
};

/* Defaults for intensities mu1 = mu, mu2 = nu, mu3 = nu2: p = (0.70, 0.20,
 * 0.10), q_x = 0.9, f_ec = 1.22, eps_sec 1e-10, eps_cor 1e-15. */
void qw_finite_protocol_default(struct qw_finite_protocol *pr, double mu, double nu, double nu2);

/* What the model predicts for one block. */
struct qw_finite_result {
	double pulses;       /* N: pulses Alice sends to fill the block */
	struct qw_finite_counts counts; /* expected counts */
	struct qw_finite_bounds b;
	double e_x;          /* QBER of the key basis */
	double leak_ec;      /* bits */
	double length_real;  /* eq. (1) before flooring/clamping (negative: no key) */
	uint64_t length;     /* secret bits (qw_secret_length) */
	double rate;         /* length / pulses: secret bits per pulse */
	double rate_limit;   /* same protocol with N -> infinity (no fluctuations,
				no eps terms): the rate this block size approaches */
};

/* Finite-key length and rate for a block of n_x key-basis detections
 * (n_x >= 1) on the model link at distance_km: expected counts n_{X,k} =
 * N p_k q_x^2 Q_k, n_{Z,k} = N p_k (1-q_x)^2 Q_k, m_{Z,k} = n_{Z,k} E_k, then
 * qw_finite_bounds() and qw_secret_length() as on measured data. 0 or
 * QW_EINVAL. */
QW_WUR int qw_finite_model(const struct qw_optics_params *p, double distance_km,
			   const struct qw_finite_protocol *pr, double n_x,
			   struct qw_finite_result *out);

/* Choose mu1, mu2, p_mu1, p_mu2 and q_x (mu3, f_ec and eps as given in *pr)
 * to maximise the model's finite-key rate for a block of n_x bits, as
 * [LCWXZ] Sec. IV does. *pr is the first starting point and must be valid
 * for qw_finite_model(); on success it holds the best protocol found and
 * *out its result (rate 0 if no choice yields a key). Local search: the result
 * is a good choice, not a proven optimum. 0 or QW_EINVAL. */
QW_WUR int qw_finite_optimize(const struct qw_optics_params *p, double distance_km,
			      struct qw_finite_protocol *pr, double n_x,
			      struct qw_finite_result *out);

/* Expected key-basis detections per pulse of protocol pr on the model link:
 * sum_k p_k q_x^2 Q_k ([LCWXZ] Sec. II: both parties choose X). 0 when an
 * input is invalid. */
double qw_finite_key_per_pulse(const struct qw_optics_params *p, double distance_km,
			       const struct qw_finite_protocol *pr);

/* qw_finite_model() for a block of `pulses` pulses instead of a block of
 * n_x bits: n_x = pulses qw_finite_key_per_pulse() (its expectation). This
 * is what a link that sends `pulses` pulses per block should expect. 0, or
 * QW_EINVAL (as qw_finite_model(), or fewer than one expected key bit). */
QW_WUR int qw_finite_model_pulses(const struct qw_optics_params *p, double distance_km,
				  const struct qw_finite_protocol *pr, double pulses,
				  struct qw_finite_result *out);

/* qw_finite_optimize() for a fixed number of pulses per block (the
 * constraint a link has: it sends a given number of pulses, and how many
 * key bits they yield depends on the protocol): maximises length/pulses
 * over mu1, mu2, p_mu1, p_mu2 and q_x. Same contract otherwise. */
QW_WUR int qw_finite_optimize_pulses(const struct qw_optics_params *p, double distance_km,
				     struct qw_finite_protocol *pr, double pulses,
				     struct qw_finite_result *out);

#endif
