/* `sealmail config check|show`: loads the configuration the way `serve` would, checks that
 * certificate and key files can be read, and prints every effective value with its source.
 * Runs in the CLI only. Input: the admin's command line and configuration files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "conf/conf.h"
#include "util/log.h"

/* ---- sealmail config check|show ---- */

static int check_readable(const struct conf *c, struct conf_source src, const char *opt,
                          const char *file)
{
	const char *where = conf_source_file(c, src);
	struct stat st;
	int fd = open(file, O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "%s:%d: %s: %s: %s\n", where ? where : "?", src.line, opt, file,
		        strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "%s:%d: %s: %s: not a regular file\n", where ? where : "?",
		        src.line, opt, file);
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: sealmail config check [-c FILE]\n"
	        "       sealmail config show [-n] [-c FILE]\n"
	        "       sealmail config reference   (the option table as Markdown)\n"
	        "  -c FILE  config file (default: $SEALMAIL_CONF, else %s if it exists,\n"
	        "           else the embedded defaults)\n"
	        "  -n       show only options set in the file\n",
	        CONF_DEFAULT_PATH);
}

int conf_cli(int argc, char **argv)
{
	const char *cli_path = NULL, *path;
	bool check, nondefault_only = false;
	struct conf_error err;
	struct conf *c;
	int rc = EX_OK;

	if (argc < 1 || !argv || !argv[0]) {
		usage(stderr);
		return EX_USAGE;
	}
	if (strcmp(argv[0], "reference") == 0) {
		/* the option table as Markdown: the reference part of docs/config.md */
		conf_print_reference(stdout);
		return EX_OK;
	}
	if (strcmp(argv[0], "check") == 0) {
		check = true;
	} else if (strcmp(argv[0], "show") == 0) {
		check = false;
	} else {
		usage(stderr);
		return EX_USAGE;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!a)
			break;
		if (strcmp(a, "-c") == 0 && i + 1 < argc && argv[i + 1] && argv[i + 1][0]) {
			cli_path = argv[++i];
		} else if (strncmp(a, "-c", 2) == 0 && a[2]) {
			cli_path = a + 2;
		} else if (strcmp(a, "-n") == 0) {
			nondefault_only = true;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return EX_OK;
		} else {
			fprintf(stderr, "sealmail config %s: bad argument: %s\n", argv[0],
			        strcmp(a, "-c") == 0 ? "-c needs a file name" : a);
			usage(stderr);
			return EX_USAGE;
		}
	}

	path = conf_pick_path(cli_path);
	c = xcalloc(1, sizeof(*c));
	if (path) {
		if (conf_load(path, c, &err) != 0) {
			fprintf(stderr, "%s\n", err.msg);
			rc = EX_CONFIG;
			goto out;
		}
	} else {
		conf_defaults(c);
	}
	if (check) {
		for (int k = 0; k < c->ncerts && k < LIM_CERTS; k++) {
			if (check_readable(c, c->certs[k].cert_src, "tls.cert",
			                   c->certs[k].cert_file) < 0)
				rc = EX_CONFIG;
			if (check_readable(c, c->certs[k].key_src, "tls.key",
			                   c->certs[k].key_file) < 0)
				rc = EX_CONFIG;
		}
		if (rc != EX_OK)
			goto out;
	} else {
		printf("# config: %s\n", path ? path : "(embedded defaults)");
	}
	conf_print(stdout, c, nondefault_only);
	if (check)
		printf("config ok: %s\n", path ? path : "(embedded defaults)");
	fflush(stdout);
out:
	free(c);
	return rc;
}
