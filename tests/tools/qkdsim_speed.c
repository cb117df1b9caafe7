/* Speed of the simulated optics: pulses simulated per second of CPU time
 * for a decoy-state BB84 link (GYS parameters, qw_optics_config_default)
 * at a given distance, with both detection records produced as a link
 * would. Not built by CMake; docs/qkd-sim.md gives the command.
 *
 *   qkdsim_speed [distance_km] [pulses] [chunk] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "qwave/optics.h"
#include "qwave/rng.h"

int main(int argc, char **argv)
{
	double km = argc > 1 ? atof(argv[1]) : 50.0;
	double total = argc > 2 ? atof(argv[2]) : 1e10;
	double chunk = argc > 3 ? atof(argv[3]) : 1e8;
	struct qw_optics_config c;
	struct qw_optics_stats st;
	struct qw_detections *a = qw_detections_new(QW_ROLE_ALICE);
	struct qw_detections *b = qw_detections_new(QW_ROLE_BOB);
	struct qw_rng *r = qw_rng_new_system();
	struct qw_optics *o;
	struct timespec t0, t1;
	uint64_t left = (uint64_t)total, det = 0;
	double secs;
	int err;

	qw_optics_config_default(&c);
	c.distance_km = km;
	if (!a || !b || !r || !(o = qw_optics_new(&c, r, &err))) {
		fprintf(stderr, "qkdsim_speed: setup failed\n");
		return 1;
	}
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
	while (left) {
		uint64_t n = left < (uint64_t)chunk ? left : (uint64_t)chunk;

		if (qw_optics_run(o, n, a, b)) {
			fprintf(stderr, "qkdsim_speed: run failed\n");
			return 1;
		}
		det += a->n;
		qw_detections_reset(a);
		qw_detections_reset(b);
		left -= n;
	}
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
	qw_optics_get_stats(o, &st);
	printf("distance %.1f km: %.3g pulses (%.3g s of a %.3g Hz source) in %.3f s CPU\n", km,
	       total, st.seconds, c.pulse_rate_hz, secs);
	printf("  %.3g pulses/s, %.3g detections/s, %.1fx real time; signal gain %.3e\n",
	       total / secs, (double)det / secs, st.seconds / secs,
	       (double)st.detections[0] / (double)st.sent[0]);
	qw_optics_free(o);
	qw_detections_free(a);
	qw_detections_free(b);
	qw_rng_free(r);
	return 0;
}
