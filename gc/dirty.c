/* gc/dirty.c - what a program that never uses the barrier wrote while marking ran. The heap's
 * pages are write-protected before a concurrent mark (the kernel records writes and lets them
 * through, os_wt_*), spans the program allocates from meanwhile are unprotected and listed, and
 * mark termination re-scans the marked objects on written pages and in listed spans.
 * doc/design/collector.md 9. */
#include <stdlib.h>

#include "alloc/alloc.h"
#include "alloc/os.h"
#include "gc/gc.h"

const char *dirty_why = "not initialised";
NONROOT static bool dirty_ok;
NONROOT static uint8_t *registered;   /* per arena index entry: write tracking knows it (lazily
                                         committed; the collector's thread only) */
NONROOT static span_t *dirty_spans;   /* atomic: spans allocated from during this mark */
NONROOT static uint32_t dirty_gen = 1; /* this mark's tag in span->dirty_gen */
NONROOT static size_t rescan_bytes;   /* queued by the current termination */

bool dirty_init(void)
{
	if (rt_valgrind) {
		dirty_why = "running under valgrind, which does not know userfaultfd";
		return false;
	}
	dirty_why = os_wt_init();
	if (dirty_why == NULL && registered == NULL && (registered = os_map(NULL, ARENA_INDEX_SIZE)) == NULL)
		dirty_why = "out of memory";
	dirty_ok = dirty_why == NULL;
	return dirty_ok;
}

/* Each mapped arena of the heap, in address order. */
#define EACH_ARENA(x, ha)                                                                          \
	for (uintptr_t x = load_relaxed(&heap_lo), x##_end = load_relaxed(&heap_hi); x < x##_end;    \
	     x += ARENA_SIZE)                                                                       \
		for (heap_arena_t *ha = load_acquire(&arena_index[x >> ARENA_SHIFT]); ha; ha = NULL)

/* The page heap's bump pointer when the heap was armed: no span lay above it in its arena then,
 * so the arm, the scan and the disarm stop there (a small heap protects megabytes, not its whole
 * 64 MiB arena). A span made above it later is listed (dirty_span_add). */
NONROOT static uintptr_t arm_bump;

static uintptr_t arena_end(uintptr_t x)
{
	uintptr_t end = x + ARENA_SIZE;
	return arm_bump > x && arm_bump < end ? arm_bump : end;
}

bool dirty_arm(void)
{
	if (!dirty_ok)
		return false;
	arm_bump = load_relaxed(&mheap.bump);
	EACH_ARENA(x, ha) {
		if (!registered[x >> ARENA_SHIFT]) {
			if (os_wt_register(x, ARENA_SIZE) != 0)
				return false;
			registered[x >> ARENA_SHIFT] = 1;
		}
		if (os_wt_protect(x, arena_end(x) - x, 1) != 0)
			return false;
	}
	return true;
}

void dirty_disarm(void)
{
	EACH_ARENA(x, ha) {
		if (registered[x >> ARENA_SHIFT])
			os_wt_protect(x, arena_end(x) - x, 0);
	}
}

/* The span stays unprotected until the mark ends, so allocating from it costs no faults; its
 * marked objects are re-scanned at termination instead. Listed first, then unprotected. */
void dirty_span_add(span_t *s)
{
	uint32_t gen = load_relaxed(&dirty_gen);
	if (load_relaxed(&s->dirty_gen) == gen)
		return;
	store_relaxed(&s->dirty_gen, gen);
	span_t *head = load_relaxed(&dirty_spans);
	do
		s->dirty_next = head;
	while (!cas_weak_release(&dirty_spans, &head, s));
	os_wt_protect(s->base, s->npages << PAGE_SHIFT, 0);
}

/* Queues the marked objects of s that overlap [a, b): whole small objects, and only the overlap
 * of a large one (a written page of a 1 GiB array is a page to re-scan, not a gigabyte). */
static void push_marked(gcwork_t *w, span_t *s, uintptr_t a, uintptr_t b)
{
	uintptr_t end = s->base + (s->npages << PAGE_SHIFT);
	if (a < s->base)
		a = s->base;
	if (b > end)
		b = end;
	if (a >= b)
		return;
	if (s->kind == SPAN_LARGE) {
		if (s->large_mark && s->large_state != OBJ_FREE && !SPC_NOSCAN(s->spc)) {
			uintptr_t oend = s->base + s->elemsize;
			if (b > oend)
				b = oend;
			if (a < b) {
				mark_push_range(w, a, b - a, false);
				rescan_bytes += b - a;
			}
		}
		return;
	}
	if (SPC_NOSCAN(s->spc))
		return;
	size_t i = span_objindex(s, a), j = span_objindex(s, b - 1);
	for (; i <= j && i < s->nelems; i++) {
		if (s->marks[i] && s->state[i] != OBJ_FREE) {
			mark_push_range(w, s->base + i * s->elemsize, s->elemsize, false);
			rescan_bytes += s->elemsize;
		}
	}
}

static void written_run(void *arg, uintptr_t a, uintptr_t b)
{
	gcwork_t *w = arg;
	while (a < b) {
		span_t *s = spanmap_lookup(a);
		if (s == NULL || s->kind == SPAN_FREE) {
			a = (a + PAGE_SIZE) & ~(uintptr_t)(PAGE_SIZE - 1);
			continue;
		}
		push_marked(w, s, a, b);
		a = s->base + (s->npages << PAGE_SHIFT);
	}
}

size_t dirty_push_rescan(gcwork_t *w)
{
	rescan_bytes = 0;
	EACH_ARENA(x, ha) {
		if (registered[x >> ARENA_SHIFT] && os_wt_written(x, arena_end(x), written_run, w) != 0)
			cgc_fatal("cgc: the kernel stopped reporting written pages (PAGEMAP_SCAN) in the middle "
				  "of a collection; cannot finish it safely");
	}
	span_t *s = exchange_acq_rel(&dirty_spans, NULL);
	for (; s; s = s->dirty_next)
		push_marked(w, s, s->base, s->base + (s->npages << PAGE_SHIFT));
	store_relaxed(&dirty_gen, dirty_gen + 1);
	return rescan_bytes;
}

/* The arm failed: the spans listed since are forgotten (the cycle stops the world). */
void dirty_push_rescan_drop(void)
{
	store_release(&dirty_spans, NULL);
	store_relaxed(&dirty_gen, dirty_gen + 1);
}

bool dirty_init_child(void)
{
	os_wt_fork_child();
	EACH_ARENA(x, ha) {
		registered[x >> ARENA_SHIFT] = 0;
	}
	store_relaxed(&dirty_spans, NULL);
	return dirty_init();
}
