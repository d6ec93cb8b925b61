/* alloc/malloc.c - the public allocation entry points: inline fast paths over the thread's
 * mcache, out-of-line slow paths, tiny and large objects, and bad-pointer reports.
 * doc/design/allocator.md, "Fast paths" and "Bad input". */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "alloc/alloc.h"
#include "alloc/os.h"
#include "alloc/vg.h"
#include "barrier/barrier.h"
#include "gc/gc.h"
#include "include/cgc.h"

_Static_assert(NUM_SIZE_CLASSES == CGC_NUM_CLASSES, "cgc.h's CGC_NUM_CLASSES must match the table");

/* ---- initialisation ---------------------------------------------------------------------- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* fork() in a threaded program: another thread may hold any of cgc's locks at the moment of the
 * fork, and the child would inherit it held forever. Take them all first, in the one order the
 * allocator ever nests them (mcentral, then mheap, then meta), and release them on both sides. The
 * child's other threads are gone; their spans stay owned by their caches, and frees into them go
 * the remote way (the memory comes back with the collector). */
static void fork_prepare(void)
{
	for (unsigned i = 0; i < NUM_SPAN_CLASSES; i++)
		lock_acquire(&mheap.central[i].lock);
	lock_acquire(&mheap.lock);
	prefault_fork_prepare();
	meta_fork_prepare();
}

/* In the child too: the thread that took the locks in fork_prepare is the child's one thread. */
static void fork_release(void)
{
	meta_fork_release();
	pthread_mutex_unlock(&mheap.lock);
	for (unsigned i = NUM_SPAN_CLASSES; i-- > 0;)
		pthread_mutex_unlock(&mheap.central[i].lock);
}

static void fork_parent(void)
{
	prefault_fork_parent();
	fork_release();
}

static void fork_child(void)
{
	prefault_fork_child();
	fork_release();
}

static void do_init(void)
{
	mheap_init();
	if (!arena_init())
		cgc_fatal("cgc: cannot map the heap's arena index (%zu MiB of address space)",
			  (size_t)(ARENA_INDEX_SIZE * sizeof(void *)) >> 20);
	rt_valgrind = os_running_on_valgrind();
	mcache_init_key();
	if (pthread_atfork(fork_prepare, fork_parent, fork_child) != 0)
		cgc_fatal("cgc: cannot register the fork handlers");
	gc_init();
}

void alloc_init(void)
{
	pthread_once(&init_once, do_init);
}

__attribute__((constructor)) static void alloc_ctor(void)
{
	alloc_init();
}

/* ---- tiny objects ------------------------------------------------------------------------ */

/* The tiny object that granule g of a tiny block (state byte st) belongs to: its first granule,
 * or -1 when g is not in use. */
static int tiny_start(uint8_t st, unsigned g)
{
	if (!((st >> 4 >> g) & 1))
		return -1;
	while (!((st >> g) & 1))
		g--;
	return (int)g;
}

/* Granules from g to the next object's start or the first unused one. */
static size_t tiny_size(uint8_t st, unsigned g)
{
	unsigned n = 1;
	while (g + n < TINY_SIZE / TINY_GRANULE && ((st >> 4 >> (g + n)) & 1) && !((st >> (g + n)) & 1))
		n++;
	return n * TINY_GRANULE;
}

/* ---- bad input --------------------------------------------------------------------------- */

/* Works out what is wrong with p, says it in one line, aborts. Nothing was changed before. */
_Noreturn COLD void report_bad_pointer(const char *fn, const void *p)
{
	uintptr_t a = (uintptr_t)p;
	span_t *s = spanmap_lookup(a);
	if (s && s->kind != SPAN_FREE) {
		size_t idx = span_objindex(s, a);
		if (idx < s->nelems) {
			uintptr_t base = s->base + idx * s->elemsize;
			uint8_t st = load_relaxed(&s->state[idx]);
			int g = s->kind == SPAN_TINY ? tiny_start(st, (unsigned)((a - base) / TINY_GRANULE)) : -1;
			if (g >= 0) {
				cgc_fatal("cgc: %s(): %p is an interior pointer into the tiny object at %p", fn, p,
					  (void *)(base + (unsigned)g * TINY_GRANULE));
			} else if (s->kind == SPAN_TINY) {
				/* an unused granule of a tiny block: not an object */
			} else if (a == base && st == OBJ_FREE) {
				cgc_fatal("cgc: %s(): double free of %p (a %zu-byte object that is already free)", fn, p,
					  s->elemsize);
			} else if (st != OBJ_FREE) {
				cgc_fatal("cgc: %s(): %p is an interior pointer into the %zu-byte object at %p", fn, p,
					  s->elemsize, (void *)base);
			}
		}
	}
	/* Not in a live span: perhaps in one that went back to the page heap after its last free. */
	size_t released = (s == NULL || s->kind == SPAN_FREE) ? mheap_released_object_size(a) : 0;
	if (released)
		cgc_fatal("cgc: %s(): double free of %p (a %zu-byte object that is already free)", fn, p, released);
	cgc_fatal("cgc: %s(): %p was not allocated by cgc", fn, p);
}

