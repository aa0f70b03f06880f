#!/bin/bash
# Integration tests: the control socket and the CLI verbs that use it, on the 'idle' example guest.
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
export KAPSEL_RUNTIME_DIR=$TMP/rt
SOCKCLIENT=${SOCKCLIENT:?SOCKCLIENT must name the sockclient helper}
VMPIDS=()

cleanup_vms() {
	for pid in "${VMPIDS[@]}"; do
		{ kill -9 "$pid" && wait "$pid"; } 2>/dev/null
	done
	rm -rf "$TMP"
}
trap cleanup_vms EXIT

# wait_vm PID: wait (at most 20 s) for kapsel run to end; sets STATUS.
wait_vm() {
	local pid=$1
	for _ in $(seq 400); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	kill -0 "$pid" 2>/dev/null && fail "kapsel run (pid $pid) did not end"
	STATUS=0
	wait "$pid" || STATUS=$?
}

# send NAME: send stdin to NAME's socket raw; output in $TMP/reply.
send() {
	"$SOCKCLIENT" "$KAPSEL_RUNTIME_DIR/$1.sock" "${@:2}" >"$TMP/reply" || true
}

# stat_of NAME COUNTER: one counter from 'kapsel stats'.
stat_of() {
	"$KAPSEL" stats "$1" | awk -v key="  $2:" 'index($0, key) == 1 { print $2; exit }'
}

# start_flood NAME OUTPUT [kapsel run options...]: boot 'hello flood' (it
# prints forever) with its console on OUTPUT; waits for its socket.  Sets VMPID.
start_flood() {
	local name=$1 output=$2
	shift 2
	"$KAPSEL" run --no-console-input --kernel "$GUESTS/hello.elf" --name "$name" \
		--cmdline flood "$@" >"$output" 2>"$TMP/$name.err" </dev/null &
	VMPID=$!
	VMPIDS+=("$VMPID")
	for _ in $(seq 400); do
		[ -S "$KAPSEL_RUNTIME_DIR/$name.sock" ] && return 0
		kill -0 "$VMPID" 2>/dev/null || { cat "$TMP/$name.err"; fail "VM $name died at start"; }
		sleep 0.05
	done
	fail "VM $name did not come up"
}

# A console pipe nobody reads: opened read-write here and never read, so
# the guest's output fills it and stays there.
stuck_pipe() {
	mkfifo "$TMP/fifo"
	exec 3<>"$TMP/fifo"
}

# ms_since START_NS: milliseconds since a $(date +%s%N) reading.
ms_since() {
	echo $(( ($(date +%s%N) - $1) / 1000000 ))
}

# The old code never ended these VMs at all (only SIGKILL did); the bounds
# below leave room for a loaded nested-KVM machine.
case "$1" in
console-blocked-sink)
	# A console reader that stops reading must block neither the vCPU nor
	# the control plane, and SIGTERM still ends the VM.
	stuck_pipe
	start_flood flooder "$TMP/fifo"
	for _ in $(seq 100); do
		grep -qF "not keeping up" "$TMP/flooder.err" && break
		sleep 0.1
	done
	expect_in "$TMP/flooder.err" "the console output reader is not keeping up"
	timeout 15 "$KAPSEL" info flooder >"$TMP/info" || fail "info did not answer with the console pipe full"
	expect_in "$TMP/info" "state running"
	timeout 15 "$KAPSEL" pause flooder || fail "pause did not answer with the console pipe full"
	timeout 15 "$KAPSEL" info flooder >"$TMP/info" || fail "info while paused"
	expect_in "$TMP/info" "state paused"
	timeout 15 "$KAPSEL" resume flooder || fail "resume"
	# The guest kept running: the drop counter still grows.
	first=$(stat_of flooder console_dropped_full_bytes)
	sleep 1
	second=$(stat_of flooder console_dropped_full_bytes)
	[ "$first" -gt 0 ] && [ "$second" -gt "$first" ] ||
		fail "console_dropped_full_bytes did not grow ($first, then $second)"
	start=$(date +%s%N)
	kill -TERM "$VMPID"
	wait_vm "$VMPID"
	elapsed=$(ms_since "$start")
	expect_status 123 # stopped from outside
	[ "$elapsed" -lt 10000 ] || fail "SIGTERM took $elapsed ms with the console pipe full"
	expect_in "$TMP/flooder.err" "VM 'flooder' stopped by request"
	;;
console-blocked-destroy)
	# 'destroy' ends a VM whose console pipe is full, within seconds.
	stuck_pipe
	start_flood stuck "$TMP/fifo"
	sleep 1
	start=$(date +%s%N)
	timeout 15 "$KAPSEL" destroy stuck || fail "destroy did not answer with the console pipe full"
	wait_vm "$VMPID"
	elapsed=$(ms_since "$start")
	expect_status 123 # destroyed
	[ "$elapsed" -lt 10000 ] || fail "destroy took $elapsed ms with the console pipe full"
	;;
