/* Private helpers shared by the PLKG sources (src/plkg). */
#ifndef QWAVE_PLKG_INTERNAL_H
#define QWAVE_PLKG_INTERNAL_H

#include <complex.h>
#include <stddef.h>
#include <stdint.h>

#include "qwave/plkg_channel.h"
#include "qwave/rng.h"

/* Sum-of-sinusoids processes per tap: the legitimate channel and the two
 * independent innovations of Eve's channels (to Alice, to Bob). */
enum { PLKG_PROC_H, PLKG_PROC_WA, PLKG_PROC_WB, PLKG_NPROC };
/* Hardware chains: Alice, Bob, Eve. */
enum { PLKG_END_A, PLKG_END_B, PLKG_END_E, PLKG_NEND };

struct qw_plkg_channel {
	struct qw_plkg_config cfg;
	struct qw_rng *rng;           /* estimation noise, drawn in call order */
	int ntaps;
	double delay[QW_PLKG_MAX_TAPS];
	double amp[QW_PLKG_MAX_TAPS]; /* sqrt of scattered power per tap */
	double complex los;           /* static LOS gain of tap 0 */
	double wd;                    /* 2 pi f_D */
	double rho_eve;
	unsigned m;                   /* sinusoids per process */
	double *cos_al;               /* [proc][tap][m] cos(arrival angle) */
	double *phase;                /* [proc][tap][m] */
	double complex *steer;        /* [tap][n_sc] exp(-j 2 pi f_k tau_l) */
	double complex *tx[PLKG_NEND];/* per end, per subcarrier ripple */
	double complex *rx[PLKG_NEND];
	double complex *pilot;        /* [n_sc] */
	double complex *scratch;      /* n_ltf x n_sc received symbols */
	double complex *hbuf;         /* n_sc */
	double t;                     /* probe clock */
};

/* Cyclic Jacobi eigen-decomposition of the real symmetric n x n matrix a
 * (row major, destroyed). Eigenvalues to w (decreasing), eigenvectors to
 * the columns of v (n x n, may be NULL). 0 or QW_ENOMEM. */
int plkg_eig_sym(double *a, unsigned n, double *w, double *v);

/* Eigen-decomposition of the Hermitian n x n matrix c: eigenvalues
 * (decreasing) to w[n], orthonormal eigenvectors to the columns of
 * u (n x n complex, row major: u[i * n + m] is entry i of vector m).
 * 0 or QW_ENOMEM. */
int plkg_eig_herm(const double complex *c, unsigned n, double *w, double complex *u);

#endif
