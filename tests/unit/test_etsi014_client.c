/* ETSI GS QKD 014 client: parsing of Status, Key container and Error
 * bodies (the examples of clauses 6.1, 6.3, 6.5 and malformed variants),
 * URL building and escaping, Key request bodies, option checks, transport
 * errors without a server; then live against qwave's own ETSI 014 server
 * (https.h + etsi014.h on 127.0.0.1, certificates from pki.h) backed by an
 * in-memory kme.h test double: every call, GET and POST, round trips
 * master -> slave, error mapping (400 messages, 401), TLS refusals (wrong
 * CA, foreign client certificate, wrong KME ID). */
#define _XOPEN_SOURCE 700
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>
#include <openssl/rand.h>

#include "qwave/encoding.h"
#include "qwave/etsi014.h"
#include "qwave/etsi014_client.h"
#include "qwave/https.h"
#include "qwave/keysource.h"
#include "qwave/kme.h"
#include "qwave/pki.h"
#include "qwave/uuid.h"

/* clause 6.1 example */
static const char status_example[] =
	"{\"source_KME_ID\": \"AAAABBBBCCCCDDDD\", \"target_KME_ID\": \"EEEEFFFFGGGGHHHH\","
	" \"master_SAE_ID\": \"IIIIJJJJKKKKLLLL\", \"slave_SAE_ID\": \"MMMMNNNNOOOOPPPP\","
	" \"key_size\": 352, \"stored_key_count\": 25000, \"max_key_count\": 100000,"
	" \"max_key_per_request\": 128, \"max_key_size\": 1024, \"min_key_size\": 64,"
	" \"max_SAE_ID_count\": 0}";

/* clause 6.3 example */
static const char keys_example[] =
	"{\"keys\": ["
	"{\"key_ID\": \"bc490419-7d60-487f-adc1-4ddcc177c139\","
	" \"key\": \"wHHVxRwDJs3/bXd38GHP3oe4svTuRpZS0yCC7x4Ly+s=\"},"
	"{\"key_ID\": \"0a782fb5-3434-48fe-aa4d-14f41d46cf92\","
	" \"key\": \"OeGMPxh1+2RpJpNCYixWHFLYRubpOKCw94FcCI7VdJA=\"},"
	"{\"key_ID\": \"64a7e9a2-269c-4b2c-832c-5351f3ac5adb\","
	" \"key\": \"479G1Osfljpmfa5vn24tdzE5zqv5CafkGxYrLCk8384=\"},"
	"{\"key_ID\": \"550e8400-e29b-41d4-a716-446655440000\","
	" \"key\": \"csEMV9KkmjgOPF90uc54+hykhg6iI5GTPHlP9PjgLVU=\"}]}";

static void test_status_example(void **state)
{
	struct qw_etsi_status st;
	struct qw_etsi_error err;

	(void)state;
	assert_int_equal(qw_etsi_client_parse_status(status_example, strlen(status_example), &st,
						     &err), 0);
	assert_string_equal(st.source_kme_id, "AAAABBBBCCCCDDDD");
	assert_string_equal(st.target_kme_id, "EEEEFFFFGGGGHHHH");
	assert_string_equal(st.master_sae_id, "IIIIJJJJKKKKLLLL");
	assert_string_equal(st.slave_sae_id, "MMMMNNNNOOOOPPPP");
	assert_int_equal(st.key_size, 352);
	assert_int_equal(st.stored_key_count, 25000);
	assert_int_equal(st.max_key_count, 100000);
	assert_int_equal(st.max_key_per_request, 128);
	assert_int_equal(st.max_key_size, 1024);
	assert_int_equal(st.min_key_size, 64);
	assert_int_equal(st.max_sae_id_count, 0);
	assert_null(st.status_extension);
	qw_etsi_status_clear(&st);
}

static void test_status_extension_kept(void **state)
{
	char body[1024];
	struct qw_etsi_status st;
	struct qw_etsi_error err;
	json_t *e;

	(void)state;
	snprintf(body, sizeof(body), "%.*s, \"status_extension\": {\"abc_qber\": 0.02, "
		 "\"abc_nested\": {\"x\": [1, 2]}}}",
		 (int)strlen(status_example) - 1, status_example);
	assert_int_equal(qw_etsi_client_parse_status(body, strlen(body), &st, &err), 0);
	assert_non_null(st.status_extension);
	e = json_loads(st.status_extension, 0, NULL);
	assert_non_null(e);
	assert_true(json_real_value(json_object_get(e, "abc_qber")) == 0.02);
	assert_int_equal(json_array_size(json_object_get(json_object_get(e, "abc_nested"), "x")), 2);
	json_decref(e);
	qw_etsi_status_clear(&st);
	assert_null(st.status_extension);
}

/* Replace the first occurrence of from in the example Status by to, parse,
 * expect QW_EPROTO and a message containing needle. */
static void status_bad(const char *from, const char *to, const char *needle)
{
	char body[1024];
	const char *p = strstr(status_example, from);
	struct qw_etsi_status st;
	struct qw_etsi_error err;

	assert_non_null(p);
	snprintf(body, sizeof(body), "%.*s%s%s", (int)(p - status_example), status_example, to,
		 p + strlen(from));
	assert_int_equal(qw_etsi_client_parse_status(body, strlen(body), &st, &err), QW_EPROTO);
	if (!strstr(err.message, needle))
		fail_msg("message '%s' lacks '%s'", err.message, needle);
	assert_string_equal(st.source_kme_id, "");
}

static void test_status_malformed(void **state)
{
	struct qw_etsi_status st;
	struct qw_etsi_error err;

	(void)state;
	status_bad("352", "\"352\"", "\"key_size\" is not an integer");
	status_bad("352", "-1", "\"key_size\" = -1 is out of range");
	status_bad("352", "4294967296", "out of range");
	status_bad("128", "1.5", "\"max_key_per_request\" is not an integer");
	status_bad("\"AAAABBBBCCCCDDDD\"", "17", "\"source_KME_ID\" is not a string");
	/* a hostile KME's terminal escape in an ID the CLI prints */
	status_bad("\"AAAABBBBCCCCDDDD\"", "\"AAAA\\u001b[2JBBBB\"",
		   "\"source_KME_ID\" holds a control character");
	status_bad("\"target_KME_ID\"", "\"target_kme_id\"", "missing \"target_KME_ID\"");
	status_bad("\"max_SAE_ID_count\": 0", "\"max_SAE_ID_count\": null",
		   "\"max_SAE_ID_count\" is not an integer");
	status_bad("\"max_SAE_ID_count\": 0", "\"max_SAE_ID_count\": 0, \"status_extension\": [1]",
		   "\"status_extension\" is not an object");
	status_bad("\"AAAABBBBCCCCDDDD\"",
		   "\"0123456789012345678901234567890123456789012345678901234567890123456789\"",
		   "longer than 64");
	status_bad("352", "352,", "not valid JSON");
	assert_int_equal(qw_etsi_client_parse_status("[1]", 3, &st, &err), QW_EPROTO);
	assert_string_equal(err.message, "Status: not a JSON object");
	assert_int_equal(qw_etsi_client_parse_status("", 0, &st, &err), QW_EPROTO);
	/* duplicate keys are refused, not silently resolved */
	status_bad("\"key_size\": 352", "\"key_size\": 352, \"key_size\": 353", "not valid JSON");
}

