/* Outbound TLS policy: level names, the per-domain policy file reader and the decision for
 * one delivery. Runs in the queue process and in `sealmail config check`. Untrusted input:
 * none from the network (the domain looked up comes from a recipient address the parser
 * already checked); the policy file is the admin's, but a bad one must give "path:line:
 * message", never a crash or an unbounded allocation. */
#include "policy/tlspolicy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "limits.h"
#include "util/log.h"

struct tp_entry {
	char *key; /* lower case, no trailing dot; ".example.com" for a subdomain entry */
	enum tls_level level;
	int line;
};

struct tls_policy_map {
	struct tp_entry *e; /* sorted by key (strcmp) for bsearch */
	int n;
};

static const char *const level_names[] = {"none", "may", "encrypt", "verify"};

const char *tls_level_name(enum tls_level l)
{
	if ((unsigned)l < sizeof(level_names) / sizeof(level_names[0]))
		return level_names[l];
	return "unknown";
}

int tls_level_parse(const char *s, enum tls_level *out)
{
	if (s == NULL)
		return -1;
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			if (out != NULL)
				*out = (enum tls_level)i;
			return 0;
		}
	}
	return -1;
}

const char *tls_policy_source_name(enum tls_policy_source s)
{
	switch (s) {
	case TLS_SRC_DEFAULT:
		return "default";
	case TLS_SRC_DOMAIN:
		return "domain";
	case TLS_SRC_MESSAGE:
		return "message";
	case TLS_SRC_RELAYHOST:
		return "relayhost";
	}
	return "unknown";
}

static bool is_ldh(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-';
}

/* Normalises a policy-file domain into out (size >= LIM_DOMAIN + 2): lower case, one
 * trailing dot removed, the leading dot of a subdomain entry kept. Syntax: RFC 1035 2.3.1
 * LDH labels of 1..63 octets, no hyphen at either end of a label, at most LIM_DOMAIN octets
 * (RFC 5321 4.5.3.1.2) not counting the leading dot. IDNs must be written as A-labels. */
static bool domain_normalise(const char *s, size_t n, char *out)
{
	size_t lead = 0;
	if (n > 0 && s[n - 1] == '.')
		n--;
	if (n > 0 && s[0] == '.')
		lead = 1;
	if (n <= lead || n - lead > LIM_DOMAIN)
		return false;
	size_t label = 0;
	for (size_t i = lead; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!is_ldh(c) || (label == 0 && c == '-') || ++label > LIM_DNS_LABEL)
			return false;
	}
	if (label == 0 || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		out[i] = (char)((c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c);
	}
	out[n] = '\0';
	return true;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct tp_entry *x = a, *y = b;
	int c = strcmp(x->key, y->key);
	if (c != 0)
		return c;
	return (x->line > y->line) - (x->line < y->line);
}

static int key_cmp(const void *k, const void *b)
{
	return strcmp(k, ((const struct tp_entry *)b)->key);
}

void tls_policy_free(struct tls_policy_map *m)
{
	if (m == NULL)
		return;
	for (int i = 0; i < m->n; i++)
		free(m->e[i].key);
	free(m->e);
	free(m);
}

int tls_policy_count(const struct tls_policy_map *m)
{
	return m == NULL ? 0 : m->n;
}

/* Sorts the entries and finds the duplicate whose second occurrence comes first in the
 * file. Returns its line (and the earlier one in *first), or 0 when there is none. */
static int sort_and_find_dup(struct tls_policy_map *m, int *first, const char **key)
{
	int best = 0;
	if (m->n == 0)
		return 0;
	qsort(m->e, (size_t)m->n, sizeof(*m->e), entry_cmp);
	for (int i = 1; i < m->n; i++) {
		if (strcmp(m->e[i].key, m->e[i - 1].key) != 0)
			continue;
		if (best == 0 || m->e[i].line < best) {
			best = m->e[i].line;
			*first = m->e[i - 1].line;
			*key = m->e[i].key;
		}
	}
	return best;
}

