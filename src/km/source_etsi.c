/* Key source pulling keys from a vendor KME over ETSI GS QKD 014 (master:
 * Get key; slave: Get key with key IDs). Behaviour and wiring are described
 * in keysource.h and docs/keys-cli.md. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "qwave/bitvec.h"
#include "qwave/keysource.h"
#include "qwave/secmem.h"

const char *const qw_etsi_source_conf_keys[] = {
	"kme_role", "kme_url", "kme_cert", "kme_key", "kme_ca", "kme_id", "kme_peer_sae",
	"kme_key_bits", "kme_batch", "kme_poll_ms", "kme_max_backoff_ms",
	"kme_fetch_retry_ms", "kme_timeout_ms", NULL,
};

struct fetch {
	struct fetch *next;
	uint64_t block_id;
	uint64_t deadline_ms;     /* monotonic */
	size_t n;
	char (*ids)[QW_UUID_STR_BYTES];
};

struct etsi_src {
	struct qw_key_source pub;
	struct qw_etsi_source_conf conf;
	struct qw_key_sink sink;
	struct qw_etsi_client *client;
	pthread_mutex_t mu;
	pthread_cond_t cv;        /* CLOCK_MONOTONIC */
	pthread_t thread;
	int running;
	atomic_int stop;
	struct fetch *head, *tail; /* slave queue (mu) */
	uint64_t next_block;       /* master */
	struct qw_etsi_source_stats st; /* mu */
	int reported, reported_err; /* last state given to the sink */
};

static const struct qw_key_source_ops etsi_ops;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void qw_etsi_source_conf_default(struct qw_etsi_source_conf *c)
{
	QW_REQUIRE(c);
	memset(c, 0, sizeof(*c));
	c->batch = 16;
	c->poll_ms = 1000;
	c->max_backoff_ms = 30000;
	c->fetch_retry_ms = 30000;
	c->max_queue = 1024;
	c->first_block_id = 1;
}

static int conf_fail(struct qw_config_error *err, const struct qw_config *cfg, int line,
		     int code, const char *what)
{
	if (err) {
		snprintf(err->msg, sizeof(err->msg), "%s:%d: %s", qw_config_source(cfg), line, what);
		err->line = line;
	}
	return code;
}

int qw_etsi_source_conf_load(const struct qw_config *cfg, const struct qw_config_section *sec,
			     struct qw_etsi_source_conf *c, struct qw_config_error *err)
{
	struct {
		const char *key;
		uint64_t min, max;
		uint32_t *dst;
	} nums[] = {
		{ "kme_key_bits", 8, 1u << 20, &c->key_bits },
		{ "kme_batch", 1, QW_ETSI_SOURCE_MAX_IDS, &c->batch },
		{ "kme_poll_ms", 1, 3600000, &c->poll_ms },
		{ "kme_max_backoff_ms", 1, 3600000, &c->max_backoff_ms },
		{ "kme_fetch_retry_ms", 0, 3600000, &c->fetch_retry_ms },
		{ "kme_timeout_ms", 1, 600000, &c->client.timeout_ms },
	};
	const char *role;
	char what[160];
	int line, ret;

	QW_REQUIRE(cfg && sec && c);
	qw_etsi_source_conf_default(c);
	if ((ret = qw_config_require(sec, "kme_role", &role, err)) ||
	    (ret = qw_config_require(sec, "kme_url", &c->client.base_url, err)) ||
	    (ret = qw_config_require(sec, "kme_cert", &c->client.cert_file, err)) ||
	    (ret = qw_config_require(sec, "kme_key", &c->client.key_file, err)) ||
	    (ret = qw_config_require(sec, "kme_ca", &c->client.ca_file, err)) ||
	    (ret = qw_config_require(sec, "kme_peer_sae", &c->peer_sae, err)))
		return ret;
	(void)qw_config_section_get(sec, "kme_role", &line);
	if (!strcmp(role, "master")) {
		c->role = QW_ETSI_SOURCE_MASTER;
	} else if (!strcmp(role, "slave")) {
		c->role = QW_ETSI_SOURCE_SLAVE;
	} else {
		snprintf(what, sizeof(what), "key 'kme_role' in [%s]: '%.40s' is not one of master, "
			 "slave", qw_config_section_name(sec), role);
		return conf_fail(err, cfg, line, QW_EINVAL, what);
	}
	if (strncasecmp(c->client.base_url, "https://", 8)) {
		(void)qw_config_section_get(sec, "kme_url", &line);
		snprintf(what, sizeof(what), "key 'kme_url' in [%s]: must be https://host[:port]",
			 qw_config_section_name(sec));
		return conf_fail(err, cfg, line, QW_EINVAL, what);
	}
	c->client.expect_kme_id = qw_config_section_get(sec, "kme_id", NULL);
	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		uint64_t v = *nums[i].dst;

