#!/bin/bash
# Integration tests: the example guests on QEMU (TCG, no KVM) through the runtime's PVH shim, on QEMU's own 16550, IDE and NE2000 models.
. "$(dirname "$0")/lib.sh"
make_temp_dir
out=$TMP/out err=$TMP/err img=$TMP/disk.img
QEMU=${QEMU:-qemu-system-x86_64}

# Skip (77) without QEMU; scripts/install-deps.sh installs it, and
# scripts/test.sh fails a run that skipped these where it is installed.
require_qemu() {
	if ! command -v "$QEMU" >/dev/null; then
		echo "SKIP: $QEMU is not installed (scripts/install-deps.sh installs qemu-system-x86)"
		exit $SKIP
	fi
}

# run_qemu OUTFILE ERRFILE MACHINE GUEST CMDLINE [QEMU ARGS...]: boots
# GUEST with -kernel under TCG, its COM1 into OUTFILE (QEMU_SERIAL: another
# -serial target), stdin closed unless QEMU_INPUT names a file; sets STATUS, QEMU's exit status: (code << 1) | 1
# for a guest that exited with code (isa-debug-exit); a crash (exception,
# panic, failed assert) is code 126, as kapsel's own exit status.
run_qemu() {
	local out=$1 err=$2 machine=$3 guest=$4 cmdline=$5
	shift 5
	STATUS=0
	LAST_ERR=$err
	timeout --kill-after=5 60 "$QEMU" -M "$machine" -accel tcg -m 128 -nodefaults \
		-no-user-config -display none -no-reboot -serial "${QEMU_SERIAL:-stdio}" \
		-device isa-debug-exit,iobase=0xf4,iosize=0x04 \
		-kernel "$guest" -append "$cmdline" "$@" \
		<"${QEMU_INPUT:-/dev/null}" >"$out" 2>"$err" || STATUS=$?
}

# expect_guest_exit CODE: the guest's exit code, as isa-debug-exit encodes it.
expect_guest_exit() {
	expect_status $((($1 << 1) | 1))
}

case "$1" in
qemu-hello-microvm | qemu-hello-pc) # suite: qemu
	require_qemu
	machine=${1#qemu-hello-}
	run_qemu "$out" "$err" "$machine" "$GUESTS/hello.elf" ""
	expect_guest_exit 0
	expect_in "$out" "Hello from a Kapsel guest!"
	# The platform code found no Kapsel CPUID leaf.
	expect_in "$out" "not running on Kapsel"
	expect_not_in "$out" "pvh:"
	;;
qemu-exitcode) # suite: qemu
	require_qemu
	# The command line reaches main(), and main's return value QEMU's status.
	run_qemu "$out" "$err" microvm "$GUESTS/exitcode.elf" "42"
	expect_guest_exit 42
	expect_in "$out" "exiting with code 42"
	run_qemu "$out" "$err" pc "$GUESTS/exitcode.elf" "7"
	expect_guest_exit 7
	;;
qemu-echo) # suite: qemu
	require_qemu
	# Console input through QEMU's 16550: lines come back, "quit" ends it.
	# Typed only once the guest is ready (kg_uart_init clears the FIFOs).
	mkfifo "$TMP/input"
	(
		QEMU_INPUT=$TMP/input run_qemu "$out" "$err" microvm "$GUESTS/echo.elf" ""
		exit $STATUS
	) &
	guest=$!
	exec 3>"$TMP/input"
	for _ in $(seq 100); do
		grep -q "echo ready" "$out" 2>/dev/null && break
		sleep 0.1
	done
	printf 'hello qemu\nsecond line\nquit\n' >&3
	exec 3>&-
	STATUS=0
	wait $guest || STATUS=$?
	expect_guest_exit 0
	expect_in "$out" "echo ready (console uart)"
	expect_in "$out" "echo: hello qemu"
	expect_in "$out" "echo: second line"
	expect_in "$out" "echo: bye"
	;;
