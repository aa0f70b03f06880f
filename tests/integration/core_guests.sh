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
	# The guest sees the ABI version the host announces.
	abi=$("$KAPSEL" version | sed -n 's/.*(hypercall ABI \([0-9.]*\)).*/\1/p')
	expect_in "$out" "ABI $abi, 64 MiB RAM"
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
	# Faulting at a function's first instruction: the caller comes from
	# the stack, since rbp still links to the caller's caller.
	expect_in "$err" "<fault_trigger+0x9> (return address on the stack)"
	# The run history: the guest's console hypercalls, then the stub's
	# report of the fault.
	expect_in "$err" "runs of vCPU 0 (entry set by the VMM -> exit):"
	grep -Eq -- "-> io 0x510 +rip 0x[0-9a-f]+ rsp 0x[0-9a-f]+ cs 0x23 cr3 0x10000" "$err" ||
		{ cat "$err"; fail "no hypercall exit in the run history"; }
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
	expect_in "$out" "time info into the page tables -> -14"
	expect_in "$out" "kick and block on a device that does not exist -> -22"
	expect_in "$out" "hypercalls ok"
	expect_in "$err" "unknown hypercall 999; answered -ENOSYS"
	;;
reboot)
	# SHUTDOWN(REBOOT) starts the guest again from its entry point, with
	# RAM zeroed and the generation bumped.
	run_guest "$out" "$err" --kernel "$GUESTS/reboot.elf"
	expect_status 0
	expect_in "$out" "boot with generation 0, 0 dirty heap bytes"
	expect_in "$out" "boot with generation 1, 0 dirty heap bytes"
	expect_in "$out" "reboot ok"
	;;
stdout-closed)
	# A console reader that goes away must not kill Kapsel (SIGPIPE).
	STATUS=0
	{ timeout 60 "$KAPSEL" run --no-console-input --kernel "$GUESTS/hello.elf" </dev/null 2>"$err"
	  echo $? >"$TMP/status"; } | head -c 5 >"$out"
	STATUS=$(cat "$TMP/status")
	expect_status 0
	[ "$(cat "$out")" = "Hello" ] || fail "expected 'Hello', got '$(cat "$out")'"
	;;
echo-pv|echo-uart|echo-uart-cmdline)
	# Console input from Kapsel's standard input reaches the guest.
	case "$1" in
	echo-pv) args=() mode=pv ;;
	echo-uart) args=(--console uart) mode=uart ;;
	echo-uart-cmdline) args=(--cmdline console=uart) mode=uart ;;
	esac
	STATUS=0
	printf 'hello kapsel\nsecond line\nquit\n' |
		timeout --kill-after=5 60 "$KAPSEL" run --kernel "$GUESTS/echo.elf" "${args[@]}" \
			>"$out" 2>"$err" || STATUS=$?
	expect_status 0
	expect_in "$out" "echo ready (console $mode)"
	expect_in "$out" "echo: hello kapsel"
	expect_in "$out" "echo: second line"
	expect_in "$out" "echo: bye"
	;;
stats-signal)
	# SIGUSR1 writes the counters while the guest sleeps in BLOCK.  No
	# timeout(1) wrapper here: it would not pass SIGUSR1 on.
	"$KAPSEL" run --no-console-input --kernel "$GUESTS/timer.elf" \
		--cmdline 20000 --stats-file "$TMP/stats" >"$out" 2>"$err" </dev/null &
	pid=$!
	trap 'stop_children; kill -KILL $pid 2>/dev/null; rm -rf "$TMP"' EXIT
	sleep 1 # until the handlers are installed (SIGUSR1 kills before that)
	kill -USR1 $pid
	for _ in $(seq 50); do [ -e "$TMP/stats" ] && break; sleep 0.1; done
	[ -e "$TMP/stats" ] || fail "no stats file 5 s after SIGUSR1"
	kill -TERM $pid
	STATUS=0
	wait $pid || STATUS=$?
	expect_status 123 # stopped from outside (README "Exit status")
	expect_in "$TMP/stats" "uptime_ns"
	expect_in "$TMP/stats" "hypercall_block: 1"
	expect_in "$TMP/stats" "device 0 console-pv:"
	[ -e "$TMP/stats.tmp" ] && fail "temporary stats file left behind"
	;;
