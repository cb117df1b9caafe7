/* Entropy sources: the OS generator, and raw-sample sources passed through
 * the NIST SP 800-90B health tests and SHA-256 conditioning. The formulas
 * and clause numbers are in include/qwave/entropy.h. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "qwave/entropy.h"
#include "qwave/hash.h"
#include "qwave/secmem.h"

#define RAW_BUF 4096

enum kind { K_OS, K_FILE, K_FN };

struct qw_entropy {
	enum kind kind;
	int fd;
	qw_entropy_read_fn fn;
	void *arg;
	unsigned bits;
	uint8_t mask;
	double h;
	unsigned n_in; /* samples per 32-byte conditioned block */

	int started;  /* start-up test passed */
	int failed;
	char reason[160];

	/* Repetition Count Test (4.4.1) */
	unsigned rct_c, rct_run;
	uint8_t rct_last;
	/* Adaptive Proportion Test (4.4.2) */
	unsigned apt_w, apt_c, apt_pos, apt_count;
	uint8_t apt_first;

	struct qw_entropy_stats st;

	uint8_t raw[RAW_BUF];
	size_t raw_len, raw_pos;
	/* Conditioned bytes left over from the last block. */
	uint8_t out[QW_SHA256_BYTES];
	size_t out_pos; /* == sizeof(out) when empty */
};

unsigned qw_entropy_rct_cutoff(double h)
{
	QW_REQUIRE(h > 0 && h <= 8);
	/* SP 800-90B 4.4.1: C = 1 + ceil(-log2(alpha) / H). The epsilon keeps
	 * an exact quotient (e.g. 20 / 1) from rounding up. */
	return 1 + (unsigned)ceil(QW_ENTROPY_ALPHA_LOG2 / h - 1e-9);
}

unsigned qw_entropy_apt_window(unsigned bits_per_sample)
{
	/* SP 800-90B 4.4.2: W = 1024 for non-binary, 512 for binary. */
	return bits_per_sample == 1 ? 512 : 1024;
}

unsigned qw_entropy_apt_cutoff(unsigned window, double h)
{
	QW_REQUIRE(window > 0 && h > 0 && h <= 8);
	/* SP 800-90B 4.4.2: C = 1 + CRITBINOM(W, p = 2^-H, 1 - alpha), where
	 * CRITBINOM(n, p, q) is the smallest k with P[X <= k] >= q. Computed
	 * from the upper tail, summed from the top in log space so alpha =
	 * 2^-20 is not lost in rounding: the smallest k with P[X > k] <=
	 * alpha. */
	const double alpha = ldexp(1.0, -QW_ENTROPY_ALPHA_LOG2);
	const double p = exp2(-h);
	const double lp = log(p), lq = log1p(-p), lw = lgamma(window + 1.0);
	double tail = 0; /* P[X > k] */
	for (unsigned k = window; k-- > 0;) {
		double i = k + 1.0;
		double lpmf = lw - lgamma(i + 1) - lgamma(window - i + 1) +
			      i * lp + (window - i) * lq;
		tail += exp(lpmf);
		if (tail > alpha)
			return 1 + (k + 1); /* P[X > k+1] <= alpha < P[X > k] */
	}
	return 1; /* unreachable for h > 0 */
}

static struct qw_entropy *alloc_src(enum kind kind)
{
	struct qw_entropy *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->kind = kind;
	s->fd = -1;
	s->out_pos = sizeof(s->out);
	return s;
}

struct qw_entropy *qw_entropy_new_os(void)
{
	struct qw_entropy *s = alloc_src(K_OS);
	if (s)
		s->started = 1;
	return s;
}

