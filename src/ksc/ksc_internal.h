/* Shared internals of the Key Service Center (src/ksc/). */
#ifndef QWAVE_KSC_INTERNAL_H
#define QWAVE_KSC_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

#include "qwave/ksc.h"

struct qw_rng;
struct qw_entropy;
struct ksc_qkd;

/* QKD key material kept ready by the prefetch thread (128 Kbit). */
#define QW_KSC_QKD_POOL_BYTES (16u * 1024u)

/* Prepared statements kept for reuse, keyed by the address of their SQL
 * text (every statement is a string literal): preparing was 40% of a
 * session key's cost. */
#define KSC_STMT_CACHE 96

struct ksc_stmt {
	const char *sql;
	sqlite3_stmt *st;
	int in_use;
};

struct qw_ksc {
	sqlite3 *db;
	struct ksc_stmt stmts[KSC_STMT_CACHE];
	size_t nstmts;
	uint8_t data_key[32];  /* seals rows not bound to a device */
	uint8_t kek_root[32];  /* HKDF PRK for per-device KEKs */
	uint8_t audit_key[32]; /* HMAC-SM3 over the audit head */
	struct qw_entropy *ent;
	struct qw_rng *rng;
	char source[96];       /* label of the random key source */
	struct ksc_qkd *qkd;   /* NULL: no QKD source */
	char kme_label[96];
	char *pki_dir;
	unsigned challenge_ttl_s;
	/* Serialises the API (qw_ksc_handle) and the air interface's steps
	 * (ksc_air.c), which run in another thread of qwksc; recursive, so
	 * that code holding it may call qw_ksc_handle. */
	pthread_mutex_t mu;
	int mu_init;
};

/* The caller of one request, resolved from the principals table. */
enum ksc_kind { KP_NONE = 0, KP_ADMIN, KP_DEVICE, KP_APP, KP_USER };
enum ksc_role { KR_NONE = 0, KR_AUDITOR = 1, KR_OPERATOR = 2, KR_SUPER = 3 };

struct ksc_caller {
	const char *id;
	enum ksc_kind kind;
	enum ksc_role role;
};

struct ksc_req {
	struct qw_ksc *k;
	struct ksc_caller who;
	const char *method;
	char *seg[8];   /* path segments (copied) */
	size_t nseg;
	const char *query;
	json_t *body;   /* parsed JSON object or NULL (no body) */
	struct qw_ksc_resp *resp;
};

/* ---- ksc_db.c ---- */
int ksc_db_create_schema(sqlite3 *db);
int ksc_exec(struct qw_ksc *k, const char *sql);
int ksc_begin(struct qw_ksc *k);
int ksc_commit(struct qw_ksc *k);
void ksc_rollback(struct qw_ksc *k);
/* A statement for sql (a string literal: its address is the cache key),
 * from the cache when one is free, or QW_EDB. Give it back with
 * ksc_finish (never sqlite3_finalize). */
int ksc_prep(struct qw_ksc *k, sqlite3_stmt **st, const char *sql);
/* Reset and unbind a cached statement, finalize any other; NULL ok. */
void ksc_finish(struct qw_ksc *k, sqlite3_stmt *st);
/* Finalize every cached statement (before closing the connection). */
void ksc_stmt_cache_clear(struct qw_ksc *k);
int64_t ksc_now(void);
/* Derived keys from the master key. */
int ksc_derive_keys(struct qw_ksc *k, const uint8_t mk[static 32]);
int ksc_device_kek(struct qw_ksc *k, const char *device, uint8_t kek[static 32]);
/* Seal/open material under key with aad = "qwave-ksc|<what>|<id>". *out
 * malloc()ed (open: free with qw_free_secret). */
int ksc_seal(const uint8_t key[static 32], const char *what, const char *id,
	     const uint8_t *pt, size_t ptlen, uint8_t **out, size_t *outlen);
int ksc_open_sealed(const uint8_t key[static 32], const char *what, const char *id,
		    const uint8_t *ct, size_t ctlen, uint8_t **out, size_t *outlen);
/* Append an audit record inside the caller's transaction. detail may be
 * NULL; it is stored as compact JSON and must never hold key material. */
int ksc_audit(struct qw_ksc *k, const char *actor, const char *action, const char *object,
	      json_t *detail);
/* Random key bytes from the configured source; *label the source. */
int ksc_random(struct qw_ksc *k, uint8_t *out, size_t n);
/* Key bytes from the requested source ("qrng"/NULL or "qkd"). *label gets
 * the label stored with the key. */
int ksc_key_material(struct qw_ksc *k, const char *source, uint8_t *out, size_t n,
		     const char **label);

/* ---- ksc_keys.c ---- */
/* Insert a key: material from source (or `given`, size_bits / 8 bytes),
 * sealed under the device's KEK when device is set, else the data key.
 * id gets the new UUID, *label the source label. Inside a transaction. */
