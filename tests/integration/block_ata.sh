#!/bin/bash
# Integration tests: the emulated ATA disk and the guest's ATA PIO driver (atatest guest) end to end.
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
out=$TMP/out err=$TMP/err img=$TMP/disk.img
GUEST=$GUESTS/atatest.elf

# stat_value FILE DEVICE_NAME KEY: the value of "  KEY: value" in the
# --stats block of the first device called DEVICE_NAME.
stat_value() {
	awk -v dev="$2" -v key="$3:" '
		/^device [0-9]+ / { in_dev = ($3 == dev ":") }
		in_dev && $1 == key { print $2; exit }' "$1"
}

case "$1" in
ata-write-verify)
	truncate -s 8M "$img"
	run_guest "$out" "$err" --kernel "$GUEST" --disk "$img,bus=ata" --cmdline "write 7 100 400"
	expect_status 0
	expect_in "$out" "atatest: wrote 400 sectors at 100"
	expect_in "$out" "ata: disk at 0x1f0/0x3f6: 16384 sectors, lba48, multiple 128, 32-bit PIO"
	pattern check "$img" 7 100 400 || fail "the host image does not hold what the guest wrote"
	expect_zero_sector "$img" 99
	expect_zero_sector "$img" 500
	# A second VM reads it back, and reads what the host wrote.
	pattern write "$img" 9 5000 700
	run_guest "$out" "$err" --kernel "$GUEST" --disk "$img,bus=ata" --cmdline "verify 7 100 400"
	expect_status 0
	expect_in "$out" "atatest: verified 400 sectors at 100"
	run_guest "$out" "$err" --kernel "$GUEST" --disk "$img,bus=ata" --cmdline "verify 9 5000 700"
	expect_status 0
	expect_in "$out" "atatest: verified 700 sectors at 5000"
	# A wrong seed is noticed (the check can fail).
	run_guest "$out" "$err" --kernel "$GUEST" --disk "$img,bus=ata" --cmdline "verify 8 100 10"
	expect_status 1
	expect_in "$out" "sector 100 does not hold the pattern"
	;;
ata-lba48)
	# Sparse image past the LBA28 limit (2^28 sectors): writes across it
	# switch from LBA28 to LBA48 commands.
	truncate -s $(((268435456 + 4096) * 512)) "$img" || { echo "SKIP: no sparse files here"; exit 77; }
	run_guest "$out" "$err" --kernel "$GUEST" --disk "$img,bus=ata" --cmdline "write 11 268435300 300"
	expect_status 0
	expect_in "$out" "268439552 sectors, lba48"
	pattern check "$img" 11 268435300 300 || fail "LBA48 data landed in the wrong place"
	expect_zero_sector "$img" 268435299
	expect_zero_sector "$img" 268435600
	# Cut to 28 bits, the sectors past 2^28 would have landed at 0-143.
	expect_zero_sector "$img" 0
	expect_zero_sector "$img" 100
	;;
ata-readonly)
	truncate -s 1M "$img"
	pattern write "$img" 3 0 16
	before=$(sha256sum <"$img")
	run_guest "$out" "$err" --kernel "$GUEST" --disk "$img,bus=ata,readonly" --stats --cmdline "readonly"
	expect_status 0
	expect_in "$out" "atatest: write to read-only disk -> -30"
	expect_in "$out" "atatest: readonly ok"
	[ "$(sha256sum <"$img")" = "$before" ] || fail "the read-only image changed"
	[ "$(stat_value "$err" ata-disk denied_readonly)" = 1 ] || fail "denied_readonly is not 1"
	;;
ata-errors)
	truncate -s 1M "$img"
	run_guest "$out" "$err" --kernel "$GUEST" --disk "$img,bus=ata" --stats --cmdline "errors"
	expect_status 0
	expect_in "$out" "atatest: read across the end -> -34"
	expect_in "$out" "atatest: device read at capacity -> status 0x51 error 0x10"
	expect_in "$out" "atatest: drive 1 status 0x0"
	expect_in "$out" "atatest: errors ok"
	[ "$(stat_value "$err" ata-disk denied_bounds)" = 1 ] || fail "denied_bounds is not 1"
	;;
ata-stats)
	# 256 one-sector reads and one 256-sector read: the device's exits and
	# exits per sector are in --stats.
	truncate -s 1M "$img"
	run_guest "$out" "$err" --kernel "$GUEST" --disk "$img,bus=ata" --stats --cmdline "bench 256"
	expect_status 0
	expect_in "$out" "atatest: read 512 sectors"
	expect_in "$out" "atatest: 256 one-sector"
	expect_in "$err" "ata-disk:"
	[ "$(stat_value "$err" ata-disk ata_sectors_read)" = 512 ] || fail "ata_sectors_read is not 512"
	[ "$(stat_value "$err" ata-disk ops_read)" = 257 ] || fail "ops_read is not 257"
	exits=$(stat_value "$err" ata-disk exits)
	per_sector=$(stat_value "$err" ata-disk exits_per_sector)
	[ -n "$per_sector" ] || fail "no exits_per_sector in --stats"
	# Every one-sector read needs its own rep insw exit at least.
	[ "$exits" -ge 256 ] || fail "only $exits device exits for 512 sectors"
	echo "ATA exits: $exits for 512 sectors ($per_sector per sector)"
	;;
ata-none)
	# No ATA disk offered: the driver says so without touching the ports.
	run_guest "$out" "$err" --kernel "$GUEST" --cmdline "none"
	expect_status 0
	expect_in "$out" "atatest: no ATA disk: open -> -19"
	# A second ATA disk is refused by the hypervisor with a clear message.
	truncate -s 1M "$img" "$TMP/second.img"
	run_guest "$out" "$err" --kernel "$GUEST" --disk "$img,bus=ata" --disk "$TMP/second.img,bus=ata"
	expect_status 125
	expect_in "$err" "only one ATA disk is supported"
	expect_in "$err" "bus=pv"
	;;
*)
	fail "unknown case '$1'"
	;;
esac
echo "PASS: $1"
