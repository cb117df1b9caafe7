/* LDPC reconciliation protocol: rate adaptation, Alice's syndromes, Bob's
 * decoding, blind rounds, the message encoding and the in-process run.
 *
 * Wire format (integers big-endian):
 *   SYNDROME  01 ver rate log2(Z) | seed:8 | nbits:4 frames:4 p:4
 *             qber*1e9:4 | rounds:1 0:3 step:4 0:4 | frames x m/8 bytes
 *   RESULT    02 ver round final | frames:4 failed:4 | leaked:8
 *             corrected:8 | failed-frame bitmap, ceil(frames/8) bytes
 *   REVEAL    03 ver round 0 | count:4 first:4 cnt:4 | per failed frame
 *             (increasing index) ceil(cnt/8) bytes: the values of punctured
 *             variables first .. first+cnt-1 of the untainted order
 * Bit t of a byte string is bit t % 8 (LSB first) of byte t / 8; syndromes
 * are the packed 64-bit words of H x in little-endian byte order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "distill/ldpc_internal.h"
#include "qwave/secmem.h"

#define WIRE_VERSION 1
enum { MSG_SYNDROME = 1, MSG_RESULT = 2, MSG_REVEAL = 3 };
#define SYN_HDR 40
#define RES_HDR 28
#define REV_HDR 16

void qw_ldpc_params_init(struct qw_ldpc_params *p)
{
	QW_REQUIRE(p != NULL);
	memset(p, 0, sizeof(*p));
	p->lift = 128;
	p->efficiency = 0;
	p->max_iter = 60;
	/* One message each way unless a frame fails; then up to four rescue
	 * rounds (docs/ldpc.md: no frame lost at the default efficiency). */
	p->blind_rounds = 4;
	p->code_seed = 0x716b64ull;
	p->rate_index = -1;
}

static double h2(double q)
{
	if (q <= 0 || q >= 1)
		return 0;
	return -q * log2(q) - (1 - q) * log2(1 - q);
}

static void norm_params(const struct qw_ldpc_params *in, struct qw_ldpc_params *p)
{
	*p = *in;
	if (!p->lift)
		p->lift = 128;
	if (!(p->efficiency >= 0))
		p->efficiency = 0;
	if (!p->max_iter)
		p->max_iter = 60;
}

/* Automatic target efficiency: the smallest f (in steps of ~0.05) whose
 * one-way frame error rate stayed at or below ~3 % for n = 32768 in the
 * measurements of docs/ldpc.md, interpolated linearly in Q. */
double qw_ldpc_auto_efficiency(double q)
{
	static const double tq[] = { 0.01, 0.02, 0.03, 0.05, 0.08 };
	static const double tf[] = { 1.35, 1.22, 1.18, 1.12, 1.12 };

	if (q <= tq[0])
		return tf[0];
	for (unsigned i = 1; i < sizeof(tq) / sizeof(tq[0]); i++)
		if (q <= tq[i])
			return tf[i - 1] + (tf[i] - tf[i - 1]) * (q - tq[i - 1]) / (tq[i] - tq[i - 1]);
	return tf[sizeof(tf) / sizeof(tf[0]) - 1];
}

static double clamp_qber(double q)
{
	if (!(q >= 1e-4))
		return 1e-4;
	return q > 0.3 ? 0.3 : q;
}

