/* gcbench.c - the binary-tree collector benchmark (after Ellis, Kovac and Boehm's GCBench): cgc, bdwgc, malloc.
 * One source, four builds (-DUSE_CGC, -DUSE_CGC_BARRIER, -DUSE_BDWGC, -DUSE_MALLOC); bench/README.md
 * explains the workload. */
#define _GNU_SOURCE /* RTLD_DEFAULT */

#include <dlfcn.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"

#if defined(USE_CGC) + defined(USE_CGC_BARRIER) + defined(USE_BDWGC) + defined(USE_MALLOC) != 1
#error "define exactly one of USE_CGC, USE_CGC_BARRIER, USE_BDWGC, USE_MALLOC"
#endif

/* The collectors never free: a tree dies when the last pointer to it is overwritten. malloc
 * frees every short-lived tree as soon as it is built, which is what a C program would do. */
#if defined(USE_CGC) || defined(USE_CGC_BARRIER)
#include <cgc.h>
#define IS_CGC 1
#define bench_alloc(n) cgc_malloc(n)
#define bench_alloc_atomic(n) cgc_malloc_atomic(n)
#define ALLOCATOR_NAME "cgc"
#elif defined(USE_BDWGC)
#include <gc.h>
#define bench_alloc(n) GC_MALLOC(n)
#define bench_alloc_atomic(n) GC_MALLOC_ATOMIC(n)
#define ALLOCATOR_NAME "bdwgc"
#else
#define bench_alloc(n) malloc(n)
#define bench_alloc_atomic(n) malloc(n)
#define FREES_TREES 1
#endif

#ifndef FREES_TREES
#define FREES_TREES 0
#endif

/* Every store of a pointer into a node goes through store_ptr. The barrier build routes them
 * through CGC_WRITE and promises so (cgc_set_barrier(1) in main); the others store plainly.
 * Stores into locals need no barrier: the stack is not heap. */
#if defined(USE_CGC_BARRIER)
#include <cgc_barrier.h>
#define store_ptr(lvalue, value) CGC_WRITE(lvalue, value)
#else
#define store_ptr(lvalue, value) ((void)((lvalue) = (value)))
#endif

#define MIN_TREE_DEPTH 4
#define MAX_LIVE_DEPTH 28
#define DEFAULT_LIVE_DEPTH 22
/* The long-lived array of doubles: 500,000 of them, as in the original (4 MB, never scanned). */
#define ARRAY_SIZE 500000

/* The original's node: two children and two integers, 24 bytes on a 64-bit machine. */
struct node {
	struct node *left;
	struct node *right;
	int i, j;
};

/* A counter for timing single allocations. rdtsc is a few nanoseconds and runs at a constant
 * rate on the machines we measure on (constant_tsc); it is converted to ns once, at the end,
 * against CLOCK_MONOTONIC over the whole run. Elsewhere the monotonic clock serves directly. */
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
static inline uint64_t ticks(void)
{
	return __rdtsc();
}
#else
static inline uint64_t ticks(void)
{
	return now_ns();
}
#endif

static int time_allocs;      /* -l: time every allocation */
static uint64_t worst_ticks; /* longest single allocation seen, in ticks */
static uint64_t nallocs;     /* allocations made, every kind */

/* -l also says what the slow allocations (over 1 ms) were waiting for, from the thread's own
 * counters (RUSAGE_THREAD), read every SAMPLE_EVERY allocations and again after each slow one: a
 * slow allocation with an involuntary context switch was preempted (the kernel ran something
 * else on its CPU), one with a voluntary switch blocked (a lock, a condition variable, a stop of
 * the world, a page fault waiting for the address space's lock), one with page faults and
 * neither was the kernel's page work itself. The counts between samples include up to
 * SAMPLE_EVERY fast allocations, which hardly ever switch or fault. */
#define SAMPLE_EVERY 1024
#define NOINLINE __attribute__((noinline))
#define unlikely(x) __builtin_expect(!!(x), 0)
static uint64_t slow_ticks;       /* 1 ms in ticks, set when -l is given */
static struct rusage last_ru;     /* the latest sample */
static uint64_t since_sample;
static uint64_t slow_allocs, slow_preempted, slow_blocked, slow_faulted_only;
static long worst_nivcsw, worst_nvcsw, worst_minflt; /* of the worst allocation's sample */

static void sample_thread(struct rusage *ru)
{
	getrusage(RUSAGE_THREAD, ru);
}

