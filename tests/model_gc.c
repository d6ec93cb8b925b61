/* tests/model_gc.c - threads copy, move and drop pointers between heap nodes, globals and their
 * stacks while the collector cycles, with and without the write barrier, under checkmark; seeded. */

/* The model. Pointers live in slots of four kinds:
 *
 *  - stack: an array of STACK_SLOTS in each mutator thread's outermost frame (plain stores);
 *  - global: each thread's own row of g_slots[] in bss, and the shared mailboxes g_mail[];
 *  - heap: the NKIDS pointer fields of every node, and of the hub nodes g_hub[] holds (shared
 *    heap mailboxes);
 *  - in flight: a pointer just taken out of one slot, held in a local across allocations (and so
 *    across collections) before it is stored into another.
 *
 * A slot holds a struct ref: the node's address and the id the node must carry (in a heap field:
 * kid[i] and kid_id[i]). The id is a number with its top bits set, never a heap address, so it
 * keeps nothing alive: what is reachable is decided by the real pointers alone, and the checks
 * find the nodes by walking from the slots, as the collector does. A node that was reclaimed too
 * early shows as cgc_base() no longer naming it, or, once its memory is handed out again, as a
 * seal (a hash of address and id), an id or a payload checksum that do not match.
 *
 * Every thread repeats random operations: allocate a node or a short chain into a slot (the
 * chain's tail may point at something already in the graph: a new, black object pointing at an
 * old one), copy a pointer from one slot to another, move one (take it out, sometimes allocate
 * garbage while holding it, store it elsewhere), swap two slots, drop one, hand a pointer to
 * another thread through a mailbox (after which it may be reachable only from that thread's
 * stack, or only through a chain from a global), and check a part of what it can reach. A heap
 * slot is a field of a node found by a short random walk from the thread's roots. Now and then a
 * thread checks everything it reaches, and drops part of its roots when that is more than
 * LIVE_CAP nodes, which bounds the live heap. At the end the main thread checks what the globals
 * hold, drops it all, collects, and requires the heap to shrink back.
 *
 * Sharing without data races: a node's pointer fields are read and written under one of STRIPES
 * locks chosen by its address, the mailboxes under mail_lock; a thread's global row and its stack
 * slots are its own. A node's other fields never change once it is published.
 *
 * Modes. In barrier mode the test calls cgc_set_barrier(1) and every pointer store into a node or
 * a global goes through CGC_WRITE (stack stores stay plain); in plain mode there is no barrier at
 * all, and the collector must find the changes itself. The constructor below sets
 * CGC_DEBUG=checkmark=1 and CGC_PERCENT=10 before cgc reads its environment, so every concurrent
 * mark is checked against a stop-the-world one, and cycles come often.
 *
 * Knobs: MODEL_SEED (or CGC_SEED) replays a run's choices (not the threads' interleaving);
 * MODEL_THREADS (default 4); STRESS_SCALE multiplies the operations (run-all.sh and check-valgrind
 * set it); MODEL_MODE=barrier or plain runs one mode only. */

#include <check.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gc/gc.h"
#include "include/cgc.h"
#include "include/cgc_barrier.h"
#include "tests/testutil.h"

/* ---- parameters -------------------------------------------------------------------------- */

#define MAX_THREADS 16
#define NKIDS 4               /* pointer fields of a node */
#define STACK_SLOTS 24        /* per thread, in its outermost frame */
#define GLOBAL_SLOTS 24       /* per thread, its row of g_slots */
#define MAIL_SLOTS 16         /* global mailboxes, shared */
#define HUBS 4                /* hub nodes: NKIDS heap mailboxes each, shared */
#define STRIPES 64            /* locks over the nodes' pointer fields */
#define TODO_MAX 256          /* a walk's nodes still to visit (on the stack: they stay alive) */
#define SEEN_BITS 14          /* a walk's visited set: 16384 addresses */
#define LIVE_CAP 4000         /* nodes a thread's roots may reach before it drops some */
#define WALK_CAP 6000         /* nodes a thread's full check checks at most */
#define FINAL_CAP 12000       /* nodes the final check checks at most (the set's load < 3/4) */
#define FULL_CHECK_EVERY 400  /* ops between a thread's checks of everything it reaches */
#define STATS_EVERY 256       /* ops between samples of heap_inuse */
#define COLLECT_EVERY 25000   /* ops between a thread's explicit collections, on average */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#else
#define UNDER_SANITIZER 0
#endif
#define BASE_OPS 8000         /* operations per thread at STRESS_SCALE=1 (every cycle checkmarked) */
#define MODEL_PERCENT "10"    /* CGC_PERCENT unless the environment has one */
#define ID_TAG (0xb7ull << 56) /* ids are non-canonical addresses: never taken for a pointer */

/* ---- nodes ------------------------------------------------------------------------------- */

/* A node: a header that never changes once the node is published, NKIDS pointer fields with the
 * ids of their targets (under the node's stripe lock), then nwords words of payload. */
