/* gc/mark.c - conservative marking: every word that resolves to an allocated object marks it and,
 * if it may hold pointers, queues it grey; grey work in buffers per worker plus a shared list,
 * drained by CGC_PROCS workers in parallel. doc/design/collector.md 5. */
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "alloc/alloc.h"
#include "alloc/os.h"
#include "alloc/vg.h"
#include "gc/gc.h"

/* A grey item: a range to scan; the low bit of len says it is a root range (collector.md 5.3). */
typedef struct item {
	uintptr_t p;
	uintptr_t len;
} item_t;

struct wbuf {
	wbuf_t *next;
	size_t n;
	item_t items[WBUF_ITEMS];
};

#define WBUF_CHUNK 64  /* buffers mapped at a time */

/* Shared state of a drain, under lock. Full buffers wait on `full`; idle workers wait on cond. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;        /* work arrived, or the drain is over */
	pthread_cond_t start;       /* workers: a drain begins */
	wbuf_t *full;               /* buffers with work for anyone */
	wbuf_t *empty;              /* buffers to reuse */
	int nworkers;               /* taking part in this drain */
	int nwaiting;               /* of them, out of work */
	int done;
	uint64_t drain;             /* drains started (workers wait for the next) */
	int started;                /* helper threads running */
	int finished;               /* helpers finished with the current drain */
	size_t marked;              /* summed by workers */
	uint64_t cpu_ns;
} M NONROOT = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
       .start = PTHREAD_COND_INITIALIZER};

/* ---- buffers ----------------------------------------------------------------------------- */

static wbuf_t *wbuf_get_empty_locked(void)
{
	if (M.empty == NULL) {
		wbuf_t *chunk = os_map(NULL, WBUF_CHUNK * sizeof(wbuf_t));
		if (chunk == NULL)
			cgc_fatal("cgc: out of memory for the collector's mark buffers");
		for (int i = 0; i < WBUF_CHUNK; i++) {
			chunk[i].next = M.empty;
			M.empty = &chunk[i];
		}
	}
	wbuf_t *b = M.empty;
	M.empty = b->next;
	b->n = 0;
	b->next = NULL;
	return b;
}

/* The current buffer is full: publish it for other workers, continue in an empty one. */
static NOINLINE void wbuf_publish(gcwork_t *w)
{
	lock_acquire(&M.lock);
	w->buf->next = M.full;
	store_relaxed(&M.full, w->buf);
	w->buf = wbuf_get_empty_locked();
	if (M.nwaiting)
		pthread_cond_signal(&M.cond);
	pthread_mutex_unlock(&M.lock);
}

static inline void push_item(gcwork_t *w, uintptr_t p, uintptr_t len)
{
	if (unlikely(w->buf == NULL)) {
		lock_acquire(&M.lock);
		w->buf = wbuf_get_empty_locked();
		pthread_mutex_unlock(&M.lock);
	}
	if (unlikely(w->buf->n == WBUF_ITEMS))
		wbuf_publish(w);
	w->buf->items[w->buf->n++] = (item_t){p, len};
}

/* Big ranges go in pieces, so that other workers can take some (a 1 GiB array is not one item). */
void mark_push_range(gcwork_t *w, uintptr_t p, size_t len, bool root)
{
	uintptr_t end = (p + len) & ~(uintptr_t)7;
	p = (p + 7) & ~(uintptr_t)7;
	while (p < end) {
		size_t n = end - p > SCAN_CHUNK ? SCAN_CHUNK : end - p;
		push_item(w, p, n | (uintptr_t)root);
		p += n;
	}
}

void mark_flush(gcwork_t *w)
{
	if (w->buf && w->buf->n)
		wbuf_publish(w);
}

/* ---- marking one word -------------------------------------------------------------------- */

/* v is a word inside [heap_lo, heap_hi). Marks the object it points into; queues it if it is new
 * and may hold pointers. From a root range, a word into a free slot marks the slot too: it may be
 * an allocation in flight (collector.md 5.3); the sweep ignores free slots, so it costs nothing. */
