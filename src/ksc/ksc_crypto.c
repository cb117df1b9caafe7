/* Quantum-key-enhanced crypto services for applications (docs/ksc.md
 * "Crypto services"). An application creates service keys (material from
 * the quantum key source, named by ID, owned by it) and asks the KSC to use
 * them: the material never leaves the KSC, only results do. Derivation
 * (HKDF-SM3 over quantum || classical key) is the one call that returns
 * key material, to the key's owner only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ksc_internal.h"
#include "qwave/aead.h"
#include "qwave/hash.h"
#include "qwave/secmem.h"
#include "qwave/sm2.h"
#include "qwave/zuc.h"

#define DATA_MAX (64u * 1024u)

struct alg {
	const char *name;
	size_t key_bytes; /* 0: SM2 (a PEM private key is stored) */
	enum qw_aead_alg aead;
	int kind; /* 1 aead, 2 zuc-eea3, 3 hmac-sm3, 4 zuc-eia3, 5 sm2 */
};

static const struct alg algs[] = {
	{ "aes-256-gcm", 32, QW_AEAD_AES256_GCM, 1 },
	{ "sm4-gcm", 16, QW_AEAD_SM4_GCM, 1 },
	{ "sm4-ctr-hmac-sm3", 32, QW_AEAD_SM4_CTR_HMAC_SM3, 1 },
	{ "zuc-eea3", 16, 0, 2 },
	{ "hmac-sm3", 32, 0, 3 },
	{ "zuc-eia3", 16, 0, 4 },
	{ "sm2", 0, 0, 5 },
	{ NULL, 0, 0, 0 },
};

static const struct alg *find_alg(const char *name)
{
	for (const struct alg *a = algs; a->name; a++)
		if (!strcmp(a->name, name))
			return a;
	return NULL;
}

static void h_create(struct ksc_req *r)
{
	const char *name = ksc_str(r, "alg", 1), *label = NULL;
	const struct alg *a = name ? find_alg(name) : NULL;
	struct qw_sm2_key *sk = NULL;
	char id[37], *pem = NULL, *pub = NULL;
	size_t plen = 0, publen = 0;
	json_t *det = NULL, *res;
	int ret;

	if (!name)
		return;
	if (!a) {
		ksc_err(r, 400, "alg must be aes-256-gcm, sm4-gcm, sm4-ctr-hmac-sm3, zuc-eea3, "
			"hmac-sm3, zuc-eia3 or sm2");
		return;
	}
	if (a->kind == 1 && !qw_aead_available(a->aead)) {
		ksc_err(r, 501, "%s is not available with this OpenSSL", a->name);
		return;
	}
	if (r->who.kind != KP_APP) {
		ksc_err(r, 403, "crypto service keys belong to applications");
		return;
	}
	if (ksc_begin(r->k)) {
		ksc_err(r, 500, "database busy");
		return;
	}
	if (a->kind == 5) {
		/* SM2 key pairs come from OpenSSL's DRBG (a curve point is not
		 * a QKD key); labelled as such */
		sk = qw_sm2_key_generate(QW_PK_SM2, &ret);
		if (!sk || (ret = qw_sm2_key_to_pem(sk, 1, &pem, &plen)) ||
		    (ret = qw_sm2_key_to_pem(sk, 0, &pub, &publen)))
			goto fail;
		label = "openssl-drbg";
		ret = ksc_key_create(r->k, NULL, r->who.id, "service", a->name, NULL, plen * 8, 0,
				     "active", 0, (const uint8_t *)pem, id, &label);
	} else {
		ret = ksc_key_create(r->k, NULL, r->who.id, "service", a->name,
				     ksc_str(r, "source", 0), a->key_bytes * 8, 0, "active", 0, NULL,
				     id, &label);
	}
	if (ret)
		goto fail;
	det = json_pack("{s:s, s:s}", "alg", a->name, "source", label);
	if ((ret = ksc_audit(r->k, r->who.id, "crypto.key_create", id, det)) ||
	    (ret = ksc_commit(r->k)))
		goto fail;
	res = json_pack("{s:s, s:s, s:s, s:s}", "id", id, "alg", a->name, "source", label, "owner",
			r->who.id);
	if (res && pub)
		json_object_set_new(res, "public_key", json_string(pub));
	ksc_reply(r, 201, res);
	goto out;
fail:
	ksc_rollback(r->k);
	ksc_fail(r, ret, "service key");
out:
	json_decref(det);
	qw_sm2_key_free(sk);
	if (pem)
		qw_free_secret(pem, plen + 1);
	free(pub);
}

