/* `sealmail plan|account|login ...`: the admin's commands for the relay service's plans,
 * customer accounts, their sending domains and SMTP logins. Runs in the CLI process on
 * <data_dir>/sealmail.db. Input: argv, the config file and a password on stdin (an admin's,
 * still validated; names are echoed only through log_safe, passwords never). Exit codes from
 * <sysexits.h>; 1 for "already exists" and "no such ..." as in store_cli.c. */
#include "store/store.h"
#include "store/cli_common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "conf/conf.h"
#include "policy/rate.h"
#include "smtp/parse.h"
#include "util/log.h"

#define CLI_MAX_POS 3
/* --generate: 20 characters from 62 (about 119 bits). */
#define GEN_PASS_LEN 20

struct cli_opts {
	const char *conf; /* -c FILE */
	const char *plan; /* --plan P (account add) */
	bool generate;    /* --generate (login add/passwd) */
	bool json;
	bool help;
	const char *pos[CLI_MAX_POS];
	int npos;
};

enum cli_flag { CLI_F_PLAN = 1, CLI_F_GENERATE = 2 };

static const char plan_usage[] = "usage: sealmail plan list [-c FILE] [--json]\n"
                                 "       sealmail plan set NAME LIMIT [-c FILE] [--json]\n";

static const char account_usage[] =
    "usage: sealmail account add NAME [--plan PLAN] [-c FILE] [--json]\n"
    "       sealmail account list [-c FILE] [--json]\n"
    "       sealmail account show NAME [-c FILE] [--json]\n"
    "       sealmail account set-plan NAME PLAN [-c FILE] [--json]\n"
    "       sealmail account disable|enable NAME [-c FILE] [--json]\n"
    "       sealmail account usage NAME [-c FILE] [--json]\n"
    "       sealmail account domain add|remove ACCOUNT DOMAIN [-c FILE] [--json]\n"
    "       sealmail account domain list ACCOUNT [-c FILE] [--json]\n";

static const char login_usage[] =
    "usage: sealmail login add LOGIN ACCOUNT [--generate] [-c FILE] [--json]\n"
    "       sealmail login passwd LOGIN [--generate] [-c FILE] [--json]\n"
    "       sealmail login remove LOGIN [-c FILE] [--json]\n"
    "       sealmail login list [ACCOUNT] [-c FILE] [--json]\n"
    "The password is read from standard input (one line) unless --generate is given.\n";

static const char name_rule[] = "letters a-z, digits, '.', '_' and '-', at most 63";

/* ---- shared plumbing (the same conventions as store_cli.c) ---- */


