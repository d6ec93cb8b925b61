/* gc/collector.c - the collector's cycle as one state machine (off, mark, mark termination,
 * sweep), cgc_collect, the knobs, and the gctrace line. doc/design/collector.md 2. */
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/alloc.h"
#include "alloc/os.h"
#include "gc/gc.h"
#include "include/cgc.h"

NONROOT gc_state_t gc;

/* One cycle at a time. Taken first of all the collector's locks (doc/design/collector.md 3.4). */
NONROOT static pthread_mutex_t gc_lock = PTHREAD_MUTEX_INITIALIZER;

/* What one cycle measured, for gctrace and the statistics. */
typedef struct cycle {
	bool forced;
	uint64_t t_start, t_stopped, t_marked, t_done;  /* ns */
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
static NOINLINE void mark_roots(gcwork_t *w, cycle_t *cy)
{
	unw_context_t ctx;
	unw_getcontext(&ctx);
	roots_push_all(w, (uintptr_t)&ctx, &cy->globals, &cy->stacks);
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

static void trace_cycle(const cycle_t *cy)
{
	double mb = 1.0 / (1 << 20);
	double a = (double)(cy->t_stopped - cy->t_start) / 1e6;
	double b = (double)(cy->t_marked - cy->t_stopped) / 1e6;
	double c = (double)(cy->t_done - cy->t_marked) / 1e6;
	double since = (double)(cy->t_done - gc.start_ns) / 1e9;
	double avail = since * 1e9 * gc_opt.procs;
	int pct = avail > 0 ? (int)(100.0 * (double)gc.gc_cpu_ns / avail + 0.5) : 0;
	/* Collection turned off (CGC_PERCENT=off) leaves no goal: "off", not a number of exabytes. */
	char goal[32];
	if (cy->goal >= SIZE_MAX / 2)
		snprintf(goal, sizeof goal, "off");
	else
		snprintf(goal, sizeof goal, "%.1f MB", (double)cy->goal * mb);
	char line[512];
	snprintf(line, sizeof line,
		 "gc %llu @%.3fs %d%%: %.3f+%.3f+%.3f ms clock, %.3f+%.3f+%.3f ms cpu, "
		 "%.1f->%.1f->%.1f MB, %s goal, %.1f MB stacks, %.1f MB globals, %d P%s (stw)\n",
		 (unsigned long long)gc.cycle, since, pct, a, b, c, a, (double)cy->mark_cpu_ns / 1e6, c,
		 (double)cy->heap_start * mb, (double)cy->heap_marked_end * mb, (double)cy->marked * mb,
		 goal, (double)cy->stacks * mb, (double)cy->globals * mb, cy->workers,
		 cy->forced ? " (forced)" : "");
	os_write_stderr(line, strlen(line));
}

/* One full cycle (gc_lock held). Reads as the phases it goes through. */
static void run_cycle(bool forced)
{
	cycle_t cy = {.forced = forced};
	gcwork_t w = {0};
	int64_t since = load_relaxed(&gc.alloc_since);
	cy.heap_start = gc.heap_marked + (size_t)(since > 0 ? since : 0);
	cy.goal = load_relaxed(&gc.goal);
	for (int phase = GC_OFF;;) {
		store_relaxed(&gc.phase, phase);
		switch (phase) {
		case GC_OFF:
			/* The last cycle's sweep must be complete before marking may set bits, and every
			 * sweeper out of its span (collector.md 6.6). World running. */
			sweep_finish();
			roots_lock();
			roots_snapshot();
			threads_lock_registry();
			alloc_locks_take();
			cy.t_start = os_nanotime();
			world_stop();
			cy.t_stopped = os_nanotime();
			phase = GC_MARK;
			break;
		case GC_MARK:
			mark_roots(&w, &cy);
			cy.marked = mark_drain_parallel(&w, &cy.mark_cpu_ns, &cy.workers);
			cy.t_marked = os_nanotime();
			cy.heap_marked_end = cy.heap_start;
			phase = GC_MARK_TERMINATION;
			break;
		case GC_MARK_TERMINATION:
			mark_termination();
			pacer_cycle_done(cy.marked, cy.globals + cy.stacks);
			sweep_cycle_start(cy.marked, load_relaxed(&gc.goal));
			/* Locks first, then the world: threads woken first would take the CPU from us
			 * while we still held locks they wait for (measured: milliseconds on 2 cores). */
			alloc_locks_release();
			roots_unlock();
			/* The pause ends when the world is woken; after the wake-up on a busy machine this
			 * thread may wait for a CPU, which is not the program's pause. */
			cy.t_done = os_nanotime();
			world_start();
			threads_unlock_registry();
			phase = GC_SWEEP;
			break;
		case GC_SWEEP:
			sweep_start_background();
			goto done;
		}
	}
done:;
	uint64_t pause = cy.t_done - cy.t_start;
	gc.cycle++;
	gc.pause_total_ns += pause;
	gc.pause_last_ns = pause;
	if (pause > gc.pause_max_ns)
		gc.pause_max_ns = pause;
	gc.mark_cpu_ns += cy.mark_cpu_ns;
	/* The collecting thread's own share counts once, in the mark CPU, plus the stop itself. */
	/* CPU for gctrace's P%: every worker's marking, plus stopping and restarting the world. */
	gc.gc_cpu_ns += cy.mark_cpu_ns + (cy.t_stopped - cy.t_start) + (cy.t_done - cy.t_marked);
	if (gc_opt.gctrace)
		trace_cycle(&cy);
}

void gc_collect_internal(bool forced)
{
	lock_acquire(&gc_lock);
	/* Another thread may have collected while we waited for the lock. */
	if (forced || pacer_over_goal())
		run_cycle(forced);
	if (forced)
		sweep_finish();
	store_relaxed(&gc.phase, GC_OFF);
	pthread_mutex_unlock(&gc_lock);
}

void gc_maybe_trigger(void)
{
	if (likely(!pacer_over_goal()))
		return;
	/* One thread collects; the others keep allocating (the collector will stop them). */
	if (pthread_mutex_trylock(&gc_lock) != 0)
		return;
	if (pacer_over_goal())
		run_cycle(false);
	store_relaxed(&gc.phase, GC_OFF);
	pthread_mutex_unlock(&gc_lock);
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
	pthread_mutex_unlock(&gc_lock);
	return old;
}

/* The collector's part of cgc_get_stats (alloc/stats.c). */
void gc_fill_stats(struct cgc_stats *st)
{
	lock_acquire(&gc_lock);
	st->collections = gc.cycle;
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
}

static void fork_parent(void)
{
	sweep_fork_parent();
	mark_fork_parent();
	threads_fork_parent();
	roots_fork_release();
	pthread_mutex_unlock(&gc_lock);
}

static void fork_child(void)
{
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
	threads_init();
	roots_init();
	mark_init();
	sweep_init();
	if (pthread_atfork(fork_prepare, fork_parent, fork_child) != 0)
		cgc_fatal("cgc: cannot register the collector's fork handlers");
	if (rt_valgrind)
		atexit(exit_collect);
}
