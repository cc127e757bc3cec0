/* Logging: one line per event, key=value, to stderr or syslog. Every process.
 * Values from the network must be passed through log_safe() (no CR/LF/control bytes). */
#ifndef SEALMAIL_UTIL_LOG_H
#define SEALMAIL_UTIL_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_LV_DEBUG = 0, LOG_LV_INFO, LOG_LV_WARN, LOG_LV_ERR };

/* `role` prefixes every line (e.g. "smtp", "queue", "master"). */
void log_init(const char *role, bool use_syslog, bool debug);
void log_set_role(const char *role);

/* printf-style; the message should be key=value pairs: "event=connect ip=1.2.3.4". */
void log_msg(enum log_level lv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_debug(...) log_msg(LOG_LV_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LV_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LV_WARN, __VA_ARGS__)
#define log_err(...) log_msg(LOG_LV_ERR, __VA_ARGS__)

/* Copies at most len bytes of s into buf (size bufsz) replacing bytes outside printable
 * ASCII, and '"' and '\\', with '?'; always NUL-terminates. Returns buf. */
char *log_safe(char *buf, size_t bufsz, const char *s, size_t len);

/* Prints "sealmail: <msg>" to stderr and exits 70 (EX_SOFTWARE). Only for bugs and OOM. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t sz);
char *xstrdup(const char *s);

#endif
