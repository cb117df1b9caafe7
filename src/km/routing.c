/* Link-state routing of key relay and per-SAE authorization
 * (include/qwave/routing.h, docs/relay-routing.md). */
#include <stdlib.h>
#include <string.h>

#include "qwave/routing.h"
#include "qwave/secmem.h"

/* ---- LSA wire format ------------------------------------------------------- */

static int lsa_valid(const struct qw_lsa *l)
{
	if (!qw_kmlink_id_valid(l->origin) || l->seq == 0 || l->n_links > QW_ROUTE_MAX_LINKS)
		return 0;
	for (uint16_t i = 0; i < l->n_links; i++) {
		const struct qw_route_link *k = &l->links[i];

		if (!qw_kmlink_id_valid(k->peer) || !strcmp(k->peer, l->origin) ||
		    (k->flags & ~(QW_ROUTE_LINK_UP | QW_ROUTE_LINK_ALARM)) || k->qber_ppm > 1000000)
			return 0;
		for (uint16_t j = 0; j < i; j++)
			if (!strcmp(l->links[j].peer, k->peer))
				return 0;
	}
	return 1;
}

int qw_lsa_encode(const struct qw_lsa *l, struct qw_buf *out)
{
	size_t start;

	QW_REQUIRE(l && out);
	if (!lsa_valid(l))
		return QW_EINVAL;
	start = out->len;
	if (qw_buf_append_u8(out, QW_ROUTE_VERSION) || qw_buf_append_u8(out, 0) ||
	    qw_buf_append_u16be(out, l->n_links) || qw_buf_append_u64be(out, l->seq) ||
	    qw_kmlink_id_write(out, l->origin, 0))
		goto nomem;
	for (uint16_t i = 0; i < l->n_links; i++) {
		const struct qw_route_link *k = &l->links[i];

		if (qw_kmlink_id_write(out, k->peer, 0) || qw_buf_append_u8(out, k->flags) ||
		    qw_buf_append_u64be(out, k->pool_bits) ||
		    qw_buf_append_u64be(out, k->key_rate_bps) ||
		    qw_buf_append_u32be(out, k->qber_ppm))
			goto nomem;
	}
	return 0;
nomem:
	out->len = start;
	return QW_ENOMEM;
}

int qw_lsa_parse(const uint8_t *buf, size_t len, struct qw_lsa *l)
{
	struct qw_reader r;
	uint8_t ver, rsv;

	QW_REQUIRE(l && (buf || len == 0));
	memset(l, 0, sizeof(*l));
	qw_reader_init(&r, buf, len);
	if (qw_reader_read_u8(&r, &ver) || ver != QW_ROUTE_VERSION ||
	    qw_reader_read_u8(&r, &rsv) || rsv || qw_reader_read_u16be(&r, &l->n_links) ||
	    l->n_links > QW_ROUTE_MAX_LINKS || qw_reader_read_u64be(&r, &l->seq) ||
	    qw_kmlink_id_read(&r, l->origin, 0))
		return QW_EPARSE;
	for (uint16_t i = 0; i < l->n_links; i++) {
		struct qw_route_link *k = &l->links[i];

		if (qw_kmlink_id_read(&r, k->peer, 0) || qw_reader_read_u8(&r, &k->flags) ||
		    qw_reader_read_u64be(&r, &k->pool_bits) ||
		    qw_reader_read_u64be(&r, &k->key_rate_bps) ||
		    qw_reader_read_u32be(&r, &k->qber_ppm))
			return QW_EPARSE;
	}
	if (qw_reader_expect_end(&r) || !lsa_valid(l))
		return QW_EPARSE;
	return 0;
}

/* ---- database ---------------------------------------------------------------- */

struct entry {
	struct qw_lsa lsa;
	int64_t rx_ms; /* arrival of this copy (own: last origination) */
};

/* An aged-out origin: copies with seq <= seq are refused until `until`. */
struct tomb {
	char origin[QW_KMLINK_ID_MAX + 1];
	uint64_t seq;
	int64_t until;
};

struct qw_route_db {
	struct qw_route_opts o;
	struct entry *ent; /* ent[0] is the own LSA */
	size_t n, cap;
	struct tomb *tomb;
	size_t nt, tcap;
};

