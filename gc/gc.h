/* gc/gc.h - the collector's internal interface: its state, and cross-file prototypes grouped by
 * the file that defines them. Read doc/design/collector.md first; it is this header in prose. */
#ifndef CGC_GC_GC_H
#define CGC_GC_GC_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc/alloc.h"

/* ---- tuning ------------------------------------------------------------------------------ */

#define GC_MIN_HEAP ((size_t)4 << 20)     /* the goal never drops below this */
#define GC_DEFAULT_PERCENT 100
#define GC_CONCURRENT_MIN_LIVE ((size_t)1 << 20)        /* below: stop the world (collector.md 8.1) */
#define GC_CONCURRENT_MIN_LIVE_DIRTY ((size_t)32 << 20) /* the same without the barrier */
#define GC_MAX_PROCS 256
#define WBUF_ITEMS 510                     /* grey items per work buffer (8 KiB buffers) */
#define SCAN_CHUNK ((size_t)64 << 10)      /* large objects and roots are scanned in pieces */
#define ASSIST_SLICE ((size_t)128 << 10)   /* an assist's work between chances to be stopped */
#define ASSIST_MAX ((size_t)64 << 10)      /* an assist's work below the goal (the rest stays owed) */

/* A marking worker's grey work (gc/mark.c). */
typedef struct wbuf wbuf_t;
typedef struct gcwork {
	wbuf_t *buf;                  /* current buffer */
	size_t marked_bytes;          /* bytes this worker marked */
	size_t scanned_bytes;
	bool check;                   /* checkmark's verification scan (collector.md 8.6) */
	uintptr_t check_root, check_parent, check_at; /* for its report */
} gcwork_t;

/* ---- the collector's state (gc/collector.c) ----------------------------------------------- */

/* The phases, as one switch in collector.c reads them (doc/design/collector.md 2). */
enum gc_phase { GC_OFF = 0, GC_MARK, GC_MARK_TERMINATION, GC_SWEEP };

typedef struct gc_options {
	int percent;                 /* CGC_PERCENT; < 0: off */
	size_t memlimit;             /* CGC_MEMLIMIT, bytes; SIZE_MAX: none */
	int procs;                   /* CGC_PROCS: mark workers, the collecting thread included */
	int signo;                   /* CGC_SIGNAL */
	char signame[16];            /* its name, for messages */
	int gctrace;                 /* CGC_DEBUG=gctrace=1 */
	int stw;                     /* CGC_DEBUG=stw: 1 every cycle stops the world to mark, 0 none
	                                does (where it can), -1 (default) by heap size */
	int checkmark;               /* CGC_DEBUG=checkmark=1: verify each concurrent mark */
	int hugepages;               /* CGC_DEBUG=hugepages=1: advise arenas MADV_HUGEPAGE */
} gc_options_t;

extern gc_options_t gc_opt;

typedef struct gc_state {
	int phase;                   /* atomic: enum gc_phase */
	uint64_t cycle;              /* cycles completed */
	uint64_t cycles_forced;      /* of them, for cgc_collect */
	uint64_t cycles_concurrent;  /* of them, marked beside the program (tests read it) */
	uint64_t start_ns;           /* when cgc started (for gctrace's @T) */
	/* Pacer (gc/pacer.c), bytes. heap_live = heap_marked + alloc_since. */
	size_t heap_marked;          /* marked by the last cycle */
	int64_t alloc_since;         /* atomic: handed to mcaches or as large objects since then */
	size_t goal;                 /* atomic: heap_live at which the next cycle starts */
	size_t root_bytes;           /* globals + stacks scanned by the last cycle */
	/* Statistics for cgc_get_stats and gctrace. */
	uint64_t pause_total_ns, pause_max_ns, pause_last_ns;
	uint64_t mark_cpu_ns;        /* every worker, every cycle */
	uint64_t gc_cpu_ns;          /* everything the collector spent, for gctrace's P% */
	uint64_t swept_objects;      /* atomic */
	uint64_t sweep_active;       /* atomic: threads holding a sweep claim right now */
	/* Concurrent marking (collector.md 8). */
	int barrier;                 /* the program promised CGC_WRITE (cgc_set_barrier) */
	size_t trigger;              /* atomic: heap_live at which a concurrent cycle starts */
	double mark_work;            /* scan work the current mark expects (pacer_mark_start) */
	double mark_alloc_rate;      /* bytes handed out per byte of scan work, in the last
	                                concurrent mark (0: none yet) */
} gc_state_t;

