/* alloc/mheap.c - the page heap: spans of 8 KiB pages from arenas, free runs kept by length and
 * coalesced on free, idle runs returned to the OS. doc/design/allocator.md, "Page heap". */
#include <string.h>

#include "alloc/alloc.h"
#include "alloc/os.h"
#include "alloc/vg.h"
#include "gc/gc.h"

NONROOT mheap_t mheap;
int rt_valgrind;

void mheap_init(void)
{
	pthread_mutex_init(&mheap.lock, NULL);
	for (unsigned i = 0; i < NUM_SPAN_CLASSES; i++)
		pthread_mutex_init(&mheap.central[i].lock, NULL);
	mheap.next_hint = HEAP_HINT_BASE;
	mheap.sweepgen = 4; /* so that sg - 1 and sg - 2 never equal SWEEPGEN_DEAD */
	mheap.last_scavenge = os_nanotime();
}

/* Clears n bytes (a multiple of 4, 4-aligned) of a pooled span struct with relaxed atomic stores:
 * the sweep's walk and the mark read a struct's fields without the lock, and may hold a stale
 * pointer to one being reused (which is why the structs are type-stable): as plain writes these
 * would be data races. */
static void zero_shared(void *p, size_t n)
{
	uint32_t *w = p;
	for (size_t i = 0; i < n / 4; i++)
		store_relaxed(&w[i], 0);
}

/* Span structs are type-stable: pooled, never returned to meta (mheap lock held). */
static span_t *span_struct_new(void)
{
	span_t *s = mheap.span_pool;
	if (s) {
		/* Cleared around sweepgen, which stays DEAD throughout: a sweeper holding a stale
		 * pointer to this struct must never see a value it could claim. */
		mheap.span_pool = s->next;
		zero_shared(s, offsetof(span_t, sweepgen));
		zero_shared(&s->magic, sizeof *s - offsetof(span_t, magic));
	} else {
		s = meta_alloc(sizeof(span_t));
	}
	if (s) {
		s->magic = SPAN_MAGIC;
		store_relaxed(&s->sweepgen, SWEEPGEN_DEAD);
	}
	return s;
}

static void span_struct_free(span_t *s)
{
	s->magic = 0;
	store_relaxed(&s->kind, SPAN_FREE);
	store_release(&s->sweepgen, SWEEPGEN_DEAD);
	s->next = mheap.span_pool;
	mheap.span_pool = s;
}

/* ---- free runs --------------------------------------------------------------------------- */

static unsigned free_list_of(size_t npages)
{
	return npages < HEAP_FREE_LISTS ? (unsigned)npages : 0;
}

static void free_insert(span_t *s)
{
	unsigned i = free_list_of(s->npages);
	span_list_push(&mheap.free[i], s);
	mheap.free_mask[i / 64] |= 1ull << (i % 64);
	s->where = WHERE_HEAP_FREE;
	store_relaxed(&s->kind, SPAN_FREE);
	/* First and last page map to the free span: what coalescing looks at. */
	spanmap_set_page(s->base, s);
	spanmap_set_page(s->base + ((s->npages - 1) << PAGE_SHIFT), s);
	if (s->scavenged)
		mheap.pages_released += s->npages;
	else
		mheap.pages_free += s->npages;
}

static void free_remove(span_t *s)
{
	unsigned i = free_list_of(s->npages);
	span_list_remove(&mheap.free[i], s);
	if (mheap.free[i].head == NULL)
		mheap.free_mask[i / 64] &= ~(1ull << (i % 64));
	if (s->scavenged)
		mheap.pages_released -= s->npages;
	else
		mheap.pages_free -= s->npages;
	s->where = WHERE_NONE;
}

/* The smallest free run of at least npages: the first non-empty exact list at or above npages
 * (found with the bitmap), else the best fit among the long runs, lowest address on ties so the
 * heap stays compact. */
static span_t *free_find(size_t npages)
{
	if (npages < HEAP_FREE_LISTS) {
		for (unsigned w = (unsigned)npages / 64; w < HEAP_FREE_LISTS / 64; w++) {
			uint64_t m = mheap.free_mask[w];
			if (w == npages / 64)
				m &= ~0ull << (npages % 64);
			if (w == 0)
				m &= ~1ull; /* bit 0 is the long-run list */
			if (m)
				return mheap.free[w * 64 + (unsigned)__builtin_ctzll(m)].head;
		}
	}
	span_t *best = NULL;
	for (span_t *s = mheap.free[0].head; s; s = s->next)
		if (s->npages >= npages &&
		    (best == NULL || s->npages < best->npages || (s->npages == best->npages && s->base < best->base)))
			best = s;
	return best;
}

