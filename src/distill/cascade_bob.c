/* Cascade, Bob's side: a state machine that turns the protocol into rounds
 * of batched parity queries.
 *
 * Model. For every pass, Alice's parities that Bob has learned (asked or
 * inferred) are kept per node of each block's bisection tree (node 1 = the
 * block, node 2h / 2h+1 = the halves of node h). A node is "odd" when
 * Alice's parity is known and differs from Bob's current one. Correction is
 * then uniform: from any odd node, descend towards an odd leaf, asking
 * Alice only for a left child whose parity is neither known nor inferable
 * (right = parent xor left); an odd leaf is an error, flipped at once. A
 * flip toggles Bob's parity of the block holding the bit in every earlier
 * pass, and blocks that turn odd are bisected in the same round (the
 * "cascade" of Brassard and Salvail, batched across blocks). Parities
 * learned in earlier bisections are never asked again.
 *
 * Leak savings that both sides can count: bisection asks one child
 * (Brassard-Salvail); after pass 1 Alice's total parity is known, so the
 * last block of every later pass (and the complement half of a BICONF pass)
 * is inferred, not asked; known sub-block parities are reused ("block
 * parity inference" and sub-block reuse in Martinez-Mateo et al. 2015). */
#include <stdlib.h>
#include <string.h>

#include "distill/cascade_internal.h"
#include "qwave/secmem.h"

enum { S_READY, S_NEEDQ, S_SENT, S_DEAD };
enum { PH_ROOTS_DUE, PH_ROOTS_WAIT, PH_CORRECT, PH_WAIT, PH_DONE };

struct search {
	uint32_t lo, hi;   /* range of node heap, in the pass's order */
	uint32_t block, heap;
	uint8_t pass, state;
	uint8_t bpar, apar; /* Bob's current and Alice's parity of the node */
	uint32_t wqpos;     /* S_NEEDQ: index in its pass's wait list */
};

/* A waiting search with the fields its query needs, so that writing the
 * message does not touch the search itself. */
struct wq_ent {
	uint32_t idx, block, heap;
};

struct bob_pass {
	uint8_t kind, started;  /* started: 1 = roots asked, 2 = roots known */
	uint32_t k, nb;
	unsigned kshift;        /* log2 k when k is a power of two > 1, else 0 */
	size_t stride;          /* dense node slots per block */
	struct qw_bitvec *pk;   /* PERM: Bob's permuted copy (owned) */
	uint64_t *known;        /* dense Alice parities of nodes >= 2 */
	size_t known_bytes;
	uint64_t *hkey;         /* MASK passes: open-addressed node table */
	uint8_t *hval;
	size_t hcap, hcount;
	uint64_t *aroot;        /* Alice's block parities */
	uint64_t *bobpar;       /* Bob's current block parities */
	uint64_t *busy;         /* block has a live search ... */
	uint32_t *sidx;         /* ... at this index of bob->s */
	uint64_t inl[3];        /* MASK passes: aroot, bobpar, busy in place */
	uint32_t inl_sidx[2];
	size_t nneedq;          /* searches of this pass waiting for Alice, */
	struct wq_ent *wq;      /* listed here, in the order they stopped */
	size_t nwq, capwq;
};

struct qw_cascade_bob {
	struct qw_bitvec *key;
	size_t n;
	struct cas_layout *lay;
	unsigned np, cur;
	int phase, hello_sent;
	int total_known, total;
	enum qw_cascade_policy policy;
	unsigned streak_need, streak;
	uint64_t nflips, pass_flips0;
	struct bob_pass ps[QW_CASCADE_MAX_PASSES];
	struct search *s;
	size_t ns, caps;
	uint32_t *ready; /* stack of S_READY searches */
	size_t nready;
	uint32_t *sent;  /* indices of S_SENT searches, in query order */
	size_t nsent;
	uint32_t *freel; /* slots of dead searches, for reuse */
	size_t nfree;
	uint32_t *pend; /* (pass, block) pairs that turned odd */
	size_t npend, cappend;
	size_t expect;  /* answer bits due */
	struct cas_buf out;
	struct qw_cascade_stats st;
};

static inline int bit_get(const uint64_t *m, size_t i)
{
	return (int)((m[i >> 6] >> (i & 63)) & 1);
}

static inline void bit_put(uint64_t *m, size_t i, int b)
{
	uint64_t x = (uint64_t)1 << (i & 63);

	m[i >> 6] = b ? (m[i >> 6] | x) : (m[i >> 6] & ~x);
}

