/* `sealmail domain add|list|remove` and `sealmail mailbox add|list|remove`: the admin's way
 * into the store. Runs in the CLI process, opening <data_dir>/sealmail.db directly.
 * Input: the admin's argv and config file (not the network), still validated and echoed
 * back only through log_safe(). Exit codes from <sysexits.h>; 1 for "already exists" and
 * "not found". */
#include "store/store.h"
#include "store/cli_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>

#include "conf/conf.h"
#include "smtp/parse.h"
#include "util/log.h"

#define CLI_MAX_POS 2

struct cli_opts {
	const char *conf;  /* -c FILE */
	const char *alias; /* --alias TARGET */
	bool json;         /* --json */
	bool help;
	const char *pos[CLI_MAX_POS];
	int npos;
};

static const char domain_usage[] = "usage: sealmail domain add NAME [-c FILE] [--json]\n"
                                   "       sealmail domain remove NAME [-c FILE] [--json]\n"
                                   "       sealmail domain list [-c FILE] [--json]\n";

static const char mailbox_usage[] =
    "usage: sealmail mailbox add ADDRESS [--alias TARGET] [-c FILE] [--json]\n"
    "       sealmail mailbox remove ADDRESS [-c FILE] [--json]\n"
    "       sealmail mailbox list [DOMAIN] [-c FILE] [--json]\n";


/* Options may come anywhere after the subcommand word; "--" ends them. */
static int cli_parse(int argc, char **argv, bool allow_alias, const char *usage, struct cli_opts *o)
{
	char b[64];
	bool opts = true;

	memset(o, 0, sizeof(*o));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (opts && strcmp(a, "--") == 0) {
			opts = false;
		} else if (opts && (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)) {
			o->help = true;
		} else if (opts && strcmp(a, "--json") == 0) {
			o->json = true;
		} else if (opts && (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0)) {
			if (i + 1 >= argc)
				goto missing;
			o->conf = argv[++i];
		} else if (opts && strncmp(a, "-c", 2) == 0 && a[2] != '\0') {
			o->conf = a + 2;
		} else if (opts && strncmp(a, "--config=", 9) == 0) {
			o->conf = a + 9;
		} else if (opts && allow_alias && strcmp(a, "--alias") == 0) {
			if (i + 1 >= argc)
				goto missing;
			o->alias = argv[++i];
		} else if (opts && allow_alias && strncmp(a, "--alias=", 8) == 0) {
			o->alias = a + 8;
		} else if (opts && a[0] == '-' && a[1] != '\0') {
			fprintf(stderr, "sealmail: unknown option %s\n%s", safe(b, sizeof(b), a),
			        usage);
			return EX_USAGE;
		} else {
			if (o->npos == CLI_MAX_POS) {
				fprintf(stderr, "sealmail: too many arguments\n%s", usage);
				return EX_USAGE;
			}
			o->pos[o->npos++] = a;
		}
		continue;
	missing:
		fprintf(stderr, "sealmail: option %s needs a value\n%s", safe(b, sizeof(b), a),
		        usage);
		return EX_USAGE;
	}
	if (o->conf != NULL && o->conf[0] == '\0') {
		fprintf(stderr, "sealmail: -c needs a file name\n%s", usage);
		return EX_USAGE;
	}
	return 0;
}




/* A JSON string; addresses are valid UTF-8 (the parser checks), so only '"', '\' and
 * control bytes need escapes. */
static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static void json_result(const char *key, const char *name, const char *alias_of, const char *status)
{
	printf("{");
	json_str(stdout, key);
	printf(":");
	json_str(stdout, name);
	if (alias_of != NULL) {
		printf(",\"alias_of\":");
		if (alias_of[0] != '\0')
			json_str(stdout, alias_of);
		else
			printf("null");
	}
	printf(",\"status\":");
	json_str(stdout, status);
	printf("}\n");
}

/* ---- domain ---- */

struct list_ctx {
	bool json;
	int n;
};

