/* Unit tests for src/conf/conf.c: defaults, every value type, ranges, exact "file:line:
 * option: message" errors, includes, certificate pairs, quoting and comments, the print ->
 * parse round trip, and `sealmail config check|show`. Runs as a test binary; the "untrusted"
 * input is the config text written here to temp files under /tmp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"

static char tmpdir[64];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(p);
}

static int group_setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/sealmail-test-conf-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	unsetenv("SEALMAIL_CONF");
	unsetenv("SEALMAIL_HOME");
	return 0;
}

static int group_teardown(void **state)
{
	return nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_file(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Writes text to a new mkstemp file in tmpdir; the name stays valid for 8 more calls. */
static const char *tmpconf_n(const char *text, size_t len)
{
	static char names[8][128];
	static int next;
	char *p = names[next++ % 8];
	int fd;

	snprintf(p, 128, "%s/conf-XXXXXX", tmpdir);
	fd = mkstemp(p);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
	return p;
}

static const char *tmpconf(const char *text)
{
	return tmpconf_n(text, strlen(text));
}

static struct conf *new_conf(void)
{
	struct conf *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	return c;
}

/* Loads text that must be valid. */
static struct conf *load_ok(const char *text)
{
	struct conf *c = new_conf();
	struct conf_error err;
	const char *p = tmpconf(text);
	int rc = conf_load(p, c, &err);
	if (rc != 0)
		fail_msg("unexpected error: %s", err.msg);
	return c;
}

/* Loads text that must fail with "<its path>:<suffix>". */
static void expect_error(const char *text, const char *suffix)
{
	struct conf *c = new_conf();
	struct conf_error err;
	char want[1024];
	const char *p = tmpconf(text);

	assert_int_equal(conf_load(p, c, &err), -1);
	snprintf(want, sizeof(want), "%s:%s", p, suffix);
	assert_string_equal(err.msg, want);
	free(c);
}

/* Runs conf_cli with stdout and stderr captured. */
static int run_cli(char *out, size_t outsz, char *errb, size_t errsz, int argc, char **argv)
{
	char po[128], pe[128];
	int so = dup(1), se = dup(2), fo, fe, rc;
	ssize_t n;

	snprintf(po, sizeof(po), "%s/out-XXXXXX", tmpdir);
	snprintf(pe, sizeof(pe), "%s/err-XXXXXX", tmpdir);
	fo = mkstemp(po);
	fe = mkstemp(pe);
	assert_true(fo >= 0 && fe >= 0);
	fflush(stdout);
	fflush(stderr);
	dup2(fo, 1);
	dup2(fe, 2);
	rc = conf_cli(argc, argv);
	fflush(stdout);
	fflush(stderr);
	dup2(so, 1);
	dup2(se, 2);
	close(so);
	close(se);
	n = pread(fo, out, outsz - 1, 0);
	out[n > 0 ? n : 0] = '\0';
	n = pread(fe, errb, errsz - 1, 0);
	errb[n > 0 ? n : 0] = '\0';
	close(fo);
	close(fe);
	unlink(po);
	unlink(pe);
	return rc;
}

/* One conf_print line: "name = value", padded, then "# source". */
static const char *pline(const char *name_value, const char *src)
{
	static char buf[2][PATH_MAX + 256];
	static int k;
	char *b = buf[k++ % 2];
	snprintf(b, sizeof(buf[0]), "%-39s # %s\n", name_value, src);
	return b;
}

static char *print_to_string(const struct conf *c, bool nondefault_only)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	conf_print(f, c, nondefault_only);
	fclose(f);
	return buf;
}

/* ---- defaults ---- */

static void test_defaults_embedded(void **state)
{
	struct conf *c = new_conf();
	char cwd[PATH_MAX], want[PATH_MAX + 32];

	conf_defaults(c);
	assert_string_equal(c->path, "");
	assert_true(c->hostname[0] != '\0');
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	snprintf(want, sizeof(want), "%s/sealmail-data", cwd);
	assert_string_equal(c->data_dir, want);
	assert_string_equal(c->user, "");
	assert_int_equal(c->workers, 0);
	assert_string_equal(c->postmaster, "postmaster@localhost");
	assert_true(c->seed_localhost);
	assert_true(c->listeners[CONF_LST_MX].enabled);
	assert_string_equal(c->listeners[CONF_LST_MX].addr, "127.0.0.1");
	assert_int_equal(c->listeners[CONF_LST_MX].port, 2525);
	assert_int_equal(c->listeners[CONF_LST_SUBMISSION].port, 2587);
	assert_int_equal(c->listeners[CONF_LST_SUBMISSIONS].port, 2465);
	assert_int_equal(c->ncerts, 0);
	assert_true(c->tls_resumption);
	assert_int_equal(c->max_message_size, LIM_MSG_SIZE_DEFAULT);
	assert_int_equal(c->max_recipients, LIM_RCPTS_DEFAULT);
	assert_int_equal(c->max_errors, LIM_ERRORS_DEFAULT);
	assert_int_equal(c->max_connections, LIM_CONNECTIONS_DEFAULT);
	assert_int_equal(c->max_connections_per_ip, LIM_CONNECTIONS_PER_IP_DEFAULT);
	assert_int_equal(c->idle_timeout, LIM_IDLE_TIMEOUT_DEFAULT);
	assert_int_equal(c->data_timeout, LIM_DATA_TIMEOUT_DEFAULT);
	assert_int_equal(c->max_received, LIM_RECEIVED_DEFAULT);
	assert_int_equal(c->shutdown_grace, LIM_SHUTDOWN_GRACE_DEFAULT);
	assert_int_equal(c->queue_scan_interval, 60);
	assert_int_equal(c->queue_retry_interval, 300);
	assert_int_equal(c->log_dest, CONF_LOG_STDERR);
	assert_false(c->log_debug);
	for (int i = 0; i < CONF_OPT_MAX; i++)
		assert_int_equal(c->src[i].line, 0);

	setenv("SEALMAIL_HOME", "/srv/sm", 1);
	conf_defaults(c);
	assert_string_equal(c->data_dir, "/srv/sm");
	setenv("SEALMAIL_HOME", "rel/dir", 1);
	conf_defaults(c);
	snprintf(want, sizeof(want), "%s/rel/dir", cwd);
	assert_string_equal(c->data_dir, want);
	setenv("SEALMAIL_HOME", "bad\ndir", 1);
	conf_defaults(c);
	snprintf(want, sizeof(want), "%s/sealmail-data", cwd);
	assert_string_equal(c->data_dir, want);
	unsetenv("SEALMAIL_HOME");
	free(c);
}

