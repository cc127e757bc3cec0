/* AUTH in an SMTP session (RFC 4954): PLAIN, LOGIN, SCRAM-SHA-256 and SCRAM-SHA-256-PLUS
 * with tls-exporter (RFC 9266), only after TLS and only on the submission listeners; the
 * pause before 535; and what an authenticated account may send as (envelope sender and
 * From: header in its domains). Runs in smtp workers; passwords go to the lookup process
 * and are wiped here at once. Untrusted input: every AUTH line and the header section. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>
#include <sodium.h>

#include "auth/sasl.h"
#include "auth/scram.h"
#include "policy/rate.h"
#include "smtp/session_int.h"
#include "smtp/worker.h"
#include "util/log.h"

enum auth_mech { AM_NONE = 0, AM_PLAIN, AM_LOGIN, AM_SCRAM, AM_SCRAM_PLUS };

static const char *mech_name(int m)
{
	static const char *n[] = {"none", "PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"};
	return n[m];
}

/* tls-exporter is defined for TLS 1.3 here (RFC 9266 needs EMS on 1.2; we offer -PLUS on
 * TLS 1.3 only) */
static bool cb_available(struct smtp_session *s)
{
	return s->tls.active && strcmp(s->tls.version, "TLSv1.3") == 0;
}

const char *auth_ehlo_line(struct smtp_session *s)
{
	if (!s->tls.active || (s->kind == CONF_LST_MX && !session_conf(s)->mx_auth))
		return NULL;
	return cb_available(s) ? "AUTH PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS"
			       : "AUTH PLAIN LOGIN SCRAM-SHA-256";
}

static void exchange_free(struct smtp_session *s)
{
	if (s->auth.scram) {
		sodium_memzero(s->auth.scram, sizeof(*s->auth.scram));
		free(s->auth.scram);
		s->auth.scram = NULL;
	}
	if (s->auth.creds) {
		sodium_memzero(s->auth.creds, sizeof(*s->auth.creds));
		free(s->auth.creds);
		s->auth.creds = NULL;
	}
	s->auth.mech = AM_NONE;
	s->auth.step = 0;
}

void auth_reset(struct smtp_session *s)
{
	exchange_free(s);
	free(s->auth.domains);
	s->auth.domains = NULL;
	if (s->auth.delay_ev) {
		event_free(s->auth.delay_ev);
		s->auth.delay_ev = NULL;
	}
	s->auth.done = false;
}

/* Ends the exchange and goes back to commands. */
static void exchange_end(struct smtp_session *s)
{
	exchange_free(s);
	session_resume(s);
}

static void send_challenge(struct smtp_session *s, const char *data, size_t len)
{
	char b64[SASL_MSG_MAX * 2];
	if (sasl_b64_encode((const unsigned char *)data, len, b64, sizeof(b64)) < 0) {
		session_reply(s, "454 4.7.0 Temporary authentication failure");
		exchange_end(s);
		return;
	}
	session_reply(s, "334 %s", b64);
	s->state = SMTP_ST_AUTH;
	bufferevent_enable(s->bev, EV_READ);
}

static void delay_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;
	(void)fd;
	(void)what;
	session_reply(s, "535 5.7.8 Error: authentication failed");
	exchange_end(s);
	if (session_error(s))
		session_process(s);
}

/* RFC 4954 has 535 for a failure; it comes after a random pause that costs the loop nothing,
 * so guessing is slow and timing tells nothing. */
static void fail_later(struct smtp_session *s)
{
	session_pause(s);
	if (!s->auth.delay_ev)
		s->auth.delay_ev = evtimer_new(worker_base_of(s), delay_cb, s);
	uint32_t ms = LIM_AUTH_DELAY_MIN_MS + randombytes_uniform(LIM_AUTH_DELAY_SPAN_MS);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(s->auth.delay_ev, &tv);
}

