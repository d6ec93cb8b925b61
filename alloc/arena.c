/* alloc/arena.c - heap address space: 64 MiB arenas at hint addresses, and the span map that
 * answers "which span holds this address" in O(1). doc/design/allocator.md, "Address space". */
#include <string.h>

#include "alloc/alloc.h"
#include "alloc/os.h"
#include "gc/gc.h"

heap_arena_t **arena_index;
/* The range only grows, from an empty one at the first hint: lo falls and hi rises, so whatever
 * pair of values a racing lookup reads, the range stays inside the user address space and every
 * index it can compute is inside arena_index. */
NONROOT uintptr_t heap_lo = HEAP_HINT_BASE;
NONROOT uintptr_t heap_hi = HEAP_HINT_BASE;

int arena_init(void)
{
	/* 4M pointers, 32 MiB of address space; only the entries of arenas we map are ever touched,
	 * so it costs a page or two of memory. */
	arena_index = os_map(NULL, ARENA_INDEX_SIZE * sizeof(heap_arena_t *));
	return arena_index != NULL;
}

/* Reserves size bytes (a multiple of ARENA_SIZE), aligned to ARENA_SIZE. Tries the hints first,
 * in order, so the heap stays in one contiguous range at unusual addresses; then anywhere. */
static uintptr_t arena_reserve(size_t size)
{
	while (mheap.hint_index < HEAP_HINT_COUNT) {
		uintptr_t hint = mheap.next_hint;
		if (hint == 0 || (hint + size) >> ADDR_BITS) {
			mheap.hint_index++;
			mheap.next_hint = HEAP_HINT_BASE + mheap.hint_index * HEAP_HINT_STEP;
			continue;
		}
		void *p = os_map((void *)hint, size);
		if (p) {
			mheap.next_hint = hint + size;
			return (uintptr_t)p;
		}
		/* Taken (by a sanitizer's shadow, another runtime, a mapping): next hint region. */
		mheap.hint_index++;
		mheap.next_hint = HEAP_HINT_BASE + mheap.hint_index * HEAP_HINT_STEP;
	}
	/* No hint left: anywhere, over-mapped and trimmed to alignment. */
	char *p = os_map(NULL, size + ARENA_SIZE);
	if (p == NULL)
		return 0;
	uintptr_t a = ((uintptr_t)p + ARENA_SIZE - 1) & ~(ARENA_SIZE - 1);
	if (a > (uintptr_t)p)
		os_unmap(p, a - (uintptr_t)p);
	uintptr_t end = (uintptr_t)p + size + ARENA_SIZE;
	if (end > a + size)
		os_unmap((void *)(a + size), end - (a + size));
	if ((a + size) >> ADDR_BITS) {
		os_unmap((void *)a, size);
		return 0;
	}
	return a;
}

/* Huge pages, only when asked for (CGC_DEBUG=hugepages=1; doc/design/allocator.md 5.5). Whether
 * they pay depends on the machine: on one VM they took GCBench at 200 MB live from 2.4 to 1.9 s
 * (a fifth of its time had been 4 KiB page faults); on another they took it from 0.95 to 1.6 s,
 * the kernel's zeroing of each fresh 2 MiB page costing several ms there (perf: clear_page 44% of
 * all CPU, against 2% with small pages). mimalloc, jemalloc and Go leave the choice to the system
 * by default too. When asked for, a small heap keeps small pages (it would hold up to 2 MiB more
 * per region it touches, for nothing): the first arena starts with small pages, and when a second
 * one is needed every arena so far is advised too (the kernel collapses their touched parts in the
 * background) and every later one at once. The scavenger's MADV_DONTNEED of a shorter run splits
 * a huge page, which is correct, only slower. */
static void arena_advise_hugepages(uintptr_t a, size_t size)
{
	if (rt_valgrind || !gc_opt.hugepages)
		return;
	if (mheap.arena_bytes <= ARENA_SIZE)
		return;
	if (!mheap.hugepages) {
		mheap.hugepages = 1;
		/* Every arena mapped before this one: those below it, from the lowest. */
		for (uintptr_t x = load_relaxed(&heap_lo); x < load_relaxed(&heap_hi); x += ARENA_SIZE)
			if (arena_index[x >> ARENA_SHIFT])
				os_hugepages((void *)x, ARENA_SIZE);
	}
	os_hugepages((void *)a, size);
}

uintptr_t arena_grow(size_t npages, size_t *got)
{
	size_t need = npages << PAGE_SHIFT;
	if (npages == 0 || need >> PAGE_SHIFT != npages || need > ((uintptr_t)1 << (ADDR_BITS - 2)))
		return 0;
	size_t size = (need + ARENA_SIZE - 1) & ~(ARENA_SIZE - 1);
	uintptr_t a = arena_reserve(size);
	if (a == 0)
		return 0;
	for (uintptr_t x = a; x < a + size; x += ARENA_SIZE) {
		heap_arena_t *ha = meta_alloc(sizeof(heap_arena_t));
		if (ha == NULL)
			return 0; /* arenas registered before this one stay unused: harmless */
		store_release(&arena_index[x >> ARENA_SHIFT], ha);
	}
	mheap.arena_bytes += size;
	arena_advise_hugepages(a, size);
	/* Publish the new bounds after the index entries, so a lookup that passes the range test
	 * finds an entry (or NULL for address space between arenas). */
	if (a + size > load_relaxed(&heap_hi))
		store_release(&heap_hi, a + size);
	if (a < load_relaxed(&heap_lo))
		store_release(&heap_lo, a);
	*got = size;
	return a;
}

void spanmap_set_page(uintptr_t page, span_t *s)
{
	heap_arena_t *ha = arena_index[page >> ARENA_SHIFT];
	store_release(&ha->spans[(page >> PAGE_SHIFT) & (PAGES_PER_ARENA - 1)], s);
}

void spanmap_set(uintptr_t base, size_t npages, span_t *s)
{
	for (size_t i = 0; i < npages; i++)
		spanmap_set_page(base + (i << PAGE_SHIFT), s);
}
