/* Over-the-air key refill: the protocol of include/qwave/refill.h at both
 * ends, and the terminal's sealed key balance. docs/plkg.md section 12. */
#include "qwave/refill.h"

#include <complex.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "qwave/aead.h"
#include "qwave/encoding.h"
#include "qwave/hash.h"
#include "qwave/ksc.h"
#include "qwave/plkg_channel.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"
#include "qwave/uhash.h"

enum {
	MSG_HELLO = 0x52460001,
	MSG_DELIVER = 0x52460002,
	MSG_ACK = 0x52460003,
	MSG_COV = 0x52460004,
};

/* HELLO flags byte (10th byte): the terminal is still; the AP then uses
 * the random-weights remedy (docs/plkg.md section 8) and sends its first
 * window's sample covariance (MSG_COV) before either end quantizes. */
#define HELLO_STATIC 0x01

/* The one PLKG block of a refill (stream 0 is the refill's own messages). */
#define BLOCK_ID 1

static const char mac_label[] = "qwave-refill";
static const char bal_aad[] = "qwave-refill-balance";
static const char carry_aad[] = "qwave-refill-carry";

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

void qw_refill_params_default(struct qw_refill_params *p)
{
	QW_REQUIRE(p);
	memset(p, 0, sizeof(*p));
	qw_plkg_params_default(&p->plkg);
	qw_plkg_params_for(&p->plkg, QW_PLKG_REC_BCH);
	p->air_seed = 1;
	p->max_probes = 4000;
	p->recv_timeout_ms = 5000;
}

int qw_refill_needed(uint64_t balance_bits, uint64_t threshold_bits)
{
	return balance_bits < threshold_bits;
}

/* ---- the delivery message ---------------------------------------------- */

static void mac_input_tag(const uint8_t *k, const uint8_t *body, size_t len,
			  uint8_t tag[QW_WCMAC_TAG_BYTES], int *err)
{
	struct qw_wcmac *m = qw_wcmac_new(k);
	uint8_t *msg = malloc(sizeof(mac_label) - 1 + len);

	*err = QW_ENOMEM;
	if (m && msg) {
		memcpy(msg, mac_label, sizeof(mac_label) - 1);
		memcpy(msg + sizeof(mac_label) - 1, body, len);
		qw_wcmac_tag(m, k + QW_WCMAC_KEY_BYTES, msg, sizeof(mac_label) - 1 + len, tag);
		*err = 0;
	}
	free(msg); /* ciphertext only: public */
	qw_wcmac_free(m);
}

int qw_refill_seal(const uint8_t *k, size_t klen, const uint8_t *keys, uint64_t nbits,
		   uint8_t *out, size_t cap, size_t *outlen)
{
	size_t n = (size_t)(nbits / 8), off = QW_REFILL_MAC_BITS / 8;
	int err;

	QW_REQUIRE(k && out && outlen && (keys || !nbits));
	if (nbits % 8 || klen < off + n || cap < 8 + n + QW_WCMAC_TAG_BYTES)
		return QW_ERANGE;
	put_be64(out, nbits);
	for (size_t i = 0; i < n; i++)
		out[8 + i] = keys[i] ^ k[off + i];
	mac_input_tag(k, out, 8 + n, out + 8 + n, &err);
	if (err)
		return err;
	*outlen = 8 + n + QW_WCMAC_TAG_BYTES;
	return 0;
}

int qw_refill_open(const uint8_t *k, size_t klen, const uint8_t *msg, size_t len,
		   uint8_t *keys, size_t cap, uint64_t *nbits)
{
	size_t n, off = QW_REFILL_MAC_BITS / 8;
	uint8_t tag[QW_WCMAC_TAG_BYTES];
	uint64_t bits;
	int err;

	QW_REQUIRE(k && msg && nbits);
	if (len < 8 + QW_WCMAC_TAG_BYTES)
		return QW_EPARSE;
	bits = get_be64(msg);
	if (bits % 8 || bits / 8 != len - 8 - QW_WCMAC_TAG_BYTES)
		return QW_EPARSE;
	n = (size_t)(bits / 8);
	if (klen < off + n || cap < n || (n && !keys))
		return QW_ERANGE;
	mac_input_tag(k, msg, 8 + n, tag, &err);
	if (err)
		return err;
	/* Wegman-Carter: the tag is verified before anything is decrypted */
	if (CRYPTO_memcmp(tag, msg + 8 + n, sizeof(tag)))
		return QW_EAUTH;
	for (size_t i = 0; i < n; i++)
		keys[i] = msg[8 + i] ^ k[off + i];
	*nbits = bits;
	return 0;
}

/* ---- the distillation chain over the framed connection ------------------ */

struct fchan {
	struct qw_frame_conn *c;
	uint64_t stream;
};

static int fchan_send(void *ctx, uint32_t type, const uint8_t *msg, size_t len)
{
	struct fchan *f = ctx;

	return qw_frame_send(f->c, QW_FRAME_DATA, type, f->stream, msg, len);
}

