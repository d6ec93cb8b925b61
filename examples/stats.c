/* examples/stats.c - the demonstration: allocate a few kinds of objects from several threads,
 * free some, and print what cgc_get_stats reports. Built by `make`; the README runs it. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <cgc.h>

struct node {
	struct node *next;
	char name[40];
};

static void *worker(void *arg)
{
	long id = (long)arg;
	struct node *list = NULL;
	for (int i = 0; i < 100000; i++) {
		struct node *n = cgc_malloc(sizeof *n);
		snprintf(n->name, sizeof n->name, "thread %ld node %d", id, i);
		n->next = list;
		list = n;
	}
	/* Free every other node explicitly; the rest become garbage once main drops the list, and
	 * the collector reclaims them. */
	for (struct node *n = list; n && n->next; n = n->next) {
		struct node *dead = n->next;
		n->next = dead->next;
		cgc_free(dead);
	}
	return list;
}

static void print_stats(const char *when)
{
	struct cgc_stats s;
	cgc_get_stats(&s);
	printf("-- %s\n", when);
	printf("objects live     %10llu   (allocated %llu, freed %llu)\n", (unsigned long long)s.objects,
	       (unsigned long long)s.nmalloc, (unsigned long long)s.nfree);
	printf("heap in use      %10.2f MiB in objects, %.2f MiB in spans\n", s.heap_inuse / 1048576.0,
	       s.heap_spans / 1048576.0);
	printf("page heap        %10.2f MiB free, %.2f MiB released to the OS, %.2f MiB mapped\n",
	       s.heap_free / 1048576.0, s.heap_released / 1048576.0, s.heap_mapped / 1048576.0);
	printf("large objects    %10llu live, %.2f MiB\n",
	       (unsigned long long)(s.large_nmalloc - s.large_nfree), s.large_inuse / 1048576.0);
	printf("tiny allocations %10llu\n", (unsigned long long)s.tiny_allocs);
	printf("metadata         %10.2f MiB mapped\n", s.meta_mapped / 1048576.0);
	printf("busiest classes:\n");
	for (int i = 1; i < CGC_NUM_CLASSES; i++)
		if (s.classes[i].nmalloc >= 10000)
			printf("  %6zu B  %8llu allocated %8llu freed  %4zu spans\n", s.classes[i].size,
			       (unsigned long long)s.classes[i].nmalloc, (unsigned long long)s.classes[i].nfree,
			       s.classes[i].spans);
}

int main(void)
{
	pthread_t t[4];
	for (long i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);

	char *s = cgc_malloc_atomic(6);
	memcpy(s, "hello", 6);
	double *big = cgc_malloc(1 << 20);
	big[0] = 1.5;
	printf("a 6-byte string %p (tiny: %zu usable bytes); a 1 MiB array at %p, base of its middle %p\n",
	       (void *)s, cgc_usable_size(s), (void *)big, cgc_base(&big[1000]));
	print_stats("after four threads built 100,000-node lists and freed half of each");
	cgc_free(big);
	print_stats("after freeing the 1 MiB array");
	return 0;
}