/* Reads one line into buf (without its LF and a CR before it). Returns 1 for a line, 0 at
 * end of file, -1 on a read error; *toolong / *nul flag lines to reject (the rest of such
 * a line is consumed so the line count stays right). */
static int read_line(FILE *f, char *buf, size_t *len, bool *toolong, bool *nul)
{
	size_t n = 0;
	int c;
	bool any = false;
	*toolong = false;
	*nul = false;
	while ((c = getc(f)) != EOF) {
		any = true;
		if (c == '\n')
			break;
		if (c == '\0')
			*nul = true;
		/* one slot more than the limit so a CR before LF still fits */
		if (n < LIM_TLSPOL_LINE + 1)
			buf[n++] = (char)c;
		else
			*toolong = true;
	}
	if (ferror(f))
		return -1;
	if (!any)
		return 0;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	if (n > LIM_TLSPOL_LINE)
		*toolong = true;
	buf[n] = '\0';
	*len = n;
	return 1;
}

static size_t span_ws(const char *s, size_t i, size_t n)
{
	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	return i;
}

static size_t span_word(const char *s, size_t i, size_t n)
{
	while (i < n && s[i] != ' ' && s[i] != '\t')
		i++;
	return i;
}

/* Parses one line (s[n] is writable). True when it is fine: *key is a new allocation, or
 * NULL for a blank or comment line. False with the message in msg otherwise. */
static bool parse_line(char *s, size_t n, char **key, enum tls_level *lev, char *msg, size_t msgsz)
{
	char *hash = memchr(s, '#', n);
	if (hash != NULL)
		n = (size_t)(hash - s);
	size_t d0 = span_ws(s, 0, n), d1 = span_word(s, d0, n);
	*key = NULL;
	if (d0 == n)
		return true;
	size_t l0 = span_ws(s, d1, n), l1 = span_word(s, l0, n);
	size_t rest = span_ws(s, l1, n);
	char shown[80];
	char dom[LIM_DOMAIN + 2];
	if (!domain_normalise(s + d0, d1 - d0, dom)) {
		snprintf(msg, msgsz,
		         "bad domain \"%s\" (LDH labels of 1-63 characters, at most %d "
		         "in all; a leading '.' means subdomains; IDNs in xn-- form)",
		         log_safe(shown, sizeof(shown), s + d0, d1 - d0), LIM_DOMAIN);
		return false;
	}
	if (l0 == n) {
		snprintf(msg, msgsz,
		         "missing TLS level after \"%s\" (none, may, encrypt or verify)", dom);
		return false;
	}
	s[l1] = '\0';
	if (tls_level_parse(s + l0, lev) != 0) {
		snprintf(msg, msgsz, "unknown TLS level \"%s\" (none, may, encrypt or verify)",
		         log_safe(shown, sizeof(shown), s + l0, l1 - l0));
		return false;
	}
	if (rest != n) {
		snprintf(msg, msgsz, "unexpected text \"%s\" after the TLS level",
		         log_safe(shown, sizeof(shown), s + rest, n - rest));
		return false;
	}
	*key = xstrdup(dom);
	return true;
}

