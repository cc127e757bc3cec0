/* SMTP command-line, address and MAIL/RCPT/BDAT parameter parsing (RFC 5321 4.1, RFC 1870,
 * RFC 6152, RFC 3030, RFC 6531, RFC 3461, RFC 4954 5). Runs in the smtp process.
 * Untrusted input: every command line a client sends, byte for byte; nothing here trusts a
 * terminating NUL, allocates, or does I/O. Each parser reads only [0, len) and writes only
 * into the caller's fixed-size structs, bounded by src/limits.h. */
#include "smtp/parse.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* ---- character classes ---------------------------------------------------------------- */

static bool parse_is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool parse_is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static unsigned char parse_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* RFC 5322 3.2.3 atext, as used by RFC 5321 4.1.2 Atom. */
static bool parse_is_atext(unsigned char c)
{
	if (parse_is_alpha(c) || parse_is_digit(c))
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* RFC 5321 4.1.2 qtextSMTP = %d32-33 / %d35-91 / %d93-126 */
static bool parse_is_qtext(unsigned char c)
{
	return c >= 32 && c <= 126 && c != '"' && c != '\\';
}

/* RFC 5321 4.1.3 dcontent = %d33-90 / %d94-126 */
static bool parse_is_dcontent(unsigned char c)
{
	return c >= 33 && c <= 126 && c != '[' && c != '\\' && c != ']';
}

/* ASCII-only case-insensitive comparison of p[0,n) against the NUL-terminated `word`. */
static bool parse_word_eq(const char *p, size_t n, const char *word)
{
	size_t wl = strlen(word);

	if (n != wl)
		return false;
	for (size_t i = 0; i < n; i++)
		if (parse_lower((unsigned char)p[i]) != parse_lower((unsigned char)word[i]))
			return false;
	return true;
}

/* Length (2-4) of the well-formed UTF-8 sequence at p (RFC 3629 4: no overlongs, no
 * surrogates, nothing above U+10FFFF), or 0 when the bytes there are not one. */
static size_t parse_utf8_len(const unsigned char *p, size_t avail)
{
	unsigned char c = p[0];
	size_t n;
	unsigned char lo = 0x80, hi = 0xBF;

	if (c >= 0xC2 && c <= 0xDF) {
		n = 2;
	} else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		if (c == 0xE0)
			lo = 0xA0; /* overlong */
		else if (c == 0xED)
			hi = 0x9F; /* surrogates */
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		if (c == 0xF0)
			lo = 0x90; /* overlong */
		else if (c == 0xF4)
			hi = 0x8F; /* above U+10FFFF */
	} else {
		return 0;
	}
	if (avail < n)
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	return n;
}

/* ---- command line ----------------------------------------------------------------------- */

static const struct {
	const char *name;
	enum smtp_verb verb;
} parse_verbs[] = {
    {"HELO", SMTP_V_HELO},         {"EHLO", SMTP_V_EHLO}, {"MAIL", SMTP_V_MAIL},
    {"RCPT", SMTP_V_RCPT},         {"DATA", SMTP_V_DATA}, {"BDAT", SMTP_V_BDAT},
    {"RSET", SMTP_V_RSET},         {"NOOP", SMTP_V_NOOP}, {"QUIT", SMTP_V_QUIT},
    {"VRFY", SMTP_V_VRFY},         {"EXPN", SMTP_V_EXPN}, {"HELP", SMTP_V_HELP},
    {"STARTTLS", SMTP_V_STARTTLS}, {"AUTH", SMTP_V_AUTH},
};

enum smtp_perr smtp_parse_cmd(const char *line, size_t len, struct smtp_cmd *out)
{
	size_t vlen = 0, max;

	if (out == NULL)
		return SMTP_P_SYNTAX;
	out->verb = SMTP_V_UNKNOWN;
	out->arg = "";
	out->arg_len = 0;
	if (line == NULL)
		return SMTP_P_SYNTAX;
	if (memchr(line, '\0', len) != NULL)
		return SMTP_P_NUL;

