/* One SMTP server session: reads command lines under the caps of limits.h, dispatches them
 * through the command table, runs STARTTLS (discarding anything sent before the handshake,
 * RFC 3207 / CVE-2011-0411), collects the transaction, and streams DATA/BDAT through the
 * body reader into the spool. Runs in smtp workers. Untrusted input: every client byte. */
#include "smtp/session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "limits.h"
#include "msg/spool.h"
#include "smtp/body.h"
#include "smtp/parse.h"
#include "smtp/worker.h"
#include "util/log.h"
#include "smtp/session_int.h"

static void session_read_cb(struct bufferevent *bev, void *arg);
static void session_write_cb(struct bufferevent *bev, void *arg);
static void session_event_cb(struct bufferevent *bev, short what, void *arg);
static void session_free(struct smtp_session *s);

const char *session_listener_name(enum conf_listener_kind kind)
{
	switch (kind) {
	case CONF_LST_MX:
		return "mx";
	case CONF_LST_SUBMISSION:
		return "submission";
	case CONF_LST_SUBMISSIONS:
		return "submissions";
	default:
		return "?";
	}
}

/* ---- replies ---- */

#define reply session_reply
void session_reply(struct smtp_session *s, const char *fmt, ...)
{
	char line[LIM_CMD_LINE];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	line[n++] = '\r';
	line[n++] = '\n';
	bufferevent_write(s->bev, line, (size_t)n);
}

#define C session_conf
const struct conf *session_conf(struct smtp_session *s)
{
	return worker_conf(s->w);
}

static void close_ev_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	session_free(arg);
}

/* Ends the session after the queued replies are written. Never frees at once: callers up the
 * stack may still look at the session (they see SMTP_ST_CLOSING and stop). */
void session_close(struct smtp_session *s, const char *why)
{
	if (s->state == SMTP_ST_CLOSING)
		return;
	log_info("event=disconnect session=%s ip=%s listener=%s reason=%s commands=%u messages=%u errors=%d",
		 s->sid, s->ip, session_listener_name(s->kind), why, s->commands, s->messages,
		 s->errors);
	s->state = SMTP_ST_CLOSING;
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_setcb(s->bev, NULL, session_write_cb, session_event_cb, s);
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
		s->close_ev = evtimer_new(worker_base(s->w), close_ev_cb, s);
		event_active(s->close_ev, EV_TIMEOUT, 0);
		return;
	}
	struct timeval wt = {10, 0};
	bufferevent_set_timeouts(s->bev, NULL, &wt);
}

/* A client error: counts toward the session's error bound (promise 4). Returns false when the
 * session was closed for too many errors. */
bool session_error(struct smtp_session *s)
{
	if (++s->errors > C(s)->max_errors) {
		reply(s, "421 4.7.0 %s Error: too many errors", C(s)->hostname);
		log_warn("event=limit limit=errors session=%s ip=%s count=%d", s->sid, s->ip, s->errors);
		session_close(s, "too_many_errors");
		return false;
	}
	return true;
}

/* ---- transaction ---- */

static void tx_reset(struct smtp_session *s)
{
	if (!s->tx)
		return;
	if (!s->tx->accepted)
		auth_release_counted(s);
	spool_abort(s->tx->msg);
	free(s->tx->headers);
	free(s->tx->rcpts);
	free(s->tx);
	s->tx = NULL;
	if (s->data_timer)
		evtimer_del(s->data_timer);
}

static void session_free(struct smtp_session *s)
{
	if (s->in_commit) {
		/* the group commit owns the message; it frees us when it is done */
		s->dead = true;
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
		if (s->close_ev)
			event_del(s->close_ev);
		return;
	}
	if (s->waiting_lookup)
		worker_lookup_cancel(s->w, s);
	tx_reset(s);
	auth_reset(s);
	if (s->data_timer)
		event_free(s->data_timer);
	if (s->close_ev)
		event_free(s->close_ev);
	/* a TLS bufferevent has BEV_OPT_CLOSE_ON_FREE: it closes fd and frees the SSL */
	if (s->bev)
		bufferevent_free(s->bev);
	if (!s->bev_owns_fd)
		close(s->fd);
	worker_session_closed(s->w, s, s->ip);
	free(s);
}

/* ---- Received header (RFC 5321 4.4, RFC 3848) ---- */

static void helo_sanitise(char *dst, size_t dsz, const char *src, size_t len)
{
	size_t o = 0;
	for (size_t i = 0; i < len && o + 1 < dsz; i++) {
		unsigned char ch = (unsigned char)src[i];
		if (ch <= 0x20 || ch >= 0x7f || ch == '(' || ch == ')' || ch == '\\' || ch == ';' ||
		    ch == '"' || ch == '<' || ch == '>')
			ch = '_';
		dst[o++] = (char)ch;
	}
	dst[o] = '\0';
}

static int received_header(struct smtp_session *s, char *buf, size_t sz)
{
	/* RFC 3848 (ESMTPS/ESMTPA/ESMTPSA) and RFC 6531 3.7.3 (UTF8SMTP...) protocol names;
	 * plain HELO has only "SMTP" registered */
	static const char *const names[2][2][2] = {
		{{"ESMTP", "ESMTPA"}, {"ESMTPS", "ESMTPSA"}},
		{{"UTF8SMTP", "UTF8SMTPA"}, {"UTF8SMTPS", "UTF8SMTPSA"}},
	};
	bool auth = s->auth.done;
	const char *with = s->ehlo ? names[s->tx->mail.smtputf8][s->tls.active][auth] : "SMTP";
	char date[64];
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	char tlsline[160] = "";
	if (s->tls.active)
		snprintf(tlsline, sizeof(tlsline),
			 "\r\n\t(using %s with cipher %s (%d/%d bits))", s->tls.version, s->tls.cipher,
			 s->tls.bits, s->tls.bits);
	char forline[LIM_PATH + 16] = "";
	if (s->tx->nrcpts == 1)
		snprintf(forline, sizeof(forline), "\r\n\tfor <%s>", s->tx->rcpts[0].addr);
	return snprintf(buf, sz,
			"Received: from %s (unknown [%s%s])%s\r\n\tby %s (sealmail) with %s id %s%s;\r\n\t%s\r\n",
			s->helo[0] ? s->helo : "unknown", strchr(s->ip, ':') ? "IPv6:" : "", s->ip,
			tlsline, C(s)->hostname, with,
			s->tx->qid, forline, date);
}

