/* gc/roots.c - where marking starts: data and bss of every loaded object, every thread's TLS,
 * stacks and registers, and ranges the program registers. doc/design/collector.md 4. */
#define UNW_LOCAL_ONLY
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <libunwind.h>
#include <stdio.h>
#include <string.h>

#include "alloc/alloc.h"
#include "alloc/os.h"
#include "gc/gc.h"
#include "include/cgc.h"

/* The linker brackets the cgc_nonroot section (alloc/types.h, NONROOT); scanning skips it. */
extern char __start_cgc_nonroot[] __attribute__((visibility("hidden"), weak));
extern char __stop_cgc_nonroot[] __attribute__((visibility("hidden"), weak));

typedef struct range {
	uintptr_t lo, hi;
} range_t;

typedef struct tls_module {
	size_t modid;
	size_t size;
} tls_module_t;

/* A growable array in meta memory. */
typedef struct vec {
	void *v;
	size_t n, cap, elem;
} vec_t;

static bool vec_push(vec_t *a, const void *x)
{
	if (a->n == a->cap) {
		size_t ncap = a->cap ? a->cap * 2 : 64;
		if (ncap * a->elem > ((size_t)64 << 10))
			return false; /* meta_alloc's limit: 4096 ranges of 16 bytes is plenty */
		void *nv = meta_alloc(ncap * a->elem);
		if (nv == NULL)
			return false;
		if (a->v) {
			memcpy(nv, a->v, a->n * a->elem);
			meta_free(a->v, a->cap * a->elem);
		}
		a->v = nv;
		a->cap = ncap;
	}
	memcpy((char *)a->v + a->n * a->elem, x, a->elem);
	a->n++;
	return true;
}

NONROOT static vec_t segments = {.elem = sizeof(range_t)};       /* snapshot: writable data */
NONROOT static vec_t modules = {.elem = sizeof(tls_module_t)};   /* snapshot: TLS modules */
NONROOT static vec_t user_roots = {.elem = sizeof(range_t)};     /* cgc_add_root (roots_lock) */
NONROOT static pthread_mutex_t user_lock = PTHREAD_MUTEX_INITIALIZER;

/* dlopen and dlclose wait while a collection runs, so no segment it snapshotted disappears under
 * its scan. Re-entrant for its holder: a library constructor run by dlopen may allocate and
 * collect. Not a PTHREAD_MUTEX_RECURSIVE: glibc refuses to unlock one of those in a fork child,
 * whose thread id differs from the parent's. */
NONROOT static pthread_mutex_t dl_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread unsigned dl_depth;  /* how many times this thread holds dl_lock */

static void dl_lock_take(void)
{
	if (dl_depth++ == 0)
		lock_acquire(&dl_lock);
}

static void dl_lock_drop(void)
{
	if (--dl_depth == 0)
		pthread_mutex_unlock(&dl_lock);
}

void roots_lock(void)
{
	dl_lock_take();
	lock_acquire(&user_lock);
}

/* The collector thread's way in: it holds gc_lock, which a thread inside dlopen (holding dl_lock)
 * may want for cgc_collect, so it must not wait for dl_lock (collector.md 3.4). */
bool roots_trylock(void)
{
	if (dl_depth == 0 && pthread_mutex_trylock(&dl_lock) != 0)
		return false;
	dl_depth++;
	lock_acquire(&user_lock);
	return true;
}

/* Whether this thread is inside dlopen or dlclose (or a collection). */
bool roots_held(void)
{
	return dl_depth > 0;
}

void roots_unlock(void)
{
	pthread_mutex_unlock(&user_lock);
	dl_lock_drop();
}

/* ---- the snapshot of loaded objects ------------------------------------------------------ */

/* Adds [lo, hi) minus the cgc_nonroot section. */
static void add_segment(uintptr_t lo, uintptr_t hi)
{
	uintptr_t xlo = (uintptr_t)__start_cgc_nonroot, xhi = (uintptr_t)__stop_cgc_nonroot;
	if (xlo && xhi > xlo && xlo < hi && xhi > lo) {
		if (xlo > lo)
			add_segment(lo, xlo);
		if (xhi < hi)
			add_segment(xhi, hi);
		return;
	}
	if (hi > lo && !vec_push(&segments, &(range_t){lo, hi}))
		cgc_fatal("cgc: too many data segments to track as roots");
}