		if ((ret = qw_config_get_uint(sec, nums[i].key, nums[i].min, nums[i].max, &v, err)))
			return ret;
		*nums[i].dst = (uint32_t)v;
	}
	if (c->key_bits % 8) {
		(void)qw_config_section_get(sec, "kme_key_bits", &line);
		snprintf(what, sizeof(what), "key 'kme_key_bits' in [%s]: %u is not a multiple of 8",
			 qw_config_section_name(sec), c->key_bits);
		return conf_fail(err, cfg, line, QW_EINVAL, what);
	}
	return 0;
}

static struct etsi_src *impl(struct qw_key_source *s)
{
	QW_REQUIRE(s && s->ops == &etsi_ops);
	return s->impl;
}

static int aborted(void *arg)
{
	struct etsi_src *e = arg;

	return atomic_load(&e->stop);
}

/* Wait ms (or until stop). 1 when stopping. */
static int sleep_ms(struct etsi_src *e, uint32_t ms)
{
	struct timespec ts;
	int stop;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&e->mu);
	while (!atomic_load(&e->stop))
		if (pthread_cond_timedwait(&e->cv, &e->mu, &ts) == ETIMEDOUT)
			break;
	stop = atomic_load(&e->stop);
	pthread_mutex_unlock(&e->mu);
	return stop;
}

static uint32_t backoff_next(const struct etsi_src *e, uint32_t cur)
{
	uint64_t n = (uint64_t)(cur ? cur : e->conf.poll_ms) * 2;

	return n > e->conf.max_backoff_ms ? e->conf.max_backoff_ms : (uint32_t)n;
}

static void reason_of(int rc, const struct qw_etsi_error *err, char *out, size_t size)
{
	if (err->http_status && err->http_status != 200)
		snprintf(out, size, "KME answered %d: %s", err->http_status, err->message);
	else if (err->http_status == 200)
		snprintf(out, size, "KME sent an invalid answer: %s", err->message);
	else
		snprintf(out, size, "%s", err->message[0] ? err->message : qw_strerror(rc));
}

/* Account one call and tell the sink about state changes. */
static void record(struct etsi_src *e, int rc, const char *reason)
{
	int changed;

	pthread_mutex_lock(&e->mu);
	e->st.requests++;
	e->st.up = rc == 0;
	if (rc == QW_EAGAIN)
		e->st.busy++;
	else if (rc)
		e->st.failures++;
	if (rc) {
		e->st.last_error = rc;
		snprintf(e->st.last_reason, sizeof(e->st.last_reason), "%s", reason);
	}
	changed = !e->reported || e->reported_err != rc;
	e->reported = 1;
	e->reported_err = rc;
	pthread_mutex_unlock(&e->mu);
	if (changed && e->sink.state)
		e->sink.state(e->sink.ctx, rc, rc ? reason : "KME answers");
}

static void drop(struct etsi_src *e, uint64_t block_id, const char *reason)
{
	pthread_mutex_lock(&e->mu);
	e->st.dropped++;
	pthread_mutex_unlock(&e->mu);
	if (e->sink.dropped)
		e->sink.dropped(e->sink.ctx, block_id, reason);
}

/* Concatenate keys[order[i]] (all of one size) into a block and deliver it
 * as block_id. 0, QW_EPROTO (sizes differ: reason set), QW_ENOMEM. */
