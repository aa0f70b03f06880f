/* Example guest: drives the ATA PIO driver directly (write/verify patterns, read-only, errors, a small benchmark). */
#include "../lib/block_internal.h"
#include "kapsel_guest/arch.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

/*
 * Usage (guest command line):
 *   write SEED FIRST COUNT   write the pattern, flush, read it back
 *   verify SEED FIRST COUNT  read and check the pattern
 *   readonly                 a write must come back -EROFS, reads work
 *   errors                   out-of-range and unsupported commands
 *   none                     no ATA disk is offered: open says -ENODEV
 *   bench COUNT              COUNT one-sector reads, then one COUNT-sector read
 * The pattern of sector s is 64 little-endian words pattern_word(seed,
 * s * 64 + i); tests/integration/block_ata.sh computes the same.
 */

#define SECTOR_BYTES 512u
#define BUFFER_SECTORS 640u

static struct kg_block_device disk;
static uint8_t *buffer;

static uint64_t pattern_word(uint64_t seed, uint64_t index)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + index;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void fill_pattern(uint8_t *p, uint64_t seed, uint64_t sector, uint32_t sectors)
{
	uint64_t *words = (uint64_t *)p;
	for (uint64_t i = 0; i < (uint64_t)sectors * 64; i++)
		words[i] = pattern_word(seed, sector * 64 + i);
}

/* Index of the first wrong sector, or -1. */
static int64_t check_pattern(const uint8_t *p, uint64_t seed, uint64_t sector, uint32_t sectors)
{
	const uint64_t *words = (const uint64_t *)p;
	for (uint64_t i = 0; i < (uint64_t)sectors * 64; i++)
		if (words[i] != pattern_word(seed, sector * 64 + i))
			return (int64_t)(sector + i / 64);
	return -1;
}

/* One request through the driver ops, synchronously.  The data of
 * sectors is split over up to three uneven segments. */
static int run_request(enum kapsel_blk_op op, uint64_t sector, uint8_t *data, uint32_t sectors)
{
	struct kg_block_request request = { .op = op, .sector = sector };
	uint32_t left = sectors;
	while (left) {
		uint32_t n = left;
		if (request.segment_count < 2 && left > 2)
			n = left / 3 + 1;
		request.segments[request.segment_count].buffer = data;
		request.segments[request.segment_count].length_bytes = n * SECTOR_BYTES;
		request.segment_count++;
		data += n * SECTOR_BYTES;
		left -= n;
	}
	int err = disk.ops->submit(&disk, &request);
	if (err)
		return err;
	disk.ops->kick(&disk);
	struct kg_block_request *done;
	kg_assert(disk.ops->reap(&disk, &done, 1, true) == 1);
	kg_assert(done == &request);
	return request.status;
}

static int run_simple(enum kapsel_blk_op op, uint64_t sector, uint64_t sector_count)
{
	struct kg_block_request request = { .op = op,
					    .sector = sector,
					    .sector_count = sector_count };
	int err = disk.ops->submit(&disk, &request);
	if (err)
		return err;
	struct kg_block_request *done;
	kg_assert(disk.ops->reap(&disk, &done, 1, true) == 1);
	return request.status;
}

static const uint32_t chunk_sizes[] = { 1, 7, 8, 64, 259, 300, 3, 128, 512 };

static int do_write(uint64_t seed, uint64_t first, uint64_t count)
{
	uint64_t sector = first;
	for (unsigned k = 0; sector < first + count; k++) {
		uint32_t n = chunk_sizes[k % (sizeof(chunk_sizes) / sizeof(chunk_sizes[0]))];
		if (n > first + count - sector)
			n = (uint32_t)(first + count - sector);
		fill_pattern(buffer, seed, sector, n);
		int err = run_request(KAPSEL_BLK_OP_WRITE, sector, buffer, n);
		if (err) {
			kg_printf("atatest: write of %u sectors at %llu failed: %d\n", n,
				  (unsigned long long)sector, err);
			return 1;
		}
		sector += n;
	}
	int err = run_simple(KAPSEL_BLK_OP_FLUSH, 0, 0);
	if (err) {
		kg_printf("atatest: flush failed: %d\n", err);
		return 1;
	}
	kg_printf("atatest: wrote %llu sectors at %llu\n", (unsigned long long)count,
		  (unsigned long long)first);
	return 0;
}