static int setup_raw(struct qw_entropy *s, unsigned bits, double h)
{
	if (bits < 1 || bits > 8 || !(h > 0) || h > bits)
		return QW_EINVAL;
	s->bits = bits;
	s->mask = (uint8_t)((1u << bits) - 1);
	s->h = h;
	/* n_in * H >= n_out + 64 with n_out = 256 (SP 800-90B 3.1.5.1.2). */
	s->n_in = (unsigned)ceil((8.0 * QW_SHA256_BYTES + 64) / h - 1e-9);
	s->rct_c = qw_entropy_rct_cutoff(h);
	s->apt_w = qw_entropy_apt_window(bits);
	s->apt_c = qw_entropy_apt_cutoff(s->apt_w, h);
	s->st.rct_cutoff = s->rct_c;
	s->st.apt_window = s->apt_w;
	s->st.apt_cutoff = s->apt_c;
	return 0;
}

struct qw_entropy *qw_entropy_new_file(const char *path,
				       unsigned bits_per_sample,
				       double h_per_sample, int *err)
{
	QW_REQUIRE(path);
	int ret = QW_ENOMEM;
	struct qw_entropy *s = alloc_src(K_FILE);
	if (!s)
		goto out;
	ret = setup_raw(s, bits_per_sample, h_per_sample);
	if (ret != 0)
		goto out;
	s->fd = open(path, O_RDONLY | O_CLOEXEC);
	ret = s->fd < 0 ? QW_EIO : 0;
out:
	if (ret != 0) {
		qw_entropy_free(s);
		s = NULL;
	}
	if (err)
		*err = ret;
	return s;
}

struct qw_entropy *qw_entropy_new_fn(qw_entropy_read_fn fn, void *arg,
				     unsigned bits_per_sample,
				     double h_per_sample, int *err)
{
	QW_REQUIRE(fn);
	int ret = QW_ENOMEM;
	struct qw_entropy *s = alloc_src(K_FN);
	if (!s)
		goto out;
	s->fn = fn;
	s->arg = arg;
	ret = setup_raw(s, bits_per_sample, h_per_sample);
out:
	if (ret != 0) {
		qw_entropy_free(s);
		s = NULL;
	}
	if (err)
		*err = ret;
	return s;
}

void qw_entropy_free(struct qw_entropy *s)
{
	if (!s)
		return;
	if (s->fd >= 0)
		close(s->fd);
	qw_wipe(s, sizeof(*s));
	free(s);
}

const char *qw_entropy_failure_reason(const struct qw_entropy *s)
{
	QW_REQUIRE(s);
	return s->failed ? s->reason : NULL;
}

int qw_entropy_is_os(const struct qw_entropy *s)
{
	QW_REQUIRE(s);
	return s->kind == K_OS;
}

void qw_entropy_get_stats(const struct qw_entropy *s,
			  struct qw_entropy_stats *st)
{
	QW_REQUIRE(s && st);
	*st = s->st;
}

static int os_read(uint8_t *out, size_t n)
{
	while (n) {
		ssize_t r = getrandom(out, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return QW_EIO;
		}
		out += r;
		n -= (size_t)r;
	}
	return 0;
}

static int refill(struct qw_entropy *s)
{
	if (s->kind == K_FN) {
		int r = s->fn(s->arg, s->raw, RAW_BUF);
		if (r != 0)
			return r < 0 ? r : QW_EIO;
		s->raw_len = RAW_BUF;
	} else {
		ssize_t r;
		do
			r = read(s->fd, s->raw, RAW_BUF);
		while (r < 0 && errno == EINTR);
		if (r <= 0)
			return QW_EIO; /* error or end of file: no more samples */
		s->raw_len = (size_t)r;
	}
	s->raw_pos = 0;
	return 0;
}

static int fail(struct qw_entropy *s, const char *what, unsigned count,
		unsigned cutoff, unsigned value)
{
	s->failed = 1;
	snprintf(s->reason, sizeof(s->reason),
		 "%s failed: sample value %u seen %u times (cutoff %u, H = %.3g "
		 "bits/sample) after %llu samples",
		 what, value, count, cutoff, s->h,
		 (unsigned long long)s->st.samples);
	return QW_EHEALTH;
}