int qw_ldpc_choose(const struct qw_ldpc_params *par, double qber, size_t nbits,
		   unsigned *rate_index, size_t *punctured, uint32_t *frames)
{
	struct qw_ldpc_params p;
	double fh;
	size_t n;
	uint64_t f0;
	int too_little = 0;

	QW_REQUIRE(par != NULL && rate_index != NULL && punctured != NULL && frames != NULL);
	norm_params(par, &p);
	if (p.lift != 64 && p.lift != 128 && p.lift != 256)
		return QW_EINVAL;
	if (nbits == 0 || nbits > QW_LDPC_MAX_BITS)
		return QW_EINVAL;
	if (p.rate_index >= QW_LDPC_NRATES)
		return QW_EINVAL;
	n = (size_t)QW_LDPC_BASE_COLS * p.lift;
	fh = (p.efficiency > 0 ? p.efficiency : qw_ldpc_auto_efficiency(clamp_qber(qber))) *
	     h2(clamp_qber(qber));
	if (fh >= 1.0)
		return QW_ERANGE;
	if (p.blind_rounds && p.blind_max_puncture) {
		/* Blind: start from the most punctured frames (the reserve
		 * the rounds reveal); the code whose payload at efficiency f
		 * is largest, i.e. the fewest frames. */
		uint64_t best_f = 0;
		size_t best_leak = 0;
		int best = -1;

		for (unsigned i = 0; i < QW_LDPC_NRATES; i++) {
			const struct qw_ldpc_code *c;
			double kf;
			size_t k;
			uint64_t F;

			if (p.rate_index >= 0 && i != (unsigned)p.rate_index)
				continue;
			if (!(c = qw_ldpc_code_get(i, p.lift, p.code_seed)))
				return QW_ENOMEM;
			kf = fh > 0 ? (double)(c->m - c->p_max) / fh : (double)n;
			k = kf > (double)(n - c->p_max) ? n - c->p_max : (size_t)kf;
			if (k == 0)
				continue;
			F = (nbits + k - 1) / k;
			/* ties: the least leak per frame */
			if (best < 0 || F < best_f || (F == best_f && c->m - c->p_max < best_leak)) {
				best = (int)i;
				best_f = F;
				best_leak = c->m - c->p_max;
			}
		}
		if (best < 0)
			return QW_ERANGE;
		*rate_index = (unsigned)best;
		*punctured = qw_ldpc_code_get((unsigned)best, p.lift, p.code_seed)->p_max;
		*frames = (uint32_t)best_f;
		return 0;
	}
	f0 = (nbits + n - 1) / n;
	for (uint64_t F = f0; F <= nbits; F++) {
		size_t k = (size_t)((nbits + F - 1) / F), best_p = 0;
		int best = -1;

		too_little = 0;
		for (int i = QW_LDPC_NRATES - 1; i >= 0; i--) {
			const struct qw_ldpc_code *c;
			double pf;
			size_t pp;

			if (p.rate_index >= 0 && i != p.rate_index)
				continue;
			pf = (double)p.lift *
				     (double)lround(QW_LDPC_BASE_COLS *
						    (1 - qw_ldpc_mother_rate((unsigned)i))) -
			     fh * (double)k;
			if (pf < 0)
				continue;
			/* floor: leak m - p never falls below f h(Q) k */
			pp = (size_t)floor(pf);
			if (k + pp > n)
				continue; /* no room; a code with fewer checks may fit */
			c = qw_ldpc_code_get((unsigned)i, p.lift, p.code_seed);
			if (!c)
				return QW_ENOMEM;
			if (pp > c->p_max) {
				too_little = 1;
				continue;
			}
			/* Measured (docs/ldpc.md): frames decode best with
			 * moderate puncturing, around n/24, rather than heavy
			 * shortening of a higher-rate code or puncturing beyond
			 * ~8 %. */
			if (best < 0 || llabs((long long)pp - (long long)(n / 24)) <
						llabs((long long)best_p - (long long)(n / 24))) {
				best = i;
				best_p = pp;
			}
		}
		if (best >= 0) {
			*rate_index = (unsigned)best;
			*punctured = best_p;
			*frames = (uint32_t)F;
			return 0;
		}
		if (too_little)
			break;
	}
	/* f h(Q) is below what any code can be punctured down to: the
	 * highest-rate code with its maximal puncturing (or the forced
	 * code). */
	{
		unsigned i = p.rate_index >= 0 ? (unsigned)p.rate_index : QW_LDPC_NRATES - 1;
		const struct qw_ldpc_code *c = qw_ldpc_code_get(i, p.lift, p.code_seed);
		size_t k;

		if (!c)
			return QW_ENOMEM;
		k = n - c->p_max;
		*rate_index = i;
		*punctured = c->p_max;
		*frames = (uint32_t)((nbits + k - 1) / k);
	}
	return 0;
}

void qw_ldpc_frame_span(size_t nbits, uint32_t frames, uint32_t i, size_t *off, size_t *len)
{
	size_t base = nbits / frames, rem = nbits % frames;

	QW_REQUIRE(frames > 0 && i < frames && off != NULL && len != NULL);
	*len = base + (i < rem);
	*off = (size_t)i * base + (i < rem ? i : rem);
}

/* ---- encoding helpers --------------------------------------------------------- */

static void put32(uint8_t *b, uint32_t v)
{
	b[0] = (uint8_t)(v >> 24);
	b[1] = (uint8_t)(v >> 16);
	b[2] = (uint8_t)(v >> 8);
	b[3] = (uint8_t)v;
}

