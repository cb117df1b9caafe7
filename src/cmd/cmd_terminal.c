/* qwave terminal: a mobile terminal's local key balance and its
 * over-the-air refill (refill.h, docs/plkg.md section 12).
 *
 * The terminal is a `qwave device` medium (DIR/device.json: the medium key
 * and the pre-filled KSC keys). Its balance of refilled keys is
 * DIR/balance.sealed (mode 0600), AES-256-GCM under a key derived from the
 * medium key. A refill authenticates its frames with the pool the previous
 * refill carried forward from its PLKG key (DIR/carry.sealed), or, for the
 * first refill and after any failure, with unused pre-filled slots (marked
 * used before the refill starts, so never reused) and runs the terminal end
 * of the protocol. The access point is normally the Key Service Center
 * (--ap to qwksc's [air] port: ksc_air.c); for demos and tests without a
 * KSC a stand-in runs in this process over a socketpair, or as `qwave
 * terminal ap`: it holds the same slots (read from the medium) and its keys
 * come from the OS DRBG in place of the KSC's keys. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "commands.h"
#include "qwave/encoding.h"
#include "qwave/error.h"
#include "qwave/hash.h"
#include "qwave/ksc.h"
#include "qwave/refill.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"

struct topts {
	const char *cmd, *dir, *out, *ap, *listen;
	uint64_t bits, threshold, air_seed, count;
	int json, force, have_bits, have_seed, still;
};

/* Before the framed connection of a TCP refill (ksc.h "the air
 * interface"), the terminal says who it is and which channel realisation it
 * probes (hello), then offers its carried pool by id or names in the clear
 * the pre-filled slots that authenticate it (as a KSC challenge names its
 * batch and slot): "QWRF1\n" then per slot the batch ID (36 chars) and
 * be64(slot). */
#define SLOTS QW_KSC_AIR_SLOTS
#define NAME_BYTES QW_KSC_AIR_NAME_BYTES
#define PREAMBLE_BYTES QW_KSC_AIR_PREAMBLE_BYTES

static int help(const char *cmd)
{
	if (!strcmp(cmd, "balance"))
		printf("usage: qwave terminal balance --dir DIR [--json]\n\n"
		       "Refilled key bits held by the terminal (DIR/balance.sealed) and the unused\n"
		       "pre-filled bits of its medium (DIR/device.json).\n");
	else if (!strcmp(cmd, "use"))
		printf("usage: qwave terminal use --dir DIR --bits N [--out FILE] [--json]\n\n"
		       "Take N bits (a multiple of 8) of refilled key, oldest first; they leave the\n"
		       "balance. Prints their SM3 fingerprint; --out writes them (hex, mode 0600).\n");
	else if (!strcmp(cmd, "ap"))
		printf("usage: qwave terminal ap --listen PORT --air-seed N --dir DIR [--count N]\n\n"
		       "A STAND-IN access point for tests and demos without a Key Service Center (the\n"
		       "real one is qwksc with an [air] listener). On 127.0.0.1:PORT (0: any; the port\n"
		       "is printed) it serves --count refills (0: forever) to the one device whose\n"
		       "medium is DIR. The n-th refill probes simulated channel realisation N + n - 1;\n"
		       "the terminal passes the same --air-seed. It reads the named pre-filled slots\n"
		       "from the terminal's medium file (it cannot tell whether they were used) and\n"
		       "draws keys from the OS DRBG in place of the KSC's keys.\n");
	else
		printf("usage: qwave terminal refill --dir DIR [--threshold BITS] [--bits BITS]\n"
		       "                             [--ap HOST:PORT [--air-seed N]] [--static]\n"
		       "                             [--force] [--json]\n\n"
		       "When the balance is below --threshold (default 8192 bits) or with --force, ask\n"
		       "for --bits (default 4096, a multiple of 256, at most 65536) over the air:\n"
		       "probing and PLKG distillation (BCH) with the access point, then the keys\n"
		       "one-time-pad encrypted under the fresh PLKG key with a Wegman-Carter MAC.\n"
		       "Frames are authenticated with the pool the last refill carried forward from\n"
		       "its PLKG key (DIR/carry.sealed), else with %u unused pre-filled slots.\n"
		       "--ap HOST:PORT: the access point over TCP, normally the Key Service Center's\n"
		       "air port (qwksc [air] listen; data_dir/status.json air_port), which delivers\n"
		       "its own keys for this device; --air-seed names the simulated channel\n"
		       "realisation both probe (default: random, sent in the hello). Without --ap a\n"
		       "stand-in access point runs in this process (keys from the OS DRBG).\n"
		       "--static: the terminal does not move; it asks the access point for the\n"
		       "random-weights remedy (docs/plkg.md section 8), whose first-window\n"
		       "covariance it receives in an authenticated frame.\n",
		       (unsigned)(QW_REFILL_PSK_BYTES / QW_KSC_SLOT_BYTES));
	return QW_EXIT_OK;
}

