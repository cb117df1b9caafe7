/* PLKG end to end: the two-dimensional KLT quantizer of one end, the
 * per-window entropy estimate, the distillation chain and an in-process
 * runner, and the simulation with its metrics. See include/qwave/plkg.h
 * and docs/plkg.md sections 5-9. */
#include <complex.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plkg_internal.h"
#include "qwave/plkg.h"
#include "qwave/plkg_quant.h"
#include "qwave/secmem.h"

/* ---- parameters ------------------------------------------------------------- */

void qw_plkg_params_default(struct qw_plkg_params *p)
{
	QW_REQUIRE(p);
	memset(p, 0, sizeof(*p));
	qw_plkg_config_default(&p->chan);
	p->window = 192;
	p->max_bits = 6;
	p->kdr_initial = 0;
	p->kdr_margin = 1.2;
	p->remedy = QW_PLKG_REMEDY_NONE;
	p->n_elements = 8;
	p->tag_bits = 64;
	p->eps_pa = 1e-10;
	p->model_margin = 0.02;
	qw_plkg_params_for(p, QW_PLKG_REC_CASCADE);
}

void qw_plkg_params_for(struct qw_plkg_params *p, enum qw_plkg_reconcile r)
{
	QW_REQUIRE(p);
	p->reconcile = r;
	switch (r) {
	case QW_PLKG_REC_BCH:
		p->level_scale = 0.6;
		p->block_bits = 8192;
		break;
	case QW_PLKG_REC_LDPC:
		p->level_scale = 1.5;
		p->block_bits = 40000;
		break;
	default:
		p->level_scale = 1.5;
		p->block_bits = 16384;
		break;
	}
}

int qw_plkg_params_check(const struct qw_plkg_params *p)
{
	QW_REQUIRE(p);
	if (qw_plkg_config_check(&p->chan))
		return QW_EINVAL;
	if (p->window < 1 || p->window > 1024 || !(p->level_scale > 0) || p->level_scale > 100 ||
	    p->max_bits < 1 || p->max_bits > QW_PLKG_MAX_BITS || p->block_bits < 64 ||
	    p->block_bits > ((size_t)1 << 30) || !(p->kdr_initial >= 0) ||
	    !(p->kdr_initial < 0.5) || !(p->kdr_margin >= 1) || p->kdr_margin > 10 ||
	    p->tag_bits < 1 || p->tag_bits > 128 || !(p->eps_pa > 0) || !(p->eps_pa < 1) ||
	    !(p->model_margin >= 0) || !(p->model_margin < 1) ||
	    (p->reconcile != QW_PLKG_REC_CASCADE && p->reconcile != QW_PLKG_REC_BCH &&
	     p->reconcile != QW_PLKG_REC_LDPC) ||
	    (p->remedy != QW_PLKG_REMEDY_NONE && p->remedy != QW_PLKG_REMEDY_RANDOM_WEIGHTS) ||
	    (p->remedy == QW_PLKG_REMEDY_RANDOM_WEIGHTS &&
	     (p->n_elements < 1 || p->n_elements > 64)))
		return QW_EINVAL;
	return 0;
}

int qw_plkg_reconcile_parse(const char *name, enum qw_plkg_reconcile *r)
{
	QW_REQUIRE(name && r);
	if (!strcmp(name, "cascade"))
		*r = QW_PLKG_REC_CASCADE;
	else if (!strcmp(name, "bch"))
		*r = QW_PLKG_REC_BCH;
	else if (!strcmp(name, "ldpc"))
		*r = QW_PLKG_REC_LDPC;
	else
		return QW_EINVAL;
	return 0;
}

const char *qw_plkg_reconcile_name(enum qw_plkg_reconcile r)
{
	switch (r) {
	case QW_PLKG_REC_BCH: return "bch";
	case QW_PLKG_REC_LDPC: return "ldpc";
	default: return "cascade";
	}
}

/* ---- bounds behind the entropy cap (cached: ~1 s per configuration) -------- */

struct cap {
	double eve_per_probe; /* I(X;Y|Z) new per window / window */
	double xy_per_probe;  /* I(X;Y) likewise */
	double overlap;       /* I(X;Y) a window shares with the previous one (bits) */
};

static pthread_mutex_t cap_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
	int valid;
	struct qw_plkg_config cfg;
	unsigned window;
	int remedy;
	struct cap c;
} cap_cache;

/* New information per window of W probes: I over 2W probes minus I over W
 * (chain rule for the jointly Gaussian processes), so that windows that
 * repeat one another (a static channel) are not counted twice; with the
 * remedy the effective channel is fresh every probe (iid bound). */
static int cap_compute(const struct qw_plkg_params *p, struct cap *c)
{
	struct qw_plkg_config cfg = p->chan;
	struct qw_plkg_bound b1, b2;
	int ret = 0, remedy = p->remedy == QW_PLKG_REMEDY_RANDOM_WEIGHTS;

	pthread_mutex_lock(&cap_mu);
	if (cap_cache.valid && cap_cache.window == p->window && cap_cache.remedy == remedy &&
	    !memcmp(&cap_cache.cfg, &p->chan, sizeof(cfg))) {
		*c = cap_cache.c;
		goto out;
	}
	if (remedy) {
		cfg.bound_window = 2;
		ret = qw_plkg_bound_compute(&cfg, &b1);
		if (ret)
			goto out;
		c->eve_per_probe = b1.iid_eve_bits_per_probe;
		c->xy_per_probe = b1.iid_bits_per_probe;
		c->overlap = 0;
	} else {
		cfg.bound_window = p->window;
		ret = qw_plkg_bound_compute(&cfg, &b1);
		if (ret)
			goto out;
		cfg.bound_window = 2 * p->window;
		ret = qw_plkg_bound_compute(&cfg, &b2);
		if (ret)
			goto out;
		c->eve_per_probe = fmax(0.0, 2.0 * b2.eve_bits_per_probe - b1.eve_bits_per_probe);
		c->xy_per_probe = fmax(0.0, 2.0 * b2.bits_per_probe - b1.bits_per_probe);
		c->overlap = fmax(0.0, (b1.bits_per_probe - c->xy_per_probe) * p->window);
	}
	cap_cache.valid = 1;
	cap_cache.cfg = p->chan;
	cap_cache.window = p->window;
	cap_cache.remedy = remedy;
	cap_cache.c = *c;
out:
	pthread_mutex_unlock(&cap_mu);
	return ret;
}

