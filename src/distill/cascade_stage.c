/* Cascade driven end to end: in one process through the serialised
 * messages (tests, benchmark), and as the "cascade" distillation stage over
 * a struct qw_distill_chan (links). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distill/cascade_internal.h"
#include "qwave/rng.h"

int qw_cascade_run_local(const struct qw_cascade_params *p, const struct qw_bitvec *alice_key,
			 struct qw_bitvec *bob_key, double qber_est, uint64_t seed,
			 struct qw_cascade_stats *st)
{
	struct qw_cascade_bob *bob = NULL;
	struct qw_cascade_alice *alice = NULL;
	struct qw_cascade_stats sb, sa;
	int ret = QW_ENOMEM;

	QW_REQUIRE(p != NULL && alice_key != NULL && bob_key != NULL);
	if (alice_key->nbits != bob_key->nbits)
		return QW_EINVAL;
	{
		uint32_t k[QW_CASCADE_MAX_PASSES];
		unsigned np;

		if ((ret = qw_cascade_schedule(p, bob_key->nbits, qber_est, k, &np)) != 0)
			return ret;
	}
	bob = qw_cascade_bob_new(p, bob_key, qber_est, seed);
	alice = qw_cascade_alice_new(alice_key);
	if (!bob || !alice) {
		ret = QW_ENOMEM;
		goto out;
	}
	for (;;) {
		const uint8_t *msg, *ans;
		size_t len, alen;
		int rb = qw_cascade_bob_next(bob, &msg, &len), ra;

		if (rb < 0) {
			ret = rb;
			goto out;
		}
		ra = qw_cascade_alice_answer(alice, msg, len, &ans, &alen);
		if (ra < 0) {
			ret = ra;
			goto out;
		}
		if (rb == 1 || ra == 1) {
			ret = rb == ra ? 0 : QW_EPROTO;
			if (ret)
				goto out;
			break;
		}
		if ((ret = qw_cascade_bob_consume(bob, ans, alen)) != 0)
			goto out;
	}
	qw_cascade_bob_stats(bob, &sb);
	qw_cascade_alice_stats(alice, &sa);
	if (sb.leaked_bits != sa.leaked_bits || sb.round_trips != sa.round_trips) {
		ret = QW_EPROTO;
		goto out;
	}
	if (st)
		*st = sb;
	ret = 0;
out:
	qw_cascade_bob_free(bob);
	qw_cascade_alice_free(alice);
	return ret;
}

/* ---- the distillation stage -------------------------------------------------- */

struct stage_state {
	struct qw_cascade_params p;
	/* Bob's layout seed, drawn once per stage instance. Layouts are
	 * public, so reuse costs no secrecy; it lets every block of a size
	 * use the cached permutation tables and BICONF sets, whose building
	 * (about 2 ms for n = 1e5) costs more than the reconciliation
	 * itself. A fresh seed per instance still keeps one fixed layout
	 * from serving a whole link's lifetime. */
	uint64_t seed;
};

static int stage_init(void **state, const void *params)
{
	struct stage_state *st = malloc(sizeof(*st));
	int ret;

	if (!st)
		return QW_ENOMEM;
	if (params)
		st->p = *(const struct qw_cascade_params *)params;
	else
		qw_cascade_params_init(&st->p, QW_CASCADE_OPTIMIZED);
	if ((ret = qw_random_bytes(&st->seed, sizeof(st->seed))) != 0) {
		free(st);
		return ret;
	}
	*state = st;
	return 0;
}

static void stage_free(void *state)
{
	free(state);
}

static int run_bob(const struct stage_state *ss, struct qw_key_block *b,
		   struct qw_distill_chan *chan, struct qw_cascade_stats *st)
{
	struct qw_cascade_bob *bob;
	uint8_t *ans = NULL;
	int ret;

	bob = qw_cascade_bob_new(&ss->p, b->key, b->qber_estimate, ss->seed);
	if (!bob)
		return QW_ENOMEM;
	for (;;) {
		const uint8_t *msg;
		size_t len, alen;
		uint32_t type;
		int rb = qw_cascade_bob_next(bob, &msg, &len);

		if (rb < 0) {
			ret = rb;
			goto out;
		}
		if ((ret = chan->send(chan->ctx, QW_CASCADE_CHAN_QUERY, msg, len)) != 0)
			goto out;
		if (rb == 1)
			break;
		if ((ret = chan->recv(chan->ctx, &type, &ans, &alen)) != 0)
			goto out;
		if (type != QW_CASCADE_CHAN_ANSWER) {
			ret = QW_EPROTO;
			goto out;
		}
		if ((ret = qw_cascade_bob_consume(bob, ans, alen)) != 0)
			goto out;
		free(ans);
		ans = NULL;
	}
	qw_cascade_bob_stats(bob, st);
	ret = 0;
out:
	free(ans);
	qw_cascade_bob_free(bob);
	return ret;
}

static int run_alice(struct qw_key_block *b, struct qw_distill_chan *chan,
		     struct qw_cascade_stats *st)
{
	struct qw_cascade_alice *alice = qw_cascade_alice_new(b->key);
	uint8_t *msg = NULL;
	int ret;

	if (!alice)
		return QW_ENOMEM;
	for (;;) {
		const uint8_t *ans;
		size_t len, alen;
		uint32_t type;
		int ra;

		if ((ret = chan->recv(chan->ctx, &type, &msg, &len)) != 0)
			goto out;
		if (type != QW_CASCADE_CHAN_QUERY) {
			ret = QW_EPROTO;
			goto out;
		}
		ra = qw_cascade_alice_answer(alice, msg, len, &ans, &alen);
		free(msg);
		msg = NULL;
		if (ra < 0) {
			ret = ra;
			goto out;
		}
		if (ra == 1)
			break;
		if ((ret = chan->send(chan->ctx, QW_CASCADE_CHAN_ANSWER, ans, alen)) != 0)
			goto out;
	}
	qw_cascade_alice_stats(alice, st);
	ret = 0;
out:
	free(msg);
	qw_cascade_alice_free(alice);
	return ret;
}

static enum qw_stage_result stage_process(void *state, struct qw_key_block *b,
					  struct qw_distill_chan *chan)
{
	const struct stage_state *ss = state;
	struct qw_cascade_stats st;
	int ret;

	if (!b || !b->key || !chan) {
		if (b)
			snprintf(b->drop_reason, sizeof(b->drop_reason), "cascade: no key or channel");
		return QW_STAGE_ERROR;
	}
	if (b->state != QW_BLOCK_RAW && b->state != QW_BLOCK_SIFTED) {
		snprintf(b->drop_reason, sizeof(b->drop_reason), "cascade: block in wrong state");
		return QW_STAGE_ERROR;
	}
	memset(&st, 0, sizeof(st));
	ret = b->role == QW_ROLE_BOB ? run_bob(ss, b, chan, &st) : run_alice(b, chan, &st);
	if (ret) {
		snprintf(b->drop_reason, sizeof(b->drop_reason), "cascade: %s", qw_strerror(ret));
		return QW_STAGE_ERROR;
	}
	b->ec_parity_bits += st.leaked_bits;
	b->disclosed_bits += st.leaked_bits;
	b->ec_round_trips += st.round_trips;
	b->qber_observed = b->key->nbits ? (double)st.corrected_bits / (double)b->key->nbits : 0;
	b->state = QW_BLOCK_CORRECTED;
	return QW_STAGE_FORWARD;
}

const struct qw_stage qw_cascade_stage = {
	.name = "cascade",
	.init = stage_init,
	.process = stage_process,
	.free = stage_free,
};
