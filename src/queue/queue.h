/* The queue process: owns committed mail. Hears of new messages from smtp workers over IPC
 * (<data_dir>/run/queue.sock), scans the spool at start and periodically, and delivers local
 * recipients into Maildir. */
#ifndef SEALMAIL_QUEUE_QUEUE_H
#define SEALMAIL_QUEUE_QUEUE_H

#include "conf/conf.h"

/* Runs the queue process until SIGTERM. lfd is its listening UNIX socket. Exit code. */
int queue_main(const struct conf *c, int lfd);

#endif