static int do_verify(uint64_t seed, uint64_t first, uint64_t count)
{
	uint64_t sector = first;
	for (unsigned k = 3; sector < first + count; k++) {
		uint32_t n = chunk_sizes[k % (sizeof(chunk_sizes) / sizeof(chunk_sizes[0]))];
		if (n > first + count - sector)
			n = (uint32_t)(first + count - sector);
		memset(buffer, 0x5a, (size_t)n * SECTOR_BYTES);
		int err = run_request(KAPSEL_BLK_OP_READ, sector, buffer, n);
		if (err) {
			kg_printf("atatest: read of %u sectors at %llu failed: %d\n", n,
				  (unsigned long long)sector, err);
			return 1;
		}
		int64_t bad = check_pattern(buffer, seed, sector, n);
		if (bad >= 0) {
			kg_printf("atatest: sector %lld does not hold the pattern\n",
				  (long long)bad);
			return 1;
		}
		sector += n;
	}
	kg_printf("atatest: verified %llu sectors at %llu\n", (unsigned long long)count,
		  (unsigned long long)first);
	return 0;
}

static int do_readonly(void)
{
	kg_assert(disk.info.readonly);
	kg_assert(run_request(KAPSEL_BLK_OP_READ, 0, buffer, 1) == 0);
	memset(buffer, 0xee, SECTOR_BYTES);
	int err = run_request(KAPSEL_BLK_OP_WRITE, 0, buffer, 1);
	kg_printf("atatest: write to read-only disk -> %d\n", err);
	kg_assert(err == -KAPSEL_EROFS);
	/* The failed command left the device usable. */
	kg_assert(run_request(KAPSEL_BLK_OP_READ, 1, buffer, 2) == 0);
	kg_printf("atatest: readonly ok\n");
	return 0;
}

/* Raw register access for what the driver never does on purpose. */
static uint8_t raw_command(const struct kapsel_device_desc *desc, uint8_t command, uint64_t lba,
			   uint8_t *error)
{
	uint16_t base = desc->io_base;
	kg_outb((uint16_t)(base + 6), 0x40);
	kg_outb((uint16_t)(base + 2), 0);
	kg_outb((uint16_t)(base + 3), (uint8_t)(lba >> 24));
	kg_outb((uint16_t)(base + 4), (uint8_t)(lba >> 32));
	kg_outb((uint16_t)(base + 5), (uint8_t)(lba >> 40));
	kg_outb((uint16_t)(base + 2), 1);
	kg_outb((uint16_t)(base + 3), (uint8_t)lba);
	kg_outb((uint16_t)(base + 4), (uint8_t)(lba >> 8));
	kg_outb((uint16_t)(base + 5), (uint8_t)(lba >> 16));
	kg_outb((uint16_t)(base + 7), command);
	uint8_t status;
	while ((status = kg_inb((uint16_t)(base + 7))) & 0x80)
		kg_cpu_relax();
	*error = kg_inb((uint16_t)(base + 1));
	return status;
}

