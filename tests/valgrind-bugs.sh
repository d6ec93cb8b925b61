#!/bin/sh
# tests/valgrind-bugs.sh - valgrind on a cgc program reports the program's heap bugs, and nothing
# on a correct one. Skipped (exit 77) when valgrind is not installed.
command -v valgrind >/dev/null 2>&1 || { echo "no valgrind: skipped"; exit 77; }
# A sanitizer build cannot run under valgrind.
if nm ./tests/vg_bugs 2>/dev/null | grep -q -E '__asan_init|__tsan_init'; then
	echo "sanitizer build: skipped"
	exit 77
fi
prog=./tests/vg_bugs
fail=0
expect() { # case, text memcheck must print (empty: must print no error)
	out=$(valgrind --error-exitcode=3 "$prog" "$1" 2>&1)
	rc=$?
	if [ -z "$2" ]; then
		if [ "$rc" != 0 ]; then echo "FAIL: $1: memcheck reported errors on a correct program"; echo "$out"; fail=1
		else echo "ok: $1: memcheck reports nothing"; fi
	elif [ "$rc" != 3 ] || ! printf '%s\n' "$out" | grep -q "$2"; then
		echo "FAIL: $1: expected memcheck to report '$2' (exit $rc)"; echo "$out"; fail=1
	else
		echo "ok: $1: memcheck reports '$2'"
	fi
}
expect use-after-free "Invalid write of size 1"
expect overrun "Invalid read of size 1"
expect uninitialised "depends on uninitialised value"
expect clean ""
exit $fail
