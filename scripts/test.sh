#!/bin/bash
# Build Kapsel and run the whole test suite, then the unit and fuzz-replay tests (and where
# there is /dev/kvm a few KVM cases) again under ASan+UBSan; fails if KVM tests were skipped
# where KVM was available, or QEMU tests (suite qemu) where qemu-system-x86_64 is installed.
#
# Environment: KAPSEL_BUILD_DIR (default build); KAPSEL_ASAN_BUILD_DIR (default
# $KAPSEL_BUILD_DIR-asan); KAPSEL_ASAN_TESTS: the tests besides unit and fuzz-replay to run in
# the sanitized build (names or suites as `meson test` takes them, e.g. "hello
# state-save-restore" or "--suite kvm"; empty for none; without /dev/kvm they run under
# scripts/nested-kvm.sh); KAPSEL_ASAN=0 skips that build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh # sets $build and builds there

status=0
logs=("$build/meson-logs/testlog.json")
# KAPSEL_TEST_NESTED=1: without /dev/kvm, run the kvm suite in a QEMU VM
# with nested KVM (scripts/nested-kvm.sh).  Opt-in: under full emulation
# the nested kernel has been seen to lock up (soft lockup in KVM_RUN) about
# once per full run, so it is a developer's tool, not a gate.
if [ -e /dev/kvm ] || [ -z "${KAPSEL_TEST_NESTED:-}" ]; then
	meson test -C "$build" --print-errorlogs --num-processes 2 || status=$?
	kvm_available=$([ -e /dev/kvm ] && echo yes || echo no)
else
	# No /dev/kvm here: run the host-only suites here and the KVM suite in
	# a QEMU VM with nested KVM (scripts/nested-kvm.sh), under emulation
	# and so with longer timeouts.
	echo "test.sh: /dev/kvm is missing; the kvm suite runs under scripts/nested-kvm.sh"
	meson test -C "$build" --print-errorlogs --num-processes 2 --no-suite kvm || status=$?
	rm -f "$build/meson-logs/kvmlog.json"
	kvm_status=0
	scripts/nested-kvm.sh meson test -C "$build" --no-rebuild --print-errorlogs \
		--num-processes 1 --timeout-multiplier 4 --suite kvm --logbase kvmlog || kvm_status=$?
	logs+=("$build/meson-logs/kvmlog.json")
	# Everything there is emulated, timing checks included: a case that
	# failed gets one more run, and the summary names it as flaky.  A case
	# that fails twice fails the run.
	rm -f "$build/meson-logs/kvmretry.json"
	if [ "$kvm_status" -ne 0 ] && [ -f "$build/meson-logs/kvmlog.json" ]; then
		mapfile -t again < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    t = json.loads(line)
    if t["result"] not in ("OK", "SKIP", "EXPECTEDFAIL"):
        print(t["name"].split(" / ", 1)[1])' "$build/meson-logs/kvmlog.json")
		if [ "${#again[@]}" -gt 0 ] && [ "${#again[@]}" -le 20 ]; then
			echo "test.sh: running ${#again[@]} failed KVM case(s) once more: ${again[*]}"
			scripts/nested-kvm.sh meson test -C "$build" --no-rebuild --print-errorlogs \
				--num-processes 1 --timeout-multiplier 4 --suite kvm --logbase kvmretry \
				"${again[@]}" || true
			logs+=("$build/meson-logs/kvmretry.json")
		else
			status=1
		fi
	elif [ "$kvm_status" -ne 0 ]; then
		status=1
	fi
	kvm_available=yes
fi

