/* Configuration: one table of options (type, default, range, reload), the file parser, and
 * `sealmail config check|show`. Runs in the master (parse) and is copied into children at
 * fork. Untrusted input: none from the network; the file is the admin's, but errors must
 * name file:line: option and never crash. */
#ifndef SEALMAIL_CONF_CONF_H
#define SEALMAIL_CONF_CONF_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "limits.h"

#define CONF_DEFAULT_PATH "/etc/sealmail/sealmail.conf"

/* Upper bound on the number of entries in the option table (conf.c checks it at compile
 * time); conf.src[] is indexed like the table. */
#define CONF_OPT_MAX 80
/* Bytes for the names of the files a load read (NUL-separated), see struct conf_source. */
#define CONF_SRC_FILES 16384

/* Where a value came from. line == 0: the default (file is then 0 too). Otherwise `file` is
 * 1 + the offset of the file's name in conf.src_files; conf_source_file() resolves it. */
struct conf_source {
	uint32_t file;
	int line;
};

enum conf_listener_kind { CONF_LST_MX = 0, CONF_LST_SUBMISSION, CONF_LST_SUBMISSIONS, CONF_LST__COUNT };

struct conf_listener {
	bool enabled;        /* false when the address is empty ("") */
	char addr[64];       /* numeric IPv4 or IPv6 address, e.g. "127.0.0.1", "::" */
	int port;
};

struct conf_cert {
	char cert_file[PATH_MAX]; /* PEM chain (Let's Encrypt fullchain.pem works as is) */
	char key_file[PATH_MAX];  /* PEM private key (privkey.pem) */
	struct conf_source cert_src; /* the tls.cert line */
	struct conf_source key_src;  /* the tls.key line */
};

enum conf_log_dest { CONF_LOG_STDERR = 0, CONF_LOG_SYSLOG };

struct conf {
	char path[PATH_MAX];        /* file read, "" for embedded defaults */
	char hostname[LIM_DOMAIN + 1]; /* greeting, Received, default: gethostname() */
	char data_dir[PATH_MAX];    /* default $SEALMAIL_HOME or ./sealmail-data (made absolute) */
	char user[64];              /* drop root to this user after binding; "" = don't */
	int workers;                /* smtp worker processes; 0 = one per core */

	struct conf_listener listeners[CONF_LST__COUNT]; /* [listen] mx, submission, submissions */
	bool mx_auth;               /* [listen] mx_auth: AUTH on the mx listener too */

	struct conf_cert certs[LIM_CERTS]; /* [tls] cert/key pairs; none = self-signed in data_dir */
	int ncerts;
	bool tls_resumption;        /* session tickets + cache */

	uint64_t max_message_size;  /* [limits] message_size, SIZE advertised */
	int max_recipients;         /* [limits] recipients */
	int max_errors;             /* [limits] errors */
	int max_connections;        /* [limits] connections (total, per worker share) */
	int max_connections_per_ip; /* [limits] connections_per_ip */
	int idle_timeout;           /* [limits] idle_timeout, seconds */
	int data_timeout;           /* [limits] data_timeout, seconds for the whole DATA phase */
	int max_received;           /* [limits] received_headers (loop guard) */
	int shutdown_grace;         /* [limits] shutdown_grace, seconds */

	char postmaster[LIM_PATH + 1]; /* mailbox that postmaster@ and <Postmaster> deliver to */
	bool seed_localhost;        /* embedded defaults only: the store starts with "localhost" */

	int queue_scan_interval;    /* [queue] scan_interval, seconds */
	int queue_retry_interval;   /* [queue] retry_interval: first retry wait, seconds */
	int queue_retry_max;        /* [queue] retry_max: longest wait between attempts */
	int queue_lifetime;         /* [queue] lifetime: bounce what is still queued after it */
	int queue_delay_warning;    /* [queue] delay_warning: delay notice after it; 0 = off */

