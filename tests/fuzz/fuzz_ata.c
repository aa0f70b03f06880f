/* Fuzz target: arbitrary port reads and writes (and restored states) driving the emulated ATA disk's state machine (ata.c) on small temporary images. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devices/block/ata.h"
#include "fuzz_common.h"
#include "core/log.h"

/*
 * Input:
 *   byte 0   flags: 1 read-only disk, 2 rate limits, 4 start from a
 *            restored state (fields below), 8 write cache off
 *   [2 bytes: ops rate, burst]            with flag 2
 *   [restored fields, then buffer bytes]  with flag 4
 *   ops      see run_op, to the end
 * After every operation the state must still pass ata_state_check (what a
 * snapshot taken then would have to restore), and the image never grows.
 */

#define IMAGE_SECTORS 300u
#define IMAGE_BYTES (IMAGE_SECTORS * 512u + 100u) /* a partial sector at the end */
#define MAX_STRING_BYTES 70000u

static struct disk_image disks[2]; /* read-write, read-only */
static char paths[2][256];
static uint64_t fake_now_ns;

static uint64_t fake_clock(void *context)
{
	(void)context;
	return fake_now_ns;
}

static void cleanup(void)
{
	for (int i = 0; i < 2; i++) {
		disk_image_close(&disks[i]);
		unlink(paths[i]);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	kapsel_log_set_quiet(true);
	const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm"
			  : getenv("TMPDIR")		? getenv("TMPDIR")
							: "/tmp";
	for (int i = 0; i < 2; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/kapsel-fuzz-ata-XXXXXX", dir);
		int fd = mkstemp(paths[i]);
		FUZZ_CHECK(fd >= 0);
		uint8_t sector[512];
		for (unsigned s = 0; s < IMAGE_SECTORS; s++) {
			memset(sector, (int)(s * 7 + 1), sizeof(sector));
			FUZZ_CHECK(pwrite(fd, sector, sizeof(sector), (off_t)s * 512) == 512);
		}
		FUZZ_CHECK(ftruncate(fd, IMAGE_BYTES) == 0);
		close(fd);
		struct vm_disk_config config = { .path = paths[i], .readonly = i == 1 };
		char error[512];
		FUZZ_CHECK(disk_image_open(&disks[i], &config, 0, error, sizeof(error)) == 0);
	}
	atexit(cleanup);
	return 0;
}

/* A restored state, field by field as dev_ata.c's load copies a record;
 * taken only if ata_state_check accepts it. */
static void restore(struct ata_state *ata, struct fuzz_input *in)
{
	struct ata_state c = *ata;
	uint8_t bytes[16];
	fuzz_bytes(in, bytes, sizeof(bytes));
	c.feature = bytes[0];
	c.count = bytes[1];
	c.count_hob = bytes[2];
	c.lba_low = bytes[3];
	c.lba_mid = bytes[4];
	c.lba_high = bytes[5];
	c.device = bytes[6];
	c.status = bytes[7];
	c.error = bytes[8];
	c.control = bytes[9];
	c.multiple_sectors = bytes[10];
	c.command = bytes[11];
	c.transfer = (enum ata_transfer)(bytes[12] % 4);
	c.op = (enum kapsel_blk_op)(bytes[13] % 8);
	c.disk_op_open = bytes[14] & 1;
	c.held_by_rate_limit = bytes[14] & 2;
	c.write_cache = bytes[14] & 4;
	/* Small numbers most of the time, anything sometimes. */
	bool wide = bytes[15] & 1;
	c.held_until_ns = fuzz_u32(in);
	c.command_lba = wide ? fuzz_u64(in) : fuzz_u16(in) % 512;
	c.command_sectors = wide ? fuzz_u64(in) : fuzz_u16(in) % 512;
	c.sectors_left = wide ? fuzz_u64(in) : fuzz_u16(in) % 512;
	c.block_sectors = wide ? fuzz_u32(in) : fuzz_u8(in);
	c.block_bytes_left = wide ? fuzz_u32(in) : fuzz_u16(in);
	c.buffer_lba = wide ? fuzz_u64(in) : fuzz_u16(in) % 512;
	c.buffer_bytes = wide ? fuzz_u32(in) : fuzz_u32(in) % 70000;
	c.buffer_pos = wide ? fuzz_u32(in) : fuzz_u32(in) % 70000;
	c.block_start_pos = wide ? fuzz_u32(in) : fuzz_u32(in) % 70000;
	if (ata_state_check(&c) != NULL)
		return;
	*ata = c;
	fuzz_bytes(in, ata->buffer, fuzz_u16(in) % 2048);
}

static void check_state(const struct ata_state *ata)
{
	const char *bad = ata_state_check(ata);
	if (bad)
		fprintf(stderr, "state the registers reached fails the restore check: %s\n", bad);
	FUZZ_CHECK(bad == NULL);
}

static const uint8_t interesting_commands[] = {
	ATA_CMD_READ_SECTORS,	   ATA_CMD_READ_SECTORS_EXT,   ATA_CMD_READ_MULTIPLE,
	ATA_CMD_READ_MULTIPLE_EXT, ATA_CMD_WRITE_SECTORS,      ATA_CMD_WRITE_SECTORS_EXT,
	ATA_CMD_WRITE_MULTIPLE,	   ATA_CMD_WRITE_MULTIPLE_EXT, ATA_CMD_READ_VERIFY,
	ATA_CMD_READ_VERIFY_EXT,   ATA_CMD_SET_MULTIPLE_MODE,  ATA_CMD_FLUSH_CACHE,
	ATA_CMD_IDENTIFY_DEVICE,   ATA_CMD_SET_FEATURES,       ATA_CMD_EXECUTE_DIAGNOSTIC,
	ATA_CMD_CHECK_POWER_MODE,
};

static void run_op(struct ata_state *ata, struct fuzz_input *in)
{
	uint8_t op = fuzz_u8(in);
	unsigned sizes[3] = { 1, 2, 4 };
	switch (op % 8) {
	case 0: {
		uint8_t reg = fuzz_u8(in);
		ata_io_write(ata, reg % ATA_REG_COUNT_ALL, sizes[(reg >> 4) % 3], fuzz_u32(in));
		break;
	}
	case 1: {
		uint8_t reg = fuzz_u8(in);
		(void)ata_io_read(ata, reg % ATA_REG_COUNT_ALL, sizes[(reg >> 4) % 3]);
		break;
	}
	case 2: /* rep insw/insl of any length into an exact-size buffer */
	case 3: {
		size_t length = (size_t)fuzz_u16(in) % MAX_STRING_BYTES + (op & 8 ? 65536 : 0);
		if (length > MAX_STRING_BYTES)
			length = MAX_STRING_BYTES;
		uint8_t *buffer = malloc(length ? length : 1);
		if (op % 8 == 2) {
			ata_data_read(ata, buffer, length);
		} else {
			memset(buffer, op, length);
			ata_data_write(ata, buffer, length);
		}
		free(buffer);
		break;
	}
	case 4: /* time passes */
		fake_now_ns += (uint64_t)fuzz_u16(in) * 1000000u;
		break;
	case 5: { /* a whole command: registers, then the command byte */
		uint8_t shape = fuzz_u8(in);
		if (shape & 1) { /* LBA48: high bytes first */
			ata_io_write(ata, ATA_REG_COUNT, 1, fuzz_u8(in));
			ata_io_write(ata, ATA_REG_LBA_LOW, 1, fuzz_u8(in));
		}
		ata_io_write(ata, ATA_REG_DEVICE, 1,
			     (shape & 2 ? 0x40u : 0) | (fuzz_u8(in) & 0x1f));
		ata_io_write(ata, ATA_REG_COUNT, 1, fuzz_u8(in));
		ata_io_write(ata, ATA_REG_LBA_LOW, 1, fuzz_u8(in));
		ata_io_write(ata, ATA_REG_LBA_MID, 1, shape & 4 ? fuzz_u8(in) : 0);
		ata_io_write(ata, ATA_REG_LBA_HIGH, 1, 0);
		ata_io_write(ata, ATA_REG_ERROR_FEATURE, 1, fuzz_u8(in));
		ata_io_write(ata, ATA_REG_STATUS_COMMAND, 1,
			     interesting_commands[(shape >> 3) % sizeof(interesting_commands)]);
		break;
	}
	case 6: /* software reset pulse */
		ata_io_write(ata, ATA_REG_CONTROL, 1, ATA_CONTROL_SRST);
		ata_io_write(ata, ATA_REG_CONTROL, 1, 0);
		break;
	case 7: { /* a word-by-word loop, as a guest driver without rep does */
		unsigned words = fuzz_u8(in);
		for (unsigned i = 0; i < words; i++)
			(void)ata_io_read(ata, ATA_REG_DATA, 2);
		break;
	}
	}
	check_state(ata);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { data, size, 0 };
	uint8_t flags = fuzz_u8(&in);
	struct disk_image *disk = &disks[flags & 1];
	struct vm_rate_limit ops = { 0, 0 }, none = { 0, 0 };
	if (flags & 2) {
		ops.rate_per_second = 1 + fuzz_u8(&in);
		ops.burst = fuzz_u8(&in);
	}
	fake_now_ns = 1000;
	disk_set_limits(disk, &ops, &none, fake_now_ns);

	struct ata_state ata;
	FUZZ_CHECK(ata_init(&ata, disk, fake_clock, NULL, 42) == 0);
	if (flags & 8)
		ata.write_cache = false;
	check_state(&ata);
	if (flags & 4)
		restore(&ata, &in);
	while (fuzz_left(&in))
		run_op(&ata, &in);
	ata_destroy(&ata);

	/* Nothing was written past the end of the image. */
	struct stat st;
	FUZZ_CHECK(fstat(disk->fd, &st) == 0 && st.st_size == IMAGE_BYTES);
	return 0;
}