/* Folds the free neighbour n (already off its list) into s: pages, and what they may hold. */
static void absorb(span_t *s, span_t *n)
{
	store_relaxed(&s->npages, s->npages + n->npages);
	s->needzero |= n->needzero;
	s->scavenged &= n->scavenged;
	if (n->free_since > s->free_since)
		s->free_since = n->free_since;
	span_struct_free(n);
}

/* Inserts s's pages as a free run, merging with free neighbours. Entries of pages that end up
 * inside the run are cleared, so no lookup can reach a stale span struct. A neighbour is tested by
 * kind, which changes only under the mheap lock, never by where, which its owner changes freely. */
static void free_range(span_t *s)
{
	uintptr_t lo = load_relaxed(&heap_lo), hi = load_relaxed(&heap_hi);
	span_t *p = s->base > lo ? spanmap_lookup(s->base - PAGE_SIZE) : NULL;
	if (p && load_relaxed(&p->kind) == SPAN_FREE) {
		free_remove(p);
		spanmap_set_page(s->base - PAGE_SIZE, NULL);
		spanmap_set_page(s->base, NULL);
		store_relaxed(&s->base, p->base);
		absorb(s, p);
	}
	uintptr_t end = s->base + (s->npages << PAGE_SHIFT);
	span_t *n = end < hi ? spanmap_lookup(end) : NULL;
	if (n && load_relaxed(&n->kind) == SPAN_FREE) {
		free_remove(n);
		spanmap_set_page(end - PAGE_SIZE, NULL);
		spanmap_set_page(end, NULL);
		absorb(s, n);
	}
	free_insert(s);
}

/* ---- allocation -------------------------------------------------------------------------- */

/* Pages from the unused tail of the newest reservation; maps more when it is too short. */
static span_t *bump_alloc(size_t npages)
{
	size_t bytes = npages << PAGE_SHIFT;
	if (bytes >> PAGE_SHIFT != npages)
		return NULL;
	if (mheap.bump_end - mheap.bump < bytes) {
		size_t got;
		uintptr_t a = arena_grow(npages, &got);
		if (a == 0)
			return NULL;
		if (a == mheap.bump_end) {
			mheap.bump_end += got;
		} else {
			/* Not contiguous: the old tail becomes an ordinary free run (still zero). */
			if (mheap.bump_end > mheap.bump) {
				span_t *t = span_struct_new();
				if (t) {
					store_relaxed(&t->base, mheap.bump);
					store_relaxed(&t->npages, (mheap.bump_end - mheap.bump) >> PAGE_SHIFT);
					t->free_since = os_nanotime();
					free_range(t);
				}
			}
			store_relaxed(&mheap.bump, a);
			mheap.bump_end = a + got;
		}
		if (mheap.bump_end - mheap.bump < bytes)
			return NULL;
	}
	span_t *s = span_struct_new();
	if (s == NULL)
		return NULL;
	store_relaxed(&s->base, mheap.bump);
	store_relaxed(&s->npages, npages);
	s->needzero = 0;
	store_relaxed(&mheap.bump, mheap.bump + bytes); /* read without the lock by gc/dirty.c */
	prefault_note(mheap.bump, mheap.bump_end, mheap.pages_inuse << PAGE_SHIFT);
	return s;
}

static void maybe_scavenge(void)
{
	uint64_t now = os_nanotime();
	if (now - mheap.last_scavenge >= SCAVENGE_INTERVAL_NS)
		mheap_scavenge(now, SCAVENGE_DELAY_NS);
}

