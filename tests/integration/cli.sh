#!/bin/bash
# Host-only tests of what a distribution ships and what needs no KVM: domain XML problems listed at once, the build tree's example guests, the installed man pages and bash completion kept in step with kapsel --help.
. "$(dirname "$0")/lib.sh"
make_temp_dir
SOURCE_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VMPIDS=()
trap 'for p in "${VMPIDS[@]}"; do { kill "$p" && wait "$p"; } 2>/dev/null; done; rm -rf "$TMP"' EXIT

# install_destdir: meson install of this build into $DEST; sets PREFIX_DIR
# (the prefix under $DEST, found from where kapsel went).
install_destdir() {
	DEST=$TMP/dest
	meson install -C "$KAPSEL_BUILD_ROOT" --no-rebuild --quiet --destdir "$DEST" \
		>"$TMP/install.log" 2>&1 || { cat "$TMP/install.log"; fail "meson install --destdir failed"; }
	local exe
	exe=$(find "$DEST" -path '*/bin/kapsel' -type f | head -n 1)
	[ -n "$exe" ] || fail "meson install put no bin/kapsel under $DEST"
	PREFIX_DIR=${exe%/bin/kapsel}
}

# render MANPAGE OUT: MANPAGE as plain text in OUT, one long line per
# paragraph (no hyphenation or adjustment to break an option's name);
# troff's warnings fail the test.
render() {
	groff -man -ww -Tascii -P-cbou -rLL=400n -rHY=0 "$1" >"$2" 2>"$TMP/groff.err" ||
		{ cat "$TMP/groff.err"; fail "groff cannot render $1"; }
	[ ! -s "$TMP/groff.err" ] || { cat "$TMP/groff.err"; fail "groff warns about $1"; }
}

# help_options VERB: the options 'kapsel VERB --help' defines (its Usage:
# line and its option lines), one per line; the same reading as the
# completion's, written again here so a bug in one shows in the other.
help_options() {
	"$KAPSEL" "$1" --help 2>/dev/null |
		sed -nE -e 's/^Usage:(.*)/\1/p' \
			-e 's/^[[:space:]]+((-[a-zA-Z], )?--?[a-zA-Z][a-zA-Z0-9-]*).*/\1/p' |
		grep -oE -- '(^|[[:space:],[(|])--?[a-zA-Z][a-zA-Z0-9-]*' |
		sed -E 's/^[[:space:],[(|]*//' | sort -u
}

# help_verbs: the commands 'kapsel --help' lists.
help_verbs() {
	"$KAPSEL" --help | sed -n '/^Commands:/,/^Run /s/^  \([a-z][a-z]*\)  .*/\1/p'
}

