/* tests/check_badinput.c - bad input to the public API: foreign, interior and double-freed pointers
 * abort with the exact one-line report of man/cgc_free.3; edge sizes and garbage do not abort. */

/* Every call that must abort runs in a child of our own (fork, stderr on a pipe), because the test
 * has to see both how the child died and the single line it wrote. Each such case runs twice:
 * plainly (the child must die of SIGABRT), and guarded, with a SIGABRT handler that checks the
 * heap was not touched by the rejected call and then exits 42. The handler is how "checks its
 * argument before it changes anything" (cgc_free(3)) is tested: after abort() nothing else runs. */

#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <valgrind/valgrind.h>

#include "alloc/alloc.h"
#include "include/cgc.h"
#include "tests/testutil.h"

/* The seed for the garbage addresses given to cgc_base; printed by main so a failure replays. */
static uint64_t seed;

/* A static array: its address is a pointer cgc never returned. */
static char global_buf[64];

/* ---- running a call in a child ----------------------------------------------------------- */

/* How a child ended and what it wrote to stderr. */
struct outcome {
	int status;     /* from waitpid */
	char err[2048]; /* stderr, NUL-terminated; cut if longer (the match then fails anyway) */
	size_t errlen;
};

typedef void (*child_fn)(const void *arg);

/* Runs fn(arg) in a child with stderr on a pipe; the child exits 0 if fn returns. */
static void run_in_child(child_fn fn, const void *arg, struct outcome *o)
{
	int fd[2];
	ck_assert_int_eq(pipe(fd), 0);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(fd[0]);
		dup2(fd[1], 2);
		close(fd[1]);
		/* The aborts are expected: no core files from them. Under valgrind, no leak scan at the
		 * child's end either: it means nothing for a child that aborts, and costs a tenth of a
		 * second per child, most of this program's time under memcheck. */
		struct rlimit rl = {0, 0};
		setrlimit(RLIMIT_CORE, &rl);
		VALGRIND_CLO_CHANGE("--leak-check=no");
		fn(arg);
		_exit(0);
	}
	close(fd[1]);
	o->errlen = 0;
	for (;;) {
		char buf[512];
		ssize_t n = read(fd[0], buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		/* Keep draining past the buffer, so a chatty child cannot block on a full pipe. */
		size_t room = sizeof o->err - 1 - o->errlen;
		size_t take = (size_t)n < room ? (size_t)n : room;
		memcpy(o->err + o->errlen, buf, take);
		o->errlen += take;
	}
	o->err[o->errlen] = '\0';
	close(fd[0]);
	while (waitpid(pid, &o->status, 0) < 0)
		ck_assert_int_eq(errno, EINTR);
}

static const char *describe_status(int status, char *buf, size_t cap)
{
	if (WIFEXITED(status))
		snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, cap, "died of signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(buf, cap, "wait status 0x%x", (unsigned)status);
	return buf;
}

/* ---- the rejected calls ------------------------------------------------------------------ */

enum op { OP_FREE, OP_REALLOC, OP_USABLE_SIZE, NUM_OPS };

/* The name in the report: the function called, minus its cgc_ prefix (cgc_free(3)). */
static const char *const op_name[NUM_OPS] = {"free", "realloc", "usable_size"};

static void do_op(enum op op, const void *p)
{
	switch (op) {
	case OP_FREE:
		cgc_free((void *)p);
		break;
	case OP_REALLOC: {
		void *volatile q = cgc_realloc((void *)p, 100);
		(void)q;
		break;
	}
	case OP_USABLE_SIZE: {
		volatile size_t n = cgc_usable_size(p);
		(void)n;
		break;
	}
	default:
		break;
	}
}

/* One bad call and what must follow from it. */
struct bad_call {
	enum op op;
	const void *ptr;       /* the bad argument */
	int from_thread;       /* make the call from a thread that did not allocate ptr's object */
	int guarded;           /* install the checking SIGABRT handler first */
	char want[320];        /* the expected stderr: one line, newline included */
	/* What the guard checks about the object the mistake concerns. */
	const void *victim;    /* its start, or NULL when the address is in no object */
	int victim_live;       /* allocated (interior pointer) rather than already freed */
	size_t victim_size;    /* its usable size, when live */
};

static void want_foreign(struct bad_call *b, const void *p)
{
	snprintf(b->want, sizeof b->want, "cgc: %s(): 0x%" PRIxPTR " was not allocated by cgc\n",
		 op_name[b->op], (uintptr_t)p);
}

