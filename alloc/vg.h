/* alloc/vg.h - memcheck client requests, behind the rt_valgrind flag.
 * Only slow paths call these: under valgrind the fast paths are switched off (alloc/types.h,
 * struct mcache), so the common case pays nothing. doc/design/allocator.md, "Valgrind". */
#ifndef CGC_ALLOC_VG_H
#define CGC_ALLOC_VG_H

#include <valgrind/memcheck.h>

#include "alloc/alloc.h"

static inline void vg_malloclike(const void *p, size_t n, int zeroed)
{
	if (unlikely(rt_valgrind))
		VALGRIND_MALLOCLIKE_BLOCK(p, n, 0, zeroed);
}

static inline void vg_freelike(const void *p)
{
	if (unlikely(rt_valgrind))
		VALGRIND_FREELIKE_BLOCK(p, 0);
}

static inline void vg_resize(const void *p, size_t old_size, size_t new_size)
{
	if (unlikely(rt_valgrind))
		VALGRIND_RESIZEINPLACE_BLOCK(p, old_size, new_size, 0);
}

static inline void vg_defined(const void *p, size_t n)
{
	if (unlikely(rt_valgrind))
		VALGRIND_MAKE_MEM_DEFINED(p, n);
}

static inline void vg_undefined(const void *p, size_t n)
{
	if (unlikely(rt_valgrind))
		VALGRIND_MAKE_MEM_UNDEFINED(p, n);
}

static inline void vg_noaccess(const void *p, size_t n)
{
	if (unlikely(rt_valgrind))
		VALGRIND_MAKE_MEM_NOACCESS(p, n);
}

/* Conservative scanning reads stack slots and padding nobody initialised: by design, not a bug, so
 * memcheck's reports are off on the scanning thread meanwhile (doc/design/collector.md 5.5). */
static inline void vg_disable_errors(void)
{
	if (unlikely(rt_valgrind))
		VALGRIND_DISABLE_ERROR_REPORTING;
}

static inline void vg_enable_errors(void)
{
	if (unlikely(rt_valgrind))
		VALGRIND_ENABLE_ERROR_REPORTING;
}

#endif
