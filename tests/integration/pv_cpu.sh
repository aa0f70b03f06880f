#!/bin/bash
# Integration tests: PV CPU (guest trap handlers, upcalls, vCPU timers) with traps.elf and preempt.elf.
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
out=$TMP/out err=$TMP/err

case "$1" in
pv-traps)
	# #UD (with a nested #PF), #BP, #DE, two #GP and two #PF, each
	# handled by the guest, which checks vector, error code and CR2.
	run_guest "$out" "$err" --kernel "$GUESTS/traps.elf" --stats
	expect_status 0
	expect_in "$out" "trap #PF (write, supervisor page): vector 14 error 0x7 cr2 0x10000 ok"
	expect_in "$out" "trap #GP (selector): vector 13 error 0x40 cr2 0x0 ok"
	expect_in "$out" "traps ok: 8 handled"
	expect_not_in "$out" "WRONG"
	expect_in "$err" "traps_delivered: 8"
	expect_in "$err" "irets: 8"
	;;
pv-preempt)
	# Two hypercall-free compute loops switched by a periodic timer upcall.
	run_guest "$out" "$err" --kernel "$GUESTS/preempt.elf" --cmdline "switches=30 period_us=2000" \
		--stats
	expect_status 0
	expect_in "$out" "preempt ok"
	expect_in "$out" "preempt: 0 early timer expiries"
	grep -Eq "^preempt: 30 switches; thread 0 progressed in [0-9]+ of 15 slices" "$out" ||
		{ cat "$out"; fail "switch count"; }
	expect_in "$err" "upcalls_delivered:"
	expect_in "$err" "timer_fires:"
	;;
pv-preempt-save-restore)
	# Saved mid-run (SIGHUP, --save-stop) and restored: both threads go on,
	# and the restored periodic timer keeps the guest's time (never early).
	dir=$TMP/saved
	save_when "$out" "$err" "$dir" "^switch 50" \
		--kernel "$GUESTS/preempt.elf" --cmdline "switches=1000 period_us=2000"
	expect_status 0
	expect_in "$err" "saved VM"
	expect_not_in "$out" "preempt ok"
	"$KAPSEL" inspect "$dir" >"$TMP/inspect" 2>&1 || true
	expect_in "$TMP/inspect" "vcpu.pv_cpu: trap handlers for none; upcall callback 0x"
	expect_in "$TMP/inspect" "period 2000000 ns, VIRQ port"
	STATUS=0
	timeout --kill-after=5 60 "$KAPSEL" restore --no-console-input --no-control --stats \
		--kernel "$GUESTS/preempt.elf" "$dir" \
		>"$TMP/out2" 2>"$TMP/err2" </dev/null || STATUS=$?
	expect_status 0
	# The restored guest goes on counting from where the saved one was.
	before=$(awk '$1 == "switch" { n = $2 } END { print n + 0 }' "$out")
	after=$(awk '$1 == "switch" { print $2; exit }' "$TMP/out2")
	[ -n "$after" ] && [ "$after" -gt "$before" ] ||
		{ cat "$out" "$TMP/out2"; fail "switch count after restore: $after, before: $before"; }
	expect_in "$TMP/out2" "preempt: 0 early timer expiries"
	expect_in "$TMP/out2" "us early), 1 restores"
	grep -Eq "^preempt: 1000 switches; thread 0 progressed in [0-9]+ of 500 slices" "$TMP/out2" ||
		{ cat "$TMP/out2"; fail "switch count after restore"; }
	expect_in "$TMP/out2" "preempt ok"
	expect_in "$TMP/err2" "upcalls_delivered:"
	;;