static void blocked(struct smtp_session *s)
{
	session_reply(s, "421 4.7.0 %s Error: too many failed authentications; try again later",
		      session_conf(s)->hostname);
	exchange_free(s);
	session_close(s, "auth_blocked");
}

/* "account\0plan\0limit\0domains" from the lookup process. */
static void succeed(struct smtp_session *s, const char *info, size_t len)
{
	char buf[2048];
	size_t n = len < sizeof(buf) - 4 ? len : sizeof(buf) - 4;
	memcpy(buf, info, n);
	memset(buf + n, 0, 4);
	const char *account = buf;
	const char *plan = account + strlen(account) + 1;
	const char *limit = plan + strlen(plan) + 1;
	const char *domains = limit + strlen(limit) + 1;
	snprintf(s->auth.account, sizeof(s->auth.account), "%s", account);
	snprintf(s->auth.plan, sizeof(s->auth.plan), "%s", plan);
	s->auth.limit = (uint32_t)strtoul(limit, NULL, 10);
	free(s->auth.domains);
	s->auth.domains = xstrdup(domains);
	s->auth.done = true;
	char safe[SASL_USER_MAX + 1];
	log_safe(safe, sizeof(safe), s->auth.login, strlen(s->auth.login));
	log_info("event=auth_ok session=%s ip=%s listener=%s mech=%s login=%s account=%s plan=%s",
		 s->sid, s->ip, session_listener_name(s->kind), mech_name(s->auth.mech), safe,
		 s->auth.account, s->auth.plan);
	session_reply(s, "235 2.7.0 Authentication successful");
	exchange_end(s);
}

static void ask_password(struct smtp_session *s, const char *user, char *pass)
{
	char payload[64 + SASL_USER_MAX + SASL_PASS_MAX + 4];
	snprintf(s->auth.login, sizeof(s->auth.login), "%s", user);
	int n = snprintf(payload, sizeof(payload), "%s%c%s%c%s", s->ip, 0, user, 0, pass);
	sodium_memzero(pass, strlen(pass));
	bool ok = n > 0 && (size_t)n < sizeof(payload) &&
		  worker_ask_lookup(s->w, s, IPC_AUTH_REQ, payload, (size_t)n);
	sodium_memzero(payload, sizeof(payload));
	if (!ok) {
		session_reply(s, "454 4.7.0 Temporary authentication failure");
		exchange_end(s);
		return;
	}
	s->waiting_lookup = true;
	session_pause(s);
}

static void scram_first(struct smtp_session *s, const char *msg, size_t len)
{
	if (!s->auth.scram)
		s->auth.scram = xcalloc(1, sizeof(*s->auth.scram));
	enum scram_result r = scram_client_first(s->auth.scram, msg, len,
						 s->auth.mech == AM_SCRAM_PLUS, cb_available(s));
	if (r == SCRAM_ERR_SYNTAX) {
		session_reply(s, "501 5.5.2 Error: malformed SCRAM message");
		exchange_end(s);
		session_error(s);
		return;
	}
	if (r != SCRAM_OK) {
		fail_later(s);
		return;
	}
	snprintf(s->auth.login, sizeof(s->auth.login), "%s", s->auth.scram->user);
	char payload[64 + SASL_USER_MAX + 2];
	int n = snprintf(payload, sizeof(payload), "%s%c%s", s->ip, 0, s->auth.login);
	if (n < 0 || (size_t)n >= sizeof(payload) ||
	    !worker_ask_lookup(s->w, s, IPC_SCRAM_REQ, payload, (size_t)n)) {
		session_reply(s, "454 4.7.0 Temporary authentication failure");
		exchange_end(s);
		return;
	}
	s->waiting_lookup = true;
	session_pause(s);
}

static void tell_result(struct smtp_session *s, bool ok)
{
	char payload[64 + SASL_USER_MAX + 4];
	int n = snprintf(payload, sizeof(payload), "%s%c%s%c%c", s->ip, 0, s->auth.login, 0,
			 ok ? '1' : '0');
	if (n > 0 && (size_t)n < sizeof(payload))
		worker_tell_lookup(s->w, IPC_AUTH_RESULT, payload, (size_t)n);
}