static void print_domain(void *arg, const char *name)
{
	struct list_ctx *lc = arg;
	if (lc->json) {
		fputc(lc->n > 0 ? ',' : '[', stdout); /* "[" late: an error prints no half array */
		json_str(stdout, name);
	} else {
		printf("%s\n", name);
	}
	lc->n++;
}

static void count_row(void *arg, const char *addr, const char *target)
{
	(*(int *)arg)++;
}

static int domain_store_err(const char *what, const char *name)
{
	char b[LIM_DOMAIN + 8];
	fprintf(stderr, "sealmail: domain %s: %s failed: database error\n",
	        safe(b, sizeof(b), name), what);
	return EX_SOFTWARE;
}

int store_cli_domain(int argc, char **argv)
{
	struct cli_opts o;
	struct store *st = NULL;
	char b[LIM_DOMAIN + 8];
	char name[LIM_DOMAIN + 1];
	int rc;

	if (argc < 1 || argv == NULL || argv[0] == NULL) {
		fputs(domain_usage, stderr);
		return EX_USAGE;
	}
	const char *cmd = argv[0];
	if ((rc = cli_parse(argc, argv, false, domain_usage, &o)) != 0)
		return rc;
	if (o.help || strcmp(cmd, "help") == 0 || strcmp(cmd, "-h") == 0 ||
	    strcmp(cmd, "--help") == 0) {
		fputs(domain_usage, stdout);
		return cli_finish(0);
	}
	bool is_list = strcmp(cmd, "list") == 0;
	bool is_add = strcmp(cmd, "add") == 0;
	bool is_rm = strcmp(cmd, "remove") == 0 || strcmp(cmd, "rm") == 0;
	if (!is_list && !is_add && !is_rm) {
		fprintf(stderr, "sealmail: unknown domain command %s\n%s", safe(b, sizeof(b), cmd),
		        domain_usage);
		return EX_USAGE;
	}
	if ((is_list && o.npos != 0) || (!is_list && o.npos != 1)) {
		fputs(domain_usage, stderr);
		return EX_USAGE;
	}
	/* Validate before touching the store, so a typo never creates a data directory. */
	if (!is_list) {
		size_t n = strlen(o.pos[0]);
		if (n == 0 || n >= sizeof(name) || !smtp_domain_valid(o.pos[0], n, false)) {
			fprintf(stderr, "sealmail: domain %s: not a valid domain name\n",
			        safe(b, sizeof(b), o.pos[0]));
			return EX_DATAERR;
		}
		memcpy(name, o.pos[0], n + 1);
		smtp_ascii_lower(name); /* messages show the stored form */
	}
	if ((rc = cli_store_open(o.conf, &st)) != 0)
		return rc;

	if (is_list) {
		struct list_ctx lc = {.json = o.json};
		enum store_res r = store_domain_list(st, print_domain, &lc);
		if (o.json && r == STORE_OK)
			fputs(lc.n == 0 ? "[]\n" : "]\n", stdout);
		store_close(st);
		if (r != STORE_OK) {
			fprintf(stderr, "sealmail: domain list failed: database error\n");
			return cli_finish(EX_SOFTWARE);
		}
		return cli_finish(0);
	}

	int code = 0;
	if (is_add) {
		switch (store_domain_add(st, name)) {
		case STORE_OK:
			if (o.json)
				json_result("domain", name, NULL, "added");
			else
				printf("domain %s added\n", name);
			break;
		case STORE_EXISTS:
			fprintf(stderr, "sealmail: domain %s: already exists\n",
			        safe(b, sizeof(b), name));
			code = 1;
			break;
		case STORE_INVALID:
			fprintf(stderr, "sealmail: domain %s: not a valid domain name\n",
			        safe(b, sizeof(b), name));
			code = EX_DATAERR;
			break;
		default:
			code = domain_store_err("add", name);
			break;
		}
	} else {
		int nmbox = 0;
		enum store_res r = store_mailbox_list(st, name, count_row, &nmbox);
		if (r == STORE_OK)
			r = store_domain_remove(st, name);
		switch (r) {
		case STORE_OK:
			if (o.json)
				json_result("domain", name, NULL, "removed");
			else if (nmbox > 0)
				printf("domain %s removed, with its %d mailbox%s and aliases\n",
				       name, nmbox, nmbox == 1 ? "" : "es");
			else
				printf("domain %s removed\n", name);
			break;
		case STORE_NOTFOUND:
			fprintf(stderr, "sealmail: domain %s: not found\n",
			        safe(b, sizeof(b), name));
			code = 1;
			break;
		case STORE_INVALID:
			fprintf(stderr, "sealmail: domain %s: not a valid domain name\n",
			        safe(b, sizeof(b), name));
			code = EX_DATAERR;
			break;
		default:
			code = domain_store_err("remove", name);
			break;
		}
	}
	store_close(st);
	return cli_finish(code);
}

