#!/bin/sh
# cgc-trace.sh - checks tools/cgc-trace, the gctrace-to-SVG tool (man/cgc-trace.1), on the sample
# logs in tests/data and on a 10,000-cycle log it generates.
#
# What is checked: exit status and messages; that the SVG is well-formed (xmllint when installed,
# Debian package libxml2-utils; a structural check with grep always); the number of pause bars
# (class "pause", "pause forced" for forced cycles); the summary numbers of the title line, against
# values worked out by hand for the samples and by awk for the generated log; that noise lines are
# ignored and near-miss lines counted.
#
# Environment: top_srcdir (default: this script's directory/..), CGC_TRACE (the built tool; default
# ./tools/cgc-trace), XMLLINT (default xmllint; empty for the grep checks alone). Exit status 0 when
# every check passes, 1 otherwise.

top_srcdir=${top_srcdir:-$(dirname "$0")/..}
CGC_TRACE=${CGC_TRACE:-./tools/cgc-trace}
data=$top_srcdir/tests/data

if [ ! -x "$CGC_TRACE" ]; then
	echo "cgc-trace.sh: $CGC_TRACE not found or not executable" >&2
	exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cgc-trace.XXXXXX") || {
	echo "cgc-trace.sh: cannot create a temporary directory" >&2
	exit 1
}
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

fail=0
checks=0
XMLLINT=${XMLLINT-xmllint}
if [ -n "$XMLLINT" ] && command -v "$XMLLINT" >/dev/null 2>&1; then
	have_xmllint=yes
else
	have_xmllint=no
	echo "xmllint not found (Debian package libxml2-utils): checking SVG structure with grep only"
fi

bad() {
	echo "FAIL: $*"
	fail=1
}

# run ARGS...: runs the tool with stdout in $tmp/out, stderr in $tmp/err, exit status in $rc.
run() {
	"$CGC_TRACE" "$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
}

# expect_eq WHAT GOT WANT
expect_eq() {
	checks=$((checks + 1))
	[ "$2" = "$3" ] || bad "$1: got '$2', expected '$3'"
}

# svg_ok NAME FILE: well-formed, one <svg> root with the SVG namespace, closed at the end.
svg_ok() {
	checks=$((checks + 1))
	if [ "$have_xmllint" = yes ] && ! "$XMLLINT" --noout "$2" 2>"$tmp/xmllint"; then
		bad "$1: not well-formed XML:"
		head -5 "$tmp/xmllint"
	fi
	[ "$(grep -c '<svg' "$2")" = 1 ] || bad "$1: expected exactly one <svg"
	[ "$(grep -c '</svg>' "$2")" = 1 ] || bad "$1: expected exactly one </svg>"
	[ "$(tail -n 1 "$2")" = "</svg>" ] || bad "$1: the document does not end with </svg>"
	grep -q '<svg xmlns="http://www.w3.org/2000/svg" version="1.1"' "$2" ||
		bad "$1: <svg> lacks the SVG namespace or version 1.1"
	# Everything a tag opens is closed: crude, but catches a truncated file without xmllint.
	[ "$(grep -o '<g[ >]' "$2" | wc -l)" = "$(grep -o '</g>' "$2" | wc -l)" ] ||
		bad "$1: unbalanced <g> elements"
}

bars() { # FILE: number of pause bars
	grep -o 'class="pause[" ]' "$1" | wc -l | tr -d ' '
}

forced_bars() {
	grep -o 'class="pause forced"' "$1" | wc -l | tr -d ' '
}

summary() { # FILE: the text of the summary line
	sed -n 's/.*<text class="summary"[^>]*>\(.*\)<\/text>.*/\1/p' "$1"
}

# ---- one cycle: the line of the gctrace specification ------------------------------------------
# pause 0.021+3.412+0.050 = 3.483 ms (stw); run time 1.204 s + 3.483 ms = 1.207483 s.
run "$data/gctrace-one.log"
expect_eq "one: exit status" "$rc" 0
expect_eq "one: stderr" "$(cat "$tmp/err")" ""
svg_ok one "$tmp/out"
expect_eq "one: pause bars" "$(bars "$tmp/out")" 1
expect_eq "one: summary" "$(summary "$tmp/out")" \
	"1 cycle, run time 1.207 s; pause max 3.483 ms, mean 3.483 ms, total 3.483 ms (0.29% of run time); peak heap 12.1 MB"
