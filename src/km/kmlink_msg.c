/* KM-link message encoding and the pure parser (include/qwave/kmlink.h). */
#include <stdlib.h>
#include <string.h>

#include "qwave/kmlink.h"
#include "qwave/secmem.h"

int qw_kmlink_id_valid(const char *id)
{
	size_t n = 0;

	if (!id)
		return 0;
	for (; id[n]; n++) {
		char c = id[n];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
		if (n >= QW_KMLINK_ID_MAX)
			return 0;
	}
	return n > 0;
}

void qw_kmlink_msg_clear(struct qw_kmlink_msg *m)
{
	if (!m)
		return;
	switch (m->type) {
	case QW_KMLINK_POOL_BLOCKS: free(m->u.pool.blocks); break;
	case QW_KMLINK_KEY_LIST: free(m->u.keylist.ids); break;
	case QW_KMLINK_KEYS_REQ:
	case QW_KMLINK_KEYS_NEW: free(m->u.keys.ids); break;
	case QW_KMLINK_SOURCE_BLOCK: free(m->u.source.ids); break;
	case QW_KMLINK_RELAY:
	case QW_KMLINK_RELAY_ACK:
	case QW_KMLINK_RELAY_PAD_REQ:
	case QW_KMLINK_RELAY_PAD:
	case QW_KMLINK_LSA: free(m->u.raw.body); break;
	default: break;
	}
	memset(m, 0, sizeof(*m));
}

int qw_kmlink_frame_len(const uint8_t *buf, size_t len, size_t *frame_len)
{
	uint32_t body;

	if (len < QW_KMLINK_HEADER_BYTES)
		return QW_EAGAIN;
	if (buf[0] != QW_KMLINK_VERSION || buf[2] || buf[3])
		return QW_EPARSE;
	body = (uint32_t)buf[4] << 24 | (uint32_t)buf[5] << 16 | (uint32_t)buf[6] << 8 | buf[7];
	if (body > QW_KMLINK_MAX_BODY)
		return QW_EPARSE;
	*frame_len = QW_KMLINK_HEADER_BYTES + (size_t)body;
	return 0;
}

int qw_kmlink_id_read(struct qw_reader *r, char out[QW_KMLINK_ID_MAX + 1], int allow_empty)
{
	uint8_t n;
	const uint8_t *p;

	QW_REQUIRE(r && out);
	if (qw_reader_read_u8(r, &n) || n > QW_KMLINK_ID_MAX || qw_reader_read_ref(r, &p, n))
		return QW_EPARSE;
	memcpy(out, p, n);
	out[n] = 0;
	if (n == 0)
		return allow_empty ? 0 : QW_EPARSE;
	/* every byte must be an ID character: an embedded NUL would make the
	 * ID shorter than its length byte says */
	return qw_kmlink_id_valid(out) && strlen(out) == n ? 0 : QW_EPARSE;
}

int qw_kmlink_id_write(struct qw_buf *b, const char *id, int allow_empty)
{
	size_t n;

	QW_REQUIRE(b && id);
	n = strlen(id);
	if (!(n == 0 && allow_empty) && !qw_kmlink_id_valid(id))
		return QW_EINVAL;
	if (qw_buf_append_u8(b, (uint8_t)n) || qw_buf_append(b, id, n))
		return QW_ENOMEM;
	return 0;
}

static int parse_keys(struct qw_reader *r, int with_ids, struct qw_kmlink_keys *k)
{
	uint8_t ns;

	if (with_ids && (qw_reader_read_u64be(r, &k->pos.block_id) ||
			 qw_reader_read_u64be(r, &k->pos.bit)))
		return QW_EPARSE;
	if (qw_reader_read_u32be(r, &k->size_bits) || qw_reader_read_u32be(r, &k->count))
		return QW_EPARSE;
	if (k->count == 0 || k->count > QW_KMLINK_MAX_KEYS || k->size_bits == 0 ||
	    k->size_bits % 8 || k->size_bits > QW_STORE_KEY_MAX_BITS)
		return QW_EPARSE;
	if (qw_kmlink_id_read(r, k->master, 0) || qw_reader_read_u8(r, &ns) || ns == 0 ||
	    ns > QW_STORE_SLAVES_MAX)
		return QW_EPARSE;
	k->n_slaves = ns;
	for (unsigned i = 0; i < ns; i++)
		if (qw_kmlink_id_read(r, k->slaves[i], 0))
			return QW_EPARSE;
	if (!with_ids)
		return 0;
	if (qw_reader_remaining(r) != (size_t)k->count * QW_UUID_BYTES)
		return QW_EPARSE;
	k->ids = malloc((size_t)k->count * sizeof(*k->ids));
	if (!k->ids)
		return QW_ENOMEM;
	for (uint32_t i = 0; i < k->count; i++)
		if (qw_reader_read_bytes(r, k->ids[i].b, QW_UUID_BYTES))
			return QW_EPARSE;
	return 0;
}

