/* markrate.c - how fast cgc marks, and how long it pauses, at a given live heap size.
 * Builds a random graph of N MB of mixed-size cgc objects, all live, and collects a few times; see bench/README.md. */
#define _GNU_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */

#include <cgc.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "benchutil.h"

#define DEFAULT_HEAP_MB 260
#define DEFAULT_CYCLES 5
#define MAX_CYCLES 100
#define DEFAULT_SEED 0x5DEECE66Dull
#define SMALL_MAX 32768        /* largest small size class */
#define LARGE_MAX (256 * 1024) /* largest object asked for */
#define CHILD_SLOTS 4          /* leading words of an object that hold its tree children */
#define MB (1024.0 * 1024.0)

/* One object of the graph. The table lives in anonymous mmap memory, which the collector does
 * not scan: the graph alone must keep every object alive, and after the collections the table
 * tells whether it did. */
struct obj {
	uintptr_t *base;
	size_t words; /* usable size in words */
};

/* The graph's single root: in the executable's bss, which the collector scans. */
static void *volatile root;

static inline uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

/* Log-uniform in [lo, hi]: a power of two uniformly, then uniformly inside its octave. */
static size_t octave_draw(uint64_t *rng, size_t lo, size_t hi)
{
	unsigned lo_bit = 63 - (unsigned)__builtin_clzll(lo);
	unsigned hi_bit = 63 - (unsigned)__builtin_clzll(hi - 1);
	unsigned b = lo_bit + (unsigned)(xorshift64(rng) % (hi_bit - lo_bit + 1));
	size_t n = ((size_t)1 << b) + (size_t)(xorshift64(rng) % ((size_t)1 << b));
	return n < lo ? lo : n > hi ? hi : n;
}

/* The size mix of bench/lookup.c: by count 93% of 8..256 bytes, 6.5% up to 32 KiB, 0.5% large;
 * by bytes about 10% / 40% / 50%. */
static size_t draw_size(uint64_t *rng)
{
	uint64_t r = xorshift64(rng) % 1000;
	if (r < 930)
		return 8 + (size_t)(xorshift64(rng) % (256 - 8 + 1));
	if (r < 995)
		return octave_draw(rng, 257, SMALL_MAX);
	return octave_draw(rng, SMALL_MAX + 1, LARGE_MAX);
}

static void *map_table(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		perror("markrate: mmap");
		exit(1);
	}
	return p;
}

/* Allocates objects until their usable sizes add up to heap_bytes, then wires them into a graph:
 * a tree over a random order of the objects (breadth first, up to CHILD_SLOTS children each, so
 * it is shallow and marks in parallel, and each edge jumps to a random address), plus random
 * cross edges, a quarter of the remaining words, most of them interior pointers. The other words
 * are 32-bit integers, which never look like heap addresses. The collector is off meanwhile: until
 * it is wired up, an object is referenced only from the table, which is not scanned. */
static struct obj *build_graph(size_t heap_bytes, uint64_t seed, size_t *nobjs, size_t *bytes)
{
	/* An upper bound on the count (every object at least 8 bytes); only what is used is touched. */
	size_t cap = heap_bytes / 8 + 1;
	struct obj *o = map_table(cap * sizeof *o);
	uint64_t rng = seed;
	size_t n = 0, total = 0;
	while (total < heap_bytes) {
		size_t size = draw_size(&rng);
		uintptr_t *p = cgc_malloc(size);
		if (!p) {
			fprintf(stderr, "markrate: out of memory after %zu objects\n", n);
			exit(1);
		}
		size_t usable = cgc_usable_size(p);
		o[n].base = p;
		o[n].words = usable / sizeof(uintptr_t);
		total += usable;
		n++;
	}

	for (size_t i = 0; i < n; i++) {
		for (size_t w = CHILD_SLOTS; w < o[i].words; w++) {
			uint64_t r = xorshift64(&rng);
			if (r % 4 == 0) {
				const struct obj *t = &o[(r >> 8) % n];
				o[i].base[w] = (uintptr_t)(t->base + (r >> 40) % t->words);
			} else {
				o[i].base[w] = (uint32_t)(r >> 16);
			}
		}
	}

