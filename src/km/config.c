/* Node configuration: validation of a qwaved INI file into struct
 * qw_km_conf (include/qwave/km.h). Every complaint names file:line. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qwave/km.h"
#include "qwave/kmlink.h"
#include "qwave/routing.h"
#include "qwave/secmem.h"

static const char *const sections[] = { "node", "etsi", "metrics", "limits", "link", "sae",
					"routing", "relay", "policy", NULL };
static const char *const node_keys[] = { "id", "data_dir", "log_level", "log_format", "listen",
					 "cert", "key", "ca", "master_key_file", "status_file",
					 "sync", "request_timeout_ms", NULL };
static const char *const etsi_keys[] = { "listen", "cert", "key", "ca", NULL };
static const char *const metrics_keys[] = { "listen", NULL };
static const char *const limits_keys[] = { "key_size", "max_key_per_request", "max_key_size",
					   "min_key_size", "max_key_count", "max_sae_id_count",
					   NULL };
static const char *const link_keys[] = {
	"peer", "address", "source", "distance_km", "attenuation_db_per_km", "detector_efficiency",
	"dark_count", "misalignment", "pulse_rate_hz", "mu", "nu", "vacuum", "p_signal",
	"p_decoy", "p_vacuum", "eve_fraction", "afterpulse", "block_bits", "blocks_per_session",
	"bounds", "ec", "qber_threshold", "pace", "psk_file", NULL
};
static const char *const sae_keys[] = { "id", "node", NULL };
static const char *const routing_keys[] = { "refresh_ms", "max_age_ms", "low_pool_bits",
					    "heartbeat_ms", "dead_ms", NULL };
static const char *const relay_keys[] = { "rekey_every", "batch_target", "batch_wait_ms",
					  "timeout_ms", "key_lifetime_s", NULL };

static int fail(struct qw_config_error *err, const struct qw_config *cfg, int line, int code,
		const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int fail(struct qw_config_error *err, const struct qw_config *cfg, int line, int code,
		const char *fmt, ...)
{
	char what[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(err->msg, sizeof(err->msg), "%s:%d: %s", qw_config_source(cfg), line, what);
	else
		snprintf(err->msg, sizeof(err->msg), "%s: %s", qw_config_source(cfg), what);
	err->line = line;
	return code;
}

int qw_km_parse_addr(const char *s, char host[64], uint16_t *port)
{
	const char *colon = s ? strrchr(s, ':') : NULL;
	size_t hl;
	char *end;
	unsigned long p;
	unsigned a, b, c, d;
	char tail;

	if (!colon || colon == s)
		return QW_EPARSE;
	hl = (size_t)(colon - s);
	if (hl >= 64)
		return QW_EPARSE;
	memcpy(host, s, hl);
	host[hl] = 0;
	if (strcmp(host, "localhost") &&
	    (sscanf(host, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) != 4 || a > 255 || b > 255 ||
	     c > 255 || d > 255))
		return QW_EPARSE;
	if (!colon[1] || colon[1] == '-' || colon[1] == '+')
		return QW_EPARSE;
	p = strtoul(colon + 1, &end, 10);
	if (*end || p > 65535)
		return QW_EPARSE;
	*port = (uint16_t)p;
	return 0;
}

static int get_addr(const struct qw_config *cfg, const struct qw_config_section *sec,
		    const char *key, const char **out, struct qw_config_error *err)
{
	int line;
	const char *v = qw_config_section_get(sec, key, &line);
	char host[64];
	uint16_t port;

	if (!v)
		return 0;
	if (qw_km_parse_addr(v, host, &port))
		return fail(err, cfg, line, QW_EPARSE,
			    "key '%s' in [%s]: '%.40s' is not an address: expected IPv4:port, e.g. 127.0.0.1:8443",
			    key, qw_config_section_name(sec), v);
	*out = v;
	return 0;
}

static int get_choice(const struct qw_config *cfg, const struct qw_config_section *sec,
		      const char *key, const char *const *names, const int *values, int *out,
		      struct qw_config_error *err)
{
	int line;
	const char *v = qw_config_section_get(sec, key, &line);
	char list[120] = "";

	if (!v)
		return 0;
	for (size_t i = 0; names[i]; i++) {
		if (!strcmp(v, names[i])) {
			*out = values[i];
			return 0;
		}
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "",
			 names[i]);
	}
	return fail(err, cfg, line, QW_EINVAL, "key '%s' in [%s]: '%.40s' is not one of %s", key,
		    qw_config_section_name(sec), v, list);
}

static int get_id(const struct qw_config *cfg, const struct qw_config_section *sec,
		  const char *key, const char **out, struct qw_config_error *err)
{
	int line, ret;

	if ((ret = qw_config_require(sec, key, out, err)))
		return ret;
	(void)qw_config_section_get(sec, key, &line);
	if (!qw_kmlink_id_valid(*out))
		return fail(err, cfg, line, QW_EINVAL,
			    "key '%s' in [%s]: '%.40s' is not a valid ID: 1-64 characters of A-Z a-z 0-9 . _ -",
			    key, qw_config_section_name(sec), *out);
	return 0;
}

static int load_node(const struct qw_config *cfg, struct qw_km_conf *c, struct qw_config_error *err)
{
	const struct qw_config_section *node = qw_config_find(cfg, "node", NULL);
	static const char *const syncs[] = { "full", "normal", NULL };
	static const int syncv[] = { QW_STORE_SYNC_FULL, QW_STORE_SYNC_NORMAL };
	static const char *const fmts[] = { "text", "json", NULL };
	static const int fmtv[] = { 0, 1 };
	static const char *const levels[] = { "debug", "info", "warn", "error", NULL };
	static const int levelv[] = { QW_LOG_DEBUG, QW_LOG_INFO, QW_LOG_WARN, QW_LOG_ERROR };
	int ret, v;
	uint64_t u;

	if (!node)
		return fail(err, cfg, 0, QW_EINVAL, "missing [node] section");
	if (qw_config_find(cfg, "node", node))
		return fail(err, cfg, qw_config_section_line(qw_config_find(cfg, "node", node)),
			    QW_EINVAL, "[node] repeated (first at line %d)",
			    qw_config_section_line(node));
	if ((ret = qw_config_check_keys(node, node_keys, err)) ||
	    (ret = get_id(cfg, node, "id", &c->id, err)) ||
	    (ret = qw_config_require(node, "data_dir", &c->data_dir, err)) ||
	    (ret = get_addr(cfg, node, "listen", &c->listen, err)))
		return ret;
	v = QW_LOG_INFO;
	if ((ret = get_choice(cfg, node, "log_level", levels, levelv, &v, err)))
		return ret;
	c->log_level = (enum qw_log_level)v;
	v = 0;
	if ((ret = get_choice(cfg, node, "log_format", fmts, fmtv, &v, err)))
		return ret;
	c->json_log = v;
	v = QW_STORE_SYNC_FULL;
	if ((ret = get_choice(cfg, node, "sync", syncs, syncv, &v, err)))
		return ret;
	c->sync = (enum qw_store_sync)v;
	c->cert = qw_config_section_get(node, "cert", NULL);
	c->key = qw_config_section_get(node, "key", NULL);
	c->ca = qw_config_section_get(node, "ca", NULL);
	c->master_key_file = qw_config_section_get(node, "master_key_file", NULL);
	c->status_file = qw_config_section_get(node, "status_file", NULL);
	u = 5000;
	if ((ret = qw_config_get_uint(node, "request_timeout_ms", 100, 600000, &u, err)))
		return ret;
	c->request_timeout_ms = (uint32_t)u;
	/* defaults of [routing], [relay], [policy] (docs/relay-routing.md) */
	c->routing.refresh_ms = 1000;
	c->routing.max_age_ms = 4000;
	c->routing.low_pool_bits = UINT64_C(1) << 16;
	c->routing.heartbeat_ms = 500;
	c->routing.dead_ms = 1500;
	c->relay.rekey_every = 256;
	c->relay.batch_target = 0.95;
	c->relay.batch_wait_ms = 20;
	c->relay.timeout_ms = c->request_timeout_ms;
	c->relay.key_lifetime_s = 3600;
	c->policy_default_allow = 1;
	return 0;
}