/* ---- body ---- */

/* Keeps the header section (up to 16 KiB) for the From: check of authenticated senders. */
static void keep_headers(struct smtp_tx *tx, const char *p, size_t n)
{
	const size_t cap = 16384;
	if (tx->headers_done)
		return;
	if (!tx->headers)
		tx->headers = xmalloc(cap + 1);
	size_t take = n < cap - tx->headers_len ? n : cap - tx->headers_len;
	memcpy(tx->headers + tx->headers_len, p, take);
	tx->headers_len += take;
	tx->headers[tx->headers_len] = '\0';
	char *end = strstr(tx->headers, "\r\n\r\n");
	if (end) {
		tx->headers_len = (size_t)(end - tx->headers) + 2;
		tx->headers[tx->headers_len] = '\0';
		tx->headers_done = true;
	} else if (tx->headers_len == cap) {
		tx->headers_done = true; /* longer than we look at: the check sees the first 16 KiB */
	}
}

static void body_emit(void *arg, const char *p, size_t n)
{
	struct smtp_session *s = arg;
	if (s->auth.done)
		keep_headers(s->tx, p, n);
	if (s->tx->write_failed)
		return;
	if (spool_write(s->tx->msg, p, n) != 0)
		s->tx->write_failed = true;
}

static void data_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;
	(void)fd;
	(void)what;
	if (s->state != SMTP_ST_DATA && s->state != SMTP_ST_BDAT && s->state != SMTP_ST_CMD)
		return;
	reply(s, "421 4.4.2 %s Error: timeout exceeded for message data", C(s)->hostname);
	log_warn("event=limit limit=data_timeout session=%s ip=%s", s->sid, s->ip);
	session_close(s, "data_timeout");
}

/* Opens the spool file and writes our Received header; false (with a reply) on failure. */
static bool message_begin(struct smtp_session *s, bool bdat)
{
	struct smtp_tx *tx = s->tx;
	struct spool_env env;
	memset(&env, 0, sizeof(env));
	spool_new_qid(tx->qid);
	snprintf(env.qid, sizeof(env.qid), "%s", tx->qid);
	env.arrival = time(NULL);
	smtp_addr_format(&tx->mail.from, env.from, sizeof(env.from));
	snprintf(env.helo, sizeof(env.helo), "%s", s->helo);
	snprintf(env.client_ip, sizeof(env.client_ip), "%s", s->ip);
	snprintf(env.listener, sizeof(env.listener), "%s", session_listener_name(s->kind));
	if (s->tls.active)
		snprintf(env.tls, sizeof(env.tls), "%s %s", s->tls.version, s->tls.cipher);
	env.body_type = tx->mail.body;
	env.smtputf8 = tx->mail.smtputf8;
	env.ret = tx->mail.ret;
	snprintf(env.envid, sizeof(env.envid), "%s", tx->mail.envid);
	env.rcpts = tx->rcpts;
	env.nrcpts = tx->nrcpts;
	tx->msg = spool_begin(worker_spool(s->w), &env);
	if (!tx->msg) {
		log_err("event=spool_error session=%s qid=%s op=begin error=\"%s\"", s->sid, tx->qid,
			strerror(errno));
		reply(s, "451 4.3.0 Error: local error in processing (spool)");
		return false;
	}
	char hdr[1024];
	int n = received_header(s, hdr, sizeof(hdr));
	if (n < 0 || (size_t)n >= sizeof(hdr) || spool_write(tx->msg, hdr, (size_t)n) != 0) {
		reply(s, "451 4.3.0 Error: local error in processing (spool)");
		spool_abort(tx->msg);
		tx->msg = NULL;
		return false;
	}
	body_init(&tx->body, bdat, tx->mail.body == SMTP_BODY_BINARYMIME, C(s)->max_message_size,
		  body_emit, s);
	tx->write_failed = false;
	if (!s->data_timer)
		s->data_timer = evtimer_new(worker_base(s->w), data_timeout_cb, s);
	struct timeval dt = {C(s)->data_timeout, 0};
	evtimer_add(s->data_timer, &dt);
	return true;
}

