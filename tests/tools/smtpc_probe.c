/* smtpc test driver for tests/e2e/test_smtpc.py: opens one outbound SMTP connection with
 * src/queue/smtpc.c to a test sink, runs --count transactions on it and prints one JSON
 * object per event on stdout ("open", then "tx" per transaction). Exits 0 whatever the SMTP
 * outcome; 2 on usage errors. Untrusted input: the sink's replies (through smtpc). Test
 * tool only. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "queue/smtpc.h"
#include "smtp/parse.h"
#include "util/log.h"

#define MAX_RCPTS 64

struct probe {
	struct event_base *base;
	struct smtpc_tx tx;
	struct smtpc_rcpt rcpts[MAX_RCPTS];
	int count, done;
	bool quit_at_end;
};

static void usage(void)
{
	fprintf(stderr,
	        "usage: smtpc_probe --ip IP --port N --host NAME [--domain D] [--helo NAME]\n"
	        "  [--level none|may|encrypt|verify] [--implicit] [--ca FILE] [--auth USER:PASS]\n"
	        "  [--source IP] [--from ADDR] [--rcpt ADDR]... [--msgfile FILE] [--count K]\n"
	        "  [--smtputf8] [--8bit] [--binary] [--notify LIST] [--orcpt X] [--ret FULL|HDRS]\n"
	        "  [--envid X] [--connect-timeout S] [--no-quit] [--debug]\n");
	exit(2);
}

/* A JSON string (control bytes and non-ASCII escaped: the output is always valid JSON). */
static void jstr(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static void jkey(const char *k, bool first)
{
	printf("%s\"%s\":", first ? "" : ",", k);
}

static void jres(const struct smtpc_result *r)
{
	jkey("code", false);
	printf("%d", r->code);
	jkey("enh", false);
	jstr(r->enh);
	jkey("reply", false);
	jstr(r->reply);
	jkey("reason", false);
	jstr(r->reason);
	jkey("stage", false);
	jstr(smtpc_stage_name(r->stage));
	jkey("permanent", false);
	printf("%s", r->permanent ? "true" : "false");
}

static void on_tx(struct smtpc *c, void *arg, struct smtpc_tx *tx);

static void next_tx(struct probe *pr, struct smtpc *c)
{
	if (pr->done >= pr->count || !smtpc_usable(c)) {
		if (pr->quit_at_end)
			smtpc_quit(c);
		else
			smtpc_free(c);
		return;
	}
	if (smtpc_send(c, &pr->tx, on_tx, pr) != 0) {
		printf("{\"event\":\"error\",\"what\":\"smtpc_send refused\"}\n");
		smtpc_free(c);
	}
}

static void on_tx(struct smtpc *c, void *arg, struct smtpc_tx *tx)
{
	struct probe *pr = arg;
	pr->done++;
	printf("{");
	jkey("event", true);
	jstr("tx");
	jkey("n", false);
	printf("%d", pr->done);
	jres(&tx->res);
	jkey("dsn_passed", false);
	printf("%s", tx->dsn_passed ? "true" : "false");
	jkey("usable", false);
	printf("%s", smtpc_usable(c) ? "true" : "false");
	jkey("rcpts", false);
	printf("[");
	for (int i = 0; i < tx->nrcpts; i++) {
		printf("%s{", i ? "," : "");
		jkey("addr", true);
		jstr(tx->rcpts[i].addr);
		jkey("ok", false);
		printf("%s", tx->rcpts[i].ok ? "true" : "false");
		jres(&tx->rcpts[i].res);
		printf("}");
	}
	printf("]}\n");
	fflush(stdout);
	next_tx(pr, c);
}

static void on_open(struct smtpc *c, void *arg, const struct smtpc_result *fail,
                    const struct smtpc_info *info)
{
	struct probe *pr = arg;
	printf("{");
	jkey("event", true);
	jstr("open");
	jkey("ok", false);
	printf("%s", fail ? "false" : "true");
	jkey("ip", false);
	jstr(info->ip);
	jkey("greeting", false);
	jstr(info->greeting);
	jkey("esmtp", false);
	printf("%s", info->esmtp ? "true" : "false");
#define JB(name)                                                                                   \
	jkey(#name, false);                                                                        \
	printf("%s", info->name ? "true" : "false")
	JB(starttls);
	JB(pipelining);
	JB(eightbitmime);
	JB(smtputf8);
	JB(dsn);
	JB(chunking);
	JB(binarymime);
	JB(auth_plain);
	JB(auth_login);
	JB(size);
	JB(tls);
#undef JB
	jkey("max_size", false);
	printf("%llu", (unsigned long long)info->max_size);
	jkey("tls_version", false);
	jstr(info->tls_version);
	jkey("tls_cipher", false);
	jstr(info->tls_cipher);
	jkey("cert", false);
	jstr(smtpc_cert_name(info->cert));
	jkey("cert_error", false);
	jstr(info->cert_error);
	if (fail) {
		jres(fail);
		jkey("tls_failed", false);
		printf("%s", fail->tls_failed ? "true" : "false");
		jkey("policy", false);
		printf("%s", fail->policy ? "true" : "false");
	} else {
		jkey("reason", false);
		jstr("");
		jkey("tls_failed", false);
		printf("false");
		jkey("policy", false);
		printf("false");
	}
	printf("}\n");
	fflush(stdout);
	if (!fail)
		next_tx(pr, c);
}

static int parse_ip(const char *s, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, s, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		return 0;
	}
	return -1;
}

static int parse_level(const char *s, enum tls_level *l)
{
	static const char *const names[] = {"none", "may", "encrypt", "verify"};
	for (int i = 0; i < 4; i++)
		if (strcmp(s, names[i]) == 0) {
			*l = (enum tls_level)i;
			return 0;
		}
	return -1;
}

static unsigned parse_notify(const char *s)
{
	unsigned n = 0;
	if (strstr(s, "NEVER"))
		n |= SMTP_NOTIFY_NEVER;
	if (strstr(s, "SUCCESS"))
		n |= SMTP_NOTIFY_SUCCESS;
	if (strstr(s, "FAILURE"))
		n |= SMTP_NOTIFY_FAILURE;
	if (strstr(s, "DELAY"))
		n |= SMTP_NOTIFY_DELAY;
	return n;
}

/* The default message when --msgfile is not given (a temporary file: smtpc reads fds). */
static int default_msg(uint64_t *len)
{
	static const char msg[] = "From: probe@example.test\r\nTo: rcpt@example.test\r\n"
	                          "Subject: smtpc probe\r\n\r\nHello from smtpc_probe.\r\n";
	FILE *f = tmpfile();
	if (!f || fwrite(msg, 1, sizeof(msg) - 1, f) != sizeof(msg) - 1 || fflush(f) != 0)
		return -1;
	*len = sizeof(msg) - 1;
	return dup(fileno(f)); /* the FILE leaks until exit; the fd is what matters */
}

int main(int argc, char **argv)
{
	struct smtpc_params p;
	struct probe pr;
	const char *ip = NULL, *ca = "", *auth = NULL, *msgfile = NULL, *source = NULL;
	const char *notify = NULL, *orcpt = "";
	char user[256] = "", *pass = NULL;
	struct sockaddr_storage src;
	bool debug = false;
	int connect_timeout = 10;

	memset(&p, 0, sizeof(p));
	memset(&pr, 0, sizeof(pr));
	p.level = TLS_LEVEL_MAY;
	p.domain = "example.test";
	p.helo = "probe.example.test";
	pr.count = 1;
	pr.quit_at_end = true;
	pr.tx.from = "sender@example.test";
	pr.tx.envid = "";
	pr.tx.body_type = SMTP_BODY_7BIT;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG()                                                                                      \
	do {                                                                                       \
		if (!v)                                                                            \
			usage();                                                                   \
		i++;                                                                               \
	} while (0)
		if (strcmp(a, "--ip") == 0) {
			ARG();
			ip = v;
		} else if (strcmp(a, "--port") == 0) {
			ARG();
			p.port = (int)strtol(v, NULL, 10);
		} else if (strcmp(a, "--host") == 0) {
			ARG();
			p.host = v;
		} else if (strcmp(a, "--domain") == 0) {
			ARG();
			p.domain = v;
		} else if (strcmp(a, "--helo") == 0) {
			ARG();
			p.helo = v;
		} else if (strcmp(a, "--level") == 0) {
			ARG();
			if (parse_level(v, &p.level))
				usage();
		} else if (strcmp(a, "--implicit") == 0)
			p.mode = SMTPC_IMPLICIT;
		else if (strcmp(a, "--ca") == 0) {
			ARG();
			ca = v;
		} else if (strcmp(a, "--auth") == 0) {
			ARG();
			auth = v;
		} else if (strcmp(a, "--source") == 0) {
			ARG();
			source = v;
		} else if (strcmp(a, "--from") == 0) {
			ARG();
			pr.tx.from = v;
		} else if (strcmp(a, "--rcpt") == 0) {
			ARG();
			if (pr.tx.nrcpts >= MAX_RCPTS)
				usage();
			pr.rcpts[pr.tx.nrcpts++].addr = v;
		} else if (strcmp(a, "--msgfile") == 0) {
			ARG();
			msgfile = v;
		} else if (strcmp(a, "--count") == 0) {
			ARG();
			pr.count = (int)strtol(v, NULL, 10);
		} else if (strcmp(a, "--smtputf8") == 0)
			pr.tx.smtputf8 = true;
		else if (strcmp(a, "--8bit") == 0)
			pr.tx.body_type = SMTP_BODY_8BITMIME;
		else if (strcmp(a, "--binary") == 0)
			pr.tx.body_type = SMTP_BODY_BINARYMIME;
		else if (strcmp(a, "--notify") == 0) {
			ARG();
			notify = v;
		} else if (strcmp(a, "--orcpt") == 0) {
			ARG();
			orcpt = v;
		} else if (strcmp(a, "--ret") == 0) {
			ARG();
			pr.tx.ret = strcmp(v, "FULL") == 0 ? SMTP_RET_FULL : SMTP_RET_HDRS;
		} else if (strcmp(a, "--envid") == 0) {
			ARG();
			pr.tx.envid = v;
		} else if (strcmp(a, "--no-quit") == 0)
			pr.quit_at_end = false;
		else if (strcmp(a, "--connect-timeout") == 0) {
			ARG();
			connect_timeout = (int)strtol(v, NULL, 10);
		} else if (strcmp(a, "--debug") == 0)
			debug = true;
		else
			usage();
#undef ARG
	}
	if (!ip || !p.host || p.port <= 0 || pr.count < 0)
		usage();
	if (parse_ip(ip, &p.addr) != 0)
		usage();
	if (source) {
		if (parse_ip(source, &src) != 0)
			usage();
		p.source = &src;
	}
	if (pr.tx.nrcpts == 0)
		pr.rcpts[pr.tx.nrcpts++].addr = "rcpt@example.test";
	for (int i = 0; i < pr.tx.nrcpts; i++) {
		pr.rcpts[i].notify = notify ? parse_notify(notify) : 0;
		pr.rcpts[i].orcpt = orcpt;
	}
	pr.tx.rcpts = pr.rcpts;
	if (auth) {
		const char *colon = strchr(auth, ':');
		if (!colon || (size_t)(colon - auth) >= sizeof(user))
			usage();
		memcpy(user, auth, (size_t)(colon - auth));
		user[colon - auth] = '\0';
		pass = (char *)colon + 1;
		p.auth_user = user;
		p.auth_pass = pass;
	}

	log_init("smtpc_probe", false, debug);
	/* a peer that closes mid-body must give an error, not kill us */
	signal(SIGPIPE, SIG_IGN);

	if (msgfile) {
		struct stat st;
		pr.tx.fd = open(msgfile, O_RDONLY | O_CLOEXEC);
		if (pr.tx.fd < 0 || fstat(pr.tx.fd, &st) != 0) {
			fprintf(stderr, "smtpc_probe: %s: %s\n", msgfile, strerror(errno));
			return 2;
		}
		pr.tx.len = (uint64_t)st.st_size;
	} else {
		pr.tx.fd = default_msg(&pr.tx.len);
		if (pr.tx.fd < 0) {
			fprintf(stderr, "smtpc_probe: tmpfile: %s\n", strerror(errno));
			return 2;
		}
	}

	char err[512];
	SSL_CTX *ctx = NULL;
	if (p.level != TLS_LEVEL_NONE) {
		ctx = smtpc_tls_ctx_new(ca, TLS1_2_VERSION, err, sizeof(err));
		if (!ctx) {
			fprintf(stderr, "smtpc_probe: %s\n", err);
			return 2;
		}
	}
	p.ctx = ctx;
	p.connect_timeout = connect_timeout;

	pr.base = event_base_new();
	struct smtpc *c = smtpc_open(pr.base, &p, on_open, &pr);
	if (!c) {
		printf("{\"event\":\"error\",\"what\":\"smtpc_open refused the parameters\"}\n");
	} else {
		event_base_dispatch(pr.base);
	}
	event_base_free(pr.base);
	SSL_CTX_free(ctx);
	close(pr.tx.fd);
	return 0;
}