extern gc_state_t gc;

/* ---- gc/options.c ------------------------------------------------------------------------- */

void options_init(void);                    /* reads the environment once; warns on bad values */

/* ---- gc/collector.c ----------------------------------------------------------------------- */

void gc_init(void);
void gc_collect_internal(bool forced);
/* The allocator calls this after handing out span memory: starts a cycle when the heap reached
 * its goal. No locks may be held. */
void gc_maybe_trigger(void);
struct cgc_stats;
void gc_fill_stats(struct cgc_stats *st);   /* the collector's fields of cgc_get_stats */
int gc_set_barrier(bool on);                /* cgc_set_barrier; returns the old setting */

/* ---- gc/pacer.c --------------------------------------------------------------------------- */

void pacer_account(int64_t bytes);          /* bytes handed out (negative: given back) */
void pacer_cycle_done(size_t marked, size_t root_bytes, int64_t mark_alloc, bool concurrent);
void pacer_set_trigger(bool concurrent);
void pacer_mark_start(void);
double pacer_assist_ratio(void);         /* bytes to scan per byte allocated, now */
size_t pacer_goal(size_t marked, size_t root_bytes); /* pure: the goal for these inputs */

static inline bool pacer_over_goal(void)
{
	int64_t since = load_relaxed(&gc.alloc_since);
	return since > 0 && gc.heap_marked + (size_t)since >= load_relaxed(&gc.goal);
}

/* Time to start a cycle: the goal for a stop-the-world one, earlier for a concurrent one, so
 * that it finishes near the goal (gc/pacer.c). */
static inline bool pacer_over_trigger(void)
{
	int64_t since = load_relaxed(&gc.alloc_since);
	return since > 0 && gc.heap_marked + (size_t)since >= load_relaxed(&gc.trigger);
}

/* Half the runway again past the goal: where a concurrent cycle that has not finished makes
 * allocating threads wait for it, and what assists aim at once past the goal (collector.md 8.5). */
static inline size_t pacer_hard_goal(void)
{
	size_t goal = load_relaxed(&gc.goal);
	return goal + (goal > gc.heap_marked ? (goal - gc.heap_marked) / 2 : 0);
}

static inline bool pacer_over_hard_goal(void)
{
	int64_t since = load_relaxed(&gc.alloc_since);
	return since > 0 && gc.heap_marked + (size_t)since >= pacer_hard_goal();
}

/* Bytes this thread was handed while a mark ran, since its last assist (gc/pacer.c). */
extern __thread int64_t tls_unassisted __attribute__((tls_model("initial-exec")));

/* ---- gc/threads.c: the thread registry and stopping the world ------------------------------ */

/* A registered thread's state. Every change is a compare-and-swap on this one word, so a stop and
 * the thread always agree on which of them answers for it (doc/design/collector.md 3.5):
 *   RUNNING -> BLOCKING         the thread, in cgc_enter_blocking, its registers and sp saved first
 *   BLOCKING -> RUNNING         the thread, in cgc_exit_blocking
 *   BLOCKING -> BLOCKING_HELD   a stop: scanned from the saved state, not signalled
 *   BLOCKING_HELD -> BLOCKING   the restart; only then may the thread leave the blocking call
 *   RUNNING -> STOPPING         a stop: signalled and counted, so it owes one acknowledgement
 *   STOPPING -> RUNNING         whoever gives that acknowledgement, once: the stop handler, the end
 *                               of a hold, cgc_enter_blocking (no thread blocks owing one), or the
 *                               stop itself for a thread that is gone
 * BLOCKING_HELD and STOPPING exist only while a stop is under way. */
enum { THREAD_RUNNING = 0, THREAD_BLOCKING = 1, THREAD_BLOCKING_HELD = 2, THREAD_STOPPING = 3 };