# complete_words WORDS...: what the installed completion offers for the
# command line WORDS (the last one being completed), one per line.
complete_words() {
	env -i PATH="$PREFIX_DIR/bin:/usr/bin:/bin" HOME="$TMP" KAPSEL_RUNTIME_DIR="$KAPSEL_RUNTIME_DIR" \
		bash --norc --noprofile -c '
		. "$1" || exit 1
		shift
		COMP_WORDS=("$@")
		COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		COMP_LINE="$*"
		COMP_POINT=${#COMP_LINE}
		_kapsel || exit 1
		[ ${#COMPREPLY[@]} -eq 0 ] || printf "%s\n" "${COMPREPLY[@]}"' bash "$COMPLETION" "$@"
}

CASE=$1
case "$CASE" in
cli-xml-problems) # suite: cli
	# virt-install's Xen PV definition: refused once, every problem listed
	# with its line, after a warning for each element only ignored.
	fixture=$SOURCE_ROOT/tests/fixtures/xen-pv-virt-install.xml
	run_guest "$TMP/out" "$TMP/err" "$fixture"
	expect_status 125
	expect_in "$TMP/err" "kapsel: warning: domain XML '$fixture': /domain type='xen' runs as a Kapsel guest on KVM"
	expect_in "$TMP/err" "ignoring /domain/devices/memballoon (Kapsel has no balloon"
	# Two <input> elements, one warning.
	[ "$(grep -c "ignoring /domain/devices/input" "$TMP/err")" = 1 ] || { cat "$TMP/err"; fail "not one warning for <input>"; }
	expect_in "$TMP/err" "kapsel: error: domain XML '$fixture': 6 problems; Kapsel runs it once all are fixed:"
	for want in "  line 18: /domain/devices/disk/driver type='qcow2'" \
		"  line 22: /domain/devices/disk device='cdrom'" \
		"  line 28: /domain/devices/interface type='bridge'" \
		"  line 39: /domain/devices/graphics" "  line 42: /domain/devices/video" \
		"  /domain/bootloader '/usr/lib/xen-4.17/bin/pygrub' is not supported"; do
		grep -q "^$want" "$TMP/err" || { cat "$TMP/err"; fail "no line starting '$want'"; }
	done
	[ "$(grep -c '^  ' "$TMP/err")" = 6 ] || { cat "$TMP/err"; fail "not exactly 6 problem lines"; }
	grep -q "^kapsel: error:" <(tail -n 7 "$TMP/err") || fail "the problem list is not the last thing said"
	# A long list is printed whole (a log line once cut it at 1 KiB), up
	# to 40 problems and the count of the rest.
	{
		echo "<domain type='kvm'><name>x</name><memory>16384</memory><os><kernel>/k</kernel></os>"
		for _ in $(seq 45); do echo "<cpu/>"; done
		echo "</domain>"
	} >"$TMP/long.xml"
	run_guest "$TMP/out" "$TMP/err" "$TMP/long.xml"
	expect_status 125
	expect_in "$TMP/err" "45 problems; Kapsel runs it once all are fixed:"
	[ "$(grep -c "^  line [0-9]*: /domain/cpu is not supported by Kapsel; remove it\$" "$TMP/err")" = 40 ] ||
		{ cat "$TMP/err"; fail "not 40 whole problem lines"; }
	[ "$(tail -n 1 "$TMP/err")" = "  ... and 5 more" ] || { cat "$TMP/err"; fail "the list does not end with the count of the rest"; }
	;;
cli-example-build-tree) # suite: cli
	# The help's example from a build tree: hello.xml names the installed
	# guest, this build's kapsel runs its own (without KVM it then stops
	# at /dev/kvm, with KVM it runs: either way the kernel was found).
	cd "$SOURCE_ROOT" || fail "no source tree"
	"$KAPSEL" run --help | grep -qx "  kapsel run examples/hello.xml" || fail "the help has no hello.xml example"
	run_guest "$TMP/out" "$TMP/err" examples/hello.xml
	[ "$STATUS" = 0 ] || [ "$STATUS" = 125 ] || { cat "$TMP/err"; fail "exit status $STATUS"; }
	expect_not_in "$TMP/err" "cannot open guest image"
	if [ ! -e /usr/local/share/kapsel/guests/hello.elf ]; then
		expect_in "$TMP/err" "/usr/local/share/kapsel/guests/hello.elf is not installed; this build tree's kapsel runs $GUESTS/hello.elf"
	fi
	[ "$STATUS" = 125 ] && expect_in "$TMP/err" "/dev/kvm"
	# -k wins, and nothing is looked up then.
	run_guest "$TMP/out" "$TMP/err" examples/hello.xml -k "$TMP/none.elf"
	expect_status 125
	expect_in "$TMP/err" "cannot open guest image '$TMP/none.elf'"
	expect_not_in "$TMP/err" "not installed"
	# An installed kapsel never looks in a build tree.
	install_destdir
	STATUS=0
	"$PREFIX_DIR/bin/kapsel" run --no-console-input examples/hello.xml >"$TMP/out" 2>"$TMP/err" </dev/null || STATUS=$?
	expect_status 125
	[ -e /usr/local/share/kapsel/guests/hello.elf ] ||
		expect_in "$TMP/err" "cannot open guest image '/usr/local/share/kapsel/guests/hello.elf'"
	;;
cli-man) # suite: cli
	# The man pages are installed, render without a warning, and kapsel(1)
	# has every command of 'kapsel --help' and every option of each
	# command's --help (and no command --help does not have).
	if ! command -v groff >/dev/null; then
		echo "SKIP: groff missing (Debian: apt-get install groff-base)"
		exit $SKIP
	fi
	install_destdir
	for page in man1/kapsel.1 man5/kapsel-xml.5; do
		[ -f "$PREFIX_DIR/share/man/$page" ] || fail "meson install put no share/man/$page"
		render "$PREFIX_DIR/share/man/$page" "$TMP/${page#*/}.txt"
		if command -v man >/dev/null; then
			MANWIDTH=80 man -l "$PREFIX_DIR/share/man/$page" >"$TMP/man.txt" 2>"$TMP/man.err" ||
				{ cat "$TMP/man.err"; fail "man -l $page fails"; }
			grep -q "^NAME" "$TMP/man.txt" || fail "man -l $page shows no NAME section"
		fi
	done
	man=$TMP/kapsel.1.txt
	expect_in "$man" "kapsel - a thin paravirtualizing hypervisor on Linux KVM"
	# Both pages name this version (a version bump updates their .TH lines).
	version=$("$KAPSEL" version | awk '{ print $2 }')
	for page in "$man" "$TMP/kapsel-xml.5.txt"; do
		expect_in "$page" "Kapsel $version"
	done
	# The commands: a subsection "kapsel VERB ..." for each, no more.
	help_verbs >"$TMP/help.verbs"
	[ "$(wc -l <"$TMP/help.verbs")" -ge 20 ] || fail "kapsel --help lists only $(wc -l <"$TMP/help.verbs") commands"
	sed -n 's/^   kapsel \([a-z][a-z]*\)\b.*/\1/p' "$man" | sort -u >"$TMP/man.verbs"
	sort -u "$TMP/help.verbs" | diff - "$TMP/man.verbs" >"$TMP/verbs.diff" ||
		{ cat "$TMP/verbs.diff"; fail "kapsel.1's commands (>) differ from kapsel --help's (<)"; }
	# Each command's options, in that command's subsection.
	checked=0
	while read -r verb; do
		awk -v head="   kapsel $verb" '
			index($0, head) == 1 && (length($0) == length(head) || substr($0, length(head) + 1, 1) == " ") { on = 1; next }
			/^   kapsel / || /^[A-Z]/ { on = 0 }
			on' "$man" >"$TMP/section"
		[ -s "$TMP/section" ] || fail "kapsel.1 has no text under 'kapsel $verb'"
		while read -r option; do
			[ -n "$option" ] || continue
			grep -qE -- "(^|[^a-zA-Z0-9-])$option([^a-zA-Z0-9-]|\$)" "$TMP/section" ||
				{ cat "$TMP/section"; fail "kapsel.1 does not describe 'kapsel $verb $option'"; }
			checked=$((checked + 1))
		done < <(help_options "$verb" | grep -vxE -- '-h|--help')
	done <"$TMP/help.verbs"
	[ "$checked" -ge 80 ] || fail "only $checked options checked; did reading --help break?"
	# The XML page names what the parser's messages name.
	for element in "<domain type='xen'>" "<bootloader>" "<memballoon>" "<graphics>" "<os><kernel>"; do
		expect_in "$TMP/kapsel-xml.5.txt" "$element"
	done
	;;
