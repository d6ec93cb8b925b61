/* tests/check_gc.c - unit tests of the collector: every kind of root, what marking follows and what
 * it must not, threads, fork, the knobs and the statistics. doc/design/collector.md is the spec. */

/* How the tests see whether an object was collected. cgc_collect finishes its sweep before it
 * returns, so afterwards cgc_base(p) is NULL exactly when p's object was reclaimed (nothing is
 * allocated between the collection and the look). The hard part is the other direction: the
 * collector is conservative, and a stale copy of p in this thread's stack or registers would keep
 * the object alive and make a "was reclaimed" check fail for no fault of the collector. So:
 *
 *  - test bodies never hold an object's address, only its complement (HIDE), which is never a
 *    heap address; noinline helpers allocate, store where the test wants and look afterwards;
 *  - before each collection clear_stack() zeroes the stack below the caller, where the helpers'
 *    dead frames (and their copies of p) were, and where the collection's frames now go;
 *  - where a whole structure would be kept by one stray word (rings, lists), the checks allow a
 *    small share to survive, and say so.
 *
 * Every "survives" check has a matching "is reclaimed" check once the root is gone: it shows the
 * root under test, not some stray copy, was what kept the object. */

#include <check.h>
#include <valgrind/valgrind.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "include/cgc.h"
#include "tests/testutil.h"

#define NOINLINE __attribute__((noinline))

/* The complement of a user-space address has its top bits set: no scanned word that holds it can
 * look like a pointer into the heap. */
#define HIDE(p) (~(uintptr_t)(p))
#define SHOW(h) ((void *)~(uintptr_t)(h))

/* Under ThreadSanitizer two things change. Its runtime keeps recent addresses in its own TLS and
 * globals, which cgc scans like any module's, so some dead objects stay reachable: checks that
 * something was reclaimed, or that the pacer saw garbage go, are skipped (the "survives" checks
 * all stay). And it delays a signal to a thread blocked in pthread_mutex_lock until the lock is
 * taken, so a thread waiting for a lock the collector holds never acknowledges the stop (a
 * deadlock, see test_fork_while_allocating). */
#ifdef CGC_TSAN /* alloc/atomic.h, through tests/testutil.h */
#define UNDER_TSAN 1
#else
#define UNDER_TSAN 0
#endif

static struct cgc_stats st;

/* ---- helpers ------------------------------------------------------------------------------- */

/* Zeroes 32 KiB of stack below the caller: more than a collection's frames need, so none of them
 * finds a dead helper's copy of an address in an uninitialised slot. Every slot must be written:
 * the frame address taken forces a frame pointer, pushed right under the return address, and
 * after it the stack is 16-aligned, so the array follows with no alignment slot in between; a
 * plain loop, not memset, so no other register needs saving; not instrumented, as ASan's
 * redzones around the array would be unwritten slots too. */
static NOINLINE __attribute__((no_sanitize_address)) void clear_stack(void)
{
	volatile uintptr_t buf[4096];
	__asm__ volatile("" ::"r"(__builtin_frame_address(0)));
	for (size_t i = 0; i < sizeof buf / sizeof buf[0]; i++)
		buf[i] = 0;
}

/* What the tests call instead of cgc_collect: the stack cleared first (see the top of the file). */
#define COLLECT() (clear_stack(), cgc_collect())

/* Object bytes: every byte has its top bit set, so no word of an object's contents is a heap
 * address either (a pattern would otherwise retain its neighbours by chance). */
static inline unsigned char pat(size_t i, unsigned tag)
{
	return (unsigned char)(0x80 | ((i * 7 + tag * 13) & 0x7f));
}

static void fill(unsigned char *p, size_t n, unsigned tag)
{
	for (size_t i = 0; i < n; i++)
		p[i] = pat(i, tag);
}

/* Allocates n bytes with pattern tag; stores the address in *slot when slot is not NULL. */
static NOINLINE uintptr_t make_obj(size_t n, unsigned tag, void *volatile *slot)
{
	unsigned char *p = cgc_malloc(n);
	fill(p, n, tag);
	if (slot)
		*slot = p;
	return HIDE(p);
}

/* What became of a hidden object. */
enum { OBJ_OK = 0, OBJ_RECLAIMED, OBJ_CORRUPT, OBJ_MOVED };

static NOINLINE int obj_state(uintptr_t h, size_t n, unsigned tag)
{
	unsigned char *p = SHOW(h);
	void *b = cgc_base(p);
	if (b == NULL)
		return OBJ_RECLAIMED;
	if (b != p)
		return OBJ_MOVED;
	for (size_t i = 0; i < n; i++)
		if (p[i] != pat(i, tag))
			return OBJ_CORRUPT;
	return OBJ_OK;
}

static NOINLINE bool reclaimed(uintptr_t h)
{
	return cgc_base(SHOW(h)) == NULL;
}

static const char *state_name(int s)
{
	static const char *names[] = {"alive and intact", "reclaimed", "corrupted", "not at its base"};
	return s >= 0 && s < 4 ? names[s] : "?";
}

#define ASSERT_ALIVE(h, n, tag)                                                                    \
	do {                                                                                       \
		int s_ = obj_state((h), (n), (tag));                                                \
		ck_assert_msg(s_ == OBJ_OK, "object %#lx is %s, expected alive and intact",         \
			      (unsigned long)SHOW(h), state_name(s_));                             \
	} while (0)

/* Not under TSan (its runtime keeps copies of pointers) nor valgrind: there a thread stopped by a
 * signal is scanned with every register valgrind saved for the handler, and stale copies in
 * scratch registers kept objects alive (seen in CI, two tests). */
#define RECLAIM_CHECKED (!UNDER_TSAN && !RUNNING_ON_VALGRIND)
#define ASSERT_RECLAIMED(h)                                                                        \
	ck_assert_msg(!RECLAIM_CHECKED || reclaimed(h), "object %#lx survived; expected it reclaimed", \
		      (unsigned long)SHOW(h))

/* A step counter two threads hand back and forth. */
struct baton {
	pthread_mutex_t m;
	pthread_cond_t c;
	int step;
};
#define BATON_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}

static NOINLINE void baton_set(struct baton *b, int step)
{
	lock_acquire(&b->m);
	b->step = step;
	pthread_cond_broadcast(&b->c);
	pthread_mutex_unlock(&b->m);
}

static NOINLINE void baton_wait(struct baton *b, int step)
{
	lock_acquire(&b->m);
	while (b->step < step)
		pthread_cond_wait(&b->c, &b->m);
	pthread_mutex_unlock(&b->m);
}

static uint64_t collections(void)
{
	cgc_get_stats(&st);
	return st.collections;
}

/* ---- 1. globals of the executable ------------------------------------------------------------ */

static void *volatile g_bss_slot;             /* zero-initialised: .bss */
static void *volatile g_data_slot = (void *)1; /* initialised: .data */

static void global_case(void *volatile *slot, size_t n, unsigned tag)
{
	uintptr_t h = make_obj(n, tag, slot);
	COLLECT();
	ASSERT_ALIVE(h, n, tag);
	COLLECT(); /* a second cycle: the marks of the first were cleared, the slot still counts */
	ASSERT_ALIVE(h, n, tag);
	*slot = NULL;
	COLLECT();
	ASSERT_RECLAIMED(h);
}

START_TEST(test_root_globals)
{
	global_case(&g_bss_slot, 256, 1);
	global_case(&g_data_slot, 256, 2);
	global_case(&g_bss_slot, 100000, 3); /* a large object */
	global_case(&g_data_slot, 100000, 4);
}
END_TEST

/* ---- 2 and 4. a dlopen()ed library: its globals and its (dynamic) TLS ------------------------- */