console-output-cap)
	# --console-output FILE,max=SIZE: the file stays under its cap, says so
	# once, and the dropped bytes are counted.
	start_flood capped "$TMP/stdout" --console-output "$TMP/console.log,max=256K"
	for _ in $(seq 200); do
		grep -qF "reached its cap" "$TMP/capped.err" && break
		sleep 0.05
	done
	expect_in "$TMP/capped.err" "console output '$TMP/console.log' reached its cap of 262144 bytes"
	sleep 1
	[ "$(stat_of capped console_output_max_bytes)" = 262144 ] || fail "cap not in stats"
	[ "$(stat_of capped console_output_capped)" = 1 ] || fail "capped not in stats"
	dropped=$(stat_of capped console_dropped_cap_bytes)
	[ "$dropped" -gt 0 ] || fail "console_dropped_cap_bytes is '$dropped'"
	"$KAPSEL" destroy capped >/dev/null || fail "destroy"
	wait_vm "$VMPID"
	size=$(stat -c %s "$TMP/console.log")
	[ "$size" -le 262144 ] || fail "console file grew to $size bytes, over its cap"
	[ "$size" -gt 200000 ] || fail "console file has only $size bytes"
	[ "$(grep -c "reached its cap" "$TMP/console.log")" = 1 ] || fail "cap note not exactly once"
	expect_in "$TMP/console.log" "flood line 0:"
	[ "$(grep -c "reached its cap" "$TMP/capped.err")" = 1 ] || fail "cap warning not exactly once"
	;;
control-socket-lifecycle)
	start_vm life
	printf 'info\npause\ninfo\npause\nresume\nresume\ninfo\nquit\n' | send life
	# Each reply is framed: "ok N" and N lines, or one "error" line.
	awk '
		/^ok [0-9]+$/ { n = $2; replies++; next }
		/^error / { replies++; errors = errors $2 " "; next }
		n > 0 { n--; if ($1 == "state") states = states $2 " "; next }
		{ print "unframed line: " $0; bad = 1 }
		END {
			if (replies != 8) { print "replies: " replies; bad = 1 }
			if (states != "running paused running ") { print "states: " states; bad = 1 }
			if (errors != "EALREADY EALREADY ") { print "errors: " errors; bad = 1 }
			exit bad
		}' "$TMP/reply" || { cat "$TMP/reply"; fail "socket lifecycle replies"; }
	expect_in "$TMP/reply" "error EALREADY VM 'life' is already paused"
	expect_in "$TMP/reply" "error EALREADY VM 'life' is not paused"
	# A paused vCPU makes no hypercalls; a running one sleeps in ticks.
	echo pause | send life
	a=$(stat_of life hypercall_block)
	sleep 0.3
	b=$(stat_of life hypercall_block)
	[ -n "$a" ] && [ "$a" = "$b" ] || fail "paused guest made block hypercalls ('$a' -> '$b')"
	echo resume | send life
	sleep 0.3
	c=$(stat_of life hypercall_block)
	[ "$c" -gt "$b" ] || fail "resumed guest made no block hypercalls ($b -> $c)"
	echo "shutdown timeout=5" | send life
	expect_in "$TMP/reply" "guest_handles_shutdown yes"
	wait_vm "$VMPID"
	expect_status 0
	expect_in "$TMP/life.out" "idle: poweroff requested"
	[ ! -e "$KAPSEL_RUNTIME_DIR/life.sock" ] || fail "socket left behind after a clean exit"
	[ ! -e "$KAPSEL_RUNTIME_DIR/life.lock" ] || fail "lock left behind after a clean exit"
	;;
control-cli-lifecycle)
	start_vm cli1 --memory 32M
	start_vm cli2
	"$KAPSEL" list >"$TMP/list"
	expect_in "$TMP/list" "NAME"
	grep -Eq '^ +[0-9]+  cli1 +running +32M' "$TMP/list" || { cat "$TMP/list"; fail "cli1 not listed"; }
	grep -Eq '^ +[0-9]+  cli2 +running +64M' "$TMP/list" || { cat "$TMP/list"; fail "cli2 not listed"; }
	[ "$("$KAPSEL" list --names | tr '\n' ' ')" = "cli1 cli2 " ] || fail "list --names"
	"$KAPSEL" info cli1 >"$TMP/info"
	expect_in "$TMP/info" "memory_bytes $((32 << 20))"
	expect_in "$TMP/info" "vcpus 1"
	grep -Eq '^vcpu 0 power up blocked (yes|no) exits [0-9]+ cpu_time_ns [0-9]+ host_cpu -?[0-9]+$' \
		"$TMP/info" || { cat "$TMP/info"; fail "no vcpu 0 line"; }
	grep -q '^vcpu 1 ' "$TMP/info" && fail "info of a 1-vCPU VM lists a vCPU 1"
	grep -Eq '^ +[0-9]+  cli1 +running +32M +1 ' "$TMP/list" || { cat "$TMP/list"; fail "cli1: VCPUS not 1"; }
	expect_in "$TMP/info" "device 0 console-pv"
	expect_in "$TMP/info" "pid $VMPIDS"
	"$KAPSEL" pause cli1 || fail "pause"
	"$KAPSEL" info cli1 | grep -qx "state paused" || fail "not paused"
	"$KAPSEL" list | grep -Eq ' cli1 +paused ' || fail "list does not show paused"
	STATUS=0
	"$KAPSEL" pause cli1 2>"$TMP/err" || STATUS=$?
	expect_status 1
	expect_in "$TMP/err" "kapsel: cli1: VM 'cli1' is already paused"
	"$KAPSEL" resume cli1 || fail "resume"
	"$KAPSEL" shutdown cli1 >"$TMP/shutdown" || fail "shutdown"
	expect_in "$TMP/shutdown" "VM 'cli1' ended: poweroff (exit code 0)"
	wait_vm "${VMPIDS[0]}"
	expect_status 0
	"$KAPSEL" destroy cli2 >"$TMP/destroy" || fail "destroy"
	expect_in "$TMP/destroy" "VM 'cli2' ended: destroyed (exit code 123)"
	[ -z "$("$KAPSEL" list --names)" ] || fail "VMs still listed"
	STATUS=0
	"$KAPSEL" info cli1 2>"$TMP/err" || STATUS=$?
	expect_status 1
	expect_in "$TMP/err" "kapsel: no VM named 'cli1' is running"
	;;
