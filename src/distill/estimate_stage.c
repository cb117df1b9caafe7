/* Parameter estimation for a QKD link block: the QBER abort with its alarm,
 * the decoy-state bounds on the block's kept key (stage "estimate", right
 * after sifting), and the secret length (stage "seclen", right before
 * privacy amplification, once every disclosed bit is known). Contract:
 * include/qwave/link.h; the bounds themselves are the theory module's
 * (include/qwave/estimate.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qwave/link.h"

#define DEFAULT_QBER_THRESHOLD 0.11
#define DEFAULT_EPS_SEC 1e-10
#define DEFAULT_EPS_COR 1e-15

static int est_init(void **state, const void *params)
{
	const struct qw_estimate_stage_params *in = params;
	struct qw_estimate_stage_params *p;

	if (!in || !in->get_stats)
		return QW_EINVAL;
	for (int k = 0; k < QW_OPTICS_NCLASS; k++)
		if (!(in->intensity[k] >= 0.0) || !(in->p_class[k] > 0.0 && in->p_class[k] < 1.0))
			return QW_EINVAL;
	if (!(in->intensity[QW_CLASS_SIGNAL] > in->intensity[QW_CLASS_DECOY] &&
	      in->intensity[QW_CLASS_DECOY] > in->intensity[QW_CLASS_VACUUM]))
		return QW_EINVAL;
	if (!(in->qber_threshold >= 0.0 && in->qber_threshold <= 0.5))
		return QW_EINVAL;
	p = malloc(sizeof(*p));
	if (!p)
		return QW_ENOMEM;
	*p = *in;
	if (p->qber_threshold == 0.0)
		p->qber_threshold = DEFAULT_QBER_THRESHOLD;
	if (p->eps.eps_sec == 0.0)
		p->eps.eps_sec = DEFAULT_EPS_SEC;
	if (p->eps.eps_cor == 0.0)
		p->eps.eps_cor = DEFAULT_EPS_COR;
	*state = p;
	return 0;
}

static void est_free(void *state)
{
	free(state);
}

/* Hoeffding deviation of a count over n trials with failure probability
 * eps: sqrt(n ln(1/eps) / 2). */
static double hoeffding(double n, double eps)
{
	return n > 0.0 ? sqrt(n * log(1.0 / eps) / 2.0) : 0.0;
}

/* [LCWXZ] bounds on the block's counts, then carried over to the key we
 * actually keep. Two steps [LCWXZ] does not need, because its key holds
 * the key-basis bits of every intensity while qwave's sifting keeps only
 * the signal class and discloses a random QBER sample of it:
 *  1. single-photon (vacuum) events fall into the signal class with
 *     probability p_mu e^-mu mu / tau_1 (p_mu e^-mu / tau_0), independently
 *     of everything Eve sees ([LCWXZ] Sec. II, the tau_n), so their number
 *     among the signal-class detections is binomial: expectation minus a
 *     Hoeffding deviation;
 *  2. the QBER sample is drawn uniformly by Alice, so the kept fraction of
 *     them is hypergeometric: again expectation minus a deviation.
 * Each deviation fails with probability eps_sec / 21, as [LCWXZ] budgets
 * its own estimates. The phase-error bound applies unchanged to any subset
 * chosen independently of the errors. */