static void want_interior(struct bad_call *b, const void *p, size_t size, const void *base)
{
	snprintf(b->want, sizeof b->want,
		 "cgc: %s(): 0x%" PRIxPTR " is an interior pointer into the %zu-byte object at 0x%" PRIxPTR
		 "\n", op_name[b->op], (uintptr_t)p, size, (uintptr_t)base);
}

static void want_tiny_interior(struct bad_call *b, const void *p, const void *base)
{
	snprintf(b->want, sizeof b->want,
		 "cgc: %s(): 0x%" PRIxPTR " is an interior pointer into the tiny object at 0x%" PRIxPTR
		 "\n", op_name[b->op], (uintptr_t)p, (uintptr_t)base);
}

static void want_double(struct bad_call *b, const void *p, size_t size)
{
	snprintf(b->want, sizeof b->want,
		 "cgc: %s(): double free of 0x%" PRIxPTR " (a %zu-byte object that is already free)\n",
		 op_name[b->op], (uintptr_t)p, size);
}

/* ---- the guard: is the heap as it was before the rejected call? --------------------------- */

/* Exit codes of a guarded child. 42: the heap is intact. Anything else names the first check that
 * failed; a validator that aborts shows as SIGABRT, since the handler is reset on entry. */
enum {
	GUARD_OK = 42,
	GUARD_RETURNED = 3,   /* the bad call returned instead of aborting */
	GUARD_STATS = 43,     /* counts changed */
	GUARD_WITNESS = 44,   /* a live object's contents changed */
	GUARD_VICTIM = 45,    /* the object the mistake was about changed state */
	GUARD_ALLOC = 46,     /* allocating afterwards failed or gave bad memory */
	GUARD_SETUP = 47,     /* the child could not set itself up */
};

#define NWITNESS 4

static struct {
	const struct bad_call *call;
	unsigned char *witness[NWITNESS]; /* live objects filled with a pattern */
	size_t witness_len[NWITNESS];
	struct cgc_stats before;
} guard;

static unsigned char pattern_byte(size_t i, size_t salt)
{
	return (unsigned char)(i * 131 + salt * 29 + 7);
}

static int witnesses_intact(void)
{
	for (int w = 0; w < NWITNESS; w++)
		for (size_t i = 0; i < guard.witness_len[w]; i++)
			if (guard.witness[w][i] != pattern_byte(i, (size_t)w))
				return 0;
	return 1;
}

static int guard_check(void)
{
	const struct bad_call *b = guard.call;
	struct cgc_stats st;
	cgc_get_stats(&st);
	if (st.objects != guard.before.objects || st.nmalloc != guard.before.nmalloc ||
	    st.nfree != guard.before.nfree || st.large_inuse != guard.before.large_inuse ||
	    st.tiny_allocs != guard.before.tiny_allocs || st.heap_spans != guard.before.heap_spans)
		return GUARD_STATS;
	mheap_validate();
	if (!witnesses_intact())
		return GUARD_WITNESS;
	if (b->victim != NULL) {
		/* Before anything is allocated here, which might reuse a freed victim's slot. */
		if (b->victim_live) {
			if (cgc_base(b->victim) != b->victim || cgc_usable_size(b->victim) != b->victim_size)
				return GUARD_VICTIM;
		} else if (cgc_base(b->victim) != NULL) {
			return GUARD_VICTIM;
		}
		span_t *s = spanmap_lookup((uintptr_t)b->victim);
		if (s != NULL && (s->kind == SPAN_SMALL || s->kind == SPAN_TINY))
			span_validate(s);
	}
	/* The heap still works: both flavours, small and large, freed again. */
	static const size_t sizes[] = {8, 64, 200, 4000, 40000};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		unsigned char *p = cgc_malloc(sizes[i]);
		unsigned char *q = cgc_malloc_atomic(sizes[i]);
		if (p == NULL || q == NULL)
			return GUARD_ALLOC;
		for (size_t k = 0; k < sizes[i]; k++)
			if (p[k] != 0)
				return GUARD_ALLOC;
		memset(p, 0x5a, sizes[i]);
		memset(q, 0xa5, sizes[i]);
		if (!witnesses_intact())
			return GUARD_WITNESS;
		cgc_free(p);
		cgc_free(q);
	}
	mheap_validate();
	return witnesses_intact() ? GUARD_OK : GUARD_WITNESS;
}

/* Calling the allocator from a signal handler is safe here and only here: the signal is raised
 * synchronously by cgc's own abort(), and a bad call is rejected before cgc takes any lock. */
static void guard_handler(int sig)
{
	(void)sig;
	_exit(guard_check());
}