/* ---- one end ------------------------------------------------------------------ */

struct feat {
	unsigned k;    /* frequency mode */
	unsigned i;    /* temporal mode (probe index with the remedy) */
	unsigned b;    /* bits per real part */
	double sd;     /* model standard deviation of each real part */
};

struct qw_plkg_end {
	struct qw_plkg_params p;
	unsigned n_sc, W, K;
	struct qw_plkg_klt *klt;   /* NULL until a basis is set (remedy) */
	double *lam;               /* K scattered mode powers */
	double *V;                 /* W x W temporal eigenvectors (columns); NULL = identity */
	double *mu;                /* W temporal eigenvalues */
	struct feat *f;
	size_t nf, cap_f;
	size_t wbits;
	double wentropy;
	double model_kdr;          /* expected bit disagreement under the model */
	struct cap cap;
	double sigma2;             /* legitimate LS error variance */
	double complex *csi;       /* W x n_sc buffered estimates */
	unsigned fill;
	struct qw_bitvec *pend;    /* quantized bits waiting for a block */
	double pend_h;             /* their entropy estimate */
	double thr[QW_PLKG_MAX_BITS + 1][1u << QW_PLKG_MAX_BITS]; /* Gaussian quantiles */
};

static double norm_cdf(double x)
{
	return 0.5 * erfc(-x / sqrt(2.0));
}

static double norm_quantile(double q)
{
	double lo = -40, hi = 40;

	for (int it = 0; it < 200; it++) {
		double mid = 0.5 * (lo + hi);
		if (norm_cdf(mid) < q)
			lo = mid;
		else
			hi = mid;
	}
	return 0.5 * (lo + hi);
}

/* I(X; Z_A, Z_B) in bits for one complex feature of scattered power s: what
 * Eve's two estimates tell about Alice's (the model of docs/plkg.md 4). */
static double eve_info(double s, double nab, double ne, double rt, double re)
{
	double vx = s + nab, vz = s + ne, ia, cov[9];

	if (!(s > 0) || re == 0)
		return 0;
	ia = qw_plkg_mi_gauss(rt * re * s / sqrt(vx * vz));
	/* I(X; Z_B | Z_A): order X, Z_B, then Z_A */
	cov[0] = vx;
	cov[4] = vz;
	cov[8] = vz;
	cov[1] = cov[3] = re * s;          /* X, Z_B */
	cov[2] = cov[6] = rt * re * s;     /* X, Z_A */
	cov[5] = cov[7] = re * re * rt * s; /* Z_B, Z_A */
	{
		double ib = qw_plkg_mi_cond_gauss(cov, 1);
		if (!(ib >= 0))
			ib = isnan(ib) ? INFINITY : 0;
		return ia + ib;
	}
}

/* Bits per real feature for correlation rho. */
static unsigned bits_for(double rho, double scale, unsigned max_bits)
{
	double sd = sqrt(fmax(1e-300, 1.0 - rho * rho));
	double b = floor(log2(scale / sd));

	if (!(b > 0))
		return 0;
	return b > max_bits ? max_bits : (unsigned)b;
}

static unsigned level_of(const struct qw_plkg_end *e, double x, unsigned b)
{
	unsigned lv = 0;

	for (unsigned j = 1; j < (1u << b); j++)
		lv += x >= e->thr[b][j];
	return lv;
}

/* Expected Alice/Bob bit disagreement of the plan: correlated Gaussian
 * pairs per feature (rho as in plan_build), quantized and Gray coded like
 * the real features; a fixed public seed, so both ends get the same value.
 * Used as the first block's error estimate. */
static double model_kdr(const struct qw_plkg_end *e, double rt)
{
	struct qw_rng *r = qw_rng_new_seeded(0x6b6472);
	double err = 0, tot = 0;

	if (!r)
		return e->p.kdr_initial > 0 ? e->p.kdr_initial : 0.05;
	for (size_t n = 0; n < e->nf; n++) {
		const struct feat *f = &e->f[n];
		double s = e->lam[f->k] * e->mu[f->i];
		double rho = rt * s / (s + e->sigma2);
		for (int k = 0; k < 64; k++) {
			double x = qw_rng_gaussian(r);
			double y = rho * x + sqrt(fmax(0.0, 1 - rho * rho)) * qw_rng_gaussian(r);
			unsigned ga = qw_plkg_gray(level_of(e, x, f->b));
			unsigned gb = qw_plkg_gray(level_of(e, y, f->b));
			for (unsigned d = ga ^ gb; d; d &= d - 1)
				err += 1;
			tot += f->b;
		}
	}
	qw_rng_free(r);
	return tot > 0 ? err / tot : 0;
}

/* The plan: features, bits, window entropy. */
static int plan_build(struct qw_plkg_end *e)
{
	const struct qw_plkg_config *c = &e->p.chan;
	double rt = j0(2.0 * M_PI * qw_plkg_doppler_hz(c) * c->tdd_delay_s);
	double re = qw_plkg_eve_rho(c);
	double ne = qw_plkg_ls_error_var(c, c->eve_snr_db);
	double info = 0;
	size_t bits = 0;

	e->nf = 0;
	for (unsigned k = 0; k < e->K; k++)
		for (unsigned i = 0; i < e->W; i++) {
			double s = e->lam[k] * e->mu[i];
			double rho = s > 0 ? rt * s / (s + e->sigma2) : 0;
			unsigned b = bits_for(rho, e->p.level_scale, e->p.max_bits);

			if (b == 0)
				continue;
			if (e->nf == e->cap_f) {
				size_t nc = e->cap_f ? 2 * e->cap_f : 256;
				struct feat *nfp = realloc(e->f, nc * sizeof(*nfp));
				if (!nfp)
					return QW_ENOMEM;
				e->f = nfp;
				e->cap_f = nc;
			}
			e->f[e->nf++] = (struct feat){ k, i, b, sqrt((s + e->sigma2) / 2.0) };
			bits += 2 * (size_t)b;
			info += eve_info(s, e->sigma2, ne, rt, re);
		}
	e->wbits = bits;
	e->model_kdr = model_kdr(e, rt);
	/* Raw bits (independent equiprobable levels under the model, less
	 * model_margin for the levels of one channel realisation not being
	 * exactly equiprobable: docs/plkg.md 6.2) minus what
	 * Eve's estimates tell (data processing: I(Xq; Z) <= I(X; Z)) minus the
	 * information the window shares with the previous one (windows of a
	 * slowly varying channel repeat each other), capped by the channel's new
	 * secret-key information per window. */
	e->wentropy = fmax(0.0, fmin((double)bits * (1.0 - e->p.model_margin) - info -
					     e->cap.overlap,
				     e->cap.eve_per_probe * e->W));
	return 0;
}

