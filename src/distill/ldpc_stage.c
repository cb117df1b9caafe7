/* The "ldpc" distillation stage: LDPC reconciliation of one key block over
 * a struct qw_distill_chan (Alice sends, Bob decodes and answers). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distill/ldpc_internal.h"

static int stage_init(void **state, const void *params)
{
	struct qw_ldpc_params *p = malloc(sizeof(*p));

	if (!p)
		return QW_ENOMEM;
	if (params)
		*p = *(const struct qw_ldpc_params *)params;
	else
		qw_ldpc_params_init(p);
	*state = p;
	return 0;
}

static void stage_free(void *state)
{
	free(state);
}

static int run_alice(const struct qw_ldpc_params *p, struct qw_key_block *b,
		     struct qw_distill_chan *chan, struct qw_ldpc_stats *st, uint8_t **ok)
{
	struct qw_rng *rng = qw_rng_new_system();
	struct qw_ldpc_alice *alice = NULL;
	uint8_t *res = NULL;
	const uint8_t *msg;
	size_t len;
	int ret = QW_ENOMEM;

	if (!rng)
		return QW_ECRYPTO;
	if (!(alice = qw_ldpc_alice_new(p, b->key, b->qber_estimate, rng, &ret)))
		goto out;
	if ((ret = qw_ldpc_alice_syndrome(alice, &msg, &len)) != 0 ||
	    (ret = chan->send(chan->ctx, QW_LDPC_CHAN_SYNDROME, msg, len)) != 0)
		goto out;
	for (;;) {
		uint32_t type;
		size_t rlen;
		int ra;

		if ((ret = chan->recv(chan->ctx, &type, &res, &rlen)) != 0)
			goto out;
		if (type != QW_LDPC_CHAN_RESULT) {
			ret = QW_EPROTO;
			goto out;
		}
		ra = qw_ldpc_alice_consume(alice, res, rlen, &msg, &len);
		free(res);
		res = NULL;
		if (ra < 0) {
			ret = ra;
			goto out;
		}
		if (ra == 1)
			break;
		if ((ret = chan->send(chan->ctx, QW_LDPC_CHAN_REVEAL, msg, len)) != 0)
			goto out;
	}
	qw_ldpc_alice_stats(alice, st);
	if (!(*ok = malloc(st->frames ? st->frames : 1))) {
		ret = QW_ENOMEM;
		goto out;
	}
	for (uint32_t f = 0; f < st->frames; f++)
		(*ok)[f] = (uint8_t)qw_ldpc_alice_frame_ok(alice, f);
	ret = 0;
out:
	free(res);
	qw_ldpc_alice_free(alice);
	qw_rng_free(rng);
	return ret;
}

static int run_bob(const struct qw_ldpc_params *p, struct qw_key_block *b,
		   struct qw_distill_chan *chan, struct qw_ldpc_stats *st, uint8_t **ok)
{
	struct qw_ldpc_bob *bob = qw_ldpc_bob_new(p, b->key);
	uint8_t *msg = NULL;
	int ret;

	if (!bob)
		return b->key->nbits == 0 ? QW_EINVAL : QW_ENOMEM;
	for (;;) {
		const uint8_t *rep;
		size_t len, rlen;
		uint32_t type;
		int rb;

		if ((ret = chan->recv(chan->ctx, &type, &msg, &len)) != 0)
			goto out;
		if (type != QW_LDPC_CHAN_SYNDROME && type != QW_LDPC_CHAN_REVEAL) {
			ret = QW_EPROTO;
			goto out;
		}
		rb = qw_ldpc_bob_decode(bob, msg, len, &rep, &rlen);
		free(msg);
		msg = NULL;
		if (rb < 0) {
			ret = rb;
			goto out;
		}
		if ((ret = chan->send(chan->ctx, QW_LDPC_CHAN_RESULT, rep, rlen)) != 0)
			goto out;
		if (rb == 1)
			break;
	}
	qw_ldpc_bob_stats(bob, st);
	if (!(*ok = malloc(st->frames ? st->frames : 1))) {
		ret = QW_ENOMEM;
		goto out;
	}
	for (uint32_t f = 0; f < st->frames; f++)
		(*ok)[f] = (uint8_t)qw_ldpc_bob_frame_ok(bob, f);
	ret = 0;
out:
	free(msg);
	qw_ldpc_bob_free(bob);
	return ret;
}

/* Keep only the bits of decoded frames (both parties do the same). */
static int compact(struct qw_bitvec *key, uint32_t frames, const uint8_t *ok, size_t *kept)
{
	size_t nbits = key->nbits, w = 0;

	for (uint32_t f = 0; f < frames; f++) {
		size_t off, len;

		qw_ldpc_frame_span(nbits, frames, f, &off, &len);
		if (!ok[f])
			continue;
		if (w != off)
			for (size_t t = 0; t < len; t++)
				qw_bitvec_set(key, w + t, qw_bitvec_get(key, off + t));
		w += len;
	}
	*kept = w;
	return qw_bitvec_resize(key, w);
}

