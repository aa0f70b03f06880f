/* ATA PIO driver: the fallback disk path, driving an emulated (or real) ATA disk register by register, polled. */
#include "block_internal.h"

#include "kapsel_guest/arch.h"
#include "kapsel_guest/libc.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"

/* Legacy primary channel, used when the hypervisor does not describe it. */
#define ATA_LEGACY_IO_BASE 0x1f0u
#define ATA_LEGACY_IO_CTL 0x3f6u

/* Register offsets from the command block base. */
#define ATA_DATA 0u
#define ATA_ERROR 1u
#define ATA_COUNT 2u
#define ATA_LBA_LOW 3u
#define ATA_LBA_MID 4u
#define ATA_LBA_HIGH 5u
#define ATA_DEVICE 6u
#define ATA_STATUS 7u /* read; written it is the command register */
#define ATA_COMMAND 7u

#define ATA_STATUS_ERR 0x01u
#define ATA_STATUS_DRQ 0x08u
#define ATA_STATUS_DF 0x20u
#define ATA_STATUS_BSY 0x80u
#define ATA_STATUS_FLOATING 0xffu /* nothing drives the bus */

#define ATA_ERROR_ABRT 0x04u
#define ATA_ERROR_IDNF 0x10u

#define ATA_DEVICE_LBA 0x40u
#define ATA_DEVICE_LEGACY 0xa0u /* bits 7 and 5: obsolete, conventionally set */
#define ATA_CONTROL_NIEN 0x02u
#define ATA_CONTROL_SRST 0x04u

#define ATA_CMD_READ_SECTORS 0x20u
#define ATA_CMD_READ_SECTORS_EXT 0x24u
#define ATA_CMD_READ_MULTIPLE_EXT 0x29u
#define ATA_CMD_WRITE_SECTORS 0x30u
#define ATA_CMD_WRITE_SECTORS_EXT 0x34u
#define ATA_CMD_WRITE_MULTIPLE_EXT 0x39u
#define ATA_CMD_READ_MULTIPLE 0xc4u
#define ATA_CMD_WRITE_MULTIPLE 0xc5u
#define ATA_CMD_SET_MULTIPLE_MODE 0xc6u
#define ATA_CMD_FLUSH_CACHE 0xe7u
#define ATA_CMD_FLUSH_CACHE_EXT 0xeau
#define ATA_CMD_IDENTIFY_DEVICE 0xecu

#define ATA_SECTOR_BYTES KAPSEL_BLK_SECTOR_BYTES
#define ATA_SECTOR_WORDS (ATA_SECTOR_BYTES / 2u)
#define ATA_LBA28_LIMIT (1ull << 28)
#define ATA_LBA48_LIMIT (1ull << 48)
#define ATA_LBA28_MAX_COUNT 256u
#define ATA_LBA48_MAX_COUNT 65536u
/* Largest READ/WRITE MULTIPLE block we ask for. */
#define ATA_WANTED_MULTIPLE 128u
/* Status reads before a command counts as hung (ATA allows a drive 31 s
 * after reset; an exit here costs 13-25 us, a bus read ~1 us). */
#define ATA_POLL_LIMIT 40000000u
#define ATA_ZERO_SECTORS 8u

struct ata_driver {
	uint16_t io_base;
	uint16_t io_ctl;
	bool lba48;
	bool readonly;		   /* from the hypervisor's description */
	bool pio32;		   /* the data register takes 32-bit accesses */
	uint32_t multiple_sectors; /* 0: READ/WRITE SECTORS, one per block */
	uint64_t capacity_sectors;
	int device_shadow;		    /* last device register value, -1 unknown */
	bool known_idle;		    /* the last status read showed BSY and DRQ clear */
	struct kg_block_request *completed; /* queue depth 1: waiting for reap */
};

static uint8_t ata_zero_buffer[ATA_ZERO_SECTORS * ATA_SECTOR_BYTES]
	__attribute__((aligned(ATA_SECTOR_BYTES)));

static struct ata_driver *to_driver(struct kg_block_device *device)
{
	return device->driver;
}