/* The body is complete: reject it, or hand it to the group commit. */
static void message_end(struct smtp_session *s)
{
	struct smtp_tx *tx = s->tx;
	enum body_err e = tx->bdat ? body_finish(&tx->body) : body_error(&tx->body);
	evtimer_del(s->data_timer);
	if (e != BODY_OK) {
		switch (e) {
		case BODY_ERR_SIZE:
			reply(s, "552 5.3.4 Error: message size exceeds fixed limit of %llu bytes",
			      (unsigned long long)C(s)->max_message_size);
			log_warn("event=limit limit=message_size session=%s ip=%s qid=%s max=%llu",
				 s->sid, s->ip, tx->qid, (unsigned long long)C(s)->max_message_size);
			break;
		case BODY_ERR_LINE_LONG:
			reply(s, "500 5.5.6 Error: message line longer than %d octets (RFC 5321 4.5.3.1.6)",
			      LIM_TEXT_LINE);
			log_warn("event=limit limit=text_line session=%s ip=%s qid=%s max=%d", s->sid,
				 s->ip, tx->qid, LIM_TEXT_LINE);
			break;
		case BODY_ERR_NUL:
			reply(s, "550 5.6.0 Error: NUL octet in message; use BODY=BINARYMIME with BDAT");
			break;
		default:
			reply(s, "550 5.6.11 Error: %s; lines must end with CRLF (RFC 5321 2.3.8)",
			      body_err_str(e));
			break;
		}
		log_warn("event=reject session=%s ip=%s qid=%s stage=data reason=\"%s\"", s->sid, s->ip,
			 tx->qid, body_err_str(e));
		tx_reset(s);
		s->state = SMTP_ST_CMD;
		session_error(s);
		return;
	}
	const char *bad_from = auth_check_from_header(s);
	if (bad_from) {
		reply(s, "%s", bad_from);
		log_warn("event=reject session=%s ip=%s qid=%s stage=data reason=\"From: header not owned\" account=%s",
			 s->sid, s->ip, tx->qid, s->auth.account);
		tx_reset(s);
		s->state = SMTP_ST_CMD;
		session_error(s);
		return;
	}
	if ((int)tx->body.received > C(s)->max_received) {
		reply(s, "554 5.4.6 Error: too many Received headers (%u): mail loop?",
		      tx->body.received);
		log_warn("event=reject session=%s ip=%s qid=%s stage=data reason=\"mail loop\" received=%u",
			 s->sid, s->ip, tx->qid, tx->body.received);
		tx_reset(s);
		s->state = SMTP_ST_CMD;
		return;
	}
	if (tx->write_failed || spool_finish(tx->msg) != 0) {
		log_err("event=spool_error session=%s qid=%s op=write error=\"%s\"", s->sid, tx->qid,
			strerror(errno));
		reply(s, "451 4.3.0 Error: local error in processing (spool)");
		tx_reset(s);
		s->state = SMTP_ST_CMD;
		return;
	}
	struct spool_msg *m = tx->msg;
	tx->msg = NULL;
	s->state = SMTP_ST_WAIT;
	s->in_commit = true;
	bufferevent_disable(s->bev, EV_READ);
	worker_commit_add(s->w, s, m, tx->qid);
}

void session_commit_done(struct smtp_session *s, bool ok)
{
	s->in_commit = false;
	if (s->dead) {
		session_free(s);
		return;
	}
	struct smtp_tx *tx = s->tx;
	if (ok) {
		s->messages++;
		char from[LIM_PATH + 1], safe[LIM_PATH + 1];
		smtp_addr_format(&tx->mail.from, from, sizeof(from));
		log_safe(safe, sizeof(safe), from, sizeof(from));
		log_info("event=accepted session=%s qid=%s ip=%s listener=%s from=<%s> nrcpt=%d size=%llu tls=%s%s%s",
			 s->sid, tx->qid, s->ip, session_listener_name(s->kind), safe,
			 tx->nrcpts, (unsigned long long)tx->body.size, s->tls.active ? s->tls.version : "none",
			 s->tls.active ? " cipher=" : "", s->tls.active ? s->tls.cipher : "");
		reply(s, "250 2.0.0 Ok: queued as %s", tx->qid);
		tx->accepted = true;
	} else {
		reply(s, "451 4.3.0 Error: local error in processing (spool commit)");
	}
	tx_reset(s);
	s->state = SMTP_ST_CMD;
	bufferevent_enable(s->bev, EV_READ);
	session_process(s);
}

/* ---- commands ---- */

#define CF_BEFORE_HELO 0x01 /* allowed before HELO/EHLO */
#define CF_EHLO_ONLY 0x02   /* an ESMTP extension: needs EHLO */

struct smtp_command {
	enum smtp_verb verb;
	unsigned flags;
	void (*action)(struct smtp_session *s, const struct smtp_cmd *c);
};

static void do_helo(struct smtp_session *s, const struct smtp_cmd *c);
static void do_mail(struct smtp_session *s, const struct smtp_cmd *c);
static void do_rcpt(struct smtp_session *s, const struct smtp_cmd *c);
static void do_data(struct smtp_session *s, const struct smtp_cmd *c);
static void do_bdat(struct smtp_session *s, const struct smtp_cmd *c);
static void do_rset(struct smtp_session *s, const struct smtp_cmd *c);
static void do_noop(struct smtp_session *s, const struct smtp_cmd *c);
static void do_quit(struct smtp_session *s, const struct smtp_cmd *c);
static void do_vrfy(struct smtp_session *s, const struct smtp_cmd *c);
static void do_expn(struct smtp_session *s, const struct smtp_cmd *c);
static void do_help(struct smtp_session *s, const struct smtp_cmd *c);
static void do_starttls(struct smtp_session *s, const struct smtp_cmd *c);
static void do_auth(struct smtp_session *s, const struct smtp_cmd *c);

static const struct smtp_command commands[] = {
	{SMTP_V_HELO, CF_BEFORE_HELO, do_helo},
	{SMTP_V_EHLO, CF_BEFORE_HELO, do_helo},
	{SMTP_V_MAIL, 0, do_mail},
	{SMTP_V_RCPT, 0, do_rcpt},
	{SMTP_V_DATA, 0, do_data},
	{SMTP_V_BDAT, CF_EHLO_ONLY, do_bdat},
	{SMTP_V_RSET, CF_BEFORE_HELO, do_rset},
	{SMTP_V_NOOP, CF_BEFORE_HELO, do_noop},
	{SMTP_V_QUIT, CF_BEFORE_HELO, do_quit},
	{SMTP_V_VRFY, CF_BEFORE_HELO, do_vrfy},
	{SMTP_V_EXPN, CF_BEFORE_HELO, do_expn},
	{SMTP_V_HELP, CF_BEFORE_HELO, do_help},
	{SMTP_V_STARTTLS, CF_EHLO_ONLY, do_starttls},
	{SMTP_V_AUTH, CF_EHLO_ONLY, do_auth},
};

static bool starttls_offered(struct smtp_session *s)
{
	return !s->tls.active && s->kind != CONF_LST_SUBMISSIONS;
}

