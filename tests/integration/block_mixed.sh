#!/bin/bash
# Integration tests: PV and ATA disks together, seeded random I/O checked byte for byte against a host-side model, bad requests mid-run, the rate-limit benchmark.
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
out=$TMP/out err=$TMP/err
MODEL=$GUESTS/blkmodel.elf
SCRIPTS=$(cd "$(dirname "$0")/../../scripts" && pwd)

# check_model IMAGE SEED:OPS:MAX_SECTORS...: the image must be, byte for
# byte, a zero disk after the given sequences of blkmodel ran on it one
# after the other.  This is a second, independent implementation of the
# sequence documented at the top of guest-pv/examples/blkmodel.c:
# splitmix64 draws r, c, f per op; count = 1 + c % max_sectors, first =
# f % (capacity - count + 1); r % 100 < 40 read, < 80 write, < 92
# write_zeroes, else flush; write op i stores pattern(seed ^ (i+1) * G).
check_model() {
	python3 - "$@" <<'EOF'
import os, struct, sys
M = (1 << 64) - 1
G = 0x9e3779b97f4a7c15
def fin(z):
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M
    return z ^ (z >> 31)
def mix(x):
    return fin((x + G) & M)
path = sys.argv[1]
size = os.path.getsize(path)
capacity = size // 512
owner = [None] * capacity  # version seed of the last write, None: zero
for spec in sys.argv[2:]:
    seed, ops, max_sectors = map(int, spec.split(':'))
    state = seed
    def draw():
        global state
        state = (state + G) & M
        return fin(state)
    for i in range(ops):
        r, c, f = draw(), draw(), draw()
        count = 1 + c % max_sectors
        first = f % (capacity - count + 1)
        kind = r % 100
        if kind < 40 or kind >= 92:
            continue  # read or flush: no change
        version = seed ^ (((i + 1) * G) & M) if kind < 80 else None
        for s in range(first, first + count):
            owner[s] = version
with open(path, 'rb') as f:
    data = f.read()
zero = bytes(512)
bad = []
for s in range(capacity):
    v = owner[s]
    if v is None:
        want = zero
    else:
        key = mix(v)
        want = struct.pack('<64Q', *(mix(key ^ (s * 64 + j)) for j in range(64)))
    if data[s * 512:(s + 1) * 512] != want:
        bad.append(s)
written = sum(v is not None for v in owner)
print('%s: %d sectors (%d written by the model, %d zero): %d differ%s' %
      (os.path.basename(path), capacity, written, capacity - written, len(bad),
       (' (first: %s)' % ', '.join(map(str, bad[:8]))) if bad else ''))
sys.exit(1 if bad or size % 512 else 0)
EOF
}

# stat_value FILE DEVICE_NAME KEY: "  KEY: value" in the --stats block of
# the first device called DEVICE_NAME.
stat_value() {
	awk -v dev="$2" -v key="$3:" '
		/^device [0-9]+ / { in_dev = ($3 == dev ":") }
		in_dev && $1 == key { print $2; exit }' "$1"
}

# guest_bad OUTFILE DISK FIELD: from blkmodel's summary line of disk DISK,
# "refused" (bad requests refused) or "bounds" (of those, refused by the
# hypervisor's bounds check).
guest_bad() {
	local line
	line=$(grep "^blkmodel: disk $2 ([a-z]*): [0-9]* ops (" "$1")
	if [ "$3" = refused ]; then
		sed -n 's/.*; \([0-9]*\) bad requests refused.*/\1/p' <<<"$line"
	else
		sed -n "s/.*, \([0-9]*\) by the device's bounds check.*/\1/p" <<<"$line"
	fi
}

# same_count WHAT A B: A and B are the same number (two empty strings,
# e.g. a renamed counter and a changed summary line, are not "the same").
same_count() {
	[[ "$2" =~ ^[0-9]+$ ]] && [ "$2" = "$3" ] || fail "$1: host counted '$2', the guest saw '$3'"
}

# expect_ok: the last run_guest exited 0; else show what the guest said.
expect_ok() {
	if [ "$STATUS" -ne 0 ]; then
		echo "--- guest output:"
		cat "$out"
		echo "--- kapsel stderr (tail):"
		tail -n 20 "$err"
		fail "expected exit status 0, got $STATUS"
	fi
}

