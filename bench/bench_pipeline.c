/* qwave bench pipeline: sustained secret-key output of the whole classical
 * post-processing chain (Cascade -> verification -> secret length -> Toeplitz
 * privacy amplification, with every message framed and Wegman-Carter
 * authenticated) between two endpoints over loopback TCP. The optics and
 * sifting are bypassed: both ends are fed sifted-like keys with errors at
 * the given QBER, so the figure is what the post-processing sustains. */
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <jansson.h>

#include "../src/cmd/cli.h"
#include "bench.h"
#include "qwave/cascade.h"
#include "qwave/ldpc.h"
#include "qwave/link.h"
#include "qwave/pipeline.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"
#include "qwave/toeplitz.h"

#define NPAIRS 4 /* distinct key pairs, reused round robin */
#define PSK_PADS 8192

struct bench_ctx {
	double qber, seconds, t_end;
	enum qw_cascade_variant variant;
	uint32_t blocks[QW_CASCADE_MAX_PASSES]; /* --blocks: the whole schedule */
	unsigned nblocks;
	int ldpc;
	size_t block_bits;
	struct qw_bitvec *keys[NPAIRS][2]; /* [pair][role] */
	/* Both ends run the same blocks: Bob's source follows Alice's. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t alice_issued;
	int alice_ended;
	uint64_t bob_next;
};

struct inject_params {
	struct bench_ctx *ctx;
};

/* Stage "inject": give the block its pre-made sifted key. */
static int inject_init(void **state, const void *params)
{
	*state = (void *)params;
	return 0;
}

static enum qw_stage_result inject_process(void *state, struct qw_key_block *b,
					   struct qw_distill_chan *chan)
{
	const struct inject_params *ip = state;
	struct bench_ctx *c = ip->ctx;

	(void)chan;
	b->key = qw_bitvec_dup(c->keys[b->id % NPAIRS][b->role]);
	if (!b->key)
		return QW_STAGE_ERROR;
	b->qber_estimate = c->qber;
	/* An ideal single-photon source: every bit a single photon, phase
	 * error = bit error rate (the asymptotic BB84 case). */
	b->sec_n_single = (double)c->block_bits;
	b->sec_n_vacuum = 0.0;
	b->sec_e1_upper = c->qber;
	b->state = QW_BLOCK_SIFTED;
	return QW_STAGE_FORWARD;
}

struct side {
	enum qw_role role;
	struct bench_ctx *ctx;
	struct qw_frame_io io;
	struct qw_auth_pool *pool;
	struct qw_frame_conn *conn;
	struct qw_pipeline_stats st;
	uint64_t leak, ec_bits, errors, round_trips;
	pthread_mutex_t mu;
	int ret;
};

static int src_next(void *vctx, struct qw_key_block **b)
{
	struct side *s = vctx;
	struct bench_ctx *c = s->ctx;
	uint64_t id = 0;

	*b = NULL;
	pthread_mutex_lock(&c->mu);
	if (s->role == QW_ROLE_ALICE) {
		if (!c->alice_ended && qw_bench_now() < c->t_end)
			id = ++c->alice_issued;
		else
			c->alice_ended = 1;
		pthread_cond_broadcast(&c->cv);
	} else {
		uint64_t want = c->bob_next + 1;
		while (!c->alice_ended && c->alice_issued < want)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->alice_issued >= want)
			id = c->bob_next = want;
	}
	pthread_mutex_unlock(&c->mu);
	if (!id)
		return 0;
	*b = qw_block_new(id, s->role, NULL);
	return *b ? 0 : QW_ENOMEM;
}

static int no_stats(void *ctx, uint64_t id, struct qw_sift_stats *out)
{
	(void)ctx;
	(void)id;
	(void)out;
	return QW_ENOTFOUND;
}

/* Stage "account": what EC disclosed, for the efficiency figure. */
static int account_init(void **state, const void *params)
{
	*state = (void *)params;
	return 0;
}

static enum qw_stage_result account_process(void *state, struct qw_key_block *b,
					    struct qw_distill_chan *chan)
{
	struct side *s = state;

	(void)chan;
	pthread_mutex_lock(&s->mu);
	s->leak += b->ec_parity_bits;
	s->ec_bits += b->key->nbits;
	s->errors += (uint64_t)llround(b->qber_observed * (double)b->key->nbits);
	s->round_trips += b->ec_round_trips;
	pthread_mutex_unlock(&s->mu);
	/* The ideal source: every bit that survived EC is a single photon
	 * (LDPC may have removed failed frames). */
	b->sec_n_single = (double)b->key->nbits;
	return QW_STAGE_FORWARD;
}

