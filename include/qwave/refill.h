/* Over-the-air key refill (SYSTEM.md section 7, last bullet; issue 7 item
 * 8): a terminal and an access point derive a fresh PLKG key from the
 * reciprocal radio channel, and the access point sends the Key Service
 * Center's quantum keys one-time-pad encrypted under it, with a
 * Wegman-Carter MAC. docs/plkg.md section 12.
 *
 * One refill over one byte stream (struct qw_frame_io: a TCP socket or a
 * socketpair standing for the air interface's signalling):
 *   1. every message is a frame of frame.h, authenticated from a pre-shared
 *      pool (k_AB || k_BA || pads) that the terminal takes from its
 *      pre-filled KSC keys (unused 256-bit slots of its offline fill) and
 *      the KSC side holds too, or (qw_refill_*_carry) that the previous
 *      refill carried forward from its PLKG key; pads are never reused (the
 *      frame sequence number is the pad index) and a refill needs
 *      QW_REFILL_PSK_BYTES;
 *   2. HELLO (terminal -> AP, stream 0): the key bits the terminal asks for
 *      (be64), [1: carry the next pool], [flags: 1 = a still terminal: the
 *      AP uses the random-weights remedy (plkg.h) and, once its first window
 *      is full, sends that window's sample covariance (MSG_COV, n_sc x n_sc
 *      complex as big-endian binary64 pairs) before either end quantizes;
 *      the terminal asks with p->plkg.remedy = QW_PLKG_REMEDY_RANDOM_WEIGHTS];
 *   3. probing: each end simulates ITS OWN channel estimates of the same
 *      reciprocal channel realisation (air_seed: the simulation stands for
 *      the physics; the AP reads only its estimates of Bob's pilots, the
 *      terminal only its estimates of Alice's - the other estimate of each
 *      probe round is wiped unread), quantizes them with the per-end
 *      builder of plkg.h and cuts one block with the same id at both ends;
 *   4. distillation: the stages of qw_plkg_stages() run over the framed
 *      connection (stream = block id, a DROP frame ends the peer's stage
 *      with QW_EABORT): reconciliation, verification, the length stage,
 *      privacy amplification -> the PLKG key K, equal at both ends;
 *   5. DELIVER (AP -> terminal, stream 0): n key bits from the key source,
 *      n = min(requested, |K| - 256) rounded down to 256-bit slots:
 *        ct  = keys XOR K[256, 256 + n)           (one-time pad, 1:1)
 *        tag = WC-MAC(hash key K[0, 128), pad K[128, 256),
 *                     "qwave-refill" || be64(n) || ct)
 *      body = be64(n) || ct || tag;
 *   6. ACK (terminal -> AP): 0 when the tag verified and the keys were
 *      taken, 1 when not (the AP then counts nothing delivered).
 * K is wiped after the refill, its unused bits included: every refill
 * derives a new one from new probes. */
#ifndef QWAVE_REFILL_H
#define QWAVE_REFILL_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"
#include "qwave/frame.h"
#include "qwave/plkg.h"

/* Frame authentication material per refill: both hash keys and
 * QW_REFILL_PSK_UNITS pads per direction. A refill sends 4 frames each way
 * with the BCH reconciler (measured, qw_refill_result.frames_sent: the
 * refill's own HELLO/ACK and DELIVER, and the chain's messages) plus at
 * most one DROP, each frame one 128-bit pad of its direction: at most
 * 2 x 5 x 128 = 1280 pad bits (qw_refill_result.pad_bits_used) + 256 bits
 * of hash keys = 1536 bits. With the remedy the AP sends one frame more
 * (the covariance): 5, as a DROP only ever replaces its DELIVER. That is
 * 1536 bits (6 slots of 256 bits of a pre-filled fill, or
 * the pool a previous refill carried forward: QW_REFILL_CARRY_BITS). */
#define QW_REFILL_PSK_UNITS 5
#define QW_REFILL_PSK_BYTES (2 * QW_AUTH_HASHKEY_BYTES + QW_REFILL_PSK_UNITS * QW_AUTH_UNIT_BYTES)
/* PLKG key bits spent on the MAC (hash key + pad) before the pad of keys. */
#define QW_REFILL_MAC_BITS 256u
/* Raw bits probed per requested bit: the BCH chain keeps about 0.22 key
 * bits per raw bit at the default channel (docs/plkg.md section 12). */
#define QW_REFILL_RAW_PER_BIT 5u
/* Keys are delivered in whole slots of this many bits. */
#define QW_REFILL_UNIT_BITS 256u
/* PLKG key bits reserved, with carry, as the next refill's frame pool. */
#define QW_REFILL_CARRY_BITS (QW_REFILL_PSK_BYTES * 8u)
#define QW_REFILL_CARRY_ID_BYTES 16

/* The next refill's frame authentication pool, carried forward from this
 * refill's PLKG key (docs/plkg.md section 12): K[256 + n, 256 + n + 1536)
 * after the delivered keys' pad. id: 16 random bytes the terminal picks and
 * sends in its (authenticated) ACK; public, it lets both ends check before
 * a refill that they hold the same pool. valid: 0 when nothing was carried
 * (a failed refill, or no ACK received by the AP). */