static int load_limits(const struct qw_config *cfg, struct qw_km_conf *c,
		       struct qw_config_error *err)
{
	const struct qw_config_section *s = qw_config_find(cfg, "limits", NULL);
	struct qw_km_limits *l = &c->limits;
	uint64_t v[6] = { 256, 128, 8192, 64, 100000, 0 };
	static const char *const names[] = { "key_size", "max_key_per_request", "max_key_size",
					     "min_key_size", "max_key_count", "max_sae_id_count" };
	static const uint64_t lo[] = { 8, 1, 8, 8, 1, 0 };
	static const uint64_t hi[] = { QW_STORE_KEY_MAX_BITS, QW_KMLINK_MAX_KEYS,
				       QW_STORE_KEY_MAX_BITS, QW_STORE_KEY_MAX_BITS,
				       UINT64_C(1) << 40, QW_STORE_SLAVES_MAX - 1 };
	int ret, line;

	if (s) {
		if ((ret = qw_config_check_keys(s, limits_keys, err)))
			return ret;
		for (int i = 0; i < 6; i++) {
			if ((ret = qw_config_get_uint(s, names[i], lo[i], hi[i], &v[i], err)))
				return ret;
			if (i != 1 && i != 4 && i != 5 && v[i] % 8) {
				(void)qw_config_section_get(s, names[i], &line);
				return fail(err, cfg, line, QW_ERANGE,
					    "key '%s' in [limits]: %llu is not a multiple of 8 bits",
					    names[i], (unsigned long long)v[i]);
			}
		}
	}
	l->key_size = (uint32_t)v[0];
	l->max_key_per_request = (uint32_t)v[1];
	l->max_key_size = (uint32_t)v[2];
	l->min_key_size = (uint32_t)v[3];
	l->max_key_count = v[4];
	l->max_sae_id_count = (uint32_t)v[5];
	if (l->min_key_size > l->max_key_size || l->key_size < l->min_key_size ||
	    l->key_size > l->max_key_size)
		return fail(err, cfg, s ? qw_config_section_line(s) : 0, QW_ERANGE,
			    "[limits] needs min_key_size <= key_size <= max_key_size (%u, %u, %u)",
			    l->min_key_size, l->key_size, l->max_key_size);
	return 0;
}

