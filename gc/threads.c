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

/* The handshake (doc/design/collector.md 3.2). */
NONROOT static uint32_t stop_epoch;         /* atomic: bumped by each stop */
NONROOT static uint32_t resume_epoch;       /* atomic: == stop_epoch once the world may run again */
NONROOT static uint32_t stopping;           /* atomic: a stop is in progress (else deliveries are stray) */
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
	/* Not yet acknowledged any stop: a stop in progress cannot have counted us (we hold the
	 * lock it holds), and the next one will. */
	t->acked = load_relaxed(&stop_epoch);
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
 * hold is remembered and answered when the hold ends (stop_deferred). Unregistered threads are
 * never stopped and need no hold. */
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

/* cgc's own threads (mark workers, the background sweeper): never registered, never stopped. */
int threads_create_internal(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
	return find_real_pthread_create()(t, attr, fn, arg);
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

/* The registers a call may clobber are dead in the caller of cgc_enter_blocking, so what they hold
 * is stale, and a stale pointer there would keep garbage alive for as long as the thread blocks
 * (tests/check_gc saw it): only the callee-saved ones are kept. */
static void forget_scratch_registers(unw_context_t *ctx)
{
#if defined(__x86_64__)
	static const int scratch[] = {REG_RAX, REG_RCX, REG_RDX, REG_RSI, REG_RDI,
				      REG_R8,  REG_R9,  REG_R10, REG_R11};
	for (size_t i = 0; i < sizeof scratch / sizeof scratch[0]; i++)
		ctx->uc_mcontext.gregs[scratch[i]] = 0;
#else
	(void)ctx; /* elsewhere every register is kept: conservative, and correct */
#endif
}

CGC_API void cgc_enter_blocking(void)
{
	gthread_t *t = tls_gthread ? tls_gthread : (alloc_init(), threads_register_self());
	if (t == NULL)
		return;
	/* Callee-saved registers go to the record (scanned); the stack from here up stays put. */
	unw_getcontext((unw_context_t *)t->regs);
	forget_scratch_registers((unw_context_t *)t->regs);
	t->sp = (uintptr_t)__builtin_frame_address(0);
	store_release(&t->state, THREAD_BLOCKING);
}

CGC_API void cgc_exit_blocking(void)
{
	gthread_t *t = tls_gthread;
	if (t == NULL)
		return;
	for (;;) {
		uint32_t st = THREAD_BLOCKING;
		if (cas_strong_acq_rel(&t->state, &st, THREAD_RUNNING) || st == THREAD_RUNNING)
			return;
		/* A collection is scanning us: wait until it lets go. */
		os_futex_wait(&t->state, THREAD_BLOCKING_HELD, 0);
	}
}

/* ---- stopping the world ------------------------------------------------------------------ */

/* Whether t must answer the stop under way: one that signalled it and that it has not answered.
 * A late or resent delivery from an earlier stop, arriving while this one left t alone
 * (blocking), must not add an acknowledgement the collector would take for another thread's. */
static bool stop_is_ours(gthread_t *t, uint32_t e)
{
	return load_acquire(&stopping) && load_relaxed(&t->acked) != e &&
	       load_acquire(&t->signalled) == e;
}

/* Acknowledges stop e and waits for the world to start again. Everything above this frame is
 * scanned from t->sp: the caller's registers must be there (the kernel's signal frame, or the
 * context stop_deferred saved). */
static NOINLINE void stop_here(gthread_t *t, uint32_t e)
{
	volatile uintptr_t here = 0;
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
	store_release(&t->acked, e);
	__atomic_fetch_add(&acks, 1, __ATOMIC_RELEASE); /* publishes sp to the collector */
	os_futex_wake(&acks, 1);
	/* Until stop e is over, or a later one: the world may have started and stopped again
	 * before this thread ran (one answering a deferred stop from an ordinary call takes the next
	 * stop's signal in its handler meanwhile), and waiting for e exactly would never end. */
	for (;;) {
		uint32_t r = load_acquire(&resume_epoch);
		if ((int32_t)(r - e) >= 0)
			break;
		os_futex_wait(&resume_epoch, r, 0);
	}
	__asm__ volatile("" ::"r"(&here) : "memory");
}

/* Runs on the stopped thread's own stack, so everything above this frame (the kernel's signal
 * frame with every register, the red zone, the thread's frames) is scanned from t->sp. A delivery
 * outside a stop, to an unregistered thread or for a stop already acknowledged does nothing; one
 * inside a hold (threads_hold_stop) is answered when the hold ends. */
static void stop_handler(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	int saved_errno = errno;
	gthread_t *t = tls_gthread;
	uint32_t e = load_acquire(&stop_epoch);
	if (t != NULL && stop_is_ours(t, e)) {
		if (t->holds)
			t->stop_pending = 1;
		else
			stop_here(t, e);
	}
	errno = saved_errno;
}

/* A stop that arrived inside a hold, answered as it ends: the registers are saved on this stack
 * first, where stop_here's scan finds them. */
static NOINLINE void stop_deferred(gthread_t *t)
{
	unw_context_t ctx;
	uint32_t e = load_acquire(&stop_epoch);
	if (!stop_is_ours(t, e))
		return;
	unw_getcontext(&ctx);
	stop_here(t, e);
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

int world_stop(void)
{
	uint32_t e = load_relaxed(&stop_epoch) + 1;
	store_relaxed(&acks, 0);
	store_release(&stop_epoch, e);
	store_release(&stopping, 1);
	gthread_t *self = tls_gthread;
	int n = 0;
	for (gthread_t *t = threads; t; t = t->next) {
		if (t == self)
			continue;
		uint32_t st = THREAD_BLOCKING;
		if (cas_strong_acq_rel(&t->state, &st, THREAD_BLOCKING_HELD))
			continue; /* scanned from where it stood; not signalled */
		store_release(&t->signalled, e);
		int r = pthread_kill(t->pt, gc_opt.signo);
		if (r != 0) {
			/* Gone without unregistering (killed by another runtime's means): nothing to scan. */
			t->sp = t->stack_hi;
			store_relaxed(&t->acked, e);
			continue;
		}
		n++;
	}
	/* Wait for every acknowledgement; after a while resend to the silent (a delivery can be
	 * delayed, e.g. by a sanitizer's runtime; real-time signals queue, and a duplicate is
	 * ignored by the epoch test). */
	uint64_t waited = 0;
	for (;;) {
		uint32_t a = load_acquire(&acks);
		if ((int)a >= n)
			break;
		os_futex_wait(&acks, a, 10 * 1000 * 1000);
		if (++waited % 100 == 0)
			for (gthread_t *t = threads; t; t = t->next)
				if (t != self && load_relaxed(&t->state) == THREAD_RUNNING &&
				    load_acquire(&t->acked) != e)
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
	}
	store_release(&stopping, 0);
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
	store_relaxed(&stopping, 0);
	pthread_mutex_unlock(&threads_lock);
	pthread_mutex_unlock(&starting_lock);
}
