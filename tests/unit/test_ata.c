/* Unit tests of the emulated ATA disk's register state machine (ata.c), driven register by register without KVM. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devices/block/ata.h"
#include "cunit_main.h"

#define SECTOR 512u

static char image_path[256];
static struct disk_image disk;
static struct ata_state ata;
static uint64_t fake_now_ns;

static uint64_t fake_clock(void *context)
{
	(void)context;
	return fake_now_ns;
}

/* Test-side pattern: byte i of sector s (independent of the code under test). */
static uint8_t pattern_byte(uint64_t sector, unsigned i, unsigned salt)
{
	return (uint8_t)((sector * 131u) ^ (i * 7u) ^ (i >> 8) ^ salt);
}

static void pattern_sector(uint8_t *out, uint64_t sector, unsigned salt)
{
	for (unsigned i = 0; i < SECTOR; i++)
		out[i] = pattern_byte(sector, i, salt);
}

static int image_fd(void)
{
	return disk.fd;
}

static void file_write_pattern(uint64_t sector, unsigned count, unsigned salt)
{
	uint8_t buf[SECTOR];
	for (unsigned k = 0; k < count; k++) {
		pattern_sector(buf, sector + k, salt);
		CU_ASSERT_FATAL(pwrite(image_fd(), buf, SECTOR, (off_t)((sector + k) * SECTOR)) ==
				SECTOR);
	}
}

/* True when the image holds the pattern (salt) in [sector, sector + count). */
static bool file_has_pattern(uint64_t sector, unsigned count, unsigned salt)
{
	uint8_t buf[SECTOR], want[SECTOR];
	int fd = open(image_path, O_RDONLY);
	bool ok = fd >= 0;
	for (unsigned k = 0; ok && k < count; k++) {
		pattern_sector(want, sector + k, salt);
		ok = pread(fd, buf, SECTOR, (off_t)((sector + k) * SECTOR)) == SECTOR &&
		     memcmp(buf, want, SECTOR) == 0;
	}
	if (fd >= 0)
		close(fd);
	return ok;
}

/* A fresh image of size_bytes (sparse) and a controller on it. */
static void setup_limited(uint64_t size_bytes, bool readonly, const struct vm_rate_limit *ops)
{
	char error[512];
	snprintf(image_path, sizeof(image_path), "%s/kapsel-ata-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	int fd = mkstemp(image_path);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_FATAL(ftruncate(fd, (off_t)size_bytes) == 0);
	close(fd);
	struct vm_disk_config config = { .path = image_path, .readonly = readonly };
	if (ops)
		config.ops_limit = *ops;
	fake_now_ns = 1000;
	CU_ASSERT_FATAL(disk_image_open(&disk, &config, fake_now_ns, error, sizeof(error)) == 0);
	CU_ASSERT_FATAL(ata_init(&ata, &disk, fake_clock, NULL, 0x1234) == 0);
}

static void setup(uint64_t size_bytes, bool readonly)
{
	setup_limited(size_bytes, readonly, NULL);
}

static void teardown(void)
{
	ata_destroy(&ata);
	disk_image_close(&disk);
	unlink(image_path);
}

static void outb(unsigned reg, uint8_t value)
{
	ata_io_write(&ata, reg, 1, value);
}

static uint8_t inb(unsigned reg)
{
	return (uint8_t)ata_io_read(&ata, reg, 1);
}

static uint8_t status(void)
{
	return inb(ATA_REG_STATUS_COMMAND);
}

static void issue_lba28(uint8_t command, uint32_t lba, uint8_t count)
{
	outb(ATA_REG_DEVICE, (uint8_t)(0xe0 | ((lba >> 24) & 0x0f)));
	outb(ATA_REG_COUNT, count);
	outb(ATA_REG_LBA_LOW, (uint8_t)lba);
	outb(ATA_REG_LBA_MID, (uint8_t)(lba >> 8));
	outb(ATA_REG_LBA_HIGH, (uint8_t)(lba >> 16));
	outb(ATA_REG_STATUS_COMMAND, command);
}

static void issue_lba48(uint8_t command, uint64_t lba, uint16_t count)
{
	outb(ATA_REG_DEVICE, 0x40);
	outb(ATA_REG_COUNT, (uint8_t)(count >> 8));
	outb(ATA_REG_LBA_LOW, (uint8_t)(lba >> 24));
	outb(ATA_REG_LBA_MID, (uint8_t)(lba >> 32));
	outb(ATA_REG_LBA_HIGH, (uint8_t)(lba >> 40));
	outb(ATA_REG_COUNT, (uint8_t)count);
	outb(ATA_REG_LBA_LOW, (uint8_t)lba);
	outb(ATA_REG_LBA_MID, (uint8_t)(lba >> 8));
	outb(ATA_REG_LBA_HIGH, (uint8_t)(lba >> 16));
	outb(ATA_REG_STATUS_COMMAND, command);
}

/* Read one sector through the data register with 16-bit accesses. */
static void read_sector_words(uint8_t *out)
{
	for (unsigned i = 0; i < SECTOR / 2; i++) {
		uint16_t w = (uint16_t)ata_io_read(&ata, ATA_REG_DATA, 2);
		out[2 * i] = (uint8_t)w;
		out[2 * i + 1] = (uint8_t)(w >> 8);
	}
}

static void identify(uint16_t words[256])
{
	outb(ATA_REG_DEVICE, 0xa0);
	outb(ATA_REG_STATUS_COMMAND, ATA_CMD_IDENTIFY_DEVICE);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC | ATA_STATUS_DRQ);
	for (unsigned i = 0; i < 256; i++) {
		CU_ASSERT(status() & ATA_STATUS_DRQ);
		words[i] = (uint16_t)ata_io_read(&ata, ATA_REG_DATA, 2);
	}
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC);
}

