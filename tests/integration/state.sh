#!/bin/bash
# Integration tests: VM state (save/restore, hostile state files, inspect, clones, migration) with the counter guest.
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
COUNTER="$GUESTS/counter.elf"

# ---- helpers ---------------------------------------------------------------

# check_ticks FIRST LAST FILES...: the "tick N sum S gen G" lines of FILES, in
# order, are exactly ticks FIRST..LAST (no gap, no repeat) and every sum is
# sum(n) = mix64(sum(n-1) ^ n) recomputed here.  Also checks the guest's
# disk records when CHECK_DISK=IMAGE is set (sector n holds tick n).
check_ticks() {
	python3 - "$@" <<'EOF'
import struct, sys, os
M = (1 << 64) - 1
def mix64(x):
    x = (x + 0x9e3779b97f4a7c15) & M
    x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & M
    x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & M
    return x ^ (x >> 31)
first, last = int(sys.argv[1]), int(sys.argv[2])
sums = [0]
for n in range(1, last + 1):
    sums.append(mix64(sums[-1] ^ n))
ticks = []
for path in sys.argv[3:]:
    for line in open(path, errors="replace"):
        p = line.split()
        if len(p) == 6 and p[0] == "tick":
            ticks.append((int(p[1]), int(p[3], 16), int(p[5])))
seen = [t[0] for t in ticks]
if seen != list(range(first, last + 1)):
    dup = sorted({n for n in seen if seen.count(n) > 1})
    gaps = sorted(set(range(first, last + 1)) - set(seen))
    sys.exit("guest ticks wrong: %d lines, first %s last %s, repeated %s, missing %s" %
             (len(seen), seen[:1], seen[-1:], dup[:10], gaps[:10]))
for n, s, g in ticks:
    if s != sums[n]:
        sys.exit("tick %d: guest printed sum %x, expected %x" % (n, s, sums[n]))
image = os.environ.get("CHECK_DISK")
if image:
    data = open(image, "rb").read()
    for n in range(1, last + 1):
        rec = data[n * 512:(n + 1) * 512]
        magic, tick, s, gen = struct.unpack_from("<4Q", rec)
        if magic != 0x52455443554f434b or tick != n or s != sums[n]:
            sys.exit("disk sector %d: magic %x tick %d sum %x, expected tick %d sum %x" %
                     (n, magic, tick, s, n, sums[n]))
        words = struct.unpack_from("<60Q", rec, 32)
        if any(w != mix64(sums[n] ^ (i + 4)) for i, w in enumerate(words)):
            sys.exit("disk sector %d: payload corrupt" % n)
    rec = data[(last + 1) * 512:(last + 2) * 512]
    if not os.environ.get("DISK_TAIL_OK") and len(rec) == 512 and struct.unpack_from("<Q", rec)[0] == 0x52455443554f434b:
        sys.exit("disk has a record past tick %d" % last)
print("ticks %d..%d verified (%d lines%s)" % (first, last, len(ticks),
      ", disk records too" if image else ""))
EOF
}

# wait_for_tick FILE N: until the guest printed tick N (at most 20 s).
wait_for_tick() {
	local i
	for i in $(seq 200); do
		grep -q "^tick $2 " "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	fail "the guest never reached tick $2 (see $1)"
}

# start_counter OUT ERR ARGS...: kapsel run of the counter guest in the
# background; PID is its process id.
start_counter() {
	local out=$1 err=$2
	shift 2
	: >"$out" # now, so an older run's output is never mistaken for this one's
	timeout --kill-after=5 60 "$KAPSEL" run --no-console-input --no-control \
		--kernel "$COUNTER" "$@" >"$out" 2>"$err" </dev/null &
	PID=$!
}

# save_on_signal DIR STOP ARGS...: run the counter, SIGHUP it at tick 40,
# wait for it; OUT1/ERR1 hold its output and STATUS its exit status.
save_on_signal() {
	local dir=$1 stop=$2
	shift 2
	OUT1=$TMP/out1 ERR1=$TMP/err1 LAST_ERR=$TMP/err1
	start_counter "$OUT1" "$ERR1" --save-on-signal "$dir" $stop "$@"
	wait_for_tick "$OUT1" 40
	kill -HUP "$PID"
	STATUS=0
	wait "$PID" || STATUS=$?
}

# restore DIR ARGS...: kapsel restore, output in OUT2/ERR2, status in STATUS.
# A state never chooses host files: the kernel is named, and the disk
# (RESTORE_DISK, "0=PATH") in the cases that have one.
restore() {
	local dir=$1
	shift
	OUT2=$TMP/out2 ERR2=$TMP/err2 LAST_ERR=$TMP/err2
	STATUS=0
	timeout --kill-after=5 60 "$KAPSEL" restore --no-console-input --no-control \
		--kernel "$COUNTER" ${RESTORE_DISK:+--disk "$RESTORE_DISK"} "$@" "$dir" \
		>"$OUT2" 2>"$ERR2" </dev/null || STATUS=$?
}

# expect_refused DIR TEXT: restoring DIR fails with TEXT and runs no guest code.
expect_refused() {
	restore "$1"
	[ "$STATUS" -eq 125 ] || { cat "$ERR2"; fail "restore of a bad state ($2) exited $STATUS, expected 125"; }
	expect_in "$ERR2" "$2"
	[ ! -s "$OUT2" ] || { cat "$OUT2"; fail "the guest ran from a bad state"; }
}

# flip FILE OFFSET: invert one byte (a change, whatever the byte was).
flip() {
	python3 -c "
import sys
f = open(sys.argv[1], 'r+b'); f.seek(int(sys.argv[2])); b = f.read(1)
f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 0xff]))" "$1" "$2"
}

last_tick() { awk '$1 == "tick" { n = $2 } END { print n }' "$@"; }

# A saved state: counter run to tick ~40 and stopped.
make_saved() {
	local dir=$1 ticks=$2
	shift 2
	save_on_signal "$dir" --save-stop --cmdline "ticks=$ticks interval_ms=$TICK_MS" "$@"
	expect_status 0
	expect_in "$ERR1" "saved VM"
	[ -f "$dir/manifest" ] || fail "no manifest in $dir"
}

# Rewrite a state file with valid checksums everywhere (header, payload,
# manifest), so only the semantic check can refuse it.  MODE is
# "version" (format version 3), "mandatory" (an unknown mandatory record),
# "optional" (an unknown optional record), "vcpu" (flip cr0's paging bit),
# "pvmmu" (map the first PV MMU mapping onto the hypervisor's page tables),
# "format1" (state.bin and manifest rewritten as Kapsel 1 wrote them: format
# version 1, the definition as its "key=value" text record), "xxe" (the
# domain XML definition with an external entity reading a host file) or
# "nic" (a socket network interface added to the definition).
forge_state() {
	python3 - "$1" "$2" <<'EOF'
import struct, sys, os
def crc32c(data, crc=0):
    if not hasattr(crc32c, "t"):
        t = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
            t.append(c)
        crc32c.t = t
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = (c >> 8) ^ crc32c.t[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF
def parse(data):
    recs, off = [], 0
    while off < len(data):
        t, f, n, pc, hc = struct.unpack_from("<IIQII", data, off)
        recs.append([t, f, bytearray(data[off + 24:off + 24 + n])])
        off += 24 + n
    return recs
def build(recs):
    out = b""
    for t, f, p in recs:
        h = struct.pack("<IIQI", t, f, len(p), crc32c(bytes(p)))
        out += h + struct.pack("<I", crc32c(h)) + bytes(p)
    return out
d, mode = sys.argv[1], sys.argv[2]
recs = parse(open(os.path.join(d, "state.bin"), "rb").read())
def definition():
    return next(r for r in recs if r[0] == 0x0105)
if mode == "version":
    struct.pack_into("<I", recs[0][2], 8, 3)
elif mode == "format1":
    import re
    xml = definition()[2].decode()
    def tag(name):
        m = re.search("<%s[^>]*>([^<]*)</%s>" % (name, name), xml)
        return m.group(1) if m else None
    unescape = lambda t: t.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    def esc(t):
        return "".join("%%%02x" % ord(c) if c == "%" or ord(c) < 0x20 else c for c in t)
    lines = ["name=" + esc(tag("name")), "uuid=" + tag("uuid").replace("-", ""),
             "memory_bytes=%d" % (int(tag("memory")) * 1024), "vcpus=1",
             "kernel=" + esc(unescape(tag("kernel"))), "console_mode=0",
             "lifecycle=" + " ".join(str(["destroy", "restart", "preserve"].index(tag(t)))
                                     for t in ("on_poweroff", "on_reboot", "on_crash"))]
    if tag("cmdline") is not None:
        lines.append("cmdline=" + esc(unescape(tag("cmdline"))))
    if "<disk " in xml:
        sys.exit("forge format1: this helper writes definitions without disks only")
    r = definition()
    r[0], r[2] = 0x0101, bytearray(("\n".join(lines) + "\n").encode())
    struct.pack_into("<I", recs[0][2], 8, 1)
elif mode == "xxe":
    definition()[2] = bytearray(("<?xml version='1.0'?><!DOCTYPE domain [<!ENTITY x SYSTEM "
        "'file:///etc/passwd'>]><domain type='kvm'><name>&x;</name></domain>").encode())
elif mode == "nic":
    r = definition()
    xml = r[2].decode()
    nic = ("<metadata><kapsel:domain xmlns:kapsel='https://kapsel.example/xmlns/domain/1'>"
           "<kapsel:interface index='0' socket='/tmp/victim.sock' peer='/tmp/peer.sock'/>"
           "</kapsel:domain></metadata>")
    if "<metadata>" in xml:
        sys.exit("forge nic: the definition already has metadata")
    r[2] = bytearray(xml.replace("</uuid>", "</uuid>" + nic, 1).encode())
elif mode in ("mandatory", "optional"):
    recs.insert(3, [0x0777, 1 if mode == "mandatory" else 0, bytearray(b"future")])
    struct.pack_into("<Q", recs[-1][2], 0, len(recs) - 1)
elif mode == "pvmmu":
    for r in recs:
        if r[0] == 0x020b:  # the first PV MMU mapping's frame: the page tables
            struct.pack_into("<Q", r[2], 16, 0x10000)
            break
elif mode == "vcpu":
    for r in recs:
        if r[0] == 0x0201:  # sregs: cr0 after 8 segments (8*24) and 2 dtables (2*16)
            off = 8 * 24 + 2 * 16
            cr0 = struct.unpack_from("<Q", r[2], off)[0]
            struct.pack_into("<Q", r[2], off, cr0 & ~(1 << 31))
state = build(recs)
open(os.path.join(d, "state.bin"), "wb").write(state)
m = parse(open(os.path.join(d, "manifest"), "rb").read())
if mode == "format1":
    struct.pack_into("<I", m[0][2], 8, 1)
for r in m:
    if r[0] == 0x10 and r[2][:9] == b"state.bin":
        struct.pack_into("<QI", r[2], 32, len(state), crc32c(state))
open(os.path.join(d, "manifest"), "wb").write(build(m))
EOF
}

# flatten IMAGE OUT: the virtual disk IMAGE shows (a raw file, or an overlay
# read through its chain of bases), written raw to OUT; reimplements the
# overlay format independently of Kapsel's code.
flatten() {
	python3 - "$1" "$2" <<'EOF'
import struct, sys
def read(path):
    data = open(path, "rb").read()
    if data[:8] != b"KAPSOVL1":
        return bytearray(data)
    version, block, size, bm_off, bm_len, data_off, path_len = struct.unpack_from("<IIQQQQI", data, 8)
    base = read(data[96:96 + path_len].decode())  # version 2 header
    assert len(base) == size, "base size"
    out = bytearray(base)
    bitmap = data[bm_off:bm_off + bm_len]
    for b in range(len(bitmap) * 8):
        if bitmap[b // 8] >> (b % 8) & 1:
            start, end = b * block, min((b + 1) * block, size)
            chunk = data[data_off + start:data_off + end]
            out[start:end] = chunk + bytes(end - start - len(chunk))
    return out
open(sys.argv[2], "wb").write(read(sys.argv[1]))
EOF
}

# The overlay a running/restored VM writes to: the newest IMAGE@*.kovl.
newest_overlay() { ls -t "$1"@*.kovl 2>/dev/null | head -1; }

# proxy LISTEN_PORT TARGET_PORT MODE OFFSET: forward one TCP connection,
# misbehaving: "cut" closes both sides once OFFSET bytes went to the
# target, "garble" inverts the byte at OFFSET, "cut-reply" closes as soon as
# the target answers.  Runs in the background; PROXY is its pid.
proxy() {
	python3 - "$@" <<'EOF' &
import socket, sys, select
listen_port, target_port, mode, offset = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", listen_port)); ls.listen(1)
src, _ = ls.accept()
dst = socket.create_connection(("127.0.0.1", target_port))
sent = 0
# drop-running: pass everything until the hand-over, then drop the
# destination's last answer (RUNNING).  After the bulk of the stream the
# destination's first answer is PREPARED, the source's next bytes are
# RELEASED, and what the destination sends after that is RUNNING.
bulk = prepared = released = False
try:
    while True:
        r, _, _ = select.select([src, dst], [], [], 30)
        if not r:
            break
        if dst in r:
            data = dst.recv(65536)
            if not data or mode == "cut-reply" or released:
                break
            prepared = prepared or bulk
            src.sendall(data)
        if src in r:
            data = bytearray(src.recv(65536))
            if not data:
                break
            bulk = bulk or sent > (1 << 20)
            released = released or (mode == "drop-running" and prepared)
            if mode == "cut" and sent + len(data) >= offset:
                dst.sendall(data[:offset - sent])
                break
            if mode == "garble" and sent <= offset < sent + len(data):
                data[offset - sent] ^= 0xff
            dst.sendall(data)
            sent += len(data)
except OSError:
    pass
src.close(); dst.close()
EOF
	PROXY=$!
	# Python starts slowly under nested emulation: a migrate that came
	# before the proxy listened would be refused, and the destination
	# would wait for a stream until its timeout.
	wait_listening "$1"
}

# device_list DIR: the devices a saved state holds, one "INDEX TYPE (NAME)
# ports/doorbell/sectors" line each, without what changes while the guest
# runs (event channel bindings, exit counts).
device_list() {
	"$KAPSEL" inspect "$1" >"$TMP/inspect" 2>&1 || { cat "$TMP/inspect"; fail "inspect $1"; }
	sed -n -E '/^  [0-9]+ [a-z0-9-]+ +\(/{s/ event channel [0-9]+//; s/, [0-9]+ exits$//; s/ +/ /g; s/^ //; p}' \
		"$TMP/inspect"
}

# wait_for_any_tick FILE: until the guest printed a tick line (at most 20 s).
wait_for_any_tick() {
	local i
	for i in $(seq 200); do
		grep -q "^tick " "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	fail "the guest never printed a tick (see $1)"
}

# wait_for_ticks_after FILE N: until the guest printed N ticks past the
# first one in FILE (a restored guest starts wherever its save was, which
# under nested emulation may be well past the tick that asked for it).
wait_for_ticks_after() {
	wait_for_any_tick "$1"
	local first
	first=$(awk '$1 == "tick" { print $2; exit }' "$1")
	wait_for_tick "$1" $((first + $2))
}

# ---- cases ---------------------------------------------------------------------

CASE=$1
case "$1" in
state-save-restore)
	# Save and stop at tick ~40, restore: the guest goes on from the next
	# tick with the same checksum chain and sees a new generation.
	make_saved "$TMP/save" 150
	restore "$TMP/save"
	expect_status 0
	expect_in "$OUT2" "new generation 1 name"
	expect_in "$OUT2" "memory ok"
	expect_in "$OUT2" "counter done 150"
	saved_at=$(last_tick "$OUT1")
	first_restored=$(awk '$1 == "tick" { print $2; exit }' "$OUT2")
	[ "$first_restored" -eq $((saved_at + 1)) ] ||
		fail "restored guest started at tick $first_restored, the save was at $saved_at"
	check_ticks 1 150 "$OUT1" "$OUT2" || fail "tick sequence"
	grep -q " gen 0$" "$OUT2" && fail "restored guest still prints generation 0"
	# The state can be restored again (the directory is not consumed).
	restore "$TMP/save"
	expect_status 0
	check_ticks 1 150 "$OUT1" "$OUT2" || fail "second restore"
	;;
state-format1)
	# A state saved by Kapsel 1 (format 1, the definition as text) still
	# restores, for one version: the guest goes on where it stopped.
	make_saved "$TMP/save" 100
	forge_state "$TMP/save" format1
	"$KAPSEL" inspect --records "$TMP/save" >"$TMP/inspect" 2>&1 || { cat "$TMP/inspect"; fail "inspect"; }
	expect_in "$TMP/inspect" "format 1"
	expect_in "$TMP/inspect" "kernel=$COUNTER"
	restore "$TMP/save"
	expect_status 0
	expect_in "$OUT2" "counter done 100"
	check_ticks 1 100 "$OUT1" "$OUT2" || fail "tick sequence after a format-1 restore"
	;;