static int parse(struct topts *o, int argc, char **argv)
{
	memset(o, 0, sizeof(*o));
	o->cmd = argv[0];
	o->threshold = 8192;
	o->bits = 4096;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--help") || !strcmp(a, "-h"))
			return help(o->cmd), -1;
		if (!strcmp(a, "--json")) {
			o->json = 1;
		} else if (!strcmp(a, "--force")) {
			o->force = 1;
		} else if (!strcmp(a, "--static")) {
			o->still = 1;
		} else if (!strcmp(a, "--dir") && v) {
			o->dir = v, i++;
		} else if (!strcmp(a, "--out") && v) {
			o->out = v, i++;
		} else if (!strcmp(a, "--ap") && v) {
			o->ap = v, i++;
		} else if (!strcmp(a, "--listen") && v) {
			o->listen = v, i++;
		} else if ((!strcmp(a, "--air-seed") || !strcmp(a, "--count")) && v) {
			uint64_t x;

			if (qw_cli_parse_u64(v, &x))
				return qw_cli_usage_error("terminal", "bad value for %s: %s", a, v), -2;
			if (!strcmp(a, "--count"))
				o->count = x;
			else
				o->air_seed = x, o->have_seed = 1;
			i++;
		} else if ((!strcmp(a, "--bits") || !strcmp(a, "--threshold")) && v) {
			uint64_t x;

			if (qw_cli_parse_u64(v, &x))
				return qw_cli_usage_error("terminal", "bad value for %s: %s", a, v), -2;
			if (!strcmp(a, "--bits"))
				o->bits = x, o->have_bits = 1;
			else
				o->threshold = x;
			i++;
		} else {
			return qw_cli_usage_error("terminal", "unknown option or missing value: %s", a),
			       -2;
		}
	}
	if (!o->dir)
		return qw_cli_usage_error("terminal", "--dir is required"), -2;
	return 0;
}

/* ---- the medium -------------------------------------------------------- */

static json_t *medium_load(const char *dir)
{
	char p[600];
	uint8_t *d = NULL;
	size_t n = 0;
	json_t *j;

	snprintf(p, sizeof(p), "%s/device.json", dir);
	if (qw_cli_read_file(p, &d, &n))
		return NULL;
	j = json_loadb((const char *)d, n, 0, NULL);
	qw_free_secret(d, n);
	return json_is_object(j) ? j : (json_decref(j), NULL);
}

static int medium_save(const char *dir, json_t *j)
{
	char p[610], q[600], *t = json_dumps(j, JSON_INDENT(1));
	int ret;

	if (!t)
		return QW_ENOMEM;
	/* Written aside and renamed into place: the access point (a separate
	 * process here) reads the medium while a terminal updates it, and must
	 * never see a half-written file. */
	snprintf(p, sizeof(p), "%s/device.json.tmp", dir);
	snprintf(q, sizeof(q), "%s/device.json", dir);
	(void)unlink(p);
	ret = qw_cli_write_file(p, (const uint8_t *)t, strlen(t), 1);
	if (!ret && rename(p, q))
		ret = QW_EIO;
	if (ret)
		(void)unlink(p);
	qw_free_secret(t, strlen(t) + 1);
	return ret;
}

/* A file key: HKDF-SHA-256 of the medium key, info names the file. */
static int medium_subkey(json_t *st, const char *info, uint8_t key[32])
{
	const char *s = json_string_value(json_object_get(st, "medium_key"));
	uint8_t mk[64];
	size_t n = 0;
	int ret;

	if (!s || qw_base64_decode(mk, sizeof(mk), &n, s, strlen(s)) ||
	    n != QW_KSC_MEDIUM_KEY_BYTES)
		return QW_ENOTFOUND;
	ret = qw_hkdf(QW_HASH_SHA256, mk, n, "qwave-terminal", 14, info, strlen(info), key, 32);
	qw_wipe(mk, sizeof(mk));
	return ret;
}

static int balance_key(json_t *st, uint8_t key[32])
{
	return medium_subkey(st, "balance key", key);
}

/* The carried frame pools (docs/plkg.md 12): the terminal's in
 * DIR/carry.sealed; the access point stand-in's in DIR/ap-carry.sealed
 * under another key (where the AP would seal it under its own key in its
 * own per-terminal state). A file that does not open counts as missing. */
