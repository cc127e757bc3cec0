/* Shared by the admin CLI commands (store_cli.c: domain, mailbox; accounts_cli.c: account,
 * login, plan): opening the store named by the configuration, and small output helpers.
 * Runs in the CLI only. Input: the admin's command line. */
#ifndef SEALMAIL_STORE_CLI_COMMON_H
#define SEALMAIL_STORE_CLI_COMMON_H

#include <stddef.h>

#include "store/store.h"

/* Admin text echoed back: no control bytes reach the terminal. Returns buf. */
const char *safe(char *buf, size_t bufsz, const char *s);
/* mkdir -p, each new component 0700. */
int mkdir_p(const char *path);
/* Config (-c FILE, or what conf_pick_path finds, or the embedded defaults) -> data dir ->
 * open store. 0 with *out set, or an exit code from <sysexits.h> (message printed). */
int cli_store_open(const char *conf_path, struct store **out);
/* Flushes stdout; turns a write error (full disk, closed pipe) into EX_IOERR. */
int cli_finish(int code);

#endif