static void put64(uint8_t *b, uint64_t v)
{
	put32(b, (uint32_t)(v >> 32));
	put32(b + 4, (uint32_t)v);
}

static uint32_t get32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static uint64_t get64(const uint8_t *b)
{
	return (uint64_t)get32(b) << 32 | get32(b + 4);
}

static void words_to_bytes(const uint64_t *w, size_t nbytes, uint8_t *out)
{
	for (size_t i = 0; i < nbytes; i++)
		out[i] = (uint8_t)(w[i / 8] >> (8 * (i % 8)));
}

static void bytes_to_words(const uint8_t *in, size_t nbytes, uint64_t *w)
{
	memset(w, 0, (nbytes + 7) / 8 * 8);
	for (size_t i = 0; i < nbytes; i++)
		w[i / 8] |= (uint64_t)in[i] << (8 * (i % 8));
}

static int grow(uint8_t **buf, size_t *cap, size_t need)
{
	uint8_t *nb;

	if (need <= *cap)
		return 0;
	if (!(nb = realloc(*buf, need)))
		return QW_ENOMEM;
	*buf = nb;
	*cap = need;
	return 0;
}

/* Frame layout for p punctured and s shortened: role (0 payload, 1
 * shortened, 2 punctured) and the payload positions in increasing order. */
static size_t layout(const struct qw_ldpc_code *c, size_t p, size_t s, uint8_t *role,
		     uint32_t *pay)
{
	size_t k = 0;

	memset(role, 0, c->n);
	for (size_t a = 0; a < p; a++)
		role[c->punct[a]] = 2;
	for (size_t a = 0; a < s; a++)
		role[c->shorten[a]] = 1;
	for (size_t v = 0; v < c->n; v++)
		if (!role[v])
			pay[k++] = (uint32_t)v;
	return k;
}

static int more_rounds(unsigned round, unsigned rounds, uint32_t nfailed, size_t revealed,
		       size_t p)
{
	return nfailed > 0 && round < rounds && revealed < p;
}

static size_t step_of(unsigned step, size_t n)
{
	return step ? step : (n + 199) / 200;
}

/* ---- Alice ------------------------------------------------------------------- */

struct qw_ldpc_alice {
	struct qw_ldpc_params par;
	const struct qw_bitvec *key;
	struct qw_rng *rng;
	const struct qw_ldpc_code *code;
	double qber;
	unsigned rate;
	size_t p, pw; /* punctured per frame, words of punctured values per frame */
	uint32_t frames, nfailed;
	int state; /* 0 new, 1 syndrome sent, 2 reveal sent, 3 done */
	unsigned round;
	size_t revealed, step;
	uint64_t *pvals; /* frames * pw: Alice's private punctured values */
	uint8_t *failed;
	uint8_t *msg;
	size_t msgcap;
	struct qw_ldpc_stats st;
};

struct qw_ldpc_alice *qw_ldpc_alice_new(const struct qw_ldpc_params *p,
					const struct qw_bitvec *key, double qber_est,
					struct qw_rng *rng, int *err)
{
	struct qw_ldpc_alice *a;
	int ret;

	QW_REQUIRE(p != NULL && key != NULL && rng != NULL);
	if (!(a = calloc(1, sizeof(*a)))) {
		ret = QW_ENOMEM;
		goto fail;
	}
	norm_params(p, &a->par);
	a->key = key;
	a->rng = rng;
	a->qber = clamp_qber(qber_est);
	if ((ret = qw_ldpc_choose(&a->par, a->qber, key->nbits, &a->rate, &a->p, &a->frames)) != 0)
		goto fail;
	if (!(a->code = qw_ldpc_code_get(a->rate, a->par.lift, a->par.code_seed))) {
		ret = QW_ENOMEM;
		goto fail;
	}
	a->pw = (a->p + 63) / 64;
	a->step = step_of(a->par.blind_step, a->code->n);
	a->pvals = calloc((size_t)a->frames * a->pw + 1, sizeof(uint64_t));
	a->failed = calloc(a->frames, 1);
	if (!a->pvals || !a->failed) {
		ret = QW_ENOMEM;
		goto fail;
	}
	a->st.frames = a->frames;
	a->st.rate_index = a->rate;
	a->st.punctured = (uint32_t)a->p;
	{
		size_t off, len;

		qw_ldpc_frame_span(key->nbits, a->frames, 0, &off, &len);
		a->st.shortened = (uint32_t)(a->code->n - a->p - len);
	}
	return a;
fail:
	if (err)
		*err = ret;
	qw_ldpc_alice_free(a);
	return NULL;
}