static void carry_paths(const char *dir, char *tp, char *ap, size_t cap)
{
	snprintf(tp, cap, "%s/carry.sealed", dir);
	snprintf(ap, cap, "%s/ap-carry.sealed", dir);
}

static void carry_get(json_t *st, const char *path, const char *info,
		      struct qw_refill_carry *c)
{
	uint8_t k[32];

	memset(c, 0, sizeof(*c));
	if (medium_subkey(st, info, k) || qw_refill_carry_load(path, k, c))
		memset(c, 0, sizeof(*c));
	qw_wipe(k, sizeof(k));
}

static int carry_put(json_t *st, const char *path, const char *info,
		     const struct qw_refill_carry *c)
{
	uint8_t k[32];
	int ret = medium_subkey(st, info, k);

	if (!ret)
		ret = qw_refill_carry_save(path, k, c);
	qw_wipe(k, sizeof(k));
	return ret;
}

static uint64_t prefilled_bits(json_t *st)
{
	json_t *b;
	size_t i;
	uint64_t bits = 0;

	json_array_foreach(json_object_get(st, "batches"), i, b)
		bits += ((uint64_t)json_integer_value(json_object_get(b, "slots")) -
			 json_array_size(json_object_get(b, "used"))) * QW_KSC_SLOT_BITS;
	return bits;
}

static int slot_used(json_t *used, uint64_t s)
{
	json_t *u;
	size_t i;

	json_array_foreach(used, i, u)
		if ((uint64_t)json_integer_value(u) == s)
			return 1;
	return 0;
}

/* Take the next unused pre-filled slots into psk (n bytes, whole slots),
 * marking them used in st. */
static int take_slots(json_t *st, uint8_t *psk, size_t n, uint8_t *names)
{
	json_t *b;
	size_t i, got = 0;

	json_array_foreach(json_object_get(st, "batches"), i, b) {
		const char *k64 = json_string_value(json_object_get(b, "keys"));
		json_t *used = json_object_get(b, "used");
		uint64_t slots = (uint64_t)json_integer_value(json_object_get(b, "slots"));
		uint8_t *keys;
		size_t cap, kn = 0;

		if (!k64 || !json_is_array(used))
			continue;
		cap = qw_base64_decoded_max(strlen(k64));
		keys = malloc(cap ? cap : 1);
		if (!keys)
			return QW_ENOMEM;
		if (qw_base64_decode(keys, cap, &kn, k64, strlen(k64))) {
			qw_free_secret(keys, cap ? cap : 1);
			continue;
		}
		for (uint64_t s = 0; s < slots && got < n; s++) {
			if ((s + 1) * QW_KSC_SLOT_BYTES > kn || slot_used(used, s))
				continue;
			memcpy(psk + got, keys + s * QW_KSC_SLOT_BYTES, QW_KSC_SLOT_BYTES);
			if (names) {
				uint8_t *nm = names + got / QW_KSC_SLOT_BYTES * NAME_BYTES;
				const char *bid = json_string_value(json_object_get(b, "batch"));

				memset(nm, 0, NAME_BYTES);
				if (bid)
					memcpy(nm, bid, strlen(bid) < 36 ? strlen(bid) : 36);
				for (int k = 0; k < 8; k++)
					nm[36 + k] = (uint8_t)(s >> (56 - 8 * k));
			}
			got += QW_KSC_SLOT_BYTES;
			json_array_append_new(used, json_integer((json_int_t)s));
		}
		qw_free_secret(keys, cap ? cap : 1);
		if (got >= n)
			return 0;
	}
	return QW_EAGAIN;
}

/* ---- the access point stand-in ----------------------------------------- */

struct ap {
	const struct qw_refill_params *p;
	int fd;
	const uint8_t *psk;
	struct qw_refill_carry next;
	struct qw_refill_result res;
	int ret;
};

static int drbg_get(void *ctx, uint8_t *out, size_t n)
{
	(void)ctx;
	return qw_random_bytes(out, n);
}

static void *ap_main(void *arg)
{
	struct ap *a = arg;
	struct qw_frame_io io;
	struct qw_refill_source src = { NULL, drbg_get };

	qw_frame_io_fd(&io, a->fd);
	a->ret = qw_refill_ap_carry(a->p, &io, a->psk, QW_REFILL_PSK_BYTES, 0, &src, &a->next,
				    &a->res);
	shutdown(a->fd, SHUT_RDWR);
	return NULL;
}

/* ---- commands ---------------------------------------------------------- */

