/* qwave device: the device side of the Key Service Center, simulating a
 * SIM/TF card or IoT chip with its secure medium as a state file
 * (DIR/device.json, mode 0600): the medium key from personalisation and the
 * pre-filled keys imported from images, with the slots already used.
 * docs/ksc.md "Device side". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "cli.h"
#include "commands.h"
#include "qwave/aead.h"
#include "qwave/encoding.h"
#include "qwave/error.h"
#include "qwave/hash.h"
#include "qwave/ksc.h"
#include "qwave/secmem.h"
#include "qwave/sm2.h"

struct dopts {
	const char *cmd;
	const char *dir, *id, *medium, *image, *from, *challenge, *method, *out;
	const char *sign_key, *sign_cert, *save, *user;
	const char *url, *cert, *key, *ca;
	int json, show, report;
};

static const char conn_help[] =
	"connection (falls back to QWAVE_KSC_URL, QWAVE_CERT, QWAVE_KEY, QWAVE_CACERT):\n"
	"  --url URL --cert FILE --key FILE --cacert FILE   the device's own certificate\n";

static int help(const char *cmd)
{
	if (!strcmp(cmd, "init"))
		printf("usage: qwave device init --dir DIR --id ID --medium-key FILE\n\n"
		       "Personalise a simulated secure medium: DIR/device.json (mode 0600) holds the\n"
		       "device ID and the medium key FILE written by 'qwave ksc device register --out'.\n");
	else if (!strcmp(cmd, "import"))
		printf("usage: qwave device import --dir DIR --image FILE [--json]\n\n"
		       "Import an offline-filling image ('qwave ksc device fill --out'): it must open\n"
		       "under this medium's key and name this device; the same image twice is refused.\n"
		       "Prints the key balance in bits.\n");
	else if (!strcmp(cmd, "balance"))
		printf("usage: qwave device balance --dir DIR [--report [connection]] [--json]\n\n"
		       "Unused pre-filled key bits; --report also tells the KSC.\n\n%s", conn_help);
	else if (!strcmp(cmd, "sync"))
		printf("usage: qwave device sync --dir DIR [connection] [--json]\n\n"
		       "Contact the KSC; after a remote destroy the medium erases its keys and\n"
		       "acknowledges.\n\n%s", conn_help);
	else if (!strcmp(cmd, "unwrap"))
		printf("usage: qwave device unwrap --dir DIR --from FILE [--out FILE] [--show-key] [--json]\n\n"
		       "Open this device's session or group key from the KSC's answer in FILE (the JSON of\n"
		       "POST /sessions, /groups, /groups/ID/join|leave): AES-256-GCM under the named\n"
		       "pre-filled slot, which is then marked used (a slot is never accepted twice).\n"
		       "Prints the key's SM3 fingerprint; --show-key prints the key (hex), --out writes\n"
		       "it (hex, mode 0600).\n");
	else if (!strcmp(cmd, "respond"))
		printf("usage: qwave device respond --dir DIR --challenge FILE [--sign-key F --sign-cert F]\n\n"
		       "Answer a challenge (the JSON of POST /auth/challenge in FILE): prints the\n"
		       "response body for POST /auth/response. hmac-sm3/zuc-eia3 use the named\n"
		       "pre-filled slot (then marked used); cert signs with --sign-key.\n");
	else if (!strcmp(cmd, "auth"))
		printf("usage: qwave device auth --dir DIR [--method hmac-sm3|zuc-eia3|cert]\n"
		       "                          [--sign-key F --sign-cert F] [--save FILE] [connection]\n"
		       "       qwave device auth --user ID --sign-key F --sign-cert F [connection]\n\n"
		       "Authenticate this device (or, with --user, a user by certificate) to the KSC:\n"
		       "challenge, response, verdict. --save writes the response body sent (to\n"
		       "show that a replay is refused).\n\n%s",
		       conn_help);
	return QW_EXIT_OK;
}

/* ---- state file ---- */

static int state_path(const struct dopts *o, char *p, size_t cap)
{
	if (!o->dir)
		return -1;
	snprintf(p, cap, "%s/device.json", o->dir);
	return 0;
}

static json_t *state_load(const struct dopts *o)
{
	char p[600];
	uint8_t *d = NULL;
	size_t n = 0;
	json_t *j;

	if (state_path(o, p, sizeof(p)) || qw_cli_read_file(p, &d, &n))
		return NULL;
	j = json_loadb((const char *)d, n, 0, NULL);
	qw_free_secret(d, n);
	return json_is_object(j) ? j : (json_decref(j), NULL);
}