struct tls_policy_map *tls_policy_load(const char *path, char *err, size_t errsz)
{
	char line[LIM_TLSPOL_LINE + 2];
	char msg[512];
	struct tls_policy_map *m = NULL;
	int cap = 0, lineno = 0, bad = 0;
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		snprintf(err, errsz, "%s: %s", path, strerror(errno));
		return NULL;
	}
	m = xcalloc(1, sizeof(*m));
	for (;;) {
		size_t len = 0;
		bool toolong, nul;
		int r = read_line(f, line, &len, &toolong, &nul);
		if (r < 0) {
			snprintf(err, errsz, "%s: read error: %s", path, strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		if (lineno == INT_MAX) {
			snprintf(msg, sizeof(msg), "too many lines");
			bad = lineno;
			break;
		}
		lineno++;
		char *key = NULL;
		enum tls_level lev = TLS_LEVEL_NONE;
		if (toolong) {
			snprintf(msg, sizeof(msg), "line longer than %d bytes", LIM_TLSPOL_LINE);
			bad = lineno;
		} else if (nul) {
			snprintf(msg, sizeof(msg), "NUL byte in line");
			bad = lineno;
		} else if (!parse_line(line, len, &key, &lev, msg, sizeof(msg))) {
			bad = lineno;
		}
		if (bad != 0)
			break;
		if (key == NULL)
			continue;
		if (m->n == LIM_TLSPOL_ENTRIES) {
			free(key);
			snprintf(msg, sizeof(msg), "more than %d entries", LIM_TLSPOL_ENTRIES);
			bad = lineno;
			break;
		}
		if (m->n == cap) {
			cap = cap == 0 ? 64 : cap * 2;
			if (cap > LIM_TLSPOL_ENTRIES)
				cap = LIM_TLSPOL_ENTRIES;
			struct tp_entry *ne = realloc(m->e, (size_t)cap * sizeof(*ne));
			if (ne == NULL)
				fatal("out of memory");
			m->e = ne;
		}
		m->e[m->n++] = (struct tp_entry){.key = key, .level = lev, .line = lineno};
	}
	/* Report the first problem in file order: a duplicate before the syntax error wins. */
	int first = 0;
	const char *dkey = NULL;
	int dup = sort_and_find_dup(m, &first, &dkey);
	if (dup != 0 && (bad == 0 || dup < bad)) {
		snprintf(err, errsz, "%s:%d: duplicate entry for \"%s\" (first on line %d)", path,
		         dup, dkey, first);
		goto fail;
	}
	if (bad != 0) {
		snprintf(err, errsz, "%s:%d: %s", path, bad, msg);
		goto fail;
	}
	fclose(f);
	return m;
fail:
	fclose(f);
	tls_policy_free(m);
	return NULL;
}

static const struct tp_entry *find(const struct tls_policy_map *m, const char *key)
{
	/* m->n > 0 here: lookup() returns early on an empty map (bsearch wants a non-NULL base) */
	return bsearch(key, m->e, (size_t)m->n, sizeof(*m->e), key_cmp);
}

/* The map entry for a domain: exact first, then ".suffix" from the longest (the first dot)
 * to the shortest. The looked-up name is normalised like the file's (case, trailing dot);
 * something that is not a domain (an address literal, an over-long name) matches nothing. */
static const struct tp_entry *lookup(const struct tls_policy_map *m, const char *domain)
{
	char key[LIM_DOMAIN + 2];
	if (m == NULL || m->n == 0 || domain == NULL)
		return NULL;
	size_t n = strlen(domain);
	if (n > 0 && domain[n - 1] == '.')
		n--;
	if (n == 0 || n > LIM_DOMAIN)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)domain[i];
		key[i] = (char)((c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c);
	}
	key[n] = '\0';
	const struct tp_entry *e = key[0] == '.' ? NULL : find(m, key);
	for (size_t i = 1; e == NULL && i < n; i++) {
		if (key[i] == '.')
			e = find(m, key + i);
	}
	return e;
}

enum tls_level tls_policy_decide(const struct tls_policy_map *m, enum tls_level def,
                                 const char *domain, enum tls_level msg_min,
                                 enum tls_policy_source *src)
{
	enum tls_policy_source s = TLS_SRC_DEFAULT;
	enum tls_level lev = def;
	const struct tp_entry *e = lookup(m, domain);
	if (e != NULL) {
		lev = e->level;
		s = TLS_SRC_DOMAIN;
	}
	if (msg_min > lev) {
		lev = msg_min;
		s = TLS_SRC_MESSAGE;
	}
	if (src != NULL)
		*src = s;
	return lev;
}
