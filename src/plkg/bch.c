/* Binary BCH codes (Berlekamp-Massey + Chien search) and the one-way BCH
 * secure-sketch reconciliation stage. See include/qwave/bch.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qwave/bch.h"
#include "qwave/secmem.h"

/* Primitive polynomials of degree 3..15 (bit i = coefficient of x^i). */
static const uint32_t prim_poly[QW_BCH_MAX_M + 1] = {
	0, 0, 0, 0xB, 0x13, 0x25, 0x43, 0x89, 0x11D, 0x211, 0x409, 0x805, 0x1053, 0x201B,
	0x4443, 0x8003,
};

struct qw_bch {
	unsigned m, t;
	uint32_t n;       /* 2^m - 1 */
	uint16_t *alog;   /* alpha^i, i in [0, 2n) (doubled: no modulo in products) */
	int32_t *log;     /* log[x], x in [1, n]; log[0] = -1 */
	uint8_t *gen;     /* generator polynomial coefficients, deg + 1 entries */
	size_t deg;
};

void qw_bch_free(struct qw_bch *c)
{
	if (c == NULL)
		return;
	free(c->alog);
	free(c->log);
	free(c->gen);
	free(c);
}

unsigned qw_bch_m(const struct qw_bch *c) { return c->m; }
unsigned qw_bch_t(const struct qw_bch *c) { return c->t; }
size_t qw_bch_n(const struct qw_bch *c) { return c->n; }
size_t qw_bch_parity_bits(const struct qw_bch *c) { return c->deg; }

static uint16_t gf_mul(const struct qw_bch *c, uint16_t a, uint16_t b)
{
	if (a == 0 || b == 0)
		return 0;
	return c->alog[c->log[a] + c->log[b]];
}

static uint16_t gf_div(const struct qw_bch *c, uint16_t a, uint16_t b)
{
	if (a == 0)
		return 0;
	return c->alog[(uint32_t)(c->log[a] - c->log[b] + (int32_t)c->n)];
}

/* g(x) = product of the minimal polynomials of alpha^j over the distinct
 * cyclotomic cosets of the odd j < 2t (each coset's minimal polynomial is
 * prod_{e in coset} (x + alpha^e), whose coefficients lie in GF(2)). */
static int build_generator(struct qw_bch *c)
{
	uint32_t n = c->n;
	uint8_t *seen = calloc(n, 1);
	uint16_t *mp = malloc(((size_t)c->m + 1) * sizeof(*mp));
	int ret = QW_ENOMEM;

	c->gen = calloc((size_t)c->m * c->t + 1, 1);
	if (!seen || !mp || !c->gen)
		goto out;
	c->gen[0] = 1;
	c->deg = 0;
	for (uint32_t j = 1; j < 2 * c->t; j += 2) {
		size_t d = 0;
		uint32_t e = j % n;

		if (seen[e])
			continue;
		mp[0] = 1;
		do { /* multiply mp by (x + alpha^e) */
			seen[e] = 1;
			mp[d + 1] = 0;
			for (size_t i = d + 1; i > 0; i--)
				mp[i] = (uint16_t)(mp[i - 1] ^ gf_mul(c, mp[i], c->alog[e]));
			mp[0] = gf_mul(c, mp[0], c->alog[e]);
			d++;
			e = (uint32_t)(((uint64_t)e * 2) % n);
		} while (!seen[e]);
		for (size_t i = 0; i <= d; i++)
			if (mp[i] > 1) {
				ret = QW_EINVAL; /* not binary: broken field table */
				goto out;
			}
		/* gen *= mp over GF(2) */
		for (size_t i = c->deg + d + 1; i-- > 0;) {
			uint8_t v = 0;
			for (size_t k = 0; k <= d && k <= i; k++)
				if (i - k <= c->deg)
					v ^= (uint8_t)(mp[k] & c->gen[i - k]);
			c->gen[i] = v;
		}
		c->deg += d;
	}
	ret = c->deg < n ? 0 : QW_EINVAL;
out:
	free(seen);
	free(mp);
	return ret;
}