static void test_keys_example(void **state)
{
	static const char *ids[] = {
		"bc490419-7d60-487f-adc1-4ddcc177c139", "0a782fb5-3434-48fe-aa4d-14f41d46cf92",
		"64a7e9a2-269c-4b2c-832c-5351f3ac5adb", "550e8400-e29b-41d4-a716-446655440000",
	};
	static const char *b64[] = {
		"wHHVxRwDJs3/bXd38GHP3oe4svTuRpZS0yCC7x4Ly+s=",
		"OeGMPxh1+2RpJpNCYixWHFLYRubpOKCw94FcCI7VdJA=",
		"479G1Osfljpmfa5vn24tdzE5zqv5CafkGxYrLCk8384=",
		"csEMV9KkmjgOPF90uc54+hykhg6iI5GTPHlP9PjgLVU=",
	};
	struct qw_etsi_keys *k;
	struct qw_etsi_error err;
	char enc[64];

	(void)state;
	assert_int_equal(qw_etsi_client_parse_keys(keys_example, strlen(keys_example), &k, &err), 0);
	assert_int_equal(k->n, 4);
	assert_null(k->container_extension);
	for (size_t i = 0; i < 4; i++) {
		assert_string_equal(k->keys[i].key_id, ids[i]);
		/* 44 base64 characters with one '=': 256-bit keys */
		assert_int_equal(k->keys[i].len, 32);
		assert_int_equal(qw_base64_encode(enc, sizeof(enc), k->keys[i].key, k->keys[i].len), 0);
		assert_string_equal(enc, b64[i]);
		assert_null(k->keys[i].key_extension);
	}
	/* first byte of "wHHV..." is 0xc0 ('w' = 48, 'H' = 7: 110000 00.0111) */
	assert_int_equal(k->keys[0].key[0], 0xc0);
	qw_etsi_keys_free(k);
}

static void test_keys_extensions(void **state)
{
	static const char body[] =
		"{\"keys\": [{\"key_ID\": \"550E8400-E29B-41D4-A716-446655440000\","
		" \"key_ID_extension\": {\"a\": 1}, \"key\": \"AAEC\", \"key_extension\": {\"b\": [true]}}],"
		" \"key_container_extension\": {\"c\": \"d\"}}";
	struct qw_etsi_keys *k;
	struct qw_etsi_error err;

	(void)state;
	assert_int_equal(qw_etsi_client_parse_keys(body, strlen(body), &k, &err), 0);
	assert_int_equal(k->n, 1);
	/* upper case is a valid UUID text (RFC 4122 3: case-insensitive on input) */
	assert_string_equal(k->keys[0].key_id, "550E8400-E29B-41D4-A716-446655440000");
	assert_int_equal(k->keys[0].len, 3);
	assert_memory_equal(k->keys[0].key, "\x00\x01\x02", 3);
	assert_string_equal(k->keys[0].key_id_extension, "{\"a\":1}");
	assert_string_equal(k->keys[0].key_extension, "{\"b\":[true]}");
	assert_string_equal(k->container_extension, "{\"c\":\"d\"}");
	qw_etsi_keys_free(k);
}

static void keys_bad(const char *body, const char *needle)
{
	struct qw_etsi_keys *k = (struct qw_etsi_keys *)1;
	struct qw_etsi_error err;

	assert_int_equal(qw_etsi_client_parse_keys(body, strlen(body), &k, &err), QW_EPROTO);
	assert_null(k);
	if (!strstr(err.message, needle))
		fail_msg("message '%s' lacks '%s'", err.message, needle);
}

static void test_keys_malformed(void **state)
{
	(void)state;
	keys_bad("{\"keys\": [", "not valid JSON");
	keys_bad("[]", "not a JSON object");
	keys_bad("{}", "missing \"keys\"");
	keys_bad("{\"keys\": {}}", "\"keys\" is not an array");
	keys_bad("{\"keys\": [7]}", "keys[0] is not an object");
	keys_bad("{\"keys\": [{\"key\": \"AAAA\"}]}", "keys[0]: missing \"key_ID\"");
	keys_bad("{\"keys\": [{\"key_ID\": 5, \"key\": \"AAAA\"}]}",
		 "keys[0]: \"key_ID\" is not a string");
	keys_bad("{\"keys\": [{\"key_ID\": \"550e8400e29b41d4a716446655440000\", \"key\": \"AAAA\"}]}",
		 "keys[0]: key_ID \"550e8400e29b41d4a716446655440000\" is not a UUID");
	keys_bad("{\"keys\": [{\"key_ID\": \"{550e8400-e29b-41d4-a716-446655440000}\", \"key\": \"AAAA\"}]}",
		 "is not a UUID");
	keys_bad("{\"keys\": [{\"key_ID\": \"550e8400-e29b-41d4-a716-44665544000g\", \"key\": \"AAAA\"}]}",
		 "is not a UUID");
	keys_bad("{\"keys\": [{\"key_ID\": \"550e8400-e29b-41d4-a716-446655440000\"}]}",
		 "keys[0]: missing \"key\"");
	keys_bad("{\"keys\": [{\"key_ID\": \"550e8400-e29b-41d4-a716-446655440000\", \"key\": 12}]}",
		 "\"key\" is not a string");
	keys_bad("{\"keys\": [{\"key_ID\": \"550e8400-e29b-41d4-a716-446655440000\", \"key\": \"\"}]}",
		 "\"key\" is empty");
	/* the second key is broken: the message names it, not the first */
	keys_bad("{\"keys\": [{\"key_ID\": \"550e8400-e29b-41d4-a716-446655440000\", \"key\": \"AAAA\"},"
		 "{\"key_ID\": \"0a782fb5-3434-48fe-aa4d-14f41d46cf92\", \"key\": \"AAA\"}]}",
		 "keys[1] (0a782fb5-3434-48fe-aa4d-14f41d46cf92): \"key\" is not valid base64");
	keys_bad("{\"keys\": [{\"key_ID\": \"550e8400-e29b-41d4-a716-446655440000\", \"key\": \"AA AA\"}]}",
		 "not valid base64");
	keys_bad("{\"keys\": [{\"key_ID\": \"550e8400-e29b-41d4-a716-446655440000\", \"key\": \"AB==\"}]}",
		 "not valid base64"); /* non-zero pad bits */
	keys_bad("{\"keys\": [{\"key_ID\": \"550e8400-e29b-41d4-a716-446655440000\", \"key\": \"AAAA\","
		 " \"key_extension\": \"x\"}]}", "\"key_extension\" is not an object");
	keys_bad("{\"keys\": [], \"key_container_extension\": 1}",
		 "\"key_container_extension\" is not an object");
	keys_bad("{\"keys\": [{\"key_ID\": \"550e8400-e29b-41d4-a716-446655440000\", \"key\": \"AAAA\"},"
		 "{\"key_ID\": \"550E8400-E29B-41D4-A716-446655440000\", \"key\": \"AAAA\"}]}",
		 "keys[1].key_ID 550E8400-E29B-41D4-A716-446655440000 repeats keys[0]");
	/* the first index that repeats an earlier one (B at 3), not the first
	 * ID that repeats (A) */
	keys_bad("{\"keys\": ["
		 "{\"key_ID\": \"aaaaaaaa-0000-4000-8000-000000000000\", \"key\": \"AAAA\"},"
		 "{\"key_ID\": \"bbbbbbbb-0000-4000-8000-000000000000\", \"key\": \"AAAA\"},"
		 "{\"key_ID\": \"cccccccc-0000-4000-8000-000000000000\", \"key\": \"AAAA\"},"
		 "{\"key_ID\": \"BBBBBBBB-0000-4000-8000-000000000000\", \"key\": \"AAAA\"},"
		 "{\"key_ID\": \"aaaaaaaa-0000-4000-8000-000000000000\", \"key\": \"AAAA\"}]}",
		 "keys[3].key_ID BBBBBBBB-0000-4000-8000-000000000000 repeats keys[1]");
}

