#!/bin/bash
# Integration tests: libvirt domain XML in (kapsel run) and out (kapsel dumpxml), checked with libvirt's virt-xml-validate.
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
export KAPSEL_RUNTIME_DIR=$TMP/rt
EXAMPLES=$(cd "$(dirname "$0")/../../examples" && pwd)
VMPIDS=()
trap 'for p in "${VMPIDS[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null; done; rm -rf "$TMP"' EXIT

require_validator() {
	if ! command -v virt-xml-validate >/dev/null; then
		echo "SKIP: virt-xml-validate missing (Debian: apt-get install libvirt-clients)"
		exit $SKIP
	fi
}

# validate FILE: libvirt's own schema check.
validate() {
	virt-xml-validate "$1" domain >"$TMP/validate" 2>&1 ||
		{ cat "$TMP/validate" "$1"; fail "$1 does not validate"; }
}

# start_xml NAME ARGS...: kapsel run ARGS in the background; waits for the
# control socket of NAME and "idle: ready" on the console (in $READY_FILE if
# set, else the VM's standard output).  Sets VMPID.
start_xml() {
	local name=$1
	shift
	"$KAPSEL" run --no-console-input "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" </dev/null &
	VMPID=$!
	VMPIDS+=("$VMPID")
	for _ in $(seq 200); do
		[ -S "$KAPSEL_RUNTIME_DIR/$name.sock" ] &&
			grep -qs "idle: ready" "${READY_FILE:-$TMP/$name.out}" && return 0
		kill -0 "$VMPID" 2>/dev/null || { cat "$TMP/$name.err"; fail "VM $name died at start"; }
		sleep 0.05
	done
	fail "VM $name did not come up"
}

# refused XMLFILE MESSAGE: kapsel run refuses the file with exactly MESSAGE.
refused() {
	run_guest "$TMP/out" "$TMP/err" "$1"
	expect_status 125
	[ "$(head -1 "$TMP/err")" = "kapsel: error: domain XML '$1': $2" ] ||
		{ cat "$TMP/err"; fail "expected: $2"; }
}

# domain BODY: a minimal valid domain around BODY (inside <domain>), name x.
domain() {
	cat <<EOF
<domain type='kvm'>
  <name>x</name>
  <memory unit='MiB'>16</memory>
  <os><type arch='x86_64'>hvm</type><kernel>$GUESTS/idle.elf</kernel></os>
$1
</domain>
EOF
}