static int fchan_recv(void *ctx, uint32_t *type, uint8_t **msg, size_t *len)
{
	struct fchan *f = ctx;
	struct qw_frame fr;
	int ret = qw_frame_recv(f->c, &fr);

	if (ret)
		return ret;
	if (fr.kind == QW_FRAME_DROP) {
		qw_frame_release(&fr);
		return QW_EABORT;
	}
	if (fr.kind != QW_FRAME_DATA || fr.stream != f->stream) {
		qw_frame_release(&fr);
		return QW_EPROTO;
	}
	*type = fr.type;
	*len = fr.len;
	*msg = malloc(fr.len ? fr.len : 1);
	if (!*msg) {
		qw_frame_release(&fr);
		return QW_ENOMEM;
	}
	if (fr.len)
		memcpy(*msg, fr.body, fr.len);
	qw_frame_release(&fr);
	return 0;
}

/* Receive the next stream-0 message of type want into *f. */
static int recv_msg(struct qw_frame_conn *c, uint32_t want, struct qw_frame *f)
{
	int ret = qw_frame_recv(c, f);

	if (ret)
		return ret;
	if (f->kind == QW_FRAME_DROP) {
		qw_frame_release(f);
		return QW_EABORT;
	}
	if (f->kind != QW_FRAME_DATA || f->stream != 0 || f->type != want) {
		qw_frame_release(f);
		return QW_EPROTO;
	}
	return 0;
}

struct side {
	struct qw_refill_params pb; /* p with the refill's block size */
	const struct qw_refill_params *p;
	enum qw_role role;
	struct qw_auth_pool *pool;
	struct qw_frame_conn *conn;
	struct qw_refill_result *res;
	uint8_t *key;     /* the PLKG key, bytes */
	size_t keylen;
	uint64_t keybits;
};

static void set_reason(struct qw_refill_result *r, const char *s)
{
	snprintf(r->reason, sizeof(r->reason), "%s", s);
}

/* ---- the quasi-static remedy over the air (docs/plkg.md 6.4 and 8) ------
 * The AP's n_elements antenna elements, each a channel realisation of its
 * own, are combined every probe round with fresh random complex weights
 * w_e ~ CN(0, 1/N), held for the round's two TDD pilots. In this
 * simulation both ends draw the same weights from air_seed: the weights
 * are the AP's secret, but the terminal experiences them through the
 * channel, which is what the simulation stands for. Each end computes only
 * its own estimate (the AP: of the terminal's pilot, tdd_delay_s later),
 * with its own noise. */
struct remedy {
	struct qw_plkg_channel **ch;
	unsigned n;
	struct qw_rng *w_rng, *noise_rng;
	double complex *w, *tmp;
	double sigma2;
};

static void remedy_free(struct remedy *r)
{
	for (unsigned e = 0; r->ch && e < r->n; e++)
		qw_plkg_channel_free(r->ch[e]);
	free(r->ch);
	qw_rng_free(r->w_rng);
	qw_rng_free(r->noise_rng);
	if (r->w)
		qw_wipe(r->w, r->n * sizeof(*r->w));
	free(r->w);
	free(r->tmp);
	memset(r, 0, sizeof(*r));
}

static int remedy_new(struct remedy *r, const struct qw_refill_params *p, enum qw_role role)
{
	const struct qw_plkg_config *c = &p->plkg.chan;
	int ret;

	memset(r, 0, sizeof(*r));
	r->n = p->plkg.n_elements ? p->plkg.n_elements : 1;
	r->ch = calloc(r->n, sizeof(*r->ch));
	r->w = malloc(r->n * sizeof(*r->w));
	r->tmp = malloc(c->n_sc * sizeof(*r->tmp));
	r->w_rng = qw_rng_new_seeded(p->air_seed ^ 0x5752454d45445931ull);
	r->noise_rng = qw_rng_new_seeded(p->air_seed ^ (role == QW_ROLE_ALICE ?
							0x414c494345000001ull :
							0x424f420000000002ull));
	if (!r->ch || !r->w || !r->tmp || !r->w_rng || !r->noise_rng)
		return QW_ENOMEM;
	for (unsigned e = 0; e < r->n; e++)
		if ((ret = qw_plkg_channel_new(&r->ch[e], c, p->air_seed + 0x9e3779b97f4a7c15ull * e)))
			return ret;
	r->sigma2 = qw_plkg_ls_error_var(c, c->snr_db);
	return 0;
}

static double complex cgauss(struct qw_rng *r, double var)
{
	double sd = sqrt(var / 2.0);
	double re = sd * qw_rng_gaussian(r);

	return re + I * (sd * qw_rng_gaussian(r));
}