static int parse_body(struct qw_reader *r, struct qw_kmlink_msg *m)
{
	uint32_t n, e;

	switch (m->type) {
	case QW_KMLINK_HELLO:
		if (qw_reader_read_u8(r, &m->u.hello.channel) ||
		    (m->u.hello.channel != QW_KMLINK_CHAN_KM && m->u.hello.channel != QW_KMLINK_CHAN_QKD))
			return QW_EPARSE;
		return qw_kmlink_id_read(r, m->u.hello.node, 0);
	case QW_KMLINK_POOL_BLOCKS:
		if (qw_reader_read_u32be(r, &n) || n > QW_KMLINK_MAX_LIST ||
		    qw_reader_remaining(r) != (size_t)n * 24)
			return QW_EPARSE;
		if (n) {
			m->u.pool.blocks = malloc((size_t)n * sizeof(*m->u.pool.blocks));
			if (!m->u.pool.blocks)
				return QW_ENOMEM;
		}
		m->u.pool.n = n;
		for (uint32_t i = 0; i < n; i++) {
			struct qw_store_block_state *b = &m->u.pool.blocks[i];
			if (qw_reader_read_u64be(r, &b->block_id) || qw_reader_read_u64be(r, &b->nbits) ||
			    qw_reader_read_u64be(r, &b->used) || b->used > b->nbits ||
			    b->block_id >= (UINT64_C(1) << 63))
				return QW_EPARSE;
		}
		return 0;
	case QW_KMLINK_KEY_LIST:
		if (qw_reader_read_u32be(r, &n) || n > QW_KMLINK_MAX_LIST ||
		    qw_reader_remaining(r) != (size_t)n * QW_UUID_BYTES)
			return QW_EPARSE;
		if (n) {
			m->u.keylist.ids = malloc((size_t)n * sizeof(*m->u.keylist.ids));
			if (!m->u.keylist.ids)
				return QW_ENOMEM;
		}
		m->u.keylist.n = n;
		for (uint32_t i = 0; i < n; i++)
			if (qw_reader_read_bytes(r, m->u.keylist.ids[i].b, QW_UUID_BYTES))
				return QW_EPARSE;
		return 0;
	case QW_KMLINK_RESYNC_DONE:
	case QW_KMLINK_KEYS_ACK:
		return 0;
	case QW_KMLINK_KEYS_REQ:
		return parse_keys(r, 0, &m->u.keys);
	case QW_KMLINK_KEYS_NEW:
		return parse_keys(r, 1, &m->u.keys);
	case QW_KMLINK_SOURCE_BLOCK:
		if (qw_reader_read_u64be(r, &m->u.source.block_id) ||
		    qw_reader_read_u32be(r, &m->u.source.key_bits) || qw_reader_read_u32be(r, &n) ||
		    m->u.source.block_id >= (UINT64_C(1) << 63) || m->u.source.key_bits == 0 ||
		    m->u.source.key_bits % 8 || m->u.source.key_bits > QW_STORE_KEY_MAX_BITS || n == 0 ||
		    n > QW_KMLINK_MAX_KEYS || qw_reader_remaining(r) != (size_t)n * QW_UUID_BYTES)
			return QW_EPARSE;
		m->u.source.ids = malloc((size_t)n * sizeof(*m->u.source.ids));
		if (!m->u.source.ids)
			return QW_ENOMEM;
		m->u.source.n = n;
		for (uint32_t i = 0; i < n; i++)
			if (qw_reader_read_bytes(r, m->u.source.ids[i].b, QW_UUID_BYTES))
				return QW_EPARSE;
		return 0;
	case QW_KMLINK_SOURCE_ACK:
	case QW_KMLINK_SOURCE_DROP:
		if (qw_reader_read_u64be(r, &m->u.source.block_id) ||
		    m->u.source.block_id >= (UINT64_C(1) << 63))
			return QW_EPARSE;
		return 0;
	case QW_KMLINK_KEYS_NACK:
		if (qw_reader_read_u32be(r, &e))
			return QW_EPARSE;
		m->u.nack_error = (int32_t)e;
		/* only codes that exist: QW_E* are -1..-19 */
		return m->u.nack_error < 0 && m->u.nack_error >= -64 ? 0 : QW_EPARSE;
	case QW_KMLINK_RELAY:
	case QW_KMLINK_RELAY_ACK:
	case QW_KMLINK_RELAY_PAD_REQ:
	case QW_KMLINK_RELAY_PAD:
	case QW_KMLINK_LSA:
		/* opaque here: relay.h and routing.h parse these bodies */
		m->u.raw.len = qw_reader_remaining(r);
		if (m->u.raw.len == 0)
			return QW_EPARSE;
		m->u.raw.body = malloc(m->u.raw.len);
		if (!m->u.raw.body)
			return QW_ENOMEM;
		return qw_reader_read_bytes(r, m->u.raw.body, m->u.raw.len) ? QW_EPARSE : 0;
	case QW_KMLINK_PING:
		return 0;
	default:
		return QW_EPARSE; /* management range: not spoken yet */
	}
}

