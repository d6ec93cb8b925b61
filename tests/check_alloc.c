/* tests/check_alloc.c - unit tests of the allocator: spans, the page heap, the span map,
 * tiny blocks, threads, realloc. doc/design/allocator.md describes what is tested here. */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc/alloc.h"
#include "include/cgc.h"
#include "tests/testutil.h"

static struct cgc_stats st;

/* Index of the first byte of p[from, to) that differs from want(i), or -1. Checked in a plain
 * loop and asserted once: every passing ck_assert writes a checkpoint to a file. */
static long first_bad(const unsigned char *p, size_t from, size_t to, int pattern)
{
	for (size_t i = from; i < to; i++)
		if (p[i] != (pattern ? (unsigned char)(i * 7) : 0))
			return (long)i;
	return -1;
}

static uint64_t live_objects(void)
{
	cgc_get_stats(&st);
	return st.objects;
}

/* Every small class, both flavours: alignment, zeroing, usable size, the span's class. */
START_TEST(test_every_class)
{
	for (unsigned cl = 1; cl < NUM_SIZE_CLASSES; cl++) {
		size_t sz = sc_size[cl];
		for (int noscan = 0; noscan < 2; noscan++) {
			if (noscan && sz < TINY_SIZE)
				continue; /* tiny allocator */
			unsigned char *p = noscan ? cgc_malloc_atomic(sz) : cgc_malloc(sz);
			ck_assert_ptr_nonnull(p);
			span_t *s = spanmap_lookup((uintptr_t)p);
			ck_assert_ptr_nonnull(s);
			ck_assert_uint_eq(s->spc, SPC(cl, noscan));
			ck_assert_uint_eq(cgc_usable_size(p), sz);
			size_t align = sz & -sz;
			if (align > 16)
				align = 16;
			ck_assert_uint_eq((uintptr_t)p % align, 0);
			if (!noscan)
				ck_assert_int_eq(first_bad(p, 0, sz, 0), -1);
			memset(p, 0xab, sz);
			cgc_free(p);
			/* The freed slot comes back once the span's free list is used up: zeroed for
			 * cgc_malloc (recycled in a batch, see doc/design/allocator.md 3.3). */
			unsigned nel = sc_nelems[cl];
			unsigned char **held = malloc(sizeof(void *) * (2 * nel + 2));
			unsigned k = 0;
			unsigned char *q;
			do {
				q = noscan ? cgc_malloc_atomic(sz) : cgc_malloc(sz);
				held[k++] = q;
			} while (q != p && k < 2 * nel + 2);
			ck_assert_ptr_eq(q, p);
			if (!noscan)
				ck_assert_int_eq(first_bad(q, 0, sz, 0), -1);
			while (k > 0)
				cgc_free(held[--k]);
			free(held);
		}
	}
}
END_TEST

/* Address to object for every class: every interior offset rounds down to its object; one past
 * the end is the next slot; free slots and span tails answer NULL. */
START_TEST(test_object_lookup)
{
	for (unsigned cl = 1; cl < NUM_SIZE_CLASSES; cl++) {
		size_t sz = sc_size[cl];
		unsigned n = sc_nelems[cl];
		/* Fill one whole span so its last object and tail are ours. */
		char **objs = malloc(sizeof(char *) * (n + 1) * 2);
		unsigned k = 0;
		span_t *s = NULL;
		for (;;) {
			char *p = cgc_malloc(sz);
			objs[k++] = p;
			span_t *ps = spanmap_lookup((uintptr_t)p);
			if (s == NULL && (uintptr_t)p == ps->base)
				s = ps;
			if (s && ps == s && (uintptr_t)p == s->base + (n - 1) * sz)
				break;
			ck_assert_uint_lt(k, 2 * n + 1);
		}
		for (unsigned i = 0; i < n; i++) {
			uintptr_t obj = s->base + i * sz;
			ck_assert_ptr_eq(cgc_base((void *)obj), (void *)obj);
			ck_assert_ptr_eq(cgc_base((void *)(obj + sz - 1)), (void *)obj);
			ck_assert_ptr_eq(cgc_base((void *)(obj + sz / 2)), (void *)obj);
		}
		uintptr_t end = s->base + (uintptr_t)n * sz;
		uintptr_t span_end = s->base + (s->npages << PAGE_SHIFT);
		/* One past the last object: the span tail (or the next span), never the last object. */
		ck_assert_ptr_ne(cgc_base((void *)end), (void *)(end - sz));
		if (end < span_end)
			ck_assert_ptr_null(cgc_base((void *)(span_end - 1)));
		/* A freed slot is no longer an object. */
		char *victim = (char *)(s->base + (n / 2) * sz);
		cgc_free(victim);
		ck_assert_ptr_null(cgc_base(victim));
		ck_assert_ptr_null(cgc_base(victim + sz - 1));
		for (unsigned i = 0; i < k; i++)
			if (objs[i] != victim)
				cgc_free(objs[i]);
		free(objs);
	}
	ck_assert_ptr_null(cgc_base(NULL));
	ck_assert_ptr_null(cgc_base((void *)&st));
	ck_assert_ptr_null(cgc_base((void *)(uintptr_t)0xffff800000000000ull));
	ck_assert_ptr_null(cgc_base((void *)(uintptr_t)-1));
}
END_TEST

