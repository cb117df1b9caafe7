/* Secure-medium images (offline filling) and the small shared formats of
 * the device side: wrap AAD and challenge-response MACs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "qwave/aead.h"
#include "qwave/encoding.h"
#include "qwave/hash.h"
#include "qwave/ksc.h"
#include "qwave/secmem.h"
#include "qwave/uuid.h"
#include "qwave/zuc.h"

#define MAGIC "QWKSCIMG1\n"
#define MAGIC_LEN 10

int qw_ksc_image_seal(const char *device, const char *batch, const uint8_t *keys, size_t nbytes,
		      const uint8_t mk[static QW_KSC_MEDIUM_KEY_BYTES], char **out, size_t *outlen)
{
	struct qw_uuid u;
	char uid[QW_UUID_STR_BYTES], *hdr = NULL, *img = NULL;
	uint8_t *sealed = NULL;
	size_t cap = nbytes + qw_aead_msg_overhead(QW_AEAD_AES256_GCM), slen = 0, hlen, b64;
	json_t *h = NULL;
	int ret = QW_ENOMEM;

	*out = NULL;
	if ((ret = qw_uuid_generate(&u)))
		return ret;
	qw_uuid_format(&u, uid);
	ret = QW_ENOMEM;
	h = json_pack("{s:s, s:s, s:s, s:I, s:s}", "format", "qwave-ksc-medium-1", "device", device,
		      "batch", batch, "bits", (json_int_t)(nbytes * 8), "image", uid);
	hdr = h ? json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	sealed = malloc(cap);
	if (!hdr || !sealed)
		goto out;
	hlen = strlen(hdr);
	ret = qw_aead_seal_msg(QW_AEAD_AES256_GCM, mk, QW_KSC_MEDIUM_KEY_BYTES,
			       (const uint8_t *)hdr, hlen, keys, nbytes, sealed, cap, &slen);
	if (ret)
		goto out;
	b64 = qw_base64_encoded_len(slen);
	img = malloc(MAGIC_LEN + hlen + 1 + b64 + 2);
	if (!img) {
		ret = QW_ENOMEM;
		goto out;
	}
	memcpy(img, MAGIC, MAGIC_LEN);
	memcpy(img + MAGIC_LEN, hdr, hlen);
	img[MAGIC_LEN + hlen] = '\n';
	if (qw_base64_encode(img + MAGIC_LEN + hlen + 1, b64 + 1, sealed, slen)) {
		ret = QW_ECRYPTO;
		goto out;
	}
	img[MAGIC_LEN + hlen + 1 + b64] = '\n';
	img[MAGIC_LEN + hlen + 2 + b64] = '\0';
	*out = img;
	*outlen = MAGIC_LEN + hlen + 2 + b64;
	img = NULL;
	ret = 0;
out:
	json_decref(h);
	if (hdr) {
		json_malloc_t jm;
		json_free_t jf;

		json_get_alloc_funcs(&jm, &jf);
		jf(hdr); /* jansson's allocator */
	}
	free(sealed);
	free(img);
	return ret;
}

