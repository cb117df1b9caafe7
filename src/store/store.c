/* Key store logic: sealing, state machine, pool accounting. Each public
 * function takes the lock, opens one backend transaction, and commits only
 * when every step succeeded (rollback otherwise), so a crash or an error
 * leaves the store exactly as before the call.
 *
 * Sealing: AES-256-GCM under a data key dk = HKDF-SHA-256(master key,
 * salt = per-store random salt, info = "qwave store data key v1") (RFC
 * 5869). Nonces are random (96 bits); the associated data binds each blob
 * to its row (see the aad_* builders), so moving a blob to another row, or
 * editing a row's identity or SAE binding, fails with QW_EAUTH. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qwave/aead.h"
#include "qwave/hash.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"
#include "store_internal.h"

#define DK_BYTES 32
#define SALT_BYTES 16
#define NONCE QW_AEAD_NONCE_BYTES
#define TAG QW_AEAD_GCM_TAG_BYTES
#define BLOB_OVERHEAD (NONCE + TAG)
/* Pool blocks are sealed in chunks, so that taking a few bits re-seals at
 * most one chunk instead of the whole block. */
#define CHUNK_BITS 4096u
#define CHUNK_BYTES (CHUNK_BITS / 8)
#define DEFAULT_LOG2N 15
#define AAD_MAX (64 + QW_UUID_BYTES + (QW_STORE_SLAVES_MAX + 2) * (QW_STORE_NAME_MAX + 1) + 64)

struct qw_store {
	pthread_mutex_t lock;
	const struct qw_store_backend *be;
	void *db;
	struct qw_aead *aead;
};

struct aad {
	uint8_t b[AAD_MAX];
	size_t n;
};

static void aad_bytes(struct aad *a, const void *p, size_t n)
{
	QW_REQUIRE(a->n + n <= sizeof(a->b));
	memcpy(a->b + a->n, p, n);
	a->n += n;
}

/* Strings go in with their NUL so that adjacent fields cannot run into
 * each other ("ab"+"c" != "a"+"bc"). */
static void aad_str(struct aad *a, const char *s)
{
	aad_bytes(a, s, strlen(s) + 1);
}

static void aad_u64(struct aad *a, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (56 - 8 * i));
	aad_bytes(a, b, 8);
}

static void aad_chunk(struct aad *a, const char *peer, const struct qw_sb_chunk *c)
{
	a->n = 0;
	aad_str(a, "qwave-store chunk v1");
	aad_str(a, peer);
	aad_u64(a, c->block_id);
	aad_u64(a, c->seq);
	aad_u64(a, c->start);
	aad_u64(a, c->nbits);
}

/* State and delivery time are not bound: they only ever move towards
 * "no material", and a row without material has nothing to protect. */
static void aad_key(struct aad *a, const struct qw_sb_key *k)
{
	a->n = 0;
	aad_str(a, "qwave-store key v1");
	aad_bytes(a, k->id.b, QW_UUID_BYTES);
	aad_str(a, k->peer);
	aad_u64(a, k->size_bits);
	aad_str(a, k->master);
	aad_str(a, k->slaves);
	aad_u64(a, (uint64_t)k->created);
	aad_u64(a, (uint64_t)k->expires);
}

/* blob = nonce | ciphertext | tag, freshly allocated. */
static int seal(struct qw_store *s, const struct aad *a, const uint8_t *pt, size_t ptlen,
		uint8_t **blob, size_t *bloblen)
{
	uint8_t *b = malloc(ptlen + BLOB_OVERHEAD);
	int ret;

	*blob = NULL;
	*bloblen = 0;
	if (!b)
		return QW_ENOMEM;
	ret = qw_random_bytes(b, NONCE);
	if (!ret)
		ret = qw_aead_ctx_seal(s->aead, b, a->b, a->n, pt, ptlen, b + NONCE,
				       b + NONCE + ptlen);
	if (ret) {
		free(b);
		return ret;
	}
	*blob = b;
	*bloblen = ptlen + BLOB_OVERHEAD;
	return 0;
}

/* Opens a blob that must hold exactly ptlen bytes; QW_EAUTH otherwise. */
static int unseal(struct qw_store *s, const struct aad *a, const uint8_t *blob,
		  size_t bloblen, uint8_t *pt, size_t ptlen)
{
	if (!blob || bloblen != ptlen + BLOB_OVERHEAD)
		return QW_EAUTH;
	return qw_aead_ctx_open(s->aead, blob, a->b, a->n, blob + NONCE, ptlen,
				blob + NONCE + ptlen, pt);
}

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

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