struct lib {
	void *handle;
	void (*set)(void *);
	void *(*get)(void);
	void (*set_tls)(void *);
	void *(*get_tls)(void);
};

/* The module is found through CGC_GCROOT_LIB (set by `make check`), else next to this program as
 * libtool leaves it (tests/.libs/gcroot_lib.so), so a direct run and valgrind find it too. */
static void lib_open(struct lib *l)
{
	char path[PATH_MAX];
	const char *e = getenv("CGC_GCROOT_LIB");
	if (e && *e) {
		snprintf(path, sizeof path, "%s", e);
	} else {
		ssize_t n = readlink("/proc/self/exe", path, sizeof path - 64);
		ck_assert_int_gt(n, 0);
		path[n] = 0;
		char *slash = strrchr(path, '/');
		strcpy(slash ? slash + 1 : path, ".libs/gcroot_lib.so");
	}
	l->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	ck_assert_msg(l->handle != NULL, "dlopen(%s): %s", path, dlerror());
	*(void **)&l->set = dlsym(l->handle, "gcroot_lib_set");
	*(void **)&l->get = dlsym(l->handle, "gcroot_lib_get");
	*(void **)&l->set_tls = dlsym(l->handle, "gcroot_lib_set_tls");
	*(void **)&l->get_tls = dlsym(l->handle, "gcroot_lib_get_tls");
	ck_assert(l->set && l->get && l->set_tls && l->get_tls);
}

/* Allocates an object and hands it to one of the library's setters, keeping no copy. */
static NOINLINE uintptr_t make_lib_obj(void (*set)(void *), size_t n, unsigned tag)
{
	void *volatile tmp = NULL;
	uintptr_t h = make_obj(n, tag, &tmp);
	set(tmp);
	tmp = NULL;
	return h;
}

START_TEST(test_root_dlopen_global)
{
	struct lib l;
	lib_open(&l);
	uintptr_t h = make_lib_obj(l.set, 512, 5);
	COLLECT();
	ASSERT_ALIVE(h, 512, 5);
	l.set(NULL);
	COLLECT();
	ASSERT_RECLAIMED(h);
	/* Held by the library when it goes: the collection after dlclose must not touch the unmapped
	 * segment (the roots are snapshotted per cycle, doc/design/collector.md 4.1). */
	make_lib_obj(l.set, 512, 6);
	ck_assert_int_eq(dlclose(l.handle), 0);
	COLLECT();
	uintptr_t h2 = make_obj(512, 7, &g_bss_slot);
	COLLECT();
	ASSERT_ALIVE(h2, 512, 7);
	g_bss_slot = NULL;
}
END_TEST

/* A TLS root, through its setter: set(p) stores p in a thread-local variable (of the executable
 * or of the dlopen()ed library). The object survives while only that variable holds it, in the
 * main thread and in another, and goes once the variable is cleared. */
struct tls_job {
	void (*set)(void *);
	size_t n;
	unsigned tag;
	struct baton b;
	uintptr_t h;
};

static void *tls_thread(void *arg)
{
	struct tls_job *j = arg;
	j->h = make_lib_obj(j->set, j->n, j->tag);
	clear_stack();
	baton_set(&j->b, 1);
	baton_wait(&j->b, 2); /* main collects */
	j->set(NULL);
	clear_stack();
	baton_set(&j->b, 3);
	/* Gone before main looks for the object to be reclaimed: a live thread's callee-saved
	 * registers may still hold its address (seen once under valgrind), which the stop saves
	 * and the scan rightly finds. */
	return NULL;
}

static void tls_case(void (*set)(void *), size_t n, unsigned tag)
{
	uintptr_t h = make_lib_obj(set, n, tag);
	COLLECT();
	ASSERT_ALIVE(h, n, tag);
	set(NULL);
	COLLECT();
	ASSERT_RECLAIMED(h);
	struct tls_job j = {.set = set, .n = n, .tag = tag + 1, .b = BATON_INIT};
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, tls_thread, &j), 0);
	baton_wait(&j.b, 1);
	COLLECT();
	ASSERT_ALIVE(j.h, n, tag + 1);
	baton_set(&j.b, 2);
	baton_wait(&j.b, 3);
	pthread_join(t, NULL);
	COLLECT();
	ASSERT_RECLAIMED(j.h);
}

START_TEST(test_root_dlopen_tls)
{
	struct lib l;
	lib_open(&l);
	/* Each thread's block of the module: allocated by glibc on first use, after dlopen. */
	tls_case(l.set_tls, 300, 8);
	ck_assert_int_eq(dlclose(l.handle), 0);
	COLLECT();
}
END_TEST

/* ---- 3. static TLS of the executable ---------------------------------------------------------- */

static __thread void *volatile tls_slot;

static NOINLINE void set_tls_slot(void *p)
{
	tls_slot = p;
}

START_TEST(test_root_static_tls)
{
	/* The main thread's static TLS is not on its stack (glibc puts it in a mapping of its own). */
	tls_case(set_tls_slot, 200, 10);
}
END_TEST

/* ---- 5. another thread's stack ----------------------------------------------------------------- */

struct stack_job {
	struct baton b;
	uintptr_t h;
	int after;  /* the object's state as the thread saw it after the collection */
};

static void *stack_thread(void *arg)
{
	struct stack_job *j = arg;
	void *volatile held = NULL; /* the only reference: a slot in this frame */
	j->h = make_obj(4000, 12, &held);
	clear_stack();
	baton_set(&j->b, 1);
	baton_wait(&j->b, 2); /* stopped in here while main collects */
	j->after = obj_state(HIDE(held), 4000, 12);
	held = NULL;
	clear_stack();
	baton_set(&j->b, 3);
	baton_wait(&j->b, 4);
	return NULL;
}

START_TEST(test_root_thread_stack)
{
	struct stack_job j = {.b = BATON_INIT, .after = -1};
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, stack_thread, &j), 0);
	baton_wait(&j.b, 1);
	COLLECT();
	COLLECT();
	ASSERT_ALIVE(j.h, 4000, 12);
	baton_set(&j.b, 2);
	baton_wait(&j.b, 3);
	ck_assert_msg(j.after == OBJ_OK, "the thread found its object %s", state_name(j.after));
	COLLECT();
	ASSERT_RECLAIMED(j.h);
	baton_set(&j.b, 4);
	pthread_join(t, NULL);
}
END_TEST

/* ---- 6. registers ------------------------------------------------------------------------------ */

/* What is tested: a thread holds an object's address in one callee-saved register (r12 on x86-64,
 * x19 on aarch64) and nowhere else, in a loop of inline assembly that makes only raw sched_yield
 * system calls, while the main thread collects. The address is formed inside the assembly from
 * its complement, every other general register that could hold a stale copy and the vector
 * registers are zeroed first, and the thread's stack below it was cleared: the only copy the
 * collector can find is the one the kernel saves in the signal frame when the stop signal
 * interrupts the loop (doc/design/collector.md 3.2). With keep == 0 the register is zeroed as
 * well: the object must then be reclaimed, which shows that nothing else held it.
 *
 * Then the collecting thread itself: the address in r12/x19 (a register variable) across the call
 * to cgc_collect. Its callees may save the register in their frames or leave it in place; either
 * way unw_getcontext in the collector and the scan of its own stack must find it (4.2). */
#if defined(__x86_64__) || defined(__aarch64__)
#define HAVE_REG_TEST 1
#endif
/* ThreadSanitizer delivers signals only at its interceptors, which the loop never calls. */
#if defined(__SANITIZE_THREAD__)
#undef HAVE_REG_TEST
#endif
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#undef HAVE_REG_TEST
#endif
#endif