struct qw_route_db *qw_route_db_new(const char *self, uint64_t first_seq,
				    const struct qw_route_opts *opts)
{
	struct qw_route_db *db;

	if (!self || !qw_kmlink_id_valid(self) || first_seq == 0)
		return NULL;
	db = calloc(1, sizeof(*db));
	if (!db)
		return NULL;
	if (opts)
		db->o = *opts;
	if (!db->o.refresh_ms)
		db->o.refresh_ms = QW_ROUTE_REFRESH_MS;
	if (!db->o.max_age_ms)
		db->o.max_age_ms = QW_ROUTE_MAX_AGE_MS;
	if (db->o.refresh_ms < 0 || db->o.max_age_ms <= db->o.refresh_ms) {
		free(db);
		return NULL;
	}
	db->cap = 8;
	db->ent = calloc(db->cap, sizeof(*db->ent));
	if (!db->ent) {
		free(db);
		return NULL;
	}
	strcpy(db->ent[0].lsa.origin, self);
	db->ent[0].lsa.seq = first_seq;
	db->ent[0].rx_ms = INT64_MIN / 2; /* the first tick originates */
	db->n = 1;
	return db;
}

void qw_route_db_free(struct qw_route_db *db)
{
	if (!db)
		return;
	free(db->ent);
	free(db->tomb);
	free(db);
}

static void out_clear(struct qw_route_out *out)
{
	if (out) {
		out->n_fwd = 0;
		out->originate = 0;
	}
}

const struct qw_lsa *qw_route_db_own(const struct qw_route_db *db)
{
	QW_REQUIRE(db);
	return &db->ent[0].lsa;
}

size_t qw_route_db_count(const struct qw_route_db *db)
{
	QW_REQUIRE(db);
	return db->n;
}

const struct qw_lsa *qw_route_db_get(const struct qw_route_db *db, size_t i)
{
	QW_REQUIRE(db);
	return i < db->n ? &db->ent[i].lsa : NULL;
}

static struct entry *find_entry(const struct qw_route_db *db, const char *origin)
{
	for (size_t i = 0; i < db->n; i++)
		if (!strcmp(db->ent[i].lsa.origin, origin))
			return &db->ent[i];
	return NULL;
}

const struct qw_lsa *qw_route_db_find(const struct qw_route_db *db, const char *origin)
{
	struct entry *e;

	QW_REQUIRE(db && origin);
	e = find_entry(db, origin);
	return e ? &e->lsa : NULL;
}

static const struct qw_route_link *find_link(const struct qw_lsa *l, const char *peer)
{
	for (uint16_t i = 0; i < l->n_links; i++)
		if (!strcmp(l->links[i].peer, peer))
			return &l->links[i];
	return NULL;
}

/* A level change that routing must see now rather than at the refresh:
 * empty <-> not empty, and across the low mark. */
static int pool_crossed(uint64_t a, uint64_t b, uint64_t low)
{
	return (a == 0) != (b == 0) || (low && (a < low) != (b < low));
}

static void originate(struct qw_route_db *db, int64_t now_ms, struct qw_route_out *out)
{
	db->ent[0].lsa.seq++;
	db->ent[0].rx_ms = now_ms;
	if (out)
		out->originate = 1;
}

int qw_route_db_set_links(struct qw_route_db *db, const struct qw_route_link *links, size_t n,
			  int64_t now_ms, struct qw_route_out *out)
{
	struct qw_lsa *own;
	struct qw_lsa next;
	int changed;

	QW_REQUIRE(db && (links || n == 0));
	out_clear(out);
	own = &db->ent[0].lsa;
	if (n > QW_ROUTE_MAX_LINKS)
		return QW_EINVAL;
	memset(&next, 0, sizeof(next));
	strcpy(next.origin, own->origin);
	next.seq = own->seq;
	next.n_links = (uint16_t)n;
	memcpy(next.links, links, n * sizeof(*links));
	for (size_t i = 0; i < n; i++)
		next.links[i].peer[QW_KMLINK_ID_MAX] = 0;
	if (!lsa_valid(&next))
		return QW_EINVAL;
	changed = next.n_links != own->n_links;
	for (size_t i = 0; i < n && !changed; i++) {
		const struct qw_route_link *o = find_link(own, next.links[i].peer);

		changed = !o || o->flags != next.links[i].flags ||
			  pool_crossed(o->pool_bits, next.links[i].pool_bits, db->o.low_pool_bits);
	}
	*own = next;
	if (changed)
		originate(db, now_ms, out);
	return 0;
}

