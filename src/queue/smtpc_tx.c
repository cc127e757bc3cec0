/* Transactions of the outbound SMTP client (smtpc.h): the pre-checks, MAIL/RCPT with their
 * SIZE, BODY, SMTPUTF8 and DSN parameters, PIPELINING groups (RFC 2920), DATA with the body
 * streamed from the spool and dot-stuffed, BDAT for BINARYMIME, RSET after a failure, and the
 * outcome of every recipient. Runs in the queue process. Untrusted input: the server's
 * replies (already bounded and sanitised by smtpc.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "queue/smtpc_int.h"
#include "smtp/parse.h"
#include "util/log.h"

static bool rcpt_accepted(const struct smtpc_rcpt *r)
{
	return r->res.stage == SMTPC_ST_RCPT && r->res.code / 100 == 2;
}

static int accepted_count(const struct smtpc_tx *tx)
{
	int n = 0;
	for (int i = 0; i < tx->nrcpts; i++)
		n += rcpt_accepted(&tx->rcpts[i]);
	return n;
}

/* The transaction failed with r: recipients without a refusal of their own get r. */
static void tx_fail_all(struct smtpc *c, const struct smtpc_result *r)
{
	struct smtpc_tx *tx = c->tx;
	tx->res = *r;
	for (int i = 0; i < tx->nrcpts; i++) {
		struct smtpc_rcpt *rc = &tx->rcpts[i];
		if (c->mail_failed || rc->res.code == 0 || rcpt_accepted(rc))
			rc->res = *r;
		rc->ok = false;
	}
}

/* No recipient was accepted: the transaction's outcome is a refusal, temporary when any one
 * was (the message will be tried again for it). */
static void tx_fail_rcpts(struct smtpc *c)
{
	struct smtpc_tx *tx = c->tx;
	int pick = 0;
	for (int i = 0; i < tx->nrcpts; i++) {
		if (!tx->rcpts[i].res.permanent) {
			pick = i;
			break;
		}
	}
	tx->res = tx->rcpts[pick].res;
}

void smtpc_tx_finish(struct smtpc *c)
{
	struct smtpc_tx *tx = c->tx;
	smtpc_tx_cb cb = c->tx_cb;
	void *arg = c->tx_arg;
	char safe[200];
	c->tx = NULL;
	c->tx_cb = NULL;
	free(c->ibuf);
	free(c->obuf);
	c->ibuf = c->obuf = NULL;
	if (c->st != SMTPC_S_CLOSED) {
		c->st = SMTPC_S_IDLE;
		smtpc_timer_stop(c);
		bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	}
	log_debug("event=smtpc_tx host=%s ip=%s stage=\"%s\" code=%d enh=%s accepted=%d/%d "
	          "detail=\"%s\"",
	          c->host, c->info.ip, smtpc_stage_name(tx->res.stage), tx->res.code, tx->res.enh,
	          accepted_count(tx), tx->nrcpts,
	          log_safe(safe, sizeof(safe), tx->res.code ? tx->res.reply : tx->res.reason,
	                   sizeof(safe)));
	cb(c, arg, tx);
}

/* Ends a failed transaction: RSET (RFC 5321 4.1.1.5) and its reply, then the callback. */
static void tx_end_rset(struct smtpc *c)
{
	smtpc_cmd_send(c, false, "RSET");
	c->st = SMTPC_S_RSET;
	smtpc_timer_arm(c, SMTPC_T_OTHER);
}

/* Connection lost, timed out or broken while a transaction ran. */
void smtpc_tx_abort(struct smtpc *c, const struct smtpc_result *r)
{
	tx_fail_all(c, r);
	smtpc_conn_close(c);
	smtpc_tx_finish(c);
}

/* xtext (RFC 3461 4) as the caller encoded it: printable ASCII without SP; bounded. */
static bool xtext_ok(const char *s, size_t max)
{
	if (!s)
		return true;
	if (strlen(s) > max)
		return false;
	for (; *s; s++)
		if (*s <= 0x20 || *s >= 0x7f)
			return false;
	return true;
}

