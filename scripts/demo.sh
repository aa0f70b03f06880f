#!/bin/bash
# The main job: build Kapsel, boot the demo guest, then benchmark native vs PV vs emulated disk I/O.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh # sets $build and builds there

echo "== Booting the demo guest"
"$build/hypervisor/kapsel" run --kernel "$build/guest-pv/examples/hello.elf" --memory 64M --no-console-input

echo
echo "== kapsel bench (native vs paravirtualized vs emulated, default disk)"
"$build/hypervisor/kapsel" bench --output-dir "$build/bench" "$@"
