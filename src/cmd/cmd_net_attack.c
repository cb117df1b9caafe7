/* qwave net attack: placeholder until the running-link drill is wired. */
#include "cli.h"
#include "commands.h"

int qw_cmd_net_attack(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return qw_cli_fail("net attack: not available yet");
}
