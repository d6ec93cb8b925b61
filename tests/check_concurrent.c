/* check_concurrent.c - concurrent marking: cycles that mark beside the program, with the barrier
 * and with write tracking, verified by checkmark; a program that breaks its barrier promise is
 * caught; the stw knob. doc/design/collector.md 8 and 9, doc/design/barrier.md. */
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
