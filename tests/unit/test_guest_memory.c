/* Unit tests: guest RAM creation, the checked GPA translator, the VMM's write marks and memory size parsing. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_main.h"
#include "core/guest_memory.h"

#define RAM_BYTES (4ull << 20)

static void test_translate_bounds(void)
{
	struct guest_memory mem;
	CU_ASSERT_EQUAL_FATAL(guest_memory_create(&mem, RAM_BYTES, "translate-test"), 0);
	CU_ASSERT_EQUAL(mem.size_bytes, RAM_BYTES);
	uint8_t *base = mem.host_base;

	/* First byte, last byte, the whole of RAM. */
	CU_ASSERT_PTR_EQUAL(guest_memory_translate(&mem, 0, 1), base);
	CU_ASSERT_PTR_EQUAL(guest_memory_translate(&mem, RAM_BYTES - 1, 1), base + RAM_BYTES - 1);
	CU_ASSERT_PTR_EQUAL(guest_memory_translate(&mem, 0, RAM_BYTES), base);
	CU_ASSERT_PTR_EQUAL(guest_memory_translate(&mem, 0x1234, 0x100), base + 0x1234);
	/* One byte too many, in several ways. */
	CU_ASSERT_PTR_NULL(guest_memory_translate(&mem, RAM_BYTES, 1));
	CU_ASSERT_PTR_NULL(guest_memory_translate(&mem, RAM_BYTES - 1, 2));
	CU_ASSERT_PTR_NULL(guest_memory_translate(&mem, 0, RAM_BYTES + 1));
	CU_ASSERT_PTR_NULL(guest_memory_translate(&mem, 1, RAM_BYTES));
	/* Zero length: valid anywhere up to and including the end. */
	CU_ASSERT_PTR_EQUAL(guest_memory_translate(&mem, 0, 0), base);
	CU_ASSERT_PTR_EQUAL(guest_memory_translate(&mem, RAM_BYTES, 0), base + RAM_BYTES);
	CU_ASSERT_PTR_NULL(guest_memory_translate(&mem, RAM_BYTES + 1, 0));
	/* GPAs far above RAM. */
	CU_ASSERT_PTR_NULL(guest_memory_translate(&mem, 1ull << 40, 1));
	CU_ASSERT_PTR_NULL(guest_memory_translate(&mem, UINT64_MAX, 0));
	CU_ASSERT_PTR_NULL(guest_memory_translate(&mem, UINT64_MAX, 1));
	/* gpa + length wraps around 2^64 to a small number. */
	CU_ASSERT_PTR_NULL(guest_memory_translate(&mem, UINT64_MAX - 1, 3));
	CU_ASSERT_PTR_NULL(guest_memory_translate(&mem, 16, UINT64_MAX));
	CU_ASSERT_PTR_NULL(guest_memory_translate(&mem, 16, UINT64_MAX - 15));
	CU_ASSERT_PTR_NULL(guest_memory_translate(&mem, RAM_BYTES - 1, UINT64_MAX));

	/* The mapping is real memory, zeroed. */
	CU_ASSERT_EQUAL(base[0], 0);
	CU_ASSERT_EQUAL(base[RAM_BYTES - 1], 0);
	base[RAM_BYTES - 1] = 0x5a;

	/* Clearing makes all of it read zero again. */
	memset(base, 0xa5, RAM_BYTES);
	guest_memory_clear(&mem);
	size_t nonzero = 0;
	for (uint64_t i = 0; i < RAM_BYTES; i += 4096)
		nonzero += base[i] != 0 || base[i + 4095] != 0;
	CU_ASSERT_EQUAL(nonzero, 0);

	guest_memory_destroy(&mem);
	CU_ASSERT_PTR_NULL(mem.host_base);
	CU_ASSERT_EQUAL(mem.memfd, -1);
	/* Destroyed memory translates nothing; destroying twice is safe. */
	CU_ASSERT_PTR_NULL(guest_memory_translate(&mem, 0, 0));
	guest_memory_destroy(&mem);
}

static void test_create_refuses_bad_sizes(void)
{
	struct guest_memory mem;
	CU_ASSERT_EQUAL(guest_memory_create(&mem, 2ull << 20, "t"), -ERANGE);
	CU_ASSERT_PTR_NULL(mem.host_base);
	CU_ASSERT_EQUAL(guest_memory_create(&mem, (4ull << 20) + 4096, "t"), -ERANGE);
	CU_ASSERT_EQUAL(guest_memory_create(&mem, (64ull << 30) + (2ull << 20), "t"), -ERANGE);
	CU_ASSERT_EQUAL(guest_memory_create(&mem, 0, "t"), -ERANGE);
	/* Failure leaves the struct safe to destroy. */
	guest_memory_destroy(&mem);
}

static void expect_size(const char *text, uint64_t bytes)
{
	uint64_t got = 0;
	int rc = guest_memory_parse_size(text, &got);
	if (rc != 0 || got != bytes)
		fprintf(stderr, "\n  '%s' -> rc %d, %llu bytes; expected %llu\n", text, rc,
			(unsigned long long)got, (unsigned long long)bytes);
	CU_ASSERT_EQUAL(rc, 0);
	CU_ASSERT_EQUAL(got, bytes);
}