static uint8_t ata_status(const struct ata_driver *d)
{
	return kg_inb((uint16_t)(d->io_base + ATA_STATUS));
}

/* ~400 ns after selecting a drive: four alternate status reads. */
static void ata_settle(const struct ata_driver *d)
{
	for (int i = 0; i < 4; i++)
		(void)kg_inb(d->io_ctl);
}

/* Poll until BSY clears; returns the status, or -1 on timeout. */
static int ata_wait_idle(const struct ata_driver *d)
{
	for (uint32_t i = 0; i < ATA_POLL_LIMIT; i++) {
		uint8_t status = ata_status(d);
		if (status == ATA_STATUS_FLOATING)
			return -1;
		if (!(status & ATA_STATUS_BSY))
			return status;
		kg_cpu_relax();
	}
	return -1;
}

static void ata_soft_reset(struct ata_driver *d)
{
	kg_outb(d->io_ctl, ATA_CONTROL_NIEN | ATA_CONTROL_SRST);
	ata_settle(d); /* SRST must be held at least 5 us */
	kg_outb(d->io_ctl, ATA_CONTROL_NIEN);
	/* ATA gives the device 2 ms before BSY means anything. */
	if (kg_platform_is_kapsel())
		kg_time_sleep_ns(2000000);
	else
		for (int i = 0; i < 2000; i++)
			(void)kg_inb(d->io_ctl);
	(void)ata_wait_idle(d);
	d->device_shadow = -1; /* reset clears the device register */
}

/* Turn an ERR/DF status into an errno (reads the error register). */
static int ata_error(struct ata_driver *d, int status, bool is_write)
{
	if (status < 0) {
		ata_soft_reset(d); /* hung: start over */
		return -KAPSEL_EIO;
	}
	uint8_t error = kg_inb((uint16_t)(d->io_base + ATA_ERROR));
	d->device_shadow = -1; /* the device reports error addresses there */
	if (status & ATA_STATUS_DF)
		return -KAPSEL_EIO;
	if (error & ATA_ERROR_IDNF)
		return -KAPSEL_ERANGE;
	if ((error & ATA_ERROR_ABRT) && is_write && d->readonly)
		return -KAPSEL_EROFS;
	return -KAPSEL_EIO;
}

static void ata_write_device(struct ata_driver *d, uint8_t value)
{
	if (d->device_shadow == value)
		return; /* one exit saved per command */
	kg_outb((uint16_t)(d->io_base + ATA_DEVICE), value);
	d->device_shadow = value;
}

/*
 * Write the task file and the command.  LBA48 registers are FIFOs: the
 * high bytes go first, then the low bytes.  Returns 0, or an errno if
 * the device never became idle.
 */
static int ata_issue(struct ata_driver *d, uint8_t command, uint64_t lba, uint32_t count,
		     bool lba48)
{
	uint16_t base = d->io_base;
	/* ATA wants BSY and DRQ clear before the task file is written; the
	 * end of the previous command showed that already (one exit less). */
	if (!d->known_idle) {
		int status = ata_wait_idle(d);
		if (status < 0)
			return ata_error(d, status, false);
	}
	d->known_idle = false;
	if (lba48) {
		ata_write_device(d, ATA_DEVICE_LBA);
		kg_outb((uint16_t)(base + ATA_COUNT), (uint8_t)(count >> 8));
		kg_outb((uint16_t)(base + ATA_LBA_LOW), (uint8_t)(lba >> 24));
		kg_outb((uint16_t)(base + ATA_LBA_MID), (uint8_t)(lba >> 32));
		kg_outb((uint16_t)(base + ATA_LBA_HIGH), (uint8_t)(lba >> 40));
	} else {
		ata_write_device(d, (uint8_t)(ATA_DEVICE_LEGACY | ATA_DEVICE_LBA |
					      ((lba >> 24) & 0x0f)));
	}
	kg_outb((uint16_t)(base + ATA_COUNT), (uint8_t)count); /* 256/65536 -> 0 */
	kg_outb((uint16_t)(base + ATA_LBA_LOW), (uint8_t)lba);
	kg_outb((uint16_t)(base + ATA_LBA_MID), (uint8_t)(lba >> 8));
	kg_outb((uint16_t)(base + ATA_LBA_HIGH), (uint8_t)(lba >> 16));
	kg_outb((uint16_t)(base + ATA_COMMAND), command);
	return 0;
}

