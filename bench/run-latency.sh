#!/usr/bin/env bash
# run-latency.sh - pauses and throughput of the concurrent collector: GCBench at several live depths, cgc with and
# without the write barrier and stopped-world, bdwgc stopped-world and incremental; Markdown tables of medians.
#
# Usage: bench/run-latency.sh   (or sh bench/run-latency.sh); bench/README.md describes the variables read here.
# The report goes to stdout, progress and notes to stderr: `bench/run-latency.sh > latency.md`.

# Started by sh: the rest is bash (arrays), so hand over before reading it.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
build=$here/build

CGC_PREFIX=${CGC_PREFIX:-$root/_install}
# make runs in bench/, so a relative prefix would change meaning: pin it to where we were called.
[[ $CGC_PREFIX == /* ]] || CGC_PREFIX=$PWD/$CGC_PREFIX
REPEAT=${REPEAT:-3}
DEPTHS=${DEPTHS:-20 22 24}
WORK=${WORK-20}

note() { printf 'run-latency: %s\n' "$*" >&2; }
die() { note "$*"; exit 1; }

[[ $# -eq 0 ]] || die "usage: $0 (no arguments; set DEPTHS, WORK, REPEAT, CGC_PREFIX instead)"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer, not '$REPEAT'"
[[ -n ${DEPTHS// /} ]] || die "DEPTHS is empty"
for d in $DEPTHS; do
	if ! [[ $d =~ ^[0-9]+$ ]] || ((d < 4 || d > 28)); then
		die "DEPTHS must list live depths of 4..28, not '$DEPTHS'"
	fi
done
if [[ -n $WORK ]] && { ! [[ $WORK =~ ^[0-9]+$ ]] || ((WORK < 6 || WORK > 28)); }; then
	die "WORK must be 6..28 (gcbench -w), or empty for gcbench's default shape, not '$WORK'"
fi

mkdir -p "$build"

# cgc: build and install it into the prefix if it is not there yet, out of tree in _build as
# examples/demo.sh does. If it does not build, bdwgc still runs and the cgc rows show "n/a".
if [[ ! -e $CGC_PREFIX/lib/libcgc.so ]]; then
	log=$build/cgc-build.log
	note "no $CGC_PREFIX/lib/libcgc.so: building cgc into $CGC_PREFIX (log: $log)"
	if ! (cd "$root" && mkdir -p m4 && autoreconf -fi && mkdir -p _build && cd _build &&
		../configure -q --prefix="$CGC_PREFIX" && make -j2 && make install) >"$log" 2>&1; then
		tail -n 20 "$log" >&2 || true
		note "cgc did not build (see $log)"
	fi
fi

# have[TARGET]=1 for every benchmark binary that built; a missing one makes its rows n/a.
declare -A have
for target in gcbench-cgc gcbench-cgc-barrier gcbench-bdwgc; do
	if make -s -C "$here" CGC_PREFIX="$CGC_PREFIX" "build/$target" >&2 2>"$build/make-$target.log"; then
		have[$target]=1
	else
		note "cannot build bench/build/$target (see $build/make-$target.log): its rows are n/a"
	fi
done

# The variants, in table order, and the binary each runs.
all_variants=(cgc-barrier cgc-nobarrier cgc-stw bdwgc-stw bdwgc-inc)
declare -A binary=(
	[cgc-barrier]=gcbench-cgc-barrier [cgc-nobarrier]=gcbench-cgc [cgc-stw]=gcbench-cgc
	[bdwgc-stw]=gcbench-bdwgc [bdwgc-inc]=gcbench-bdwgc
)
variants=()
for v in "${all_variants[@]}"; do
	[[ -n ${have[${binary[$v]}]:-} ]] && variants+=("$v")
done
((${#variants[@]} > 0)) || die "no benchmark binary built; nothing to run"

# Value of key=value in one result line.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }

median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
		END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Median of the runs recorded under KEY, or empty when there are none.
declare -A runs
med() {
	local key=$1
	[[ -n ${runs[$key]:-} ]] || return 0
	# Word splitting of the run list is wanted: one argument per run.
	# shellcheck disable=SC2086
	median ${runs[$key]}
}

# Smallest of the runs recorded under KEY, or empty: the run the machine's noise disturbed least.
best() {
	local key=$1
	[[ -n ${runs[$key]:-} ]] || return 0
	# shellcheck disable=SC2086
	printf '%s\n' ${runs[$key]} | sort -g | head -n 1
}

# Runs "$@", prints its stdout, keeps its stderr in $errf; on failure shows the stderr and fails.
errf=$build/latency-run.err
run_checked() {
	local out
	out=$("$@" 2>"$errf") || {
		cat "$errf" >&2
		return 1
	}
	printf '%s\n' "$out"
}

# One run of VARIANT at DEPTH with gcbench's extra arguments; prints the result line. The
# environment is cleared of every knob that would change what the variant means.
latency_one() {
	local v=$1 depth=$2
	shift 2
	local -a cmd=(env -u LD_PRELOAD -u CGC_DEBUG -u GC_MARKERS -u GC_ENABLE_INCREMENTAL)
	case $v in
	cgc-stw) cmd+=(CGC_DEBUG=stw=1) ;;
	bdwgc-*) cmd+=(GC_MARKERS=2) ;;
	esac
	cmd+=("$build/${binary[$v]}" -d "$depth")
	[[ -n $WORK ]] && cmd+=(-w "$WORK")
	[[ $v == bdwgc-inc ]] && cmd+=(-i)
	run_checked "${cmd[@]}" "$@"
}

# Checks that the run was the variant it claims to be; a note (once per problem) when not.
declare -A warned
check_variant() {
	local v=$1 line=$2 problem=''
	case $v in
	cgc-barrier) [[ $(field "$line" barrier) == 1 ]] || problem="the program did not report barrier=1" ;;
	cgc-stw) grep -q 'unknown key "stw"' "$errf" && problem="this cgc does not know CGC_DEBUG=stw=1: the row is its default collector" ;;
	bdwgc-inc) [[ $(field "$line" incremental) == 1 ]] || problem="GC_enable_incremental() did not take (GC_is_incremental_mode() is 0)" ;;
	esac
	[[ $(field "$line" alloc) == "${v%%-*}" ]] || problem="the program ran on $(field "$line" alloc)"
	if [[ -n $problem && -z ${warned[$v]:-} ]]; then
		warned[$v]=$problem
		note "$v: $problem"
	fi
}

failed=0
raw=$build/latency-raw.txt
: >"$raw"
n=${#variants[@]}
note "${#variants[@]} variants x $(wc -w <<<"$DEPTHS") depths x 2 runs x $REPEAT rounds (at depth 24, WORK=20: 5 to 20 s a run)"

# Each variant runs twice at each depth and round: once timed as a whole, once with every
# allocation timed (-l), since the two counter reads per allocation cost about as much as a
# fast allocation. Within a depth the variants go round from a different start each round, so
# noise on a shared machine falls on all of them alike.
for ((rep = 0; rep < REPEAT; rep++)); do
	for depth in $DEPTHS; do
		for ((k = 0; k < n; k++)); do
			v=${variants[(k + rep) % n]}
			for mode in timed latency; do
				args=()
				[[ $mode == latency ]] && args=(-l)
				if ! line=$(latency_one "$v" "$depth" "${args[@]}"); then
					note "gcbench $v depth $depth $mode failed"
					failed=1
					continue
				fi
				printf '%s %s %s\n' "$v" "$mode" "$line" >>"$raw"
				check_variant "$v" "$line"
				if [[ $mode == latency ]]; then
					runs[$v,$depth,worst]+="$(field "$line" worst_alloc_ns) "
					note "round $((rep + 1))/$REPEAT depth $depth $v: worst allocation $(field "$line" worst_alloc_ns) ns"
					continue
				fi
				for f in seconds maxrss_kb max_pause_ns collections; do
					x=$(field "$line" "$f")
					[[ $x =~ ^[0-9.]+$ ]] && runs[$v,$depth,$f]+="$x "
				done
				note "round $((rep + 1))/$REPEAT depth $depth $v: $(field "$line" seconds) s, max pause $(field "$line" max_pause_ns) ns"
			done
		done
	done
done

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "Latency benchmark (bench/run-latency.sh), commit $commit, $(nproc) CPUs, $(uname -sr);"
echo "medians of $REPEAT interleaved rounds"
echo
if [[ -n $WORK ]]; then
	echo "GCBench in Boehm's shape with work depth $WORK (gcbench -w $WORK: a stretch tree of depth $WORK, then"
	echo "2·N($WORK) nodes of short-lived trees per depth 4..$((WORK - 2))) beside a long-lived tree of the live depth."
else
	echo "GCBench in its default shape (the short-lived work grows with the live depth)."
fi
live=''
for depth in $DEPTHS; do
	live+=$(awk -v d="$depth" 'BEGIN { n = 2 ^ (d + 1) - 1; printf "%s%d: %.0f MB", "'"${live:+, }"'", d, n * 24 / 1e6 }')
done
echo "Live tree at each depth (24-byte nodes; bdwgc's 32-byte slots hold a third more): $live."
echo "cgc-barrier: every pointer store through CGC_WRITE, cgc_set_barrier(1). cgc-nobarrier: plain stores, no promise."
echo "cgc-stw: plain stores, CGC_DEBUG=stw=1. bdwgc-stw: GC_MARKERS=2. bdwgc-inc: GC_MARKERS=2, GC_enable_incremental()."
echo "Time, max pause and peak RSS from a run timed as a whole; worst allocation from a second run timing each one."
echo "Best time: the fastest of the rounds, less disturbed by other work on a shared machine than the median."
echo "Max pause: the collector's longest stop of the world by its own account (cgc_get_stats; bdwgc's stop/start events)."
echo
echo "| variant | live depth | time s | best time s | worst allocation ms | max pause ms | peak RSS MiB | collections |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for depth in $DEPTHS; do
	for v in "${all_variants[@]}"; do
		awk -v v="$v" -v d="$depth" -v s="$(med "$v,$depth,seconds")" -v b="$(best "$v,$depth,seconds")" \
			-v w="$(med "$v,$depth,worst")" \
			-v p="$(med "$v,$depth,max_pause_ns")" -v rss="$(med "$v,$depth,maxrss_kb")" \
			-v c="$(med "$v,$depth,collections")" 'function f(x, scale, fmt) {
				return x == "" ? "n/a" : sprintf(fmt, x / scale)
			}
			BEGIN {
				printf "| %s | %d | %s | %s | %s | %s | %s | %s |\n", v, d, f(s, 1, "%.3f"), f(b, 1, "%.3f"), f(w, 1e6, "%.3f"),
					f(p, 1e6, "%.3f"), f(rss, 1024, "%.1f"), f(c, 1, "%d")
			}'
	done
done

# ratio A B: A/B, or nothing when either is missing.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b + 0 > 0) printf "%.4f", a / b }'; }
# r3 VALUE: three decimals, or n/a.
r3() { awk -v x="$1" 'BEGIN { if (x == "") print "n/a"; else printf "%.3f", x }'; }

echo
echo "| live depth | time: cgc-barrier / cgc-stw | best time: cgc-barrier / cgc-stw | time: cgc-nobarrier / cgc-stw | max pause: cgc-nobarrier / bdwgc-stw | max pause: cgc-barrier / bdwgc-stw | worst allocation: cgc-nobarrier / bdwgc-stw |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for depth in $DEPTHS; do
	stw_s=$(med "cgc-stw,$depth,seconds")
	bdw_p=$(med "bdwgc-stw,$depth,max_pause_ns")
	printf '| %d | %s | %s | %s | %s | %s | %s |\n' "$depth" \
		"$(r3 "$(ratio "$(med "cgc-barrier,$depth,seconds")" "$stw_s")")" \
		"$(r3 "$(ratio "$(best "cgc-barrier,$depth,seconds")" "$(best "cgc-stw,$depth,seconds")")")" \
		"$(r3 "$(ratio "$(med "cgc-nobarrier,$depth,seconds")" "$stw_s")")" \
		"$(r3 "$(ratio "$(med "cgc-nobarrier,$depth,max_pause_ns")" "$bdw_p")")" \
		"$(r3 "$(ratio "$(med "cgc-barrier,$depth,max_pause_ns")" "$bdw_p")")" \
		"$(r3 "$(ratio "$(med "cgc-nobarrier,$depth,worst")" "$(med "bdwgc-stw,$depth,worst")")")"
done

# target LABEL VALUE LIMIT: one line, met when VALUE <= LIMIT.
target() {
	awk -v label="$1" -v v="$2" -v lim="$3" 'BEGIN {
		if (v == "" || lim == "") { printf "- target %s: n/a\n", label; exit }
		printf "- target %s: %.3f, %s\n", label, v, v + 0 <= lim + 0 ? "met" : "NOT met"
	}'
}
echo
echo "Targets of issue 4 (throughput >= 0.95x stopped-world is a time ratio <= 1/0.95 = 1.053):"
for depth in $DEPTHS; do
	target "cgc-barrier time / cgc-stw time <= 1.053, depth $depth" \
		"$(ratio "$(med "cgc-barrier,$depth,seconds")" "$(med "cgc-stw,$depth,seconds")")" 1.0526
done
pause_depth=22
target "cgc-nobarrier max pause / bdwgc-stw max pause <= 0.25, depth $pause_depth" \
	"$(ratio "$(med "cgc-nobarrier,$pause_depth,max_pause_ns")" "$(med "bdwgc-stw,$pause_depth,max_pause_ns")")" 0.25
if [[ -n "${warned[*]-}" ]]; then  # (an empty array is "unbound" to set -u)
	echo
	for v in "${!warned[@]}"; do
		echo "Note: $v: ${warned[$v]}."
	done
fi
note "raw lines: $raw"
exit "$failed"
