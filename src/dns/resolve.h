/* Asynchronous DNS for outbound delivery over libunbound on the queue process's libevent loop
 * (ub_ctx_create_event): the route to a domain (MX sorted by preference, random among
 * equals; A/AAAA fallback when there is no MX; null MX, RFC 7505; CNAMEs followed) and the
 * addresses of a single host (relayhost). Every answer carries its DNSSEC status for DANE.
 * Runs in the queue process and in `sealmail check route`. Untrusted input: DNS answers
 * (names and counts are bounded below; nothing from them is trusted as a C string before it
 * is checked). */
#ifndef SEALMAIL_DNS_RESOLVE_H
#define SEALMAIL_DNS_RESOLVE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "limits.h"

/* Most MX hosts kept per domain, and addresses per host (more are ignored, in order). */
#define DNS_MAX_HOSTS 16
#define DNS_MAX_ADDRS 8

enum dns_sec {
	DNS_SEC_INSECURE = 0, /* no DNSSEC (or no trust anchor configured) */
	DNS_SEC_SECURE,       /* validated */
	DNS_SEC_BOGUS,        /* validation failed: the answer must not be used */
};

enum dns_status {
	DNS_OK = 0,      /* hosts[] filled (at least one host with at least one address) */
	DNS_NXDOMAIN,    /* the domain does not exist (permanent: 5.1.2) */
	DNS_NULL_MX,     /* the domain accepts no mail: MX 0 "." (permanent: 5.1.10) */
	DNS_NO_ADDRESS,  /* MX hosts (or the domain) have no A/AAAA (temporary: 4.4.4) */
	DNS_TEMPFAIL,    /* SERVFAIL, timeout, bogus DNSSEC, resolver error (temporary: 4.4.3) */
};

/* Which address families to use. */
enum dns_family { DNS_FAMILY_ALL = 0, DNS_FAMILY_IPV4, DNS_FAMILY_IPV6 };

struct dns_host {
	char name[LIM_DOMAIN + 1];   /* MX target (or the domain itself for the fallback),
				      * lower case, no trailing dot */
	int pref;                    /* MX preference; 0 for the fallback and single hosts */
	enum dns_sec sec;            /* of its address answers (the weaker of A and AAAA) */
	int naddrs;
	struct sockaddr_storage addrs[DNS_MAX_ADDRS]; /* port 0; IPv6 first, then IPv4 */
	char why[128];               /* when naddrs == 0: why ("no A/AAAA records", "SERVFAIL") */
};

struct dns_route {
	enum dns_status status;
	char domain[LIM_DOMAIN + 1]; /* as asked, lower case */
	char canonical[LIM_DOMAIN + 1]; /* after CNAMEs ("" when none) */
	bool implicit;               /* no MX: the domain's own A/AAAA (RFC 5321 5.1) */
	enum dns_sec mx_sec;         /* of the MX answer (for the implicit case: of the A/AAAA) */
	char why[256];               /* status != DNS_OK: the reason in words, naming the name
				      * and record type ("MX lookup for example.com: SERVFAIL") */
	int nhosts;                  /* hosts in order of preference (random among equals);
				      * hosts without addresses are kept (naddrs 0) */
	struct dns_host hosts[DNS_MAX_HOSTS];
};

struct dns_config {
	const char *resolv_conf;     /* "" = none; default /etc/resolv.conf */
	const char *forwarders;      /* "" or "IP[@port] IP[@port] ..." (then resolv_conf unused) */
	const char *trust_anchor;    /* "" or a file of DS/DNSKEY records (auto-trust-anchor
				      * format is fine too): answers are then validated */
	enum dns_family family;
	int timeout;                 /* seconds for a whole route (all queries); 0 = 30 */
};

struct dns_resolver;
struct dns_query;

/* A resolver on `base`. The `test.` special-use zone is made transparent (RFC 6761 would
 * answer NXDOMAIN locally) and queries to loopback forwarders are allowed, so a DNS server
 * on 127.0.0.1 can serve test domains. NULL with a reason in err on failure (bad forwarder,
 * unreadable trust anchor). */
struct dns_resolver *dns_new(struct event_base *base, const struct dns_config *cfg, char *err,
			     size_t errsz);
/* Cancels every outstanding query (their callbacks are not called) and frees. */
void dns_free(struct dns_resolver *r);

typedef void (*dns_route_cb)(void *arg, const struct dns_route *route);

/* Resolves the mail route of `domain` (an address literal like "[192.0.2.1]" gives one host
 * with that address and no query). cb is called exactly once, never before dns_route()
 * returns, unless the query is cancelled. The route passed to cb is valid only during the
 * call. Returns NULL (and never calls cb) only when domain is not a valid name. */
struct dns_query *dns_route(struct dns_resolver *r, const char *domain, dns_route_cb cb,
			    void *arg);
/* The addresses of one host (relayhost): a route with one host (pref 0) or a status;
 * numeric IPv4/IPv6 addresses are answered without a query. Same callback rules. */
struct dns_query *dns_host(struct dns_resolver *r, const char *host, dns_route_cb cb, void *arg);
/* Stops a query: its callback will not be called. */
void dns_cancel(struct dns_query *q);

const char *dns_sec_name(enum dns_sec s); /* "insecure", "secure", "bogus" */
const char *dns_status_name(enum dns_status s); /* "ok", "nxdomain", "null-mx", ... */
/* "192.0.2.1" or "2001:db8::1" of an address. */
void dns_addr_str(const struct sockaddr_storage *ss, char *buf, size_t n);

#endif
