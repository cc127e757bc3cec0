/* The outbound SMTP client of smtpc.h: one connection on a libevent loop — connect, reading
 * replies off the socket, greeting, EHLO/HELO, the STARTTLS decision, AUTH, the callbacks
 * and the close/free discipline, QUIT. Replies and EHLO keywords are parsed in
 * smtpc_reply.c, TLS is in smtpc_tls.c, the transactions in smtpc_tx.c. Runs in the queue
 * process. Untrusted input: every byte the server sends (line length and count bounded,
 * text sanitised before it is kept or logged). */
#include "queue/smtpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "limits.h"
#include "queue/smtpc_int.h"
#include "queue/smtpc_reply.h"
#include "util/log.h"

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

const char *smtpc_stage_name(enum smtpc_stage s)
{
	static const char *const names[] = {
	    "connect",   "greeting", "EHLO", "STARTTLS",    "TLS handshake", "AUTH",
	    "MAIL FROM", "RCPT TO",  "DATA", "end of data", "RSET",          "QUIT",
	};
	if ((unsigned)s < sizeof(names) / sizeof(names[0]))
		return names[s];
	return "unknown";
}

const char *smtpc_cert_name(enum smtpc_cert v)
{
	switch (v) {
	case SMTPC_CERT_NONE:
		return "none";
	case SMTPC_CERT_VERIFIED:
		return "verified";
	case SMTPC_CERT_UNVERIFIED:
		return "unverified";
	case SMTPC_CERT_FAILED:
		return "failed";
	}
	return "unknown";
}

/* ---- small helpers ---- */

void smtpc_timer_arm(struct smtpc *c, int secs)
{
	struct timeval tv = {secs, 0};
	evtimer_add(c->tmo, &tv);
}

void smtpc_timer_stop(struct smtpc *c)
{
	evtimer_del(c->tmo);
}

/* Appends to buf[*n..sz); false (and buf unchanged past *n) when it does not fit. */
bool smtpc_buf_add(char *buf, size_t sz, size_t *n, const char *fmt, ...)
{
	va_list ap;
	if (*n >= sz)
		return false;
	va_start(ap, fmt);
	int r = vsnprintf(buf + *n, sz - *n, fmt, ap);
	va_end(ap);
	if (r < 0 || (size_t)r >= sz - *n) {
		buf[*n] = '\0';
		return false;
	}
	*n += (size_t)r;
	return true;
}

static void res_clear(struct smtpc_result *r, enum smtpc_stage st)
{
	memset(r, 0, sizeof(*r));
	r->stage = st;
}

/* A failure of ours (no reply): code 0 and a reason. */
void smtpc_res_reason(struct smtpc_result *r, enum smtpc_stage st, const char *enh, bool perm,
                      const char *fmt, ...)
{
	va_list ap;
	res_clear(r, st);
	snprintf(r->enh, sizeof(r->enh), "%s", enh);
	r->permanent = perm;
	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
	va_end(ap);
}

/* The server's reply as the outcome of a step; without an enhanced code, "X.0.0" of its class
 * (RFC 3463 3.1) so that the caller always has one for the DSN. */
void smtpc_res_reply(struct smtpc_result *r, enum smtpc_stage st, const struct smtpc_reply *rep)
{
	res_clear(r, st);
	r->code = rep->code;
	if (rep->enh[0])
		snprintf(r->enh, sizeof(r->enh), "%s", rep->enh);
	else if (rep->code / 100 == 2 || rep->code / 100 == 5)
		snprintf(r->enh, sizeof(r->enh), "%d.0.0", rep->code / 100);
	else
		snprintf(r->enh, sizeof(r->enh), "4.0.0"); /* 4xx, or a 1xx/3xx out of place */
	snprintf(r->reply, sizeof(r->reply), "%s", rep->text);
	r->permanent = rep->code / 100 == 5;
}

