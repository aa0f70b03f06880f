/* Emulated ATA (IDE) disk: the register-level state machine of one channel with drive 0, no KVM inside. */
#define _GNU_SOURCE
#include "devices/block/ata.h"
#include "devices/block/disk_overlay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kapsel/abi.h"

#define ATA_SECTOR_BYTES KAPSEL_BLK_SECTOR_BYTES
#define ATA_BUFFER_BYTES (ATA_BUFFER_SECTORS * ATA_SECTOR_BYTES)
/* Error register after reset or EXECUTE DEVICE DIAGNOSTIC: device 0
 * passed, device 1 absent. */
#define ATA_DIAGNOSTIC_PASSED 0x01u
#define ATA_STATUS_READY (ATA_STATUS_DRDY | ATA_STATUS_DSC)

static uint64_t ata_now(const struct ata_state *ata)
{
	return ata->now_ns(ata->clock_context);
}

static bool drive1_selected(const struct ata_state *ata)
{
	return (ata->device & ATA_DEVICE_DEV) != 0;
}

static uint32_t min_u32(uint64_t a, uint64_t b)
{
	return (uint32_t)(a < b ? a : b);
}

/* ---- Host I/O ------------------------------------------------------------ */

/* Through the disk layer, which reads copy-on-write overlays through to
 * their base (disk_overlay.h); a raw image is plain pread/pwrite. */
static int image_pread(struct disk_image *disk, void *buffer, size_t length, uint64_t sector)
{
	return disk_image_pread(disk, buffer, length, sector * ATA_SECTOR_BYTES);
}

static int image_pwrite(struct disk_image *disk, const void *buffer, size_t length, uint64_t sector)
{
	return disk_image_pwrite(disk, buffer, length, sector * ATA_SECTOR_BYTES);
}

static int image_sync(struct disk_image *disk)
{
	return disk_image_sync(disk);
}

/* ---- Task file ----------------------------------------------------------- */

/* Reset values: the ATA device signature (count 1, LBA 1, 0, 0). */
static void set_signature(struct ata_state *ata)
{
	ata->count = ata->count_hob = 1;
	ata->lba_low = ata->lba_low_hob = 1;
	ata->lba_mid = ata->lba_mid_hob = 0;
	ata->lba_high = ata->lba_high_hob = 0;
	ata->device = 0;
	ata->error = ATA_DIAGNOSTIC_PASSED;
	ata->status = ATA_STATUS_READY;
}

/* On an error, the LBA registers tell the host where it happened. */
static void set_lba_registers(struct ata_state *ata, uint64_t lba, bool lba48)
{
	ata->lba_low = (uint8_t)lba;
	ata->lba_mid = (uint8_t)(lba >> 8);
	ata->lba_high = (uint8_t)(lba >> 16);
	if (lba48) {
		ata->lba_low_hob = (uint8_t)(lba >> 24);
		ata->lba_mid_hob = (uint8_t)(lba >> 32);
		ata->lba_high_hob = (uint8_t)(lba >> 40);
	} else {
		ata->device = (uint8_t)((ata->device & ~ATA_DEVICE_LBA_HIGH_MASK) |
					((lba >> 24) & ATA_DEVICE_LBA_HIGH_MASK));
	}
}

static bool command_is_lba48(uint8_t command)
{
	switch (command) {
	case ATA_CMD_READ_SECTORS_EXT:
	case ATA_CMD_READ_MULTIPLE_EXT:
	case ATA_CMD_WRITE_SECTORS_EXT:
	case ATA_CMD_WRITE_MULTIPLE_EXT:
	case ATA_CMD_READ_VERIFY_EXT:
		return true;
	}
	return false;
}

static void chs_geometry(uint64_t capacity_sectors, uint32_t *cylinders)
{
	uint64_t c = capacity_sectors / (ATA_CHS_HEADS * ATA_CHS_SECTORS_PER_TRACK);
	if (c > ATA_CHS_MAX_CYLINDERS)
		c = ATA_CHS_MAX_CYLINDERS;
	*cylinders = c ? (uint32_t)c : 1;
}

/*
 * The address and sector count of a read/write command from the task
 * file: LBA48 uses the previous (HOB) register values as the high bytes;
 * LBA28 takes bits 27:24 from the device register; with the LBA bit clear
 * the registers hold cylinder/head/sector.  Returns false for an address
 * that cannot exist (CHS sector 0 or beyond the geometry).
 */
