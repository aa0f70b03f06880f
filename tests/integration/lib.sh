# Helpers for integration tests that boot guests under KVM.  Source it.
# Environment: KAPSEL (the kapsel binary), GUESTS (folder of example *.elf).
#
# A test script is one top-level `case "$1" in` (or "$CASE") whose arms are its cases;
# those arm labels are the only list of case names.  `SCRIPT --list` prints
# them, one per line (with a second word, the meson suite, when the label
# line ends in "# suite: NAME"; else the suite is kvm); tests/meson.build
# registers the cases from that at configure time.
set -u

# list_cases SCRIPT: the labels of SCRIPT's top-level case statement.
list_cases() {
	awk '
	/^case "\$[A-Za-z0-9_]+" in$/ { inside = 1; next }
	/^esac$/ { inside = 0 }
	inside && /^[a-z0-9][a-z0-9| -]*\)/ {
		suite = ""
		if (match($0, /# suite: [a-z0-9-]+$/))
			suite = " " substr($0, RSTART + 9)
		label = $0
		sub(/\).*/, "", label)
		gsub(/ /, "", label)
		n = split(label, names, "|")
		for (i = 1; i <= n; i++)
			if (names[i] != "")
				print names[i] suite
	}' "$1"
}

if [ "${1:-}" = --list ]; then
	list_cases "$0"
	exit 0
fi

SKIP=77

# Milliseconds between the counter guest's ticks.  Under scripts/nested-kvm.sh
# (KAPSEL_NESTED=1) every shell command is emulated and slow, so the guest
# ticks slower for the test to catch it mid-run.
TICK_MS=5
[ -n "${KAPSEL_NESTED:-}" ] && TICK_MS=20

# Skip (exit 77) when this machine has no usable KVM.
require_kvm() {
	if [ ! -e /dev/kvm ]; then
		echo "SKIP: /dev/kvm does not exist"
		exit $SKIP
	fi
	if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
		echo "SKIP: no permission to use /dev/kvm"
		exit $SKIP
	fi
}

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# stop_children: end what a case left running in the background when it
# failed (VMs, destinations, proxies), so that they neither hold meson's
# output pipe open until their own timeouts nor keep ports the next case
# wants.  SIGTERM first (timeout passes it on; it ends a VM), then SIGKILL.
stop_children() {
	local pids p
	pids=$(jobs -p)
	[ -n "$pids" ] || return 0
	# shellcheck disable=SC2086 # a list of pids
	kill $pids 2>/dev/null
	sleep 1
	for p in $pids; do
		pkill -KILL -P "$p" 2>/dev/null
		kill -KILL "$p" 2>/dev/null
	done
	return 0
}

# run_guest OUTFILE ERRFILE ARGS...: runs kapsel run ARGS with a timeout,
# stdin closed; sets STATUS.
run_guest() {
	local out=$1 err=$2
	shift 2
	STATUS=0
	LAST_ERR=$err
	timeout --kill-after=5 60 "$KAPSEL" run --no-console-input "$@" >"$out" 2>"$err" </dev/null || STATUS=$?
}

# save_when OUTFILE ERRFILE DIR PATTERN ARGS...: kapsel run ARGS, saving
# into DIR and stopping (SIGHUP, --save-stop) once OUTFILE has a line
# matching the extended regular expression PATTERN; sets STATUS.
save_when() {
	local out=$1 err=$2 dir=$3 pattern=$4 pid
	shift 4
	LAST_ERR=$err
	timeout --kill-after=5 120 "$KAPSEL" run --no-console-input --no-control \
		--save-on-signal "$dir" --save-stop "$@" >"$out" 2>"$err" </dev/null &
	pid=$!
	for _ in $(seq 600); do
		grep -Eq -- "$pattern" "$out" && break
		kill -0 $pid 2>/dev/null || break
		sleep 0.1
	done
	grep -Eq -- "$pattern" "$out" || { cat "$out" "$err"; fail "never reached '$pattern'"; }
	kill -HUP $pid
	STATUS=0
	wait $pid || STATUS=$?
}