/* Options may come anywhere after the subcommand word; "--" ends them. */
static int cli_parse(int argc, char **argv, unsigned flags, const char *usage, struct cli_opts *o)
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
		} else if (opts && (flags & CLI_F_PLAN) && strcmp(a, "--plan") == 0) {
			if (i + 1 >= argc)
				goto missing;
			o->plan = argv[++i];
		} else if (opts && (flags & CLI_F_PLAN) && strncmp(a, "--plan=", 7) == 0) {
			o->plan = a + 7;
		} else if (opts && (flags & CLI_F_GENERATE) && strcmp(a, "--generate") == 0) {
			o->generate = true;
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




/* A JSON string: everything we print is ASCII or validated UTF-8, so only '"', '\' and
 * control bytes need escapes. */
static void json_str(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static bool is_help(const char *cmd, const struct cli_opts *o)
{
	return o->help || strcmp(cmd, "help") == 0 || strcmp(cmd, "-h") == 0 ||
	       strcmp(cmd, "--help") == 0;
}

static int db_failed(const char *what)
{
	fprintf(stderr, "sealmail: %s failed: database error\n", what);
	return EX_SOFTWARE;
}

static void iso_time(int64_t t, char *out, size_t outsz)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (gmtime_r(&tt, &tm) == NULL || strftime(out, outsz, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, outsz, "%" PRId64, t);
}

/* Validates and normalizes an account/plan name argument, or prints why not. */
static bool arg_name(const char *what, const char *in, char *out, size_t outsz)
{
	char b[80];
	if (store_name_norm(in, out, outsz))
		return true;
	fprintf(stderr, "sealmail: %s %s: not a valid %s name (%s)\n", what,
	        safe(b, sizeof(b), in), what, name_rule);
	return false;
}

static bool arg_login(const char *in, char *out, size_t outsz)
{
	char b[SASL_USER_MAX + 1];
	if (store_login_norm(in, out, outsz))
		return true;
	fprintf(stderr,
	        "sealmail: login %s: not a valid login name (1-255 printable ASCII characters, "
	        "no spaces)\n",
	        safe(b, sizeof(b), in));
	return false;
}

static bool arg_domain(const char *in, char *out, size_t outsz)
{
	char b[LIM_DOMAIN + 8];
	size_t n = strlen(in);
	if (n > 0 && n < outsz && smtp_domain_valid(in, n, false)) {
		memcpy(out, in, n + 1);
		smtp_ascii_lower(out);
		return true;
	}
	fprintf(stderr, "sealmail: domain %s: not a valid domain name\n", safe(b, sizeof(b), in));
	return false;
}

static int no_such(const char *what, const char *name)
{
	char b[SASL_USER_MAX + 1];
	fprintf(stderr, "sealmail: %s %s: no such %s\n", what, safe(b, sizeof(b), name), what);
	return 1;
}

/* A growing list of strings (domains, logins) gathered before anything is printed, so an
 * error never leaves half a JSON document. */
struct strlist {
	char **v;
	size_t n, cap;
	bool oom;
};

static void strlist_add(void *arg, const char *s)
{
	struct strlist *l = arg;
	if (l->oom)
		return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		char **v = realloc(l->v, cap * sizeof(*v));
		if (v == NULL) {
			l->oom = true;
			return;
		}
		l->v = v;
		l->cap = cap;
	}
	if ((l->v[l->n] = strdup(s)) == NULL) {
		l->oom = true;
		return;
	}
	l->n++;
}

static void strlist_add_login(void *arg, const char *login, const char *account, int64_t created)
{
	strlist_add(arg, login);
}

static void strlist_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static void print_strlist_text(const struct strlist *l)
{
	if (l->n == 0)
		fputs("(none)", stdout);
	for (size_t i = 0; i < l->n; i++)
		printf("%s%s", i ? ", " : "", l->v[i]);
	putchar('\n');
}

static void print_strlist_json(const struct strlist *l)
{
	putchar('[');
	for (size_t i = 0; i < l->n; i++) {
		if (i)
			putchar(',');
		json_str(l->v[i]);
	}
	putchar(']');
}

/* ---- plan ---- */

struct list_ctx {
	bool json;
	int n;
};

static void print_plan(void *arg, const char *name, uint32_t limit)
{
	struct list_ctx *lc = arg;
	if (lc->json) {
		fputs(lc->n > 0 ? ",{\"name\":" : "[{\"name\":", stdout);
		json_str(name);
		printf(",\"hourly_limit\":%" PRIu32 "}", limit);
	} else {
		printf("%-20s %10" PRIu32 " recipients/hour\n", name, limit);
	}
	lc->n++;
}

/* "1500" -> 1500 within 1..STORE_PLAN_LIMIT_MAX, digits only. */
static bool parse_limit(const char *s, uint32_t *out)
{
	char *end;
	if (s[0] < '0' || s[0] > '9')
		return false;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v == 0 || v > STORE_PLAN_LIMIT_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

int store_cli_plan(int argc, char **argv)
{
	struct cli_opts o;
	struct store *st = NULL;
	char b[80], name[STORE_NAME_MAX + 1];
	uint32_t limit = 0, old = 0;
	int rc;

	if (argc < 1 || argv == NULL || argv[0] == NULL) {
		fputs(plan_usage, stderr);
		return EX_USAGE;
	}
	const char *cmd = argv[0];
	if ((rc = cli_parse(argc, argv, 0, plan_usage, &o)) != 0)
		return rc;
	if (is_help(cmd, &o)) {
		fputs(plan_usage, stdout);
		return cli_finish(0);
	}
	bool is_list = strcmp(cmd, "list") == 0;
	bool is_set = strcmp(cmd, "set") == 0;
	if (!is_list && !is_set) {
		fprintf(stderr, "sealmail: unknown plan command %s\n%s", safe(b, sizeof(b), cmd),
		        plan_usage);
		return EX_USAGE;
	}
	if ((is_list && o.npos != 0) || (is_set && o.npos != 2)) {
		fputs(plan_usage, stderr);
		return EX_USAGE;
	}
	if (is_set) {
		if (!arg_name("plan", o.pos[0], name, sizeof(name)))
			return EX_DATAERR;
		if (!parse_limit(o.pos[1], &limit)) {
			fprintf(stderr,
			        "sealmail: plan %s: limit %s: want recipients per hour, 1 to %u\n",
			        name, safe(b, sizeof(b), o.pos[1]), STORE_PLAN_LIMIT_MAX);
			return EX_DATAERR;
		}
	}
	if ((rc = cli_store_open(o.conf, &st)) != 0)
		return rc;

	int code = 0;
	if (is_list) {
		struct list_ctx lc = {.json = o.json};
		enum store_res r = store_plan_list(st, print_plan, &lc);
		if (o.json && r == STORE_OK)
			fputs(lc.n == 0 ? "[]\n" : "]\n", stdout);
		if (r != STORE_OK)
			code = db_failed("plan list");
	} else {
		enum store_res had = store_plan_get(st, name, &old);
		enum store_res r = had == STORE_ERR ? STORE_ERR : store_plan_set(st, name, limit);
		if (r == STORE_OK) {
			const char *status = had == STORE_OK ? "changed" : "added";
			if (o.json) {
				fputs("{\"plan\":", stdout);
				json_str(name);
				printf(",\"hourly_limit\":%" PRIu32 ",\"status\":\"%s\"}\n", limit,
				       status);
			} else if (had == STORE_OK) {
				printf("plan %s changed: %" PRIu32 " -> %" PRIu32
				       " recipients per hour\n",
				       name, old, limit);
			} else {
				printf("plan %s added: %" PRIu32 " recipients per hour\n", name, limit);
			}
		} else if (r == STORE_INVALID) {
			fprintf(stderr, "sealmail: plan %s: invalid\n", name);
			code = EX_DATAERR;
		} else {
			code = db_failed("plan set");
		}
	}
	store_close(st);
	return cli_finish(code);
}

/* ---- account ---- */

struct usage {
	uint32_t sent, limit, headroom, frees_in;
};

static void load_bucket(void *arg, int64_t minute, uint32_t count)
{
	rate_load(arg, minute, count);
}

/* Sent in the last 60 minutes, as the rate buckets in the store say. */
static enum store_res usage_get(struct store *st, const struct store_account *acc,
                                    struct usage *u)
{
	struct rate_window w;
	time_t now = time(NULL);
	int64_t now_min = (int64_t)now / RATE_BUCKET_SECONDS;

	memset(&w, 0, sizeof(w));
	memset(u, 0, sizeof(*u));
	enum store_res r = store_rate_load(st, acc->name, now_min - (RATE_BUCKETS - 1),
	                                   load_bucket, &w);
	if (r != STORE_OK)
		return r;
	u->limit = acc->hourly_limit;
	u->sent = rate_used(&w, now);
	u->headroom = u->sent < u->limit ? u->limit - u->sent : 0;
	u->frees_in = rate_retry_after(&w, now, u->limit);
	return STORE_OK;
}

static void print_account(void *arg, const struct store_account *a)
{
	struct list_ctx *lc = arg;
	char created[32];
	iso_time(a->created, created, sizeof(created));
	if (lc->json) {
		fputs(lc->n > 0 ? ",{\"name\":" : "[{\"name\":", stdout);
		json_str(a->name);
		fputs(",\"plan\":", stdout);
		json_str(a->plan);
		printf(",\"hourly_limit\":%" PRIu32 ",\"disabled\":%s,\"created\":\"%s\"}",
		       a->hourly_limit, a->disabled ? "true" : "false", created);
	} else {
		printf("%-24s %-14s %10" PRIu32 "/hour  %s\n", a->name, a->plan, a->hourly_limit,
		       a->disabled ? "disabled" : "enabled");
	}
	lc->n++;
}

static int account_add(struct store *st, const struct cli_opts *o, const char *name,
                       const char *plan)
{
	struct store_account acc;
	switch (store_account_add(st, name, plan)) {
	case STORE_OK:
		if (store_account_get(st, name, &acc) != STORE_OK)
			return db_failed("account add");
		if (o->json) {
			fputs("{\"account\":", stdout);
			json_str(acc.name);
			fputs(",\"plan\":", stdout);
			json_str(acc.plan);
			printf(",\"hourly_limit\":%" PRIu32 ",\"status\":\"added\"}\n",
			       acc.hourly_limit);
		} else {
			printf("account %s added (plan %s, %" PRIu32 " recipients per hour)\n",
			       acc.name, acc.plan, acc.hourly_limit);
		}
		return 0;
	case STORE_EXISTS:
		fprintf(stderr, "sealmail: account %s: already exists\n", name);
		return 1;
	case STORE_NOTFOUND:
		return no_such("plan", plan);
	case STORE_INVALID:
		fprintf(stderr, "sealmail: account %s: invalid\n", name);
		return EX_DATAERR;
	default:
		return db_failed("account add");
	}
}

static int account_list(struct store *st, const struct cli_opts *o)
{
	struct list_ctx lc = {.json = o->json};
	enum store_res r = store_account_list(st, print_account, &lc);
	if (r != STORE_OK)
		return db_failed("account list");
	if (o->json)
		fputs(lc.n == 0 ? "[]\n" : "]\n", stdout);
	return 0;
}

static int account_show(struct store *st, const struct cli_opts *o, const char *name)
{
	struct store_account acc;
	struct strlist doms = {0}, logins = {0};
	struct usage u;
	char created[32];
	int code = 0;

	enum store_res r = store_account_get(st, name, &acc);
	if (r == STORE_NOTFOUND)
		return no_such("account", name);
	if (r == STORE_OK)
		r = store_account_domains(st, name, strlist_add, &doms);
	if (r == STORE_OK)
		r = store_login_list(st, name, strlist_add_login, &logins);
	if (r == STORE_OK)
		r = usage_get(st, &acc, &u);
	if (r != STORE_OK || doms.oom || logins.oom) {
		code = db_failed("account show");
		goto out;
	}
	iso_time(acc.created, created, sizeof(created));
	if (o->json) {
		fputs("{\"name\":", stdout);
		json_str(acc.name);
		fputs(",\"plan\":", stdout);
		json_str(acc.plan);
		printf(",\"hourly_limit\":%" PRIu32 ",\"disabled\":%s,\"created\":\"%s\","
		       "\"domains\":",
		       acc.hourly_limit, acc.disabled ? "true" : "false", created);
		print_strlist_json(&doms);
		fputs(",\"logins\":", stdout);
		print_strlist_json(&logins);
		printf(",\"usage\":{\"sent\":%" PRIu32 ",\"limit\":%" PRIu32
		       ",\"headroom\":%" PRIu32 ",\"frees_in\":%" PRIu32 "}}\n",
		       u.sent, u.limit, u.headroom, u.frees_in);
	} else {
		printf("account:   %s\n", acc.name);
		printf("plan:      %s (%" PRIu32 " recipients per hour)\n", acc.plan,
		       acc.hourly_limit);
		printf("status:    %s\n", acc.disabled ? "disabled" : "enabled");
		printf("created:   %s\n", created);
		fputs("domains:   ", stdout);
		print_strlist_text(&doms);
		fputs("logins:    ", stdout);
		print_strlist_text(&logins);
		printf("last hour: %" PRIu32 " sent, %" PRIu32 " left", u.sent, u.headroom);
		if (u.headroom == 0)
			printf(" (capacity frees up in %" PRIu32 "s)", u.frees_in);
		putchar('\n');
	}
out:
	strlist_free(&doms);
	strlist_free(&logins);
	return code;
}

static int account_usage_cmd(struct store *st, const struct cli_opts *o, const char *name)
{
	struct store_account acc;
	struct usage u;

	enum store_res r = store_account_get(st, name, &acc);
	if (r == STORE_NOTFOUND)
		return no_such("account", name);
	if (r == STORE_OK)
		r = usage_get(st, &acc, &u);
	if (r != STORE_OK)
		return db_failed("account usage");
	if (o->json) {
		fputs("{\"account\":", stdout);
		json_str(acc.name);
		fputs(",\"plan\":", stdout);
		json_str(acc.plan);
		printf(",\"sent\":%" PRIu32 ",\"limit\":%" PRIu32 ",\"headroom\":%" PRIu32
		       ",\"frees_in\":%" PRIu32 "}\n",
		       u.sent, u.limit, u.headroom, u.frees_in);
	} else {
		printf("account %s: %" PRIu32 " sent in the last hour, limit %" PRIu32
		       " (plan %s), headroom %" PRIu32,
		       acc.name, u.sent, u.limit, acc.plan, u.headroom);
		if (u.headroom == 0)
			printf("; capacity frees up in %" PRIu32 "s", u.frees_in);
		putchar('\n');
	}
	return 0;
}

static int account_set_plan(struct store *st, const struct cli_opts *o, const char *name,
                            const char *plan)
{
	struct store_account acc;
	uint32_t limit;

	enum store_res r = store_plan_get(st, plan, &limit);
	if (r == STORE_NOTFOUND)
		return no_such("plan", plan);
	if (r == STORE_OK)
		r = store_account_set_plan(st, name, plan);
	if (r == STORE_NOTFOUND)
		return no_such("account", name);
	if (r == STORE_OK)
		r = store_account_get(st, name, &acc);
	if (r != STORE_OK)
		return db_failed("account set-plan");
	if (o->json) {
		fputs("{\"account\":", stdout);
		json_str(acc.name);
		fputs(",\"plan\":", stdout);
		json_str(acc.plan);
		printf(",\"hourly_limit\":%" PRIu32 ",\"status\":\"changed\"}\n", acc.hourly_limit);
	} else {
		printf("account %s: plan %s (%" PRIu32 " recipients per hour)\n", acc.name, acc.plan,
		       acc.hourly_limit);
	}
	return 0;
}

static int account_set_disabled(struct store *st, const struct cli_opts *o, const char *name,
                                bool disabled)
{
	switch (store_account_set_disabled(st, name, disabled)) {
	case STORE_OK:
		break;
	case STORE_NOTFOUND:
		return no_such("account", name);
	default:
		return db_failed(disabled ? "account disable" : "account enable");
	}
	if (o->json) {
		fputs("{\"account\":", stdout);
		json_str(name);
		printf(",\"status\":\"%s\"}\n", disabled ? "disabled" : "enabled");
	} else if (disabled) {
		printf("account %s disabled (its logins can no longer authenticate)\n", name);
	} else {
		printf("account %s enabled\n", name);
	}
	return 0;
}

/* `account domain add|remove|list ACCOUNT [DOMAIN]`: pos[0] is the verb. */
static int account_domain(const struct cli_opts *o)
{
	struct store *st = NULL;
	char b[80], name[STORE_NAME_MAX + 1], dom[LIM_DOMAIN + 1], owner[64];
	int rc;

	const char *verb = o->npos > 0 ? o->pos[0] : "";
	bool is_list = strcmp(verb, "list") == 0;
	bool is_add = strcmp(verb, "add") == 0;
	bool is_rm = strcmp(verb, "remove") == 0 || strcmp(verb, "rm") == 0;
	if (!is_list && !is_add && !is_rm) {
		if (o->npos > 0)
			fprintf(stderr, "sealmail: unknown account domain command %s\n",
			        safe(b, sizeof(b), verb));
		fputs(account_usage, stderr);
		return EX_USAGE;
	}
	if ((is_list && o->npos != 2) || (!is_list && o->npos != 3)) {
		fputs(account_usage, stderr);
		return EX_USAGE;
	}
	if (!arg_name("account", o->pos[1], name, sizeof(name)))
		return EX_DATAERR;
	if (!is_list && !arg_domain(o->pos[2], dom, sizeof(dom)))
		return EX_DATAERR;
	if ((rc = cli_store_open(o->conf, &st)) != 0)
		return rc;

	int code = 0;
	if (is_list) {
		struct strlist doms = {0};
		enum store_res r = store_account_domains(st, name, strlist_add, &doms);
		if (r == STORE_NOTFOUND) {
			code = no_such("account", name);
		} else if (r != STORE_OK || doms.oom) {
			code = db_failed("account domain list");
		} else if (o->json) {
			print_strlist_json(&doms);
			putchar('\n');
		} else {
			for (size_t i = 0; i < doms.n; i++)
				printf("%s\n", doms.v[i]);
		}
		strlist_free(&doms);
	} else if (is_add) {
		switch (store_account_domain_add(st, name, dom)) {
		case STORE_OK:
			if (o->json) {
				fputs("{\"account\":", stdout);
				json_str(name);
				fputs(",\"domain\":", stdout);
				json_str(dom);
				fputs(",\"status\":\"added\"}\n", stdout);
			} else {
				printf("domain %s added to account %s\n", dom, name);
			}
			break;
		case STORE_NOTFOUND:
			code = no_such("account", name);
			break;
		case STORE_EXISTS:
			if (store_domain_account(st, dom, owner, sizeof(owner)) == STORE_OK)
				fprintf(stderr,
				        "sealmail: domain %s: already belongs to account %s\n", dom,
				        owner);
			else
				fprintf(stderr, "sealmail: domain %s: already taken\n", dom);
			code = 1;
			break;
		default:
			code = db_failed("account domain add");
			break;
		}
	} else {
		switch (store_account_domain_remove(st, name, dom)) {
		case STORE_OK:
			if (o->json) {
				fputs("{\"account\":", stdout);
				json_str(name);
				fputs(",\"domain\":", stdout);
				json_str(dom);
				fputs(",\"status\":\"removed\"}\n", stdout);
			} else {
				printf("domain %s removed from account %s\n", dom, name);
			}
			break;
		case STORE_NOTFOUND: {
			struct store_account acc;
			if (store_account_get(st, name, &acc) == STORE_NOTFOUND)
				code = no_such("account", name);
			else {
				fprintf(stderr, "sealmail: domain %s: not a domain of account %s\n",
				        dom, name);
				code = 1;
			}
			break;
		}
		default:
			code = db_failed("account domain remove");
			break;
		}
	}
	store_close(st);
	return cli_finish(code);
}

int store_cli_account(int argc, char **argv)
{
	struct cli_opts o;
	struct store *st = NULL;
	char b[80], name[STORE_NAME_MAX + 1], plan[STORE_NAME_MAX + 1] = "";
	int rc;

	if (argc < 1 || argv == NULL || argv[0] == NULL) {
		fputs(account_usage, stderr);
		return EX_USAGE;
	}
	const char *cmd = argv[0];
	bool is_add = strcmp(cmd, "add") == 0;
	if ((rc = cli_parse(argc, argv, is_add ? CLI_F_PLAN : 0, account_usage, &o)) != 0)
		return rc;
	if (is_help(cmd, &o)) {
		fputs(account_usage, stdout);
		return cli_finish(0);
	}
	if (strcmp(cmd, "domain") == 0)
		return account_domain(&o);

	static const struct {
		const char *cmd;
		int npos; /* positional arguments it takes */
	} cmds[] = {
	    {"add", 1},     {"list", 0},   {"show", 1},  {"set-plan", 2},
	    {"disable", 1}, {"enable", 1}, {"usage", 1},
	};
	int which = -1;
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(cmd, cmds[i].cmd) == 0)
			which = (int)i;
	if (which < 0) {
		fprintf(stderr, "sealmail: unknown account command %s\n%s",
		        safe(b, sizeof(b), cmd), account_usage);
		return EX_USAGE;
	}
	if (o.npos != cmds[which].npos) {
		fputs(account_usage, stderr);
		return EX_USAGE;
	}
	/* Validate before touching the store, so a typo never creates a data directory. */
	if (o.npos > 0 && !arg_name("account", o.pos[0], name, sizeof(name)))
		return EX_DATAERR;
	const char *plan_arg = strcmp(cmd, "set-plan") == 0 ? o.pos[1] : o.plan;
	if (plan_arg != NULL && !arg_name("plan", plan_arg, plan, sizeof(plan)))
		return EX_DATAERR;
	if ((rc = cli_store_open(o.conf, &st)) != 0)
		return rc;

	int code;
	if (is_add)
		code = account_add(st, &o, name, plan[0] ? plan : STORE_PLAN_DEFAULT);
	else if (strcmp(cmd, "list") == 0)
		code = account_list(st, &o);
	else if (strcmp(cmd, "show") == 0)
		code = account_show(st, &o, name);
	else if (strcmp(cmd, "set-plan") == 0)
		code = account_set_plan(st, &o, name, plan);
	else if (strcmp(cmd, "disable") == 0)
		code = account_set_disabled(st, &o, name, true);
	else if (strcmp(cmd, "enable") == 0)
		code = account_set_disabled(st, &o, name, false);
	else
		code = account_usage_cmd(st, &o, name);
	store_close(st);
	return cli_finish(code);
}

/* ---- login ---- */

/* One line from stdin, read a byte at a time so nothing after it is consumed, without the
 * trailing "\n" (or "\r\n"). On a terminal: a prompt on stderr and no echo. 0, or an exit
 * code after printing why. pw has SASL_PASS_MAX + 1 bytes. */
static int read_password(const char *login, char *pw, size_t pwsz)
{
	struct termios old, quiet;
	bool tty = isatty(STDIN_FILENO) == 1;
	bool echo_off = false;
	size_t n = 0;
	bool eol = false, too_long = false;
	char b[SASL_USER_MAX + 1];

	if (tty) {
		fprintf(stderr, "password for %s: ", safe(b, sizeof(b), login));
		if (tcgetattr(STDIN_FILENO, &old) == 0) {
			quiet = old;
			quiet.c_lflag &= ~(tcflag_t)ECHO;
			echo_off = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
		}
	}
	for (;;) {
		char c;
		ssize_t r = read(STDIN_FILENO, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (c == '\n') {
			eol = true;
			break;
		}
		if (n + 1 < pwsz)
			pw[n++] = c;
		else
			too_long = true;
	}
	if (echo_off) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (n > 0 && pw[n - 1] == '\r' && !too_long)
		n--;
	pw[n] = '\0';
	if (too_long) {
		fprintf(stderr, "sealmail: password too long (at most %d bytes)\n", SASL_PASS_MAX);
		return EX_DATAERR;
	}
	if (n == 0) {
		fprintf(stderr, "sealmail: no password on standard input%s\n",
		        eol ? " (empty line)" : "");
		return EX_DATAERR;
	}
	if (!store_password_ok(pw)) {
		fprintf(stderr, "sealmail: password contains control characters\n");
		return EX_DATAERR;
	}
	return 0;
}

/* GEN_PASS_LEN characters drawn uniformly from [A-Za-z0-9]. 0 or an exit code. */
static int generate_password(char *pw, size_t pwsz)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	if (sodium_init() < 0) {
		fprintf(stderr, "sealmail: libsodium initialisation failed\n");
		return EX_SOFTWARE;
	}
	size_t n = GEN_PASS_LEN < pwsz ? GEN_PASS_LEN : pwsz - 1;
	for (size_t i = 0; i < n; i++)
		pw[i] = alphabet[randombytes_uniform((uint32_t)(sizeof(alphabet) - 1))];
	pw[n] = '\0';
	return 0;
}

static void print_login(void *arg, const char *login, const char *account, int64_t created)
{
	struct list_ctx *lc = arg;
	if (lc->json) {
		fputs(lc->n > 0 ? ",{\"login\":" : "[{\"login\":", stdout);
		json_str(login);
		fputs(",\"account\":", stdout);
		json_str(account);
		char t[32];
		iso_time(created, t, sizeof(t));
		printf(",\"created\":\"%s\"}", t);
	} else {
		printf("%-40s %s\n", login, account);
	}
	lc->n++;
}

/* Result line of add/passwd; a generated password is shown here, once. */
static void login_done(const struct cli_opts *o, const char *login, const char *account,
                       const char *status, const char *generated)
{
	if (o->json) {
		fputs("{\"login\":", stdout);
		json_str(login);
		if (account != NULL) {
			fputs(",\"account\":", stdout);
			json_str(account);
		}
		printf(",\"status\":\"%s\"", status);
		if (generated != NULL) {
			fputs(",\"password\":", stdout);
			json_str(generated);
		}
		fputs("}\n", stdout);
		return;
	}
	if (account != NULL)
		printf("login %s %s (account %s)\n", login, status, account);
	else
		printf("login %s: password %s\n", login, status);
	if (generated != NULL)
		printf("password: %s\n", generated);
}

int store_cli_login(int argc, char **argv)
{
	struct cli_opts o;
	struct store *st = NULL;
	char b[80], login[SASL_USER_MAX + 1], account[STORE_NAME_MAX + 1];
	char pw[SASL_PASS_MAX + 1];
	int rc, code = 0;

	if (argc < 1 || argv == NULL || argv[0] == NULL) {
		fputs(login_usage, stderr);
		return EX_USAGE;
	}
	const char *cmd = argv[0];
	bool is_add = strcmp(cmd, "add") == 0;
	bool is_passwd = strcmp(cmd, "passwd") == 0;
	bool is_rm = strcmp(cmd, "remove") == 0 || strcmp(cmd, "rm") == 0;
	bool is_list = strcmp(cmd, "list") == 0;
	if ((rc = cli_parse(argc, argv, is_add || is_passwd ? CLI_F_GENERATE : 0, login_usage,
	                    &o)) != 0)
		return rc;
	if (is_help(cmd, &o)) {
		fputs(login_usage, stdout);
		return cli_finish(0);
	}
	if (!is_add && !is_passwd && !is_rm && !is_list) {
		fprintf(stderr, "sealmail: unknown login command %s\n%s", safe(b, sizeof(b), cmd),
		        login_usage);
		return EX_USAGE;
	}
	if ((is_add && o.npos != 2) || ((is_passwd || is_rm) && o.npos != 1) ||
	    (is_list && o.npos > 1)) {
		fputs(login_usage, stderr);
		return EX_USAGE;
	}
	if (!is_list && !arg_login(o.pos[0], login, sizeof(login)))
		return EX_DATAERR;
	const char *acc_arg = is_add ? o.pos[1] : is_list && o.npos == 1 ? o.pos[0] : NULL;
	if (acc_arg != NULL && !arg_name("account", acc_arg, account, sizeof(account)))
		return EX_DATAERR;

	/* The password before the store: a bad one never creates a data directory. */
	pw[0] = '\0';
	if (is_add || is_passwd) {
		rc = o.generate ? generate_password(pw, sizeof(pw))
		                : read_password(login, pw, sizeof(pw));
		if (rc != 0)
			goto out;
	}
	if ((rc = cli_store_open(o.conf, &st)) != 0)
		goto out;

	const char *gen = o.generate ? pw : NULL;
	if (is_add) {
		switch (store_login_add(st, login, account, pw)) {
		case STORE_OK:
			login_done(&o, login, account, "added", gen);
			break;
		case STORE_NOTFOUND:
			code = no_such("account", account);
			break;
		case STORE_EXISTS:
			fprintf(stderr, "sealmail: login %s: already exists\n", login);
			code = 1;
			break;
		case STORE_INVALID:
			fprintf(stderr, "sealmail: login %s: invalid name or password\n", login);
			code = EX_DATAERR;
			break;
		default:
			code = db_failed("login add");
			break;
		}
	} else if (is_passwd) {
		switch (store_login_passwd(st, login, pw)) {
		case STORE_OK:
			login_done(&o, login, NULL, "changed", gen);
			break;
		case STORE_NOTFOUND:
			code = no_such("login", login);
			break;
		case STORE_INVALID:
			fprintf(stderr, "sealmail: login %s: invalid password\n", login);
			code = EX_DATAERR;
			break;
		default:
			code = db_failed("login passwd");
			break;
		}
	} else if (is_rm) {
		switch (store_login_remove(st, login)) {
		case STORE_OK:
			if (o.json)
				login_done(&o, login, NULL, "removed", NULL);
			else
				printf("login %s removed\n", login);
			break;
		case STORE_NOTFOUND:
			code = no_such("login", login);
			break;
		default:
			code = db_failed("login remove");
			break;
		}
	} else {
		struct list_ctx lc = {.json = o.json};
		enum store_res r = store_login_list(st, acc_arg ? account : NULL, print_login, &lc);
		if (r == STORE_OK && o.json)
			fputs(lc.n == 0 ? "[]\n" : "]\n", stdout);
		if (r == STORE_NOTFOUND)
			code = no_such("account", account);
		else if (r != STORE_OK)
			code = db_failed("login list");
	}
	store_close(st);
	rc = cli_finish(code);
out:
	sodium_memzero(pw, sizeof(pw));
	return rc;
}