	/* RFC 5321 4.1.1: the verb is separated from its argument by one SP. */
	while (vlen < len && line[vlen] != ' ')
		vlen++;
	for (size_t i = 0; i < sizeof(parse_verbs) / sizeof(parse_verbs[0]); i++) {
		if (parse_word_eq(line, vlen, parse_verbs[i].name)) {
			out->verb = parse_verbs[i].verb;
			break;
		}
	}
	if (vlen < len) {
		size_t end = len;

		while (end > vlen + 1 && line[end - 1] == ' ')
			end--;
		out->arg = line + vlen + 1;
		out->arg_len = end - (vlen + 1);
	}

	/* RFC 5321 4.5.3.1.4: 512 octets with CRLF; MAIL/RCPT parameters (RFC 1870, RFC 3461)
	 * and AUTH initial responses (RFC 4954 4) may be longer, up to LIM_CMD_LINE_EXT. */
	if (out->verb == SMTP_V_MAIL || out->verb == SMTP_V_RCPT || out->verb == SMTP_V_AUTH)
		max = LIM_CMD_LINE_EXT - 2;
	else
		max = LIM_CMD_LINE - 2;
	if (len > max)
		return SMTP_P_TOO_LONG;
	return SMTP_P_OK;
}

/* ---- domains ---------------------------------------------------------------------------- */

/* RFC 5321 4.1.2 Domain = sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str];
 * RFC 1035 2.3.4 labels of 1-63 octets; RFC 6531 3.3 sub-domain =/ U-label (checked here only
 * for well-formed UTF-8). Sets *utf8 when a non-ASCII byte was seen. */
static bool parse_domain_check(const unsigned char *s, size_t len, bool utf8_ok, bool *utf8)
{
	size_t label = 0;
	bool last_hyphen = false;

	if (len == 0 || len > LIM_DOMAIN)
		return false;
	for (size_t i = 0; i < len;) {
		unsigned char c = s[i];

		if (c == '.') {
			if (label == 0 || last_hyphen)
				return false;
			label = 0;
			i++;
			continue;
		}
		if (c >= 0x80) {
			size_t n = utf8_ok ? parse_utf8_len(s + i, len - i) : 0;

			if (n == 0)
				return false;
			*utf8 = true;
			label += n;
			i += n;
			last_hyphen = false;
		} else if (parse_is_alpha(c) || parse_is_digit(c)) {
			label++;
			i++;
			last_hyphen = false;
		} else if (c == '-') {
			if (label == 0)
				return false;
			label++;
			i++;
			last_hyphen = true;
		} else {
			return false;
		}
		if (label > 63)
			return false;
	}
	return label > 0 && !last_hyphen;
}

bool smtp_domain_valid(const char *s, size_t len, bool utf8_ok)
{
	bool utf8 = false;

	if (s == NULL)
		return false;
	return parse_domain_check((const unsigned char *)s, len, utf8_ok, &utf8);
}

void smtp_ascii_lower(char *s)
{
	if (s == NULL)
		return;
	for (; *s != '\0'; s++)
		*s = (char)parse_lower((unsigned char)*s);
}

/* ---- addresses -------------------------------------------------------------------------- */

struct parse_cur {
	const unsigned char *p;
	size_t len;
	size_t i;
};

/* RFC 5321 4.1.2 Local-part = Dot-string / Quoted-string (RFC 6531 3.3 adds UTF-8 to atext
 * and qtextSMTP). RFC 5321 4.5.3.1.1: at most 64 octets, counted unquoted. The local part is
 * copied as sent, quotes and backslashes included. */
static enum smtp_perr parse_local(struct parse_cur *c, struct smtp_addr *out)
{
	size_t start = c->i, content = 0;