struct node {
	uint64_t seal;              /* node_seal(address, id) */
	uint64_t id;
	uint64_t nwords;            /* payload words */
	uint64_t sum;               /* node_sum: over id, nwords and the payload */
	struct node *kid[NKIDS];    /* pointer fields: heap slots */
	uint64_t kid_id[NKIDS];     /* the id kid[i] must carry */
	uint64_t payload[];
};

/* What a slot holds: a node's address and its id; {NULL, 0} when empty. */
struct ref {
	struct node *p;
	uint64_t id;
};

static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

static inline uint64_t node_seal(const struct node *n, uint64_t id)
{
	return mix64((uint64_t)(uintptr_t)n ^ mix64(id));
}

static inline uint64_t payload_word(uint64_t id, uint64_t j)
{
	return mix64(id * 0x9e3779b97f4a7c15ull + j + 1) | 1ull << 63; /* never a user address */
}

static uint64_t node_sum(const struct node *n)
{
	uint64_t h = mix64(n->id ^ n->nwords << 1);
	for (uint64_t j = 0; j < n->nwords; j++)
		h = mix64(h ^ n->payload[j]);
	return h;
}

/* ---- the model's state ------------------------------------------------------------------- */

/* A mutator thread. The record is in bss and holds no heap pointer; its stack slots are in
 * mut_main's frame. */
struct mut {
	unsigned idx;
	pthread_t tid;
	uint64_t rng;
	uint64_t next_id;
	unsigned long op, nops;
	const char *doing;          /* the operation under way, for reports */
	struct ref *stk;            /* its stack slots */
	struct ref *glob;           /* its row of g_slots */
	uintptr_t *seen;            /* the visited set (malloc'd: cgc does not scan it) */
	uint32_t *seen_epoch;
	uint32_t epoch;
	/* counts */
	uint64_t allocs, alloc_bytes, copies, moves, swaps, drops, handoffs, checked, collects, trims;
	size_t reach_max;           /* the most nodes a full check found */
};

static struct ref g_slots[MAX_THREADS][GLOBAL_SLOTS];
static struct ref g_mail[MAIL_SLOTS];
static struct ref g_hub[HUBS];
static pthread_mutex_t mail_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t stripe[STRIPES] = {[0 ... STRIPES - 1] = PTHREAD_MUTEX_INITIALIZER};

static struct mut muts[MAX_THREADS + 1]; /* [nthreads]: the main thread's, for setup and the end */
static unsigned nthreads;
static unsigned long ops_per_thread;
static uint64_t seed;
static bool use_barrier;
static const char *mode_name = "-";
static size_t peak_inuse;   /* atomic */
static __thread struct mut *cur;

/* Every pointer store into a node or a global. */
#define STORE_PTR(lvalue, value)                                                                   \
	do {                                                                                       \
		if (use_barrier)                                                                   \
			CGC_WRITE(lvalue, value);                                                  \
		else                                                                               \
			(lvalue) = (value);                                                        \
	} while (0)

static pthread_mutex_t *stripe_of(const struct node *n)
{
	return &stripe[mix64((uintptr_t)n) % STRIPES];
}

/* ---- failures ---------------------------------------------------------------------------- */

static void model_fail(const void *p, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* Says what is wrong, with the seed and where, and aborts: after a premature free the heap is not
 * to be trusted, and a message relayed through Check could be lost to a crash in another thread. */
static void model_fail(const void *p, const char *fmt, ...)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	lock_acquire(&lock);
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	struct mut *m = cur;
	void *base = p ? cgc_base(p) : NULL;
	fprintf(stderr, "model_gc: FAILED: seed %llu, %s mode, thread %u, op %lu (%s): node %p (cgc_base"
		" %p, usable %zu): %s\nmodel_gc: replay with MODEL_SEED=%llu MODEL_THREADS=%u"
		" STRESS_SCALE=%g MODEL_MODE=%s\n",
		(unsigned long long)seed, mode_name, m ? m->idx : 0u, m ? m->op : 0ul,
		m && m->doing ? m->doing : "-", p, base, base ? cgc_usable_size(base) : 0, msg,
		(unsigned long long)seed, nthreads, test_scale(), mode_name);
	fflush(stderr);
	abort();
}

/* Checks the node r names: still an object of cgc's, at its start, sealed with r's id, its
 * payload intact. */
static void check_node(struct mut *m, struct ref r, const char *when)
{
	struct node *n = r.p;
	void *base = cgc_base(n);
	if (base != n)
		model_fail(n, "%s: cgc_base says %p: node id %#llx was reclaimed", when, base,
		     (unsigned long long)r.id);
	size_t usable = cgc_usable_size(n);
	if (n->seal != node_seal(n, r.id) || n->id != r.id)
		model_fail(n, "%s: seal %#llx, id %#llx: not node id %#llx any more (reclaimed and reused?)",
		     when, (unsigned long long)n->seal, (unsigned long long)n->id,
		     (unsigned long long)r.id);
	if (sizeof *n + n->nwords * 8 > usable)
		model_fail(n, "%s: %llu payload words do not fit in %zu bytes", when,
		     (unsigned long long)n->nwords, usable);
	if (n->sum != node_sum(n)) {
		uint64_t j = 0;
		while (j < n->nwords && n->payload[j] == payload_word(n->id, j))
			j++;
		model_fail(n, "%s: payload checksum of node id %#llx is wrong (first bad word %llu of %llu)",
		     when, (unsigned long long)r.id, (unsigned long long)j,
		     (unsigned long long)n->nwords);
	}
	m->checked++;
}

