/* gc/threads.c - the registry of threads whose stacks are roots, pthread_create interposed to fill
 * it, and stopping the world with a signal and a handshake. doc/design/collector.md 3. */
#define UNW_LOCAL_ONLY
#include <dlfcn.h>
#include <errno.h>
#include <libunwind.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include "alloc/alloc.h"
#include "alloc/os.h"
#include "barrier/barrier.h"
#include "gc/gc.h"
#include "include/cgc.h"

__thread gthread_t *tls_gthread __attribute__((tls_model("initial-exec")));

NONROOT static pthread_mutex_t threads_lock = PTHREAD_MUTEX_INITIALIZER;
NONROOT static gthread_t *threads;          /* every registered thread (threads_lock) */
NONROOT static gthread_t *thread_pool;      /* records of exited threads, for reuse */
static pthread_key_t exit_key;

/* The handshake (doc/design/collector.md 3.2). Which threads owe the stop under way an
 * acknowledgement is in their state words (THREAD_STOPPING), not here. */
NONROOT static uint32_t stop_epoch;         /* atomic: bumped by each stop */
NONROOT static uint32_t resume_epoch;       /* atomic: == stop_epoch once the world may run again */
NONROOT static uint32_t acks;               /* atomic: threads that acknowledged this stop */

typedef int (*pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static pthread_create_fn real_pthread_create;

/* ---- registering ------------------------------------------------------------------------- */

static void stack_bounds(gthread_t *t)
{
	pthread_attr_t attr;
	void *addr;
	size_t size;
	if (pthread_getattr_np(pthread_self(), &attr) == 0) {
		if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
			t->stack_lo = (uintptr_t)addr;
			t->stack_hi = (uintptr_t)addr + size;
		}
		pthread_attr_destroy(&attr);
	}
	if (t->stack_hi == 0) { /* cannot tell: scan up to a bit above where we stand */
		uintptr_t here = (uintptr_t)&attr;
		t->stack_lo = here - ((uintptr_t)1 << 20);
		t->stack_hi = (here + ((uintptr_t)1 << 16)) & ~(uintptr_t)4095;
	}
}

static void thread_exit_hook(void *arg)
{
	(void)arg;
	threads_unregister_self();
}

gthread_t *threads_register_self(void)
{
	if (tls_gthread)
		return tls_gthread;
	lock_acquire(&threads_lock);
	gthread_t *t = thread_pool;
	if (t) {
		thread_pool = t->next;
	} else {
		t = meta_alloc(sizeof *t);
		if (t) {
			t->regs = meta_alloc(sizeof(unw_context_t));
			t->regs_size = sizeof(unw_context_t);
			t->wb = meta_alloc(sizeof(wbbuf_t)); /* NULL: its barrier shades unbuffered */
		}
	}
	if (t == NULL || t->regs == NULL) {
		pthread_mutex_unlock(&threads_lock);
		errno = ENOMEM;
		return NULL;
	}
	void *regs = t->regs;
	size_t regs_size = t->regs_size;
	wbbuf_t *wb = t->wb;
	memset(t, 0, sizeof *t);
	t->regs = regs;
	t->regs_size = regs_size;
	t->wb = wb;
	t->pt = pthread_self();
	t->tp = os_thread_pointer();
	stack_bounds(t);
	/* No stop is under way (we hold the lock it holds): the next one will find us running. */
	store_relaxed(&t->state, THREAD_RUNNING);
	t->next = threads;
	threads = t;
	tls_gthread = t;
	pthread_mutex_unlock(&threads_lock);
	pthread_setspecific(exit_key, t);
	return t;
}

