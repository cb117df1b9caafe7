/* Error verification after reconciliation (include/qwave/toeplitz.h): both
 * ends hash their corrected key with a fresh public key of the polynomial
 * hash over GF(2^128) (include/qwave/uhash.h) and compare t-bit tags. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "qwave/rng.h"
#include "qwave/secmem.h"
#include "qwave/toeplitz.h"
#include "qwave/uhash.h"

#define VERIFY_DEFAULT_TAG_BITS 64
/* id (8) | nbits (8) | tag_bits (4) | hash key (16) | tag (ceil(t/8)) */
#define HASH_MSG_HDR (8 + 8 + 4 + QW_UHASH_KEY_BYTES)
/* id (8) | verdict (1) */
#define RESULT_MSG_LEN 9

void qw_verify_tag(const uint8_t hash_key[static 16], const struct qw_bitvec *key,
		   unsigned tag_bits, uint8_t tag[static 16])
{
	uint8_t h[QW_UHASH_BYTES];
	unsigned nbytes = (tag_bits + 7) / 8;

	QW_REQUIRE(tag_bits >= 1 && tag_bits <= 128);
	qw_uhash_bits(hash_key, key, h);
	memset(tag, 0, 16);
	memcpy(tag, h, nbytes);
	if (tag_bits & 7)
		tag[nbytes - 1] &= (uint8_t)((1u << (tag_bits & 7)) - 1);
	qw_wipe(h, sizeof(h));
}

unsigned qw_verify_tag_bits(uint64_t n_bits, double eps_cor)
{
	for (unsigned t = 1; t <= 128; t++)
		if (qw_uhash_collision_bound(n_bits, t) <= eps_cor)
			return t;
	return 0;
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
	for (int i = n - 1; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

struct verify_state {
	unsigned tag_bits;
	struct qw_rng *rng;
};

static int verify_init(void **state, const void *params)
{
	const struct qw_verify_params *p = params;
	struct verify_state *s;

	if (p && p->tag_bits > 128)
		return QW_EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return QW_ENOMEM;
	s->tag_bits = p && p->tag_bits ? p->tag_bits : VERIFY_DEFAULT_TAG_BITS;
	s->rng = p ? p->rng : NULL;
	*state = s;
	return 0;
}

static void verify_free(void *state)
{
	free(state);
}

static enum qw_stage_result drop(struct qw_key_block *b, const char *why)
{
	snprintf(b->drop_reason, sizeof(b->drop_reason), "%s", why);
	return QW_STAGE_DROP;
}

static enum qw_stage_result finish(struct qw_key_block *b, const struct verify_state *s,
				   int match)
{
	/* The tag is public: t more bits known to Eve (either way). */
	b->disclosed_bits += s->tag_bits;
	if (!match)
		return drop(b, "verification hash mismatch");
	b->state = QW_BLOCK_VERIFIED;
	return QW_STAGE_FORWARD;
}

static enum qw_stage_result alice(const struct verify_state *s, struct qw_key_block *b,
				  struct qw_distill_chan *chan)
{
	size_t tbytes = (s->tag_bits + 7) / 8, len = HASH_MSG_HDR + tbytes;
	uint8_t msg[HASH_MSG_HDR + 16], tag[16], *reply = NULL;
	uint32_t type;
	size_t rlen;
	enum qw_stage_result res = QW_STAGE_ERROR;
	int err;

	put_be(msg, b->id, 8);
	put_be(msg + 8, b->key->nbits, 8);
	put_be(msg + 16, s->tag_bits, 4);
	/* A fresh key per block, drawn after the keys are fixed: the bound
	 * needs the key independent of the (possibly adversarial) errors. */
	err = s->rng ? qw_rng_bytes(s->rng, msg + 20, QW_UHASH_KEY_BYTES)
		     : qw_random_bytes(msg + 20, QW_UHASH_KEY_BYTES);
	if (err)
		goto out;
	qw_verify_tag(msg + 20, b->key, s->tag_bits, tag);
	memcpy(msg + HASH_MSG_HDR, tag, tbytes);
	if (chan->send(chan->ctx, QW_MSG_VERIFY_HASH, msg, len))
		goto out;
	if (chan->recv(chan->ctx, &type, &reply, &rlen))
		goto out;
	if (type != QW_MSG_VERIFY_RESULT || rlen != RESULT_MSG_LEN ||
	    get_be(reply, 8) != b->id || reply[8] > 1)
		goto out;
	res = finish(b, s, reply[8] == 1);
out:
	qw_wipe(tag, sizeof(tag));
	free(reply);
	return res;
}

static enum qw_stage_result bob(const struct verify_state *s, struct qw_key_block *b,
				struct qw_distill_chan *chan)
{
	size_t tbytes = (s->tag_bits + 7) / 8, len;
	uint8_t *msg = NULL, mine[16], verdict[RESULT_MSG_LEN];
	uint32_t type;
	enum qw_stage_result res = QW_STAGE_ERROR;
	int match;

	if (chan->recv(chan->ctx, &type, &msg, &len))
		goto out;
	if (type != QW_MSG_VERIFY_HASH || len != HASH_MSG_HDR + tbytes ||
	    get_be(msg, 8) != b->id || get_be(msg + 8, 8) != b->key->nbits ||
	    get_be(msg + 16, 4) != s->tag_bits)
		goto out;
	qw_verify_tag(msg + 20, b->key, s->tag_bits, mine);
	match = CRYPTO_memcmp(mine, msg + HASH_MSG_HDR, tbytes) == 0;
	put_be(verdict, b->id, 8);
	verdict[8] = (uint8_t)match;
	if (chan->send(chan->ctx, QW_MSG_VERIFY_RESULT, verdict, sizeof(verdict)))
		goto out;
	res = finish(b, s, match);
out:
	qw_wipe(mine, sizeof(mine));
	free(msg);
	return res;
}

static enum qw_stage_result verify_process(void *state, struct qw_key_block *b,
					   struct qw_distill_chan *chan)
{
	const struct verify_state *s = state;

	QW_REQUIRE(s && b && chan);
	if (b->state != QW_BLOCK_CORRECTED || !b->key || b->key->nbits == 0)
		return QW_STAGE_ERROR;
	return b->role == QW_ROLE_ALICE ? alice(s, b, chan) : bob(s, b, chan);
}

const struct qw_stage qw_stage_verify = {
	.name = "verify",
	.init = verify_init,
	.process = verify_process,
	.free = verify_free,
};
