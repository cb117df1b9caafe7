/* Sifting of a decoy-state BB84 batch: message formats, the four protocol
 * steps and the RAW -> SIFTED distillation stage (see qwave/sift.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qwave/buf.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"
#include "qwave/sift.h"

#define SIFT_VERSION 1
#define KIND_BASES 1
#define KIND_MATCH 2
#define KIND_BITS 3

#define NCLASS QW_OPTICS_NCLASS

void qw_sift_params_default(struct qw_sift_params *p)
{
	QW_REQUIRE(p != NULL);
	memset(p, 0, sizeof(*p));
	p->key_both_bases = 0;
	p->pe_fraction = 0.0;
	p->qber_abort = 0.0;
	p->key_all_classes = 1;
}

static int params_ok(const struct qw_sift_params *p)
{
	return p->pe_fraction >= 0.0 && p->pe_fraction < 1.0 &&
	       p->qber_abort >= 0.0 && p->qber_abort <= 1.0;
}

/* ---- wire helpers ------------------------------------------------------- */

/* Unsigned LEB128: 7 bits per byte, least significant group first. */
static int put_varint(struct qw_buf *b, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;

	do {
		tmp[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			tmp[n] |= 0x80;
		n++;
	} while (v);
	return qw_buf_append(b, tmp, n);
}

/* Rejects truncation, values over 64 bits and non-minimal encodings (so
 * every value has exactly one encoding). */
static int get_varint(struct qw_reader *r, uint64_t *out)
{
	uint64_t v = 0;
	unsigned shift = 0;
	uint8_t c;

	for (;;) {
		if (qw_reader_read_u8(r, &c))
			return QW_EPARSE;
		if (shift == 63 && (c & 0xfe))
			return QW_EPARSE;
		v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			break;
		shift += 7;
		if (shift > 63)
			return QW_EPARSE;
	}
	if (c == 0 && shift > 0)
		return QW_EPARSE;
	*out = v;
	return 0;
}

static size_t bit_bytes(size_t n)
{
	return n / 8 + (n % 8 != 0);
}

/* n 0/1 values as bits, MSB first within each byte, zero padding. */
static int put_bits(struct qw_buf *b, const uint8_t *v, size_t n)
{
	size_t nb = bit_bytes(n), i;
	int ret = qw_buf_reserve(b, nb);

	if (ret)
		return ret;
	memset(b->data + b->len, 0, nb);
	for (i = 0; i < n; i++)
		if (v[i])
			b->data[b->len + i / 8] |= (uint8_t)(0x80u >> (i % 8));
	b->len += nb;
	return 0;
}

static int get_bits(struct qw_reader *r, uint8_t *v, size_t n)
{
	const uint8_t *p;
	size_t nb = bit_bytes(n), i;

	if (qw_reader_read_ref(r, &p, nb))
		return QW_EPARSE;
	for (i = 0; i < n; i++)
		v[i] = (uint8_t)((p[i / 8] >> (7 - i % 8)) & 1u);
	if (n % 8 && (p[nb - 1] & (0xffu >> (n % 8))))
		return QW_EPARSE;
	return 0;
}

static int header(struct qw_buf *b, uint8_t kind)
{
	int ret = qw_buf_append_u8(b, SIFT_VERSION);

	return ret ? ret : qw_buf_append_u8(b, kind);
}

static int check_header(struct qw_reader *r, uint8_t kind)
{
	uint8_t v, k;

	if (qw_reader_read_u8(r, &v) || qw_reader_read_u8(r, &k) || v != SIFT_VERSION ||
	    k != kind)
		return QW_EPARSE;
	return 0;
}

static int finish_encode(struct qw_buf *b, int ret, uint8_t **out, size_t *len)
{
	if (ret) {
		qw_buf_free(b);
		return ret;
	}
	*out = b->data;
	*len = b->len;
	return 0;
}

/* ---- BASES -------------------------------------------------------------- */

void qw_sift_bases_clear(struct qw_sift_bases *m)
{
	if (!m)
		return;
	free(m->index);
	free(m->basis);
	memset(m, 0, sizeof(*m));
}

int qw_sift_bases_encode(const struct qw_sift_bases *m, uint8_t **out, size_t *len)
{
	struct qw_buf b;
	uint64_t prev = 0;
	size_t i;
	int ret;

	QW_REQUIRE(m != NULL && out != NULL && len != NULL);
	if (m->n > UINT32_MAX)
		return QW_ERANGE;
	for (i = 0; i < m->n; i++)
		if ((i && m->index[i] <= m->index[i - 1]) || m->index[i] < m->first_pulse ||
		    m->index[i] >= m->end_pulse || m->basis[i] > 1)
			return QW_EINVAL;
	qw_buf_init(&b, 0);
	ret = header(&b, KIND_BASES);
	if (!ret)
		ret = qw_buf_append_u64be(&b, m->first_pulse);
	if (!ret)
		ret = qw_buf_append_u64be(&b, m->end_pulse);
	if (!ret)
		ret = qw_buf_append_u32be(&b, (uint32_t)m->n);
	/* Gaps, not indices: at 50 km a detection is a few hundred pulses from
	 * the last, so most gaps fit in two bytes. */
	for (i = 0; !ret && i < m->n; i++) {
		ret = put_varint(&b, i ? m->index[i] - prev - 1 : m->index[i] - m->first_pulse);
		prev = m->index[i];
	}
	if (!ret)
		ret = put_bits(&b, m->basis, m->n);
	return finish_encode(&b, ret, out, len);
}

int qw_sift_bases_decode(struct qw_sift_bases *m, const uint8_t *in, size_t len)
{
	struct qw_reader r;
	uint64_t first, end, prev = 0;
	uint32_t n;
	size_t i;
	int ret = QW_EPARSE;

	QW_REQUIRE(m != NULL && (in != NULL || len == 0));
	memset(m, 0, sizeof(*m));
	qw_reader_init(&r, in, len);
	if (check_header(&r, KIND_BASES) || qw_reader_read_u64be(&r, &first) ||
	    qw_reader_read_u64be(&r, &end) || qw_reader_read_u32be(&r, &n) || first > end)
		return QW_EPARSE;
	/* Each index takes at least one byte: bound n before allocating. */
	if (n > qw_reader_remaining(&r) || n > end - first)
		return QW_EPARSE;
	m->first_pulse = first;
	m->end_pulse = end;
	if (n) {
		m->index = malloc((size_t)n * sizeof(*m->index));
		m->basis = malloc(n);
		if (!m->index || !m->basis) {
			ret = QW_ENOMEM;
			goto out;
		}
	}
	m->n = n;
	for (i = 0; i < n; i++) {
		uint64_t gap, base = i ? prev + 1 : first;

		if (get_varint(&r, &gap) || gap >= end - base)
			goto out;
		prev = m->index[i] = base + gap;
	}
	if (get_bits(&r, m->basis, n) || qw_reader_expect_end(&r))
		goto out;
	ret = 0;
out:
	if (ret)
		qw_sift_bases_clear(m);
	return ret;
}

/* ---- MATCH -------------------------------------------------------------- */

void qw_sift_match_clear(struct qw_sift_match *m)
{
	if (!m)
		return;
	free(m->flags);
	qw_free_secret(m->bits, m->ndisc);
	memset(m, 0, sizeof(*m));
}

static int flag_ok(uint8_t f)
{
	if (f & ~(QW_SIFT_F_MATCH | QW_SIFT_F_CLASS_MASK | QW_SIFT_F_DISCLOSE))
		return 0;
	if (((f & QW_SIFT_F_CLASS_MASK) >> QW_SIFT_F_CLASS_SHIFT) >= NCLASS)
		return 0;
	return !(f & QW_SIFT_F_DISCLOSE) || (f & QW_SIFT_F_MATCH);
}

int qw_sift_match_encode(const struct qw_sift_match *m, uint8_t **out, size_t *len)
{
	struct qw_buf b;
	size_t i, nd = 0;
	int ret, k;

	QW_REQUIRE(m != NULL && out != NULL && len != NULL);
	if (m->n > UINT32_MAX || m->ndisc > UINT32_MAX)
		return QW_ERANGE;
	for (i = 0; i < m->n; i++) {
		if (!flag_ok(m->flags[i]))
			return QW_EINVAL;
		nd += (m->flags[i] & QW_SIFT_F_DISCLOSE) != 0;
	}
	if (nd != m->ndisc)
		return QW_EINVAL;
	qw_buf_init(&b, 0);
	ret = header(&b, KIND_MATCH);
	if (!ret)
		ret = qw_buf_append_u64be(&b, m->first_pulse);
	if (!ret)
		ret = qw_buf_append_u64be(&b, m->end_pulse);
	for (k = 0; !ret && k < NCLASS; k++)
		ret = qw_buf_append_u64be(&b, m->sent[k]);
	if (!ret)
		ret = qw_buf_append_u32be(&b, (uint32_t)m->n);
	/* Two flags per byte, the earlier one in the high nibble. */
	for (i = 0; !ret && i < m->n; i += 2)
		ret = qw_buf_append_u8(&b, (uint8_t)(m->flags[i] << 4 |
						     (i + 1 < m->n ? m->flags[i + 1] : 0)));
	if (!ret)
		ret = qw_buf_append_u32be(&b, (uint32_t)m->ndisc);
	if (!ret)
		ret = put_bits(&b, m->bits, m->ndisc);
	return finish_encode(&b, ret, out, len);
}

int qw_sift_match_decode(struct qw_sift_match *m, const uint8_t *in, size_t len)
{
	struct qw_reader r;
	uint64_t first, end, total = 0, per_class[NCLASS] = { 0 };
	const uint8_t *p;
	uint32_t n, ndisc;
	size_t i, nd = 0;
	int ret = QW_EPARSE, k;

	QW_REQUIRE(m != NULL && (in != NULL || len == 0));
	memset(m, 0, sizeof(*m));
	qw_reader_init(&r, in, len);
	if (check_header(&r, KIND_MATCH) || qw_reader_read_u64be(&r, &first) ||
	    qw_reader_read_u64be(&r, &end) || first > end)
		return QW_EPARSE;
	for (k = 0; k < NCLASS; k++) {
		if (qw_reader_read_u64be(&r, &m->sent[k]) || m->sent[k] > end - first - total)
			goto out;
		total += m->sent[k];
	}
	if (total != end - first || qw_reader_read_u32be(&r, &n) || n > end - first ||
	    qw_reader_read_ref(&r, &p, (size_t)n / 2 + (n & 1)))
		goto out;
	m->first_pulse = first;
	m->end_pulse = end;
	if (n) {
		m->flags = malloc(n);
		if (!m->flags) {
			ret = QW_ENOMEM;
			goto out;
		}
	}
	m->n = n;
	for (i = 0; i < n; i++) {
		uint8_t f = (uint8_t)(i % 2 ? p[i / 2] & 0x0f : p[i / 2] >> 4);

		if (!flag_ok(f))
			goto out;
		k = (f & QW_SIFT_F_CLASS_MASK) >> QW_SIFT_F_CLASS_SHIFT;
		/* A class cannot have more detections than pulses. */
		if (++per_class[k] > m->sent[k])
			goto out;
		nd += (f & QW_SIFT_F_DISCLOSE) != 0;
		m->flags[i] = f;
	}
	if ((n & 1) && (p[n / 2] & 0x0f))
		goto out;
	if (qw_reader_read_u32be(&r, &ndisc) || ndisc != nd)
		goto out;
	if (ndisc) {
		m->bits = malloc(ndisc);
		if (!m->bits) {
			ret = QW_ENOMEM;
			goto out;
		}
	}
	m->ndisc = ndisc;
	if (get_bits(&r, m->bits, ndisc) || qw_reader_expect_end(&r))
		goto out;
	ret = 0;
out:
	if (ret)
		qw_sift_match_clear(m);
	return ret;
}

/* ---- BITS --------------------------------------------------------------- */

void qw_sift_bits_clear(struct qw_sift_bits *m)
{
	if (!m)
		return;
	qw_free_secret(m->bits, m->ndisc);
	memset(m, 0, sizeof(*m));
}

int qw_sift_bits_encode(const struct qw_sift_bits *m, uint8_t **out, size_t *len)
{
	struct qw_buf b;
	int ret;

	QW_REQUIRE(m != NULL && out != NULL && len != NULL);
	if (m->ndisc > UINT32_MAX)
		return QW_ERANGE;
	qw_buf_init(&b, 0);
	ret = header(&b, KIND_BITS);
	if (!ret)
		ret = qw_buf_append_u32be(&b, (uint32_t)m->ndisc);
	if (!ret)
		ret = put_bits(&b, m->bits, m->ndisc);
	return finish_encode(&b, ret, out, len);
}

int qw_sift_bits_decode(struct qw_sift_bits *m, const uint8_t *in, size_t len)
{
	struct qw_reader r;
	uint32_t n;
	int ret = QW_EPARSE;

	QW_REQUIRE(m != NULL && (in != NULL || len == 0));
	memset(m, 0, sizeof(*m));
	qw_reader_init(&r, in, len);
	if (check_header(&r, KIND_BITS) || qw_reader_read_u32be(&r, &n) ||
	    bit_bytes(n) != qw_reader_remaining(&r))
		return QW_EPARSE;
	if (n) {
		m->bits = malloc(n);
		if (!m->bits)
			return QW_ENOMEM;
	}
	m->ndisc = n;
	if (get_bits(&r, m->bits, n) || qw_reader_expect_end(&r))
		goto out;
	ret = 0;
out:
	if (ret)
		qw_sift_bits_clear(m);
	return ret;
}

/* ---- protocol ----------------------------------------------------------- */

void qw_sift_result_clear(struct qw_sift_result *res)
{
	if (!res)
		return;
	qw_bitvec_free(res->key);
	memset(res, 0, sizeof(*res));
}

int qw_sift_bob_bases(const struct qw_detections *bob, struct qw_sift_bases *out)
{
	QW_REQUIRE(bob != NULL && out != NULL);
	memset(out, 0, sizeof(*out));
	out->first_pulse = bob->first_pulse;
	out->end_pulse = bob->end_pulse;
	if (bob->n) {
		out->index = malloc(bob->n * sizeof(*out->index));
		out->basis = malloc(bob->n);
		if (!out->index || !out->basis) {
			qw_sift_bases_clear(out);
			return QW_ENOMEM;
		}
		memcpy(out->index, bob->index, bob->n * sizeof(*out->index));
		memcpy(out->basis, bob->basis, bob->n);
	}
	out->n = bob->n;
	return 0;
}

static int is_key_basis(const struct qw_sift_params *p, int basis)
{
	return p->key_both_bases || basis == QW_BASIS_Z;
}

/* A sifted bit of class cls in basis may become key (unless sampled). */
static int is_key_candidate(const struct qw_sift_params *p, int cls, int basis)
{
	return (p->key_all_classes || cls == QW_CLASS_SIGNAL) && is_key_basis(p, basis);
}

/* Position in Alice's record of each announced index (both lists increase,
 * so one merge pass). */
static int alice_map(const struct qw_detections *alice, const struct qw_sift_bases *b,
		     size_t *map)
{
	size_t i, j = 0;

	if (b->first_pulse != alice->first_pulse || b->end_pulse != alice->end_pulse)
		return QW_EPROTO;
	for (i = 0; i < b->n; i++) {
		while (j < alice->n && alice->index[j] < b->index[i])
			j++;
		if (j == alice->n || alice->index[j] != b->index[i])
			return QW_EPROTO;
		map[i] = j;
	}
	return 0;
}

int qw_sift_alice_match(const struct qw_sift_params *p, struct qw_rng *rng,
			const struct qw_detections *alice, const struct qw_sift_bases *in,
			struct qw_sift_match *out)
{
	size_t *map = NULL, i;
	int ret = QW_ENOMEM, k;

	QW_REQUIRE(p != NULL && alice != NULL && in != NULL && out != NULL);
	QW_REQUIRE(alice->role == QW_ROLE_ALICE && (alice->cls != NULL || alice->n == 0));
	QW_REQUIRE(rng != NULL || p->pe_fraction == 0.0);
	memset(out, 0, sizeof(*out));
	if (!params_ok(p))
		return QW_EINVAL;
	if (in->n) {
		map = malloc(in->n * sizeof(*map));
		out->flags = malloc(in->n);
		out->bits = malloc(in->n);
		if (!map || !out->flags || !out->bits)
			goto out;
	}
	ret = alice_map(alice, in, map);
	if (ret)
		goto out;
	out->first_pulse = alice->first_pulse;
	out->end_pulse = alice->end_pulse;
	for (k = 0; k < NCLASS; k++)
		out->sent[k] = alice->sent[k];
	out->n = in->n;
	for (i = 0; i < in->n; i++) {
		size_t j = map[i];
		int cls = alice->cls[j];
		uint8_t f = (uint8_t)(cls << QW_SIFT_F_CLASS_SHIFT);
		int disclose;

		if (alice->basis[j] != in->basis[i]) {
			out->flags[i] = f;
			continue;
		}
		f |= QW_SIFT_F_MATCH;
		if (!is_key_candidate(p, cls, in->basis[i]))
			disclose = 1;
		else
			disclose = p->pe_fraction > 0.0 && qw_rng_uniform(rng) < p->pe_fraction;
		if (disclose) {
			f |= QW_SIFT_F_DISCLOSE;
			out->bits[out->ndisc++] = alice->bit[j];
		}
		out->flags[i] = f;
	}
	ret = 0;
out:
	free(map);
	if (ret) {
		/* bits was allocated for n entries, not ndisc: wipe it all. */
		qw_free_secret(out->bits, in->n);
		out->bits = NULL;
		out->ndisc = 0;
		qw_sift_match_clear(out);
	}
	return ret;
}

/* The statistics and key of a batch, the same computation at both ends.
 * own_bit[i] and basis[i] are this end's bit and Bob's basis of entry i;
 * a_disc/b_disc the two ends' disclosed bits. */
static int build_result(const struct qw_sift_params *p, const struct qw_sift_match *m,
			const uint8_t *basis, const uint8_t *own_bit, const uint8_t *a_disc,
			const uint8_t *b_disc, struct qw_sift_result *res)
{
	struct qw_sift_stats *st = &res->st;
	uint64_t nkey = 0, sd, se;
	size_t i, d = 0, kpos = 0;
	int k;

	memset(res, 0, sizeof(*res));
	st->first_pulse = m->first_pulse;
	st->end_pulse = m->end_pulse;
	for (k = 0; k < NCLASS; k++)
		st->sent[k] = m->sent[k];
	for (i = 0; i < m->n; i++) {
		uint8_t f = m->flags[i];
		int b = basis[i];

		k = (f & QW_SIFT_F_CLASS_MASK) >> QW_SIFT_F_CLASS_SHIFT;
		st->detected[k]++;
		if (!(f & QW_SIFT_F_MATCH))
			continue;
		st->sifted[k][b]++;
		if (f & QW_SIFT_F_DISCLOSE) {
			st->disclosed[k][b]++;
			st->errors[k][b] += a_disc[d] != b_disc[d];
			d++;
		} else if (is_key_candidate(p, k, b)) {
			nkey++;
		} else {
			/* A sifted bit that is neither key nor disclosed: the
			 * ends disagree on the parameters. */
			return QW_EPROTO;
		}
	}
	if (d != m->ndisc)
		return QW_EPROTO;
	res->key = qw_bitvec_new((size_t)nkey);
	if (!res->key)
		return QW_ENOMEM;
	for (i = 0; i < m->n; i++)
		if ((m->flags[i] & (QW_SIFT_F_MATCH | QW_SIFT_F_DISCLOSE)) == QW_SIFT_F_MATCH)
			qw_bitvec_set(res->key, kpos++, own_bit[i]);
	st->key_bits = nkey;
	/* The key-basis sample of the key-making classes, else everything
	 * disclosed of those classes (see qw_sift_result). */
	sd = se = 0;
	for (k = 0; k < NCLASS; k++)
		for (int b = 0; b < 2; b++)
			if (is_key_candidate(p, k, b)) {
				sd += st->disclosed[k][b];
				se += st->errors[k][b];
			}
	if (sd == 0)
		for (k = 0; k < NCLASS; k++)
			if (p->key_all_classes || k == QW_CLASS_SIGNAL)
				for (int b = 0; b < 2; b++) {
					sd += st->disclosed[k][b];
					se += st->errors[k][b];
				}
	res->qber_estimate = sd ? (double)se / (double)sd : 0.5;
	return 0;
}

int qw_sift_bob_finish(const struct qw_sift_params *p, const struct qw_detections *bob,
		       const struct qw_sift_match *m, struct qw_sift_bits *reply,
		       struct qw_sift_result *res)
{
	size_t i, d = 0;
	int ret;

	QW_REQUIRE(p != NULL && bob != NULL && m != NULL && reply != NULL && res != NULL);
	memset(reply, 0, sizeof(*reply));
	memset(res, 0, sizeof(*res));
	if (!params_ok(p))
		return QW_EINVAL;
	if (m->first_pulse != bob->first_pulse || m->end_pulse != bob->end_pulse || m->n != bob->n)
		return QW_EPROTO;
	if (m->ndisc) {
		reply->bits = malloc(m->ndisc);
		if (!reply->bits)
			return QW_ENOMEM;
	}
	reply->ndisc = m->ndisc;
	for (i = 0; i < m->n; i++) {
		if (!(m->flags[i] & QW_SIFT_F_DISCLOSE))
			continue;
		if (d == m->ndisc) {
			ret = QW_EPROTO;
			goto out;
		}
		reply->bits[d++] = bob->bit[i];
	}
	if (d != m->ndisc) {
		ret = QW_EPROTO;
		goto out;
	}
	ret = build_result(p, m, bob->basis, bob->bit, m->bits, reply->bits, res);
out:
	if (ret) {
		qw_sift_bits_clear(reply);
		qw_sift_result_clear(res);
	}
	return ret;
}

int qw_sift_alice_finish(const struct qw_sift_params *p, const struct qw_detections *alice,
			 const struct qw_sift_bases *b, const struct qw_sift_match *m,
			 const struct qw_sift_bits *bits, struct qw_sift_result *res)
{
	size_t *map = NULL, i;
	uint8_t *own = NULL;
	int ret = QW_ENOMEM;

	QW_REQUIRE(p != NULL && alice != NULL && b != NULL && m != NULL && bits != NULL &&
		   res != NULL);
	memset(res, 0, sizeof(*res));
	if (!params_ok(p))
		return QW_EINVAL;
	if (b->n != m->n || bits->ndisc != m->ndisc)
		return QW_EPROTO;
	if (b->n) {
		map = malloc(b->n * sizeof(*map));
		own = malloc(b->n);
		if (!map || !own)
			goto out;
	}
	ret = alice_map(alice, b, map);
	if (ret)
		goto out;
	for (i = 0; i < b->n; i++)
		own[i] = alice->bit[map[i]];
	ret = build_result(p, m, b->basis, own, m->bits, bits->bits, res);
out:
	free(map);
	qw_free_secret(own, b->n);
	if (ret)
		qw_sift_result_clear(res);
	return ret;
}

/* ---- stage -------------------------------------------------------------- */

static int stage_init(void **state, const void *params)
{
	const struct qw_sift_stage_params *sp = params;
	struct qw_sift_stage_params *s;

	QW_REQUIRE(state != NULL);
	if (!sp || !sp->fetch || !params_ok(&sp->sift))
		return QW_EINVAL;
	s = malloc(sizeof(*s));
	if (!s)
		return QW_ENOMEM;
	*s = *sp;
	*state = s;
	return 0;
}

static void stage_free(void *state)
{
	free(state);
}

static int recv_type(struct qw_distill_chan *chan, uint32_t want, uint8_t **msg, size_t *len)
{
	uint32_t type = 0;
	int ret = chan->recv(chan->ctx, &type, msg, len);

	if (ret)
		return ret;
	if (type != want) {
		free(*msg);
		*msg = NULL;
		return QW_EPROTO;
	}
	return 0;
}

static int run_bob(const struct qw_sift_stage_params *sp, const struct qw_detections *det,
		   struct qw_distill_chan *chan, struct qw_sift_result *res)
{
	struct qw_sift_bases bases = { 0 };
	struct qw_sift_match match = { 0 };
	struct qw_sift_bits bits = { 0 };
	uint8_t *msg = NULL;
	size_t len = 0;
	int ret;

	ret = qw_sift_bob_bases(det, &bases);
	if (!ret)
		ret = qw_sift_bases_encode(&bases, &msg, &len);
	if (!ret)
		ret = chan->send(chan->ctx, QW_SIFT_MSG_BASES, msg, len);
	free(msg);
	msg = NULL;
	if (!ret)
		ret = recv_type(chan, QW_SIFT_MSG_MATCH, &msg, &len);
	if (!ret)
		ret = qw_sift_match_decode(&match, msg, len);
	if (msg)
		qw_free_secret(msg, len);
	msg = NULL;
	if (!ret)
		ret = qw_sift_bob_finish(&sp->sift, det, &match, &bits, res);
	if (!ret)
		ret = qw_sift_bits_encode(&bits, &msg, &len);
	if (!ret)
		ret = chan->send(chan->ctx, QW_SIFT_MSG_BITS, msg, len);
	if (msg)
		qw_free_secret(msg, len);
	qw_sift_bases_clear(&bases);
	qw_sift_match_clear(&match);
	qw_sift_bits_clear(&bits);
	return ret;
}

static int run_alice(const struct qw_sift_stage_params *sp, const struct qw_detections *det,
		     struct qw_distill_chan *chan, struct qw_sift_result *res)
{
	struct qw_sift_bases bases = { 0 };
	struct qw_sift_match match = { 0 };
	struct qw_sift_bits bits = { 0 };
	uint8_t *msg = NULL;
	size_t len = 0;
	int ret;

	ret = recv_type(chan, QW_SIFT_MSG_BASES, &msg, &len);
	if (!ret)
		ret = qw_sift_bases_decode(&bases, msg, len);
	free(msg);
	msg = NULL;
	if (!ret)
		ret = qw_sift_alice_match(&sp->sift, sp->rng, det, &bases, &match);
	if (!ret)
		ret = qw_sift_match_encode(&match, &msg, &len);
	if (!ret)
		ret = chan->send(chan->ctx, QW_SIFT_MSG_MATCH, msg, len);
	if (msg)
		qw_free_secret(msg, len);
	msg = NULL;
	if (!ret)
		ret = recv_type(chan, QW_SIFT_MSG_BITS, &msg, &len);
	if (!ret)
		ret = qw_sift_bits_decode(&bits, msg, len);
	if (msg)
		qw_free_secret(msg, len);
	if (!ret)
		ret = qw_sift_alice_finish(&sp->sift, det, &bases, &match, &bits, res);
	qw_sift_bases_clear(&bases);
	qw_sift_match_clear(&match);
	qw_sift_bits_clear(&bits);
	return ret;
}

static enum qw_stage_result stage_process(void *state, struct qw_key_block *b,
					  struct qw_distill_chan *chan)
{
	const struct qw_sift_stage_params *sp = state;
	struct qw_sift_result res = { 0 };
	struct qw_detections *det;
	enum qw_stage_result out = QW_STAGE_ERROR;
	int ret;

	QW_REQUIRE(sp != NULL && b != NULL && chan != NULL);
	if (b->state != QW_BLOCK_RAW || b->key) {
		snprintf(b->drop_reason, sizeof(b->drop_reason), "sift: block is not RAW");
		return QW_STAGE_ERROR;
	}
	det = sp->fetch(sp->ctx, b->id);
	if (!det) {
		snprintf(b->drop_reason, sizeof(b->drop_reason), "sift: no detections");
		return QW_STAGE_DROP;
	}
	if (det->role != b->role) {
		snprintf(b->drop_reason, sizeof(b->drop_reason), "sift: record of the wrong role");
		goto out;
	}
	ret = b->role == QW_ROLE_BOB ? run_bob(sp, det, chan, &res) : run_alice(sp, det, chan, &res);
	if (ret) {
		snprintf(b->drop_reason, sizeof(b->drop_reason), "sift: %s", qw_strerror(ret));
		goto out;
	}
	if (sp->stats)
		sp->stats(sp->ctx, b->id, &res.st);
	b->key = res.key;
	res.key = NULL;
	b->qber_estimate = res.qber_estimate;
	b->state = QW_BLOCK_SIFTED;
	out = QW_STAGE_FORWARD;
	if (res.st.key_bits == 0) {
		snprintf(b->drop_reason, sizeof(b->drop_reason), "sift: no key bits");
		out = QW_STAGE_DROP;
	} else if (sp->sift.qber_abort > 0.0 && b->qber_estimate > sp->sift.qber_abort) {
		snprintf(b->drop_reason, sizeof(b->drop_reason),
			 "sift: QBER estimate %.4f above %.4f", b->qber_estimate,
			 sp->sift.qber_abort);
		out = QW_STAGE_DROP;
	}
out:
	qw_sift_result_clear(&res);
	qw_detections_free(det);
	return out;
}

const struct qw_stage qw_sift_stage = {
	.name = "sift",
	.init = stage_init,
	.process = stage_process,
	.free = stage_free,
};