# expect_status N: the last run exited N; if not, show its stderr (LAST_ERR).
expect_status() {
	if [ "$STATUS" -ne "$1" ]; then
		[ -n "${LAST_ERR:-}" ] && [ -f "$LAST_ERR" ] && { echo "--- $LAST_ERR:"; cat "$LAST_ERR"; }
		fail "expected exit status $1, got $STATUS"
	fi
}

# expect_in FILE TEXT: FILE contains TEXT (fixed string).
expect_in() {
	grep -qF -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "'$2' not found in $1"; }
}

expect_not_in() {
	if grep -qF -- "$2" "$1"; then
		echo "--- $1:"
		cat "$1"
		fail "'$2' unexpectedly found in $1"
	fi
}

make_temp_dir() {
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/kapsel-test.XXXXXX")
	trap 'stop_children; rm -rf "$TMP"' EXIT
	# Control sockets of the test's VMs live in the test's own directory,
	# never among the host's real VMs.
	export KAPSEL_RUNTIME_DIR=$TMP/rt
}

# make_psk FILE: a fresh 32-byte pre-shared key, mode 0600.
make_psk() {
	(umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$1")
}

# wait_listening PORT [NETNS]: until a socket listens on PORT (read from
# /proc/net/tcp, of network namespace NETNS if given: connecting would be
# taken for the migration itself).
wait_listening() {
	local i hex in_ns=()
	hex=$(printf '%04X' "$1")
	[ -n "${2:-}" ] && in_ns=(ip netns exec "$2")
	for i in $(seq 400); do
		"${in_ns[@]}" awk -v p=":$hex" '$2 ~ p"$" && $4 == "0A" { found = 1 } END { exit !found }' \
			/proc/net/tcp /proc/net/tcp6 2>/dev/null && return 0
		sleep 0.05
	done
	fail "nothing listens on port $1"
}

# live_migrate SRC_OUT SRC_ERR DST_OUT DST_ERR PATTERN SECONDS -- SRC_ARGS... -- DST_ARGS...:
# a live migration over loopback TLS (a fresh pre-shared key and port): the
# destination (kapsel run DST_ARGS --incoming) and the source (kapsel run
# SRC_ARGS, named) start in the background, and once SRC_OUT has a line
# matching the extended regular expression PATTERN the source migrates.
# Both must end with status 0 (each run is limited to SECONDS).
live_migrate() {
	local src_out=$1 src_err=$2 dst_out=$3 dst_err=$4 pattern=$5 limit=$6 i
	shift 6
	[ "$1" = -- ] || fail "live_migrate: expected -- before the source's arguments"
	shift
	local src_args=() dst_args=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do src_args+=("$1"); shift; done
	[ $# -gt 0 ] && shift
	dst_args=("$@")
	make_psk "$TMP/mig.psk"
	local port=$((20000 + $$ % 20000)) name=mig-$$
	timeout --kill-after=5 "$limit" "$KAPSEL" run --no-console-input --no-control \
		"${dst_args[@]}" --incoming "tcp:127.0.0.1:$port,psk=$TMP/mig.psk" \
		>"$dst_out" 2>"$dst_err" </dev/null &
	local dst=$!
	timeout --kill-after=5 "$limit" "$KAPSEL" run --no-console-input --name "$name" \
		"${src_args[@]}" >"$src_out" 2>"$src_err" </dev/null &
	local src=$!
	for i in $(seq 600); do
		grep -Eq "$pattern" "$src_out" 2>/dev/null && break
		sleep 0.1
	done
	grep -Eq "$pattern" "$src_out" || { cat "$src_out" "$src_err"; fail "the source never printed '$pattern'"; }
	"$KAPSEL" migrate --psk "$TMP/mig.psk" "$name" "tcp:127.0.0.1:$port" >"$TMP/mig" 2>&1 ||
		{ cat "$TMP/mig" "$dst_err"; fail "migrate"; }
	expect_in "$TMP/mig" "migrated VM '$name'"
	STATUS=0; wait "$src" || STATUS=$?; LAST_ERR=$src_err; expect_status 0
	STATUS=0; wait "$dst" || STATUS=$?; LAST_ERR=$dst_err; expect_status 0
}

# pattern check|write IMAGE SEED FIRST COUNT: atatest's pattern (block_ata.sh, qemu.sh), computed
# here independently: sector s is 64 little-endian words mix(seed, s*64+i).
pattern() {
	python3 - "$@" <<'EOF'
import struct, sys
mode, path, seed, first, count = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
M = (1 << 64) - 1
def word(i):
    x = (seed * 0x9e3779b97f4a7c15 + i) & M
    x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & M
    x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & M
    return x ^ (x >> 31)
def sector(s):
    return struct.pack('<64Q', *(word(s * 64 + i) for i in range(64)))
with open(path, 'r+b') as f:
    for s in range(first, first + count):
        f.seek(s * 512)
        if mode == 'write':
            f.write(sector(s))
        elif f.read(512) != sector(s):
            sys.exit(f'sector {s} of {path} does not hold pattern {seed}')
EOF
}

# zeroes IMAGE SECTOR: the sector is all zero (nothing wrote there).
expect_zero_sector() {
	local n
	n=$(dd if="$1" bs=512 skip="$2" count=1 status=none | tr -d '\0' | wc -c)
	[ "$n" -eq 0 ] || fail "sector $2 of $1 was written ($n non-zero bytes)"
}

# An independent implementation of blktest's pattern (block_pv.sh, qemu.sh): sector s holds 64
# little-endian words, word i = mix(mix(seed) ^ (s * 64 + i)), mix being the
# splitmix64 finalizer.  check_image IMAGE SEED START SECTORS [ZERO_FROM ZERO_TO]
check_image() {
	python3 - "$@" <<'EOF'
import struct, sys
M = (1 << 64) - 1
def mix(x):
    x = (x + 0x9e3779b97f4a7c15) & M
    x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & M
    x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & M
    return x ^ (x >> 31)
path, seed, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
zero = range(int(sys.argv[5]), int(sys.argv[6])) if len(sys.argv) > 6 else range(0)
key = mix(seed)
with open(path, 'rb') as f:
    f.seek(start * 512)
    data = f.read(count * 512)
if len(data) != count * 512:
    sys.exit('image too short')
bad = 0
for s in range(start, start + count):
    words = struct.unpack_from('<64Q', data, (s - start) * 512)
    want = [0] * 64 if s in zero else [mix(key ^ ((s * 64 + i) & M)) for i in range(64)]
    if list(words) != want:
        if bad < 5:
            print('sector %d differs' % s)
        bad += 1
print('%d of %d sectors differ' % (bad, count))
sys.exit(1 if bad else 0)
EOF
}

# start_vm NAME [kapsel run options...]: boot the idle example guest (20 ms
# ticks) as NAME in the background; waits START_VM_TRIES x 50 ms (default
# 200: 10 s) for its socket and "idle: ready".  Sets VMPID and appends it
# to VMPIDS (the caller's cleanup kills them).
start_vm() {
	local name=$1
	shift
	"$KAPSEL" run --no-console-input --kernel "$GUESTS/idle.elf" --name "$name" \
		--cmdline "tick_ms=20" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" </dev/null &
	VMPID=$!
	VMPIDS+=("$VMPID")
	for _ in $(seq "${START_VM_TRIES:-200}"); do
		if [ -S "$KAPSEL_RUNTIME_DIR/$name.sock" ] && grep -q "idle: ready" "$TMP/$name.out"; then
			return 0
		fi
		kill -0 "$VMPID" 2>/dev/null || { cat "$TMP/$name.err"; fail "VM $name died at start"; }
		sleep 0.05
	done
	fail "VM $name did not come up"
}
