/* gc/collector.c - the collector's cycle as one state machine (off, mark, mark termination,
 * sweep), cgc_collect, the knobs, and the gctrace line. doc/design/collector.md 2. */
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/alloc.h"
#include "alloc/os.h"
#include "barrier/barrier.h"
#include "gc/gc.h"
#include "include/cgc.h"

NONROOT gc_state_t gc;

/* One cycle at a time. Taken first of all the collector's locks (doc/design/collector.md 3.4). */
NONROOT static pthread_mutex_t gc_lock = PTHREAD_MUTEX_INITIALIZER;

/* What one cycle measured, for gctrace and the statistics. */
typedef struct cycle {
	bool forced;
	bool concurrent;
	size_t rescan;                          /* dirty mode: bytes re-scanned at termination */
	uint64_t t_start, t_done;               /* ns: the (first) stop began, the world restarted at the end */
	uint64_t t_restart1, t_stop2;           /* concurrent: end of the first stop, second stop */
	uint64_t mark_cpu_ns;
	size_t heap_start, heap_marked_end, marked, goal;
	size_t globals, stacks;
	int workers;
} cycle_t;

/* ---- the allocator's locks, taken around a stop ------------------------------------------ */

/* Every allocator lock, in the allocator's one order (alloc/malloc.c, fork), so no stopped thread
 * holds one that marking or mark termination could need. */
static void alloc_locks_take(void)
{
	for (unsigned i = 0; i < NUM_SPAN_CLASSES; i++)
		lock_acquire(&mheap.central[i].lock);
	lock_acquire(&mheap.lock);
	meta_fork_prepare();
}

static void alloc_locks_release(void)
{
	meta_fork_release();
	pthread_mutex_unlock(&mheap.lock);
	for (unsigned i = NUM_SPAN_CLASSES; i-- > 0;)
		pthread_mutex_unlock(&mheap.central[i].lock);
}

/* ---- the phases -------------------------------------------------------------------------- */

/* Scans our own stack from below the registers just saved. noinline: its frame, holding ctx,
 * lies below every frame of the caller's. */
static NOINLINE void mark_roots(gcwork_t *w, cycle_t *cy, bool now)
{
	unw_context_t ctx;
	unw_getcontext(&ctx);
	roots_push_all(w, (uintptr_t)&ctx, &cy->globals, &cy->stacks, now);
	__asm__ volatile("" ::"r"(&ctx) : "memory");
}

/* Mark termination, with the world stopped. The mcaches' current spans are about to be unswept:
 * their fast paths are pointed at the empty span, and what a stopped thread may be about to hand
 * out is marked (collector.md 5.3): the head of each current span's free list (cur, not alloc,
 * which under valgrind is always the empty span) and a large object made but not yet returned.
 * Then the sweep generation moves: every span in use becomes unswept at once. */
static void mark_termination(void)
{
	for (mcache_t *c = mheap.mcaches; c; c = c->all_next) {
		uintptr_t inflight = load_relaxed(&c->inflight);
		if (inflight)
			mark_slot_black(inflight);
		for (unsigned spc = 0; spc < NUM_SPAN_CLASSES; spc++) {
			span_t *s = load_relaxed(&c->cur[spc]);
			if (s != &empty_span) {
				void *head = load_relaxed(&s->freelist);
				if (head)
					mark_slot_black((uintptr_t)head);
			}
			store_relaxed(&c->alloc[spc], &empty_span);
		}
		store_relaxed(&c->tiny, 0);
	}
	store_release(&mheap.sweepgen, mheap.sweepgen + 2);
}

/* The start of a concurrent mark, with the world stopped: from here on every object is born
 * black (collector.md 8.2). The slots the caches can hand out before their next refill are marked
 * now; later refills mark their own (alloc/mcache.c). A tiny block in use was allocated white: it
 * is dropped, so new tiny objects go to black blocks. A large object in flight is marked. */