static ALWAYS_INLINE void mark_word(gcwork_t *w, uintptr_t v, uintptr_t root)
{
	heap_arena_t *ha = load_relaxed(&arena_index[v >> ARENA_SHIFT]);
	if (ha == NULL)
		return;
	span_t *s = load_relaxed(&ha->spans[(v >> PAGE_SHIFT) & (PAGES_PER_ARENA - 1)]);
	/* Acquire: a span made while marking runs publishes its kind last (alloc/mheap.c), and no
	 * span is freed while marking runs (collector.md 8.4), so what follows is consistent. */
	if (s == NULL || load_acquire(&s->kind) == SPAN_FREE)
		return;
	size_t idx = span_objindex(s, v);
	if (idx >= s->nelems)
		return;
	uint8_t st = load_relaxed(&s->state[idx]);
	if (st == OBJ_FREE && !root)
		return;
	/* Test, then set with a plain store: no locked instruction (it was a third of the scan loop
	 * as a bit set with an atomic OR). Two workers that race here both push the object, and it is
	 * scanned twice: harmless, and rare. */
	uint8_t *mb = &s->marks[idx];
	if (load_relaxed(mb))
		return;
	store_relaxed(mb, 1);
	if (st == OBJ_FREE)
		return;
	w->marked_bytes += s->elemsize;
	if (!SPC_NOSCAN(s->spc)) {
		mark_push_range(w, s->base + idx * s->elemsize, s->elemsize, false);
	}
}

/* ---- checkmark (CGC_DEBUG=checkmark=1, doc/design/collector.md 8.6) ---------------------------- */

/* The verification mark runs with the world stopped after a concurrent mark has finished, on this
 * thread alone, and visits with bit 1 of the mark byte: an allocated object it reaches whose bit 0
 * is clear was missed. Bit 1 needs no clearing: the sweep reads bit 0 and clears the bytes. */
static NOINLINE COLD _Noreturn void check_missed(gcwork_t *w, span_t *s, size_t idx, uintptr_t v)
{
	uintptr_t obj = s->base + idx * s->elemsize;
	char where[160];
	roots_describe(w->check_root, where, sizeof where);
	cgc_fatal("cgc: checkmark: the %zu-byte object at %p (span %p, class %u, slot %zu) is reachable "
		  "but the concurrent mark left it white; the word %p at %p points to it, found scanning "
		  "%p, reached from the root at %p (%s)",
		  s->elemsize, (void *)obj, (void *)s->base, (unsigned)(s->spc >> 1), idx, (void *)v,
		  (void *)w->check_at, (void *)w->check_parent, (void *)w->check_root, where);
}

__attribute__((no_sanitize_address, no_sanitize_thread)) static void check_scan(gcwork_t *w, uintptr_t p, uintptr_t len)
{
	uintptr_t lo = load_relaxed(&heap_lo), span = load_relaxed(&heap_hi) - lo;
	w->check_parent = p;
	for (const uintptr_t *q = (const uintptr_t *)p, *end = (const uintptr_t *)(p + len); q < end; q++) {
		uintptr_t v = *(volatile const uintptr_t *)q;
		if (rt_valgrind)
			VALGRIND_MAKE_MEM_DEFINED(&v, sizeof v);
		if (v - lo >= span)
			continue;
		span_t *s = spanmap_lookup(v);
		if (s == NULL || load_acquire(&s->kind) == SPAN_FREE)
			continue;
		size_t idx = span_objindex(s, v);
		if (idx >= s->nelems)
			continue;
		uint8_t st = load_relaxed(&s->state[idx]);
		uint8_t *mb = &s->marks[idx];
		uint8_t m = load_relaxed(mb);
		if (m & 2)
			continue;
		store_relaxed(mb, (uint8_t)(m | 2));
		if (st == OBJ_FREE)
			continue;
		if (!(m & 1)) {
			w->check_at = (uintptr_t)q;
			check_missed(w, s, idx, v);
		}
		if (!SPC_NOSCAN(s->spc))
			mark_push_range(w, s->base + idx * s->elemsize, s->elemsize, false);
	}
}

/* Scans [p, p+len) word by word. Conservative scanning reads whatever is there: sanitizers must
 * not instrument it (stack redzones, other threads' frames), and valgrind's error reporting is off
 * while marking (collector.md 5.5). */
/* Not instrumented by TSan either: a blocking thread (cgc_enter_blocking) may write its stack
 * while it is scanned, which the contract allows. */