state-save-continue)
	# Save without stopping: the VM runs on unharmed; the saved state
	# restores to the point of the save.
	save_on_signal "$TMP/save" "" --cmdline "ticks=100 interval_ms=$TICK_MS"
	expect_status 0
	expect_in "$OUT1" "counter done 100"
	check_ticks 1 100 "$OUT1" || fail "the VM that was saved lost ticks"
	expect_not_in "$OUT1" "new generation"
	restore "$TMP/save"
	expect_status 0
	at=$(awk '/^memory ok/ { print $NF; exit }' "$OUT2")
	awk -v at="$at" '$1 == "tick" && $2 <= at' "$OUT1" >"$TMP/before"
	check_ticks 1 100 "$TMP/before" "$OUT2" || fail "restored sequence"
	;;
state-save-stale-temp)
	# A save that crashed left its half-written DIR.new behind: the next
	# save into DIR removes it first (unlinkat, rmdir), which the save
	# thread's sandbox must allow, and succeeds.
	mkdir "$TMP/save.new"
	head -c 4096 /dev/zero >"$TMP/save.new/memory.img"
	save_on_signal "$TMP/save" "" --cmdline "ticks=60 interval_ms=$TICK_MS"
	expect_status 0
	expect_in "$OUT1" "counter done 60"
	[ ! -e "$TMP/save.new" ] || fail "the stale $TMP/save.new is still there"
	restore "$TMP/save"
	expect_status 0
	;;
state-disk-pv | state-disk-ata)
	bus=pv
	[ "$1" = state-disk-ata ] && bus=ata
	truncate -s 1M "$TMP/disk.img"
	RESTORE_DISK=0=$TMP/disk.img
	make_saved "$TMP/save" 120 --disk "$TMP/disk.img,bus=$bus"
	expect_in "$OUT1" "counter: disk of 2048 sectors via $bus"
	# inspect calls the saved disk device what the device calls itself
	# (it used to say block-pv for blk-pv).
	device=blk-pv
	[ "$bus" = ata ] && device=ata-disk
	"$KAPSEL" inspect "$TMP/save" >"$TMP/inspect" 2>&1 || { cat "$TMP/inspect"; fail "inspect"; }
	grep -qE "^  [0-9]+ $device " "$TMP/inspect" || { cat "$TMP/inspect"; fail "inspect does not list a $device device"; }
	# The guest wrote one record per tick up to the save.  The last one may
	# still be in flight: an ATA PIO write half moved through the data
	# register lives in the device state, not on the image.
	saved_at=$(last_tick "$OUT1")
	awk -v last=$((saved_at - 1)) '$1 == "tick" && $2 <= last' "$OUT1" >"$TMP/before"
	DISK_TAIL_OK=1 CHECK_DISK=$TMP/disk.img check_ticks 1 $((saved_at - 1)) "$TMP/before" ||
		fail "disk at the save point"
	restore "$TMP/save"
	expect_status 0
	expect_in "$OUT2" "counter done 120"
	CHECK_DISK=$TMP/disk.img check_ticks 1 120 "$OUT1" "$OUT2" || fail "disk after restore"
	;;
state-inspect)
	make_saved "$TMP/save" 100
	"$KAPSEL" inspect --records "$TMP/save" >"$TMP/inspect" 2>&1 || { cat "$TMP/inspect"; fail "inspect"; }
	for text in "state is valid" "vm.info" "rip 0x" "cr3 0x10000" "tsc " "xcr0" \
		"uart16550" "event channels:" "memory 64 MiB" "<kernel>$COUNTER</kernel>" \
		"vm.definition" "<domain type='kvm'>"; do
		expect_in "$TMP/inspect" "$text"
	done
	# rip lies inside the guest image (the ELF's text starts at 1 MiB).
	rip=$(awk '$1 == "rip" { print $2; exit }' "$TMP/inspect")
	[ $((rip)) -ge $((0x100000)) ] || fail "saved rip $rip is not in the guest"
	# A damaged state: inspect says so and exits 1.
	flip "$TMP/save/state.bin" 100
	STATUS=0
	"$KAPSEL" inspect "$TMP/save" >"$TMP/inspect" 2>&1 || STATUS=$?
	expect_status 1
	expect_in "$TMP/inspect" "state.bin is corrupt"
	;;
state-hostile)
	make_saved "$TMP/good" 100
	cp -a "$TMP/good" "$TMP/bad"
	reset() { rm -rf "$TMP/bad"; cp -a "$TMP/good" "$TMP/bad"; }

	truncate -s 1M "$TMP/bad/memory.img"
	expect_refused "$TMP/bad" "memory.img is 1048576 bytes but the manifest says 67108864"

	reset
	# A flipped byte in a data page of memory: found while loading.
	off=$(python3 -c "
import os
fd = os.open('$TMP/bad/memory.img', os.O_RDONLY)
print(os.lseek(fd, 0x100000, os.SEEK_DATA) + 123)")
	flip "$TMP/bad/memory.img" "$off"
	expect_refused "$TMP/bad" "memory.img is corrupt"

	reset
	flip "$TMP/bad/state.bin" 500
	expect_refused "$TMP/bad" "state.bin is corrupt"

	reset
	truncate -s 3000 "$TMP/bad/state.bin"
	expect_refused "$TMP/bad" "state.bin is 3000 bytes but the manifest says"

	reset
	forge_state "$TMP/bad" version
	expect_refused "$TMP/bad" "format version 3, but this Kapsel reads versions 1 to 2"

	# The definition is domain XML, parsed with the same hardening as
	# --xml: no DTD, so no entity reads a host file.
	reset
	forge_state "$TMP/bad" xxe
	expect_refused "$TMP/bad" "has a <!DOCTYPE> or <!ENTITY>; domain XML needs none"
	expect_not_in "$ERR2" "root:"

	# A network interface in the definition: its endpoints are host
	# resources a state never chooses.
	reset
	forge_state "$TMP/bad" nic
	expect_refused "$TMP/bad" "network interface"

	reset
	forge_state "$TMP/bad" mandatory
	expect_refused "$TMP/bad" "type 0x777, which this Kapsel does not know and which is marked mandatory"

	reset
	forge_state "$TMP/bad" vcpu
	expect_refused "$TMP/bad" "not in 64-bit paged mode"

	reset
	rm "$TMP/bad/manifest"
	expect_refused "$TMP/bad" "has no manifest"

	# Files of two different saves do not mix.
	make_saved "$TMP/other" 100
	reset
	cp "$TMP/other/state.bin" "$TMP/bad/state.bin"
	# (not just "state.bin": every refusal of that file names it)
	expect_refused "$TMP/bad" "from another save"

	# An unknown optional record is skipped: the state still restores.
	reset
	forge_state "$TMP/bad" optional
	restore "$TMP/bad"
	expect_status 0
	expect_in "$OUT2" "counter done 100"
	;;
state-pv-mmu-forged)
	# A saved PV MMU mapping is checked like MMU_UPDATE: one pointed (with
	# valid checksums) at the hypervisor's page tables is refused.
	dir=$TMP/mmu
	save_when "$TMP/out1" "$TMP/err1" "$dir" "^tick 2 " --kernel "$GUESTS/mmu.elf" --cmdline "persist"
	expect_in "$TMP/err1" "saved VM"
	forge_state "$dir" pvmmu
	STATUS=0
	timeout --kill-after=5 60 "$KAPSEL" restore --no-console-input --no-control \
		--kernel "$GUESTS/mmu.elf" "$dir" >"$TMP/out2" 2>"$TMP/err2" </dev/null || STATUS=$?
	expect_status 125
	expect_in "$TMP/err2" "a saved PV MMU mapping of 0x8000000000 to 0x10000 in address space 1 is refused"
	[ ! -s "$TMP/out2" ] || { cat "$TMP/out2"; fail "the guest ran from a forged state"; }
	;;
