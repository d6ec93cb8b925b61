#!/bin/sh
# examples/demo.sh - the main demonstration: installs dependencies, builds cgc, installs it into
# ./_install, builds examples/stats.c against the installed library with pkg-config, runs it.
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
echo "== built against: $(pkg-config --libs cgc)"
./_build/demo
