/* qwave keys: an SAE's side of ETSI GS QKD 014 (Get status, Get key, Get
 * key with key IDs) against any KME, qwave's or a vendor's, through the
 * client of include/qwave/etsi014_client.h. Reference: docs/keys-cli.md. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "commands.h"
#include "qwave/encoding.h"
#include "qwave/error.h"
#include "qwave/etsi014_client.h"
#include "qwave/secmem.h"

enum keys_op { OP_STATUS, OP_GET, OP_GET_IDS };

struct keys_opts {
	enum keys_op op;
	const char *cmd; /* "keys get" for messages */
	const char *kme, *cert, *key, *cacert, *kme_id;
	unsigned timeout_ms;
	const char *slave, *master;
	uint32_t number, size_bits;
	const char **additional;
	size_t n_additional;
	const char **ids;
	size_t n_ids;
	const char *ext_mandatory, *ext_optional;
	const char *out;
	int use_get, json, show_keys;
};

static const char common_help[] =
	"connection (each falls back to an environment variable):\n"
	"  --kme URL        the KME, https://host[:port]              (QWAVE_KME)\n"
	"  --cert FILE      this SAE's certificate, PEM               (QWAVE_CERT)\n"
	"  --key FILE       its private key, PEM                      (QWAVE_KEY)\n"
	"  --cacert FILE    CA the KME's certificate must chain to    (QWAVE_CACERT)\n"
	"  --kme-id ID      also require the KME's certificate to name\n"
	"                   this KME ID (ETSI GS QKD 014 clause 5.1)    (QWAVE_KME_ID)\n"
	"  --timeout SEC    per request (default 10 s)\n"
	"  --json           print one JSON object on stdout\n";

static void status_help(void)
{
	printf("usage: qwave keys status --slave SAE_ID [connection options]\n"
	       "\n"
	       "Get status (ETSI GS QKD 014 clause 5.2): the keys the KME can deliver to\n"
	       "this (master) SAE for the slave SAE, and its limits.\n"
	       "\n"
	       "  --slave SAE_ID   the slave SAE\n"
	       "\n%s"
	       "\nWith --json: the Status object (clause 6.1) with its field names.\n",
	       common_help);
}

static void get_help(void)
{
	printf("usage: qwave keys get --slave SAE_ID [options] [connection options]\n"
	       "\n"
	       "Get key (ETSI GS QKD 014 clause 5.3): new keys shared with the slave SAE,\n"
	       "which fetches the same keys with 'qwave keys get-with-ids'.\n"
	       "\n"
	       "  --slave SAE_ID             the slave SAE\n"
	       "  --number N                 keys to get (KME default: 1)\n"
	       "  --size BITS                bits per key (KME default: its key_size)\n"
	       "  --additional-slave SAE_ID  share the keys with this SAE too (repeatable)\n"
	       "  --ext-mandatory JSON       extension_mandatory, a JSON array of objects\n"
	       "  --ext-optional JSON        extension_optional, a JSON array of objects\n"
	       "  --get                      use GET with number/size in the URL instead\n"
	       "                             of POST (only with no other option)\n"
	       "  --out FILE                 write the Key container (keys included) as\n"
	       "                             JSON to FILE, created mode 0600; an existing\n"
	       "                             file readable by group or others is refused\n"
	       "  --show-keys                print the keys (base64); default: (hidden)\n"
	       "\n%s"
	       "\nWith --json the output IS the Key container (clause 6.3), keys included\n"
	       "in base64: whoever reads stdout reads the keys.\n",
	       common_help);
}

