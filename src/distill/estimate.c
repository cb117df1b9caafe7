/* Decoy-state BB84 parameter estimation: [MQZL] asymptotic bounds, [LCWXZ]
 * finite-key bounds, and the audited secret length. References and the
 * meaning of every symbol: include/qwave/estimate.h and docs/theory.md. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"
#include "qwave/estimate.h"

/* Error rate of a click caused by background: its bit is random [MQZL Sec. 2]. */
#define E0_RANDOM 0.5

/* ln 2; M_LN2 is POSIX, not C17. */
#define QW_LN2 0.69314718055994530942

static int finite_nonneg(double x)
{
	return isfinite(x) && x >= 0.0;
}

double qw_h2(double p)
{
	if (isnan(p))
		return p;
	if (p <= 0.0 || p >= 1.0)
		return 0.0;
	/* log1p keeps the (1-p) term accurate for tiny p, where h ~ p log2(e/p). */
	return (-p * log(p) - (1.0 - p) * log1p(-p)) / QW_LN2;
}

double qw_h2_inv(double y)
{
	double lo = 0.0, hi = 0.5;

	if (isnan(y))
		return y;
	if (y <= 0.0)
		return 0.0;
	if (y >= 1.0)
		return 0.5;
	/* h is strictly increasing on [0, 1/2]: bisect until the bracket stops
	 * shrinking in double precision. */
	for (int i = 0; i < 200; i++) {
		double mid = 0.5 * (lo + hi);
		if (mid <= lo || mid >= hi)
			break;
		if (qw_h2(mid) < y)
			lo = mid;
		else
			hi = mid;
	}
	return 0.5 * (lo + hi);
}

void qw_optics_gys(struct qw_optics_params *p)
{
	QW_REQUIRE(p != NULL);
	/* [MQZL] Table I, GYS column. */
	p->alpha_db_per_km = 0.21;
	p->eta_bob = 0.045;
	p->y0 = 1.7e-6;
	p->e_det = 0.033;
	p->e0 = E0_RANDOM;
}

int qw_optics_check(const struct qw_optics_params *p)
{
	QW_REQUIRE(p != NULL);
	if (!finite_nonneg(p->alpha_db_per_km))
		return QW_EINVAL;
	if (!isfinite(p->eta_bob) || p->eta_bob <= 0.0 || p->eta_bob > 1.0)
		return QW_EINVAL;
	if (!finite_nonneg(p->y0) || p->y0 >= 1.0)
		return QW_EINVAL;
	if (!finite_nonneg(p->e_det) || p->e_det > 0.5)
		return QW_EINVAL;
	if (!finite_nonneg(p->e0) || p->e0 > 1.0)
		return QW_EINVAL;
	return 0;
}

double qw_optics_eta(const struct qw_optics_params *p, double distance_km)
{
	QW_REQUIRE(p != NULL);
	/* [MQZL] eq. (2): t_AB = 10^(-alpha l / 10); eq. (3): eta = t_AB eta_Bob. */
	return pow(10.0, -p->alpha_db_per_km * distance_km / 10.0) * p->eta_bob;
}

int qw_decoy_model(const struct qw_optics_params *p, double distance_km, double intensity,
		   double *gain, double *qber)
{
	double eta, signal, q;

	QW_REQUIRE(p != NULL);
	if (qw_optics_check(p) || !finite_nonneg(distance_km) || !finite_nonneg(intensity))
		return QW_EINVAL;
	eta = qw_optics_eta(p, distance_km);
	/* Detections caused by the signal: 1 - e^(-eta mu), i.e. the Poisson sum
	 * of eta_n = 1 - (1-eta)^n [MQZL eqs. (4)-(6)]; expm1 keeps it accurate
	 * when eta mu is tiny. */
	signal = -expm1(-eta * intensity);
	q = p->y0 + signal;           /* [MQZL] Q_mu = Y0 + 1 - e^(-eta mu) */
	if (gain)
		*gain = q;
	if (qber)                     /* [MQZL] E_mu Q_mu = e0 Y0 + e_det (1 - e^(-eta mu)) */
		*qber = q > 0.0 ? (p->e0 * p->y0 + p->e_det * signal) / q : 0.0;
	return 0;
}

static void bounds_nothing(struct qw_decoy_bounds *out, double y0)
{
	out->y0 = y0;
	out->y1 = 0.0;
	out->e1 = 0.5;
	out->q1 = 0.0;
}