control-addressing)
	# Wherever a VM is named, its domain id or its UUID (any case) names it
	# too; reboot boots the guest again; shutdown and destroy take several
	# VMs; save and migrate of an unknown VM say so as the other verbs do.
	start_vm addr1
	start_vm addr2
	"$KAPSEL" info addr1 >"$TMP/info1"
	domid=$(awk '$1 == "domid" { print $2 }' "$TMP/info1")
	uuid=$(awk '$1 == "uuid" { print $2 }' "$TMP/info1")
	domid2=$("$KAPSEL" info addr2 | awk '$1 == "domid" { print $2 }')
	[ -n "$domid" ] && [ -n "$uuid" ] && [ -n "$domid2" ] && [ "$domid" != "$domid2" ] ||
		{ cat "$TMP/info1"; fail "no domain ids or UUID in info"; }
	"$KAPSEL" info "$domid" | grep -qx "name addr1" || fail "info by domain id $domid"
	"$KAPSEL" info "$(echo "$uuid" | tr a-f A-F)" | grep -qx "name addr1" || fail "info by UUID"
	"$KAPSEL" pause "$uuid" || fail "pause by UUID"
	"$KAPSEL" info addr1 | grep -qx "state paused" || fail "pause by UUID paused nothing"
	"$KAPSEL" resume "$domid" || fail "resume by domain id"
	for ref in 9999 00000000-0000-0000-0000-000000000000 nosuch; do
		STATUS=0
		"$KAPSEL" info "$ref" 2>"$TMP/err" || STATUS=$?
		expect_status 1
		expect_in "$TMP/err" "kapsel: no VM named '$ref' is running"
	done
	STATUS=0
	"$KAPSEL" save nosuch "$TMP/saved" 2>"$TMP/err" || STATUS=$?
	expect_status 1
	expect_in "$TMP/err" "kapsel: no VM named 'nosuch' is running"
	STATUS=0
	"$KAPSEL" migrate --insecure nosuch tcp:127.0.0.1:1 2>"$TMP/err" || STATUS=$?
	expect_status 1
	expect_in "$TMP/err" "kapsel: no VM named 'nosuch' is running"
	# reboot by domain id: the guest ends with SHUTDOWN(REBOOT) and boots
	# again in the same VM (on_reboot restart): a second "idle: ready".
	"$KAPSEL" reboot "$domid" >"$TMP/reboot" || { cat "$TMP/reboot"; fail "reboot"; }
	expect_in "$TMP/reboot" "VM '$domid' was asked to reboot"
	for _ in $(seq 200); do
		[ "$(grep -c "idle: ready" "$TMP/addr1.out")" -ge 2 ] && break
		sleep 0.05
	done
	[ "$(grep -c "idle: ready" "$TMP/addr1.out")" -eq 2 ] || { cat "$TMP/addr1.out"; fail "the guest did not boot again"; }
	"$KAPSEL" info addr1 | grep -qx "state running" || fail "not running after the reboot"
	# Two at once, one by name and one by domain id; a third that does not
	# exist makes the status 1 without keeping the others alive.
	STATUS=0
	"$KAPSEL" destroy addr1 "$domid2" nosuch >"$TMP/destroy" 2>"$TMP/err" || STATUS=$?
	expect_status 1
	expect_in "$TMP/destroy" "VM 'addr1' ended: destroyed"
	expect_in "$TMP/destroy" "VM '$domid2' ended: destroyed"
	expect_in "$TMP/err" "no VM named 'nosuch'"
	[ -z "$("$KAPSEL" list --names)" ] || fail "VMs still listed"
	;;
