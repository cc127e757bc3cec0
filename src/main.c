/* sealmail: one binary, subcommands. Parses the first word and hands over: serve (master),
 * config, domain, mailbox, account, login, plan, version. Untrusted input: the command line
 * (an admin's). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "conf/conf.h"
#include "master.h"
#include "queue/admin.h"
#include "store/store.h"
#include "util/log.h"

#define SEALMAIL_VERSION "0.1.0"

static void usage(FILE *f)
{
	fprintf(f, "usage: sealmail <command> [options]\n\n"
		   "commands:\n"
		   "  serve [-c FILE]                 run the mail server (foreground)\n"
		   "  config check|show [-c FILE] [-n] validate / print the configuration\n"
		   "  domain add|list|remove NAME     manage local domains\n"
		   "  mailbox add|list|remove ADDR    manage mailboxes and aliases (--alias TARGET)\n"
		   "  account add|list|show|set-plan|disable|enable|usage|domain ...\n"
		   "                                  manage customer accounts and their domains\n"
		   "  login add|passwd|remove|list    manage SMTP logins (password on stdin)\n"
		   "  plan list|set NAME LIMIT        manage plans (recipients per hour)\n"
		   "  queue list|show|retry|hold|release|delete [ID|ALL] [--json]\n"
		   "                                  the running server's queue and its history\n"
		   "  version                         print the version\n\n"
		   "Without -c, $SEALMAIL_CONF or /etc/sealmail/sealmail.conf is used when present,\n"
		   "else the embedded defaults (data in $SEALMAIL_HOME or ./sealmail-data).\n");
}

static int cmd_serve(int argc, char **argv)
{
	const char *cpath = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			cpath = argv[++i];
		else {
			usage(stderr);
			return EX_USAGE;
		}
	}
	static struct conf c;
	const char *path = conf_pick_path(cpath);
	if (path) {
		struct conf_error err;
		if (conf_load(path, &c, &err) != 0) {
			fprintf(stderr, "sealmail: %s\n", err.msg);
			return EX_CONFIG;
		}
	} else {
		conf_defaults(&c);
	}
	log_init("master", c.log_dest == CONF_LOG_SYSLOG, c.log_debug);
	return master_main(&c);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EX_USAGE;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "serve") == 0)
		return cmd_serve(argc - 1, argv + 1);
	log_init("cli", false, false);
	if (strcmp(cmd, "config") == 0)
		return argc < 3 ? (usage(stderr), EX_USAGE) : conf_cli(argc - 2, argv + 2);
	if (strcmp(cmd, "domain") == 0)
		return argc < 3 ? (usage(stderr), EX_USAGE) : store_cli_domain(argc - 2, argv + 2);
	if (strcmp(cmd, "mailbox") == 0)
		return argc < 3 ? (usage(stderr), EX_USAGE) : store_cli_mailbox(argc - 2, argv + 2);
	if (strcmp(cmd, "account") == 0)
		return argc < 3 ? (usage(stderr), EX_USAGE) : store_cli_account(argc - 2, argv + 2);
	if (strcmp(cmd, "login") == 0)
		return argc < 3 ? (usage(stderr), EX_USAGE) : store_cli_login(argc - 2, argv + 2);
	if (strcmp(cmd, "plan") == 0)
		return argc < 3 ? (usage(stderr), EX_USAGE) : store_cli_plan(argc - 2, argv + 2);
	if (strcmp(cmd, "queue") == 0)
		return argc < 3 ? (usage(stderr), EX_USAGE) : queue_cli(argc - 2, argv + 2);
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
		printf("sealmail %s\n", SEALMAIL_VERSION);
		return 0;
	}
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "sealmail: unknown command '%s'\n", cmd);
	usage(stderr);
	return EX_USAGE;
}