qemu-virtio-console-microvm) # suite: qemu
	require_qemu
	# console=virtio: the runtime's console on a virtconsole, input too;
	# COM1 stays silent.
	mkfifo "$TMP/input"
	(
		QEMU_INPUT=$TMP/input QEMU_SERIAL=file:$TMP/com1 run_qemu "$out" "$err" microvm \
			"$GUESTS/echo.elf" "console=virtio" -device virtio-serial-device \
			-chardev stdio,id=c -device virtconsole,chardev=c
		exit $STATUS
	) &
	guest=$!
	exec 3>"$TMP/input"
	for _ in $(seq 100); do
		grep -q "echo ready" "$out" 2>/dev/null && break
		sleep 0.1
	done
	printf 'over virtio\nquit\n' >&3
	exec 3>&-
	STATUS=0
	wait $guest || STATUS=$?
	expect_guest_exit 0
	expect_in "$out" "echo ready (console virtio)"
	expect_in "$out" "echo: over virtio"
	expect_in "$out" "echo: bye"
	[ ! -s "$TMP/com1" ] || { cat "$TMP/com1"; fail "COM1 was written with console=virtio"; }
	;;
qemu-fault) # suite: qemu
	require_qemu
	# A CPL3 page fault reaches the shim's IDT: reported, and a crash.
	run_qemu "$out" "$err" pc "$GUESTS/fault.elf" "0x10"
	expect_guest_exit 126
	expect_in "$out" "about to read 0x10"
	expect_in "$out" "pvh: guest exception 14, page fault (#PF)"
	expect_in "$out" "(cpl 3), error code 0x4, cr2 0x10,"
	# The shim's tables below 0x60000 are supervisor-only, as on Kapsel.
	run_qemu "$out" "$err" microvm "$GUESTS/fault.elf" "0x1000"
	expect_guest_exit 126
	expect_in "$out" "error code 0x5, cr2 0x1000,"
	;;
qemu-ata-pc) # suite: qemu
	require_qemu
	# atatest's ATA PIO driver on QEMU's IDE model: the host checks what it
	# wrote, and it checks what the host wrote.
	truncate -s 8M "$img"
	ide=(-drive "file=$img,format=raw,if=ide")
	run_qemu "$out" "$err" pc "$GUESTS/atatest.elf" "write 7 100 400" "${ide[@]}"
	expect_guest_exit 0
	expect_in "$out" "ata: disk at 0x1f0/0x3f6: 16384 sectors, lba48"
	expect_in "$out" "atatest: wrote 400 sectors at 100"
	pattern check "$img" 7 100 400 || fail "the image does not hold what the guest wrote on QEMU"
	expect_zero_sector "$img" 99
	expect_zero_sector "$img" 500
	pattern write "$img" 9 5000 700
	run_qemu "$out" "$err" pc "$GUESTS/atatest.elf" "verify 9 5000 700" "${ide[@]}"
	expect_guest_exit 0
	expect_in "$out" "atatest: verified 700 sectors at 5000"
	# A wrong seed is noticed (the check can fail).
	run_qemu "$out" "$err" pc "$GUESTS/atatest.elf" "verify 8 100 10" "${ide[@]}"
	expect_guest_exit 1
	expect_in "$out" "sector 100 does not hold the pattern"
	;;
qemu-blktest-ata) # suite: qemu
	require_qemu
	# The block API (kg_block_*) picks the ATA driver off Kapsel.
	truncate -s 8M "$img"
	ide=(-drive "file=$img,format=raw,if=ide")
	run_qemu "$out" "$err" pc "$GUESTS/blktest.elf" "info" "${ide[@]}"
	expect_guest_exit 0
	expect_in "$out" "blktest info: path ata, 16384 sectors, read-write"
	run_qemu "$out" "$err" pc "$GUESTS/blktest.elf" "write seed=42 start=100 sectors=1000" "${ide[@]}"
	expect_guest_exit 0
	expect_in "$out" "blktest write: 1000 sectors from 100, seed 42, flushed"
	run_qemu "$out" "$err" pc "$GUESTS/blktest.elf" "verify seed=42 start=100 sectors=1000" "${ide[@]}"
	expect_guest_exit 0
	expect_in "$out" "blktest verify: 1000 sectors from 100, seed 42, all match"
	run_qemu "$out" "$err" pc "$GUESTS/blktest.elf" "verify seed=43 start=100 sectors=10" "${ide[@]}"
	expect_guest_exit 126
	expect_in "$out" "blktest verify: sector 100 word 0 differs"
	expect_in "$out" "guest panic: assertion failed at"
	;;
