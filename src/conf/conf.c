/* Configuration: the one table of options (type, default, range, reload), the defaults,
 * and the file parser with includes; printing and comparing are in conf_print.c. Runs in
 * the master and the CLI; children get a copy of struct conf at fork. Untrusted input: the
 * config files and $SEALMAIL_HOME/$SEALMAIL_CONF. They are the admin's, but may be wrong in
 * any way: every mistake is reported as "file:line: option: message" and no input makes
 * this code crash, loop or block. */
#include "conf/conf.h"
#include "conf/conf_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "policy/tlspolicy.h"
#include "util/log.h"

#define CONF_LINE_MAX 4096   /* bytes in a line, without its line ending */
#define CONF_INCLUDE_DEPTH 8 /* files nested by include; also ends include loops */
#define CONF_MAX_FILES 256   /* files read by one load, so globs cannot fan out forever */
#define CONF_VALUE_SHOW 60   /* bytes of a bad value quoted back in an error */
/* Paths in values and names of config files: short enough that conf_print's line for any
 * option (quoted value and "# file:line") stays within CONF_LINE_MAX. */
#define CONF_PATH_LEN_MAX 1024

static bool check_hostname(const char *v, char *why, size_t whysz);
static bool check_user(const char *v, char *why, size_t whysz);
static bool check_mailbox(const char *v, char *why, size_t whysz);

