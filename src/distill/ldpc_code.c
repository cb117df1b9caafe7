/* Construction of the quasi-cyclic LDPC mother codes, their puncturing and
 * shortening orders, the process-wide code cache and syndrome computation. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "distill/ldpc_internal.h"
#include "qwave/rng.h"

/* Variable-node degree distributions, edge perspective (lambda_i = share of
 * edges on degree-i variables), optimised for the BSC with discretised
 * density evolution: Elkouss, Leverrier, Alleaume, Boutros, ISIT 2009,
 * arXiv:0901.2140, Table I (lambda(x) = sum lambda_i x^(i-1)). The check
 * side is made concentrated (all row degrees within one of each other),
 * which the table's rho(x) is, or nearly is, for every rate. */
struct deg_term {
	unsigned short deg;
	double lambda;
};

#define MAX_TERMS 20
static const struct deg_term lambda_table[QW_LDPC_NRATES][MAX_TERMS + 1] = {
	/* R = 0.50, threshold 0.1071 */
	{ { 2, 0.14438 }, { 3, 0.19026 }, { 4, 0.01836 }, { 5, 0.00233 }, { 6, 0.04697 },
	  { 8, 0.053943 }, { 9, 0.05590 }, { 10, 0.01290 }, { 11, 0.00162 }, { 14, 0.06159 },
	  { 15, 0.13115 }, { 17, 0.01481 }, { 47, 0.00879 }, { 49, 0.00650 }, { 55, 0.00210 },
	  { 56, 0.00099 }, { 57, 0.11178 }, { 58, 0.06238 }, { 59, 0.05094 }, { 66, 0.02230 },
	  { 0, 0 } },
	/* R = 0.55, threshold 0.0904 */
	{ { 2, 0.16880 }, { 3, 0.20994 }, { 6, 0.18095 }, { 15, 0.03846 }, { 16, 0.02635 },
	  { 18, 0.23454 }, { 19, 0.05815 }, { 31, 0.08280 }, { 0, 0 } },
	/* R = 0.60, threshold 0.0766 */
	{ { 2, 0.11040 }, { 3, 0.20804 }, { 8, 0.14163 }, { 9, 0.14858 }, { 26, 0.14438 },
	  { 27, 0.08909 }, { 46, 0.00748 }, { 71, 0.15038 }, { 0, 0 } },
	/* R = 0.65, threshold 0.0633 */
	{ { 2, 0.10451 }, { 3, 0.15652 }, { 4, 0.08057 }, { 5, 0.00056 }, { 9, 0.12151 },
	  { 13, 0.10485 }, { 15, 0.10719 }, { 21, 0.00771 }, { 51, 0.31656 }, { 0, 0 } },
	/* R = 0.70, threshold 0.0504 */
	{ { 2, 0.05343 }, { 3, 0.29406 }, { 6, 0.00896 }, { 9, 0.15571 }, { 12, 0.12189 },
	  { 25, 0.19872 }, { 46, 0.09572 }, { 62, 0.02741 }, { 65, 0.04056 }, { 73, 0.00354 },
	  { 0, 0 } },
	/* R = 0.75, threshold 0.0392 */
	{ { 2, 0.10805 }, { 3, 0.09511 }, { 4, 0.01449 }, { 5, 0.13764 }, { 6, 0.10667 },
	  { 7, 0.05288 }, { 28, 0.01107 }, { 31, 0.47408 }, { 0, 0 } },
	/* R = 0.80, threshold 0.0298 */
	{ { 2, 0.09420 }, { 3, 0.18088 }, { 6, 0.11972 }, { 7, 0.08550 }, { 8, 0.09816 },
	  { 17, 0.07194 }, { 26, 0.34960 }, { 0, 0 } },
	/* R = 0.85, threshold 0.0199 */
	{ { 2, 0.04528 }, { 3, 0.20537 }, { 4, 0.05878 }, { 5, 0.094274 }, { 6, 0.08454 },
	  { 7, 0.01176 }, { 9, 0.05137 }, { 21, 0.50015 }, { 0, 0 } },
	/* R = 0.90, threshold 0.0109 */
	{ { 2, 0.07689 }, { 3, 0.28096 }, { 5, 0.08933 }, { 9, 0.19620 }, { 12, 0.30631 },
	  { 21, 0.05031 }, { 0, 0 } },
};

