/* INI configuration: sections in order (repeats kept apart), line numbers
 * in every error, typed getters with range checks, typo detection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "qwave/config.h"
#include "qwave/km.h"

static const char good[] =
	"# qwave node configuration\n"          /* 1 */
	"; another comment\n"                   /* 2 */
	"[node]\n"                              /* 3 */
	"name = alice\n"                        /* 4 */
	"port = 8443\n"                         /* 5 */
	"qber_max = 0.11\n"                     /* 6 */
	"tls = yes\n"                           /* 7 */
	"\n"                                    /* 8 */
	"[link]\n"                              /* 9 */
	"peer = bob\n"                          /* 10 */
	"distance_km = 25\n"                    /* 11 */
	"[link]\n"                              /* 12 */
	"  peer:carol   ; inline comment\n"     /* 13 */
	"distance_km=40\n"                      /* 14 */
	"\t[link]\n"                            /* 15 */
	"[api]\n";                              /* 16 */

static struct qw_config *parse_ok(const char *text, const char *name)
{
	struct qw_config *cfg = NULL;
	struct qw_config_error err = { "", -1 };

	assert_int_equal(qw_config_parse_string(text, name, &cfg, &err), 0);
	assert_non_null(cfg);
	return cfg;
}

static void test_good_file(void **state)
{
	struct qw_config *cfg = parse_ok(good, "node.ini");
	const struct qw_config_section *s;
	const char *k, *v;
	int line;

	(void)state;
	assert_string_equal(qw_config_source(cfg), "node.ini");
	assert_int_equal(qw_config_nsections(cfg), 5);
	s = qw_config_section_at(cfg, 0);
	assert_string_equal(qw_config_section_name(s), "node");
	assert_int_equal(qw_config_section_line(s), 3);
	assert_int_equal(qw_config_section_nkeys(s), 4);
	qw_config_section_entry(s, 0, &k, &v, &line);
	assert_string_equal(k, "name");
	assert_string_equal(v, "alice");
	assert_int_equal(line, 4);
	qw_config_section_entry(s, 3, &k, &v, &line);
	assert_string_equal(k, "tls");
	assert_string_equal(v, "yes");
	assert_int_equal(line, 7);
	assert_string_equal(qw_config_section_get(s, "port", &line), "8443");
	assert_int_equal(line, 5);
	assert_null(qw_config_section_get(s, "peer", &line));
	assert_int_equal(line, 0);
	assert_string_equal(qw_config_get(cfg, "node", "name"), "alice");
	assert_string_equal(qw_config_get(cfg, "link", "peer"), "bob");
	assert_null(qw_config_get(cfg, "nosuch", "name"));
	assert_null(qw_config_get(cfg, "node", "nosuch"));
	/* an empty section at the end is still there, with its line */
	s = qw_config_section_at(cfg, 4);
	assert_string_equal(qw_config_section_name(s), "api");
	assert_int_equal(qw_config_section_line(s), 16);
	assert_int_equal(qw_config_section_nkeys(s), 0);
	qw_config_free(cfg);
	qw_config_free(NULL);
}

static void test_repeated_sections(void **state)
{
	static const char *const peers[] = { "bob", "carol", NULL };
	static const int lines[] = { 9, 12, 15 };
	struct qw_config *cfg = parse_ok(good, NULL);
	const struct qw_config_section *s;
	size_t i = 0;

	(void)state;
	assert_string_equal(qw_config_source(cfg), "<string>");
	for (s = qw_config_find(cfg, "link", NULL); s; s = qw_config_find(cfg, "link", s), i++) {
		const char *peer = qw_config_section_get(s, "peer", NULL);

		assert_true(i < 3);
		assert_int_equal(qw_config_section_line(s), lines[i]);
		if (peers[i]) {
			assert_non_null(peer);
			/* "key: value" and the inline comment are handled */
			assert_string_equal(peer, peers[i]);
		} else {
			/* the third [link] (indented header) has no keys */
			assert_null(peer);
			assert_int_equal(qw_config_section_nkeys(s), 0);
		}
	}
	assert_int_equal(i, 3);
	s = qw_config_find(cfg, "link", qw_config_section_at(cfg, 1));
	assert_int_equal(qw_config_section_line(s), 12);
	assert_string_equal(qw_config_section_get(s, "distance_km", NULL), "40");
	qw_config_free(cfg);
}

