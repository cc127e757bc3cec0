#!/bin/sh
# Installs the Debian 12 packages sealmail needs to build, test and benchmark.
# Idempotent: installs only what is missing. Must run as root (or with sudo available).
set -eu
PKGS="build-essential pkg-config libssl-dev libevent-dev libsqlite3-dev libsodium-dev
libcmocka-dev libunbound-dev clang libclang-rt-14-dev openssl sqlite3 python3 python3-pytest
python3-dnslib"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
	echo "install-deps: all packages present"
	exit 0
fi
echo "install-deps: installing:$missing"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q || echo "install-deps: apt-get update failed; trying with the cached lists"
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