__attribute__((no_sanitize_address, no_sanitize_thread)) static void scan_range(gcwork_t *w, uintptr_t p, uintptr_t len)
{
	uintptr_t root = len & 1;
	len &= ~(uintptr_t)7;
	uintptr_t lo = load_relaxed(&heap_lo), span = load_relaxed(&heap_hi) - lo;
	if (unlikely(w->check)) {
		check_scan(w, p, len);
		return;
	}
	const uintptr_t *q = (const uintptr_t *)p, *end = (const uintptr_t *)(p + len);
	if (unlikely(rt_valgrind)) {
		/* Memcheck would carry an undefined word's taint into the mark bits and the sweep:
		 * each word is copied and the copy declared defined. */
		for (; q < end; q++) {
			volatile uintptr_t v = *q;
			VALGRIND_MAKE_MEM_DEFINED(&v, sizeof v);
			if (v - lo < span)
				mark_word(w, v, root);
		}
		w->scanned_bytes += len;
		return;
	}
	for (; q < end; q++) {
		uintptr_t v = *(volatile const uintptr_t *)q;
		if (v - lo < span)
			mark_word(w, v, root);
	}
	w->scanned_bytes += len;
}

void mark_scan_now(gcwork_t *w, uintptr_t p, size_t len, bool root)
{
	uintptr_t end = (p + len) & ~(uintptr_t)7;
	p = (p + 7) & ~(uintptr_t)7;
	if (end > p) {
		vg_disable_errors();
		scan_range(w, p, (end - p) | (uintptr_t)root);
		vg_enable_errors();
	}
}

/* Sets the mark byte of the slot containing a and queues nothing: termination's allocations in
 * flight (collector.md 5.3) are new objects, whose contents hold no pointer yet. */
void mark_slot_black(uintptr_t a)
{
	span_t *s = spanmap_lookup(a);
	if (s == NULL || load_relaxed(&s->kind) == SPAN_FREE)
		return;
	size_t idx = span_objindex(s, a);
	if (idx < s->nelems)
		span_set_mark(s, idx);
}

/* ---- draining ---------------------------------------------------------------------------- */

/* M.lock held, M.full not empty: our (empty) buffer goes back, the first published one is ours. */
static void take_full_locked(gcwork_t *w)
{
	if (w->buf) {
		w->buf->next = M.empty;
		M.empty = w->buf;
	}
	w->buf = M.full;
	store_relaxed(&M.full, w->buf->next);
	w->buf->next = NULL;
}

/* The next item: from our buffer, else a published one; NULL when every worker is out of work
 * and nothing is published (then the drain is over). */
static bool next_item(gcwork_t *w, item_t *it)
{
	if (likely(w->buf && w->buf->n)) {
		*it = w->buf->items[--w->buf->n];
		return true;
	}
	lock_acquire(&M.lock);
	for (;;) {
		if (M.full) {
			take_full_locked(w);
			pthread_mutex_unlock(&M.lock);
			*it = w->buf->items[--w->buf->n];
			return true;
		}
		if (M.done) {
			pthread_mutex_unlock(&M.lock);
			return false;
		}
		store_relaxed(&M.nwaiting, M.nwaiting + 1);
		if (M.nwaiting == M.nworkers) {
			M.done = 1;
			pthread_cond_broadcast(&M.cond);
			pthread_mutex_unlock(&M.lock);
			return false;
		}
		pthread_cond_wait(&M.cond, &M.lock);
		store_relaxed(&M.nwaiting, M.nwaiting - 1);
	}
}

/* Idle workers and nothing published: give them the older half of our buffer (nearer the roots,
 * so bigger subgraphs). Without this a deep, narrow graph never fills a buffer and one worker
 * marks it alone. */
static NOINLINE void share(gcwork_t *w, bool only_to_waiters)
{
	lock_acquire(&M.lock);
	if ((M.nwaiting > 0 || !only_to_waiters) && M.full == NULL && w->buf->n >= 8) {
		wbuf_t *b = wbuf_get_empty_locked();
		size_t half = w->buf->n / 2;
		memcpy(b->items, w->buf->items, half * sizeof(item_t));
		memmove(w->buf->items, w->buf->items + half, (w->buf->n - half) * sizeof(item_t));
		b->n = half;
		w->buf->n -= half;
		b->next = NULL;
		store_relaxed(&M.full, b);
		pthread_cond_signal(&M.cond);
	}
	pthread_mutex_unlock(&M.lock);
}

