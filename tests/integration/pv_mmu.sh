#!/bin/bash
# Integration tests: PV MMU (address spaces, user mode, syscalls, user faults) with mmu.elf.
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
out=$TMP/out err=$TMP/err

# expect_persist_went_on BEFORE AFTER_OUT AFTER_ERR: the persist process
# stopped in BEFORE (saved or migrated) went on in AFTER_OUT from the next
# tick, not from the start; the count it exits with is the one in the
# page the kernel mapped for it (2^20 per tick); one address space.
expect_persist_went_on() {
	local before=$1 after=$2 after_err=$3 last first
	expect_not_in "$before" "persist ok"
	expect_in "$after" "persist ok"
	grep -Eq "^persist: ([0-9]+) ticks, count ([0-9]+), page \2$" "$after" ||
		{ cat "$after"; fail "count and page differ"; }
	last=$(awk '$1 == "tick" { n = $2 } END { print n + 0 }' "$before")
	first=$(awk '$1 == "tick" { print $2; exit }' "$after")
	[ "$first" -eq $((last + 1)) ] || { cat "$before" "$after"; fail "went on at tick $first after $last"; }
	expect_in "$after_err" "pv_mmu: spaces=1"
}

case "$1" in
pv-mmu)
	# Every promise of docs/abi.md §18, checked by a small kernel that
	# runs one user program in two address spaces.
	run_guest "$out" "$err" --kernel "$GUESTS/mmu.elf" --stats
	expect_status 0
	expect_in "$out" "mmu ok"
	expect_not_in "$out" "WRONG"
	expect_in "$out" "process cannot read kernel memory: ok"
	expect_in "$out" "update of the current space is seen at once: ok"
	expect_in "$err" "pv_mmu: spaces="
	;;
pv-mmu-save-restore)
	# A process counting in user mode, in its own address space, is saved
	# mid-run (SIGHUP, --save-stop) and restored: it goes on from its
	# count, and the kernel finds the count in the page it mapped.
	dir=$TMP/saved
	save_when "$out" "$err" "$dir" "^tick 5 " --kernel "$GUESTS/mmu.elf" --cmdline "persist"
	expect_status 0
	expect_in "$err" "saved VM"
	"$KAPSEL" inspect "$dir" >"$TMP/inspect" 2>&1 || true
	expect_in "$TMP/inspect" "vcpu.pv_mmu: 1 address space(s), 5 mapping(s); current 1"
	STATUS=0
	timeout --kill-after=5 120 "$KAPSEL" restore --no-console-input --no-control --stats \
		--kernel "$GUESTS/mmu.elf" "$dir" \
		>"$TMP/out2" 2>"$TMP/err2" </dev/null || STATUS=$?
	expect_status 0
	expect_persist_went_on "$out" "$TMP/out2" "$TMP/err2"
	;;
pv-mmu-migrate)
	# Live migration of a process counting in its own address space: the
	# pre-copy rounds must see every page the process dirties through its
	# user mapping (dirty logging is by guest-physical page, whoever's
	# table maps it), and the destination rebuilds the space from the
	# stream.  The count the process exits with is the one in its page.
	live_migrate "$out" "$err" "$TMP/dst.out" "$TMP/dst.err" "^tick 5 " 100 \
		-- --kernel "$GUESTS/mmu.elf" --cmdline "persist" \
		-- --kernel "$GUESTS/mmu.elf" --stats
	expect_persist_went_on "$out" "$TMP/dst.out" "$TMP/dst.err"
	;;
pv-mmu-timer)
	# A periodic timer keeps ticking while a process makes syscalls back
	# to back (each one switches address spaces twice): a tick that lands
	# during a switch still becomes an upcall.
	run_guest "$out" "$err" --kernel "$GUESTS/mmu.elf" --cmdline "timer-storm period_ms=10 run_ms=1500"
	expect_status 0
	expect_in "$out" "timer-storm ok"
	expect_not_in "$out" "WRONG"
	;;
pv-mmu-smp)
	# Processes on two vCPUs at once, each in its own address space with
	# its own kernel stack; then a TLB shootdown: a page made read-only on
	# vCPU 0 stops vCPU 1's process's writes before MMU_UPDATE returns.
	run_guest "$out" "$err" --kernel "$GUESTS/mmusmp.elf" --vcpus 2 --stats
	expect_status 0
	expect_in "$out" "mmusmp: vCPU 0 ran its own process: ok"
	expect_in "$out" "mmusmp: vCPU 1 ran its own process: ok"
	expect_in "$out" "mmusmp: no write after the protect returned: ok"
	expect_in "$out" "mmusmp: vCPU 1's process took the write fault: ok"
	expect_in "$out" "mmusmp: destroy a space another vCPU runs on: ok"
	expect_in "$out" "mmusmp ok"
	expect_not_in "$out" "WRONG"
	grep -Eq "remote_flushes=[1-9]" "$err" || { cat "$err"; fail "no remote TLB flush counted"; }
	;;
*)
	fail "unknown case $1"
	;;
esac
exit 0
