/* Delivery records and schedule state in <data_dir>/queue.db (see records.h): the schema,
 * its version, and one prepared statement per operation, kept for the life of the handle
 * so an insert (one per recipient per attempt) is a bind and a step. Runs in the queue
 * process. Untrusted input: remote replies and certificate errors inside struct attempt;
 * they reach SQL only as bound parameters. */
#include "queue/records.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "store/sqlite_util.h"

#include "util/log.h"

#define RECORDS_SCHEMA_VERSION 1

/* Version 0 -> 1. The row id orders attempts made within the same millisecond. */
static const char schema_v1[] = "CREATE TABLE IF NOT EXISTS attempts ("
                                " id INTEGER PRIMARY KEY,"
                                " qid TEXT NOT NULL,"
                                " rcpt INTEGER NOT NULL,"
                                " rcpt_addr TEXT NOT NULL,"
                                " time REAL NOT NULL,"
                                " status TEXT NOT NULL,"
                                " mx TEXT NOT NULL,"
                                " ip TEXT NOT NULL,"
                                " port INTEGER NOT NULL,"
                                " code INTEGER NOT NULL,"
                                " enh TEXT NOT NULL,"
                                " reply TEXT NOT NULL,"
                                " reason TEXT NOT NULL,"
                                " stage TEXT NOT NULL,"
                                " tls_policy TEXT NOT NULL,"
                                " policy_source TEXT NOT NULL,"
                                " tls_version TEXT NOT NULL,"
                                " tls_cipher TEXT NOT NULL,"
                                " cert TEXT NOT NULL,"
                                " cert_error TEXT NOT NULL,"
                                " dnssec TEXT NOT NULL,"
                                " fallback INTEGER NOT NULL,"
                                " attempt_no INTEGER NOT NULL,"
                                " delay REAL NOT NULL);"
                                /* history reads by qid in time order; prune deletes by time */
                                "CREATE INDEX IF NOT EXISTS attempts_qid ON attempts(qid, time);"
                                "CREATE INDEX IF NOT EXISTS attempts_time ON attempts(time);"
                                "CREATE TABLE IF NOT EXISTS msgstate ("
                                " qid TEXT PRIMARY KEY NOT NULL,"
                                " attempts INTEGER NOT NULL,"
                                " next_try INTEGER NOT NULL,"
                                " held INTEGER NOT NULL,"
                                " warned INTEGER NOT NULL,"
                                " last_reason TEXT NOT NULL) WITHOUT ROWID;";

enum rec_stmt { RS_ADD, RS_HISTORY, RS_STATE_GET, RS_STATE_PUT, RS_STATE_DEL, RS_PRUNE, RS__COUNT };

/* The column order of RS_ADD's parameters and RS_HISTORY's result is the field order of
 * struct attempt (and of the A line in admin.h). */
#define ATTEMPT_COLS                                                                               \
	"qid, rcpt, rcpt_addr, time, status, mx, ip, port, code, enh, reply, reason, stage,"       \
	" tls_policy, policy_source, tls_version, tls_cipher, cert, cert_error, dnssec,"           \
	" fallback, attempt_no, delay"

static const char *const stmt_sql[RS__COUNT] = {
    [RS_ADD] = "INSERT INTO attempts (" ATTEMPT_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,"
               " ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)",
    [RS_HISTORY] = "SELECT " ATTEMPT_COLS " FROM attempts WHERE qid = ?1 ORDER BY time, id",
    [RS_STATE_GET] = "SELECT attempts, next_try, held, warned, last_reason FROM msgstate"
                     " WHERE qid = ?1",
    [RS_STATE_PUT] = "INSERT OR REPLACE INTO msgstate"
                     " (qid, attempts, next_try, held, warned, last_reason)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [RS_STATE_DEL] = "DELETE FROM msgstate WHERE qid = ?1",
    [RS_PRUNE] = "DELETE FROM attempts WHERE time < ?1",
};

struct records {
	sqlite3 *db;
	sqlite3_stmt *stmt[RS__COUNT];
	bool in_history; /* records_history is stepping RS_HISTORY (re-entry guard) */
	struct event *flush_ev; /* records_batch: commits the open transaction */
	bool in_tx;
};

static void rec_db_error(struct records *r, const char *op);

/* With batching on, the first write of a loop iteration opens a transaction and the flush
 * event (run later in the same iteration) commits it: one WAL append and one lock round
 * for all the rows of a burst instead of one per row. */