void threads_unregister_self(void)
{
	gthread_t *t = tls_gthread;
	if (t == NULL)
		return;
	barrier_thread_exit(t);
	lock_acquire(&threads_lock);
	for (gthread_t **pp = &threads; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	t->next = thread_pool;
	thread_pool = t;
	tls_gthread = NULL;
	pthread_mutex_unlock(&threads_lock);
	pthread_setspecific(exit_key, NULL);
}

CGC_API int cgc_register_thread(void)
{
	alloc_init();
	return threads_register_self() ? 0 : -1;
}

CGC_API void cgc_unregister_thread(void)
{
	threads_unregister_self();
}

/* ---- pthread_create ---------------------------------------------------------------------- */

/* What a new thread needs before it can register. The records are listed and scanned as roots
 * (threads_push_starting), so the argument stays reachable until the new thread's own stack holds
 * it; they live in cgc's metadata, not the heap, so creating a thread allocates no object. */
struct start {
	void *(*fn)(void *);
	void *arg;
	struct start *next, *prev;
};
NONROOT static struct start *starting;        /* records of threads not yet registered */
NONROOT static pthread_mutex_t starting_lock = PTHREAD_MUTEX_INITIALIZER;

static void *thread_start(void *p)
{
	struct start *st = p;
	threads_register_self();
	void *(*fn)(void *) = st->fn;
	void *arg = st->arg;
	lock_acquire(&starting_lock);
	if (st->prev)
		st->prev->next = st->next;
	else
		starting = st->next;
	if (st->next)
		st->next->prev = st->prev;
	pthread_mutex_unlock(&starting_lock);
	meta_free(st, sizeof *st);
	return fn(arg);
}

/* Pushes the arguments of threads being created (world stopped, so starting_lock is free: a
 * thread stopped while holding it would deadlock nothing here, as we only read). */
void threads_push_starting(gcwork_t *w, bool now)
{
	for (struct start *st = starting; st; st = st->next) {
		if (now)
			mark_scan_now(w, (uintptr_t)&st->arg, sizeof st->arg, true);
		else
			mark_push_range(w, (uintptr_t)&st->arg, sizeof st->arg, true);
	}
}

static pthread_create_fn find_real_pthread_create(void)
{
	pthread_create_fn f = load_relaxed(&real_pthread_create);
	if (f == NULL) {
		f = (pthread_create_fn)dlsym(RTLD_NEXT, "pthread_create");
		if (f == NULL)
			cgc_fatal("cgc: cannot find the C library's pthread_create: %s", dlerror());
		store_relaxed(&real_pthread_create, f);
	}
	return f;
}

gthread_t *threads_first(void)
{
	return threads;
}

/* A hold is a count on the thread's record, not a signal mask: two plain stores instead of two
 * system calls, so a refill may take one whenever marking runs. A stop signal arriving inside a
 * hold is remembered and answered when the hold ends (stop_deferred); a thread does not block
 * inside one. Unregistered threads are never stopped and need no hold. */
static void stop_deferred(gthread_t *t);

void threads_hold_stop(void)
{
	gthread_t *t = tls_gthread;
	if (t == NULL)
		return;
	t->holds++;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

void threads_release_stop(void)
{
	gthread_t *t = tls_gthread;
	if (t == NULL)
		return;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	t->holds--;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (unlikely(t->holds == 0 && t->stop_pending)) {
		t->stop_pending = 0;
		stop_deferred(t);
	}
}

/* cgc's own threads (the collector, mark workers, the background sweeper, the prefault helper):
 * detached, never registered, never stopped. 0, or pthread_create's error. */
int threads_create_internal(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	int r = find_real_pthread_create()(&t, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	return r;
}

CGC_API int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
	pthread_create_fn real = find_real_pthread_create();
	alloc_init();
	struct start *st = meta_alloc(sizeof *st);
	if (st == NULL)
		return EAGAIN;
	st->fn = fn;
	st->arg = arg;
	lock_acquire(&starting_lock);
	st->next = starting;
	if (starting)
		starting->prev = st;
	starting = st;
	pthread_mutex_unlock(&starting_lock);
	int r = real(t, attr, thread_start, st);
	if (r != 0) {
		lock_acquire(&starting_lock);
		if (st->prev)
			st->prev->next = st->next;
		else
			starting = st->next;
		if (st->next)
			st->next->prev = st->prev;
		pthread_mutex_unlock(&starting_lock);
		meta_free(st, sizeof *st);
	}
	return r;
}

/* ---- blocking ---------------------------------------------------------------------------- */

/* A thread may block only when it owes no acknowledgement: a stop that counted it while it ran
 * waits for one, and a blocking thread is not signalled again and may never run the handler
 * (signals blocked around the call, or ThreadSanitizer holding the delivery back). So the move to
 * BLOCKING is a compare-and-swap from RUNNING: if a stop got there first (STOPPING), the thread
 * answers it here, from an ordinary call, and tries again once the world runs.
 *
 * What the caller of cgc_enter_blocking keeps in registers across the call is in the callee-saved
 * ones (the others are dead there, and a stale pointer in one would keep garbage alive for as long
 * as the thread blocks: tests/check_gc saw it). cgc_enter_blocking saves every one of them in its
 * prologue (__builtin_unwind_init), before it changes any, so its frame, from its stack pointer at
 * this call (our CFA) up to its caller's, holds the caller's values: the record keeps a copy of
 * that frame. Registers taken with unw_getcontext inside it would be the values it had moved on to
 * (GCC kept a local's address in r12 there, and the caller's r12 and rbx went unscanned). */
static NOINLINE __attribute__((no_sanitize_address)) void blocking_enter(uintptr_t caller_sp)
{
	int saved_errno = errno; /* kept, as cgc_enter_blocking(3) promises */
	gthread_t *t = tls_gthread ? tls_gthread : (alloc_init(), threads_register_self());
	if (t == NULL)
		goto out;
	uint32_t st = load_relaxed(&t->state);
	/* Nested: the outer call's saved state stands, and a stop may be reading it. */
	if (st == THREAD_BLOCKING || st == THREAD_BLOCKING_HELD)
		goto out;
	CHECK(t->holds == 0); /* answering a stop here would split the hold's work */
	const uintptr_t *lo = __builtin_dwarf_cfa(), *hi = (const uintptr_t *)caller_sp;
	uintptr_t *regs = t->regs;
	size_t n = t->regs_size / sizeof *regs, i = 0;
	CHECK((size_t)(hi - lo) <= n);
	if ((size_t)(hi - lo) > n)
		lo = hi - n; /* the saved registers sit at the top, under the return address */
	for (const uintptr_t *p = lo; p < hi; p++)
		regs[i++] = *p;
	while (i < n)
		regs[i++] = 0;
	for (;;) {
		/* The stack from the caller's frame up stays put while the thread blocks (stop_here
		 * moves sp). */
		t->sp = caller_sp;
		t->altstack_lo = t->altstack_hi = 0;
		st = THREAD_RUNNING;
		if (cas_strong_acq_rel(&t->state, &st, THREAD_BLOCKING)) /* publishes regs and sp */
			break;
		stop_deferred(t); /* STOPPING */
	}
out:
	errno = saved_errno;
}

/* Noinline, so that the frame blocking_enter copies is this one; not a tail call, so that the frame
 * is still there when it does. */
CGC_API NOINLINE void cgc_enter_blocking(void)
{
	__builtin_unwind_init();
	blocking_enter((uintptr_t)__builtin_dwarf_cfa());
	__asm__ volatile("" ::: "memory");
}

/* Back to RUNNING, unless a stop holds the thread: then it waits for the restart, which makes it
 * BLOCKING again. Any other state means the thread was not blocking (an unpaired call): nothing
 * to do; if a stop counted it meanwhile, its handler answers. */
CGC_API void cgc_exit_blocking(void)
{
	gthread_t *t = tls_gthread;
	if (t == NULL)
		return;
	int saved_errno = errno; /* the bracketed call's result; the futex may set it */
	for (;;) {
		uint32_t st = THREAD_BLOCKING;
		if (cas_strong_acq_rel(&t->state, &st, THREAD_RUNNING))
			break;
		if (st != THREAD_BLOCKING_HELD)
			break;
		os_futex_wait(&t->state, THREAD_BLOCKING_HELD, 0);
	}
	errno = saved_errno;
}

/* ---- stopping the world ------------------------------------------------------------------ */

/* Gives the acknowledgement t owes the stop under way, unless it owes none or it was already
 * given, and waits for the world to start again. The claim is the compare-and-swap STOPPING ->
 * RUNNING: exactly one of the handler, a resent delivery interrupting stop_deferred, the end of a
 * hold and cgc_enter_blocking wins it, so a stop never counts one thread twice (which would let
 * it proceed while another still ran). A stale delivery finds no STOPPING and does nothing.
 * Everything above this frame is scanned from t->sp: the caller's registers must be there (the
 * kernel's signal frame, or the context stop_deferred saved). */
static NOINLINE void stop_here(gthread_t *t)
{
	volatile uintptr_t here = 0;
	uint32_t st = THREAD_STOPPING;
	if (!cas_strong_acq_rel(&t->state, &st, THREAD_RUNNING))
		return;
	/* The stop that made us STOPPING: the next cannot begin before we acknowledge this one. */
	uint32_t e = load_relaxed(&stop_epoch);
	t->sp = (uintptr_t)&here;
	t->altstack_lo = t->altstack_hi = 0;
	if (t->sp < t->stack_lo || t->sp >= t->stack_hi) {
		/* On a signal stack: scan it, and the whole thread stack (doc/design/collector.md 3.3). */
		stack_t ss;
		if (sigaltstack(NULL, &ss) == 0 && (ss.ss_flags & SS_ONSTACK)) {
			t->altstack_lo = t->sp;
			t->altstack_hi = (uintptr_t)ss.ss_sp + ss.ss_size;
		}
	}
	store_relaxed(&t->acked, e);
	__atomic_fetch_add(&acks, 1, __ATOMIC_RELEASE); /* publishes sp to the collector */
	os_futex_wake(&acks, 1);
	/* Until stop e is over, or a later one: the world may have started and stopped again
	 * before this thread ran (one answering from an ordinary call takes the next stop's signal
	 * in its handler meanwhile), and waiting for e exactly would never end. */
	for (;;) {
		uint32_t r = load_acquire(&resume_epoch);
		if ((int32_t)(r - e) >= 0)
			break;
		os_futex_wait(&resume_epoch, r, 0);
	}
	__asm__ volatile("" ::"r"(&here) : "memory");
}

/* Runs on the stopped thread's own stack, so everything above this frame (the kernel's signal
 * frame with every register, the red zone, the thread's frames) is scanned from t->sp. Only a
 * thread the stop under way counted (STOPPING) answers; inside a hold (threads_hold_stop) it
 * answers when the hold ends. */
static void stop_handler(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	int saved_errno = errno;
	gthread_t *t = tls_gthread;
	if (t != NULL && load_relaxed(&t->state) == THREAD_STOPPING) {
		if (t->holds)
			t->stop_pending = 1;
		else
			stop_here(t);
	}
	errno = saved_errno;
}

/* A stop answered from an ordinary call rather than the handler: at the end of a hold, or by a
 * thread about to block. The registers are saved on this stack first, where stop_here's scan finds
 * them. */
static NOINLINE void stop_deferred(gthread_t *t)
{
	unw_context_t ctx;
	if (load_relaxed(&t->state) != THREAD_STOPPING)
		return;
	unw_getcontext(&ctx);
	stop_here(t);
	__asm__ volatile("" ::"r"(&ctx) : "memory");
}

void threads_init(void)
{
	if (pthread_key_create(&exit_key, thread_exit_hook) != 0)
		cgc_fatal("cgc: cannot create the thread-exit key for the thread registry");
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = stop_handler;
	/* Everything blocked inside: a nested handler that allocated would wait for locks the
	 * collector holds. SA_RESTART: slow reads and writes resume (man 7 cgc, "Signals"). */
	sigfillset(&sa.sa_mask);
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	if (sigaction(gc_opt.signo, &sa, NULL) != 0)
		cgc_fatal("cgc: cannot install the handler of %s, the stop signal", gc_opt.signame);
	find_real_pthread_create();
	threads_register_self();
}

/* The registry lock, held by a collection from before it takes the allocator's locks until after
 * the world runs again: no thread registers or leaves meanwhile. */
void threads_lock_registry(void)
{
	lock_acquire(&threads_lock);
}

void threads_unlock_registry(void)
{
	pthread_mutex_unlock(&threads_lock);
}

/* Takes t into the stop under way: a blocking thread is held, a running one is marked as owing an
 * acknowledgement (true). One compare-and-swap decides, against the thread's own moves in and out
 * of blocking: whichever comes first, the other sees it. */
static bool stop_take(gthread_t *t)
{
	uint32_t st = load_relaxed(&t->state);
	for (;;) {
		CHECK(st == THREAD_RUNNING || st == THREAD_BLOCKING);
		uint32_t to = st == THREAD_BLOCKING ? THREAD_BLOCKING_HELD : THREAD_STOPPING;
		if (cas_strong_acq_rel(&t->state, &st, to))
			return to == THREAD_STOPPING;
	}
}

int world_stop(void)
{
	uint32_t e = load_relaxed(&stop_epoch) + 1;
	store_relaxed(&acks, 0);
	store_release(&stop_epoch, e); /* before any STOPPING: stop_here reads it after its claim */
	gthread_t *self = tls_gthread;
	int n = 0;
	for (gthread_t *t = threads; t; t = t->next) {
		if (t == self || !stop_take(t))
			continue; /* held ones are scanned from where they stood; not signalled */
		if (pthread_kill(t->pt, gc_opt.signo) != 0) {
			/* Gone without unregistering (killed by another runtime's means):
			 * nothing to scan, and nobody else will answer for it. */
			uint32_t st = THREAD_STOPPING;
			if (cas_strong_acq_rel(&t->state, &st, THREAD_RUNNING)) {
				t->sp = t->stack_hi;
				t->altstack_lo = t->altstack_hi = 0;
				store_relaxed(&t->acked, e);
				continue;
			}
		}
		n++;
	}
	/* Wait for every acknowledgement; after a while resend to those that still owe one (a
	 * delivery can be delayed, e.g. by a sanitizer's runtime; real-time signals queue, and a
	 * duplicate finds nothing to claim). A thread that owes one cannot have started blocking
	 * since: cgc_enter_blocking answers first. */
	uint64_t waited = 0;
	for (;;) {
		uint32_t a = load_acquire(&acks);
		if ((int)a >= n)
			break;
		os_futex_wait(&acks, a, 10 * 1000 * 1000);
		if (++waited % 100 == 0)
			for (gthread_t *t = threads; t; t = t->next)
				if (t != self && load_relaxed(&t->state) == THREAD_STOPPING)
					pthread_kill(t->pt, gc_opt.signo);
	}
	return n;
}

void world_start(void)
{
	uint32_t e = load_relaxed(&stop_epoch);
	for (gthread_t *t = threads; t; t = t->next) {
		uint32_t st = THREAD_BLOCKING_HELD;
		if (cas_strong_acq_rel(&t->state, &st, THREAD_BLOCKING))
			os_futex_wake(&t->state, 1);
		else /* every claim was made before the stop ended */
			CHECK(st != THREAD_STOPPING);
	}
	store_release(&resume_epoch, e);
	os_futex_wake(&resume_epoch, 0x7fffffff);
}

/* Each registered thread's stack range to scan (world stopped, threads_lock held). The caller's
 * own thread is reported with lo = 0: it scans its own stack from where it stands. */
void threads_each(void (*fn)(gthread_t *t, uintptr_t lo, uintptr_t hi, void *arg), void *arg)
{
	gthread_t *self = tls_gthread;
	for (gthread_t *t = threads; t; t = t->next) {
		if (t == self) {
			fn(t, 0, t->stack_hi, arg);
			continue;
		}
		if (t->altstack_hi) {
			fn(t, t->altstack_lo, t->altstack_hi, arg);
			fn(t, os_mapped_down(t->stack_hi, t->stack_lo), t->stack_hi, arg);
			continue;
		}
		uintptr_t lo = t->sp;
		if (lo < t->stack_lo || lo > t->stack_hi)
			lo = t->stack_hi; /* unknown: nothing safe to read */
		fn(t, lo, t->stack_hi, arg);
	}
}

/* ---- fork -------------------------------------------------------------------------------- */

void threads_fork_prepare(void)
{
	lock_acquire(&starting_lock);
	lock_acquire(&threads_lock);
}

void threads_fork_parent(void)
{
	pthread_mutex_unlock(&threads_lock);
	pthread_mutex_unlock(&starting_lock);
}

/* The child has one thread: the registry keeps just it. */
void threads_fork_child(void)
{
	gthread_t *self = tls_gthread;
	gthread_t *t = threads, *next;
	threads = NULL;
	for (; t; t = next) {
		next = t->next;
		if (t == self) {
			t->next = threads;
			threads = t;
			t->pt = pthread_self();
		} else {
			t->next = thread_pool;
			thread_pool = t;
		}
	}
	pthread_mutex_unlock(&threads_lock);
	pthread_mutex_unlock(&starting_lock);
}
