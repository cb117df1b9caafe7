/* QKD link endpoints (Alice, Bob) and the in-process link simulation.
 * Contract: include/qwave/link.h; protocol description: docs/qkd-link.md. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qwave/link.h"
#include "qwave/pipeline.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"
#include "qwave/toeplitz.h"

/* ---- the endpoint --------------------------------------------------------- */

/* Sift statistics waiting for the block's estimate stage. */
struct stat_entry {
	uint64_t id;
	struct qw_sift_stats st;
	struct stat_entry *next;
};

enum { ST_SIFT, ST_ESTIMATE, ST_EC, ST_VERIFY, ST_ACCOUNT, ST_SECLEN, ST_PA, NSTAGES };

struct qw_link {
	struct qw_link_params p;
	enum qw_role role;
	const struct qw_frame_io *io;
	struct qw_auth_pool *pool;
	struct qw_frame_conn *conn;
	struct qw_link_records records;

	struct qw_sift_stage_params sift;
	struct qw_estimate_stage_params est;
	struct qw_verify_params verify;
	struct qw_pa_params pa;
	struct qw_stage stages[NSTAGES];
	const void *stage_params[NSTAGES];

	pthread_mutex_t mu;
	struct stat_entry *pending_stats;
	uint64_t next_block;
	struct qw_link_stats st;
};

void qw_link_params_default(struct qw_link_params *p)
{
	QW_REQUIRE(p != NULL);
	memset(p, 0, sizeof(*p));
	qw_optics_config_default(&p->optics);
	p->nblocks = 1;
	qw_sift_params_default(&p->sift);
	p->qber_threshold = 0.11;
	p->bounds = QW_LINK_BOUNDS_FINITE;
	p->eps.eps_sec = 1e-10;
	p->eps.eps_cor = 1e-15;
	p->ec = QW_LINK_EC_CASCADE;
	qw_cascade_params_init(&p->cascade, QW_CASCADE_FAST);
	/* Every round trip costs two 128-bit auth pads: few rounds beat a few
	 * parities less (docs/qkd-link.md has the numbers). */
	p->cascade.policy = QW_CASCADE_FEWEST_ROUNDS;
	qw_ldpc_params_init(&p->ldpc);
	p->workers = 2;
	p->auth_share = 0.05;
	p->recv_timeout_ms = 60000;
}

void qw_link_protocol(const struct qw_link_params *p, struct qw_finite_protocol *pr)
{
	const struct qw_optics_config *o;

	QW_REQUIRE(p != NULL && pr != NULL);
	o = &p->optics;
	qw_finite_protocol_default(pr, o->intensity[QW_CLASS_SIGNAL],
				   o->intensity[QW_CLASS_DECOY], o->intensity[QW_CLASS_VACUUM]);
	for (int k = 0; k < QW_OPTICS_NCLASS; k++)
		pr->p[k] = o->p_class[k];
	pr->q_x = o->p_z_alice;
	pr->eps = p->eps;
}

int qw_link_params_optimize(struct qw_link_params *p, double pulses_per_block,
			    struct qw_finite_result *out)
{
	struct qw_finite_protocol pr;
	struct qw_finite_result r;
	struct qw_optics_config *o;
	int ret;

	QW_REQUIRE(p != NULL);
	o = &p->optics;
	qw_link_protocol(p, &pr);
	ret = qw_finite_optimize_pulses(&o->link, o->distance_km, &pr, pulses_per_block, &r);
	if (ret)
		return ret;
	/* [LCWXZ] index k = the link's class k (signal, decoy, vacuum-like). */
	for (int k = 0; k < QW_OPTICS_NCLASS; k++) {
		o->intensity[k] = pr.mu[k];
		o->p_class[k] = pr.p[k];
	}
	o->p_z_alice = pr.q_x;
	o->p_z_bob = pr.q_x;
	if (out)
		*out = r;
	return 0;
}