control-shutdown-timeout)
	# A guest that ignores the request is destroyed at the deadline.
	"$KAPSEL" run --no-console-input --kernel "$GUESTS/idle.elf" --name deaf \
		--cmdline "ignore-shutdown tick_ms=20" >"$TMP/deaf.out" 2>"$TMP/deaf.err" </dev/null &
	VMPID=$!
	VMPIDS+=("$VMPID")
	for _ in $(seq 100); do [ -S "$KAPSEL_RUNTIME_DIR/deaf.sock" ] && break; sleep 0.05; done
	start=$(date +%s%N)
	"$KAPSEL" shutdown --timeout 1 deaf >"$TMP/shutdown" 2>"$TMP/err" || fail "shutdown failed"
	elapsed_ms=$((($(date +%s%N) - start) / 1000000))
	expect_in "$TMP/err" "the guest of 'deaf' does not handle shutdown requests; it will be destroyed in 1 s"
	expect_in "$TMP/shutdown" "VM 'deaf' ended: destroyed"
	[ "$elapsed_ms" -ge 1000 ] || fail "destroyed after $elapsed_ms ms, before the 1 s deadline"
	wait_vm "$VMPID"
	expect_status 123 # destroyed at the deadline
	expect_in "$TMP/deaf.err" "did not power off before its shutdown deadline"
	# Bad timeouts are refused before anything happens.
	start_vm deaf2
	STATUS=0
	"$KAPSEL" shutdown --timeout soon deaf2 2>"$TMP/err" || STATUS=$?
	expect_status 2
	expect_in "$TMP/err" "--timeout 'soon' is not a whole number of seconds"
	"$KAPSEL" info deaf2 | grep -qx "state running" || fail "a refused shutdown touched deaf2"
	echo "shutdown timeout=99999999" | send deaf2
	expect_in "$TMP/reply" "error EINVAL timeout=99999999 is too long; the limit is 86400 seconds"
	echo "pause" | send deaf2
	echo "shutdown" | send deaf2
	expect_in "$TMP/reply" "error EBUSY VM 'deaf2' is paused and cannot shut down"
	"$KAPSEL" destroy deaf2 >/dev/null
	# A reboot request: the guest reboots in time, so the deadline (which
	# was for the boot that was asked) does not destroy the new boot.
	start_vm phoenix
	echo "shutdown mode=reboot timeout=1" | send phoenix
	expect_in "$TMP/reply" "guest_handles_shutdown yes"
	sleep 1.5
	"$KAPSEL" info phoenix | grep -qx "state running" || fail "rebooted VM was destroyed"
	expect_in "$TMP/phoenix.out" "idle: reboot requested"
	[ "$(grep -c 'idle: ready' "$TMP/phoenix.out")" -eq 2 ] || fail "the guest did not boot twice"
	"$KAPSEL" info phoenix | grep -qx "generation 1" || fail "generation after a reboot"
	"$KAPSEL" shutdown phoenix >/dev/null
	;;
control-destroy)
	start_vm victim
	printf 'wait\n' | send victim --keep-open --read-ms 10000 &
	waiter=$!
	sleep 0.2
	"$KAPSEL" destroy --no-wait victim || fail "destroy"
	wait_vm "$VMPID"
	expect_status 123 # destroyed: not 125, which means Kapsel could not run it
	wait "$waiter"
	# The waiting client is told how the VM ended, with the same exit code.
	[ "$(cat "$TMP/reply")" = "$(printf 'ok 2\nexit_code 123\nreason destroyed')" ] ||
		{ cat "$TMP/reply"; fail "wait reply"; }
	[ ! -e "$KAPSEL_RUNTIME_DIR/victim.sock" ] || fail "socket left behind"
	;;
control-concurrent)
	start_vm busy
	pids=()
	for i in $(seq 24); do
		( "$KAPSEL" info busy >"$TMP/c$i" 2>&1 && "$KAPSEL" stats busy >>"$TMP/c$i" 2>&1 ) &
		pids+=($!)
	done
	for i in $(seq 8); do
		printf 'info\nstats\ninfo\n' | "$SOCKCLIENT" "$KAPSEL_RUNTIME_DIR/busy.sock" >"$TMP/s$i" &
		pids+=($!)
	done
	for pid in "${pids[@]}"; do wait "$pid" || fail "a concurrent client failed"; done
	for i in $(seq 24); do
		expect_in "$TMP/c$i" "name busy"
		expect_in "$TMP/c$i" "exits_total:"
	done
	for i in $(seq 8); do
		[ "$(grep -c '^ok ' "$TMP/s$i")" -eq 3 ] || { cat "$TMP/s$i"; fail "pipelined replies"; }
	done
	"$KAPSEL" shutdown busy >/dev/null
	wait_vm "$VMPID"
	expect_status 0
	;;
