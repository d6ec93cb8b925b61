/* check_concurrent.c - concurrent marking: cycles that mark beside the program, with the barrier
 * and with write tracking, verified by checkmark; a program that breaks its barrier promise is
 * caught; the stw knob; stops against holds and blocking calls. doc/design/collector.md 3.5, 8
 * and 9, doc/design/barrier.md. */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <valgrind/memcheck.h>

#include "alloc/alloc.h"
#include "gc/gc.h"
#include "include/cgc.h"
#include "include/cgc_barrier.h"
#include "tests/testutil.h"

static uint64_t collections(void)
{
	struct cgc_stats st;
	cgc_get_stats(&st);
	return st.collections;
}

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

typedef struct node {
	struct node *l, *r;
	long depth;
	long sum; /* depth + the children's depths: a freed and reused node breaks it */
} node_t;

/* How the workload stores pointers into nodes and globals: with the barrier, or plainly. */
static int use_barrier;
#define STORE(lv, v)                                                                               \
	do {                                                                                       \
		if (use_barrier)                                                                   \
			CGC_WRITE(lv, v);                                                          \
		else                                                                               \
			(lv) = (v);                                                                \
	} while (0)

static node_t *g_roots[4];

/* For the worker threads: no ck_assert there. Check's assertions take a lock of Check's own; a
 * thread stopped by the collector while holding it leaves the others blocked in
 * pthread_mutex_lock, where ThreadSanitizer never runs their stop handler (a deadlock seen under
 * TSan). A failure here aborts, which Check reports with the message printed. */
#define REQUIRE(cond, ...)                                                                         \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static node_t *tree(long d)
{
	node_t *n = cgc_malloc(sizeof *n);
	REQUIRE(n != NULL, "cgc_malloc failed");
	n->depth = d;
	if (d > 0) {
		node_t *l = tree(d - 1);
		STORE(n->l, l);
		node_t *r = tree(d - 1);
		STORE(n->r, r);
	}
	n->sum = d + (d > 0 ? 2 * (d - 1) : 0);
	return n;
}

static long check(const node_t *n)
{
	if (n == NULL)
		return 0;
	long want = n->depth + (n->l ? n->l->depth : 0) + (n->r ? n->r->depth : 0);
	REQUIRE(n->sum == want && cgc_base(n) == n, "node %p corrupt: sum %ld, want %ld", (void *)n, n->sum,
		want);
	return 1 + check(n->l) + check(n->r);
}

/* A random node at most k levels down. */
static node_t *walk(node_t *n, unsigned *seed, int k)
{
	while (k-- > 0 && n->l && n->r)
		n = (rand_r(seed) & 1) ? n->l : n->r;
	return n;
}

struct worker {
	int id, iters;
	unsigned seed;
};

/* Keeps a tree of depth 14 in a global and one on its stack; swaps their subtrees (the stores a
 * concurrent mark must hear of), builds and drops short-lived trees, frees and reallocates. */
static void *worker(void *arg)
{
	struct worker *w = arg;
	node_t *local = tree(14);
	node_t *g = tree(14);
	STORE(g_roots[w->id], g);
	for (int i = 0; i < w->iters; i++) {
		node_t *t = tree(6);
		check(t);
		for (int k = 0; k < 8; k++) {
			node_t *x = walk(g_roots[w->id], &w->seed, 6), *y = walk(local, &w->seed, 6);
			if (x->l && y->l && x->depth == y->depth) {
				node_t *tmp = x->l;
				STORE(x->l, y->l);
				STORE(y->l, tmp);
			}
		}
		/* Explicit frees and reallocations while marking may run (spans are not freed then). */
		void *big = cgc_malloc(100 << 10);
		big = cgc_realloc(big, 60 << 10);
		cgc_free(big);
		node_t *tmp = cgc_malloc(sizeof(node_t));
		cgc_free(tmp);
	}
	check(local);
	check(g_roots[w->id]);
	return NULL;
}

