/* Node networking: one TLS 1.3 listener per node for KM links and QKD
 * classical channels, dialers for the links this node leads, and the
 * bridges between TLS connections on the loop and the QKD link threads'
 * blocking sockets (include/qwave/km.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "km_internal.h"
#include "qkd.h"
#include "qwave/log.h"
#include "qwave/pki.h"

#define NET_HANDSHAKE_S 10
#define NET_REDIAL_MS 1000

struct net_link {
	struct qw_km_net *net;
	const struct qw_km_link_conf *lc;
	int leader;
	struct km_qkd *qkd;
	struct km_src *src;    /* external source instead of the simulated link */
	struct event *want_ev;
	struct event *redial_ev;
	int km_dialing;
};

/* A TLS connection until it is handed over (KM link or bridge). */
struct chan {
	struct chan *next, **prev;
	struct qw_km_net *net;
	struct bufferevent *bev;
	struct net_link *nl;   /* client: the link dialed; server: once known */
	int client, kind;
};

struct bridge {
	struct bridge *next, **prev;
	struct bufferevent *tls, *local;
	int closing;           /* one side ended: flushing the other's output */
};

/* A bridge side stops reading while the other side holds this much unsent
 * (the QKD thread or the peer is slower than its counterpart: without it
 * the bridge buffers without bound), and resumes below half of it. */
#define BR_HIGH_BYTES (1u << 20)
/* How long the surviving side may take to flush when the other ended. */
#define BR_FLUSH_S 10

struct qw_km_net {
	struct qw_km *km;
	struct event_base *base;
	const struct qw_km_conf *c;
	SSL_CTX *ctx;
	struct evconnlistener *lis;
	uint16_t port;
	struct net_link *links;
	size_t nlinks;
	struct chan *chans;
	struct bridge *bridges;
};

static void chan_free(struct chan *ch, int free_bev)
{
	if (ch->next)
		ch->next->prev = ch->prev;
	*ch->prev = ch->next;
	if (free_bev && ch->bev)
		bufferevent_free(ch->bev);
	if (ch->client && ch->kind == QW_KMLINK_CHAN_KM && ch->nl)
		ch->nl->km_dialing = 0;
	free(ch);
}

static void bridge_free(struct bridge *b)
{
	if (b->next)
		b->next->prev = b->prev;
	*b->prev = b->next;
	bufferevent_free(b->tls);
	bufferevent_free(b->local);
	free(b);
}

/* ---- bridges ---- */

static struct bufferevent *br_other(const struct bridge *b, const struct bufferevent *bev)
{
	return bev == b->tls ? b->local : b->tls;
}

static void br_read(struct bufferevent *bev, void *arg)
{
	struct bridge *b = arg;
	struct bufferevent *to = br_other(b, bev);

	if (bufferevent_write_buffer(to, bufferevent_get_input(bev))) {
		bridge_free(b);
		return;
	}
	if (evbuffer_get_length(bufferevent_get_output(to)) >= BR_HIGH_BYTES) {
		bufferevent_disable(bev, EV_READ);
		bufferevent_setwatermark(to, EV_WRITE, BR_HIGH_BYTES / 2, 0);
	}
}

/* bev's output fell to its low watermark. */
static void br_write(struct bufferevent *bev, void *arg)
{
	struct bridge *b = arg;

	if (b->closing) {
		if (!evbuffer_get_length(bufferevent_get_output(bev)))
			bridge_free(b);
		return;
	}
	bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
	bufferevent_enable(br_other(b, bev), EV_READ);
}

/* One side ended: what it sent is forwarded and the other side's output
 * flushed before both go (the last frames of a session, an alert). */
static void br_event(struct bufferevent *bev, short what, void *arg)
{
	struct bridge *b = arg;
	struct bufferevent *other = br_other(b, bev);
	struct timeval tv = { BR_FLUSH_S, 0 };

	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)))
		return;
	if (b->closing) {
		/* the flush failed or timed out */
		bridge_free(b);
		return;
	}
	if ((what & BEV_EVENT_EOF) &&
	    bufferevent_write_buffer(other, bufferevent_get_input(bev))) {
		bridge_free(b);
		return;
	}
	if (!evbuffer_get_length(bufferevent_get_output(other))) {
		bridge_free(b);
		return;
	}
	b->closing = 1;
	bufferevent_disable(bev, EV_READ | EV_WRITE);
	bufferevent_disable(other, EV_READ);
	bufferevent_setwatermark(other, EV_WRITE, 0, 0);
	bufferevent_set_timeouts(other, NULL, &tv);
	bufferevent_enable(other, EV_WRITE);
}