#ifdef HAVE_REG_TEST
struct reg_job {
	uintptr_t h;
	int keep;
	volatile int ready; /* set by the loop once the register holds the address */
	volatile int go;    /* set by main after collecting */
	uintptr_t out;      /* the register's final value, hidden again */
};

static NOINLINE uintptr_t hold_in_register(uintptr_t h, int keep, volatile int *ready, volatile int *go)
{
#if defined(__x86_64__)
	__asm__ volatile(
		"mov %[h], %%r12\n\t"
		"not %%r12\n\t"                   /* r12 = the address */
		"test %[keep], %[keep]\n\t"
		"jnz 2f\n\t"
		"xor %%r12d, %%r12d\n\t"
		"2:\n\t"
		"xor %%edx, %%edx\n\txor %%esi, %%esi\n\txor %%edi, %%edi\n\t"
		"xor %%r8d, %%r8d\n\txor %%r9d, %%r9d\n\txor %%r10d, %%r10d\n\t"
		"pxor %%xmm0, %%xmm0\n\tpxor %%xmm1, %%xmm1\n\tpxor %%xmm2, %%xmm2\n\t"
		"pxor %%xmm3, %%xmm3\n\tpxor %%xmm4, %%xmm4\n\tpxor %%xmm5, %%xmm5\n\t"
		"pxor %%xmm6, %%xmm6\n\tpxor %%xmm7, %%xmm7\n\tpxor %%xmm8, %%xmm8\n\t"
		"pxor %%xmm9, %%xmm9\n\tpxor %%xmm10, %%xmm10\n\tpxor %%xmm11, %%xmm11\n\t"
		"pxor %%xmm12, %%xmm12\n\tpxor %%xmm13, %%xmm13\n\tpxor %%xmm14, %%xmm14\n\t"
		"pxor %%xmm15, %%xmm15\n\t"
		"movl $1, (%[ready])\n\t"
		"1:\n\t"
		"mov $24, %%eax\n\t"              /* SYS_sched_yield */
		"syscall\n\t"
		"cmpl $0, (%[go])\n\t"
		"je 1b\n\t"
		"mov %%r12, %[h]\n\t"
		"not %[h]\n\t"
		: [h] "+r"(h)
		: [keep] "r"(keep), [ready] "r"(ready), [go] "r"(go)
		: "r12", "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "xmm0", "xmm1",
		  "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
		  "xmm13", "xmm14", "xmm15", "memory", "cc");
#else
	__asm__ volatile(
		"mvn x19, %[h]\n\t"               /* x19 = the address */
		"cbnz %w[keep], 2f\n\t"
		"mov x19, #0\n\t"
		"2:\n\t"
		"mov x0, #0\n\tmov x1, #0\n\tmov x2, #0\n\tmov x3, #0\n\tmov x4, #0\n\tmov x5, #0\n\t"
		"mov x6, #0\n\tmov x7, #0\n\tmov x9, #0\n\tmov x10, #0\n\tmov x11, #0\n\t"
		"mov x12, #0\n\tmov x13, #0\n\tmov x14, #0\n\tmov x15, #0\n\tmov x16, #0\n\tmov x17, #0\n\t"
		"movi v0.2d, #0\n\tmovi v1.2d, #0\n\tmovi v2.2d, #0\n\tmovi v3.2d, #0\n\t"
		"movi v4.2d, #0\n\tmovi v5.2d, #0\n\tmovi v6.2d, #0\n\tmovi v7.2d, #0\n\t"
		"mov w8, #1\n\tstr w8, [%[ready]]\n\t"
		"1:\n\t"
		"mov x8, #124\n\t"                /* SYS_sched_yield */
		"svc #0\n\t"
		"ldr w8, [%[go]]\n\t"
		"cbz w8, 1b\n\t"
		"mvn %[h], x19\n\t"
		: [h] "+r"(h)
		: [keep] "r"(keep), [ready] "r"(ready), [go] "r"(go)
		: "x19", "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12",
		  "x13", "x14", "x15", "x16", "x17", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7",
		  "memory", "cc");
#endif
	return h;
}

static void *reg_thread(void *arg)
{
	struct reg_job *j = arg;
	j->h = make_obj(512, 13, NULL);
	clear_stack();
	j->out = hold_in_register(j->h, j->keep, &j->ready, &j->go);
	return NULL;
}

/* The collecting thread's own callee-saved register across cgc_collect. */
static NOINLINE uintptr_t collect_holding_register(uintptr_t h)
{
#if defined(__x86_64__)
	register uintptr_t r __asm__("r12") = h;
#else
	register uintptr_t r __asm__("x19") = h;
#endif
	__asm__ volatile("" : "+r"(r));
	r = ~r; /* the address, in the register only */
	__asm__ volatile("" : "+r"(r));
	h = 0;
	COLLECT();
	__asm__ volatile("" : "+r"(r));
	return ~r;
}
#endif

START_TEST(test_root_registers)
{
#ifndef HAVE_REG_TEST
	printf("test_root_registers: skipped (no assembly for this target, or ThreadSanitizer)\n");
#else
	for (int keep = 1; keep >= 0; keep--) {
		struct reg_job j = {.keep = keep};
		pthread_t t;
		ck_assert_int_eq(pthread_create(&t, NULL, reg_thread, &j), 0);
		while (!j.ready)
			sched_yield();
		COLLECT();
		if (keep)
			ASSERT_ALIVE(j.h, 512, 13);
		else
			ASSERT_RECLAIMED(j.h);
		j.go = 1;
		pthread_join(t, NULL);
		if (keep)
			ck_assert_uint_eq(j.out, j.h); /* the register came back unchanged */
	}
	uintptr_t h = make_obj(512, 14, NULL);
	clear_stack();
	ck_assert_uint_eq(collect_holding_register(h), h);
	ASSERT_ALIVE(h, 512, 14);
#endif
}
END_TEST

/* ---- 7. registered ranges ---------------------------------------------------------------------- */

START_TEST(test_root_add_remove)
{
	/* An anonymous mapping of our own: not a segment of any loaded object, so cgc never scans it
	 * unless told to. */
	size_t len = 2 * (size_t)getpagesize();
	void *volatile *area = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne((void *)area, MAP_FAILED);
	/* Last word of the range: the range's end must be included. */
	void *volatile *slot = &area[len / sizeof(void *) - 1];
	uintptr_t h0 = make_obj(128, 15, slot);
	COLLECT();
	ASSERT_RECLAIMED(h0); /* not yet registered */
	uintptr_t h = make_obj(128, 16, slot);
	cgc_add_root((void *)area, len);
	COLLECT();
	ASSERT_ALIVE(h, 128, 16);
	COLLECT();
	ASSERT_ALIVE(h, 128, 16);
	cgc_remove_root((void *)area);
	COLLECT();
	ASSERT_RECLAIMED(h); /* still stored there, no longer scanned */
	munmap((void *)area, len);
}
END_TEST

/* ---- 8. interior pointers and one past the end -------------------------------------------------- */

/* Stores the object's address plus off (off may be its usable size: one past the end). */
static NOINLINE uintptr_t make_obj_at(size_t n, unsigned tag, long off_from_end, size_t off)
{
	unsigned char *p = cgc_malloc(n);
	fill(p, n, tag);
	size_t u = cgc_usable_size(p);
	g_bss_slot = off_from_end ? p + u : p + off;
	return HIDE(p);
}

