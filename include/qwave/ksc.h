/* The Key Service Center (SYSTEM.md section 6, white paper chapter 4):
 * devices, secure media, key life cycle, audit, authentication, session
 * keys and quantum-key-enhanced crypto services, behind one REST API.
 *
 * Layers (docs/ksc.md):
 *   resource    key sources (QRNG/entropy source, QKD keys over ETSI 014),
 *               crypto core (aead.h, hash.h, sm2.h, zuc.h), certificates
 *               (pki.h), the KSC's own SQLite database (WAL)
 *   management  system initialisation (first super admin, master key ->
 *               per-device key-encryption keys), roles (super, operator,
 *               auditor), key life cycle, devices, the SM3 hash-chained
 *               append-only audit log
 *   service     offline filling of secure media, device authentication,
 *               session and group keys, crypto services
 *
 * The API is transport independent: qw_ksc_handle() takes the caller's
 * verified identity (the CN/SAN ID of its client certificate, which the
 * HTTPS layer checked) and a request, and produces a status and a JSON body.
 * src/cmd/qwksc.c puts it behind the mutual-TLS server of https.h; the unit
 * tests call it directly. Every mutating request is one SQLite transaction
 * that includes its audit record: it happens with its record or not at all.
 * Key material is sealed at rest (AES-256-GCM under keys derived from the
 * master key), never logged, never put into an audit record, and sent only
 * to a caller entitled to it, in a response marked secret.
 *
 * qw_ksc_handle, qw_ksc_audit_verify and qw_ksc_air_serve may be called from
 * different threads (a lock inside struct qw_ksc serialises their database
 * work); everything else uses a struct qw_ksc from one thread at a time. */
#ifndef QWAVE_KSC_H
#define QWAVE_KSC_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"
#include "qwave/frame.h"
#include "qwave/refill.h"

#define QW_KSC_MASTER_KEY_BYTES 32
/* Pre-filled keys are consumed in slots of 256 bits (one AES-256/SM4 key
 * pair, or one HMAC key, per use). */
#define QW_KSC_SLOT_BYTES 32
#define QW_KSC_SLOT_BITS (8u * QW_KSC_SLOT_BYTES)
/* Device medium key (shared with the device at personalisation). */
#define QW_KSC_MEDIUM_KEY_BYTES 32
#define QW_KSC_ID_MAX 64
/* Largest fill of one secure medium (16 Mbit) and largest key (1 Mbit). */
#define QW_KSC_FILL_MAX_BITS (1u << 24)
#define QW_KSC_KEY_MAX_BITS (1u << 20)
#define QW_KSC_DEFAULT_MAX_BODY (256u * 1024u)

struct qw_ksc;
struct qw_rng;

struct qw_ksc_opts {
	const char *db_path;       /* SQLite file (created by qw_ksc_init) */
	const uint8_t *master_key; /* QW_KSC_MASTER_KEY_BYTES, copied */
	/* Key source: a QRNG raw-sample file/device with its claimed
	 * min-entropy per sample (NIST SP 800-90B health tests, entropy.h),
	 * or NULL for the OS entropy source. Keys record which one made them. */
	const char *qrng_path;
	unsigned qrng_bits_per_sample;
	double qrng_h;
	/* Optional QKD source: keys pulled over ETSI GS QKD 014 from a KME.
	 * NULL kme_url: no QKD source. */
	const char *kme_url, *kme_cert, *kme_key, *kme_ca, *kme_slave_sae;
	/* Certificate system (pki.h CA directory) for POST /certs, GET /crl
	 * and certificate authentication; NULL disables those endpoints. */
	const char *pki_dir;
	int sync_normal;           /* SQLite synchronous=NORMAL instead of FULL */
	/* Lifetime of a challenge (s); 0: 60. */
	unsigned challenge_ttl_s;
};

/* System initialisation: create the database at path (refuses an existing
 * file: QW_EEXIST), bind it to master key mk (a check value, not the key,
 * is stored) and make first_admin (an ID as in pki.h) the first super
 * administrator; the first audit record says so. 0, QW_EEXIST, QW_EINVAL,
 * QW_EDB, QW_ECRYPTO. */
QW_WUR int qw_ksc_init(const char *path, const uint8_t mk[static QW_KSC_MASTER_KEY_BYTES],
		       const char *first_admin);

/* Open an initialised KSC database. NULL and *err (may be NULL):
 * QW_ENOTFOUND (no database), QW_EAUTH (other master key), QW_EDB,
 * QW_EHEALTH/QW_EIO (key source), QW_ENOMEM. */
struct qw_ksc *qw_ksc_open(const struct qw_ksc_opts *o, int *err);
/* Close and wipe the derived keys; NULL accepted. */
void qw_ksc_close(struct qw_ksc *k);

/* A response of qw_ksc_handle. body is a malloc()ed JSON text; when secret
 * is set it holds key material (send it with qw_https_reply_secret, wipe
 * it otherwise). note is a short text for the access log, never secret. */
struct qw_ksc_resp {
	int status;
	char *body;
	size_t len;
	int secret;
	char note[96];
};

