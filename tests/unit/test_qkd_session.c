/* The QKD session of a node's link endpoint (src/km/qkd.c) run between two
 * detached endpoints over a loopback TCP pair, each with its own data
 * directory: the two-phase commit of the next authentication keys survives
 * a connection cut at every step (at either end), the unauthenticated
 * session header is refused, or rejected when forged or tampered with,
 * without changing Bob's key file, and an attacked session pools nothing,
 * fails with the QBER reason and raises the report's QBER alarm. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "km/qkd.h"
#include "qwave/frame.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

#define MAX_POOLED 256

struct pooled {
	uint64_t id, nbits;
	uint8_t *bits;
};

struct end {
	struct qw_km_conf c;
	struct qw_km_link_conf lc;
	char dir[256];
	struct km_qkd *q;
	int alice;
	/* what the session handed to the pool */
	struct pooled pool[MAX_POOLED];
	size_t npool;
	uint64_t pool_bits;
	/* cut the connection at this step (0: never), once */
	enum km_qkd_step cut;
	int fd, ret;
};

struct pair {
	struct end e[2]; /* 0: Alice (node-a), 1: Bob (node-b) */
	char root[128], psk[256];
};

static int on_submit(void *ctx, uint64_t id, const uint8_t *bits, uint64_t nbits)
{
	struct end *e = ctx;
	struct pooled *p;

	if (e->npool == MAX_POOLED)
		return QW_ENOMEM;
	p = &e->pool[e->npool];
	p->bits = malloc((size_t)((nbits + 7) / 8));
	if (!p->bits)
		return QW_ENOMEM;
	memcpy(p->bits, bits, (size_t)((nbits + 7) / 8));
	p->id = id;
	p->nbits = nbits;
	e->npool++;
	e->pool_bits += nbits;
	return 0;
}

static int on_fault(void *ctx, int alice, enum km_qkd_step step)
{
	struct end *e = ctx;

	assert_int_equal(alice, e->alice);
	if (e->cut != step)
		return 0;
	e->cut = 0;
	return 1;
}

static void pool_clear(struct end *e)
{
	for (size_t i = 0; i < e->npool; i++)
		free(e->pool[i].bits);
	e->npool = 0;
	e->pool_bits = 0;
}

static void end_init(struct pair *p, int k, enum qw_link_ec ec)
{
	struct end *e = &p->e[k];
	/* three keys kept: less key to distil per session than qwaved's 8 */
	struct km_qkd_hooks h = { e, on_submit, on_fault, 3 };

	memset(e, 0, sizeof(*e));
	snprintf(e->dir, sizeof(e->dir), "%s/%s", p->root, k ? "b" : "a");
	assert_int_equal(mkdir(e->dir, 0700), 0);
	e->alice = k == 0;
	e->c.id = k ? "node-b" : "node-a";
	e->c.data_dir = e->dir;
	e->lc.peer = k ? "node-a" : "node-b";
	e->lc.source = QW_KM_SOURCE_SIM;
	qw_optics_config_default(&e->lc.optics);
	/* a short link with an efficient receiver: few pulses to simulate
	 * for enough key to refill every authentication key */
	e->lc.optics.distance_km = 1.0;
	e->lc.optics.link.eta_bob = 0.5;
	e->lc.block_bits = 1e5;
	e->lc.blocks_per_session = 2;
	e->lc.bounds = QW_LINK_BOUNDS_ASYMPTOTIC;
	e->lc.ec = ec;
	e->lc.qber_threshold = 0.11;
	e->lc.pace = 0.0;
	e->lc.psk_file = p->psk;
	e->q = km_qkd_new_detached(&e->c, &e->lc, e->alice, &h);
	assert_non_null(e->q);
}

static void pair_init(struct pair *p, enum qw_link_ec ec)
{
	size_t n = 2 * qw_km_psk_bytes(ec);
	uint8_t *k = malloc(n);
	int fd;

	memset(p, 0, sizeof(*p));
	snprintf(p->root, sizeof(p->root), "/tmp/qw_qkd_sess_XXXXXX");
	assert_non_null(mkdtemp(p->root));
	snprintf(p->psk, sizeof(p->psk), "%s/link.psk", p->root);
	assert_non_null(k);
	assert_int_equal(qw_random_bytes(k, n), 0);
	fd = open(p->psk, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, k, n), (ssize_t)n);
	close(fd);
	qw_free_secret(k, n);
	end_init(p, 0, ec);
	end_init(p, 1, ec);
}

static void rm_dir(const char *d)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
	assert_int_equal(system(cmd), 0);
}

