/* alloc/os_linux.c - Linux implementation of alloc/os.h: mmap, madvise, clocks.
 * See doc/design/allocator.md, "Address space". */
#include "alloc/os.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdlib.h>
#include <sys/ioctl.h>
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

/* ---- write tracking ----------------------------------------------------------------------- */

/* The kernel interface, for headers older than Linux 6.7 (Debian 12 ships 6.1's): values from the
 * kernel's uapi linux/userfaultfd.h and linux/fs.h. */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1u << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1u << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef PAGEMAP_SCAN
struct page_region {
	uint64_t start, end, categories;
};
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_WRITTEN (1u << 1)
#endif

static int wt_uffd = -1, wt_pagemap = -1;
#define WT_VEC 4096
static struct page_region *wt_vec;  /* results of one PAGEMAP_SCAN call (callers serialize) */

const char *os_wt_init(void)
{
	if (wt_uffd >= 0)
		return NULL;
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		return "userfaultfd() failed (kernel without it, or not permitted)";
	struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED};
	if (ioctl(fd, UFFDIO_API, &api) != 0) {
		close(fd);
		return "the kernel has no asynchronous userfaultfd write-protection (Linux 6.7 or later)";
	}
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pm < 0) {
		close(fd);
		return "cannot open /proc/self/pagemap";
	}
	struct page_region *vec = os_map(NULL, WT_VEC * sizeof *vec);
	/* A probe: register, protect, write, and read the write back. */
	size_t len = 2 * 4096;
	char *probe = os_map(NULL, len);
	const char *why = NULL;
	if (vec == NULL || probe == NULL) {
		why = "out of memory";
	} else {
		struct uffdio_register reg = {.range = {(uintptr_t)probe, len}, .mode = UFFDIO_REGISTER_MODE_WP};
		struct uffdio_writeprotect wp = {.range = {(uintptr_t)probe, len}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
		if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0 || ioctl(fd, UFFDIO_WRITEPROTECT, &wp) != 0) {
			why = "userfaultfd write-protection refused";
		} else {
			probe[4096] = 1;
			struct pm_scan_arg a = {.size = sizeof a, .start = (uintptr_t)probe, .end = (uintptr_t)probe + len,
						.vec = (uintptr_t)vec, .vec_len = WT_VEC,
						.category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN};
			long r = ioctl(pm, PAGEMAP_SCAN, &a);
			if (r != 1 || vec[0].start != (uintptr_t)probe + 4096 || vec[0].end != (uintptr_t)probe + len)
				why = "PAGEMAP_SCAN does not report written pages (Linux 6.7 or later)";
		}
	}
	if (probe)
		os_unmap(probe, len);
	if (why) {
		if (vec)
			os_unmap(vec, WT_VEC * sizeof *vec);
		close(pm);
		close(fd);
		return why;
	}
	wt_vec = vec;
	wt_pagemap = pm;
	wt_uffd = fd;
	return NULL;
}

int os_wt_register(uintptr_t p, size_t size)
{
	struct uffdio_register reg = {.range = {p, size}, .mode = UFFDIO_REGISTER_MODE_WP};
	return ioctl(wt_uffd, UFFDIO_REGISTER, &reg) == 0 ? 0 : -1;
}

int os_wt_protect(uintptr_t p, size_t size, int on)
{
	struct uffdio_writeprotect wp = {.range = {p, size}, .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
	return ioctl(wt_uffd, UFFDIO_WRITEPROTECT, &wp) == 0 ? 0 : -1;
}

int os_wt_written(uintptr_t lo, uintptr_t hi, void (*fn)(void *arg, uintptr_t a, uintptr_t b), void *arg)
{
	while (lo < hi) {
		struct pm_scan_arg a = {.size = sizeof a, .start = lo, .end = hi, .vec = (uintptr_t)wt_vec, .vec_len = WT_VEC,
					.category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN};
		long r = ioctl(wt_pagemap, PAGEMAP_SCAN, &a);
		if (r < 0)
			return -1;
		for (long i = 0; i < r; i++)
			fn(arg, wt_vec[i].start, wt_vec[i].end);
		if (a.walk_end <= lo)
			return -1; /* no progress: not expected */
		lo = a.walk_end;
	}
	return 0;
}

/* The child has the descriptor but not the registrations (no UFFD_FEATURE_EVENT_FORK): it starts
 * afresh, on a new descriptor, when it next needs one. */
void os_wt_fork_child(void)
{
	if (wt_uffd >= 0) {
		close(wt_uffd);
		wt_uffd = -1;
	}
	if (wt_pagemap >= 0) {
		close(wt_pagemap);
		wt_pagemap = -1;
	}
	if (wt_vec) {
		os_unmap(wt_vec, WT_VEC * sizeof *wt_vec);
		wt_vec = NULL;
	}
}