struct qw_refill_carry {
	uint8_t pool[QW_REFILL_PSK_BYTES];
	uint8_t id[QW_REFILL_CARRY_ID_BYTES];
	int valid;
};

struct qw_refill_params {
	/* The radio channel and the chain (BCH). A refill's block is at least
	 * plkg.block_bits raw bits and at least QW_REFILL_RAW_PER_BIT raw bits
	 * per requested key bit (+ the MAC's), so that the PLKG key can carry
	 * the request; both ends size it from the HELLO. */
	struct qw_plkg_params plkg;
	/* The simulated channel realisation both ends probe (stands for the
	 * air); a new one per refill, as the real channel never repeats. */
	uint64_t air_seed;
	/* Give up (QW_EAGAIN) after this many probe rounds (raised to
	 * block_bits / 4 for a large request). */
	uint64_t max_probes;
	int recv_timeout_ms;         /* pad wait of the frame connection */
	/* Optional (NULL: never): polled between probe rounds; nonzero ends
	 * the refill with QW_EABORT (reason "stopped"), e.g. a daemon
	 * shutting down while a terminal's refill is being probed. */
	int (*should_stop)(void *arg);
	void *stop_arg;
};

/* Defaults: plkg defaults with the BCH reconciler (one message and one
 * verdict: few frames, a terminal's CPU), air_seed 1, max_probes 4000
 * (40 s of probing at 100 probes/s), pad wait 5000 ms. */
void qw_refill_params_default(struct qw_refill_params *p);

/* Where the access point gets the keys it delivers: fill out[0, n) with key
 * material; 0 or QW_E* (the refill then fails with it). In qwaved/KSC this
 * is the QKD key pool; the CLI and the tests use a stand-in (cmd_terminal.c,
 * test_refill.c). */
struct qw_refill_source {
	void *ctx;
	int (*get)(void *ctx, uint8_t *out, size_t n);
};

/* A source backed by the Key Service Center's key life cycle (ksc.h): each
 * call has the KSC generate a key of n bytes (POST /keys by operator_id,
 * owner ap_id, from `source`: NULL for the KSC's default, "qkd" for its
 * QKD pool) and hands it to the access point once (POST
 * /keys/{id}/distribute by ap_id, the AP's application identity). Both
 * steps are audited by the KSC; the key is never logged. ctx: this struct.
 * Returns 0, QW_EPERM (the KSC refused: status in last_status), QW_EPARSE,
 * QW_ERANGE (n not a whole number of bytes within 1 Mbit), QW_ENOMEM. */
struct qw_ksc;
struct qw_refill_ksc_source {
	struct qw_ksc *ksc;
	const char *operator_id;
	const char *ap_id;
	const char *source;
	int last_status;
};
QW_WUR int qw_refill_ksc_get(void *ctx, uint8_t *out, size_t n);

struct qw_refill_result {
	uint64_t probes;          /* probe rounds until the block was cut */
	uint64_t raw_bits;        /* the block's quantized bits */
	uint64_t disclosed_bits;  /* reconciliation + verification tag */
	uint64_t plkg_bits;       /* the PLKG key's length */
	uint64_t frames_sent, frames_received;
	uint64_t delivered_bits;  /* quantum key bits delivered (0 on failure) */
	uint64_t pad_bits_used;   /* frame pad bits consumed, both directions */
	uint64_t carried_bits;    /* PLKG key bits carried as the next pool */
	int remedy;               /* a still terminal: the random-weights remedy ran */
	/* SM3 of the PLKG key (equal at both ends; lets tests see that two
	 * refills used different keys without handling the key). */
	uint8_t plkg_fingerprint[32];
	char reason[96];          /* why a refill failed, when it did */
};

/* Access-point end (Alice). psk: QW_REFILL_PSK_BYTES of unused pre-shared
 * material (copied; the caller wipes and retires its own). max_bits caps a
 * request (0: no cap). res (may be NULL) is filled in every case. Returns
 * 0 when the terminal acknowledged the keys; QW_EAGAIN (no PLKG block
 * within max_probes, or a key too short to carry one slot), QW_EABORT
 * (the block was dropped: reason), QW_EAUTH (a frame or the terminal's MAC
 * check failed), QW_EPROTO, QW_ECLOSED, QW_EIO, QW_ENOMEM, or the source's
 * error. */
QW_WUR int qw_refill_ap(const struct qw_refill_params *p, const struct qw_frame_io *io,
			const uint8_t *psk, size_t psklen, uint64_t max_bits,
			const struct qw_refill_source *src, struct qw_refill_result *res);

/* Terminal end (Bob): asks for want_bits (a multiple of
 * QW_REFILL_UNIT_BITS, > 0). On 0, *keys (malloc()ed, free with
 * qw_free_secret(*keys, *nbytes)) holds the delivered keys, *nbytes their
 * length (bytes, possibly fewer than asked). Errors as qw_refill_ap;
 * QW_EAUTH when the delivery's MAC fails (nothing returned). */
