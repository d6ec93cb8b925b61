/* alloc/meta.c - memory for cgc's own structures (spans, state arrays, mcaches, arena maps).
 * Power-of-two pools carved from mmap'd chunks; none of it is heap the collector manages. */
#include <string.h>

#include "alloc/alloc.h"
#include "alloc/os.h"

#define META_MIN_SHIFT 4               /* 16 bytes */
#define META_MAX_SHIFT 16              /* 64 KiB: an arena's span table */
#define META_CHUNK_MIN ((size_t)1 << 20)  /* mapped at a time, at first */
#define META_CHUNK_MAX ((size_t)16 << 20) /* at most; chunks grow with what is mapped */

static pthread_mutex_t meta_lock = PTHREAD_MUTEX_INITIALIZER;
static void *meta_free_lists[META_MAX_SHIFT + 1];
static char *meta_bump, *meta_bump_end;
static size_t meta_mapped;

static unsigned meta_shift(size_t size)
{
	unsigned sh = META_MIN_SHIFT;
	while (((size_t)1 << sh) < size)
		sh++;
	return sh;
}

/* Writes a zero into each page that a fresh piece starts (the pages it shares with the piece
 * before it were written by that piece's carve). Metadata is often read before it is written: a
 * marker tests a mark byte, a refill reads the state array. A read of an untouched page maps the
 * kernel's shared zero page, and the first write then replaces that mapping, which flushes the
 * TLB of every CPU the process runs on with an interprocessor interrupt. In a VM each is a trap:
 * GCBench with the barrier spent 13% of its program thread sending them and a mark worker 23%
 * receiving them (perf, do_wp_page under mark_free_slots and scan_range). A first write is a plain
 * page fault, with nothing to flush. */
static void meta_touch(uintptr_t a, size_t bytes)
{
	for (uintptr_t q = a; q < a + bytes; q = (q | 4095) + 1)
		*(volatile char *)q = 0;
}

void *meta_alloc(size_t size)
{
	unsigned sh = meta_shift(size);
	if (sh > META_MAX_SHIFT)
		cgc_fatal("cgc: internal error: metadata request of %zu bytes", size);
	size_t bytes = (size_t)1 << sh;
	void *p;
	lock_acquire(&meta_lock);
	p = meta_free_lists[sh];
	if (p) {
		meta_free_lists[sh] = *(void **)p;
		*(void **)p = NULL; /* the rest was zeroed by meta_free */
	} else {
		/* Every size is a power of two: a piece is aligned to min(its size, a page), so
		 * that no piece straddles a page it does not need. Align first, then check room. */
		uintptr_t align = bytes > 4096 ? 4096 : bytes;
		uintptr_t a = ((uintptr_t)meta_bump + align - 1) & ~(align - 1);
		if (meta_bump == NULL || a + bytes > (uintptr_t)meta_bump_end) {
			/* The tail of the old chunk is abandoned: at most 64 KiB per MiB. A chunk is
			 * half of what is mapped already (1 to 16 MiB): each mmap here waits for the
			 * address space's lock, behind whoever holds it for reading (a page fault, the
			 * prefault helper), and a refill made one for every MiB of span metadata:
			 * GCBench's program thread waited 8 to 20 ms in each of them. Untouched pages
			 * cost only address space. */
			size_t chunk = meta_mapped / 2;
			chunk = chunk < META_CHUNK_MIN ? META_CHUNK_MIN : chunk > META_CHUNK_MAX ? META_CHUNK_MAX : chunk;
			char *c = os_map(NULL, chunk);
			if (c == NULL) {
				pthread_mutex_unlock(&meta_lock);
				return NULL;
			}
			meta_bump = c;
			meta_bump_end = c + chunk;
			store_relaxed(&meta_mapped, meta_mapped + chunk);
			a = (uintptr_t)c; /* chunks are page-aligned */
		}
		p = (void *)a;
		meta_bump = (char *)a + bytes;
		meta_touch(a, bytes);
	}
	pthread_mutex_unlock(&meta_lock);
	return p;
}

void meta_free(void *p, size_t size)
{
	unsigned sh = meta_shift(size);
	memset(p, 0, (size_t)1 << sh);
	lock_acquire(&meta_lock);
	*(void **)p = meta_free_lists[sh];
	meta_free_lists[sh] = p;
	pthread_mutex_unlock(&meta_lock);
}

/* fork() in a threaded program: the child must not inherit this lock held (alloc/malloc.c). */
void meta_fork_prepare(void)
{
	lock_acquire(&meta_lock);
}

void meta_fork_release(void)
{
	pthread_mutex_unlock(&meta_lock);
}

size_t meta_mapped_bytes(void)
{
	/* A relaxed read, no lock: the pacer asks with every allocator lock held. */
	return load_relaxed(&meta_mapped);
}
