/* qwave sim: simulations of the key-providing layer. `qwave sim link` runs
 * both endpoints of a simulated decoy-state BB84 link (two threads) over a
 * socketpair or loopback TCP, through the real classical protocol
 * (src/qkd/link.c), and compares their keys. docs/qkd-link.md. */
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <jansson.h>

#include "cli.h"
#include "commands.h"
#include "qwave/error.h"
#include "qwave/estimate.h"
#include "qwave/link.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

/* Pre-shared authentication key of the simulated pair: 2 hash keys and 4096
 * pads per direction, enough for the blocks in flight before the first
 * replenishment (a block spends a few dozen pads each way). */
#define SIM_PSK_PADS 4096
#define SIM_PSK_BYTES (2 * QW_AUTH_HASHKEY_BYTES + SIM_PSK_PADS * QW_AUTH_UNIT_BYTES)

struct sim_opts {
	double distance, rate, eve, block_bits, qber_threshold, p_z, auth_share;
	uint64_t pulses, seed, workers;
	int have_seed, json, tcp, have_p_z, no_optimize;
	enum qw_link_ec ec;
	enum qw_link_bounds bounds;
	enum qw_cascade_variant cascade;
};

/* What one endpoint's sink collected. */
struct side_keys {
	pthread_mutex_t mu;
	uint64_t nblocks;
	struct qw_bitvec **key; /* by block id - 1 */
	uint64_t alarms;
	double last_alarm_qber;
	uint64_t done;
	int progress;           /* this side reports progress */
	const char *label;
	int inited;
};

struct endpoint {
	struct qw_link *link;
	struct side_keys keys;
	struct qw_link_stats st;
	int ret;
};

static void sim_link_help(void)
{
	printf("usage: qwave sim link [options]\n"
	       "\n"
	       "Simulate a decoy-state BB84 link (GYS parameters of Ma et al., PRA 72,\n"
	       "012326, Table I) running the protocol of Lim et al., PRA 89, 022307 (2014):\n"
	       "signal, decoy and vacuum intensities, biased bases, key from the Z bits of\n"
	       "every intensity, X bits disclosed for the phase error. Intensities, class\n"
	       "probabilities and basis bias are the finite-key optimum of the theory\n"
	       "module (qw_finite_optimize_pulses) for the distance and the block's pulses.\n"
	       "Runs the whole classical protocol between Alice and Bob in two threads over\n"
	       "an authenticated channel: sifting, parameter estimation, Cascade,\n"
	       "verification, privacy amplification. Prints what was measured, disclosed\n"
	       "and distilled, and whether both ends hold the same key.\n"
	       "\n"
	       "options:\n"
	       "  --distance KM        fiber length (50 km)\n"
	       "  --pulses N           pulses Alice sends (1e8; 1e9 is fine)\n"
	       "  --rate HZ            source pulse rate, sets simulated time (1e9 Hz)\n"
	       "  --eve FRACTION       intercept-resend attack on this fraction of pulses (0)\n"
	       "  --seed S             seed of the optics simulation (random)\n"
	       "  --ec cascade|ldpc    error correction: interactive Cascade (default) or\n"
	       "                       one-way rate-adaptive LDPC syndromes\n"
	       "  --cascade VARIANT    fast (default: few round trips - each costs 256\n"
	       "                       authentication key bits - and low leakage) |\n"
	       "                       original | yan | option8 | optimized\n"
	       "  --block-bits N       target key bits per block (default: one block for\n"
	       "                       the whole run, up to 1e7 expected key bits; larger\n"
	       "                       blocks waste less on finite-size terms)\n"
	       "  --no-optimize        fixed protocol instead of the optimum: signal 0.5,\n"
	       "                       decoy 0.1, vacuum, classes 70/20/10 %%, bases 1/2\n"
	       "  --bounds finite|asymptotic\n"
	       "                       finite-key decoy bounds of Lim et al. (default), or\n"
	       "                       the same bounds without their statistical terms\n"
	       "                       (measured counts taken as exact: optimistic)\n"
	       "  --p-z P              probability that Alice and Bob each pick the key\n"
	       "                       basis Z (default: the optimum's)\n"
	       "  --qber-threshold Q   abort a block whose QBER estimate exceeds Q (0.11)\n"
	       "  --workers K          blocks in flight per endpoint (2)\n"
	       "  --tcp                loopback TCP instead of a socketpair\n"
	       "  --json               one JSON object on stdout\n"
	       "\n"
	       "key_rate is secret bits per pulse sent; key_rate_bound is the asymptotic\n"
	       "rate of the same protocol and parameters (Lim et al.'s bounds without\n"
	       "statistical terms, Shannon-limit error correction, infinite blocks);\n"
	       "finite_key_theory the theory module's finite-key rate for the same blocks\n"
	       "(error correction f = 1.22). Exit status 0 when the simulation ran (also\n"
	       "when blocks were aborted: see aborted/abort_reason), 1 when the link\n"
	       "failed or the two keys differ, 2 for bad options.\n");
}

