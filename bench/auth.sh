#!/usr/bin/env bash
# bench/auth.sh: authenticated submission (issue 3), printed as markdown tables.
#
# Starts ../sealmail (built by `make` in the project root) on its embedded defaults with
# SEALMAIL_HOME in a temp dir (MX 2525, submission 2587 with STARTTLS, submissions 2465 with
# implicit TLS), creates the account `bench` (domain load.test, login bench@load.test with
# password "secret", a plan of 10^9 recipients per hour so that no cell hits the limit) and
# the mailbox bench@localhost, then measures with bench/smtpload:
#   1. AUTH PLAIN submissions, 4 KB messages, on 2587 (STARTTLS) and 2465 (TLS), c = 10 and
#      50, a new connection (TCP + TLS + AUTH) per message and reused connections;
#   2. the latency of NOOP in one unrelated plain session on the MX port (2525), sent every
#      PROBE_INTERVAL ms: with no load (baseline), during a login storm (50 connections,
#      each: connect, STARTTLS, AUTH, one message, QUIT) and during a pure login storm
#      (connect, STARTTLS, AUTH, QUIT).
# PEER=1 (as root, needs ../shared/bench/peer-setup.sh, optional): the same against Postfix
# on 127.0.0.1:10025 (STARTTLS + AUTH PLAIN bench:secret; no 465 there: n/a), whose NOOP
# probe goes to 10025 too (its only port).
#
# Environment (defaults):
#   MSGS=1000 DURATION=60 SIZE=4096 CONNS="10 50" REUSE_PER_CONN=500 TIMEOUT=90 SETTLE=5
#   SM_MAX_PER_SRC=15 STORM_MSGS=1000 STORM_CONNS=50 STORM_DURATION=60 PROBE_INTERVAL=10
#   BASELINE_NOOPS=1000 AUTH_ONLY_STORM=1 PROBE_PER_SESSION=5000 PEER_PROBE_PER_SESSION=90
#   SEALMAIL=<root>/sealmail  PEER=0  PEER_SETUP=<root>/../shared/bench/peer-setup.sh
#   OUT=<new temp dir> (JSON of every cell, server log, results.md)  KEEP=0 (keep SEALMAIL_HOME)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
SEALMAIL=${SEALMAIL:-$ROOT/sealmail}
MX_PORT=2525
SUB_PORT=2587
SUBS_PORT=2465
MSGS=${MSGS:-1000}
DURATION=${DURATION:-60}
SIZE=${SIZE:-4096}
CONNS=${CONNS:-10 50}
# ≤ 500 per connection stays under sealmail's 1000 messages per session
REUSE_PER_CONN=${REUSE_PER_CONN:-500}
# Per-step timeout, longer than the duration bound (runs still end at DURATION + 5 s). AUTH
# replies queue behind the password hashes (argon2id, 2 threads in sealmail's lookup
# process), and a login can wait for many seconds. With a shorter timeout the client gives
# up and reconnects, while the abandoned login still holds its connection slot in sealmail
# until its hash is done. The new connections then hit the per-address limit (421), and the
# cell turns into a storm of fast refusals instead of logins. With this timeout, a login that
# waits counts as slow, or as unfinished at the bound.
TIMEOUT=${TIMEOUT:-90}
SETTLE=${SETTLE:-5}
SM_MAX_PER_SRC=${SM_MAX_PER_SRC:-15}
STORM_MSGS=${STORM_MSGS:-1000}
STORM_CONNS=${STORM_CONNS:-50}
STORM_DURATION=${STORM_DURATION:-60}
PROBE_INTERVAL=${PROBE_INTERVAL:-10}
BASELINE_NOOPS=${BASELINE_NOOPS:-1000}
# NOOPs per probe session before it is renewed (not measured): sealmail closes a session
# after 10000 commands; Postfix counts NOOP as a junk command and, after
# smtpd_junk_command_limit (100), answers every one after a 1 s pause, then 421.
PROBE_PER_SESSION=${PROBE_PER_SESSION:-5000}
PEER_PROBE_PER_SESSION=${PEER_PROBE_PER_SESSION:-90}
AUTH_ONLY_STORM=${AUTH_ONLY_STORM:-1}
PEER=${PEER:-0}
PEER_SETUP=${PEER_SETUP:-$ROOT/../shared/bench/peer-setup.sh}
PEER_PORT=10025
PEER_AUTH=${PEER_AUTH:-bench:secret}
SM_AUTH=bench@load.test:secret
KEEP=${KEEP:-0}
LOAD=$HERE/smtpload