/* Clamp an estimate into its meaningful range: a single-photon yield below 0
 * certifies nothing, and an error bound at or above 1/2 leaves no key
 * (h saturates at 1), so both collapse to "nothing certified". */
static void bounds_finish(struct qw_decoy_bounds *out, double mu, double y0, double y1, double e1)
{
	if (!(y1 > 0.0) || !isfinite(y1) || !isfinite(e1)) {
		bounds_nothing(out, y0);
		return;
	}
	if (y1 > 1.0)
		y1 = 1.0;
	if (e1 < 0.0)
		e1 = 0.0;
	if (e1 > 0.5)
		e1 = 0.5;
	out->y0 = y0;
	out->y1 = y1;
	out->e1 = e1;
	out->q1 = y1 * mu * exp(-mu); /* [MQZL] Q1 = Y1 mu e^-mu, eq. (35) */
}

int qw_decoy_exact(const struct qw_optics_params *p, double distance_km, double mu,
		   struct qw_decoy_bounds *out)
{
	double eta, y1, e1;

	QW_REQUIRE(p != NULL && out != NULL);
	if (qw_optics_check(p) || !finite_nonneg(distance_km) || !isfinite(mu) || mu <= 0.0)
		return QW_EINVAL;
	eta = qw_optics_eta(p, distance_km);
	/* [MQZL] Sec. 2: Y1 = Y0 + eta_1 with eta_1 = eta (the Y0 eta_1 cross term
	 * dropped, as in the paper, so that sum_n Y_n P_n(mu) equals Q_mu);
	 * e1 = (e0 Y0 + e_det eta_1) / Y1. */
	y1 = p->y0 + eta;
	e1 = (p->e0 * p->y0 + p->e_det * eta) / y1;
	bounds_finish(out, mu, p->y0, y1, e1);
	return 0;
}

static int obs_pair_ok(double q, double e)
{
	return finite_nonneg(q) && q <= 1.0 && finite_nonneg(e) && e <= 1.0;
}

int qw_decoy_bounds_vacuum_weak(const struct qw_decoy_obs *o, struct qw_decoy_bounds *out)
{
	double mu, nu, y0, y1, e1;

	QW_REQUIRE(o != NULL && out != NULL);
	mu = o->mu;
	nu = o->nu;
	if (!isfinite(mu) || !isfinite(nu) || !(nu > 0.0) || !(nu < mu))
		return QW_EINVAL;
	if (!obs_pair_ok(o->q_mu, o->e_mu) || !obs_pair_ok(o->q_nu, o->e_nu))
		return QW_EINVAL;
	if (!finite_nonneg(o->y0) || o->y0 > 1.0)
		return QW_EINVAL;
	y0 = o->y0;
	/* [MQZL] eq. (34):
	 * Y1 >= Y1^{L,v} = mu / (mu nu - nu^2) * ( Q_nu e^nu - Q_mu e^mu nu^2/mu^2
	 *                                          - (mu^2 - nu^2)/mu^2 Y0 ). */
	y1 = mu / (mu * nu - nu * nu) *
	     (o->q_nu * exp(nu) - o->q_mu * exp(mu) * nu * nu / (mu * mu) -
	      (mu * mu - nu * nu) / (mu * mu) * y0);
	if (!(y1 > 0.0)) {
		bounds_nothing(out, y0);
		return 0;
	}
	/* [MQZL] eq. (37): e1 <= e1^{U,v} = (E_nu Q_nu e^nu - e0 Y0) / (Y1^{L,v} nu). */
	e1 = (o->e_nu * o->q_nu * exp(nu) - E0_RANDOM * y0) / (y1 * nu);
	bounds_finish(out, mu, y0, y1, e1);
	return 0;
}

