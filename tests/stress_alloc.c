/* tests/stress_alloc.c - many threads allocate, resize, hand over and free checksummed objects, so
 * premature reuse, overlap, lost remote frees and bad accounting show; the seed replays a run. */

/* How it works. STRESS_THREADS workers (default 4) each run 300000 operations (times STRESS_SCALE)
 * on a table of live objects: allocate (both flavours, sizes mostly up to 512 bytes, sometimes up
 * to 40000, rarely up to 300000), resize, free, check, and pass objects to other threads through
 * a small locked exchange, so that many frees are remote. Every object's
 * bytes are derived from (address, requested size, tag): a slot handed out twice, or two objects
 * that overlap, breaks a pattern, and the next check reports the seed, object and byte.
 *
 * Workers end early at random and a successor (thread id + number of workers) takes over the rest
 * of the work: the ending thread's spans go to mcentral, and its live objects go to an orphan pool
 * from which the other threads keep taking and freeing them. At the end, the main thread checks
 * that no two live objects overlap, frees them all and compares the statistics with what the
 * workers counted. A second run does the same with many threads (STRESS_MANY, default 32) doing
 * a tenth of the work each: more caches, more spans changing hands, more metadata.
 *
 * Replay: CGC_SEED=n gives every thread the same random sequence again (thread i's generator
 * comes from the seed and i). The interleaving still differs between runs; to take it out,
 * CGC_SEED=n STRESS_THREAD=i runs thread i alone, which is then fully deterministic (the ids of
 * the many-thread run start at 1000000). */

#include <check.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/alloc.h"
#include "include/cgc.h"
#include "tests/testutil.h"

/* ---- parameters -------------------------------------------------------------------------- */

#define MAX_LIVE 1024       /* live objects a worker holds at most, in the larger run */
#define XCHG_SLOTS 64       /* objects in transit between workers */
#define MAX_SIZE 300000     /* largest request */
#define CHECK_EVERY 4096    /* ops between a worker's overlap checks of its own objects */
#define MAX_GENERATIONS 8   /* successors per worker slot, at most */
#define MANY_ID_BASE 1000000u /* first thread id of the many-thread run */

/* One run of workers. The runs are the tests of this file, one after the other. */
struct run {
	const char *name;
	unsigned slots;          /* workers at a time: a slot's successor takes over when one ends */
	unsigned long nops;      /* operations per slot, over all its generations */
	unsigned live;           /* live objects per worker, at most */
	unsigned id_base;        /* thread ids are id_base + slot + generation * slots */
};

static uint64_t seed;
static struct run runs[2];
static const struct run *run;   /* the one in progress */
static long only_thread = -1;   /* STRESS_THREAD: run this thread id alone */

/* ---- objects and their patterns ---------------------------------------------------------- */

struct obj {
	unsigned char *p;  /* NULL: empty slot */
	size_t size;       /* requested bytes: the pattern covers exactly these */
	uint32_t tag;      /* makes the pattern differ between objects that reuse an address */
	uint8_t atomic;    /* from cgc_malloc_atomic (or resized from such an object) */
	uint8_t tiny;      /* an atomic request of 1 to 15 bytes: frees are no-ops */
	uint8_t tiny_size; /* a tiny object's usable size: the request rounded up to 4 bytes, kept
	                      when realloc shrinks it in place */
};

