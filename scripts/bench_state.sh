#!/bin/bash
# Benchmark of VM state operations: save/restore time vs memory size, clone-to-running time and sharing, migration downtime and bytes.
# Usage: scripts/bench_state.sh [BUILD_DIR] [restore]   (prints figures; asserts nothing)
#   restore: only the save/restore table.  KAPSEL_BEFORE=PATH adds rows for
#   another kapsel's restore (e.g. a build from before lazy restores);
#   BENCH_STATE_SIZES="64 256" picks the memory sizes (MiB).
#   BENCH_STATE_ONLY=live: only the live-vs-plain save table; BENCH_STATE_LIVE_SIZES
#   (default "256 1024"): its RAM sizes in MiB
set -u
BUILD=build
[ $# -gt 0 ] && [ "$1" != restore ] && BUILD=$1
KAPSEL=$BUILD/hypervisor/kapsel
COUNTER=$BUILD/guest-pv/examples/counter.elf
[ -x "$KAPSEL" ] && [ -f "$COUNTER" ] || { echo "build first: ninja -C $BUILD"; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kapsel-bench-state.XXXXXX")
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT

wait_for() { # FILE TEXT [SECONDS, default 30]
	local i
	for i in $(seq $((${3:-30} * 20))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
	echo "timeout waiting for '$2' in $1" >&2
	return 1
}

echo "== the memory part of a restore, on this host without KVM (tests/bench/restore_memory.c)"
echo "   copy_ms: fresh memfd, memory.img read in and CRC32C-checked before the vCPU runs (before;"
echo "   --copy-memory); map_ms: the lazy restore's mmap instead; check_ms: its background check;"
echo "   touch_ms: every page read once through the mapping (what a guest pays lazily, if it reads all)"
printf "%-8s %9s %10s %9s %10s %10s\n" memory data_MiB copy_ms map_ms check_ms touch_ms
for mem in ${BENCH_STATE_SIZES:-64 256 1024}; do
	"$BUILD/tests/bench_restore_memory" "$TMP" "$mem" $((mem / 4))
done
echo
[ -e /dev/kvm ] || { echo "(no /dev/kvm here: the VM sections need it; scripts/nested-kvm.sh)"; exit 0; }

# restore_row MEM DIR MODE KAPSEL ARGS...: restore DIR until the guest prints
# a tick, then stop it; prints the figures of one row.
restore_row() {
	local mem=$1 dir=$2 mode=$3 kapsel=$4
	shift 4
	local rout=$TMP/r-$mem-$mode.out rerr=$TMP/r-$mem-$mode.err
	: >"$rout"
	local start_ns
	start_ns=$(date +%s%N)
	"$kapsel" restore --no-console-input --no-control --kernel "$COUNTER" --timing "$@" "$dir" \
		>"$rout" 2>"$rerr" </dev/null &
	local rpid=$!
	wait_for "$rout" "^tick" || true
	local first_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
	kill $rpid 2>/dev/null
	wait $rpid 2>/dev/null
	local running check
	running=$(sed -n 's/.*restored .* in \([0-9.]*\) ms.*/\1/p' "$rerr")
	check=$(sed -n 's/.*memory.img checked in \([0-9.]*\) ms.*/\1/p' "$rerr")
	printf "%-8s %-7s %14s %15s %16s\n" "${mem}M" "$mode" "${running:-?}" "${check:--}" "$first_ms"
}

# Live vs plain save of a guest that dirties memory while it is saved: the
# counter guest with a pattern over 5/8 of RAM (as the 1 GiB guest with
# 740 MiB touched of issue 16) and a churn region it rewrites at a fixed
# rate; the vCPU-stopped time each save reports.
if [ "${1:-}" != restore ] && [ "${2:-}" != restore ]; then
echo "== live vs plain save: vCPU stopped (counter guest: pattern 5/8 of RAM, churn region rewritten at CHURN MiB/s)"
# churn_MiB/s: asked for; during_live: what the guest managed while the live
# save ran (ticks it printed meanwhile x pages per tick; an emulated guest
# falls behind).
printf "%-8s %9s %11s %12s %14s %13s %7s %12s %14s\n" memory touched churn_MiB/s during_live plain_stop_ms live_stop_ms rounds written_MiB live_total_ms
for mem in ${BENCH_STATE_LIVE_SIZES:-256 1024}; do
	churn=$((mem / 16)) rate=$((mem / 32))
	name=benchlive$$-$mem out=$TMP/live-$mem.out
	: >"$out"
	"$KAPSEL" run --no-console-input --memory ${mem}M --kernel "$COUNTER" --name "$name" \
		--cmdline "ticks=1000000 interval_ms=10 pattern_mb=$((mem * 5 / 8)) churn_mb=$churn churn_mbps=$rate" \
		>"$out" 2>"$TMP/live-$mem.err" </dev/null &
	pid=$!
	PIDS+=($pid)
	# A big pattern takes a while to write (minutes under emulation).
	wait_for "$out" "^tick 20 " 600 || { kill $pid; continue; }
	plain=$("$KAPSEL" save --no-live "$name" "$TMP/plain-$mem")
	t0=$(awk '$1 == "tick" { n = $2 } END { print n + 0 }' "$out")
	live=$("$KAPSEL" save --live "$name" "$TMP/live-$mem")
	t1=$(awk '$1 == "tick" { n = $2 } END { print n + 0 }' "$out")
	"$KAPSEL" destroy "$name" >/dev/null 2>&1
	wait $pid 2>/dev/null
	total=$(sed -n 's/.*total \([0-9.]*\) ms.*/\1/p' <<<"$live")
	during=$(awk -v t="$((t1 - t0))" -v ms="$total" -v rate="$rate" \
		'BEGIN { pages = int(rate * 256 * 10 / 1000) + 1; if (ms > 0) printf "%.1f", t * pages * 4096 / 1048576 / (ms / 1000) }')
	printf "%-8s %9s %11s %12s %14s %13s %7s %12s %14s\n" "${mem}M" "$((mem * 5 / 8 + churn))M" "$rate" "$during" \
		"$(sed -n 's/.*vCPU stopped \([0-9.]*\) ms.*/\1/p' <<<"$plain")" \
		"$(sed -n 's/.*vCPU stopped \([0-9.]*\) ms.*/\1/p' <<<"$live")" \
		"$(sed -n 's/.*live, \([0-9]*\) rounds.*/\1/p' <<<"$live")" \
		"$(sed -n 's/.*rounds, \([0-9]*\) MiB written.*/\1/p' <<<"$live")" \
		"$(sed -n 's/.*total \([0-9.]*\) ms.*/\1/p' <<<"$live")"
	rm -rf "$TMP/plain-$mem" "$TMP/live-$mem"
done
fi
[ "${BENCH_STATE_ONLY:-}" = live ] && exit 0

echo
echo "== save / restore vs memory size (counter guest; pattern_mb = a quarter of RAM)"
echo "   restore modes: lazy = default (memory.img mapped copy-on-write, CRC32C checked in the"
echo "   background, outputs held until it passes); copy = --copy-memory (read and checked"
echo "   first: the restore before issue 16 part 4)${KAPSEL_BEFORE:+; before = $KAPSEL_BEFORE}"
echo "   to_running_ms: state opened to vCPU about to run (kapsel restore --timing);"
echo "   check_ms: the background check (lazy); first_tick_ms: process start to the guest's"
echo "   first console line, which waits for the check (lazy)"
printf "%-8s %10s %12s %12s %12s\n" memory data_MiB save_ms vcpu_stop_ms disk_MiB >"$TMP/save-table"
printf "%-8s %-7s %14s %15s %16s\n" memory mode to_running_ms check_ms first_tick_ms >"$TMP/restore-table"
for mem in ${BENCH_STATE_SIZES:-64 256 1024}; do
	out=$TMP/run-$mem.out err=$TMP/run-$mem.err dir=$TMP/save-$mem
	: >"$out"
	"$KAPSEL" run --no-console-input --no-control --memory ${mem}M --kernel "$COUNTER" \
		--cmdline "ticks=100000 interval_ms=5 pattern_mb=$((mem / 4))" \
		--save-on-signal "$dir" --save-stop >"$out" 2>"$err" </dev/null &
	pid=$!
	wait_for "$out" "^tick 5 " || { kill $pid; continue; }
	kill -HUP $pid
	wait $pid
	line=$(grep "saved VM" "$err")
	data=$(sed -n 's/.*(\([0-9]*\) MiB data).*/\1/p' <<<"$line")
	write=$(sed -n 's/.*write \([0-9.]*\) ms.*/\1/p' <<<"$line")
	stopped=$(sed -n 's/.*vCPU stopped \([0-9.]*\) ms.*/\1/p' <<<"$line")
	disk=$(du -m "$dir/memory.img" | cut -f1)
	printf "%-8s %10s %12s %12s %12s\n" "${mem}M" "$data" "$write" "$stopped" "$disk" >>"$TMP/save-table"
	# Each mode twice, the first run warming the page cache.
	for mode in lazy copy before; do
		args=() kapsel=$KAPSEL
		[ $mode = copy ] && args=(--copy-memory)
		if [ $mode = before ]; then
			[ -n "${KAPSEL_BEFORE:-}" ] || continue
			kapsel=$KAPSEL_BEFORE
		fi
		[ $mode = lazy ] && args=(-v)
		restore_row "$mem" "$dir" "$mode" "$kapsel" "${args[@]}" >/dev/null
		restore_row "$mem" "$dir" "$mode" "$kapsel" "${args[@]}" >>"$TMP/restore-table"
	done
	rm -rf "$dir"
done
cat "$TMP/save-table"
echo
cat "$TMP/restore-table"
[ "${1:-}" = restore ] || [ "${2:-}" = restore ] && exit 0

echo
echo "== clones: 8 from one 256 MiB snapshot (MAP_PRIVATE of memory.img, checked by each clone in the background)"
dir=$TMP/clone-src
: >"$TMP/c.out"
"$KAPSEL" run --no-console-input --no-control --memory 256M --kernel "$COUNTER" \
	--cmdline "ticks=100000 interval_ms=5 pattern_mb=64" --save-on-signal "$dir" --save-stop \
	>"$TMP/c.out" 2>"$TMP/c.err" </dev/null &
pid=$!
wait_for "$TMP/c.out" "^tick 5 " && kill -HUP $pid
wait $pid
mkdir "$TMP/consoles"
start=$(date +%s%N)
"$KAPSEL" clone --kernel "$COUNTER" --count 8 --prefix bench$$ --console-dir "$TMP/consoles" --timing "$dir" \
	>"$TMP/clone.out" 2>"$TMP/clone.err" </dev/null &
cpid=$!
PIDS+=($cpid)
for i in $(seq 8); do wait_for "$TMP/consoles/bench$$-$i.log" "^tick" || true; done
all_running=$(( ($(date +%s%N) - start) / 1000000 ))
grep "restored" "$TMP/clone.err" | sed -n 's/.*in \([0-9.]*\) ms.*/\1/p' | sort -n |
	awk '{ a[NR] = $1 } END { printf "restore-to-running per clone: min %s ms, median %s ms, max %s ms\n", a[1], a[int((NR + 1) / 2)], a[NR] }'
echo "all 8 clones printing ticks after: $all_running ms (the parent's check of manifest and state.bin: $(sed -n 's/.*verified .* in \([0-9.]*\) ms/\1/p' "$TMP/clone.err") ms; each clone checks memory.img in the background, its console held until then)"
rss=0 pss=0 shared=0
for child in $(pgrep -P $cpid); do
	while read -r key value _; do
		case $key in
		Rss:) rss=$((rss + value)) ;;
		Pss:) pss=$((pss + value)) ;;
		Shared_Clean:) shared=$((shared + value)) ;;
		esac
	done <"/proc/$child/smaps_rollup"
