/* Printing and comparing configurations: each value in the syntax the parser reads,
 * `sealmail config show` (value and where it came from), the option reference of
 * docs/config.md, and the equality and reload checks of SIGHUP. Runs in the master and the
 * CLI. Untrusted input: none directly; it reads a struct conf that conf_load already
 * checked, and quotes values so that its output loads back to the same config. */
#include "conf/conf.h"
#include "conf/conf_int.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

/* ---- values in print form ---- */

void conf_opt_name(const struct conf_option *o, char *buf, size_t n)
{
	if (o->section)
		snprintf(buf, n, "%s.%s", o->section, o->key);
	else
		snprintf(buf, n, "%s", o->key);
}

void conf_fmt_num(enum conf_type t, long long v, char *buf, size_t n)
{
	if (t == CT_SIZE && v != 0 && v % GIB == 0)
		snprintf(buf, n, "%lldG", v / GIB);
	else if (t == CT_SIZE && v != 0 && v % MIB == 0)
		snprintf(buf, n, "%lldM", v / MIB);
	else if (t == CT_SIZE && v != 0 && v % KIB == 0)
		snprintf(buf, n, "%lldK", v / KIB);
	else if (t == CT_DURATION && v != 0 && v % 86400 == 0)
		snprintf(buf, n, "%lldd", v / 86400);
	else if (t == CT_DURATION && v != 0 && v % 3600 == 0)
		snprintf(buf, n, "%lldh", v / 3600);
	else if (t == CT_DURATION && v != 0 && v % 60 == 0)
		snprintf(buf, n, "%lldm", v / 60);
	else if (t == CT_DURATION)
		snprintf(buf, n, "%llds", v);
	else
		snprintf(buf, n, "%lld", v);
}

static long long num_load(const struct conf_option *o, const struct conf *c)
{
	const char *p = cfield(c, o);
	if (o->type == CT_SIZE) {
		uint64_t u;
		memcpy(&u, p, sizeof(u));
		return u > (uint64_t)LLONG_MAX ? LLONG_MAX : (long long)u;
	}
	if (o->type == CT_BOOL) {
		bool b;
		memcpy(&b, p, sizeof(b));
		return b;
	}
	int i;
	memcpy(&i, p, sizeof(i));
	return i;
}

void conf_fmt_listen(const struct conf_listener *l, char *buf, size_t n)
{
	if (!l->enabled)
		snprintf(buf, n, "%s", "");
	else if (strchr(l->addr, ':'))
		snprintf(buf, n, "[%s]:%d", l->addr, l->port);
	else
		snprintf(buf, n, "%s:%d", l->addr, l->port);
}

/* The value of option o in the syntax the parser reads (without quoting). */
static void fmt_value(const struct conf_option *o, const struct conf *c, char *buf, size_t n)
{
	struct conf_listener l;
	long long v;

	switch (o->type) {
	case CT_STRING:
	case CT_PATH:
		snprintf(buf, n, "%s", cfield(c, o));
		break;
	case CT_LISTEN:
		memcpy(&l, cfield(c, o), sizeof(l));
		conf_fmt_listen(&l, buf, n);
		break;
	case CT_BOOL:
		snprintf(buf, n, "%s", num_load(o, c) ? "yes" : "no");
		break;
	case CT_ENUM:
		v = num_load(o, c);
		for (long long k = 0; k <= v; k++) {
			if (!o->names[k]) {
				v = -1;
				break;
			}
		}
		snprintf(buf, n, "%s", v >= 0 ? o->names[v] : "?");
		break;
	case CT_CERT:
	case CT_KEY:
		buf[0] = '\0';
		break;
	default:
		conf_fmt_num(o->type, num_load(o, c), buf, n);
		break;
	}
}

/* Quotes v when the parser would otherwise read it differently. */
static void quote_value(const char *v, char *buf, size_t n)
{
	size_t l = strlen(v), o = 0;
	bool need = l == 0 || v[0] == '"' || v[0] == ' ' || v[0] == '\t' || v[l - 1] == ' ' ||
	            v[l - 1] == '\t' || strchr(v, '#');

	if (!need) {
		snprintf(buf, n, "%s", v);
		return;
	}
	if (n < 3) {
		buf[0] = '\0';
		return;
	}
	buf[o++] = '"';
	for (size_t i = 0; i < l && o + 3 < n; i++) {
		if (v[i] == '"' || v[i] == '\\')
			buf[o++] = '\\';
		buf[o++] = v[i];
	}
	buf[o++] = '"';
	buf[o] = '\0';
}

static void print_line(FILE *out, const char *name, const char *value, const struct conf *c,
                       struct conf_source src)
{
	char q[2 * PATH_MAX + 3];
	const char *file = conf_source_file(c, src);
	int n;

	quote_value(value, q, sizeof(q));
	n = fprintf(out, "%s = %s", name, q);
	for (; n >= 0 && n < 39; n++)
		fputc(' ', out);
	if (file)
		fprintf(out, " # %s:%d\n", file, src.line);
	else
		fprintf(out, " # default\n");
}

/* ---- config show, the reference, reload ---- */

