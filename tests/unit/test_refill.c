/* Over-the-air refill (refill.h): a terminal and an access point over a
 * socketpair standing for the air interface. The AP's key source is a
 * stand-in for the KSC's QKD pool that records what it handed out, so the
 * test can check the terminal received exactly those keys. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "qwave/frame.h"
#include "qwave/ksc.h"
#include "qwave/refill.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

#define WANT_BITS 1024u

struct recsrc {
	struct qw_rng *rng;
	struct qw_refill_ksc_source *ksc; /* when set: keys from the KSC */
	uint8_t given[4096];
	size_t n;
};

static int rec_get(void *ctx, uint8_t *out, size_t n)
{
	struct recsrc *s = ctx;

	if (s->n + n > sizeof(s->given))
		return QW_EIO;
	if (s->ksc ? qw_refill_ksc_get(s->ksc, out, n) : qw_rng_bytes(s->rng, out, n))
		return QW_EIO;
	memcpy(s->given + s->n, out, n);
	s->n += n;
	return 0;
}

struct ap_arg {
	const struct qw_refill_params *p;
	int fd;
	uint8_t psk[QW_REFILL_PSK_BYTES];
	struct recsrc src;
	struct qw_refill_result res;
	int ret;
};

static void *ap_thread(void *arg)
{
	struct ap_arg *a = arg;
	struct qw_frame_io io;
	struct qw_refill_source src = { &a->src, rec_get };

	qw_frame_io_fd(&io, a->fd);
	a->ret = qw_refill_ap(a->p, &io, a->psk, sizeof(a->psk), 0, &src, &a->res);
	/* let the terminal's blocked read end when the AP gives up */
	shutdown(a->fd, SHUT_RDWR);
	return NULL;
}

static void psk_fill(uint8_t *psk, uint64_t seed)
{
	struct qw_rng *r = qw_rng_new_seeded(seed);

	assert_non_null(r);
	assert_int_equal(qw_rng_bytes(r, psk, QW_REFILL_PSK_BYTES), 0);
	qw_rng_free(r);
}

/* MITM between the AP's socket and the terminal's: forwards frames both
 * ways, flipping one ciphertext bit of the AP's DELIVER frame. */
struct mitm {
	int a, b; /* a: the AP side, b: the terminal side */
	int flipped;
};