static struct tomb *find_tomb(struct qw_route_db *db, const char *origin)
{
	for (size_t i = 0; i < db->nt; i++)
		if (!strcmp(db->tomb[i].origin, origin))
			return &db->tomb[i];
	return NULL;
}

int qw_route_db_receive(struct qw_route_db *db, const struct qw_lsa *l, const char *from,
			int64_t now_ms, struct qw_route_out *out)
{
	struct entry *e;
	struct tomb *t;
	const struct qw_lsa *own;

	QW_REQUIRE(db && l);
	out_clear(out);
	if (!lsa_valid(l))
		return QW_EINVAL;
	own = &db->ent[0].lsa;
	if (!strcmp(l->origin, own->origin)) {
		/* our previous life's LSA is still around: jump past it
		 * (RFC 2328 13.4) */
		if (l->seq >= own->seq) {
			db->ent[0].lsa.seq = l->seq;
			originate(db, now_ms, out);
		}
		return 0;
	}
	t = find_tomb(db, l->origin);
	if (t && l->seq <= t->seq)
		return 0;
	e = find_entry(db, l->origin);
	if (e && l->seq <= e->lsa.seq)
		return 0;
	if (!e) {
		if (db->n >= QW_ROUTE_MAX_NODES)
			return 0;
		if (db->n == db->cap) {
			size_t ncap = 2 * db->cap;
			struct entry *g = realloc(db->ent, ncap * sizeof(*g));

			if (!g)
				return 0; /* dropped; the next refresh brings it again */
			db->ent = g;
			db->cap = ncap;
			own = &db->ent[0].lsa;
		}
		e = &db->ent[db->n++];
	}
	e->lsa = *l;
	e->rx_ms = now_ms;
	if (t)
		*t = db->tomb[--db->nt];
	if (out) {
		for (uint16_t i = 0; i < own->n_links; i++) {
			const struct qw_route_link *k = &own->links[i];

			if ((k->flags & QW_ROUTE_LINK_UP) && (!from || strcmp(k->peer, from)))
				out->fwd[out->n_fwd++] = k->peer;
		}
	}
	return 1;
}

int qw_route_db_tick(struct qw_route_db *db, int64_t now_ms, struct qw_route_out *out)
{
	int removed = 0;

	QW_REQUIRE(db);
	out_clear(out);
	for (size_t i = 0; i < db->nt;) {
		if (db->tomb[i].until <= now_ms)
			db->tomb[i] = db->tomb[--db->nt];
		else
			i++;
	}
	for (size_t i = 1; i < db->n;) {
		struct entry *e = &db->ent[i];

		if (now_ms - e->rx_ms <= db->o.max_age_ms) {
			i++;
			continue;
		}
		if (db->nt == db->tcap) {
			size_t ncap = db->tcap ? 2 * db->tcap : 8;
			struct tomb *g = realloc(db->tomb, ncap * sizeof(*g));

			if (g) {
				db->tomb = g;
				db->tcap = ncap;
			}
		}
		/* without room for the tomb the LSA is removed anyway: a late
		 * copy could then live one more max_age, nothing worse */
		if (db->nt < db->tcap) {
			struct tomb *t = &db->tomb[db->nt++];

			strcpy(t->origin, e->lsa.origin);
			t->seq = e->lsa.seq;
			t->until = now_ms + db->o.max_age_ms;
		}
		*e = db->ent[--db->n];
		removed++;
	}
	if (now_ms - db->ent[0].rx_ms >= db->o.refresh_ms)
		originate(db, now_ms, out);
	return removed;
}

/* ---- path computation ---------------------------------------------------------- */

struct sorted {
	const char *id;
	uint32_t idx;
};

struct edge {
	uint32_t to;
	uint64_t cap;
	int blocked;
};

struct graph {
	size_t n;
	const struct qw_lsa **lsa; /* node i */
	struct sorted *order;      /* nodes sorted by ID */
	size_t *off;               /* edges of i: e[off[i] .. off[i+1]) */
	struct edge *e;
	int *blocked;              /* node excluded */
	/* search scratch */
	int32_t *dist;
	uint32_t *pred, *queue;
	uint64_t *best;
};