/* Lost connection or timeout while waiting at stage st (body: while sending the body). */
static void res_lost(struct smtpc *c, struct smtpc_result *r, enum smtpc_stage st, bool timeout,
                     bool body)
{
	const char *what = timeout ? "conversation with" : "lost connection with";
	const char *how = timeout ? " timed out" : "";
	if (body)
		smtpc_res_reason(r, st, "4.4.2", false, "%s %s[%s]%s while sending message body",
		                 what, c->host, c->info.ip, how);
	else if (st == SMTPC_ST_GREETING)
		smtpc_res_reason(r, st, "4.4.2", false,
		                 "%s %s[%s]%s while receiving the initial server greeting", what,
		                 c->host, c->info.ip, how);
	else
		smtpc_res_reason(r, st, "4.4.2", false, "%s %s[%s]%s in reply to %s", what, c->host,
		                 c->info.ip, how, smtpc_stage_name(st));
}

/* Sends one command line (CRLF added). Credentials never reach the log. */
void smtpc_cmd_send(struct smtpc *c, bool secret, const char *fmt, ...)
{
	char line[LIM_CMD_LINE_EXT + 64];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* callers build lines within LIM_CMD_LINE_EXT; a longer one is our bug */
	if (n < 0 || (size_t)n >= sizeof(line) - 2)
		fatal("smtpc: command line too long");
	if (!secret) {
		char safe[160];
		log_debug("event=smtpc_send host=%s ip=%s cmd=\"%s\"", c->host, c->info.ip,
		          log_safe(safe, sizeof(safe), line, (size_t)n));
	}
	line[n++] = '\r';
	line[n++] = '\n';
	evbuffer_add(bufferevent_get_output(c->bev), line, (size_t)n);
}

/* Frees the connection's bufferevent and socket; c stays (state CLOSED). */
void smtpc_conn_close(struct smtpc *c)
{
	smtpc_timer_stop(c);
	if (c->bev) {
		bufferevent_free(c->bev);
		c->bev = NULL;
		if (c->bev_owns_fd)
			c->fd = -1;
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	c->st = SMTPC_S_CLOSED;
}

static void smtpc_destroy(struct smtpc *c)
{
	smtpc_conn_close(c);
	if (c->tmo)
		event_free(c->tmo);
	if (c->defer)
		event_free(c->defer);
	free(c->ibuf);
	free(c->obuf);
	free(c->host);
	free(c->domain);
	free(c->helo);
	free(c->auth_user);
	if (c->auth_pass) {
		OPENSSL_cleanse(c->auth_pass, strlen(c->auth_pass));
		free(c->auth_pass);
	}
	free(c);
}

/* Every entry from libevent goes through enter/leave: a free asked for inside (by us or by
 * the caller from one of its callbacks) is only marked, and done here on the way out. */
static void enter(struct smtpc *c)
{
	c->busy++;
}

static void leave(struct smtpc *c)
{
	if (--c->busy == 0 && c->dead)
		smtpc_destroy(c);
}

/* ---- opening ---- */

void smtpc_open_fail(struct smtpc *c, const struct smtpc_result *r)
{
	smtpc_open_cb cb = c->open_cb;
	char reason[200];
	log_debug("event=smtpc_open_failed host=%s ip=%s stage=\"%s\" code=%d enh=%s reason=\"%s\"",
	          c->host, c->info.ip, smtpc_stage_name(r->stage), r->code, r->enh,
	          log_safe(reason, sizeof(reason), r->code ? r->reply : r->reason, sizeof(reason)));
	smtpc_conn_close(c);
	c->open_cb = NULL;
	/* the contract: c is freed when the callback returns */
	c->dead = true;
	if (cb)
		cb(c, c->open_arg, r, &c->info);
}

static void open_done(struct smtpc *c)
{
	smtpc_open_cb cb = c->open_cb;
	c->open_cb = NULL;
	c->st = SMTPC_S_IDLE;
	smtpc_timer_stop(c);
	log_debug("event=smtpc_open host=%s ip=%s esmtp=%d tls=%d cert=%s", c->host, c->info.ip,
	          c->info.esmtp, c->info.tls, smtpc_cert_name(c->info.cert));
	cb(c, c->open_arg, NULL, &c->info);
}

void smtpc_ehlo_send(struct smtpc *c)
{
	memset(&c->caps, 0, sizeof(c->caps));
	smtpc_cmd_send(c, false, "EHLO %s", c->helo);
	c->st = SMTPC_S_EHLO;
	smtpc_timer_arm(c, SMTPC_T_OTHER);
}

static void b64(const char *in, size_t n, char *out, size_t osz)
{
	if (4 * ((n + 2) / 3) + 1 > osz)
		fatal("smtpc: base64 buffer");
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)n);
}