void conf_print(FILE *out, const struct conf *c, bool nondefault_only)
{
	char name[2 * CONF_NAME_MAX], val[PATH_MAX + 64];

	for (size_t i = 0; i < NOPTS; i++) {
		const struct conf_option *o = &conf_opts[i];
		if (o->type == CT_KEY)
			continue;
		if (o->type == CT_CERT) {
			int nc = c->ncerts < 0 ? 0 : c->ncerts > LIM_CERTS ? LIM_CERTS : c->ncerts;
			if (nc == 0 && !nondefault_only)
				fprintf(out,
				        "# tls.cert, tls.key: none; a self-signed certificate is "
				        "made in data_dir\n");
			for (int k = 0; k < nc; k++) {
				print_line(out, "tls.cert", c->certs[k].cert_file, c,
				           c->certs[k].cert_src);
				print_line(out, "tls.key", c->certs[k].key_file, c,
				           c->certs[k].key_src);
			}
			continue;
		}
		if (nondefault_only && c->src[i].line <= 0)
			continue;
		conf_opt_name(o, name, sizeof(name));
		fmt_value(o, c, val, sizeof(val));
		/* a password is never printed; "set" shows that there is one */
		if (o->secret && val[0])
			snprintf(val, sizeof(val), "(set, not shown)");
		print_line(out, name, val, c, c->src[i]);
	}
}

void conf_print_reference(FILE *out)
{
	char name[2 * CONF_NAME_MAX], def[2 * PATH_MAX + 160], lo[32], hi[32], range[256];
	struct conf *d = xmalloc(sizeof(*d));

	conf_apply_defaults(d, false);
	fprintf(out, "| option | default | range | reload | meaning |\n");
	fprintf(out, "| --- | --- | --- | --- | --- |\n");
	for (size_t i = 0; i < NOPTS; i++) {
		const struct conf_option *o = &conf_opts[i];
		conf_opt_name(o, name, sizeof(name));
		if (o->def_doc) {
			snprintf(def, sizeof(def), "%s", o->def_doc);
		} else if (o->type == CT_CERT || o->type == CT_KEY) {
			snprintf(def, sizeof(def), "none");
		} else {
			char v1[PATH_MAX + 64];
			fmt_value(o, d, v1, sizeof(v1));
			if (o->def_embedded && strcmp(o->def_embedded, v1) != 0)
				snprintf(def, sizeof(def), "`%s` (no file: `%s`)",
				         v1[0] ? v1 : "\"\"",
				         o->def_embedded[0] ? o->def_embedded : "\"\"");
			else
				snprintf(def, sizeof(def), "`%s`", v1[0] ? v1 : "\"\"");
		}
		switch (o->type) {
		case CT_INT:
		case CT_SIZE:
		case CT_DURATION:
			conf_fmt_num(o->type, o->min, lo, sizeof(lo));
			conf_fmt_num(o->type, o->max, hi, sizeof(hi));
			snprintf(range, sizeof(range), "%s – %s", lo, hi);
			break;
		case CT_BOOL:
			snprintf(range, sizeof(range), "yes, no");
			break;
		case CT_ENUM:
			range[0] = '\0';
			for (int k = 0; o->names[k]; k++)
				snprintf(range + strlen(range), sizeof(range) - strlen(range),
				         "%s%s", k ? ", " : "", o->names[k]);
			break;
		case CT_LISTEN:
			snprintf(range, sizeof(range), "IP:PORT, [IPv6]:PORT, \"\"");
			break;
		case CT_STRING:
			snprintf(range, sizeof(range), "%s", o->syntax ? o->syntax : "text");
			break;
		default:
			snprintf(range, sizeof(range), "path");
			break;
		}
		fprintf(out, "| `%s` | %s | %s | %s | %s |\n", name, def, range,
		        o->reload ? "yes" : "no", o->doc);
	}
	free(d);
}

static bool certs_same(const struct conf *a, const struct conf *b)
{
	if (a->ncerts != b->ncerts || a->ncerts < 0 || a->ncerts > LIM_CERTS)
		return a->ncerts == b->ncerts;
	for (int k = 0; k < a->ncerts; k++)
		if (strcmp(a->certs[k].cert_file, b->certs[k].cert_file) != 0 ||
		    strcmp(a->certs[k].key_file, b->certs[k].key_file) != 0)
			return false;
	return true;
}

bool conf_same(const struct conf *a, const struct conf *b)
{
	char va[PATH_MAX + 64], vb[PATH_MAX + 64];

	for (size_t i = 0; i < NOPTS; i++) {
		fmt_value(&conf_opts[i], a, va, sizeof(va));
		fmt_value(&conf_opts[i], b, vb, sizeof(vb));
		if (strcmp(va, vb) != 0)
			return false;
	}
	return certs_same(a, b);
}

int conf_reload_check(const struct conf *cur, const struct conf *next, struct conf_error *err)
{
	char va[PATH_MAX + 64], vb[PATH_MAX + 64], name[2 * CONF_NAME_MAX];

	for (size_t i = 0; i < NOPTS; i++) {
		const struct conf_option *o = &conf_opts[i];
		if (o->reload)
			continue;
		fmt_value(o, cur, va, sizeof(va));
		fmt_value(o, next, vb, sizeof(vb));
		if (strcmp(va, vb) != 0) {
			conf_opt_name(o, name, sizeof(name));
			return conf_fail(
			    err, NULL, 0, name,
			    "cannot change on reload (\"%s\" -> \"%s\"); restart sealmail", va, vb);
		}
	}
	return 0;
}
