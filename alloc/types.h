/* alloc/types.h - every allocator structure and tuning constant in one place.
 * Read doc/design/allocator.md first; this header is its map in code.
 *
 * Map of the heap
 * ---------------
 *   arena_index[addr >> ARENA_SHIFT] --> heap_arena_t { spans[page in arena] --> span_t }
 *
 *   heap address space: arenas of 64 MiB reserved with mmap at hint addresses (0xc000000000...),
 *   carved into spans of 8 KiB pages by the page heap (mheap). A span holds either objects of one
 *   span class (small: size class x {scan, noscan}, plus the tiny class) or one large object.
 *
 *   thread --TLS--> mcache_t (owns spans: one current span per span class, plus partial/full lists)
 *                      | refill                             ^ abandon at thread exit
 *                      v                                    |
 *                   mcentral_t[span class] (unowned spans, under a lock)
 *                      | new span                           ^ empty span
 *                      v                                    |
 *                   mheap_t (free page runs by length, coalesced on free, scavenged when idle)
 */
#ifndef CGC_ALLOC_TYPES_H
#define CGC_ALLOC_TYPES_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc/sizeclasses.h"

/* cgc's own globals that hold heap addresses which are not references (the page heap's released
 * ring and bump pointer, the heap bounds) live in this section, which root scanning skips
 * (doc/design/collector.md 4.1). */
#define NONROOT __attribute__((section("cgc_nonroot")))

/* ---- tuning constants ------------------------------------------------------------------- */

#define ARENA_SHIFT 26                                   /* 64 MiB arenas, as Go on 64-bit Linux */
#define ARENA_SIZE ((uintptr_t)1 << ARENA_SHIFT)
#define PAGES_PER_ARENA (ARENA_SIZE >> PAGE_SHIFT)       /* 8192 */
#define ADDR_BITS 48                                     /* user addresses on x86-64 and aarch64 */
#define ARENA_INDEX_SIZE ((uintptr_t)1 << (ADDR_BITS - ARENA_SHIFT)) /* 4M entries, 32 MiB virtual */

/* Span classes: spc = size class << 1 | noscan; one extra class for tiny blocks (16-byte noscan
 * blocks that pack several tiny objects). Size class 0 stands for large objects. */
#define NUM_SPAN_CLASSES (NUM_SIZE_CLASSES * 2 + 1)
#define TINY_SPC (NUM_SIZE_CLASSES * 2)
#define TINY_SIZE 16                                     /* bytes in a tiny block */
#define TINY_GRANULE 4                                   /* tiny objects are rounded up to this */
#define SPC(sizeclass, noscan) ((unsigned)((sizeclass) << 1 | (noscan)))
#define SPC_NOSCAN(spc) ((spc) == TINY_SPC || ((spc)&1))

/* Fresh objects are threaded onto a span's free list in batches of about this many bytes, so a new
 * span is not written (and paged in) all at once. */
#define FRESH_BATCH_BYTES 4096

/* Free page runs up to this many pages are kept in exact-length lists; longer ones in one list. */
#define HEAP_FREE_LISTS 128

/* Free pages idle this long are returned to the OS; the check runs at most every interval. */
#define SCAVENGE_DELAY_NS (1000ull * 1000 * 1000)
#define SCAVENGE_INTERVAL_NS (100ull * 1000 * 1000)

/* Spans remembered after release, for diagnosing double frees into them. */
#define RELEASED_RING 64

/* Heap placement hints: addresses whose high bytes (0x00c0...) rarely occur in integers or text,
 * so conservative scanning retains less by accident. Tried in order, stepping by 1 << 40. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CGC_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) || defined(CGC_TSAN)
/* ThreadSanitizer kills the process on a mapping outside its application ranges (on x86-64 the
 * low one ends at 0x008000000000), so a TSan build asks for 64 GiB steps inside that range. */
#define HEAP_HINT_BASE ((uintptr_t)0x0040 << 32)
#define HEAP_HINT_STEP ((uintptr_t)1 << 36)
#define HEAP_HINT_COUNT 3
#else
#define HEAP_HINT_BASE ((uintptr_t)0x00c0 << 32)
#define HEAP_HINT_STEP ((uintptr_t)1 << 40)
#define HEAP_HINT_COUNT 0x7f
#endif

/* ---- per-object state -------------------------------------------------------------------- */

/* One byte per object slot (span_t.state). The collector reads it to answer "is this slot an
 * allocated object?"; cgc_free uses it to catch double frees. A byte, not a bit, so the owner
 * thread and remote freers can update neighbouring slots without read-modify-write races.
 * Tiny spans use the byte per 16-byte block as two 4-bit masks over its four 4-byte granules:
 * low nibble = granules that start an object, high nibble = granules in use. */
enum { OBJ_FREE = 0, OBJ_ALLOC = 1 };

/* ---- spans ------------------------------------------------------------------------------- */

enum span_kind { SPAN_FREE = 0, SPAN_SMALL = 1, SPAN_LARGE = 2, SPAN_TINY = 3 };

