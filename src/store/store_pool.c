/* Key store pools: raw link-key material per peer, sealed in chunks,
 * consumed from the front with exact accounting, resynchronised with the
 * peer's view (docs/store.md). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "qwave/secmem.h"
#include "store_internal.h"

/* Copy n bits, MSB first, from src at bit so to dst at bit dof. dst bits
 * outside the range are preserved. */
static void copy_bits(uint8_t *dst, uint64_t dof, const uint8_t *src, uint64_t so, uint64_t n)
{
	if (dof % 8 == 0 && so % 8 == 0) {
		memcpy(dst + dof / 8, src + so / 8, n / 8);
		dof += n / 8 * 8;
		so += n / 8 * 8;
		n %= 8;
	}
	for (uint64_t i = 0; i < n; i++) {
		uint64_t s = so + i, d = dof + i;
		unsigned bit = (src[s / 8] >> (7 - s % 8)) & 1u;
		uint8_t m = (uint8_t)(0x80u >> (d % 8));

		dst[d / 8] = (uint8_t)(bit ? dst[d / 8] | m : dst[d / 8] & ~m);
	}
}

static void aad_chunk(struct qw_st_aad *a, const char *peer, const struct qw_sb_chunk *c)
{
	a->n = 0;
	qw_st_aad_str(a, "qwave-store chunk v1");
	qw_st_aad_str(a, peer);
	qw_st_aad_u64(a, c->block_id);
	qw_st_aad_u64(a, c->seq);
	qw_st_aad_u64(a, c->start);
	qw_st_aad_u64(a, c->nbits);
}

/* ---- pools ---- */

static int pool_append_locked(struct qw_store *s, const char *peer, uint64_t block_id,
			      const uint8_t *bits, uint64_t nbits)
{
	struct qw_sb_block b = { .block_id = block_id, .nbits = nbits, .used = 0 };
	struct qw_sb_peer p;
	uint8_t pt[QW_ST_CHUNK_BYTES];
	int ret;

	if ((ret = s->be->peer_get(s->db, peer, &p)))
		return ret;
	if (p.has_last && block_id <= p.last_block)
		return QW_EEXIST;
	if ((ret = s->be->block_insert(s->db, peer, &b)))
		return ret;
	for (uint64_t seq = 0, off = 0; off < nbits; seq++, off += QW_ST_CHUNK_BITS) {
		struct qw_sb_chunk c = { .block_id = block_id, .seq = seq, .start = off };
		struct qw_st_aad a;
		size_t len;

		c.nbits = nbits - off < QW_ST_CHUNK_BITS ? nbits - off : QW_ST_CHUNK_BITS;
		len = (size_t)((c.nbits + 7) / 8);
		memcpy(pt, bits + off / 8, len);
		if (c.nbits % 8)
			pt[len - 1] &= (uint8_t)(0xff00u >> (c.nbits % 8));
		aad_chunk(&a, peer, &c);
		ret = qw_st_seal(s, &a, pt, len, &c.blob, &c.bloblen);
		if (!ret)
			ret = s->be->chunk_insert(s->db, peer, &c);
		free(c.blob);
		if (ret)
			goto out;
	}
	p.bits_in += nbits;
	p.last_block = block_id;
	p.has_last = 1;
	ret = s->be->peer_put(s->db, peer, &p);
out:
	qw_wipe(pt, sizeof(pt));
	return ret;
}

int qw_store_pool_append(struct qw_store *s, const char *peer, uint64_t block_id,
			 const uint8_t *bits, uint64_t nbits)
{
	int ret;

	QW_REQUIRE(s && peer && (bits || !nbits));
	if (!qw_st_valid_name(peer) || nbits == 0)
		return QW_EINVAL;
	if (nbits > QW_STORE_BLOCK_MAX_BITS || block_id > (uint64_t)INT64_MAX)
		return QW_ERANGE;
	if ((ret = qw_st_tx_begin(s)))
		return ret;
	return qw_st_tx_end(s, pool_append_locked(s, peer, block_id, bits, nbits));
}

/* Consume n bits from the front of block b (n <= b->nbits - b->used),
 * copying them to out at bit oof when out is not NULL. Whole chunks are
 * deleted; a partly consumed chunk is re-sealed holding only its rest,
 * shifted to bit 0. Updates b->used and the block row. */
