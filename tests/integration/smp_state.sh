#!/bin/bash
# Integration tests: an SMP guest (smp.elf on 2 vCPUs) paused, saved, restored, cloned, migrated and rebooted mid-run.
# suite: kvm
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
out=$TMP/out err=$TMP/err

# smp.elf's first run passes ROUNDS tokens around the vCPUs' ring; every
# round needs one inter-processor event per vCPU, so an event lost across a
# pause, save or migration hangs the guest (and the run's timeout fails
# the case).  STARTED is the line after which every vCPU is up.
ROUNDS=3000
STARTED="^smp: vCPU 1 started for run 1"

# expect_consistent FILE: the run that ended in FILE finished both runs
# with every vCPU's counts and totals consistent.
expect_consistent() {
	expect_in "$1" "smp ok: 2 vCPUs, $ROUNDS + $((ROUNDS + 7)) rounds, 2 runs"
	grep -Eq "^smp: run 1 totals: atomic ([0-9]+) \(want \1\), locked ([0-9]+) \(want \2\), $ROUNDS rounds" "$1" ||
		{ cat "$1"; fail "run 1 totals"; }
	grep -Eq "^smp: run 1 vCPU 1: ipi sent $ROUNDS received $ROUNDS, timer [1-9][0-9]*, adds [0-9]+, wrong-cpu 0$" "$1" ||
		{ cat "$1"; fail "run 1 vCPU 1 counts"; }
	expect_not_in "$1" "FAILED"
}

case "$1" in
smp-save-restore)
	# Saved with both vCPUs in the middle of the ring, restored: vCPU 1's
	# registers, its timer, its upcall callback and the channel bound to
	# it come back, and the ring goes on.
	dir=$TMP/saved
	save_when "$out" "$err" "$dir" "$STARTED" \
		--kernel "$GUESTS/smp.elf" --vcpus 2 --cmdline "rounds=$ROUNDS"
	expect_status 0
	expect_in "$err" "saved VM"
	expect_not_in "$out" "smp ok"
	"$KAPSEL" inspect "$dir" >"$TMP/inspect" 2>&1 || { cat "$TMP/inspect"; fail "inspect"; }
	expect_in "$TMP/inspect" "vcpu 1: up"
	expect_in "$TMP/inspect" "vcpu 1 pv_cpu: trap handlers for"
	STATUS=0
	timeout --kill-after=5 100 "$KAPSEL" restore --no-console-input --no-control --stats \
		--kernel "$GUESTS/smp.elf" "$dir" >"$TMP/out2" 2>"$TMP/err2" </dev/null || STATUS=$?
	LAST_ERR=$TMP/err2
	expect_status 0
	expect_consistent "$TMP/out2"
	expect_in "$TMP/err2" "vcpu1_exits_total:"
	;;
smp-clone)
	# A clone of a VM saved with both vCPUs mid-ring runs both vCPUs on
	# from the save and finishes consistent, on its own console log.  One
	# clone: under nested KVM (QEMU TCG's SVM) two 2-vCPU VMs running at
	# once for tens of seconds lose one to a triple fault whether they were
	# cloned, restored or freshly booted (two fresh VMs, 20000 rounds: 5 of
	# 6 died); the crash report's run history shows ordinary entries, and
	# the emulated host's own kernel panicked with a corrupted stack in
	# the same runs.  README.md (nested) and issue 13's note have more.
	dir=$TMP/saved
	save_when "$out" "$err" "$dir" "$STARTED" \
		--kernel "$GUESTS/smp.elf" --vcpus 2 --cmdline "rounds=$ROUNDS wait_s=120"
	expect_status 0
	expect_not_in "$out" "smp ok"
	mkdir "$TMP/consoles"
	STATUS=0
	timeout --kill-after=5 150 "$KAPSEL" clone --kernel "$GUESTS/smp.elf" --count 1 \
		--prefix smp$$ --console-dir "$TMP/consoles" "$dir" \
		>"$TMP/clone.out" 2>"$TMP/clone.err" </dev/null || STATUS=$?
	if [ "$STATUS" -ne 0 ]; then
		tail -n 20 "$TMP/clone.err" "$TMP"/consoles/*.log
		fail "clone exited $STATUS"
	fi
	expect_consistent "$TMP/consoles/smp$$-1.log"
	;;
smp-migrate)
	# Live migration with both vCPUs running: dirty logging sees the pages
	# either vCPU writes, and the destination runs both.
	live_migrate "$out" "$err" "$TMP/dst.out" "$TMP/dst.err" "$STARTED" 100 \
		-- --kernel "$GUESTS/smp.elf" --vcpus 2 --cmdline "rounds=$ROUNDS" \
		-- --kernel "$GUESTS/smp.elf" --vcpus 2
	expect_not_in "$out" "smp ok"
	expect_consistent "$TMP/dst.out"
	;;
smp-pause-resume)
	# The control plane on a running SMP guest: pause parks both vCPUs
	# (the guest's clock-driven ring stalls, nothing is lost), info lists
	# each vCPU, dumpxml says two, resume lets the ring finish.
	name=smp-$$
	timeout --kill-after=5 100 "$KAPSEL" run --no-console-input --name "$name" --stats \
		--kernel "$GUESTS/smp.elf" --vcpus 2 --cmdline "rounds=$ROUNDS" \
		>"$out" 2>"$err" </dev/null &
	pid=$!
	for _ in $(seq 600); do
		grep -Eq "$STARTED" "$out" && break
		sleep 0.1
	done
	grep -Eq "$STARTED" "$out" || { cat "$out" "$err"; fail "never started vCPU 1"; }
	"$KAPSEL" pause "$name" || fail "pause"
	"$KAPSEL" info "$name" >"$TMP/info" || fail "info"
	expect_in "$TMP/info" "state paused"
	expect_in "$TMP/info" "vcpus 2"
	grep -Eq '^vcpu 1 power up blocked (yes|no) exits [1-9][0-9]* ' "$TMP/info" ||
		{ cat "$TMP/info"; fail "no vcpu 1 line"; }
	lines=$(wc -l <"$out")
	sleep 1
	[ "$(wc -l <"$out")" = "$lines" ] || { cat "$out"; fail "the guest printed while paused"; }
	"$KAPSEL" dumpxml "$name" >"$TMP/xml" || fail "dumpxml"
	expect_in "$TMP/xml" "<vcpu placement='static'>2</vcpu>"
	"$KAPSEL" resume "$name" || fail "resume"
	STATUS=0
	wait $pid || STATUS=$?
	LAST_ERR=$err
	expect_status 0
	expect_consistent "$out"
	expect_in "$err" "vcpus: 2"
	expect_in "$err" "vcpu1_power: down"
	;;
smp-reboot)
	# A guest that reboots on a 2-vCPU VM: the second vCPU's thread waits
	# through every boot (it is never brought up), and the VM ends cleanly.
	run_guest "$out" "$err" --kernel "$GUESTS/reboot.elf" --vcpus 2 --stats
	expect_status 0
	expect_in "$out" "boot with generation 1, 0 dirty heap bytes"
	expect_in "$out" "reboot ok"
	expect_in "$err" "vcpu1_power: down"
	expect_in "$err" "vcpu1_exits_total: 0"
	;;
*)
	fail "unknown case $1"
	;;
esac