START_TEST(test_large_objects)
{
	size_t sizes[] = {MAX_SMALL_SIZE + 1, 40000, 65536, 1 << 20, (5u << 20) + 3, 100u << 20};
	for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		size_t n = sizes[i];
		unsigned char *p = cgc_malloc(n);
		ck_assert_ptr_nonnull(p);
		ck_assert_uint_eq((uintptr_t)p % PAGE_SIZE, 0);
		size_t u = cgc_usable_size(p);
		ck_assert_uint_eq(u, (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1));
		ck_assert_uint_eq(p[0], 0);
		ck_assert_uint_eq(p[n - 1], 0);
		ck_assert_ptr_eq(cgc_base(p + n / 2), p);
		ck_assert_ptr_eq(cgc_base(p + u - 1), p);
		memset(p, 0x5a, n);
		cgc_free(p);
		ck_assert_ptr_null(cgc_base(p));
		/* Reused pages must come back zeroed. */
		unsigned char *q = cgc_malloc(n);
		for (size_t j = 0; j < n; j += 4093)
			ck_assert_uint_eq(q[j], 0);
		ck_assert_uint_eq(q[n - 1], 0);
		cgc_free(q);
	}
	mheap_validate();
}
END_TEST

/* The page heap splits free runs and coalesces neighbours back into one. */
START_TEST(test_page_heap_coalesce)
{
	/* Three adjacent large spans from fresh space, freed in an order that needs both merges. */
	char *a = cgc_malloc(3 * PAGE_SIZE * 5);
	char *b = cgc_malloc(3 * PAGE_SIZE * 5);
	char *c = cgc_malloc(3 * PAGE_SIZE * 5);
	span_t *sa = spanmap_lookup((uintptr_t)a), *sb = spanmap_lookup((uintptr_t)b),
	       *sc = spanmap_lookup((uintptr_t)c);
	if (sa->base + (sa->npages << PAGE_SHIFT) != sb->base || sb->base + (sb->npages << PAGE_SHIFT) != sc->base)
		return; /* not adjacent (reused runs); the invariant checks below still ran elsewhere */
	size_t total = sa->npages + sb->npages + sc->npages;
	cgc_free(a);
	cgc_free(c);
	mheap_validate();
	cgc_free(b);
	mheap_validate();
	span_t *m = spanmap_lookup((uintptr_t)a);
	ck_assert_ptr_nonnull(m);
	ck_assert_uint_eq(m->kind, SPAN_FREE);
	ck_assert_uint_ge(m->npages, total);
	/* A smaller request splits the merged run from its start. */
	char *d = cgc_malloc(2 * PAGE_SIZE * 5);
	ck_assert_ptr_eq(d, a);
	span_t *rest = spanmap_lookup((uintptr_t)d + 10 * PAGE_SIZE);
	ck_assert_uint_eq(rest->kind, SPAN_FREE);
	cgc_free(d);
	mheap_validate();
}
END_TEST