static void do_helo(struct smtp_session *s, const struct smtp_cmd *c)
{
	bool ehlo = c->verb == SMTP_V_EHLO;
	if (c->arg_len == 0) {
		reply(s, "501 5.5.4 Syntax: %s hostname", ehlo ? "EHLO" : "HELO");
		session_error(s);
		return;
	}
	/* RFC 5321 4.1.4: EHLO/HELO resets the transaction */
	tx_reset(s);
	helo_sanitise(s->helo, sizeof(s->helo), c->arg, c->arg_len);
	s->ehlo = ehlo;
	s->greeted = true;
	if (!ehlo) {
		reply(s, "250 %s", C(s)->hostname);
		return;
	}
	struct evbuffer *out = bufferevent_get_output(s->bev);
	evbuffer_add_printf(out, "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n", C(s)->hostname,
			    (unsigned long long)C(s)->max_message_size);
	if (starttls_offered(s))
		evbuffer_add_printf(out, "250-STARTTLS\r\n");
	const char *auth = auth_ehlo_line(s);
	if (auth)
		evbuffer_add_printf(out, "250-%s\r\n", auth);
	evbuffer_add_printf(out, "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n"
				 "250-SMTPUTF8\r\n250 CHUNKING\r\n");
}

static void reply_perr(struct smtp_session *s, enum smtp_perr e, bool sender)
{
	switch (e) {
	case SMTP_P_BAD_ADDR:
		reply(s, "501 %s Error: bad %s address syntax", sender ? "5.1.7" : "5.1.3",
		      sender ? "sender" : "recipient");
		break;
	case SMTP_P_TOO_LONG:
		reply(s, "501 5.5.4 Error: address too long (RFC 5321 4.5.3.1)");
		break;
	case SMTP_P_UNKNOWN_PARAM:
		reply(s, "555 5.5.4 Error: unsupported parameter");
		break;
	case SMTP_P_BAD_PARAM:
		reply(s, "501 5.5.4 Error: bad parameter value");
		break;
	case SMTP_P_UTF8_NEEDS_SMTPUTF8:
		reply(s, "553 5.6.7 Error: non-ASCII address requires SMTPUTF8");
		break;
	default:
		reply(s, "501 5.5.2 Syntax: %s", sender ? "MAIL FROM:<address>" : "RCPT TO:<address>");
		break;
	}
}

static void do_mail(struct smtp_session *s, const struct smtp_cmd *c)
{
	if (s->kind == CONF_LST_SUBMISSION && !s->tls.active) {
		reply(s, "530 5.7.0 Must issue a STARTTLS command first");
		session_error(s);
		return;
	}
	/* RFC 6409 4.3: submission needs an authenticated client */
	if (s->kind != CONF_LST_MX && !s->auth.done) {
		reply(s, "530 5.7.0 Authentication required");
		session_error(s);
		return;
	}
	if (s->tx) {
		reply(s, "503 5.5.1 Error: nested MAIL command");
		session_error(s);
		return;
	}
	if (s->messages >= LIM_MSGS_PER_SESSION) {
		reply(s, "421 4.7.0 %s Error: too many messages in one session", C(s)->hostname);
		session_close(s, "too_many_messages");
		return;
	}
	struct smtp_mail_args args;
	enum smtp_perr e = smtp_parse_mail(c->arg, c->arg_len, &args);
	if (e != SMTP_P_OK) {
		reply_perr(s, e, true);
		session_error(s);
		return;
	}
	if (!s->ehlo && (args.has_size || args.body != SMTP_BODY_NONE || args.smtputf8 ||
			 args.ret != SMTP_RET_NONE || args.envid[0])) {
		reply(s, "555 5.5.4 Error: parameters need EHLO");
		session_error(s);
		return;
	}
	if (args.body == SMTP_BODY_BINARYMIME) {
		reply(s, "504 5.5.4 Error: BODY=BINARYMIME is not supported");
		session_error(s);
		return;
	}
	if (args.has_size && args.size > C(s)->max_message_size) {
		reply(s, "552 5.3.4 Error: message size %llu exceeds fixed limit of %llu bytes",
		      (unsigned long long)args.size, (unsigned long long)C(s)->max_message_size);
		log_warn("event=limit limit=message_size session=%s ip=%s declared=%llu max=%llu",
			 s->sid, s->ip, (unsigned long long)args.size,
			 (unsigned long long)C(s)->max_message_size);
		session_error(s);
		return;
	}
	const char *bad = auth_check_sender(s, &args.from);
	if (bad) {
		char from[LIM_PATH + 1], safe[LIM_PATH + 1];
		smtp_addr_format(&args.from, from, sizeof(from));
		log_safe(safe, sizeof(safe), from, sizeof(from));
		reply(s, "%s", bad);
		log_warn("event=reject session=%s ip=%s stage=mail from=<%s> account=%s reason=sender_not_owned",
			 s->sid, s->ip, safe, s->auth.account);
		session_error(s);
		return;
	}
	s->tx = xcalloc(1, sizeof(*s->tx));
	s->tx->mail = args;
	reply(s, "250 2.1.0 Ok");
}

static void do_rcpt(struct smtp_session *s, const struct smtp_cmd *c)
{
	if (!s->tx) {
		reply(s, "503 5.5.1 Error: need MAIL command");
		session_error(s);
		return;
	}
	if (s->tx->bdat) {
		reply(s, "503 5.5.1 Error: RCPT after BDAT");
		session_error(s);
		return;
	}
	struct smtp_rcpt_args *r = &s->tx->pending;
	enum smtp_perr e = smtp_parse_rcpt(c->arg, c->arg_len, s->tx->mail.smtputf8, r);
	if (e != SMTP_P_OK) {
		reply_perr(s, e, false);
		session_error(s);
		return;
	}
	if (s->tx->nrcpts >= C(s)->max_recipients) {
		reply(s, "452 4.5.3 Error: too many recipients (at most %d per message)",
		      C(s)->max_recipients);
		log_info("event=limit limit=recipients session=%s ip=%s max=%d", s->sid, s->ip,
			 C(s)->max_recipients);
		return;
	}
	char addr[LIM_PATH + 1];
	if (smtp_addr_format(&r->to, addr, sizeof(addr)) < 0) {
		reply(s, "501 5.1.3 Error: address too long");
		session_error(s);
		return;
	}
	if (!worker_lookup_rcpt(s->w, s, session_listener_name(s->kind), addr,
				s->auth.done ? s->auth.account : "")) {
		reply(s, "451 4.3.0 <%s>: Temporary lookup failure", addr);
		return;
	}
	s->waiting_lookup = true;
	s->state = SMTP_ST_WAIT;
	bufferevent_disable(s->bev, EV_READ);
}