static void test_defaults_with_file(void **state)
{
	struct conf *c = load_ok("# nothing set\n");
	char want[300];

	assert_false(c->seed_localhost);
	assert_string_equal(c->data_dir, "/var/lib/sealmail");
	assert_string_equal(c->user, "sealmail");
	assert_string_equal(c->listeners[CONF_LST_MX].addr, "0.0.0.0");
	assert_int_equal(c->listeners[CONF_LST_MX].port, 25);
	assert_int_equal(c->listeners[CONF_LST_SUBMISSION].port, 587);
	assert_int_equal(c->listeners[CONF_LST_SUBMISSIONS].port, 465);
	snprintf(want, sizeof(want), "postmaster@%s", c->hostname);
	assert_string_equal(c->postmaster, want);
	free(c);

	/* postmaster follows the hostname set in the file, unless set itself */
	c = load_ok("hostname = mx.example.net\n");
	assert_string_equal(c->hostname, "mx.example.net");
	assert_string_equal(c->postmaster, "postmaster@mx.example.net");
	free(c);
	c = load_ok("hostname = mx.example.net\npostmaster = admin@example.net\n");
	assert_string_equal(c->postmaster, "admin@example.net");
	free(c);
}

/* ---- every type ---- */

static void test_types(void **state)
{
	struct conf *c = load_ok("hostname = mx.example.net\n"
	                         "user = mail-user_1\n"
	                         "workers = 4\n"
	                         "data_dir = /srv/sealmail\n"
	                         "[listen]\n"
	                         "mx = [::]:25\n"
	                         "submission = 192.0.2.1:2587\n"
	                         "submissions = \"\"\n"
	                         "[tls]\n"
	                         "resumption = off\n"
	                         "[limits]\n"
	                         "message_size = 10M\n"
	                         "recipients = 500\n"
	                         "idle_timeout = 90\n"
	                         "data_timeout = 15m\n"
	                         "shutdown_grace = 0\n"
	                         "[queue]\n"
	                         "scan_interval = 1h\n"
	                         "retry_interval = 30s\n"
	                         "[log]\n"
	                         "destination = syslog\n"
	                         "debug = TRUE\n");
	assert_string_equal(c->hostname, "mx.example.net");
	assert_string_equal(c->user, "mail-user_1");
	assert_int_equal(c->workers, 4);
	assert_string_equal(c->data_dir, "/srv/sealmail");
	assert_true(c->listeners[CONF_LST_MX].enabled);
	assert_string_equal(c->listeners[CONF_LST_MX].addr, "::");
	assert_int_equal(c->listeners[CONF_LST_MX].port, 25);
	assert_string_equal(c->listeners[CONF_LST_SUBMISSION].addr, "192.0.2.1");
	assert_int_equal(c->listeners[CONF_LST_SUBMISSION].port, 2587);
	assert_false(c->listeners[CONF_LST_SUBMISSIONS].enabled);
	assert_false(c->tls_resumption);
	assert_int_equal(c->max_message_size, 10 * 1024 * 1024);
	assert_int_equal(c->max_recipients, 500);
	assert_int_equal(c->idle_timeout, 90);
	assert_int_equal(c->data_timeout, 900);
	assert_int_equal(c->shutdown_grace, 0);
	assert_int_equal(c->queue_scan_interval, 3600);
	assert_int_equal(c->queue_retry_interval, 30);
	assert_int_equal(c->log_dest, CONF_LOG_SYSLOG);
	assert_true(c->log_debug);
	free(c);
}

static void test_sizes(void **state)
{
	static const struct {
		const char *v;
		uint64_t want;
	} cases[] = {
	    {"1K", 1024},    {"1k", 1024},    {"2M", 2 << 20},
	    {"2m", 2 << 20}, {"1G", 1 << 30}, {"2G", 2ULL << 30},
	    {"1536", 1536},  {"1024", 1024},  {"2147483648", 2ULL << 30},
	};
	char text[128];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text), "[limits]\nmessage_size = %s\n", cases[i].v);
		struct conf *c = load_ok(text);
		assert_int_equal(c->max_message_size, cases[i].want);
		free(c);
	}
}

static void test_durations_and_bools(void **state)
{
	static const struct {
		const char *v;
		int want;
	} durs[] = {{"10", 10}, {"10s", 10}, {"2m", 120}, {"1h", 3600}, {"61s", 61}};
	static const struct {
		const char *v;
		bool want;
	} bools[] = {{"yes", true}, {"no", false},  {"true", true}, {"false", false},
	             {"on", true},  {"off", false}, {"Yes", true},  {"OFF", false}};
	char text[128];

	for (size_t i = 0; i < sizeof(durs) / sizeof(durs[0]); i++) {
		snprintf(text, sizeof(text), "[limits]\nidle_timeout = %s\n", durs[i].v);
		struct conf *c = load_ok(text);
		assert_int_equal(c->idle_timeout, durs[i].want);
		free(c);
	}
	for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
		snprintf(text, sizeof(text), "[log]\ndebug = %s\n", bools[i].v);
		struct conf *c = load_ok(text);
		assert_int_equal(c->log_debug, bools[i].want);
		free(c);
	}
}

