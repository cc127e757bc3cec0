/* Delivery status notifications: the multipart/report (RFC 6522) with its human part, the
 * message/delivery-status part (RFC 3464) and the original or its header section. Runs in
 * the queue process; no I/O but pread of the original and the caller's write callback.
 * Untrusted input: remote SMTP replies and our own failure reasons (cleaned to one line of
 * printable ASCII before they are quoted) and the original's bytes (copied, never parsed
 * beyond finding the empty line that ends its header section). */
#include "queue/dsn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "limits.h"
#include "smtp/parse.h"
#include "util/log.h"

/* RFC 5322 2.1.1: lines SHOULD be at most 78 octets and MUST be at most 998 (without CRLF). */
#define DSN_LINE_SOFT 78
#define DSN_LINE_HARD 998
/* RFC 2046 5.1.1: a boundary is 1 to 70 characters. */
#define DSN_BOUNDARY_MAX 70

struct out {
	int (*wr)(void *arg, const void *p, size_t n);
	void *arg;
	int err; /* sticky: after the first failed write nothing more is written */
};

static void put(struct out *o, const void *p, size_t n)
{
	if (o->err == 0 && n > 0 && o->wr(o->arg, p, n) != 0)
		o->err = -1;
}

static void puts_(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static const char *nz(const char *s)
{
	return s == NULL ? "" : s;
}

/* ---- text cleaning ---------------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s (RFC 3629 4: no overlongs, no surrogates,
 * nothing above U+10FFFF), 0 if there is none; its code point in *cp. */
static size_t utf8_seq(const unsigned char *s, size_t n, unsigned *cp)
{
	unsigned c = s[0], v;
	size_t len;
	if (c < 0x80) {
		*cp = c;
		return 1;
	} else if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		v = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		v = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		v = c & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && (v < 0x800 || (v >= 0xd800 && v <= 0xdfff))) ||
	    (len == 4 && (v < 0x10000 || v > 0x10ffff)))
		return 0;
	*cp = v;
	return len;
}

/* A new string: s as one line. CR, LF, TAB and other control bytes become spaces, runs of
 * spaces one space, none at either end; bytes of well-formed UTF-8 are kept when utf8 is
 * set, every other byte outside printable ASCII becomes '?'. Cut at LIM_DSN_TEXT octets
 * (with "..."). The caller frees. No CR or LF can survive, so quoted text cannot start a
 * header field or a MIME part of its own. */
static char *clean(const char *s, bool utf8)
{
	const unsigned char *p = (const unsigned char *)nz(s);
	size_t n = strlen((const char *)p);
	/* the result is never longer than the input (a run of blanks gives one space) */
	char *d = xmalloc((n < LIM_DSN_TEXT ? n : LIM_DSN_TEXT) + 4);
	size_t o = 0;
	bool space = false;
	for (size_t i = 0; i < n;) {
		unsigned cp;
		size_t l = 1;
		if (p[i] <= 0x20) {
			space = o > 0;
			i++;
			continue;
		}
		if (p[i] >= 0x80 && utf8)
			l = utf8_seq(p + i, n - i, &cp); /* 0: not UTF-8 */
		size_t w = l > 1 ? l : 1;
		if (o + (space ? 1 : 0) + w > LIM_DSN_TEXT) {
			memcpy(d + o, "...", 3);
			o += 3;
			break;
		}
		if (space)
			d[o++] = ' ';
		space = false;
		if (l > 1)
			memcpy(d + o, p + i, l);
		else
			d[o] = p[i] < 0x7f ? (char)p[i] : '?';
		o += w;
		i += w;
	}
	d[o] = '\0';
	return d;
}

static bool is_ascii(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s >= 0x80)
			return false;
	}
	return true;
}

/* RFC 3464 2.3.1 / RFC 3461 4.2: ORCPT is "addr-type;xtext", all printable ASCII without
 * space. Anything else was not received as such and is left out rather than repaired. */
