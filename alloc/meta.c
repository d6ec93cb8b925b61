/* alloc/meta.c - memory for cgc's own structures (spans, state arrays, mcaches, arena maps).
 * Power-of-two pools carved from mmap'd chunks; none of it is heap the collector manages. */
#include <string.h>

#include "alloc/alloc.h"
#include "alloc/os.h"

#define META_MIN_SHIFT 4               /* 16 bytes */
#define META_MAX_SHIFT 16              /* 64 KiB: an arena's span table */
#define META_LINE 64                   /* sizes over this are whole lines, not powers of two */
#define META_NLINES (((size_t)1 << META_MAX_SHIFT) / META_LINE)
#define META_CHUNK_MIN ((size_t)1 << 20)  /* mapped at a time, at first */
#define META_CHUNK_MAX ((size_t)16 << 20) /* at most; chunks grow with what is mapped */

static pthread_mutex_t meta_lock = PTHREAD_MUTEX_INITIALIZER;
/* Free pieces by size: [0, 6] the powers of two up to META_LINE, then one list per whole number
 * of lines. A span's state and mark arrays (two bytes a slot) are the bulk of metadata, and
 * rounded to a power of two they wasted a third of it (GCBench at 200 MB live: 86 MB of metadata
 * for 400 MB of spans; 24-byte objects need 688 bytes a span, which took 1024). */
static void *meta_free_lists[META_MIN_SHIFT + 3 + META_NLINES];
static char *meta_bump, *meta_bump_end;
static size_t meta_mapped;

/* The size a request gets and the list it lives on. */
static size_t meta_round(size_t size, size_t *list)
{
	if (size <= META_LINE) {
		unsigned sh = META_MIN_SHIFT;
		while (((size_t)1 << sh) < size)
			sh++;
		*list = sh - META_MIN_SHIFT;
		return (size_t)1 << sh;
	}
	size_t lines = (size + META_LINE - 1) / META_LINE;
	*list = META_MIN_SHIFT + 2 + lines;
	return lines * META_LINE;
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
	if (size > ((size_t)1 << META_MAX_SHIFT))
		cgc_fatal("cgc: internal error: metadata request of %zu bytes", size);
	size_t list, bytes = meta_round(size, &list);
	void *p;
	lock_acquire(&meta_lock);
	p = meta_free_lists[list];
	if (p) {
		meta_free_lists[list] = *(void **)p;
		*(void **)p = NULL; /* the rest was zeroed by meta_free */
	} else {
		/* A small piece is aligned to its size, so that it straddles no page it does not
		 * need; a bigger one to a cache line, so that no two pieces share a line (threads
		 * write their own spans' mark bytes). Align first, then check room. */
		uintptr_t align = bytes < META_LINE ? bytes : META_LINE;
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
	size_t list, bytes = meta_round(size, &list);
	memset(p, 0, bytes);
	lock_acquire(&meta_lock);
	*(void **)p = meta_free_lists[list];
	meta_free_lists[list] = p;
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
