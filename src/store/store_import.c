/* Key store: keys whose material did not come from a local pool (relayed
 * keys at the destination of a relay, fresh keys at its origin;
 * docs/relay-routing.md). They are rows like the keys store_key.c cuts:
 * same columns, same at-rest sealing, same state machine afterwards. */
#include <stdlib.h>
#include <string.h>

#include "qwave/secmem.h"
#include "store_internal.h"

/* The associated data of a key row. It must be byte for byte the one
 * store_key.c binds (aad_key there), or reserve/deliver/erase of an
 * imported key would fail with QW_EAUTH: both bind the same fields in the
 * same order. */
static void import_aad(struct qw_st_aad *a, const struct qw_sb_key *k)
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

/* Slave ids joined with '\n', as store_key.c keeps them. */
static int import_slaves(const char *const *sl, size_t n, char *out, size_t cap)
{
	size_t len = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(sl[i]);

		if (len + l + 2 > cap)
			return QW_EINVAL;
		if (i)
			out[len++] = '\n';
		memcpy(out + len, sl[i], l + 1);
		len += l;
	}
	return 0;
}

static int import_locked(struct qw_store *s, const struct qw_store_key_req *req, size_t count,
			 const uint8_t *material)
{
	size_t kb = req->size_bits / 8;
	int64_t t = qw_st_now();
	struct qw_sb_key k;
	int ret;

	memset(&k, 0, sizeof(k));
	memcpy(k.peer, req->peer, strlen(req->peer) + 1);
	k.size_bits = req->size_bits;
	k.state = req->master_sae ? QW_STORE_RESERVED : QW_STORE_AVAILABLE;
	if (req->master_sae)
		memcpy(k.master, req->master_sae, strlen(req->master_sae) + 1);
	if ((ret = import_slaves(req->slave_saes, req->n_slaves, k.slaves, sizeof(k.slaves))))
		return ret;
	k.created = t;
	k.expires = req->expires;
	for (size_t i = 0; i < count && !ret; i++) {
		struct qw_st_aad a;

		k.id = req->key_ids[i];
		import_aad(&a, &k);
		ret = qw_st_seal(s, &a, material + i * kb, kb, &k.blob, &k.bloblen);
		if (!ret)
			ret = s->be->key_insert(s->db, &k);
		free(k.blob); /* sealed: no plaintext in it */
		k.blob = NULL;
		k.bloblen = 0;
	}
	return ret;
}

int qw_store_key_import(struct qw_store *s, const struct qw_store_key_req *req, size_t count,
			const uint8_t *material, size_t material_len)
{
	int ret;

	QW_REQUIRE(s && req && (material || !material_len) &&
		   (req->slave_saes || !req->n_slaves));
	if (!qw_st_valid_name(req->peer) || req->size_bits == 0 || req->size_bits % 8 ||
	    req->size_bits > QW_STORE_KEY_MAX_BITS || count == 0 || req->expires < 0 ||
	    !req->key_ids || !material)
		return QW_EINVAL;
	if (req->master_sae ? !qw_st_valid_name(req->master_sae) || req->n_slaves == 0
			    : req->n_slaves != 0)
		return QW_EINVAL;
	if (req->n_slaves > QW_STORE_SLAVES_MAX)
		return QW_EINVAL;
	for (size_t i = 0; i < req->n_slaves; i++)
		if (!qw_st_valid_name(req->slave_saes[i]))
			return QW_EINVAL;
	/* count * bytes must be the material exactly (and must not wrap) */
	if (count > SIZE_MAX / (req->size_bits / 8) || count * (req->size_bits / 8) != material_len)
		return QW_EINVAL;
	/* the transaction makes the import all or none: a duplicate id
	 * (QW_EEXIST from the backend) rolls back the keys inserted before it */
	if ((ret = qw_st_tx_begin(s)))
		return ret;
	return qw_st_tx_end(s, import_locked(s, req, count, material));
}