/* npages of address space for a new span (lock held): a free run split to size, or fresh pages. */
static span_t *heap_alloc_pages(size_t npages)
{
	maybe_scavenge();
	span_t *s = free_find(npages);
	if (s == NULL) {
		s = bump_alloc(npages);
		if (s == NULL)
			return NULL;
	} else {
		free_remove(s);
		spanmap_set_page(s->base + ((s->npages - 1) << PAGE_SHIFT), NULL);
		if (s->npages > npages) {
			span_t *rest = span_struct_new();
			if (rest == NULL) {
				free_insert(s);
				return NULL;
			}
			store_relaxed(&rest->base, s->base + (npages << PAGE_SHIFT));
			store_relaxed(&rest->npages, s->npages - npages);
			rest->needzero = s->needzero;
			rest->scavenged = s->scavenged;
			rest->free_since = s->free_since;
			store_relaxed(&s->npages, npages);
			free_insert(rest);
		}
		if (s->scavenged)
			s->needzero = 0; /* released pages read as zero */
		s->scavenged = 0;
	}
	s->where = WHERE_NONE;
	s->next = s->prev = NULL;
	store_release(&s->sweepgen, mheap.sweepgen); /* new spans are swept */
	mheap.pages_inuse += npages;
	/* To memcheck a new span is no-access until objects are handed out of it (MALLOCLIKE), so a
	 * program that strays past its object into an unused slot is reported. */
	vg_noaccess((void *)s->base, npages << PAGE_SHIFT);
	return s;
}

span_t *mheap_alloc_small(unsigned spc)
{
	unsigned cl = spc == TINY_SPC ? size_to_class(TINY_SIZE) : spc >> 1;
	lock_acquire(&mheap.lock);
	span_t *s = heap_alloc_pages(sc_npages[cl]);
	if (s) {
		span_init_objects(s, spc);
		s->state = meta_alloc(span_meta_bytes(s));
		if (s->state != NULL)
			s->marks = s->state + span_state_stride(s);
		if (s->state == NULL) {
			store_relaxed(&s->kind, SPAN_FREE);
			mheap_free_span_locked(s);
			s = NULL;
		} else {
			mheap.nspans[spc]++;
			/* The kind last, with release: a concurrent marker that finds the span through the
			 * map of its first page reads the rest only after it (gc/mark.c, mark_word). */
			store_release(&s->kind, spc == TINY_SPC ? SPAN_TINY : SPAN_SMALL);
			spanmap_set(s->base, s->npages, s);
		}
	}
	if (VALIDATE)
		mheap_validate_locked();
	pthread_mutex_unlock(&mheap.lock);
	return s;
}

span_t *mheap_alloc_large(size_t npages, unsigned spc, uintptr_t *inflight)
{
	lock_acquire(&mheap.lock);
	span_t *s = heap_alloc_pages(npages);
	if (s) {
		s->spc = (uint8_t)spc;
		s->elemsize = npages << PAGE_SHIFT;
		s->divmul = 0;
		s->nelems = 1;
		s->nalloc = 1;
		s->nfresh = 1;
		s->freelist = NULL;
		s->local_free = NULL;
		s->large_state = OBJ_ALLOC;
		s->state = &s->large_state;
		/* Born marked while a concurrent mark runs (allocate black). */
		s->large_mark = (uint8_t)(load_relaxed(&mheap.alloc_black) != 0);
		s->marks = &s->large_mark;
		store_relaxed(&s->owner, NULL);
		store_relaxed(&s->thread_free, 0);
		store_release(&s->kind, SPAN_LARGE);
		mheap.nspans[spc]++;
		mheap.large_nmalloc++;
		mheap.large_inuse += s->elemsize;
		spanmap_set(s->base, s->npages, s);
		/* Published under the lock the collector takes before it stops the world: a stop
		 * after the unlock finds the object here, before the caller holds its address
		 * anywhere that is scanned (doc/design/collector.md 5.3). */
		store_relaxed(inflight, s->base);
	}
	if (VALIDATE)
		mheap_validate_locked();
	pthread_mutex_unlock(&mheap.lock);
	return s;
}

/* ---- free -------------------------------------------------------------------------------- */

