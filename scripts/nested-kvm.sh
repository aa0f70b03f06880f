#!/bin/bash
# Run a command where /dev/kvm exists: here if this machine has it, else inside a QEMU (TCG) VM with nested KVM.
#
#   scripts/nested-kvm.sh CMD [ARGS...]
#
# Some of our build machines are themselves guests whose kernel provides no
# /dev/kvm.  QEMU's TCG emulates AMD SVM, so a small Linux VM under QEMU can
# load kvm-amd and offer /dev/kvm to Kapsel.  The VM sees this machine's
# whole file system at the same paths (virtio-9p), gets fresh tmpfs on /tmp
# and /run (9p cannot hold sockets), and runs CMD in the current directory
# with the current environment.  The exit status is CMD's.
#
# It is slow (TCG emulates every instruction of the VM's kernel and of
# Kapsel's guests): use it to check behaviour, never to measure speed.
#
# Needs: qemu-system-x86, busybox-static, cpio, kmod and a Debian kernel
# package (downloaded with apt-get download, not installed);
# scripts/install-deps.sh installs them on machines without /dev/kvm.
# Environment: KAPSEL_NESTED_CACHE (default /var/cache/kapsel-nested),
# KAPSEL_NESTED_MEMORY (default 6G), KAPSEL_NESTED_TIMEOUT (seconds, default 3000).
set -euo pipefail