/* ---- slots ------------------------------------------------------------------------------- */

enum place { AT_STACK, AT_GLOBAL, AT_MAIL, AT_HUB, AT_HEAP };

/* A slot: r for the stack, globals and mailboxes; field i of node n for the heap and hubs (n is a
 * local, so the node stays alive while the slot is in use). */
struct loc {
	enum place at;
	struct ref *r;
	struct node *n;
	unsigned i;
};

/* Stores v into l and returns what l held. */
static struct ref loc_exchange(const struct loc *l, struct ref v)
{
	struct ref old;
	switch (l->at) {
	case AT_STACK:
		old = *l->r;
		*l->r = v;
		return old;
	case AT_GLOBAL:
		old = *l->r;
		STORE_PTR(l->r->p, v.p);
		l->r->id = v.id;
		return old;
	case AT_MAIL:
		lock_acquire(&mail_lock);
		old = *l->r;
		STORE_PTR(l->r->p, v.p);
		l->r->id = v.id;
		pthread_mutex_unlock(&mail_lock);
		return old;
	case AT_HUB:
	case AT_HEAP:
		break;
	}
	pthread_mutex_t *lk = stripe_of(l->n);
	lock_acquire(lk);
	old = (struct ref){l->n->kid[l->i], l->n->kid_id[l->i]};
	STORE_PTR(l->n->kid[l->i], v.p);
	l->n->kid_id[l->i] = v.id;
	pthread_mutex_unlock(lk);
	return old;
}

static struct ref loc_get(const struct loc *l)
{
	struct ref v;
	switch (l->at) {
	case AT_STACK:
	case AT_GLOBAL:
		return *l->r;
	case AT_MAIL:
		lock_acquire(&mail_lock);
		v = *l->r;
		pthread_mutex_unlock(&mail_lock);
		return v;
	case AT_HUB:
	case AT_HEAP:
		break;
	}
	pthread_mutex_t *lk = stripe_of(l->n);
	lock_acquire(lk);
	v = (struct ref){l->n->kid[l->i], l->n->kid_id[l->i]};
	pthread_mutex_unlock(lk);
	return v;
}

static void loc_set(const struct loc *l, struct ref v)
{
	(void)loc_exchange(l, v);
}

/* Node n's fields, read at once under its lock. */
static void kids_get(struct node *n, struct ref out[NKIDS])
{
	pthread_mutex_t *lk = stripe_of(n);
	lock_acquire(lk);
	for (unsigned i = 0; i < NKIDS; i++)
		out[i] = (struct ref){n->kid[i], n->kid_id[i]};
	pthread_mutex_unlock(lk);
}

/* A random non-empty ref among the thread's roots (sometimes a mailbox or a hub's field), or an
 * empty one after a few misses. */
static struct ref some_root(struct mut *m)
{
	for (int tries = 0; tries < 6; tries++) {
		uint64_t r = rng_below(&m->rng, 10);
		struct loc l;
		if (r < 5)
			l = (struct loc){AT_STACK, &m->stk[rng_below(&m->rng, STACK_SLOTS)], NULL, 0};
		else if (r < 8)
			l = (struct loc){AT_GLOBAL, &m->glob[rng_below(&m->rng, GLOBAL_SLOTS)], NULL, 0};
		else if (r < 9)
			l = (struct loc){AT_MAIL, &g_mail[rng_below(&m->rng, MAIL_SLOTS)], NULL, 0};
		else
			l = (struct loc){AT_HUB, NULL, g_hub[rng_below(&m->rng, HUBS)].p,
					 (unsigned)rng_below(&m->rng, NKIDS)};
		struct ref v = loc_get(&l);
		if (v.p)
			return v;
	}
	return (struct ref){NULL, 0};
}

/* A random slot: a stack or global slot of the thread's, a mailbox, a hub's field, or a field of
 * a node a few steps from the thread's roots (each node on the way is checked). */