static inline void bit_flip(uint64_t *m, size_t i)
{
	m[i >> 6] ^= (uint64_t)1 << (i & 63);
}

/* ---- Alice's known parities ---------------------------------------------- */

static int sparse_find(const struct bob_pass *P, uint64_t key, size_t *slot)
{
	size_t m = P->hcap - 1, i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & m;

	while (P->hkey[i]) {
		if (P->hkey[i] == key) {
			*slot = i;
			return 1;
		}
		i = (i + 1) & m;
	}
	*slot = i;
	return 0;
}

static int sparse_grow(struct bob_pass *P)
{
	struct bob_pass old = *P;
	size_t cap = P->hcap ? P->hcap * 2 : 256, slot;

	P->hkey = calloc(cap, sizeof(*P->hkey));
	P->hval = calloc(cap, 1);
	if (!P->hkey || !P->hval) {
		free(P->hkey);
		free(P->hval);
		P->hkey = old.hkey;
		P->hval = old.hval;
		return QW_ENOMEM;
	}
	P->hcap = cap;
	for (size_t i = 0; i < old.hcap; i++)
		if (old.hkey[i]) {
			sparse_find(P, old.hkey[i], &slot);
			P->hkey[slot] = old.hkey[i];
			P->hval[slot] = old.hval[i];
		}
	free(old.hkey);
	free(old.hval);
	return 0;
}

/* Alice's parities of the sibling nodes L (even) and L+1 of block b of a
 * dense pass: bit 0 = L known, 1 = its value, 2 = L+1 known, 3 = value. */
static inline unsigned dense_pair(const struct bob_pass *P, uint32_t b, uint64_t L)
{
	size_t i = ((size_t)b * P->stride + (size_t)L) * 2;

	return (unsigned)(P->known[i >> 6] >> (i & 63)) & 15u;
}

/* Alice's parity of node heap of block b, if known: 1 and *v, else 0. */
static int known_get(const struct bob_pass *P, uint32_t b, uint64_t heap, int *v)
{
	if (heap == 1) {
		*v = bit_get(P->aroot, b);
		return 1;
	}
	if (P->kind != CAS_KIND_MASK) {
		size_t i = ((size_t)b * P->stride + (size_t)heap) * 2;
		unsigned x = (unsigned)(P->known[i >> 6] >> (i & 63));

		*v = (int)((x >> 1) & 1);
		return (int)(x & 1);
	} else {
		size_t slot;

		if (!P->hcap || !sparse_find(P, heap * 2 + b + 1, &slot))
			return 0;
		*v = P->hval[slot];
		return 1;
	}
}

static int known_set(struct bob_pass *P, uint32_t b, uint64_t heap, int v)
{
	if (P->kind != CAS_KIND_MASK) {
		/* Two bits per node, known then value, in one word. */
		size_t i = ((size_t)b * P->stride + (size_t)heap) * 2;

		P->known[i >> 6] = (P->known[i >> 6] & ~((uint64_t)3 << (i & 63))) |
				   ((uint64_t)(1 | (v << 1)) << (i & 63));
	} else {
		size_t slot;
		uint64_t key = heap * 2 + b + 1;
		int ret;

		if ((P->hcount + 1) * 2 > P->hcap && (ret = sparse_grow(P)) != 0)
			return ret;
		if (!sparse_find(P, key, &slot)) {
			P->hkey[slot] = key;
			P->hcount++;
		}
		P->hval[slot] = (uint8_t)v;
	}
	return 0;
}

/* ---- object life ----------------------------------------------------------- */

static void pass_free(struct bob_pass *P)
{
	cas_bv_free(P->pk);
	/* Alice's parities, disclosed: no wipe needed. */
	cas_zfree_public(P->known, P->known_bytes);
	free(P->hkey);
	free(P->hval);
	if (P->kind != CAS_KIND_MASK) {
		size_t words = ((P->nb + 63) / 64) * sizeof(uint64_t);

		/* Bob's block parities say something about his key: wiped.
		 * Alice's (disclosed), the busy flags and search indices are
		 * public. */
		cas_zfree_public(P->aroot, words);
		cas_zfree(P->bobpar, words);
		cas_zfree_public(P->busy, words);
		cas_zfree_public(P->sidx, P->nb * sizeof(uint32_t));
	}
	free(P->wq);
	memset(P, 0, sizeof(*P));
}

