/* TLS of the outbound SMTP client (smtpc.h): the client SSL_CTX, STARTTLS/implicit TLS on
 * the connection's socket with SNI and the host name check, and the certificate verdict the
 * TLS level acts on (verified / unverified with the reason / failed). Runs in the queue
 * process. Untrusted input: the server's handshake and certificate (names copied sanitised
 * into fixed buffers). */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "net/tls.h"
#include "queue/smtpc_int.h"
#include "util/log.h"

static int smtpc_ssl_idx = -1;

/* Never fails the handshake: the verdict is the level's to take once it is done, and the
 * first error (the chain's before the name's) is the one worth reporting. */
static int verify_cb(int ok, X509_STORE_CTX *x)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct smtpc *c = ssl ? SSL_get_ex_data(ssl, smtpc_ssl_idx) : NULL;
	if (!ok && c && c->verify_err == 0) {
		int e = X509_STORE_CTX_get_error(x);
		c->verify_err = e != X509_V_OK ? e : X509_V_ERR_UNSPECIFIED;
	}
	return 1;
}

/* The names a certificate is for (DNS and IP subjectAltNames, else the CN), sanitised. */
static void cert_names(X509 *x, char *buf, size_t sz)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	size_t o = 0;
	int n = 0;
	buf[0] = '\0';
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && n < 4; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		char name[LIM_DOMAIN + 1], safe[LIM_DOMAIN + 1];
		if (g->type == GEN_DNS) {
			const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
			int l = ASN1_STRING_length(g->d.dNSName);
			log_safe(safe, sizeof(safe), (const char *)d, l > 0 ? (size_t)l : 0);
		} else if (g->type == GEN_IPADD) {
			int l = ASN1_STRING_length(g->d.iPAddress);
			const unsigned char *d = ASN1_STRING_get0_data(g->d.iPAddress);
			if (!inet_ntop(l == 4 ? AF_INET : AF_INET6, d, name, sizeof(name)) ||
			    (l != 4 && l != 16))
				continue;
			snprintf(safe, sizeof(safe), "%s", name);
		} else {
			continue;
		}
		smtpc_buf_add(buf, sz, &o, "%s%s", n ? ", " : "", safe);
		n++;
	}
	GENERAL_NAMES_free(gens);
	if (n == 0) {
		char cn[LIM_DOMAIN + 1];
		int l = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
		                                  sizeof(cn));
		if (l > 0)
			log_safe(buf, sz, cn, (size_t)l);
	}
}

static void tls_verdict(struct smtpc *c, SSL *ssl)
{
	X509 *peer = SSL_get0_peer_certificate(ssl);
	long err = c->verify_err;
	if (!peer) {
		c->info.cert = SMTPC_CERT_UNVERIFIED;
		snprintf(c->info.cert_error, sizeof(c->info.cert_error), "no server certificate");
		return;
	}
	if (err == X509_V_OK)
		err = SSL_get_verify_result(ssl);
	if (err == X509_V_OK) {
		c->info.cert = SMTPC_CERT_VERIFIED;
		c->info.cert_error[0] = '\0';
		return;
	}
	c->info.cert = SMTPC_CERT_UNVERIFIED;
	if (err == X509_V_ERR_HOSTNAME_MISMATCH || err == X509_V_ERR_IP_ADDRESS_MISMATCH) {
		char names[128];
		cert_names(peer, names, sizeof(names));
		snprintf(c->info.cert_error, sizeof(c->info.cert_error),
		         "%s (certificate is for %s)", X509_verify_cert_error_string(err),
		         names[0] ? names : "no name");
	} else {
		snprintf(c->info.cert_error, sizeof(c->info.cert_error), "%s",
		         X509_verify_cert_error_string(err));
	}
}

static void tls_setup_failed(struct smtpc *c, const char *why)
{
	struct smtpc_result r;
	smtpc_res_reason(&r, SMTPC_ST_TLS, "4.7.5", false, "TLS with %s[%s] failed: %s", c->host,
	                 c->info.ip, why);
	r.tls_failed = true;
	r.policy = c->level >= TLS_LEVEL_ENCRYPT;
	smtpc_open_fail(c, &r);
}

/* Replaces the plaintext bufferevent by a TLS one on the same socket and starts the
 * handshake (STARTTLS after its 220, or implicit TLS right after connect). */