grep -q '<title>gctrace of .*gctrace-one.log</title>' "$tmp/out" || bad "one: default title is not the file name"

# ---- collection off: a forced cycle has no goal ("off goal"); the goal is drawn at the heap ----
# pause 0.010+50.000+0.006 = 50.016 ms; run time 0.5 s + 50.016 ms = 0.550016 s.
run "$data/gctrace-off.log"
expect_eq "off: exit status" "$rc" 0
expect_eq "off: stderr" "$(cat "$tmp/err")" ""
svg_ok off "$tmp/out"
expect_eq "off: pause bars" "$(bars "$tmp/out")" 1
expect_eq "off: forced pause bars" "$(forced_bars "$tmp/out")" 1
expect_eq "off: summary" "$(summary "$tmp/out")" \
	"1 cycle (1 forced), run time 0.550 s; pause max 50.016 ms, mean 50.016 ms, total 50.016 ms (9.09% of run time); peak heap 96.0 MB"

# ---- a stderr log with noise, prefixes, near misses, flags both ways, a CRLF line -------------
# Cycles (pause ms): 1 2.150, 2 2.558, 3 3.075 forced, 4 3.165, 5 0.090 (no "(stw)": A+C only),
# 6 3.483 forced, 7 2.860. Total 17.381, mean 17.381 / 7 = 2.483, max 3.483. Run time 1.611 s +
# 2.860 ms = 1.613860 s; 17.381 / 1613.860 = 1.077%. Skipped: lines 7 (cut short), 12 ("1.20 s"),
# 14 ("0 P"), 15 (unknown flag); line 10 ("libgc 2 @") is not a gctrace line at all.
run "$data/gctrace-mixed.log"
expect_eq "mixed: exit status" "$rc" 0
expect_eq "mixed: stderr" "$(cat "$tmp/err")" \
	"cgc-trace: skipped 4 malformed gctrace lines (the first is line 7 of $data/gctrace-mixed.log)"
svg_ok mixed "$tmp/out"
expect_eq "mixed: pause bars" "$(bars "$tmp/out")" 7
expect_eq "mixed: forced pause bars" "$(forced_bars "$tmp/out")" 2
expect_eq "mixed: summary" "$(summary "$tmp/out")" \
	"7 cycles (2 forced), run time 1.614 s; pause max 3.483 ms, mean 2.483 ms, total 17.381 ms (1.08% of run time); peak heap 6.2 MB"
grep -q '<title>gc 5 @0.901s: pause 0.090 ms</title>' "$tmp/out" ||
	bad "mixed: the pause of a cycle without (stw) is not A+C"
grep -q '<title>gc 6 @1.204s: pause 3.483 ms (forced)</title>' "$tmp/out" ||
	bad "mixed: cycle 6, flags in the other order, is not drawn as forced"
if grep -q -e 'battery' -e 'libgc' -e 'worker' "$tmp/out"; then
	bad "mixed: noise lines reached the SVG"
fi

# ---- standard input, -o, -t ---------------------------------------------------------------------
run -o "$tmp/o.svg" -t 'heap & <pauses> "q" '\''a'\''' <"$data/gctrace-one.log"
expect_eq "stdin -o: exit status" "$rc" 0
expect_eq "stdin -o: stdout" "$(cat "$tmp/out")" ""
svg_ok "stdin -o" "$tmp/o.svg"
expect_eq "stdin -o: summary" "$(summary "$tmp/o.svg")" \
	"1 cycle, run time 1.207 s; pause max 3.483 ms, mean 3.483 ms, total 3.483 ms (0.29% of run time); peak heap 12.1 MB"
grep -q '<title>heap &amp; &lt;pauses&gt; &quot;q&quot; &apos;a&apos;</title>' "$tmp/o.svg" ||
	bad "-t: the title is not escaped"
run <"$data/gctrace-one.log"
grep -q '<title>gctrace of standard input</title>' "$tmp/out" || bad "stdin: default title"

# Bytes that are not UTF-8, and a control character, in the title: replaced, still well-formed.
run -t "$(printf 'bad \377\376 ctl \001 end')" "$data/gctrace-one.log"
svg_ok "-t non-UTF-8" "$tmp/out"
grep -q '<title>bad ?? ctl ? end</title>' "$tmp/out" || bad "-t: invalid UTF-8 not replaced"

