/* The SMTP client's reply reader and EHLO keyword parser of queue/smtpc_reply.h: lines to
 * complete replies (multiline, enhanced status, sanitised text) and EHLO keywords to
 * capabilities. Pure (no I/O, no allocation); called from smtpc.c in the queue process.
 * Untrusted input: every byte a remote server sends, bounded per line and per reply before
 * anything is kept, and made printable before it is. */
#include "queue/smtpc_reply.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "util/log.h"

void smtpc_reader_init(struct smtpc_reader *rd)
{
	memset(rd, 0, sizeof(*rd));
}

/* RFC 3463 2: class "." subject "." detail, class the reply's first digit; 0 when absent. */
static size_t enh_parse(const char *s, size_t n, int cls, char *out, size_t osz)
{
	size_t i = 0;
	if (n < 5 || s[0] != '0' + cls || s[1] != '.')
		return 0;
	i = 2;
	for (int part = 0; part < 2; part++) {
		size_t d = 0;
		/* RFC 3463 2: subject and detail are 1 to 3 digits */
		while (i < n && s[i] >= '0' && s[i] <= '9' && d < 4) {
			i++;
			d++;
		}
		if (d == 0 || d > 3)
			return 0;
		if (part == 0) {
			if (i >= n || s[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < n && s[i] != ' ')
		return 0;
	if (i + 1 > osz)
		return 0;
	memcpy(out, s, i);
	out[i] = '\0';
	return i;
}

/* Appends bytes to the joined text as printable ASCII, truncating at the buffer's end. */
static void text_add(struct smtpc_reply *r, const char *s, size_t n)
{
	for (size_t i = 0; i < n && r->len + 1 < sizeof(r->text); i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '\t')
			ch = ' ';
		else if (ch < 0x20 || ch > 0x7e)
			ch = '?';
		r->text[r->len++] = (char)ch;
	}
	r->text[r->len] = '\0';
}

static bool word_is(const char *s, size_t n, const char *w)
{
	return strlen(w) == n && strncasecmp(s, w, n) == 0;
}

static void auth_mech(struct smtpc_caps *k, const char *s, size_t n)
{
	if (word_is(s, n, "PLAIN"))
		k->auth_plain = true;
	else if (word_is(s, n, "LOGIN"))
		k->auth_login = true;
}

void smtpc_ehlo_keyword(struct smtpc_caps *k, const char *s, size_t n)
{
	size_t i = 0, w;
	while (i < n && s[i] != ' ' && s[i] != '=')
		i++;
	w = i;
	if (word_is(s, w, "STARTTLS"))
		k->starttls = true;
	else if (word_is(s, w, "PIPELINING"))
		k->pipelining = true;
	else if (word_is(s, w, "8BITMIME"))
		k->eightbitmime = true;
	else if (word_is(s, w, "SMTPUTF8"))
		k->smtputf8 = true;
	else if (word_is(s, w, "DSN"))
		k->dsn = true;
	else if (word_is(s, w, "CHUNKING"))
		k->chunking = true;
	else if (word_is(s, w, "BINARYMIME"))
		k->binarymime = true;
	else if (word_is(s, w, "SIZE")) {
		/* RFC 1870 4: "SIZE" [SP number]; 0 or absent = no fixed limit. 19 digits
		 * always fit 64 bits; a longer number is unreadable, taken as no limit. */
		uint64_t v = 0;
		int digits = 0;
		k->size = true;
		while (i < n && s[i] == ' ')
			i++;
		while (i < n && s[i] >= '0' && s[i] <= '9' && digits < 19) {
			v = v * 10 + (uint64_t)(s[i] - '0');
			i++;
			digits++;
		}
		k->max_size = (i == n || s[i] == ' ') ? v : 0;
	} else if (word_is(s, w, "AUTH")) {
		/* "AUTH PLAIN LOGIN" and the pre-RFC 4954 "AUTH=PLAIN LOGIN" */
		while (i < n) {
			while (i < n && (s[i] == ' ' || s[i] == '='))
				i++;
			size_t b = i;
			while (i < n && s[i] != ' ')
				i++;
			if (i > b)
				auth_mech(k, s + b, i - b);
		}
	}
}

void smtpc_caps_apply(struct smtpc_info *i, const struct smtpc_caps *k, bool esmtp)
{
	i->esmtp = esmtp;
	i->starttls = esmtp && k->starttls;
	i->pipelining = esmtp && k->pipelining;
	i->eightbitmime = esmtp && k->eightbitmime;
	i->smtputf8 = esmtp && k->smtputf8;
	i->dsn = esmtp && k->dsn;
	i->chunking = esmtp && k->chunking;
	i->binarymime = esmtp && k->binarymime;
	i->auth_plain = esmtp && k->auth_plain;
	i->auth_login = esmtp && k->auth_login;
	i->size = esmtp && k->size;
	i->max_size = i->size ? k->max_size : 0;
}

/* One reply line without its line end into r; 1 when it ended the reply, 0 for more, -1
 * when it is malformed. */
static int reply_line(struct smtpc_reply *r, struct smtpc_caps *caps, const char *l, size_t n)
{
	if (n < 3 || l[0] < '1' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' ||
	    l[2] > '9' || (n > 3 && l[3] != ' ' && l[3] != '-'))
		return -1;
	int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
	bool more = n > 3 && l[3] == '-';
	/* RFC 5321 4.2.1: every line of a multiline reply has the same code */
	if (r->nlines > 0 && code != r->code)
		return -1;
	if (++r->nlines > SMTPC_MAX_LINES)
		return -1;
	const char *t = n > 4 ? l + 4 : "";
	size_t tn = n > 4 ? n - 4 : 0;
	if (r->nlines == 1) {
		r->code = code;
		r->len = 0;
		r->enh[0] = '\0';
		/* RFC 3463 / RFC 2034: enhanced codes only on non-1xx replies */
		if (code >= 200)
			enh_parse(t, tn, code / 100, r->enh, sizeof(r->enh));
		text_add(r, l, 3);
	} else if (r->enh[0]) {
		/* continuation lines repeat the enhanced code; the joined text keeps it once */
		size_t el = strlen(r->enh);
		if (tn >= el && memcmp(t, r->enh, el) == 0 && (tn == el || t[el] == ' ')) {
			t += el;
			tn -= el;
			while (tn && *t == ' ') {
				t++;
				tn--;
			}
		}
	}
	if (tn) {
		text_add(r, " ", 1);
		text_add(r, t, tn);
	}
	if (caps != NULL && r->nlines > 1)
		smtpc_ehlo_keyword(caps, n > 4 ? l + 4 : "", n > 4 ? n - 4 : 0);
	return more ? 0 : 1;
}

enum smtpc_rd smtpc_reader_feed(struct smtpc_reader *rd, struct smtpc_caps *caps, const char *buf,
                                size_t n, size_t *used, struct smtpc_reply *out)
{
	size_t pos = 0;
	*used = 0;
	for (;;) {
		if (pos == n)
			return SMTPC_RD_MORE;
		const char *lf = memchr(buf + pos, '\n', n - pos);
		if (lf == NULL) {
			/* the unfinished line is already too long; a CR at the end may be the
			 * first half of the line's CRLF, split across reads */
			if (n - pos > SMTPC_MAX_LINE + (buf[n - 1] == '\r' ? 1u : 0u))
				goto too_long;
			return SMTPC_RD_MORE;
		}
		size_t end = (size_t)(lf - buf), len = end - pos;
		if (len > 0 && buf[end - 1] == '\r')
			len--;
		if (len > SMTPC_MAX_LINE)
			goto too_long;
		const char *line = buf + pos;
		pos = end + 1;
		*used = pos;
		int r = reply_line(&rd->cur, caps, line, len);
		if (r < 0) {
			char safe[120];
			log_safe(safe, sizeof(safe), line, len < 100 ? len : 100);
			memset(out, 0, sizeof(*out));
			snprintf(out->text, sizeof(out->text), "malformed reply: %s", safe);
			out->len = strlen(out->text);
			smtpc_reader_init(rd);
			return SMTPC_RD_ERROR;
		}
		if (r > 0) {
			*out = rd->cur;
			smtpc_reader_init(rd);
			return SMTPC_RD_REPLY;
		}
	}
too_long:
	memset(out, 0, sizeof(*out));
	snprintf(out->text, sizeof(out->text), "reply line longer than %d bytes", SMTPC_MAX_LINE);
	out->len = strlen(out->text);
	smtpc_reader_init(rd);
	return SMTPC_RD_ERROR;
}