static int bounds_finite(const struct qw_estimate_stage_params *p,
			 const struct qw_sift_stats *st, double *s0, double *s1, double *phi)
{
	struct qw_finite_counts c;
	struct qw_finite_bounds fb;
	double tau0 = 0.0, tau1 = 0.0, w0, w1, n_sig, keep, eps = p->eps.eps_sec / 21.0;
	int ret;

	for (int k = 0; k < QW_OPTICS_NCLASS; k++) {
		double mu = p->intensity[k];
		c.mu[k] = mu;
		c.p[k] = p->p_class[k];
		c.n_x[k] = (double)st->sifted[k][QW_BASIS_Z];
		c.n_z[k] = (double)st->disclosed[k][QW_BASIS_X];
		c.m_z[k] = (double)st->errors[k][QW_BASIS_X];
		tau0 += p->p_class[k] * exp(-mu);
		tau1 += p->p_class[k] * exp(-mu) * mu;
	}
	ret = qw_finite_bounds(&c, p->eps.eps_sec, &fb);
	if (ret)
		return ret;
	{
		double mu = p->intensity[QW_CLASS_SIGNAL], ps = p->p_class[QW_CLASS_SIGNAL];
		w0 = ps * exp(-mu) / tau0;
		w1 = ps * exp(-mu) * mu / tau1;
	}
	n_sig = (double)st->sifted[QW_CLASS_SIGNAL][QW_BASIS_Z];
	keep = n_sig > 0.0 ? (double)st->key_bits / n_sig : 0.0;
	*s1 = fmax(0.0, (fmax(0.0, fb.s_x1 * w1 - hoeffding(fb.n_x, eps)) * keep -
			 hoeffding(n_sig, eps)));
	*s0 = fmax(0.0, (fmax(0.0, fb.s_x0 * w0 - hoeffding(fb.n_x, eps)) * keep -
			 hoeffding(n_sig, eps)));
	*phi = fb.phi_x;
	return 0;
}

/* [MQZL] vacuum + weak decoy on the measured gains and error rates, as if
 * they were exact; packaged for the kept key by qw_decoy_block_bounds(). */
static int bounds_asymptotic(const struct qw_estimate_stage_params *p,
			     const struct qw_sift_stats *st, double *s0, double *s1, double *phi)
{
	struct qw_decoy_obs obs;
	struct qw_decoy_bounds db;
	struct qw_finite_bounds fb;
	double q[QW_OPTICS_NCLASS], e[QW_OPTICS_NCLASS];
	int ret;

	for (int k = 0; k < QW_OPTICS_NCLASS; k++) {
		double dis = (double)(st->disclosed[k][0] + st->disclosed[k][1]);
		q[k] = st->sent[k] ? (double)st->detected[k] / (double)st->sent[k] : 0.0;
		e[k] = dis > 0.0 ? (double)(st->errors[k][0] + st->errors[k][1]) / dis : 0.5;
	}
	memset(&obs, 0, sizeof(obs));
	obs.mu = p->intensity[QW_CLASS_SIGNAL];
	obs.nu = p->intensity[QW_CLASS_DECOY];
	obs.q_mu = q[QW_CLASS_SIGNAL];
	obs.e_mu = e[QW_CLASS_SIGNAL];
	obs.q_nu = q[QW_CLASS_DECOY];
	obs.e_nu = e[QW_CLASS_DECOY];
	if (p->intensity[QW_CLASS_VACUUM] == 0.0) {
		obs.y0 = q[QW_CLASS_VACUUM];
		ret = qw_decoy_bounds_vacuum_weak(&obs, &db);
	} else {
		obs.nu2 = p->intensity[QW_CLASS_VACUUM];
		obs.q_nu2 = q[QW_CLASS_VACUUM];
		obs.e_nu2 = e[QW_CLASS_VACUUM];
		ret = qw_decoy_bounds_two_decoy(&obs, &db);
	}
	if (ret)
		return ret;
	if (!(obs.q_mu > 0.0)) {
		*s0 = *s1 = 0.0;
		*phi = 0.5;
		return 0;
	}
	ret = qw_decoy_block_bounds(&db, obs.mu, obs.q_mu, (double)st->key_bits, &fb);
	if (ret)
		return ret;
	*s0 = fb.s_x0;
	*s1 = fb.s_x1;
	*phi = fb.phi_x;
	return 0;
}

