/* HTTPS server with mutual TLS on a libevent loop: the transport of the
 * ETSI GS QKD 014 API, /metrics and the Key Service Center API.
 *
 * TLS 1.2 or 1.3 (1.3 preferred), the client MUST present a certificate
 * that verifies against the CA file (SSL_VERIFY_PEER |
 * SSL_VERIFY_FAIL_IF_NO_PEER_CERT): a client without one, or with one from
 * another CA, is refused in the handshake and never reaches a handler. The
 * identity its certificate names (pki.h: CN + SAN URN) is resolved once per
 * connection and handed to every handler.
 *
 * HTTP/1.1 with keep-alive; bodies above max_body_bytes get 413 and the
 * connection is closed; idle/slow connections time out. Routes map a method
 * set and a path prefix to a handler (longest prefix wins): no route ->
 * 404, a method outside the set -> 405 with Allow. Both carry a JSON body
 * {"message": ...}.
 *
 * Threading: everything runs on the event_base's loop thread; handlers must
 * not block. A handler may reply at once or later (after an asynchronous
 * operation) with exactly one qw_https_reply*() call, which releases the
 * request. If the client has gone meanwhile the reply is dropped silently.
 *
 * The process must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)): OpenSSL
 * writes to the socket with write(2), so a client that closes the
 * connection while a reply is being sent would otherwise kill it. */
#ifndef QWAVE_HTTPS_H
#define QWAVE_HTTPS_H

#include <stddef.h>
#include <stdint.h>

#include "qwave/error.h"
#include "qwave/pki.h"

struct event_base;
struct qw_https_server;
struct qw_https_req;

enum qw_http_method {
	QW_HTTP_GET = 1 << 0,
	QW_HTTP_POST = 1 << 1,
	QW_HTTP_PUT = 1 << 2,
	QW_HTTP_DELETE = 1 << 3,
	QW_HTTP_HEAD = 1 << 4,
	QW_HTTP_OPTIONS = 1 << 5,
	QW_HTTP_PATCH = 1 << 6,
	QW_HTTP_OTHER = 1 << 7, /* TRACE, CONNECT */
};
#define QW_HTTP_ANY 0xffu

#define QW_HTTPS_DEFAULT_MAX_BODY (64u * 1024u)
#define QW_HTTPS_DEFAULT_TIMEOUT_S 30u
#define QW_HTTPS_MAX_HEADERS (16u * 1024u)

/* One access-log record, passed to opts.access_log after each reply.
 * Strings are borrowed for the duration of the call. */
struct qw_https_access {
	const char *method;
	const char *path;     /* without the query */
	const char *peer_id;  /* "-" when the certificate named no identity */
	enum qw_pki_kind peer_kind; /* 0 when none */
	int status;
	const char *note;     /* handler's qw_https_req_note(), "" if none */
	double ms;            /* dispatch to reply */
};

struct qw_https_opts {
	const char *addr;      /* NULL: "127.0.0.1" */
	uint16_t port;         /* 0: the kernel chooses (qw_https_server_port) */
	const char *cert_file; /* server certificate chain, PEM */
	const char *key_file;  /* its private key, PEM */
	const char *ca_file;   /* CA(s) client certificates must chain to */
	size_t max_body_bytes; /* 0: QW_HTTPS_DEFAULT_MAX_BODY */
	unsigned timeout_s;    /* read/write/idle; 0: QW_HTTPS_DEFAULT_TIMEOUT_S */
	int tls13_only;        /* refuse TLS 1.2 */
	/* Optional; called on the loop thread. The library never logs itself. */
	void (*access_log)(void *arg, const struct qw_https_access *a);
	void *access_log_arg;
};

typedef void (*qw_https_handler)(void *arg, struct qw_https_req *req);

/* Create the server on base and start listening. NULL and *err (may be
 * NULL): QW_EIO (files unreadable, cannot bind), QW_ECRYPTO (key does not
 * match the certificate, bad CA file), QW_ENOMEM, QW_EINVAL. */
struct qw_https_server *qw_https_server_new(struct event_base *base,
					    const struct qw_https_opts *o, int *err);
/* Close the listener and every connection. Call it only when no handler
 * still holds a request (every request has been replied to). Connections
 * finish closing in deferred callbacks: run the loop once more
 * (event_base_loop(base, EVLOOP_NONBLOCK)) before event_base_free, or
 * their memory is lost. NULL ok. */
void qw_https_server_free(struct qw_https_server *s);
/* The bound TCP port. */
uint16_t qw_https_server_port(const struct qw_https_server *s);
/* Requests dispatched but not yet replied to. */
size_t qw_https_server_pending(const struct qw_https_server *s);

/* Route requests whose path starts with prefix (compared raw, before any
 * percent-decoding) to h(arg, req) when the method is in methods (a mask of
 * enum qw_http_method). prefix is copied. 0, QW_EINVAL, QW_ENOMEM. */
QW_WUR int qw_https_route(struct qw_https_server *s, unsigned methods, const char *prefix,
			  qw_https_handler h, void *arg);

/* ---- inside a handler (until the reply) ---- */

enum qw_http_method qw_https_req_method(const struct qw_https_req *r);
const char *qw_https_req_method_name(const struct qw_https_req *r);
/* Path as received, percent-encoded; never NULL. */
const char *qw_https_req_path(const struct qw_https_req *r);
/* Query string as received (without '?'), NULL when the URI had none. */
const char *qw_https_req_query(const struct qw_https_req *r);
/* The body: pointer valid during the handler call only; *len 0 if none. */
const uint8_t *qw_https_req_body(struct qw_https_req *r, size_t *len);
/* Identity of the verified client certificate, or NULL (and kind 0) when
 * the certificate chains to the CA but names no qwave identity. */
const char *qw_https_req_peer_id(const struct qw_https_req *r);
enum qw_pki_kind qw_https_req_peer_kind(const struct qw_https_req *r);
/* Short text for the access log (e.g. "keys=3"); never key material. */
void qw_https_req_note(struct qw_https_req *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Extra response header (e.g. Allow). */
void qw_https_req_add_header(struct qw_https_req *r, const char *name, const char *value);

/* Reply with status and a body, copied; len 0 sends an empty body.
 * Content-Type is application/json unless the handler set another with
 * qw_https_req_add_header(). Releases r. */
void qw_https_reply(struct qw_https_req *r, int status, const char *body, size_t len);
/* As qw_https_reply, for a body holding secrets: ownership of body (a
 * malloc()ed buffer of len bytes) passes to the server, which sends it
 * without copying and wipes and frees it once written to the TLS layer. */
void qw_https_reply_secret(struct qw_https_req *r, int status, char *body, size_t len);
/* {"message": message} with status. */
void qw_https_reply_error(struct qw_https_req *r, int status, const char *message);

#endif