static const char *const log_dest_names[] = {"stderr", "syslog", NULL};
static const char *const tls_level_names[] = {"none", "may", "encrypt", "verify", NULL};
static const char *const tls_version_names[] = {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", NULL};
static const char *const family_names[] = {"all", "ipv4", "ipv6", NULL};
static const char *const relay_tls_names[] = {"starttls", "implicit", NULL};

#define FLD(f) .off = offsetof(struct conf, f), .size = sizeof(((struct conf *)0)->f)
#define LST(k)                                                                                     \
	.off = offsetof(struct conf, listeners) + (k) * sizeof(struct conf_listener),              \
	.size = sizeof(struct conf_listener)

/* clang-format off */
/* habit 12: config is data. Top-level options come first (conf_print relies on it). */
const struct conf_option conf_opts[] = {
	{.key = "hostname", .type = CT_STRING, FLD(hostname), .check = check_hostname,
	 .def_doc = "the system's host name", .syntax = "domain name", .reload = true,
	 .doc = "Name in the greeting, the EHLO reply, Received headers and bounces "
		"(MAILER-DAEMON@hostname). Use the name your MX record points to."},
	{.key = "data_dir", .type = CT_PATH, FLD(data_dir), .def_str = "/var/lib/sealmail",
	 .def_doc = "`/var/lib/sealmail` (no file: `$SEALMAIL_HOME` or `./sealmail-data`)",
	 .doc = "Directory for the spool, the store (sealmail.db) and generated keys; it must be "
		"writable by `user`."},
	{.key = "user", .type = CT_STRING, FLD(user), .check = check_user, .def_str = "sealmail",
	 .def_embedded = "", .syntax = "user name, or \"\"",
	 .doc = "Unprivileged user every process switches to after the ports are bound; \"\" "
		"keeps the user sealmail was started as."},
	{.key = "workers", .type = CT_INT, FLD(workers), .def = 0, .min = 0, .max = 256,
	 .doc = "SMTP worker processes; 0 starts one per CPU core."},
	{.key = "postmaster", .type = CT_STRING, FLD(postmaster), .check = check_mailbox,
	 .def_embedded = "postmaster@localhost", .syntax = "address",
	 .def_doc = "`postmaster@<hostname>` (no file: `postmaster@localhost`)", .reload = true,
	 .doc = "Mailbox that receives mail for postmaster@ every local domain and for "
		"`<Postmaster>` (RFC 5321 4.5.1)."},

	{.section = "listen", .key = "mx", .type = CT_LISTEN, LST(CONF_LST_MX),
	 .def_str = "0.0.0.0:25", .def_embedded = "127.0.0.1:2525",
	 .doc = "Where other mail servers deliver to you (SMTP with STARTTLS, RFC 5321); \"\" "
		"turns it off."},
	{.section = "listen", .key = "submission", .type = CT_LISTEN, LST(CONF_LST_SUBMISSION),
	 .def_str = "0.0.0.0:587", .def_embedded = "127.0.0.1:2587",
	 .doc = "Where your users' mail programs send (RFC 6409; AUTH only after STARTTLS); "
		"\"\" turns it off."},
	{.section = "listen", .key = "submissions", .type = CT_LISTEN, LST(CONF_LST_SUBMISSIONS),
	 .def_str = "0.0.0.0:465", .def_embedded = "127.0.0.1:2465",
	 .doc = "Submission over implicit TLS (RFC 8314, preferred by current clients); \"\" "
		"turns it off."},

	{.section = "listen", .key = "mx_auth", .type = CT_BOOL, FLD(mx_auth), .def = 0,
	 .reload = true,
	 .doc = "Also offer AUTH on the mx listener (only after STARTTLS), for clients that can "
		"reach nothing but port 25; the submission listeners always offer it."},

	{.section = "tls", .key = "cert", .type = CT_CERT, .reload = true,
	 .doc = "Certificate chain in PEM (Let's Encrypt: fullchain.pem). Each tls.cert starts a "
		"pair; several pairs are chosen by SNI. None: a self-signed one in data_dir."},
	{.section = "tls", .key = "key", .type = CT_KEY, .reload = true,
	 .doc = "Private key in PEM (Let's Encrypt: privkey.pem) for the tls.cert just above it."},
	{.section = "tls", .key = "resumption", .type = CT_BOOL, FLD(tls_resumption), .def = 1,
	 .reload = true,
	 .doc = "Let clients resume TLS sessions (tickets and a session cache), which saves a "
		"full handshake per connection."},

	{.section = "limits", .key = "message_size", .type = CT_SIZE, FLD(max_message_size),
	 .def = LIM_MSG_SIZE_DEFAULT, .min = KIB, .max = 2 * GIB, .reload = true,
	 .doc = "Largest message accepted, advertised in EHLO as SIZE (RFC 1870)."},
	{.section = "limits", .key = "recipients", .type = CT_INT, FLD(max_recipients),
	 .def = LIM_RCPTS_DEFAULT, .min = 1, .max = 10000, .reload = true,
	 .doc = "Recipients per message; more get 452 (RFC 5321 4.5.3.1.8 asks that 100 be "
		"accepted)."},
	{.section = "limits", .key = "errors", .type = CT_INT, FLD(max_errors),
	 .def = LIM_ERRORS_DEFAULT, .min = 1, .max = 1000, .reload = true,
	 .doc = "Failed commands in one session before it is closed with 421."},
	{.section = "limits", .key = "connections", .type = CT_INT, FLD(max_connections),
	 .def = LIM_CONNECTIONS_DEFAULT, .min = 1, .max = 1000000, .reload = true,
	 .doc = "Simultaneous client connections, all listeners together."},
	{.section = "limits", .key = "connections_per_ip", .type = CT_INT,
	 FLD(max_connections_per_ip), .def = LIM_CONNECTIONS_PER_IP_DEFAULT, .min = 1,
	 .max = 100000, .reload = true,
	 .doc = "Simultaneous connections from one client IP address."},
	{.section = "limits", .key = "idle_timeout", .type = CT_DURATION, FLD(idle_timeout),
	 .def = LIM_IDLE_TIMEOUT_DEFAULT, .min = 10, .max = 3600, .reload = true,
	 .doc = "How long to wait for a client's next command (RFC 5321 4.5.3.2.7 asks for at "
		"least 5m)."},
	{.section = "limits", .key = "data_timeout", .type = CT_DURATION, FLD(data_timeout),
	 .def = LIM_DATA_TIMEOUT_DEFAULT, .min = 30, .max = 7200, .reload = true,
	 .doc = "How long the whole DATA phase of one message may take."},
	{.section = "limits", .key = "received_headers", .type = CT_INT, FLD(max_received),
	 .def = LIM_RECEIVED_DEFAULT, .min = 5, .max = 500, .reload = true,
	 .doc = "A message with more Received headers is a mail loop and is refused (RFC 5321 "
		"6.3)."},
	{.section = "limits", .key = "shutdown_grace", .type = CT_DURATION, FLD(shutdown_grace),
	 .def = LIM_SHUTDOWN_GRACE_DEFAULT, .min = 0, .max = 600, .reload = true,
	 .doc = "On SIGTERM, how long open sessions may finish before they are closed."},

	{.section = "queue", .key = "scan_interval", .type = CT_DURATION,
	 FLD(queue_scan_interval), .def = 60, .min = 1, .max = 3600, .reload = true,
	 .doc = "How often the queue looks for messages that are due for delivery."},
	{.section = "queue", .key = "retry_interval", .type = CT_DURATION,
	 FLD(queue_retry_interval), .def = 300, .min = 1, .max = 86400, .reload = true,
	 .doc = "Wait before the first retry of a delivery that failed temporarily; each later "
		"wait doubles (with jitter) up to queue.retry_max."},
	{.section = "queue", .key = "retry_max", .type = CT_DURATION, FLD(queue_retry_max),
	 .def = 4000, .min = 1, .max = 86400, .reload = true,
	 .doc = "Longest wait between two attempts (Postfix: maximal_backoff_time 4000s)."},
	{.section = "queue", .key = "lifetime", .type = CT_DURATION, FLD(queue_lifetime),
	 .def = 5 * 86400, .min = 1, .max = 60 * 86400, .reload = true,
	 .doc = "How long a message may wait for delivery; after it, the recipients still "
		"waiting are returned to the sender (RFC 3464 bounce)."},
	{.section = "queue", .key = "delay_warning", .type = CT_DURATION,
	 FLD(queue_delay_warning), .def = 4 * 3600, .min = 0, .max = 60 * 86400, .reload = true,
	 .doc = "When a message has waited this long, its sender gets one delay notice "
		"(only for recipients that asked for NOTIFY=DELAY or did not say); 0 = never."},

	{.section = "delivery", .key = "port", .type = CT_INT, FLD(delivery_port), .def = 25,
	 .min = 1, .max = 65535, .reload = true,
	 .doc = "TCP port of other domains' MX hosts (25; another port only for tests)."},
	{.section = "delivery", .key = "tls_policy", .type = CT_ENUM, FLD(delivery_tls_policy),
	 .def = 1, .names = tls_level_names, .reload = true,
	 .doc = "TLS level for every domain without an entry in delivery.tls_policy_file: none, "
		"may (STARTTLS when offered, certificate not checked), encrypt (TLS required), "
		"verify (TLS required, certificate must chain to a trusted CA and name the MX "
		"host)."},
	{.section = "delivery", .key = "tls_policy_file", .type = CT_PATH,
	 FLD(delivery_tls_policy_file), .def_str = "", .reload = true,
	 .doc = "File of per-domain TLS levels, one `domain level` per line (`.example.com` "
		"covers its subdomains); an entry replaces delivery.tls_policy for its domain."},
	{.section = "delivery", .key = "tls_min_version", .type = CT_ENUM,
	 FLD(delivery_tls_min_version), .def = 2, .names = tls_version_names, .reload = true,
	 .doc = "Oldest TLS version offered to MX hosts. Below TLSv1.2 applies to level may "
		"only (encrypt and verify always need TLSv1.2), for peers that can do nothing "
		"newer; a warning is logged at start."},
	{.section = "delivery", .key = "ca_file", .type = CT_PATH, FLD(delivery_ca_file),
	 .def_str = "", .def_doc = "\"\" (the system's CA certificates)", .reload = true,
	 .doc = "CA certificates (PEM) that the verify level trusts."},
	{.section = "delivery", .key = "source_ipv4", .type = CT_STRING, FLD(delivery_source4),
	 .check = conf_check_ipv4, .syntax = "IPv4 address or \"\"", .reload = true,
	 .doc = "Local IPv4 address outbound connections come from; \"\" lets the kernel "
		"choose."},
	{.section = "delivery", .key = "source_ipv6", .type = CT_STRING, FLD(delivery_source6),
	 .check = conf_check_ipv6, .syntax = "IPv6 address or \"\"", .reload = true,
	 .doc = "Local IPv6 address outbound connections come from; \"\" lets the kernel "
		"choose."},
	{.section = "delivery", .key = "address_family", .type = CT_ENUM,
	 FLD(delivery_family), .def = 0, .names = family_names, .reload = true,
	 .doc = "Which addresses of MX hosts to use: all (IPv6 first), ipv4 or ipv6."},
	{.section = "delivery", .key = "connect_timeout", .type = CT_DURATION,
	 FLD(delivery_connect_timeout), .def = 30, .min = 1, .max = 600, .reload = true,
	 .doc = "How long a TCP connection to an MX host may take to open."},
	{.section = "delivery", .key = "connections", .type = CT_INT, FLD(delivery_connections),
	 .def = 100, .min = 1, .max = 10000, .reload = true,
	 .doc = "Outbound SMTP connections open at the same time, all destinations together."},
	{.section = "delivery", .key = "connections_per_destination", .type = CT_INT,
	 FLD(delivery_connections_per_dest), .def = 10, .min = 1, .max = 1000, .reload = true,
	 .doc = "Outbound connections open at the same time to one destination (a recipient "
		"domain, or the relayhost)."},
	{.section = "delivery", .key = "relayhost", .type = CT_STRING, FLD(relayhost),
	 .check = conf_check_relayhost, .syntax = "host:port or \"\"", .reload = true,
	 .doc = "Send all outbound mail through this host (a smarthost) instead of the "
		"recipients' MX hosts; \"\" = deliver directly. `[host]:port` and `host:port` "
		"both skip the MX lookup."},
	{.section = "delivery", .key = "relayhost_tls", .type = CT_ENUM, FLD(relayhost_tls),
	 .def = 0, .names = relay_tls_names, .reload = true,
	 .doc = "starttls (port 587 or 25) or implicit (TLS from the first byte, port 465)."},
	{.section = "delivery", .key = "relayhost_tls_policy", .type = CT_ENUM,
	 FLD(relayhost_tls_policy), .def = 3, .names = tls_level_names, .reload = true,
	 .doc = "TLS level for the relayhost; verify by default (AUTH passwords go there)."},
	{.section = "delivery", .key = "relayhost_user", .type = CT_STRING, FLD(relayhost_user),
	 .check = conf_check_printable, .syntax = "text", .reload = true,
	 .doc = "Login for AUTH at the relayhost; \"\" = no AUTH."},
	{.section = "delivery", .key = "relayhost_password", .type = CT_STRING,
	 FLD(relayhost_password), .check = conf_check_printable, .syntax = "text", .reload = true,
	 .secret = true,
	 .doc = "Password for relayhost_user (keep this file mode 0600; `config show` masks "
		"it)."},

	{.section = "dns", .key = "resolv_conf", .type = CT_PATH, FLD(dns_resolv_conf),
	 .def_str = "/etc/resolv.conf", .reload = true,
	 .doc = "Name servers to ask (when dns.forwarders is empty)."},
	{.section = "dns", .key = "forwarders", .type = CT_STRING, FLD(dns_forwarders),
	 .check = conf_check_forwarders, .syntax = "IP[@port] ...", .reload = true,
	 .doc = "Name servers to ask instead of resolv_conf, space-separated, e.g. "
		"`127.0.0.1@53 ::1`."},
	{.section = "dns", .key = "trust_anchor", .type = CT_PATH, FLD(dns_trust_anchor),
	 .def_str = "", .reload = true,
	 .doc = "DNSSEC trust anchor file (e.g. /usr/share/dns/root.key); set, answers are "
		"validated and their status (secure, insecure, bogus) is recorded."},

	{.section = "log", .key = "destination", .type = CT_ENUM, FLD(log_dest),
	 .def = CONF_LOG_STDERR, .names = log_dest_names,
	 .doc = "stderr (one line per event; journald adds time and host) or syslog (facility "
		"mail)."},
	{.section = "log", .key = "debug", .type = CT_BOOL, FLD(log_debug), .def = 0,
	 .reload = true,
	 .doc = "Also log debug lines (never message bodies, AUTH data or passwords)."},
};
/* clang-format on */

const size_t conf_nopts = sizeof(conf_opts) / sizeof(conf_opts[0]);
_Static_assert(sizeof(conf_opts) / sizeof(conf_opts[0]) <= CONF_OPT_MAX,
               "raise CONF_OPT_MAX in conf.h");
_Static_assert(sizeof(enum conf_log_dest) == sizeof(int), "enums are stored as int");

struct load_ctx {
	struct conf *c;
	struct conf_error *err;
	int nfiles;
	bool cert_open; /* the last tls.cert still waits for its tls.key */
};

struct file_ctx {
	const char *path;
	char dir[PATH_MAX]; /* absolute directory of path */
	uint32_t fileid;    /* see struct conf_source */
	int line;
	int depth;
	const char *section; /* points into conf_opts, NULL at top level */
};

/* ---- small helpers ---- */

int conf_fail(struct conf_error *err, const char *file, int line, const char *opt, const char *fmt,
              ...)
{
	char m[sizeof(err->msg)];
	char where[sizeof(err->msg)] = "";
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	if (n < 0)
		m[0] = '\0';
	if (file && line > 0)
		n = snprintf(where, sizeof(where), "%s:%d: ", file, line);
	else if (file)
		n = snprintf(where, sizeof(where), "%s: ", file);
	(void)n;
	n = snprintf(err->msg, sizeof(err->msg), "%s%s%s%s", where, opt ? opt : "", opt ? ": " : "",
	             m);
	(void)n;
	return -1;
}

static bool str_copy(char *dst, size_t n, const char *s)
{
	size_t l = strlen(s);
	if (l >= n)
		return false;
	memcpy(dst, s, l + 1);
	return true;
}

/* A bad value as quoted back in an error: printable ASCII only, cut at CONF_VALUE_SHOW. */
static const char *vis(const char *v, char *buf, size_t n)
{
	size_t l = strlen(v);
	log_safe(buf, n, v, l);
	if (l > CONF_VALUE_SHOW && n > CONF_VALUE_SHOW + 4)
		memcpy(buf + CONF_VALUE_SHOW, "...", 4);
	return buf;
}

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

static bool is_name_char(char ch)
{
	return isalnum((unsigned char)ch) || ch == '_' || ch == '.' || ch == '-';
}

/* Levenshtein distance for did-you-mean; names are short (CONF_NAME_MAX). */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[CONF_NAME_MAX + 1];

	if (la > CONF_NAME_MAX || lb > CONF_NAME_MAX)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* ---- value syntax: numbers, sizes, durations ---- */

/* An optional '-', digits and, for sizes and durations, one unit letter. Values beyond long
 * long saturate, so the range check reports them. */
static bool parse_num(enum conf_type t, const char *s, long long *out)
{
	const char *p = s[0] == '-' ? s + 1 : s;
	long long mult = 1, v;
	char *end;
	bool overflow;

	if (!isdigit((unsigned char)*p))
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	overflow = errno == ERANGE;
	if (*end != '\0') {
		if (end[1] != '\0')
			return false;
		if (t == CT_SIZE && strchr("kK", *end))
			mult = KIB;
		else if (t == CT_SIZE && strchr("mM", *end))
			mult = MIB;
		else if (t == CT_SIZE && strchr("gG", *end))
			mult = GIB;
		else if (t == CT_DURATION && strchr("sS", *end))
			mult = 1;
		else if (t == CT_DURATION && strchr("mM", *end))
			mult = 60;
		else if (t == CT_DURATION && strchr("hH", *end))
			mult = 3600;
		else if (t == CT_DURATION && strchr("dD", *end))
			mult = 86400;
		else
			return false;
	}
	if (overflow)
		*out = v;
	else if (v > LLONG_MAX / mult)
		*out = LLONG_MAX;
	else if (v < LLONG_MIN / mult)
		*out = LLONG_MIN;
	else
		*out = v * mult;
	return true;
}

static void num_store(const struct conf_option *o, struct conf *c, long long v)
{
	char *p = field(c, o);
	if (o->type == CT_SIZE) {
		uint64_t u = (uint64_t)v;
		memcpy(p, &u, sizeof(u));
	} else if (o->type == CT_BOOL) {
		bool b = v != 0;
		memcpy(p, &b, sizeof(b));
	} else {
		int i = (int)v;
		memcpy(p, &i, sizeof(i));
	}
}

static int parse_bool(const char *v)
{
	static const char *const yes[] = {"yes", "true", "on"}, *const no[] = {"no", "false",
	                                                                       "off"};
	for (size_t i = 0; i < 3; i++) {
		if (strcasecmp(v, yes[i]) == 0)
			return 1;
		if (strcasecmp(v, no[i]) == 0)
			return 0;
	}
	return -1;
}

/* ---- listen addresses ---- */

/* "IP:PORT", "[IPv6]:PORT" or "" (disabled). Numeric only: names would need DNS at start. */
static int parse_listen(const char *v, struct conf_listener *l, const char **why)
{
	char host[64];
	unsigned char bin[16];
	const char *portp;
	size_t hlen;
	int af;

	memset(l, 0, sizeof(*l));
	if (v[0] == '\0')
		return 0;
	if (v[0] == '[') {
		const char *close = strchr(v, ']');
		if (!close) {
			*why = "missing ] after the IPv6 address";
			return -1;
		}
		if (close[1] != ':') {
			*why = "expected :PORT after ], e.g. [::]:25";
			return -1;
		}
		hlen = (size_t)(close - v - 1);
		portp = close + 2;
		af = AF_INET6;
		v++;
	} else {
		const char *colon = strrchr(v, ':');
		if (!colon) {
			*why =
			    "expected IP:PORT, e.g. 0.0.0.0:25 or [::]:25 (\"\" turns the listener "
			    "off)";
			return -1;
		}
		if (strchr(v, ':') != colon) {
			*why = "an IPv6 address goes in brackets, e.g. [::]:25";
			return -1;
		}
		hlen = (size_t)(colon - v);
		portp = colon + 1;
		af = AF_INET;
	}
	if (hlen == 0 || hlen >= sizeof(host)) {
		*why = "expected a numeric IP address before :PORT";
		return -1;
	}
	memcpy(host, v, hlen);
	host[hlen] = '\0';
	if (inet_pton(af, host, bin) != 1) {
		*why = af == AF_INET ? "the address must be a numeric IPv4 address (host names are "
		                       "not allowed; IPv6 goes in brackets: [::1]:25)"
		                     : "not a numeric IPv6 address";
		return -1;
	}
	long port = 0;
	size_t nd = 0;
	for (; portp[nd]; nd++) {
		if (!isdigit((unsigned char)portp[nd]) || nd >= 5) {
			port = -1;
			break;
		}
		port = port * 10 + (portp[nd] - '0');
	}
	if (nd == 0 || port < 1 || port > 65535) {
		*why = "the port must be a number from 1 to 65535";
		return -1;
	}
	if (!inet_ntop(af, bin, l->addr, sizeof(l->addr))) {
		*why = "cannot format the address";
		return -1;
	}
	l->enabled = true;
	l->port = (int)port;
	return 0;
}

/* ---- checks of text options ---- */

/* RFC 1035 2.3.1 / RFC 1123 2.1: letters, digits, hyphens; labels of 1-63 octets. */
static bool check_hostname(const char *v, char *why, size_t whysz)
{
	size_t len = strlen(v), label = 0;

	if (len == 0 || len > 253) {
		snprintf(why, whysz, "must be a domain name of 1 to 253 characters");
		return false;
	}
	for (size_t i = 0; i <= len; i++) {
		char ch = v[i];
		if (ch == '.' || ch == '\0') {
			if (label == 0 || label > 63 || v[i - 1] == '-' || v[i - label] == '-') {
				snprintf(
				    why, whysz,
				    "must be a domain name: labels of 1-63 letters, digits and "
				    "inner hyphens, separated by dots");
				return false;
			}
			label = 0;
		} else if (isalnum((unsigned char)ch) || ch == '-') {
			label++;
		} else {
			snprintf(why, whysz,
			         "must be a domain name (letters, digits, '-' and '.')");
			return false;
		}
	}
	return true;
}

static bool check_user(const char *v, char *why, size_t whysz)
{
	if (v[0] == '-' || strlen(v) > 32) {
		snprintf(why, whysz, "must be a user name of at most 32 characters, or \"\"");
		return false;
	}
	for (const char *p = v; *p; p++) {
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-') {
			snprintf(why, whysz,
			         "must be a user name (letters, digits, '_', '.', '-')");
			return false;
		}
	}
	return true;
}