int qw_ldpc_alice_syndrome(struct qw_ldpc_alice *a, const uint8_t **msg, size_t *len)
{
	const struct qw_ldpc_code *c;
	uint64_t *x = NULL, *syn = NULL;
	uint8_t *role = NULL;
	uint32_t *pay = NULL;
	size_t mbytes, total, s_cur = (size_t)-1;
	int ret = QW_ENOMEM;

	QW_REQUIRE(a != NULL && msg != NULL && len != NULL);
	if (a->state != 0)
		return QW_ESTATE;
	c = a->code;
	mbytes = c->m / 8;
	total = SYN_HDR + (size_t)a->frames * mbytes;
	x = malloc(c->n / 8);
	syn = malloc(c->m / 8);
	role = malloc(c->n);
	pay = malloc(c->n * sizeof(*pay));
	if (!x || !syn || !role || !pay || grow(&a->msg, &a->msgcap, total))
		goto out;
	a->msg[0] = MSG_SYNDROME;
	a->msg[1] = WIRE_VERSION;
	a->msg[2] = (uint8_t)a->rate;
	a->msg[3] = (uint8_t)(a->par.lift == 64 ? 6 : a->par.lift == 128 ? 7 : 8);
	put64(a->msg + 4, a->par.code_seed);
	put32(a->msg + 12, (uint32_t)a->key->nbits);
	put32(a->msg + 16, a->frames);
	put32(a->msg + 20, (uint32_t)a->p);
	put32(a->msg + 24, (uint32_t)lround(a->qber * 1e9));
	a->msg[28] = (uint8_t)(a->par.blind_rounds > 255 ? 255 : a->par.blind_rounds);
	memset(a->msg + 29, 0, 3);
	put32(a->msg + 32, (uint32_t)a->step);
	memset(a->msg + 36, 0, 4);
	for (uint32_t f = 0; f < a->frames; f++) {
		size_t off, k, s;
		uint64_t *pv = a->pvals + (size_t)f * a->pw;

		qw_ldpc_frame_span(a->key->nbits, a->frames, f, &off, &k);
		s = c->n - a->p - k;
		if (s != s_cur) {
			layout(c, a->p, s, role, pay);
			s_cur = s;
		}
		/* Alice's private punctured values, uniform and independent
		 * of the key (the leak count m - p depends on it). */
		if (a->pw && (ret = qw_rng_bytes(a->rng, pv, a->pw * 8)) != 0)
			goto out;
		if (a->p % 64)
			pv[a->pw - 1] &= ((uint64_t)1 << (a->p % 64)) - 1;
		memset(x, 0, c->n / 8);
		for (size_t t = 0; t < k; t++)
			if (qw_bitvec_get(a->key, off + t))
				x[pay[t] >> 6] |= (uint64_t)1 << (pay[t] & 63);
		for (size_t t = 0; t < a->p; t++)
			if ((pv[t >> 6] >> (t & 63)) & 1)
				x[c->punct[t] >> 6] |= (uint64_t)1 << (c->punct[t] & 63);
		ldpc_syndrome_words(c, x, syn);
		words_to_bytes(syn, mbytes, a->msg + SYN_HDR + (size_t)f * mbytes);
		a->st.leaked_bits += c->m - a->p;
	}
	a->st.bytes_to_bob += total;
	a->state = 1;
	*msg = a->msg;
	*len = total;
	ret = 0;
out:
	if (x)
		qw_wipe(x, c->n / 8);
	free(x);
	free(syn);
	free(role);
	free(pay);
	return ret;
}

