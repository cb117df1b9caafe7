/* Key store: keys whose material did not come from a local pool (relayed
 * keys at the destination of a relay, fresh keys at its origin;
 * docs/relay-routing.md). They are rows like the keys store_key.c cuts:
 * same columns, same at-rest sealing, same state machine afterwards. */
#include <stdlib.h>
#include <string.h>

#include "qwave/secmem.h"
#include "store_internal.h"

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
	if ((ret = qw_st_join_slaves(req->slave_saes, req->n_slaves, k.slaves, sizeof(k.slaves))))
		return ret;
	k.created = t;
	k.expires = req->expires;
	for (size_t i = 0; i < count && !ret; i++) {
		struct qw_st_aad a;

		k.id = req->key_ids[i];
		qw_st_key_aad(&a, &k);
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