/* Runs the workload on 3 threads; returns the concurrent cycles it saw. */
static uint64_t run_workload(int iters)
{
	uint64_t c0 = load_relaxed(&gc.cycles_concurrent);
	pthread_t t[3];
	struct worker w[3];
	for (int i = 0; i < 3; i++) {
		w[i] = (struct worker){i, iters, 12345u + (unsigned)i};
		ck_assert_int_eq(pthread_create(&t[i], NULL, worker, &w[i]), 0);
	}
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 3; i++)
		check(g_roots[i]);
	return load_relaxed(&gc.cycles_concurrent) - c0;
}

static int iters(void)
{
	double n = 400 * test_scale();
	return rt_valgrind ? 20 : n < 40 ? 40 : (int)n;
}

/* Every cycle concurrent and verified. Set before the first cycle: this process is the test's
 * own (Check's fork mode). */
static void concurrent_checked(void)
{
	gc_opt.stw = 0;
	gc_opt.checkmark = 1;
	cgc_set_percent(25);
}

START_TEST(test_barrier_mode)
{
	concurrent_checked();
	use_barrier = 1;
	ck_assert_int_eq(cgc_set_barrier(1), 0);
	ck_assert_int_eq(cgc_set_barrier(1), 1);
	uint64_t n = run_workload(iters());
	ck_assert_msg(n > 0, "no cycle marked concurrently");
	struct cgc_stats st;
	cgc_get_stats(&st);
	ck_assert_uint_gt(st.collections, st.forced_collections);
	ck_assert_uint_ge(2 * st.pause_max_ns, st.pause_last_ns);
}
END_TEST

START_TEST(test_write_tracking_mode)
{
	if (dirty_why != NULL) {
		/* Not this kernel (or valgrind): cycles stop the world, which the suite tests. */
		fprintf(stderr, "test_write_tracking_mode: skipped: %s\n", dirty_why);
		return;
	}
	concurrent_checked();
	use_barrier = 0;
	uint64_t n = run_workload(iters());
	ck_assert_msg(n > 0, "no cycle marked concurrently");
}
END_TEST

/* stw=1: the program promised the barrier, and still no cycle marks concurrently. */
START_TEST(test_stw_knob)
{
	gc_opt.stw = 1;
	cgc_set_percent(25);
	use_barrier = 1;
	cgc_set_barrier(1);
	ck_assert_uint_eq(run_workload(iters() / 4), 0);
	ck_assert_uint_gt(collections(), 0);
}
END_TEST

/* A program that promises the barrier and stores plainly loses objects; checkmark must say so
 * (one "cgc: checkmark:" line, then abort) within a few cycles. Run in a child, since it aborts. */
START_TEST(test_broken_promise_caught)
{
	if (rt_valgrind || UNDER_TSAN)
		return; /* minutes of a racy workload; the point is made by the other varieties */
	int fd[2];
	ck_assert_int_eq(pipe(fd), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(fd[1], 2);
		close(fd[0]);
		concurrent_checked();
		cgc_set_barrier(1);
		use_barrier = 0; /* the lie */
		for (int round = 0; round < 200; round++)
			run_workload(100);
		_exit(0);
	}
	close(fd[1]);
	char err[4096];
	size_t got = 0;
	ssize_t r;
	while (got < sizeof err - 1 && (r = read(fd[0], err + got, sizeof err - 1 - got)) > 0)
		got += (size_t)r;
	err[got] = 0;
	close(fd[0]);
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
		      "the broken promise went unnoticed (status %#x); stderr:\n%s", status, err);
	ck_assert_msg(strncmp(err, "cgc: checkmark: ", 16) == 0 && strstr(err, "left it white") &&
			      strstr(err, "reached from the root"),
		      "expected one cgc: checkmark: line, got:\n%s", err);
}
END_TEST

/* A stop that reaches a thread inside a hold (threads_hold_stop) waits for the hold to end: the
 * collection cannot finish before the holder has released, and the holder, stopped at its release,
 * is scanned with what it held in registers and on its stack then. */
static int hold_state; /* atomic: 1 holding, 2 about to release, 3 released */
static void *volatile hold_obj;