static void remedy_probe(struct remedy *r, const struct qw_plkg_config *c, enum qw_role role,
			 uint64_t n, double complex *mine)
{
	double t = (double)n / c->probe_rate_hz + (role == QW_ROLE_ALICE ? c->tdd_delay_s : 0);

	for (unsigned e = 0; e < r->n; e++)
		r->w[e] = cgauss(r->w_rng, 1.0 / r->n);
	memset(mine, 0, c->n_sc * sizeof(*mine));
	for (unsigned e = 0; e < r->n; e++) {
		qw_plkg_channel_freq(r->ch[e], QW_PLKG_LINK_AB, t, r->tmp);
		for (unsigned k = 0; k < c->n_sc; k++)
			mine[k] += r->w[e] * r->tmp[k];
	}
	for (unsigned k = 0; k < c->n_sc; k++)
		mine[k] += cgauss(r->noise_rng, r->sigma2);
}

/* The covariance message: n_sc x n_sc complex values, each as two IEEE-754
 * binary64 in big-endian order (public). */
static void put_f64(uint8_t *p, double d)
{
	uint64_t v;

	memcpy(&v, &d, sizeof(v));
	put_be64(p, v);
}

static double get_f64(const uint8_t *p)
{
	uint64_t v = get_be64(p);
	double d;

	memcpy(&d, &v, sizeof(d));
	return d;
}

/* Alice sends her first window's sample covariance; Bob receives it; both
 * set the basis from it (the same matrix at both ends). */
static int exchange_cov(struct side *s, struct qw_plkg_end *e)
{
	unsigned n = s->p->plkg.chan.n_sc;
	size_t cells = (size_t)n * n, len = cells * 16;
	double complex *cov = malloc(cells * sizeof(*cov));
	uint8_t *msg = NULL;
	struct qw_frame f = { 0 };
	int ret = QW_ENOMEM;

	if (!cov)
		return QW_ENOMEM;
	if (s->role == QW_ROLE_ALICE) {
		msg = malloc(len);
		if (!msg)
			goto out;
		if ((ret = qw_plkg_end_sample_cov(e, cov)))
			goto out;
		for (size_t i = 0; i < cells; i++) {
			put_f64(msg + 16 * i, creal(cov[i]));
			put_f64(msg + 16 * i + 8, cimag(cov[i]));
		}
		ret = qw_frame_send(s->conn, QW_FRAME_DATA, MSG_COV, 0, msg, len);
	} else {
		ret = recv_msg(s->conn, MSG_COV, &f);
		if (!ret && f.len != len)
			ret = QW_EPROTO;
		for (size_t i = 0; !ret && i < cells; i++) {
			cov[i] = get_f64(f.body + 16 * i) + I * get_f64(f.body + 16 * i + 8);
			if (!isfinite(creal(cov[i])) || !isfinite(cimag(cov[i])))
				ret = QW_EPROTO;
		}
	}
	if (!ret)
		ret = qw_plkg_end_set_cov(e, cov);
out:
	qw_frame_release(&f);
	free(msg);
	free(cov);
	return ret;
}

/* Probe until this end's builder cuts a block: only this end's own
 * estimate of each probe round is used. */
static int probe_block(struct side *s, struct qw_key_block **blk)
{
	const struct qw_plkg_params *pp = &s->p->plkg;
	struct qw_plkg_channel *ch = NULL;
	struct qw_plkg_end *e = NULL;
	struct qw_plkg_kdr kdr;
	struct remedy rem = { 0 };
	double complex *mine = NULL, *other = NULL;
	int ret, remedy = pp->remedy == QW_PLKG_REMEDY_RANDOM_WEIGHTS, have_basis = 0;

	*blk = NULL;
	ret = remedy ? remedy_new(&rem, s->p, s->role) :
		       qw_plkg_channel_new(&ch, &pp->chan, s->p->air_seed);
	if (ret)
		goto out;
	ret = qw_plkg_end_new(&e, pp);
	if (ret)
		goto out;
	ret = QW_ENOMEM;
	mine = malloc(pp->chan.n_sc * sizeof(*mine));
	other = malloc(pp->chan.n_sc * sizeof(*other));
	if (!mine || !other)
		goto out;
	qw_plkg_kdr_init(&kdr, pp, qw_plkg_end_model_kdr(e));
	ret = QW_EAGAIN;
	while (s->res->probes < s->p->max_probes) {
		/* The simulator computes a probe round's two estimates together;
		 * the end keeps its own and wipes the peer's unread, as a radio
		 * would never have it. */
		struct qw_plkg_probe pr = { 0, s->role == QW_ROLE_ALICE ? mine : other,
					    s->role == QW_ROLE_ALICE ? other : mine, NULL, NULL };
		int r;

		if (s->p->should_stop && s->p->should_stop(s->p->stop_arg)) {
			set_reason(s->res, "stopped");
			ret = QW_EABORT;
			goto out;
		}
		if (remedy)
			remedy_probe(&rem, &pp->chan, s->role, s->res->probes, mine);
		else
			qw_plkg_probe_next(ch, &pr);
		qw_wipe(other, pp->chan.n_sc * sizeof(*other));
		s->res->probes++;
		r = qw_plkg_end_push(e, mine);
		if (r < 0) {
			ret = r;
			goto out;
		}
		if (!r)
			continue;
		if (remedy && !have_basis) {
			r = exchange_cov(s, e);
			if (r) {
				if (!s->res->reason[0])
					set_reason(s->res, "covariance message failed");
				ret = r;
				goto out;
			}
			have_basis = 1;
			/* the model KDR exists only with a basis (the same at
			 * both ends: the same matrix) */
			qw_plkg_kdr_init(&kdr, pp, qw_plkg_end_model_kdr(e));
		}
		r = qw_plkg_end_quantize(e, NULL, NULL, NULL);
		if (!r)
			r = qw_plkg_end_take_block(e, BLOCK_ID, s->role, kdr.est, 0, blk);
		if (r) {
			ret = r;
			goto out;
		}
		if (*blk) {
			ret = 0;
			break;
		}
	}
	if (ret == QW_EAGAIN)
		set_reason(s->res, "no PLKG block within max_probes");
out:
	if (mine)
		qw_wipe(mine, pp->chan.n_sc * sizeof(*mine));
	free(mine);
	free(other);
	qw_plkg_end_free(e);
	qw_plkg_channel_free(ch);
	remedy_free(&rem);
	return ret;
}