say() { printf '%s\n' "$*" >&2; }

if [ ! -x "$SEALMAIL" ]; then
	say "auth.sh: $SEALMAIL not found: run \`make\` in $ROOT first"
	exit 1
fi
OUT=${OUT:-$(mktemp -d /tmp/sealmail-bench-auth.XXXXXX)}
mkdir -p "$OUT"
: > "$OUT/commands.txt"
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

# Waits (up to 60 s) until no TCP connection to the server's ports is open any more on the
# server's side. A login the client gave up on stays open in sealmail until its hash is
# done, and would count against the per-address connection limit of the next cell.
wait_drained() {
	local filt="" p
	for p in "$@"; do filt="${filt:+$filt or }sport = :$p"; done
	for _ in $(seq 600); do
		ss -tnH state established "( $filt )" 2>/dev/null | grep -q . || return 0
		sleep 0.1
	done
	say "auth.sh: warning: connections to $* still open after 60 s"
}

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

# the matrix against one server:
#   LABEL AUTH PROBE-PORT PROBE-PER-SESSION "SUB-PORTS" "DRAIN-PORTS" SERVER-ARGS...
# SUB-PORTS: "587:PORT" and/or "465:PORT" (which listeners to load)
matrix() {
	local label=$1 auth=$2 probe_port=$3 pps=$4 subs=$5 drain=$6; shift 6
	local sp kind port tlsarg c
	for sp in $subs; do
		kind=${sp%%:*}; port=${sp#*:}
		if [ "$kind" = 587 ]; then tlsarg=--starttls; else tlsarg=--tls; fi
		for c in $CONNS; do
			wait_drained $drain
			cell "$label-$kind-new-c$c" "$port" "$@" -- --auth "$auth" "$tlsarg" \
				--conns "$c" --msgs "$MSGS" --duration "$DURATION" --size "$SIZE" --per-conn 1
		done
		for c in $CONNS; do
			wait_drained $drain
			cell "$label-$kind-reuse-c$c" "$port" "$@" -- --auth "$auth" "$tlsarg" \
				--conns "$c" --msgs "$MSGS" --duration "$DURATION" --size "$SIZE" \
				--per-conn "$REUSE_PER_CONN"
		done
	done
	# NOOP probe: baseline without load, then during the login storms (on the first
	# submission port), the probe on the plain port
	local sport=${subs%% *}; sport=${sport#*:}
	wait_drained $drain
	cell "$label-probe-idle" "$probe_port" "$@" -- --probe-only --probe-noop "$BASELINE_NOOPS" \
		--probe-interval "$PROBE_INTERVAL" --probe-per-session "$pps" --duration "$DURATION"
	wait_drained $drain
	cell "$label-probe-storm" "$sport" "$@" -- --auth "$auth" --starttls --conns "$STORM_CONNS" \
		--msgs "$STORM_MSGS" --duration "$STORM_DURATION" --size "$SIZE" --per-conn 1 \
		--probe-noop 10000000 --probe-interval "$PROBE_INTERVAL" --probe-port "$probe_port" \
		--probe-per-session "$pps"
	if [ "$AUTH_ONLY_STORM" = 1 ]; then
		wait_drained $drain
		cell "$label-probe-storm-authonly" "$sport" "$@" -- --auth "$auth" --auth-only --starttls \
			--conns "$STORM_CONNS" --msgs "$STORM_MSGS" --duration "$STORM_DURATION" \
			--probe-noop 10000000 --probe-interval "$PROBE_INTERVAL" --probe-port "$probe_port" \
			--probe-per-session "$pps"
	fi
	wait_drained $drain
}

# ---------------------------------------------------------------- sealmail
SERVERS=(sealmail)
[ -z "${SEALMAIL_CONF:-}" ] || { say "auth.sh: ignoring SEALMAIL_CONF=$SEALMAIL_CONF (embedded defaults)"; unset SEALMAIL_CONF; }
[ ! -e /etc/sealmail/sealmail.conf ] || say "auth.sh: warning: /etc/sealmail/sealmail.conf exists and may be read instead of the embedded defaults"
for p in $MX_PORT $SUB_PORT $SUBS_PORT; do
	if listening "$p"; then
		say "auth.sh: something already listens on 127.0.0.1:$p; stop it first"
		exit 1
	fi
done
SM_HOME=$(mktemp -d /tmp/sealmail-bench-home.XXXXXX)
export SEALMAIL_HOME=$SM_HOME
sm() { # runs one setup command, logged
	say "== SEALMAIL_HOME=$SM_HOME $SEALMAIL $*"
	if ! "$SEALMAIL" "$@" >>"$OUT/setup.log" 2>&1; then
		say "auth.sh: \`sealmail $*\` failed:"; tail -n 5 "$OUT/setup.log" >&2
		exit 1
	fi
}
sm mailbox add bench@localhost </dev/null
sm account add bench --plan professional </dev/null
sm account domain add bench load.test </dev/null
# smtpload's MAIL FROM and From: are smtpload@load.test: inside the account's domain
printf '%s\n' "${SM_AUTH#*:}" | sm login add "${SM_AUTH%%:*}" bench
sm plan set bench 1000000000 </dev/null
sm account set-plan bench bench </dev/null
say "== SEALMAIL_HOME=$SM_HOME $SEALMAIL serve 2>$OUT/sealmail.log"
"$SEALMAIL" serve </dev/null >"$OUT/sealmail.log" 2>&1 &
SM_PID=$!
for _ in $(seq 100); do
	listening $MX_PORT && listening $SUB_PORT && listening $SUBS_PORT && break
	kill -0 "$SM_PID" 2>/dev/null || break
	sleep 0.1
done
if ! { listening $MX_PORT && listening $SUB_PORT && listening $SUBS_PORT; }; then
	say "auth.sh: sealmail is not listening on $MX_PORT, $SUB_PORT and $SUBS_PORT; its log:"
	tail -n 30 "$OUT/sealmail.log" >&2
	exit 1
fi
matrix sealmail "$SM_AUTH" $MX_PORT "$PROBE_PER_SESSION" "587:$SUB_PORT 465:$SUBS_PORT" \
	"$MX_PORT $SUB_PORT $SUBS_PORT" \
	--server-pids "$SM_PID" --max-per-src "$SM_MAX_PER_SRC"
"$SEALMAIL" account usage bench >"$OUT/usage.txt" 2>&1 || true
kill -0 "$SM_PID" 2>/dev/null || say "auth.sh: warning: sealmail exited during the run (see $OUT/sealmail.log)"
cleanup

# ---------------------------------------------------------------- Postfix (optional)
if [ "$PEER" = 1 ]; then
	if [ ! -x "$PEER_SETUP" ]; then
		say "auth.sh: PEER=1 but $PEER_SETUP is not there: skipping Postfix"
	elif [ "$(id -u)" != 0 ]; then
		say "auth.sh: PEER=1 needs root (peer-setup.sh installs and runs Postfix): skipping Postfix"
	else
		PEER_STARTED=1
		PEER_AUTH=$PEER_AUTH "$PEER_SETUP" start >&2
		qdir=$(postconf -h queue_directory 2>/dev/null || echo /var/spool/postfix)
		pf_pid=$(tr -d ' \n' < "$qdir/pid/master.pid" 2>/dev/null || true)
		if [ -n "$pf_pid" ] && kill -0 "$pf_pid" 2>/dev/null; then
			pf_args=(--server-pids "$pf_pid")
		else
			pf_args=(--server-pgrep "^$(postconf -h daemon_directory)/master")
		fi
		SERVERS+=(postfix)
		matrix postfix "$PEER_AUTH" $PEER_PORT "$PEER_PROBE_PER_SESSION" "587:$PEER_PORT" \
			"$PEER_PORT" "${pf_args[@]}"
		"$PEER_SETUP" stop >&2 || true
		PEER_STARTED=0
	fi
fi

# ---------------------------------------------------------------- tables
jget() { # FILE KEY: a top-level scalar of smtpload's JSON (keys are unique)
	local v
	v=$(sed -n 's/.*"'"$2"'":\("[^"]*"\|[^,}]*\).*/\1/p' "$1" 2>/dev/null | head -n 1)
	v=${v#\"}; v=${v%\"}
	[ -n "$v" ] && [ "$v" != null ] && printf '%s' "$v" || printf '%s' -
}
NA="n/a"

{
	echo "sealmail auth bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $SIZE-byte messages, up to $MSGS per cell, ${DURATION} s bound, AUTH PLAIN, per-step timeout ${TIMEOUT} s"
	echo
	echo "| server | port | mode | c | ok | failed | unfinished | msgs/s | p50 ms | p99 ms | max ms | server CPU ms/msg | client CPU ms/msg |"
	echo "| --- | --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |"
	for kind in 587 465; do
		case $kind in
		587) pname="587 STARTTLS" ;;
		465) pname="465 TLS" ;;
		esac
		for mode in new reuse; do
			case $mode in
			new) mname="new conn + AUTH per msg" ;;
			reuse) mname="reused conn (≤$REUSE_PER_CONN msgs)" ;;
			esac
			for c in $CONNS; do
				for s in "${SERVERS[@]}"; do
					f=$OUT/$s-$kind-$mode-c$c.json
					if [ "$s" = postfix ] && [ "$kind" = 465 ]; then
						echo "| $s | $pname | $mname | $c | $NA | $NA | $NA | $NA | $NA | $NA | $NA | $NA | $NA |"
						continue
					fi
					echo "| $s | $pname | $mname | $c | $(jget "$f" ok) | $(jget "$f" failed) | $(jget "$f" unfinished) | $(jget "$f" msgs_per_s) | $(jget "$f" lat_p50_ms) | $(jget "$f" lat_p99_ms) | $(jget "$f" lat_max_ms) | $(jget "$f" server_cpu_ms_per_msg) | $(jget "$f" client_cpu_ms_per_msg) |"
				done
			done
		done
	done
	echo
	echo "NOOP latency in one unrelated plain session (MX port; Postfix: 10025), one NOOP every $PROBE_INTERVAL ms, session renewed every $PROBE_PER_SESSION NOOPs (Postfix: $PEER_PROBE_PER_SESSION), renewals not measured:"
	echo
	echo "| server | load | logins ok / failed / unfinished | logins/s | session p50 ms | NOOPs ok / failed | NOOP p50 ms | NOOP p99 ms | NOOP max ms | server CPU ms/login |"
	echo "| --- | --- | --: | --: | --: | --: | --: | --: | --: | --: |"
	loads="idle storm"
	[ "$AUTH_ONLY_STORM" = 1 ] && loads="$loads storm-authonly"
	for l in $loads; do
		for s in "${SERVERS[@]}"; do
			f=$OUT/$s-probe-$l.json
			case $l in
			idle) lname="none (baseline)"; logins="-"; lrate="-"; lp50="-"; lcpu="-" ;;
			*)
				if [ "$l" = storm ]; then
					lname="$STORM_CONNS × (STARTTLS, AUTH, 1 msg, QUIT)"
				else
					lname="$STORM_CONNS × (STARTTLS, AUTH, QUIT)"
				fi
				logins="$(jget "$f" ok) / $(jget "$f" failed) / $(jget "$f" unfinished)"
				lrate=$(jget "$f" msgs_per_s); lp50=$(jget "$f" lat_p50_ms)
				lcpu=$(jget "$f" server_cpu_ms_per_msg)
				;;
			esac
			echo "| $s | $lname | $logins | $lrate | $lp50 | $(jget "$f" probe_noops) / $(jget "$f" probe_failed) | $(jget "$f" probe_p50_ms) | $(jget "$f" probe_p99_ms) | $(jget "$f" probe_max_ms) | $lcpu |"
		done
	done
	errs=$(grep -l '"error_samples":\[{' "$OUT"/*.json 2>/dev/null || true)
	perrs=$(grep -l '"probe_error":"[^"]' "$OUT"/*.json 2>/dev/null || true)
	if [ -n "$errs$perrs" ]; then
		echo
		echo "Errors (first samples per cell):"
		echo
		for f in $errs; do
			echo "- $(basename "$f" .json): $(sed -n 's/.*"error_samples":\[\(.*\)\].*/\1/p' "$f" | cut -c1-300)"
		done
		for f in $perrs; do
			echo "- $(basename "$f" .json) (probe): $(jget "$f" probe_error)"
		done
	fi
} | tee "$OUT/results.md"
say "== raw JSON, commands and logs in $OUT"
