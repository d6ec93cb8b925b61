/* alloc/os.h - the contract between cgc and the operating system.
 * One implementation per OS (alloc/os_linux.c), chosen by the build; no #ifdef in callers. */
#ifndef CGC_ALLOC_OS_H
#define CGC_ALLOC_OS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Maps size bytes of zeroed, readable and writable memory that is committed lazily. With a hint,
 * only exactly at the hint (NULL otherwise); without one, anywhere. NULL on failure. */
void *os_map(void *hint, size_t size);
void os_unmap(void *p, size_t size);
/* Gives the pages back to the OS; they read as zero afterwards. */
void os_release(void *p, size_t size);
/* Asks for transparent huge pages over [p, p+size) where the system offers them (a hint: ignored
 * where it is not supported). */
void os_hugepages(void *p, size_t size);
uint64_t os_nanotime(void);
void os_write_stderr(const char *s, size_t n);
int os_ncpu(void);
/* Whether the process runs under valgrind (then cgc speaks memcheck client requests). */
int os_running_on_valgrind(void);

/* Futex wait (while *addr == val, at most timeout_ns; 0: no limit) and wake (n waiters). Both are
 * plain system calls, so the stop signal's handler may use them. */
void os_futex_wait(uint32_t *addr, uint32_t val, uint64_t timeout_ns);
void os_futex_wake(uint32_t *addr, int n);
/* The calling thread's thread pointer (its TLS anchor), and the dynamic thread vector of the
 * thread whose thread pointer is tp: dtv[-1] holds its length, dtv[m] module m's block
 * (doc/design/collector.md 4.3). */
uintptr_t os_thread_pointer(void);
void **os_thread_dtv(uintptr_t tp);
/* The lowest address such that [lo, hi) is mapped, scanning down from hi a page at a time, not
 * below floor. */
uintptr_t os_mapped_down(uintptr_t hi, uintptr_t floor);
/* CPU time of the calling thread, ns. */
uint64_t os_thread_cputime(void);
/* Write tracking: which pages of registered memory were written since they were last protected
 * (Linux: userfaultfd write-protection in asynchronous mode, read back with the PAGEMAP_SCAN
 * ioctl, both 6.7 and later; doc/design/collector.md 9). A write to a protected page is let
 * through by the kernel and recorded; nothing reaches the program. os_wt_init returns NULL when it
 * works, else why not. */
const char *os_wt_init(void);
int os_wt_register(uintptr_t p, size_t size);          /* 0, or -1 */
int os_wt_protect(uintptr_t p, size_t size, int on);  /* 0, or -1 */
/* Calls fn for each run of pages in [lo, hi) written since their protection. 0, or -1 when the
 * kernel refused. */
int os_wt_written(uintptr_t lo, uintptr_t hi, void (*fn)(void *arg, uintptr_t a, uintptr_t b), void *arg);
void os_wt_fork_child(void);                           /* registrations do not survive a fork */
/* Sleeps about ns nanoseconds (a signal may cut it short). */
void os_sleep_ns(uint64_t ns);
/* pthread_cond_timedwait for at most ns from now, on a condition variable of the default clock. */
void os_cond_timedwait_ns(pthread_cond_t *c, pthread_mutex_t *m, uint64_t ns);
#endif
