#!/bin/bash
# Integration tests: the reference multitasking kernel (guest-pv/minikernel) with its processes' outcomes checked.
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
out=$TMP/out err=$TMP/err img=$TMP/disk.img
KERNEL=$MINIKERNEL

# A 1 MiB disk whose sector 0 the "disk" program reads and prints.
make_disk() {
	truncate -s 1M "$img"
	printf 'KAPSEL MINIKERNEL DISK TEST\n' | dd of="$img" conv=notrunc status=none
}

# expect_outcomes FILE: every process ended as the kernel's table says,
# line by line, and the kernel said why it killed each hostile one.
expect_outcomes() {
	local file=$1 line
	while IFS= read -r line; do
		expect_in "$file" "$line"
	done <<'LINES'
process 1 hello: exit 0: ok
process 2 spin: exit 0: ok
process 3 spin: exit 0: ok
process 4 sleeper: exit 0: ok
process 5 counter: exit 0: ok
process 6 forker: exit 0: ok
process 7 disk: exit 0: ok
process 8 peek: killed by #PF page fault: ok
process 9 poke: killed by #PF page fault: ok
process 10 cli: killed by #GP general protection: ok
process 11 hlt: killed by #GP general protection: ok
process 12 inport: killed by #GP general protection: ok
process 13 hypercall: killed by #GP general protection: ok
process 14 wrmsr: killed by #GP general protection: ok
process 15 movcr3: killed by #GP general protection: ok
process 16 jmpkernel: killed by #PF page fault: ok
kernel: killed pid 8 (peek): #PF page fault reading 0x100000 at rip 0x80000
kernel: killed pid 16 (jmpkernel): #PF page fault executing 0x100000 at rip 0x100000
kernel: killed pid 10 (cli): #GP general protection at rip 0x80000
hello: bad pointers refused
disk: wrote and read back sectors 1-3, bad buffers refused: ok
counter: done, canary intact
refused: its family holds 8 processes, the limit
LINES
	expect_not_in "$file" "WRONG"
	grep -q "^kernel: killed pid 9 (poke): #PF page fault writing 0x[0-9a-f]* at rip 0x80000" "$file" ||
		{ cat "$file"; fail "poke was not killed writing another process's memory"; }
	# Its pid depends on whether the fork bomb forked first.
	grep -Eq "^forker: child [0-9]+ exited 42, my word 1, my heap 7, my stack 5$" "$file" &&
		grep -Eq "^process [0-9]+ forker/child: exit 42: ok$" "$file" || { cat "$file"; fail "forker's child"; }
	# The fork bomb's first process exits with its family's refusals,
	# which the kernel counted itself (outcome_ok): more than none.
	grep -Eq "^process 17 forkbomb: exit [1-9][0-9]*: ok$" "$file" || { cat "$file"; fail "fork bomb"; }
	grep -Eq "^process [0-9]+ forkbomb/child: exit [0-9]+: ok$" "$file" || { cat "$file"; fail "fork bomb children"; }
	[ "$(grep -c '^spin: pid [23] was preempted [0-9]* times in [0-9]* timer ticks$' "$file")" = 2 ] || { cat "$file"; fail "spin"; }
	# One line per process, as many as the kernel counted, none leaked.
	local count listed
	count=$(sed -n 's/^minikernel: all \([0-9]*\) processes ended as expected$/\1/p' "$file")
	listed=$(grep -c '^process [0-9]* ' "$file")
	[ -n "$count" ] && [ "$count" = "$listed" ] || { cat "$file"; fail "$listed process lines, kernel says '$count'"; }
	grep -Eq "^minikernel: $count processes, [0-9]+ context switches, 0 of [0-9]+ frames still in use$" "$file" ||
		{ cat "$file"; fail "frames leaked"; }
}

# expect_disk_written: the "disk" program's sectors 1-3 are on the image.
expect_disk_written() {
	local s
	for s in 1 2 3; do
		dd if="$img" bs=512 skip=$s count=1 status=none | grep -aq "^minikernel sector $s written by pid 7$" ||
			fail "sector $s of the image does not hold what pid 7 wrote"
	done
}