int qw_decoy_bounds_two_decoy(const struct qw_decoy_obs *o, struct qw_decoy_bounds *out)
{
	double mu, n1, n2, y0l, y1, e1, a1, a2;

	QW_REQUIRE(o != NULL && out != NULL);
	mu = o->mu;
	n1 = o->nu;
	n2 = o->nu2;
	/* [MQZL] eq. (13): the bound holds for 0 <= nu2 < nu1 and nu1 + nu2 < mu. */
	if (!isfinite(mu) || !isfinite(n1) || !isfinite(n2) || n2 < 0.0 || !(n2 < n1) ||
	    !(n1 + n2 < mu))
		return QW_EINVAL;
	if (!obs_pair_ok(o->q_mu, o->e_mu) || !obs_pair_ok(o->q_nu, o->e_nu) ||
	    !obs_pair_ok(o->q_nu2, o->e_nu2))
		return QW_EINVAL;
	a1 = o->q_nu * exp(n1);  /* Q_nu1 e^nu1 */
	a2 = o->q_nu2 * exp(n2); /* Q_nu2 e^nu2 */
	/* [MQZL] Sec. 3.2: Y0 >= Y0^L = max( (nu1 Q_nu2 e^nu2 - nu2 Q_nu1 e^nu1)
	 * / (nu1 - nu2), 0 ). For nu2 = 0 it is the measured vacuum gain. */
	y0l = (n1 * a2 - n2 * a1) / (n1 - n2);
	if (y0l < 0.0)
		y0l = 0.0;
	/* [MQZL] eq. (18): Y1 >= Y1^L = mu / (mu nu1 - mu nu2 - nu1^2 + nu2^2) *
	 *   ( Q_nu1 e^nu1 - Q_nu2 e^nu2 - (nu1^2 - nu2^2)/mu^2 (Q_mu e^mu - Y0^L) ). */
	y1 = mu / (mu * n1 - mu * n2 - n1 * n1 + n2 * n2) *
	     (a1 - a2 - (n1 * n1 - n2 * n2) / (mu * mu) * (o->q_mu * exp(mu) - y0l));
	if (!(y1 > 0.0)) {
		bounds_nothing(out, y0l);
		return 0;
	}
	/* [MQZL] eq. (22): e1 <= e1^U = (E_nu1 Q_nu1 e^nu1 - E_nu2 Q_nu2 e^nu2)
	 *                               / ((nu1 - nu2) Y1^L). */
	e1 = (o->e_nu * a1 - o->e_nu2 * a2) / ((n1 - n2) * y1);
	bounds_finish(out, mu, y0l, y1, e1);
	return 0;
}

double qw_decoy_gllp_rate(double q, double f, double q_mu, double e_mu,
			  const struct qw_decoy_bounds *b)
{
	double r;

	QW_REQUIRE(b != NULL);
	if (!isfinite(q) || !isfinite(f) || !isfinite(q_mu) || !isfinite(e_mu) ||
	    !isfinite(b->q1) || !isfinite(b->e1))
		return 0.0;
	/* [MQZL] eq. (1) (GLLP): R >= q { -Q_mu f(E_mu) H2(E_mu) + Q1 [1 - H2(e1)] }.
	 * An E above 1/2 is an inverted bit convention, not less leakage: h
	 * saturates at 1 there. */
	r = q * (-q_mu * f * (e_mu >= 0.5 ? 1.0 : qw_h2(e_mu)) +
		 b->q1 * (1.0 - (b->e1 >= 0.5 ? 1.0 : qw_h2(b->e1))));
	return r > 0.0 ? r : 0.0;
}

int qw_decoy_keyrate(const struct qw_optics_params *p, double distance_km,
		     enum qw_decoy_method method, double mu, double nu, double nu2, double q,
		     double f, struct qw_keyrate_point *out)
{
	struct qw_decoy_obs o = { 0 };
	int ret;

	QW_REQUIRE(p != NULL && out != NULL);
	if (!isfinite(q) || q <= 0.0 || q > 1.0 || !isfinite(f) || f < 1.0)
		return QW_EINVAL;
	if (!isfinite(mu) || mu <= 0.0)
		return QW_EINVAL;
	o.mu = mu;
	o.nu = nu;
	o.nu2 = nu2;
	out->distance_km = distance_km;
	ret = qw_decoy_model(p, distance_km, mu, &o.q_mu, &o.e_mu);
	if (ret)
		return ret;
	out->eta = qw_optics_eta(p, distance_km);
	out->gain = o.q_mu;
	out->qber = o.e_mu;
	switch (method) {
	case QW_DECOY_INFINITE:
		ret = qw_decoy_exact(p, distance_km, mu, &out->b);
		break;
	case QW_DECOY_VACUUM_WEAK:
		if (!finite_nonneg(nu))
			return QW_EINVAL;
		ret = qw_decoy_model(p, distance_km, nu, &o.q_nu, &o.e_nu);
		if (!ret)
			ret = qw_decoy_model(p, distance_km, 0.0, &o.y0, NULL);
		if (!ret)
			ret = qw_decoy_bounds_vacuum_weak(&o, &out->b);
		break;
	case QW_DECOY_TWO_DECOY:
		if (!finite_nonneg(nu) || !finite_nonneg(nu2))
			return QW_EINVAL;
		ret = qw_decoy_model(p, distance_km, nu, &o.q_nu, &o.e_nu);
		if (!ret)
			ret = qw_decoy_model(p, distance_km, nu2, &o.q_nu2, &o.e_nu2);
		if (!ret)
			ret = qw_decoy_bounds_two_decoy(&o, &out->b);
		break;
	default:
		return QW_EINVAL;
	}
	if (ret)
		return ret;
	out->key_rate = qw_decoy_gllp_rate(q, f, o.q_mu, o.e_mu, &out->b);
	return 0;
}

