/* alloc/span.c - the slots of one span: carving fresh slots, collecting remote frees, lists and
 * the span validator. doc/design/allocator.md, "Spans". */
#include <string.h>

#include "alloc/alloc.h"
#include "alloc/vg.h"

void *obj_get_next_slow(void *p)
{
	vg_defined(p, sizeof(void *));
	void *n = *(void **)p;
	vg_noaccess(p, sizeof(void *));
	return n;
}

void obj_set_next_slow(void *p, void *next)
{
	vg_undefined(p, sizeof(void *));
	*(void **)p = next;
	vg_noaccess(p, sizeof(void *));
}

void span_init_objects(span_t *s, unsigned spc)
{
	unsigned cl = spc == TINY_SPC ? size_to_class(TINY_SIZE) : spc >> 1;
	s->spc = (uint8_t)spc;
	/* kind is set by the caller, last (alloc/mheap.c). */
	s->elemsize = sc_size[cl];
	s->divmul = sc_divmul[cl];
	s->nelems = sc_nelems[cl];
	s->nalloc = 0;
	s->nmalloc = 0;
	s->nfresh = 0;
	s->freelist = NULL;
	s->local_free = NULL;
	store_relaxed(&s->thread_free, 0);
	store_relaxed(&s->owner, NULL);
}

/* Fresh slots are threaded in address order, a batch at a time: the first allocations from a new
 * span touch one page, not the whole span. */
bool span_extend_fresh(span_t *s)
{
	if (s->nfresh >= s->nelems)
		return false;
	size_t batch = FRESH_BATCH_BYTES / s->elemsize;
	if (batch == 0)
		batch = 1;
	size_t from = s->nfresh, to = from + batch;
	if (to > s->nelems)
		to = s->nelems;
	void *head = s->freelist;
	for (size_t i = to; i > from; i--) {
		void *p = (void *)(s->base + (i - 1) * s->elemsize);
		obj_set_next(p, head);
		head = p;
	}
	s->freelist = head;
	/* Atomic: a sweeper may read it this moment, if a cycle ended since our refill found the
	 * span swept (the refill then starts over, collector.md 5.3). The new slots are FREE, which
	 * a sweep leaves alone, so either value is right for it. */
	store_relaxed(&s->nfresh, (uint16_t)to);
	return true;
}

/* Debug builds fill a freed slot (past its link word) with FREED_FILL; slot_recycle checks it. */
void slot_fill_freed_slow(span_t *s, void *p)
{
	if (s->elemsize <= sizeof(void *))
		return;
	vg_undefined(p, s->elemsize);
	memset((char *)p + sizeof(void *), FREED_FILL, s->elemsize - sizeof(void *));
	vg_noaccess(p, s->elemsize);
}

/* Readies a freed slot for the free list. In debug builds the fill written at free time is checked
 * first, so a write after free is caught here. Zeroing is left to allocation (doc/design/
 * allocator.md 3.3): done here it would walk a list of cold objects one miss after another. */
static void slot_recycle(span_t *s, void *p)
{
	if (CGC_DEBUG_LEVEL == 0 || s->kind != SPAN_SMALL || s->elemsize <= sizeof(void *))
		return;
	size_t len = s->elemsize - sizeof(void *);
	unsigned char *body = (unsigned char *)p + sizeof(void *);
	vg_defined(body, len);
	for (size_t i = 0; i < len; i++)
		if (body[i] != FREED_FILL)
			cgc_fatal("cgc: the %zu-byte object at %p was written after it was freed (byte %zu)",
				  s->elemsize, p, i + sizeof(void *));
	vg_noaccess(body, len);
}

/* Moves a list of freed slots onto freelist, recycling each; returns how many. */
static size_t splice_recycled(span_t *s, void *list)
{
	size_t n = 0;
	void *head = s->freelist;
	while (list) {
		void *next = obj_get_next(list);
		slot_recycle(s, list);
		obj_set_next(list, head);
		head = list;
		list = next;
		n++;
	}
	s->freelist = head;
	return n;
}

void span_push_free(span_t *s, void *p)
{
	slot_recycle(s, p);
	obj_set_next(p, s->freelist);
	s->freelist = p;
}

