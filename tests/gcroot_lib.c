/* tests/gcroot_lib.c - a module tests/check_gc.c dlopen()s: one pointer slot in its bss and one in
 * its thread-local storage, so the collector's roots in loaded libraries and dynamic TLS can be tested. */
#include <stddef.h>

#define EXPORT __attribute__((visibility("default")))

/* In the module's bss; hidden by -fvisibility=hidden, so only the functions below reach it. */
void *gcroot_lib_slot;
/* Dynamic TLS: a dlopen()ed module's block is allocated by the C library the first time a thread
 * touches it, outside any stack or static TLS area (doc/design/collector.md 4.3). */
__thread void *gcroot_lib_tls;

/* noinline: the caller's only copy of p is the argument, gone once this returns. */
EXPORT __attribute__((noinline)) void gcroot_lib_set(void *p)
{
	gcroot_lib_slot = p;
}

EXPORT __attribute__((noinline)) void *gcroot_lib_get(void)
{
	return gcroot_lib_slot;
}

EXPORT __attribute__((noinline)) void gcroot_lib_set_tls(void *p)
{
	gcroot_lib_tls = p;
}

EXPORT __attribute__((noinline)) void *gcroot_lib_get_tls(void)
{
	return gcroot_lib_tls;
}