/* Live objects filled with a pattern. Made once; a test whose victim is freed makes them before
 * freeing it, since a witness made later could take the victim's memory and turn the double free
 * into a valid one. Otherwise the guarded child makes them, so the plain run of a test that never
 * allocates meets a heap that does not exist yet. */
static int witnesses_setup(void)
{
	static const size_t lens[NWITNESS] = {24, 200, 3000, 90000};
	if (guard.witness[NWITNESS - 1] != NULL)
		return 1;
	for (int w = 0; w < NWITNESS; w++) {
		guard.witness_len[w] = lens[w];
		guard.witness[w] = w & 1 ? cgc_malloc_atomic(lens[w]) : cgc_malloc(lens[w]);
		if (guard.witness[w] == NULL)
			return 0;
		for (size_t i = 0; i < lens[w]; i++)
			guard.witness[w][i] = pattern_byte(i, (size_t)w);
	}
	return 1;
}

/* In the child: witnesses, a snapshot of the counts, and the handler (reset on entry, so a failed
 * validator inside it ends the child with SIGABRT rather than looping). */
static void guard_install(const struct bad_call *b)
{
	guard.call = b;
	if (!witnesses_setup())
		_exit(GUARD_SETUP);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = guard_handler;
	sa.sa_flags = SA_RESETHAND;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGABRT, &sa, NULL) != 0)
		_exit(GUARD_SETUP);
	cgc_get_stats(&guard.before);
}

static void *bad_call_thread(void *arg)
{
	const struct bad_call *b = arg;
	do_op(b->op, b->ptr);
	return NULL;
}

static void bad_call_child(const void *arg)
{
	const struct bad_call *b = arg;
	if (b->guarded)
		guard_install(b);
	if (b->from_thread) {
		pthread_t t;
		if (pthread_create(&t, NULL, bad_call_thread, (void *)b) != 0)
			_exit(GUARD_SETUP);
		pthread_join(t, NULL);
	} else {
		do_op(b->op, b->ptr);
	}
	_exit(GUARD_RETURNED);
}

/* Runs b plainly (SIGABRT, exactly b->want on stderr), then guarded (exit 42, the same line). */
static void check_bad(struct bad_call *b, const char *what)
{
	char sbuf[96];
	for (int guarded = 0; guarded < 2; guarded++) {
		struct outcome o;
		b->guarded = guarded;
		run_in_child(bad_call_child, b, &o);
		const char *mode = guarded ? "guarded" : "plain";
		if (guarded) {
			ck_assert_msg(WIFEXITED(o.status) && WEXITSTATUS(o.status) == GUARD_OK,
				      "%s, cgc_%s (%s): child %s, want exit %d (heap intact after the abort);"
				      " stderr: \"%s\"", what, op_name[b->op], mode,
				      describe_status(o.status, sbuf, sizeof sbuf), GUARD_OK, o.err);
		} else {
			ck_assert_msg(WIFSIGNALED(o.status) && WTERMSIG(o.status) == SIGABRT,
				      "%s, cgc_%s (%s): child %s, want SIGABRT; stderr: \"%s\"", what,
				      op_name[b->op], mode, describe_status(o.status, sbuf, sizeof sbuf), o.err);
		}
		ck_assert_msg(strcmp(o.err, b->want) == 0, "%s, cgc_%s (%s): stderr is \"%s\", want \"%s\"",
			      what, op_name[b->op], mode, o.err, b->want);
	}
}

/* The bad pointer p, not in any cgc object, for every entry point. */
static void check_foreign(const void *p, const char *what)
{
	for (int op = 0; op < NUM_OPS; op++) {
		struct bad_call b = {.op = (enum op)op, .ptr = p};
		want_foreign(&b, p);
		check_bad(&b, what);
	}
}

/* p + off, inside the live object p of usable size size, for every entry point. */
static void check_interior(const void *p, size_t off, const char *what)
{
	size_t size = cgc_usable_size(p);
	for (int op = 0; op < NUM_OPS; op++) {
		const void *bad = (const char *)p + off;
		struct bad_call b = {.op = (enum op)op, .ptr = bad, .victim = p, .victim_live = 1,
				     .victim_size = size};
		want_interior(&b, bad, size, p);
		check_bad(&b, what);
	}
}

/* p, already freed (size was its usable size), for every entry point; from_thread as given. */
static void check_double(const void *p, size_t size, int from_thread, const char *what)
{
	for (int op = 0; op < NUM_OPS; op++) {
		struct bad_call b = {.op = (enum op)op, .ptr = p, .from_thread = from_thread, .victim = p};
		want_double(&b, p, size);
		check_bad(&b, what);
	}
}