/* local@domain; the local part is a RFC 5322 dot-atom of at most 64 octets (RFC 5321
 * 4.5.3.1.1). */
static bool check_mailbox(const char *v, char *why, size_t whysz)
{
	static const char atext[] = "!#$%&'*+-/=?^_`{|}~";
	const char *at = strrchr(v, '@');
	size_t llen = at ? (size_t)(at - v) : 0;

	if (!at || llen == 0 || llen > LIM_LOCAL_PART) {
		snprintf(why, whysz, "must be an address like postmaster@example.net");
		return false;
	}
	for (size_t i = 0; i < llen; i++) {
		char ch = v[i];
		bool dot_ok = ch == '.' && i > 0 && i + 1 < llen && v[i + 1] != '.';
		if (!isalnum((unsigned char)ch) && !(ch && strchr(atext, ch)) && !dot_ok) {
			snprintf(why, whysz, "has a character not allowed before the @");
			return false;
		}
	}
	return check_hostname(at + 1, why, whysz);
}

/* ---- defaults ---- */

static void default_hostname(char *buf, size_t n)
{
	char why[128];
	if (gethostname(buf, n) != 0 || memchr(buf, '\0', n) == NULL ||
	    !check_hostname(buf, why, sizeof(why)))
		str_copy(buf, n, "localhost");
}

