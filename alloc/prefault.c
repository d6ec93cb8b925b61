/* alloc/prefault.c - fresh heap memory faulted in ahead of the bump pointer, on a thread of cgc's
 * own. doc/design/allocator.md, "Prefaulting".
 *
 * A program that grows its heap pays the kernel for every page it touches first: the fault, and
 * zeroing the page (or, in an MADV_HUGEPAGE arena, a 2 MiB page, with the kernel's direct
 * compaction when none is free). GCBench spent a third of its program thread in clear_page, and
 * a huge page's fault cost 2-5 ms of one allocation's latency. The memory past the bump pointer is
 * going to be touched in order, so a helper touches the next few MiB while the program allocates
 * below: on a machine with an idle CPU the work leaves the program's thread, and a fault the
 * helper has not reached yet simply happens as before. */
#include "alloc/alloc.h"
#include "gc/gc.h"

/* The smallest page the kernel may map: one touch each faults in all of a range. */
#define OS_PAGE 4096

/* How far ahead of the bump pointer: an eighth of the heap in use, within 2 and 16 MiB, so a
 * small program's resident memory does not grow by what a big one would soon use; and the least
 * worth waking the helper for. */
#define PREFAULT_AHEAD_MIN ((uintptr_t)2 << 20)
#define PREFAULT_AHEAD_MAX ((uintptr_t)16 << 20)
#define PREFAULT_STEP ((uintptr_t)2 << 20)

NONROOT static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uintptr_t lo, hi;     /* what is asked for and not yet taken by the helper */
	uintptr_t asked;      /* the end of what was asked for last (0: nothing yet) */
	int state;            /* atomic: 0 no helper, 2 starting, 1 running */
} P = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* Faults in [lo, hi) by touching each page with an atomic add of zero: a write fault, so the page
 * is allocated and zeroed, and no change to a word the program may be writing at the same moment
 * (the range is past the bump pointer when asked for, but the program may get there first).
 * Touching rather than MADV_POPULATE_WRITE, which holds the address space's lock for reading
 * throughout: the program's mmap (a new arena, a metadata chunk) waited behind it, for a whole
 * huge page's zeroing, 8 to 20 ms on the project's machine (perf sched on GCBench). A fault takes
 * only the lock of its own mapping (Linux 6.4's per-VMA locks; older kernels fall back to the
 * address space's, per page, as the program's own faults would). */
__attribute__((no_sanitize_thread)) static void touch_pages(uintptr_t lo, uintptr_t hi)
{
	for (uintptr_t a = (lo + OS_PAGE - 1) & ~(uintptr_t)(OS_PAGE - 1); a < hi; a += OS_PAGE)
		__atomic_fetch_add((uint64_t *)a, 0, __ATOMIC_RELAXED);
}

static void *prefault_main(void *arg)
{
	/* Default priority, not idle: at SCHED_IDLE, zeroing a huge page took 20 ms in slices
	 * between other threads' (perf sched), and the program's own faults on it waited as long. */
	lock_acquire(&P.lock);
	for (;;) {
		while (P.lo >= P.hi)
			pthread_cond_wait(&P.cond, &P.lock);
		uintptr_t lo = P.lo, hi = P.hi;
		P.lo = P.hi;
		pthread_mutex_unlock(&P.lock);
		/* Pages the program reached first are left as they are; a run the scavenger released
		 * meanwhile comes back as zero pages, which is what the allocator expects of it. */
		touch_pages(lo, hi);
		lock_acquire(&P.lock);
	}
	return arg;
}

/* Starts the helper, once (no lock held: pthread_create may allocate, and under the malloc
 * replacement that takes mheap.lock, which prefault_note holds before P.lock). */
void prefault_start(void)
{
	int expect = 0;
#ifdef CGC_TSAN
	/* Its adds of zero to words the program may be storing to plainly are a data race by the
	 * letter, which TSan reports even from an uninstrumented function; the helper only saves
	 * time, so a TSan build goes without it. */
	return;
#endif
	if (rt_valgrind || !cas_strong_acq_rel(&P.state, &expect, 2))
		return; /* memcheck tracks the memory itself; or started or starting */
	store_release(&P.state, threads_create_internal(prefault_main, NULL) == 0 ? 1 : 0);
}

/* The bump pointer moved to bump, in a reservation ending at end, with inuse bytes of the heap in
 * use (mheap.lock held). */
void prefault_note(uintptr_t bump, uintptr_t end, size_t inuse)
{
	if (load_relaxed(&P.state) != 1)
		return;
	uintptr_t ahead = inuse / 8;
	ahead = ahead < PREFAULT_AHEAD_MIN ? PREFAULT_AHEAD_MIN : ahead > PREFAULT_AHEAD_MAX ? PREFAULT_AHEAD_MAX : ahead;
	uintptr_t want = bump + ahead < end ? bump + ahead : end;
	/* Never wait for the helper while we hold mheap.lock (it may be preempted holding its own
	 * lock, and every allocating thread would queue behind us): the next note asks again. */
	if (pthread_mutex_trylock(&P.lock) != 0)
		return;
	/* A new reservation, or the first request: start at the bump pointer. */
	if (P.asked < bump || P.asked > end)
		P.asked = bump;
	if (want >= P.asked + PREFAULT_STEP) {
		P.lo = P.lo < P.hi && P.hi == P.asked ? P.lo : P.asked;
		P.hi = want;
		P.asked = want;
		pthread_cond_signal(&P.cond);
	}
	pthread_mutex_unlock(&P.lock);
}

void prefault_fork_prepare(void)
{
	lock_acquire(&P.lock);
}

void prefault_fork_parent(void)
{
	pthread_mutex_unlock(&P.lock);
}

/* The helper did not survive the fork; the child's next cycle starts another. */
void prefault_fork_child(void)
{
	pthread_cond_init(&P.cond, NULL);
	P.state = 0;
	P.lo = P.hi = P.asked = 0;
	pthread_mutex_unlock(&P.lock);
}