qemu-virtio-blk-microvm) # suite: qemu
	require_qemu
	# The block API picks virtio-blk on microvm's virtio-mmio: QEMU's
	# legacy transport (its default) and the virtio 1 one.
	truncate -s 8M "$img"
	vblk=(-drive "id=d,file=$img,format=raw,if=none" -device virtio-blk-device,drive=d)
	run_qemu "$out" "$err" microvm "$GUESTS/blktest.elf" "write seed=42 start=100 sectors=3000" "${vblk[@]}"
	expect_guest_exit 0
	expect_in "$out" "virtio-blk: disk at 0xfeb"
	expect_in "$out" "(legacy): 16384 sectors"
	# QEMU offers VIRTIO_F_EVENT_IDX and indirect descriptors; the driver
	# takes both on both transports: a request takes one ring entry.
	expect_in "$out" "queue 128, depth 128, event-idx, indirect, flush"
	expect_in "$out" "blktest write: 3000 sectors from 100, seed 42, flushed"
	check_image "$img" 42 100 3000 || fail "the image does not hold what the guest wrote"
	check_image "$img" 0 0 100 0 100 || fail "sectors before the range changed"
	modern=(-global virtio-mmio.force-legacy=false)
	run_qemu "$out" "$err" microvm "$GUESTS/blktest.elf" "verify seed=42 start=100 sectors=3000 path=virtio" \
		"${vblk[@]}" "${modern[@]}"
	expect_guest_exit 0
	expect_in "$out" "(virtio 1): 16384 sectors"
	expect_in "$out" "blktest verify: 3000 sectors from 100, seed 42, all match"
	run_qemu "$out" "$err" microvm "$GUESTS/blktest.elf" "verify seed=43 start=100 sectors=10" "${vblk[@]}"
	expect_guest_exit 126
	expect_in "$out" "blktest verify: sector 100 word 0 differs"
	# Several requests in flight, reads checked against what was written.
	run_qemu "$out" "$err" microvm "$GUESTS/blktest.elf" "random ops=1000 qd=7" "${vblk[@]}" "${modern[@]}"
	expect_guest_exit 0
	expect_in "$out" "blktest random: 1000 ops"
	expect_in "$out" "at qd 7 ok"
	expect_in "$out" "(virtio 1): 16384 sectors, queue 128, depth 128, event-idx, indirect"
	# Every doorbell is counted, rung or suppressed by the device's
	# avail_event; with 7 in flight a kick covers several requests.
	read -r requests kicks suppressed < <(sed -n \
		's/^blktest stats: requests \([0-9]*\) kicks \([0-9]*\) suppressed \([0-9]*\) .*/\1 \2 \3/p' "$out")
	[ "${requests:-0}" -eq 1000 ] && [ "${kicks:-0}" -ge 1 ] &&
		[ "$((kicks + suppressed))" -le "$requests" ] ||
		{ cat "$out"; fail "virtio-blk kick counts: requests ${requests:-?} kicks ${kicks:-?} suppressed ${suppressed:-?}"; }
	# Without indirect descriptors each request owns a group of 18 ring
	# entries (header, 16 segments, status): depth 7 of 128.
	run_qemu "$out" "$err" microvm "$GUESTS/blktest.elf" "random ops=300 qd=7" \
		-drive "id=d,file=$img,format=raw,if=none" -device virtio-blk-device,drive=d,indirect_desc=off
	expect_guest_exit 0
	expect_in "$out" "queue 128, depth 7, event-idx, flush"
	expect_in "$out" "at qd 7 ok"
	# No virtio disk and no IDE: a clean -ENODEV.
	run_qemu "$out" "$err" microvm "$GUESTS/blktest.elf" "info path=virtio"
	expect_guest_exit 2
	expect_in "$out" "blktest: cannot open disk 0 on path virtio: error -19"
	;;