	if (c->i < c->len && c->p[c->i] == '"') {
		c->i++;
		for (;;) {
			unsigned char ch;

			if (c->i >= c->len)
				return SMTP_P_BAD_ADDR;
			ch = c->p[c->i];
			if (ch == '"') {
				c->i++;
				break;
			}
			if (ch == '\\') {
				/* quoted-pairSMTP = %d92 %d32-126 */
				if (c->i + 1 >= c->len || c->p[c->i + 1] < 32 ||
				    c->p[c->i + 1] > 126)
					return SMTP_P_BAD_ADDR;
				c->i += 2;
				content++;
			} else if (parse_is_qtext(ch)) {
				c->i++;
				content++;
			} else if (ch >= 0x80) {
				size_t n = parse_utf8_len(c->p + c->i, c->len - c->i);

				if (n == 0)
					return SMTP_P_BAD_ADDR;
				out->utf8 = true;
				c->i += n;
				content += n;
			} else {
				return SMTP_P_BAD_ADDR;
			}
			if (content > LIM_LOCAL_PART)
				return SMTP_P_TOO_LONG;
		}
	} else {
		bool need_atom = true;

		while (c->i < c->len) {
			unsigned char ch = c->p[c->i];

			if (ch == '.') {
				/* Dot-string = Atom *("." Atom): no empty atoms */
				if (need_atom)
					return SMTP_P_BAD_ADDR;
				need_atom = true;
				c->i++;
			} else if (parse_is_atext(ch)) {
				need_atom = false;
				c->i++;
			} else if (ch >= 0x80) {
				size_t n = parse_utf8_len(c->p + c->i, c->len - c->i);

				if (n == 0)
					return SMTP_P_BAD_ADDR;
				out->utf8 = true;
				need_atom = false;
				c->i += n;
			} else {
				break;
			}
			if (c->i - start > LIM_LOCAL_PART)
				return SMTP_P_TOO_LONG;
		}
		if (need_atom)
			return SMTP_P_BAD_ADDR;
	}
	/* content <= 64 keeps the raw form <= 2 * 64 + 2 octets: it fits out->local. */
	memcpy(out->local, c->p + start, c->i - start);
	out->local[c->i - start] = '\0';
	return SMTP_P_OK;
}

/* RFC 5321 4.1.3 address-literal: [IPv4] or [IPv6:...]; General-address-literal is refused
 * because nothing here could deliver to it. Writes the literal, brackets kept, hex digits
 * lower-cased and the tag spelled "IPv6:". */
static enum smtp_perr parse_literal(struct parse_cur *c, struct smtp_addr *out)
{
	size_t start = c->i, n;
	const unsigned char *in;
	char tmp[INET6_ADDRSTRLEN + 1];
	unsigned char bin[sizeof(struct in6_addr)];
	bool v6;

	c->i++; /* '[' */
	while (c->i < c->len && parse_is_dcontent(c->p[c->i])) {
		c->i++;
		if (c->i - start + 1 > LIM_DOMAIN)
			return SMTP_P_TOO_LONG;
	}
	if (c->i >= c->len || c->p[c->i] != ']')
		return SMTP_P_BAD_ADDR;
	c->i++;
	in = c->p + start + 1;
	n = c->i - start - 2;
	v6 = n >= 5 && parse_word_eq((const char *)in, 5, "IPv6:");
	if (v6) {
		in += 5;
		n -= 5;
	} else if (memchr(in, ':', n) != NULL) {
		return SMTP_P_BAD_ADDR;
	}
	if (n == 0 || n >= sizeof(tmp))
		return SMTP_P_BAD_ADDR;
	memcpy(tmp, in, n);
	tmp[n] = '\0';
	if (inet_pton(v6 ? AF_INET6 : AF_INET, tmp, bin) != 1)
		return SMTP_P_BAD_ADDR;
	smtp_ascii_lower(tmp);
	/* n < sizeof(tmp) <= LIM_DOMAIN - 7, so this cannot truncate. */
	snprintf(out->domain, sizeof(out->domain), "[%s%s]", v6 ? "IPv6:" : "", tmp);
	return SMTP_P_OK;
}

/* A Domain (not a literal) at the cursor: the longest run of LDH, '.' and 8-bit bytes,
 * then validated as a whole. `for_route` refuses UTF-8 (obsolete source routes are dropped
 * and have no business carrying it). */