struct chain {
	struct inject_params inject;
	struct qw_cascade_params cascade;
	struct qw_ldpc_params ldpc;
	struct qw_verify_params verify;
	struct qw_estimate_stage_params est;
	struct qw_pa_params pa;
	struct qw_stage stages[6];
	const void *params[6];
};

static void chain_init(struct chain *ch, struct bench_ctx *c, struct side *s)
{
	memset(ch, 0, sizeof(*ch));
	ch->inject.ctx = c;
	qw_cascade_params_init(&ch->cascade, c->variant);
	ch->cascade.policy = QW_CASCADE_FEWEST_ROUNDS;
	if (c->nblocks) {
		ch->cascade.npasses = c->nblocks;
		memcpy(ch->cascade.block_size, c->blocks, c->nblocks * sizeof(c->blocks[0]));
	}
	ch->verify.tag_bits = 64;
	ch->est.intensity[0] = 0.5;
	ch->est.intensity[1] = 0.1;
	ch->est.intensity[2] = 0.0;
	ch->est.p_class[0] = 0.7;
	ch->est.p_class[1] = 0.2;
	ch->est.p_class[2] = 0.1;
	ch->est.get_stats = no_stats;
	ch->pa.method = QW_TOEPLITZ_AUTO;
	ch->stages[0] = (struct qw_stage){ "inject", inject_init, inject_process, NULL };
	ch->params[0] = &ch->inject;
	qw_ldpc_params_init(&ch->ldpc);
	/* a failed LDPC frame costs its bits, not the whole block */
	ch->ldpc.keep_partial = 1;
	if (c->ldpc) {
		ch->stages[1] = qw_ldpc_stage;
		ch->params[1] = &ch->ldpc;
	} else {
		ch->stages[1] = qw_cascade_stage;
		ch->params[1] = &ch->cascade;
	}
	ch->stages[2] = qw_stage_verify;
	ch->params[2] = &ch->verify;
	ch->stages[3] = (struct qw_stage){ "account", account_init, account_process, NULL };
	ch->params[3] = s;
	ch->stages[4] = qw_seclen_stage;
	ch->params[4] = &ch->est;
	ch->stages[5] = qw_stage_pa;
	ch->params[5] = &ch->pa;
}

struct runarg {
	struct side *s;
	unsigned workers;
};

static void *side_main(void *arg)
{
	struct runarg *ra = arg;
	struct side *s = ra->s;
	struct chain ch;
	struct qw_pipeline_params p;
	struct qw_pipeline_source src = { s, src_next };

	chain_init(&ch, s->ctx, s);
	memset(&p, 0, sizeof(p));
	p.role = s->role;
	p.stages = ch.stages;
	p.nstages = 6;
	p.stage_params = ch.params;
	p.workers = ra->workers;
	p.auth_share = 0.02;
	s->ret = qw_pipeline_run(&p, s->conn, s->pool, &src, NULL, &s->st);
	return NULL;
}


/* Alice's key uniform, Bob's with exactly Bernoulli(q) flips (geometric
 * gaps between errors). */
static int make_pair(struct qw_rng *r, size_t n, double q, struct qw_bitvec **a,
		     struct qw_bitvec **b)
{
	*a = qw_bitvec_new(n);
	if (!*a)
		return QW_ENOMEM;
	for (size_t w = 0; w < (*a)->nwords; w++)
		(*a)->w[w] = qw_rng_u64(r);
	if (n % 64)
		(*a)->w[(*a)->nwords - 1] &= ((uint64_t)1 << (n % 64)) - 1;
	*b = qw_bitvec_dup(*a);
	if (!*b)
		return QW_ENOMEM;
	if (q > 0.0) {
		double lq = log1p(-q);
		for (double i = floor(log1p(-qw_rng_uniform(r)) / lq); i < (double)n;
		     i += 1.0 + floor(log1p(-qw_rng_uniform(r)) / lq))
			qw_bitvec_flip(*b, (size_t)i);
	}
	return 0;
}

/* User + system CPU seconds of the whole process (both endpoints, every
 * thread): the figure the shared machine's other load does not inflate. */
