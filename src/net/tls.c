/* Server-side TLS contexts: one SSL_CTX per certificate, chosen by SNI, TLS 1.2 minimum,
 * AEAD + ECDHE suites only, shared ticket keys for resumption across workers, and the
 * self-signed certificate of the embedded defaults. Runs in the master and smtp workers.
 * Untrusted input: the SNI name a client sends (compared, never stored). */
#include "net/tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "util/log.h"

/* TLS 1.2: ECDHE only (forward secrecy), AEAD only. TLS 1.3 suites are all AEAD + (EC)DHE. */
#define TLS12_CIPHERS                                                                             \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                              \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                              \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

struct tls_file_id {
	char path[PATH_MAX];
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct tls_server {
	SSL_CTX *ctx[LIM_CERTS];
	X509 *leaf[LIM_CERTS];
	int n;
	struct tls_file_id files[LIM_CERTS * 2];
	int nfiles;
};

static unsigned char ticket_keys[80];
static bool ticket_keys_set;

void tls_ticket_keys_init(void)
{
	if (RAND_bytes(ticket_keys, sizeof(ticket_keys)) != 1)
		fatal("RAND_bytes failed");
	ticket_keys_set = true;
}

const char *tls_last_error(char *buf, size_t n)
{
	unsigned long e = ERR_get_error();
	if (e == 0)
		snprintf(buf, n, "unknown error");
	else
		ERR_error_string_n(e, buf, n);
	ERR_clear_error();
	return buf;
}

static void file_id_take(struct tls_file_id *f, const char *path)
{
	struct stat st;
	memset(f, 0, sizeof(*f));
	snprintf(f->path, sizeof(f->path), "%s", path);
	if (stat(path, &st) == 0) {
		f->dev = st.st_dev;
		f->ino = st.st_ino;
		f->size = st.st_size;
		f->mtime = st.st_mtim;
	}
}

bool tls_server_files_changed(const struct tls_server *ts)
{
	for (int i = 0; i < ts->nfiles; i++) {
		struct tls_file_id now;
		file_id_take(&now, ts->files[i].path);
		if (now.dev != ts->files[i].dev || now.ino != ts->files[i].ino ||
		    now.size != ts->files[i].size ||
		    now.mtime.tv_sec != ts->files[i].mtime.tv_sec ||
		    now.mtime.tv_nsec != ts->files[i].mtime.tv_nsec)
			return true;
	}
	return false;
}

/* SNI: pick the context whose certificate matches the name; otherwise keep the first. */
static int tls_sni_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_server *ts = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	(void)alert;
	if (!name || ts->n < 2)
		return SSL_TLSEXT_ERR_OK;
	for (int i = 0; i < ts->n; i++) {
		if (X509_check_host(ts->leaf[i], name, strlen(name), 0, NULL) == 1) {
			if (i != 0)
				SSL_set_SSL_CTX(ssl, ts->ctx[i]);
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return SSL_TLSEXT_ERR_OK;
}

/* cert_where and key_where name the config lines ("file:line: tls.cert: "), or are "". */
static SSL_CTX *ctx_build(const struct conf *c, const char *cert, const char *key,
			  const char *cert_where, const char *key_where, X509 **leaf, char *err,
			  size_t errsz)
{
	char e[256];
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		snprintf(err, errsz, "SSL_CTX_new: %s", tls_last_error(e, sizeof(e)));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* SMTP frames its own data (a message ends only at <CRLF>.<CRLF>), so a peer that closes
	 * without close_notify truncates nothing we would accept: treat it as a plain EOF */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
					 SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* promise of the perf section: free read/write buffers of idle connections */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") != 1) {
		snprintf(err, errsz, "cipher setup: %s", tls_last_error(e, sizeof(e)));
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		snprintf(err, errsz, "%s%s: cannot load certificate chain: %s", cert_where, cert,
			 tls_last_error(e, sizeof(e)));
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		snprintf(err, errsz, "%s%s: cannot load private key: %s", key_where, key,
			 tls_last_error(e, sizeof(e)));
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errsz, "%s%s does not match %s", key_where, key, cert);
		ERR_clear_error();
		goto fail;
	}
	if (c->tls_resumption) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
		SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"sealmail", 8);
		if (ticket_keys_set)
			SSL_CTX_set_tlsext_ticket_keys(ctx, ticket_keys, sizeof(ticket_keys));
		/* one ticket is enough for SMTP clients, and halves the ticket work */
		SSL_CTX_set_num_tickets(ctx, 1);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
	}
	*leaf = SSL_CTX_get0_certificate(ctx);
	X509_up_ref(*leaf);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

