/* Shared by the admin CLI commands: opening the store named by the configuration, and
 * small output helpers (see cli_common.h). Runs in the CLI only. Input: the admin's
 * command line and configuration file. */
#include "store/cli_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>

#include "conf/conf.h"
#include "util/log.h"

/* Admin text echoed back: no control bytes reach the terminal. */
const char *safe(char *buf, size_t bufsz, const char *s)
{
	return log_safe(buf, bufsz, s, strlen(s));
}

/* mkdir -p, each new component 0700. */
int mkdir_p(const char *path)
{
	char p[PATH_MAX];
	struct stat sb;
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(p)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(p, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (p[i] != '/' && p[i] != '\0')
			continue;
		char c = p[i];
		p[i] = '\0';
		if (mkdir(p, 0700) != 0 && errno != EEXIST)
			return -1;
		p[i] = c;
	}
	if (stat(path, &sb) != 0)
		return -1;
	if (!S_ISDIR(sb.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return 0;
}

/* Config (file or embedded defaults) -> data dir -> open store. 0 or an exit code. */
int cli_store_open(const char *conf_path, struct store **out)
{
	struct conf_error cerr;
	char err[512];
	char b[PATH_MAX];
	struct conf *c = calloc(1, sizeof(*c)); /* large (certificate paths): not on the stack */

	*out = NULL;
	if (c == NULL) {
		fprintf(stderr, "sealmail: out of memory\n");
		return EX_OSERR;
	}
	conf_defaults(c);
	const char *path = conf_pick_path(conf_path);
	if (path != NULL) {
		memset(&cerr, 0, sizeof(cerr));
		if (conf_load(path, c, &cerr) != 0) {
			fprintf(stderr, "sealmail: %s\n",
			        cerr.msg[0] ? cerr.msg : "configuration error");
			free(c);
			return EX_CONFIG;
		}
	}
	if (mkdir_p(c->data_dir) != 0) {
		fprintf(stderr, "sealmail: data directory %s: %s\n",
		        safe(b, sizeof(b), c->data_dir), strerror(errno));
		free(c);
		return EX_CANTCREAT;
	}
	*out = store_open(c->data_dir, c->seed_localhost, err, sizeof(err));
	free(c);
	if (*out == NULL) {
		fprintf(stderr, "sealmail: store: %s\n", err);
		return EX_IOERR;
	}
	return 0;
}

int cli_finish(int code)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "sealmail: standard output: %s\n", strerror(errno));
		return code == 0 ? EX_IOERR : code;
	}
	return code;
}