static void mark_start_black(void)
{
	store_relaxed(&mheap.alloc_black, 1);
	for (mcache_t *c = mheap.mcaches; c; c = c->all_next) {
		uintptr_t inflight = load_relaxed(&c->inflight);
		if (inflight)
			mark_slot_black(inflight);
		for (unsigned spc = 0; spc < NUM_SPAN_CLASSES; spc++) {
			span_t *s = load_relaxed(&c->cur[spc]);
			if (s != &empty_span)
				mark_free_slots(s);
		}
		store_relaxed(&c->tiny, 0);
	}
}

static void trace_cycle(const cycle_t *cy)
{
	double mb = 1.0 / (1 << 20);
	double a = (double)(cy->t_restart1 - cy->t_start) / 1e6;
	double b = (double)(cy->t_stop2 - cy->t_restart1) / 1e6;
	double c = (double)(cy->t_done - cy->t_stop2) / 1e6;
	double since = (double)(cy->t_done - gc.start_ns) / 1e9;
	double avail = since * 1e9 * gc_opt.procs;
	int pct = avail > 0 ? (int)(100.0 * (double)gc.gc_cpu_ns / avail + 0.5) : 0;
	/* Collection turned off (CGC_PERCENT=off) leaves no goal: "off", not a number of exabytes. */
	char goal[32];
	if (cy->goal >= SIZE_MAX / 2)
		snprintf(goal, sizeof goal, "off");
	else
		snprintf(goal, sizeof goal, "%.1f MB", (double)cy->goal * mb);
	char mode[64];
	if (!cy->concurrent)
		snprintf(mode, sizeof mode, " (stw)");
	else if (gc.barrier)
		snprintf(mode, sizeof mode, " (barrier)");
	else
		snprintf(mode, sizeof mode, " (dirty, %.1f MB rescanned)", (double)cy->rescan * mb);
	char line[512];
	snprintf(line, sizeof line,
		 "gc %llu @%.3fs %d%%: %.3f+%.3f+%.3f ms clock, %.3f+%.3f+%.3f ms cpu, "
		 "%.1f->%.1f->%.1f MB, %s goal, %.1f MB stacks, %.1f MB globals, %d P%s%s\n",
		 (unsigned long long)gc.cycle, since, pct, a, b, c, a, (double)cy->mark_cpu_ns / 1e6, c,
		 (double)cy->heap_start * mb, (double)cy->heap_marked_end * mb, (double)cy->marked * mb,
		 goal, (double)cy->stacks * mb, (double)cy->globals * mb, cy->workers,
		 mode,
		 cy->forced ? " (forced)" : "");
	os_write_stderr(line, strlen(line));
}

/* Whether this cycle may mark beside the program: only when it will learn of every pointer the
 * program stores meanwhile, through the barrier it promised to use or through the pages the
 * kernel saw written (collector.md 8.1). */
NONROOT static bool dirty_ok;
NONROOT static bool live_known; /* a mark has measured the live heap */

static bool cycle_concurrent(void)
{
	if (gc_opt.stw == 1 || !(load_relaxed(&gc.barrier) || dirty_ok))
		return false;
	/* With the barrier, a heap with under a megabyte live stops the world for well under a
	 * millisecond, less than a concurrent cycle's two stops and thread hand-offs cost; anything
	 * bigger marks concurrently (at 32 MiB, GCBench's first cycles paused 5 to 34 ms). The first
	 * cycle knows no live size and takes the whole first goal for it. Write tracking costs more
	 * per cycle (protecting the heap, the faults, reading the written pages back): below 32 MiB
	 * it would cost a small heap's allocation loop 4-5x its time (bench/run-gc.sh's alloc, 41 ->
	 * 196 ns an allocation at 1 MiB). CGC_DEBUG=stw=0 makes every cycle concurrent. */
	size_t live = live_known ? gc.heap_marked : GC_MIN_HEAP;
	size_t min = load_relaxed(&gc.barrier) ? GC_CONCURRENT_MIN_LIVE : GC_CONCURRENT_MIN_LIVE_DIRTY;
	return gc_opt.stw == 0 || live >= min;
}

static void stop_world(uint64_t *t)
{
	threads_lock_registry();
	alloc_locks_take();
	*t = os_nanotime();
	world_stop();
}

static void start_world(void)
{
	/* Locks first, then the world: threads woken first would take the CPU from us while we still
	 * held locks they wait for (measured: milliseconds on 2 cores). */
	alloc_locks_release();
	world_start();
	threads_unlock_registry();
}