static int state_save(const struct dopts *o, json_t *j)
{
	char p[600], *t = json_dumps(j, JSON_INDENT(1));
	int ret;

	if (!t || state_path(o, p, sizeof(p))) {
		free(t);
		return QW_ENOMEM;
	}
	ret = qw_cli_write_file(p, (const uint8_t *)t, strlen(t), 1);
	qw_free_secret(t, strlen(t) + 1);
	return ret;
}

static size_t b64_get(json_t *obj, const char *name, uint8_t *out, size_t cap)
{
	const char *s = json_string_value(json_object_get(obj, name));
	size_t n = 0;

	if (!s || qw_base64_decode(out, cap, &n, s, strlen(s)))
		return 0;
	return n;
}

static uint64_t balance_bits(json_t *st)
{
	json_t *b;
	size_t i;
	uint64_t bits = 0;

	json_array_foreach(json_object_get(st, "batches"), i, b) {
		bits += ((uint64_t)json_integer_value(json_object_get(b, "slots")) -
			 json_array_size(json_object_get(b, "used"))) * QW_KSC_SLOT_BITS;
	}
	return bits;
}

/* The key of (batch, slot) when unused; marks it used. */
static int take_slot(json_t *st, const char *batch, uint64_t slot, uint8_t key[32])
{
	json_t *b, *u;
	size_t i, j;

	json_array_foreach(json_object_get(st, "batches"), i, b) {
		const char *id = json_string_value(json_object_get(b, "batch"));
		const char *k64 = json_string_value(json_object_get(b, "keys"));
		uint8_t *keys;
		size_t n = 0, cap;

		if (!id || strcmp(id, batch) || !k64)
			continue;
		json_array_foreach(json_object_get(b, "used"), j, u)
			if ((uint64_t)json_integer_value(u) == slot)
				return QW_ESTATE;
		cap = qw_base64_decoded_max(strlen(k64));
		keys = malloc(cap);
		if (!keys)
			return QW_ENOMEM;
		if (qw_base64_decode(keys, cap, &n, k64, strlen(k64)) ||
		    (slot + 1) * QW_KSC_SLOT_BYTES > n) {
			qw_free_secret(keys, cap);
			return QW_ERANGE;
		}
		memcpy(key, keys + slot * QW_KSC_SLOT_BYTES, QW_KSC_SLOT_BYTES);
		qw_free_secret(keys, cap);
		json_array_append_new(json_object_get(b, "used"), json_integer((json_int_t)slot));
		return 0;
	}
	return QW_ENOTFOUND;
}

static int slot_error(int ret)
{
	if (ret == QW_ESTATE)
		return qw_cli_fail("that pre-filled key slot was used before: refused (replay?)");
	if (ret == QW_ENOTFOUND)
		return qw_cli_fail("this medium holds no such key batch (erased, or never imported)");
	return qw_cli_fail("pre-filled key: %s", qw_strerror(ret));
}

/* ---- talking to the KSC ---- */

static int call(struct dopts *o, const char *method, const char *path, const char *body,
		json_t **out)
{
	struct qw_ksc_client *c;
	char msg[256] = "", *resp = NULL;
	size_t rlen = 0;
	int status = 0, err = 0;
	json_t *j;

	if (!o->url)
		o->url = getenv("QWAVE_KSC_URL");
	if (!o->cert)
		o->cert = getenv("QWAVE_CERT");
	if (!o->key)
		o->key = getenv("QWAVE_KEY");
	if (!o->ca)
		o->ca = getenv("QWAVE_CACERT");
	if (!o->url || !o->cert || !o->key || !o->ca)
		return qw_cli_usage_error(o->cmd, "--url, --cert, --key and --cacert are required");
	c = qw_ksc_client_new(o->url, o->cert, o->key, o->ca, &err);
	if (!c)
		return qw_cli_usage_error(o->cmd, "--url must be an https:// URL");
	err = qw_ksc_client_call(c, method, path, body, &status, &resp, &rlen, msg);
	qw_ksc_client_free(c);
	if (err)
		return qw_cli_fail("%s", msg[0] ? msg : qw_strerror(err));
	j = json_loadb(resp, rlen, 0, NULL);
	qw_free_secret(resp, rlen + 1);
	if (!json_is_object(j)) {
		json_decref(j);
		return qw_cli_fail("the KSC answered HTTP %d without a JSON object", status);
	}
	if (status >= 400) {
		int rc = qw_cli_fail("HTTP %d: %s", status,
				     json_string_value(json_object_get(j, "message")) ?
					     json_string_value(json_object_get(j, "message")) : "?");

		json_decref(j);
		return rc;
	}
	*out = j;
	return QW_EXIT_OK;
}

