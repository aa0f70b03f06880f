#!/bin/bash
# Build Kapsel and run the whole test suite; fails if KVM tests were skipped on a machine with /dev/kvm.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh # sets $build and builds there

status=0
meson test -C "$build" --print-errorlogs --num-processes 2 || status=$?

# Summarize from meson's machine-readable log, and refuse a run that
# skipped KVM tests where /dev/kvm exists (that run tested nothing real).
python3 - "$build/meson-logs/testlog.json" <<'PY' || status=1
import json, os, sys
passed = failed = skipped = 0
skipped_kvm = []
with open(sys.argv[1]) as log:
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
if skipped_kvm and os.path.exists("/dev/kvm"):
    print("error: /dev/kvm exists but these KVM tests skipped: " + ", ".join(skipped_kvm))
    sys.exit(1)
sys.exit(1 if failed else 0)
PY
exit $status