static NOINLINE void note_slow_alloc(uint64_t dt)
{
	struct rusage ru;
	sample_thread(&ru);
	long niv = ru.ru_nivcsw - last_ru.ru_nivcsw, nv = ru.ru_nvcsw - last_ru.ru_nvcsw;
	long flt = ru.ru_minflt - last_ru.ru_minflt;
	last_ru = ru;
	since_sample = 0;
	slow_allocs++;
	if (niv)
		slow_preempted++;
	if (nv)
		slow_blocked++;
	if (!niv && !nv && flt)
		slow_faulted_only++;
	if (dt >= worst_ticks) {
		worst_nivcsw = niv;
		worst_nvcsw = nv;
		worst_minflt = flt;
	}
}

/* bdwgc's own pauses. Its API in Debian 12 (8.2) has no pause statistics, only the total time of
 * full collections in ms; but it announces the stop and the restart of the world to a callback,
 * which runs in the collecting thread, with the world stopped in between and the allocation lock
 * held throughout, so plain variables do. A pause is PRE_STOP_WORLD to POST_START_WORLD: the time
 * the program's threads cannot run, as cgc's pause_max_ns counts it (the collecting thread's own
 * allocation may take longer: -l shows that). */
#if defined(USE_BDWGC)
static uint64_t bdw_stop_ns;      /* when the current stop began; 0 outside one */
static uint64_t bdw_pause_max_ns; /* longest stop */
static uint64_t bdw_pause_total_ns;
static uint64_t bdw_stops;

static void GC_CALLBACK bdw_on_event(GC_EventType e)
{
	if (e == GC_EVENT_PRE_STOP_WORLD) {
		bdw_stop_ns = now_ns();
	} else if (e == GC_EVENT_POST_START_WORLD && bdw_stop_ns) {
		uint64_t dt = now_ns() - bdw_stop_ns;
		bdw_stop_ns = 0;
		bdw_stops++;
		bdw_pause_total_ns += dt;
		if (dt > bdw_pause_max_ns)
			bdw_pause_max_ns = dt;
	}
}
#endif

static void out_of_memory(void)
{
	fprintf(stderr, "gcbench: out of memory after %" PRIu64 " allocations\n", nallocs);
	exit(1);
}

/* Every node comes through here, so with -l every allocation is timed the same way whatever
 * the allocator: a collection that runs inside an allocation shows up as that allocation's
 * time. The two counter reads cost about as much as a fast allocation (15 ns a pair on the
 * project's machine), so the run that is timed as a whole is a separate one without -l; the
 * test of the flag costs nothing measurable (it always goes the same way). */
static inline struct node *new_node(struct node *left, struct node *right)
{
	struct node *n;
	if (time_allocs) {
		uint64_t t0 = ticks();
		n = bench_alloc(sizeof *n);
		uint64_t dt = ticks() - t0;
		if (unlikely(dt > slow_ticks))
			note_slow_alloc(dt);
		else if (unlikely(++since_sample == SAMPLE_EVERY)) {
			since_sample = 0;
			sample_thread(&last_ru);
		}
		if (dt > worst_ticks)
			worst_ticks = dt;
	} else {
		n = bench_alloc(sizeof *n);
	}
	if (!n)
		out_of_memory();
	nallocs++;
	store_ptr(n->left, left);
	store_ptr(n->right, right);
	n->i = 0;
	n->j = 0;
	return n;
}

/* Nodes in a complete binary tree of the given depth (depth 0 is one node). */
static uint64_t tree_size(int depth)
{
	return (2ull << depth) - 1;
}

/* Top down: the parent exists before its children, which are stored into it afterwards
 * (the pattern that makes a generational collector remember old-to-young pointers). */
static void populate(int depth, struct node *n)
{
	if (depth <= 0)
		return;
	store_ptr(n->left, new_node(NULL, NULL));
	store_ptr(n->right, new_node(NULL, NULL));
	populate(depth - 1, n->left);
	populate(depth - 1, n->right);
}

/* Bottom up: the children exist before their parent, which is made pointing at them. */
static struct node *make_tree(int depth)
{
	if (depth <= 0)
		return new_node(NULL, NULL);
	struct node *left = make_tree(depth - 1);
	struct node *right = make_tree(depth - 1);
	return new_node(left, right);
}

static void drop_tree(struct node *n)
{
#if FREES_TREES
	while (n) {
		drop_tree(n->left);
		struct node *right = n->right;
		free(n);
		n = right;
	}
#else
	(void)n;
#endif
}