START_TEST(test_scavenge)
{
	char *p = cgc_malloc(64 << 20);
	memset(p, 1, 64 << 20);
	cgc_free(p);
	cgc_get_stats(&st);
	size_t before = st.heap_released;
	mheap_release_idle(0);
	cgc_get_stats(&st);
	ck_assert_uint_ge(st.heap_released, before + (64u << 20));
	/* Released pages read as zero and are reused without a memset. */
	char *q = cgc_malloc(64 << 20);
	ck_assert_uint_eq(q[12345], 0);
	cgc_free(q);
	mheap_validate();
}
END_TEST

/* Tiny objects: packing, granule masks, usable size, base, free as a no-op. */
START_TEST(test_tiny)
{
	/* Start from a fresh block: 13 bytes round to 16 and fill one. */
	char *filler = cgc_malloc_atomic(13);
	ck_assert_ptr_nonnull(filler);
	char *a = cgc_malloc_atomic(3);  /* 4 bytes at 0 */
	char *c = cgc_malloc_atomic(2);  /* 4 bytes at 4 */
	char *b = cgc_malloc_atomic(5);  /* 8 bytes, 8-aligned: at 8 */
	ck_assert_uint_eq((uintptr_t)b - (uintptr_t)a, 8);
	ck_assert_uint_eq((uintptr_t)c - (uintptr_t)a, 4);
	ck_assert_uint_eq((uintptr_t)a % 16, 0);
	ck_assert_uint_eq(cgc_usable_size(a), 4);
	ck_assert_uint_eq(cgc_usable_size(b), 8);
	ck_assert_uint_eq(cgc_usable_size(c), 4);
	ck_assert_ptr_eq(cgc_base(b + 7), b);
	ck_assert_ptr_eq(cgc_base(c + 3), c);
	span_t *s = spanmap_lookup((uintptr_t)a);
	ck_assert_uint_eq(s->kind, SPAN_TINY);
	uint64_t live = live_objects();
	cgc_free(b); /* accepted, does nothing */
	ck_assert_uint_eq(live_objects(), live);
	ck_assert_uint_eq(cgc_usable_size(b), 8);
	/* 12 bytes do not fit in the 0 bytes left: a new block. */
	char *d = cgc_malloc_atomic(12);
	ck_assert_uint_eq((uintptr_t)d % 16, 0);
	char *e = cgc_malloc_atomic(4);
	ck_assert_uint_eq((uintptr_t)e, (uintptr_t)d + 12);
	memset(d, 'h', 11);
	d[11] = 0;
	e[0] = 'a';
	e[3] = 0;
	ck_assert_uint_eq(strlen(d), 11);
	ck_assert_uint_gt(st.tiny_allocs, 0);
}
END_TEST

START_TEST(test_zero_and_overflow)
{
	void *seen[256];
	for (int i = 0; i < 256; i++) {
		seen[i] = i % 2 ? cgc_malloc(0) : cgc_malloc_atomic(0);
		ck_assert_ptr_nonnull(seen[i]);
		for (int j = 0; j < i; j++)
			ck_assert_ptr_ne(seen[i], seen[j]);
	}
	for (int i = 0; i < 256; i++)
		cgc_free(seen[i]);
	/* volatile: the compiler would otherwise reject the sizes at compile time */
	volatile size_t huge = SIZE_MAX, over = (size_t)PTRDIFF_MAX + 1, half = SIZE_MAX / 2 + 1;
	errno = 0;
	ck_assert_ptr_null(cgc_calloc(half, 2));
	ck_assert_int_eq(errno, ENOMEM);
	errno = 0;
	ck_assert_ptr_null(cgc_malloc(huge));
	ck_assert_int_eq(errno, ENOMEM);
	errno = 0;
	ck_assert_ptr_null(cgc_malloc_atomic(over));
	ck_assert_int_eq(errno, ENOMEM);
	int *z = cgc_calloc(1000, sizeof(int));
	for (int i = 0; i < 1000; i++)
		ck_assert_int_eq(z[i], 0);
	cgc_free(z);
}
END_TEST

