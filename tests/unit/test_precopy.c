/* Unit tests of the pre-copy passes shared by live migration and live save: what reaches the sink, and the destination's CRC from per-page bookkeeping. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_main.h"
#include "core/vm.h"
#include "state/precopy.h"
#include "state/vm_state.h"

#define PAGE PRECOPY_PAGE_BYTES
#define PAGES 300u /* more than one batch */

/* A destination in memory, as memory.img or a peer's RAM would be. */
struct memory_sink {
	uint8_t *copy;
	uint64_t written_bytes;
	unsigned page_calls, zero_calls;
	int fail_after; /* calls before an error (-1: never) */
};

static int sink_pages(void *context, uint64_t first, uint32_t count, uint32_t round,
		      const uint8_t *data)
{
	(void)round;
	struct memory_sink *s = context;
	if (s->fail_after >= 0 && s->fail_after-- == 0)
		return -ENOSPC;
	CU_ASSERT(count >= 1 && count <= PRECOPY_BATCH_PAGES);
	CU_ASSERT(first + count <= PAGES);
	memcpy(s->copy + first * PAGE, data, (size_t)count * PAGE);
	s->written_bytes += (uint64_t)count * PAGE;
	s->page_calls++;
	return 0;
}

static int sink_zeros(void *context, uint64_t first, uint32_t count, uint32_t round)
{
	(void)round;
	struct memory_sink *s = context;
	CU_ASSERT(first + count <= PAGES);
	memset(s->copy + first * PAGE, 0, (size_t)count * PAGE);
	s->zero_calls++;
	return 0;
}

static uint64_t sink_bytes(void *context)
{
	return ((struct memory_sink *)context)->written_bytes;
}

static const struct precopy_sink_ops sink_ops = {
	.write_pages = sink_pages,
	.write_zeros = sink_zeros,
	.bytes_written = sink_bytes,
};

/* A VM with no KVM behind it: RAM in a plain buffer (no memfd). */
static struct kapsel_vm *fake_vm(void)
{
	struct kapsel_vm *vm = calloc(1, sizeof(*vm));
	vm->vm_fd = -1;
	vm->mem.memfd = -1;
	vm->mem.size_bytes = (uint64_t)PAGES * PAGE;
	vm->mem.host_base = calloc(PAGES, PAGE);
	return vm;
}

static void free_vm(struct kapsel_vm *vm)
{
	free(vm->mem.host_base);
	free(vm);
}

static void fill_page(uint8_t *page, uint32_t seed)
{
	for (unsigned i = 0; i < PAGE; i++)
		page[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 8));
}

static void test_destination_crc_is_crc_of_the_copy(void)
{
	struct kapsel_vm *vm = fake_vm();
	uint8_t *ram = vm->mem.host_base;
	for (unsigned p = 0; p < PAGES; p++)
		if (p % 3 != 0) /* every third page stays zero: a hole */
			fill_page(ram + (size_t)p * PAGE, p);
	struct memory_sink sink = { .copy = calloc(PAGES, PAGE), .fail_after = -1 };
	struct precopy pc;
	struct precopy_options options = { .max_rounds = 3, .max_downtime_ms = 10 };
	CU_ASSERT_EQUAL_FATAL(precopy_init(&pc, vm, &sink_ops, &sink, &options), 0);
	CU_ASSERT_EQUAL(precopy_first_pass(&pc), 0);
	CU_ASSERT_EQUAL(memcmp(sink.copy, ram, (size_t)PAGES * PAGE), 0);
	CU_ASSERT_EQUAL(pc.pages_sent, PAGES - (PAGES + 2) / 3);
	/* The whole-file CRC from the per-page CRCs, without reading a page. */
	uint32_t whole = vm_state_crc32c(0, sink.copy, (size_t)PAGES * PAGE);
	CU_ASSERT_EQUAL(precopy_destination_crc(&pc, NULL), whole);
	CU_ASSERT_EQUAL(precopy_memory_crc(&vm->mem), whole);

	/* Behind the log's back (as the VMM writes): a page changes, one
	 * becomes zero, a hole gets data.  The final pass finds all three by
	 * CRC and sends nothing else. */
	fill_page(ram + 5 * PAGE, 999);
	memset(ram + 7 * PAGE, 0, PAGE);
	fill_page(ram + 9 * PAGE, 1234);
	CU_ASSERT_EQUAL(precopy_final_pass(&pc), 0);
	CU_ASSERT_EQUAL(pc.final_pages, 3);
	CU_ASSERT_EQUAL(memcmp(sink.copy, ram, (size_t)PAGES * PAGE), 0);
	whole = vm_state_crc32c(0, ram, (size_t)PAGES * PAGE);
	CU_ASSERT_EQUAL(precopy_destination_crc(&pc, NULL), whole);
	CU_ASSERT_EQUAL(precopy_memory_crc(&vm->mem), whole);

	/* Nothing changed: a second final pass sends nothing. */
	CU_ASSERT_EQUAL(precopy_final_pass(&pc), 0);
	CU_ASSERT_EQUAL(pc.final_pages, 0);
	precopy_free(&pc);
	free(sink.copy);
	free_vm(vm);
}