void mheap_free_span_locked(span_t *s)
{
	CHECK(s->magic == SPAN_MAGIC && s->where == WHERE_NONE);
	if (load_relaxed(&mheap.marking) && s->kind != SPAN_FREE) {
		/* Marking reads spans without locks: this one is freed at mark termination. */
		s->next = mheap.deferred;
		mheap.deferred = s;
		return;
	}
	/* Swept, or never in use: an unswept span could be claimed by a sweeper as it goes. */
	CHECK(!span_unswept(s));
	if (s->kind == SPAN_LARGE) {
		mheap.large_nfree++;
		mheap.large_inuse -= s->elemsize;
		mheap.nspans[s->spc]--;
	} else if (s->kind != SPAN_FREE) {
		mheap.nspans[s->spc]--;
		mheap.dead_nmalloc[s->spc] += load_relaxed(&s->nmalloc);
		store_relaxed(&s->nmalloc, 0);
	}
	if (s->kind == SPAN_SMALL || s->kind == SPAN_LARGE) {
		struct released_span *r = &mheap.released[mheap.released_next++ % RELEASED_RING];
		store_relaxed(&r->base, 0); /* readers skip a half-written entry */
		store_relaxed(&r->bytes, s->npages << PAGE_SHIFT);
		store_relaxed(&r->elemsize, s->elemsize);
		store_release(&r->base, s->base);
	}
	if (s->state && s->state != &s->large_state)
		meta_free(s->state, span_meta_bytes(s));
	s->state = NULL;
	s->marks = NULL;
	store_release(&s->sweepgen, SWEEPGEN_DEAD);
	mheap.pages_inuse -= s->npages;
	store_relaxed(&s->kind, SPAN_FREE);
	store_relaxed(&s->owner, NULL);
	/* Only the first and last page keep an entry; the interior is cleared now, not left stale. */
	for (size_t i = 1; i + 1 < s->npages; i++)
		spanmap_set_page(s->base + (i << PAGE_SHIFT), NULL);
	s->needzero = 1;
	s->scavenged = 0;
	s->free_since = os_nanotime();
	free_range(s);
	maybe_scavenge();
	if (VALIDATE)
		mheap_validate_locked();
}

/* Mark termination (lock held, world stopped, marking over): the spans freed while it ran, to
 * be given to mheap_free_deferred once the allocator's locks are released. */
span_t *mheap_take_deferred_locked(void)
{
	span_t *s = mheap.deferred;
	mheap.deferred = NULL;
	return s;
}

void mheap_free_deferred(span_t *s)
{
	while (s) {
		span_t *next = s->next;
		s->next = NULL;
		mheap_free_span(s);
		s = next;
	}
}

void mheap_free_span(span_t *s)
{
	/* A sweeper may be reading the span's slots: let it finish first (collector.md 6.4). Swept
	 * is checked again under the lock, the only place where it stays true: a cycle may end
	 * between sweep_ensure and the lock (the collector takes this lock before each stop, so
	 * waiting for it is just where a stop catches us), and then the walk can claim the span,
	 * which takes no lock, and sweep its state and marks while we give them back to meta.
	 * Seen as a TSan report in stress_gc, and in release builds 20-30 times a run as spans
	 * freed unswept. Under the lock the generation cannot move, and a swept span cannot be
	 * claimed before mheap_free_span_locked marks it dead. */
	for (;;) {
		sweep_ensure(s, SWEEP_LOCKED);
		lock_acquire(&mheap.lock);
		if (!span_unswept(s))
			break;
		pthread_mutex_unlock(&mheap.lock);
	}
	mheap_free_span_locked(s);
	pthread_mutex_unlock(&mheap.lock);
}

/* Shrinks a large span in place to npages (fewer than it has): the tail pages go back to the page
 * heap as a free run, and the object keeps its address and contents. The span's npages and
 * elemsize change while other threads may read them; the concurrent collector will have to read
 * them once per object scan (doc/design/collector.md). */
bool mheap_shrink_large(span_t *s, size_t npages)
{
	lock_acquire(&mheap.lock);
	if (load_relaxed(&mheap.marking)) {
		/* A marker may be scanning the object at its old length: no shrinking meanwhile. */
		pthread_mutex_unlock(&mheap.lock);
		return false;
	}
	span_t *tail = span_struct_new();
	if (tail == NULL) {
		pthread_mutex_unlock(&mheap.lock);
		return false;
	}
	size_t old_bytes = s->elemsize;
	store_relaxed(&tail->base, s->base + (npages << PAGE_SHIFT));
	store_relaxed(&tail->npages, s->npages - npages);
	store_relaxed(&tail->kind, SPAN_FREE); /* pages, not an object: no large-object counts to undo */
	store_relaxed(&s->npages, npages);
	s->elemsize = npages << PAGE_SHIFT;
	mheap.large_inuse -= old_bytes - s->elemsize;
	mheap_free_span_locked(tail);
	pthread_mutex_unlock(&mheap.lock);
	return true;
}