/* The ATA string in words [first, first + chars / 2), trailing spaces cut. */
static void identify_string(const uint16_t *words, unsigned first, unsigned chars, char *out)
{
	for (unsigned i = 0; i < chars / 2; i++) {
		out[2 * i] = (char)(words[first + i] >> 8);
		out[2 * i + 1] = (char)(words[first + i] & 0xff);
	}
	out[chars] = '\0';
	for (int i = (int)chars - 1; i >= 0 && out[i] == ' '; i--)
		out[i] = '\0';
}

static bool checksum_valid(const uint16_t *words)
{
	unsigned sum = 0;
	for (unsigned i = 0; i < 256; i++)
		sum += (words[i] & 0xff) + (words[i] >> 8);
	return (words[255] & 0xff) == 0xa5 && (sum & 0xff) == 0;
}

static void test_identify_small(void)
{
	/* 5000 sectors and a partial one: the partial sector does not count. */
	setup(5000 * SECTOR + 100, false);
	struct stat st;
	CU_ASSERT_FATAL(stat(image_path, &st) == 0);
	uint64_t expected = (uint64_t)st.st_size / SECTOR;
	uint16_t w[256];
	identify(w);
	CU_ASSERT_EQUAL(w[0] & 0x8000, 0); /* ATA device */
	CU_ASSERT_EQUAL((uint64_t)w[60] | (uint64_t)w[61] << 16, expected);
	CU_ASSERT_EQUAL((uint64_t)w[100] | (uint64_t)w[101] << 16 | (uint64_t)w[102] << 32 |
				(uint64_t)w[103] << 48,
			expected);
	CU_ASSERT(checksum_valid(w));
	char text[41];
	identify_string(w, 27, 40, text);
	CU_ASSERT_STRING_EQUAL(text, "KAPSEL EMULATED ATA DISK");
	identify_string(w, 23, 8, text);
	CU_ASSERT_STRING_EQUAL(text, "KAPSEL1");
	identify_string(w, 10, 20, text);
	CU_ASSERT_STRING_EQUAL(text, "KAPSEL-00001234");
	CU_ASSERT(w[49] & (1u << 9));		 /* LBA */
	CU_ASSERT_EQUAL(w[83] & 0xc000, 0x4000); /* word valid */
	CU_ASSERT(w[83] & (1u << 10));		 /* LBA48 supported */
	CU_ASSERT(w[83] & (1u << 13));		 /* FLUSH CACHE EXT */
	CU_ASSERT(w[86] & (1u << 10));		 /* LBA48 enabled */
	CU_ASSERT(w[86] & (1u << 13));
	CU_ASSERT_EQUAL(w[47] & 0xff00, 0x8000);
	CU_ASSERT((w[47] & 0xff) >= 2);
	CU_ASSERT_EQUAL(w[59] & 0x01ff, 0); /* multiple mode off */
	CU_ASSERT_EQUAL(w[106] & 0xc000, 0x4000);
	CU_ASSERT(w[80] & (1u << 6)); /* ATA/ATAPI-6 (LBA48) */
	/* Legacy CHS: C*H*S never exceeds the capacity. */
	CU_ASSERT((uint64_t)w[1] * w[3] * w[6] <= expected);
	CU_ASSERT(w[3] >= 1 && w[3] <= 16 && w[6] >= 1 && w[6] <= 63);
	teardown();
}

static void test_identify_large_caps_lba28(void)
{
	/* 2^28 + 4096 sectors, sparse: words 60-61 saturate, 100-103 do not. */
	uint64_t sectors = (1ull << 28) + 4096;
	setup(sectors * SECTOR, false);
	uint16_t w[256];
	identify(w);
	CU_ASSERT_EQUAL((uint64_t)w[60] | (uint64_t)w[61] << 16, 0x0fffffffull);
	CU_ASSERT_EQUAL((uint64_t)w[100] | (uint64_t)w[101] << 16 | (uint64_t)w[102] << 32,
			sectors);
	CU_ASSERT(checksum_valid(w));
	teardown();
}

