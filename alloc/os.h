/* alloc/os.h - the contract between cgc and the operating system.
 * One implementation per OS (alloc/os_linux.c), chosen by the build; no #ifdef in callers. */
#ifndef CGC_ALLOC_OS_H
#define CGC_ALLOC_OS_H

#include <stddef.h>
#include <stdint.h>

/* Maps size bytes of zeroed, readable and writable memory that is committed lazily. With a hint,
 * only exactly at the hint (NULL otherwise); without one, anywhere. NULL on failure. */
void *os_map(void *hint, size_t size);
void os_unmap(void *p, size_t size);
/* Gives the pages back to the OS; they read as zero afterwards. */
void os_release(void *p, size_t size);
uint64_t os_nanotime(void);
void os_write_stderr(const char *s, size_t n);
int os_ncpu(void);
/* Whether the process runs under valgrind (then cgc speaks memcheck client requests). */
int os_running_on_valgrind(void);

#endif