typedef struct gthread {
	pthread_t pt;
	uintptr_t stack_lo, stack_hi;  /* the thread's stack mapping, hi = its base */
	uintptr_t tp;                  /* thread pointer: finds its TLS (gc/roots.c) */
	uint32_t state;                /* atomic: THREAD_* */
	uint32_t acked;                /* the last stop epoch it acknowledged (for debuggers) */
	uintptr_t sp;                  /* where it stood when stopped or when it began blocking */
	uintptr_t altstack_lo, altstack_hi; /* its sigaltstack, if stopped while on it */
	struct gthread *next;
	void *regs;                    /* registers saved by cgc_enter_blocking (scanned) */
	size_t regs_size;
	int self_made;                 /* registered by cgc_register_thread */
	struct wbbuf *wb;              /* its write barrier buffer (barrier/barrier.h) */
	uint32_t holds;                /* threads_hold_stop depth (own thread and its handler only) */
	uint32_t stop_pending;         /* a stop arrived during a hold (same) */
} gthread_t;

extern __thread gthread_t *tls_gthread __attribute__((tls_model("initial-exec")));

void threads_init(void);
gthread_t *threads_register_self(void); /* idempotent; NULL on failure */
void threads_unregister_self(void);
void threads_lock_registry(void);
void threads_unlock_registry(void);
/* Stops every other registered thread (registry locked); returns how many were signalled and
 * acknowledged (the others were blocking, and are held). */
int world_stop(void);
void world_start(void);
void threads_push_starting(gcwork_t *w, bool now); /* arguments of threads not yet registered */
gthread_t *threads_first(void);            /* the registry's list (world stopped) */
/* Holds off stops (nesting), for work a stop must not split: marking on a program's thread, which
 * would otherwise leave objects marked but not yet queued, or allocate-black marks that a stop
 * would let land after the cycle ended (collector.md 8.3). Cheap: no system call. */
void threads_hold_stop(void);
void threads_release_stop(void);
int threads_create_internal(void *(*fn)(void *), void *arg); /* detached, never stopped */
/* Calls fn for every registered thread with the world stopped: lo/hi is what to scan of its
 * stack, regs/regs_size any saved registers outside that range. */
void threads_each(void (*fn)(gthread_t *t, uintptr_t lo, uintptr_t hi, void *arg), void *arg);
void threads_fork_prepare(void);
void threads_fork_parent(void);
void threads_fork_child(void);

/* ---- gc/roots.c --------------------------------------------------------------------------- */

void roots_init(void);
void roots_lock(void);                 /* held from the snapshot to the restart: no dlopen/close */
void roots_unlock(void);
bool roots_trylock(void);
bool roots_held(void);                 /* this thread is inside dlopen/dlclose */
void roots_snapshot(void);             /* reads the loaded objects' segments (world running) */
/* Pushes every root as grey work (world stopped); the calling thread's stack is scanned from
 * self_sp. Returns root bytes (globals and registered ranges; stacks and TLS). */
void roots_push_all(gcwork_t *w, uintptr_t self_sp, size_t *globals, size_t *stacks, bool now);
void roots_describe(uintptr_t a, char *buf, size_t n); /* what the root range at a is */
void roots_fork_prepare(void);
void roots_fork_release(void);

/* ---- gc/mark.c ---------------------------------------------------------------------------- */

void mark_init(void);
/* Queues [p, p+len) to be scanned; root ranges mark what their words hit even in free slots
 * (doc/design/collector.md 5.3). */
void mark_push_range(gcwork_t *w, uintptr_t p, size_t len, bool root);
void mark_flush(gcwork_t *w);
/* Scans [p, p+len) at once, on this thread: for the collecting thread's own stack, which it keeps
 * writing while helpers mark (a helper may not read it then). */