static int read_full(int fd, uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = read(fd, p, n);

		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static void *mitm_down(void *arg)
{
	struct mitm *m = arg;
	uint8_t h[QW_FRAME_HEADER_BYTES], *body;

	for (;;) {
		uint32_t type, len;

		if (read_full(m->a, h, sizeof(h)))
			break;
		type = (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
		len = (uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 | (uint32_t)h[10] << 8 | h[11];
		body = malloc((size_t)len + QW_FRAME_TAG_BYTES);
		if (!body || read_full(m->a, body, (size_t)len + QW_FRAME_TAG_BYTES)) {
			free(body);
			break;
		}
		if (type == 0x52460002 && len > 8 + 16) { /* DELIVER: a ciphertext bit */
			body[8 + 3] ^= 0x10;
			m->flipped = 1;
		}
		if (write(m->b, h, sizeof(h)) != (ssize_t)sizeof(h) ||
		    write(m->b, body, (size_t)len + QW_FRAME_TAG_BYTES) !=
			    (ssize_t)(len + QW_FRAME_TAG_BYTES)) {
			free(body);
			break;
		}
		free(body);
	}
	shutdown(m->b, SHUT_RDWR);
	return NULL;
}

static void *mitm_up(void *arg)
{
	struct mitm *m = arg;
	uint8_t buf[4096];
	ssize_t r;

	while ((r = read(m->b, buf, sizeof(buf))) > 0)
		if (write(m->a, buf, (size_t)r) != r)
			break;
	shutdown(m->a, SHUT_RDWR);
	return NULL;
}

/* One refill; with mitm set the bytes pass through a tampering relay. */
static int run_refill_src(const struct qw_refill_params *p, uint64_t psk_seed, int tamper,
			  struct qw_refill_ksc_source *ksc, struct ap_arg *ap, uint8_t **keys,
			  size_t *nbytes, struct qw_refill_result *tres)
{
	int sv[2], sw[2];
	pthread_t t, tm1, tm2;
	struct mitm m = { 0 };
	struct qw_frame_io io;
	int ret;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	memset(ap, 0, sizeof(*ap));
	ap->p = p;
	ap->fd = sv[0];
	psk_fill(ap->psk, psk_seed);
	ap->src.rng = qw_rng_new_seeded(psk_seed + 77);
	ap->src.ksc = ksc;
	assert_non_null(ap->src.rng);
	if (tamper) {
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sw), 0);
		m.a = sv[1];
		m.b = sw[0];
		assert_int_equal(pthread_create(&tm1, NULL, mitm_down, &m), 0);
		assert_int_equal(pthread_create(&tm2, NULL, mitm_up, &m), 0);
	}
	assert_int_equal(pthread_create(&t, NULL, ap_thread, ap), 0);
	{
		uint8_t psk[QW_REFILL_PSK_BYTES];

		psk_fill(psk, psk_seed);
		qw_frame_io_fd(&io, tamper ? sw[1] : sv[1]);
		ret = qw_refill_terminal(p, &io, psk, sizeof(psk), WANT_BITS, keys, nbytes, tres);
		qw_wipe(psk, sizeof(psk));
	}
	shutdown(tamper ? sw[1] : sv[1], SHUT_RDWR);
	pthread_join(t, NULL);
	if (tamper) {
		pthread_join(tm1, NULL);
		pthread_join(tm2, NULL);
		assert_true(m.flipped);
		close(sw[0]);
		close(sw[1]);
	}
	close(sv[0]);
	close(sv[1]);
	qw_rng_free(ap->src.rng);
	return ret;
}

static int run_refill(const struct qw_refill_params *p, uint64_t psk_seed, int tamper,
		      struct ap_arg *ap, uint8_t **keys, size_t *nbytes,
		      struct qw_refill_result *tres)
{
	return run_refill_src(p, psk_seed, tamper, NULL, ap, keys, nbytes, tres);
}

/* The AP's keys from a real Key Service Center (its key life cycle with
 * the OS entropy source; a QKD pool needs a KME): generated for the AP's
 * application identity, distributed to it once, delivered over the air. */
static void test_refill_from_ksc(void **state)
{
	char dir[] = "/tmp/qw_refill_ksc_XXXXXX", db[64];
	uint8_t mk[QW_KSC_MASTER_KEY_BYTES], *keys = NULL;
	struct qw_ksc_opts o = { 0 };
	struct qw_ksc_resp r;
	struct qw_ksc *k;
	struct qw_refill_params p;
	struct qw_refill_result tres;
	struct qw_refill_ksc_source ks = { 0 };
	struct ap_arg *ap = calloc(1, sizeof(*ap));
	uint64_t nrec = 0, bad = 0;
	size_t n = 0;
	int err = 0;

	(void)state;
	assert_non_null(ap);
	assert_non_null(mkdtemp(dir));
	snprintf(db, sizeof(db), "%s/ksc.db", dir);
	memset(mk, 0x5a, sizeof(mk));
	assert_int_equal(qw_ksc_init(db, mk, "root"), 0);
	o.db_path = db;
	o.master_key = mk;
	o.sync_normal = 1;
	k = qw_ksc_open(&o, &err);
	assert_non_null(k);
	assert_int_equal(qw_ksc_handle(k, "root", "POST", "/apps", NULL,
				       (const uint8_t *)"{\"id\":\"ap-1\"}", 13, &r), 0);
	assert_int_equal(r.status, 201);
	qw_ksc_resp_clear(&r);
	ks.ksc = k;
	ks.operator_id = "root";
	ks.ap_id = "ap-1";
	qw_refill_params_default(&p);
	p.air_seed = 41;
	assert_int_equal(run_refill_src(&p, 6, 0, &ks, ap, &keys, &n, &tres), 0);
	assert_int_equal(ap->ret, 0);
	assert_int_equal(ks.last_status, 200);
	assert_int_equal(n * 8, WANT_BITS);
	assert_int_equal(ap->src.n, n);
	assert_memory_equal(keys, ap->src.given, n);
	/* an unknown AP identity: the KSC refuses, nothing is delivered */
	qw_free_secret(keys, n);
	keys = NULL;
	ks.ap_id = "ghost";
	p.air_seed = 42;
	assert_int_not_equal(run_refill_src(&p, 7, 0, &ks, ap, &keys, &n, &tres), 0);
	assert_null(keys);
	assert_int_equal(ap->res.delivered_bits, 0);
	assert_int_equal(ks.last_status, 404);
	assert_int_equal(qw_ksc_audit_verify(k, &nrec, &bad), 0);
	qw_ksc_close(k);
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		assert_int_equal(system(cmd), 0);
	}
	free(ap);
}

