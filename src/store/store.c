/* Key store core: open/close, master key check, sealing, transactions,
 * maintenance. Pools are in store_pool.c, keys in store_key.c. Each public
 * function takes the lock, opens one backend transaction, and commits only
 * when every step succeeded (rollback otherwise), so a crash or an error
 * leaves the store exactly as before the call.
 *
 * Sealing: AES-256-GCM under a data key dk = HKDF-SHA-256(master key,
 * salt = per-store random salt, info = "qwave store data key v1") (RFC
 * 5869). Nonces are random (96 bits); the associated data binds each blob
 * to its row (aad_chunk in store_pool.c, aad_key in store_key.c), so moving a blob to another row, or
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
#define DEFAULT_LOG2N 15
/* The range qw_store_masterkey_derive accepts (store.h). */
#define MIN_LOG2N 10
#define MAX_LOG2N 22

void qw_st_aad_bytes(struct qw_st_aad *a, const void *p, size_t n)
{
	QW_REQUIRE(a->n + n <= sizeof(a->b));
	memcpy(a->b + a->n, p, n);
	a->n += n;
}

/* Strings go in with their NUL so that adjacent fields cannot run into
 * each other ("ab"+"c" != "a"+"bc"). */
void qw_st_aad_str(struct qw_st_aad *a, const char *s)
{
	qw_st_aad_bytes(a, s, strlen(s) + 1);
}

void qw_st_aad_u64(struct qw_st_aad *a, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (56 - 8 * i));
	qw_st_aad_bytes(a, b, 8);
}

/* blob = nonce | ciphertext | tag, freshly allocated. */
int qw_st_seal(struct qw_store *s, const struct qw_st_aad *a, const uint8_t *pt, size_t ptlen,
		uint8_t **blob, size_t *bloblen)
{
	uint8_t *b = malloc(ptlen + QW_ST_BLOB_OVERHEAD);
	int ret;

	*blob = NULL;
	*bloblen = 0;
	if (!b)
		return QW_ENOMEM;
	ret = qw_random_bytes(b, QW_ST_NONCE);
	if (!ret)
		ret = qw_aead_ctx_seal(s->aead, b, a->b, a->n, pt, ptlen, b + QW_ST_NONCE,
				       b + QW_ST_NONCE + ptlen);
	if (ret) {
		free(b);
		return ret;
	}
	*blob = b;
	*bloblen = ptlen + QW_ST_BLOB_OVERHEAD;
	return 0;
}

/* Opens a blob that must hold exactly ptlen bytes; QW_EAUTH otherwise. */
int qw_st_unseal(struct qw_store *s, const struct qw_st_aad *a, const uint8_t *blob,
		  size_t bloblen, uint8_t *pt, size_t ptlen)
{
	if (!blob || bloblen != ptlen + QW_ST_BLOB_OVERHEAD)
		return QW_EAUTH;
	return qw_aead_ctx_open(s->aead, blob, a->b, a->n, blob + QW_ST_NONCE, ptlen,
				blob + QW_ST_NONCE + ptlen, pt);
}

int64_t qw_st_now(void)
{
	return (int64_t)time(NULL);
}

int qw_st_valid_name(const char *s)
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

/* ---- transactions ---- */

int qw_st_tx_begin(struct qw_store *s)
{
	pthread_mutex_lock(&s->lock);
	int ret = s->be->begin(s->db);

	if (ret)
		pthread_mutex_unlock(&s->lock);
	return ret;
}

/* Commit when ret is 0 (rolling back if the commit fails), roll back
 * otherwise. */
static int tx_finish(struct qw_store *s, int ret)
{
	if (!ret) {
		ret = s->be->commit(s->db);
		if (ret)
			s->be->rollback(s->db);
	} else {
		s->be->rollback(s->db);
	}
	return ret;
}

int qw_st_tx_end(struct qw_store *s, int ret)
{
	ret = tx_finish(s, ret);
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
	struct qw_st_aad a = { .n = 0 };
	int fresh = 0, ret;

	qw_st_aad_str(&a, "qwave-store check v1");
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
		if ((ret = qw_st_seal(s, &a, zero, sizeof(zero), &blob, &bloblen)))
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
		ret = qw_st_unseal(s, &a, check, checklen, pt, sizeof(pt));
		if (!ret && !qw_ct_equal(pt, zero, sizeof(pt)))
			ret = QW_EAUTH;
	}
out:
	ret = tx_finish(s, ret);
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
		unsigned log2n = opts && opts->scrypt_log2n ? opts->scrypt_log2n : DEFAULT_LOG2N;

		/* Checked before it is committed: a cost the KDF refuses would
		 * leave a store that no passphrase can ever open. */
		fresh[0] = (uint8_t)log2n;
		ret = log2n < MIN_LOG2N || log2n > MAX_LOG2N
			      ? QW_EINVAL
			      : qw_random_bytes(fresh + 1, SALT_BYTES);
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
	ret = tx_finish(s, ret);
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

/* ---- maintenance ---- */

int qw_store_purge(struct qw_store *s, int64_t before, size_t *n)
{
	size_t kn = 0, bn = 0;
	int ret;

	QW_REQUIRE(s);
	if ((ret = qw_st_tx_begin(s)))
		return ret;
	ret = s->be->key_purge(s->db, before, &kn);
	if (!ret)
		ret = s->be->block_purge(s->db, &bn);
	ret = qw_st_tx_end(s, ret);
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
	if ((ret = qw_st_tx_begin(s)))
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
	return qw_st_tx_end(s, ret);
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