QW_WUR int qw_refill_terminal(const struct qw_refill_params *p, const struct qw_frame_io *io,
			      const uint8_t *psk, size_t psklen, uint64_t want_bits,
			      uint8_t **keys, size_t *nbytes, struct qw_refill_result *res);

/* The same with carry: the HELLO asks for the next refill's pool (the block
 * is sized for QW_REFILL_CARRY_BITS more, the delivery is
 * min(request, |K| - 256 - QW_REFILL_CARRY_BITS) in slots). *next (may be
 * NULL at the AP: reserved and wiped) is wiped first; it becomes valid on
 * the terminal when the delivery verified and its ACK (0 || id) was sent,
 * on the AP when that ACK arrived. The ACK is the commit point: when it is
 * lost the terminal holds a pool the AP does not (res->carried_bits tells),
 * the ids differ and the next refill falls back to pre-filled slots. */
QW_WUR int qw_refill_ap_carry(const struct qw_refill_params *p, const struct qw_frame_io *io,
			      const uint8_t *psk, size_t psklen, uint64_t max_bits,
			      const struct qw_refill_source *src, struct qw_refill_carry *next,
			      struct qw_refill_result *res);
QW_WUR int qw_refill_terminal_carry(const struct qw_refill_params *p,
				    const struct qw_frame_io *io, const uint8_t *psk,
				    size_t psklen, uint64_t want_bits,
				    struct qw_refill_carry *next, uint8_t **keys, size_t *nbytes,
				    struct qw_refill_result *res);

/* The delivery message of step 5 on its own. seal: out gets 8 + n/8 + 16
 * bytes (cap checked, QW_ERANGE), from keys (n/8 bytes, n a multiple of 8)
 * and the PLKG key bytes k (at least (QW_REFILL_MAC_BITS + n) / 8;
 * QW_ERANGE otherwise). open: verifies and decrypts msg into keys (cap
 * bytes); *nbits the delivered bits; QW_EAUTH on a bad tag (keys wiped),
 * QW_EPARSE on a malformed message, QW_ERANGE. */
QW_WUR int qw_refill_seal(const uint8_t *k, size_t klen, const uint8_t *keys, uint64_t nbits,
			  uint8_t *out, size_t cap, size_t *outlen);
QW_WUR int qw_refill_open(const uint8_t *k, size_t klen, const uint8_t *msg, size_t len,
			  uint8_t *keys, size_t cap, uint64_t *nbits);

/* The terminal's trigger: nonzero when balance_bits < threshold_bits. */
int qw_refill_needed(uint64_t balance_bits, uint64_t threshold_bits);

/* ---- the terminal's local key balance ----------------------------------
 * A file (mode 0600) holding the unused keys, AES-256-GCM sealed
 * (aead.h) under a 32-byte key the caller derives from its device key,
 * with "qwave-refill-balance" as associated data. */
struct qw_refill_balance {
	uint8_t *keys;      /* unused key bytes, oldest first (owned) */
	size_t len;
	uint64_t refills;   /* refills taken so far */
};

/* Load path; a missing file gives an empty balance. 0, QW_EAUTH (wrong
 * key or altered file), QW_EPARSE, QW_EIO, QW_ENOMEM. */
QW_WUR int qw_refill_balance_load(const char *path, const uint8_t key[static 32],
				  struct qw_refill_balance *b);
/* Write atomically (temporary file + rename), mode 0600. 0, QW_EIO,
 * QW_ENOMEM, QW_ECRYPTO. */
QW_WUR int qw_refill_balance_save(const char *path, const uint8_t key[static 32],
				  const struct qw_refill_balance *b);
/* Append n key bytes (counts one refill). 0 or QW_ENOMEM. */
QW_WUR int qw_refill_balance_add(struct qw_refill_balance *b, const uint8_t *keys, size_t n);
/* Move the oldest n bytes to out and forget them. 0 or QW_EAGAIN (fewer
 * than n held: nothing taken). */
QW_WUR int qw_refill_balance_take(struct qw_refill_balance *b, uint8_t *out, size_t n);
/* Wipe and free the keys; the struct is zeroed. */
void qw_refill_balance_clear(struct qw_refill_balance *b);

/* A carried pool in its own file (mode 0600, atomic, AES-256-GCM under key,
 * associated data "qwave-refill-carry"). save: c must be valid; 0, QW_EIO,
 * QW_ENOMEM, QW_ECRYPTO. load: a missing file gives c->valid = 0; 0,
 * QW_EAUTH, QW_EPARSE, QW_EIO, QW_ENOMEM. discard: remove the file (missing
 * is fine); 0 or QW_EIO. */
QW_WUR int qw_refill_carry_save(const char *path, const uint8_t key[static 32],
				const struct qw_refill_carry *c);
QW_WUR int qw_refill_carry_load(const char *path, const uint8_t key[static 32],
				struct qw_refill_carry *c);
QW_WUR int qw_refill_carry_discard(const char *path);

#endif