static void test_refill_delivers_and_balance_grows(void **state)
{
	struct qw_refill_params p;
	struct qw_refill_result tres;
	struct qw_refill_balance bal = { 0 };
	struct ap_arg *ap = calloc(1, sizeof(*ap));
	uint8_t *keys = NULL;
	size_t n = 0, before;

	(void)state;
	assert_non_null(ap);
	qw_refill_params_default(&p);
	p.air_seed = 11;
	assert_int_equal(qw_refill_balance_add(&bal, (const uint8_t *)"0123456789abcdef"
						"0123456789abcdef", 32), 0);
	before = bal.len;
	assert_int_equal(run_refill(&p, 1, 0, ap, &keys, &n, &tres), 0);
	assert_int_equal(ap->ret, 0);
	assert_true(tres.plkg_bits > QW_REFILL_MAC_BITS + QW_REFILL_UNIT_BITS);
	assert_int_equal(tres.plkg_bits, ap->res.plkg_bits);
	assert_memory_equal(tres.plkg_fingerprint, ap->res.plkg_fingerprint, 32);
	assert_true(tres.disclosed_bits > 0);
	/* the pre-shared pads suffice: every frame had its own pad */
	assert_true(tres.frames_sent > 0 && tres.frames_sent <= QW_REFILL_PSK_UNITS);
	assert_true(ap->res.frames_sent > 0 && ap->res.frames_sent <= QW_REFILL_PSK_UNITS);
	assert_int_equal(tres.frames_received, ap->res.frames_sent);
	/* the block was sized for the request: all of it arrives */
	assert_int_equal(n * 8, WANT_BITS);
	/* exactly what the AP took from its source arrived */
	assert_true(n > 0 && n * 8 <= WANT_BITS && (n * 8) % QW_REFILL_UNIT_BITS == 0);
	assert_int_equal(tres.delivered_bits, n * 8);
	assert_int_equal(ap->res.delivered_bits, n * 8);
	assert_int_equal(ap->src.n, n);
	assert_memory_equal(keys, ap->src.given, n);
	assert_int_equal(qw_refill_balance_add(&bal, keys, n), 0);
	assert_int_equal((bal.len - before) * 8, tres.delivered_bits);
	assert_memory_equal(bal.keys + before, ap->src.given, n);
	qw_free_secret(keys, n);
	qw_refill_balance_clear(&bal);
	free(ap);
}

static void test_two_refills_use_different_keys(void **state)
{
	struct qw_refill_params p;
	struct qw_refill_result r1, r2;
	struct ap_arg *ap = calloc(1, sizeof(*ap));
	uint8_t *k1 = NULL, *k2 = NULL;
	size_t n1 = 0, n2 = 0;

	(void)state;
	assert_non_null(ap);
	qw_refill_params_default(&p);
	p.air_seed = 21;
	assert_int_equal(run_refill(&p, 2, 0, ap, &k1, &n1, &r1), 0);
	p.air_seed = 22; /* a later refill probes the channel anew */
	assert_int_equal(run_refill(&p, 3, 0, ap, &k2, &n2, &r2), 0);
	assert_int_equal(ap->ret, 0);
	assert_memory_not_equal(r1.plkg_fingerprint, r2.plkg_fingerprint, 32);
	assert_true(n1 > 0 && n2 > 0);
	qw_free_secret(k1, n1);
	qw_free_secret(k2, n2);
	free(ap);
}

/* A still terminal: without the remedy its channel gives no entropy and
 * no key; with it (the terminal says it is still in its HELLO, the AP
 * combines its elements with random weights and sends its first window's
 * covariance) the refill delivers, and the AP learned the remedy from the
 * HELLO alone (its own parameters are the defaults). */