/* ---- foreign pointers -------------------------------------------------------------------- */

START_TEST(test_foreign_stack)
{
	char buf[64] = {0};
	check_foreign(buf + 16, "stack address");
}
END_TEST

START_TEST(test_foreign_malloc)
{
	char *p = malloc(64);
	ck_assert_ptr_nonnull(p);
	check_foreign(p, "glibc malloc() pointer");
	free(p);
}
END_TEST

START_TEST(test_foreign_global)
{
	check_foreign(global_buf, "address of a global");
}
END_TEST

/* Numbers that are not addresses at all. The plain runs reach cgc before its heap exists, since
 * nothing in this test allocated: the first lookup must cope with an empty heap range too. */
START_TEST(test_foreign_garbage)
{
	check_foreign((void *)(uintptr_t)0x10, "small integer");
	check_foreign((void *)(uintptr_t)0xffff800000000000ull, "non-canonical address");
	check_foreign((void *)UINTPTR_MAX, "all-ones address");
}
END_TEST

/* ---- interior pointers ------------------------------------------------------------------- */

START_TEST(test_interior_scan)
{
	char *p = cgc_malloc(64);
	ck_assert_ptr_nonnull(p);
	check_interior(p, 8, "scanned 64-byte object + 8");
	check_interior(p, 1, "scanned 64-byte object + 1");
	check_interior(p, cgc_usable_size(p) - 1, "scanned 64-byte object, last byte");
}
END_TEST

START_TEST(test_interior_atomic)
{
	char *p = cgc_malloc_atomic(64);
	ck_assert_ptr_nonnull(p);
	check_interior(p, 8, "atomic 64-byte object + 8");
	char *q = cgc_malloc_atomic(1000);
	ck_assert_ptr_nonnull(q);
	check_interior(q, 8, "atomic 1000-byte object + 8");
}
END_TEST

START_TEST(test_interior_large)
{
	char *p = cgc_malloc(40000);
	ck_assert_ptr_nonnull(p);
	ck_assert_uint_eq(cgc_usable_size(p), 5 * PAGE_SIZE);
	check_interior(p, PAGE_SIZE, "large object + PAGE_SIZE");
	check_interior(p, 1, "large object + 1");
	check_interior(p, 5 * PAGE_SIZE - 1, "large object, last byte");
	char *q = cgc_malloc_atomic(100000);
	ck_assert_ptr_nonnull(q);
	check_interior(q, 3 * PAGE_SIZE + 8, "atomic large object + 3 pages + 8");
}
END_TEST

/* ---- double frees ------------------------------------------------------------------------ */

/* A neighbour of the same class stays allocated, so the victim's span stays a span. */
static void check_double_small(int atomic, const char *what)
{
	ck_assert(witnesses_setup());
	char *keep = atomic ? cgc_malloc_atomic(64) : cgc_malloc(64);
	char *p = atomic ? cgc_malloc_atomic(64) : cgc_malloc(64);
	ck_assert_ptr_nonnull(keep);
	ck_assert_ptr_nonnull(p);
	size_t size = cgc_usable_size(p);
	cgc_free(p);
	check_double(p, size, 0, what);
	cgc_free(keep);
}

START_TEST(test_double_scan)
{
	check_double_small(0, "double free of a scanned small object");
}
END_TEST

START_TEST(test_double_atomic)
{
	check_double_small(1, "double free of an atomic small object");
}
END_TEST

START_TEST(test_double_large)
{
	ck_assert(witnesses_setup());
	char *keep = cgc_malloc(40000);
	char *p = cgc_malloc(40000);
	ck_assert_ptr_nonnull(keep);
	ck_assert_ptr_nonnull(p);
	size_t size = cgc_usable_size(p);
	cgc_free(p);
	check_double(p, size, 0, "double free of a large object");
	cgc_free(keep);
}
END_TEST

static void *free_thread(void *arg)
{
	cgc_free(arg);
	return NULL;
}

/* The owner frees, then another thread repeats it: the second free takes the remote path. */
START_TEST(test_double_remote_second)
{
	ck_assert(witnesses_setup());
	char *keep = cgc_malloc(64);
	char *p = cgc_malloc(64);
	ck_assert_ptr_nonnull(keep);
	ck_assert_ptr_nonnull(p);
	size_t size = cgc_usable_size(p);
	cgc_free(p);
	check_double(p, size, 1, "double free, the second from another thread");
	cgc_free(keep);
}
END_TEST

