/* alloc/os_linux.c - Linux implementation of alloc/os.h: mmap, madvise, clocks.
 * See doc/design/allocator.md, "Address space". */
#include "alloc/os.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <valgrind/valgrind.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

void *os_map(void *hint, size_t size)
{
	/* NORESERVE: the heap reserves far more address space than it touches; pages are committed
	 * on first write, like any anonymous memory. */
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	if (hint)
		flags |= MAP_FIXED_NOREPLACE;
	void *p = mmap(hint, size, PROT_READ | PROT_WRITE, flags, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (hint && p != hint) {
		/* A kernel older than 4.17 treats the flag as a plain hint. */
		munmap(p, size);
		return NULL;
	}
	return p;
}

void os_unmap(void *p, size_t size)
{
	munmap(p, size);
}

void os_release(void *p, size_t size)
{
	/* DONTNEED, not FREE: the scavenger's accounting (and needzero) relies on the pages reading
	 * as zero right away. */
	while (madvise(p, size, MADV_DONTNEED) != 0 && errno == EAGAIN)
		;
}

void os_hugepages(void *p, size_t size)
{
	/* With THP set to "madvise" (Debian's default) only advised ranges get huge pages; "never"
	 * refuses, which is fine: it is a hint. */
	madvise(p, size, MADV_HUGEPAGE);
}

uint64_t os_nanotime(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void os_write_stderr(const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(2, s, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		s += w;
		n -= (size_t)w;
	}
}

int os_ncpu(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

int os_running_on_valgrind(void)
{
	return RUNNING_ON_VALGRIND ? 1 : 0;
}

void os_futex_wait(uint32_t *addr, uint32_t val, uint64_t timeout_ns)
{
	struct timespec ts = {(time_t)(timeout_ns / 1000000000u), (long)(timeout_ns % 1000000000u)};
	syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, timeout_ns ? &ts : NULL, NULL, 0);
}

void os_futex_wake(uint32_t *addr, int n)
{
	syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* glibc's thread control block: on x86-64 the thread pointer (%fs base) points at a tcbhead_t whose
 * second word is the dtv; on aarch64 (TLS variant I) the tcbhead_t at the thread pointer starts
 * with it. Entries are 16 bytes: {value, to_free}. */
uintptr_t os_thread_pointer(void)
{
#if defined(__x86_64__)
	uintptr_t tp;
	__asm__("mov %%fs:0, %0" : "=r"(tp));
	return tp;
#elif defined(__aarch64__)
	uintptr_t tp;
	__asm__("mrs %0, tpidr_el0" : "=r"(tp));
	return tp;
#else
	return 0;
#endif
}

void **os_thread_dtv(uintptr_t tp)
{
	if (tp == 0)
		return NULL;
#if defined(__x86_64__)
	return ((void ***)tp)[1];
#elif defined(__aarch64__)
	return ((void ***)tp)[0];
#else
	return NULL;
#endif
}

uintptr_t os_mapped_down(uintptr_t hi, uintptr_t floor)
{
	long pg = sysconf(_SC_PAGESIZE);
	uintptr_t a = hi & ~(uintptr_t)(pg - 1);
	unsigned char v;
	while (a - (uintptr_t)pg >= floor && a - (uintptr_t)pg < a &&
	       mincore((void *)(a - (uintptr_t)pg), (size_t)pg, &v) == 0)
		a -= (uintptr_t)pg;
	return a;
}

uint64_t os_thread_cputime(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void os_sleep_ns(uint64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
	nanosleep(&ts, NULL);
}

void os_cond_timedwait_ns(pthread_cond_t *c, pthread_mutex_t *m, uint64_t ns)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t t = (uint64_t)ts.tv_nsec + ns;
	ts.tv_sec += (time_t)(t / 1000000000u);
	ts.tv_nsec = (long)(t % 1000000000u);
	pthread_cond_timedwait(c, m, &ts);
}
