/* Intercept-resend eavesdropper of the simulated link (private to src/qkd).
 * The model and why it leaves Bob's click rate unchanged: src/qkd/eve.c and
 * docs/qkd-sim.md. */
#ifndef QWAVE_QKD_EVE_H
#define QWAVE_QKD_EVE_H

struct qw_rng;

/* Eve intercepted a pulse that Alice prepared as bit a in basis alice_basis,
 * and her resent light made Bob's receiver click. Returns the detector that
 * clicked (labelled by the bit value it stands for in bob_basis). */
int qw_eve_resend(struct qw_rng *r, int a, int alice_basis, int bob_basis, double e_det);

/* Probability that a click of the light lands in the wrong detector when
 * Alice's and Bob's bases agree and a fraction f of pulses is attacked:
 * (1 - f) e_det + f (1/4 + e_det / 2). */
double qw_eve_wrong_detector(double e_det, double f);

#endif
