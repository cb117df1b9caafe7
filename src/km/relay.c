/* Hop-by-hop OTP key relay with Wegman-Carter authentication
 * (include/qwave/relay.h, docs/relay-routing.md). */
#include <stdlib.h>
#include <string.h>

#include "qwave/relay.h"
#include "qwave/secmem.h"

void qw_relay_msg_init(struct qw_relay_msg *m)
{
	QW_REQUIRE(m);
	memset(m, 0, sizeof(*m));
}

void qw_relay_msg_clear(struct qw_relay_msg *m)
{
	if (!m)
		return;
	for (uint32_t g = 0; m->groups && g < m->n_groups; g++)
		free(m->groups[g].ids);
	free(m->groups);
	free(m->ct);
	memset(m, 0, sizeof(*m));
}

static int path_valid(char (*path)[QW_KMLINK_ID_MAX + 1], size_t n)
{
	if (n < 2 || n > QW_RELAY_MAX_PATH)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (!qw_kmlink_id_valid(path[i]))
			return 0;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(path[i], path[j]))
				return 0;
	}
	return 1;
}

int qw_relay_msg_set_path(struct qw_relay_msg *m, const char *const *nodes, size_t n)
{
	char tmp[QW_RELAY_MAX_PATH][QW_KMLINK_ID_MAX + 1];

	QW_REQUIRE(m && (nodes || n == 0));
	if (n < 2 || n > QW_RELAY_MAX_PATH)
		return QW_EINVAL;
	memset(tmp, 0, sizeof(tmp));
	for (size_t i = 0; i < n; i++) {
		if (!qw_kmlink_id_valid(nodes[i]))
			return QW_EINVAL;
		strcpy(tmp[i], nodes[i]);
	}
	if (!path_valid(tmp, n))
		return QW_EINVAL;
	memcpy(m->path, tmp, sizeof(tmp));
	m->path_len = (uint8_t)n;
	m->hop = 0;
	return 0;
}

/* Same rules as the parser, so anything the API builds encodes and parses. */
static int group_valid(const struct qw_relay_group *g)
{
	if (g->size_bits == 0 || g->size_bits % 8 || g->size_bits > QW_STORE_KEY_MAX_BITS ||
	    g->count == 0 || g->count > QW_RELAY_MAX_KEYS || !g->ids)
		return 0;
	if (g->master[0] == 0)
		return g->n_slaves == 0;
	if (!qw_kmlink_id_valid(g->master) || g->n_slaves == 0 || g->n_slaves > QW_STORE_SLAVES_MAX)
		return 0;
	for (uint32_t i = 0; i < g->n_slaves; i++)
		if (!qw_kmlink_id_valid(g->slaves[i]))
			return 0;
	return 1;
}