static void scram_final(struct smtp_session *s, const char *msg, size_t len)
{
	unsigned char cb[SCRAM_CB_LEN];
	const unsigned char *cbp = NULL;
	if (s->auth.mech == AM_SCRAM_PLUS) {
		SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
		/* RFC 9266 2: label "EXPORTER-Channel-Binding", no context, 32 bytes */
		if (!ssl || SSL_export_keying_material(ssl, cb, sizeof(cb), "EXPORTER-Channel-Binding",
						       24, NULL, 0, 0) != 1) {
			session_reply(s, "454 4.7.0 Temporary authentication failure");
			exchange_end(s);
			return;
		}
		cbp = cb;
	}
	char out[SASL_MSG_MAX / 2];
	enum scram_result r = scram_client_final(s->auth.scram, s->auth.creds, msg, len, cbp,
						 cbp ? sizeof(cb) : 0, out, sizeof(out));
	if (r == SCRAM_ERR_SYNTAX) {
		session_reply(s, "501 5.5.2 Error: malformed SCRAM message");
		exchange_end(s);
		session_error(s);
		return;
	}
	bool ok = r == SCRAM_OK && s->auth.lookup_status == IPC_AUTH_OK;
	tell_result(s, ok);
	if (!ok) {
		fail_later(s);
		return;
	}
	/* RFC 4954 4: no "additional data with success" in SMTP: the server-final message
	 * goes in a 334 and the client answers with an empty line */
	s->auth.step = 2;
	send_challenge(s, out, strlen(out));
}

/* One decoded client response. */
static void auth_step(struct smtp_session *s, unsigned char *msg, size_t len)
{
	char user[SASL_USER_MAX + 1], pass[SASL_PASS_MAX + 1];
	switch (s->auth.mech) {
	case AM_PLAIN:
		if (sasl_plain_parse(msg, len, user, sizeof(user), pass, sizeof(pass)) != 0) {
			session_reply(s, "501 5.5.2 Error: malformed PLAIN message");
			exchange_end(s);
			session_error(s);
			return;
		}
		ask_password(s, user, pass);
		return;
	case AM_LOGIN:
		if (len > SASL_USER_MAX || memchr(msg, '\0', len) ||
		    (s->auth.step == 0 && !sasl_name_valid(msg, len))) {
			session_reply(s, "501 5.5.2 Error: malformed LOGIN response");
			exchange_end(s);
			session_error(s);
			return;
		}
		if (s->auth.step == 0) {
			memcpy(s->auth.login, msg, len);
			s->auth.login[len] = '\0';
			s->auth.step = 1;
			send_challenge(s, "Password:", 9);
			return;
		}
		memcpy(pass, msg, len);
		pass[len] = '\0';
		snprintf(user, sizeof(user), "%s", s->auth.login);
		ask_password(s, user, pass);
		return;
	default:
		if (s->auth.step == 0)
			scram_first(s, (const char *)msg, len);
		else if (s->auth.step == 1)
			scram_final(s, (const char *)msg, len);
		else if (len == 0)
			succeed(s, s->auth.domains ? s->auth.domains : "", s->auth.info_len);
		else {
			session_reply(s, "501 5.5.2 Error: expected an empty response");
			exchange_end(s);
			session_error(s);
		}
		return;
	}
}

void auth_line(struct smtp_session *s, char *line, size_t len)
{
	unsigned char msg[SASL_MSG_MAX];
	size_t n = 0;
	if (sasl_is_cancel(line, len)) {
		/* RFC 4954 4: "*" cancels; 501 */
		session_reply(s, "501 5.0.0 Authentication cancelled");
		exchange_end(s);
		return;
	}
	if (sasl_b64_decode(line, len, msg, sizeof(msg) - 1, &n) != 0) {
		session_reply(s, "501 5.5.2 Error: cannot decode the response (base64)");
		exchange_end(s);
		session_error(s);
		return;
	}
	sodium_memzero(line, len);
	auth_step(s, msg, n);
	sodium_memzero(msg, sizeof(msg));
}