static bool has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* $SEALMAIL_HOME or ./sealmail-data, made absolute so a later chdir cannot move it. */
static void default_data_dir(char *buf, size_t n)
{
	const char *home = getenv("SEALMAIL_HOME");
	char cwd[PATH_MAX];
	int r;

	if (home && home[0] && has_ctl(home)) {
		log_warn("event=config_warning reason=\"SEALMAIL_HOME has control characters; "
		         "ignored\"");
		home = NULL;
	}
	if (!home || !home[0])
		home = "sealmail-data";
	if (home[0] == '/' && str_copy(buf, n, home))
		return;
	if (home[0] != '/' && getcwd(cwd, sizeof(cwd))) {
		r = snprintf(buf, n, "%s%s%s", cwd, strcmp(cwd, "/") ? "/" : "", home);
		if (r > 0 && (size_t)r < n)
			return;
	}
	log_warn("event=config_warning reason=\"cannot make an absolute data_dir\"");
	str_copy(buf, n, "sealmail-data");
}

static void default_data_dir_checked(char *buf, size_t n)
{
	default_data_dir(buf, n);
	if (strlen(buf) > CONF_PATH_LEN_MAX) {
		log_warn("event=config_warning reason=\"data_dir longer than %d bytes\"",
		         CONF_PATH_LEN_MAX);
		str_copy(buf, n, "sealmail-data");
	}
}