/* Another thread frees (remotely, so the slot waits on the span's thread_free list), then the
 * owner repeats it; and then a third thread does. */
START_TEST(test_double_remote_first)
{
	ck_assert(witnesses_setup());
	char *keep = cgc_malloc_atomic(64);
	char *p = cgc_malloc_atomic(64);
	ck_assert_ptr_nonnull(keep);
	ck_assert_ptr_nonnull(p);
	size_t size = cgc_usable_size(p);
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, free_thread, p), 0);
	pthread_join(t, NULL);
	check_double(p, size, 0, "double free, the first from another thread");
	check_double(p, size, 1, "double free, both from other threads");
	cgc_free(keep);
}
END_TEST

/* ---- the span tail ----------------------------------------------------------------------- */

/* The first address past the last whole object of a span with tail waste, and the span's last
 * byte: inside the heap, in no object. */
static void check_tail(unsigned cl, int atomic)
{
	char what[96];
	char *p = atomic ? cgc_malloc_atomic(sc_size[cl]) : cgc_malloc(sc_size[cl]);
	ck_assert_ptr_nonnull(p);
	span_t *s = spanmap_lookup((uintptr_t)p);
	ck_assert_ptr_nonnull(s);
	ck_assert_uint_eq(s->elemsize, sc_size[cl]);
	ck_assert_uint_eq(s->nelems, sc_nelems[cl]);
	const char *tail = (const char *)s->base + (size_t)sc_nelems[cl] * sc_size[cl];
	const char *last = (const char *)s->base + (size_t)sc_npages[cl] * PAGE_SIZE - 1;
	ck_assert_ptr_eq(cgc_base(tail), NULL);
	ck_assert_ptr_eq(cgc_base(last), NULL);
	for (int op = 0; op < NUM_OPS; op++) {
		struct bad_call b = {.op = (enum op)op, .ptr = tail, .victim = p, .victim_live = 1,
				     .victim_size = cgc_usable_size(p)};
		want_foreign(&b, tail);
		snprintf(what, sizeof what, "tail of a span of class %u (%u-byte objects)", cl,
			 (unsigned)sc_size[cl]);
		check_bad(&b, what);
		b.ptr = last;
		want_foreign(&b, last);
		snprintf(what, sizeof what, "last byte of a span of class %u", cl);
		check_bad(&b, what);
	}
}

START_TEST(test_span_tail)
{
	unsigned first = 0, most = 0;
	size_t most_waste = 0;
	for (unsigned cl = 1; cl < NUM_SIZE_CLASSES; cl++) {
		size_t waste = (size_t)sc_npages[cl] * PAGE_SIZE - (size_t)sc_nelems[cl] * sc_size[cl];
		if (waste == 0 || sc_size[cl] < TINY_SIZE)
			continue;
		if (first == 0)
			first = cl;
		if (waste > most_waste) {
			most_waste = waste;
			most = cl;
		}
	}
	ck_assert_msg(first != 0, "no size class has tail waste: nothing to test");
	check_tail(first, 0);
	check_tail(most, 1);
}
END_TEST

/* ---- tiny objects ------------------------------------------------------------------------ */

struct tiny_case {
	size_t n;
	const char *p;
};

/* Freeing a tiny object at its start does nothing, however often (cgc_malloc_atomic(3)). */
static void tiny_free_child(const void *arg)
{
	const struct tiny_case *t = arg;
	struct cgc_stats a, b;
	size_t round = (t->n + 3) & ~(size_t)3;
	cgc_get_stats(&a);
	cgc_free((void *)t->p);
	cgc_free((void *)t->p);
	cgc_get_stats(&b);
	if (a.nfree != b.nfree || a.objects != b.objects)
		_exit(10);
	if (cgc_base(t->p) != t->p || cgc_usable_size(t->p) != round)
		_exit(11);
	for (size_t i = 0; i < t->n; i++)
		if ((unsigned char)t->p[i] != pattern_byte(i, t->n))
			_exit(12);
	mheap_validate();
	_exit(0);
}

START_TEST(test_tiny_free_noop)
{
	char sbuf[96];
	for (size_t n = 1; n < TINY_SIZE; n++) {
		char *p = cgc_malloc_atomic(n);
		ck_assert_ptr_nonnull(p);
		ck_assert_uint_eq(spanmap_lookup((uintptr_t)p)->kind, SPAN_TINY);
		for (size_t i = 0; i < n; i++)
			p[i] = (char)pattern_byte(i, n);
		struct tiny_case t = {n, p};
		struct outcome o;
		run_in_child(tiny_free_child, &t, &o);
		ck_assert_msg(WIFEXITED(o.status) && WEXITSTATUS(o.status) == 0,
			      "cgc_free of a %zu-byte tiny object at its start: child %s; stderr: \"%s\"", n,
			      describe_status(o.status, sbuf, sizeof sbuf), o.err);
		ck_assert_msg(o.errlen == 0, "cgc_free of a %zu-byte tiny object wrote \"%s\"", n, o.err);
	}
}
END_TEST