void qw_plkg_end_free(struct qw_plkg_end *e)
{
	if (!e)
		return;
	qw_plkg_klt_free(e->klt);
	free(e->lam);
	free(e->V);
	free(e->mu);
	free(e->f);
	if (e->csi)
		qw_wipe(e->csi, (size_t)e->W * e->n_sc * sizeof(*e->csi));
	free(e->csi);
	qw_bitvec_free(e->pend);
	free(e);
}

static int set_basis(struct qw_plkg_end *e, const double complex *cov, int sample)
{
	struct qw_plkg_klt *k = NULL;
	const double *eig;
	double *lam;
	int ret = qw_plkg_klt_new_cov(&k, cov, e->n_sc, 0.99);

	if (ret)
		return ret;
	lam = calloc(qw_plkg_klt_modes(k), sizeof(*lam));
	if (!lam) {
		qw_plkg_klt_free(k);
		return QW_ENOMEM;
	}
	eig = qw_plkg_klt_eigenvalues(k);
	for (unsigned m = 0; m < qw_plkg_klt_modes(k); m++)
		/* a sample covariance includes the estimation noise */
		lam[m] = fmax(0.0, sample ? eig[m] - e->sigma2 : eig[m]);
	qw_plkg_klt_free(e->klt);
	free(e->lam);
	e->klt = k;
	e->lam = lam;
	e->K = qw_plkg_klt_modes(k);
	return plan_build(e);
}

int qw_plkg_end_new(struct qw_plkg_end **out, const struct qw_plkg_params *p)
{
	struct qw_plkg_end *e;
	double complex *cov = NULL;
	int ret;

	QW_REQUIRE(out && p);
	*out = NULL;
	if (qw_plkg_params_check(p))
		return QW_EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return QW_ENOMEM;
	e->p = *p;
	e->n_sc = p->chan.n_sc;
	e->W = p->window;
	e->sigma2 = qw_plkg_ls_error_var(&p->chan, p->chan.snr_db);
	ret = QW_ENOMEM;
	e->csi = malloc((size_t)e->W * e->n_sc * sizeof(*e->csi));
	e->mu = malloc(e->W * sizeof(*e->mu));
	e->pend = qw_bitvec_new(0);
	if (!e->csi || !e->mu || !e->pend)
		goto fail;
	for (unsigned b = 1; b <= QW_PLKG_MAX_BITS; b++)
		for (unsigned j = 1; j < (1u << b); j++)
			e->thr[b][j] = norm_quantile((double)j / (double)(1u << b));
	ret = cap_compute(p, &e->cap);
	if (ret)
		goto fail;
	if (p->remedy == QW_PLKG_REMEDY_RANDOM_WEIGHTS) {
		/* fresh weights every probe: probes independent, no temporal
		 * transform; the basis waits for a sample covariance */
		for (unsigned i = 0; i < e->W; i++)
			e->mu[i] = 1.0;
		*out = e;
		return 0;
	}
	{
		double fd = qw_plkg_doppler_hz(&p->chan), *R;
		unsigned W = e->W;

		e->V = malloc((size_t)W * W * sizeof(*e->V));
		R = malloc((size_t)W * W * sizeof(*R));
		if (!e->V || !R) {
			free(R);
			goto fail;
		}
		/* Clarke temporal correlation of the probe sequence */
		for (unsigned i = 0; i < W; i++)
			for (unsigned j = 0; j < W; j++)
				R[i * W + j] = j0(2.0 * M_PI * fd * fabs((double)i - (double)j) /
						  p->chan.probe_rate_hz);
		ret = plkg_eig_sym(R, W, e->mu, e->V);
		free(R);
		if (ret)
			goto fail;
		for (unsigned i = 0; i < W; i++)
			e->mu[i] = fmax(0.0, e->mu[i]);
	}
	ret = QW_ENOMEM;
	cov = malloc((size_t)e->n_sc * e->n_sc * sizeof(*cov));
	if (!cov)
		goto fail;
	ret = qw_plkg_freq_cov(&p->chan, cov);
	if (!ret)
		ret = set_basis(e, cov, 0);
	free(cov);
	if (ret)
		goto fail;
	*out = e;
	return 0;
fail:
	qw_plkg_end_free(e);
	return ret;
}

int qw_plkg_end_push(struct qw_plkg_end *e, const double complex *csi)
{
	QW_REQUIRE(e && csi);
	if (e->fill == e->W)
		return QW_ESTATE;
	memcpy(e->csi + (size_t)e->fill * e->n_sc, csi, e->n_sc * sizeof(*csi));
	e->fill++;
	return e->fill == e->W;
}

int qw_plkg_end_sample_cov(const struct qw_plkg_end *e, double complex *cov)
{
	unsigned n;

	QW_REQUIRE(e && cov);
	if (e->fill != e->W)
		return QW_ESTATE;
	n = e->n_sc;
	/* zero-mean processes (no LOS part with the remedy's random weights) */
	for (unsigned a = 0; a < n; a++)
		for (unsigned b = 0; b < n; b++) {
			double complex acc = 0;
			for (unsigned t = 0; t < e->W; t++)
				acc += e->csi[(size_t)t * n + a] * conj(e->csi[(size_t)t * n + b]);
			cov[(size_t)a * n + b] = acc / e->W;
		}
	return 0;
}