int qw_ldpc_alice_consume(struct qw_ldpc_alice *a, const uint8_t *res, size_t len,
			  const uint8_t **msg, size_t *mlen)
{
	uint32_t nfailed = 0;
	size_t bm = (a->frames + 7) / 8, cnt, cb, total;
	uint8_t *m;

	QW_REQUIRE(a != NULL && (res != NULL || len == 0) && msg != NULL && mlen != NULL);
	if (a->state != 1 && a->state != 2)
		return QW_ESTATE;
	if (len != RES_HDR + bm || res[0] != MSG_RESULT || res[1] != WIRE_VERSION ||
	    res[2] != a->round || res[3] > 1 || get32(res + 4) != a->frames)
		return QW_EPARSE;
	for (uint32_t f = 0; f < a->frames; f++) {
		int bit = (res[RES_HDR + f / 8] >> (f % 8)) & 1;

		/* a frame once decoded cannot fail again */
		if (bit && a->state == 2 && !a->failed[f])
			return QW_EPARSE;
		nfailed += (uint32_t)bit;
	}
	if (nfailed != get32(res + 8) || (a->frames % 8 && res[RES_HDR + bm - 1] >> (a->frames % 8)))
		return QW_EPARSE;
	if (get64(res + 12) != a->st.leaked_bits)
		return QW_EPROTO;
	if (res[3] != !more_rounds(a->round, a->par.blind_rounds > 255 ? 255 : a->par.blind_rounds,
				   nfailed, a->revealed, a->p))
		return QW_EPROTO;
	a->st.bytes_to_alice += len;
	a->st.round_trips++;
	a->st.corrected_bits = get64(res + 20);
	for (uint32_t f = 0; f < a->frames; f++)
		a->failed[f] = (res[RES_HDR + f / 8] >> (f % 8)) & 1;
	a->nfailed = nfailed;
	a->st.frame_errors = nfailed;
	if (res[3]) {
		a->state = 3;
		return 1;
	}
	/* Blind round: reveal the next cnt punctured values of every frame
	 * still failing; each costs one more leaked bit. */
	cnt = a->p - a->revealed < a->step ? a->p - a->revealed : a->step;
	cb = (cnt + 7) / 8;
	total = REV_HDR + (size_t)nfailed * cb;
	if (grow(&a->msg, &a->msgcap, total))
		return QW_ENOMEM;
	m = a->msg;
	m[0] = MSG_REVEAL;
	m[1] = WIRE_VERSION;
	m[2] = (uint8_t)(a->round + 1);
	m[3] = 0;
	put32(m + 4, nfailed);
	put32(m + 8, (uint32_t)a->revealed);
	put32(m + 12, (uint32_t)cnt);
	memset(m + REV_HDR, 0, total - REV_HDR);
	for (uint32_t f = 0, q = 0; f < a->frames; f++) {
		const uint64_t *pv = a->pvals + (size_t)f * a->pw;

		if (!a->failed[f])
			continue;
		for (size_t t = 0; t < cnt; t++) {
			size_t b = a->revealed + t;

			if ((pv[b >> 6] >> (b & 63)) & 1)
				m[REV_HDR + (size_t)q * cb + t / 8] |= (uint8_t)(1u << (t % 8));
		}
		q++;
	}
	a->revealed += cnt;
	a->st.leaked_bits += (uint64_t)cnt * nfailed;
	a->round++;
	a->st.bytes_to_bob += total;
	a->state = 2;
	*msg = a->msg;
	*mlen = total;
	return 0;
}

int qw_ldpc_alice_frame_ok(const struct qw_ldpc_alice *a, uint32_t i)
{
	QW_REQUIRE(a != NULL && i < a->frames);
	return a->state == 3 && !a->failed[i];
}

void qw_ldpc_alice_stats(const struct qw_ldpc_alice *a, struct qw_ldpc_stats *st)
{
	QW_REQUIRE(a != NULL && st != NULL);
	*st = a->st;
}

void qw_ldpc_alice_free(struct qw_ldpc_alice *a)
{
	if (!a)
		return;
	if (a->pvals)
		qw_wipe(a->pvals, ((size_t)a->frames * a->pw + 1) * sizeof(uint64_t));
	free(a->pvals);
	free(a->failed);
	free(a->msg);
	free(a);
}

/* ---- Bob --------------------------------------------------------------------- */

struct qw_ldpc_bob {
	struct qw_ldpc_params par;
	struct qw_bitvec *key;
	const struct qw_ldpc_code *code;
	struct ldpc_work *work;
	int state; /* 0 expects SYNDROME, 1 expects REVEAL, 2 done */
	unsigned rounds, round;
	size_t p, pw, step, revealed;
	uint32_t frames, nfailed;
	double qber;
	uint64_t *syn;   /* frames * m/64 words */
	uint64_t *pvals; /* frames * pw: revealed punctured values */
	uint8_t *failed;
	int16_t *llr;
	uint64_t *xhat;
	uint8_t *role;
	uint32_t *pay;
	uint8_t *reply;
	size_t replycap;
	struct qw_ldpc_stats st;
};

