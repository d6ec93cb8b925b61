/* alloc/mcache.c - the per-thread cache: owns spans, refills its current span per class, takes
 * frees of its own spans without locks. doc/design/allocator.md, "mcache". */
#include <string.h>

#include "alloc/alloc.h"
#include "alloc/vg.h"
#include "gc/gc.h"

span_t empty_span = {.kind = SPAN_FREE};
mcache_t empty_mcache = {
	.alloc = {[0 ... NUM_SPAN_CLASSES - 1] = &empty_span},
	.cur = {[0 ... NUM_SPAN_CLASSES - 1] = &empty_span},
};
__thread mcache_t *tls_mcache __attribute__((tls_model("initial-exec"))) = &empty_mcache;

static pthread_key_t mcache_key;

static void mcache_thread_exit(void *arg)
{
	mcache_t *c = arg;
	tls_mcache = &empty_mcache;
	mcache_destroy(c);
}

void mcache_init_key(void)
{
	if (pthread_key_create(&mcache_key, mcache_thread_exit) != 0)
		cgc_fatal("cgc: cannot create the thread-exit key for per-thread caches");
}

mcache_t *mcache_create(void)
{
	alloc_init();
	lock_acquire(&mheap.lock);
	mcache_t *c;
	for (c = mheap.mcaches; c; c = c->all_next)
		if (!c->live)
			break;
	if (c == NULL) {
		c = meta_alloc(sizeof(mcache_t));
		if (c)
			mheap_register_mcache(c);
	}
	if (c) {
		/* A pooled cache may still receive stale remote_pending bumps from frees that read its
		 * address as an owner before it was given up: they cost one extra look, nothing more. */
		for (unsigned i = 0; i < NUM_SPAN_CLASSES; i++) {
			c->alloc[i] = c->cur[i] = &empty_span;
			c->partial[i] = (span_list_t){0};
			c->full[i] = (span_list_t){0};
		}
		c->tiny = 0;
		c->tiny_off = 0;
		c->tiny_state = NULL;
		c->sweepgen = load_relaxed(&mheap.sweepgen);
		c->live = 1;
		c->magic = MCACHE_MAGIC;
	}
	pthread_mutex_unlock(&mheap.lock);
	if (c) {
		tls_mcache = c;
		pthread_setspecific(mcache_key, c);
		/* A thread that allocates has cgc pointers on its stack: it must be scanned. */
		threads_register_self();
	}
	return c;
}

/* After a cycle's mark termination the current spans are unswept: the owner drops them onto its
 * partial lists, where the next refill sweeps them (doc/design/collector.md 5.2). The collector
 * already pointed alloc[] at the empty span and dropped the tiny block. */
void mcache_flush(mcache_t *c)
{
	for (unsigned spc = 0; spc < NUM_SPAN_CLASSES; spc++) {
		/* Full spans may hold garbage now: they join the partial ones, which refills sweep
		 * before use (a span with no room after its sweep goes back to full). Each span is
		 * looked at once a cycle, as Go's unswept span sets. */
		span_t *s;
		while ((s = span_list_pop(&c->full[spc])) != NULL) {
			s->where = WHERE_MC_PARTIAL;
			span_list_push(&c->partial[spc], s);
		}
		s = c->cur[spc];
		c->cur[spc] = c->alloc[spc] = &empty_span;
		if (s != &empty_span) {
			s->where = WHERE_MC_PARTIAL;
			span_list_push(&c->partial[spc], s);
		}
	}
	c->tiny = 0;
	c->tiny_off = 0;
	c->tiny_state = NULL;
	c->sweepgen = load_acquire(&mheap.sweepgen);
}

/* The bytes this cache freed explicitly since it last said, to be taken off the pacer's count of
 * what was handed out: without it a program that frees everything it allocates (a sliding window
 * of 1.4 MB) collected every 2.6 MB of allocation, 650 cycles in 20M allocations, a third of its
 * time. Frees counted before the last cycle ended are dropped: that cycle's mark already left
 * those objects out of the live heap, and taking them off again would let the heap overshoot. */