int qw_plkg_end_set_cov(struct qw_plkg_end *e, const double complex *cov)
{
	QW_REQUIRE(e && cov);
	return set_basis(e, cov, 1);
}

size_t qw_plkg_end_window_bits(const struct qw_plkg_end *e) { return e->klt ? e->wbits : 0; }
double qw_plkg_end_window_entropy(const struct qw_plkg_end *e) { return e->klt ? e->wentropy : 0; }
size_t qw_plkg_end_features(const struct qw_plkg_end *e) { return e->klt ? e->nf : 0; }
double qw_plkg_end_model_kdr(const struct qw_plkg_end *e) { return e->klt ? e->model_kdr : 0; }
unsigned qw_plkg_end_modes(const struct qw_plkg_end *e) { return e->klt ? e->K : 0; }

double qw_plkg_end_bound(const struct qw_plkg_end *e, double *bound_xy)
{
	if (bound_xy)
		*bound_xy = e->cap.xy_per_probe;
	return e->cap.eve_per_probe;
}

static void put_level(struct qw_plkg_end *e, double x, unsigned b, struct qw_bitvec *out, int *err)
{
	/* level = number of inner thresholds below x (equiprobable levels) */
	unsigned g = qw_plkg_gray(level_of(e, x, b));

	for (unsigned k = b; k-- > 0;)
		if (qw_bitvec_push(out, (int)((g >> k) & 1)))
			*err = QW_ENOMEM;
}

int qw_plkg_end_quantize(struct qw_plkg_end *e, struct qw_bitvec *out, struct qw_bitvec *out_neg,
			 double *entropy)
{
	unsigned W, K;
	double *cf = NULL, *fv = NULL, *feat = NULL, gain = 0, wsum = 0;
	int ret = QW_ENOMEM, err = 0;

	QW_REQUIRE(e);
	if (e->fill != e->W || !e->klt)
		return QW_ESTATE;
	if (!out) {
		out = e->pend;
		e->pend_h += e->wentropy;
	}
	W = e->W;
	K = e->K;
	cf = malloc((size_t)W * 2 * K * sizeof(*cf));
	fv = malloc(e->nf * 2 * sizeof(*fv) + 1);
	feat = malloc(2 * (size_t)K * sizeof(*feat));
	if (!cf || !fv || !feat)
		goto out;
	for (unsigned t = 0; t < W; t++) {
		qw_plkg_klt_apply(e->klt, e->csi + (size_t)t * e->n_sc, feat);
		memcpy(cf + (size_t)t * 2 * K, feat, 2 * K * sizeof(*feat));
	}
	/* 2-D features: temporal eigenvector i applied to mode k's sequence */
	for (size_t n = 0; n < e->nf; n++) {
		const struct feat *f = &e->f[n];
		double re = 0, im = 0;

		if (!e->V) {
			re = cf[(size_t)f->i * 2 * K + 2 * f->k];
			im = cf[(size_t)f->i * 2 * K + 2 * f->k + 1];
		} else {
			for (unsigned t = 0; t < W; t++) {
				double v = e->V[(size_t)t * W + f->i];
				re += v * cf[(size_t)t * 2 * K + 2 * f->k];
				im += v * cf[(size_t)t * 2 * K + 2 * f->k + 1];
			}
		}
		fv[2 * n] = re / f->sd;
		fv[2 * n + 1] = im / f->sd;
		gain += fv[2 * n] * fv[2 * n] + fv[2 * n + 1] * fv[2 * n + 1];
		wsum += 2;
	}
	/* each end normalises its own window power: a fixed gain mismatch (or
	 * Eve's different noise) does not bias the levels */
	gain = wsum > 0 && gain > 0 ? sqrt(gain / wsum) : 1.0;
	for (size_t n = 0; n < e->nf; n++)
		for (int r = 0; r < 2; r++) {
			double x = fv[2 * n + (size_t)r] / gain;
			put_level(e, x, e->f[n].b, out, &err);
			if (out_neg)
				put_level(e, -x, e->f[n].b, out_neg, &err);
		}
	if (err)
		goto out;
	if (entropy)
		*entropy = e->wentropy;
	e->fill = 0;
	qw_wipe(e->csi, (size_t)W * e->n_sc * sizeof(*e->csi));
	ret = 0;
out:
	if (cf)
		qw_wipe(cf, (size_t)W * 2 * K * sizeof(*cf));
	if (fv)
		qw_wipe(fv, e->nf * 2 * sizeof(*fv));
	free(cf);
	free(fv);
	free(feat);
	return ret;
}

const struct qw_bitvec *qw_plkg_end_pending(const struct qw_plkg_end *e)
{
	QW_REQUIRE(e);
	return e->pend;
}

int qw_plkg_end_take_block(struct qw_plkg_end *e, uint64_t id, enum qw_role role, double kdr_est,
			   int flush, struct qw_key_block **b)
{
	struct qw_bitvec *nb;

	QW_REQUIRE(e && b);
	*b = NULL;
	if (e->pend->nbits == 0 || (!flush && e->pend->nbits < e->p.block_bits))
		return 0;
	nb = qw_bitvec_new(0);
	if (!nb)
		return QW_ENOMEM;
	*b = qw_block_new(id, role, e->pend);
	if (!*b) {
		qw_bitvec_free(nb);
		return QW_ENOMEM;
	}
	(*b)->qber_estimate = kdr_est;
	(*b)->sec_n_single = e->pend_h;
	e->pend = nb;
	e->pend_h = 0;
	return 0;
}

void qw_plkg_kdr_init(struct qw_plkg_kdr *k, const struct qw_plkg_params *p, double model_kdr)
{
	QW_REQUIRE(k && p);
	memset(k, 0, sizeof(*k));
	k->margin = p->kdr_margin;
	k->est = p->kdr_initial > 0 ? p->kdr_initial :
				      fmin(0.45, p->kdr_margin * model_kdr + 0.002);
}

void qw_plkg_kdr_update(struct qw_plkg_kdr *k, uint64_t raw_bits, int reconciled,
			double qber_observed)
{
	QW_REQUIRE(k);
	if (!reconciled) {
		/* reconciliation failed or left errors: the estimate was low */
		k->est = fmin(0.45, 1.5 * k->est);
		return;
	}
	k->err += qber_observed * (double)raw_bits;
	k->bits += (double)raw_bits;
	if (k->bits > 0)
		k->est = fmin(0.45, k->margin * k->err / k->bits + 0.002);
}