static enum smtp_perr parse_domain(struct parse_cur *c, struct smtp_addr *out, bool for_route)
{
	size_t start = c->i, n;
	bool utf8 = false;

	while (c->i < c->len) {
		unsigned char ch = c->p[c->i];

		if (!(parse_is_alpha(ch) || parse_is_digit(ch) || ch == '-' || ch == '.' ||
		      ch >= 0x80))
			break;
		c->i++;
	}
	n = c->i - start;
	/* RFC 5321 4.5.3.1.2: a domain is at most 255 octets. */
	if (n > LIM_DOMAIN)
		return SMTP_P_TOO_LONG;
	if (!parse_domain_check(c->p + start, n, !for_route, &utf8))
		return SMTP_P_BAD_ADDR;
	if (out != NULL) {
		memcpy(out->domain, c->p + start, n);
		out->domain[n] = '\0';
		smtp_ascii_lower(out->domain);
		out->utf8 = out->utf8 || utf8;
	}
	return SMTP_P_OK;
}

/* RFC 5321 4.1.2 Mailbox = Local-part "@" ( Domain / address-literal ) */
static enum smtp_perr parse_mailbox(struct parse_cur *c, struct smtp_addr *out)
{
	enum smtp_perr r = parse_local(c, out);

	if (r != SMTP_P_OK)
		return r;
	if (c->i >= c->len || c->p[c->i] != '@')
		return SMTP_P_BAD_ADDR;
	c->i++;
	if (c->i < c->len && c->p[c->i] == '[')
		return parse_literal(c, out);
	return parse_domain(c, out, false);
}

/* RFC 5321 4.1.2 A-d-l = At-domain *( "," At-domain ), ended by ":". Appendix C: a source
 * route is accepted and ignored. The cursor is on the first '@'. */
static enum smtp_perr parse_route(struct parse_cur *c)
{
	for (;;) {
		enum smtp_perr r;

		c->i++; /* '@' */
		r = parse_domain(c, NULL, true);
		if (r == SMTP_P_TOO_LONG || c->i > LIM_PATH)
			return SMTP_P_TOO_LONG;
		if (r != SMTP_P_OK || c->i >= c->len)
			return SMTP_P_BAD_ADDR;
		if (c->p[c->i] == ':') {
			c->i++;
			return SMTP_P_OK;
		}
		if (c->p[c->i] != ',' || c->i + 1 >= c->len || c->p[c->i + 1] != '@')
			return SMTP_P_BAD_ADDR;
		c->i++;
	}
}

/* RFC 5321 4.1.2 Path = "<" [ A-d-l ":" ] Mailbox ">"; 4.1.1.2 reverse-path = Path / "<>".
 * The cursor is on the '<'. */
static enum smtp_perr parse_bracketed(struct parse_cur *c, struct smtp_addr *out)
{
	enum smtp_perr r;

	c->i++; /* '<' */
	if (c->i < c->len && c->p[c->i] == '>') {
		out->is_null = true;
		c->i++;
		return SMTP_P_OK;
	}
	if (c->i < c->len && c->p[c->i] == '@') {
		r = parse_route(c);
		if (r != SMTP_P_OK)
			return r;
	}
	r = parse_mailbox(c, out);
	if (r != SMTP_P_OK)
		return r;
	if (c->i >= c->len || c->p[c->i] != '>')
		return SMTP_P_BAD_ADDR;
	c->i++;
	return SMTP_P_OK;
}

enum smtp_perr smtp_parse_path(const char *s, size_t len, bool need_brackets, bool utf8_ok,
                               struct smtp_addr *out, size_t *used)
{
	struct parse_cur c = {(const unsigned char *)s, len, 0};
	enum smtp_perr r;
	bool bracketed;

	if (used != NULL)
		*used = 0;
	if (out == NULL)
		return SMTP_P_SYNTAX;
	memset(out, 0, sizeof(*out));
	if (s == NULL)
		return SMTP_P_BAD_ADDR;

