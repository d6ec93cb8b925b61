/* alloc/alloc.h - the allocator's internal interface: cross-file prototypes grouped by the file
 * that defines them, and the inline lookups every subsystem uses. doc/design/allocator.md. */
#ifndef CGC_ALLOC_ALLOC_H
#define CGC_ALLOC_ALLOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc/atomic.h"
#include "alloc/check.h"
#include "alloc/types.h"

/* ---- globals (alloc/mheap.c) ------------------------------------------------------------- */

extern mheap_t mheap;
extern heap_arena_t **arena_index;  /* ARENA_INDEX_SIZE entries, mapped at init */
extern uintptr_t heap_lo, heap_hi;  /* atomic: bounds of every arena mapped so far */
extern int rt_valgrind;             /* running under valgrind: slow paths speak memcheck */
extern span_t empty_span;           /* a span with nothing free: makes fast paths miss */
extern mcache_t empty_mcache;       /* the mcache of threads that have not allocated yet */
extern __thread mcache_t *tls_mcache __attribute__((tls_model("initial-exec")));

/* ---- address to span and object: O(1), lock-free ----------------------------------------- */

/* The span containing address a, or NULL. Two dependent loads after a range test that rejects
 * most non-heap words at once: this runs on every word the collector scans. */
static ALWAYS_INLINE span_t *spanmap_lookup(uintptr_t a)
{
	uintptr_t lo = load_relaxed(&heap_lo);
	if (a - lo >= load_relaxed(&heap_hi) - lo)
		return NULL;
	heap_arena_t *ha = load_relaxed(&arena_index[a >> ARENA_SHIFT]);
	if (unlikely(ha == NULL))
		return NULL;
	return load_relaxed(&ha->spans[(a >> PAGE_SHIFT) & (PAGES_PER_ARENA - 1)]);
}

/* The same for a pointer handed to cgc_free or cgc_realloc, which nearly always is a heap address:
 * the range test rejects nothing there, so the free path only keeps the index in bounds (a load
 * and four instructions fewer per free). */
static ALWAYS_INLINE span_t *spanmap_lookup_freed(uintptr_t a)
{
	heap_arena_t **index = arena_index; /* NULL before alloc_init: a free from an earlier ctor */
	if (unlikely(!index))
		return NULL;
	/* Masked, not range-tested: a non-user address aliases some arena's entry, and every caller
	 * then compares a with the object it finds, which has no high bits, and reports it. */
	heap_arena_t *ha = load_relaxed(&index[(a >> ARENA_SHIFT) & (ARENA_INDEX_SIZE - 1)]);
	if (unlikely(ha == NULL))
		return NULL;
	return load_relaxed(&ha->spans[(a >> PAGE_SHIFT) & (PAGES_PER_ARENA - 1)]);
}

/* Slot index of address a in span s: a multiply and a shift, never a division. */
static ALWAYS_INLINE size_t span_objindex(const span_t *s, uintptr_t a)
{
	return (size_t)(((uint64_t)(a - s->base) * s->divmul) >> 32);
}

/* The allocated object containing a: its base, with its span and slot index; 0 when a is not
 * inside an allocated object (foreign, a free slot, a span's unused tail, a free span). Tiny
 * blocks answer with the block; callers that care find the tiny object inside it. */
static ALWAYS_INLINE uintptr_t object_find(uintptr_t a, span_t **sp, size_t *idxp)
{
	span_t *s = spanmap_lookup(a);
	if (s == NULL || load_relaxed(&s->kind) == SPAN_FREE)
		return 0;
	size_t idx = span_objindex(s, a);
	if (idx >= s->nelems || load_relaxed(&s->state[idx]) == OBJ_FREE)
		return 0;
	*sp = s;
	*idxp = idx;
	return s->base + idx * s->elemsize;
}

