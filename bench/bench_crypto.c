/* `qwave bench crypto`: bulk throughput of the symmetric primitives used
 * for quantum-key-enhanced encryption - ZUC-128 keystream, 128-EEA3,
 * the SM4 AEAD and AES-256-GCM - against OpenSSL's AES-128-CTR measured
 * in the same process and run, so the ratio is independent of the machine.
 *
 * Each run times every primitive once over the same --bytes buffer; the
 * figures are medians over --runs, the ratio the median of per-run ratios.
 * MB/s means 10^6 bytes per second.
 * Benchmark keys and nonces are fixed patterns, not secrets. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "../src/cmd/cli.h"
#include "bench.h"
#include "qwave/aead.h"
#include "qwave/zuc.h"

#define DEFAULT_BYTES (16u << 20)
#define DEFAULT_RUNS 5
#define MAX_RUNS 1000
/* 128-EEA3 takes a 32-bit LENGTH in bits. */
#define MAX_BYTES ((uint64_t)UINT32_MAX / 8)

enum { B_ZUC_KS, B_EEA3, B_SM4, B_GCM, B_CTR, B_COUNT };

static const char *const names[B_COUNT] = {
	"ZUC-128 keystream", "128-EEA3 encrypt", "SM4 AEAD seal", "AES-256-GCM seal",
	"AES-128-CTR (OpenSSL)",
};

static const char *const json_keys[B_COUNT] = {
	"zuc128_keystream_mbps", "eea3_mbps", "sm4_aead_mbps", "aes256gcm_mbps",
	"aes128ctr_mbps",
};

struct bench_ctx {
	size_t bytes;
	uint8_t *in, *out;
	uint32_t *ks;
	struct qw_aead *sm4, *gcm;
	enum qw_aead_alg sm4alg;
	EVP_CIPHER_CTX *ctr;
	uint8_t key[32];
	uint32_t nonce_ctr;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: qwave bench crypto [--bytes N] [--runs R] [--json]\n\n"
		"Throughput (MB/s = 10^6 bytes/s, median over R runs) of the ZUC-128\n"
		"keystream, 128-EEA3, the SM4 AEAD (SM4-GCM if OpenSSL has it, else\n"
		"SM4-CTR + HMAC-SM3) and AES-256-GCM, each over one N-byte buffer,\n"
		"against OpenSSL AES-128-CTR in the same run. zuc_vs_aes128ctr is the\n"
		"median over runs of 128-EEA3 / AES-128-CTR throughput (both encrypt\n"
		"a buffer; the primitives alternate within each run).\n\n"
		"  --bytes N   buffer size in bytes (default %u, at most %llu)\n"
		"  --runs R    timed runs per primitive (default %d, at most %d)\n"
		"  --json      print one JSON object\n",
		DEFAULT_BYTES, (unsigned long long)MAX_BYTES, DEFAULT_RUNS, MAX_RUNS);
}

static void next_nonce(struct bench_ctx *c, uint8_t nonce[QW_AEAD_NONCE_BYTES])
{
	memset(nonce, 0, QW_AEAD_NONCE_BYTES);
	c->nonce_ctr++;
	memcpy(nonce, &c->nonce_ctr, sizeof(c->nonce_ctr));
}