	bracketed = len > 0 && s[0] == '<';
	if (need_brackets && !bracketed)
		return SMTP_P_BAD_ADDR;
	r = bracketed ? parse_bracketed(&c, out) : parse_mailbox(&c, out);
	if (r != SMTP_P_OK)
		return r;
	/* RFC 5321 4.5.3.1.3: a path is at most 256 octets, punctuation included; a bare
	 * address is measured as if it had its brackets. */
	if (c.i + (bracketed ? 0 : 2) > LIM_PATH)
		return SMTP_P_TOO_LONG;
	if (used == NULL && c.i != len)
		return SMTP_P_BAD_ADDR;
	/* RFC 6531 3.3: non-ASCII mailboxes only in an SMTPUTF8 transaction. */
	if (out->utf8 && !utf8_ok)
		return SMTP_P_UTF8_NEEDS_SMTPUTF8;
	if (used != NULL)
		*used = c.i;
	return SMTP_P_OK;
}

int smtp_addr_format(const struct smtp_addr *a, char *buf, size_t bufsz)
{
	size_t ll, dl, n;

	if (a == NULL || buf == NULL || bufsz == 0)
		return -1;
	ll = strnlen(a->local, sizeof(a->local));
	dl = strnlen(a->domain, sizeof(a->domain));
	if (ll == sizeof(a->local) || dl == sizeof(a->domain)) {
		buf[0] = '\0';
		return -1;
	}
	n = ll + (dl > 0 ? 1 + dl : 0);
	if (n + 1 > bufsz) {
		buf[0] = '\0';
		return -1;
	}
	memcpy(buf, a->local, ll);
	if (dl > 0) {
		buf[ll] = '@';
		memcpy(buf + ll + 1, a->domain, dl);
	}
	buf[n] = '\0';
	return (int)n;
}

/* ---- MAIL / RCPT parameters ------------------------------------------------------------- */

/* RFC 3461 4: xtext = *( xchar / hexchar ); xchar is 0x21-0x7e except '+' and '=';
 * hexchar is '+' and two upper-case hex digits. RFC 3461 4.2/4.4 also require the decoded
 * value to be printable ASCII, so "+0D+0A" (header injection into a DSN) is refused. */
static int parse_hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1; /* RFC 3461 4: upper case only */
}

static bool parse_xtext_valid(const char *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)v[i];

		if (ch == '+') {
			int h1, h2, dec;

			if (i + 2 >= n)
				return false;
			h1 = parse_hexval((unsigned char)v[i + 1]);
			h2 = parse_hexval((unsigned char)v[i + 2]);
			if (h1 < 0 || h2 < 0)
				return false;
			dec = h1 * 16 + h2;
			if (dec < 0x20 || dec > 0x7e)
				return false;
			i += 2;
		} else if (ch < 0x21 || ch > 0x7e || ch == '=') {
			return false;
		}
	}
	return true;
}

/* RFC 1870 size-value = 1*20DIGIT; also RFC 3030 chunk-size, bounded the same way. With
 * saturate, a valid 20-digit value past 2^64-1 becomes UINT64_MAX (SIZE: "too big", 552,
 * not a syntax error); without, it is refused (a BDAT chunk we could never count). */
static bool parse_u64_sat(const char *v, size_t n, uint64_t *out, bool saturate)
{
	uint64_t x = 0;
	bool over = false;

	if (n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned d;

		if (!parse_is_digit((unsigned char)v[i]))
			return false;
		d = (unsigned)(v[i] - '0');
		if (over || x > (UINT64_MAX - d) / 10) {
			if (!saturate)
				return false;
			over = true;
			continue;
		}
		x = x * 10 + d;
	}
	*out = over ? UINT64_MAX : x;
	return true;
}

static bool parse_u64(const char *v, size_t n, uint64_t *out)
{
	return parse_u64_sat(v, n, out, false);
}

struct parse_pctx {
	struct smtp_mail_args *mail;
	struct smtp_rcpt_args *rcpt;
};

typedef bool (*parse_param_fn)(struct parse_pctx *x, const char *v, size_t n, bool has_v);

