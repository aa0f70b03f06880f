/* Emulated ATA disk device: ports 0x1f0-0x1f7 and 0x3f6 of the VM wired to the ATA state machine (ata.c). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "devices/block/ata.h"
#include "devices/devices.h"
#include "core/log.h"
#include "core/vm.h"
#include "state/vm_state.h"

#define ATA_PRIMARY_COMMAND_BASE 0x1f0u
#define ATA_PRIMARY_CONTROL_PORT 0x3f6u
#define ATA_COMMAND_PORT_COUNT 8u
/* A status poll while the rate limiter holds a command sleeps at most
 * this long, so waiting costs a few exits instead of thousands. */
#define ATA_BUSY_POLL_SLEEP_NS 1000000ull

struct dev_ata {
	struct kapsel_device dev;
	struct disk_image disk;
	struct ata_state ata;
};

static struct dev_ata *to_dev_ata(struct kapsel_device *dev)
{
	return dev->priv;
}

static uint64_t dev_ata_clock(void *clock_context)
{
	return vm_clock_ns(clock_context);
}

static unsigned port_register(const struct kapsel_device *dev, uint16_t port)
{
	return port == dev->io_ctl_port ? ATA_REG_CONTROL : (unsigned)(port - dev->io_port_base);
}

/* A rate-limited command is BSY: let a polling guest wait in the host. */
static void wait_if_held(struct dev_ata *d, unsigned reg)
{
	if (reg != ATA_REG_STATUS_COMMAND && reg != ATA_REG_CONTROL)
		return;
	uint64_t remaining = ata_busy_remaining_ns(&d->ata);
	if (!remaining)
		return;
	if (remaining > ATA_BUSY_POLL_SLEEP_NS)
		remaining = ATA_BUSY_POLL_SLEEP_NS;
	struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)remaining };
	nanosleep(&ts, NULL);
}

static void dev_ata_io_read(struct kapsel_device *dev, uint16_t port, unsigned size,
			    uint32_t *value)
{
	struct dev_ata *d = to_dev_ata(dev);
	unsigned reg = port_register(dev, port);
	wait_if_held(d, reg);
	*value = ata_io_read(&d->ata, reg, size);
}

static void dev_ata_io_write(struct kapsel_device *dev, uint16_t port, unsigned size,
			     uint32_t value)
{
	struct dev_ata *d = to_dev_ata(dev);
	ata_io_write(&d->ata, port_register(dev, port), size, value);
}

/* rep insw/outsw on the data register: one copy for the whole string. */
static void dev_ata_io_string(struct kapsel_device *dev, uint16_t port, unsigned size,
			      uint32_t count, bool is_write, void *data)
{
	struct dev_ata *d = to_dev_ata(dev);
	unsigned reg = port_register(dev, port);
	if (reg == ATA_REG_DATA) {
		if (is_write)
			ata_data_write(&d->ata, data, (size_t)size * count);
		else
			ata_data_read(&d->ata, data, (size_t)size * count);
		return;
	}
	device_io_each(dev, port, size, count, is_write, data);
}

static void dev_ata_print_stats(struct kapsel_device *dev, FILE *out)
{
	struct dev_ata *d = to_dev_ata(dev);
	ata_print_stats(&d->ata, dev->exits, out);
	d->disk.stats.exits = dev->exits;
	disk_stats_print(&d->disk, out);
}

static void dev_ata_destroy(struct kapsel_device *dev)
{
	struct dev_ata *d = to_dev_ata(dev);
	ata_destroy(&d->ata);
	disk_image_close(&d->disk);
	free(d);
}

/* ---- VM state (snapshot.c): registers and the PIO command in progress ---- */

#define DEV_ATA_BUFFER_BYTES (ATA_BUFFER_SECTORS * KAPSEL_BLK_SECTOR_BYTES)