int64_t mcache_take_freed(mcache_t *c)
{
	int64_t f = c->freed;
	uint64_t cycle = load_relaxed(&gc.cycle);
	bool current = c->freed_cycle == cycle;
	c->freed = 0;
	c->freed_cycle = cycle;
	return current ? f : 0;
}

static void make_current(mcache_t *c, unsigned spc, span_t *s)
{
	/* The pacer counts what a cache can hand out, when it takes it, net of what the thread
	 * freed (gc/pacer.c), and the sweep is paid for by the bytes taken (gc/sweep.c, sweep_pay). */
	size_t bytes = (size_t)(s->nelems - s->nalloc) * s->elemsize;
	pacer_account((int64_t)bytes - mcache_take_freed(c));
	sweep_pay(bytes);
	s->where = WHERE_MC_CUR;
	c->cur[spc] = s;
	/* Under valgrind the fast path must always miss (alloc/types.h, struct mcache). */
	c->alloc[spc] = rt_valgrind ? &empty_span : s;
}

/* Full spans of class spc that other threads freed into: only looked at when such a free told
 * us (remote_pending), so the cost is paid by the programs that free remotely. */
static void rescue_remote(mcache_t *c, unsigned spc)
{
	if (load_relaxed(&c->remote_pending[spc]) == 0)
		return;
	exchange_acq_rel(&c->remote_pending[spc], 0);
	span_t *next;
	for (span_t *s = c->full[spc].head; s; s = next) {
		next = s->next;
		if (load_relaxed(&s->thread_free) == 0)
			continue;
		span_list_remove(&c->full[spc], s);
		span_collect(s, 0);
		s->where = WHERE_MC_PARTIAL;
		span_list_push(&c->partial[spc], s);
	}
}

/* The next span to allocate from: an owned partial span, one rescued from remote frees, an
 * unowned one from mcentral, or a new one from the page heap, in that order of cost. */
/* Spans a refill may find full after sweeping them before it takes a new one instead: after a
 * cycle every full span joins the partial list, and a big live structure (GCBench's 200 MB tree)
 * could make one refill sweep thousands of them. The rest wait for later refills and the
 * background sweeper, as Go's mcentral gives up after 100 spans. */
#define REFILL_SWEEP_BUDGET 32

static span_t *next_span(mcache_t *c, unsigned spc)
{
	span_t *s;
	unsigned found_full = 0;
	for (int pass = 0; pass < 2 && found_full < REFILL_SWEEP_BUDGET; pass++) {
		while (found_full < REFILL_SWEEP_BUDGET && (s = span_list_pop(&c->partial[spc])) != NULL) {
			if (!sweep_unless_busy(s, SWEEP_OWNER)) {
				/* Another thread is sweeping it this moment (the background sweeper, at
				 * nice 19, may be preempted there): not worth waiting for. Its dead come
				 * back as a remote free, which rescue_remote finds on the full list. */
				s->where = WHERE_MC_FULL;
				span_list_push(&c->full[spc], s);
				continue;
			}
			span_collect(s, 0);
			if (s->freelist || span_extend_fresh(s))
				return s;
			s->where = WHERE_MC_FULL;
			span_list_push(&c->full[spc], s);
			found_full++;
		}
		if (pass == 0)
			rescue_remote(c, spc);
	}
	s = mcentral_take(spc, c);
	if (s && (s->freelist || span_collect(s, 0) || span_extend_fresh(s)))
		return s;
	if (s) { /* cannot happen: mcentral keeps full spans apart */
		s->where = WHERE_MC_FULL;
		span_list_push(&c->full[spc], s);
	}
	s = mheap_alloc_small(spc);
	if (s == NULL)
		return NULL;
	store_relaxed(&s->owner, owner_tag(c));
	span_extend_fresh(s);
	return s;
}

