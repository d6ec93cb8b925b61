/* alloc/atomic.h - atomics behind helpers that name their memory order.
 * Plain fields shared between threads are only touched through these (doc/design/allocator.md). */
#ifndef CGC_ALLOC_ATOMIC_H
#define CGC_ALLOC_ATOMIC_H

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>

#define load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define exchange_acq_rel(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)
#define fetch_add_relaxed(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define fetch_sub_relaxed(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_RELAXED)
/* Compare-and-swap; on failure *expected receives the current value. */
#define cas_weak_release(p, expected, desired) \
	__atomic_compare_exchange_n((p), (expected), (desired), true, __ATOMIC_RELEASE, __ATOMIC_RELAXED)
#define cas_weak_relaxed(p, expected, desired) \
	__atomic_compare_exchange_n((p), (expected), (desired), true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)
#define cas_strong_acq_rel(p, expected, desired) \
	__atomic_compare_exchange_n((p), (expected), (desired), false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)

/* A counter that one thread writes and others read: a relaxed load and store, not a locked
 * read-modify-write, because only the owner writes it. */
#define counter_add_owner(p, v) store_relaxed((p), load_relaxed(p) + (v))

/* Taking a mutex. ThreadSanitizer holds back a signal that arrives while the thread is blocked in
 * pthread_mutex_lock until the call returns, so a thread waiting for a lock the collector holds
 * with the world stopped (doc/design/collector.md 3.4) would never acknowledge the stop: both wait
 * forever (seen in a TSan run of tests/stress_gc). Under TSan a lock is therefore taken with
 * trylock and sched_yield, and TSan delivers what is pending as each call returns. Elsewhere the
 * stop signal interrupts the wait, as any signal does. */
#if defined(__SANITIZE_THREAD__)
#define CGC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CGC_TSAN 1
#endif
#endif

static inline void lock_acquire(pthread_mutex_t *m)
{
#ifdef CGC_TSAN
	while (pthread_mutex_trylock(m) != 0)
		sched_yield();
#else
	pthread_mutex_lock(m);
#endif
}

#endif
