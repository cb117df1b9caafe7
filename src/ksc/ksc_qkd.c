/* The QKD key source: a background thread keeps a small pool of QKD key
 * material fetched from a KME over ETSI GS QKD 014 (Get key as master SAE
 * towards the configured slave SAE), so that a request needing a QKD key
 * takes it from memory and never waits for the network on the KSC's event
 * loop. The pool lives in locked memory and is wiped as it is consumed and
 * when the KSC closes; material fetched but not used before a restart is
 * lost (it was delivered by the KME, which never hands it out again). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ksc_internal.h"
#include "qwave/etsi014_client.h"
#include "qwave/secmem.h"

#define KEY_BITS 256u
#define PER_REQUEST 64u

struct ksc_qkd {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint8_t *buf;
	size_t cap, have;
	int stop, started;
	int last_err;
	uint64_t dropped; /* keys the KME delivered with the wrong size */
	struct qw_etsi_client *client;
	char *slave;
};

static int should_abort(void *arg)
{
	struct ksc_qkd *q = arg;
	int s;

	pthread_mutex_lock(&q->mu);
	s = q->stop;
	pthread_mutex_unlock(&q->mu);
	return s;
}

static void *run(void *arg)
{
	struct ksc_qkd *q = arg;

	pthread_mutex_lock(&q->mu);
	while (!q->stop) {
		size_t room = (q->cap - q->have) / (KEY_BITS / 8);
		struct qw_etsi_key_request rq = { 0 };
		struct qw_etsi_keys *keys = NULL;
		struct qw_etsi_error e;
		struct timespec ts;
		int ret;

		if (room == 0) {
			pthread_cond_wait(&q->cv, &q->mu);
			continue;
		}
		rq.number = (uint32_t)(room < PER_REQUEST ? room : PER_REQUEST);
		rq.size_bits = KEY_BITS;
		pthread_mutex_unlock(&q->mu);
		ret = qw_etsi_client_get_key(q->client, q->slave, &rq, &keys, &e);
		pthread_mutex_lock(&q->mu);
		q->last_err = ret;
		if (!ret) {
			size_t used = 0;

			for (size_t i = 0; i < keys->n; i++) {
				if (keys->keys[i].len != KEY_BITS / 8) {
					/* not what was asked for: never pad or cut key
					 * material, but make the fault visible (status) */
					q->dropped++;
					continue;
				}
				if (q->have + keys->keys[i].len > q->cap)
					continue;
				memcpy(q->buf + q->have, keys->keys[i].key, keys->keys[i].len);
				q->have += keys->keys[i].len;
				used++;
			}
			qw_etsi_keys_free(keys);
			if (used)
				continue;
			/* an empty or unusable reply: retrying at once would spin
			 * against the KME */
			q->last_err = QW_EPARSE;
		}
		/* KME unreachable, out of key or answering nothing usable: try
		 * again in a second */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		while (!q->stop && pthread_cond_timedwait(&q->cv, &q->mu, &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

int ksc_qkd_start(struct qw_ksc *k, const struct qw_ksc_opts *o)
{
	struct qw_etsi_client_opts co = { 0 };
	struct qw_etsi_error e;
	struct ksc_qkd *q;

	if (!o->kme_slave_sae)
		return QW_EINVAL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return QW_ENOMEM;
	k->qkd = q;
	q->cap = QW_KSC_QKD_POOL_BYTES;
	q->buf = qw_secure_alloc(q->cap);
	q->slave = strdup(o->kme_slave_sae);
	if (!q->buf || !q->slave)
		return QW_ENOMEM;
	co.base_url = o->kme_url;
	co.cert_file = o->kme_cert;
	co.key_file = o->kme_key;
	co.ca_file = o->kme_ca;
	co.timeout_ms = 5000;
	co.abort_cb = should_abort;
	co.abort_arg = q;
	if (qw_etsi_client_new(&co, &q->client, &e))
		return QW_EINVAL;
	q->last_err = QW_EAGAIN;
	if (pthread_mutex_init(&q->mu, NULL))
		return QW_ENOMEM;
	if (pthread_cond_init(&q->cv, NULL)) {
		pthread_mutex_destroy(&q->mu);
		return QW_ENOMEM;
	}
	if (pthread_create(&q->th, NULL, run, q)) {
		pthread_cond_destroy(&q->cv);
		pthread_mutex_destroy(&q->mu);
		return QW_ENOMEM;
	}
	q->started = 1;
	return 0;
}

void ksc_qkd_stop(struct qw_ksc *k)
{
	struct ksc_qkd *q = k->qkd;

	if (!q)
		return;
	if (q->started) {
		pthread_mutex_lock(&q->mu);
		q->stop = 1;
		pthread_cond_broadcast(&q->cv);
		pthread_mutex_unlock(&q->mu);
		pthread_join(q->th, NULL);
		pthread_cond_destroy(&q->cv);
		pthread_mutex_destroy(&q->mu);
	}
	qw_etsi_client_free(q->client);
	if (q->buf)
		qw_secure_free(q->buf, q->cap);
	free(q->slave);
	free(q);
	k->qkd = NULL;
}

int ksc_qkd_take(struct qw_ksc *k, uint8_t *out, size_t n)
{
	struct ksc_qkd *q = k->qkd;
	int ret = 0;

	if (!q)
		return QW_EUNSUPPORTED;
	if (n > q->cap)
		return QW_ERANGE;
	pthread_mutex_lock(&q->mu);
	if (q->have < n) {
		ret = QW_EAGAIN;
	} else {
		memcpy(out, q->buf, n);
		memmove(q->buf, q->buf + n, q->have - n);
		qw_wipe(q->buf + q->have - n, n);
		q->have -= n;
		pthread_cond_signal(&q->cv);
	}
	pthread_mutex_unlock(&q->mu);
	return ret;
}

void ksc_qkd_status(struct qw_ksc *k, size_t *have, size_t *cap, int *last_err,
		     uint64_t *dropped)
{
	struct ksc_qkd *q = k->qkd;

	*have = *cap = 0;
	*dropped = 0;
	*last_err = QW_EUNSUPPORTED;
	if (!q)
		return;
	pthread_mutex_lock(&q->mu);
	*have = q->have;
	*cap = q->cap;
	*last_err = q->last_err;
	*dropped = q->dropped;
	pthread_mutex_unlock(&q->mu);
}
