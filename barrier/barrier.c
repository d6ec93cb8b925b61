/* barrier/barrier.c - the out-of-line half of the hybrid write barrier (CGC_WRITE, cgc_memmove
 * and friends): values are buffered per thread and shaded a buffer at a time. doc/design/barrier.md.
 *
 * Shading runs on the program's thread with stops held off (threads_hold_stop), so a stop never finds a
 * thread with objects marked but not yet published as grey work (collector.md 8.3). */
#include <string.h>

#include "alloc/alloc.h"
#include "barrier/barrier.h"
#include "gc/gc.h"
#include "include/cgc.h"
#include "include/cgc_barrier.h"

CGC_API int cgc_barrier_active;

/* Shades n values with stops held off, and only while the barrier is still on, read inside the
 * hold (flush below too): a thread stopped for mark termination between its test of the flag and
 * here would otherwise set marks after the cycle ended, during or after the sweep, and the next
 * cycle would take them for its own and never scan those objects (collector.md 8.3). */
static void shade_blocked(const uintptr_t *v, size_t n)
{
	threads_hold_stop();
	if (load_acquire(&cgc_barrier_active))
		mark_shade(v, n);
	threads_release_stop();
}

static NOINLINE void flush(wbbuf_t *b)
{
	threads_hold_stop();
	/* The count is read inside the hold: a termination that ran before may have shaded
	 * and emptied the buffer. */
	if (load_acquire(&cgc_barrier_active))
		mark_shade(b->v, load_relaxed(&b->n));
	store_relaxed(&b->n, 0);
	threads_release_stop();
}

/* Yuasa: the value about to be overwritten was reachable when marking began, and the mark must
 * still find it. Dijkstra: the value stored may have come from a stack the mark has not scanned,
 * or from an object being scanned. Both go into the thread's buffer as they are, NULL and non-heap
 * words included, and a full buffer is shaded at once (mark_shade skips what is not a white heap
 * object), as Go's wbBuf: a few stores while marking, no lock, no lookup, no hold. It used to
 * test both values' mark bytes here, inside a hold so that the bytes read were this cycle's, and
 * that was a quarter of GCBench's program thread while the barrier was on (perf).
 *
 * Without the hold a stop can land anywhere in here. A stop for mark termination between the
 * entries and the count leaves them uncounted, and one after the count leaves them counted and
 * shaded by barrier_flush_all: either way right, since the store they guard has not happened yet
 * and needs no barrier once the cycle is over (doc/design/barrier.md 3). Entries made after that
 * stop, by a thread that had tested the flag before it, are left for the next flush, which shades
 * them only if a mark is on (inside its hold), or the next cycle's start drops them
 * (barrier_enable): they belong to no cycle. */
CGC_API void cgc_write_barrier(void *slot, const void *value)
{
	if (!load_relaxed(&cgc_barrier_active))
		return;
	gthread_t *t = tls_gthread;
	if (unlikely(t == NULL || t->wb == NULL)) {
		/* An unregistered thread (its pointers would not be found anyway) or one whose buffer
		 * could not be made: shade at once. */
		uintptr_t both[2] = {*(volatile uintptr_t *)slot, (uintptr_t)value};
		shade_blocked(both, 2);
		return;
	}
	wbbuf_t *b = t->wb;
	uint32_t n = b->n;
	b->v[n] = *(volatile uintptr_t *)slot;
	b->v[n + 1] = (uintptr_t)value;
	__atomic_signal_fence(__ATOMIC_RELEASE);
	store_relaxed(&b->n, n + 2);
	if (unlikely(n + 4 > WB_ENTRIES))
		flush(b);
}

void barrier_enable(bool on)
{
	if (on)
		for (gthread_t *t = threads_first(); t; t = t->next)
			if (t->wb)
				store_relaxed(&t->wb->n, 0);
	store_release(&cgc_barrier_active, on ? 1 : 0); /* cgc_write_barrier says why */
}

void barrier_flush_all(void)
{
	for (gthread_t *t = threads_first(); t; t = t->next) {
		if (t->wb && t->wb->n) {
			mark_shade(t->wb->v, t->wb->n);
			t->wb->n = 0;
		}
	}
}

void barrier_thread_exit(gthread_t *t)
{
	if (t->wb && load_relaxed(&t->wb->n)) {
		if (load_relaxed(&cgc_barrier_active))
			flush(t->wb);
		t->wb->n = 0;
	}
}

void barrier_shade_range(const void *p, size_t len)
{
	const uintptr_t *w = (const uintptr_t *)(((uintptr_t)p + 7) & ~(uintptr_t)7);
	const uintptr_t *end = (const uintptr_t *)(((uintptr_t)p + len) & ~(uintptr_t)7);
	if (end > w)
		shade_blocked(w, (size_t)(end - w));
}

CGC_API int cgc_set_barrier(int on)
{
	alloc_init();
	return gc_set_barrier(on != 0);
}

/* The bulk forms: the words about to be overwritten and the words about to be stored are shaded
 * first, then the plain operation runs. */
CGC_API void *cgc_memmove(void *dst, const void *src, size_t n)
{
	if (unlikely(load_relaxed(&cgc_barrier_active))) {
		barrier_shade_range(dst, n);
		barrier_shade_range(src, n);
	}
	return memmove(dst, src, n);
}

CGC_API void *cgc_memcpy(void *dst, const void *src, size_t n)
{
	if (unlikely(load_relaxed(&cgc_barrier_active))) {
		barrier_shade_range(dst, n);
		barrier_shade_range(src, n);
	}
	return memcpy(dst, src, n);
}

CGC_API void *cgc_memclr(void *dst, size_t n)
{
	if (unlikely(load_relaxed(&cgc_barrier_active)))
		barrier_shade_range(dst, n);
	return memset(dst, 0, n);
}