static void test_static_terminal_refills_with_remedy(void **state)
{
	struct qw_refill_params pap, pt;
	struct qw_refill_result tres;
	struct ap_arg *ap = calloc(1, sizeof(*ap));
	struct qw_frame_io io;
	uint8_t psk[QW_REFILL_PSK_BYTES], *keys = NULL;
	size_t n = 0;
	int sv[2];
	pthread_t t;

	(void)state;
	assert_non_null(ap);
	qw_refill_params_default(&pap);
	pap.air_seed = 31;
	pt = pap;
	pt.plkg.chan.speed_kmh = 0;
	pt.plkg.remedy = QW_PLKG_REMEDY_RANDOM_WEIGHTS;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ap->p = &pap;
	ap->fd = sv[0];
	psk_fill(ap->psk, 8);
	ap->src.rng = qw_rng_new_seeded(8 + 77);
	assert_non_null(ap->src.rng);
	assert_int_equal(pthread_create(&t, NULL, ap_thread, ap), 0);
	psk_fill(psk, 8);
	qw_frame_io_fd(&io, sv[1]);
	assert_int_equal(qw_refill_terminal(&pt, &io, psk, sizeof(psk), WANT_BITS, &keys, &n,
					    &tres), 0);
	shutdown(sv[1], SHUT_RDWR);
	pthread_join(t, NULL);
	close(sv[0]);
	close(sv[1]);
	qw_rng_free(ap->src.rng);
	assert_int_equal(ap->ret, 0);
	assert_true(ap->res.remedy);
	assert_true(tres.remedy);
	assert_int_equal(n * 8, WANT_BITS);
	assert_int_equal(ap->src.n, n);
	assert_memory_equal(keys, ap->src.given, n);
	assert_memory_equal(ap->res.plkg_fingerprint, tres.plkg_fingerprint, 32);
	/* the covariance frame fits the pads: at most 5 frames each way */
	assert_true(ap->res.frames_sent <= QW_REFILL_PSK_UNITS);
	assert_true(tres.frames_sent <= QW_REFILL_PSK_UNITS);
	qw_free_secret(keys, n);
	keys = NULL;
	/* the same still terminal without the remedy gets no key */
	pt.plkg.remedy = QW_PLKG_REMEDY_NONE;
	pt.max_probes = 1000;
	pt.air_seed = 32;
	assert_int_not_equal(run_refill_src(&pt, 9, 0, NULL, ap, &keys, &n, &tres), 0);
	assert_null(keys);
	assert_int_equal(ap->res.delivered_bits, 0);
	free(ap);
}

static int stop_now(void *arg)
{
	return *(const int *)arg;
}

/* A refill asked to stop (a daemon shutting down) ends before probing on,
 * with nothing taken from the key source and nothing delivered. */
static void test_stopped_refill_delivers_nothing(void **state)
{
	struct qw_refill_params p;
	struct qw_refill_result tres;
	struct ap_arg *ap = calloc(1, sizeof(*ap));
	uint8_t *keys = NULL;
	size_t n = 0;
	int stop = 1;

	(void)state;
	assert_non_null(ap);
	qw_refill_params_default(&p);
	p.air_seed = 23;
	p.should_stop = stop_now;
	p.stop_arg = &stop;
	assert_int_equal(run_refill(&p, 4, 0, ap, &keys, &n, &tres), QW_EABORT);
	assert_int_equal(ap->ret, QW_EABORT);
	assert_string_equal(ap->res.reason, "stopped");
	assert_int_equal(ap->res.probes, 0);
	assert_int_equal(ap->res.delivered_bits, 0);
	assert_int_equal(ap->src.n, 0);
	assert_null(keys);
	free(ap);
}

static void test_tampered_delivery_adds_nothing(void **state)
{
	struct qw_refill_params p;
	struct qw_refill_result tres;
	struct ap_arg *ap = calloc(1, sizeof(*ap));
	uint8_t *keys = NULL;
	size_t n = 0;
	int ret;

	(void)state;
	assert_non_null(ap);
	qw_refill_params_default(&p);
	p.air_seed = 31;
	ret = run_refill(&p, 4, 1, ap, &keys, &n, &tres);
	/* the frame's own Wegman-Carter tag catches the flipped bit first */
	assert_int_equal(ret, QW_EAUTH);
	assert_null(keys);
	assert_int_equal(n, 0);
	assert_int_equal(tres.delivered_bits, 0);
	assert_int_not_equal(ap->ret, 0);
	assert_int_equal(ap->res.delivered_bits, 0);
	free(ap);
}