/* One full cycle (gc_lock and the roots lock held). Reads as the phases it goes through; a
 * concurrent cycle stops the world twice, a stop-the-world one once (collector.md 2). */
static void run_cycle(bool forced, bool inline_stw)
{
	cycle_t cy = {.forced = forced};
	gcwork_t w = {0};
	int64_t since = load_relaxed(&gc.alloc_since);
	int64_t alloc_at_start = 0;
	size_t conc_marked = 0;
	uint64_t conc_cpu = 0;
	cy.heap_start = gc.heap_marked + (size_t)(since > 0 ? since : 0);
	cy.goal = load_relaxed(&gc.goal);
	cy.concurrent = !inline_stw && cycle_concurrent();
	for (int phase = GC_OFF;;) {
		switch (phase) {
		case GC_OFF:
			/* The last cycle's sweep must be complete before marking may set bits, and every
			 * sweeper out of its span (collector.md 6.6). World running. */
			sweep_finish();
			roots_snapshot();
			/* Without the barrier, writes are tracked from before the first object is
			 * scanned; if the kernel refuses, this cycle stops the world. */
			if (cy.concurrent && !gc.barrier) {
				/* Spans made current from here on are listed, and none is freed: the
				 * arm below may protect a span a refill has just unprotected, which
				 * only costs faults (collector.md 9.2). */
				store_relaxed(&mheap.marking, 1);
				store_relaxed(&mheap.track_spans, 1);
				if (!dirty_arm()) {
					dirty_disarm();
					store_relaxed(&mheap.track_spans, 0);
					store_relaxed(&mheap.marking, 0);
					dirty_push_rescan_drop();
					cy.concurrent = false;
				}
			}
			stop_world(&cy.t_start);
			phase = GC_MARK;
			break;
		case GC_MARK:
			if (!cy.concurrent) {
				mark_roots(&w, &cy, false);
				cy.marked = mark_drain_parallel(&w, &cy.mark_cpu_ns, &cy.workers);
				cy.t_restart1 = cy.t_stop2 = os_nanotime();
				phase = GC_MARK_TERMINATION;
				break;
			}
			/* The first stop: allocate black and the barrier on, then the roots that can
			 * change or vanish once the world runs (stacks, TLS, registers) are scanned now;
			 * the data segments are queued for the workers. */
			store_relaxed(&mheap.marking, 1);
			if (gc.barrier) {
				mark_start_black();
				barrier_enable(true);
			}
			/* Without the barrier: allocate white; new objects are found at termination if
			 * reachable (collector.md 9.2), their spans listed since the arm. */
			store_release(&gc.phase, GC_MARK);
			mark_roots(&w, &cy, true);
			mark_flush(&w);
			mark_concurrent_reset(w.marked_bytes);
			w.marked_bytes = 0;
			pacer_mark_start();
			alloc_at_start = load_relaxed(&gc.alloc_since);
			cy.t_restart1 = os_nanotime();
			start_world();
			/* Beside the program: background workers, and assists by allocating threads. */
			mark_concurrent_start();
			while (!mark_concurrent_wait(100 * 1000 * 1000))
				;
			conc_marked = mark_concurrent_stop(&conc_cpu);
			/* The second stop: mark termination. */
			stop_world(&cy.t_stop2);
			phase = GC_MARK_TERMINATION;
			break;
		case GC_MARK_TERMINATION:
			if (cy.concurrent) {
				/* Every root again: the globals, because a library may store without the
				 * barrier; the stacks, because a thread stopped by the first stop between
				 * CGC_WRITE's test and its store went on to store unshaded (barrier.md 3).
				 * Then what the barrier buffered, or without it what was written; then
				 * whatever is left, in parallel. */
				size_t g, st;
				roots_push_all(&w, (uintptr_t)__builtin_frame_address(0), &g, &st, false);
				if (gc.barrier)
					barrier_flush_all();
				else
					cy.rescan = dirty_push_rescan(&w);
				uint64_t cpu = 0;
				cy.marked = conc_marked + mark_drain_parallel(&w, &cpu, &cy.workers);
				cy.mark_cpu_ns = conc_cpu + cpu;
				if (gc_opt.checkmark)
					mark_checkmark();
				barrier_enable(false);
			}
			store_release(&gc.phase, GC_MARK_TERMINATION);
			store_relaxed(&mheap.marking, 0);
			store_relaxed(&mheap.alloc_black, 0);
			store_relaxed(&mheap.track_spans, 0);
			span_t *deferred = mheap_take_deferred_locked();
			cy.heap_marked_end = gc.heap_marked + (size_t)(load_relaxed(&gc.alloc_since) > 0
									? load_relaxed(&gc.alloc_since) : 0);
			mark_termination();
			live_known = true;
			int64_t during = cy.concurrent ? load_relaxed(&gc.alloc_since) - alloc_at_start : 0;
			pacer_cycle_done(cy.marked, cy.globals + cy.stacks, during, cycle_concurrent());
			sweep_cycle_start(cy.marked, load_relaxed(&gc.goal));
			/* The pause ends when the world is woken; after the wake-up on a busy machine this
			 * thread may wait for a CPU, which is not the program's pause. */
			cy.t_done = os_nanotime();
			start_world();
			if (cy.concurrent && !gc.barrier)
				dirty_disarm();
			mheap_free_deferred(deferred);
			phase = GC_SWEEP;
			break;
		case GC_SWEEP:
			store_release(&gc.phase, GC_SWEEP);
			sweep_start_background();
			prefault_start(); /* a heap that reached a first cycle is worth it */
			goto done;
		}
	}
done:;
	uint64_t p1 = cy.concurrent ? cy.t_restart1 - cy.t_start : 0;
	uint64_t p2 = cy.t_done - cy.t_stop2;
	if (!cy.concurrent)
		p2 = cy.t_done - cy.t_start;
	uint64_t pmax = p1 > p2 ? p1 : p2;
	store_relaxed(&gc.cycle, gc.cycle + 1);
	gc.cycles_forced += forced;
	store_relaxed(&gc.cycles_concurrent, gc.cycles_concurrent + cy.concurrent); /* tests read it */
	gc.pause_total_ns += p1 + p2;
	gc.pause_last_ns = p1 + p2;
	if (pmax > gc.pause_max_ns)
		gc.pause_max_ns = pmax;
	gc.mark_cpu_ns += cy.mark_cpu_ns;
	/* CPU for gctrace's P%: every worker's marking, plus the stops. */
	gc.gc_cpu_ns += cy.mark_cpu_ns + p1 + p2;
	if (gc_opt.gctrace)
		trace_cycle(&cy);
}

