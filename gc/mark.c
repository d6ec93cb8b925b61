/* gc/mark.c - conservative marking: every word that resolves to an allocated object marks it and,
 * if it may hold pointers, queues it grey; grey work in buffers per worker plus a shared list,
 * drained by CGC_PROCS workers in parallel. doc/design/collector.md 5. */
#include <sched.h>
#include <string.h>

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
	if (s == NULL || s->kind == SPAN_FREE)
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
			if (w->buf) {
				w->buf->next = M.empty;
				M.empty = w->buf;
			}
			w->buf = M.full;
			store_relaxed(&M.full, w->buf->next);
			w->buf->next = NULL;
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
static NOINLINE void share(gcwork_t *w)
{
	lock_acquire(&M.lock);
	if (M.nwaiting > 0 && M.full == NULL && w->buf->n >= 8) {
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
			share(w);
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
		pthread_t t;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		int r = threads_create_internal(&t, &attr, worker_main, NULL);
		pthread_attr_destroy(&attr);
		if (r != 0)
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
	M.started = 0;
	pthread_mutex_unlock(&M.lock);
}
