/* gc/sweep.c - lazy sweeping: a span's unmarked objects go back to its free lists, claimed span by
 * span through sweep generations, by its owner, by mcentral, or by the background sweeper.
 * doc/design/collector.md 6. */
#include <sched.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "alloc/alloc.h"
#include "alloc/vg.h"
#include "gc/gc.h"

/* ---- claiming ---------------------------------------------------------------------------- */

/* sg - 2 -> sg - 1: only one thread sweeps a span, and only in-use spans can be claimed, because
 * only they ever hold sg - 2 (free and pooled structs hold SWEEPGEN_DEAD). */
static bool claim(span_t *s, uint32_t sg)
{
	uint32_t want = sg - 2;
	return load_relaxed(&s->sweepgen) == want && cas_strong_acq_rel(&s->sweepgen, &want, sg - 1);
}

/* ---- one span ---------------------------------------------------------------------------- */

/* The dead objects of a claimed small or tiny span: state allocated (ALLOC, or a tiny block's
 * nonzero masks), mark byte clear. Their states go to FREE eight slots at a time, with one CAS on
 * the word of eight state bytes: a remote free of one of those slots (a program bug: the object was
 * unreachable) may race, and whichever CAS comes second sees the other's change; the free then
 * reports a double free, or the sweep leaves the slot alone. One CAS per dead object was 60% of
 * the sweep (GCBench). The dead slots are chained through their first words. Mark bytes are
 * cleared for the next cycle. Returns the number of dead slots. */
static size_t collect_dead(span_t *s, void **headp, void **tailp)
{
	size_t n = load_relaxed(&s->nfresh), ndead = 0;
	uint8_t *marks = s->marks;
	uint8_t *state = s->state;
	void *head = NULL, *tail = NULL;
	/* A mark byte is 0 or 1, so the dead slots of a word of eight are its clear low bits, and
	 * times 0xff each becomes a whole-byte mask. Both arrays are word-aligned (alloc/mheap.c). */
	for (size_t w = 0; w * 8 < n; w++) {
		uint64_t dead = ~load_relaxed((uint64_t *)(void *)(marks + w * 8)) & 0x0101010101010101ull;
		if (n - w * 8 < 8)
			dead &= ((uint64_t)1 << (8 * (n - w * 8))) - 1;
		if (dead == 0)
			continue;
		uint64_t deadbytes = dead * 0xff;
		uint64_t *sw = (uint64_t *)(void *)(state + w * 8);
		uint64_t old = load_relaxed(sw);
		while ((old & deadbytes) != 0 && !cas_strong_acq_rel(sw, &old, old & ~deadbytes))
			;
		/* The dead slots this sweep set free, each byte still holding its old state. */
		uint64_t freed = old & deadbytes;
		while (freed) {
			unsigned b = (unsigned)__builtin_ctzll(freed) / 8;
			uint8_t st = (uint8_t)(freed >> (8 * b));
			freed &= ~((uint64_t)0xff << (8 * b));
			void *p = (void *)(s->base + (w * 8 + b) * s->elemsize);
			if (s->kind == SPAN_TINY) {
				/* Memcheck knows each tiny object as a block of its own. */
				for (unsigned g = 0; g < TINY_SIZE / TINY_GRANULE; g++)
					if ((st >> g) & 1)
						vg_freelike((char *)p + g * TINY_GRANULE);
			} else {
				vg_freelike(p);
				slot_fill_freed(s, p);
			}
			obj_set_next(p, NULL);
			if (tail)
				obj_set_next(tail, p);
			else
				head = p;
			tail = p;
			ndead++;
		}
	}
	memset(marks, 0, span_state_stride(s));
	*headp = head;
	*tailp = tail;
	return ndead;
}

static void sweep_large(span_t *s, uint32_t sg)
{
	uint8_t st = OBJ_ALLOC;
	bool dead = !(load_relaxed(&s->large_mark) & 1) && load_relaxed(&s->large_state) == OBJ_ALLOC &&
		    cas_strong_acq_rel(&s->large_state, &st, OBJ_FREE);
	store_relaxed(&s->large_mark, 0);
	store_release(&s->sweepgen, sg);
	if (dead) {
		vg_freelike((void *)s->base);
		/* Not given back to the pacer: the cycle that found it dead reset alloc_since and did
		 * not mark it, so heap_live no longer counts it (doc/design/collector.md 7). */
		fetch_add_relaxed(&gc.swept_objects, 1);
		mheap_free_span(s);
	}
}