/* Run a command without data; returns 0 or an errno. */
static int ata_command_no_data(struct ata_driver *d, uint8_t command, uint8_t count)
{
	int err = ata_issue(d, command, 0, count, false);
	if (err)
		return err;
	int status = ata_wait_idle(d);
	if (status < 0 || (status & (ATA_STATUS_ERR | ATA_STATUS_DF)))
		return ata_error(d, status, false);
	d->known_idle = !(status & ATA_STATUS_DRQ);
	return 0;
}

/* ---- Where the data of a request lives ----------------------------------- */

struct ata_cursor {
	const struct kg_block_segment *segments;
	uint32_t segment_count;
	uint32_t index;
	uint32_t offset_bytes;
	bool zeroes; /* WRITE_ZEROES: every sector comes from ata_zero_buffer */
};

/* The next contiguous piece of at most max_sectors; sets *sectors. */
static uint8_t *cursor_take(struct ata_cursor *c, uint32_t max_sectors, uint32_t *sectors)
{
	if (c->zeroes) {
		*sectors = max_sectors < ATA_ZERO_SECTORS ? max_sectors : ATA_ZERO_SECTORS;
		return ata_zero_buffer;
	}
	const struct kg_block_segment *s = &c->segments[c->index];
	uint32_t left = (s->length_bytes - c->offset_bytes) / ATA_SECTOR_BYTES;
	uint32_t n = left < max_sectors ? left : max_sectors;
	uint8_t *p = (uint8_t *)s->buffer + c->offset_bytes;
	c->offset_bytes += n * ATA_SECTOR_BYTES;
	if (c->offset_bytes == s->length_bytes) {
		c->index++;
		c->offset_bytes = 0;
	}
	*sectors = n;
	return p;
}

/*
 * One PIO command of count sectors at lba: per DRQ block wait for BSY to
 * clear, check ERR/DRQ, then move the block with rep insw/outsw.
 */
static int ata_transfer(struct ata_driver *d, bool is_write, uint64_t lba, uint32_t count,
			struct ata_cursor *cursor)
{
	bool lba48 = lba + count > ATA_LBA28_LIMIT || count > ATA_LBA28_MAX_COUNT;
	bool multiple = d->multiple_sectors > 1;
	uint8_t command;
	if (is_write)
		command = multiple ? (lba48 ? ATA_CMD_WRITE_MULTIPLE_EXT : ATA_CMD_WRITE_MULTIPLE)
				   : (lba48 ? ATA_CMD_WRITE_SECTORS_EXT : ATA_CMD_WRITE_SECTORS);
	else
		command = multiple ? (lba48 ? ATA_CMD_READ_MULTIPLE_EXT : ATA_CMD_READ_MULTIPLE)
				   : (lba48 ? ATA_CMD_READ_SECTORS_EXT : ATA_CMD_READ_SECTORS);
	uint32_t block = multiple ? d->multiple_sectors : 1;
	int err = ata_issue(d, command, lba, count, lba48);
	if (err)
		return err;
	uint16_t data_port = (uint16_t)(d->io_base + ATA_DATA);
	while (count) {
		int status = ata_wait_idle(d);
		if (status < 0 || (status & (ATA_STATUS_ERR | ATA_STATUS_DF)))
			return ata_error(d, status, is_write);
		if (!(status & ATA_STATUS_DRQ))
			return ata_error(d, -1, is_write); /* protocol broken */
		uint32_t block_left = count < block ? count : block;
		count -= block_left;
		while (block_left) {
			uint32_t sectors;
			uint8_t *p = cursor_take(cursor, block_left, &sectors);
			if (d->pio32 && is_write)
				kg_outsl(data_port, p, sectors * ATA_SECTOR_WORDS / 2);
			else if (d->pio32)
				kg_insl(data_port, p, sectors * ATA_SECTOR_WORDS / 2);
			else if (is_write)
				kg_outsw(data_port, p, sectors * ATA_SECTOR_WORDS);
			else
				kg_insw(data_port, p, sectors * ATA_SECTOR_WORDS);
			block_left -= sectors;
		}
	}
	/* The device ends the command after the last block (writes: once
	 * the data is down); its status says how it went. */
	int status = ata_wait_idle(d);
	if (status < 0 || (status & (ATA_STATUS_ERR | ATA_STATUS_DF)))
		return ata_error(d, status, is_write);
	d->known_idle = !(status & ATA_STATUS_DRQ);
	return 0;
}

