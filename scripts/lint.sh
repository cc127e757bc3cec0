#!/bin/sh
# Fails on banned calls and on source files without their header comment (STYLE.md 11).
set -eu
cd "$(dirname "$0")/.."
status=0
banned='\b(strcpy|strcat|sprintf|vsprintf|gets|atoi|atol|atoll|strtok)[[:space:]]*\('
if grep -nE "$banned" $(find src tests/unit tests/fuzz bench -name '*.c' -o -name '*.h') | grep -v 'lint:allow'; then
	echo "lint: banned call(s) above (use snprintf, memcpy with bounds, strtol)" >&2
	status=1
fi
for f in $(find src -name '*.c' -o -name '*.h'); do
	if ! head -n 1 "$f" | grep -q '^/\*'; then
		echo "lint: $f does not start with its header comment" >&2
		status=1
	fi
done
[ $status -eq 0 ] && echo "lint: ok"
exit $status