control-hung-client)
	start_vm patient
	# Connects, sends half a request and hangs; others are served meanwhile.
	printf 'inf' | "$SOCKCLIENT" "$KAPSEL_RUNTIME_DIR/patient.sock" --keep-open --read-ms 15000 \
		>"$TMP/hung" &
	hung=$!
	printf '' | "$SOCKCLIENT" "$KAPSEL_RUNTIME_DIR/patient.sock" --keep-open --read-ms 15000 \
		>"$TMP/silent" &
	silent=$!
	sleep 0.3
	for i in 1 2 3; do
		timeout 3 "$KAPSEL" info patient >"$TMP/info" || fail "info blocked by a hung client"
		expect_in "$TMP/info" "state running"
	done
	a=$(stat_of patient hypercall_block)
	sleep 0.2
	b=$(stat_of patient hypercall_block)
	[ "$b" -gt "$a" ] || fail "the guest stopped running while a client hung"
	# The half request is answered with a timeout error and closed.
	wait "$hung" || fail "hung client was not disconnected"
	expect_in "$TMP/hung" "error ETIMEDOUT request not completed in time; closing the connection"
	kill "$silent" 2>/dev/null
	"$KAPSEL" shutdown patient >/dev/null
	wait_vm "$VMPID"
	expect_status 0
	;;
control-garbage)
	start_vm sturdy
	printf 'INFO\n\x01\x02\x03\xff\xfe\nfrobnicate\npause now=1\n%s\nset-limits disk=x\nshutdown timout=3\n\n' \
		"$(head -c 300 /dev/zero | tr '\0' 'a')" | send sturdy
	expect_in "$TMP/reply" "error EINVAL 'INFO' is not a request name"
	expect_in "$TMP/reply" "error EINVAL request contains byte 0x01 at offset 0"
	expect_in "$TMP/reply" "error ENOSYS unknown request 'frobnicate'; send 'help' for the list"
	expect_in "$TMP/reply" "error EINVAL pause takes no arguments (got 'now')"
	expect_in "$TMP/reply" "error EINVAL request name is longer than 32 characters"
	expect_in "$TMP/reply" "error EINVAL disk='x' is not a whole number"
	expect_in "$TMP/reply" "error EINVAL unknown argument 'timout' for shutdown; it takes timeout, mode"
	expect_in "$TMP/reply" "error EINVAL empty request"
	[ "$(wc -l <"$TMP/reply")" -eq 8 ] || { cat "$TMP/reply"; fail "expected 8 error lines"; }
	# NUL bytes inside a line.
	printf 'info\0pause\n' | send sturdy
	expect_in "$TMP/reply" "error EINVAL request contains a NUL byte"
	# Oversized: 5000 bytes without a newline get one error, then EOF.
	head -c 5000 /dev/zero | tr '\0' 'x' | send sturdy --keep-open
	[ "$(cat "$TMP/reply")" = "error E2BIG request longer than 4095 bytes; closing the connection" ] ||
		{ cat "$TMP/reply"; fail "oversized request"; }
	# Random binary garbage: whatever the replies, the VM lives.
	head -c 20000 /dev/urandom | send sturdy
	[ -s "$TMP/reply" ] || fail "no reply at all to random garbage"
	grep -v '^error ' "$TMP/reply" | head -1 >"$TMP/odd"
	[ ! -s "$TMP/odd" ] || { cat "$TMP/odd"; fail "garbage got a reply that is not an error line"; }
	"$KAPSEL" info sturdy | grep -qx "state running" || fail "VM hurt by garbage"
	"$KAPSEL" shutdown sturdy >/dev/null
	wait_vm "$VMPID"
	expect_status 0
	expect_not_in "$TMP/sturdy.err" "crash"
	;;
control-same-name)
	start_vm twin
	STATUS=0
	run_guest "$TMP/out" "$TMP/err" --kernel "$GUESTS/idle.elf" --name twin
	expect_status 125
	expect_in "$TMP/err" "kapsel: error: a VM named 'twin' is already running (control socket $KAPSEL_RUNTIME_DIR/twin.sock); choose another name, or stop it with 'kapsel destroy twin'"
	"$KAPSEL" info twin | grep -qx "state running" || fail "first twin hurt"
	# Unnamed VMs get unique names and do not collide.
	"$KAPSEL" run --no-console-input --kernel "$GUESTS/idle.elf" >"$TMP/a.out" 2>&1 </dev/null &
	a=$!
	"$KAPSEL" run --no-console-input --kernel "$GUESTS/idle.elf" >"$TMP/b.out" 2>&1 </dev/null &
	b=$!
	VMPIDS+=("$a" "$b")
	for _ in $(seq 100); do
		[ -S "$KAPSEL_RUNTIME_DIR/kapsel-$a.sock" ] && [ -S "$KAPSEL_RUNTIME_DIR/kapsel-$b.sock" ] && break
		sleep 0.05
	done
	"$KAPSEL" list --names >"$TMP/names"
	expect_in "$TMP/names" "kapsel-$a"
	expect_in "$TMP/names" "kapsel-$b"
	for n in twin "kapsel-$a" "kapsel-$b"; do "$KAPSEL" destroy "$n" >/dev/null || fail "destroy $n"; done
	;;