/* ---- scavenger --------------------------------------------------------------------------- */

void mheap_scavenge(uint64_t now, uint64_t min_idle_ns)
{
	mheap.last_scavenge = now;
	for (unsigned i = 0; i < HEAP_FREE_LISTS; i++) {
		for (span_t *s = mheap.free[i].head; s; s = s->next) {
			if (s->scavenged || now - s->free_since < min_idle_ns)
				continue;
			os_release((void *)s->base, s->npages << PAGE_SHIFT);
			s->scavenged = 1;
			s->needzero = 0;
			mheap.pages_free -= s->npages;
			mheap.pages_released += s->npages;
		}
	}
}

void mheap_release_idle(uint64_t min_idle_ns)
{
	lock_acquire(&mheap.lock);
	mheap_scavenge(os_nanotime(), min_idle_ns);
	pthread_mutex_unlock(&mheap.lock);
}

/* ---- validator --------------------------------------------------------------------------- */

/* Every free run: on the right list, mapped at both ends, not adjacent to another free run; the
 * page counts add up. Aborts with a report on the first violation. */
void mheap_validate_locked(void)
{
	size_t free_pages = 0, released = 0;
	for (unsigned i = 0; i < HEAP_FREE_LISTS; i++) {
		size_t n = 0;
		bool bit = (mheap.free_mask[i / 64] >> (i % 64)) & 1;
		if (bit != (mheap.free[i].head != NULL))
			cgc_fatal("cgc: heap check: free list %u and its mask bit disagree", i);
		for (span_t *s = mheap.free[i].head; s; s = s->next) {
			n++;
			if (s->magic != SPAN_MAGIC || s->kind != SPAN_FREE || s->where != WHERE_HEAP_FREE)
				cgc_fatal("cgc: heap check: span %p on free list %u is not a free span", (void *)s, i);
			if (free_list_of(s->npages) != i)
				cgc_fatal("cgc: heap check: %zu-page run on free list %u", s->npages, i);
			if (spanmap_lookup(s->base) != s ||
			    spanmap_lookup(s->base + ((s->npages - 1) << PAGE_SHIFT)) != s)
				cgc_fatal("cgc: heap check: free run at %p is not mapped at its ends", (void *)s->base);
			span_t *nb = spanmap_lookup(s->base + (s->npages << PAGE_SHIFT));
			if (nb && load_relaxed(&nb->kind) == SPAN_FREE)
				cgc_fatal("cgc: heap check: free runs at %p and %p are adjacent", (void *)s->base,
					  (void *)nb->base);
			if (s->scavenged)
				released += s->npages;
			else
				free_pages += s->npages;
		}
		if (n != mheap.free[i].len)
			cgc_fatal("cgc: heap check: free list %u has %zu runs, says %zu", i, n, mheap.free[i].len);
	}
	if (free_pages != mheap.pages_free || released != mheap.pages_released)
		cgc_fatal("cgc: heap check: %zu free + %zu released pages, counted %zu + %zu", free_pages,
			  released, mheap.pages_free, mheap.pages_released);
	size_t total = (size_t)mheap.arena_bytes >> PAGE_SHIFT;
	size_t bump = (mheap.bump_end - mheap.bump) >> PAGE_SHIFT;
	if (mheap.pages_inuse + free_pages + released + bump > total)
		cgc_fatal("cgc: heap check: %zu in use + %zu free + %zu released + %zu unused > %zu mapped pages",
			  mheap.pages_inuse, free_pages, released, bump, total);
}

void mheap_validate(void)
{
	lock_acquire(&mheap.lock);
	mheap_validate_locked();
	pthread_mutex_unlock(&mheap.lock);
}

size_t mheap_released_object_size(uintptr_t a)
{
	for (unsigned i = 0; i < RELEASED_RING; i++) {
		struct released_span *r = &mheap.released[i];
		uintptr_t base = load_acquire(&r->base);
		size_t bytes = load_relaxed(&r->bytes), elem = load_relaxed(&r->elemsize);
		if (base && elem && a >= base && a < base + bytes && (a - base) % elem == 0 &&
		    (a - base) / elem < bytes / elem)
			return elem;
	}
	return 0;
}

void mheap_register_mcache(mcache_t *c)
{
	c->all_next = mheap.mcaches;
	mheap.mcaches = c;
}