/* ---- the collector thread ---------------------------------------------------------------- */

/* Cycles run on cgc's own thread (never registered, never stopped), so the thread that crossed
 * the trigger goes on allocating while a concurrent mark runs. cgc_collect asks for a cycle and
 * waits for it. */
NONROOT static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;        /* the collector: a cycle is wanted */
	pthread_cond_t done;        /* cgc_collect callers: a cycle finished */
	uint64_t requested;         /* forced cycles asked for */
	uint64_t served;            /* forced requests a finished cycle covered */
	int want;                   /* the trigger was crossed */
	int started;                /* the thread runs */
	int busy;                   /* it is between taking a request and finishing it */
	uint64_t rounds;            /* requests it finished (whether or not a cycle was due) */
} K = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
       .done = PTHREAD_COND_INITIALIZER};

/* gc_lock and the roots lock, in that order; the roots lock only by trylock (roots_trylock). */
static void cycle_locks_take(void)
{
	for (;;) {
		lock_acquire(&gc_lock);
		if (roots_trylock())
			return;
		pthread_mutex_unlock(&gc_lock);
		os_sleep_ns(1000 * 1000);
	}
}

static void cycle_locks_release(void)
{
	store_relaxed(&gc.phase, GC_OFF);
	roots_unlock();
	pthread_mutex_unlock(&gc_lock);
}