static void rec_write(struct records *r)
{
	if (!r->flush_ev || r->in_tx)
		return;
	if (sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
		rec_db_error(r, "begin");
		return;
	}
	r->in_tx = true;
	event_active(r->flush_ev, EV_TIMEOUT, 0);
}

static void rec_commit(struct records *r)
{
	if (!r->in_tx)
		return;
	r->in_tx = false;
	if (sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		rec_db_error(r, "commit");
		sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
	}
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rec_commit(arg);
}

void records_batch(struct records *r, struct event_base *base)
{
	if (r && base && !r->flush_ev)
		r->flush_ev = event_new(base, -1, 0, flush_cb, r);
}

static void rec_db_error(struct records *r, const char *op)
{
	log_err("event=records_error op=%s err=\"%s\"", op, sqlite3_errmsg(r->db));
}

/* Every use of a prepared statement ends here, so the next use starts clean. */
static void stmt_done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

/* A fixed-size field of a struct: bound up to its NUL or its size, whichever comes first. */
static int bind_field(sqlite3_stmt *s, int idx, const char *v, size_t cap)
{
	return sqlite3_bind_text(s, idx, v, (int)strnlen(v, cap), SQLITE_STATIC);
}
#define BIND_FIELD(s, idx, arr) bind_field((s), (idx), (arr), sizeof(arr))

static void col_text(sqlite3_stmt *s, int col, char *out, size_t outsz)
{
	const unsigned char *t = sqlite3_column_text(s, col);
	int n = sqlite3_column_bytes(s, col);
	size_t len = t == NULL || n < 0 ? 0 : (size_t)n;
	if (len >= outsz)
		len = outsz - 1;
	if (len)
		memcpy(out, t, len);
	out[len] = '\0';
}
#define COL_TEXT(s, col, arr) col_text((s), (col), (arr), sizeof(arr))

/* ---- open, schema ---- */


/* Creates the schema inside one write transaction, so two processes opening a new database
 * at once create it once; refuses a database from a newer sealmail. */