static int sim_parse(int argc, char **argv, struct sim_opts *o)
{
	static const char *cmd = "sim link";

	memset(o, 0, sizeof(*o));
	o->distance = 50.0;
	o->pulses = 100000000;
	o->rate = 1e9;
	o->block_bits = 0.0; /* auto */
	o->qber_threshold = 0.11;
	o->p_z = 0.5;
	o->auth_share = 0.05;
	o->workers = 2;
	o->ec = QW_LINK_EC_CASCADE;
	o->bounds = QW_LINK_BOUNDS_FINITE;
	o->cascade = QW_CASCADE_FAST;
	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val;
		double d;

		if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
			sim_link_help();
			return QW_EXIT_OK;
		}
		if (!strcmp(opt, "--json")) {
			o->json = 1;
			continue;
		}
		if (!strcmp(opt, "--tcp")) {
			o->tcp = 1;
			continue;
		}
		if (!strcmp(opt, "--no-optimize")) {
			o->no_optimize = 1;
			continue;
		}
		if (strncmp(opt, "--", 2))
			return qw_cli_usage_error(cmd, "unexpected argument '%s'", opt);
		if (i + 1 >= argc)
			return qw_cli_usage_error(cmd, "option '%s' needs a value", opt);
		val = argv[++i];
		if (!strcmp(opt, "--distance")) {
			if (qw_cli_parse_double(val, &o->distance) || o->distance < 0 ||
			    o->distance > 1000)
				return qw_cli_usage_error(cmd, "bad --distance '%s' (0..1000 km)", val);
		} else if (!strcmp(opt, "--pulses")) {
			if (qw_cli_parse_u64(val, &o->pulses) || o->pulses == 0 ||
			    o->pulses > (uint64_t)1e13)
				return qw_cli_usage_error(cmd, "bad --pulses '%s' (1..1e13)", val);
		} else if (!strcmp(opt, "--rate")) {
			if (qw_cli_parse_double(val, &o->rate) || !(o->rate > 0))
				return qw_cli_usage_error(cmd, "bad --rate '%s' (Hz, > 0)", val);
		} else if (!strcmp(opt, "--eve")) {
			if (qw_cli_parse_double(val, &o->eve) || o->eve < 0 || o->eve > 1)
				return qw_cli_usage_error(cmd, "bad --eve '%s' (fraction 0..1)", val);
		} else if (!strcmp(opt, "--seed")) {
			if (qw_cli_parse_u64(val, &o->seed))
				return qw_cli_usage_error(cmd, "bad --seed '%s'", val);
			o->have_seed = 1;
		} else if (!strcmp(opt, "--ec")) {
			if (!strcmp(val, "cascade"))
				o->ec = QW_LINK_EC_CASCADE;
			else if (!strcmp(val, "ldpc"))
				o->ec = QW_LINK_EC_LDPC;
			else
				return qw_cli_usage_error(cmd, "bad --ec '%s' (cascade|ldpc)", val);
		} else if (!strcmp(opt, "--cascade")) {
			if (qw_cascade_variant_parse(val, &o->cascade))
				return qw_cli_usage_error(cmd,
							  "bad --cascade '%s' (fast|original|yan|option8|optimized)",
							  val);
		} else if (!strcmp(opt, "--bounds")) {
			if (!strcmp(val, "finite"))
				o->bounds = QW_LINK_BOUNDS_FINITE;
			else if (!strcmp(val, "asymptotic"))
				o->bounds = QW_LINK_BOUNDS_ASYMPTOTIC;
			else
				return qw_cli_usage_error(cmd, "bad --bounds '%s' (finite|asymptotic)",
							  val);
		} else if (!strcmp(opt, "--block-bits")) {
			if (qw_cli_parse_double(val, &o->block_bits) || o->block_bits < 1000 ||
			    o->block_bits > 1e9)
				return qw_cli_usage_error(cmd, "bad --block-bits '%s' (1000..1e9)", val);
		} else if (!strcmp(opt, "--p-z")) {
			if (qw_cli_parse_double(val, &o->p_z) || !(o->p_z > 0 && o->p_z < 1))
				return qw_cli_usage_error(cmd, "bad --p-z '%s' (0 < P < 1)", val);
			o->have_p_z = 1;
		} else if (!strcmp(opt, "--qber-threshold")) {
			if (qw_cli_parse_double(val, &d) || !(d > 0 && d <= 0.5))
				return qw_cli_usage_error(cmd, "bad --qber-threshold '%s' (0 < Q <= 0.5)",
							  val);
			o->qber_threshold = d;
		} else if (!strcmp(opt, "--workers")) {
			if (qw_cli_parse_u64(val, &o->workers) || o->workers < 1 || o->workers > 64)
				return qw_cli_usage_error(cmd, "bad --workers '%s' (1..64)", val);
		} else {
			return qw_cli_usage_error(cmd, "unknown option '%s'", opt);
		}
	}
	return -1;
}