static void test_all_zero_and_all_data(void)
{
	struct kapsel_vm *vm = fake_vm();
	struct memory_sink sink = { .copy = calloc(PAGES, PAGE), .fail_after = -1 };
	struct precopy pc;
	struct precopy_options options = { .max_rounds = 1, .max_downtime_ms = 1 };
	CU_ASSERT_EQUAL_FATAL(precopy_init(&pc, vm, &sink_ops, &sink, &options), 0);
	/* Zero RAM: nothing is written, the CRC is that of zeros. */
	CU_ASSERT_EQUAL(precopy_first_pass(&pc), 0);
	CU_ASSERT_EQUAL(sink.page_calls + sink.zero_calls, 0);
	CU_ASSERT_EQUAL(precopy_destination_crc(&pc, NULL),
			vm_state_crc32c_zeros(0, (uint64_t)PAGES * PAGE));
	/* All data: contiguous pages go in batches of at most 256. */
	for (unsigned p = 0; p < PAGES; p++)
		fill_page(vm->mem.host_base + (size_t)p * PAGE, p + 1);
	CU_ASSERT_EQUAL(precopy_final_pass(&pc), 0);
	CU_ASSERT_EQUAL(sink.page_calls, (PAGES + PRECOPY_BATCH_PAGES - 1) / PRECOPY_BATCH_PAGES);
	CU_ASSERT_EQUAL(memcmp(sink.copy, vm->mem.host_base, (size_t)PAGES * PAGE), 0);
	CU_ASSERT_EQUAL(precopy_destination_crc(&pc, NULL),
			vm_state_crc32c(0, vm->mem.host_base, (size_t)PAGES * PAGE));
	precopy_free(&pc);
	free(sink.copy);
	free_vm(vm);
}

static void test_sink_error_is_sticky(void)
{
	struct kapsel_vm *vm = fake_vm();
	for (unsigned p = 0; p < PAGES; p += 2) /* no two pages adjacent: one call each */
		fill_page(vm->mem.host_base + (size_t)p * PAGE, p + 1);
	struct memory_sink sink = { .copy = calloc(PAGES, PAGE), .fail_after = 3 };
	struct precopy pc;
	struct precopy_options options = { .max_rounds = 1, .max_downtime_ms = 1 };
	CU_ASSERT_EQUAL_FATAL(precopy_init(&pc, vm, &sink_ops, &sink, &options), 0);
	CU_ASSERT_EQUAL(precopy_first_pass(&pc), -ENOSPC);
	CU_ASSERT_EQUAL(sink.page_calls, 3); /* nothing after the failure */
	CU_ASSERT_EQUAL(precopy_final_pass(&pc), -ENOSPC);
	CU_ASSERT_EQUAL(sink.page_calls, 3);
	precopy_free(&pc);
	free(sink.copy);
	free_vm(vm);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "destination_crc_is_crc_of_the_copy", test_destination_crc_is_crc_of_the_copy },
		{ "all_zero_and_all_data", test_all_zero_and_all_data },
		{ "sink_error_is_sticky", test_sink_error_is_sticky },
	};
	return UNIT_RUN("precopy", tests);
}
