/* The queue process's side of `sealmail queue` (protocol in admin.h): lists messages from the
 * spool and the scheduler, shows one message with its recorded attempts, and retries, holds,
 * releases or deletes messages. Runs in the queue process. Untrusted input: the request
 * (from a local client that could open the 0600 socket; still checked field by field). */
#include "queue/admin.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>

#include <event2/buffer.h>

#include "net/ipc.h"
#include "queue/queue_int.h"
#include "util/log.h"

/* Reply lines are gathered here and sent in frames of at most LIM_IPC_FRAME bytes. */
struct reply {
	struct bufferevent *bev;
	uint32_t id;
	struct evbuffer *buf;
};

static void flush(struct reply *rp, bool all)
{
	char chunk[LIM_IPC_FRAME];
	while (evbuffer_get_length(rp->buf) >= (all ? 1 : sizeof(chunk))) {
		int n = evbuffer_remove(rp->buf, chunk, sizeof(chunk));
		if (n <= 0)
			break;
		ipc_send(rp->bev, IPC_QUEUE_DATA, rp->id, chunk, (size_t)n);
	}
}

static void field(struct reply *rp, const char *s)
{
	evbuffer_add(rp->buf, "\t", 1);
	for (; *s; s++) {
		const char *esc = *s == '\\' ? "\\\\" : *s == '\t' ? "\\t" : *s == '\n' ? "\\n"
							 : *s == '\r' ? "\\r" : NULL;
		if (esc)
			evbuffer_add(rp->buf, esc, 2);
		else
			evbuffer_add(rp->buf, s, 1);
	}
}

static void fieldf(struct reply *rp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fieldf(struct reply *rp, const char *fmt, ...)
{
	char b[64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	field(rp, b);
}

static void endline(struct reply *rp)
{
	evbuffer_add(rp->buf, "\n", 1);
	flush(rp, false);
}

static void end(struct reply *rp, int code, const char *msg)
{
	flush(rp, true);
	char b[600];
	int n = snprintf(b, sizeof(b), "%d", code);
	n++;
	n += snprintf(b + n, sizeof(b) - (size_t)n, "%s", msg ? msg : "");
	ipc_send(rp->bev, IPC_QUEUE_END, rp->id, b, (size_t)n);
}

/* The M line (and with rcpts the R lines) of one queued message. false when it is gone. */
static bool put_msg(struct queue *q, struct reply *rp, const char *qid, bool rcpts)
{
	struct spool_env env;
	uint64_t off, len;
	if (spool_read(q->spool, qid, &env, &off, &len) != 0)
		return false;
	bool *done = xcalloc((size_t)env.nrcpts, sizeof(bool));
	spool_load_done(q->spool, qid, done, env.nrcpts);
	int pending = 0;
	for (int i = 0; i < env.nrcpts; i++)
		pending += !done[i];
	struct qmsg *m = qmsg_get(q, qid);
	evbuffer_add(rp->buf, "M", 1);
	field(rp, qid);
	fieldf(rp, "%lld", (long long)env.arrival);
	fieldf(rp, "%llu", (unsigned long long)len);
	field(rp, env.from);
	fieldf(rp, "%d", env.nrcpts);
	fieldf(rp, "%d", pending);
	field(rp, m->active ? "active" : m->st.held ? "held" : "waiting");
	fieldf(rp, "%d", m->st.attempts);
	fieldf(rp, "%lld", (long long)m->st.next_try);
	field(rp, m->st.last_reason);
	endline(rp);
	for (int i = 0; rcpts && i < env.nrcpts; i++) {
		evbuffer_add(rp->buf, "R", 1);
		field(rp, qid);
		fieldf(rp, "%d", i);
		field(rp, env.rcpts[i].addr);
		field(rp, done[i] ? "done" : "pending");
		endline(rp);
	}
	free(done);
	spool_env_free(&env);
	return true;
}

static void put_attempt(void *arg, const struct attempt *a)
{
	struct reply *rp = arg;
	evbuffer_add(rp->buf, "A", 1);
	field(rp, a->qid);
	fieldf(rp, "%d", a->rcpt);
	field(rp, a->rcpt_addr);
	fieldf(rp, "%.3f", a->time);
	field(rp, a->status);
	field(rp, a->mx);
	field(rp, a->ip);
	fieldf(rp, "%d", a->port);
	fieldf(rp, "%d", a->code);
	field(rp, a->enh);
	field(rp, a->reply);
	field(rp, a->reason);
	field(rp, a->stage);
	field(rp, a->tls_policy);
	field(rp, a->policy_source);
	field(rp, a->tls_version);
	field(rp, a->tls_cipher);
	field(rp, a->cert);
	field(rp, a->cert_error);
	field(rp, a->dnssec);
	field(rp, a->fallback ? "1" : "0");
	fieldf(rp, "%d", a->attempt_no);
	fieldf(rp, "%.3f", a->delay);
	endline(rp);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Queue ids in queue/, oldest first. *n set; the caller frees each and the array. */
static char **queued_ids(struct queue *q, int *n)
{
	char **ids = NULL;
	int cap = 0;
	*n = 0;
	DIR *d = opendir(spool_queue_dir(q->spool));
	if (!d)
		return NULL;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!spool_qid_valid(de->d_name))
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			ids = realloc(ids, (size_t)cap * sizeof(*ids));
			if (!ids)
				fatal("out of memory");
		}
		ids[(*n)++] = xstrdup(de->d_name);
	}
	closedir(d);
	if (*n > 1)
		qsort(ids, (size_t)*n, sizeof(*ids), cmp_str);
	return ids;
}