void session_lookup_done(struct smtp_session *s, enum ipc_rcpt_status st, const char *mailbox,
			 size_t len)
{
	s->waiting_lookup = false;
	s->state = SMTP_ST_CMD;
	bufferevent_enable(s->bev, EV_READ);
	struct smtp_tx *tx = s->tx;
	char addr[LIM_PATH + 1], safe[LIM_PATH + 1];
	smtp_addr_format(&tx->pending.to, addr, sizeof(addr));
	log_safe(safe, sizeof(safe), addr, sizeof(addr));
	switch (st) {
	case IPC_RCPT_LOCAL:
	case IPC_RCPT_REMOTE: {
		if (st == IPC_RCPT_REMOTE)
			mailbox = ""; /* waits in the queue for outbound delivery */
		if (s->auth.done) {
			/* the lookup process counted it against the hourly limit */
			if (tx->counted++ == 0)
				tx->counted_since = time(NULL);
		}
		/* two addresses for one mailbox (an alias and its target, <Postmaster> and
		 * postmaster@) or the same remote address twice get one copy */
		bool dup = false;
		for (int i = 0; i < tx->nrcpts && !dup; i++)
			dup = mailbox[0] ? strcmp(tx->rcpts[i].mailbox, mailbox) == 0
					 : strcasecmp(tx->rcpts[i].addr, addr) == 0;
		if (dup) {
			reply(s, "250 2.1.5 Ok");
			break;
		}
		if (tx->nrcpts == tx->cap) {
			tx->cap = tx->cap ? tx->cap * 2 : 4;
			struct spool_rcpt *n = realloc(tx->rcpts, (size_t)tx->cap * sizeof(*n));
			if (!n)
				fatal("out of memory");
			tx->rcpts = n;
		}
		struct spool_rcpt *r = &tx->rcpts[tx->nrcpts++];
		memset(r, 0, sizeof(*r));
		snprintf(r->addr, sizeof(r->addr), "%s", addr);
		snprintf(r->mailbox, sizeof(r->mailbox), "%s", mailbox);
		r->notify = tx->pending.notify;
		snprintf(r->orcpt, sizeof(r->orcpt), "%s", tx->pending.orcpt);
		reply(s, "250 2.1.5 Ok");
		break;
	}
	case IPC_RCPT_RATE: {
		/* payload: plan \0 limit \0 seconds until capacity frees up */
		char pay[128];
		size_t pn = len < sizeof(pay) - 3 ? len : sizeof(pay) - 3;
		memcpy(pay, mailbox, pn);
		pay[pn] = pay[pn + 1] = pay[pn + 2] = '\0';
		const char *plan = pay;
		const char *lim = plan + strlen(plan) + 1;
		const char *retry = lim + strlen(lim) + 1;
		size_t pl = strlen(plan);
		char sp[64], sl[16], sr[16];
		log_safe(sp, sizeof(sp), plan, pl);
		log_safe(sl, sizeof(sl), lim, strlen(lim));
		log_safe(sr, sizeof(sr), retry, strlen(retry));
		reply(s, "451 4.7.1 <%s>: hourly sending limit reached: plan %s allows %s recipients per hour; capacity frees up in %s seconds",
		      safe, sp, sl, sr);
		log_info("event=limit limit=hourly session=%s ip=%s account=%s plan=%s max=%s retry_after=%s to=<%s>",
			 s->sid, s->ip, s->auth.account, sp, sl, sr, safe);
		break;
	}
	case IPC_RCPT_UNKNOWN:
		reply(s, "550 5.1.1 <%s>: Recipient address rejected: User unknown in local recipient table",
		      safe);
		log_info("event=reject session=%s ip=%s stage=rcpt to=<%s> reason=unknown_user", s->sid,
			 s->ip, safe);
		if (!session_error(s))
			return;
		break;
	case IPC_RCPT_NOT_LOCAL:
		reply(s, "554 5.7.1 <%s>: Relay access denied", safe);
		log_info("event=reject session=%s ip=%s stage=rcpt to=<%s> reason=relay_denied", s->sid,
			 s->ip, safe);
		if (!session_error(s))
			return;
		break;
	default:
		reply(s, "451 4.3.0 <%s>: Temporary lookup failure", safe);
		break;
	}
	session_process(s);
}

static void do_data(struct smtp_session *s, const struct smtp_cmd *c)
{
	if (c->arg_len) {
		reply(s, "501 5.5.4 Syntax: DATA");
		session_error(s);
		return;
	}
	if (!s->tx) {
		reply(s, "503 5.5.1 Error: need MAIL command");
		session_error(s);
		return;
	}
	if (s->tx->bdat) {
		reply(s, "503 5.5.1 Error: DATA after BDAT (RFC 3030)");
		session_error(s);
		return;
	}
	if (s->tx->nrcpts == 0) {
		reply(s, "554 5.5.1 Error: no valid recipients");
		session_error(s);
		return;
	}
	if (!message_begin(s, false))
		return;
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
	s->state = SMTP_ST_DATA;
}