static bool orcpt_ok(const char *s)
{
	const char *semi = strchr(s, ';');
	if (semi == NULL || semi == s || semi[1] == '\0' || strlen(s) > LIM_ORCPT)
		return false;
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	}
	return true;
}

/* The generic-address of Final-Recipient. RFC 3464 2.3.2 "rfc822;addr" for ASCII; for a
 * non-ASCII address (SMTPUTF8), RFC 6533 3 "utf-8;" with utf-8-addr-xtext: printable ASCII
 * except '+', '=', '\\' as is, everything else as \x{HEX} (the message/delivery-status part
 * stays 7-bit). Bytes that are not UTF-8 become '?'. Returns a new string. */
static char *final_rcpt(const char *addr, bool smtputf8)
{
	const unsigned char *p = (const unsigned char *)nz(addr);
	size_t n = strlen((const char *)p);
	if (n > LIM_PATH * 4)
		n = LIM_PATH * 4;
	bool utf = smtputf8 && !is_ascii(addr == NULL ? "" : addr);
	/* worst case "\x{10FFFF}" (10 octets) per input octet */
	char *d = xmalloc(8 + n * 10 + 1);
	size_t o = (size_t)snprintf(d, 9, "%s", utf ? "utf-8;" : "rfc822;");
	for (size_t i = 0; i < n;) {
		unsigned cp = '?';
		size_t l = p[i] >= 0x80 ? utf8_seq(p + i, n - i, &cp) : 1;
		if (l == 0) {
			cp = '?';
			l = 1;
		} else if (l == 1) {
			cp = p[i];
		}
		if (!utf) {
			/* RFC 3464 2.3.2: generic-address is *text; a quoted space may stay */
			d[o++] = (cp >= 0x20 && cp < 0x7f) ? (char)cp : '?';
		} else if (cp > 0x20 && cp < 0x7f && cp != '+' && cp != '=' && cp != '\\') {
			d[o++] = (char)cp;
		} else {
			o += (size_t)snprintf(d + o, 11, "\\x{%X}", cp);
		}
		i += l;
	}
	d[o] = '\0';
	return d;
}

/* ---- lines and fields ------------------------------------------------------------------- */

/* Writes s[0..n) after `col` octets already on the line, then CRLF, in lines of at most
 * DSN_LINE_SOFT octets where a space allows and never more than DSN_LINE_HARD.
 * header: RFC 5322 2.2.3 folding, CRLF inserted before a space so unfolding restores the
 * value; a run without spaces longer than a line is split by CRLF SP (adds one space).
 * !header: the space at a break is dropped and the next line starts with `indent`. */
static void put_wrapped(struct out *o, size_t col, const char *s, bool header, const char *indent)
{
	size_t n = strlen(s), pos = 0, ilen = header ? 1 : strlen(indent);
	while (pos < n) {
		size_t soft = col < DSN_LINE_SOFT ? DSN_LINE_SOFT - col : 0;
		size_t hard = DSN_LINE_HARD - col;
		if (n - pos <= soft) {
			put(o, s + pos, n - pos);
			break;
		}
		/* the last space that keeps the line within the soft limit, else the first one
		 * within the hard limit; never at pos (a line needs something before the break) */
		size_t b = 0;
		for (size_t i = pos + 1; i <= pos + soft && i < n; i++) {
			if (s[i] == ' ')
				b = i;
		}
		for (size_t i = pos + 1; b == 0 && i <= pos + hard && i < n; i++) {
			if (s[i] == ' ')
				b = i;
		}
		if (b == 0 && n - pos <= hard) {
			put(o, s + pos, n - pos);
			break;
		}
		if (b == 0) {
			put(o, s + pos, hard);
			pos += hard;
		} else {
			put(o, s + pos, b - pos);
			pos = header ? b : b + 1;
		}
		puts_(o, "\r\n");
		if (header) {
			col = 0;
			if (b == 0) {
				puts_(o, " ");
				col = 1;
			}
		} else {
			puts_(o, indent);
			col = ilen;
		}
	}
	puts_(o, "\r\n");
}