static int print_obj(const struct dopts *o, json_t *j)
{
	if (o->json) {
		qw_cli_print_json(j);
	} else {
		const char *k;
		json_t *v;

		json_object_foreach(j, k, v) {
			char *t = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

			printf("%-18s %s%s\n", k, t ? t : json_string_value(v),
			       !strcmp(k, "balance_bits") ? " bits" : "");
			free(t);
		}
		json_decref(j);
	}
	return QW_EXIT_OK;
}

/* ---- commands ---- */

static int put_b64(json_t *obj, const char *name, const uint8_t *p, size_t n)
{
	size_t cap = qw_base64_encoded_len(n) + 1;
	char *t = malloc(cap);
	int ret = QW_ENOMEM;

	if (t && !qw_base64_encode(t, cap, p, n))
		ret = json_object_set_new(obj, name, json_string(t)) ? QW_ENOMEM : 0;
	if (t)
		qw_free_secret(t, cap);
	return ret;
}

static int cmd_init(struct dopts *o)
{
	uint8_t *d = NULL, mk[64];
	size_t n = 0, m = 0;
	struct stat sb;
	json_t *st;
	int rc;

	if (!o->dir || !o->id || !o->medium)
		return qw_cli_usage_error(o->cmd, "--dir, --id and --medium-key are required");
	if (qw_cli_read_file(o->medium, &d, &n))
		return qw_cli_fail("cannot read %s", o->medium);
	while (n && (d[n - 1] == '\n' || d[n - 1] == '\r' || d[n - 1] == ' '))
		n--;
	if (qw_base64_decode(mk, sizeof(mk), &m, (const char *)d, n) || m != QW_KSC_MEDIUM_KEY_BYTES) {
		qw_free_secret(d, n);
		return qw_cli_fail("%s does not hold a base64 medium key of %d bytes", o->medium,
				   QW_KSC_MEDIUM_KEY_BYTES);
	}
	qw_free_secret(d, n);
	if (mkdir(o->dir, 0700) && (stat(o->dir, &sb) || !S_ISDIR(sb.st_mode)))
		return qw_cli_fail("cannot create %s", o->dir);
	st = json_pack("{s:s, s:[], s:b}", "id", o->id, "batches", "erased", 0);
	if (!st || put_b64(st, "medium_key", mk, QW_KSC_MEDIUM_KEY_BYTES))
		rc = qw_cli_fail("out of memory");
	else if (state_save(o, st))
		rc = qw_cli_fail("cannot write %s/device.json (mode 0600 required)", o->dir);
	else
		rc = print_obj(o, json_pack("{s:s, s:s, s:I}", "device", o->id, "state",
					    "personalised", "balance_bits", (json_int_t)0));
	qw_wipe(mk, sizeof(mk));
	json_decref(st);
	return rc;
}

