/* lookup.c - benchmark of cgc_base, the pointer-to-object lookup a conservative scan does per word.
 * Fills ~200 MB of mixed-size cgc objects, then times cgc_base over 10M candidate words; see bench/README.md. */
#define _POSIX_C_SOURCE 200809L

#include <cgc.h>
#include <errno.h>
#ifdef CGC_INTERNAL
/* Built inside the tree (bench/lookup_inline): time the collector's own inline lookup,
 * object_find, instead of the exported cgc_base behind a PLT call. */
#include "alloc/alloc.h"
static inline uintptr_t lookup_word(uintptr_t w)
{
	span_t *s;
	size_t idx;
	return object_find(w, &s, &idx);
}
#define LOOKUP_NAME "object_find (inline)"
#else
static inline uintptr_t lookup_word(uintptr_t w)
{
	return (uintptr_t)cgc_base((const void *)w);
}
#define LOOKUP_NAME "cgc_base"
#endif
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "benchutil.h"

#define DEFAULT_HEAP_MB 200
#define DEFAULT_WORDS 10000000ull
#define SMALL_MAX 32768            /* largest small size class */
#define LARGE_MAX (256 * 1024)     /* largest object the setup asks for */
#define PASSES 3                   /* best of PASSES, for a noisy machine */

/* Objects under test: bases and requested sizes, in allocation order. */
static void **objs;
static size_t *sizes;
static size_t nobjs;

/* Both loops write here, so neither can be optimized away. */
static volatile uintptr_t sink;

static inline uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

/* Log-uniform in [lo, hi]: each size class gets a comparable number of objects,
 * where a uniform draw would put nearly all of them in the top few classes. */
static size_t log_uniform(uint64_t *rng, size_t lo, size_t hi)
{
	unsigned lo_bits = 63 - (unsigned)__builtin_clzll(lo);
	/* hi - 1: when hi is a power of two its own octave would be all clamped to hi. */
	unsigned hi_bits = 63 - (unsigned)__builtin_clzll(hi - 1);
	unsigned b = lo_bits + (unsigned)(xorshift64(rng) % (hi_bits - lo_bits + 1));
	size_t n = ((size_t)1 << b) + (size_t)(xorshift64(rng) % ((size_t)1 << b));
	return n < lo ? lo : n > hi ? hi : n;
}

/* Mostly small objects as a C program has them, some mid-sized, a few large (> 32 KiB).
 * By count 93% / 6.5% / 0.5%, which by bytes is about 10% / 40% / 50%: many small spans
 * for the lookup to tell apart, and large objects still cover half the range. */
static size_t draw_size(uint64_t *rng)
{
	uint64_t r = xorshift64(rng) % 1000;
	if (r < 930)
		return 8 + (size_t)(xorshift64(rng) % (256 - 8 + 1));
	if (r < 995)
		return log_uniform(rng, 257, SMALL_MAX);
	return log_uniform(rng, SMALL_MAX + 1, LARGE_MAX);
}

/* One candidate word. want is the base cgc_base must return, or NULL when the
 * answer is not known in advance (a random word may or may not land in an object). */
struct candidate {
	uintptr_t word;
	void *want;
};

static struct candidate draw_word(uint64_t *rng, uintptr_t lo, uintptr_t hi)
{
	struct candidate c = {0, NULL};
	switch (xorshift64(rng) & 3) {
	case 0:
	case 1: /* inside the heap's range: mostly the hard case, near objects */
		c.word = lo + (uintptr_t)(xorshift64(rng) % (hi - lo));
		break;
	case 2: /* any 64-bit value, as a scan finds in integers and floats */
		c.word = (uintptr_t)xorshift64(rng);
		break;
	default: { /* a real reference: the base or an interior pointer */
		size_t k = (size_t)(xorshift64(rng) % nobjs);
		uintptr_t base = (uintptr_t)objs[k];
		c.word = (xorshift64(rng) & 1) ? base : base + (uintptr_t)(xorshift64(rng) % sizes[k]);
		c.want = objs[k];
		break;
	}
	}
	return c;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (!p) {
		fprintf(stderr, "lookup: out of memory (%zu bytes)\n", n);
		exit(1);
	}
	return p;
}

/* The reference loop: the same loads and bookkeeping as the timed one, without the call.
 * The empty asm hides the value so the loop is neither vectorized nor folded. */
static uint64_t time_empty(const uintptr_t *words, size_t n, uint64_t *hits)
{
	uintptr_t acc = 0;
	uint64_t h = 0;
	uint64_t t0 = now_ns();
	for (size_t i = 0; i < n; i++) {
		uintptr_t w = words[i];
		__asm__ volatile("" : "+r"(w));
		acc += w;
		h += w != 0;
	}
	uint64_t t = now_ns() - t0;
	sink = acc;
	*hits = h;
	return t;
}