int qw_bch_new(struct qw_bch **out, unsigned m, unsigned t)
{
	struct qw_bch *c;
	uint32_t x = 1;
	int ret = QW_ENOMEM;

	QW_REQUIRE(out);
	*out = NULL;
	if (m < QW_BCH_MIN_M || m > QW_BCH_MAX_M || t < 1 || 2u * t >= (1u << m) - 1)
		return QW_EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return QW_ENOMEM;
	c->m = m;
	c->t = t;
	c->n = (1u << m) - 1;
	c->alog = malloc(2 * (size_t)c->n * sizeof(*c->alog));
	c->log = malloc(((size_t)c->n + 1) * sizeof(*c->log));
	if (!c->alog || !c->log)
		goto fail;
	for (uint32_t i = 0; i <= c->n; i++)
		c->log[i] = -1;
	for (uint32_t i = 0; i < c->n; i++) {
		if (c->log[x] >= 0) { /* period shorter than n: not primitive */
			ret = QW_EINVAL;
			goto fail;
		}
		c->alog[i] = c->alog[i + c->n] = (uint16_t)x;
		c->log[x] = (int32_t)i;
		x <<= 1;
		if (x >> m)
			x ^= prim_poly[m];
	}
	ret = build_generator(c);
	if (ret)
		goto fail;
	*out = c;
	return 0;
fail:
	qw_bch_free(c);
	return ret;
}

int qw_bch_encode(const struct qw_bch *c, const struct qw_bitvec *data, struct qw_bitvec *cw)
{
	size_t r = c->deg, k = c->n - r;
	uint8_t *rem;

	QW_REQUIRE(c && data && cw);
	if (data->nbits != k)
		return QW_EINVAL;
	rem = calloc(r + 1, 1);
	if (!rem || qw_bitvec_resize(cw, c->n)) {
		free(rem);
		return QW_ENOMEM;
	}
	/* LFSR division of x^r d(x) by g(x), highest data bit first. */
	for (size_t i = k; i-- > 0;) {
		uint8_t fb = (uint8_t)(qw_bitvec_get(data, i) ^ rem[r - 1]);
		for (size_t j = r - 1; j > 0; j--)
			rem[j] = (uint8_t)(rem[j - 1] ^ (fb & c->gen[j]));
		rem[0] = (uint8_t)(fb & c->gen[0]);
	}
	for (size_t j = 0; j < r; j++)
		qw_bitvec_set(cw, j, rem[j]);
	for (size_t i = 0; i < k; i++)
		qw_bitvec_set(cw, r + i, qw_bitvec_get(data, i));
	qw_wipe(rem, r + 1);
	free(rem);
	return 0;
}

void qw_bch_syndromes(const struct qw_bch *c, const struct qw_bitvec *v, size_t off, size_t len,
		      uint16_t *s)
{
	QW_REQUIRE(c && v && s && len <= c->n && off + len <= v->nbits);
	memset(s, 0, c->t * sizeof(*s));
	for (size_t i = 0; i < len; i++) {
		uint32_t step, e = 0;

		if (!qw_bitvec_get(v, off + i))
			continue;
		step = (uint32_t)(i % c->n);
		/* alpha^(i j) for j = 1, 3, 5, ...: exponent grows by 2 i */
		e = step;
		for (unsigned j = 0; j < c->t; j++) {
			s[j] ^= c->alog[e];
			e += 2 * step;
			while (e >= c->n)
				e -= c->n;
		}
	}
}