/* The delivery message itself: OTP 1:1 under the PLKG key, WC-MAC with the
 * key's first 256 bits; any flipped bit fails, and nothing is decrypted. */
static void test_seal_open(void **state)
{
	uint8_t k[32 + 64], keys[64], msg[8 + 64 + 16], out[64];
	size_t len = 0;
	uint64_t nb = 0;
	struct qw_rng *r = qw_rng_new_seeded(5);

	(void)state;
	assert_non_null(r);
	assert_int_equal(qw_rng_bytes(r, k, sizeof(k)), 0);
	assert_int_equal(qw_rng_bytes(r, keys, sizeof(keys)), 0);
	qw_rng_free(r);
	assert_int_equal(qw_refill_seal(k, sizeof(k), keys, 512, msg, sizeof(msg), &len), 0);
	assert_int_equal(len, sizeof(msg));
	for (size_t i = 0; i < 64; i++)
		assert_int_equal(msg[8 + i], keys[i] ^ k[32 + i]);
	assert_int_equal(qw_refill_open(k, sizeof(k), msg, len, out, sizeof(out), &nb), 0);
	assert_int_equal(nb, 512);
	assert_memory_equal(out, keys, 64);
	/* a key too short for MAC + pad */
	assert_int_equal(qw_refill_seal(k, 32 + 63, keys, 512, msg, sizeof(msg), &len),
			 QW_ERANGE);
	for (size_t bit = 64; bit < 8 * sizeof(msg); bit += 37) {
		memset(out, 0, sizeof(out));
		msg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		assert_int_equal(qw_refill_open(k, sizeof(k), msg, sizeof(msg), out, sizeof(out),
						&nb), QW_EAUTH);
		for (size_t i = 0; i < sizeof(out); i++)
			assert_int_equal(out[i], 0);
		msg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	msg[7] ^= 8; /* length field */
	assert_int_equal(qw_refill_open(k, sizeof(k), msg, sizeof(msg), out, sizeof(out), &nb),
			 QW_EPARSE);
}

static void test_balance_file_and_threshold(void **state)
{
	char dir[] = "/tmp/qw_refill_XXXXXX", path[64];
	uint8_t key[32], key2[32], ks[96], got[40];
	struct qw_refill_balance b = { 0 }, c = { 0 };
	struct stat sb;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/balance", dir);
	memset(key, 7, sizeof(key));
	memset(key2, 8, sizeof(key2));
	for (size_t i = 0; i < sizeof(ks); i++)
		ks[i] = (uint8_t)(i * 13 + 1);
	assert_int_equal(qw_refill_balance_load(path, key, &b), 0); /* no file: empty */
	assert_int_equal(b.len, 0);
	assert_true(qw_refill_needed(b.len * 8, 256));
	assert_int_equal(qw_refill_balance_add(&b, ks, sizeof(ks)), 0);
	assert_false(qw_refill_needed(b.len * 8, 768));
	assert_true(qw_refill_needed(b.len * 8, 769));
	assert_int_equal(qw_refill_balance_save(path, key, &b), 0);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(qw_refill_balance_load(path, key2, &c), QW_EAUTH);
	assert_int_equal(qw_refill_balance_load(path, key, &c), 0);
	assert_int_equal(c.len, sizeof(ks));
	assert_int_equal(c.refills, 1);
	assert_memory_equal(c.keys, ks, sizeof(ks));
	assert_int_equal(qw_refill_balance_take(&c, got, 40), 0);
	assert_memory_equal(got, ks, 40);
	assert_int_equal(c.len, 56);
	assert_memory_equal(c.keys, ks + 40, 56);
	assert_int_equal(qw_refill_balance_take(&c, got, 57), QW_EAGAIN);
	assert_int_equal(c.len, 56);
	/* the keys are not in the file in clear */
	{
		FILE *f = fopen(path, "rb");
		uint8_t raw[512];
		size_t n;

		assert_non_null(f);
		n = fread(raw, 1, sizeof(raw), f);
		fclose(f);
		for (size_t i = 0; i + 8 <= n; i++)
			assert_memory_not_equal(raw + i, ks, 8);
	}
	qw_refill_balance_clear(&b);
	qw_refill_balance_clear(&c);
	unlink(path);
	rmdir(dir);
}

/* ---- carried frame pools ------------------------------------------------ */

struct cap_arg {
	const struct qw_refill_params *p;
	int fd;
	const uint8_t *psk;
	struct qw_refill_carry next;
	struct recsrc src;
	struct qw_refill_result res;
	int ret;
};

static void *cap_thread(void *arg)
{
	struct cap_arg *a = arg;
	struct qw_frame_io io;
	struct qw_refill_source src = { &a->src, rec_get };

	qw_frame_io_fd(&io, a->fd);
	a->ret = qw_refill_ap_carry(a->p, &io, a->psk, QW_REFILL_PSK_BYTES, 0, &src, &a->next,
				    &a->res);
	shutdown(a->fd, SHUT_RDWR);
	return NULL;
}

/* One refill with carry: the AP authenticates with apsk, the terminal with
 * tpsk (equal unless a test puts the ends out of step). */
static int carry_refill(const struct qw_refill_params *p, const uint8_t *apsk,
			const uint8_t *tpsk, uint64_t want, struct cap_arg *ap,
			struct qw_refill_carry *tnext, uint8_t **keys, size_t *nbytes,
			struct qw_refill_result *tres)
{
	int sv[2], ret;
	pthread_t t;
	struct qw_frame_io io;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	memset(ap, 0, sizeof(*ap));
	ap->p = p;
	ap->fd = sv[0];
	ap->psk = apsk;
	ap->src.rng = qw_rng_new_seeded(p->air_seed + 1000);
	assert_non_null(ap->src.rng);
	assert_int_equal(pthread_create(&t, NULL, cap_thread, ap), 0);
	qw_frame_io_fd(&io, sv[1]);
	ret = qw_refill_terminal_carry(p, &io, tpsk, QW_REFILL_PSK_BYTES, want, tnext, keys,
				       nbytes, tres);
	shutdown(sv[1], SHUT_RDWR);
	pthread_join(t, NULL);
	close(sv[0]);
	close(sv[1]);
	qw_rng_free(ap->src.rng);
	return ret;
}

static void check_carried(const struct qw_refill_result *tres, const struct cap_arg *ap,
			  const struct qw_refill_carry *tnext, const uint8_t *keys, size_t n,
			  uint64_t want)
{
	assert_int_equal(ap->ret, 0);
	assert_int_equal(n * 8, want);
	assert_int_equal(tres->delivered_bits, want);
	assert_int_equal(ap->res.delivered_bits, want);
	assert_memory_equal(keys, ap->src.given, n);
	/* the PLKG key held the request, the MAC and the next pool */
	assert_true(tres->plkg_bits >= QW_REFILL_MAC_BITS + want + QW_REFILL_CARRY_BITS);
	assert_int_equal(tres->carried_bits, QW_REFILL_CARRY_BITS);
	assert_int_equal(ap->res.carried_bits, QW_REFILL_CARRY_BITS);
	assert_true(tnext->valid && ap->next.valid);
	assert_memory_equal(tnext->id, ap->next.id, QW_REFILL_CARRY_ID_BYTES);
	assert_memory_equal(tnext->pool, ap->next.pool, QW_REFILL_PSK_BYTES);
	/* one 128-bit pad per frame, the same count at both ends, within the
	 * pool a refill carries (2 hash keys + QW_REFILL_PSK_UNITS pads a way) */
	assert_int_equal(tres->pad_bits_used,
			 (tres->frames_sent + tres->frames_received) * QW_AUTH_PAD_BYTES * 8);
	assert_int_equal(tres->pad_bits_used, ap->res.pad_bits_used);
	assert_true(tres->pad_bits_used > 0);
	assert_true(tres->pad_bits_used + 2 * QW_AUTH_HASHKEY_BYTES * 8 <= QW_REFILL_CARRY_BITS);
}

static void test_carried_pool_chains_refills(void **state)
{
	struct qw_refill_params p;
	struct qw_refill_result r1, r2, r3;
	struct cap_arg *ap = calloc(1, sizeof(*ap));
	struct qw_refill_carry *t1 = calloc(1, sizeof(*t1)), *t2 = calloc(1, sizeof(*t2));
	struct qw_refill_carry *a1 = calloc(1, sizeof(*a1)), *t3 = calloc(1, sizeof(*t3));
	uint8_t psk[QW_REFILL_PSK_BYTES], *k = NULL;
	size_t n = 0;

	(void)state;
	assert_true(ap && t1 && t2 && a1 && t3);
	qw_refill_params_default(&p);
	/* refill 1 bootstraps from pre-shared (pre-filled) material */
	psk_fill(psk, 41);
	p.air_seed = 41;
	assert_int_equal(carry_refill(&p, psk, psk, 512, ap, t1, &k, &n, &r1), 0);
	check_carried(&r1, ap, t1, k, n, 512);
	assert_memory_not_equal(t1->pool, psk, QW_REFILL_PSK_BYTES);
	*a1 = ap->next;
	qw_free_secret(k, n);
	k = NULL;
	/* refill 2 runs on the carried pools alone and carries the next one */
	p.air_seed = 42;
	assert_int_equal(carry_refill(&p, a1->pool, t1->pool, 512, ap, t2, &k, &n, &r2), 0);
	check_carried(&r2, ap, t2, k, n, 512);
	assert_memory_not_equal(r1.plkg_fingerprint, r2.plkg_fingerprint, 32);
	assert_memory_not_equal(t1->pool, t2->pool, QW_REFILL_PSK_BYTES);
	assert_memory_not_equal(t1->id, t2->id, QW_REFILL_CARRY_ID_BYTES);
	qw_free_secret(k, n);
	k = NULL;
	/* out of step (the AP still on refill 1's pool): the first frame fails,
	 * nothing is delivered and neither end carries a pool */
	p.air_seed = 43;
	assert_int_not_equal(carry_refill(&p, a1->pool, t2->pool, 512, ap, t3, &k, &n, &r3), 0);
	assert_null(k);
	assert_int_not_equal(ap->ret, 0);
	assert_false(t3->valid);
	assert_false(ap->next.valid);
	assert_int_equal(r3.carried_bits, 0);
	assert_int_equal(ap->res.delivered_bits, 0);
	assert_int_equal(ap->src.n, 0);
	free(ap);
	free(t1);
	free(t2);
	free(a1);
	free(t3);
}

static void test_carry_file(void **state)
{
	char dir[] = "/tmp/qw_carry_XXXXXX", path[64];
	uint8_t key[32], key2[32];
	struct qw_refill_carry c, d;
	struct stat sb;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/carry", dir);
	memset(key, 3, sizeof(key));
	memset(key2, 4, sizeof(key2));
	psk_fill(c.pool, 51);
	memset(c.id, 0xa5, sizeof(c.id));
	c.valid = 1;
	assert_int_equal(qw_refill_carry_load(path, key, &d), 0); /* none yet */
	assert_false(d.valid);
	assert_int_equal(qw_refill_carry_save(path, key, &c), 0);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(qw_refill_carry_load(path, key2, &d), QW_EAUTH);
	assert_false(d.valid);
	assert_int_equal(qw_refill_carry_load(path, key, &d), 0);
	assert_true(d.valid);
	assert_memory_equal(d.pool, c.pool, sizeof(c.pool));
	assert_memory_equal(d.id, c.id, sizeof(c.id));
	assert_int_equal(qw_refill_carry_discard(path), 0);
	assert_int_equal(qw_refill_carry_discard(path), 0); /* missing is fine */
	assert_int_equal(qw_refill_carry_load(path, key, &d), 0);
	assert_false(d.valid);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seal_open),
		cmocka_unit_test(test_balance_file_and_threshold),
		cmocka_unit_test(test_refill_delivers_and_balance_grows),
		cmocka_unit_test(test_two_refills_use_different_keys),
		cmocka_unit_test(test_tampered_delivery_adds_nothing),
		cmocka_unit_test(test_refill_from_ksc),
		cmocka_unit_test(test_stopped_refill_delivers_nothing),
		cmocka_unit_test(test_static_terminal_refills_with_remedy),
		cmocka_unit_test(test_carried_pool_chains_refills),
		cmocka_unit_test(test_carry_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