/* A whole read/write request, split into commands the device can take. */
static int ata_read_write(struct ata_driver *d, bool is_write, uint64_t sector,
			  uint64_t total_sectors, struct ata_cursor *cursor)
{
	uint64_t limit = d->lba48 ? ATA_LBA48_LIMIT : ATA_LBA28_LIMIT;
	/* Checked up front so a failed request has changed nothing.  The
	 * device checks again (IDNF), and refuses writes to a read-only
	 * image (ABRT), which comes back as -EROFS. */
	if (sector > d->capacity_sectors || total_sectors > d->capacity_sectors - sector ||
	    sector + total_sectors > limit)
		return is_write && d->readonly ? -KAPSEL_EROFS : -KAPSEL_ERANGE; /* PV's order */
	while (total_sectors) {
		/* LBA28 commands need fewer register writes: use them while
		 * the range allows. */
		uint32_t max = ATA_LBA28_MAX_COUNT;
		if (d->lba48 && sector + ATA_LBA28_MAX_COUNT > ATA_LBA28_LIMIT)
			max = ATA_LBA48_MAX_COUNT;
		uint32_t count = total_sectors < max ? (uint32_t)total_sectors : max;
		int err = ata_transfer(d, is_write, sector, count, cursor);
		if (err)
			return err;
		sector += count;
		total_sectors -= count;
	}
	return 0;
}

static int ata_flush(struct ata_driver *d)
{
	return ata_command_no_data(d, d->lba48 ? ATA_CMD_FLUSH_CACHE_EXT : ATA_CMD_FLUSH_CACHE, 0);
}

static int ata_get_info(struct kg_block_device *device, const struct kg_block_request *request)
{
	if (request->segment_count < 1 ||
	    request->segments[0].length_bytes < sizeof(struct kapsel_blk_info))
		return -KAPSEL_EINVAL;
	struct kapsel_blk_info *info = request->segments[0].buffer;
	memset(info, 0, sizeof(*info));
	info->magic = KAPSEL_BLK_INFO_MAGIC;
	info->revision = 1;
	info->capacity_sectors = device->info.capacity_sectors;
	info->logical_sector_bytes = device->info.logical_sector_bytes;
	info->physical_sector_bytes = device->info.physical_sector_bytes;
	info->readonly = device->info.readonly;
	info->max_segments = device->info.max_segments;
	info->features = device->info.features;
	return 0;
}

static int ata_execute(struct kg_block_device *device, struct kg_block_request *request)
{
	struct ata_driver *d = to_driver(device);
	struct ata_cursor cursor = { .segments = request->segments,
				     .segment_count = request->segment_count };
	uint64_t sectors = 0;

	switch (request->op) {
	case KAPSEL_BLK_OP_READ:
	case KAPSEL_BLK_OP_WRITE:
		if (request->segment_count > KAPSEL_BLK_MAX_SEGMENTS)
			return -KAPSEL_EINVAL;
		for (uint32_t i = 0; i < request->segment_count; i++) {
			uint32_t length = request->segments[i].length_bytes;
			if (length == 0 || length % ATA_SECTOR_BYTES)
				return -KAPSEL_EINVAL;
			sectors += length / ATA_SECTOR_BYTES;
		}
		return ata_read_write(d, request->op == KAPSEL_BLK_OP_WRITE, request->sector,
				      sectors, &cursor);
	case KAPSEL_BLK_OP_WRITE_ZEROES:
		cursor.zeroes = true;
		return ata_read_write(d, true, request->sector, request->sector_count, &cursor);
	case KAPSEL_BLK_OP_FLUSH:
		return ata_flush(d);
	case KAPSEL_BLK_OP_GET_INFO:
		return ata_get_info(device, request);
	case KAPSEL_BLK_OP_DISCARD:
		/* A hint: this ATA disk has no TRIM, so the data stays (the
		 * block API leaves discarded contents unspecified). */
		if (d->readonly)
			return -KAPSEL_EROFS;
		if (request->sector > d->capacity_sectors ||
		    request->sector_count > d->capacity_sectors - request->sector)
			return -KAPSEL_ERANGE;
		return 0;
	default:
		return -KAPSEL_EINVAL;
	}
}