START_TEST(test_realloc)
{
	uint64_t seed = test_seed("test_realloc");
	unsigned char *p = cgc_realloc(NULL, 10);
	ck_assert_ptr_nonnull(p);
	/* The whole usable size carries the pattern, so every kept byte can be checked. The compiler
	 * (and UBSan's object-size check) knows only the requested size from alloc_size; cgc_base
	 * hands back the same address as "the whole object" (see man 3 cgc_usable_size). */
	p = cgc_base(p);
	size_t u = cgc_usable_size(p);
	for (size_t i = 0; i < u; i++)
		p[i] = (unsigned char)(i * 7);
	for (int round = 0; round < 2000; round++) {
		size_t m = 1 + rng_below(&seed, round % 50 == 0 ? 200000 : 3000);
		unsigned char *q = cgc_realloc(p, m);
		ck_assert_ptr_nonnull(q);
		q = cgc_base(q);
		size_t qu = cgc_usable_size(q);
		ck_assert_uint_ge(qu, m);
		size_t keep = q == p ? qu : (u < m ? u : m);
		ck_assert_int_eq(first_bad(q, 0, keep, 1), -1);
		/* Moved and grown, a scan object's bytes past the old object are zero. */
		if (q != p)
			ck_assert_int_eq(first_bad(q, keep, qu, 0), -1);
		for (size_t i = 0; i < qu; i++)
			q[i] = (unsigned char)(i * 7);
		p = q;
		u = qu;
	}
	/* A large object that stays large shrinks in place, giving its tail pages back. */
	unsigned char *big = cgc_base(cgc_malloc(1 << 20));
	for (size_t i = 0; i < (1 << 20); i++)
		big[i] = (unsigned char)(i * 7);
	cgc_get_stats(&st);
	size_t inuse_before = st.large_inuse;
	unsigned char *shrunk = cgc_realloc(big, 300000);
	ck_assert_ptr_eq(shrunk, big);
	ck_assert_uint_eq(cgc_usable_size(shrunk), (300000 + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1));
	ck_assert_int_eq(first_bad(shrunk, 0, 300000, 1), -1);
	cgc_get_stats(&st);
	ck_assert_uint_eq(inuse_before - st.large_inuse, (1u << 20) - cgc_usable_size(shrunk));
	span_t *tail = spanmap_lookup((uintptr_t)shrunk + cgc_usable_size(shrunk));
	ck_assert(tail == NULL || tail->kind == SPAN_FREE || tail->base == (uintptr_t)shrunk + cgc_usable_size(shrunk));
	ck_assert_ptr_null(cgc_base(shrunk + cgc_usable_size(shrunk)));
	mheap_validate();
	cgc_free(shrunk);
	mheap_validate();

	/* realloc(p, 0) frees p and returns a unique minimal object. */
	void *z = cgc_realloc(p, 0);
	ck_assert_ptr_nonnull(z);
	cgc_free(z);
	/* Atomic stays atomic. */
	char *a = cgc_malloc_atomic(100);
	memset(a, 'x', 100);
	char *b = cgc_realloc(a, 5000);
	ck_assert_uint_eq(spanmap_lookup((uintptr_t)b)->spc & 1, 1);
	ck_assert_uint_eq(b[99], 'x');
	cgc_free(b);
	/* Tiny grows out of its block. */
	char *t = cgc_malloc_atomic(3);
	memcpy(t, "ab", 3);
	char *t2 = cgc_realloc(t, 40);
	ck_assert_str_eq(t2, "ab");
	cgc_free(t2);
}
END_TEST

/* Frees balance allocations in the statistics; per-class counts add up. */
START_TEST(test_stats)
{
	uint64_t before = live_objects();
	size_t mapped_before = st.heap_mapped;
	void *p[1000];
	for (int i = 0; i < 1000; i++)
		p[i] = cgc_malloc(100);
	cgc_get_stats(&st);
	ck_assert_uint_eq(st.objects, before + 1000);
	unsigned cl = size_to_class(100);
	ck_assert_uint_ge(st.classes[cl].nmalloc - st.classes[cl].nfree, 1000);
	ck_assert_uint_ge(st.classes[cl].spans, 1);
	ck_assert_uint_ge(st.heap_mapped, mapped_before);
	uint64_t sum = 0;
	for (unsigned i = 1; i < CGC_NUM_CLASSES; i++)
		sum += st.classes[i].nmalloc - st.classes[i].nfree;
	ck_assert_uint_eq(sum + st.large_nmalloc - st.large_nfree, st.objects);
	for (int i = 0; i < 1000; i++)
		cgc_free(p[i]);
	ck_assert_uint_eq(live_objects(), before);
}
END_TEST