static enum qw_stage_result drop(struct qw_key_block *b, enum qw_stage_result r,
				 const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static enum qw_stage_result drop(struct qw_key_block *b, enum qw_stage_result r,
				 const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(b->drop_reason, sizeof(b->drop_reason), fmt, ap);
	va_end(ap);
	return r;
}

static enum qw_stage_result est_process(void *state, struct qw_key_block *b,
					struct qw_distill_chan *chan)
{
	const struct qw_estimate_stage_params *p = state;
	struct qw_sift_stats st;
	struct qw_finite_bounds fb;
	double s0 = 0.0, s1 = 0.0, phi = 0.5;
	uint64_t len = 0;
	int ret;

	(void)chan; /* both ends hold the same statistics: nothing to exchange */
	if (b->state != QW_BLOCK_SIFTED || !b->key)
		return drop(b, QW_STAGE_ERROR, "estimate: block is not SIFTED");
	if (p->get_stats(p->ctx, b->id, &st))
		return drop(b, QW_STAGE_ERROR, "estimate: no sift statistics");
	/* The abort: the same decision at both ends, from the same disclosed
	 * sample, before any error-correction bit is revealed. */
	if (!(b->qber_estimate <= p->qber_threshold)) {
		if (p->alarm)
			p->alarm(p->ctx, b->id, b->qber_estimate, p->qber_threshold);
		return drop(b, QW_STAGE_DROP, "QBER %.2f%% above threshold %.2f%%",
			    100.0 * b->qber_estimate, 100.0 * p->qber_threshold);
	}
	if (st.key_bits != b->key->nbits)
		return drop(b, QW_STAGE_ERROR, "estimate: key length differs from sift statistics");
	ret = p->bounds == QW_LINK_BOUNDS_ASYMPTOTIC ? bounds_asymptotic(p, &st, &s0, &s1, &phi)
						     : bounds_finite(p, &st, &s0, &s1, &phi);
	if (ret)
		return drop(b, QW_STAGE_ERROR, "estimate: decoy bounds failed");
	b->sec_n_vacuum = s0;
	b->sec_n_single = s1;
	b->sec_e1_upper = phi;
	/* Nothing disclosed yet: if even that leaves no key, error correction
	 * would be wasted work. */
	fb = (struct qw_finite_bounds){ .n_x = (double)b->key->nbits, .s_x0 = s0, .s_x1 = s1,
					.phi_x = phi };
	if (qw_secret_length(&fb, 0.0, &p->eps, &len) || len == 0)
		return drop(b, QW_STAGE_DROP,
			    "no secret key possible: single-photon bound %.0f bits, phase error "
			    "bound %.3f",
			    s1, phi);
	return QW_STAGE_FORWARD;
}

const struct qw_stage qw_estimate_stage = {
	.name = "estimate",
	.init = est_init,
	.process = est_process,
	.free = est_free,
};

static enum qw_stage_result seclen_process(void *state, struct qw_key_block *b,
					   struct qw_distill_chan *chan)
{
	const struct qw_estimate_stage_params *p = state;
	struct qw_finite_bounds fb;
	uint64_t len = 0;

	(void)chan;
	if (b->state != QW_BLOCK_VERIFIED || !b->key)
		return drop(b, QW_STAGE_ERROR, "seclen: block is not VERIFIED");
	fb = (struct qw_finite_bounds){ .n_x = (double)b->key->nbits,
					.s_x0 = b->sec_n_vacuum,
					.s_x1 = b->sec_n_single,
					.phi_x = b->sec_e1_upper };
	/* leak: every disclosed bit, the verification tag included (the
	 * audited formula would let the eps_cor term cover the tag; counting
	 * it as well costs tag_bits and keeps the bookkeeping simple). */
	if (qw_secret_length(&fb, (double)b->disclosed_bits, &p->eps, &len))
		return drop(b, QW_STAGE_ERROR, "seclen: invalid bounds");
	if (len == 0)
		return drop(b, QW_STAGE_DROP,
			    "no secret key: %.0f disclosed bits exceed what the bounds allow "
			    "(%.0f key bits)",
			    (double)b->disclosed_bits, (double)b->key->nbits);
	b->secret_bits = len;
	return QW_STAGE_FORWARD;
}

const struct qw_stage qw_seclen_stage = {
	.name = "seclen",
	.init = est_init,
	.process = seclen_process,
	.free = est_free,
};