/* Which list a span is on; tells a free which list to move it off. */
enum span_where {
	WHERE_NONE = 0,
	WHERE_MC_CUR,          /* an mcache's current span for its class */
	WHERE_MC_PARTIAL,      /* owned by an mcache, has free slots */
	WHERE_MC_FULL,         /* owned by an mcache, no free slot the owner knows of */
	WHERE_CENTRAL_PARTIAL, /* unowned, in mcentral, has free slots */
	WHERE_CENTRAL_FULL,    /* unowned, in mcentral, full */
	WHERE_HEAP_FREE,       /* free pages in mheap */
};

/* thread_free's low bit: the span has no owner, so remote frees must go through mcentral. */
#define TF_UNOWNED ((uintptr_t)1)

typedef struct span span_t;
typedef struct mcache mcache_t;

typedef struct span_list {
	span_t *head;
	size_t len;
} span_list_t;

/* A run of pages. Invariants (checked by span_validate):
 *   small/tiny: nalloc + |freelist| + |local_free| + (nelems - nfresh) == nelems, where objects
 *               pending on thread_free count in nalloc; every entry of either list is a FREE
 *               slot below nfresh;
 *   every page of an in-use span maps to it in the span map; a free span maps at its first and
 *   last page only (enough to coalesce), and no two free spans are adjacent. */
struct span {
	/* --- first cache line: everything the allocation and free fast paths touch --- */
	void *freelist;          /* free slots ready to hand out; owner only (mcentral lock if unowned) */
	void *local_free;        /* slots the owner freed since freelist was last refilled; owner only */
	uint8_t *state;          /* nelems bytes of per-object state (OBJ_FREE/OBJ_ALLOC, tiny masks) */
	uintptr_t base;          /* first byte of the span (= first object) */
	size_t elemsize;         /* object size; for a large span, its whole length */
	uint32_t divmul;         /* (off * divmul) >> 32 == off / elemsize for offsets inside the span;
	                            0 for large spans, so every offset maps to object 0 */
	uint16_t nelems;         /* object slots */
	uint16_t nalloc;         /* slots handed out and not yet freed (or freed by another thread and
	                            not yet collected); owner-written, read by cgc_get_stats */
	uint8_t spc;             /* span class */
	uint8_t kind;            /* enum span_kind */
	uint8_t where;           /* enum span_where */
	uint8_t needzero;        /* memory may hold old bytes (fresh and released pages are zero) */
	uint32_t nmalloc;        /* allocations the fast path made from it, not yet added to a cache's
	                            nmalloc: on this line, not the cache's, to keep the fast path on
	                            one line; folded at every refill, so it cannot wrap (stats.c) */
	mcache_t *owner;         /* atomic: owning mcache, NULL when in mcentral or mheap */
	/* --- second line: remote frees, list and page heap bookkeeping --- */
	uint16_t nfresh;         /* slots [0, nfresh) have been carved; [nfresh, nelems) never used */
	uint8_t scavenged;       /* free span whose pages were returned to the OS */
	uint8_t large_state;     /* state byte of a large span's single object */
	uintptr_t thread_free;   /* atomic: LIFO of slots freed by other threads | TF_UNOWNED */
	span_t *next, *prev;
	size_t npages;
	uint64_t free_since;     /* ns timestamp at which the pages became free (scavenger) */
	uint32_t sweepgen;       /* atomic: sweep generation, mheap.sweepgen - 2 when unswept, - 1
	                            while being swept; SWEEPGEN_DEAD for free spans
	                            (doc/design/collector.md 6) */
	uint32_t magic;          /* SPAN_MAGIC while the struct describes a span (debug validators) */
	uint8_t *marks;          /* mark bytes, 0 or 1, one per slot (after state, same allocation);
	                            cleared by the sweep. Bytes, not bits: marking sets them with a
	                            plain store (doc/design/collector.md 5.1) */
	uint8_t large_mark;      /* a large span's single mark byte (marks points here) */
	uint32_t dirty_gen;      /* atomic: the cycle that put it on the dirty list (gc/dirty.c) */
	span_t *dirty_next;      /* that list */
	uint8_t central_set;     /* which of mcentral's two sets the span is on */
} __attribute__((aligned(64)));

_Static_assert(offsetof(struct span, owner) + sizeof(mcache_t *) <= 64,
	       "the fields of the allocation and free fast paths share the first cache line");

#define SPAN_MAGIC 0x5350414eu /* "SPAN" */
/* sweepgen of a struct that describes no object span (free pages, or pooled): odd, so it never
 * reads as unswept, which is always mheap.sweepgen - 2 and even. */
#define SWEEPGEN_DEAD 1u

/* Per 64 MiB arena: the span of every page. 64 KiB, allocated when the arena is mapped. */
typedef struct heap_arena {
	span_t *spans[PAGES_PER_ARENA]; /* atomic entries: read without locks by lookups */
} heap_arena_t;

/* ---- mcache: per-thread, lock-free fast paths --------------------------------------------- */

/* Owned spans: alloc[spc] is where the fast path allocates; it equals cur[spc] except under
 * valgrind, where alloc[] points at the empty span so every allocation takes the slow path that
 * speaks to memcheck. A thread that has not allocated yet uses the static empty mcache. */