static uint64_t obj_key(const void *p, size_t size, uint32_t tag)
{
	uint64_t x = (uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull ^
		     (uint64_t)size * 0xc2b2ae3d27d4eb4full ^ (uint64_t)tag * 0x165667b19e3779f9ull;
	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 29;
	return x;
}

/* The pattern's word j: distinct in every position, cheap enough to fill megabytes. */
static inline uint64_t pat_word(uint64_t key, size_t j)
{
	return key ^ ((uint64_t)j * 0xd6e8feb86659fd93ull + 0x632be59bd9b4e019ull);
}

static inline unsigned char pat_byte(uint64_t key, size_t i)
{
	return (unsigned char)(pat_word(key, i / 8) >> (8 * (i % 8)));
}

/* Tiny objects are only 4-byte aligned: memcpy keeps the word accesses legal. */
static void pat_fill(unsigned char *p, size_t n, uint64_t key)
{
	size_t j;
	for (j = 0; j < n / 8; j++) {
		uint64_t w = pat_word(key, j);
		memcpy(p + 8 * j, &w, 8);
	}
	for (size_t i = 8 * j; i < n; i++)
		p[i] = pat_byte(key, i);
}

/* The first byte of p[0, n) that breaks the pattern, or SIZE_MAX. */
static size_t pat_find_bad(const unsigned char *p, size_t n, uint64_t key)
{
	size_t j;
	for (j = 0; j < n / 8; j++) {
		uint64_t w;
		memcpy(&w, p + 8 * j, 8);
		if (w != pat_word(key, j))
			break;
	}
	for (size_t i = 8 * j; i < n; i++)
		if (p[i] != pat_byte(key, i))
			return i;
	return SIZE_MAX;
}

static size_t find_nonzero(const unsigned char *p, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (p[i] != 0)
			return i;
	return SIZE_MAX;
}

/* ---- shared state ------------------------------------------------------------------------ */

/* The first failure, reported by the main thread: ck_* calls belong there, not in workers. */
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static char fail_msg[1024];
static int failed; /* atomic */

static pthread_mutex_t xchg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct obj xchg[XCHG_SLOTS];

/* Objects of workers that have ended, for the living to free. */
static pthread_mutex_t orphan_lock = PTHREAD_MUTEX_INITIALIZER;
static struct obj *orphans;
static size_t norphans, orphan_cap;

/* What the workers did, summed as they end: the statistics must agree at the end. */
static uint64_t total_nontiny; /* objects allocated that are not tiny (each is freed by the end) */
static uint64_t total_tiny;    /* requests served by the tiny allocator */
static uint64_t total_ops;

struct worker {
	unsigned id;
	unsigned slot;            /* worker slot, from 0 */
	unsigned generation;
	unsigned long budget;     /* ops this thread runs */
	unsigned long remaining;  /* ops left for the slot when this thread started */
	unsigned long op;         /* the current op, for reports */
	uint64_t rng;
	uint32_t next_tag;
	uint64_t nontiny, tiny;
	pthread_t successor;      /* set when this thread started one */
	bool has_successor;
	struct obj live[];        /* run->live slots */
};

static bool failure(struct worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records the failure (the first one wins) and tells every worker to stop. Returns false so that
 * checks can end with "return failure(...)". It is written to stderr at once as well: heap damage
 * may crash another thread before the main thread gets to report it. */
static bool failure(struct worker *w, const char *fmt, ...)
{
	pthread_mutex_lock(&fail_lock);
	if (!failed) {
		int n = snprintf(fail_msg, sizeof fail_msg, "stress_alloc: seed %llu, thread %u, op %lu: ",
				 (unsigned long long)seed, w ? w->id : 0u, w ? w->op : 0ul);
		va_list ap;
		va_start(ap, fmt);
		if (n > 0 && (size_t)n < sizeof fail_msg)
			n += vsnprintf(fail_msg + n, sizeof fail_msg - (size_t)n, fmt, ap);
		va_end(ap);
		if (w && n > 0 && (size_t)n < sizeof fail_msg)
			snprintf(fail_msg + n, sizeof fail_msg - (size_t)n,
				 " (replay: CGC_SEED=%llu; this thread alone, with the same STRESS_SCALE:"
				 " CGC_SEED=%llu STRESS_THREADS=%u STRESS_MANY=%u STRESS_THREAD=%u)",
				 (unsigned long long)seed, (unsigned long long)seed, runs[0].slots, runs[1].slots,
				 w->id);
		fprintf(stderr, "%s\n", fail_msg);
		__atomic_store_n(&failed, 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&fail_lock);
	return false;
}

static bool stopping(void)
{
	return __atomic_load_n(&failed, __ATOMIC_ACQUIRE) != 0;
}

static size_t round4(size_t n)
{
	return (n + 3) & ~(size_t)3;
}

/* ---- checks of one object ---------------------------------------------------------------- */

static const char *flavour(const struct obj *o)
{
	return o->tiny ? "tiny" : o->atomic ? "atomic" : "scanned";
}

/* The pattern, the usable size, and cgc_base at a random offset. */
static bool obj_check(struct worker *w, const struct obj *o, const char *when)
{
	uint64_t key = obj_key(o->p, o->size, o->tag);
	size_t bad = pat_find_bad(o->p, o->size, key);
	if (bad != SIZE_MAX)
		return failure(w, "%s: object %p (%zu bytes, %s, tag %u) is corrupt: byte %zu is 0x%02x,"
			       " want 0x%02x", when, (void *)o->p, o->size, flavour(o), (unsigned)o->tag, bad,
			       o->p[bad], pat_byte(key, bad));
	size_t us = cgc_usable_size(o->p);
	if (us < o->size || (o->tiny && us != o->tiny_size))
		return failure(w, "%s: object %p (%zu bytes, %s): usable size %zu", when, (void *)o->p,
			       o->size, flavour(o), us);
	if (o->size > 0) {
		size_t k = rng_below(&w->rng, o->size);
		void *b = cgc_base(o->p + k);
		if (b != o->p)
			return failure(w, "%s: cgc_base(%p + %zu) = %p, want %p (a %zu-byte %s object)", when,
				       (void *)o->p, k, b, (void *)o->p, o->size, flavour(o));
	}
	return true;
}

/* What a new object must be: its flavour (the span's class), alignment (cgc_malloc(3)) and, for
 * a scanned object, every usable byte zero. */
static bool obj_check_new(struct worker *w, const struct obj *o, const char *when)
{
	size_t us = cgc_usable_size(o->p);
	span_t *s = spanmap_lookup((uintptr_t)o->p);
	if (s == NULL || (s->kind == SPAN_TINY) != o->tiny || (int)SPC_NOSCAN(s->spc) != o->atomic)
		return failure(w, "%s: %p (%zu bytes, %s) is in the wrong kind of span (kind %d, class %u)",
			       when, (void *)o->p, o->size, flavour(o), s ? (int)s->kind : -1,
			       s ? (unsigned)s->spc : 0u);
	size_t align = o->tiny ? (o->tiny_size % 8 == 0 ? 8 : 4)
		       : us > MAX_SMALL_SIZE ? PAGE_SIZE : us % 16 == 0 ? 16 : 8;
	if ((uintptr_t)o->p % align != 0)
		return failure(w, "%s: %p (%zu bytes, %s, usable %zu) is not %zu-byte aligned", when,
			       (void *)o->p, o->size, flavour(o), us, align);
	if (!o->atomic) {
		size_t nz = find_nonzero(o->p, 0, us);
		if (nz != SIZE_MAX)
			return failure(w, "%s: new scanned object %p (%zu bytes, usable %zu) has byte %zu ="
				       " 0x%02x, not zero", when, (void *)o->p, o->size, us, nz, o->p[nz]);
	}
	return true;
}

/* ---- operations -------------------------------------------------------------------------- */

static size_t pick_size(uint64_t *rng)
{
	uint64_t r = rng_below(rng, 1000);
	if (r < 100)
		return (size_t)rng_below(rng, TINY_SIZE); /* tiny, when atomic */
	if (r < 940)
		return (size_t)rng_below(rng, 513);
	if (r < 995)
		return 513 + (size_t)rng_below(rng, 40000 - 512);
	return 40001 + (size_t)rng_below(rng, MAX_SIZE - 40000);
}

static void count_new(struct worker *w, const struct obj *o)
{
	if (o->tiny)
		w->tiny++;
	else
		w->nontiny++;
}

static bool op_alloc(struct worker *w, struct obj *o)
{
	size_t n = pick_size(&w->rng);
	int atomic = rng_below(&w->rng, 5) < 2;
	unsigned char *p = atomic ? cgc_malloc_atomic(n) : cgc_malloc(n);
	if (p == NULL)
		return failure(w, "cgc_malloc%s(%zu) returned NULL", atomic ? "_atomic" : "", n);
	*o = (struct obj){.p = p, .size = n, .tag = w->next_tag++, .atomic = (uint8_t)atomic,
			  .tiny = (uint8_t)(atomic && n >= 1 && n < TINY_SIZE),
			  .tiny_size = (uint8_t)round4(n)};
	count_new(w, o);
	if (!obj_check_new(w, o, "after malloc"))
		return false;
	pat_fill(p, n, obj_key(p, n, o->tag));
	return true;
}

static bool op_free(struct worker *w, struct obj *o)
{
	if (!obj_check(w, o, "before free"))
		return false;
	cgc_free(o->p);
	o->p = NULL;
	return true;
}

/* Grow or shrink, sometimes to 0: the old contents must survive up to the smaller size, and a
 * scanned object that moved must read zero past what the old one held (cgc_realloc(3)). */
static bool op_realloc(struct worker *w, struct obj *o)
{
	if (!obj_check(w, o, "before realloc"))
		return false;
	size_t old = o->size, n;
	uint64_t r = rng_below(&w->rng, 100);
	if (r < 3)
		n = 0;
	else if (r < 50)
		n = (size_t)rng_below(&w->rng, old + 1);
	else
		n = old + 1 + (size_t)rng_below(&w->rng, old < 16 ? 64 : old);
	if (n > MAX_SIZE)
		n = MAX_SIZE;
	size_t old_usable = cgc_usable_size(o->p);
	uint64_t old_key = obj_key(o->p, old, o->tag);
	unsigned char *p = o->p, *q = cgc_realloc(p, n);
	if (q == NULL)
		return failure(w, "cgc_realloc(%p, %zu) of a %zu-byte %s object returned NULL", (void *)p,
			       n, old, flavour(o));
	size_t keep = n < old ? n : old;
	size_t bad = pat_find_bad(q, keep, old_key);
	if (bad != SIZE_MAX)
		return failure(w, "cgc_realloc(%p, %zu) = %p lost the contents of a %zu-byte %s object:"
			       " byte %zu is 0x%02x, want 0x%02x", (void *)p, n, (void *)q, old, flavour(o),
			       bad, q[bad], pat_byte(old_key, bad));
	struct obj no = *o;
	no.p = q;
	no.size = n;
	no.tag = w->next_tag++;
	if (q != p) {
		/* A new object of the same flavour; a tiny one if the new size is a tiny request. */
		no.tiny = (uint8_t)(o->atomic && n >= 1 && n < TINY_SIZE);
		no.tiny_size = (uint8_t)round4(n);
		count_new(w, &no);
		span_t *s = spanmap_lookup((uintptr_t)q);
		if (s == NULL || (int)SPC_NOSCAN(s->spc) != o->atomic || (s->kind == SPAN_TINY) != no.tiny)
			return failure(w, "cgc_realloc(%p, %zu) of the %s object gave %p in a span of class %u",
				       (void *)p, n, flavour(o), (void *)q, s ? (unsigned)s->spc : 0u);
		if (!o->atomic && n > old_usable) {
			size_t nz = find_nonzero(q, old_usable, n);
			if (nz != SIZE_MAX)
				return failure(w, "cgc_realloc(%p, %zu) = %p: byte %zu past the old %zu usable"
					       " bytes is 0x%02x, not zero", (void *)p, n, (void *)q, nz,
					       old_usable, q[nz]);
		}
	} else if (n > old_usable) {
		return failure(w, "cgc_realloc(%p, %zu) stayed in place in a %zu-byte object", (void *)p, n,
			       old_usable);
	}
	*o = no;
	pat_fill(q, n, obj_key(q, n, no.tag));
	return obj_check(w, o, "after realloc");
}

/* Our object into the exchange; whatever was in its place comes back to us. */
static bool op_give(struct worker *w, struct obj *o)
{
	unsigned i = (unsigned)rng_below(&w->rng, XCHG_SLOTS);
	pthread_mutex_lock(&xchg_lock);
	struct obj back = xchg[i];
	xchg[i] = *o;
	pthread_mutex_unlock(&xchg_lock);
	*o = back;
	return o->p == NULL || obj_check(w, o, "taken from the exchange");
}

/* An object from the exchange or, failing that, one an ended thread left, into an empty slot. */
static bool op_take(struct worker *w, struct obj *o)
{
	unsigned i = (unsigned)rng_below(&w->rng, XCHG_SLOTS);
	pthread_mutex_lock(&xchg_lock);
	*o = xchg[i];
	xchg[i].p = NULL;
	pthread_mutex_unlock(&xchg_lock);
	if (o->p == NULL) {
		pthread_mutex_lock(&orphan_lock);
		if (norphans > 0) {
			size_t k = (size_t)rng_below(&w->rng, norphans);
			*o = orphans[k];
			orphans[k] = orphans[--norphans];
		}
		pthread_mutex_unlock(&orphan_lock);
	}
	if (o->p == NULL)
		return true;
	if (!obj_check(w, o, "taken over"))
		return false;
	/* Often freed at once: a remote free, into a span that may have no owner any more. */
	if (rng_below(&w->rng, 2) == 0)
		return op_free(w, o);
	return true;
}

static int cmp_obj(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)((const struct obj *)a)->p, y = (uintptr_t)((const struct obj *)b)->p;
	return x < y ? -1 : x > y;
}

/* No two of the n objects in v (sorted here) share a byte of their usable ranges. */
static bool check_disjoint(struct worker *w, struct obj *v, size_t n, const char *when)
{
	qsort(v, n, sizeof v[0], cmp_obj);
	for (size_t i = 1; i < n; i++) {
		size_t us = cgc_usable_size(v[i - 1].p);
		if (v[i - 1].p + us > v[i].p)
			return failure(w, "%s: objects overlap: %p (%zu bytes requested, %zu usable, %s) and %p"
				       " (%zu bytes, %s)", when, (void *)v[i - 1].p, v[i - 1].size, us,
				       flavour(&v[i - 1]), (void *)v[i].p, v[i].size, flavour(&v[i]));
	}
	return true;
}

static bool check_own(struct worker *w)
{
	static __thread struct obj v[MAX_LIVE];
	size_t n = 0;
	for (unsigned i = 0; i < run->live; i++)
		if (w->live[i].p != NULL)
			v[n++] = w->live[i];
	return check_disjoint(w, v, n, "a thread's own objects");
}

/* ---- workers ----------------------------------------------------------------------------- */

static uint64_t thread_rng(unsigned id, uint64_t stream)
{
	uint64_t x = seed ^ ((uint64_t)id + 1) * 0x9e3779b97f4a7c15ull ^ stream * 0xda942042e4dd58b5ull;
	x = obj_key((void *)(uintptr_t)x, id, (uint32_t)stream);
	return x ? x : 1;
}

/* How many of the remaining ops thread id runs before it ends: all of them, or (for half of the
 * threads, while enough work is left) a fifth to three fifths. Depends only on the seed and id, so
 * a replay of one thread gives it the same budget. */
static unsigned long plan_ops(unsigned id, unsigned long remaining)
{
	uint64_t r = thread_rng(id, 1);
	unsigned generation = (id - run->id_base) / run->slots;
	if (generation + 1 >= MAX_GENERATIONS || remaining < 2000 || rng_below(&r, 2) != 0)
		return remaining;
	return remaining / 5 + (unsigned long)rng_below(&r, remaining * 2 / 5);
}

/* Every live object goes to the orphan pool (verified by whoever frees it). */
static void worker_orphan_all(struct worker *w)
{
	pthread_mutex_lock(&orphan_lock);
	for (unsigned i = 0; i < run->live; i++) {
		if (w->live[i].p == NULL)
			continue;
		if (norphans == orphan_cap) {
			size_t cap = orphan_cap ? orphan_cap * 2 : 4096;
			struct obj *nv = realloc(orphans, cap * sizeof *nv);
			if (nv == NULL) {
				pthread_mutex_unlock(&orphan_lock);
				failure(w, "out of memory for the orphan pool");
				return;
			}
			orphans = nv;
			orphan_cap = cap;
		}
		orphans[norphans++] = w->live[i];
		w->live[i].p = NULL;
	}
	pthread_mutex_unlock(&orphan_lock);
}

static void *worker_main(void *arg);

static struct worker *worker_new(unsigned id, unsigned long remaining)
{
	struct worker *w = calloc(1, sizeof *w + run->live * sizeof w->live[0]);
	if (w == NULL)
		return NULL;
	w->id = id;
	w->slot = (id - run->id_base) % run->slots;
	w->generation = (id - run->id_base) / run->slots;
	w->remaining = remaining;
	w->budget = plan_ops(id, remaining);
	w->rng = thread_rng(id, 0);
	w->next_tag = (uint32_t)id << 24;
	return w;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	for (w->op = 0; w->op < w->budget && !stopping(); w->op++) {
		struct obj *o = &w->live[rng_below(&w->rng, run->live)];
		uint64_t r = rng_below(&w->rng, 100);
		bool ok;
		if (r < 40)
			ok = o->p ? op_free(w, o) : op_alloc(w, o);
		else if (r < 55)
			ok = o->p ? op_realloc(w, o) : op_alloc(w, o);
		else if (r < 70)
			ok = o->p ? op_give(w, o) : op_alloc(w, o);
		else if (r < 85)
			ok = o->p ? obj_check(w, o, "periodic check") : op_take(w, o);
		else
			ok = o->p ? obj_check(w, o, "periodic check") : op_alloc(w, o);
		if (ok && w->op % CHECK_EVERY == CHECK_EVERY - 1)
			ok = check_own(w);
		if (!ok)
			break;
	}
	worker_orphan_all(w);
	__atomic_fetch_add(&total_nontiny, w->nontiny, __ATOMIC_RELAXED);
	__atomic_fetch_add(&total_tiny, w->tiny, __ATOMIC_RELAXED);
	__atomic_fetch_add(&total_ops, w->op, __ATOMIC_RELAXED);
	/* Ended early: a successor takes over the slot's remaining work, and will meet this thread's
	 * spans in mcentral. The main thread joins it through w->successor. */
	unsigned long left = w->remaining - w->budget;
	if (left > 0 && !stopping() && only_thread < 0) {
		struct worker *s = worker_new(w->id + run->slots, left);
		if (s == NULL || pthread_create(&w->successor, NULL, worker_main, s) != 0) {
			free(s);
			failure(w, "cannot start a successor thread");
		} else {
			w->has_successor = true;
		}
	}
	return w;
}

/* ---- the test ---------------------------------------------------------------------------- */

/* Ops left for the worker slot of thread id once its predecessors have run: replays their plans. */
static unsigned long remaining_for(unsigned id)
{
	unsigned long rem = run->nops;
	for (unsigned i = run->id_base + (id - run->id_base) % run->slots; i < id; i += run->slots)
		rem -= plan_ops(i, rem);
	return rem;
}

/* Does thread id belong to run r? */
static bool run_has(const struct run *r, long id)
{
	return id >= (long)r->id_base && (id - (long)r->id_base) / r->slots < MAX_GENERATIONS;
}

static void run_workers(const struct run *r)
{
	run = r;
	failed = 0;
	total_nontiny = total_tiny = total_ops = 0;
	if (only_thread >= 0 && !run_has(r, only_thread)) {
		printf("stress_alloc: %s: thread %ld is not in this run\n", r->name, only_thread);
		return;
	}
	struct cgc_stats st0, st;
	cgc_get_stats(&st0);
	unsigned tiny_class = size_to_class(TINY_SIZE);
	size_t nspans0[2] = {mheap.nspans[SPC(tiny_class, 0)], mheap.nspans[SPC(tiny_class, 1)]};
	unsigned first = only_thread >= 0 ? (unsigned)only_thread : r->id_base;
	unsigned count = only_thread >= 0 ? 1 : r->slots;
	if (only_thread >= 0)
		printf("stress_alloc: %s: thread %ld alone (STRESS_THREAD), %lu ops%s\n", r->name,
		       only_thread, plan_ops(first, remaining_for(first)),
		       remaining_for(first) ? "" : ": it never runs with this seed");
	pthread_t *tids = calloc(count, sizeof *tids);
	ck_assert_ptr_nonnull(tids);
	for (unsigned i = 0; i < count; i++) {
		unsigned id = first + i;
		struct worker *w = worker_new(id, remaining_for(id));
		ck_assert_ptr_nonnull(w);
		ck_assert_int_eq(pthread_create(&tids[i], NULL, worker_main, w), 0);
	}
	unsigned nworkers = 0;
	for (unsigned i = 0; i < count; i++) {
		pthread_t t = tids[i];
		for (;;) {
			void *ret;
			pthread_join(t, &ret);
			struct worker *w = ret;
			nworkers++;
			bool more = w->has_successor;
			t = w->successor;
			free(w);
			if (!more)
				break;
		}
	}
	free(tids);
	if (failed)
		ck_abort_msg("%s", fail_msg);

	/* Everything still live is in the exchange or the orphan pool: check it all, then free it. */
	for (unsigned i = 0; i < XCHG_SLOTS; i++) {
		if (xchg[i].p == NULL)
			continue;
		if (norphans == orphan_cap) {
			orphan_cap = orphan_cap ? orphan_cap * 2 : 64;
			orphans = realloc(orphans, orphan_cap * sizeof *orphans);
			ck_assert_ptr_nonnull(orphans);
		}
		orphans[norphans++] = xchg[i];
		xchg[i].p = NULL;
	}
	struct worker mainw = {.id = UINT32_MAX, .rng = thread_rng(UINT32_MAX, 2)};
	bool ok = check_disjoint(&mainw, orphans, norphans, "at the end");
	for (size_t i = 0; ok && i < norphans; i++)
		ok = op_free(&mainw, &orphans[i]);
	if (!ok)
		ck_abort_msg("%s", fail_msg);
	printf("stress_alloc: %s: %u workers, %u threads, %llu ops, %llu objects, %llu tiny; %zu live"
	       " at the end\n", r->name, count, nworkers, (unsigned long long)total_ops,
	       (unsigned long long)total_nontiny, (unsigned long long)total_tiny, norphans);
	free(orphans);
	orphans = NULL;
	norphans = orphan_cap = 0;

	/* Accounting: every object that is not tiny was freed, and tiny frees do nothing, so what is
	 * left is the tiny blocks (16-byte class), at most one per tiny request. */
	cgc_get_stats(&st);
	uint64_t blocks = 0;
	for (unsigned c = 1; c < CGC_NUM_CLASSES; c++) {
		uint64_t live = (st.classes[c].nmalloc - st.classes[c].nfree) -
				(st0.classes[c].nmalloc - st0.classes[c].nfree);
		if (c == tiny_class)
			blocks = live;
		else
			ck_assert_msg(live == 0, "seed %llu: %llu objects of class %u (%zu bytes) are still"
				      " live after everything was freed", (unsigned long long)seed,
				      (unsigned long long)live, c, st.classes[c].size);
	}
	ck_assert_msg(blocks <= total_tiny, "seed %llu: %llu tiny blocks for %llu tiny requests",
		      (unsigned long long)seed, (unsigned long long)blocks, (unsigned long long)total_tiny);
	ck_assert_msg(total_tiny == 0 || blocks > 0, "seed %llu: %llu tiny requests, no tiny block",
		      (unsigned long long)seed, (unsigned long long)total_tiny);
	ck_assert_uint_eq(st.tiny_allocs - st0.tiny_allocs, total_tiny);
	ck_assert_uint_eq(st.objects - st0.objects, blocks);
	ck_assert_uint_eq(st.nmalloc - st0.nmalloc, total_nontiny + blocks);
	ck_assert_uint_eq(st.nfree - st0.nfree, total_nontiny);
	ck_assert_uint_eq(st.large_nmalloc - st0.large_nmalloc, st.large_nfree - st0.large_nfree);
	ck_assert_uint_eq(st.large_inuse, st0.large_inuse);

	/* Spans: every worker has ended, so mcentral holds all their spans, and a span whose last
	 * object was freed there went back to the page heap. Only tiny spans may remain. The main
	 * thread never allocated here, so it owns none. */
	for (unsigned c = 1; c < CGC_NUM_CLASSES; c++)
		if (c != tiny_class)
			ck_assert_msg(st.classes[c].spans == st0.classes[c].spans,
				      "seed %llu: class %u (%zu bytes) holds %zu spans (%zu before) with no live"
				      " object", (unsigned long long)seed, c, st.classes[c].size,
				      st.classes[c].spans, st0.classes[c].spans);
	for (int noscan = 0; noscan < 2; noscan++)
		ck_assert_msg(mheap.nspans[SPC(tiny_class, noscan)] == nspans0[noscan],
			      "seed %llu: %zu spans of %u-byte %s objects with no live object",
			      (unsigned long long)seed, mheap.nspans[SPC(tiny_class, noscan)],
			      (unsigned)sc_size[tiny_class], noscan ? "atomic" : "scanned");
	mheap_validate();
}

START_TEST(test_stress)
{
	run_workers(&runs[0]);
}
END_TEST

START_TEST(test_many_threads)
{
	run_workers(&runs[1]);
}
END_TEST

static Suite *stress_suite(void)
{
	Suite *s = suite_create("stress_alloc");
	TCase *tc = tcase_create("threads");
	tcase_set_timeout(tc, test_timeout(120));
	tcase_add_test(tc, test_stress);
	tcase_add_test(tc, test_many_threads);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	/* These tests exercise the allocator alone and keep objects where the collector does not
	 * look (glibc-malloc'd tables): collection stays off. tests/check_gc.c tests the collector. */
	cgc_set_percent(-1);
	seed = test_seed("stress_alloc");
	const char *e = getenv("STRESS_THREADS");
	unsigned nthreads = e && atoi(e) > 0 ? (unsigned)atoi(e) : 4;
	e = getenv("STRESS_MANY");
	unsigned many = e && atoi(e) > 0 ? (unsigned)atoi(e) : 32;
	double ops = 300000 * test_scale();
	unsigned long nops = ops < 10 ? 10 : (unsigned long)ops;
	runs[0] = (struct run){"threads", nthreads, nops, MAX_LIVE, 0};
	runs[1] = (struct run){"many threads", many, nops / 10, MAX_LIVE / 4, MANY_ID_BASE};
	e = getenv("STRESS_THREAD");
	if (e && *e)
		only_thread = atol(e);
	printf("stress_alloc: %u threads x %lu ops, then %u threads x %lu ops\n", nthreads, nops, many,
	       nops / 10);
	fflush(stdout);
	SRunner *sr = srunner_create(stress_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed_tests = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed_tests ? 1 : 0;
}