/* After TLS is settled (on, or off as the level allows): AUTH when asked, else ready. */
static void after_tls(struct smtpc *c)
{
	struct smtpc_result r;
	if (!c->auth_user) {
		open_done(c);
		return;
	}
	if (!c->info.tls && c->level != TLS_LEVEL_NONE) {
		smtpc_res_reason(
		    &r, SMTPC_ST_AUTH, "4.7.4", false,
		    "credentials for %s[%s] are sent only over TLS, and TLS is not active", c->host,
		    c->info.ip);
		r.policy = true;
		smtpc_open_fail(c, &r);
		return;
	}
	if (c->info.auth_plain) {
		char plain[2 * LIM_SMTPC_AUTH + 3], enc[4 * ((sizeof(plain) + 2) / 3) + 1];
		size_t ul = strlen(c->auth_user), pl = strlen(c->auth_pass);
		plain[0] = '\0';
		memcpy(plain + 1, c->auth_user, ul);
		plain[1 + ul] = '\0';
		memcpy(plain + 2 + ul, c->auth_pass, pl);
		b64(plain, 2 + ul + pl, enc, sizeof(enc));
		OPENSSL_cleanse(plain, sizeof(plain));
		smtpc_cmd_send(c, true, "AUTH PLAIN %s", enc);
		OPENSSL_cleanse(enc, sizeof(enc));
		c->st = SMTPC_S_AUTH;
	} else if (c->info.auth_login) {
		smtpc_cmd_send(c, false, "AUTH LOGIN");
		c->st = SMTPC_S_AUTH_USER;
	} else {
		smtpc_res_reason(&r, SMTPC_ST_AUTH, "4.7.0", false,
		                 "%s[%s] offers no AUTH mechanism we support (PLAIN, LOGIN)",
		                 c->host, c->info.ip);
		smtpc_open_fail(c, &r);
		return;
	}
	smtpc_timer_arm(c, SMTPC_T_OTHER);
}

/* After EHLO/HELO: STARTTLS when the level wants it and the server offers it. */
static void after_ehlo(struct smtpc *c)
{
	struct smtpc_result r;
	if (!c->info.tls && c->mode == SMTPC_STARTTLS && c->level >= TLS_LEVEL_MAY &&
	    !c->starttls_refused) {
		if (c->info.starttls) {
			smtpc_cmd_send(c, false, "STARTTLS");
			c->st = SMTPC_S_STARTTLS;
			smtpc_timer_arm(c, SMTPC_T_OTHER);
			return;
		}
		if (c->level >= TLS_LEVEL_ENCRYPT) {
			smtpc_res_reason(
			    &r, SMTPC_ST_EHLO, "4.7.4", false,
			    "TLS required by policy for %s but %s did not offer STARTTLS",
			    c->domain, c->host);
			r.policy = true;
			smtpc_open_fail(c, &r);
			return;
		}
	}
	after_tls(c);
}