static void get_ids_help(void)
{
	printf("usage: qwave keys get-with-ids --master SAE_ID --key-id UUID [--key-id UUID ...]\n"
	       "                              [options] [connection options]\n"
	       "\n"
	       "Get key with key IDs (ETSI GS QKD 014 clause 5.4): the keys a master SAE\n"
	       "obtained with Get key, by their key IDs; the KME delivers each key once.\n"
	       "\n"
	       "  --master SAE_ID   the master SAE that got the keys\n"
	       "  --key-id UUID     a key ID (repeatable)\n"
	       "  --get             use GET with key_ID in the URL (one key ID only)\n"
	       "  --out FILE        write the Key container as JSON to FILE (mode 0600)\n"
	       "  --show-keys       print the keys (base64); default: (hidden)\n"
	       "\n%s"
	       "\nWith --json the output IS the Key container (clause 6.3), keys included\n"
	       "in base64: whoever reads stdout reads the keys.\n",
	       common_help);
}

static void help(enum keys_op op)
{
	if (op == OP_STATUS)
		status_help();
	else if (op == OP_GET)
		get_help();
	else
		get_ids_help();
}

/* -1 parsed; otherwise the exit code. */
static int parse(int argc, char **argv, struct keys_opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *name = argv[i], *val = NULL;
		const char *eq;
		char buf[40];
		uint64_t n;

		if (!strcmp(name, "--help") || !strcmp(name, "-h")) {
			help(o->op);
			return QW_EXIT_OK;
		}
		if (strncmp(name, "--", 2))
			return qw_cli_usage_error(o->cmd, "unexpected argument '%s'", name);
		eq = strchr(name, '=');
		if (eq) {
			if ((size_t)(eq - name) >= sizeof(buf))
				return qw_cli_usage_error(o->cmd, "unknown option '%s'", name);
			memcpy(buf, name, (size_t)(eq - name));
			buf[eq - name] = '\0';
			name = buf;
			val = eq + 1;
		}
		/* flags */
		if (!strcmp(name, "--json") || !strcmp(name, "--get") ||
		    !strcmp(name, "--show-keys")) {
			if (val)
				return qw_cli_usage_error(o->cmd, "%s takes no value", name);
			if (o->op == OP_STATUS && strcmp(name, "--json"))
				return qw_cli_usage_error(o->cmd, "unknown option '%s'", name);
			if (!strcmp(name, "--json"))
				o->json = 1;
			else if (!strcmp(name, "--get"))
				o->use_get = 1;
			else
				o->show_keys = 1;
			continue;
		}
		if (!val) {
			if (i + 1 >= argc)
				return qw_cli_usage_error(o->cmd, "option '%s' needs a value", name);
			val = argv[++i];
		}
		if (!strcmp(name, "--kme")) {
			o->kme = val;
		} else if (!strcmp(name, "--cert")) {
			o->cert = val;
		} else if (!strcmp(name, "--key")) {
			o->key = val;
		} else if (!strcmp(name, "--cacert")) {
			o->cacert = val;
		} else if (!strcmp(name, "--kme-id")) {
			o->kme_id = val;
		} else if (!strcmp(name, "--timeout")) {
			double s;

			if (qw_cli_parse_double(val, &s) || s <= 0 || s > 3600)
				return qw_cli_usage_error(o->cmd, "--timeout: '%s' is not a number "
						       "of seconds in (0, 3600]", val);
			o->timeout_ms = (unsigned)(s * 1000.0 + 0.5);
			if (!o->timeout_ms)
				o->timeout_ms = 1;
		} else if (!strcmp(name, "--slave") && o->op != OP_GET_IDS) {
			o->slave = val;
		} else if (!strcmp(name, "--master") && o->op == OP_GET_IDS) {
			o->master = val;
		} else if (!strcmp(name, "--number") && o->op == OP_GET) {
			if (qw_cli_parse_u64(val, &n) || n < 1 || n > UINT32_MAX)
				return qw_cli_usage_error(o->cmd, "--number: '%s' is not a count "
						       "of keys >= 1", val);
			o->number = (uint32_t)n;
		} else if (!strcmp(name, "--size") && o->op == OP_GET) {
			if (qw_cli_parse_u64(val, &n) || n < 1 || n > UINT32_MAX)
				return qw_cli_usage_error(o->cmd, "--size: '%s' is not a number "
						       "of bits >= 1", val);
			o->size_bits = (uint32_t)n;
		} else if (!strcmp(name, "--additional-slave") && o->op == OP_GET) {
			o->additional[o->n_additional++] = val;
		} else if (!strcmp(name, "--ext-mandatory") && o->op == OP_GET) {
			o->ext_mandatory = val;
		} else if (!strcmp(name, "--ext-optional") && o->op == OP_GET) {
			o->ext_optional = val;
		} else if (!strcmp(name, "--key-id") && o->op == OP_GET_IDS) {
			o->ids[o->n_ids++] = val;
		} else if (!strcmp(name, "--out") && o->op != OP_STATUS) {
			o->out = val;
		} else {
			return qw_cli_usage_error(o->cmd, "unknown option '%s'", name);
		}
	}
	if (!o->kme)
		o->kme = getenv("QWAVE_KME");
	if (!o->cert)
		o->cert = getenv("QWAVE_CERT");
	if (!o->key)
		o->key = getenv("QWAVE_KEY");
	if (!o->cacert)
		o->cacert = getenv("QWAVE_CACERT");
	if (!o->kme_id)
		o->kme_id = getenv("QWAVE_KME_ID");
	if (!o->kme || !*o->kme)
		return qw_cli_usage_error(o->cmd, "no KME: give --kme URL or set QWAVE_KME");
	if (!o->cert || !*o->cert)
		return qw_cli_usage_error(o->cmd, "no client certificate: give --cert FILE or "
				       "set QWAVE_CERT");
	if (!o->key || !*o->key)
		return qw_cli_usage_error(o->cmd, "no client key: give --key FILE or set QWAVE_KEY");
	if (!o->cacert || !*o->cacert)
		return qw_cli_usage_error(o->cmd, "no CA file: give --cacert FILE or set "
				       "QWAVE_CACERT");
	if (o->kme_id && !*o->kme_id)
		o->kme_id = NULL;
	if (o->op != OP_GET_IDS && !o->slave)
		return qw_cli_usage_error(o->cmd, "give the slave SAE with --slave SAE_ID");
	if (o->op == OP_GET_IDS && !o->master)
		return qw_cli_usage_error(o->cmd, "give the master SAE with --master SAE_ID");
	if (o->op == OP_GET_IDS && !o->n_ids)
		return qw_cli_usage_error(o->cmd, "give at least one --key-id UUID");
	if (o->op == OP_GET_IDS && o->use_get && o->n_ids != 1)
		return qw_cli_usage_error(o->cmd, "--get carries one key ID only (ETSI GS QKD 014 "
				       "clause 6.4)");
	if (o->op == OP_GET && o->use_get &&
	    (o->n_additional || o->ext_mandatory || o->ext_optional))
		return qw_cli_usage_error(o->cmd, "--get carries only --number and --size "
				       "(ETSI GS QKD 014 clause 6.2)");
	return -1;
}