/* Probe, then run the block through the chain with the peer: s->key gets
 * the PLKG key. */
static int make_key(struct side *s)
{
	struct qw_plkg_stage_storage st;
	const struct qw_stage *stages[QW_PLKG_MAX_STAGES];
	const void *params[QW_PLKG_MAX_STAGES];
	void *states[QW_PLKG_MAX_STAGES] = { 0 };
	struct fchan fc = { s->conn, BLOCK_ID };
	struct qw_distill_chan chan = { &fc, fchan_send, fchan_recv };
	struct qw_key_block *b = NULL;
	enum qw_stage_result r = QW_STAGE_ERROR;
	size_t n, i;
	int ret = probe_block(s, &b);

	if (ret)
		return ret;
	s->res->raw_bits = b->key->nbits;
	n = qw_plkg_stages(&s->p->plkg, &st, stages, params);
	ret = QW_ENOMEM;
	for (i = 0; i < n; i++)
		if (stages[i]->init(&states[i], params[i]))
			goto out;
	for (i = 0; i < n; i++) {
		r = stages[i]->process(states[i], b, &chan);
		if (r != QW_STAGE_FORWARD)
			break;
	}
	s->res->disclosed_bits = b->disclosed_bits;
	if (r != QW_STAGE_FORWARD || b->state != QW_BLOCK_AMPLIFIED) {
		const char *why = b->drop_reason[0] ? b->drop_reason : "stage error";

		set_reason(s->res, why);
		/* the peer's waiting stage sees QW_EABORT (a failed send means the
		 * connection is gone anyway) */
		ret = qw_frame_send(s->conn, QW_FRAME_DROP, 0, BLOCK_ID, (const uint8_t *)why,
				    strlen(why));
		ret = QW_EABORT;
		goto out;
	}
	s->keybits = b->key->nbits;
	s->keylen = (b->key->nbits + 7) / 8;
	s->key = qw_secure_alloc(s->keylen ? s->keylen : 1);
	if (!s->key)
		goto out;
	qw_bitvec_to_bytes(b->key, s->key);
	s->res->plkg_bits = s->keybits;
	ret = qw_hash(QW_HASH_SM3, s->key, s->keylen, s->res->plkg_fingerprint);
out:
	for (i = 0; i < n; i++)
		if (states[i])
			stages[i]->free(states[i]);
	qw_block_free(b);
	return ret;
}

static int side_open(struct side *s, const struct qw_refill_params *p, enum qw_role role,
		     const struct qw_frame_io *io, const uint8_t *psk, size_t psklen,
		     struct qw_refill_result *res)
{
	int err = 0;

	memset(s, 0, sizeof(*s));
	memset(res, 0, sizeof(*res));
	s->pb = *p;
	s->p = &s->pb;
	s->role = role;
	s->res = res;
	if (psklen != QW_REFILL_PSK_BYTES || qw_plkg_params_check(&p->plkg))
		return QW_EINVAL;
	s->pool = qw_auth_pool_new(psk, psklen, 1, &err);
	if (!s->pool)
		return err;
	s->conn = qw_frame_conn_new(io, s->pool, role,
				    p->recv_timeout_ms > 0 ? p->recv_timeout_ms : 5000);
	return s->conn ? 0 : QW_ENOMEM;
}

/* Both ends size the block from the request in the HELLO. */
static void size_block(struct side *s, uint64_t want, int carry)
{
	uint64_t raw = (want + QW_REFILL_MAC_BITS + (carry ? QW_REFILL_CARRY_BITS : 0)) *
		       QW_REFILL_RAW_PER_BIT;

	if (raw > s->pb.plkg.block_bits)
		s->pb.plkg.block_bits = (size_t)raw;
	/* a window gives at least 4 raw bits per probe on any usable channel */
	if (s->pb.max_probes < s->pb.plkg.block_bits / 4)
		s->pb.max_probes = s->pb.plkg.block_bits / 4;
}

