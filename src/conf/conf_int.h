/* Internals shared by the files of src/conf/ and by nothing else (the API is conf.h): the
 * option table with its types, which conf.c defines and conf_print.c reads, and the value
 * checks that conf_checks.c keeps out of conf.c. */
#ifndef SEALMAIL_CONF_CONF_INT_H
#define SEALMAIL_CONF_CONF_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/conf.h"

/* ---- value checks (conf_checks.c) ---- */

/* Value checks of the config option table that are not about the core server (delivery and
 * DNS options), kept out of conf.c. Each returns true when v is acceptable ("" always is:
 * it means "not set") and otherwise writes why into why[0..whysz). Runs in the master and
 * `sealmail config check`. */
bool conf_check_ipv4(const char *v, char *why, size_t whysz);
bool conf_check_ipv6(const char *v, char *why, size_t whysz);
/* "host:port" or "[host]:port" (host a domain name or IPv4 address; [IPv6] in brackets). */
bool conf_check_relayhost(const char *v, char *why, size_t whysz);
/* Printable ASCII without spaces at either end (logins, passwords). */
bool conf_check_printable(const char *v, char *why, size_t whysz);
/* "IP[@port]" separated by spaces, at most 8. */
bool conf_check_forwarders(const char *v, char *why, size_t whysz);

/* Splits a relayhost value into host (brackets removed) and port. 0, or -1 when malformed. */
int conf_relayhost_split(const char *v, char *host, size_t hsz, int *port);

/* ---- the option table (conf.c), read by conf_print.c ---- */

#define CONF_NAME_MAX 64 /* option and section names */
#define KIB 1024LL
#define MIB (1024LL * KIB)
#define GIB (1024LL * MIB)

enum conf_type {
	CT_STRING,   /* text, checked by the option's check function */
	CT_PATH,     /* file name; relative to the directory of the file that sets it */
	CT_INT,      /* whole number */
	CT_SIZE,     /* bytes, with an optional K, M or G (1024-based) */
	CT_DURATION, /* seconds, with an optional s, m or h */
	CT_BOOL,     /* yes/no, true/false, on/off */
	CT_LISTEN,   /* "IP:PORT", "[IPv6]:PORT" or "" (disabled) */
	CT_ENUM,     /* one of names[] */
	CT_CERT,     /* tls.cert: starts a certificate pair */
	CT_KEY,      /* tls.key: completes it */
};

struct conf_option {
	const char *section; /* NULL: top level, before any [section] */
	const char *key;
	enum conf_type type;
	size_t off;               /* offsetof(struct conf, field) */
	size_t size;              /* sizeof the field */
	long long def;            /* default of numbers, bools (0/1) and enums (index) */
	const char *def_str;      /* default of text with a file (NULL: computed or "") */
	const char *def_embedded; /* default of text without a file (NULL: as def_str) */
	const char *def_doc;      /* default as documented, when it is computed */
	long long min, max;       /* numbers */
	bool reload;              /* SIGHUP may change it */
	const char *const *names; /* CT_ENUM: value names, index = enum value */
	bool (*check)(const char *v, char *why, size_t whysz);
	const char *syntax; /* CT_STRING: what a value looks like, for the reference */
	bool secret;        /* never printed by config show */
	const char *doc;
};

/* Every option, top-level ones first (conf_print relies on it); conf.src[i] belongs to
 * conf_opts[i]. */
extern const struct conf_option conf_opts[];
extern const size_t conf_nopts;
#define NOPTS conf_nopts

/* Where option o is stored in c. */
static inline char *field(struct conf *c, const struct conf_option *o)
{
	return (char *)c + o->off;
}

static inline const char *cfield(const struct conf *c, const struct conf_option *o)
{
	return (const char *)c + o->off;
}

/* The one error format: writes "file:line: option: message" to err->msg, leaving out the
 * parts that are unknown (file NULL, line <= 0, opt NULL). Always returns -1. */
int conf_fail(struct conf_error *err, const char *file, int line, const char *opt, const char *fmt,
              ...) __attribute__((format(printf, 5, 6)));

/* Fills c with every option's default: a deployment's, or with embedded those of running
 * without a file. A table that does not match struct conf is a bug and fatal(). */
void conf_apply_defaults(struct conf *c, bool embedded);

/* ---- print forms (conf_print.c), also used in conf.c's error messages ---- */

/* "section.key", or "key" at top level, into buf[0..n). */
void conf_opt_name(const struct conf_option *o, char *buf, size_t n);
/* v as the parser reads it for type t: 35M for sizes, 5m or 5d for durations, else digits. */
void conf_fmt_num(enum conf_type t, long long v, char *buf, size_t n);
/* "IP:PORT", "[IPv6]:PORT", or "" when the listener is off. */
void conf_fmt_listen(const struct conf_listener *l, char *buf, size_t n);

#endif
