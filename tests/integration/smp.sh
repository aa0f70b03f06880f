#!/bin/bash
# Integration tests: SMP guests (several vCPUs, inter-processor events, vCPU up/down, hostile starts) with smp.elf.
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
out=$TMP/out err=$TMP/err

# expect_runs N: smp.elf's two runs on N vCPUs were consistent, line by
# line: each vCPU sent and received the ring's rounds (200, then 207),
# its timer fired in its own upcall, no handler ran on a vCPU its channel
# is not bound to, and each total is the one the guest expected.
expect_runs() {
	local n=$1 k run rounds
	expect_status 0
	expect_in "$out" "smp: $n vCPUs (SMP offered), this is vCPU 0"
	for run in 1 2; do
		rounds=200
		[ "$run" = 2 ] && rounds=207
		for ((k = 0; k < n; k++)); do
			grep -Eq "^smp: run $run vCPU $k: ipi sent $rounds received $rounds, timer [1-9][0-9]*, adds [0-9]+, wrong-cpu 0$" "$out" ||
				{ cat "$out"; fail "run $run vCPU $k: counts"; }
			if [ "$k" -gt 0 ]; then
				expect_in "$out" "smp: vCPU $k started for run $run"
			fi
		done
		grep -Eq "^smp: run $run totals: atomic ([0-9]+) \(want \1\), locked ([0-9]+) \(want \2\), $rounds rounds" "$out" ||
			{ cat "$out"; fail "run $run totals"; }
	done
	expect_in "$out" "smp ok: $n vCPUs, 200 + 207 rounds, 2 runs"
	expect_not_in "$out" "FAILED"
	expect_not_in "$out" "guest panic"
}

case "$1" in
smp-one)
	# One vCPU: the ring is vCPU 0 sending to itself; the API still works.
	run_guest "$out" "$err" --kernel "$GUESTS/smp.elf" --vcpus 1
	expect_runs 1
	expect_in "$out" "smp: one vCPU: run 2 on vCPU 0 alone"
	;;
smp-two)
	run_guest "$out" "$err" --kernel "$GUESTS/smp.elf" --vcpus 2 --stats
	expect_runs 2
	expect_in "$out" "smp: all 1 other vCPUs down; starting them again for run 2"
	;;
smp-four)
	# More vCPUs than this host has cores: correctness does not depend
	# on every vCPU running at once.
	run_guest "$out" "$err" --kernel "$GUESTS/smp.elf" --vcpus 4 --stats
	expect_runs 4
	expect_in "$out" "smp: all 3 other vCPUs down; starting them again for run 2"
	;;
smp-hostile)
	# Every bad VCPU_UP/VCPU_DOWN/BIND_VCPU gets its documented error, a
	# second start is refused, and 100000 IPIs at a vCPU that keeps its
	# upcalls masked merge into one pending channel: vCPU 0 still gets a
	# later event and the VM ends normally.
	# 100000 sends are 100000 exits: under nested KVM that takes half a
	# minute, so this run gets more than run_guest's 60 s.
	STATUS=0
	LAST_ERR=$err
	timeout --kill-after=5 240 "$KAPSEL" run --no-console-input --kernel "$GUESTS/smp.elf" \
		--vcpus 2 --cmdline "hostile storm=100000" --stats >"$out" 2>"$err" </dev/null || STATUS=$?
	expect_status 0
	for line in \
		"VCPU_UP entry in the GDT page 0x1000 -> -14" \
		"VCPU_UP entry in the CPL0 stubs 0x6000 -> -14" \
		"VCPU_UP entry in hypervisor page tables 0x10000 -> -14" \
		"VCPU_UP entry past the end of RAM -> -14" \
		"VCPU_UP entry at 2^63 -> -14" \
		"VCPU_UP stack past the end of RAM -> -14" \
		"VCPU_UP stack in hypervisor page tables -> -14" \
		"VCPU_UP stack top 0 -> -14" \
		"VCPU_UP misaligned stack -> -22" \
		"VCPU_UP vCPU id = vcpu_count -> -22" \
		"VCPU_UP vCPU id 2^32-1 -> -22" \
		"VCPU_UP vCPU id 2^32+1 -> -22" \
		"VCPU_UP of vCPU 0 (running) -> -16" \
		"VCPU_STATUS vCPU id = vcpu_count -> -22" \
		"VCPU_STATUS of vCPU 1 before any start -> 0" \
		"VCPU_DOWN on vCPU 0 -> -22" \
		"EVTCHN_BIND_VCPU to vCPU vcpu_count -> -22" \
		"EVTCHN_BIND_VCPU of port 256 -> -22" \
		"VCPU_STATUS of vCPU 1 after the refusals -> 0" \
		"kg_cpu_start of vCPU 1 -> 0" \
		"VCPU_UP of vCPU 1 again -> -16" \
		"kg_cpu_start of vCPU 1 again -> -16" \
		"VCPU_STATUS of vCPU 1 once started -> 1" \
		"VCPU_STATUS of vCPU 1 after it returned -> 0"; do
		expect_in "$out" "hostile: $line"
	done
	grep -Eq "^hostile: storm over: 100000 sends \(0 refused\), channel pending 1, 0 upcalls while masked, [1-9][0-9]* after unmasking$" "$out" ||
		{ cat "$out"; fail "storm line"; }
	expect_in "$out" "smp hostile ok: every bad call refused, storm contained, pong after it"
	expect_not_in "$out" "FAILED"
	# The storm's sends were served as hypercall exits, not dropped
	# (the storm, the ping and the pong).
	expect_in "$err" "hypercall_evtchn_send: 100002"
	;;
*)
	fail "unknown case $1"
	;;
esac
exit 0