/* Packs a tiny object of size bytes (a multiple of 4) into the current block: the fast path,
 * about ten instructions. NULL when there is no block or no room (the empty mcache has none). */
static ALWAYS_INLINE void *tiny_pack(mcache_t *c, size_t size)
{
	size_t align = (size & 7) == 0 ? 8 : TINY_GRANULE;
	uintptr_t off = (c->tiny_off + align - 1) & ~(align - 1);
	/* The block is read once: a stop may land anywhere in here, and the collector drops every
	 * cache's block meanwhile (c->tiny = 0). Read again for the return, a dropped block made
	 * the object's address off itself (tests/stress_gc under TSan: a write to address 8).
	 * Finishing in the old block is safe: our registers keep it marked (collector.md 5.3). */
	uintptr_t blk = load_relaxed(&c->tiny);
	if (unlikely(blk == 0 || off + size > TINY_SIZE))
		return NULL;
	uint8_t st = load_relaxed(c->tiny_state);
	store_relaxed(c->tiny_state,
		      (uint8_t)(st | tiny_mask((unsigned)(off / TINY_GRANULE), (unsigned)(size / TINY_GRANULE))));
	c->tiny_off = off + size;
	counter_add_owner(&c->tiny_allocs, 1);
	return (void *)(blk + off);
}

/* A new block, or (under valgrind, where the fast path is off) the current one, announcing the
 * object to memcheck. */
static NOINLINE void *tiny_alloc_slow(mcache_t *c, size_t size)
{
	void *p = tiny_pack(c, size);
	if (p) {
		vg_malloclike(p, size, 0);
		return p;
	}
	p = mcache_tiny_alloc_slow(c, size);
	if (p == NULL)
		errno = ENOMEM;
	gc_maybe_trigger();
	return p;
}

/* ---- large objects ----------------------------------------------------------------------- */