static bool parse_p_size(struct parse_pctx *x, const char *v, size_t n, bool has_v)
{
	/* RFC 1870 6: SIZE=size-value */
	if (!has_v || !parse_u64_sat(v, n, &x->mail->size, true))
		return false;
	x->mail->has_size = true;
	return true;
}

static bool parse_p_body(struct parse_pctx *x, const char *v, size_t n, bool has_v)
{
	/* RFC 6152 2: BODY=7BIT / 8BITMIME; RFC 3030 3: BODY=BINARYMIME */
	if (!has_v)
		return false;
	if (parse_word_eq(v, n, "7BIT"))
		x->mail->body = SMTP_BODY_7BIT;
	else if (parse_word_eq(v, n, "8BITMIME"))
		x->mail->body = SMTP_BODY_8BITMIME;
	else if (parse_word_eq(v, n, "BINARYMIME"))
		x->mail->body = SMTP_BODY_BINARYMIME;
	else
		return false;
	return true;
}

static bool parse_p_smtputf8(struct parse_pctx *x, const char *v, size_t n, bool has_v)
{
	/* RFC 6531 3.4: SMTPUTF8 takes no value. */
	if (has_v)
		return false;
	x->mail->smtputf8 = true;
	return true;
}

static bool parse_p_ret(struct parse_pctx *x, const char *v, size_t n, bool has_v)
{
	/* RFC 3461 4.3: RET=FULL / HDRS */
	if (!has_v)
		return false;
	if (parse_word_eq(v, n, "FULL"))
		x->mail->ret = SMTP_RET_FULL;
	else if (parse_word_eq(v, n, "HDRS"))
		x->mail->ret = SMTP_RET_HDRS;
	else
		return false;
	return true;
}

static bool parse_p_envid(struct parse_pctx *x, const char *v, size_t n, bool has_v)
{
	/* RFC 3461 4.4: ENVID=xtext, at most 100 characters. */
	if (!has_v || n == 0 || n > LIM_ENVID || !parse_xtext_valid(v, n))
		return false;
	memcpy(x->mail->envid, v, n);
	x->mail->envid[n] = '\0';
	return true;
}

static bool parse_p_auth(struct parse_pctx *x, const char *v, size_t n, bool has_v)
{
	/* RFC 4954 5: AUTH=<> / AUTH=xtext mailbox. A server offering AUTH must accept the
	 * parameter; it may ignore the value, and we do: identity comes from our own AUTH. */
	if (!has_v)
		return false;
	if (n == 2 && v[0] == '<' && v[1] == '>')
		return true;
	return n > 0 && n <= LIM_ORCPT && parse_xtext_valid(v, n);
}

static bool parse_p_notify(struct parse_pctx *x, const char *v, size_t n, bool has_v)
{
	/* RFC 3461 4.1: NOTIFY="NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ) */
	unsigned bits = 0;
	size_t i = 0;

	if (!has_v || n == 0)
		return false;
	while (i <= n) {
		size_t j = i;

		while (j < n && v[j] != ',')
			j++;
		if (parse_word_eq(v + i, j - i, "NEVER"))
			bits |= SMTP_NOTIFY_NEVER;
		else if (parse_word_eq(v + i, j - i, "SUCCESS"))
			bits |= SMTP_NOTIFY_SUCCESS;
		else if (parse_word_eq(v + i, j - i, "FAILURE"))
			bits |= SMTP_NOTIFY_FAILURE;
		else if (parse_word_eq(v + i, j - i, "DELAY"))
			bits |= SMTP_NOTIFY_DELAY;
		else
			return false;
		i = j + 1;
	}
	/* "NEVER" must appear alone. */
	if ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER)
		return false;
	x->rcpt->notify = bits;
	return true;
}

static bool parse_p_orcpt(struct parse_pctx *x, const char *v, size_t n, bool has_v)
{
	/* RFC 3461 4.2: ORCPT=addr-type ";" xtext, addr-type = atom; at most 500 characters. */
	size_t t = 0;

	if (!has_v || n == 0 || n > LIM_ORCPT)
		return false;
	while (t < n && v[t] != ';') {
		if (!parse_is_atext((unsigned char)v[t]))
			return false;
		t++;
	}
	if (t == 0 || t >= n - 1 || !parse_xtext_valid(v + t + 1, n - t - 1))
		return false;
	memcpy(x->rcpt->orcpt, v, n);
	x->rcpt->orcpt[n] = '\0';
	return true;
}