done
echo "8 clones: RSS sum $((rss / 1024)) MiB, PSS sum $((pss / 1024)) MiB, shared clean $((shared / 1024)) MiB (each guest has ~66 MiB of data in RAM)"
for child in $(pgrep -P $cpid); do kill "$child"; done
wait $cpid 2>/dev/null

echo
echo "== live migration over loopback (counter guest, PV disk)"
printf "%-8s %7s %10s %12s %12s %12s\n" memory rounds pages bytes_MiB downtime_ms total_ms
for mem in 64 256 1024; do
	port=$((30000 + RANDOM % 20000))
	truncate -s 16M "$TMP/disk.img"
	: >"$TMP/s-$mem.out"
	"$KAPSEL" run --no-console-input --no-control --memory ${mem}M --kernel "$COUNTER" \
		--disk "$TMP/disk.img" --incoming "tcp:127.0.0.1:$port" \
		>"$TMP/d.out" 2>"$TMP/d.err" </dev/null &
	dpid=$!
	name=benchmig$$-$mem
	"$KAPSEL" run --no-console-input --memory ${mem}M --kernel "$COUNTER" --name "$name" \
		--disk "$TMP/disk.img" --cmdline "ticks=100000 interval_ms=5 pattern_mb=$((mem / 4))" \
		>"$TMP/s-$mem.out" 2>"$TMP/s.err" </dev/null &
	spid=$!
	wait_for "$TMP/s-$mem.out" "^tick 5 " || true
	line=$("$KAPSEL" migrate "$name" "tcp:127.0.0.1:$port")
	wait $spid
	kill $dpid 2>/dev/null
	wait $dpid 2>/dev/null
	printf "%-8s %7s %10s %12s %12s %12s\n" "${mem}M" \
		"$(sed -n 's/.*: \([0-9]*\) rounds.*/\1/p' <<<"$line")" \
		"$(sed -n 's/.*rounds, \([0-9]*\) pages.*/\1/p' <<<"$line")" \
		"$(sed -n 's/.* \([0-9]*\) bytes;.*/\1/p' <<<"$line" | awk '{ printf "%.1f", $1 / 1048576 }')" \
		"$(sed -n 's/.*downtime \([0-9.]*\) ms.*/\1/p' <<<"$line")" \
		"$(sed -n 's/.*total \([0-9.]*\) ms.*/\1/p' <<<"$line")"
	rm -f "$TMP/disk.img"
done