case "$1" in
mixed-pv-ata)
	# One VM: disk 0 on PV (qd 16), disk 1 on ATA, both running seeded
	# random sequences interleaved request by request, bad requests on
	# both; then the guest reads both back whole and the host checks the
	# files against the model.
	truncate -s 2M "$TMP/pv.img"
	truncate -s 256K "$TMP/ata.img"
	run_guest "$out" "$err" --kernel "$MODEL" --disk "$TMP/pv.img" --disk "$TMP/ata.img,bus=ata" \
		--stats --cmdline "mixed seed=31 ops=2000 seed1=32 ops1=150 max_sectors1=2 qd=16 bad=25"
	expect_ok
	expect_in "$out" "blkmodel: disk 0 (pv): all 4096 sectors match the model (after the sequence)"
	expect_in "$out" "blkmodel: disk 1 (ata): all 512 sectors match the model (after the sequence)"
	expect_in "$out" "blkmodel: disk 0 (pv): 2000 ops ("
	expect_in "$out" "blkmodel: disk 1 (ata): 150 ops ("
	line=$(grep "^blkmodel mixed:" "$out") || fail "no mixed summary"
	overlapped=$(sed -n 's/^blkmodel mixed: \([0-9]*\) of .*/\1/p' <<<"$line")
	most=$(sed -n 's/.*(up to \([0-9]*\))$/\1/p' <<<"$line")
	[ "$overlapped" -gt 0 ] || fail "no ATA request ran while PV requests were in flight: $line"
	[ "$most" -ge 2 ] || fail "never more than $most PV requests in flight during an ATA request"
	check_model "$TMP/pv.img" 31:2000:16 || fail "the PV image differs from the model"
	check_model "$TMP/ata.img" 32:150:2 || fail "the ATA image differs from the model"
	# The model can tell sequences apart (the check can fail).
	if check_model "$TMP/ata.img" 33:150:2 >/dev/null; then
		fail "the ATA image matches a sequence that never ran on it"
	fi
	# Every bad request the guest saw refused by the hypervisor's bounds
	# check is counted there, per device, and nothing else is.
	same_count "blk-pv denied_bounds" "$(stat_value "$err" blk-pv denied_bounds)" "$(guest_bad "$out" 0 bounds)"
	same_count "ata-disk denied_bounds" "$(stat_value "$err" ata-disk denied_bounds)" "$(guest_bad "$out" 1 bounds)"
	[ "$(guest_bad "$out" 0 refused)" -eq 80 ] || fail "PV: 2000 ops with bad=25 should refuse 80"
	expect_not_in "$err" "crashed"
	;;
model-pv-then-ata)
	# A PV run at qd 32, then a second VM that reads the same image
	# through ATA, checks it against the first run's model and runs its
	# own sequence, with bad requests in the middle.
	img=$TMP/disk.img
	truncate -s 2M "$img"
	run_guest "$out" "$err" --kernel "$MODEL" --disk "$img" --stats \
		--cmdline "model seed=41 ops=3000 qd=32 bad=97"
	expect_ok
	expect_in "$out" "blkmodel: disk 0 (pv): 3000 ops ("
	expect_in "$out" "at qd 32,"
	same_count "blk-pv denied_bounds" "$(stat_value "$err" blk-pv denied_bounds)" "$(guest_bad "$out" 0 bounds)"
	[ "$(guest_bad "$out" 0 refused)" -eq 30 ] || fail "3000 ops with bad=97 should refuse 30"
	check_model "$img" 41:3000:16 || fail "the image after the PV run differs from the model"
	run_guest "$out" "$err" --kernel "$MODEL" --disk "$img,bus=ata" --stats \
		--cmdline "model path=ata prior_seed=41 prior_ops=3000 seed=42 ops=150 max_sectors=2 bad=15"
	expect_ok
	expect_in "$out" "blkmodel: disk 0 (ata): all 4096 sectors match the model (left by the prior sequence)"
	expect_in "$out" "blkmodel: disk 0 (ata): all 4096 sectors match the model (after the sequence)"
	same_count "ata-disk denied_bounds" "$(stat_value "$err" ata-disk denied_bounds)" "$(guest_bad "$out" 0 bounds)"
	check_model "$img" 41:3000:16 42:150:2 || fail "the image after the ATA run differs from the model"
	;;