static void test_lba28_read(void)
{
	setup(64 * SECTOR, false);
	file_write_pattern(10, 3, 1);
	issue_lba28(ATA_CMD_READ_SECTORS, 10, 3);
	uint8_t got[SECTOR], want[SECTOR];
	/* Sector 10 with 16-bit reads, 11 with 32-bit reads, 12 in one go. */
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC | ATA_STATUS_DRQ);
	read_sector_words(got);
	pattern_sector(want, 10, 1);
	CU_ASSERT_EQUAL(memcmp(got, want, SECTOR), 0);
	CU_ASSERT(status() & ATA_STATUS_DRQ);
	for (unsigned i = 0; i < SECTOR / 4; i++) {
		uint32_t v = ata_io_read(&ata, ATA_REG_DATA, 4);
		memcpy(got + 4 * i, &v, 4);
	}
	pattern_sector(want, 11, 1);
	CU_ASSERT_EQUAL(memcmp(got, want, SECTOR), 0);
	CU_ASSERT(status() & ATA_STATUS_DRQ);
	ata_data_read(&ata, got, SECTOR);
	pattern_sector(want, 12, 1);
	CU_ASSERT_EQUAL(memcmp(got, want, SECTOR), 0);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC);
	/* More reads of the data register get no data. */
	CU_ASSERT_EQUAL(ata_io_read(&ata, ATA_REG_DATA, 2), 0xffff);
	CU_ASSERT_EQUAL(disk.stats.ops[KAPSEL_BLK_OP_READ], 1);
	CU_ASSERT_EQUAL(disk.stats.bytes[KAPSEL_BLK_OP_READ], 3 * SECTOR);
	teardown();
}

static void test_lba28_write_status_transitions(void)
{
	setup(64 * SECTOR, false);
	issue_lba28(ATA_CMD_WRITE_SECTORS, 5, 2);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC | ATA_STATUS_DRQ);
	uint8_t buf[SECTOR];
	pattern_sector(buf, 5, 2);
	/* DRQ stays set up to the last word of the last sector. */
	for (unsigned i = 0; i < SECTOR / 2; i++) {
		CU_ASSERT(status() & ATA_STATUS_DRQ);
		ata_io_write(&ata, ATA_REG_DATA, 2,
			     (uint32_t)buf[2 * i] | (uint32_t)buf[2 * i + 1] << 8);
	}
	CU_ASSERT(status() & ATA_STATUS_DRQ);
	pattern_sector(buf, 6, 2);
	ata_data_write(&ata, buf, SECTOR - 2);
	CU_ASSERT(status() & ATA_STATUS_DRQ);
	CU_ASSERT_FALSE(file_has_pattern(5, 2, 2)); /* not all there yet */
	ata_data_write(&ata, buf + SECTOR - 2, 2);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC);
	CU_ASSERT(file_has_pattern(5, 2, 2));
	CU_ASSERT_EQUAL(disk.stats.ops[KAPSEL_BLK_OP_WRITE], 1);
	teardown();
}

static void test_lba48_hob_registers(void)
{
	setup(64 * SECTOR, false);
	outb(ATA_REG_COUNT, 0x12);
	outb(ATA_REG_COUNT, 0x34);
	outb(ATA_REG_LBA_LOW, 0x56);
	outb(ATA_REG_LBA_LOW, 0x78);
	CU_ASSERT_EQUAL(inb(ATA_REG_COUNT), 0x34);
	CU_ASSERT_EQUAL(inb(ATA_REG_LBA_LOW), 0x78);
	outb(ATA_REG_CONTROL, ATA_CONTROL_HOB | ATA_CONTROL_NIEN);
	CU_ASSERT_EQUAL(inb(ATA_REG_COUNT), 0x12);
	CU_ASSERT_EQUAL(inb(ATA_REG_LBA_LOW), 0x56);
	/* A write to a command block register clears HOB. */
	outb(ATA_REG_LBA_MID, 0x9a);
	CU_ASSERT_EQUAL(inb(ATA_REG_COUNT), 0x34);
	CU_ASSERT_EQUAL(inb(ATA_REG_LBA_MID), 0x9a);
	teardown();
}

