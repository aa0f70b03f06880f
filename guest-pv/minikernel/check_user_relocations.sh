#!/bin/sh
# Checks that the minikernel's user programs are position independent: only pc-relative relocations outside debug info.
# Usage: check_user_relocations.sh OBJDUMP libminikernel-user.a
# The kernel copies that code to another address (user_abi.h), so an
# absolute relocation (a pointer in initialized data, an absolute call)
# would point into the kernel image, which user mode cannot see.
set -eu
objdump=$1 archive=$2
bad=$("$objdump" -r "$archive" | awk '
	/^RELOCATION RECORDS FOR/ { section = $4; next }
	/R_X86_64_/ && section !~ /debug/ && $2 != "R_X86_64_PC32" && $2 != "R_X86_64_PLT32" {
		print section, $2, $3
	}')
if [ -n "$bad" ]; then
	echo "user.c must be position independent; these relocations are absolute:" >&2
	echo "$bad" >&2
	exit 1
fi
count=$("$objdump" -r "$archive" | grep -c 'R_X86_64_PC32' || true)
[ "$count" -gt 0 ] || { echo "no relocations found in $archive: wrong file?" >&2; exit 1; }
echo "user programs: $count pc-relative relocations, none absolute"