void smtpc_tls_start(struct smtpc *c)
{
	char e[200];
	if (smtpc_ssl_idx < 0)
		smtpc_ssl_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	SSL *ssl = SSL_new(c->ctx);
	if (!ssl) {
		tls_setup_failed(c, tls_last_error(e, sizeof(e)));
		return;
	}
	SSL_set_ex_data(ssl, smtpc_ssl_idx, c);
	/* TLS older than 1.2 (delivery.tls_min_version) is for opportunistic TLS only: a level
	 * that requires TLS requires a modern one */
	if (c->level >= TLS_LEVEL_ENCRYPT && SSL_get_min_proto_version(ssl) < TLS1_2_VERSION)
		SSL_set_min_proto_version(ssl, TLS1_2_VERSION);
	c->verify_err = 0;
	SSL_set_verify(ssl, SSL_VERIFY_PEER, verify_cb);
	/* RFC 6066 3: no SNI for an address; the name check is against an IP SAN then */
	int ok = c->host_is_ip
	             ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), c->host_ip)
	             : SSL_set_tlsext_host_name(ssl, c->host) == 1 && SSL_set1_host(ssl, c->host);
	if (ok != 1) {
		SSL_free(ssl);
		tls_setup_failed(c, "cannot set the server name");
		return;
	}
	if (c->bev) {
		bufferevent_free(c->bev); /* does not own the socket */
		c->bev = NULL;
	}
	c->bev = bufferevent_openssl_socket_new(c->base, c->fd, ssl, BUFFEREVENT_SSL_CONNECTING,
	                                        BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!c->bev)
		fatal("smtpc: bufferevent_openssl_socket_new failed");
	c->bev_owns_fd = true;
	/* SMTP frames its own data: an EOF without close_notify loses nothing we would take */
	bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	smtpc_setcb(c);
	c->st = SMTPC_S_HANDSHAKE;
	smtpc_timer_arm(c, SMTPC_T_OTHER);
}

void smtpc_tls_done(struct smtpc *c)
{
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
	struct smtpc_result r;
	smtpc_timer_stop(c);
	c->info.tls = true;
	tls_conn_info(ssl, c->info.tls_version, sizeof(c->info.tls_version), c->info.tls_cipher,
	              sizeof(c->info.tls_cipher), &c->info.tls_bits);
	tls_verdict(c, ssl);
	log_debug("event=smtpc_tls host=%s ip=%s tls_version=%s tls_cipher=%s cert=%s "
	          "cert_error=\"%s\"",
	          c->host, c->info.ip, c->info.tls_version, c->info.tls_cipher,
	          smtpc_cert_name(c->info.cert), c->info.cert_error);
	if (c->level == TLS_LEVEL_VERIFY && c->info.cert != SMTPC_CERT_VERIFIED) {
		c->info.cert = SMTPC_CERT_FAILED;
		smtpc_res_reason(&r, SMTPC_ST_TLS, "4.7.5", false,
		                 "certificate verification failed for %s: %s", c->host,
		                 c->info.cert_error);
		r.tls_failed = true;
		r.policy = true;
		smtpc_open_fail(c, &r);
		return;
	}
	if (c->mode == SMTPC_IMPLICIT)
		smtpc_greeting_wait(c);
	else
		smtpc_ehlo_send(c); /* RFC 3207 4.2: forget what was learned, EHLO again */
}

void smtpc_tls_failed(struct smtpc *c, struct bufferevent *bev, short what, int err)
{
	char why[200];
	unsigned long e = 0, next;
	while (bev && (next = bufferevent_get_openssl_error(bev)) != 0)
		if (!e)
			e = next;
	if (!e)
		e = ERR_peek_error();
	if (what & BEV_EVENT_TIMEOUT)
		snprintf(why, sizeof(why), "timed out");
	else if (e)
		ERR_error_string_n(e, why, sizeof(why));
	else if (what & BEV_EVENT_EOF)
		snprintf(why, sizeof(why), "connection closed by the server");
	else
		snprintf(why, sizeof(why), "%s", err ? strerror(err) : "connection error");
	ERR_clear_error();
	struct smtpc_result r;
	smtpc_res_reason(&r, SMTPC_ST_TLS, "4.7.5", false, "TLS handshake with %s[%s] failed: %s",
	                 c->host, c->info.ip, why);
	r.tls_failed = true;
	r.policy = c->level >= TLS_LEVEL_ENCRYPT;
	smtpc_open_fail(c, &r);
}

SSL_CTX *smtpc_tls_ctx_new(const char *ca_file, int min_version, char *err, size_t errsz)
{
	char e[256];
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		snprintf(err, errsz, "SSL_CTX_new: %s", tls_last_error(e, sizeof(e)));
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, min_version ? min_version : TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
		snprintf(err, errsz, "TLS protocol version: %s", tls_last_error(e, sizeof(e)));
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
	                             SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* OpenSSL 3's default security level refuses TLS 1.0/1.1 outright; an admin who asked
	 * for them (level may only) gets them */
	if (min_version && min_version < TLS1_2_VERSION)
		SSL_CTX_set_security_level(ctx, 0);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (ca_file && *ca_file) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			snprintf(err, errsz, "%s: cannot load CA certificates: %s", ca_file,
			         tls_last_error(e, sizeof(e)));
			goto fail;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		snprintf(err, errsz, "default CA paths: %s", tls_last_error(e, sizeof(e)));
		goto fail;
	}
	/* per connection verify_cb decides; this is the safe default for any other user */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}
