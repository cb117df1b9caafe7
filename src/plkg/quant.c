/* PLKG quantizers (guard band, multi-bit adaptive with Gray coding) and
 * decorrelating transforms across subcarriers (KLT, DCT). See
 * include/qwave/plkg_quant.h. */
#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plkg/plkg_internal.h"
#include "qwave/plkg_quant.h"

unsigned qw_plkg_gray(unsigned v)
{
	return v ^ (v >> 1);
}

unsigned qw_plkg_gray_inv(unsigned g)
{
	unsigned v = g;

	for (unsigned s = 1; s < 8 * sizeof(unsigned); s <<= 1)
		v ^= v >> s;
	return v;
}

static int stats(const double *x, size_t n, size_t stride, double *mean, double *sd)
{
	double m = 0, v = 0;

	for (size_t i = 0; i < n; i++) {
		if (!isfinite(x[i * stride]))
			return QW_EINVAL;
		m += x[i * stride];
	}
	m /= (double)n;
	for (size_t i = 0; i < n; i++) {
		double d = x[i * stride] - m;

		v += d * d;
	}
	*mean = m;
	*sd = sqrt(v / (double)(n - 1));
	return 0;
}

int qw_plkg_quant_guard(const double *x, size_t n, size_t stride, double alpha,
			unsigned min_run, uint16_t *level, uint8_t *keep)
{
	double mean, sd, hi, lo;
	size_t i = 0;

	QW_REQUIRE(x != NULL && level != NULL && keep != NULL);
	if (n < 2 || stride < 1 || !(alpha >= 0) || !isfinite(alpha) || min_run < 1)
		return QW_EINVAL;
	if (stats(x, n, stride, &mean, &sd) < 0)
		return QW_EINVAL;
	/* [Mathur08] Sec. 4: q+ = mean + alpha sd, q- = mean - alpha sd over
	 * the block; samples between the thresholds are dropped. */
	hi = mean + alpha * sd;
	lo = mean - alpha * sd;
	for (size_t j = 0; j < n; j++) {
		double v = x[j * stride];

		level[j] = v > hi ? 1 : 0;
		keep[j] = (v > hi || v < lo) ? 1 : 0;
	}
	if (min_run <= 1)
		return 0;
	/* Excursions of at least min_run samples on one side; only their
	 * centres are kept (one bit per excursion, [Mathur08] Sec. 4). */
	while (i < n) {
		size_t j = i;

		if (!keep[i]) {
			i++;
			continue;
		}
		while (j < n && keep[j] && level[j] == level[i])
			j++;
		for (size_t q = i; q < j; q++)
			keep[q] = 0;
		if (j - i >= min_run)
			keep[i + (j - i) / 2] = 1;
		i = j;
	}
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int qw_plkg_quant_multibit(const double *x, size_t n, size_t stride, unsigned bits, double guard,
			   uint16_t *level, uint8_t *keep)
{
	double *sorted = NULL;
	unsigned nl;
	int ret = QW_EINVAL;

	QW_REQUIRE(x != NULL && level != NULL && keep != NULL);
	if (n < 2 || stride < 1 || bits < 1 || bits > QW_PLKG_MAX_BITS)
		goto out;
	nl = 1u << bits;
	if (!(guard >= 0) || !(guard < 1.0 / nl))
		goto out;
	ret = QW_ENOMEM;
	sorted = malloc(n * sizeof(double));
	if (sorted == NULL)
		goto out;
	ret = QW_EINVAL;
	for (size_t i = 0; i < n; i++) {
		sorted[i] = x[i * stride];
		if (!isfinite(sorted[i]))
			goto out;
	}
	qsort(sorted, n, sizeof(double), cmp_double);
	/* [Jana09] multi-bit ASBG: the block's empirical CDF F splits the range
	 * into 2^bits equally likely intervals; level = floor(F(x) 2^bits).
	 * F is the mid-rank of x among the block's samples. */
	for (size_t i = 0; i < n; i++) {
		double v = x[i * stride], f, pos, frac;
		size_t lo = 0, hi = n;
		unsigned lv;

		while (lo < hi) { /* first index with sorted[idx] >= v */
			size_t mid = lo + (hi - lo) / 2;

			if (sorted[mid] < v)
				lo = mid + 1;
			else
				hi = mid;
		}
		f = ((double)lo + 0.5) / (double)n;
		pos = f * nl;
		lv = (unsigned)pos;
		if (lv >= nl)
			lv = nl - 1;
		level[i] = (uint16_t)lv;
		frac = pos - (double)lv;
		/* Guard mass guard/2 on each side of each inner threshold. */
		keep[i] = 1;
		if ((lv > 0 && frac < guard * nl / 2.0) || (lv + 1 < nl && frac > 1.0 - guard * nl / 2.0))
			keep[i] = 0;
	}
	ret = 0;
out:
	free(sorted);
	return ret;
}

int qw_plkg_quant_pack(const uint16_t *level, const uint8_t *keep_a, const uint8_t *keep_b,
		       size_t n, unsigned bits, struct qw_bitvec *out)
{
	QW_REQUIRE(level != NULL && keep_a != NULL && out != NULL);
	if (bits < 1 || bits > QW_PLKG_MAX_BITS)
		return QW_EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned g;

		if (!keep_a[i] || (keep_b != NULL && !keep_b[i]))
			continue;
		if (level[i] >> bits)
			return QW_EINVAL;
		/* Gray code: neighbouring levels differ in one bit, so the usual
		 * off-by-one-level disagreement costs one bit error [Jana09]. */
		g = qw_plkg_gray(level[i]);
		for (unsigned b = bits; b-- > 0;) {
			int r = qw_bitvec_push(out, (int)((g >> b) & 1u));

			if (r < 0)
				return r;
		}
	}
	return 0;
}