static void expect_parse_error(const char *text, int line, const char *msg)
{
	struct qw_config *cfg = (struct qw_config *)&cfg;
	struct qw_config_error err = { "", -1 };

	assert_int_equal(qw_config_parse_string(text, "bad.ini", &cfg, &err), QW_EPARSE);
	assert_null(cfg);
	assert_int_equal(err.line, line);
	assert_string_equal(err.msg, msg);
}

static void test_syntax_errors(void **state)
{
	(void)state;
	expect_parse_error("[node]\nname = a\n\n; fine\nthis line has no equals sign\nport = 1\n", 5,
			   "bad.ini:5: syntax error: expected [section], key = value or a comment");
	expect_parse_error("[node\nname = a\n", 1,
			   "bad.ini:1: syntax error: expected [section], key = value or a comment");
	/* the first of several errors, with CRLF line ends */
	expect_parse_error("[a]\r\nx = 1\r\n= no key\r\n[b\r\n", 3,
			   "bad.ini:3: syntax error: no key before '='");
	expect_parse_error("[a]\r\nx = 1\r\n\r\n[b\r\n= no key\r\n", 4,
			   "bad.ini:4: syntax error: expected [section], key = value or a comment");
	/* over-long line: reported, not split into two lines */
	{
		char text[600];

		snprintf(text, sizeof(text), "[a]\nx = 1\nkey = %0450d\ny = 2\n", 0);
		struct qw_config *cfg = NULL;
		struct qw_config_error err = { "", -1 };

		assert_int_equal(qw_config_parse_string(text, "bad.ini", &cfg, &err), QW_EPARSE);
		assert_null(cfg);
		assert_int_equal(err.line, 3);
		assert_non_null(strstr(err.msg, "bad.ini:3: line longer than"));
	}
	/* a NULL err is allowed */
	{
		struct qw_config *cfg = NULL;

		assert_int_equal(qw_config_parse_string("oops\n", NULL, &cfg, NULL), QW_EPARSE);
		assert_null(cfg);
	}
}

static void test_bom_and_global_keys(void **state)
{
	struct qw_config *cfg =
		parse_ok("\xEF\xBB\xBF" "debug = 1\n[node]\nname = x\n", "g.ini");
	const struct qw_config_section *s = qw_config_section_at(cfg, 0);
	static const char *const allowed[] = { "node", NULL };
	struct qw_config_error err;

	(void)state;
	assert_int_equal(qw_config_nsections(cfg), 2);
	assert_string_equal(qw_config_section_name(s), "");
	assert_int_equal(qw_config_section_line(s), 1);
	assert_string_equal(qw_config_get(cfg, "", "debug"), "1");
	assert_string_equal(qw_config_get(cfg, "node", "name"), "x");
	assert_int_equal(qw_config_check_sections(cfg, allowed, &err), QW_EINVAL);
	assert_int_equal(err.line, 1);
	assert_string_equal(err.msg, "g.ini:1: key 'debug' before any [section]");
	qw_config_free(cfg);
}