static void side_close(struct side *s)
{
	if (s->conn) {
		s->res->frames_sent = qw_frame_conn_sent(s->conn);
		s->res->frames_received = qw_frame_conn_received(s->conn);
	}
	if (s->pool) {
		struct qw_auth_pool_stats st;

		qw_auth_pool_stats(s->pool, &st);
		s->res->pad_bits_used = (st.consumed[0] + st.consumed[1]) * 8;
	}
	qw_frame_conn_free(s->conn);
	qw_auth_pool_free(s->pool);
	if (s->key)
		qw_secure_free(s->key, s->keylen ? s->keylen : 1);
	s->key = NULL;
}

/* Bits delivered: whole slots, within the request and within the key once
 * the MAC's 256 bits (and, with carry, the next refill's frame
 * authentication pool) are taken; both ends compute it from public facts. */
static uint64_t carry_bits(uint64_t want, uint64_t keybits, int carry)
{
	uint64_t res = QW_REFILL_MAC_BITS + (carry ? QW_REFILL_CARRY_BITS : 0);
	uint64_t room = keybits > res ? keybits - res : 0;
	uint64_t n = want < room ? want : room;

	return n - n % QW_REFILL_UNIT_BITS;
}

static void carry_reset(struct qw_refill_carry *c)
{
	if (c)
		qw_wipe(c, sizeof(*c));
}

int qw_refill_ap(const struct qw_refill_params *p, const struct qw_frame_io *io,
		 const uint8_t *psk, size_t psklen, uint64_t max_bits,
		 const struct qw_refill_source *src, struct qw_refill_result *res)
{
	return qw_refill_ap_carry(p, io, psk, psklen, max_bits, src, NULL, res);
}

int qw_refill_ap_carry(const struct qw_refill_params *p, const struct qw_frame_io *io,
		       const uint8_t *psk, size_t psklen, uint64_t max_bits,
		       const struct qw_refill_source *src, struct qw_refill_carry *next,
		       struct qw_refill_result *res)
{
	struct qw_refill_result local;
	struct side s;
	struct qw_frame f = { 0 };
	uint8_t *keys = NULL, *msg = NULL;
	uint64_t want = 0, n = 0;
	size_t msglen = 0;
	int ret, carry = 0;

	QW_REQUIRE(p && io && psk && src && src->get);
	carry_reset(next);
	if (!res)
		res = &local;
	ret = side_open(&s, p, QW_ROLE_ALICE, io, psk, psklen, res);
	if (ret)
		goto out;
	ret = recv_msg(s.conn, MSG_HELLO, &f);
	if (ret)
		goto out;
	/* a 9th byte 1: the terminal asks for the next refill's pool; a 10th
	 * byte: flags (HELLO_STATIC: a still terminal, use the remedy) */
	if (f.len >= 9 && f.len <= 10 && f.body[8] == 1)
		carry = 1;
	if ((f.len != 8 && f.len != 9 && f.len != 10) || (f.len >= 9 && f.body[8] > 1) ||
	    (f.len == 10 && (f.body[9] & ~HELLO_STATIC)) || !(want = get_be64(f.body)) ||
	    want % QW_REFILL_UNIT_BITS) {
		ret = QW_EPROTO;
		goto out;
	}
	if (f.len == 10 && (f.body[9] & HELLO_STATIC)) {
		/* the same still channel at both ends, and the AP's weights */
		s.pb.plkg.chan.speed_kmh = 0;
		s.pb.plkg.remedy = QW_PLKG_REMEDY_RANDOM_WEIGHTS;
		res->remedy = 1;
	}
	if (want > (1u << 24)) {
		ret = QW_EPROTO;
		goto out;
	}
	size_block(&s, want, carry);
	if (max_bits && want > max_bits)
		want = max_bits - max_bits % QW_REFILL_UNIT_BITS;
	ret = make_key(&s);
	if (ret)
		goto out;
	n = carry_bits(want, s.keybits, carry);
	if (!n) {
		set_reason(res, "PLKG key too short for one slot");
		ret = QW_EAGAIN;
		goto out;
	}
	ret = QW_ENOMEM;
	keys = qw_secure_alloc((size_t)(n / 8));
	msg = malloc(8 + (size_t)(n / 8) + QW_WCMAC_TAG_BYTES);
	if (!keys || !msg)
		goto out;
	ret = src->get(src->ctx, keys, (size_t)(n / 8));
	if (!ret)
		ret = qw_refill_seal(s.key, s.keylen, keys, n, msg,
				     8 + (size_t)(n / 8) + QW_WCMAC_TAG_BYTES, &msglen);
	if (!ret)
		ret = qw_frame_send(s.conn, QW_FRAME_DATA, MSG_DELIVER, 0, msg, msglen);
	if (ret)
		goto out;
	qw_frame_release(&f);
	ret = recv_msg(s.conn, MSG_ACK, &f);
	if (ret)
		goto out;
	if (f.len < 1 || f.body[0] != 0) {
		set_reason(res, "the terminal rejected the delivery's MAC");
		ret = QW_EAUTH;
		goto out;
	}
	if (f.len != (carry ? 1 + QW_REFILL_CARRY_ID_BYTES : 1)) {
		ret = QW_EPROTO;
		goto out;
	}
	/* the ACK is the commit point: only now does the AP hold the carried
	 * pool K[256 + n, 256 + n + QW_REFILL_CARRY_BITS) */
	if (carry) {
		if (next) {
			memcpy(next->pool, s.key + (QW_REFILL_MAC_BITS + n) / 8, QW_REFILL_PSK_BYTES);
			memcpy(next->id, f.body + 1, QW_REFILL_CARRY_ID_BYTES);
			next->valid = 1;
		}
		res->carried_bits = QW_REFILL_CARRY_BITS;
	}
	res->delivered_bits = n;
out:
	if (ret && !res->reason[0])
		set_reason(res, qw_strerror(ret));
	qw_frame_release(&f);
	if (keys)
		qw_secure_free(keys, (size_t)(n / 8));
	free(msg);
	side_close(&s);
	return ret;
}