struct mcache {
	span_t *alloc[NUM_SPAN_CLASSES];     /* fast path: current span per class (never NULL) */
	uint64_t nmalloc[NUM_SPAN_CLASSES];  /* stats, owner-written, read racily (relaxed); frees are
	                                        not counted: see alloc/stats.c */
	uintptr_t tiny;                      /* current tiny block, 0 when none */
	uintptr_t tiny_off;                  /* bytes of it in use */
	uint8_t *tiny_state;                 /* its state byte */
	uint64_t tiny_allocs;
	span_t *cur[NUM_SPAN_CLASSES];       /* current span per class (empty span when none) */
	span_list_t partial[NUM_SPAN_CLASSES];
	span_list_t full[NUM_SPAN_CLASSES];
	uint64_t remote_pending[NUM_SPAN_CLASSES]; /* atomic: remote frees that found a span's
	                                        thread_free empty; tells the owner to look at its full
	                                        spans of that class */
	int64_t freed;                       /* bytes of small objects this thread freed explicitly,
	                                        not yet told to the pacer (owner only) */
	uint64_t freed_cycle;                /* gc.cycle when that count was last handed over */
	uintptr_t inflight;                  /* a large object made and not yet returned (0: none):
	                                        mark termination marks it (collector.md 5.3) */
	uint32_t sweepgen;                   /* mheap.sweepgen when this cache last dropped its
	                                        current spans: a stale value sends the slow path to
	                                        mcache_flush (doc/design/collector.md 5) */
	mcache_t *all_next;                  /* registry of every mcache (mheap lock) */
	int live;                            /* held by a thread (else pooled for reuse) */
	uint32_t magic;
};

#define MCACHE_MAGIC 0x4d434143u /* "MCAC" */

/* ---- mcentral: unowned spans of one class -------------------------------------------------- */

/* Spans nobody owns: given up by exiting threads, and (with the collector) handed back at the end
 * of a cycle. Indexed by sweep generation parity, as the collector's lazy sweep will need: the set
 * [sweepgen/2 % 2] is swept, the other unswept. Without a collector every span is swept. */
typedef struct mcentral {
	pthread_mutex_t lock;
	span_list_t partial[2];
	span_list_t full[2];
} mcentral_t;

/* ---- mheap: the page heap ----------------------------------------------------------------- */

typedef struct mheap {
	pthread_mutex_t lock;
	span_list_t free[HEAP_FREE_LISTS];   /* free runs by exact length; [0] holds longer runs */
	uint64_t free_mask[HEAP_FREE_LISTS / 64]; /* bit n: free[n] non-empty */
	uintptr_t bump, bump_end;            /* unused tail of the newest arena reservation */
	uintptr_t next_hint;                 /* where the next arena is asked for */
	unsigned hint_index;
	size_t pages_inuse;                  /* in spans that hold objects */
	size_t pages_free;                   /* in free spans, not released */
	size_t pages_released;               /* in free spans, released to the OS */
	size_t arena_bytes;                  /* address space mapped for the heap */
	int hugepages;                       /* arenas are advised MADV_HUGEPAGE (alloc/arena.c) */
	size_t nspans[NUM_SPAN_CLASSES];     /* spans in use per class (large: classes 0 and 1) */
	uint64_t large_nmalloc, large_nfree; /* large object counts */
	size_t large_inuse;                  /* bytes in live large objects */
	uint64_t last_scavenge;              /* ns */
	uint32_t sweepgen;                   /* the collector's cycle counter x2 (see mcentral_t) */
	/* A concurrent mark runs (set at its first stop, or just before it when writes are tracked;
	 * cleared at termination): spans are not freed but kept on `deferred` until then, because
	 * marking reads span structs and their mark arrays without locks, and refills report to the
	 * collector (doc/design/collector.md 8.4). */
	uint32_t marking;                    /* atomic */
	uint32_t alloc_black;                /* and new objects are born marked (barrier mode) */
	uint32_t track_spans;                /* and spans allocated from go to gc/dirty.c */
	span_t *deferred;                    /* spans to free at mark termination (via next) */
	mcache_t *mcaches;                   /* registry of all mcaches, live and pooled */
	span_t *span_pool;                   /* span structs not in use: never given back to meta,
	                                        so a stale span pointer still points at a span
	                                        struct (the sweeper's walk relies on it) */
	uint64_t dead_nmalloc[NUM_SPAN_CLASSES]; /* stats folded in from exited threads */
	uint64_t remote_uncollected[NUM_SPAN_CLASSES]; /* atomic: objects on some span's thread_free,
	                                        freed but still counted in its nalloc */
	uint64_t dead_tiny_allocs;
	/* Spans recently given back to the page heap, so a double free into one is reported as a double
	 * free rather than as a foreign pointer. A ring, written under the lock, read racily. */
	struct released_span {
		uintptr_t base;
		size_t bytes;      /* span length */
		size_t elemsize;   /* object size (a large span: its length) */
	} released[RELEASED_RING];
	unsigned released_next;
	mcentral_t central[NUM_SPAN_CLASSES];
} mheap_t;

#endif /* CGC_ALLOC_TYPES_H */
