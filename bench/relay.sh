#!/usr/bin/env bash
# bench/relay.sh: end-to-end outbound relay (issue 4), printed as a markdown table.
#
# Starts bench/smtpsink on 127.0.0.1:10027 and ../sealmail (built by `make` in the project
# root) with a config file in a temp SEALMAIL_HOME: listeners on 127.0.0.1:2525/2587/2465,
# user "", every remote recipient relayed to [127.0.0.1]:10027 in plaintext
# (relayhost_tls_policy = none) with up to 20 connections (Postfix's
# default_destination_concurrency_limit). Creates the account `bench` (domain load.test,
# login bench@load.test with password "secret", a plan of 10^9 recipients per hour), then,
# for c in CONNS, submits MSGS messages with bench/smtpload (STARTTLS + AUTH PLAIN on port
# 2587, reused connections) to a remote recipient and measures:
#   - accepted msgs/s: smtpload's rate (ok ÷ time to the last 250);
#   - end-to-end msgs/s: ok ÷ (time the sink got the last of them − time the load started);
#   - server CPU of the whole process tree from the start of the load until the queue has
#     drained and the tree is quiet again, per message.
# Between cells it waits until the sink has every accepted message (DRAIN_TIMEOUT).
# PEER=1 (as root, needs ../shared/bench/peer-setup.sh, optional): the same against Postfix on
# 127.0.0.1:10025 (STARTTLS + AUTH PLAIN bench:secret), whose smtp-sink on 127.0.0.1:10026 is
# replaced by bench/smtpsink so that both servers deliver to the same sink.
#
# Environment (defaults):
#   MSGS=2000 DURATION=60 SIZE=4096 CONNS="10 50" REUSE_PER_CONN=500 TIMEOUT=30 SETTLE=5
#   SM_MAX_PER_SRC=15 DRAIN_TIMEOUT=120 RCPT=sink@relay.test
#   SEALMAIL=<root>/sealmail  PEER=0  PEER_SETUP=<root>/../shared/bench/peer-setup.sh
#   OUT=<new temp dir> (JSON of every cell, sink status, server log, results.md)
#   KEEP=0 (keep SEALMAIL_HOME)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
SM_SINK_PORT=10027
# with 2000 messages, REUSE_PER_CONN=500 and c ≥ 10 no connection gets to 500, so every
# connection logs in once
MSGS=${MSGS:-2000}
CONNS=${CONNS:-10 50}
TIMEOUT=${TIMEOUT:-30}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-120}
# a recipient in no local domain: sealmail sends it to the relayhost, Postfix to its relayhost
RCPT=${RCPT:-sink@relay.test}
PEER_SINK_PORT=10026
PEER_SINK_PIDFILE=/var/tmp/sealmail-bench/smtp-sink.pid # peer-setup.sh's smtp-sink
SINK=$HERE/smtpsink
HZ=$(getconf CLK_TCK)