void smtpc_setcb(struct smtpc *c)
{
	bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
	/* RFC 5321 4.5.3.2.5: each write of the body must progress within this time; command
	 * writes are tiny and bounded by the same */
	bufferevent_set_timeouts(c->bev, NULL, &(struct timeval){SMTPC_T_DATA_BLOCK, 0});
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

void smtpc_greeting_wait(struct smtpc *c)
{
	c->st = SMTPC_S_GREETING;
	smtpc_timer_arm(c, SMTPC_T_GREETING);
}

static void open_reply(struct smtpc *c, const struct smtpc_reply *rep)
{
	struct smtpc_result r;
	int cls = rep->code / 100;
	switch (c->st) {
	case SMTPC_S_GREETING:
		snprintf(c->info.greeting, sizeof(c->info.greeting), "%s", rep->text);
		if (cls != 2) {
			smtpc_res_reply(&r, SMTPC_ST_GREETING, rep);
			smtpc_open_fail(c, &r);
			return;
		}
		smtpc_ehlo_send(c);
		return;
	case SMTPC_S_EHLO:
		if (cls == 2) {
			smtpc_caps_apply(&c->info, &c->caps, true);
			after_ehlo(c);
		} else if (cls == 5) {
			/* RFC 5321 3.2: a server that does not know EHLO still knows HELO */
			memset(&c->caps, 0, sizeof(c->caps));
			smtpc_cmd_send(c, false, "HELO %s", c->helo);
			c->st = SMTPC_S_HELO;
			smtpc_timer_arm(c, SMTPC_T_OTHER);
		} else {
			smtpc_res_reply(&r, SMTPC_ST_EHLO, rep);
			smtpc_open_fail(c, &r);
		}
		return;
	case SMTPC_S_HELO:
		if (cls != 2) {
			smtpc_res_reply(&r, SMTPC_ST_EHLO, rep);
			smtpc_open_fail(c, &r);
			return;
		}
		smtpc_caps_apply(&c->info, &c->caps, false);
		after_ehlo(c);
		return;
	case SMTPC_S_STARTTLS:
		if (rep->code == 220) {
			/* RFC 3207 / CVE-2011-0411 class: bytes the server sent after "220" and
			 * before the handshake are not protected; they must not be taken as
			 * replies after it */
			struct evbuffer *in = bufferevent_get_input(c->bev);
			if (evbuffer_get_length(in)) {
				log_warn("event=smtpc_starttls_injection host=%s ip=%s "
				         "discarded_bytes=%zu",
				         c->host, c->info.ip, evbuffer_get_length(in));
				evbuffer_drain(in, evbuffer_get_length(in));
			}
			smtpc_tls_start(c);
			return;
		}
		if (c->level >= TLS_LEVEL_ENCRYPT) {
			smtpc_res_reply(&r, SMTPC_ST_STARTTLS, rep);
			r.code = 0;
			snprintf(r.enh, sizeof(r.enh), "4.7.4");
			r.permanent = false;
			r.policy = true;
			snprintf(r.reason, sizeof(r.reason),
			         "TLS required by policy for %s but %s refused STARTTLS: %s",
			         c->domain, c->host, rep->text);
			smtpc_open_fail(c, &r);
			return;
		}
		log_debug("event=smtpc_starttls_refused host=%s ip=%s level=may code=%d "
		          "action=plaintext",
		          c->host, c->info.ip, rep->code);
		c->starttls_refused = true;
		after_tls(c);
		return;
	case SMTPC_S_AUTH:
		if (rep->code == 235) {
			open_done(c);
			return;
		}
		smtpc_res_reply(&r, SMTPC_ST_AUTH, rep);
		smtpc_open_fail(c, &r);
		return;
	case SMTPC_S_AUTH_USER:
	case SMTPC_S_AUTH_PASS: {
		if (rep->code != 334) {
			smtpc_res_reply(&r, SMTPC_ST_AUTH, rep);
			smtpc_open_fail(c, &r);
			return;
		}
		const char *s = c->st == SMTPC_S_AUTH_USER ? c->auth_user : c->auth_pass;
		char enc[4 * ((LIM_SMTPC_AUTH + 2) / 3) + 1];
		b64(s, strlen(s), enc, sizeof(enc));
		smtpc_cmd_send(c, true, "%s", enc);
		OPENSSL_cleanse(enc, sizeof(enc));
		c->st = c->st == SMTPC_S_AUTH_USER ? SMTPC_S_AUTH_PASS : SMTPC_S_AUTH;
		smtpc_timer_arm(c, SMTPC_T_OTHER);
		return;
	}
	default:
		return;
	}
}

/* ---- reply reading ---- */

/* Reads lines from the input (smtpc_reply.c does the reading): 1 when *rep holds a complete
 * reply, 0 when more is needed, -1 on a protocol violation (rep->text then says what). */
static int reply_read(struct smtpc *c, struct evbuffer *in, struct smtpc_reply *rep)
{
	struct smtpc_caps *caps = c->st == SMTPC_S_EHLO ? &c->caps : NULL;
	for (;;) {
		/* a window of one longest line and its CRLF: enough to find the next line end
		 * or to know that the line is too long */
		size_t avail = evbuffer_get_length(in), used = 0;
		size_t win = avail < SMTPC_MAX_LINE + 2 ? avail : SMTPC_MAX_LINE + 2;
		if (win == 0)
			return 0;
		const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)win);
		if (buf == NULL)
			fatal("smtpc: evbuffer_pullup failed");
		enum smtpc_rd r = smtpc_reader_feed(&c->rd, caps, buf, win, &used, rep);
		evbuffer_drain(in, used);
		if (r == SMTPC_RD_REPLY)
			return 1;
		if (r == SMTPC_RD_ERROR)
			return -1;
		if (used == 0)
			return 0;
	}
}