/* Run primitive b once over the buffer; 0 or a QW_E* code. */
static int run_one(struct bench_ctx *c, int b)
{
	uint8_t nonce[QW_AEAD_NONCE_BYTES], tag[QW_AEAD_MAX_TAG_BYTES];
	struct qw_zuc st;
	int outl = 0;

	switch (b) {
	case B_ZUC_KS:
		qw_zuc128_init(&st, c->key, c->key + 16);
		qw_zuc_keystream(&st, c->ks, c->bytes / 4);
		qw_zuc_wipe(&st);
		return 0;
	case B_EEA3:
		return qw_zuc_eea3(c->key, c->nonce_ctr++, 0x15, 1, c->in, c->bytes * 8, c->out);
	case B_SM4:
		next_nonce(c, nonce);
		return qw_aead_ctx_seal(c->sm4, nonce, NULL, 0, c->in, c->bytes, c->out, tag);
	case B_GCM:
		next_nonce(c, nonce);
		return qw_aead_ctx_seal(c->gcm, nonce, NULL, 0, c->in, c->bytes, c->out, tag);
	case B_CTR:
		/* A fresh IV per run, as a real message would have. */
		next_nonce(c, nonce);
		memcpy(tag, nonce, QW_AEAD_NONCE_BYTES);
		memset(tag + QW_AEAD_NONCE_BYTES, 0, 4);
		if (EVP_EncryptInit_ex(c->ctr, NULL, NULL, NULL, tag) != 1)
			return QW_ECRYPTO;
		/* EVP lengths are int: feed the buffer in pieces below 2^30. */
		for (size_t off = 0; off < c->bytes;) {
			size_t n = c->bytes - off;

			if (n > (1u << 30))
				n = 1u << 30;
			if (EVP_EncryptUpdate(c->ctr, c->out + off, &outl, c->in + off, (int)n) != 1)
				return QW_ECRYPTO;
			off += n;
		}
		return 0;
	default:
		return QW_EINVAL;
	}
}

static int setup(struct bench_ctx *c, size_t bytes)
{
	int err = 0;

	memset(c, 0, sizeof(*c));
	c->bytes = bytes;
	for (size_t i = 0; i < sizeof(c->key); i++)
		c->key[i] = (uint8_t)(0x5a ^ (i * 37));
	c->in = malloc(bytes);
	c->out = malloc(bytes);
	c->ks = malloc(bytes / 4 * sizeof(uint32_t) + sizeof(uint32_t));
	if (!c->in || !c->out || !c->ks)
		return QW_ENOMEM;
	for (size_t i = 0; i < bytes; i++)
		c->in[i] = (uint8_t)(i * 131 + 17);
	c->sm4alg = qw_aead_sm4_best();
	c->sm4 = qw_aead_new(c->sm4alg, c->key, qw_aead_key_bytes(c->sm4alg), &err);
	if (!c->sm4)
		return err;
	c->gcm = qw_aead_new(QW_AEAD_AES256_GCM, c->key, QW_AEAD_AES256_GCM_KEY_BYTES, &err);
	if (!c->gcm)
		return err;
	c->ctr = EVP_CIPHER_CTX_new();
	if (!c->ctr)
		return QW_ENOMEM;
	if (EVP_EncryptInit_ex(c->ctr, EVP_aes_128_ctr(), NULL, c->key, NULL) != 1)
		return QW_ECRYPTO;
	return 0;
}

static void teardown(struct bench_ctx *c)
{
	free(c->in);
	free(c->out);
	free(c->ks);
	qw_aead_free(c->sm4);
	qw_aead_free(c->gcm);
	EVP_CIPHER_CTX_free(c->ctr);
	memset(c, 0, sizeof(*c));
}

