#!/usr/bin/env bash
# run-alloc.sh - runs bench/alloc.c for every allocator, interleaved, and prints a Markdown table of medians;
# then bench/lookup.c. bench/README.md describes the workloads and the variables read here.
#
# The report (table and lookup line) goes to stdout; progress and notes go to stderr,
# so `bench/run-alloc.sh > results.md` keeps only the report.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
build=$here/build

CGC_PREFIX=${CGC_PREFIX:-$root/_install}
# make runs in bench/, so a relative prefix would change meaning: pin it to where we were called.
[[ $CGC_PREFIX == /* ]] || CGC_PREFIX=$PWD/$CGC_PREFIX
REPEAT=${REPEAT:-3}
ALLOCS=${ALLOCS:-20000000}
THREADS=${THREADS:-1 2}
LOOKUP_MB=${LOOKUP_MB:-200}
LOOKUP_WORDS=${LOOKUP_WORDS:-10000000}
LIBDIR=${LIBDIR:-/usr/lib/x86_64-linux-gnu}
MIMALLOC_SO=${MIMALLOC_SO:-$LIBDIR/libmimalloc.so.2}
JEMALLOC_SO=${JEMALLOC_SO:-$LIBDIR/libjemalloc.so.2}
TCMALLOC_SO=${TCMALLOC_SO:-$LIBDIR/libtcmalloc_minimal.so.4}

note() { printf 'run-alloc: %s\n' "$*" >&2; }
die() { note "$*"; exit 1; }

for v in REPEAT ALLOCS LOOKUP_MB LOOKUP_WORDS; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
for t in $THREADS; do
	[[ $t =~ ^[1-9][0-9]*$ ]] || die "THREADS must list positive integers, not '$THREADS'"
done

mkdir -p "$build"

# cgc: build and install it into the prefix if it is not there yet. The library may not
# build at every commit; then the anchors still run and cgc is left out with a note.
have_cgc=1
if [[ ! -e $CGC_PREFIX/lib/libcgc.so ]]; then
	log=$build/cgc-build.log
	note "no $CGC_PREFIX/lib/libcgc.so: building cgc into $CGC_PREFIX (log: $log)"
	if [[ ! -f $root/configure.ac ]]; then
		note "no configure.ac in $root yet: skipping cgc"
		have_cgc=0
	elif ! (cd "$root" && autoreconf -fi && ./configure --prefix="$CGC_PREFIX" &&
		make -j2 && make install) >"$log" 2>&1; then
		tail -n 20 "$log" >&2 || true
		note "cgc did not build (see $log): skipping cgc"
		have_cgc=0
	fi
fi

make -s -C "$here" CGC_PREFIX="$CGC_PREFIX" build/alloc-malloc build/alloc-calloc >&2 ||
	die "cannot build the malloc variants of bench/alloc.c"

# Two groups, each measured against its own kind: "malloc" (old contents: malloc,
# cgc_malloc_atomic) and "calloc" (zeroed: calloc, cgc_malloc, GC_MALLOC). NAME+calloc runs the
# calloc build under the same preload as NAME.
malloc_group=(glibc)
for pair in "mimalloc:$MIMALLOC_SO" "jemalloc:$JEMALLOC_SO" "tcmalloc:$TCMALLOC_SO"; do
	name=${pair%%:*} so=${pair#*:}
	if [[ -e $so ]]; then
		malloc_group+=("$name")
	else
		note "$so not found: skipping $name"
	fi
done
calloc_group=()
for name in "${malloc_group[@]}"; do calloc_group+=("$name+calloc"); done
allocators=("${malloc_group[@]}" "${calloc_group[@]}")
if [[ $have_cgc == 1 ]]; then
	if make -s -C "$here" CGC_PREFIX="$CGC_PREFIX" cgc >&2; then
		allocators+=(cgc-atomic cgc)
		malloc_group+=(cgc-atomic)
		calloc_group+=(cgc)
	else
		note "cannot build the cgc benchmarks against $CGC_PREFIX: skipping cgc"
		have_cgc=0
	fi
fi
if make -s -C "$here" CGC_PREFIX="$CGC_PREFIX" build/alloc-bdwgc >&2; then
	allocators+=(bdwgc)
	calloc_group+=(bdwgc)
else
	note "cannot build against bdwgc (is libgc-dev installed?): skipping bdwgc"
fi

# One run of one allocator; prints the program's line. Preloading is checked, because
# ld.so only warns when it cannot preload and the run would silently measure glibc.
errf=$build/run.err
run_one() {
	local name=$1 threads=$2 bin=$build/alloc-malloc out
	local -a envs=(env -u LD_PRELOAD -u GC_MARKERS)
	if [[ $name == *+calloc ]]; then
		bin=$build/alloc-calloc
		name=${name%+calloc}
	fi
	case $name in
	glibc) ;;
	mimalloc) envs+=("LD_PRELOAD=$MIMALLOC_SO") ;;
	jemalloc) envs+=("LD_PRELOAD=$JEMALLOC_SO") ;;
	tcmalloc) envs+=("LD_PRELOAD=$TCMALLOC_SO") ;;
	cgc) bin=$build/alloc-cgc ;;
	cgc-atomic) bin=$build/alloc-cgc-atomic ;;
	bdwgc)
		bin=$build/alloc-bdwgc
		envs+=(GC_MARKERS=2)
		;;
	*) die "unknown allocator $name" ;;
	esac
	out=$("${envs[@]}" "$bin" "$threads" "$ALLOCS" 2>"$errf") || {
		cat "$errf" >&2
		return 1
	}
	if grep -q 'ld\.so' "$errf"; then
		cat "$errf" >&2
		return 1
	fi
	printf '%s\n' "$out"
}

# Value of key=value in one result line.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }

median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
		END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A ns_runs rss_runs
failed=0
raw=$build/alloc-raw.txt
: >"$raw"
n=${#allocators[@]}
for t in $THREADS; do
	for ((rep = 0; rep < REPEAT; rep++)); do
		# Round-robin inside each repeat so machine noise hits every allocator alike; the
		# starting point rotates too, so none is always run first (or right after another).
		for ((k = 0; k < n; k++)); do
			name=${allocators[(k + rep) % n]}
			if ! line=$(run_one "$name" "$t"); then
				note "$name threads=$t failed"
				failed=1
				continue
			fi
			printf '%s %s\n' "$name" "$line" >>"$raw"
			ns=$(field "$line" ns_per_op)
			rss=$(field "$line" maxrss_kb)
			[[ -n $ns && -n $rss ]] || die "cannot parse the output of $name: $line"
			ns_runs[$name,$t]+="$ns "
			rss_runs[$name,$t]+="$rss "
			note "threads=$t repeat $((rep + 1))/$REPEAT $name: $ns ns/op, $rss KiB"
		done
	done
done

echo "alloc: $ALLOCS allocations of 8..256 bytes, window 10000 per thread, median of $REPEAT interleaved runs" \
	"($(nproc) CPUs, $(uname -sr))"
echo
# table GROUP_TITLE REFERENCE NAME...: one Markdown table, ratios against REFERENCE.
table() {
	local title=$1 ref=$2 t name ns rss ref_ns ref_rss
	shift 2
	echo
	echo "$title"
	echo
	echo "| allocator | threads | ns/alloc (median) | ratio to $ref | peak RSS MiB | RSS ratio to $ref |"
	echo "|---|---:|---:|---:|---:|---:|"
	for t in $THREADS; do
		ref_ns='' ref_rss=''
		if [[ -n ${ns_runs[$ref,$t]:-} ]]; then
			# Word splitting of the run lists is wanted: one argument per run.
			# shellcheck disable=SC2086
			ref_ns=$(median ${ns_runs[$ref,$t]})
			# shellcheck disable=SC2086
			ref_rss=$(median ${rss_runs[$ref,$t]})
		fi
		for name in "$@"; do
			if [[ -z ${ns_runs[$name,$t]:-} ]]; then
				echo "| $name | $t | failed | | | |"
				continue
			fi
			# shellcheck disable=SC2086
			ns=$(median ${ns_runs[$name,$t]})
			# shellcheck disable=SC2086
			rss=$(median ${rss_runs[$name,$t]})
			awk -v name="$name" -v t="$t" -v ns="$ns" -v rss="$rss" -v rns="$ref_ns" -v rrss="$ref_rss" \
				'BEGIN {
					nr = rns + 0 > 0 ? sprintf("%.2f", ns / rns) : "n/a"
					rr = rrss + 0 > 0 ? sprintf("%.2f", rss / rrss) : "n/a"
					printf "| %s | %d | %.1f | %s | %.1f | %s |\n", name, t, ns, nr, rss / 1024, rr
				}'
		done
	done
}
table "Memory with old contents: malloc/free, cgc_malloc_atomic/cgc_free" mimalloc "${malloc_group[@]}"
table "Zeroed memory: calloc/free, cgc_malloc/cgc_free, GC_MALLOC (bdwgc frees nothing)" \
	mimalloc+calloc "${calloc_group[@]}"

# Producer/consumer: every free is remote. Same interleaving, medians over REPEAT.
make -s -C "$here" CGC_PREFIX="$CGC_PREFIX" build/remote-malloc >&2 || die "cannot build bench/remote.c"
remote_names=("${malloc_group[@]}")
[[ $have_cgc == 1 ]] && remote_names=("${remote_names[@]/cgc-atomic/cgc}")
declare -A remote_runs
for ((rep = 0; rep < REPEAT; rep++)); do
	for name in "${remote_names[@]}"; do
		bin=$build/remote-malloc
		envs=(env -u LD_PRELOAD)
		case $name in
		mimalloc) envs+=("LD_PRELOAD=$MIMALLOC_SO") ;;
		jemalloc) envs+=("LD_PRELOAD=$JEMALLOC_SO") ;;
		tcmalloc) envs+=("LD_PRELOAD=$TCMALLOC_SO") ;;
		cgc) bin=$build/remote-cgc ;;
		esac
		if line=$("${envs[@]}" "$bin" "$ALLOCS" 2>"$errf"); then
			remote_runs[$name]+="$(field "$line" ns_per_op) "
		else
			cat "$errf" >&2
			note "remote $name failed"
			failed=1
		fi
	done
done
echo
echo "Producer/consumer (bench/remote.c): one thread allocates 8..256 bytes, another frees all of"
echo "it; median ns per object over $REPEAT runs (spin-waiting on $(nproc) CPUs: noisy)"
echo
echo "| allocator | ns/object (median) |"
echo "|---|---:|"
for name in "${remote_names[@]}"; do
	# shellcheck disable=SC2086
	[[ -n ${remote_runs[$name]:-} ]] && printf '| %s | %s |\n' "$name" "$(median ${remote_runs[$name]})"
done

if [[ $have_cgc == 1 ]]; then
	echo
	note "lookup: $LOOKUP_MB MB of objects, $LOOKUP_WORDS words"
	if ! "$build/lookup" "$LOOKUP_MB" "$LOOKUP_WORDS"; then
		note "lookup failed"
		failed=1
	fi
	# The same words through the collector's inline lookup, from a build tree (make builds it).
	inline=${CGC_BUILD:-$root/_build}/bench/lookup_inline
	if [[ -x $inline ]]; then
		"$inline" "$LOOKUP_MB" "$LOOKUP_WORDS" || { note "lookup_inline failed"; failed=1; }
	else
		note "no $inline (configure and make in ${CGC_BUILD:-$root/_build}): skipping the inline lookup"
	fi
else
	note "cgc not available: skipping lookup"
fi
exit "$failed"