int qw_bch_correct(const struct qw_bch *c, struct qw_bitvec *v, size_t off, size_t len,
		   const uint16_t *s)
{
	unsigned t = c->t, L = 0, nz = 0;
	uint16_t *syn = NULL, *C = NULL, *B = NULL, *T = NULL, *term = NULL;
	uint32_t *pos = NULL;
	int ret = QW_ENOMEM;

	QW_REQUIRE(c && v && s && len <= c->n && off + len <= v->nbits);
	for (unsigned j = 0; j < t; j++)
		nz |= s[j];
	if (!nz)
		return 0;
	syn = malloc((2 * (size_t)t + 1) * sizeof(*syn));
	C = calloc(2 * (size_t)t + 2, sizeof(*C));
	B = calloc(2 * (size_t)t + 2, sizeof(*B));
	T = calloc(2 * (size_t)t + 2, sizeof(*T));
	term = malloc((2 * (size_t)t + 2) * sizeof(*term));
	pos = malloc(((size_t)t + 1) * sizeof(*pos));
	if (!syn || !C || !B || !T || !term || !pos)
		goto out;
	/* syn[j] = S_j, j = 1..2t; S_2j = S_j^2 */
	for (unsigned j = 1; j <= 2 * t; j++)
		syn[j] = (j & 1) ? s[j / 2] : gf_mul(c, syn[j / 2], syn[j / 2]);

	/* Berlekamp-Massey: shortest LFSR C generating syn[1..2t]. */
	{
		unsigned mshift = 1;
		uint16_t b = 1;

		C[0] = B[0] = 1;
		for (unsigned r = 0; r < 2 * t; r++) {
			uint16_t d = syn[r + 1];
			for (unsigned i = 1; i <= L; i++)
				d ^= gf_mul(c, C[i], syn[r + 1 - i]);
			if (d == 0) {
				mshift++;
				continue;
			}
			uint16_t coef = gf_div(c, d, b);
			memcpy(T, C, (2 * (size_t)t + 2) * sizeof(*C));
			for (unsigned i = 0; i + mshift <= 2 * t + 1; i++)
				C[i + mshift] ^= gf_mul(c, coef, B[i]);
			if (2 * L <= r) {
				L = r + 1 - L;
				memcpy(B, T, (2 * (size_t)t + 2) * sizeof(*B));
				b = d;
				mshift = 1;
			} else {
				mshift++;
			}
		}
	}
	ret = QW_ERANGE;
	if (L > t)
		goto out;
	for (unsigned i = L + 1; i <= 2 * t + 1; i++)
		if (C[i])
			goto out;
	/* Chien search: an error at position i <=> C(alpha^-i) = 0. term[k]
	 * holds C_k alpha^(-i k), updated by alpha^-k per position. */
	{
		unsigned found = 0;

		for (unsigned k = 0; k <= L; k++)
			term[k] = C[k];
		for (size_t i = 0; i < len; i++) {
			uint16_t sum = 0;
			for (unsigned k = 0; k <= L; k++)
				sum ^= term[k];
			if (sum == 0) {
				if (found == L)
					goto out; /* more roots than the degree: impossible, fail */
				pos[found++] = (uint32_t)i;
			}
			for (unsigned k = 1; k <= L; k++)
				if (term[k]) /* times alpha^-k; log >= 0, k <= t < n */
					term[k] = c->alog[(uint32_t)c->log[term[k]] + c->n - k];
		}
		if (found != L)
			goto out; /* roots outside the (shortened) word: > t errors */
		for (unsigned k = 0; k < L; k++)
			qw_bitvec_flip(v, off + pos[k]);
		ret = (int)L;
	}
out:
	free(syn);
	free(C);
	free(B);
	free(T);
	free(term);
	if (pos)
		qw_wipe(pos, ((size_t)t + 1) * sizeof(*pos));
	free(pos);
	return ret;
}

int qw_bch_decode(const struct qw_bch *c, struct qw_bitvec *cw, size_t len)
{
	uint16_t *s;
	int ret;

	QW_REQUIRE(c && cw);
	if (len > c->n || len > cw->nbits)
		return QW_EINVAL;
	s = malloc(c->t * sizeof(*s));
	if (!s)
		return QW_ENOMEM;
	qw_bch_syndromes(c, cw, 0, len, s);
	ret = qw_bch_correct(c, cw, 0, len, s);
	free(s);
	return ret;
}

unsigned qw_bch_t_for(size_t len, double p, double fail)
{
	double tail = 1.0, lp, lq;

	if (len == 0)
		return 0;
	if (!(p > 0))
		return 1;
	if (p >= 1)
		return 0;
	lp = log(p);
	lq = log1p(-p);
	/* tail = P(X > t), subtracting pmf(t) for t = 0, 1, ... */
	for (size_t t = 0; t < len; t++) {
		double lpmf = lgamma((double)len + 1) - lgamma((double)t + 1) -
			      lgamma((double)(len - t) + 1) + (double)t * lp + (double)(len - t) * lq;
		tail -= exp(lpmf);
		if (tail <= fail)
			return t == 0 ? 1 : (unsigned)t;
	}
	return 0;
}

void qw_bch_segment_span(size_t nbits, uint32_t segments, uint32_t i, size_t *off, size_t *len)
{
	size_t base = nbits / segments, extra = nbits % segments;

	*off = (size_t)i * base + (i < extra ? i : extra);
	*len = base + (i < extra ? 1 : 0);
}

int qw_bch_plan(size_t nbits, double p, double fail, unsigned m_min, unsigned m_max,
		unsigned *m, unsigned *t, uint32_t *segments)
{
	double best = INFINITY;

	if (nbits == 0 || m_min < QW_BCH_MIN_M || m_max > QW_BCH_MAX_M || m_min > m_max)
		return QW_EINVAL;
	for (unsigned mm = m_min; mm <= m_max; mm++) {
		size_t n = ((size_t)1 << mm) - 1;
		size_t segs = (nbits + n - 1) / n;
		size_t len = (nbits + segs - 1) / segs; /* longest segment */
		unsigned tt = qw_bch_t_for(len, p, fail);
		double leak = (double)segs * mm * tt;

		if (tt == 0 || 2 * (size_t)tt >= n || (double)mm * tt >= (double)len ||
		    segs > UINT32_MAX)
			continue;
		if (leak < best) {
			best = leak;
			*m = mm;
			*t = tt;
			*segments = (uint32_t)segs;
		}
	}
	return isinf(best) ? QW_ERANGE : 0;
}