static void *collector_main(void *arg)
{
	(void)arg;
	for (;;) {
		lock_acquire(&K.lock);
		while (!load_relaxed(&K.want) && K.requested == K.served)
			pthread_cond_wait(&K.wake, &K.lock);
		uint64_t req = K.requested;
		bool forced = req != K.served;
		store_relaxed(&K.want, 0);
		K.busy = 1;
		pthread_mutex_unlock(&K.lock);
		cycle_locks_take();
		if (forced || pacer_over_trigger())
			run_cycle(forced, false);
		cycle_locks_release();
		lock_acquire(&K.lock);
		K.served = req;
		K.busy = 0;
		K.rounds++;
		pthread_cond_broadcast(&K.done);
		pthread_mutex_unlock(&K.lock);
	}
	return NULL;
}

/* K.lock held. */
static void collector_start_locked(void)
{
	if (K.started)
		return;
	if (threads_create_internal(collector_main, NULL) != 0)
		cgc_fatal("cgc: cannot start the collector thread");
	K.started = 1;
}

/* A registered thread waiting for the collector (K.lock held) waits as in cgc_enter_blocking,
 * scanned from where it stands and not signalled, in every build: the cycles it waits for then
 * need nothing from it, and a thread blocked in pthread_cond_wait may be slow to act on the stop
 * signal, or under ThreadSanitizer in a fork child never act on it. A stop that counted it while
 * it still ran is answered on the way in (doc/design/collector.md 3.5). Before that was so, a
 * thread could start waiting with the acknowledgement owed, and the stop waited for it while it
 * waited for the cycle (tests/stress_gc under TSan: the thread BLOCKING, signalled and not
 * acknowledged). Unregistered threads are never stopped: they just wait. */
static void wait_for_collector(void)
{
	if (tls_gthread == NULL) {
		pthread_cond_wait(&K.done, &K.lock);
		return;
	}
	cgc_enter_blocking();
	pthread_cond_wait(&K.done, &K.lock);
	cgc_exit_blocking();
}

void gc_collect_internal(bool forced)
{
	if (roots_held()) {
		/* Inside dlopen (a library constructor): the collector thread would wait for the
		 * loader, which waits for us. Collect here, stopping the world. */
		lock_acquire(&gc_lock);
		roots_lock();
		run_cycle(forced, true);
		cycle_locks_release();
		sweep_finish();
		return;
	}
	lock_acquire(&K.lock);
	collector_start_locked();
	uint64_t my = ++K.requested;
	pthread_cond_signal(&K.wake);
	while (K.served < my)
		wait_for_collector();
	pthread_mutex_unlock(&K.lock);
	if (forced)
		sweep_finish();
}

/* The pacer's lines (collector.md 7, 8.5). Past the trigger a cycle is asked for and the program
 * goes on (a concurrent cycle) or waits for it (a stop-the-world one would stop it anyway). Past
 * the goal while a mark runs, an allocating thread assists until no grey work is left; past the
 * hard goal it then waits for the cycle to end, so that the heap (and CGC_MEMLIMIT) is exceeded by
 * a bounded amount. */
void gc_maybe_trigger(void)
{
	bool marking = load_relaxed(&gc.phase) == GC_MARK;
	if (unlikely(marking)) {
		mark_assist();
		if (likely(!pacer_over_hard_goal()))
			return;
	} else if (likely(!pacer_over_trigger())) {
		return;
	}
	bool wait = marking ? pacer_over_hard_goal() : !cycle_concurrent() || pacer_over_hard_goal();
	if (!wait && load_relaxed(&K.want))
		return;
	/* Inside dlopen the collector cannot run (it waits for the loader): no waiting there. */
	wait = wait && !roots_held();
	lock_acquire(&K.lock);
	collector_start_locked();
	if (!marking) {
		store_relaxed(&K.want, 1);
		pthread_cond_signal(&K.wake);
	}
	/* A round already under way may have checked the trigger before we crossed it: then wait
	 * for the next one too. */
	if (wait) {
		uint64_t until = K.rounds + 1 + (uint64_t)(K.busy && !marking);
		while (K.rounds < until && (marking || pacer_over_trigger()))
			wait_for_collector();
	}
	pthread_mutex_unlock(&K.lock);
}

int gc_set_barrier(bool on)
{
	lock_acquire(&gc_lock);
	int old = gc.barrier;
	store_relaxed(&gc.barrier, (int)on);
	pacer_set_trigger(cycle_concurrent());
	pthread_mutex_unlock(&gc_lock);
	return old;
}