static bool command_address(const struct ata_state *ata, bool lba48, uint64_t *lba, uint64_t *count)
{
	if (lba48) {
		*lba = (uint64_t)ata->lba_high_hob << 40 | (uint64_t)ata->lba_mid_hob << 32 |
		       (uint64_t)ata->lba_low_hob << 24 | (uint64_t)ata->lba_high << 16 |
		       (uint64_t)ata->lba_mid << 8 | ata->lba_low;
		*count = (uint64_t)ata->count_hob << 8 | ata->count;
		if (*count == 0)
			*count = 65536;
		return true;
	}
	*count = ata->count ? ata->count : 256;
	if (ata->device & ATA_DEVICE_LBA) {
		*lba = (uint64_t)(ata->device & ATA_DEVICE_LBA_HIGH_MASK) << 24 |
		       (uint64_t)ata->lba_high << 16 | (uint64_t)ata->lba_mid << 8 | ata->lba_low;
		return true;
	}
	uint32_t cylinders;
	chs_geometry(ata->disk->capacity_sectors, &cylinders);
	uint32_t cylinder = (uint32_t)ata->lba_high << 8 | ata->lba_mid;
	uint32_t head = ata->device & ATA_DEVICE_LBA_HIGH_MASK;
	uint32_t sector = ata->lba_low;
	if (sector == 0 || sector > ATA_CHS_SECTORS_PER_TRACK || cylinder >= cylinders)
		return false;
	*lba = ((uint64_t)cylinder * ATA_CHS_HEADS + head) * ATA_CHS_SECTORS_PER_TRACK + sector - 1;
	return true;
}

/* ---- Command completion -------------------------------------------------- */

/* End the command in progress: status, counters and disk statistics. */
static void command_finish(struct ata_state *ata, int result, uint8_t error, uint8_t extra_status)
{
	if (ata->disk_op_open) {
		uint64_t bytes = result == 0 && ata->op != KAPSEL_BLK_OP_FLUSH
					 ? ata->command_sectors * ATA_SECTOR_BYTES
					 : 0;
		disk_stats_complete(ata->disk, ata->op, bytes, result,
				    ata_now(ata) - ata->command_start_ns);
		ata->disk_op_open = false;
	}
	ata->transfer = ATA_TRANSFER_NONE;
	ata->held_by_rate_limit = false;
	ata->op = KAPSEL_BLK_OP_GET_INFO; /* i.e. no disk operation */
	ata->block_bytes_left = 0;
	ata->error = error;
	ata->status = (uint8_t)(ATA_STATUS_READY | extra_status | (error ? ATA_STATUS_ERR : 0));
	if (error)
		ata->counters.commands_failed++;
}

static void command_ok(struct ata_state *ata)
{
	command_finish(ata, 0, 0, 0);
}

/* Refuse a command before it touched the disk (no disk statistics). */
static void command_reject(struct ata_state *ata, uint8_t error)
{
	ata->transfer = ATA_TRANSFER_NONE;
	ata->op = KAPSEL_BLK_OP_GET_INFO;
	command_finish(ata, 0, error, 0);
}

/* Write the DRQ blocks of a write command the host has fully sent but
 * that are still in the buffer (a reset or new command interrupts it). */
static void write_accepted_blocks(struct ata_state *ata)
{
	if (ata->transfer != ATA_TRANSFER_OUT || ata->op != KAPSEL_BLK_OP_WRITE ||
	    ata->block_start_pos == 0)
		return;
	if (image_pwrite(ata->disk, ata->buffer, ata->block_start_pos, ata->buffer_lba) == 0)
		ata->counters.sectors_written += ata->block_start_pos / ATA_SECTOR_BYTES;
	ata->block_start_pos = ata->buffer_pos = 0;
}

/* A transfer still in progress is cut short (reset, new command). */
static void transfer_abandon(struct ata_state *ata)
{
	if (ata->transfer == ATA_TRANSFER_NONE && !ata->held_by_rate_limit)
		return;
	write_accepted_blocks(ata);
	command_finish(ata, -KAPSEL_EIO, ATA_ERROR_ABRT, 0);
}

/* ---- Data phase ---------------------------------------------------------- */

/* Read the next sectors of a read command from the image into the buffer.
 * Returns false (command ended with UNC) when the host read fails. */
static bool buffer_fill(struct ata_state *ata)
{
	uint64_t next = ata->buffer_lba + ata->buffer_bytes / ATA_SECTOR_BYTES;
	uint64_t end = ata->command_lba + ata->command_sectors;
	/* next < end while sectors are left; a state restored from a file
	 * that says otherwise ends the command instead of reading outside it. */
	uint32_t sectors = next < end ? min_u32(end - next, ATA_BUFFER_SECTORS) : 0;
	int err = sectors ? image_pread(ata->disk, ata->buffer, (size_t)sectors * ATA_SECTOR_BYTES,
					next)
			  : -KAPSEL_EIO;
	if (err) {
		set_lba_registers(ata, next, command_is_lba48(ata->command));
		command_finish(ata, -KAPSEL_EIO, ATA_ERROR_UNC, 0);
		return false;
	}
	ata->buffer_lba = next;
	ata->buffer_bytes = sectors * ATA_SECTOR_BYTES;
	ata->buffer_pos = 0;
	return true;
}