static int tx_check(struct smtpc *c, const struct smtpc_tx *tx, struct smtpc_result *r)
{
	bool ok = smtpc_addr_ok(tx->from, true) && xtext_ok(tx->envid, LIM_ENVID);
	for (int i = 0; ok && i < tx->nrcpts; i++)
		ok = smtpc_addr_ok(tx->rcpts[i].addr, false) &&
		     xtext_ok(tx->rcpts[i].orcpt, LIM_ORCPT + 7);
	if (!ok) {
		smtpc_res_reason(r, SMTPC_ST_MAIL, "5.5.4", true,
		                 "invalid envelope address or parameter");
		return -1;
	}
	if (c->info.size && c->info.max_size && tx->len > c->info.max_size) {
		smtpc_res_reason(r, SMTPC_ST_MAIL, "5.3.4", true,
		                 "message size %llu exceeds size limit %llu of server %s[%s]",
		                 (unsigned long long)tx->len, (unsigned long long)c->info.max_size,
		                 c->host, c->info.ip);
		return -1;
	}
	if (tx->smtputf8 && !c->info.smtputf8) {
		smtpc_res_reason(r, SMTPC_ST_MAIL, "5.6.7", true,
		                 "SMTPUTF8 is required, but was not offered by host %s[%s]",
		                 c->host, c->info.ip);
		return -1;
	}
	if (tx->body_type == SMTP_BODY_BINARYMIME && !(c->info.chunking && c->info.binarymime)) {
		smtpc_res_reason(r, SMTPC_ST_MAIL, "5.6.3", true,
		                 "BINARYMIME is required, but was not offered by host %s[%s]",
		                 c->host, c->info.ip);
		return -1;
	}
	return 0;
}

static void mail_send(struct smtpc *c)
{
	struct smtpc_tx *tx = c->tx;
	char buf[LIM_CMD_LINE_EXT];
	size_t n = 0;
	bool ok = smtpc_buf_add(buf, sizeof(buf), &n, "MAIL FROM:<%s>", tx->from);
	/* RFC 1870 6 */
	if (c->info.size)
		ok = ok &&
		     smtpc_buf_add(buf, sizeof(buf), &n, " SIZE=%llu", (unsigned long long)tx->len);
	/* RFC 6152 2 / RFC 3030 3: declared only when offered; an 8-bit body goes as is to a
	 * server without 8BITMIME, as Postfix does */
	if (tx->body_type == SMTP_BODY_8BITMIME && c->info.eightbitmime)
		ok = ok && smtpc_buf_add(buf, sizeof(buf), &n, " BODY=8BITMIME");
	else if (tx->body_type == SMTP_BODY_BINARYMIME)
		ok = ok && smtpc_buf_add(buf, sizeof(buf), &n, " BODY=BINARYMIME");
	if (tx->smtputf8)
		ok = ok && smtpc_buf_add(buf, sizeof(buf), &n, " SMTPUTF8");
	if (c->info.dsn) {
		/* RFC 3461 4.3, 4.4 */
		if (tx->ret == SMTP_RET_FULL || tx->ret == SMTP_RET_HDRS) {
			ok = ok && smtpc_buf_add(buf, sizeof(buf), &n, " RET=%s",
			                         tx->ret == SMTP_RET_FULL ? "FULL" : "HDRS");
			tx->dsn_passed = true;
		}
		if (tx->envid && *tx->envid) {
			ok = ok && smtpc_buf_add(buf, sizeof(buf), &n, " ENVID=%s", tx->envid);
			tx->dsn_passed = true;
		}
	}
	if (!ok)
		fatal("smtpc: MAIL line does not fit"); /* tx_check bounds every part */
	smtpc_cmd_send(c, false, "%s", buf);
}

static void rcpt_send(struct smtpc *c, int i)
{
	struct smtpc_tx *tx = c->tx;
	const struct smtpc_rcpt *r = &tx->rcpts[i];
	char buf[LIM_CMD_LINE_EXT];
	size_t n = 0;
	bool ok = smtpc_buf_add(buf, sizeof(buf), &n, "RCPT TO:<%s>", r->addr);
	if (c->info.dsn) {
		/* RFC 3461 4.1: NEVER alone, or any of SUCCESS, FAILURE, DELAY */
		if (r->notify & SMTP_NOTIFY_NEVER) {
			ok = ok && smtpc_buf_add(buf, sizeof(buf), &n, " NOTIFY=NEVER");
		} else if (r->notify) {
			const char *sep = " NOTIFY=";
			static const struct {
				unsigned bit;
				const char *name;
			} bits[] = {{SMTP_NOTIFY_SUCCESS, "SUCCESS"},
			            {SMTP_NOTIFY_FAILURE, "FAILURE"},
			            {SMTP_NOTIFY_DELAY, "DELAY"}};
			for (size_t k = 0; k < sizeof(bits) / sizeof(bits[0]); k++) {
				if (r->notify & bits[k].bit) {
					ok = ok && smtpc_buf_add(buf, sizeof(buf), &n, "%s%s", sep,
					                         bits[k].name);
					sep = ",";
				}
			}
		}
		if (r->notify)
			tx->dsn_passed = true;
		if (r->orcpt && *r->orcpt) {
			ok = ok && smtpc_buf_add(buf, sizeof(buf), &n, " ORCPT=%s", r->orcpt);
			tx->dsn_passed = true;
		}
	}
	if (!ok)
		fatal("smtpc: RCPT line does not fit");
	smtpc_cmd_send(c, false, "%s", buf);
}