void qw_cascade_bob_free(struct qw_cascade_bob *bob)
{
	if (!bob)
		return;
	for (unsigned p = 0; p < QW_CASCADE_MAX_PASSES; p++)
		pass_free(&bob->ps[p]);
	cas_layout_put(bob->lay);
	free(bob->s);
	free(bob->ready);
	free(bob->sent);
	free(bob->freel);
	free(bob->pend);
	cas_buf_free(&bob->out);
	free(bob);
}

struct qw_cascade_bob *qw_cascade_bob_new(const struct qw_cascade_params *p,
					  struct qw_bitvec *key, double qber_est,
					  uint64_t seed)
{
	struct qw_cascade_bob *bob;
	uint32_t k[QW_CASCADE_MAX_PASSES];
	unsigned np;

	QW_REQUIRE(p != NULL && key != NULL);
	if (key->nbits == 0 || key->nbits > QW_CASCADE_MAX_BITS)
		return NULL;
	if (qw_cascade_schedule(p, key->nbits, qber_est, k, &np))
		return NULL;
	bob = calloc(1, sizeof(*bob));
	if (!bob)
		return NULL;
	bob->key = key;
	bob->n = key->nbits;
	bob->np = np;
	bob->policy = p->policy;
	bob->streak_need = p->biconf_streak;
	bob->lay = cas_layout_get(bob->n, seed, np, k);
	if (!bob->lay)
		goto fail;
	for (unsigned i = 0; i < np; i++) {
		struct bob_pass *P = &bob->ps[i];
		size_t words;

		P->kind = bob->lay->kind[i];
		P->k = k[i];
		P->kshift = (k[i] & (k[i] - 1)) == 0 ? cas_depth(k[i]) : 0;
		P->nb = cas_nblocks(bob->lay, i);
		if (P->kind == CAS_KIND_MASK) {
			/* Two blocks: no allocation. */
			P->aroot = &P->inl[0];
			P->bobpar = &P->inl[1];
			P->busy = &P->inl[2];
			P->sidx = P->inl_sidx;
			continue;
		}
		words = (P->nb + 63) / 64;
		P->aroot = cas_zalloc(words * sizeof(uint64_t));
		P->bobpar = cas_zalloc(words * sizeof(uint64_t));
		P->busy = cas_zalloc(words * sizeof(uint64_t));
		P->sidx = cas_zalloc(P->nb * sizeof(uint32_t));
		if (!P->aroot || !P->bobpar || !P->busy || !P->sidx)
			goto fail;
		{
			size_t bits;

			P->stride = (size_t)2 << cas_depth(P->k);
			bits = (size_t)P->nb * P->stride;
			P->known_bytes = ((2 * bits + 63) / 64) * sizeof(uint64_t);
			P->known = cas_zalloc(P->known_bytes);
			if (!P->known)
				goto fail;
		}
	}
	return bob;
fail:
	qw_cascade_bob_free(bob);
	return NULL;
}

void qw_cascade_bob_stats(const struct qw_cascade_bob *bob, struct qw_cascade_stats *st)
{
	*st = bob->st;
	st->passes = bob->cur + (bob->phase == PH_DONE ? 0 : 1);
	if (st->passes > bob->np)
		st->passes = bob->np;
}

/* ---- searches ------------------------------------------------------------------ */

static int bob_parity(const struct qw_cascade_bob *bob, unsigned p, uint32_t b, size_t lo,
		      size_t hi)
{
	const struct bob_pass *P = &bob->ps[p];

	switch (P->kind) {
	case CAS_KIND_MASK:
		return cas_masked_parity(bob->key, bob->lay->mask[p], b == 1, lo, hi);
	case CAS_KIND_PERM:
		return cas_parity(P->pk, lo, hi);
	default:
		return cas_parity(bob->key, lo, hi);
	}
}

static int push_pending(struct qw_cascade_bob *bob, unsigned p, uint32_t b)
{
	if (bob->npend + 2 > bob->cappend) {
		size_t cap = bob->cappend ? bob->cappend * 2 : 256;
		uint32_t *np = realloc(bob->pend, cap * sizeof(*np));

		if (!np)
			return QW_ENOMEM;
		bob->pend = np;
		bob->cappend = cap;
	}
	bob->pend[bob->npend++] = p;
	bob->pend[bob->npend++] = b;
	return 0;
}

/* A search is on the ready stack at most once (it is pushed only when it
 * turns S_READY), so the stack fits one entry per search slot. */
static void push_ready(struct qw_cascade_bob *bob, uint32_t i)
{
	bob->ready[bob->nready++] = i;
}