static int deliver(struct etsi_src *e, uint64_t block_id, const struct qw_etsi_keys *k,
		   const size_t *order, char (*ids)[QW_UUID_STR_BYTES], char *reason, size_t rsize)
{
	size_t klen = k->keys[order[0]].len, total;
	uint8_t *bytes = NULL;
	struct qw_bitvec *v = NULL;
	struct qw_key_source_ids meta;
	int ret = QW_EPROTO;

	for (size_t i = 0; i < k->n; i++)
		if (k->keys[i].len != klen) {
			snprintf(reason, rsize, "KME returned keys of different sizes (%zu and %zu "
				 "bits)", klen * 8, k->keys[i].len * 8);
			return QW_EPROTO;
		}
	if (e->conf.key_bits && klen * 8 != e->conf.key_bits) {
		snprintf(reason, rsize, "KME returned %zu-bit keys, %u bits were asked for",
			 klen * 8, e->conf.key_bits);
		return QW_EPROTO;
	}
	ret = QW_ENOMEM;
	total = klen * k->n;
	bytes = qw_secure_alloc(total);
	v = qw_bitvec_new(0);
	if (!bytes || !v)
		goto out;
	for (size_t i = 0; i < k->n; i++)
		memcpy(bytes + i * klen, k->keys[order[i]].key, klen);
	if (qw_bitvec_from_bytes(v, bytes, total * 8))
		goto out;
	meta.key_ids = (const char (*)[QW_UUID_STR_BYTES])ids;
	meta.n = k->n;
	meta.key_bits = (uint32_t)(klen * 8);
	pthread_mutex_lock(&e->mu);
	e->st.blocks++;
	e->st.keys += k->n;
	e->st.bits += total * 8;
	pthread_mutex_unlock(&e->mu);
	e->sink.deliver(e->sink.ctx, block_id, v, &meta);
	ret = 0;
out:
	qw_bitvec_free(v);
	qw_secure_free(bytes, total);
	return ret;
}