void auth_command(struct smtp_session *s, const char *arg, size_t len)
{
	if (s->kind == CONF_LST_MX && !session_conf(s)->mx_auth) {
		session_reply(s, "502 5.5.1 Error: AUTH is not offered on this port; use port 587 or 465");
		session_error(s);
		return;
	}
	if (s->auth.done) {
		session_reply(s, "503 5.5.1 Error: already authenticated");
		session_error(s);
		return;
	}
	if (s->tx) {
		session_reply(s, "503 5.5.1 Error: AUTH not allowed during a mail transaction");
		session_error(s);
		return;
	}
	if (s->auth.attempts >= LIM_AUTH_PER_SESSION) {
		session_reply(s, "421 4.7.0 %s Error: too many authentication attempts",
			      session_conf(s)->hostname);
		session_close(s, "too_many_auth_attempts");
		return;
	}
	size_t ml = 0;
	while (ml < len && arg[ml] != ' ')
		ml++;
	int mech = AM_NONE;
	for (int m = AM_PLAIN; m <= AM_SCRAM_PLUS; m++)
		if (ml == strlen(mech_name(m)) && strncasecmp(arg, mech_name(m), ml) == 0)
			mech = m;
	if (mech == AM_NONE || (mech == AM_SCRAM_PLUS && !cb_available(s))) {
		session_reply(s, "504 5.5.4 Error: unrecognized authentication type");
		session_error(s);
		return;
	}
	s->auth.attempts++;
	s->auth.mech = mech;
	s->auth.step = 0;
	const char *ir = ml < len ? arg + ml + 1 : NULL;
	if (!ir) {
		if (mech == AM_LOGIN)
			send_challenge(s, "Username:", 9);
		else {
			session_reply(s, "334 ");
			s->state = SMTP_ST_AUTH;
		}
		return;
	}
	/* RFC 4954 4: an initial response of "=" is an empty one */
	size_t irl = len - (size_t)(ir - arg);
	char buf[LIM_CMD_LINE_EXT + 1];
	if (irl == 1 && ir[0] == '=')
		irl = 0;
	memcpy(buf, ir, irl);
	buf[irl] = '\0';
	auth_line(s, buf, irl);
}

void session_auth_reply(struct smtp_session *s, enum ipc_type type, enum ipc_auth_status st,
			const char *payload, size_t len)
{
	s->waiting_lookup = false;
	session_resume(s);
	if (st == IPC_AUTH_BLOCKED) {
		blocked(s);
		return;
	}
	if (st == IPC_AUTH_TEMPFAIL) {
		session_reply(s, "454 4.7.0 Temporary authentication failure");
		exchange_end(s);
		session_process(s);
		return;
	}
	if (type == IPC_AUTH_REP) {
		if (st == IPC_AUTH_OK)
			succeed(s, payload, len);
		else
			fail_later(s);
		session_process(s);
		return;
	}
	/* SCRAM: credentials (real, or made up for an unknown login) and account info */
	if (len < sizeof(struct scram_creds)) {
		session_reply(s, "454 4.7.0 Temporary authentication failure");
		exchange_end(s);
		session_process(s);
		return;
	}
	if (!s->auth.creds)
		s->auth.creds = xmalloc(sizeof(*s->auth.creds));
	memcpy(s->auth.creds, payload, sizeof(*s->auth.creds));
	s->auth.lookup_status = st;
	/* keep the account info for success; it is replaced by succeed() */
	size_t il = len - sizeof(struct scram_creds);
	free(s->auth.domains);
	s->auth.domains = xmalloc(il + 1);
	memcpy(s->auth.domains, payload + sizeof(struct scram_creds), il);
	s->auth.domains[il] = '\0';
	s->auth.info_len = il;
	char out[SASL_MSG_MAX / 2];
	if (scram_server_first(s->auth.scram, s->auth.creds, out, sizeof(out)) != SCRAM_OK) {
		session_reply(s, "454 4.7.0 Temporary authentication failure");
		exchange_end(s);
		session_process(s);
		return;
	}
	s->auth.step = 1;
	send_challenge(s, out, strlen(out));
}