state-missing-disk)
	truncate -s 1M "$TMP/disk.img"
	RESTORE_DISK=0=$TMP/disk.img
	make_saved "$TMP/save" 100 --disk "$TMP/disk.img"
	mv "$TMP/disk.img" "$TMP/moved.img"
	expect_refused "$TMP/save" "disk 0: image '$TMP/disk.img' is missing"
	truncate -s 2M "$TMP/disk.img"
	expect_refused "$TMP/save" "is 2097152 bytes but was 1048576 when the VM was saved"
	;;
state-control-save)
	# Through the control socket: save and continue, then save and stop.
	name=state-ctl-$$
	timeout --kill-after=5 60 "$KAPSEL" run --no-console-input --kernel "$COUNTER" \
		--name "$name" --cmdline "ticks=300 interval_ms=$TICK_MS" >"$TMP/out1" 2>"$TMP/err1" </dev/null &
	PID=$!
	wait_for_tick "$TMP/out1" 20
	"$KAPSEL" save "$name" "$TMP/first" >"$TMP/save1" 2>&1 || { cat "$TMP/save1"; fail "save"; }
	expect_in "$TMP/save1" "saved VM '$name' to $TMP/first"
	# The first save was taken by the time it returned; the second comes
	# 20 ticks after that, however long the first took (it is slow under
	# nested emulation).
	t1=$(awk '$1 == "tick" { n = $2 } END { print n + 0 }' "$TMP/out1")
	[ "$t1" -le 250 ] || fail "the first save returned only at tick $t1 of 300"
	wait_for_tick "$TMP/out1" $((t1 + 20))
	"$KAPSEL" save --stop "$name" "$TMP/second" >"$TMP/save2" 2>&1 || { cat "$TMP/save2"; fail "save --stop"; }
	STATUS=0
	wait "$PID" || STATUS=$?
	expect_status 0
	expect_not_in "$TMP/out1" "counter done"
	# Stopping after a save is what was asked for: no warning about it.
	expect_not_in "$TMP/err1" "stopped by request"
	# A save to a path that cannot be written fails cleanly; the VM is gone
	# now, so saving it again reports that.
	STATUS=0
	"$KAPSEL" save "$name" "$TMP/third" >"$TMP/save3" 2>&1 || STATUS=$?
	expect_status 1
	expect_in "$TMP/save3" "kapsel: no VM named '$name' is running"
	[ ! -e "$TMP/third" ] || fail "a save of a VM that is gone left $TMP/third"
	# Both states restore: the first goes back to the earlier point.
	restore "$TMP/first"
	expect_status 0
	at=$(awk '/^memory ok/ { print $NF; exit }' "$OUT2")
	[ "$at" -le "$t1" ] || fail "the first save was taken at tick $at, after tick $t1 (when it returned)"
	awk -v at="$at" '$1 == "tick" && $2 <= at' "$TMP/out1" >"$TMP/before"
	check_ticks 1 300 "$TMP/before" "$OUT2" || fail "restore of the first save"
	restore "$TMP/second"
	expect_status 0
	check_ticks 1 300 "$TMP/out1" "$OUT2" || fail "restore of the second save"
	;;
state-snapshot-disk)
	# Two snapshots of a VM with a PV disk; the VM runs on to the end on
	# overlays.  Each snapshot restores (twice: a roll back is repeatable)
	# and continues from its point with a disk whose history is exactly
	# the guest's; the frozen images never change.
	truncate -s 1M "$TMP/disk.img"
	RESTORE_DISK=0=$TMP/disk.img
	name=state-snap-$$
	timeout --kill-after=5 60 "$KAPSEL" run --no-console-input --kernel "$COUNTER" \
		--name "$name" --disk "$TMP/disk.img" --cmdline "ticks=200 interval_ms=$TICK_MS" \
		>"$TMP/out1" 2>"$TMP/err1" </dev/null &
	PID=$!
	wait_for_tick "$TMP/out1" 30
	"$KAPSEL" snapshot "$name" "$TMP/s1" >"$TMP/snap1" 2>&1 || { cat "$TMP/snap1"; fail "snapshot 1"; }
	wait_for_tick "$TMP/out1" 80
	"$KAPSEL" snapshot "$name" "$TMP/s2" >"$TMP/snap2" 2>&1 || { cat "$TMP/snap2"; fail "snapshot 2"; }
	STATUS=0
	wait "$PID" || STATUS=$?
	expect_status 0
	expect_in "$TMP/out1" "counter done 200"
	[ ! -w "$TMP/disk.img" ] || [ "$(id -u)" = 0 ] || fail "the frozen image is still writable"
	[ "$(stat -c %a "$TMP/disk.img")" = 444 ] || fail "the frozen image is not mode 444"
	top=$(newest_overlay "$TMP/disk.img")
	flatten "$top" "$TMP/flat"
	CHECK_DISK=$TMP/flat check_ticks 1 200 "$TMP/out1" || fail "the running VM's disk"
	sha_base=$(sha256sum <"$TMP/disk.img")
	# snapshot_disk SNAP: RESTORE_DISK for its frozen image (s2's is an
	# overlay: the VM ran on one since s1; the operator says so).
	snapshot_disk() {
		local line
		line=$("$KAPSEL" inspect "$TMP/$1" | grep '^disk 0:')
		RESTORE_DISK="0=$(echo "$line" | awk '{ sub(",", "", $3); print $3 }')"
		case "$line" in *", overlay"*) RESTORE_DISK="$RESTORE_DISK,format=overlay" ;; esac
	}
	for snap in s1 s2 s1; do
		snapshot_disk "$snap"
		restore "$TMP/$snap"
		expect_status 0
		expect_in "$OUT2" "counter done 200"
		at=$(awk '/^memory ok/ { print $NF; exit }' "$OUT2")
		awk -v at="$at" '$1 == "tick" && $2 <= at' "$TMP/out1" >"$TMP/before"
		flatten "$(newest_overlay "$TMP/disk.img")" "$TMP/flat"
		CHECK_DISK=$TMP/flat check_ticks 1 200 "$TMP/before" "$OUT2" || fail "restore of $snap"
		# The frozen image of the snapshot holds exactly the ticks up to it.
		frozen=$("$KAPSEL" inspect "$TMP/$snap" | awk '/^disk 0:/ { sub(",", "", $3); print $3 }')
		[ -n "$frozen" ] || fail "inspect of $snap names no frozen image for disk 0"
		rm -f "$TMP/frozen" # never check the previous round's file
		flatten "$frozen" "$TMP/frozen" || fail "cannot read the frozen image of $snap"
		awk -v at="$at" '$1 == "tick" && $2 < at' "$TMP/out1" >"$TMP/upto"
		DISK_TAIL_OK=1 CHECK_DISK=$TMP/frozen check_ticks 1 $((at - 1)) "$TMP/upto" ||
			fail "frozen image of $snap"
	done
	[ "$(sha256sum <"$TMP/disk.img")" = "$sha_base" ] || fail "the first frozen image changed"
	# A snapshot whose frozen image is gone is refused.
	frozen=$("$KAPSEL" inspect "$TMP/s2" | awk '/^disk 0:/ { sub(",", "", $3); print $3 }')
	snapshot_disk s2
	mv "$frozen" "$TMP/gone.kovl"
	expect_refused "$TMP/s2" "is missing"
	;;
state-lazy-resave)
	# A restore maps memory.img and starts the guest at once, checking
	# the file in the background (memory_check.c).  Saving the running
	# VM into the very directory it was restored from replaces memory.img
	# (new file, old one unlinked) under the mapping: the guest reads its
	# late pattern, first touched after that, intact; the new save
	# restores in turn with all its memory.
	save_on_signal "$TMP/save" --save-stop \
		--cmdline "ticks=150 interval_ms=$TICK_MS late_pattern_mb=8"
	expect_status 0
	expect_in "$OUT1" "counter: late pattern of 8 MiB"
	OUT_LAZY=$TMP/out-lazy ERR_LAZY=$TMP/err-lazy
	: >"$OUT_LAZY"
	timeout --kill-after=5 90 "$KAPSEL" restore -v --no-console-input --no-control \
		--kernel "$COUNTER" --save-on-signal "$TMP/save" "$TMP/save" \
		>"$OUT_LAZY" 2>"$ERR_LAZY" </dev/null &
	PID=$!
	wait_for_ticks_after "$OUT_LAZY" 10
	old_inode=$(stat -c %i "$TMP/save/memory.img")
	kill -HUP "$PID"
	for i in $(seq 300); do grep -q "saved VM" "$ERR_LAZY" && break; sleep 0.1; done
	expect_in "$ERR_LAZY" "saved VM"
	[ "$(stat -c %i "$TMP/save/memory.img")" != "$old_inode" ] ||
		fail "the save wrote memory.img in place, under the restored VM's mapping"
	# Where the file system lets us, the old file's pages leave the page
	# cache: the guest's late reads then come from the unlinked file.
	sync; echo 1 2>/dev/null >/proc/sys/vm/drop_caches || true
	STATUS=0
	wait "$PID" || STATUS=$?
	LAST_ERR=$ERR_LAZY
	expect_status 0
	# The background check passed while the guest ran (the lazy path).
	expect_in "$ERR_LAZY" "memory.img checked in"
	expect_in "$OUT_LAZY" "memory ok"
	expect_in "$OUT_LAZY" "late memory ok: 1048576 words"
	expect_in "$OUT_LAZY" "counter done 150"
	check_ticks 1 150 "$OUT1" "$OUT_LAZY" || fail "tick sequence of the lazily restored VM"
	# The save made from the mapped memory restores in turn.
	restore "$TMP/save"
	expect_status 0
	expect_in "$OUT2" "late memory ok: 1048576 words"
	expect_in "$OUT2" "counter done 150"
	at=$(awk '/^memory ok/ { print $NF; exit }' "$OUT2")
	awk -v at="$at" '$1 == "tick" && $2 <= at' "$OUT1" "$OUT_LAZY" >"$TMP/before"
	check_ticks 1 150 "$TMP/before" "$OUT2" || fail "tick sequence after restoring the second save"
	;;