bench-qemu) # suite: qemu
	require_qemu
	# kapsel bench's QEMU paths: the same blkbench.elf, image and operation
	# stream on QEMU's virtio-blk and IDE as natively.  Under TCG (forced,
	# so the figures say what they are) the numbers mean nothing, but the
	# data must: fixed-size runs write the same sectors on every path, so
	# the region's checksum after each path must be the same, and every
	# sector read back must carry its own number.
	# The image's name has a comma: QEMU must take it as one file name
	# (the bench doubles it), not as the option readonly=on.
	img=$TMP/disk,readonly=on.img
	truncate -s 16M "$img"
	"$KAPSEL" bench --quick --no-fio --no-chart --paths native,qemu --qemu-accel tcg \
		--workloads randread-4K,write-128K --iodepths 1,8 --disk "$img" \
		--output-dir "$TMP/bench" --format json >"$out" 2>"$err" || { cat "$err"; fail "bench failed"; }
	expect_in "$err" "QEMU runs under TCG here"
	python3 - "$out" <<-'PY' || fail "bench JSON"
		import json, sys
		doc = json.load(open(sys.argv[1]))
		assert doc["schema"] == 3, doc["schema"]
		assert doc["qemu"]["accel"] == "tcg" and doc["qemu"]["version"].startswith("QEMU"), doc["qemu"]
		assert "-M microvm" in doc["qemu"]["command_qemu_virtio"], doc["qemu"]
		assert "if=ide" in doc["qemu"]["command_qemu_ide"], doc["qemu"]
		rows = doc["rows"]
		assert len(rows) == 4, len(rows)
		for row in rows:
		    for path in ("native", "qemu-virtio", "qemu-ide"):
		        p = row["paths"][path]
		        assert p["status"] == "ok", (row["workload"], path, p["message"])
		        assert p["verify"]["errors"] == 0, (row["workload"], path, p["verify"])
		    assert row["ratios"]["pv_qemu_virtio"] is None, row["ratios"]
		    if row["workload"] == "write-128K":
		        assert row["checksums"]["all_paths_match"] is True, row["checksums"]
		    else:
		        assert row["paths"]["qemu-virtio"]["verify"]["sectors"] > 0, row
		# At depth 8 the virtio path keeps 8 requests in flight (one ring
		# entry each, indirect descriptors); IDE has no queue.
		deep = [r for r in rows if r["iodepth"] == 8 and r["workload"] == "randread-4K"][0]
		assert deep["paths"]["qemu-virtio"]["queue_depth_used"] == 8, deep["paths"]["qemu-virtio"]
		assert deep["paths"]["qemu-ide"]["queue_depth_used"] == 1, deep["paths"]["qemu-ide"]
	PY
	# A QEMU that is not there: a clear error before anything runs.
	"$KAPSEL" bench --quick --paths qemu-virtio --qemu /nonexistent/qemu --disk "$img" \
		--output-dir "$TMP/bench" >"$out" 2>"$err" && fail "bench ran without QEMU"
	expect_in "$err" "--paths asks for QEMU: --qemu '/nonexistent/qemu' is not an executable file"
	;;
qemu-no-disk) # suite: qemu
	require_qemu
	# microvm has no IDE: the block API says so instead of hanging.
	run_qemu "$out" "$err" microvm "$GUESTS/atatest.elf" "none"
	expect_guest_exit 0
	expect_in "$out" "atatest: no ATA disk: open -> -19"
	;;
