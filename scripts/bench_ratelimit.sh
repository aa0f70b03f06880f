#!/bin/bash
# Benchmark: PV block rate limits (iops=, bps=) configured vs observed, from the guest's TSC clock and the host's counters.
# Usage: scripts/bench_ratelimit.sh [BUILD_DIR]   (prints figures; asserts nothing)
#
# Each phase boots blktest in "perf" mode (reads at queue depth 8) on a PV
# disk with one limit and sizes the run so that the limit, not the disk,
# decides its length: requests = rate * DURATION_S + burst.  The guest times
# its requests with its own TSC clock (kg_time_now_ns: no exits); the host's
# --stats give the requests it served, how many waited for tokens
# (rate_limited) and the VM's uptime.  A token bucket that starts full
# allows at most burst + rate * t in time t, so
#     observed <= configured + burst / t
# holds for a working limiter on any machine; the printed bound adds 10%
# of slack (timer and accounting granularity).  A phase without limits
# shows what the disk does when nothing holds it back.
#
# Environment (all optional): KAPSEL, GUESTS (else BUILD_DIR's), DURATION_S (2),
# IOPS (500), IOPS_BURST (25), BPS (4194304), BPS_BURST (65536),
# BPS_BLOCK_BYTES (65536).  Besides the table, one line per phase reads
#   RESULT limit=iops|bps|none configured=N burst=N unit=ops/s|bytes/s
#          requests=N block_bytes=N guest_us=N observed=X ratio=X bound=X
#          host_ops=N host_bytes=N rate_limited=N uptime_us=N host_observed=X
# (ratio and bound are 0 for the unlimited phase).
set -u
BUILD=${1:-build}
KAPSEL=${KAPSEL:-$BUILD/hypervisor/kapsel}
GUESTS=${GUESTS:-$BUILD/guest-pv/examples}
BLKTEST=$GUESTS/blktest.elf
DURATION_S=${DURATION_S:-2}
IOPS=${IOPS:-500}
IOPS_BURST=${IOPS_BURST:-25}
BPS=${BPS:-4194304}
BPS_BURST=${BPS_BURST:-65536}
BPS_BLOCK_BYTES=${BPS_BLOCK_BYTES:-65536}
[ -x "$KAPSEL" ] && [ -f "$BLKTEST" ] || { echo "build first: ninja -C $BUILD (or set KAPSEL and GUESTS)"; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kapsel-bench-ratelimit.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export KAPSEL_RUNTIME_DIR=$TMP/rt
img=$TMP/disk.img
truncate -s 8M "$img"

# stat KEY: the value of "  KEY: value" in the blk-pv block of --stats.
stat() {
	awk -v key="$1:" '/^device [0-9]+ / { in_dev = ($3 == "blk-pv:") }
		in_dev && $1 == key { print $2; exit }' "$TMP/err"
}

# phase LIMIT RATE BURST BLOCK_BYTES REQUESTS DISK_OPTIONS
phase() {
	local limit=$1 rate=$2 burst=$3 bs=$4 requests=$5 options=$6 status=0
	timeout --kill-after=5 120 "$KAPSEL" run --no-console-input --kernel "$BLKTEST" \
		--disk "$img$options" --stats \
		--cmdline "perf op=read qd=8 ops=$requests bs=$bs seed=3" \
		>"$TMP/out" 2>"$TMP/err" </dev/null || status=$?
	local guest_us
	guest_us=$(sed -n 's/^blktest perf: .* ops in \([0-9]*\) us.*/\1/p' "$TMP/out")
	if [ "$status" -ne 0 ] || [ -z "$guest_us" ]; then
		echo "phase $limit: kapsel exited with status $status and no perf line:" >&2
		cat "$TMP/out" "$TMP/err" >&2
		return 1
	fi
	local host_ops host_bytes limited uptime_ns
	host_ops=$(stat ops_read)
	host_bytes=$(stat bytes_read)
	limited=$(stat rate_limited)
	uptime_ns=$(sed -n 's/^vm .*: uptime_ns \([0-9]*\).*/\1/p' "$TMP/err" | head -1)
	awk -v limit="$limit" -v rate="$rate" -v burst="$burst" -v bs="$bs" -v n="$requests" \
		-v us="$guest_us" -v hops="${host_ops:-0}" -v hbytes="${host_bytes:-0}" \
		-v limited="${limited:-0}" -v uptime_ns="${uptime_ns:-0}" -v results="$TMP/results" 'BEGIN {
		unit = limit == "bps" ? "bytes/s" : "ops/s"
		t = us / 1e6
		amount = limit == "bps" ? n * bs : n
		observed = t > 0 ? amount / t : 0
		host_amount = limit == "bps" ? hbytes : hops
		host_observed = uptime_ns > 0 ? host_amount / (uptime_ns / 1e9) : 0
		ratio = rate > 0 ? observed / rate : 0
		bound = rate > 0 && t > 0 ? rate * 1.1 + burst / t : 0
		shown_rate = rate > 0 ? rate : "-"
		shown_burst = rate > 0 ? burst : "-"
		printf("%-5s %12s %9s %9d %9.3f %14.1f %7.3f %14.1f %9d %13d %15.1f\n",
		       limit, shown_rate, shown_burst, n, t, observed, ratio, bound, hops, limited,
		       host_observed)
		fmt = "RESULT limit=%s configured=%d burst=%d unit=%s requests=%d block_bytes=%d"
		fmt = fmt " guest_us=%d observed=%.1f ratio=%.3f bound=%.1f host_ops=%d host_bytes=%d"
		fmt = fmt " rate_limited=%d uptime_us=%d host_observed=%.1f\n"
		printf fmt, limit, rate, burst, unit, n, bs, us, observed, ratio, bound, hops, hbytes,
			limited, uptime_ns / 1000, host_observed >>results
	}'
}

echo "== PV block rate limits: configured vs observed (blktest perf, reads at qd 8; $DURATION_S s per limited phase)"
echo "   observed: from the guest's TSC clock; host_observed: host-served amount over VM uptime (includes boot)"
printf "%-5s %12s %9s %9s %9s %14s %7s %14s %9s %13s %15s\n" limit configured burst requests guest_s \
	observed ratio bound host_ops rate_limited host_observed
: >"$TMP/results"
iops_requests=$(awk -v r="$IOPS" -v b="$IOPS_BURST" -v d="$DURATION_S" 'BEGIN { printf "%d", r * d + b + 0.5 }')
bps_requests=$(awk -v r="$BPS" -v b="$BPS_BURST" -v d="$DURATION_S" -v bs="$BPS_BLOCK_BYTES" \
	'BEGIN { n = (r * d + b) / bs; printf "%d", n < 2 ? 2 : n + 0.5 }')
failed=0
phase iops "$IOPS" "$IOPS_BURST" 4096 "$iops_requests" ",iops=$IOPS,iops_burst=$IOPS_BURST" || failed=1
phase bps "$BPS" "$BPS_BURST" "$BPS_BLOCK_BYTES" "$bps_requests" ",bps=$BPS,bps_burst=$BPS_BURST" || failed=1
phase none 0 0 4096 "$iops_requests" "" || failed=1
cat "$TMP/results"
exit $failed
