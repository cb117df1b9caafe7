/* The distillation pipeline runner: demultiplexer + worker threads over one
 * authenticated connection. Contract: include/qwave/pipeline.h. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qwave/pipeline.h"
#include "qwave/secmem.h"

/* A peer may run ahead of us by this many blocks at most; frames for blocks
 * further ahead are a protocol violation (bounds queue memory). */
#define MAX_AHEAD 1024

struct qmsg {
	struct qw_frame f;
	struct qmsg *next;
};

/* Per-block state shared by the demultiplexer and the block's worker. */
struct slot {
	uint64_t id;
	struct qmsg *head, *tail;
	pthread_cond_t cv;
	int waiting;          /* its worker waits in chan_recv, not reading */
	int peer_dropped;
	char peer_reason[64];
	uint64_t sent, received; /* frames of this block, each way */
	struct slot *next;
};

struct runner {
	const struct qw_pipeline_params *p;
	struct qw_frame_conn *conn;
	struct qw_auth_pool *pool;
	const struct qw_pipeline_source *src;
	const struct qw_pipeline_sink *sink;
	int recv_timeout_ms;

	pthread_mutex_t mu;
	pthread_mutex_t src_mu; /* taken before mu, never while holding it */
	struct slot *slots;   /* blocks started or with frames queued */
	uint64_t first_id;    /* id of the first block (0 until known) */
	uint64_t next_start;  /* the next id a worker will start (0 until known) */
	/* Finished ids: all below done_below, plus those in done[]. */
	uint64_t done_below;
	uint64_t *done;
	size_t ndone, capdone;
	unsigned window;      /* blocks in flight at most */
	pthread_cond_t done_cv; /* signalled when done_below advances */
	int exhausted;
	int fatal;            /* first connection-level error */
	int peer_fin;
	/* Reading the connection (see chan_recv and demux_main): at most one
	 * thread is in qw_frame_recv at a time. */
	int reading;          /* a thread is in qw_frame_recv */
	int reader_is_worker;
	struct timespec reader_deadline; /* that worker's own recv deadline */
	int workers_done;     /* every worker has returned: read until FIN */
	pthread_cond_t demux_cv;

	pthread_mutex_t sink_mu;
	struct qw_pipeline_stats st;
};

struct worker_chan {
	struct runner *r;
	struct slot *s;
};

static void qmsg_free_all(struct qmsg *m)
{
	while (m) {
		struct qmsg *n = m->next;
		qw_frame_release(&m->f);
		free(m);
		m = n;
	}
}

static struct slot *slot_find(struct runner *r, uint64_t id)
{
	for (struct slot *s = r->slots; s; s = s->next)
		if (s->id == id)
			return s;
	return NULL;
}

static struct slot *slot_get(struct runner *r, uint64_t id)
{
	struct slot *s = slot_find(r, id);

	if (s)
		return s;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->id = id;
	pthread_cond_init(&s->cv, NULL);
	s->next = r->slots;
	r->slots = s;
	return s;
}