/* Items wait in a small FIFO after they are popped, their first line prefetched: scanning
 * straight off the stack would wait on the miss of every object (most of marking's time,
 * measured), while PREFETCH_RING items later the line has arrived. */
#define PREFETCH_RING 8

static void drain(gcwork_t *w)
{
	vg_disable_errors();
	uint64_t t0 = os_thread_cputime();
	item_t ring[PREFETCH_RING], it;
	unsigned head = 0, count = 0, k = 0;
	for (;;) {
		while (count < PREFETCH_RING && w->buf && w->buf->n) {
			it = w->buf->items[--w->buf->n];
			__builtin_prefetch((const void *)it.p);
			ring[(head + count++) % PREFETCH_RING] = it;
		}
		if (count == 0) {
			if (!next_item(w, &it))
				break;
			ring[head] = it;
			count = 1;
		}
		it = ring[head];
		head = (head + 1) % PREFETCH_RING;
		count--;
		scan_range(w, it.p, it.len);
		if ((++k & 31) == 0 && load_relaxed(&M.nwaiting) > 0 && load_relaxed(&M.full) == NULL &&
		    w->buf && w->buf->n >= 8)
			share(w, true);
	}
	uint64_t cpu = os_thread_cputime() - t0;
	vg_enable_errors();
	lock_acquire(&M.lock);
	M.marked += w->marked_bytes;
	M.cpu_ns += cpu;
	if (w->buf) {
		w->buf->next = M.empty;
		M.empty = w->buf;
		w->buf = NULL;
	}
	pthread_mutex_unlock(&M.lock);
}

/* Helper workers: cgc's own threads, never registered and never stopped; they sleep between
 * drains. */
static void *worker_main(void *arg)
{
	uint64_t seen = 0;
	for (;;) {
		lock_acquire(&M.lock);
		while (M.drain == seen)
			pthread_cond_wait(&M.start, &M.lock);
		seen = M.drain;
		pthread_mutex_unlock(&M.lock);
		gcwork_t w = {0};
		drain(&w);
		lock_acquire(&M.lock);
		M.finished++;
		pthread_cond_broadcast(&M.cond);
		pthread_mutex_unlock(&M.lock);
	}
	return arg;
}

size_t mark_drain_parallel(gcwork_t *w0, uint64_t *cpu_ns, int *workers)
{
	int want = gc_opt.procs;
	lock_acquire(&M.lock);
	while (M.started < want - 1) {
		if (threads_create_internal(worker_main, NULL) != 0)
			break; /* fewer workers; marking still completes */
		M.started++;
	}
	/* Our buffer goes on the shared list so helpers can start at once. */
	if (w0->buf && w0->buf->n) {
		w0->buf->next = M.full;
		store_relaxed(&M.full, w0->buf);
		w0->buf = NULL;
	}
	M.nworkers = M.started + 1;
	store_relaxed(&M.nwaiting, 0);
	M.done = 0;
	M.finished = 0;
	M.marked = 0;
	M.cpu_ns = 0;
	M.drain++;
	pthread_cond_broadcast(&M.start);
	pthread_mutex_unlock(&M.lock);

	drain(w0);

	lock_acquire(&M.lock);
	while (M.finished < M.started)
		pthread_cond_wait(&M.cond, &M.lock);
	size_t marked = M.marked + 0;
	*cpu_ns = M.cpu_ns;
	*workers = M.nworkers;
	pthread_mutex_unlock(&M.lock);
	return marked;
}

/* ---- concurrent marking (doc/design/collector.md 8) ---------------------------------------- */

/* The background workers' state, under M.lock. */
NONROOT static struct {
	pthread_cond_t start;       /* workers: a concurrent mark begins */
	pthread_cond_t idle;        /* the collector: every worker ran out of work, or parked */
	uint64_t epoch;             /* concurrent marks begun */
	int want;                   /* workers the current mark runs on its CPU budget */
	int idle_id;                /* and the idle worker's id (-1: none) */
	double share;               /* CPU share of the last worker (the fractional one) */
	int started;                /* worker threads made */
	int running;                /* workers inside the current mark */
	int stop;                   /* the collector wants them parked */
	uint32_t busy;              /* atomic: threads inside mark_drain_some or mark_shade, which
	                               may hold grey work not yet published */
	size_t marked;              /* bytes marked by workers and assists this cycle */
	int64_t credit;             /* atomic: bytes the background workers scanned this cycle and no
	                               assist has taken yet (Go's bgScanCredit) */
	uint64_t cpu_ns;            /* their CPU time */
} C NONROOT = {.start = PTHREAD_COND_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER,
		    .idle_id = -1};