/* ---- finite key [LCWXZ] ---------------------------------------------- */

/* [LCWXZ] eq. (5): gamma(a, b, c, d) = sqrt( (c+d)(1-b)b / (c d ln 2)
 *                      * log2( (c+d) / (c d (1-b) b) * 21^2 / a^2 ) ). */
static double lim_gamma(double a, double b, double c, double d)
{
	double lg = log2((c + d) / (c * d * (1.0 - b) * b) * (21.0 * 21.0) / (a * a));
	double v;

	if (!(lg > 0.0))
		return 0.0;
	v = (c + d) * (1.0 - b) * b / (c * d * QW_LN2) * lg;
	return v > 0.0 ? sqrt(v) : 0.0;
}

static int finite_counts_ok(const struct qw_finite_counts *c)
{
	const double *mu = c->mu;
	double psum = 0.0;

	/* [LCWXZ] Sec. II: mu1 > mu2 + mu3 and mu2 > mu3 >= 0. */
	for (int k = 0; k < QW_FINITE_NINT; k++)
		if (!isfinite(mu[k]))
			return 0;
	if (!(mu[2] >= 0.0) || !(mu[1] > mu[2]) || !(mu[0] > mu[1] + mu[2]))
		return 0;
	for (int k = 0; k < QW_FINITE_NINT; k++) {
		if (!isfinite(c->p[k]) || !(c->p[k] > 0.0) || !(c->p[k] < 1.0))
			return 0;
		psum += c->p[k];
		if (!finite_nonneg(c->n_x[k]) || !finite_nonneg(c->n_z[k]) ||
		    !finite_nonneg(c->m_z[k]) || c->m_z[k] > c->n_z[k])
			return 0;
	}
	return fabs(psum - 1.0) <= 1e-9;
}

/* Lower bounds on the vacuum and single-photon events of one basis from the
 * per-intensity detections n[k] [LCWXZ eqs. (2), (3)], with Hoeffding
 * deviation delta (0 = no fluctuations). */
static void lim_s01(const struct qw_finite_counts *c, const double n[QW_FINITE_NINT],
		    double delta, double tau0, double tau1, double *s0, double *s1)
{
	const double *mu = c->mu;
	double np[QW_FINITE_NINT], nm[QW_FINITE_NINT];
	double v0, v1;

	/* n^{+-}_k = e^k / p_k (n_k +- delta) */
	for (int k = 0; k < QW_FINITE_NINT; k++) {
		np[k] = exp(mu[k]) / c->p[k] * (n[k] + delta);
		nm[k] = exp(mu[k]) / c->p[k] * (n[k] - delta);
	}
	/* eq. (2): s_0 >= tau0 (mu2 n^-_{mu3} - mu3 n^+_{mu2}) / (mu2 - mu3) */
	v0 = tau0 * (mu[1] * nm[2] - mu[2] * np[1]) / (mu[1] - mu[2]);
	if (!(v0 > 0.0))
		v0 = 0.0;
	/* eq. (3): s_1 >= tau1 mu1 [ n^-_{mu2} - n^+_{mu3} - (mu2^2 - mu3^2)/mu1^2
	 *            (n^+_{mu1} - s_0/tau0) ] / (mu1 (mu2 - mu3) - mu2^2 + mu3^2).
	 * The clamped s_0 is still a valid lower bound, and s_1 grows with it. */
	v1 = tau1 * mu[0] *
	     (nm[1] - np[2] -
	      (mu[1] * mu[1] - mu[2] * mu[2]) / (mu[0] * mu[0]) * (np[0] - v0 / tau0)) /
	     (mu[0] * (mu[1] - mu[2]) - mu[1] * mu[1] + mu[2] * mu[2]);
	if (!(v1 > 0.0))
		v1 = 0.0;
	*s0 = v0;
	*s1 = v1;
}

