/* cgc_barrier.h - the write barrier, for code built for cgc (man 3 CGC_WRITE).
 *
 * While the collector marks beside the program it must hear of every pointer store into the heap
 * or a global: CGC_WRITE(lvalue, value) stores value into lvalue and, while marking is on, shades
 * the old and the new value (the hybrid barrier, doc/design/barrier.md). Off, it costs one load and
 * one predictable branch. A program that routes every such store through CGC_WRITE (or the bulk
 * forms below) says so with cgc_set_barrier(1); the collector then needs no write-protection of
 * the heap and no re-scan of changed pages. Without that promise cgc finds the changes itself, so
 * a missed CGC_WRITE in a program that made no promise costs nothing but speed. */
#ifndef CGC_BARRIER_H
#define CGC_BARRIER_H

#include <cgc.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Nonzero while marking runs: set by the collector, read by CGC_WRITE. */
extern CGC_API int cgc_barrier_active;

/* The out-of-line part of CGC_WRITE: shades *slot (the pointer about to be overwritten) and value.
 * Call it only through the macro, before the store. */
CGC_API void cgc_write_barrier(void *slot, const void *value);

/* The promise: every pointer store into cgc heap memory, globals and registered roots goes through
 * CGC_WRITE or the bulk forms from now on. Returns the previous setting. Set it once, at start. */
CGC_API int cgc_set_barrier(int on);

/* Bulk forms: memmove, memcpy and memset-to-zero of memory that may hold pointers, with the
 * barrier applied to every word. */
CGC_API void *cgc_memmove(void *dst, const void *src, size_t n);
CGC_API void *cgc_memcpy(void *dst, const void *src, size_t n);
CGC_API void *cgc_memclr(void *dst, size_t n);

#define CGC_WRITE(lvalue, value)                                                                   \
	do {                                                                                       \
		__typeof__(lvalue) *cgc_slot_ = &(lvalue);                                         \
		__typeof__(lvalue) cgc_value_ = (value);                                           \
		if (__builtin_expect(__atomic_load_n(&cgc_barrier_active, __ATOMIC_RELAXED), 0))   \
			cgc_write_barrier((void *)cgc_slot_, (const void *)cgc_value_);            \
		*cgc_slot_ = cgc_value_;                                                           \
	} while (0)

#ifdef __cplusplus
}
#endif
#endif /* CGC_BARRIER_H */
