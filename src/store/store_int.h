/* Private to src/store/: how store.c (which owns struct store, the connection and the schema)
 * and accounts.c (accounts, plans, logins, rate buckets) share one SQLite connection.
 * Nothing outside src/store/ includes this. */
#ifndef SEALMAIL_STORE_STORE_INT_H
#define SEALMAIL_STORE_STORE_INT_H

#include <stddef.h>

#include <sqlite3.h>

struct store;
struct store_acct; /* accounts.c: its prepared statements and list guards */

/* Prepares accounts.c's statements on an open, migrated connection. NULL with err set on
 * failure. Freed by store_acct_close (NULL is fine), called from store_close. */
struct store_acct *store_acct_open(sqlite3 *db, char *err, size_t errsz);
void store_acct_close(struct store_acct *a);

/* store.c gives accounts.c its connection and state. */
sqlite3 *store_sqlite(struct store *st);
struct store_acct *store_acct_of(struct store *st);

#endif