/* fluct = 0 drops every statistical term (Hoeffding deltas and gamma): the
 * N -> infinity limit of the same protocol. */
static int finite_bounds(const struct qw_finite_counts *c, double eps_sec, int fluct,
			 struct qw_finite_bounds *out)
{
	const double *mu = c->mu;
	double tau0 = 0.0, tau1 = 0.0, nx = 0.0, nz = 0.0, mz = 0.0;
	double ln_term, dx, dz, dm, mp1, mm2, v, b;

	if (!finite_counts_ok(c) || !isfinite(eps_sec) || !(eps_sec > 0.0) || !(eps_sec < 1.0))
		return QW_EINVAL;
	/* tau_n = sum_k e^-k k^n p_k / n!: probability that Alice sends n photons. */
	for (int k = 0; k < QW_FINITE_NINT; k++) {
		tau0 += exp(-mu[k]) * c->p[k];
		tau1 += exp(-mu[k]) * mu[k] * c->p[k];
		nx += c->n_x[k];
		nz += c->n_z[k];
		mz += c->m_z[k];
	}
	/* Hoeffding: delta(n, eps) = sqrt(n/2 ln(1/eps)), eps = eps_sec/21
	 * ([LCWXZ] definitions of n^{+-}_{X,k}, m^{+-}_{Z,k}). */
	ln_term = log(21.0 / eps_sec);
	dx = fluct ? sqrt(nx / 2.0 * ln_term) : 0.0;
	dz = fluct ? sqrt(nz / 2.0 * ln_term) : 0.0;
	dm = fluct ? sqrt(mz / 2.0 * ln_term) : 0.0;

	out->n_x = nx;
	lim_s01(c, c->n_x, dx, tau0, tau1, &out->s_x0, &out->s_x1);
	lim_s01(c, c->n_z, dz, tau0, tau1, &out->s_z0, &out->s_z1);

	/* eq. (4): v_{Z,1} <= tau1 (m^+_{Z,mu2} - m^-_{Z,mu3}) / (mu2 - mu3) */
	mp1 = exp(mu[1]) / c->p[1] * (c->m_z[1] + dm);
	mm2 = exp(mu[2]) / c->p[2] * (c->m_z[2] - dm);
	v = tau1 * (mp1 - mm2) / (mu[1] - mu[2]);
	if (!(v > 0.0))
		v = 0.0;
	out->v_z1 = v;

	/* eq. (5): phi_X <= v_{Z,1}/s_{Z,1} + gamma(eps_sec, v_{Z,1}/s_{Z,1},
	 * s_{Z,1}, s_{X,1}). */
	if (!(out->s_z1 > 0.0) || !(out->s_x1 > 0.0)) {
		out->phi_x = 0.5;
		return 0;
	}
	b = v / out->s_z1;
	if (b >= 0.5) {
		out->phi_x = 0.5;
		return 0;
	}
	if (fluct) {
		/* gamma vanishes at b = 0, where the formula stops being meaningful:
		 * floor b at one error in s_{Z,1} (qwave's choice; it can only raise
		 * phi, since b + gamma(b) grows with b on this range). */
		double bf = b < 1.0 / out->s_z1 ? 1.0 / out->s_z1 : b;
		if (bf >= 0.5) {
			out->phi_x = 0.5;
			return 0;
		}
		b = bf + lim_gamma(eps_sec, bf, out->s_z1, out->s_x1);
	}
	out->phi_x = b < 0.5 ? b : 0.5;
	return 0;
}

int qw_finite_bounds(const struct qw_finite_counts *c, double eps_sec,
		     struct qw_finite_bounds *out)
{
	QW_REQUIRE(c != NULL && out != NULL);
	return finite_bounds(c, eps_sec, 1, out);
}

int qw_finite_bounds_asymptotic(const struct qw_finite_counts *c, struct qw_finite_bounds *out)
{
	QW_REQUIRE(c != NULL && out != NULL);
	/* eps_sec only enters the statistical terms, which fluct = 0 drops. */
	return finite_bounds(c, 0.5, 0, out);
}

static int eps_ok(double e)
{
	return isfinite(e) && e > 0.0 && e < 1.0;
}