/* sift stage callbacks */
static struct qw_detections *link_fetch(void *ctx, uint64_t id)
{
	struct qw_link *l = ctx;

	return l->records.fetch(l->records.ctx, id);
}

static void link_sift_stats(void *ctx, uint64_t id, const struct qw_sift_stats *st)
{
	struct qw_link *l = ctx;
	struct stat_entry *e = calloc(1, sizeof(*e));
	uint64_t sd = 0, se = 0;

	pthread_mutex_lock(&l->mu);
	if (e) {
		e->id = id;
		e->st = *st;
		e->next = l->pending_stats;
		l->pending_stats = e;
	}
	l->st.pulses += st->end_pulse - st->first_pulse;
	for (int k = 0; k < QW_OPTICS_NCLASS; k++) {
		l->st.detections += st->detected[k];
		l->st.sifted_bits += st->sifted[k][0] + st->sifted[k][1];
	}
	l->st.key_bits += st->key_bits;
	/* the bits of the block's QBER estimate, as sift computes it (the link
	 * runs the [LCWXZ] layout with a Z key): the Z sample of every class
	 * if there is one, else every disclosed bit (the X test basis) */
	for (int k = 0; k < QW_OPTICS_NCLASS; k++) {
		sd += st->disclosed[k][QW_BASIS_Z];
		se += st->errors[k][QW_BASIS_Z];
	}
	if (sd == 0)
		for (int k = 0; k < QW_OPTICS_NCLASS; k++) {
			sd += st->disclosed[k][QW_BASIS_X];
			se += st->errors[k][QW_BASIS_X];
		}
	l->st.sample_errors += se;
	l->st.sample_bits += sd;
	pthread_mutex_unlock(&l->mu);
}

static int link_get_stats(void *ctx, uint64_t id, struct qw_sift_stats *out)
{
	struct qw_link *l = ctx;
	int ret = QW_ENOTFOUND;

	pthread_mutex_lock(&l->mu);
	for (struct stat_entry **pp = &l->pending_stats; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			struct stat_entry *e = *pp;
			*out = e->st;
			*pp = e->next;
			free(e);
			ret = 0;
			break;
		}
	}
	pthread_mutex_unlock(&l->mu);
	return ret;
}

static void link_alarm(void *ctx, uint64_t id, double qber, double threshold)
{
	struct qw_link *l = ctx;

	if (l->p.alarm)
		l->p.alarm(l->p.sink_ctx, id, qber, threshold);
}

/* Stage "sift" with a generator per worker: a struct qw_rng is not
 * thread-safe, and each worker inits its own stage state. */
struct sift_wrap {
	struct qw_rng *rng;
	void *inner;
};

static int sift_wrap_init(void **state, const void *params)
{
	struct qw_sift_stage_params sp = *(const struct qw_sift_stage_params *)params;
	struct sift_wrap *w = calloc(1, sizeof(*w));
	int ret;

	if (!w)
		return QW_ENOMEM;
	w->rng = qw_rng_new_system();
	if (!w->rng) {
		free(w);
		return QW_ECRYPTO;
	}
	sp.rng = w->rng;
	ret = qw_sift_stage.init(&w->inner, &sp);
	if (ret) {
		qw_rng_free(w->rng);
		free(w);
		return ret;
	}
	*state = w;
	return 0;
}

static enum qw_stage_result sift_wrap_process(void *state, struct qw_key_block *b,
					      struct qw_distill_chan *chan)
{
	struct sift_wrap *w = state;

	return qw_sift_stage.process(w->inner, b, chan);
}

static void sift_wrap_free(void *state)
{
	struct sift_wrap *w = state;

	if (!w)
		return;
	qw_sift_stage.free(w->inner);
	qw_rng_free(w->rng);
	free(w);
}

/* Stage "account": after verification, before the secret length, record
 * what error correction and verification disclosed. */
static int account_init(void **state, const void *params)
{
	*state = (void *)params;
	return 0;
}