static struct loc pick_loc(struct mut *m)
{
	uint64_t r = rng_below(&m->rng, 100);
	if (r < 30)
		return (struct loc){AT_STACK, &m->stk[rng_below(&m->rng, STACK_SLOTS)], NULL, 0};
	if (r < 50)
		return (struct loc){AT_GLOBAL, &m->glob[rng_below(&m->rng, GLOBAL_SLOTS)], NULL, 0};
	if (r < 56)
		return (struct loc){AT_MAIL, &g_mail[rng_below(&m->rng, MAIL_SLOTS)], NULL, 0};
	if (r < 62)
		return (struct loc){AT_HUB, NULL, g_hub[rng_below(&m->rng, HUBS)].p,
				    (unsigned)rng_below(&m->rng, NKIDS)};
	struct ref at = some_root(m);
	if (at.p == NULL)
		return (struct loc){AT_STACK, &m->stk[rng_below(&m->rng, STACK_SLOTS)], NULL, 0};
	check_node(m, at, "on the way to a heap slot");
	for (uint64_t steps = rng_below(&m->rng, 4); steps > 0; steps--) {
		struct ref kids[NKIDS];
		kids_get(at.p, kids);
		struct ref next = kids[rng_below(&m->rng, NKIDS)];
		if (next.p == NULL)
			break;
		check_node(m, next, "on the way to a heap slot");
		at = next;
	}
	return (struct loc){AT_HEAP, NULL, at.p, (unsigned)rng_below(&m->rng, NKIDS)};
}

/* ---- checking what is reachable ---------------------------------------------------------- */

static void walk_begin(struct mut *m)
{
	if (++m->epoch == 0) {
		memset(m->seen_epoch, 0, sizeof(uint32_t) << SEEN_BITS);
		m->epoch = 1;
	}
}

/* Records n as visited in this walk; false if it already was. */
static bool seen_add(struct mut *m, const struct node *n)
{
	uintptr_t a = (uintptr_t)n;
	size_t mask = ((size_t)1 << SEEN_BITS) - 1;
	for (size_t h = mix64(a) & mask;; h = (h + 1) & mask) {
		if (m->seen_epoch[h] != m->epoch) {
			m->seen_epoch[h] = m->epoch;
			m->seen[h] = a;
			return true;
		}
		if (m->seen[h] == a)
			return false;
	}
}

/* Checks the nodes reachable from r not yet seen in this walk, until *count reaches cap. The nodes
 * still to visit are kept on this frame's stack, where the collector sees them: a node whose last
 * link another thread cuts meanwhile must stay alive until it is checked. */
static void walk_from(struct mut *m, struct ref r, size_t *count, size_t cap, const char *when)
{
	struct ref todo[TODO_MAX];
	size_t n = 0;
	if (r.p)
		todo[n++] = r;
	while (n > 0 && *count < cap) {
		struct ref v = todo[--n];
		if (!seen_add(m, v.p))
			continue;
		check_node(m, v, when);
		++*count;
		struct ref kids[NKIDS];
		kids_get(v.p, kids);
		for (unsigned i = 0; i < NKIDS; i++)
			if (kids[i].p && n < TODO_MAX)
				todo[n++] = kids[i];
	}
	memset(todo, 0, sizeof todo);
}

/* Checks everything the thread's stack and global slots reach; returns how many nodes. */
static size_t check_all_roots(struct mut *m, const char *when)
{
	size_t count = 0;
	walk_begin(m);
	for (unsigned i = 0; i < STACK_SLOTS; i++)
		walk_from(m, m->stk[i], &count, WALK_CAP, when);
	for (unsigned i = 0; i < GLOBAL_SLOTS; i++)
		walk_from(m, m->glob[i], &count, WALK_CAP, when);
	if (count > m->reach_max)
		m->reach_max = count;
	return count;
}

/* ---- operations -------------------------------------------------------------------------- */

/* Payload words: mostly small nodes, some up to a few KiB, a few past 32 KiB (large objects). */
static uint64_t pick_words(uint64_t *rng)
{
	uint64_t r = rng_below(rng, 1000);
	if (r < 600)
		return rng_below(rng, 7);
	if (r < 900)
		return 7 + rng_below(rng, 114);
	if (r < 990)
		return 121 + rng_below(rng, 880);
	return 4100 + rng_below(rng, 2000);
}

/* A new node, checksummed and sealed, its fields empty. */
static struct ref node_new(struct mut *m)
{
	uint64_t nwords = pick_words(&m->rng);
	size_t size = sizeof(struct node) + nwords * 8;
	struct node *n = cgc_malloc(size);
	if (n == NULL)
		model_fail(NULL, "cgc_malloc(%zu) returned NULL", size);
	for (unsigned i = 0; i < NKIDS; i++)
		if (n->kid[i] != NULL || n->kid_id[i] != 0)
			model_fail(n, "a new node's field %u is not zero", i);
	uint64_t id = ID_TAG | (uint64_t)m->idx << 40 | ++m->next_id;
	n->id = id;
	n->nwords = nwords;
	for (uint64_t j = 0; j < nwords; j++)
		n->payload[j] = payload_word(id, j);
	n->sum = node_sum(n);
	n->seal = node_seal(n, id);
	m->allocs++;
	m->alloc_bytes += size;
	return (struct ref){n, id};
}

/* Field i of a node no other thread can see yet. */
static void init_kid(struct node *n, unsigned i, struct ref v)
{
	STORE_PTR(n->kid[i], v.p);
	n->kid_id[i] = v.id;
}

/* Garbage: a few nodes nobody keeps, so that a collection may start while a pointer is in flight. */
static void make_garbage(struct mut *m)
{
	for (uint64_t k = 1 + rng_below(&m->rng, 4); k > 0; k--)
		(void)node_new(m);
}