/* A mismatch between the table and struct conf is a bug: stop at once. */
static void table_check(void)
{
	for (size_t i = 0; i < NOPTS; i++) {
		const struct conf_option *o = &conf_opts[i];
		size_t want = 0;
		switch (o->type) {
		case CT_INT:
		case CT_DURATION:
		case CT_ENUM:
			want = sizeof(int);
			break;
		case CT_SIZE:
			want = sizeof(uint64_t);
			break;
		case CT_BOOL:
			want = sizeof(bool);
			break;
		case CT_LISTEN:
			want = sizeof(struct conf_listener);
			break;
		case CT_STRING:
		case CT_PATH:
			want = o->size > 1 ? o->size : 0;
			break;
		case CT_CERT:
		case CT_KEY:
			want = o->size;
			break;
		}
		if (want != o->size || (i > 0 && o->section == NULL && conf_opts[i - 1].section))
			fatal("bug: config table entry %s", o->key);
	}
}

void conf_apply_defaults(struct conf *c, bool embedded)
{
	table_check();
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < NOPTS; i++) {
		const struct conf_option *o = &conf_opts[i];
		const char *s = embedded && o->def_embedded ? o->def_embedded : o->def_str;
		const char *why = "";
		struct conf_listener l;

		switch (o->type) {
		case CT_STRING:
		case CT_PATH:
			if (s && !str_copy(field(c, o), o->size, s))
				fatal("bug: default of %s too long", o->key);
			break;
		case CT_LISTEN:
			if (parse_listen(s ? s : "", &l, &why) < 0)
				fatal("bug: default of %s: %s", o->key, why);
			memcpy(field(c, o), &l, sizeof(l));
			break;
		case CT_CERT:
		case CT_KEY:
			break;
		default:
			num_store(o, c, o->def);
			break;
		}
	}
	default_hostname(c->hostname, sizeof(c->hostname));
	if (embedded)
		default_data_dir_checked(c->data_dir, sizeof(c->data_dir));
	c->seed_localhost = embedded;
}

void conf_defaults(struct conf *c)
{
	conf_apply_defaults(c, true);
}

/* ---- the parser ---- */

const char *conf_source_file(const struct conf *c, struct conf_source s)
{
	if (s.line <= 0 || s.file == 0 || s.file > c->src_files_len)
		return NULL;
	return c->src_files + s.file - 1;
}

/* Records a file name in c->src_files once; returns its id (see struct conf_source), 0 when
 * the pool is full. */
static uint32_t record_file(struct conf *c, const char *path)
{
	size_t l = strlen(path) + 1;

	for (size_t off = 0; off < c->src_files_len; off += strlen(c->src_files + off) + 1)
		if (strcmp(c->src_files + off, path) == 0)
			return (uint32_t)off + 1;
	if (c->src_files_len + l > sizeof(c->src_files))
		return 0;
	memcpy(c->src_files + c->src_files_len, path, l);
	c->src_files_len += l;
	return (uint32_t)(c->src_files_len - l) + 1;
}

/* The absolute directory of path. */
static int file_dir(const char *path, char *dir, size_t n)
{
	const char *slash = strrchr(path, '/');
	char cwd[PATH_MAX];
	int r;

	if (path[0] == '/') {
		size_t l = slash == path ? 1 : (size_t)(slash - path);
		if (l >= n)
			return -1;
		memcpy(dir, path, l);
		dir[l] = '\0';
		return 0;
	}
	if (!getcwd(cwd, sizeof(cwd)))
		return -1;
	if (!slash)
		return str_copy(dir, n, cwd) ? 0 : -1;
	r = snprintf(dir, n, "%s/%.*s", strcmp(cwd, "/") ? cwd : "", (int)(slash - path), path);
	return r > 0 && (size_t)r < n ? 0 : -1;
}

/* dir + "/" + rel, or rel when it is absolute. With escape, glob metacharacters in dir are
 * quoted so that only rel is a pattern. */
static int join_path(const char *dir, const char *rel, bool escape, char *out, size_t n)
{
	size_t o = 0;

	if (rel[0] == '/')
		return str_copy(out, n, rel) ? 0 : -1;
	while (rel[0] == '.' && rel[1] == '/')
		rel += 2;
	for (const char *p = dir; *p; p++) {
		if (escape && strchr("*?[\\", *p)) {
			if (o + 1 >= n)
				return -1;
			out[o++] = '\\';
		}
		if (o + 1 >= n)
			return -1;
		out[o++] = *p;
	}
	if (o == 0 || out[o - 1] != '/') {
		if (o + 1 >= n)
			return -1;
		out[o++] = '/';
	}
	size_t rl = strlen(rel);
	if (o + rl >= n)
		return -1;
	memcpy(out + o, rel, rl + 1);
	return 0;
}

/* Reads one line (without its LF or CRLF). 1: a line, 0: end of file, -1: longer than
 * CONF_LINE_MAX, -2: read error. */
static int read_line(FILE *f, char *buf, size_t cap, size_t *len)
{
	size_t n = 0;
	int ch;

	while ((ch = getc(f)) != EOF && ch != '\n') {
		if (n + 1 >= cap)
			return -1;
		buf[n++] = (char)ch;
	}
	if (ch == EOF && ferror(f))
		return -2;
	if (ch == EOF && n == 0)
		return 0;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	if (n > CONF_LINE_MAX)
		return -1;
	buf[n] = '\0';
	*len = n;
	return 1;
}

/* The value after '=': "quoted" (with \" and \\) or bare; a '#' at the start or after
 * whitespace starts a comment; surrounding whitespace is dropped. */
static int parse_value(const char *p, char *out, size_t cap, const char **why)
{
	size_t o = 0;

	if (*p == '"') {
		for (p++;; p++) {
			char ch = *p;
			if (ch == '\0') {
				*why = "the quoted value has no closing \"";
				return -1;
			}
			if (ch == '"')
				break;
			if (ch == '\\') {
				ch = *++p;
				if (ch != '"' && ch != '\\') {
					*why = "in quotes, a backslash may only escape \" or \\";
					return -1;
				}
			}
			if (o + 1 >= cap) {
				*why = "value too long";
				return -1;
			}
			out[o++] = ch;
		}
		p = skip_ws(p + 1);
		if (*p != '\0' && *p != '#') {
			*why = "unexpected text after the closing quote";
			return -1;
		}
	} else {
		const char *start = p;
		for (; *p; p++)
			if (*p == '#' && (p == start || p[-1] == ' ' || p[-1] == '\t'))
				break;
		while (p > start && (p[-1] == ' ' || p[-1] == '\t'))
			p--;
		o = (size_t)(p - start);
		if (o >= cap) {
			*why = "value too long";
			return -1;
		}
		memcpy(out, start, o);
	}
	out[o] = '\0';
	return 0;
}