static enum qw_stage_result account_process(void *state, struct qw_key_block *b,
					    struct qw_distill_chan *chan)
{
	struct qw_link *l = state;
	size_t n = b->key ? b->key->nbits : 0;

	(void)chan;
	pthread_mutex_lock(&l->mu);
	l->st.ec_bits += n;
	l->st.ec_leak_bits += b->ec_parity_bits;
	l->st.ec_errors += (uint64_t)llround(b->qber_observed * (double)n);
	l->st.verify_bits += b->disclosed_bits - b->ec_parity_bits;
	l->st.vacuum_bits += b->sec_n_vacuum;
	l->st.single_photon_bits += b->sec_n_single;
	if (b->sec_e1_upper > l->st.phase_error)
		l->st.phase_error = b->sec_e1_upper;
	pthread_mutex_unlock(&l->mu);
	return QW_STAGE_FORWARD;
}

/* pipeline source and sink */
static int link_next(void *ctx, struct qw_key_block **b)
{
	struct qw_link *l = ctx;

	*b = NULL;
	if (l->next_block > l->p.nblocks)
		return 0;
	*b = qw_block_new(l->next_block, l->role, NULL);
	if (!*b)
		return QW_ENOMEM;
	l->next_block++;
	return 0;
}

static void link_deliver(void *ctx, const struct qw_key_block *b)
{
	struct qw_link *l = ctx;

	pthread_mutex_lock(&l->mu);
	l->st.blocks_delivered++;
	l->st.secret_bits += b->key->nbits;
	pthread_mutex_unlock(&l->mu);
	if (l->p.deliver)
		l->p.deliver(l->p.sink_ctx, b->id, b->key);
}

static void link_dropped(void *ctx, const struct qw_key_block *b, const char *reason)
{
	struct qw_link *l = ctx;

	pthread_mutex_lock(&l->mu);
	l->st.blocks_dropped++;
	snprintf(l->st.last_drop_reason, sizeof(l->st.last_drop_reason), "%s", reason);
	/* The QBER alarm is the abort the link reports (the peer's copy of
	 * the reason arrives prefixed). */
	if (!l->st.aborted && strstr(reason, "QBER ")) {
		const char *q = strstr(reason, "QBER ");
		l->st.aborted = 1;
		snprintf(l->st.abort_reason, sizeof(l->st.abort_reason), "%s", q);
	}
	pthread_mutex_unlock(&l->mu);
	if (l->p.dropped)
		l->p.dropped(l->p.sink_ctx, b->id, reason);
}