state-lazy-remove)
	# The state directory of a lazily restored VM is removed while it
	# runs: the mapping holds the file, the guest finishes with all its
	# memory (the late pattern is first read after the removal).
	save_on_signal "$TMP/save" --save-stop \
		--cmdline "ticks=120 interval_ms=$TICK_MS late_pattern_mb=8"
	expect_status 0
	OUT2=$TMP/out2 ERR2=$TMP/err2 LAST_ERR=$TMP/err2
	: >"$OUT2"
	timeout --kill-after=5 90 "$KAPSEL" restore --no-console-input --no-control \
		--kernel "$COUNTER" "$TMP/save" >"$OUT2" 2>"$ERR2" </dev/null &
	PID=$!
	wait_for_ticks_after "$OUT2" 5
	rm -rf "$TMP/save"
	sync; echo 1 2>/dev/null >/proc/sys/vm/drop_caches || true
	STATUS=0
	wait "$PID" || STATUS=$?
	expect_status 0
	expect_in "$OUT2" "late memory ok: 1048576 words"
	expect_in "$OUT2" "counter done 120"
	check_ticks 1 120 "$OUT1" "$OUT2" || fail "tick sequence"
	;;
state-lazy-inplace)
	# Another process writes into the memory.img a VM was lazily restored
	# from: the VM's read lease makes that writer wait while Kapsel copies
	# the VM's memory out of the file, so the guest's late pattern, first
	# read after the write, is still the saved one.
	# Enough ticks that the VM still runs when the (slowly starting)
	# writer opens the file.
	save_on_signal "$TMP/save" --save-stop \
		--cmdline "ticks=1500 interval_ms=$TICK_MS late_pattern_mb=8"
	expect_status 0
	late=$(awk '/^counter: late pattern of/ { print $NF; exit }' "$OUT1")
	[ -n "$late" ] || fail "the guest did not say where its late pattern is"
	OUT2=$TMP/out2 ERR2=$TMP/err2 LAST_ERR=$TMP/err2
	: >"$OUT2"
	timeout --kill-after=5 90 "$KAPSEL" restore --no-console-input --no-control \
		--kernel "$COUNTER" "$TMP/save" >"$OUT2" 2>"$ERR2" </dev/null &
	PID=$!
	wait_for_ticks_after "$OUT2" 5
	timeout 60 python3 -c "
import sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(int(sys.argv[2]))
    f.write(b'\xa5' * 65536)
" "$TMP/save/memory.img" $((late + 4 * 1048576)) || fail "could not write into memory.img"
	kill -0 "$PID" 2>/dev/null || fail "the VM ended before the write: the test proves nothing (raise ticks=)"
	STATUS=0
	wait "$PID" || STATUS=$?
	expect_status 0
	expect_in "$ERR2" "memory.img is being opened for writing while VM"
	expect_in "$ERR2" "copied the VM's memory out of the file"
	expect_in "$OUT2" "late memory ok: 1048576 words"
	expect_in "$OUT2" "counter done 1500"
	check_ticks 1 1500 "$OUT1" "$OUT2" || fail "tick sequence"
	;;
state-lazy-damaged)
	# A damaged memory.img, in pages the guest reads only at its end: the
	# guest starts before the background check ends, but the check stops
	# it with an error naming the file, and nothing it did left the VM:
	# no console output, and its disk image is exactly as it was.
	truncate -s 1M "$TMP/disk.img"
	save_on_signal "$TMP/save" --save-stop --disk "$TMP/disk.img" \
		--cmdline "ticks=150 interval_ms=$TICK_MS late_pattern_mb=8"
	expect_status 0
	late=$(awk '/^counter: late pattern of/ { print $NF; exit }' "$OUT1")
	[ -n "$late" ] || fail "the guest did not say where its late pattern is"
	flip "$TMP/save/memory.img" $((late + 4 * 1048576 + 7))
	cp "$TMP/disk.img" "$TMP/disk-before.img"
	RESTORE_DISK=0=$TMP/disk.img
	restore "$TMP/save"
	[ "$STATUS" -eq 125 ] || { cat "$ERR2"; fail "restore of a damaged memory.img exited $STATUS, expected 125"; }
	expect_in "$ERR2" "stopped: $TMP/save/memory.img is corrupt: its CRC32C is"
	expect_in "$ERR2" "none of its disk writes, frames or console output left the VM"
	[ ! -s "$OUT2" ] || { cat "$OUT2"; fail "console output of a guest on damaged memory left the VM"; }
	cmp -s "$TMP/disk.img" "$TMP/disk-before.img" ||
		fail "a guest on damaged memory changed its disk image"
	# --copy-memory reads and checks first: refused before the start.
	restore "$TMP/save" --copy-memory
	[ "$STATUS" -eq 125 ] || { cat "$ERR2"; fail "--copy-memory restore of a damaged memory.img exited $STATUS"; }
	expect_in "$ERR2" "memory.img is corrupt"
	expect_in "$ERR2" "the VM was not started"
	[ ! -s "$OUT2" ] || fail "the guest ran from a damaged memory.img with --copy-memory"
	;;
