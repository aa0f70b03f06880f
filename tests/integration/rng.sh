#!/bin/bash
# Integration tests: the PV entropy device end to end (rng guest: randomness, rate limit, hostile requests, save/restore, XML).
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
out=$TMP/out err=$TMP/err
RNG=$GUESTS/rng.elf

case "$1" in
rng-check)
	run_guest "$out" "$err" --kernel "$RNG" --rng --stats --cmdline "check bytes=65536"
	expect_status 0
	expect_in "$out" "rng check ok: 65536 bytes"
	# The host counted what the guest got (--stats goes to stderr).
	expect_in "$err" "rng-pv"
	expect_in "$err" "  bytes: 65536"
	expect_in "$err" "  errors: 0"
	# Without --rng the guest finds no device and says how to get one.
	run_guest "$out" "$err" --kernel "$RNG" --cmdline "check"
	expect_status 126
	expect_in "$out" "no PV entropy device"
	;;
rng-rate-limit)
	# 48 KiB at 16 KiB/s with a 16 KiB bucket: at least 2 s of guest TSC.
	run_guest "$out" "$err" --kernel "$RNG" --rng=bps=16384,bps_burst=16384 --stats \
		--cmdline "rate bytes=49152 bps=16384 burst=16384"
	expect_status 0
	expect_in "$out" "rng rate ok"
	grep -q "^  throttled: [1-9]" "$err" || { cat "$err"; fail "the host counted no throttled request"; }
	# The requests limit alone throttles too (4 KiB... 16 KiB requests).
	run_guest "$out" "$err" --kernel "$RNG" --rng iops=2,iops_burst=1 --stats --cmdline "check bytes=65536"
	expect_status 0
	expect_in "$out" "rng check ok"
	grep -q "^  throttled: [1-9]" "$err" || { cat "$err"; fail "iops=2 throttled nothing"; }
	;;
rng-hostile)
	run_guest "$out" "$err" --kernel "$RNG" --rng --stats --cmdline "hostile"
	expect_status 0
	expect_in "$out" "rng hostile: buffer on the hypervisor's GDT -> -14"
	expect_in "$out" "rng hostile: length 4 GiB -> -22"
	expect_in "$out" "rng hostile: a broken ring went silent"
	expect_in "$out" "rng hostile ok"
	expect_in "$err" "rng: the guest broke its ring"
	grep -q "^  errors: 1[0-9]" "$err" || { cat "$err"; fail "the host did not count the refused requests"; }
	;;
rng-save-restore)
	# Save and stop in the middle of a reading loop, restore: the guest
	# goes on reading from the restored ring, in a new generation.
	OUT1=$TMP/out1 ERR1=$TMP/err1 OUT2=$TMP/out2 ERR2=$TMP/err2
	: >"$OUT1"
	timeout --kill-after=5 60 "$KAPSEL" run --no-console-input --no-control --rng=bps=1000000 \
		--kernel "$RNG" --cmdline "loop count=400" --save-on-signal "$TMP/save" --save-stop \
		>"$OUT1" 2>"$ERR1" </dev/null &
	pid=$!
	for i in $(seq 300); do
		grep -q "^rng loop 16 " "$OUT1" && break
		sleep 0.1
	done
	grep -q "^rng loop 16 " "$OUT1" || fail "the guest never reached 16 reads"
	kill -HUP "$pid"
	STATUS=0
	wait "$pid" || STATUS=$?
	[ "$STATUS" -eq 0 ] || { cat "$OUT1" "$ERR1"; fail "the saving run exited $STATUS"; }
	expect_in "$ERR1" "saved VM"
	expect_not_in "$OUT1" "rng loop ok"
	STATUS=0
	timeout --kill-after=5 60 "$KAPSEL" restore --no-console-input --no-control --stats --kernel "$RNG" "$TMP/save" \
		>"$OUT2" 2>"$ERR2" </dev/null || STATUS=$?
	[ "$STATUS" -eq 0 ] || { cat "$OUT2" "$ERR2"; fail "the restored run exited $STATUS"; }
	expect_in "$OUT2" "rng loop ok 400"
	grep -q "^rng loop 400 gen [1-9]" "$OUT2" || { cat "$OUT2"; fail "the restored guest did not run in a new generation"; }
	# The limit came back with the definition.
	expect_in "$ERR2" "limit_bytes_per_second: 1000000"
	;;
rng-xml)
	# libvirt's <rng> maps to the device: rate bytes per period -> bps.
	cat >"$TMP/rng.xml" <<XML
<domain type='kvm'>
  <name>rngxml</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64'>hvm</type><kernel>$RNG</kernel><cmdline>check bytes=16384</cmdline></os>
  <devices>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
      <rate bytes='2048' period='500'/>
    </rng>
  </devices>
</domain>
XML
	run_guest "$out" "$err" --stats "$TMP/rng.xml"
	expect_status 0
	expect_in "$out" "rng check ok"
	expect_in "$err" "limit_bytes_per_second: 4096"
	# A backend path other than the kernel's generator is refused (Kapsel
	# never opens it).
	sed 's|/dev/urandom|/etc/passwd|' "$TMP/rng.xml" >"$TMP/bad.xml"
	run_guest "$out" "$err" "$TMP/bad.xml"
	[ "$STATUS" -ne 0 ] || fail "a <backend> of /etc/passwd was accepted"
	expect_in "$err" "/domain/devices/rng/backend '/etc/passwd' is not supported"
	;;
*)
	fail "unknown case '$1'"
	;;
esac