static void do_bdat(struct smtp_session *s, const struct smtp_cmd *c)
{
	uint64_t size;
	bool last;
	if (smtp_parse_bdat(c->arg, c->arg_len, &size, &last) != SMTP_P_OK) {
		/* RFC 3030 2: we cannot know how many octets follow; close */
		reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
		session_close(s, "bad_bdat");
		return;
	}
	if (!s->tx || s->tx->nrcpts == 0) {
		/* the chunk still arrives and must be skipped (RFC 3030 2) */
		if (s->tx)
			tx_reset(s);
		s->tx = xcalloc(1, sizeof(*s->tx));
		s->tx->bdat = true;
		s->tx->bdat_left = size;
		s->tx->bdat_last = last;
		s->tx->write_failed = true; /* marks "discard" */
		s->state = SMTP_ST_BDAT;
		return;
	}
	if (!s->tx->bdat) {
		s->tx->bdat = true;
		if (!message_begin(s, true)) {
			s->tx->write_failed = true;
		}
	}
	s->tx->bdat_left = size;
	s->tx->bdat_last = last;
	s->state = SMTP_ST_BDAT;
}

static void bdat_chunk_done(struct smtp_session *s)
{
	struct smtp_tx *tx = s->tx;
	s->state = SMTP_ST_CMD;
	if (!tx->msg) {
		/* no transaction (or the spool failed): the chunk was read and dropped */
		reply(s, tx->nrcpts == 0 ? "503 5.5.1 Error: need MAIL and RCPT before BDAT"
					 : "451 4.3.0 Error: local error in processing");
		tx_reset(s);
		session_error(s);
		return;
	}
	if (tx->bdat_last) {
		message_end(s);
		return;
	}
	if (body_error(&tx->body) == BODY_ERR_SIZE) {
		/* RFC 3030 2: a 5xx to a chunk ends the transaction */
		reply(s, "552 5.3.4 Error: message size exceeds fixed limit of %llu bytes",
		      (unsigned long long)C(s)->max_message_size);
		log_warn("event=limit limit=message_size session=%s ip=%s qid=%s max=%llu", s->sid,
			 s->ip, tx->qid, (unsigned long long)C(s)->max_message_size);
		tx_reset(s);
		session_error(s);
		return;
	}
	reply(s, "250 2.0.0 Ok: %llu octets received", (unsigned long long)tx->body.size);
}

static void do_rset(struct smtp_session *s, const struct smtp_cmd *c)
{
	tx_reset(s);
	reply(s, "250 2.0.0 Ok");
}

static void do_noop(struct smtp_session *s, const struct smtp_cmd *c)
{
	reply(s, "250 2.0.0 Ok");
}

static void do_quit(struct smtp_session *s, const struct smtp_cmd *c)
{
	reply(s, "221 2.0.0 Bye");
	session_close(s, "quit");
}

static void do_vrfy(struct smtp_session *s, const struct smtp_cmd *c)
{
	/* RFC 5321 4.1.1.6: vrfy = "VRFY" SP String */
	if (c->arg_len == 0) {
		reply(s, "501 5.5.4 Syntax: VRFY address");
		session_error(s);
		return;
	}
	/* RFC 5321 3.5.3: 252 without telling whether the user exists */
	reply(s, "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
}

static void do_expn(struct smtp_session *s, const struct smtp_cmd *c)
{
	reply(s, "502 5.5.1 Error: EXPN is not supported");
}

static void do_help(struct smtp_session *s, const struct smtp_cmd *c)
{
	reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS");
}

static void do_auth(struct smtp_session *s, const struct smtp_cmd *c)
{
	if (!s->tls.active) {
		/* promise 2: nothing of the secret is read before TLS */
		reply(s, "530 5.7.0 Must issue a STARTTLS command first");
		session_error(s);
		return;
	}
	auth_command(s, c->arg, c->arg_len);
}

struct event_base *worker_base_of(struct smtp_session *s)
{
	return worker_base(s->w);
}

void session_pause(struct smtp_session *s)
{
	s->state = SMTP_ST_WAIT;
	bufferevent_disable(s->bev, EV_READ);
}

void session_resume(struct smtp_session *s)
{
	if (s->state == SMTP_ST_CLOSING)
		return;
	s->state = SMTP_ST_CMD;
	bufferevent_enable(s->bev, EV_READ);
}

/* ---- TLS ---- */

static void tls_established(struct smtp_session *s)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
	tls_conn_info(ssl, s->tls.version, sizeof(s->tls.version), s->tls.cipher,
		      sizeof(s->tls.cipher), &s->tls.bits);
	s->tls.active = true;
	log_info("event=tls session=%s ip=%s listener=%s tls_version=%s tls_cipher=%s resumed=%s",
		 s->sid, s->ip, session_listener_name(s->kind), s->tls.version, s->tls.cipher,
		 SSL_session_reused(ssl) ? "yes" : "no");
	bufferevent_set_timeouts(s->bev, &(struct timeval){C(s)->idle_timeout, 0},
				 &(struct timeval){C(s)->idle_timeout, 0});
	if (s->state == SMTP_ST_TLS_WAIT) {
		reply(s, "220 %s ESMTP sealmail", C(s)->hostname);
	} else {
		/* RFC 3207 4.2: forget everything learned before TLS */
		s->greeted = false;
		s->ehlo = false;
		s->helo[0] = '\0';
		tx_reset(s);
	}
	s->state = SMTP_ST_CMD;
}