static void make_ready(struct qw_cascade_bob *bob, uint32_t i)
{
	struct search *s = &bob->s[i];

	if (s->state == S_NEEDQ) {
		/* Leave the wait list: the last entry takes this place. */
		struct bob_pass *P = &bob->ps[s->pass];
		struct wq_ent last = P->wq[--P->nwq];

		if (s->wqpos != P->nwq) {
			P->wq[s->wqpos] = last;
			bob->s[last.idx].wqpos = s->wqpos;
		}
		P->nneedq--;
	}
	s->state = S_READY;
	push_ready(bob, i);
}

/* Flip key bit x (an error found) in every view. Bob's parity of each
 * started pass's block holding x toggles; so does that of a live search's
 * node when x lies in it (a waiting node then turns even and its search
 * must move). Blocks that turn odd are queued. */
static int flip(struct qw_cascade_bob *bob, size_t x)
{
	size_t ys[QW_CASCADE_MAX_PASSES];
	unsigned np = 0;
	int ret;

	while (np < bob->np && bob->ps[np].started) {
		ys[np] = bob->ps[np].kind == CAS_KIND_PERM ? cas_fe_inv(&bob->lay->fe[np], (uint32_t)x) : x;
		np++;
	}
	qw_bitvec_flip(bob->key, x);
	bob->nflips++;
	bob->st.corrected_bits++;
	for (unsigned p = 0; p < np; p++) {
		struct bob_pass *P = &bob->ps[p];
		size_t y = ys[p];
		uint32_t b;

		if (P->kind == CAS_KIND_MASK) {
			b = qw_bitvec_get(bob->lay->mask[p], x) ? 0 : 1;
		} else {
			if (P->kind == CAS_KIND_PERM)
				qw_bitvec_flip(P->pk, y);
			b = (uint32_t)(P->kshift ? y >> P->kshift : y / P->k);
		}
		bit_flip(P->bobpar, b);
		if (bit_get(P->busy, b)) {
			uint32_t i = P->sidx[b];
			struct search *s = &bob->s[i];

			if (y >= s->lo && y < s->hi) {
				s->bpar ^= 1;
				if (s->state == S_NEEDQ)
					make_ready(bob, i);
			}
		} else if (P->started > 1 && bit_get(P->bobpar, b) != bit_get(P->aroot, b)) {
			if ((ret = push_pending(bob, p, b)) != 0)
				return ret;
		}
	}
	return 0;
}

static void search_root(struct qw_cascade_bob *bob, struct search *s)
{
	const struct bob_pass *P = &bob->ps[s->pass];
	size_t lo, hi;

	s->heap = 1;
	cas_block_range(bob->lay, s->pass, s->block, &lo, &hi);
	s->lo = (uint32_t)lo;
	s->hi = (uint32_t)hi;
	s->bpar = (uint8_t)bit_get(P->bobpar, s->block);
	s->apar = (uint8_t)bit_get(P->aroot, s->block);
}

static void search_end(struct qw_cascade_bob *bob, struct search *s)
{
	s->state = S_DEAD;
	bit_put(bob->ps[s->pass].busy, s->block, 0);
	bob->freel[bob->nfree++] = (uint32_t)(s - bob->s);
}

/* Descend from search i's node as far as known parities allow. Ends with
 * the search dead (its block is even) or waiting for Alice's parity of the
 * left child (S_NEEDQ). An odd leaf is flipped and the search goes on from
 * its block, which may hold further errors. */