static void test_lba48_read_write(void)
{
	/* Past the LBA28 limit, so the high (HOB) bytes matter. */
	uint64_t lba = (1ull << 28) + 5;
	setup(((1ull << 28) + 64) * SECTOR, false);
	issue_lba48(ATA_CMD_WRITE_SECTORS_EXT, lba, 3);
	uint8_t buf[3 * SECTOR];
	for (unsigned k = 0; k < 3; k++)
		pattern_sector(buf + k * SECTOR, lba + k, 3);
	CU_ASSERT(status() & ATA_STATUS_DRQ);
	ata_data_write(&ata, buf, sizeof(buf)); /* one "rep outsw" over 3 blocks */
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC);
	CU_ASSERT(file_has_pattern(lba, 3, 3));
	/* The same low bytes without the high ones would be sector 5. */
	CU_ASSERT_FALSE(file_has_pattern(5, 1, 3));

	file_write_pattern(lba + 10, 2, 4);
	issue_lba48(ATA_CMD_READ_SECTORS_EXT, lba + 10, 2);
	uint8_t got[2 * SECTOR], want[2 * SECTOR];
	ata_data_read(&ata, got, sizeof(got));
	pattern_sector(want, lba + 10, 4);
	pattern_sector(want + SECTOR, lba + 11, 4);
	CU_ASSERT_EQUAL(memcmp(got, want, sizeof(got)), 0);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC);
	teardown();
}

/* Count sectors a read moves until DRQ drops (at most limit). */
static unsigned sectors_until_done(unsigned limit)
{
	uint8_t buf[SECTOR];
	unsigned n = 0;
	while (n < limit && (status() & ATA_STATUS_DRQ)) {
		ata_data_read(&ata, buf, SECTOR);
		n++;
	}
	return n;
}

static void test_count_zero(void)
{
	setup(70000ull * SECTOR, false);
	issue_lba28(ATA_CMD_READ_SECTORS, 0, 0);
	CU_ASSERT_EQUAL(sectors_until_done(100000), 256);
	issue_lba48(ATA_CMD_READ_SECTORS_EXT, 0, 0);
	CU_ASSERT_EQUAL(sectors_until_done(100000), 65536);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC);
	teardown();
}

static void test_multiple(void)
{
	setup(64 * SECTOR, false);
	/* Without SET MULTIPLE MODE, READ MULTIPLE aborts. */
	issue_lba28(ATA_CMD_READ_MULTIPLE, 0, 4);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC | ATA_STATUS_ERR);
	CU_ASSERT_EQUAL(inb(ATA_REG_ERROR_FEATURE), ATA_ERROR_ABRT);
	/* 3 is no power of two. */
	outb(ATA_REG_COUNT, 3);
	outb(ATA_REG_STATUS_COMMAND, ATA_CMD_SET_MULTIPLE_MODE);
	CU_ASSERT(status() & ATA_STATUS_ERR);
	outb(ATA_REG_COUNT, 4);
	outb(ATA_REG_STATUS_COMMAND, ATA_CMD_SET_MULTIPLE_MODE);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC);
	uint16_t w[256];
	identify(w);
	CU_ASSERT_EQUAL(w[59], 0x0104);

	/* WRITE MULTIPLE of 10 sectors: blocks of 4, 4, 2. */
	uint8_t buf[10 * SECTOR];
	for (unsigned k = 0; k < 10; k++)
		pattern_sector(buf + k * SECTOR, 20 + k, 5);
	issue_lba28(ATA_CMD_WRITE_MULTIPLE, 20, 10);
	ata_data_write(&ata, buf, 4 * SECTOR - 2);
	CU_ASSERT(status() & ATA_STATUS_DRQ);
	ata_data_write(&ata, buf + 4 * SECTOR - 2, 2);
	CU_ASSERT(status() & ATA_STATUS_DRQ); /* second block */
	ata_data_write(&ata, buf + 4 * SECTOR, 6 * SECTOR);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC);
	CU_ASSERT(file_has_pattern(20, 10, 5));

	/* READ MULTIPLE EXT of 6 sectors back. */
	issue_lba48(ATA_CMD_READ_MULTIPLE_EXT, 22, 6);
	uint8_t got[6 * SECTOR];
	ata_data_read(&ata, got, sizeof(got));
	CU_ASSERT_EQUAL(memcmp(got, buf + 2 * SECTOR, sizeof(got)), 0);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC);

	/* 0 turns it off again. */
	outb(ATA_REG_COUNT, 0);
	outb(ATA_REG_STATUS_COMMAND, ATA_CMD_SET_MULTIPLE_MODE);
	issue_lba28(ATA_CMD_WRITE_MULTIPLE, 0, 1);
	CU_ASSERT(status() & ATA_STATUS_ERR);
	teardown();
}