/* Swaps our empty buffer for a published one; false when nothing is published. */
static bool take_published(gcwork_t *w)
{
	lock_acquire(&M.lock);
	if (M.full == NULL) {
		pthread_mutex_unlock(&M.lock);
		return false;
	}
	take_full_locked(w);
	pthread_mutex_unlock(&M.lock);
	return true;
}

/* Leaves nothing private: what is left in our buffer is published, an empty buffer goes back,
 * and the bytes we marked are counted. */
static void give_back(gcwork_t *w, uint64_t cpu_ns)
{
	lock_acquire(&M.lock);
	if (w->buf) {
		if (w->buf->n) {
			w->buf->next = M.full;
			store_relaxed(&M.full, w->buf);
			pthread_cond_signal(&M.cond);
		} else {
			w->buf->next = M.empty;
			M.empty = w->buf;
		}
		w->buf = NULL;
	}
	fetch_add_relaxed(&C.marked, w->marked_bytes); /* atomic: assists read it (pacer_assist_ratio) */
	C.cpu_ns += cpu_ns;
	w->marked_bytes = 0;
	/* The collector waits for the mark to go quiet: only a give-back that may have made it so
	 * wakes it (each barrier flush and assist slice did, a futex wake every few microseconds:
	 * 4% of GCBench's time in the kernel). Its wait is timed, so nothing is lost by this. */
	if (fetch_sub_relaxed(&C.busy, 1) == 1 && M.full == NULL)
		pthread_cond_broadcast(&C.idle);
	pthread_mutex_unlock(&M.lock);
}

/* Scans grey work until about budget bytes are done or none is left anywhere; returns the bytes
 * scanned. Called by background workers and by allocating threads (assists), with the world
 * running, and leaves no work private (give_back). */
size_t mark_drain_some(gcwork_t *w, size_t budget)
{
	fetch_add_relaxed(&C.busy, 1);
	vg_disable_errors();
	uint64_t t0 = os_thread_cputime();
	size_t done = 0;
	item_t ring[PREFETCH_RING], it;
	unsigned head = 0, count = 0, k = 0;
	while (done < budget || count) {
		while (done < budget && count < PREFETCH_RING && w->buf && w->buf->n) {
			it = w->buf->items[--w->buf->n];
			__builtin_prefetch((const void *)it.p);
			ring[(head + count++) % PREFETCH_RING] = it;
		}
		if (count == 0) {
			if (done >= budget || !take_published(w))
				break;
			continue;
		}
		it = ring[head];
		head = (head + 1) % PREFETCH_RING;
		count--;
		scan_range(w, it.p, it.len);
		done += it.len & ~(uintptr_t)7;
		/* Nothing published: half of ours goes out, for assists and the other workers, who
		 * do not wait on M.nwaiting here but look and leave (a tree's grey set is a few
		 * dozen items and never fills a buffer). */
		if ((++k & 31) == 0 && load_relaxed(&M.full) == NULL && w->buf && w->buf->n >= 8)
			share(w, false);
	}
	vg_enable_errors();
	give_back(w, os_thread_cputime() - t0);
	return done;
}

/* Marks the objects the values point to (a write barrier's buffer, a reallocated object's old
 * words) and publishes them grey. */
void mark_shade(const uintptr_t *v, size_t n)
{
	gcwork_t w = {0};
	uintptr_t lo = load_relaxed(&heap_lo), span = load_relaxed(&heap_hi) - lo;
	fetch_add_relaxed(&C.busy, 1);
	vg_disable_errors();
	for (size_t i = 0; i < n; i++)
		if (v[i] - lo < span)
			mark_word(&w, v[i], 0);
	vg_enable_errors();
	give_back(&w, 0);
}

static bool worker_wanted(int id)
{
	return id < C.want || id == C.idle_id;
}