double qw_ldpc_mother_rate(unsigned i)
{
	return 0.5 + 0.05 * (double)i;
}

void ldpc_code_free(struct qw_ldpc_code *c)
{
	if (!c)
		return;
	free(c->row_start);
	free(c->ent_col);
	free(c->ent_row);
	free(c->ent_shift);
	free(c->col_start);
	free(c->col_ent);
	free(c->punct);
	free(c->shorten);
	free(c);
}

/* Column degrees: node-perspective fractions Lambda_i proportional to
 * lambda_i / i, rounded to nb columns by largest remainder; sorted
 * descending. Degrees above mb are capped (none of the table's are, for
 * nb = 256). */
static void column_degrees(unsigned rate, unsigned nb, unsigned mb, unsigned *deg)
{
	const struct deg_term *t = lambda_table[rate];
	double sum = 0, rem[MAX_TERMS];
	unsigned cnt[MAX_TERMS], nt = 0, total = 0, k = 0;

	while (t[nt].deg)
		sum += t[nt].lambda / t[nt].deg, nt++;
	for (unsigned i = 0; i < nt; i++) {
		double want = (double)nb * (t[i].lambda / t[i].deg) / sum;

		cnt[i] = (unsigned)floor(want);
		rem[i] = want - cnt[i];
		total += cnt[i];
	}
	while (total < nb) {
		unsigned best = 0;

		for (unsigned i = 1; i < nt; i++)
			if (rem[i] > rem[best])
				best = i;
		cnt[best]++;
		rem[best] = -1;
		total++;
	}
	for (int i = (int)nt - 1; i >= 0; i--)
		for (unsigned c = 0; c < cnt[i]; c++)
			deg[k++] = t[i].deg < mb ? t[i].deg : mb;
}

/* Shift conflicts of entry e (row i, column j) against every assigned
 * entry: value v closes a 4-cycle i-j-i2-j2 when
 * v = s(i,j2) - s(i2,j2) + s(i2,j) (mod Z). cnt receives, per v, the
 * number of cycles it would close. shift[] is the dense base matrix
 * (-1 = no entry or not yet assigned). */
static void shift_conflicts(const struct qw_ldpc_code *c, const int32_t *shift, unsigned i,
			    unsigned j, uint32_t *cnt)
{
	unsigned z = c->z, nb = c->nb;

	memset(cnt, 0, z * sizeof(*cnt));
	for (uint32_t a = c->col_start[j]; a < c->col_start[j + 1]; a++) {
		unsigned i2 = c->ent_row[c->col_ent[a]];
		int32_t s_i2j;

		if (i2 == i || (s_i2j = shift[i2 * nb + j]) < 0)
			continue;
		for (uint32_t e = c->row_start[i]; e < c->row_start[i + 1]; e++) {
			unsigned j2 = c->ent_col[e];
			int32_t a1, a2;

			if (j2 == j || (a1 = shift[i * nb + j2]) < 0 || (a2 = shift[i2 * nb + j2]) < 0)
				continue;
			cnt[(uint32_t)(((int64_t)a1 - a2 + s_i2j + 2 * (int64_t)z) % z)]++;
		}
	}
}

/* Greedy minimum-conflict shifts, then repair passes over entries still
 * closing 4-cycles (each pass re-chooses their shifts against all others). */