struct tls_server *tls_server_new(const struct conf *c, char *err, size_t errsz)
{
	struct tls_server *ts = xcalloc(1, sizeof(*ts));
	char certp[PATH_MAX], keyp[PATH_MAX];
	int n = c->ncerts;

	for (int i = 0; i < (n ? n : 1); i++) {
		const char *cert, *key;
		char cert_where[PATH_MAX + 32] = "", key_where[PATH_MAX + 32] = "";
		if (n == 0) {
			char dir[PATH_MAX];
			snprintf(dir, sizeof(dir), "%s/tls", c->data_dir);
			if (tls_selfsigned_ensure(dir, c->hostname, certp, sizeof(certp), keyp,
						  sizeof(keyp), err, errsz) != 0)
				goto fail;
			cert = certp;
			key = keyp;
		} else {
			cert = c->certs[i].cert_file;
			key = c->certs[i].key_file;
			/* errors name the config line, as every config error does */
			const char *cf = conf_source_file(c, c->certs[i].cert_src);
			const char *kf = conf_source_file(c, c->certs[i].key_src);
			if (cf && c->certs[i].cert_src.line > 0)
				snprintf(cert_where, sizeof(cert_where), "%s:%d: tls.cert: ", cf,
					 c->certs[i].cert_src.line);
			if (kf && c->certs[i].key_src.line > 0)
				snprintf(key_where, sizeof(key_where), "%s:%d: tls.key: ", kf,
					 c->certs[i].key_src.line);
		}
		file_id_take(&ts->files[ts->nfiles++], cert);
		file_id_take(&ts->files[ts->nfiles++], key);
		ts->ctx[i] = ctx_build(c, cert, key, cert_where, key_where, &ts->leaf[i], err, errsz);
		if (!ts->ctx[i])
			goto fail;
		ts->n++;
	}
	SSL_CTX_set_tlsext_servername_callback(ts->ctx[0], tls_sni_cb);
	SSL_CTX_set_tlsext_servername_arg(ts->ctx[0], ts);
	return ts;
fail:
	tls_server_free(ts);
	return NULL;
}

void tls_server_free(struct tls_server *ts)
{
	if (!ts)
		return;
	for (int i = 0; i < ts->n; i++) {
		SSL_CTX_free(ts->ctx[i]);
		X509_free(ts->leaf[i]);
	}
	free(ts);
}

SSL *tls_server_ssl(struct tls_server *ts)
{
	return SSL_new(ts->ctx[0]);
}

void tls_server_log_certs(const struct tls_server *ts)
{
	for (int i = 0; i < ts->n; i++) {
		char subj[256], path[PATH_MAX];
		int days = 0, secs = 0;
		X509_NAME_oneline(X509_get_subject_name(ts->leaf[i]), subj, sizeof(subj));
		log_safe(path, sizeof(path), ts->files[2 * i].path, sizeof(path));
		const ASN1_TIME *na = X509_get0_notAfter(ts->leaf[i]);
		ASN1_TIME_diff(&days, &secs, NULL, na);
		struct tm tm;
		char when[32] = "?";
		if (ASN1_TIME_to_tm(na, &tm) == 1)
			strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		if (days < 0 || (days == 0 && secs <= 0))
			log_err("event=cert_expired file=%s subject=\"%s\" not_after=%s", path, subj, when);
		else if (days < LIM_CERT_WARN_DAYS)
			log_warn("event=cert_expiring file=%s subject=\"%s\" not_after=%s days_left=%d",
				 path, subj, when, days);
		else
			log_info("event=cert_loaded file=%s subject=\"%s\" not_after=%s days_left=%d", path,
				 subj, when, days);
	}
}

