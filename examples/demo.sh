#!/bin/sh
# examples/demo.sh - the main demonstration: installs dependencies, builds cgc, installs it into
# ./_install, builds the examples against the installed library with pkg-config, and runs them:
# examples/stats.c (the allocator's statistics), then examples/gcdemo.c (the collector, traced with
# CGC_DEBUG=gctrace=1; the trace becomes _build/gcdemo.svg with cgc-trace).
set -e
cd "$(dirname "$0")/.."
. ./.ci/deps.sh
if [ ! -x configure ]; then
	mkdir -p m4
	autoreconf -fi >autoreconf.log 2>&1 || { cat autoreconf.log; exit 1; }
fi
top=$PWD
mkdir -p _build
(cd _build && ../configure -q --prefix="$top/_install" && make -s -j"$(nproc)" LIBTOOLFLAGS=--silent &&
	make -s install >install.log 2>&1) || { echo "demo: build or install failed (see _build/)"; exit 1; }
export PKG_CONFIG_PATH="$top/_install/lib/pkgconfig"
# shellcheck disable=SC2046
cc -std=c11 -O2 -o _build/demo examples/stats.c $(pkg-config --cflags --libs cgc) -pthread \
	-Wl,-rpath,"$top/_install/lib"
# shellcheck disable=SC2046
cc -std=c11 -O2 -o _build/gcdemo examples/gcdemo.c $(pkg-config --cflags --libs cgc) -pthread \
	-Wl,-rpath,"$top/_install/lib"
echo "== built against: $(pkg-config --libs cgc)"
echo "== examples/stats.c: the allocator"
./_build/demo
echo "== examples/gcdemo.c: the collector (one gctrace line per cycle; man 7 cgc explains them)"
CGC_DEBUG=gctrace=1 ./_build/gcdemo 2>_build/gcdemo.trace
head -n 3 _build/gcdemo.trace
echo "   ... ($(wc -l <_build/gcdemo.trace) cycles in all)"
"$top/_install/bin/cgc-trace" -t "examples/gcdemo.c" -o _build/gcdemo.svg _build/gcdemo.trace
echo "== the whole run as a picture: _build/gcdemo.svg" 
