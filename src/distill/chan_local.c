/* In-process channel pair: two FIFO queues under one mutex, one condition
 * variable per direction. */
#include "qwave/chan_local.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qwave/error.h"
#include "qwave/secmem.h"

struct local_msg {
	struct local_msg *next;
	uint32_t type;
	size_t len;
	uint8_t *data;
};

struct local_queue {
	struct local_msg *head, *tail;
	size_t count;
	pthread_cond_t cv;
};

struct local_end {
	struct qw_chan_local *pair;
	struct local_queue *in, *out;
};

struct qw_chan_local {
	pthread_mutex_t mu;
	struct local_queue q[2]; /* q[0]: Alice -> Bob, q[1]: Bob -> Alice */
	struct local_end end[2]; /* end[0]: Alice, end[1]: Bob */
	int closed;
};

static void msg_free(struct local_msg *m)
{
	if (!m)
		return;
	if (m->data) {
		qw_wipe(m->data, m->len);
		free(m->data);
	}
	free(m);
}

static int local_send(void *ctx, uint32_t type, const uint8_t *msg, size_t len)
{
	struct local_end *e = ctx;
	struct qw_chan_local *p = e->pair;
	struct local_msg *m;
	int ret;

	if (len && !msg)
		qw_misuse("qw_chan_local send: NULL message with a length");
	m = calloc(1, sizeof(*m));
	if (!m)
		return QW_ENOMEM;
	m->data = malloc(len ? len : 1);
	if (!m->data) {
		free(m);
		return QW_ENOMEM;
	}
	if (len)
		memcpy(m->data, msg, len);
	m->type = type;
	m->len = len;
	pthread_mutex_lock(&p->mu);
	if (p->closed) {
		ret = QW_ECLOSED;
	} else {
		if (e->out->tail)
			e->out->tail->next = m;
		else
			e->out->head = m;
		e->out->tail = m;
		e->out->count++;
		m = NULL;
		pthread_cond_signal(&e->out->cv);
		ret = 0;
	}
	pthread_mutex_unlock(&p->mu);
	msg_free(m);
	return ret;
}

static int local_recv(void *ctx, uint32_t *type, uint8_t **msg, size_t *len)
{
	struct local_end *e = ctx;
	struct qw_chan_local *p = e->pair;
	struct local_msg *m = NULL;

	if (!type || !msg || !len)
		qw_misuse("qw_chan_local recv: NULL output");
	pthread_mutex_lock(&p->mu);
	while (!p->closed && !e->in->head)
		pthread_cond_wait(&e->in->cv, &p->mu);
	if (!p->closed) {
		m = e->in->head;
		e->in->head = m->next;
		if (!e->in->head)
			e->in->tail = NULL;
		e->in->count--;
	}
	pthread_mutex_unlock(&p->mu);
	if (!m)
		return QW_ECLOSED;
	*type = m->type;
	*msg = m->data;
	*len = m->len;
	free(m);
	return 0;
}

struct qw_chan_local *qw_chan_local_pair_new(struct qw_distill_chan *alice,
					     struct qw_distill_chan *bob)
{
	struct qw_chan_local *p;
	int i;

	if (!alice || !bob)
		qw_misuse("qw_chan_local_pair_new: NULL end");
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	if (pthread_mutex_init(&p->mu, NULL) != 0) {
		free(p);
		return NULL;
	}
	for (i = 0; i < 2; i++) {
		if (pthread_cond_init(&p->q[i].cv, NULL) != 0) {
			while (i-- > 0)
				pthread_cond_destroy(&p->q[i].cv);
			pthread_mutex_destroy(&p->mu);
			free(p);
			return NULL;
		}
	}
	p->end[0] = (struct local_end){ p, &p->q[1], &p->q[0] };
	p->end[1] = (struct local_end){ p, &p->q[0], &p->q[1] };
	*alice = (struct qw_distill_chan){ &p->end[0], local_send, local_recv };
	*bob = (struct qw_distill_chan){ &p->end[1], local_send, local_recv };
	return p;
}

void qw_chan_local_close(struct qw_chan_local *p)
{
	if (!p)
		qw_misuse("qw_chan_local_close: NULL pair");
	pthread_mutex_lock(&p->mu);
	p->closed = 1;
	pthread_cond_broadcast(&p->q[0].cv);
	pthread_cond_broadcast(&p->q[1].cv);
	pthread_mutex_unlock(&p->mu);
}

size_t qw_chan_local_pending(struct qw_chan_local *p)
{
	size_t n;

	if (!p)
		qw_misuse("qw_chan_local_pending: NULL pair");
	pthread_mutex_lock(&p->mu);
	n = p->q[0].count + p->q[1].count;
	pthread_mutex_unlock(&p->mu);
	return n;
}

void qw_chan_local_pair_free(struct qw_chan_local *p)
{
	int i;

	if (!p)
		return;
	for (i = 0; i < 2; i++) {
		while (p->q[i].head) {
			struct local_msg *m = p->q[i].head;

			p->q[i].head = m->next;
			msg_free(m);
		}
		pthread_cond_destroy(&p->q[i].cv);
	}
	pthread_mutex_destroy(&p->mu);
	free(p);
}
