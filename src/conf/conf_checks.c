/* Checks for the delivery and DNS options of the config table (see conf_int.h): addresses,
 * the relayhost, forwarders, printable credentials. Runs in the master and `sealmail config
 * check`. Untrusted input: none from the network; values come from the admin's file and
 * must only ever produce an error message. */
#include "conf/conf_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool conf_check_ipv4(const char *v, char *why, size_t whysz)
{
	struct in_addr a;
	if (!*v || inet_pton(AF_INET, v, &a) == 1)
		return true;
	snprintf(why, whysz, "must be an IPv4 address such as 192.0.2.10, or \"\"");
	return false;
}

bool conf_check_ipv6(const char *v, char *why, size_t whysz)
{
	struct in6_addr a;
	if (!*v || inet_pton(AF_INET6, v, &a) == 1)
		return true;
	snprintf(why, whysz, "must be an IPv6 address such as 2001:db8::10, or \"\"");
	return false;
}

static bool host_ok(const char *h)
{
	size_t n = strlen(h), label = 0;
	struct in6_addr a6;
	if (inet_pton(AF_INET6, h, &a6) == 1)
		return true;
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i <= n; i++) {
		char ch = h[i];
		if (ch == '.' || ch == '\0') {
			if (label == 0 || label > 63)
				return false;
			label = 0;
		} else if (isalnum((unsigned char)ch) || ch == '-' || ch == '_') {
			label++;
		} else {
			return false;
		}
	}
	return true;
}

int conf_relayhost_split(const char *v, char *host, size_t hsz, int *port)
{
	const char *colon, *hs = v, *he;
	if (v[0] == '[') {
		he = strchr(v, ']');
		if (!he || he[1] != ':')
			return -1;
		hs = v + 1;
		colon = he + 1;
	} else {
		colon = strrchr(v, ':');
		if (!colon || strchr(v, ':') != colon)
			return -1;
		he = colon;
	}
	size_t hl = (size_t)(he - hs);
	if (hl == 0 || hl >= hsz)
		return -1;
	memcpy(host, hs, hl);
	host[hl] = '\0';
	char *end;
	long p = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || p < 1 || p > 65535)
		return -1;
	*port = (int)p;
	return host_ok(host) ? 0 : -1;
}

bool conf_check_relayhost(const char *v, char *why, size_t whysz)
{
	char host[300];
	int port;
	if (!*v || conf_relayhost_split(v, host, sizeof(host), &port) == 0)
		return true;
	snprintf(why, whysz,
		 "must be host:port, [host]:port or [IPv6]:port, e.g. smtp.example.net:587");
	return false;
}

bool conf_check_printable(const char *v, char *why, size_t whysz)
{
	size_t n = strlen(v);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e) {
			snprintf(why, whysz, "must be printable ASCII");
			return false;
		}
	if (n && (v[0] == ' ' || v[n - 1] == ' ')) {
		snprintf(why, whysz, "must not start or end with a space");
		return false;
	}
	return true;
}

bool conf_check_forwarders(const char *v, char *why, size_t whysz)
{
	char buf[512];
	int count = 0;
	snprintf(buf, sizeof(buf), "%s", v);
	for (char *save = NULL, *t = strtok_r(buf, " \t", &save); t;
	     t = strtok_r(NULL, " \t", &save)) {
		char *at = strchr(t, '@');
		if (at) {
			*at = '\0';
			char *end;
			long p = strtol(at + 1, &end, 10);
			if (at[1] == '\0' || *end != '\0' || p < 1 || p > 65535) {
				snprintf(why, whysz, "\"%s\": the port after @ must be 1-65535", t);
				return false;
			}
		}
		struct in6_addr a;
		if (inet_pton(AF_INET, t, &a) != 1 && inet_pton(AF_INET6, t, &a) != 1) {
			snprintf(why, whysz, "\"%s\" is not an IP address (write IP or IP@port)", t);
			return false;
		}
		if (++count > 8) {
			snprintf(why, whysz, "at most 8 forwarders");
			return false;
		}
	}
	return true;
}