static int advance(struct qw_cascade_bob *bob, uint32_t i)
{
	struct search *s = &bob->s[i];
	unsigned p = s->pass;
	struct bob_pass *P = &bob->ps[p];
	const struct qw_bitvec *mask = bob->lay->mask[p];
	int inv = s->block == 1, ret;

	for (;;) {
		int av = s->apar, al, ar, bl, kl, kr;
		uint64_t L;
		uint32_t mid;
		size_t x = SIZE_MAX;

		if (av == s->bpar) {
			if (s->heap == 1) {
				search_end(bob, s);
				return 0;
			}
			/* Fixed by another flip: the block may still be odd. */
			search_root(bob, s);
			continue;
		}
		if (P->kind == CAS_KIND_MASK) {
			size_t m1;

			if (cas_masked_few(mask, inv, s->lo, s->hi, &m1) == 1)
				x = m1;
		} else if (s->hi - s->lo == 1) {
			x = P->kind == CAS_KIND_PERM ? cas_fe_fwd(&bob->lay->fe[p], (uint32_t)s->lo) : s->lo;
		}
		if (x != SIZE_MAX) {
			if ((ret = flip(bob, x)) != 0)
				return ret;
			s = &bob->s[i];
			search_root(bob, s);
			continue;
		}
		mid = (uint32_t)cas_mid(s->lo, s->hi);
		L = (uint64_t)s->heap * 2;
		if (P->kind == CAS_KIND_MASK) {
			/* A half with no member of the set has parity 0 on
			 * both sides: no question needed. */
			size_t m1;

			if (cas_masked_few(mask, inv, s->lo, mid, &m1) == 0) {
				s->heap = (uint32_t)(L + 1);
				s->lo = mid;
				continue;
			}
			if (cas_masked_few(mask, inv, mid, s->hi, &m1) == 0) {
				s->heap = (uint32_t)L;
				s->hi = mid;
				continue;
			}
			kl = known_get(P, s->block, L, &al);
			kr = known_get(P, s->block, L + 1, &ar);
		} else {
			unsigned pr = dense_pair(P, s->block, L);

			kl = (int)(pr & 1);
			al = (int)((pr >> 1) & 1);
			kr = (int)((pr >> 2) & 1);
			ar = (int)((pr >> 3) & 1);
		}
		if (!kl) {
			if (!kr) {
				if (P->nwq == P->capwq) {
					size_t cap = P->capwq ? P->capwq * 2 : 64;
					struct wq_ent *nw = realloc(P->wq, cap * sizeof(*nw));

					if (!nw)
						return QW_ENOMEM;
					P->wq = nw;
					P->capwq = cap;
				}
				s->wqpos = (uint32_t)P->nwq;
				P->wq[P->nwq].idx = i;
				P->wq[P->nwq].block = s->block;
				P->wq[P->nwq++].heap = s->heap;
				s->state = S_NEEDQ;
				P->nneedq++;
				return 0;
			}
			al = av ^ ar;
			if ((ret = known_set(P, s->block, L, al)) != 0)
				return ret;
		} else if (!kr) {
			if ((ret = known_set(P, s->block, L + 1, av ^ al)) != 0)
				return ret;
		}
		bl = bob_parity(bob, p, s->block, s->lo, mid);
		if (bl != al) {
			s->heap = (uint32_t)L;
			s->hi = mid;
			s->bpar = (uint8_t)bl;
			s->apar = (uint8_t)al;
		} else {
			s->heap = (uint32_t)(L + 1);
			s->lo = mid;
			s->bpar ^= (uint8_t)bl;
			s->apar = (uint8_t)(av ^ al);
		}
	}
}

static int add_search(struct qw_cascade_bob *bob, unsigned p, uint32_t b)
{
	struct bob_pass *P = &bob->ps[p];
	struct search *s;
	uint32_t i;

	if (bit_get(P->busy, b) || bit_get(P->bobpar, b) == bit_get(P->aroot, b))
		return 0;
	if (bob->nfree) {
		i = bob->freel[--bob->nfree];
	} else {
		if (bob->ns == bob->caps) {
			size_t cap = bob->caps ? bob->caps * 2 : 256;
			struct search *ns = realloc(bob->s, cap * sizeof(*ns));
			uint32_t *nr = realloc(bob->ready, cap * sizeof(*nr));
			uint32_t *nt = realloc(bob->sent, cap * sizeof(*nt));
			uint32_t *nf = realloc(bob->freel, cap * sizeof(*nf));

			if (ns)
				bob->s = ns;
			if (nr)
				bob->ready = nr;
			if (nt)
				bob->sent = nt;
			if (nf)
				bob->freel = nf;
			if (!ns || !nr || !nt || !nf)
				return QW_ENOMEM;
			bob->caps = cap;
		}
		i = (uint32_t)bob->ns++;
	}
	s = &bob->s[i];
	s->pass = (uint8_t)p;
	s->block = b;
	search_root(bob, s);
	P->sidx[b] = i;
	bit_put(P->busy, b, 1);
	s->state = S_READY;
	push_ready(bob, i);
	return 0;
}

/* Prefetch the node-table line that search i reads first. The tables of a
 * 1e6-bit frame are megabytes and a round touches thousands of blocks, so
 * that load missed the caches: it was a third of Bob's time. */
#define PREFETCH_AHEAD 6

/* Address of that line (the key's first word for a BICONF pass, whose
 * tables are small). A function returning the address, not one issuing the
 * prefetch: gcc 12 deems a void function whose only effect is a prefetch
 * pure and drops the calls. */
