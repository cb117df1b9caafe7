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
 * A session (on one channel connection):
 *   Alice -> Bob  SESSION  magic, epoch, psk generation, blocks, pulses/block
 *   Bob -> Alice  ACCEPT   0, or 1 when his authentication key generation
 *                          differs (the link then waits for re-keying)
 *   Alice -> Bob  FIBRE    Bob's detection record of each block   [simulated]
 *   both          the classical protocol of include/qwave/link.h over the
 *                 same byte stream, every frame authenticated
 *                 (Wegman-Carter) from the session's pre-shared key
 * Both ends end a session holding the same secret blocks. The first
 * QKD_PSK_BYTES of them (in block-id order) become the next session's
 * authentication key (kept in <data_dir>/qkd-<peer>.psk, 0600, written
 * atomically), the rest goes to the pool with block id epoch * 2^20 + k.
 * The very first session uses the link's bootstrap psk_file. */
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
#define QKD_EPOCH_SHIFT 20
#define QKD_PSK_MAGIC "QWPSK2\n"

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
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int fd;        /* channel handed over by the loop, -1 none */
	int cur_fd;    /* channel in use (for stop) */
	int want;
	/* read by the thread without mu (loop conditions), written under mu by
	 * km_qkd_stop: atomic so those reads are not data races */
	atomic_int stop;
	atomic_int halted;
	uint64_t last_epoch;
	size_t psk_bytes;
	/* session results (thread only) */
	struct qkd_block *blocks;
	size_t nblocks, capblocks;
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

/* ---- authentication key of the next session ---- */

static void psk_path(const struct km_qkd *q, char *out, size_t n)
{
	snprintf(out, n, "%s/qkd-%s.psk", q->c->data_dir, q->lc->peer);
}

/* The link's authentication keys (<data_dir>/qkd-<peer>.psk, 0600):
 *   gen        bumped by every change below, so both ends can compare
 *   K, fresh   the next session's key, unused when fresh
 *   R, present a reserve key for the session after a failed one
 * A key is marked used on disk BEFORE the session that uses it sends
 * anything, so a crash or a stop in the middle of a session never makes a
 * pad serve twice: the next session takes R. A successful session carves
 * a fresh K (and R, if it was used) from its own output. */
struct psk_state {
	uint64_t gen;
	int k_fresh, r_present;
	uint8_t *k, *r; /* psk_bytes each */
};