static int phdr_callback(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	(void)arg;
	uintptr_t relro_lo = 0, relro_hi = 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type == PT_GNU_RELRO) {
			relro_lo = info->dlpi_addr + ph->p_vaddr;
			relro_hi = relro_lo + ph->p_memsz;
		}
		if (ph->p_type == PT_TLS && info->dlpi_tls_modid && ph->p_memsz)
			vec_push(&modules, &(tls_module_t){info->dlpi_tls_modid, ph->p_memsz});
	}
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_W))
			continue;
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
		/* RELRO is read-only after relocation: no heap pointer can be stored there. */
		if (relro_hi > lo && relro_lo < hi) {
			if (relro_lo > lo)
				add_segment(lo, relro_lo);
			if (relro_hi < hi)
				add_segment(relro_hi, hi);
		} else {
			add_segment(lo, hi);
		}
	}
	return 0;
}

/* Runs with the world going: dl_iterate_phdr takes the loader's lock, which a stopped thread might
 * hold. roots_lock keeps dlopen/dlclose out until the world runs again. */
void roots_snapshot(void)
{
	segments.n = 0;
	modules.n = 0;
	dl_iterate_phdr(phdr_callback, NULL);
}

/* ---- pushing roots ----------------------------------------------------------------------- */

struct push_ctx {
	gcwork_t *w;
	size_t stacks;
	uintptr_t self_sp;
	bool now;       /* scan at once: the world restarts before the workers would get to it */
};

/* A root range, queued or (c->now) scanned at once. Stacks, TLS blocks, saved registers and
 * registered ranges can change or vanish once the world runs again (a thread exits, a root is
 * removed and freed): a concurrent cycle scans them while the world is stopped. */
static void root_range(struct push_ctx *c, uintptr_t p, size_t len, bool root)
{
	if (c->now)
		mark_scan_now(c->w, p, len, root);
	else
		mark_push_range(c->w, p, len, root);
}

static void push_tls(struct push_ctx *c, uintptr_t tp, size_t *bytes)
{
	void **dtv = os_thread_dtv(tp);
	if (dtv == NULL)
		return;
	/* dtv entries are {value, to_free} pairs; entry -1 holds the vector's length. */
	size_t len = (size_t)dtv[-2];
	for (size_t i = 0; i < modules.n; i++) {
		tls_module_t *m = &((tls_module_t *)modules.v)[i];
		if (m->modid > len)
			continue;
		uintptr_t block = (uintptr_t)dtv[2 * m->modid];
		if (block == 0 || block == (uintptr_t)-1)
			continue; /* not allocated in this thread */
		root_range(c, block, m->size, false);
		*bytes += m->size;
	}
}

static void push_thread(gthread_t *t, uintptr_t lo, uintptr_t hi, void *arg)
{
	struct push_ctx *c = arg;
	if (lo == 0) {
		lo = c->self_sp;
		mark_scan_now(c->w, lo, hi - lo, true);
		c->stacks += hi - lo;
		push_tls(c, t->tp, &c->stacks);
		return;
	}
	if (hi > lo) {
		root_range(c, lo, hi - lo, true);
		c->stacks += hi - lo;
	}
	if (load_relaxed(&t->state) == THREAD_BLOCKING_HELD)
		root_range(c, (uintptr_t)t->regs, t->regs_size, true);
	push_tls(c, t->tp, &c->stacks);
}