int ksc_key_create(struct qw_ksc *k, const char *device, const char *owner, const char *purpose,
		   const char *alg, const char *source, uint64_t size_bits, int64_t expires,
		   const char *state, uint64_t slots, const uint8_t *given, char id[static 37],
		   const char **label);

/* ---- ksc_qkd.c ---- */
int ksc_qkd_start(struct qw_ksc *k, const struct qw_ksc_opts *o);
void ksc_qkd_stop(struct qw_ksc *k);
/* n bytes of QKD key from the pool: 0, QW_EAGAIN (not enough yet),
 * QW_ERANGE (more than the pool holds), QW_EUNSUPPORTED (no QKD source). */
int ksc_qkd_take(struct qw_ksc *k, uint8_t *out, size_t n);
void ksc_qkd_status(struct qw_ksc *k, size_t *have, size_t *cap, int *last_err,
		     uint64_t *dropped);

/* ---- ksc_air.c ---- */
/* The access point's carried frame pools, one row per device (created on
 * open for databases made before it existed). */
#define KSC_AIR_SCHEMA "CREATE TABLE IF NOT EXISTS air_carry(device TEXT PRIMARY KEY," \
		       " sealed BLOB NOT NULL, updated INTEGER NOT NULL);"

/* ---- ksc_api.c ---- */
void ksc_reply(struct ksc_req *r, int status, json_t *obj);        /* steals obj */
void ksc_reply_secret(struct ksc_req *r, int status, json_t *obj); /* steals obj */
void ksc_err(struct ksc_req *r, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Map a QW_E* code to a status + message. */
void ksc_fail(struct ksc_req *r, int err, const char *what);
/* Field helpers: NULL and a 400 already sent when absent/wrong. */
const char *ksc_str(struct ksc_req *r, const char *name, int required);
int ksc_uint(struct ksc_req *r, const char *name, uint64_t min, uint64_t max,
	     uint64_t *out, int required);
/* Decode a base64 field; *out malloc()ed (free with qw_free_secret). */
int ksc_b64(struct ksc_req *r, const char *name, uint8_t **out, size_t *len, int required);
/* Refuse (403) unless the caller is an admin with at least role. */
int ksc_need_role(struct ksc_req *r, enum ksc_role role);
int ksc_id_valid(const char *s);
/* Add "key": base64(bytes) to obj. */
int ksc_put_b64(json_t *obj, const char *name, const uint8_t *p, size_t n);

/* Loading a device row. */
struct ksc_device {
	char id[QW_KSC_ID_MAX + 1];
	char kind[24];
	char owner[QW_KSC_ID_MAX + 1];
	char status[16];
	uint64_t quota_bits, filled_bits, balance_bits;
	int destroy_pending;
};
int ksc_device_load(struct qw_ksc *k, const char *id, struct ksc_device *d);
/* Take the next unused 256-bit slot of the device's filled keys: *batch
 * (37 bytes), *slot, and the slot key. QW_EAGAIN when the device's fill
 * is used up. Inside the caller's transaction. */
int ksc_take_slot(struct qw_ksc *k, const char *device, char batch[static 37], uint64_t *slot,
		  uint8_t key[static QW_KSC_SLOT_BYTES]);
/* The key of a given slot (challenge verification). */
int ksc_slot_key(struct qw_ksc *k, const char *device, const char *batch, uint64_t slot,
		 uint8_t key[static QW_KSC_SLOT_BYTES]);

/* 0 when the caller may involve device in a session, group or challenge
 * (administrators and the device itself always; an application when
 * granted), else a 403 has been sent. */
int ksc_need_grant(struct ksc_req *r, const char *device);

/* ---- ksc_certs.c ---- */
/* Check a presented certificate (PEM) for device and its signature over
 * msg; *why names the failed check. 0 or QW_EAUTH/QW_EPARSE/QW_EIO/QW_EDB. */
int ksc_cert_auth(struct qw_ksc *k, const char *device, const char *pem, const uint8_t *sig,
		  size_t siglen, const uint8_t *msg, size_t msglen, const char **why);

/* ---- handlers (ksc_admin.c, ksc_keys.c, ksc_devices.c, ksc_services.c) ---- */
void ksc_h_admins(struct ksc_req *r);
void ksc_h_audit(struct ksc_req *r);
void ksc_h_keys(struct ksc_req *r);
void ksc_h_devices(struct ksc_req *r);
void ksc_h_auth(struct ksc_req *r);
void ksc_h_sessions(struct ksc_req *r);
void ksc_h_groups(struct ksc_req *r);
void ksc_h_crypto(struct ksc_req *r);
void ksc_h_certs(struct ksc_req *r);

#endif