static void test_unsupported_command(void)
{
	setup(64 * SECTOR, false);
	static const uint8_t commands[] = { 0x00, 0xc8, 0xca, 0xa0, 0xff, 0x25 };
	for (unsigned i = 0; i < sizeof(commands); i++) {
		issue_lba28(commands[i], 0, 1);
		CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC | ATA_STATUS_ERR);
		CU_ASSERT_EQUAL(inb(ATA_REG_ERROR_FEATURE), ATA_ERROR_ABRT);
	}
	/* The next good command clears ERR. */
	outb(ATA_REG_STATUS_COMMAND, ATA_CMD_FLUSH_CACHE_EXT);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC);
	CU_ASSERT_EQUAL(inb(ATA_REG_ERROR_FEATURE), 0);
	/* SET FEATURES: write cache off/on work, a DMA mode does not. */
	outb(ATA_REG_ERROR_FEATURE, ATA_FEATURE_DISABLE_WRITE_CACHE);
	outb(ATA_REG_STATUS_COMMAND, ATA_CMD_SET_FEATURES);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC);
	uint16_t w[256];
	identify(w);
	CU_ASSERT_EQUAL(w[85] & 0x0020, 0);
	outb(ATA_REG_ERROR_FEATURE, ATA_FEATURE_SET_TRANSFER_MODE);
	outb(ATA_REG_COUNT, 0x42); /* UDMA 2 */
	outb(ATA_REG_STATUS_COMMAND, ATA_CMD_SET_FEATURES);
	CU_ASSERT(status() & ATA_STATUS_ERR);
	teardown();
}

static void test_out_of_range(void)
{
	setup(100 * SECTOR, false);
	issue_lba28(ATA_CMD_READ_SECTORS, 99, 2);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC | ATA_STATUS_ERR);
	CU_ASSERT_EQUAL(inb(ATA_REG_ERROR_FEATURE), ATA_ERROR_IDNF);
	issue_lba48(ATA_CMD_WRITE_SECTORS_EXT, 0xbc9a78563412ull, 1);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC | ATA_STATUS_ERR);
	CU_ASSERT_EQUAL(inb(ATA_REG_ERROR_FEATURE), ATA_ERROR_IDNF);
	/* The LBA registers report the sector that failed: all six bytes. */
	CU_ASSERT_EQUAL(inb(ATA_REG_LBA_LOW), 0x12);
	CU_ASSERT_EQUAL(inb(ATA_REG_LBA_MID), 0x34);
	CU_ASSERT_EQUAL(inb(ATA_REG_LBA_HIGH), 0x56);
	outb(ATA_REG_CONTROL, ATA_CONTROL_HOB);
	CU_ASSERT_EQUAL(inb(ATA_REG_LBA_LOW), 0x78);
	CU_ASSERT_EQUAL(inb(ATA_REG_LBA_MID), 0x9a);
	CU_ASSERT_EQUAL(inb(ATA_REG_LBA_HIGH), 0xbc);
	outb(ATA_REG_CONTROL, 0);
	/* The last sector itself is fine. */
	issue_lba28(ATA_CMD_READ_SECTORS, 99, 1);
	CU_ASSERT_EQUAL(sectors_until_done(10), 1);
	CU_ASSERT_EQUAL(disk.stats.denied_bounds, 2);
	teardown();
}

static void test_readonly(void)
{
	setup(64 * SECTOR, false);
	file_write_pattern(0, 4, 6);
	ata_destroy(&ata);
	disk_image_close(&disk);
	char error[512];
	struct vm_disk_config config = { .path = image_path, .readonly = true };
	CU_ASSERT_FATAL(disk_image_open(&disk, &config, 0, error, sizeof(error)) == 0);
	CU_ASSERT_FATAL(ata_init(&ata, &disk, fake_clock, NULL, 1) == 0);

	issue_lba28(ATA_CMD_WRITE_SECTORS, 1, 1);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC | ATA_STATUS_ERR);
	CU_ASSERT_EQUAL(inb(ATA_REG_ERROR_FEATURE), ATA_ERROR_ABRT);
	uint8_t buf[SECTOR] = { 0 };
	ata_data_write(&ata, buf, SECTOR); /* no DRQ: dropped */
	CU_ASSERT(file_has_pattern(0, 4, 6));
	CU_ASSERT_EQUAL(disk.stats.denied_readonly, 1);
	issue_lba28(ATA_CMD_READ_SECTORS, 2, 1);
	ata_data_read(&ata, buf, SECTOR);
	uint8_t want[SECTOR];
	pattern_sector(want, 2, 6);
	CU_ASSERT_EQUAL(memcmp(buf, want, SECTOR), 0);
	teardown();
}

