/* Per-detection simulation of a decoy-state BB84 link (see qwave/optics.h
 * and docs/qkd-sim.md for the model and the sampling argument). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qwave/optics.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

#include "qkd/eve.h"

#define NCLASS QW_OPTICS_NCLASS

struct qw_optics {
	struct qw_optics_config c;
	struct qw_rng *rng;
	double sig[NCLASS];          /* S_k = 1 - e^{-eta mu_k}: the light clicks */
	double gain[NCLASS];         /* Q_k = 1 - (1 - Y0)(1 - S_k) */
	/* What a detected pulse was: class k and which clicks (light alone,
	 * light and background, background alone) at [3k + c], with
	 * probabilities p_k S_k (1 - Y0), p_k S_k Y0, p_k (1 - S_k) Y0 over P,
	 * so one draw decides both. */
	double w_det[3 * NCLASS];
	double w_undet[NCLASS];      /* p_k (1 - Q_k) / (1 - P): class of an undetected one */
	double p_det;                /* P = sum_k p_k Q_k: a pulse is detected */
	double log1m_p;              /* log(1 - P), for the geometric gaps */
	uint64_t pos;                /* index of the next pulse to simulate */
	uint64_t next_det;           /* index of the next pulse detected by its own clicks */
	uint64_t ap_gate;            /* gate of the pending afterpulse clicks */
	unsigned ap_mask;            /* detectors that afterpulse at ap_gate (bit d: detector d) */
	uint64_t bits;               /* pool of random bits (holds Alice's key bits: wiped) */
	unsigned nbits;
	struct qw_optics_stats st;
};

void qw_optics_config_default(struct qw_optics_config *c)
{
	QW_REQUIRE(c != NULL);
	memset(c, 0, sizeof(*c));
	qw_optics_gys(&c->link);
	c->distance_km = 50.0;
	c->pulse_rate_hz = 1e9;
	c->intensity[QW_CLASS_SIGNAL] = 0.5;
	c->intensity[QW_CLASS_DECOY] = 0.1;
	c->intensity[QW_CLASS_VACUUM] = 0.0;
	c->p_class[QW_CLASS_SIGNAL] = 0.7;
	c->p_class[QW_CLASS_DECOY] = 0.2;
	c->p_class[QW_CLASS_VACUUM] = 0.1;
	c->p_z_alice = 0.5;
	c->p_z_bob = 0.5;
	c->afterpulse = 0.0;
	c->eve_fraction = 0.0;
}

static int prob_ok(double p)
{
	return isfinite(p) && p >= 0.0 && p <= 1.0;
}

int qw_optics_config_check(const struct qw_optics_config *c)
{
	double sum = 0.0;
	int k;

	QW_REQUIRE(c != NULL);
	if (qw_optics_check(&c->link))
		return QW_EINVAL;
	if (!isfinite(c->distance_km) || c->distance_km < 0.0)
		return QW_EINVAL;
	if (!isfinite(c->pulse_rate_hz) || c->pulse_rate_hz <= 0.0)
		return QW_EINVAL;
	for (k = 0; k < NCLASS; k++) {
		if (!isfinite(c->intensity[k]) || c->intensity[k] < 0.0 || !prob_ok(c->p_class[k]))
			return QW_EINVAL;
		sum += c->p_class[k];
	}
	if (fabs(sum - 1.0) > 1e-9)
		return QW_EINVAL;
	if (!prob_ok(c->p_z_alice) || !prob_ok(c->p_z_bob) || !prob_ok(c->eve_fraction))
		return QW_EINVAL;
	if (!prob_ok(c->afterpulse) || c->afterpulse >= 1.0)
		return QW_EINVAL;
	return 0;
}

/* ---- random draws ------------------------------------------------------- */

static int rbit(struct qw_optics *o)
{
	int b;

	if (o->nbits == 0) {
		o->bits = qw_rng_u64(o->rng);
		o->nbits = 64;
	}
	b = (int)(o->bits & 1u);
	o->bits >>= 1;
	o->nbits--;
	return b;
}

/* 1 with probability p. */
static int bern(struct qw_optics *o, double p)
{
	if (p <= 0.0)
		return 0;
	if (p == 0.5)
		return rbit(o);
	return qw_rng_uniform(o->rng) < p;
}