static void test_typed_getters(void **state)
{
	static const char text[] =
		"[node]\n"            /* 1 */
		"port = 8443\n"       /* 2 */
		"big = 70000\n"       /* 3 */
		"word = http\n"       /* 4 */
		"neg = -5\n"          /* 5 */
		"huge = 99999999999999999999999\n" /* 6 */
		"ratio = 1e-3\n"      /* 7 */
		"nan = nan\n"         /* 8 */
		"hexf = 0x1p3\n"      /* 9 */
		"trail = 12abc\n"     /* 10 */
		"flag = off\n"        /* 11 */
		"maybe = maybe\n"     /* 12 */
		"empty =\n"           /* 13 */
		"inf = inf\n";        /* 14 */
	struct qw_config *cfg = parse_ok(text, "node.ini");
	const struct qw_config_section *s = qw_config_find(cfg, "node", NULL);
	struct qw_config_error err;
	int64_t i64;
	uint64_t u64;
	double d;
	int b;
	const char *str;

	(void)state;
	i64 = 7;
	assert_int_equal(qw_config_get_int(s, "port", 1, 65535, &i64, &err), 0);
	assert_int_equal(i64, 8443);
	/* absent: the default in *out stays */
	i64 = 7;
	assert_int_equal(qw_config_get_int(s, "absent", 1, 65535, &i64, &err), 0);
	assert_int_equal(i64, 7);

	assert_int_equal(qw_config_get_int(s, "big", 1, 65535, &i64, &err), QW_ERANGE);
	assert_int_equal(i64, 7);
	assert_int_equal(err.line, 3);
	assert_string_equal(err.msg, "node.ini:3: key 'big' in [node]: 70000 is out of range: "
				     "expected a number between 1 and 65535");
	assert_int_equal(qw_config_get_int(s, "word", 1, 65535, &i64, &err), QW_EPARSE);
	assert_int_equal(err.line, 4);
	assert_string_equal(err.msg, "node.ini:4: key 'word' in [node]: 'http' is not a number: "
				     "expected a number between 1 and 65535");
	assert_int_equal(qw_config_get_int(s, "trail", 0, 100, &i64, &err), QW_EPARSE);
	assert_int_equal(err.line, 10);
	assert_int_equal(qw_config_get_int(s, "empty", 0, 100, &i64, &err), QW_EPARSE);
	assert_int_equal(err.line, 13);
	assert_int_equal(qw_config_get_int(s, "huge", INT64_MIN, INT64_MAX, &i64, &err), QW_ERANGE);
	assert_int_equal(err.line, 6);
	assert_int_equal(qw_config_get_int(s, "neg", -10, 10, &i64, &err), 0);
	assert_int_equal(i64, -5);
	assert_int_equal(qw_config_get_int(s, "neg", 0, 10, &i64, &err), QW_ERANGE);

	u64 = 3;
	assert_int_equal(qw_config_get_uint(s, "port", 0, UINT64_MAX, &u64, &err), 0);
	assert_int_equal(u64, 8443);
	/* strtoull would wrap "-5"; it must be refused */
	assert_int_equal(qw_config_get_uint(s, "neg", 0, UINT64_MAX, &u64, &err), QW_EPARSE);
	assert_int_equal(err.line, 5);
	assert_int_equal(u64, 8443);
	assert_int_equal(qw_config_get_uint(s, "huge", 0, UINT64_MAX, &u64, &err), QW_ERANGE);
	assert_int_equal(qw_config_get_uint(s, "big", 0, 1000, &u64, &err), QW_ERANGE);
	assert_string_equal(err.msg, "node.ini:3: key 'big' in [node]: 70000 is out of range: "
				     "expected a number between 0 and 1000");

	d = -1;
	assert_int_equal(qw_config_get_double(s, "ratio", 0, 0.5, &d, &err), 0);
	assert_true(d == 1e-3);
	assert_int_equal(qw_config_get_double(s, "port", 0, 0.5, &d, &err), QW_ERANGE);
	assert_string_equal(err.msg, "node.ini:2: key 'port' in [node]: 8443 is out of range: "
				     "expected a number between 0 and 0.5");
	assert_int_equal(qw_config_get_double(s, "nan", 0, 1, &d, &err), QW_EPARSE);
	assert_int_equal(err.line, 8);
	assert_int_equal(qw_config_get_double(s, "inf", -1e300, 1e300, &d, &err), QW_EPARSE);
	assert_int_equal(qw_config_get_double(s, "hexf", 0, 100, &d, &err), QW_EPARSE);
	assert_int_equal(qw_config_get_double(s, "trail", 0, 100, &d, &err), QW_EPARSE);
	assert_int_equal(qw_config_get_double(s, "word", 0, 100, &d, &err), QW_EPARSE);
	assert_true(d == 1e-3);

	b = 5;
	assert_int_equal(qw_config_get_bool(s, "flag", &b, &err), 0);
	assert_int_equal(b, 0);
	assert_int_equal(qw_config_get_bool(s, "absent", &b, &err), 0);
	assert_int_equal(b, 0);
	assert_int_equal(qw_config_get_bool(s, "maybe", &b, &err), QW_EPARSE);
	assert_int_equal(err.line, 12);
	assert_string_equal(err.msg, "node.ini:12: key 'maybe' in [node]: 'maybe' is not a boolean: "
				     "expected true or false");

	assert_int_equal(qw_config_require(s, "port", &str, &err), 0);
	assert_string_equal(str, "8443");
	assert_int_equal(qw_config_require(s, "peer", &str, &err), QW_ENOTFOUND);
	assert_int_equal(err.line, 1);
	assert_string_equal(err.msg, "node.ini:1: missing key 'peer' in [node]");
	qw_config_free(cfg);
}