static void choose_shifts(struct qw_ldpc_code *c, struct qw_rng *rng, int32_t *shift,
			  uint32_t *cnt)
{
	unsigned z = c->z, nb = c->nb;

	for (unsigned j = 0; j < nb; j++) {
		for (uint32_t a = c->col_start[j]; a < c->col_start[j + 1]; a++) {
			unsigned i = c->ent_row[c->col_ent[a]];
			unsigned off = (unsigned)qw_rng_below(rng, z), best = off;

			shift_conflicts(c, shift, i, j, cnt);
			for (unsigned v = 0; v < z; v++) {
				unsigned s = (off + v) % z;

				if (cnt[s] < cnt[best])
					best = s;
			}
			shift[i * nb + j] = (int32_t)best;
		}
	}
	for (int pass = 0; pass < 8; pass++) {
		int changed = 0;

		for (unsigned i = 0; i < c->mb; i++) {
			for (uint32_t e = c->row_start[i]; e < c->row_start[i + 1]; e++) {
				unsigned j = c->ent_col[e], off, best;
				int32_t cur = shift[i * nb + j];

				shift[i * nb + j] = -1;
				shift_conflicts(c, shift, i, j, cnt);
				if (cnt[cur] == 0) {
					shift[i * nb + j] = cur;
					continue;
				}
				off = (unsigned)qw_rng_below(rng, z);
				best = off;
				for (unsigned v = 0; v < z; v++) {
					unsigned s = (off + v) % z;

					if (cnt[s] < cnt[best])
						best = s;
				}
				shift[i * nb + j] = (int32_t)best;
				changed = 1;
			}
		}
		if (!changed)
			break;
	}
}

/* Base 4-cycles whose shift sum vanishes; each gives z lifted 4-cycles. */
static uint64_t count_4cycles(const struct qw_ldpc_code *c, const int32_t *shift)
{
	unsigned nb = c->nb, z = c->z;
	uint64_t bad = 0;

	for (unsigned i1 = 0; i1 < c->mb; i1++)
		for (unsigned i2 = i1 + 1; i2 < c->mb; i2++)
			for (uint32_t e = c->row_start[i1]; e < c->row_start[i1 + 1]; e++) {
				unsigned j1 = c->ent_col[e];

				if (shift[i2 * nb + j1] < 0)
					continue;
				for (uint32_t f = e + 1; f < c->row_start[i1 + 1]; f++) {
					unsigned j2 = c->ent_col[f];
					int64_t d;

					if (shift[i2 * nb + j2] < 0)
						continue;
					d = (int64_t)shift[i1 * nb + j1] - shift[i1 * nb + j2] +
					    shift[i2 * nb + j2] - shift[i2 * nb + j1];
					if (((d % z) + z) % z == 0)
						bad++;
				}
			}
	return bad * z;
}

/* Untainted puncturing (Elkouss, Martinez-Mateo, Martin, IEEE WCL 1(6)
 * 2012): a variable may be punctured only if none of its checks already
 * has a punctured neighbour. Candidates are visited by increasing degree
 * (random order within a degree), which lets more variables qualify. Each
 * punctured variable keeps checks of its own, so the punctured columns of
 * H are linearly independent - the fact the leak count m - p relies on. */