static void test_software_reset(void)
{
	setup(64 * SECTOR, false);
	outb(ATA_REG_COUNT, 4);
	outb(ATA_REG_STATUS_COMMAND, ATA_CMD_SET_MULTIPLE_MODE);
	issue_lba28(ATA_CMD_READ_SECTORS, 7, 5);
	CU_ASSERT(status() & ATA_STATUS_DRQ);
	outb(ATA_REG_CONTROL, ATA_CONTROL_SRST | ATA_CONTROL_NIEN);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_BSY);
	CU_ASSERT_EQUAL(inb(ATA_REG_CONTROL), ATA_STATUS_BSY);
	outb(ATA_REG_COUNT, 0x77); /* ignored while BSY */
	outb(ATA_REG_CONTROL, ATA_CONTROL_NIEN);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC);
	CU_ASSERT_EQUAL(inb(ATA_REG_COUNT), 1);
	CU_ASSERT_EQUAL(inb(ATA_REG_LBA_LOW), 1);
	CU_ASSERT_EQUAL(inb(ATA_REG_LBA_MID), 0);
	CU_ASSERT_EQUAL(inb(ATA_REG_LBA_HIGH), 0);
	CU_ASSERT_EQUAL(inb(ATA_REG_ERROR_FEATURE), 0x01);
	CU_ASSERT_EQUAL(inb(ATA_REG_DEVICE) & 0x10, 0);
	CU_ASSERT_EQUAL(ata_io_read(&ata, ATA_REG_DATA, 2), 0xffff);
	/* The abandoned read counts as an error; multiple mode survives. */
	CU_ASSERT_EQUAL(disk.stats.errors, 1);
	uint16_t w[256];
	identify(w);
	CU_ASSERT_EQUAL(w[59], 0x0104);
	teardown();
}

static void test_drive1_absent(void)
{
	setup(64 * SECTOR, false);
	outb(ATA_REG_DEVICE, 0xb0);
	CU_ASSERT_EQUAL(status(), 0);
	CU_ASSERT_EQUAL(inb(ATA_REG_CONTROL), 0);
	outb(ATA_REG_STATUS_COMMAND, ATA_CMD_IDENTIFY_DEVICE);
	CU_ASSERT_EQUAL(status(), 0);
	CU_ASSERT_EQUAL(ata_io_read(&ata, ATA_REG_DATA, 2), 0xffff);
	outb(ATA_REG_DEVICE, 0xa0);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC); /* IDENTIFY never ran */
	teardown();
}

static void test_chs_and_verify(void)
{
	setup(20000 * SECTOR, false);
	/* CHS: cylinder 1, head 2, sector 3 = (1 * 16 + 2) * 63 + 2. */
	uint64_t lba = (1 * 16 + 2) * 63 + 2;
	file_write_pattern(lba, 1, 7);
	outb(ATA_REG_DEVICE, 0xa2);
	outb(ATA_REG_COUNT, 1);
	outb(ATA_REG_LBA_LOW, 3);
	outb(ATA_REG_LBA_MID, 1);
	outb(ATA_REG_LBA_HIGH, 0);
	outb(ATA_REG_STATUS_COMMAND, ATA_CMD_READ_SECTORS);
	uint8_t got[SECTOR], want[SECTOR];
	read_sector_words(got);
	pattern_sector(want, lba, 7);
	CU_ASSERT_EQUAL(memcmp(got, want, SECTOR), 0);
	/* CHS sector 0 does not exist. */
	outb(ATA_REG_LBA_LOW, 0);
	outb(ATA_REG_STATUS_COMMAND, ATA_CMD_READ_SECTORS);
	CU_ASSERT_EQUAL(inb(ATA_REG_ERROR_FEATURE), ATA_ERROR_IDNF);
	/* READ VERIFY checks the range and moves no data. */
	issue_lba28(ATA_CMD_READ_VERIFY, 100, 8);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC);
	issue_lba28(ATA_CMD_READ_VERIFY, 19999, 2);
	CU_ASSERT_EQUAL(inb(ATA_REG_ERROR_FEATURE), ATA_ERROR_IDNF);
	teardown();
}

static void test_rate_limit_holds_bsy(void)
{
	struct vm_rate_limit one_per_second = { .rate_per_second = 1, .burst = 1 };
	setup_limited(64 * SECTOR, false, &one_per_second);
	issue_lba28(ATA_CMD_READ_SECTORS, 0, 1);
	CU_ASSERT_EQUAL(sectors_until_done(10), 1);
	issue_lba28(ATA_CMD_READ_SECTORS, 1, 1);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_BSY);
	CU_ASSERT(ata_busy_remaining_ns(&ata) > 0);
	CU_ASSERT(ata_busy_remaining_ns(&ata) <= 1000000000ull);
	fake_now_ns += 1000000000ull;
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC | ATA_STATUS_DRQ);
	CU_ASSERT_EQUAL(sectors_until_done(10), 1);
	CU_ASSERT_EQUAL(disk.stats.ops[KAPSEL_BLK_OP_READ], 2);
	teardown();
}

/* A command held by the byte limit is charged once, when it finally goes:
 * at 2048 bytes/s, a 1024-byte read held for 0.5 s leaves the bucket empty
 * and free of debt, and another 0.5 s pays for the next 1024 bytes. */