sigterm)
	# SIGTERM ends a guest that sleeps for 30 s within a few seconds.
	timeout --kill-after=5 60 "$KAPSEL" run --no-console-input --kernel "$GUESTS/timer.elf" \
		--cmdline 30000 >"$out" 2>"$err" </dev/null &
	pid=$!
	sleep 0.5
	start=$(date +%s%N)
	kill -TERM $pid
	STATUS=0
	wait $pid || STATUS=$?
	elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
	expect_status 123 # stopped from outside, not "could not run" (125)
	# an unnamed VM is called kapsel-PID, and the warning names it
	grep -Eq "^kapsel: warning: VM 'kapsel-[0-9]+' stopped by request$" "$err" ||
		fail "the stop warning does not name the VM: $(cat "$err")"
	expect_not_in "$out" "timer ok"
	[ "$elapsed_ms" -lt 5000 ] || fail "SIGTERM took $elapsed_ms ms"
	;;
cli-missing-kernel)
	run_guest "$out" "$err" --kernel /nonexistent/guest.elf
	expect_status 125
	expect_in "$err" "kapsel: error: cannot open guest image '/nonexistent/guest.elf': No such file or directory"
	run_guest "$out" "$err"
	expect_status 2 # a usage error: the command line names no kernel
	expect_in "$err" "kapsel: error: no guest kernel; give --kernel FILE or a domain XML with <os><kernel>"
	;;
cli-not-elf)
	printf '#!/bin/sh\n# a shell script is not a guest kernel, however long it is\n' >"$TMP/script.elf"
	run_guest "$out" "$err" --kernel "$TMP/script.elf"
	expect_status 125
	expect_in "$err" "kapsel: error: guest image '$TMP/script.elf': not an ELF file (bad magic)"
	printf 'tiny' >"$TMP/tiny.elf"
	run_guest "$out" "$err" --kernel "$TMP/tiny.elf"
	expect_status 125
	expect_in "$err" "guest image '$TMP/tiny.elf': file is 4 bytes, too short for an ELF header"
	run_guest "$out" "$err" --kernel "$TMP"
	expect_status 125
	expect_in "$err" "kapsel: error: guest image '$TMP' is not a regular file"
	;;
cli-truncated-elf)
	head -c 3000 "$GUESTS/hello.elf" >"$TMP/cut.elf"
	run_guest "$out" "$err" --kernel "$TMP/cut.elf"
	expect_status 125
	expect_in "$err" "kapsel: error: guest image '$TMP/cut.elf': segment 0: file bytes [0x1000, +"
	expect_in "$err" "run past the end of the 3000-byte file (truncated image?)"
	head -c 100 "$GUESTS/hello.elf" >"$TMP/cut.elf"
	run_guest "$out" "$err" --kernel "$TMP/cut.elf"
	expect_status 125
	phnum=$(od -An -t u2 -j 56 -N 2 "$GUESTS/hello.elf" | tr -d ' ') # 4: three loads, the PVH note
	expect_in "$err" "ELF program headers (offset 0x40, $phnum entries) run past the end of the file"
	;;
cli-memory)
	for size in 1T garbage; do
		run_guest "$out" "$err" --kernel "$GUESTS/hello.elf" --memory "$size"
		expect_status 2
		expect_in "$err" "kapsel: error: --memory '$size' is not a valid size; use a multiple of 2M between 4M and 64G, e.g. 64M or 1G"
	done
	# A size, but not one a VM can have: the message says the range.
	for size in 3M 5M 64 100G 99999999999999999999G; do
		run_guest "$out" "$err" --kernel "$GUESTS/hello.elf" --memory "$size"
		expect_status 2
		expect_in "$err" "kapsel: error: --memory '$size' is outside what a VM can have: a multiple of 2M between 4M and 64G, e.g. 64M or 1G"
	done
	# More than this host's RAM: refused up front, unless --overcommit.
	host_mib=$(awk '$1 == "MemTotal:" { print int($2 / 1024) }' /proc/meminfo)
	if [ "$host_mib" -lt 65536 ]; then
		run_guest "$out" "$err" --kernel "$GUESTS/hello.elf" --memory 64G
		expect_status 125
		expect_in "$err" "kapsel: error: a VM with 65536 MiB of RAM does not fit this host's $host_mib MiB; give less --memory, or --overcommit"
		# Allowed: it boots (hello touches a few pages of it).
		run_guest "$out" "$err" --kernel "$GUESTS/hello.elf" --memory 64G --overcommit
		expect_status 0
		expect_in "$out" "65536 MiB RAM"
	fi
	# The smallest valid size boots.
	run_guest "$out" "$err" --kernel "$GUESTS/hello.elf" --memory 4M
	expect_status 0
	expect_in "$out" "4 MiB RAM"
	;;
