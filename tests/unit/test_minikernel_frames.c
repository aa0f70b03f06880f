/* Unit tests: the minikernel's frame allocator (free stack, zeroing, reference counts, misuse). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_main.h"

#include "../../guest-pv/minikernel/kernel.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/runtime.h"

/* ---- The runtime calls frames.c makes, over host memory ---------------- */

static size_t heap_pages;  /* what kg_heap_pages_left answers */
static jmp_buf panic_jump; /* kg_panic returns here */
static char panic_message[256];
static int panics;

size_t kg_heap_pages_left(void)
{
	return heap_pages;
}

/* What frames_init took from the "heap": a kernel keeps it for good, the
 * tests give it back before each new frames_init (release_heap). */
static void *allocations[16];
static unsigned allocation_count;

static void *remember(void *p)
{
	if (p && allocation_count < sizeof(allocations) / sizeof(allocations[0]))
		allocations[allocation_count++] = p;
	return p;
}

static void release_heap(void)
{
	while (allocation_count)
		free(allocations[--allocation_count]);
}

void *kg_malloc(size_t size_bytes)
{
	return remember(calloc(1, size_bytes ? size_bytes : 1));
}

void *kg_os_alloc_pages(size_t count)
{
	void *pages = aligned_alloc(PAGE_BYTES, count * PAGE_BYTES);
	if (pages)
		memset(pages, 0, count * PAGE_BYTES);
	return remember(pages);
}

int kg_printf(const char *fmt, ...)
{
	(void)fmt;
	return 0;
}

void kg_panic(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(panic_message, sizeof(panic_message), fmt, ap);
	va_end(ap);
	panics++;
	longjmp(panic_jump, 1);
}

/* Run statement; true if it called kg_panic. */
#define PANICS(statement)                      \
	({                                     \
		int before = panics;           \
		if (setjmp(panic_jump) == 0) { \
			statement;             \
		}                              \
		panics != before;              \
	})

static void test_pool_size(void)
{
	release_heap();
	heap_pages = 100;
	frames_init();
	/* 32 pages stay with the heap; the bookkeeping (6 bytes a frame,
	 * rounded up, plus two) comes out of the rest. */
	CU_ASSERT_EQUAL(frames_total(), 100 - 32 - 3);
	CU_ASSERT_EQUAL(frames_in_use(), 0);
	heap_pages = 40;
	CU_ASSERT_TRUE(PANICS(frames_init()));
	CU_ASSERT_PTR_NOT_NULL(strstr(panic_message, "give the VM more memory"));
}

static void test_alloc_all_distinct_zeroed(void)
{
	release_heap();
	heap_pages = 100;
	frames_init();
	size_t total = frames_total();
	uint64_t got[128];
	for (size_t i = 0; i < total; i++) {
		got[i] = frame_alloc();
		CU_ASSERT_NOT_EQUAL_FATAL(got[i], 0);
		CU_ASSERT_EQUAL(got[i] % PAGE_BYTES, 0);
		CU_ASSERT_EQUAL(frame_refcount(got[i]), 1);
		for (size_t j = 0; j < i; j++)
			CU_ASSERT_NOT_EQUAL(got[i], got[j]);
		memset((void *)(uintptr_t)got[i], 0xa5, PAGE_BYTES);
	}
	CU_ASSERT_EQUAL(frames_in_use(), total);
	CU_ASSERT_EQUAL(frame_alloc(), 0); /* exhausted: 0, no panic */
	/* A freed frame comes back zeroed. */
	frame_unref(got[5]);
	CU_ASSERT_EQUAL(frames_in_use(), total - 1);
	uint64_t again = frame_alloc();
	CU_ASSERT_EQUAL(again, got[5]);
	const uint8_t *bytes = (const uint8_t *)(uintptr_t)again;
	size_t nonzero = 0;
	for (size_t i = 0; i < PAGE_BYTES; i++)
		nonzero += bytes[i] != 0;
	CU_ASSERT_EQUAL(nonzero, 0);
	for (size_t i = 0; i < total; i++)
		frame_unref(got[i]);
	CU_ASSERT_EQUAL(frames_in_use(), 0);
}

static void test_shared_frame_lives_until_last_unref(void)
{
	release_heap();
	heap_pages = 100;
	frames_init();
	uint64_t f = frame_alloc();
	frame_ref(f); /* a fork: two address spaces map it */
	frame_ref(f);
	CU_ASSERT_EQUAL(frame_refcount(f), 3);
	frame_unref(f);
	frame_unref(f);
	CU_ASSERT_EQUAL(frames_in_use(), 1);
	frame_unref(f);
	CU_ASSERT_EQUAL(frames_in_use(), 0);
	CU_ASSERT_EQUAL(frame_refcount(f), 0);
}

static void test_misuse_panics(void)
{
	release_heap();
	heap_pages = 100;
	frames_init();
	uint64_t f = frame_alloc();
	frame_unref(f);
	CU_ASSERT_TRUE(PANICS(frame_unref(f)));
	CU_ASSERT_PTR_NOT_NULL(strstr(panic_message, "freed twice"));
	CU_ASSERT_TRUE(PANICS(frame_ref(f)));	     /* a reference to a free frame */
	CU_ASSERT_TRUE(PANICS(frame_ref(f + 8)));    /* not page aligned */
	CU_ASSERT_TRUE(PANICS(frame_unref(0x1000))); /* not in the pool */
	CU_ASSERT_PTR_NOT_NULL(strstr(panic_message, "is not a frame of the pool"));
	CU_ASSERT_TRUE(PANICS(frame_refcount(f + frames_total() * PAGE_BYTES)));
	CU_ASSERT_EQUAL(frames_in_use(), 0); /* nothing changed */
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	static const struct unit_test tests[] = {
		{ "pool size", test_pool_size },
		{ "alloc all, distinct, zeroed", test_alloc_all_distinct_zeroed },
		{ "shared frame lives until the last unref",
		  test_shared_frame_lives_until_last_unref },
		{ "misuse panics", test_misuse_panics },
	};
	int status = unit_run("minikernel_frames", tests, sizeof(tests) / sizeof(tests[0]));
	release_heap();
	return status;
}