/* ---- length stage ---------------------------------------------------------- */

static int len_init(void **state, const void *params)
{
	double *eps = malloc(sizeof(*eps));

	if (!eps)
		return QW_ENOMEM;
	*eps = params ? *(const double *)params : 1e-10;
	if (!(*eps > 0) || !(*eps < 1)) {
		free(eps);
		return QW_EINVAL;
	}
	*state = eps;
	return 0;
}

static enum qw_stage_result len_process(void *state, struct qw_key_block *b,
					struct qw_distill_chan *chan)
{
	double eps = *(const double *)state, s;

	(void)chan;
	QW_REQUIRE(b);
	if (b->state != QW_BLOCK_VERIFIED || !b->key)
		return QW_STAGE_ERROR;
	/* leftover hash lemma: m = H - disclosed - 2 log2(1/eps) */
	s = floor(b->sec_n_single - (double)b->disclosed_bits - 2.0 * log2(1.0 / eps));
	if (!(s > 0))
		s = 0;
	if (s > (double)b->key->nbits)
		s = (double)b->key->nbits;
	b->secret_bits = (uint64_t)s;
	return QW_STAGE_FORWARD;
}

static void len_free(void *state)
{
	free(state);
}

const struct qw_stage qw_plkg_length_stage = {
	.name = "plkg-length",
	.init = len_init,
	.process = len_process,
	.free = len_free,
};

size_t qw_plkg_stages(const struct qw_plkg_params *p, struct qw_plkg_stage_storage *st,
		      const struct qw_stage **stages, const void **params)
{
	QW_REQUIRE(p && st && stages && params);
	memset(st, 0, sizeof(*st));
	qw_cascade_params_init(&st->cascade, QW_CASCADE_OPTIMIZED);
	qw_ldpc_params_init(&st->ldpc);
	st->ldpc.lift = 64;
	st->ldpc.keep_partial = 0;
	st->bch.keep_partial = 0;
	st->verify.tag_bits = p->tag_bits;
	st->eps = p->eps_pa;
	switch (p->reconcile) {
	case QW_PLKG_REC_BCH:
		stages[0] = &qw_bch_stage;
		params[0] = &st->bch;
		break;
	case QW_PLKG_REC_LDPC:
		stages[0] = &qw_ldpc_stage;
		params[0] = &st->ldpc;
		break;
	default:
		stages[0] = &qw_cascade_stage;
		params[0] = &st->cascade;
		break;
	}
	stages[1] = &qw_stage_verify;
	params[1] = &st->verify;
	stages[2] = &qw_plkg_length_stage;
	params[2] = &st->eps;
	stages[3] = &qw_stage_pa;
	params[3] = &st->pa;
	return QW_PLKG_MAX_STAGES;
}

/* ---- in-process duplex channel ------------------------------------------------ */

struct msgq {
	uint8_t *m[16];
	size_t len[16];
	uint32_t type[16];
	unsigned head, count;
};

struct duplex {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct msgq q[2]; /* q[0]: to Alice, q[1]: to Bob */
	int closed;
};

struct endpoint {
	struct duplex *d;
	int me; /* 0 Alice, 1 Bob */
};

static int dx_send(void *ctx, uint32_t type, const uint8_t *msg, size_t len)
{
	struct endpoint *ep = ctx;
	struct duplex *d = ep->d;
	struct msgq *q = &d->q[1 - ep->me];
	uint8_t *copy = malloc(len ? len : 1);
	int ret = 0;

	if (!copy)
		return QW_ENOMEM;
	if (len)
		memcpy(copy, msg, len);
	pthread_mutex_lock(&d->mu);
	while (q->count == 16 && !d->closed)
		pthread_cond_wait(&d->cv, &d->mu);
	if (d->closed) {
		ret = QW_ECLOSED;
		free(copy);
	} else {
		unsigned at = (q->head + q->count) % 16;
		q->m[at] = copy;
		q->len[at] = len;
		q->type[at] = type;
		q->count++;
		pthread_cond_broadcast(&d->cv);
	}
	pthread_mutex_unlock(&d->mu);
	return ret;
}

static int dx_recv(void *ctx, uint32_t *type, uint8_t **msg, size_t *len)
{
	struct endpoint *ep = ctx;
	struct duplex *d = ep->d;
	struct msgq *q = &d->q[ep->me];
	int ret = 0;

	pthread_mutex_lock(&d->mu);
	while (q->count == 0 && !d->closed)
		pthread_cond_wait(&d->cv, &d->mu);
	if (q->count == 0) {
		ret = QW_ECLOSED;
	} else {
		*msg = q->m[q->head];
		*len = q->len[q->head];
		*type = q->type[q->head];
		q->head = (q->head + 1) % 16;
		q->count--;
		pthread_cond_broadcast(&d->cv);
	}
	pthread_mutex_unlock(&d->mu);
	return ret;
}

struct runner {
	const struct qw_stage *stages;
	const void **params;
	size_t n;
	struct qw_key_block *blk;
	struct endpoint ep;
	struct qw_bitvec *verified; /* copy of the key after verification */
	int capture;
	enum qw_stage_result res;
	int fault;
};

static void *run_chain(void *arg)
{
	struct runner *r = arg;
	struct qw_distill_chan chan = { &r->ep, dx_send, dx_recv };
	void *states[QW_PLKG_MAX_STAGES] = { 0 };
	size_t i;

	r->res = QW_STAGE_ERROR;
	for (i = 0; i < r->n; i++)
		if (r->stages[i].init(&states[i], r->params[i])) {
			r->fault = QW_ENOMEM;
			goto out;
		}
	for (i = 0; i < r->n; i++) {
		r->res = r->stages[i].process(states[i], r->blk, &chan);
		if (r->res != QW_STAGE_FORWARD)
			break;
		if (r->capture && r->blk->state == QW_BLOCK_VERIFIED && !r->verified)
			r->verified = qw_bitvec_dup(r->blk->key);
	}
out:
	for (i = 0; i < r->n; i++)
		if (states[i])
			r->stages[i].free(states[i]);
	/* wake and release the peer if this side stopped early */
	pthread_mutex_lock(&r->ep.d->mu);
	if (r->res != QW_STAGE_FORWARD)
		r->ep.d->closed = 1;
	pthread_cond_broadcast(&r->ep.d->cv);
	pthread_mutex_unlock(&r->ep.d->mu);
	return NULL;
}