static int block_consume(struct qw_store *s, const char *peer, struct qw_sb_block *b,
			 uint64_t n, uint8_t *out, uint64_t oof)
{
	uint8_t pt[QW_ST_CHUNK_BYTES], rest[QW_ST_CHUNK_BYTES];
	int ret = 0;

	while (n > 0) {
		struct qw_sb_chunk c;
		struct qw_st_aad a;
		uint64_t k;

		ret = s->be->chunk_first(s->db, peer, b->block_id, &c);
		if (ret == QW_ENOTFOUND)
			ret = QW_EDB; /* the block row promises material */
		if (ret)
			break;
		if (c.start != b->used || c.nbits == 0 || c.nbits > QW_ST_CHUNK_BITS ||
		    c.start + c.nbits > b->nbits) {
			free(c.blob);
			ret = QW_EDB;
			break;
		}
		aad_chunk(&a, peer, &c);
		ret = qw_st_unseal(s, &a, c.blob, c.bloblen, pt, (size_t)((c.nbits + 7) / 8));
		free(c.blob);
		c.blob = NULL;
		if (ret)
			break;
		k = n < c.nbits ? n : c.nbits;
		if (out)
			copy_bits(out, oof, pt, 0, k);
		if (k == c.nbits) {
			ret = s->be->chunk_delete(s->db, peer, c.block_id, c.seq);
		} else {
			memset(rest, 0, sizeof(rest));
			copy_bits(rest, 0, pt, k, c.nbits - k);
			c.start += k;
			c.nbits -= k;
			aad_chunk(&a, peer, &c);
			ret = qw_st_seal(s, &a, rest, (size_t)((c.nbits + 7) / 8), &c.blob, &c.bloblen);
			if (!ret)
				ret = s->be->chunk_update(s->db, peer, &c);
			free(c.blob);
		}
		if (ret)
			break;
		b->used += k;
		oof += k;
		n -= k;
	}
	if (!ret)
		ret = s->be->block_update(s->db, peer, b);
	qw_wipe(pt, sizeof(pt));
	qw_wipe(rest, sizeof(rest));
	return ret;
}

/* Take nbits from the front of peer's pool into out (zeroed first).
 * keyed selects which counter the bits are booked to. */
int qw_st_pool_take_locked(struct qw_store *s, const char *peer, uint64_t nbits,
			    const struct qw_store_pos *expect, uint8_t *out,
			    struct qw_store_pos *at, int keyed)
{
	struct qw_sb_block *bl = NULL;
	struct qw_sb_peer p;
	size_t nb = 0;
	uint64_t avail = 0, done = 0;
	int ret;

	memset(out, 0, (size_t)((nbits + 7) / 8));
	if ((ret = s->be->block_list(s->db, peer, &bl, &nb)))
		return ret;
	for (size_t i = 0; i < nb; i++)
		avail += bl[i].nbits - bl[i].used;
	ret = QW_EAGAIN;
	if (avail < nbits || nb == 0)
		goto out;
	ret = QW_ESTATE;
	if (expect && (expect->block_id != bl[0].block_id || expect->bit != bl[0].used))
		goto out;
	if (at) {
		at->block_id = bl[0].block_id;
		at->bit = bl[0].used;
	}
	ret = 0;
	for (size_t i = 0; i < nb && done < nbits && !ret; i++) {
		uint64_t k = bl[i].nbits - bl[i].used;

		if (k > nbits - done)
			k = nbits - done;
		ret = block_consume(s, peer, &bl[i], k, out, done);
		done += k;
	}
	if (ret)
		goto out;
	if ((ret = s->be->peer_get(s->db, peer, &p)))
		goto out;
	if (keyed)
		p.keyed += nbits;
	else
		p.taken += nbits;
	ret = s->be->peer_put(s->db, peer, &p);
out:
	free(bl);
	return ret;
}

int qw_store_pool_take(struct qw_store *s, const char *peer, uint64_t nbits,
		       const struct qw_store_pos *expect, uint8_t *out, size_t cap,
		       struct qw_store_pos *at)
{
	int ret;

	QW_REQUIRE(s && peer && out);
	if (!qw_st_valid_name(peer) || nbits == 0)
		return QW_EINVAL;
	/* nbits / 8 first: (nbits + 7) / 8 wraps for nbits near 2^64. */
	if (nbits / 8 + (nbits % 8 != 0) > cap)
		return QW_ERANGE;
	if ((ret = qw_st_tx_begin(s)))
		return ret;
	ret = qw_st_tx_end(s, qw_st_pool_take_locked(s, peer, nbits, expect, out, at, 0));
	if (ret)
		qw_wipe(out, (size_t)((nbits + 7) / 8));
	return ret;
}

int qw_store_pool_available(struct qw_store *s, const char *peer, uint64_t *bits)
{
	struct qw_sb_block *bl = NULL;
	size_t nb = 0;
	int ret;

	QW_REQUIRE(s && peer && bits);
	*bits = 0;
	/* One SELECT reads a consistent snapshot by itself: no write
	 * transaction (BEGIN IMMEDIATE takes the database's write lock, and
	 * the ETSI 014 front end reads this figure for every Get key). */
	pthread_mutex_lock(&s->lock);
	ret = s->be->block_list(s->db, peer, &bl, &nb);
	pthread_mutex_unlock(&s->lock);
	for (size_t i = 0; !ret && i < nb; i++)
		*bits += bl[i].nbits - bl[i].used;
	free(bl);
	return ret;
}