static uint64_t time_lookup(const uintptr_t *words, size_t n, uint64_t *hits)
{
	uintptr_t acc = 0;
	uint64_t h = 0;
	uint64_t t0 = now_ns();
	for (size_t i = 0; i < n; i++) {
		uintptr_t b = lookup_word(words[i]);
		acc += b;
		h += b != 0;
	}
	uint64_t t = now_ns() - t0;
	sink = acc;
	*hits = h;
	return t;
}

int main(int argc, char **argv)
{
	uint64_t heap_mb = DEFAULT_HEAP_MB, nwords = DEFAULT_WORDS;
	if (argc > 3 || (argc > 1 && parse_u64(argv[1], &heap_mb)) ||
	    (argc > 2 && parse_u64(argv[2], &nwords))) {
		fprintf(stderr, "usage: %s [HEAP_MB [WORDS]]   (defaults %d, %llu)\n", argv[0],
			DEFAULT_HEAP_MB, DEFAULT_WORDS);
		return 2;
	}
	uint64_t target = heap_mb << 20;

	/* Draw the sizes first, so the array of objects is allocated once at its final size. */
	uint64_t rng = 0x243F6A8885A308D3ull;
	size_t cap = 1 << 16, nbytes = 0;
	sizes = xmalloc(cap * sizeof *sizes);
	while (nbytes < target) {
		if (nobjs == cap) {
			cap *= 2;
			size_t *grown = realloc(sizes, cap * sizeof *sizes);
			if (!grown) {
				fprintf(stderr, "lookup: out of memory\n");
				return 1;
			}
			sizes = grown;
		}
		sizes[nobjs] = draw_size(&rng);
		nbytes += sizes[nobjs++];
	}

	/* The array of objects is itself a scanned cgc object, reachable from a global, so a
	 * collection during the run keeps every object alive. */
	objs = cgc_malloc(nobjs * sizeof *objs);
	if (!objs) {
		fprintf(stderr, "lookup: cgc_malloc failed\n");
		return 1;
	}
	uintptr_t lo = UINTPTR_MAX, hi = 0;
	size_t nlarge = 0;
	for (size_t i = 0; i < nobjs; i++) {
		unsigned char *p = cgc_malloc(sizes[i]);
		if (!p) {
			fprintf(stderr, "lookup: cgc_malloc(%zu) failed\n", sizes[i]);
			return 1;
		}
		p[0] = 1;
		objs[i] = p;
		nlarge += sizes[i] > SMALL_MAX;
		if ((uintptr_t)p < lo)
			lo = (uintptr_t)p;
		if ((uintptr_t)p + sizes[i] > hi)
			hi = (uintptr_t)p + sizes[i];
	}

	/* Words are plain malloc memory: they must not look like roots to the collector. */
	uintptr_t *words = xmalloc(nwords * sizeof *words);
	uint64_t wrng = 0x13198A2E03707344ull;
	uint64_t nknown = 0;
	for (size_t i = 0; i < nwords; i++) {
		struct candidate c = draw_word(&wrng, lo, hi);
		words[i] = c.word;
		nknown += c.want != NULL;
	}

	/* Check before timing: a fast wrong answer is no result. Replaying the seed gives the
	 * expected base of each real reference without storing it. */
	wrng = 0x13198A2E03707344ull;
	for (size_t i = 0; i < nwords; i++) {
		struct candidate c = draw_word(&wrng, lo, hi);
		void *got = cgc_base((const void *)c.word);
		if (c.want && got != c.want) {
			fprintf(stderr, "lookup: cgc_base(%#" PRIxPTR ") = %p, want %p\n", c.word, got,
				c.want);
			return 1;
		}
	}

	uint64_t best_empty = UINT64_MAX, best_lookup = UINT64_MAX, hits = 0, ehits;
	/* Alternate the two loops so drift on a noisy machine hits both alike. */
	for (int pass = 0; pass < PASSES; pass++) {
		uint64_t t = time_empty(words, nwords, &ehits);
		if (t < best_empty)
			best_empty = t;
		t = time_lookup(words, nwords, &hits);
		if (t < best_lookup)
			best_lookup = t;
	}
	double ns = ((double)best_lookup - (double)best_empty) / (double)nwords;

	fprintf(stderr,
		"lookup: %zu objects (%zu large), %.1f MiB requested, range %.1f MiB, %" PRIu64
		" words (%" PRIu64 " real references), empty loop %.2f ns/word\n",
		nobjs, nlarge, (double)nbytes / (1 << 20), (double)(hi - lo) / (1 << 20), nwords,
		nknown, (double)best_empty / (double)nwords);
	printf("lookup fn=%s ns_per_lookup=%.2f hits=%" PRIu64 "\n", LOOKUP_NAME, ns, hits);
	free(words);
	free(sizes);
	return 0;
}
