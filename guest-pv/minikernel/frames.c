/* The minikernel's frame allocator: the runtime heap's free pages, a free stack and reference counts. */
#include "kernel.h"

#include "kapsel_guest/libc.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/runtime.h"

/*
 * Every page the runtime heap has left after boot (the block driver's
 * ring is allocated first) becomes a frame.  A frame has a reference
 * count: one per address-space mapping of it (fork shares frames, so the
 * count is how many processes map it).  Free frames sit on a stack of
 * indices; allocation pops one and zeroes it.  The kernel itself lives in
 * the image and in static arrays, never in frames.
 */

#define FRAMES_RESERVE 32u /* pages left to the runtime heap for later kg_malloc */

static uint64_t pool_gpa;
static size_t pool_frames;
static uint16_t *refcounts;
static uint32_t *free_stack;
static size_t free_count;

void frames_init(void)
{
	size_t left = kg_heap_pages_left();
	if (left <= FRAMES_RESERVE + 8)
		kg_panic("frames: only %zu free pages after the image; give the VM more memory",
			 left);
	/* The bookkeeping comes out of the same heap: 6 bytes per frame. */
	size_t wanted = left - FRAMES_RESERVE;
	size_t book_pages =
		(wanted * (sizeof(uint16_t) + sizeof(uint32_t)) + PAGE_BYTES - 1) / PAGE_BYTES + 2;
	wanted -= book_pages;
	refcounts = kg_malloc(wanted * sizeof(uint16_t));
	free_stack = kg_malloc(wanted * sizeof(uint32_t));
	void *pool = kg_os_alloc_pages(wanted);
	if (!refcounts || !free_stack || !pool)
		kg_panic("frames: cannot take %zu pages from the heap", wanted);
	pool_gpa = (uint64_t)(uintptr_t)pool;
	pool_frames = wanted;
	for (size_t i = 0; i < wanted; i++) {
		refcounts[i] = 0;
		free_stack[i] = (uint32_t)(wanted - 1 - i); /* lowest address first */
	}
	free_count = wanted;
	kg_printf("frames: %zu frames of 4 KiB at 0x%llx (%zu KiB)\n", pool_frames,
		  (unsigned long long)pool_gpa, pool_frames * 4);
}

static size_t frame_index(uint64_t gpa)
{
	if (gpa < pool_gpa || (gpa & (PAGE_BYTES - 1)) ||
	    (gpa - pool_gpa) / PAGE_BYTES >= pool_frames)
		kg_panic("frames: 0x%llx is not a frame of the pool", (unsigned long long)gpa);
	return (size_t)((gpa - pool_gpa) / PAGE_BYTES);
}

uint64_t frame_alloc(void)
{
	if (free_count == 0)
		return 0;
	size_t i = free_stack[--free_count];
	refcounts[i] = 1;
	uint64_t gpa = pool_gpa + (uint64_t)i * PAGE_BYTES;
	memset((void *)(uintptr_t)gpa, 0, PAGE_BYTES);
	return gpa;
}

void frame_ref(uint64_t gpa)
{
	size_t i = frame_index(gpa);
	if (refcounts[i] == 0 || refcounts[i] == UINT16_MAX)
		kg_panic("frames: reference to frame 0x%llx with count %u", (unsigned long long)gpa,
			 refcounts[i]);
	refcounts[i]++;
}

void frame_unref(uint64_t gpa)
{
	size_t i = frame_index(gpa);
	if (refcounts[i] == 0)
		kg_panic("frames: frame 0x%llx freed twice", (unsigned long long)gpa);
	if (--refcounts[i] == 0)
		free_stack[free_count++] = (uint32_t)i;
}

unsigned frame_refcount(uint64_t gpa)
{
	return refcounts[frame_index(gpa)];
}

size_t frames_in_use(void)
{
	return pool_frames - free_count;
}

size_t frames_total(void)
{
	return pool_frames;
}