unsigned qw_plkg_bits_for_rho(double rho, unsigned max_bits)
{
	double spread, b;

	if (!(rho > 0) || !(rho <= 1))
		return 0;
	spread = sqrt(fmax(1e-300, 1.0 - rho * rho));
	b = floor(log2(0.3 / spread));
	if (!(b > 0))
		return 0;
	return b > max_bits ? max_bits : (unsigned)b;
}

/* ---- eigen-decomposition ------------------------------------------------- */

int plkg_eig_sym(double *a, unsigned n, double *w, double *v)
{
	unsigned *order = NULL;
	double *vv = NULL, *ww = NULL;
	int ret = QW_ENOMEM;

	vv = malloc((size_t)n * n * sizeof(double));
	ww = malloc((size_t)n * sizeof(double));
	order = malloc((size_t)n * sizeof(unsigned));
	if (vv == NULL || ww == NULL || order == NULL)
		goto out;
	for (unsigned i = 0; i < n; i++)
		for (unsigned j = 0; j < n; j++)
			vv[(size_t)i * n + j] = i == j;
	/* Cyclic Jacobi (Golub and Van Loan, Matrix Computations, 4th ed.,
	 * Alg. 8.5.3): rotate away each off-diagonal entry until the
	 * off-diagonal norm is negligible against the diagonal. */
	for (int sweep = 0; sweep < 100; sweep++) {
		double off = 0, diag = 0;

		for (unsigned i = 0; i < n; i++) {
			diag += a[(size_t)i * n + i] * a[(size_t)i * n + i];
			for (unsigned j = i + 1; j < n; j++)
				off += a[(size_t)i * n + j] * a[(size_t)i * n + j];
		}
		if (off <= 1e-30 * diag || off == 0)
			break;
		for (unsigned p = 0; p + 1 < n; p++) {
			for (unsigned q = p + 1; q < n; q++) {
				double apq = a[(size_t)p * n + q], app, aqq, theta, t, c, s;

				if (fabs(apq) < 1e-300)
					continue;
				app = a[(size_t)p * n + p];
				aqq = a[(size_t)q * n + q];
				theta = (aqq - app) / (2.0 * apq);
				t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
				c = 1.0 / sqrt(t * t + 1.0);
				s = t * c;
				for (unsigned k = 0; k < n; k++) {
					double akp = a[(size_t)k * n + p], akq = a[(size_t)k * n + q];

					a[(size_t)k * n + p] = c * akp - s * akq;
					a[(size_t)k * n + q] = s * akp + c * akq;
				}
				for (unsigned k = 0; k < n; k++) {
					double apk = a[(size_t)p * n + k], aqk = a[(size_t)q * n + k];

					a[(size_t)p * n + k] = c * apk - s * aqk;
					a[(size_t)q * n + k] = s * apk + c * aqk;
				}
				for (unsigned k = 0; v != NULL && k < n; k++) {
					double vkp = vv[(size_t)k * n + p], vkq = vv[(size_t)k * n + q];

					vv[(size_t)k * n + p] = c * vkp - s * vkq;
					vv[(size_t)k * n + q] = s * vkp + c * vkq;
				}
			}
		}
	}
	for (unsigned i = 0; i < n; i++) {
		ww[i] = a[(size_t)i * n + i];
		order[i] = i;
	}
	/* Insertion sort by decreasing eigenvalue (n is small). */
	for (unsigned i = 1; i < n; i++) {
		unsigned o = order[i], j = i;

		while (j > 0 && ww[order[j - 1]] < ww[o]) {
			order[j] = order[j - 1];
			j--;
		}
		order[j] = o;
	}
	for (unsigned m = 0; m < n; m++) {
		w[m] = ww[order[m]];
		if (v != NULL)
			for (unsigned k = 0; k < n; k++)
				v[(size_t)k * n + m] = vv[(size_t)k * n + order[m]];
	}
	ret = 0;
out:
	free(vv);
	free(ww);
	free(order);
	return ret;
}

