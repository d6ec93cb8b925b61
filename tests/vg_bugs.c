/* tests/vg_bugs.c - a program with heap bugs, run under valgrind by tests/valgrind-bugs.sh:
 * memcheck must see cgc objects as heap blocks and report each bug (doc/design/allocator.md 10). */
#include <stdio.h>
#include <string.h>

#include "include/cgc.h"

int main(int argc, char **argv)
{
	const char *which = argc > 1 ? argv[1] : "";
	if (strcmp(which, "use-after-free") == 0) {
		char *p = cgc_malloc(100);
		cgc_free(p);
		p[50] = 1; /* memcheck: invalid write */
	} else if (strcmp(which, "overrun") == 0) {
		char *p = cgc_malloc_atomic(64);
		volatile size_t end = 64;
		volatile char c = p[end]; /* one past the end of a 64-byte object: invalid read */
		(void)c;
	} else if (strcmp(which, "uninitialised") == 0) {
		int *p = cgc_malloc_atomic(sizeof(int) * 4); /* atomic memory is not zeroed */
		if (p[2] == 42)                               /* memcheck: depends on uninitialised value */
			puts("42");
	} else if (strcmp(which, "clean") == 0) {
		/* Everything a correct program does: no report expected. */
		char *a = cgc_malloc(100), *b = cgc_malloc_atomic(5), *c = cgc_malloc(1 << 20);
		memset(b, 'x', 5);
		a = cgc_realloc(a, 5000);
		a[4999] = b[4];
		c[12345] = a[10];
		cgc_free(a);
		cgc_free(b);
		cgc_free(c);
	}
	return 0;
}
