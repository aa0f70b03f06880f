#!/bin/bash
# The main job: build Kapsel, boot the demo guest, then benchmark native vs PV vs emulated disk I/O.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh # sets $build and builds there

# Where this machine offers no /dev/kvm, both steps run in a QEMU VM with
# nested KVM (scripts/nested-kvm.sh).  Everything there is emulated, so the
# benchmark's figures say nothing about speed; it then makes a short run.
in_kvm=()
bench_size=()
if [ ! -e /dev/kvm ]; then
	echo "demo: /dev/kvm is missing; running under scripts/nested-kvm.sh (QEMU TCG)."
	echo "demo: all figures below come from full emulation and do not measure Kapsel."
	in_kvm=(scripts/nested-kvm.sh)
	# QEMU's IDE path there takes minutes (its firmware and each PIO word
	# are emulated twice over); the virtio path and the boot row stay.
	bench_size=(--quick)
	! command -v qemu-system-x86_64 >/dev/null ||
		bench_size+=(--paths native,pv,emulated,qemu-virtio)
fi

echo "== Booting the demo guest"
"${in_kvm[@]}" "$build/hypervisor/kapsel" run --kernel "$build/guest-pv/examples/hello.elf" --memory 64M --no-console-input

echo
echo "== kapsel bench (native vs paravirtualized vs emulated, and QEMU where installed; default disk)"
"${in_kvm[@]}" "$build/hypervisor/kapsel" bench --output-dir "$build/bench" "${bench_size[@]}" "$@"