# The same code with AddressSanitizer and UndefinedBehaviorSanitizer (guest
# code is never instrumented: see guest-pv/meson.build).  Any report fails
# the test: ASan and UBSan stop at their first finding, LeakSanitizer
# reports leaks at exit.
if [ "${KAPSEL_ASAN:-1}" != 0 ]; then
	asan_build=${KAPSEL_ASAN_BUILD_DIR:-$build-asan}
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:print_summary=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:print_summary=1}
	reconfigure=()
	if [ -f "$asan_build/build.ninja" ]; then
		reconfigure=(--reconfigure)
	fi
	rm -f "$asan_build"/meson-logs/asan-*.json
	asan_tests=""
	if meson setup "${reconfigure[@]}" "$asan_build" -Db_sanitize=address,undefined >/dev/null &&
		ninja -C "$asan_build" -j "$(build_jobs)"; then
		meson test -C "$asan_build" --no-rebuild --print-errorlogs --num-processes 2 \
			--logbase asan-unit --suite unit --suite fuzz-replay || status=$?
		# Some KVM cases too where there is /dev/kvm; under nested-kvm.sh
		# only those KAPSEL_ASAN_TESTS names (it is slow).
		asan_kvm_default="hello hypercalls echo-pv pv-write-verify ata-write-verify net-pv-pv
			state-save-restore control-socket-lifecycle"
		default_kvm=""
		run_kvm=()
		if [ -e /dev/kvm ]; then
			default_kvm=$asan_kvm_default
		elif [ -n "${KAPSEL_TEST_NESTED:-}" ]; then
			run_kvm=(scripts/nested-kvm.sh)
		fi
		asan_tests=${KAPSEL_ASAN_TESTS-$default_kvm}
		if [ -n "$asan_tests" ]; then
			# shellcheck disable=SC2086 # a word list on purpose
			"${run_kvm[@]}" meson test -C "$asan_build" --no-rebuild --print-errorlogs \
				--num-processes 2 --timeout-multiplier $((${#run_kvm[@]} ? 4 : 1)) \
				--logbase asan-more $asan_tests || status=$?
		fi
	else
		echo "error: the ASan+UBSan build in $asan_build failed" >&2
		status=1
	fi
	logs+=("$asan_build/meson-logs/asan-unit.json")
	if [ -n "$asan_tests" ]; then
		logs+=("$asan_build/meson-logs/asan-more.json")
	fi
fi

# Summarize from meson's machine-readable logs, and refuse a run that
# skipped KVM tests where KVM was available (that run tested nothing real).
# Likewise the qemu suite where qemu-system-x86_64 is installed (it needs no KVM).
qemu_available=$(command -v qemu-system-x86_64 >/dev/null && echo yes || echo no)
KVM_AVAILABLE=$kvm_available QEMU_AVAILABLE=$qemu_available python3 - "${logs[@]}" <<'PY' || status=1
import json, os, sys
results = {}
flaky = []
missing = 0
for path in sys.argv[1:]:
    if not os.path.exists(path):
        print(f"error: {path} is missing: that part of the suite did not run")
        missing += 1
        continue
    # Each log counts on its own (the ASan run repeats the unit tests'
    # names); only the retry log replaces results of the nested KVM run.
    group = os.path.basename(path).replace("kvmretry", "kvmlog")
    with open(path) as log:
        for line in log:
            test = json.loads(line)
            name = (group, test["name"])
            if name in results and results[name]["result"] not in ("OK", "EXPECTEDFAIL", "SKIP"):
                if test["result"] == "OK":
                    flaky.append(name)
            results[name] = test
passed = skipped = 0
failed = missing
skipped_kvm = []
skipped_qemu = []
for (group, name), test in results.items():
    result = test["result"]
    if result in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif result == "SKIP":
        skipped += 1
        # meson 1.0 logs no "suite" key; the name reads "kapsel:kvm / case".
        suites = test.get("suite") or [name.split(" / ")[0].split(":")[-1]]
        if "kvm" in suites:
            skipped_kvm.append(name)
        if "qemu" in suites:
            skipped_qemu.append(name)
    else:
        failed += 1
        print(f"failed: {name} ({group})")
if flaky:
    print("flaky under nested emulation (failed, then passed on the retry): " +
          ", ".join(name for _, name in flaky))
print(f"{passed} passed, {failed} failed, {skipped} skipped")
if skipped_kvm and os.environ["KVM_AVAILABLE"] == "yes":
    print("error: KVM was available but these KVM tests skipped: " + ", ".join(skipped_kvm))
    sys.exit(1)
if skipped_qemu and os.environ["QEMU_AVAILABLE"] == "yes":
    print("error: qemu-system-x86_64 is installed but these QEMU tests skipped: " +
          ", ".join(skipped_qemu))
    sys.exit(1)
sys.exit(1 if failed else 0)
PY
exit $status