static void test_rate_limit_charges_held_command_once(void)
{
	struct vm_rate_limit bytes_per_second = { .rate_per_second = 4 * SECTOR,
						  .burst = 4 * SECTOR };
	setup(64 * SECTOR, false);
	disk_set_limits(&disk, NULL, &bytes_per_second, fake_now_ns);
	issue_lba28(ATA_CMD_READ_SECTORS, 0, 4); /* the whole burst */
	CU_ASSERT_EQUAL(sectors_until_done(10), 4);
	issue_lba28(ATA_CMD_READ_SECTORS, 4, 2);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_BSY);
	fake_now_ns += 500000000ull; /* 2 * SECTOR bytes earned */
	CU_ASSERT_EQUAL(sectors_until_done(10), 2);
	CU_ASSERT_EQUAL(disk.bytes_bucket.tokens, 0);
	CU_ASSERT_EQUAL(disk.bytes_bucket.debt, 0);
	fake_now_ns += 500000000ull;
	issue_lba28(ATA_CMD_READ_SECTORS, 6, 2);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC | ATA_STATUS_DRQ);
	CU_ASSERT_EQUAL(sectors_until_done(10), 2);
	CU_ASSERT_EQUAL(disk.stats.ops[KAPSEL_BLK_OP_READ], 3);
	teardown();
}

static void test_wide_register_access(void)
{
	setup(64 * SECTOR, false);
	/* A 16-bit write to the count register is two byte writes. */
	ata_io_write(&ata, ATA_REG_COUNT, 2, 0x0905);
	CU_ASSERT_EQUAL(inb(ATA_REG_COUNT), 0x05);
	CU_ASSERT_EQUAL(inb(ATA_REG_LBA_LOW), 0x09);
	CU_ASSERT_EQUAL(ata_io_read(&ata, ATA_REG_COUNT, 2), 0x0905);
	teardown();
}

/* States a snapshot file could claim: ata.c must end them, never spin on
 * them (before the fix, block_sectors 0 or a block running past the data
 * in the buffer looped forever inside ata_data_read/ata_data_write). */
static void test_impossible_state_does_not_hang(void)
{
	setup(64 * SECTOR, false);
	alarm(20); /* a hang fails the test instead of the whole suite timing out */
	issue_lba28(ATA_CMD_READ_SECTORS, 0, 4);
	CU_ASSERT(status() & ATA_STATUS_DRQ);
	ata.block_sectors = 0;
	ata.block_bytes_left = 0;
	uint8_t buf[2 * SECTOR];
	ata_data_read(&ata, buf, sizeof(buf));
	CU_ASSERT_FALSE(status() & ATA_STATUS_DRQ);
	CU_ASSERT(status() & ATA_STATUS_ERR);
	CU_ASSERT_EQUAL(buf[sizeof(buf) - 1], 0xff);

	issue_lba28(ATA_CMD_READ_SECTORS, 0, 4);
	ata.buffer_bytes = ata.buffer_pos; /* nothing buffered, a block open */
	ata_data_read(&ata, buf, sizeof(buf));
	CU_ASSERT(status() & ATA_STATUS_ERR);

	issue_lba28(ATA_CMD_WRITE_SECTORS, 0, 4);
	CU_ASSERT(status() & ATA_STATUS_DRQ);
	ata.buffer_pos = 128 * SECTOR; /* buffer full, block still open */
	memset(buf, 0x5a, sizeof(buf));
	ata_data_write(&ata, buf, sizeof(buf));
	CU_ASSERT(status() & ATA_STATUS_ERR);

	/* A read whose buffer claims to lie past the command's end: the
	 * refill for the next block ends the command instead of reading. */
	issue_lba28(ATA_CMD_READ_SECTORS, 0, 4);
	ata.buffer_lba = 60;
	ata.buffer_pos = ata.buffer_bytes - 1;
	ata.block_bytes_left = 1;
	uint64_t reads_before = disk.stats.errors;
	ata_data_read(&ata, buf, 1); /* ends the block: the refill is refused */
	CU_ASSERT(status() & ATA_STATUS_ERR);
	CU_ASSERT_EQUAL(inb(ATA_REG_ERROR_FEATURE), ATA_ERROR_UNC);
	CU_ASSERT_EQUAL(disk.stats.errors, reads_before + 1);
	alarm(0);
	teardown();
}

/* Read n bytes through the data register, checking each state reached
 * passes ata_state_check (what a snapshot at that moment would hold). */
static bool read_checking_states(unsigned bytes)
{
	bool ok = true;
	uint8_t chunk[SECTOR];
	while (bytes) {
		unsigned n = bytes < 96 ? bytes : 96;
		ata_data_read(&ata, chunk, n);
		ok &= ata_state_check(&ata) == NULL;
		bytes -= n;
	}
	return ok;
}

