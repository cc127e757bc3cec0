/* Inside `sealmail queue`: decoding the queue process's reply lines (queue/admin.h) and
 * printing them as tables or JSON (queue_print.c, pure: no sockets, output to a FILE), used
 * by the command itself (queue_cli.c) and by its unit tests. Runs in the CLI only. Input:
 * the reply of our own queue process, still decoded strictly; remote replies inside it are
 * untrusted text and reach a terminal only with control characters replaced. */
#ifndef SEALMAIL_CLI_QUEUE_CLI_INT_H
#define SEALMAIL_CLI_QUEUE_CLI_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

/* Cap on one reply: all IPC_QUEUE_DATA payloads together (about 100000 queued messages at
 * 600 bytes a line, with room to spare). */
#define QCLI_REPLY_MAX ((size_t)64 << 20)

/* Width the list table aims for at least on a terminal (the reason column is cut to fit). */
#define QCLI_TABLE_WIDTH 120

enum qcli_cmd { QCLI_LIST = 0, QCLI_SHOW, QCLI_RETRY, QCLI_HOLD, QCLI_RELEASE, QCLI_DELETE };

/* Decodes one field in place: "\\\\" "\\t" "\\n" "\\r" become the byte they name. 0, or -1
 * for any other escape or a backslash at the end (s is then unspecified). */
int qcli_unescape(char *s);

/* Writes s as a JSON string with its quotes: '"', '\\' and control bytes escaped, valid
 * UTF-8 passed through, any other byte >= 0x80 as \u00XX. */
void qcli_json_str(FILE *out, const char *s);

/* Writes s for a terminal: control characters (C0, DEL, C1) and invalid UTF-8 bytes become
 * '?'. At most maxcols characters; a longer s is cut and ends in "...". Returns the number
 * of characters written (one per code point). */
size_t qcli_term_str(FILE *out, const char *s, size_t maxcols);

/* Checks and prints a whole reply to cmd. buf holds len bytes (the DATA payloads
 * concatenated) and a NUL at buf[len]; it is decoded in place. now: the clock for "next
 * try in 4m". width: the list table's reason column is cut so rows fit in it (0: never
 * cut). Everything is checked before anything is printed: 0, or EX_PROTOCOL with the
 * reason on stderr and nothing on out. */
int qcli_print(FILE *out, enum qcli_cmd cmd, bool json, char *buf, size_t len, time_t now,
               size_t width);

#endif
