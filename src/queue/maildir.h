/* Local delivery into Maildir (tmp/ -> fsync -> new/, one file per recipient).
 * Runs in the queue process. Input: committed spool files (already checked). */
#ifndef SEALMAIL_QUEUE_MAILDIR_H
#define SEALMAIL_QUEUE_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAILDIR_NAME_MAX 256

/* Delivers one copy: creates root/ {tmp,new,cur} as needed (mode 0700), writes `prefix`
 * (prefix_len bytes, e.g. Delivered-To/Return-Path headers) then body_len bytes read from fd
 * at body_off, fsyncs the file, links it into new/ and fsyncs new/. `out_name` (may be NULL,
 * size 256) receives the file name. Returns 0, or -1 with errno set (EDQUOT/ENOSPC are
 * temporary failures for the caller). */
int maildir_deliver(const char *root, const char *prefix, size_t prefix_len, int fd,
		    uint64_t body_off, uint64_t body_len, char *out_name);

/* Group delivery (many copies share their syncs): maildir_stage() writes a copy into
 * root/tmp/ without syncing and names it in out_name (MAILDIR_NAME_MAX bytes);
 * maildir_sync_staged() starts its writeback (start_only) or makes it durable; then
 * maildir_publish() links it into new/ and maildir_sync_new() makes new/ durable. Only then
 * may the spool copy go. maildir_unstage() drops a staged copy that will not be published.
 * All return 0, or -1 with errno. */
int maildir_stage(const char *root, const char *prefix, size_t prefix_len, int fd,
		  uint64_t body_off, uint64_t body_len, char *out_name);
int maildir_sync_staged(const char *root, const char *name, bool start_only);
int maildir_publish(const char *root, const char *name);
int maildir_sync_new(const char *root);
/* syncfs(2) of the file system holding root: makes every staged copy durable at once. */
int maildir_sync_fs(const char *root);
void maildir_unstage(const char *root, const char *name);

/* The Maildir directory for a local mailbox address "user@domain" under mail_root:
 * mail_root/<domain>/<user>/ with characters outside [a-z0-9._+-] percent-encoded, so no
 * address can name a path outside mail_root. Returns 0, -1 if it does not fit. */
int maildir_path(const char *mail_root, const char *mailbox, char *out, size_t outsz);

#endif
