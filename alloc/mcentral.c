/* alloc/mcentral.c - spans of one class that no thread owns, under a lock per class; they are
 * swept here, under that lock. doc/design/allocator.md, "Ownership and remote frees", and
 * doc/design/collector.md 6. */
#include "alloc/alloc.h"
#include "gc/gc.h"

/* Which of the two sets holds swept spans this cycle (see mcentral_t). */
static unsigned swept_set(void)
{
	return (load_relaxed(&mheap.sweepgen) >> 1) & 1;
}

static span_list_t *central_list(mcentral_t *mc, span_t *s)
{
	return s->where == WHERE_CENTRAL_FULL ? &mc->full[s->central_set] : &mc->partial[s->central_set];
}

/* Files s (lock held, where set) in the swept or the unswept set, as it is. */
static void central_push(mcentral_t *mc, span_t *s)
{
	s->central_set = (uint8_t)(swept_set() ^ (unsigned)span_unswept(s));
	span_list_push(central_list(mc, s), s);
}

static bool has_room(const span_t *s)
{
	return s->freelist || s->local_free || s->nfresh < s->nelems;
}

/* A span just swept under the lock: back to the heap when empty, else on the right list. */
static void central_refile(mcentral_t *mc, span_t *s)
{
	if (s->nalloc == 0) {
		s->where = WHERE_NONE;
		mheap_free_span(s);
		return;
	}
	s->where = has_room(s) ? WHERE_CENTRAL_PARTIAL : WHERE_CENTRAL_FULL;
	central_push(mc, s);
}

span_t *mcentral_take(unsigned spc, mcache_t *c)
{
	mcentral_t *mc = &mheap.central[spc];
	lock_acquire(&mc->lock);
	unsigned sw = swept_set();
	/* Swept spans with room first; then unswept ones, partial before full, swept here. A span
	 * that a remote sweeper holds is set aside: waiting under this lock could deadlock with it. */
	span_list_t *order[3] = {&mc->partial[sw], &mc->partial[sw ^ 1], &mc->full[sw ^ 1]};
	span_list_t busy = {0};
	span_t *s = NULL;
	for (int k = 0; k < 3 && s == NULL; k++) {
		while ((s = span_list_pop(order[k])) != NULL) {
			if (!sweep_unless_busy(s, SWEEP_LOCKED)) {
				span_list_push(&busy, s);
				continue;
			}
			if (has_room(s))
				break;
			s->where = WHERE_CENTRAL_FULL;
			central_push(mc, s);
		}
	}
	while (busy.head) {
		span_t *b = span_list_pop(&busy);
		central_push(mc, b);
	}
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
	lock_acquire(&mc->lock);
	/* Setting the flag and taking the pending list in one exchange: a remote free either landed
	 * before (and is collected here) or sees the flag and comes to this lock. */
	span_collect(s, TF_UNOWNED);
	store_relaxed(&s->owner, NULL);
	if (s->nalloc == 0) {
		s->where = WHERE_NONE;
		mheap_free_span(s);
	} else {
		s->where = has_room(s) ? WHERE_CENTRAL_PARTIAL : WHERE_CENTRAL_FULL;
		central_push(mc, s);
	}
	pthread_mutex_unlock(&mc->lock);
}

/* Frees the chain head..tail of n slots into unowned span s; false if s got an owner meanwhile
 * (then the caller frees remotely). */
bool mcentral_free_chain(span_t *s, void *head, void *tail, size_t n)
{
	mcentral_t *mc = &mheap.central[s->spc];
	lock_acquire(&mc->lock);
	if (!(load_acquire(&s->thread_free) & TF_UNOWNED)) {
		pthread_mutex_unlock(&mc->lock); /* taken by a thread meanwhile */
		return false;
	}
	for (void *p = head, *next; p; p = next) {
		next = p == tail ? NULL : obj_get_next(p);
		span_push_free(s, p);
	}
	CHECK(s->nalloc >= n);
	counter_add_owner(&s->nalloc, -(int)n);
	if (s->nalloc == 0 || s->where == WHERE_CENTRAL_FULL) {
		span_list_remove(central_list(mc, s), s);
		central_refile(mc, s);
	}
	pthread_mutex_unlock(&mc->lock);
	return true;
}

bool mcentral_free(span_t *s, void *p)
{
	obj_set_next(p, NULL);
	return mcentral_free_chain(s, p, p, 1);
}