static const char *section_find(const char *name)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (conf_opts[i].section && strcmp(conf_opts[i].section, name) == 0)
			return conf_opts[i].section;
	return NULL;
}

static int option_find(const char *section, const char *key)
{
	for (size_t i = 0; i < NOPTS; i++) {
		const struct conf_option *o = &conf_opts[i];
		bool same_sec =
		    section ? o->section && strcmp(o->section, section) == 0 : o->section == NULL;
		if (same_sec && strcmp(o->key, key) == 0)
			return (int)i;
	}
	return -1;
}

/* " (did you mean X?)" for an unknown option, or "". in_section: the name was written
 * without a dot below a [section] header, where top-level options cannot be set. */
static void suggest_option(const char *full, const char *key, bool in_section, char *out, size_t n)
{
	char name[2 * CONF_NAME_MAX];
	size_t best = 3;

	out[0] = '\0';
	for (size_t i = 0; i < NOPTS; i++) {
		const struct conf_option *o = &conf_opts[i];
		conf_opt_name(o, name, sizeof(name));
		if (strcmp(o->key, key) == 0) {
			snprintf(out, n, " (did you mean %s?%s)", name,
			         o->section || !in_section
			             ? ""
			             : " top-level options go before the first [section]");
			return;
		}
		size_t d = edit_distance(full, name);
		if (d < best) {
			best = d;
			snprintf(out, n, " (did you mean %s?)", name);
		}
	}
}

static void suggest_section(const char *sec, char *out, size_t n)
{
	size_t best = 3;

	out[0] = '\0';
	for (size_t i = 0; i < NOPTS; i++) {
		const char *s = conf_opts[i].section;
		if (!s)
			continue;
		size_t d = edit_distance(sec, s);
		if (d < best) {
			best = d;
			snprintf(out, n, " (did you mean [%s]?)", s);
		}
	}
}

static int load_file(struct load_ctx *lc, const char *path, const struct file_ctx *from, int depth);

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* include = PATTERN: a glob relative to the including file's directory, read in sorted
 * order. A pattern that matches nothing is fine (an empty conf.d/); a plain file name that
 * does not exist is an error. */
static int do_include(struct load_ctx *lc, struct file_ctx *fx, const char *pat)
{
	char full[PATH_MAX];
	glob_t g;
	int r, rc = 0;

	if (pat[0] == '\0')
		return conf_fail(lc->err, fx->path, fx->line, "include",
		                 "needs a file name or pattern");
	if (!strpbrk(pat, "*?[")) {
		if (join_path(fx->dir, pat, false, full, sizeof(full)) < 0)
			return conf_fail(lc->err, fx->path, fx->line, "include", "path too long");
		return load_file(lc, full, fx, fx->depth + 1);
	}
	if (join_path(fx->dir, pat, true, full, sizeof(full)) < 0)
		return conf_fail(lc->err, fx->path, fx->line, "include", "path too long");
	memset(&g, 0, sizeof(g));
	r = glob(full, 0, NULL, &g);
	if (r == GLOB_NOMATCH) {
		globfree(&g);
		return 0;
	}
	if (r != 0) {
		globfree(&g);
		return conf_fail(lc->err, fx->path, fx->line, "include",
		                 "cannot expand the pattern (%s)",
		                 r == GLOB_NOSPACE ? "out of memory" : "read error");
	}
	/* sorted bytewise, whatever the locale, so 10-a.conf < 20-b.conf everywhere */
	qsort(g.gl_pathv, g.gl_pathc, sizeof(char *), cmp_str);
	for (size_t i = 0; i < g.gl_pathc && rc == 0; i++)
		rc = load_file(lc, g.gl_pathv[i], fx, fx->depth + 1);
	globfree(&g);
	return rc;
}

static int set_path(struct load_ctx *lc, struct file_ctx *fx, const char *name, const char *val,
                    char *dst, size_t n)
{
	if (val[0] == '\0')
		return conf_fail(lc->err, fx->path, fx->line, name, "needs a path");
	if (join_path(fx->dir, val, false, dst, n) < 0 || strlen(dst) > CONF_PATH_LEN_MAX)
		return conf_fail(lc->err, fx->path, fx->line, name, "path longer than %d bytes",
		                 CONF_PATH_LEN_MAX);
	return 0;
}

static int set_cert(struct load_ctx *lc, struct file_ctx *fx, const struct conf_option *o,
                    const char *name, const char *val)
{
	struct conf *c = lc->c;
	struct conf_source here = {fx->fileid, fx->line};

	if (o->type == CT_CERT) {
		if (lc->cert_open) {
			struct conf_cert *prev = &c->certs[c->ncerts - 1];
			const char *pf = conf_source_file(c, prev->cert_src);
			return conf_fail(
			    lc->err, fx->path, fx->line, name,
			    "the tls.cert at %s:%d has no tls.key yet (each tls.cert must "
			    "be followed by its tls.key)",
			    pf ? pf : "?", prev->cert_src.line);
		}
		if (c->ncerts >= LIM_CERTS)
			return conf_fail(lc->err, fx->path, fx->line, name,
			                 "more than %d certificates", LIM_CERTS);
		struct conf_cert *ct = &c->certs[c->ncerts];
		if (set_path(lc, fx, name, val, ct->cert_file, sizeof(ct->cert_file)) < 0)
			return -1;
		ct->key_file[0] = '\0';
		ct->cert_src = here;
		ct->key_src = (struct conf_source){0, 0};
		c->ncerts++;
		lc->cert_open = true;
		return 0;
	}
	if (!lc->cert_open)
		return conf_fail(
		    lc->err, fx->path, fx->line, name,
		    "no tls.cert before it (write tls.cert = CHAIN, then tls.key = KEY)");
	struct conf_cert *ct = &c->certs[c->ncerts - 1];
	if (set_path(lc, fx, name, val, ct->key_file, sizeof(ct->key_file)) < 0)
		return -1;
	ct->key_src = here;
	lc->cert_open = false;
	return 0;
}