static uint64_t count_nodes(const struct node *n)
{
	uint64_t c = 0;
	while (n) {
		c += 1 + count_nodes(n->left);
		n = n->right;
	}
	return c;
}

/* Kept out of line so the tree's root dies with this frame rather than lingering in main's. */
static __attribute__((noinline)) void stretch(int depth)
{
	struct node *t = make_tree(depth);
	drop_tree(t);
}

/* Short-lived trees of one depth, each built and dropped at once; as many as make the same
 * number of nodes at every depth (twice the nodes of a tree of depth work_depth). */
static __attribute__((noinline)) void short_lived(int depth, int work_depth, int verbose)
{
	uint64_t iters = 2 * tree_size(work_depth) / tree_size(depth);
	uint64_t t0 = now_ns();
	for (uint64_t k = 0; k < iters; k++) {
		struct node *t = new_node(NULL, NULL);
		populate(depth, t);
		drop_tree(t);
	}
	uint64_t t1 = now_ns();
	for (uint64_t k = 0; k < iters; k++) {
		struct node *t = make_tree(depth);
		drop_tree(t);
	}
	uint64_t t2 = now_ns();
	if (verbose)
		fprintf(stderr, "gcbench: depth %2d: %" PRIu64 " trees each way, top-down %.3f s, bottom-up %.3f s\n",
			depth, iters, (double)(t1 - t0) / 1e9, (double)(t2 - t1) / 1e9);
}

/* Which malloc is running: mimalloc is only ever here by LD_PRELOAD, so ask the dynamic linker.
 * The runner relies on this to tell a failed preload from a real run. */
static const char *allocator_name(void)
{
#ifdef ALLOCATOR_NAME
	return ALLOCATOR_NAME;
#else
	return dlsym(RTLD_DEFAULT, "mi_version") ? "mimalloc" : "glibc";
#endif
}

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [-d LIVE_DEPTH] [-w WORK_DEPTH] [-l] [-i] [-v]   (%d <= depths <= %d, default -d %d;"
			" -i: bdwgc's incremental mode, bdwgc build only)\n",
		argv0, MIN_TREE_DEPTH, MAX_LIVE_DEPTH, DEFAULT_LIVE_DEPTH);
	exit(2);
}