static void on_deliver(void *ctx, uint64_t id, const struct qw_bitvec *key)
{
	struct side_keys *k = ctx;

	pthread_mutex_lock(&k->mu);
	if (id >= 1 && id <= k->nblocks && !k->key[id - 1])
		k->key[id - 1] = qw_bitvec_dup(key);
	k->done++;
	if (k->progress)
		qw_cli_progress("sim link: %llu/%llu blocks", (unsigned long long)k->done,
				(unsigned long long)k->nblocks);
	pthread_mutex_unlock(&k->mu);
}

static void on_dropped(void *ctx, uint64_t id, const char *reason)
{
	struct side_keys *k = ctx;

	(void)id;
	(void)reason;
	pthread_mutex_lock(&k->mu);
	k->done++;
	if (k->progress)
		qw_cli_progress("sim link: %llu/%llu blocks", (unsigned long long)k->done,
				(unsigned long long)k->nblocks);
	pthread_mutex_unlock(&k->mu);
}

static void on_alarm(void *ctx, uint64_t id, double qber, double threshold)
{
	struct side_keys *k = ctx;

	(void)id;
	(void)threshold;
	pthread_mutex_lock(&k->mu);
	k->alarms++;
	k->last_alarm_qber = qber;
	pthread_mutex_unlock(&k->mu);
}

static void *endpoint_main(void *arg)
{
	struct endpoint *e = arg;

	e->ret = qw_link_run(e->link);
	qw_link_get_stats(e->link, &e->st);
	return NULL;
}


/* Expected key bits of a block beyond which the run is cut into several
 * blocks: one block of 1e7 bits takes Cascade ~10 s and a few hundred MB. */
#define AUTO_BLOCK_MAX_BITS 1e7

/* Choose the protocol (unless --no-optimize) and the pulses per block:
 * with --block-bits, blocks of about that many key bits; else one block
 * for the whole run, unless it would hold more than AUTO_BLOCK_MAX_BITS.
 * The optimum depends on the block's pulses and the pulses of a block of
 * given bits on the protocol, so the pair is iterated (twice is plenty:
 * the optimum moves slowly with the block size). */