static void *holder(void *arg)
{
	(void)arg;
	void **o = cgc_malloc(64);
	o[0] = cgc_malloc(48); /* reachable only through o, and o only from this thread */
	threads_hold_stop();
	__atomic_store_n(&hold_state, 1, __ATOMIC_RELEASE);
	/* Long enough for the collection to have signalled us and be waiting. */
	struct timespec ts = {0, 50 * 1000 * 1000};
	nanosleep(&ts, NULL);
	__atomic_store_n(&hold_state, 2, __ATOMIC_RELEASE);
	threads_release_stop();
	__atomic_store_n(&hold_state, 3, __ATOMIC_RELEASE);
	REQUIRE(cgc_base(o) == o && cgc_base(o[0]) == o[0], "what the holder kept was freed");
	hold_obj = o;
	return NULL;
}

START_TEST(test_stop_waits_for_hold)
{
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, holder, NULL), 0);
	while (__atomic_load_n(&hold_state, __ATOMIC_ACQUIRE) == 0)
		sched_yield();
	uint64_t c0 = collections();
	cgc_collect();
	int seen = __atomic_load_n(&hold_state, __ATOMIC_ACQUIRE);
	ck_assert_msg(seen >= 2, "the collection finished while a thread held off stops (state %d)", seen);
	ck_assert_uint_gt(collections(), c0);
	pthread_join(t, NULL);
	void **o = hold_obj;
	ck_assert_ptr_eq(cgc_base(o[0]), o[0]);
	hold_obj = NULL;
}
END_TEST

/* A thread's move into a blocking call races the stops of a collecting thread. The threads block
 * every signal and do a little work before cgc_enter_blocking, as a program may: a stop that finds
 * one there counts it as running, and its signal cannot arrive. Then the thread waits, blocking,
 * for the collection under way to end; that collection waits for the thread's acknowledgement,
 * which only cgc_enter_blocking can still give (doc/design/collector.md 3.5). Each wait is bounded,
 * so the hang shows as a wait that timed out; the test ends at the first one. */
#define BLOCKERS 3
static uint32_t blk_gen;      /* atomic: collections the collecting thread has finished */
static uint32_t blk_over;     /* atomic: the test is over */
static uint32_t blk_timeouts; /* atomic: waits that ran out */
static uint64_t blk_rounds;   /* atomic: blocking calls made */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *blocker(void *arg)
{
	(void)arg;
	void **o = cgc_malloc(64);
	REQUIRE(o != NULL, "cgc_malloc failed");
	o[0] = cgc_malloc(48); /* reachable only through o, and o only from this thread */
	void **volatile keep = o;
	o = NULL;
	/* A collection takes well under a second here; valgrind (STRESS_SCALE 0.05) slows it. */
	double limit = 2.0 / (test_scale() < 1 ? test_scale() : 1);
	sigset_t all, old;
	sigfillset(&all);
	while (!__atomic_load_n(&blk_over, __ATOMIC_ACQUIRE)) {
		pthread_sigmask(SIG_BLOCK, &all, &old);
		for (double t = now_s() + 20e-6; now_s() < t;)
			;
		uint32_t g = __atomic_load_n(&blk_gen, __ATOMIC_ACQUIRE);
		cgc_enter_blocking();
		/* No heap pointer touched until cgc_exit_blocking. */
		double until = now_s() + limit;
		while (__atomic_load_n(&blk_gen, __ATOMIC_ACQUIRE) == g &&
		       !__atomic_load_n(&blk_over, __ATOMIC_ACQUIRE)) {
			if (now_s() > until) {
				__atomic_fetch_add(&blk_timeouts, 1, __ATOMIC_RELAXED);
				__atomic_store_n(&blk_over, 1, __ATOMIC_RELEASE);
				break;
			}
			struct timespec ts = {0, 50 * 1000};
			nanosleep(&ts, NULL);
		}
		cgc_exit_blocking();
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		__atomic_fetch_add(&blk_rounds, 1, __ATOMIC_RELAXED);
	}
	REQUIRE(cgc_base(keep) == keep && cgc_base(keep[0]) == keep[0],
		"what a blocking thread kept was freed");
	return NULL;
}