# ---- two runs in one input: cycle numbers start again -------------------------------------------
cat "$data/gctrace-one.log" "$data/gctrace-one.log" >"$tmp/two.log"
run "$tmp/two.log"
expect_eq "two runs: exit status" "$rc" 0
svg_ok "two runs" "$tmp/out"
expect_eq "two runs: summary" "$(summary "$tmp/out")" \
	"2 cycles in 2 runs, run time 2.415 s; pause max 3.483 ms, mean 3.483 ms, total 6.966 ms (0.29% of run time); peak heap 12.1 MB"

# ---- more decimals than printed: rounded half up -----------------------------------------------
# A = 0.0005 ms rounds to 0.001, B = 0.0004 to 0.000; the time 1.0000005 s to 1.000001 s.
echo 'gc 1 @1.0000005s 0%: 0.0005+0.0004+0.0001 ms clock, 0.0+0.0+0.0 ms cpu, 1.05->1.04->0.5 MB, 1 MB goal, 0.0 MB stacks, 0.0 MB globals, 1 P (stw)' \
	>"$tmp/decimals.log"
run "$tmp/decimals.log"
expect_eq "decimals: exit status" "$rc" 0
expect_eq "decimals: summary" "$(summary "$tmp/out")" \
	"1 cycle, run time 1.000 s; pause max 0.001 ms, mean 0.001 ms, total 0.001 ms (0.00% of run time); peak heap 1.1 MB"
grep -q '<title>gc 1 @1.000s: pause 0.001 ms</title>' "$tmp/out" || bad "decimals: tooltip"

# ---- concurrent cycles: "(barrier)" and "(dirty, N MB rescanned)", pauses A+C -------------------
cat >"$tmp/concurrent.log" <<'LOG'
gc 1 @0.500s 3%: 0.100+40.000+0.400 ms clock, 0.100+30.000+0.400 ms cpu, 70.0->80.0->60.0 MB, 120.0 MB goal, 0.1 MB stacks, 0.1 MB globals, 2 P (barrier)
gc 2 @1.000s 3%: 0.200+50.000+0.800 ms clock, 0.200+35.000+0.800 ms cpu, 90.0->99.0->61.0 MB, 120.0 MB goal, 0.1 MB stacks, 0.1 MB globals, 2 P (dirty, 1.5 MB rescanned) (forced)
gc 3 @1.500s 3%: 0.200+50.000+0.800 ms clock, 0.200+35.000+0.800 ms cpu, 90.0->99.0->61.0 MB, 120.0 MB goal, 0.1 MB stacks, 0.1 MB globals, 2 P (dirty, 1.5 MB) (forced)
LOG
run "$tmp/concurrent.log"
expect_eq "concurrent: exit status" "$rc" 0
expect_eq "concurrent: stderr" "$(cat "$tmp/err")" \
	"cgc-trace: skipped 1 malformed gctrace line (the first is line 3 of $tmp/concurrent.log)"
expect_eq "concurrent: pause bars" "$(bars "$tmp/out")" 2
grep -q '<title>gc 1 @0.500s: pause 0.500 ms</title>' "$tmp/out" || bad "concurrent: barrier cycle's pause is not A+C"
grep -q '<title>gc 2 @1.000s: pause 1.000 ms (forced)</title>' "$tmp/out" || bad "concurrent: dirty cycle's pause is not A+C"

# ---- errors -------------------------------------------------------------------------------------
run "$data/gctrace-none.log"
expect_eq "none: exit status" "$rc" 1
expect_eq "none: stdout" "$(cat "$tmp/out")" ""
expect_eq "none: stderr" "$(cat "$tmp/err")" \
	"cgc-trace: skipped 1 malformed gctrace line (the first is line 3 of $data/gctrace-none.log)
cgc-trace: no gctrace lines in $data/gctrace-none.log"
run "$data/gctrace-one.log" "$data/gctrace-none.log"
expect_eq "one + none: exit status" "$rc" 1
run </dev/null
expect_eq "empty stdin: exit status" "$rc" 1
expect_eq "empty stdin: stderr" "$(cat "$tmp/err")" "cgc-trace: no gctrace lines in standard input"
run -o "$tmp/none.svg" "$data/gctrace-none.log"
checks=$((checks + 1))
[ ! -e "$tmp/none.svg" ] || bad "none -o: an output file was created"
run "$tmp/does-not-exist.log"
expect_eq "missing file: exit status" "$rc" 1
expect_eq "missing file: stderr" "$(cat "$tmp/err")" "cgc-trace: $tmp/does-not-exist.log: No such file or directory"
run -h
expect_eq "-h: exit status" "$rc" 0
checks=$((checks + 1))
grep -q '^usage: cgc-trace \[-o out.svg\] \[-t title\] \[log ...\]' "$tmp/out" || bad "-h: no usage line"
run -Q "$data/gctrace-one.log"
expect_eq "bad option: exit status" "$rc" 2
expect_eq "bad option: stdout" "$(cat "$tmp/out")" ""