OUT=${OUT:-$(mktemp -d /tmp/sealmail-bench-relay.XXXXXX)}
mkdir -p "$OUT"
: > "$OUT/commands.txt"
make -s -C "$HERE" smtpload smtpsink
echo "# $SEALMAIL: $("$SEALMAIL" version 2>&1), built $(stat -c %y "$SEALMAIL"), sha256 $(sha256sum "$SEALMAIL" | cut -c1-16)" >> "$OUT/commands.txt"
# busy ticks of the whole machine (user, nice, system, irq, softirq, steal of all CPUs)
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
proc_ticks() { awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# how busy the machine is before the run: other work on 2 cores changes every figure
m0=$(machine_ticks); sleep 1; m1=$(machine_ticks)
BUSY_BEFORE=$(awk -v d="$((m1 - m0))" -v hz="$HZ" -v n="$(nproc)" 'BEGIN { printf "%.0f %%", d * 100 / hz / n }')

ncells=0
for _ in $CONNS; do ncells=$((ncells + 1)); done
# the sink's own bound: every cell's load and drain, the warm-up, and some slack
SINK_TIMEOUT=$(( (ncells + 1) * (DURATION + DRAIN_TIMEOUT + 2 * SETTLE + 30) + 120 ))

SINK_PID=
stop_sink() {
	if [ -n "$SINK_PID" ] && kill -0 "$SINK_PID" 2>/dev/null; then
		kill -TERM "$SINK_PID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$SINK_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$SINK_PID" 2>/dev/null || true
	fi
	[ -z "$SINK_PID" ] || wait "$SINK_PID" 2>/dev/null || true
	SINK_PID=
}
cleanup_hook() { stop_sink; }

# CPU ticks (utime+stime+cutime+cstime) of a process tree, from /proc/PID/stat (as smtpload)
tree_ticks() {
	cat /proc/[0-9]*/stat 2>/dev/null | awk -v root="$1" '
	{
		s = $0; p = 0
		while ((q = index(substr(s, p + 1), ")")) > 0) p += q
		n = split(substr(s, p + 2), f, " ")
		if (n < 15) next
		pid = $1 + 0; ppid[pid] = f[2] + 0; t[pid] = f[12] + f[13] + f[14] + f[15]
	}
	END {
		in_tree[root + 0] = 1; grew = 1
		while (grew) {
			grew = 0
			for (x in ppid) if (!(x in in_tree) && (ppid[x] in in_tree)) { in_tree[x] = 1; grew = 1 }
		}
		sum = 0
		for (x in in_tree) if (x in t) sum += t[x]
		printf "%d\n", sum
	}'
}

# waits up to SETTLE s until the tree uses at most one tick in 300 ms (as smtpload)
tree_settle() {
	local a b end
	end=$(( $(date +%s) + SETTLE + 1 ))
	a=$(tree_ticks "$1")
	while [ "$(date +%s)" -lt "$end" ]; do
		sleep 0.3
		b=$(tree_ticks "$1")
		[ $((b - a)) -le 1 ] && return 0
		a=$b
	done
	say "relay.sh: warning: server still busy after ${SETTLE} s"
}

# the sink's status file: "count first last"
sink_status() { cat "$1" 2>/dev/null || echo "0 0 0"; }

# a pipe nobody writes to: `read -t` on it sleeps without forking
exec {NAPFD}<> <(:)

# waits until the sink has N messages (up to DRAIN_TIMEOUT s); 0 when it has, 1 when not.
# Polls every 20 ms with shell builtins only, so that it takes no CPU from the server.
wait_sink() {
	local file=$1 want=$2 end cnt rest
	end=$(( ${EPOCHSECONDS} + DRAIN_TIMEOUT ))
	while :; do
		cnt=0
		{ read -r cnt rest < "$file"; } 2>/dev/null || cnt=0
		[ "${cnt:-0}" -ge "$want" ] && return 0
		[ "$EPOCHSECONDS" -lt "$end" ] || return 1
		kill -0 "$SINK_PID" 2>/dev/null || return 1
		read -r -t 0.02 -u "$NAPFD" _ || true
	done
}

start_sink() { # PORT NAME
	local port=$1 name=$2
	ports_free "$port"
	local cmd=("$SINK" --addr 127.0.0.1 --port "$port" --status "$OUT/sink-$name.status"
		--timeout "$SINK_TIMEOUT")
	say "== ${cmd[*]}"
	echo "${cmd[*]}" >> "$OUT/commands.txt"
	"${cmd[@]}" </dev/null >"$OUT/sink-$name.log" 2>&1 &
	SINK_PID=$!
	for _ in $(seq 50); do listening "$port" && [ -s "$OUT/sink-$name.status" ] && return 0; sleep 0.1; done
	say "relay.sh: smtpsink did not start on $port:"; cat "$OUT/sink-$name.log" >&2
	exit 1
}

SINK_EXPECT=0 # messages the current sink should have got so far

# one cell: NAME PORT ROOT-PID SMTPLOAD-ARGS...
# Writes $OUT/NAME.json (smtpload) and $OUT/NAME.e2e (key=value lines).
# The load's start is smtpload's own: the moment it exited minus its elapsed_s. smtpload
# needs ~40 ms to start (dynamic loading, OpenSSL), which would otherwise count as delivery
# time. It gets no --server-pids: sampling a process tree at its end would delay its exit.
# The server's CPU is sampled here instead, before the load, right after smtpload exits
# ("accepting") and after the sink has every message and the tree is quiet ("end-to-end").
cell() {
	local name=$1 port=$2 pid=$3; shift 3
	local status=$OUT/sink-${name%%-*}.status
	local cmd=("$LOAD" --port "$port" --timeout "$TIMEOUT" --to "$RCPT" "$@" --json)
	tree_settle "$pid"
	local before cpu0 cpu1 cpu2 t_launch t_exit ok drained=1 st cnt last
	before=$(sink_status "$status" | awk '{print $1}')
	local mt0 mt2 sk0 sk2
	sk0=$(proc_ticks "$SINK_PID")
	mt0=$(machine_ticks)
	cpu0=$(tree_ticks "$pid")
	say "== $name: ${cmd[*]}"
	echo "${cmd[*]}" >> "$OUT/commands.txt"
	t_launch=$EPOCHREALTIME
	"${cmd[@]}" > "$OUT/$name.json" || true
	t_exit=$EPOCHREALTIME
	cpu1=$(tree_ticks "$pid")
	[ -s "$OUT/$name.json" ] || echo '{}' > "$OUT/$name.json"
	ok=$(jget "$OUT/$name.json" ok); [ "$ok" = - ] && ok=0
	SINK_EXPECT=$((SINK_EXPECT + ok))
	wait_sink "$status" "$SINK_EXPECT" || drained=0
	st=$(sink_status "$status")
	cnt=$(echo "$st" | awk '{print $1}'); last=$(echo "$st" | awk '{print $3}')
	tree_settle "$pid"
	cpu2=$(tree_ticks "$pid")
	mt2=$(machine_ticks)
	sk2=$(proc_ticks "$SINK_PID")
	# what arrived late (a drain timeout) must not be counted in the next cell
	SINK_EXPECT=$cnt
	{
		echo "ok=$ok"
		echo "sink_before=$before"
		echo "sink_after=$cnt"
		echo "arrived=$((cnt - before))"
		echo "drained=$drained"
		echo "smtpload_launch=$t_launch"
		echo "smtpload_exit=$t_exit"
		echo "sink_last=$last"
		echo "server_ticks=$cpu0 $cpu1 $cpu2 (hz $HZ)"
		echo "sink_cpu_ms=$(( (sk2 - sk0) * 1000 / HZ ))"
		# machine CPU from before the load to the end of the settle that was neither the
		# server's, nor smtpload's, nor the sink's (kernel threads, softirq, other jobs)
		awk -v m="$((mt2 - mt0))" -v s="$((cpu2 - cpu0))" -v k="$((sk2 - sk0))" -v hz="$HZ" \
			-v cc="$(jget "$OUT/$name.json" client_cpu_ms_per_msg)" -v ok="$ok" \
			-v f="$(jget "$OUT/$name.json" failed)" 'BEGIN {
			client = (cc == "-" ? 0 : cc * (ok + (f == "-" ? 0 : f)))
			printf "client_cpu_ms=%.0f\nother_cpu_ms=%.0f\n", client, (m - s - k) * 1000 / hz - client
		}'
		awk -v ok="$ok" -v tl="$t_launch" -v tx="$t_exit" -v el="$(jget "$OUT/$name.json" elapsed_s)" \
			-v last="$last" -v arr="$((cnt - before))" -v c0="$cpu0" -v c1="$cpu1" -v c2="$cpu2" \
			-v hz="$HZ" -v acc="$(jget "$OUT/$name.json" msgs_per_s)" '
		BEGIN {
			t0 = tx - el
			if (el == "-" || t0 < tl) t0 = tl
			printf "load_start=%.6f\nsmtpload_startup_s=%.3f\n", t0, t0 - tl
			span = last - t0
			if (ok > 0 && arr >= ok && span > 0) {
				printf "e2e_s=%.3f\ne2e_msgs_per_s=%.1f\n", span, ok / span
				if (acc + 0 > 0) printf "tail_s=%.3f\n", span - ok / acc
			}
			if (ok > 0) {
				printf "server_cpu_ms_per_msg_accepting=%.3f\n", (c1 - c0) * 1000 / hz / ok
				printf "server_cpu_ms_per_msg_e2e=%.3f\n", (c2 - c0) * 1000 / hz / ok
			}
		}'
	} > "$OUT/$name.e2e"
	if [ "$drained" = 0 ]; then
		say "relay.sh: warning: $name: the sink got $((cnt - before)) of $ok accepted messages within ${DRAIN_TIMEOUT} s"
	fi
}