struct qw_ldpc_bob *qw_ldpc_bob_new(const struct qw_ldpc_params *p, struct qw_bitvec *key)
{
	struct qw_ldpc_bob *b;

	QW_REQUIRE(p != NULL && key != NULL);
	if (key->nbits == 0 || key->nbits > QW_LDPC_MAX_BITS)
		return NULL;
	if (!(b = calloc(1, sizeof(*b))))
		return NULL;
	norm_params(p, &b->par);
	b->key = key;
	return b;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Decode frame f from Bob's bits, the syndrome and the values revealed so
 * far; on success write the payload back into the key. */
static int bob_frame(struct qw_ldpc_bob *b, uint32_t f, size_t *s_cur)
{
	const struct qw_ldpc_code *c = b->code;
	size_t off, k, s, flips = 0;
	int16_t l0 = (int16_t)lround(fmin(LDPC_LLR_MAX, fmax(1.0, LDPC_LLR_SCALE *
								 log((1 - b->qber) / b->qber))));
	const uint64_t *pv = b->pvals ? b->pvals + (size_t)f * b->pw : NULL;
	unsigned it = 0;
	int r;

	qw_ldpc_frame_span(b->key->nbits, b->frames, f, &off, &k);
	s = c->n - b->p - k;
	if (s != *s_cur) {
		layout(c, b->p, s, b->role, b->pay);
		*s_cur = s;
	}
	for (size_t v = 0; v < c->n; v++)
		b->llr[v] = b->role[v] == 1 ? LDPC_LLR_MAX : 0;
	for (size_t t = 0; t < k; t++)
		b->llr[b->pay[t]] = qw_bitvec_get(b->key, off + t) ? (int16_t)-l0 : l0;
	for (size_t t = 0; t < b->revealed; t++)
		b->llr[c->punct[t]] = (pv[t >> 6] >> (t & 63)) & 1 ? -LDPC_LLR_MAX : LDPC_LLR_MAX;
	r = ldpc_decode(c, b->work, b->llr, b->syn + (size_t)f * (c->m / 64), b->par.max_iter,
			b->xhat, &it);
	b->st.iterations += it;
	if (r < 0)
		return r;
	if (r == 1)
		return 1;
	for (size_t t = 0; t < k; t++) {
		int bit = (int)((b->xhat[b->pay[t] >> 6] >> (b->pay[t] & 63)) & 1);

		if (bit != qw_bitvec_get(b->key, off + t)) {
			qw_bitvec_set(b->key, off + t, bit);
			flips++;
		}
	}
	b->st.corrected_bits += flips;
	return 0;
}

static int bob_parse_syndrome(struct qw_ldpc_bob *b, const uint8_t *msg, size_t len)
{
	const struct qw_ldpc_code *c;
	unsigned rate, lg;
	uint32_t nbits, frames, p, qppb, step;
	size_t mbytes, off, k;

	if (len < SYN_HDR || msg[0] != MSG_SYNDROME || msg[1] != WIRE_VERSION)
		return QW_EPARSE;
	rate = msg[2];
	lg = msg[3];
	nbits = get32(msg + 12);
	frames = get32(msg + 16);
	p = get32(msg + 20);
	qppb = get32(msg + 24);
	step = get32(msg + 32);
	if (rate >= QW_LDPC_NRATES || lg < 6 || lg > 8 || nbits != b->key->nbits || frames == 0 ||
	    frames > nbits || qppb < 100000 || qppb > 300000000 || msg[29] || msg[30] ||
	    msg[31] || get32(msg + 36) || step == 0)
		return QW_EPARSE;
	if (!(c = qw_ldpc_code_get(rate, 1u << lg, get64(msg + 4))))
		return QW_ENOMEM;
	mbytes = c->m / 8;
	if (p > c->p_max || (len - SYN_HDR) / mbytes != frames || (len - SYN_HDR) % mbytes)
		return QW_EPARSE;
	qw_ldpc_frame_span(nbits, frames, 0, &off, &k); /* the longest frame */
	if (k + p > c->n)
		return QW_EPARSE;
	b->code = c;
	b->frames = frames;
	b->p = p;
	b->pw = (p + 63) / 64;
	b->qber = qppb * 1e-9;
	b->rounds = msg[28];
	b->step = step;
	return 0;
}

static int bob_result(struct qw_ldpc_bob *b, const uint8_t **reply, size_t *rlen)
{
	size_t bm = (b->frames + 7) / 8;
	int fin = !more_rounds(b->round, b->rounds, b->nfailed, b->revealed, b->p);

	if (grow(&b->reply, &b->replycap, RES_HDR + bm))
		return QW_ENOMEM;
	b->reply[0] = MSG_RESULT;
	b->reply[1] = WIRE_VERSION;
	b->reply[2] = (uint8_t)b->round;
	b->reply[3] = (uint8_t)fin;
	put32(b->reply + 4, b->frames);
	put32(b->reply + 8, b->nfailed);
	put64(b->reply + 12, b->st.leaked_bits);
	put64(b->reply + 20, b->st.corrected_bits);
	memset(b->reply + RES_HDR, 0, bm);
	for (uint32_t f = 0; f < b->frames; f++)
		if (b->failed[f])
			b->reply[RES_HDR + f / 8] |= (uint8_t)(1u << (f % 8));
	b->st.round_trips++;
	b->st.frame_errors = b->nfailed;
	b->st.bytes_to_alice += RES_HDR + bm;
	*reply = b->reply;
	*rlen = RES_HDR + bm;
	b->state = fin ? 2 : 1;
	return fin;
}

static int bob_decode_all(struct qw_ldpc_bob *b)
{
	size_t s_cur = (size_t)-1;
	double t0 = now_s();
	uint32_t nf = 0;

	for (uint32_t f = 0; f < b->frames; f++) {
		int r;

		if (!b->failed[f])
			continue;
		if ((r = bob_frame(b, f, &s_cur)) < 0)
			return r;
		b->failed[f] = (uint8_t)r;
		nf += (uint32_t)r;
	}
	b->nfailed = nf;
	b->st.decode_seconds += now_s() - t0;
	return 0;
}

int qw_ldpc_bob_decode(struct qw_ldpc_bob *b, const uint8_t *msg, size_t len,
		       const uint8_t **reply, size_t *rlen)
{
	const struct qw_ldpc_code *c;
	int ret;

	QW_REQUIRE(b != NULL && (msg != NULL || len == 0) && reply != NULL && rlen != NULL);
	if (b->state == 2)
		return QW_ESTATE;
	if (b->state == 0) {
		size_t mbytes;

		if ((ret = bob_parse_syndrome(b, msg, len)) != 0)
			return ret;
		c = b->code;
		mbytes = c->m / 8;
		b->syn = malloc((size_t)b->frames * mbytes);
		b->failed = malloc(b->frames);
		b->pvals = calloc((size_t)b->frames * b->pw + 1, sizeof(uint64_t));
		b->llr = malloc(c->n * sizeof(*b->llr));
		b->xhat = malloc(c->n / 8);
		b->role = malloc(c->n);
		b->pay = malloc(c->n * sizeof(*b->pay));
		b->work = ldpc_work_new(c);
		if (!b->syn || !b->failed || !b->pvals || !b->llr || !b->xhat || !b->role ||
		    !b->pay || !b->work)
			return QW_ENOMEM;
		for (uint32_t f = 0; f < b->frames; f++)
			bytes_to_words(msg + SYN_HDR + (size_t)f * mbytes, mbytes,
				       b->syn + (size_t)f * (mbytes / 8));
		memset(b->failed, 1, b->frames);
		b->st.frames = b->frames;
		b->st.rate_index = c->rate_index;
		b->st.punctured = (uint32_t)b->p;
		{
			size_t off, k;

			qw_ldpc_frame_span(b->key->nbits, b->frames, 0, &off, &k);
			b->st.shortened = (uint32_t)(c->n - b->p - k);
		}
		b->st.leaked_bits = (uint64_t)b->frames * (c->m - b->p);
		b->st.bytes_to_bob += len;
		b->state = 1;
		if ((ret = bob_decode_all(b)) != 0)
			return ret;
		return bob_result(b, reply, rlen);
	}
	/* REVEAL */
	{
		size_t cnt = b->p - b->revealed < b->step ? b->p - b->revealed : b->step;
		size_t cb = (cnt + 7) / 8;

		if (len != REV_HDR + (size_t)b->nfailed * cb || msg[0] != MSG_REVEAL ||
		    msg[1] != WIRE_VERSION || msg[2] != b->round + 1 || msg[3] ||
		    get32(msg + 4) != b->nfailed || get32(msg + 8) != b->revealed ||
		    get32(msg + 12) != cnt)
			return QW_EPARSE;
		for (uint32_t f = 0, q = 0; f < b->frames; f++) {
			uint64_t *pv = b->pvals + (size_t)f * b->pw;

			if (!b->failed[f])
				continue;
			for (size_t t = 0; t < cnt; t++) {
				size_t bit = b->revealed + t;

				if ((msg[REV_HDR + (size_t)q * cb + t / 8] >> (t % 8)) & 1)
					pv[bit >> 6] |= (uint64_t)1 << (bit & 63);
			}
			q++;
		}
		b->revealed += cnt;
		b->st.leaked_bits += (uint64_t)cnt * b->nfailed;
		b->st.bytes_to_bob += len;
		b->round++;
		if ((ret = bob_decode_all(b)) != 0)
			return ret;
		return bob_result(b, reply, rlen);
	}
}

int qw_ldpc_bob_frame_ok(const struct qw_ldpc_bob *b, uint32_t i)
{
	QW_REQUIRE(b != NULL && i < b->frames);
	return b->state == 2 && !b->failed[i];
}

void qw_ldpc_bob_stats(const struct qw_ldpc_bob *b, struct qw_ldpc_stats *st)
{
	QW_REQUIRE(b != NULL && st != NULL);
	*st = b->st;
}

void qw_ldpc_bob_free(struct qw_ldpc_bob *b)
{
	if (!b)
		return;
	ldpc_work_free(b->work);
	if (b->llr && b->code)
		qw_wipe(b->llr, b->code->n * sizeof(*b->llr));
	if (b->xhat && b->code)
		qw_wipe(b->xhat, b->code->n / 8);
	free(b->syn);
	free(b->pvals);
	free(b->failed);
	free(b->llr);
	free(b->xhat);
	free(b->role);
	free(b->pay);
	free(b->reply);
	free(b);
}

/* ---- both parties in one process ------------------------------------------- */

int qw_ldpc_run_local(const struct qw_ldpc_params *p, const struct qw_bitvec *alice_key,
		      struct qw_bitvec *bob_key, double qber_est, uint64_t seed,
		      struct qw_ldpc_stats *st)
{
	struct qw_ldpc_alice *alice = NULL;
	struct qw_ldpc_bob *bob = NULL;
	struct qw_rng *rng = NULL;
	struct qw_ldpc_stats sa, sb;
	const uint8_t *msg, *rep;
	size_t len, rlen;
	int ret = QW_ENOMEM, rb, ra;

