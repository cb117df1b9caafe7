/* HTTPS with mutual TLS on libevent's evhttp, each connection a
 * bufferevent_openssl (evhttp_set_bevcb). The peer's identity is resolved
 * from its certificate once per connection and kept in the SSL object's
 * ex_data, so keep-alive requests do not parse X.509 again. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "qwave/https.h"
#include "qwave/secmem.h"

#define NOTE_BYTES 96
/* Responses up to this size leave as one TLS write (see coalesce). */
#define QW_HTTPS_COALESCE_MAX (64u * 1024u)

struct route {
	char *prefix;
	size_t len;
	unsigned methods;
	qw_https_handler h;
	void *arg;
};

struct qw_https_server {
	struct event_base *base;
	struct evhttp *http;
	SSL_CTX *ssl;
	struct route *routes;
	size_t n_routes;
	uint16_t port;
	size_t pending;
	void (*access_log)(void *arg, const struct qw_https_access *a);
	void *access_log_arg;
};

/* Cached per connection (SSL ex_data): the certificate's identity. */
struct peer {
	enum qw_pki_kind kind;
	char id[QW_PKI_ID_MAX + 1];
};

struct qw_https_req {
	struct evhttp_request *ev;
	struct qw_https_server *srv;
	enum qw_http_method method;
	const char *path, *query;
	struct peer peer;
	char note[NOTE_BYTES];
	double t0;
};

static int peer_idx = -1;
static pthread_once_t peer_once = PTHREAD_ONCE_INIT;

static void peer_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

static void peer_index_init(void)
{
	peer_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, peer_free);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static struct bufferevent *bev_new(struct event_base *base, void *arg)
{
	struct qw_https_server *s = arg;
	struct bufferevent *bev;
	SSL *ssl = SSL_new(s->ssl);

	if (!ssl)
		return NULL;
	bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
					     BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!bev) {
		SSL_free(ssl);
		return NULL;
	}
	/* Clients that drop the TCP connection without close_notify are common
	 * (curl, load balancers); that is not an attack on a request/response
	 * protocol with Content-Length. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

/* The identity of the connection's verified peer certificate. */
static void peer_of(struct evhttp_request *ev, struct peer *out)
{
	struct evhttp_connection *con = evhttp_request_get_connection(ev);
	struct bufferevent *bev = con ? evhttp_connection_get_bufferevent(con) : NULL;
	SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
	struct peer *p;
	X509 *cert;

	memset(out, 0, sizeof(*out));
	if (!ssl)
		return;
	p = SSL_get_ex_data(ssl, peer_idx);
	if (!p) {
		if (!(p = calloc(1, sizeof(*p))))
			return;
		/* verify_result is checked although VERIFY_FAIL_IF_NO_PEER_CERT
		 * already refused unverified peers: never trust an ID that did
		 * not chain to the CA. */
		cert = SSL_get0_peer_certificate(ssl);
		if (!cert || SSL_get_verify_result(ssl) != X509_V_OK ||
		    qw_pki_cert_identity(cert, &p->kind, p->id)) {
			p->kind = 0;
			p->id[0] = '\0';
		}
		if (!SSL_set_ex_data(ssl, peer_idx, p)) {
			*out = *p;
			free(p);
			return;
		}
	}
	*out = *p;
}

static enum qw_http_method method_of(enum evhttp_cmd_type t)
{
	switch (t) {
	case EVHTTP_REQ_GET: return QW_HTTP_GET;
	case EVHTTP_REQ_POST: return QW_HTTP_POST;
	case EVHTTP_REQ_PUT: return QW_HTTP_PUT;
	case EVHTTP_REQ_DELETE: return QW_HTTP_DELETE;
	case EVHTTP_REQ_HEAD: return QW_HTTP_HEAD;
	case EVHTTP_REQ_OPTIONS: return QW_HTTP_OPTIONS;
	case EVHTTP_REQ_PATCH: return QW_HTTP_PATCH;
	default: return QW_HTTP_OTHER;
	}
}

static const char *method_name(enum evhttp_cmd_type t)
{
	switch (t) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_HEAD: return "HEAD";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	case EVHTTP_REQ_PATCH: return "PATCH";
	case EVHTTP_REQ_TRACE: return "TRACE";
	case EVHTTP_REQ_CONNECT: return "CONNECT";
	default: return "?";
	}
}

