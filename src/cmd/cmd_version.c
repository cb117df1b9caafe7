#include <stdio.h>
#include <string.h>

#include <openssl/opensslv.h>
#include <openssl/crypto.h>

#include "cli.h"
#include "commands.h"

#ifndef QW_VERSION
#define QW_VERSION "0.0.0"
#endif

int qw_cmd_version(int argc, char **argv)
{
	int json = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = 1;
		else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			printf("usage: qwave version [--json]\n\nPrint qwave's version and the OpenSSL it runs on.\n");
			return QW_EXIT_OK;
		} else
			return qw_cli_usage_error("version", "unknown option '%s'", argv[i]);
	}
	if (json)
		qw_cli_print_json(json_pack("{s:s, s:s}", "version", QW_VERSION, "openssl",
					    OpenSSL_version(OPENSSL_VERSION)));
	else
		printf("qwave %s (%s)\n", QW_VERSION, OpenSSL_version(OPENSSL_VERSION));
	return QW_EXIT_OK;
}
