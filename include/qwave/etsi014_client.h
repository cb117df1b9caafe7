/* ETSI GS QKD 014 V1.1.1 client: what an SAE (or a qwave node pulling keys
 * from a vendor's KME) uses to call Get status, Get key and Get key with
 * key IDs (clauses 5.2-5.4) over HTTPS with mutual TLS.
 *
 * Transport (libcurl): one easy handle per client, so the TLS connection is
 * kept alive and reused between calls. The KME's certificate is verified
 * against ca_file and its host name (clause 5.1: "SAE shall verify the
 * validity of a certificate the KME possesses"); optionally its KME ID is
 * checked too (opts.expect_kme_id). The client presents cert_file/key_file.
 * Only https:// URLs are accepted, TLS 1.2 or newer, no redirects.
 *
 * Threading: a client is used by one thread at a time. Library code never
 * prints or logs; key material is only held in buffers wiped on free.
 *
 * Errors: every call returns 0 or a QW_E* code and, when err is not NULL,
 * fills *err for a person:
 *   HTTP 400        QW_EINVAL (QW_ENOTFOUND for "one or more keys specified
 *                   are not found on KME", clause 6.4)
 *   HTTP 401        QW_EPERM
 *   HTTP 503        QW_EAGAIN (server-side error, e.g. no key yet: retry)
 *   other HTTP      QW_EPROTO
 *   bad response    QW_EPROTO (not JSON, wrong type, bad base64/UUID, ...)
 *   TLS: the KME's certificate or name does not verify  QW_EAUTH
 *   TLS: our certificate/key/CA files unusable          QW_EIO
 *   connection refused, reset, handshake refused        QW_EIO
 *   timeout         QW_ETIMEOUT
 *   aborted by opts.abort_cb                            QW_ECLOSED
 * with err->http_status the HTTP status (0 when none came), err->message
 * the KME's Error "message" (clause 6.5) or a description of the failure,
 * err->details the Error's "details" as raw JSON text ("" if none). */
#ifndef QWAVE_ETSI014_CLIENT_H
#define QWAVE_ETSI014_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"
#include "qwave/uuid.h"

#define QW_ETSI_ID_MAX 64             /* longest KME/SAE ID kept (as kme.h) */
#define QW_ETSI_MSG_BYTES 256
#define QW_ETSI_DETAILS_BYTES 1024
#define QW_ETSI_DEFAULT_TIMEOUT_MS 10000u
/* Largest response body accepted (a Key container of 1024 keys of 64 Kibit
 * is about 11 MiB of base64). */
#define QW_ETSI_MAX_RESPONSE_BYTES (16u * 1024u * 1024u)

struct qw_etsi_error {
	int http_status;                       /* 0: no HTTP answer */
	char message[QW_ETSI_MSG_BYTES];       /* never key material */
	char details[QW_ETSI_DETAILS_BYTES];   /* raw JSON array or "" (truncated) */
};

struct qw_etsi_client_opts {
	const char *base_url;   /* "https://host[:port]" (a trailing '/' is fine) */
	const char *cert_file;  /* client certificate, PEM */
	const char *key_file;   /* its private key, PEM */
	const char *ca_file;    /* CA(s) the KME's certificate must chain to */
	unsigned timeout_ms;    /* whole request; 0: QW_ETSI_DEFAULT_TIMEOUT_MS */
	/* Optional: the KME ID its certificate must name (the qwave identity of
	 * pki.h, kind node; for a certificate without one, its subject CN).
	 * NULL: only chain and host name are checked. */
	const char *expect_kme_id;
	/* Optional: polled during a transfer; non-zero aborts it (QW_ECLOSED).
	 * Lets a daemon thread stop without waiting for the timeout. */
	int (*abort_cb)(void *arg);
	void *abort_arg;
};

/* Status (clause 6.1), every field. */
struct qw_etsi_status {
	char source_kme_id[QW_ETSI_ID_MAX + 1];
	char target_kme_id[QW_ETSI_ID_MAX + 1];
	char master_sae_id[QW_ETSI_ID_MAX + 1];
	char slave_sae_id[QW_ETSI_ID_MAX + 1];
	uint32_t key_size;              /* bits */
	uint64_t stored_key_count;
	uint64_t max_key_count;
	uint32_t max_key_per_request;
	uint32_t max_key_size;          /* bits */
	uint32_t min_key_size;          /* bits */
	uint32_t max_sae_id_count;
	char *status_extension;         /* raw JSON object (malloc) or NULL */
};

/* One key of a Key container (clause 6.3). */
struct qw_etsi_key {
	char key_id[QW_UUID_STR_BYTES];  /* as sent (validated 8-4-4-4-12) */
	uint8_t *key;                    /* decoded key, len bytes (wiped on free) */
	size_t len;
	char *key_id_extension;          /* raw JSON object or NULL */
	char *key_extension;             /* raw JSON object or NULL */
};

