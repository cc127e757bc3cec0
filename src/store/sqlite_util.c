/* Small SQLite helpers shared by sealmail.db (store.c) and queue.db (queue/records.c): open
 * as 0600 in WAL mode, exec, read one text value. Runs in the lookup and queue processes and
 * the CLI. Untrusted input: none (our own SQL). */
#include "store/sqlite_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int sqlu_exec(sqlite3 *db, const char *sql, char *err, size_t errsz)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK)
		snprintf(err, errsz, "%s", msg ? msg : sqlite3_errstr(rc));
	sqlite3_free(msg);
	return rc;
}

int sqlu_text(sqlite3 *db, const char *sql, char *out, size_t outsz, char *err, size_t errsz)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			const unsigned char *t = sqlite3_column_text(s, 0);
			snprintf(out, outsz, "%s", t ? (const char *)t : "");
			rc = SQLITE_OK;
		} else if (rc == SQLITE_DONE) {
			out[0] = '\0';
			rc = SQLITE_OK;
		}
	}
	if (rc != SQLITE_OK)
		snprintf(err, errsz, "%s", sqlite3_errmsg(db));
	sqlite3_finalize(s);
	return rc;
}

sqlite3 *sqlu_open(const char *data_dir, const char *file, int busy_ms, char *path,
		   size_t pathsz, char *err, size_t errsz)
{
	sqlite3 *db = NULL;
	char mode[16], msg[256];
	if (data_dir == NULL || data_dir[0] == '\0') {
		snprintf(err, errsz, "no data directory");
		return NULL;
	}
	int n = snprintf(path, pathsz, "%s/%s", data_dir, file);
	if (n < 0 || (size_t)n >= pathsz) {
		snprintf(err, errsz, "data directory path too long");
		return NULL;
	}
	/* Create the file ourselves so it is 0600 (SQLite would use 0644 & ~umask): both
	 * databases name people (logins, senders, recipients). */
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		snprintf(err, errsz, "%s: %s", path, strerror(errno));
		return NULL;
	}
	close(fd);
	int rc = sqlite3_open_v2(path, &db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW,
				 NULL);
	if (rc != SQLITE_OK) {
		snprintf(msg, sizeof(msg), "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, busy_ms);
	if (sqlu_text(db, "PRAGMA journal_mode = WAL", mode, sizeof(mode), msg, sizeof(msg)) !=
	    SQLITE_OK)
		goto fail;
	if (strcmp(mode, "wal") != 0) {
		snprintf(msg, sizeof(msg), "cannot use WAL journal (got \"%.10s\")", mode);
		goto fail;
	}
	return db;
fail:
	snprintf(err, errsz, "%s: %s", path, msg);
	sqlite3_close(db);
	return NULL;
}
