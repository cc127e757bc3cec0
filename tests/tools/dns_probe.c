/* dns_probe: runs dns_route() (or dns_host() with --host) against the resolver of
 * src/dns/resolve.c on a libevent loop and prints the route as one JSON object per line, for
 * tests/e2e/test_dns.py. Test tool, not installed. Untrusted input: the resolver's answers
 * (printed JSON-escaped).
 *
 *   dns_probe [--forwarder IP@PORT]... [--resolv-conf FILE] [--trust-anchor FILE]
 *             [--family all|ipv4|ipv6] [--timeout S] [--repeat N | --parallel N] [--host]
 *             [--cancel | --free-pending] NAME
 *
 * --repeat N resolves NAME N times one after another in the same process (answers may then
 * come from libunbound's cache); --parallel N starts N lookups of NAME at once. The resolver
 * is freed inside the last callback. --cancel starts the lookup, cancels it at once and checks
 * that no callback comes; --free-pending frees the resolver while the lookup is in flight.
 * Exit 0 when every route was printed (whatever its status), 2 on usage or setup errors,
 * 3 when the callback broke its contract. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "dns/resolve.h"

struct probe {
	struct event_base *base;
	struct dns_resolver *r;
	const char *name;
	bool host_mode;
	int remaining;
	int calls;
	bool parallel;
	bool in_start; /* the callback must never run inside dns_route()/dns_host() */
	int bad;
};