static int dev_ata_save(struct kapsel_device *dev, struct vm_state_writer *out)
{
	const struct ata_state *a = &to_dev_ata(dev)->ata;
	struct vm_state_ata_disk rec = {
		.feature = a->feature,
		.feature_hob = a->feature_hob,
		.count = a->count,
		.count_hob = a->count_hob,
		.lba_low = a->lba_low,
		.lba_low_hob = a->lba_low_hob,
		.lba_mid = a->lba_mid,
		.lba_mid_hob = a->lba_mid_hob,
		.lba_high = a->lba_high,
		.lba_high_hob = a->lba_high_hob,
		.device = a->device,
		.status = a->status,
		.error = a->error,
		.control = a->control,
		.multiple_sectors = a->multiple_sectors,
		.write_cache = a->write_cache,
		.command = a->command,
		.transfer = (uint8_t)a->transfer,
		.op = (uint8_t)a->op,
		.disk_op_open = a->disk_op_open,
		.held_by_rate_limit = a->held_by_rate_limit,
		.held_until_ns = a->held_until_ns,
		.command_start_ns = a->command_start_ns,
		.command_lba = a->command_lba,
		.command_sectors = a->command_sectors,
		.sectors_left = a->sectors_left,
		.block_sectors = a->block_sectors,
		.block_bytes_left = a->block_bytes_left,
		.buffer_lba = a->buffer_lba,
		.buffer_bytes = a->buffer_bytes,
		.buffer_pos = a->buffer_pos,
		.block_start_pos = a->block_start_pos,
		.counters = { a->counters.commands, a->counters.commands_failed,
			      a->counters.sectors_read, a->counters.sectors_written,
			      a->counters.software_resets, a->counters.rate_limit_waits },
	};
	/* Reads hold buffer_bytes of image data, writes buffer_pos bytes of
	 * guest data not yet on the image. */
	uint32_t held = a->buffer_bytes > a->buffer_pos ? a->buffer_bytes : a->buffer_pos;
	if (held > DEV_ATA_BUFFER_BYTES)
		held = DEV_ATA_BUFFER_BYTES;
	rec.buffer_saved_bytes = a->transfer == ATA_TRANSFER_NONE ? 0 : held;
	struct iovec iov[2] = { { &rec, sizeof(rec) }, { a->buffer, rec.buffer_saved_bytes } };
	return vm_state_putv(out, VM_STATE_DEV_ATA_DISK, VM_STATE_RECORD_MANDATORY, iov,
			     rec.buffer_saved_bytes ? 2 : 1);
}

static int dev_ata_load(struct kapsel_device *dev, uint32_t type, const void *payload,
			uint64_t length_bytes, char *error, size_t error_len)
{
	struct dev_ata *d = to_dev_ata(dev);
	struct ata_state *a = &d->ata;
	struct vm_state_ata_disk rec;
	if (type != VM_STATE_DEV_ATA_DISK)
		return -ENOENT;
	if (length_bytes < sizeof(rec)) {
		snprintf(error, error_len, "ATA record is %llu bytes, too short",
			 (unsigned long long)length_bytes);
		return -EINVAL;
	}
	memcpy(&rec, payload, sizeof(rec));
	if (length_bytes != sizeof(rec) + rec.buffer_saved_bytes ||
	    rec.buffer_saved_bytes > DEV_ATA_BUFFER_BYTES) {
		snprintf(error, error_len, "ATA record has an impossible buffer length");
		return -EINVAL;
	}
	/* Fill a candidate and let ata.c check it (every index it uses into
	 * its buffer and the image) before the device takes it. */
	struct ata_state c = *a;
	c.feature = rec.feature;
	c.feature_hob = rec.feature_hob;
	c.count = rec.count;
	c.count_hob = rec.count_hob;
	c.lba_low = rec.lba_low;
	c.lba_low_hob = rec.lba_low_hob;
	c.lba_mid = rec.lba_mid;
	c.lba_mid_hob = rec.lba_mid_hob;
	c.lba_high = rec.lba_high;
	c.lba_high_hob = rec.lba_high_hob;
	c.device = rec.device;
	c.status = rec.status;
	c.error = rec.error;
	c.control = rec.control;
	c.multiple_sectors = rec.multiple_sectors;
	c.write_cache = rec.write_cache != 0;
	c.command = rec.command;
	c.transfer = (enum ata_transfer)rec.transfer;
	c.op = (enum kapsel_blk_op)rec.op;
	c.disk_op_open = rec.disk_op_open != 0;
	c.held_by_rate_limit = rec.held_by_rate_limit != 0;
	c.held_until_ns = rec.held_until_ns;
	c.command_start_ns = rec.command_start_ns;
	c.command_lba = rec.command_lba;
	c.command_sectors = rec.command_sectors;
	c.sectors_left = rec.sectors_left;
	c.block_sectors = rec.block_sectors;
	c.block_bytes_left = rec.block_bytes_left;
	c.buffer_lba = rec.buffer_lba;
	c.buffer_bytes = rec.buffer_bytes;
	c.buffer_pos = rec.buffer_pos;
	c.block_start_pos = rec.block_start_pos;
	c.counters = (struct ata_counters){ rec.counters[0], rec.counters[1], rec.counters[2],
					    rec.counters[3], rec.counters[4], rec.counters[5] };
	const char *bad = ata_state_check(&c);
	if (bad) {
		snprintf(error, error_len, "ATA record has an impossible %s", bad);
		return -EINVAL;
	}
	*a = c;
	memset(a->buffer, 0, DEV_ATA_BUFFER_BYTES);
	memcpy(a->buffer, (const uint8_t *)payload + sizeof(rec), rec.buffer_saved_bytes);
	return 0;
}