/* The one line for a failed call: the KME's own words when it answered. */
static int report(const struct keys_opts *o, int rc, const struct qw_etsi_error *err)
{
	if (rc == QW_EINVAL && !err->http_status && err->message[0])
		return qw_cli_usage_error(o->cmd, "%s", err->message);
	if (err->http_status && err->http_status != 200)
		return qw_cli_fail("KME answered %d: %s%s%s%s", err->http_status, err->message,
				   err->details[0] ? " (details: " : "", err->details,
				   err->details[0] ? ")" : "");
	if (err->http_status == 200)
		return qw_cli_fail("KME sent an invalid answer: %s", err->message);
	return qw_cli_fail("%s", err->message[0] ? err->message : qw_strerror(rc));
}

static int connect_client(const struct keys_opts *o, struct qw_etsi_client **c,
			  struct qw_etsi_error *err)
{
	struct qw_etsi_client_opts co = {
		.base_url = o->kme, .cert_file = o->cert, .key_file = o->key,
		.ca_file = o->cacert, .timeout_ms = o->timeout_ms, .expect_kme_id = o->kme_id,
	};

	return qw_etsi_client_new(&co, c, err);
}

static int add_ext(json_t *obj, const char *key, const char *text)
{
	json_t *v;

	if (!text)
		return 0;
	v = json_loads(text, 0, NULL);
	return v ? json_object_set_new(obj, key, v) : -1;
}