static int master_pull(struct etsi_src *e)
{
	struct qw_etsi_key_request req = { .number = e->conf.batch, .size_bits = e->conf.key_bits };
	struct qw_etsi_keys *k = NULL;
	struct qw_etsi_error err;
	char (*ids)[QW_UUID_STR_BYTES] = NULL;
	size_t *order = NULL;
	char reason[QW_ETSI_MSG_BYTES + 32] = "";
	int rc;

	rc = qw_etsi_client_get_key(e->client, e->conf.peer_sae, &req, &k, &err);
	if (rc == QW_ECLOSED && atomic_load(&e->stop))
		return rc;
	if (!rc && k->n == 0) {
		snprintf(err.message, sizeof(err.message), "Key container without keys");
		err.http_status = 200;
		rc = QW_EPROTO;
	}
	if (rc) {
		reason_of(rc, &err, reason, sizeof(reason));
		record(e, rc, reason);
		goto out;
	}
	rc = QW_ENOMEM;
	ids = calloc(k->n, sizeof(*ids));
	order = calloc(k->n, sizeof(*order));
	if (!ids || !order) {
		record(e, rc, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < k->n; i++) {
		order[i] = i;
		memcpy(ids[i], k->keys[i].key_id, QW_UUID_STR_BYTES);
	}
	rc = deliver(e, e->next_block, k, order, ids, reason, sizeof(reason));
	/* a block id is never reused, even when the block failed */
	e->next_block++;
	record(e, rc, rc == QW_ENOMEM ? "out of memory" : reason);
out:
	free(ids);
	free(order);
	qw_etsi_keys_free(k);
	return rc;
}

static void master_loop(struct etsi_src *e)
{
	uint32_t wait = 0, backoff = 0;

	while (!sleep_ms(e, wait)) {
		if (e->sink.want && !e->sink.want(e->sink.ctx)) {
			wait = e->conf.poll_ms;
			continue;
		}
		if (master_pull(e)) {
			backoff = backoff_next(e, backoff);
			wait = backoff;
		} else {
			backoff = 0;
			wait = e->conf.poll_ms;
		}
	}
}

static int transient(int rc)
{
	return rc == QW_EAGAIN || rc == QW_EIO || rc == QW_ETIMEOUT || rc == QW_ENOTFOUND ||
	       rc == QW_EAUTH;
}

/* One attempt at the queue's head f. 0 done (delivered or dropped), else
 * a transient error code: retry later. */
static int slave_fetch(struct etsi_src *e, struct fetch *f)
{
	struct qw_etsi_keys *k = NULL;
	struct qw_etsi_error err;
	const char **ptrs;
	size_t *order = NULL;
	char reason[QW_ETSI_MSG_BYTES + 32] = "";
	int rc;

	ptrs = calloc(f->n, sizeof(*ptrs));
	order = calloc(f->n, sizeof(*order));
	if (!ptrs || !order) {
		rc = QW_ENOMEM;
		snprintf(reason, sizeof(reason), "out of memory");
		goto out;
	}
	for (size_t i = 0; i < f->n; i++)
		ptrs[i] = f->ids[i];
	rc = qw_etsi_client_get_key_with_ids(e->client, e->conf.peer_sae, ptrs, f->n, 0, &k, &err);
	if (rc == QW_ECLOSED && atomic_load(&e->stop))
		goto out;
	if (rc) {
		reason_of(rc, &err, reason, sizeof(reason));
		record(e, rc, reason);
		if (transient(rc) && now_ms() < f->deadline_ms)
			goto out;
		drop(e, f->block_id, reason);
		rc = 0;
		goto out;
	}
	/* the block is the keys in the master's order, whatever order the KME
	 * answered in */
	rc = k->n == f->n ? 0 : QW_EPROTO;
	for (size_t i = 0; i < f->n && !rc; i++) {
		size_t j = 0;

		while (j < k->n && strcasecmp(k->keys[j].key_id, f->ids[i]))
			j++;
		if (j == k->n)
			rc = QW_EPROTO;
		order[i] = j;
	}
	if (rc) {
		snprintf(reason, sizeof(reason), "KME returned other keys than the %zu asked for",
			 f->n);
		record(e, rc, reason);
		drop(e, f->block_id, reason);
		rc = 0;
		goto out;
	}
	rc = deliver(e, f->block_id, k, order, f->ids, reason, sizeof(reason));
	record(e, rc, rc == QW_ENOMEM ? "out of memory" : reason);
	if (rc)
		drop(e, f->block_id, rc == QW_ENOMEM ? "out of memory" : reason);
	rc = 0;
out:
	if (rc == QW_ENOMEM) {
		drop(e, f->block_id, reason);
		rc = 0;
	}
	free(ptrs);
	free(order);
	qw_etsi_keys_free(k);
	return rc;
}

static void free_fetch(struct fetch *f)
{
	if (f) {
		free(f->ids);
		free(f);
	}
}

static void slave_loop(struct etsi_src *e)
{
	uint32_t backoff = 0;

	for (;;) {
		struct fetch *f;
		int rc;

		pthread_mutex_lock(&e->mu);
		while (!e->head && !atomic_load(&e->stop))
			pthread_cond_wait(&e->cv, &e->mu);
		f = e->head;
		pthread_mutex_unlock(&e->mu);
		if (atomic_load(&e->stop))
			break;
		rc = slave_fetch(e, f);
		if (rc) {
			if (atomic_load(&e->stop))
				break;
			backoff = backoff_next(e, backoff);
			if (sleep_ms(e, backoff))
				break;
			continue;
		}
		backoff = 0;
		pthread_mutex_lock(&e->mu);
		e->head = f->next;
		if (!e->head)
			e->tail = NULL;
		e->st.queued--;
		pthread_mutex_unlock(&e->mu);
		free_fetch(f);
	}
	/* nothing is left behind unanswered */
	for (;;) {
		struct fetch *f;

		pthread_mutex_lock(&e->mu);
		f = e->head;
		if (f) {
			e->head = f->next;
			e->st.queued--;
		} else {
			e->tail = NULL;
		}
		pthread_mutex_unlock(&e->mu);
		if (!f)
			break;
		drop(e, f->block_id, "source stopped");
		free_fetch(f);
	}
}

static void *run(void *arg)
{
	struct etsi_src *e = arg;

	if (e->conf.role == QW_ETSI_SOURCE_MASTER)
		master_loop(e);
	else
		slave_loop(e);
	return NULL;
}

static int etsi_start(struct qw_key_source *s)
{
	struct etsi_src *e = impl(s);
	int ret = 0;

	pthread_mutex_lock(&e->mu);
	if (e->running) {
		ret = QW_ESTATE;
	} else {
		atomic_store(&e->stop, 0);
		if (pthread_create(&e->thread, NULL, run, e))
			ret = QW_ENOMEM;
		else
			e->running = 1;
	}
	pthread_mutex_unlock(&e->mu);
	return ret;
}

static void etsi_stop(struct qw_key_source *s)
{
	struct etsi_src *e = impl(s);
	int running;

	pthread_mutex_lock(&e->mu);
	atomic_store(&e->stop, 1);
	pthread_cond_broadcast(&e->cv);
	running = e->running;
	pthread_mutex_unlock(&e->mu);
	if (running) {
		pthread_join(e->thread, NULL);
		pthread_mutex_lock(&e->mu);
		e->running = 0;
		pthread_mutex_unlock(&e->mu);
	}
}

static void etsi_free(struct qw_key_source *s)
{
	struct etsi_src *e = impl(s);

	etsi_stop(s);
	while (e->head) {
		struct fetch *f = e->head;

		e->head = f->next;
		free_fetch(f);
	}
	qw_etsi_client_free(e->client);
	pthread_cond_destroy(&e->cv);
	pthread_mutex_destroy(&e->mu);
	free(e);
}

static const struct qw_key_source_ops etsi_ops = {
	.start = etsi_start,
	.stop = etsi_stop,
	.free = etsi_free,
};

struct qw_key_source *qw_etsi_source_new(const struct qw_etsi_source_conf *c,
					 const struct qw_key_sink *sink, int *err)
{
	struct etsi_src *e = NULL;
	struct qw_etsi_client_opts co;
	pthread_condattr_t ca;
	int ret = QW_EINVAL, have_mu = 0, have_cv = 0;

	QW_REQUIRE(c && sink && sink->deliver);
	if ((c->role != QW_ETSI_SOURCE_MASTER && c->role != QW_ETSI_SOURCE_SLAVE) ||
	    !c->peer_sae || !*c->peer_sae || strlen(c->peer_sae) > QW_ETSI_ID_MAX ||
	    c->batch == 0 || c->batch > QW_ETSI_SOURCE_MAX_IDS || c->key_bits % 8 ||
	    c->poll_ms == 0 || c->max_backoff_ms == 0 || c->max_queue == 0)
		goto fail;
	ret = QW_ENOMEM;
	e = calloc(1, sizeof(*e));
	if (!e)
		goto fail;
	e->conf = *c;
	e->sink = *sink;
	e->next_block = c->first_block_id;
	atomic_init(&e->stop, 0);
	if (pthread_mutex_init(&e->mu, NULL))
		goto fail;
	have_mu = 1;
	if (pthread_condattr_init(&ca))
		goto fail;
	if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) || pthread_cond_init(&e->cv, &ca)) {
		pthread_condattr_destroy(&ca);
		goto fail;
	}
	pthread_condattr_destroy(&ca);
	have_cv = 1;
	co = c->client;
	co.abort_cb = aborted;
	co.abort_arg = e;
	ret = qw_etsi_client_new(&co, &e->client, NULL);
	if (ret)
		goto fail;
	e->pub.ops = &etsi_ops;
	e->pub.kind = "etsi014";
	e->pub.impl = e;
	return &e->pub;