bool sweep_span(span_t *s, enum sweep_mode mode)
{
	uint32_t sg = load_acquire(&mheap.sweepgen);
	/* Counted before the claim: sweep_finish waits for this to reach zero. */
	fetch_add_relaxed(&gc.sweep_active, 1);
	if (!claim(s, sg)) {
		fetch_sub_relaxed(&gc.sweep_active, 1);
		return false;
	}
	unsigned kind = load_relaxed(&s->kind);
	if (kind == SPAN_LARGE) {
		sweep_large(s, sg);
	} else if (kind == SPAN_SMALL || kind == SPAN_TINY) {
		void *head, *tail;
		size_t n = collect_dead(s, &head, &tail);
		/* Swept: the dead are FREE and the marks clear. Handing the slots over is a free like
		 * any other; they count in nalloc until then, so nobody releases the span meanwhile. */
		store_release(&s->sweepgen, sg);
		if (n) {
			fetch_add_relaxed(&gc.swept_objects, n);
			switch (mode) {
			case SWEEP_OWNER:
				obj_set_next(tail, s->local_free);
				s->local_free = head;
				counter_add_owner(&s->nalloc, -(int)n);
				break;
			case SWEEP_LOCKED:
				obj_set_next(tail, s->freelist);
				s->freelist = head;
				counter_add_owner(&s->nalloc, -(int)n);
				break;
			case SWEEP_REMOTE:
				mcache_free_chain_remote(s, head, tail, n);
				break;
			}
		}
	} else {
		CHECK(0); /* in-use spans only ever hold sg - 2 */
		store_release(&s->sweepgen, sg);
	}
	__atomic_fetch_sub(&gc.sweep_active, 1, __ATOMIC_RELEASE);
	return true;
}

void sweep_ensure(span_t *s, enum sweep_mode mode)
{
	CHECK(load_relaxed(&s->sweepgen) == SWEEPGEN_DEAD ||
	      load_relaxed(&mheap.sweepgen) - load_relaxed(&s->sweepgen) <= 2);
	while (span_unswept(s)) {
		if (sweep_span(s, mode))
			return;
		sched_yield(); /* someone else is sweeping it: a few microseconds */
	}
}

bool sweep_unless_busy(span_t *s, enum sweep_mode mode)
{
	return !span_unswept(s) || sweep_span(s, mode) || !span_unswept(s);
}

/* ---- every span -------------------------------------------------------------------------- */

/* The sweep walks the heap's address range once per cycle, in chunks that threads claim with one
 * atomic add: the background sweeper, allocating threads paying their sweep debt (below) and the
 * next cycle's finish all share one cursor, so no span is visited twice. A span belongs to the
 * chunk holding its first page. The walk reads the span map without locks, which is safe because
 * span structs are type-stable (alloc/mheap.c) and a claim succeeds only on an in-use, unswept
 * span. doc/design/collector.md 6.5. */
#define SWEEP_CHUNK ((uintptr_t)16 << PAGE_SHIFT)

NONROOT static struct {
	uintptr_t cursor;       /* atomic: start of the next unclaimed chunk */
	uintptr_t start;        /* where the walk began (sweep_finish walks it all again) */
	uintptr_t end;          /* atomic: heap_hi when the cycle ended */
	double pages_per_byte;  /* sweep pacing: pages to sweep per byte handed out */
} W;

/* The first address at or after a (up to end) in a mapped arena. Address space between arenas is
 * skipped in one step: where the hints are taken (a sanitizer's shadow, another runtime) the
 * heap's range can span terabytes, and walking it a chunk at a time took minutes a cycle (found
 * under ASan by stress_gc). An arena unmapped now was unmapped when the cycle ended. */
static uintptr_t skip_unmapped(uintptr_t a, uintptr_t end)
{
	while (a < end && load_acquire(&arena_index[a >> ARENA_SHIFT]) == NULL)
		a = (a | (ARENA_SIZE - 1)) + 1;
	return a;
}

/* Sweeps the spans that start in [a, end). Whoever holds a span, it is swept remotely: the claim
 * comes first, and while it is held the span can be neither freed nor reused; its dead are then
 * handed over as a remote free, which for an unowned span goes to its mcentral under the lock and
 * refiles it there (alloc/mcentral.c). Taking the mcentral lock first, as this once did, meant
 * reading a span that might be being recycled under the heap lock (its class, its list): a race
 * TSan found. */
static void sweep_chunk_at(uintptr_t a, uintptr_t end)
{
	uint32_t sg = load_acquire(&mheap.sweepgen);
	for (; (a = skip_unmapped(a, end)) < end; a += PAGE_SIZE) {
		heap_arena_t *ha = load_acquire(&arena_index[a >> ARENA_SHIFT]);
		span_t *s = load_acquire(&ha->spans[(a >> PAGE_SHIFT) & (PAGES_PER_ARENA - 1)]);
		if (s == NULL || load_relaxed(&s->base) != a)
			continue;
		size_t np = load_relaxed(&s->npages);
		if (load_relaxed(&s->sweepgen) == sg - 2)
			sweep_span(s, SWEEP_REMOTE);
		if (np > 1 && np < PAGES_PER_ARENA)
			a += (np - 1) << PAGE_SHIFT;
	}
}

/* Claims and sweeps the next chunk; false when the walk is over. Only a span's own claim counts in
 * sweep_active, not a chunk's: sweep_finish walks everything again itself rather than wait for
 * chunks others hold, since the background sweeper runs at nice 19 and, preempted in the middle
 * of a chunk, would hold a collection up for milliseconds (measured: 8% of GCBench's time spent
 * in sched_yield). */