# warm-up: one message through the whole path (first login, first relay connection); the
# run stops when it does not arrive
warmup() { # NAME PORT ROOT-PID SMTPLOAD-ARGS...
	local name=$1 port=$2 pid=$3; shift 3
	local status=$OUT/sink-$name.status
	local cmd=("$LOAD" --port "$port" --timeout "$TIMEOUT" --to "$RCPT" "$@" --conns 1 --msgs 1
		--duration 30 --json)
	say "== $name warm-up: ${cmd[*]}"
	echo "${cmd[*]}" >> "$OUT/commands.txt"
	"${cmd[@]}" > "$OUT/$name-warmup.json" || true
	SINK_EXPECT=$((SINK_EXPECT + 1))
	if [ "$(jget "$OUT/$name-warmup.json" ok)" != 1 ] || ! DRAIN_TIMEOUT=30 wait_sink "$status" "$SINK_EXPECT"; then
		say "relay.sh: $name: the warm-up message did not reach the sink within 30 s"
		say "smtpload: $(cat "$OUT/$name-warmup.json")"
		return 1
	fi
	SINK_EXPECT=$(sink_status "$status" | awk '{print $1}')
}

# the cells against one server: LABEL PORT AUTH ROOT-PID EXTRA-SMTPLOAD-ARGS...
matrix() {
	local label=$1 port=$2 auth=$3 pid=$4; shift 4
	local c
	warmup "$label" "$port" "$pid" --auth "$auth" --starttls "$@" || return 1
	for c in $CONNS; do
		cell "$label-c$c" "$port" "$pid" --auth "$auth" --starttls --conns "$c" \
			--msgs "$MSGS" --duration "$DURATION" --size "$SIZE" --per-conn "$REUSE_PER_CONN" "$@"
	done
}