/* Handle one API request: method ("GET", "POST", ...), path below the API
 * root (e.g. "/devices/tf-1/fill"), query (may be NULL), body (may be NULL
 * when len is 0) from the caller whose certificate names peer_id (NULL: a
 * certificate without a qwave identity, refused with 403). Always fills
 * *resp (status 200/201 or a 4xx/5xx with {"message": ...}); returns 0, or
 * QW_ENOMEM when not even an error body could be made (resp->body NULL). */
QW_WUR int qw_ksc_handle(struct qw_ksc *k, const char *peer_id, const char *method,
			 const char *path, const char *query, const uint8_t *body,
			 size_t len, struct qw_ksc_resp *resp);
/* Free (and wipe when secret) a response body; NULL fields accepted. */
void qw_ksc_resp_clear(struct qw_ksc_resp *resp);

/* Verify the audit log: every record's SM3 chain hash, the links between
 * records, and the authenticated head (so truncation is detected too).
 * *n gets the records checked; *bad_seq the first bad record (0 if none).
 * 0 (intact), QW_EAUTH (altered), QW_EDB. */
QW_WUR int qw_ksc_audit_verify(struct qw_ksc *k, uint64_t *n, uint64_t *bad_seq);

/* ---- Shamir secret sharing over GF(2^8) (polynomial x^8+x^4+x^3+x+1) ----
 * Split secret (len bytes) into n shares of threshold t (2 <= t <= n <=
 * 255): share i (i = 0..n-1) is x = i + 1 followed by len bytes, written at
 * shares + i * (len + 1). Coefficients come from qw_random_bytes. 0,
 * QW_EINVAL, or the random generator's error. */
QW_WUR int qw_ksc_shamir_split(const uint8_t *secret, size_t len, unsigned t, unsigned n,
			       uint8_t *shares);
/* Combine m shares (each len + 1 bytes, as above, at shares + i * (len +
 * 1)) by Lagrange interpolation at 0 into secret (len bytes). With fewer
 * than t shares the result is unrelated to the secret (that is the point);
 * the caller authenticates the result. 0, QW_EINVAL (x = 0 or repeated). */
QW_WUR int qw_ksc_shamir_combine(const uint8_t *shares, size_t m, size_t len,
				 uint8_t *secret);

/* ---- secure-medium images (offline filling) ----
 * An image is "QWKSCIMG1\n" + a JSON header line (device, image id, batch
 * id, bits; no key material) + base64 of an AES-256-GCM sealed message
 * (aead.h) of the key material under the device's medium key, with the
 * header as associated data: a different device, or an edited header,
 * fails to open. */

/* Open image (len bytes) with the medium key. 0 and *keys (malloc()ed,
 * free with qw_free_secret(*keys, *nbytes)), *nbytes, and batch (the batch
 * key ID, 36 characters + NUL) and device (up to QW_KSC_ID_MAX + 1); or
 * QW_EPARSE (not an image), QW_EAUTH (wrong device key or altered), QW_ENOMEM. */
QW_WUR int qw_ksc_image_open(const uint8_t *image, size_t len,
			     const uint8_t mk[static QW_KSC_MEDIUM_KEY_BYTES],
			     uint8_t **keys, size_t *nbytes, char batch[static 37],
			     char device[static QW_KSC_ID_MAX + 1]);
/* Build an image (what the KSC does in POST /devices/{id}/fill). *out is
 * malloc()ed, *outlen its length. 0, QW_ENOMEM, QW_ECRYPTO. */
QW_WUR int qw_ksc_image_seal(const char *device, const char *batch, const uint8_t *keys,
			     size_t nbytes, const uint8_t mk[static QW_KSC_MEDIUM_KEY_BYTES],
			     char **out, size_t *outlen);

/* Associated data binding a wrapped session/group key to its use: the
 * KSC wraps key K for a terminal as aead(AES-256-GCM, slot key, aad) where
 * aad = "qwave-ksc|<kind>|<session or group id>|<epoch>|<device>"; the
 * device side builds the same string to unwrap. Returns the length
 * written (snprintf semantics). */
int qw_ksc_wrap_aad(char *out, size_t cap, const char *kind, const char *id,
		    uint64_t epoch, const char *device);

/* Challenge-response MACs (authentication with pre-shared quantum keys).
 * mac = HMAC-SM3(slot key, "qwave-ksc-auth" | challenge id | nonce |
 * device) (32 bytes), or 128-EIA3 with the slot key's first 16 bytes,
 * COUNT = first 4 nonce bytes, BEARER = 0, DIRECTION = 0 over the same
 * message (4 bytes). *maclen gets the length. 0, QW_EINVAL, QW_ECRYPTO. */
QW_WUR int qw_ksc_auth_mac(const char *method, const uint8_t slot[static QW_KSC_SLOT_BYTES],
			   const char *challenge_id, const uint8_t *nonce, size_t nonce_len,
			   const char *device, uint8_t mac[static 32], size_t *maclen);