START_TEST(test_interior_and_past_end)
{
	static const size_t sizes[] = {48, 1000, 100000};
	for (unsigned i = 0; i < 3; i++) {
		size_t n = sizes[i];
		/* Interior: the middle, and the last byte. */
		uintptr_t h = make_obj_at(n, 20, 0, n / 2);
		COLLECT();
		ASSERT_ALIVE(h, n, 20);
		g_bss_slot = NULL;
		COLLECT();
		ASSERT_RECLAIMED(h);
		h = make_obj_at(n, 21, 0, n - 1);
		COLLECT();
		ASSERT_ALIVE(h, n, 21);
		g_bss_slot = NULL;
		/* One past the usable end points at the next slot or page: per 5.6 it does not keep the
		 * object it came from. */
		h = make_obj_at(n, 22, 1, 0);
		COLLECT();
		ck_assert_msg(!RECLAIM_CHECKED || reclaimed(h), "size %zu: a pointer one past the end kept the object", n);
		g_bss_slot = NULL;
	}
}
END_TEST

/* ---- 9. garbage: unreachable objects, cycles, large objects, noscan ------------------------------ */

struct node {
	struct node *next, *prev;
	uint64_t val;
	uint64_t pad[3];
};

/* Rings and doubly linked lists, all dropped on return. Returns the objects made. */
static NOINLINE size_t make_cycles(int nstruct, int len)
{
	size_t made = 0;
	for (int r = 0; r < nstruct; r++) {
		struct node *first = cgc_malloc(sizeof *first), *last = first;
		for (int i = 1; i < len; i++) {
			struct node *n = cgc_malloc(sizeof *n);
			n->prev = last;
			last->next = n;
			n->val = 0x8000000000000000ull | (uint64_t)i;
			last = n;
		}
		made += (size_t)len;
		if (r % 2 == 0) { /* a ring; the odd ones stay doubly linked lists */
			last->next = first;
			first->prev = last;
		}
	}
	return made;
}

/* Large objects that point at each other and at small ones. */
static NOINLINE size_t make_large_garbage(int count)
{
	void **prev = NULL;
	size_t bytes = 0;
	for (int i = 0; i < count; i++) {
		size_t n = 40000 + (size_t)i * 9000;
		void **o = cgc_malloc(n);
		o[0] = prev;
		o[1] = cgc_malloc(64);
		o[n / sizeof(void *) - 1] = o;  /* to itself */
		prev = o;
		bytes += n;
	}
	return bytes;
}

START_TEST(test_garbage_reclaimed)
{
	int nstruct = 32, len = (int)(256 * test_scale()) + 16;
	COLLECT();
	struct cgc_stats base;
	cgc_get_stats(&base);
	size_t made = make_cycles(nstruct, len);
	size_t large = make_large_garbage(20);
	cgc_get_stats(&st);
	ck_assert_uint_ge(st.objects, base.objects + made);
	ck_assert_uint_ge(st.large_inuse, base.large_inuse + large);
	COLLECT();
	cgc_get_stats(&st);
	if (UNDER_TSAN)
		return;
	/* One stray word into a ring keeps the whole ring (1/32 of them); allow 10%. */
	ck_assert_msg(st.objects <= base.objects + made / 10 + 20,
		      "objects: %llu before, %llu after making %zu and collecting",
		      (unsigned long long)base.objects, (unsigned long long)st.objects, made);
	ck_assert_msg(st.heap_inuse <= base.heap_inuse + (made * sizeof(struct node) + large) / 10,
		      "heap_inuse %zu, baseline %zu", st.heap_inuse, base.heap_inuse);
	ck_assert_msg(st.large_inuse <= base.large_inuse + large / 10, "large_inuse %zu, baseline %zu",
		      st.large_inuse, base.large_inuse);
	ck_assert_uint_ge(st.swept_objects, base.swept_objects + made - made / 10);
}
END_TEST

/* A pointer stored only inside a noscan object does not keep its target: cgc_malloc_atomic
 * memory is marked but never scanned (5.6). The same stored in a scanned object does. */
#define NTARGETS 512
static void *volatile g_atomic_holder, *volatile g_scan_holder;

static NOINLINE void fill_holders(void)
{
	void **a = cgc_malloc_atomic(NTARGETS * sizeof(void *));
	void **s = cgc_malloc(NTARGETS * sizeof(void *));
	for (int i = 0; i < NTARGETS; i++) {
		a[i] = cgc_malloc(48);
		s[i] = cgc_malloc(48);
	}
	g_atomic_holder = a;
	g_scan_holder = s;
}

static NOINLINE int count_reclaimed(void *const *v, int n)
{
	int k = 0;
	for (int i = 0; i < n; i++)
		k += cgc_base(v[i]) == NULL;
	return k;
}

START_TEST(test_noscan_not_scanned)
{
	fill_holders();
	COLLECT();
	ck_assert_ptr_eq(cgc_base(g_atomic_holder), g_atomic_holder); /* marked: it survives */
	ck_assert_ptr_eq(cgc_base(g_scan_holder), g_scan_holder);
	int gone_atomic = count_reclaimed(g_atomic_holder, NTARGETS);
	int gone_scan = count_reclaimed(g_scan_holder, NTARGETS);
	ck_assert_int_eq(gone_scan, 0);
	if (UNDER_TSAN)
		return;
	/* Stray words could keep one or two; "never scanned" means nearly all go. */
	ck_assert_msg(gone_atomic >= NTARGETS * 9 / 10, "only %d of %d targets of a noscan object reclaimed",
		      gone_atomic, NTARGETS);
	g_atomic_holder = g_scan_holder = NULL;
}
END_TEST

/* ---- 10. long chains ---------------------------------------------------------------------------- */

struct tnode {
	struct tnode *left, *right;
	uint64_t val;
};

static struct node *volatile g_list;
static struct tnode *volatile g_tree;

static uint64_t mix(uint64_t x)
{
	x ^= x >> 31;
	x *= 0x7fb5d329728ea185ull;
	x ^= x >> 27;
	return x | 0x8000000000000000ull; /* never a heap address */
}

static NOINLINE uint64_t build_list(long n)
{
	uint64_t sum = 0;
	struct node *head = NULL;
	for (long i = 0; i < n; i++) {
		struct node *x = cgc_malloc(sizeof *x);
		x->val = mix((uint64_t)i);
		x->next = head;
		head = x;
		sum += x->val;
	}
	g_list = head;
	return sum;
}

/* The list's checksum, or 0 if a node is no longer an object. */
static NOINLINE uint64_t sum_list(long *count)
{
	uint64_t sum = 0;
	long k = 0;
	for (struct node *x = g_list; x; x = x->next, k++) {
		if (cgc_base(x) != x)
			return 0;
		sum += x->val;
	}
	*count = k;
	return sum;
}

static struct tnode *build_tree(int depth, uint64_t *seed, uint64_t *sum)
{
	if (depth == 0)
		return NULL;
	struct tnode *t = cgc_malloc(sizeof *t);
	t->val = mix(rng_next(seed));
	*sum += t->val;
	t->left = build_tree(depth - 1, seed, sum);
	t->right = build_tree(depth - 1, seed, sum);
	return t;
}

static uint64_t sum_tree(const struct tnode *t, bool *ok)
{
	if (t == NULL)
		return 0;
	if (cgc_base(t) != t) { /* reclaimed: its words may be anything now */
		*ok = false;
		return 0;
	}
	return t->val + sum_tree(t->left, ok) + sum_tree(t->right, ok);
}

static NOINLINE uint64_t build_tree_root(int depth, uint64_t seed)
{
	uint64_t sum = 0;
	g_tree = build_tree(depth, &seed, &sum);
	return sum;
}

static NOINLINE uint64_t sum_tree_root(bool *ok)
{
	return sum_tree(g_tree, ok);
}

/* Garbage of the nodes' size class: a slot freed by mistake is reused and its checksum breaks. */
static NOINLINE void churn(long n)
{
	for (long i = 0; i < n; i++) {
		struct node *x = cgc_malloc(sizeof *x);
		memset(x, 0xee, sizeof *x);
		struct tnode *y = cgc_malloc(sizeof *y);
		memset(y, 0xee, sizeof *y);
	}
}