state-clone)
	# Three clones of one saved VM with a disk: each continues from the
	# save with its own name, a new generation, its own unique id and its
	# own disk overlay; the saved disk stays as it was.
	truncate -s 1M "$TMP/disk.img"
	RESTORE_DISK=0=$TMP/disk.img
	make_saved "$TMP/save" 120 --disk "$TMP/disk.img"
	sha_base=$(sha256sum <"$TMP/disk.img")
	mkdir "$TMP/consoles"
	STATUS=0
	timeout --kill-after=5 60 "$KAPSEL" clone --kernel "$COUNTER" --disk "0=$TMP/disk.img" --count 3 --prefix cl$$ --console-dir "$TMP/consoles" \
		"$TMP/save" >"$TMP/clone.out" 2>"$TMP/clone.err" </dev/null || STATUS=$?
	[ "$STATUS" -eq 0 ] || { cat "$TMP/clone.err"; fail "clone exited $STATUS"; }
	at=$(last_tick "$OUT1")
	for i in 1 2 3; do
		log=$TMP/consoles/cl$$-$i.log
		expect_in "$log" "new generation 1 name cl$$-$i id"
		expect_in "$log" "counter done 120"
		check_ticks 1 120 "$OUT1" "$log" || fail "clone $i ticks"
		overlay=$(ls "$TMP"/disk.img@cl$$-$i-*.kovl)
		flatten "$overlay" "$TMP/flat"
		CHECK_DISK=$TMP/flat check_ticks 1 120 "$OUT1" "$log" || fail "clone $i disk"
	done
	ids=$(cat "$TMP"/consoles/*.log | awk '/^new generation/ { print $NF }' | sort -u | wc -l)
	[ "$ids" -eq 3 ] || fail "the clones derived $ids distinct ids, expected 3"
	[ "$(sha256sum <"$TMP/disk.img")" = "$sha_base" ] || fail "a clone wrote the saved disk"
	# The original can still be restored after its clones ran.
	restore "$TMP/save"
	expect_status 0
	check_ticks 1 120 "$OUT1" "$OUT2" || fail "restore after clones"
	;;
state-migrate)
	# Live migration over loopback with a PV disk: the guest's sequence
	# continues on the destination, no tick lost or repeated, on screen and
	# on the disk; the source ends with status 0.
	truncate -s 1M "$TMP/disk.img"
	RESTORE_DISK=0=$TMP/disk.img
	make_psk "$TMP/mig.psk"
	port=$((20000 + $$ % 20000))
	timeout --kill-after=5 60 "$KAPSEL" run --no-console-input --no-control \
		--kernel "$COUNTER" --disk "$TMP/disk.img" \
		--incoming "tcp:127.0.0.1:$port,psk=$TMP/mig.psk" >"$TMP/dst.out" 2>"$TMP/dst.err" </dev/null &
	DST=$!
	name=state-mig-$$
	timeout --kill-after=5 60 "$KAPSEL" run --no-console-input --kernel "$COUNTER" --name "$name" \
		--disk "$TMP/disk.img" --cmdline "ticks=600 interval_ms=$((TICK_MS * 2))" \
		>"$TMP/src.out" 2>"$TMP/src.err" </dev/null &
	SRC=$!
	wait_for_tick "$TMP/src.out" 40
	"$KAPSEL" migrate --psk "$TMP/mig.psk" "$name" "tcp:127.0.0.1:$port" >"$TMP/mig" 2>&1 || { cat "$TMP/mig" "$TMP/dst.err"; fail "migrate"; }
	cat "$TMP/mig"
	expect_in "$TMP/mig" "migrated VM '$name'"
	STATUS=0; wait "$SRC" || STATUS=$?; expect_status 0
	STATUS=0; wait "$DST" || STATUS=$?; expect_status 0
	expect_not_in "$TMP/src.out" "counter done"
	expect_not_in "$TMP/src.err" "stopped by request"
	expect_in "$TMP/dst.out" "new generation 1"
	expect_in "$TMP/dst.out" "counter done 600"
	CHECK_DISK=$TMP/disk.img check_ticks 1 600 "$TMP/src.out" "$TMP/dst.out" || fail "migrated sequence"
	;;
state-device-order)
	# A freshly created, a migrated and a restored VM have the same devices
	# at the same indexes (console, UART, disk, entropy): the saved state
	# and the guest's device table name devices by index.  (No NIC: network
	# devices refuse to be saved, so a VM with one cannot be saved or
	# migrated yet.)
	truncate -s 1M "$TMP/disk.img"
	make_psk "$TMP/mig.psk"
	port=$((20000 + $$ % 20000))
	fresh=state-order-$$ moved=state-order-mig-$$ back=state-order-res-$$
	timeout --kill-after=5 60 "$KAPSEL" run --no-console-input --kernel "$COUNTER" --name "$fresh" \
		--disk "$TMP/disk.img" --rng --cmdline "ticks=100000 interval_ms=$TICK_MS" \
		>"$TMP/src.out" 2>"$TMP/src.err" </dev/null &
	SRC=$!
	wait_for_tick "$TMP/src.out" 20
	"$KAPSEL" save "$fresh" "$TMP/fresh" >"$TMP/save" 2>&1 || { cat "$TMP/save"; fail "save of the fresh VM"; }
	# The destination names its host files (kernel, disk); the devices
	# come from the source's definition.
	timeout --kill-after=5 60 "$KAPSEL" run --no-console-input --kernel "$COUNTER" --name "$moved" \
		--disk "$TMP/disk.img" --rng --incoming "tcp:127.0.0.1:$port,psk=$TMP/mig.psk" \
		>"$TMP/dst.out" 2>"$TMP/dst.err" </dev/null &
	DST=$!
	wait_listening "$port"
	"$KAPSEL" migrate --psk "$TMP/mig.psk" "$fresh" "tcp:127.0.0.1:$port" >"$TMP/mig" 2>&1 ||
		{ cat "$TMP/mig" "$TMP/dst.err"; fail "migrate"; }
	STATUS=0; wait "$SRC" || STATUS=$?; expect_status 0
	wait_for_any_tick "$TMP/dst.out"
	"$KAPSEL" save --stop "$moved" "$TMP/migrated" >"$TMP/save" 2>&1 ||
		{ cat "$TMP/save" "$TMP/dst.err"; fail "save of the migrated VM"; }
	STATUS=0; wait "$DST" || STATUS=$?; expect_status 0
	timeout --kill-after=5 60 "$KAPSEL" restore --no-console-input --kernel "$COUNTER" --name "$back" \
		--disk "0=$TMP/disk.img" "$TMP/fresh" >"$TMP/res.out" 2>"$TMP/res.err" </dev/null &
	RES=$!
	wait_for_any_tick "$TMP/res.out"
	"$KAPSEL" save --stop "$back" "$TMP/restored" >"$TMP/save" 2>&1 ||
		{ cat "$TMP/save" "$TMP/res.err"; fail "save of the restored VM"; }
	STATUS=0; wait "$RES" || STATUS=$?; expect_status 0
	device_list "$TMP/fresh" >"$TMP/dev.fresh"
	device_list "$TMP/migrated" >"$TMP/dev.migrated"
	device_list "$TMP/restored" >"$TMP/dev.restored"
	cat "$TMP/dev.fresh"
	# The fresh VM has the devices asked for, disk before entropy.
	[ "$(wc -l <"$TMP/dev.fresh")" -eq 4 ] || fail "the fresh VM has not 4 devices"
	grep -Eq '^0 .*\(console' "$TMP/dev.fresh" || fail "device 0 is not the PV console"
	grep -Eq '^2 .*\(blk-pv\).* 2048 sectors' "$TMP/dev.fresh" || fail "device 2 is not the disk"
	grep -Eq '^3 .*\(rng' "$TMP/dev.fresh" || fail "device 3 is not the entropy device"
	diff -u "$TMP/dev.fresh" "$TMP/dev.migrated" || fail "the migrated VM's devices differ from the fresh one's"
	diff -u "$TMP/dev.fresh" "$TMP/dev.restored" || fail "the restored VM's devices differ from the fresh one's"
	;;
state-migrate-broken)
	# The stream cut or garbled at random points, or the destination's
	# answer lost: every time the destination refuses to run anything and
	# the source VM goes on unharmed; then a clean migration still works.
	# Over TLS: a garbled byte fails the record's integrity check.
	name=state-migb-$$
	base=$((20000 + $$ % 15000))
	make_psk "$TMP/mig.psk"
	# The source must outlive six refused attempts (about 9 s each under
	# nested emulation, where a tick is 20 ms) and the final migration.
	ticks=3000
	[ "$TICK_MS" -gt 5 ] && ticks=6000
	timeout --kill-after=5 300 "$KAPSEL" run --no-console-input --kernel "$COUNTER" --name "$name" \
		--cmdline "ticks=$ticks interval_ms=$TICK_MS" >"$TMP/src.out" 2>"$TMP/src.err" </dev/null &
	SRC=$!
	wait_for_tick "$TMP/src.out" 10
	attempt=0
	for spec in "cut $((RANDOM * 64))" "cut $((RANDOM % 100))" "cut $((RANDOM * 128))" \
		"garble $((RANDOM * 64))" "garble $((RANDOM % 4000))" "cut-reply 0"; do
		attempt=$((attempt + 1))
		set -- $spec
		dport=$((base + 2 * attempt)) pport=$((base + 2 * attempt + 1))
		timeout --kill-after=5 60 "$KAPSEL" run --no-console-input --no-control \
			--kernel "$COUNTER" --incoming "tcp:127.0.0.1:$dport,psk=$TMP/mig.psk" >"$TMP/dst.out" 2>"$TMP/dst.err" </dev/null &
		DST=$!
		wait_listening "$dport"
		proxy "$pport" "$dport" "$1" "$2"
		before=$(last_tick "$TMP/src.out")
		STATUS=0
		"$KAPSEL" migrate --psk "$TMP/mig.psk" "$name" "tcp:127.0.0.1:$pport" >"$TMP/mig" 2>&1 || STATUS=$?
		[ "$STATUS" -eq 1 ] || { cat "$TMP/mig"; fail "migration through '$spec' exited $STATUS, expected 1"; }
		expect_in "$TMP/mig" "the VM runs on here"
		STATUS=0; wait "$DST" || STATUS=$?
		[ "$STATUS" -eq 125 ] || { cat "$TMP/dst.err"; fail "destination after '$spec' exited $STATUS"; }
		expect_in "$TMP/dst.err" "no VM was started"
		[ ! -s "$TMP/dst.out" ] || fail "the destination ran guest code after '$spec'"
		kill "$PROXY" 2>/dev/null; wait "$PROXY" 2>/dev/null
		kill -0 "$SRC" || fail "the source VM died after '$spec'"
		wait_for_tick "$TMP/src.out" $((before + 5))
		echo "'$spec': refused ($(grep -o 'incoming migration failed: .*' "$TMP/dst.err" | cut -c1-110)...), source went on from tick $before"
	done
	# A good migration after all that.
	dport=$((base + 100))
	timeout --kill-after=5 300 "$KAPSEL" run --no-console-input --no-control \
		--kernel "$COUNTER" --incoming "tcp:127.0.0.1:$dport,psk=$TMP/mig.psk" >"$TMP/dst.out" 2>"$TMP/dst.err" </dev/null &
	DST=$!
	wait_listening "$dport"
	"$KAPSEL" migrate --psk "$TMP/mig.psk" "$name" "tcp:127.0.0.1:$dport" >"$TMP/mig" 2>&1 || { cat "$TMP/mig"; fail "final migrate"; }
	STATUS=0; wait "$SRC" || STATUS=$?; expect_status 0
	STATUS=0; wait "$DST" || STATUS=$?; expect_status 0
	check_ticks 1 "$ticks" "$TMP/src.out" "$TMP/dst.out" || fail "sequence across failed migrations"
	;;
state-migrate-lost-answer)
	# The destination's RUNNING is lost after the hand-over.  The counter
	# VM has no disk or NIC the source could fail to take back, so nothing
	# says whether the destination runs it: the source must stay paused
	# (never two copies), say so, and the destination runs on.
	name=state-mla-$$
	dport=$((20000 + $$ % 15000)) pport=$((20001 + $$ % 15000))
	make_psk "$TMP/mig.psk"
	# Long enough to outlive the setup under nested emulation; both VMs
	# are ended by hand once the sequence has been seen to go on.
	ticks=3000
	[ "$TICK_MS" -gt 5 ] && ticks=6000
	timeout --kill-after=5 300 "$KAPSEL" run --no-console-input --kernel "$COUNTER" --name "$name" \
		--cmdline "ticks=$ticks interval_ms=$TICK_MS" >"$TMP/src.out" 2>"$TMP/src.err" </dev/null &
	SRC=$!
	wait_for_tick "$TMP/src.out" 10
	timeout --kill-after=5 300 "$KAPSEL" run --no-console-input --no-control \
		--kernel "$COUNTER" --incoming "tcp:127.0.0.1:$dport,psk=$TMP/mig.psk" >"$TMP/dst.out" 2>"$TMP/dst.err" </dev/null &
	DST=$!
	wait_listening "$dport"
	proxy "$pport" "$dport" drop-running 0
	STATUS=0
	"$KAPSEL" migrate --psk "$TMP/mig.psk" "$name" "tcp:127.0.0.1:$pport" >"$TMP/mig" 2>&1 || STATUS=$?
	[ "$STATUS" -eq 1 ] || { cat "$TMP/mig"; fail "migrate exited $STATUS, expected 1"; }
	expect_in "$TMP/mig" "answer after the hand-over was lost"
	expect_in "$TMP/mig" "this copy stays paused; 'kapsel resume $name' if"
	expect_not_in "$TMP/mig" "runs on here"
	"$KAPSEL" info "$name" >"$TMP/info" || fail "info on the paused source"
	expect_in "$TMP/info" "state paused"
	# The destination runs the VM from where the source stopped ...
	stopped=$(last_tick "$TMP/src.out")
	wait_for_tick "$TMP/dst.out" $((stopped + 5))
	# ... while the source does not move.
	[ "$(last_tick "$TMP/src.out")" = "$stopped" ] || fail "the paused source ran on"
	"$KAPSEL" destroy "$name" >/dev/null 2>&1 || fail "destroy of the paused source"
	wait "$SRC" 2>/dev/null || true
	kill "$DST"
	wait "$DST" 2>/dev/null || true
	check_ticks 1 "$(last_tick "$TMP/dst.out")" "$TMP/src.out" "$TMP/dst.out" ||
		fail "sequence across the lost answer"
	;;
state-migrate-netns)
	# Between two network namespaces joined by a veth pair: the VMs see
	# only the addresses inside them.
	ns=kst$$
	ip netns add "${ns}a" 2>/dev/null || { echo "SKIP: cannot create network namespaces"; exit 77; }
	trap 'stop_children; ip netns del "${ns}a" 2>/dev/null; ip netns del "${ns}b" 2>/dev/null; rm -rf "$TMP"' EXIT
	ip netns add "${ns}b"
	ip link add "${ns}x" netns "${ns}a" type veth peer name "${ns}y" netns "${ns}b"
	ip -n "${ns}a" addr add 10.213.77.1/24 dev "${ns}x"
	ip -n "${ns}b" addr add 10.213.77.2/24 dev "${ns}y"
	ip -n "${ns}a" link set "${ns}x" up
	ip -n "${ns}b" link set "${ns}y" up
	ip -n "${ns}a" link set lo up
	ip -n "${ns}b" link set lo up
	truncate -s 1M "$TMP/disk.img"
	RESTORE_DISK=0=$TMP/disk.img
	make_psk "$TMP/mig.psk"
	ip netns exec "${ns}b" timeout --kill-after=5 60 "$KAPSEL" run --no-console-input --no-control \
		--kernel "$COUNTER" --disk "$TMP/disk.img" --incoming "tcp:10.213.77.2:4777,psk=$TMP/mig.psk" >"$TMP/dst.out" 2>"$TMP/dst.err" </dev/null &
	DST=$!
	name=state-migns-$$
	ip netns exec "${ns}a" timeout --kill-after=5 60 "$KAPSEL" run --no-console-input \
		--kernel "$COUNTER" --name "$name" --disk "$TMP/disk.img" \
		--cmdline "ticks=200 interval_ms=$TICK_MS" >"$TMP/src.out" 2>"$TMP/src.err" </dev/null &
	SRC=$!
	wait_for_tick "$TMP/src.out" 40
	ip netns exec "${ns}a" "$KAPSEL" migrate --psk "$TMP/mig.psk" "$name" tcp:10.213.77.2:4777 >"$TMP/mig" 2>&1 ||
		{ cat "$TMP/mig" "$TMP/dst.err"; fail "migrate across namespaces"; }
	cat "$TMP/mig"
	STATUS=0; wait "$SRC" || STATUS=$?; expect_status 0
	STATUS=0; wait "$DST" || STATUS=$?; expect_status 0
	CHECK_DISK=$TMP/disk.img check_ticks 1 200 "$TMP/src.out" "$TMP/dst.out" || fail "sequence"
	;;
state-migrate-auth)
	# Only a peer with the same key gets the VM: a wrong key, a plain-TCP
	# source and a missing choice are refused, the destination starts
	# nothing and the source runs on; loose key files are refused; then
	# an explicitly insecure migration works.
	name=state-miga-$$
	base=$((20000 + $$ % 15000))
	make_psk "$TMP/a.psk"
	make_psk "$TMP/b.psk"
	STATUS=0
	"$KAPSEL" run --no-console-input --no-control --incoming "tcp:127.0.0.1:$base" \
		>"$TMP/dst.out" 2>"$TMP/dst.err" </dev/null || STATUS=$?
	[ "$STATUS" -ne 0 ] || fail "--incoming without psk= or insecure was accepted"
	expect_in "$TMP/dst.err" "psk=FILE"
	expect_in "$TMP/dst.err" "insecure"
	cp "$TMP/a.psk" "$TMP/open.psk"; chmod 644 "$TMP/open.psk"
	STATUS=0
	"$KAPSEL" run --no-console-input --no-control --incoming "tcp:127.0.0.1:$base,psk=$TMP/open.psk" \
		>"$TMP/dst.out" 2>"$TMP/dst.err" </dev/null || STATUS=$?
	[ "$STATUS" -ne 0 ] || fail "a world-readable key file was accepted"
	expect_in "$TMP/dst.err" "chmod 600"
	timeout --kill-after=5 120 "$KAPSEL" run --no-console-input --kernel "$COUNTER" --name "$name" \
		--cmdline "ticks=3000 interval_ms=10" >"$TMP/src.out" 2>"$TMP/src.err" </dev/null &
	SRC=$!
	wait_for_tick "$TMP/src.out" 10
	STATUS=0
	"$KAPSEL" migrate "$name" "tcp:127.0.0.1:$base" >"$TMP/mig" 2>&1 || STATUS=$?
	[ "$STATUS" -eq 2 ] || fail "migrate without --psk or --insecure exited $STATUS, expected 2"
	expect_in "$TMP/mig" "--psk FILE"
	STATUS=0
	"$KAPSEL" migrate --psk "$TMP/open.psk" "$name" "tcp:127.0.0.1:$base" >"$TMP/mig" 2>&1 || STATUS=$?
	[ "$STATUS" -eq 1 ] || fail "migrate with a world-readable key exited $STATUS, expected 1"
	expect_in "$TMP/mig" "chmod 600"
	attempt=0
	for source in "--psk $TMP/b.psk" "--insecure"; do
		attempt=$((attempt + 1))
		dport=$((base + attempt))
		timeout --kill-after=5 60 "$KAPSEL" run --no-console-input --no-control \
			--incoming "tcp:127.0.0.1:$dport,psk=$TMP/a.psk" >"$TMP/dst.out" 2>"$TMP/dst.err" </dev/null &
		DST=$!
		wait_listening "$dport"
		before=$(last_tick "$TMP/src.out")
		STATUS=0
		# shellcheck disable=SC2086 # $source is two words or one
		"$KAPSEL" migrate $source "$name" "tcp:127.0.0.1:$dport" >"$TMP/mig" 2>&1 || STATUS=$?
		[ "$STATUS" -eq 1 ] || { cat "$TMP/mig"; fail "migrate $source exited $STATUS, expected 1"; }
		expect_in "$TMP/mig" "the VM runs on here"
		STATUS=0; wait "$DST" || STATUS=$?
		[ "$STATUS" -eq 125 ] || { cat "$TMP/dst.err"; fail "destination after '$source' exited $STATUS"; }
		expect_in "$TMP/dst.err" "no VM was started"
		[ ! -s "$TMP/dst.out" ] || fail "the destination ran guest code after '$source'"
		kill -0 "$SRC" || fail "the source VM died after '$source'"
		wait_for_tick "$TMP/src.out" $((before + 5))
		echo "'$source': $(grep -o 'incoming migration failed: .*' "$TMP/dst.err" | cut -c1-200)"
		echo "  source: $(cut -c1-200 "$TMP/mig")"
		[ "$attempt" -eq 1 ] && expect_in "$TMP/dst.err" "pre-shared key"
	done
	expect_in "$TMP/dst.err" "does not speak TLS"
	# Plain TCP when both sides say so.
	dport=$((base + 10))
	timeout --kill-after=5 60 "$KAPSEL" run --no-console-input --no-control --kernel "$COUNTER" \
		--incoming "tcp:127.0.0.1:$dport,insecure" >"$TMP/dst.out" 2>"$TMP/dst.err" </dev/null &
	DST=$!
	wait_listening "$dport"
	expect_in "$TMP/dst.err" "INSECURE"
	"$KAPSEL" migrate --insecure "$name" "tcp:127.0.0.1:$dport" >"$TMP/mig" 2>&1 ||
		{ cat "$TMP/mig" "$TMP/dst.err"; fail "insecure migrate"; }
	STATUS=0; wait "$SRC" || STATUS=$?; expect_status 0
	STATUS=0; wait "$DST" || STATUS=$?; expect_status 0
	check_ticks 1 3000 "$TMP/src.out" "$TMP/dst.out" || fail "sequence across refused migrations"
	;;
state-migrate-stalled)
	# A destination that accepts and says nothing: the migration waits off
	# the control thread, so info, stats and pause answer meanwhile, a
	# second migrate and a resume are refused, and when the peer goes the
	# VM runs on.
	name=state-migs-$$
	port=$((20000 + $$ % 20000))
	make_psk "$TMP/mig.psk"
	python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4)
conns = [s.accept()[0]]
time.sleep(60)' "$port" &
	SILENT=$!
	wait_listening "$port"
	timeout --kill-after=5 120 "$KAPSEL" run --no-console-input --kernel "$COUNTER" --name "$name" \
		--cmdline "ticks=3000 interval_ms=5" >"$TMP/src.out" 2>"$TMP/src.err" </dev/null &
	SRC=$!
	wait_for_tick "$TMP/src.out" 10
	"$KAPSEL" migrate --psk "$TMP/mig.psk" "$name" "tcp:127.0.0.1:$port" >"$TMP/mig" 2>&1 &
	MIG=$!
	sleep 1
	kill -0 "$MIG" 2>/dev/null || { cat "$TMP/mig"; fail "migrate to a silent peer ended at once"; }
	start=$(date +%s%N)
	timeout 5 "$KAPSEL" info "$name" >"$TMP/info" 2>&1 || { cat "$TMP/info"; fail "info did not answer during a stalled migration"; }
	timeout 5 "$KAPSEL" stats "$name" >"$TMP/stats" 2>&1 || { cat "$TMP/stats"; fail "stats did not answer during a stalled migration"; }
	timeout 5 "$KAPSEL" pause "$name" >"$TMP/pause" 2>&1 || { cat "$TMP/pause"; fail "pause did not answer during a stalled migration"; }
	elapsed_ms=$((($(date +%s%N) - start) / 1000000))
	echo "info, stats and pause answered in $elapsed_ms ms while the migration waited"
	timeout 5 "$KAPSEL" info "$name" >"$TMP/info" 2>&1 || fail "info after pause"
	expect_in "$TMP/info" "paused"
	STATUS=0
	timeout 5 "$KAPSEL" migrate --psk "$TMP/mig.psk" "$name" "tcp:127.0.0.1:$port" >"$TMP/mig2" 2>&1 || STATUS=$?
	[ "$STATUS" -eq 1 ] || { cat "$TMP/mig2"; fail "a second migrate exited $STATUS, expected 1"; }
	expect_in "$TMP/mig2" "already in progress"
	STATUS=0
	timeout 5 "$KAPSEL" resume "$name" >"$TMP/resume" 2>&1 || STATUS=$?
	[ "$STATUS" -ne 0 ] || fail "resume was accepted while the migration holds the VM"
	expect_in "$TMP/resume" "in progress"
	# The silent peer goes: the handshake fails, the VM stays (paused as
	# asked) and resumes on request.
	kill "$SILENT"; wait "$SILENT" 2>/dev/null
	STATUS=0; wait "$MIG" || STATUS=$?
	[ "$STATUS" -eq 1 ] || { cat "$TMP/mig"; fail "the stalled migrate exited $STATUS, expected 1"; }
	expect_in "$TMP/mig" "the VM runs on here"
	cat "$TMP/mig"
	"$KAPSEL" resume "$name" >/dev/null || fail "resume after the failed migration"
	before=$(last_tick "$TMP/src.out")
	wait_for_tick "$TMP/src.out" $((before + 5))
	"$KAPSEL" destroy "$name" >/dev/null 2>&1 || true
	wait "$SRC" 2>/dev/null || true
	;;
state-progress)
	# save and snapshot show progress on stderr when asked (--progress),
	# and nothing when stderr is not a terminal (by default); the VM
	# reports it through the 'progress' control verb.
	name=state-prog-$$
	timeout --kill-after=5 60 "$KAPSEL" run --no-console-input --kernel "$COUNTER" --memory 128M \
		--name "$name" --cmdline "ticks=3000 interval_ms=$TICK_MS" >"$TMP/out1" 2>"$TMP/err1" </dev/null &
	PID=$!
	wait_for_tick "$TMP/out1" 10
	"$KAPSEL" control "$name" progress >"$TMP/prog0" || fail "progress verb"
	expect_in "$TMP/prog0" "operation none"
	"$KAPSEL" save --no-live --progress "$name" "$TMP/forced" >"$TMP/save1" 2>"$TMP/save1.err" ||
		{ cat "$TMP/save1" "$TMP/save1.err"; fail "save --progress"; }
	cat "$TMP/save1.err"
	expect_in "$TMP/save1" "saved VM '$name' to $TMP/forced"
	# The final line: the whole 128 MiB walked, then done.
	grep -Eq "^save: 128\.0 MiB of 128\.0 MiB \(100%\), .* written, .*/s, .* s, done$" \
		"$TMP/save1.err" || fail "no final progress line for the forced save"
	expect_not_in "$TMP/save1" "save: " # progress goes to stderr only
	"$KAPSEL" control "$name" progress >"$TMP/prog1"
	expect_in "$TMP/prog1" "operation save"
	expect_in "$TMP/prog1" "state done"
	expect_in "$TMP/prog1" "total_bytes 134217728"
	expect_in "$TMP/prog1" "scanned_bytes 134217728"
	# A live save (the default when the VM goes on) counts its rounds.
	"$KAPSEL" save --progress "$name" "$TMP/live" >"$TMP/save1" 2>"$TMP/save1.err" ||
		{ cat "$TMP/save1" "$TMP/save1.err"; fail "live save --progress"; }
	grep -Eq "^save: [0-9]+ rounds?, 128\.0 MiB of 128\.0 MiB \(100%\), .* written, .*/s, .* s, done$" \
		"$TMP/save1.err" || { cat "$TMP/save1.err"; fail "no final progress line for the live save"; }
	"$KAPSEL" control "$name" progress >"$TMP/prog1"
	expect_in "$TMP/prog1" "max_rounds 30"
	# stderr is a file here: no progress without --progress.
	"$KAPSEL" save "$name" "$TMP/quiet" >"$TMP/save2" 2>"$TMP/save2.err" || fail "save"
	[ ! -s "$TMP/save2.err" ] || { cat "$TMP/save2.err"; fail "progress drawn on a non-terminal stderr"; }
	"$KAPSEL" snapshot --progress "$name" "$TMP/snap" >"$TMP/snap1" 2>"$TMP/snap1.err" || fail "snapshot"
	expect_in "$TMP/snap1.err" "snapshot: "
	expect_in "$TMP/snap1.err" ", done"
	"$KAPSEL" control "$name" progress >"$TMP/prog2"
	expect_in "$TMP/prog2" "sequence 4"
	"$KAPSEL" save --progress --no-progress "$name" "$TMP/quiet2" >"$TMP/save3" 2>"$TMP/save3.err" || fail "save"
	[ ! -s "$TMP/save3.err" ] || fail "--no-progress drew progress"
	# On a terminal (script(1) gives it one) by default: one line redrawn
	# with a carriage return, ended by a newline.
	script -qefc "$KAPSEL save $name $TMP/tty" "$TMP/typescript" >/dev/null </dev/null ||
		{ cat "$TMP/typescript"; fail "save on a terminal"; }
	grep -aq $'\r'"save: .*128\.0 MiB of 128\.0 MiB (100%).*done"$'\033\\[K' "$TMP/typescript" ||
		{ cat -A "$TMP/typescript"; fail "no progress line on a terminal"; }
	"$KAPSEL" destroy "$name" >/dev/null
	wait "$PID" 2>/dev/null || true
	;;
state-live-save)
	# A live save of a guest that keeps dirtying memory (churn): the VM
	# goes on unharmed, the vCPU-stopped time is reported, and the state
	# restores to a memory image where every page matches its stamp (a
	# page the pre-copy missed, or took at another time than its stamp,
	# fails the guest's check).  Then a live save with --stop.  Bad
	# options are refused by the command line and by the VM.
	name=state-live-$$
	timeout --kill-after=5 90 "$KAPSEL" run --no-console-input --kernel "$COUNTER" --name "$name" \
		--cmdline "ticks=400 interval_ms=$TICK_MS churn_mb=8 churn_mbps=8" \
		>"$TMP/out1" 2>"$TMP/err1" </dev/null &
	PID=$!
	wait_for_tick "$TMP/out1" 20
	STATUS=0
	"$KAPSEL" save --no-live --max-rounds 3 "$name" "$TMP/x" >"$TMP/bad" 2>&1 || STATUS=$?
	expect_status 2
	expect_in "$TMP/bad" "leave them out with --no-live"
	STATUS=0
	"$KAPSEL" save --max-downtime 0 "$name" "$TMP/x" >"$TMP/bad" 2>&1 || STATUS=$?
	expect_status 2
	expect_in "$TMP/bad" "use a whole number from 1 to 60000"
	"$KAPSEL" control "$name" save dir=$TMP/x max_rounds=0 >"$TMP/bad" 2>&1 && fail "max_rounds=0 accepted"
	expect_in "$TMP/bad" "save: max_rounds=0 is out of range; use 1 to 1000"
	"$KAPSEL" control "$name" save dir=$TMP/x colour=red >"$TMP/bad" 2>&1 && fail "an unknown key accepted"
	expect_in "$TMP/bad" "colour"
	[ ! -e "$TMP/x" ] || fail "a refused save wrote $TMP/x"
	"$KAPSEL" save --live --max-downtime 5 "$name" "$TMP/first" >"$TMP/save1" 2>&1 ||
		{ cat "$TMP/save1"; fail "live save"; }
	cat "$TMP/save1"
	expect_in "$TMP/save1" "saved VM '$name' to $TMP/first"
	grep -Eq "; live, [0-9]+ rounds, [0-9]+ MiB written, [0-9]+ pages while stopped; vCPU stopped [0-9.]+ ms, total [0-9.]+ ms$" \
		"$TMP/save1" || fail "the live save's line lacks rounds or the vCPU-stopped time"
	t1=$(last_tick "$TMP/out1")
	wait_for_tick "$TMP/out1" $((t1 + 10))
	"$KAPSEL" save --live --stop "$name" "$TMP/second" >"$TMP/save2" 2>&1 ||
		{ cat "$TMP/save2"; fail "live save --stop"; }
	expect_in "$TMP/save2" "; live, "
	expect_in "$TMP/save2" "; VM stopped"
	STATUS=0
	wait "$PID" || STATUS=$?
	expect_status 0
	expect_not_in "$TMP/out1" "counter done"
	"$KAPSEL" inspect "$TMP/first" >"$TMP/inspect" 2>&1 || { cat "$TMP/inspect"; fail "inspect of the live save"; }
	expect_in "$TMP/inspect" "state is valid"
	grep -Eq "^save: live, [0-9]+ pre-copy rounds, .* vCPU stopped [0-9.]+ ms$" "$TMP/inspect" ||
		{ cat "$TMP/inspect"; fail "inspect does not show the live save's vCPU-stopped time"; }
	# Each state restores; its memory (churn region included) checks out.
	restore "$TMP/first"
	expect_status 0
	expect_in "$OUT2" "churn ok"
	expect_in "$OUT2" "counter done 400"
	at=$(awk '/^memory ok/ { print $NF; exit }' "$OUT2")
	[ "$at" -le "$t1" ] || fail "the first save was taken at tick $at, after tick $t1 (when it returned)"
	awk -v at="$at" '$1 == "tick" && $2 <= at' "$TMP/out1" >"$TMP/before"
	check_ticks 1 400 "$TMP/before" "$OUT2" || fail "restore of the live save"
	restore "$TMP/second"
	expect_status 0
	expect_in "$OUT2" "churn ok"
	check_ticks 1 400 "$TMP/out1" "$OUT2" || fail "restore of the live save --stop"
	;;
