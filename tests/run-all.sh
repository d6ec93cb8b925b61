#!/bin/sh
# tests/run-all.sh - the whole test suite, as CI runs it: installs dependencies, then builds and
# runs `make check` in four varieties: optimized, --enable-debug (validators on), under valgrind
# memcheck, and with AddressSanitizer + UndefinedBehaviorSanitizer.
set -e
cd "$(dirname "$0")/.."
. ./.ci/deps.sh
autoreconf -fi >/dev/null 2>&1
top=$PWD
jobs=$(nproc)
fail=0

variety() { # name, configure arguments...
	name=$1
	shift
	echo "=================== $name ==================="
	rm -rf "_test/$name"
	mkdir -p "_test/$name"
	(cd "_test/$name" && "$top/configure" -q "$@" && make -s -j"$jobs") || return 1
}

run_check() { # name
	if ! (cd "_test/$1" && make -s -j"$jobs" check); then
		for log in "_test/$1"/tests/*.log; do
			grep -q -E '^(FAIL|ERROR)' "$log" 2>/dev/null || continue
			echo "---- $log"
			tail -n 60 "$log"
		done
		return 1
	fi
	cat "_test/$1"/tests/*.log | grep -E '^[0-9]+%: Checks' || true
}

variety release && run_check release || fail=1
variety debug --enable-debug && run_check debug || fail=1
echo "=================== valgrind ==================="
(cd _test/release && make -s check-valgrind) || fail=1
variety sanitize CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	LDFLAGS="-fsanitize=address,undefined" &&
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 run_check sanitize || fail=1

if [ "$fail" = 0 ]; then echo "run-all: every variety passed"; else echo "run-all: FAILED"; fi
exit "$fail"
