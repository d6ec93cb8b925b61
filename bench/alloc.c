/* alloc.c - allocation throughput benchmark: cgc against malloc implementations and bdwgc.
 * One source, six builds (-DUSE_MALLOC, -DUSE_CALLOC, -DUSE_CGC, -DUSE_CGC_ATOMIC, -DUSE_CGC_GC,
 * -DUSE_BDWGC); bench/README.md explains the workload. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "benchutil.h"

#if defined(USE_MALLOC) + defined(USE_CALLOC) + defined(USE_CGC) + defined(USE_CGC_ATOMIC) + \
	defined(USE_CGC_GC) + defined(USE_BDWGC) != 1
#error "define exactly one of USE_MALLOC, USE_CALLOC, USE_CGC, USE_CGC_ATOMIC, USE_CGC_GC, USE_BDWGC"
#endif

/* Two kinds of allocation are compared, each with its own kind: zeroed memory (calloc, cgc_malloc,
 * GC_MALLOC) and memory with old contents (malloc, cgc_malloc_atomic). */
#if defined(USE_CGC)
#include <cgc.h>
#define bench_alloc(n) cgc_malloc(n)
#define bench_free(p) cgc_free(p)
#elif defined(USE_CGC_ATOMIC)
#include <cgc.h>
#define bench_alloc(n) cgc_malloc_atomic(n)
#define bench_free(p) cgc_free(p)
/* The ring holds pointers: it must come from scanned memory once the collector runs. */
#define bench_alloc_ring(n) cgc_malloc(n)
#elif defined(USE_CGC_GC)
#include <cgc.h>
#define bench_alloc(n) cgc_malloc(n)
/* As bdwgc below: nothing is freed, the collector finds the overwritten slot's object dead. */
#define bench_free(p) ((void)(p))
#elif defined(USE_CALLOC)
#define bench_alloc(n) calloc(1, n)
#define bench_free(p) free(p)
#elif defined(USE_BDWGC)
/* GC_THREADS makes gc.h redirect pthread_create to GC_pthread_create, so the
 * worker threads are registered and their stacks scanned. */
#define GC_THREADS
#include <gc.h>
#define bench_alloc(n) GC_MALLOC(n)
/* A collector with no free: dropping the last reference is how an object dies. */
#define bench_free(p) ((void)(p))
#else
#define bench_alloc(n) malloc(n)
#define bench_free(p) free(p)
#endif

#ifndef bench_alloc_ring
#define bench_alloc_ring(n) bench_alloc(n)
#endif

/* Live objects each thread holds at any time; every allocation replaces the oldest. */
#ifndef WINDOW
#define WINDOW 10000
#endif
#define MIN_SIZE 8
#define MAX_SIZE 256
#define DEFAULT_TOTAL 20000000ull
#define MAX_THREADS 64

struct worker {
	pthread_t tid;
	unsigned index;
	uint64_t nallocs;     /* allocations this thread makes */
	pthread_barrier_t *start;
	uint64_t checksum;    /* kept so the writes into objects are observable */
	uint64_t t_start;     /* CLOCK_MONOTONIC ns when this thread began allocating */
	uint64_t t_end;       /* ... and when it had freed its last object */
};

/* xorshift64: cheap enough that the generator does not dominate an 8-byte allocation. */
static inline uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	/* Fixed per-thread seed, never zero: every run replays the same size sequence. */
	uint64_t rng = 0x9E3779B97F4A7C15ull * (w->index + 1);
	uint64_t sum = 0;

	/* The ring comes from the allocator under test: a collector must see it (it is
	 * reachable from this stack) or it would reclaim the window behind our back. */
	unsigned char **ring = bench_alloc_ring(WINDOW * sizeof *ring);
	if (!ring) {
		fprintf(stderr, "alloc: cannot allocate the ring\n");
		exit(1);
	}
	for (size_t i = 0; i < WINDOW; i++)
		ring[i] = NULL;

	pthread_barrier_wait(w->start);
	/* Each thread reads the clock itself: with more threads than idle cores, main may not
	 * run again until the workers are done, so a clock read by main would miss their work. */
	w->t_start = now_ns();

	size_t slot = 0;
	for (uint64_t i = 0; i < w->nallocs; i++) {
		uint64_t r = xorshift64(&rng);
		size_t n = MIN_SIZE + (size_t)(r % (MAX_SIZE - MIN_SIZE + 1));
		/* The first WINDOW steps find an empty slot: the ring is filling up. */
		if (ring[slot])
			bench_free(ring[slot]);
		unsigned char *p = bench_alloc(n);
		if (!p) {
			fprintf(stderr, "alloc: out of memory after %" PRIu64 " allocations\n", i);
			exit(1);
		}
		/* Touch both ends so a lazily mapped page is really faulted in. */
		p[0] = (unsigned char)r;
		p[n - 1] = (unsigned char)(r >> 8);
		sum += p[0];
		ring[slot] = p;
		if (++slot == WINDOW)
			slot = 0;
	}

	/* Drain inside the timed region: every allocation counted is paired with its free. */
	for (size_t i = 0; i < WINDOW; i++) {
		if (ring[i])
			bench_free(ring[i]);
		ring[i] = NULL;
	}
	bench_free(ring);
	w->t_end = now_ns();
	w->checksum = sum;
	return NULL;
}

/* Where the checksum goes, so the compiler must keep the writes into the objects. */
static volatile uint64_t sink;

int main(int argc, char **argv)
{
#if defined(USE_BDWGC)
	GC_INIT();
#endif
	uint64_t nthreads, total = DEFAULT_TOTAL;
	if (argc < 2 || argc > 3 || parse_u64(argv[1], &nthreads) || nthreads > MAX_THREADS ||
	    (argc == 3 && parse_u64(argv[2], &total))) {
		fprintf(stderr, "usage: %s THREADS [TOTAL_ALLOCS]   (1 <= THREADS <= %d)\n", argv[0],
			MAX_THREADS);
		return 2;
	}

	struct worker w[MAX_THREADS];
	pthread_barrier_t start;
	/* Every thread has set itself up (its ring) before any starts: setup is not timed. */
	pthread_barrier_init(&start, NULL, (unsigned)nthreads);
	for (unsigned i = 0; i < nthreads; i++) {
		w[i].index = i;
		w[i].nallocs = total / nthreads + (i == 0 ? total % nthreads : 0);
		w[i].start = &start;
		w[i].checksum = 0;
		int err = pthread_create(&w[i].tid, NULL, worker_main, &w[i]);
		if (err) {
			fprintf(stderr, "alloc: pthread_create failed (%d)\n", err);
			return 1;
		}
	}

	uint64_t checksum = 0, t0 = UINT64_MAX, t1 = 0;
	for (unsigned i = 0; i < nthreads; i++) {
		pthread_join(w[i].tid, NULL);
		checksum += w[i].checksum;
		if (w[i].t_start < t0)
			t0 = w[i].t_start;
		if (w[i].t_end > t1)
			t1 = w[i].t_end;
	}
	/* From the first thread's start to the last one's end: the wall time of the whole job. */
	uint64_t elapsed = t1 - t0;
	pthread_barrier_destroy(&start);

	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	/* Wall time over all allocations: with two threads this is throughput, not latency. */
	printf("alloc threads=%" PRIu64 " ns_per_op=%.2f seconds=%.3f maxrss_kb=%ld\n", nthreads,
	       (double)elapsed / (double)total, (double)elapsed / 1e9, ru.ru_maxrss);
	sink = checksum;
	return 0;
}