uint32_t qw_relay_msg_keys(const struct qw_relay_msg *m)
{
	uint64_t n = 0;

	QW_REQUIRE(m);
	for (uint32_t g = 0; g < m->n_groups; g++)
		n += m->groups[g].count;
	return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

uint64_t qw_relay_payload_bits(const struct qw_relay_msg *m)
{
	uint64_t bits = 0;

	QW_REQUIRE(m);
	for (uint32_t g = 0; g < m->n_groups; g++)
		bits += (uint64_t)m->groups[g].count * m->groups[g].size_bits;
	return bits;
}

uint64_t qw_relay_hop_pad_bits(const struct qw_relay_msg *m)
{
	return qw_relay_payload_bits(m) + QW_RELAY_TAG_PAD_BITS +
	       ((m->flags & QW_RELAY_F_NEWKEY) ? QW_RELAY_HASH_KEY_BITS : 0);
}

int qw_relay_msg_add_group(struct qw_relay_msg *m, const struct qw_relay_group *g)
{
	struct qw_relay_group *grow, *ng;
	uint64_t keys, bytes;

	QW_REQUIRE(m && g);
	if (!group_valid(g) || m->n_groups >= QW_RELAY_MAX_GROUPS)
		return QW_EINVAL;
	keys = (uint64_t)qw_relay_msg_keys(m) + g->count;
	bytes = qw_relay_payload_bits(m) / 8 + (uint64_t)g->count * (g->size_bits / 8);
	if (keys > QW_RELAY_MAX_KEYS || bytes > QW_RELAY_MAX_PAYLOAD_BYTES)
		return QW_EINVAL;
	grow = realloc(m->groups, (m->n_groups + 1) * sizeof(*grow));
	if (!grow)
		return QW_ENOMEM;
	m->groups = grow;
	ng = &m->groups[m->n_groups];
	*ng = *g;
	ng->ids = malloc((size_t)g->count * sizeof(*ng->ids));
	if (!ng->ids)
		return QW_ENOMEM;
	memcpy(ng->ids, g->ids, (size_t)g->count * sizeof(*ng->ids));
	m->n_groups++;
	return 0;
}

double qw_relay_efficiency(uint64_t payload_bits, uint32_t rekey_every)
{
	double over = QW_RELAY_TAG_PAD_BITS;

	if (payload_bits == 0)
		return 0.0;
	if (rekey_every)
		over += (double)QW_RELAY_HASH_KEY_BITS / rekey_every;
	return (double)payload_bits / ((double)payload_bits + over);
}

uint32_t qw_relay_min_batch(uint32_t key_bits, double target, uint32_t rekey_every)
{
	uint32_t k;

	if (key_bits == 0 || !(target > 0.0 && target < 1.0))
		return 0;
	/* eta(K) is increasing in K: the closed form K >= target/(1-target) *
	 * overhead / key_bits gives the start, the loop absorbs rounding */
	{
		double over = QW_RELAY_TAG_PAD_BITS +
			      (rekey_every ? (double)QW_RELAY_HASH_KEY_BITS / rekey_every : 0.0);
		double kf = target / (1.0 - target) * over / key_bits;

		if (kf > (double)UINT32_MAX - 2)
			return 0;
		k = kf < 1.0 ? 1 : (uint32_t)kf;
	}
	while (k > 1 && qw_relay_efficiency((uint64_t)(k - 1) * key_bits, rekey_every) >= target)
		k--;
	while (qw_relay_efficiency((uint64_t)k * key_bits, rekey_every) < target)
		k++;
	return k;
}

int qw_relay_batch_ready(const struct qw_relay_msg *m, double target, uint32_t rekey_every)
{
	return qw_relay_efficiency(qw_relay_payload_bits(m), rekey_every) >= target;
}

/* ---- MAC state ------------------------------------------------------------ */

void qw_relay_mac_init(struct qw_relay_mac *mk, uint32_t rekey_every)
{
	QW_REQUIRE(mk);
	memset(mk, 0, sizeof(*mk));
	mk->rekey_every = rekey_every;
}

void qw_relay_mac_reset(struct qw_relay_mac *mk)
{
	if (!mk)
		return;
	qw_wcmac_free(mk->wc);
	mk->wc = NULL;
	mk->uses = 0;
}

int qw_relay_mac_due(const struct qw_relay_mac *mk)
{
	QW_REQUIRE(mk);
	return !mk->wc || (mk->rekey_every && mk->uses >= mk->rekey_every);
}

/* ---- encoding --------------------------------------------------------------- */

/* Structural validity of m's header and groups (not ct). */
static int msg_valid(const struct qw_relay_msg *m)
{
	uint64_t keys = 0, bytes = 0;

	if (m->flags & ~QW_RELAY_F_NEWKEY)
		return 0;
	if (!path_valid((char (*)[QW_KMLINK_ID_MAX + 1])m->path, m->path_len) ||
	    m->hop + 1 >= m->path_len)
		return 0;
	if (m->pad_pos.block_id >= (UINT64_C(1) << 63))
		return 0;
	if (m->n_groups == 0 || m->n_groups > QW_RELAY_MAX_GROUPS || !m->groups)
		return 0;
	for (uint32_t g = 0; g < m->n_groups; g++) {
		if (!group_valid(&m->groups[g]))
			return 0;
		keys += m->groups[g].count;
		bytes += (uint64_t)m->groups[g].count * (m->groups[g].size_bits / 8);
	}
	return keys <= QW_RELAY_MAX_KEYS && bytes <= QW_RELAY_MAX_PAYLOAD_BYTES;
}

/* Everything before the ciphertext, and the u32 ct_len. */
static int encode_head(const struct qw_relay_msg *m, struct qw_buf *b)
{
	int ret = QW_ENOMEM;

	if (qw_buf_append_u8(b, QW_RELAY_VERSION) || qw_buf_append_u8(b, m->flags) ||
	    qw_buf_append_u8(b, m->hop) || qw_buf_append_u8(b, m->path_len) ||
	    qw_buf_append(b, m->relay_id.b, QW_UUID_BYTES) ||
	    qw_buf_append_u64be(b, (uint64_t)m->created) ||
	    qw_buf_append_u64be(b, m->pad_pos.block_id) || qw_buf_append_u64be(b, m->pad_pos.bit))
		return ret;
	for (uint8_t i = 0; i < m->path_len; i++)
		if (qw_kmlink_id_write(b, m->path[i], 0))
			return ret;
	if (qw_buf_append_u8(b, (uint8_t)m->n_groups))
		return ret;
	for (uint32_t gi = 0; gi < m->n_groups; gi++) {
		const struct qw_relay_group *g = &m->groups[gi];

		if (qw_buf_append_u32be(b, g->size_bits) || qw_buf_append_u32be(b, g->count) ||
		    qw_buf_append_u64be(b, (uint64_t)g->expires) || qw_kmlink_id_write(b, g->master, 1) ||
		    qw_buf_append_u8(b, (uint8_t)g->n_slaves))
			return ret;
		for (uint32_t s = 0; s < g->n_slaves; s++)
			if (qw_kmlink_id_write(b, g->slaves[s], 0))
				return ret;
		if (qw_buf_append(b, g->ids, (size_t)g->count * QW_UUID_BYTES))
			return ret;
	}
	if (qw_buf_append_u32be(b, (uint32_t)(qw_relay_payload_bits(m) / 8)))
		return ret;
	return 0;
}

int qw_relay_encode(const struct qw_relay_msg *m, struct qw_buf *out)
{
	size_t start;

	QW_REQUIRE(m && out);
	if (!msg_valid(m) || m->ct_len != qw_relay_payload_bits(m) / 8 || (m->ct_len && !m->ct))
		return QW_EINVAL;
	start = out->len;
	if (encode_head(m, out) || qw_buf_append(out, m->ct, m->ct_len) ||
	    qw_buf_append(out, m->tag, sizeof(m->tag))) {
		out->len = start;
		return QW_ENOMEM;
	}
	return 0;
}

int qw_relay_seal_hop(const struct qw_relay_msg *m, const uint8_t *keys, size_t keys_len,
		      const uint8_t *pad, size_t pad_len, struct qw_relay_mac *mk,
		      struct qw_buf *out)
{
	const int newkey = (m->flags & QW_RELAY_F_NEWKEY) != 0;
	const uint8_t *tag_pad, *key_pad;
	struct qw_wcmac *wc = NULL;
	size_t start;
	uint8_t *ct;
	int ret;

	QW_REQUIRE(m && mk && out && (keys || keys_len == 0) && (pad || pad_len == 0));
	if (!msg_valid(m) || keys_len != qw_relay_payload_bits(m) / 8 ||
	    pad_len != qw_relay_hop_pad_bits(m) / 8)
		return QW_EINVAL;
	if (!newkey && qw_relay_mac_due(mk))
		return QW_ESTATE;
	tag_pad = pad + (newkey ? QW_WCMAC_KEY_BYTES : 0);
	key_pad = tag_pad + QW_WCMAC_OTP_BYTES;
	if (newkey) {
		wc = qw_wcmac_new(pad);
		if (!wc)
			return QW_ENOMEM;
	}
	start = out->len;
	ret = QW_ENOMEM;
	if (encode_head(m, out) || qw_buf_reserve(out, keys_len + QW_WCMAC_TAG_BYTES))
		goto out;
	ct = out->data + out->len;
	for (size_t i = 0; i < keys_len; i++)
		ct[i] = keys[i] ^ key_pad[i];
	out->len += keys_len;
	/* Wegman-Carter: tag = h_k(header | ciphertext) XOR fresh pad, so the
	 * tag covers the ciphertext (encrypt-then-MAC) and every routing field */
	qw_wcmac_tag(wc ? wc : mk->wc, tag_pad, out->data + start, out->len - start,
		     out->data + out->len);
	out->len += QW_WCMAC_TAG_BYTES;
	if (wc) {
		qw_relay_mac_reset(mk);
		mk->wc = wc;
		wc = NULL;
	}
	mk->uses++;
	ret = 0;
out:
	if (ret)
		out->len = start;
	qw_wcmac_free(wc);
	return ret;
}

int qw_relay_open_hop(const struct qw_relay_msg *m, const uint8_t *pad, size_t pad_len,
		      struct qw_relay_mac *mk, uint8_t *keys, size_t cap)
{
	const int newkey = (m->flags & QW_RELAY_F_NEWKEY) != 0;
	const uint8_t *tag_pad, *key_pad;
	struct qw_wcmac *wc = NULL;
	struct qw_buf b;
	int ret;

	QW_REQUIRE(m && mk && (pad || pad_len == 0) && (keys || cap == 0));
	qw_buf_init(&b, 0);
	if (!msg_valid(m) || m->ct_len != qw_relay_payload_bits(m) / 8 || !m->ct ||
	    pad_len != qw_relay_hop_pad_bits(m) / 8)
		return QW_EINVAL;
	if (cap < m->ct_len)
		return QW_ERANGE;
	if (!newkey && !mk->wc)
		return QW_ESTATE;
	tag_pad = pad + (newkey ? QW_WCMAC_KEY_BYTES : 0);
	key_pad = tag_pad + QW_WCMAC_OTP_BYTES;
	ret = QW_ENOMEM;
	if (newkey && !(wc = qw_wcmac_new(pad)))
		goto out;
	/* the encoding is canonical: these are the bytes the sender tagged */
	if (encode_head(m, &b) || qw_buf_append(&b, m->ct, m->ct_len))
		goto out;
	ret = qw_wcmac_verify(wc ? wc : mk->wc, tag_pad, b.data, b.len, m->tag);
	if (ret) {
		/* a failed attempt tells the forger which keys are wrong: never
		 * verify under this hash key again */
		qw_relay_mac_reset(mk);
		goto out;
	}
	for (uint32_t i = 0; i < m->ct_len; i++)
		keys[i] = m->ct[i] ^ key_pad[i];
	if (wc) {
		qw_relay_mac_reset(mk);
		mk->wc = wc;
		wc = NULL;
	}
	mk->uses++;
out:
	qw_wcmac_free(wc);
	qw_buf_free(&b);
	return ret;
}

int qw_relay_hop_check(const struct qw_relay_msg *m, const char *self, const char *from,
		       int *last)
{
	QW_REQUIRE(m && self && from && last);
	if (m->hop + 1 >= m->path_len || strcmp(m->path[m->hop], from) ||
	    strcmp(m->path[m->hop + 1], self))
		return QW_EPROTO;
	*last = m->hop + 2 == m->path_len;
	return 0;
}

/* ---- parser ----------------------------------------------------------------- */

static int cmp_uuid(const void *a, const void *b)
{
	return qw_uuid_compare(a, b);
}

static int ids_unique(const struct qw_relay_msg *m)
{
	uint32_t n = qw_relay_msg_keys(m), k = 0;
	struct qw_uuid *all;
	int ok = 1;

	all = malloc((size_t)n * sizeof(*all));
	if (!all)
		return QW_ENOMEM;
	for (uint32_t g = 0; g < m->n_groups; g++)
		for (uint32_t i = 0; i < m->groups[g].count; i++)
			all[k++] = m->groups[g].ids[i];
	qsort(all, n, sizeof(*all), cmp_uuid);
	for (uint32_t i = 1; i < n && ok; i++)
		ok = qw_uuid_compare(&all[i - 1], &all[i]) != 0;
	free(all);
	return ok ? 0 : QW_EPARSE;
}

static int parse_group(struct qw_reader *r, struct qw_relay_group *g, uint64_t *keys,
		       uint64_t *bytes)
{
	uint64_t expires;
	uint8_t ns;

	if (qw_reader_read_u32be(r, &g->size_bits) || qw_reader_read_u32be(r, &g->count) ||
	    qw_reader_read_u64be(r, &expires) || qw_kmlink_id_read(r, g->master, 1) ||
	    qw_reader_read_u8(r, &ns))
		return QW_EPARSE;
	g->expires = (int64_t)expires;
	g->n_slaves = ns;
	if (g->size_bits == 0 || g->size_bits % 8 || g->size_bits > QW_STORE_KEY_MAX_BITS ||
	    g->count == 0 || g->count > QW_RELAY_MAX_KEYS)
		return QW_EPARSE;
	*keys += g->count;
	*bytes += (uint64_t)g->count * (g->size_bits / 8);
	if (*keys > QW_RELAY_MAX_KEYS || *bytes > QW_RELAY_MAX_PAYLOAD_BYTES)
		return QW_EPARSE;
	if ((g->master[0] == 0) != (ns == 0) || ns > QW_STORE_SLAVES_MAX)
		return QW_EPARSE;
	for (unsigned i = 0; i < ns; i++)
		if (qw_kmlink_id_read(r, g->slaves[i], 0))
			return QW_EPARSE;
	/* check the length before allocating: a short message cannot make us
	 * allocate for 4096 ids */
	if (qw_reader_remaining(r) < (size_t)g->count * QW_UUID_BYTES)
		return QW_EPARSE;
	g->ids = malloc((size_t)g->count * sizeof(*g->ids));
	if (!g->ids)
		return QW_ENOMEM;
	for (uint32_t i = 0; i < g->count; i++)
		if (qw_reader_read_bytes(r, g->ids[i].b, QW_UUID_BYTES))
			return QW_EPARSE;
	return 0;
}

static int parse_msg(struct qw_reader *r, struct qw_relay_msg *m)
{
	uint8_t ver, ng;
	uint64_t created, keys = 0, bytes = 0;
	int ret;

	if (qw_reader_read_u8(r, &ver) || ver != QW_RELAY_VERSION ||
	    qw_reader_read_u8(r, &m->flags) || (m->flags & ~QW_RELAY_F_NEWKEY) ||
	    qw_reader_read_u8(r, &m->hop) || qw_reader_read_u8(r, &m->path_len) ||
	    m->path_len < 2 || m->path_len > QW_RELAY_MAX_PATH || m->hop + 1 >= m->path_len ||
	    qw_reader_read_bytes(r, m->relay_id.b, QW_UUID_BYTES) ||
	    qw_reader_read_u64be(r, &created) || qw_reader_read_u64be(r, &m->pad_pos.block_id) ||
	    qw_reader_read_u64be(r, &m->pad_pos.bit) ||
	    m->pad_pos.block_id >= (UINT64_C(1) << 63))
		return QW_EPARSE;
	m->created = (int64_t)created;
	for (uint8_t i = 0; i < m->path_len; i++)
		if (qw_kmlink_id_read(r, m->path[i], 0))
			return QW_EPARSE;
	if (!path_valid(m->path, m->path_len))
		return QW_EPARSE;
	if (qw_reader_read_u8(r, &ng) || ng == 0 || ng > QW_RELAY_MAX_GROUPS)
		return QW_EPARSE;
	m->groups = calloc(ng, sizeof(*m->groups));
	if (!m->groups)
		return QW_ENOMEM;
	for (uint8_t g = 0; g < ng; g++) {
		/* count the group before filling it, so clear frees its ids */
		m->n_groups = g + 1u;
		if ((ret = parse_group(r, &m->groups[g], &keys, &bytes)))
			return ret;
	}
	if (qw_reader_read_u32be(r, &m->ct_len) || m->ct_len != bytes ||
	    qw_reader_remaining(r) != (size_t)m->ct_len + QW_WCMAC_TAG_BYTES)
		return QW_EPARSE;
	if ((ret = ids_unique(m)))
		return ret;
	m->ct = malloc(m->ct_len ? m->ct_len : 1);
	if (!m->ct)
		return QW_ENOMEM;
	if (qw_reader_read_bytes(r, m->ct, m->ct_len) ||
	    qw_reader_read_bytes(r, m->tag, QW_WCMAC_TAG_BYTES))
		return QW_EPARSE;
	return qw_reader_expect_end(r);
}

int qw_relay_parse(const uint8_t *buf, size_t len, struct qw_relay_msg *m)
{
	struct qw_reader r;
	int ret;

	QW_REQUIRE(m && (buf || len == 0));
	qw_relay_msg_init(m);
	qw_reader_init(&r, buf, len);
	ret = parse_msg(&r, m);
	if (ret)
		qw_relay_msg_clear(m);
	return ret;
}

/* ---- ack ---------------------------------------------------------------------- */

/* QW_E* codes are -1..-99 (error.h uses -1..-19). */
static int status_valid(int32_t s)
{
	return s <= 0 && s >= -99;
}

int qw_relay_ack_encode(const struct qw_relay_ack *a, struct qw_buf *out)
{
	size_t start;

	QW_REQUIRE(a && out);
	if (!status_valid(a->status))
		return QW_EINVAL;
	start = out->len;
	if (qw_buf_append_u8(out, QW_RELAY_VERSION) ||
	    qw_buf_append(out, a->relay_id.b, QW_UUID_BYTES) || qw_buf_append_u8(out, a->hop) ||
	    qw_buf_append_u32be(out, (uint32_t)a->status)) {
		out->len = start;
		return QW_ENOMEM;
	}
	return 0;
}

int qw_relay_ack_parse(const uint8_t *buf, size_t len, struct qw_relay_ack *a)
{
	struct qw_reader r;
	struct qw_relay_ack t;
	uint8_t ver;
	uint32_t st;

	QW_REQUIRE(a && (buf || len == 0));
	qw_reader_init(&r, buf, len);
	if (qw_reader_read_u8(&r, &ver) || ver != QW_RELAY_VERSION ||
	    qw_reader_read_bytes(&r, t.relay_id.b, QW_UUID_BYTES) ||
	    qw_reader_read_u8(&r, &t.hop) || qw_reader_read_u32be(&r, &st) ||
	    qw_reader_expect_end(&r))
		return QW_EPARSE;
	t.status = (int32_t)st;
	if (!status_valid(t.status))
		return QW_EPARSE;
	*a = t;
	return 0;
}

/* ---- pad allocation ------------------------------------------------------------ */

static int pad_valid(const struct qw_relay_pad *p, int grant)
{
	return p->bits >= 8 && p->bits % 8 == 0 && p->bits <= QW_RELAY_MAX_HOP_PAD_BITS &&
	       (!grant || p->pos.block_id < (UINT64_C(1) << 63));
}

int qw_relay_pad_encode(const struct qw_relay_pad *p, int grant, struct qw_buf *out)
{
	size_t start;

	QW_REQUIRE(p && out);
	if (!pad_valid(p, grant))
		return QW_EINVAL;
	start = out->len;
	if (qw_buf_append_u8(out, QW_RELAY_VERSION) ||
	    qw_buf_append(out, p->relay_id.b, QW_UUID_BYTES) || qw_buf_append_u64be(out, p->bits) ||
	    (grant && (qw_buf_append_u64be(out, p->pos.block_id) ||
		       qw_buf_append_u64be(out, p->pos.bit)))) {
		out->len = start;
		return QW_ENOMEM;
	}
	return 0;
}

int qw_relay_pad_parse(const uint8_t *buf, size_t len, int grant, struct qw_relay_pad *p)
{
	struct qw_reader r;
	struct qw_relay_pad t;
	uint8_t ver;

	QW_REQUIRE(p && (buf || len == 0));
	memset(&t, 0, sizeof(t));
	qw_reader_init(&r, buf, len);
	if (qw_reader_read_u8(&r, &ver) || ver != QW_RELAY_VERSION ||
	    qw_reader_read_bytes(&r, t.relay_id.b, QW_UUID_BYTES) ||
	    qw_reader_read_u64be(&r, &t.bits) ||
	    (grant && (qw_reader_read_u64be(&r, &t.pos.block_id) ||
		       qw_reader_read_u64be(&r, &t.pos.bit))) ||
	    qw_reader_expect_end(&r) || !pad_valid(&t, grant))
		return QW_EPARSE;
	*p = t;
	return 0;
}

/* ---- replay window -------------------------------------------------------------- */

/* A FIFO ring of (id, created) in arrival order plus a chained hash index
 * into it. The oldest entry is evicted only once its created time is more
 * than max_age in the past: from then on the created-time check refuses
 * every message carrying that id, so forgetting it loses nothing. */
struct replay_ent {
	struct qw_uuid id;
	int64_t created;
	uint32_t next; /* next entry in the same bucket, or NIL */
};

#define NIL UINT32_MAX

struct qw_relay_replay {
	struct replay_ent *ent;
	uint32_t *bucket;
	size_t cap, nbuckets, head, count; /* head: oldest entry */
	int64_t max_age;
};

struct qw_relay_replay *qw_relay_replay_new(size_t capacity, int64_t max_age_ms)
{
	struct qw_relay_replay *r;

	if (capacity == 0 || capacity >= NIL / 2 || max_age_ms <= 0)
		return NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->cap = capacity;
	r->nbuckets = 2 * capacity;
	r->max_age = max_age_ms;
	r->ent = calloc(capacity, sizeof(*r->ent));
	r->bucket = malloc(r->nbuckets * sizeof(*r->bucket));
	if (!r->ent || !r->bucket) {
		qw_relay_replay_free(r);
		return NULL;
	}
	for (size_t i = 0; i < r->nbuckets; i++)
		r->bucket[i] = NIL;
	return r;
}

void qw_relay_replay_free(struct qw_relay_replay *r)
{
	if (!r)
		return;
	free(r->ent);
	free(r->bucket);
	free(r);
}

size_t qw_relay_replay_count(const struct qw_relay_replay *r)
{
	QW_REQUIRE(r);
	return r->count;
}

/* Relay ids are random UUIDs chosen by authenticated origins; FNV-1a is
 * enough to spread them. */
static size_t bucket_of(const struct qw_relay_replay *r, const struct qw_uuid *id)
{
	uint64_t h = UINT64_C(14695981039346656037);

	for (int i = 0; i < QW_UUID_BYTES; i++)
		h = (h ^ id->b[i]) * UINT64_C(1099511628211);
	return (size_t)(h % r->nbuckets);
}

static void evict_oldest(struct qw_relay_replay *r)
{
	uint32_t idx = (uint32_t)r->head;
	uint32_t *link = &r->bucket[bucket_of(r, &r->ent[idx].id)];

	while (*link != idx)
		link = &r->ent[*link].next;
	*link = r->ent[idx].next;
	r->head = (r->head + 1) % r->cap;
	r->count--;
}

int qw_relay_replay_check(struct qw_relay_replay *r, const struct qw_uuid *id,
			  int64_t created_ms, int64_t now_ms)
{
	size_t b, slot;

	QW_REQUIRE(r && id);
	if (created_ms < now_ms - r->max_age || created_ms > now_ms + r->max_age)
		return QW_ERANGE;
	while (r->count && r->ent[r->head].created < now_ms - r->max_age)
		evict_oldest(r);
	b = bucket_of(r, id);
	for (uint32_t i = r->bucket[b]; i != NIL; i = r->ent[i].next)
		if (!qw_uuid_compare(&r->ent[i].id, id))
			return QW_EEXIST;
	if (r->count == r->cap)
		return QW_EAGAIN;
	slot = (r->head + r->count) % r->cap;
	r->ent[slot].id = *id;
	r->ent[slot].created = created_ms;
	r->ent[slot].next = r->bucket[b];
	r->bucket[b] = (uint32_t)slot;
	r->count++;
	return 0;
}