static uint64_t sim_protocol(const struct sim_opts *o, struct qw_link_params *lp,
			     int *optimized)
{
	double bits = o->block_bits;
	uint64_t ppb = o->pulses;

	*optimized = 0;
	for (int round = 0; round < 3; round++) {
		struct qw_finite_result fr;

		if (bits > 0.0) {
			ppb = qw_link_pulses_for_bits(&lp->optics, &lp->sift, bits);
			if (ppb > o->pulses)
				ppb = o->pulses;
		}
		/* No valid optimum (far too few pulses), or none with a key: the
		 * optimiser leaves the fixed set, and the output says so. */
		if (!o->no_optimize) {
			if (qw_link_params_optimize(lp, (double)ppb, &fr))
				break;
			*optimized = fr.length > 0;
		}
		if (bits > 0.0 && round > 0)
			break;
		if (bits == 0.0) {
			struct qw_finite_protocol pr;
			qw_link_protocol(lp, &pr);
			if (qw_finite_key_per_pulse(&lp->optics.link, lp->optics.distance_km, &pr) *
				    (double)o->pulses <= AUTO_BLOCK_MAX_BITS)
				break;
			bits = AUTO_BLOCK_MAX_BITS;
		}
	}
	if (o->have_p_z) {
		lp->optics.p_z_alice = o->p_z;
		lp->optics.p_z_bob = o->p_z;
	}
	if (bits > 0.0) {
		ppb = qw_link_pulses_for_bits(&lp->optics, &lp->sift, bits);
		if (ppb > o->pulses)
			ppb = o->pulses;
	}
	return ppb;
}

/* The theory module's figures for the run, per pulse: the asymptotic rate
 * of the same protocol (rate_limit with f = 1: [LCWXZ] bounds without
 * statistical terms on the expected counts, Shannon-limit error
 * correction), and the finite-key rate of the same blocks (full blocks of
 * ppb pulses and the remainder) with error-correction inefficiency f. */
static void theory_rates(const struct qw_link_params *lp, uint64_t pulses, uint64_t ppb,
			 double f, double *bound, double *finite)
{
	const struct qw_optics_config *c = &lp->optics;
	struct qw_finite_protocol pr;
	struct qw_finite_result r;
	uint64_t full = pulses / ppb, rest = pulses % ppb;
	double bits = 0.0;

	*bound = *finite = 0.0;
	qw_link_protocol(lp, &pr);
	pr.f_ec = 1.0;
	if (!qw_finite_model_pulses(&c->link, c->distance_km, &pr, (double)ppb, &r))
		*bound = r.rate_limit;
	pr.f_ec = f >= 1.0 ? f : 1.0;
	if (!qw_finite_model_pulses(&c->link, c->distance_km, &pr, (double)ppb, &r))
		bits += (double)full * (double)r.length;
	if (rest && !qw_finite_model_pulses(&c->link, c->distance_km, &pr, (double)rest, &r))
		bits += (double)r.length;
	*finite = bits / (double)pulses;
}

static void side_free(struct side_keys *k)
{
	if (!k->inited)
		return;
	if (k->key)
		for (uint64_t i = 0; i < k->nblocks; i++)
			qw_bitvec_free(k->key[i]);
	free(k->key);
	pthread_mutex_destroy(&k->mu);
}