/* "Name: value" as a header field (the value is already clean). */
static void field(struct out *o, const char *name, const char *value)
{
	char head[64];
	int h = snprintf(head, sizeof(head), "%s: ", name);
	puts_(o, head);
	put_wrapped(o, (size_t)h, value, true, "");
}

static void fieldf(struct out *o, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fieldf(struct out *o, const char *name, const char *fmt, ...)
{
	char v[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v, sizeof(v), fmt, ap);
	va_end(ap);
	field(o, name, v);
}

/* A paragraph of the human part, wrapped at 78 columns. */
static void para(struct out *o, const char *text)
{
	put_wrapped(o, 0, text, false, "");
}

/* RFC 5322 3.3 date-time in UTC, English names whatever the locale. */
static void fmt_date(char *buf, size_t sz, time_t t)
{
	static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL || tm.tm_year < 0 || tm.tm_year > 9999 - 1900) {
		time_t epoch = 0; /* a nonsense time: say 1970 rather than print garbage */
		gmtime_r(&epoch, &tm);
	}
	snprintf(buf, sz, "%s, %d %s %04d %02d:%02d:%02d +0000", wd[tm.tm_wday % 7], tm.tm_mday,
	         mo[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Copies the characters of s that are safe in a boundary and a msg-id (letters, digits,
 * '.', '-', '_') into d, at most cap - 1 of them. */
static size_t token(char *d, size_t cap, const char *s)
{
	size_t o = 0;
	for (; *s != '\0' && o + 1 < cap; s++) {
		char c = *s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '-' || c == '_')
			d[o++] = c;
	}
	d[o] = '\0';
	return o;
}

static void random_hex(char *d, size_t nbytes)
{
	unsigned char r[16];
	if (nbytes > sizeof(r))
		nbytes = sizeof(r);
	if (getrandom(r, nbytes, GRND_NONBLOCK) != (ssize_t)nbytes) {
		/* no entropy yet (early boot): uniqueness, not secrecy, is what is needed here */
		static unsigned long ctr;
		unsigned long x = (unsigned long)time(NULL) ^ ((unsigned long)getpid() << 16) ^
		                  (++ctr * 0x9e3779b97f4a7c15UL);
		for (size_t i = 0; i < nbytes;
		     i++, x = x * 6364136223846793005UL + 1442695040888963407UL)
			r[i] = (unsigned char)(x >> 56);
	}
	for (size_t i = 0; i < nbytes; i++)
		snprintf(d + 2 * i, 3, "%02x", r[i]);
}

/* ---- the original ----------------------------------------------------------------------- */

static int pread_full(int fd, void *buf, size_t n, uint64_t off)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1; /* an error, or the file is shorter than the queue said */
		got += (size_t)r;
	}
	return 0;
}

struct orig_scan {
	uint64_t hdr_len;  /* octets of the header section incl. its empty line (0: not found) */
	uint64_t last_eol; /* octets up to and including the last LF seen */
	bool eight;        /* a byte >= 0x80 (or NUL) in what was scanned */
};

/* Scans [off, off+len): with find_hdr, up to the end of the header section (the first
 * empty line, CRLF or a bare LF); without, the whole range for 8-bit octets (stopping at
 * the first). Returns 0 or -1 on a read error. */
static int scan(int fd, uint64_t off, uint64_t len, bool find_hdr, unsigned char *buf,
                struct orig_scan *sc)
{
	int st = 1; /* 0 mid-line, 1 at a line start, 2 CR at a line start */
	memset(sc, 0, sizeof(*sc));
	for (uint64_t done = 0; done < len;) {
		size_t n = len - done < LIM_DSN_CHUNK ? (size_t)(len - done) : LIM_DSN_CHUNK;
		if (pread_full(fd, buf, n, off + done) != 0)
			return -1;
		for (size_t i = 0; i < n; i++) {
			unsigned char c = buf[i];
			if (c >= 0x80 || c == 0) {
				sc->eight = true;
				if (!find_hdr)
					return 0;
			}
			if (!find_hdr)
				continue;
			if (c == '\n') {
				sc->last_eol = done + i + 1;
				if (st != 0) {
					sc->hdr_len = done + i + 1;
					return 0;
				}
				st = 1;
			} else {
				st = (st == 1 && c == '\r') ? 2 : 0;
			}
		}
		done += n;
	}
	return 0;
}