# ---------------------------------------------------------------- sealmail
SERVERS=(sealmail)
ports_free $MX_PORT $SUB_PORT $SUBS_PORT
new_home
export SEALMAIL_CONF=$SM_HOME/sealmail.conf
cat > "$SEALMAIL_CONF" <<EOF
# bench/relay.sh: every remote recipient goes to bench/smtpsink, in plaintext
hostname = sealmail.bench.test
data_dir = $SM_HOME/data
user = ""

[listen]
mx = 127.0.0.1:$MX_PORT
submission = 127.0.0.1:$SUB_PORT
submissions = 127.0.0.1:$SUBS_PORT

[delivery]
relayhost = [127.0.0.1]:$SM_SINK_PORT
relayhost_tls_policy = none
# Postfix: default_destination_concurrency_limit = 20
connections_per_destination = 20
EOF
cp "$SEALMAIL_CONF" "$OUT/sealmail.conf"
sm config check </dev/null
add_bench_account
start_sink $SM_SINK_PORT sealmail
start_sealmail $MX_PORT $SUB_PORT $SUBS_PORT
SINK_EXPECT=0
if ! matrix sealmail $SUB_PORT "$SM_AUTH" "$SM_PID" --max-per-src "$SM_MAX_PER_SRC"; then
	say "relay.sh: sealmail's log (last 30 lines):"; tail -n 30 "$OUT/sealmail.log" >&2
fi
"$SEALMAIL" account usage bench >"$OUT/usage.txt" 2>&1 || true
finish_sealmail
unset SEALMAIL_CONF SEALMAIL_HOME

