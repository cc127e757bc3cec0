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
ROOT=$(dirname "$HERE")
SEALMAIL=${SEALMAIL:-$ROOT/sealmail}
PORT=${PORT:-2525}
MSGS=${MSGS:-2000}
DURATION=${DURATION:-60}
SIZE=${SIZE:-4096}
CONNS=${CONNS:-1 10 50}
REUSE_PER_CONN=${REUSE_PER_CONN:-500}
IDLE=${IDLE:-1000}
IDLE_SECS=${IDLE_SECS:-10}
IDLE_SETUP=${IDLE_SETUP:-180}
SETTLE=${SETTLE:-5}
# sealmail's default limit is 20 connections per client address (src/limits.h): slots are
# spread over 127.0.0.1..N so that at most SM_MAX_PER_SRC share one. Postfix's peer config
# has no such limit, so it gets 127.0.0.1 only (other 127.x addresses cost PTR lookups).
SM_MAX_PER_SRC=${SM_MAX_PER_SRC:-15}
TIMEOUT=${TIMEOUT:-10}
PEER=${PEER:-0}
PEER_SETUP=${PEER_SETUP:-$ROOT/../shared/bench/peer-setup.sh}
PEER_PORT=10025
KEEP=${KEEP:-0}
LOAD=$HERE/smtpload

say() { printf '%s\n' "$*" >&2; }

if [ ! -x "$SEALMAIL" ]; then
	say "run.sh: $SEALMAIL not found: run \`make\` in $ROOT first"
	exit 1
fi
OUT=${OUT:-$(mktemp -d /tmp/sealmail-bench.XXXXXX)}
mkdir -p "$OUT"
make -s -C "$HERE" smtpload

SM_HOME=
SM_PID=
PEER_STARTED=0
cleanup() {
	if [ -n "$SM_PID" ] && kill -0 "$SM_PID" 2>/dev/null; then
		kill -TERM "$SM_PID" 2>/dev/null || true
		for _ in $(seq 400); do kill -0 "$SM_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$SM_PID" 2>/dev/null || true
		wait "$SM_PID" 2>/dev/null || true
	fi
	SM_PID=
	if [ "$PEER_STARTED" = 1 ]; then "$PEER_SETUP" stop >&2 || true; PEER_STARTED=0; fi
	if [ -n "$SM_HOME" ] && [ "$KEEP" != 1 ]; then rm -rf "$SM_HOME"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

listening() { ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }

# one cell: NAME PORT SERVER-ARGS... -- SMTPLOAD-ARGS...
cell() {
	local name=$1 port=$2; shift 2
	local srv=()
	while [ "$1" != -- ]; do srv+=("$1"); shift; done
	shift
	local cmd=("$LOAD" --port "$port" --timeout "$TIMEOUT"
		--cpu-settle "$SETTLE" "${srv[@]}" "$@" --json)
	say "== $name: ${cmd[*]}"
	echo "${cmd[*]}" >> "$OUT/commands.txt"
	"${cmd[@]}" > "$OUT/$name.json" || true
	[ -s "$OUT/$name.json" ] || echo '{}' > "$OUT/$name.json"
}

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
[ -z "${SEALMAIL_CONF:-}" ] || { say "run.sh: ignoring SEALMAIL_CONF=$SEALMAIL_CONF (embedded defaults)"; unset SEALMAIL_CONF; }
[ ! -e /etc/sealmail/sealmail.conf ] || say "run.sh: warning: /etc/sealmail/sealmail.conf exists and may be read instead of the embedded defaults"
if listening "$PORT"; then
	say "run.sh: something already listens on 127.0.0.1:$PORT; stop it first"
	exit 1
fi
SM_HOME=$(mktemp -d /tmp/sealmail-bench-home.XXXXXX)
export SEALMAIL_HOME=$SM_HOME
say "== SEALMAIL_HOME=$SM_HOME $SEALMAIL mailbox add bench@localhost"
if ! "$SEALMAIL" mailbox add bench@localhost </dev/null >"$OUT/mailbox-add.log" 2>&1; then
	say "run.sh: \`sealmail mailbox add bench@localhost\` failed:"; cat "$OUT/mailbox-add.log" >&2
	exit 1
fi
say "== SEALMAIL_HOME=$SM_HOME $SEALMAIL serve 2>$OUT/sealmail.log"
"$SEALMAIL" serve </dev/null >"$OUT/sealmail.log" 2>&1 &
SM_PID=$!
for _ in $(seq 100); do
	listening "$PORT" && break
	kill -0 "$SM_PID" 2>/dev/null || break
	sleep 0.1
done
if ! listening "$PORT"; then
	say "run.sh: sealmail is not listening on $PORT; its log:"; tail -n 30 "$OUT/sealmail.log" >&2
	exit 1
fi
matrix sealmail "$PORT" --server-pids "$SM_PID" --max-per-src "$SM_MAX_PER_SRC"
kill -0 "$SM_PID" 2>/dev/null || say "run.sh: warning: sealmail exited during the run (see $OUT/sealmail.log)"
cleanup

# ---------------------------------------------------------------- Postfix (optional)
if [ "$PEER" = 1 ]; then
	if [ ! -x "$PEER_SETUP" ]; then
		say "run.sh: PEER=1 but $PEER_SETUP is not there: skipping Postfix"
	elif [ "$(id -u)" != 0 ]; then
		say "run.sh: PEER=1 needs root (peer-setup.sh installs and runs Postfix): skipping Postfix"
	else
		PEER_STARTED=1
		"$PEER_SETUP" start >&2
		qdir=$(postconf -h queue_directory 2>/dev/null || echo /var/spool/postfix)
		pf_pid=$(tr -d ' \n' < "$qdir/pid/master.pid" 2>/dev/null || true)
		if [ -n "$pf_pid" ] && kill -0 "$pf_pid" 2>/dev/null; then
			pf_args=(--server-pids "$pf_pid")
		else
			pf_args=(--server-pgrep "^$(postconf -h daemon_directory)/master")
		fi
		SERVERS+=(postfix)
		matrix postfix "$PEER_PORT" "${pf_args[@]}"
		"$PEER_SETUP" stop >&2 || true
		PEER_STARTED=0
	fi
fi

# ---------------------------------------------------------------- table
jget() { # FILE KEY: a top-level scalar of smtpload's JSON (keys are unique)
	local v
	v=$(sed -n 's/.*"'"$2"'":\("[^"]*"\|[^,}]*\).*/\1/p' "$1" | head -n 1)
	v=${v#\"}; v=${v%\"}
	[ -n "$v" ] && [ "$v" != null ] && printf '%s' "$v" || printf '%s' -
}
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
	errs=$(grep -l '"error_samples":\[{' "$OUT"/*.json 2>/dev/null || true)
	if [ -n "$errs" ]; then
		echo
		echo "Errors (first samples per cell):"
		echo
		for f in $errs; do
			echo "- $(basename "$f" .json): $(sed -n 's/.*"error_samples":\[\(.*\)\].*/\1/p' "$f" | cut -c1-300)"
		done
	fi
} | tee "$OUT/results.md"
say "== raw JSON, commands and logs in $OUT"