void mark_scan_now(gcwork_t *w, uintptr_t p, size_t len, bool root);
/* Marks the slot containing a, without scanning it (mcache free-list heads at termination). */
void mark_slot_black(uintptr_t a);
/* Drains the grey work with the configured workers (world stopped); returns marked bytes. */
size_t mark_drain_parallel(gcwork_t *w0, uint64_t *cpu_ns, int *workers);
/* Concurrent marking (collector.md 8). */
size_t mark_drain_some(gcwork_t *w, size_t budget); /* world running; leaves nothing private */
void mark_shade(const uintptr_t *v, size_t n);     /* marks what v[] point to, publishes them grey */
void mark_concurrent_reset(size_t root_marked);
void mark_concurrent_start(void);
bool mark_concurrent_wait(uint64_t timeout_ns);
size_t mark_concurrent_stop(uint64_t *cpu_ns);
size_t mark_concurrent_marked(void);    /* marked so far by the concurrent mark */
void mark_checkmark(void);                          /* CGC_DEBUG=checkmark=1, world stopped */
void mark_free_slots(span_t *s);                    /* allocate black: every free slot marked */
void mark_assist(void);                             /* an allocating thread's share of the mark */

/* ---- gc/dirty.c: what a program without the barrier wrote while marking ran --------------- */

bool dirty_init(void);                 /* false (and a reason in dirty_why) when unavailable */
extern const char *dirty_why;
bool dirty_arm(void);                  /* world running, before a concurrent mark; false: cannot */
void dirty_disarm(void);               /* after the mark: every page writable again */
void dirty_span_add(span_t *s);        /* s is allocated from while marking: unprotected, listed */
/* Mark termination (world stopped): queues the marked objects on pages written since the arm and
 * in listed spans. Returns bytes queued. */
size_t dirty_push_rescan(gcwork_t *w);
void dirty_push_rescan_drop(void);     /* the arm failed: forget the listed spans */
bool dirty_init_child(void);           /* fork child: registrations start afresh */

/* A refill while marking runs (alloc/mcache.c): allocate black, or list the span. */
void gc_refill_marking(span_t *s);
void mark_fork_prepare(void);
void mark_fork_parent(void);
void mark_fork_child(void);

/* ---- gc/sweep.c --------------------------------------------------------------------------- */

void sweep_init(void);
/* How the caller holds the span (doc/design/collector.md 6). */
enum sweep_mode { SWEEP_OWNER, SWEEP_LOCKED, SWEEP_REMOTE };
/* Sweeps s if it is unswept and nobody else is sweeping it; true if this call swept it. */
bool sweep_span(span_t *s, enum sweep_mode mode);
/* Returns once s is swept: sweeps it (mode) or waits for whoever is. */
void sweep_ensure(span_t *s, enum sweep_mode mode);
/* Sweeps s (mode) if it is unswept; false only when another thread is sweeping it this moment,
 * for callers that would rather use another span than wait. */
bool sweep_unless_busy(span_t *s, enum sweep_mode mode);
void sweep_finish(void);               /* sweeps every unswept span, waits for every sweeper */
void sweep_cycle_start(size_t live, size_t goal); /* termination: a new walk, and its pacing */
void sweep_pay(size_t bytes);          /* an allocating thread's share of the sweep */
void sweep_start_background(void);     /* after mark termination: wake the background sweeper */
void sweep_fork_prepare(void);
void sweep_fork_parent(void);
void sweep_fork_child(void);

/* Unswept or being swept (sg - 2, sg - 1). Free and pooled structs (SWEEPGEN_DEAD) are not.
 * The span's generation is read first: whoever wrote it (a claim, a sweep, a new span) had read
 * mheap.sweepgen at least that new, so the acquire makes the heap's read after it as new. The
 * other way round, a cycle ending between the two loads (a stop there) paired the old heap
 * generation with the new cycle's claim, and a span being swept read as swept. Without a lock
 * that keeps cycles out (mheap or mcentral) the answer may be stale by the time it is used. */
static inline bool span_unswept(const span_t *s)
{
	uint32_t sg = load_acquire(&s->sweepgen);
	return load_relaxed(&mheap.sweepgen) - sg - 1 < 2;
}

/* Sets the mark byte of slot idx of s (termination's allocations in flight, gc/mark.c). */
static inline void span_set_mark(span_t *s, size_t idx)
{
	store_relaxed(&s->marks[idx], 1);
}

#endif /* CGC_GC_GC_H */