/* Write what the buffer received to the image.  Returns false (command
 * ended with DF) when the host write fails. */
static bool buffer_flush(struct ata_state *ata)
{
	int err = image_pwrite(ata->disk, ata->buffer, ata->buffer_pos, ata->buffer_lba);
	if (!err && !ata->write_cache)
		err = image_sync(ata->disk);
	if (err) {
		set_lba_registers(ata, ata->buffer_lba, command_is_lba48(ata->command));
		ata->block_start_pos = 0; /* nothing left to save on abandon */
		command_finish(ata, -KAPSEL_EIO, ATA_ERROR_ABRT, ATA_STATUS_DF);
		return false;
	}
	ata->counters.sectors_written += ata->buffer_pos / ATA_SECTOR_BYTES;
	ata->buffer_lba += ata->buffer_pos / ATA_SECTOR_BYTES;
	ata->buffer_pos = 0;
	return true;
}

/* Open the next DRQ block, or end the command after the last one. */
static void block_next(struct ata_state *ata)
{
	if (ata->sectors_left == 0) {
		command_ok(ata);
		return;
	}
	ata->block_bytes_left = min_u32(ata->sectors_left, ata->block_sectors) * ATA_SECTOR_BYTES;
	/* Reads fetch at block boundaries, so an error shows as ERR in the
	 * status before the host takes data (a block never spans a fill:
	 * the buffer holds a whole number of blocks). */
	if (ata->transfer == ATA_TRANSFER_IN && ata->buffer_pos == ata->buffer_bytes &&
	    !buffer_fill(ata))
		return;
	/* After the fill, which moves buffer_pos back to the buffer's start. */
	ata->block_start_pos = ata->buffer_pos;
	ata->status = ATA_STATUS_READY | ATA_STATUS_DRQ;
}

static void block_done(struct ata_state *ata)
{
	uint32_t sectors = min_u32(ata->sectors_left, ata->block_sectors);
	ata->sectors_left -= sectors;
	if (ata->transfer == ATA_TRANSFER_OUT) {
		if ((ata->buffer_pos == ATA_BUFFER_BYTES || ata->sectors_left == 0) &&
		    !buffer_flush(ata))
			return;
	} else if (ata->op == KAPSEL_BLK_OP_READ) {
		ata->counters.sectors_read += sectors;
	}
	block_next(ata);
}

/* The command got past policy and rate limits: do it. */
static void command_begin(struct ata_state *ata)
{
	ata->held_by_rate_limit = false;
	switch (ata->op) {
	case KAPSEL_BLK_OP_FLUSH: {
		int err = image_sync(ata->disk);
		if (err)
			command_finish(ata, -KAPSEL_EIO, ATA_ERROR_ABRT, ATA_STATUS_DF);
		else
			command_ok(ata);
		return;
	}
	case KAPSEL_BLK_OP_READ:
		ata->transfer = ATA_TRANSFER_IN;
		break;
	default:
		ata->transfer = ATA_TRANSFER_OUT;
		break;
	}
	ata->buffer_lba = ata->command_lba;
	ata->buffer_bytes = ata->buffer_pos = 0;
	block_next(ata);
}

/* Policy, then rate limit: either starts the command or holds it BSY. */
static void command_admit(struct ata_state *ata, enum kapsel_blk_op op, uint64_t lba,
			  uint64_t sectors, uint32_t block_sectors)
{
	bool lba48 = command_is_lba48(ata->command);
	int err = disk_policy_check(ata->disk, op, lba, op == KAPSEL_BLK_OP_FLUSH ? 0 : sectors);
	if (err == -KAPSEL_EROFS) {
		command_reject(ata, ATA_ERROR_ABRT);
		return;
	}
	if (err) {
		set_lba_registers(ata, lba, lba48);
		command_reject(ata, ATA_ERROR_IDNF);
		return;
	}
	ata->op = op;
	ata->command_lba = lba;
	ata->command_sectors = sectors;
	ata->sectors_left = sectors;
	ata->block_sectors = block_sectors;
	ata->command_start_ns = ata_now(ata);
	ata->disk_op_open = true;
	uint64_t wait =
		disk_rate_limit(ata->disk, sectors * ATA_SECTOR_BYTES, ata->command_start_ns);
	if (wait) {
		ata->held_by_rate_limit = true;
		ata->held_until_ns = ata->command_start_ns + wait;
		ata->status = ATA_STATUS_BSY;
		ata->counters.rate_limit_waits++;
		return;
	}
	command_begin(ata);
}

/* The rate limiter let a held command wait long enough: try again. */
static void hold_poll(struct ata_state *ata)
{
	if (!ata->held_by_rate_limit)
		return;
	uint64_t now = ata_now(ata);
	if (now < ata->held_until_ns)
		return;
	uint64_t wait = disk_rate_limit(ata->disk, ata->sectors_left * ATA_SECTOR_BYTES, now);
	if (wait) {
		ata->held_until_ns = now + wait;
		return;
	}
	command_begin(ata);
}