/* ---- the stage ------------------------------------------------------------- */

#define BCH_HDR 16 /* n (8, LE), m (1), t (2, LE), segments (4, LE), version (1) */

struct bch_state {
	struct qw_bch_stage_params p;
};

static int bch_init(void **state, const void *params)
{
	struct bch_state *s = calloc(1, sizeof(*s));

	if (!s)
		return QW_ENOMEM;
	if (params)
		s->p = *(const struct qw_bch_stage_params *)params;
	if (!(s->p.fail_prob > 0))
		s->p.fail_prob = 1e-3;
	if (s->p.m_min == 0)
		s->p.m_min = 6;
	if (s->p.m_max == 0)
		s->p.m_max = 13;
	if (s->p.m_min < QW_BCH_MIN_M || s->p.m_max > QW_BCH_MAX_M || s->p.m_min > s->p.m_max) {
		free(s);
		return QW_EINVAL;
	}
	*state = s;
	return 0;
}

static void bch_free_state(void *state)
{
	free(state);
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = n; i-- > 0;)
		v = (v << 8) | p[i];
	return v;
}

/* Remove the failed segments' bits from key (both sides do the same). */
static int drop_segments(struct qw_key_block *b, uint32_t segs, const uint8_t *failed,
			 size_t *kept)
{
	size_t n = b->key->nbits, w = 0;
	struct qw_bitvec *nk = qw_bitvec_new(n);

	if (!nk)
		return QW_ENOMEM;
	for (uint32_t i = 0; i < segs; i++) {
		size_t off, len;
		qw_bch_segment_span(n, segs, i, &off, &len);
		if (failed[i / 8] >> (i % 8) & 1)
			continue;
		qw_bitvec_copy_range(nk, w, b->key, off, len);
		w += len;
	}
	if (qw_bitvec_resize(nk, w)) {
		qw_bitvec_free(nk);
		return QW_ENOMEM;
	}
	qw_bitvec_free(b->key);
	b->key = nk;
	*kept = w;
	return 0;
}

static enum qw_stage_result bch_process(void *state, struct qw_key_block *b,
					struct qw_distill_chan *chan)
{
	const struct bch_state *s = state;
	struct qw_bch *code = NULL;
	uint8_t *msg = NULL, *failed = NULL;
	uint16_t *syn = NULL, *mine = NULL;
	enum qw_stage_result res = QW_STAGE_ERROR;
	unsigned m = 0, t = 0;
	uint32_t segs = 0, type;
	size_t n, len = 0, corrected = 0, decoded = 0, kept = 0, fbytes;