int main(int argc, char **argv)
{
#if defined(USE_BDWGC)
	GC_INIT();
	GC_set_on_collection_event(bdw_on_event);
#endif
	int depth = DEFAULT_LIVE_DEPTH, work = 0, verbose = 0, incremental = 0, opt;
	while ((opt = getopt(argc, argv, "d:w:liv")) != -1) {
		uint64_t v;
		switch (opt) {
		case 'd':
			if (parse_u64(optarg, &v) || v < MIN_TREE_DEPTH || v > MAX_LIVE_DEPTH)
				usage(argv[0]);
			depth = (int)v;
			break;
		case 'w':
			if (parse_u64(optarg, &v) || v < MIN_TREE_DEPTH + 2 || v > MAX_LIVE_DEPTH)
				usage(argv[0]);
			work = (int)v;
			break;
		case 'l':
			time_allocs = 1;
			break;
		case 'i':
			incremental = 1;
			break;
		case 'v':
			verbose = 1;
			break;
		default:
			usage(argv[0]);
		}
	}
	if (optind != argc)
		usage(argv[0]);

	/* Before the first allocation, as bdwgc asks: mostly-concurrent marking, with dirty bits
	 * from the kernel (soft-dirty or mprotect) standing in for a write barrier. */
#if defined(USE_BDWGC)
	if (incremental)
		GC_enable_incremental();
#else
	if (incremental) {
		fprintf(stderr, "gcbench: -i is bdwgc's incremental mode; this is not the bdwgc build\n");
		usage(argv[0]);
	}
#endif
#if defined(USE_CGC_BARRIER)
	/* The promise: every pointer store into the heap goes through CGC_WRITE (store_ptr). */
	cgc_set_barrier(1);
#endif

	if (time_allocs) {
		/* 1 ms in ticks, from 20 ms of the monotonic clock. */
		uint64_t c0 = now_ns(), k0 = ticks(), c1;
		while ((c1 = now_ns()) - c0 < 20000000u)
			;
		slow_ticks = (ticks() - k0) * 1000000u / (c1 - c0);
		sample_thread(&last_ru);
	}
	uint64_t ns0 = now_ns(), tk0 = ticks();

	/* The shape: by default the short-lived work grows with the live depth (a stretch tree one
	 * deeper than the live one, short-lived trees up to the live depth, 2·N(L) nodes of each
	 * depth). With -w W it is Boehm's original: a stretch tree of depth W, short-lived trees of
	 * depths 4..W-2 with 2·N(W) nodes of each, whatever the live depth (GCBench is -d 16 -w 18):
	 * a large live heap with a fixed, smaller amount of garbage. */
	int stretch_depth = work ? work : depth + 1;
	int max_short = work ? work - 2 : depth;
	int work_depth = work ? work : depth;

	/* The stretch tree sizes the heap before anything lives. */
	stretch(stretch_depth);

	struct node *live = new_node(NULL, NULL);
	populate(depth, live);
	double *array = bench_alloc_atomic(ARRAY_SIZE * sizeof *array);
	if (!array)
		out_of_memory();
	for (int i = 0; i < ARRAY_SIZE; i++)
		array[i] = i ? 1.0 / i : 0.0;

	for (int d = MIN_TREE_DEPTH; d <= max_short; d += 2)
		short_lived(d, work_depth, verbose);

	/* The long-lived structures must have survived every collection untouched. The check is
	 * not timed; for malloc their freeing is, as a program's cleanup would be. */
	uint64_t ns1 = now_ns();
	uint64_t live_nodes = count_nodes(live);
	int ok = live_nodes == tree_size(depth) && array[1000] == 1.0 / 1000 &&
		 array[ARRAY_SIZE - 1] == 1.0 / (ARRAY_SIZE - 1);
	uint64_t ns2 = now_ns();
#if FREES_TREES
	drop_tree(live);
	free(array);
#endif
	uint64_t ns3 = now_ns(), tk3 = ticks();
	if (!ok) {
		fprintf(stderr, "gcbench: the long-lived data did not survive: %" PRIu64 " of %" PRIu64
				" tree nodes, array[1000] = %g\n",
			live_nodes, tree_size(depth), array[1000]);
		return 1;
	}

	uint64_t elapsed = (ns1 - ns0) + (ns3 - ns2);
	double ns_per_tick = (double)(ns3 - ns0) / (double)(tk3 - tk0 ? tk3 - tk0 : 1);
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("gcbench alloc=%s depth=%d work=%d seconds=%.3f maxrss_kb=%ld allocs=%" PRIu64,
	       allocator_name(), depth, work, (double)elapsed / 1e9, ru.ru_maxrss, nallocs);
	if (time_allocs)
		printf(" worst_alloc_ns=%.0f slow_allocs=%" PRIu64 " slow_preempted=%" PRIu64
		       " slow_blocked=%" PRIu64 " slow_faulted_only=%" PRIu64
		       " worst_nivcsw=%ld worst_nvcsw=%ld worst_minflt=%ld",
		       (double)worst_ticks * ns_per_tick, slow_allocs, slow_preempted, slow_blocked,
		       slow_faulted_only, worst_nivcsw, worst_nvcsw, worst_minflt);
	/* max_pause_ns: the collector's longest stop of the world, by its own account; n/a for malloc. */
#if defined(IS_CGC)
	struct cgc_stats s;
	cgc_get_stats(&s);
	printf(" collections=%" PRIu64 " pause_max_ns=%" PRIu64 " pause_total_ns=%" PRIu64
	       " mark_cpu_ns=%" PRIu64 " live_after_mark=%zu",
	       s.collections, s.pause_max_ns, s.pause_total_ns, s.mark_cpu_ns, s.live_after_mark);
#if defined(USE_CGC_BARRIER)
	printf(" barrier=1");
#else
	printf(" barrier=0");
#endif
	printf(" max_pause_ns=%" PRIu64, s.pause_max_ns);
	if (verbose) /* where the resident memory is, at the end */
		fprintf(stderr,
			"gcbench: cgc heap_inuse=%zu heap_spans=%zu heap_free=%zu heap_released=%zu"
			" heap_mapped=%zu meta_mapped=%zu\n",
			s.heap_inuse, s.heap_spans, s.heap_free, s.heap_released, s.heap_mapped, s.meta_mapped);
#elif defined(USE_BDWGC)
	printf(" collections=%" PRIuMAX " incremental=%d stops=%" PRIu64 " pause_max_ns=%" PRIu64
	       " pause_total_ns=%" PRIu64 " max_pause_ns=%" PRIu64,
	       (uintmax_t)GC_get_gc_no(), GC_is_incremental_mode(), bdw_stops, bdw_pause_max_ns,
	       bdw_pause_total_ns, bdw_pause_max_ns);
#else
	printf(" max_pause_ns=n/a");
#endif
	printf("\n");
	return 0;
}