static int open_all(const struct topts *o, json_t **st, uint8_t key[32], char *bpath,
		    size_t cap, struct qw_refill_balance *bal)
{
	int ret;

	*st = medium_load(o->dir);
	if (!*st)
		return qw_cli_fail("no medium in %s (run 'qwave device init')", o->dir);
	if (balance_key(*st, key))
		return qw_cli_fail("this medium holds no key (erased?)");
	snprintf(bpath, cap, "%s/balance.sealed", o->dir);
	ret = qw_refill_balance_load(bpath, key, bal);
	if (ret)
		return qw_cli_fail("%s: %s", bpath, ret == QW_EAUTH ?
				   "does not open under this medium's key (altered?)" :
				   qw_strerror(ret));
	return QW_EXIT_OK;
}

static int cmd_balance(int argc, char **argv)
{
	struct topts o;
	struct qw_refill_balance bal = { 0 };
	uint8_t key[32];
	char bpath[640];
	json_t *st = NULL;
	int rc = parse(&o, argc, argv);

	if (rc)
		return rc == -1 ? QW_EXIT_OK : QW_EXIT_USAGE;
	rc = open_all(&o, &st, key, bpath, sizeof(bpath), &bal);
	if (rc == QW_EXIT_OK) {
		if (o.json)
			qw_cli_print_json(json_pack("{s:I, s:I, s:I}", "balance_bits",
						    (json_int_t)(bal.len * 8), "refills",
						    (json_int_t)bal.refills, "prefilled_bits",
						    (json_int_t)prefilled_bits(st)));
		else
			printf("balance            %zu bits\nrefills            %llu\n"
			       "prefilled          %llu bits\n", bal.len * 8,
			       (unsigned long long)bal.refills,
			       (unsigned long long)prefilled_bits(st));
	}
	qw_wipe(key, sizeof(key));
	qw_refill_balance_clear(&bal);
	json_decref(st);
	return rc;
}

static int cmd_use(int argc, char **argv)
{
	struct topts o;
	struct qw_refill_balance bal = { 0 };
	uint8_t key[32], fp[32], *k = NULL;
	char bpath[640], hex[65];
	json_t *st = NULL;
	size_t n = 0;
	int rc = parse(&o, argc, argv);

	if (rc)
		return rc == -1 ? QW_EXIT_OK : QW_EXIT_USAGE;
	if (!o.have_bits || !o.bits || o.bits % 8)
		return qw_cli_usage_error("terminal", "--bits N (a positive multiple of 8) is required");
	rc = open_all(&o, &st, key, bpath, sizeof(bpath), &bal);
	if (rc)
		goto out;
	n = (size_t)(o.bits / 8);
	k = malloc(n);
	if (!k) {
		rc = qw_cli_fail("out of memory");
		goto out;
	}
	if (qw_refill_balance_take(&bal, k, n)) {
		rc = qw_cli_fail("the balance holds %zu bits, fewer than %llu: refill first",
				 bal.len * 8, (unsigned long long)o.bits);
		goto out;
	}
	/* the keys leave the balance before anyone sees them */
	if (qw_refill_balance_save(bpath, key, &bal)) {
		rc = qw_cli_fail("cannot write %s", bpath);
		goto out;
	}
	if (o.out) {
		char *h = malloc(2 * n + 2);

		if (!h || qw_hex_encode(h, 2 * n + 1, k, n)) {
			free(h);
			rc = qw_cli_fail("out of memory");
			goto out;
		}
		h[2 * n] = '\n';
		rc = qw_cli_write_file(o.out, (const uint8_t *)h, 2 * n + 1, 1) ?
			     qw_cli_fail("cannot write %s", o.out) : QW_EXIT_OK;
		qw_free_secret(h, 2 * n + 2);
		if (rc)
			goto out;
	}
	if (qw_hash(QW_HASH_SM3, k, n, fp) || qw_hex_encode(hex, sizeof(hex), fp, sizeof(fp))) {
		rc = qw_cli_fail("hash failed");
		goto out;
	}
	if (o.json)
		qw_cli_print_json(json_pack("{s:I, s:s, s:I}", "used_bits", (json_int_t)o.bits,
					    "sm3", hex, "balance_bits", (json_int_t)(bal.len * 8)));
	else
		printf("used               %llu bits\nsm3                %s\nbalance            %zu bits\n",
		       (unsigned long long)o.bits, hex, bal.len * 8);
	rc = QW_EXIT_OK;
out:
	qw_free_secret(k, n);
	qw_wipe(key, sizeof(key));
	qw_refill_balance_clear(&bal);
	json_decref(st);
	return rc;
}

/* ---- TCP ---------------------------------------------------------------- */

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = write(fd, p, n);

		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int read_all(int fd, uint8_t *p, size_t n)
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

