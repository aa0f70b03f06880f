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

static void fill_page(uint8_t *page, uint32_t seed)
{
	for (unsigned i = 0; i < PAGE; i++)
		page[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 8));
}

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
	free(vm->mem.written);
	free(vm);
}

/* A dirty log the test writes, standing in for KVM's. */
static uint64_t fake_log[(PAGES + 63) / 64];
static bool fake_log_on;

static int fake_log_set(struct kapsel_vm *vm, bool on)
{
	(void)vm;
	fake_log_on = on;
	return 0;
}

static int64_t fake_log_take(struct kapsel_vm *vm, uint64_t *bitmap, size_t bitmap_bytes)
{
	(void)vm;
	CU_ASSERT_FATAL(bitmap_bytes == sizeof(fake_log));
	memcpy(bitmap, fake_log, sizeof(fake_log));
	memset(fake_log, 0, sizeof(fake_log));
	int64_t count = 0;
	for (size_t i = 0; i < bitmap_bytes / 8; i++)
		count += __builtin_popcountll(bitmap[i]);
	return count;
}

static const struct precopy_log_ops fake_log_ops = { .set = fake_log_set, .take = fake_log_take };

/* The guest writes page p: it changes and the log has it. */
static void guest_writes(struct kapsel_vm *vm, unsigned p, uint32_t seed)
{
	fill_page(vm->mem.host_base + (size_t)p * PAGE, seed);
	fake_log[p / 64] |= 1ull << (p % 64);
}

/* The VMM writes page p and marks it (as a PV block read does). */
static void vmm_writes(struct kapsel_vm *vm, unsigned p, uint32_t seed)
{
	fill_page(vm->mem.host_base + (size_t)p * PAGE, seed);
	guest_memory_mark_written(&vm->mem, (uint64_t)p * PAGE, PAGE);
}

/* A VM whose RAM has write marks, a floor of FLOOR_PAGES, data in every
 * page, and a pre-copy of it through its first pass with the fake log. */
#define FLOOR_PAGES 4u
static struct kapsel_vm *tracked_vm(struct precopy *pc, struct memory_sink *sink, bool verify)
{
	struct kapsel_vm *vm = fake_vm();
	vm->mem.written = calloc((PAGES + 63) / 64, sizeof(uint64_t));
	vm->mem.guest_floor_gpa = FLOOR_PAGES * PAGE;
	for (unsigned p = 0; p < PAGES; p++)
		fill_page(vm->mem.host_base + (size_t)p * PAGE, p + 1);
	*sink = (struct memory_sink){ .copy = calloc(PAGES, PAGE), .fail_after = -1 };
	struct precopy_options options = { .max_rounds = 1,
					   .max_downtime_ms = 1,
					   .write_logged_pages = true };
	CU_ASSERT_FATAL(precopy_init(pc, vm, &sink_ops, sink, &options) == 0);
	pc->log = &fake_log_ops;
	pc->verify = verify;
	memset(fake_log, 0, sizeof(fake_log));
	CU_ASSERT_EQUAL(precopy_start_logging(pc), 0);
	CU_ASSERT(fake_log_on);
	CU_ASSERT_EQUAL(precopy_first_pass(pc), 0);
	CU_ASSERT_EQUAL(pc->pages_sent, PAGES);
	return vm;
}