static bool sweep_one_chunk(void)
{
	uintptr_t end = load_acquire(&W.end);
	for (;;) {
		uintptr_t cur = load_relaxed(&W.cursor);
		if (cur >= end)
			return false;
		uintptr_t next = skip_unmapped(cur, end);
		if (next != cur) {
			__atomic_compare_exchange_n(&W.cursor, &cur, next, false, __ATOMIC_RELAXED,
						    __ATOMIC_RELAXED);
			continue;
		}
		uintptr_t a = __atomic_fetch_add(&W.cursor, SWEEP_CHUNK, __ATOMIC_RELAXED);
		if (a >= end)
			return false;
		sweep_chunk_at(a, a + SWEEP_CHUNK < end ? a + SWEEP_CHUNK : end);
		return true;
	}
}

/* Mark termination, world stopped: a new walk over everything in use now. Sweep pacing (Go's
 * proportional sweep): every page must be swept before the heap reaches the next goal, so each
 * byte handed out meanwhile owes pages / (goal - live) pages of sweeping. */
void sweep_cycle_start(size_t live, size_t goal)
{
	uintptr_t lo = load_relaxed(&heap_lo) & ~(ARENA_SIZE - 1), hi = load_relaxed(&heap_hi);
	size_t room = goal > live ? goal - live : 0;
	if (room < ((size_t)1 << 20))
		room = (size_t)1 << 20;
	/* Pages mapped, not the range they lie in, which may have gaps (sweep_one_chunk). */
	W.pages_per_byte = (double)(mheap.arena_bytes >> PAGE_SHIFT) / (double)room;
	W.start = lo;
	store_relaxed(&W.cursor, lo);
	store_release(&W.end, hi);
}

/* An allocating thread took bytes of span memory: it sweeps its share first. */
void sweep_pay(size_t bytes)
{
	if (load_relaxed(&W.cursor) >= load_relaxed(&W.end))
		return;
	double pages = (double)bytes * W.pages_per_byte;
	size_t chunks = (size_t)(pages / (double)(SWEEP_CHUNK >> PAGE_SHIFT)) + 1;
	while (chunks-- && sweep_one_chunk())
		;
}

/* Every span of the walk swept before this returns (called by the collecting thread before it
 * marks, and by cgc_collect). The chunks nobody took yet, then the whole range once more: a chunk
 * another thread claimed may still hold unswept spans, which its claimant would reach later; we
 * sweep them first (the per-span claim keeps each sweep single). Then only the spans other threads
 * are sweeping at this moment are waited for: one span each, microseconds. */
void sweep_finish(void)
{
	while (sweep_one_chunk())
		;
	uintptr_t end = load_acquire(&W.end);
	if (W.start < end)
		sweep_chunk_at(W.start, end);
	while (load_acquire(&gc.sweep_active) != 0)
		sched_yield();
}

/* ---- the background sweeper -------------------------------------------------------------- */

NONROOT static pthread_mutex_t bg_lock = PTHREAD_MUTEX_INITIALIZER;
NONROOT static pthread_cond_t bg_cond = PTHREAD_COND_INITIALIZER;
NONROOT static uint32_t bg_wanted;   /* sweepgen the sweeper was last asked to finish (bg_lock) */
NONROOT static int bg_started;

static bool bg_should_stop(void)
{
	/* A new cycle is waiting for the sweep: it finishes it itself, faster than we would. */
	return load_relaxed(&gc.phase) != GC_OFF && load_relaxed(&gc.phase) != GC_SWEEP;
}

static void *bg_sweeper(void *arg)
{
	/* Lowest priority: sweeping runs on idle time, and allocating threads sweep what they
	 * need themselves (doc/design/collector.md 6.5). */
	setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
	uint32_t done = 0;
	for (;;) {
		lock_acquire(&bg_lock);
		while (bg_wanted == done)
			pthread_cond_wait(&bg_cond, &bg_lock);
		done = bg_wanted;
		pthread_mutex_unlock(&bg_lock);
		while (!bg_should_stop() && sweep_one_chunk())
			;
	}
	return arg;
}

void sweep_start_background(void)
{
	lock_acquire(&bg_lock);
	if (!bg_started) {
		bg_started = 1;
		if (threads_create_internal(bg_sweeper, NULL) != 0)
			bg_started = 0; /* allocating threads and the next cycle sweep instead */
	}
	bg_wanted = load_relaxed(&mheap.sweepgen);
	pthread_cond_signal(&bg_cond);
	pthread_mutex_unlock(&bg_lock);
}

void sweep_fork_prepare(void)
{
	lock_acquire(&bg_lock);
}

void sweep_fork_parent(void)
{
	pthread_mutex_unlock(&bg_lock);
}

void sweep_fork_child(void)
{
	/* The sweeper thread did not survive the fork; the next cycle starts another. bg_cond
	 * may still count it as a waiter, and glibc's next signal would wait for it forever. */
	pthread_cond_init(&bg_cond, NULL);
	bg_started = 0;
	/* fork_prepare finished the sweep; what is left counts failed claims of the parent's other
	 * threads, caught between their increment and decrement. */
	store_relaxed(&gc.sweep_active, 0);
	pthread_mutex_unlock(&bg_lock);
}

void sweep_init(void)
{
}