fail:
	if (e) {
		if (have_cv)
			pthread_cond_destroy(&e->cv);
		if (have_mu)
			pthread_mutex_destroy(&e->mu);
		free(e);
	}
	if (err)
		*err = ret;
	return NULL;
}

int qw_etsi_source_fetch(struct qw_key_source *s, uint64_t block_id,
			 const char *const *ids, size_t n)
{
	struct etsi_src *e;
	struct fetch *f;
	struct qw_uuid u;
	int ret = 0;

	QW_REQUIRE(s && (ids || n == 0));
	if (s->ops != &etsi_ops)
		return QW_EINVAL;
	e = s->impl;
	if (e->conf.role != QW_ETSI_SOURCE_SLAVE || n == 0 || n > QW_ETSI_SOURCE_MAX_IDS)
		return QW_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!ids[i] || qw_uuid_parse(&u, ids[i]))
			return QW_EINVAL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return QW_ENOMEM;
	f->ids = malloc(n * sizeof(*f->ids));
	if (!f->ids) {
		free(f);
		return QW_ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		memcpy(f->ids[i], ids[i], QW_UUID_STR_BYTES); /* parsed: 36 chars + NUL */
	f->n = n;
	f->block_id = block_id;
	f->deadline_ms = now_ms() + e->conf.fetch_retry_ms;
	pthread_mutex_lock(&e->mu);
	if (!e->running || atomic_load(&e->stop))
		ret = QW_ESTATE;
	else if (e->st.queued >= e->conf.max_queue)
		ret = QW_EAGAIN;
	if (!ret) {
		if (e->tail)
			e->tail->next = f;
		else
			e->head = f;
		e->tail = f;
		e->st.queued++;
		pthread_cond_broadcast(&e->cv);
	}
	pthread_mutex_unlock(&e->mu);
	if (ret)
		free_fetch(f);
	return ret;
}

void qw_etsi_source_stats(struct qw_key_source *s, struct qw_etsi_source_stats *out)
{
	struct etsi_src *e = impl(s);

	QW_REQUIRE(out);
	pthread_mutex_lock(&e->mu);
	*out = e->st;
	pthread_mutex_unlock(&e->mu);
}