static void free_tracked(struct precopy *pc, struct memory_sink *sink, struct kapsel_vm *vm)
{
	precopy_free(pc);
	CU_ASSERT(!fake_log_on);
	free(sink->copy);
	free_vm(vm);
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

/* With the log and the VMM's marks, the final pass reads only the dirty
 * pages and the hypervisor's tables below the floor, and the destination
 * still equals RAM. */
static void test_final_pass_reads_only_dirty_pages(void)
{
	struct precopy pc;
	struct memory_sink sink;
	struct kapsel_vm *vm = tracked_vm(&pc, &sink, false);
	guest_writes(vm, 10, 1000);
	/* A round takes page 10 and a VMM write. */
	vmm_writes(vm, 200, 2000);
	CU_ASSERT_EQUAL(precopy_rounds(&pc), 0);
	CU_ASSERT_EQUAL(pc.pages_sent, PAGES + 2);
	/* Then, before the final pass: a guest write, a VMM write, a write
	 * to the tables below the floor (no mark: kept pointers), and a
	 * page the VMM wrote with what it held (sent again: a save writes
	 * every dirty page, whatever its CRC). */
	guest_writes(vm, 11, 1001);
	vmm_writes(vm, 201, 2001);
	fill_page(vm->mem.host_base + 2 * PAGE, 3000);
	guest_memory_mark_written(&vm->mem, 250 * PAGE, PAGE);
	CU_ASSERT_EQUAL(precopy_final_pass(&pc), 0);
	CU_ASSERT(pc.final_tracked);
	CU_ASSERT_EQUAL(pc.final_read, 3 + FLOOR_PAGES);
	CU_ASSERT_EQUAL(pc.final_pages, 4); /* 11, 201, 250 and floor page 2 */
	CU_ASSERT_EQUAL(memcmp(sink.copy, vm->mem.host_base, (size_t)PAGES * PAGE), 0);
	CU_ASSERT_EQUAL(precopy_destination_crc(&pc, NULL),
			vm_state_crc32c(0, vm->mem.host_base, (size_t)PAGES * PAGE));
	free_tracked(&pc, &sink, vm);
}

/* KAPSEL_PRECOPY_VERIFY: a VMM write without a mark fails the pass, and
 * the full comparison still brought the destination up to date. */
static void test_verify_finds_an_unmarked_write(void)
{
	struct precopy pc;
	struct memory_sink sink;
	struct kapsel_vm *vm = tracked_vm(&pc, &sink, true);
	vmm_writes(vm, 100, 5000);
	fill_page(vm->mem.host_base + 150 * PAGE, 5001); /* no mark */
	CU_ASSERT_EQUAL(precopy_final_pass(&pc), -EFAULT);
	CU_ASSERT_EQUAL(pc.first_sent, 150);
	CU_ASSERT_EQUAL(memcmp(sink.copy, vm->mem.host_base, (size_t)PAGES * PAGE), 0);
	free_tracked(&pc, &sink, vm);

	/* Every write marked: the check passes. */
	vm = tracked_vm(&pc, &sink, true);
	vmm_writes(vm, 100, 5000);
	guest_writes(vm, 150, 5001);
	CU_ASSERT_EQUAL(precopy_final_pass(&pc), 0);
	CU_ASSERT_EQUAL(pc.final_pages, 2);
	free_tracked(&pc, &sink, vm);
}

/* RAM cleared since logging began (a reboot): the marks say nothing, so
 * the final pass compares every page, and finds the holes. */
static void test_clear_falls_back_to_every_page(void)
{
	struct precopy pc;
	struct memory_sink sink;
	struct kapsel_vm *vm = tracked_vm(&pc, &sink, false);
	memset(vm->mem.host_base, 0, (size_t)PAGES * PAGE);
	vm->mem.clears++;			      /* what guest_memory_clear counts */
	fill_page(vm->mem.host_base + 42 * PAGE, 42); /* a reloaded image, unmarked */
	CU_ASSERT_EQUAL(precopy_final_pass(&pc), 0);
	CU_ASSERT(!pc.final_tracked);
	CU_ASSERT_EQUAL(pc.final_read, PAGES);
	CU_ASSERT_EQUAL(memcmp(sink.copy, vm->mem.host_base, (size_t)PAGES * PAGE), 0);
	/* The next final pass trusts the marks again. */
	vmm_writes(vm, 43, 43);
	CU_ASSERT_EQUAL(precopy_final_pass(&pc), 0);
	CU_ASSERT(pc.final_tracked);
	CU_ASSERT_EQUAL(pc.final_pages, 1);
	CU_ASSERT_EQUAL(memcmp(sink.copy, vm->mem.host_base, (size_t)PAGES * PAGE), 0);
	free_tracked(&pc, &sink, vm);
}

/* A diff over the parent whose page CRCs are crcs, resuming the kept log,
 * through its final pass (left in *diff, still to be freed). */
static void resume_diff(struct precopy *diff, struct kapsel_vm *vm, struct memory_sink *sink,
			const uint32_t *crcs)
{
	struct precopy_options options = { .max_rounds = 1,
					   .max_downtime_ms = 1,
					   .write_logged_pages = true };
	CU_ASSERT_FATAL(precopy_init(diff, vm, &sink_ops, sink, &options) == 0);
	diff->log = &fake_log_ops;
	memcpy(diff->sent_crc, crcs, PAGES * sizeof(uint32_t));
	CU_ASSERT_EQUAL(precopy_resume_logging(diff), 0);
	CU_ASSERT_EQUAL(precopy_final_pass(diff), 0);
	CU_ASSERT_EQUAL(memcmp(sink->copy, vm->mem.host_base, (size_t)PAGES * PAGE), 0);
}

/* The diff is committed: its CRCs are the next one's parent's. */
static void commit_diff(struct precopy *diff, uint32_t *crcs)
{
	precopy_kept_log_from(diff);
	memcpy(crcs, diff->sent_crc, PAGES * sizeof(uint32_t));
	precopy_free(diff);
}

/* A tracked save leaves the log running; the next diff resumes it and
 * reads only what changed.  A diff that fails before its commit, or a
 * pre-copy that starts logging anew (a migration), uses the log up, and
 * the diff after it compares every page.  Last: the kept log is
 * process-wide. */
static void test_kept_log_resumes_tracked(void)
{
	struct precopy parent, diff;
	struct memory_sink sink;
	struct kapsel_vm *vm = tracked_vm(&parent, &sink, false);
	CU_ASSERT_EQUAL(precopy_final_pass(&parent), 0);
	precopy_keep_logging();
	uint32_t *crcs = malloc(PAGES * sizeof(uint32_t));
	commit_diff(&parent, crcs);
	CU_ASSERT(fake_log_on); /* kept */

	vmm_writes(vm, 7, 70);
	guest_writes(vm, 8, 80);
	resume_diff(&diff, vm, &sink, crcs);
	CU_ASSERT(diff.final_tracked);
	CU_ASSERT_EQUAL(diff.final_pages, 2);
	commit_diff(&diff, crcs);

	vmm_writes(vm, 12, 120);
	resume_diff(&diff, vm, &sink, crcs); /* takes page 12's mark */
	precopy_free(&diff);		     /* and is never committed */
	resume_diff(&diff, vm, &sink, crcs);
	CU_ASSERT(!diff.final_tracked);
	CU_ASSERT_EQUAL(diff.final_pages, 1); /* page 12, found by comparison */
	commit_diff(&diff, crcs);

	struct precopy migration;
	struct memory_sink elsewhere = { .copy = calloc(PAGES, PAGE), .fail_after = -1 };
	struct precopy_options options = { .max_rounds = 1, .max_downtime_ms = 1 };
	vmm_writes(vm, 9, 90);
	CU_ASSERT_EQUAL_FATAL(precopy_init(&migration, vm, &sink_ops, &elsewhere, &options), 0);
	migration.log = &fake_log_ops;
	CU_ASSERT_EQUAL(precopy_start_logging(&migration), 0);
	precopy_free(&migration);
	free(elsewhere.copy);
	resume_diff(&diff, vm, &sink, crcs);
	CU_ASSERT(!diff.final_tracked);
	CU_ASSERT_EQUAL(diff.final_pages, 1); /* page 9, found by comparison */
	precopy_free(&diff);
	free(crcs);
	free(sink.copy);
	free_vm(vm);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "destination_crc_is_crc_of_the_copy", test_destination_crc_is_crc_of_the_copy },
		{ "all_zero_and_all_data", test_all_zero_and_all_data },
		{ "sink_error_is_sticky", test_sink_error_is_sticky },
		{ "final_pass_reads_only_dirty_pages", test_final_pass_reads_only_dirty_pages },
		{ "verify_finds_an_unmarked_write", test_verify_finds_an_unmarked_write },
		{ "clear_falls_back_to_every_page", test_clear_falls_back_to_every_page },
		/* Last: it leaves the (fake) log kept for the process. */
		{ "kept_log_resumes_tracked", test_kept_log_resumes_tracked },
	};
	return UNIT_RUN("precopy", tests);
}