static void test_bad_base64_not_quoted(void **state)
{
	static const char body[] =
		"{\"keys\": [{\"key_ID\": \"550e8400-e29b-41d4-a716-446655440000\","
		" \"key\": \"SECRETSECRET*===\"}]}";
	struct qw_etsi_keys *k;
	struct qw_etsi_error err;

	/* a raw control character inside the key string: invalid JSON, and
	 * jansson's error text would quote the token (a piece of the key) */
	static const char body2[] =
		"{\"keys\": [{\"key_ID\": \"550e8400-e29b-41d4-a716-446655440000\","
		" \"key\": \"SECRETSECRET\x01==\"}]}";

	(void)state;
	assert_int_equal(qw_etsi_client_parse_keys(body, strlen(body), &k, &err), QW_EPROTO);
	assert_null(strstr(err.message, "SECRET"));
	assert_int_equal(qw_etsi_client_parse_keys(body2, strlen(body2), &k, &err), QW_EPROTO);
	assert_non_null(strstr(err.message, "not valid JSON (line 1, column"));
	assert_null(strstr(err.message, "SECRET"));
	for (const char *p = err.message; *p; p++)
		assert_true((unsigned char)*p >= 0x20);
}

static void test_http_errors(void **state)
{
	struct qw_etsi_error err;
	static const char m400[] = "{\"message\": \"size shall be a multiple of 8\"}";
	static const char nf[] = "{\"message\": \"one or more keys specified are not found on KME\"}";
	static const char det[] =
		"{\"message\": \"not all extension_mandatory parameters are supported\","
		" \"details\": [{\"extension_mandatory_unsupported\": \"abc_route_type is not supported\"}]}";
	static const char m503[] = "{\"message\": \"key data access error\"}";
	static const char esc[] = "{\"message\": \"bad\\u001b[31m\\nthing\"}";

	(void)state;
	assert_int_equal(qw_etsi_client_http_error(400, m400, strlen(m400), &err), QW_EINVAL);
	assert_int_equal(err.http_status, 400);
	assert_string_equal(err.message, "size shall be a multiple of 8");
	assert_string_equal(err.details, "");
	assert_int_equal(qw_etsi_client_http_error(400, nf, strlen(nf), &err), QW_ENOTFOUND);
	assert_int_equal(qw_etsi_client_http_error(400, det, strlen(det), &err), QW_EINVAL);
	assert_string_equal(err.message, "not all extension_mandatory parameters are supported");
	assert_string_equal(err.details,
			    "[{\"extension_mandatory_unsupported\":\"abc_route_type is not supported\"}]");
	/* 401 has no body (Tables 4, 6, 8) */
	assert_int_equal(qw_etsi_client_http_error(401, NULL, 0, &err), QW_EPERM);
	assert_int_equal(err.http_status, 401);
	assert_string_equal(err.message, "Unauthorized");
	assert_int_equal(qw_etsi_client_http_error(503, m503, strlen(m503), &err), QW_EAGAIN);
	assert_string_equal(err.message, "key data access error");
	assert_int_equal(qw_etsi_client_http_error(503, "oops", 4, &err), QW_EAGAIN);
	assert_string_equal(err.message, "Error on server side");
	assert_int_equal(qw_etsi_client_http_error(404, "{\"message\": \"no route\"}", 23, &err),
			 QW_EPROTO);
	assert_int_equal(err.http_status, 404);
	/* control characters from the server never reach a terminal */
	assert_int_equal(qw_etsi_client_http_error(400, esc, strlen(esc), &err), QW_EINVAL);
	assert_string_equal(err.message, "bad?[31m?thing");
	assert_int_equal(qw_etsi_client_http_error(401, NULL, 0, NULL), QW_EPERM);
}

static void test_url(void **state)
{
	char *u;

	(void)state;
	u = qw_etsi_client_url("https://kme.example:8443", "sae-B", "status", NULL);
	assert_string_equal(u, "https://kme.example:8443/api/v1/keys/sae-B/status");
	free(u);
	u = qw_etsi_client_url("https://h", "MMMMNNNNOOOOPPPP", "enc_keys", "number=3&size=1024");
	/* clause 6.2 EXAMPLE 1 */
	assert_string_equal(u, "https://h/api/v1/keys/MMMMNNNNOOOOPPPP/enc_keys?number=3&size=1024");
	free(u);
	/* URL-encoded SAE IDs (clause 5.2 Table 3) */
	u = qw_etsi_client_url("https://h", "a b/c?d%e&f=ü", "dec_keys", NULL);
	assert_string_equal(u, "https://h/api/v1/keys/a%20b%2Fc%3Fd%25e%26f%3D%C3%BC/dec_keys");
	free(u);
	u = qw_etsi_client_url("https://h", "A-Z_a.z~0", "status", NULL);
	assert_string_equal(u, "https://h/api/v1/keys/A-Z_a.z~0/status");
	free(u);
}

static void test_key_request_json(void **state)
{
	const char *add[] = { "ABCDEFG", "HIJKLMN" };
	struct qw_etsi_key_request r = { 0 };
	struct qw_etsi_error err;
	char *s;
	json_t *o;

	(void)state;
	assert_int_equal(qw_etsi_client_key_request_json(&r, &s, &err), 0);
	assert_string_equal(s, "{}"); /* clause 6.2: all items optional */
	free(s);
	r.number = 1;
	r.size_bits = 4096;
	r.additional_slaves = add;
	r.n_additional = 2;
	r.extension_mandatory = "[{\"abc_route_type\": \"direct\"}, {\"abc_transfer_method\": \"qkd\"}]";
	r.extension_optional = "[{\"abc_max_age\": 30000}]";
	assert_int_equal(qw_etsi_client_key_request_json(&r, &s, &err), 0);
	o = json_loads(s, 0, NULL);
	free(s);
	assert_non_null(o);
	assert_int_equal(json_integer_value(json_object_get(o, "number")), 1);
	assert_int_equal(json_integer_value(json_object_get(o, "size")), 4096);
	assert_string_equal(json_string_value(json_array_get(
		json_object_get(o, "additional_slave_SAE_IDs"), 1)), "HIJKLMN");
	assert_string_equal(json_string_value(json_object_get(json_array_get(
		json_object_get(o, "extension_mandatory"), 0), "abc_route_type")), "direct");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(
		json_object_get(o, "extension_optional"), 0), "abc_max_age")), 30000);
	json_decref(o);

	r.extension_mandatory = "{\"abc\": 1}";
	assert_int_equal(qw_etsi_client_key_request_json(&r, &s, &err), QW_EINVAL);
	assert_null(s);
	assert_non_null(strstr(err.message, "extension_mandatory: must be a JSON array"));
	r.extension_mandatory = "[1]";
	assert_int_equal(qw_etsi_client_key_request_json(&r, &s, &err), QW_EINVAL);
	assert_non_null(strstr(err.message, "element 0 is not an object"));
	r.extension_mandatory = NULL;
	r.extension_optional = "[{";
	assert_int_equal(qw_etsi_client_key_request_json(&r, &s, &err), QW_EINVAL);
	assert_non_null(strstr(err.message, "extension_optional: not JSON"));
}