static int puncture_order(struct qw_ldpc_code *c, struct qw_rng *rng, const unsigned *coldeg)
{
	size_t n = c->n, np = 0, ns = 0;
	uint32_t *perm = malloc(n * sizeof(*perm)), *sorted = malloc(n * sizeof(*sorted));
	uint8_t *chk_used = calloc(c->m, 1), *is_p = calloc(n, 1);
	size_t byd[128] = { 0 };
	int ret = QW_ENOMEM;

	if (!perm || !sorted || !chk_used || !is_p)
		goto out;
	for (size_t v = 0; v < n; v++)
		perm[v] = (uint32_t)v;
	for (size_t v = n - 1; v > 0; v--) {
		size_t r = (size_t)qw_rng_below(rng, v + 1);
		uint32_t t = perm[v];

		perm[v] = perm[r];
		perm[r] = t;
	}
	/* counting sort by degree, stable */
	for (size_t v = 0; v < n; v++)
		byd[coldeg[perm[v] / c->z] + 1]++;
	for (unsigned d = 1; d < 128; d++)
		byd[d] += byd[d - 1];
	for (size_t v = 0; v < n; v++)
		sorted[byd[coldeg[perm[v] / c->z]]++] = perm[v];
	c->punct = malloc(n * sizeof(*c->punct));
	if (!c->punct)
		goto out;
	for (size_t a = 0; a < n && np < n / 8; a++) {
		uint32_t v = sorted[a], j = v / c->z, l = v % c->z;
		int ok = 1;

		for (uint32_t b = c->col_start[j]; b < c->col_start[j + 1] && ok; b++) {
			uint32_t e = c->col_ent[b], i = c->ent_row[e];

			ok = !chk_used[(size_t)i * c->z + (l + c->z - c->ent_shift[e]) % c->z];
		}
		if (!ok)
			continue;
		for (uint32_t b = c->col_start[j]; b < c->col_start[j + 1]; b++) {
			uint32_t e = c->col_ent[b], i = c->ent_row[e];

			chk_used[(size_t)i * c->z + (l + c->z - c->ent_shift[e]) % c->z] = 1;
		}
		c->punct[np++] = v;
		is_p[v] = 1;
	}
	c->p_max = np;
	c->shorten = malloc((n - np) * sizeof(*c->shorten));
	if (!c->shorten)
		goto out;
	/* Shortening order: the remaining variables in the random order. */
	for (size_t v = 0; v < n; v++)
		if (!is_p[perm[v]])
			c->shorten[ns++] = perm[v];
	ret = 0;
out:
	free(perm);
	free(sorted);
	free(chk_used);
	free(is_p);
	return ret;
}

struct qw_ldpc_code *ldpc_code_build(unsigned rate, unsigned z, uint64_t seed)
{
	struct qw_ldpc_code *c = calloc(1, sizeof(*c));
	unsigned nb = QW_LDPC_BASE_COLS, mb, coldeg[QW_LDPC_BASE_COLS], *rowdeg = NULL;
	struct qw_rng *rng = NULL;
	int32_t *shift = NULL;
	uint32_t *cnt = NULL, *fill = NULL, *rows = NULL;
	uint64_t *rkey = NULL;
	uint8_t *has = NULL;

	if (!c)
		return NULL;
	mb = (unsigned)lround((double)nb * (1.0 - qw_ldpc_mother_rate(rate)));
	c->rate_index = rate;
	c->z = z;
	c->zw = z / 64;
	c->nb = nb;
	c->mb = mb;
	c->n = (size_t)nb * z;
	c->m = (size_t)mb * z;
	c->seed = seed;
	rng = qw_rng_new_seeded(seed ^ ((uint64_t)rate << 56) ^ ((uint64_t)z << 40) ^
				0x4c4450432d515755ull);
	rowdeg = calloc(mb, sizeof(*rowdeg));
	shift = malloc((size_t)mb * nb * sizeof(*shift));
	cnt = malloc(z * sizeof(*cnt));
	rows = malloc(mb * sizeof(*rows));
	rkey = malloc(mb * sizeof(*rkey));
	has = calloc((size_t)mb * nb, 1);
	c->row_start = calloc(mb + 1, sizeof(*c->row_start));
	c->col_start = calloc(nb + 1, sizeof(*c->col_start));
	if (!rng || !rowdeg || !shift || !cnt || !rows || !rkey || !has || !c->row_start ||
	    !c->col_start)
		goto fail;
	column_degrees(rate, nb, mb, coldeg);