static void test_listen_forms(void **state)
{
	struct conf *c = load_ok("[listen]\nmx = [0:0::1]:2525\nsubmission =\n"
	                         "submissions = 127.0.0.1:65535\n");
	assert_string_equal(c->listeners[CONF_LST_MX].addr, "::1");
	assert_int_equal(c->listeners[CONF_LST_MX].port, 2525);
	assert_false(c->listeners[CONF_LST_SUBMISSION].enabled);
	assert_int_equal(c->listeners[CONF_LST_SUBMISSIONS].port, 65535);
	free(c);
}

/* ---- ranges and bad values, exact messages ---- */

static void test_bad_values(void **state)
{
	static const struct {
		const char *text, *msg;
	} cases[] = {
	    {"[limits]\nrecipients = 0\n", "2: limits.recipients: 0 is below the minimum 1"},
	    {"[limits]\nrecipients = 10001\n",
	     "2: limits.recipients: 10001 is above the maximum 10000"},
	    {"[limits]\nmessage_size = 3G\n", "2: limits.message_size: 3G is above the maximum 2G"},
	    {"[limits]\nmessage_size = 1000\n",
	     "2: limits.message_size: 1000 is below the minimum 1K"},
	    {"[limits]\nmessage_size = 5T\n",
	     "2: limits.message_size: \"5T\" is not a size (bytes, or with K, M or G: 512K, 35M, "
	     "1G)"},
	    {"[limits]\nmessage_size = 99999999999G\n",
	     "2: limits.message_size: 99999999999G is above the maximum 2G"},
	    {"[limits]\nidle_timeout = 5s\n",
	     "2: limits.idle_timeout: 5s is below the minimum 10s"},
	    {"[limits]\nidle_timeout = 2h\n", "2: limits.idle_timeout: 2h is above the maximum 1h"},
	    {"[limits]\nidle_timeout = 5x\n",
	     "2: limits.idle_timeout: \"5x\" is not a duration (seconds, or with s, m, h or d: "
	     "30s, 5m, 1h, 5d)"},
	    {"[limits]\nshutdown_grace = 11m\n",
	     "2: limits.shutdown_grace: 11m is above the maximum 10m"},
	    {"[limits]\nconnections = 1000001\n",
	     "2: limits.connections: 1000001 is above the maximum 1000000"},
	    {"[limits]\nreceived_headers = 4\n",
	     "2: limits.received_headers: 4 is below the minimum 5"},
	    {"workers = ten\n", "1: workers: \"ten\" is not a whole number"},
	    {"workers = -1\n", "1: workers: -1 is below the minimum 0"},
	    {"workers = 257\n", "1: workers: 257 is above the maximum 256"},
	    {"workers = 99999999999999999999999\n",
	     "1: workers: 99999999999999999999999 is above the maximum 256"},
	    {"workers = 1 2\n", "1: workers: \"1 2\" is not a whole number"},
	    {"workers = 0x10\n", "1: workers: \"0x10\" is not a whole number"},
	    {"workers = +3\n", "1: workers: \"+3\" is not a whole number"},
	    {"workers =\n", "1: workers: \"\" is not a whole number"},
	    {"workers = 4K\n", "1: workers: \"4K\" is not a whole number"},
	    {"[log]\ndebug = maybe\n",
	     "2: log.debug: \"maybe\" is not yes or no (true/false and on/off work too)"},
	    {"[log]\ndestination = file\n",
	     "2: log.destination: \"file\" is not one of: stderr, syslog"},
	    {"[listen]\nmx = localhost:25\n",
	     "2: listen.mx: \"localhost:25\": the address must be a numeric IPv4 address (host "
	     "names are not allowed; IPv6 goes in brackets: [::1]:25)"},
	    {"[listen]\nmx = ::1:25\n",
	     "2: listen.mx: \"::1:25\": an IPv6 address goes in brackets, e.g. [::]:25"},
	    {"[listen]\nmx = 1.2.3.4:70000\n",
	     "2: listen.mx: \"1.2.3.4:70000\": the port must be a number from 1 to 65535"},
	    {"[listen]\nmx = 1.2.3.4:0\n",
	     "2: listen.mx: \"1.2.3.4:0\": the port must be a number from 1 to 65535"},
	    {"[listen]\nmx = 1.2.3.4:\n",
	     "2: listen.mx: \"1.2.3.4:\": the port must be a number from 1 to 65535"},
	    {"[listen]\nmx = 25\n",
	     "2: listen.mx: \"25\": expected IP:PORT, e.g. 0.0.0.0:25 or [::]:25 (\"\" turns "
	     "the listener off)"},
	    {"[listen]\nmx = [::1]\n",
	     "2: listen.mx: \"[::1]\": expected :PORT after ], e.g. [::]:25"},
	    {"[listen]\nmx = [::1:25\n",
	     "2: listen.mx: \"[::1:25\": missing ] after the IPv6 address"},
	    {"[listen]\nmx = [1.2.3.4]:25\n",
	     "2: listen.mx: \"[1.2.3.4]:25\": not a numeric IPv6 address"},
	    {"[listen]\nmx = 0.0.0.0:25\nsubmission = 0.0.0.0:25\n",
	     "3: listen.submission: same address as listen.mx (0.0.0.0:25)"},
	    {"hostname = bad_host\n",
	     "1: hostname: \"bad_host\" must be a domain name (letters, digits, '-' and '.')"},
	    {"hostname = -a.example\n",
	     "1: hostname: \"-a.example\" must be a domain name: labels of 1-63 letters, digits "
	     "and inner hyphens, separated by dots"},
	    {"hostname = a..example\n",
	     "1: hostname: \"a..example\" must be a domain name: labels of 1-63 letters, digits "
	     "and inner hyphens, separated by dots"},
	    {"hostname =\n", "1: hostname: \"\" must be a domain name of 1 to 253 characters"},
	    {"user = root user\n",
	     "1: user: \"root user\" must be a user name (letters, digits, '_', '.', '-')"},
	    {"user = -x\n",
	     "1: user: \"-x\" must be a user name of at most 32 characters, or \"\""},
	    {"postmaster = nobody\n",
	     "1: postmaster: \"nobody\" must be an address like postmaster@example.net"},
	    {"postmaster = a b@example.net\n",
	     "1: postmaster: \"a b@example.net\" has a character not allowed before the @"},
	    {"data_dir = \"\"\n", "1: data_dir: needs a path"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_error(cases[i].text, cases[i].msg);
}

static void test_syntax_errors(void **state)
{
	static const struct {
		const char *text, *msg;
	} cases[] = {
	    {"hostname = \"mx.example.net\n", "1: hostname: the quoted value has no closing \""},
	    {"hostname = \"mx\" x\n", "1: hostname: unexpected text after the closing quote"},
	    {"hostname = \"a\\qb\"\n",
	     "1: hostname: in quotes, a backslash may only escape \" or \\"},
	    {"hostname\n", "1: hostname: expected '=' after the option name"},
	    {"hostname mx.example.net\n", "1: hostname: expected '=' after the option name"},
	    {"= 5\n", "1: expected \"key = value\" or \"[section]\""},
	    {"\n\n[limits\n", "3: missing ] in the section header"},
	    {"[limits] x\n", "1: unexpected text after ]"},
	    {"[ ]\n", "1: empty section name []"},
	    {"[limit]\n", "1: unknown section [limit] (did you mean [limits]?)"},
	    {"[bogus]\n", "1: unknown section [bogus]"},
	    {"[limits]\nrecipient = 5\n",
	     "2: limits.recipient: unknown option (did you mean limits.recipients?)"},
	    {"[limits]\nhostname = x\n",
	     "2: limits.hostname: unknown option (did you mean hostname? top-level options go "
	     "before the first [section])"},
	    {"[tls]\nmx = 1.2.3.4:25\n", "2: tls.mx: unknown option (did you mean listen.mx?)"},
	    {"frobnicate = 1\n", "1: frobnicate: unknown option"},
	    {"hostnme = a\n", "1: hostnme: unknown option (did you mean hostname?)"},
	    {"limit.recipients = 5\n",
	     "1: limit.recipients: unknown option (did you mean limits.recipients?)"},
	    {"limits.a.b = 5\n", "1: limits.a.b: unknown option"},
	    {".hostname = x\n", "1: .hostname: unknown option (did you mean hostname?)"},
	    {"a\x01 = b\n", "1: control character 0x01 in column 2"},
	    {"hostname = a\x7f\n", "1: control character 0x7f in column 13"},
	    {"[tls]\nkey = /k\n",
	     "2: tls.key: no tls.cert before it (write tls.cert = CHAIN, then tls.key = KEY)"},
	    {"[tls]\ncert = /c\n", "2: tls.cert: no tls.key follows it"},
	    {"[tls]\ncert =\n", "2: tls.cert: needs a path"},
	    {"include =\n", "1: include: needs a file name or pattern"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_error(cases[i].text, cases[i].msg);
}

static void test_bad_bytes(void **state)
{
	struct conf *c = new_conf();
	struct conf_error err;
	char want[256];
	static const char nul[] = "hostname = a\0b\n";
	const char *p = tmpconf_n(nul, sizeof(nul) - 1);

	assert_int_equal(conf_load(p, c, &err), -1);
	snprintf(want, sizeof(want), "%s:1: control character 0x00 in column 13", p);
	assert_string_equal(err.msg, want);

	/* 4096 bytes is the longest line; one more is an error */
	char *big = malloc(5000);
	assert_non_null(big);
	memset(big, 'x', 4200);
	big[0] = '#';
	big[4096] = '\n';
	memcpy(big + 4097, "workers = 2\n", 13);
	p = tmpconf(big);
	assert_int_equal(conf_load(p, c, &err), 0);
	assert_int_equal(c->workers, 2);
	memset(big, 'x', 4200);
	big[0] = '#';
	big[4097] = '\n';
	big[4098] = '\0';
	p = tmpconf(big);
	assert_int_equal(conf_load(p, c, &err), -1);
	snprintf(want, sizeof(want), "%s:1: line longer than 4096 bytes", p);
	assert_string_equal(err.msg, want);
	free(big);

	/* missing file, directory */
	snprintf(want, sizeof(want), "%s/does-not-exist.conf", tmpdir);
	assert_int_equal(conf_load(want, c, &err), -1);
	assert_non_null(strstr(err.msg, "does-not-exist.conf: No such file or directory"));
	assert_int_equal(conf_load(tmpdir, c, &err), -1);
	snprintf(want, sizeof(want), "%s: not a regular file", tmpdir);
	assert_string_equal(err.msg, want);
	assert_int_equal(conf_load("", c, &err), -1);
	assert_int_equal(conf_load(NULL, c, &err), -1);
	free(c);
}

/* A failed load leaves the caller's config as it was (a bad SIGHUP keeps the old one). */
static void test_failed_load_keeps_conf(void **state)
{
	struct conf *c = load_ok("workers = 3\n");
	struct conf *copy = new_conf();
	struct conf_error err;

	memcpy(copy, c, sizeof(*c));
	assert_int_equal(conf_load(tmpconf("workers = 4\nworkers = x\n"), c, &err), -1);
	assert_memory_equal(c, copy, sizeof(*c));
	free(c);
	free(copy);
}

/* ---- quoting and comments ---- */

static void test_quotes_and_comments(void **state)
{
	struct conf *c = load_ok("\xEF\xBB\xBF# full-line comment\r\n"
	                         "   # indented comment\r\n"
	                         "\r\n"
	                         "hostname = \"mx.example.net\"   # quoted, then a comment\r\n"
	                         "\tuser=mail\t\r\n"
	                         "data_dir = /srv/a#b # the first # is part of the value\n"
	                         "postmaster =\"pm@example.net\"#comment\n"
	                         "  [ limits ]   # section comment\n"
	                         "recipients=7\n"
	                         "limits.errors = 9\n"
	                         "[tls]\n"
	                         "cert = \"/etc/ssl/my \\\"odd\\\" #name.pem\"\n"
	                         "key = \"/etc/ssl/back\\\\slash.pem\"\n"
	                         "[log]\n"
	                         "debug = yes");
	assert_string_equal(c->hostname, "mx.example.net");
	assert_string_equal(c->user, "mail");
	assert_string_equal(c->data_dir, "/srv/a#b");
	assert_string_equal(c->postmaster, "pm@example.net");
	assert_int_equal(c->max_recipients, 7);
	assert_int_equal(c->max_errors, 9);
	assert_int_equal(c->ncerts, 1);
	assert_string_equal(c->certs[0].cert_file, "/etc/ssl/my \"odd\" #name.pem");
	assert_string_equal(c->certs[0].key_file, "/etc/ssl/back\\slash.pem");
	assert_true(c->log_debug);
	free(c);

	/* '#' right after '=' is a comment: the value is empty */
	expect_error("workers =#4\n", "1: workers: \"\" is not a whole number");
	expect_error("[limits]\nrecipients = 7#x\n",
	             "2: limits.recipients: \"7#x\" is not a whole number");
}

/* ---- sources ---- */

static void test_sources(void **state)
{
	const char *p = tmpconf("\n[limits]\n\nrecipients = 5\n");
	struct conf *c = new_conf();
	struct conf_error err;

	assert_int_equal(conf_load(p, c, &err), 0);
	assert_string_equal(c->path, p);
	int found = 0;
	for (int i = 0; i < CONF_OPT_MAX; i++) {
		if (c->src[i].line == 0) {
			assert_null(conf_source_file(c, c->src[i]));
			continue;
		}
		found++;
		assert_int_equal(c->src[i].line, 4);
		assert_string_equal(conf_source_file(c, c->src[i]), p);
	}
	assert_int_equal(found, 1);
	free(c);
}

/* ---- include ---- */

static void mkdir_in(const char *rel, char *out, size_t n)
{
	snprintf(out, n, "%s/%s", tmpdir, rel);
	assert_true(mkdir(out, 0700) == 0 || errno == EEXIST);
}

static void file_in(const char *rel, const char *text, char *out, size_t n)
{
	snprintf(out, n, "%s/%s", tmpdir, rel);
	write_file(out, text, strlen(text));
}

static void test_include(void **state)
{
	char d[PATH_MAX], main_p[PATH_MAX], a[PATH_MAX], b[PATH_MAX], x[PATH_MAX];
	char want[2 * PATH_MAX + 128];
	struct conf *c = new_conf();
	struct conf_error err;

	mkdir_in("inc", d, sizeof(d));
	mkdir_in("inc/conf.d", d, sizeof(d));
	mkdir_in("inc/empty.d", d, sizeof(d));
	file_in("inc/conf.d/20-b.conf", "[limits]\nrecipients = 7\n", b, sizeof(b));
	file_in("inc/conf.d/10-a.conf", "[limits]\nrecipients = 5\nconnections = 9\n", a,
	        sizeof(a));
	file_in("inc/conf.d/README", "this is not a config file\n", x, sizeof(x));
	file_in("inc/x.conf", "hostname = inc.example\ndata_dir = spool\n", x, sizeof(x));
	file_in("inc/main.conf",
	        "include = conf.d/*.conf\n"
	        "include = empty.d/*.conf\n"
	        "[limits]\n"
	        "include = x.conf\n"
	        "errors = 4\n",
	        main_p, sizeof(main_p));

	assert_int_equal(conf_load(main_p, c, &err), 0);
	assert_int_equal(c->max_recipients, 7); /* 20-b is read after 10-a */
	assert_int_equal(c->max_connections, 9);
	assert_int_equal(c->max_errors, 4); /* [limits] continues after the include */
	assert_string_equal(c->hostname, "inc.example");
	snprintf(want, sizeof(want), "%s/inc/spool", tmpdir);
	assert_string_equal(c->data_dir, want); /* relative to x.conf's directory */

	char *out = print_to_string(c, true);
	snprintf(want, sizeof(want), "# %s:2\n", b);
	assert_non_null(strstr(out, want));
	assert_non_null(strstr(out, "limits.recipients = 7 "));
	free(out);

	/* a plain name that does not exist is an error, naming the include line */
	file_in("inc/missing.conf", "\n\ninclude = nope.conf\n", main_p, sizeof(main_p));
	assert_int_equal(conf_load(main_p, c, &err), -1);
	snprintf(want, sizeof(want), "%s:3: include: %s/inc/nope.conf: No such file or directory",
	         main_p, tmpdir);
	assert_string_equal(err.msg, want);

	/* an error inside an included file names that file */
	file_in("inc/bad.d.conf", "workers = 1000\n", x, sizeof(x));
	file_in("inc/top.conf", "include = bad.d.conf\n", main_p, sizeof(main_p));
	assert_int_equal(conf_load(main_p, c, &err), -1);
	snprintf(want, sizeof(want), "%s:1: workers: 1000 is above the maximum 256", x);
	assert_string_equal(err.msg, want);

	/* a file including itself stops at the depth limit */
	file_in("inc/loop.conf", "include = loop.conf\n", main_p, sizeof(main_p));
	assert_int_equal(conf_load(main_p, c, &err), -1);
	assert_non_null(strstr(err.msg, ":1: include: files nested more than 8 deep"));

	/* a chain of 8 includes is fine, 9 is not */
	for (int i = 0; i <= 9; i++) {
		char name[32], text[64];
		snprintf(name, sizeof(name), "inc/chain%d.conf", i);
		if (i < 9)
			snprintf(text, sizeof(text), "include = chain%d.conf\n", i + 1);
		else
			snprintf(text, sizeof(text), "workers = 3\n");
		file_in(name, text, x, sizeof(x));
	}
	snprintf(main_p, sizeof(main_p), "%s/inc/chain1.conf", tmpdir);
	assert_int_equal(conf_load(main_p, c, &err), 0);
	assert_int_equal(c->workers, 3);
	snprintf(main_p, sizeof(main_p), "%s/inc/chain0.conf", tmpdir);
	assert_int_equal(conf_load(main_p, c, &err), -1);

	/* a directory is not a config file */
	file_in("inc/dir.conf", "include = conf.d\n", main_p, sizeof(main_p));
	assert_int_equal(conf_load(main_p, c, &err), -1);
	snprintf(want, sizeof(want), "%s:1: include: %s/inc/conf.d: not a regular file", main_p,
	         tmpdir);
	assert_string_equal(err.msg, want);
	free(c);
}

/* ---- certificates ---- */

static void test_cert_pairs(void **state)
{
	struct conf *c = load_ok("[tls]\n"
	                         "cert = /etc/letsencrypt/live/mx.example.net/fullchain.pem\n"
	                         "key = /etc/letsencrypt/live/mx.example.net/privkey.pem\n"
	                         "cert = /etc/ssl/b.pem\n"
	                         "resumption = no\n"
	                         "key = /etc/ssl/b.key\n"
	                         "tls.cert = c.pem\n"
	                         "tls.key = c.key\n");
	char want[PATH_MAX + 16];

	assert_int_equal(c->ncerts, 3);
	assert_string_equal(c->certs[0].cert_file,
	                    "/etc/letsencrypt/live/mx.example.net/fullchain.pem");
	assert_string_equal(c->certs[0].key_file,
	                    "/etc/letsencrypt/live/mx.example.net/privkey.pem");
	assert_int_equal(c->certs[0].cert_src.line, 2);
	assert_int_equal(c->certs[0].key_src.line, 3);
	assert_string_equal(c->certs[1].key_file, "/etc/ssl/b.key");
	assert_int_equal(c->certs[1].key_src.line, 6);
	snprintf(want, sizeof(want), "%s/c.pem", tmpdir);
	assert_string_equal(c->certs[2].cert_file, want);
	assert_false(c->tls_resumption);
	free(c);

	/* cert, cert: the first has no key */
	const char *p = tmpconf("[tls]\ncert = /c\ncert = /d\n");
	c = new_conf();
	struct conf_error err;
	char msg[1024];
	assert_int_equal(conf_load(p, c, &err), -1);
	snprintf(msg, sizeof(msg),
	         "%s:3: tls.cert: the tls.cert at %s:2 has no tls.key yet (each tls.cert must be "
	         "followed by its tls.key)",
	         p, p);
	assert_string_equal(err.msg, msg);

	/* at most LIM_CERTS */
	char text[4096] = "[tls]\n";
	size_t used = strlen(text);
	for (int i = 0; i <= LIM_CERTS; i++)
		used += (size_t)snprintf(text + used, sizeof(text) - used,
		                         "cert = /c%d\nkey = /k%d\n", i, i);
	p = tmpconf(text);
	assert_int_equal(conf_load(p, c, &err), -1);
	snprintf(msg, sizeof(msg), "%s:%d: tls.cert: more than %d certificates", p,
	         2 + 2 * LIM_CERTS, LIM_CERTS);
	assert_string_equal(err.msg, msg);
	free(c);
}

/* ---- print ---- */

static void roundtrip(const struct conf *c)
{
	char *out = print_to_string(c, false);
	struct conf *back = new_conf();
	struct conf_error err;
	const char *p = tmpconf(out);

	if (conf_load(p, back, &err) != 0)
		fail_msg("printed config does not load: %s\n%s", err.msg, out);
	assert_true(conf_same(c, back));
	free(back);
	free(out);
}

static void test_print_roundtrip(void **state)
{
	struct conf *c = new_conf();

	conf_defaults(c); /* embedded defaults must also be within every range */
	roundtrip(c);
	free(c);

	c = load_ok("hostname = mx.example.net\n"
	            "user = \"\"\n"
	            "workers = 7\n"
	            "data_dir = \"/srv/odd#dir \"\n"
	            "postmaster = hostmaster@example.net\n"
	            "[listen]\n"
	            "mx = [2001:db8::1]:25\n"
	            "submission = \n"
	            "submissions = 0.0.0.0:465\n"
	            "[tls]\n"
	            "cert = /etc/a \"b\".pem\n"
	            "key = /etc/a\\b.key\n"
	            "cert = \"/etc/#c.pem\"\n"
	            "key = /etc/c.key\n"
	            "resumption = off\n"
	            "[limits]\n"
	            "message_size = 1536\n"
	            "recipients = 1\n"
	            "idle_timeout = 90\n"
	            "data_timeout = 2h\n"
	            "shutdown_grace = 0\n"
	            "[queue]\n"
	            "retry_interval = 3601\n"
	            "[log]\n"
	            "destination = syslog\n"
	            "debug = on\n");
	roundtrip(c);

	char *out = print_to_string(c, false);
	assert_non_null(strstr(out, "\nlimits.message_size = 1536 "));
	assert_non_null(strstr(out, "\nlimits.data_timeout = 2h "));
	assert_non_null(strstr(out, "\nlimits.idle_timeout = 90s "));
	assert_non_null(strstr(out, "\nlimits.shutdown_grace = 0s "));
	assert_non_null(strstr(out, "\nqueue.retry_interval = 3601s "));
	assert_non_null(strstr(out, pline("limits.errors = 10", "default")));
	assert_non_null(strstr(out, "\nlisten.mx = [2001:db8::1]:25 "));
	assert_non_null(strstr(out, "\nlisten.submission = \"\" "));
	assert_non_null(strstr(out, "\ndata_dir = \"/srv/odd#dir \" "));
	assert_non_null(strstr(out, "\ntls.cert = /etc/a \"b\".pem "));
	assert_non_null(strstr(out, "\ntls.cert = \"/etc/#c.pem\" "));
	assert_non_null(strstr(out, "\ntls.key = /etc/a\\b.key "));
	assert_non_null(strstr(out, "\nlog.debug = yes "));
	assert_non_null(strstr(out, "\nlog.destination = syslog "));
	assert_true(strncmp(out, "hostname = mx.example.net", 25) == 0);
	free(out);

	/* nondefault_only: exactly the lines set by the file (2 certs = 4 lines) */
	out = print_to_string(c, true);
	int lines = 0;
	for (char *q = out; *q; q++)
		lines += *q == '\n';
	assert_int_equal(lines, 21);
	assert_null(strstr(out, "# default"));
	free(out);
	free(c);

	/* with embedded defaults nothing was set */
	c = new_conf();
	conf_defaults(c);
	out = print_to_string(c, true);
	assert_string_equal(out, "");
	free(out);
	free(c);
}

/* A relayhost password is never printed, not even by config show -n. */
static void test_password_not_shown(void **state)
{
	struct conf *c = load_ok("[delivery]\nrelayhost = smtp.example.net:587\n"
				 "relayhost_user = u\nrelayhost_password = s3cret-pass\n");
	assert_string_equal(c->relayhost_password, "s3cret-pass");
	for (int nd = 0; nd < 2; nd++) {
		char *out = print_to_string(c, nd == 1);
		assert_null(strstr(out, "s3cret-pass"));
		assert_non_null(strstr(out, "delivery.relayhost_password = (set, not shown)"));
		free(out);
	}
	free(c);
}

static void test_reference(void **state)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	conf_print_reference(f);
	fclose(f);
	assert_non_null(strstr(buf, "| `limits.message_size` | `35M` | 1K – 2G | yes |"));
	assert_non_null(strstr(buf, "| `listen.mx` | `0.0.0.0:25` (no file: `127.0.0.1:2525`) |"));
	assert_non_null(strstr(buf, "| `log.destination` | `stderr` | stderr, syslog | no |"));
	free(buf);
}

/* Every option conf_print names is documented in docs/config.md (when run from the tree). */
static void test_docs_cover_options(void **state)
{
	FILE *f = fopen("docs/config.md", "r");
	if (!f) {
		skip();
		return;
	}
	char *doc = NULL;
	size_t cap = 0;
	ssize_t n = getdelim(&doc, &cap, '\0', f);
	fclose(f);
	assert_true(n > 0);

	struct conf *c = load_ok("[tls]\ncert = /c\nkey = /k\n");
	char *out = print_to_string(c, false);
	for (char *line = out, *nl; *line; line = nl + 1) {
		char name[80], want[96];
		nl = strchr(line, '\n');
		assert_non_null(nl);
		*nl = '\0';
		if (line[0] == '#' || sscanf(line, "%79s", name) != 1)
			continue;
		snprintf(want, sizeof(want), "`%s`", name);
		if (!strstr(doc, want))
			fail_msg("docs/config.md does not document %s", name);
	}
	free(out);
	free(doc);
	free(c);
}

/* The longest allowed path, with quotes and escapes, prints to a line that loads back. */
static void test_long_values(void **state)
{
	char text[3000], val[1100];
	size_t i;

	val[0] = '/';
	for (i = 1; i < 1024; i++)
		val[i] = i % 7 ? 'a' : '"';
	val[i] = '\0';
	char esc[2200];
	size_t o = 0;
	for (i = 0; val[i]; i++) {
		if (val[i] == '"')
			esc[o++] = '\\';
		esc[o++] = val[i];
	}
	esc[o] = '\0';
	snprintf(text, sizeof(text), "data_dir = \"%s \"\n", esc);
	expect_error(text, "1: data_dir: path longer than 1024 bytes");
	snprintf(text, sizeof(text), "data_dir = \"%s\"\n", esc);
	struct conf *c = load_ok(text);
	assert_string_equal(c->data_dir, val);
	roundtrip(c);
	free(c);
}

/* The shipped example loads (when run from the tree). */
static void test_example_loads(void **state)
{
	struct conf *c = new_conf();
	struct conf_error err;

	if (access("examples/sealmail.conf", R_OK) != 0) {
		free(c);
		skip();
		return;
	}
	if (conf_load("examples/sealmail.conf", c, &err) != 0)
		fail_msg("%s", err.msg);
	assert_string_equal(c->hostname, "mx.example.net");
	assert_int_equal(c->ncerts, 1);
	assert_string_equal(c->certs[0].cert_file,
	                    "/etc/letsencrypt/live/mx.example.net/fullchain.pem");
	assert_string_equal(c->certs[0].key_file,
	                    "/etc/letsencrypt/live/mx.example.net/privkey.pem");
	free(c);
}

/* ---- reload ---- */

static void test_reload_check(void **state)
{
	struct conf *a = load_ok("[limits]\nrecipients = 5\n");
	struct conf *b = load_ok("[limits]\nrecipients = 50\n[tls]\ncert = /c\nkey = /k\n");
	struct conf *d = load_ok("[listen]\nmx = 0.0.0.0:2525\n");
	struct conf_error err;

	assert_false(conf_same(a, b));
	assert_int_equal(conf_reload_check(a, b, &err), 0);
	assert_int_equal(conf_reload_check(a, d, &err), -1);
	assert_string_equal(err.msg, "listen.mx: cannot change on reload (\"0.0.0.0:25\" -> "
	                             "\"0.0.0.0:2525\"); restart sealmail");
	free(a);
	free(b);
	free(d);
}

/* ---- CLI ---- */

static void test_pick_path(void **state)
{
	assert_string_equal(conf_pick_path("/x.conf"), "/x.conf");
	setenv("SEALMAIL_CONF", "/env.conf", 1);
	assert_string_equal(conf_pick_path(NULL), "/env.conf");
	assert_string_equal(conf_pick_path("/x.conf"), "/x.conf");
	setenv("SEALMAIL_CONF", "", 1);
	const char *p = conf_pick_path(NULL);
	if (access(CONF_DEFAULT_PATH, F_OK) == 0)
		assert_string_equal(p, CONF_DEFAULT_PATH);
	else
		assert_null(p);
	unsetenv("SEALMAIL_CONF");
}

static void test_cli(void **state)
{
	static char out[65536], errb[4096];
	char want[PATH_MAX + 64], cert[PATH_MAX], key[PATH_MAX];
	const char *p = tmpconf("[limits]\nrecipients = 5\n");
	char *check_argv[] = {"check", "-c", (char *)p};
	char *show_argv[] = {"show", "-n", (char *)p};

	assert_int_equal(run_cli(out, sizeof(out), errb, sizeof(errb), 3, check_argv), 0);
	snprintf(want, sizeof(want), "config ok: %s\n", p);
	assert_non_null(strstr(out, want));
	snprintf(want, sizeof(want), "%s:2", p);
	assert_non_null(strstr(out, pline("limits.recipients = 5", want)));
	assert_non_null(strstr(out, "limits.errors = 10"));
	assert_string_equal(errb, "");

	show_argv[1] = "-n";
	char cflag[PATH_MAX + 4];
	snprintf(cflag, sizeof(cflag), "-c%s", p);
	show_argv[2] = cflag;
	assert_int_equal(run_cli(out, sizeof(out), errb, sizeof(errb), 3, show_argv), 0);
	snprintf(want, sizeof(want), "%s:2", p);
	char want2[2 * PATH_MAX];
	snprintf(want2, sizeof(want2), "# config: %s\n%s", p, pline("limits.recipients = 5", want));
	assert_string_equal(out, want2);

	/* errors: exit 78 and the message on stderr */
	p = tmpconf("[limits]\nrecipients = 0\n");
	check_argv[2] = (char *)p;
	assert_int_equal(run_cli(out, sizeof(out), errb, sizeof(errb), 3, check_argv), 78);
	snprintf(want, sizeof(want), "%s:2: limits.recipients: 0 is below the minimum 1\n", p);
	assert_string_equal(errb, want);
	assert_string_equal(out, "");

	/* check looks at the certificate files */
	p = tmpconf("[tls]\ncert = /nonexistent/cert.pem\nkey = /nonexistent/key.pem\n");
	check_argv[2] = (char *)p;
	assert_int_equal(run_cli(out, sizeof(out), errb, sizeof(errb), 3, check_argv), 78);
	snprintf(want, sizeof(want),
	         "%s:2: tls.cert: /nonexistent/cert.pem: No such file or directory\n"
	         "%s:3: tls.key: /nonexistent/key.pem: No such file or directory\n",
	         p, p);
	assert_string_equal(errb, want);
	file_in("cert.pem", "-----BEGIN CERTIFICATE-----\n", cert, sizeof(cert));
	file_in("key.pem", "-----BEGIN PRIVATE KEY-----\n", key, sizeof(key));
	char text[2 * PATH_MAX + 64];
	snprintf(text, sizeof(text), "[tls]\ncert = %s\nkey = %s\n", cert, key);
	p = tmpconf(text);
	check_argv[2] = (char *)p;
	assert_int_equal(run_cli(out, sizeof(out), errb, sizeof(errb), 3, check_argv), 0);
	snprintf(want, sizeof(want), "tls.cert = %s", cert);
	assert_non_null(strstr(out, want));

	/* usage errors */
	char *bad1[] = {"frob"};
	char *bad2[] = {"check", "-x"};
	char *bad3[] = {"check", "-c"};
	char *bad4[] = {"show", "-c", ""};
	assert_int_equal(run_cli(out, sizeof(out), errb, sizeof(errb), 1, bad1), 64);
	assert_int_equal(run_cli(out, sizeof(out), errb, sizeof(errb), 2, bad2), 64);
	assert_int_equal(run_cli(out, sizeof(out), errb, sizeof(errb), 2, bad3), 64);
	assert_int_equal(run_cli(out, sizeof(out), errb, sizeof(errb), 3, bad4), 64);
	assert_int_equal(run_cli(out, sizeof(out), errb, sizeof(errb), 0, NULL), 64);
	char *help[] = {"show", "-h"};
	assert_int_equal(run_cli(out, sizeof(out), errb, sizeof(errb), 2, help), 0);
	assert_non_null(strstr(out, "usage: sealmail config check"));

	/* missing -c file */
	char *missing[] = {"check", "-c", "/nonexistent/sealmail.conf"};
	assert_int_equal(run_cli(out, sizeof(out), errb, sizeof(errb), 3, missing), 78);
	assert_string_equal(errb, "/nonexistent/sealmail.conf: No such file or directory\n");

	/* embedded defaults */
	if (access(CONF_DEFAULT_PATH, F_OK) != 0) {
		char *chk[] = {"check"};
		char *shw[] = {"show"};
		assert_int_equal(run_cli(out, sizeof(out), errb, sizeof(errb), 1, chk), 0);
		assert_non_null(strstr(out, "config ok: (embedded defaults)\n"));
		assert_non_null(strstr(out, "listen.mx = 127.0.0.1:2525 "));
		assert_int_equal(run_cli(out, sizeof(out), errb, sizeof(errb), 1, shw), 0);
		assert_true(strncmp(out, "# config: (embedded defaults)\n", 30) == 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults_embedded),
	    cmocka_unit_test(test_defaults_with_file),
	    cmocka_unit_test(test_types),
	    cmocka_unit_test(test_sizes),
	    cmocka_unit_test(test_durations_and_bools),
	    cmocka_unit_test(test_listen_forms),
	    cmocka_unit_test(test_bad_values),
	    cmocka_unit_test(test_syntax_errors),
	    cmocka_unit_test(test_bad_bytes),
	    cmocka_unit_test(test_failed_load_keeps_conf),
	    cmocka_unit_test(test_quotes_and_comments),
	    cmocka_unit_test(test_sources),
	    cmocka_unit_test(test_include),
	    cmocka_unit_test(test_cert_pairs),
	    cmocka_unit_test(test_print_roundtrip),
	    cmocka_unit_test(test_long_values),
	    cmocka_unit_test(test_example_loads),
	    cmocka_unit_test(test_reference),
	    cmocka_unit_test(test_password_not_shown),
	    cmocka_unit_test(test_docs_cover_options),
	    cmocka_unit_test(test_reload_check),
	    cmocka_unit_test(test_pick_path),
	    cmocka_unit_test(test_cli),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
