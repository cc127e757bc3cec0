# bench/common.sh: what run.sh, auth.sh and relay.sh share; sourced by them (after
# `set -euo pipefail` and HERE=<this directory>), not run. It sets the shared defaults,
# checks that ../sealmail is built, installs the cleanup (stops sealmail and Postfix, removes
# SEALMAIL_HOME) and defines the helpers. Each script keeps its own defaults and cells.
#
# Environment (defaults), shared:
#   DURATION=60 SIZE=4096 REUSE_PER_CONN=500 SETTLE=5 SM_MAX_PER_SRC=15
#   SEALMAIL=<root>/sealmail  PEER=0  PEER_SETUP=<root>/../shared/bench/peer-setup.sh
#   PEER_AUTH=bench:secret  KEEP=0 (keep SEALMAIL_HOME)
# shellcheck shell=bash disable=SC2034 # the variables are for the sourcing scripts

ME=${0##*/} # the running script's name, for its messages
ROOT=$(dirname "$HERE")
SEALMAIL=${SEALMAIL:-$ROOT/sealmail}
# sealmail's listeners on its embedded defaults (relay.sh's config uses the same)
MX_PORT=2525
SUB_PORT=2587
SUBS_PORT=2465
DURATION=${DURATION:-60}
SIZE=${SIZE:-4096}
# ≤ 500 per connection stays under sealmail's 1000 messages per session
REUSE_PER_CONN=${REUSE_PER_CONN:-500}
SETTLE=${SETTLE:-5}
# sealmail's default limit is 20 connections per client address (src/limits.h): slots are
# spread over 127.0.0.1..N so that at most SM_MAX_PER_SRC share one. Postfix's peer config
# has no such limit, so it gets 127.0.0.1 only (other 127.x addresses cost PTR lookups).
SM_MAX_PER_SRC=${SM_MAX_PER_SRC:-15}
PEER=${PEER:-0}
PEER_SETUP=${PEER_SETUP:-$ROOT/../shared/bench/peer-setup.sh}
PEER_PORT=10025
PEER_AUTH=${PEER_AUTH:-bench:secret}
SM_AUTH=bench@load.test:secret
KEEP=${KEEP:-0}
LOAD=$HERE/smtpload

say() { printf '%s\n' "$*" >&2; }

if [ ! -x "$SEALMAIL" ]; then
	say "$ME: $SEALMAIL not found: run \`make\` in $ROOT first"
	exit 1
fi

SM_HOME=
SM_PID=
PEER_STARTED=0
cleanup_hook() { :; } # what a script stops besides sealmail (relay.sh: its sink)
cleanup() {
	if [ -n "$SM_PID" ] && kill -0 "$SM_PID" 2>/dev/null; then
		kill -TERM "$SM_PID" 2>/dev/null || true
		for _ in $(seq 400); do kill -0 "$SM_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$SM_PID" 2>/dev/null || true
		wait "$SM_PID" 2>/dev/null || true
	fi
	SM_PID=
	cleanup_hook
	if [ "$PEER_STARTED" = 1 ]; then "$PEER_SETUP" stop >&2 || true; PEER_STARTED=0; fi
	if [ -n "$SM_HOME" ] && [ "$KEEP" != 1 ]; then rm -rf "$SM_HOME"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

listening() { ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }
all_listening() { local p; for p in "$@"; do listening "$p" || return 1; done; }

and_list() { # A B C: "A, B and C"
	local s=$1; shift
	while [ $# -gt 1 ]; do s="$s, $1"; shift; done
	[ $# = 0 ] || s="$s and $1"
	printf '%s' "$s"
}

ports_free() { # PORT...: stops the run when something already listens on one of them
	local p
	for p in "$@"; do
		if listening "$p"; then
			say "$ME: something already listens on 127.0.0.1:$p; stop it first"
			exit 1
		fi
	done
}

# run.sh and auth.sh: sealmail on its embedded defaults only
use_embedded_defaults() {
	[ -z "${SEALMAIL_CONF:-}" ] || { say "$ME: ignoring SEALMAIL_CONF=$SEALMAIL_CONF (embedded defaults)"; unset SEALMAIL_CONF; }
	[ ! -e /etc/sealmail/sealmail.conf ] || say "$ME: warning: /etc/sealmail/sealmail.conf exists and may be read instead of the embedded defaults"
}

new_home() { # a new SEALMAIL_HOME, removed by cleanup (unless KEEP=1)
	SM_HOME=$(mktemp -d /tmp/sealmail-bench-home.XXXXXX)
	export SEALMAIL_HOME=$SM_HOME
}

# how sealmail finds its files, for the log lines
sm_env() {
	if [ -n "${SEALMAIL_CONF:-}" ]; then printf 'SEALMAIL_CONF=%s' "$SEALMAIL_CONF"
	else printf 'SEALMAIL_HOME=%s' "$SM_HOME"; fi
}

sm() { # runs one setup command, logged
	say "== $(sm_env) $SEALMAIL $*"
	if ! "$SEALMAIL" "$@" >>"$OUT/setup.log" 2>&1; then
		say "$ME: \`sealmail $*\` failed:"; tail -n 5 "$OUT/setup.log" >&2
		exit 1
	fi
}

# the account `bench`: domain load.test, login SM_AUTH, a plan of 10^9 recipients per hour
add_bench_account() {
	sm account add bench --plan professional </dev/null
	sm account domain add bench load.test </dev/null
	# smtpload's MAIL FROM and From: are smtpload@load.test: inside the account's domain
	printf '%s\n' "${SM_AUTH#*:}" | sm login add "${SM_AUTH%%:*}" bench
	sm plan set bench 1000000000 </dev/null
	sm account set-plan bench bench </dev/null
}

# starts `sealmail serve` (log in $OUT/sealmail.log, pid in SM_PID) and waits up to 10 s
# until it listens on every PORT...; stops the run when it does not
start_sealmail() {
	say "== $(sm_env) $SEALMAIL serve 2>$OUT/sealmail.log"
	"$SEALMAIL" serve </dev/null >"$OUT/sealmail.log" 2>&1 &
	SM_PID=$!
	for _ in $(seq 100); do
		all_listening "$@" && break
		kill -0 "$SM_PID" 2>/dev/null || break
		sleep 0.1
	done
	if ! all_listening "$@"; then
		say "$ME: sealmail is not listening on $(and_list "$@"); its log:"
		tail -n 30 "$OUT/sealmail.log" >&2
		exit 1
	fi
}

# after sealmail's cells: a warning when it did not last the run, then cleanup
finish_sealmail() {
	kill -0 "$SM_PID" 2>/dev/null || say "$ME: warning: sealmail exited during the run (see $OUT/sealmail.log)"
	cleanup
}

# PEER=1 and peer-setup.sh can run: 0; otherwise 1 (saying why when PEER=1)
peer_wanted() {
	[ "$PEER" = 1 ] || return 1
	if [ ! -x "$PEER_SETUP" ]; then
		say "$ME: PEER=1 but $PEER_SETUP is not there: skipping Postfix"
		return 1
	fi
	if [ "$(id -u)" != 0 ]; then
		say "$ME: PEER=1 needs root (peer-setup.sh installs and runs Postfix): skipping Postfix"
		return 1
	fi
}

# run.sh and auth.sh: smtpload's server arguments for Postfix (PF_ARGS): its master's pid, or
# a pattern when its pid file has none
postfix_server_args() {
	local qdir pf_pid
	qdir=$(postconf -h queue_directory 2>/dev/null || echo /var/spool/postfix)
	pf_pid=$(tr -d ' \n' < "$qdir/pid/master.pid" 2>/dev/null || true)
	if [ -n "$pf_pid" ] && kill -0 "$pf_pid" 2>/dev/null; then
		PF_ARGS=(--server-pids "$pf_pid")
	else
		PF_ARGS=(--server-pgrep "^$(postconf -h daemon_directory)/master")
	fi
}

# run.sh and auth.sh (relay.sh has its own): one cell: NAME PORT SERVER-ARGS... -- SMTPLOAD-ARGS...
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

jget() { # FILE KEY: a top-level scalar of smtpload's JSON (keys are unique)
	local v
	v=$(sed -n 's/.*"'"$2"'":\("[^"]*"\|[^,}]*\).*/\1/p' "$1" 2>/dev/null | head -n 1)
	v=${v#\"}; v=${v%\"}
	[ -n "$v" ] && [ "$v" != null ] && printf '%s' "$v" || printf '%s' -
}

# the end of results.md: the first error samples of every cell (and of every NOOP probe)
print_errors() {
	local errs perrs f
	errs=$(grep -l '"error_samples":\[{' "$OUT"/*.json 2>/dev/null || true)
	perrs=$(grep -l '"probe_error":"[^"]' "$OUT"/*.json 2>/dev/null || true)
	[ -n "$errs$perrs" ] || return 0
	echo
	echo "Errors (first samples per cell):"
	echo
	for f in $errs; do
		echo "- $(basename "$f" .json): $(sed -n 's/.*"error_samples":\[\(.*\)\].*/\1/p' "$f" | cut -c1-300)"
	done
	for f in $perrs; do
		echo "- $(basename "$f" .json) (probe): $(jget "$f" probe_error)"
	done
}