uint64_t ata_busy_remaining_ns(const struct ata_state *ata)
{
	if (!ata->held_by_rate_limit)
		return 0;
	uint64_t now = ata_now(ata);
	return now < ata->held_until_ns ? ata->held_until_ns - now : 0;
}

/* ---- Commands ------------------------------------------------------------ */

static void command_read_write(struct ata_state *ata, enum kapsel_blk_op op, bool multiple)
{
	uint64_t lba, sectors;
	if (multiple && ata->multiple_sectors == 0) {
		command_reject(ata, ATA_ERROR_ABRT); /* SET MULTIPLE MODE first */
		return;
	}
	if (!command_address(ata, command_is_lba48(ata->command), &lba, &sectors)) {
		command_reject(ata, ATA_ERROR_IDNF);
		return;
	}
	command_admit(ata, op, lba, sectors, multiple ? ata->multiple_sectors : 1);
}

static void command_read_verify(struct ata_state *ata)
{
	uint64_t lba, sectors;
	bool lba48 = command_is_lba48(ata->command);
	if (!command_address(ata, lba48, &lba, &sectors) ||
	    disk_policy_check(ata->disk, KAPSEL_BLK_OP_READ, lba, sectors) != 0) {
		if (command_address(ata, lba48, &lba, &sectors))
			set_lba_registers(ata, lba, lba48);
		command_reject(ata, ATA_ERROR_IDNF);
		return;
	}
	command_ok(ata);
}

static void command_identify(struct ata_state *ata)
{
	uint16_t words[ATA_ID_WORDS];
	ata_build_identify(ata, words);
	for (unsigned i = 0; i < ATA_ID_WORDS; i++) {
		ata->buffer[2 * i] = (uint8_t)words[i];
		ata->buffer[2 * i + 1] = (uint8_t)(words[i] >> 8);
	}
	ata->op = KAPSEL_BLK_OP_GET_INFO;
	ata->transfer = ATA_TRANSFER_IN;
	/* No disk sectors: nothing stale from an earlier command stays. */
	ata->command_lba = ata->buffer_lba = 0;
	ata->command_sectors = ata->sectors_left = 1;
	ata->block_sectors = 1;
	ata->buffer_bytes = ATA_SECTOR_BYTES;
	ata->buffer_pos = 0;
	block_next(ata);
}

static void command_set_multiple(struct ata_state *ata)
{
	unsigned sectors = ata->count;
	/* 0 turns multiple mode off; otherwise a power of two up to word 47. */
	if (sectors > ATA_MAX_MULTIPLE_SECTORS || (sectors & (sectors - 1))) {
		command_reject(ata, ATA_ERROR_ABRT);
		return;
	}
	ata->multiple_sectors = (uint8_t)sectors;
	command_ok(ata);
}

static void command_set_features(struct ata_state *ata)
{
	switch (ata->feature) {
	case ATA_FEATURE_ENABLE_WRITE_CACHE:
		ata->write_cache = true;
		break;
	case ATA_FEATURE_DISABLE_WRITE_CACHE:
		/* What the cache held becomes durable now. */
		if (image_sync(ata->disk) != 0) {
			command_finish(ata, 0, ATA_ERROR_ABRT, ATA_STATUS_DF);
			return;
		}
		ata->write_cache = false;
		break;
	case ATA_FEATURE_SET_TRANSFER_MODE:
		/* PIO default (0x00, 0x01) or PIO flow control modes 0-4
		 * (0x08-0x0c); DMA modes are refused (word 49: no DMA). */
		if (!(ata->count <= 0x01 || (ata->count >= 0x08 && ata->count <= 0x0c))) {
			command_reject(ata, ATA_ERROR_ABRT);
			return;
		}
		break;
	case ATA_FEATURE_ENABLE_READ_LOOKAHEAD:
	case ATA_FEATURE_DISABLE_READ_LOOKAHEAD:
	case ATA_FEATURE_ENABLE_REVERTING:
	case ATA_FEATURE_DISABLE_REVERTING:
		break; /* nothing to change in an emulation */
	default:
		command_reject(ata, ATA_ERROR_ABRT);
		return;
	}
	command_ok(ata);
}