START_TEST(test_long_chains)
{
	uint64_t seed = test_seed("test_long_chains");
	long n = (long)(100000 * test_scale());
	if (n < 5000)
		n = 5000;
	int depth = test_scale() < 0.5 ? 13 : 17;
	uint64_t lsum = build_list(n), tsum = build_tree_root(depth, seed);
	uint64_t before = collections();
	for (int round = 0; round < 3; round++) {
		churn(n / 2);
		COLLECT();
		long count = 0;
		ck_assert_uint_eq(sum_list(&count), lsum);
		ck_assert_int_eq(count, n);
		bool ok = true;
		ck_assert_uint_eq(sum_tree_root(&ok), tsum);
		ck_assert(ok);
	}
	ck_assert_uint_ge(collections(), before + 3);
	g_list = NULL;
	g_tree = NULL;
}
END_TEST

/* ---- 11. threads -------------------------------------------------------------------------------- */

/* A thread that never calls cgc holds the only reference: pthread_create registered it. */
struct quiet_job {
	struct baton b;
	uintptr_t h;
	int after;
};

static void *quiet_thread(void *arg)
{
	struct quiet_job *j = arg;
	void *volatile held = SHOW(j->h);
	baton_set(&j->b, 1);
	baton_wait(&j->b, 2);
	/* The pattern check calls cgc_base: read it only after the collection. */
	j->after = obj_state(HIDE(held), 700, 30);
	return NULL;
}

START_TEST(test_thread_auto_registered)
{
	struct quiet_job j = {.b = BATON_INIT, .after = -1};
	j.h = make_obj(700, 30, NULL);
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, quiet_thread, &j), 0);
	baton_wait(&j.b, 1);
	COLLECT();
	ASSERT_ALIVE(j.h, 700, 30);
	baton_set(&j.b, 2);
	pthread_join(t, NULL);
	ck_assert_msg(j.after == OBJ_OK, "the thread found its object %s", state_name(j.after));
}
END_TEST

/* A pointer passed only as pthread_create's argument, with a collection right after the call:
 * until the new thread has registered, the argument lives only in cgc's start record (3.1).
 * Pinned to one CPU, the creating thread usually keeps running, so the collection mostly comes
 * before the new thread's first instruction; the test passes either way and counts how often. */
#define ARG_ROUNDS 16
struct arg_obj {
	unsigned round;
	unsigned char bytes[500];
};
static int arg_result[ARG_ROUNDS];
static uint64_t arg_cycles_before[ARG_ROUNDS];
static int arg_early; /* atomic: rounds whose collection finished before the thread started */
static bool arg_started[ARG_ROUNDS]; /* main thread only: arg_result is the threads' until joined */

static void *arg_thread(void *arg)
{
	struct arg_obj *o = arg;
	unsigned r = o->round;
	if (r >= ARG_ROUNDS)
		return NULL; /* reclaimed and reused: the round stays "never seen" */
	struct cgc_stats s;
	cgc_get_stats(&s);
	if (s.collections > arg_cycles_before[r])
		__atomic_fetch_add(&arg_early, 1, __ATOMIC_RELAXED);
	int ok = cgc_base(o) == o;
	for (size_t i = 0; ok && i < sizeof o->bytes; i++)
		ok = o->bytes[i] == pat(i, r);
	arg_result[r] = ok ? 1 : 2;
	return NULL;
}

static NOINLINE void spawn_with_arg(pthread_t *t, unsigned round)
{
	struct arg_obj *o = cgc_malloc(sizeof *o);
	o->round = round;
	fill(o->bytes, sizeof o->bytes, round);
	arg_cycles_before[round] = collections();
	int r = pthread_create(t, NULL, arg_thread, o);
	if (r != 0)
		arg_result[round] = 3;
	arg_started[round] = r == 0;
}

START_TEST(test_thread_create_arg)
{
	cpu_set_t old, one;
	bool pinned = sched_getaffinity(0, sizeof old, &old) == 0;
	if (pinned) {
		CPU_ZERO(&one);
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &old)) {
				CPU_SET(c, &one);
				break;
			}
		pinned = sched_setaffinity(0, sizeof one, &one) == 0;
	}
	pthread_t t[ARG_ROUNDS];
	for (unsigned r = 0; r < ARG_ROUNDS; r++) {
		spawn_with_arg(&t[r], r);
		COLLECT();
	}
	for (unsigned r = 0; r < ARG_ROUNDS; r++)
		if (arg_started[r])
			pthread_join(t[r], NULL);
	if (pinned)
		sched_setaffinity(0, sizeof old, &old);
	printf("test_thread_create_arg: %d of %d collections came before the thread started\n",
	       arg_early, ARG_ROUNDS);
	for (unsigned r = 0; r < ARG_ROUNDS; r++)
		ck_assert_msg(arg_result[r] == 1, "round %u: the thread's argument was %s", r,
			      arg_result[r] == 2 ? "reclaimed or overwritten" : "never seen");
}
END_TEST

/* A thread that cgc does not know (made with the C library's own pthread_create) registers and
 * unregisters itself: its stack is a root exactly in between. */
struct reg_self_job {
	struct baton b;
	uintptr_t h1, h2;
	int registered;
	int after;
};

static void *self_registering_thread(void *arg)
{
	struct reg_self_job *j = arg;
	void *volatile held = SHOW(j->h1); /* before registering: not a root */
	baton_set(&j->b, 1);
	baton_wait(&j->b, 2);
	held = NULL;
	j->registered = cgc_register_thread();
	j->h2 = make_obj(900, 32, &held);
	clear_stack();
	baton_set(&j->b, 3);
	baton_wait(&j->b, 4);
	j->after = obj_state(HIDE(held), 900, 32);
	clear_stack();
	cgc_unregister_thread(); /* held still points at it, now from an unscanned stack */
	baton_set(&j->b, 5);
	baton_wait(&j->b, 6);
	held = NULL;
	return NULL;
}

START_TEST(test_thread_register_unregister)
{
	typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
	create_fn real_create;
	*(void **)&real_create = dlsym(RTLD_NEXT, "pthread_create");
	ck_assert_ptr_nonnull(real_create);
	ck_assert_ptr_ne(real_create, pthread_create);
	struct reg_self_job j = {.b = BATON_INIT, .after = -1, .registered = -2};
	j.h1 = make_obj(900, 31, NULL);
	pthread_t t;
	ck_assert_int_eq(real_create(&t, NULL, self_registering_thread, &j), 0);
	baton_wait(&j.b, 1);
	COLLECT();
	ASSERT_RECLAIMED(j.h1);
	baton_set(&j.b, 2);
	baton_wait(&j.b, 3);
	ck_assert_int_eq(j.registered, 0);
	COLLECT();
	ASSERT_ALIVE(j.h2, 900, 32);
	baton_set(&j.b, 4);
	baton_wait(&j.b, 5);
	ck_assert_msg(j.after == OBJ_OK, "the thread found its object %s", state_name(j.after));
	COLLECT();
	ASSERT_RECLAIMED(j.h2);
	baton_set(&j.b, 6);
	pthread_join(t, NULL);
}
END_TEST

/* cgc_enter_blocking: a thread blocked in read() with every signal blocked holds an object on its
 * stack only. If the collector signalled it instead of scanning its saved state, the stop would
 * never be acknowledged and the test would time out. */
struct blocking_job {
	struct baton b;
	int fd;
	uintptr_t h;
	int after;
	ssize_t got;
};

