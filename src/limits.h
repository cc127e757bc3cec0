/* Every ceiling on what the network can make us hold, in one place, each with its reason.
 * Runs in every process. Configurable limits have their defaults here and their ranges in
 * src/conf/conf.c. */
/* With -Isrc this file shadows <limits.h>: every inclusion passes through to the system
 * header (PATH_MAX, INT_MAX), whose own guards stop any recursion. */
#include_next <limits.h>

#ifndef SEALMAIL_LIMITS_H
#define SEALMAIL_LIMITS_H

/* RFC 5321 4.5.3.1.4: a command line is at most 512 octets including CRLF. */
#define LIM_CMD_LINE 512
/* RFC 5321 4.5.3.1.4 allows more for extensions; MAIL/RCPT with parameters (SIZE, BODY,
 * SMTPUTF8, RET, ENVID, NOTIFY, ORCPT) can exceed 512, RFC 1870/3461 say so. */
#define LIM_CMD_LINE_EXT 2048
/* RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF. */
#define LIM_TEXT_LINE 1000
/* RFC 5321 4.5.3.1.1 / 4.5.3.1.2 / 4.5.3.1.3 */
#define LIM_LOCAL_PART 64
#define LIM_DOMAIN 255
#define LIM_PATH 256
/* RFC 3461 4.4: ENVID at most 100 characters; ORCPT at most 500 (xtext). */
#define LIM_ENVID 100
#define LIM_ORCPT 500
/* RFC 5321 4.5.3.1.8: at least 100 recipients must be accepted. */
#define LIM_RCPTS_DEFAULT 100
#define LIM_MSG_SIZE_DEFAULT (35ULL * 1024 * 1024)
/* Errors per session before we close with 421 (Postfix: smtpd_hard_error_limit 20). */
#define LIM_ERRORS_DEFAULT 10
/* RFC 5321 6.3: counting Received fields detects loops; Postfix uses 50. */
#define LIM_RECEIVED_DEFAULT 50
/* RFC 5321 4.5.3.2.7: a server should wait at least 5 minutes for the next command. */
#define LIM_IDLE_TIMEOUT_DEFAULT 300
/* RFC 5321 4.5.3.2.6: data block timeout; we bound the whole DATA phase too. */
#define LIM_DATA_TIMEOUT_DEFAULT 600
#define LIM_CONNECTIONS_DEFAULT 1000
#define LIM_CONNECTIONS_PER_IP_DEFAULT 20
/* Commands (any) in one session before we close it: stops endless NOOP/RSET loops. */
#define LIM_COMMANDS_PER_SESSION 10000
/* Messages in one session. */
#define LIM_MSGS_PER_SESSION 1000
/* HELO/EHLO argument we keep for Received (sanitised). */
#define LIM_HELO 255
/* TLS handshake must finish within this many seconds. */
#define LIM_TLS_HANDSHAKE_TIMEOUT 30
/* Seconds SIGTERM waits for open sessions before closing them. */
#define LIM_SHUTDOWN_GRACE_DEFAULT 30
/* IPC frames between our processes. */
#define LIM_IPC_FRAME 65536
/* Certificates selectable by SNI. */
#define LIM_CERTS 16
/* Days before expiry at which the log warns. */
#define LIM_CERT_WARN_DAYS 14

/* AUTH brute force (issue 3): failures per client address / per login within the window
 * before a temporary block (421 4.7.0). */
#define LIM_AUTH_FAIL_IP 10
#define LIM_AUTH_FAIL_LOGIN 20
#define LIM_AUTH_FAIL_WINDOW 600
#define LIM_AUTH_BLOCK_SECONDS 900
/* 535 comes after a random pause of 500..1500 ms (timer, never blocking the loop). */
#define LIM_AUTH_DELAY_MIN_MS 500
#define LIM_AUTH_DELAY_SPAN_MS 1000
/* Authentication attempts in one session before 421. */
#define LIM_AUTH_PER_SESSION 3
/* Addresses/logins the lookup process tracks for brute force (oldest forgotten first). */
#define LIM_AUTH_TRACKED 8192
/* Verified-password cache of the lookup process: entries and how long one is trusted. */
#define LIM_AUTH_CACHE 4096
#define LIM_AUTH_CACHE_SECONDS 900
/* Hashing threads in the lookup process (argon2id is slow by design). */
#define LIM_AUTH_THREADS 2

#endif