static void execute_command(struct ata_state *ata, uint8_t command)
{
	if (command == ATA_CMD_EXECUTE_DIAGNOSTIC) {
		/* Addressed to both devices whichever is selected. */
		transfer_abandon(ata);
		ata->counters.commands++;
		set_signature(ata);
		return;
	}
	if (drive1_selected(ata))
		return; /* no device 1 to take it */
	/* Writing a command during a transfer abandons the transfer. */
	transfer_abandon(ata);
	ata->counters.commands++;
	ata->command = command;
	ata->op = KAPSEL_BLK_OP_GET_INFO;
	ata->error = 0;
	switch (command) {
	case ATA_CMD_IDENTIFY_DEVICE:
		command_identify(ata);
		break;
	case ATA_CMD_READ_SECTORS:
	case ATA_CMD_READ_SECTORS_NORETRY:
	case ATA_CMD_READ_SECTORS_EXT:
		command_read_write(ata, KAPSEL_BLK_OP_READ, false);
		break;
	case ATA_CMD_READ_MULTIPLE:
	case ATA_CMD_READ_MULTIPLE_EXT:
		command_read_write(ata, KAPSEL_BLK_OP_READ, true);
		break;
	case ATA_CMD_WRITE_SECTORS:
	case ATA_CMD_WRITE_SECTORS_NORETRY:
	case ATA_CMD_WRITE_SECTORS_EXT:
		command_read_write(ata, KAPSEL_BLK_OP_WRITE, false);
		break;
	case ATA_CMD_WRITE_MULTIPLE:
	case ATA_CMD_WRITE_MULTIPLE_EXT:
		command_read_write(ata, KAPSEL_BLK_OP_WRITE, true);
		break;
	case ATA_CMD_READ_VERIFY:
	case ATA_CMD_READ_VERIFY_EXT:
		command_read_verify(ata);
		break;
	case ATA_CMD_SET_MULTIPLE_MODE:
		command_set_multiple(ata);
		break;
	case ATA_CMD_FLUSH_CACHE:
	case ATA_CMD_FLUSH_CACHE_EXT:
		command_admit(ata, KAPSEL_BLK_OP_FLUSH, 0, 0, 1);
		break;
	case ATA_CMD_SET_FEATURES:
		command_set_features(ata);
		break;
	case ATA_CMD_CHECK_POWER_MODE:
		ata->count = 0xff; /* active or idle */
		command_ok(ata);
		break;
	case ATA_CMD_STANDBY_IMMEDIATE:
	case ATA_CMD_IDLE_IMMEDIATE:
	case ATA_CMD_STANDBY:
	case ATA_CMD_IDLE:
		command_ok(ata); /* an image has no spindle */
		break;
	default:
		/* Including NOP (0x00), which always aborts by definition. */
		command_reject(ata, ATA_ERROR_ABRT);
		break;
	}
}

/* ---- Register access ----------------------------------------------------- */

static void device_control_write(struct ata_state *ata, uint8_t value)
{
	uint8_t old = ata->control;
	ata->control = value;
	if ((value & ATA_CONTROL_SRST) && !(old & ATA_CONTROL_SRST)) {
		transfer_abandon(ata);
		ata->counters.software_resets++;
		ata->status = ATA_STATUS_BSY;
	} else if (!(value & ATA_CONTROL_SRST) && (old & ATA_CONTROL_SRST)) {
		/* The reset completes at once.  Multiple mode and the write
		 * cache setting survive a software reset. */
		set_signature(ata);
		ata->control &= (uint8_t)~ATA_CONTROL_HOB;
	}
}

static uint8_t register_read(struct ata_state *ata, unsigned reg)
{
	bool hob = ata->control & ATA_CONTROL_HOB;

	switch (reg) {
	case ATA_REG_ERROR_FEATURE:
		return ata->error;
	case ATA_REG_COUNT:
		return hob ? ata->count_hob : ata->count;
	case ATA_REG_LBA_LOW:
		return hob ? ata->lba_low_hob : ata->lba_low;
	case ATA_REG_LBA_MID:
		return hob ? ata->lba_mid_hob : ata->lba_mid;
	case ATA_REG_LBA_HIGH:
		return hob ? ata->lba_high_hob : ata->lba_high;
	case ATA_REG_DEVICE:
		return ata->device;
	case ATA_REG_STATUS_COMMAND:
	case ATA_REG_CONTROL:
		/* No interrupt line, so status and alternate status are the
		 * same; a missing device 1 reads as 00h. */
		if (drive1_selected(ata) && !(ata->status & ATA_STATUS_BSY))
			return 0;
		return ata->status;
	}
	return 0xff; /* past the register file (e.g. 0x3f7) */
}

