/* benchutil.h - the clock and argument parsing the benchmark programs share (bench/README.md). */
#ifndef CGC_BENCHUTIL_H
#define CGC_BENCHUTIL_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A positive decimal integer; -1 on anything else. */
static inline int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v == 0)
		return -1;
	*out = v;
	return 0;
}

#endif