static NOINLINE void *large_alloc(size_t n, int noscan)
{
	if (n > PTRDIFF_MAX) {
		errno = ENOMEM;
		return NULL;
	}
	alloc_init();
	mcache_t *c = mcache_get();
	if (c == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	size_t npages = (n + PAGE_SIZE - 1) >> PAGE_SHIFT;
	span_t *s = mheap_alloc_large(npages, SPC(0, noscan), &c->inflight);
	if (s == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	void *p = (void *)s->base;
	/* A cycle that ended since the span was made marked the object through c->inflight; from
	 * here on p is in our registers, which a stop scans (doc/design/collector.md 5.3). No mark
	 * is set here: a sweep could finish between a test of the span and the set, and leave the
	 * mark on into the next cycle, which would then never scan the object (found by
	 * tests/stress_gc). */
	__asm__ volatile("" ::"r"(p) : "memory");
	store_relaxed(&c->inflight, 0);
	if (unlikely(load_relaxed(&mheap.track_spans)))
		dirty_span_add(s);
	vg_malloclike(p, s->elemsize, !noscan);
	/* Fresh and released pages are already zero: no need to touch them. */
	if (!noscan && s->needzero)
		memset(p, 0, s->elemsize);
	pacer_account((int64_t)s->elemsize);
	gc_maybe_trigger();
	return p;
}

static void large_free(span_t *s, void *p, const char *fn)
{
	uint8_t expect = OBJ_ALLOC;
	if ((uintptr_t)p != s->base ||
	    !__atomic_compare_exchange_n(&s->large_state, &expect, OBJ_FREE, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_RELAXED))
		report_bad_pointer(fn, p);
	vg_freelike(p);
	pacer_account(-(int64_t)s->elemsize);
	mheap_free_span(s);
}

/* ---- small objects ----------------------------------------------------------------------- */

static NOINLINE void *small_alloc_slow(size_t n, int noscan)
{
	if (n > MAX_SMALL_SIZE)
		return large_alloc(n, noscan);
	unsigned spc = SPC(size_to_class(n), noscan);
	mcache_t *c = mcache_get();
	if (c == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	void *p = mcache_refill(c, spc);
	if (p == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	size_t size = sc_size[spc >> 1];
	vg_malloclike(p, size, !noscan);
	if (!noscan)
		memset(p, 0, size);
	gc_maybe_trigger();
	return p;
}

/* The fast path: one test (is the current span's free list non-empty?), a pop, the state byte, a
 * counter: about fifteen instructions, then the memset of a scan object. Everything else is
 * small_alloc_slow. */
static ALWAYS_INLINE void *small_alloc(size_t n, int noscan)
{
	mcache_t *c = tls_mcache;
	unsigned spc = SPC(sc_class_small[(n + SMALL_SIZE_DIV - 1) / SMALL_SIZE_DIV], noscan);
	span_t *s = c->alloc[spc];
	void *p = s->freelist;
	if (likely(p != NULL)) {
		s->freelist = *(void **)p;
		counter_add_owner(&s->nalloc, 1);
		store_relaxed(&s->state[span_objindex(s, (uintptr_t)p)], OBJ_ALLOC);
		counter_add_owner(&s->nmalloc, 1);
		if (!noscan)
			memset(p, 0, s->elemsize);
		return p;
	}
	return small_alloc_slow(n, noscan);
}

CGC_API void *cgc_malloc(size_t n)
{
	if (likely(n <= SMALL_SIZE_MAX))
		return small_alloc(n, 0);
	return small_alloc_slow(n, 0);
}

CGC_API void *cgc_malloc_atomic(size_t n)
{
	if (n - 1 < TINY_SIZE - 1) {
		mcache_t *c = tls_mcache;
		size_t size = (n + TINY_GRANULE - 1) & ~(size_t)(TINY_GRANULE - 1);
		void *p = likely(!rt_valgrind) ? tiny_pack(c, size) : NULL;
		return likely(p != NULL) ? p : tiny_alloc_slow(c, size);
	}
	if (likely(n <= SMALL_SIZE_MAX))
		return small_alloc(n, 1);
	return small_alloc_slow(n, 1);
}

CGC_API void *cgc_calloc(size_t n, size_t size)
{
	size_t total;
	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return cgc_malloc(total);
}

/* ---- free and queries -------------------------------------------------------------------- */

/* Usable bytes of the object that starts at p; aborts on anything else. */
static size_t usable_size_checked(const void *p, const char *fn, span_t **sp)
{
	uintptr_t a = (uintptr_t)p;
	span_t *s = spanmap_lookup(a);
	if (s == NULL || s->kind == SPAN_FREE)
		report_bad_pointer(fn, p);
	size_t idx = span_objindex(s, a);
	if (idx >= s->nelems)
		report_bad_pointer(fn, p);
	uintptr_t base = s->base + idx * s->elemsize;
	uint8_t st = load_relaxed(&s->state[idx]);
	*sp = s;
	if (s->kind == SPAN_TINY) {
		unsigned g = (unsigned)((a - base) / TINY_GRANULE);
		if (st == OBJ_FREE || (a - base) % TINY_GRANULE || tiny_start(st, g) != (int)g)
			report_bad_pointer(fn, p);
		return tiny_size(st, g);
	}
	if (a != base || st != OBJ_ALLOC)
		report_bad_pointer(fn, p);
	return s->elemsize;
}

/* Frees of tiny and large objects, and anything the fast path did not recognise. */
static NOINLINE void free_slow(void *p, span_t *s, const char *fn)
{
	if (p == NULL)
		return;
	if (s == NULL || s->kind == SPAN_FREE)
		report_bad_pointer(fn, p);
	if (s->kind == SPAN_LARGE) {
		large_free(s, p, fn);
		return;
	}
	/* Tiny: a free is accepted at the start of a live tiny object and does nothing; the block
	 * comes back when the collector finds all of it unreachable (doc/design/allocator.md 7).
	 * usable_size_checked aborts on anything else. */
	(void)usable_size_checked(p, fn, &s);
}

/* Everything the free fast path leaves out: a bad pointer, a double free, a span another thread
 * owns (or nobody does), and frees that must speak to memcheck or fill freed memory. */
static NOINLINE void free_small_slow(void *p, span_t *s, size_t idx, const char *fn)
{
	uintptr_t a = (uintptr_t)p;
	if (idx >= s->nelems || s->base + idx * s->elemsize != a)
		report_bad_pointer(fn, p);
	mcache_t *c = tls_mcache;
	if (load_relaxed(&s->owner) != owner_tag(c)) {
		/* Read first: once the object is pushed, the owner may give the span away. */
		int64_t size = (int64_t)s->elemsize;
		mcache_remote_free(s, p, idx, fn);
		/* A thread that only frees never refills, where the count is handed over. */
		if (c == &empty_mcache)
			pacer_account(-size);
		else if ((c->freed += size) >= FREED_FLUSH)
			pacer_account(-mcache_take_freed(c));
		return;
	}
	if (load_relaxed(&s->state[idx]) != OBJ_ALLOC)
		report_bad_pointer(fn, p);
	store_relaxed(&s->state[idx], OBJ_FREE);
	vg_freelike(p);
	slot_fill_freed(s, p);
	obj_set_next(p, s->local_free);
	s->local_free = p;
	c->freed += (int64_t)s->elemsize;
	counter_add_owner(&s->nalloc, -1);
	if (s->nalloc == 0 || s->where == WHERE_MC_FULL)
		mcache_after_local_free(c, s);
}

/* The free fast path: a span lookup, then one test that folds every unusual case together (not an
 * object's start, not our span, not allocated; past the last slot the state array reads FREE; under
 * valgrind or in debug builds the owner is tagged, see owner_tag), then a push onto the span's
 * local free list. About twenty instructions; no atomics, no locks. NULL misses the heap range
 * and goes to free_slow. */
static ALWAYS_INLINE void free_small(void *p, const char *fn)
{
	uintptr_t a = (uintptr_t)p;
	span_t *s = spanmap_lookup_freed(a);
	if (unlikely(s == NULL || s->kind != SPAN_SMALL)) {
		free_slow(p, s, fn);
		return;
	}
	size_t idx = span_objindex(s, a);
	mcache_t *c = tls_mcache;
	uint8_t *st = &s->state[idx];
	if (unlikely((s->base + idx * s->elemsize != a) | (load_relaxed(&s->owner) != c) |
		     (load_relaxed(st) != OBJ_ALLOC))) {
		free_small_slow(p, s, idx, fn);
		return;
	}
	store_relaxed(st, OBJ_FREE);
	*(void **)p = s->local_free;
	s->local_free = p;
	c->freed += (int64_t)s->elemsize; /* for the pacer, at the next refill (mcache_take_freed) */
	uint16_t left = (uint16_t)(load_relaxed(&s->nalloc) - 1);
	store_relaxed(&s->nalloc, left);
	if (unlikely((left == 0) | (s->where == WHERE_MC_FULL)))
		mcache_after_local_free(c, s);
}

CGC_API void cgc_free(void *p)
{
	free_small(p, "free");
}

CGC_API size_t cgc_usable_size(const void *p)
{
	span_t *s;
	return p ? usable_size_checked(p, "usable_size", &s) : 0;
}

CGC_API void *cgc_realloc(void *p, size_t n)
{
	if (p == NULL)
		return cgc_malloc(n);
	span_t *s;
	size_t old = usable_size_checked(p, "realloc", &s);
	int noscan = SPC_NOSCAN(s->spc);
	/* In place when the new size fits and would not waste more than half of the object. */
	if (n != 0 && n <= old && (n > old / 2 || s->kind == SPAN_TINY))
		return p;
	/* A large object that stays large shrinks in place: its tail pages go back to the heap. */
	if (s->kind == SPAN_LARGE && n > MAX_SMALL_SIZE && n < old) {
		size_t npages = (n + PAGE_SIZE - 1) >> PAGE_SHIFT;
		if (mheap_shrink_large(s, npages)) {
			vg_resize(p, old, s->elemsize);
			return p;
		}
	}
	void *q = noscan ? cgc_malloc_atomic(n) : cgc_malloc(n);
	if (q == NULL)
		return NULL; /* p is untouched and still valid */
	/* q is black while a mark runs; what it inherits from p must not stay white. */
	if (!noscan && unlikely(load_relaxed(&mheap.marking)))
		barrier_shade_range(p, n < old ? n : old);
	memcpy(q, p, n < old ? n : old);
	free_small(p, "realloc");
	return q;
}

CGC_API void *cgc_base(const void *p)
{
	span_t *s;
	size_t idx;
	uintptr_t a = (uintptr_t)p;
	uintptr_t base = object_find(a, &s, &idx);
	if (base == 0)
		return NULL;
	if (s->kind == SPAN_TINY) {
		int g = tiny_start(load_relaxed(&s->state[idx]), (unsigned)((a - base) / TINY_GRANULE));
		return g < 0 ? NULL : (void *)(base + (unsigned)g * TINY_GRANULE);
	}
	return (void *)base;
}
