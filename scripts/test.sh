#!/bin/bash
# Build Kapsel and run the whole test suite; fails if KVM tests were skipped on a machine with /dev/kvm.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh # sets $build and builds there

status=0
logs=("$build/meson-logs/testlog.json")
if [ -e /dev/kvm ] || [ -n "${KAPSEL_NO_NESTED:-}" ]; then
	meson test -C "$build" --print-errorlogs --num-processes 2 || status=$?
	kvm_available=$([ -e /dev/kvm ] && echo yes || echo no)
else
	# No /dev/kvm here: run the host-only suites here and the KVM suite in
	# a QEMU VM with nested KVM (scripts/nested-kvm.sh), under emulation
	# and so with longer timeouts.
	echo "test.sh: /dev/kvm is missing; the kvm suite runs under scripts/nested-kvm.sh"
	meson test -C "$build" --print-errorlogs --num-processes 2 --no-suite kvm || status=$?
	rm -f "$build/meson-logs/kvmlog.json"
	scripts/nested-kvm.sh meson test -C "$build" --no-rebuild --print-errorlogs \
		--num-processes 2 --timeout-multiplier 4 --suite kvm --logbase kvmlog || status=$?
	logs+=("$build/meson-logs/kvmlog.json")
	kvm_available=yes
fi

# Summarize from meson's machine-readable logs, and refuse a run that
# skipped KVM tests where KVM was available (that run tested nothing real).
KVM_AVAILABLE=$kvm_available python3 - "${logs[@]}" <<'PY' || status=1
import json, os, sys
passed = failed = skipped = 0
skipped_kvm = []
for path in sys.argv[1:]:
    if not os.path.exists(path):
        print(f"error: {path} is missing: that part of the suite did not run")
        failed += 1
        continue
    with open(path) as log:
        for line in log:
            test = json.loads(line)
            result = test["result"]
            if result in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif result == "SKIP":
                skipped += 1
                # meson 1.0 logs no "suite" key; the name reads "kapsel:kvm / case".
                suites = test.get("suite") or [test["name"].split(" / ")[0].split(":")[-1]]
                if "kvm" in suites:
                    skipped_kvm.append(test["name"])
            else:
                failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
if skipped_kvm and os.environ["KVM_AVAILABLE"] == "yes":
    print("error: KVM was available but these KVM tests skipped: " + ", ".join(skipped_kvm))
    sys.exit(1)
sys.exit(1 if failed else 0)
PY
exit $status
