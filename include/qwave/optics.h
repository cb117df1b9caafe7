/* Simulated optics of a decoy-state BB84 link: Alice's weak coherent source
 * with three intensity classes, a fiber, Bob's passive two-detector receiver
 * (threshold detectors, dark counts, misalignment, optional afterpulsing) and
 * an optional intercept-resend eavesdropper.
 *
 * The physics follows X. Ma, B. Qi, Y. Zhao, H.-K. Lo, PRA 72, 012326 (2005)
 * [MQZL] Sec. 2; the link parameters are the struct qw_optics_params of
 * qwave/estimate.h, so the simulator and the model read the same numbers.
 * The expected gain and QBER of each class are [MQZL]'s
 *   Q = Y0 + 1 - e^{-eta mu},  E Q = e0 Y0 + e_det (1 - e^{-eta mu})
 * up to the Y0 (1 - e^{-eta mu}) coincidence term that [MQZL] neglects
 * (relative size < Y0); docs/qkd-sim.md derives the exact expectations.
 *
 * The simulation is per detection, not per pulse: the gaps between detected
 * pulses are geometric, so only detected pulses cost time (a 1 GHz source at
 * 50 km runs far faster than real time). Pulse counts per class are drawn
 * exactly (multinomial) for the pulses that were not detected.
 *
 * Output is two separable records of the detected pulses: Alice's (index,
 * bit, basis, intensity class) and Bob's (index, bit, basis), as the two ends
 * of a link live in different processes. */
#ifndef QWAVE_OPTICS_H
#define QWAVE_OPTICS_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/distill.h"
#include "qwave/error.h"
#include "qwave/estimate.h"

struct qw_rng;

/* Intensity classes; the class of a pulse is announced only after Bob's
 * detections are fixed (sifting). */
enum qw_intensity_class {
	QW_CLASS_SIGNAL = 0, /* mu */
	QW_CLASS_DECOY = 1,  /* nu */
	QW_CLASS_VACUUM = 2, /* vacuum (intensity 0) or the weakest decoy */
};
#define QW_OPTICS_NCLASS 3

enum qw_basis { QW_BASIS_Z = 0, QW_BASIS_X = 1 };

struct qw_optics_config {
	struct qw_optics_params link; /* alpha, eta_Bob, Y0 (both detectors), e_det, e0 */
	double distance_km;
	double pulse_rate_hz;          /* source repetition rate (sets simulated time only) */
	double intensity[QW_OPTICS_NCLASS]; /* mean photon numbers mu, nu, vacuum */
	double p_class[QW_OPTICS_NCLASS];   /* probability Alice picks each class; sum 1 */
	double p_z_alice;              /* probability Alice prepares in Z (BB84: 1/2) */
	double p_z_bob;                /* probability Bob measures in Z */
	double afterpulse;             /* per clicked detector: click again in the next gate */
	double eve_fraction;           /* fraction of pulses intercepted and resent (0..1) */
};

/* GYS link ([MQZL] Table I) at 50 km, 1 GHz, mu = 0.5, nu = 0.1, vacuum 0,
 * p = (0.7, 0.2, 0.1), BB84 bases 1/2, no afterpulses, no Eve. */
void qw_optics_config_default(struct qw_optics_config *c);

/* 0 if c is physical and consistent: qw_optics_check(&c->link), finite
 * distance >= 0, rate > 0, intensities finite >= 0, class probabilities in
 * [0, 1] summing to 1 (within 1e-9), basis probabilities in [0, 1],
 * afterpulse in [0, 1), eve_fraction in [0, 1]; else QW_EINVAL. */
QW_WUR int qw_optics_config_check(const struct qw_optics_config *c);

/* Detected pulses of a contiguous pulse range [first_pulse, end_pulse), in
 * increasing pulse index. Alice's record has cls and sent[]; Bob's has
 * cls == NULL and sent[] all zero. Bits and bases are 0/1 bytes; the bits
 * are key material (wiped on reset and free). */