/* A node or a chain of up to 64 into a random slot; the tail may point into the existing graph. */
static void op_alloc(struct mut *m)
{
	m->doing = "alloc";
	struct ref old = {NULL, 0};
	if (rng_below(&m->rng, 3) == 0) {
		old = some_root(m);
		if (old.p)
			check_node(m, old, "before a new node points to it");
	}
	uint64_t r = rng_below(&m->rng, 16);
	unsigned len = r < 10 ? 1 : r < 15 ? 2 + (unsigned)rng_below(&m->rng, 7) : 9 + (unsigned)rng_below(&m->rng, 56);
	struct ref head = old;
	for (unsigned k = 0; k < len; k++) {
		struct ref n = node_new(m);
		if (head.p)
			init_kid(n.p, k == 0 ? (unsigned)rng_below(&m->rng, NKIDS) : 0, head);
		head = n;
	}
	struct loc dst = pick_loc(m);
	loc_set(&dst, head);
}

/* A small random tree (up to 1 + 4 + 16 + 64 nodes, sparse) into a random slot: its leaves may
 * point into the existing graph, which makes it a DAG with cycles back into older nodes. */
static struct ref tree_new(struct mut *m, unsigned depth)
{
	struct ref n = node_new(m);
	for (unsigned i = 0; i < NKIDS; i++) {
		uint64_t r = rng_below(&m->rng, 8);
		if (depth > 0 && r < 4)
			init_kid(n.p, i, tree_new(m, depth - 1));
		else if (r == 4) {
			struct ref old = some_root(m);
			if (old.p) {
				check_node(m, old, "before a new tree points to it");
				init_kid(n.p, i, old);
			}
		}
	}
	return n;
}

static void op_tree(struct mut *m)
{
	m->doing = "tree";
	struct ref t = tree_new(m, 1 + (unsigned)rng_below(&m->rng, 3));
	struct loc dst = pick_loc(m);
	loc_set(&dst, t);
}

static void op_copy(struct mut *m)
{
	m->doing = "copy";
	struct loc src = pick_loc(m);
	struct ref v = loc_get(&src);
	if (v.p)
		check_node(m, v, "copied");
	struct loc dst = pick_loc(m);
	loc_set(&dst, v);
	m->copies++;
}

/* Takes a pointer out of its slot, sometimes allocates while it is held only here, stores it. */
static void op_move(struct mut *m)
{
	m->doing = "move";
	struct loc src = pick_loc(m);
	struct ref v = loc_exchange(&src, (struct ref){NULL, 0});
	if (rng_below(&m->rng, 4) == 0)
		make_garbage(m);
	if (v.p)
		check_node(m, v, "in flight");
	struct loc dst = pick_loc(m);
	loc_set(&dst, v);
	m->moves++;
}

static void op_swap(struct mut *m)
{
	m->doing = "swap";
	struct loc a = pick_loc(m), b = pick_loc(m);
	struct ref va = loc_get(&a);
	struct ref vb = loc_exchange(&b, va);
	loc_set(&a, vb);
	m->swaps++;
}

static void op_drop(struct mut *m)
{
	m->doing = "drop";
	struct loc l = pick_loc(m);
	loc_set(&l, (struct ref){NULL, 0});
	m->drops++;
}

/* Trades a stack slot's pointer for a mailbox's: what arrives may have been left by another
 * thread, and is now reachable from this thread's stack alone (unless a copy remains elsewhere). */
static void op_handoff(struct mut *m)
{
	m->doing = "handoff";
	struct ref *s = &m->stk[rng_below(&m->rng, STACK_SLOTS)];
	struct loc box;
	if (rng_below(&m->rng, 2) == 0)
		box = (struct loc){AT_MAIL, &g_mail[rng_below(&m->rng, MAIL_SLOTS)], NULL, 0};
	else
		box = (struct loc){AT_HUB, NULL, g_hub[rng_below(&m->rng, HUBS)].p,
				   (unsigned)rng_below(&m->rng, NKIDS)};
	struct ref got = loc_exchange(&box, *s);
	*s = (struct ref){NULL, 0};
	if (rng_below(&m->rng, 4) == 0)
		make_garbage(m);
	if (got.p)
		check_node(m, got, "received through a mailbox");
	*s = got;
	m->handoffs++;
}

/* Checks part of what one root reaches. */
static void op_check(struct mut *m)
{
	m->doing = "check";
	struct ref r = some_root(m);
	size_t count = 0;
	walk_begin(m);
	walk_from(m, r, &count, 200, "a periodic check");
}