static double cpu_seconds(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return 0.0;
	return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
	       (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

/* "K1,K2,..." -> the block size of every pass; 0 or -1. */
static int parse_blocks(const char *s, uint32_t *k, unsigned *n)
{
	unsigned i = 0;
	char *end;

	while (*s) {
		unsigned long v = strtoul(s, &end, 10);

		if (end == s || v == 0 || v > UINT32_MAX || i >= QW_CASCADE_MAX_PASSES)
			return -1;
		k[i++] = (uint32_t)v;
		s = end;
		if (*s == ',')
			s++;
		else if (*s)
			return -1;
	}
	*n = i;
	return i ? 0 : -1;
}

static void help(void)
{
	printf("usage: qwave bench pipeline [--qber Q] [--block-bits N] [--seconds S]\n"
	       "                            [--workers K] [--ec E] [--cascade V]\n"
	       "                            [--blocks K1,K2,...] [--json]\n"
	       "\n"
	       "Sustained secret-key output of the classical post-processing chain\n"
	       "(Cascade or LDPC, verification hash, secret length, Toeplitz PA, every message\n"
	       "framed and Wegman-Carter authenticated), both endpoints in this process\n"
	       "over loopback TCP, fed sifted-like key pairs at QBER Q (optics and\n"
	       "sifting bypassed). The secret length is that of an ideal single-photon\n"
	       "source: n (1 - h(Q)) - EC leak - verification tag - eps terms.\n"
	       "\n"
	       "  --qber Q          error rate of the input pairs (0.02)\n"
	       "  --block-bits N    sifted bits per block (1e6)\n"
	       "  --seconds S       how long Alice keeps starting blocks (10)\n"
	       "  --workers K       blocks in flight per endpoint (2)\n"
	       "  --ec E            cascade (default) | ldpc (one-way syndromes)\n"
	       "  --cascade V       fast (default) | original | yan | option8 | optimized;\n"
	       "                    always with all open bisections advanced per round trip\n"
	       "  --blocks LIST     Cascade block size of every pass (overrides the\n"
	       "                    variant's schedule; sizes >= n/2 are BICONF passes)\n"
	       "  --json            one JSON object on stdout\n");
}

int qw_bench_pipeline(int argc, char **argv)
{
	static const char *cmd = "bench pipeline";
	struct bench_ctx c;
	struct side sides[2];
	struct runarg ra[2];
	struct qw_rng *rng = NULL;
	size_t psk_len = 2 * QW_AUTH_HASHKEY_BYTES + PSK_PADS * QW_AUTH_UNIT_BYTES;
	uint8_t *psk = NULL;
	uint64_t workers = 2;
	double bb = 1e6, t0, wall, cpu0, cpu;
	pthread_t th[2];
	int json = 0, fds[2] = { -1, -1 }, code = QW_EXIT_FAIL, err, started = 0;

	memset(&c, 0, sizeof(c));
	memset(sides, 0, sizeof(sides));
	c.qber = 0.02;
	/* The schedule measured fastest for secret bits per CPU-second at
	 * 1-8% (docs/qkd-link.md); --cascade original gives the link's. */
	c.variant = QW_CASCADE_FAST;
	c.seconds = 10.0;
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i];
		if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
			help();
			return QW_EXIT_OK;
		}
		if (!strcmp(o, "--json")) {
			json = 1;
			continue;
		}
		if (i + 1 >= argc)
			return qw_cli_usage_error(cmd, "unknown option or missing value '%s'", o);
		if (!strcmp(o, "--qber")) {
			if (qw_cli_parse_double(argv[++i], &c.qber) || !(c.qber > 0 && c.qber < 0.11))
				return qw_cli_usage_error(cmd, "bad --qber '%s' (0 < Q < 0.11)", argv[i]);
		} else if (!strcmp(o, "--block-bits")) {
			if (qw_cli_parse_double(argv[++i], &bb) || bb < 1e4 || bb > 1e8)
				return qw_cli_usage_error(cmd, "bad --block-bits '%s' (1e4..1e8)", argv[i]);
		} else if (!strcmp(o, "--seconds")) {
			if (qw_cli_parse_double(argv[++i], &c.seconds) || !(c.seconds > 0) ||
			    c.seconds > 3600)
				return qw_cli_usage_error(cmd, "bad --seconds '%s' (0..3600)", argv[i]);
		} else if (!strcmp(o, "--ec")) {
			i++;
			if (!strcmp(argv[i], "ldpc"))
				c.ldpc = 1;
			else if (strcmp(argv[i], "cascade"))
				return qw_cli_usage_error(cmd, "bad --ec '%s' (cascade|ldpc)", argv[i]);
		} else if (!strcmp(o, "--cascade")) {
			if (qw_cascade_variant_parse(argv[++i], &c.variant))
				return qw_cli_usage_error(cmd, "bad --cascade '%s'", argv[i]);
		} else if (!strcmp(o, "--blocks")) {
			if (parse_blocks(argv[++i], c.blocks, &c.nblocks))
				return qw_cli_usage_error(cmd, "bad --blocks '%s'", argv[i]);
		} else if (!strcmp(o, "--workers")) {
			if (qw_cli_parse_u64(argv[++i], &workers) || workers < 1 || workers > 64)
				return qw_cli_usage_error(cmd, "bad --workers '%s' (1..64)", argv[i]);
		} else {
			return qw_cli_usage_error(cmd, "unknown option '%s'", o);
		}
	}
	c.block_bits = (size_t)bb;
	if (c.nblocks) {
		struct qw_cascade_params cp;
		uint32_t k[QW_CASCADE_MAX_PASSES];
		unsigned np;

		qw_cascade_params_init(&cp, c.variant);
		cp.npasses = c.nblocks;
		memcpy(cp.block_size, c.blocks, c.nblocks * sizeof(c.blocks[0]));
		if (qw_cascade_schedule(&cp, c.block_bits, c.qber, k, &np))
			return qw_cli_usage_error(cmd, "--blocks: not a usable Cascade schedule");
	}
	pthread_mutex_init(&c.mu, NULL);
	pthread_cond_init(&c.cv, NULL);
	rng = qw_rng_new_seeded(2023);
	psk = malloc(psk_len);
	if (!rng || !psk || qw_random_bytes(psk, psk_len)) {
		qw_cli_fail("cannot set up the benchmark");
		goto out;
	}
	for (int k = 0; k < NPAIRS; k++)
		if (make_pair(rng, c.block_bits, c.qber, &c.keys[k][0], &c.keys[k][1])) {
			qw_cli_fail("out of memory");
			goto out;
		}
	if (qw_frame_tcp_pair(fds)) {
		qw_cli_fail("cannot open loopback TCP");
		goto out;
	}
	for (int r = 0; r < 2; r++) {
		struct side *s = &sides[r];
		s->role = (enum qw_role)r;
		s->ctx = &c;
		pthread_mutex_init(&s->mu, NULL);
		qw_frame_io_fd(&s->io, fds[r]);
		s->pool = qw_auth_pool_new(psk, psk_len, 1, &err);
		s->conn = s->pool ? qw_frame_conn_new(&s->io, s->pool, s->role, 0) : NULL;
		if (!s->conn) {
			qw_cli_fail("cannot set up an endpoint");
			goto out;
		}
		ra[r] = (struct runarg){ s, (unsigned)workers };
	}
	if (!json)
		fprintf(stderr, "bench pipeline: QBER %.3f, blocks of %zu bits, %.0f s, %llu workers\n",
			c.qber, c.block_bits, c.seconds, (unsigned long long)workers);
	cpu0 = cpu_seconds();
	t0 = qw_bench_now();
	c.t_end = t0 + c.seconds;
	for (; started < 2; started++)
		if (pthread_create(&th[started], NULL, side_main, &ra[started])) {
			shutdown(fds[0], SHUT_RDWR);
			break;
		}
	for (int r = 0; r < started; r++)
		pthread_join(th[r], NULL);
	wall = qw_bench_now() - t0;
	cpu = cpu_seconds() - cpu0;
	if (started < 2 || sides[0].ret || sides[1].ret) {
		qw_cli_fail("pipeline failed: %s",
			    qw_strerror(sides[0].ret ? sides[0].ret : sides[1].ret));
		goto out;
	}
	{
		const struct side *A = &sides[0], *B = &sides[1];
		double secret = (double)(A->st.secret_bits + A->st.auth_bits);
		double in_bits = (double)B->ec_bits;
		double e = B->ec_bits ? (double)B->errors / (double)B->ec_bits : 0.0;
		double f = e > 0 ? (double)B->leak / ((double)B->ec_bits * qw_h2(e)) : 0.0;
		double rt = A->st.blocks_delivered
				    ? (double)B->round_trips / (double)(A->st.blocks_delivered +
									A->st.blocks_dropped)
				    : 0.0;
		double target = 115.8e6;
		struct qw_auth_pool_stats ps;
		double pads, net;

		/* Pads the frames spent (both directions, one end's books; the
		 * other end's are identical): paid back from the secret output,
		 * so the net rate subtracts them. */
		qw_auth_pool_stats(A->pool, &ps);
		pads = 8.0 * (double)(ps.consumed[0] + ps.consumed[1]);
		net = secret > pads ? secret - pads : 0.0;

		if (json) {
			json_t *j = json_object();
			json_object_set_new(j, "qber", json_real(c.qber));
			json_object_set_new(j, "block_bits", json_integer((json_int_t)c.block_bits));
			json_object_set_new(j, "workers", json_integer((json_int_t)workers));
			json_object_set_new(j, "ec", json_string(c.ldpc ? "ldpc" : "cascade"));
			if (!c.ldpc) {
				json_object_set_new(j, "cascade",
						    json_string(qw_cascade_variant_name(c.variant)));
				if (c.nblocks) {
					json_t *a = json_array();
					for (unsigned k = 0; k < c.nblocks; k++)
						json_array_append_new(a, json_integer(c.blocks[k]));
					json_object_set_new(j, "cascade_blocks", a);
				}
			}
			json_object_set_new(j, "seconds", json_real(wall));
			json_object_set_new(j, "blocks_delivered",
					    json_integer((json_int_t)A->st.blocks_delivered));
			json_object_set_new(j, "blocks_dropped",
					    json_integer((json_int_t)A->st.blocks_dropped));
			json_object_set_new(j, "sifted_mbps", json_real(in_bits / wall / 1e6));
			json_object_set_new(j, "secret_bits", json_real(secret));
			json_object_set_new(j, "secret_mbps", json_real(secret / wall / 1e6));
			json_object_set_new(j, "auth_pad_bits", json_real(pads));
			json_object_set_new(j, "net_secret_mbps", json_real(net / wall / 1e6));
			json_object_set_new(j, "cpu_seconds", json_real(cpu));
			json_object_set_new(j, "secret_mbit_per_cpu_s",
					    json_real(cpu > 0 ? secret / cpu / 1e6 : 0.0));
			json_object_set_new(j, "net_secret_mbit_per_cpu_s",
					    json_real(cpu > 0 ? net / cpu / 1e6 : 0.0));
			json_object_set_new(j, "secret_fraction",
					    json_real(in_bits > 0 ? secret / in_bits : 0));
			json_object_set_new(j, "ec_efficiency", json_real(f));
			json_object_set_new(j, "round_trips_per_block", json_real(rt));
			json_object_set_new(j, "frames", json_integer((json_int_t)(A->st.frames_sent +
										   B->st.frames_sent)));
			json_object_set_new(j, "target_mbps", json_real(target / 1e6));
			json_object_set_new(j, "keeps_up", json_boolean(secret / wall >= target));
			qw_cli_print_json(j);
		} else {
			printf("blocks            %llu delivered, %llu dropped (%zu bits each)\n",
			       (unsigned long long)A->st.blocks_delivered,
			       (unsigned long long)A->st.blocks_dropped, c.block_bits);
			printf("input             %.2f Mbit/s of sifted key\n", in_bits / wall / 1e6);
			printf("secret output     %.2f Mbit/s (%.3f of the input; %.0f bits in %.2f s)\n",
			       secret / wall / 1e6, in_bits > 0 ? secret / in_bits : 0.0, secret, wall);
			printf("net of auth pads  %.2f Mbit/s (%.0f pad bits spent by the frames)\n",
			       net / wall / 1e6, pads);
			printf("CPU time          %.2f s (both endpoints): %.2f Mbit secret per CPU-second "
			       "(%.2f net)\n",
			       cpu, cpu > 0 ? secret / cpu / 1e6 : 0.0, cpu > 0 ? net / cpu / 1e6 : 0.0);
			printf("EC efficiency     f = %.3f, %.1f round trips per block (%s%s)\n", f, rt,
			       c.ldpc ? "LDPC" : "Cascade ",
			       c.ldpc ? "" : (c.nblocks ? "--blocks" : qw_cascade_variant_name(c.variant)));
			printf("target            115.8 Mbit/s secret (Li et al., Nat. Photonics 2023): "
			       "%s (%.1f %%)\n",
			       secret / wall >= target ? "kept up" : "NOT reached",
			       100.0 * secret / wall / target);
		}
		code = QW_EXIT_OK;
	}
out:
	for (int r = 0; r < 2; r++) {
		qw_frame_conn_free(sides[r].conn);
		qw_auth_pool_free(sides[r].pool);
		if (sides[r].ctx)
			pthread_mutex_destroy(&sides[r].mu);
		if (fds[r] >= 0)
			close(fds[r]);
	}
	for (int k = 0; k < NPAIRS; k++) {
		qw_bitvec_free(c.keys[k][0]);
		qw_bitvec_free(c.keys[k][1]);
	}
	qw_free_secret(psk, psk_len);
	qw_rng_free(rng);
	pthread_mutex_destroy(&c.mu);
	pthread_cond_destroy(&c.cv);
	return code;
}