int qw_secret_length(const struct qw_finite_bounds *b, double leak_ec,
		     const struct qw_finite_eps *eps, uint64_t *len)
{
	double h, l;

	QW_REQUIRE(b != NULL && eps != NULL && len != NULL);
	*len = 0;
	if (!finite_nonneg(b->n_x) || !finite_nonneg(b->s_x0) || !finite_nonneg(b->s_x1) ||
	    !finite_nonneg(b->phi_x) || !finite_nonneg(leak_ec) || !eps_ok(eps->eps_sec) ||
	    !eps_ok(eps->eps_cor))
		return QW_EINVAL;
	/* A phase-error bound at or above 1/2 certifies no secrecy at all. */
	h = b->phi_x >= 0.5 ? 1.0 : qw_h2(b->phi_x);
	/* [LCWXZ] eq. (1):
	 * l = floor( s_X0 + s_X1 - s_X1 h(phi_X) - lambda_EC
	 *            - 6 log2(21/eps_sec) - log2(2/eps_cor) ). */
	l = b->s_x0 + b->s_x1 * (1.0 - h) - leak_ec - 6.0 * log2(21.0 / eps->eps_sec) -
	    log2(2.0 / eps->eps_cor);
	if (!(l >= 1.0))
		return 0;
	if (l > b->n_x)
		l = b->n_x;
	l = floor(l);
	/* n_x is an exact count, so l < 2^53 fits a uint64_t exactly. */
	if (l >= 9007199254740992.0)
		return QW_EINVAL;
	*len = (uint64_t)l;
	return 0;
}

int qw_decoy_block_bounds(const struct qw_decoy_bounds *b, double mu, double q_mu, double n_x,
			  struct qw_finite_bounds *out)
{
	QW_REQUIRE(b != NULL && out != NULL);
	if (!isfinite(mu) || !(mu > 0.0) || !isfinite(q_mu) || !(q_mu > 0.0) ||
	    !finite_nonneg(n_x) || !finite_nonneg(b->y0) || !finite_nonneg(b->q1) ||
	    !finite_nonneg(b->e1))
		return QW_EINVAL;
	/* Fractions of the signal detections due to vacuum (Y0 e^-mu / Q_mu) and
	 * to single photons (Q1 / Q_mu) [MQZL Sec. 2, GLLP tagging]. */
	out->n_x = n_x;
	out->s_x0 = n_x * b->y0 * exp(-mu) / q_mu;
	out->s_x1 = n_x * b->q1 / q_mu;
	if (out->s_x0 + out->s_x1 > n_x) {
		double scale = n_x / (out->s_x0 + out->s_x1);
		out->s_x0 *= scale;
		out->s_x1 *= scale;
	}
	out->s_z0 = 0.0;
	out->s_z1 = 0.0;
	out->v_z1 = 0.0;
	out->phi_x = b->e1 < 0.5 ? b->e1 : 0.5;
	return 0;
}

void qw_finite_protocol_default(struct qw_finite_protocol *pr, double mu, double nu, double nu2)
{
	QW_REQUIRE(pr != NULL);
	pr->mu[0] = mu;
	pr->mu[1] = nu;
	pr->mu[2] = nu2;
	pr->p[0] = 0.70;
	pr->p[1] = 0.20;
	pr->p[2] = 0.10;
	pr->q_x = 0.9;
	pr->f_ec = 1.22;
	pr->eps.eps_sec = 1e-10;
	pr->eps.eps_cor = 1e-15;
}