/* ---- the air interface: the access point of over-the-air refill ----
 * docs/ksc.md "Air interface", docs/plkg.md section 12. The KSC serves a
 * terminal's refill itself: qwksc accepts a connection on its [air]
 * listener (standing for the radio link's signalling) and calls
 * qw_ksc_air_serve. The terminal speaks first, in the clear:
 *   hello     "QWRI1\n" || device ID (QW_KSC_ID_MAX bytes, NUL-padded) ||
 *             be64(air_seed: the simulated channel realisation both ends
 *             probe, standing for being at the same place at the same time)
 *             -> one byte: 0 the device is registered and active, 1 refused
 *             (then the connection is closed; audited as air.refuse);
 *   preamble  QW_KSC_AIR_PREAMBLE_BYTES: "QWRC1\n" || carried pool id (16
 *             bytes, rest zero) -> one byte, 0 when the KSC holds the same
 *             pool for the device (frames run on it), else 1 and a QWRF1
 *             preamble follows; or "QWRF1\n" || 6 x (batch ID, 36 bytes ||
 *             be64(slot)): the pre-filled slots that authenticate the frames,
 *             -> one byte: 0 accepted (and spent), 1 refused (closed).
 * Then the refill protocol of refill.h with carry (qw_refill_ap_carry). */
#define QW_KSC_AIR_SLOTS (QW_REFILL_PSK_BYTES / QW_KSC_SLOT_BYTES)
#define QW_KSC_AIR_NAME_BYTES (36 + 8)
#define QW_KSC_AIR_HELLO_BYTES (6 + QW_KSC_ID_MAX + 8)
#define QW_KSC_AIR_PREAMBLE_BYTES (6 + QW_KSC_AIR_SLOTS * QW_KSC_AIR_NAME_BYTES)

/* Encode the terminal's hello. QW_EINVAL when device is not a valid ID
 * (1..64 of [A-Za-z0-9._-]). */
QW_WUR int qw_ksc_air_hello(const char *device, uint64_t air_seed,
			    uint8_t out[static QW_KSC_AIR_HELLO_BYTES]);

struct qw_ksc_air_result {
	char device[QW_KSC_ID_MAX + 1]; /* the device the terminal named ("" if none) */
	char key_id[37];                /* the KSC key delivered ("" when none) */
	int carried;                    /* frames ran on the pool the last refill carried */
	uint64_t slot_bits;             /* pre-filled bits spent (0 or QW_REFILL_PSK_BYTES * 8) */
	struct qw_refill_result refill;
};

/* Serve one terminal's refill on io (a connected socket; the caller closes
 * it). p: refill parameters (NULL: qw_refill_params_default; air_seed comes
 * from the hello). max_bits caps a delivery (0: no cap). peer names the
 * connection in audit records (e.g. "127.0.0.1:40312"; NULL: "-").
 *
 * The named device must be registered and active. Named slots must belong to
 * one of the device's live fills and lie at or past that fill's slot cursor
 * (keys.next_slot, the one challenges and session keys advance too); the
 * cursor moves past them, committed with an air.slots audit record, before
 * any frame goes under them, so a slot is never accepted twice. A carried
 * pool is looked up and deleted (air_carry table, sealed under the device's
 * KEK) before it is used, whatever the outcome. The delivered keys are one
 * KSC key owned by the device (purpose "refill"), generated from the QKD pool
 * when a KME is configured, else from the configured entropy source
 * (key.generate), and moved to distributed when the terminal acknowledged
 * them (key.distribute by the device), else destroyed (key.destroy). The
 * next carried pool is stored on acknowledgement.
 *
 * res (may be NULL) is filled in every case. Returns 0 (keys acknowledged),
 * QW_EPERM (unknown or inactive device, unknown or spent slots: nothing
 * delivered, audited), QW_EPROTO (malformed hello or preamble), QW_ECLOSED,
 * QW_EIO, QW_EDB, QW_ENOMEM, or qw_refill_ap_carry's and the key source's
 * errors (QW_EAGAIN: the QKD pool is short). */
QW_WUR int qw_ksc_air_serve(struct qw_ksc *k, const struct qw_frame_io *io, const char *peer,
			    const struct qw_refill_params *p, uint64_t max_bits,
			    struct qw_ksc_air_result *res);

/* ---- a small HTTPS client for the CLI (libcurl, mutual TLS) ---- */
struct qw_ksc_client;
/* base_url "https://host:port"; NULL and *err on failure (QW_EINVAL). */
struct qw_ksc_client *qw_ksc_client_new(const char *base_url, const char *cert,
					const char *key, const char *ca, int *err);
void qw_ksc_client_free(struct qw_ksc_client *c);
/* Send method path (below /api/v1/ksc) with body (NULL: none). 0 and
 * *status, *resp (malloc()ed NUL-terminated; free with
 * qw_free_secret(*resp, *resp_len + 1): it may hold keys); or QW_EIO /
 * QW_EAUTH / QW_ETIMEOUT with msg (may be NULL, 256 bytes) describing the
 * transport failure. */
QW_WUR int qw_ksc_client_call(struct qw_ksc_client *c, const char *method, const char *path,
			      const char *body, int *status, char **resp, size_t *resp_len,
			      char *msg);

#endif