static int load_listener(const struct qw_config *cfg, struct qw_km_conf *c,
			 struct qw_config_error *err)
{
	const struct qw_config_section *s = qw_config_find(cfg, "etsi", NULL);
	int ret;

	if (s) {
		if ((ret = qw_config_check_keys(s, etsi_keys, err)) ||
		    (ret = qw_config_require(s, "listen", &c->etsi_listen, err)) ||
		    (ret = get_addr(cfg, s, "listen", &c->etsi_listen, err)))
			return ret;
		c->etsi_cert = qw_config_section_get(s, "cert", NULL);
		c->etsi_key = qw_config_section_get(s, "key", NULL);
		c->etsi_ca = qw_config_section_get(s, "ca", NULL);
	}
	if (!c->etsi_cert)
		c->etsi_cert = c->cert;
	if (!c->etsi_key)
		c->etsi_key = c->key;
	if (!c->etsi_ca)
		c->etsi_ca = c->ca;
	if (s) {
		if (!c->etsi_cert || !c->etsi_key || !c->etsi_ca)
			return fail(err, cfg, qw_config_section_line(s), QW_ENOTFOUND,
				    "[etsi] needs cert, key and ca (or [node] cert, key and ca)");
	}
	s = qw_config_find(cfg, "metrics", NULL);
	if (s) {
		if ((ret = qw_config_check_keys(s, metrics_keys, err)) ||
		    (ret = qw_config_require(s, "listen", &c->metrics_listen, err)) ||
		    (ret = get_addr(cfg, s, "listen", &c->metrics_listen, err)))
			return ret;
		if (!c->etsi_cert || !c->etsi_key || !c->etsi_ca)
			return fail(err, cfg, qw_config_section_line(s), QW_ENOTFOUND,
				    "[metrics] is served with mutual TLS: it needs [etsi] or [node] cert, key and ca");
	}
	return 0;
}

