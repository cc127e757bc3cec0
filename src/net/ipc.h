/* Typed messages between sealmail's processes over UNIX stream sockets in <data_dir>/run/.
 * A frame is a 12-byte header (payload length, type, version, request id, all in host
 * order: both ends are the same binary on the same machine) and a payload of at most
 * LIM_IPC_FRAME bytes. Readers reject unknown versions, oversize frames and trailing bytes.
 * Runs in every process. Untrusted input: none directly, but a reader never trusts a frame. */
#ifndef SEALMAIL_NET_IPC_H
#define SEALMAIL_NET_IPC_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#define IPC_VERSION 1

enum ipc_type {
	IPC_RCPT_REQ = 1, /* smtp -> lookup: "listener\0address\0account" (account "" = none) */
	IPC_RCPT_REP,     /* lookup -> smtp: status byte (enum ipc_rcpt_status) + mailbox, or
			   * for IPC_RCPT_RATE: "plan\0limit\0retry_seconds" */
	IPC_MSG_NEW,      /* smtp -> queue: payload queue id of a committed message */
	IPC_PING,         /* any: liveness; answered with IPC_PING, same id */
	IPC_AUTH_REQ,     /* smtp -> lookup: "ip\0login\0password" (PLAIN/LOGIN) */
	IPC_AUTH_REP,     /* lookup -> smtp: status byte (enum ipc_auth_status) + account info:
			   * "account\0plan\0limit\0domain,domain,..." */
	IPC_SCRAM_REQ,    /* smtp -> lookup: "ip\0login" */
	IPC_SCRAM_REP,    /* lookup -> smtp: status byte + struct scram_creds + account info */
	IPC_AUTH_RESULT,  /* smtp -> lookup: "ip\0login\0" + '1' ok / '0' failed (SCRAM) */
	IPC_RATE_RELEASE, /* smtp -> lookup: "account\0count\0since" (transaction not accepted) */
	IPC_QUEUE_REQ,    /* cli -> queue: "command\0argument" (queue/admin.h) */
	IPC_QUEUE_DATA,   /* queue -> cli: a chunk of reply lines (any number of frames) */
	IPC_QUEUE_END,    /* queue -> cli: "code\0message": 0 = done, else a sysexits code */
};

enum ipc_auth_status {
	IPC_AUTH_OK = 0,
	IPC_AUTH_FAIL,      /* wrong login or password (never says which) */
	IPC_AUTH_BLOCKED,   /* too many failures from this address or for this login */
	IPC_AUTH_DISABLED,  /* the account is disabled */
	IPC_AUTH_TEMPFAIL,  /* store error */
};

enum ipc_rcpt_status {
	IPC_RCPT_LOCAL = 0,  /* local mailbox; payload carries it */
	IPC_RCPT_UNKNOWN,    /* local domain, no such user */
	IPC_RCPT_NOT_LOCAL,  /* domain not local: relaying question */
	IPC_RCPT_TEMPFAIL,   /* store error */
	IPC_RCPT_REMOTE,     /* not local, and the authenticated account may relay it */
	IPC_RCPT_RATE,       /* over the account's hourly limit */
};

struct ipc_hdr {
	uint32_t len;
	uint16_t type;
	uint16_t version;
	uint32_t id;
};

/* Queues one frame on bev's output. 0, or -1 if n exceeds LIM_IPC_FRAME. */
int ipc_send(struct bufferevent *bev, uint16_t type, uint32_t id, const void *p, size_t n);

/* Takes one frame out of `in` when complete: returns 1 with *h filled and the payload copied
 * into buf (cap bytes; NUL-terminated, so cap must exceed the largest payload), 0 when more
 * bytes are needed, -1 on a bad frame (wrong version, too long): close the peer. */
int ipc_read(struct evbuffer *in, struct ipc_hdr *h, char *buf, size_t cap);

/* A listening UNIX socket at path (unlinked first), mode 0600. -1 on error (errno). */
int ipc_listen_unix(const char *path);
/* A connected, non-blocking UNIX socket to path. -1 on error (errno). */
int ipc_connect_unix(const char *path);

#endif