/* A background worker: marks while a concurrent mark runs, sleeping for work when there is none,
 * and (the fractional one) only for its share of one CPU. The idle worker marks flat out at the
 * lowest priority: Go's idle mark workers, with the kernel's scheduler deciding what is idle. With
 * 2 CPUs and one busy program thread it has a CPU to itself, where the fractional worker would
 * leave it idle half the time; with every CPU busy it gets almost nothing. */
static void *bgworker_main(void *arg)
{
	int id = (int)(intptr_t)arg;
	uint64_t seen = 0;
	bool niced = false;
	lock_acquire(&M.lock);
	for (;;) {
		while (C.epoch == seen || !worker_wanted(id) || C.stop) {
			if (C.epoch != seen && (!worker_wanted(id) || C.stop))
				seen = C.epoch; /* not wanted this time */
			pthread_cond_wait(&C.start, &M.lock);
		}
		seen = C.epoch;
		double share = id == C.want - 1 ? C.share : 1.0;
		/* The fractional worker runs at the lowest priority too: at the default one, the
		 * kernel shared a CPU between it and the program's threads, and with 2 CPUs GCBench's
		 * program thread was preempted for 4 to 8 ms at a time (perf sched), 7% of its run time
		 * (medians of 6). Where no CPU is idle, the assists do its share instead. */
		if ((id == C.idle_id || share < 1.0) && !niced) {
			/* Once: its id keeps its role, since CGC_PROCS does not change. */
			setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
			niced = true;
		}
		C.running++;
		pthread_mutex_unlock(&M.lock);
		gcwork_t w = {0};
		uint64_t wall0 = os_nanotime(), cpu0 = os_thread_cputime();
		for (;;) {
			size_t n = mark_drain_some(&w, (size_t)256 << 10);
			fetch_add_relaxed(&C.credit, (int64_t)n);
			lock_acquire(&M.lock);
			if (C.stop)
				break;
			if (n == 0) {
				/* Out of work: say so, and wait for more (a barrier flush, an assist's
				 * leftovers) or for the end. */
				pthread_cond_broadcast(&C.idle);
				while (M.full == NULL && !C.stop)
					pthread_cond_wait(&M.cond, &M.lock);
				if (C.stop)
					break;
			}
			pthread_mutex_unlock(&M.lock);
			if (share < 1.0 && !pacer_over_goal()) {
				/* The fractional worker: ahead of its share, it sleeps the difference. */
				uint64_t wall = os_nanotime() - wall0, cpu = os_thread_cputime() - cpu0;
				double over = (double)cpu / share - (double)wall;
				if (over > 1e5)
					os_sleep_ns((uint64_t)over);
			}
		}
		C.running--;
		pthread_cond_broadcast(&C.idle);
	}
	return NULL;
}

/* The first stop of a concurrent mark (world stopped): the counts start from zero, before any
 * assist can add to them. */
void mark_concurrent_reset(size_t root_marked)
{
	lock_acquire(&M.lock);
	store_relaxed(&C.marked, root_marked);
	store_relaxed(&C.credit, 0);
	C.cpu_ns = 0;
	pthread_mutex_unlock(&M.lock);
}

/* Starts the background workers on the grey work pushed so far: 25% of CGC_PROCS, as dedicated
 * workers and one fractional worker for the remainder (with 2 CPUs: one worker at half a CPU),
 * and the idle worker. */
void mark_concurrent_start(void)
{
	double want = gc_opt.procs * 0.25;
	int n = (int)want;
	double frac = want - n;
	if (frac > 0.01 || n == 0)
		n++;
	lock_acquire(&M.lock);
	while (C.started < n + 1) {
		if (threads_create_internal(bgworker_main, (void *)(intptr_t)C.started) != 0)
			break; /* fewer workers: assists and mark termination still finish the work */
		C.started++;
	}
	C.want = n < C.started ? n : C.started;
	C.idle_id = C.started > n ? n : -1;
	C.share = frac > 0.01 ? frac : 1.0;
	C.stop = 0;
	C.epoch++;
	pthread_cond_broadcast(&C.start);
	pthread_mutex_unlock(&M.lock);
}

/* Waits until the background workers find no work, or timeout_ns passes; true if they found none
 * (then mark termination will find little). */