/* ---- mailbox ---- */

static void print_mailbox(void *arg, const char *addr, const char *target)
{
	struct list_ctx *lc = arg;
	if (lc->json) {
		fputs(lc->n > 0 ? ",{\"address\":" : "[{\"address\":", stdout);
		json_str(stdout, addr);
		fputs(",\"alias_of\":", stdout);
		if (target[0] != '\0')
			json_str(stdout, target);
		else
			fputs("null", stdout);
		fputc('}', stdout);
	} else if (target[0] != '\0') {
		printf("%s -> %s\n", addr, target);
	} else {
		printf("%s\n", addr);
	}
	lc->n++;
}

static const char *domain_of(const char *addr)
{
	const char *at = strrchr(addr, '@');
	return at ? at + 1 : "";
}

static int mailbox_add(struct store *st, const struct cli_opts *o, const char *addr,
                       const char *target)
{
	char b[STORE_ADDR_MAX + 8];
	char cur[STORE_ADDR_MAX];
	bool alias = target[0] != '\0';

	switch (store_mailbox_add(st, addr, alias ? target : NULL)) {
	case STORE_OK:
		if (o->json)
			json_result("address", addr, target, "added");
		else if (alias)
			printf("alias %s -> %s added\n", addr, target);
		else
			printf("mailbox %s added\n", addr);
		if (alias && store_mailbox_get(st, target, cur, sizeof(cur)) == STORE_NOTFOUND)
			fprintf(
			    stderr,
			    "sealmail: warning: alias target %s does not exist (yet); mail to %s "
			    "is refused until it does\n",
			    target, addr);
		return 0;
	case STORE_EXISTS:
		if (store_mailbox_get(st, addr, cur, sizeof(cur)) == STORE_OK && cur[0] != '\0')
			fprintf(stderr, "sealmail: mailbox %s: already exists (alias of %s)\n",
			        addr, cur);
		else
			fprintf(stderr, "sealmail: mailbox %s: already exists\n", addr);
		return 1;
	case STORE_NOTFOUND:
		if (!store_domain_is_local(st, domain_of(addr))) {
			fprintf(stderr,
			        "sealmail: mailbox %s: domain %s is not local (add it first: "
			        "sealmail domain add %s)\n",
			        addr, domain_of(addr), domain_of(addr));
		} else {
			fprintf(stderr,
			        "sealmail: alias target %s: domain %s is not local (aliases "
			        "deliver to local mailboxes only)\n",
			        target, domain_of(target));
		}
		return 1;
	case STORE_INVALID:
		fprintf(stderr, "sealmail: %s: not a valid address\n", safe(b, sizeof(b), addr));
		return EX_DATAERR;
	default:
		fprintf(stderr, "sealmail: mailbox %s: add failed: database error\n", addr);
		return EX_SOFTWARE;
	}
}

static int mailbox_remove(struct store *st, const struct cli_opts *o, const char *addr)
{
	char cur[STORE_ADDR_MAX];
	enum store_res r = store_mailbox_get(st, addr, cur, sizeof(cur));
	if (r == STORE_OK)
		r = store_mailbox_remove(st, addr);
	switch (r) {
	case STORE_OK:
		if (o->json)
			json_result("address", addr, cur, "removed");
		else if (cur[0] != '\0')
			printf("alias %s removed\n", addr);
		else
			printf("mailbox %s removed (mail already delivered stays on disk)\n", addr);
		return 0;
	case STORE_NOTFOUND:
		fprintf(stderr, "sealmail: mailbox %s: not found\n", addr);
		return 1;
	case STORE_INVALID:
		fprintf(stderr, "sealmail: %s: not a valid address\n", addr);
		return EX_DATAERR;
	default:
		fprintf(stderr, "sealmail: mailbox %s: remove failed: database error\n", addr);
		return EX_SOFTWARE;
	}
}