static void *blocking_thread(void *arg)
{
	struct blocking_job *j = arg;
	void *volatile held = NULL;
	j->h = make_obj(1500, 33, &held);
	clear_stack();
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	cgc_enter_blocking();
	baton_set(&j->b, 1); /* no heap pointer touched: a mutex, a condition variable, a read */
	char c;
	j->got = read(j->fd, &c, 1);
	cgc_exit_blocking();
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	j->after = obj_state(HIDE(held), 1500, 33);
	return NULL;
}

START_TEST(test_thread_blocking)
{
	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	struct blocking_job j = {.b = BATON_INIT, .fd = fds[0], .after = -1};
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, blocking_thread, &j), 0);
	baton_wait(&j.b, 1);
	COLLECT();
	COLLECT();
	ASSERT_ALIVE(j.h, 1500, 33);
	ck_assert_int_eq(write(fds[1], "x", 1), 1);
	pthread_join(t, NULL);
	ck_assert_int_eq(j.got, 1);
	ck_assert_msg(j.after == OBJ_OK, "the thread found its object %s", state_name(j.after));
	close(fds[0]);
	close(fds[1]);
}
END_TEST

/* ---- 12. fork --------------------------------------------------------------------------------- */

static int fork_stop; /* atomic */

static void *fork_allocator(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&fork_stop, __ATOMIC_RELAXED)) {
		void *keep = cgc_malloc(200000);
		for (int i = 0; i < 64; i++)
			((void **)keep)[i] = cgc_malloc(24 + (size_t)i * 8);
		__asm__ volatile("" ::"r"(keep) : "memory");
		if (UNDER_TSAN) { /* not collected there: freed by hand */
			for (int i = 0; i < 64; i++)
				cgc_free(((void **)keep)[i]);
			cgc_free(keep);
		}
	}
	return NULL;
}

static NOINLINE int fork_child_work(void)
{
	uint64_t c0 = collections();
	uintptr_t h = make_obj(333, 40, &g_bss_slot);
	for (int i = 0; i < 1000; i++)
		make_obj(100 + (size_t)i, 41, NULL);
	COLLECT();
	COLLECT();
	if (obj_state(h, 333, 40) != OBJ_OK)
		return 4;
	if (collections() < c0 + 2)
		return 5;
	g_bss_slot = NULL;
	return 0;
}

START_TEST(test_fork_while_allocating)
{
	pthread_t t[2];
	/* Under TSan the parent does not collect: fork_prepare, or a collection, waiting for gc_lock
	 * while an allocating thread collects would never acknowledge its stop (see the top). The
	 * children still collect. */
	if (UNDER_TSAN)
		cgc_set_percent(-1);
	__atomic_store_n(&fork_stop, 0, __ATOMIC_RELAXED);
	/* Under valgrind no thread allocates meanwhile: with them, memcheck's own address-space table
	 * overflowed ("VG_N_SEGMENTS is too low", seen in CI: thousands of small mappings of its
	 * own), which ends the process. Fork with allocating threads is tested natively and under
	 * both sanitizers; under valgrind the parent and children still collect around the forks. */
	int nalloc = RUNNING_ON_VALGRIND ? 0 : 2;
	for (int i = 0; i < nalloc; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, fork_allocator, NULL), 0);
	int rounds = (int)(20 * test_scale()) + 2;
	for (int round = 0; round < rounds; round++) {
		if (round % 3 == 0 && !UNDER_TSAN)
			cgc_collect();
		pid_t pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			alarm(20);
			/* Memcheck in the child: an object another thread was allocating at the fork (its
			 * state byte set, memcheck not yet told) is lost with that thread, and the child's
			 * sweep frees it as a block memcheck never saw: an "Invalid free" that is memcheck's
			 * bookkeeping, not a bug (seen in CI). The child's checks still run. */
			if (RUNNING_ON_VALGRIND)
				VALGRIND_DISABLE_ERROR_REPORTING;
			int rc = fork_child_work();
			if (RUNNING_ON_VALGRIND)
				VALGRIND_ENABLE_ERROR_REPORTING;
			_exit(rc);
		}
		int status;
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			      "child %d of round %d: status %#x (a SIGALRM means it deadlocked)", pid, round, status);
	}
	__atomic_store_n(&fork_stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < nalloc; i++)
		pthread_join(t[i], NULL);
}
END_TEST

/* ---- 13. environment knobs (run in a fresh process: options are read once) ------------------- */

static char self_path[PATH_MAX];

/* The scenario the child runs: three forced collections and nothing automatic; prints what the
 * knobs were on stdout. */
static int scenario(void)
{
	int pct = cgc_set_percent(-1);
	size_t lim = cgc_set_memlimit(SIZE_MAX);
	uintptr_t h = make_obj(1000, 50, &g_bss_slot);
	for (int i = 0; i < 3; i++) {
		make_obj(5000, 51, NULL);
		COLLECT();
	}
	int ok = obj_state(h, 1000, 50) == OBJ_OK;
	printf("percent %d memlimit %zu ok %d collections %llu\n", pct, lim, ok,
	       (unsigned long long)collections());
	return ok ? 0 : 1;
}

/* 1 if the mapping that holds p is advised MADV_HUGEPAGE ("hg" in its VmFlags), 0 if not, -1 if
 * /proc/self/smaps does not say. */
static int advised_hugepages(const void *p)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	if (f == NULL)
		return -1;
	char line[512];
	int in = 0, r = -1;
	while (fgets(line, sizeof line, f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
		} else if (in && strncmp(line, "VmFlags:", 8) == 0) {
			r = strstr(line, " hg") != NULL;
			break;
		}
	}
	fclose(f);
	return r;
}

/* The huge-page scenario: a heap past its first 64 MiB arena; prints whether its first and its
 * newest objects' mappings are advised MADV_HUGEPAGE. */
static int scenario_huge(void)
{
	enum { N = 96 };
	static void *keep[N];
	for (int i = 0; i < N; i++)
		keep[i] = cgc_malloc_atomic(1 << 20);
	printf("hg %d %d\n", advised_hugepages(keep[0]), advised_hugepages(keep[N - 1]));
	return 0;
}

struct run_out {
	int huge; /* in: run the huge-page scenario */
	int status;
	char out[4096], err[8192];
};

static void slurp(FILE *f, char *buf, size_t cap)
{
	rewind(f);
	size_t n = fread(buf, 1, cap - 1, f);
	buf[n] = 0;
	fclose(f);
}

/* Runs this program's scenario with the CGC_ variables given (every other CGC_ variable removed). */
static void run_scenario(struct run_out *r, const char *const *vars)
{
	extern char **environ;
	size_t n = 0, nv = 0;
	while (environ[n])
		n++;
	while (vars[nv])
		nv++;
	char **env = calloc(n + nv + 1, sizeof *env);
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "CGC_", 4) != 0)
			env[k++] = environ[i];
	for (size_t i = 0; i < nv; i++)
		env[k++] = (char *)vars[i];
	env[k] = NULL;
	FILE *out = tmpfile(), *err = tmpfile();
	ck_assert(out && err);
	char *argv[] = {self_path, r->huge ? "--scenario-huge" : "--scenario", NULL};
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(fileno(out), 1);
		dup2(fileno(err), 2);
		execve(self_path, argv, env);
		_exit(127);
	}
	ck_assert_int_eq(waitpid(pid, &r->status, 0), pid);
	free(env);
	slurp(out, r->out, sizeof r->out);
	slurp(err, r->err, sizeof r->err);
}

/* Lines of s that start with prefix. */
static int count_lines(const char *s, const char *prefix)
{
	int k = 0;
	size_t pl = strlen(prefix);
	for (const char *l = s; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l))
		k += strncmp(l, prefix, pl) == 0;
	return k;
}