/* Drops half of the thread's roots at random, and a mailbox or two. */
static void trim(struct mut *m)
{
	m->doing = "trim";
	for (unsigned i = 0; i < STACK_SLOTS; i++)
		if (rng_below(&m->rng, 2) == 0)
			m->stk[i] = (struct ref){NULL, 0};
	for (unsigned i = 0; i < GLOBAL_SLOTS; i++)
		if (rng_below(&m->rng, 2) == 0)
			loc_set(&(struct loc){AT_GLOBAL, &m->glob[i], NULL, 0}, (struct ref){NULL, 0});
	loc_set(&(struct loc){AT_MAIL, &g_mail[rng_below(&m->rng, MAIL_SLOTS)], NULL, 0},
		(struct ref){NULL, 0});
	loc_set(&(struct loc){AT_HUB, NULL, g_hub[rng_below(&m->rng, HUBS)].p,
			      (unsigned)rng_below(&m->rng, NKIDS)},
		(struct ref){NULL, 0});
	m->trims++;
}

static void peak_sample(void)
{
	struct cgc_stats st;
	cgc_get_stats(&st);
	size_t old = __atomic_load_n(&peak_inuse, __ATOMIC_RELAXED);
	while (st.heap_inuse > old &&
	       !__atomic_compare_exchange_n(&peak_inuse, &old, st.heap_inuse, false, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED))
		;
}

static void step(struct mut *m)
{
	uint64_t r = rng_below(&m->rng, 100);
	if (r < 22)
		op_alloc(m);
	else if (r < 26)
		op_tree(m);
	else if (r < 50)
		op_copy(m);
	else if (r < 66)
		op_move(m);
	else if (r < 72)
		op_swap(m);
	else if (r < 82)
		op_drop(m);
	else if (r < 92)
		op_handoff(m);
	else
		op_check(m);
	if (++m->op % FULL_CHECK_EVERY == 0) {
		m->doing = "full check";
		if (check_all_roots(m, "a full check") >= LIVE_CAP)
			trim(m);
	}
	if (m->op % STATS_EVERY == 0)
		peak_sample();
	if (rng_below(&m->rng, COLLECT_EVERY) == 0) {
		m->doing = "cgc_collect";
		cgc_collect();
		m->collects++;
	}
}

/* ---- threads ----------------------------------------------------------------------------- */

static uint64_t thread_rng(unsigned idx)
{
	uint64_t x = mix64(seed ^ (use_barrier ? 0x5bd1e995ull : 0) ^
			   ((uint64_t)idx + 1) * 0x9e3779b97f4a7c15ull);
	return x ? x : 1;
}

static void mut_setup(struct mut *m, unsigned idx)
{
	*m = (struct mut){.idx = idx, .rng = thread_rng(idx), .nops = ops_per_thread,
			  .glob = g_slots[idx < MAX_THREADS ? idx : 0]};
	m->seen = malloc(sizeof(uintptr_t) << SEEN_BITS);
	m->seen_epoch = calloc((size_t)1 << SEEN_BITS, sizeof(uint32_t));
	if (m->seen == NULL || m->seen_epoch == NULL)
		model_fail(NULL, "out of memory for a visited set");
}

static void mut_teardown(struct mut *m)
{
	free(m->seen);
	free(m->seen_epoch);
	m->seen = NULL;
	m->seen_epoch = NULL;
}

static void *mut_main(void *arg)
{
	struct mut *m = arg;
	struct ref stk[STACK_SLOTS];
	memset(stk, 0, sizeof stk);
	m->stk = stk;
	cur = m;
	while (m->op < m->nops)
		step(m);
	m->doing = "the thread's last check";
	check_all_roots(m, "at the thread's end");
	m->stk = NULL;
	cur = NULL;
	return NULL;
}

/* ---- the test ---------------------------------------------------------------------------- */

/* Zeroes the stack below the caller: stale copies of dropped pointers in dead frames would keep
 * them alive through the final collections. */
static __attribute__((noinline)) void scrub_stack(void)
{
	volatile char pad[64 << 10];
	memset((char *)pad, 0, sizeof pad);
	__asm__ volatile("" ::"r"(pad) : "memory");
}

/* The hub nodes, before the threads start. */
static __attribute__((noinline)) void make_hubs(struct mut *m)
{
	for (unsigned h = 0; h < HUBS; h++) {
		struct ref n = node_new(m);
		STORE_PTR(g_hub[h].p, n.p);
		g_hub[h].id = n.id;
	}
}

/* Checks what the globals reach after the threads are gone, then empties them; noinline, so its
 * frame is dead (and scrubbed) by the final collections. Returns the nodes checked. */
static __attribute__((noinline)) size_t final_check_and_drop(struct mut *m)
{
	size_t count = 0;
	walk_begin(m);
	m->doing = "the final check";
	for (unsigned t = 0; t < nthreads; t++)
		for (unsigned i = 0; i < GLOBAL_SLOTS; i++)
			walk_from(m, g_slots[t][i], &count, FINAL_CAP, "at the end");
	for (unsigned i = 0; i < MAIL_SLOTS; i++)
		walk_from(m, g_mail[i], &count, FINAL_CAP, "at the end (a mailbox)");
	for (unsigned h = 0; h < HUBS; h++)
		walk_from(m, g_hub[h], &count, FINAL_CAP, "at the end (a hub)");
	for (unsigned t = 0; t < MAX_THREADS; t++)
		for (unsigned i = 0; i < GLOBAL_SLOTS; i++) {
			STORE_PTR(g_slots[t][i].p, NULL);
			g_slots[t][i].id = 0;
		}
	for (unsigned i = 0; i < MAIL_SLOTS; i++) {
		STORE_PTR(g_mail[i].p, NULL);
		g_mail[i].id = 0;
	}
	for (unsigned h = 0; h < HUBS; h++) {
		STORE_PTR(g_hub[h].p, NULL);
		g_hub[h].id = 0;
	}
	return count;
}