void roots_push_all(gcwork_t *w, uintptr_t self_sp, size_t *globals, size_t *stacks, bool now)
{
	size_t g = 0;
	struct push_ctx c = {w, 0, self_sp, now};
	/* Data segments stay put while roots_lock keeps dlclose out: queued even when `now`. */
	for (size_t i = 0; i < segments.n; i++) {
		range_t *r = &((range_t *)segments.v)[i];
		mark_push_range(w, r->lo, r->hi - r->lo, false);
		g += r->hi - r->lo;
	}
	for (size_t i = 0; i < user_roots.n; i++) {
		range_t *r = &((range_t *)user_roots.v)[i];
		root_range(&c, r->lo, r->hi - r->lo, false);
		g += r->hi - r->lo;
	}
	threads_each(push_thread, &c);
	threads_push_starting(w, now);
	*globals = g;
	*stacks = c.stacks;
}

/* What the root range at a is, for checkmark's report (world stopped). */
struct describe_ctx {
	uintptr_t a;
	char *buf;
	size_t n;
	int found;
};

static void describe_thread(gthread_t *t, uintptr_t lo, uintptr_t hi, void *arg)
{
	struct describe_ctx *d = arg;
	(void)lo;
	(void)hi;
	if (!d->found && d->a >= t->stack_lo && d->a < t->stack_hi) {
		snprintf(d->buf, d->n, "the stack of thread %#lx", (unsigned long)t->pt);
		d->found = 1;
	}
}

void roots_describe(uintptr_t a, char *buf, size_t n)
{
	for (size_t i = 0; i < segments.n; i++) {
		range_t *r = &((range_t *)segments.v)[i];
		if (a >= r->lo && a < r->hi) {
			Dl_info info;
			if (dladdr((void *)a, &info) && info.dli_fname)
				snprintf(buf, n, "the data of %s", info.dli_fname);
			else
				snprintf(buf, n, "a data segment");
			return;
		}
	}
	for (size_t i = 0; i < user_roots.n; i++) {
		range_t *r = &((range_t *)user_roots.v)[i];
		if (a >= r->lo && a < r->hi) {
			snprintf(buf, n, "a range registered with cgc_add_root");
			return;
		}
	}
	struct describe_ctx d = {a, buf, n, 0};
	threads_each(describe_thread, &d);
	if (!d.found)
		snprintf(buf, n, "thread-local storage, saved registers or a new thread's argument");
}

/* ---- registered ranges ------------------------------------------------------------------- */

CGC_API void cgc_add_root(void *addr, size_t len)
{
	alloc_init();
	if (len == 0)
		return;
	lock_acquire(&user_lock);
	if (!vec_push(&user_roots, &(range_t){(uintptr_t)addr, (uintptr_t)addr + len}))
		cgc_report("cgc: cgc_add_root(%p, %zu): too many root ranges; not added", addr, len);
	pthread_mutex_unlock(&user_lock);
}

CGC_API void cgc_remove_root(void *addr)
{
	alloc_init();
	lock_acquire(&user_lock);
	range_t *r = user_roots.v;
	for (size_t i = 0; i < user_roots.n; i++) {
		if (r[i].lo == (uintptr_t)addr) {
			r[i] = r[--user_roots.n];
			pthread_mutex_unlock(&user_lock);
			return;
		}
	}
	pthread_mutex_unlock(&user_lock);
	cgc_report("cgc: cgc_remove_root(%p): not a registered root; nothing removed", addr);
}

/* ---- dlopen and dlclose ------------------------------------------------------------------ */

typedef void *(*dlopen_fn)(const char *, int);
typedef int (*dlclose_fn)(void *);

CGC_API void *dlopen(const char *file, int mode)
{
	static dlopen_fn real;
	if (load_relaxed(&real) == NULL)
		store_relaxed(&real, (dlopen_fn)dlsym(RTLD_NEXT, "dlopen"));
	dl_lock_take();
	void *h = real(file, mode);
	dl_lock_drop();
	return h;
}

CGC_API int dlclose(void *handle)
{
	static dlclose_fn real;
	if (load_relaxed(&real) == NULL)
		store_relaxed(&real, (dlclose_fn)dlsym(RTLD_NEXT, "dlclose"));
	dl_lock_take();
	int r = real(handle);
	dl_lock_drop();
	return r;
}

void roots_fork_prepare(void)
{
	roots_lock();
}

void roots_fork_release(void)
{
	roots_unlock();
}

void roots_init(void)
{
}
