#!/usr/bin/env bash
# run-gc.sh - the collector benchmarks: GCBench (cgc, bdwgc, glibc, mimalloc), alloc.c with cgc collecting, markrate;
# interleaved runs, Markdown tables of medians. bench/README.md describes them and the variables read here.
#
# Usage: bench/run-gc.sh [LIVE_DEPTH]   (or sh bench/run-gc.sh; LIVE_DEPTH defaults to 22)
# The report goes to stdout, progress and notes to stderr: `bench/run-gc.sh > results.md`.

# Started by sh: the rest is bash (arrays), so hand over before reading it.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
build=$here/build

DEPTH=${1:-${DEPTH:-22}}
CGC_PREFIX=${CGC_PREFIX:-$root/_install}
# make runs in bench/, so a relative prefix would change meaning: pin it to where we were called.
[[ $CGC_PREFIX == /* ]] || CGC_PREFIX=$PWD/$CGC_PREFIX
REPEAT=${REPEAT:-3}
ALLOCS=${ALLOCS:-20000000}
THREADS=${THREADS:-1 2}
MARK_MB=${MARK_MB:-7 260 1024}
MARK_CYCLES=${MARK_CYCLES:-5}
WORK=${WORK:-}
LIBDIR=${LIBDIR:-/usr/lib/x86_64-linux-gnu}
MIMALLOC_SO=${MIMALLOC_SO:-$LIBDIR/libmimalloc.so.2}

note() { printf 'run-gc: %s\n' "$*" >&2; }
die() { note "$*"; exit 1; }

[[ $# -le 1 ]] || die "usage: $0 [LIVE_DEPTH]"
if ! [[ $DEPTH =~ ^[0-9]+$ ]] || ((DEPTH < 4 || DEPTH > 28)); then
	die "LIVE_DEPTH must be 4..28, not '$DEPTH'"
fi
for v in REPEAT ALLOCS MARK_CYCLES; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
for t in $THREADS; do
	[[ $t =~ ^[1-9][0-9]*$ ]] || die "THREADS must list positive integers, not '$THREADS'"
done
if [[ -n $WORK ]] && { ! [[ $WORK =~ ^[0-9]+$ ]] || ((WORK < 6 || WORK > 28)); }; then
	die "WORK must be 6..28 (gcbench -w), not '$WORK'"
fi
for m in $MARK_MB; do
	[[ $m =~ ^[1-9][0-9]*$ ]] || die "MARK_MB must list positive integers, not '$MARK_MB'"
done

mkdir -p "$build"

# cgc: build and install it into the prefix if it is not there yet, out of tree in _build as
# examples/demo.sh does. If it does not build, the anchors still run and cgc shows "n/a".
if [[ ! -e $CGC_PREFIX/lib/libcgc.so ]]; then
	log=$build/cgc-build.log
	note "no $CGC_PREFIX/lib/libcgc.so: building cgc into $CGC_PREFIX (log: $log)"
	if ! (cd "$root" && mkdir -p m4 && autoreconf -fi && mkdir -p _build && cd _build &&
		../configure -q --prefix="$CGC_PREFIX" && make -j2 && make install) >"$log" 2>&1; then
		tail -n 20 "$log" >&2 || true
		note "cgc did not build (see $log)"
	fi
fi

# have[TARGET]=1 for every benchmark binary that built; a missing one is reported as n/a.
declare -A have
for target in gcbench-malloc gcbench-bdwgc alloc-malloc alloc-calloc gcbench-cgc alloc-cgc-gc markrate; do
	if make -s -C "$here" CGC_PREFIX="$CGC_PREFIX" "build/$target" >&2 2>"$build/make-$target.log"; then
		have[$target]=1
	else
		note "cannot build bench/build/$target (see $build/make-$target.log): its rows are n/a"
	fi
done
have_mimalloc=0
if [[ -e $MIMALLOC_SO ]]; then
	have_mimalloc=1
else
	note "$MIMALLOC_SO not found: mimalloc is n/a"
fi

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

# Runs "$@", prints its stdout; on failure (or a preload ld.so refused) shows its stderr and fails.
errf=$build/run.err
run_checked() {
	local out
	out=$("$@" 2>"$errf") || {
		cat "$errf" >&2
		return 1
	}
	if grep -q 'ld\.so' "$errf"; then
		cat "$errf" >&2
		return 1
	fi
	printf '%s\n' "$out"
}

failed=0
raw=$build/gc-raw.txt
: >"$raw"

# ---- GCBench -------------------------------------------------------------------------------
# Each allocator runs twice a round: once timed as a whole, once with every allocation timed
# (-l), since the two counter reads per allocation cost about as much as a fast allocation.
gc_names=()
[[ -n ${have[gcbench-cgc]:-} ]] && gc_names+=(cgc)
[[ -n ${have[gcbench-bdwgc]:-} ]] && gc_names+=(bdwgc)
if [[ -n ${have[gcbench-malloc]:-} ]]; then
	gc_names+=(glibc)
	[[ $have_mimalloc == 1 ]] && gc_names+=(mimalloc)
fi

gcbench_one() {
	local name=$1 bin
	shift
	local -a envs=(env -u LD_PRELOAD -u GC_MARKERS)
	case $name in
	cgc) bin=$build/gcbench-cgc ;;
	bdwgc)
		bin=$build/gcbench-bdwgc
		envs+=(GC_MARKERS=2)
		;;
	glibc) bin=$build/gcbench-malloc ;;
	mimalloc)
		bin=$build/gcbench-malloc
		envs+=("LD_PRELOAD=$MIMALLOC_SO")
		;;
	esac
	local -a shape=(-d "$DEPTH")
	[[ -n $WORK ]] && shape+=(-w "$WORK")
	run_checked "${envs[@]}" "$bin" "${shape[@]}" "$@"
}

n=${#gc_names[@]}
for ((rep = 0; rep < REPEAT; rep++)); do
	# Round-robin, starting at a different allocator each round, so noise on a shared machine
	# falls on all of them alike.
	for ((k = 0; k < n; k++)); do
		name=${gc_names[(k + rep) % n]}
		for mode in timed latency; do
			args=()
			[[ $mode == latency ]] && args=(-l)
			if ! line=$(gcbench_one "$name" "${args[@]}"); then
				note "gcbench $name $mode failed"
				failed=1
				continue
			fi
			printf '%s %s %s\n' "$name" "$mode" "$line" >>"$raw"
			# The malloc build names the allocator it found: a preload that did not take is a failure.
			got=$(field "$line" alloc)
			[[ $got == "$name" ]] || {
				note "gcbench $name: the program ran on $got"
				failed=1
				continue
			}
			if [[ $mode == latency ]]; then
				runs[gc,$name,worst]+="$(field "$line" worst_alloc_ns) "
				note "gcbench repeat $((rep + 1))/$REPEAT $name: worst allocation $(field "$line" worst_alloc_ns) ns"
				continue
			fi
			for f in seconds maxrss_kb collections pause_max_ns pause_total_ns mark_cpu_ns live_after_mark; do
				v=$(field "$line" "$f")
				[[ -n $v ]] && runs[gc,$name,$f]+="$v "
			done
			note "gcbench repeat $((rep + 1))/$REPEAT $name: $(field "$line" seconds) s, $(field "$line" maxrss_kb) KiB"
		done
	done
done

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "Collector benchmarks, commit $commit, $(nproc) CPUs, $(uname -sr); medians of $REPEAT interleaved runs"
echo
if [[ -n $WORK ]]; then
	echo "GCBench, live depth $DEPTH, Boehm's shape with work depth $WORK (gcbench -w: a stretch tree of depth $WORK, 2·N($WORK) nodes of short-lived trees per depth):"
	echo "cgc and bdwgc (GC_MARKERS=2) never free;"
else
	echo "GCBench, live depth $DEPTH (bench/gcbench.c): cgc and bdwgc (GC_MARKERS=2) never free;"
fi
echo "glibc and mimalloc free every tree. Worst allocation: from a second run timing each allocation."
echo
echo "| allocator | seconds | ratio to bdwgc | peak RSS MiB | RSS ratio to bdwgc | worst allocation ms |"
echo "|---|---:|---:|---:|---:|---:|"
ref_s=$(med gc,bdwgc,seconds)
ref_rss=$(med gc,bdwgc,maxrss_kb)
for name in cgc bdwgc glibc mimalloc; do
	s=$(med "gc,$name,seconds")
	if [[ -z $s ]]; then
		echo "| $name | n/a | n/a | n/a | n/a | n/a |"
		continue
	fi
	awk -v name="$name" -v s="$s" -v rss="$(med "gc,$name,maxrss_kb")" -v w="$(med "gc,$name,worst")" \
		-v rs="$ref_s" -v rrss="$ref_rss" 'BEGIN {
			sr = rs + 0 > 0 ? sprintf("%.2f", s / rs) : "n/a"
			rr = rrss + 0 > 0 ? sprintf("%.2f", rss / rrss) : "n/a"
			ws = w != "" ? sprintf("%.3f", w / 1e6) : "n/a"
			printf "| %s | %.3f | %s | %.1f | %s | %s |\n", name, s, sr, rss / 1024, rr, ws
		}'
done

echo
echo "| collector | collections | pause max ms | pause total ms | mark CPU ms | live after mark MiB |"
echo "|---|---:|---:|---:|---:|---:|"
for name in cgc bdwgc; do
	awk -v name="$name" -v c="$(med "gc,$name,collections")" -v pm="$(med "gc,$name,pause_max_ns")" \
		-v pt="$(med "gc,$name,pause_total_ns")" -v m="$(med "gc,$name,mark_cpu_ns")" \
		-v l="$(med "gc,$name,live_after_mark")" 'function f(v, scale, fmt) {
			return v == "" ? "n/a" : sprintf(fmt, v / scale)
		}
		BEGIN {
			printf "| %s | %s | %s | %s | %s | %s |\n", name, f(c, 1, "%d"), f(pm, 1e6, "%.3f"),
				f(pt, 1e6, "%.1f"), f(m, 1e6, "%.1f"), f(l, 1048576, "%.1f")
		}'
done

# target LABEL VALUE LIMIT: one line, met when VALUE <= LIMIT.
target() {
	awk -v label="$1" -v v="$2" -v lim="$3" 'BEGIN {
		if (v == "" || lim == "") { printf "- target %s: n/a\n", label; exit }
		printf "- target %s: %.2f, %s\n", label, v, v + 0 <= lim + 0 ? "met" : "NOT met"
	}'
}
# ratio A B: A/B, or nothing when either is missing.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b + 0 > 0) printf "%.4f", a / b }'; }
# Before the collector existed cgc_malloc never reclaimed anything: say so rather than compare.
if [[ $(med gc,cgc,collections) == 0 ]]; then
	echo
	echo "Note: cgc ran no collection in GCBench; its numbers are those of an allocator that never frees."
fi
echo
target "cgc time <= 0.5x bdwgc" "$(ratio "$(med gc,cgc,seconds)" "$ref_s")" 0.5
target "cgc peak RSS <= 1.0x bdwgc" "$(ratio "$(med gc,cgc,maxrss_kb)" "$ref_rss")" 1.0

# ---- alloc.c with the collector reclaiming ----------------------------------------------------
alloc_names=()
if [[ -n ${have[alloc-malloc]:-} && $have_mimalloc == 1 ]]; then
	alloc_names+=(mimalloc)
	[[ -n ${have[alloc-calloc]:-} ]] && alloc_names+=(mimalloc+calloc)
fi
[[ -n ${have[alloc-cgc-gc]:-} ]] && alloc_names+=(cgc-gc)
n=${#alloc_names[@]}
for t in $THREADS; do
	for ((rep = 0; rep < REPEAT; rep++)); do
		for ((k = 0; k < n; k++)); do
			name=${alloc_names[(k + rep) % n]}
			case $name in
			mimalloc) cmd=(env "LD_PRELOAD=$MIMALLOC_SO" "$build/alloc-malloc") ;;
			mimalloc+calloc) cmd=(env "LD_PRELOAD=$MIMALLOC_SO" "$build/alloc-calloc") ;;
			cgc-gc) cmd=(env -u LD_PRELOAD "$build/alloc-cgc-gc") ;;
			esac
			if ! line=$(run_checked "${cmd[@]}" "$t" "$ALLOCS"); then
				note "alloc $name threads=$t failed"
				failed=1
				continue
			fi
			printf '%s %s\n' "$name" "$line" >>"$raw"
			runs[alloc,$name,$t,ns]+="$(field "$line" ns_per_op) "
			runs[alloc,$name,$t,rss]+="$(field "$line" maxrss_kb) "
			note "alloc threads=$t repeat $((rep + 1))/$REPEAT $name: $(field "$line" ns_per_op) ns/op"
		done
	done
done

echo
echo "alloc (bench/alloc.c): $ALLOCS allocations of 8..256 bytes, window 10000 per thread; cgc-gc is"
echo "cgc_malloc with no free (the collector reclaims), against mimalloc's malloc+free (and calloc+free)"
echo
echo "| allocator | threads | ns/alloc | ratio to mimalloc | peak RSS MiB | RSS ratio to mimalloc |"
echo "|---|---:|---:|---:|---:|---:|"
for t in $THREADS; do
	ref_ns=$(med "alloc,mimalloc,$t,ns")
	ref_rss=$(med "alloc,mimalloc,$t,rss")
	for name in mimalloc mimalloc+calloc cgc-gc; do
		ns=$(med "alloc,$name,$t,ns")
		if [[ -z $ns ]]; then
			echo "| $name | $t | n/a | n/a | n/a | n/a |"
			continue
		fi
		awk -v name="$name" -v t="$t" -v ns="$ns" -v rss="$(med "alloc,$name,$t,rss")" \
			-v rns="$ref_ns" -v rrss="$ref_rss" 'BEGIN {
				nr = rns + 0 > 0 ? sprintf("%.2f", ns / rns) : "n/a"
				rr = rrss + 0 > 0 ? sprintf("%.2f", rss / rrss) : "n/a"
				printf "| %s | %d | %.1f | %s | %.1f | %s |\n", name, t, ns, nr, rss / 1024, rr
			}'
	done
done
echo
for t in $THREADS; do
	target "cgc alloc with collection <= 1.5x mimalloc, $t thread(s)" \
		"$(ratio "$(med "alloc,cgc-gc,$t,ns")" "$(med "alloc,mimalloc,$t,ns")")" 1.5
done

# ---- markrate ---------------------------------------------------------------------------------
echo
echo "markrate (bench/markrate.c): a random graph of mixed-size cgc objects, all live; $MARK_CYCLES"
echo "cgc_collect() each, medians over the cycles. Mark rate: MB marked per CPU second of marking."
echo
echo "| live heap MB | objects | live after mark MiB | mark MB/s per worker | pause median ms | pause max ms |"
echo "|---:|---:|---:|---:|---:|---:|"
for mb in $MARK_MB; do
	line=''
	if [[ -n ${have[markrate]:-} ]]; then
		note "markrate: $mb MB"
		if line=$(run_checked "$build/markrate" -m "$mb" -n "$MARK_CYCLES"); then
			printf '%s\n' "$line" >>"$raw"
		else
			note "markrate $mb MB failed"
			failed=1
			line=''
		fi
	fi
	if [[ -z $line ]]; then
		echo "| $mb | n/a | n/a | n/a | n/a | n/a |"
		continue
	fi
	awk -v mb="$mb" -v o="$(field "$line" objects)" -v l="$(field "$line" live_after_mark)" \
		-v r="$(field "$line" mark_mb_per_s_per_worker)" -v pm="$(field "$line" pause_median_ns)" \
		-v px="$(field "$line" pause_max_ns)" 'BEGIN {
			printf "| %d | %d | %.1f | %d | %.3f | %.3f |\n", mb, o, l / 1048576, r, pm / 1e6, px / 1e6
		}'
done
note "raw lines: $raw"
exit "$failed"