int plkg_eig_herm(const double complex *c, unsigned n, double *w, double complex *u)
{
	unsigned n2 = 2 * n, got = 0;
	double *a = NULL, *w2 = NULL, *v2 = NULL;
	int ret = QW_ENOMEM;

	a = malloc((size_t)n2 * n2 * sizeof(double));
	w2 = malloc((size_t)n2 * sizeof(double));
	v2 = malloc((size_t)n2 * n2 * sizeof(double));
	if (a == NULL || w2 == NULL || v2 == NULL)
		goto out;
	/* C = A + jB Hermitian <=> [[A, -B], [B, A]] real symmetric, each
	 * eigenvalue doubled with vectors [x; y] and [-y; x], both standing for
	 * the complex eigenvector x + j y. */
	for (unsigned i = 0; i < n; i++) {
		for (unsigned j = 0; j < n; j++) {
			double re = creal(c[(size_t)i * n + j]), im = cimag(c[(size_t)i * n + j]);

			a[(size_t)i * n2 + j] = re;
			a[(size_t)(i + n) * n2 + j + n] = re;
			a[(size_t)i * n2 + j + n] = -im;
			a[(size_t)(i + n) * n2 + j] = im;
		}
	}
	ret = plkg_eig_sym(a, n2, w2, v2);
	if (ret < 0)
		goto out;
	/* Take vectors in order, dropping each one that lies in the complex span
	 * of those already taken (the duplicate of a pair). */
	for (unsigned m = 0; m < n2 && got < n; m++) {
		double nrm = 0;

		for (unsigned i = 0; i < n; i++)
			u[(size_t)i * n + got] =
				v2[(size_t)i * n2 + m] + I * v2[(size_t)(i + n) * n2 + m];
		for (unsigned p = 0; p < got; p++) {
			double complex d = 0;

			for (unsigned i = 0; i < n; i++)
				d += conj(u[(size_t)i * n + p]) * u[(size_t)i * n + got];
			for (unsigned i = 0; i < n; i++)
				u[(size_t)i * n + got] -= d * u[(size_t)i * n + p];
		}
		for (unsigned i = 0; i < n; i++)
			nrm += creal(u[(size_t)i * n + got] * conj(u[(size_t)i * n + got]));
		/* The twin of a taken vector leaves ~1e-15; inside a degenerate
		 * eigenspace any nonzero residual is still an eigenvector. */
		if (nrm < 1e-6)
			continue;
		nrm = sqrt(nrm);
		for (unsigned i = 0; i < n; i++)
			u[(size_t)i * n + got] /= nrm;
		w[got++] = w2[m];
	}
	ret = got == n ? 0 : QW_EINVAL;
out:
	free(a);
	free(w2);
	free(v2);
	return ret;
}

/* ---- KLT / DCT bases ------------------------------------------------------ */

struct qw_plkg_klt {
	unsigned n;         /* CSI dimension */
	unsigned modes;     /* kept modes */
	double *eig;        /* n eigenvalues */
	double complex *u;  /* n x modes, column m = basis vector m */
};

void qw_plkg_klt_free(struct qw_plkg_klt *k)
{
	if (k == NULL)
		return;
	free(k->eig);
	free(k->u);
	free(k);
}

static struct qw_plkg_klt *klt_alloc(unsigned n, unsigned modes)
{
	struct qw_plkg_klt *k = calloc(1, sizeof(*k));

	if (k == NULL)
		return NULL;
	k->n = n;
	k->modes = modes;
	k->eig = calloc(n, sizeof(double));
	k->u = malloc((size_t)n * modes * sizeof(double complex));
	if (k->eig == NULL || k->u == NULL) {
		qw_plkg_klt_free(k);
		return NULL;
	}
	return k;
}