static bool tls_start(struct smtp_session *s)
{
	SSL *ssl = tls_server_ssl(worker_tls(s->w));
	if (!ssl)
		return false;
	struct bufferevent *bev = bufferevent_openssl_socket_new(
		worker_base(s->w), s->fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
		BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!bev) {
		SSL_free(ssl);
		return false;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	s->bev = bev;
	s->bev_owns_fd = true;
	bufferevent_setcb(bev, session_read_cb, session_write_cb, session_event_cb, s);
	bufferevent_set_timeouts(bev, &(struct timeval){LIM_TLS_HANDSHAKE_TIMEOUT, 0},
				 &(struct timeval){LIM_TLS_HANDSHAKE_TIMEOUT, 0});
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	return true;
}

static void do_starttls(struct smtp_session *s, const struct smtp_cmd *c)
{
	if (c->arg_len) {
		reply(s, "501 5.5.4 Syntax: STARTTLS");
		session_error(s);
		return;
	}
	if (!starttls_offered(s)) {
		reply(s, "503 5.5.1 Error: TLS already active");
		session_error(s);
		return;
	}
	/* RFC 3207 / CVE-2011-0411: whatever the client pipelined after STARTTLS is discarded,
	 * never executed; and nothing more is read in plaintext. */
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t junk = evbuffer_get_length(in);
	if (junk) {
		log_warn("event=starttls_injection session=%s ip=%s discarded_bytes=%zu", s->sid, s->ip,
			 junk);
		evbuffer_drain(in, junk);
	}
	bufferevent_disable(s->bev, EV_READ);
	reply(s, "220 2.0.0 Ready to start TLS");
	s->state = SMTP_ST_STARTTLS;
}

/* ---- input ---- */

/* Reads one command line if complete. Returns 1 with line (NUL-terminated, CRLF removed),
 * 0 when more input is needed, -1 when the session was closed. */
static int read_line(struct smtp_session *s, char *line, size_t cap, size_t *len)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t have = evbuffer_get_length(in);
	if (have == 0)
		return 0;
	/* search only within the cap (DESIGN: evbuffer_readln has no length limit) */
	struct evbuffer_ptr end;
	evbuffer_ptr_set(in, &end, have < cap ? have : cap, EVBUFFER_PTR_SET);
	struct evbuffer_ptr lf = evbuffer_search_range(in, "\n", 1, NULL, &end);
	if (lf.pos < 0) {
		if (have >= cap) {
			reply(s, "500 5.5.6 Error: command line too long (RFC 5321 4.5.3.1.4)");
			log_warn("event=limit limit=command_line session=%s ip=%s", s->sid, s->ip);
			session_close(s, "line_too_long");
			return -1;
		}
		return 0;
	}
	size_t n = (size_t)lf.pos + 1;
	evbuffer_remove(in, line, n);
	line[n] = '\0';
	if (n < 2 || line[n - 2] != '\r') {
		reply(s, "500 5.5.2 Error: bare LF in command; lines must end with CRLF (RFC 5321 2.3.8)");
		if (!session_error(s))
			return -1;
		*len = (size_t)-1;
		return 1;
	}
	*len = n - 2;
	line[*len] = '\0';
	return 1;
}

static void handle_command(struct smtp_session *s, char *line, size_t len)
{
	struct smtp_cmd c;
	if (++s->commands > LIM_COMMANDS_PER_SESSION) {
		reply(s, "421 4.7.0 %s Error: too many commands", C(s)->hostname);
		log_warn("event=limit limit=commands session=%s ip=%s max=%d", s->sid, s->ip,
			 LIM_COMMANDS_PER_SESSION);
		session_close(s, "too_many_commands");
		return;
	}
	if (memchr(line, '\r', len)) {
		reply(s, "500 5.5.2 Error: bare CR in command");
		session_error(s);
		return;
	}
	enum smtp_perr e = smtp_parse_cmd(line, len, &c);
	if (e == SMTP_P_NUL) {
		reply(s, "500 5.5.2 Error: NUL octet in command");
		log_warn("event=reject session=%s ip=%s reason=nul_in_command", s->sid, s->ip);
		session_error(s);
		return;
	}
	/* RFC 5321 4.5.3.1.4: 512 octets, except where an extension allows more (MAIL/RCPT
	 * parameters, an AUTH initial response); the parser knows which and says TOO_LONG */
	if (e == SMTP_P_TOO_LONG ||
	    (e == SMTP_P_OK && len + 2 > LIM_CMD_LINE && c.verb != SMTP_V_MAIL &&
	     c.verb != SMTP_V_RCPT && c.verb != SMTP_V_AUTH)) {
		reply(s, "500 5.5.6 Error: command line too long (RFC 5321 4.5.3.1.4)");
		log_warn("event=limit limit=command_line session=%s ip=%s length=%zu", s->sid, s->ip,
			 len + 2);
		session_error(s);
		return;
	}
	if (e != SMTP_P_OK || c.verb == SMTP_V_UNKNOWN) {
		reply(s, "500 5.5.2 Error: command not recognized");
		session_error(s);
		return;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		const struct smtp_command *cmd = &commands[i];
		if (cmd->verb != c.verb)
			continue;
		if (!(cmd->flags & CF_BEFORE_HELO) && !s->greeted) {
			reply(s, "503 5.5.1 Error: send HELO/EHLO first");
			session_error(s);
			return;
		}
		if ((cmd->flags & CF_EHLO_ONLY) && !s->ehlo) {
			reply(s, "502 5.5.1 Error: command needs EHLO");
			session_error(s);
			return;
		}
		cmd->action(s, &c);
		return;
	}
	reply(s, "502 5.5.1 Error: command not implemented");
	session_error(s);
}

static void read_data(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	while (s->state == SMTP_ST_DATA && evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		bool done = false;
		size_t used = body_feed(&s->tx->body, v.iov_base, v.iov_len, &done);
		evbuffer_drain(in, used);
		if (done)
			message_end(s);
	}
}

static void read_bdat(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct smtp_tx *tx = s->tx;
	while (s->state == SMTP_ST_BDAT) {
		if (tx->bdat_left == 0) {
			bdat_chunk_done(s);
			return;
		}
		size_t have = evbuffer_get_length(in);
		if (have == 0)
			return;
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			return;
		size_t n = v.iov_len;
		if (n > tx->bdat_left)
			n = (size_t)tx->bdat_left;
		if (tx->msg) {
			bool done;
			body_feed(&tx->body, v.iov_base, n, &done);
		}
		evbuffer_drain(in, n);
		tx->bdat_left -= n;
	}
}