static enum qw_stage_result stage_process(void *state, struct qw_key_block *b,
					  struct qw_distill_chan *chan)
{
	const struct qw_ldpc_params *p = state;
	struct qw_ldpc_stats st;
	uint8_t *ok = NULL;
	size_t kept;
	enum qw_stage_result res = QW_STAGE_ERROR;
	int ret;

	if (!b || !b->key || !chan) {
		if (b)
			snprintf(b->drop_reason, sizeof(b->drop_reason), "ldpc: no key or channel");
		return QW_STAGE_ERROR;
	}
	if (b->state != QW_BLOCK_RAW && b->state != QW_BLOCK_SIFTED) {
		snprintf(b->drop_reason, sizeof(b->drop_reason), "ldpc: block in wrong state");
		return QW_STAGE_ERROR;
	}
	/* Both ends hold the same estimate, so both see a QBER no code can
	 * handle and drop without a message (Bob would otherwise wait). */
	{
		unsigned ri;
		size_t pp;
		uint32_t fr;

		ret = b->key->nbits ? qw_ldpc_choose(p, b->qber_estimate, b->key->nbits, &ri, &pp, &fr)
				    : QW_EINVAL;
		if (ret == QW_ERANGE) {
			snprintf(b->drop_reason, sizeof(b->drop_reason),
				 "ldpc: QBER estimate %.4f too high for the codes", b->qber_estimate);
			return QW_STAGE_DROP;
		}
		if (ret) {
			snprintf(b->drop_reason, sizeof(b->drop_reason), "ldpc: %s", qw_strerror(ret));
			return QW_STAGE_ERROR;
		}
	}
	memset(&st, 0, sizeof(st));
	ret = b->role == QW_ROLE_BOB ? run_bob(p, b, chan, &st, &ok)
				     : run_alice(p, b, chan, &st, &ok);
	if (ret) {
		snprintf(b->drop_reason, sizeof(b->drop_reason), "ldpc: %s", qw_strerror(ret));
		goto out;
	}
	/* Every syndrome sent counts, including those of failed frames. */
	b->ec_parity_bits += st.leaked_bits;
	b->disclosed_bits += st.leaked_bits;
	b->ec_round_trips += st.round_trips;
	if (st.frame_errors) {
		if (!p->keep_partial || st.frame_errors == st.frames) {
			snprintf(b->drop_reason, sizeof(b->drop_reason),
				 "LDPC decoding failed (%u of %u frames)", st.frame_errors,
				 st.frames);
			res = QW_STAGE_DROP;
			goto out;
		}
		if (compact(b->key, st.frames, ok, &kept)) {
			snprintf(b->drop_reason, sizeof(b->drop_reason), "ldpc: out of memory");
			goto out;
		}
	}
	b->qber_observed = b->key->nbits ? (double)st.corrected_bits / (double)b->key->nbits : 0;
	b->state = QW_BLOCK_CORRECTED;
	res = QW_STAGE_FORWARD;
out:
	free(ok);
	return res;
}

const struct qw_stage qw_ldpc_stage = {
	.name = "ldpc",
	.init = stage_init,
	.process = stage_process,
	.free = stage_free,
};