static inline const void *search_line(const struct qw_cascade_bob *bob, uint32_t i)
{
	const struct search *s = &bob->s[i];
	const struct bob_pass *P = &bob->ps[s->pass];
	size_t j;

	if (P->kind == CAS_KIND_MASK)
		return bob->key->w;
	j = ((size_t)s->block * P->stride + (size_t)s->heap * 2) * 2;
	return P->known + (j >> 6);
}

/* Run every search as far as it goes without Alice. */
static int settle(struct qw_cascade_bob *bob)
{
	int ret;

	for (;;) {
		while (bob->npend) {
			uint32_t b = bob->pend[--bob->npend];
			uint32_t p = bob->pend[--bob->npend];

			if ((ret = add_search(bob, p, b)) != 0)
				return ret;
		}
		/* Last in, first out: a search that turned ready through a
		 * flip is continued at once, which measured fewer rounds than
		 * first-in-first-out. */
		if (!bob->nready)
			return 0;
		if (bob->nready > PREFETCH_AHEAD)
			__builtin_prefetch(search_line(bob, bob->ready[bob->nready - 1 - PREFETCH_AHEAD]),
					   1, 3);
		if ((ret = advance(bob, bob->ready[--bob->nready])) != 0)
			return ret;
	}
}

/* ---- messages ------------------------------------------------------------------ */

static int msg_begin(struct qw_cascade_bob *bob)
{
	const struct cas_layout *l = bob->lay;

	bob->out.len = 0;
	if (cas_buf_reserve(&bob->out, 32 + 10 * (size_t)l->npasses))
		return QW_ENOMEM;
	if (bob->hello_sent) {
		cas_buf_put_u8(&bob->out, CAS_MSG_QUERY);
		return 0;
	}
	cas_buf_put_u8(&bob->out, CAS_MSG_HELLO);
	cas_buf_put_u8(&bob->out, CAS_WIRE_VERSION);
	cas_buf_put_var(&bob->out, l->n);
	for (unsigned i = 0; i < 8; i++)
		cas_buf_put_u8(&bob->out, (uint8_t)(l->seed >> (8 * i)));
	cas_buf_put_var(&bob->out, l->npasses);
	for (unsigned p = 0; p < l->npasses; p++)
		cas_buf_put_var(&bob->out, l->k[p]);
	bob->hello_sent = 1;
	return 0;
}

/* Start pass cur: Bob's parities, and the request for Alice's. Returns 1
 * if a message was produced, 0 if every block parity was inferred. */
static int start_pass(struct qw_cascade_bob *bob)
{
	unsigned p = bob->cur;
	struct bob_pass *P = &bob->ps[p];
	uint32_t cnt;
	int ret;

	P->started = 1;
	bob->pass_flips0 = bob->nflips;
	if (P->kind == CAS_KIND_PERM) {
		P->pk = cas_bv_new(bob->n);
		if (!P->pk)
			return QW_ENOMEM;
		cas_permute(P->pk, bob->key, bob->lay->perm[p]);
	}
	if (P->kind == CAS_KIND_MASK) {
		const uint64_t *kw = bob->key->w, *mw = bob->lay->mask[p]->w;
		uint64_t in[4] = { 0, 0, 0, 0 }, all[4] = { 0, 0, 0, 0 };
		size_t nw = bob->key->nwords, w = 0;

		/* Four independent accumulators: one pass over the key gives
		 * the parities of S and of the whole key. */
		for (; w + 4 <= nw; w += 4)
			for (unsigned j = 0; j < 4; j++) {
				in[j] ^= kw[w + j] & mw[w + j];
				all[j] ^= kw[w + j];
			}
		for (; w < nw; w++) {
			in[0] ^= kw[w] & mw[w];
			all[0] ^= kw[w];
		}
		in[0] ^= in[1] ^ in[2] ^ in[3];
		all[0] ^= all[1] ^ all[2] ^ all[3];
		bit_put(P->bobpar, 0, __builtin_parityll(in[0]));
		bit_put(P->bobpar, 1, __builtin_parityll(in[0] ^ all[0]));
	} else {
		cas_block_parities(P->kind == CAS_KIND_PERM ? P->pk : bob->key, P->k, 0, P->nb,
				   P->bobpar, 0);
	}
	cnt = bob->total_known ? P->nb - 1 : P->nb;
	if (cnt == 0)
		return 0;
	if ((ret = msg_begin(bob)) != 0)
		return ret;
	cas_buf_put_var(&bob->out, 1);
	cas_buf_put_var(&bob->out, (uint64_t)p * 2 + 1);
	cas_buf_put_var(&bob->out, 0);
	cas_buf_put_var(&bob->out, cnt);
	bob->expect = cnt;
	return 1;
}