# save_restore VCPUS: saved while "counter" counts and "sleeper" sleeps
# (others may run still) on VCPUS vCPUs, restored from the state: every
# process goes on to its end.
save_restore() {
	make_disk
	dir=$TMP/saved
	save_when "$out" "$err" "$dir" "^counter: round 5$" --kernel "$KERNEL" --disk "$img" \
		--vcpus "$1" --cmdline "rounds=150"
	expect_status 0
	expect_in "$err" "saved VM"
	expect_not_in "$out" "minikernel: all"
	"$KAPSEL" inspect "$dir" >"$TMP/inspect" 2>&1 || true
	# counter and sleeper at least were alive, each in its address space.
	grep -Eq "vcpu.pv_mmu: ([2-9]|[1-9][0-9]+) address space" "$TMP/inspect" ||
		{ cat "$TMP/inspect"; fail "fewer than two address spaces saved"; }
	STATUS=0
	LAST_ERR=$TMP/err2
	timeout --kill-after=5 120 "$KAPSEL" restore --no-console-input --no-control --stats \
		--kernel "$KERNEL" --disk "0=$img" "$dir" >"$TMP/out2" 2>"$TMP/err2" </dev/null || STATUS=$?
	expect_status 0
	expect_in "$TMP/out2" "counter: round 150"
	# The counter went on from where it was saved, not from the start.
	last=$(awk '$1 == "counter:" && $2 == "round" { n = $3 } END { print n + 0 }' "$out")
	first=$(awk '$1 == "counter:" && $2 == "round" { print $3; exit }' "$TMP/out2")
	[ "$first" -eq $((last + 1)) ] || { cat "$out" "$TMP/out2"; fail "restored at round $first after $last"; }
	last=$(awk '$1 == "sleeper:" { n = $4 } END { print n + 0 }' "$out")
	first=$(awk '$1 == "sleeper:" { print $4; exit }' "$TMP/out2")
	[ "$first" -eq $((last + 1)) ] || { cat "$out" "$TMP/out2"; fail "sleeper woke up $first after $last"; }
	expect_in "$TMP/out2" "sleeper: woke up 100"
	cat "$out" "$TMP/out2" >"$TMP/both"
	expect_outcomes "$TMP/both"
}

case "$1" in
minikernel-pv-disk)
	# Seventeen programs in their own address spaces on the PV disk.
	make_disk
	run_guest "$out" "$err" --kernel "$KERNEL" --disk "$img" --stats
	expect_status 0
	expect_in "$out" "kernel: disk of 2048 sectors via pv"
	expect_in "$out" "disk: sector 0 says 'KAPSEL MINIKERNEL DISK TEST'"
	expect_outcomes "$out"
	expect_disk_written
	expect_in "$err" "pv_mmu: spaces="
	;;
minikernel-smp)
	# The same kernel on 2 vCPUs: processes move between them under the
	# kernel lock, each vCPU with its own timer, stacks and address space,
	# and every process still ends as its table says.
	make_disk
	run_guest "$out" "$err" --kernel "$KERNEL" --disk "$img" --vcpus 2 --stats
	expect_status 0
	expect_in "$out" "kernel: scheduling on 2 vCPUs"
	expect_in "$out" "kernel: vCPU 1 starts pid"
	expect_outcomes "$out"
	expect_disk_written
	grep -Eq "^minikernel: vCPU 1 switched to a process [1-9][0-9]* times$" "$out" ||
		{ cat "$out"; fail "vCPU 1 never ran a process"; }
	grep -Eq "^minikernel: vCPU 0 switched to a process [1-9][0-9]* times$" "$out" ||
		{ cat "$out"; fail "vCPU 0 never ran a process"; }
	expect_in "$err" "vcpu1_power: up"
	;;
