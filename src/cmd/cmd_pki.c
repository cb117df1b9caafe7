/* qwave pki: the network's certificate authority (init, issue, verify)
 * through pki.h. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "cli.h"
#include "qwave/error.h"
#include "qwave/pki.h"

int qw_cmd_pki(int argc, char **argv);

static int parse_alg(const char *cmd, const char *s, enum qw_sm2_alg *alg)
{
	if (!strcasecmp(s, "ecdsa-p256"))
		*alg = QW_PK_ECDSA_P256;
	else if (!strcasecmp(s, "sm2"))
		*alg = QW_PK_SM2;
	else
		return qw_cli_usage_error(cmd, "--alg: '%s' is not ecdsa-p256 or sm2", s);
	return -1;
}

static const char *alg_name(enum qw_sm2_alg alg)
{
	return alg == QW_PK_SM2 ? "sm2" : "ecdsa-p256";
}

static int parse_days(const char *cmd, const char *s, unsigned *days)
{
	uint64_t v;

	if (qw_cli_parse_u64(s, &v) || v == 0 || v > 36500)
		return qw_cli_usage_error(cmd, "--days: '%s' is not a number of days in 1..36500", s);
	*days = (unsigned)v;
	return -1;
}

static void init_help(void)
{
	printf("usage: qwave pki init --dir D [--alg ecdsa-p256|sm2] [--name NAME] [--days N] [--json]\n"
	       "\n"
	       "Create a certificate authority in D: D/ca.key (private key, mode 0600) and\n"
	       "D/ca.crt (self-signed, CA:TRUE, keyCertSign). An existing CA is never\n"
	       "replaced.\n"
	       "\n"
	       "  --dir D       PKI directory (created 0700 if missing)\n"
	       "  --alg ALG     ecdsa-p256 (default; for TLS) or sm2 (SM2/SM3 certificates\n"
	       "                for the Key Service Center and devices: OpenSSL 3.0's TLS 1.3\n"
	       "                does not negotiate SM2)\n"
	       "  --name NAME   subject CN of the CA (default \"qwave CA\")\n"
	       "  --days N      validity in days (default %u)\n"
	       "  --json        {\"ca_cert\", \"ca_key\", \"alg\", \"name\"}\n",
	       QW_PKI_DEFAULT_CA_DAYS);
}

static int cmd_init(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' }, { "alg", required_argument, NULL, 'a' },
		{ "name", required_argument, NULL, 'n' }, { "days", required_argument, NULL, 'D' },
		{ "json", no_argument, NULL, 'j' },       { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cmd = "pki init", *dir = NULL, *name = "qwave CA";
	enum qw_sm2_alg alg = QW_PK_ECDSA_P256;
	unsigned days = 0;
	int c, json = 0, rc, err;
	char crt[4200], key[4200];

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'a':
			if ((rc = parse_alg(cmd, optarg, &alg)) >= 0)
				return rc;
			break;
		case 'n': name = optarg; break;
		case 'D':
			if ((rc = parse_days(cmd, optarg, &days)) >= 0)
				return rc;
			break;
		case 'j': json = 1; break;
		case 'h': init_help(); return QW_EXIT_OK;
		default: return qw_cli_usage_error(cmd, "invalid option");
		}
	}
	if (optind < argc)
		return qw_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
	if (!dir)
		return qw_cli_usage_error(cmd, "--dir D is required");
	err = qw_pki_ca_init(dir, alg, name, days);
	if (err == QW_EEXIST)
		return qw_cli_fail("a CA already exists in '%s' (ca.key or ca.crt present)", dir);
	if (err == QW_EINVAL)
		return qw_cli_fail("--name must be 1..64 characters");
	if (err)
		return qw_cli_fail("cannot create the CA in '%s': %s", dir, qw_strerror(err));
	snprintf(crt, sizeof(crt), "%s/ca.crt", dir);
	snprintf(key, sizeof(key), "%s/ca.key", dir);
	if (json)
		qw_cli_print_json(json_pack("{s:s, s:s, s:s, s:s}", "ca_cert", crt, "ca_key", key,
					    "alg", alg_name(alg), "name", name));
	else
		printf("CA \"%s\" (%s) created:\n  certificate  %s\n  private key  %s (mode 0600)\n",
		       name, alg_name(alg), crt, key);
	return QW_EXIT_OK;
}

static void issue_help(void)
{
	printf("usage: qwave pki issue --dir D --kind node|sae --id ID [--alg ecdsa-p256|sm2]\n"
	       "                       [--out-cert F] [--out-key F] [--days N] [--json]\n"
	       "\n"
	       "Issue a certificate signed by the CA in D for a node (KME) or an SAE: subject\n"
	       "CN = ID, subjectAltName URI urn:qwave:<kind>:<ID> (nodes also IP 127.0.0.1,\n"
	       "DNS localhost), EKU serverAuth + clientAuth, random serial. The ETSI 014\n"
	       "server takes the caller's SAE ID from that certificate.\n"
	       "\n"
	       "  --dir D         PKI directory holding ca.crt and ca.key\n"
	       "  --kind K        node or sae\n"
	       "  --id ID         1..64 characters of [A-Za-z0-9._-]\n"
	       "  --alg ALG       key of the new certificate: ecdsa-p256 (default, for TLS)\n"
	       "                  or sm2 (for the Key Service Center and devices)\n"
	       "  --out-cert F    certificate file (default D/<kind>-<ID>.crt)\n"
	       "  --out-key F     private key file, mode 0600 (default D/<kind>-<ID>.key)\n"
	       "  --days N        validity in days (default %u)\n"
	       "  --json          {\"kind\", \"id\", \"alg\", \"cert\", \"key\"}\n",
	       QW_PKI_DEFAULT_DAYS);
}

static int cmd_issue(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },      { "kind", required_argument, NULL, 'k' },
		{ "id", required_argument, NULL, 'i' },       { "alg", required_argument, NULL, 'a' },
		{ "out-cert", required_argument, NULL, 'c' }, { "out-key", required_argument, NULL, 'K' },
		{ "days", required_argument, NULL, 'D' },     { "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },           { NULL, 0, NULL, 0 },
	};
	const char *cmd = "pki issue", *dir = NULL;
	struct qw_pki_issue_opts o = { .alg = QW_PK_ECDSA_P256 };
	char crt[4200], key[4200];
	int c, json = 0, rc, err;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'k':
			if (!strcmp(optarg, "node"))
				o.kind = QW_PKI_NODE;
			else if (!strcmp(optarg, "sae"))
				o.kind = QW_PKI_SAE;
			else
				return qw_cli_usage_error(cmd, "--kind: '%s' is not node or sae", optarg);
			break;
		case 'i': o.id = optarg; break;
		case 'a':
			if ((rc = parse_alg(cmd, optarg, &o.alg)) >= 0)
				return rc;
			break;
		case 'c': o.cert_path = optarg; break;
		case 'K': o.key_path = optarg; break;
		case 'D':
			if ((rc = parse_days(cmd, optarg, &o.days)) >= 0)
				return rc;
			break;
		case 'j': json = 1; break;
		case 'h': issue_help(); return QW_EXIT_OK;
		default: return qw_cli_usage_error(cmd, "invalid option");
		}
	}
	if (optind < argc)
		return qw_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
	if (!dir)
		return qw_cli_usage_error(cmd, "--dir D is required");
	if (!o.kind)
		return qw_cli_usage_error(cmd, "--kind node|sae is required");
	if (!o.id)
		return qw_cli_usage_error(cmd, "--id ID is required");
	if (!qw_pki_id_valid(o.id))
		return qw_cli_usage_error(cmd, "--id: '%s' is not 1..64 characters of [A-Za-z0-9._-]",
					  o.id);
	err = qw_pki_issue(dir, &o);
	if (err == QW_ENOTFOUND)
		return qw_cli_fail("no CA in '%s' (run 'qwave pki init --dir %s')", dir, dir);
	if (err == QW_EPERM)
		return qw_cli_fail("refusing to overwrite a key file readable by group/others");
	if (err == QW_EAUTH)
		return qw_cli_fail("'%s/ca.key' does not match '%s/ca.crt'", dir, dir);
	if (err)
		return qw_cli_fail("cannot issue the certificate: %s", qw_strerror(err));
	if (o.cert_path)
		snprintf(crt, sizeof(crt), "%s", o.cert_path);
	else
		snprintf(crt, sizeof(crt), "%s/%s-%s.crt", dir, qw_pki_kind_name(o.kind), o.id);
	if (o.key_path)
		snprintf(key, sizeof(key), "%s", o.key_path);
	else
		snprintf(key, sizeof(key), "%s/%s-%s.key", dir, qw_pki_kind_name(o.kind), o.id);
	if (json)
		qw_cli_print_json(json_pack("{s:s, s:s, s:s, s:s, s:s}", "kind",
					    qw_pki_kind_name(o.kind), "id", o.id, "alg",
					    alg_name(o.alg), "cert", crt, "key", key));
	else
		printf("%s certificate for '%s' (%s) issued:\n  certificate  %s\n"
		       "  private key  %s (mode 0600)\n",
		       qw_pki_kind_name(o.kind), o.id, alg_name(o.alg), crt, key);
	return QW_EXIT_OK;
}

static void verify_help(void)
{
	printf("usage: qwave pki verify --dir D --cert F [--json]\n"
	       "\n"
	       "Verify a certificate against the CA in D (signature chain, validity dates,\n"
	       "clientAuth) and print the identity it names (kind and ID). Exit 1 when it\n"
	       "does not verify or names no qwave identity.\n"
	       "\n"
	       "  --json   {\"valid\": true, \"kind\", \"id\"}\n");
}

static int cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' }, { "cert", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },      { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cmd = "pki verify", *dir = NULL, *cert = NULL;
	char ca[4200], id[QW_PKI_ID_MAX + 1];
	enum qw_pki_kind kind;
	int c, json = 0, err;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'c': cert = optarg; break;
		case 'j': json = 1; break;
		case 'h': verify_help(); return QW_EXIT_OK;
		default: return qw_cli_usage_error(cmd, "invalid option");
		}
	}
	if (optind < argc)
		return qw_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
	if (!dir || !cert)
		return qw_cli_usage_error(cmd, "--dir D and --cert F are required");
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	err = qw_pki_verify_file(ca, cert, &kind, id);
	if (err == QW_EAUTH)
		return qw_cli_fail("'%s' does not verify against '%s'", cert, ca);
	if (err == QW_EPERM)
		return qw_cli_fail("'%s' names no qwave node or SAE identity", cert);
	if (err)
		return qw_cli_fail("cannot verify '%s': %s", cert, qw_strerror(err));
	if (json)
		qw_cli_print_json(json_pack("{s:b, s:s, s:s}", "valid", 1, "kind",
					    qw_pki_kind_name(kind), "id", id));
	else
		printf("certificate OK: %s '%s'\n", qw_pki_kind_name(kind), id);
	return QW_EXIT_OK;
}

static const struct qw_cli_cmd pki_cmds[] = {
	{ "init", cmd_init, "create a CA (ECDSA P-256 or SM2) in a directory" },
	{ "issue", cmd_issue, "issue a node or SAE certificate signed by the CA" },
	{ "verify", cmd_verify, "verify a certificate against the CA and show its identity" },
	{ NULL, NULL, NULL },
};

int qw_cmd_pki(int argc, char **argv)
{
	return qw_cli_dispatch("pki", "Certificate authority for nodes and SAEs (mutual TLS).",
			       pki_cmds, argc, argv);
}