static int valid_name(const char *s)
{
	size_t n;

	if (!s)
		return 0;
	n = strlen(s);
	if (n == 0 || n > QW_STORE_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

/* Join slave ids with '\n' into out (sized as struct qw_sb_key.slaves). */
static int join_slaves(const char *const *sl, size_t n, char *out, size_t cap)
{
	size_t len = 0;

	out[0] = '\0';
	if (n > QW_STORE_SLAVES_MAX || (n && !sl))
		return QW_EINVAL;
	for (size_t i = 0; i < n; i++) {
		size_t l;

		if (!valid_name(sl[i]))
			return QW_EINVAL;
		l = strlen(sl[i]);
		if (len + l + 2 > cap)
			return QW_EINVAL;
		if (i)
			out[len++] = '\n';
		memcpy(out + len, sl[i], l + 1);
		len += l;
	}
	return 0;
}

static int sae_in_key(const struct qw_sb_key *k, const char *sae)
{
	const char *p = k->slaves;
	size_t l = strlen(sae);

	if (strcmp(k->master, sae) == 0)
		return 1;
	while (*p) {
		const char *e = strchr(p, '\n');
		size_t pl = e ? (size_t)(e - p) : strlen(p);

		if (pl == l && memcmp(p, sae, l) == 0)
			return 1;
		if (!e)
			break;
		p = e + 1;
	}
	return 0;
}

static void key_to_info(const struct qw_sb_key *k, struct qw_store_key_info *info)
{
	const char *p = k->slaves;

	memset(info, 0, sizeof(*info));
	info->id = k->id;
	memcpy(info->peer, k->peer, sizeof(info->peer));
	info->size_bits = k->size_bits;
	info->state = (enum qw_store_key_state)k->state;
	memcpy(info->master_sae, k->master, sizeof(info->master_sae));
	while (*p && info->n_slaves < QW_STORE_SLAVES_MAX) {
		const char *e = strchr(p, '\n');
		size_t pl = e ? (size_t)(e - p) : strlen(p);

		if (pl > QW_STORE_NAME_MAX)
			pl = QW_STORE_NAME_MAX;
		memcpy(info->slave_saes[info->n_slaves], p, pl);
		info->slave_saes[info->n_slaves][pl] = '\0';
		info->n_slaves++;
		if (!e)
			break;
		p = e + 1;
	}
	info->created = k->created;
	info->expires = k->expires;
	info->delivered_at = k->delivered_at;
}

static void key_row_clear(struct qw_sb_key *k)
{
	free(k->blob);
	k->blob = NULL;
	k->bloblen = 0;
}

/* ---- transactions ---- */

static int tx_begin(struct qw_store *s)
{
	pthread_mutex_lock(&s->lock);
	int ret = s->be->begin(s->db);

	if (ret)
		pthread_mutex_unlock(&s->lock);
	return ret;
}

/* Commit when ret is 0, roll back otherwise; releases the lock. */
static int tx_end(struct qw_store *s, int ret)
{
	if (!ret) {
		ret = s->be->commit(s->db);
		if (ret)
			s->be->rollback(s->db);
	} else {
		s->be->rollback(s->db);
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

/* ---- open / close ---- */

static int derive_dk(const uint8_t mk[static QW_STORE_MASTER_KEY_BYTES], const uint8_t *salt,
		     struct qw_aead **aead)
{
	static const char info[] = "qwave store data key v1";
	uint8_t *dk = qw_secure_alloc(DK_BYTES);
	int ret = QW_ENOMEM;

	*aead = NULL;
	if (!dk)
		return ret;
	ret = qw_hkdf(QW_HASH_SHA256, mk, QW_STORE_MASTER_KEY_BYTES, salt, SALT_BYTES, info,
		      sizeof(info) - 1, dk, DK_BYTES);
	if (!ret)
		*aead = qw_aead_new(QW_AEAD_AES256_GCM, dk, DK_BYTES, &ret);
	qw_secure_free(dk, DK_BYTES);
	return ret;
}

/* Derive the data key from the store's salt (created with the store) and
 * prove it against the stored check blob: a wrong master key is refused
 * at open, before it can seal anything. */
static int unlock(struct qw_store *s, const uint8_t mk[static QW_STORE_MASTER_KEY_BYTES])
{
	static const uint8_t zero[32];
	uint8_t *salt = NULL, *check = NULL, *blob = NULL, pt[32];
	size_t saltlen = 0, checklen = 0, bloblen = 0;
	struct aad a = { .n = 0 };
	int fresh = 0, ret;

	aad_str(&a, "qwave-store check v1");
	if ((ret = s->be->begin(s->db)))
		return ret;
	ret = s->be->meta_get(s->db, "salt", &salt, &saltlen);
	if (ret == QW_ENOTFOUND) {
		fresh = 1;
		ret = QW_ENOMEM;
		salt = malloc(SALT_BYTES);
		if (!salt)
			goto out;
		saltlen = SALT_BYTES;
		if ((ret = qw_random_bytes(salt, SALT_BYTES)))
			goto out;
		if ((ret = s->be->meta_put(s->db, "salt", salt, SALT_BYTES)))
			goto out;
	} else if (ret) {
		goto out;
	}
	ret = QW_EDB;
	if (saltlen != SALT_BYTES)
		goto out;
	if ((ret = derive_dk(mk, salt, &s->aead)))
		goto out;
	if (fresh) {
		if ((ret = seal(s, &a, zero, sizeof(zero), &blob, &bloblen)))
			goto out;
		if ((ret = s->be->meta_put(s->db, "check", blob, bloblen)))
			goto out;
		ret = s->be->meta_put(s->db, "version", (const uint8_t *)"1", 1);
	} else {
		ret = s->be->meta_get(s->db, "check", &check, &checklen);
		if (ret == QW_ENOTFOUND)
			ret = QW_EDB;
		if (ret)
			goto out;
		ret = unseal(s, &a, check, checklen, pt, sizeof(pt));
		if (!ret && !qw_ct_equal(pt, zero, sizeof(pt)))
			ret = QW_EAUTH;
	}
out:
	if (!ret) {
		ret = s->be->commit(s->db);
		if (ret)
			s->be->rollback(s->db);
	} else {
		s->be->rollback(s->db);
	}
	free(salt);
	free(check);
	free(blob);
	return ret;
}

static struct qw_store *store_new(const char *path, const struct qw_store_opts *opts, int *ret)
{
	struct qw_store_opts o = { .sync = QW_STORE_SYNC_FULL };
	struct qw_store *s;

	if (opts)
		o = *opts;
	if (o.busy_timeout_ms <= 0)
		o.busy_timeout_ms = 5000;
	s = calloc(1, sizeof(*s));
	if (!s) {
		*ret = QW_ENOMEM;
		return NULL;
	}
	s->be = &qw_store_backend_sqlite;
	if (pthread_mutex_init(&s->lock, NULL) != 0) {
		free(s);
		*ret = QW_ENOMEM;
		return NULL;
	}
	*ret = s->be->open(&s->db, path, &o);
	if (*ret) {
		pthread_mutex_destroy(&s->lock);
		free(s);
		return NULL;
	}
	return s;
}

void qw_store_close(struct qw_store *s)
{
	if (!s)
		return;
	s->be->close(s->db);
	qw_aead_free(s->aead);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

struct qw_store *qw_store_open(const char *path,
			       const uint8_t mk[static QW_STORE_MASTER_KEY_BYTES],
			       const struct qw_store_opts *opts, int *err)
{
	struct qw_store *s;
	int ret;

	QW_REQUIRE(path && mk);
	s = store_new(path, opts, &ret);
	if (s && (ret = unlock(s, mk))) {
		qw_store_close(s);
		s = NULL;
	}
	if (err)
		*err = s ? 0 : ret;
	return s;
}

struct qw_store *qw_store_open_passphrase(const char *path, const char *pass, size_t passlen,
					  const struct qw_store_opts *opts, int *err)
{
	uint8_t mk[QW_STORE_MASTER_KEY_BYTES], *kdf = NULL, fresh[1 + SALT_BYTES];
	size_t kdflen = 0;
	struct qw_store *s;
	int ret;

	QW_REQUIRE(path && (pass || !passlen));
	s = store_new(path, opts, &ret);
	if (!s)
		goto out;
	/* meta "scrypt" = log2 N (1 byte) | salt (16 bytes) */
	if ((ret = s->be->begin(s->db)))
		goto out;
	ret = s->be->meta_get(s->db, "scrypt", &kdf, &kdflen);
	if (ret == QW_ENOTFOUND) {
		uint8_t *chk = NULL;
		size_t chklen = 0;

		/* A store sealed under a key file has a check blob but no
		 * scrypt parameters: no passphrase can open it. */
		ret = s->be->meta_get(s->db, "check", &chk, &chklen);
		free(chk);
		if (ret == 0)
			ret = QW_EAUTH;
		/* QW_ENOTFOUND: a new store, create the parameters below */
	}
	if (ret == QW_ENOTFOUND) {
		fresh[0] = (uint8_t)(opts && opts->scrypt_log2n ? opts->scrypt_log2n : DEFAULT_LOG2N);
		ret = qw_random_bytes(fresh + 1, SALT_BYTES);
		if (!ret)
			ret = s->be->meta_put(s->db, "scrypt", fresh, sizeof(fresh));
		if (!ret) {
			kdf = malloc(sizeof(fresh));
			if (!kdf)
				ret = QW_ENOMEM;
			else
				memcpy(kdf, fresh, sizeof(fresh));
			kdflen = sizeof(fresh);
		}
	}
	if (!ret && kdflen != sizeof(fresh))
		ret = QW_EDB;
	if (!ret) {
		ret = s->be->commit(s->db);
		if (ret)
			s->be->rollback(s->db);
	} else {
		s->be->rollback(s->db);
	}
	if (ret)
		goto out;
	if ((ret = qw_store_masterkey_derive(pass, passlen, kdf + 1, SALT_BYTES, kdf[0], mk)))
		goto out;
	ret = unlock(s, mk);
out:
	qw_wipe(mk, sizeof(mk));
	free(kdf);
	if (ret) {
		qw_store_close(s);
		s = NULL;
	}
	if (err)
		*err = ret;
	return s;
}

/* ---- pools ---- */

static int pool_append_locked(struct qw_store *s, const char *peer, uint64_t block_id,
			      const uint8_t *bits, uint64_t nbits)
{
	struct qw_sb_block b = { .block_id = block_id, .nbits = nbits, .used = 0 };
	struct qw_sb_peer p;
	uint8_t pt[CHUNK_BYTES];
	int ret;

	if ((ret = s->be->peer_get(s->db, peer, &p)))
		return ret;
	if (p.has_last && block_id <= p.last_block)
		return QW_EEXIST;
	if ((ret = s->be->block_insert(s->db, peer, &b)))
		return ret;
	for (uint64_t seq = 0, off = 0; off < nbits; seq++, off += CHUNK_BITS) {
		struct qw_sb_chunk c = { .block_id = block_id, .seq = seq, .start = off };
		struct aad a;
		size_t len;

		c.nbits = nbits - off < CHUNK_BITS ? nbits - off : CHUNK_BITS;
		len = (size_t)((c.nbits + 7) / 8);
		memcpy(pt, bits + off / 8, len);
		if (c.nbits % 8)
			pt[len - 1] &= (uint8_t)(0xff00u >> (c.nbits % 8));
		aad_chunk(&a, peer, &c);
		ret = seal(s, &a, pt, len, &c.blob, &c.bloblen);
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
	if (!valid_name(peer) || nbits == 0)
		return QW_EINVAL;
	if (nbits > QW_STORE_BLOCK_MAX_BITS || block_id > (uint64_t)INT64_MAX)
		return QW_ERANGE;
	if ((ret = tx_begin(s)))
		return ret;
	return tx_end(s, pool_append_locked(s, peer, block_id, bits, nbits));
}

/* Consume n bits from the front of block b (n <= b->nbits - b->used),
 * copying them to out at bit oof when out is not NULL. Whole chunks are
 * deleted; a partly consumed chunk is re-sealed holding only its rest,
 * shifted to bit 0. Updates b->used and the block row. */
static int block_consume(struct qw_store *s, const char *peer, struct qw_sb_block *b,
			 uint64_t n, uint8_t *out, uint64_t oof)
{
	uint8_t pt[CHUNK_BYTES], rest[CHUNK_BYTES];
	int ret = 0;

	while (n > 0) {
		struct qw_sb_chunk c;
		struct aad a;
		uint64_t k;

		ret = s->be->chunk_first(s->db, peer, b->block_id, &c);
		if (ret == QW_ENOTFOUND)
			ret = QW_EDB; /* the block row promises material */
		if (ret)
			break;
		if (c.start != b->used || c.nbits == 0 || c.nbits > CHUNK_BITS ||
		    c.start + c.nbits > b->nbits) {
			free(c.blob);
			ret = QW_EDB;
			break;
		}
		aad_chunk(&a, peer, &c);
		ret = unseal(s, &a, c.blob, c.bloblen, pt, (size_t)((c.nbits + 7) / 8));
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
			ret = seal(s, &a, rest, (size_t)((c.nbits + 7) / 8), &c.blob, &c.bloblen);
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
static int pool_take_locked(struct qw_store *s, const char *peer, uint64_t nbits,
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
	if (!valid_name(peer) || nbits == 0)
		return QW_EINVAL;
	if ((nbits + 7) / 8 > cap)
		return QW_ERANGE;
	if ((ret = tx_begin(s)))
		return ret;
	ret = tx_end(s, pool_take_locked(s, peer, nbits, expect, out, at, 0));
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
	if ((ret = tx_begin(s)))
		return ret;
	ret = s->be->block_list(s->db, peer, &bl, &nb);
	for (size_t i = 0; !ret && i < nb; i++)
		*bits += bl[i].nbits - bl[i].used;
	free(bl);
	return tx_end(s, ret);
}

int qw_store_pool_cursor(struct qw_store *s, const char *peer, struct qw_store_pos *pos)
{
	struct qw_sb_block *bl = NULL;
	size_t nb = 0;
	int ret;

	QW_REQUIRE(s && peer && pos);
	if ((ret = tx_begin(s)))
		return ret;
	ret = s->be->block_list(s->db, peer, &bl, &nb);
	if (!ret && nb == 0)
		ret = QW_EAGAIN;
	if (!ret) {
		pos->block_id = bl[0].block_id;
		pos->bit = bl[0].used;
	}
	free(bl);
	return tx_end(s, ret);
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
	if ((ret = tx_begin(s)))
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
	ret = tx_end(s, ret);
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
	if (!valid_name(peer))
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
	if ((ret = tx_begin(s)) == 0)
		ret = tx_end(s, pool_resync_locked(s, peer, t, n, dropped));
	free(t);
	return ret;
}

/* ---- keys ---- */

static int key_create_locked(struct qw_store *s, const struct qw_store_key_req *req,
			     size_t count, struct qw_uuid *ids, struct qw_store_pos *at,
			     uint8_t *km)
{
	size_t kb = req->size_bits / 8;
	int64_t t = now_s();
	int ret = 0;

	for (size_t i = 0; i < count && !ret; i++) {
		struct qw_sb_key k;
		struct aad a;

		memset(&k, 0, sizeof(k));
		ret = pool_take_locked(s, req->peer, req->size_bits, i == 0 ? req->expect : NULL,
				       km, i == 0 ? at : NULL, 1);
		if (ret)
			break;
		if (req->key_ids)
			k.id = req->key_ids[i];
		else if ((ret = qw_uuid_generate(&k.id)))
			break;
		memcpy(k.peer, req->peer, strlen(req->peer) + 1);
		k.size_bits = req->size_bits;
		k.state = req->master_sae ? QW_STORE_RESERVED : QW_STORE_AVAILABLE;
		if (req->master_sae)
			memcpy(k.master, req->master_sae, strlen(req->master_sae) + 1);
		if ((ret = join_slaves(req->slave_saes, req->n_slaves, k.slaves, sizeof(k.slaves))))
			break;
		k.created = t;
		k.expires = req->expires;
		aad_key(&a, &k);
		ret = seal(s, &a, km, kb, &k.blob, &k.bloblen);
		if (!ret)
			ret = s->be->key_insert(s->db, &k);
		key_row_clear(&k);
		ids[i] = k.id;
	}
	qw_wipe(km, kb);
	return ret;
}

int qw_store_key_create(struct qw_store *s, const struct qw_store_key_req *req, size_t count,
			struct qw_uuid *ids, struct qw_store_pos *at)
{
	uint8_t *km;
	int ret;

	QW_REQUIRE(s && req && (ids || !count) && (req->slave_saes || !req->n_slaves));
	if (!valid_name(req->peer) || req->size_bits == 0 || req->size_bits % 8 ||
	    req->size_bits > QW_STORE_KEY_MAX_BITS || count == 0 || req->expires < 0)
		return QW_EINVAL;
	if (req->master_sae ? !valid_name(req->master_sae) || req->n_slaves == 0
			    : req->n_slaves != 0)
		return QW_EINVAL;
	if (req->n_slaves > QW_STORE_SLAVES_MAX)
		return QW_EINVAL;
	for (size_t i = 0; i < req->n_slaves; i++)
		if (!valid_name(req->slave_saes[i]))
			return QW_EINVAL;
	km = qw_secure_alloc(req->size_bits / 8);
	if (!km)
		return QW_ENOMEM;
	if ((ret = tx_begin(s)) == 0)
		ret = tx_end(s, key_create_locked(s, req, count, ids, at, km));
	qw_secure_free(km, req->size_bits / 8);
	if (ret)
		memset(ids, 0, count * sizeof(*ids));
	return ret;
}

static int key_reserve_locked(struct qw_store *s, const struct qw_uuid *id, const char *master,
			      const char *const *sl, size_t nsl)
{
	struct qw_sb_key k;
	struct aad a;
	uint8_t *km = NULL;
	size_t kb;
	int ret;

	if ((ret = s->be->key_get(s->db, id, &k)))
		return ret;
	ret = QW_ESTATE;
	if (k.state != QW_STORE_AVAILABLE)
		goto out;
	kb = k.size_bits / 8;
	ret = QW_ENOMEM;
	if (!(km = qw_secure_alloc(kb)))
		goto out;
	aad_key(&a, &k);
	if ((ret = unseal(s, &a, k.blob, k.bloblen, km, kb)))
		goto out;
	key_row_clear(&k);
	memcpy(k.master, master, strlen(master) + 1);
	if ((ret = join_slaves(sl, nsl, k.slaves, sizeof(k.slaves))))
		goto out;
	k.state = QW_STORE_RESERVED;
	/* The SAE pair is part of the associated data: re-seal under it. */
	aad_key(&a, &k);
	if ((ret = seal(s, &a, km, kb, &k.blob, &k.bloblen)))
		goto out;
	ret = s->be->key_update(s->db, &k);
out:
	if (km)
		qw_secure_free(km, k.size_bits / 8);
	key_row_clear(&k);
	return ret;
}

int qw_store_key_reserve(struct qw_store *s, const struct qw_uuid *id, const char *master_sae,
			 const char *const *slave_saes, size_t n_slaves)
{
	int ret;

	QW_REQUIRE(s && id && master_sae && (slave_saes || !n_slaves));
	if (!valid_name(master_sae) || n_slaves == 0 || n_slaves > QW_STORE_SLAVES_MAX)
		return QW_EINVAL;
	for (size_t i = 0; i < n_slaves; i++)
		if (!valid_name(slave_saes[i]))
			return QW_EINVAL;
	if ((ret = tx_begin(s)))
		return ret;
	return tx_end(s, key_reserve_locked(s, id, master_sae, slave_saes, n_slaves));
}

static int key_deliver_locked(struct qw_store *s, const struct qw_uuid *id, const char *sae,
			      uint8_t *out, size_t cap, struct qw_store_key_info *info)
{
	struct qw_sb_key k;
	struct aad a;
	int ret;

	if ((ret = s->be->key_get(s->db, id, &k)))
		return ret;
	ret = QW_ESTATE;
	if (k.state != QW_STORE_RESERVED)
		goto out;
	ret = QW_EPERM;
	if (!sae_in_key(&k, sae))
		goto out;
	ret = QW_ERANGE;
	if (k.size_bits / 8 > cap)
		goto out;
	aad_key(&a, &k);
	if ((ret = unseal(s, &a, k.blob, k.bloblen, out, k.size_bits / 8)))
		goto out;
	key_row_clear(&k);
	k.state = QW_STORE_DELIVERED;
	k.delivered_at = k.closed_at = now_s();
	if ((ret = s->be->key_update(s->db, &k)))
		goto out;
	if (info)
		key_to_info(&k, info);
out:
	key_row_clear(&k);
	return ret;
}

int qw_store_key_deliver(struct qw_store *s, const struct qw_uuid *id, const char *sae,
			 uint8_t *out, size_t cap, struct qw_store_key_info *info)
{
	int ret;

	QW_REQUIRE(s && id && sae && (out || !cap));
	if ((ret = tx_begin(s)))
		return ret;
	/* The material leaves only if the commit that destroys the stored
	 * copy succeeded: at most once, even across a crash. */
	ret = tx_end(s, key_deliver_locked(s, id, sae, out, cap, info));
	if (ret && out)
		qw_wipe(out, cap);
	return ret;
}

int qw_store_key_deliver_many(struct qw_store *s, const struct qw_uuid *ids, size_t n,
			      const char *sae, uint8_t *out, size_t cap, size_t *outlen,
			      struct qw_store_key_info *infos)
{
	struct qw_store_key_info *info = NULL;
	size_t off = 0;
	int ret;

	QW_REQUIRE(s && (ids || !n) && sae && (out || !cap) && outlen);
	*outlen = 0;
	if (!infos) {
		info = malloc(sizeof(*info));
		if (!info)
			return QW_ENOMEM;
	}
	if ((ret = tx_begin(s))) {
		free(info);
		return ret;
	}
	for (size_t i = 0; i < n && !ret; i++) {
		struct qw_store_key_info *ki = infos ? &infos[i] : info;

		ret = key_deliver_locked(s, &ids[i], sae, out ? out + off : NULL, cap - off, ki);
		if (!ret)
			off += ki->size_bits / 8;
	}
	ret = tx_end(s, ret);
	if (info)
		qw_wipe(info, sizeof(*info));
	free(info);
	if (ret) {
		if (out)
			qw_wipe(out, cap);
		return ret;
	}
	*outlen = off;
	return 0;
}

int qw_store_key_info(struct qw_store *s, const struct qw_uuid *id, struct qw_store_key_info *info)
{
	struct qw_sb_key k;
	int ret;

	QW_REQUIRE(s && id && info);
	if ((ret = tx_begin(s)))
		return ret;
	ret = s->be->key_get(s->db, id, &k);
	if (!ret)
		key_to_info(&k, info);
	key_row_clear(&k);
	return tx_end(s, ret);
}

/* Material-holding key -> ERASED. secure_delete zeroes the record space
 * the old blob occupied when the row is rewritten without it. */
static int key_erase_locked(struct qw_store *s, const struct qw_uuid *id, int64_t t)
{
	struct qw_sb_key k;
	int ret;

	if ((ret = s->be->key_get(s->db, id, &k)))
		return ret;
	ret = QW_ESTATE;
	if (k.state == QW_STORE_AVAILABLE || k.state == QW_STORE_RESERVED) {
		key_row_clear(&k);
		k.state = QW_STORE_ERASED;
		k.closed_at = t;
		ret = s->be->key_update(s->db, &k);
	}
	key_row_clear(&k);
	return ret;
}

int qw_store_key_erase(struct qw_store *s, const struct qw_uuid *id)
{
	int ret;

	QW_REQUIRE(s && id);
	if ((ret = tx_begin(s)))
		return ret;
	return tx_end(s, key_erase_locked(s, id, now_s()));
}

int qw_store_key_expire(struct qw_store *s, int64_t now, size_t *n)
{
	struct qw_uuid *ids = NULL;
	size_t cnt = 0, done = 0;
	int ret;

	QW_REQUIRE(s);
	if (n)
		*n = 0;
	if (now <= 0)
		return 0;
	if ((ret = tx_begin(s)))
		return ret;
	ret = s->be->key_ids(s->db, NULL, 0, now, &ids, &cnt);
	for (size_t i = 0; i < cnt && !ret; i++) {
		ret = key_erase_locked(s, &ids[i], now_s());
		if (ret == QW_ESTATE)
			ret = 0; /* already a tombstone */
		else if (!ret)
			done++;
	}
	free(ids);
	ret = tx_end(s, ret);
	if (!ret && n)
		*n = done;
	return ret;
}

int qw_store_key_list(struct qw_store *s, const char *peer, enum qw_store_key_state state,
		      int (*fn)(const struct qw_store_key_info *, void *), void *arg)
{
	struct qw_uuid *ids = NULL;
	struct qw_store_key_info *info = NULL;
	size_t cnt = 0;
	int ret;

	QW_REQUIRE(s && fn);
	info = malloc(sizeof(*info));
	if (!info)
		return QW_ENOMEM;
	if ((ret = tx_begin(s))) {
		free(info);
		return ret;
	}
	ret = s->be->key_ids(s->db, peer, (int)state, 0, &ids, &cnt);
	for (size_t i = 0; i < cnt && !ret; i++) {
		struct qw_sb_key k;

		ret = s->be->key_get(s->db, &ids[i], &k);
		if (!ret) {
			key_to_info(&k, info);
			ret = fn(info, arg);
		}
		key_row_clear(&k);
	}
	free(ids);
	free(info);
	/* A callback's stop value is not a failure of the read. */
	tx_end(s, 0);
	return ret;
}

static int cmp_uuid(const void *a, const void *b)
{
	return qw_uuid_compare(a, b);
}

int qw_store_key_resync(struct qw_store *s, const char *peer, const struct qw_uuid *ids, size_t n,
			size_t *dropped)
{
	struct qw_uuid *theirs = NULL, *mine = NULL;
	size_t cnt = 0, drop = 0;
	int64_t t = now_s();
	int ret;

	QW_REQUIRE(s && peer && (ids || !n));
	if (dropped)
		*dropped = 0;
	if (!valid_name(peer))
		return QW_EINVAL;
	if (n) {
		theirs = qw_calloc(n, sizeof(*theirs));
		if (!theirs)
			return QW_ENOMEM;
		memcpy(theirs, ids, n * sizeof(*theirs));
		qsort(theirs, n, sizeof(*theirs), cmp_uuid);
	}
	if ((ret = tx_begin(s))) {
		free(theirs);
		return ret;
	}
	ret = s->be->key_ids(s->db, peer, 0, 0, &mine, &cnt);
	for (size_t i = 0; i < cnt && !ret; i++) {
		if (n && bsearch(&mine[i], theirs, n, sizeof(*theirs), cmp_uuid))
			continue;
		ret = key_erase_locked(s, &mine[i], t);
		if (ret == QW_ESTATE)
			ret = 0;
		else if (!ret)
			drop++;
	}
	free(mine);
	free(theirs);
	ret = tx_end(s, ret);
	if (!ret && dropped)
		*dropped = drop;
	return ret;
}

int qw_store_key_resync_list(struct qw_store *s, const char *peer, struct qw_uuid **ids,
			     size_t *n)
{
	struct qw_uuid *all = NULL, *part = NULL, *nv;
	size_t cnt = 0, pn = 0;
	int ret;

	QW_REQUIRE(s && peer && ids && n);
	*ids = NULL;
	*n = 0;
	if ((ret = tx_begin(s)))
		return ret;
	for (int st = QW_STORE_AVAILABLE; st <= QW_STORE_DELIVERED && !ret; st++) {
		ret = s->be->key_ids(s->db, peer, st, 0, &part, &pn);
		if (ret || pn == 0)
			continue;
		nv = realloc(all, (cnt + pn) * sizeof(*all));
		if (!nv) {
			ret = QW_ENOMEM;
		} else {
			all = nv;
			memcpy(all + cnt, part, pn * sizeof(*all));
			cnt += pn;
		}
		free(part);
		part = NULL;
	}
	ret = tx_end(s, ret);
	if (ret) {
		free(all);
		return ret;
	}
	*ids = all;
	*n = cnt;
	return 0;
}

/* ---- maintenance ---- */

int qw_store_purge(struct qw_store *s, int64_t before, size_t *n)
{
	size_t kn = 0, bn = 0;
	int ret;

	QW_REQUIRE(s);
	if ((ret = tx_begin(s)))
		return ret;
	ret = s->be->key_purge(s->db, before, &kn);
	if (!ret)
		ret = s->be->block_purge(s->db, &bn);
	ret = tx_end(s, ret);
	if (n)
		*n = ret ? 0 : kn;
	return ret;
}

int qw_store_stats(struct qw_store *s, const char *peer, struct qw_store_stats *st)
{
	struct qw_sb_block *bl = NULL;
	struct qw_sb_peer p;
	size_t nb = 0;
	int ret;

	QW_REQUIRE(s && st);
	memset(st, 0, sizeof(*st));
	if ((ret = tx_begin(s)))
		return ret;
	ret = s->be->key_count(s->db, peer, st->keys);
	if (!ret)
		ret = peer ? s->be->peer_get(s->db, peer, &p) : s->be->peer_total(s->db, &p);
	if (!ret)
		ret = s->be->block_list(s->db, peer, &bl, &nb);
	if (!ret) {
		st->blocks = nb;
		for (size_t i = 0; i < nb; i++)
			st->bits_available += bl[i].nbits - bl[i].used;
		st->bits_in = p.bits_in;
		st->bits_taken = p.taken;
		st->bits_keyed = p.keyed;
		st->bits_dropped = p.dropped;
	}
	free(bl);
	return tx_end(s, ret);
}

int qw_store_checkpoint(struct qw_store *s)
{
	int ret;

	QW_REQUIRE(s);
	pthread_mutex_lock(&s->lock);
	ret = s->be->checkpoint(s->db);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

const char *qw_store_state_name(enum qw_store_key_state st)
{
	switch (st) {
	case QW_STORE_AVAILABLE:
		return "available";
	case QW_STORE_RESERVED:
		return "reserved";
	case QW_STORE_DELIVERED:
		return "delivered";
	case QW_STORE_ERASED:
		return "erased";
	default:
		return "unknown";
	}
}