static int load_link(const struct qw_config *cfg, const struct qw_config_section *s,
		     struct qw_km_conf *c, struct qw_km_link_conf *l, struct qw_config_error *err)
{
	static const char *const srcs[] = { "sim", "etsi014", NULL };
	static const int srcv[] = { QW_KM_SOURCE_SIM, QW_KM_SOURCE_ETSI014 };
	static const char *const bnames[] = { "finite", "asymptotic", NULL };
	static const int bvals[] = { QW_LINK_BOUNDS_FINITE, QW_LINK_BOUNDS_ASYMPTOTIC };
	static const char *const ecn[] = { "cascade", "ldpc", NULL };
	static const int ecv[] = { QW_LINK_EC_CASCADE, QW_LINK_EC_LDPC };
	struct qw_optics_config *o = &l->optics;
	double eff = 0.1, misal, dark;
	int ret, v, line;
	uint64_t u;

	const char *allowed[80];
	size_t na = 0;

	for (size_t i = 0; link_keys[i]; i++)
		allowed[na++] = link_keys[i];
	for (size_t i = 0; qw_etsi_source_conf_keys[i] && na < 79; i++)
		allowed[na++] = qw_etsi_source_conf_keys[i];
	allowed[na] = NULL;
	l->line = qw_config_section_line(s);
	if ((ret = qw_config_check_keys(s, allowed, err)) ||
	    (ret = get_id(cfg, s, "peer", &l->peer, err)) ||
	    (ret = get_addr(cfg, s, "address", &l->address, err)))
		return ret;
	if (!strcmp(l->peer, c->id)) {
		(void)qw_config_section_get(s, "peer", &line);
		return fail(err, cfg, line, QW_EINVAL, "key 'peer' in [link]: a link to itself (%s)",
			    l->peer);
	}
	v = QW_KM_SOURCE_SIM;
	if ((ret = get_choice(cfg, s, "source", srcs, srcv, &v, err)))
		return ret;
	l->source = (enum qw_km_source)v;
	if (l->source == QW_KM_SOURCE_ETSI014) {
		int want = qw_km_is_leader(c->id, l->peer) ? QW_ETSI_SOURCE_MASTER : QW_ETSI_SOURCE_SLAVE;
		if ((ret = qw_etsi_source_conf_load(cfg, s, &l->etsi, err)))
			return ret;
		if ((int)l->etsi.role != want) {
			(void)qw_config_section_get(s, "kme_role", &line);
			return fail(err, cfg, line, QW_EINVAL,
				    "key 'kme_role' in [link]: must be %s here (%s sorts %s %s: the first one pulls keys as master)",
				    want == QW_ETSI_SOURCE_MASTER ? "master" : "slave", c->id,
				    want == QW_ETSI_SOURCE_MASTER ? "before" : "after", l->peer);
		}
		/* block ids keep growing across restarts (the pool refuses old
		 * ones): seconds since 1970 in the high bits */
		l->etsi.first_block_id = (uint64_t)time(NULL) << 20;
		if (qw_km_is_leader(c->id, l->peer) && !l->address)
			return fail(err, cfg, l->line, QW_ENOTFOUND,
				    "[link] to %s needs key 'address': %s sorts first, so it dials the peer",
				    l->peer, c->id);
		return 0;
	}
	qw_optics_config_default(o);
	/* [MQZL] Table I splits eta_Bob = eta_optics x eta_detector; the
	 * config speaks of the detector efficiency and keeps GYS's
	 * eta_optics = 0.045 / 0.1 = 0.45 (docs/operations.md). */
	eff = o->link.eta_bob / 0.45;
	dark = o->link.y0;
	misal = o->link.e_det;
	if ((ret = qw_config_get_double(s, "distance_km", 0, 1000, &o->distance_km, err)) ||
	    (ret = qw_config_get_double(s, "attenuation_db_per_km", 0, 10, &o->link.alpha_db_per_km, err)) ||
	    (ret = qw_config_get_double(s, "detector_efficiency", 1e-6, 1, &eff, err)) ||
	    (ret = qw_config_get_double(s, "dark_count", 0, 0.1, &dark, err)) ||
	    (ret = qw_config_get_double(s, "misalignment", 0, 0.5, &misal, err)) ||
	    (ret = qw_config_get_double(s, "pulse_rate_hz", 1, 1e11, &o->pulse_rate_hz, err)) ||
	    (ret = qw_config_get_double(s, "mu", 0, 10, &o->intensity[QW_CLASS_SIGNAL], err)) ||
	    (ret = qw_config_get_double(s, "nu", 0, 10, &o->intensity[QW_CLASS_DECOY], err)) ||
	    (ret = qw_config_get_double(s, "vacuum", 0, 10, &o->intensity[QW_CLASS_VACUUM], err)) ||
	    (ret = qw_config_get_double(s, "p_signal", 0, 1, &o->p_class[QW_CLASS_SIGNAL], err)) ||
	    (ret = qw_config_get_double(s, "p_decoy", 0, 1, &o->p_class[QW_CLASS_DECOY], err)) ||
	    (ret = qw_config_get_double(s, "p_vacuum", 0, 1, &o->p_class[QW_CLASS_VACUUM], err)) ||
	    (ret = qw_config_get_double(s, "eve_fraction", 0, 1, &o->eve_fraction, err)) ||
	    (ret = qw_config_get_double(s, "afterpulse", 0, 0.5, &o->afterpulse, err)))
		return ret;
	o->link.eta_bob = 0.45 * eff;
	o->link.y0 = dark;
	o->link.e_det = misal;
	if (!(o->intensity[0] > o->intensity[1] && o->intensity[1] > o->intensity[2]) ||
	    qw_optics_config_check(o))
		return fail(err, cfg, l->line, QW_EINVAL,
			    "[link] to %s: optics inconsistent (need mu > nu > vacuum and p_signal + p_decoy + p_vacuum = 1)",
			    l->peer);
	l->block_bits = 2e5;
	if ((ret = qw_config_get_double(s, "block_bits", 1e4, 1e8, &l->block_bits, err)))
		return ret;
	u = 4;
	if ((ret = qw_config_get_uint(s, "blocks_per_session", 1, 1024, &u, err)))
		return ret;
	l->blocks_per_session = (uint32_t)u;
	v = QW_LINK_BOUNDS_FINITE;
	if ((ret = get_choice(cfg, s, "bounds", bnames, bvals, &v, err)))
		return ret;
	l->bounds = (enum qw_link_bounds)v;
	v = QW_LINK_EC_CASCADE;
	if ((ret = get_choice(cfg, s, "ec", ecn, ecv, &v, err)))
		return ret;
	l->ec = (enum qw_link_ec)v;
	l->qber_threshold = 0.11;
	l->pace = 1.0;
	if ((ret = qw_config_get_double(s, "qber_threshold", 0.01, 0.5, &l->qber_threshold, err)) ||
	    (ret = qw_config_get_double(s, "pace", 0, 1000, &l->pace, err)))
		return ret;
	l->psk_file = qw_config_section_get(s, "psk_file", NULL);
	if (!l->psk_file)
		return fail(err, cfg, l->line, QW_ENOTFOUND,
			    "[link] needs key 'psk_file' (the pre-shared authentication key of the link)");
	if (qw_km_is_leader(c->id, l->peer) && !l->address)
		return fail(err, cfg, l->line, QW_ENOTFOUND,
			    "[link] to %s needs key 'address': %s sorts first, so it dials the peer",
			    l->peer, c->id);
	return 0;
}