/* The control plane changes the disk's policy at run time (control_verbs.c). */
static struct disk_image *dev_ata_disk_image(struct kapsel_device *dev)
{
	return &to_dev_ata(dev)->disk;
}

const struct kapsel_device_ops dev_ata_ops = {
	.name = "ata-disk",
	.type = KAPSEL_DEV_ATA_DISK,
	.io_read = dev_ata_io_read,
	.io_write = dev_ata_io_write,
	.io_string = dev_ata_io_string,
	.print_stats = dev_ata_print_stats,
	.destroy = dev_ata_destroy,
	.disk_image = dev_ata_disk_image,
	.save = dev_ata_save,
	.load = dev_ata_load,
};

/* FNV-1a of the image path: a stable serial number per image. */
static uint32_t path_hash(const char *path)
{
	uint32_t hash = 2166136261u;
	for (; *path; path++)
		hash = (hash ^ (uint8_t)*path) * 16777619u;
	return hash;
}

int dev_ata_create(struct kapsel_vm *vm, const struct vm_disk_config *disk, unsigned unit)
{
	char error[512];
	int err;

	if (devices_have(vm, &dev_ata_ops)) {
		kapsel_error("disk %u ('%s'): only one ATA disk is supported (drive 0 of the primary channel at 0x1f0); "
			     "attach this one as a PV disk (bus=pv, or <target bus='xen'/>)",
			     unit, disk->path);
		return -EINVAL;
	}
	struct dev_ata *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	err = disk_image_open(&d->disk, disk, vm_clock_ns(vm), error, sizeof(error));
	if (err) {
		kapsel_error("%s", error);
		free(d);
		return err;
	}
	err = ata_init(&d->ata, &d->disk, dev_ata_clock, vm, path_hash(disk->path));
	if (err) {
		kapsel_error("disk %u ('%s'): no memory for the ATA buffer", unit, disk->path);
		goto fail_disk;
	}
	device_init_emulated(&d->dev, &dev_ata_ops, d, ATA_PRIMARY_COMMAND_BASE,
			     ATA_COMMAND_PORT_COUNT, ATA_PRIMARY_CONTROL_PORT, unit);
	d->dev.desc.capacity_sectors = d->disk.capacity_sectors;
	d->dev.desc.flags = disk->readonly ? KAPSEL_DEVICE_FLAG_READONLY : 0;
	err = vm_add_device(vm, &d->dev);
	if (err) {
		if (err == -ENOSPC)
			kapsel_error("disk %u ('%s'): too many devices (at most %u); remove a disk",
				     unit, disk->path, KAPSEL_MAX_DEVICES);
		else
			kapsel_error("disk %u ('%s'): the ATA ports 0x1f0-0x1f7 are already taken by another device",
				     unit, disk->path);
		dev_ata_destroy(&d->dev);
		return err;
	}
	return 0;

fail_disk:
	disk_image_close(&d->disk);
	free(d);
	return err;
}