struct qw_link *qw_link_new(const struct qw_link_params *p, enum qw_role role,
			    const struct qw_frame_io *io, const uint8_t *psk, size_t psk_len,
			    const struct qw_link_records *records, int *err)
{
	struct qw_link *l = NULL;
	int dummy, ret = QW_EINVAL;

	if (!err)
		err = &dummy;
	QW_REQUIRE(p != NULL && io != NULL && records != NULL && records->fetch != NULL);
	QW_REQUIRE(role == QW_ROLE_ALICE || role == QW_ROLE_BOB);
	/* keep_partial would shorten the key after the estimate stage sized
	 * its bounds for the whole block */
	/* the estimate stage maps the Z key basis and the X test basis onto
	 * [LCWXZ]'s X and Z: a key from both bases is not supported */
	/* and its bounds are [LCWXZ]'s, about a key of every class */
	if ((p->ec != QW_LINK_EC_CASCADE && p->ec != QW_LINK_EC_LDPC) || p->sift.key_both_bases ||
	    !p->sift.key_all_classes ||
	    (p->ec == QW_LINK_EC_LDPC && p->ldpc.keep_partial) || !(p->auth_share >= 0.0 && p->auth_share < 1.0) ||
	    !(p->qber_threshold > 0.0 && p->qber_threshold <= 0.5) || p->nblocks == 0 ||
	    qw_optics_config_check(&p->optics))
		goto fail;
	ret = QW_ENOMEM;
	l = calloc(1, sizeof(*l));
	if (!l)
		goto fail;
	pthread_mutex_init(&l->mu, NULL);
	l->p = *p;
	l->p.sift.qber_abort = 0.0; /* the estimate stage aborts, with the alarm */
	l->role = role;
	l->io = io;
	l->records = *records;
	l->next_block = 1;
	l->pool = qw_auth_pool_new(psk, psk_len, 1, &ret);
	if (!l->pool)
		goto fail;
	l->conn = qw_frame_conn_new(io, l->pool, role, 0);
	if (!l->conn) {
		ret = QW_ENOMEM;
		goto fail;
	}

	l->sift.sift = l->p.sift;
	l->sift.ctx = l;
	l->sift.fetch = link_fetch;
	l->sift.stats = link_sift_stats;

	for (int k = 0; k < QW_OPTICS_NCLASS; k++) {
		l->est.intensity[k] = p->optics.intensity[k];
		l->est.p_class[k] = p->optics.p_class[k];
	}
	l->est.qber_threshold = p->qber_threshold;
	l->est.bounds = p->bounds;
	l->est.eps = p->eps;
	l->est.ctx = l;
	l->est.get_stats = link_get_stats;
	l->est.alarm = link_alarm;

	/* A verification tag long enough for eps_cor on the largest block
	 * a link sends (2^31 bits); NULL rng: qw_random_bytes, thread-safe. */
	l->verify.tag_bits = qw_verify_tag_bits((uint64_t)1 << 31, p->eps.eps_cor);
	if (l->verify.tag_bits == 0)
		l->verify.tag_bits = 128;
	l->verify.rng = NULL;
	l->pa.rng = NULL;
	l->pa.method = QW_TOEPLITZ_AUTO;

	l->stages[ST_SIFT] = (struct qw_stage){ "sift", sift_wrap_init, sift_wrap_process,
						sift_wrap_free };
	l->stage_params[ST_SIFT] = &l->sift;
	l->stages[ST_ESTIMATE] = qw_estimate_stage;
	l->stage_params[ST_ESTIMATE] = &l->est;
	if (p->ec == QW_LINK_EC_LDPC) {
		l->stages[ST_EC] = qw_ldpc_stage;
		l->stage_params[ST_EC] = &l->p.ldpc;
	} else {
		l->stages[ST_EC] = qw_cascade_stage;
		l->stage_params[ST_EC] = &l->p.cascade;
	}
	l->stages[ST_VERIFY] = qw_stage_verify;
	l->stage_params[ST_VERIFY] = &l->verify;
	l->stages[ST_ACCOUNT] = (struct qw_stage){ "account", account_init, account_process, NULL };
	l->stage_params[ST_ACCOUNT] = l;
	l->stages[ST_SECLEN] = qw_seclen_stage;
	l->stage_params[ST_SECLEN] = &l->est;
	l->stages[ST_PA] = qw_stage_pa;
	l->stage_params[ST_PA] = &l->pa;
	*err = 0;
	return l;
fail:
	qw_link_free(l);
	*err = ret;
	return NULL;
}

int qw_link_run(struct qw_link *l)
{
	struct qw_pipeline_params pp;
	struct qw_pipeline_source src = { l, link_next };
	struct qw_pipeline_sink sink = { l, link_deliver, link_dropped };
	struct qw_pipeline_stats ps;
	struct qw_auth_pool_stats as;
	int ret;

	QW_REQUIRE(l != NULL);
	memset(&pp, 0, sizeof(pp));
	pp.role = l->role;
	pp.stages = l->stages;
	pp.nstages = NSTAGES;
	pp.stage_params = l->stage_params;
	pp.workers = l->p.workers;
	pp.auth_share = l->p.auth_share;
	pp.recv_timeout_ms = l->p.recv_timeout_ms;
	ret = qw_pipeline_run(&pp, l->conn, l->pool, &src, &sink, &ps);
	qw_auth_pool_stats(l->pool, &as);
	pthread_mutex_lock(&l->mu);
	l->st.auth_bits = ps.auth_bits;
	l->st.auth_used_bits = 8 * (as.consumed[0] + as.consumed[1]);
	l->st.blocks = l->st.blocks_delivered + l->st.blocks_dropped;
	l->st.error = ret;
	if (ret && !l->st.aborted) {
		l->st.aborted = 1;
		snprintf(l->st.abort_reason, sizeof(l->st.abort_reason), "link failed: %s",
			 ret == QW_EAGAIN ? "authentication key pool exhausted" : qw_strerror(ret));
	}
	pthread_mutex_unlock(&l->mu);
	return ret;
}

