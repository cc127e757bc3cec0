/* The lookup process: owns the SQLite store and answers smtp workers' questions (is this
 * recipient local, which mailbox) over IPC at <data_dir>/run/lookup.sock. */
#ifndef SEALMAIL_LOOKUP_LOOKUP_H
#define SEALMAIL_LOOKUP_LOOKUP_H

#include "conf/conf.h"

/* Runs the lookup process until SIGTERM. lfd is its listening UNIX socket. Exit code. */
int lookup_main(const struct conf *c, int lfd);

#endif