/* What a span's owner field holds for mcache c: c, or c with its low bit set when every free must
 * take the slow path (under valgrind, or in a debug build). The free fast path compares against
 * the plain c, so it misses without testing a flag of its own. */
static ALWAYS_INLINE mcache_t *owner_tag(mcache_t *c)
{
	return (mcache_t *)((uintptr_t)c | (uintptr_t)(rt_valgrind | (CGC_DEBUG_LEVEL > 0)));
}

static ALWAYS_INLINE mcache_t *owner_untag(mcache_t *o)
{
	return (mcache_t *)((uintptr_t)o & ~(uintptr_t)1);
}

/* Bytes of a small span's state array: one per slot, and one per slot-sized piece of the tail, so
 * that any address in the span indexes inside it (tail entries stay OBJ_FREE). The free fast path
 * then needs no bound check. */
static inline size_t span_state_bytes(const span_t *s)
{
	return (s->npages << PAGE_SHIFT) / s->elemsize; /* the last byte's index is below this */
}

/* The state bytes rounded up to whole words: where the mark bytes start after them, and how many
 * mark bytes there are (the sweep reads both arrays eight bytes at a time). */
static inline size_t span_state_stride(const span_t *s)
{
	return (span_state_bytes(s) + 7) & ~(size_t)7;
}

/* Bytes of the metadata allocation behind s->state: the state bytes, then the mark bytes. */
static inline size_t span_meta_bytes(const span_t *s)
{
	return 2 * span_state_stride(s);
}

/* A tiny block's state bits for an object at granule g of ng granules: its start bit (low
 * nibble) and its in-use bits (high nibble). doc/design/allocator.md, 7. */
static inline uint8_t tiny_mask(unsigned g, unsigned ng)
{
	return (uint8_t)(1u << g | ((1u << ng) - 1) << (4 + g));
}

/* ---- alloc/meta.c: memory for cgc's own structures --------------------------------------- */

void *meta_alloc(size_t size); /* zeroed; sizes up to 64 KiB; never returned to the OS */
void meta_free(void *p, size_t size);
size_t meta_mapped_bytes(void);
void meta_fork_prepare(void);
void meta_fork_release(void);           /* parent and child alike */

/* ---- alloc/arena.c: arenas and the span map ---------------------------------------------- */

int arena_init(void);

/* ---- alloc/prefault.c: fresh memory faulted in ahead of the bump pointer ------------------ */

void prefault_start(void);                      /* the helper thread (no allocator lock held) */
void prefault_note(uintptr_t bump, uintptr_t end, size_t inuse); /* the bump moved (mheap.lock) */
void prefault_fork_prepare(void);
void prefault_fork_parent(void);
void prefault_fork_child(void);
/* Maps at least npages of fresh address space for the page heap (mheap lock held): returns its
 * base and stores its length in *got; 0 on failure. */
uintptr_t arena_grow(size_t npages, size_t *got);
void spanmap_set(uintptr_t base, size_t npages, span_t *s);
void spanmap_set_page(uintptr_t page, span_t *s);

/* ---- alloc/mheap.c: the page heap -------------------------------------------------------- */

void mheap_init(void);
span_t *mheap_alloc_small(unsigned spc);                 /* a new span of class spc */
/* A span for one large object; its base is stored in *inflight before the heap lock is released. */
span_t *mheap_alloc_large(size_t npages, unsigned spc, uintptr_t *inflight);
void mheap_free_span(span_t *s);                          /* takes the mheap lock; the span
                                                             must be swept (sweep_ensure) */
bool mheap_shrink_large(span_t *s, size_t npages);        /* takes the mheap lock */
void mheap_free_span_locked(span_t *s);
span_t *mheap_take_deferred_locked(void);
void mheap_free_deferred(span_t *list);
void mheap_scavenge(uint64_t now, uint64_t min_idle_ns);  /* mheap lock held */
void mheap_release_idle(uint64_t min_idle_ns);           /* takes the lock; test and GC hook */
void mheap_validate(void);                                /* takes the lock; aborts on error */
void mheap_validate_locked(void);
void mheap_register_mcache(mcache_t *c);
/* The object size if a lies at an object's start in a recently released span, else 0. */
size_t mheap_released_object_size(uintptr_t a);

