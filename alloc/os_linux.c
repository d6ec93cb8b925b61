/* alloc/os_linux.c - Linux implementation of alloc/os.h: mmap, madvise, clocks.
 * See doc/design/allocator.md, "Address space". */
#include "alloc/os.h"

#include <errno.h>
#include <sys/mman.h>
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