static void register_write(struct ata_state *ata, unsigned reg, uint8_t value)
{
	if (reg == ATA_REG_CONTROL) {
		device_control_write(ata, value);
		return;
	}
	if (reg < ATA_REG_ERROR_FEATURE || reg > ATA_REG_STATUS_COMMAND)
		return;
	/* While BSY the device owns the task file; writes are ignored. */
	if (ata->status & ATA_STATUS_BSY)
		return;
	/* Any command block write clears HOB (ATA-6 and later). */
	ata->control &= (uint8_t)~ATA_CONTROL_HOB;
	switch (reg) {
	case ATA_REG_ERROR_FEATURE:
		ata->feature_hob = ata->feature;
		ata->feature = value;
		break;
	case ATA_REG_COUNT:
		ata->count_hob = ata->count;
		ata->count = value;
		break;
	case ATA_REG_LBA_LOW:
		ata->lba_low_hob = ata->lba_low;
		ata->lba_low = value;
		break;
	case ATA_REG_LBA_MID:
		ata->lba_mid_hob = ata->lba_mid;
		ata->lba_mid = value;
		break;
	case ATA_REG_LBA_HIGH:
		ata->lba_high_hob = ata->lba_high;
		ata->lba_high = value;
		break;
	case ATA_REG_DEVICE:
		ata->device = value;
		break;
	case ATA_REG_STATUS_COMMAND:
		execute_command(ata, value);
		break;
	}
}

void ata_data_read(struct ata_state *ata, void *data, size_t length_bytes)
{
	uint8_t *out = data;
	hold_poll(ata);
	while (length_bytes) {
		if (ata->transfer != ATA_TRANSFER_IN || !(ata->status & ATA_STATUS_DRQ) ||
		    drive1_selected(ata)) {
			memset(out, 0xff, length_bytes);
			return;
		}
		uint32_t n = min_u32(length_bytes, ata->block_bytes_left);
		n = min_u32(n, ata->buffer_bytes - ata->buffer_pos);
		if (n == 0) {
			/* Cannot happen from the registers (a block never spans a
			 * buffer fill); a state that says so is ended, not spun on. */
			transfer_abandon(ata);
			continue;
		}
		memcpy(out, ata->buffer + ata->buffer_pos, n);
		ata->buffer_pos += n;
		ata->block_bytes_left -= n;
		out += n;
		length_bytes -= n;
		if (ata->block_bytes_left == 0)
			block_done(ata);
	}
}

void ata_data_write(struct ata_state *ata, const void *data, size_t length_bytes)
{
	const uint8_t *in = data;
	hold_poll(ata);
	while (length_bytes) {
		if (ata->transfer != ATA_TRANSFER_OUT || !(ata->status & ATA_STATUS_DRQ) ||
		    drive1_selected(ata))
			return;
		uint32_t n = min_u32(length_bytes, ata->block_bytes_left);
		n = min_u32(n, ATA_BUFFER_BYTES - ata->buffer_pos);
		if (n == 0) {
			/* As in ata_data_read: end an impossible state. */
			transfer_abandon(ata);
			continue;
		}
		memcpy(ata->buffer + ata->buffer_pos, in, n);
		ata->buffer_pos += n;
		ata->block_bytes_left -= n;
		in += n;
		length_bytes -= n;
		if (ata->block_bytes_left == 0)
			block_done(ata);
	}
}

uint32_t ata_io_read(struct ata_state *ata, unsigned reg, unsigned size)
{
	uint32_t value = 0;
	if (size != 1 && size != 2 && size != 4)
		return UINT32_MAX;
	if (reg == ATA_REG_DATA) {
		ata_data_read(ata, &value, size);
		return value;
	}
	hold_poll(ata);
	for (unsigned i = 0; i < size; i++) {
		unsigned r = reg + i;
		/* A wide access runs into the next register; 0x3f7 is not ours. */
		uint8_t byte = (reg == ATA_REG_CONTROL && i) || r >= ATA_REG_COUNT_ALL
				       ? 0xff
				       : register_read(ata, r);
		value |= (uint32_t)byte << (8 * i);
	}
	return value;
}

void ata_io_write(struct ata_state *ata, unsigned reg, unsigned size, uint32_t value)
{
	if (size != 1 && size != 2 && size != 4)
		return;
	if (reg == ATA_REG_DATA) {
		ata_data_write(ata, &value, size);
		return;
	}
	hold_poll(ata);
	for (unsigned i = 0; i < size; i++) {
		if (reg == ATA_REG_CONTROL && i)
			break;
		register_write(ata, reg + i, (uint8_t)(value >> (8 * i)));
	}
}

/* ---- Restored state -------------------------------------------------------- */

static bool power_of_two_upto(uint64_t value, uint64_t max)
{
	return value && value <= max && !(value & (value - 1));
}