struct final_args {
	struct mut *m;
	size_t left;
};

static void *final_main(void *arg)
{
	struct final_args *fa = arg;
	cur = fa->m;
	fa->left = final_check_and_drop(fa->m);
	cur = NULL;
	return NULL;
}

static void run_model(bool barrier)
{
	use_barrier = barrier;
	mode_name = barrier ? "barrier" : "plain";
	if (barrier)
		cgc_set_barrier(1);
	struct mut *main_m = &muts[nthreads];
	mut_setup(main_m, nthreads);
	cur = main_m;
	struct cgc_stats st0, st;
	cgc_collect();
	cgc_get_stats(&st0);
	uint64_t conc0 = gc.cycles_concurrent;
	peak_inuse = st0.heap_inuse;
	make_hubs(main_m);
	printf("model_gc: %s mode: %u threads x %lu ops, seed %llu, CGC_PERCENT %d, CGC_DEBUG=%s\n",
	       mode_name, nthreads, ops_per_thread, (unsigned long long)seed, gc_opt.percent,
	       getenv("CGC_DEBUG") ? getenv("CGC_DEBUG") : "");
	fflush(stdout);

	for (unsigned t = 0; t < nthreads; t++) {
		mut_setup(&muts[t], t);
		if (pthread_create(&muts[t].tid, NULL, mut_main, &muts[t]) != 0)
			model_fail(NULL, "cannot start thread %u", t);
	}
	uint64_t ops = 0, allocs = 0, bytes = 0, copies = 0, moves = 0, swaps = 0, drops = 0,
		 handoffs = 0, checked = 0, collects = 0, trims = 0;
	size_t reach_max = 0;
	for (unsigned t = 0; t < nthreads; t++) {
		struct mut *m = &muts[t];
		pthread_join(m->tid, NULL);
		ops += m->op;
		allocs += m->allocs;
		bytes += m->alloc_bytes;
		copies += m->copies;
		moves += m->moves;
		swaps += m->swaps;
		drops += m->drops;
		handoffs += m->handoffs;
		checked += m->checked;
		collects += m->collects;
		trims += m->trims;
		if (m->reach_max > reach_max)
			reach_max = m->reach_max;
		mut_teardown(m);
	}
	cgc_get_stats(&st);
	uint64_t cycles = st.collections - st0.collections;
	uint64_t paced = cycles - (st.forced_collections - st0.forced_collections);
	uint64_t concurrent = gc.cycles_concurrent - conc0;
	size_t peak = peak_inuse > st.heap_inuse ? peak_inuse : st.heap_inuse;
	/* On a thread of its own, which then exits: the walk leaves node addresses in registers and
	 * frames, and a stale copy of one on the main thread would keep a whole subgraph alive
	 * through the final collections (a CI run kept 1 MiB of a 3.5 MiB peak that way once). */
	struct final_args fa = {.m = main_m};
	pthread_t ft;
	if (pthread_create(&ft, NULL, final_main, &fa) != 0)
		model_fail(NULL, "cannot start the final check's thread");
	pthread_join(ft, NULL);
	size_t left = fa.left;
	checked += main_m->checked;
	scrub_stack();
	cgc_collect();
	cgc_collect();
	cgc_get_stats(&st);
	mut_teardown(main_m);
	cur = NULL;
	printf("model_gc: %s mode: %llu ops, %llu nodes (%llu MiB), %llu copies, %llu moves, %llu swaps,"
	       " %llu drops, %llu handoffs, %llu trims, %llu node checks, at most %zu nodes reached by a"
	       " thread, %zu left in globals; %llu collections (%llu explicit), pause max %.1f ms;"
	       " heap_inuse %zu KiB at the start, peak %zu KiB, %zu KiB at the end\n",
	       mode_name, (unsigned long long)ops, (unsigned long long)allocs,
	       (unsigned long long)(bytes >> 20), (unsigned long long)copies,
	       (unsigned long long)moves, (unsigned long long)swaps, (unsigned long long)drops,
	       (unsigned long long)handoffs, (unsigned long long)trims, (unsigned long long)checked,
	       reach_max, left, (unsigned long long)cycles, (unsigned long long)collects,
	       (double)st.pause_max_ns / 1e6, st0.heap_inuse >> 10, peak >> 10,
	       st.heap_inuse >> 10);
	fflush(stdout);

	/* The collector cycled by itself: a cycle starts before the heap passes its goal, which is
	 * below the peak, so at least once per (peak) bytes allocated; twice that, to be safe. */
	uint64_t want = bytes / (2 * (uint64_t)peak + ((uint64_t)8 << 20));
	if (bytes > ((uint64_t)8 << 20) && want < 2)
		want = 2; /* (a short run, as under valgrind, may stay below the 4 MiB smallest goal) */
	ck_assert_msg(paced >= want,
		      "seed %llu, %s mode: %llu collections (%llu explicit) for %llu MiB allocated;"
		      " want %llu by the pacer", (unsigned long long)seed, mode_name,
		      (unsigned long long)cycles, (unsigned long long)collects,
		      (unsigned long long)(bytes >> 20), (unsigned long long)want);
	/* Concurrent, so that checkmark had something to check (unless CGC_DEBUG chose stw=1, or
	 * the kernel cannot track writes and the program made no promise). */
	if (gc_opt.stw != 1 && (barrier || dirty_why == NULL))
		ck_assert_msg(concurrent > 0, "seed %llu, %s mode: no cycle marked concurrently",
			      (unsigned long long)seed, mode_name);
	/* The heap stayed bounded: dropped nodes were reclaimed and their memory reused. */
	ck_assert_msg(peak <= st0.heap_inuse + bytes / 3 + ((size_t)8 << 20),
		      "seed %llu, %s mode: heap_inuse peaked at %zu KiB, %llu MiB allocated",
		      (unsigned long long)seed, mode_name, peak >> 10,
		      (unsigned long long)(bytes >> 20));
	/* And once everything is dropped the bulk of it goes (not all: the scan is conservative).
	 * Not checked under the sanitizers, whose runtimes keep copies of pointers (an ASan run kept
	 * three quarters of the peak once, in barrier mode: the issue 4 note). */
	ck_assert_msg(UNDER_SANITIZER || st.heap_inuse <= st0.heap_inuse + peak / 4,
		      "seed %llu, %s mode: heap_inuse is %zu KiB after everything was dropped: %zu KiB"
		      " at the start, peak %zu KiB", (unsigned long long)seed, mode_name,
		      st.heap_inuse >> 10, st0.heap_inuse >> 10, peak >> 10);
}

