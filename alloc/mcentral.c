/* alloc/mcentral.c - spans of one class that no thread owns, under a lock per class.
 * doc/design/allocator.md, "Ownership and remote frees". */
#include "alloc/alloc.h"

/* Which of the two sets holds swept spans this cycle (see mcentral_t). */
static unsigned swept_set(void)
{
	return (load_relaxed(&mheap.sweepgen) >> 1) & 1;
}

static span_list_t *central_list(mcentral_t *mc, span_t *s)
{
	unsigned set = swept_set();
	return s->where == WHERE_CENTRAL_FULL ? &mc->full[set] : &mc->partial[set];
}

span_t *mcentral_take(unsigned spc, mcache_t *c)
{
	mcentral_t *mc = &mheap.central[spc];
	pthread_mutex_lock(&mc->lock);
	span_t *s = span_list_pop(&mc->partial[swept_set()]);
	if (s) {
		/* Unowned frees went straight onto freelist under this lock, so thread_free holds
		 * nothing but the flag; clearing it sends later remote frees to the lock-free path. */
		CHECK(load_relaxed(&s->thread_free) == TF_UNOWNED);
		store_relaxed(&s->owner, owner_tag(c));
		store_release(&s->thread_free, 0);
		s->where = WHERE_NONE;
	}
	pthread_mutex_unlock(&mc->lock);
	return s;
}

void mcentral_adopt(span_t *s)
{
	mcentral_t *mc = &mheap.central[s->spc];
	pthread_mutex_lock(&mc->lock);
	/* Setting the flag and taking the pending list in one exchange: a remote free either landed
	 * before (and is collected here) or sees the flag and comes to this lock. */
	span_collect(s, TF_UNOWNED);
	store_relaxed(&s->owner, NULL);
	if (s->nalloc == 0) {
		s->where = WHERE_NONE;
		mheap_free_span(s);
	} else {
		s->where = (s->freelist || s->nfresh < s->nelems) ? WHERE_CENTRAL_PARTIAL : WHERE_CENTRAL_FULL;
		span_list_push(central_list(mc, s), s);
	}
	pthread_mutex_unlock(&mc->lock);
}

bool mcentral_free(span_t *s, void *p)
{
	mcentral_t *mc = &mheap.central[s->spc];
	pthread_mutex_lock(&mc->lock);
	if (!(load_acquire(&s->thread_free) & TF_UNOWNED)) {
		pthread_mutex_unlock(&mc->lock); /* taken by a thread meanwhile */
		return false;
	}
	span_push_free(s, p);
	CHECK(s->nalloc > 0);
	counter_add_owner(&s->nalloc, -1);
	if (s->nalloc == 0) {
		span_list_remove(central_list(mc, s), s);
		s->where = WHERE_NONE;
		mheap_free_span(s);
	} else if (s->where == WHERE_CENTRAL_FULL) {
		span_list_remove(central_list(mc, s), s);
		s->where = WHERE_CENTRAL_PARTIAL;
		span_list_push(central_list(mc, s), s);
	}
	pthread_mutex_unlock(&mc->lock);
	return true;
}
