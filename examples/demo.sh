#!/bin/sh
# examples/demo.sh - the main demonstration: installs dependencies, builds cgc, installs it into
# ./_install, builds examples/stats.c against the installed library with pkg-config, runs it.
set -e
cd "$(dirname "$0")/.."
. ./.ci/deps.sh
[ -x configure ] || autoreconf -fi
mkdir -p _build
(cd _build && ../configure -q --prefix="$PWD/../_install" && make -s -j"$(nproc)" && make -s install)
export PKG_CONFIG_PATH="$PWD/_install/lib/pkgconfig"
# shellcheck disable=SC2046
cc -std=c11 -O2 -o _build/demo examples/stats.c $(pkg-config --cflags --libs cgc) -pthread \
	-Wl,-rpath,"$PWD/_install/lib"
echo "== built against: $(pkg-config --libs cgc)"
./_build/demo