minikernel-ata-disk)
	# The same kernel, the same block API, on the emulated ATA disk.
	make_disk
	run_guest "$out" "$err" --kernel "$KERNEL" --disk "$img,bus=ata"
	expect_status 0
	expect_in "$out" "kernel: disk of 2048 sectors via ata"
	expect_in "$out" "disk: sector 0 says 'KAPSEL MINIKERNEL DISK TEST'"
	expect_outcomes "$out"
	expect_disk_written
	;;
minikernel-save-restore)
	save_restore 1
	;;
minikernel-smp-save-restore)
	# As above on 2 vCPUs: both vCPUs' current processes, address spaces
	# and timers are in the state, and vCPU 1 runs again after restore.
	save_restore 2
	expect_in "$out" "kernel: vCPU 1 starts pid"
	expect_in "$TMP/err2" "vcpu1_power: up"
	# The restored VM's own counters: vCPU 1 exited (ran) after restore.
	grep -Eq "^  vcpu1_exits_total: [1-9][0-9]*$" "$TMP/err2" ||
		{ cat "$TMP/err2"; fail "vCPU 1 did not run after restore"; }
	grep -Eq "^minikernel: vCPU 1 switched to a process [1-9][0-9]* times$" "$TMP/out2" ||
		{ cat "$TMP/out2"; fail "vCPU 1 never ran a process"; }
	;;
minikernel-migrate)
	# Live migration while "counter" counts and "sleeper" sleeps, each in
	# its own address space: the pre-copy rounds see what the processes
	# dirty through their own mappings, the destination rebuilds every
	# space, and every process goes on to its end there.
	make_disk
	live_migrate "$out" "$err" "$TMP/dst.out" "$TMP/dst.err" "^counter: round 5$" 150 \
		-- --kernel "$KERNEL" --disk "$img" --cmdline "rounds=150" \
		-- --kernel "$KERNEL" --disk "$img"
	expect_not_in "$out" "minikernel: all"
	expect_in "$TMP/dst.out" "counter: round 150"
	last=$(awk '$1 == "counter:" && $2 == "round" { n = $3 } END { print n + 0 }' "$out")
	first=$(awk '$1 == "counter:" && $2 == "round" { print $3; exit }' "$TMP/dst.out")
	[ "$first" -eq $((last + 1)) ] || { cat "$out" "$TMP/dst.out"; fail "destination began at round $first after $last"; }
	cat "$out" "$TMP/dst.out" >"$TMP/both"
	expect_outcomes "$TMP/both"
	expect_disk_written
	;;
minikernel-bad-run)
	# The harness can fail: a kernel with a deliberate copy-on-write bug
	# (break=cow: fork shares writable pages) lets the child's writes
	# reach the parent, and the kernel's check makes the VM exit 1.
	make_disk
	run_guest "$out" "$err" --kernel "$KERNEL" --disk "$img" --cmdline "break=cow"
	expect_status 1
	# The child's writes reach the parent (its stack is shared too, so how
	# badly the parent ends may vary); only forker is wrong.
	grep -Eq "^forker: child [0-9]+ exited 42, my word 2, my heap 8" "$out" ||
		{ cat "$out"; fail "the child's writes did not reach the parent"; }
	grep -Eq "^process 6 forker: .*: WRONG \(expected exit 0\)$" "$out" || { cat "$out"; fail "forker not WRONG"; }
	# The kernel's own check ended the run (not a crash): every
	# process was accounted for, some wrongly (the fork bomb's family
	# shares its stacks too and may end badly as well).
	grep -Eq "^minikernel: [0-9]+ WRONG$" "$out" || { cat "$out"; fail "no verdict"; }
	# Without a disk the "disk" program cannot read sector 0: exit 100.
	run_guest "$out" "$err" --kernel "$KERNEL"
	expect_status 1
	expect_in "$out" "kernel: no disk; the sector syscalls answer -ENODEV"
	expect_in "$out" "process 7 disk: exit 100: WRONG (expected exit 0)"
	expect_in "$out" "minikernel: 1 WRONG"
	;;
*)
	fail "unknown case $1"
	;;
esac
exit 0
