/* ETSI GS QKD 014 client: parsing of Status, Key container and Error
 * bodies (the examples of clauses 6.1, 6.3, 6.5 and malformed variants),
 * URL building and escaping, Key request bodies, option checks, and
 * transport errors without a server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "qwave/encoding.h"
#include "qwave/etsi014_client.h"

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
}

static void test_bad_base64_not_quoted(void **state)
{
	static const char body[] =
		"{\"keys\": [{\"key_ID\": \"550e8400-e29b-41d4-a716-446655440000\","
		" \"key\": \"SECRETSECRET*===\"}]}";
	struct qw_etsi_keys *k;
	struct qw_etsi_error err;

	(void)state;
	assert_int_equal(qw_etsi_client_parse_keys(body, strlen(body), &k, &err), QW_EPROTO);
	assert_null(strstr(err.message, "SECRET"));
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