static int count_all_lines(const char *s)
{
	int k = 0;
	for (; *s; s++)
		k += *s == '\n';
	return k;
}

START_TEST(test_env_gctrace)
{
	struct run_out r = {0};
	run_scenario(&r, (const char *const[]){"CGC_DEBUG=gctrace=1", NULL});
	ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "status %#x; stderr:\n%s", r.status, r.err);
	ck_assert_msg(count_lines(r.err, "gc ") == 3 && count_all_lines(r.err) == 3,
		      "expected three gc lines, got:\n%s", r.err);
	ck_assert_msg(strncmp(r.err, "gc 1 @", 6) == 0 && strstr(r.err, "\ngc 2 @") && strstr(r.err, "\ngc 3 @"),
		      "lines not numbered 1, 2, 3:\n%s", r.err);
	ck_assert_msg(strstr(r.err, "(forced)") != NULL, "%s", r.err);
	/* gctrace=0 and no variable at all: silent. */
	run_scenario(&r, (const char *const[]){"CGC_DEBUG=gctrace=0", NULL});
	ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0 && r.err[0] == 0, "stderr:\n%s", r.err);
	run_scenario(&r, (const char *const[]){NULL});
	ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0 && r.err[0] == 0, "stderr:\n%s", r.err);
	ck_assert_msg(strstr(r.out, "percent 100 ") != NULL, "defaults: %s", r.out);
}
END_TEST

START_TEST(test_env_bad_values)
{
	static const struct {
		const char *var, *mentions, *out;
	} cases[] = {
		{"CGC_PERCENT=abc", "CGC_PERCENT", "percent 100 "},
		{"CGC_PERCENT=-5", "CGC_PERCENT", "percent 100 "},
		{"CGC_MEMLIMIT=12XB", "CGC_MEMLIMIT", "memlimit 18446744073709551615 "},
		{"CGC_MEMLIMIT=MiB", "CGC_MEMLIMIT", "memlimit 18446744073709551615 "},
		{"CGC_DEBUG=bogus=1", "bogus", "ok 1"},
		{"CGC_DEBUG=gctrace=7", "gctrace", "ok 1"},
	};
	struct run_out r = {0};
	for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		run_scenario(&r, (const char *const[]){cases[i].var, NULL});
		ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "%s: status %#x; stderr:\n%s",
			      cases[i].var, r.status, r.err);
		ck_assert_msg(count_all_lines(r.err) == 1 && strncmp(r.err, "cgc: ", 5) == 0 &&
				      strstr(r.err, cases[i].mentions) != NULL,
			      "%s: expected one line \"cgc: ...%s...\", got:\n%s", cases[i].var, cases[i].mentions, r.err);
		ck_assert_msg(strstr(r.out, cases[i].out) != NULL, "%s: not ignored: %s", cases[i].var, r.out);
	}
	/* Good values take effect, and a bad key does not stop the good one after it. */
	run_scenario(&r, (const char *const[]){"CGC_PERCENT=250", "CGC_MEMLIMIT=3GiB", NULL});
	ck_assert_msg(r.err[0] == 0 && strstr(r.out, "percent 250 memlimit 3221225472 "), "%s%s", r.out, r.err);
	run_scenario(&r, (const char *const[]){"CGC_DEBUG=bogus=1,gctrace=1", NULL});
	ck_assert_msg(count_lines(r.err, "cgc: ") == 1 && count_lines(r.err, "gc ") == 3 &&
			      count_all_lines(r.err) == 4,
		      "got:\n%s", r.err);
}
END_TEST

/* Huge pages only when asked for (doc/design/allocator.md 5.5), and then for the whole heap, its
 * first arena included. */
START_TEST(test_env_hugepages)
{
	if (RUNNING_ON_VALGRIND || access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) != 0)
		return; /* cgc advises nothing under memcheck; a kernel without THP has nothing to advise */
	struct run_out r = {.huge = 1};
	run_scenario(&r, (const char *const[]){NULL});
	ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0 && strstr(r.out, "hg 0 0\n"),
		      "default: %s%s", r.out, r.err);
	r = (struct run_out){.huge = 1};
	run_scenario(&r, (const char *const[]){"CGC_DEBUG=hugepages=1", NULL});
	ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0 && strstr(r.out, "hg 1 1\n"),
		      "hugepages=1: %s%s", r.out, r.err);
}
END_TEST

/* ---- 14. cgc_set_percent and cgc_set_memlimit ---------------------------------------------------- */

static NOINLINE void large_garbage(int count, size_t n)
{
	for (int i = 0; i < count; i++) {
		void *p = cgc_malloc(n);
		__asm__ volatile("" ::"r"(p) : "memory");
	}
}

START_TEST(test_knobs)
{
	if (UNDER_TSAN)
		return; /* the goal grows with the roots: TSan's runtime data make it far above 16 MiB */
	COLLECT();
	int old = cgc_set_percent(-1);
	ck_assert_int_eq(cgc_set_percent(-1), -1);
	cgc_get_stats(&st);
	struct cgc_stats s0 = st;
	ck_assert_uint_eq(s0.goal, SIZE_MAX);
	large_garbage(256, 64 << 10); /* 16 MiB, four times the smallest goal */
	cgc_get_stats(&st);
	ck_assert_uint_eq(st.collections, s0.collections);
	ck_assert_uint_ge(st.heap_inuse, s0.heap_inuse + (16u << 20));
	/* The control: with collection on, the same garbage starts cycles by itself. */
	ck_assert_int_eq(cgc_set_percent(old < 0 ? 100 : old), -1);
	cgc_get_stats(&s0);
	large_garbage(256, 64 << 10);
	cgc_get_stats(&st);
	ck_assert_uint_gt(st.collections, s0.collections);

	/* A memory limit lowers the goal, and more cycles run for the same garbage. */
	cgc_set_percent(100);
	COLLECT();
	cgc_get_stats(&s0);
	ck_assert_uint_ge(s0.goal, 4u << 20);
	size_t limit = 2u << 20;
	size_t old_limit = cgc_set_memlimit(limit);
	cgc_get_stats(&st);
	ck_assert_uint_lt(st.goal, s0.goal);
	/* The floor: never below what is live plus a sixteenth plus 1 MiB (7). */
	size_t floor = s0.live_after_mark + s0.live_after_mark / 16 + (1u << 20);
	ck_assert_uint_le(st.goal, limit > floor ? limit : floor);
	ck_assert_uint_ge(st.goal, floor);
	uint64_t c0 = st.collections;
	large_garbage(256, 64 << 10);
	ck_assert_uint_ge(collections(), c0 + 4); /* 16 MiB with a goal near 1 MiB */
	ck_assert_uint_eq(cgc_set_memlimit(old_limit), limit);
	cgc_set_percent(old);
	COLLECT();
	cgc_get_stats(&st);
	ck_assert_uint_ge(st.goal, 4u << 20);
}
END_TEST

/* Bytes of 64 KiB garbage allocated until the next cycle starts by itself. */
static NOINLINE size_t bytes_until_next_cycle(void)
{
	uint64_t c0 = collections();
	size_t n = 0;
	while (collections() == c0 && n < ((size_t)1 << 30)) {
		large_garbage(1, 64 << 10);
		n += 64 << 10;
	}
	return n;
}

/* The pacer after a cycle that found much dead large garbage: the next cycle still comes after
 * about goal - live bytes. The dead were never in heap_live once that cycle reset its count; a
 * sweep that gave them back again made heap_live read low by as much, and the next cycle came
 * that much later (32 MiB late here, found by this test). cgc_collect sweeps before it returns,
 * so the numbers are exact, not timing. */
