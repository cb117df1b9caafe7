/* PLKG probing: TDD pilot exchange and least-squares CSI estimation at
 * Alice, Bob and an overhearing Eve. See include/qwave/plkg_channel.h. */
#include <complex.h>
#include <math.h>
#include <string.h>

#include "plkg/plkg_internal.h"
#include "qwave/plkg_channel.h"
#include "qwave/rng.h"

/* IEEE 802.11 L-LTF, subcarriers -26..-1 then 1..26 (the OFDM PHY's long
 * training sequence, IEEE Std 802.11-2016 clause 17.3.3); BPSK, so the LS
 * estimate is a sign flip plus averaging. */
static const signed char lltf[52] = {
	1, 1,  -1, -1, 1,  1,  -1, 1,  -1, 1,  1,  1,  1,  1,  1, -1, -1, 1,
	1, -1, 1,  -1, 1,  1,  1,  1,  1,  -1, -1, 1,  1,  -1, 1, -1, 1,  -1,
	-1, -1, -1, -1, 1, 1,  -1, -1, 1,  -1, 1,  -1, 1,  1,  1,  1,
};

double complex qw_plkg_pilot_value(const struct qw_plkg_config *c, unsigned k)
{
	QW_REQUIRE(c != NULL);
	if (c->pilot == QW_PLKG_PILOT_COMB) {
		uint32_t h;

		if (k % c->pilot_step != 0)
			return 0;
		/* Fixed pseudo-random QPSK, standing in for an LTE CRS / NR
		 * DMRS Gold sequence: only |pilot| = 1 matters to LS. */
		h = (uint32_t)k * 2654435761u;
		h ^= h >> 15;
		return cexp(I * M_PI / 4.0 * (double)(2u * ((h >> 7) & 3u) + 1u));
	}
	return (double)lltf[k % 52];
}

double qw_plkg_ls_error_var(const struct qw_plkg_config *c, double snr_db)
{
	double nv = pow(10.0, -snr_db / 10.0);

	return c->pilot == QW_PLKG_PILOT_LTF ? nv / (double)c->n_ltf : nv;
}

void qw_plkg_ls_estimate(const double complex *rx, const double complex *pilot, unsigned n_sym,
			 unsigned n_sc, double complex *H_hat)
{
	QW_REQUIRE(rx != NULL && pilot != NULL && H_hat != NULL && n_sym > 0);
	for (unsigned k = 0; k < n_sc; k++) {
		double complex s = 0;

		QW_REQUIRE(pilot[k] != 0);
		for (unsigned i = 0; i < n_sym; i++)
			s += rx[(size_t)i * n_sc + k];
		H_hat[k] = s / ((double)n_sym * pilot[k]);
	}
}

static double complex cnoise(struct qw_rng *r, double var)
{
	double s = sqrt(var / 2.0);
	double re = qw_rng_gaussian(r);

	return s * (re + I * qw_rng_gaussian(r));
}

/* One end's estimate of the measured response Hm (true channel times the
 * hardware ripple of the link), at the given SNR, into est. */
static void estimate(struct qw_plkg_channel *ch, const double complex *Hm, double snr_db,
		     double complex *est)
{
	const struct qw_plkg_config *c = &ch->cfg;
	unsigned n = c->n_sc;
	double nv = pow(10.0, -snr_db / 10.0);

	if (c->pilot == QW_PLKG_PILOT_LTF) {
		for (unsigned s = 0; s < c->n_ltf; s++)
			for (unsigned k = 0; k < n; k++)
				ch->scratch[(size_t)s * n + k] =
					Hm[k] * ch->pilot[k] + cnoise(ch->rng, nv);
		qw_plkg_ls_estimate(ch->scratch, ch->pilot, c->n_ltf, n, est);
		return;
	}
	/* Comb pilots: LS on pilot subcarriers, then linear interpolation in
	 * frequency between neighbouring pilots (nearest pilot beyond the
	 * last one), the usual low-complexity LTE/NR receiver. */
	{
		unsigned step = c->pilot_step, last = ((n - 1) / step) * step;

		for (unsigned k = 0; k < n; k += step)
			est[k] = (Hm[k] * ch->pilot[k] + cnoise(ch->rng, nv)) / ch->pilot[k];
		for (unsigned k = 0; k < n; k++) {
			unsigned a, b;
			double fa, fb, fk;

			if (k % step == 0)
				continue;
			if (k > last) {
				est[k] = est[last];
				continue;
			}
			a = (k / step) * step;
			b = a + step;
			fa = qw_plkg_sc_freq(c, a);
			fb = qw_plkg_sc_freq(c, b);
			fk = qw_plkg_sc_freq(c, k);
			est[k] = est[a] + (est[b] - est[a]) * ((fk - fa) / (fb - fa));
		}
	}
}

/* The channel measured by end rxe when end txe transmits over link at time
 * t: T_tx[k] R_rx[k] H[k], then estimated, then (when calibrating) scaled by
 * the receiving end's own T/R ratio. For Alice and Bob both results become
 * T_A T_B H: relative reciprocity calibration makes the two directions
 * equal again. Eve can only remove her own receive chain. */
static void measure(struct qw_plkg_channel *ch, enum qw_plkg_link link, double t, int txe,
		    int rxe, double snr_db, double complex *out)
{
	unsigned n = ch->cfg.n_sc;

	qw_plkg_channel_freq(ch, link, t, ch->hbuf);
	for (unsigned k = 0; k < n; k++)
		ch->hbuf[k] *= ch->tx[txe][k] * ch->rx[rxe][k];
	estimate(ch, ch->hbuf, snr_db, out);
	if (!ch->cfg.calibrate)
		return;
	for (unsigned k = 0; k < n; k++)
		out[k] *= rxe == PLKG_END_E ? 1.0 / ch->rx[rxe][k] : ch->tx[rxe][k] / ch->rx[rxe][k];
}

void qw_plkg_probe_at(struct qw_plkg_channel *ch, double t, struct qw_plkg_probe *p)
{
	double t2;

	QW_REQUIRE(ch != NULL && p != NULL && p->alice != NULL && p->bob != NULL);
	t2 = t + ch->cfg.tdd_delay_s;
	p->t = t;
	/* Alice's pilot at t: Bob (and Eve) estimate; Bob's answer at t + delta:
	 * Alice (and Eve) estimate. */
	measure(ch, QW_PLKG_LINK_AB, t, PLKG_END_A, PLKG_END_B, ch->cfg.snr_db, p->bob);
	if (p->eve_a != NULL)
		measure(ch, QW_PLKG_LINK_AE, t, PLKG_END_A, PLKG_END_E, ch->cfg.eve_snr_db,
			p->eve_a);
	measure(ch, QW_PLKG_LINK_AB, t2, PLKG_END_B, PLKG_END_A, ch->cfg.snr_db, p->alice);
	if (p->eve_b != NULL)
		measure(ch, QW_PLKG_LINK_BE, t2, PLKG_END_B, PLKG_END_E, ch->cfg.eve_snr_db,
			p->eve_b);
}

void qw_plkg_probe_next(struct qw_plkg_channel *ch, struct qw_plkg_probe *p)
{
	QW_REQUIRE(ch != NULL);
	qw_plkg_probe_at(ch, ch->t, p);
	ch->t += 1.0 / ch->cfg.probe_rate_hz;
}