state-live-save-disk)
	# A live save --stop of a guest writing its PV disk and dirtying
	# memory: the disk as the VM left it and the saved memory are of the
	# same moment (every tick's disk record up to the save, none after),
	# and the restored VM goes on writing it without a gap.  Then a live
	# snapshot: its frozen image holds exactly the ticks before its
	# memory's point.
	truncate -s 1M "$TMP/disk.img"
	RESTORE_DISK=0=$TMP/disk.img
	name=state-live-disk-$$
	timeout --kill-after=5 90 "$KAPSEL" run --no-console-input --kernel "$COUNTER" --name "$name" \
		--disk "$TMP/disk.img" --cmdline "ticks=300 interval_ms=$TICK_MS churn_mb=4 churn_mbps=8" \
		>"$TMP/out1" 2>"$TMP/err1" </dev/null &
	PID=$!
	wait_for_tick "$TMP/out1" 30
	"$KAPSEL" snapshot "$name" "$TMP/snap" >"$TMP/snap1" 2>&1 || { cat "$TMP/snap1"; fail "live snapshot"; }
	expect_in "$TMP/snap1" "; live, "
	wait_for_tick "$TMP/out1" 60
	"$KAPSEL" save --live --stop "$name" "$TMP/save" >"$TMP/save1" 2>&1 ||
		{ cat "$TMP/save1"; fail "live save --stop"; }
	expect_in "$TMP/save1" "; live, "
	STATUS=0
	wait "$PID" || STATUS=$?
	expect_status 0
	# The VM ran on an overlay since the snapshot: the restore names it.
	top=$(newest_overlay "$TMP/disk.img")
	[ -n "$top" ] || fail "the snapshot made no overlay"
	saved_at=$(last_tick "$TMP/out1")
	flatten "$top" "$TMP/flat"
	# The last tick's record may still be in flight at the stop (printed,
	# not yet written): the restored guest writes it.
	awk -v last=$((saved_at - 1)) '$1 == "tick" && $2 <= last' "$TMP/out1" >"$TMP/before"
	DISK_TAIL_OK=1 CHECK_DISK=$TMP/flat check_ticks 1 $((saved_at - 1)) "$TMP/before" || fail "disk at the live save"
	expect_zero_sector "$TMP/flat" $((saved_at + 1))
	RESTORE_DISK="0=$top,format=overlay"
	restore "$TMP/save"
	expect_status 0
	expect_in "$OUT2" "churn ok"
	expect_in "$OUT2" "counter done 300"
	flatten "$top" "$TMP/flat"
	CHECK_DISK=$TMP/flat check_ticks 1 300 "$TMP/out1" "$OUT2" || fail "disk after the restore"
	# The snapshot's frozen image: the ticks before the snapshot's point.
	RESTORE_DISK=0=$TMP/disk.img
	restore "$TMP/snap"
	expect_status 0
	expect_in "$OUT2" "churn ok"
	at=$(awk '/^memory ok/ { print $NF; exit }' "$OUT2")
	awk -v at="$at" '$1 == "tick" && $2 < at' "$TMP/out1" >"$TMP/upto"
	DISK_TAIL_OK=1 CHECK_DISK=$TMP/disk.img check_ticks 1 $((at - 1)) "$TMP/upto" ||
		fail "the live snapshot's frozen image"
	;;