pv-hostile-registrations)
	# Handlers and stacks outside RAM or in hypervisor-owned memory are
	# refused; a vector without a handler then ends in a crash report
	# that shows the handlers the guest did register.
	run_guest "$out" "$err" --kernel "$GUESTS/traps.elf" --cmdline "hostile-registrations"
	expect_status 126
	expect_in "$out" "register stack in hypervisor page tables -> -14"
	expect_in "$out" "register handler in the CPL0 stubs -> -14"
	expect_in "$out" "iret of a frame in the event page -> -14"
	expect_in "$out" "hostile registrations refused"
	expect_in "$err" "kapsel: the guest has no handler registered for invalid opcode (#UD)"
	expect_in "$err" "crashed: invalid opcode (#UD)"
	expect_in "$err" "guest handler chain (vCPU 0):"
	grep -Eq "page fault \(#PF\) +-> 0x[0-9a-f]+ <kg_cpu_entry\+0>, stack \[" "$err" ||
		{ cat "$err"; fail "handler chain does not list the #PF handler"; }
	;;
pv-fault-in-handler)
	run_guest "$out" "$err" --kernel "$GUESTS/traps.elf" --cmdline "fault-in-handler"
	expect_status 126
	expect_in "$err" "page fault (#PF) inside the guest's own page fault (#PF) handler"
	expect_in "$err" "crashed: page fault (#PF), error code 0x4, at"
	expect_in "$err" "<on_page_fault_faulting+"
	expect_in "$err" "deliveries in progress: page fault (#PF)"
	;;
pv-stack-overflow)
	# A #PF nested in the #UD handler when its 4 KiB stack is nearly used
	# up: the frame does not fit, nothing is written below the stack.
	run_guest "$out" "$err" --kernel "$GUESTS/traps.elf" --cmdline "stack-overflow"
	expect_status 126
	expect_in "$out" "stack-overflow: vector 6"
	expect_in "$err" "kapsel: cannot deliver page fault (#PF): the frame does not fit the handler's stack"
	expect_in "$err" "crashed: page fault (#PF)"
	expect_in "$err" "deliveries in progress: invalid opcode (#UD)"
	expect_in "$err" "guest handler chain (vCPU 0):"
	;;
pv-upcall-storm)
	# A guest flooding itself with events under a 100 us periodic timer:
	# the VMM's control socket keeps answering while it runs.
	"$KAPSEL" run --no-console-input --kernel "$GUESTS/preempt.elf" --name storm \
		--cmdline "storm_ms=600000" --stats >"$out" 2>"$err" </dev/null &
	pid=$!
	trap 'stop_children; kill -9 $pid 2>/dev/null; rm -rf "$TMP"' EXIT
	for _ in $(seq 400); do
		grep -q "storm: running" "$out" && [ -S "$KAPSEL_RUNTIME_DIR/storm.sock" ] && break
		kill -0 $pid 2>/dev/null || { cat "$err"; fail "storm VM died at start"; }
		sleep 0.05
	done
	sleep 1 # well into the storm
	for _ in 1 2 3; do
		timeout 10 "$KAPSEL" info storm >"$TMP/info" 2>&1 ||
			{ cat "$TMP/info"; fail "kapsel info did not answer during the storm"; }
		grep -qx "state running" "$TMP/info" || { cat "$TMP/info"; fail "not running"; }
	done
	kill -TERM $pid
	STATUS=0
	wait $pid || STATUS=$?
	expect_status 123 # stopped from outside (SIGTERM)
	expect_in "$err" "VM 'storm' stopped by request"
	expect_in "$err" "hypercall_evtchn_send:"
	expect_in "$err" "upcalls_delivered:"
	# The 100 us minimum period bounds the timer by the uptime.
	fires=$(awk '/timer_fires:/{print $2}' "$err")
	uptime_ns=$(awk '/uptime_ns/{print $4}' "$err")
	[ "${fires:-0}" -gt 0 ] || fail "the timer never fired"
	[ $((fires * 100000)) -le $((uptime_ns + 1000000)) ] ||
		fail "timer fired $fires times in $uptime_ns ns: faster than the 100 us minimum period"
	;;
*)
	fail "unknown case $1"
	;;
esac
exit 0