static void slot_remove(struct runner *r, struct slot *s)
{
	for (struct slot **pp = &r->slots; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	qmsg_free_all(s->head);
	pthread_cond_destroy(&s->cv);
	free(s);
}

static int is_done(const struct runner *r, uint64_t id)
{
	if (id < r->done_below)
		return 1;
	for (size_t i = 0; i < r->ndone; i++)
		if (r->done[i] == id)
			return 1;
	return 0;
}

/* Record id as finished, advancing done_below over a contiguous run. */
static int mark_done(struct runner *r, uint64_t id)
{
	if (r->ndone == r->capdone) {
		size_t cap = r->capdone ? 2 * r->capdone : 16;
		uint64_t *nd = realloc(r->done, cap * sizeof(*nd));
		if (!nd)
			return QW_ENOMEM;
		r->done = nd;
		r->capdone = cap;
	}
	r->done[r->ndone++] = id;
	for (int moved = 1; moved;) {
		moved = 0;
		for (size_t i = 0; i < r->ndone; i++) {
			if (r->done[i] == r->done_below) {
				r->done_below++;
				r->done[i] = r->done[--r->ndone];
				moved = 1;
				break;
			}
		}
	}
	pthread_cond_broadcast(&r->done_cv);
	return 0;
}

/* First fatal error wins; wake everyone and shut the connection so that a
 * blocked read returns and the peer sees the failure. Caller holds mu. */
static void fatal_locked(struct runner *r, int err)
{
	int first = r->fatal == 0;

	if (first)
		r->fatal = err ? err : QW_EIO;
	for (struct slot *s = r->slots; s; s = s->next)
		pthread_cond_broadcast(&s->cv);
	pthread_cond_broadcast(&r->done_cv);
	pthread_cond_broadcast(&r->demux_cv);
	if (first)
		qw_frame_conn_abort(r->conn);
}

static void set_fatal(struct runner *r, int err)
{
	pthread_mutex_lock(&r->mu);
	fatal_locked(r, err);
	pthread_mutex_unlock(&r->mu);
}

/* Route one received frame to its block's queue. Caller holds mu. 0, or
 * the fatal error it caused. */
static int dispatch_locked(struct runner *r, struct qw_frame *f)
{
	struct slot *s;
	struct qmsg *m;

	r->st.frames_received++;
	r->st.bytes_received += f->len;
	if (f->kind == QW_FRAME_FIN) {
		qw_frame_release(f);
		r->peer_fin = 1;
		/* Workers still waiting learn that nothing more will come. */
		for (struct slot *t = r->slots; t; t = t->next)
			pthread_cond_broadcast(&t->cv);
		pthread_cond_broadcast(&r->demux_cv);
		return 0;
	}
	if (f->stream == 0 || (r->first_id && f->stream < r->first_id)) {
		qw_frame_release(f);
		fatal_locked(r, QW_EPROTO);
		return QW_EPROTO;
	}
	/* A block we already finished (e.g. we dropped it while the peer was
	 * still talking): authenticated, so just discard. */
	if (is_done(r, f->stream)) {
		qw_frame_release(f);
		return 0;
	}
	if (r->next_start && f->stream > r->next_start + MAX_AHEAD) {
		qw_frame_release(f);
		fatal_locked(r, QW_EPROTO);
		return QW_EPROTO;
	}
	s = slot_get(r, f->stream);
	m = s ? calloc(1, sizeof(*m)) : NULL;
	if (!m) {
		qw_frame_release(f);
		fatal_locked(r, QW_ENOMEM);
		return QW_ENOMEM;
	}
	m->f = *f;
	s->received++;
	if (s->tail)
		s->tail->next = m;
	else
		s->head = m;
	s->tail = m;
	if (s->waiting)
		pthread_cond_signal(&s->cv);
	return 0;
}

/* Read and route one frame. Caller holds mu, nobody is reading, the run
 * is healthy and the peer has not sent FIN; mu is released during the
 * read. 0 or the fatal error. */
static int read_one_locked(struct runner *r)
{
	struct qw_frame f;
	int ret;

	r->reading = 1;
	pthread_mutex_unlock(&r->mu);
	ret = qw_frame_recv(r->conn, &f);
	pthread_mutex_lock(&r->mu);
	r->reading = 0;
	r->reader_is_worker = 0;
	if (ret) {
		fatal_locked(r, ret);
		return r->fatal;
	}
	return dispatch_locked(r, &f);
}

/* Wake one worker that waits without a frame, to take over reading; 0 when
 * there is none. */
static int promote_locked(struct runner *r)
{
	for (struct slot *s = r->slots; s; s = s->next) {
		if (s->waiting && !s->head) {
			pthread_cond_signal(&s->cv);
			return 1;
		}
	}
	return 0;
}

static int ts_after(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

static void ts_add_ms(struct timespec *t, long ms)
{
	t->tv_sec += ms / 1000;
	t->tv_nsec += (ms % 1000) * 1000000L;
	if (t->tv_nsec >= 1000000000L) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000L;
	}
}

/* Workers read the connection for themselves (chan_recv): a frame then
 * costs one wake-up, the reading worker's, instead of two (a reader
 * thread's, then the worker's); on the shared 2-core VM wake-ups were the
 * largest cost of a round trip. A worker leaving with its own frame does
 * not hand reading on (another wake-up) since it usually comes back for
 * its next frame first. This thread ticks every DEMUX_TICK_MS and
 *  - wakes a worker that waits while nobody reads, to read;
 *  - reads itself when nobody has read for DEMUX_IDLE_TICKS ticks and no
 *    worker waits (keeps the peer's writes flowing while every worker
 *    computes) and, once every worker has returned, until the peer's FIN;
 *  - fails the run when a reading worker's own recv deadline passes. */
#define DEMUX_TICK_MS 1
#define DEMUX_IDLE_TICKS 20

static void *demux_main(void *arg)
{
	struct runner *r = arg;
	unsigned idle = 0;

	pthread_mutex_lock(&r->mu);
	while (!r->fatal && !r->peer_fin) {
		struct timespec now, tick;

		if (!r->reading) {
			if (r->workers_done) {
				if (read_one_locked(r))
					break;
				continue;
			}
			if (promote_locked(r)) {
				idle = 0;
			} else if (++idle > DEMUX_IDLE_TICKS) {
				idle = 0;
				if (read_one_locked(r))
					break;
				(void)promote_locked(r);
			}
		} else {
			idle = 0;
		}
		clock_gettime(CLOCK_REALTIME, &now);
		if (r->reading && r->reader_is_worker && ts_after(&now, &r->reader_deadline)) {
			fatal_locked(r, QW_ETIMEOUT);
			break;
		}
		tick = now;
		ts_add_ms(&tick, DEMUX_TICK_MS);
		(void)pthread_cond_timedwait(&r->demux_cv, &r->mu, &tick);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

static int chan_send(void *ctx, uint32_t type, const uint8_t *msg, size_t len)
{
	struct worker_chan *wc = ctx;
	struct runner *r = wc->r;
	int ret = qw_frame_send(r->conn, QW_FRAME_DATA, type, wc->s->id, msg, len);

	if (ret) {
		set_fatal(r, ret);
		return ret;
	}
	pthread_mutex_lock(&r->mu);
	r->st.frames_sent++;
	r->st.bytes_sent += len;
	wc->s->sent++;
	pthread_mutex_unlock(&r->mu);
	return 0;
}

static int chan_recv(void *ctx, uint32_t *type, uint8_t **msg, size_t *len)
{
	struct worker_chan *wc = ctx;
	struct runner *r = wc->r;
	struct slot *s = wc->s;
	struct timespec deadline;
	struct qmsg *m;
	int ret = 0;

	clock_gettime(CLOCK_REALTIME, &deadline);
	ts_add_ms(&deadline, r->recv_timeout_ms);
	pthread_mutex_lock(&r->mu);
	for (;;) {
		if (s->peer_dropped) {
			ret = QW_EABORT;
			goto out;
		}
		if (s->head)
			break;
		if (r->fatal) {
			ret = r->fatal;
			goto out;
		}
		if (r->peer_fin) {
			/* The peer will say nothing more about this block. */
			ret = QW_EPROTO;
			goto out;
		}
		if (!r->reading) {
			struct timespec now;

			/* Read for ourselves; frames of other blocks are
			 * queued for them on the way. The demultiplexer
			 * fails the run if ours does not come in time. */
			r->reader_is_worker = 1;
			r->reader_deadline = deadline;
			if (read_one_locked(r)) {
				ret = r->fatal;
				goto out;
			}
			clock_gettime(CLOCK_REALTIME, &now);
			if (!s->head && !s->peer_dropped && ts_after(&now, &deadline)) {
				ret = QW_ETIMEOUT;
				goto out;
			}
			continue;
		}
		s->waiting = 1;
		ret = pthread_cond_timedwait(&s->cv, &r->mu, &deadline);
		s->waiting = 0;
		if (ret == ETIMEDOUT && !s->head && !s->peer_dropped && !r->fatal) {
			ret = QW_ETIMEOUT;
			goto out;
		}
		ret = 0;
	}
	m = s->head;
	s->head = m->next;
	if (!s->head)
		s->tail = NULL;
	if (m->f.kind == QW_FRAME_DROP) {
		size_t n = m->f.len < sizeof(s->peer_reason) - 1 ? m->f.len
								 : sizeof(s->peer_reason) - 1;
		s->peer_dropped = 1;
		memcpy(s->peer_reason, m->f.body ? (const char *)m->f.body : "", n);
		s->peer_reason[n] = '\0';
		/* The reason is text from the peer: keep it printable. */
		for (size_t i = 0; i < n; i++)
			if (s->peer_reason[i] < 0x20 || s->peer_reason[i] > 0x7e)
				s->peer_reason[i] = '?';
		qw_frame_release(&m->f);
		free(m);
		ret = QW_EABORT;
		goto out;
	}
	*type = m->f.type;
	*msg = m->f.body;
	*len = m->f.len;
	free(m);
out:
	if (ret == QW_ETIMEOUT)
		fatal_locked(r, QW_ETIMEOUT);
	pthread_mutex_unlock(&r->mu);
	return ret;
}

/* The first nbytes * 8 bits of v as qw_bitvec_to_bytes() would store them
 * (MSB first within each byte), a word at a time and without branching on
 * key bits (that function tests every bit). */
static void key_head_bytes(const struct qw_bitvec *v, uint8_t *bytes, size_t nbytes)
{
	for (size_t i = 0; i < nbytes; i += 8) {
		uint64_t w = v->w[i >> 3];

		/* reverse the bits within each byte */
		w = ((w & 0xF0F0F0F0F0F0F0F0ull) >> 4) | ((w & 0x0F0F0F0F0F0F0F0Full) << 4);
		w = ((w & 0xCCCCCCCCCCCCCCCCull) >> 2) | ((w & 0x3333333333333333ull) << 2);
		w = ((w & 0xAAAAAAAAAAAAAAAAull) >> 1) | ((w & 0x5555555555555555ull) << 1);
		for (size_t k = 0; k < 8 && i + k < nbytes; k++)
			bytes[i + k] = (uint8_t)(w >> (8 * k));
	}
}

/* Deliver b: deposit its auth share, hand the rest to the sink. */
static int finish_delivered(struct runner *r, struct qw_key_block *b, struct slot *s)
{
	size_t nbits = b->key ? b->key->nbits : 0;
	size_t share = 0, share_bytes, unit = 8 * QW_AUTH_UNIT_BYTES;
	uint8_t *bytes = NULL;
	struct qw_bitvec *rest = NULL;
	uint64_t used;
	int ret = QW_ENOMEM;

	/* At least the pads this block's own frames spent (one unit per frame
	 * of the busier direction: the same count at both ends, since what
	 * one side sent the other received), so that delivering blocks never
	 * drains the pool; more when the fixed share asks for more. */
	pthread_mutex_lock(&r->mu);
	used = s->sent > s->received ? s->sent : s->received;
	pthread_mutex_unlock(&r->mu);
	if (r->p->auth_share > 0.0) {
		share = (size_t)((double)nbits * r->p->auth_share);
		if (share < used * unit)
			share = used * unit;
		if (share > nbits)
			share = nbits;
		share -= share % unit;
	}
	share_bytes = share / 8;
	if (share) {
		bytes = malloc(share_bytes);
		if (!bytes)
			goto out;
		key_head_bytes(b->key, bytes, share_bytes);
	}
	rest = qw_bitvec_new(nbits - share);
	if (!rest)
		goto out;
	if (nbits > share)
		qw_bitvec_copy_range(rest, 0, b->key, share, nbits - share);
	ret = qw_auth_pool_deposit(r->pool, b->id, bytes, share_bytes);
	if (ret)
		goto out;
	b->secret_bits = nbits;
	qw_bitvec_free(b->key);
	b->key = rest;
	rest = NULL;
	pthread_mutex_lock(&r->sink_mu);
	r->st.blocks_delivered++;
	r->st.secret_bits += nbits - share;
	r->st.auth_bits += share;
	if (r->sink && r->sink->deliver)
		r->sink->deliver(r->sink->ctx, b);
	pthread_mutex_unlock(&r->sink_mu);
	ret = 0;
out:
	qw_free_secret(bytes, share_bytes);
	qw_bitvec_free(rest);
	return ret;
}

static int finish_dropped(struct runner *r, struct qw_key_block *b, const char *reason)
{
	int ret = qw_auth_pool_deposit(r->pool, b->id, NULL, 0);

	pthread_mutex_lock(&r->sink_mu);
	r->st.blocks_dropped++;
	if (r->sink && r->sink->dropped)
		r->sink->dropped(r->sink->ctx, b, reason);
	pthread_mutex_unlock(&r->sink_mu);
	return ret;
}

/* Run one block through every stage; 0, or a fatal error. */
static int run_block(struct runner *r, void **states, struct qw_key_block *b, struct slot *s)
{
	struct worker_chan wc = { r, s };
	struct qw_distill_chan chan = { &wc, chan_send, chan_recv };
	char reason[sizeof(b->drop_reason) + 64];
	int local_drop = 0, ret;
	size_t i;

	reason[0] = '\0';
	for (i = 0; i < r->p->nstages; i++) {
		enum qw_stage_result res = r->p->stages[i].process(states[i], b, &chan);
		if (res == QW_STAGE_FORWARD)
			continue;
		pthread_mutex_lock(&r->mu);
		ret = r->fatal;
		if (!ret && s->peer_dropped)
			snprintf(reason, sizeof(reason), "peer dropped the block: %s",
				 s->peer_reason);
		pthread_mutex_unlock(&r->mu);
		if (ret)
			return ret;
		if (reason[0]) {
			/* the peer's reason stands */
		} else if (res == QW_STAGE_DROP) {
			snprintf(reason, sizeof(reason), "%s",
				 b->drop_reason[0] ? b->drop_reason : r->p->stages[i].name);
			local_drop = 1;
		} else {
			snprintf(reason, sizeof(reason), "stage %s failed%s%s",
				 r->p->stages[i].name, b->drop_reason[0] ? ": " : "",
				 b->drop_reason);
			local_drop = 1;
		}
		break;
	}
	if (i == r->p->nstages && b->state != QW_BLOCK_AMPLIFIED) {
		snprintf(reason, sizeof(reason), "pipeline ended in state %d, not AMPLIFIED",
			 (int)b->state);
		local_drop = 1;
	}
	if (!reason[0])
		return finish_delivered(r, b, s);
	if (local_drop) {
		/* Tell the peer, whose stage may be waiting for our next message. */
		ret = qw_frame_send(r->conn, QW_FRAME_DROP, 0, b->id, (const uint8_t *)reason,
				    strlen(reason));
		if (ret)
			return ret;
		pthread_mutex_lock(&r->mu);
		r->st.frames_sent++;
		r->st.bytes_sent += strlen(reason);
		pthread_mutex_unlock(&r->mu);
	}
	return finish_dropped(r, b, reason);
}

static void *worker_main(void *arg)
{
	struct runner *r = arg;
	size_t n = r->p->nstages;
	void **states = calloc(n, sizeof(*states));
	int ret = QW_ENOMEM;
	size_t inited = 0;

	if (!states)
		goto out;
	for (; inited < n; inited++) {
		const void *sp = r->p->stage_params ? r->p->stage_params[inited] : NULL;
		ret = r->p->stages[inited].init ? r->p->stages[inited].init(&states[inited], sp) : 0;
		if (ret)
			goto out;
	}
	for (;;) {
		struct qw_key_block *b = NULL;
		struct slot *s;

		/* src_mu serializes the source (ids come out in order) without
		 * holding mu, which the demultiplexer needs: a source may block. */
		pthread_mutex_lock(&r->src_mu);
		pthread_mutex_lock(&r->mu);
		/* Stay within `window` blocks of the oldest unfinished one: auth
		 * pads come back only as blocks finish, in id order, so a worker
		 * running far ahead of a slow block could drain the pool while
		 * that block still needs pads to finish (a deadlock). */
		while (!r->fatal && !r->exhausted && r->first_id &&
		       r->next_start >= r->done_below + r->window)
			pthread_cond_wait(&r->done_cv, &r->mu);
		if (r->fatal || r->exhausted) {
			pthread_mutex_unlock(&r->mu);
			pthread_mutex_unlock(&r->src_mu);
			ret = 0;
			goto out;
		}
		pthread_mutex_unlock(&r->mu);
		ret = r->src->next(r->src->ctx, &b);
		pthread_mutex_lock(&r->mu);
		if (ret || !b) {
			r->exhausted = 1;
			pthread_mutex_unlock(&r->mu);
			pthread_mutex_unlock(&r->src_mu);
			goto out;
		}
		if (b->id == 0 || (r->next_start && b->id != r->next_start)) {
			/* ids must be consecutive: the auth pool relies on it */
			pthread_mutex_unlock(&r->mu);
			pthread_mutex_unlock(&r->src_mu);
			qw_block_free(b);
			ret = QW_EINVAL;
			goto out;
		}
		if (!r->first_id) {
			r->first_id = b->id;
			r->done_below = b->id;
		}
		r->next_start = b->id + 1;
		s = slot_get(r, b->id);
		pthread_mutex_unlock(&r->mu);
		pthread_mutex_unlock(&r->src_mu);
		if (!s) {
			qw_block_free(b);
			ret = QW_ENOMEM;
			goto out;
		}
		b->role = r->p->role;
		ret = run_block(r, states, b, s);
		pthread_mutex_lock(&r->mu);
		if (!ret)
			ret = mark_done(r, b->id);
		slot_remove(r, s);
		pthread_mutex_unlock(&r->mu);
		qw_block_free(b);
		if (ret)
			goto out;
	}
out:
	if (states) {
		for (size_t i = 0; i < inited; i++)
			if (r->p->stages[i].free)
				r->p->stages[i].free(states[i]);
		free(states);
	}
	if (ret)
		set_fatal(r, ret);
	return NULL;
}

int qw_pipeline_run(const struct qw_pipeline_params *p, struct qw_frame_conn *conn,
		    struct qw_auth_pool *pool, const struct qw_pipeline_source *src,
		    const struct qw_pipeline_sink *sink, struct qw_pipeline_stats *stats)
{
	struct runner r;
	pthread_t demux, *workers = NULL;
	unsigned nw, started = 0;
	int demux_started = 0, ret;

	QW_REQUIRE(p != NULL && conn != NULL && pool != NULL && src != NULL && src->next);
	if (stats)
		memset(stats, 0, sizeof(*stats));
	if (!p->stages || p->nstages == 0 || !(p->auth_share >= 0.0 && p->auth_share <= 1.0))
		return QW_EINVAL;
	for (size_t i = 0; i < p->nstages; i++)
		if (!p->stages[i].process)
			return QW_EINVAL;
	memset(&r, 0, sizeof(r));
	r.p = p;
	r.conn = conn;
	r.pool = pool;
	r.src = src;
	r.sink = sink;
	r.recv_timeout_ms = p->recv_timeout_ms > 0 ? p->recv_timeout_ms : 60000;
	pthread_mutex_init(&r.mu, NULL);
	pthread_mutex_init(&r.sink_mu, NULL);
	pthread_mutex_init(&r.src_mu, NULL);
	pthread_cond_init(&r.done_cv, NULL);
	pthread_cond_init(&r.demux_cv, NULL);
	nw = p->workers ? p->workers : 2;
	r.window = nw;
	workers = calloc(nw, sizeof(*workers));
	if (!workers || pthread_create(&demux, NULL, demux_main, &r)) {
		r.fatal = QW_ENOMEM;
		goto out;
	}
	demux_started = 1;
	for (; started < nw; started++) {
		if (pthread_create(&workers[started], NULL, worker_main, &r)) {
			set_fatal(&r, QW_ENOMEM);
			break;
		}
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(workers[i], NULL);
	pthread_mutex_lock(&r.mu);
	ret = r.fatal;
	/* The demultiplexer now reads until the peer's FIN. */
	r.workers_done = 1;
	pthread_cond_broadcast(&r.demux_cv);
	pthread_mutex_unlock(&r.mu);
	if (!ret) {
		ret = qw_frame_send(conn, QW_FRAME_FIN, 0, 0, NULL, 0);
		if (ret)
			set_fatal(&r, ret);
		else
			r.st.frames_sent++;
	}
out:
	if (demux_started)
		pthread_join(demux, NULL);
	pthread_mutex_lock(&r.mu);
	if (!r.fatal && !r.peer_fin)
		r.fatal = QW_EPROTO;
	ret = r.fatal;
	while (r.slots)
		slot_remove(&r, r.slots);
	pthread_mutex_unlock(&r.mu);
	if (stats)
		*stats = r.st;
	free(r.done);
	free(workers);
	pthread_mutex_destroy(&r.mu);
	pthread_mutex_destroy(&r.sink_mu);
	pthread_mutex_destroy(&r.src_mu);
	pthread_cond_destroy(&r.done_cv);
	pthread_cond_destroy(&r.demux_cv);
	return ret;
}