/* HOST:PORT -> connected socket, or -1. */
static int tcp_connect(const char *hp)
{
	char host[256];
	const char *c = strrchr(hp, ':');
	struct addrinfo hints = { 0 }, *ai = NULL;
	int fd = -1;

	if (!c || (size_t)(c - hp) >= sizeof(host))
		return -1;
	memcpy(host, hp, (size_t)(c - hp));
	host[c - hp] = '\0';
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, c + 1, &hints, &ai))
		return -1;
	for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
		if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen)) {
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(ai);
	return fd;
}

/* The access point's copy of the named slots. Stand-in: read from the
 * terminal's medium file, where the KSC would open its sealed copy of the
 * fill; it cannot tell whether a slot was used before. */
static int ap_slots(json_t *st, const uint8_t *names, uint8_t *psk)
{
	for (size_t i = 0; i < SLOTS; i++) {
		const uint8_t *nm = names + i * NAME_BYTES;
		char bid[37];
		uint64_t slot = 0;
		json_t *b;
		size_t j;
		int found = 0;

		memcpy(bid, nm, 36);
		bid[36] = '\0';
		for (int k = 0; k < 8; k++)
			slot = slot << 8 | nm[36 + k];
		json_array_foreach(json_object_get(st, "batches"), j, b) {
			const char *id = json_string_value(json_object_get(b, "batch"));
			const char *k64 = json_string_value(json_object_get(b, "keys"));
			uint8_t *keys;
			size_t cap, kn = 0;

			if (!id || strcmp(id, bid) || !k64)
				continue;
			cap = qw_base64_decoded_max(strlen(k64));
			keys = malloc(cap ? cap : 1);
			if (!keys)
				return QW_ENOMEM;
			if (!qw_base64_decode(keys, cap, &kn, k64, strlen(k64)) &&
			    slot < kn / QW_KSC_SLOT_BYTES) {
				memcpy(psk + i * QW_KSC_SLOT_BYTES, keys + slot * QW_KSC_SLOT_BYTES,
				       QW_KSC_SLOT_BYTES);
				found = 1;
			}
			qw_free_secret(keys, cap ? cap : 1);
			break;
		}
		if (!found)
			return QW_ENOTFOUND;
	}
	return 0;
}

static int cmd_ap(int argc, char **argv)
{
	struct topts o;
	struct qw_refill_params p;
	struct sockaddr_in sa = { 0 };
	socklen_t sl = sizeof(sa);
	uint64_t port, done = 0;
	json_t *st = NULL;
	int rc = parse(&o, argc, argv), lfd = -1, one = 1;

	if (rc)
		return rc == -1 ? QW_EXIT_OK : QW_EXIT_USAGE;
	if (!o.listen || qw_cli_parse_u64(o.listen, &port) || port > 65535 || !o.have_seed)
		return qw_cli_usage_error("terminal", "--listen PORT and --air-seed N are required");
	qw_refill_params_default(&p);
	p.air_seed = o.air_seed;
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 4) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl)) {
		rc = qw_cli_fail("cannot listen on 127.0.0.1:%llu", (unsigned long long)port);
		goto out;
	}
	printf("listening 127.0.0.1:%u\n", (unsigned)ntohs(sa.sin_port));
	fflush(stdout);
	rc = QW_EXIT_OK;
	while (!o.count || done < o.count) {
		uint8_t names[PREAMBLE_BYTES], psk[QW_REFILL_PSK_BYTES], verdict = 1;
		struct qw_refill_source src = { NULL, drbg_get };
		struct qw_refill_result res;
		struct qw_refill_carry cur, next;
		struct qw_frame_io io;
		char tp[640], cp[640];
		int fd = accept(lfd, NULL, NULL), ret, bad;

		if (fd < 0) {
			rc = qw_cli_fail("accept failed");
			break;
		}
		done++;
		json_decref(st);
		st = o.dir ? medium_load(o.dir) : NULL;
		/* the hello: this stand-in knows one device, the medium's; it
		 * keeps its own channel realisation (--air-seed), not the
		 * terminal's */
		{
			uint8_t hello[QW_KSC_AIR_HELLO_BYTES], want[QW_KSC_AIR_HELLO_BYTES];
			const char *id = st ? json_string_value(json_object_get(st, "id")) : NULL;

			bad = !id || read_all(fd, hello, sizeof(hello)) ||
			      qw_ksc_air_hello(id, 0, want) ||
			      memcmp(hello, want, sizeof(hello) - 8);
			verdict = bad ? 1 : 0;
			if (write_all(fd, &verdict, 1))
				bad = 1;
			verdict = 1;
		}
		bad = bad || read_all(fd, names, sizeof(names));
		if (!bad && !memcmp(names, "QWRC1\n", 6)) {
			/* the terminal offers its carried pool: take it when ours has
			 * the same id; either way ours is spent or out of step */
			carry_paths(o.dir, tp, cp, sizeof(cp));
			carry_get(st, cp, "ap carry key", &cur);
			if (cur.valid && !memcmp(cur.id, names + 6, QW_REFILL_CARRY_ID_BYTES))
				verdict = 0;
			if (qw_refill_carry_discard(cp))
				verdict = 1;
			if (!verdict)
				memcpy(psk, cur.pool, sizeof(psk));
			qw_wipe(&cur, sizeof(cur));
			bad = write_all(fd, &verdict, 1) ||
			      (verdict && read_all(fd, names, sizeof(names)));
		} else if (!bad) {
			carry_paths(o.dir, tp, cp, sizeof(cp));
			bad = qw_refill_carry_discard(cp);
		}
		if (!bad && verdict) {
			uint8_t ok;

			bad = memcmp(names, "QWRF1\n", 6) || ap_slots(st, names + 6, psk);
			ok = bad ? 1 : 0;
			if (write_all(fd, &ok, 1))
				bad = 1;
		}
		if (bad) {
			close(fd);
			rc = qw_cli_fail("refill %llu: unknown device or slots, or bad preamble",
					 (unsigned long long)done);
			continue;
		}
		qw_frame_io_fd(&io, fd);
		ret = qw_refill_ap_carry(&p, &io, psk, sizeof(psk), 0, &src, &next, &res);
		qw_wipe(psk, sizeof(psk));
		close(fd);
		if (!ret && next.valid && carry_put(st, cp, "ap carry key", &next))
			ret = QW_EIO, snprintf(res.reason, sizeof(res.reason), "%s",
					      "cannot write the carried pool");
		qw_wipe(&next, sizeof(next));
		if (ret)
			rc = qw_cli_fail("refill %llu: %s", (unsigned long long)done,
					 res.reason[0] ? res.reason : qw_strerror(ret));
		else
			printf("refill %llu: delivered %llu bits (PLKG key %llu bits, %llu probes, "
			       "pool %s, %llu bits carried)\n",
			       (unsigned long long)done, (unsigned long long)res.delivered_bits,
			       (unsigned long long)res.plkg_bits, (unsigned long long)res.probes,
			       verdict ? "pre-filled slots" : "carried",
			       (unsigned long long)res.carried_bits);
		fflush(stdout);
		/* a new channel realisation for the next refill, as the terminal's
		 * --air-seed must follow */
		p.air_seed++;
	}
