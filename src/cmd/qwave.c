/* qwave: the command-line interface. One table of subcommand groups, each
 * in its own file (cmd_<group>.c). */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const struct qw_cli_cmd groups[] = {
	{ "version", qw_cmd_version, "print the version" },
	{ "bench", qw_cmd_bench, "run benchmarks (crypto, cascade, pa, pipeline, ...)" },
	{ "theory", qw_cmd_theory, "decoy-state BB84 theory: key rate vs distance" },
	{ "sim", qw_cmd_sim, "simulate a QKD link end to end (sim link)" },
	{ "crypto", qw_cmd_crypto, "crypto service: SM2/SM3/SM4/ZUC/AES from files or stdin" },
	{ "demo", qw_cmd_demo, "end-to-end showcase (entropy, DRBG, ZUC, SM4/AES, SM2)" },
	{ "pki", qw_cmd_pki, "certificate authority: CA, node and SAE certificates for mutual TLS" },
	{ "randtest", qw_cmd_randtest, "NIST SP 800-22 randomness report for a key or bit file" },
	{ "keys", qw_cmd_keys, "ETSI GS QKD 014 client: key status, get keys, get keys by ID from a KME" },
	{ "plkg", qw_cmd_plkg, "wireless key generation (PLKG) end to end: key rate, KDR, Eve, NIST tests" },
	{ "net", qw_cmd_net, "a whole network on this machine: net up FILE, net down" },
	{ "ksc", qw_cmd_ksc, "Key Service Center: devices, key life cycle, audit, services over its API" },
	{ "device", qw_cmd_device, "device side of the KSC: a simulated SIM/TF card (import, unwrap, auth)" },
	{ "terminal", qw_cmd_terminal, "mobile terminal: key balance and over-the-air refill (PLKG + OTP)" },
	{ NULL, NULL, NULL },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: qwave <command> [options]\n\n"
		   "qwave - quantum key service system: QKD links, key management,\n"
		   "ETSI GS QKD 014 key delivery, Key Service Center, wireless keys.\n\n"
		   "commands:\n");
	for (const struct qw_cli_cmd *c = groups; c->name; c++)
		fprintf(f, "  %-10s %s\n", c->name, c->summary);
	fprintf(f, "\nRun 'qwave <command> --help' for a command's options.\n"
		   "Exit codes: 0 ok, 1 failure, 2 usage error.\n");
}

int main(int argc, char **argv)
{
	/* Subcommands talk to peers over sockets (KMEs, access points, nodes):
	 * a peer that went away must give EPIPE on write, not kill the CLI. */
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2) {
		usage(stderr);
		return QW_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return QW_EXIT_OK;
	}
	if (!strcmp(argv[1], "--version"))
		return qw_cmd_version(argc - 1, argv + 1);
	for (const struct qw_cli_cmd *c = groups; c->name; c++)
		if (!strcmp(argv[1], c->name))
			return c->fn(argc - 1, argv + 1);
	return qw_cli_usage_error(NULL, "unknown command '%s'", argv[1]);
}