int qw_plkg_distill_local(const struct qw_plkg_params *p, struct qw_key_block *a,
			  struct qw_key_block *b, struct qw_bitvec *reconciled,
			  struct qw_plkg_block_result *res)
{
	struct qw_plkg_stage_storage st;
	const struct qw_stage *stages[QW_PLKG_MAX_STAGES];
	const void *params[QW_PLKG_MAX_STAGES];
	struct duplex d;
	struct runner ra, rb;
	pthread_t th;
	size_t n;
	int ret = 0;

	QW_REQUIRE(p && a && b && res);
	memset(res, 0, sizeof(*res));
	n = qw_plkg_stages(p, &st, stages, params);
	memset(&d, 0, sizeof(d));
	pthread_mutex_init(&d.mu, NULL);
	pthread_cond_init(&d.cv, NULL);
	{
		struct qw_stage tab[QW_PLKG_MAX_STAGES];
		for (size_t i = 0; i < n; i++)
			tab[i] = *stages[i];
		memset(&ra, 0, sizeof(ra));
		memset(&rb, 0, sizeof(rb));
		ra.stages = rb.stages = tab;
		ra.params = rb.params = params;
		ra.n = rb.n = n;
		ra.blk = a;
		rb.blk = b;
		ra.ep = (struct endpoint){ &d, 0 };
		rb.ep = (struct endpoint){ &d, 1 };
		ra.capture = reconciled != NULL;
		if (pthread_create(&th, NULL, run_chain, &ra)) {
			ret = QW_EIO;
			goto out;
		}
		run_chain(&rb);
		pthread_join(th, NULL);
	}
	if (ra.fault || rb.fault) {
		ret = QW_ENOMEM;
		goto out;
	}
	res->reconciled = (a->state == QW_BLOCK_VERIFIED || a->state == QW_BLOCK_AMPLIFIED) &&
			  (b->state == QW_BLOCK_VERIFIED || b->state == QW_BLOCK_AMPLIFIED);
	res->disclosed_bits = a->disclosed_bits;
	res->ec_bits = a->ec_parity_bits;
	res->qber_observed = a->qber_observed;
	res->delivered = ra.res == QW_STAGE_FORWARD && rb.res == QW_STAGE_FORWARD &&
			 a->state == QW_BLOCK_AMPLIFIED && b->state == QW_BLOCK_AMPLIFIED;
	if (res->delivered) {
		res->secret_bits = a->key->nbits;
		res->keys_equal = qw_bitvec_equal(a->key, b->key);
		if (reconciled && ra.verified) {
			size_t at = reconciled->nbits;
			if (qw_bitvec_resize(reconciled, at + ra.verified->nbits))
				ret = QW_ENOMEM;
			else
				qw_bitvec_copy_range(reconciled, at, ra.verified, 0,
						     ra.verified->nbits);
		}
	} else {
		const char *why = a->drop_reason[0] ? a->drop_reason : b->drop_reason;
		snprintf(res->drop_reason, sizeof(res->drop_reason), "%s",
			 why[0] ? why : "distillation error");
	}
out:
	qw_bitvec_free(ra.verified);
	qw_bitvec_free(rb.verified);
	for (int s = 0; s < 2; s++)
		while (d.q[s].count) {
			free(d.q[s].m[d.q[s].head]);
			d.q[s].head = (d.q[s].head + 1) % 16;
			d.q[s].count--;
		}
	pthread_mutex_destroy(&d.mu);
	pthread_cond_destroy(&d.cv);
	return ret;
}

/* ---- simulation ----------------------------------------------------------------- */

void qw_plkg_sim_result_free(struct qw_plkg_sim_result *res)
{
	if (!res)
		return;
	qw_bitvec_free(res->key);
	qw_bitvec_free(res->reconciled);
	res->key = res->reconciled = NULL;
}

struct sim {
	const struct qw_plkg_params *p;
	struct qw_plkg_channel **ch;  /* 1, or n_elements with the remedy */
	unsigned nch;
	struct qw_rng *rng;           /* remedy weights and noise */
	struct qw_plkg_end *end[4];   /* Alice, Bob, Eve (Alice's pilot), Eve (Bob's) */
	double complex *buf[4];
	double complex *tmp;
	double sigma2, sigma2e;
};

static double complex cgauss(struct qw_rng *r, double var)
{
	double s = sqrt(var / 2.0);
	double re = s * qw_rng_gaussian(r);
	return re + I * (s * qw_rng_gaussian(r));
}

/* One probe round with the remedy: the AP's elements combined with fresh
 * weights w_e ~ CN(0, 1/N), the same for both TDD pilots of the round. */
static void probe_remedy(struct sim *s, double t)
{
	const struct qw_plkg_config *c = &s->p->chan;
	unsigned n = c->n_sc, N = s->nch;
	double complex w[64];

	for (unsigned e = 0; e < N; e++)
		w[e] = cgauss(s->rng, 1.0 / N);
	for (int k = 0; k < 4; k++)
		memset(s->buf[k], 0, n * sizeof(double complex));
	for (unsigned e = 0; e < N; e++) {
		qw_plkg_channel_freq(s->ch[e], QW_PLKG_LINK_AB, t + c->tdd_delay_s, s->tmp);
		for (unsigned k = 0; k < n; k++)
			s->buf[0][k] += w[e] * s->tmp[k];
		qw_plkg_channel_freq(s->ch[e], QW_PLKG_LINK_AB, t, s->tmp);
		for (unsigned k = 0; k < n; k++)
			s->buf[1][k] += w[e] * s->tmp[k];
		qw_plkg_channel_freq(s->ch[e], QW_PLKG_LINK_AE, t, s->tmp);
		for (unsigned k = 0; k < n; k++)
			s->buf[2][k] += w[e] * s->tmp[k];
	}
	/* Bob's pilot to Eve does not pass the AP's elements */
	qw_plkg_channel_freq(s->ch[0], QW_PLKG_LINK_BE, t + c->tdd_delay_s, s->buf[3]);
	for (unsigned k = 0; k < n; k++) {
		s->buf[0][k] += cgauss(s->rng, s->sigma2);
		s->buf[1][k] += cgauss(s->rng, s->sigma2);
		s->buf[2][k] += cgauss(s->rng, s->sigma2e);
		s->buf[3][k] += cgauss(s->rng, s->sigma2e);
	}
	w[0] = 0;
	qw_wipe(w, sizeof(w));
}