control-stale-socket)
	start_vm ghost
	kill -9 "$VMPID"
	wait "$VMPID" 2>/dev/null
	[ -S "$KAPSEL_RUNTIME_DIR/ghost.sock" ] || fail "a killed VM should leave its socket"
	"$SOCKCLIENT" "$KAPSEL_RUNTIME_DIR/ghost.sock" </dev/null >"$TMP/probe" || true
	expect_in "$TMP/probe" "connect: ECONNREFUSED"
	# list skips and removes it.
	[ -z "$("$KAPSEL" list --names)" ] || fail "a dead VM is listed"
	[ ! -e "$KAPSEL_RUNTIME_DIR/ghost.sock" ] || fail "list left the stale socket"
	# A stale socket found at start is removed with a warning.
	start_vm ghost2
	kill -9 "$VMPID"
	wait "$VMPID" 2>/dev/null
	start_vm ghost2
	expect_in "$TMP/ghost2.err" "removed the stale control socket $KAPSEL_RUNTIME_DIR/ghost2.sock"
	"$KAPSEL" info ghost2 | grep -qx "state running" || fail "restarted ghost2 not running"
	# A CLI verb on a dead VM's name says so and cleans up.
	kill -9 "$VMPID"
	wait "$VMPID" 2>/dev/null
	[ -S "$KAPSEL_RUNTIME_DIR/ghost2.sock" ] || fail "a killed VM should leave its socket"
	STATUS=0
	"$KAPSEL" info ghost2 >/dev/null 2>"$TMP/err" || STATUS=$?
	expect_status 1
	expect_in "$TMP/err" "kapsel: VM 'ghost2' is not running (removed its stale control socket)"
	[ ! -e "$KAPSEL_RUNTIME_DIR/ghost2.sock" ] || fail "the verb left the stale socket"
	;;
control-unauthenticated)
	[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root to act as another user"; exit 77; }
	command -v setpriv >/dev/null || { echo "SKIP: setpriv missing"; exit 77; }
	start_vm guarded
	[ "$(stat -c %a "$KAPSEL_RUNTIME_DIR")" = 700 ] || fail "runtime dir is not 0700"
	[ "$(stat -c %a "$KAPSEL_RUNTIME_DIR/guarded.sock")" = 600 ] || fail "socket is not 0600"
	# Open the file permissions on purpose: the peer-uid check must still refuse.
	chmod 755 "$TMP" "$KAPSEL_RUNTIME_DIR"
	chmod 666 "$KAPSEL_RUNTIME_DIR/guarded.sock"
	echo destroy | setpriv --reuid=65534 --regid=65534 --clear-groups \
		"$SOCKCLIENT" "$KAPSEL_RUNTIME_DIR/guarded.sock" >"$TMP/reply" || true
	expect_in "$TMP/reply" "error EACCES unauthenticated: uid 65534 may not control this VM"
	"$KAPSEL" info guarded | grep -qx "state running" || fail "VM hurt by an unauthenticated client"
	"$KAPSEL" destroy guarded >/dev/null
	;;
control-console)
	start_vm talk
	# Attach, type a line; the guest echoes it and the console client sees
	# the backlog ("idle: ready") and the echo.
	printf 'console\nhello guest\n' | send talk --keep-open --read-ms 1500
	expect_in "$TMP/reply" "ok 0"
	expect_in "$TMP/reply" "idle: ready"
	expect_in "$TMP/reply" "idle: input 'hello guest'"
	expect_in "$TMP/talk.out" "idle: input 'hello guest'"
	# Two consoles at once both see the output of a shutdown.
	printf 'console\n' | send talk --keep-open --read-ms 3000 &
	c1=$!
	printf 'console\n' | "$SOCKCLIENT" "$KAPSEL_RUNTIME_DIR/talk.sock" --keep-open --read-ms 3000 \
		>"$TMP/reply2" &
	c2=$!
	sleep 0.3
	"$KAPSEL" shutdown talk >/dev/null
	wait "$c1" || fail "console 1 not closed at VM end"
	wait "$c2" || fail "console 2 not closed at VM end"
	expect_in "$TMP/reply" "idle: poweroff requested"
	expect_in "$TMP/reply2" "idle: poweroff requested"
	wait_vm "$VMPID"
	expect_status 0
	# The CLI: input from a pipe, output until the VM ends.
	start_vm talk2
	( sleep 0.5; "$KAPSEL" shutdown talk2 >/dev/null ) &
	printf 'from cli\n' | timeout 10 "$KAPSEL" console talk2 >"$TMP/console" 2>"$TMP/console.err" ||
		fail "kapsel console failed"
	expect_in "$TMP/console" "idle: input 'from cli'"
	expect_in "$TMP/console.err" "VM 'talk2' has ended"
	;;