cli-options)
	# Usage errors exit 2, as in every verb (README "Exit status").
	run_guest "$out" "$err" --kernel "$GUESTS/hello.elf" --bogus
	expect_status 2
	expect_in "$err" "kapsel run: unrecognized option '--bogus'"
	expect_in "$err" "Try 'kapsel run --help'."
	run_guest "$out" "$err" --kernel "$GUESTS/hello.elf" --disk "$TMP/x.img,speed=9"
	expect_status 2
	expect_in "$err" "kapsel: error: --disk '$TMP/x.img,speed=9': option 'speed=9' is unknown or lacks a valid value; known: format=raw|overlay, readonly,"
	run_guest "$out" "$err" --kernel "$GUESTS/hello.elf" --disk "$TMP/x.img,bus=scsi"
	expect_status 2
	expect_in "$err" "bus 'scsi' is unknown; use bus=pv or bus=ata"
	run_guest "$out" "$err" --kernel "$GUESTS/hello.elf" --console serial
	expect_status 2
	expect_in "$err" "kapsel: error: --console 'serial' is unknown; use auto or uart"
	run_guest "$out" "$err" --kernel "$GUESTS/hello.elf" stray-argument
	expect_status 2
	expect_in "$err" "unexpected argument 'stray-argument'"
	;;
cli-help)
	STATUS=0; "$KAPSEL" --help >"$out" 2>"$err" || STATUS=$?
	expect_status 0
	expect_in "$out" "Usage: kapsel COMMAND [OPTIONS]"
	expect_in "$out" "  run "
	STATUS=0; "$KAPSEL" run --help >"$out" 2>"$err" || STATUS=$?
	expect_status 0
	expect_in "$out" "Usage: kapsel run [OPTIONS] [DOMAIN.xml]"
	expect_in "$out" "--memory SIZE"
	cp "$out" "$TMP/run-help"
	STATUS=0; "$KAPSEL" help run >"$out" 2>"$err" || STATUS=$?
	expect_status 0
	cmp -s "$out" "$TMP/run-help" || fail "'kapsel help run' differs from 'kapsel run --help'"
	STATUS=0; "$KAPSEL" version >"$out" 2>"$err" || STATUS=$?
	expect_status 0
	grep -qE '^kapsel [0-9]+\.[0-9]+\.[0-9]+ \(hypercall ABI [0-9]+\.[0-9]+\)$' "$out" ||
		fail "unexpected version line: $(cat "$out")"
	STATUS=0; "$KAPSEL" frobnicate >"$out" 2>"$err" || STATUS=$?
	expect_status 2
	expect_in "$err" "kapsel: 'frobnicate' is not a command; see 'kapsel --help'"
	STATUS=0; "$KAPSEL" >"$out" 2>"$err" || STATUS=$?
	expect_status 2
	expect_in "$err" "Usage: kapsel COMMAND"
	;;
guest-too-big)
	# hello.elf with its last PT_LOAD's memory size (BSS) raised to 8 MiB
	# (a PT_NOTE, the PVH entry, comes after it).
	cp "$GUESTS/hello.elf" "$TMP/big.elf"
	phoff=$(od -An -t u8 -j 32 -N 8 "$TMP/big.elf" | tr -d ' ')
	phnum=$(od -An -t u2 -j 56 -N 2 "$TMP/big.elf" | tr -d ' ')
	last_load=
	for i in $(seq 0 $((phnum - 1))); do
		type=$(od -An -t u4 -j $((phoff + i * 56)) -N 4 "$TMP/big.elf" | tr -d ' ')
		[ "$type" -eq 1 ] && last_load=$i
	done
	[ -n "$last_load" ] || fail "hello.elf has no PT_LOAD"
	memsz_at=$(( phoff + last_load * 56 + 40 ))
	printf '\000\000\200\000\000\000\000\000' |
		dd of="$TMP/big.elf" bs=1 seek=$memsz_at conv=notrunc status=none
	run_guest "$out" "$err" --kernel "$TMP/big.elf" --memory 4M
	expect_status 125
	expect_in "$err" "kapsel: error: guest image '$TMP/big.elf': segment $last_load ["
	expect_in "$err" "+0x800000) does not fit in 4 MiB of guest memory; give the VM more memory"
	run_guest "$out" "$err" --kernel "$TMP/big.elf" --memory 16M
	expect_status 0
	expect_in "$out" "Hello from a Kapsel guest!"
	;;
*)
	fail "unknown case '$1'"
	;;
esac
echo "PASS: $1"
