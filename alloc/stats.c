/* alloc/stats.c - cgc_get_stats: allocation counters summed over threads, live objects counted
 * from the spans. doc/design/allocator.md, "Statistics".
 *
 * Threads count their allocations without atomics, the fast path in the span it allocates from
 * (a line it touches anyway), moved to the thread's cache at each refill and to the heap's dead
 * count when the span is freed; frees are not counted on the free path at all
 * (it is the hotter half). Live objects are the sum of the spans' nalloc, less the remote frees
 * still waiting on thread_free lists, and frees = allocations - live. */
#include <string.h>

#include "alloc/alloc.h"
#include "gc/gc.h"
#include "include/cgc.h"

void stats_fold_mcache(mcache_t *c)
{
	for (unsigned i = 0; i < NUM_SPAN_CLASSES; i++) {
		mheap.dead_nmalloc[i] += load_relaxed(&c->nmalloc[i]);
		store_relaxed(&c->nmalloc[i], 0);
	}
	mheap.dead_tiny_allocs += load_relaxed(&c->tiny_allocs);
	store_relaxed(&c->tiny_allocs, 0);
}

/* Adds up nalloc of every small span, by span class, and the allocations the fast path counted
 * in the span and no refill has moved to a cache yet (mheap lock held, so no span comes or goes;
 * the counts themselves move under other threads' feet). A span is found at its first page. */
static void live_by_class(uint64_t live[NUM_SPAN_CLASSES], uint64_t nm[NUM_SPAN_CLASSES])
{
	uintptr_t lo = load_relaxed(&heap_lo), hi = load_relaxed(&heap_hi);
	for (uintptr_t a = lo & ~(ARENA_SIZE - 1); a < hi; a += ARENA_SIZE) {
		heap_arena_t *ha = load_relaxed(&arena_index[a >> ARENA_SHIFT]);
		if (ha == NULL)
			continue;
		for (size_t i = 0; i < PAGES_PER_ARENA; i++) {
			span_t *s = load_relaxed(&ha->spans[i]);
			if (s && s->base == a + (i << PAGE_SHIFT) && (s->kind == SPAN_SMALL || s->kind == SPAN_TINY)) {
				live[s->spc] += load_relaxed(&s->nalloc);
				nm[s->spc] += load_relaxed(&s->nmalloc);
			}
		}
	}
}

CGC_API void cgc_get_stats(struct cgc_stats *st)
{
	alloc_init();
	memset(st, 0, sizeof *st);
	uint64_t nm[NUM_SPAN_CLASSES], live[NUM_SPAN_CLASSES] = {0};
	lock_acquire(&mheap.lock);
	for (unsigned i = 0; i < NUM_SPAN_CLASSES; i++)
		nm[i] = mheap.dead_nmalloc[i];
	st->tiny_allocs = mheap.dead_tiny_allocs;
	for (mcache_t *c = mheap.mcaches; c; c = c->all_next) {
		for (unsigned i = 0; i < NUM_SPAN_CLASSES; i++)
			nm[i] += load_relaxed(&c->nmalloc[i]);
		st->tiny_allocs += load_relaxed(&c->tiny_allocs);
	}
	live_by_class(live, nm);
	for (unsigned i = 1; i < NUM_SIZE_CLASSES; i++)
		st->classes[i].size = sc_size[i];
	unsigned tiny_class = size_to_class(TINY_SIZE);
	for (unsigned spc = 2; spc < NUM_SPAN_CLASSES; spc++) {
		unsigned cl = spc == TINY_SPC ? tiny_class : spc >> 1;
		struct cgc_class_stats *cs = &st->classes[cl];
		/* Counters read one after another while threads run can disagree by a few objects:
		 * clamp, so a snapshot never shows negative use. */
		uint64_t pending = load_relaxed(&mheap.remote_uncollected[spc]);
		uint64_t l = live[spc] > pending ? live[spc] - pending : 0;
		if (l > nm[spc])
			l = nm[spc];
		cs->nmalloc += nm[spc];
		cs->nfree += nm[spc] - l;
		cs->spans += mheap.nspans[spc];
		cs->span_bytes += mheap.nspans[spc] * ((size_t)sc_npages[cl] << PAGE_SHIFT);
		st->objects += l;
		st->heap_inuse += l * sc_size[cl];
		st->nmalloc += nm[spc];
		st->nfree += nm[spc] - l;
	}
	st->large_nmalloc = mheap.large_nmalloc;
	st->large_nfree = mheap.large_nfree;
	st->large_inuse = mheap.large_inuse;
	st->objects += mheap.large_nmalloc - mheap.large_nfree;
	st->nmalloc += mheap.large_nmalloc;
	st->nfree += mheap.large_nfree;
	st->heap_inuse += mheap.large_inuse;
	st->heap_spans = mheap.pages_inuse << PAGE_SHIFT;
	st->heap_free = mheap.pages_free << PAGE_SHIFT;
	st->heap_released = mheap.pages_released << PAGE_SHIFT;
	st->heap_mapped = mheap.arena_bytes;
	pthread_mutex_unlock(&mheap.lock);
	st->meta_mapped = meta_mapped_bytes();
	gc_fill_stats(st);
}
