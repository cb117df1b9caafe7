/* qwave demo: a short end-to-end showcase of the crypto core (what `make
 * run` runs): entropy source health tests and the DRBG, ZUC against the
 * published 3GPP test sets, SM4/AES AEAD round trips with tamper detection,
 * SM2 signatures. Every check is a real computation; the exit status is 1
 * when any of them fails. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cli.h"
#include "commands.h"
#include "qwave/aead.h"
#include "qwave/encoding.h"
#include "qwave/entropy.h"
#include "qwave/error.h"
#include "qwave/hash.h"
#include "qwave/rng.h"
#include "qwave/secmem.h"
#include "qwave/sm2.h"
#include "qwave/zuc.h"

#define AEAD_MSG_BYTES (4u << 20)
#define ZUC_BENCH_WORDS (4u << 20) /* 16 MiB of keystream */
#define DEMO_H 7.0                 /* claimed min-entropy of the stand-in source */

struct demo {
	int json, failures;
	json_t *obj;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void say(const struct demo *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const struct demo *d, const char *fmt, ...)
{
	va_list ap;

	if (d->json)
		return;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

static const char *verdict(struct demo *d, int ok)
{
	if (!ok)
		d->failures++;
	return ok ? "PASS" : "FAIL";
}

static void unhex(const char *s, uint8_t *out, size_t cap)
{
	size_t n;

	if (qw_hex_decode(out, cap, &n, s, strlen(s)))
		qw_misuse("demo: bad built-in hex constant");
}

/* ---- 1. entropy source and DRBG ---- */

/* Stand-in for a QRNG device: 8-bit raw samples from the OS generator. */
static int os_samples(void *arg, uint8_t *buf, size_t n)
{
	(void)arg;
	return qw_random_bytes(buf, n);
}

/* A broken device whose output is stuck at one value. */
static int stuck_samples(void *arg, uint8_t *buf, size_t n)
{
	(void)arg;
	memset(buf, 0x5a, n);
	return 0;
}

static void demo_entropy(struct demo *d)
{
	struct qw_entropy *src, *stuck;
	struct qw_rng *rng = NULL;
	struct qw_entropy_stats st = { 0 };
	uint8_t out[32];
	char hex[65] = "";
	const char *why = NULL;
	int err = 0, ok, stuck_caught = 0;

	say(d, "1. Entropy source and DRBG (NIST SP 800-90B health tests, SP 800-90A CTR-DRBG)\n");
	src = qw_entropy_new_fn(os_samples, NULL, 8, DEMO_H, &err);
	if (src)
		rng = qw_rng_new_from_source(src, &err);
	ok = rng && qw_rng_bytes(rng, out, sizeof(out)) == 0;
	if (ok) {
		qw_entropy_get_stats(src, &st);
		(void)qw_hex_encode(hex, sizeof(hex), out, sizeof(out));
	}
	say(d, "   raw source: 8-bit samples (OS generator standing in for a QRNG),\n"
	       "   claimed min-entropy %.1f bits/sample\n", DEMO_H);
	say(d, "   start-up test on %d samples, then continuous tests: RCT cutoff %u,\n"
	       "   APT cutoff %u in windows of %u samples\n",
	    QW_ENTROPY_STARTUP_SAMPLES, qw_entropy_rct_cutoff(DEMO_H),
	    qw_entropy_apt_cutoff(qw_entropy_apt_window(8), DEMO_H), qw_entropy_apt_window(8));
	say(d, "   %llu raw samples tested (longest run %u, highest APT count %u);\n"
	       "   %llu bytes conditioned with SHA-256 seeded the DRBG\n",
	    (unsigned long long)st.samples, st.max_run, st.max_apt,
	    (unsigned long long)st.out_bytes);
	say(d, "   DRBG output, 256 bits: %s  [%s]\n", ok ? hex : "(failed)", verdict(d, ok));

	stuck = qw_entropy_new_fn(stuck_samples, NULL, 8, DEMO_H, &err);
	if (stuck && qw_entropy_startup(stuck) == QW_EHEALTH) {
		why = qw_entropy_failure_reason(stuck);
		stuck_caught = why != NULL;
	}
	say(d, "   a stuck device (every sample 0x5a) is refused:\n     %s  [%s]\n",
	    why ? why : "NOT detected", verdict(d, stuck_caught));
	json_object_set_new(
		d->obj, "entropy",
		json_pack("{s:b, s:f, s:I, s:i, s:i, s:I, s:b, s:s}", "healthy", ok,
			  "min_entropy_bits_per_sample", DEMO_H, "raw_samples",
			  (json_int_t)st.samples, "rct_cutoff", (int)qw_entropy_rct_cutoff(DEMO_H),
			  "apt_cutoff", (int)qw_entropy_apt_cutoff(qw_entropy_apt_window(8), DEMO_H),
			  "drbg_bits", (json_int_t)(ok ? 256 : 0), "stuck_source_refused",
			  stuck_caught, "stuck_reason", why ? why : ""));
	qw_entropy_free(stuck);
	qw_rng_free(rng);
	qw_entropy_free(src);
	qw_wipe(out, sizeof(out));
	say(d, "\n");
}

/* ---- 2. ZUC ---- */

static void demo_zuc(struct demo *d)
{
	/* 128-EEA3 test set 1 and 128-EIA3 test set 1: ETSI/SAGE "Specification
	 * of the 3GPP Confidentiality and Integrity Algorithms 128-EEA3 &
	 * 128-EIA3, Document 3: Implementor's Test Data", sections 4 and 5. */
	uint8_t key[16], pt[25], ct[25], want[25], zkey[16] = { 0 }, zmsg[4] = { 0 };
	uint32_t mac = 0, *ks = NULL;
	struct qw_zuc st;
	double t0, secs = 0.0, mbps = 0.0;
	int eea3_ok, eia3_ok;

	say(d, "2. ZUC-128 (hand-written; OpenSSL 3.0 has no ZUC)\n");
	unhex("173d14ba5003731d7a60049470f00a29", key, sizeof(key));
	unhex("6cf65340735552ab0c9752fa6f9025fe0bd675d9005875b200", pt, sizeof(pt));
	unhex("a6c85fc66afb8533aafc2518dfe784940ee1e4b030238cc800", want, sizeof(want));
	eea3_ok = qw_zuc_eea3(key, 0x66035492, 0x0f, 0, pt, 193, ct) == 0 &&
		  memcmp(ct, want, sizeof(ct)) == 0;
	say(d, "   128-EEA3 test set 1 (COUNT 0x66035492, BEARER 15, 193 bits): [%s]\n",
	    verdict(d, eea3_ok));
	eia3_ok = qw_zuc_eia3(zkey, 0, 0, 0, zmsg, 1, &mac) == 0 && mac == 0xc8a9595e;
	say(d, "   128-EIA3 test set 1 (zero key, 1-bit message): MAC %08x [%s]\n", mac,
	    verdict(d, eia3_ok));

	ks = malloc(ZUC_BENCH_WORDS * sizeof(*ks));
	if (ks) {
		qw_zuc128_init(&st, key, key);
		t0 = now_s();
		qw_zuc_keystream(&st, ks, ZUC_BENCH_WORDS);
		secs = now_s() - t0;
		qw_zuc_wipe(&st);
		mbps = secs > 0.0 ? 32.0 * ZUC_BENCH_WORDS / secs / 1e6 : 0.0;
		say(d, "   keystream: %u Mbit in %.3f s = %.0f Mbit/s\n",
		    (unsigned)(32.0 * ZUC_BENCH_WORDS / 1e6), secs, mbps);
		qw_free_secret(ks, ZUC_BENCH_WORDS * sizeof(*ks));
	}
	json_object_set_new(d->obj, "zuc",
			    json_pack("{s:b, s:b, s:f}", "eea3_test_set_1", eea3_ok,
				      "eia3_test_set_1", eia3_ok, "keystream_mbit_s", mbps));
	say(d, "\n");
}

/* ---- 3. AEAD ---- */

static json_t *demo_aead_one(struct demo *d, enum qw_aead_alg alg, const uint8_t *msg)
{
	size_t keylen = qw_aead_key_bytes(alg), cap = AEAD_MSG_BYTES + qw_aead_msg_overhead(alg);
	uint8_t key[QW_AEAD_MAX_KEY_BYTES], *sealed = malloc(cap), *back = malloc(AEAD_MSG_BYTES);
	size_t slen = 0, blen = 0;
	double t0, t_seal = 0.0, t_open = 0.0;
	int rt = 0, tamper = 0;
	json_t *j;

	if (sealed && back && qw_random_bytes(key, keylen) == 0) {
		t0 = now_s();
		if (qw_aead_seal_msg(alg, key, keylen, NULL, 0, msg, AEAD_MSG_BYTES, sealed, cap,
				     &slen) == 0) {
			t_seal = now_s() - t0;
			t0 = now_s();
			rt = qw_aead_open_msg(alg, key, keylen, NULL, 0, sealed, slen, back,
					      AEAD_MSG_BYTES, &blen, NULL) == 0 &&
			     blen == AEAD_MSG_BYTES && memcmp(back, msg, blen) == 0;
			t_open = now_s() - t0;
			sealed[slen / 2] ^= 0x01; /* one ciphertext bit */
			tamper = qw_aead_open_msg(alg, key, keylen, NULL, 0, sealed, slen, back,
						  AEAD_MSG_BYTES, &blen, NULL) == QW_EAUTH;
		}
	}
	say(d, "   %-17s %zu-bit key: 4 MiB sealed in %.1f ms (%.0f Mbit/s), opened in %.1f ms\n"
	       "   %-17s round trip equal [%s], one flipped bit rejected [%s]\n",
	    qw_aead_name(alg), 8 * keylen, 1e3 * t_seal,
	    t_seal > 0 ? 8.0 * AEAD_MSG_BYTES / t_seal / 1e6 : 0.0, 1e3 * t_open, "",
	    verdict(d, rt), verdict(d, tamper));
	j = json_pack("{s:s, s:i, s:I, s:b, s:b, s:f, s:f}", "alg", qw_aead_name(alg), "key_bits",
		      (int)(8 * keylen), "message_bytes", (json_int_t)AEAD_MSG_BYTES, "round_trip",
		      rt, "tamper_rejected", tamper, "seal_mbit_s",
		      t_seal > 0 ? 8.0 * AEAD_MSG_BYTES / t_seal / 1e6 : 0.0, "open_mbit_s",
		      t_open > 0 ? 8.0 * AEAD_MSG_BYTES / t_open / 1e6 : 0.0);
	qw_wipe(key, sizeof(key));
	free(sealed);
	qw_free_secret(back, AEAD_MSG_BYTES);
	return j;
}

static void demo_aead(struct demo *d)
{
	uint8_t *msg = malloc(AEAD_MSG_BYTES);
	json_t *arr = json_array();

	say(d, "3. Authenticated encryption (OpenSSL EVP; sealed message = alg id | nonce | ct | tag)\n");
	if (!msg || qw_random_bytes(msg, AEAD_MSG_BYTES)) {
		say(d, "   cannot prepare the message [%s]\n", verdict(d, 0));
		free(msg);
		json_object_set_new(d->obj, "aead", arr);
		return;
	}
	json_array_append_new(arr, demo_aead_one(d, QW_AEAD_AES256_GCM, msg));
	if (qw_aead_available(QW_AEAD_SM4_GCM))
		json_array_append_new(arr, demo_aead_one(d, QW_AEAD_SM4_GCM, msg));
	else
		say(d, "   sm4-gcm           not in this OpenSSL: SM4 is used as SM4-CTR + HMAC-SM3\n");
	json_array_append_new(arr, demo_aead_one(d, QW_AEAD_SM4_CTR_HMAC_SM3, msg));
	json_object_set_new(d->obj, "aead", arr);
	free(msg);
	say(d, "\n");
}

/* ---- 4. SM2 ---- */

static void demo_sm2(struct demo *d)
{
	static const char msg[] = "qwave demo: key block 42 delivered to SAE B";
	struct qw_sm2_key *k;
	uint8_t sig[QW_SM2_SIG_MAX_BYTES], fp[QW_SM2_FINGERPRINT_BYTES];
	char fphex[2 * QW_SM2_FINGERPRINT_BYTES + 1] = "";
	size_t siglen = 0;
	int err = 0, ok = 0, tamper = 0;
	char bad[sizeof(msg)];

	say(d, "4. SM2 signature (GB/T 32918.2 with SM3, default ID %s)\n", QW_SM2_DEFAULT_ID);
	k = qw_sm2_key_generate(QW_PK_SM2, &err);
	if (k && qw_sm2_key_fingerprint(k, fp) == 0 &&
	    qw_sm2_sign(k, NULL, 0, msg, strlen(msg), sig, &siglen) == 0) {
		(void)qw_hex_encode(fphex, sizeof(fphex), fp, sizeof(fp));
		ok = qw_sm2_verify(k, NULL, 0, msg, strlen(msg), sig, siglen) == 0;
		memcpy(bad, msg, sizeof(msg));
		bad[sizeof(msg) - 3] ^= 0x01; /* "42" -> "43" */
		tamper = qw_sm2_verify(k, NULL, 0, bad, strlen(bad), sig, siglen) == QW_EAUTH;
	}
	say(d, "   key pair on the SM2 curve (256 bits), fingerprint %.16s...\n", fphex);
	say(d, "   signed \"%s\" (%zu-byte DER signature)\n", msg, siglen);
	say(d, "   signature verifies [%s]; altered message rejected [%s]\n", verdict(d, ok),
	    verdict(d, tamper));
	json_object_set_new(d->obj, "sm2",
			    json_pack("{s:b, s:b, s:i, s:s}", "sign_verify", ok, "tamper_rejected",
				      tamper, "signature_bytes", (int)siglen, "fingerprint_sm3",
				      fphex));
	qw_sm2_key_free(k);
	say(d, "\n");
}

static void demo_help(void)
{
	printf("usage: qwave demo [--json]\n"
	       "\n"
	       "A short end-to-end showcase of what qwave does today (a few seconds):\n"
	       "  1. an entropy source through the SP 800-90B health tests, seeding the\n"
	       "     CTR-DRBG; a stuck source is refused\n"
	       "  2. ZUC-128: 128-EEA3 and 128-EIA3 test set 1 checked, keystream speed\n"
	       "  3. AES-256-GCM and SM4 authenticated encryption round trips, tamper test\n"
	       "  4. SM2 sign/verify, altered message rejected\n"
	       "Exit 0 when every check passes, 1 otherwise.\n"
	       "\n"
	       "  --json   one JSON object with every result\n");
}

int qw_cmd_demo(int argc, char **argv)
{
	struct demo d = { 0 };
	double t0 = now_s();

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			d.json = 1;
		else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			demo_help();
			return QW_EXIT_OK;
		} else
			return qw_cli_usage_error("demo", "unknown option '%s'", argv[i]);
	}
	d.obj = json_object();
	if (!d.obj)
		return qw_cli_fail("out of memory");
	say(&d, "qwave demo: the crypto core of a quantum key service, end to end\n\n");
	demo_entropy(&d);
	demo_zuc(&d);
	demo_aead(&d);
	demo_sm2(&d);
	json_object_set_new(d.obj, "checks_failed", json_integer(d.failures));
	json_object_set_new(d.obj, "ok", json_boolean(d.failures == 0));
	json_object_set_new(d.obj, "elapsed_s", json_real(now_s() - t0));
	say(&d, "%s in %.2f s\n", d.failures ? "SOME CHECKS FAILED" : "all checks passed",
	    now_s() - t0);
	if (d.json)
		qw_cli_print_json(d.obj);
	else
		json_decref(d.obj);
	if (d.failures)
		return qw_cli_fail("demo: %d check%s failed", d.failures, d.failures == 1 ? "" : "s");
	return QW_EXIT_OK;
}
