/* Intercept-resend attack on a fraction f of the pulses.
 *
 * Eve cuts the fiber at Alice's output. On an attacked pulse she measures
 * with ideal photon-number-resolving detectors in a basis of her own,
 * chosen uniformly (she does not know Alice's basis bias). A vacuum pulse
 * (n = 0) gives her nothing and she sends nothing. An n >= 1 pulse gives her
 * Alice's bit when the bases agree and a uniformly random bit when they do
 * not (the n photons split at random between her detectors; a double click
 * is resolved with a random bit, as Bob does). She then sends, through her
 * own lossless channel, a pulse prepared in her basis carrying her result,
 * with its brightness tuned so that Bob's receiver clicks with exactly
 * eta_n = 1 - (1 - eta)^n, the yield of the n-photon pulse she took (she
 * knows n; any probability below 1 is reachable with a bright enough
 * pulse). So every photon-number yield, hence the gain of every intensity
 * class, is exactly the honest one: the attack is invisible in the decoy
 * statistics and shows only as errors. The simulator therefore keeps its
 * click probabilities and asks this file only where an attacked click lands.
 *
 * Bob's misalignment e_det still acts on her light. With the bases of Alice
 * and Bob equal, Eve's basis agrees half of the time (Bob then errs with
 * e_det) and disagrees otherwise (Bob's bit is random): the error of the
 * attacked sifted bits is 1/4 + e_det/2, the textbook 25% for e_det = 0. */
#include "qwave/optics.h"
#include "qwave/rng.h"

#include "qkd/eve.h"

int qw_eve_resend(struct qw_rng *r, int a, int alice_basis, int bob_basis, double e_det)
{
	uint64_t bits = qw_rng_u64(r);
	int eve_basis = (int)(bits & 1u);
	int eve_bit = eve_basis == alice_basis ? a : (int)((bits >> 1) & 1u);

	if (bob_basis != eve_basis)
		return (int)((bits >> 2) & 1u);
	return eve_bit ^ (e_det > 0.0 && qw_rng_uniform(r) < e_det);
}

double qw_eve_wrong_detector(double e_det, double f)
{
	return (1.0 - f) * e_det + f * (0.25 + 0.5 * e_det);
}