/* Every address inside a tiny object but its start: each granule after the first, a byte inside
 * the first granule, and the last byte. */
static void check_tiny_interior(size_t nlo, size_t nhi)
{
	char what[96];
	for (size_t n = nlo; n <= nhi; n++) {
		char *p = cgc_malloc_atomic(n);
		ck_assert_ptr_nonnull(p);
		size_t round = (n + 3) & ~(size_t)3;
		size_t offs[8], noffs = 0;
		offs[noffs++] = 1;
		for (size_t g = TINY_GRANULE; g < round; g += TINY_GRANULE)
			offs[noffs++] = g;
		if (round - 1 > 1 && round - 1 != offs[noffs - 1])
			offs[noffs++] = round - 1;
		for (size_t k = 0; k < noffs; k++) {
			for (int op = 0; op < NUM_OPS; op++) {
				const char *bad = p + offs[k];
				struct bad_call b = {.op = (enum op)op, .ptr = bad, .victim = p,
						     .victim_live = 1, .victim_size = round};
				want_tiny_interior(&b, bad, p);
				snprintf(what, sizeof what, "%zu-byte tiny object + %zu", n, offs[k]);
				check_bad(&b, what);
			}
		}
	}
}

START_TEST(test_tiny_interior_small)
{
	check_tiny_interior(1, 8);
}
END_TEST

START_TEST(test_tiny_interior_big)
{
	check_tiny_interior(9, 15);
}
END_TEST

/* ---- edge sizes and NULL ----------------------------------------------------------------- */

START_TEST(test_null)
{
	cgc_free(NULL);
	ck_assert_uint_eq(cgc_usable_size(NULL), 0);
	ck_assert_ptr_eq(cgc_base(NULL), NULL);
	char *p = cgc_realloc(NULL, 24);
	ck_assert_ptr_nonnull(p);
	ck_assert_uint_ge(cgc_usable_size(p), 24);
	cgc_free(p);
}
END_TEST

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
	return x < y ? -1 : x > y;
}

/* Zero-size requests: unique, non-NULL, 8 usable bytes, freeable (cgc_malloc(3)). */
START_TEST(test_zero_size)
{
	enum { N = 1000 };
	static void *v[4 * N];
	size_t n = 0;
	for (int i = 0; i < N; i++) {
		v[n++] = cgc_malloc(0);
		v[n++] = cgc_malloc_atomic(0);
		v[n++] = cgc_calloc(0, 16);
		v[n++] = cgc_calloc(16, 0);
	}
	for (size_t i = 0; i < n; i++) {
		ck_assert_msg(v[i] != NULL, "zero-size request %zu returned NULL", i);
		ck_assert_uint_eq(cgc_usable_size(v[i]), 8);
	}
	qsort(v, n, sizeof v[0], cmp_ptr);
	for (size_t i = 1; i < n; i++)
		ck_assert_msg(v[i] != v[i - 1], "zero-size requests returned %p twice", v[i]);
	for (size_t i = 0; i < n; i++)
		cgc_free(v[i]);
	/* realloc to 0 frees and returns a fresh minimal object, never NULL (cgc_realloc(3)). */
	char *p = cgc_malloc(100);
	ck_assert_ptr_nonnull(p);
	char *q = cgc_realloc(p, 0);
	ck_assert_ptr_nonnull(q);
	ck_assert_uint_eq(cgc_usable_size(q), 8);
	cgc_free(q);
}
END_TEST