cli-completion) # suite: cli
	# The installed completion loads in a plain bash and completes
	# commands, each command's options, option values and VM names.
	install_destdir
	COMPLETION=$(find "$DEST" -path '*/bash-completion/completions/kapsel' -type f | head -n 1)
	[ -n "$COMPLETION" ] || fail "meson install put no bash-completion/completions/kapsel"
	bash --norc --noprofile -c '. "$1" && complete -p kapsel' bash "$COMPLETION" >"$TMP/complete" 2>&1 ||
		{ cat "$TMP/complete"; fail "the completion does not source in bash"; }
	expect_in "$TMP/complete" "complete -F _kapsel kapsel"
	complete_words kapsel "" >"$TMP/words" || fail "completing commands failed"
	help_verbs | sort >"$TMP/help.verbs"
	grep -vx -- '--help\|--version' "$TMP/words" | sort | diff "$TMP/help.verbs" - ||
		fail "completed commands differ from kapsel --help's"
	[ "$(complete_words kapsel sn)" = snapshot ] || fail "'kapsel sn' does not complete to snapshot"
	complete_words kapsel run --ke >"$TMP/words"
	[ "$(cat "$TMP/words")" = --kernel ] || { cat "$TMP/words"; fail "'kapsel run --ke' is not --kernel"; }
	# Every option of a command, and only options it has.
	for verb in run restore migrate shutdown list; do
		complete_words kapsel "$verb" - | sort >"$TMP/words"
		help_options "$verb" | diff - "$TMP/words" || fail "completed options of $verb differ from its --help"
	done
	complete_words kapsel run --console "" | sort | tr '\n' ' ' >"$TMP/words"
	[ "$(cat "$TMP/words")" = "auto uart " ] || { cat "$TMP/words"; fail "--console values"; }
	# Files for --kernel, domain XML for run's argument.
	touch "$TMP/guest.elf" "$TMP/vm.xml"
	complete_words kapsel run --kernel "$TMP/gu" >"$TMP/words"
	expect_in "$TMP/words" "$TMP/guest.elf"
	complete_words kapsel run "$TMP/v" >"$TMP/words"
	expect_in "$TMP/words" "$TMP/vm.xml"
	# VM names from kapsel list, for a command's VM argument only.
	mkdir -p -m 700 "$KAPSEL_RUNTIME_DIR"
	for vm in web-1 web-2 db; do
		printf 'name %s\ndomid 1\npid %s\nstate running\nuptime_ns 1\nmemory_bytes 1048576\nvcpus 1\n' \
			"$vm" $$ >"$TMP/$vm.info"
		"$FAKE_VM" "$KAPSEL_RUNTIME_DIR/$vm.sock" "$TMP/$vm.info" 2>"$TMP/$vm.err" &
		VMPIDS+=($!)
	done
	for _ in $(seq 100); do [ "$(ls "$KAPSEL_RUNTIME_DIR" | grep -c sock)" = 3 ] && break; sleep 0.02; done
	complete_words kapsel console w | sort | tr '\n' ' ' >"$TMP/words"
	[ "$(cat "$TMP/words")" = "web-1 web-2 " ] || { cat "$TMP/words"; fail "VM names for 'kapsel console w'"; }
	complete_words kapsel shutdown web-1 "" | sort | tr '\n' ' ' >"$TMP/words"
	[ "$(cat "$TMP/words")" = "db web-1 web-2 " ] || { cat "$TMP/words"; fail "shutdown takes several VMs"; }
	complete_words kapsel save db "$TMP/" >"$TMP/words"
	expect_not_in "$TMP/words" "web-1"
	complete_words kapsel console db "" >"$TMP/words"
	[ ! -s "$TMP/words" ] || { cat "$TMP/words"; fail "console takes one VM"; }
	;;
*)
	fail "unknown case '$1'"
	;;
esac
echo "PASS: $1"