static int cmd_import(struct dopts *o)
{
	uint8_t mk[64], *img = NULL, *keys = NULL;
	size_t ilen = 0, nkeys = 0;
	char batch[37], dev[QW_KSC_ID_MAX + 1];
	json_t *st, *b;
	size_t i;
	int ret, rc = QW_EXIT_FAIL;

	if (!o->dir || !o->image)
		return qw_cli_usage_error(o->cmd, "--dir and --image are required");
	st = state_load(o);
	if (!st)
		return qw_cli_fail("no medium in %s (run 'qwave device init')", o->dir);
	if (b64_get(st, "medium_key", mk, sizeof(mk)) != QW_KSC_MEDIUM_KEY_BYTES) {
		rc = qw_cli_fail("this medium holds no key (erased?)");
		goto out;
	}
	if (qw_cli_read_file(o->image, &img, &ilen)) {
		rc = qw_cli_fail("cannot read %s", o->image);
		goto out;
	}
	ret = qw_ksc_image_open(img, ilen, mk, &keys, &nkeys, batch, dev);
	if (ret) {
		rc = qw_cli_fail("%s: %s", o->image, ret == QW_EAUTH ?
				 "does not open under this medium's key (another device's image, "
				 "or altered)" : "not a KSC medium image");
		goto out;
	}
	if (strcmp(dev, json_string_value(json_object_get(st, "id")))) {
		rc = qw_cli_fail("%s: the image names device %s", o->image, dev);
		goto out;
	}
	json_array_foreach(json_object_get(st, "batches"), i, b) {
		if (!strcmp(json_string_value(json_object_get(b, "batch")), batch)) {
			rc = qw_cli_fail("%s: batch %s is already on this medium", o->image, batch);
			goto out;
		}
	}
	b = json_pack("{s:s, s:I, s:[]}", "batch", batch, "slots",
		      (json_int_t)(nkeys / QW_KSC_SLOT_BYTES), "used");
	if (!b || put_b64(b, "keys", keys, nkeys) ||
	    json_array_append_new(json_object_get(st, "batches"), b)) {
		rc = qw_cli_fail("out of memory");
		goto out;
	}
	if (state_save(o, st)) {
		rc = qw_cli_fail("cannot write the medium");
		goto out;
	}
	rc = print_obj(o, json_pack("{s:s, s:s, s:I, s:I}", "device", dev, "batch", batch,
				    "imported_bits", (json_int_t)(nkeys * 8), "balance_bits",
				    (json_int_t)balance_bits(st)));
out:
	qw_wipe(mk, sizeof(mk));
	if (keys)
		qw_free_secret(keys, nkeys);
	if (img)
		qw_free_secret(img, ilen);
	json_decref(st);
	return rc;
}

static int cmd_balance(struct dopts *o)
{
	json_t *st = state_load(o), *res = NULL;
	char path[160], body[64];
	uint64_t bits;
	int rc;

	if (!st)
		return o->dir ? qw_cli_fail("no medium in %s", o->dir) :
				qw_cli_usage_error(o->cmd, "--dir is required");
	bits = balance_bits(st);
	if (o->report) {
		snprintf(path, sizeof(path), "/devices/%s/balance",
			 json_string_value(json_object_get(st, "id")));
		snprintf(body, sizeof(body), "{\"bits\":%llu}", (unsigned long long)bits);
		rc = call(o, "POST", path, body, &res);
		if (rc) {
			json_decref(st);
			return rc;
		}
		json_decref(res);
	}
	rc = print_obj(o, json_pack("{s:s, s:I, s:b}", "device",
				    json_string_value(json_object_get(st, "id")), "balance_bits",
				    (json_int_t)bits, "reported", o->report));
	json_decref(st);
	return rc;
}

static int cmd_sync(struct dopts *o)
{
	json_t *st = state_load(o), *res = NULL, *ack = NULL;
	char path[160];
	const char *id;
	int rc;

	if (!st)
		return o->dir ? qw_cli_fail("no medium in %s", o->dir) :
				qw_cli_usage_error(o->cmd, "--dir is required");
	id = json_string_value(json_object_get(st, "id"));
	snprintf(path, sizeof(path), "/devices/%s/sync", id);
	rc = call(o, "GET", path, NULL, &res);
	if (rc)
		goto out;
	if (json_is_true(json_object_get(res, "erase"))) {
		/* remote destroy: erase the keys, then acknowledge */
		json_object_set_new(st, "batches", json_array());
		json_object_del(st, "medium_key");
		json_object_set_new(st, "erased", json_true());
		if (state_save(o, st)) {
			rc = qw_cli_fail("cannot erase the medium");
			goto out;
		}
		snprintf(path, sizeof(path), "/devices/%s/erased", id);
		rc = call(o, "POST", path, NULL, &ack);
		if (rc)
			goto out;
		json_decref(ack);
		json_object_set_new(res, "erased_now", json_true());
	}
	json_object_set_new(res, "balance_bits", json_integer((json_int_t)balance_bits(st)));
	rc = print_obj(o, res);
	res = NULL;
out:
	json_decref(res);
	json_decref(st);
	return rc;
}