static void pair_free(struct pair *p)
{
	for (int k = 0; k < 2; k++) {
		km_qkd_stop(p->e[k].q);
		pool_clear(&p->e[k]);
	}
	rm_dir(p->root);
}

static void *alice_main(void *arg)
{
	struct end *e = arg;

	e->ret = km_qkd_session(e->q, e->fd);
	/* a failed end closes its channel, as qwaved does: the peer's reads
	 * end instead of waiting */
	if (e->ret)
		shutdown(e->fd, SHUT_RDWR);
	return NULL;
}

/* One session over a fresh connection; results in e[] (pools add up). */
static void run_session(struct pair *p)
{
	int fds[2];
	pthread_t th;

	assert_int_equal(qw_frame_tcp_pair(fds), 0);
	p->e[0].fd = fds[0];
	p->e[1].fd = fds[1];
	assert_int_equal(pthread_create(&th, NULL, alice_main, &p->e[0]), 0);
	p->e[1].ret = km_qkd_session(p->e[1].q, fds[1]);
	if (p->e[1].ret)
		shutdown(fds[1], SHUT_RDWR);
	pthread_join(th, NULL);
	close(fds[0]);
	close(fds[1]);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static uint8_t *read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b;
	long len;

	if (!f)
		return NULL;
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	rewind(f);
	b = malloc(len > 0 ? (size_t)len : 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	*n = (size_t)len;
	return b;
}

static void psk_file_of(const struct end *e, char *out, size_t n)
{
	snprintf(out, n, "%s/qkd-%s.psk", e->dir, e->lc.peer);
}

static int cmp_pooled(const void *x, const void *y)
{
	const struct pooled *a = x, *b = y;

	return a->id < b->id ? -1 : a->id > b->id;
}

/* Both ends succeeded and their pools got the same blocks, bit for bit,
 * and hold the same authentication keys (equal key files). */
static void assert_equal_pools(struct pair *p)
{
	struct end *a = &p->e[0], *b = &p->e[1];
	char pa[300], pb[300];
	uint8_t *fa, *fb;
	size_t na, nb;

	assert_int_equal(a->ret, 0);
	assert_int_equal(b->ret, 0);
	assert_true(a->pool_bits > 0);
	assert_int_equal(a->npool, b->npool);
	assert_int_equal(a->pool_bits, b->pool_bits);
	qsort(a->pool, a->npool, sizeof(a->pool[0]), cmp_pooled);
	qsort(b->pool, b->npool, sizeof(b->pool[0]), cmp_pooled);
	for (size_t i = 0; i < a->npool; i++) {
		assert_int_equal(a->pool[i].id, b->pool[i].id);
		assert_int_equal(a->pool[i].nbits, b->pool[i].nbits);
		assert_memory_equal(a->pool[i].bits, b->pool[i].bits,
				    (size_t)((a->pool[i].nbits + 7) / 8));
	}
	psk_file_of(a, pa, sizeof(pa));
	psk_file_of(b, pb, sizeof(pb));
	fa = read_file(pa, &na);
	fb = read_file(pb, &nb);
	assert_non_null(fa);
	assert_non_null(fb);
	assert_int_equal(na, nb);
	assert_memory_equal(fa, fb, na);
	free(fa);
	free(fb);
	pool_clear(a);
	pool_clear(b);
}

/* Three sessions in a row: each pools the same key at both ends, and the
 * key files stay private. */
static void test_sessions_agree(void **state)
{
	struct pair p;
	char path[300];
	struct stat sb;

	(void)state;
	pair_init(&p, QW_LINK_EC_LDPC);
	for (int s = 0; s < 3; s++) {
		run_session(&p);
		assert_equal_pools(&p);
	}
	for (int k = 0; k < 2; k++) {
		psk_file_of(&p.e[k], path, sizeof(path));
		assert_int_equal(stat(path, &sb), 0);
		assert_int_equal(sb.st_mode & 0777, 0600);
	}
	pair_free(&p);
}

/* The connection is cut at each step of the commit, at Alice or at Bob;
 * whichever of the two ends had committed, the next session authenticates
 * (the ends settle on the same keys) and both pool the same key. */
static void test_commit_cut(void **state)
{
	static const enum km_qkd_step steps[] = { KM_QKD_STEP_RUN_DONE, KM_QKD_STEP_PENDING,
						  KM_QKD_STEP_COMMIT_SENT,
						  KM_QKD_STEP_COMMIT_RECEIVED };

	(void)state;
	for (int side = 0; side < 2; side++) {
		for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
			struct pair p;
			struct qw_km_link_report r;

			pair_init(&p, QW_LINK_EC_LDPC);
			p.e[side].cut = steps[s];
			run_session(&p);
			/* the cut end failed and pooled nothing yet */
			assert_int_equal(p.e[side].ret, QW_ECLOSED);
			assert_int_equal(p.e[side].npool, 0);
			/* the next session: both pools hold the same blocks
			 * (the cut session's too, once adopted) */
			run_session(&p);
			assert_equal_pools(&p);
			for (int k = 0; k < 2; k++) {
				km_qkd_get_report(p.e[k].q, &r);
				assert_int_equal(r.auth_failures, 0);
			}
			pair_free(&p);
		}
	}
}