# ---------------------------------------------------------------- Postfix (optional)
if peer_wanted; then
	PEER_STARTED=1
	PEER_AUTH=$PEER_AUTH "$PEER_SETUP" start >&2
	# mail left in Postfix's queue by an earlier run would reach the sink and be counted
	qn=$(find /var/spool/postfix/{maildrop,incoming,active,deferred,hold} -type f 2>/dev/null | wc -l)
	if [ "$qn" != 0 ]; then
		say "relay.sh: Postfix's queue holds $qn files from before: \`peer-setup.sh flush\`"
		"$PEER_SETUP" flush >&2
	fi
	# replace peer-setup.sh's smtp-sink with bench/smtpsink
	if [ -f "$PEER_SINK_PIDFILE" ]; then
		kill -TERM "$(cat "$PEER_SINK_PIDFILE")" 2>/dev/null || true
	fi
	for _ in $(seq 50); do listening $PEER_SINK_PORT || break; sleep 0.1; done
	start_sink $PEER_SINK_PORT postfix
	qdir=$(postconf -h queue_directory 2>/dev/null || echo /var/spool/postfix)
	pf_pid=$(tr -d ' \n' < "$qdir/pid/master.pid" 2>/dev/null || true)
	if [ -z "$pf_pid" ] || ! kill -0 "$pf_pid" 2>/dev/null; then
		say "relay.sh: no Postfix master pid in $qdir/pid/master.pid: skipping Postfix"
	else
		SERVERS+=(postfix)
		SINK_EXPECT=0
		if ! matrix postfix $PEER_PORT "$PEER_AUTH" "$pf_pid"; then
			say "relay.sh: Postfix's log (last 30 lines):"; tail -n 30 /var/log/postfix-bench.log >&2
		fi
	fi
	stop_sink
	"$PEER_SETUP" stop >&2 || true
	PEER_STARTED=0
fi

# ---------------------------------------------------------------- table
eget() { # FILE KEY: a value of a cell's .e2e file
	local v
	v=$(sed -n "s/^$2=//p" "$1" 2>/dev/null | head -n 1)
	[ -n "$v" ] && printf '%s' "$v" || printf '%s' -
}

{
	echo "sealmail relay bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $SIZE-byte messages, up to $MSGS per cell, ${DURATION} s bound, STARTTLS + AUTH PLAIN, reused connections (≤$REUSE_PER_CONN msgs), relayed in plaintext to bench/smtpsink; machine busy $BUSY_BEFORE in the second before the run"
	echo
	echo "| server | c | ok | failed | at sink | accepted msgs/s | end-to-end msgs/s | last 250 → last at sink s | accept p99 ms | server CPU ms/msg (accepting) | server CPU ms/msg (end-to-end) |"
	echo "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |"
	for c in $CONNS; do
		for s in "${SERVERS[@]}"; do
			f=$OUT/$s-c$c.json; e=$OUT/$s-c$c.e2e
			echo "| $s | $c | $(jget "$f" ok) | $(jget "$f" failed) | $(eget "$e" arrived) | $(jget "$f" msgs_per_s) | $(eget "$e" e2e_msgs_per_s) | $(eget "$e" tail_s) | $(jget "$f" lat_p99_ms) | $(eget "$e" server_cpu_ms_per_msg_accepting) | $(eget "$e" server_cpu_ms_per_msg_e2e) |"
		done
	done
	echo
	echo "CPU during each cell, from the start of the load until the sink had every message and the server was quiet (ms): server / smtpload / smtpsink / other (kernel threads, this script, any other job)"
	echo
	for c in $CONNS; do
		for s in "${SERVERS[@]}"; do
			e=$OUT/$s-c$c.e2e
			[ -e "$e" ] || continue
			echo "- $s c=$c: $(awk -v o="$(eget "$e" server_cpu_ms_per_msg_e2e)" -v n="$(eget "$e" ok)" 'BEGIN { printf "%.0f", o * n }') / $(eget "$e" client_cpu_ms) / $(eget "$e" sink_cpu_ms) / $(eget "$e" other_cpu_ms), end-to-end span $(eget "$e" e2e_s) s"
		done
	done
	print_errors
	for e in "$OUT"/*.e2e; do
		[ -e "$e" ] || continue
		if [ "$(eget "$e" drained)" = 0 ]; then
			echo
			echo "- $(basename "$e" .e2e): only $(eget "$e" arrived) of $(eget "$e" ok) accepted messages reached the sink within ${DRAIN_TIMEOUT} s"
		fi
	done
} | tee "$OUT/results.md"
say "== raw JSON, commands, sink status and logs in $OUT"