int qw_refill_terminal(const struct qw_refill_params *p, const struct qw_frame_io *io,
		       const uint8_t *psk, size_t psklen, uint64_t want_bits,
		       uint8_t **keys, size_t *nbytes, struct qw_refill_result *res)
{
	return qw_refill_terminal_carry(p, io, psk, psklen, want_bits, NULL, keys, nbytes, res);
}

int qw_refill_terminal_carry(const struct qw_refill_params *p, const struct qw_frame_io *io,
			     const uint8_t *psk, size_t psklen, uint64_t want_bits,
			     struct qw_refill_carry *next, uint8_t **keys, size_t *nbytes,
			     struct qw_refill_result *res)
{
	struct qw_refill_result local;
	struct side s;
	struct qw_frame f = { 0 };
	uint8_t hello[10], ack[1 + QW_REFILL_CARRY_ID_BYTES] = { 1 }, *out = NULL;
	uint64_t got = 0;
	size_t cap = 0, acklen = 1;
	int ret, carry = next != NULL;

	QW_REQUIRE(p && io && psk && keys && nbytes);
	carry_reset(next);
	*keys = NULL;
	*nbytes = 0;
	if (!res)
		res = &local;
	ret = side_open(&s, p, QW_ROLE_BOB, io, psk, psklen, res);
	if (ret)
		goto out;
	if (!want_bits || want_bits % QW_REFILL_UNIT_BITS || want_bits > (1u << 24)) {
		ret = QW_EINVAL;
		goto out;
	}
	size_block(&s, want_bits, carry);
	put_be64(hello, want_bits);
	hello[8] = carry ? 1 : 0;
	hello[9] = 0;
	if (p->plkg.remedy == QW_PLKG_REMEDY_RANDOM_WEIGHTS) {
		/* a still terminal (the remedy is the AP's; it runs on a static
		 * channel, which both ends then simulate) */
		s.pb.plkg.chan.speed_kmh = 0;
		hello[9] = HELLO_STATIC;
		res->remedy = 1;
	}
	ret = qw_frame_send(s.conn, QW_FRAME_DATA, MSG_HELLO, 0, hello,
			    hello[9] ? 10 : carry ? 9 : 8);
	if (!ret)
		ret = make_key(&s);
	if (!ret)
		ret = recv_msg(s.conn, MSG_DELIVER, &f);
	if (ret)
		goto out;
	cap = f.len;
	out = malloc(cap ? cap : 1);
	if (!out) {
		ret = QW_ENOMEM;
		goto out;
	}
	ret = qw_refill_open(s.key, s.keylen, f.body, f.len, out, cap, &got);
	/* the AP may cap a request, never exceed what the key carries */
	if (!ret && (!got || got % QW_REFILL_UNIT_BITS ||
		     got > carry_bits(want_bits, s.keybits, carry)))
		ret = QW_EPROTO;
	if (!ret) {
		ack[0] = 0;
		/* the next refill's pool follows the delivered keys' pad; a fresh
		 * public id names it, so both ends can tell they hold the same one */
		if (carry) {
			memcpy(next->pool, s.key + (QW_REFILL_MAC_BITS + got) / 8,
			       QW_REFILL_PSK_BYTES);
			ret = qw_random_bytes(next->id, QW_REFILL_CARRY_ID_BYTES);
			if (ret) {
				ack[0] = 1;
				carry_reset(next);
			} else {
				memcpy(ack + 1, next->id, QW_REFILL_CARRY_ID_BYTES);
				acklen += QW_REFILL_CARRY_ID_BYTES;
			}
		}
	} else if (ret == QW_EAUTH)
		set_reason(res, "delivery MAC failed: nothing taken");
	/* tell the AP in every verdict case; a failed send only matters when
	 * the keys were good (they are then still kept: the AP counts them
	 * undelivered, which wastes keys but never reuses them) */
	{
		int r = qw_frame_send(s.conn, QW_FRAME_DATA, MSG_ACK, 0, ack, acklen);

		if (!ret)
			ret = r;
	}
	if (ret)
		goto out;
	*keys = out;
	*nbytes = (size_t)(got / 8);
	out = NULL;
	res->delivered_bits = got;
	if (carry) {
		next->valid = 1;
		res->carried_bits = QW_REFILL_CARRY_BITS;
	}
out:
	if (ret)
		carry_reset(next);
	if (ret && !res->reason[0])
		set_reason(res, qw_strerror(ret));
	qw_frame_release(&f);
	qw_free_secret(out, cap ? cap : 1);
	side_close(&s);
	return ret;
}