static int cmp_node(const void *a, const void *b)
{
	return strcmp(((const struct sorted *)a)->id, ((const struct sorted *)b)->id);
}

static long node_of(const struct graph *g, const char *id)
{
	size_t lo = 0, hi = g->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(g->order[mid].id, id);

		if (!c)
			return (long)g->order[mid].idx;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static void graph_free(struct graph *g)
{
	free(g->lsa);
	free(g->order);
	free(g->off);
	free(g->e);
	free(g->blocked);
	free(g->dist);
	free(g->pred);
	free(g->queue);
	free(g->best);
	memset(g, 0, sizeof(*g));
}

/* Usable edge a -> b of capacity min(both reports): two-way, up, no alarm. */
static int usable(const struct qw_route_link *k, const struct qw_route_link *rev)
{
	const uint8_t mask = QW_ROUTE_LINK_UP | QW_ROUTE_LINK_ALARM;

	return rev && (k->flags & mask) == QW_ROUTE_LINK_UP && (rev->flags & mask) == QW_ROUTE_LINK_UP;
}

static int graph_build(const struct qw_route_db *db, uint64_t need, struct graph *g)
{
	size_t ne = 0;

	memset(g, 0, sizeof(*g));
	g->n = db->n;
	g->lsa = malloc(g->n * sizeof(*g->lsa));
	g->order = malloc(g->n * sizeof(*g->order));
	g->off = malloc((g->n + 1) * sizeof(*g->off));
	g->blocked = calloc(g->n, sizeof(*g->blocked));
	g->dist = malloc(g->n * sizeof(*g->dist));
	g->pred = malloc(g->n * sizeof(*g->pred));
	g->queue = malloc(g->n * sizeof(*g->queue));
	g->best = malloc(g->n * sizeof(*g->best));
	for (size_t i = 0; i < db->n; i++)
		ne += db->ent[i].lsa.n_links;
	g->e = malloc((ne ? ne : 1) * sizeof(*g->e));
	if (!g->lsa || !g->order || !g->off || !g->blocked || !g->dist || !g->pred || !g->queue ||
	    !g->best || !g->e) {
		graph_free(g);
		return QW_ENOMEM;
	}
	for (size_t i = 0; i < g->n; i++) {
		g->lsa[i] = &db->ent[i].lsa;
		g->order[i].id = db->ent[i].lsa.origin;
		g->order[i].idx = (uint32_t)i;
	}
	qsort(g->order, g->n, sizeof(*g->order), cmp_node);
	ne = 0;
	for (size_t a = 0; a < g->n; a++) {
		const struct qw_lsa *la = g->lsa[a];

		g->off[a] = ne;
		for (uint16_t i = 0; i < la->n_links; i++) {
			const struct qw_route_link *k = &la->links[i];
			long b = node_of(g, k->peer);
			const struct qw_route_link *rev;
			uint64_t cap;

			if (b < 0)
				continue;
			rev = find_link(g->lsa[b], la->origin);
			if (!usable(k, rev))
				continue;
			cap = k->pool_bits < rev->pool_bits ? k->pool_bits : rev->pool_bits;
			if (cap < need)
				continue;
			g->e[ne].to = (uint32_t)b;
			g->e[ne].cap = cap;
			g->e[ne].blocked = 0;
			ne++;
		}
	}
	g->off[g->n] = ne;
	return 0;
}

static struct edge *edge_of(const struct graph *g, uint32_t a, uint32_t b)
{
	for (size_t i = g->off[a]; i < g->off[a + 1]; i++)
		if (g->e[i].to == b)
			return &g->e[i];
	return NULL;
}

static void block_link(struct graph *g, uint32_t a, uint32_t b, int on)
{
	struct edge *e;

	if ((e = edge_of(g, a, b)))
		e->blocked = on;
	if ((e = edge_of(g, b, a)))
		e->blocked = on;
}

static const char *id_of(const struct graph *g, uint32_t i)
{
	return g->lsa[i]->origin;
}

/* Breadth-first layers from s; within a layer each node keeps the
 * predecessor giving the widest bottleneck (ties: smaller ID). Nodes of
 * layer d are all dequeued before layer d + 1, so best[u] is final when u
 * is expanded. Writes the node indices s..t to idx (room for max nodes).
 * 0, QW_ENOTFOUND, QW_ERANGE (longer than max). */
static int search(struct graph *g, uint32_t s, uint32_t t, uint32_t *idx, size_t max,
		  size_t *len, uint64_t *bottleneck)
{
	size_t qh = 0, qt = 0;
	int32_t d;

	if (g->blocked[s] || g->blocked[t])
		return QW_ENOTFOUND;
	for (size_t i = 0; i < g->n; i++)
		g->dist[i] = -1;
	g->dist[s] = 0;
	g->best[s] = UINT64_MAX;
	g->pred[s] = s;
	g->queue[qt++] = s;
	while (qh < qt) {
		uint32_t u = g->queue[qh++];

		if (u == t)
			continue;
		for (size_t i = g->off[u]; i < g->off[u + 1]; i++) {
			const struct edge *e = &g->e[i];
			uint32_t v = e->to;
			uint64_t w = g->best[u] < e->cap ? g->best[u] : e->cap;

			if (e->blocked || g->blocked[v])
				continue;
			if (g->dist[v] < 0) {
				g->dist[v] = g->dist[u] + 1;
				g->best[v] = w;
				g->pred[v] = u;
				g->queue[qt++] = v;
			} else if (g->dist[v] == g->dist[u] + 1 &&
				   (w > g->best[v] ||
				    (w == g->best[v] && strcmp(id_of(g, u), id_of(g, g->pred[v])) < 0))) {
				g->best[v] = w;
				g->pred[v] = u;
			}
		}
	}
	if (g->dist[t] < 0)
		return QW_ENOTFOUND;
	d = g->dist[t];
	if ((size_t)d + 1 > max)
		return QW_ERANGE;
	*len = (size_t)d + 1;
	*bottleneck = g->best[t];
	for (uint32_t v = t;; v = g->pred[v]) {
		idx[d--] = v;
		if (v == s)
			break;
	}
	return 0;
}

static void path_out(const struct graph *g, const uint32_t *idx, size_t n, uint64_t bottleneck,
		     struct qw_route_path *p)
{
	memset(p, 0, sizeof(*p));
	p->n = n;
	for (size_t i = 0; i < n; i++)
		strcpy(p->nodes[i], id_of(g, idx[i]));
	p->bottleneck_bits = bottleneck;
}

static int apply_avoid(struct graph *g, const struct qw_route_avoid *av)
{
	if (!av)
		return 0;
	QW_REQUIRE((av->nodes || !av->n_nodes) && (av->links || !av->n_links));
	for (size_t i = 0; i < av->n_nodes; i++) {
		long v = node_of(g, av->nodes[i]);

		if (v >= 0)
			g->blocked[v] = 1;
	}
	for (size_t i = 0; i < av->n_links; i++) {
		long a = node_of(g, av->links[2 * i]), b = node_of(g, av->links[2 * i + 1]);

		if (a >= 0 && b >= 0)
			block_link(g, (uint32_t)a, (uint32_t)b, 1);
	}
	return 0;
}

int qw_route_path(const struct qw_route_db *db, const char *src, const char *dst,
		  uint64_t need_bits, const struct qw_route_avoid *avoid, struct qw_route_path *p)
{
	struct graph g;
	uint32_t idx[QW_ROUTE_MAX_PATH];
	long s, t;
	size_t len;
	uint64_t bn;
	int ret;

	QW_REQUIRE(db && src && dst && p);
	if ((ret = graph_build(db, need_bits, &g)))
		return ret;
	apply_avoid(&g, avoid);
	s = node_of(&g, src);
	t = node_of(&g, dst);
	ret = QW_ENOTFOUND;
	if (s >= 0 && t >= 0)
		ret = search(&g, (uint32_t)s, (uint32_t)t, idx, QW_ROUTE_MAX_PATH, &len, &bn);
	if (!ret)
		path_out(&g, idx, len, bn, p);
	graph_free(&g);
	return ret;
}

/* Path order of routing.h: fewer hops, wider bottleneck, smaller IDs. */
static int path_cmp(const struct qw_route_path *a, const struct qw_route_path *b)
{
	if (a->n != b->n)
		return a->n < b->n ? -1 : 1;
	if (a->bottleneck_bits != b->bottleneck_bits)
		return a->bottleneck_bits > b->bottleneck_bits ? -1 : 1;
	for (size_t i = 0; i < a->n; i++) {
		int c = strcmp(a->nodes[i], b->nodes[i]);

		if (c)
			return c;
	}
	return 0;
}

static int path_same(const struct qw_route_path *a, const struct qw_route_path *b)
{
	if (a->n != b->n)
		return 0;
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->nodes[i], b->nodes[i]))
			return 0;
	return 1;
}

