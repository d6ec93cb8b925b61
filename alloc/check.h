/* alloc/check.h - debug levels, assertions and the one-line fatal report.
 * Levels as in doc/design/allocator.md: 0 none, 1 cheap checks, 2 internal checks, 3 validators. */
#ifndef CGC_ALLOC_CHECK_H
#define CGC_ALLOC_CHECK_H

#include <stdarg.h>
#include <stddef.h>

#ifndef CGC_DEBUG_LEVEL
#define CGC_DEBUG_LEVEL 0
#endif

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define NOINLINE __attribute__((noinline))
#define COLD __attribute__((cold, noinline))
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* Formats into a stack buffer and writes one line to stderr: never allocates, so it is safe from
 * inside the allocator. Understands %s %p %zu %zx %u %d %lu %llu %x and %%. */
void cgc_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cgc_vreport(const char *fmt, va_list ap);
/* Reports, then aborts: the outcome of a bad free and of a failed check. */
_Noreturn void cgc_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Formats into buf (at most cap bytes, always terminated); returns the untruncated length. */
size_t cgc_format(char *buf, size_t cap, const char *fmt, va_list ap);

#define CHECK_FAIL(cond) cgc_fatal("cgc: internal check failed: %s (%s:%d)", #cond, __FILE__, __LINE__)

#if CGC_DEBUG_LEVEL >= 1
#define CHECK(cond) do { if (unlikely(!(cond))) CHECK_FAIL(cond); } while (0)
#else
#define CHECK(cond) ((void)0)
#endif
#if CGC_DEBUG_LEVEL >= 2
#define CHECK2(cond) do { if (unlikely(!(cond))) CHECK_FAIL(cond); } while (0)
#else
#define CHECK2(cond) ((void)0)
#endif
/* Expensive whole-structure validators run only at level 3. */
#define VALIDATE (CGC_DEBUG_LEVEL >= 3)

/* Byte written over freed memory in debug builds, so use after free shows. */
#define FREED_FILL 0xdf

#endif