static int cmd_unwrap(struct dopts *o)
{
	json_t *st = state_load(o), *in = NULL, *arr, *e, *mine = NULL;
	const char *me, *id, *kind;
	uint8_t *d = NULL, slot_key[32], wrapped[128], key[64], fp[32];
	size_t n = 0, wl, kl = 0, i;
	uint64_t epoch;
	char aad[256], hex[65];
	int ret, rc = QW_EXIT_FAIL;

	if (!st || !o->from)
		return !o->dir || !o->from ? qw_cli_usage_error(o->cmd, "--dir and --from are required") :
					     qw_cli_fail("no medium in %s", o->dir);
	me = json_string_value(json_object_get(st, "id"));
	if (qw_cli_read_file(o->from, &d, &n) || !(in = json_loadb((const char *)d, n, 0, NULL))) {
		rc = qw_cli_fail("%s: not a JSON answer of the KSC", o->from);
		goto out;
	}
	if (json_object_get(in, "session_id")) {
		kind = "session";
		id = json_string_value(json_object_get(in, "session_id"));
		epoch = 0;
		arr = json_object_get(in, "terminals");
	} else {
		kind = "group";
		id = json_string_value(json_object_get(in, "group"));
		epoch = (uint64_t)json_integer_value(json_object_get(in, "epoch"));
		arr = json_object_get(in, "members");
	}
	json_array_foreach(arr, i, e)
		if (json_string_value(json_object_get(e, "device")) &&
		    !strcmp(json_string_value(json_object_get(e, "device")), me))
			mine = e;
	if (!id || !mine) {
		rc = qw_cli_fail("%s holds no key for device %s", o->from, me);
		goto out;
	}
	wl = b64_get(mine, "wrapped", wrapped, sizeof(wrapped));
	ret = take_slot(st, json_string_value(json_object_get(mine, "batch")) ?
				    json_string_value(json_object_get(mine, "batch")) : "",
			(uint64_t)json_integer_value(json_object_get(mine, "slot")), slot_key);
	if (ret) {
		rc = slot_error(ret);
		goto out;
	}
	qw_ksc_wrap_aad(aad, sizeof(aad), kind, id, epoch, me);
	ret = qw_aead_open_msg(QW_AEAD_AES256_GCM, slot_key, sizeof(slot_key), (const uint8_t *)aad,
			       strlen(aad), wrapped, wl, key, sizeof(key), &kl, NULL);
	qw_wipe(slot_key, sizeof(slot_key));
	/* the slot is spent whatever the outcome */
	if (state_save(o, st)) {
		rc = qw_cli_fail("cannot write the medium");
		goto out;
	}
	if (ret) {
		rc = qw_cli_fail("the wrapped key does not open under this device's slot key "
				 "(forged or altered)");
		goto out;
	}
	if (qw_hash(QW_HASH_SM3, key, kl, fp) || qw_hex_encode(hex, sizeof(hex), fp, 8)) {
		rc = qw_cli_fail("hash failed");
		goto out;
	}
	{
		json_t *res = json_pack("{s:s, s:s, s:s, s:I, s:s, s:I}", "device", me, "kind", kind,
					"id", id, "epoch", (json_int_t)epoch, "key_sm3_prefix", hex,
					"balance_bits", (json_int_t)balance_bits(st));
		char kh[129];

		if (qw_hex_encode(kh, sizeof(kh), key, kl)) {
			json_decref(res);
			goto out;
		}
		if (o->out && qw_cli_write_file(o->out, (const uint8_t *)kh, strlen(kh), 1)) {
			qw_wipe(kh, sizeof(kh));
			json_decref(res);
			rc = qw_cli_fail("cannot write %s", o->out);
			goto out;
		}
		if (o->show)
			json_object_set_new(res, "key", json_string(kh));
		qw_wipe(kh, sizeof(kh));
		rc = print_obj(o, res);
	}
out:
	qw_wipe(key, sizeof(key));
	if (d)
		qw_free_secret(d, n);
	json_decref(in);
	json_decref(st);
	return rc;
}