const char *ata_state_check(const struct ata_state *ata)
{
	uint64_t capacity = ata->disk->capacity_sectors;
	/* (An idle device keeps the last block's start past buffer_pos.) */
	if (ata->buffer_bytes > ATA_BUFFER_BYTES || ata->buffer_pos > ATA_BUFFER_BYTES ||
	    ata->block_start_pos > ATA_BUFFER_BYTES || ata->block_bytes_left > ATA_BUFFER_BYTES)
		return "buffer position";
	if (ata->transfer > ATA_TRANSFER_OUT || (unsigned)ata->op >= KAPSEL_BLK_OP_COUNT)
		return "transfer";
	if (ata->multiple_sectors &&
	    !power_of_two_upto(ata->multiple_sectors, ATA_MAX_MULTIPLE_SECTORS))
		return "multiple mode";
	if (ata->transfer == ATA_TRANSFER_NONE && !ata->held_by_rate_limit)
		return NULL; /* idle: the next command sets everything below */

	if (!power_of_two_upto(ata->block_sectors, ATA_BUFFER_SECTORS) ||
	    ata->sectors_left > ata->command_sectors)
		return "sector counts";
	if (ata->command_lba > capacity || ata->command_sectors > capacity - ata->command_lba)
		return "sector range (past the end of the disk)";
	bool writes = ata->op == KAPSEL_BLK_OP_WRITE;
	if (writes && ata->disk->readonly)
		return "write to a read-only disk";
	if (ata->held_by_rate_limit) {
		/* Not started yet: command_begin starts it from the command's
		 * range with an empty buffer. */
		if (ata->transfer != ATA_TRANSFER_NONE ||
		    !(ata->op == KAPSEL_BLK_OP_READ || writes || ata->op == KAPSEL_BLK_OP_FLUSH))
			return "transfer";
		if (ata->sectors_left != ata->command_sectors)
			return "sector counts";
		return NULL;
	}
	if (ata->transfer == ATA_TRANSFER_IN
		    ? !(ata->op == KAPSEL_BLK_OP_READ || ata->op == KAPSEL_BLK_OP_GET_INFO)
		    : !writes)
		return "transfer";

	/* The DRQ block in progress began at block_start_pos (a sector
	 * boundary) and spans the smaller of sectors_left and block_sectors
	 * sectors, of which buffer_pos - block_start_pos bytes have moved. */
	uint64_t block_sectors =
		ata->sectors_left < ata->block_sectors ? ata->sectors_left : ata->block_sectors;
	uint64_t block_bytes = block_sectors * ATA_SECTOR_BYTES;
	uint64_t limit = ata->transfer == ATA_TRANSFER_IN ? ata->buffer_bytes : ATA_BUFFER_BYTES;
	if (block_sectors == 0 || ata->block_start_pos > ata->buffer_pos ||
	    ata->block_start_pos % ATA_SECTOR_BYTES ||
	    ata->buffer_pos - ata->block_start_pos + (uint64_t)ata->block_bytes_left !=
		    block_bytes ||
	    ata->block_start_pos + block_bytes > limit)
		return "block position";
	if (ata->op == KAPSEL_BLK_OP_GET_INFO) {
		/* IDENTIFY: one sector, all in the buffer; the disk is not used. */
		if (ata->command_sectors != 1 || ata->buffer_bytes != ATA_SECTOR_BYTES)
			return "identify data";
		return NULL;
	}
	/* The current block's first sector plus what is left is the end of
	 * the command: reads and writes from here on stay inside it. */
	uint64_t block_lba = ata->buffer_lba + ata->block_start_pos / ATA_SECTOR_BYTES;
	if (ata->buffer_lba < ata->command_lba || ata->buffer_lba > capacity ||
	    block_lba + ata->sectors_left != ata->command_lba + ata->command_sectors)
		return "sector range (outside the command)";
	return NULL;
}

/* ---- IDENTIFY DEVICE ----------------------------------------------------- */

/* ATA strings put the first character of each pair in the high byte. */
static void identify_string(uint16_t *words, unsigned first_word, unsigned chars, const char *text)
{
	for (unsigned i = 0; i < chars; i += 2) {
		uint8_t high = *text ? (uint8_t)*text++ : ' ';
		uint8_t low = *text ? (uint8_t)*text++ : ' ';
		words[first_word + i / 2] = (uint16_t)(high << 8 | low);
	}
}