	QW_REQUIRE(p != NULL && alice_key != NULL && bob_key != NULL);
	if (alice_key->nbits != bob_key->nbits)
		return QW_EINVAL;
	if (alice_key->nbits == 0 || alice_key->nbits > QW_LDPC_MAX_BITS)
		return QW_EINVAL;
	if (!(rng = qw_rng_new_seeded(seed)))
		goto out;
	if (!(alice = qw_ldpc_alice_new(p, alice_key, qber_est, rng, &ret)))
		goto out;
	if (!(bob = qw_ldpc_bob_new(p, bob_key))) {
		ret = QW_ENOMEM;
		goto out;
	}
	if ((ret = qw_ldpc_alice_syndrome(alice, &msg, &len)) != 0)
		goto out;
	for (;;) {
		if ((rb = qw_ldpc_bob_decode(bob, msg, len, &rep, &rlen)) < 0) {
			ret = rb;
			goto out;
		}
		if ((ra = qw_ldpc_alice_consume(alice, rep, rlen, &msg, &len)) < 0) {
			ret = ra;
			goto out;
		}
		if (ra != rb) {
			ret = QW_EPROTO;
			goto out;
		}
		if (ra == 1)
			break;
	}
	qw_ldpc_alice_stats(alice, &sa);
	qw_ldpc_bob_stats(bob, &sb);
	if (sa.leaked_bits != sb.leaked_bits || sa.round_trips != sb.round_trips) {
		ret = QW_EPROTO;
		goto out;
	}
	if (st)
		*st = sb;
	ret = 0;
out:
	qw_ldpc_alice_free(alice);
	qw_ldpc_bob_free(bob);
	qw_rng_free(rng);
	return ret;
}
