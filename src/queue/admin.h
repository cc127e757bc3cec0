/* `sealmail queue` against the running queue process: the request/reply protocol over
 * <data_dir>/run/queue.sock (IPC frames, net/ipc.h) and the queue side that answers it.
 *
 * Request: IPC_QUEUE_REQ "command\0argument", command one of
 *   list              argument ""            every queued message
 *   show              argument qid           one message, its recipients and its attempts
 *   retry             argument qid or "ALL"  try now (clears the wait; held stay held)
 *   hold              argument qid or "ALL"  stop trying until released
 *   release           argument qid or "ALL"  end a hold and try now
 *   delete            argument qid or "ALL"  remove from the queue, no bounce
 * Reply: zero or more IPC_QUEUE_DATA frames whose payloads, concatenated, are lines
 * ("\n"-terminated) of tab-separated fields; then IPC_QUEUE_END "code\0message" (code "0",
 * or "67" EX_NOUSER for an unknown qid with message "no such message: ID", "64" for a bad
 * request). In fields, '\\' '\t' '\n' '\r' are written as "\\\\" "\\t" "\\n" "\\r".
 * Line kinds (first field):
 *   M qid arrival size from nrcpts pending state attempts next_try reason
 *       arrival/next_try: epoch seconds (next_try 0 = now); size: body bytes; from: "" for
 *       <>; pending: recipients not done; state: active|waiting|held; reason: of the last
 *       deferral ("" none)
 *   R qid index address state
 *       state: pending|done
 *   A qid rcpt rcpt_addr time status mx ip port code enh reply reason stage tls_policy
 *     policy_source tls_version tls_cipher cert cert_error dnssec fallback attempt_no delay
 *       one delivery attempt (struct attempt in records.h, same order; time and delay with
 *       3 decimals, fallback 0/1)
 *   C qid action      for retry/hold/release/delete: one line per message named; action
 *       "retry", "held", "released", "deleted" (maybe with a note in parentheses), or
 *       "skipped (why)" when nothing was done to it
 * list gives M lines; show gives its M line, its R lines, then its A lines (oldest first).
 * Runs in the queue process (answer) and the CLI (ask). */
#ifndef SEALMAIL_QUEUE_ADMIN_H
#define SEALMAIL_QUEUE_ADMIN_H

/* The CLI: `sealmail queue list|show|retry|hold|release|delete [ID|ALL] [--json] [-c FILE]`.
 * Returns a sysexits code (69 EX_UNAVAILABLE when the server is not running). */
int queue_cli(int argc, char **argv);

#endif