void *mcache_refill(mcache_t *c, unsigned spc)
{
retry:
	if (unlikely(c->sweepgen != load_acquire(&mheap.sweepgen)))
		mcache_flush(c);
	span_t *s = c->cur[spc];
	if (s != &empty_span) {
		if (VALIDATE)
			span_validate(s);
		if (s->freelist == NULL) {
			/* Slots freed into the current span since it was taken are handed out again:
			 * the pacer counts them as at a take, else a program that frees as much as it
			 * allocates would drift below its real heap. The free list was empty, so all
			 * of it is what the collect brought (alloc/types.h, the span invariant). */
			if (span_collect(s, 0))
				pacer_account((int64_t)((size_t)(s->nfresh - s->nalloc) * s->elemsize) -
					      mcache_take_freed(c));
			else
				span_extend_fresh(s);
		}
		if (s->freelist == NULL) {
			s->where = WHERE_MC_FULL;
			span_list_push(&c->full[spc], s);
			c->cur[spc] = c->alloc[spc] = &empty_span;
			s = next_span(c, spc);
			if (s == NULL)
				return NULL;
			make_current(c, spc, s);
		}
	} else {
		s = next_span(c, spc);
		if (s == NULL)
			return NULL;
		make_current(c, spc, s);
	}
	/* A cycle that ended while we looked for s did not see it as our current span, so its
	 * termination did not mark the head we are about to pop, and a sweeper may take s before we
	 * mark it ourselves: put s back and start again. From here on a stop finds s in c->cur and
	 * marks its head, or finds the popped object in our registers (collector.md 5.3). */
	if (unlikely(c->sweepgen != load_acquire(&mheap.sweepgen)))
		goto retry;
	/* Allocate black while a concurrent mark runs: every slot the fast path may hand out until
	 * the next refill is marked now. Read after s became current: a mark that began since then
	 * marked them itself at its start (doc/design/collector.md 8.2). */
	if (unlikely(load_acquire(&mheap.marking)))
		gc_refill_marking(s);
	void *p = s->freelist;
	s->freelist = obj_get_next(p);
	counter_add_owner(&s->nalloc, 1);
	size_t idx = span_objindex(s, (uintptr_t)p);
	store_relaxed(&s->state[idx], OBJ_ALLOC);
	/* The fast path's count moves to the cache at every refill: at most a span's slots
	 * between two, so the span's 32-bit count never wraps. */
	counter_add_owner(&c->nmalloc[spc], load_relaxed(&s->nmalloc) + 1);
	store_relaxed(&s->nmalloc, 0);
	/* A cycle that ended since the check above marked p as the head of our current span, or
	 * found it in our registers (doc/design/collector.md 5.3); no mark is set here, since a
	 * sweep could finish between a test and the set and leave the mark on into the next cycle,
	 * which would then never scan p. The current spans are dropped before the fast path can
	 * use an unswept one. */
	if (unlikely(c->sweepgen != load_acquire(&mheap.sweepgen)))
		mcache_flush(c);
	return p;
}

/* After a local free: a full span has room again, or a span became empty. */
void mcache_after_local_free(mcache_t *c, span_t *s)
{
	unsigned spc = s->spc;
	if (s->where == WHERE_MC_FULL) {
		span_list_remove(&c->full[spc], s);
		s->where = WHERE_MC_PARTIAL;
		span_list_push(&c->partial[spc], s);
	}
	/* An empty span goes back to the page heap unless it is this class's only spare: a program
	 * that frees and allocates around a span boundary must not map and unmap it every time. */
	if (s->nalloc == 0 && s->where == WHERE_MC_PARTIAL && c->partial[spc].len > 1) {
		span_list_remove(&c->partial[spc], s);
		s->where = WHERE_NONE;
		/* nalloc == 0 counts pending remote frees too, so none can be in flight. */
		store_relaxed(&s->thread_free, 0);
		mheap_free_span(s);
	}
}

