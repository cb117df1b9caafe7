/* The key-delivery service of a KME, as the ETSI GS QKD 014 front end sees
 * it. The HTTPS layer (src/api/) parses and validates requests and renders
 * responses; the key manager (src/km/) implements these operations on its
 * key store and KM links. Keeping this boundary small lets the same front
 * end serve keys from any source, and lets the key manager be tested
 * without HTTP.
 *
 * Every operation completes through a callback because Get key must first
 * tell the slave SAE's KME about the new key IDs over the KM link (so the
 * slave can never ask too early), which is a network round trip. The
 * callback may run before the call returns (local answers) or later, on the
 * same event loop. */
#ifndef QWAVE_KME_H
#define QWAVE_KME_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"

#define QW_KME_ID_MAX 64     /* longest KME or SAE ID accepted */
#define QW_KEY_ID_STR_BYTES 37

/* ETSI GS QKD 014 clause 6.1 Status, less the two SAE IDs the front end
 * already knows. */
struct qw_kme_status {
	char source_kme_id[QW_KME_ID_MAX + 1];
	char target_kme_id[QW_KME_ID_MAX + 1];
	uint32_t key_size;            /* default key size, bits */
	uint64_t stored_key_count;    /* keys of key_size deliverable now */
	uint64_t max_key_count;
	uint32_t max_key_per_request;
	uint32_t max_key_size;        /* bits */
	uint32_t min_key_size;        /* bits */
	uint32_t max_sae_id_count;    /* 0: no key multicast */
};

/* One delivered key: its UUID and material (size_bits / 8 bytes). The
 * material is owned by the array returned through the callback and is
 * wiped by qw_kme_keys_free(). */
struct qw_kme_key {
	char key_id[QW_KEY_ID_STR_BYTES];
	uint8_t *key;
	uint32_t size_bits;
};

void qw_kme_keys_free(struct qw_kme_key *keys, size_t n);

/* Completion of a key request. err is 0 and keys/n set, or a QW_E* code:
 *   QW_EPERM      caller not entitled (HTTP 401)
 *   QW_ENOTFOUND  key IDs unknown to this KME (400 "one or more keys
 *                 specified are not found on KME")
 *   QW_EAGAIN     not enough key material now (503)
 *   QW_ERANGE     number/size outside this KME's limits (400)
 *   other         server-side failure (503)
 * Ownership of keys passes to the callback, which frees them with
 * qw_kme_keys_free(). */
typedef void (*qw_kme_keys_cb)(void *arg, int err, struct qw_kme_key *keys, size_t n);

struct qw_kme_get_key_req {
	const char *master_sae;           /* caller (from its certificate) */
	const char *slave_sae;            /* from the URL */
	const char *const *additional_slaves;
	size_t n_additional;
	uint32_t number;
	uint32_t size_bits;               /* validated: multiple of 8, in limits */
};

struct qw_kme_ops {
	/* Status for master caller -> slave. 0, QW_EPERM, QW_ENOTFOUND (slave
	 * SAE unknown), or a failure. Synchronous. */
	int (*status)(void *ctx, const char *caller_sae, const char *slave_sae,
		      struct qw_kme_status *out);
	/* Get key: reserve number keys for the pair, inform the peer KME(s),
	 * then complete. Keys handed out are removed from the pool. */
	void (*get_keys)(void *ctx, const struct qw_kme_get_key_req *req,
			 qw_kme_keys_cb cb, void *arg);
	/* Get key with key IDs: caller is the slave; every key must have been
	 * issued by master_sae for the caller (else QW_EPERM), and is
	 * removed when delivered (a second request gets QW_ENOTFOUND). */
	void (*get_keys_with_ids)(void *ctx, const char *caller_sae,
				  const char *master_sae, const char *const *key_ids,
				  size_t n, qw_kme_keys_cb cb, void *arg);
};

#endif