int qw_ksc_image_open(const uint8_t *image, size_t len,
		      const uint8_t mk[static QW_KSC_MEDIUM_KEY_BYTES], uint8_t **keys,
		      size_t *nbytes, char batch[static 37], char device[static QW_KSC_ID_MAX + 1])
{
	const uint8_t *hdr, *nl, *b, *end = image + len;
	uint8_t *sealed = NULL, *pt = NULL;
	size_t slen = 0, cap, ptlen = 0, blen;
	json_t *h = NULL;
	const char *dv, *bt;
	int ret = QW_EPARSE;

	*keys = NULL;
	*nbytes = 0;
	if (len < MAGIC_LEN || memcmp(image, MAGIC, MAGIC_LEN))
		return QW_EPARSE;
	hdr = image + MAGIC_LEN;
	nl = memchr(hdr, '\n', (size_t)(end - hdr));
	if (!nl)
		return QW_EPARSE;
	h = json_loadb((const char *)hdr, (size_t)(nl - hdr), 0, NULL);
	dv = json_string_value(json_object_get(h, "device"));
	bt = json_string_value(json_object_get(h, "batch"));
	if (!h || !dv || !bt || strlen(dv) > QW_KSC_ID_MAX || strlen(bt) != 36)
		goto out;
	b = nl + 1;
	blen = (size_t)(end - b);
	while (blen && (b[blen - 1] == '\n' || b[blen - 1] == '\r'))
		blen--;
	cap = qw_base64_decoded_max(blen);
	sealed = malloc(cap ? cap : 1);
	pt = malloc(cap ? cap : 1);
	if (!sealed || !pt) {
		ret = QW_ENOMEM;
		goto out;
	}
	if (qw_base64_decode(sealed, cap, &slen, (const char *)b, blen))
		goto out;
	ret = qw_aead_open_msg(QW_AEAD_AES256_GCM, mk, QW_KSC_MEDIUM_KEY_BYTES, hdr,
			       (size_t)(nl - hdr), sealed, slen, pt, cap, &ptlen, NULL);
	if (ret) {
		ret = ret == QW_EPARSE ? QW_EPARSE : QW_EAUTH;
		goto out;
	}
	snprintf(batch, 37, "%s", bt);
	snprintf(device, QW_KSC_ID_MAX + 1, "%s", dv);
	*keys = pt;
	*nbytes = ptlen;
	pt = NULL;
	ret = 0;
out:
	json_decref(h);
	free(sealed);
	if (pt)
		qw_free_secret(pt, cap ? cap : 1);
	return ret;
}

int qw_ksc_wrap_aad(char *out, size_t cap, const char *kind, const char *id, uint64_t epoch,
		    const char *device)
{
	return snprintf(out, cap, "qwave-ksc|%s|%s|%llu|%s", kind, id, (unsigned long long)epoch,
			device);
}

int qw_ksc_auth_mac(const char *method, const uint8_t slot[static QW_KSC_SLOT_BYTES],
		    const char *challenge_id, const uint8_t *nonce, size_t nonce_len,
		    const char *device, uint8_t mac[static 32], size_t *maclen)
{
	size_t cl = strlen(challenge_id), dl = strlen(device);
	size_t n = 15 + cl + 1 + nonce_len + 1 + dl;
	uint8_t *m;
	int ret = QW_EINVAL;

	if (nonce_len < 4 || nonce_len > 64)
		return QW_EINVAL;
	m = malloc(n);
	if (!m)
		return QW_ENOMEM;
	memcpy(m, "qwave-ksc-auth|", 15);
	memcpy(m + 15, challenge_id, cl);
	m[15 + cl] = '|';
	memcpy(m + 16 + cl, nonce, nonce_len);
	m[16 + cl + nonce_len] = '|';
	memcpy(m + 17 + cl + nonce_len, device, dl);
	if (!strcmp(method, "hmac-sm3")) {
		ret = qw_hmac(QW_HASH_SM3, slot, QW_KSC_SLOT_BYTES, m, n, mac) ? QW_ECRYPTO : 0;
		*maclen = 32;
	} else if (!strcmp(method, "zuc-eia3")) {
		uint32_t count = (uint32_t)nonce[0] << 24 | (uint32_t)nonce[1] << 16 |
				 (uint32_t)nonce[2] << 8 | nonce[3];
		uint32_t t = 0;

		ret = n > (SIZE_MAX >> 3) ? QW_EINVAL : qw_zuc_eia3(slot, count, 0, 0, m, n * 8, &t);
		memset(mac, 0, 32);
		mac[0] = (uint8_t)(t >> 24);
		mac[1] = (uint8_t)(t >> 16);
		mac[2] = (uint8_t)(t >> 8);
		mac[3] = (uint8_t)t;
		*maclen = 4;
	}
	free(m);
	return ret;
}
