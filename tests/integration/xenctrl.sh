#!/bin/bash
# Integration tests: libkapsel-xenctrl, with a xentop-like client built against Xen's real header and against Kapsel's library.
. "$(dirname "$0")/lib.sh"
make_temp_dir
export KAPSEL_RUNTIME_DIR=$TMP/rt
SOURCES=$(cd "$(dirname "$0")/../xenctrl" && pwd)
: "${CC:=cc}"
VMPIDS=()
trap 'for p in "${VMPIDS[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null; done; rm -rf "$TMP"' EXIT

require_xen_header() {
	if [ ! -e /usr/include/xenctrl.h ]; then
		echo "SKIP: /usr/include/xenctrl.h missing (Debian: apt-get install libxen-dev)"
		exit $SKIP
	fi
}

# fake_vm NAME DOMID STATE VCPUS [LINE...]: a stand-in control socket
# (FAKE_VM) whose 'info' says domain DOMID, STATE, VCPUS vCPUs, then LINEs
# (the "vcpu K ..." lines, or a pre-SMP Kapsel's vcpu_* lines).
fake_vm() {
	local name=$1 domid=$2 state=$3 vcpus=$4
	shift 4
	mkdir -p -m 700 "$KAPSEL_RUNTIME_DIR"
	{
		printf 'name %s\nuuid 00112233-4455-6677-8899-aabbccddee%02x\ndomid %s\n' \
			"$name" "$domid" "$domid"
		printf 'pid %s\nstate %s\nuptime_ns 5000000000\nmemory_bytes %s\nvcpus %s\n' \
			$$ "$state" $((32 << 20)) "$vcpus"
		for line in "$@"; do printf '%s\n' "$line"; done
	} >"$TMP/$name.info"
	"$FAKE_VM" "$KAPSEL_RUNTIME_DIR/$name.sock" "$TMP/$name.info" 2>"$TMP/$name.err" &
	VMPIDS+=($!)
	for _ in $(seq 100); do
		[ -S "$KAPSEL_RUNTIME_DIR/$name.sock" ] && return 0
		sleep 0.02
	done
	cat "$TMP/$name.err"
	fail "fake VM $name did not come up"
}

domid_of() {
	"$KAPSEL" info "$1" | awk '$1 == "domid" { print $2 }'
}

# row DOMID: the xentop_once line of that domain.
row() {
	awk -v id="$1" '$1 == id' "$TMP/top"
}

CASE=$1
case "$CASE" in
xenctrl-real-header)
	# The client is plain libxenctrl code: it compiles against Xen's header.
	require_xen_header
	"$CC" -std=gnu11 -Wall -Wextra -Werror -fsyntax-only "$SOURCES/xentop_once.c" 2>"$TMP/cc" ||
		{ cat "$TMP/cc"; fail "xentop_once.c does not compile against /usr/include/xenctrl.h"; }
	;;
xenctrl-layout)
	# Same sizes, offsets, bit-fields and constants as Xen 4.17's header.
	require_xen_header
	"$CC" -Wall -o "$TMP/layout-xen" "$SOURCES/layout.c" || fail "layout.c vs Xen's header"
	"$CC" -Wall -I"$KAPSEL_XENCTRL_INCLUDE" -o "$TMP/layout-kapsel" "$SOURCES/layout.c" ||
		fail "layout.c vs Kapsel's header"
	"$TMP/layout-xen" >"$TMP/xen.txt"
	"$TMP/layout-kapsel" >"$TMP/kapsel.txt"
	diff "$TMP/xen.txt" "$TMP/kapsel.txt" || fail "layouts differ"
	[ "$(wc -l <"$TMP/xen.txt")" -gt 70 ] || fail "layout check printed too little"
	;;