static int run_status(const struct keys_opts *o)
{
	struct qw_etsi_client *c = NULL;
	struct qw_etsi_error err;
	struct qw_etsi_status st;
	int rc, ret = QW_EXIT_FAIL;

	memset(&st, 0, sizeof(st));
	rc = connect_client(o, &c, &err);
	if (!rc)
		rc = qw_etsi_client_status(c, o->slave, &st, &err);
	if (rc) {
		ret = report(o, rc, &err);
		goto out;
	}
	if (o->json) {
		json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
				      "source_KME_ID", st.source_kme_id,
				      "target_KME_ID", st.target_kme_id,
				      "master_SAE_ID", st.master_sae_id,
				      "slave_SAE_ID", st.slave_sae_id,
				      "key_size", (json_int_t)st.key_size,
				      "stored_key_count", (json_int_t)st.stored_key_count,
				      "max_key_count", (json_int_t)st.max_key_count,
				      "max_key_per_request", (json_int_t)st.max_key_per_request,
				      "max_key_size", (json_int_t)st.max_key_size,
				      "min_key_size", (json_int_t)st.min_key_size,
				      "max_SAE_ID_count", (json_int_t)st.max_sae_id_count);

		if (!j || add_ext(j, "status_extension", st.status_extension)) {
			json_decref(j);
			ret = qw_cli_fail("out of memory");
			goto out;
		}
		qw_cli_print_json(j);
	} else {
		printf("KME %s: status for slave SAE %s\n", o->kme, o->slave);
		printf("  source KME ID          %s\n", st.source_kme_id);
		printf("  target KME ID          %s\n", st.target_kme_id);
		printf("  master SAE ID          %s\n", st.master_sae_id);
		printf("  slave SAE ID           %s\n", st.slave_sae_id);
		printf("  default key size       %u bits\n", st.key_size);
		printf("  key sizes              %u .. %u bits\n", st.min_key_size, st.max_key_size);
		printf("  stored keys            %llu of at most %llu (of %u bits)\n",
		       (unsigned long long)st.stored_key_count,
		       (unsigned long long)st.max_key_count, st.key_size);
		printf("  keys per request       at most %u\n", st.max_key_per_request);
		if (st.max_sae_id_count)
			printf("  additional slave SAEs  at most %u\n", st.max_sae_id_count);
		else
			printf("  additional slave SAEs  none (no key multicast)\n");
		if (st.status_extension)
			printf("  status_extension       %s\n", st.status_extension);
	}
	ret = QW_EXIT_OK;
out:
	qw_etsi_status_clear(&st);
	qw_etsi_client_free(c);
	return ret;
}

/* Wipe the base64 text of every key held in a Key container json_t before
 * it is released (jansson owns writable copies). */
static void wipe_container(json_t *root)
{
	json_t *arr = json_object_get(root, "keys"), *e, *k;
	size_t i;

	json_array_foreach(arr, i, e) {
		k = json_object_get(e, "key");
		if (json_is_string(k))
			qw_wipe((char *)json_string_value(k), json_string_length(k));
	}
}

/* The Key container (clause 6.3) with the keys in base64, as compact JSON
 * text (malloc()ed, secret) or NULL. */
