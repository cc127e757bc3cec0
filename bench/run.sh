#!/usr/bin/env bash
# bench/run.sh: the sealmail benchmark matrix, printed as a markdown table.
#
# Starts ../sealmail (built by `make` in the project root) on its embedded defaults with
# SEALMAIL_HOME in a temp dir, creates the recipient bench@localhost, then measures with
# bench/smtpload:
#   4 KB messages at c = 1, 10, 50 x {plain new connection per message,
#   STARTTLS new connection per message, STARTTLS reused connection}
#   + 1000 idle STARTTLS sessions (server memory).
# PEER=1 (as root, needs ../shared/bench/peer-setup.sh, optional): the same matrix against
# Postfix on 127.0.0.1:10025, side by side in the table.
#
# Environment (defaults):
#   MSGS=2000 DURATION=60 SIZE=4096 CONNS="1 10 50" REUSE_PER_CONN=500
#   IDLE=1000 IDLE_SECS=10 IDLE_SETUP=180 SETTLE=5 SM_MAX_PER_SRC=15 TIMEOUT=10
#   SEALMAIL=<root>/sealmail  PORT=2525  PEER=0  PEER_SETUP=<root>/../shared/bench/peer-setup.sh
#   OUT=<new temp dir> (JSON of every cell, server log, results.md)  KEEP=0 (keep SEALMAIL_HOME)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
PORT=${PORT:-2525}
MSGS=${MSGS:-2000}
CONNS=${CONNS:-1 10 50}
IDLE=${IDLE:-1000}
IDLE_SECS=${IDLE_SECS:-10}
IDLE_SETUP=${IDLE_SETUP:-180}
TIMEOUT=${TIMEOUT:-10}

OUT=${OUT:-$(mktemp -d /tmp/sealmail-bench.XXXXXX)}
mkdir -p "$OUT"
make -s -C "$HERE" smtpload

# the matrix against one server: LABEL PORT SERVER-ARGS...
matrix() {
	local label=$1 port=$2; shift 2
	local c
	for c in $CONNS; do
		cell "$label-plain-c$c" "$port" "$@" -- --conns "$c" --msgs "$MSGS" \
			--duration "$DURATION" --size "$SIZE" --per-conn 1
	done
	for c in $CONNS; do
		cell "$label-starttls-c$c" "$port" "$@" -- --conns "$c" --msgs "$MSGS" \
			--duration "$DURATION" --size "$SIZE" --per-conn 1 --starttls
	done
	for c in $CONNS; do
		cell "$label-reuse-c$c" "$port" "$@" -- --conns "$c" --msgs "$MSGS" \
			--duration "$DURATION" --size "$SIZE" --per-conn "$REUSE_PER_CONN" --starttls
	done
	cell "$label-idle" "$port" "$@" -- --idle "$IDLE" --idle-secs "$IDLE_SECS" --conns 50 \
		--duration "$IDLE_SETUP" --starttls
}

# ---------------------------------------------------------------- sealmail
SERVERS=(sealmail)
use_embedded_defaults
ports_free "$PORT"
new_home
say "== SEALMAIL_HOME=$SM_HOME $SEALMAIL mailbox add bench@localhost"
if ! "$SEALMAIL" mailbox add bench@localhost </dev/null >"$OUT/mailbox-add.log" 2>&1; then
	say "run.sh: \`sealmail mailbox add bench@localhost\` failed:"; cat "$OUT/mailbox-add.log" >&2
	exit 1
fi
start_sealmail "$PORT"
matrix sealmail "$PORT" --server-pids "$SM_PID" --max-per-src "$SM_MAX_PER_SRC"
finish_sealmail

# ---------------------------------------------------------------- Postfix (optional)
if peer_wanted; then
	PEER_STARTED=1
	"$PEER_SETUP" start >&2
	postfix_server_args
	SERVERS+=(postfix)
	matrix postfix "$PEER_PORT" "${PF_ARGS[@]}"
	"$PEER_SETUP" stop >&2 || true
	PEER_STARTED=0
fi

# ---------------------------------------------------------------- table
mib() { [ "$1" = - ] && printf -- - || awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }

{
	echo "sealmail bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $SIZE-byte messages, up to $MSGS per cell, ${DURATION} s bound"
	echo
	echo "| server | mode | c | ok | failed | msgs/s | p50 ms | p99 ms | max ms | server CPU ms/msg | client CPU ms/msg |"
	echo "| --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: |"
	for mode in plain starttls reuse; do
		case $mode in
		plain) mname="plain, new conn/msg" ;;
		starttls) mname="STARTTLS, new conn/msg" ;;
		reuse) mname="STARTTLS, reused conn (≤$REUSE_PER_CONN msgs)" ;;
		esac
		for c in $CONNS; do
			for s in "${SERVERS[@]}"; do
				f=$OUT/$s-$mode-c$c.json
				echo "| $s | $mname | $c | $(jget "$f" ok) | $(jget "$f" failed) | $(jget "$f" msgs_per_s) | $(jget "$f" lat_p50_ms) | $(jget "$f" lat_p99_ms) | $(jget "$f" lat_max_ms) | $(jget "$f" server_cpu_ms_per_msg) | $(jget "$f" client_cpu_ms_per_msg) |"
			done
		done
	done
	echo
	echo "Idle STARTTLS sessions (held $IDLE_SECS s):"
	echo
	echo "| server | held / asked | setup s | RSS before MiB | RSS held MiB | RSS KiB/session | PSS before MiB | PSS held MiB | PSS KiB/session | server CPU ms/session |"
	echo "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: |"
	for s in "${SERVERS[@]}"; do
		f=$OUT/$s-idle.json
		echo "| $s | $(jget "$f" sessions_held) / $IDLE | $(jget "$f" setup_s) | $(mib "$(jget "$f" server_rss_before_kib)") | $(mib "$(jget "$f" server_rss_held_kib)") | $(jget "$f" server_rss_per_session_kib) | $(mib "$(jget "$f" server_pss_before_kib)") | $(mib "$(jget "$f" server_pss_held_kib)") | $(jget "$f" server_pss_per_session_kib) | $(jget "$f" server_cpu_ms_per_session) |"
	done
	print_errors
} | tee "$OUT/results.md"
say "== raw JSON, commands and logs in $OUT"