static void test_unknown_keys(void **state)
{
	static const char text[] =
		"[api]\n"          /* 1 */
		"port = 1\n"       /* 2 */
		"listen = ::1\n"   /* 3 */
		"prot = 2\n"       /* 4 */
		"[link]\n"         /* 5 */
		"peer = b\n"       /* 6 */
		"rate = 1\n"       /* 7 */
		"peer = c\n"       /* 8 */
		"[lnik]\n";        /* 9 */
	static const char *const api_keys[] = { "port", "listen", NULL };
	static const char *const link_keys[] = { "peer", "rate", NULL };
	static const char *const sections[] = { "api", "link", NULL };
	static const char *const sections2[] = { "api", "link", "lnik", NULL };
	struct qw_config *cfg = parse_ok(text, "n.ini");
	const struct qw_config_section *api = qw_config_find(cfg, "api", NULL);
	const struct qw_config_section *link = qw_config_find(cfg, "link", NULL);
	struct qw_config_error err;

	(void)state;
	assert_int_equal(qw_config_check_keys(api, api_keys, &err), QW_EINVAL);
	assert_int_equal(err.line, 4);
	assert_string_equal(err.msg, "n.ini:4: unknown key 'prot' in [api]");
	assert_int_equal(qw_config_check_keys(link, link_keys, &err), QW_EINVAL);
	assert_int_equal(err.line, 8);
	assert_string_equal(err.msg, "n.ini:8: key 'peer' in [link] repeated (first at line 6)");
	/* the last of a repeated key wins for lookups */
	assert_string_equal(qw_config_section_get(link, "peer", NULL), "c");
	assert_int_equal(qw_config_check_sections(cfg, sections, &err), QW_EINVAL);
	assert_int_equal(err.line, 9);
	assert_string_equal(err.msg, "n.ini:9: unknown section [lnik]");
	assert_int_equal(qw_config_check_sections(cfg, sections2, &err), 0);
	assert_int_equal(qw_config_check_keys(qw_config_find(cfg, "lnik", NULL), link_keys, &err), 0);
	qw_config_free(cfg);
}

