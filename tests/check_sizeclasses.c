/* check_sizeclasses.c - tests of the generated size class tables in alloc/sizeclasses.{h,c}.
 * It rechecks what doc/design/allocator-sizeclasses.md promises (see also doc/design/allocator.md). */

/* These tests recheck, independently of tools/mksizeclasses, what the allocator relies on; they
 * catch a hand edit of the generated files as well as a generator bug. Every check is exhaustive:
 * the request sizes and span offsets are few enough to try them all. */

#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc/sizeclasses.h"
#include "include/cgc.h"

/* Bytes in one span of class c. */
static uint32_t span_bytes(unsigned c)
{
	return (uint32_t)(sc_npages[c] * PAGE_SIZE);
}

/* Smallest class holding n bytes, by scanning sc_size: the reference size_to_class must agree with. */
static unsigned class_by_scan(size_t n)
{
	for (unsigned c = 1; c < NUM_SIZE_CLASSES; c++)
		if (sc_size[c] >= n)
			return c;
	return 0;
}

START_TEST(test_class0)
{
	ck_assert_uint_eq(sc_size[0], 0);
	ck_assert_uint_eq(sc_npages[0], 0);
	ck_assert_uint_eq(sc_nelems[0], 0);
	ck_assert_uint_eq(sc_class_small[0], 1);
}
END_TEST

START_TEST(test_sizes_increase)
{
	for (unsigned c = 2; c < NUM_SIZE_CLASSES; c++)
		ck_assert_msg(sc_size[c] > sc_size[c - 1], "class %u: %u after %u", c,
		              (unsigned)sc_size[c], (unsigned)sc_size[c - 1]);
}
END_TEST

START_TEST(test_alignment)
{
	for (unsigned c = 1; c < NUM_SIZE_CLASSES; c++) {
		uint32_t size = sc_size[c];

		ck_assert_msg(size % 8 == 0, "class %u: size %u not a multiple of 8", c, (unsigned)size);
		/* 24 is the one exception: it packs many small objects, and only needs 8-byte alignment. */
		if (size >= 16 && size != 24)
			ck_assert_msg(size % 16 == 0, "class %u: size %u not a multiple of 16", c, (unsigned)size);
	}
}
END_TEST

START_TEST(test_largest)
{
	ck_assert_uint_eq(sc_size[NUM_SIZE_CLASSES - 1], MAX_SMALL_SIZE);
	ck_assert_uint_eq(MAX_SMALL_SIZE, 32768);
}
END_TEST

START_TEST(test_tail_waste)
{
	for (unsigned c = 1; c < NUM_SIZE_CLASSES; c++) {
		uint32_t span = span_bytes(c), tail = span % sc_size[c];

		ck_assert_msg((uint64_t)tail * 8 <= span, "class %u: tail %u of %u bytes", c,
		              (unsigned)tail, (unsigned)span);
	}
}
END_TEST

/* The page count is the fewest that meets the tail bound, from a floor of 8 pages (64 KiB) for
 * classes up to 1024 bytes (see tools/mksizeclasses.c): more pages would only make spans bigger. */
START_TEST(test_fewest_pages)
{
	for (unsigned c = 1; c < NUM_SIZE_CLASSES; c++) {
		uint32_t floor = sc_size[c] <= 1024 ? 8 : 1;
		ck_assert_uint_ge(sc_npages[c], floor);
		for (uint32_t np = floor; np < sc_npages[c]; np++) {
			uint32_t span = np * (uint32_t)PAGE_SIZE;

			ck_assert_msg((uint64_t)(span % sc_size[c]) * 8 > span,
			              "class %u: %u pages would do, not %u", c, (unsigned)np, (unsigned)sc_npages[c]);
		}
	}
}
END_TEST

/* Waste as a share of the object: (size - n) / size <= 1/8, for every request above 128 bytes. */
START_TEST(test_roundup_waste)
{
	for (uint32_t n = 129; n <= MAX_SMALL_SIZE; n++) {
		uint32_t size = sc_size[class_by_scan(n)];

		ck_assert_msg((uint64_t)(size - n) * 8 <= size, "request %u rounds up to %u", (unsigned)n,
		              (unsigned)size);
	}
}
END_TEST

START_TEST(test_size_to_class)
{
	ck_assert_uint_eq(size_to_class(0), 1);
	for (size_t n = 1; n <= MAX_SMALL_SIZE; n++)
		ck_assert_msg(size_to_class(n) == class_by_scan(n), "size_to_class(%zu) = %u, want %u", n,
		              size_to_class(n), class_by_scan(n));
}
END_TEST

START_TEST(test_divmul)
{
	for (unsigned c = 1; c < NUM_SIZE_CLASSES; c++) {
		uint32_t span = span_bytes(c);

		for (uint32_t off = 0; off < span; off++) {
			uint32_t q = (uint32_t)(((uint64_t)off * sc_divmul[c]) >> 32);

			if (q != off / sc_size[c])
				ck_abort_msg("class %u: offset %u gives index %u, want %u", c, (unsigned)off,
				             (unsigned)q, (unsigned)(off / sc_size[c]));
		}
	}
}
END_TEST

START_TEST(test_nelems)
{
	for (unsigned c = 1; c < NUM_SIZE_CLASSES; c++)
		ck_assert_uint_eq(sc_nelems[c], span_bytes(c) / sc_size[c]);
}
END_TEST

START_TEST(test_maxima)
{
	unsigned maxn = 0, maxp = 0;

	for (unsigned c = 1; c < NUM_SIZE_CLASSES; c++) {
		if (sc_nelems[c] > maxn)
			maxn = sc_nelems[c];
		if (sc_npages[c] > maxp)
			maxp = sc_npages[c];
	}
	ck_assert_uint_eq(MAX_SPAN_NELEMS, maxn);
	ck_assert_uint_eq(MAX_CLASS_NPAGES, maxp);
}
END_TEST

/* struct cgc_stats has one entry per class: the public count must follow the table. */
START_TEST(test_public_count)
{
	ck_assert_int_eq(NUM_SIZE_CLASSES, CGC_NUM_CLASSES);
}
END_TEST

static Suite *sizeclasses_suite(void)
{
	Suite *s = suite_create("sizeclasses");
	TCase *tc = tcase_create("tables");

	tcase_add_test(tc, test_class0);
	tcase_add_test(tc, test_sizes_increase);
	tcase_add_test(tc, test_alignment);
	tcase_add_test(tc, test_largest);
	tcase_add_test(tc, test_tail_waste);
	tcase_add_test(tc, test_fewest_pages);
	tcase_add_test(tc, test_roundup_waste);
	tcase_add_test(tc, test_size_to_class);
	tcase_add_test(tc, test_divmul);
	tcase_add_test(tc, test_nelems);
	tcase_add_test(tc, test_maxima);
	tcase_add_test(tc, test_public_count);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(sizeclasses_suite());
	int failures;

	srunner_run_all(sr, CK_NORMAL);
	failures = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failures ? 1 : 0;
}