static void expect_size_error(const char *text, int err)
{
	uint64_t got = 0x1234;
	int rc = guest_memory_parse_size(text, &got);
	if (rc != err)
		fprintf(stderr, "\n  '%s' -> rc %d; expected %d\n", text ? text : "(null)", rc,
			err);
	CU_ASSERT_EQUAL(rc, err);
	/* The output is untouched on error. */
	CU_ASSERT_EQUAL(got, 0x1234);
}

static void test_parse_size(void)
{
	const uint64_t MiB = 1ull << 20, GiB = 1ull << 30;
	expect_size("64M", 64 * MiB);
	expect_size("64m", 64 * MiB);
	expect_size("64MB", 64 * MiB);
	expect_size("64MiB", 64 * MiB);
	expect_size("4M", 4 * MiB);
	expect_size("6M", 6 * MiB);
	expect_size("1G", GiB);
	expect_size("1g", GiB);
	expect_size("64G", 64 * GiB);
	expect_size("65536K", 64 * MiB);
	expect_size("4096k", 4 * MiB);
	expect_size("67108864", 64 * MiB);
	expect_size("0064M", 64 * MiB);

	/* Syntax. */
	expect_size_error(NULL, -EINVAL);
	expect_size_error("", -EINVAL);
	expect_size_error("garbage", -EINVAL);
	expect_size_error("M", -EINVAL);
	expect_size_error("-64M", -EINVAL);
	expect_size_error("+64M", -EINVAL);
	expect_size_error(" 64M", -EINVAL);
	expect_size_error("64 M", -EINVAL);
	expect_size_error("64M ", -EINVAL);
	expect_size_error("64X", -EINVAL);
	expect_size_error("1T", -EINVAL);
	expect_size_error("64MM", -EINVAL);
	expect_size_error("64MiBx", -EINVAL);
	expect_size_error("0x4000000", -EINVAL);
	expect_size_error("64.5M", -EINVAL);

	/* Range and alignment. */
	expect_size_error("3M", -ERANGE);
	expect_size_error("2M", -ERANGE);
	expect_size_error("0", -ERANGE);
	expect_size_error("5M", -ERANGE);
	expect_size_error("4097K", -ERANGE);
	expect_size_error("67108865", -ERANGE);
	expect_size_error("65G", -ERANGE);
	expect_size_error("66G", -ERANGE);
	expect_size_error("1024G", -ERANGE);
	/* Overflow: of strtoull, and of the unit shift. */
	expect_size_error("99999999999999999999G", -ERANGE);
	expect_size_error("99999999999999999999", -ERANGE);
	expect_size_error("17179869184G", -ERANGE);	  /* 2^34 GiB = 2^64 bytes */
	expect_size_error("18014398509481984K", -ERANGE); /* 2^54 KiB = 2^64 bytes */
}

/* The VMM's own writes, marked for a pre-copy: page granular, taken once,
 * and nothing outside RAM. */
static void test_marks_written_pages(void)
{
	struct guest_memory mem;
	CU_ASSERT_EQUAL_FATAL(guest_memory_create(&mem, 4ull << 20, "mark-test"), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(mem.written);
	uint64_t pages = mem.size_bytes / 4096, words = (pages + 63) / 64;
	uint64_t *bitmap = calloc(words, sizeof(uint64_t));

	CU_ASSERT_EQUAL(guest_memory_take_written(&mem, bitmap), 0);
	/* Two bytes across a page boundary are two pages. */
	guest_memory_mark_written(&mem, 4095, 2);
	/* A range over a bitmap word boundary: pages 62 to 129. */
	guest_memory_mark_written(&mem, 62 * 4096 + 100, (129 - 62) * 4096);
	/* The last page, through the host pointer. */
	guest_memory_mark_written_host(&mem, mem.host_base + mem.size_bytes - 1, 1);
	/* Ignored: empty, past the end, overflowing, not guest RAM. */
	guest_memory_mark_written(&mem, 8192, 0);
	guest_memory_mark_written(&mem, mem.size_bytes, 1);
	guest_memory_mark_written(&mem, mem.size_bytes - 4096, 8192);
	guest_memory_mark_written(&mem, 4096, UINT64_MAX);
	uint8_t outside[16];
	guest_memory_mark_written_host(&mem, outside, sizeof(outside));
	guest_memory_mark_written_host(&mem, mem.host_base - 4096, 8192);

	CU_ASSERT_EQUAL(guest_memory_take_written(&mem, bitmap), 2 + 68 + 1);
	for (uint64_t p = 0; p < pages; p++) {
		bool expect = p <= 1 || (p >= 62 && p <= 129) || p == pages - 1;
		CU_ASSERT_EQUAL((bitmap[p / 64] >> (p % 64)) & 1, expect ? 1u : 0u);
	}
	/* Taken: the marks are gone, and the caller's bits are OR-ed into. */
	CU_ASSERT_EQUAL(guest_memory_take_written(&mem, bitmap), 0);
	CU_ASSERT_EQUAL(bitmap[0] & 3, 3);
	/* A clear is counted (a pre-copy cannot trust marks across it). */
	uint64_t clears = mem.clears;
	guest_memory_clear(&mem);
	CU_ASSERT_EQUAL(mem.clears, clears + 1);
	free(bitmap);
	guest_memory_destroy(&mem);
	CU_ASSERT_PTR_NULL(mem.written);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "translate bounds and overflow", test_translate_bounds },
		{ "create refuses bad sizes", test_create_refuses_bad_sizes },
		{ "parse memory sizes", test_parse_size },
		{ "marks the pages the VMM wrote", test_marks_written_pages },
	};
	return UNIT_RUN("guest memory", tests);
}