bool mark_concurrent_wait(uint64_t timeout_ns)
{
	uint64_t until = os_nanotime() + timeout_ns;
	lock_acquire(&M.lock);
	bool quiet;
	for (;;) {
		quiet = M.full == NULL && load_relaxed(&C.busy) == 0;
		if (quiet || os_nanotime() >= until)
			break;
		os_cond_timedwait_ns(&C.idle, &M.lock, 1000 * 1000);
	}
	pthread_mutex_unlock(&M.lock);
	return quiet;
}

/* Parks the background workers (before mark termination stops the world); returns the bytes they
 * and the assists marked, and their CPU time. */
size_t mark_concurrent_stop(uint64_t *cpu_ns)
{
	lock_acquire(&M.lock);
	C.stop = 1;
	pthread_cond_broadcast(&M.cond);
	while (C.running > 0)
		pthread_cond_wait(&C.idle, &M.lock);
	size_t marked = C.marked;
	*cpu_ns = C.cpu_ns;
	store_relaxed(&C.marked, 0);
	C.cpu_ns = 0;
	pthread_mutex_unlock(&M.lock);
	return marked;
}

/* Re-marks everything from the roots with the world stopped (after a concurrent mark's
 * termination) and aborts on the first reachable object the concurrent mark missed. One root at
 * a time, so the report can name the root. */
NOINLINE void mark_checkmark(void)
{
	gcwork_t w = {.check = true};
	size_t g, st;
	fetch_add_relaxed(&C.busy, 1); /* give_back, at the end, counts it down */
	unw_context_t ctx;
	unw_getcontext(&ctx);
	roots_push_all(&w, (uintptr_t)&ctx, &g, &st, false);
	/* Take every root item out of the buffers into one array. */
	size_t n = 0, cap = 0;
	item_t *roots = NULL;
	for (;;) {
		if (!(w.buf && w.buf->n) && !take_published(&w))
			break;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 4096;
			item_t *nr = os_map(NULL, ncap * sizeof(item_t));
			if (nr == NULL)
				cgc_fatal("cgc: checkmark: out of memory for the root list");
			if (roots) {
				memcpy(nr, roots, n * sizeof(item_t));
				os_unmap(roots, cap * sizeof(item_t));
			}
			roots = nr;
			cap = ncap;
		}
		roots[n++] = w.buf->items[--w.buf->n];
	}
	vg_disable_errors();
	for (size_t i = 0; i < n; i++) {
		w.check_root = roots[i].p;
		scan_range(&w, roots[i].p, roots[i].len);
		item_t it;
		for (;;) {
			if (w.buf && w.buf->n)
				it = w.buf->items[--w.buf->n];
			else if (take_published(&w))
				continue;
			else
				break;
			scan_range(&w, it.p, it.len);
		}
	}
	vg_enable_errors();
	__asm__ volatile("" ::"r"(&ctx) : "memory");
	if (roots)
		os_unmap(roots, cap * sizeof(item_t));
	give_back(&w, 0);
	lock_acquire(&M.lock);
	store_relaxed(&C.marked, 0); /* the checkmark's count is not the cycle's */
	pthread_mutex_unlock(&M.lock);
}

/* Allocate black (collector.md 8.2): while marking runs, every slot a cache can hand out is
 * marked first, so a new object is never taken for garbage at termination. Only free slots: a
 * mark on an allocated object that was never scanned would hide its children. */
void mark_free_slots(span_t *s)
{
	size_t n = s->nelems;
	const uint8_t *state = s->state;
	uint8_t *marks = s->marks;
	for (size_t i = 0; i < n; i += 8) {
		uint64_t st = load_relaxed((const uint64_t *)(const void *)(state + i));
		/* 0x80 in every zero (free) byte, then 0x01: the mark bytes to set. */
		uint64_t z = ~(((st & 0x7f7f7f7f7f7f7f7full) + 0x7f7f7f7f7f7f7f7full) | st) & 0x8080808080808080ull;
		z >>= 7;
		if (n - i < 8)
			z &= ((uint64_t)1 << (8 * (n - i))) - 1;
		/* One atomic OR for eight slots (byte stores were 6% of GCBench's mutator time with
		 * the barrier): markers store single mark bytes of allocated slots in the same word,
		 * which a plain read-modify-write could undo. Both arrays are word-aligned. */
		uint64_t *mw = (uint64_t *)(void *)(marks + i);
		if (z && (load_relaxed(mw) & z) != z)
			__atomic_fetch_or(mw, z, __ATOMIC_RELAXED);
	}
}