static void json_str(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static void print_route(const struct dns_route *rt)
{
	printf("{\"status\":");
	json_str(dns_status_name(rt->status));
	printf(",\"domain\":");
	json_str(rt->domain);
	printf(",\"why\":");
	json_str(rt->why);
	printf(",\"implicit\":%s,\"canonical\":", rt->implicit ? "true" : "false");
	json_str(rt->canonical);
	printf(",\"mx_sec\":");
	json_str(dns_sec_name(rt->mx_sec));
	printf(",\"hosts\":[");
	for (int i = 0; i < rt->nhosts && i < DNS_MAX_HOSTS; i++) {
		const struct dns_host *h = &rt->hosts[i];
		printf("%s{\"name\":", i ? "," : "");
		json_str(h->name);
		printf(",\"pref\":%d,\"sec\":", h->pref);
		json_str(dns_sec_name(h->sec));
		printf(",\"addrs\":[");
		for (int a = 0; a < h->naddrs && a < DNS_MAX_ADDRS; a++) {
			char buf[64];
			dns_addr_str(&h->addrs[a], buf, sizeof(buf));
			printf("%s", a ? "," : "");
			json_str(buf);
		}
		printf("],\"why\":");
		json_str(h->why);
		printf("}");
	}
	printf("]}\n");
	fflush(stdout);
}

static bool start(struct probe *p);

static void on_route(void *arg, const struct dns_route *rt)
{
	struct probe *p = arg;

	if (p->in_start) {
		fprintf(stderr, "dns_probe: callback ran inside dns_route()\n");
		p->bad = 1;
	}
	p->calls++;
	print_route(rt);
	if (--p->remaining > 0) {
		if (!p->parallel && !start(p))
			event_base_loopbreak(p->base);
		return;
	}
	/* the contract allows freeing the resolver from inside a callback */
	dns_free(p->r);
	p->r = NULL;
	event_base_loopbreak(p->base);
}

static struct dns_query *launch(struct probe *p)
{
	struct dns_query *q;
	p->in_start = true;
	q = p->host_mode ? dns_host(p->r, p->name, on_route, p)
	                 : dns_route(p->r, p->name, on_route, p);
	p->in_start = false;
	return q;
}

static bool start(struct probe *p)
{
	if (launch(p) == NULL) {
		printf("{\"error\":\"invalid name\"}\n");
		fflush(stdout);
		p->bad = 2;
		return false;
	}
	return true;
}

static void usage(void)
{
	fprintf(stderr, "usage: dns_probe [--forwarder IP@PORT]... [--resolv-conf FILE] "
	                "[--trust-anchor FILE] [--family all|ipv4|ipv6] [--timeout S] "
	                "[--repeat N|--parallel N] [--host] [--cancel|--free-pending] NAME\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct dns_config cfg = {.resolv_conf = "", .forwarders = "", .trust_anchor = ""};
	char fwd[1024] = "", err[256];
	struct probe p = {.remaining = 1};
	bool cancel = false, free_pending = false;
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has = i + 1 < argc;
		if (strcmp(a, "--forwarder") == 0 && has) {
			size_t n = strlen(fwd);
			snprintf(fwd + n, sizeof(fwd) - n, "%s%s", n ? " " : "", argv[++i]);
		} else if (strcmp(a, "--resolv-conf") == 0 && has) {
			cfg.resolv_conf = argv[++i];
		} else if (strcmp(a, "--trust-anchor") == 0 && has) {
			cfg.trust_anchor = argv[++i];
		} else if (strcmp(a, "--family") == 0 && has) {
			const char *f = argv[++i];
			if (strcmp(f, "all") == 0)
				cfg.family = DNS_FAMILY_ALL;
			else if (strcmp(f, "ipv4") == 0)
				cfg.family = DNS_FAMILY_IPV4;
			else if (strcmp(f, "ipv6") == 0)
				cfg.family = DNS_FAMILY_IPV6;
			else
				usage();
		} else if (strcmp(a, "--timeout") == 0 && has) {
			cfg.timeout = (int)strtol(argv[++i], NULL, 10);
		} else if (strcmp(a, "--repeat") == 0 && has) {
			p.remaining = (int)strtol(argv[++i], NULL, 10);
			if (p.remaining < 1 || p.remaining > 1000)
				usage();
		} else if (strcmp(a, "--parallel") == 0 && has) {
			p.remaining = (int)strtol(argv[++i], NULL, 10);
			p.parallel = true;
			if (p.remaining < 1 || p.remaining > 1000)
				usage();
		} else if (strcmp(a, "--host") == 0) {
			p.host_mode = true;
		} else if (strcmp(a, "--cancel") == 0) {
			cancel = true;
		} else if (strcmp(a, "--free-pending") == 0) {
			free_pending = true;
		} else if (a[0] == '-' && a[1] == '-') {
			usage();
		} else {
			break;
		}
	}
	if (i != argc - 1)
		usage();
	p.name = argv[i];
	cfg.forwarders = fwd;

	p.base = event_base_new();
	if (p.base == NULL) {
		fprintf(stderr, "dns_probe: event_base_new failed\n");
		return 2;
	}
	p.r = dns_new(p.base, &cfg, err, sizeof(err));
	if (p.r == NULL) {
		printf("{\"error\":");
		json_str(err);
		printf("}\n");
		event_base_free(p.base);
		return 2;
	}

	if (cancel || free_pending) {
		struct dns_query *q = launch(&p);
		struct timeval tv = {.tv_sec = 0, .tv_usec = 300000};
		if (q == NULL) {
			printf("{\"error\":\"invalid name\"}\n");
			p.bad = 2;
		} else if (cancel) {
			dns_cancel(q);
			event_base_loopexit(p.base, &tv);
			event_base_dispatch(p.base);
		} else {
			/* let the query reach the network, then drop everything */
			tv.tv_usec = 50000;
			event_base_loopexit(p.base, &tv);
			event_base_dispatch(p.base);
		}
		dns_free(p.r);
		/* nothing may fire after dns_free(): run the loop once more */
		tv.tv_usec = 100000;
		event_base_loopexit(p.base, &tv);
		event_base_dispatch(p.base);
		if (p.calls != 0) {
			fprintf(stderr, "dns_probe: callback after cancel/free\n");
			p.bad = 3;
		}
		if (p.bad == 0)
			printf("{\"cancelled\":true}\n");
		event_base_free(p.base);
		return p.bad;
	}

	bool ok = true;
	for (int n = p.parallel ? p.remaining : 1; n > 0 && ok; n--)
		ok = start(&p);
	if (ok)
		event_base_dispatch(p.base);
	dns_free(p.r);
	event_base_free(p.base);
	return p.bad;
}