bool smtpc_addr_ok(const char *s, bool allow_empty)
{
	if (!s || (!*s && !allow_empty) || strlen(s) > LIM_PATH)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f || *s == '<' || *s == '>')
			return false;
	return true;
}

/* ---- libevent callbacks ---- */

/* The connection broke (EOF, error, a timeout or a malformed reply) in state c->st. */
static void conn_broken(struct smtpc *c, bool timeout, const char *proto_err)
{
	struct smtpc_result r;
	enum smtpc_stage st;
	switch (c->st) {
	case SMTPC_S_GREETING:
		st = SMTPC_ST_GREETING;
		break;
	case SMTPC_S_EHLO:
	case SMTPC_S_HELO:
		st = SMTPC_ST_EHLO;
		break;
	case SMTPC_S_STARTTLS:
		st = SMTPC_ST_STARTTLS;
		break;
	case SMTPC_S_AUTH:
	case SMTPC_S_AUTH_USER:
	case SMTPC_S_AUTH_PASS:
		st = SMTPC_ST_AUTH;
		break;
	case SMTPC_S_MAIL:
		st = SMTPC_ST_MAIL;
		break;
	case SMTPC_S_RCPT:
		st = SMTPC_ST_RCPT;
		break;
	case SMTPC_S_DATA:
	case SMTPC_S_BODY:
		st = SMTPC_ST_DATA;
		break;
	case SMTPC_S_DOT:
	case SMTPC_S_DOT_DISCARD:
		st = SMTPC_ST_DOT;
		break;
	case SMTPC_S_RSET:
		st = SMTPC_ST_RSET;
		break;
	case SMTPC_S_QUIT:
		c->dead = true;
		smtpc_conn_close(c);
		return;
	case SMTPC_S_IDLE:
	case SMTPC_S_TXCHECK:
		/* an idle connection the server closed (or that sent junk): unusable */
		log_debug("event=smtpc_idle_close host=%s ip=%s", c->host, c->info.ip);
		smtpc_conn_close(c);
		return;
	default:
		return;
	}
	if (proto_err) {
		smtpc_res_reason(&r, st, "4.4.2", false,
		                 "protocol error with %s[%s] in reply to %s: %s", c->host,
		                 c->info.ip, smtpc_stage_name(st), proto_err);
	} else {
		res_lost(c, &r, st, timeout, c->st == SMTPC_S_BODY);
	}
	if (c->tx) {
		if (c->st == SMTPC_S_RSET || c->st == SMTPC_S_DOT_DISCARD) {
			/* the failure is already recorded; only the connection is gone */
			smtpc_conn_close(c);
			smtpc_tx_finish(c);
			return;
		}
		smtpc_tx_abort(c, &r);
		return;
	}
	smtpc_open_fail(c, &r);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct smtpc *c = arg;
	enter(c);
	while (!c->dead && c->bev == bev && c->st != SMTPC_S_CLOSED &&
	       c->st != SMTPC_S_CONNECTING && c->st != SMTPC_S_HANDSHAKE) {
		struct smtpc_reply rep;
		int r = reply_read(c, bufferevent_get_input(bev), &rep);
		if (r == 0)
			break;
		if (r < 0) {
			conn_broken(c, false, rep.text);
			break;
		}
		{
			char safe[200];
			log_debug("event=smtpc_reply host=%s ip=%s reply=\"%s\"", c->host,
			          c->info.ip, log_safe(safe, sizeof(safe), rep.text, sizeof(safe)));
		}
		switch (c->st) {
		case SMTPC_S_QUIT:
			c->dead = true;
			break;
		case SMTPC_S_IDLE:
		case SMTPC_S_TXCHECK:
			/* unsolicited (421 before an idle close): the connection is over */
			smtpc_conn_close(c);
			break;
		case SMTPC_S_GREETING:
		case SMTPC_S_EHLO:
		case SMTPC_S_HELO:
		case SMTPC_S_STARTTLS:
		case SMTPC_S_AUTH:
		case SMTPC_S_AUTH_USER:
		case SMTPC_S_AUTH_PASS:
			open_reply(c, &rep);
			break;
		default:
			smtpc_tx_reply(c, &rep);
			break;
		}
	}
	leave(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct smtpc *c = arg;
	enter(c);
	if (c->bev == bev && c->st == SMTPC_S_BODY)
		smtpc_body_fill(c);
	leave(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct smtpc *c = arg;
	int err = EVUTIL_SOCKET_ERROR();
	enter(c);
	if (c->dead || c->bev != bev)
		goto out;
	if (what & BEV_EVENT_CONNECTED) {
		if (c->st == SMTPC_S_CONNECTING) {
			smtpc_timer_stop(c);
			if (c->mode == SMTPC_IMPLICIT)
				smtpc_tls_start(c);
			else
				smtpc_greeting_wait(c);
		} else if (c->st == SMTPC_S_HANDSHAKE) {
			smtpc_tls_done(c);
		}
		goto out;
	}
	if (c->st == SMTPC_S_CONNECTING) {
		struct smtpc_result r;
		smtpc_res_reason(&r, SMTPC_ST_CONNECT, "4.4.1", false, "connect to %s[%s]:%d: %s",
		                 c->host, c->info.ip, c->info.port,
		                 strerror(err ? err : ECONNREFUSED));
		smtpc_open_fail(c, &r);
		goto out;
	}
	if (c->st == SMTPC_S_HANDSHAKE) {
		smtpc_tls_failed(c, bev, what, err);
		goto out;
	}
	conn_broken(c, (what & BEV_EVENT_TIMEOUT) != 0, NULL);
out:
	leave(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct smtpc *c = arg;
	enter(c);
	if (c->st == SMTPC_S_CONNECTING) {
		struct smtpc_result r;
		smtpc_res_reason(&r, SMTPC_ST_CONNECT, "4.4.1", false, "connect to %s[%s]:%d: %s",
		                 c->host, c->info.ip, c->info.port, strerror(ETIMEDOUT));
		smtpc_open_fail(c, &r);
	} else if (c->st == SMTPC_S_HANDSHAKE) {
		smtpc_tls_failed(c, c->bev, BEV_EVENT_TIMEOUT, 0);
	} else {
		conn_broken(c, true, NULL);
	}
	leave(c);
}

/* Callbacks that must not run inside the API call that caused them. */
static void on_defer(evutil_socket_t fd, short what, void *arg)
{
	struct smtpc *c = arg;
	enter(c);
	if (c->open_cb && c->st == SMTPC_S_CLOSED) {
		struct smtpc_result r = c->open_res;
		smtpc_open_fail(c, &r);
	} else if (c->tx && c->st == SMTPC_S_TXCHECK) {
		smtpc_tx_finish(c);
	} else if (c->tx && c->st == SMTPC_S_CLOSED) {
		/* the connection went away while the check's callback was pending */
		smtpc_tx_finish(c);
	}
	leave(c);
}

/* ---- API ---- */

static bool host_ip_literal(const char *host, char *ip, size_t ipsz)
{
	char tmp[128];
	size_t n = strlen(host);
	const char *s = host;
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		s = host + 1;
		n -= 2;
		if (n > 5 && strncasecmp(s, "IPv6:", 5) == 0) {
			s += 5;
			n -= 5;
		}
	}
	if (n >= sizeof(tmp))
		return false;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	unsigned char b[16];
	if (inet_pton(AF_INET, tmp, b) != 1 && inet_pton(AF_INET6, tmp, b) != 1)
		return false;
	snprintf(ip, ipsz, "%s", tmp);
	return true;
}

static void open_fail_later(struct smtpc *c, const struct smtpc_result *r)
{
	c->open_res = *r;
	smtpc_conn_close(c);
	event_active(c->defer, 0, 0);
}

struct smtpc *smtpc_open(struct event_base *base, const struct smtpc_params *p, smtpc_open_cb cb,
                         void *arg)
{
	if (!base || !p || !cb || !p->host || !smtpc_addr_ok(p->host, false) ||
	    strlen(p->host) > LIM_DOMAIN || strchr(p->host, ' ') || p->port <= 0 || p->port > 65535)
		return NULL;
	if (p->addr.ss_family != AF_INET && p->addr.ss_family != AF_INET6)
		return NULL;
	if (p->level != TLS_LEVEL_NONE && !p->ctx)
		return NULL;
	if (p->mode == SMTPC_IMPLICIT && p->level == TLS_LEVEL_NONE)
		return NULL;
	if (p->auth_user && (!p->auth_pass || strlen(p->auth_user) > LIM_SMTPC_AUTH ||
	                     strlen(p->auth_pass) > LIM_SMTPC_AUTH || !*p->auth_user))
		return NULL;
	if (p->source && p->source->ss_family != p->addr.ss_family)
		return NULL;
	const char *helo = p->helo && *p->helo ? p->helo : "localhost";
	if (strlen(helo) > LIM_DOMAIN || !smtpc_addr_ok(helo, false) || strchr(helo, ' '))
		return NULL;

	struct smtpc *c = xcalloc(1, sizeof(*c));
	c->base = base;
	c->fd = -1;
	c->host = xstrdup(p->host);
	/* "mx.example.com." names the same host; SNI and the name check want it without */
	size_t hl = strlen(c->host);
	if (hl > 1 && c->host[hl - 1] == '.')
		c->host[hl - 1] = '\0';
	c->domain = xstrdup(p->domain ? p->domain : "");
	c->helo = xstrdup(helo);
	c->auth_user = p->auth_user ? xstrdup(p->auth_user) : NULL;
	c->auth_pass = p->auth_user ? xstrdup(p->auth_pass) : NULL;
	c->level = p->level;
	c->mode = p->mode;
	c->ctx = p->ctx;
	c->host_is_ip = host_ip_literal(c->host, c->host_ip, sizeof(c->host_ip));
	c->tmo = evtimer_new(base, on_timer, c);
	c->defer = event_new(base, -1, 0, on_defer, c);
	if (!c->tmo || !c->defer)
		fatal("smtpc: event_new failed");
	c->st = SMTPC_S_CONNECTING;
	c->info.port = p->port;

	struct sockaddr_storage sa = p->addr;
	socklen_t salen;
	if (sa.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&sa;
		s4->sin_port = htons((uint16_t)p->port);
		inet_ntop(AF_INET, &s4->sin_addr, c->info.ip, sizeof(c->info.ip));
		salen = sizeof(*s4);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&sa;
		s6->sin6_port = htons((uint16_t)p->port);
		inet_ntop(AF_INET6, &s6->sin6_addr, c->info.ip, sizeof(c->info.ip));
		salen = sizeof(*s6);
	}

	struct smtpc_result r;
	c->fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		smtpc_res_reason(&r, SMTPC_ST_CONNECT, "4.4.1", false,
		                 "connect to %s[%s]:%d: socket: %s", c->host, c->info.ip, p->port,
		                 strerror(errno));
		open_fail_later(c, &r);
		goto started;
	}
	if (p->source) {
		socklen_t sl = p->source->ss_family == AF_INET ? sizeof(struct sockaddr_in)
		                                               : sizeof(struct sockaddr_in6);
		if (bind(c->fd, (const struct sockaddr *)p->source, sl) != 0) {
			char src[64] = "?";
			if (p->source->ss_family == AF_INET)
				inet_ntop(AF_INET,
				          &((const struct sockaddr_in *)p->source)->sin_addr, src,
				          sizeof(src));
			else
				inet_ntop(AF_INET6,
				          &((const struct sockaddr_in6 *)p->source)->sin6_addr, src,
				          sizeof(src));
			smtpc_res_reason(&r, SMTPC_ST_CONNECT, "4.4.1", false,
			                 "connect to %s[%s]:%d: bind to %s: %s", c->host,
			                 c->info.ip, p->port, src, strerror(errno));
			open_fail_later(c, &r);
			goto started;
		}
	}
	if (connect(c->fd, (struct sockaddr *)&sa, salen) != 0 && errno != EINPROGRESS) {
		smtpc_res_reason(&r, SMTPC_ST_CONNECT, "4.4.1", false, "connect to %s[%s]:%d: %s",
		                 c->host, c->info.ip, p->port, strerror(errno));
		open_fail_later(c, &r);
		goto started;
	}
	/* the plaintext bufferevent does not own the socket: STARTTLS replaces it */
	c->bev = bufferevent_socket_new(base, c->fd, 0);
	if (!c->bev)
		fatal("smtpc: bufferevent_socket_new failed");
	c->bev_owns_fd = false;
	smtpc_setcb(c);
	/* with a NULL address libevent waits for the connect already under way */
	if (bufferevent_socket_connect(c->bev, NULL, 0) != 0) {
		smtpc_res_reason(&r, SMTPC_ST_CONNECT, "4.4.1", false, "connect to %s[%s]:%d: %s",
		                 c->host, c->info.ip, p->port, strerror(errno));
		open_fail_later(c, &r);
		goto started;
	}
	smtpc_timer_arm(c, p->connect_timeout > 0 ? p->connect_timeout : 30);
started:
	c->open_cb = cb;
	c->open_arg = arg;
	return c;
}

const struct smtpc_info *smtpc_info(const struct smtpc *c)
{
	return &c->info;
}

bool smtpc_usable(const struct smtpc *c)
{
	return c && !c->dead && c->bev && c->st == SMTPC_S_IDLE && !c->tx;
}

void smtpc_quit(struct smtpc *c)
{
	if (!c)
		return;
	if (c->st != SMTPC_S_IDLE || !c->bev || c->tx) {
		smtpc_free(c);
		return;
	}
	c->open_cb = NULL;
	smtpc_cmd_send(c, false, "QUIT");
	c->st = SMTPC_S_QUIT;
	smtpc_timer_arm(c, SMTPC_T_QUIT);
}

void smtpc_free(struct smtpc *c)
{
	if (!c)
		return;
	c->open_cb = NULL;
	c->tx = NULL;
	c->tx_cb = NULL;
	if (c->busy) {
		/* inside one of our callbacks: close now, free on the way out (leave) */
		smtpc_conn_close(c);
		c->dead = true;
		return;
	}
	smtpc_destroy(c);
}