	/* Base graph: each column (highest degree first) joins the rows of
	 * currently lowest degree, ties broken at random, which keeps the row
	 * degrees concentrated. */
	for (unsigned j = 0; j < nb; j++) {
		for (unsigned i = 0; i < mb; i++) {
			rows[i] = i;
			rkey[i] = ((uint64_t)rowdeg[i] << 32) | (qw_rng_u64(rng) >> 32);
		}
		/* partial selection sort of the coldeg[j] smallest keys */
		for (unsigned a = 0; a < coldeg[j]; a++) {
			unsigned best = a;

			for (unsigned b = a + 1; b < mb; b++)
				if (rkey[rows[b]] < rkey[rows[best]])
					best = b;
			uint32_t t = rows[a];

			rows[a] = rows[best];
			rows[best] = t;
			has[(size_t)rows[a] * nb + j] = 1;
			rowdeg[rows[a]]++;
		}
	}
	for (unsigned i = 0; i < mb; i++) {
		c->row_start[i + 1] = c->row_start[i] + rowdeg[i];
		if (rowdeg[i] > c->max_row_deg)
			c->max_row_deg = rowdeg[i];
	}
	c->nent = c->row_start[mb];
	c->ent_col = malloc(c->nent * sizeof(*c->ent_col));
	c->ent_row = malloc(c->nent * sizeof(*c->ent_row));
	c->ent_shift = calloc(c->nent, sizeof(*c->ent_shift));
	c->col_ent = malloc(c->nent * sizeof(*c->col_ent));
	fill = calloc(nb, sizeof(*fill));
	if (!c->ent_col || !c->ent_row || !c->ent_shift || !c->col_ent || !fill)
		goto fail;
	for (unsigned i = 0, e = 0; i < mb; i++)
		for (unsigned j = 0; j < nb; j++)
			if (has[(size_t)i * nb + j]) {
				c->ent_row[e] = (uint16_t)i;
				c->ent_col[e++] = (uint16_t)j;
				c->col_start[j + 1]++;
			}
	for (unsigned j = 0; j < nb; j++)
		c->col_start[j + 1] += c->col_start[j];
	for (uint32_t e = 0; e < c->nent; e++) {
		unsigned j = c->ent_col[e];

		c->col_ent[c->col_start[j] + fill[j]++] = e;
	}
	for (size_t k = 0; k < (size_t)mb * nb; k++)
		shift[k] = -1;
	choose_shifts(c, rng, shift, cnt);
	for (unsigned i = 0; i < mb; i++)
		for (uint32_t e = c->row_start[i]; e < c->row_start[i + 1]; e++)
			c->ent_shift[e] = (uint16_t)shift[i * nb + c->ent_col[e]];
	c->cycles4 = count_4cycles(c, shift);
	if (puncture_order(c, rng, coldeg))
		goto fail;
	goto done;
fail:
	ldpc_code_free(c);
	c = NULL;
done:
	qw_rng_free(rng);
	free(rowdeg);
	free(shift);
	free(cnt);
	free(rows);
	free(rkey);
	free(has);
	free(fill);
	return c;
}

/* ---- cache ----------------------------------------------------------------- */

struct cache_ent {
	struct qw_ldpc_code *code;
	struct cache_ent *next;
};
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cache_ent *cache_head;

const struct qw_ldpc_code *qw_ldpc_code_get(unsigned rate_index, unsigned lift, uint64_t seed)
{
	struct qw_ldpc_code *c = NULL;
	struct cache_ent *e;

	if (rate_index >= QW_LDPC_NRATES || (lift != 64 && lift != 128 && lift != 256))
		return NULL;
	/* Construction takes a few hundred ms at most; holding the lock
	 * throughout keeps two threads from building the same code. */
	pthread_mutex_lock(&cache_lock);
	for (e = cache_head; e; e = e->next)
		if (e->code->rate_index == rate_index && e->code->z == lift && e->code->seed == seed) {
			c = e->code;
			goto out;
		}
	e = malloc(sizeof(*e));
	if (!e)
		goto out;
	c = ldpc_code_build(rate_index, lift, seed);
	if (!c) {
		free(e);
		goto out;
	}
	e->code = c;
	e->next = cache_head;
	cache_head = e;
out:
	pthread_mutex_unlock(&cache_lock);
	return c;
}

