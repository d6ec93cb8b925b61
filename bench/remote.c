/* remote.c - producer/consumer benchmark: one thread allocates, another frees every object, so
 * every free is a remote free (cgc's thread_free path). See bench/README.md. */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "benchutil.h"

#if defined(USE_MALLOC) + defined(USE_CGC) != 1
#error "define exactly one of USE_MALLOC, USE_CGC"
#endif
#if defined(USE_CGC)
#include <cgc.h>
#define bench_alloc(n) cgc_malloc(n)
#define bench_free(p) cgc_free(p)
#else
#define bench_alloc(n) malloc(n)
#define bench_free(p) free(p)
#endif

/* Objects in flight between the two threads: a ring of slots, each handed over with
 * release/acquire, so the consumer frees what the producer allocated a little earlier. */
#define QUEUE 4096
static void *queue[QUEUE];
static uint64_t total = 10000000;

static void *producer(void *arg)
{
	uint64_t rng = 0x9E3779B97F4A7C15ull;
	for (uint64_t i = 0; i < total; i++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		unsigned char *p = bench_alloc(8 + rng % 249);
		if (p == NULL) {
			fprintf(stderr, "remote: out of memory\n");
			exit(1);
		}
		p[0] = (unsigned char)rng;
		while (__atomic_load_n(&queue[i % QUEUE], __ATOMIC_ACQUIRE) != NULL)
			;
		__atomic_store_n(&queue[i % QUEUE], p, __ATOMIC_RELEASE);
	}
	return arg;
}

static void *consumer(void *arg)
{
	for (uint64_t i = 0; i < total; i++) {
		void *p;
		while ((p = __atomic_load_n(&queue[i % QUEUE], __ATOMIC_ACQUIRE)) == NULL)
			;
		__atomic_store_n(&queue[i % QUEUE], NULL, __ATOMIC_RELEASE);
		bench_free(p);
	}
	return arg;
}

int main(int argc, char **argv)
{
	if (argc > 2 || (argc == 2 && parse_u64(argv[1], &total))) {
		fprintf(stderr, "usage: remote [TOTAL_ALLOCS]\n");
		return 2;
	}
	pthread_t t[2];
	uint64_t t0 = now_ns();
	pthread_create(&t[0], NULL, producer, NULL);
	pthread_create(&t[1], NULL, consumer, NULL);
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	uint64_t t1 = now_ns();
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("remote ns_per_op=%.2f seconds=%.3f maxrss_kb=%ld\n", (double)(t1 - t0) / (double)total,
	       (double)(t1 - t0) / 1e9, ru.ru_maxrss);
	return 0;
}