/* ---- threads ------------------------------------------------------------------------------ */

#define XFER 20000
static void *xfer[XFER];

static void *producer(void *arg)
{
	(void)arg;
	for (int i = 0; i < XFER; i++) {
		xfer[i] = cgc_malloc(16 + (i % 200));
		*(int *)xfer[i] = i;
	}
	return NULL; /* exits: its spans go to mcentral with objects still live */
}

/* A thread allocates and exits; another frees everything (into unowned spans) and the heap
 * takes the empty spans back. */
START_TEST(test_thread_exit_and_remote_free)
{
	uint64_t before = live_objects();
	cgc_get_stats(&st);
	size_t spans_before = st.heap_spans;
	pthread_t t;
	pthread_create(&t, NULL, producer, NULL);
	pthread_join(t, NULL);
	ck_assert_uint_eq(live_objects(), before + XFER);
	for (int i = 0; i < XFER; i++) {
		ck_assert_int_eq(*(int *)xfer[i], i);
		cgc_free(xfer[i]);
	}
	ck_assert_uint_eq(live_objects(), before);
	cgc_get_stats(&st);
	ck_assert_uint_le(st.heap_spans, spans_before + 4 * PAGE_SIZE * 10);
	mheap_validate();
}
END_TEST

static void *consumer(void *arg)
{
	void **objs = arg;
	for (int i = 0; i < XFER; i++)
		cgc_free(objs[i]);
	return NULL;
}

/* The owner stays alive and allocating while another thread frees its objects: the frees go to
 * thread_free and the owner reuses the slots. */
START_TEST(test_remote_free_reuse)
{
	void **objs = malloc(sizeof(void *) * XFER);
	for (int round = 0; round < 5; round++) {
		for (int i = 0; i < XFER; i++)
			objs[i] = cgc_malloc(64);
		pthread_t t;
		pthread_create(&t, NULL, consumer, objs);
		pthread_join(t, NULL);
	}
	cgc_get_stats(&st);
	unsigned cl = size_to_class(64);
	/* Five rounds of 20,000 objects fit in the spans of about one round. */
	ck_assert_uint_le(st.classes[cl].spans * sc_nelems[cl], 2 * XFER + 4 * sc_nelems[cl]);
	free(objs);
}
END_TEST

/* Metadata pieces of mixed sizes never run past their chunk (a bug once: the room check came
 * before the alignment), never overlap, and are aligned: to their size up to 64 bytes (powers of
 * two), to a 64-byte line above (whole lines, no power-of-two rounding). A freed piece is reused
 * for its size, zeroed. */
START_TEST(test_meta_alloc)
{
	static const size_t sizes[] = {100, 16384, 65536, 300, 4096, 24, 688, 65};
	enum { N = 400, K = sizeof sizes / sizeof sizes[0] };
	static char *got[N];
	size_t before = meta_mapped_bytes();
	for (int i = 0; i < N; i++) {
		size_t n = sizes[i % K], b = 16;
		if (n <= 64)
			while (b < n)
				b <<= 1;
		else
			b = (n + 63) / 64 * 64;
		char *p = got[i] = meta_alloc(n);
		ck_assert_ptr_nonnull(p);
		ck_assert_uint_eq((uintptr_t)p % (b < 64 ? b : 64), 0);
		for (size_t j = 0; j < b; j++)
			ck_assert_int_eq(p[j], 0);
		memset(p, 0xa5, b); /* a piece handed out twice, or overlapping, is caught below */
	}
	ck_assert_uint_ge(meta_mapped_bytes(), before);
	for (int i = 0; i < N; i++) {
		size_t n = sizes[i % K], b = n <= 64 ? 32 : (n + 63) / 64 * 64;
		for (size_t j = 0; j < (n <= 64 ? n : b); j++)
			ck_assert_int_eq((unsigned char)got[i][j], 0xa5);
	}
	/* Reuse: the same size gets the freed piece back, zeroed. */
	meta_free(got[6], 688);
	char *again = meta_alloc(688);
	ck_assert_ptr_eq(again, got[6]);
	for (size_t j = 0; j < 704; j++)
		ck_assert_int_eq(again[j], 0);
}
END_TEST