out:
	if (lfd >= 0)
		close(lfd);
	json_decref(st);
	return rc;
}

static int cmd_refill(int argc, char **argv)
{
	struct topts o;
	struct qw_refill_balance bal = { 0 };
	struct qw_refill_params p;
	struct qw_refill_result res;
	struct qw_frame_io io;
	struct ap ap;
	uint8_t key[32], psk[QW_REFILL_PSK_BYTES], *keys = NULL, names[PREAMBLE_BYTES] = "QWRF1\n";
	struct qw_refill_carry tc, ac, tnext;
	char bpath[640], tp[640], cp[640], fp[17];
	json_t *st = NULL;
	size_t n = 0;
	uint64_t slot_bits = 0;
	int sv[2] = { -1, -1 }, ret, started = 0, fd = -1, use_carry = 0;
	pthread_t t;
	int rc = parse(&o, argc, argv);

	if (rc)
		return rc == -1 ? QW_EXIT_OK : QW_EXIT_USAGE;
	if (!o.bits || o.bits % QW_REFILL_UNIT_BITS || o.bits > 65536)
		return qw_cli_usage_error("terminal", "--bits must be a multiple of %u up to 65536",
					  QW_REFILL_UNIT_BITS);
	rc = open_all(&o, &st, key, bpath, sizeof(bpath), &bal);
	if (rc)
		goto out;
	if (!o.force && !qw_refill_needed(bal.len * 8, o.threshold)) {
		if (o.json)
			qw_cli_print_json(json_pack("{s:b, s:I, s:I}", "refilled", 0, "balance_bits",
						    (json_int_t)(bal.len * 8), "threshold_bits",
						    (json_int_t)o.threshold));
		else
			printf("balance %zu bits >= threshold %llu bits: no refill needed\n",
			       bal.len * 8, (unsigned long long)o.threshold);
		goto out;
	}
	memset(&ap, 0, sizeof(ap));
	memset(&tnext, 0, sizeof(tnext));
	carry_paths(o.dir, tp, cp, sizeof(tp));
	/* the carried pool is spent (its file removed) before any frame goes
	 * under it; a refill that fails leaves no carried pool at either end */
	carry_get(st, tp, "carry key", &tc);
	if (qw_refill_carry_discard(tp)) {
		rc = qw_cli_fail("cannot remove %s", tp);
		goto out;
	}
	qw_refill_params_default(&p);
	if (o.have_seed)
		p.air_seed = o.air_seed;
	else if (qw_random_bytes(&p.air_seed, sizeof(p.air_seed)))
		p.air_seed = 1;
	if (o.still) {
		/* a terminal that does not move: the AP's random-weights remedy
		 * (docs/plkg.md section 8), asked for in the HELLO */
		p.plkg.chan.speed_kmh = 0;
		p.plkg.remedy = QW_PLKG_REMEDY_RANDOM_WEIGHTS;
	}
	if (o.ap) {
		uint8_t hello[QW_KSC_AIR_HELLO_BYTES], known = 1;
		const char *me = json_string_value(json_object_get(st, "id"));

		fd = tcp_connect(o.ap);
		if (fd < 0) {
			rc = qw_cli_fail("cannot connect to the access point %s", o.ap);
			goto out;
		}
		/* who we are and the channel realisation we probe; the access
		 * point refuses a device it does not know before anything is
		 * spent */
		if (!me || qw_ksc_air_hello(me, p.air_seed, hello)) {
			rc = qw_cli_fail("the medium in %s names no valid device ID", o.dir);
			goto out;
		}
		if (write_all(fd, hello, sizeof(hello)) || read_all(fd, &known, 1) || known) {
			rc = qw_cli_fail("access point %s refused device '%s' (unknown to its KSC, "
					 "or not active)", o.ap, me);
			goto out;
		}
		if (tc.valid) {
			/* offer the carried pool by its public id; the AP answers 0
			 * when it holds the same one, else both fall back to slots */
			uint8_t offer[PREAMBLE_BYTES] = "QWRC1\n", verdict = 1;

			memcpy(offer + 6, tc.id, QW_REFILL_CARRY_ID_BYTES);
			if (write_all(fd, offer, sizeof(offer)) || read_all(fd, &verdict, 1)) {
				rc = qw_cli_fail("access point %s: preamble failed", o.ap);
				goto out;
			}
			use_carry = verdict == 0;
		}
	} else {
		/* the in-process AP stand-in holds its own carried pool */
		carry_get(st, cp, "ap carry key", &ac);
		use_carry = tc.valid && ac.valid &&
			    !memcmp(tc.id, ac.id, QW_REFILL_CARRY_ID_BYTES);
		qw_wipe(&ac, sizeof(ac));
		if (qw_refill_carry_discard(cp)) {
			rc = qw_cli_fail("cannot remove %s", cp);
			goto out;
		}
	}
	if (use_carry) {
		memcpy(psk, tc.pool, sizeof(psk));
	} else {
		if (take_slots(st, psk, sizeof(psk), names + 6)) {
			rc = qw_cli_fail("fewer than %zu unused pre-filled bits on the medium: fill it "
					 "first", sizeof(psk) * 8);
			goto out;
		}
		slot_bits = sizeof(psk) * 8;
		/* the slots are spent before any frame is sent under them */
		if (medium_save(o.dir, st)) {
			rc = qw_cli_fail("cannot write %s/device.json", o.dir);
			goto out;
		}
	}
	qw_wipe(&tc, sizeof(tc));
	if (o.ap) {
		/* a separate access point process over TCP */
		if (!use_carry) {
			uint8_t ok = 1;

			if (write_all(fd, names, sizeof(names)) || read_all(fd, &ok, 1)) {
				rc = qw_cli_fail("access point %s: preamble failed", o.ap);
				goto out;
			}
			if (ok) {
				rc = qw_cli_fail("access point %s refused the named pre-filled slots "
						 "(spent before, or not of this device's fill)", o.ap);
				goto out;
			}
		}
		if (!o.json)
			qw_cli_progress("probing the channel and distilling a PLKG key...");
		qw_frame_io_fd(&io, fd);
		ret = qw_refill_terminal_carry(&p, &io, psk, sizeof(psk), o.bits, &tnext, &keys, &n,
					       &res);
		goto done;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
		rc = qw_cli_fail("cannot set up the simulated air interface");
		goto out;
	}
	ap.p = &p;
	ap.fd = sv[0];
	ap.psk = psk;
	if (pthread_create(&t, NULL, ap_main, &ap)) {
		rc = qw_cli_fail("cannot start the access point");
		goto out;
	}
	started = 1;
	if (!o.json)
		qw_cli_progress("probing the channel and distilling a PLKG key...");
	qw_frame_io_fd(&io, sv[1]);
	ret = qw_refill_terminal_carry(&p, &io, psk, sizeof(psk), o.bits, &tnext, &keys, &n, &res);
	shutdown(sv[1], SHUT_RDWR);
	pthread_join(t, NULL);
	started = 0;
	if (!ap.ret && ap.next.valid && carry_put(st, cp, "ap carry key", &ap.next)) {
		rc = qw_cli_fail("cannot write %s", cp);
		goto out;
	}
done:
	if (!o.json)
		qw_cli_progress_done();
	if (ret) {
		rc = qw_cli_fail("refill failed: %s", res.reason[0] ? res.reason : qw_strerror(ret));
		goto out;
	}
	if (qw_refill_balance_add(&bal, keys, n) || qw_refill_balance_save(bpath, key, &bal)) {
		rc = qw_cli_fail("cannot write %s", bpath);
		goto out;
	}
	if (tnext.valid && carry_put(st, tp, "carry key", &tnext)) {
		rc = qw_cli_fail("cannot write %s (the next refill uses pre-filled slots)", tp);
		goto out;
	}
	/* a public prefix of SM3(PLKG key), equal at both ends: tells two
	 * refills' keys apart without showing either */
	if (qw_hex_encode(fp, sizeof(fp), res.plkg_fingerprint, 8))
		fp[0] = '\0';
	if (o.json)
		qw_cli_print_json(json_pack("{s:b, s:s, s:f, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
					    "s:s, s:I, s:I, s:I}", "remedy", res.remedy,
					    "plkg_key_sm3_prefix", fp,
					    "air_time_s",
					    (double)res.probes / p.plkg.chan.probe_rate_hz,
					    "refilled", 1, "frames_sent", (json_int_t)res.frames_sent,
					    "frames_received", (json_int_t)res.frames_received,
					    "delivered_bits", (json_int_t)res.delivered_bits,
					    "balance_bits", (json_int_t)(bal.len * 8), "probes",
					    (json_int_t)res.probes, "raw_bits",
					    (json_int_t)res.raw_bits, "disclosed_bits",
					    (json_int_t)res.disclosed_bits, "plkg_key_bits",
					    (json_int_t)res.plkg_bits, "key_source",
					    o.ap ? "access point" : "os-drbg (stand-in for the KSC QKD pool)",
					    "slot_bits_used", (json_int_t)slot_bits, "plkg_bits_carried",
					    (json_int_t)res.carried_bits, "pad_bits_used",
					    (json_int_t)res.pad_bits_used));
	else
		printf("delivered          %llu bits\nbalance            %zu bits\n"
		       "probes             %llu (%.1f s of probing)\nraw                %llu bits\n"
		       "disclosed          %llu bits\nplkg key           %llu bits (%llu carried as "
		       "the next refill's frame pool, the rest wiped)\n"
		       "pre-filled slots   %llu bits used (frame pads used %llu bits)\n"
		       "plkg key sm3       %s... (prefix)\n",
		       (unsigned long long)res.delivered_bits, bal.len * 8,
		       (unsigned long long)res.probes,
		       (double)res.probes / p.plkg.chan.probe_rate_hz,
		       (unsigned long long)res.raw_bits, (unsigned long long)res.disclosed_bits,
		       (unsigned long long)res.plkg_bits, (unsigned long long)res.carried_bits,
		       (unsigned long long)slot_bits, (unsigned long long)res.pad_bits_used, fp);
	rc = QW_EXIT_OK;
out:
	if (started) {
		shutdown(sv[1], SHUT_RDWR);
		pthread_join(t, NULL);
	}
	if (sv[0] >= 0) {
		close(sv[0]);
		close(sv[1]);
	}
	if (fd >= 0)
		close(fd);
	qw_free_secret(keys, n);
	qw_wipe(psk, sizeof(psk));
	qw_wipe(&tc, sizeof(tc));
	qw_wipe(&tnext, sizeof(tnext));
	qw_wipe(&ap.next, sizeof(ap.next));
	qw_wipe(key, sizeof(key));
	qw_refill_balance_clear(&bal);
	json_decref(st);
	return rc;
}

int qw_cmd_terminal(int argc, char **argv)
{
	static const struct qw_cli_cmd cmds[] = {
		{ "refill", cmd_refill, "refill the key balance over the air (PLKG + OTP)" },
		{ "balance", cmd_balance, "refilled and pre-filled key bits held" },
		{ "use", cmd_use, "take keys from the balance" },
		{ "ap", cmd_ap, "a stand-in access point for tests without a KSC (TCP)" },
		{ NULL, NULL, NULL },
	};
	return qw_cli_dispatch("terminal", "a mobile terminal's key balance and over-the-air refill",
			       cmds, argc, argv);
}