/* ---- a source backed by the KSC ---------------------------------------- */

int qw_refill_ksc_get(void *ctx, uint8_t *out, size_t n)
{
	struct qw_refill_ksc_source *k = ctx;
	struct qw_ksc_resp r = { 0 };
	char body[256], path[128];
	const char *id, *b64;
	json_t *j = NULL;
	size_t got = 0;
	int ret;

	QW_REQUIRE(k && k->ksc && k->operator_id && k->ap_id && out);
	if (!n || n > QW_KSC_KEY_MAX_BITS / 8)
		return QW_ERANGE;
	if (k->source)
		snprintf(body, sizeof(body), "{\"size_bits\":%zu,\"owner\":\"%s\",\"source\":\"%s\"}",
			 n * 8, k->ap_id, k->source);
	else
		snprintf(body, sizeof(body), "{\"size_bits\":%zu,\"owner\":\"%s\"}", n * 8,
			 k->ap_id);
	ret = qw_ksc_handle(k->ksc, k->operator_id, "POST", "/keys", NULL, (const uint8_t *)body,
			    strlen(body), &r);
	if (ret)
		return ret;
	k->last_status = r.status;
	ret = QW_EPERM;
	if (r.status != 201)
		goto out;
	ret = QW_EPARSE;
	j = json_loadb(r.body, r.len, 0, NULL);
	id = json_string_value(json_object_get(j, "id"));
	if (!id || strlen(id) > 64)
		goto out;
	snprintf(path, sizeof(path), "/keys/%s/distribute", id);
	qw_ksc_resp_clear(&r);
	json_decref(j);
	j = NULL;
	ret = qw_ksc_handle(k->ksc, k->ap_id, "POST", path, NULL, NULL, 0, &r);
	if (ret)
		return ret;
	k->last_status = r.status;
	ret = QW_EPERM;
	if (r.status != 200)
		goto out;
	ret = QW_EPARSE;
	j = json_loadb(r.body, r.len, 0, NULL);
	b64 = json_string_value(json_object_get(j, "key"));
	if (!b64 || qw_base64_decode(out, n, &got, b64, strlen(b64)) || got != n)
		goto out;
	ret = 0;
out:
	if (j) {
		/* the distribute answer holds the key */
		const char *s = json_string_value(json_object_get(j, "key"));

		if (s)
			qw_wipe((void *)s, strlen(s));
		json_decref(j);
	}
	qw_ksc_resp_clear(&r);
	return ret;
}

/* ---- the sealed balance file ------------------------------------------ */

void qw_refill_balance_clear(struct qw_refill_balance *b)
{
	if (!b)
		return;
	qw_free_secret(b->keys, b->len);
	memset(b, 0, sizeof(*b));
}

int qw_refill_balance_add(struct qw_refill_balance *b, const uint8_t *keys, size_t n)
{
	uint8_t *nk;

	QW_REQUIRE(b && (keys || !n));
	nk = malloc(b->len + n + 1);
	if (!nk)
		return QW_ENOMEM;
	if (b->len)
		memcpy(nk, b->keys, b->len);
	if (n)
		memcpy(nk + b->len, keys, n);
	qw_free_secret(b->keys, b->len);
	b->keys = nk;
	b->len += n;
	b->refills++;
	return 0;
}

int qw_refill_balance_take(struct qw_refill_balance *b, uint8_t *out, size_t n)
{
	QW_REQUIRE(b && (out || !n));
	if (n > b->len)
		return QW_EAGAIN;
	memcpy(out, b->keys, n);
	memmove(b->keys, b->keys + n, b->len - n);
	qw_wipe(b->keys + b->len - n, n);
	b->len -= n;
	return 0;
}

