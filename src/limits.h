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

/* DNS answers (src/dns). RFC 1035 4.2.2: a message is at most 65535 octets (TCP length). */
#define LIM_DNS_MSG 65535
/* RFC 1035 2.3.4: a name is at most 255 octets of wire format, 253 characters as text;
 * a label at most 63 octets. */
#define LIM_DNS_NAME_WIRE 255
#define LIM_DNS_NAME 253
#define LIM_DNS_LABEL 63
/* Answer records looked at per packet, and MX records sorted per domain (a real MX set is
 * a handful; this only bounds the work a hostile answer can cause). */
#define LIM_DNS_ANSWER_RRS 256
/* CNAME hops followed inside one answer (libunbound itself stops long chains). */
#define LIM_DNS_CNAME_HOPS 16
/* RFC 1035 4.1.4: compression pointers followed per name (each must also point backwards,
 * so no loop is possible; this bounds the work per name). */
#define LIM_DNS_PTR_JUMPS 64
/* Forwarders accepted in dns.forwarders. */
#define LIM_DNS_FORWARDERS 16

/* Outbound SMTP client (src/queue/smtpc*). AUTH PLAIN's base64 must fit one command line
 * (RFC 4954 4 allows 12288 octets; a user name or password past 255 is a config error). */
#define LIM_SMTPC_AUTH 255
/* The message body is read from the spool in chunks of this size; the output buffer is
 * refilled when it drains below LOW and never filled far past HIGH, so a message of any
 * size costs at most HIGH + 2 * CHUNK bytes per connection. */
#define LIM_SMTPC_CHUNK (64 * 1024)
#define LIM_SMTPC_OUT_LOW (64 * 1024)
#define LIM_SMTPC_OUT_HIGH (256 * 1024)

/* TLS policy file (src/policy/tlspolicy.c; the admin's, but maybe not the file meant). A line
 * is "domain level" plus comment: 1024 bytes is generous for a 255-octet domain and keeps a
 * line's buffer on the stack. */
#define LIM_TLSPOL_LINE 1024
/* Entries per policy file: bounds memory for a file that is not what the admin meant. */
#define LIM_TLSPOL_ENTRIES 100000

/* Delivery status notifications (src/queue/dsn.c). A remote reply or reason quoted in the
 * notice is cut here (a multiline SMTP reply joined into one line stays well below; this
 * only stops a hostile server filling the bounce). */
#define LIM_DSN_TEXT 2048
/* text/rfc822-headers: the header section is searched for its end this far; a message whose
 * first empty line comes later (or never) has its first LIM_DSN_HDRS bytes returned, cut at
 * a line end. Real header sections are a few KiB; 256 KiB keeps long Received chains. */
#define LIM_DSN_HDRS (256 * 1024)
/* The original is read and copied in chunks of this size (never held whole in memory). */
#define LIM_DSN_CHUNK (64 * 1024)

#endif