static int sim_link(int argc, char **argv)
{
	struct sim_opts o;
	struct qw_link_params lp;
	struct qw_finite_protocol pr_def;
	struct qw_link_sim *sim = NULL;
	struct qw_link_records rec[2];
	struct qw_optics_stats os;
	struct endpoint ep[2];
	struct qw_frame_io io[2];
	uint8_t *psk = NULL;
	uint64_t ppb, nblocks, secret = 0, delivered_blocks = 0;
	pthread_t th[2];
	int fds[2] = { -1, -1 }, started = 0, keys_equal = 1, ret, err, code = QW_EXIT_FAIL;
	int optimized = 0;
	double t0, wall, bound, theory, theory_f;
	struct timespec ts;

	ret = sim_parse(argc, argv, &o);
	if (ret >= 0)
		return ret;
	memset(ep, 0, sizeof(ep));
	qw_link_params_default(&lp);
	lp.optics.distance_km = o.distance;
	lp.optics.pulse_rate_hz = o.rate;
	lp.optics.eve_fraction = o.eve;
	lp.optics.p_z_alice = o.p_z;
	lp.optics.p_z_bob = o.p_z;
	qw_finite_protocol_default(&pr_def, 0.5, 0.1, 0.0);
	lp.qber_threshold = o.qber_threshold;
	lp.bounds = o.bounds;
	lp.ec = o.ec;
	lp.workers = (unsigned)o.workers;
	lp.auth_share = o.auth_share;
	qw_cascade_params_init(&lp.cascade, o.cascade);
	lp.cascade.policy = QW_CASCADE_FEWEST_ROUNDS;
	if (!o.have_seed) {
		if (qw_random_bytes(&o.seed, sizeof(o.seed)))
			return qw_cli_fail("cannot draw a seed");
		o.seed &= ((uint64_t)1 << 53) - 1; /* printable exactly in JSON */
	}
	ppb = sim_protocol(&o, &lp, &optimized);
	sim = qw_link_sim_new(&lp.optics, o.pulses, ppb, o.seed, &err);
	if (!sim)
		return qw_cli_fail("cannot set up the simulation: %s", qw_strerror(err));
	nblocks = qw_link_sim_blocks(sim);
	lp.nblocks = nblocks;

	psk = malloc(SIM_PSK_BYTES);
	if (!psk || qw_random_bytes(psk, SIM_PSK_BYTES)) {
		qw_cli_fail("cannot draw the pre-shared authentication key");
		goto out;
	}
	if (o.tcp ? qw_frame_tcp_pair(fds) : socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds)) {
		qw_cli_fail("cannot connect the endpoints: %s", strerror(errno));
		goto out;
	}
	for (int r = 0; r < 2; r++) {
		struct side_keys *k = &ep[r].keys;
		pthread_mutex_init(&k->mu, NULL);
		k->inited = 1;
		k->nblocks = nblocks;
		k->key = calloc(nblocks, sizeof(*k->key));
		k->label = r == QW_ROLE_ALICE ? "alice" : "bob";
		k->progress = r == QW_ROLE_BOB && !o.json;
		if (!k->key) {
			qw_cli_fail("out of memory");
			goto out;
		}
		qw_frame_io_fd(&io[r], fds[r]);
		qw_link_sim_records(sim, (enum qw_role)r, &rec[r]);
		lp.sink_ctx = k;
		lp.deliver = on_deliver;
		lp.dropped = on_dropped;
		lp.alarm = on_alarm;
		ep[r].link = qw_link_new(&lp, (enum qw_role)r, &io[r], psk, SIM_PSK_BYTES, &rec[r],
					 &err);
		if (!ep[r].link) {
			qw_cli_fail("cannot create the %s endpoint: %s", k->label, qw_strerror(err));
			goto out;
		}
	}
	qw_wipe(psk, SIM_PSK_BYTES);
	if (!o.json)
		fprintf(stderr,
			"sim link: %.1f km, %.3g pulses in %llu block(s) of %.3g pulses, eve %.2f, "
			"seed %llu\n",
			o.distance, (double)o.pulses, (unsigned long long)nblocks, (double)ppb, o.eve,
			(unsigned long long)o.seed);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	t0 = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
	for (; started < 2; started++) {
		if (pthread_create(&th[started], NULL, endpoint_main, &ep[started])) {
			qw_cli_fail("cannot start a thread");
			/* unblock the started endpoint */
			shutdown(fds[0], SHUT_RDWR);
			break;
		}
	}
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	wall = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec - t0;
	qw_cli_progress_done();
	if (started < 2)
		goto out;
	qw_link_sim_stats(sim, &os);

	/* keys_equal: the same blocks delivered at both ends, bit for bit */
	for (uint64_t i = 0; i < nblocks; i++) {
		struct qw_bitvec *a = ep[0].keys.key[i], *b = ep[1].keys.key[i];
		if (!a != !b || (a && !qw_bitvec_equal(a, b)))
			keys_equal = 0;
		if (a) {
			secret += a->nbits;
			delivered_blocks++;
		}
	}
	theory_rates(&lp, o.pulses, ppb, pr_def.f_ec, &bound, &theory);
	theory_f = 0.0;
	if (ep[1].st.ec_efficiency >= 1.0)
		theory_rates(&lp, o.pulses, ppb, ep[1].st.ec_efficiency, &bound, &theory_f);
	{
		const struct qw_link_stats *A = &ep[0].st, *B = &ep[1].st;
		int failed = ep[0].ret || ep[1].ret;
		const char *reason = A->abort_reason[0] ? A->abort_reason : B->abort_reason;
		uint64_t distilled = A->secret_bits + A->auth_bits;
		double key_rate = A->pulses ? (double)distilled / (double)A->pulses : 0.0;

		if (o.json) {
			json_t *j = json_object();
			json_object_set_new(j, "distance_km", json_real(o.distance));
			json_object_set_new(j, "pulses", json_integer((json_int_t)A->pulses));
			json_object_set_new(j, "seed", o.seed > INT64_MAX ? json_real((double)o.seed) : json_integer((json_int_t)o.seed));
			json_object_set_new(j, "simulated_seconds", json_real(os.seconds));
			json_object_set_new(j, "eve_fraction", json_real(o.eve));
			json_object_set_new(j, "blocks", json_integer((json_int_t)nblocks));
			json_object_set_new(j, "blocks_delivered",
					    json_integer((json_int_t)delivered_blocks));
			json_object_set_new(j, "blocks_dropped",
					    json_integer((json_int_t)A->blocks_dropped));
			json_object_set_new(j, "detections", json_integer((json_int_t)A->detections));
			json_object_set_new(j, "sifted_bits", json_integer((json_int_t)A->sifted_bits));
			json_object_set_new(j, "key_bits", json_integer((json_int_t)A->key_bits));
			json_object_set_new(j, "qber", json_real(A->qber));
			json_object_set_new(j, "qber_key",
					    json_real(B->ec_bits ? (double)B->ec_errors / (double)B->ec_bits
								 : 0.0));
			json_object_set_new(j, "ec_leak_bits", json_integer((json_int_t)B->ec_leak_bits));
			json_object_set_new(j, "ec_efficiency", json_real(B->ec_efficiency));
			json_object_set_new(j, "verify_bits", json_integer((json_int_t)A->verify_bits));
			json_object_set_new(j, "single_photon_bits_lower",
					    json_real(floor(A->single_photon_bits)));
			json_object_set_new(j, "vacuum_bits_lower", json_real(floor(A->vacuum_bits)));
			json_object_set_new(j, "phase_error_upper", json_real(A->phase_error));
			json_object_set_new(j, "secret_bits", json_integer((json_int_t)distilled));
			json_object_set_new(j, "delivered_bits", json_integer((json_int_t)secret));
			json_object_set_new(j, "auth_bits_replenished",
					    json_integer((json_int_t)A->auth_bits));
			json_object_set_new(j, "auth_bits_used",
					    json_integer((json_int_t)A->auth_used_bits));
			json_object_set_new(j, "key_rate", json_real(key_rate));
			json_object_set_new(j, "key_rate_bound", json_real(bound));
			json_object_set_new(j, "finite_key_theory", json_real(theory));
			json_object_set_new(j, "finite_key_theory_f", json_real(pr_def.f_ec));
			json_object_set_new(j, "finite_key_theory_measured_f", json_real(theory_f));
			json_object_set_new(j, "block_pulses", json_integer((json_int_t)ppb));
			{
				const struct qw_optics_config *c = &lp.optics;
				json_t *pj = json_object(), *mu = json_array(), *pc = json_array();
				for (int k = 0; k < QW_OPTICS_NCLASS; k++) {
					json_array_append_new(mu, json_real(c->intensity[k]));
					json_array_append_new(pc, json_real(c->p_class[k]));
				}
				json_object_set_new(pj, "intensity", mu);
				json_object_set_new(pj, "p_class", pc);
				json_object_set_new(pj, "p_z", json_real(c->p_z_alice));
				json_object_set_new(pj, "optimized", json_boolean(optimized));
				json_object_set_new(j, "protocol", pj);
			}
			json_object_set_new(j, "secret_bit_rate",
					    json_real(os.seconds > 0 ? (double)distilled / os.seconds : 0));
			json_object_set_new(j, "keys_equal", json_boolean(keys_equal && !failed));
			json_object_set_new(j, "aborted", json_boolean(A->aborted || B->aborted));
			json_object_set_new(j, "abort_reason", json_string(reason));
			json_object_set_new(j, "alarms", json_integer((json_int_t)ep[0].keys.alarms));
			json_object_set_new(j, "wall_seconds", json_real(wall));
			qw_cli_print_json(j);
		} else {
			printf("protocol          mu %.3f/%.3f/%.3f, p %.3f/%.3f/%.3f, p_z %.3f (%s)\n",
			       lp.optics.intensity[0], lp.optics.intensity[1], lp.optics.intensity[2],
			       lp.optics.p_class[0], lp.optics.p_class[1], lp.optics.p_class[2],
			       lp.optics.p_z_alice,
			       optimized ? "optimized"
			       : o.no_optimize ? "fixed"
					       : "fixed: no setting yields a key for these blocks");
			printf("pulses            %llu (%.3g s of source time at %.3g Hz)\n",
			       (unsigned long long)A->pulses, os.seconds, o.rate);
			printf("detections        %llu\n", (unsigned long long)A->detections);
			printf("sifted            %llu bits (%llu kept as key)\n",
			       (unsigned long long)A->sifted_bits, (unsigned long long)A->key_bits);
			printf("QBER              %.3f %% (estimate from %llu disclosed bits)\n",
			       100.0 * A->qber, (unsigned long long)A->sample_bits);
			if (B->ec_bits) {
				printf("EC leak           %llu bits (efficiency f = %.3f)\n",
				       (unsigned long long)B->ec_leak_bits, B->ec_efficiency);
				printf("verification      %llu bits disclosed\n",
				       (unsigned long long)A->verify_bits);
				printf("decoy bounds      >= %.0f single-photon bits, >= %.0f vacuum "
				       "bits, phase error <= %.2f %%\n",
				       A->single_photon_bits, A->vacuum_bits, 100.0 * A->phase_error);
			} else {
				printf("EC leak           0 bits (no block reached error correction)\n");
			}
			printf("secret            %llu bits (%llu delivered, %llu to the auth pool; "
			       "%llu auth bits used)\n",
			       (unsigned long long)distilled, (unsigned long long)secret,
			       (unsigned long long)A->auth_bits,
			       (unsigned long long)A->auth_used_bits);
			printf("key rate          %.4g bit/pulse (%.4g bit/s at %.3g Hz)\n", key_rate,
			       key_rate * o.rate, o.rate);
			printf("asymptotic bound  %.4g bit/pulse (same protocol, f = 1, infinite blocks)\n",
			       bound);
			printf("finite-key theory %.4g bit/pulse (same blocks, f = %.2f; %.4g at the "
			       "measured f)\n",
			       theory, pr_def.f_ec, theory_f);
			printf("blocks            %llu delivered, %llu dropped of %llu\n",
			       (unsigned long long)delivered_blocks,
			       (unsigned long long)A->blocks_dropped, (unsigned long long)nblocks);
			if (A->blocks_dropped && !A->aborted)
				printf("last drop         %s\n", A->last_drop_reason);
			printf("keys equal        %s\n", keys_equal && !failed ? "yes" : "NO");
			if (A->aborted || B->aborted)
				printf("ABORTED           %s (%llu QBER alarm(s))\n", reason,
				       (unsigned long long)ep[0].keys.alarms);
			printf("wall time         %.2f s\n", wall);
		}
		if (failed)
			qw_cli_fail("link failed: %s", qw_strerror(ep[0].ret ? ep[0].ret : ep[1].ret));
		else if (!keys_equal)
			qw_cli_fail("Alice's and Bob's keys differ");
		else
			code = QW_EXIT_OK;
	}
out:
	for (int r = 0; r < 2; r++) {
		qw_link_free(ep[r].link);
		side_free(&ep[r].keys);
	}
	for (int r = 0; r < 2; r++)
		if (fds[r] >= 0)
			close(fds[r]);
	qw_free_secret(psk, SIM_PSK_BYTES);
	qw_link_sim_free(sim);
	return code;
}

int qw_cmd_sim(int argc, char **argv)
{
	static const struct qw_cli_cmd cmds[] = {
		{ "link", sim_link, "simulate a QKD link end to end (optics + classical protocol)" },
		{ NULL, NULL, NULL },
	};

	return qw_cli_dispatch("sim", "Simulations of the key-providing layer.", cmds, argc, argv);
}