/* Bob refuses a header whose session size differs from his own
 * configuration, and rejects one whose key list was tampered with (the
 * authenticated transcript differs): his key file is untouched by either;
 * the next honest session works. */
static void test_forged_header(void **state)
{
	struct pair p;
	struct end *b;
	char path[300];
	uint8_t *before, *after;
	size_t nb, na;
	struct qw_km_link_report r;

	(void)state;
	pair_init(&p, QW_LINK_EC_LDPC);
	b = &p.e[1];
	run_session(&p);
	assert_equal_pools(&p);
	psk_file_of(b, path, sizeof(path));
	before = read_file(path, &nb);
	assert_non_null(before);

	/* 1: a header asking for more blocks than Bob's configuration */
	p.e[0].lc.blocks_per_session++;
	run_session(&p);
	p.e[0].lc.blocks_per_session--;
	pool_clear(&p.e[0]);
	pool_clear(&p.e[1]);
	assert_int_equal(b->ret, QW_EPROTO);
	assert_int_equal(p.e[0].ret, QW_EPROTO);
	after = read_file(path, &na);
	assert_int_equal(na, nb);
	assert_memory_equal(after, before, nb);
	free(after);

	/* 2: a fake Alice without any key: a well-formed header naming
	 * Bob's first key id, empty fibre records, then a frame whose tag
	 * cannot verify */
	{
		int fds[2];
		uint8_t h[48], rep[16 + 8 * 16], fr[QW_FRAME_HEADER_BYTES + 8 + QW_FRAME_TAG_BYTES];
		struct qw_sift_params sp;
		uint64_t v[6];

		qw_sift_params_default(&sp);
		v[0] = ((uint64_t)0x51574b31u << 32) | 3;
		v[1] = (uint64_t)time(NULL) + 1000000;
		v[2] = b->lc.blocks_per_session;
		v[3] = qw_link_pulses_for_bits(&b->lc.optics, &sp, b->lc.block_bits);
		v[4] = 1;
		v[5] = get64(before + 31); /* file: magic, 3 u64, then the first id */
		for (int i = 0; i < 6; i++)
			put64(h + 8 * i, v[i]);
		assert_int_equal(qw_frame_tcp_pair(fds), 0);
		assert_int_equal(write(fds[0], h, sizeof(h)), (ssize_t)sizeof(h));
		for (uint64_t k = 1; k <= v[2]; k++) {
			uint8_t rec[32] = { 0 };
			put64(rec, k);
			assert_int_equal(write(fds[0], rec, sizeof(rec)), (ssize_t)sizeof(rec));
		}
		memset(fr, 0, sizeof(fr));
		fr[0] = QW_FRAME_VERSION;
		fr[1] = QW_FRAME_DATA;
		fr[11] = 8; /* body length */
		assert_int_equal(write(fds[0], fr, sizeof(fr)), (ssize_t)sizeof(fr));
		b->ret = km_qkd_session(b->q, fds[1]);
		assert_int_equal(b->ret, QW_EAUTH);
		/* Bob had accepted the header (reply status 0) */
		assert_true(read(fds[0], rep, sizeof(rep)) >= 16);
		assert_int_equal(get64(rep), 0);
		close(fds[0]);
		close(fds[1]);
	}
	after = read_file(path, &na);
	assert_int_equal(na, nb);
	assert_memory_equal(after, before, nb); /* ...but changed nothing */
	free(after);
	km_qkd_get_report(b->q, &r);
	assert_int_equal(r.auth_failures, 1);

	/* the honest ends go on */
	run_session(&p);
	assert_equal_pools(&p);
	free(before);
	pair_free(&p);
}

/* Intercept-resend on every pulse: both ends abort on the QBER (about 25 %)
 * and pool nothing, the report raises the QBER alarm; the next honest
 * session pools again and clears it. */