START_TEST(test_pacer_after_large_garbage)
{
	if (UNDER_TSAN)
		return;
	int old = cgc_set_percent(-1);
	large_garbage(512, 64 << 10); /* 32 MiB, kept uncollected */
	cgc_set_percent(100);
	COLLECT();
	cgc_get_stats(&st);
	size_t room = st.goal - st.live_after_mark;
	size_t n = bytes_until_next_cycle();
	ck_assert_msg(n <= room + (1u << 20), "the next cycle came after %zu bytes; goal %zu, live %zu", n,
		      st.goal, st.live_after_mark);
	cgc_set_percent(old);
}
END_TEST

/* The pacer counts explicit frees: a program that frees everything it allocates, in a sliding
 * window much smaller than the minimum heap, never needs a cycle. Before frees were counted, this
 * loop (64 MiB through a 640 KiB window) collected 6 times; bench/alloc.c spent a
 * third of its time collecting. Both the current span's own slots coming back and spans taken
 * again are exercised, in four size classes, and a second thread frees a quarter remotely. */
#define WINDOW_OBJS 4096

static void *remote_free_main(void *arg)
{
	void **objs = arg;
	for (int i = 0; objs[i]; i++)
		cgc_free(objs[i]);
	return NULL;
}

START_TEST(test_pacer_counts_frees)
{
	COLLECT();
	cgc_get_stats(&st);
	uint64_t cycles = st.collections;
	static void *win[WINDOW_OBJS];
	size_t total = 0;
	for (unsigned i = 0; total < ((size_t)64 << 20); i++) {
		size_t n = 64 + 64 * (i % 4);
		void **slot = &win[i % WINDOW_OBJS];
		if (*slot)
			cgc_free(*slot);
		*slot = cgc_malloc(n);
		total += n;
		if (i % 65536 == 65535) { /* a batch freed by another thread */
			void **batch = cgc_malloc((WINDOW_OBJS + 1) * sizeof(void *));
			memcpy(batch, win, sizeof win);
			memset(win, 0, sizeof win);
			pthread_t t;
			ck_assert_int_eq(pthread_create(&t, NULL, remote_free_main, batch), 0);
			pthread_join(t, NULL);
		}
	}
	for (unsigned i = 0; i < WINDOW_OBJS; i++)
		cgc_free(win[i]), win[i] = NULL;
	cgc_get_stats(&st);
	ck_assert_msg(st.collections <= cycles + 1, "%llu cycles for a heap that never held 1 MiB",
		      (unsigned long long)(st.collections - cycles));
}
END_TEST

/* ---- 15. statistics ----------------------------------------------------------------------------- */

#define LIVE_OBJS 2000
static void *volatile g_live_table;

static NOINLINE void make_live_and_dead(int dead)
{
	void **tab = cgc_malloc(LIVE_OBJS * sizeof(void *));
	for (int i = 0; i < LIVE_OBJS; i++)
		tab[i] = cgc_malloc(256);
	g_live_table = tab;
	for (int i = 0; i < dead; i++) {
		void *p = cgc_malloc(128);
		__asm__ volatile("" ::"r"(p) : "memory");
	}
}

START_TEST(test_stats)
{
	int dead = 10000;
	COLLECT();
	struct cgc_stats s0;
	cgc_get_stats(&s0);
	make_live_and_dead(dead);
	COLLECT();
	cgc_get_stats(&st);
	ck_assert_uint_eq(st.collections, s0.collections + 1);
	ck_assert_uint_gt(st.pause_last_ns, 0);
	ck_assert_uint_ge(2 * st.pause_max_ns, st.pause_last_ns); /* at most two stops a cycle */
	ck_assert_uint_ge(st.pause_max_ns, s0.pause_max_ns);
	ck_assert_uint_eq(st.pause_total_ns, s0.pause_total_ns + st.pause_last_ns);
	ck_assert_uint_gt(st.mark_cpu_ns, s0.mark_cpu_ns);
	size_t live = LIVE_OBJS * (256 + 0) + LIVE_OBJS * sizeof(void *);
	ck_assert_uint_ge(st.live_after_mark, s0.live_after_mark + live);
	/* What was marked is what stayed: live_after_mark cannot exceed the heap in use. */
	ck_assert_uint_le(st.live_after_mark, st.heap_inuse);
	if (UNDER_TSAN)
		return;
	ck_assert_msg(st.swept_objects >= s0.swept_objects + (uint64_t)dead * 9 / 10,
		      "swept %llu, expected about %d more than %llu", (unsigned long long)st.swept_objects,
		      dead, (unsigned long long)s0.swept_objects);
	ck_assert_uint_ge(st.objects, s0.objects + LIVE_OBJS + 1);
	/* Dropping the table frees all of it at the next cycle. */
	g_live_table = NULL;
	struct cgc_stats s1 = st;
	COLLECT();
	cgc_get_stats(&st);
	ck_assert_uint_eq(st.collections, s1.collections + 1);
	ck_assert_uint_le(st.live_after_mark, s1.live_after_mark - live * 9 / 10);
	ck_assert_uint_ge(st.swept_objects, s1.swept_objects + LIVE_OBJS * 9 / 10);
	ck_assert_uint_eq(st.nmalloc - st.nfree, st.objects);
}
END_TEST

/* ---- the suite -------------------------------------------------------------------------------- */

static Suite *gc_suite(void)
{
	Suite *s = suite_create("gc");
	TCase *roots = tcase_create("roots");
	tcase_set_timeout(roots, 60);
	tcase_add_test(roots, test_root_globals);
	tcase_add_test(roots, test_root_dlopen_global);
	tcase_add_test(roots, test_root_static_tls);
	tcase_add_test(roots, test_root_dlopen_tls);
	tcase_add_test(roots, test_root_thread_stack);
	tcase_add_test(roots, test_root_registers);
	tcase_add_test(roots, test_root_add_remove);
	suite_add_tcase(s, roots);
	TCase *mark = tcase_create("marking");
	tcase_set_timeout(mark, 60);
	tcase_add_test(mark, test_interior_and_past_end);
	tcase_add_test(mark, test_garbage_reclaimed);
	tcase_add_test(mark, test_noscan_not_scanned);
	tcase_add_test(mark, test_long_chains);
	suite_add_tcase(s, mark);
	TCase *thr = tcase_create("threads");
	tcase_set_timeout(thr, 60);
	tcase_add_test(thr, test_thread_auto_registered);
	tcase_add_test(thr, test_thread_create_arg);
	tcase_add_test(thr, test_thread_register_unregister);
	tcase_add_test(thr, test_thread_blocking);
	tcase_add_test(thr, test_fork_while_allocating);
	suite_add_tcase(s, thr);
	TCase *knobs = tcase_create("knobs");
	tcase_set_timeout(knobs, 60);
	tcase_add_test(knobs, test_env_gctrace);
	tcase_add_test(knobs, test_env_bad_values);
	tcase_add_test(knobs, test_env_hugepages);
	tcase_add_test(knobs, test_knobs);
	tcase_add_test(knobs, test_pacer_after_large_garbage);
	tcase_add_test(knobs, test_pacer_counts_frees);
	tcase_add_test(knobs, test_stats);
	suite_add_tcase(s, knobs);
	return s;
}

int main(int argc, char **argv)
{
	ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
	if (n > 0)
		self_path[n] = 0;
	else
		snprintf(self_path, sizeof self_path, "%s", argv[0]);
	if (argc > 1 && strcmp(argv[1], "--scenario") == 0)
		return scenario();
	if (argc > 1 && strcmp(argv[1], "--scenario-huge") == 0)
		return scenario_huge();
	/* Nothing of cgc runs in this process: each test starts it afresh in its own child (Check's
	 * fork mode), so the knobs and statistics each test reads are its own. */
	SRunner *sr = srunner_create(gc_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
