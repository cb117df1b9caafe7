/* Key store keys: cut from a pool, state machine AVAILABLE -> RESERVED ->
 * DELIVERED (or ERASED), at-most-once delivery, expiry, resync. */
#include <stdlib.h>
#include <string.h>

#include "qwave/secmem.h"
#include "store_internal.h"

int qw_st_join_slaves(const char *const *sl, size_t n, char *out, size_t cap)
{
	size_t len = 0;

	out[0] = '\0';
	if (n > QW_STORE_SLAVES_MAX || (n && !sl))
		return QW_EINVAL;
	for (size_t i = 0; i < n; i++) {
		size_t l;

		if (!qw_st_valid_name(sl[i]))
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

/* State and delivery time are not bound: they only ever move towards
 * "no material", and a row without material has nothing to protect. */
void qw_st_key_aad(struct qw_st_aad *a, const struct qw_sb_key *k)
{
	a->n = 0;
	qw_st_aad_str(a, "qwave-store key v1");
	qw_st_aad_bytes(a, k->id.b, QW_UUID_BYTES);
	qw_st_aad_str(a, k->peer);
	qw_st_aad_u64(a, k->size_bits);
	qw_st_aad_str(a, k->master);
	qw_st_aad_str(a, k->slaves);
	qw_st_aad_u64(a, (uint64_t)k->created);
	qw_st_aad_u64(a, (uint64_t)k->expires);
}

/* ---- keys ---- */

/* Key material is taken from the pool in groups of up to this many bytes:
 * one pool read (block list, chunk re-seal, counters) per group instead of
 * one per key. The pool is one bit stream, so the keys get exactly the bits
 * that key-by-key takes would give them, and both ends of a link stay in
 * step whatever group size either uses. */
#define KEY_GROUP_BYTES 4096u

static int key_create_locked(struct qw_store *s, const struct qw_store_key_req *req,
			     size_t count, struct qw_uuid *ids, struct qw_store_pos *at,
			     uint8_t *km, size_t kmcap)
{
	size_t kb = req->size_bits / 8, per = kmcap / kb;
	struct qw_sb_key k;
	struct qw_st_aad a;
	int ret;

	memset(&k, 0, sizeof(k));
	memcpy(k.peer, req->peer, strlen(req->peer) + 1);
	k.size_bits = req->size_bits;
	k.state = req->master_sae ? QW_STORE_RESERVED : QW_STORE_AVAILABLE;
	if (req->master_sae)
		memcpy(k.master, req->master_sae, strlen(req->master_sae) + 1);
	k.created = qw_st_now();
	k.expires = req->expires;
	if ((ret = qw_st_join_slaves(req->slave_saes, req->n_slaves, k.slaves, sizeof(k.slaves))))
		return ret;
	for (size_t i = 0; i < count && !ret;) {
		size_t g = count - i < per ? count - i : per;

		ret = qw_st_pool_take_locked(s, req->peer, (uint64_t)g * req->size_bits,
					     i == 0 ? req->expect : NULL, km, i == 0 ? at : NULL, 1);
		for (size_t j = 0; j < g && !ret; j++, i++) {
			if (req->key_ids)
				k.id = req->key_ids[i];
			else if ((ret = qw_uuid_generate(&k.id)))
				break;
			qw_st_key_aad(&a, &k);
			ret = qw_st_seal(s, &a, km + j * kb, kb, &k.blob, &k.bloblen);
			if (!ret)
				ret = s->be->key_insert(s->db, &k);
			key_row_clear(&k);
			ids[i] = k.id;
		}
	}
	qw_wipe(km, kmcap);
	return ret;
}

static int create_check(const struct qw_store_key_req *req, size_t count)
{
	if (!qw_st_valid_name(req->peer) || req->size_bits == 0 || req->size_bits % 8 ||
	    req->size_bits > QW_STORE_KEY_MAX_BITS || count == 0 || req->expires < 0)
		return QW_EINVAL;
	if (req->master_sae ? !qw_st_valid_name(req->master_sae) || req->n_slaves == 0
			    : req->n_slaves != 0)
		return QW_EINVAL;
	if (req->n_slaves > QW_STORE_SLAVES_MAX)
		return QW_EINVAL;
	for (size_t i = 0; i < req->n_slaves; i++)
		if (!qw_st_valid_name(req->slave_saes[i]))
			return QW_EINVAL;
	return 0;
}

/* Keys up to KEY_GROUP_BYTES are cut through the caller's wiped stack
 * buffer; a larger key gets a locked one of its own size. */
static uint8_t *create_buf(const struct qw_store_key_req *req, uint8_t *stack, size_t *cap)
{
	size_t kb = req->size_bits / 8;

	if (kb <= KEY_GROUP_BYTES) {
		*cap = KEY_GROUP_BYTES / kb * kb;
		return stack;
	}
	*cap = kb;
	return qw_secure_alloc(kb);
}

static void create_buf_free(const struct qw_store_key_req *req, uint8_t *km, uint8_t *stack)
{
	if (km != stack)
		qw_secure_free(km, req->size_bits / 8);
	else
		qw_wipe(stack, KEY_GROUP_BYTES);
}

int qw_store_key_create(struct qw_store *s, const struct qw_store_key_req *req, size_t count,
			struct qw_uuid *ids, struct qw_store_pos *at)
{
	uint8_t stack[KEY_GROUP_BYTES], *km;
	size_t cap;
	int ret;

	QW_REQUIRE(s && req && (ids || !count) && (req->slave_saes || !req->n_slaves));
	if ((ret = create_check(req, count)))
		return ret;
	if (!(km = create_buf(req, stack, &cap)))
		return QW_ENOMEM;
	if ((ret = qw_st_tx_begin(s)) == 0)
		ret = qw_st_tx_end(s, key_create_locked(s, req, count, ids, at, km, cap));
	create_buf_free(req, km, stack);
	if (ret)
		memset(ids, 0, count * sizeof(*ids));
	return ret;
}

static int key_reserve_locked(struct qw_store *s, const struct qw_uuid *id, const char *master,
			      const char *const *sl, size_t nsl)
{
	struct qw_sb_key k;
	struct qw_st_aad a;
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
	qw_st_key_aad(&a, &k);
	if ((ret = qw_st_unseal(s, &a, k.blob, k.bloblen, km, kb)))
		goto out;
	key_row_clear(&k);
	memcpy(k.master, master, strlen(master) + 1);
	if ((ret = qw_st_join_slaves(sl, nsl, k.slaves, sizeof(k.slaves))))
		goto out;
	k.state = QW_STORE_RESERVED;
	/* The SAE pair is part of the associated data: re-seal under it. */
	qw_st_key_aad(&a, &k);
	if ((ret = qw_st_seal(s, &a, km, kb, &k.blob, &k.bloblen)))
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
	if (!qw_st_valid_name(master_sae) || n_slaves == 0 || n_slaves > QW_STORE_SLAVES_MAX)
		return QW_EINVAL;
	for (size_t i = 0; i < n_slaves; i++)
		if (!qw_st_valid_name(slave_saes[i]))
			return QW_EINVAL;
	if ((ret = qw_st_tx_begin(s)))
		return ret;
	return qw_st_tx_end(s, key_reserve_locked(s, id, master_sae, slave_saes, n_slaves));
}

static int key_deliver_locked(struct qw_store *s, const struct qw_uuid *id, const char *sae,
			      uint8_t *out, size_t cap, struct qw_store_key_info *info)
{
	struct qw_sb_key k;
	struct qw_st_aad a;
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
	qw_st_key_aad(&a, &k);
	if ((ret = qw_st_unseal(s, &a, k.blob, k.bloblen, out, k.size_bits / 8)))
		goto out;
	key_row_clear(&k);
	k.state = QW_STORE_DELIVERED;
	k.delivered_at = k.closed_at = qw_st_now();
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
	if ((ret = qw_st_tx_begin(s)))
		return ret;
	/* The material leaves only if the commit that destroys the stored
	 * copy succeeded: at most once, even across a crash. */
	ret = qw_st_tx_end(s, key_deliver_locked(s, id, sae, out, cap, info));
	if (ret && out)
		qw_wipe(out, cap);
	return ret;
}

/* Inside a transaction: deliver n keys, material back to back in out. */
static int deliver_many_locked(struct qw_store *s, const struct qw_uuid *ids, size_t n,
			       const char *sae, uint8_t *out, size_t cap, size_t *off,
			       struct qw_store_key_info *infos, struct qw_store_key_info *one)
{
	int ret = 0;

	*off = 0;
	for (size_t i = 0; i < n && !ret; i++) {
		struct qw_store_key_info *ki = infos ? &infos[i] : one;

		ret = key_deliver_locked(s, &ids[i], sae, out ? out + *off : NULL, cap - *off, ki);
		if (!ret)
			*off += ki->size_bits / 8;
	}
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
	if ((ret = qw_st_tx_begin(s))) {
		free(info);
		return ret;
	}
	ret = deliver_many_locked(s, ids, n, sae, out, cap, &off, infos, info);
	ret = qw_st_tx_end(s, ret);
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

int qw_store_key_deliver_create(struct qw_store *s, const struct qw_uuid *ids, size_t n,
				const char *sae, uint8_t *out, size_t cap, size_t *outlen,
				const struct qw_store_key_req *req, size_t count,
				struct qw_uuid *new_ids, struct qw_store_pos *at, int *create_err)
{
	struct qw_store_key_info *info;
	uint8_t stack[KEY_GROUP_BYTES], *km = NULL;
	size_t off = 0, kmcap = 0;
	int ret, cret;

	QW_REQUIRE(s && (ids || !n) && sae && (out || !cap) && outlen && req && create_err &&
		   (new_ids || !count) && (req->slave_saes || !req->n_slaves));
	*outlen = 0;
	*create_err = 0;
	cret = create_check(req, count);
	if (!cret && !(km = create_buf(req, stack, &kmcap)))
		cret = QW_ENOMEM;
	if (cret) {
		/* the delivery alone */
		memset(new_ids, 0, count * sizeof(*new_ids));
		*create_err = cret;
		return qw_store_key_deliver_many(s, ids, n, sae, out, cap, outlen, NULL);
	}
	if (!(info = malloc(sizeof(*info)))) {
		create_buf_free(req, km, stack);
		return QW_ENOMEM;
	}
	if ((ret = qw_st_tx_begin(s)) == 0) {
		ret = deliver_many_locked(s, ids, n, sae, out, cap, &off, NULL, info);
		if (!ret)
			cret = key_create_locked(s, req, count, new_ids, at, km, kmcap);
		/* a failed cut must not take the delivery down with it: roll
		 * both back and deliver alone below */
		ret = qw_st_tx_end(s, ret ? ret : cret);
	}
	qw_wipe(info, sizeof(*info));
	free(info);
	create_buf_free(req, km, stack);
	if (!ret) {
		*outlen = off;
		return 0;
	}
	memset(new_ids, 0, count * sizeof(*new_ids));
	if (out)
		qw_wipe(out, cap);
	if (!cret)
		return ret; /* the delivery (or the commit) failed: nothing done */
	*create_err = cret;
	return qw_store_key_deliver_many(s, ids, n, sae, out, cap, outlen, NULL);
}

int qw_store_key_create_deliver(struct qw_store *s, const struct qw_store_key_req *req,
				size_t count, struct qw_uuid *ids, struct qw_store_pos *at,
				const char *sae, uint8_t *out, size_t cap, size_t *outlen,
				int *deliver_err)
{
	struct qw_store_key_info *info;
	uint8_t stack[KEY_GROUP_BYTES], *km;
	size_t off = 0, kmcap = 0;
	int ret, dret = 0;

	QW_REQUIRE(s && req && (ids || !count) && (req->slave_saes || !req->n_slaves) && sae &&
		   (out || !cap) && outlen && deliver_err);
	*outlen = 0;
	*deliver_err = 0;
	if ((ret = create_check(req, count)))
		return ret;
	if (!(km = create_buf(req, stack, &kmcap)))
		return QW_ENOMEM;
	if (!(info = malloc(sizeof(*info)))) {
		create_buf_free(req, km, stack);
		return QW_ENOMEM;
	}
	if ((ret = qw_st_tx_begin(s)) == 0) {
		ret = key_create_locked(s, req, count, ids, at, km, kmcap);
		if (!ret)
			dret = deliver_many_locked(s, ids, count, sae, out, cap, &off, NULL, info);
		/* a failed delivery must not take the cut with it (the two
		 * ends' pools must stay in step): roll both back, cut alone */
		ret = qw_st_tx_end(s, ret ? ret : dret);
	}
	qw_wipe(info, sizeof(*info));
	free(info);
	create_buf_free(req, km, stack);
	if (!ret) {
		*outlen = off;
		return 0;
	}
	if (out)
		qw_wipe(out, cap);
	if (!dret) {
		memset(ids, 0, count * sizeof(*ids));
		return ret; /* the cut (or the commit) failed: nothing done */
	}
	*deliver_err = dret;
	return qw_store_key_create(s, req, count, ids, at);
}

int qw_store_key_info(struct qw_store *s, const struct qw_uuid *id, struct qw_store_key_info *info)
{
	struct qw_sb_key k;
	int ret;

	QW_REQUIRE(s && id && info);
	if ((ret = qw_st_tx_begin(s)))
		return ret;
	ret = s->be->key_get(s->db, id, &k);
	if (!ret)
		key_to_info(&k, info);
	key_row_clear(&k);
	return qw_st_tx_end(s, ret);
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
	if ((ret = qw_st_tx_begin(s)))
		return ret;
	return qw_st_tx_end(s, key_erase_locked(s, id, qw_st_now()));
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
	if ((ret = qw_st_tx_begin(s)))
		return ret;
	ret = s->be->key_ids(s->db, NULL, 0, now, &ids, &cnt);
	for (size_t i = 0; i < cnt && !ret; i++) {
		ret = key_erase_locked(s, &ids[i], qw_st_now());
		if (ret == QW_ESTATE)
			ret = 0; /* already a tombstone */
		else if (!ret)
			done++;
	}
	free(ids);
	ret = qw_st_tx_end(s, ret);
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
	if ((ret = qw_st_tx_begin(s))) {
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
	qw_st_tx_end(s, 0);
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
	int64_t t = qw_st_now();
	int ret;

	QW_REQUIRE(s && peer && (ids || !n));
	if (dropped)
		*dropped = 0;
	if (!qw_st_valid_name(peer))
		return QW_EINVAL;
	if (n) {
		theirs = qw_calloc(n, sizeof(*theirs));
		if (!theirs)
			return QW_ENOMEM;
		memcpy(theirs, ids, n * sizeof(*theirs));
		qsort(theirs, n, sizeof(*theirs), cmp_uuid);
	}
	if ((ret = qw_st_tx_begin(s))) {
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
	ret = qw_st_tx_end(s, ret);
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
	if ((ret = qw_st_tx_begin(s)))
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
	ret = qw_st_tx_end(s, ret);
	if (ret) {
		free(all);
		return ret;
	}
	*ids = all;
	*n = cnt;
	return 0;
}
