/* barrier/barrier.h - the write barrier's internal interface: the per-thread buffer of values to
 * shade and what the collector does with it. doc/design/barrier.md. */
#ifndef CGC_BARRIER_BARRIER_H
#define CGC_BARRIER_BARRIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Values a thread's barrier recorded (old and new, heap addresses only) and not yet shaded. Lives
 * in the thread's registry record, so mark termination reads every thread's buffer while the world
 * is stopped. */
#define WB_ENTRIES 510
typedef struct wbbuf {
	uint32_t n;
	uintptr_t v[WB_ENTRIES];
} wbbuf_t;

struct gthread;
/* A concurrent mark begins or ends (world stopped): the barrier goes on or off, and values left
 * in the buffers from an earlier cycle are dropped. */
void barrier_enable(bool on);
/* Mark termination (world stopped): shades what every thread buffered. */
void barrier_flush_all(void);
/* A thread leaves the registry: shades what it buffered. */
void barrier_thread_exit(struct gthread *t);
/* Shades every word of [p, p+len) with the stop signal held off: a reallocation's old words. */
void barrier_shade_range(const void *p, size_t len);

#endif