int qw_bench_crypto(int argc, char **argv)
{
	uint64_t bytes = DEFAULT_BYTES, runs = DEFAULT_RUNS;
	double *samples = NULL, mbps[B_COUNT];
	struct bench_ctx c;
	int json = 0, ret = QW_EXIT_FAIL, err;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return QW_EXIT_OK;
		} else if (!strcmp(argv[i], "--json")) {
			json = 1;
		} else if (!strcmp(argv[i], "--bytes") && i + 1 < argc) {
			if (qw_cli_parse_u64(argv[++i], &bytes) || bytes < 16 || bytes > MAX_BYTES)
				return qw_cli_usage_error("bench crypto",
							  "--bytes '%s': need 16 .. %llu", argv[i],
							  (unsigned long long)MAX_BYTES);
		} else if (!strcmp(argv[i], "--runs") && i + 1 < argc) {
			if (qw_cli_parse_u64(argv[++i], &runs) || runs < 1 || runs > MAX_RUNS)
				return qw_cli_usage_error("bench crypto", "--runs '%s': need 1 .. %d",
							  argv[i], MAX_RUNS);
		} else {
			return qw_cli_usage_error("bench crypto", "unknown or incomplete option '%s'",
						  argv[i]);
		}
	}
	/* Whole keystream words: the ZUC and CTR figures cover the same bytes. */
	bytes -= bytes % 4;

	err = setup(&c, (size_t)bytes);
	if (err) {
		ret = qw_cli_fail("bench crypto: setup failed: %s", qw_strerror(err));
		goto out;
	}
	samples = calloc((size_t)runs * (B_COUNT + 1), sizeof(*samples));
	if (!samples) {
		ret = qw_cli_fail("bench crypto: %s", qw_strerror(QW_ENOMEM));
		goto out;
	}
	/* Untimed warm-up: page faults, lazy EVP initialisation. */
	for (int b = 0; b < B_COUNT; b++) {
		err = run_one(&c, b);
		if (err) {
			ret = qw_cli_fail("bench crypto: %s failed: %s", names[b], qw_strerror(err));
			goto out;
		}
	}
	/* Primitives interleaved within each run, so a change of machine load
	 * hits all of them alike; samples[b * runs + r]. The last row holds the
	 * per-run 128-EEA3 / AES-128-CTR ratio. */
	for (uint64_t r = 0; r < runs; r++) {
		qw_cli_progress("bench crypto: run %llu/%llu", (unsigned long long)r + 1,
				(unsigned long long)runs);
		for (int b = 0; b < B_COUNT; b++) {
			double t0 = qw_bench_now(), t1;

			err = run_one(&c, b);
			t1 = qw_bench_now();
			if (err) {
				ret = qw_cli_fail("bench crypto: %s failed: %s", names[b],
						  qw_strerror(err));
				goto out;
			}
			samples[b * runs + r] = t1 > t0 ? (double)bytes / (t1 - t0) / 1e6 : 0.0;
		}
		samples[B_COUNT * runs + r] = samples[B_CTR * runs + r] > 0
			? samples[B_EEA3 * runs + r] / samples[B_CTR * runs + r] : 0.0;
	}
	qw_cli_progress_done();
	for (int b = 0; b < B_COUNT; b++)
		mbps[b] = qw_bench_median(samples + b * runs, (int)runs);

	double ratio = qw_bench_median(samples + B_COUNT * runs, (int)runs);
	const char *sm4name = qw_aead_name(c.sm4alg);

	if (json) {
		json_t *o = json_object();

		for (int b = 0; b < B_COUNT; b++)
			json_object_set_new(o, json_keys[b], json_real(mbps[b]));
		json_object_set_new(o, "zuc_vs_aes128ctr", json_real(ratio));
		json_object_set_new(o, "sm4_aead_alg", json_string(sm4name));
		json_object_set_new(o, "bytes", json_integer((json_int_t)bytes));
		json_object_set_new(o, "runs", json_integer((json_int_t)runs));
		qw_cli_print_json(o);
	} else {
		printf("crypto throughput, %llu-byte buffer, median of %llu runs\n",
		       (unsigned long long)bytes, (unsigned long long)runs);
		for (int b = 0; b < B_COUNT; b++)
			printf("  %-24s %10.1f MB/s%s%s%s\n", names[b], mbps[b],
			       b == B_SM4 ? " (" : "", b == B_SM4 ? sm4name : "",
			       b == B_SM4 ? ")" : "");
		printf("  128-EEA3 / AES-128-CTR   %10.3f\n", ratio);
	}
	ret = QW_EXIT_OK;
out:
	qw_cli_progress_done();
	free(samples);
	teardown(&c);
	return ret;
}