static int rec_migrate(sqlite3 *db, char *err, size_t errsz)
{
	char v[32];
	char *end;
	int rc = sqlu_exec(db, "BEGIN IMMEDIATE", err, errsz);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlu_text(db, "PRAGMA user_version", v, sizeof(v), err, errsz);
	if (rc != SQLITE_OK)
		goto fail;
	long ver = strtol(v, &end, 10);
	if (*v == '\0' || *end != '\0' || ver < 0) {
		snprintf(err, errsz, "unreadable schema version \"%.20s\"", v);
		rc = SQLITE_CORRUPT;
		goto fail;
	}
	if (ver > RECORDS_SCHEMA_VERSION) {
		snprintf(err, errsz, "database schema version %ld is newer than this sealmail (%d)",
		         ver, RECORDS_SCHEMA_VERSION);
		rc = SQLITE_MISMATCH;
		goto fail;
	}
	if (ver < RECORDS_SCHEMA_VERSION) {
		char sql[64]; /* PRAGMA takes no parameters; the value is our own constant */
		rc = sqlu_exec(db, schema_v1, err, errsz);
		if (rc != SQLITE_OK)
			goto fail;
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", RECORDS_SCHEMA_VERSION);
		rc = sqlu_exec(db, sql, err, errsz);
		if (rc != SQLITE_OK)
			goto fail;
	}
	rc = sqlu_exec(db, "COMMIT", err, errsz);
	if (rc != SQLITE_OK)
		goto fail;
	return SQLITE_OK;
fail:
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

struct records *records_open(const char *data_dir, char *err, size_t errsz)
{
	char path[PATH_MAX];
	char dummy[8];
	char msg[256];
	struct records *r;
	int rc;

	if (err == NULL || errsz == 0) {
		err = dummy;
		errsz = sizeof(dummy);
	}
	err[0] = '\0';
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	/* The queue process runs an event loop: wait for a tool's reader briefly, not 5 s. */
	r->db = sqlu_open(data_dir, "queue.db", 1000, path, sizeof(path), err, errsz);
	if (!r->db) {
		records_close(r);
		return NULL;
	}
	/* NORMAL: in WAL mode a commit is not fsynced; a power cut may lose the last records,
	 * which costs an earlier retry, never mail (the spool is the truth). */
	if (sqlu_exec(r->db, "PRAGMA synchronous = NORMAL", err, errsz) != SQLITE_OK)
		goto fail;
	if (rec_migrate(r->db, err, errsz) != SQLITE_OK)
		goto fail;
	for (int i = 0; i < RS__COUNT; i++) {
		rc = sqlite3_prepare_v3(r->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
		                        &r->stmt[i], NULL);
		if (rc != SQLITE_OK) {
			snprintf(err, errsz, "%s", sqlite3_errmsg(r->db));
			goto fail;
		}
	}
	return r;

fail:
	/* prefix the file name so the admin knows which database */
	snprintf(msg, sizeof(msg), "%s", err);
	snprintf(err, errsz, "%s: %s", path, msg);
	records_close(r);
	return NULL;
}

void records_close(struct records *r)
{
	if (r == NULL)
		return;
	rec_commit(r);
	if (r->flush_ev)
		event_free(r->flush_ev);
	for (int i = 0; i < RS__COUNT; i++)
		sqlite3_finalize(r->stmt[i]);
	sqlite3_close(r->db);
	free(r);
}

/* ---- attempts ---- */

int records_add(struct records *r, const struct attempt *a)
{
	sqlite3_stmt *s = r->stmt[RS_ADD];
	int ret = -1;

	rec_write(r);

	if (BIND_FIELD(s, 1, a->qid) != SQLITE_OK || sqlite3_bind_int(s, 2, a->rcpt) != SQLITE_OK ||
	    BIND_FIELD(s, 3, a->rcpt_addr) != SQLITE_OK ||
	    sqlite3_bind_double(s, 4, a->time) != SQLITE_OK ||
	    BIND_FIELD(s, 5, a->status) != SQLITE_OK || BIND_FIELD(s, 6, a->mx) != SQLITE_OK ||
	    BIND_FIELD(s, 7, a->ip) != SQLITE_OK || sqlite3_bind_int(s, 8, a->port) != SQLITE_OK ||
	    sqlite3_bind_int(s, 9, a->code) != SQLITE_OK ||
	    BIND_FIELD(s, 10, a->enh) != SQLITE_OK || BIND_FIELD(s, 11, a->reply) != SQLITE_OK ||
	    BIND_FIELD(s, 12, a->reason) != SQLITE_OK || BIND_FIELD(s, 13, a->stage) != SQLITE_OK ||
	    BIND_FIELD(s, 14, a->tls_policy) != SQLITE_OK ||
	    BIND_FIELD(s, 15, a->policy_source) != SQLITE_OK ||
	    BIND_FIELD(s, 16, a->tls_version) != SQLITE_OK ||
	    BIND_FIELD(s, 17, a->tls_cipher) != SQLITE_OK ||
	    BIND_FIELD(s, 18, a->cert) != SQLITE_OK ||
	    BIND_FIELD(s, 19, a->cert_error) != SQLITE_OK ||
	    BIND_FIELD(s, 20, a->dnssec) != SQLITE_OK ||
	    sqlite3_bind_int(s, 21, a->fallback ? 1 : 0) != SQLITE_OK ||
	    sqlite3_bind_int(s, 22, a->attempt_no) != SQLITE_OK ||
	    sqlite3_bind_double(s, 23, a->delay) != SQLITE_OK)
		goto out;
	if (sqlite3_step(s) == SQLITE_DONE)
		ret = 0;
out:
	if (ret != 0)
		rec_db_error(r, "add");
	stmt_done(s);
	return ret;
}

static void attempt_from_row(sqlite3_stmt *s, struct attempt *a)
{
	memset(a, 0, sizeof(*a));
	COL_TEXT(s, 0, a->qid);
	a->rcpt = sqlite3_column_int(s, 1);
	COL_TEXT(s, 2, a->rcpt_addr);
	a->time = sqlite3_column_double(s, 3);
	COL_TEXT(s, 4, a->status);
	COL_TEXT(s, 5, a->mx);
	COL_TEXT(s, 6, a->ip);
	a->port = sqlite3_column_int(s, 7);
	a->code = sqlite3_column_int(s, 8);
	COL_TEXT(s, 9, a->enh);
	COL_TEXT(s, 10, a->reply);
	COL_TEXT(s, 11, a->reason);
	COL_TEXT(s, 12, a->stage);
	COL_TEXT(s, 13, a->tls_policy);
	COL_TEXT(s, 14, a->policy_source);
	COL_TEXT(s, 15, a->tls_version);
	COL_TEXT(s, 16, a->tls_cipher);
	COL_TEXT(s, 17, a->cert);
	COL_TEXT(s, 18, a->cert_error);
	COL_TEXT(s, 19, a->dnssec);
	a->fallback = sqlite3_column_int(s, 20) != 0;
	a->attempt_no = sqlite3_column_int(s, 21);
	a->delay = sqlite3_column_double(s, 22);
}

int records_history(struct records *r, const char *qid,
                    void (*fn)(void *arg, const struct attempt *a), void *arg)
{
	sqlite3_stmt *s = r->stmt[RS_HISTORY];
	struct attempt *a;
	int rc, rows = 0;

	/* fn may call records_add (another statement), but not records_history again: that
	 * would reset the statement under us. */
	if (r->in_history) {
		log_err("event=records_error op=history err=\"re-entered\"");
		return -1;
	}
	a = malloc(sizeof(*a)); /* about 2.5 KiB: kept off the queue process's stack */
	if (a == NULL)
		return -1;
	if (sqlite3_bind_text(s, 1, qid, -1, SQLITE_STATIC) != SQLITE_OK) {
		rows = -1;
		goto out;
	}
	r->in_history = true;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		attempt_from_row(s, a);
		fn(arg, a);
		rows++;
	}
	r->in_history = false;
	if (rc != SQLITE_DONE)
		rows = -1;
out:
	if (rows < 0)
		rec_db_error(r, "history");
	stmt_done(s);
	free(a);
	return rows;
}