xenctrl-vcpus) # suite: cli
	# max_vcpu_id, nr_online_vcpus and xc_vcpu_getinfo per vCPU come from
	# each VM's 'info' lines (no KVM: stand-in control sockets).
	fake_vm one 7 running 1 "vcpu 0 power up blocked no exits 5 cpu_time_ns 1000 host_cpu 1"
	fake_vm three 9 running 3 \
		"vcpu 0 power up blocked yes exits 5 cpu_time_ns 1000 host_cpu 0" \
		"vcpu 1 power up blocked no exits 2 cpu_time_ns 500 host_cpu 1 later_field 3" \
		"vcpu 2 power starting blocked no exits 0 cpu_time_ns 0 host_cpu -1"
	fake_vm idle 11 running 2 \
		"vcpu 0 power up blocked yes exits 9 cpu_time_ns 40 host_cpu 0" \
		"vcpu 1 power down blocked no exits 0 cpu_time_ns 0 host_cpu -1"
	fake_vm stopped 12 paused 1 "vcpu 0 power up blocked no exits 1 cpu_time_ns 10 host_cpu 0"
	# A Kapsel before SMP: no "vcpu K" lines, vCPU 0 from the VM's lines.
	fake_vm old 13 running 1 "cpu_time_ns 77" "vcpu_blocked yes" "vcpu_host_cpu 1"
	"$XENTOP_ONCE" --vcpus 7 >"$TMP/v7" || { cat "$TMP/v7"; fail "--vcpus 7"; }
	diff - "$TMP/v7" <<-EOF || fail "a 1-vCPU VM"
	domain 7: max_vcpu_id 0 nr_online_vcpus 1 running
	vcpu 0: id 0 online 1 blocked 0 running 1 cpu_time yes cpu 1
	vcpu 1: failed: Invalid argument
	EOF
	"$XENTOP_ONCE" --vcpus 9 >"$TMP/v9" || { cat "$TMP/v9"; fail "--vcpus 9"; }
	diff - "$TMP/v9" <<-EOF || fail "a 3-vCPU VM, one starting"
	domain 9: max_vcpu_id 2 nr_online_vcpus 2 running
	vcpu 0: id 0 online 1 blocked 1 running 0 cpu_time yes cpu 0
	vcpu 1: id 1 online 1 blocked 0 running 1 cpu_time yes cpu 1
	vcpu 2: id 2 online 0 blocked 0 running 0 cpu_time no cpu 0
	vcpu 3: failed: Invalid argument
	EOF
	# Blocked only when every online vCPU is; a down one does not count.
	"$XENTOP_ONCE" --vcpus 11 >"$TMP/v11"
	diff - "$TMP/v11" <<-EOF || fail "a VM whose online vCPUs all block"
	domain 11: max_vcpu_id 1 nr_online_vcpus 1 blocked
	vcpu 0: id 0 online 1 blocked 1 running 0 cpu_time yes cpu 0
	vcpu 1: id 1 online 0 blocked 0 running 0 cpu_time no cpu 0
	vcpu 2: failed: Invalid argument
	EOF
	"$XENTOP_ONCE" --vcpus 12 >"$TMP/v12"
	diff - "$TMP/v12" <<-EOF || fail "a paused VM"
	domain 12: max_vcpu_id 0 nr_online_vcpus 1 paused
	vcpu 0: id 0 online 1 blocked 0 running 0 cpu_time yes cpu 0
	vcpu 1: failed: Invalid argument
	EOF
	"$XENTOP_ONCE" --vcpus 13 >"$TMP/v13"
	diff - "$TMP/v13" <<-EOF || fail "a pre-SMP VM"
	domain 13: max_vcpu_id 0 nr_online_vcpus 1 blocked
	vcpu 0: id 0 online 1 blocked 1 running 0 cpu_time yes cpu 1
	vcpu 1: failed: Invalid argument
	EOF
	"$XENTOP_ONCE" --vcpus 999 >"$TMP/out" && fail "--vcpus of a missing domain succeeded"
	expect_in "$TMP/out" "vcpus 999: no such domain"
	# The table: CPU time summed over the vCPUs, VCPUS the online ones.
	"$XENTOP_ONCE" >"$TMP/top" || { cat "$TMP/top"; fail "xentop_once"; }
	expect_in "$TMP/top" "5 domains"
	set -- $(row 9)
	[ "$3" = 1500 ] && [ "$6" = 2 ] || { cat "$TMP/top"; fail "domain 9: CPU $3 ns, $6 vCPUs"; }
	set -- $(row 11)
	[ "$2" = "--b---" ] || { cat "$TMP/top"; fail "domain 11: state $2, expected blocked"; }
	# kapsel list: the vCPU count, UP/COUNT while fewer are up.
	"$KAPSEL" list >"$TMP/list"
	grep -Eq '^ +7  one +running +32M +1 ' "$TMP/list" || { cat "$TMP/list"; fail "list: one"; }
	grep -Eq '^ +9  three +running +32M +2/3 ' "$TMP/list" || { cat "$TMP/list"; fail "list: three"; }
	grep -Eq '^ +13  old +running +32M +1 ' "$TMP/list" || { cat "$TMP/list"; fail "list: old"; }
	;;