case "$1" in
xml-examples-validate)
	require_validator
	count=0
	for f in "$EXAMPLES"/*.xml; do
		validate "$f"
		count=$((count + 1))
	done
	[ "$count" -ge 4 ] || fail "only $count example XML files"
	;;
xml-examples-run)
	# Every example runs; kernels and images come from this build (options
	# override the XML) and the definition read is what dumpxml reports.
	# hello.xml as its own comment and 'kapsel run --help' say, with no -k:
	# its kernel is not installed, this build tree's kapsel runs its own.
	[ -e /usr/local/share/kapsel/guests/hello.elf ] && echo "note: hello.elf is installed; the build tree's is not used"
	run_guest "$TMP/out" "$TMP/err" "$EXAMPLES/hello.xml"
	expect_status 0
	expect_in "$TMP/out" "64 MiB RAM, 2 devices, console pv, name 'hello'"
	[ -e /usr/local/share/kapsel/guests/hello.elf ] ||
		expect_in "$TMP/err" "/usr/local/share/kapsel/guests/hello.elf is not installed; this build tree's kapsel runs $GUESTS/hello.elf"
	truncate -s 4M "$TMP/disk.img"
	for example in idle disk-pv disk-ata; do
		sed "s#/tmp/kapsel-example-disk.img#$TMP/disk.img#" "$EXAMPLES/$example.xml" >"$TMP/$example.xml"
		start_xml "$example" "$TMP/$example.xml" -k "$GUESTS/idle.elf"
		"$KAPSEL" info "$example" >"$TMP/info"
		"$KAPSEL" dumpxml "$example" >"$TMP/dump.xml"
		case $example in
		idle)
			expect_in "$TMP/info" "memory_bytes $((32 << 20))"
			expect_in "$TMP/info" "cmdline tick_ms=100"
			;;
		disk-pv)
			expect_in "$TMP/info" "disk 0 bus=pv readonly=no iops=2000 iops_burst=4000 bps=52428800 bps_burst=0 path=$TMP/disk.img"
			expect_in "$TMP/info" "device 2 blk-pv"
			expect_in "$TMP/dump.xml" "<driver name='qemu' type='raw' cache='none'/>"
			;;
		disk-ata)
			expect_in "$TMP/info" "disk 0 bus=ata readonly=yes"
			expect_in "$TMP/info" "device 1 ata-disk"
			# <console><target type='serial'> only: no PV console.
			expect_not_in "$TMP/info" "console-pv"
			expect_in "$TMP/dump.xml" "<target type='serial' port='0'/>"
			;;
		esac
		"$KAPSEL" shutdown "$example" >/dev/null || fail "shutdown $example"
	done
	;;
xml-dumpxml-validate)
	require_validator
	truncate -s 4M "$TMP/a.img" "$TMP/b.img" "$TMP/c.img"
	start_xml plain --kernel "$GUESTS/idle.elf" --name plain
	start_xml disks --kernel "$GUESTS/idle.elf" --name disks --memory 48M --vcpus 3 \
		--cmdline "tick_ms=50 note=<&'\">" \
		--disk "$TMP/a.img,iops=10,iops_burst=20,bps=4096,bps_burst=8192,poll=25" \
		--disk "$TMP/b.img,bus=ata,readonly,cache=none" --disk "$TMP/c.img,readonly" \
		--net "socket=$TMP/s.sock,peer=$TMP/nobody.sock,pps=100,pps_burst=200" \
		--rng=iops=5,iops_burst=7,bps=1000
	READY_FILE=$TMP/uart-console.txt start_xml uart --kernel "$GUESTS/idle.elf" --name uart \
		--console uart --console-output "$TMP/uart-console.txt"
	for vm in plain disks uart; do
		"$KAPSEL" dumpxml "$vm" >"$TMP/$vm.xml" || fail "dumpxml $vm"
		validate "$TMP/$vm.xml"
	done
	expect_in "$TMP/disks.xml" "<memory unit='KiB'>49152</memory>"
	expect_in "$TMP/disks.xml" "<vcpu placement='static'>3</vcpu>"
	expect_in "$TMP/plain.xml" "<vcpu placement='static'>1</vcpu>"
	expect_in "$TMP/disks.xml" "<kapsel:disk index='0' poll_us='25'/>"
	expect_in "$TMP/disks.xml" "<target dev='hda' bus='ide'/>"
	expect_in "$TMP/disks.xml" "<target dev='xvdb' bus='xen'/>"
	# What libvirt has no element for: Kapsel's namespace, still valid.
	expect_in "$TMP/disks.xml" "<kapsel:interface index='0' socket='$TMP/s.sock' peer='$TMP/nobody.sock' model='pv' pps='100' pps_burst='200'"
	expect_in "$TMP/disks.xml" "<kapsel:rng iops='5' iops_burst='7' bps='1000' bps_burst='0'/>"
	expect_in "$TMP/uart.xml" "<source path='$TMP/uart-console.txt'/>"
	# Round trip: the dumped definitions run, and dump the same again.
	for vm in disks uart; do
		"$KAPSEL" destroy "$vm" >/dev/null
		: >"$TMP/uart-console.txt"
		READY_FILE=$([ "$vm" = uart ] && echo "$TMP/uart-console.txt") start_xml "$vm" "$TMP/$vm.xml"
		"$KAPSEL" dumpxml "$vm" >"$TMP/$vm.again.xml"
		diff "$TMP/$vm.xml" "$TMP/$vm.again.xml" || fail "dumpxml of $vm changed after a round trip"
	done
	# Markup characters survive the trip through XML.
	"$KAPSEL" info disks | grep -qxF "cmdline tick_ms=50 note=<&'\">" || fail "cmdline changed"
	"$KAPSEL" info uart >"$TMP/info"
	expect_not_in "$TMP/info" "console-pv"
	for vm in plain disks uart; do "$KAPSEL" destroy "$vm" >/dev/null; done
	;;
xml-relative-paths)
	# Relative paths are relative to the XML file's folder, not the cwd.
	mkdir -p "$TMP/vm/images" "$TMP/elsewhere"
	cp "$GUESTS/idle.elf" "$TMP/vm/kernel.elf"
	truncate -s 1M "$TMP/vm/images/d.img"
	cat >"$TMP/vm/rel.xml" <<-EOF
	<domain type='kvm'>
	  <name>rel</name>
	  <memory unit='MiB'>16</memory>
	  <os><type>hvm</type><kernel>kernel.elf</kernel></os>
	  <devices>
	    <disk type='file' device='disk'><source file='images/d.img'/><target dev='xvda' bus='xen'/></disk>
	    <console type='file'><source path='console.log'/><target type='xen'/></console>
	  </devices>
	</domain>
	EOF
	cd "$TMP/elsewhere"
	"$KAPSEL" run --no-console-input ../vm/rel.xml >"$TMP/rel.out" 2>"$TMP/rel.err" </dev/null &
	VMPID=$!
	VMPIDS+=("$VMPID")
	for _ in $(seq 100); do grep -qs "idle: ready" "$TMP/vm/console.log" && break; sleep 0.05; done
	"$KAPSEL" info rel >"$TMP/info" || { cat "$TMP/rel.err"; fail "rel is not running"; }
	expect_in "$TMP/info" "kernel ../vm/kernel.elf"
	expect_in "$TMP/info" "path=../vm/images/d.img"
	expect_in "$TMP/vm/console.log" "idle: ready"
	"$KAPSEL" dumpxml rel >"$TMP/rel.dump"
	expect_in "$TMP/rel.dump" "<kernel>$TMP/vm/kernel.elf</kernel>"
	expect_in "$TMP/rel.dump" "<source file='$TMP/vm/images/d.img'/>"
	"$KAPSEL" shutdown rel >/dev/null
	;;
xml-xen-pv)
	# virt-install's Xen PV definition (tests/fixtures), with the problems
	# Kapsel lists fixed as its messages say, runs; what only differs in
	# meaning is a warning.
	FIXTURES=$(cd "$(dirname "$0")/../fixtures" && pwd)
	truncate -s 4M "$TMP/pv.img"
	sed -e "s#<bootloader>.*</bootloader>##" \
		-e "s#machine='xenpv'>linux</type>#&<kernel>$GUESTS/idle.elf</kernel>#" \
		-e "s#1048576#65536#" -e "s#type='qcow2'#type='raw'#" \
		-e "s#/var/lib/libvirt/images/debian12-pv.qcow2#$TMP/pv.img#" \
		-e "/device='cdrom'>/,/<\/disk>/d" -e "/<interface type='bridge'>/,/<\/interface>/d" \
		-e "/<graphics/,/<\/graphics>/d" -e "/<video>/,/<\/video>/d" \
		"$FIXTURES/xen-pv-virt-install.xml" >"$TMP/pv.xml"
	start_xml debian12-pv "$TMP/pv.xml"
	expect_in "$TMP/debian12-pv.err" "/domain type='xen' runs as a Kapsel guest on KVM"
	expect_in "$TMP/debian12-pv.err" "ignoring /domain/devices/memballoon"
	expect_not_in "$TMP/debian12-pv.err" "error"
	[ "$(grep -c "type='xen' runs as" "$TMP/debian12-pv.err")" = 1 ] || fail "the type='xen' warning is not given once"
	"$KAPSEL" info debian12-pv >"$TMP/info"
	expect_in "$TMP/info" "memory_bytes $((64 << 20))"
	expect_in "$TMP/info" "disk 0 bus=pv readonly=no"
	"$KAPSEL" dumpxml debian12-pv >"$TMP/dump.xml"
	expect_in "$TMP/dump.xml" "<domain type='kvm'>"
	"$KAPSEL" shutdown debian12-pv >/dev/null || fail "shutdown"
	;;
xml-refused)
	# Unsupported or contradictory settings: refused, naming the element.
	n=0
	check() {
		n=$((n + 1))
		domain "$1" >"$TMP/t$n.xml"
		refused "$TMP/t$n.xml" "$2"
	}
	check "<vcpu>17</vcpu>" "/domain/vcpu is '17'; Kapsel runs 1 to 16 vCPUs per VM"
	check "<vcpu current='1'>2</vcpu>" \
		"/domain/vcpu current='1' differs from the count 2; Kapsel has no vCPU hot-plug (the guest brings up the vCPUs it wants), remove current= or make it 2"
	check "<currentMemory unit='MiB'>8</currentMemory>" \
		"/domain/currentMemory differs from /domain/memory; Kapsel has no balloon, make them equal"
	check "<cpu mode='host-passthrough'/>" "/domain/cpu is not supported by Kapsel; remove it"
	check "<sysinfo type='smbios'/>" "/domain/sysinfo is not supported by Kapsel; remove it"
	check "<on_poweroff>rename-restart</on_poweroff>" \
		"/domain/on_poweroff 'rename-restart' is not supported; use destroy or restart"
	check "<devices><interface type='network'/></devices>" \
		"/domain/devices/interface type='network' is not supported; use type='ethernet' with <target dev='TAP'/> (a Unix socket link is --net socket=PATH,peer=PATH on the command line)"
	check "<devices><graphics type='vnc'/></devices>" \
		"/domain/devices/graphics is not supported: Kapsel has no display (the console is kapsel's standard output and 'kapsel console NAME'); remove it"
	check "<devices><disk type='block' device='disk'/></devices>" \
		"/domain/devices/disk type='block' is not supported; use type='file'"
	check "<devices><disk type='file' device='cdrom'/></devices>" \
		"/domain/devices/disk device='cdrom' is not supported: Kapsel has only disks; remove it, or attach the image as device='disk' with <readonly/>"
	check "<devices><disk type='file'><source file='/a'/><target dev='sda' bus='scsi'/></disk></devices>" \
		"/domain/devices/disk/target bus='scsi' is not supported; use bus='xen' (PV) or bus='ide' (emulated ATA)"
	check "<devices><disk type='file'><driver type='qcow2'/></disk></devices>" \
		"/domain/devices/disk/driver type='qcow2' is not supported; use raw or kovl (a Kapsel overlay)"
	check "<devices><disk type='file'><source file='/a'/><target dev='xvda'/><iotune><read_iops_sec>5</read_iops_sec></iotune></disk></devices>" \
		"/domain/devices/disk/iotune/read_iops_sec is not supported; use total_iops_sec, total_iops_sec_max, total_bytes_sec, total_bytes_sec_max"
	check "<devices><disk type='file'><source file='/a'/><target dev='xvda'/><iotune><total_iops_sec_max>5</total_iops_sec_max></iotune></disk></devices>" \
		"/domain/devices/disk/iotune: a *_max burst needs its rate (total_iops_sec or total_bytes_sec) too"
	check "<devices><disk type='file'><source file='/a'/><target dev='xvda'/><shareable/></disk></devices>" \
		"/domain/devices/disk/shareable is not supported: Kapsel locks a writable image for one VM; use <readonly/> on every VM that shares it"
	check "<devices><disk type='file'><source file='/a'/><target dev='xvda'/></disk><disk type='file'><source file='/b'/><target dev='xvda'/></disk></devices>" \
		"/domain/devices/disk/target dev='xvda' is used by two disks"
	check "<devices><disk type='file'><source file='/a'/><target dev='hdb' bus='ide'/></disk></devices>" \
		"/domain/devices/disk/target dev='hdb' bus='ide': Kapsel emulates one ATA drive, the primary master; use dev='hda'"
	check "<devices><disk type='file'><target dev='xvda'/></disk></devices>" \
		"/domain/devices/disk needs <source file='...'/>"
	check "<devices><serial type='tcp'/></devices>" \
		"/domain/devices/serial type='tcp' is not supported; use stdio, pty, file or null"
	check "<devices><serial type='file'><source path='/a'/></serial><console type='file'><source path='/b'/></console></devices>" \
		"/domain/devices/console/source path='/b' differs from '/a': Kapsel has one console, give all <serial>/<console> the same file"
	check "<devices><console type='stdio'><target type='virtio'/></console></devices>" \
		"/domain/devices/console/target type='virtio' is not supported; use xen (PV console) or serial"
	sed 's#<os>#<os><initrd>/boot/initrd</initrd>#' "$TMP/t1.xml" | sed 's#<vcpu>17</vcpu>##' >"$TMP/initrd.xml"
	refused "$TMP/initrd.xml" "/domain/os/initrd is not supported: Kapsel boots an ELF kernel directly (use <kernel>)"
	printf "<domain type='qemu'><name>x</name><memory>16384</memory><os><kernel>/k</kernel></os></domain>\n" >"$TMP/qemu.xml"
	refused "$TMP/qemu.xml" "/domain type='qemu' is not supported; use type='kvm' (or 'xen' for a paravirtualized guest)"
	printf "<domain type='kvm'><name>x</name><memory>16384</memory><os><type>hvm</type></os></domain>\n" >"$TMP/nokernel.xml"
	refused "$TMP/nokernel.xml" "/domain/os/kernel is missing; Kapsel boots an ELF kernel"
	printf "<domain type='kvm'><name>x</name>\n<memory>" >"$TMP/broken.xml"
	run_guest "$TMP/out" "$TMP/err" "$TMP/broken.xml"
	expect_status 125
	expect_in "$TMP/err" "domain XML '$TMP/broken.xml': not well-formed XML"
	# Informational elements are ignored with a warning, and the VM runs.
	domain "<title>a title</title><description>text</description><devices><emulator>/usr/bin/qemu</emulator><controller type='usb'/><memballoon model='virtio'/><input type='mouse' bus='ps2'/></devices>" \
		| sed 's#<name>x</name>#<name>informed</name>#' >"$TMP/info.xml"
	start_xml informed "$TMP/info.xml"
	expect_in "$TMP/informed.err" "kapsel: warning: domain XML '$TMP/info.xml': ignoring /domain/title"
	expect_in "$TMP/informed.err" "ignoring /domain/devices/emulator (Kapsel is the emulator)"
	expect_in "$TMP/informed.err" "ignoring /domain/devices/memballoon (Kapsel has no balloon: the guest keeps all of /domain/memory)"
	expect_in "$TMP/informed.err" "ignoring /domain/devices/input (Kapsel has no display; the guest's console is its input)"
	"$KAPSEL" destroy informed >/dev/null
	;;
*)
	fail "unknown case '$1'"
	;;
esac
echo "PASS: $1"