/* The only section a name may repeat in is [link]/[sae]; these three
 * appear at most once. */
static const struct qw_config_section *single(const struct qw_config *cfg, const char *name,
					      int *ret, struct qw_config_error *err)
{
	const struct qw_config_section *s = qw_config_find(cfg, name, NULL), *again;

	*ret = 0;
	if (s && (again = qw_config_find(cfg, name, s)))
		*ret = fail(err, cfg, qw_config_section_line(again), QW_EINVAL,
			    "[%s] repeated (first at line %d)", name, qw_config_section_line(s));
	return s;
}

/* [routing] (docs/relay-routing.md, routing.h struct qw_route_opts). */
static int load_routing(const struct qw_config *cfg, struct qw_km_conf *c,
			struct qw_config_error *err)
{
	const struct qw_config_section *s;
	uint64_t v[5];
	int ret, line;

	s = single(cfg, "routing", &ret, err);
	if (ret || !s)
		return ret;
	v[0] = c->routing.refresh_ms;
	v[1] = c->routing.max_age_ms;
	v[2] = c->routing.low_pool_bits;
	v[3] = c->routing.heartbeat_ms;
	v[4] = c->routing.dead_ms;
	if ((ret = qw_config_check_keys(s, routing_keys, err)) ||
	    (ret = qw_config_get_uint(s, "refresh_ms", 50, 3600000, &v[0], err)) ||
	    (ret = qw_config_get_uint(s, "max_age_ms", 100, 14400000, &v[1], err)) ||
	    (ret = qw_config_get_uint(s, "low_pool_bits", 0, UINT64_C(1) << 62, &v[2], err)) ||
	    (ret = qw_config_get_uint(s, "heartbeat_ms", 0, 600000, &v[3], err)) ||
	    (ret = qw_config_get_uint(s, "dead_ms", 0, 3600000, &v[4], err)))
		return ret;
	/* an LSA must be refreshed before it ages out: at least two refreshes
	 * per max_age, so one lost copy does not make a live node vanish */
	if (v[1] < 2 * v[0]) {
		(void)qw_config_section_get(s, "max_age_ms", &line);
		return fail(err, cfg, line ? line : qw_config_section_line(s), QW_ERANGE,
			    "[routing] needs max_age_ms >= 2 x refresh_ms (%llu, %llu)",
			    (unsigned long long)v[1], (unsigned long long)v[0]);
	}
	/* the link is declared dead after several missed heartbeats */
	if (v[3] && v[4] && v[4] < 2 * v[3]) {
		(void)qw_config_section_get(s, "dead_ms", &line);
		return fail(err, cfg, line ? line : qw_config_section_line(s), QW_ERANGE,
			    "[routing] needs dead_ms >= 2 x heartbeat_ms (%llu, %llu), or 0 (no timeout)",
			    (unsigned long long)v[4], (unsigned long long)v[3]);
	}
	if (!v[3] && v[4]) {
		(void)qw_config_section_get(s, "dead_ms", &line);
		return fail(err, cfg, line ? line : qw_config_section_line(s), QW_ERANGE,
			    "[routing] dead_ms without heartbeat_ms would drop idle links: set heartbeat_ms or dead_ms = 0");
	}
	c->routing.refresh_ms = (uint32_t)v[0];
	c->routing.max_age_ms = (uint32_t)v[1];
	c->routing.low_pool_bits = v[2];
	c->routing.heartbeat_ms = (uint32_t)v[3];
	c->routing.dead_ms = (uint32_t)v[4];
	return 0;
}