/* Load service key id owned by the caller: *a, material (free with
 * qw_free_secret). 0 or a reply sent (-1). */
static int use_key(struct ksc_req *r, const struct alg **a, uint8_t **mat, size_t *len)
{
	const char *id = ksc_str(r, "key_id", 1);
	sqlite3_stmt *st = NULL;
	char alg[32] = "", owner[QW_KSC_ID_MAX + 1] = "", state[16] = "";
	uint8_t *blob = NULL;
	size_t blen = 0;
	int found = 0, ret;

	*mat = NULL;
	if (!id)
		return -1;
	if (r->who.kind != KP_APP) {
		ksc_err(r, 403, "crypto services are for applications");
		return -1;
	}
	if (ksc_prep(r->k, &st, "SELECT alg, owner, state, material FROM keys WHERE id = ? AND"
				" purpose = 'service'")) {
		ksc_err(r, 500, "database error");
		return -1;
	}
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		found = 1;
		snprintf(alg, sizeof(alg), "%s", sqlite3_column_text(st, 0));
		snprintf(owner, sizeof(owner), "%s", sqlite3_column_text(st, 1));
		snprintf(state, sizeof(state), "%s", sqlite3_column_text(st, 2));
		blen = (size_t)sqlite3_column_bytes(st, 3);
		blob = blen ? malloc(blen) : NULL;
		if (blob)
			memcpy(blob, sqlite3_column_blob(st, 3), blen);
	}
	ksc_finish(r->k, st);
	/* a key of another application is as unknown as a key that does not
	 * exist: IDs are not an oracle */
	if (!found || strcmp(owner, r->who.id)) {
		free(blob);
		ksc_err(r, 404, "no service key '%.64s'", id);
		return -1;
	}
	if (strcmp(state, "active") || !blob) {
		free(blob);
		ksc_err(r, 409, "service key %s is %s", id, state);
		return -1;
	}
	ret = ksc_open_sealed(r->k->data_key, "key", id, blob, blen, mat, len);
	free(blob);
	if (ret) {
		ksc_fail(r, ret, "service key");
		return -1;
	}
	*a = find_alg(alg);
	if (!*a) {
		qw_free_secret(*mat, *len);
		ksc_err(r, 500, "service key %s has an unknown algorithm", id);
		return -1;
	}
	return 0;
}

/* Take the next use number of service key id (keys.next_slot, unused by
 * service keys otherwise), committed before the caller uses it so no value
 * is ever handed out twice, even across restarts. Values run 0..limit-1:
 * the 32-bit COUNT of 128-EEA3/EIA3 (3GPP TS 35.201 clause 3) must never
 * repeat under one key, and an AEAD with random 96-bit nonces stays far
 * below the birthday bound at 2^32 messages (NIST SP 800-38D 8.3).
 * 0 or a reply sent (-1). */
static int next_use(struct ksc_req *r, const char *id, uint64_t limit, uint64_t *out)
{
	sqlite3_stmt *st = NULL;
	int ret = QW_EDB, found = 0;
	uint64_t n = 0;

	if (ksc_begin(r->k)) {
		ksc_err(r, 500, "database busy");
		return -1;
	}
	if (ksc_prep(r->k, &st, "SELECT next_slot FROM keys WHERE id = ? AND purpose = 'service'"
				" AND state = 'active'"))
		goto fail;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		found = 1;
		n = (uint64_t)sqlite3_column_int64(st, 0);
	}
	ksc_finish(r->k, st);
	st = NULL;
	if (!found) {
		ksc_rollback(r->k);
		ksc_err(r, 409, "service key %s is no longer active", id);
		return -1;
	}
	if (n >= limit) {
		ksc_rollback(r->k);
		ksc_err(r, 409, "service key %s has reached its limit of %llu uses; create a new key",
			id, (unsigned long long)limit);
		return -1;
	}
	if (ksc_prep(r->k, &st, "UPDATE keys SET next_slot = next_slot + 1, updated = ?"
				" WHERE id = ?"))
		goto fail;
	sqlite3_bind_int64(st, 1, ksc_now());
	sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
	ret = sqlite3_step(st) == SQLITE_DONE && sqlite3_changes(r->k->db) == 1 ? 0 : QW_EDB;
	ksc_finish(r->k, st);
	st = NULL;
	if (ret || (ret = ksc_commit(r->k)))
		goto fail;
	*out = n;
	return 0;
fail:
	ksc_finish(r->k, st);
	ksc_rollback(r->k);
	ksc_fail(r, ret, "service key");
	return -1;
}

#define USES_MAX ((uint64_t)1 << 32)