static char *container_json(const struct qw_etsi_keys *k)
{
	json_t *root = json_object(), *arr = json_array(), *e;
	char *b64 = NULL, *text = NULL;
	size_t cap = 0, n;

	if (!root || !arr || json_object_set(root, "keys", arr))
		goto out;
	for (size_t i = 0; i < k->n; i++) {
		size_t need = qw_base64_encoded_len(k->keys[i].len) + 1;

		if (need > cap) {
			qw_free_secret(b64, cap);
			cap = 0;
			b64 = malloc(need);
			if (!b64)
				goto out;
			cap = need;
		}
		if (qw_base64_encode(b64, cap, k->keys[i].key, k->keys[i].len))
			goto out;
		e = json_pack("{s:s, s:s}", "key_ID", k->keys[i].key_id, "key", b64);
		if (!e || json_array_append_new(arr, e))
			goto out;
		if (add_ext(e, "key_ID_extension", k->keys[i].key_id_extension) ||
		    add_ext(e, "key_extension", k->keys[i].key_extension))
			goto out;
	}
	if (add_ext(root, "key_container_extension", k->container_extension))
		goto out;
	/* json_dumpb writes into our buffer; json_dumps would grow its own
	 * with realloc() and leave unwiped copies of the keys behind. */
	n = json_dumpb(root, NULL, 0, JSON_COMPACT);
	if (n == 0 || !(text = malloc(n + 1)))
		goto out;
	if (json_dumpb(root, text, n, JSON_COMPACT) != n) {
		qw_free_secret(text, n + 1);
		text = NULL;
		goto out;
	}
	text[n] = '\0';
out:
	qw_free_secret(b64, cap);
	if (root)
		wipe_container(root);
	json_decref(arr);
	json_decref(root);
	return text;
}

static int print_keys(const struct keys_opts *o, const struct qw_etsi_keys *k)
{
	const char *peer = o->op == OP_GET ? o->slave : o->master;
	char *b64 = NULL;
	size_t cap = 0, bits = k->n ? k->keys[0].len * 8 : 0;
	int same = 1;

	for (size_t i = 1; i < k->n; i++)
		same &= k->keys[i].len == k->keys[0].len;
	if (same)
		printf("%zu key%s of %zu bits %s %s%s\n", k->n, k->n == 1 ? "" : "s", bits,
		       o->op == OP_GET ? "shared with slave SAE" : "from master SAE", peer,
		       o->op == OP_GET ? " (key IDs go to the slave SAE)" : "");
	else
		printf("%zu keys %s %s\n", k->n,
		       o->op == OP_GET ? "shared with slave SAE" : "from master SAE", peer);
	for (size_t i = 0; i < k->n; i++) {
		const char *shown = "(hidden)";
		size_t need = qw_base64_encoded_len(k->keys[i].len) + 1;

		if (o->show_keys) {
			if (need > cap) {
				qw_free_secret(b64, cap);
				cap = 0;
				if (!(b64 = malloc(need)))
					return qw_cli_fail("out of memory");
				cap = need;
			}
			if (qw_base64_encode(b64, cap, k->keys[i].key, k->keys[i].len)) {
				qw_free_secret(b64, cap);
				return qw_cli_fail("base64 encoding failed");
			}
			shown = b64;
		}
		if (same)
			printf("  %s  %s\n", k->keys[i].key_id, shown);
		else
			printf("  %s  %zu bits  %s\n", k->keys[i].key_id, k->keys[i].len * 8, shown);
		if (k->keys[i].key_id_extension)
			printf("    key_ID_extension %s\n", k->keys[i].key_id_extension);
		if (k->keys[i].key_extension)
			printf("    key_extension %s\n", k->keys[i].key_extension);
	}
	if (k->container_extension)
		printf("  key_container_extension %s\n", k->container_extension);
	if (o->out)
		printf("keys written to %s (mode 0600)\n", o->out);
	fflush(stdout);
	qw_free_secret(b64, cap);
	return QW_EXIT_OK;
}