static void allow_header(struct qw_https_req *r, unsigned methods)
{
	static const char *const names[] = { "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH" };
	char allow[64] = "";

	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!(methods & (1u << i)))
			continue;
		if (allow[0])
			strcat(allow, ", ");
		strcat(allow, names[i]);
	}
	qw_https_req_add_header(r, "Allow", allow);
}

static void dispatch(struct evhttp_request *ev, void *arg)
{
	struct qw_https_server *s = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ev);
	const struct route *best = NULL;
	struct qw_https_req *r;
	struct evbuffer *in;

	r = calloc(1, sizeof(*r));
	if (!r) {
		evhttp_send_error(ev, 503, NULL);
		return;
	}
	r->ev = ev;
	r->srv = s;
	r->t0 = now_ms();
	r->method = method_of(evhttp_request_get_command(ev));
	r->path = uri ? evhttp_uri_get_path(uri) : NULL;
	r->query = uri ? evhttp_uri_get_query(uri) : NULL;
	if (!r->path || !*r->path)
		r->path = "/";
	peer_of(ev, &r->peer);
	s->pending++;
	for (size_t i = 0; i < s->n_routes; i++) {
		const struct route *rt = &s->routes[i];

		if (!strncmp(r->path, rt->prefix, rt->len) && (!best || rt->len > best->len))
			best = rt;
	}
	if (!best) {
		qw_https_reply_error(r, 404, "no such resource");
		return;
	}
	if (!(best->methods & r->method)) {
		allow_header(r, best->methods);
		qw_https_reply_error(r, 405, "method not allowed");
		return;
	}
	/* A chained body is copied into one block here, where running out of
	 * memory can still be answered: a handler must never see a NULL body
	 * (or an empty one, which would read as a default request). */
	in = evhttp_request_get_input_buffer(ev);
	if (in && evbuffer_get_length(in) && !evbuffer_pullup(in, -1)) {
		qw_https_reply_error(r, 503, "out of memory");
		return;
	}
	best->h(best->arg, r);
}