int qw_kmlink_parse(const uint8_t *buf, size_t len, struct qw_kmlink_msg *m)
{
	struct qw_reader r;
	size_t flen;
	int ret;

	QW_REQUIRE(m != NULL && (buf != NULL || len == 0));
	memset(m, 0, sizeof(*m));
	ret = qw_kmlink_frame_len(buf, len, &flen);
	if (ret == QW_EAGAIN || (ret == 0 && flen != len))
		return QW_EPARSE;
	if (ret)
		return ret;
	m->type = buf[1];
	m->seq = 0;
	for (int i = 0; i < 8; i++)
		m->seq = m->seq << 8 | buf[8 + i];
	qw_reader_init(&r, buf + QW_KMLINK_HEADER_BYTES, len - QW_KMLINK_HEADER_BYTES);
	ret = parse_body(&r, m);
	if (!ret && qw_reader_expect_end(&r))
		ret = QW_EPARSE;
	if (ret)
		qw_kmlink_msg_clear(m);
	return ret;
}

static int encode_keys(const struct qw_kmlink_keys *k, int with_ids, struct qw_buf *b)
{
	int ret;

	if (k->count == 0 || k->count > QW_KMLINK_MAX_KEYS || k->size_bits == 0 ||
	    k->size_bits % 8 || k->size_bits > QW_STORE_KEY_MAX_BITS || k->n_slaves == 0 ||
	    k->n_slaves > QW_STORE_SLAVES_MAX || (with_ids && !k->ids))
		return QW_EINVAL;
	if (with_ids && (qw_buf_append_u64be(b, k->pos.block_id) || qw_buf_append_u64be(b, k->pos.bit)))
		return QW_ENOMEM;
	if (qw_buf_append_u32be(b, k->size_bits) || qw_buf_append_u32be(b, k->count))
		return QW_ENOMEM;
	if ((ret = qw_kmlink_id_write(b, k->master, 0)))
		return ret;
	if (qw_buf_append_u8(b, (uint8_t)k->n_slaves))
		return QW_ENOMEM;
	for (uint32_t i = 0; i < k->n_slaves; i++)
		if ((ret = qw_kmlink_id_write(b, k->slaves[i], 0)))
			return ret;
	if (with_ids)
		for (uint32_t i = 0; i < k->count; i++)
			if (qw_buf_append(b, k->ids[i].b, QW_UUID_BYTES))
				return QW_ENOMEM;
	return 0;
}

