/* ETSI GS QKD 014 V1.1.1 key delivery API over qwave's HTTPS server
 * (https.h), served from any key manager behind kme.h.
 *
 *   GET       /api/v1/keys/{slave_SAE_ID}/status     Status        (5.2, 6.1)
 *   GET/POST  /api/v1/keys/{slave_SAE_ID}/enc_keys   Get key       (5.3, 6.2, 6.3)
 *   GET/POST  /api/v1/keys/{master_SAE_ID}/dec_keys  Get key with key IDs (5.4, 6.4)
 *
 * The caller's SAE ID is the identity of its client certificate (pki.h);
 * a certificate naming no SAE gets 401. Every error, with its status and
 * message, is listed in docs/etsi014.md.
 *
 * Request parsing is a pure function (qw_etsi014_parse), independent of
 * sockets, so it can be fuzzed and tested alone; limits that depend on the
 * KME's Status are checked by qw_etsi014_check_limits. */
#ifndef QWAVE_ETSI014_H
#define QWAVE_ETSI014_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "qwave/error.h"
#include "qwave/https.h"
#include "qwave/kme.h"

#define QW_ETSI014_PREFIX "/api/v1/keys/"
/* Most key IDs in one Get key with key IDs request (the 64 KiB body limit
 * allows about 1300). */
#define QW_ETSI014_MAX_KEY_IDS 1024
/* Most additional_slave_SAE_IDs parsed before the KME's own
 * max_SAE_ID_count applies. */
#define QW_ETSI014_MAX_SAE_IDS 64
#define QW_ETSI014_MSG_BYTES 192

enum qw_etsi014_op {
	QW_ETSI014_STATUS = 1,
	QW_ETSI014_ENC_KEYS = 2,
	QW_ETSI014_DEC_KEYS = 3,
};

/* A syntactically valid request. Strings are percent-decoded. */
struct qw_etsi014_request {
	enum qw_etsi014_op op;
	/* slave_SAE_ID (status, enc_keys) or master_SAE_ID (dec_keys) */
	char sae_id[QW_KME_ID_MAX + 1];
	/* enc_keys (Key request, 6.2) */
	uint32_t number;        /* 1 when not given */
	uint32_t size_bits;     /* 0 when not given: the KME's key_size */
	char (*additional)[QW_KME_ID_MAX + 1];
	size_t n_additional;
	/* dec_keys (Key IDs, 6.4): canonical lowercase UUIDs, distinct */
	char (*key_ids)[QW_KEY_ID_STR_BYTES];
	size_t n_key_ids;
};

/* Why a request was refused: HTTP status (400, 404 or 405), the Error
 * message (6.5), optional details (a JSON array, owned), and for 405 the
 * allowed methods (mask of enum qw_http_method). */
struct qw_etsi014_error {
	int status;
	char message[QW_ETSI014_MSG_BYTES];
	json_t *details;
	unsigned allow;
};

/* Parse and validate one request: method, raw path and query (NULL: none)
 * as received, and the body. 0 and *out (release with
 * qw_etsi014_request_clear), or QW_EINVAL with *err filled (release with
 * qw_etsi014_error_clear), or QW_ENOMEM. Never touches the network. */
QW_WUR int qw_etsi014_parse(enum qw_http_method method, const char *path, const char *query,
			    const uint8_t *body, size_t len, struct qw_etsi014_request *out,
			    struct qw_etsi014_error *err);
/* Get key against the KME's Status: fills the default size, then checks
 * number <= max_key_per_request, min_key_size <= size <= max_key_size,
 * additional SAE IDs <= max_SAE_ID_count. 0 or QW_EINVAL with *err (400). */
QW_WUR int qw_etsi014_check_limits(struct qw_etsi014_request *r, const struct qw_kme_status *st,
				   struct qw_etsi014_error *err);
void qw_etsi014_request_clear(struct qw_etsi014_request *r);
void qw_etsi014_error_clear(struct qw_etsi014_error *e);
/* The Error body (6.5) for err: {"message": ..., "details": [...]}.
 * malloc()ed text, or NULL on allocation failure. */
char *qw_etsi014_error_json(const struct qw_etsi014_error *e);

struct qw_etsi014;

/* Serve the API on srv (routes QW_ETSI014_PREFIX) with keys from ops/ctx.
 * ops and ctx are borrowed and must outlive the returned object, which
 * must outlive srv's requests: free srv first (or when it has no pending
 * requests). NULL and *err (may be NULL): QW_ENOMEM. */
struct qw_etsi014 *qw_etsi014_new(struct qw_https_server *srv, const struct qw_kme_ops *ops,
				  void *ctx, int *err);
void qw_etsi014_free(struct qw_etsi014 *e);

#endif