if [ $# -eq 0 ]; then
	echo "usage: scripts/nested-kvm.sh CMD [ARGS...]" >&2
	exit 2
fi

if [ -e /dev/kvm ] && [ -z "${KAPSEL_NESTED_FORCE:-}" ]; then
	exec "$@"
fi

cache=${KAPSEL_NESTED_CACHE:-/var/cache/kapsel-nested}
memory=${KAPSEL_NESTED_MEMORY:-6G}
time_limit=${KAPSEL_NESTED_TIMEOUT:-3000}
# Bump when the VM's init changes, so a cached initrd is rebuilt.
initrd_version=6

for tool in qemu-system-x86_64 busybox cpio depmod mkfs.ext4; do
	command -v "$tool" >/dev/null || {
		echo "nested-kvm: '$tool' is missing; run scripts/install-deps.sh" >&2
		exit 125
	}
done

# The kernel and the modules KVM, 9p and the network tests (veth pairs, TAP)
# need, from Debian's kernel package.
prepare_kernel() {
	local meta version deb tree
	mkdir -p "$cache"
	if [ -f "$cache/vmlinuz" ] && [ -f "$cache/initrd-$initrd_version.gz" ]; then
		return 0
	fi
	meta=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	[ -n "$meta" ] || {
		echo "nested-kvm: cannot find Debian's kernel package (apt-get update first)" >&2
		exit 125
	}
	tree=$(mktemp -d "$cache/tree.XXXXXX")
	(cd "$tree" && apt-get download -q "$meta" >/dev/null 2>&1) || {
		echo "nested-kvm: 'apt-get download $meta' failed" >&2
		exit 125
	}
	deb=$(ls "$tree"/*.deb)
	dpkg-deb -x "$deb" "$tree/root"
	version=$(ls "$tree/root/lib/modules")
	depmod -b "$tree/root" "$version"

	local initrd="$tree/initrd" modules="$tree/root/lib/modules/$version"
	mkdir -p "$initrd"/{bin,modules,proc,sys,dev,host}
	cp "$(command -v busybox)" "$initrd/bin/busybox"
	# Every module these need, dependencies first, in load order.
	local wanted=(kernel/drivers/virtio/virtio_pci.ko kernel/net/9p/9pnet_virtio.ko
		kernel/fs/9p/9p.ko kernel/arch/x86/kvm/kvm-amd.ko
		kernel/drivers/block/virtio_blk.ko kernel/crypto/crc32c_generic.ko kernel/fs/ext4/ext4.ko
		kernel/drivers/net/veth.ko kernel/drivers/net/tun.ko)
	local order=() seen=" "
	add_module() {
		local dep
		for dep in $(grep "^$1:" "$modules/modules.dep" | cut -d: -f2); do
			add_module "$dep"
		done
		case "$seen" in *" $1 "*) return ;; esac
		seen="$seen$1 "
		order+=("$1")
	}
	local module
	for module in "${wanted[@]}"; do
		add_module "$module"
	done
	: >"$initrd/modules/order"
	for module in "${order[@]}"; do
		cp "$modules/$module" "$initrd/modules/"
		basename "$module" >>"$initrd/modules/order"
	done
	cat >"$initrd/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
ip link set lo up
for module in $(cat /modules/order); do
	insmod "/modules/$module" || echo "nested-kvm: insmod $module failed"
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose host /host || {
	echo "nested-kvm: cannot mount the host's file system"; poweroff -f; }
job=$(sed -n 's/.*kapsel_job=\([^ ]*\).*/\1/p' /proc/cmdline)
cp "/host$job/run.sh" /run.sh
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/shm /host/dev/pts
mount -t tmpfs shm /host/dev/shm
mount -t devpts pts /host/dev/pts
mount -t tmpfs run /host/run
# /tmp on a real file system: tests open images there with O_DIRECT,
# which this kernel's tmpfs refuses.
# A working folder under the host's /tmp (a CI clone, say) stays visible.
keep=$(sed -n 's/.*kapsel_keep=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$keep" ]; then
	mkdir -p /keep
	mount --bind "/host$keep" /keep
fi
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done
mount -t ext4 /dev/vda /host/tmp || mount -t tmpfs tmp /host/tmp
if [ -n "$keep" ]; then
	mkdir -p "/host$keep"
	mount --bind /keep "/host$keep"
fi
chmod 1777 /host/tmp
cp /run.sh /host/run/kapsel-nested-run.sh
chroot /host /bin/bash /run/kapsel-nested-run.sh
echo $? >"/host$job/status"
sync
poweroff -f
INIT
	chmod +x "$initrd/init"
	(cd "$initrd" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$tree/initrd.gz"
	mv "$tree/root/boot/vmlinuz-$version" "$cache/vmlinuz.new"
	mv "$tree/initrd.gz" "$cache/initrd-$initrd_version.gz"
	mv "$cache/vmlinuz.new" "$cache/vmlinuz"
	rm -rf "$tree"
}
prepare_kernel

# The job folder must be outside /tmp and /run, which the VM replaces.
job=$(mktemp -d "$cache/job.XXXXXX")
trap 'rm -rf "$job"' EXIT
{
	echo "# generated by scripts/nested-kvm.sh"
	export -p | grep -v -E '^declare -x (BASH_|SHLVL|OLDPWD|PWD|TMPDIR)='
	printf 'cd %q || exit 125\n' "$PWD"
	printf 'export KAPSEL_NESTED=1\n'
	printf '%q ' "$@"
	echo
} >"$job/run.sh"

# A scratch disk for the VM's /tmp (sparse; gone with the job folder).
truncate -s 32G "$job/scratch.img"
mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$job/scratch.img"

# A working folder under /tmp is bound back over the VM's new /tmp.
keep=""
case "$PWD/" in /tmp/*) keep=$PWD ;; esac

# Threads for TCG: one per host core.
timeout --kill-after=10 "$time_limit" qemu-system-x86_64 \
	-M q35 -cpu max -smp "$(nproc)" -m "$memory" -accel tcg,thread=multi \
	-nodefaults -no-reboot -display none -serial stdio \
	-kernel "$cache/vmlinuz" -initrd "$cache/initrd-$initrd_version.gz" \
	-append "console=ttyS0 quiet loglevel=1 panic=-1 softlockup_panic=1 kapsel_job=$job${keep:+ kapsel_keep=$keep}" \
	-drive file="$job/scratch.img",if=virtio,format=raw,cache=unsafe \
	-virtfs local,path=/,mount_tag=host,security_model=passthrough,id=host,multidevs=remap \
	</dev/null | sed -u 's/\r$//' || true

if [ ! -f "$job/status" ]; then
	echo "nested-kvm: the VM ended without reporting the command's status" >&2
	exit 125
fi
exit "$(cat "$job/status")"
