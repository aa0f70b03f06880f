#!/bin/bash
# Install the Debian packages Kapsel needs to build, test and benchmark (uses sudo when not root).
set -euo pipefail

packages=(
	gcc libc6-dev pkg-config meson ninja-build python3
	liburing-dev libxml2-dev libcunit1-dev libgnutls28-dev libseccomp-dev libcap-ng-dev
	libjansson-dev # the control socket's JSON requests (docs/control.md)
	fio gnuplot-nox
	libvirt-clients libxen-dev
	iproute2 procps
	groff-base man-db # tests/integration/cli.sh renders the man pages
	qemu-system-x86 # the example guests also boot on QEMU (tests/integration/qemu.sh)
)

# Without /dev/kvm, the KVM tests and the demo run in a QEMU VM with nested
# KVM (scripts/nested-kvm.sh), which needs these.
if [ ! -e /dev/kvm ]; then
	packages+=(busybox-static cpio kmod e2fsprogs)
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "install-deps: run as root (no sudo found)" >&2; exit 1; }
	as_root=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
# A mirror hiccup should not fail a fresh machine's setup: try three times.
retry() {
	local attempt
	for attempt in 1 2 3; do
		"$@" && return 0
		echo "install-deps: '$*' failed (attempt $attempt of 3)" >&2
		sleep $((attempt * 5))
	done
	return 1
}
retry "${as_root[@]}" apt-get update -q
retry "${as_root[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}"