/* Alice's block parities of pass cur are known (bits in aroot for the
 * asked blocks): infer the rest and queue odd blocks. */
static int roots_known(struct qw_cascade_bob *bob)
{
	struct bob_pass *P = &bob->ps[bob->cur];
	size_t words = (P->nb + 63) / 64;
	int ret;

	if (bob->total_known) {
		int x = bob->total;

		for (uint32_t b = 0; b + 1 < P->nb; b++)
			x ^= bit_get(P->aroot, b);
		bit_put(P->aroot, P->nb - 1, x);
	} else {
		uint64_t acc = 0;

		for (size_t w = 0; w < words; w++)
			acc ^= P->aroot[w];
		bob->total = __builtin_parityll(acc);
		bob->total_known = 1;
	}
	P->started = 2;
	for (size_t w = 0; w < words; w++) {
		uint64_t d = P->aroot[w] ^ P->bobpar[w];

		while (d) {
			uint32_t b = (uint32_t)((w << 6) + (size_t)__builtin_ctzll(d));

			d &= d - 1;
			if ((ret = add_search(bob, bob->cur, b)) != 0)
				return ret;
		}
	}
	return 0;
}

/* Ask about the waiting searches of this round; returns 1 if a message
 * was produced, 0 if no search waits. LEAST_LEAK asks only for the
 * lowest-numbered pass with waiting searches (smallest blocks first, as in
 * the sequential protocol), FEWEST_ROUNDS for all. */
static int emit_queries(struct qw_cascade_bob *bob)
{
	unsigned pmin = bob->np, ngroups = 0;
	int ret;

	/* Only started passes (p <= cur) can have searches. */
	for (unsigned p = 0; p <= bob->cur && p < bob->np; p++)
		if (bob->ps[p].nneedq) {
			if (pmin == bob->np)
				pmin = p;
			ngroups++;
		}
	if (pmin == bob->np)
		return 0;
	if (bob->policy == QW_CASCADE_LEAST_LEAK)
		ngroups = 1;
	if ((ret = msg_begin(bob)) != 0)
		return ret;
	if (cas_buf_reserve(&bob->out, 10 + (size_t)ngroups * 20 + bob->ns * 15))
		return QW_ENOMEM;
	cas_buf_put_var(&bob->out, ngroups);
	bob->expect = 0;
	bob->nsent = 0;
	for (unsigned p = pmin; p < bob->np && ngroups; p++) {
		struct bob_pass *P = &bob->ps[p];

		if (!P->nneedq)
			continue;
		ngroups--;
		cas_buf_put_var(&bob->out, (uint64_t)p * 2);
		cas_buf_put_var(&bob->out, P->nneedq);
		for (size_t t = 0; t < P->nwq; t++) {
			const struct wq_ent *e = &P->wq[t];

			cas_buf_put_var(&bob->out, e->block);
			cas_buf_put_var(&bob->out, (uint64_t)e->heap * 2);
			bob->sent[bob->nsent++] = e->idx;
		}
		QW_REQUIRE(P->nwq == P->nneedq);
		bob->expect += P->nneedq;
		P->nneedq = 0;
		P->nwq = 0;
	}
	return 1;
}

static int emit_done(struct qw_cascade_bob *bob)
{
	bob->out.len = 0;
	if (cas_buf_reserve(&bob->out, 32))
		return QW_ENOMEM;
	cas_buf_put_u8(&bob->out, CAS_MSG_DONE);
	cas_buf_put_var(&bob->out, bob->st.leaked_bits);
	cas_buf_put_var(&bob->out, bob->st.corrected_bits);
	cas_buf_put_var(&bob->out, bob->st.round_trips);
	bob->st.bytes_to_alice += bob->out.len;
	bob->phase = PH_DONE;
	return 0;
}