static void sim_free(struct sim *s)
{
	for (unsigned e = 0; s->ch && e < s->nch; e++)
		qw_plkg_channel_free(s->ch[e]);
	free(s->ch);
	for (int k = 0; k < 4; k++) {
		qw_plkg_end_free(s->end[k]);
		free(s->buf[k]);
	}
	free(s->tmp);
	qw_rng_free(s->rng);
}

/* Remedy: an upper bound on the secret bits of the whole session against
 * an eavesdropper who knows the weights w(t) (e.g. from the second-order
 * statistics of her own observations, which identify them up to a fixed
 * unitary mixing). Then only the static per-element channels H_e are
 * secret: Alice and Bob each hold T noisy observations of every mode k of
 * every element (matched-filter noise sigma^2 N / T on variance lambda_k),
 * and I(X;Y | w) = N sum_k -log2(1 - rho_k^2), rho_k = lambda_k /
 * (lambda_k + sigma^2 N / T), grows like log T, not like T. */
static int informed_bound(const struct qw_plkg_params *p, uint64_t T, double *bits)
{
	unsigned n = p->chan.n_sc, N = p->n_elements;
	double complex *cov = malloc((size_t)n * n * sizeof(*cov));
	double sigma2 = qw_plkg_ls_error_var(&p->chan, p->chan.snr_db), sum = 0;
	struct qw_plkg_klt *k = NULL;
	int ret = QW_ENOMEM;

	if (!cov)
		return ret;
	ret = qw_plkg_freq_cov(&p->chan, cov);
	if (!ret)
		ret = qw_plkg_klt_new_cov(&k, cov, n, 1.0);
	if (!ret) {
		const double *eig = qw_plkg_klt_eigenvalues(k);
		for (unsigned m = 0; m < n; m++) {
			double rho;
			if (!(eig[m] > 1e-12))
				continue;
			rho = eig[m] / (eig[m] + sigma2 * N / (double)T);
			sum += N * qw_plkg_mi_gauss(rho);
		}
		*bits = sum;
	}
	qw_plkg_klt_free(k);
	free(cov);
	return ret;
}

int qw_plkg_simulate(const struct qw_plkg_params *p, uint64_t seed, uint64_t probes,
		     void (*progress)(void *ctx, uint64_t done, uint64_t total), void *ctx,
		     struct qw_plkg_sim_result *res)
{
	struct sim s;
	struct qw_bitvec *eve[4] = { NULL, NULL, NULL, NULL };
	uint64_t eve_err[4] = { 0 }, blk_eve_err[4] = { 0 }, blk_eve_bits = 0;
	double eve_blocks_sum = 0;
	struct qw_plkg_kdr kdr;
	uint64_t block_id = 1, eve_bits_total = 0;
	int ret = QW_ENOMEM, remedy;

	QW_REQUIRE(p && res);
	memset(res, 0, sizeof(*res));
	memset(&s, 0, sizeof(s));
	if (qw_plkg_params_check(p) || probes == 0)
		return QW_EINVAL;
	remedy = p->remedy == QW_PLKG_REMEDY_RANDOM_WEIGHTS;
	s.p = p;
	s.nch = remedy ? p->n_elements : 1;
	s.ch = calloc(s.nch, sizeof(*s.ch));
	s.tmp = malloc(p->chan.n_sc * sizeof(*s.tmp));
	s.rng = qw_rng_new_seeded(seed ^ 0x706c6b6732ull);
	if (!s.ch || !s.tmp || !s.rng)
		goto out;
	s.sigma2 = qw_plkg_ls_error_var(&p->chan, p->chan.snr_db);
	s.sigma2e = qw_plkg_ls_error_var(&p->chan, p->chan.eve_snr_db);
	for (unsigned e = 0; e < s.nch; e++) {
		ret = qw_plkg_channel_new(&s.ch[e], &p->chan, seed + 0x9e3779b97f4a7c15ull * e);
		if (ret)
			goto out;
	}
	for (int k = 0; k < 4; k++) {
		ret = qw_plkg_end_new(&s.end[k], p);
		if (ret)
			goto out;
		ret = QW_ENOMEM;
		s.buf[k] = malloc(p->chan.n_sc * sizeof(double complex));
		if (!s.buf[k])
			goto out;
	}
	for (int k = 0; k < 4; k++)
		if (!(eve[k] = qw_bitvec_new(0)))
			goto out;
	if (!(res->key = qw_bitvec_new(0)) ||
	    !(res->reconciled = qw_bitvec_new(0)))
		goto out;
	res->keys_equal = 1;
	res->kdr_model = 0;

