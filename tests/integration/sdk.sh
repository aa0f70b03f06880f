#!/bin/bash
# Integration tests: the installed guest SDK (meson install into a DESTDIR, then guests and a libxenctrl client built with nothing but pkg-config).
. "$(dirname "$0")/lib.sh"
make_temp_dir
SOURCE_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${CC:=cc}"

# sdk_install: installs the build (KAPSEL_BUILD_ROOT) under $TMP/dest and
# points pkg-config at it, and only at it: PKG_CONFIG_LIBDIR replaces the
# system's search path, and PKG_CONFIG_SYSROOT_DIR relocates the installed
# prefix's paths (-I, -L and, with pkgconf, variables) under the DESTDIR.
# (pkg-config's --define-prefix guesses the prefix as the .pc folder's
# grandparent, which a multiarch libdir such as lib/x86_64-linux-gnu breaks.)
sdk_install() {
	DEST=$TMP/dest
	meson install -C "$KAPSEL_BUILD_ROOT" --no-rebuild --quiet --destdir "$DEST" \
		>"$TMP/install.log" 2>&1 || { cat "$TMP/install.log"; fail "meson install --destdir failed"; }
	local pcfile
	pcfile=$(find "$DEST" -name kapsel-guest.pc | head -n 1)
	[ -n "$pcfile" ] || fail "meson install put no kapsel-guest.pc under $DEST"
	export PKG_CONFIG_LIBDIR=${pcfile%/*} PKG_CONFIG_PATH= PKG_CONFIG_SYSROOT_DIR=$DEST
	for pc in kapsel-guest kapsel-guest-runtime kapsel-xenctrl; do
		pkg-config --exists "$pc" 2>"$TMP/pc.err" || { cat "$TMP/pc.err"; fail "pkg-config cannot use $pc.pc"; }
	done
}

# sdk_build_hello: tests/sdk/hello.c -> $TMP/hello.elf with the installed SDK.
sdk_build_hello() {
	local cflags libs script
	cflags=$(pkg-config --cflags kapsel-guest-runtime) || fail "pkg-config --cflags kapsel-guest-runtime"
	libs=$(pkg-config --libs kapsel-guest-runtime) || fail "pkg-config --libs kapsel-guest-runtime"
	script=$(pkg-config --variable=linker_script kapsel-guest) || fail "no linker_script variable"
	case "$script" in
	"$DEST"/*) ;;
	*) fail "linker_script '$script' is not under the DESTDIR (pkg-config without sysroot support for variables?)" ;;
	esac
	[ -f "$script" ] || fail "linker_script $script was not installed"
	"$CC" -Wall -Wextra -Werror $cflags -c "$SOURCE_ROOT/tests/sdk/hello.c" -o "$TMP/hello.o" \
		2>"$TMP/cc.err" || { cat "$TMP/cc.err"; fail "hello.c does not compile against the installed SDK"; }
	"$CC" -o "$TMP/hello.elf" "$TMP/hello.o" $libs -Wl,-T,"$script" 2>"$TMP/ld.err" ||
		{ cat "$TMP/ld.err"; fail "hello.elf does not link against the installed SDK"; }
}

# doc_block NAME OUT: the code block under the line "`NAME`:" of
# docs/porting.md (its worked example, §8) into OUT.
doc_block() {
	awk -v label="\`$1\`:" '
	$0 == label { found = 1; next }
	found == 1 && /^```/ { found = 2; next }
	found == 2 && /^```/ { exit }
	found == 2 { print }' "$SOURCE_ROOT/docs/porting.md" >"$2"
	[ -s "$2" ] || fail "docs/porting.md has no $1 block"
}

# sdk_build_tiny: porting.md's tiny kernel (own entry, hooks and linker
# script) -> $TMP/tiny.elf, built as that page says, on kapsel-guest.pc.
sdk_build_tiny() {
	mkdir -p "$TMP/tiny"
	for f in entry.S kernel.c kernel.ld; do doc_block "$f" "$TMP/tiny/$f"; done
	(
		cd "$TMP/tiny" || exit 1
		CFLAGS="-std=gnu11 -O2 -g $(pkg-config --cflags kapsel-guest)"
		"$CC" $CFLAGS -c entry.S -o entry.o &&
			"$CC" $CFLAGS -Wall -Wextra -Werror -c kernel.c -o kernel.o &&
			"$CC" -o ../tiny.elf entry.o kernel.o $(pkg-config --libs kapsel-guest) -Wl,-T,kernel.ld
	) >"$TMP/tiny.log" 2>&1 || { cat "$TMP/tiny.log"; fail "porting.md's tiny kernel does not build against the installed SDK"; }
}

CASE=$1
case "$CASE" in
sdk-install) # suite: sdk
	# Host only: install, check the SDK is complete, build a guest and a
	# libxenctrl client from the prefix alone.
	sdk_install
	# Every header of the guest contract and the guest API is installed, and
	# each compiles on its own with the installed flags (kapsel_guest/net.h
	# once needed a kapsel/net.h that was not installed).
	cflags=$(pkg-config --cflags kapsel-guest)
	includedir=$(pkg-config --variable=includedir kapsel-guest)
	for header in "$SOURCE_ROOT"/hypercall-abi/kapsel/*.h "$SOURCE_ROOT"/guest-pv/include/kapsel_guest/*.h; do
		name=${header#"$SOURCE_ROOT"/hypercall-abi/}
		name=${name#"$SOURCE_ROOT"/guest-pv/include/}
		[ -f "$includedir/$name" ] || fail "$name is not installed in $includedir"
		echo "#include <$name>" >"$TMP/one.c"
		"$CC" -Wall -Wextra -Werror $cflags -c "$TMP/one.c" -o "$TMP/one.o" 2>"$TMP/cc.err" ||
			{ cat "$TMP/cc.err"; fail "installed <$name> does not compile on its own"; }
	done
	# The installed flags are the ones the in-tree guest library is built
	# with: compare with libkapsel-guest's own compile command.
	python3 - "$KAPSEL_BUILD_ROOT/compile_commands.json" >"$TMP/tree-flags" <<-'EOF' || fail "no in-tree guest compile command"
		import json, shlex, sys
		for entry in json.load(open(sys.argv[1])):
		    if entry["file"].endswith("guest-pv/lib/ring.c") and "libkapsel-guest.a.p" in entry["command"]:
		        words = shlex.split(entry["command"])
		        print("\n".join(sorted(set(w for w in words if w[:2] in ("-f", "-m", "-U")
		                                    and not w.startswith("-fdiagnostics")))))
		        sys.exit(0)
		sys.exit(1)
	EOF
	printf '%s\n' $cflags | grep -v '^-I' | sort -u >"$TMP/pc-flags"
	[ -s "$TMP/pc-flags" ] || fail "kapsel-guest.pc has no compiler flags"
	diff "$TMP/tree-flags" "$TMP/pc-flags" || fail "kapsel-guest.pc Cflags differ from the in-tree guest build (< tree, > .pc)"
	# An out-of-tree guest: a fixed-address, static ELF entered at _start.
	sdk_build_hello
	readelf -h "$TMP/hello.elf" >"$TMP/elf" || fail "readelf hello.elf"
	expect_in "$TMP/elf" "EXEC (Executable file)"
	start=$(nm "$TMP/hello.elf" | awk '$3 == "_start" { print $1 }')
	[ -n "$start" ] || fail "hello.elf has no _start (runtime archive not linked)"
	entry=$(awk '/Entry point address:/ { print $4 }' "$TMP/elf")
	[ "$((entry))" -eq "$((16#$start))" ] || fail "hello.elf enters at $entry, not at _start (0x$start)"
	# porting.md's worked example builds as documented.
	sdk_build_tiny
	nm "$TMP/tiny.elf" | grep -q ' T kernel_main$' || fail "tiny.elf has no kernel_main"
	nm "$TMP/tiny.elf" | grep -q ' T _start$' || fail "tiny.elf has no _start"
	nm "$TMP/tiny.elf" | grep -q 'kg_runtime_start' && fail "tiny.elf pulled in the reference runtime"
	# A libxenctrl client builds against kapsel-xenctrl.pc and runs against
	# the installed library (no VMs in an empty runtime folder).
	"$CC" -Wall -Wextra -Werror $(pkg-config --cflags kapsel-xenctrl) "$SOURCE_ROOT/tests/xenctrl/xentop_once.c" \
		-o "$TMP/xentop_once" $(pkg-config --libs kapsel-xenctrl) 2>"$TMP/cc.err" ||
		{ cat "$TMP/cc.err"; fail "xentop_once.c does not build against kapsel-xenctrl.pc"; }
	mkdir -p "$KAPSEL_RUNTIME_DIR"
	LD_LIBRARY_PATH=$(pkg-config --variable=libdir kapsel-xenctrl) "$TMP/xentop_once" >"$TMP/top" 2>&1 ||
		{ cat "$TMP/top"; fail "xentop_once against the installed libkapsel-xenctrl"; }
	expect_in "$TMP/top" "0 domains"
	LD_LIBRARY_PATH=$(pkg-config --variable=libdir kapsel-xenctrl) ldd "$TMP/xentop_once" >"$TMP/ldd"
	expect_in "$TMP/ldd" "$DEST/"
	;;
sdk-boot)
	# The guest built from the installed SDK boots, prints and exits with
	# the code it was given.
	require_kvm
	sdk_install
	sdk_build_hello
	out=$TMP/out err=$TMP/err
	abi=$("$KAPSEL" version | sed -n 's/.*(hypercall ABI \([0-9.]*\)).*/\1/p')
	[ -n "$abi" ] || fail "no ABI version in 'kapsel version'"
	run_guest "$out" "$err" --kernel "$TMP/hello.elf" --memory 32M --cmdline "7"
	expect_status 7
	expect_in "$out" "sdk-hello: ABI $abi (built against"
	expect_in "$out" "32 MiB, console pv"
	run_guest "$out" "$err" --kernel "$TMP/hello.elf" --memory 32M --console uart
	expect_status 0
	expect_in "$out" "32 MiB, console uart"
	# And porting.md's tiny kernel prints what the page says it prints.
	sdk_build_tiny
	run_guest "$out" "$err" --kernel "$TMP/tiny.elf" --memory 64M --cmdline "hello from the host"
	expect_status 0
	expect_in "$out" "tiny kernel: 64 MiB of RAM"
	expect_in "$out" "command line: hello from the host"
	grep -Eq '^slept [0-9]+ us$' "$out" || { cat "$out"; fail "no 'slept N us' line"; }
	;;
*)
	fail "unknown case '$CASE'"
	;;
esac