/* Index drawn from the n weights w (summing to 1). */
static int draw_cat(struct qw_optics *o, const double *w, int n)
{
	double u = qw_rng_uniform(o->rng);
	int k, last = 0;

	for (k = 0; k < n; k++) {
		if (w[k] <= 0.0)
			continue;
		last = k;
		if (u < w[k])
			return k;
		u -= w[k];
	}
	return last; /* rounding left u just above the total */
}

/* Gap to the next detected pulse: geometric on {1, 2, ...} with success
 * probability P, by inversion: 1 + floor(ln U / ln(1 - P)), U in (0, 1]. */
static uint64_t draw_gap(struct qw_optics *o)
{
	double u = 1.0 - qw_rng_uniform(o->rng);
	double g = floor(log(u) / o->log1m_p);

	if (!(g < 9.0e18))
		return UINT64_MAX / 2;
	return (uint64_t)g + 1;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ---- binomial ----------------------------------------------------------- */

/* fc(k) = ln k! - [(k + 1/2) ln(k + 1) - (k + 1) + ln(2 pi) / 2], the tail of
 * Stirling's series, exact via lgamma for small k. */
static double stirling_tail(double k)
{
	double kp1sq;

	if (k <= 9.0)
		return lgamma(k + 1.0) -
		       ((k + 0.5) * log(k + 1.0) - (k + 1.0) + 0.5 * log(2.0 * M_PI));
	kp1sq = (k + 1.0) * (k + 1.0);
	return (1.0 / 12 - (1.0 / 360 - 1.0 / 1260 / kp1sq) / kp1sq) / (k + 1.0);
}

/* Sequential inversion of the pmf for small means (n p < 10). */
static uint64_t binomial_inversion(struct qw_rng *r, uint64_t n, double p)
{
	double q = 1.0 - p, s = p / q, a = ((double)n + 1.0) * s;
	double r0 = exp((double)n * log1p(-p));
	double bound = (double)n * p + 10.0 * sqrt((double)n * p * q + 1.0);

	for (;;) {
		double u = qw_rng_uniform(r), pr = r0;
		uint64_t x = 0;

		while (u >= pr) {
			u -= pr;
			x++;
			if ((double)x > bound || x > n)
				break;
			pr *= a / (double)x - s;
		}
		if ((double)x <= bound && x <= n)
			return x;
	}
}

/* W. Hormann, "The generation of binomial random variates", J. Stat.
 * Comput. Simul. 46 (1993): algorithm BTRS (transformed rejection with
 * squeeze), for p <= 1/2 and n p >= 10. The acceptance test compares with
 * log f(k)/f(m) written through Stirling's series so it stays accurate for
 * n up to 2^53. */
static uint64_t binomial_btrs(struct qw_rng *r, uint64_t n, double p)
{
	double nd = (double)n, q = 1.0 - p;
	double spq = sqrt(nd * p * q);
	double b = 1.15 + 2.53 * spq;
	double a = -0.0873 + 0.0248 * b + 0.01 * p;
	double c = nd * p + 0.5;
	double vr = 0.92 - 4.2 / b;
	double alpha = (2.83 + 5.1 / b) * spq;
	double rr = p / q;
	double m = floor((nd + 1.0) * p);
	double hm = (m + 0.5) * log((m + 1.0) / (rr * (nd - m + 1.0))) + stirling_tail(m) +
		    stirling_tail(nd - m);

	for (;;) {
		double u = qw_rng_uniform(r) - 0.5;
		double v = qw_rng_uniform(r);
		double us = 0.5 - fabs(u);
		double k = floor((2.0 * a / us + b) * u + c);

		if (k < 0.0 || k > nd)
			continue;
		if (us >= 0.07 && v <= vr)
			return (uint64_t)k;
		v = log(v * alpha / (a / (us * us) + b));
		if (v <= hm + (nd + 1.0) * log((nd - m + 1.0) / (nd - k + 1.0)) +
				 (k + 0.5) * log(rr * (nd - k + 1.0) / (k + 1.0)) - stirling_tail(k) -
				 stirling_tail(nd - k))
			return (uint64_t)k;
	}
}

uint64_t qw_sim_binomial(struct qw_rng *r, uint64_t n, double p)
{
	QW_REQUIRE(r != NULL && p >= 0.0 && p <= 1.0);
	if (n == 0 || p == 0.0)
		return 0;
	if (p == 1.0)
		return n;
	if (p > 0.5)
		return n - qw_sim_binomial(r, n, 1.0 - p);
	if ((double)n * p < 10.0)
		return binomial_inversion(r, n, p);
	return binomial_btrs(r, n, p);
}

/* ---- detection records -------------------------------------------------- */

struct qw_detections *qw_detections_new(enum qw_role role)
{
	struct qw_detections *d = calloc(1, sizeof(*d));

	if (d)
		d->role = role;
	return d;
}

static void det_release(struct qw_detections *d)
{
	qw_free_secret(d->bit, d->cap);
	qw_free_secret(d->basis, d->cap);
	free(d->cls);
	free(d->index);
	d->index = NULL;
	d->bit = d->basis = d->cls = NULL;
	d->n = d->cap = 0;
}

void qw_detections_free(struct qw_detections *d)
{
	if (!d)
		return;
	det_release(d);
	qw_wipe(d, sizeof(*d));
	free(d);
}

void qw_detections_reset(struct qw_detections *d)
{
	QW_REQUIRE(d != NULL);
	if (d->bit)
		qw_wipe(d->bit, d->cap);
	if (d->basis)
		qw_wipe(d->basis, d->cap);
	d->n = 0;
	d->first_pulse = d->end_pulse = 0;
	memset(d->sent, 0, sizeof(d->sent));
}

/* Room for one more entry. Grows by copying (never realloc) so no copy of
 * the bits is left in freed memory. */
static int det_reserve(struct qw_detections *d)
{
	size_t cap, n;
	uint64_t *index = NULL;
	uint8_t *bit = NULL, *basis = NULL, *cls = NULL;

	if (d->n < d->cap)
		return 0;
	if (d->cap > SIZE_MAX / 2 / sizeof(uint64_t))
		return QW_ENOMEM;
	cap = d->cap ? 2 * d->cap : 1024;
	index = malloc(cap * sizeof(*index));
	bit = malloc(cap);
	basis = malloc(cap);
	if (d->role == QW_ROLE_ALICE)
		cls = malloc(cap);
	if (!index || !bit || !basis || (d->role == QW_ROLE_ALICE && !cls)) {
		free(index);
		free(bit);
		free(basis);
		free(cls);
		return QW_ENOMEM;
	}
	if (d->n) {
		memcpy(index, d->index, d->n * sizeof(*index));
		memcpy(bit, d->bit, d->n);
		memcpy(basis, d->basis, d->n);
		if (cls)
			memcpy(cls, d->cls, d->n);
	}
	n = d->n;
	det_release(d);
	d->n = n;
	d->index = index;
	d->bit = bit;
	d->basis = basis;
	d->cls = cls;
	d->cap = cap;
	return 0;
}

static void det_store(struct qw_detections *d, uint64_t index, int bit, int basis, int cls)
{
	d->index[d->n] = index;
	d->bit[d->n] = (uint8_t)bit;
	d->basis[d->n] = (uint8_t)basis;
	if (d->cls)
		d->cls[d->n] = (uint8_t)cls;
	d->n++;
}

int qw_detections_push(struct qw_detections *d, uint64_t index, int bit, int basis, int cls)
{
	int ret;

	QW_REQUIRE(d != NULL);
	if ((bit != 0 && bit != 1) || (basis != 0 && basis != 1) ||
	    (d->role == QW_ROLE_ALICE && (cls < 0 || cls >= NCLASS)))
		return QW_EINVAL;
	if (d->n ? index <= d->index[d->n - 1] : (d->first_pulse != d->end_pulse &&
						    index < d->first_pulse))
		return QW_EINVAL;
	if (index == UINT64_MAX)
		return QW_EINVAL;
	ret = det_reserve(d);
	if (ret)
		return ret;
	if (d->first_pulse == d->end_pulse && d->n == 0)
		d->first_pulse = index;
	det_store(d, index, bit, basis, cls);
	if (d->end_pulse <= index)
		d->end_pulse = index + 1;
	return 0;
}

/* ---- the simulator ------------------------------------------------------ */

struct qw_optics *qw_optics_new(const struct qw_optics_config *c, struct qw_rng *rng, int *err)
{
	struct qw_optics *o;
	double eta, y0, pd = 0.0;
	int k;

	QW_REQUIRE(c != NULL && rng != NULL && err != NULL);
	*err = qw_optics_config_check(c);
	if (*err)
		return NULL;
	o = calloc(1, sizeof(*o));
	if (!o) {
		*err = QW_ENOMEM;
		return NULL;
	}
	o->c = *c;
	o->rng = rng;
	eta = qw_optics_eta(&c->link, c->distance_km);
	y0 = c->link.y0;
	for (k = 0; k < NCLASS; k++) {
		/* [MQZL] eqs. (4)-(6): an n-photon pulse clicks with eta_n =
		 * 1 - (1 - eta)^n; averaged over Poisson(mu) that is
		 * 1 - e^{-eta mu}. The background clicks independently with Y0. */
		o->sig[k] = -expm1(-eta * c->intensity[k]);
		o->gain[k] = 1.0 - (1.0 - y0) * (1.0 - o->sig[k]);
		pd += c->p_class[k] * o->gain[k];
	}
	o->p_det = pd;
	o->log1m_p = log1p(-pd);
	for (k = 0; k < NCLASS; k++) {
		double pk = pd > 0.0 ? c->p_class[k] / pd : 0.0;

		o->w_det[3 * k] = pk * o->sig[k] * (1.0 - y0);
		o->w_det[3 * k + 1] = pk * o->sig[k] * y0;
		o->w_det[3 * k + 2] = pk * (1.0 - o->sig[k]) * y0;
		o->w_undet[k] = pd < 1.0 ? c->p_class[k] * (1.0 - o->gain[k]) / (1.0 - pd) : 0.0;
	}
	o->next_det = pd > 0.0 ? draw_gap(o) - 1 : UINT64_MAX;
	*err = 0;
	return o;
}

void qw_optics_free(struct qw_optics *o)
{
	if (!o)
		return;
	qw_wipe(o, sizeof(*o));
	free(o);
}

void qw_optics_get_stats(const struct qw_optics *o, struct qw_optics_stats *s)
{
	QW_REQUIRE(o != NULL && s != NULL);
	*s = o->st;
	s->seconds = (double)o->st.pulses / o->c.pulse_rate_hz;
}

void qw_optics_expected(const struct qw_optics *o, int cls, double *gain, double *qber)
{
	double y0, e0, s, ws, q, eq;

	QW_REQUIRE(o != NULL && cls >= 0 && cls < NCLASS);
	y0 = o->c.link.y0;
	e0 = o->c.link.e0;
	s = o->sig[cls];
	q = o->gain[cls];
	/* Probability that a click of the light lands in the wrong detector. */
	ws = qw_eve_wrong_detector(o->c.link.e_det, o->c.eve_fraction);
	/* Light alone, background alone, or both: the pair is right (same
	 * detector, correct), wrong, or a double click (random bit), so a
	 * coincidence errs with (ws + e0) / 2. */
	eq = (1.0 - y0) * s * ws + y0 * (1.0 - s) * e0 + y0 * s * 0.5 * (ws + e0);
	if (gain)
		*gain = q;
	if (qber)
		*qber = q > 0.0 ? eq / q : 0.0;
}

#define CLICK_LIGHT 1 /* the pulse's light (Alice's, or Eve's resend) clicked */
#define CLICK_DARK 2  /* the background clicked */

/* One detected pulse t of class cls with the clicks `own` (CLICK_*, 0 for
 * none) and `extra` = afterpulse clicks landing in this gate. */
static void emit(struct qw_optics *o, uint64_t t, int cls, int own, unsigned extra,
		 struct qw_detections *alice, struct qw_detections *bob)
{
	int a = rbit(o);
	int ab = bern(o, o->c.p_z_alice) ? QW_BASIS_Z : QW_BASIS_X;
	int bb = bern(o, o->c.p_z_bob) ? QW_BASIS_Z : QW_BASIS_X;
	unsigned mask = extra, ap = 0;
	int b, d;

	if (extra)
		o->st.afterpulses++;
	if (own) {
		int sig = own & CLICK_LIGHT, dark = own & CLICK_DARK;
		int attacked = bern(o, o->c.eve_fraction);

		if (attacked)
			o->st.attacked++;
		if (sig) {
			/* The detector is labelled by the bit value it reports in
			 * Bob's basis. */
			if (attacked) {
				d = qw_eve_resend(o->rng, a, ab, bb, o->c.link.e_det);
			} else if (ab == bb) {
				/* [MQZL]: e_det, the same for every photon number. */
				d = a ^ bern(o, o->c.link.e_det);
			} else {
				d = rbit(o);
			}
			mask |= 1u << d;
			o->st.signal_clicks++;
		}
		if (dark) {
			d = ab == bb ? a ^ bern(o, o->c.link.e0) : rbit(o);
			mask |= 1u << d;
			o->st.dark_clicks++;
		}
	}
	if (mask == 3u) {
		/* Squashing: a double click is assigned a random bit. */
		b = rbit(o);
		o->st.double_clicks++;
	} else {
		b = mask == 2u;
	}
	if (o->c.afterpulse > 0.0) {
		for (d = 0; d < 2; d++)
			if ((mask >> d) & 1u && bern(o, o->c.afterpulse))
				ap |= 1u << d;
	}
	o->ap_mask = ap;
	o->ap_gate = t + 1;
	o->st.detections[cls]++;
	if (alice)
		det_store(alice, t, a, ab, cls);
	if (bob)
		det_store(bob, t, b, bb, 0);
}

static int record_ok(const struct qw_detections *d, enum qw_role role, uint64_t pos)
{
	if (!d)
		return 1;
	if (d->role != role)
		return 0;
	return (d->first_pulse == d->end_pulse && d->n == 0) || d->end_pulse == pos;
}

static void record_begin(struct qw_detections *d, uint64_t pos)
{
	if (d && d->first_pulse == d->end_pulse && d->n == 0)
		d->first_pulse = d->end_pulse = pos;
}

int qw_optics_run(struct qw_optics *o, uint64_t pulses, struct qw_detections *alice,
		  struct qw_detections *bob)
{
	uint64_t end, own = 0, aponly = 0, rest, sent[NCLASS] = { 0 };
	int ret = 0, k;

	QW_REQUIRE(o != NULL);
	if (!record_ok(alice, QW_ROLE_ALICE, o->pos) || !record_ok(bob, QW_ROLE_BOB, o->pos))
		return QW_ESTATE;
	if (pulses > UINT64_MAX - 1 - o->pos)
		return QW_ERANGE;
	record_begin(alice, o->pos);
	record_begin(bob, o->pos);
	end = o->pos + pulses;
	for (;;) {
		int ap_first = o->ap_mask && o->ap_gate < o->next_det;
		uint64_t t = ap_first ? o->ap_gate : o->next_det;
		int cls;

		if (t >= end)
			break;
		if ((alice && det_reserve(alice)) || (bob && det_reserve(bob))) {
			/* Stop at t: everything before it is complete and the
			 * simulator resumes from t. */
			end = t;
			ret = QW_ENOMEM;
			break;
		}
		if (ap_first) {
			/* Only an afterpulse clicked, so the pulse itself went
			 * undetected: its class follows p_k (1 - Q_k). */
			cls = draw_cat(o, o->w_undet, NCLASS);
			aponly++;
			emit(o, t, cls, 0, o->ap_mask, alice, bob);
		} else {
			unsigned extra = o->ap_mask && o->ap_gate == t ? o->ap_mask : 0;
			int ev = draw_cat(o, o->w_det, 3 * NCLASS);
			static const int clicks[3] = { CLICK_LIGHT, CLICK_LIGHT | CLICK_DARK,
						       CLICK_DARK };

			cls = ev / 3;
			own++;
			o->next_det = sat_add(t, draw_gap(o));
			emit(o, t, cls, clicks[ev % 3], extra, alice, bob);
		}
		sent[cls]++;
	}
	/* The remaining pulses were not detected: their classes are a
	 * multinomial draw with probabilities p_k (1 - Q_k) / (1 - P), as
	 * sequential conditional binomials. */
	rest = end - o->pos - own - aponly;
	for (k = 0; k < NCLASS - 1 && rest; k++) {
		double tail = 0.0, p;
		uint64_t x;
		int j;

		for (j = k; j < NCLASS; j++)
			tail += o->w_undet[j];
		p = tail > 0.0 ? o->w_undet[k] / tail : 0.0;
		if (tail - o->w_undet[k] <= 0.0 && o->w_undet[k] > 0.0)
			p = 1.0; /* no later class can take any */
		x = qw_sim_binomial(o->rng, rest, p > 1.0 ? 1.0 : p);
		sent[k] += x;
		rest -= x;
	}
	sent[NCLASS - 1] += rest;
	for (k = 0; k < NCLASS; k++) {
		o->st.sent[k] += sent[k];
		if (alice)
			alice->sent[k] += sent[k];
	}
	o->st.pulses += end - o->pos;
	o->pos = end;
	if (alice)
		alice->end_pulse = end;
	if (bob)
		bob->end_pulse = end;
	return ret;
}
