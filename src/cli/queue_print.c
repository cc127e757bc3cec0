/* `sealmail queue`: decodes the queue process's reply lines (queue/admin.h) and prints them
 * as the admin's tables (mailq-like list, a message with its history in the log's key=value
 * style) or as JSON. Pure: no sockets, output to a FILE. Runs in the CLI. Input: our queue
 * process's reply, checked in full (kinds, field counts, escapes, numbers, order) before a
 * byte is printed; remote replies inside it are untrusted text (see qcli_term_str). */
#include "cli/queue_cli_int.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

/* Line kinds and their fields after the kind: s text, i integer, d decimal, b 0/1. */
struct kind_spec {
	char kind;
	const char *types;
};

static const struct kind_spec kinds[] = {
    {'M', "siisiisiis"},
    {'R', "siss"},
    {'A', "sisdsssiisssssssssssbid"},
    {'C', "ss"},
};
#define QCLI_MAX_FIELDS 24 /* an A line */

/* Field positions (0 is the kind). */
enum {
	M_QID = 1,
	M_ARRIVAL,
	M_SIZE,
	M_FROM,
	M_NRCPTS,
	M_PENDING,
	M_STATE,
	M_ATTEMPTS,
	M_NEXT,
	M_REASON
};
enum { R_QID = 1, R_INDEX, R_ADDR, R_STATE };
enum {
	A_QID = 1,
	A_RCPT,
	A_ADDR,
	A_TIME,
	A_STATUS,
	A_MX,
	A_IP,
	A_PORT,
	A_CODE,
	A_ENH,
	A_REPLY,
	A_REASON,
	A_STAGE,
	A_POLICY,
	A_SOURCE,
	A_TLSVER,
	A_CIPHER,
	A_CERT,
	A_CERTERR,
	A_DNSSEC,
	A_FALLBACK,
	A_ATTNO,
	A_DELAY
};
enum { C_QID = 1, C_ACTION };

/* JSON names of an A line's fields: those of struct attempt (queue/records.h). */
static const char *const attempt_names[QCLI_MAX_FIELDS] = {
    NULL,     "qid",        "rcpt",       "rcpt_addr",     "time",        "status",
    "mx",     "ip",         "port",       "code",          "enh",         "reply",
    "reason", "stage",      "tls_policy", "policy_source", "tls_version", "tls_cipher",
    "cert",   "cert_error", "dnssec",     "fallback",      "attempt_no",  "delay"};

static const struct kind_spec *spec_of(char k)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (kinds[i].kind == k)
			return &kinds[i];
	return NULL;
}

/* ---- text ---- */

/* Length of the valid UTF-8 sequence at p (2-4 bytes) with its code point in *cp; 0 when p
 * starts none (overlong, surrogate, above U+10FFFF, cut short). p is NUL-terminated. */