/* ---- Driver ops: queue depth 1, the work happens in submit --------------- */

static int ata_submit(struct kg_block_device *device, struct kg_block_request *request)
{
	struct ata_driver *d = to_driver(device);
	if (d->completed)
		return -KAPSEL_EAGAIN;
	request->submit_tsc = kg_rdtsc();
	request->pickup_tsc = request->complete_tsc = 0;
	request->status = ata_execute(device, request);
	d->completed = request;
	return 0;
}

static void ata_kick(struct kg_block_device *device)
{
	(void)device; /* submit already did the work */
}

static unsigned ata_reap(struct kg_block_device *device, struct kg_block_request **done,
			 unsigned max, unsigned wake_count)
{
	struct ata_driver *d = to_driver(device);
	(void)wake_count; /* nothing is ever pending in the background */
	if (!d->completed || max == 0)
		return 0;
	d->completed->reap_tsc = kg_rdtsc();
	done[0] = d->completed;
	d->completed = 0;
	return 1;
}

static const struct kg_block_driver_ops ata_driver_ops = {
	.submit = ata_submit,
	.kick = ata_kick,
	.reap = ata_reap,
};

/* ---- Probe --------------------------------------------------------------- */

static bool identify_checksum_ok(const uint16_t *id)
{
	if ((id[255] & 0xff) != 0xa5)
		return true; /* no checksum offered (pre-ATA-5 drive) */
	uint8_t sum = 0;
	for (unsigned i = 0; i < 256; i++)
		sum = (uint8_t)(sum + (id[i] & 0xff) + (id[i] >> 8));
	return sum == 0;
}

/* Reset, check the ATA signature, IDENTIFY.  Returns 0 or an errno. */
static int ata_probe(struct ata_driver *d, uint16_t *id)
{
	uint16_t base = d->io_base;

	kg_outb(d->io_ctl, ATA_CONTROL_NIEN); /* we poll; no interrupts */
	kg_outb((uint16_t)(base + ATA_DEVICE), ATA_DEVICE_LEGACY);
	ata_settle(d);
	if (ata_status(d) == ATA_STATUS_FLOATING)
		return -KAPSEL_ENODEV; /* no controller */
	ata_soft_reset(d);
	uint8_t status = ata_status(d);
	if (status == 0 || (status & ATA_STATUS_BSY))
		return -KAPSEL_ENODEV; /* no drive 0, or it never came back */
	/* After reset: count 1, LBA low 1; LBA mid/high 0/0 for an ATA disk
	 * (ATAPI says 14h/EBh and is not ours). */
	if (kg_inb((uint16_t)(base + ATA_COUNT)) != 1 ||
	    kg_inb((uint16_t)(base + ATA_LBA_LOW)) != 1 ||
	    kg_inb((uint16_t)(base + ATA_LBA_MID)) != 0 ||
	    kg_inb((uint16_t)(base + ATA_LBA_HIGH)) != 0)
		return -KAPSEL_ENODEV;

	ata_write_device(d, ATA_DEVICE_LEGACY | ATA_DEVICE_LBA);
	kg_outb((uint16_t)(base + ATA_COMMAND), ATA_CMD_IDENTIFY_DEVICE);
	int st = ata_wait_idle(d);
	if (st < 0 || (st & ATA_STATUS_ERR) || !(st & ATA_STATUS_DRQ))
		return -KAPSEL_ENODEV;
	kg_insw((uint16_t)(base + ATA_DATA), id, 256);
	st = ata_wait_idle(d);
	if (st < 0 || (st & (ATA_STATUS_ERR | ATA_STATUS_DRQ)) || !identify_checksum_ok(id))
		return -KAPSEL_EIO;
	if (!(id[49] & (1u << 9)))
		return -KAPSEL_ENODEV; /* CHS-only drives are not supported */

	/* Word 83 is valid when bit 14 is set and bit 15 clear. */
	bool word83_valid = (id[83] & 0xc000) == 0x4000;
	uint64_t lba28 = (uint64_t)id[60] | (uint64_t)id[61] << 16;
	uint64_t lba48 = (uint64_t)id[100] | (uint64_t)id[101] << 16 | (uint64_t)id[102] << 32 |
			 (uint64_t)id[103] << 48;
	d->lba48 = word83_valid && (id[83] & (1u << 10)) && lba48 != 0;
	d->capacity_sectors = d->lba48 ? lba48 : lba28;

	/* Multiple mode: the largest power of two the drive allows. */
	uint32_t max_multiple = id[47] & 0xff;
	uint32_t multiple = 1;
	while (multiple * 2 <= max_multiple && multiple * 2 <= ATA_WANTED_MULTIPLE)
		multiple *= 2;
	d->multiple_sectors = 0;
	if (multiple > 1 &&
	    ata_command_no_data(d, ATA_CMD_SET_MULTIPLE_MODE, (uint8_t)multiple) == 0)
		d->multiple_sectors = multiple;
	return 0;
}

