/* TLS for the server side: SSL_CTX per certificate (chosen by SNI), TLS 1.2+ with
 * forward-secret AEAD suites only, session tickets with keys shared by all workers, the
 * self-signed ECDSA P-256 certificate made on first start, expiry warnings.
 * Runs in the master (build, check) and smtp workers (handshakes). */
#ifndef SEALMAIL_NET_TLS_H
#define SEALMAIL_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/ssl.h>

#include "conf/conf.h"

struct tls_server;

/* Makes 80 random bytes of session-ticket keys; called once in the master before forking so
 * every worker (and every reload) shares them and resumption works across workers. */
void tls_ticket_keys_init(void);

/* Builds the server contexts from c->certs (or, with none, the self-signed certificate in
 * <data_dir>/tls/, created if missing). NULL with a reason in err on failure. */
struct tls_server *tls_server_new(const struct conf *c, char *err, size_t errsz);
void tls_server_free(struct tls_server *ts);

/* A new SSL object for an accepted connection (server mode). */
SSL *tls_server_ssl(struct tls_server *ts);

/* True when one of the certificate or key files changed (mtime/size/inode) since load. */
bool tls_server_files_changed(const struct tls_server *ts);

/* Logs each certificate's subject and expiry; warns when it expires within
 * LIM_CERT_WARN_DAYS days or has expired. */
void tls_server_log_certs(const struct tls_server *ts);

/* "TLSv1.3" and "TLS_AES_256_GCM_SHA384" and bits of an established connection. */
void tls_conn_info(SSL *ssl, char *version, size_t vsz, char *cipher, size_t csz, int *bits);

/* Ensures <dir>/selfsigned.pem and <dir>/selfsigned.key exist (ECDSA P-256, CN=hostname,
 * SAN=hostname, 10 years); fills the paths. 0 or -1 with err. */
int tls_selfsigned_ensure(const char *dir, const char *hostname, char *cert_path, size_t cpsz,
			  char *key_path, size_t kpsz, char *err, size_t errsz);

/* Last OpenSSL error as text (for logs), clears the queue. */
const char *tls_last_error(char *buf, size_t n);

#endif
