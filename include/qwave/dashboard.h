/* The web dashboard of the QKD network manager (SYSTEM.md section 5;
 * docs/dashboard.md): one page, served by the manager's HTTPS listener,
 * drawing the network as a graph with live link states, QBER, key rates,
 * pool levels and alarms. The page (src/api/dashboard/: index.html,
 * app.js, style.css, no framework, no external fetches) is embedded into
 * the library at build time (cmake/embed.cmake) and polls GET /api/network
 * every second, redrawing without a reload.
 *
 * The node supplies the network state through a callback filling a
 * struct qw_dashboard_state; this module turns it into the JSON of
 * docs/dashboard.md ("the JSON contract"). */
#ifndef QWAVE_DASHBOARD_H
#define QWAVE_DASHBOARD_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"

struct qw_https_server;

/* A pool level the node does not know (e.g. the far end's before its
 * first LSA): JSON null. */
#define QW_DASHBOARD_UNKNOWN UINT64_MAX
/* Headers of a reply (Content-Type first). */
#define QW_DASHBOARD_MAX_HEADERS 6

/* One embedded file of the page. */
struct qw_dashboard_asset {
	const char *name;          /* file name in src/api/dashboard/ */
	const char *content_type;  /* e.g. "text/html; charset=utf-8" */
	const unsigned char *data; /* NUL-terminated after len bytes */
	size_t len;
};

enum qw_dashboard_severity {
	QW_DASHBOARD_INFO = 0,     /* "info" */
	QW_DASHBOARD_WARNING = 1,  /* "warning" */
	QW_DASHBOARD_CRITICAL = 2, /* "critical" */
};

/* An active (or recent) alarm. kind is a short word, one of those listed in
 * docs/dashboard.md ("link_down", "qber", "mac_failure", "pool_empty",
 * "node_down", "relay_failed"), not checked here. An alarm names a node, a
 * link (link_a and link_b, either order), or both. */
struct qw_dashboard_alarm {
	int64_t ts_ms;             /* Unix time, ms, when raised */
	enum qw_dashboard_severity severity;
	const char *kind;
	const char *node;          /* or NULL */
	const char *link_a, *link_b; /* both or neither NULL */
	const char *message;       /* human text with units, or NULL */
};

struct qw_dashboard_node {
	const char *id;
	int up;                    /* its LSA is held (or: it is this node) */
};

struct qw_dashboard_link {
	const char *a, *b;         /* node IDs, both in nodes[] */
	double length_km;          /* < 0 or NaN: unknown (null) */
	int up;                    /* KM link connected and resynchronised */
	double qber;               /* fraction 0..1 of the last session; NaN: unknown */
	int qber_alarm;            /* QBER above the link's threshold */
	double key_rate_bps;       /* secret key rate, bit/s; NaN: unknown */
	uint64_t pool_bits_a;      /* unconsumed link-key bits at a, or QW_DASHBOARD_UNKNOWN */
	uint64_t pool_bits_b;      /* same at b */
};

/* Key relay counters of the node serving the page (relay-routing.md). */
struct qw_dashboard_relays {
	uint64_t sent, forwarded, received, failed;
	uint64_t auth_failures;    /* hops refused for a bad MAC: tampering */
	uint64_t bits_consumed;    /* link-key bits spent on relays */
};

/* The network as the node sees it. Every pointer is borrowed: it must stay
 * valid until qw_dashboard_json() returns, which the module calls on the
 * loop thread right after the callback (so pointers into the node's own
 * loop-thread state are fine). */
struct qw_dashboard_state {
	const char *self;          /* ID of the node serving the page, or NULL */
	int64_t generated_at_ms;   /* Unix time, ms; 0: now */
	const struct qw_dashboard_node *nodes;
	size_t nnodes;
	const struct qw_dashboard_link *links;
	size_t nlinks;
	const struct qw_dashboard_alarm *alarms;
	size_t nalarms;
	struct qw_dashboard_relays relays;
};

/* Fill *st (zeroed by the caller) with the current state. 0, or a QW_E*
 * code: the request gets 503 {"message": "network state unavailable"}.
 * Called on the server's loop thread; must not block. */
typedef int (*qw_dashboard_state_fn)(void *arg, struct qw_dashboard_state *st);

/* The docs/dashboard.md JSON of st (compact, UTF-8) in *out (malloc()ed,
 * NUL-terminated; free() it) and its length in *len. Per-node and per-link
 * "alarms" arrays are derived from st->alarms (the kinds of the alarms
 * naming that node without a link, or that link). 0, QW_EINVAL (a NULL ID
 * or kind, a link end or alarm node not in nodes[], a link naming one end
 * only, duplicate node IDs, a bad severity, qber outside 0..1), QW_ENOMEM. */
QW_WUR int qw_dashboard_json(const struct qw_dashboard_state *st, char **out, size_t *len);

/* The embedded files, in a fixed order; *n gets their count. */
const struct qw_dashboard_asset *qw_dashboard_assets(size_t *n);
/* The asset a GET of path serves: "/", "/dashboard", "/dashboard/" and
 * "/dashboard/index.html" give index.html, "/dashboard/<name>" the file
 * name. NULL for anything else. */
const struct qw_dashboard_asset *qw_dashboard_asset(const char *path);

/* A reply, independent of the transport: the HTTPS routes below and any
 * other server (the integration test's plain-HTTP shim) answer with it. */
struct qw_dashboard_reply {
	int status;
	const char *headers[QW_DASHBOARD_MAX_HEADERS][2]; /* name, value */
	size_t nheaders;
	const char *body;
	size_t len;
	char *owned;               /* what body points into when allocated */
};

/* Answer a GET of path (without the query): an asset, the state JSON of
 * fn(arg) for "/api/network", or a JSON 404/503 {"message": ...}. Always
 * fills *r; release with qw_dashboard_reply_clear. */
void qw_dashboard_handle(const char *path, qw_dashboard_state_fn fn, void *arg,
			 struct qw_dashboard_reply *r);
/* Free what qw_dashboard_handle allocated. NULL ok. */
void qw_dashboard_reply_clear(struct qw_dashboard_reply *r);

struct qw_dashboard;

/* Serve the dashboard on srv: GET "/" (exactly; other paths under "/" not
 * routed elsewhere get the JSON 404), GET "/dashboard..." (the page and its
 * files) and GET "/api/network" (fn's state as JSON). The listener keeps
 * its mutual TLS: only clients with a certificate of the network CA see
 * the page (docs/dashboard.md, "Access"). fn and arg are borrowed and must
 * outlive the returned object, which must outlive srv's requests: free srv
 * first. NULL and *err (may be NULL): QW_EINVAL (srv or fn NULL),
 * QW_ENOMEM; srv may then hold some of the routes with a dangling argument,
 * so free it without running its loop again (startup failed anyway). */
struct qw_dashboard *qw_dashboard_new(struct qw_https_server *srv, qw_dashboard_state_fn fn,
				      void *arg, int *err);
/* NULL ok. */
void qw_dashboard_free(struct qw_dashboard *d);

#endif