static int open_file(const char *path, const uint8_t key[static 32], const char *aad,
		     size_t aadlen, struct qw_refill_balance *b)
{
	uint8_t *msg = NULL, *pt = NULL;
	size_t len = 0, cap = 0, ptlen = 0;
	struct stat sb;
	int ret = QW_EIO, fd;

	QW_REQUIRE(path && b);
	memset(b, 0, sizeof(*b));
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return errno == ENOENT ? 0 : QW_EIO;
	if (fstat(fd, &sb) || sb.st_size < 0 || sb.st_size > (off_t)(64u << 20))
		goto out;
	cap = (size_t)sb.st_size;
	ret = QW_ENOMEM;
	msg = malloc(cap + 1);
	pt = malloc(cap + 1);
	if (!msg || !pt)
		goto out;
	ret = QW_EIO;
	while (len < cap) {
		ssize_t r = read(fd, msg + len, cap - len);

		if (r <= 0)
			goto out;
		len += (size_t)r;
	}
	ret = qw_aead_open_msg(QW_AEAD_AES256_GCM, key, 32, (const uint8_t *)aad, aadlen, msg,
			       len, pt, cap, &ptlen, NULL);
	if (ret)
		goto out;
	ret = QW_EPARSE;
	if (ptlen < 8)
		goto out;
	ret = QW_ENOMEM;
	b->refills = get_be64(pt);
	b->len = ptlen - 8;
	b->keys = malloc(b->len + 1);
	if (!b->keys) {
		b->len = 0;
		goto out;
	}
	memcpy(b->keys, pt + 8, b->len);
	ret = 0;
out:
	close(fd);
	free(msg);
	qw_free_secret(pt, cap + 1);
	return ret;
}

static int seal_file(const char *path, const uint8_t key[static 32], const char *aad,
		     size_t aadlen, const struct qw_refill_balance *b)
{
	size_t ptlen = 8 + b->len, cap = ptlen + qw_aead_msg_overhead(QW_AEAD_AES256_GCM);
	size_t outlen = 0, done = 0;
	uint8_t *pt = malloc(ptlen), *out = malloc(cap);
	char *tmp = malloc(strlen(path) + 8);
	int ret = QW_ENOMEM, fd = -1;

	QW_REQUIRE(path && b);
	if (!pt || !out || !tmp)
		goto out;
	put_be64(pt, b->refills);
	if (b->len)
		memcpy(pt + 8, b->keys, b->len);
	ret = qw_aead_seal_msg(QW_AEAD_AES256_GCM, key, 32, (const uint8_t *)aad, aadlen, pt,
			       ptlen, out, cap, &outlen);
	if (ret)
		goto out;
	ret = QW_EIO;
	sprintf(tmp, "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		goto out;
	while (done < outlen) {
		ssize_t r = write(fd, out + done, outlen - done);

		if (r <= 0)
			goto out;
		done += (size_t)r;
	}
	if (fsync(fd))
		goto out;
	close(fd);
	fd = -1;
	if (rename(tmp, path))
		goto out;
	ret = 0;
out:
	if (fd >= 0) {
		close(fd);
		unlink(tmp);
	}
	qw_free_secret(pt, ptlen);
	free(out);
	free(tmp);
	return ret;
}

int qw_refill_balance_load(const char *path, const uint8_t key[static 32],
			   struct qw_refill_balance *b)
{
	return open_file(path, key, bal_aad, sizeof(bal_aad) - 1, b);
}

int qw_refill_balance_save(const char *path, const uint8_t key[static 32],
			   const struct qw_refill_balance *b)
{
	return seal_file(path, key, bal_aad, sizeof(bal_aad) - 1, b);
}

/* ---- the carried frame-authentication pool ----------------------------- */

int qw_refill_carry_save(const char *path, const uint8_t key[static 32],
			 const struct qw_refill_carry *c)
{
	struct qw_refill_balance b = { 0 };
	uint8_t pt[QW_REFILL_CARRY_ID_BYTES + QW_REFILL_PSK_BYTES];
	int ret;

	QW_REQUIRE(path && c && c->valid);
	memcpy(pt, c->id, QW_REFILL_CARRY_ID_BYTES);
	memcpy(pt + QW_REFILL_CARRY_ID_BYTES, c->pool, QW_REFILL_PSK_BYTES);
	b.keys = pt;
	b.len = sizeof(pt);
	b.refills = 1; /* format version */
	ret = seal_file(path, key, carry_aad, sizeof(carry_aad) - 1, &b);
	qw_wipe(pt, sizeof(pt));
	return ret;
}

int qw_refill_carry_load(const char *path, const uint8_t key[static 32],
			 struct qw_refill_carry *c)
{
	struct qw_refill_balance b = { 0 };
	int ret;

	QW_REQUIRE(path && c);
	memset(c, 0, sizeof(*c));
	ret = open_file(path, key, carry_aad, sizeof(carry_aad) - 1, &b);
	if (ret)
		return ret;
	if (!b.keys) /* missing: no carried pool */
		return 0;
	if (b.refills != 1 || b.len != QW_REFILL_CARRY_ID_BYTES + QW_REFILL_PSK_BYTES) {
		qw_refill_balance_clear(&b);
		return QW_EPARSE;
	}
	memcpy(c->id, b.keys, QW_REFILL_CARRY_ID_BYTES);
	memcpy(c->pool, b.keys + QW_REFILL_CARRY_ID_BYTES, QW_REFILL_PSK_BYTES);
	c->valid = 1;
	qw_refill_balance_clear(&b);
	return 0;
}

int qw_refill_carry_discard(const char *path)
{
	QW_REQUIRE(path);
	return unlink(path) && errno != ENOENT ? QW_EIO : 0;
}