struct parse_param {
	const char *name;
	parse_param_fn fn;
};

static const struct parse_param parse_mail_params[] = {
    {"SIZE", parse_p_size}, {"BODY", parse_p_body},   {"SMTPUTF8", parse_p_smtputf8},
    {"RET", parse_p_ret},   {"ENVID", parse_p_envid}, {"AUTH", parse_p_auth},
    {NULL, NULL},
};

static const struct parse_param parse_rcpt_params[] = {
    {"NOTIFY", parse_p_notify},
    {"ORCPT", parse_p_orcpt},
    {NULL, NULL},
};

/* RFC 5321 4.1.2 Mail-parameters = esmtp-param *(SP esmtp-param);
 * esmtp-param = esmtp-keyword ["=" esmtp-value]; esmtp-keyword = (ALPHA / DIGIT)
 * *(ALPHA / DIGIT / "-"). `s` starts right after the path. Runs of spaces are tolerated. */
static enum smtp_perr parse_params(const char *s, size_t len, const struct parse_param *tab,
                                   struct parse_pctx *x)
{
	unsigned seen = 0;
	size_t i = 0;

	if (len == 0)
		return SMTP_P_OK;
	/* Something glued to the closing '>' is not a parameter. */
	if (s[0] != ' ')
		return SMTP_P_SYNTAX;
	for (;;) {
		size_t start, eq, k;
		bool has_eq = false;

		while (i < len && s[i] == ' ')
			i++;
		if (i >= len)
			return SMTP_P_OK;
		start = i;
		eq = i;
		while (i < len && s[i] != ' ') {
			unsigned char ch = (unsigned char)s[i];

			if (ch >= 0x80)
				return SMTP_P_NON_ASCII;
			if (ch < 0x21 || ch == 0x7f)
				return SMTP_P_SYNTAX;
			if (ch == '=' && !has_eq) {
				has_eq = true;
				eq = i;
			}
			i++;
		}
		if (!has_eq)
			eq = i;
		if (eq == start || !(parse_is_alpha((unsigned char)s[start]) ||
		                     parse_is_digit((unsigned char)s[start])))
			return SMTP_P_SYNTAX;
		for (k = start; k < eq; k++) {
			unsigned char ch = (unsigned char)s[k];

			if (!(parse_is_alpha(ch) || parse_is_digit(ch) || ch == '-'))
				return SMTP_P_SYNTAX;
		}
		for (k = 0; tab[k].name != NULL; k++)
			if (parse_word_eq(s + start, eq - start, tab[k].name))
				break;
		if (tab[k].name == NULL)
			return SMTP_P_UNKNOWN_PARAM;
		/* A parameter given twice is a client bug, not a choice between values. */
		if (seen & (1u << k))
			return SMTP_P_BAD_PARAM;
		seen |= 1u << k;
		{
			bool has_v = has_eq;
			const char *v = has_v ? s + eq + 1 : "";
			size_t vn = has_v ? i - eq - 1 : 0;

			/* esmtp-value = 1*(%d33-60 / %d62-126): no '=' inside */
			if (has_v && (vn == 0 || memchr(v, '=', vn) != NULL))
				return SMTP_P_BAD_PARAM;
			if (!tab[k].fn(x, v, vn, has_v))
				return SMTP_P_BAD_PARAM;
		}
	}
}

/* "FROM:" / "TO:" then optional spaces (tolerated, as most clients' bugs go). Returns the
 * offset of the path, or 0 when the keyword is missing. */
static size_t parse_keyword_colon(const char *arg, size_t len, const char *kw)
{
	size_t n = strlen(kw), i;

	if (len < n || !parse_word_eq(arg, n, kw))
		return 0;
	i = n;
	while (i < len && arg[i] == ' ')
		i++;
	return i;
}