/* [relay] (relay.h). */
static int load_relay(const struct qw_config *cfg, struct qw_km_conf *c,
		      struct qw_config_error *err)
{
	const struct qw_config_section *s;
	uint64_t rekey = c->relay.rekey_every, wait = c->relay.batch_wait_ms,
		 tmo = c->relay.timeout_ms, life = c->relay.key_lifetime_s;
	double target = c->relay.batch_target;
	int ret, line;

	s = single(cfg, "relay", &ret, err);
	if (ret || !s)
		return ret;
	if ((ret = qw_config_check_keys(s, relay_keys, err)) ||
	    (ret = qw_config_get_uint(s, "rekey_every", 1, 1u << 20, &rekey, err)) ||
	    (ret = qw_config_get_double(s, "batch_target", 0, 0.999, &target, err)) ||
	    (ret = qw_config_get_uint(s, "batch_wait_ms", 0, 10000, &wait, err)) ||
	    (ret = qw_config_get_uint(s, "timeout_ms", 100, 600000, &tmo, err)) ||
	    (ret = qw_config_get_uint(s, "key_lifetime_s", 1, 31536000, &life, err)))
		return ret;
	/* the origin's own copy carries the same expiry: it must outlive the
	 * relay, or the origin could lose its keys before the ACK */
	if (life * 1000 <= tmo) {
		(void)qw_config_section_get(s, "key_lifetime_s", &line);
		return fail(err, cfg, line ? line : qw_config_section_line(s), QW_ERANGE,
			    "[relay] needs key_lifetime_s x 1000 > timeout_ms (%llu s, %llu ms)",
			    (unsigned long long)life, (unsigned long long)tmo);
	}
	c->relay.rekey_every = (uint32_t)rekey;
	c->relay.batch_target = target;
	c->relay.batch_wait_ms = (uint32_t)wait;
	c->relay.timeout_ms = (uint32_t)tmo;
	c->relay.key_lifetime_s = (uint32_t)life;
	return 0;
}