static int copy(struct out *o, int fd, uint64_t off, uint64_t len, unsigned char *buf)
{
	for (uint64_t done = 0; done < len && o->err == 0;) {
		size_t n = len - done < LIM_DSN_CHUNK ? (size_t)(len - done) : LIM_DSN_CHUNK;
		if (pread_full(fd, buf, n, off + done) != 0)
			return -1;
		put(o, buf, n);
		done += n;
	}
	return o->err;
}

/* ---- the notice ------------------------------------------------------------------------- */

const char *dsn_subject(const struct dsn_report *r)
{
	enum dsn_action a =
	    (r != NULL && r->rcpts != NULL && r->nrcpts > 0) ? r->rcpts[0].action : DSN_FAILED;
	switch (a) {
	case DSN_DELAYED:
		return "Delayed Mail (still being retried)";
	case DSN_DELIVERED:
	case DSN_RELAYED:
		return "Successful Mail Delivery Report";
	case DSN_FAILED:
		break;
	}
	return "Undelivered Mail Returned to Sender";
}

static const char *action_name(enum dsn_action a)
{
	switch (a) {
	case DSN_DELAYED:
		return "delayed";
	case DSN_DELIVERED:
		return "delivered";
	case DSN_RELAYED:
		return "relayed";
	case DSN_FAILED:
		break;
	}
	return "failed";
}

/* RFC 3464 2.3.4 / RFC 3463 2: class "." subject "." detail, 1-3 digits each; a status that
 * is not one is replaced by the generic one for the action. */
static const char *status_of(const struct dsn_rcpt *rc)
{
	const char *s = nz(rc->status);
	int part = 0, digits = 0;
	bool ok = (s[0] == '2' || s[0] == '4' || s[0] == '5') && s[1] == '.';
	for (const char *p = s; ok && *p != '\0'; p++) {
		if (*p >= '0' && *p <= '9') {
			ok = ++digits <= 3;
		} else if (*p == '.' && digits > 0 && part < 2) {
			part++;
			digits = 0;
		} else {
			ok = false;
		}
	}
	if (ok && part == 2 && digits > 0 && strlen(s) <= 9)
		return s;
	switch (rc->action) {
	case DSN_FAILED:
		return "5.0.0";
	case DSN_DELAYED:
		return "4.0.0";
	default:
		return "2.0.0";
	}
}

/* What the notice says first; it follows the first recipient, like the subject. */
static void human_intro(struct out *o, const struct dsn_report *r, enum dsn_action kind,
                        const char *host, const char *part3)
{
	char line[1200], date[64];
	snprintf(line, sizeof(line), "This is the mail system at host %s.", host);
	para(o, line);
	puts_(o, "\r\n");
	fmt_date(date, sizeof(date), r->arrival);
	switch (kind) {
	case DSN_FAILED:
		snprintf(line, sizeof(line),
		         "Your message could not be delivered to the recipients listed below, and "
		         "no further attempts will be made. %s",
		         part3);
		break;
	case DSN_DELAYED:
		if (r->give_up != 0) {
			char until[64];
			fmt_date(until, sizeof(until), r->give_up);
			snprintf(
			    line, sizeof(line),
			    "Your message has not reached the recipients listed below yet. Nothing "
			    "needs to be done: delivery will be tried again until %s, and you will "
			    "hear again only if it fails for good.",
			    until);
		} else {
			snprintf(
			    line, sizeof(line),
			    "Your message has not reached the recipients listed below yet. Nothing "
			    "needs to be done: delivery will be tried again, and you will hear "
			    "again only if it fails for good.");
		}
		break;
	case DSN_DELIVERED:
	case DSN_RELAYED:
		snprintf(line, sizeof(line),
		         "Your message was delivered to the recipients listed below, as you asked "
		         "to be told. A recipient marked as relayed was handed to a system that "
		         "does not report delivery; you may hear nothing more about it.");
		break;
	}
	para(o, line);
	puts_(o, "\r\n");
	char qid[64];
	token(qid, sizeof(qid), nz(r->qid));
	snprintf(line, sizeof(line), "Your message had queue ID %s here and arrived on %s.",
	         qid[0] != '\0' ? qid : "(unknown)", date);
	para(o, line);
	puts_(o, "\r\n");
	if (kind == DSN_FAILED) {
		para(o, "The postmaster of this system can help; please include this report.");
		puts_(o, "\r\n");
	}
	para(o, "-- sealmail");
}

