/* Value checks of the config option table that are not about the core server (delivery and
 * DNS options), kept out of conf.c. Each returns true when v is acceptable ("" always is:
 * it means "not set") and otherwise writes why into why[0..whysz). Runs in the master and
 * `sealmail config check`. */
#ifndef SEALMAIL_CONF_CONF_INT_H
#define SEALMAIL_CONF_CONF_INT_H

#include <stdbool.h>
#include <stddef.h>

bool conf_check_ipv4(const char *v, char *why, size_t whysz);
bool conf_check_ipv6(const char *v, char *why, size_t whysz);
/* "host:port" or "[host]:port" (host a domain name or IPv4 address; [IPv6] in brackets). */
bool conf_check_relayhost(const char *v, char *why, size_t whysz);
/* Printable ASCII without spaces at either end (logins, passwords). */
bool conf_check_printable(const char *v, char *why, size_t whysz);
/* "IP[@port]" separated by spaces, at most 8. */
bool conf_check_forwarders(const char *v, char *why, size_t whysz);

/* Splits a relayhost value into host (brackets removed) and port. 0, or -1 when malformed. */
int conf_relayhost_split(const char *v, char *host, size_t hsz, int *port);

#endif
