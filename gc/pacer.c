/* gc/pacer.c - when the next cycle starts: the heap goal from CGC_PERCENT, capped by CGC_MEMLIMIT.
 * doc/design/collector.md 7. */
#include "alloc/alloc.h"
#include "gc/gc.h"

/* Bytes the allocator handed out (a span's free slots when a cache takes it, a large object) or
 * got back (a large object freed explicitly; not one the sweep frees: it no longer counts).
 * Relaxed: the pacer needs a trend, not an exact count, and this runs once per span, not per
 * object. */
void pacer_account(int64_t bytes)
{
	fetch_add_relaxed(&gc.alloc_since, bytes);
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

void pacer_cycle_done(size_t marked, size_t root_bytes)
{
	gc.heap_marked = marked;
	gc.root_bytes = root_bytes;
	store_relaxed(&gc.alloc_since, 0);
	store_relaxed(&gc.goal, pacer_goal(marked, root_bytes));
}