START_TEST(test_blocking_races_stop)
{
	pthread_t t[BLOCKERS];
	for (int i = 0; i < BLOCKERS; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, blocker, NULL), 0);
	uint64_t n = 0;
	double end = now_s() + 2.0;
	for (; now_s() < end && !__atomic_load_n(&blk_over, __ATOMIC_ACQUIRE); n++) {
		cgc_collect();
		__atomic_fetch_add(&blk_gen, 1, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&blk_over, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < BLOCKERS; i++)
		pthread_join(t[i], NULL);
	printf("blocking races: %llu collections, %llu blocking calls\n", (unsigned long long)n,
	       (unsigned long long)__atomic_load_n(&blk_rounds, __ATOMIC_RELAXED));
	ck_assert_msg(__atomic_load_n(&blk_timeouts, __ATOMIC_RELAXED) == 0,
		      "a stop waited for a thread that had started blocking (after %llu "
		      "collections)", (unsigned long long)n);
}
END_TEST

#if defined(__x86_64__)
/* cgc_enter_blocking records what its caller holds in callee-saved registers, the values the caller
 * finds again on return, not cgc_enter_blocking's own: one it saved in its frame and reused
 * before taking the registers would otherwise hold a pointer that no scan sees while the thread
 * blocks (GCC kept a local's address in r12 there, and rbx for the thread's record). */
START_TEST(test_blocking_keeps_callee_saved)
{
	static const uint64_t mark[5] = {0x5eed00000000b0b1ull, 0x5eed00000000b0b2ull,
					 0x5eed00000000b0b3ull, 0x5eed00000000b0b4ull,
					 0x5eed00000000b0b5ull};
	ck_assert_ptr_nonnull(threads_register_self());
	/* Past the red zone, the five registers saved, and the stack aligned for the call. */
	__asm__ volatile("sub $128, %%rsp\n\t"
			 "mov %0, %%rax\n\t" /* %0 may be one of the five */
			 "push %%rbx\n\tpush %%r12\n\tpush %%r13\n\tpush %%r14\n\tpush %%r15\n\t"
			 "mov 0(%%rax), %%rbx\n\tmov 8(%%rax), %%r12\n\tmov 16(%%rax), %%r13\n\t"
			 "mov 24(%%rax), %%r14\n\tmov 32(%%rax), %%r15\n\t"
			 "sub $8, %%rsp\n\t"
			 "call cgc_enter_blocking\n\t"
			 "add $8, %%rsp\n\t"
			 "pop %%r15\n\tpop %%r14\n\tpop %%r13\n\tpop %%r12\n\tpop %%rbx\n\t"
			 "add $128, %%rsp"
			 :
			 : "r"(mark)
			 : "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "memory",
			   "cc");
	gthread_t *t = tls_gthread;
	ck_assert_uint_eq(__atomic_load_n(&t->state, __ATOMIC_RELAXED), THREAD_BLOCKING);
	/* The copied frame has padding never written; the collector's scan declares what it reads
	 * defined (collector.md 5.5), and so must this one under valgrind. */
	VALGRIND_MAKE_MEM_DEFINED(t->regs, t->regs_size);
	int found = 0;
	for (int i = 0; i < 5; i++)
		for (size_t j = 0; j < t->regs_size / sizeof(uint64_t); j++)
			if (((const uint64_t *)t->regs)[j] == mark[i]) {
				found++;
				break;
			}
	cgc_exit_blocking();
	ck_assert_msg(found == 5, "only %d of the caller's 5 callee-saved registers were recorded",
		      found);
}
END_TEST
#endif

static Suite *concurrent_suite(void)
{
	Suite *s = suite_create("concurrent");
	TCase *tc = tcase_create("modes");
	tcase_set_timeout(tc, test_timeout(120));
	tcase_add_test(tc, test_barrier_mode);
	tcase_add_test(tc, test_write_tracking_mode);
	tcase_add_test(tc, test_stw_knob);
	tcase_add_test(tc, test_broken_promise_caught);
	tcase_add_test(tc, test_stop_waits_for_hold);
	tcase_add_test(tc, test_blocking_races_stop);
#if defined(__x86_64__)
	tcase_add_test(tc, test_blocking_keeps_callee_saved);
#endif
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(concurrent_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