int qw_store_pool_cursor(struct qw_store *s, const char *peer, struct qw_store_pos *pos)
{
	struct qw_sb_block *bl = NULL;
	size_t nb = 0;
	int ret;

	QW_REQUIRE(s && peer && pos);
	if ((ret = qw_st_tx_begin(s)))
		return ret;
	ret = s->be->block_list(s->db, peer, &bl, &nb);
	if (!ret && nb == 0)
		ret = QW_EAGAIN;
	if (!ret) {
		pos->block_id = bl[0].block_id;
		pos->bit = bl[0].used;
	}
	free(bl);
	return qw_st_tx_end(s, ret);
}

int qw_store_pool_blocks(struct qw_store *s, const char *peer, struct qw_store_block_state **out,
			 size_t *n)
{
	struct qw_sb_block *bl = NULL;
	struct qw_store_block_state *v = NULL;
	size_t nb = 0;
	int ret;

	QW_REQUIRE(s && peer && out && n);
	*out = NULL;
	*n = 0;
	if ((ret = qw_st_tx_begin(s)))
		return ret;
	ret = s->be->block_list(s->db, peer, &bl, &nb);
	if (!ret && nb) {
		v = qw_calloc(nb, sizeof(*v));
		if (!v)
			ret = QW_ENOMEM;
		for (size_t i = 0; !ret && i < nb; i++) {
			v[i].block_id = bl[i].block_id;
			v[i].nbits = bl[i].nbits;
			v[i].used = bl[i].used;
		}
	}
	free(bl);
	ret = qw_st_tx_end(s, ret);
	if (ret) {
		free(v);
		return ret;
	}
	*out = v;
	*n = v ? nb : 0;
	return 0;
}

static int cmp_block_state(const void *a, const void *b)
{
	uint64_t x = ((const struct qw_store_block_state *)a)->block_id;
	uint64_t y = ((const struct qw_store_block_state *)b)->block_id;

	return (x > y) - (x < y);
}

static int pool_resync_locked(struct qw_store *s, const char *peer,
			      struct qw_store_block_state *theirs, size_t n, uint64_t *dropped)
{
	struct qw_sb_block *bl = NULL;
	struct qw_sb_peer p;
	size_t nb = 0;
	uint64_t drop = 0;
	int ret;

	if (n)
		qsort(theirs, n, sizeof(*theirs), cmp_block_state);
	if ((ret = s->be->block_list(s->db, peer, &bl, &nb)))
		return ret;
	for (size_t i = 0; i < nb && !ret; i++) {
		struct qw_store_block_state key = { .block_id = bl[i].block_id };
		const struct qw_store_block_state *t =
			n ? bsearch(&key, theirs, n, sizeof(*theirs), cmp_block_state) : NULL;
		uint64_t k;

		/* The peer no longer has this block, or has a different
		 * block under its id: nobody can use it in step with us. */
		if (!t || t->nbits != bl[i].nbits || t->used >= t->nbits) {
			k = bl[i].nbits - bl[i].used;
			bl[i].used = bl[i].nbits;
			ret = s->be->chunk_delete_block(s->db, peer, bl[i].block_id);
			if (!ret)
				ret = s->be->block_update(s->db, peer, &bl[i]);
		} else if (t->used > bl[i].used) {
			k = t->used - bl[i].used;
			ret = block_consume(s, peer, &bl[i], k, NULL, 0);
		} else {
			k = 0;
		}
		drop += k;
	}
	if (ret)
		goto out;
	if ((ret = s->be->peer_get(s->db, peer, &p)))
		goto out;
	p.dropped += drop;
	ret = s->be->peer_put(s->db, peer, &p);
	if (!ret && dropped)
		*dropped = drop;
out:
	free(bl);
	return ret;
}

int qw_store_pool_resync(struct qw_store *s, const char *peer,
			 const struct qw_store_block_state *theirs, size_t n, uint64_t *dropped)
{
	struct qw_store_block_state *t = NULL;
	int ret;

	QW_REQUIRE(s && peer && (theirs || !n));
	if (dropped)
		*dropped = 0;
	if (!qw_st_valid_name(peer))
		return QW_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (theirs[i].used > theirs[i].nbits)
			return QW_EINVAL;
	if (n) {
		t = qw_calloc(n, sizeof(*t));
		if (!t)
			return QW_ENOMEM;
		memcpy(t, theirs, n * sizeof(*t));
	}
	if ((ret = qw_st_tx_begin(s)) == 0)
		ret = qw_st_tx_end(s, pool_resync_locked(s, peer, t, n, dropped));
	free(t);
	return ret;
}
