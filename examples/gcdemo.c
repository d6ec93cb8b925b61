/* examples/gcdemo.c - the collector at work: four threads allocate about 1 GiB of short-lived trees and
 * never free anything, while each keeps a long-lived tree; cgc keeps the heap small. Run by
 * examples/demo.sh with CGC_DEBUG=gctrace=1, whose output tools/cgc-trace turns into a picture. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <cgc.h>

struct node {
	struct node *left, *right;
	long value;
};

static struct node *tree(int depth, long value)
{
	struct node *n = cgc_malloc(sizeof *n);
	n->value = value;
	if (depth > 0) {
		n->left = tree(depth - 1, 2 * value);
		n->right = tree(depth - 1, 2 * value + 1);
	}
	return n;
}

/* Walks a tree and checks every value: a collector that freed a live node would show here. */
static long check(const struct node *n, long value)
{
	if (n == NULL)
		return 0;
	if (n->value != value) {
		fprintf(stderr, "gcdemo: node %p holds %ld, expected %ld\n", (const void *)n, n->value, value);
		exit(1);
	}
	return 1 + check(n->left, 2 * value) + check(n->right, 2 * value + 1);
}

static void *worker(void *arg)
{
	long id = (long)arg;
	struct node *keep = tree(16, id);   /* long-lived: 65535 nodes, about 2 MiB */
	long made = 0;
	for (int i = 0; i < 1200; i++) {
		struct node *t = tree(12, i);  /* short-lived: dropped at the next iteration */
		made += check(t, i);
	}
	if (check(keep, id) != (1 << 17) - 1)
		exit(1);
	return (void *)made;
}

int main(void)
{
	pthread_t t[4];
	for (long i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	long nodes = 0;
	for (int i = 0; i < 4; i++) {
		void *r;
		pthread_join(t[i], &r);
		nodes += (long)r;
	}
	struct cgc_stats s;
	cgc_get_stats(&s);
	double mib = 1.0 / (1 << 20);
	printf("allocated %.0f MiB in %ld short-lived nodes and freed none of them\n",
	       (double)s.nmalloc * sizeof(struct node) * mib, nodes);
	printf("collections %llu, objects reclaimed %llu\n", (unsigned long long)s.collections,
	       (unsigned long long)s.swept_objects);
	printf("heap: %.1f MiB in spans, %.1f MiB live after the last mark, goal %.1f MiB\n",
	       (double)s.heap_spans * mib, (double)s.live_after_mark * mib, (double)s.goal * mib);
	printf("pauses: longest %.2f ms, total %.1f ms; marking used %.1f ms of CPU\n",
	       (double)s.pause_max_ns / 1e6, (double)s.pause_total_ns / 1e6, (double)s.mark_cpu_ns / 1e6);
	return 0;
}