void ata_build_identify(const struct ata_state *ata, uint16_t words[ATA_ID_WORDS])
{
	uint64_t capacity = ata->disk->capacity_sectors;
	if (capacity > ATA_LBA48_MAX_SECTORS)
		capacity = ATA_LBA48_MAX_SECTORS;
	uint64_t lba28 = capacity < ATA_LBA28_MAX_SECTORS ? capacity : ATA_LBA28_MAX_SECTORS;
	uint32_t cylinders;
	chs_geometry(capacity, &cylinders);
	uint32_t chs_sectors = cylinders * ATA_CHS_HEADS * ATA_CHS_SECTORS_PER_TRACK;

	memset(words, 0, ATA_ID_WORDS * sizeof(words[0]));
	words[0] = 0x0040; /* ATA device, fixed (not removable) */
	words[1] = (uint16_t)cylinders;
	words[2] = 0xc837; /* no spin-up needed, response complete */
	words[3] = ATA_CHS_HEADS;
	words[6] = ATA_CHS_SECTORS_PER_TRACK;
	identify_string(words, ATA_ID_SERIAL_WORD, ATA_ID_SERIAL_CHARS, ata->serial);
	identify_string(words, ATA_ID_FIRMWARE_WORD, ATA_ID_FIRMWARE_CHARS, ATA_ID_FIRMWARE);
	identify_string(words, ATA_ID_MODEL_WORD, ATA_ID_MODEL_CHARS, ATA_ID_MODEL);
	words[47] = 0x8000 | ATA_MAX_MULTIPLE_SECTORS;
	words[49] = 0x0200; /* LBA supported; no DMA */
	words[50] = 0x4000;
	words[51] = 0x0200; /* PIO mode 2 timing (obsolete word) */
	words[53] = 0x0003; /* words 54-58 and 64-70 are valid */
	words[54] = (uint16_t)cylinders;
	words[55] = ATA_CHS_HEADS;
	words[56] = ATA_CHS_SECTORS_PER_TRACK;
	words[57] = (uint16_t)chs_sectors;
	words[58] = (uint16_t)(chs_sectors >> 16);
	words[59] = ata->multiple_sectors ? (uint16_t)(0x0100 | ata->multiple_sectors) : 0;
	words[60] = (uint16_t)lba28;
	words[61] = (uint16_t)(lba28 >> 16);
	words[64] = 0x0003;				     /* PIO modes 3 and 4 */
	words[65] = words[66] = words[67] = words[68] = 120; /* cycle times, ns */
	words[80] = 0x01f0;				     /* ATA-4 to ATA8-ACS */
	/* 82/85: NOP, write cache, power management; 83/86: LBA48, FLUSH
	 * CACHE and FLUSH CACHE EXT; 84/87: bit 14 says the word is valid. */
	words[82] = 0x4000 | 0x0020 | 0x0008;
	words[83] = 0x4000 | 0x2000 | 0x1000 | 0x0400;
	words[84] = 0x4000;
	words[85] = (uint16_t)(0x4000 | (ata->write_cache ? 0x0020 : 0) | 0x0008);
	words[86] = 0x2000 | 0x1000 | 0x0400;
	words[87] = 0x4000;
	/* Reset results: device 0 by jumper, passed diagnostics, answers for
	 * the missing device 1. */
	words[93] = 0x4000 | 0x0040 | 0x0008 | 0x0002 | 0x0001;
	words[100] = (uint16_t)capacity;
	words[101] = (uint16_t)(capacity >> 16);
	words[102] = (uint16_t)(capacity >> 32);
	words[103] = 0;
	words[106] = 0x4000; /* one 512-byte logical sector per physical */

	uint8_t sum = 0xa5;
	for (unsigned i = 0; i < ATA_ID_WORDS - 1; i++)
		sum = (uint8_t)(sum + (words[i] & 0xff) + (words[i] >> 8));
	words[255] = (uint16_t)((uint8_t)(0u - sum) << 8 | 0xa5);
}

/* ---- Life cycle ---------------------------------------------------------- */

int ata_init(struct ata_state *ata, struct disk_image *disk,
	     uint64_t (*now_ns)(void *clock_context), void *clock_context, uint32_t serial_seed)
{
	memset(ata, 0, sizeof(*ata));
	/* Aligned for O_DIRECT images. */
	if (posix_memalign((void **)&ata->buffer, 4096, ATA_BUFFER_BYTES) != 0)
		return -ENOMEM;
	ata->disk = disk;
	ata->now_ns = now_ns;
	ata->clock_context = clock_context;
	snprintf(ata->serial, sizeof(ata->serial), "KAPSEL-%08X", serial_seed);
	ata->write_cache = true;
	ata->op = KAPSEL_BLK_OP_GET_INFO;
	set_signature(ata);
	return 0;
}

void ata_destroy(struct ata_state *ata)
{
	transfer_abandon(ata);
	free(ata->buffer);
	ata->buffer = NULL;
}

void ata_print_stats(const struct ata_state *ata, uint64_t device_exits, FILE *out)
{
	const struct ata_counters *c = &ata->counters;
	uint64_t sectors = c->sectors_read + c->sectors_written;
	fprintf(out,
		"  ata_commands: %llu\n  ata_commands_failed: %llu\n"
		"  ata_sectors_read: %llu\n  ata_sectors_written: %llu\n"
		"  ata_multiple_sectors: %u\n  ata_software_resets: %llu\n"
		"  ata_rate_limit_waits: %llu\n",
		(unsigned long long)c->commands, (unsigned long long)c->commands_failed,
		(unsigned long long)c->sectors_read, (unsigned long long)c->sectors_written,
		ata->multiple_sectors, (unsigned long long)c->software_resets,
		(unsigned long long)c->rate_limit_waits);
	if (sectors)
		fprintf(out, "  exits_per_sector: %.2f\n", (double)device_exits / (double)sectors);
}