START_TEST(test_plain)
{
	run_model(false);
}
END_TEST

START_TEST(test_barrier)
{
	run_model(true);
}
END_TEST

/* Before cgc's own constructor (which reads the environment): checkmark on, and a small percent
 * unless the caller chose one. */
__attribute__((constructor(101))) static void model_env(void)
{
	const char *d = getenv("CGC_DEBUG");
	if (d == NULL || strstr(d, "checkmark") == NULL) {
		char buf[256];
		/* stw=0: every cycle concurrent, whatever the heap's size (else a small heap's
		 * cycles stop the world and checkmark has nothing to check). */
		snprintf(buf, sizeof buf, "%s%scheckmark=1%s", d ? d : "", d && *d ? "," : "",
			 d && strstr(d, "stw") ? "" : ",stw=0");
		setenv("CGC_DEBUG", buf, 1);
	}
	if (getenv("CGC_PERCENT") == NULL)
		setenv("CGC_PERCENT", MODEL_PERCENT, 1);
}

static uint64_t model_seed(void)
{
	const char *e = getenv("MODEL_SEED");
	if (e == NULL || *e == 0)
		e = getenv("CGC_SEED");
	uint64_t s = e && *e ? strtoull(e, NULL, 0)
			     : mix64((uint64_t)time(NULL) << 20 ^ (uint64_t)getpid() ^ (uint64_t)clock());
	return s ? s : 1;
}

int main(void)
{
	seed = model_seed();
	printf("model_gc: seed %llu (replay with MODEL_SEED=%llu)\n", (unsigned long long)seed,
	       (unsigned long long)seed);
	fflush(stdout);
	const char *e = getenv("MODEL_THREADS");
	nthreads = e && atoi(e) > 0 ? (unsigned)atoi(e) : 4;
	if (nthreads > MAX_THREADS)
		nthreads = MAX_THREADS;
	double ops = BASE_OPS * test_scale();
	ops_per_thread = ops < 200 ? 200 : (unsigned long)ops;
	/* cgc read its environment before main: make sure it saw ours. */
	cgc_get_stats(&(struct cgc_stats){0});
	const char *pe = getenv("CGC_PERCENT");
	if (pe && gc_opt.percent != atoi(pe)) {
		fprintf(stderr, "model_gc: CGC_PERCENT=%s was set after cgc read the environment"
			" (percent is %d)\n", pe, gc_opt.percent);
		return 1;
	}
	const char *mode = getenv("MODEL_MODE");
	Suite *s = suite_create("model_gc");
	TCase *tc = tcase_create("model");
	tcase_set_timeout(tc, test_timeout(120));
	/* Plain first: without fork (CK_FORK=no) both run in one process, and the barrier, once
	 * promised, stays promised. */
	if (mode == NULL || strcmp(mode, "plain") == 0)
		tcase_add_test(tc, test_plain);
	if (mode == NULL || strcmp(mode, "barrier") == 0)
		tcase_add_test(tc, test_barrier);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