static int set_option(struct load_ctx *lc, struct file_ctx *fx, int idx, const char *name,
                      const char *val)
{
	const struct conf_option *o = &conf_opts[idx];
	struct conf *c = lc->c;
	struct conf_error *err = lc->err;
	char shown[CONF_VALUE_SHOW + 8], why[160], lim[32];
	const char *w = "";
	struct conf_listener l;
	long long v;
	int b;

	switch (o->type) {
	case CT_CERT:
	case CT_KEY:
		return set_cert(lc, fx, o, name, val);
	case CT_STRING:
		if (strlen(val) >= o->size)
			return conf_fail(err, fx->path, fx->line, name, "too long (max %zu bytes)",
			                 o->size - 1);
		if (o->check && !o->check(val, why, sizeof(why)))
			return conf_fail(err, fx->path, fx->line, name, "\"%s\" %s",
			                 vis(val, shown, sizeof(shown)), why);
		str_copy(field(c, o), o->size, val);
		break;
	case CT_PATH:
		/* an optional file (default "") may be set back to "" */
		if (val[0] == '\0' && o->def_str && o->def_str[0] == '\0') {
			((char *)field(c, o))[0] = '\0';
			break;
		}
		if (set_path(lc, fx, name, val, field(c, o), o->size) < 0)
			return -1;
		break;
	case CT_INT:
	case CT_SIZE:
	case CT_DURATION:
		if (!parse_num(o->type, val, &v))
			return conf_fail(err, fx->path, fx->line, name, "\"%s\" is not %s",
			                 vis(val, shown, sizeof(shown)),
			                 o->type == CT_INT ? "a whole number"
			                 : o->type == CT_SIZE
			                     ? "a size (bytes, or with K, M or G: 512K, "
			                       "35M, 1G)"
			                     : "a duration (seconds, or with s, m, h or d: "
			                       "30s, 5m, 1h, 5d)");
		if (v < o->min) {
			conf_fmt_num(o->type, o->min, lim, sizeof(lim));
			return conf_fail(err, fx->path, fx->line, name,
			                 "%s is below the minimum %s",
			                 vis(val, shown, sizeof(shown)), lim);
		}
		if (v > o->max) {
			conf_fmt_num(o->type, o->max, lim, sizeof(lim));
			return conf_fail(err, fx->path, fx->line, name,
			                 "%s is above the maximum %s",
			                 vis(val, shown, sizeof(shown)), lim);
		}
		num_store(o, c, v);
		break;
	case CT_BOOL:
		b = parse_bool(val);
		if (b < 0)
			return conf_fail(err, fx->path, fx->line, name,
			                 "\"%s\" is not yes or no (true/false and on/off work too)",
			                 vis(val, shown, sizeof(shown)));
		num_store(o, c, b);
		break;
	case CT_ENUM:
		for (b = 0; o->names[b]; b++)
			if (strcasecmp(o->names[b], val) == 0)
				break;
		if (!o->names[b])
			return conf_fail(err, fx->path, fx->line, name,
			                 "\"%s\" is not one of: %s, %s",
			                 vis(val, shown, sizeof(shown)), o->names[0], o->names[1]);
		num_store(o, c, b);
		break;
	case CT_LISTEN:
		if (parse_listen(val, &l, &w) < 0)
			return conf_fail(err, fx->path, fx->line, name, "\"%s\": %s",
			                 vis(val, shown, sizeof(shown)), w);
		memcpy(field(c, o), &l, sizeof(l));
		break;
	}
	c->src[idx] = (struct conf_source){fx->fileid, fx->line};
	return 0;
}

static int parse_section(struct load_ctx *lc, struct file_ctx *fx, const char *p)
{
	char name[CONF_NAME_MAX + 1], shown[CONF_VALUE_SHOW + 8], hint[2 * CONF_NAME_MAX];
	const char *close = strchr(p, ']');
	const char *s, *e, *sec;

	if (!close)
		return conf_fail(lc->err, fx->path, fx->line, NULL,
		                 "missing ] in the section header");
	s = skip_ws(p + 1);
	e = close;
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	p = skip_ws(close + 1);
	if (*p != '\0' && *p != '#')
		return conf_fail(lc->err, fx->path, fx->line, NULL, "unexpected text after ]");
	if (e == s)
		return conf_fail(lc->err, fx->path, fx->line, NULL, "empty section name []");
	if ((size_t)(e - s) > CONF_NAME_MAX) {
		memcpy(name, s, CONF_NAME_MAX);
		name[CONF_NAME_MAX] = '\0';
		return conf_fail(lc->err, fx->path, fx->line, NULL, "unknown section [%s...]",
		                 vis(name, shown, sizeof(shown)));
	}
	memcpy(name, s, (size_t)(e - s));
	name[e - s] = '\0';
	sec = section_find(name);
	if (!sec) {
		suggest_section(name, hint, sizeof(hint));
		return conf_fail(lc->err, fx->path, fx->line, NULL, "unknown section [%s]%s",
		                 vis(name, shown, sizeof(shown)), hint);
	}
	fx->section = sec;
	return 0;
}

static int parse_line(struct load_ctx *lc, struct file_ctx *fx, const char *line, size_t len)
{
	char key[CONF_NAME_MAX + 1], full[2 * CONF_NAME_MAX + 2], sec[CONF_NAME_MAX + 1];
	char val[CONF_LINE_MAX + 1], hint[4 * CONF_NAME_MAX], shown[CONF_VALUE_SHOW + 8];
	const char *p, *k, *dot, *why = "";
	size_t klen;
	int idx;

	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)line[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return conf_fail(lc->err, fx->path, fx->line, NULL,
			                 "control character 0x%02x in column %zu", ch, i + 1);
	}
	p = skip_ws(line);
	if (*p == '\0' || *p == '#')
		return 0;
	if (*p == '[')
		return parse_section(lc, fx, p);

	k = p;
	while (is_name_char(*p))
		p++;
	klen = (size_t)(p - k);
	if (klen == 0)
		return conf_fail(lc->err, fx->path, fx->line, NULL,
		                 "expected \"key = value\" or \"[section]\"");
	if (klen > CONF_NAME_MAX)
		return conf_fail(lc->err, fx->path, fx->line, NULL,
		                 "option name longer than %d bytes", CONF_NAME_MAX);
	memcpy(key, k, klen);
	key[klen] = '\0';
	p = skip_ws(p);
	if (*p != '=')
		return conf_fail(lc->err, fx->path, fx->line, key,
		                 "expected '=' after the option name");
	if (parse_value(skip_ws(p + 1), val, sizeof(val), &why) < 0)
		return conf_fail(lc->err, fx->path, fx->line, key, "%s", why);

	if (strcmp(key, "include") == 0)
		return do_include(lc, fx, val);

	/* "section.key" names an option from anywhere: conf_print writes them so */
	dot = strchr(key, '.');
	if (dot) {
		snprintf(sec, sizeof(sec), "%.*s", (int)(dot - key), key);
		snprintf(full, sizeof(full), "%s", key);
		idx = strchr(dot + 1, '.') || dot == key ? -1 : option_find(sec, dot + 1);
		k = dot + 1;
	} else {
		if (fx->section)
			snprintf(full, sizeof(full), "%s.%s", fx->section, key);
		else
			snprintf(full, sizeof(full), "%s", key);
		idx = option_find(fx->section, key);
		k = key;
	}
	if (idx < 0) {
		suggest_option(full, k, !dot && fx->section, hint, sizeof(hint));
		return conf_fail(lc->err, fx->path, fx->line, vis(full, shown, sizeof(shown)),
		                 "unknown option%s", hint);
	}
	return set_option(lc, fx, idx, full, val);
}