/* Yen's candidates are kept in a small array: at most (K - 1) * (path
 * length) spur paths are ever generated. */
#define YEN_MAX_CAND (QW_ROUTE_MAX_K * QW_ROUTE_MAX_PATH)

int qw_route_paths(const struct qw_route_db *db, const char *src, const char *dst,
		   uint64_t need_bits, size_t k, struct qw_route_path *paths, size_t *n)
{
	struct graph g;
	struct qw_route_path *cand = NULL;
	uint32_t idx[QW_ROUTE_MAX_PATH], pidx[QW_ROUTE_MAX_PATH];
	size_t ncand = 0, found = 0, len;
	long s, t;
	uint64_t bn;
	int ret;

	QW_REQUIRE(db && src && dst && paths && n);
	*n = 0;
	if (k == 0 || k > QW_ROUTE_MAX_K)
		return QW_EINVAL;
	if ((ret = graph_build(db, need_bits, &g)))
		return ret;
	ret = QW_ENOMEM;
	cand = malloc(YEN_MAX_CAND * sizeof(*cand));
	if (!cand)
		goto out;
	s = node_of(&g, src);
	t = node_of(&g, dst);
	ret = QW_ENOTFOUND;
	if (s < 0 || t < 0)
		goto out;
	ret = search(&g, (uint32_t)s, (uint32_t)t, idx, QW_ROUTE_MAX_PATH, &len, &bn);
	if (ret)
		goto out;
	path_out(&g, idx, len, bn, &paths[found++]);
	while (found < k) {
		const struct qw_route_path *prev = &paths[found - 1];
		size_t best;

		for (size_t i = 0; i < prev->n; i++)
			pidx[i] = (uint32_t)node_of(&g, prev->nodes[i]);
		for (size_t i = 0; i + 1 < prev->n; i++) {
			struct qw_route_path c;
			uint64_t root_bn = UINT64_MAX, sbn;
			size_t slen;

			/* the root prev[0..i] must not be followed by an edge
			 * an accepted path with the same root already uses */
			for (size_t a = 0; a < found; a++) {
				int same = paths[a].n > i + 1;

				for (size_t j = 0; same && j <= i; j++)
					same = !strcmp(paths[a].nodes[j], prev->nodes[j]);
				if (same)
					block_link(&g, (uint32_t)node_of(&g, paths[a].nodes[i]),
						   (uint32_t)node_of(&g, paths[a].nodes[i + 1]), 1);
			}
			for (size_t j = 0; j < i; j++) {
				g.blocked[pidx[j]] = 1;
				root_bn = edge_of(&g, pidx[j], pidx[j + 1])->cap < root_bn
						  ? edge_of(&g, pidx[j], pidx[j + 1])->cap
						  : root_bn;
			}
			if (!search(&g, pidx[i], (uint32_t)t, idx, QW_ROUTE_MAX_PATH - i, &slen,
				    &sbn)) {
				memset(&c, 0, sizeof(c));
				c.n = i + slen;
				for (size_t j = 0; j < i; j++)
					strcpy(c.nodes[j], prev->nodes[j]);
				for (size_t j = 0; j < slen; j++)
					strcpy(c.nodes[i + j], id_of(&g, idx[j]));
				c.bottleneck_bits = root_bn < sbn ? root_bn : sbn;
				int dup = 0;
				for (size_t a = 0; a < found && !dup; a++)
					dup = path_same(&paths[a], &c);
				for (size_t a = 0; a < ncand && !dup; a++)
					dup = path_same(&cand[a], &c);
				if (!dup && ncand < YEN_MAX_CAND)
					cand[ncand++] = c;
			}
			for (size_t j = 0; j < i; j++)
				g.blocked[pidx[j]] = 0;
			for (size_t e = 0; e < g.off[g.n]; e++)
				g.e[e].blocked = 0;
		}
		if (!ncand)
			break;
		best = 0;
		for (size_t a = 1; a < ncand; a++)
			if (path_cmp(&cand[a], &cand[best]) < 0)
				best = a;
		paths[found++] = cand[best];
		cand[best] = cand[--ncand];
	}
	ret = 0;
out:
	*n = found;
	free(cand);
	graph_free(&g);
	return ret;
}