int qw_finite_model(const struct qw_optics_params *p, double distance_km,
		    const struct qw_finite_protocol *pr, double n_x, struct qw_finite_result *out)
{
	struct qw_finite_counts *c;
	struct qw_finite_bounds lim;
	double qk[QW_FINITE_NINT], ek[QW_FINITE_NINT];
	double px = 0.0, qx, qz, ex = 0.0, hx, l;
	int ret;

	QW_REQUIRE(p != NULL && pr != NULL && out != NULL);
	qx = pr->q_x;
	if (!isfinite(n_x) || !(n_x >= 1.0) || n_x > 9.0e15)
		return QW_EINVAL;
	if (!isfinite(qx) || !(qx > 0.0) || !(qx < 1.0) || !isfinite(pr->f_ec) || pr->f_ec < 1.0)
		return QW_EINVAL;
	for (int k = 0; k < QW_FINITE_NINT; k++) {
		ret = qw_decoy_model(p, distance_km, pr->mu[k], &qk[k], &ek[k]);
		if (ret)
			return ret;
		if (!isfinite(pr->p[k]) || !(pr->p[k] > 0.0))
			return QW_EINVAL;
		px += pr->p[k] * qx * qx * qk[k];
	}
	if (!(px > 0.0))
		return QW_EINVAL;
	/* N pulses fill the block: each yields a key-basis detection with
	 * probability sum_k p_k q_x^2 Q_k ([LCWXZ] Sec. II: both parties choose X). */
	out->pulses = n_x / px;
	c = &out->counts;
	qz = 1.0 - qx;
	for (int k = 0; k < QW_FINITE_NINT; k++) {
		c->mu[k] = pr->mu[k];
		c->p[k] = pr->p[k];
		c->n_x[k] = out->pulses * pr->p[k] * qx * qx * qk[k];
		c->n_z[k] = out->pulses * pr->p[k] * qz * qz * qk[k];
		c->m_z[k] = c->n_z[k] * ek[k];
		ex += c->n_x[k] * ek[k];
	}
	out->e_x = ex / n_x;
	/* [LCWXZ] Sec. IV: lambda_EC = n_X f_EC h(e_obs). */
	hx = out->e_x >= 0.5 ? 1.0 : qw_h2(out->e_x);
	out->leak_ec = n_x * pr->f_ec * hx;

	ret = finite_bounds(c, pr->eps.eps_sec, 1, &out->b);
	if (ret)
		return ret;
	out->length_real = out->b.s_x0 +
			   out->b.s_x1 * (1.0 - (out->b.phi_x >= 0.5 ? 1.0 : qw_h2(out->b.phi_x))) -
			   out->leak_ec - 6.0 * log2(21.0 / pr->eps.eps_sec) -
			   log2(2.0 / pr->eps.eps_cor);
	ret = qw_secret_length(&out->b, out->leak_ec, &pr->eps, &out->length);
	if (ret)
		return ret;
	out->rate = (double)out->length / out->pulses;

	ret = finite_bounds(c, pr->eps.eps_sec, 0, &lim);
	if (ret)
		return ret;
	l = lim.s_x0 + lim.s_x1 * (1.0 - (lim.phi_x >= 0.5 ? 1.0 : qw_h2(lim.phi_x))) -
	    out->leak_ec;
	out->rate_limit = l > 0.0 ? l / out->pulses : 0.0;
	return 0;
}

/* Coordinates the optimizer moves: mu1, mu2, p1, p2, q_x (mu3 stays fixed:
 * it is the vacuum-like setting of the hardware). */
#define OPT_DIM 5

static double *opt_coord(struct qw_finite_protocol *pr, int i)
{
	switch (i) {
	case 0: return &pr->mu[0];
	case 1: return &pr->mu[1];
	case 2: return &pr->p[0];
	case 3: return &pr->p[1];
	default: return &pr->q_x;
	}
}

static int opt_feasible(struct qw_finite_protocol *pr)
{
	const double *mu = pr->mu;

	pr->p[2] = 1.0 - pr->p[0] - pr->p[1];
	return mu[0] <= 1.5 && mu[1] > mu[2] && mu[0] > mu[1] + mu[2] && pr->p[0] > 0.0 &&
	       pr->p[1] > 0.0 && pr->p[2] >= 0.001 && pr->q_x > 0.0 && pr->q_x <= 0.999;
}

double qw_finite_key_per_pulse(const struct qw_optics_params *p, double distance_km,
			       const struct qw_finite_protocol *pr)
{
	double px = 0.0, qk;

	QW_REQUIRE(p != NULL && pr != NULL);
	if (!isfinite(pr->q_x) || !(pr->q_x > 0.0) || !(pr->q_x < 1.0))
		return 0.0;
	for (int k = 0; k < QW_FINITE_NINT; k++) {
		if (qw_decoy_model(p, distance_km, pr->mu[k], &qk, NULL) || !isfinite(pr->p[k]) ||
		    !(pr->p[k] > 0.0))
			return 0.0;
		px += pr->p[k] * pr->q_x * pr->q_x * qk;
	}
	return px;
}

int qw_finite_model_pulses(const struct qw_optics_params *p, double distance_km,
			   const struct qw_finite_protocol *pr, double pulses,
			   struct qw_finite_result *out)
{
	double px;

	QW_REQUIRE(p != NULL && pr != NULL && out != NULL);
	px = qw_finite_key_per_pulse(p, distance_km, pr);
	if (!isfinite(pulses) || !(px > 0.0) || !(pulses * px >= 1.0))
		return QW_EINVAL;
	return qw_finite_model(p, distance_km, pr, pulses * px, out);
}