	int delivery_port;          /* [delivery] port of MX hosts */
	int delivery_tls_policy;    /* enum tls_level: default level */
	char delivery_tls_policy_file[PATH_MAX]; /* per-domain levels, "" none */
	int delivery_tls_min_version; /* 0 TLSv1, 1 TLSv1.1, 2 TLSv1.2, 3 TLSv1.3 */
	char delivery_ca_file[PATH_MAX]; /* "" = system CAs */
	char delivery_source4[64];  /* bind address for IPv4, "" = any */
	char delivery_source6[64];  /* bind address for IPv6, "" = any */
	int delivery_family;        /* enum dns_family */
	int delivery_connect_timeout;
	int delivery_connections;   /* outbound connections in all */
	int delivery_connections_per_dest;
	char relayhost[LIM_DOMAIN + 16]; /* "host:port", "[host]:port" or "" */
	int relayhost_tls;          /* 0 starttls, 1 implicit */
	int relayhost_tls_policy;   /* enum tls_level */
	char relayhost_user[256];
	char relayhost_password[256];

	char dns_resolv_conf[PATH_MAX];
	char dns_forwarders[512];   /* "IP[@port] IP[@port]" */
	char dns_trust_anchor[PATH_MAX];

	enum conf_log_dest log_dest;/* [log] destination = stderr | syslog */
	bool log_debug;             /* [log] debug = yes */

	/* Sources of the values above, filled by conf_load (all "default" after conf_defaults).
	 * Certificates keep theirs in struct conf_cert. */
	struct conf_source src[CONF_OPT_MAX];
	char src_files[CONF_SRC_FILES];
	size_t src_files_len;
};

/* Error of a load: "file:line: option: message" is in `msg`. */
struct conf_error {
	char msg[512];
};

/* Fills *c with the embedded defaults (no file): listeners on 127.0.0.1:2525/2587/2465,
 * data_dir $SEALMAIL_HOME or ./sealmail-data made absolute, user "", seed_localhost. Never
 * fails. */
void conf_defaults(struct conf *c);

/* Reads `path` (and files it includes) over the defaults for a real deployment (listeners
 * on 0.0.0.0:25/587/465, data_dir /var/lib/sealmail, user "sealmail", postmaster
 * "postmaster@<hostname>", seed_localhost false). Returns 0, or -1 with err->msg set
 * ("file:line: option: message") and *c left untouched, so a failed reload keeps the old
 * config. `include = PATTERN` (a glob such as conf.d/<name>.conf, relative to the including
 * file's directory, read in sorted order, nested at most 8 deep) may appear anywhere; an
 * included file starts outside any section. Relative paths in values are relative to the
 * directory of the file that sets them. Unknown options, bad values and out-of-range
 * numbers are errors. */
int conf_load(const char *path, struct conf *c, struct conf_error *err);

/* Prints every option as "section.key = value  # source" (source: default | file:line), in
 * the syntax conf_load reads back (sizes and durations with suffixes where exact); each
 * certificate as a tls.cert line and a tls.key line. With nondefault_only, only options set
 * by a file. */
void conf_print(FILE *out, const struct conf *c, bool nondefault_only);

/* Prints the option table as Markdown rows (option, default, range, reload, meaning): the
 * reference part of docs/config.md is made with it. */
void conf_print_reference(FILE *out);

/* The file a value came from, or NULL for a default. Points into c. */
const char *conf_source_file(const struct conf *c, struct conf_source s);

/* True when a and b have the same value for every option, certificates included (sources,
 * path and seed_localhost are not compared). */
bool conf_same(const struct conf *a, const struct conf *b);

/* For SIGHUP: 0 when `next` differs from `cur` only in options a reload may change, else -1
 * with err->msg naming the first option that needs a restart ("listen.mx: cannot change on
 * reload ("0.0.0.0:25" -> "0.0.0.0:2525"); restart sealmail"). */
int conf_reload_check(const struct conf *cur, const struct conf *next, struct conf_error *err);

/* `sealmail config check|show [-c FILE] [-n]`: returns an exit code (0, 64, 78 EX_CONFIG). */
int conf_cli(int argc, char **argv);

/* The config path to use: -c value, else $SEALMAIL_CONF, else CONF_DEFAULT_PATH if it exists,
 * else NULL (embedded defaults). */
const char *conf_pick_path(const char *cli_path);

#endif