#define ASSERT_ENOMEM(call)                                                                    \
	do {                                                                                   \
		errno = 0;                                                                     \
		void *r_ = (call);                                                             \
		ck_assert_msg(r_ == NULL, "%s returned %p, want NULL", #call, r_);            \
		ck_assert_msg(errno == ENOMEM, "%s set errno %d, want ENOMEM", #call, errno);  \
	} while (0)

/* The sizes go through volatile variables: as constants, the compiler would see through the
 * alloc_size attributes and warn that the calls ask for too much, which is their point. */
static volatile size_t size_max = SIZE_MAX, half_max = SIZE_MAX / 2 + 1,
		       over_ptrdiff = (size_t)PTRDIFF_MAX + 1, ptrdiff_max = PTRDIFF_MAX,
		       beyond_48 = (size_t)1 << 50;

START_TEST(test_too_large)
{
	ASSERT_ENOMEM(cgc_calloc(half_max, 2));
	ASSERT_ENOMEM(cgc_calloc(2, half_max));
	ASSERT_ENOMEM(cgc_calloc(size_max, size_max));
	ASSERT_ENOMEM(cgc_calloc(1, over_ptrdiff));
	ASSERT_ENOMEM(cgc_malloc(size_max));
	ASSERT_ENOMEM(cgc_malloc(over_ptrdiff));
	ASSERT_ENOMEM(cgc_malloc_atomic(size_max));
	ASSERT_ENOMEM(cgc_malloc_atomic(over_ptrdiff));
	/* Not over PTRDIFF_MAX, but more address space than a 48-bit heap has. */
	ASSERT_ENOMEM(cgc_malloc(ptrdiff_max));
	ASSERT_ENOMEM(cgc_malloc_atomic(beyond_48));
	/* A failed realloc leaves the object as it was (cgc_realloc(3)). */
	unsigned char *p = cgc_malloc(100);
	ck_assert_ptr_nonnull(p);
	for (int i = 0; i < 100; i++)
		p[i] = (unsigned char)(i + 1);
	ASSERT_ENOMEM(cgc_realloc(p, size_max));
	ASSERT_ENOMEM(cgc_realloc(p, over_ptrdiff));
	ck_assert_ptr_eq(cgc_base(p + 50), p);
	ck_assert_uint_ge(cgc_usable_size(p), 100);
	for (int i = 0; i < 100; i++)
		ck_assert_uint_eq(p[i], (unsigned char)(i + 1));
	cgc_free(p);
	mheap_validate();
}
END_TEST

/* ---- cgc_base on anything ---------------------------------------------------------------- */

/* Addresses that can never be in the heap: NULL, small integers, kernel and non-canonical. */
static const uintptr_t never_heap[] = {
	0, 1, 8, 0x10, 0xfff, 0x1000, 0x10000,
	(uintptr_t)0x0000800000000000ull, /* first address above 47-bit user space */
	(uintptr_t)0x0001000000000000ull, /* first address above 48 bits */
	(uintptr_t)0xffff800000000000ull, /* non-canonical on x86-64 4-level paging: kernel half */
	(uintptr_t)0x8000000000000000ull,
	(uintptr_t)0xdeadbeefdeadbeefull,
	UINTPTR_MAX - 4096, UINTPTR_MAX - 7, UINTPTR_MAX,
};

/* cgc_base(a) is NULL, or the start of a live object that holds a. */
static int base_consistent(uintptr_t a)
{
	void *b = cgc_base((void *)a);
	if (b == NULL)
		return 1;
	return (uintptr_t)b <= a && a - (uintptr_t)b < cgc_usable_size(b);
}

/* In a child, so that a crash is reported with the address that caused it: each named address is
 * written to stderr before the lookup, and the last line written names the culprit. */
static void base_garbage_child(const void *arg)
{
	(void)arg;
	for (size_t i = 0; i < sizeof never_heap / sizeof never_heap[0]; i++) {
		char line[40];
		int n = snprintf(line, sizeof line, "0x%" PRIxPTR "\n", never_heap[i]);
		if (write(2, line, (size_t)n) < 0)
			_exit(20);
		if (cgc_base((void *)never_heap[i]) != NULL)
			_exit(21);
	}
	if (write(2, "random\n", 7) < 0)
		_exit(20);
	uint64_t rng = seed ^ 0x62617365ull;
	uintptr_t lo = load_relaxed(&heap_lo), hi = load_relaxed(&heap_hi);
	for (int i = 0; i < 200000; i++) {
		uintptr_t a = (uintptr_t)rng_next(&rng);
		switch (i % 4) {
		case 0: /* anywhere in 64 bits */
			break;
		case 1: /* user space */
			a &= ((uintptr_t)1 << 47) - 1;
			break;
		case 2: /* small numbers */
			a &= 0xffffff;
			break;
		default: /* around the heap, when there is one */
			if (hi > lo)
				a = lo - ARENA_SIZE + a % (hi - lo + 2 * ARENA_SIZE);
			break;
		}
		if (!base_consistent(a))
			_exit(22);
	}
	_exit(0);
}

static void check_base_garbage(const char *when)
{
	char sbuf[96];
	struct outcome o;
	run_in_child(base_garbage_child, NULL, &o);
	/* The last line the child wrote, without its newline. */
	while (o.errlen > 0 && o.err[o.errlen - 1] == '\n')
		o.err[--o.errlen] = '\0';
	const char *last = strrchr(o.err, '\n') ? strrchr(o.err, '\n') + 1 : o.err;
	ck_assert_msg(WIFEXITED(o.status) && WEXITSTATUS(o.status) == 0,
		      "cgc_base on garbage %s: child %s at %s (exit 21: not NULL; 22: inconsistent answer"
		      " for a random address, seed %llu)", when,
		      describe_status(o.status, sbuf, sizeof sbuf), last, (unsigned long long)seed);
}

/* Nothing in this test allocates before the child runs: the heap does not exist yet. */
START_TEST(test_base_garbage_no_heap)
{
	check_base_garbage("before the heap exists");
}
END_TEST

START_TEST(test_base_garbage)
{
	enum { N = 200 };
	static char *v[N];
	uint64_t rng = seed;
	for (int i = 0; i < N; i++) {
		/* 16 bytes and up: tiny objects are never freed, and this test wants free slots. */
		size_t n = i % 10 == 0 ? 33000 + rng_below(&rng, 100000) : 16 + rng_below(&rng, 2000);
		v[i] = i & 1 ? cgc_malloc_atomic(n) : cgc_malloc(n);
		ck_assert_ptr_nonnull(v[i]);
	}
	for (int i = 0; i < N; i += 3) /* leave free slots and free pages among the live objects */
		cgc_free(v[i]);
	check_base_garbage("with a heap");
	for (int i = 0; i < N; i++) {
		if (i % 3 == 0) {
			ck_assert_ptr_eq(cgc_base(v[i]), NULL);
			continue;
		}
		size_t us = cgc_usable_size(v[i]);
		ck_assert_ptr_eq(cgc_base(v[i]), v[i]);
		ck_assert_ptr_eq(cgc_base(v[i] + us - 1), v[i]);
		ck_assert_ptr_ne(cgc_base(v[i] + us), v[i]); /* one past the end is not the object */
		cgc_free(v[i]);
	}
	mheap_validate();
}
END_TEST

/* ---- the suite --------------------------------------------------------------------------- */

static Suite *badinput_suite(void)
{
	Suite *s = suite_create("badinput");
	TCase *tc = tcase_create("foreign");
	tcase_set_timeout(tc, 60); /* forks a child per case: slow under sanitizers on a loaded machine */
	tcase_add_test(tc, test_foreign_stack);
	tcase_add_test(tc, test_foreign_malloc);
	tcase_add_test(tc, test_foreign_global);
	tcase_add_test(tc, test_foreign_garbage);
	suite_add_tcase(s, tc);

	tc = tcase_create("interior");
	tcase_set_timeout(tc, 60); /* forks a child per case: slow under sanitizers on a loaded machine */
	tcase_add_test(tc, test_interior_scan);
	tcase_add_test(tc, test_interior_atomic);
	tcase_add_test(tc, test_interior_large);
	tcase_add_test(tc, test_span_tail);
	suite_add_tcase(s, tc);

	tc = tcase_create("double");
	tcase_set_timeout(tc, 60); /* forks a child per case: slow under sanitizers on a loaded machine */
	tcase_add_test(tc, test_double_scan);
	tcase_add_test(tc, test_double_atomic);
	tcase_add_test(tc, test_double_large);
	tcase_add_test(tc, test_double_remote_second);
	tcase_add_test(tc, test_double_remote_first);
	suite_add_tcase(s, tc);

	tc = tcase_create("tiny");
	tcase_set_timeout(tc, 60); /* forks a child per case: slow under sanitizers on a loaded machine */
	tcase_add_test(tc, test_tiny_free_noop);
	tcase_add_test(tc, test_tiny_interior_small);
	tcase_add_test(tc, test_tiny_interior_big);
	suite_add_tcase(s, tc);

	tc = tcase_create("edges");
	tcase_set_timeout(tc, 60); /* forks a child per case: slow under sanitizers on a loaded machine */
	tcase_add_test(tc, test_null);
	tcase_add_test(tc, test_zero_size);
	tcase_add_test(tc, test_too_large);
	tcase_add_test(tc, test_base_garbage_no_heap);
	tcase_add_test(tc, test_base_garbage);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	/* These tests exercise the allocator alone and keep objects where the collector does not
	 * look (glibc-malloc'd tables): collection stays off. tests/check_gc.c tests the collector. */
	cgc_set_percent(-1);
	seed = test_seed("check_badinput");
	SRunner *sr = srunner_create(badinput_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