void qw_ldpc_cache_clear(void)
{
	pthread_mutex_lock(&cache_lock);
	while (cache_head) {
		struct cache_ent *e = cache_head;

		cache_head = e->next;
		ldpc_code_free(e->code);
		free(e);
	}
	pthread_mutex_unlock(&cache_lock);
}

size_t qw_ldpc_code_n(const struct qw_ldpc_code *c)
{
	return c->n;
}

size_t qw_ldpc_code_m(const struct qw_ldpc_code *c)
{
	return c->m;
}

uint64_t qw_ldpc_code_4cycles(const struct qw_ldpc_code *c)
{
	return c->cycles4;
}

size_t qw_ldpc_code_max_punctured(const struct qw_ldpc_code *c)
{
	return c->p_max;
}

const uint32_t *qw_ldpc_code_puncture_order(const struct qw_ldpc_code *c)
{
	return c->punct;
}

size_t qw_ldpc_code_edges(const struct qw_ldpc_code *c, uint32_t *chk, uint32_t *var, size_t max)
{
	size_t k = 0;

	for (unsigned i = 0; i < c->mb; i++)
		for (unsigned l = 0; l < c->z; l++)
			for (uint32_t e = c->row_start[i]; e < c->row_start[i + 1]; e++, k++)
				if (k < max) {
					chk[k] = i * c->z + l;
					var[k] = c->ent_col[e] * c->z + (l + c->ent_shift[e]) % c->z;
				}
	return k;
}

/* acc ^= src rotated: out bit k = src bit (k + s) mod Z, over zw words. */
static inline void rot_xor(uint64_t *acc, const uint64_t *src, unsigned zw, unsigned s)
{
	unsigned q = s / 64, r = s % 64;

	if (r == 0) {
		for (unsigned w = 0; w < zw; w++)
			acc[w] ^= src[(w + q) % zw];
		return;
	}
	for (unsigned w = 0; w < zw; w++)
		acc[w] ^= (src[(w + q) % zw] >> r) | (src[(w + q + 1) % zw] << (64 - r));
}

void ldpc_syndrome_words(const struct qw_ldpc_code *c, const uint64_t *x, uint64_t *syn)
{
	unsigned zw = c->zw;

	memset(syn, 0, c->m / 8);
	for (unsigned i = 0; i < c->mb; i++)
		for (uint32_t e = c->row_start[i]; e < c->row_start[i + 1]; e++)
			rot_xor(syn + (size_t)i * zw, x + (size_t)c->ent_col[e] * zw, zw,
				c->ent_shift[e]);
}

int qw_ldpc_code_syndrome(const struct qw_ldpc_code *c, const struct qw_bitvec *x,
			  struct qw_bitvec *syn)
{
	QW_REQUIRE(c != NULL && x != NULL && syn != NULL);
	if (x->nbits != c->n || syn->nbits != c->m)
		return QW_EINVAL;
	ldpc_syndrome_words(c, x->w, syn->w);
	return 0;
}

size_t ldpc_syndrome_unsat(const struct qw_ldpc_code *c, const uint64_t *x, const uint64_t *syn,
			   uint64_t *acc)
{
	unsigned zw = c->zw;
	size_t bad = 0;

	for (unsigned i = 0; i < c->mb; i++) {
		memcpy(acc, syn + (size_t)i * zw, zw * 8);
		for (uint32_t e = c->row_start[i]; e < c->row_start[i + 1]; e++)
			rot_xor(acc, x + (size_t)c->ent_col[e] * zw, zw, c->ent_shift[e]);
		for (unsigned w = 0; w < zw; w++)
			bad += (size_t)__builtin_popcountll(acc[w]);
	}
	return bad;
}