static int mailbox_list(struct store *st, const struct cli_opts *o, const char *domain)
{
	char b[LIM_DOMAIN + 8];
	struct list_ctx lc = {.json = o->json};

	enum store_res r = store_mailbox_list(st, domain, print_mailbox, &lc);
	if (o->json && r == STORE_OK)
		fputs(lc.n == 0 ? "[]\n" : "]\n", stdout);
	switch (r) {
	case STORE_OK:
		return 0;
	case STORE_NOTFOUND:
		fprintf(stderr, "sealmail: domain %s: not found\n", safe(b, sizeof(b), domain));
		return 1;
	case STORE_INVALID:
		fprintf(stderr, "sealmail: domain %s: not a valid domain name\n",
		        safe(b, sizeof(b), domain));
		return EX_DATAERR;
	default:
		fprintf(stderr, "sealmail: mailbox list failed: database error\n");
		return EX_SOFTWARE;
	}
}

int store_cli_mailbox(int argc, char **argv)
{
	struct cli_opts o;
	struct store *st = NULL;
	char b[STORE_ADDR_MAX + 8];
	char addr[STORE_ADDR_MAX];
	char target[STORE_ADDR_MAX] = "";
	int rc;

	if (argc < 1 || argv == NULL || argv[0] == NULL) {
		fputs(mailbox_usage, stderr);
		return EX_USAGE;
	}
	const char *cmd = argv[0];
	if ((rc = cli_parse(argc, argv, true, mailbox_usage, &o)) != 0)
		return rc;
	if (o.help || strcmp(cmd, "help") == 0 || strcmp(cmd, "-h") == 0 ||
	    strcmp(cmd, "--help") == 0) {
		fputs(mailbox_usage, stdout);
		return cli_finish(0);
	}
	bool is_list = strcmp(cmd, "list") == 0;
	bool is_add = strcmp(cmd, "add") == 0;
	bool is_rm = strcmp(cmd, "remove") == 0 || strcmp(cmd, "rm") == 0;
	if (!is_list && !is_add && !is_rm) {
		fprintf(stderr, "sealmail: unknown mailbox command %s\n%s", safe(b, sizeof(b), cmd),
		        mailbox_usage);
		return EX_USAGE;
	}
	if ((is_list && o.npos > 1) || (!is_list && o.npos != 1) || (o.alias != NULL && !is_add)) {
		fputs(mailbox_usage, stderr);
		return EX_USAGE;
	}
	/* Normalize (and so validate) before opening the store; messages show the stored form. */
	if (!is_list && store_addr_normalize(o.pos[0], addr, sizeof(addr)) != STORE_OK) {
		fprintf(stderr, "sealmail: %s: not a valid address (want user@domain)\n",
		        safe(b, sizeof(b), o.pos[0]));
		return EX_DATAERR;
	}
	if (o.alias != NULL) {
		if (store_addr_normalize(o.alias, target, sizeof(target)) != STORE_OK) {
			fprintf(stderr, "sealmail: alias target %s: not a valid address\n",
			        safe(b, sizeof(b), o.alias));
			return EX_DATAERR;
		}
		if (strcmp(target, addr) == 0) {
			fprintf(stderr, "sealmail: alias %s: cannot point to itself\n", addr);
			return EX_DATAERR;
		}
	}
	if ((rc = cli_store_open(o.conf, &st)) != 0)
		return rc;
	if (is_add)
		rc = mailbox_add(st, &o, addr, target);
	else if (is_rm)
		rc = mailbox_remove(st, &o, addr);
	else
		rc = mailbox_list(st, &o, o.npos == 1 ? o.pos[0] : NULL);
	store_close(st);
	return cli_finish(rc);
}