void mcache_remote_free(span_t *s, void *p, size_t idx, const char *fn)
{
	uint8_t expect = OBJ_ALLOC;
	if (!__atomic_compare_exchange_n(&s->state[idx], &expect, OBJ_FREE, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_RELAXED))
		report_bad_pointer(fn, p);
	vg_freelike(p);
	slot_fill_freed(s, p);
	obj_set_next(p, NULL);
	mcache_free_chain_remote(s, p, p, 1);
}

/* Frees the chain head..tail (n slots, already FREE in the state array) into s from a thread that
 * does not own it: a remote free, or a sweep of another thread's span. */
void mcache_free_chain_remote(span_t *s, void *head, void *tail, size_t n)
{
	void *p = head;
	unsigned spc = s->spc;
	/* Counted before the push: once pushed, the owner may collect (and count down) at once. */
	fetch_add_relaxed(&mheap.remote_uncollected[spc], n);
	uintptr_t old = load_acquire(&s->thread_free);
	for (;;) {
		if (old & TF_UNOWNED) {
			if (mcentral_free_chain(s, head, tail, n)) {
				fetch_sub_relaxed(&mheap.remote_uncollected[spc], n);
				break;
			}
			old = load_acquire(&s->thread_free);
			continue;
		}
		/* Everything needed from the span is read before the push: after it, the owner may
		 * collect this object, find the span empty and give it back to the page heap. Until
		 * then the object counts in nalloc, which keeps the span alive. mcaches are never freed,
		 * so bumping one that has since given the span up costs it one extra look. */
		mcache_t *o = owner_untag(load_relaxed(&s->owner));
		obj_set_next(tail, (void *)old);
		if (cas_weak_release(&s->thread_free, &old, (uintptr_t)p)) {
			if (old == 0 && o)
				fetch_add_relaxed(&o->remote_pending[spc], 1);
			break;
		}
	}
}

void mcache_destroy(mcache_t *c)
{
	for (unsigned spc = 0; spc < NUM_SPAN_CLASSES; spc++) {
		span_t *s = c->cur[spc];
		if (s != &empty_span) {
			s->where = WHERE_NONE;
			mcentral_adopt(s);
		}
		c->cur[spc] = c->alloc[spc] = &empty_span;
		while ((s = span_list_pop(&c->partial[spc])) != NULL) {
			s->where = WHERE_NONE;
			mcentral_adopt(s);
		}
		while ((s = span_list_pop(&c->full[spc])) != NULL) {
			s->where = WHERE_NONE;
			mcentral_adopt(s);
		}
	}
	c->tiny = 0;
	c->tiny_off = 0;
	c->tiny_state = NULL;
	pacer_account(-mcache_take_freed(c));
	lock_acquire(&mheap.lock);
	stats_fold_mcache(c);
	c->live = 0;
	pthread_mutex_unlock(&mheap.lock);
}

void *mcache_tiny_alloc_slow(mcache_t *c, size_t size)
{
	if (c == &empty_mcache && (c = mcache_create()) == NULL)
		return NULL;
	void *blk = mcache_refill(c, TINY_SPC);
	if (blk == NULL)
		return NULL;
	span_t *s = spanmap_lookup((uintptr_t)blk);
	uint8_t *st = &s->state[span_objindex(s, (uintptr_t)blk)];
	store_relaxed(st, tiny_mask(0, (unsigned)(size / TINY_GRANULE)));
	/* Keep the block with more room left: a 12-byte object must not strand a half-used block. */
	if (c->tiny == 0 || TINY_SIZE - size > TINY_SIZE - c->tiny_off) {
		c->tiny = (uintptr_t)blk;
		c->tiny_off = size;
		c->tiny_state = st;
	}
	counter_add_owner(&c->tiny_allocs, 1);
	vg_malloclike(blk, size, 0);
	return blk;
}
