/* Parameter estimation for a QKD link block: the QBER abort with its alarm,
 * the decoy-state bounds on the block's kept key (stage "estimate", right
 * after sifting), and the secret length (stage "seclen", right before
 * privacy amplification, once every disclosed bit is known). Contract:
 * include/qwave/link.h. No arithmetic of its own: the block's observed
 * counts go to the theory module's qw_finite_bounds() and the length comes
 * from qw_secret_length() (include/qwave/estimate.h, docs/theory.md). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

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

/* The block's counts in [LCWXZ]'s notation. The link's key basis Z is
 * [LCWXZ]'s X and its test basis X is their Z: n_x[k] = the key bits of
 * class k (sifted Z bits not sampled), n_z[k] / m_z[k] = the disclosed X
 * bits of class k and their errors. 0, or QW_EPROTO when the kept key is not
 * the key-basis bits of every class ([LCWXZ]'s bounds are about exactly
 * that block: a signal-only key would need a further, unaudited step). */
static int lim_counts(const struct qw_estimate_stage_params *p, const struct qw_sift_stats *st,
		      struct qw_finite_counts *c)
{
	uint64_t key = 0;

	for (int k = 0; k < QW_OPTICS_NCLASS; k++) {
		uint64_t kept = st->sifted[k][QW_BASIS_Z] - st->disclosed[k][QW_BASIS_Z];

		c->mu[k] = p->intensity[k];
		c->p[k] = p->p_class[k];
		c->n_x[k] = (double)kept;
		c->n_z[k] = (double)st->disclosed[k][QW_BASIS_X];
		c->m_z[k] = (double)st->errors[k][QW_BASIS_X];
		key += kept;
	}
	return key == st->key_bits ? 0 : QW_EPROTO;
}

/* [LCWXZ] eqs. (2)-(5) on the block's counts, by the theory module: with
 * the Hoeffding terms (finite, the default) or without them (asymptotic). */
static int block_bounds(const struct qw_estimate_stage_params *p, const struct qw_sift_stats *st,
			struct qw_finite_bounds *fb)
{
	struct qw_finite_counts c;
	int ret = lim_counts(p, st, &c);

	if (ret)
		return ret;
	return p->bounds == QW_LINK_BOUNDS_ASYMPTOTIC ? qw_finite_bounds_asymptotic(&c, fb)
						      : qw_finite_bounds(&c, p->eps.eps_sec, fb);
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
	ret = block_bounds(p, &st, &fb);
	if (ret == QW_EPROTO)
		return drop(b, QW_STAGE_ERROR,
			    "estimate: the key is not every class's key-basis bits ([LCWXZ])");
	if (ret)
		return drop(b, QW_STAGE_ERROR, "estimate: decoy bounds failed");
	b->sec_n_vacuum = fb.s_x0;
	b->sec_n_single = fb.s_x1;
	b->sec_e1_upper = fb.phi_x;
	/* Nothing disclosed yet: if even that leaves no key, error correction
	 * would be wasted work. */
	if (qw_secret_length(&fb, 0.0, &p->eps, &len) || len == 0)
		return drop(b, QW_STAGE_DROP,
			    "no secret key possible: single-photon bound %.0f bits, phase error "
			    "bound %.3f",
			    fb.s_x1, fb.phi_x);
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