/* ---- public ------------------------------------------------------------------------------ */

CGC_API void cgc_collect(void)
{
	alloc_init();
	gc_collect_internal(true);
}

CGC_API int cgc_set_percent(int percent)
{
	alloc_init();
	lock_acquire(&gc_lock);
	int old = gc_opt.percent;
	gc_opt.percent = percent < 0 ? -1 : percent;
	store_relaxed(&gc.goal, pacer_goal(gc.heap_marked, gc.root_bytes));
	pacer_set_trigger(cycle_concurrent());
	pthread_mutex_unlock(&gc_lock);
	return old;
}

CGC_API size_t cgc_set_memlimit(size_t bytes)
{
	alloc_init();
	lock_acquire(&gc_lock);
	size_t old = gc_opt.memlimit;
	gc_opt.memlimit = bytes;
	store_relaxed(&gc.goal, pacer_goal(gc.heap_marked, gc.root_bytes));
	pacer_set_trigger(cycle_concurrent());
	pthread_mutex_unlock(&gc_lock);
	return old;
}

/* The collector's part of cgc_get_stats (alloc/stats.c). */
void gc_fill_stats(struct cgc_stats *st)
{
	lock_acquire(&gc_lock);
	st->collections = gc.cycle;
	st->forced_collections = gc.cycles_forced;
	st->pause_total_ns = gc.pause_total_ns;
	st->pause_max_ns = gc.pause_max_ns;
	st->pause_last_ns = gc.pause_last_ns;
	st->goal = load_relaxed(&gc.goal);
	st->live_after_mark = gc.heap_marked;
	st->mark_cpu_ns = gc.mark_cpu_ns;
	st->swept_objects = load_relaxed(&gc.swept_objects);
	pthread_mutex_unlock(&gc_lock);
}

/* ---- fork -------------------------------------------------------------------------------- */

/* Registered after the allocator's handlers, so this prepare runs before theirs: the collector's
 * locks come first in the one order (doc/design/collector.md 3.4). */
static void fork_prepare(void)
{
	lock_acquire(&gc_lock);
	/* No sweep may be in progress across the fork: the child would wait for the sweeping
	 * thread, which it lacks, in its first sweep_finish. Finished here, as a cycle finishes it
	 * (6.6); with gc_lock held no span becomes unswept again, so no later claim succeeds. */
	sweep_finish();
	roots_fork_prepare();
	threads_fork_prepare();
	mark_fork_prepare();
	sweep_fork_prepare();
	lock_acquire(&K.lock);
}

static void fork_parent(void)
{
	pthread_mutex_unlock(&K.lock);
	sweep_fork_parent();
	mark_fork_parent();
	threads_fork_parent();
	roots_fork_release();
	pthread_mutex_unlock(&gc_lock);
}

static void fork_child(void)
{
	/* The collector thread did not survive the fork: the first trigger starts a new one. */
	pthread_cond_init(&K.wake, NULL);
	pthread_cond_init(&K.done, NULL);
	K.started = 0;
	K.want = 0;
	K.served = K.requested;
	pthread_mutex_unlock(&K.lock);
	if (dirty_ok)
		dirty_ok = dirty_init_child();
	sweep_fork_child();
	mark_fork_child();
	threads_fork_child();
	roots_fork_release();
	pthread_mutex_unlock(&gc_lock);
}

/* Under valgrind, a last collection at exit hands the garbage back with FREELIKE, so a program
 * that never frees is not reported as leaking what cgc would have collected. */
static void exit_collect(void)
{
	cgc_collect();
}

void gc_init(void)
{
	gc.start_ns = os_nanotime();
	options_init();
	gc.goal = pacer_goal(0, 0);
	if (gc_opt.stw != 1)
		dirty_ok = dirty_init();
	pacer_set_trigger(cycle_concurrent());
	threads_init();
	roots_init();
	mark_init();
	sweep_init();
	if (pthread_atfork(fork_prepare, fork_parent, fork_child) != 0)
		cgc_fatal("cgc: cannot register the collector's fork handlers");
	if (rt_valgrind)
		atexit(exit_collect);
}