static void test_state_check(void)
{
	setup(600 * SECTOR, false);
	CU_ASSERT_PTR_NULL(ata_state_check(&ata));
	/* A read of 300 sectors crosses two buffer refills; every state on
	 * the way is one a snapshot may hold and must be accepted. */
	outb(ATA_REG_COUNT, 2);
	outb(ATA_REG_STATUS_COMMAND, ATA_CMD_SET_MULTIPLE_MODE);
	issue_lba28(ATA_CMD_READ_MULTIPLE, 3, 0); /* 256 sectors */
	CU_ASSERT_TRUE(read_checking_states(200 * SECTOR));
	CU_ASSERT_PTR_NULL(ata_state_check(&ata));
	struct ata_state good = ata;

#define EXPECT_BAD(change)                                     \
	do {                                                   \
		ata = good;                                    \
		change;                                        \
		CU_ASSERT_PTR_NOT_NULL(ata_state_check(&ata)); \
	} while (0)
	EXPECT_BAD(ata.block_sectors = 0);
	EXPECT_BAD(ata.block_sectors = 3);
	EXPECT_BAD(ata.multiple_sectors = 3);
	EXPECT_BAD(ata.multiple_sectors = 255);
	EXPECT_BAD(ata.buffer_pos = 128 * SECTOR + 1);
	EXPECT_BAD(ata.buffer_bytes = 200 * SECTOR);
	EXPECT_BAD(ata.block_start_pos = ata.buffer_pos + 512);
	EXPECT_BAD(ata.block_bytes_left += 2);
	EXPECT_BAD(ata.transfer = (enum ata_transfer)7);
	EXPECT_BAD(ata.op = KAPSEL_BLK_OP_COUNT);
	EXPECT_BAD(ata.transfer = ATA_TRANSFER_OUT); /* a read's buffer written out */
	EXPECT_BAD(ata.command_lba = 599);	     /* past the end of the disk */
	EXPECT_BAD(ata.command_sectors = UINT64_MAX);
	EXPECT_BAD(ata.buffer_lba += 1); /* outside the command */
	EXPECT_BAD(ata.sectors_left = ata.command_sectors + 1);
	EXPECT_BAD(ata.buffer_lba = 0);
	ata = good;
	CU_ASSERT_TRUE(read_checking_states(56 * SECTOR));
	CU_ASSERT_PTR_NULL(ata_state_check(&ata)); /* done: idle */

	/* A write in progress; on a read-only disk it is refused. */
	issue_lba28(ATA_CMD_WRITE_SECTORS, 10, 3);
	/* Room for the longest single write below (one sector and 100 bytes). */
	uint8_t data[2 * SECTOR] = { 0 };
	ata_data_write(&ata, data, SECTOR + 100);
	CU_ASSERT_PTR_NULL(ata_state_check(&ata));
	good = ata;
	EXPECT_BAD(ata.op = KAPSEL_BLK_OP_READ);
	EXPECT_BAD(ata.buffer_lba = 9);
	EXPECT_BAD(ata.sectors_left = 3);
	disk.readonly = true;
	EXPECT_BAD((void)0);
	disk.readonly = false;
#undef EXPECT_BAD
	ata = good;
	ata_data_write(&ata, data, SECTOR);
	CU_ASSERT_PTR_NULL(ata_state_check(&ata));
	ata_data_write(&ata, data, SECTOR - 100);
	CU_ASSERT_EQUAL(status(), ATA_STATUS_DRDY | ATA_STATUS_DSC);
	/* Idle after a multi-sector write (the last block's start stays
	 * behind): a snapshot now must restore (it was refused before). */
	CU_ASSERT_PTR_NULL(ata_state_check(&ata));
	teardown();
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "identify words of a small disk", test_identify_small },
		{ "identify caps LBA28 capacity", test_identify_large_caps_lba28 },
		{ "LBA28 read, 16/32-bit and string access", test_lba28_read },
		{ "LBA28 write and DRQ transitions", test_lba28_write_status_transitions },
		{ "LBA48 HOB registers", test_lba48_hob_registers },
		{ "LBA48 read and write past 2^28", test_lba48_read_write },
		{ "sector count 0 is 256 / 65536", test_count_zero },
		{ "READ/WRITE MULTIPLE with SET MULTIPLE MODE", test_multiple },
		{ "unsupported commands abort", test_unsupported_command },
		{ "out-of-range LBA is IDNF", test_out_of_range },
		{ "read-only image aborts writes", test_readonly },
		{ "software reset leaves the signature", test_software_reset },
		{ "drive 1 is absent", test_drive1_absent },
		{ "CHS addressing and READ VERIFY", test_chs_and_verify },
		{ "rate limit holds the command BSY", test_rate_limit_holds_bsy },
		{ "a held command is charged once", test_rate_limit_charges_held_command_once },
		{ "wide access to 8-bit registers", test_wide_register_access },
		{ "impossible states end, never hang", test_impossible_state_does_not_hang },
		{ "restored state check", test_state_check },
	};
	return UNIT_RUN("ata", tests);
}