/* Moves the owner's own frees (local_free) and other threads' frees (thread_free) onto freelist;
 * leaves keep_flag in thread_free (0 for an owned span, TF_UNOWNED when the owner gives it up).
 * Returns nonzero when slots became free. */
size_t span_collect(span_t *s, uintptr_t keep_flag)
{
	size_t n = 0;
	if (s->local_free) {
		void *l = s->local_free;
		s->local_free = NULL;
		if (s->freelist == NULL && CGC_DEBUG_LEVEL == 0) {
			s->freelist = l; /* O(1): the usual case, called when freelist ran dry */
			n = 1;           /* "some": nalloc was counted down at free time */
		} else {
			n += splice_recycled(s, l);
		}
	}
	/* Skip the locked exchange when nothing is pending and the flag is already right. */
	if (load_relaxed(&s->thread_free) == keep_flag)
		return n;
	uintptr_t list = exchange_acq_rel(&s->thread_free, keep_flag) & ~TF_UNOWNED;
	if (list) {
		size_t r = splice_recycled(s, (void *)list);
		CHECK(s->nalloc >= r);
		/* Remote frees counted as allocated until now. */
		store_relaxed(&s->nalloc, (uint16_t)(s->nalloc - r));
		fetch_sub_relaxed(&mheap.remote_uncollected[s->spc], r);
		n += r;
	}
	return n;
}

void span_list_push(span_list_t *l, span_t *s)
{
	s->prev = NULL;
	s->next = l->head;
	if (l->head)
		l->head->prev = s;
	l->head = s;
	l->len++;
}

void span_list_remove(span_list_t *l, span_t *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		l->head = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->next = s->prev = NULL;
	l->len--;
}

span_t *span_list_pop(span_list_t *l)
{
	span_t *s = l->head;
	if (s)
		span_list_remove(l, s);
	return s;
}

/* The invariants of alloc/types.h, struct span. For a span this thread owns (or holds the lock of):
 * remote frees in flight are not counted. */
void span_validate(const span_t *s)
{
	if (s->magic != SPAN_MAGIC)
		cgc_fatal("cgc: span %p: bad signature %x", (const void *)s, s->magic);
	if (s->kind == SPAN_LARGE) {
		if (s->nelems != 1 || s->divmul != 0 || s->elemsize != s->npages << PAGE_SHIFT)
			cgc_fatal("cgc: large span %p at %p: bad shape", (const void *)s, (void *)s->base);
		return;
	}
	if (s->kind != SPAN_SMALL && s->kind != SPAN_TINY)
		cgc_fatal("cgc: span %p: kind %u is not in use", (const void *)s, (unsigned)s->kind);
	if ((size_t)s->nelems * s->elemsize > s->npages << PAGE_SHIFT || s->nfresh > s->nelems)
		cgc_fatal("cgc: span %p: %u slots of %zu bytes do not fit", (const void *)s,
			  (unsigned)s->nelems, s->elemsize);
	size_t nfree = 0;
	for (int which = 0; which < 2; which++)
	for (void *p = which ? s->local_free : s->freelist; p; p = obj_get_next(p)) {
		uintptr_t a = (uintptr_t)p;
		size_t idx = span_objindex(s, a);
		if (a < s->base || idx >= s->nfresh || s->base + idx * s->elemsize != a)
			cgc_fatal("cgc: span %p: free-list entry %p is not a carved slot", (const void *)s, p);
		if (s->state[idx] != OBJ_FREE)
			cgc_fatal("cgc: span %p: free-list entry %p is marked allocated", (const void *)s, p);
		if (++nfree > s->nelems)
			cgc_fatal("cgc: span %p: free list has a cycle", (const void *)s);
	}
	if (s->nalloc + nfree + (size_t)(s->nelems - s->nfresh) != s->nelems)
		cgc_fatal("cgc: span %p: %u allocated + %zu free + %u fresh != %u slots", (const void *)s,
			  (unsigned)s->nalloc, nfree, (unsigned)(s->nelems - s->nfresh), (unsigned)s->nelems);
}