static void test_client_options(void **state)
{
	struct qw_etsi_client_opts o = {
		.base_url = "http://127.0.0.1:1", .cert_file = "c", .key_file = "k", .ca_file = "ca",
	};
	struct qw_etsi_client *c = (struct qw_etsi_client *)1;
	struct qw_etsi_error err;

	(void)state;
	assert_int_equal(qw_etsi_client_new(&o, &c, &err), QW_EINVAL);
	assert_null(c);
	assert_non_null(strstr(err.message, "https://"));
	o.base_url = "https://";
	assert_int_equal(qw_etsi_client_new(&o, &c, &err), QW_EINVAL);
	o.base_url = "https://127.0.0.1:1/";
	o.ca_file = NULL;
	assert_int_equal(qw_etsi_client_new(&o, &c, &err), QW_EINVAL);
	assert_non_null(strstr(err.message, "mutual TLS"));
	o.ca_file = "ca";
	assert_int_equal(qw_etsi_client_new(&o, &c, &err), 0);
	qw_etsi_client_free(c);
	qw_etsi_client_free(NULL);
}

/* Calls that fail before or at the transport, without a server. */
static void test_client_transport_errors(void **state)
{
	struct qw_etsi_client_opts o = {
		.base_url = "https://127.0.0.1:1", .cert_file = "/nonexistent/c",
		.key_file = "/nonexistent/k", .ca_file = "/nonexistent/ca", .timeout_ms = 3000,
	};
	struct qw_etsi_client *c;
	struct qw_etsi_error err;
	struct qw_etsi_status st;
	struct qw_etsi_keys *k;
	const char *ids[] = { "550e8400-e29b-41d4-a716-446655440000", "not-a-uuid" };
	const char *add[] = { "x" };
	struct qw_etsi_key_request r = { .additional_slaves = add, .n_additional = 1, .use_get = 1 };

	(void)state;
	assert_int_equal(qw_etsi_client_new(&o, &c, &err), 0);
	/* nothing listens on port 1: connection refused */
	assert_int_equal(qw_etsi_client_status(c, "sae-B", &st, &err), QW_EIO);
	assert_int_equal(err.http_status, 0);
	assert_non_null(strstr(err.message, "KME"));
	/* argument checks happen before any I/O */
	assert_int_equal(qw_etsi_client_status(c, "", &st, &err), QW_EINVAL);
	assert_int_equal(qw_etsi_client_get_key_with_ids(c, "sae-A", ids, 2, 0, &k, &err), QW_EINVAL);
	assert_non_null(strstr(err.message, "'not-a-uuid' is not a UUID"));
	assert_int_equal(qw_etsi_client_get_key_with_ids(c, "sae-A", ids, 1 + 0, 0, &k, &err),
			 QW_EIO);
	ids[1] = "0a782fb5-3434-48fe-aa4d-14f41d46cf92";
	assert_int_equal(qw_etsi_client_get_key_with_ids(c, "sae-A", ids, 2, 1, &k, &err), QW_EINVAL);
	assert_non_null(strstr(err.message, "clause 6.4"));
	assert_int_equal(qw_etsi_client_get_key(c, "sae-B", &r, &k, &err), QW_EINVAL);
	assert_non_null(strstr(err.message, "clause 6.2"));
	assert_null(k);
	qw_etsi_client_free(c);
}

/* ---- live: the kme.h test double ---- */

#define TMAX 64

struct tkey {
	int live;
	char id[QW_KEY_ID_STR_BYTES];
	char master[QW_KME_ID_MAX + 1], slave[QW_KME_ID_MAX + 1];
	uint8_t mat[128];
	uint32_t bits;
};

static struct tkey tkeys[TMAX];
static _Atomic uint64_t tpool_keys; /* keys left (any size) */

static int t_known(const char *sae)
{
	return !strcmp(sae, "sae-A") || !strcmp(sae, "sae-B");
}

static int t_status(void *ctx, const char *caller, const char *slave, struct qw_kme_status *o)
{
	(void)ctx;
	if (!t_known(caller))
		return QW_EPERM;
	if (!t_known(slave))
		return QW_ENOTFOUND;
	snprintf(o->source_kme_id, sizeof(o->source_kme_id), "kme-A");
	snprintf(o->target_kme_id, sizeof(o->target_kme_id), "kme-B");
	o->key_size = 256;
	o->stored_key_count = tpool_keys;
	o->max_key_count = 1000;
	o->max_key_per_request = 16;
	o->max_key_size = 1024;
	o->min_key_size = 64;
	o->max_sae_id_count = 0;
	return 0;
}

static void t_get_keys(void *ctx, const struct qw_kme_get_key_req *r, qw_kme_keys_cb cb, void *arg)
{
	struct qw_kme_key *out;
	size_t done = 0;

	(void)ctx;
	if (!t_known(r->slave_sae)) {
		cb(arg, QW_ENOTFOUND, NULL, 0);
		return;
	}
	if (r->number > tpool_keys) {
		cb(arg, QW_EAGAIN, NULL, 0);
		return;
	}
	assert_true(r->number >= 1 && r->number <= TMAX);
	out = calloc(TMAX, sizeof(*out));
	assert_non_null(out);
	for (size_t i = 0; i < TMAX && done < r->number; i++) {
		struct tkey *t = &tkeys[i];
		struct qw_uuid u;

		if (t->live)
			continue;
		t->live = 1;
		t->bits = r->size_bits;
		assert_int_equal(RAND_bytes(t->mat, (int)(t->bits / 8)), 1);
		assert_int_equal(qw_uuid_generate(&u), 0);
		qw_uuid_format(&u, t->id);
		snprintf(t->master, sizeof(t->master), "%s", r->master_sae);
		snprintf(t->slave, sizeof(t->slave), "%s", r->slave_sae);
		memcpy(out[done].key_id, t->id, sizeof(t->id));
		out[done].size_bits = t->bits;
		out[done].key = malloc(t->bits / 8);
		assert_non_null(out[done].key);
		memcpy(out[done].key, t->mat, t->bits / 8);
		done++;
	}
	assert_int_equal(done, r->number);
	tpool_keys -= r->number;
	cb(arg, 0, out, done);
}

static struct tkey *t_find(const char *id)
{
	for (int i = 0; i < TMAX; i++)
		if (tkeys[i].live && !strcmp(tkeys[i].id, id))
			return &tkeys[i];
	return NULL;
}

static void t_get_with_ids(void *ctx, const char *caller, const char *master,
			   const char *const *ids, size_t n, qw_kme_keys_cb cb, void *arg)
{
	struct tkey *found[TMAX];
	struct qw_kme_key *out;

	(void)ctx;
	if (n > TMAX) {
		cb(arg, QW_ERANGE, NULL, 0);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		found[i] = t_find(ids[i]);
		if (!found[i]) {
			cb(arg, QW_ENOTFOUND, NULL, 0);
			return;
		}
		if (strcmp(found[i]->master, master) || strcmp(found[i]->slave, caller)) {
			cb(arg, QW_EPERM, NULL, 0);
			return;
		}
	}
	out = calloc(TMAX, sizeof(*out));
	assert_non_null(out);
	for (size_t i = 0; i < n; i++) {
		const struct tkey *t = found[i];

		memcpy(out[i].key_id, t->id, sizeof(t->id));
		out[i].size_bits = t->bits;
		out[i].key = malloc(t->bits / 8);
		assert_non_null(out[i].key);
		memcpy(out[i].key, t->mat, t->bits / 8);
		found[i]->live = 0; /* delivered once (5.4 post-condition) */
	}
	cb(arg, 0, out, n);
}

static const struct qw_kme_ops tops = {
	.status = t_status,
	.get_keys = t_get_keys,
	.get_keys_with_ids = t_get_with_ids,
};

/* ---- live: server fixture ---- */

