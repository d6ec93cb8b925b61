#!/bin/sh
# .ci/deps.sh - installs what building and testing cgc needs on Debian (run as root, or with sudo
# available). Sourced by examples/demo.sh and tests/run-all.sh; safe to run twice.
set -e
CGC_DEB_PACKAGES="build-essential autoconf automake libtool pkg-config check libunwind-dev valgrind \
libgc-dev libmimalloc-dev libjemalloc-dev libtcmalloc-minimal4 binutils libxml2-utils"
cgc_missing=""
for p in $CGC_DEB_PACKAGES; do
	dpkg -s "$p" >/dev/null 2>&1 || cgc_missing="$cgc_missing $p"
done
if [ -n "$cgc_missing" ]; then
	if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
	echo "installing:$cgc_missing"
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
	# shellcheck disable=SC2086
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $cgc_missing
fi
