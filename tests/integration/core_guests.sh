#!/bin/bash
# Integration tests: the core example guests under KVM (output, exit codes, crash reports).
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
out=$TMP/out err=$TMP/err

case "$1" in
hello)
	run_guest "$out" "$err" --kernel "$GUESTS/hello.elf" --memory 64M --name hello-test
	expect_status 0
	expect_in "$out" "Hello from a Kapsel guest!"
	expect_in "$out" "ABI 1.0, 64 MiB RAM"
	expect_in "$out" "console pv, name 'hello-test'"
	;;
hello-uart)
	# Same guest, console through the emulated 16550 only.
	run_guest "$out" "$err" --kernel "$GUESTS/hello.elf" --console uart --stats
	expect_status 0
	expect_in "$out" "Hello from a Kapsel guest!"
	expect_in "$out" "console uart"
	# One exit per byte written to THR plus the LSR polls: many device exits.
	expect_in "$err" "device 0 uart16550:"
	bytes=$(wc -c <"$out")
	uart_out=$(awk '/uart16550/{f=1} f && /bytes_out/{print $2; exit}' "$err")
	[ "$uart_out" -eq "$bytes" ] || fail "UART counted $uart_out bytes, guest printed $bytes"
	;;
hello-uart-cmdline)
	# The guest asks for the UART on its command line while PV is offered.
	run_guest "$out" "$err" --kernel "$GUESTS/hello.elf" --cmdline "console=uart"
	expect_status 0
	expect_in "$out" "console uart"
	;;
exitcode)
	for code in 0 1 42 255; do
		run_guest "$out" "$err" --kernel "$GUESTS/exitcode.elf" --cmdline "$code"
		expect_status "$code"
		expect_in "$out" "exiting with code $code"
	done
	;;
fault)
	run_guest "$out" "$err" --kernel "$GUESTS/fault.elf"
	expect_status 126
	expect_in "$err" "crashed: page fault (#PF)"
	expect_in "$err" "<read_through+0>"
	expect_in "$err" "faulting address (cr2): 0x10 (page not present, read, user mode)"
	expect_in "$err" "<main+"
	expect_in "$err" "backtrace:"
	;;
fault-kernel-page)
	# The hypervisor's page tables are supervisor-only: a CPL3 write faults.
	run_guest "$out" "$err" --kernel "$GUESTS/fault.elf" --cmdline "0x10000"
	expect_status 126
	expect_in "$err" "faulting address (cr2): 0x10000 (protection violation, read, user mode)"
	;;
timer)
	run_guest "$out" "$err" --kernel "$GUESTS/timer.elf" --cmdline "30"
	expect_status 0
	expect_in "$out" "timer ok"
	;;
hypercalls)
	run_guest "$out" "$err" --kernel "$GUESTS/hypercalls.elf"
	expect_status 0
	expect_in "$out" "unknown hypercall -> -38"
	expect_in "$out" "console write across end of RAM -> -14"
	expect_in "$out" "hypercalls ok"
	expect_in "$err" "unknown hypercall 999; answered -ENOSYS"
	;;
*)
	fail "unknown case '$1'"
	;;
esac
echo "PASS: $1"