static char dir[64], other[80], url[64];
static struct event_base *base;
static struct qw_https_server *srv;
static struct qw_etsi014 *api;
static pthread_t loop_thread;

static void *loop(void *arg)
{
	(void)arg;
	event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static int issue(const char *d, enum qw_pki_kind kind, const char *id)
{
	struct qw_pki_issue_opts o = { .kind = kind, .id = id };

	return qw_pki_issue(d, &o);
}

static char *path(const char *d, const char *name)
{
	static char buf[8][160];
	static int i;

	i = (i + 1) % 8;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", d, name);
	return buf[i];
}

static int live_setup(void **state)
{
	struct qw_https_opts o = { 0 };
	int err;

	(void)state;
	strcpy(dir, "/tmp/qw-test-etsicl-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(other, sizeof(other), "%s/other", dir);
	if (qw_pki_ca_init(dir, QW_PK_ECDSA_P256, "test CA", 0) ||
	    qw_pki_ca_init(other, QW_PK_ECDSA_P256, "other CA", 0) ||
	    issue(dir, QW_PKI_NODE, "kme-A") || issue(dir, QW_PKI_SAE, "sae-A") ||
	    issue(dir, QW_PKI_SAE, "sae-B") || issue(dir, QW_PKI_SAE, "sae-C") ||
	    issue(other, QW_PKI_SAE, "sae-A"))
		return -1;
	tpool_keys = 100;
	/* As qwaved does (https.h): a client that gives up mid-reply must not
	 * kill the server's process. */
	signal(SIGPIPE, SIG_IGN);
	evthread_use_pthreads();
	base = event_base_new();
	o.cert_file = path(dir, "node-kme-A.crt");
	o.key_file = path(dir, "node-kme-A.key");
	o.ca_file = path(dir, "ca.crt");
	srv = base ? qw_https_server_new(base, &o, &err) : NULL;
	if (!srv)
		return -1;
	api = qw_etsi014_new(srv, &tops, NULL, &err);
	if (!api)
		return -1;
	/* "localhost": the node certificate's DNS SAN, so the host name check
	 * is exercised (pki.h) */
	snprintf(url, sizeof(url), "https://localhost:%u", qw_https_server_port(srv));
	return pthread_create(&loop_thread, NULL, loop, NULL);
}

static int live_teardown(void **state)
{
	(void)state;
	event_base_loopbreak(base);
	pthread_join(loop_thread, NULL);
	qw_https_server_free(srv);
	qw_etsi014_free(api);
	/* bufferevents of connections closed by evhttp_free are freed by
	 * deferred callbacks: let the (stopped) loop run them once more. */
	for (int i = 0; i < 10; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
	return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static struct qw_etsi_client *client_as(const char *pki, const char *sae, const char *ca,
					const char *kme_id)
{
	char crt[64], key[64];
	struct qw_etsi_client_opts o = { 0 };
	struct qw_etsi_client *c;
	struct qw_etsi_error err;

	snprintf(crt, sizeof(crt), "sae-%s.crt", sae);
	snprintf(key, sizeof(key), "sae-%s.key", sae);
	o.base_url = url;
	o.cert_file = path(pki, crt);
	o.key_file = path(pki, key);
	o.ca_file = ca;
	o.expect_kme_id = kme_id;
	o.timeout_ms = 5000;
	assert_int_equal(qw_etsi_client_new(&o, &c, &err), 0);
	return c;
}

static void test_live_status(void **state)
{
	struct qw_etsi_client *a = client_as(dir, "sae-A", path(dir, "ca.crt"), "kme-A");
	struct qw_etsi_status st;
	struct qw_etsi_error err;

	(void)state;
	if (qw_etsi_client_status(a, "sae-B", &st, &err))
		fail_msg("status: %s", err.message);
	assert_string_equal(st.source_kme_id, "kme-A");
	assert_string_equal(st.target_kme_id, "kme-B");
	/* the master SAE is the caller, named by its certificate */
	assert_string_equal(st.master_sae_id, "sae-A");
	assert_string_equal(st.slave_sae_id, "sae-B");
	assert_int_equal(st.key_size, 256);
	assert_int_equal(st.max_key_per_request, 16);
	assert_int_equal(st.min_key_size, 64);
	assert_int_equal(st.max_key_size, 1024);
	assert_int_equal(st.max_key_count, 1000);
	assert_int_equal(st.max_sae_id_count, 0);
	assert_true(st.stored_key_count > 0);
	qw_etsi_status_clear(&st);
	qw_etsi_client_free(a);
}

static void expect_same(const struct qw_etsi_keys *m, const struct qw_etsi_keys *s)
{
	assert_int_equal(m->n, s->n);
	for (size_t i = 0; i < m->n; i++) {
		assert_string_equal(m->keys[i].key_id, s->keys[i].key_id);
		assert_int_equal(m->keys[i].len, s->keys[i].len);
		assert_memory_equal(m->keys[i].key, s->keys[i].key, m->keys[i].len);
	}
}

static void test_live_roundtrip(void **state)
{
	struct qw_etsi_client *a = client_as(dir, "sae-A", path(dir, "ca.crt"), NULL);
	struct qw_etsi_client *b = client_as(dir, "sae-B", path(dir, "ca.crt"), "kme-A");
	struct qw_etsi_key_request rq = { .number = 3, .size_bits = 512 };
	struct qw_etsi_keys *km, *ks, *k1;
	struct qw_etsi_error err;
	const char *ids[3];

	(void)state;
	for (int use_get = 0; use_get < 2; use_get++) {
		rq.use_get = use_get;
		if (qw_etsi_client_get_key(a, "sae-B", &rq, &km, &err))
			fail_msg("get key: %d %s", err.http_status, err.message);
		assert_int_equal(km->n, 3);
		for (size_t i = 0; i < 3; i++) {
			assert_int_equal(km->keys[i].len, 64);
			ids[i] = km->keys[i].key_id;
		}
		if (qw_etsi_client_get_key_with_ids(b, "sae-A", ids, 3, 0, &ks, &err))
			fail_msg("get key with IDs: %d %s", err.http_status, err.message);
		expect_same(km, ks);
		qw_etsi_keys_free(ks);
		qw_etsi_keys_free(km);
	}
	/* empty request (GET, defaults): one key of key_size bits */
	assert_int_equal(qw_etsi_client_get_key(a, "sae-B", NULL, &km, &err), 0);
	assert_int_equal(km->n, 1);
	assert_int_equal(km->keys[0].len, 32);
	/* a single key ID by GET (clause 6.4) */
	ids[0] = km->keys[0].key_id;
	assert_int_equal(qw_etsi_client_get_key_with_ids(b, "sae-A", ids, 1, 1, &k1, &err), 0);
	expect_same(km, k1);
	/* delivered once: the second time it is gone (clause 6.4 message) */
	assert_int_equal(qw_etsi_client_get_key_with_ids(b, "sae-A", ids, 1, 0, &ks, &err),
			 QW_ENOTFOUND);
	assert_int_equal(err.http_status, 400);
	assert_string_equal(err.message, "one or more keys specified are not found on KME");
	assert_null(ks);
	qw_etsi_keys_free(k1);
	qw_etsi_keys_free(km);
	/* keep-alive: every call above went over one TLS connection each */
	assert_int_equal(qw_etsi_client_connections(a), 1);
	assert_int_equal(qw_etsi_client_connections(b), 1);
	qw_etsi_client_free(a);
	qw_etsi_client_free(b);
}

static void test_live_errors(void **state)
{
	struct qw_etsi_client *a = client_as(dir, "sae-A", path(dir, "ca.crt"), NULL);
	struct qw_etsi_client *c = client_as(dir, "sae-C", path(dir, "ca.crt"), NULL);
	struct qw_etsi_key_request rq = { .number = 1, .size_bits = 250 };
	struct qw_etsi_keys *k;
	struct qw_etsi_error err;
	const char *ids[1];

	(void)state;
	/* clause 6.2: the one message the spec fixes for sizes */
	assert_int_equal(qw_etsi_client_get_key(a, "sae-B", &rq, &k, &err), QW_EINVAL);
	assert_int_equal(err.http_status, 400);
	assert_string_equal(err.message, "size shall be a multiple of 8");
	rq.use_get = 1;
	assert_int_equal(qw_etsi_client_get_key(a, "sae-B", &rq, &k, &err), QW_EINVAL);
	assert_string_equal(err.message, "size shall be a multiple of 8");
	/* more than max_key_per_request: a 400 with the KME's reason */
	rq.size_bits = 256;
	rq.number = 17;
	assert_int_equal(qw_etsi_client_get_key(a, "sae-B", &rq, &k, &err), QW_EINVAL);
	assert_int_equal(err.http_status, 400);
	assert_true(strlen(err.message) > 0);
	/* clause 5.4: keys for sae-B are not sae-C's to take: 401 */
	rq.number = 1;
	rq.use_get = 0;
	assert_int_equal(qw_etsi_client_get_key(a, "sae-B", &rq, &k, &err), 0);
	ids[0] = k->keys[0].key_id;
	{
		struct qw_etsi_keys *kc;

		assert_int_equal(qw_etsi_client_get_key_with_ids(c, "sae-A", ids, 1, 0, &kc, &err),
				 QW_EPERM);
		assert_int_equal(err.http_status, 401);
		assert_null(kc);
	}
	qw_etsi_keys_free(k);
	/* the same connection keeps working after error answers */
	{
		struct qw_etsi_status st;

		assert_int_equal(qw_etsi_client_status(a, "sae-B", &st, &err), 0);
		qw_etsi_status_clear(&st);
	}
	assert_int_equal(qw_etsi_client_connections(a), 1);
	qw_etsi_client_free(a);
	qw_etsi_client_free(c);
}

static void test_live_tls_refusals(void **state)
{
	struct qw_etsi_client *x;
	struct qw_etsi_status st;
	struct qw_etsi_error err;

	(void)state;
	/* the KME's certificate does not chain to the CA we trust */
	x = client_as(dir, "sae-A", path(other, "ca.crt"), NULL);
	assert_int_equal(qw_etsi_client_status(x, "sae-B", &st, &err), QW_EAUTH);
	assert_int_equal(err.http_status, 0);
	assert_non_null(strstr(err.message, "KME certificate not accepted"));
	qw_etsi_client_free(x);
	/* right CA, but the certificate names another KME (clause 5.1) */
	x = client_as(dir, "sae-A", path(dir, "ca.crt"), "kme-Z");
	assert_int_equal(qw_etsi_client_status(x, "sae-B", &st, &err), QW_EAUTH);
	assert_string_equal(err.message, "KME certificate names KME 'kme-A', expected 'kme-Z'");
	qw_etsi_client_free(x);
	/* our certificate comes from a CA the KME does not trust */
	x = client_as(other, "sae-A", path(dir, "ca.crt"), NULL);
	{
		int rc = qw_etsi_client_status(x, "sae-B", &st, &err);

		if (rc != QW_EAUTH)
			fail_msg("rc %d (%d) message: %s", rc, err.http_status, err.message);
	}
	if (!strstr(err.message, "refused our client certificate"))
		fail_msg("message: %s", err.message);
	qw_etsi_client_free(x);
	/* our key file is missing */
	{
		struct qw_etsi_client_opts o = {
			.base_url = url, .cert_file = path(dir, "sae-sae-A.crt"),
			.key_file = path(dir, "missing.key"), .ca_file = path(dir, "ca.crt"),
		};

		assert_int_equal(qw_etsi_client_new(&o, &x, &err), 0);
		assert_int_equal(qw_etsi_client_status(x, "sae-B", &st, &err), QW_EIO);
		assert_non_null(strstr(err.message, "client certificate or key unusable"));
		qw_etsi_client_free(x);
	}
}

/* ---- key source (keysource.h) ---- */

static void test_source_conf(void **state)
{
	static const char good[] =
		"[link]\npeer = B\nkme_role = master\nkme_url = https://10.0.0.5:8443\n"
		"kme_cert = a.crt\nkme_key = a.key\nkme_ca = ca.crt\nkme_peer_sae = node-B\n"
		"kme_key_bits = 256\nkme_batch = 8\nkme_poll_ms = 250\nkme_id = KME-a\n";
	struct qw_config *cfg;
	struct qw_config_error cerr;
	struct qw_etsi_source_conf c;
	const struct qw_config_section *sec;
	char bad[1024];

	(void)state;
	assert_int_equal(qw_config_parse_string(good, "n.ini", &cfg, &cerr), 0);
	sec = qw_config_find(cfg, "link", NULL);
	assert_int_equal(qw_etsi_source_conf_load(cfg, sec, &c, &cerr), 0);
	assert_int_equal(c.role, QW_ETSI_SOURCE_MASTER);
	assert_string_equal(c.client.base_url, "https://10.0.0.5:8443");
	assert_string_equal(c.client.expect_kme_id, "KME-a");
	assert_string_equal(c.peer_sae, "node-B");
	assert_int_equal(c.key_bits, 256);
	assert_int_equal(c.batch, 8);
	assert_int_equal(c.poll_ms, 250);
	assert_int_equal(c.max_backoff_ms, 30000); /* default */
	assert_int_equal(c.first_block_id, 1);
	/* the node's check_keys list covers every key read */
	{
		static const char *const extra[] = { "peer" };
		const char *allowed[32];
		size_t n = 0;

		allowed[n++] = extra[0];
		for (size_t i = 0; qw_etsi_source_conf_keys[i]; i++)
			allowed[n++] = qw_etsi_source_conf_keys[i];
		allowed[n] = NULL;
		assert_int_equal(qw_config_check_keys(sec, allowed, &cerr), 0);
	}
	qw_config_free(cfg);

	struct {
		const char *from, *to, *msg;
		int code;
	} cases[] = {
		{ "kme_role = master\n", "", "n.ini:1: missing key 'kme_role' in [link]", QW_ENOTFOUND },
		{ "kme_role = master", "kme_role = both", "n.ini:3: key 'kme_role' in [link]: 'both' "
		  "is not one of master, slave", QW_EINVAL },
		{ "kme_key_bits = 256", "kme_key_bits = 260", "n.ini:9: key 'kme_key_bits' in [link]: 260 is not a multiple of 8", QW_EINVAL },
		{ "kme_batch = 8", "kme_batch = 0", "n.ini:10:", QW_ERANGE },
		{ "https://10.0.0.5:8443", "http://10.0.0.5:8443", "n.ini:4:", QW_EINVAL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *p = strstr(good, cases[i].from);
		int rc;

		assert_non_null(p);
		snprintf(bad, sizeof(bad), "%.*s%s%s", (int)(p - good), good, cases[i].to,
			 p + strlen(cases[i].from));
		assert_int_equal(qw_config_parse_string(bad, "n.ini", &cfg, &cerr), 0);
		rc = qw_etsi_source_conf_load(cfg, qw_config_find(cfg, "link", NULL), &c, &cerr);
		if (rc != cases[i].code || !strstr(cerr.msg, cases[i].msg))
			fail_msg("case %zu: rc %d, '%s'", i, rc, cerr.msg);
		qw_config_free(cfg);
	}
}

#define MAXB 16

struct tsink {
	pthread_mutex_t mu;
	size_t nblocks;
	struct {
		uint64_t id;
		size_t nbits;
		uint8_t bits[256];
		char ids[8][QW_UUID_STR_BYTES];
		size_t nids;
		uint32_t key_bits;
	} b[MAXB];
	size_t ndropped;
	uint64_t dropped_id[MAXB];
	char dropped_reason[MAXB][160];
	int last_state, nstates;
	char state_reason[256];
	size_t want_blocks; /* want() says no once this many arrived */
};

static void ts_deliver(void *ctx, uint64_t block_id, const struct qw_bitvec *key,
		       const struct qw_key_source_ids *ids)
{
	struct tsink *t = ctx;

	pthread_mutex_lock(&t->mu);
	if (t->nblocks < MAXB) {
		size_t i = t->nblocks++;

		t->b[i].id = block_id;
		t->b[i].nbits = key->nbits;
		assert_true(key->nbits <= 8 * sizeof(t->b[i].bits));
		qw_bitvec_to_bytes(key, t->b[i].bits);
		assert_non_null(ids);
		assert_true(ids->n <= 8);
		t->b[i].nids = ids->n;
		t->b[i].key_bits = ids->key_bits;
		memcpy(t->b[i].ids, ids->key_ids, ids->n * QW_UUID_STR_BYTES);
	}
	pthread_mutex_unlock(&t->mu);
}

static void ts_dropped(void *ctx, uint64_t block_id, const char *reason)
{
	struct tsink *t = ctx;

	pthread_mutex_lock(&t->mu);
	if (t->ndropped < MAXB) {
		t->dropped_id[t->ndropped] = block_id;
		snprintf(t->dropped_reason[t->ndropped], sizeof(t->dropped_reason[0]), "%s", reason);
		t->ndropped++;
	}
	pthread_mutex_unlock(&t->mu);
}

static void ts_state(void *ctx, int err, const char *reason)
{
	struct tsink *t = ctx;

	pthread_mutex_lock(&t->mu);
	t->last_state = err;
	t->nstates++;
	snprintf(t->state_reason, sizeof(t->state_reason), "%s", reason);
	pthread_mutex_unlock(&t->mu);
}

static int ts_want(void *ctx)
{
	struct tsink *t = ctx;
	int w;

	pthread_mutex_lock(&t->mu);
	w = t->nblocks < t->want_blocks;
	pthread_mutex_unlock(&t->mu);
	return w;
}

static struct tsink *tsink_new(size_t want_blocks)
{
	struct tsink *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	pthread_mutex_init(&t->mu, NULL);
	t->want_blocks = want_blocks;
	t->last_state = 1; /* none yet */
	return t;
}

static void tsink_free(struct tsink *t)
{
	pthread_mutex_destroy(&t->mu);
	free(t);
}

/* Wait (up to 10 s) until cond(t) holds. */
static int wait_for(struct tsink *t, int (*cond)(struct tsink *, size_t), size_t arg)
{
	for (int i = 0; i < 1000; i++) {
		int ok;

		pthread_mutex_lock(&t->mu);
		ok = cond(t, arg);
		pthread_mutex_unlock(&t->mu);
		if (ok)
			return 1;
		usleep(10000);
	}
	return 0;
}

static int has_blocks(struct tsink *t, size_t n)
{
	return t->nblocks >= n;
}

static int has_dropped(struct tsink *t, size_t n)
{
	return t->ndropped >= n;
}

static int has_state(struct tsink *t, size_t err)
{
	return t->last_state == (int)(intptr_t)err;
}

/* The strings of a block's IDs as the fetch API takes them. */
static const char *const *id_ptrs(char (*ids)[QW_UUID_STR_BYTES], size_t n)
{
	static const char *p[2][8];
	static int k;

	k ^= 1;
	for (size_t i = 0; i < n && i < 8; i++)
		p[k][i] = ids[i];
	return p[k];
}

static struct qw_key_source *source_as(const char *sae, enum qw_etsi_source_role role,
				       const char *peer, struct tsink *t, uint32_t retry_ms)
{
	char crt[64], key[64];
	struct qw_etsi_source_conf c;
	struct qw_key_sink sink = {
		.ctx = t, .deliver = ts_deliver, .dropped = ts_dropped, .state = ts_state,
		.want = ts_want,
	};
	struct qw_key_source *s;
	int err;

	qw_etsi_source_conf_default(&c);
	snprintf(crt, sizeof(crt), "sae-%s.crt", sae);
	snprintf(key, sizeof(key), "sae-%s.key", sae);
	c.role = role;
	c.client.base_url = url;
	c.client.cert_file = path(dir, crt);
	c.client.key_file = path(dir, key);
	c.client.ca_file = path(dir, "ca.crt");
	c.client.expect_kme_id = "kme-A";
	c.peer_sae = peer;
	c.key_bits = 128;
	c.batch = 4;
	c.poll_ms = 10;
	c.max_backoff_ms = 40;
	c.fetch_retry_ms = retry_ms;
	c.first_block_id = 100;
	s = qw_etsi_source_new(&c, &sink, &err);
	assert_non_null(s);
	assert_string_equal(s->kind, "etsi014");
	return s;
}

/* Master pulls blocks, the test carries (block id, key IDs) to the slave
 * as the KM link would, the slave fetches: identical blocks at both ends. */
static void test_live_source_pair(void **state)
{
	struct tsink *tm = tsink_new(3), *ts = tsink_new(MAXB);
	struct qw_key_source *m = source_as("sae-A", QW_ETSI_SOURCE_MASTER, "sae-B", tm, 5000);
	struct qw_key_source *sl = source_as("sae-B", QW_ETSI_SOURCE_SLAVE, "sae-A", ts, 5000);
	struct qw_etsi_source_stats st;

	(void)state;
	tpool_keys = 1000;
	/* a slave that is not running takes no work */
	{
		const char *one[] = { "6ba7b810-9dad-11d1-80b4-00c04fd430c8" };

		assert_int_equal(qw_etsi_source_fetch(sl, 1, one, 1), QW_ESTATE);
		/* the master is no slave */
		assert_int_equal(qw_etsi_source_fetch(m, 1, one, 1), QW_EINVAL);
	}
	assert_int_equal(qw_key_source_start(m), 0);
	assert_int_equal(qw_key_source_start(m), QW_ESTATE);
	assert_int_equal(qw_key_source_start(sl), 0);
	assert_true(wait_for(tm, has_blocks, 3));
	/* back-pressure: want() said no after 3 blocks */
	usleep(100000);
	qw_key_source_stop(m);
	assert_int_equal(tm->nblocks, 3);
	assert_int_equal(tm->last_state, 0);
	assert_string_equal(tm->state_reason, "KME answers");
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(tm->b[i].id, 100 + i);
		assert_int_equal(tm->b[i].nbits, 4 * 128);
		assert_int_equal(tm->b[i].nids, 4);
		assert_int_equal(tm->b[i].key_bits, 128);
		assert_int_equal(qw_etsi_source_fetch(sl, tm->b[i].id,
						      id_ptrs(tm->b[i].ids, 8),
						      tm->b[i].nids), 0);
	}
	assert_true(wait_for(ts, has_blocks, 3));
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(ts->b[i].id, tm->b[i].id);
		assert_int_equal(ts->b[i].nbits, tm->b[i].nbits);
		assert_memory_equal(ts->b[i].bits, tm->b[i].bits, tm->b[i].nbits / 8);
		assert_memory_equal(ts->b[i].ids, tm->b[i].ids, sizeof(tm->b[i].ids[0]) * 4);
	}
	/* the same IDs again: the KME delivered them already -> dropped when
	 * the retry time is over (here 5 s would be long: use a new slave) */
	qw_etsi_source_stats(m, &st);
	assert_int_equal(st.blocks, 3);
	assert_int_equal(st.keys, 12);
	assert_int_equal(st.bits, 12 * 128);
	assert_int_equal(st.failures, 0);
	qw_etsi_source_stats(sl, &st);
	assert_int_equal(st.blocks, 3);
	assert_int_equal(st.queued, 0);
	assert_int_equal(st.dropped, 0);
	assert_true(st.up);
	qw_key_source_free(m);
	qw_key_source_free(sl);
	tsink_free(tm);
	tsink_free(ts);
}

/* 503 (no key) backs off and recovers; state changes reach the sink. */
static void test_live_source_backoff(void **state)
{
	struct tsink *tm = tsink_new(2);
	struct qw_key_source *m = source_as("sae-A", QW_ETSI_SOURCE_MASTER, "sae-B", tm, 1000);
	struct qw_etsi_source_stats st;
	struct timespec t0, t1;

	(void)state;
	tpool_keys = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(qw_key_source_start(m), 0);
	assert_true(wait_for(tm, has_state, (size_t)(intptr_t)QW_EAGAIN));
	assert_non_null(strstr(tm->state_reason, "KME answered 503"));
	for (int i = 0; i < 500; i++) {
		qw_etsi_source_stats(m, &st);
		if (st.busy >= 3)
			break;
		usleep(10000);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(st.busy >= 3);
	assert_int_equal(st.blocks, 0);
	assert_int_equal(st.last_error, QW_EAGAIN);
	/* three calls: at once, after 2 x poll_ms (20 ms), after max_backoff_ms
	 * (40 ms): at least 60 ms, where fixed polling would take 20 ms */
	assert_true((t1.tv_sec - t0.tv_sec) * 1000.0 + (t1.tv_nsec - t0.tv_nsec) / 1e6 >= 60.0);
	/* one state change for the whole run of 503s */
	assert_int_equal(tm->nstates, 1);
	tpool_keys = 1000;
	assert_true(wait_for(tm, has_blocks, 2));
	assert_int_equal(tm->last_state, 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	qw_key_source_stop(m);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* stop does not wait for a poll interval or a timeout */
	assert_true(t1.tv_sec - t0.tv_sec < 2);
	/* restart after stop */
	assert_int_equal(qw_key_source_start(m), 0);
	qw_key_source_free(m);
	/* these blocks' keys were never fetched: forget them in the double */
	tsink_free(tm);
}

/* Slave fetches that cannot succeed end in dropped(): unknown IDs after
 * the retry time, a 401 at once, queued ones when stopped. */
static void test_live_source_drops(void **state)
{
	struct tsink *ta = tsink_new(1), *tc = tsink_new(MAXB), *tb = tsink_new(MAXB);
	struct qw_key_source *m = source_as("sae-A", QW_ETSI_SOURCE_MASTER, "sae-B", ta, 1000);
	struct qw_key_source *c = source_as("sae-C", QW_ETSI_SOURCE_SLAVE, "sae-A", tc, 5000);
	struct qw_key_source *b = source_as("sae-B", QW_ETSI_SOURCE_SLAVE, "sae-A", tb, 150);
	char unknown[1][QW_UUID_STR_BYTES] = { "6ba7b810-9dad-11d1-80b4-00c04fd430c8" };
	char notuuid[1][QW_UUID_STR_BYTES] = { "not a uuid" };
	struct qw_etsi_source_stats st;

	(void)state;
	tpool_keys = 1000;
	assert_int_equal(qw_key_source_start(m), 0);
	assert_true(wait_for(ta, has_blocks, 1));
	qw_key_source_stop(m);
	assert_int_equal(qw_key_source_start(c), 0);
	assert_int_equal(qw_key_source_start(b), 0);
	assert_int_equal(qw_etsi_source_fetch(b, 7, id_ptrs(notuuid, 1), 1), QW_EINVAL);
	/* sae-C is not the slave of these keys: 401, dropped at once */
	assert_int_equal(qw_etsi_source_fetch(c, ta->b[0].id,
					      id_ptrs(ta->b[0].ids, 8),
					      ta->b[0].nids), 0);
	assert_true(wait_for(tc, has_dropped, 1));
	assert_int_equal(tc->dropped_id[0], ta->b[0].id);
	assert_non_null(strstr(tc->dropped_reason[0], "KME answered 401"));
	/* unknown IDs: retried while the KMEs might still synchronise, then dropped */
	assert_int_equal(qw_etsi_source_fetch(b, 55, id_ptrs(unknown, 1),
					      1), 0);
	assert_true(wait_for(tb, has_dropped, 1));
	assert_int_equal(tb->dropped_id[0], 55);
	assert_string_equal(tb->dropped_reason[0],
			    "KME answered 400: one or more keys specified are not found on KME");
	qw_etsi_source_stats(b, &st);
	assert_true(st.requests >= 2); /* retried */
	assert_int_equal(st.dropped, 1);
	/* the real slave still gets the keys sae-C could not take */
	assert_int_equal(qw_etsi_source_fetch(b, ta->b[0].id,
					      id_ptrs(ta->b[0].ids, 8),
					      ta->b[0].nids), 0);
	assert_true(wait_for(tb, has_blocks, 1));
	assert_memory_equal(tb->b[0].bits, ta->b[0].bits, ta->b[0].nbits / 8);
	/* queued work is answered when the source stops */
	assert_int_equal(qw_etsi_source_fetch(c, 77, id_ptrs(unknown, 1),
					      1), 0);
	assert_int_equal(qw_etsi_source_fetch(c, 78, id_ptrs(unknown, 1),
					      1), 0);
	usleep(50000);
	qw_key_source_stop(c);
	assert_int_equal(tc->ndropped, 3);
	assert_int_equal(tc->dropped_id[1], 77);
	assert_int_equal(tc->dropped_id[2], 78);
	assert_string_equal(tc->dropped_reason[2], "source stopped");
	qw_key_source_free(m);
	qw_key_source_free(c);
	qw_key_source_free(b);
	tsink_free(ta);
	tsink_free(tb);
	tsink_free(tc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_example),
		cmocka_unit_test(test_status_extension_kept),
		cmocka_unit_test(test_status_malformed),
		cmocka_unit_test(test_keys_example),
		cmocka_unit_test(test_keys_extensions),
		cmocka_unit_test(test_keys_malformed),
		cmocka_unit_test(test_bad_base64_not_quoted),
		cmocka_unit_test(test_http_errors),
		cmocka_unit_test(test_url),
		cmocka_unit_test(test_key_request_json),
		cmocka_unit_test(test_client_options),
		cmocka_unit_test(test_client_transport_errors),
		cmocka_unit_test(test_source_conf),
	};

	const struct CMUnitTest live[] = {
		cmocka_unit_test(test_live_status),
		cmocka_unit_test(test_live_roundtrip),
		cmocka_unit_test(test_live_errors),
		cmocka_unit_test(test_live_tls_refusals),
		cmocka_unit_test(test_live_source_pair),
		cmocka_unit_test(test_live_source_backoff),
		cmocka_unit_test(test_live_source_drops),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);

	return failed + cmocka_run_group_tests_name("live", live, live_setup, live_teardown);
}