static void test_load_file(void **state)
{
	char path[] = "/tmp/qw_test_config_XXXXXX";
	struct qw_config *cfg = NULL;
	struct qw_config_error err;
	int fd = mkstemp(path);
	FILE *f;

	(void)state;
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	assert_int_equal(fputs(good, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(qw_config_load(path, &cfg, &err), 0);
	assert_string_equal(qw_config_source(cfg), path);
	assert_string_equal(qw_config_get(cfg, "node", "name"), "alice");
	assert_int_equal(qw_config_nsections(cfg), 5);
	qw_config_free(cfg);

	/* a NUL byte in the file is an error on its line, not a silent end */
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite("[a]\nx = 1\ny = \0z\nw = 2\n", 1, 23, f), 23);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(qw_config_load(path, &cfg, &err), QW_EPARSE);
	assert_null(cfg);
	assert_int_equal(err.line, 3);
	assert_non_null(strstr(err.msg, ":3: NUL byte"));

	/* a file without a trailing newline, errors counted to the end */
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fputs("[a]\nx = 1\n\n\nbroken", f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(qw_config_load(path, &cfg, &err), QW_EPARSE);
	assert_int_equal(err.line, 5);

	assert_int_equal(unlink(path), 0);
	assert_int_equal(qw_config_load(path, &cfg, &err), QW_EIO);
	assert_null(cfg);
	assert_int_equal(err.line, 0);
	assert_non_null(strstr(err.msg, "cannot open"));
}

/* ---- the node configuration's [routing], [relay] and [policy] --------- */

#define NODE_HEAD "[node]\nid = a\ndata_dir = x\n" /* lines 1-3 */

static void expect_node_error(const char *text, int code, const char *msg)
{
	struct qw_config *cfg = NULL;
	struct qw_config_error e = { "", -1 };
	struct qw_km_conf c;

	assert_int_equal(qw_config_parse_string(text, "n.conf", &cfg, &e), 0);
	assert_int_equal(qw_km_conf_load(cfg, &c, &e), code);
	if (!strstr(e.msg, msg))
		fail_msg("expected '%s' in '%s'", msg, e.msg);
	qw_km_conf_clear(&c);
	qw_config_free(cfg);
}

static void test_routing_sections(void **state)
{
	struct qw_config *cfg = NULL;
	struct qw_config_error e;
	struct qw_km_conf c;

	(void)state;
	/* defaults (docs/relay-routing.md): refresh 1 s, age 4 s, heartbeat
	 * 500 ms, dead after 1.5 s, relay timeout = request timeout */
	assert_int_equal(qw_config_parse_string(NODE_HEAD "request_timeout_ms = 3000\n", "n.conf",
						&cfg, &e), 0);
	assert_int_equal(qw_km_conf_load(cfg, &c, &e), 0);
	assert_int_equal(c.routing.refresh_ms, 1000);
	assert_int_equal(c.routing.max_age_ms, 4000);
	assert_int_equal(c.routing.heartbeat_ms, 500);
	assert_int_equal(c.routing.dead_ms, 1500);
	assert_int_equal(c.relay.rekey_every, 256);
	assert_true(c.relay.batch_target == 0.95);
	assert_int_equal(c.relay.batch_wait_ms, 20);
	assert_int_equal(c.relay.timeout_ms, 3000);
	assert_int_equal(c.relay.key_lifetime_s, 3600);
	assert_int_equal(c.policy_default_allow, 1);
	assert_int_equal(c.npolicy_rules, 0);
	qw_km_conf_clear(&c);
	qw_config_free(cfg);

	assert_int_equal(qw_config_parse_string(
		NODE_HEAD
		"[routing]\nrefresh_ms = 200\nmax_age_ms = 900\nlow_pool_bits = 4096\n"   /* 4-7 */
		"heartbeat_ms = 100\ndead_ms = 300\n"                                       /* 8-9 */
		"[relay]\nrekey_every = 16\nbatch_target = 0.9\nbatch_wait_ms = 5\n"      /* 10-13 */
		"timeout_ms = 1500\nkey_lifetime_s = 2\n"                                  /* 14-15 */
		"[policy]\nrule = deny bank-*.test -> *\ndefault = deny\n"                 /* 16-18 */
		"rule = allow bank-* <-> bank-*\nrule = allow meter-* -> ksc\n",           /* 19-20 */
		"n.conf", &cfg, &e), 0);
	assert_int_equal(qw_km_conf_load(cfg, &c, &e), 0);
	assert_int_equal(c.routing.refresh_ms, 200);
	assert_int_equal(c.routing.max_age_ms, 900);
	assert_int_equal(c.routing.low_pool_bits, 4096);
	assert_int_equal(c.routing.heartbeat_ms, 100);
	assert_int_equal(c.routing.dead_ms, 300);
	assert_int_equal(c.relay.rekey_every, 16);
	assert_true(c.relay.batch_target == 0.9);
	assert_int_equal(c.relay.batch_wait_ms, 5);
	assert_int_equal(c.relay.timeout_ms, 1500);
	assert_int_equal(c.relay.key_lifetime_s, 2);
	assert_int_equal(c.policy_default_allow, 0);
	/* rules in file order, with their lines */
	assert_int_equal(c.npolicy_rules, 3);
	assert_string_equal(c.policy_rules[0], "deny bank-*.test -> *");
	assert_int_equal(c.policy_rule_lines[0], 17);
	assert_string_equal(c.policy_rules[2], "allow meter-* -> ksc");
	assert_int_equal(c.policy_rule_lines[2], 20);
	qw_km_conf_clear(&c);
	qw_config_free(cfg);

	/* heartbeat off entirely */
	assert_int_equal(qw_config_parse_string(NODE_HEAD "[routing]\nheartbeat_ms = 0\ndead_ms = 0\n",
						"n.conf", &cfg, &e), 0);
	assert_int_equal(qw_km_conf_load(cfg, &c, &e), 0);
	assert_int_equal(c.routing.dead_ms, 0);
	qw_km_conf_clear(&c);
	qw_config_free(cfg);

	expect_node_error(NODE_HEAD "[routing]\nrefresh_ms = 1000\nmax_age_ms = 1500\n", QW_ERANGE,
			  "n.conf:6: [routing] needs max_age_ms >= 2 x refresh_ms");
	expect_node_error(NODE_HEAD "[routing]\nrefresh_ms = 5000\n", QW_ERANGE,
			  "n.conf:4: [routing] needs max_age_ms >= 2 x refresh_ms");
	expect_node_error(NODE_HEAD "[routing]\nheartbeat_ms = 500\ndead_ms = 600\n", QW_ERANGE,
			  "n.conf:6: [routing] needs dead_ms >= 2 x heartbeat_ms");
	expect_node_error(NODE_HEAD "[routing]\nheartbeat_ms = 0\n", QW_ERANGE,
			  "n.conf:4: [routing] dead_ms without heartbeat_ms");
	expect_node_error(NODE_HEAD "[routing]\nrefresh_ms = 10\n", QW_ERANGE,
			  "n.conf:5: key 'refresh_ms' in [routing]");
	expect_node_error(NODE_HEAD "[routing]\nrefresh = 10\n", QW_EINVAL,
			  "n.conf:5: unknown key 'refresh' in [routing]");
	expect_node_error(NODE_HEAD "[routing]\n[routing]\n", QW_EINVAL,
			  "n.conf:5: [routing] repeated (first at line 4)");
	expect_node_error(NODE_HEAD "[relay]\nbatch_target = 1.5\n", QW_ERANGE,
			  "n.conf:5: key 'batch_target' in [relay]");
	expect_node_error(NODE_HEAD "[relay]\nrekey_every = 0\n", QW_ERANGE,
			  "n.conf:5: key 'rekey_every' in [relay]");
	expect_node_error(NODE_HEAD "[relay]\ntimeout_ms = fast\n", QW_EPARSE,
			  "n.conf:5: key 'timeout_ms' in [relay]");
	expect_node_error(NODE_HEAD "[relay]\nkey_lifetime_s = 0\n", QW_ERANGE,
			  "n.conf:5: key 'key_lifetime_s' in [relay]");
	/* the keys must outlive the relay that carries them */
	expect_node_error(NODE_HEAD "[relay]\ntimeout_ms = 2000\nkey_lifetime_s = 2\n", QW_ERANGE,
			  "n.conf:6: [relay] needs key_lifetime_s x 1000 > timeout_ms");
	expect_node_error(NODE_HEAD "[policy]\ndefault = maybe\n", QW_EINVAL,
			  "n.conf:5: key 'default' in [policy]: 'maybe' is not one of allow, deny");
	expect_node_error(NODE_HEAD "[policy]\ndefault = deny\ndefault = allow\n", QW_EINVAL,
			  "n.conf:6: key 'default' in [policy] repeated (first at line 5)");
	expect_node_error(NODE_HEAD "[policy]\nrule = allow a -> b\nrule = allow a => b\n", QW_EPARSE,
			  "n.conf:6: key 'rule' in [policy]: 'allow a => b' is not a rule");
	expect_node_error(NODE_HEAD "[policy]\nrule = permit a -> b\n", QW_EPARSE,
			  "n.conf:5: key 'rule' in [policy]");
	expect_node_error(NODE_HEAD "[policy]\nrule = allow a/b -> c\n", QW_EPARSE,
			  "n.conf:5: key 'rule' in [policy]");
	expect_node_error(NODE_HEAD "[policy]\nrules = allow a -> b\n", QW_EINVAL,
			  "n.conf:5: unknown key 'rules' in [policy]");
	expect_node_error(NODE_HEAD "[policy]\n[policy]\n", QW_EINVAL,
			  "n.conf:5: [policy] repeated (first at line 4)");
	/* an SAE at a node further away needs a link to relay over */
	expect_node_error(NODE_HEAD "[sae]\nid = s\nnode = far\n", QW_ENOTFOUND,
			  "n.conf:4: [sae] s: node far is neither this node nor reachable");
}

/* A topology's [routing], [relay] and [policy] are checked as a node's,
 * with the topology file's lines in the messages. */
static void expect_topo(const char *text, int code, const char *msg)
{
	struct qw_config *cfg = NULL;
	struct qw_config_error e = { "", -1 };
	struct qw_km_topo t;

	assert_int_equal(qw_config_parse_string(text, "net.conf", &cfg, &e), 0);
	assert_int_equal(qw_km_topo_load(cfg, &t, &e), code);
	if (msg && !strstr(e.msg, msg))
		fail_msg("expected '%s' in '%s'", msg, e.msg);
	qw_km_topo_clear(&t);
	qw_config_free(cfg);
}

static void test_topology_node_wide(void **state)
{
	(void)state;
	expect_topo("[node]\nid = a\n[routing]\nrefresh_ms = 500\n[relay]\nbatch_wait_ms = 10\n"
		    "[policy]\ndefault = deny\nrule = allow a* <-> b*\nrule = allow x -> y\n",
		    0, NULL);
	expect_topo("[node]\nid = a\n[policy]\nrule = allow a* <-> b*\nrule = allow x => y\n",
		    QW_EPARSE, "net.conf:5: key 'rule' in [policy]: 'allow x => y' is not a rule");
	expect_topo("[node]\nid = a\n[relay]\nbatch_wait_ms = 10\n[routing]\n\nrefresh_ms = 3000\n",
		    QW_ERANGE, "net.conf:5: [routing] needs max_age_ms >= 2 x refresh_ms");
	expect_topo("[node]\nid = a\n[routing]\nrefresh = 3\n", QW_EINVAL,
		    "net.conf:4: unknown key 'refresh' in [routing]");
	expect_topo("[node]\nid = a\n[routing]\n[routing]\n", QW_EINVAL,
		    "net.conf:4: section repeated: routing");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_file),
		cmocka_unit_test(test_repeated_sections),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_bom_and_global_keys),
		cmocka_unit_test(test_typed_getters),
		cmocka_unit_test(test_unknown_keys),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_routing_sections),
		cmocka_unit_test(test_topology_node_wide),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