qemu-netpingpong-pc | qemu-netpingpong-microvm) # suite: qemu
	require_qemu
	# Two QEMUs joined by a socket netdev: ISA NE2000s on pc; virtio-net
	# on microvm, the ping on QEMU's legacy transport, the pong on virtio 1.
	port=$((20000 + RANDOM % 20000))
	if [ "$1" = qemu-netpingpong-pc ]; then
		machine=pc model=ne2000
		ping_nic=(-device ne2k_isa,netdev=n,iobase=0x300,irq=9,mac=52:54:00:12:00:01)
		pong_nic=(-device ne2k_isa,netdev=n,iobase=0x300,irq=9,mac=52:54:00:12:00:02)
	else
		machine=microvm model=virtio
		ping_nic=(-device virtio-net-device,netdev=n,mac=52:54:00:12:00:01)
		pong_nic=(-device virtio-net-device,netdev=n,mac=52:54:00:12:00:02
			-global virtio-mmio.force-legacy=false)
	fi
	(
		run_qemu "$TMP/pong.out" "$TMP/pong.err" $machine "$GUESTS/netpingpong.elf" \
			"role=pong path=$model" -netdev "socket,id=n,listen=127.0.0.1:$port" "${pong_nic[@]}"
		exit $STATUS
	) &
	pong=$!
	for _ in $(seq 50); do
		grep -q "netpingpong: pong" "$TMP/pong.out" 2>/dev/null && break
		sleep 0.1
	done
	run_qemu "$TMP/ping.out" "$TMP/ping.err" $machine "$GUESTS/netpingpong.elf" \
		"role=ping count=20 size=1400 path=$model" \
		-netdev "socket,id=n,connect=127.0.0.1:$port" "${ping_nic[@]}"
	ping_status=$STATUS
	STATUS=0
	wait $pong || STATUS=$?
	LAST_ERR=$TMP/pong.err
	expect_guest_exit 0
	STATUS=$ping_status LAST_ERR=$TMP/ping.err
	expect_guest_exit 0
	expect_in "$TMP/ping.out" "netpingpong: ping path=$model mac=52:54:00:12:00:01"
	expect_in "$TMP/ping.out" "netpingpong: ping path=$model frames=20 frame_bytes=1400"
	expect_in "$TMP/pong.out" "netpingpong: pong path=$model echoed=20 corrupt=0"
	;;
qemu-kapsel-same-image)
	# One image, two hypervisors: what blktest writes through Kapsel's PV
	# ring reads back on QEMU through IDE and virtio-blk, and the other way.
	require_kvm
	require_qemu
	truncate -s 8M "$img"
	ide=(-drive "file=$img,format=raw,if=ide")
	run_guest "$out" "$err" --kernel "$GUESTS/blktest.elf" --disk "$img" \
		--cmdline "write seed=5 start=10 sectors=600 path=pv"
	expect_status 0
	expect_in "$out" "blktest write: 600 sectors from 10, seed 5, flushed"
	run_qemu "$out" "$err" pc "$GUESTS/blktest.elf" "verify seed=5 start=10 sectors=600" "${ide[@]}"
	expect_guest_exit 0
	expect_in "$out" "blktest verify: 600 sectors from 10, seed 5, all match"
	run_qemu "$out" "$err" microvm "$GUESTS/blktest.elf" "verify seed=5 start=10 sectors=600 path=virtio" \
		-drive "id=d,file=$img,format=raw,if=none" -device virtio-blk-device,drive=d
	expect_guest_exit 0
	expect_in "$out" "blktest verify: 600 sectors from 10, seed 5, all match"
	run_qemu "$out" "$err" pc "$GUESTS/blktest.elf" "write seed=6 start=2000 sectors=300" "${ide[@]}"
	expect_guest_exit 0
	run_guest "$out" "$err" --kernel "$GUESTS/blktest.elf" --disk "$img" \
		--cmdline "verify seed=6 start=2000 sectors=300 path=pv"
	expect_status 0
	expect_in "$out" "blktest verify: 300 sectors from 2000, seed 6, all match"
	;;
*)
	echo "unknown case '$1'" >&2
	exit 2
	;;
esac