int qw_kmlink_encode(const struct qw_kmlink_msg *m, struct qw_buf *out)
{
	size_t start = out->len, body;
	int ret = QW_ENOMEM;

	QW_REQUIRE(m != NULL && out != NULL);
	if (qw_buf_append_u8(out, QW_KMLINK_VERSION) || qw_buf_append_u8(out, m->type) ||
	    qw_buf_append_u16be(out, 0) || qw_buf_append_u32be(out, 0) ||
	    qw_buf_append_u64be(out, m->seq))
		goto fail;
	switch (m->type) {
	case QW_KMLINK_HELLO:
		ret = QW_EINVAL;
		if (m->u.hello.channel != QW_KMLINK_CHAN_KM && m->u.hello.channel != QW_KMLINK_CHAN_QKD)
			goto fail;
		ret = QW_ENOMEM;
		if (qw_buf_append_u8(out, m->u.hello.channel))
			goto fail;
		if ((ret = qw_kmlink_id_write(out, m->u.hello.node, 0)))
			goto fail;
		break;
	case QW_KMLINK_POOL_BLOCKS:
		ret = QW_EINVAL;
		if (m->u.pool.n > QW_KMLINK_MAX_LIST)
			goto fail;
		ret = QW_ENOMEM;
		if (qw_buf_append_u32be(out, (uint32_t)m->u.pool.n))
			goto fail;
		for (size_t i = 0; i < m->u.pool.n; i++) {
			const struct qw_store_block_state *b = &m->u.pool.blocks[i];
			if (qw_buf_append_u64be(out, b->block_id) || qw_buf_append_u64be(out, b->nbits) ||
			    qw_buf_append_u64be(out, b->used))
				goto fail;
		}
		break;
	case QW_KMLINK_KEY_LIST:
		ret = QW_EINVAL;
		if (m->u.keylist.n > QW_KMLINK_MAX_LIST)
			goto fail;
		ret = QW_ENOMEM;
		if (qw_buf_append_u32be(out, (uint32_t)m->u.keylist.n))
			goto fail;
		for (size_t i = 0; i < m->u.keylist.n; i++)
			if (qw_buf_append(out, m->u.keylist.ids[i].b, QW_UUID_BYTES))
				goto fail;
		break;
	case QW_KMLINK_RESYNC_DONE:
	case QW_KMLINK_KEYS_ACK:
		break;
	case QW_KMLINK_KEYS_REQ:
	case QW_KMLINK_KEYS_NEW:
		if ((ret = encode_keys(&m->u.keys, m->type == QW_KMLINK_KEYS_NEW, out)))
			goto fail;
		break;
	case QW_KMLINK_SOURCE_BLOCK:
		ret = QW_EINVAL;
		if (m->u.source.block_id >= (UINT64_C(1) << 63) || m->u.source.key_bits == 0 ||
		    m->u.source.key_bits % 8 || m->u.source.key_bits > QW_STORE_KEY_MAX_BITS ||
		    m->u.source.n == 0 || m->u.source.n > QW_KMLINK_MAX_KEYS || !m->u.source.ids)
			goto fail;
		ret = QW_ENOMEM;
		if (qw_buf_append_u64be(out, m->u.source.block_id) ||
		    qw_buf_append_u32be(out, m->u.source.key_bits) ||
		    qw_buf_append_u32be(out, (uint32_t)m->u.source.n))
			goto fail;
		for (size_t i = 0; i < m->u.source.n; i++)
			if (qw_buf_append(out, m->u.source.ids[i].b, QW_UUID_BYTES))
				goto fail;
		break;
	case QW_KMLINK_SOURCE_ACK:
	case QW_KMLINK_SOURCE_DROP:
		ret = QW_EINVAL;
		if (m->u.source.block_id >= (UINT64_C(1) << 63))
			goto fail;
		ret = QW_ENOMEM;
		if (qw_buf_append_u64be(out, m->u.source.block_id))
			goto fail;
		break;
	case QW_KMLINK_KEYS_NACK:
		ret = QW_EINVAL;
		if (m->u.nack_error >= 0 || m->u.nack_error < -64)
			goto fail;
		ret = QW_ENOMEM;
		if (qw_buf_append_u32be(out, (uint32_t)m->u.nack_error))
			goto fail;
		break;
	case QW_KMLINK_RELAY:
	case QW_KMLINK_RELAY_ACK:
	case QW_KMLINK_RELAY_PAD_REQ:
	case QW_KMLINK_RELAY_PAD:
	case QW_KMLINK_LSA:
		ret = QW_EINVAL;
		if (!m->u.raw.body || m->u.raw.len == 0 || m->u.raw.len > QW_KMLINK_MAX_BODY)
			goto fail;
		ret = QW_ENOMEM;
		if (qw_buf_append(out, m->u.raw.body, m->u.raw.len))
			goto fail;
		break;
	case QW_KMLINK_PING:
		break;
	default:
		ret = QW_EINVAL;
		goto fail;
	}
	body = out->len - start - QW_KMLINK_HEADER_BYTES;
	if (body > QW_KMLINK_MAX_BODY) {
		ret = QW_EINVAL;
		goto fail;
	}
	out->data[start + 4] = (uint8_t)(body >> 24);
	out->data[start + 5] = (uint8_t)(body >> 16);
	out->data[start + 6] = (uint8_t)(body >> 8);
	out->data[start + 7] = (uint8_t)body;
	return 0;
fail:
	out->len = start;
	return ret;
}