int qw_cascade_bob_next(struct qw_cascade_bob *bob, const uint8_t **msg, size_t *len)
{
	int ret;

	QW_REQUIRE(bob != NULL && msg != NULL && len != NULL);
	for (;;) {
		switch (bob->phase) {
		case PH_ROOTS_DUE:
			ret = start_pass(bob);
			if (ret < 0)
				return ret;
			if (ret == 1) {
				bob->phase = PH_ROOTS_WAIT;
				goto send;
			}
			if ((ret = roots_known(bob)) != 0)
				return ret;
			bob->phase = PH_CORRECT;
			break;
		case PH_CORRECT:
			if ((ret = settle(bob)) != 0)
				return ret;
			ret = emit_queries(bob);
			if (ret < 0)
				return ret;
			if (ret == 1) {
				bob->phase = PH_WAIT;
				goto send;
			}
			/* Pass complete. A BICONF pass that found nothing
			 * extends the error-free streak. */
			if (bob->ps[bob->cur].kind == CAS_KIND_MASK)
				bob->streak = bob->nflips == bob->pass_flips0 ? bob->streak + 1 : 0;
			bob->cur++;
			if (bob->cur >= bob->np ||
			    (bob->streak_need && bob->streak >= bob->streak_need)) {
				if ((ret = emit_done(bob)) != 0)
					return ret;
				*msg = bob->out.p;
				*len = bob->out.len;
				return 1;
			}
			bob->phase = PH_ROOTS_DUE;
			break;
		case PH_DONE:
			*msg = bob->out.p;
			*len = bob->out.len;
			return 1;
		default:
			return QW_ESTATE;
		}
	}
send:
	bob->st.bytes_to_alice += bob->out.len;
	*msg = bob->out.p;
	*len = bob->out.len;
	return 0;
}

int qw_cascade_bob_consume(struct qw_cascade_bob *bob, const uint8_t *ans, size_t len)
{
	struct cas_rd r = { ans, len, 0 };
	uint8_t type;
	uint64_t cnt;
	size_t nbytes, i;
	const uint8_t *bits;
	int ret;

	QW_REQUIRE(bob != NULL && (ans != NULL || len == 0));
	if (bob->phase != PH_ROOTS_WAIT && bob->phase != PH_WAIT)
		return QW_ESTATE;
	if (cas_rd_u8(&r, &type) || type != CAS_MSG_ANSWER || cas_rd_var(&r, &cnt) ||
	    cnt != bob->expect)
		return QW_EPARSE;
	nbytes = (bob->expect + 7) / 8;
	if (len - r.off != nbytes)
		return QW_EPARSE;
	bits = ans + r.off;
	if ((bob->expect & 7) && (bits[nbytes - 1] >> (bob->expect & 7)))
		return QW_EPARSE;
	if (bob->phase == PH_ROOTS_WAIT) {
		struct bob_pass *P = &bob->ps[bob->cur];

		for (i = 0; i < bob->expect; i++)
			bit_put(P->aroot, i, (bits[i >> 3] >> (i & 7)) & 1);
		if ((ret = roots_known(bob)) != 0)
			return ret;
	} else {
		for (i = 0; i < bob->nsent; i++) {
			struct search *s = &bob->s[bob->sent[i]];
			struct bob_pass *P = &bob->ps[s->pass];
			int al = (bits[i >> 3] >> (i & 7)) & 1, av = s->apar;

			if (i + PREFETCH_AHEAD < bob->nsent)
				__builtin_prefetch(search_line(bob, bob->sent[i + PREFETCH_AHEAD]), 1, 3);
			if (P->kind != CAS_KIND_MASK) {
				/* Both children at once: four bits, one word. */
				size_t j = ((size_t)s->block * P->stride + (size_t)s->heap * 2) * 2;

				P->known[j >> 6] = (P->known[j >> 6] & ~((uint64_t)15 << (j & 63))) |
						   ((uint64_t)(5u | ((unsigned)al << 1) |
							       ((unsigned)(av ^ al) << 3))
						    << (j & 63));
				/* The next step reads the chosen child's children. */
				j = ((size_t)s->block * P->stride + (size_t)s->heap * 4) * 2;
				if (j >> 6 < ((size_t)P->nb * P->stride * 2 + 63) >> 6)
					__builtin_prefetch(&P->known[j >> 6]);
			} else if ((ret = known_set(P, s->block, (uint64_t)s->heap * 2, al)) != 0 ||
				   (ret = known_set(P, s->block, (uint64_t)s->heap * 2 + 1, av ^ al)) != 0) {
				return ret;
			}
			s->state = S_SENT; /* still S_NEEDQ: emit_queries leaves it */
			make_ready(bob, bob->sent[i]);
		}
		bob->nsent = 0;
	}
	bob->st.leaked_bits += bob->expect;
	bob->st.round_trips++;
	bob->st.bytes_to_bob += len;
	bob->expect = 0;
	bob->phase = PH_CORRECT;
	return 0;
}