xenctrl-xentop)
	require_kvm
	"$XENTOP_ONCE" >"$TMP/top" || fail "xentop_once with no VMs"
	expect_in "$TMP/top" "0 domains"
	start_vm small --memory 16M
	start_vm large --memory 96M
	small=$(domid_of small)
	large=$(domid_of large)
	[ -n "$small" ] && [ -n "$large" ] && [ "$small" != "$large" ] || fail "domain ids '$small' '$large'"
	"$KAPSEL" pause small
	"$XENTOP_ONCE" >"$TMP/top" || { cat "$TMP/top"; fail "xentop_once"; }
	cat "$TMP/top"
	expect_in "$TMP/top" "2 domains"
	expect_not_in "$TMP/top" "mismatch"
	nproc=$(nproc)
	# XENVER_version is Kapsel's own major.minor (docs/xenctrl.md), as
	# 'kapsel version' states it, not a copy of today's number.
	kv=$("$KAPSEL" version | sed -n 's/^kapsel \([0-9]*\.[0-9]*\)\.[0-9]* .*/\1/p')
	[ -n "$kv" ] || fail "no version in 'kapsel version'"
	expect_in "$TMP/top" "hypervisor $kv.0-kapsel, $nproc CPUs"
	# DOMID STATE CPU MEM MAXMEM VCPUS PCPU UUID
	set -- $(row "$small")
	[ "$2" = "----p-" ] || fail "small: state $2, expected paused"
	[ "$4" = $((16 * 1024)) ] && [ "$5" = $((16 * 1024)) ] || fail "small: memory $4/$5 KiB"
	[ "$6" = 1 ] || fail "small: $6 vCPUs"
	# One vCPU: id 0 only, online, not running while paused.
	"$XENTOP_ONCE" --vcpus "$small" >"$TMP/vcpus" || { cat "$TMP/vcpus"; fail "--vcpus $small"; }
	expect_in "$TMP/vcpus" "domain $small: max_vcpu_id 0 nr_online_vcpus 1 paused"
	expect_in "$TMP/vcpus" "vcpu 0: id 0 online 1 blocked 0 running 0 cpu_time yes"
	expect_in "$TMP/vcpus" "vcpu 1: failed: Invalid argument"
	set -- $(row "$large")
	case $2 in --b---|-----r) ;; *) fail "large: state $2, expected blocked or running" ;; esac
	[ "$4" = $((96 * 1024)) ] || fail "large: memory $4 KiB"
	[ "$3" -gt 0 ] || fail "large: no CPU time"
	[ "$7" -lt "$nproc" ] || fail "large: host CPU $7 of $nproc"
	# Control through the library, checked through the CLI.
	"$XENTOP_ONCE" --unpause "$small" | grep -qx "unpause $small: ok" || fail "unpause"
	"$KAPSEL" info small | grep -qx "state running" || fail "unpause did not resume"
	"$XENTOP_ONCE" --unpause "$small" >"$TMP/out" && fail "unpausing a running domain succeeded"
	expect_in "$TMP/out" "unpause $small: failed: Invalid argument"
	"$XENTOP_ONCE" --pause "$large" | grep -qx "pause $large: ok" || fail "pause"
	"$KAPSEL" info large | grep -qx "state paused" || fail "pause did not pause"
	"$XENTOP_ONCE" --pause "$large" | grep -qx "pause $large: ok" || fail "pause twice"
	"$XENTOP_ONCE" --destroy "$large" | grep -qx "destroy $large: ok" || fail "destroy"
	[ -z "$(domid_of large 2>/dev/null)" ] || fail "destroyed domain still there"
	"$XENTOP_ONCE" --shutdown "$small" | grep -qx "shutdown $small: ok" || fail "shutdown"
	for _ in $(seq 100); do kill -0 "${VMPIDS[0]}" 2>/dev/null || break; sleep 0.05; done
	expect_in "$TMP/small.out" "idle: poweroff requested"
	"$XENTOP_ONCE" --pause 999 >"$TMP/out" && fail "pausing a missing domain succeeded"
	expect_in "$TMP/out" "pause 999: failed: No such process"
	"$XENTOP_ONCE" >"$TMP/top"
	expect_in "$TMP/top" "0 domains"
	;;