/* [policy]: default = allow|deny and any number of rule = ... lines, kept
 * in file order (first match wins, routing.h). The only key of a node
 * configuration that may repeat. */
static int load_policy(const struct qw_config *cfg, struct qw_km_conf *c,
		       struct qw_config_error *err)
{
	const struct qw_config_section *s;
	struct qw_route_policy *check = NULL;
	size_t nk, nr = 0;
	int ret, def_line = 0;

	s = single(cfg, "policy", &ret, err);
	if (ret || !s)
		return ret;
	nk = qw_config_section_nkeys(s);
	c->policy_rules = qw_calloc(nk ? nk : 1, sizeof(*c->policy_rules));
	c->policy_rule_lines = qw_calloc(nk ? nk : 1, sizeof(*c->policy_rule_lines));
	check = qw_route_policy_new(1);
	if (!c->policy_rules || !c->policy_rule_lines || !check) {
		ret = QW_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nk; i++) {
		const char *k, *v;
		int line;

		qw_config_section_entry(s, i, &k, &v, &line);
		if (!strcmp(k, "default")) {
			if (def_line) {
				ret = fail(err, cfg, line, QW_EINVAL,
					   "key 'default' in [policy] repeated (first at line %d)",
					   def_line);
				goto out;
			}
			def_line = line;
			if (!strcmp(v, "allow") || !strcmp(v, "deny")) {
				c->policy_default_allow = !strcmp(v, "allow");
				continue;
			}
			ret = fail(err, cfg, line, QW_EINVAL,
				   "key 'default' in [policy]: '%.40s' is not one of allow, deny", v);
			goto out;
		}
		if (strcmp(k, "rule")) {
			ret = fail(err, cfg, line, QW_EINVAL,
				   "unknown key '%.40s' in [policy] (default, rule)", k);
			goto out;
		}
		ret = qw_route_policy_add_text(check, v);
		if (ret) {
			if (ret == QW_EPARSE)
				fail(err, cfg, line, QW_EPARSE,
				     "key 'rule' in [policy]: '%.60s' is not a rule: expected allow|deny <SAE pattern> ->|<-> <SAE pattern> (pattern: SAE ID characters and *)",
				     v);
			goto out;
		}
		c->policy_rules[nr] = v;
		c->policy_rule_lines[nr] = line;
		nr++;
	}
	c->npolicy_rules = nr;
	ret = 0;
out:
	qw_route_policy_free(check);
	return ret;
}

