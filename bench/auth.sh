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
. "$HERE/common.sh"
MSGS=${MSGS:-1000}
CONNS=${CONNS:-10 50}
# Per-step timeout, longer than the duration bound (runs still end at DURATION + 5 s). AUTH
# replies queue behind the password hashes (argon2id, 2 threads in sealmail's lookup
# process), and a login can wait for many seconds. With a shorter timeout the client gives
# up and reconnects, while the abandoned login still holds its connection slot in sealmail
# until its hash is done. The new connections then hit the per-address limit (421), and the
# cell turns into a storm of fast refusals instead of logins. With this timeout, a login that
# waits counts as slow, or as unfinished at the bound.
TIMEOUT=${TIMEOUT:-90}
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

OUT=${OUT:-$(mktemp -d /tmp/sealmail-bench-auth.XXXXXX)}
mkdir -p "$OUT"
: > "$OUT/commands.txt"
make -s -C "$HERE" smtpload

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
use_embedded_defaults
ports_free $MX_PORT $SUB_PORT $SUBS_PORT
new_home
sm mailbox add bench@localhost </dev/null
add_bench_account
start_sealmail $MX_PORT $SUB_PORT $SUBS_PORT
matrix sealmail "$SM_AUTH" $MX_PORT "$PROBE_PER_SESSION" "587:$SUB_PORT 465:$SUBS_PORT" \
	"$MX_PORT $SUB_PORT $SUBS_PORT" \
	--server-pids "$SM_PID" --max-per-src "$SM_MAX_PER_SRC"
"$SEALMAIL" account usage bench >"$OUT/usage.txt" 2>&1 || true
finish_sealmail

# ---------------------------------------------------------------- Postfix (optional)
if peer_wanted; then
	PEER_STARTED=1
	PEER_AUTH=$PEER_AUTH "$PEER_SETUP" start >&2
	postfix_server_args
	SERVERS+=(postfix)
	matrix postfix "$PEER_AUTH" $PEER_PORT "$PEER_PROBE_PER_SESSION" "587:$PEER_PORT" \
		"$PEER_PORT" "${PF_ARGS[@]}"
	"$PEER_SETUP" stop >&2 || true
	PEER_STARTED=0
fi

# ---------------------------------------------------------------- tables
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
	print_errors
} | tee "$OUT/results.md"
say "== raw JSON, commands and logs in $OUT"