static int load_ctx(struct qw_https_server *s, const struct qw_https_opts *o)
{
	STACK_OF(X509_NAME) *names;
	static const unsigned char sid[] = "qwave-https";

	if (!(s->ssl = SSL_CTX_new(TLS_server_method())))
		return QW_ENOMEM;
	if (!SSL_CTX_set_min_proto_version(s->ssl, o->tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION))
		return QW_ECRYPTO;
	/* TLS 1.2: forward-secret AEAD suites only (TLS 1.3's are all AEAD). */
	if (!SSL_CTX_set_cipher_list(s->ssl, "ECDHE+AESGCM:ECDHE+CHACHA20"))
		return QW_ECRYPTO;
	SSL_CTX_set_options(s->ssl, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
					    SSL_OP_NO_COMPRESSION);
	/* coalesce() may move bytes a pending SSL_write retry points at. */
	SSL_CTX_set_mode(s->ssl, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (SSL_CTX_use_certificate_chain_file(s->ssl, o->cert_file) != 1 ||
	    SSL_CTX_use_PrivateKey_file(s->ssl, o->key_file, SSL_FILETYPE_PEM) != 1)
		return QW_EIO;
	if (SSL_CTX_check_private_key(s->ssl) != 1)
		return QW_ECRYPTO;
	if (SSL_CTX_load_verify_locations(s->ssl, o->ca_file, NULL) != 1)
		return QW_EIO;
	/* Tell clients which CA to pick a certificate for. */
	if (!(names = SSL_load_client_CA_file(o->ca_file)))
		return QW_EIO;
	SSL_CTX_set_client_CA_list(s->ssl, names);
	SSL_CTX_set_verify(s->ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	/* Required for session resumption when client certificates are
	 * verified (the resumed session carries the verified peer). */
	if (!SSL_CTX_set_session_id_context(s->ssl, sid, sizeof(sid) - 1))
		return QW_ECRYPTO;
	return 0;
}

struct qw_https_server *qw_https_server_new(struct event_base *base, const struct qw_https_opts *o,
					    int *err)
{
	struct qw_https_server *s = NULL;
	struct evhttp_bound_socket *bound;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int ret = QW_EINVAL, one = 1;

	QW_REQUIRE(base && o);
	pthread_once(&peer_once, peer_index_init);
	if (!o->cert_file || !o->key_file || !o->ca_file || peer_idx < 0)
		goto out;
	ret = QW_ENOMEM;
	if (!(s = calloc(1, sizeof(*s))))
		goto out;
	s->base = base;
	s->access_log = o->access_log;
	s->access_log_arg = o->access_log_arg;
	if ((ret = load_ctx(s, o)))
		goto out;
	ret = QW_ENOMEM;
	if (!(s->http = evhttp_new(base)))
		goto out;
	evhttp_set_bevcb(s->http, bev_new, s);
	evhttp_set_gencb(s->http, dispatch, s);
	evhttp_set_max_body_size(s->http, (ev_ssize_t)(o->max_body_bytes ? o->max_body_bytes
									  : QW_HTTPS_DEFAULT_MAX_BODY));
	evhttp_set_max_headers_size(s->http, QW_HTTPS_MAX_HEADERS);
	evhttp_set_timeout(s->http, (int)(o->timeout_s ? o->timeout_s : QW_HTTPS_DEFAULT_TIMEOUT_S));
	evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
						    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
						    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH |
						    EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
	evhttp_set_default_content_type(s->http, "application/json");
	ret = QW_EIO;
	bound = evhttp_bind_socket_with_handle(s->http, o->addr ? o->addr : "127.0.0.1", o->port);
	if (!bound)
		goto out;
	if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sl) != 0)
		goto out;
	/* Accepted sockets inherit it (Linux): a response leaves as several
	 * TLS records, and Nagle would hold the last one back until the
	 * client's delayed ACK (40 ms). */
	if (setsockopt(evhttp_bound_socket_get_fd(bound), IPPROTO_TCP, TCP_NODELAY, &one,
		       sizeof(one)) != 0)
		goto out;
	s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
					   : ntohs(((struct sockaddr_in *)&ss)->sin_port);
	ret = 0;
out:
	ERR_clear_error();
	if (ret) {
		qw_https_server_free(s);
		s = NULL;
	}
	if (err)
		*err = ret;
	return s;
}

void qw_https_server_free(struct qw_https_server *s)
{
	if (!s)
		return;
	if (s->http)
		evhttp_free(s->http);
	SSL_CTX_free(s->ssl);
	for (size_t i = 0; i < s->n_routes; i++)
		free(s->routes[i].prefix);
	free(s->routes);
	free(s);
}

uint16_t qw_https_server_port(const struct qw_https_server *s)
{
	return s->port;
}

size_t qw_https_server_pending(const struct qw_https_server *s)
{
	return s->pending;
}

int qw_https_route(struct qw_https_server *s, unsigned methods, const char *prefix,
		   qw_https_handler h, void *arg)
{
	struct route *nr;

	QW_REQUIRE(s && prefix && h);
	if (prefix[0] != '/' || !methods)
		return QW_EINVAL;
	nr = realloc(s->routes, (s->n_routes + 1) * sizeof(*nr));
	if (!nr)
		return QW_ENOMEM;
	s->routes = nr;
	nr = &s->routes[s->n_routes];
	if (!(nr->prefix = strdup(prefix)))
		return QW_ENOMEM;
	nr->len = strlen(prefix);
	nr->methods = methods;
	nr->h = h;
	nr->arg = arg;
	s->n_routes++;
	return 0;
}

enum qw_http_method qw_https_req_method(const struct qw_https_req *r)
{
	return r->method;
}

const char *qw_https_req_method_name(const struct qw_https_req *r)
{
	return method_name(evhttp_request_get_command(r->ev));
}

const char *qw_https_req_path(const struct qw_https_req *r)
{
	return r->path;
}

const char *qw_https_req_query(const struct qw_https_req *r)
{
	return r->query;
}

const uint8_t *qw_https_req_body(struct qw_https_req *r, size_t *len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(r->ev);
	size_t n = in ? evbuffer_get_length(in) : 0;

	*len = n;
	if (!n)
		return (const uint8_t *)"";
	/* dispatch() made the body contiguous: this pullup cannot fail. */
	return evbuffer_pullup(in, -1);
}