/* ---- what an account may send as ---- */

static bool domain_owned(struct smtp_session *s, const char *dom, size_t n)
{
	const char *p = s->auth.domains ? s->auth.domains : "";
	while (*p) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l == n && strncasecmp(p, dom, n) == 0)
			return true;
		if (!e)
			break;
		p = e + 1;
	}
	return false;
}

const char *auth_check_sender(struct smtp_session *s, const struct smtp_addr *from)
{
	static char msg[LIM_PATH + 200];
	if (!s->auth.done)
		return NULL;
	if (!from->is_null && domain_owned(s, from->domain, strlen(from->domain)))
		return NULL;
	char a[LIM_PATH + 1], safe[LIM_PATH + 1];
	smtp_addr_format(from, a, sizeof(a));
	log_safe(safe, sizeof(safe), a, sizeof(a));
	snprintf(msg, sizeof(msg),
		 "553 5.7.1 <%s>: Sender address rejected: not in the domains of account %s", safe,
		 s->auth.account);
	return msg;
}

/* The header section session.c keeps for this check (keep_headers): a longer one arrives
 * cut at this length. */
#define FROM_CHECK_HEADERS_MAX 16384

/* Checks the domain after the '@' at v[at]; false (the domain in bad) when not owned. */
static bool at_domain_ok(struct smtp_session *s, const char *v, size_t n, size_t at, char *bad,
			 size_t badsz)
{
	size_t j = at + 1;
	while (j < n && !strchr("<>,;: \t\r\n()\"\\", v[j]))
		j++;
	if (domain_owned(s, v + at + 1, j - at - 1))
		return true;
	log_safe(bad, badsz, v + at + 1, j - at - 1);
	if (!bad[0])
		snprintf(bad, badsz, "(empty domain)");
	return false;
}

/* Every address of a From: field value (RFC 5322 3.4: a mailbox-list, with groups, and the
 * obsolete forms) must be in the account's domains. A scanner that knows quoted strings and
 * comments (nested) with their quoted-pairs, angle brackets and the separators of mailboxes
 * and groups. In a mailbox with angle brackets only the '@'s inside them count (a display
 * name may contain '@'); in one without, every '@' outside quotes and comments. An
 * unterminated quoted string or comment is refused: clients would show what it hides. */
static bool from_value_ok(struct smtp_session *s, const char *v, size_t n, char *bad, size_t badsz,
			  bool *malformed)
{
	size_t i = 0;
	*malformed = false;
	while (i < n) {
		/* one mailbox (or a group's display name): up to a ',', ';' or ':' outside quotes,
		 * comments and angle brackets */
		size_t start = i;
		bool quoted = false, in_angle = false, has_angle = false;
		int paren = 0;
		for (; i < n; i++) {
			char c = v[i];
			if (quoted || paren) {
				if (c == '\\')
					i++; /* quoted-pair: the next octet is literal */
				else if (quoted && c == '"')
					quoted = false;
				else if (!quoted && c == '(')
					paren++;
				else if (!quoted && c == ')')
					paren--;
				continue;
			}
			if (c == '"')
				quoted = true;
			else if (c == '(')
				paren = 1;
			else if (c == '<')
				in_angle = has_angle = true;
			else if (c == '>')
				in_angle = false;
			else if (!in_angle && (c == ',' || c == ';' || c == ':'))
				break;
		}
		if (quoted || paren) {
			snprintf(bad, badsz, "%s", quoted ? "quoted string" : "comment");
			*malformed = true;
			return false;
		}
		/* the same mailbox again, now checking its addresses */
		size_t end = i;
		quoted = in_angle = false;
		paren = 0;
		for (size_t k = start; k < end; k++) {
			char c = v[k];
			if (quoted || paren) {
				if (c == '\\')
					k++;
				else if (quoted && c == '"')
					quoted = false;
				else if (!quoted && c == '(')
					paren++;
				else if (!quoted && c == ')')
					paren--;
				continue;
			}
			if (c == '"')
				quoted = true;
			else if (c == '(')
				paren = 1;
			else if (c == '<')
				in_angle = true;
			else if (c == '>')
				in_angle = false;
			else if (c == '@' && (in_angle || !has_angle) &&
				 !at_domain_ok(s, v, end, k, bad, badsz))
				return false;
		}
		i = end + 1;
	}
	return true;
}

