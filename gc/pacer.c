/* gc/pacer.c - when the next cycle starts: the heap goal from CGC_PERCENT, capped by CGC_MEMLIMIT.
 * doc/design/collector.md 7. */
#include "alloc/alloc.h"
#include "gc/gc.h"

/* Bytes the allocator handed out (a span's free slots when a cache takes it, a large object) or
 * got back (a large object freed explicitly; not one the sweep frees: it no longer counts).
 * Relaxed: the pacer needs a trend, not an exact count, and this runs once per span, not per
 * object. */
__thread int64_t tls_unassisted __attribute__((tls_model("initial-exec")));
static __thread uint64_t tls_assist_cycle __attribute__((tls_model("initial-exec")));

void pacer_account(int64_t bytes)
{
	fetch_add_relaxed(&gc.alloc_since, bytes);
	/* Only what is handed out while a mark runs owes an assist: a thread's first assist of a
	 * cycle must not pay for everything it allocated since the last one (it paid up to 117 MB of
	 * scanning in GCBench, a 35 ms allocation). */
	if (load_relaxed(&gc.phase) == GC_MARK) {
		/* And only to this mark: what an earlier one left owed is forgotten. */
		uint64_t cycle = load_relaxed(&gc.cycle);
		if (tls_assist_cycle != cycle) {
			tls_assist_cycle = cycle;
			tls_unassisted = 0;
		}
		tls_unassisted += bytes;
	}
}

/* goal = marked + (marked + roots) x percent / 100, at least GC_MIN_HEAP; with a memory limit,
 * no more than the limit less cgc's metadata, but never less than a sliver above what is live, so
 * a limit below the live heap makes cgc collect often, not continuously (a soft limit, as Go's). */
size_t pacer_goal(size_t marked, size_t root_bytes)
{
	size_t goal;
	if (gc_opt.percent < 0) {
		goal = SIZE_MAX;
	} else {
		double g = (double)marked + (double)(marked + root_bytes) * gc_opt.percent / 100.0;
		goal = g >= (double)(SIZE_MAX / 2) ? SIZE_MAX / 2 : (size_t)g;
		if (goal < GC_MIN_HEAP)
			goal = GC_MIN_HEAP;
	}
	if (gc_opt.memlimit != SIZE_MAX) {
		size_t overhead = meta_mapped_bytes();
		size_t cap = gc_opt.memlimit > overhead ? gc_opt.memlimit - overhead : 0;
		size_t floor = marked + marked / 16 + ((size_t)1 << 20);
		if (cap < floor)
			cap = floor;
		if (goal > cap)
			goal = cap;
	}
	return goal;
}

/* Where a concurrent cycle starts, between the last live heap and the goal: early enough that the
 * mark, running beside the program, ends at the goal. What the program allocated during the last
 * concurrent mark, per byte of that mark's scan work, times the next mark's work, with a quarter
 * more for safety, is taken off the goal (Go's pacer estimates the same from its last cycle),
 * within 60% to 95% of the way; before any concurrent mark, at 70%.
 * Too early costs throughput: more cycles, each marking what a later one would find dead (it was
 * a fixed 70%, and GCBench with the barrier ran 1.5x the stop-the-world time). Too late costs
 * latency: assists past the goal, and waits past the hard goal. */
#define TRIGGER_FIRST 0.70
#define TRIGGER_MIN 0.60
#define TRIGGER_MAX 0.95

void pacer_set_trigger(bool concurrent)
{
	size_t goal = load_relaxed(&gc.goal), marked = gc.heap_marked;
	size_t trigger = goal;
	if (concurrent && goal > marked && goal < SIZE_MAX / 2) {
		double runway = (double)(goal - marked), at = TRIGGER_FIRST;
		if (gc.mark_alloc_rate > 0) {
			double during = gc.mark_alloc_rate * (double)(marked + gc.root_bytes);
			at = 1.0 - 1.25 * during / runway;
			at = at < TRIGGER_MIN ? TRIGGER_MIN : at > TRIGGER_MAX ? TRIGGER_MAX : at;
		}
		trigger = marked + (size_t)(runway * at);
	}
	store_relaxed(&gc.trigger, trigger);
}

/* mark_alloc: bytes handed out while the cycle's concurrent mark ran (0 for a stop-the-world one).
 * With the barrier those objects are black and not in `marked`: they stay counted in
 * alloc_since, so heap_live is right from the start of the next cycle. */
void pacer_cycle_done(size_t marked, size_t root_bytes, int64_t mark_alloc, bool concurrent)
{
	int64_t alloc_during = load_relaxed(&gc.barrier) ? mark_alloc : 0;
	gc.heap_marked = marked;
	gc.root_bytes = root_bytes;
	/* Per byte of the mark's work, so that a heap that grew since (the next mark has more to
	 * do, and the program allocates for longer meanwhile) starts its cycle earlier in
	 * proportion: with the last mark's bytes as they were, GCBench's growing heap started cycles
	 * too late and its threads waited at the hard goal. */
	if (mark_alloc > 0 && gc.mark_work > 0)
		gc.mark_alloc_rate = (double)mark_alloc / gc.mark_work;
	int64_t now = load_relaxed(&gc.alloc_since);
	store_relaxed(&gc.alloc_since, alloc_during < now ? alloc_during : now);
	store_relaxed(&gc.goal, pacer_goal(marked, root_bytes));
	pacer_set_trigger(concurrent);
}

/* At the start of a concurrent mark: the scan work expected, the last cycle's live heap and
 * roots. */
void pacer_mark_start(void)
{
	gc.mark_work = (double)(gc.heap_marked + gc.root_bytes);
}

/* Bytes to scan per byte allocated: the scan work not yet done over the heap left before the goal
 * (before the hard goal, once past the goal), as Go's revised assist ratio. */
double pacer_assist_ratio(void)
{
	int64_t since = load_relaxed(&gc.alloc_since);
	size_t live = gc.heap_marked + (size_t)(since > 0 ? since : 0);
	/* Past the work expected, the mark may have all of the heap as it is now to scan (Go's
	 * worst case): without the write barrier the objects made during the mark are marked and
	 * scanned too, the expected work ran out early, the ratio fell to nothing, and GCBench's
	 * heap ran to the hard goal, 25% over the goal, while the mark went on. */
	double done = (double)mark_concurrent_marked(), expect = gc.mark_work;
	if (done > expect)
		expect = (double)(live + gc.root_bytes);
	double left = expect - done;
	if (left < (double)(64 << 10))
		left = (double)(64 << 10);
	size_t goal = load_relaxed(&gc.goal);
	size_t target = live < goal ? goal : pacer_hard_goal();
	double dist = target > live ? (double)(target - live) : 0.0;
	if (dist < (double)(1 << 20))
		dist = (double)(1 << 20);
	return left / dist;
}
