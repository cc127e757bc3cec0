/* Logging for every process: key=value lines to stderr or syslog, plus fatal() and the
 * aborting allocators. No untrusted input is formatted here without log_safe(). */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

static char log_role[16] = "sealmail";
static bool log_syslog;
static bool log_debug_on;

static void log_libevent(int severity, const char *msg);

void log_init(const char *role, bool use_syslog, bool debug)
{
	log_set_role(role);
	log_syslog = use_syslog;
	log_debug_on = debug;
	event_set_log_callback(log_libevent);
	if (use_syslog)
		openlog("sealmail", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

/* libevent's own messages go into our log; the note that a forked child's new event base
 * takes over signals from the parent's (which the child never runs) is expected. */
static void log_libevent(int severity, const char *msg)
{
	char safe[512];
	log_safe(safe, sizeof(safe), msg, strlen(msg));
	if (strstr(msg, "Added a signal to event base"))
		log_msg(LOG_LV_DEBUG, "event=libevent msg=\"%s\"", safe);
	else
		log_msg(severity >= EVENT_LOG_WARN ? LOG_LV_WARN : LOG_LV_DEBUG, "event=libevent msg=\"%s\"", safe);
}

void log_set_role(const char *role)
{
	snprintf(log_role, sizeof(log_role), "%s", role);
}

void log_msg(enum log_level lv, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
	char line[2048];
	va_list ap;

	if (lv == LOG_LV_DEBUG && !log_debug_on)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (log_syslog) {
		syslog(prio[lv], "%s: level=%s %s", log_role, names[lv], line);
		return;
	}
	struct timespec ts;
	struct tm tm;
	char stamp[32];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	/* one write(2) per line so lines from several processes never interleave */
	char out[2200];
	int n = snprintf(out, sizeof(out), "%s.%03ldZ sealmail[%d] %s: level=%s %s\n", stamp,
			 ts.tv_nsec / 1000000, (int)getpid(), log_role, names[lv], line);
	if (n > (int)sizeof(out) - 1) {
		n = (int)sizeof(out) - 1;
		out[n - 1] = '\n';
	}
	ssize_t w = write(STDERR_FILENO, out, (size_t)n);
	(void)w;
}

char *log_safe(char *buf, size_t bufsz, const char *s, size_t len)
{
	size_t o = 0;
	if (bufsz == 0)
		return buf;
	for (size_t i = 0; i < len && s[i] && o + 1 < bufsz; i++) {
		unsigned char c = (unsigned char)s[i];
		buf[o++] = (c < 0x20 || c > 0x7e || c == '"' || c == '\\') ? '?' : (char)c;
	}
	buf[o] = '\0';
	return buf;
}

void fatal(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(LOG_LV_ERR, "event=fatal reason=\"%s\"", line);
	fprintf(stderr, "sealmail: %s\n", line);
	exit(70);
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		fatal("out of memory");
	return p;
}

void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz ? sz : 1);
	if (!p)
		fatal("out of memory");
	return p;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (!p)
		fatal("out of memory");
	return p;
}