	uint32_t *order = map_table(n * sizeof *order);
	for (size_t i = 0; i < n; i++)
		order[i] = (uint32_t)i;
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = xorshift64(&rng) % (i + 1);
		uint32_t t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	/* order[0] is the root; each later object becomes the child of the earliest one in the order
	 * that still has a free child slot. Every object has at least one slot, so a parent always
	 * comes before its child. */
	size_t parent = 0, slot = 0;
	for (size_t k = 1; k < n; k++) {
		while (slot == CHILD_SLOTS || slot == o[order[parent]].words) {
			parent++;
			slot = 0;
		}
		o[order[parent]].base[slot++] = (uintptr_t)o[order[k]].base;
	}
	root = o[order[0]].base;
	munmap(order, n * sizeof *order);

	*nobjs = n;
	*bytes = total;
	return o;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t median_u64(uint64_t *v, size_t n)
{
	qsort(v, n, sizeof *v, cmp_u64);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [-m HEAP_MB] [-n CYCLES] [-s SEED]   (defaults %d MB, %d cycles, 1 <= CYCLES <= %d)\n",
		argv0, DEFAULT_HEAP_MB, DEFAULT_CYCLES, MAX_CYCLES);
	exit(2);
}

int main(int argc, char **argv)
{
	uint64_t heap_mb = DEFAULT_HEAP_MB, cycles = DEFAULT_CYCLES, seed = DEFAULT_SEED;
	int opt;
	while ((opt = getopt(argc, argv, "m:n:s:")) != -1) {
		switch (opt) {
		case 'm':
			if (parse_u64(optarg, &heap_mb) || heap_mb > (1u << 20))
				usage(argv[0]);
			break;
		case 'n':
			if (parse_u64(optarg, &cycles) || cycles > MAX_CYCLES)
				usage(argv[0]);
			break;
		case 's':
			if (parse_u64(optarg, &seed))
				usage(argv[0]);
			break;
		default:
			usage(argv[0]);
		}
	}
	if (optind != argc)
		usage(argv[0]);

	int percent = cgc_set_percent(-1);
	size_t nobjs, bytes;
	uint64_t t0 = now_ns();
	struct obj *o = build_graph((size_t)heap_mb << 20, seed, &nobjs, &bytes);
	uint64_t t1 = now_ns();
	cgc_set_percent(percent);
	/* Replay a run with -s: the seed decides the sizes and the whole graph. */
	fprintf(stderr, "markrate: seed %" PRIu64 ": %zu objects, %.1f MB, built in %.2f s\n", seed, nobjs,
		(double)bytes / MB, (double)(t1 - t0) / 1e9);

	uint64_t rate[MAX_CYCLES], pause[MAX_CYCLES], wall[MAX_CYCLES];
	struct cgc_stats before, after;
	size_t live = 0;
	for (uint64_t c = 0; c < cycles; c++) {
		cgc_get_stats(&before);
		uint64_t w0 = now_ns();
		cgc_collect();
		wall[c] = now_ns() - w0;
		cgc_get_stats(&after);
		uint64_t cpu = after.mark_cpu_ns - before.mark_cpu_ns;
		live = after.live_after_mark;
		/* MB per CPU second: mark_cpu_ns adds up every worker, so this is the rate of one. */
		rate[c] = cpu ? (uint64_t)((double)live / MB / ((double)cpu / 1e9)) : 0;
		pause[c] = after.pause_last_ns;
		if (after.collections != before.collections + 1)
			fprintf(stderr, "markrate: cgc_collect ran %" PRIu64 " cycles, not 1: the rate is off\n",
				after.collections - before.collections);
	}

	/* Everything was reachable: after the collections every object must still be allocated. */
	for (size_t i = 0; i < nobjs; i++) {
		if (cgc_base(o[i].base) != o[i].base) {
			fprintf(stderr, "markrate: seed %" PRIu64 ": object %zu of %zu (%p, %zu bytes) was reclaimed though reachable\n",
				seed, i, nobjs, (void *)o[i].base, o[i].words * sizeof(uintptr_t));
			return 1;
		}
	}
	if (live < bytes)
		fprintf(stderr, "markrate: the collector marked %zu bytes, less than the %zu bytes live\n", live, bytes);

	uint64_t pause_max = after.pause_max_ns, pause_last = after.pause_last_ns;
	printf("markrate heap_mb=%" PRIu64 " objects=%zu live_bytes=%zu live_after_mark=%zu cycles=%" PRIu64
	       " mark_mb_per_s_per_worker=%" PRIu64 " pause_median_ns=%" PRIu64 " pause_max_ns=%" PRIu64
	       " pause_last_ns=%" PRIu64 " collect_median_ns=%" PRIu64 "\n",
	       heap_mb, nobjs, bytes, live, cycles, median_u64(rate, cycles), median_u64(pause, cycles),
	       pause_max, pause_last, median_u64(wall, cycles));
	return 0;
}
