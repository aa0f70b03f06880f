#!/bin/bash
# Integration tests: the multi-queue PV block device (one ring per vCPU) with blkmq.elf: a pattern from 2 vCPUs over 2 queues, per-queue counters, refused queue setups and a broken ring beside a working one.
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
out=$TMP/out err=$TMP/err img=$TMP/disk.img
BLKMQ=$GUESTS/blkmq.elf

# queue_field N FIELD: FIELD (requests or notifications) of queue N in
# the --stats block of the last run.
queue_field() {
	awk -v q="$1:" -v f="$2" '$1 == "queue" && $2 == q { print (f == "requests" ? $5 : $7); exit }' "$err"
}

case "$1" in
block-mq-two-vcpus) # suite: kvm
	truncate -s 8M "$img"
	run_guest "$out" "$err" --kernel "$BLKMQ" --vcpus 2 --disk "$img" --stats \
		--cmdline "run seed=5 sectors=1024 qd=32"
	expect_status 0
	expect_in "$out" "blkmq: 2 vCPUs, 2 queues, 1024 sectors each, qd 32"
	# Each vCPU on its own queue, every completion reaped where it was
	# submitted, nothing differs (1024 sectors / 8 per request, twice).
	expect_in "$out" "blkmq: vCPU 0 queue 0: 256 requests, 0 reaped elsewhere, 0 sectors differ, error 0"
	expect_in "$out" "blkmq: vCPU 1 queue 1: 256 requests, 0 reaped elsewhere, 0 sectors differ, error 0"
	expect_in "$out" "blkmq ok: 2 vCPUs, 2 queues, 2048 sectors written and verified"
	# The host agrees: both rings served, each signalled on its own channel.
	expect_in "$err" "queue 0: 256 slots"
	expect_in "$err" "queue 1: 256 slots"
	q0=$(queue_field 0 requests) q1=$(queue_field 1 requests)
	n0=$(queue_field 0 notifications) n1=$(queue_field 1 notifications)
	# Queue 0 also carried GET_INFO and vCPU 0's re-read of both ranges.
	[ "${q1:-0}" -eq 256 ] || fail "queue 1 answered '${q1}' requests, vCPU 1 made 256"
	[ "${q0:-0}" -ge 257 ] || fail "queue 0 answered '${q0}' requests, vCPU 0 made more than 256"
	[ "${n0:-0}" -gt 0 ] && [ "${n1:-0}" -gt 0 ] || fail "notifications per queue: $n0 and $n1"
	# The host wrote what the guest did: vCPU k's range is k*1024..
	check_image "$img" 5 0 2048 || fail "the image does not hold the pattern"
	;;
block-mq-one-queue) # suite: kvm
	# queues=1 on 2 vCPUs: both share ring 0 (the guest serializes nothing
	# itself, so blkmq runs on vCPU 0 only: --vcpus 1 with queues=1).
	truncate -s 4M "$img"
	run_guest "$out" "$err" --kernel "$BLKMQ" --vcpus 1 --disk "$img,queues=1" --stats \
		--cmdline "run seed=3 sectors=512 qd=8"
	expect_status 0
	expect_in "$out" "blkmq: 1 vCPUs, 1 queues, 512 sectors each, qd 8"
	expect_in "$out" "blkmq ok: 1 vCPUs, 1 queues, 512 sectors written and verified"
	expect_in "$err" "ring: 256 slots"
	expect_not_in "$err" "queue 1:"
	;;
block-mq-hostile) # suite: kvm
	truncate -s 4M "$img"
	run_guest "$out" "$err" --kernel "$BLKMQ" --vcpus 1 --disk "$img,queues=2" --stats \
		--cmdline "hostile"
	expect_status 0
	expect_in "$out" "blkmq hostile ok: bad queue setups refused, queue 0 served beside a broken queue 1"
	expect_not_in "$out" "FAILED"
	expect_in "$err" "queue 1: the guest published an impossible request index"
	expect_in "$err" "queue 1: 2 slots, 0 requests, 0 notifications (stopped: broken by the guest)"
	q0=$(queue_field 0 requests)
	[ "${q0:-0}" -ge 3 ] || fail "queue 0 answered '${q0}' requests after queue 1 broke"
	check_image "$img" 99 500 32 || fail "queue 0's write is not in the image"
	;;
block-mq-save-restore) # suite: kvm
	# Saved while both vCPUs write on their own rings: one state record
	# per ring, and the restored VM finishes and verifies the pattern.
	# 32 MiB per vCPU keeps it writing well past the save signal (2048
	# sectors each finished before the signal under nested KVM).
	truncate -s 64M "$img"
	save_when "$out" "$err" "$TMP/save" "blkmq: 2 vCPUs" --kernel "$BLKMQ" --vcpus 2 \
		--disk "$img" --cmdline "run seed=4 sectors=65536 qd=4"
	expect_status 0
	expect_not_in "$out" "blkmq ok"
	"$KAPSEL" inspect "$TMP/save" >"$TMP/inspect" 2>&1 || { cat "$TMP/inspect"; fail "inspect"; }
	expect_in "$TMP/inspect" "queue 0, ring gpa"
	expect_in "$TMP/inspect" "queue 1, ring gpa"
	STATUS=0
	timeout --kill-after=5 200 "$KAPSEL" restore --no-console-input --no-control --stats \
		--kernel "$BLKMQ" --disk "0=$img" "$TMP/save" >"$TMP/out2" 2>"$TMP/err2" </dev/null || STATUS=$?
	LAST_ERR=$TMP/err2
	expect_status 0
	expect_in "$TMP/out2" "blkmq ok: 2 vCPUs, 2 queues, 131072 sectors written and verified"
	# The guest compared every sector; here the start of each vCPU's range
	# and the end of the last (checking all 64 MiB in Python is slow).
	for first in 0 65536 129024; do
		check_image "$img" 4 $first 2048 || fail "sectors $first.. do not hold the pattern"
	done
	;;
*)
	fail "unknown case '$1'"
	;;
esac