static void test_attacked_session(void **state)
{
	struct pair p;
	struct qw_km_link_report r[2];

	(void)state;
	pair_init(&p, QW_LINK_EC_LDPC);
	run_session(&p);
	assert_equal_pools(&p);
	p.e[0].lc.optics.eve_fraction = 1.0; /* Alice simulates the fibre */
	run_session(&p);
	for (int k = 0; k < 2; k++) {
		assert_int_equal(p.e[k].ret, QW_EABORT);
		assert_int_equal(p.e[k].npool, 0);
		km_qkd_get_report(p.e[k].q, &r[k]);
		assert_int_equal(r[k].qber_alarm, 1);
		assert_true(r[k].alarms > 0);
		/* 1/4 + e_det / 2 (src/qkd/eve.c), a few hundred disclosed bits */
		assert_true(r[k].qber > 0.2 && r[k].qber < 0.33);
		assert_int_equal(r[k].auth_failures, 0);
	}
	p.e[0].lc.optics.eve_fraction = 0.0;
	run_session(&p);
	assert_equal_pools(&p);
	for (int k = 0; k < 2; k++) {
		km_qkd_get_report(p.e[k].q, &r[k]);
		assert_int_equal(r[k].qber_alarm, 0);
		assert_true(r[k].qber < 0.1);
	}
	pair_free(&p);
}

/* A man in the middle who raises the epoch in Alice's (unauthenticated)
 * header: Bob accepts the header but Alice's authenticated HELLO carries
 * the transcript she sent, so Bob rejects it (QW_EAUTH) before changing
 * anything; Alice lost the key she had taken; the next honest session
 * runs on a key both still hold. */
struct mitm {
	int a, b;    /* proxy's ends towards Alice and Bob */
	size_t at;   /* offset in the Alice -> Bob stream to alter */
};

static void *mitm_main(void *arg)
{
	struct mitm *m = arg;
	size_t off = 0;
	uint8_t buf[4096];

	for (;;) {
		struct pollfd pf[2] = { { m->a, POLLIN, 0 }, { m->b, POLLIN, 0 } };
		ssize_t n;

		if (poll(pf, 2, 10000) <= 0)
			break;
		if (pf[0].revents) {
			n = read(m->a, buf, sizeof(buf));
			if (n <= 0)
				break;
			if (m->at >= off && m->at < off + (size_t)n)
				buf[m->at - off]++;
			off += (size_t)n;
			if (write(m->b, buf, (size_t)n) != n)
				break;
		}
		if (pf[1].revents) {
			n = read(m->b, buf, sizeof(buf));
			if (n <= 0 || write(m->a, buf, (size_t)n) != n)
				break;
		}
	}
	shutdown(m->a, SHUT_RDWR);
	shutdown(m->b, SHUT_RDWR);
	return NULL;
}

static void test_tampered_header(void **state)
{
	struct pair p;
	struct mitm m;
	pthread_t ta, tm;
	int fa[2], fb[2];
	char path[300];
	uint8_t *before, *after;
	size_t nb, na;
	struct qw_km_link_report r;

	(void)state;
	pair_init(&p, QW_LINK_EC_LDPC);
	run_session(&p);
	assert_equal_pools(&p);
	psk_file_of(&p.e[1], path, sizeof(path));
	before = read_file(path, &nb);
	assert_non_null(before);

	assert_int_equal(qw_frame_tcp_pair(fa), 0);
	assert_int_equal(qw_frame_tcp_pair(fb), 0);
	m.a = fa[1];
	m.b = fb[0];
	m.at = 12; /* epoch, byte 4 of 8: + 2^24 s, still a valid epoch */
	assert_int_equal(pthread_create(&tm, NULL, mitm_main, &m), 0);
	p.e[0].fd = fa[0];
	assert_int_equal(pthread_create(&ta, NULL, alice_main, &p.e[0]), 0);
	p.e[1].ret = km_qkd_session(p.e[1].q, fb[1]);
	if (p.e[1].ret)
		shutdown(fb[1], SHUT_RDWR);
	pthread_join(ta, NULL);
	pthread_join(tm, NULL);
	close(fa[0]);
	close(fa[1]);
	close(fb[0]);
	close(fb[1]);
	assert_int_equal(p.e[1].ret, QW_EAUTH);
	assert_true(p.e[0].ret != 0);
	assert_int_equal(p.e[0].npool + p.e[1].npool, 0);
	after = read_file(path, &na);
	assert_int_equal(na, nb);
	assert_memory_equal(after, before, nb);
	free(after);
	free(before);
	km_qkd_get_report(p.e[1].q, &r);
	assert_int_equal(r.auth_failures, 1);

	run_session(&p);
	assert_equal_pools(&p);
	pair_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sessions_agree),
		cmocka_unit_test(test_commit_cut),
		cmocka_unit_test(test_forged_header),
		cmocka_unit_test(test_attacked_session),
		cmocka_unit_test(test_tampered_header),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