/* ---- alloc/span.c: one span's slots ------------------------------------------------------- */

void span_init_objects(span_t *s, unsigned spc);
bool span_extend_fresh(span_t *s);          /* threads a batch of fresh slots onto freelist */
size_t span_collect(span_t *s, uintptr_t keep_flag); /* local_free, thread_free -> freelist */
void span_push_free(span_t *s, void *p);
void slot_fill_freed_slow(span_t *s, void *p);
void span_validate(const span_t *s);
void span_list_push(span_list_t *l, span_t *s);
void span_list_remove(span_list_t *l, span_t *s);
span_t *span_list_pop(span_list_t *l);
void *obj_get_next_slow(void *p);
void obj_set_next_slow(void *p, void *next);

/* Debug builds: fill a freed slot's bytes, so a write after free is caught when it is reused. */
static ALWAYS_INLINE void slot_fill_freed(span_t *s, void *p)
{
	if (CGC_DEBUG_LEVEL > 0)
		slot_fill_freed_slow(s, p);
}

/* The free-list link of a free slot. Inline: the sweep and the refills run these once per object;
 * under valgrind the slow versions tell memcheck the link word is ours. */
static ALWAYS_INLINE void *obj_get_next(void *p)
{
	if (unlikely(rt_valgrind))
		return obj_get_next_slow(p);
	return *(void **)p;
}

static ALWAYS_INLINE void obj_set_next(void *p, void *next)
{
	if (unlikely(rt_valgrind))
		obj_set_next_slow(p, next);
	else
		*(void **)p = next;
}

/* ---- alloc/mcentral.c: unowned spans ------------------------------------------------------ */

span_t *mcentral_take(unsigned spc, mcache_t *c);  /* an unowned span with free slots, now c's */
void mcentral_adopt(span_t *s);                     /* an owner gives a span up (thread exit) */
bool mcentral_free(span_t *s, void *p);             /* free into an unowned span; false if it
                                                       got an owner meanwhile (retry remotely) */
bool mcentral_free_chain(span_t *s, void *head, void *tail, size_t n);

/* ---- alloc/mcache.c: per-thread caches ----------------------------------------------------- */

void mcache_init_key(void);
mcache_t *mcache_create(void);

/* This thread's cache, made on its first use (which also registers the thread); NULL when it cannot
 * be made. */
static inline mcache_t *mcache_get(void)
{
	mcache_t *c = tls_mcache;
	return c != &empty_mcache ? c : mcache_create();
}
void *mcache_refill(mcache_t *c, unsigned spc);    /* next object of class spc; NULL: no memory */
void mcache_after_local_free(mcache_t *c, span_t *s);
void mcache_remote_free(span_t *s, void *p, size_t idx, const char *fn);
int64_t mcache_take_freed(mcache_t *c); /* explicit frees not yet taken off the pacer's count */
/* A thread that frees remotely hands its count over at this many bytes (it may never refill). */
#define FREED_FLUSH ((int64_t)256 << 10)
void mcache_free_chain_remote(span_t *s, void *head, void *tail, size_t n);
void mcache_flush(mcache_t *c);                    /* owner: drop current spans (new cycle) */
void mcache_destroy(mcache_t *c);
void *mcache_tiny_alloc_slow(mcache_t *c, size_t size);

/* ---- alloc/malloc.c: the public entry points, and bad-input reports ----------------------- */

void alloc_init(void);
_Noreturn void report_bad_pointer(const char *fn, const void *p);

/* ---- alloc/stats.c ------------------------------------------------------------------------ */

void stats_fold_mcache(mcache_t *c);  /* mheap lock held: an exiting thread's counts */

#endif