void tls_conn_info(SSL *ssl, char *version, size_t vsz, char *cipher, size_t csz, int *bits)
{
	const SSL_CIPHER *ci = SSL_get_current_cipher(ssl);
	int alg = 0;
	snprintf(version, vsz, "%s", SSL_get_version(ssl));
	snprintf(cipher, csz, "%s", ci ? SSL_CIPHER_get_name(ci) : "none");
	*bits = ci ? SSL_CIPHER_get_bits(ci, &alg) : 0;
}

int tls_selfsigned_ensure(const char *dir, const char *hostname, char *cert_path, size_t cpsz,
			  char *key_path, size_t kpsz, char *err, size_t errsz)
{
	char e[256];
	struct stat st;
	int rc = -1;
	EVP_PKEY *pkey = NULL;
	X509 *x = NULL;
	FILE *f = NULL;

	snprintf(cert_path, cpsz, "%s/selfsigned.pem", dir);
	snprintf(key_path, kpsz, "%s/selfsigned.key", dir);
	if (stat(cert_path, &st) == 0 && stat(key_path, &st) == 0)
		return 0;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errsz, "%s: %s", dir, strerror(errno));
		return -1;
	}
	pkey = EVP_EC_gen("P-256");
	x = X509_new();
	if (!pkey || !x)
		goto ossl_fail;
	unsigned char serial[16];
	RAND_bytes(serial, sizeof(serial));
	serial[0] &= 0x7f;
	BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
	BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	BN_free(bn);
	X509_set_version(x, 2);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
	X509_set_pubkey(x, pkey);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)hostname, -1, -1,
				   0);
	X509_set_issuer_name(x, name);
	char san[LIM_DOMAIN + 8];
	snprintf(san, sizeof(san), "DNS:%s", hostname);
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
	if (ext) {
		X509_add_ext(x, ext, -1);
		X509_EXTENSION_free(ext);
	}
	if (!X509_sign(x, pkey, EVP_sha256()))
		goto ossl_fail;

	char tmp[PATH_MAX + 8];
	snprintf(tmp, sizeof(tmp), "%s.tmp", key_path);
	f = fopen(tmp, "wx");
	if (!f || fchmod(fileno(f), 0600) != 0 || !PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) ||
	    fclose(f) != 0) {
		f = NULL;
		snprintf(err, errsz, "%s: cannot write key: %s", tmp, strerror(errno));
		unlink(tmp);
		goto out;
	}
	f = NULL;
	if (rename(tmp, key_path) != 0)
		goto io_fail;
	snprintf(tmp, sizeof(tmp), "%s.tmp", cert_path);
	f = fopen(tmp, "w");
	if (!f || !PEM_write_X509(f, x) || fclose(f) != 0) {
		f = NULL;
		snprintf(err, errsz, "%s: cannot write certificate: %s", tmp, strerror(errno));
		goto out;
	}
	f = NULL;
	if (rename(tmp, cert_path) != 0)
		goto io_fail;
	log_info("event=selfsigned_created cert=%s key=%s cn=%s", cert_path, key_path, hostname);
	rc = 0;
	goto out;
io_fail:
	snprintf(err, errsz, "%s: %s", dir, strerror(errno));
	goto out;
ossl_fail:
	snprintf(err, errsz, "making self-signed certificate: %s", tls_last_error(e, sizeof(e)));
out:
	if (f)
		fclose(f);
	X509_free(x);
	EVP_PKEY_free(pkey);
	return rc;
}