ata-bad-while-working)
	# Out-of-range writes and reads, as raw device commands and through
	# the driver, and an unsupported command, every 4th op of a random
	# sequence; each is refused and the next request works.  A refused
	# write that wrote anything shows in the image check (it covers the
	# last sectors of the disk).
	img=$TMP/disk.img
	truncate -s 64K "$img"
	run_guest "$out" "$err" --kernel "$MODEL" --disk "$img,bus=ata" --stats \
		--cmdline "model path=ata seed=51 ops=120 max_sectors=2 bad=4"
	expect_ok
	expect_in "$out" "blkmodel: disk 0 (ata): all 128 sectors match the model (after the sequence)"
	[ "$(guest_bad "$out" 0 refused)" -eq 30 ] || fail "120 ops with bad=4 should refuse 30"
	# Kinds cycle raw write, raw read, unsupported, driver write: 8 + 8
	# reach the device's bounds check.
	[ "$(guest_bad "$out" 0 bounds)" -eq 16 ] || fail "the guest saw $(guest_bad "$out" 0 bounds) device bounds refusals, not 16"
	[ "$(stat_value "$err" ata-disk denied_bounds)" = 16 ] ||
		fail "ata-disk denied_bounds is $(stat_value "$err" ata-disk denied_bounds), not 16"
	failed=$(stat_value "$err" ata-disk ata_commands_failed)
	[ "$failed" -ge 23 ] || fail "ata_commands_failed is $failed, the guest had 23 commands refused"
	check_model "$img" 51:120:2 || fail "the image differs from the model"
	;;
mixed-flush-kill9)
	# What both disks acknowledged before a completed flush survives kill
	# -9 of the VMM.
	truncate -s 2M "$TMP/pv.img"
	truncate -s 256K "$TMP/ata.img"
	"$KAPSEL" run --no-console-input --kernel "$MODEL" --disk "$TMP/pv.img,cache=none" \
		--disk "$TMP/ata.img,bus=ata" \
		--cmdline "mixed seed=61 ops=1000 seed1=62 ops1=80 max_sectors1=2 qd=32 hold=1" \
		>"$out" 2>"$err" </dev/null &
	pid=$!
	for _ in $(seq 600); do
		grep -qF "flush acknowledged" "$out" && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	expect_in "$out" "blkmodel: flush acknowledged"
	kill -9 "$pid"
	wait "$pid" 2>/dev/null
	check_model "$TMP/pv.img" 61:1000:16 || fail "PV data lost after kill -9"
	check_model "$TMP/ata.img" 62:80:2 || fail "ATA data lost after kill -9"
	;;
ratelimit-bench)
	# The benchmark runs and prints configured vs observed; the only
	# assertion on its figures is the physical bound of a token bucket
	# (observed <= configured * 1.1 + burst / duration), recomputed here.
	# A run sized rate * D + burst breaks it exactly when it ends before
	# D / 1.1: a limiter that does not limit fails, a slow machine cannot.
	DURATION_S=0.5 KAPSEL=$KAPSEL GUESTS=$GUESTS "$SCRIPTS/bench_ratelimit.sh" >"$out" 2>"$err" ||
		{ cat "$out" "$err"; fail "bench_ratelimit.sh failed"; }
	cat "$out"
	for limit in iops bps none; do
		[ "$(grep -c "^RESULT limit=$limit " "$out")" -eq 1 ] || fail "no RESULT line for $limit"
	done
	grep "^RESULT " "$out" | python3 -c '
import re, sys
fields = ("limit configured burst unit requests block_bytes guest_us observed ratio bound "
          "host_ops host_bytes rate_limited uptime_us host_observed").split()
for line in sys.stdin:
    kv = dict(item.split("=", 1) for item in line.split()[1:])
    if sorted(kv) != sorted(fields):
        sys.exit("malformed RESULT line: " + line)
    for k in fields[1:]:
        if k != "unit" and not re.fullmatch(r"[0-9]+(\.[0-9]+)?", kv[k]):
            sys.exit("%s=%s is not a number in: %s" % (k, kv[k], line))
    rate, burst = int(kv["configured"]), int(kv["burst"])
    requests, bs, seconds = int(kv["requests"]), int(kv["block_bytes"]), int(kv["guest_us"]) / 1e6
    if seconds <= 0:
        sys.exit("no duration in: " + line)
    # Each host-served request was one the guest made (plus none).
    if int(kv["host_ops"]) != requests or int(kv["host_bytes"]) != requests * bs:
        sys.exit("host counted %s ops / %s bytes for %d requests of %d bytes" %
                 (kv["host_ops"], kv["host_bytes"], requests, bs))
    if kv["limit"] == "none":
        continue
    observed = requests * (bs if kv["limit"] == "bps" else 1) / seconds
    bound = rate * 1.1 + burst / seconds
    print("%s: observed %.1f, configured %d, bound %.1f" % (kv["limit"], observed, rate, bound))
    if observed > bound:
        sys.exit("%s: observed %.1f exceeds %d * 1.1 + %d / %.3f s = %.1f" %
                 (kv["limit"], observed, rate, burst, seconds, bound))
    if int(kv["rate_limited"]) == 0:
        sys.exit("%s: no request waited for tokens" % kv["limit"])
' || fail "rate limit results out of bounds or malformed"
	;;
*)
	fail "unknown case '$1'"
	;;
esac
echo "PASS: $1"