/* Stuffs one chunk of body into the output (RFC 5321 4.5.2: a line starting with "." gets
 * one more). A lone LF counts as a line end too, so nothing can hide a dot behind it. */
static void body_stuff(struct smtpc *c, const char *in, size_t n, struct evbuffer *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (c->bol && in[i] == '.')
			c->obuf[o++] = '.';
		c->obuf[o++] = in[i];
		c->bol = in[i] == '\n';
	}
	evbuffer_add(out, c->obuf, o);
}

/* Fills the output up to LIM_SMTPC_OUT_HIGH from the spool; at the end adds the final CRLF
 * when missing and "." CRLF (DATA) and waits for the reply. */
void smtpc_body_fill(struct smtpc *c)
{
	struct smtpc_tx *tx = c->tx;
	struct smtpc_result r;
	if (c->filling || c->st != SMTPC_S_BODY)
		return;
	c->filling = true;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	while (c->body_pos < tx->len && evbuffer_get_length(out) < LIM_SMTPC_OUT_HIGH) {
		uint64_t left = tx->len - c->body_pos;
		size_t want = left < LIM_SMTPC_CHUNK ? (size_t)left : LIM_SMTPC_CHUNK;
		ssize_t got = pread(tx->fd, c->ibuf, want, (off_t)(tx->off + c->body_pos));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			/* the server must not get a truncated message: close without the dot */
			smtpc_res_reason(&r, SMTPC_ST_DATA, "4.3.0", false,
			                 "cannot read the message: %s",
			                 got < 0 ? strerror(errno) : "unexpected end of file");
			c->filling = false;
			smtpc_tx_abort(c, &r);
			return;
		}
		if (c->bdat) {
			evbuffer_add(out, c->ibuf, (size_t)got);
		} else {
			body_stuff(c, c->ibuf, (size_t)got, out);
			if (got >= 2) {
				c->last2[0] = c->ibuf[got - 2];
				c->last2[1] = c->ibuf[got - 1];
			} else {
				c->last2[0] = c->last2[1];
				c->last2[1] = c->ibuf[0];
			}
		}
		c->body_pos += (uint64_t)got;
	}
	c->filling = false;
	if (c->body_pos < tx->len)
		return;
	if (!c->bdat) {
		/* RFC 5321 4.1.1.4: the body ends with CRLF, then "." CRLF */
		if (c->last2[0] != '\r' || c->last2[1] != '\n')
			evbuffer_add(out, "\r\n", 2);
		evbuffer_add(out, ".\r\n", 3);
	}
	c->st = SMTPC_S_DOT;
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	smtpc_timer_arm(c, SMTPC_T_DATA_END);
}

static void body_start(struct smtpc *c)
{
	c->st = SMTPC_S_BODY;
	c->body_pos = 0;
	c->bol = true;
	c->last2[0] = '\r';
	c->last2[1] = '\n';
	if (!c->ibuf)
		c->ibuf = xmalloc(LIM_SMTPC_CHUNK);
	if (!c->bdat && !c->obuf)
		c->obuf = xmalloc(2 * LIM_SMTPC_CHUNK);
	/* the write timeout of the bufferevent (SMTPC_T_DATA_BLOCK) bounds each write; the
	 * reply timer starts again after the last byte */
	smtpc_timer_stop(c);
	bufferevent_setwatermark(c->bev, EV_WRITE, LIM_SMTPC_OUT_LOW, 0);
	smtpc_body_fill(c);
}

/* After the last RCPT reply (or the MAIL failure when not pipelining): DATA or BDAT when a
 * recipient was taken, else RSET. */
static void rcpts_done(struct smtpc *c)
{
	struct smtpc_tx *tx = c->tx;
	if (c->mail_failed) {
		tx_end_rset(c);
		return;
	}
	if (accepted_count(tx) == 0) {
		tx_fail_rcpts(c);
		tx_end_rset(c);
		return;
	}
	if (c->bdat) {
		/* RFC 3030 2: one chunk, the whole message, no dot-stuffing */
		smtpc_cmd_send(c, false, "BDAT %llu LAST", (unsigned long long)tx->len);
		body_start(c);
		return;
	}
	smtpc_cmd_send(c, false, "DATA");
	c->st = SMTPC_S_DATA;
	smtpc_timer_arm(c, SMTPC_T_DATA_INIT);
}