static void act(struct queue *q, struct reply *rp, const char *cmd, const char *qid)
{
	struct qmsg *m = qmsg_get(q, qid);
	const char *what = cmd;
	if (strcmp(cmd, "retry") == 0) {
		m->st.next_try = 0;
		what = m->st.held ? "skipped (held: release it first)" : "retry";
	} else if (strcmp(cmd, "hold") == 0) {
		m->st.held = true;
		what = "held";
	} else if (strcmp(cmd, "release") == 0) {
		m->st.held = false;
		m->st.next_try = 0;
		what = "released";
	} else if (strcmp(cmd, "delete") == 0) {
		log_info("event=admin action=delete qid=%s", qid);
		evbuffer_add(rp->buf, "C", 1);
		field(rp, qid);
		field(rp, m->active ? "deleted (after the delivery in progress)" : "deleted");
		endline(rp);
		if (m->active)
			m->deleted = true;
		else
			q_remove(q, qid, "deleted");
		return;
	}
	if (q->rec && records_state_put(q->rec, qid, &m->st) != 0)
		log_err("event=records_error qid=%s op=state_put", qid);
	log_info("event=admin action=%s qid=%s", cmd, qid);
	evbuffer_add(rp->buf, "C", 1);
	field(rp, qid);
	field(rp, what);
	endline(rp);
	if (!m->st.held && !m->active)
		q_push(q, qid);
}

void admin_handle(struct queue *q, struct bufferevent *bev, uint32_t id, const char *payload,
		  size_t len)
{
	struct reply rp = {.bev = bev, .id = id, .buf = evbuffer_new()};
	/* "command\0argument"; ipc_read ends the payload with a NUL of its own */
	const char *cmd = payload;
	size_t cl = strnlen(payload, len);
	const char *arg = cl + 1 < len ? payload + cl + 1 : "";
	bool all = strcmp(arg, "ALL") == 0;
	if (strcmp(cmd, "list") == 0) {
		int n;
		char **ids = queued_ids(q, &n);
		for (int i = 0; i < n; i++) {
			put_msg(q, &rp, ids[i], false);
			free(ids[i]);
		}
		free(ids);
		end(&rp, 0, "");
	} else if (strcmp(cmd, "show") == 0) {
		char msg[64];
		if (!spool_qid_valid(arg) || !put_msg(q, &rp, arg, true)) {
			snprintf(msg, sizeof(msg), "no such message: %.20s", arg);
			end(&rp, EX_NOUSER, msg);
		} else {
			if (q->rec)
				records_history(q->rec, arg, put_attempt, &rp);
			end(&rp, 0, "");
		}
	} else if (strcmp(cmd, "retry") == 0 || strcmp(cmd, "hold") == 0 ||
		   strcmp(cmd, "release") == 0 || strcmp(cmd, "delete") == 0) {
		if (all) {
			int n;
			char **ids = queued_ids(q, &n);
			for (int i = 0; i < n; i++) {
				act(q, &rp, cmd, ids[i]);
				free(ids[i]);
			}
			free(ids);
			end(&rp, 0, "");
		} else {
			char path[PATH_MAX];
			struct stat stt;
			snprintf(path, sizeof(path), "%s/%s", spool_queue_dir(q->spool), arg);
			if (!spool_qid_valid(arg) || stat(path, &stt) != 0) {
				char msg[64];
				snprintf(msg, sizeof(msg), "no such message: %.20s", arg);
				end(&rp, EX_NOUSER, msg);
			} else {
				act(q, &rp, cmd, arg);
				end(&rp, 0, "");
			}
		}
	} else {
		end(&rp, EX_USAGE, "unknown command");
	}
	evbuffer_free(rp.buf);
}