# ---- 10,000 cycles ------------------------------------------------------------------------------
# Generated with a fixed linear congruential sequence, so every awk makes the same log. Times and
# pauses are whole microseconds, so awk's sums are exact and the expected summary is exact too.
# Every 100th cycle is followed by a noise line, every 1000th by a near miss; every 997th cycle is
# forced; every 10th ran without "(stw)".
awk -v expect="$tmp/10k.expect" 'function r(m) { x = (x * 75 + 74) % 65537; return x % m }
function ms(us) { return sprintf("%d.%03d", int(us / 1000), us % 1000) }
function mb(tenths) { return sprintf("%d.%d", int(tenths / 10), tenths % 10) }
BEGIN {
	n = 10000; x = 4242; t = 50; total = 0; max = 0; forced = 0; peak = 0
	for (i = 1; i <= n; i++) {
		t += 10 + r(20)
		a = 10 + r(20); b = 1000 + r(3000); c = 20 + r(50)
		if (i % 2500 == 0) b += 20000
		f = (i % 997 == 0); stw = (i % 10 != 0)
		live = 20 + r(30); goal = 2 * live; start = f ? live + r(goal - live) : goal + r(3)
		p = a + c + (stw ? b : 0)
		total += p; if (p > max) max = p; forced += f
		if (start > peak) peak = start; if (goal > peak) peak = goal
		printf "gc %d @%d.%03ds 5%%: %s+%s+%s ms clock, %s+%s+%s ms cpu, %s->%s->%s MB, %s MB goal, 0.1 MB stacks, 0.2 MB globals, 2 P%s%s\n", \
			i, int(t / 1000), t % 1000, ms(a), ms(b), ms(c), ms(a), ms(2 * b), ms(c), \
			mb(start), mb(start), mb(live), mb(goal), f ? " (forced)" : "", stw ? " (stw)" : ""
		if (i % 100 == 0) print "worker: checkpoint " i
		if (i % 1000 == 0) print "gc " i " @" int(t / 1000) "."
		end = t * 1000 + a + b + c
	}
	mean = int(total / n) + ((total % n) * 2 >= n)
	pct = int((total * 10000 + end / 2) / end)
	printf "%d cycles (%d forced), run time %s s; pause max %s ms, mean %s ms, total %s ms (%d.%02d%% of run time); peak heap %s MB\n", \
		n, forced, ms(int((end + 500) / 1000)), ms(max), ms(mean), ms(total), int(pct / 100), pct % 100, mb(peak) >expect
}' >"$tmp/10k.log"
run "$tmp/10k.log"
expect_eq "10k: exit status" "$rc" 0
expect_eq "10k: stderr" "$(cat "$tmp/err")" \
	"cgc-trace: skipped 10 malformed gctrace lines (the first is line 1011 of $tmp/10k.log)"
svg_ok 10k "$tmp/out"
expect_eq "10k: pause bars" "$(bars "$tmp/out")" 10000
expect_eq "10k: forced pause bars" "$(forced_bars "$tmp/out")" 10
expect_eq "10k: summary" "$(summary "$tmp/out")" "$(cat "$tmp/10k.expect")"
# No label or tooltip per cycle, bars at least a unit wide, and the heap lines thinned to the
# picture's resolution.
checks=$((checks + 1))
[ "$(grep 'class="pause' "$tmp/out" | grep -c 'width="0')" = 0 ] || bad "10k: pause bars narrower than 1"
[ "$(grep -c '<text' "$tmp/out")" -lt 100 ] || bad "10k: too many <text> labels"
[ "$(grep -c '<title>' "$tmp/out")" -le 1 ] || bad "10k: tooltips for 10,000 cycles"
size=$(wc -c <"$tmp/out")
[ "$size" -lt 1500000 ] || bad "10k: the SVG is $size bytes"

if [ $fail = 0 ]; then
	echo "cgc-trace: $checks checks passed"
fi
exit $fail
