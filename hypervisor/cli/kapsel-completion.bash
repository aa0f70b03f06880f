# Bash completion for kapsel: commands, each command's options (read from its --help, so they cannot go stale), VM names (kapsel list --names), files.
# Installed by meson install as bash-completion/completions/kapsel.

# _kapsel_options CMD ARGS...: the options CMD ARGS --help defines, from
# its Usage: line ("[--stop]") and its option lines ("  -k, --kernel
# FILE", "      --rng[=SPEC]"), not options its prose mentions.
_kapsel_options() {
	"$@" --help 2>/dev/null |
		sed -nE -e 's/^Usage:(.*)/\1/p' \
			-e 's/^[[:space:]]+((-[a-zA-Z], )?--?[a-zA-Z][a-zA-Z0-9-]*).*/\1/p' |
		grep -oE -- '(^|[[:space:],[(|])--?[a-zA-Z][a-zA-Z0-9-]*' |
		sed -E 's/^[[:space:],[(|]*//' | sort -u
}

# The commands 'kapsel --help' lists (its "Commands:" section).
_kapsel_commands() {
	"$1" --help 2>/dev/null |
		sed -n '/^Commands:/,/^Run /s/^  \([a-z][a-z]*\)  .*/\1/p'
}

_kapsel() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=""
	local kapsel=${COMP_WORDS[0]}
	[ "$COMP_CWORD" -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD - 1]}
	COMPREPLY=()
	# An installed or a build tree's kapsel, as typed; ~ expanded.
	kapsel=${kapsel/#\~/$HOME}
	command -v "$kapsel" >/dev/null 2>&1 || kapsel=kapsel

	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "$(_kapsel_commands "$kapsel") --help --version" -- "$cur"))
		return 0
	fi
	local verb=${COMP_WORDS[1]}

	# Values of options: files, folders, or a fixed set.
	case "$verb:$prev" in
	*:-k | *:--kernel | *:--console-output | *:--stats-file | *:--psk | bench:--disk | \
		bench:--kapsel | bench:--guest | bench:--cpu-guest | run:-d | run:--disk)
		COMPREPLY=($(compgen -f -- "$cur"))
		compopt -o filenames 2>/dev/null
		return 0
		;;
	*:--save-on-signal | *:--jail | *:--console-dir | *:--output-dir)
		COMPREPLY=($(compgen -d -- "$cur"))
		compopt -o filenames 2>/dev/null
		return 0
		;;
	*:--console) COMPREPLY=($(compgen -W "auto uart" -- "$cur")); return 0 ;;
	bench:--format) COMPREPLY=($(compgen -W "table json" -- "$cur")); return 0 ;;
	bench:--cache) COMPREPLY=($(compgen -W "none writeback both" -- "$cur")); return 0 ;;
	bench:--paths) COMPREPLY=($(compgen -W "native pv emulated native,pv,emulated" -- "$cur")); return 0 ;;
	*:-m | *:--memory | *:--vcpus | *:-c | *:--cmdline | *:-n | *:--name | *:--net | \
		*:--incoming | *:-t | *:--timeout | *:--max-downtime-ms | *:-p | *:--prefix | \
		*:--count | *:--user)
		return 0 # a value only the user knows
		;;
	bench:--*)
		# bench: every option but these flags takes a value.
		case "$prev" in
		--cpu | --quick | --no-fio | --no-chart | --verbose | --help) ;;
		*) return 0 ;;
		esac
		;;
	esac

	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$(_kapsel_options "$kapsel" "$verb")" -- "$cur"))
		return 0
	fi

	# Positional arguments: how many came before this one (options and
	# their values are not counted well for every verb; good enough here).
	case "$verb" in
	help)
		[ "$COMP_CWORD" -eq 2 ] && COMPREPLY=($(compgen -W "$(_kapsel_commands "$kapsel")" -- "$cur"))
		;;
	run)
		COMPREPLY=($(compgen -f -X '!*.xml' -- "$cur") $(compgen -d -- "$cur"))
		compopt -o filenames 2>/dev/null
		;;
	restore | clone | inspect | merge)
		COMPREPLY=($(compgen -d -- "$cur"))
		compopt -o filenames 2>/dev/null
		;;
	info | pause | resume | shutdown | destroy | reboot | stats | console | dumpxml | control | \
		save | snapshot | migrate)
		local i positional=0
		for ((i = 2; i < COMP_CWORD; i++)); do
			case "${COMP_WORDS[i]}" in
			-t | --timeout | --psk | --max-downtime-ms | --max-downtime | --max-rounds | -w | --watch) ((i++)) ;;
			-*) ;;
			*) ((positional++)) ;;
			esac
		done
		case "$verb:$positional" in
		shutdown:* | destroy:* | reboot:* | *:0)
			COMPREPLY=($(compgen -W "$("$kapsel" list --names 2>/dev/null)" -- "$cur"))
			;;
		save:1 | snapshot:1)
			COMPREPLY=($(compgen -d -- "$cur"))
			compopt -o filenames 2>/dev/null
			;;
		migrate:1) COMPREPLY=($(compgen -W "tcp:" -- "$cur")) ;;
		esac
		;;
	esac
	return 0
}
complete -F _kapsel kapsel