static int psk_state_load(struct km_qkd *q, struct psk_state *st)
{
	char path[512];
	uint8_t hdr[sizeof(QKD_PSK_MAGIC) - 1 + 10];
	int fd, ret;

	psk_path(q, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ret = QW_EPARSE;
		if (!read_all(fd, hdr, sizeof(hdr)) &&
		    !memcmp(hdr, QKD_PSK_MAGIC, sizeof(QKD_PSK_MAGIC) - 1) &&
		    !read_all(fd, st->k, q->psk_bytes) && !read_all(fd, st->r, q->psk_bytes)) {
			st->gen = get64(hdr + sizeof(QKD_PSK_MAGIC) - 1);
			st->k_fresh = hdr[sizeof(QKD_PSK_MAGIC) - 1 + 8] == 1;
			st->r_present = hdr[sizeof(QKD_PSK_MAGIC) - 1 + 9] == 1;
			ret = 0;
		}
		close(fd);
		return ret;
	}
	/* first start: the bootstrap file holds K, and R when it is twice as
	 * long (qwave net up writes both) */
	fd = open(q->lc->psk_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return QW_ENOTFOUND;
	ret = read_all(fd, st->k, q->psk_bytes) ? QW_EPARSE : 0;
	st->gen = 0;
	st->k_fresh = 1;
	st->r_present = !ret && !read_all(fd, st->r, q->psk_bytes);
	close(fd);
	return ret;
}

static int psk_state_save(struct km_qkd *q, const struct psk_state *st)
{
	char path[512], tmp[520];
	uint8_t hdr[sizeof(QKD_PSK_MAGIC) - 1 + 10];
	int fd, ret;

	psk_path(q, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	memcpy(hdr, QKD_PSK_MAGIC, sizeof(QKD_PSK_MAGIC) - 1);
	put64(hdr + sizeof(QKD_PSK_MAGIC) - 1, st->gen);
	hdr[sizeof(QKD_PSK_MAGIC) - 1 + 8] = (uint8_t)(st->k_fresh ? 1 : 0);
	hdr[sizeof(QKD_PSK_MAGIC) - 1 + 9] = (uint8_t)(st->r_present ? 1 : 0);
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return QW_EIO;
	ret = write_all(fd, hdr, sizeof(hdr));
	if (!ret)
		ret = write_all(fd, st->k, q->psk_bytes);
	if (!ret)
		ret = write_all(fd, st->r, q->psk_bytes);
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

static unsigned psk_flags(int k_fresh, int r_present)
{
	return (k_fresh ? 1u : 0u) | (r_present ? 2u : 0u);
}

/* The one rule both ends follow to pick a session's key: K while fresh,
 * else R. Marks it used (gen + 1) in *st; copies it to key. QW_EAGAIN when
 * neither is left. */
static int psk_take(struct km_qkd *q, struct psk_state *st, uint8_t *key)
{
	if (st->k_fresh) {
		memcpy(key, st->k, q->psk_bytes);
		st->k_fresh = 0;
	} else if (st->r_present) {
		memcpy(key, st->r, q->psk_bytes);
		qw_wipe(st->r, q->psk_bytes);
		st->r_present = 0;
	} else {
		return QW_EAGAIN;
	}
	qw_wipe(st->k, q->psk_bytes);
	st->gen++;
	return 0;
}

/* Agree with the peer's (gen, flags). One end may be one step behind (it
 * stopped before marking the key of a session the other end started):
 * it marks that key used too. Anything else cannot be repaired here. */
static int psk_agree(struct km_qkd *q, struct psk_state *st, uint64_t their_gen, unsigned their_flags,
		     uint8_t *scratch)
{
	int ret;

	if (st->gen + 1 == their_gen) {
		if ((ret = psk_take(q, st, scratch)) || (ret = psk_state_save(q, st)))
			return ret;
	} else if (their_gen + 1 == st->gen) {
		/* the peer will take a key by the rule: predict its flags */
		if (their_flags & 1u)
			their_flags &= ~1u;
		else if (their_flags & 2u)
			their_flags &= ~2u;
		else
			return QW_EAUTH;
		their_gen++;
	}
	return st->gen == their_gen && psk_flags(st->k_fresh, st->r_present) == their_flags ? 0
											      : QW_EAUTH;
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
			goto out;
		q->blocks = nb;
		q->capblocks = cap;
	}
	b = &q->blocks[q->nblocks];
	b->bits = malloc(nbytes ? nbytes : 1);
	if (!b->bits)
		goto out;
	qw_bitvec_to_bytes(key, b->bits);
	b->id = id;
	b->nbits = key->nbits;
	b->nbytes = nbytes;
	q->nblocks++;
out:
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

static void blocks_clear(struct km_qkd *q)
{
	for (size_t i = 0; i < q->nblocks; i++)
		qw_free_secret(q->blocks[i].bits, q->blocks[i].nbytes);
	q->nblocks = 0;
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

/* Both ends hold the same blocks: carve the next keys, pool the rest. */
static int session_finish(struct km_qkd *q, uint64_t epoch, struct psk_state *st, uint64_t *pooled)
{
	int ret;

	*pooled = 0;
	qsort(q->blocks, q->nblocks, sizeof(*q->blocks), cmp_block);
	if ((ret = carve(q, st->k, q->psk_bytes)))
		return ret; /* the session produced too little key */
	st->k_fresh = 1;
	/* refill the reserve when the session left enough for it */
	if (!st->r_present && !carve(q, st->r, q->psk_bytes))
		st->r_present = 1;
	st->gen++;
	if ((ret = psk_state_save(q, st)))
		return ret;
	for (size_t i = 0; i < q->nblocks; i++) {
		struct qkd_block *b = &q->blocks[i];
		if (!b->nbits)
			continue;
		ret = qw_km_submit_block(q->km, q->lc->peer, epoch << QKD_EPOCH_SHIFT | b->id, b->bits,
					 b->nbits);
		if (ret)
			return ret;
		*pooled += b->nbits;
	}
	return 0;
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
	uint8_t h[32], e[10];

	for (uint64_t k = 0; k < nblocks; k++) {
		struct qw_detections *d;
		uint64_t id, first, end, n;
		int ret;

		if ((ret = read_all(fd, h, sizeof(h))))
			return ret;
		id = get64(h);
		first = get64(h + 8);
		end = get64(h + 16);
		n = get64(h + 24);
		if (id != k + 1 || end < first || end - first > ppb || n > end - first)
			return QW_EPROTO;
		d = qw_detections_new(QW_ROLE_BOB);
		if (!d)
			return QW_ENOMEM;
		d->first_pulse = first;
		d->end_pulse = first;
		for (uint64_t i = 0; i < n; i++) {
			uint64_t idx;
			if ((ret = read_all(fd, e, sizeof(e)))) {
				qw_detections_free(d);
				return ret;
			}
			idx = get64(e);
			if (e[8] > 1 || e[9] > 1 || idx < first || idx >= end ||
			    qw_detections_push(d, idx, e[8], e[9], 0)) {
				qw_detections_free(d);
				return QW_EPROTO;
			}
		}
		/* an empty-ranged record takes its start from the first push */
		d->first_pulse = first;
		d->end_pulse = end;
		r->rec[k] = d;
	}
	return 0;
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

static int session(struct km_qkd *q, int fd)
{
	struct qw_link_params lp;
	struct qw_link_records rec = { 0 };
	struct qw_link_sim *sim = NULL;
	struct qw_link *link = NULL;
	struct bob_records br = { 0 };
	struct qw_frame_io io;
	struct qw_link_stats st;
	uint8_t *psk = qw_secure_alloc(q->psk_bytes);
	struct psk_state pst = { 0 };
	uint8_t hdr[48], rep[24];
	uint64_t epoch, nblocks, ppb, pooled = 0, seed, their_gen;
	unsigned their_flags;
	int64_t t0 = km_now_ms(), source_ms;
	int ret = QW_ENOMEM;

	pthread_mutex_init(&br.mu, NULL);
	pst.k = qw_secure_alloc(q->psk_bytes);
	pst.r = qw_secure_alloc(q->psk_bytes);
	if (!psk || !pst.k || !pst.r)
		goto out;
	if ((ret = psk_state_load(q, &pst))) {
		qw_log(QW_LOG_ERROR, "QKD link %s: no authentication key (%s: %s)", q->lc->peer,
		       q->lc->psk_file, qw_strerror(ret));
		goto out;
	}
	qw_frame_io_fd(&io, fd);
	if (q->alice) {
		struct qw_sift_params sp;

		qw_sift_params_default(&sp);
		epoch = (uint64_t)time(NULL);
		if (epoch <= q->last_epoch)
			epoch = q->last_epoch + 1;
		nblocks = q->lc->blocks_per_session;
		ppb = qw_link_pulses_for_bits(&q->lc->optics, &sp, q->lc->block_bits);
		put64(hdr, ((uint64_t)QKD_MAGIC << 32) | 2);
		put64(hdr + 8, epoch);
		put64(hdr + 16, pst.gen);
		put64(hdr + 24, psk_flags(pst.k_fresh, pst.r_present));
		put64(hdr + 32, nblocks);
		put64(hdr + 40, ppb);
		if ((ret = write_all(fd, hdr, sizeof(hdr))) || (ret = read_all(fd, rep, sizeof(rep))))
			goto out;
		their_gen = get64(rep + 8);
		their_flags = (unsigned)get64(rep + 16);
	} else {
		if ((ret = read_all(fd, hdr, sizeof(hdr))))
			goto out;
		if (get64(hdr) != (((uint64_t)QKD_MAGIC << 32) | 2)) {
			ret = QW_EPROTO;
			goto out;
		}
		epoch = get64(hdr + 8);
		their_gen = get64(hdr + 16);
		their_flags = (unsigned)get64(hdr + 24);
		nblocks = get64(hdr + 32);
		ppb = get64(hdr + 40);
		if (nblocks == 0 || nblocks > 1024 || ppb == 0 || ppb > (UINT64_C(1) << 40) ||
		    epoch >= (UINT64_C(1) << (63 - QKD_EPOCH_SHIFT)) || their_flags > 3) {
			ret = QW_EPROTO;
			goto out;
		}
		put64(rep, 0);
		put64(rep + 8, pst.gen);
		put64(rep + 16, psk_flags(pst.k_fresh, pst.r_present));
		if ((ret = write_all(fd, rep, sizeof(rep))))
			goto out;
	}
	/* both ends: same state, then the same key, marked used on disk
	 * before a single authenticated frame leaves */
	if ((ret = psk_agree(q, &pst, their_gen, their_flags, psk))) {
		qw_log(QW_LOG_ERROR, "ALARM QKD link %s: authentication keys out of step (ours: generation %" PRIu64 ", peer's: %" PRIu64 "): re-key the link",
		       q->lc->peer, pst.gen, their_gen);
		q->halted = 1;
		goto out;
	}
	if ((ret = psk_take(q, &pst, psk))) {
		qw_log(QW_LOG_ERROR, "ALARM QKD link %s: no unused authentication key left: re-key the link",
		       q->lc->peer);
		q->halted = 1;
		goto out;
	}
	if ((ret = psk_state_save(q, &pst)))
		goto out;
	if (q->alice) {
		if ((ret = qw_random_bytes((uint8_t *)&seed, sizeof(seed))))
			goto out;
		sim = qw_link_sim_new(&q->lc->optics, nblocks * ppb, ppb, seed, &ret);
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
	q->last_epoch = epoch;
	link_params(q, nblocks, &lp);
	link = qw_link_new(&lp, q->alice ? QW_ROLE_ALICE : QW_ROLE_BOB, &io, psk, q->psk_bytes, &rec,
			   &ret);
	if (!link)
		goto out;
	ret = qw_link_run(link);
	qw_link_get_stats(link, &st);
	if (ret) {
		qw_log(QW_LOG_WARN, "QKD link %s: session %" PRIu64 " failed: %s", q->lc->peer, epoch,
		       qw_strerror(ret));
		goto out;
	}
	ret = session_finish(q, epoch, &pst, &pooled);
	source_ms = (int64_t)(1000.0 * (double)(nblocks * ppb) / q->lc->optics.pulse_rate_hz *
			      q->lc->pace);
	sleep_ms(q, source_ms - (km_now_ms() - t0));
	pthread_mutex_lock(&q->sink_mu);
	q->rep.sessions++;
	q->rep.qber = st.qber;
	q->rep.secret_bits += pooled;
	q->rep.blocks_delivered += st.blocks_delivered;
	q->rep.blocks_dropped += st.blocks_dropped;
	q->rep.key_rate_bps = (double)pooled * 1000.0 / (double)(km_now_ms() - t0 + 1);
	pthread_mutex_unlock(&q->sink_mu);
	if (ret == QW_EAGAIN)
		/* the key just used stays marked used: the next session runs on
		 * the reserve, or the link halts when there is none */
		qw_log(QW_LOG_ERROR, "ALARM QKD link %s: the session gave %" PRIu64 " secret bits, less than the %zu bits the next session must authenticate with",
		       q->lc->peer, st.secret_bits, 8 * q->psk_bytes);
	else if (!ret)
		qw_log(QW_LOG_INFO, "QKD link %s: session %" PRIu64 ": QBER %.2f%%, %" PRIu64 "/%" PRIu64 " blocks, %" PRIu64 " bits to the pool",
		       q->lc->peer, epoch, 100 * st.qber, st.blocks_delivered, st.blocks, pooled);
out:
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
	if (pst.k)
		qw_secure_free(pst.k, q->psk_bytes);
	if (pst.r)
		qw_secure_free(pst.r, q->psk_bytes);
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

struct km_qkd *km_qkd_start(struct qw_km *km, const struct qw_km_conf *c,
			    const struct qw_km_link_conf *lc, struct event *want_ev, int *err)
{
	struct km_qkd *q = calloc(1, sizeof(*q));

	*err = QW_ENOMEM;
	if (!q)
		return NULL;
	q->km = km;
	q->c = c;
	q->lc = lc;
	q->alice = qw_km_is_leader(c->id, lc->peer);
	q->want_ev = want_ev;
	q->fd = q->cur_fd = -1;
	q->psk_bytes = psk_bytes_for(lc);
	pthread_mutex_init(&q->mu, NULL);
	pthread_mutex_init(&q->sink_mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	if (pthread_create(&q->th, NULL, qkd_main, q)) {
		km_qkd_stop(q);
		return NULL;
	}
	q->started = 1;
	*err = 0;
	return q;
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
	if (!q)
		return;
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
	pthread_mutex_destroy(&q->mu);
	pthread_mutex_destroy(&q->sink_mu);
	pthread_cond_destroy(&q->cv);
	free(q);
}