static int need_kind(struct ksc_req *r, const struct alg *a, int k1, int k2, const char *op)
{
	if (a->kind == k1 || a->kind == k2)
		return 0;
	ksc_err(r, 400, "%s does not %s", a->name, op);
	return -1;
}

void ksc_h_crypto(struct ksc_req *r)
{
	const struct alg *a = NULL;
	uint8_t *mat = NULL, *data = NULL, *aad = NULL, *aux = NULL, *out = NULL;
	size_t mlen = 0, dlen = 0, alen = 0, xlen = 0, olen = 0, cap = 0;
	const char *op;
	json_t *res = NULL;
	int ret, secret = 0;

	if (r->nseg != 2 || strcmp(r->method, "POST")) {
		ksc_err(r, r->nseg == 2 ? 405 : 404, "crypto: POST /crypto/<operation>");
		return;
	}
	op = r->seg[1];
	if (!strcmp(op, "keys")) {
		h_create(r);
		return;
	}
	if (strcmp(op, "encrypt") && strcmp(op, "decrypt") && strcmp(op, "mac") &&
	    strcmp(op, "verify-mac") && strcmp(op, "sign") && strcmp(op, "verify") &&
	    strcmp(op, "derive")) {
		ksc_err(r, 404, "no crypto operation '%.32s'", op);
		return;
	}
	if (use_key(r, &a, &mat, &mlen))
		return;
	if (ksc_b64(r, strcmp(op, "decrypt") ? "data" : "ciphertext", &data, &dlen,
		    strcmp(op, "derive") ? 1 : 0) < 0 ||
	    ksc_b64(r, "aad", &aad, &alen, 0) < 0)
		goto out;
	if (dlen > DATA_MAX) {
		ksc_err(r, 413, "at most %u bytes per request", DATA_MAX);
		goto out;
	}
	cap = dlen + 256;
	out = malloc(cap);
	res = json_pack("{s:s, s:s}", "key_id", ksc_str(r, "key_id", 1), "alg", a->name);
	if (!out || !res) {
		ksc_err(r, 500, "out of memory");
		goto out;
	}
	if (!strcmp(op, "encrypt") || !strcmp(op, "decrypt")) {
		int enc = op[0] == 'e';
		uint32_t count = 0;

		if (need_kind(r, a, 1, 2, "encrypt"))
			goto out;
		if (a->kind == 2 && alen) {
			ksc_err(r, 400, "zuc-eea3 takes no aad (it does not authenticate)");
			goto out;
		}
		if (enc) {
			uint64_t use;

			if (next_use(r, ksc_str(r, "key_id", 1), USES_MAX, &use))
				goto out;
			count = (uint32_t)use;
		}
		if (a->kind == 1) {
			ret = enc ? qw_aead_seal_msg(a->aead, mat, mlen, aad, alen, data, dlen, out,
						     cap, &olen) :
				    qw_aead_open_msg(a->aead, mat, mlen, aad, alen, data, dlen, out,
						     cap, &olen, NULL);
		} else if (enc) {
			/* 128-EEA3: [COUNT (4 bytes) | ciphertext], BEARER 0,
			 * DIRECTION 0; COUNT is the key's persistent use counter
			 * (next_use), never a random value: a repeated COUNT is a
			 * two-time pad. Confidentiality only, as the 3GPP algorithm */
			out[0] = (uint8_t)(count >> 24);
			out[1] = (uint8_t)(count >> 16);
			out[2] = (uint8_t)(count >> 8);
			out[3] = (uint8_t)count;
			ret = qw_zuc_eea3(mat, count, 0, 0, data, dlen * 8, out + 4);
			olen = dlen + 4;
		} else if (dlen < 4) {
			ret = QW_EPARSE;
		} else {
			count = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 |
				(uint32_t)data[2] << 8 | data[3];
			ret = qw_zuc_eea3(mat, count, 0, 0, data + 4, (dlen - 4) * 8, out);
			olen = dlen - 4;
		}
		if (ret == QW_EAUTH || ret == QW_EPARSE) {
			ksc_err(r, 400, "the ciphertext does not %s", ret == QW_EAUTH ?
				"authenticate under this key" : "parse");
			goto out;
		}
		if (ret)
			goto fail;
		secret = !enc;
		if (ksc_put_b64(res, enc ? "ciphertext" : "plaintext", out, olen))
			goto oom;
	} else if (!strcmp(op, "mac") || !strcmp(op, "verify-mac")) {
		uint8_t tag[32];
		size_t tlen = 32;

		if (need_kind(r, a, 3, 4, "compute MACs"))
			goto out;
		if (a->kind == 3) {
			ret = qw_hmac(QW_HASH_SM3, mat, mlen, data, dlen, tag);
		} else {
			/* 128-EIA3 is a one-time universal hash: two tags under one
			 * COUNT are linear in the messages and let a third be forged.
			 * mac spends a fresh COUNT from the key's persistent counter
			 * and returns it; verify-mac takes it back */
			uint32_t t = 0;
			uint64_t count;

			if (op[0] == 'm') {
				if (next_use(r, ksc_str(r, "key_id", 1), USES_MAX, &count))
					goto out;
			} else if (ksc_uint(r, "count", 0, USES_MAX - 1, &count, 1) < 0) {
				goto out;
			}
			json_object_set_new(res, "count", json_integer((json_int_t)count));
			ret = qw_zuc_eia3(mat, (uint32_t)count, 0, 0, data, dlen * 8, &t);
			tag[0] = (uint8_t)(t >> 24);
			tag[1] = (uint8_t)(t >> 16);
			tag[2] = (uint8_t)(t >> 8);
			tag[3] = (uint8_t)t;
			tlen = 4;
		}
		if (ret)
			goto fail;
		if (op[0] == 'm') {
			if (ksc_put_b64(res, "mac", tag, tlen))
				goto oom;
		} else {
			if (ksc_b64(r, "mac", &aux, &xlen, 1) < 0)
				goto out;
			json_object_set_new(res, "valid",
					    json_boolean(xlen == tlen && qw_ct_equal(aux, tag, tlen)));
		}
	} else if (!strcmp(op, "sign") || !strcmp(op, "verify")) {
		struct qw_sm2_key *sk = NULL;
		uint8_t sig[QW_SM2_SIG_MAX_BYTES];
		size_t slen = 0;

		if (need_kind(r, a, 5, 5, "sign"))
			goto out;
		ret = qw_sm2_key_from_pem((const char *)mat, mlen, &sk);
		if (ret)
			goto fail;
		if (op[0] == 's') {
			ret = qw_sm2_sign(sk, NULL, 0, data, dlen, sig, &slen);
			if (!ret && ksc_put_b64(res, "signature", sig, slen))
				ret = QW_ENOMEM;
		} else if (ksc_b64(r, "signature", &aux, &xlen, 1) < 0) {
			qw_sm2_key_free(sk);
			goto out;
		} else {
			ret = qw_sm2_verify(sk, NULL, 0, data, dlen, aux, xlen);
			json_object_set_new(res, "valid", json_boolean(ret == 0));
			ret = ret == QW_EAUTH ? 0 : ret;
		}
		qw_sm2_key_free(sk);
		if (ret)
			goto fail;
	} else { /* derive */
		uint64_t length = 32;
		uint8_t *ikm;
		const char *info = ksc_str(r, "info", 0);

		if (r->resp->body || ksc_b64(r, "classical", &aux, &xlen, 1) < 0 ||
		    ksc_uint(r, "length", 16, 64, &length, 0) < 0)
			goto out;
		if (a->kind == 5) {
			ksc_err(r, 400, "derive mixes a symmetric quantum key, not sm2");
			goto out;
		}
		/* RFC 5869 HKDF-SM3, IKM = quantum key || classical key: the
		 * result is secret if either input is (a combiner in the sense
		 * of hybrid key exchange designs) */
		ikm = malloc(mlen + xlen);
		if (!ikm)
			goto oom;
		memcpy(ikm, mat, mlen);
		memcpy(ikm + mlen, aux, xlen);
		ret = qw_hkdf(QW_HASH_SM3, ikm, mlen + xlen, "qwave-ksc-hybrid", 16, info,
			      info ? strlen(info) : 0, out, (size_t)length);
		qw_free_secret(ikm, mlen + xlen);
		if (ret)
			goto fail;
		secret = 1;
		if (ksc_put_b64(res, "key", out, (size_t)length))
			goto oom;
	}
	snprintf(r->resp->note, sizeof(r->resp->note), "%s %s %zu bytes", op, a->name, dlen);
	if (secret)
		ksc_reply_secret(r, 200, res);
	else
		ksc_reply(r, 200, res);
	res = NULL;
	goto out;
oom:
	ksc_err(r, 500, "out of memory");
	goto out;
fail:
	ksc_fail(r, ret, op);
out:
	json_decref(res);
	if (mat)
		qw_free_secret(mat, mlen);
	if (data)
		qw_free_secret(data, dlen);
	free(aad);
	if (aux)
		qw_free_secret(aux, xlen);
	if (out)
		qw_free_secret(out, cap);
}