/* A refill while marking runs (alloc/mcache.c): allocate black, or list the span. Inside a hold,
 * and the flags read again there: a stop for mark termination that split this would let the rest
 * of the allocate-black marks land after the span was swept, and they would then pass as the next
 * cycle's marks on objects it never scanned (checkmark caught it under valgrind, whose scheduling
 * makes the window wide). */
void gc_refill_marking(span_t *s)
{
	threads_hold_stop();
	if (load_relaxed(&mheap.alloc_black))
		mark_free_slots(s);
	if (load_relaxed(&mheap.track_spans))
		dirty_span_add(s);
	threads_release_stop();
}

/* Bytes marked so far by the concurrent mark (relaxed: the assist ratio needs a trend). */
size_t mark_concurrent_marked(void)
{
	return load_relaxed(&C.marked);
}

/* An allocating thread's share of the mark, in proportion to what it was handed since its last
 * assist (Go's mark assists), at the ratio of scan work left to heap left before the goal,
 * revised each time (pacer_assist_ratio): the background workers' progress lowers it. One assist
 * does at most ASSIST_MAX below the goal, eight times that above it, and the rest stays owed, so
 * no allocation pays for tens of milliseconds of marking at once (an uncapped assist over the goal
 * took 30 ms in GCBench); the hard goal bounds the heap (gc_maybe_trigger). Stops are held off
 * meanwhile: a stop must not find objects marked and not yet published. */
void mark_assist(void)
{
	int64_t owed = tls_unassisted;
	if (owed <= 0)
		return;
	double ratio = pacer_assist_ratio();
	bool over = pacer_over_goal();
	size_t budget = (size_t)((double)owed * ratio) + 1;
	size_t cap = over ? 8 * ASSIST_MAX : ASSIST_MAX;
	if (budget > cap)
		budget = cap;
	/* What the background workers scanned beyond what earlier assists took pays first (Go's
	 * background credit): with a CPU to themselves they can keep up with the program, and then
	 * the program should not mark at all. Without it, GCBench's program thread spent a third of
	 * its time marking while the idle worker had a CPU (perf, with the barrier). The ratio still
	 * counts their work as done, so the mark stays on course for the goal either way. */
	size_t paid = 0;
	int64_t credit = load_relaxed(&C.credit);
	while (credit > 0) {
		int64_t take = credit < (int64_t)budget ? credit : (int64_t)budget;
		if (cas_weak_relaxed(&C.credit, &credit, credit - take)) {
			paid = (size_t)take;
			break;
		}
	}
	/* In slices, with stops let through between them: a stop waits for one slice at most. */
	while (paid < budget && load_relaxed(&gc.phase) == GC_MARK) {
		size_t slice = budget - paid < ASSIST_SLICE ? budget - paid : ASSIST_SLICE;
		threads_hold_stop();
		gcwork_t w = {0};
		size_t done = mark_drain_some(&w, slice);
		threads_release_stop();
		paid += done;
		if (done < slice) {
			paid = budget; /* no grey work left anywhere: nothing more can be asked */
			break;
		}
	}
	int64_t left = owed - (int64_t)((double)paid / ratio);
	tls_unassisted = left > 0 ? left : 0;
}

void mark_init(void)
{
}

/* The helpers did not survive the fork; the lock was taken by the prepare handler. */
void mark_fork_prepare(void)
{
	lock_acquire(&M.lock);
}

void mark_fork_parent(void)
{
	pthread_mutex_unlock(&M.lock);
}

void mark_fork_child(void)
{
	/* The condition variables still count the parent's waiting helpers, who are not here:
	 * glibc's next broadcast would wait for them forever. Start them afresh. */
	pthread_cond_init(&M.start, NULL);
	pthread_cond_init(&M.cond, NULL);
	pthread_cond_init(&C.start, NULL);
	pthread_cond_init(&C.idle, NULL);
	M.started = 0;
	C.started = 0;
	C.running = 0;
	pthread_mutex_unlock(&M.lock);
}
