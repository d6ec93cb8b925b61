#!/bin/sh
# tests/exports.sh - the shared library exports cgc_* symbols and nothing else of ours.
lib="${top_builddir:-.}/.libs/libcgc.so"
[ -f "$lib" ] || { echo "no $lib"; exit 1; }
bad=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^cgc_' | grep -v '^_' | grep -v '^$')
if [ -n "$bad" ]; then
	echo "exported symbols without the cgc_ prefix:"; echo "$bad"; exit 1
fi
n=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -c '^cgc_')
echo "libcgc.so exports $n cgc_ symbols and nothing else"
[ "$n" -ge 8 ]
