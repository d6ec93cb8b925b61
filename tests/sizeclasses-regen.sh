#!/bin/sh
# sizeclasses-regen.sh - checks that alloc/sizeclasses.{h,c} are what tools/mksizeclasses generates.
# See doc/design/allocator-sizeclasses.md (and doc/design/allocator.md) for how the table is made.
#
# A failure means someone edited the generated files by hand, or changed the generator without
# regenerating them. Fix: ./tools/mksizeclasses alloc, from the top of the tree.
#
# Environment: top_srcdir (default: this script's directory/..), MKSIZECLASSES (the built generator;
# default ./tools/mksizeclasses). Exit status 0 on success, 1 on failure.

top_srcdir=${top_srcdir:-$(dirname "$0")/..}
MKSIZECLASSES=${MKSIZECLASSES:-./tools/mksizeclasses}

if [ ! -x "$MKSIZECLASSES" ]; then
	echo "sizeclasses-regen: generator $MKSIZECLASSES not found or not executable" >&2
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sizeclasses.XXXXXX") || {
	echo "sizeclasses-regen: cannot create a temporary directory" >&2
	exit 1
}
trap 'rm -rf "$tmp"' EXIT
# Without this, an interrupt would end the script before the EXIT trap could clean up in some shells.
trap 'exit 1' HUP INT TERM

if ! "$MKSIZECLASSES" "$tmp"; then
	echo "sizeclasses-regen: $MKSIZECLASSES failed" >&2
	exit 1
fi

status=0
for f in sizeclasses.h sizeclasses.c; do
	if ! diff -u "$top_srcdir/alloc/$f" "$tmp/$f"; then
		echo "sizeclasses-regen: alloc/$f differs from the generator's output (see the diff above);" \
			"regenerate it with: $MKSIZECLASSES $top_srcdir/alloc" >&2
		status=1
	fi
done
exit $status
