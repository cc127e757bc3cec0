/* Small SQLite helpers shared by the two databases (store.c: sealmail.db, owned by the lookup
 * process; queue/records.c: queue.db, owned by the queue process): opening a file as 0600 in
 * WAL mode, running a statement, reading one text value. Untrusted input: none (SQL is ours;
 * values go through bound parameters in the callers). */
#ifndef SEALMAIL_STORE_SQLITE_UTIL_H
#define SEALMAIL_STORE_SQLITE_UTIL_H

#include <stddef.h>

#include <sqlite3.h>

/* Opens <data_dir>/<file> (its path written to path[0..pathsz)): creates it as 0600 when
 * missing (the -wal and -shm files inherit its mode), opens it read-write without following
 * symlinks, turns on extended result codes, sets the busy timeout and WAL journal mode.
 * NULL with the reason in err on failure ("no data directory", "data directory path too
 * long", or "path: reason"). */
sqlite3 *sqlu_open(const char *data_dir, const char *file, int busy_ms, char *path,
		   size_t pathsz, char *err, size_t errsz);

/* sqlite3_exec of sql; on error its message in err. Returns the SQLite code. */
int sqlu_exec(sqlite3 *db, const char *sql, char *err, size_t errsz);

/* Runs a statement returning one value in column 0 (a PRAGMA) and copies it as text ("" when
 * there is no row). Returns the SQLite code; on error its message in err. */
int sqlu_text(sqlite3 *db, const char *sql, char *out, size_t outsz, char *err, size_t errsz);

#endif