xenctrl-smp)
	# A VM with 3 vCPUs whose guest brings none up: ids 0 to 2, one online.
	require_kvm
	start_vm smp --vcpus 3
	id=$(domid_of smp)
	"$XENTOP_ONCE" --vcpus "$id" >"$TMP/vcpus" || { cat "$TMP/vcpus"; fail "--vcpus $id"; }
	cat "$TMP/vcpus"
	grep -Eq "^domain $id: max_vcpu_id 2 nr_online_vcpus 1 (blocked|running)\$" "$TMP/vcpus" ||
		fail "domain $id: expected max_vcpu_id 2, 1 vCPU online"
	expect_in "$TMP/vcpus" "vcpu 0: id 0 online 1 "
	expect_in "$TMP/vcpus" "vcpu 1: id 1 online 0 blocked 0 running 0 "
	expect_in "$TMP/vcpus" "vcpu 2: id 2 online 0 blocked 0 running 0 "
	expect_in "$TMP/vcpus" "vcpu 3: failed: Invalid argument"
	# The same through the CLI: info lines, the list column, dumpxml.
	"$KAPSEL" info smp >"$TMP/info"
	expect_in "$TMP/info" "vcpus 3"
	grep -Eq '^vcpu 0 power up blocked (yes|no) exits [1-9][0-9]* cpu_time_ns [1-9][0-9]* host_cpu [0-9]+$' \
		"$TMP/info" || { cat "$TMP/info"; fail "vcpu 0 line"; }
	for k in 1 2; do
		grep -Eq "^vcpu $k power down blocked no exits 0 cpu_time_ns [0-9]+ host_cpu -?[0-9]+\$" \
			"$TMP/info" || { cat "$TMP/info"; fail "vcpu $k line"; }
	done
	grep -q '^vcpu 3 ' "$TMP/info" && fail "info lists a vCPU 3"
	"$KAPSEL" list >"$TMP/list"
	grep -Eq ' smp +running +64M +1/3 ' "$TMP/list" || { cat "$TMP/list"; fail "list: 1/3 vCPUs"; }
	"$KAPSEL" dumpxml smp >"$TMP/smp.xml"
	expect_in "$TMP/smp.xml" "<vcpu placement='static'>3</vcpu>"
	"$XENTOP_ONCE" --shutdown "$id" | grep -qx "shutdown $id: ok" || fail "shutdown"
	for _ in $(seq 100); do kill -0 "${VMPIDS[0]}" 2>/dev/null || break; sleep 0.05; done
	expect_in "$TMP/smp.out" "idle: poweroff requested"
	;;
*)
	fail "unknown case '$CASE'"
	;;
esac
echo "PASS: $CASE"