void smtpc_tx_reply(struct smtpc *c, const struct smtpc_reply *rep)
{
	struct smtpc_tx *tx = c->tx;
	struct smtpc_result r;
	int cls = rep->code / 100;
	switch (c->st) {
	case SMTPC_S_MAIL:
		if (cls != 2) {
			c->mail_failed = true;
			smtpc_res_reply(&r, SMTPC_ST_MAIL, rep);
			tx_fail_all(c, &r);
			if (!c->pipelined) {
				tx_end_rset(c);
				return;
			}
		}
		c->st = SMTPC_S_RCPT;
		c->rcpt_i = 0;
		if (!c->pipelined)
			rcpt_send(c, 0);
		smtpc_timer_arm(c, SMTPC_T_RCPT);
		return;
	case SMTPC_S_RCPT:
		/* RFC 2920 3.1: replies come in the order of the commands */
		if (!c->mail_failed)
			smtpc_res_reply(&tx->rcpts[c->rcpt_i].res, SMTPC_ST_RCPT, rep);
		if (++c->rcpt_i < tx->nrcpts) {
			if (!c->pipelined)
				rcpt_send(c, c->rcpt_i);
			smtpc_timer_arm(c, SMTPC_T_RCPT);
			return;
		}
		if (c->pipelined && !c->bdat) {
			/* DATA went with the group */
			c->st = SMTPC_S_DATA;
			smtpc_timer_arm(c, SMTPC_T_DATA_INIT);
			return;
		}
		rcpts_done(c);
		return;
	case SMTPC_S_DATA:
		if (c->mail_failed || accepted_count(tx) == 0) {
			if (!c->mail_failed)
				tx_fail_rcpts(c);
			if (rep->code == 354) {
				/* RFC 2920 3.1: a pipelined DATA may be taken with nobody to
				 * deliver to; an empty message ends it */
				evbuffer_add(bufferevent_get_output(c->bev), ".\r\n", 3);
				c->st = SMTPC_S_DOT_DISCARD;
				smtpc_timer_arm(c, SMTPC_T_DATA_END);
			} else {
				tx_end_rset(c);
			}
			return;
		}
		if (rep->code != 354) {
			smtpc_res_reply(&r, SMTPC_ST_DATA, rep);
			tx_fail_all(c, &r);
			tx_end_rset(c);
			return;
		}
		body_start(c);
		return;
	case SMTPC_S_BODY:
		/* a reply before the end of the body: the server gave up on it */
		smtpc_res_reply(&r, SMTPC_ST_DOT, rep);
		smtpc_tx_abort(c, &r);
		return;
	case SMTPC_S_DOT:
		smtpc_res_reply(&r, SMTPC_ST_DOT, rep);
		if (cls == 2) {
			tx->res = r;
			for (int i = 0; i < tx->nrcpts; i++)
				tx->rcpts[i].ok = rcpt_accepted(&tx->rcpts[i]);
		} else {
			tx_fail_all(c, &r);
		}
		smtpc_tx_finish(c);
		return;
	case SMTPC_S_DOT_DISCARD:
		smtpc_tx_finish(c);
		return;
	case SMTPC_S_RSET:
		if (cls != 2)
			smtpc_conn_close(c);
		smtpc_tx_finish(c);
		return;
	default:
		return;
	}
}

int smtpc_send(struct smtpc *c, struct smtpc_tx *tx, smtpc_tx_cb cb, void *arg)
{
	if (!smtpc_usable(c) || !tx || !cb || !tx->rcpts || tx->nrcpts < 1 || !tx->from)
		return -1;
	memset(&tx->res, 0, sizeof(tx->res));
	tx->dsn_passed = false;
	for (int i = 0; i < tx->nrcpts; i++) {
		memset(&tx->rcpts[i].res, 0, sizeof(tx->rcpts[i].res));
		tx->rcpts[i].ok = false;
	}
	c->tx = tx;
	c->tx_cb = cb;
	c->tx_arg = arg;
	c->mail_failed = false;
	c->rcpt_i = 0;
	c->pipelined = c->info.pipelining;
	c->bdat = tx->body_type == SMTP_BODY_BINARYMIME;

	struct smtpc_result r;
	if (tx_check(c, tx, &r) != 0) {
		/* nothing was sent; the callback comes from the loop, never from in here */
		tx_fail_all(c, &r);
		c->st = SMTPC_S_TXCHECK;
		event_active(c->defer, 0, 0);
		return 0;
	}
	mail_send(c);
	if (c->pipelined) {
		/* RFC 2920 3.1: MAIL, every RCPT and DATA in one group (BDAT waits: its body
		 * must not go before the RCPT replies) */
		for (int i = 0; i < tx->nrcpts; i++)
			rcpt_send(c, i);
		if (!c->bdat)
			smtpc_cmd_send(c, false, "DATA");
	}
	c->st = SMTPC_S_MAIL;
	smtpc_timer_arm(c, SMTPC_T_MAIL);
	return 0;
}
