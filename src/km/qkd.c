/* QKD link endpoints inside qwaved: one thread per link runs distillation
 * sessions over the link's classical channel and feeds the pool.
 *
 * Roles: the node whose ID sorts first is Alice (and the KM link's leader,
 * km.h). Alice's node runs the optics simulation. The simulated optical
 * fibre is the one place where the two processes exchange "quantum"
 * data: Alice's thread sends Bob's DETECTION RECORD of each block (which
 * pulses clicked, Bob's basis and bit - what Bob's detectors would have
 * recorded) to Bob before the classical protocol starts. Bob never sees
 * Alice's bits, bases or intensity classes except through the
 * authenticated classical protocol (sifting), exactly as over a fibre.
 *
 * Authentication keys. Each end keeps the link's unused authentication
 * keys in <data_dir>/qkd-<peer>.psk (0600, replaced atomically, directory
 * synced): up to QKD_KEYS keys of qw_km_psk_bytes() bytes, each with a
 * public id (epoch of the session that made it << 8 | index; the bootstrap
 * psk_file gives ids 0 and 1). A session runs on ONE key, the smallest id
 * both ends hold; a key is deleted at an end before that end sends a
 * single frame under it, so no Wegman-Carter pad ever serves twice, and an
 * end only ever chooses keys the other end still lists: ends whose files
 * differ (a crash, a cut connection, a failed session) pick a key both hold
 * instead of halting. A session that fails burns its key; the link halts
 * only when no key is common (an attack or a crash loop longer than
 * QKD_KEYS sessions): re-key it.
 *
 * A session (on one channel connection; docs/qkd-link.md):
 *   Alice -> Bob  HEADER  magic, epoch, blocks, pulses/block, her key ids
 *   Bob -> Alice  REPLY   0 (or why he refuses), his key ids
 *                 Bob takes blocks and pulses/block from his own
 *                 configuration: a header that differs is refused before
 *                 anything changes on his disk.
 *   Alice -> Bob  FIBRE   Bob's detection record of each block [simulated]
 *   Alice -> Bob  HELLO   HEADER || REPLY, authenticated under the chosen
 *   Bob -> Alice  HELLO   key: the key confirmation. Neither end trusts the
 *                 unauthenticated HEADER/REPLY before it: Bob deletes the
 *                 key and changes his file only after Alice's HELLO
 *                 verifies; each end settles its file (drops keys the
 *                 peer no longer lists, adopts pending ones it lists) only
 *                 from the peer's authenticated list.
 *   both          the classical protocol of include/qwave/link.h over the
 *                 same authenticated connection, up to both FINs
 *   both          commit: carve the next keys from the session's secret
 *                 blocks (in block-id order: the same at both ends), write
 *                 them as PENDING, send an authenticated COMMIT; on the
 *                 peer's COMMIT mark them live and pool the rest (block id
 *                 epoch * 2^20 + k).
 * A connection cut anywhere in the commit leaves each end with the pending
 * keys or without them; the next session's settle step resolves it from the
 * authenticated lists: pending keys the peer also holds are adopted (the
 * peer finished the session too), the others dropped. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "km_internal.h"
#include "qkd.h"
#include "qwave/buf.h"
#include "qwave/log.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

#define QKD_MAGIC 0x51574b31u /* "QWK1" */
#define QKD_VERSION 3
#define QKD_EPOCH_SHIFT 20
#define QKD_EPOCH_MAX (UINT64_C(1) << (63 - QKD_EPOCH_SHIFT))
/* Keys a link keeps: the next session's and reserves for failed ones. */
#define QKD_KEYS 8
#define QKD_KEYS_CAP (2 * QKD_KEYS)
#define QKD_PSK_MAGIC "QWPSK3\n"
#define QKD_PSK_MAGIC_V2 "QWPSK2\n"
#define QKD_PSK_MAGIC_LEN 7
/* stream-0 frame types of the key confirmation and the commit */
#define QKD_T_HELLO 0x51570001u
#define QKD_T_COMMIT 0x51570002u
/* header (32 + 8 + ids), reply (8 + 8 + ids) */
#define QKD_TR_MAX (32 + 3 * 8 + 2 * 8 * QKD_KEYS_CAP)

enum { KEY_LIVE = 1, KEY_PENDING = 2 };

struct qkd_block {
	uint64_t id;
	uint64_t nbits;
	uint8_t *bits;
	size_t nbytes;
};

struct km_qkd {
	struct qw_km *km;
	const struct qw_km_conf *c;
	const struct qw_km_link_conf *lc;
	int alice;
	struct event *want_ev;
	pthread_t th;
	int started;
	struct km_qkd_hooks hooks;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int fd;        /* channel handed over by the loop, -1 none */
	int cur_fd;    /* channel in use (for stop) */
	int want;
	/* read by the thread without mu (loop conditions), written under mu by
	 * km_qkd_stop: atomic so those reads are not data races */
	atomic_int stop;
	atomic_int halted;
	/* eavesdropper drill: intercepted fraction in millionths, -1 = the
	 * configured eve_fraction (set on the loop, read by this thread) */
	atomic_int eve_ppm;
	uint64_t last_epoch;
	size_t psk_bytes;
	/* session results (thread only) */
	struct qkd_block *blocks;
	size_t nblocks, capblocks;
	int sink_err;  /* a delivered block could not be kept: fail the session */
	/* the pool blocks of a session whose commit was cut: pooled if the
	 * next session adopts its keys, wiped otherwise */
	struct qkd_block *held;
	size_t nheld;
	uint64_t held_epoch;
	pthread_mutex_t sink_mu;
	struct qw_km_link_report rep;
};

size_t qw_km_psk_bytes(enum qw_link_ec ec)
{
	/* Pads for the blocks in flight (2 workers): LDPC sends ~12 frames
	 * per block, Cascade ~90 (docs/qkd-link.md); every delivered block
	 * gives back at least what its frames spent. */
	size_t units = ec == QW_LINK_EC_LDPC ? 64 : 256;
	return 2 * QW_AUTH_HASHKEY_BYTES + units * QW_AUTH_UNIT_BYTES;
}