const char *qw_https_req_peer_id(const struct qw_https_req *r)
{
	return r->peer.kind ? r->peer.id : NULL;
}

enum qw_pki_kind qw_https_req_peer_kind(const struct qw_https_req *r)
{
	return r->peer.kind;
}

void qw_https_req_note(struct qw_https_req *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->note, sizeof(r->note), fmt, ap);
	va_end(ap);
}

void qw_https_req_add_header(struct qw_https_req *r, const char *name, const char *value)
{
	evhttp_add_header(evhttp_request_get_output_headers(r->ev), name, value);
}

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Payload Too Large";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	default: return "Status";
	}
}

/* evbuffer cleanup for buffers that may hold keys. */
static void wipe_free(const void *data, size_t len, void *arg)
{
	(void)arg;
	qw_free_secret((void *)data, len);
}

/* evhttp queues the header block and the body as two evbuffer chains, and
 * bufferevent_openssl turns each chain into its own TLS record and write()
 * (the writes happen later, when the socket is writable). Merging what is
 * queued into one buffer of ours halves the records and syscalls per
 * response; the buffer is wiped when sent since it may hold keys. */
static void coalesce(struct bufferevent *bev)
{
	struct evbuffer *out = bufferevent_get_output(bev);
	size_t n = evbuffer_get_length(out);
	char *buf;

	if (n == 0 || n > QW_HTTPS_COALESCE_MAX || evbuffer_peek(out, -1, NULL, NULL, 0) < 2)
		return;
	if (!(buf = malloc(n)))
		return;
	if (evbuffer_copyout(out, buf, n) != (ev_ssize_t)n) {
		qw_free_secret(buf, n);
		return;
	}
	/* Same bytes, same order: whatever was queued before is kept. */
	evbuffer_drain(out, n);
	if (evbuffer_add_reference(out, buf, n, wipe_free, NULL) != 0)
		qw_free_secret(buf, n); /* cannot happen after a drain; never lose data */
}

static void finish(struct qw_https_req *r, int status)
{
	struct qw_https_server *s = r->srv;
	struct evhttp_connection *con = evhttp_request_get_connection(r->ev);
	struct bufferevent *bev = con ? evhttp_connection_get_bufferevent(con) : NULL;
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(r->ev);

	/* Content-Type is a singleton field (RFC 9110 8.3): a handler that
	 * set its own keeps it. */
	if (!evhttp_find_header(hdr, "Content-Type"))
		evhttp_add_header(hdr, "Content-Type", "application/json");
	evhttp_send_reply(r->ev, status, reason(status), NULL);
	if (bev)
		coalesce(bev);
	if (s->access_log) {
		struct qw_https_access a = {
			.method = qw_https_req_method_name(r),
			.path = r->path,
			.peer_id = r->peer.kind ? r->peer.id : "-",
			.peer_kind = r->peer.kind,
			.status = status,
			.note = r->note,
			.ms = now_ms() - r->t0,
		};
		s->access_log(s->access_log_arg, &a);
	}
	s->pending--;
	free(r);
}

void qw_https_reply(struct qw_https_req *r, int status, const char *body, size_t len)
{
	if (len && evbuffer_add(evhttp_request_get_output_buffer(r->ev), body, len) != 0) {
		evbuffer_drain(evhttp_request_get_output_buffer(r->ev), (size_t)-1);
		status = 503;
	}
	finish(r, status);
}

void qw_https_reply_secret(struct qw_https_req *r, int status, char *body, size_t len)
{
	/* A reference chain: the bytes go from this buffer straight into
	 * SSL_write, and the cleanup wipes them when the chain is drained. */
	if (len && evbuffer_add_reference(evhttp_request_get_output_buffer(r->ev), body, len,
					  wipe_free, NULL) != 0) {
		qw_free_secret(body, len);
		qw_https_reply_error(r, 503, "out of memory");
		return;
	}
	if (!len)
		free(body);
	finish(r, status);
}

void qw_https_reply_error(struct qw_https_req *r, int status, const char *message)
{
	json_t *o = json_pack("{s:s}", "message", message);
	char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	if (!txt) {
		qw_https_reply(r, status, "{}", 2);
		return;
	}
	qw_https_reply(r, status, txt, strlen(txt));
	free(txt);
}