	for (uint64_t n = 0; n < probes; n++) {
		struct qw_plkg_probe pr = { 0, s.buf[0], s.buf[1], s.buf[2], s.buf[3] };
		int full = 0;

		if (remedy)
			probe_remedy(&s, (double)n / p->chan.probe_rate_hz);
		else
			qw_plkg_probe_next(s.ch[0], &pr);
		for (int k = 0; k < 4; k++) {
			int r = qw_plkg_end_push(s.end[k], s.buf[k]);
			if (r < 0) {
				ret = r;
				goto out;
			}
			full = r;
		}
		res->probes++;
		if (!full)
			continue;
		if (!qw_plkg_end_window_bits(s.end[0]) && remedy) {
			/* Alice's public basis from her first window's covariance */
			double complex *cov = malloc((size_t)p->chan.n_sc * p->chan.n_sc *
						     sizeof(*cov));
			ret = QW_ENOMEM;
			if (!cov)
				goto out;
			ret = qw_plkg_end_sample_cov(s.end[0], cov);
			for (int k = 0; k < 4 && !ret; k++)
				ret = qw_plkg_end_set_cov(s.end[k], cov);
			free(cov);
			if (ret)
				goto out;
		}
		{
			const struct qw_bitvec *pa = qw_plkg_end_pending(s.end[0]);
			size_t at = pa->nbits;

			ret = qw_plkg_end_quantize(s.end[0], NULL, NULL, NULL);
			if (!ret)
				ret = qw_plkg_end_quantize(s.end[1], NULL, NULL, NULL);
			for (int k = 0; k < 4; k++)
				if (!ret && qw_bitvec_resize(eve[k], 0))
					ret = QW_ENOMEM;
			if (!ret)
				ret = qw_plkg_end_quantize(s.end[2], eve[0], eve[1], NULL);
			if (!ret)
				ret = qw_plkg_end_quantize(s.end[3], eve[2], eve[3], NULL);
			if (ret)
				goto out;
			res->windows++;
			for (int k = 0; k < 4; k++) {
				uint64_t d = 0;
				for (size_t i = 0; i < eve[k]->nbits; i++)
					d += qw_bitvec_get(pa, at + i) != qw_bitvec_get(eve[k], i);
				eve_err[k] += d;
				blk_eve_err[k] += d;
			}
			blk_eve_bits += eve[0]->nbits;
			eve_bits_total += eve[0]->nbits;
		}
		if (res->blocks == 0 && res->windows == 1) {
			res->kdr_model = qw_plkg_end_model_kdr(s.end[0]);
			qw_plkg_kdr_init(&kdr, p, res->kdr_model);
		}
		{
			struct qw_key_block *ba = NULL, *bb = NULL;
			struct qw_plkg_block_result br;
			uint64_t raw_err, raw_n;
			/* a block when enough bits wait, or when no further window fits */
			int flush = n + 1 + p->window > probes;
			double best = 1.0;

			ret = qw_plkg_end_take_block(s.end[0], block_id, QW_ROLE_ALICE, kdr.est, flush,
						     &ba);
			if (!ret && ba)
				ret = qw_plkg_end_take_block(s.end[1], block_id, QW_ROLE_BOB, kdr.est,
							     1, &bb);
			if (!ret && ba && (!bb || bb->key->nbits != ba->key->nbits))
				ret = QW_ESTATE; /* the ends quantize in lock step */
			if (ret || !ba) {
				qw_block_free(ba);
				qw_block_free(bb);
				if (ret)
					goto out;
				continue;
			}
			raw_n = ba->key->nbits;
			raw_err = qw_bitvec_hamming(ba->key, bb->key);
			res->raw_bits += raw_n;
			res->raw_errors += raw_err;
			for (int k = 0; k < 4; k++) {
				double r = blk_eve_bits ? (double)blk_eve_err[k] / blk_eve_bits : 0.5;
				best = fmin(best, r);
				blk_eve_err[k] = 0;
			}
			eve_blocks_sum += best;
			blk_eve_bits = 0;
			block_id++;
			res->entropy_bits += ba->sec_n_single;
			ret = qw_plkg_distill_local(p, ba, bb, res->reconciled, &br);
			if (!ret && br.delivered) {
				size_t at = res->key->nbits;
				if (qw_bitvec_resize(res->key, at + ba->key->nbits))
					ret = QW_ENOMEM;
				else
					qw_bitvec_copy_range(res->key, at, ba->key, 0,
							     ba->key->nbits);
				res->final_errors += qw_bitvec_hamming(ba->key, bb->key);
			}
			res->blocks++;
			if (br.delivered) {
				res->blocks_delivered++;
				res->key_bits += br.secret_bits;
				if (br.keys_equal)
					res->blocks_equal++;
				else
					res->keys_equal = 0;
			} else {
				res->blocks_dropped++;
				snprintf(res->last_drop, sizeof(res->last_drop), "%s",
					 br.drop_reason);
			}
			res->leak_bits += br.disclosed_bits;
			res->ec_leak_bits += br.ec_bits;
			/* running KDR from what reconciliation corrected (known to
			 * both ends) */
			qw_plkg_kdr_update(&kdr, raw_n, br.reconciled, br.qber_observed);
			qw_block_free(ba);
			qw_block_free(bb);
			if (ret)
				goto out;
			if (progress)
				progress(ctx, n + 1, probes);
		}
	}
	res->seconds = (double)res->probes / p->chan.probe_rate_hz;
	res->kdr_raw = res->raw_bits ? (double)res->raw_errors / res->raw_bits : 0;
	for (int k = 0; k < 4; k++)
		res->eve_kdr_each[k] = eve_bits_total ? (double)eve_err[k] / eve_bits_total : 0.5;
	res->eve_kdr = 1.0;
	for (int k = 0; k < 4; k++)
		res->eve_kdr = fmin(res->eve_kdr, res->eve_kdr_each[k]);
	res->eve_kdr_per_block = res->blocks ? eve_blocks_sum / res->blocks : 0.5;
	res->kdr_final = res->key->nbits ? (double)res->final_errors / res->key->nbits : 0;
	res->kgr_bits_per_probe = (double)res->key_bits / res->probes;
	res->kgr_bits_per_s = res->kgr_bits_per_probe * p->chan.probe_rate_hz;
	res->raw_bits_per_probe = (double)res->raw_bits / res->probes;
	res->bound_bits_per_probe = qw_plkg_end_bound(s.end[0], &res->bound_xy_bits_per_probe);
	res->kgr_fraction_of_bound = res->bound_bits_per_probe > 0 ?
					     res->kgr_bits_per_probe / res->bound_bits_per_probe :
					     0;
	if (remedy) {
		ret = informed_bound(p, res->probes, &res->informed_eve_bound_bits);
		if (ret)
			goto out;
	}
	res->modes = qw_plkg_end_modes(s.end[0]);
	res->features_per_window = qw_plkg_end_features(s.end[0]);
	ret = 0;
out:
	for (int k = 0; k < 4; k++)
		qw_bitvec_free(eve[k]);
	sim_free(&s);
	if (ret)
		qw_plkg_sim_result_free(res);
	return ret;
}