state-diff-snapshot)
	# Dirty-only snapshots: a tracked live snapshot, then two diffs of a
	# guest with a PV disk that keeps dirtying a little memory.  The diffs
	# hold far fewer pages than the full one; inspect shows and checks the
	# chain; each restores by layering (memory, churn region and disk
	# agree; the guest reads its disk back and finds it as it was at the
	# snapshot).  merge makes one full state with the disk's overlay chain
	# flattened into one overlay inside it, which restores the same with
	# nothing but --kernel, without changing a byte of its inputs; a raw
	# copy is the disk of the snapshot.  A diff whose parent went missing,
	# a diff written elsewhere than next to its parent, a clone of a diff,
	# a merge without the frozen image named, and --diff without --live
	# are refused.
	truncate -s 1M "$TMP/disk.img"
	mkdir "$TMP/chain" "$TMP/elsewhere"
	name=state-diff-$$
	timeout --kill-after=5 90 "$KAPSEL" run --no-console-input --kernel "$COUNTER" --name "$name" \
		--disk "$TMP/disk.img" --cmdline "ticks=400 interval_ms=$TICK_MS churn_mb=2 churn_mbps=2 disk_check=1" \
		>"$TMP/out1" 2>"$TMP/err1" </dev/null &
	PID=$!
	wait_for_tick "$TMP/out1" 20
	STATUS=0
	"$KAPSEL" snapshot --diff "$name" "$TMP/chain/s1" >"$TMP/snap" 2>&1 || STATUS=$?
	expect_status 1
	expect_in "$TMP/snap" "needs a parent: first take a live snapshot or save with tracking"
	STATUS=0
	"$KAPSEL" snapshot --no-live --track "$name" "$TMP/chain/s0" >"$TMP/snap" 2>&1 || STATUS=$?
	expect_status 2
	"$KAPSEL" snapshot --track "$name" "$TMP/chain/s0" >"$TMP/snap0" 2>&1 || { cat "$TMP/snap0"; fail "snapshot --track"; }
	wait_for_tick "$TMP/out1" $(($(last_tick "$TMP/out1") + 15))
	STATUS=0
	"$KAPSEL" snapshot --diff "$name" "$TMP/elsewhere/s1" >"$TMP/snap" 2>&1 || STATUS=$?
	expect_status 1
	expect_in "$TMP/snap" "is written next to its parent"
	"$KAPSEL" snapshot --diff "$name" "$TMP/chain/s1" >"$TMP/snap1" 2>&1 || { cat "$TMP/snap1"; fail "snapshot --diff 1"; }
	cat "$TMP/snap1"
	expect_in "$TMP/snap1" "diff 1 of its chain: "
	wait_for_tick "$TMP/out1" $(($(last_tick "$TMP/out1") + 15))
	"$KAPSEL" snapshot --diff "$name" "$TMP/chain/s2" >"$TMP/snap2" 2>&1 || { cat "$TMP/snap2"; fail "snapshot --diff 2"; }
	expect_in "$TMP/snap2" "diff 2 of its chain: "
	STATUS=0
	wait "$PID" || STATUS=$?
	expect_status 0
	expect_in "$TMP/out1" "counter done 400"
	# Fewer pages: the 4 MiB pattern and the code are in s0 only.
	data0=$(stat -c %b "$TMP/chain/s0/memory.img") data2=$(stat -c %b "$TMP/chain/s2/memory.img")
	[ "$data2" -lt "$data0" ] || fail "the diff's memory.img ($data2 blocks) is not smaller than the full one's ($data0)"
	"$KAPSEL" inspect "$TMP/chain/s2" >"$TMP/inspect" 2>&1 || { cat "$TMP/inspect"; fail "inspect of the diff"; }
	expect_in "$TMP/inspect" "chain: diff 2 over 's1'"
	expect_in "$TMP/inspect" "0 $TMP/chain/s0: full state"
	expect_in "$TMP/inspect" "layered memory checks out (3 layers)"
	expect_in "$TMP/inspect" "state is valid"
	"$KAPSEL" inspect --json "$TMP/chain/s2" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["valid"] and [l["diff"] for l in d["chain"]] == [False, True, True], d.get("chain")' ||
		fail "inspect --json does not show the chain"
	# frozen_of SNAP: RESTORE_DISK for the frozen image of SNAP's disk 0.
	frozen_of() {
		local line
		line=$("$KAPSEL" inspect "$1" | grep '^disk 0:')
		RESTORE_DISK="0=$(echo "$line" | awk '{ sub(",", "", $3); print $3 }')"
		case "$line" in *", overlay"*) RESTORE_DISK="$RESTORE_DISK,format=overlay" ;; esac
	}
	for snap in s2 s1; do
		frozen_of "$TMP/chain/$snap"
		restore "$TMP/chain/$snap"
		expect_status 0
		expect_in "$OUT2" "churn ok"
		expect_in "$OUT2" "disk ok: "
		expect_in "$OUT2" "counter done 400"
		at=$(awk '/^memory ok/ { print $NF; exit }' "$OUT2")
		awk -v at="$at" '$1 == "tick" && $2 <= at' "$TMP/out1" >"$TMP/before"
		flatten "$(newest_overlay "$TMP/disk.img")" "$TMP/flat"
		CHECK_DISK=$TMP/flat check_ticks 1 400 "$TMP/before" "$OUT2" || fail "restore of the diff $snap"
	done
	# Merged into one full state: no chain, and disk 0's chain of frozen
	# overlays one overlay in it.  The state never chooses host files:
	# without the frozen image named, the merge is refused and writes
	# nothing.
	STATUS=0
	"$KAPSEL" merge "$TMP/chain/s2" "$TMP/merged" >"$TMP/merge" 2>&1 || STATUS=$?
	expect_status 1
	expect_in "$TMP/merge" "name it with --disk 0="
	[ ! -e "$TMP/merged" ] && [ ! -e "$TMP/merged.new" ] || fail "a refused merge left a directory"
	frozen_of "$TMP/chain/s2"
	s2_disk=$RESTORE_DISK
	inputs() { { ls "$TMP"/disk.img*; find "$TMP/chain" -type f; } | sort | xargs sha256sum; }
	inputs >"$TMP/inputs.before"
	"$KAPSEL" merge --disk "$s2_disk" "$TMP/chain/s2" "$TMP/merged" >"$TMP/merge" 2>&1 || { cat "$TMP/merge"; fail "merge"; }
	cat "$TMP/merge"
	expect_in "$TMP/merge" "merged 3 layers of $TMP/chain/s2 into $TMP/merged"
	expect_in "$TMP/merge" "flattened into $TMP/merged/disk0.kovl, one overlay over their base"
	expect_in "$TMP/merge" "read back and compared with the chain"
	inputs >"$TMP/inputs.after"
	diff "$TMP/inputs.before" "$TMP/inputs.after" || fail "the merge changed its inputs"
	"$KAPSEL" inspect "$TMP/merged" >"$TMP/inspect" 2>&1 || { cat "$TMP/inspect"; fail "inspect of the merged state"; }
	expect_not_in "$TMP/inspect" "chain:"
	expect_in "$TMP/inspect" "disk 0: disk0.kovl, "
	expect_in "$TMP/inspect" ", overlay, frozen"
	# Restored with the kernel alone: the disk is found inside, and the
	# guest reads it as it was at s2.
	unset RESTORE_DISK
	restore "$TMP/merged"
	expect_status 0
	expect_in "$OUT2" "churn ok"
	expect_in "$OUT2" "disk ok: "
	expect_in "$OUT2" "counter done 400"
	at=$(awk '/^memory ok/ { print $NF; exit }' "$OUT2")
	awk -v at="$at" '$1 == "tick" && $2 <= at' "$TMP/out1" >"$TMP/before"
	restored_overlay=$(newest_overlay "$TMP/merged/disk0.kovl")
	[ -n "$restored_overlay" ] || fail "the restore of the merged state made no overlay next to its disk"
	flatten "$restored_overlay" "$TMP/flat"
	CHECK_DISK=$TMP/flat check_ticks 1 400 "$TMP/before" "$OUT2" || fail "restore of the merged state"
	# A raw copy is the snapshot's disk byte for byte.
	"$KAPSEL" merge --disk-format raw --disk "$s2_disk" "$TMP/chain/s2" "$TMP/merged-raw" \
		>"$TMP/merge" 2>&1 || { cat "$TMP/merge"; fail "merge --disk-format raw"; }
	expect_in "$TMP/merge" "copied into $TMP/merged-raw/disk0.img (raw"
	s2_image=${s2_disk#0=}
	flatten "${s2_image%,format=overlay}" "$TMP/flat-s2"
	cmp "$TMP/flat-s2" "$TMP/merged-raw/disk0.img" || fail "the raw copy is not the snapshot's disk"
	RESTORE_DISK=$s2_disk
	# A clone maps one memory.img: a diff must be merged first.
	STATUS=0
	timeout --kill-after=5 60 "$KAPSEL" clone --kernel "$COUNTER" --disk "$RESTORE_DISK" --count 1 --prefix cl$$ \
		"$TMP/chain/s2" >"$TMP/clone.out" 2>"$TMP/clone.err" </dev/null || STATUS=$?
	[ "$STATUS" -ne 0 ] || fail "a clone of a diff snapshot ran"
	expect_in "$TMP/clone.err" "kapsel merge"
	# Its parent gone, a diff is refused and says which one is missing.
	mv "$TMP/chain/s1" "$TMP/elsewhere/s1"
	expect_refused "$TMP/chain/s2" "is a diff snapshot over '$TMP/chain/s1', which is missing"
	STATUS=0
	"$KAPSEL" inspect "$TMP/chain/s2" >"$TMP/inspect" 2>&1 || STATUS=$?
	expect_status 1
	expect_in "$TMP/inspect" "NOT restorable"
	;;
state-migrate-options)
	# kapsel migrate --max-rounds / --max-downtime: bad values are refused
	# on the command line (status 2) and by the VM; good ones reach the
	# migration, which shows its progress when asked.  The destination is
	# listed as "incoming" while it waits.
	for bad in "--max-rounds 0" "--max-rounds 1001" "--max-rounds x" "--max-downtime 0" \
		"--max-downtime 60001" "--max-downtime-ms 5s"; do
		STATUS=0
		# shellcheck disable=SC2086 # the option and its value are two words
		"$KAPSEL" migrate --insecure $bad some-vm tcp:127.0.0.1:1 >"$TMP/bad" 2>&1 || STATUS=$?
		[ "$STATUS" -eq 2 ] || { cat "$TMP/bad"; fail "migrate $bad exited $STATUS, expected 2"; }
	done
	STATUS=0
	"$KAPSEL" migrate --insecure some-vm tcp:127.0.0.1:1 --max-rounds >"$TMP/bad" 2>&1 || STATUS=$?
	expect_status 2
	expect_in "$TMP/bad" "--max-rounds needs a value"
	"$KAPSEL" migrate --insecure --max-downtime 0 x tcp:127.0.0.1:1 >"$TMP/bad" 2>&1 || true
	expect_in "$TMP/bad" "kapsel: error: --max-downtime '0' is not valid; use a whole number from 1 to 60000"
	"$KAPSEL" migrate --insecure --max-rounds 1001 x tcp:127.0.0.1:1 >"$TMP/bad" 2>&1 || true
	expect_in "$TMP/bad" "kapsel: error: --max-rounds '1001' is not valid; use a whole number from 1 to 1000"
	name=state-migo-$$
	port=$((20000 + $$ % 20000))
	timeout --kill-after=5 90 "$KAPSEL" run --no-console-input --kernel "$COUNTER" --name "$name" \
		--cmdline "ticks=600 interval_ms=$((TICK_MS * 2))" \
		>"$TMP/src.out" 2>"$TMP/src.err" </dev/null &
	SRC=$!
	wait_for_tick "$TMP/src.out" 20
	# The VM checks the limits too (other clients send the verb raw).
	STATUS=0
	"$KAPSEL" control "$name" migrate uri=tcp:127.0.0.1:1 insecure=yes max_rounds=0 >"$TMP/raw" 2>&1 || STATUS=$?
	[ "$STATUS" -eq 1 ] || fail "a raw migrate with max_rounds=0 exited $STATUS"
	expect_in "$TMP/raw" "max_rounds=0 is out of range; use 1 to 1000"
	"$KAPSEL" control "$name" migrate uri=tcp:127.0.0.1:1 insecure=yes max_downtime_ms=70000 >"$TMP/raw" 2>&1 || true
	expect_in "$TMP/raw" "max_downtime_ms=70000 is out of range; use 1 to 60000"
	timeout --kill-after=5 90 "$KAPSEL" run --no-console-input --kernel "$COUNTER" --name "$name" \
		--incoming "tcp:127.0.0.1:$port,insecure" >"$TMP/dst.out" 2>"$TMP/dst.err" </dev/null &
	DST=$!
	wait_listening "$port"
	"$KAPSEL" list >"$TMP/list"
	cat "$TMP/list"
	grep -Eq "^ +[0-9]+  $name +running " "$TMP/list" || fail "the source is not listed as running"
	waiting=$(sed -n -E "s/^ +-  $name +incoming +64M +1 +[0-9]+m[0-9]+s +([0-9]+)$/\1/p" "$TMP/list")
	[ -n "$waiting" ] || fail "the waiting destination is not listed as incoming"
	# its PID is the kapsel under DST's timeout
	[ "$(ps -o ppid= -p "$waiting" | tr -d ' ')" = "$DST" ] ||
		fail "the incoming VM's PID $waiting is not the destination's kapsel"
	"$KAPSEL" migrate --insecure --max-rounds 2 --max-downtime 500 --progress "$name" \
		"tcp:127.0.0.1:$port" >"$TMP/mig" 2>"$TMP/mig.err" || { cat "$TMP/mig" "$TMP/mig.err" "$TMP/dst.err"; fail "migrate"; }
	cat "$TMP/mig" "$TMP/mig.err"
	expect_in "$TMP/mig" "migrated VM '$name'"
	rounds=$(sed -n -E "s/.*: ([0-9]+) rounds, .*/\1/p" "$TMP/mig")
	[ -n "$rounds" ] && [ "$rounds" -le 2 ] || fail "the migration took '$rounds' rounds with --max-rounds 2"
	grep -Eq "^migrate: .*(round [0-9]+/2|after [0-9]+ rounds?|[0-9]+ rounds?)," "$TMP/mig.err" ||
		fail "no migration progress line naming the round limit"
	STATUS=0; wait "$SRC" || STATUS=$?; expect_status 0
	# Arrived: listed once, running, no longer incoming.
	for _ in $(seq 100); do
		[ -S "$KAPSEL_RUNTIME_DIR/$name.sock" ] && break
		sleep 0.05
	done
	"$KAPSEL" list >"$TMP/list2"
	expect_not_in "$TMP/list2" "incoming"
	grep -Eq "^ +[0-9]+  $name +running " "$TMP/list2" || { cat "$TMP/list2"; fail "the migrated VM is not listed"; }
	STATUS=0; wait "$DST" || STATUS=$?; expect_status 0
	expect_in "$TMP/dst.out" "counter done 600"
	;;