void session_process(struct smtp_session *s)
{
	char line[LIM_CMD_LINE_EXT + 1];
	for (;;) {
		switch (s->state) {
		case SMTP_ST_CMD:
		case SMTP_ST_AUTH: {
			size_t len;
			int r = read_line(s, line, LIM_CMD_LINE_EXT, &len);
			if (r <= 0)
				return;
			if (len == (size_t)-1)
				continue;
			if (s->state == SMTP_ST_AUTH)
				auth_line(s, line, len);
			else
				handle_command(s, line, len);
			break;
		}
		case SMTP_ST_DATA:
			read_data(s);
			if (s->state == SMTP_ST_DATA)
				return;
			break;
		case SMTP_ST_BDAT:
			read_bdat(s);
			if (s->state == SMTP_ST_BDAT)
				return;
			break;
		default:
			return;
		}
	}
}

static void session_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;
	(void)bev;
	session_process(s);
}

static void session_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;
	/* With BEV_OPT_DEFER_CALLBACKS this runs some time after the output drained, and more
	 * replies may have been queued since (a pipelined burst ending in QUIT or a limit):
	 * freeing now would drop them, so wait for the next drain. */
	if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
		return;
	if (s->state == SMTP_ST_CLOSING) {
		session_free(s);
		return;
	}
	if (s->state == SMTP_ST_STARTTLS) {
		/* the 220 is out: drop the plaintext bufferevent, keep the socket, start TLS */
		struct evbuffer *in = bufferevent_get_input(s->bev);
		if (evbuffer_get_length(in)) {
			log_warn("event=starttls_injection session=%s ip=%s discarded_bytes=%zu", s->sid,
				 s->ip, evbuffer_get_length(in));
		}
		bufferevent_free(s->bev);
		s->bev = NULL;
		s->state = SMTP_ST_HANDSHAKE;
		if (!tls_start(s)) {
			log_err("event=tls_error session=%s ip=%s op=start", s->sid, s->ip);
			s->state = SMTP_ST_CLOSING;
			session_free(s);
		}
	}
}

static void session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_session *s = arg;
	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		tls_established(s);
		session_process(s);
		return;
	}
	if (s->state == SMTP_ST_CLOSING) {
		session_free(s);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (s->state == SMTP_ST_TLS_WAIT || s->state == SMTP_ST_HANDSHAKE) {
			log_warn("event=limit limit=tls_handshake_timeout session=%s ip=%s", s->sid, s->ip);
			s->state = SMTP_ST_CLOSING;
			session_free(s);
			return;
		}
		reply(s, "421 4.4.2 %s Error: timeout exceeded", C(s)->hostname);
		log_info("event=limit limit=idle_timeout session=%s ip=%s", s->sid, s->ip);
		session_close(s, "timeout");
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		/* libevent pops its error stack newest first, and its oldest entry is the code of
		 * SSL_get_error() (library 0: "error:00000001:lib(0)::reason(1)", no reason at
		 * all). Log the oldest real OpenSSL error, which is the cause. */
		unsigned long e, best = 0;
		while ((e = bufferevent_get_openssl_error(s->bev)) != 0)
			if (best == 0 || ERR_GET_LIB(e) != 0)
				best = e;
		if (best != 0) {
			char buf[256];
			if (ERR_GET_LIB(best) != 0)
				ERR_error_string_n(best, buf, sizeof(buf));
			else
				snprintf(buf, sizeof(buf), "SSL_get_error=%lu", best);
			log_warn("event=tls_error session=%s ip=%s error=\"%s\"", s->sid, s->ip, buf);
		}
	}
	s->state = SMTP_ST_CLOSING;
	log_info("event=disconnect session=%s ip=%s listener=%s reason=%s commands=%u messages=%u errors=%d",
		 s->sid, s->ip, session_listener_name(s->kind),
		 (what & BEV_EVENT_EOF) ? "client_closed" : "error", s->commands, s->messages,
		 s->errors);
	session_free(s);
}

void session_shutdown(struct smtp_session *s)
{
	if (s->state == SMTP_ST_CLOSING || s->in_commit)
		return;
	if (s->state == SMTP_ST_CMD || s->state == SMTP_ST_DATA || s->state == SMTP_ST_BDAT)
		reply(s, "421 4.3.2 %s Service shutting down", C(s)->hostname);
	session_close(s, "shutdown");
}

struct smtp_session *session_start(struct worker *w, int fd, const struct sockaddr_storage *peer,
		   enum conf_listener_kind kind)
{
	struct smtp_session *s = xcalloc(1, sizeof(*s));
	const struct conf *c = worker_conf(w);
	s->w = w;
	s->fd = fd;
	s->kind = kind;
	s->id = worker_next_session_id(w);
	snprintf(s->sid, sizeof(s->sid), "%llx", (unsigned long long)s->id);
	worker_format_ip(peer, s->ip, sizeof(s->ip));
	/* Nagle + delayed ACK after the TLS 1.3 ticket costs 40 ms per session */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	log_info("event=connect session=%s ip=%s listener=%s", s->sid, s->ip,
		 session_listener_name(kind));
	if (kind == CONF_LST_SUBMISSIONS) {
		s->state = SMTP_ST_TLS_WAIT;
		if (!tls_start(s)) {
			log_err("event=tls_error session=%s ip=%s op=start", s->sid, s->ip);
			s->state = SMTP_ST_CLOSING;
			session_free(s);
			return NULL;
		}
		return s;
	}
	/* the plaintext bufferevent does not own fd: STARTTLS hands fd to a TLS bufferevent */
	s->bev = bufferevent_socket_new(worker_base(w), fd, BEV_OPT_DEFER_CALLBACKS);
	bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
	bufferevent_set_timeouts(s->bev, &(struct timeval){c->idle_timeout, 0},
				 &(struct timeval){c->idle_timeout, 0});
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	s->state = SMTP_ST_CMD;
	reply(s, "220 %s ESMTP sealmail", c->hostname);
	return s;
}