static size_t psk_bytes_for(const struct qw_km_link_conf *lc)
{
	return qw_km_psk_bytes(lc->ec);
}

/* ---- byte stream helpers ---- */

static int write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return QW_EIO;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, void *p, size_t n)
{
	uint8_t *b = p;

	while (n) {
		ssize_t r = read(fd, b, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			return QW_ECLOSED;
		if (r < 0)
			return QW_EIO;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

/* ---- the link's authentication keys ---- */

struct psk_key {
	uint64_t id;
	int status;    /* KEY_LIVE, or KEY_PENDING: made by session pend_epoch,
			* not yet known to be committed at the peer */
	uint8_t *mat;  /* psk_bytes */
};

struct psk_state {
	uint64_t max_epoch;   /* every new session's epoch exceeds it */
	uint64_t pend_epoch;  /* 0: no pending keys */
	size_t n;             /* keys, ascending ids */
	struct psk_key key[QKD_KEYS_CAP];
};

static void psk_path(const struct km_qkd *q, char *out, size_t n)
{
	snprintf(out, n, "%s/qkd-%s.psk", q->c->data_dir, q->lc->peer);
}

static void psk_state_clear(struct km_qkd *q, struct psk_state *st)
{
	for (size_t i = 0; i < st->n; i++)
		qw_secure_free(st->key[i].mat, q->psk_bytes);
	memset(st, 0, sizeof(*st));
}

static size_t psk_index(const struct psk_state *st, uint64_t id)
{
	for (size_t i = 0; i < st->n; i++)
		if (st->key[i].id == id)
			return i;
	return st->n;
}

/* Insert key id (material copied) in id order. */
static int psk_add(struct km_qkd *q, struct psk_state *st, uint64_t id, int status,
		   const uint8_t *mat)
{
	size_t i = 0;
	uint8_t *m;

	if (st->n == QKD_KEYS_CAP)
		return QW_ERANGE;
	while (i < st->n && st->key[i].id < id)
		i++;
	if (i < st->n && st->key[i].id == id)
		return QW_EEXIST;
	m = qw_secure_alloc(q->psk_bytes);
	if (!m)
		return QW_ENOMEM;
	memcpy(m, mat, q->psk_bytes);
	memmove(&st->key[i + 1], &st->key[i], (st->n - i) * sizeof(st->key[0]));
	st->key[i].id = id;
	st->key[i].status = status;
	st->key[i].mat = m;
	st->n++;
	return 0;
}

static void psk_remove_at(struct km_qkd *q, struct psk_state *st, size_t i)
{
	qw_secure_free(st->key[i].mat, q->psk_bytes);
	memmove(&st->key[i], &st->key[i + 1], (st->n - i - 1) * sizeof(st->key[0]));
	st->n--;
}

/* The bootstrap psk_file: one key (id 0), or two (ids 0 and 1). */
static int psk_bootstrap(struct km_qkd *q, struct psk_state *st, uint8_t *tmp)
{
	int fd = open(q->lc->psk_file, O_RDONLY | O_CLOEXEC), ret;

	if (fd < 0)
		return QW_ENOTFOUND;
	ret = read_all(fd, tmp, q->psk_bytes) ? QW_EPARSE : psk_add(q, st, 0, KEY_LIVE, tmp);
	if (!ret && !read_all(fd, tmp, q->psk_bytes))
		ret = psk_add(q, st, 1, KEY_LIVE, tmp);
	close(fd);
	return ret;
}

/* The previous format (one generation counter, K and a reserve R): K and
 * R at generation g become ids g << 8 and g << 8 | 1, the same at two ends
 * in step; ends out of step then fail to authenticate and need re-keying,
 * as they did before. */
static int psk_load_v2(struct km_qkd *q, struct psk_state *st, int fd, uint8_t *tmp)
{
	uint8_t h[10];
	uint64_t gen;
	int ret;

	if (read_all(fd, h, sizeof(h)))
		return QW_EPARSE;
	gen = get64(h);
	if (gen >= QKD_EPOCH_MAX || read_all(fd, tmp, q->psk_bytes))
		return QW_EPARSE;
	if (h[8] == 1 && (ret = psk_add(q, st, gen << 8, KEY_LIVE, tmp)))
		return ret;
	if (read_all(fd, tmp, q->psk_bytes))
		return QW_EPARSE;
	if (h[9] == 1 && (ret = psk_add(q, st, gen << 8 | 1, KEY_LIVE, tmp)))
		return ret;
	return 0;
}

/* File: magic, u64 max_epoch, u64 pend_epoch, u64 n, then n times
 * (u64 id, u8 status, psk_bytes of key). */
static int psk_state_load(struct km_qkd *q, struct psk_state *st)
{
	char path[512];
	uint8_t h[QKD_PSK_MAGIC_LEN + 24], e[9];
	uint8_t *tmp = qw_secure_alloc(q->psk_bytes);
	int fd = -1, ret = QW_ENOMEM;
	uint64_t n;

	memset(st, 0, sizeof(*st));
	if (!tmp)
		return ret;
	psk_path(q, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = psk_bootstrap(q, st, tmp);
		goto out;
	}
	ret = QW_EPARSE;
	if (read_all(fd, h, QKD_PSK_MAGIC_LEN))
		goto out;
	if (!memcmp(h, QKD_PSK_MAGIC_V2, QKD_PSK_MAGIC_LEN)) {
		ret = psk_load_v2(q, st, fd, tmp);
		goto out;
	}
	if (memcmp(h, QKD_PSK_MAGIC, QKD_PSK_MAGIC_LEN) ||
	    read_all(fd, h + QKD_PSK_MAGIC_LEN, 24))
		goto out;
	st->max_epoch = get64(h + QKD_PSK_MAGIC_LEN);
	st->pend_epoch = get64(h + QKD_PSK_MAGIC_LEN + 8);
	n = get64(h + QKD_PSK_MAGIC_LEN + 16);
	if (n > QKD_KEYS_CAP)
		goto out;
	for (uint64_t k = 0; k < n; k++) {
		int r;

		if (read_all(fd, e, sizeof(e)) || read_all(fd, tmp, q->psk_bytes) ||
		    (e[8] != KEY_LIVE && e[8] != KEY_PENDING))
			goto out;
		if ((r = psk_add(q, st, get64(e), e[8], tmp))) {
			ret = r == QW_ENOMEM ? r : QW_EPARSE;
			goto out;
		}
	}
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	qw_secure_free(tmp, q->psk_bytes);
	if (ret)
		psk_state_clear(q, st);
	return ret;
}

static int psk_state_save(struct km_qkd *q, const struct psk_state *st)
{
	char path[512], tmp[520];
	uint8_t h[QKD_PSK_MAGIC_LEN + 24], e[9];
	int fd, ret;

	psk_path(q, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	memcpy(h, QKD_PSK_MAGIC, QKD_PSK_MAGIC_LEN);
	put64(h + QKD_PSK_MAGIC_LEN, st->max_epoch);
	put64(h + QKD_PSK_MAGIC_LEN + 8, st->pend_epoch);
	put64(h + QKD_PSK_MAGIC_LEN + 16, st->n);
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return QW_EIO;
	ret = write_all(fd, h, sizeof(h));
	for (size_t i = 0; i < st->n && !ret; i++) {
		put64(e, st->key[i].id);
		e[8] = (uint8_t)st->key[i].status;
		ret = write_all(fd, e, sizeof(e));
		if (!ret)
			ret = write_all(fd, st->key[i].mat, q->psk_bytes);
	}
	if (!ret && fsync(fd))
		ret = QW_EIO;
	close(fd);
	if (!ret && rename(tmp, path))
		ret = QW_EIO;
	if (ret) {
		unlink(tmp);
		return ret;
	}
	/* the rename lives in the directory: without syncing it a power loss
	 * can bring back the old file, whose key is already used - a second
	 * session on it would reuse Wegman-Carter pads */
	fd = open(q->c->data_dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return QW_EIO;
	if (fsync(fd))
		ret = QW_EIO;
	close(fd);
	return ret;
}

static int id_listed(const uint64_t *ids, size_t n, uint64_t id)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] == id)
			return 1;
	return 0;
}

/* The peer's AUTHENTICATED key list (ids): keep only the keys it holds
 * too (the others can never be chosen again) and adopt the pending keys
 * it holds (it finished that session: it lists keys only the session's
 * output gave). 1 when pending keys were adopted. */
static int psk_settle(struct km_qkd *q, struct psk_state *st, const uint64_t *ids, size_t n)
{
	int adopted = 0;

	for (size_t i = 0; i < st->n;) {
		if (!id_listed(ids, n, st->key[i].id)) {
			psk_remove_at(q, st, i);
			continue;
		}
		if (st->key[i].status == KEY_PENDING) {
			st->key[i].status = KEY_LIVE;
			adopted = 1;
		}
		i++;
	}
	st->pend_epoch = 0;
	return adopted;
}

/* ---- sink ---- */

static void on_deliver(void *ctx, uint64_t id, const struct qw_bitvec *key)
{
	struct km_qkd *q = ctx;
	struct qkd_block *b;
	size_t nbytes = (size_t)((key->nbits + 7) / 8);

	pthread_mutex_lock(&q->sink_mu);
	if (q->nblocks == q->capblocks) {
		size_t cap = q->capblocks ? 2 * q->capblocks : 16;
		struct qkd_block *nb = realloc(q->blocks, cap * sizeof(*nb));
		if (!nb)
			goto fail;
		q->blocks = nb;
		q->capblocks = cap;
	}
	b = &q->blocks[q->nblocks];
	b->bits = malloc(nbytes ? nbytes : 1);
	if (!b->bits)
		goto fail;
	qw_bitvec_to_bytes(key, b->bits);
	b->id = id;
	b->nbits = key->nbits;
	b->nbytes = nbytes;
	q->nblocks++;
	pthread_mutex_unlock(&q->sink_mu);
	return;
fail:
	/* both ends must carve the next keys from the same blocks: a block
	 * missing here fails the session (never committed at this end) */
	q->sink_err = QW_ENOMEM;
	pthread_mutex_unlock(&q->sink_mu);
}

static void on_dropped(void *ctx, uint64_t id, const char *reason)
{
	struct km_qkd *q = ctx;

	qw_log(QW_LOG_DEBUG, "QKD link %s: block %" PRIu64 " dropped: %s", q->lc->peer, id, reason);
}

static void on_alarm(void *ctx, uint64_t id, double qber, double thr)
{
	struct km_qkd *q = ctx;

	qw_log(QW_LOG_WARN, "ALARM QKD link %s: block %" PRIu64 " QBER %.2f%% above threshold %.2f%%",
	       q->lc->peer, id, 100 * qber, 100 * thr);
	pthread_mutex_lock(&q->sink_mu);
	q->rep.alarms++;
	pthread_mutex_unlock(&q->sink_mu);
}

static void blocks_free(struct qkd_block *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		qw_free_secret(b[i].bits, b[i].nbytes);
}

static void blocks_clear(struct km_qkd *q)
{
	blocks_free(q->blocks, q->nblocks);
	q->nblocks = 0;
}

static void held_clear(struct km_qkd *q)
{
	blocks_free(q->held, q->nheld);
	free(q->held);
	q->held = NULL;
	q->nheld = 0;
	q->held_epoch = 0;
}

/* Keep the session's pool blocks until its commit is settled. */
static void blocks_hold(struct km_qkd *q, uint64_t epoch)
{
	held_clear(q);
	q->held = q->blocks;
	q->nheld = q->nblocks;
	q->held_epoch = epoch;
	q->blocks = NULL;
	q->nblocks = q->capblocks = 0;
}

static int cmp_block(const void *a, const void *b)
{
	const struct qkd_block *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/* Carve want bytes from the front of the session's blocks, in block-id
 * order (both ends hold the same blocks). 0 or QW_EAGAIN (too little). */
static int carve(struct km_qkd *q, uint8_t *out, size_t want)
{
	size_t have = 0;

	for (size_t i = 0; i < q->nblocks && have < want; i++) {
		struct qkd_block *b = &q->blocks[i];
		size_t full = (size_t)(b->nbits / 8), take = want - have;
		if (take > full)
			take = full;
		memcpy(out + have, b->bits, take);
		have += take;
		/* the rest of the block starts on a byte boundary */
		memmove(b->bits, b->bits + take, b->nbytes - take);
		qw_wipe(b->bits + b->nbytes - take, take);
		b->nbits -= 8 * (uint64_t)take;
		b->nbytes -= take;
	}
	return have == want ? 0 : QW_EAGAIN;
}

static int submit(struct km_qkd *q, uint64_t id, const uint8_t *bits, uint64_t nbits)
{
	if (q->hooks.submit)
		return q->hooks.submit(q->hooks.ctx, id, bits, nbits);
	return qw_km_submit_block(q->km, q->lc->peer, id, bits, nbits);
}

/* Pool blocks b[0..n) of session epoch; *pooled += their bits. */
static int pool_blocks(struct km_qkd *q, uint64_t epoch, const struct qkd_block *b, size_t n,
		       uint64_t *pooled)
{
	for (size_t i = 0; i < n; i++) {
		int ret;

		if (!b[i].nbits)
			continue;
		ret = submit(q, epoch << QKD_EPOCH_SHIFT | b[i].id, b[i].bits, b[i].nbits);
		if (ret)
			return ret;
		*pooled += b[i].nbits;
	}
	return 0;
}

/* A test's cut at step: shut the connection as a network failure would. */
static int fault(struct km_qkd *q, int fd, enum km_qkd_step step)
{
	if (!q->hooks.fault || !q->hooks.fault(q->hooks.ctx, q->alice, step))
		return 0;
	shutdown(fd, SHUT_RDWR);
	return QW_ECLOSED;
}

/* ---- the simulated fibre: Bob's detection records ---- */

static int fibre_send(int fd, struct qw_link_records *bob, uint64_t nblocks)
{
	struct qw_buf b;
	int ret = 0;

	qw_buf_init(&b, 1);
	for (uint64_t id = 1; id <= nblocks && !ret; id++) {
		struct qw_detections *d = bob->fetch(bob->ctx, id);
		uint64_t n = d ? d->n : 0;

		qw_buf_reset(&b);
		ret = QW_ENOMEM;
		if (qw_buf_append_u64be(&b, id) || qw_buf_append_u64be(&b, d ? d->first_pulse : 0) ||
		    qw_buf_append_u64be(&b, d ? d->end_pulse : 0) || qw_buf_append_u64be(&b, n))
			goto next;
		for (uint64_t i = 0; i < n; i++)
			if (qw_buf_append_u64be(&b, d->index[i]) || qw_buf_append_u8(&b, d->bit[i]) ||
			    qw_buf_append_u8(&b, d->basis[i]))
				goto next;
		ret = write_all(fd, b.data, b.len);
next:
		qw_detections_free(d);
	}
	qw_buf_free(&b);
	return ret;
}

struct bob_records {
	struct qw_detections **rec;
	uint64_t n;
	pthread_mutex_t mu;
};

static struct qw_detections *bob_fetch(void *ctx, uint64_t id)
{
	struct bob_records *r = ctx;
	struct qw_detections *d = NULL;

	pthread_mutex_lock(&r->mu);
	if (id >= 1 && id <= r->n) {
		d = r->rec[id - 1];
		r->rec[id - 1] = NULL;
	}
	pthread_mutex_unlock(&r->mu);
	return d;
}

static int fibre_recv(int fd, struct bob_records *r, uint64_t nblocks, uint64_t ppb)
{
	uint8_t h[32], *e = NULL;
	size_t cap = 0;
	int ret = 0;

	for (uint64_t k = 0; k < nblocks && !ret; k++) {
		struct qw_detections *d;
		uint64_t id, first, end, n;

		if ((ret = read_all(fd, h, sizeof(h))))
			break;
		id = get64(h);
		first = get64(h + 8);
		end = get64(h + 16);
		n = get64(h + 24);
		ret = QW_EPROTO;
		if (id != k + 1 || end < first || end - first > ppb || n > end - first ||
		    n > SIZE_MAX / 10)
			break;
		/* the record in one read: a read per detection cost a system
		 * call per click */
		if (n * 10 > cap) {
			uint8_t *ne = realloc(e, (size_t)n * 10);
			ret = QW_ENOMEM;
			if (!ne)
				break;
			e = ne;
			cap = (size_t)n * 10;
		}
		if (n && (ret = read_all(fd, e, (size_t)n * 10)))
			break;
		ret = QW_ENOMEM;
		d = qw_detections_new(QW_ROLE_BOB);
		if (!d)
			break;
		d->first_pulse = first;
		d->end_pulse = first;
		ret = 0;
		for (uint64_t i = 0; i < n && !ret; i++) {
			const uint8_t *x = e + 10 * i;
			uint64_t idx = get64(x);
			if (x[8] > 1 || x[9] > 1 || idx < first || idx >= end ||
			    qw_detections_push(d, idx, x[8], x[9], 0))
				ret = QW_EPROTO;
		}
		if (ret) {
			qw_detections_free(d);
			break;
		}
		/* an empty-ranged record takes its start from the first push */
		d->first_pulse = first;
		d->end_pulse = end;
		r->rec[k] = d;
	}
	free(e);
	return ret;
}

/* ---- one session ---- */

static void link_params(struct km_qkd *q, uint64_t nblocks, struct qw_link_params *lp)
{
	qw_link_params_default(lp);
	lp->optics = q->lc->optics;
	lp->nblocks = nblocks;
	lp->qber_threshold = q->lc->qber_threshold;
	lp->bounds = q->lc->bounds;
	lp->ec = q->lc->ec;
	lp->sink_ctx = q;
	lp->deliver = on_deliver;
	lp->dropped = on_dropped;
	lp->alarm = on_alarm;
}

static void sleep_ms(struct km_qkd *q, int64_t ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&q->mu);
	while (!q->stop && pthread_cond_timedwait(&q->cv, &q->mu, &ts) == 0)
		;
	pthread_mutex_unlock(&q->mu);
}

/* The session's size from this end's own configuration: Bob refuses a
 * header that says otherwise. */
static void session_size(struct km_qkd *q, uint64_t *nblocks, uint64_t *ppb)
{
	struct qw_sift_params sp;

	qw_sift_params_default(&sp);
	*nblocks = q->lc->blocks_per_session;
	*ppb = qw_link_pulses_for_bits(&q->lc->optics, &sp, q->lc->block_bits);
}

/* Append a key list (u64 n, n ids) to the transcript. */
static size_t put_ids(uint8_t *p, const struct psk_state *st)
{
	put64(p, st->n);
	for (size_t i = 0; i < st->n; i++)
		put64(p + 8 + 8 * i, st->key[i].id);
	return 8 + 8 * st->n;
}

/* Read the peer's key list into the transcript and ids (strictly
 * ascending, at most QKD_KEYS_CAP). */
static int read_ids(int fd, uint8_t *tr, size_t *trlen, uint64_t *ids, size_t *n)
{
	uint64_t k;
	int ret;

	if ((ret = read_all(fd, tr + *trlen, 8)))
		return ret;
	k = get64(tr + *trlen);
	*trlen += 8;
	if (k > QKD_KEYS_CAP)
		return QW_EPROTO;
	if ((ret = read_all(fd, tr + *trlen, 8 * k)))
		return ret;
	for (uint64_t i = 0; i < k; i++) {
		ids[i] = get64(tr + *trlen + 8 * i);
		if (i && ids[i] <= ids[i - 1])
			return QW_EPROTO;
	}
	*trlen += 8 * k;
	*n = (size_t)k;
	return 0;
}

/* The peer's key confirmation: an authenticated HELLO carrying the
 * transcript exactly as we saw it. A frame that verifies but carries
 * another transcript means the unauthenticated header or reply was
 * tampered with: QW_EAUTH, as for a bad tag. */
static int hello_recv(struct qw_frame_conn *c, const uint8_t *tr, size_t trlen)
{
	struct qw_frame f;
	int ret = qw_frame_recv(c, &f);

	if (ret)
		return ret;
	ret = f.kind == QW_FRAME_DATA && f.stream == 0 && f.type == QKD_T_HELLO && f.len == trlen &&
			      !memcmp(f.body, tr, trlen)
		      ? 0
		      : QW_EAUTH;
	qw_frame_release(&f);
	return ret;
}

/* Settle the key file from the peer's authenticated list and pool the held
 * blocks of a session whose keys were adopted (wipe them otherwise). */
static int settle(struct km_qkd *q, struct psk_state *st, const uint64_t *ids, size_t n,
		  uint64_t *pooled)
{
	uint64_t pend = st->pend_epoch;
	int adopted = psk_settle(q, st, ids, n), ret;

	if ((ret = psk_state_save(q, st)))
		return ret;
	if (adopted)
		qw_log(QW_LOG_INFO, "QKD link %s: the peer finished session %" PRIu64 " too: its keys adopted",
		       q->lc->peer, pend);
	else if (pend)
		qw_log(QW_LOG_INFO, "QKD link %s: session %" PRIu64 " did not finish at the peer: its keys dropped",
		       q->lc->peer, pend);
	if (adopted && pend && q->held_epoch == pend)
		ret = pool_blocks(q, pend, q->held, q->nheld, pooled);
	held_clear(q);
	return ret;
}

/* After both FINs: the two-phase commit (the file comment). */
static int commit(struct km_qkd *q, struct qw_frame_conn *conn, int fd, uint64_t epoch,
		  struct psk_state *st, int *pending_written, uint64_t *pooled)
{
	uint8_t *tmp = qw_secure_alloc(q->psk_bytes), e[8];
	size_t keep = q->hooks.keys >= 2 && q->hooks.keys <= QKD_KEYS ? q->hooks.keys : QKD_KEYS;
	size_t need = st->n < keep ? keep - st->n : 1, made = 0;
	struct qw_frame f;
	int ret = QW_ENOMEM;

	if (!tmp)
		return ret;
	qsort(q->blocks, q->nblocks, sizeof(*q->blocks), cmp_block);
	/* the same blocks and the same key count at both ends (the settled
	 * files are equal): the same keys under the same ids */
	for (; made < need; made++) {
		if (carve(q, tmp, q->psk_bytes))
			break;
		if ((ret = psk_add(q, st, epoch << 8 | made, KEY_PENDING, tmp)))
			goto out;
	}
	if (!made) {
		ret = QW_EAGAIN; /* too little key for the next session */
		goto out;
	}
	st->pend_epoch = epoch;
	if ((ret = psk_state_save(q, st)))
		goto out;
	*pending_written = 1;
	if ((ret = fault(q, fd, KM_QKD_STEP_PENDING)))
		goto out;
	put64(e, epoch);
	if ((ret = qw_frame_send(conn, QW_FRAME_DATA, QKD_T_COMMIT, 0, e, sizeof(e))) ||
	    (ret = fault(q, fd, KM_QKD_STEP_COMMIT_SENT)) || (ret = qw_frame_recv(conn, &f)))
		goto out;
	ret = f.kind == QW_FRAME_DATA && f.stream == 0 && f.type == QKD_T_COMMIT &&
			      f.len == sizeof(e) && get64(f.body) == epoch
		      ? 0
		      : QW_EPROTO;
	qw_frame_release(&f);
	if (ret || (ret = fault(q, fd, KM_QKD_STEP_COMMIT_RECEIVED)))
		goto out;
	/* the peer holds the pending keys too: commit */
	for (size_t i = 0; i < st->n; i++)
		st->key[i].status = KEY_LIVE;
	st->pend_epoch = 0;
	if ((ret = psk_state_save(q, st)))
		goto out;
	*pending_written = 0;
	ret = pool_blocks(q, epoch, q->blocks, q->nblocks, pooled);
out:
	qw_secure_free(tmp, q->psk_bytes);
	return ret;
}

static int qber_aborted(const struct qw_link_stats *st)
{
	return st->aborted && strstr(st->abort_reason, "QBER ") != NULL;
}

static int session(struct km_qkd *q, int fd)
{
	struct qw_link_params lp;
	struct qw_link_records rec = { 0 };
	struct qw_link_sim *sim = NULL;
	struct qw_link *link = NULL;
	struct qw_frame_conn *conn;
	struct bob_records br = { 0 };
	struct qw_frame_io io;
	struct qw_link_stats st;
	uint8_t *psk = qw_secure_alloc(q->psk_bytes);
	struct psk_state pst;
	uint8_t tr[QKD_TR_MAX];
	uint64_t peer_ids[QKD_KEYS_CAP], epoch = 0, nblocks, ppb, pooled = 0, seed, status, chosen = 0;
	size_t trlen, hdrlen, npeer = 0, common = 0, ci;
	int64_t t0 = km_now_ms(), source_ms;
	int ret = QW_ENOMEM, have_stats = 0, pending_written = 0;

	memset(&pst, 0, sizeof(pst));
	memset(&st, 0, sizeof(st));
	pthread_mutex_init(&br.mu, NULL);
	if (!psk)
		goto out;
	if ((ret = psk_state_load(q, &pst))) {
		qw_log(QW_LOG_ERROR, "QKD link %s: no authentication key (%s: %s)", q->lc->peer,
		       q->lc->psk_file, qw_strerror(ret));
		goto out;
	}
	session_size(q, &nblocks, &ppb);
	qw_frame_io_fd(&io, fd);
	if (q->alice) {
		epoch = (uint64_t)time(NULL);
		if (epoch <= q->last_epoch)
			epoch = q->last_epoch + 1;
		if (epoch <= pst.max_epoch)
			epoch = pst.max_epoch + 1;
		put64(tr, ((uint64_t)QKD_MAGIC << 32) | QKD_VERSION);
		put64(tr + 8, epoch);
		put64(tr + 16, nblocks);
		put64(tr + 24, ppb);
		trlen = hdrlen = 32 + put_ids(tr + 32, &pst);
		if ((ret = write_all(fd, tr, trlen)) || (ret = read_all(fd, tr + trlen, 8)))
			goto out;
		status = get64(tr + trlen);
		trlen += 8;
		if (status) {
			qw_log(QW_LOG_ERROR, "QKD link %s: the peer refused the session: %s", q->lc->peer,
			       status == 1 ? "its link configuration differs (blocks_per_session, block_bits or optics)"
					   : "stale epoch");
			ret = QW_EPROTO;
			goto out;
		}
		if ((ret = read_ids(fd, tr, &trlen, peer_ids, &npeer)))
			goto out;
	} else {
		if ((ret = read_all(fd, tr, 32)))
			goto out;
		trlen = 32;
		if (get64(tr) != (((uint64_t)QKD_MAGIC << 32) | QKD_VERSION)) {
			ret = QW_EPROTO;
			goto out;
		}
		if ((ret = read_ids(fd, tr, &trlen, peer_ids, &npeer)))
			goto out;
		hdrlen = trlen;
		epoch = get64(tr + 8);
		status = get64(tr + 16) != nblocks || get64(tr + 24) != ppb ? 1
			 : epoch <= pst.max_epoch || epoch >= QKD_EPOCH_MAX ? 2
			 : 0;
		put64(tr + trlen, status);
		trlen += 8;
		if (status) {
			(void)write_all(fd, tr + hdrlen, 8);
			qw_log(QW_LOG_ERROR, "QKD link %s: session header refused: %s", q->lc->peer,
			       status == 1 ? "blocks or pulses per block differ from this node's configuration of the link"
					   : "epoch not after the last session's");
			ret = QW_EPROTO;
			goto out;
		}
		trlen += put_ids(tr + trlen, &pst);
		if ((ret = write_all(fd, tr + hdrlen, trlen - hdrlen)))
			goto out;
	}
	/* the key: the smallest id both lists hold (both ends compute it) */
	for (size_t i = 0; i < pst.n; i++) {
		if (!id_listed(peer_ids, npeer, pst.key[i].id))
			continue;
		if (!common++)
			chosen = pst.key[i].id;
	}
	if (!common) {
		qw_log(QW_LOG_ERROR, "ALARM QKD link %s: no unused authentication key common to both ends: re-key the link",
		       q->lc->peer);
		q->halted = 1;
		ret = QW_ESTATE;
		goto out;
	}
	ci = psk_index(&pst, chosen);
	memcpy(psk, pst.key[ci].mat, q->psk_bytes);
	if (q->alice) {
		/* gone from disk before the first authenticated frame leaves */
		psk_remove_at(q, &pst, ci);
		pst.max_epoch = epoch;
		if ((ret = psk_state_save(q, &pst)))
			goto out;
		if ((ret = qw_random_bytes((uint8_t *)&seed, sizeof(seed))))
			goto out;
		{
			struct qw_optics_config oc = q->lc->optics;
			int ppm = atomic_load(&q->eve_ppm);

			if (ppm >= 0)
				oc.eve_fraction = (double)ppm / 1e6;
			if (ppm > 0)
				qw_log(QW_LOG_WARN, "QKD link %s: eavesdropper drill: intercept-resend on %.1f%% of the pulses of session %" PRIu64,
				       q->lc->peer, 100 * oc.eve_fraction, epoch);
			sim = qw_link_sim_new(&oc, nblocks * ppb, ppb, seed, &ret);
		}
		if (!sim)
			goto out;
		qw_link_sim_records(sim, QW_ROLE_BOB, &rec);
		if ((ret = fibre_send(fd, &rec, nblocks)))
			goto out;
		qw_link_sim_records(sim, QW_ROLE_ALICE, &rec);
	} else {
		ret = QW_ENOMEM;
		br.n = nblocks;
		br.rec = qw_calloc(nblocks, sizeof(*br.rec));
		if (!br.rec)
			goto out;
		if ((ret = fibre_recv(fd, &br, nblocks, ppb)))
			goto out;
		rec.ctx = &br;
		rec.fetch = bob_fetch;
	}
	link_params(q, nblocks, &lp);
	link = qw_link_new(&lp, q->alice ? QW_ROLE_ALICE : QW_ROLE_BOB, &io, psk, q->psk_bytes, &rec,
			   &ret);
	if (!link)
		goto out;
	conn = qw_link_conn(link);
	if (q->alice) {
		if ((ret = qw_frame_send(conn, QW_FRAME_DATA, QKD_T_HELLO, 0, tr, trlen)) ||
		    (ret = hello_recv(conn, tr, trlen)) ||
		    (ret = settle(q, &pst, peer_ids, npeer, &pooled)))
			goto out;
	} else {
		if ((ret = hello_recv(conn, tr, trlen)))
			goto out;
		/* Alice authenticated the header: only now does anything
		 * change here, and the key is gone before we send under it */
		psk_remove_at(q, &pst, ci);
		pst.max_epoch = epoch;
		if ((ret = settle(q, &pst, peer_ids, npeer, &pooled)) ||
		    (ret = qw_frame_send(conn, QW_FRAME_DATA, QKD_T_HELLO, 0, tr, trlen)))
			goto out;
	}
	q->last_epoch = epoch;
	q->sink_err = 0;
	ret = qw_link_run(link);
	/* The commit frames are the session's last: the peer may send the
	 * next session's raw header right after its own, which a buffered
	 * read would take into this session's connection and lose with it
	 * (both threads then wait for each other forever). */
	qw_frame_conn_exact_reads(conn);
	qw_link_get_stats(link, &st);
	have_stats = 1;
	if (!ret && q->sink_err)
		ret = q->sink_err;
	if (!ret)
		ret = fault(q, fd, KM_QKD_STEP_RUN_DONE);
	if (ret && ret != QW_EAUTH && qber_aborted(&st)) {
		/* dropped blocks give the pool no pads back: a long attacked
		 * session ends in an exhausted pool, a QBER abort all the same */
		qw_log(QW_LOG_WARN, "ALARM QKD link %s: session %" PRIu64 " aborted: %s: no key from it (%s)",
		       q->lc->peer, epoch, st.abort_reason, qw_strerror(ret));
		ret = QW_EABORT;
		goto out;
	}
	if (ret) {
		qw_log(QW_LOG_WARN, "QKD link %s: session %" PRIu64 " failed: %s", q->lc->peer, epoch,
		       qw_strerror(ret));
		goto out;
	}
	ret = commit(q, conn, fd, epoch, &pst, &pending_written, &pooled);
	if (ret == QW_EAGAIN) {
		if (qber_aborted(&st)) {
			ret = QW_EABORT;
			qw_log(QW_LOG_WARN, "ALARM QKD link %s: session %" PRIu64 " aborted: %s: no key from it (%" PRIu64 "/%" PRIu64 " blocks dropped)",
			       q->lc->peer, epoch, st.abort_reason, st.blocks_dropped, st.blocks);
		} else {
			qw_log(QW_LOG_ERROR, "ALARM QKD link %s: session %" PRIu64 " gave %" PRIu64 " secret bits, less than the %zu bits of one authentication key: no key from it",
			       q->lc->peer, epoch, st.secret_bits, 8 * q->psk_bytes);
		}
		goto out;
	}
	if (ret) {
		qw_log(QW_LOG_WARN, "QKD link %s: session %" PRIu64 " commit failed: %s", q->lc->peer,
		       epoch, qw_strerror(ret));
		goto out;
	}
	source_ms = (int64_t)(1000.0 * (double)(nblocks * ppb) / q->lc->optics.pulse_rate_hz *
			      q->lc->pace);
	sleep_ms(q, source_ms - (km_now_ms() - t0));
	qw_log(QW_LOG_INFO, "QKD link %s: session %" PRIu64 ": QBER %.2f%%, %" PRIu64 "/%" PRIu64 " blocks, %" PRIu64 " bits to the pool",
	       q->lc->peer, epoch, 100 * st.qber, st.blocks_delivered, st.blocks, pooled);
out:
	pthread_mutex_lock(&q->sink_mu);
	if (have_stats) {
		if (st.sample_bits)
			q->rep.qber = st.qber;
		q->rep.blocks_delivered += st.blocks_delivered;
		q->rep.blocks_dropped += st.blocks_dropped;
		if (qber_aborted(&st))
			q->rep.qber_alarm = 1;
		else if (!ret && st.qber <= q->lc->qber_threshold)
			q->rep.qber_alarm = 0;
	}
	if (!ret) {
		q->rep.sessions++;
		q->rep.key_rate_bps = (double)pooled * 1000.0 / (double)(km_now_ms() - t0 + 1);
	}
	q->rep.secret_bits += pooled;
	if (ret == QW_EAUTH)
		q->rep.auth_failures++;
	pthread_mutex_unlock(&q->sink_mu);
	if (ret == QW_EAUTH)
		qw_log(QW_LOG_ERROR, "ALARM QKD link %s: authentication failure on the classical channel (tampering, or keys out of step)",
		       q->lc->peer);
	if (pending_written)
		blocks_hold(q, epoch);
	blocks_clear(q);
	qw_link_free(link);
	qw_link_sim_free(sim);
	if (br.rec) {
		for (uint64_t i = 0; i < br.n; i++)
			qw_detections_free(br.rec[i]);
		free(br.rec);
	}
	pthread_mutex_destroy(&br.mu);
	if (psk)
		qw_secure_free(psk, q->psk_bytes);
	psk_state_clear(q, &pst);
	return ret;
}

/* ---- thread ---- */

static void report(struct km_qkd *q, int up)
{
	struct qw_km_link_report r;

	pthread_mutex_lock(&q->sink_mu);
	q->rep.up = up;
	r = q->rep;
	pthread_mutex_unlock(&q->sink_mu);
	if (q->km)
		qw_km_link_report(q->km, q->lc->peer, &r);
}

static int get_channel(struct km_qkd *q)
{
	struct timespec ts;
	int fd = -1;

	pthread_mutex_lock(&q->mu);
	if (q->alice && !q->want && q->fd < 0) {
		q->want = 1;
		event_active(q->want_ev, EV_READ, 0);
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 2;
	while (!q->stop && q->fd < 0)
		if (pthread_cond_timedwait(&q->cv, &q->mu, &ts))
			break;
	if (!q->stop && q->fd >= 0) {
		fd = q->fd;
		q->fd = -1;
		q->cur_fd = fd;
	}
	pthread_mutex_unlock(&q->mu);
	return fd;
}

static void *qkd_main(void *arg)
{
	struct km_qkd *q = arg;

	while (!q->stop) {
		int fd, ret = 0;

		if (q->halted) {
			sleep_ms(q, 1000);
			continue;
		}
		fd = get_channel(q);
		if (fd < 0)
			continue;
		qw_log(QW_LOG_INFO, "QKD link %s: classical channel up (%s)", q->lc->peer,
		       q->alice ? "Alice" : "Bob");
		report(q, 1);
		while (!q->stop && !(ret = session(q, fd))) {
			report(q, 1);
		}
		pthread_mutex_lock(&q->mu);
		q->cur_fd = -1;
		pthread_mutex_unlock(&q->mu);
		close(fd);
		report(q, 0);
		if (!q->stop) {
			qw_log(QW_LOG_WARN, "QKD link %s: channel closed: %s", q->lc->peer, qw_strerror(ret));
			sleep_ms(q, 1000);
		}
	}
	return NULL;
}

static struct km_qkd *qkd_new(const struct qw_km_conf *c, const struct qw_km_link_conf *lc,
			      int alice)
{
	struct km_qkd *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	q->c = c;
	q->lc = lc;
	q->alice = alice;
	q->fd = q->cur_fd = -1;
	q->psk_bytes = psk_bytes_for(lc);
	atomic_init(&q->eve_ppm, -1);
	pthread_mutex_init(&q->mu, NULL);
	pthread_mutex_init(&q->sink_mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	return q;
}

struct km_qkd *km_qkd_start(struct qw_km *km, const struct qw_km_conf *c,
			    const struct qw_km_link_conf *lc, struct event *want_ev, int *err)
{
	struct km_qkd *q = qkd_new(c, lc, qw_km_is_leader(c->id, lc->peer));
	struct km_peer *p;

	*err = QW_ENOMEM;
	if (!q)
		return NULL;
	q->km = km;
	q->want_ev = want_ev;
	if (pthread_create(&q->th, NULL, qkd_main, q)) {
		km_qkd_stop(q);
		return NULL;
	}
	q->started = 1;
	/* the drill's way in (qw_km_drill_eve, on the loop) */
	p = km_peer_find(km, lc->peer);
	if (p)
		p->qkd = q;
	*err = 0;
	return q;
}

struct km_qkd *km_qkd_new_detached(const struct qw_km_conf *c, const struct qw_km_link_conf *lc,
				   int alice, const struct km_qkd_hooks *h)
{
	struct km_qkd *q = qkd_new(c, lc, alice);

	if (q && h)
		q->hooks = *h;
	return q;
}

int km_qkd_session(struct km_qkd *q, int fd)
{
	return session(q, fd);
}

void km_qkd_get_report(struct km_qkd *q, struct qw_km_link_report *r)
{
	pthread_mutex_lock(&q->sink_mu);
	*r = q->rep;
	pthread_mutex_unlock(&q->sink_mu);
}

int qw_km_drill_eve(struct qw_km *km, const char *peer, double f)
{
	struct km_peer *p;

	QW_REQUIRE(km != NULL && peer != NULL);
	if (!(f >= 0.0 && f <= 1.0))
		return QW_EINVAL;
	p = km_peer_find(km, peer);
	if (!p || !p->qkd)
		return QW_ENOTFOUND;
	if (!p->qkd->alice)
		return QW_ESTATE;
	atomic_store(&p->qkd->eve_ppm, (int)(f * 1e6 + 0.5));
	return 0;
}

int km_qkd_wants(struct km_qkd *q)
{
	int w;

	pthread_mutex_lock(&q->mu);
	w = q->want;
	q->want = 0;
	pthread_mutex_unlock(&q->mu);
	return w;
}

void km_qkd_give_channel(struct km_qkd *q, int fd)
{
	pthread_mutex_lock(&q->mu);
	if (q->fd >= 0 || q->stop) {
		pthread_mutex_unlock(&q->mu);
		close(fd);
		return;
	}
	q->fd = fd;
	q->want = 0;
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

void km_qkd_stop(struct km_qkd *q)
{
	struct km_peer *p;

	if (!q)
		return;
	p = q->km ? km_peer_find(q->km, q->lc->peer) : NULL;
	if (p && p->qkd == q)
		p->qkd = NULL;
	pthread_mutex_lock(&q->mu);
	q->stop = 1;
	if (q->cur_fd >= 0)
		shutdown(q->cur_fd, SHUT_RDWR);
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
	if (q->started)
		pthread_join(q->th, NULL);
	if (q->fd >= 0)
		close(q->fd);
	blocks_clear(q);
	free(q->blocks);
	held_clear(q);
	pthread_mutex_destroy(&q->mu);
	pthread_mutex_destroy(&q->sink_mu);
	pthread_cond_destroy(&q->cv);
	free(q);
}
