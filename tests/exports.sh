#!/bin/sh
# tests/exports.sh - the shared library exports cgc_* symbols, the three C library functions it
# interposes (pthread_create registers new threads, dlopen/dlclose wait for a collection's root
# scan: doc/design/collector.md 3.1 and 4.1), and nothing else of ours.
lib="${top_builddir:-.}/.libs/libcgc.so"
[ -f "$lib" ] || { echo "no $lib"; exit 1; }
syms=$(nm -D --defined-only "$lib" | awk '{print $3}')
bad=$(echo "$syms" | grep -v '^cgc_' | grep -v '^_' | grep -v -x -e pthread_create -e dlopen -e dlclose | grep -v '^$')
if [ -n "$bad" ]; then
	echo "unexpected exported symbols:"; echo "$bad"; exit 1
fi
for f in pthread_create dlopen dlclose; do
	echo "$syms" | grep -q -x "$f" || { echo "$f is not interposed"; exit 1; }
done
n=$(echo "$syms" | grep -c '^cgc_')
echo "libcgc.so exports $n cgc_ symbols, pthread_create, dlopen and dlclose, and nothing else"
[ "$n" -ge 17 ]