struct qw_etsi_keys {
	struct qw_etsi_key *keys;
	size_t n;
	char *container_extension;       /* raw JSON object or NULL */
};

/* Key request (clause 6.2). Zero fields are left out of the request. */
struct qw_etsi_key_request {
	uint32_t number;                         /* 0: KME default (1) */
	uint32_t size_bits;                      /* 0: KME default (key_size) */
	const char *const *additional_slaves;    /* n_additional SAE IDs */
	size_t n_additional;
	const char *extension_mandatory;         /* raw JSON array text or NULL */
	const char *extension_optional;          /* raw JSON array text or NULL */
	/* Use GET with number/size as query parameters; only allowed when the
	 * request has nothing else (clause 6.2), else QW_EINVAL. */
	int use_get;
};

struct qw_etsi_client;

/* New client. Checks the options (https URL, files given) but does not
 * connect: connection and TLS errors come with the first call. 0 and
 * *out (free with qw_etsi_client_free), or QW_EINVAL (with err->message),
 * QW_ENOMEM, QW_EIO (libcurl could not be initialised). */
QW_WUR int qw_etsi_client_new(const struct qw_etsi_client_opts *o,
			      struct qw_etsi_client **out, struct qw_etsi_error *err);
/* Closes the connection. NULL accepted. */
void qw_etsi_client_free(struct qw_etsi_client *c);
/* Connections opened so far (1 after any number of calls on one kept-alive
 * connection). */
uint64_t qw_etsi_client_connections(const struct qw_etsi_client *c);

/* Get status (5.2) for slave_sae. 0 and *out filled (release with
 * qw_etsi_status_clear), or an error as listed above (*out then zeroed). */
QW_WUR int qw_etsi_client_status(struct qw_etsi_client *c, const char *slave_sae,
				 struct qw_etsi_status *out, struct qw_etsi_error *err);
void qw_etsi_status_clear(struct qw_etsi_status *s);

/* Get key (5.3) as master SAE for slave_sae; req NULL: an empty request
 * (GET, one key of the default size). 0 and *out (free with
 * qw_etsi_keys_free), or an error (*out NULL). The number of keys returned
 * is the KME's answer: the caller checks it against what it asked for. */
QW_WUR int qw_etsi_client_get_key(struct qw_etsi_client *c, const char *slave_sae,
				  const struct qw_etsi_key_request *req,
				  struct qw_etsi_keys **out, struct qw_etsi_error *err);

/* Get key with key IDs (5.4) as slave SAE: keys ids[0..n) issued to
 * master_sae. ids must be UUIDs (else QW_EINVAL, nothing sent); use_get
 * needs n == 1 (clause 6.4). 0 and *out, or an error. */
QW_WUR int qw_etsi_client_get_key_with_ids(struct qw_etsi_client *c, const char *master_sae,
					   const char *const *ids, size_t n, int use_get,
					   struct qw_etsi_keys **out, struct qw_etsi_error *err);

/* Wipes every key and frees; NULL accepted. */
void qw_etsi_keys_free(struct qw_etsi_keys *k);

/* ---- pure functions (no network), used by the calls above ---- */

/* base + "/api/v1/keys/" + URL-encoded sae + "/" + method (+ "?" query).
 * malloc()ed string, or NULL on allocation failure. */
char *qw_etsi_client_url(const char *base, const char *sae, const char *method,
			 const char *query);
/* The Key request JSON body (6.2) for req, malloc()ed; QW_EINVAL (with
 * err) when an extension is not a JSON array of objects; QW_ENOMEM. */
QW_WUR int qw_etsi_client_key_request_json(const struct qw_etsi_key_request *req,
					   char **out, struct qw_etsi_error *err);
/* Parse a Status (6.1) response body. 0, or QW_EPROTO with err->message
 * naming the offending field. */
QW_WUR int qw_etsi_client_parse_status(const char *body, size_t len,
				       struct qw_etsi_status *out, struct qw_etsi_error *err);
/* Parse a Key container (6.3): key_ID must be a UUID, key valid base64
 * (RFC 4648, padded). 0 and *out, or QW_EPROTO naming the key and field. */
QW_WUR int qw_etsi_client_parse_keys(const char *body, size_t len,
				     struct qw_etsi_keys **out, struct qw_etsi_error *err);
/* Map an HTTP error answer (status != 200, body as received, may be empty
 * or not JSON) to its QW_E* code and fill err. */
int qw_etsi_client_http_error(int status, const char *body, size_t len,
			      struct qw_etsi_error *err);

#endif