	QW_REQUIRE(s && b && chan);
	if ((b->state != QW_BLOCK_RAW && b->state != QW_BLOCK_SIFTED) || !b->key ||
	    b->key->nbits == 0)
		return QW_STAGE_ERROR;
	n = b->key->nbits;
	if (b->role == QW_ROLE_ALICE) {
		if (qw_bch_plan(n, b->qber_estimate, s->p.fail_prob, s->p.m_min, s->p.m_max, &m, &t,
				&segs)) {
			snprintf(b->drop_reason, sizeof(b->drop_reason),
				 "BCH: no code for KDR %.4f", b->qber_estimate);
			/* tell Bob with an empty plan so that he does not wait */
			uint8_t hdr[BCH_HDR] = { 0 };
			put_le(hdr, n, 8);
			res = chan->send(chan->ctx, QW_BCH_CHAN_SYNDROME, hdr, BCH_HDR) ?
				      QW_STAGE_ERROR :
				      QW_STAGE_DROP;
			goto out;
		}
		if (qw_bch_new(&code, m, t))
			goto out;
		len = BCH_HDR + (size_t)segs * t * 2;
		msg = malloc(len);
		syn = malloc((size_t)t * sizeof(*syn));
		if (!msg || !syn)
			goto out;
		put_le(msg, n, 8);
		msg[8] = (uint8_t)m;
		put_le(msg + 9, t, 2);
		put_le(msg + 11, segs, 4);
		msg[15] = 1;
		for (uint32_t i = 0; i < segs; i++) {
			size_t off, sl;
			qw_bch_segment_span(n, segs, i, &off, &sl);
			qw_bch_syndromes(code, b->key, off, sl, syn);
			for (unsigned j = 0; j < t; j++)
				put_le(msg + BCH_HDR + ((size_t)i * t + j) * 2, syn[j], 2);
		}
		if (chan->send(chan->ctx, QW_BCH_CHAN_SYNDROME, msg, len))
			goto out;
		free(msg);
		msg = NULL;
		if (chan->recv(chan->ctx, &type, &msg, &len))
			goto out;
		fbytes = ((size_t)segs + 7) / 8;
		if (type != QW_BCH_CHAN_RESULT || len != 8 + fbytes)
			goto out;
		corrected = (size_t)get_le(msg, 8);
		failed = malloc(fbytes);
		if (!failed)
			goto out;
		memcpy(failed, msg + 8, fbytes);
	} else {
		if (chan->recv(chan->ctx, &type, &msg, &len))
			goto out;
		if (type != QW_BCH_CHAN_SYNDROME || len < BCH_HDR || get_le(msg, 8) != n)
			goto out;
		m = msg[8];
		t = (unsigned)get_le(msg + 9, 2);
		segs = (uint32_t)get_le(msg + 11, 4);
		if (m == 0 && t == 0 && segs == 0 && len == BCH_HDR) {
			snprintf(b->drop_reason, sizeof(b->drop_reason), "BCH: peer found no code");
			res = QW_STAGE_DROP;
			goto out;
		}
		if (msg[15] != 1 || segs == 0 || segs > n || t == 0 ||
		    len != BCH_HDR + (size_t)segs * t * 2 || qw_bch_new(&code, m, t))
			goto out;
		fbytes = ((size_t)segs + 7) / 8;
		syn = malloc((size_t)t * sizeof(*syn));
		mine = malloc((size_t)t * sizeof(*mine));
		failed = calloc(1, fbytes);
		if (!syn || !mine || !failed)
			goto out;
		for (uint32_t i = 0; i < segs; i++) {
			size_t off, sl;
			int r;
			qw_bch_segment_span(n, segs, i, &off, &sl);
			if (sl > qw_bch_n(code))
				goto out;
			qw_bch_syndromes(code, b->key, off, sl, mine);
			for (unsigned j = 0; j < t; j++) {
				uint64_t v = get_le(msg + BCH_HDR + ((size_t)i * t + j) * 2, 2);
				if (v > qw_bch_n(code))
					goto out;
				syn[j] = (uint16_t)(v ^ mine[j]);
			}
			r = qw_bch_correct(code, b->key, off, sl, syn);
			if (r == QW_ERANGE)
				failed[i / 8] |= (uint8_t)(1u << (i % 8));
			else if (r < 0)
				goto out;
			else
				corrected += (size_t)r;
		}
		free(msg);
		len = 8 + fbytes;
		msg = malloc(len);
		if (!msg)
			goto out;
		put_le(msg, corrected, 8);
		memcpy(msg + 8, failed, fbytes);
		if (chan->send(chan->ctx, QW_BCH_CHAN_RESULT, msg, len))
			goto out;
	}
	b->ec_parity_bits += (uint64_t)segs * m * t;
	b->disclosed_bits += (uint64_t)segs * m * t;
	b->ec_round_trips += 1;
	if (!s->p.keep_partial) {
		for (uint32_t i = 0; i < segs; i++)
			if (failed[i / 8] >> (i % 8) & 1) {
				snprintf(b->drop_reason, sizeof(b->drop_reason),
					 "BCH decoding failed");
				res = QW_STAGE_DROP;
				goto out;
			}
	}
	if (drop_segments(b, segs, failed, &kept))
		goto out;
	decoded = kept;
	if (kept == 0) {
		snprintf(b->drop_reason, sizeof(b->drop_reason), "BCH decoding failed");
		res = QW_STAGE_DROP;
		goto out;
	}
	b->qber_observed = (double)corrected / (double)decoded;
	b->state = QW_BLOCK_CORRECTED;
	res = QW_STAGE_FORWARD;
out:
	qw_bch_free(code);
	free(msg);
	free(failed);
	if (syn)
		qw_wipe(syn, (size_t)t * sizeof(*syn));
	if (mine)
		qw_wipe(mine, (size_t)t * sizeof(*mine));
	free(syn);
	free(mine);
	return res;
}

const struct qw_stage qw_bch_stage = {
	.name = "bch",
	.init = bch_init,
	.process = bch_process,
	.free = bch_free_state,
};