/* The response body for challenge ch; marks the slot used in st. */
static int make_response(struct dopts *o, json_t *st, json_t *ch, char **body)
{
	const char *cid = json_string_value(json_object_get(ch, "challenge_id"));
	const char *method = json_string_value(json_object_get(ch, "method"));
	const char *me = json_string_value(json_object_get(st, "id"));
	uint8_t nonce[64], slot_key[32], mac[QW_SM2_SIG_MAX_BYTES > 32 ? QW_SM2_SIG_MAX_BYTES : 32];
	size_t nl = b64_get(ch, "nonce", nonce, sizeof(nonce)), ml = 0;
	json_t *r;
	int ret;

	if (!cid || !method || !nl)
		return qw_cli_fail("not a challenge of the KSC");
	if (!strcmp(method, "cert")) {
		struct qw_sm2_key *k = NULL;
		uint8_t *pem = NULL;
		size_t pl = 0;
		char m[200];
		int l;

		if (!o->sign_key || !o->sign_cert)
			return qw_cli_usage_error(o->cmd, "a cert challenge needs --sign-key and --sign-cert");
		if (qw_sm2_key_load(o->sign_key, &k) || qw_cli_read_file(o->sign_cert, &pem, &pl)) {
			qw_sm2_key_free(k);
			return qw_cli_fail("cannot read the signing key or certificate");
		}
		l = snprintf(m, sizeof(m), "qwave-ksc-auth|%s|", cid);
		memcpy(m + l, nonce, nl);
		ret = qw_sm2_sign(k, NULL, 0, m, (size_t)l + nl, mac, &ml);
		qw_sm2_key_free(k);
		r = json_pack("{s:s, s:s%}", "challenge_id", cid, "certificate", (const char *)pem, pl);
		free(pem);
		if (ret || !r || put_b64(r, "signature", mac, ml)) {
			json_decref(r);
			return qw_cli_fail("signing failed");
		}
	} else {
		ret = take_slot(st, json_string_value(json_object_get(ch, "batch")) ?
					    json_string_value(json_object_get(ch, "batch")) : "",
				(uint64_t)json_integer_value(json_object_get(ch, "slot")), slot_key);
		if (ret)
			return slot_error(ret);
		ret = qw_ksc_auth_mac(method, slot_key, cid, nonce, nl, me, mac, &ml);
		qw_wipe(slot_key, sizeof(slot_key));
		if (ret || state_save(o, st))
			return qw_cli_fail("cannot answer: %s", qw_strerror(ret ? ret : QW_EIO));
		r = json_pack("{s:s}", "challenge_id", cid);
		if (!r || put_b64(r, "mac", mac, ml)) {
			json_decref(r);
			return qw_cli_fail("out of memory");
		}
	}
	*body = json_dumps(r, JSON_COMPACT);
	json_decref(r);
	return *body ? QW_EXIT_OK : qw_cli_fail("out of memory");
}

static int cmd_respond(struct dopts *o)
{
	json_t *st = state_load(o), *ch = NULL;
	uint8_t *d = NULL;
	size_t n = 0;
	char *body = NULL;
	int rc;

	if (!st || !o->challenge) {
		json_decref(st);
		return qw_cli_usage_error(o->cmd, "--dir (an initialised medium) and --challenge are required");
	}
	if (qw_cli_read_file(o->challenge, &d, &n) || !(ch = json_loadb((const char *)d, n, 0, NULL))) {
		rc = qw_cli_fail("%s: not a challenge", o->challenge);
		goto out;
	}
	rc = make_response(o, st, ch, &body);
	if (!rc)
		printf("%s\n", body);
out:
	free(body);
	free(d);
	json_decref(ch);
	json_decref(st);
	return rc;
}

static int cmd_auth(struct dopts *o)
{
	json_t *st, *ch = NULL, *res = NULL;
	char req[200], *body = NULL;
	int rc;

	/* a user has no medium: certificate authentication only */
	if (o->user) {
		if (o->dir || (o->method && strcmp(o->method, "cert")))
			return qw_cli_usage_error(o->cmd, "--user authenticates by certificate, "
						       "without --dir");
		st = json_pack("{s:s, s:[]}", "id", o->user, "batches");
	} else {
		st = state_load(o);
	}
	if (!st)
		return o->dir ? qw_cli_fail("no medium in %s", o->dir) :
				qw_cli_usage_error(o->cmd, "--dir (or --user) is required");
	snprintf(req, sizeof(req), "{\"%s\":\"%s\",\"method\":\"%s\"}",
		 o->user ? "user" : "device", json_string_value(json_object_get(st, "id")),
		 o->method ? o->method : o->user ? "cert" : "hmac-sm3");
	rc = call(o, "POST", "/auth/challenge", req, &ch);
	if (rc)
		goto out;
	rc = make_response(o, st, ch, &body);
	if (rc)
		goto out;
	if (o->save && qw_cli_write_file(o->save, (const uint8_t *)body, strlen(body), 0)) {
		rc = qw_cli_fail("cannot write %s", o->save);
		goto out;
	}
	rc = call(o, "POST", "/auth/response", body, &res);
	if (!rc) {
		rc = print_obj(o, res);
		res = NULL;
	}
out:
	free(body);
	json_decref(res);
	json_decref(ch);
	json_decref(st);
	return rc;
}