static int run_keys(const struct keys_opts *o)
{
	struct qw_etsi_client *c = NULL;
	struct qw_etsi_error err;
	struct qw_etsi_keys *k = NULL;
	struct qw_etsi_key_request req = {
		.number = o->number, .size_bits = o->size_bits,
		.additional_slaves = o->additional, .n_additional = o->n_additional,
		.extension_mandatory = o->ext_mandatory, .extension_optional = o->ext_optional,
		.use_get = o->use_get,
	};
	char *text = NULL;
	int rc, ret = QW_EXIT_FAIL;

	if (o->op == OP_GET) {
		/* check the extensions before the KME hands out keys */
		char *body = NULL;

		rc = qw_etsi_client_key_request_json(&req, &body, &err);
		free(body);
		if (rc)
			return rc == QW_EINVAL ? qw_cli_usage_error(o->cmd, "%s", err.message)
					       : qw_cli_fail("%s", qw_strerror(rc));
	}
	rc = connect_client(o, &c, &err);
	if (!rc) {
		if (o->op == OP_GET)
			rc = qw_etsi_client_get_key(c, o->slave, &req, &k, &err);
		else
			rc = qw_etsi_client_get_key_with_ids(c, o->master, o->ids, o->n_ids,
							     o->use_get, &k, &err);
	}
	if (rc) {
		ret = report(o, rc, &err);
		goto out;
	}
	if (o->out || o->json) {
		text = container_json(k);
		if (!text) {
			ret = qw_cli_fail("out of memory");
			goto out;
		}
	}
	if (o->out) {
		size_t len = strlen(text);

		text[len] = '\n'; /* the NUL becomes the file's final newline */
		rc = qw_cli_write_file(o->out, (const uint8_t *)text, len + 1, 1);
		text[len] = '\0';
		if (rc == QW_EPERM) {
			ret = qw_cli_fail("refusing to write keys to %s: it is readable by group or "
					  "others (or a symlink, not a regular file, or not "
					  "writable); remove it or chmod 600", o->out);
			goto out;
		}
		if (rc) {
			ret = qw_cli_fail("cannot write %s: %s (the keys were taken from the KME; "
					  "their IDs: see --json)", o->out, qw_strerror(rc));
			goto out;
		}
	}
	if (o->json) {
		if (fputs(text, stdout) == EOF || fputc('\n', stdout) == EOF || fflush(stdout)) {
			ret = qw_cli_fail("writing to stdout failed");
			goto out;
		}
		ret = QW_EXIT_OK;
	} else {
		ret = print_keys(o, k);
	}
out:
	if (text)
		qw_free_secret(text, strlen(text) + 1);
	qw_etsi_keys_free(k);
	qw_etsi_client_free(c);
	return ret;
}

static int keys_cmd(enum keys_op op, const char *cmd, int argc, char **argv)
{
	struct keys_opts o;
	int ret;

	memset(&o, 0, sizeof(o));
	o.op = op;
	o.cmd = cmd;
	o.additional = calloc((size_t)argc + 1, sizeof(*o.additional));
	o.ids = calloc((size_t)argc + 1, sizeof(*o.ids));
	if (!o.additional || !o.ids) {
		ret = qw_cli_fail("out of memory");
		goto out;
	}
	ret = parse(argc, argv, &o);
	if (ret >= 0)
		goto out;
	ret = op == OP_STATUS ? run_status(&o) : run_keys(&o);
out:
	free(o.additional);
	free(o.ids);
	return ret;
}

static int keys_status(int argc, char **argv)
{
	return keys_cmd(OP_STATUS, "keys status", argc, argv);
}

static int keys_get(int argc, char **argv)
{
	return keys_cmd(OP_GET, "keys get", argc, argv);
}

static int keys_get_ids(int argc, char **argv)
{
	return keys_cmd(OP_GET_IDS, "keys get-with-ids", argc, argv);
}

int qw_cmd_keys(int argc, char **argv)
{
	static const struct qw_cli_cmd cmds[] = {
		{ "status", keys_status, "Get status: keys available for a slave SAE (clause 5.2)" },
		{ "get", keys_get, "Get key: new keys as master SAE (clause 5.3)" },
		{ "get-with-ids", keys_get_ids,
		  "Get key with key IDs: a master's keys, as slave SAE (clause 5.4)" },
		{ NULL, NULL, NULL },
	};

	return qw_cli_dispatch("keys",
			       "ETSI GS QKD 014 client: get keys from a KME as an SAE (mutual TLS)",
			       cmds, argc, argv);
}