control-set-limits)
	truncate -s 1M "$TMP/disk.img"
	start_vm limited --disk "$TMP/disk.img,iops=100"
	"$KAPSEL" info limited >"$TMP/info"
	expect_in "$TMP/info" "disk 0 bus=pv readonly=no iops=100 iops_burst=0 bps=0 bps_burst=0 path=$TMP/disk.img"
	"$KAPSEL" control limited set-limits disk=0 bps=1048576 readonly=yes >"$TMP/reply" || fail "set-limits"
	expect_in "$TMP/reply" "disk 0 readonly=yes iops=100 iops_burst=0 bps=1048576 bps_burst=0"
	"$KAPSEL" info limited >"$TMP/info"
	expect_in "$TMP/info" "disk 0 bus=pv readonly=yes iops=100 iops_burst=0 bps=1048576"
	"$KAPSEL" dumpxml limited >"$TMP/dump.xml"
	expect_in "$TMP/dump.xml" "<total_bytes_sec>1048576</total_bytes_sec>"
	expect_in "$TMP/dump.xml" "<total_iops_sec>100</total_iops_sec>"
	expect_in "$TMP/dump.xml" "<readonly/>"
	"$KAPSEL" control limited set-limits disk=0 readonly=no iops=0 >/dev/null || fail "set-limits back"
	"$KAPSEL" dumpxml limited >"$TMP/dump.xml"
	expect_not_in "$TMP/dump.xml" "<readonly/>"
	expect_not_in "$TMP/dump.xml" "total_iops_sec"
	STATUS=0
	"$KAPSEL" control limited set-limits disk=3 iops=1 2>"$TMP/err" || STATUS=$?
	expect_status 1
	expect_in "$TMP/err" "VM 'limited' has no disk 3; it has 1 (numbered from 0)"
	STATUS=0
	"$KAPSEL" control limited set-limits iops=1 2>"$TMP/err" || STATUS=$?
	expect_status 1
	expect_in "$TMP/err" "set-limits needs disk=N"
	"$KAPSEL" destroy limited >/dev/null
	# A disk opened read-only cannot become writable at run time.
	start_vm frozen --disk "$TMP/disk.img,readonly"
	STATUS=0
	"$KAPSEL" control frozen set-limits disk=0 readonly=no 2>"$TMP/err" || STATUS=$?
	expect_status 1
	expect_in "$TMP/err" "disk 0 was opened read-only (readonly in its definition); restart the VM without readonly"
	"$KAPSEL" destroy frozen >/dev/null
	;;
control-stats-watch)
	start_vm watched
	STATUS=0
	timeout 1.6 "$KAPSEL" stats --watch 0.5 watched >"$TMP/watch" || STATUS=$?
	expect_status 124 # still watching when timeout(1) stopped it
	n=$(grep -c '^--- watched ' "$TMP/watch")
	[ "$n" -ge 2 ] || { cat "$TMP/watch"; fail "stats --watch printed $n rounds"; }
	# The guest ticks: later rounds count more block hypercalls.
	first=$(awk '/hypercall_block:/ { print $2; exit }' "$TMP/watch")
	last=$(awk '/hypercall_block:/ { v = $2 } END { print v }' "$TMP/watch")
	[ "$last" -gt "$first" ] || fail "counters did not move ($first -> $last)"
	# --watch ends by itself when the VM ends.
	( sleep 0.5; "$KAPSEL" shutdown watched >/dev/null ) &
	timeout 10 "$KAPSEL" stats --watch 0.2 watched >"$TMP/watch2" || fail "stats --watch did not end with the VM"
	expect_in "$TMP/watch2" "VM 'watched' has ended"
	;;
control-help)
	start_vm helpful
	echo help | send helpful
	for verb in info pause resume shutdown destroy stats set-limits dumpxml console wait progress save snapshot migrate; do
		grep -q "^$verb " "$TMP/reply" || { cat "$TMP/reply"; fail "help lacks $verb"; }
	done
	"$KAPSEL" destroy helpful >/dev/null
	for verb in list info pause resume shutdown destroy stats console dumpxml control; do
		"$KAPSEL" help "$verb" >"$TMP/usage" || fail "help $verb"
		expect_in "$TMP/usage" "Usage: kapsel $verb"
	done
	# Option errors name the verb as typed, getopt's own included.
	"$KAPSEL" pause -x 2>"$TMP/err" && fail "pause -x succeeded"
	expect_in "$TMP/err" "kapsel pause: invalid option -- 'x'"
	expect_in "$TMP/err" "Try 'kapsel pause --help'."
	"$KAPSEL" destroy --bogus 2>"$TMP/err" && fail "destroy --bogus succeeded"
	expect_in "$TMP/err" "kapsel destroy: unrecognized option '--bogus'"
	"$KAPSEL" info 2>"$TMP/err" && fail "info without a name succeeded"
	expect_in "$TMP/err" "kapsel info: expected exactly one VM name"
	;;