int qw_cmd_device(int argc, char **argv)
{
	static const char *const cmds[] = { "init", "import", "balance", "sync", "unwrap", "respond",
					    "auth", NULL };
	struct dopts o;
	char cmd[32];
	int known = 0;

	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		printf("usage: qwave device <command> [options]\n\n"
		       "The device side of the Key Service Center: a simulated SIM/TF card or IoT chip\n"
		       "whose secure medium is DIR/device.json (mode 0600).\n\n"
		       "  init      personalise the medium with its medium key\n"
		       "  import    import an offline-filling image\n"
		       "  balance   unused pre-filled key bits (--report: tell the KSC)\n"
		       "  sync      contact the KSC; erase the keys after a remote destroy\n"
		       "  unwrap    open a session or group key addressed to this device\n"
		       "  respond   answer an authentication challenge (prints the response)\n"
		       "  auth      authenticate to the KSC (challenge-response)\n\n"
		       "Every command takes --help.\n");
		return argc < 2 ? QW_EXIT_USAGE : QW_EXIT_OK;
	}
	for (int i = 0; cmds[i]; i++)
		known |= !strcmp(cmds[i], argv[1]);
	if (!known)
		return qw_cli_usage_error("device", "unknown command '%s'", argv[1]);
	memset(&o, 0, sizeof(o));
	snprintf(cmd, sizeof(cmd), "device %s", argv[1]);
	o.cmd = cmd;
	for (int i = 2; i < argc; i++) {
		const char *n = argv[i];
		const char **slot = NULL;

		if (!strcmp(n, "--help") || !strcmp(n, "-h"))
			return help(argv[1]);
		if (!strcmp(n, "--json")) {
			o.json = 1;
			continue;
		}
		if (!strcmp(n, "--show-key")) {
			o.show = 1;
			continue;
		}
		if (!strcmp(n, "--report")) {
			o.report = 1;
			continue;
		}
		if (!strcmp(n, "--dir"))
			slot = &o.dir;
		else if (!strcmp(n, "--id"))
			slot = &o.id;
		else if (!strcmp(n, "--medium-key"))
			slot = &o.medium;
		else if (!strcmp(n, "--image"))
			slot = &o.image;
		else if (!strcmp(n, "--from"))
			slot = &o.from;
		else if (!strcmp(n, "--challenge"))
			slot = &o.challenge;
		else if (!strcmp(n, "--method"))
			slot = &o.method;
		else if (!strcmp(n, "--out"))
			slot = &o.out;
		else if (!strcmp(n, "--sign-key"))
			slot = &o.sign_key;
		else if (!strcmp(n, "--sign-cert"))
			slot = &o.sign_cert;
		else if (!strcmp(n, "--save"))
			slot = &o.save;
		else if (!strcmp(n, "--user") && !strcmp(argv[1], "auth"))
			slot = &o.user;
		else if (!strcmp(n, "--url"))
			slot = &o.url;
		else if (!strcmp(n, "--cert"))
			slot = &o.cert;
		else if (!strcmp(n, "--key"))
			slot = &o.key;
		else if (!strcmp(n, "--cacert"))
			slot = &o.ca;
		if (!slot)
			return qw_cli_usage_error(cmd, "unknown option '%s'", n);
		if (i + 1 >= argc)
			return qw_cli_usage_error(cmd, "option '%s' needs a value", n);
		*slot = argv[++i];
	}
	if (!strcmp(argv[1], "init"))
		return cmd_init(&o);
	if (!strcmp(argv[1], "import"))
		return cmd_import(&o);
	if (!strcmp(argv[1], "balance"))
		return cmd_balance(&o);
	if (!strcmp(argv[1], "sync"))
		return cmd_sync(&o);
	if (!strcmp(argv[1], "unwrap"))
		return cmd_unwrap(&o);
	if (!strcmp(argv[1], "respond"))
		return cmd_respond(&o);
	return cmd_auth(&o);
}