void qw_link_get_stats(struct qw_link *l, struct qw_link_stats *st)
{
	QW_REQUIRE(l != NULL && st != NULL);
	pthread_mutex_lock(&l->mu);
	*st = l->st;
	pthread_mutex_unlock(&l->mu);
	st->qber = st->sample_bits ? (double)st->sample_errors / (double)st->sample_bits : 0.0;
	st->ec_efficiency = 0.0;
	if (st->ec_bits && st->ec_errors) {
		double e = (double)st->ec_errors / (double)st->ec_bits;
		st->ec_efficiency = (double)st->ec_leak_bits / ((double)st->ec_bits * qw_h2(e));
	}
}

struct qw_frame_conn *qw_link_conn(struct qw_link *l)
{
	QW_REQUIRE(l != NULL);
	return l->conn;
}

void qw_link_free(struct qw_link *l)
{
	if (!l)
		return;
	while (l->pending_stats) {
		struct stat_entry *e = l->pending_stats;
		l->pending_stats = e->next;
		free(e);
	}
	qw_frame_conn_free(l->conn);
	qw_auth_pool_free(l->pool);
	pthread_mutex_destroy(&l->mu);
	qw_wipe(l, sizeof(*l));
	free(l);
}

/* ---- the simulation -------------------------------------------------------- */

struct qw_link_sim;

/* What one endpoint sees of the simulation: its own role's records. */
struct sim_view {
	struct qw_link_sim *sim;
	enum qw_role role;
};

struct sim_block {
	uint64_t id;
	struct qw_detections *rec[2]; /* by enum qw_role; NULL once handed out */
	struct sim_block *next;
};

struct qw_link_sim {
	pthread_mutex_t mu;
	struct qw_rng *rng;
	struct qw_optics *optics;
	uint64_t pulses, per_block, nblocks, generated;
	struct sim_block *blocks;
	struct sim_view views[2];
};

struct qw_link_sim *qw_link_sim_new(const struct qw_optics_config *c, uint64_t pulses,
				    uint64_t pulses_per_block, uint64_t seed, int *err)
{
	struct qw_link_sim *s;
	int dummy;

	if (!err)
		err = &dummy;
	QW_REQUIRE(c != NULL);
	if (pulses == 0 || pulses_per_block == 0) {
		*err = QW_EINVAL;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		*err = QW_ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&s->mu, NULL);
	s->views[QW_ROLE_ALICE] = (struct sim_view){ s, QW_ROLE_ALICE };
	s->views[QW_ROLE_BOB] = (struct sim_view){ s, QW_ROLE_BOB };
	s->pulses = pulses;
	s->per_block = pulses_per_block;
	s->nblocks = pulses / pulses_per_block + (pulses % pulses_per_block != 0);
	s->rng = qw_rng_new_seeded(seed);
	if (!s->rng) {
		*err = QW_ENOMEM;
		qw_link_sim_free(s);
		return NULL;
	}
	s->optics = qw_optics_new(c, s->rng, err);
	if (!s->optics) {
		qw_link_sim_free(s);
		return NULL;
	}
	*err = 0;
	return s;
}

