/* The master process: owns the configuration, the listening sockets, the TLS contexts and
 * the lives of the children (smtp workers, lookup, queue); handles SIGHUP (reload) and
 * SIGTERM (drain, then exit). */
#ifndef SEALMAIL_MASTER_H
#define SEALMAIL_MASTER_H

#include "conf/conf.h"

/* `sealmail serve`: runs until SIGTERM/SIGINT. Returns the exit code. */
int master_main(struct conf *c);

#endif