/* "From" [WSP] ":" at h (RFC 5322 4.5.3 obs-optional: white space before the colon);
 * returns the offset of the value, or 0. */
static size_t from_field(const char *h, size_t n)
{
	if (n < 5 || strncasecmp(h, "From", 4) != 0)
		return 0;
	size_t k = 4;
	while (k < n && (h[k] == ' ' || h[k] == '\t'))
		k++;
	return k < n && h[k] == ':' ? k + 1 : 0;
}

const char *auth_check_from_header(struct smtp_session *s)
{
	static char msg[512];
	if (!s->auth.done || !s->tx || !s->tx->headers)
		return NULL;
	const char *h = s->tx->headers;
	size_t n = s->tx->headers_len;
	if (n >= FROM_CHECK_HEADERS_MAX) {
		/* a From: field past what we keep would go unchecked */
		snprintf(msg, sizeof(msg),
			 "553 5.7.1 Error: header section longer than %d octets; the From: field cannot be checked",
			 FROM_CHECK_HEADERS_MAX);
		return msg;
	}
	for (size_t i = 0; i < n;) {
		size_t e = i;
		/* the field with its folded continuation lines */
		for (;;) {
			const char *nl = memchr(h + e, '\n', n - e);
			e = nl ? (size_t)(nl - h) + 1 : n;
			if (e >= n || (h[e] != ' ' && h[e] != '\t'))
				break;
		}
		size_t vo = from_field(h + i, e - i);
		if (vo) {
			char bad[LIM_DOMAIN + 1];
			bool malformed;
			if (!from_value_ok(s, h + i + vo, e - i - vo, bad, sizeof(bad), &malformed)) {
				if (malformed)
					snprintf(msg, sizeof(msg),
						 "553 5.7.1 Error: From: header with an unterminated %s",
						 bad);
				else
					snprintf(msg, sizeof(msg),
						 "553 5.7.1 Error: From: header address in %s is not in the domains of account %s",
						 bad, s->auth.account);
				return msg;
			}
		}
		i = e;
	}
	return NULL;
}

void auth_release_counted(struct smtp_session *s)
{
	if (!s->tx || s->tx->counted == 0 || !s->auth.done)
		return;
	char payload[128];
	/* counted_since is when this process heard of the first count, a moment after the
	 * lookup process made it: across a minute boundary the count sits in the minute
	 * before, and a release from counted_since's minute on would miss it (the account
	 * would lose the capacity for an hour, or take another transaction's newer count).
	 * One bucket of margin: the release is still at most `counted`, newest first. */
	int n = snprintf(payload, sizeof(payload), "%s%c%u%c%lld", s->auth.account, 0,
			 s->tx->counted, 0,
			 (long long)s->tx->counted_since - RATE_BUCKET_SECONDS);
	if (n > 0 && (size_t)n < sizeof(payload))
		worker_tell_lookup(s->w, IPC_RATE_RELEASE, payload, (size_t)n);
	s->tx->counted = 0;
}