int records_prune(struct records *r, time_t before)
{
	sqlite3_stmt *s = r->stmt[RS_PRUNE];
	int ret = -1;

	rec_write(r);

	if (sqlite3_bind_double(s, 1, (double)before) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_DONE)
		ret = sqlite3_changes(r->db);
	if (ret < 0)
		rec_db_error(r, "prune");
	stmt_done(s);
	return ret;
}

/* ---- schedule state ---- */

int records_state_get(struct records *r, const char *qid, struct msgstate *st)
{
	sqlite3_stmt *s = r->stmt[RS_STATE_GET];
	int ret = -1;

	memset(st, 0, sizeof(*st));
	if (sqlite3_bind_text(s, 1, qid, -1, SQLITE_STATIC) == SQLITE_OK) {
		int rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			st->attempts = sqlite3_column_int(s, 0);
			st->next_try = (time_t)sqlite3_column_int64(s, 1);
			st->held = sqlite3_column_int(s, 2) != 0;
			st->warned = sqlite3_column_int(s, 3) != 0;
			COL_TEXT(s, 4, st->last_reason);
			ret = 0;
		} else if (rc == SQLITE_DONE) {
			ret = 1;
		}
	}
	if (ret < 0)
		rec_db_error(r, "state_get");
	stmt_done(s);
	return ret;
}

int records_state_put(struct records *r, const char *qid, const struct msgstate *st)
{
	sqlite3_stmt *s = r->stmt[RS_STATE_PUT];
	int ret = -1;

	rec_write(r);

	if (sqlite3_bind_text(s, 1, qid, -1, SQLITE_STATIC) == SQLITE_OK &&
	    sqlite3_bind_int(s, 2, st->attempts) == SQLITE_OK &&
	    sqlite3_bind_int64(s, 3, (sqlite3_int64)st->next_try) == SQLITE_OK &&
	    sqlite3_bind_int(s, 4, st->held ? 1 : 0) == SQLITE_OK &&
	    sqlite3_bind_int(s, 5, st->warned ? 1 : 0) == SQLITE_OK &&
	    BIND_FIELD(s, 6, st->last_reason) == SQLITE_OK && sqlite3_step(s) == SQLITE_DONE)
		ret = 0;
	if (ret < 0)
		rec_db_error(r, "state_put");
	stmt_done(s);
	return ret;
}

/* 0 whether or not the message had state: forgetting is idempotent. */
int records_state_del(struct records *r, const char *qid)
{
	sqlite3_stmt *s = r->stmt[RS_STATE_DEL];
	int ret = -1;

	rec_write(r);

	if (sqlite3_bind_text(s, 1, qid, -1, SQLITE_STATIC) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_DONE)
		ret = 0;
	if (ret < 0)
		rec_db_error(r, "state_del");
	stmt_done(s);
	return ret;
}