static int utf8_seq(const unsigned char *p, unsigned *cp)
{
	int n;
	unsigned c, min;

	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2;
		c = p[0] & 0x1f;
		min = 0x80;
	} else if ((p[0] & 0xf0) == 0xe0) {
		n = 3;
		c = p[0] & 0x0f;
		min = 0x800;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		c = p[0] & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	for (int i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80) /* the NUL ends a cut sequence here */
			return 0;
		c = (c << 6) | (p[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return n;
}

/* Bytes of the next terminal character at p: 1 for a '?' stand-in, else the sequence. */
static int term_char(const unsigned char *p, bool *printable)
{
	unsigned cp;
	int n;

	if (*p < 0x80) {
		*printable = *p >= 0x20 && *p != 0x7f;
		return 1;
	}
	n = utf8_seq(p, &cp);
	*printable = n > 0 && cp >= 0xa0; /* C1 controls (U+0080-U+009F) are escapes too */
	return n > 0 ? n : 1;
}

static size_t term_cols(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t cols = 0;
	bool ok;

	while (*p) {
		p += term_char(p, &ok);
		cols++;
	}
	return cols;
}

size_t qcli_term_str(FILE *out, const char *s, size_t maxcols)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t cols = term_cols(s), limit = cols, done = 0;
	bool ok, cut = cols > maxcols;

	if (cut)
		limit = maxcols >= 3 ? maxcols - 3 : maxcols;
	while (*p && done < limit) {
		int n = term_char(p, &ok);
		if (ok)
			fwrite(p, 1, (size_t)n, out);
		else
			putc('?', out);
		p += n;
		done++;
	}
	if (cut && maxcols >= 3) {
		fputs("...", out);
		done += 3;
	}
	return done;
}

void qcli_json_str(FILE *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	unsigned cp;
	int n;

	putc('"', out);
	while (*p) {
		if (*p == '"' || *p == '\\') {
			putc('\\', out);
			putc(*p++, out);
		} else if (*p == '\n' || *p == '\t' || *p == '\r') {
			putc('\\', out);
			putc(*p == '\n' ? 'n' : *p == '\t' ? 't' : 'r', out);
			p++;
		} else if (*p < 0x20 || *p == 0x7f) {
			fprintf(out, "\\u%04x", *p++);
		} else if (*p < 0x80) {
			putc(*p++, out);
		} else if ((n = utf8_seq(p, &cp)) > 0) {
			fwrite(p, 1, (size_t)n, out);
			p += n;
		} else {
			fprintf(out, "\\u%04x", *p++); /* not UTF-8: the byte as Latin-1 */
		}
	}
	putc('"', out);
}

static void pad(FILE *out, size_t n)
{
	while (n-- > 0)
		putc(' ', out);
}

/* One table cell: s cut to w characters and padded to w (on the left when right). */
static void cell(FILE *out, const char *s, size_t w, bool right)
{
	size_t n = term_cols(s);
	if (n > w)
		n = w;
	if (right)
		pad(out, w - n);
	qcli_term_str(out, s, w);
	if (!right)
		pad(out, w - n);
}

/* ---- numbers and times ---- */

static bool valid_int(const char *s)
{
	const char *p = s + (*s == '-');
	size_t n = strspn(p, "0123456789");
	return n > 0 && n <= 18 && p[n] == '\0'; /* 18 digits: no overflow of long long */
}

static bool valid_dec(const char *s)
{
	char *end;
	if (*s == '\0' || s[strspn(s, "-+.0123456789eE")] != '\0')
		return false;
	double v = strtod(s, &end);
	return *end == '\0' && isfinite(v);
}

static long long num(const char *s)
{
	return strtoll(s, NULL, 10);
}

static double dec(const char *s)
{
	return strtod(s, NULL);
}

/* Seconds since the epoch within what gmtime and long long hold comfortably. */
static bool time_ok(double t)
{
	return t > -1e15 && t < 1e15;
}

/* floor() for a time_ok value, without libm (the build links none). */
static long long secs_floor(double t)
{
	long long s = (long long)t;
	return (double)s > t ? s - 1 : s;
}

/* "2026-11-29 22:10:05" (or with iso "2026-11-29T22:10:05"); the number when unrepresentable. */
static void fmt_time(char *b, size_t sz, long long t, bool iso)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (!time_ok((double)t) || gmtime_r(&tt, &tm) == NULL ||
	    strftime(b, sz, iso ? "%Y-%m-%dT%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(b, sz, "%lld", t);
}

/* "4m", "3h05m": how far off a time is. */
static void fmt_dur(char *b, size_t sz, long long s)
{
	if (s < 60)
		snprintf(b, sz, "%llds", s);
	else if (s < 3600)
		snprintf(b, sz, "%lldm", s / 60);
	else if (s < 86400)
		snprintf(b, sz, "%lldh%02lldm", s / 3600, s % 3600 / 60);
	else
		snprintf(b, sz, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
}

/* "active", "held", "waiting, next try in 4m", "waiting, due now". */
static void fmt_state(char *b, size_t sz, const char *state, long long next_try, time_t now)
{
	char d[32];
	if (strcmp(state, "waiting") != 0) {
		snprintf(b, sz, "%s", state);
	} else if (next_try > (long long)now) {
		fmt_dur(d, sizeof(d), next_try - (long long)now);
		snprintf(b, sz, "waiting, next try in %s", d);
	} else {
		snprintf(b, sz, "waiting, due now");
	}
}

/* "2026-11-29T22:10:05Z"; with zero_null, null for 0 (a next_try of 0 means now). */
static void json_time(FILE *out, long long t, bool zero_null)
{
	char b[40];
	if (t == 0 && zero_null) {
		fputs("null", out);
		return;
	}
	fmt_time(b, sizeof(b), t, true);
	fprintf(out, "\"%sZ\"", b);
}

/* An attempt's time: "2026-11-29T22:10:05.123Z". */
static void json_time_ms(FILE *out, double t)
{
	char b[40];
	if (!time_ok(t)) {
		fprintf(out, "\"%.3f\"", t);
		return;
	}
	long long sec = secs_floor(t);
	long long ms = (long long)((t - (double)sec) * 1000.0 + 0.5);
	if (ms >= 1000) {
		sec++;
		ms -= 1000;
	}
	fmt_time(b, sizeof(b), sec, true);
	fprintf(out, "\"%s.%03lldZ\"", b, ms);
}

/* ---- decoding ---- */

int qcli_unescape(char *s)
{
	char *w = s;
	for (const char *r = s; *r; r++) {
		if (*r != '\\') {
			*w++ = *r;
			continue;
		}
		switch (*++r) {
		case '\\':
			*w++ = '\\';
			break;
		case 't':
			*w++ = '\t';
			break;
		case 'n':
			*w++ = '\n';
			break;
		case 'r':
			*w++ = '\r';
			break;
		default:
			return -1; /* includes the NUL of a trailing backslash */
		}
	}
	*w = '\0';
	return 0;
}

/* The decoded lines: fields NUL-separated, compacted at the start of the reply buffer. */
struct lines {
	char *p, *end;
};

/* line 0: the reply as a whole. */
static int bad_reply(int line, const char *why)
{
	if (line > 0)
		fprintf(stderr, "sealmail queue: bad reply from the queue process: line %d: %s\n",
		        line, why);
	else
		fprintf(stderr, "sealmail queue: bad reply from the queue process: %s\n", why);
	return EX_PROTOCOL;
}

/* Which kind may come next: list gives M lines; show one M, its R lines, then its A lines;
 * the actions C lines. *seen tracks show's progress (0 nothing, 1 M/R, 2 A). */
static const char *order_error(enum qcli_cmd cmd, char k, int *seen)
{
	switch (cmd) {
	case QCLI_LIST:
		return k == 'M' ? NULL : "only M lines expected";
	case QCLI_SHOW:
		if (k == 'M') {
			if (*seen != 0)
				return "a second M line";
			*seen = 1;
		} else if (*seen == 0) {
			return "a line before the M line";
		} else if (k == 'R') {
			if (*seen == 2)
				return "an R line after A lines";
		} else if (k == 'A') {
			*seen = 2;
		} else {
			return "unexpected line kind";
		}
		return NULL;
	default:
		return k == 'C' ? NULL : "only C lines expected";
	}
}

/* Checks every line and decodes it in place into *out. 0, or EX_PROTOCOL (said). */
static int decode(enum qcli_cmd cmd, char *buf, size_t len, struct lines *out)
{
	char *r = buf, *w = buf, *end = buf + len;
	int line = 0, seen = 0;

	if (memchr(buf, '\0', len) != NULL)
		return bad_reply(0, "NUL byte");
	if (len > 0 && buf[len - 1] != '\n')
		return bad_reply(0, "last line not terminated");
	while (r < end) {
		char *f[QCLI_MAX_FIELDS];
		int nf = 0;
		char *eol = memchr(r, '\n', (size_t)(end - r));
		const char *why;

		line++;
		*eol = '\0';
		/* Split at tabs and unescape each field to w; w never passes r (a field only
		 * shrinks and its NUL takes the place of the tab or newline). */
		for (char *p = r;;) {
			char *tab = strchr(p, '\t');
			if (tab != NULL)
				*tab = '\0';
			if (nf == QCLI_MAX_FIELDS)
				return bad_reply(line, "too many fields");
			if (qcli_unescape(p) != 0)
				return bad_reply(line, "bad escape");
			size_t n = strlen(p);
			memmove(w, p, n + 1);
			f[nf++] = w;
			w += n + 1;
			if (tab == NULL)
				break;
			p = tab + 1;
		}
		r = eol + 1;

		const struct kind_spec *k = f[0][1] == '\0' ? spec_of(f[0][0]) : NULL;
		if (k == NULL)
			return bad_reply(line, "unknown line kind");
		if ((size_t)nf != 1 + strlen(k->types))
			return bad_reply(line, "wrong number of fields");
		for (int i = 1; i < nf; i++) {
			char t = k->types[i - 1];
			if ((t == 'i' && !valid_int(f[i])) || (t == 'd' && !valid_dec(f[i])) ||
			    (t == 'b' && strcmp(f[i], "0") != 0 && strcmp(f[i], "1") != 0))
				return bad_reply(line, "bad number");
		}
		if ((why = order_error(cmd, k->kind, &seen)) != NULL)
			return bad_reply(line, why);
	}
	if (cmd == QCLI_SHOW && seen == 0)
		return bad_reply(0, "no M line");
	out->p = buf;
	out->end = w;
	return 0;
}

/* The next decoded line into f; its field count, 0 at the end. */
static int next_line(struct lines *ls, const char **f)
{
	if (ls->p >= ls->end)
		return 0;
	int n = 1 + (int)strlen(spec_of(ls->p[0])->types);
	for (int i = 0; i < n; i++) {
		f[i] = ls->p;
		ls->p += strlen(ls->p) + 1;
	}
	return n;
}

/* ---- list ---- */

static void list_json(FILE *out, struct lines *ls)
{
	const char *f[QCLI_MAX_FIELDS];
	int n = 0;

	fputs("{\"messages\":[", out);
	while (next_line(ls, f) > 0) {
		fputs(n++ ? ",{\"id\":" : "{\"id\":", out);
		qcli_json_str(out, f[M_QID]);
		fputs(",\"arrival\":", out);
		json_time(out, num(f[M_ARRIVAL]), false);
		fprintf(out, ",\"size\":%lld,\"from\":", num(f[M_SIZE]));
		qcli_json_str(out, f[M_FROM]);
		fprintf(out, ",\"recipients\":%lld,\"pending\":%lld,\"state\":", num(f[M_NRCPTS]),
		        num(f[M_PENDING]));
		qcli_json_str(out, f[M_STATE]);
		fprintf(out, ",\"attempts\":%lld,\"next_try\":", num(f[M_ATTEMPTS]));
		json_time(out, num(f[M_NEXT]), true);
		fputs(",\"reason\":", out);
		qcli_json_str(out, f[M_REASON]);
		putc('}', out);
	}
	fputs("]}\n", out);
}

/* The cells of one list row, as text. */
struct list_row {
	char arrival[40], size[24], state[64], pending[48];
	const char *id, *from, *reason;
};

static void list_row(const char **f, time_t now, struct list_row *r)
{
	fmt_time(r->arrival, sizeof(r->arrival), num(f[M_ARRIVAL]), false);
	snprintf(r->size, sizeof(r->size), "%lld", num(f[M_SIZE]));
	fmt_state(r->state, sizeof(r->state), f[M_STATE], num(f[M_NEXT]), now);
	snprintf(r->pending, sizeof(r->pending), "%lld/%lld", num(f[M_PENDING]), num(f[M_NRCPTS]));
	r->id = f[M_QID];
	r->from = f[M_FROM][0] ? f[M_FROM] : "<>";
	r->reason = f[M_REASON];
}

static size_t max_sz(size_t a, size_t b)
{
	return a > b ? a : b;
}

/* Postfix mailq in spirit, one row a message; columns as wide as their widest cell (the
 * sender at most 40), the reason cut to keep the row within width (0: never cut; at least
 * 20 characters of it are shown). */
static void list_text(FILE *out, struct lines *ls, time_t now, size_t width)
{
	const char *f[QCLI_MAX_FIELDS];
	struct list_row r;
	struct lines again = *ls;
	size_t w_id = 2, w_arr = 13, w_size = 4, w_state = 5, w_from = 6, w_pend = 7, w_reason;
	int n = 0;

	while (next_line(ls, f) > 0) {
		list_row(f, now, &r);
		w_id = max_sz(w_id, term_cols(r.id));
		w_arr = max_sz(w_arr, strlen(r.arrival));
		w_size = max_sz(w_size, strlen(r.size));
		w_state = max_sz(w_state, term_cols(r.state));
		w_from = max_sz(w_from, term_cols(r.from));
		w_pend = max_sz(w_pend, strlen(r.pending));
		n++;
	}
	if (n == 0) {
		fputs("Mail queue is empty\n", out);
		return;
	}
	if (w_from > 40)
		w_from = 40;
	size_t used = w_id + w_arr + w_size + w_state + w_from + w_pend + 6 * 2;
	if (width == 0)
		w_reason = SIZE_MAX;
	else
		w_reason = used + 20 < width ? width - used : 20;

	cell(out, "ID", w_id, false);
	fputs("  ", out);
	cell(out, "Arrival (UTC)", w_arr, false);
	fputs("  ", out);
	cell(out, "Size", w_size, true);
	fputs("  ", out);
	cell(out, "State", w_state, false);
	fputs("  ", out);
	cell(out, "Sender", w_from, false);
	fputs("  ", out);
	cell(out, "Pending", w_pend, true);
	fputs("  Reason\n", out);
	while (next_line(&again, f) > 0) {
		list_row(f, now, &r);
		cell(out, r.id, w_id, false);
		fputs("  ", out);
		cell(out, r.arrival, w_arr, false);
		fputs("  ", out);
		cell(out, r.size, w_size, true);
		fputs("  ", out);
		cell(out, r.state, w_state, false);
		fputs("  ", out);
		cell(out, r.from, w_from, false);
		fputs("  ", out);
		cell(out, r.pending, w_pend, true);
		if (r.reason[0]) {
			fputs("  ", out);
			qcli_term_str(out, r.reason, w_reason);
		}
		putc('\n', out);
	}
	fprintf(out, "-- %d message%s in the queue\n", n, n == 1 ? "" : "s");
}

/* ---- show ---- */

static void show_msg_text(FILE *out, const char **f, time_t now)
{
	char t[40], st[64];
	long long next = num(f[M_NEXT]);

	fputs("Message ", out);
	qcli_term_str(out, f[M_QID], SIZE_MAX);
	fmt_time(t, sizeof(t), num(f[M_ARRIVAL]), false);
	fprintf(out, "\n  arrival:     %s UTC\n  from:        <", t);
	qcli_term_str(out, f[M_FROM], SIZE_MAX);
	fprintf(out, ">\n  size:        %lld bytes\n", num(f[M_SIZE]));
	fmt_state(st, sizeof(st), f[M_STATE], next, now);
	fputs("  state:       ", out);
	qcli_term_str(out, st, SIZE_MAX);
	fprintf(out, "\n  attempts:    %lld\n", num(f[M_ATTEMPTS]));
	if (next != 0) {
		fmt_time(t, sizeof(t), next, false);
		fprintf(out, "  next try:    %s UTC\n", t);
	}
	if (f[M_REASON][0]) {
		fputs("  last reason: ", out);
		qcli_term_str(out, f[M_REASON], SIZE_MAX);
		putc('\n', out);
	}
	fprintf(out, "  recipients:  %lld (%lld pending)\n", num(f[M_NRCPTS]), num(f[M_PENDING]));
}

static void show_rcpt_text(FILE *out, const char **f)
{
	fprintf(out, "  %3lld  ", num(f[R_INDEX]));
	cell(out, f[R_STATE], 7, false);
	fputs("  <", out);
	qcli_term_str(out, f[R_ADDR], SIZE_MAX);
	fputs(">\n", out);
}

/* ", key=value" when value is not "". */
static void kv(FILE *out, const char *key, const char *v)
{
	if (v[0] == '\0')
		return;
	fprintf(out, ", %s=", key);
	qcli_term_str(out, v, SIZE_MAX);
}

/* One attempt as the delivery log line says it (CONVENTIONS.md, Logs):
 * "2026-11-29 22:10:06 to=<bob@example.org>, relay=mx1.example.org[198.51.100.7]:25,
 *  delay=1.21, dsn=4.7.1, status=deferred, tls=verify(domain), tls_version=TLSv1.3, ...,
 *  attempt=1 (451 4.7.1 Try later (in reply to RCPT TO))". */
static void show_attempt_text(FILE *out, const char **f)
{
	char t[40];
	double when = dec(f[A_TIME]);

	fmt_time(t, sizeof(t), time_ok(when) ? secs_floor(when) : 0, false);
	fprintf(out, "  %s to=<", t);
	qcli_term_str(out, f[A_ADDR], SIZE_MAX);
	fputs(">, relay=", out);
	if (f[A_MX][0] == '\0' && f[A_IP][0] == '\0')
		fputs("none", out);
	qcli_term_str(out, f[A_MX], SIZE_MAX);
	if (f[A_IP][0]) {
		putc('[', out);
		qcli_term_str(out, f[A_IP], SIZE_MAX);
		fprintf(out, "]:%lld", num(f[A_PORT]));
	}
	fprintf(out, ", delay=%.2f", dec(f[A_DELAY]));
	kv(out, "dsn", f[A_ENH]);
	kv(out, "status", f[A_STATUS]);
	if (f[A_POLICY][0]) {
		kv(out, "tls", f[A_POLICY]);
		if (f[A_SOURCE][0]) {
			putc('(', out);
			qcli_term_str(out, f[A_SOURCE], SIZE_MAX);
			putc(')', out);
		}
	}
	kv(out, "tls_version", f[A_TLSVER]);
	kv(out, "tls_cipher", f[A_CIPHER]);
	if (strcmp(f[A_CERT], "none") != 0)
		kv(out, "cert", f[A_CERT]);
	if (f[A_CERTERR][0]) {
		fputs(", cert_error=\"", out);
		qcli_term_str(out, f[A_CERTERR], SIZE_MAX);
		putc('"', out);
	}
	kv(out, "dnssec", f[A_DNSSEC]);
	if (strcmp(f[A_FALLBACK], "1") == 0)
		fputs(", fallback to plaintext", out);
	fprintf(out, ", attempt=%lld", num(f[A_ATTNO]));
	if (f[A_REPLY][0] || f[A_REASON][0]) {
		fputs(" (", out);
		if (f[A_REPLY][0]) {
			qcli_term_str(out, f[A_REPLY], SIZE_MAX);
			if (f[A_STAGE][0]) {
				fputs(" (in reply to ", out);
				qcli_term_str(out, f[A_STAGE], SIZE_MAX);
				putc(')', out);
			}
			if (f[A_REASON][0])
				fputs("; ", out);
		}
		qcli_term_str(out, f[A_REASON], SIZE_MAX);
		putc(')', out);
	}
	putc('\n', out);
}

static void show_text(FILE *out, struct lines *ls, time_t now)
{
	const char *f[QCLI_MAX_FIELDS];
	int nr = 0, na = 0;

	while (next_line(ls, f) > 0) {
		switch (f[0][0]) {
		case 'M':
			show_msg_text(out, f, now);
			break;
		case 'R':
			if (nr++ == 0)
				fputs("Recipients:\n", out);
			show_rcpt_text(out, f);
			break;
		default: /* 'A' (decode allowed nothing else) */
			if (na++ == 0)
				fputs("History:\n", out);
			show_attempt_text(out, f);
			break;
		}
	}
	if (na == 0)
		fputs("History: no delivery attempts yet\n", out);
}

static void show_json(FILE *out, struct lines *ls)
{
	const char *f[QCLI_MAX_FIELDS];
	int nr = 0, na = 0;

	while (next_line(ls, f) > 0) {
		switch (f[0][0]) {
		case 'M':
			fputs("{\"id\":", out);
			qcli_json_str(out, f[M_QID]);
			fputs(",\"arrival\":", out);
			json_time(out, num(f[M_ARRIVAL]), false);
			fprintf(out, ",\"size\":%lld,\"from\":", num(f[M_SIZE]));
			qcli_json_str(out, f[M_FROM]);
			fprintf(out, ",\"pending\":%lld,\"state\":", num(f[M_PENDING]));
			qcli_json_str(out, f[M_STATE]);
			/* "attempts" is the array below: the count of rounds gets its own name */
			fprintf(out, ",\"rounds\":%lld,\"next_try\":", num(f[M_ATTEMPTS]));
			json_time(out, num(f[M_NEXT]), true);
			fputs(",\"reason\":", out);
			qcli_json_str(out, f[M_REASON]);
			fputs(",\"recipients\":[", out);
			break;
		case 'R':
			fprintf(out, "%s{\"index\":%lld,\"address\":", nr++ ? "," : "",
			        num(f[R_INDEX]));
			qcli_json_str(out, f[R_ADDR]);
			fputs(",\"state\":", out);
			qcli_json_str(out, f[R_STATE]);
			putc('}', out);
			break;
		default: /* 'A' */
			fputs(na++ ? "," : "],\"attempts\":[", out);
			for (int i = 1; i < QCLI_MAX_FIELDS; i++) {
				fprintf(out, "%c\"%s\":", i == 1 ? '{' : ',', attempt_names[i]);
				char t = spec_of('A')->types[i - 1];
				if (i == A_TIME)
					json_time_ms(out, dec(f[i]));
				else if (t == 's')
					qcli_json_str(out, f[i]);
				else if (t == 'i')
					fprintf(out, "%lld", num(f[i]));
				else if (t == 'b')
					fputs(f[i][0] == '1' ? "true" : "false", out);
				else
					fprintf(out, "%.3f", dec(f[i]));
			}
			putc('}', out);
			break;
		}
	}
	fputs(na ? "]}\n" : "],\"attempts\":[]}\n", out);
}

/* ---- retry, hold, release, delete ---- */

static const char *const done_words[] = {
    [QCLI_RETRY] = "queued for retry",
    [QCLI_HOLD] = "held",
    [QCLI_RELEASE] = "released",
    [QCLI_DELETE] = "deleted",
};

static void action_text(FILE *out, enum qcli_cmd cmd, struct lines *ls)
{
	const char *f[QCLI_MAX_FIELDS];
	int n = 0;

	while (next_line(ls, f) > 0) {
		qcli_term_str(out, f[C_QID], SIZE_MAX);
		fputs(": ", out);
		qcli_term_str(out, f[C_ACTION], SIZE_MAX);
		putc('\n', out);
		/* "skipped (...)": the queue did nothing to it */
		n += strncmp(f[C_ACTION], "skipped", 7) != 0;
	}
	fprintf(out, "%d message%s %s\n", n, n == 1 ? "" : "s", done_words[cmd]);
}

static void action_json(FILE *out, struct lines *ls)
{
	const char *f[QCLI_MAX_FIELDS];
	int n = 0;

	fputs("{\"done\":[", out);
	while (next_line(ls, f) > 0) {
		fputs(n++ ? ",{\"id\":" : "{\"id\":", out);
		qcli_json_str(out, f[C_QID]);
		fputs(",\"action\":", out);
		qcli_json_str(out, f[C_ACTION]);
		putc('}', out);
	}
	fputs("]}\n", out);
}

int qcli_print(FILE *out, enum qcli_cmd cmd, bool json, char *buf, size_t len, time_t now,
               size_t width)
{
	struct lines ls;
	int rc = decode(cmd, buf, len, &ls);
	if (rc != 0)
		return rc;
	switch (cmd) {
	case QCLI_LIST:
		if (json)
			list_json(out, &ls);
		else
			list_text(out, &ls, now, width);
		break;
	case QCLI_SHOW:
		if (json)
			show_json(out, &ls);
		else
			show_text(out, &ls, now);
		break;
	default:
		if (json)
			action_json(out, &ls);
		else
			action_text(out, cmd, &ls);
		break;
	}
	return 0;
}
