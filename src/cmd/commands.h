/* Entry points of the qwave CLI's subcommand groups, one file each. */
#ifndef QWAVE_COMMANDS_H
#define QWAVE_COMMANDS_H

int qw_cmd_version(int argc, char **argv);
int qw_cmd_bench(int argc, char **argv);
int qw_cmd_crypto(int argc, char **argv);
int qw_cmd_theory(int argc, char **argv);
int qw_cmd_sim(int argc, char **argv);
int qw_cmd_demo(int argc, char **argv);
int qw_cmd_plkg(int argc, char **argv);
int qw_cmd_pki(int argc, char **argv);
int qw_cmd_randtest(int argc, char **argv);
int qw_cmd_keys(int argc, char **argv);
int qw_cmd_net(int argc, char **argv);
int qw_cmd_ksc(int argc, char **argv);
int qw_cmd_device(int argc, char **argv);
int qw_cmd_terminal(int argc, char **argv);

#endif