static int load_file(struct load_ctx *lc, const char *path, const struct file_ctx *from, int depth)
{
	const char *ffile = from ? from->path : NULL;
	int fline = from ? from->line : 0;
	char buf[CONF_LINE_MAX + 2];
	struct file_ctx fx;
	struct stat st;
	FILE *f;
	size_t len;
	int fd, r, rc = 0;

	if (depth > CONF_INCLUDE_DEPTH)
		return conf_fail(lc->err, ffile, fline, "include",
		                 "files nested more than %d deep (does a file include itself?)",
		                 CONF_INCLUDE_DEPTH);
	if (strlen(path) > CONF_PATH_LEN_MAX)
		return conf_fail(lc->err, ffile, fline, from ? "include" : NULL,
		                 "file name longer than %d bytes", CONF_PATH_LEN_MAX);
	if (++lc->nfiles > CONF_MAX_FILES)
		return conf_fail(lc->err, ffile, fline, "include", "more than %d files in all",
		                 CONF_MAX_FILES);
	/* O_NONBLOCK: a FIFO must not hang us; anything but a regular file is refused */
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		return from ? conf_fail(lc->err, ffile, fline, "include", "%s: %s", path,
		                        strerror(e))
		            : conf_fail(lc->err, path, 0, NULL, "%s", strerror(e));
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return from ? conf_fail(lc->err, ffile, fline, "include", "%s: not a regular file",
		                        path)
		            : conf_fail(lc->err, path, 0, NULL, "not a regular file");
	}
	f = fdopen(fd, "r");
	if (!f) {
		int e = errno;
		close(fd);
		return conf_fail(lc->err, path, 0, NULL, "%s", strerror(e));
	}
	memset(&fx, 0, sizeof(fx));
	fx.path = path;
	fx.depth = depth;
	if (file_dir(path, fx.dir, sizeof(fx.dir)) < 0) {
		fclose(f);
		return conf_fail(lc->err, path, 0, NULL, "cannot tell the file's directory");
	}
	fx.fileid = record_file(lc->c, path);
	if (fx.fileid == 0) {
		fclose(f);
		return conf_fail(lc->err, ffile, fline, "include", "too many included files");
	}
	while ((r = read_line(f, buf, sizeof(buf), &len)) != 0) {
		if (fx.line == INT_MAX) {
			rc = conf_fail(lc->err, path, 0, NULL, "too many lines");
			break;
		}
		fx.line++;
		if (r == -1) {
			rc = conf_fail(lc->err, path, fx.line, NULL, "line longer than %d bytes",
			               CONF_LINE_MAX);
			break;
		}
		if (r == -2) {
			rc = conf_fail(lc->err, path, fx.line, NULL, "read error: %s",
			               strerror(errno));
			break;
		}
		const char *s = buf;
		if (fx.line == 1 && len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) {
			s += 3; /* a UTF-8 byte order mark some editors add */
			len -= 3;
		}
		if (parse_line(lc, &fx, s, len) < 0) {
			rc = -1;
			break;
		}
	}
	fclose(f);
	return rc;
}

/* Checks that need the whole file read. */
static int finish(struct load_ctx *lc)
{
	struct conf *c = lc->c;
	char name[2 * CONF_NAME_MAX], why[160], addr[96];
	int r;

	if (lc->cert_open) {
		struct conf_cert *ct = &c->certs[c->ncerts - 1];
		return conf_fail(lc->err, conf_source_file(c, ct->cert_src), ct->cert_src.line,
		                 "tls.cert", "no tls.key follows it");
	}
	int pm = option_find(NULL, "postmaster");
	if (pm >= 0 && c->src[pm].line <= 0) {
		r = snprintf(c->postmaster, sizeof(c->postmaster), "postmaster@%s", c->hostname);
		if (r < 0 || (size_t)r >= sizeof(c->postmaster) ||
		    !check_mailbox(c->postmaster, why, sizeof(why)))
			return conf_fail(
			    lc->err, c->path, 0, "postmaster",
			    "the default postmaster@<hostname> is too long; set postmaster");
	}
	/* two listeners on one address cannot both bind */
	for (size_t i = 0; i < NOPTS; i++) {
		const struct conf_option *a = &conf_opts[i];
		if (a->type != CT_LISTEN)
			continue;
		for (size_t j = i + 1; j < NOPTS; j++) {
			const struct conf_option *b = &conf_opts[j];
			const struct conf_listener *la = (const void *)cfield(c, a);
			const struct conf_listener *lb = (const void *)cfield(c, b);
			if (b->type != CT_LISTEN || !la->enabled || !lb->enabled ||
			    la->port != lb->port || strcmp(la->addr, lb->addr) != 0)
				continue;
			size_t blame = c->src[j].line > 0 ? j : i;
			conf_opt_name(&conf_opts[blame], name, sizeof(name));
			conf_fmt_listen(la, addr, sizeof(addr));
			char other[2 * CONF_NAME_MAX];
			conf_opt_name(&conf_opts[blame == j ? i : j], other, sizeof(other));
			return conf_fail(lc->err, conf_source_file(c, c->src[blame]),
			                 c->src[blame].line, name, "same address as %s (%s)", other,
			                 addr);
		}
	}
	return 0;
}

int conf_load(const char *path, struct conf *out, struct conf_error *err)
{
	struct conf_error scratch_err;
	struct load_ctx lc;
	struct conf *c;
	int rc;

	if (!err)
		err = &scratch_err;
	err->msg[0] = '\0';
	if (!path || !path[0])
		return conf_fail(err, NULL, 0, NULL, "no configuration file given");
	c = xmalloc(sizeof(*c));
	conf_apply_defaults(c, false);
	if (!str_copy(c->path, sizeof(c->path), path)) {
		free(c);
		return conf_fail(err, NULL, 0, NULL, "configuration file name too long");
	}
	memset(&lc, 0, sizeof(lc));
	lc.c = c;
	lc.err = err;
	rc = load_file(&lc, path, NULL, 0);
	if (rc == 0)
		rc = finish(&lc);
	if (rc == 0 && c->delivery_tls_policy_file[0]) {
		/* the policy file is part of the config: a broken one fails the load (and a
		 * reload keeps the old config), not the queue process later */
		char why[sizeof(err->msg)];
		struct tls_policy_map *m = tls_policy_load(c->delivery_tls_policy_file, why,
							   sizeof(why));
		if (!m)
			rc = conf_fail(err, NULL, 0, NULL, "delivery.tls_policy_file: %s", why);
		tls_policy_free(m);
	}
	if (rc == 0)
		memcpy(out, c, sizeof(*c));
	free(c);
	return rc;
}

const char *conf_pick_path(const char *cli_path)
{
	const char *env = getenv("SEALMAIL_CONF");

	if (cli_path && cli_path[0])
		return cli_path;
	if (env && env[0])
		return env;
	if (access(CONF_DEFAULT_PATH, F_OK) == 0)
		return CONF_DEFAULT_PATH;
	return NULL;
}