state-clone-names)
	# clone --count N without --console-dir: every console line on stdout
	# names its clone, and a clone stopped from outside is named in the
	# messages at the end.
	make_saved "$TMP/save" 400
	timeout --kill-after=5 90 "$KAPSEL" clone --kernel "$COUNTER" --count 2 --prefix cn$$ \
		"$TMP/save" >"$TMP/clone.out" 2>"$TMP/clone.err" </dev/null &
	CLONES=$!
	for _ in $(seq 200); do
		grep -q "^cn$$-2| tick" "$TMP/clone.out" && break
		sleep 0.1
	done
	grep -q "^cn$$-2| tick" "$TMP/clone.out" || { head "$TMP/clone.out"; fail "no console line named cn$$-2"; }
	"$KAPSEL" destroy cn$$-2 >/dev/null || fail "destroy cn$$-2"
	STATUS=0; wait "$CLONES" || STATUS=$?
	expect_status 123 # one clone was stopped from outside
	cat "$TMP/clone.err"
	bad=$(grep -Evc "^cn$$-[12]\| " "$TMP/clone.out" || true)
	[ "$bad" -eq 0 ] || { grep -Ev "^cn$$-[12]\| " "$TMP/clone.out" | head; fail "$bad console lines without a clone's name"; }
	expect_in "$TMP/clone.out" "cn$$-1| counter done 400"
	expect_in "$TMP/clone.out" "cn$$-2| new generation 1 name cn$$-2"
	expect_not_in "$TMP/clone.out" "cn$$-2| counter done"
	sed -n "s/^cn$$-1| //p" "$TMP/clone.out" >"$TMP/one"
	check_ticks 1 400 "$OUT1" "$TMP/one" || fail "clone 1's named lines are not its whole sequence"
	expect_in "$TMP/clone.err" "kapsel: warning: VM 'cn$$-2' stopped by request"
	expect_in "$TMP/clone.err" "kapsel: warning: clone 'cn$$-2' exited with status 123"
	expect_not_in "$TMP/clone.err" "clone 'cn$$-1'"
	;;
*)
	fail "unknown case '$1'"
	;;
esac
echo "PASS: $CASE"
