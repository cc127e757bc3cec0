/* libFuzzer driver for the config parser (src/conf/conf.c): each input is written to a file
 * in a private temp directory and loaded with conf_load; when it loads, conf_print's output
 * must load again to the same config (the round trip conf_print promises). Runs only in the
 * fuzzer; all of the input is untrusted. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "util/log.h"

static char dir[64], in_path[96], out_path[96];

static void write_all(const char *path, const uint8_t *data, size_t size)
{
	FILE *f = fopen(path, "w");
	if (!f)
		abort();
	if (size && fwrite(data, 1, size, f) != size)
		abort();
	if (fclose(f) != 0)
		abort();
}

static void cleanup(void)
{
	unlink(in_path);
	unlink(out_path);
	rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct conf a, b;
	struct conf_error err;
	char *text = NULL;
	size_t len = 0;

	if (!dir[0]) {
		snprintf(dir, sizeof(dir), "/tmp/sealmail-fuzz-conf-XXXXXX");
		if (!mkdtemp(dir))
			abort();
		snprintf(in_path, sizeof(in_path), "%s/in.conf", dir);
		snprintf(out_path, sizeof(out_path), "%s/printed.conf", dir);
		atexit(cleanup);
	}
	write_all(in_path, data, size);
	if (conf_load(in_path, &a, &err) != 0) {
		if (!memchr(err.msg, '\0', sizeof(err.msg)))
			abort();
		return 0;
	}
	FILE *m = open_memstream(&text, &len);
	if (!m)
		abort();
	conf_print(m, &a, false);
	fclose(m);
	write_all(out_path, (const uint8_t *)text, len);
	if (conf_load(out_path, &b, &err) != 0) {
		fprintf(stderr, "printed config does not load: %s\n%s", err.msg, text);
		abort();
	}
	if (!conf_same(&a, &b)) {
		fprintf(stderr, "printed config loads differently:\n%s", text);
		abort();
	}
	free(text);
	return 0;
}