int qw_plkg_klt_new_cov(struct qw_plkg_klt **out, const double complex *cov, unsigned n,
			double energy_frac)
{
	struct qw_plkg_klt *k = NULL;
	double complex *u = NULL;
	double *w = NULL, total = 0, acc = 0;
	unsigned modes = 0;
	int ret = QW_EINVAL;

	QW_REQUIRE(out != NULL && cov != NULL);
	*out = NULL;
	if (n < 1 || n > QW_PLKG_MAX_SC || !(energy_frac > 0 && energy_frac <= 1))
		goto out;
	ret = QW_ENOMEM;
	w = malloc((size_t)n * sizeof(double));
	u = malloc((size_t)n * n * sizeof(double complex));
	if (w == NULL || u == NULL)
		goto out;
	ret = plkg_eig_herm(cov, n, w, u);
	if (ret < 0)
		goto out;
	for (unsigned m = 0; m < n; m++)
		total += fmax(0.0, w[m]);
	ret = QW_EINVAL;
	if (!(total > 0))
		goto out;
	if (energy_frac >= 1.0)
		modes = n;
	while (modes < n && acc < energy_frac * total)
		acc += fmax(0.0, w[modes++]);
	ret = QW_ENOMEM;
	k = klt_alloc(n, modes);
	if (k == NULL)
		goto out;
	memcpy(k->eig, w, (size_t)n * sizeof(double));
	for (unsigned i = 0; i < n; i++)
		for (unsigned m = 0; m < modes; m++)
			k->u[(size_t)i * modes + m] = u[(size_t)i * n + m];
	*out = k;
	ret = 0;
out:
	free(w);
	free(u);
	return ret;
}

int qw_plkg_klt_new_samples(struct qw_plkg_klt **out, const double complex *csi, size_t nprobes,
			    unsigned n, double energy_frac)
{
	double complex *cov = NULL, *mean = NULL;
	int ret = QW_EINVAL;

	QW_REQUIRE(out != NULL && csi != NULL);
	*out = NULL;
	if (nprobes < 2 || n < 1 || n > QW_PLKG_MAX_SC)
		goto out;
	ret = QW_ENOMEM;
	cov = calloc((size_t)n * n, sizeof(double complex));
	mean = calloc(n, sizeof(double complex));
	if (cov == NULL || mean == NULL)
		goto out;
	for (size_t p = 0; p < nprobes; p++)
		for (unsigned i = 0; i < n; i++)
			mean[i] += csi[p * n + i] / (double)nprobes;
	for (size_t p = 0; p < nprobes; p++)
		for (unsigned i = 0; i < n; i++) {
			double complex di = csi[p * n + i] - mean[i];

			for (unsigned j = 0; j < n; j++)
				cov[(size_t)i * n + j] += di * conj(csi[p * n + j] - mean[j]);
		}
	for (size_t i = 0; i < (size_t)n * n; i++)
		cov[i] /= (double)(nprobes - 1);
	ret = qw_plkg_klt_new_cov(out, cov, n, energy_frac);
out:
	free(cov);
	free(mean);
	return ret;
}

int qw_plkg_klt_new_dct(struct qw_plkg_klt **out, unsigned n, unsigned n_modes)
{
	struct qw_plkg_klt *k;

	QW_REQUIRE(out != NULL);
	*out = NULL;
	if (n < 1 || n > QW_PLKG_MAX_SC || n_modes < 1 || n_modes > n)
		return QW_EINVAL;
	k = klt_alloc(n, n_modes);
	if (k == NULL)
		return QW_ENOMEM;
	/* Orthonormal DCT-II: u_m[i] = s_m cos(pi (2i + 1) m / (2n)). */
	for (unsigned i = 0; i < n; i++)
		for (unsigned m = 0; m < n_modes; m++)
			k->u[(size_t)i * n_modes + m] =
				sqrt((m == 0 ? 1.0 : 2.0) / n) *
				cos(M_PI * (2.0 * i + 1.0) * m / (2.0 * n));
	*out = k;
	return 0;
}

unsigned qw_plkg_klt_modes(const struct qw_plkg_klt *k)
{
	QW_REQUIRE(k != NULL);
	return k->modes;
}

unsigned qw_plkg_klt_dim(const struct qw_plkg_klt *k)
{
	QW_REQUIRE(k != NULL);
	return k->n;
}

const double *qw_plkg_klt_eigenvalues(const struct qw_plkg_klt *k)
{
	QW_REQUIRE(k != NULL);
	return k->eig;
}

void qw_plkg_klt_apply(const struct qw_plkg_klt *k, const double complex *csi, double *feat)
{
	QW_REQUIRE(k != NULL && csi != NULL && feat != NULL);
	for (unsigned m = 0; m < k->modes; m++) {
		double complex s = 0;

		for (unsigned i = 0; i < k->n; i++)
			s += conj(k->u[(size_t)i * k->modes + m]) * csi[i];
		feat[2 * m] = creal(s);
		feat[2 * m + 1] = cimag(s);
	}
}