control-console-eof)
	# A script's console: Ctrl-] is a byte for the guest, the end of input
	# ends 'kapsel console' (after the guest answered) while the VM runs on;
	# --follow sends nothing and shows output until the VM ends.
	start_vm eof
	start=$(date +%s%N)
	STATUS=0
	printf 'one\035two\nlast line\n' | timeout 30 "$KAPSEL" console eof >"$TMP/console" 2>"$TMP/console.err" ||
		STATUS=$?
	elapsed=$(ms_since "$start")
	[ "$STATUS" -eq 0 ] || { cat "$TMP/console.err"; fail "kapsel console exited $STATUS at the end of its input"; }
	echo "kapsel console ended ${elapsed} ms after it started"
	grep -q "idle: input 'one"$'\035'"two'" "$TMP/console" || fail "Ctrl-] from a pipe did not reach the guest"
	expect_in "$TMP/console" "idle: input 'last line'"
	expect_not_in "$TMP/console.err" "Detached"
	expect_not_in "$TMP/console.err" "has ended"
	"$KAPSEL" info eof | grep -qx "state running" || fail "the VM did not run on after the console left"
	timeout 30 "$KAPSEL" console --follow eof </dev/null >"$TMP/follow" 2>"$TMP/follow.err" &
	FOLLOW=$!
	sleep 1.5
	kill -0 "$FOLLOW" 2>/dev/null || fail "console --follow ended before the VM"
	"$KAPSEL" shutdown eof >/dev/null
	STATUS=0; wait "$FOLLOW" || STATUS=$?
	[ "$STATUS" -eq 0 ] || fail "console --follow exited $STATUS"
	expect_in "$TMP/follow" "idle: poweroff requested"
	expect_in "$TMP/follow.err" "VM 'eof' has ended"
	wait_vm "$VMPID"
	expect_status 0
	;;
control-daemon)
	# run --daemon returns once the VM runs; the console goes to the log,
	# the pidfile names the VM's process and goes when the VM does.
	STATUS=0
	timeout 60 "$KAPSEL" run --daemon --kernel "$GUESTS/idle.elf" --name bg --cmdline "tick_ms=20" \
		--console-output "$TMP/bg.log" --pidfile "$TMP/bg.pid" >"$TMP/bg.out" 2>"$TMP/bg.err" </dev/null ||
		STATUS=$?
	[ "$STATUS" -eq 0 ] || { cat "$TMP/bg.err"; fail "run --daemon exited $STATUS"; }
	[ -s "$TMP/bg.pid" ] || fail "no pidfile once run --daemon returned"
	pid=$(cat "$TMP/bg.pid")
	VMPIDS+=("$pid")
	grep -qx "[0-9]\+" "$TMP/bg.pid" || fail "pidfile holds '$pid'"
	kill -0 "$pid" || fail "the pidfile's process $pid is not running"
	"$KAPSEL" info bg >"$TMP/info" || fail "info bg"
	expect_in "$TMP/info" "pid $pid"
	grep -qx "state running" "$TMP/info" || fail "not running"
	[ ! -s "$TMP/bg.out" ] || fail "run --daemon wrote to stdout: $(cat "$TMP/bg.out")"
	[ ! -s "$TMP/bg.err" ] || fail "run --daemon wrote to stderr: $(cat "$TMP/bg.err")"
	for _ in $(seq 100); do grep -q "idle: ready" "$TMP/bg.log" && break; sleep 0.05; done
	expect_in "$TMP/bg.log" "idle: ready"
	ls "$TMP"/.bg.pid.* 2>/dev/null && fail "a temporary pidfile was left"
	"$KAPSEL" shutdown bg >/dev/null || fail "shutdown bg"
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
	kill -0 "$pid" 2>/dev/null && fail "the daemon did not end"
	[ ! -e "$TMP/bg.pid" ] || fail "the pidfile outlived the VM"
	expect_in "$TMP/bg.log" "idle: poweroff requested"
	# Kapsel's own messages after the start go to the log too.
	"$KAPSEL" run --daemon --kernel "$GUESTS/idle.elf" --name bg2 \
		--console-output "$TMP/bg2.log" --pidfile "$TMP/bg2.pid" </dev/null || fail "run --daemon bg2"
	VMPIDS+=("$(cat "$TMP/bg2.pid")")
	"$KAPSEL" destroy bg2 >/dev/null || fail "destroy bg2"
	for _ in $(seq 100); do [ -e "$TMP/bg2.pid" ] || break; sleep 0.05; done
	[ ! -e "$TMP/bg2.pid" ] || fail "the pidfile outlived a destroyed VM"
	expect_in "$TMP/bg2.log" "kapsel: warning: VM 'bg2' stopped by request"
	# Refused: no log file (usage, 2); a kernel that cannot be loaded (125,
	# the reason on stderr, no pidfile).
	STATUS=0
	"$KAPSEL" run --daemon --kernel "$GUESTS/idle.elf" --pidfile "$TMP/x.pid" 2>"$TMP/err" </dev/null || STATUS=$?
	expect_status 2
	expect_in "$TMP/err" "--daemon needs --console-output FILE"
	STATUS=0
	timeout 60 "$KAPSEL" run --daemon --kernel "$TMP/missing.elf" --console-output "$TMP/x.log" \
		--pidfile "$TMP/x.pid" 2>"$TMP/err" </dev/null || STATUS=$?
	expect_status 125
	expect_in "$TMP/err" "missing.elf"
	[ ! -e "$TMP/x.pid" ] || fail "a pidfile for a VM that never ran"
	;;
*)
	fail "unknown case '$1'"
	;;
esac
echo "PASS: $1"