static void bridge_start(struct qw_km_net *net, struct chan *ch, struct net_link *nl)
{
	struct bridge *b = calloc(1, sizeof(*b));
	int sv[2] = { -1, -1 };

	if (!b || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		goto fail;
	evutil_make_socket_nonblocking(sv[0]);
	b->local = bufferevent_socket_new(net->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	if (!b->local)
		goto fail;
	sv[0] = -1;
	b->tls = ch->bev;
	ch->bev = NULL;
	chan_free(ch, 0);
	bufferevent_set_timeouts(b->tls, NULL, NULL);
	bufferevent_setcb(b->tls, br_read, br_write, br_event, b);
	bufferevent_setcb(b->local, br_read, br_write, br_event, b);
	bufferevent_enable(b->tls, EV_READ | EV_WRITE);
	bufferevent_enable(b->local, EV_READ | EV_WRITE);
	b->next = net->bridges;
	if (net->bridges)
		net->bridges->prev = &b->next;
	net->bridges = b;
	b->prev = &net->bridges;
	if (evbuffer_get_length(bufferevent_get_input(b->tls)))
		br_read(b->tls, b);
	km_qkd_give_channel(nl->qkd, sv[1]);
	return;
fail:
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	if (b && b->local)
		bufferevent_free(b->local);
	free(b);
	chan_free(ch, 1);
}

/* ---- hand-over ---- */

static void handoff(struct chan *ch, int kind)
{
	struct qw_km_net *net = ch->net;
	struct net_link *nl = ch->nl;
	struct bufferevent *bev = ch->bev;
	int ret;

	if (kind == QW_KMLINK_CHAN_KM) {
		ch->bev = NULL;
		chan_free(ch, 0);
		bufferevent_set_timeouts(bev, NULL, NULL);
		ret = qw_km_attach(net->km, nl->lc->peer, bev);
		if (ret)
			qw_log(QW_LOG_WARN, "KM link to %s: %s", nl->lc->peer, qw_strerror(ret));
		return;
	}
	if (!nl->qkd) {
		chan_free(ch, 1);
		return;
	}
	bridge_start(net, ch, nl);
}

/* The peer's identity from its verified certificate. */
static struct net_link *identify(struct chan *ch)
{
	SSL *ssl = bufferevent_openssl_get_ssl(ch->bev);
	X509 *cert = ssl ? SSL_get1_peer_certificate(ssl) : NULL;
	char id[QW_PKI_ID_MAX + 1];
	enum qw_pki_kind kind;
	struct net_link *nl = NULL;

	if (!cert)
		return NULL;
	if (qw_pki_cert_identity(cert, &kind, id) == 0 && kind == QW_PKI_NODE) {
		for (size_t i = 0; i < ch->net->nlinks; i++)
			if (!strcmp(ch->net->links[i].lc->peer, id))
				nl = &ch->net->links[i];
	}
	X509_free(cert);
	if (!nl)
		qw_log(QW_LOG_WARN, "TLS peer '%s' is not a neighbour node: refused", id);
	return nl;
}

static void chan_read(struct bufferevent *bev, void *arg)
{
	struct chan *ch = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct qw_kmlink_msg m;
	size_t flen, have = evbuffer_get_length(in);
	uint8_t *p;
	int kind;

	if (have < QW_KMLINK_HEADER_BYTES)
		return;
	p = evbuffer_pullup(in, QW_KMLINK_HEADER_BYTES);
	if (!p || qw_kmlink_frame_len(p, have, &flen) || flen > 256) {
		chan_free(ch, 1);
		return;
	}
	if (have < flen)
		return;
	p = evbuffer_pullup(in, (ssize_t)flen);
	if (!p || qw_kmlink_parse(p, flen, &m) || m.type != QW_KMLINK_HELLO ||
	    strcmp(m.u.hello.node, ch->nl->lc->peer)) {
		qw_log(QW_LOG_WARN, "connection from %s: bad HELLO", ch->nl->lc->peer);
		chan_free(ch, 1);
		return;
	}
	evbuffer_drain(in, flen);
	kind = m.u.hello.channel;
	qw_kmlink_msg_clear(&m);
	handoff(ch, kind);
}

static void chan_event(struct bufferevent *bev, short what, void *arg)
{
	struct chan *ch = arg;
	struct qw_kmlink_msg hello;
	struct qw_buf b;

	(void)bev;
	if (!(what & BEV_EVENT_CONNECTED)) {
		unsigned long e = bufferevent_get_openssl_error(ch->bev);
		if (ch->client)
			qw_log(QW_LOG_DEBUG, "dialing %s: %s%s", ch->nl->lc->peer,
			       e ? ERR_reason_error_string(e) : "connection failed", "");
		else if (e)
			qw_log(QW_LOG_WARN, "TLS connection refused: %s", ERR_reason_error_string(e));
		chan_free(ch, 1);
		return;
	}
	if (ch->client) {
		struct net_link *nl = identify(ch);
		if (nl != ch->nl) {
			qw_log(QW_LOG_WARN, "dialed %s but its certificate names another node", ch->nl->lc->peer);
			chan_free(ch, 1);
			return;
		}
		memset(&hello, 0, sizeof(hello));
		hello.type = QW_KMLINK_HELLO;
		hello.u.hello.channel = (uint8_t)ch->kind;
		snprintf(hello.u.hello.node, sizeof(hello.u.hello.node), "%s", ch->net->c->id);
		qw_buf_init(&b, 0);
		if (qw_kmlink_encode(&hello, &b) || bufferevent_write(ch->bev, b.data, b.len)) {
			qw_buf_free(&b);
			chan_free(ch, 1);
			return;
		}
		qw_buf_free(&b);
		handoff(ch, ch->kind);
		return;
	}
	ch->nl = identify(ch);
	/* the leader dials; a follower never accepts its own links' dial */
	if (!ch->nl || ch->nl->leader) {
		chan_free(ch, 1);
		return;
	}
	bufferevent_setcb(ch->bev, chan_read, NULL, chan_event, ch);
	bufferevent_enable(ch->bev, EV_READ | EV_WRITE);
	chan_read(ch->bev, ch);
}

static struct chan *chan_new(struct qw_km_net *net, int fd, int client)
{
	struct chan *ch = calloc(1, sizeof(*ch));
	struct timeval tv = { NET_HANDSHAKE_S, 0 };
	SSL *ssl;

	if (!ch)
		goto fail;
	ssl = SSL_new(net->ctx);
	if (!ssl)
		goto fail;
	ch->bev = bufferevent_openssl_socket_new(net->base, fd, ssl,
						 client ? BUFFEREVENT_SSL_CONNECTING
							: BUFFEREVENT_SSL_ACCEPTING,
						 BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!ch->bev) {
		SSL_free(ssl);
		goto fail;
	}
	ch->net = net;
	ch->client = client;
	ch->next = net->chans;
	if (net->chans)
		net->chans->prev = &ch->next;
	net->chans = ch;
	ch->prev = &net->chans;
	bufferevent_set_timeouts(ch->bev, &tv, &tv);
	bufferevent_setcb(ch->bev, NULL, NULL, chan_event, ch);
	bufferevent_enable(ch->bev, EV_READ | EV_WRITE);
	return ch;
fail:
	if (fd >= 0)
		close(fd);
	free(ch);
	return NULL;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
		      void *arg)
{
	(void)l;
	(void)sa;
	(void)len;
	(void)chan_new(arg, fd, 0);
}

static void dial(struct net_link *nl, int kind)
{
	struct qw_km_net *net = nl->net;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	char host[64];
	uint16_t port;
	struct chan *ch;

	if (qw_km_parse_addr(nl->lc->address, host, &port) ||
	    inet_pton(AF_INET, strcmp(host, "localhost") ? host : "127.0.0.1", &sin.sin_addr) != 1)
		return;
	sin.sin_port = htons(port);
	ch = chan_new(net, -1, 1);
	if (!ch)
		return;
	ch->nl = nl;
	ch->kind = kind;
	if (kind == QW_KMLINK_CHAN_KM)
		nl->km_dialing = 1;
	if (bufferevent_socket_connect(ch->bev, (struct sockaddr *)&sin, sizeof(sin)))
		chan_free(ch, 1);
}

static void on_redial(evutil_socket_t fd, short what, void *arg)
{
	struct net_link *nl = arg;

	(void)fd;
	(void)what;
	if (!qw_km_link_up(nl->net->km, nl->lc->peer) && !nl->km_dialing)
		dial(nl, QW_KMLINK_CHAN_KM);
	/* keep watching: a dial that fails never reaches the down callback */
	{
		struct timeval tv = { NET_REDIAL_MS / 1000, (NET_REDIAL_MS % 1000) * 1000 };
		evtimer_add(nl->redial_ev, &tv);
	}
}

static void on_want(evutil_socket_t fd, short what, void *arg)
{
	struct net_link *nl = arg;

	(void)fd;
	(void)what;
	if (nl->qkd && km_qkd_wants(nl->qkd))
		dial(nl, QW_KMLINK_CHAN_QKD);
}

static SSL_CTX *tls_ctx(const struct qw_km_conf *c)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());

	if (!ctx)
		return NULL;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    SSL_CTX_use_certificate_chain_file(ctx, c->cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, c->key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1 ||
	    SSL_CTX_load_verify_locations(ctx, c->ca, NULL) != 1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	return ctx;
}

struct qw_km_net *qw_km_net_start(struct qw_km *km, struct event_base *base,
				  const struct qw_km_conf *c, int *err)
{
	struct qw_km_net *net = calloc(1, sizeof(*net));
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	char host[64];
	uint16_t port;
	int dummy;

	if (!err)
		err = &dummy;
	*err = QW_ENOMEM;
	if (!net)
		return NULL;
	net->km = km;
	net->base = base;
	net->c = c;
	if (!c->listen || !c->nlinks) {
		*err = 0;
		return net;
	}
	net->links = calloc(c->nlinks, sizeof(*net->links));
	if (!net->links)
		goto fail;
	*err = QW_ECRYPTO;
	net->ctx = tls_ctx(c);
	if (!net->ctx)
		goto fail;
	*err = QW_EINVAL;
	if (qw_km_parse_addr(c->listen, host, &port) ||
	    inet_pton(AF_INET, strcmp(host, "localhost") ? host : "127.0.0.1", &sin.sin_addr) != 1)
		goto fail;
	sin.sin_port = htons(port);
	*err = QW_EIO;
	/* a node restarted at once after kill -9 may find its port still held
	 * by the dying process for a moment */
	for (int tries = 0; tries < 50; tries++) {
		struct timespec ts = { 0, 100000000 };
		net->lis = evconnlistener_new_bind(base, on_accept, net,
						   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
							   LEV_OPT_CLOSE_ON_EXEC,
						   64, (struct sockaddr *)&sin, sizeof(sin));
		if (net->lis || errno != EADDRINUSE)
			break;
		nanosleep(&ts, NULL);
	}
	if (!net->lis)
		goto fail;
	if (getsockname(evconnlistener_get_fd(net->lis), (struct sockaddr *)&sin, &sl))
		goto fail;
	net->port = ntohs(sin.sin_port);
	for (size_t i = 0; i < c->nlinks; i++) {
		struct net_link *nl = &net->links[i];
		net->nlinks++;
		nl->net = net;
		nl->lc = &c->links[i];
		nl->leader = qw_km_is_leader(c->id, nl->lc->peer);
		nl->want_ev = event_new(base, -1, 0, on_want, nl);
		nl->redial_ev = evtimer_new(base, on_redial, nl);
		*err = QW_ENOMEM;
		if (!nl->want_ev || !nl->redial_ev)
			goto fail;
		if (nl->lc->source == QW_KM_SOURCE_ETSI014) {
			nl->src = km_src_start(km, nl->lc, err);
			if (!nl->src)
				goto fail;
		} else {
			nl->qkd = km_qkd_start(km, c, nl->lc, nl->want_ev, err);
			if (!nl->qkd)
				goto fail;
		}
		if (nl->leader)
			on_redial(-1, 0, nl);
	}
	*err = 0;
	return net;
fail:
	qw_km_net_stop(net);
	return NULL;
}

uint16_t qw_km_net_port(const struct qw_km_net *net)
{
	return net->port;
}

void qw_km_net_stop(struct qw_km_net *net)
{
	if (!net)
		return;
	for (size_t i = 0; i < net->nlinks; i++) {
		struct net_link *nl = &net->links[i];
		km_qkd_stop(nl->qkd);
		km_src_stop(nl->src);
		if (nl->want_ev)
			event_free(nl->want_ev);
		if (nl->redial_ev)
			event_free(nl->redial_ev);
	}
	while (net->bridges)
		bridge_free(net->bridges);
	while (net->chans)
		chan_free(net->chans, 1);
	if (net->lis)
		evconnlistener_free(net->lis);
	SSL_CTX_free(net->ctx);
	free(net->links);
	free(net);
}