/* One recipient in the human part, after a blank line: "<addr>: host H said: reply" and/or
 * "<addr>: reason" (for a success "<addr>: delivered via H: reply"). */
static void human_rcpt(struct out *o, const struct dsn_rcpt *rc, bool smtputf8)
{
	char *addr = clean(rc->addr, smtputf8);
	char *diag = clean(rc->diag, false);
	char *reason = clean(rc->reason, false);
	char *mta = clean(rc->remote_mta, false);
	size_t cap = strlen(addr) + strlen(diag) + strlen(reason) + strlen(mta) + 128;
	char *line = xmalloc(cap);
	bool ok = rc->action == DSN_DELIVERED || rc->action == DSN_RELAYED;
	const char *verb = rc->action == DSN_RELAYED ? "relayed" : "delivered";
	if (ok && mta[0] != '\0')
		snprintf(line, cap, "<%s>: %s via %s%s%s", addr, verb, mta, diag[0] ? ": " : "",
		         diag);
	else if (ok)
		snprintf(line, cap, "<%s>: %s%s%s", addr, verb, diag[0] ? ": " : "", diag);
	else if (diag[0] != '\0' && mta[0] != '\0')
		snprintf(line, cap, "<%s>: host %s said: %s", addr, mta, diag);
	else if (diag[0] != '\0')
		snprintf(line, cap, "<%s>: the remote server said: %s", addr, diag);
	else if (reason[0] != '\0')
		snprintf(line, cap, "<%s>: %s", addr, reason);
	else if (rc->action == DSN_FAILED)
		snprintf(line, cap, "<%s>: delivery failed (status %s)", addr, status_of(rc));
	else
		snprintf(line, cap, "<%s>: delivery temporarily deferred (status %s)", addr,
		         status_of(rc));
	puts_(o, "\r\n");
	put_wrapped(o, 0, line, false, "    ");
	if (reason[0] != '\0' && (diag[0] != '\0' || ok)) {
		puts_(o, "    ");
		put_wrapped(o, 4, reason, false, "    ");
	}
	free(line);
	free(addr);
	free(diag);
	free(reason);
	free(mta);
}

/* RFC 3464 2.3: one group of per-recipient fields (the caller writes the blank line). */
static void status_rcpt(struct out *o, const struct dsn_report *r, const struct dsn_rcpt *rc)
{
	char date[64];
	if (rc->orcpt != NULL && orcpt_ok(rc->orcpt))
		field(o, "Original-Recipient", rc->orcpt);
	char *fr = final_rcpt(rc->addr, r->smtputf8);
	field(o, "Final-Recipient", fr);
	free(fr);
	field(o, "Action", action_name(rc->action));
	field(o, "Status", status_of(rc));
	char *mta = clean(rc->remote_mta, false);
	/* RFC 3464 2.3.5: a host name (or address literal), so one word of sane length */
	if (mta[0] != '\0' && strchr(mta, ' ') == NULL && strlen(mta) <= LIM_DOMAIN + 2)
		fieldf(o, "Remote-MTA", "dns; %s", mta);
	free(mta);
	char *diag = clean(rc->diag, false);
	if (diag[0] != '\0') {
		size_t cap = strlen(diag) + 8;
		char *v = xmalloc(cap);
		snprintf(v, cap, "smtp; %s", diag);
		field(o, "Diagnostic-Code", v);
		free(v);
	}
	free(diag);
	if (rc->last_attempt != 0) {
		fmt_date(date, sizeof(date), rc->last_attempt);
		field(o, "Last-Attempt-Date", date);
	}
	if (rc->action == DSN_DELAYED && r->give_up != 0) {
		fmt_date(date, sizeof(date), r->give_up);
		field(o, "Will-Retry-Until", date);
	}
}