enum smtp_perr smtp_parse_mail(const char *arg, size_t len, struct smtp_mail_args *out)
{
	struct parse_pctx x = {out, NULL};
	enum smtp_perr r;
	size_t i, used;

	if (out == NULL)
		return SMTP_P_SYNTAX;
	memset(out, 0, sizeof(*out));
	if (arg == NULL)
		return SMTP_P_SYNTAX;
	/* RFC 5321 4.1.1.2: "MAIL FROM:" Reverse-path [SP Mail-parameters] */
	i = parse_keyword_colon(arg, len, "FROM:");
	if (i == 0)
		return SMTP_P_SYNTAX;
	/* UTF-8 is allowed while parsing; whether it may stay depends on a later SMTPUTF8. */
	r = smtp_parse_path(arg + i, len - i, true, true, &out->from, &used);
	if (r != SMTP_P_OK)
		return r;
	i += used;
	r = parse_params(arg + i, len - i, parse_mail_params, &x);
	if (r != SMTP_P_OK)
		return r;
	/* RFC 6531 3.4: a non-ASCII reverse-path needs the SMTPUTF8 parameter. */
	if (out->from.utf8 && !out->smtputf8)
		return SMTP_P_UTF8_NEEDS_SMTPUTF8;
	return SMTP_P_OK;
}

enum smtp_perr smtp_parse_rcpt(const char *arg, size_t len, bool smtputf8,
                               struct smtp_rcpt_args *out)
{
	struct parse_pctx x = {NULL, out};
	enum smtp_perr r;
	size_t i, used;
	static const char pm[] = "<Postmaster>";

	if (out == NULL)
		return SMTP_P_SYNTAX;
	memset(out, 0, sizeof(*out));
	if (arg == NULL)
		return SMTP_P_SYNTAX;
	/* RFC 5321 4.1.1.3: "RCPT TO:" ( "<Postmaster@" Domain ">" / "<Postmaster>" /
	 * Forward-path ) [SP Rcpt-parameters] */
	i = parse_keyword_colon(arg, len, "TO:");
	if (i == 0)
		return SMTP_P_SYNTAX;
	if (len - i >= sizeof(pm) - 1 && parse_word_eq(arg + i, sizeof(pm) - 1, pm)) {
		memcpy(out->to.local, "Postmaster", sizeof("Postmaster"));
		used = sizeof(pm) - 1;
	} else {
		r = smtp_parse_path(arg + i, len - i, true, smtputf8, &out->to, &used);
		if (r != SMTP_P_OK)
			return r;
		/* The null path is a reverse-path only. */
		if (out->to.is_null)
			return SMTP_P_BAD_ADDR;
	}
	i += used;
	return parse_params(arg + i, len - i, parse_rcpt_params, &x);
}

/* ---- BDAT ------------------------------------------------------------------------------- */

enum smtp_perr smtp_parse_bdat(const char *arg, size_t len, uint64_t *size, bool *last)
{
	size_t i = 0, end;

	if (size == NULL || last == NULL)
		return SMTP_P_SYNTAX;
	*size = 0;
	*last = false;
	if (arg == NULL)
		return SMTP_P_SYNTAX;
	for (size_t k = 0; k < len; k++)
		if ((unsigned char)arg[k] >= 0x80)
			return SMTP_P_NON_ASCII;
	while (len > 0 && arg[len - 1] == ' ')
		len--;
	/* RFC 3030 2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ]; chunk-size = 1*DIGIT,
	 * which we bound at 20 digits (a uint64_t). */
	while (i < len && parse_is_digit((unsigned char)arg[i]))
		i++;
	if (!parse_u64(arg, i, size))
		return SMTP_P_SYNTAX;
	if (i == len)
		return SMTP_P_OK;
	if (arg[i] != ' ')
		return SMTP_P_SYNTAX;
	while (i < len && arg[i] == ' ')
		i++;
	end = len;
	if (!parse_word_eq(arg + i, end - i, "LAST")) {
		*size = 0;
		return SMTP_P_SYNTAX;
	}
	*last = true;
	return SMTP_P_OK;
}