/* Next raw sample through both continuous tests (SP 800-90B 4.4). */
static int next_sample(struct qw_entropy *s, uint8_t *sample)
{
	if (s->raw_pos == s->raw_len) {
		int r = refill(s);
		if (r != 0)
			return r;
	}
	uint8_t x = s->raw[s->raw_pos++] & s->mask;
	s->st.samples++;

	/* 4.4.1 Repetition Count Test */
	if (s->rct_run > 0 && x == s->rct_last) {
		s->rct_run++;
	} else {
		s->rct_last = x;
		s->rct_run = 1;
	}
	if (s->rct_run > s->st.max_run)
		s->st.max_run = s->rct_run;
	if (s->rct_run >= s->rct_c)
		return fail(s, "repetition count test (SP 800-90B 4.4.1)",
			    s->rct_run, s->rct_c, x);

	/* 4.4.2 Adaptive Proportion Test: the first sample of each window is
	 * the reference A; B counts A's occurrences in the window, A itself
	 * included. */
	if (s->apt_pos == 0) {
		s->apt_first = x;
		s->apt_count = 1;
	} else if (x == s->apt_first) {
		s->apt_count++;
	}
	if (s->apt_count > s->st.max_apt)
		s->st.max_apt = s->apt_count;
	if (s->apt_count >= s->apt_c)
		return fail(s, "adaptive proportion test (SP 800-90B 4.4.2)",
			    s->apt_count, s->apt_c, s->apt_first);
	if (++s->apt_pos == s->apt_w)
		s->apt_pos = 0;

	*sample = x;
	return 0;
}

int qw_entropy_startup(struct qw_entropy *s)
{
	QW_REQUIRE(s);
	if (s->failed)
		return QW_EHEALTH;
	if (s->started)
		return 0;
	/* SP 800-90B 4.3 item 3: the continuous tests over at least 1024
	 * consecutive samples before any output; those samples are not
	 * used. An I/O error mid-way restarts the count next time. */
	for (unsigned i = 0; i < QW_ENTROPY_STARTUP_SAMPLES; i++) {
		uint8_t x;
		int r = next_sample(s, &x);
		if (r != 0)
			return r;
	}
	s->started = 1;
	return 0;
}

/* One conditioned block: SHA-256 over n_in tested samples (vetted
 * conditioning function, SP 800-90B 3.1.5.1.1). */
static int condition_block(struct qw_entropy *s)
{
	uint8_t chunk[256];
	struct qw_hash *h = qw_hash_new(QW_HASH_SHA256);
	if (!h)
		return QW_ENOMEM;
	int ret = 0;
	unsigned done = 0;
	while (done < s->n_in && ret == 0) {
		unsigned m = s->n_in - done;
		if (m > sizeof(chunk))
			m = sizeof(chunk);
		for (unsigned i = 0; i < m && ret == 0; i++)
			ret = next_sample(s, &chunk[i]);
		if (ret == 0)
			ret = qw_hash_update(h, chunk, m);
		done += m;
	}
	if (ret == 0)
		ret = qw_hash_final(h, s->out);
	if (ret == 0)
		s->out_pos = 0;
	qw_hash_free(h);
	qw_wipe(chunk, sizeof(chunk));
	return ret;
}

int qw_entropy_read(struct qw_entropy *s, void *out, size_t n)
{
	QW_REQUIRE(s && (out || n == 0));
	uint8_t *o = out;
	int ret = 0;
	if (s->kind == K_OS) {
		ret = os_read(o, n);
		if (ret == 0)
			s->st.out_bytes += n;
		goto out;
	}
	if (s->failed) {
		ret = QW_EHEALTH;
		goto out;
	}
	if ((ret = qw_entropy_startup(s)) != 0)
		goto out;
	size_t done = 0;
	while (done < n) {
		if (s->out_pos == sizeof(s->out)) {
			if ((ret = condition_block(s)) != 0)
				goto out;
		}
		size_t m = sizeof(s->out) - s->out_pos;
		if (m > n - done)
			m = n - done;
		memcpy(o + done, s->out + s->out_pos, m);
		qw_wipe(s->out + s->out_pos, m); /* never hand out twice */
		s->out_pos += m;
		done += m;
	}
	s->st.out_bytes += n;
out:
	if (ret != 0)
		qw_wipe(o, n);
	return ret;
}