/* RFC 3464 2.2.1: Original-Envelope-Id as received (xtext: printable ASCII, no space). */
static bool envid_ok(const char *s)
{
	if (s == NULL || s[0] == '\0' || strlen(s) > LIM_ENVID)
		return false;
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	}
	return true;
}

static void boundary_line(struct out *o, const char *boundary, bool last)
{
	puts_(o, "--");
	puts_(o, boundary);
	puts_(o, last ? "--\r\n" : "\r\n");
}

int dsn_write(const struct dsn_report *r, int fd, uint64_t off, uint64_t len, uint64_t max_full,
              int (*wr)(void *arg, const void *p, size_t n), void *arg)
{
	char host[LIM_DOMAIN + 1], qid[64], rnd[33], mid[33], boundary[DSN_BOUNDARY_MAX + 1];
	char date[64], line[1024];
	struct out o = {.wr = wr, .arg = arg, .err = 0};
	struct orig_scan sc;
	unsigned char *buf = NULL;
	char *v = NULL;
	int rc = -1;

	if (r == NULL || r->rcpts == NULL || r->nrcpts < 1 || wr == NULL)
		return -1;
	enum dsn_action kind = r->rcpts[0].action;
	buf = xmalloc(LIM_DSN_CHUNK);

	/* Which form the original takes (dsn.h): whole for failures unless RET=HDRS or too big;
	 * without RET (NONE) it goes back whole, which RFC 3461 4.3 leaves to us (as Postfix).
	 * The bytes are copied as stored: CRLF lines of at most 1000 octets, unless the original
	 * came with BODY=BINARYMIME, which the caller then has to send as such. The range is
	 * scanned first (for 8-bit octets, to label the parts; for the header end) and copied
	 * after, so a whole original is read twice, in chunks, never held in memory. */
	bool full = kind == DSN_FAILED && r->ret != SMTP_RET_HDRS && len <= max_full;
	uint64_t olen = len;
	if (full) {
		if (scan(fd, off, len, false, buf, &sc) != 0)
			goto out;
	} else {
		uint64_t lim = len < LIM_DSN_HDRS ? len : LIM_DSN_HDRS;
		if (scan(fd, off, lim, true, buf, &sc) != 0)
			goto out;
		if (sc.hdr_len != 0)
			olen = sc.hdr_len;
		else if (len > LIM_DSN_HDRS)
			olen = sc.last_eol != 0 ? sc.last_eol : LIM_DSN_HDRS;
	}
	bool human8 = false;
	for (int i = 0; r->smtputf8 && i < r->nrcpts; i++)
		human8 |= !is_ascii(nz(r->rcpts[i].addr));

	token(host, sizeof(host), nz(r->reporting_mta));
	if (host[0] == '\0')
		snprintf(host, sizeof(host), "localhost");
	token(qid, sizeof(qid), nz(r->qid));
	if (qid[0] == '\0')
		snprintf(qid, sizeof(qid), "dsn");
	random_hex(rnd, 8);
	random_hex(mid, 8);
	/* RFC 2046 5.1.1: the boundary must not occur in the parts. 64 random bits make that as
	 * good as certain without scanning the original for it. */
	snprintf(boundary, sizeof(boundary), "%s.%s/%s", qid, rnd, host);

	/* Top-level header: RFC 5322 3.6, RFC 3834 5 (Auto-Submitted), RFC 6522 3. */
	snprintf(line, sizeof(line), "Mail Delivery System <MAILER-DAEMON@%s>", host);
	field(&o, "From", line);
	v = clean(r->from, r->smtputf8);
	/* the parser never lets these through; here they could only end the angle-addr early */
	for (char *c = v; *c != '\0'; c++) {
		if (*c == '<' || *c == '>')
			*c = '?';
	}
	snprintf(line, sizeof(line), "<%s>", v);
	free(v);
	v = NULL;
	field(&o, "To", line);
	field(&o, "Subject", dsn_subject(r));
	fmt_date(date, sizeof(date), r->now);
	field(&o, "Date", date);
	fieldf(&o, "Message-ID", "<%s.%s@%s>", qid, mid, host);
	field(&o, "Auto-Submitted", "auto-replied");
	field(&o, "MIME-Version", "1.0");
	fieldf(&o, "Content-Type", "multipart/report; report-type=delivery-status; boundary=\"%s\"",
	       boundary);
	/* RFC 2045 6.4: a multipart is labelled with the widest encoding of its parts. */
	if (human8 || sc.eight)
		field(&o, "Content-Transfer-Encoding", "8bit");
	puts_(&o, "\r\n");
	para(&o, "This is a MIME-encapsulated message.");
	puts_(&o, "\r\n");

	/* 1. The human part. */
	boundary_line(&o, boundary, false);
	field(&o, "Content-Description", "Notification");
	field(&o, "Content-Type",
	      human8 ? "text/plain; charset=utf-8" : "text/plain; charset=us-ascii");
	if (human8)
		field(&o, "Content-Transfer-Encoding", "8bit");
	puts_(&o, "\r\n");
	const char *part3 =
	    full ? "It is attached below."
	    : r->ret == SMTP_RET_HDRS
	        ? "Its header section is attached below."
	        : "It was too large to return whole; its header section is attached below.";
	human_intro(&o, r, kind, host, part3);
	for (int i = 0; i < r->nrcpts; i++)
		human_rcpt(&o, &r->rcpts[i], r->smtputf8);

	/* 2. RFC 3464 2.2 per-message fields, then 2.3 one group per recipient. */
	puts_(&o, "\r\n");
	boundary_line(&o, boundary, false);
	field(&o, "Content-Description", "Delivery report");
	field(&o, "Content-Type", "message/delivery-status");
	puts_(&o, "\r\n");
	fieldf(&o, "Reporting-MTA", "dns; %s", host);
	field(&o, "X-Sealmail-Queue-ID", qid);
	if (envid_ok(r->envid))
		field(&o, "Original-Envelope-Id", r->envid);
	if (r->arrival != 0) {
		fmt_date(date, sizeof(date), r->arrival);
		field(&o, "Arrival-Date", date);
	}
	for (int i = 0; i < r->nrcpts; i++) {
		puts_(&o, "\r\n");
		status_rcpt(&o, r, &r->rcpts[i]);
	}

	/* 3. The original or its header section. */
	puts_(&o, "\r\n");
	boundary_line(&o, boundary, false);
	field(&o, "Content-Description",
	      full                  ? "Undelivered Message"
	      : kind == DSN_FAILED  ? "Undelivered Message Headers"
	      : kind == DSN_DELAYED ? "Delayed Message Headers"
	                            : "Message Headers");
	field(&o, "Content-Type", full ? "message/rfc822" : "text/rfc822-headers");
	if (sc.eight)
		field(&o, "Content-Transfer-Encoding", "8bit");
	puts_(&o, "\r\n");
	if (copy(&o, fd, off, olen, buf) != 0)
		goto out;
	puts_(&o, "\r\n");
	boundary_line(&o, boundary, true);
	rc = o.err;
out:
	free(buf);
	return rc;
}