struct qw_detections {
	enum qw_role role;
	uint64_t first_pulse, end_pulse;   /* empty range: first == end */
	uint64_t sent[QW_OPTICS_NCLASS];    /* Alice: pulses sent per class in the range */
	size_t n, cap;
	uint64_t *index;
	uint8_t *bit;
	uint8_t *basis;                     /* enum qw_basis */
	uint8_t *cls;                       /* Alice: enum qw_intensity_class */
};

/* Empty record for role; NULL on allocation failure. */
struct qw_detections *qw_detections_new(enum qw_role role);
/* Wipes and frees; NULL accepted. */
void qw_detections_free(struct qw_detections *d);
/* Empty the record (wiping the bits) and forget its pulse range, so the next
 * qw_optics_run() starts a new range. */
void qw_detections_reset(struct qw_detections *d);
/* Append one detection (index must exceed the last one's and lie at or
 * past first_pulse; cls is ignored for Bob). Extends end_pulse to
 * index + 1 if needed. 0, QW_EINVAL (order), or QW_ENOMEM. For tests and
 * for rebuilding a record from elsewhere. */
QW_WUR int qw_detections_push(struct qw_detections *d, uint64_t index, int bit, int basis,
			      int cls);

struct qw_optics;

/* Simulator for config c (copied). rng supplies every random choice,
 * including Alice's bits; it must outlive the simulator and is not owned.
 * Returns NULL and sets *err (QW_EINVAL for a bad config, QW_ENOMEM). */
struct qw_optics *qw_optics_new(const struct qw_optics_config *c, struct qw_rng *rng, int *err);
/* NULL accepted. */
void qw_optics_free(struct qw_optics *o);

/* Simulate the next `pulses` pulses (any number; call in chunks, e.g. 1e8,
 * to pipeline) and append the detections to alice and bob, which must each
 * be empty-ranged or end exactly where the simulator stands (their ranges
 * are extended to the new position). Either record may be NULL when the
 * caller wants only the statistics. Returns 0; QW_ESTATE (a record's range
 * does not end at the simulator's position, or has the wrong role);
 * QW_ERANGE (pulse index overflow); or QW_ENOMEM: the run then stops early
 * at a pulse t, the records, counters and simulator are complete and
 * consistent up to t (the records' end_pulse says where), and a later call
 * continues from there. */
QW_WUR int qw_optics_run(struct qw_optics *o, uint64_t pulses, struct qw_detections *alice,
			 struct qw_detections *bob);

/* Cumulative counters since qw_optics_new(). */
struct qw_optics_stats {
	uint64_t pulses;                        /* pulses simulated */
	uint64_t sent[QW_OPTICS_NCLASS];        /* pulses sent per class */
	uint64_t detections[QW_OPTICS_NCLASS];  /* pulses with a click, per class */
	uint64_t signal_clicks;  /* detections with a click caused by light (Alice's or Eve's) */
	uint64_t dark_clicks;    /* detections with a background click */
	uint64_t afterpulses;    /* detections with an afterpulse click */
	uint64_t double_clicks;  /* both detectors clicked: random bit (squashing) */
	uint64_t attacked;       /* detections (not afterpulse-only) of pulses Eve attacked */
	double seconds;          /* pulses / pulse_rate_hz */
};

void qw_optics_get_stats(const struct qw_optics *o, struct qw_optics_stats *s);

/* Exact expectations of the simulated model for class cls with no
 * afterpulses: *gain = 1 - (1 - Y0) e^{-eta mu} (it differs from [MQZL]'s
 * Q = Y0 + 1 - e^{-eta mu} only by the Y0 (1 - e^{-eta mu}) coincidence
 * term they neglect) and *qber = the error rate of those
 * detections when the bases match, Eve included (docs/qkd-sim.md gives the
 * formula). Either output may be NULL. */
void qw_optics_expected(const struct qw_optics *o, int cls, double *gain, double *qber);

/* Draw from Binomial(n, p) exactly (inversion for small n p, Hormann's
 * BTRS transformed rejection otherwise). p in [0, 1]. Exposed for tests
 * and for other simulators. */
uint64_t qw_sim_binomial(struct qw_rng *r, uint64_t n, double p);

#endif