/* ---- authorization policy ------------------------------------------------------ */

struct rule {
	int allow, both;
	char m[QW_KMLINK_ID_MAX + 1], s[QW_KMLINK_ID_MAX + 1];
};

struct qw_route_policy {
	int default_allow;
	struct rule *r;
	size_t n;
};

struct qw_route_policy *qw_route_policy_new(int default_allow)
{
	struct qw_route_policy *p = calloc(1, sizeof(*p));

	if (p)
		p->default_allow = !!default_allow;
	return p;
}

void qw_route_policy_free(struct qw_route_policy *p)
{
	if (!p)
		return;
	free(p->r);
	free(p);
}

static int pattern_valid(const char *pat)
{
	size_t n = 0;

	for (; pat[n]; n++) {
		char c = pat[n];

		if (n >= QW_KMLINK_ID_MAX ||
		    !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-' || c == '*'))
			return 0;
	}
	return n > 0;
}

int qw_route_pattern_match(const char *pat, const char *s)
{
	const char *star = NULL, *resume = NULL;

	QW_REQUIRE(pat && s);
	/* greedy glob with one backtrack point: the last '*' seen absorbs one
	 * more character whenever the rest fails to match */
	while (*s) {
		if (*pat == '*') {
			star = pat++;
			resume = s;
		} else if (*pat == *s) {
			pat++;
			s++;
		} else if (star) {
			pat = star + 1;
			s = ++resume;
		} else {
			return 0;
		}
	}
	while (*pat == '*')
		pat++;
	return *pat == 0;
}

int qw_route_policy_add(struct qw_route_policy *p, int allow, const char *master_pat,
			const char *slave_pat, int both_ways)
{
	struct rule *g;

	QW_REQUIRE(p && master_pat && slave_pat);
	if (!pattern_valid(master_pat) || !pattern_valid(slave_pat))
		return QW_EINVAL;
	g = realloc(p->r, (p->n + 1) * sizeof(*g));
	if (!g)
		return QW_ENOMEM;
	p->r = g;
	g = &p->r[p->n++];
	g->allow = !!allow;
	g->both = !!both_ways;
	strcpy(g->m, master_pat);
	strcpy(g->s, slave_pat);
	return 0;
}

int qw_route_policy_add_text(struct qw_route_policy *p, const char *rule)
{
	char buf[4 * (QW_KMLINK_ID_MAX + 2)], *w[5], *save = NULL;
	size_t nw = 0, len;
	int allow, both, ret;

	QW_REQUIRE(p && rule);
	len = strlen(rule);
	if (len >= sizeof(buf))
		return QW_EPARSE;
	memcpy(buf, rule, len + 1);
	for (char *tok = strtok_r(buf, " \t\r\n", &save); tok; tok = strtok_r(NULL, " \t\r\n", &save)) {
		if (nw == 5)
			return QW_EPARSE;
		w[nw++] = tok;
	}
	if (nw != 4)
		return QW_EPARSE;
	if (!strcmp(w[0], "allow"))
		allow = 1;
	else if (!strcmp(w[0], "deny"))
		allow = 0;
	else
		return QW_EPARSE;
	if (!strcmp(w[2], "->"))
		both = 0;
	else if (!strcmp(w[2], "<->"))
		both = 1;
	else
		return QW_EPARSE;
	ret = qw_route_policy_add(p, allow, w[1], w[3], both);
	return ret == QW_EINVAL ? QW_EPARSE : ret;
}

int qw_route_policy_check(const struct qw_route_policy *p, const char *master, const char *slave)
{
	QW_REQUIRE(p && master && slave);
	for (size_t i = 0; i < p->n; i++) {
		const struct rule *r = &p->r[i];

		if ((qw_route_pattern_match(r->m, master) && qw_route_pattern_match(r->s, slave)) ||
		    (r->both && qw_route_pattern_match(r->m, slave) &&
		     qw_route_pattern_match(r->s, master)))
			return r->allow ? 0 : QW_EPERM;
	}
	return p->default_allow ? 0 : QW_EPERM;
}
