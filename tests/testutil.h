/* tests/testutil.h - shared by the test programs: a seeded PRNG whose seed is printed and can be
 * given back (CGC_SEED) to replay a run, and a scale knob (STRESS_SCALE) for slow runners. */
#ifndef CGC_TESTUTIL_H
#define CGC_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Tests whose threads allocate take their mutexes with lock_acquire, as cgc takes its own: under
 * ThreadSanitizer a plain pthread_mutex_lock on a lock whose holder the collector stopped would
 * never see the stop signal, and both would wait forever. It also defines CGC_TSAN. */
#include "alloc/atomic.h"

/* xorshift64*: small, fast, good enough to pick sizes and victims. */
static inline uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static inline uint64_t rng_below(uint64_t *s, uint64_t n)
{
	return n ? rng_next(s) % n : 0;
}

/* The run's seed: CGC_SEED if set (replay), else from the clock and pid. Printed either way. */
static inline uint64_t test_seed(const char *name)
{
	const char *e = getenv("CGC_SEED");
	uint64_t seed;
	if (e && *e)
		seed = strtoull(e, NULL, 0);
	else
		seed = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ (uint64_t)clock();
	if (seed == 0)
		seed = 1;
	printf("%s: seed %llu (replay with CGC_SEED=%llu)\n", name, (unsigned long long)seed,
	       (unsigned long long)seed);
	fflush(stdout);
	return seed;
}

/* Multiplier for iteration counts: 1 normally, smaller under valgrind (STRESS_SCALE=0.05). */
static inline double test_scale(void)
{
	const char *e = getenv("STRESS_SCALE");
	double f = e ? atof(e) : 1.0;
	return f > 0 ? f : 1.0;
}

/* A test case's timeout in seconds: dflt, or CK_DEFAULT_TIMEOUT when that is longer (valgrind runs
 * set it). Check's own default of 4 s is meant for unit tests, not stress runs. */
static inline double test_timeout(double dflt)
{
	const char *e = getenv("CK_DEFAULT_TIMEOUT");
	return e && atof(e) > dflt ? atof(e) : dflt;
}

#endif