static int do_errors(const struct kapsel_device_desc *desc)
{
	uint64_t capacity = disk.info.capacity_sectors;
	/* The driver refuses what lies past the end. */
	int err = run_request(KAPSEL_BLK_OP_READ, capacity - 1, buffer, 2);
	kg_printf("atatest: read across the end -> %d\n", err);
	kg_assert(err == -KAPSEL_ERANGE);
	/* The device refuses it too: READ SECTORS EXT at the capacity. */
	uint8_t error;
	uint8_t status = raw_command(desc, 0x24, capacity, &error);
	kg_printf("atatest: device read at capacity -> status 0x%x error 0x%x\n", status, error);
	kg_assert((status & 0x01) && (error & 0x10));
	/* An unsupported command (NOP, then READ DMA) aborts. */
	status = raw_command(desc, 0x00, 0, &error);
	kg_assert((status & 0x01) && error == 0x04);
	status = raw_command(desc, 0xc8, 0, &error);
	kg_printf("atatest: READ DMA -> status 0x%x error 0x%x\n", status, error);
	kg_assert(status == 0x51 && error == 0x04);
	/* Drive 1 is absent: its status reads 0. */
	kg_outb((uint16_t)(desc->io_base + 6), 0xb0);
	status = kg_inb((uint16_t)(desc->io_base + 7));
	kg_printf("atatest: drive 1 status 0x%x\n", status);
	kg_assert(status == 0);
	/* Drive 0 again, and the driver still works (it re-selects). */
	kg_outb((uint16_t)(desc->io_base + 6), 0xa0);
	struct kg_block_device again;
	kg_assert(kg_blk_ata_open(desc, &again) == 0);
	disk = again;
	kg_assert(run_request(KAPSEL_BLK_OP_READ, capacity - 1, buffer, 1) == 0);
	kg_printf("atatest: errors ok\n");
	return 0;
}

static int do_bench(uint64_t count)
{
	if (count > BUFFER_SECTORS)
		count = BUFFER_SECTORS;
	uint64_t start = kg_time_now_ns();
	for (uint64_t s = 0; s < count; s++)
		kg_assert(run_request(KAPSEL_BLK_OP_READ, s, buffer, 1) == 0);
	uint64_t single_ns = kg_time_now_ns() - start;
	start = kg_time_now_ns();
	kg_assert(run_request(KAPSEL_BLK_OP_READ, 0, buffer, (uint32_t)count) == 0);
	uint64_t bulk_ns = kg_time_now_ns() - start;
	kg_printf("atatest: %llu one-sector reads: %llu us each; one %llu-sector read: %llu us (%llu us/sector)\n",
		  (unsigned long long)count, (unsigned long long)(single_ns / count / 1000),
		  (unsigned long long)count, (unsigned long long)(bulk_ns / 1000),
		  (unsigned long long)(bulk_ns / count / 1000));
	kg_printf("atatest: read %llu sectors\n", (unsigned long long)(2 * count));
	return 0;
}

static uint64_t arg_u64(int argc, char **argv, int i)
{
	uint64_t value = 0;
	if (i >= argc || kg_parse_u64(argv[i], &value) != 0)
		kg_panic("atatest: argument %d missing or not a number", i);
	return value;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "write";
	const struct kapsel_device_desc *desc = kg_platform_find_device(KAPSEL_DEV_ATA_DISK, 0);

	int err = kg_blk_ata_open(desc, &disk);
	if (strcmp(mode, "none") == 0) {
		kg_printf("atatest: no ATA disk: open -> %d\n", err);
		return err == -KAPSEL_ENODEV ? 0 : 1;
	}
	if (err) {
		kg_printf("atatest: cannot open the ATA disk: %d\n", err);
		return 1;
	}
	kg_printf("atatest: %llu sectors, %s\n", (unsigned long long)disk.info.capacity_sectors,
		  disk.info.readonly ? "read-only" : "read-write");
	buffer = kg_os_alloc_pages(BUFFER_SECTORS * SECTOR_BYTES / 4096);
	kg_assert(buffer);

	if (strcmp(mode, "write") == 0)
		return do_write(arg_u64(argc, argv, 2), arg_u64(argc, argv, 3),
				arg_u64(argc, argv, 4)) ||
		       do_verify(arg_u64(argc, argv, 2), arg_u64(argc, argv, 3),
				 arg_u64(argc, argv, 4));
	if (strcmp(mode, "verify") == 0)
		return do_verify(arg_u64(argc, argv, 2), arg_u64(argc, argv, 3),
				 arg_u64(argc, argv, 4));
	if (strcmp(mode, "readonly") == 0)
		return do_readonly();
	if (strcmp(mode, "errors") == 0)
		return do_errors(desc);
	if (strcmp(mode, "bench") == 0)
		return do_bench(arg_u64(argc, argv, 2));
	kg_printf("atatest: unknown mode '%s'\n", mode);
	return 2;
}
