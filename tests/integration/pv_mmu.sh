#!/bin/bash
# Integration tests: PV MMU (address spaces, user mode, syscalls, user faults) with mmu.elf.
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
out=$TMP/out err=$TMP/err

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
*)
	fail "unknown case $1"
	;;
esac
exit 0