int kg_blk_ata_open(const struct kapsel_device_desc *desc, struct kg_block_device *device)
{
	uint16_t id[256];
	struct ata_driver probe = { .io_base = ATA_LEGACY_IO_BASE,
				    .io_ctl = ATA_LEGACY_IO_CTL,
				    .device_shadow = -1 };

	if (desc) {
		if (desc->type != KAPSEL_DEV_ATA_DISK || !desc->io_base || !desc->io_ctl)
			return -KAPSEL_ENODEV;
		probe.io_base = desc->io_base;
		probe.io_ctl = desc->io_ctl;
		probe.readonly = (desc->flags & KAPSEL_DEVICE_FLAG_READONLY) != 0;
		/* Kapsel's emulated controller takes 32-bit data accesses (as
		 * PCI IDE controllers do); a legacy ISA one may not. */
		probe.pio32 = true;
	} else if (kg_platform_is_kapsel()) {
		/* Kapsel opens the ATA ports only when it offers an ATA disk;
		 * touching them otherwise would fault. */
		return -KAPSEL_ENODEV;
	}
	int err = ata_probe(&probe, id);
	if (err)
		return err;
	struct ata_driver *d = kg_os_alloc_pages(1);
	if (!d)
		return -KAPSEL_EIO;
	*d = probe;

	memset(device, 0, sizeof(*device));
	device->ops = &ata_driver_ops;
	device->driver = d;
	device->info.capacity_sectors = d->capacity_sectors;
	device->info.logical_sector_bytes = ATA_SECTOR_BYTES;
	device->info.physical_sector_bytes = ATA_SECTOR_BYTES;
	device->info.readonly = d->readonly;
	device->info.max_segments = KAPSEL_BLK_MAX_SEGMENTS;
	device->info.queue_depth = 1;
	device->info.features = KAPSEL_BLK_FEATURE_FLUSH | KAPSEL_BLK_FEATURE_WRITE_ZEROES;
	device->info.path = KG_BLOCK_ATA;

	char line[128];
	kg_snprintf(line, sizeof(line),
		    "ata: disk at 0x%x/0x%x: %llu sectors, %s, multiple %u, %s PIO%s", d->io_base,
		    d->io_ctl, (unsigned long long)d->capacity_sectors,
		    d->lba48 ? "lba48" : "lba28", d->multiple_sectors,
		    d->pio32 ? "32-bit" : "16-bit", d->readonly ? ", read-only" : "");
	kg_os_log(line);
	return 0;
}
