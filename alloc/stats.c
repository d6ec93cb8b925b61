/* alloc/stats.c - cgc_get_stats: per-thread counters summed with the page heap's.
 * Threads count their own allocations and frees without atomics; an exiting thread's counts are
 * folded into the heap's. doc/design/allocator.md, "Statistics". */
#include <string.h>

#include "alloc/alloc.h"
#include "include/cgc.h"

void stats_fold_mcache(mcache_t *c)
{
	for (unsigned i = 0; i < NUM_SPAN_CLASSES; i++) {
		mheap.dead_nmalloc[i] += load_relaxed(&c->nmalloc[i]);
		fetch_add_relaxed(&mheap.dead_nfree[i], load_relaxed(&c->nfree[i]));
		store_relaxed(&c->nmalloc[i], 0);
		store_relaxed(&c->nfree[i], 0);
	}
	mheap.dead_tiny_allocs += load_relaxed(&c->tiny_allocs);
	store_relaxed(&c->tiny_allocs, 0);
}

CGC_API void cgc_get_stats(struct cgc_stats *st)
{
	alloc_init();
	memset(st, 0, sizeof *st);
	uint64_t nm[NUM_SPAN_CLASSES], nf[NUM_SPAN_CLASSES];
	pthread_mutex_lock(&mheap.lock);
	for (unsigned i = 0; i < NUM_SPAN_CLASSES; i++) {
		nm[i] = mheap.dead_nmalloc[i];
		nf[i] = load_relaxed(&mheap.dead_nfree[i]);
	}
	st->tiny_allocs = mheap.dead_tiny_allocs;
	for (mcache_t *c = mheap.mcaches; c; c = c->all_next) {
		for (unsigned i = 0; i < NUM_SPAN_CLASSES; i++) {
			nm[i] += load_relaxed(&c->nmalloc[i]);
			nf[i] += load_relaxed(&c->nfree[i]);
		}
		st->tiny_allocs += load_relaxed(&c->tiny_allocs);
	}
	for (unsigned i = 1; i < NUM_SIZE_CLASSES; i++)
		st->classes[i].size = sc_size[i];
	unsigned tiny_class = size_to_class(TINY_SIZE);
	for (unsigned spc = 2; spc < NUM_SPAN_CLASSES; spc++) {
		unsigned cl = spc == TINY_SPC ? tiny_class : spc >> 1;
		struct cgc_class_stats *cs = &st->classes[cl];
		cs->nmalloc += nm[spc];
		cs->nfree += nf[spc];
		cs->spans += mheap.nspans[spc];
		cs->span_bytes += mheap.nspans[spc] * ((size_t)sc_npages[cl] << PAGE_SHIFT);
		/* A remote free may be counted before the allocation it undoes (counters are read one
		 * thread at a time): clamp, so a snapshot never shows negative use. */
		uint64_t live = nm[spc] > nf[spc] ? nm[spc] - nf[spc] : 0;
		st->objects += live;
		st->heap_inuse += live * sc_size[cl];
		st->nmalloc += nm[spc];
		st->nfree += nf[spc];
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
}