void qw_link_sim_free(struct qw_link_sim *s)
{
	if (!s)
		return;
	while (s->blocks) {
		struct sim_block *b = s->blocks;
		s->blocks = b->next;
		qw_detections_free(b->rec[0]);
		qw_detections_free(b->rec[1]);
		free(b);
	}
	qw_optics_free(s->optics);
	qw_rng_free(s->rng);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

uint64_t qw_link_sim_blocks(const struct qw_link_sim *s)
{
	return s->nblocks;
}

/* Simulate the next block (caller holds the lock). */
static int sim_generate(struct qw_link_sim *s)
{
	uint64_t first = s->generated * s->per_block;
	uint64_t n = s->pulses - first < s->per_block ? s->pulses - first : s->per_block;
	struct sim_block *b = calloc(1, sizeof(*b)), **pp;
	int ret = QW_ENOMEM;

	if (!b)
		return ret;
	b->id = s->generated + 1;
	b->rec[QW_ROLE_ALICE] = qw_detections_new(QW_ROLE_ALICE);
	b->rec[QW_ROLE_BOB] = qw_detections_new(QW_ROLE_BOB);
	if (!b->rec[0] || !b->rec[1])
		goto fail;
	ret = qw_optics_run(s->optics, n, b->rec[QW_ROLE_ALICE], b->rec[QW_ROLE_BOB]);
	if (ret)
		goto fail;
	for (pp = &s->blocks; *pp; pp = &(*pp)->next)
		;
	*pp = b;
	s->generated++;
	return 0;
fail:
	qw_detections_free(b->rec[0]);
	qw_detections_free(b->rec[1]);
	free(b);
	return ret;
}

static struct qw_detections *sim_fetch(void *ctx, uint64_t id)
{
	struct sim_view *v = ctx;
	struct qw_link_sim *s = v->sim;
	struct qw_detections *d = NULL;

	pthread_mutex_lock(&s->mu);
	if (id == 0 || id > s->nblocks)
		goto out;
	while (s->generated < id)
		if (sim_generate(s))
			goto out;
	for (struct sim_block **pp = &s->blocks; *pp; pp = &(*pp)->next) {
		struct sim_block *b = *pp;
		if (b->id != id)
			continue;
		d = b->rec[v->role];
		b->rec[v->role] = NULL;
		if (!b->rec[0] && !b->rec[1]) {
			*pp = b->next;
			free(b);
		}
		break;
	}
out:
	pthread_mutex_unlock(&s->mu);
	return d;
}

void qw_link_sim_records(struct qw_link_sim *s, enum qw_role role, struct qw_link_records *out)
{
	QW_REQUIRE(s != NULL && out != NULL && (role == QW_ROLE_ALICE || role == QW_ROLE_BOB));
	out->ctx = &s->views[role];
	out->fetch = sim_fetch;
}

void qw_link_sim_stats(struct qw_link_sim *s, struct qw_optics_stats *out)
{
	QW_REQUIRE(s != NULL && out != NULL);
	pthread_mutex_lock(&s->mu);
	qw_optics_get_stats(s->optics, out);
	pthread_mutex_unlock(&s->mu);
}

uint64_t qw_link_pulses_for_bits(const struct qw_optics_config *c,
				 const struct qw_sift_params *p, double key_bits)
{
	double gain = 0.0, per_pulse = 0.0, bases;

	QW_REQUIRE(c != NULL && p != NULL);
	for (int k = 0; k < QW_OPTICS_NCLASS; k++) {
		if (k != QW_CLASS_SIGNAL && !p->key_all_classes)
			continue;
		if (qw_decoy_model(&c->link, c->distance_km, c->intensity[k], &gain, NULL))
			return 1;
		per_pulse += c->p_class[k] * gain;
	}
	bases = c->p_z_alice * c->p_z_bob;
	if (p->key_both_bases)
		bases += (1.0 - c->p_z_alice) * (1.0 - c->p_z_bob);
	per_pulse *= bases * (1.0 - p->pe_fraction);
	if (!(per_pulse > 0.0) || !(key_bits > 0.0))
		return 1;
	return (uint64_t)fmax(1.0, ceil(key_bits / per_pulse));
}
