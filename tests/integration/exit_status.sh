#!/bin/bash
# Integration tests: the exit status convention (README "Exit status") on paths that need no KVM: usage errors, failed verbs, runs that cannot start, bench paths that cannot be measured.
. "$(dirname "$0")/lib.sh"
make_temp_dir
mkdir -p "$KAPSEL_RUNTIME_DIR"
out=$TMP/out err=$TMP/err

# status_of WANT ARGS...: kapsel ARGS exits WANT; its stderr is in $err.
status_of() {
	local want=$1
	shift
	STATUS=0
	LAST_ERR=$err
	timeout --kill-after=5 60 "$KAPSEL" "$@" >"$out" 2>"$err" </dev/null || STATUS=$?
	[ "$STATUS" -eq "$want" ] || { echo "--- kapsel $*:"; cat "$err"; fail "kapsel $* exited $STATUS, expected $want"; }
}

CASE=$1
case "$CASE" in
exit-status-usage) # suite: cli
	# 2: a wrong command line, in every verb, before anything is done.
	status_of 2
	expect_in "$err" "Usage: kapsel COMMAND"
	status_of 2 frobnicate
	for verb in run restore clone bench list info pause resume shutdown destroy stats console \
		dumpxml control save snapshot migrate inspect merge; do
		status_of 2 "$verb" --frob
		expect_in "$err" "kapsel $verb --help"
	done
	expect_not_in "$out" "Hello"
	# run: each kind of bad value is a usage error too, and names the option.
	status_of 2 run -k "$GUESTS/hello.elf" --memory 1T
	expect_in "$err" "--memory '1T' is not a valid size"
	for n in 0 17 two; do
		status_of 2 run -k "$GUESTS/hello.elf" --vcpus "$n"
		expect_in "$err" "--vcpus '$n' is not a valid vCPU count; use a whole number from 1 to 16"
	done
	status_of 2 run -k "$GUESTS/hello.elf" --name bad/name
	expect_in "$err" "--name: VM name 'bad/name' is not valid"
	status_of 2 run -k "$GUESTS/hello.elf" --disk "$TMP/x.img,bus=scsi"
	expect_in "$err" "bus 'scsi' is unknown"
	status_of 2 run -k "$GUESTS/hello.elf" --console serial
	expect_in "$err" "--console 'serial' is unknown"
	status_of 2 run -k "$GUESTS/hello.elf" stray
	expect_in "$err" "unexpected argument 'stray'"
	status_of 2 run
	expect_in "$err" "no guest kernel; give --kernel FILE"
	status_of 2 restore --name bad/name "$TMP"
	expect_in "$err" "--name: VM name 'bad/name' is not valid"
	# save and snapshot: live options that contradict each other or are out
	# of range are refused before the VM is asked.
	status_of 2 save --no-live --max-rounds 3 ghost "$TMP/s"
	expect_in "$err" "leave them out with --no-live"
	status_of 2 save --max-rounds 0 ghost "$TMP/s"
	expect_in "$err" "--max-rounds '0' is not valid; use a whole number from 1 to 1000"
	status_of 2 snapshot --max-downtime 60001 ghost "$TMP/s"
	expect_in "$err" "use a whole number from 1 to 60000"
	status_of 2 snapshot --no-live --diff ghost "$TMP/s"
	expect_in "$err" "--track and --diff need a live save"
	status_of 2 save --no-live --track ghost "$TMP/s"
	expect_in "$err" "--track and --diff need a live save"
	status_of 2 merge "$TMP/s"
	expect_in "$err" "merge needs a state directory and a new one"
	# 0 for help, and the convention is in it.
	status_of 0 --help
	expect_in "$out" "Exit status:"
	expect_in "$out" "  123  the VM was stopped from outside"
	expect_in "$out" "  125  Kapsel could not start or run the VM"
	status_of 0 run --help
	expect_in "$out" "123 if it was stopped from outside"
	expect_in "$out" "--vcpus N            vCPUs the VM has, 1 to 16 (default 1)"
	# 1: a verb that could not do what was asked.
	for verb in info pause resume shutdown destroy stats dumpxml; do
		status_of 1 "$verb" ghost
		expect_in "$err" "no VM named 'ghost' is running"
	done
	status_of 1 inspect "$TMP/no-such-state"
	expect_in "$err" "cannot open the saved state"
	status_of 1 merge "$TMP/no-such-state" "$TMP/merged"
	expect_in "$err" "merge of '$TMP/no-such-state' failed: cannot open the saved state"
	[ ! -e "$TMP/merged" ] || fail "a failed merge left $TMP/merged"
	# 125: Kapsel could not run the VM (here: before KVM is even needed).
	status_of 125 run -k "$TMP/no-such-kernel.elf"
	expect_in "$err" "cannot open guest image '$TMP/no-such-kernel.elf'"
	status_of 125 restore -k "$GUESTS/hello.elf" "$TMP/no-such-state"
	expect_in "$err" "cannot restore: cannot open the saved state"
	status_of 125 clone -k "$GUESTS/hello.elf" "$TMP/no-such-state"
	expect_in "$err" "cannot clone: cannot open the saved state"
	;;
exit-status-bench) # suite: cli
	# A bench whose PV path cannot run (a kapsel that cannot start VMs,
	# as on a host without /dev/kvm) fails, even though native rows were
	# measured and reported.
	cat >"$TMP/no-kvm-kapsel" <<-'EOF'
		#!/bin/sh
		echo "kapsel: error: /dev/kvm does not exist (this test's stand-in)" >&2
		exit 125
	EOF
	chmod +x "$TMP/no-kvm-kapsel"
	status_of 1 bench --quick --no-fio --no-chart --paths native,pv --workloads randread-4K \
		--iodepths 1 --kapsel "$TMP/no-kvm-kapsel" --output-dir "$TMP/bench"
	expect_in "$out" "pv          unavailable: kapsel run could not start the VM"
	expect_in "$err" "could not be measured"
	grep -Eq '^ +native +[0-9]' "$out" || { cat "$out"; fail "no native row measured"; }
	# The same run with only the native path succeeds.
	status_of 0 bench --quick --no-fio --no-chart --paths native --workloads randread-4K \
		--iodepths 1 --kapsel "$TMP/no-kvm-kapsel" --output-dir "$TMP/bench"
	;;
*)
	fail "unknown case '$CASE'"
	;;
esac
echo PASS
