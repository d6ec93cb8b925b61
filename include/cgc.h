/* cgc.h - the public interface of cgc, a concurrent tri-color garbage collector for C.
 *
 * Allocate with cgc_malloc and never free; or free explicitly when you know an object is dead.
 * Every function here has a man page: man 3 cgc_malloc, and so on; man 7 cgc for the overview. */
#ifndef CGC_H
#define CGC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CGC_API __attribute__((visibility("default")))
#define CGC_MALLOC_ATTR __attribute__((malloc, warn_unused_result))
#define CGC_ALLOC_SIZE(...) __attribute__((alloc_size(__VA_ARGS__)))
#else
#define CGC_API
#define CGC_MALLOC_ATTR
#define CGC_ALLOC_SIZE(...)
#endif

/* Number of small size classes reported in struct cgc_stats (class 0 is unused: large objects). */
#define CGC_NUM_CLASSES 80

/* Per size class counts: one entry for each small size class. */
struct cgc_class_stats {
	size_t size;         /* object size of the class, bytes */
	uint64_t nmalloc;    /* objects ever allocated in the class */
	uint64_t nfree;      /* objects ever freed explicitly (or, later, by the collector) */
	size_t spans;        /* spans of the class currently held */
	size_t span_bytes;   /* bytes of those spans */
};

struct cgc_stats {
	size_t heap_inuse;     /* bytes in live objects (rounded to their size class) */
	size_t heap_spans;     /* bytes in spans that hold objects (in use, including their free slots) */
	size_t heap_free;      /* bytes of free pages held by the page heap, not returned to the OS */
	size_t heap_released;  /* bytes of free pages returned to the OS (madvise) */
	size_t heap_mapped;    /* bytes of address space the heap has mapped (arenas) */
	size_t meta_mapped;    /* bytes mapped for cgc's own metadata (spans, maps, caches) */
	uint64_t objects;      /* live objects: allocated and not yet freed */
	uint64_t nmalloc;      /* objects ever allocated */
	uint64_t nfree;        /* objects ever freed */
	uint64_t large_nmalloc; /* large objects (over 32 KiB) ever allocated */
	uint64_t large_nfree;   /* large objects ever freed */
	size_t large_inuse;     /* bytes in live large objects */
	uint64_t tiny_allocs;   /* requests served by the tiny allocator */
	/* The collector (see man 7 cgc). */
	uint64_t collections;   /* cycles completed */
	uint64_t forced_collections; /* of them, run for cgc_collect (several calls can share one) */
	uint64_t pause_total_ns; /* time the world was stopped, summed over every cycle */
	uint64_t pause_max_ns;  /* longest single stop */
	uint64_t pause_last_ns; /* the last cycle's stops (a concurrent cycle stops twice), summed */
	size_t goal;            /* heap size the next cycle aims to finish by, bytes (a stop-the-world
	                           cycle starts there; a concurrent one at 70% of the way to it) */
	size_t live_after_mark; /* bytes the last cycle found reachable (marked) */
	uint64_t mark_cpu_ns;   /* CPU time spent marking, every worker, every cycle */
	uint64_t swept_objects; /* objects the collector has reclaimed */
	struct cgc_class_stats classes[CGC_NUM_CLASSES]; /* per small size class; [0] unused */
};

/* Allocation. cgc_malloc memory is zeroed and may hold pointers the collector follows;
 * cgc_malloc_atomic memory is not zeroed and is never scanned. */
CGC_API void *cgc_malloc(size_t n) CGC_MALLOC_ATTR CGC_ALLOC_SIZE(1);
CGC_API void *cgc_malloc_atomic(size_t n) CGC_MALLOC_ATTR CGC_ALLOC_SIZE(1);
CGC_API void *cgc_calloc(size_t n, size_t size) CGC_MALLOC_ATTR CGC_ALLOC_SIZE(1, 2);
CGC_API void *cgc_realloc(void *p, size_t n) CGC_ALLOC_SIZE(2);
CGC_API void cgc_free(void *p);

/* Queries. */
CGC_API size_t cgc_usable_size(const void *p);
CGC_API void *cgc_base(const void *p);
CGC_API void cgc_get_stats(struct cgc_stats *s);

/* The collector. cgc_collect runs a full collection and returns when it and its sweep are done.
 * cgc_set_percent sets CGC_PERCENT (a negative value turns collection off) and cgc_set_memlimit
 * CGC_MEMLIMIT (SIZE_MAX: no limit); each returns the previous value. */
CGC_API void cgc_collect(void);
CGC_API int cgc_set_percent(int percent);
CGC_API size_t cgc_set_memlimit(size_t bytes);

/* Roots beyond the ones cgc finds itself (data and bss of every loaded object, thread stacks,
 * registers and thread-local storage): [addr, addr+len) is scanned for pointers until removed. */
CGC_API void cgc_add_root(void *addr, size_t len);
CGC_API void cgc_remove_root(void *addr);

/* Threads. pthread_create registers threads by itself; these are for threads made otherwise.
 * cgc_register_thread returns 0, or -1 when cgc could not (errno set). */
CGC_API int cgc_register_thread(void);
CGC_API void cgc_unregister_thread(void);
/* Around a call that may block for long, with no heap pointer touched in between: the collector
 * then scans the thread from where it stood and does not signal it. */
CGC_API void cgc_enter_blocking(void);
CGC_API void cgc_exit_blocking(void);

#ifdef __cplusplus
}
#endif
#endif /* CGC_H */