int qw_km_is_leader(const char *self, const char *peer)
{
	return strcmp(self, peer) < 0;
}

int qw_km_conf_load(const struct qw_config *cfg, struct qw_km_conf *c, struct qw_config_error *err)
{
	struct qw_config_error dummy;
	const struct qw_config_section *s;
	size_t nl = 0, ns = 0;
	int ret;

	QW_REQUIRE(cfg != NULL && c != NULL);
	if (!err)
		err = &dummy;
	memset(c, 0, sizeof(*c));
	if ((ret = qw_config_check_sections(cfg, sections, err)) ||
	    (ret = load_node(cfg, c, err)) || (ret = load_limits(cfg, c, err)) ||
	    (ret = load_listener(cfg, c, err)) || (ret = load_routing(cfg, c, err)) ||
	    (ret = load_relay(cfg, c, err)) || (ret = load_policy(cfg, c, err)))
		return ret;
	for (s = qw_config_find(cfg, "link", NULL); s; s = qw_config_find(cfg, "link", s))
		nl++;
	for (s = qw_config_find(cfg, "sae", NULL); s; s = qw_config_find(cfg, "sae", s))
		ns++;
	c->links = qw_calloc(nl ? nl : 1, sizeof(*c->links));
	c->saes = qw_calloc(ns ? ns : 1, sizeof(*c->saes));
	if (!c->links || !c->saes)
		return QW_ENOMEM;
	if (nl && (!c->listen || !c->cert || !c->key || !c->ca))
		return fail(err, cfg, qw_config_section_line(qw_config_find(cfg, "node", NULL)),
			    QW_ENOTFOUND,
			    "[node] needs 'listen', 'cert', 'key' and 'ca' when the node has links");
	for (s = qw_config_find(cfg, "link", NULL); s; s = qw_config_find(cfg, "link", s)) {
		struct qw_km_link_conf *l = &c->links[c->nlinks];
		if ((ret = load_link(cfg, s, c, l, err)))
			return ret;
		for (size_t i = 0; i < c->nlinks; i++)
			if (!strcmp(c->links[i].peer, l->peer))
				return fail(err, cfg, l->line, QW_EEXIST,
					    "second [link] to %s (first at line %d)", l->peer,
					    c->links[i].line);
		c->nlinks++;
	}
	for (s = qw_config_find(cfg, "sae", NULL); s; s = qw_config_find(cfg, "sae", s)) {
		struct qw_km_sae_conf *a = &c->saes[c->nsaes];
		int known;

		a->line = qw_config_section_line(s);
		if ((ret = qw_config_check_keys(s, sae_keys, err)) ||
		    (ret = get_id(cfg, s, "id", &a->id, err)) ||
		    (ret = get_id(cfg, s, "node", &a->node, err)))
			return ret;
		for (size_t i = 0; i < c->nsaes; i++)
			if (!strcmp(c->saes[i].id, a->id))
				return fail(err, cfg, a->line, QW_EEXIST,
					    "SAE %s declared twice (first at line %d)", a->id,
					    c->saes[i].line);
		/* an SAE at a node further away is reached by key relay over
		 * the links (docs/relay-routing.md); a node without links can
		 * serve only its own SAEs */
		known = !strcmp(a->node, c->id) || c->nlinks > 0;
		if (!known)
			return fail(err, cfg, a->line, QW_ENOTFOUND,
				    "[sae] %s: node %s is neither this node nor reachable (this node has no [link] to relay over)",
				    a->id, a->node);
		c->nsaes++;
	}
	return 0;
}

void qw_km_conf_clear(struct qw_km_conf *c)
{
	if (!c)
		return;
	free(c->links);
	free(c->saes);
	free(c->policy_rules);
	free(c->policy_rule_lines);
	memset(c, 0, sizeof(*c));
}