/* fork() while other threads allocate: the child must find no cgc lock held. Threads hammer the
 * page heap (large objects) and mcentral (remote frees into unowned spans) while the main thread
 * forks; each child allocates and frees through every path and exits 0. alarm() turns a deadlock
 * into a failure. */
static int fork_stop; /* atomic */

static void *fork_hammer(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&fork_stop, __ATOMIC_RELAXED)) {
		void *big = cgc_malloc(100000);
		void *small[64];
		for (int i = 0; i < 64; i++)
			small[i] = cgc_malloc(24 + i * 8);
		for (int i = 0; i < 64; i++)
			cgc_free(small[i]);
		cgc_free(big);
	}
	return NULL;
}

START_TEST(test_fork_with_threads)
{
	pthread_t t[2];
	__atomic_store_n(&fork_stop, 0, __ATOMIC_RELAXED);
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, fork_hammer, NULL);
	int rounds = (int)(40 * test_scale()) + 2; /* STRESS_SCALE shrinks it under valgrind */
	for (int round = 0; round < rounds; round++) {
		pid_t pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			alarm(10);
			void *a = cgc_malloc(100), *b = cgc_malloc(200000), *c = cgc_malloc_atomic(5);
			struct cgc_stats s;
			cgc_get_stats(&s);
			cgc_free(a);
			cgc_free(b);
			cgc_free(c);
			_exit(s.objects > 0 ? 0 : 3);
		}
		int status;
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			      "child %d of round %d: status %#x (a SIGALRM means it deadlocked)", pid, round, status);
	}
	__atomic_store_n(&fork_stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
}
END_TEST

/* The allocation-free formatter every cgc: report goes through: conversions and truncation. */
static size_t fmt(char *buf, size_t cap, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	size_t n = cgc_format(buf, cap, f, ap);
	va_end(ap);
	return n;
}

START_TEST(test_report_format)
{
	char buf[128];
	fmt(buf, sizeof buf, "cgc: %s(): %p at %zu, %d %u %x %lu %llu %% %q", "free", (void *)0xc000012340,
	    (size_t)64, -42, 7u, 255u, 123456789ul, 18446744073709551615ull);
	ck_assert_str_eq(buf, "cgc: free(): 0xc000012340 at 64, -42 7 ff 123456789 18446744073709551615 % %q");
	/* Truncated to the buffer, always terminated; the return value is the full length. */
	char small[8];
	size_t n = fmt(small, sizeof small, "%s", "abcdefghij");
	ck_assert_uint_eq(n, 10);
	ck_assert_str_eq(small, "abcdefg");
	fmt(buf, sizeof buf, "%s", (char *)NULL);
	ck_assert_str_eq(buf, "(null)");
}
END_TEST

static Suite *alloc_suite(void)
{
	Suite *s = suite_create("alloc");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_every_class);
	tcase_add_test(tc, test_object_lookup);
	tcase_add_test(tc, test_large_objects);
	tcase_add_test(tc, test_page_heap_coalesce);
	tcase_add_test(tc, test_scavenge);
	tcase_add_test(tc, test_tiny);
	tcase_add_test(tc, test_zero_and_overflow);
	tcase_add_test(tc, test_realloc);
	tcase_add_test(tc, test_stats);
	tcase_add_test(tc, test_thread_exit_and_remote_free);
	tcase_add_test(tc, test_remote_free_reuse);
	tcase_add_test(tc, test_meta_alloc);
	tcase_add_test(tc, test_report_format);
	suite_add_tcase(s, tc);
	TCase *tf = tcase_create("fork");
	tcase_set_timeout(tf, 120);
	tcase_add_test(tf, test_fork_with_threads);
	suite_add_tcase(s, tf);
	return s;
}

int main(void)
{
	/* These tests exercise the allocator alone and keep objects where the collector does not
	 * look (glibc-malloc'd tables): collection stays off. tests/check_gc.c tests the collector. */
	cgc_set_percent(-1);
	SRunner *sr = srunner_create(alloc_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