/* A block is `size` key bits, or `size` pulses when by_pulses. */
static int model_sized(const struct qw_optics_params *p, double distance_km,
		       const struct qw_finite_protocol *pr, double size, int by_pulses,
		       struct qw_finite_result *r)
{
	return by_pulses ? qw_finite_model_pulses(p, distance_km, pr, size, r)
			 : qw_finite_model(p, distance_km, pr, size, r);
}

/* Objective: the unrounded secret length per pulse, negative where no key
 * survives, so the search still climbs out of the no-key region. */
static double opt_eval(const struct qw_optics_params *p, double distance_km,
		       struct qw_finite_protocol *pr, double size, int by_pulses,
		       struct qw_finite_result *r)
{
	if (!opt_feasible(pr) || model_sized(p, distance_km, pr, size, by_pulses, r))
		return -INFINITY;
	return r->length_real / r->pulses;
}

static int optimize(const struct qw_optics_params *p, double distance_km,
		    struct qw_finite_protocol *pr, double n_x, int by_pulses,
		    struct qw_finite_result *out)
{
	static const double starts[][OPT_DIM] = {
		{ 0.50, 0.10, 0.70, 0.20, 0.90 },
		{ 0.60, 0.20, 0.60, 0.25, 0.80 },
		{ 0.40, 0.15, 0.50, 0.35, 0.70 },
		{ 0.70, 0.30, 0.70, 0.20, 0.95 },
	};
	struct qw_finite_protocol best_pr, cur;
	struct qw_finite_result r, best_r;
	double best = -INFINITY;
	int ret;

	QW_REQUIRE(p != NULL && pr != NULL && out != NULL);
	/* The caller's protocol must be valid on its own: it is the first start
	 * and the answer if nothing beats it. */
	ret = model_sized(p, distance_km, pr, n_x, by_pulses, &best_r);
	if (ret)
		return ret;
	best_pr = *pr;
	best = best_r.length_real / best_r.pulses;

	/* Multi-start compass search: try +-step on each coordinate, keep any
	 * improvement, halve the steps when none helps. Deterministic and a few
	 * thousand model evaluations per call. */
	for (size_t s = 0; s <= sizeof(starts) / sizeof(starts[0]); s++) {
		double step[OPT_DIM], fcur;

		cur = *pr;
		if (s > 0)
			for (int i = 0; i < OPT_DIM; i++)
				*opt_coord(&cur, i) = starts[s - 1][i];
		fcur = opt_eval(p, distance_km, &cur, n_x, by_pulses, &r);
		if (fcur == -INFINITY)
			continue;
		for (int i = 0; i < OPT_DIM; i++)
			step[i] = 0.1 * *opt_coord(&cur, i);
		for (int iter = 0; iter < 400; iter++) {
			int moved = 0;
			double maxstep = 0.0;

			for (int i = 0; i < OPT_DIM; i++) {
				for (int dir = -1; dir <= 1; dir += 2) {
					struct qw_finite_protocol t = cur;
					double f;

					*opt_coord(&t, i) += dir * step[i];
					f = opt_eval(p, distance_km, &t, n_x, by_pulses, &r);
					if (f > fcur) {
						cur = t;
						fcur = f;
						moved = 1;
						break;
					}
				}
			}
			if (!moved)
				for (int i = 0; i < OPT_DIM; i++)
					step[i] *= 0.5;
			for (int i = 0; i < OPT_DIM; i++)
				if (step[i] > maxstep)
					maxstep = step[i];
			if (maxstep < 1e-5)
				break;
		}
		if (fcur > best) {
			best = fcur;
			best_pr = cur;
		}
	}
	/* Where no setting yields a key, the search has only minimised a deficit:
	 * report the caller's protocol rather than whatever it drifted to. */
	if (!(best > 0.0))
		best_pr = *pr;
	ret = model_sized(p, distance_km, &best_pr, n_x, by_pulses, out);
	if (ret)
		return ret;
	*pr = best_pr;
	return 0;
}

int qw_finite_optimize(const struct qw_optics_params *p, double distance_km,
		       struct qw_finite_protocol *pr, double n_x, struct qw_finite_result *out)
{
	QW_REQUIRE(p != NULL && pr != NULL && out != NULL);
	return optimize(p, distance_km, pr, n_x, 0, out);
}

int qw_finite_optimize_pulses(const struct qw_optics_params *p, double distance_km,
			      struct qw_finite_protocol *pr, double pulses,
			      struct qw_finite_result *out)
{
	QW_REQUIRE(p != NULL && pr != NULL && out != NULL);
	return optimize(p, distance_km, pr, pulses, 1, out);
}
