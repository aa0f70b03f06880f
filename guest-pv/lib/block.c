/* Guest block API: finds a disk, picks its driver (PV ring or ATA PIO), checks arguments and builds the synchronous calls. */
#include "block_internal.h"

#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/smp.h"

#define PAGE_BYTES 4096u
/* The synchronous helpers split a transfer into requests of at most this. */
#define SYNC_REQUEST_MAX_BYTES (1024u * 1024u)

/* The descriptor of disk index on path (AUTO: whichever is offered). */
static const struct kapsel_device_desc *find_disk(unsigned index, enum kg_block_path path)
{
	return kg_platform_find_unit(index,
				     path != KG_BLOCK_ATA ? KAPSEL_DEV_BLOCK_PV : KAPSEL_DEV_NONE,
				     path != KG_BLOCK_PV ? KAPSEL_DEV_ATA_DISK : KAPSEL_DEV_NONE);
}

int kg_block_open(unsigned index, enum kg_block_path path, struct kg_block_device **device)
{
	const struct kapsel_device_desc *desc = 0;
	*device = 0;
	if (path != KG_BLOCK_AUTO && path != KG_BLOCK_PV && path != KG_BLOCK_ATA &&
	    path != KG_BLOCK_VIRTIO)
		return -KAPSEL_EINVAL;
	if (kg_platform_is_kapsel()) {
		if (path == KG_BLOCK_VIRTIO)
			return -KAPSEL_ENODEV;
		desc = find_disk(index, path);
		if (!desc)
			return -KAPSEL_ENODEV;
	} else if (path == KG_BLOCK_PV) {
		return -KAPSEL_ENODEV;
	}
	struct kg_block_device *dev =
		kg_os_alloc_pages((sizeof(*dev) + PAGE_BYTES - 1) / PAGE_BYTES);
	if (!dev)
		return -KAPSEL_ENOMEM;
	int err;
	dev->queue_count = 1; /* the PV driver may serve more */
	if (desc && desc->type == KAPSEL_DEV_BLOCK_PV) {
		err = kg_blk_pv_open(desc, dev);
	} else if (desc) {
		err = kg_blk_ata_open(desc, dev);
	} else {
		/* Off Kapsel: virtio-blk disks (microvm) come first, then the
		 * legacy primary ATA disk, the only ATA one there can be. */
		err = -KAPSEL_ENODEV;
		if (path != KG_BLOCK_ATA)
			err = kg_blk_virtio_open(index, dev);
		if (err == -KAPSEL_ENODEV && path != KG_BLOCK_VIRTIO && index == 0)
			err = kg_blk_ata_open(0, dev);
	}
	if (err)
		return err;
	*device = dev;
	return 0;
}

void kg_block_get_info(struct kg_block_device *device, struct kg_block_info *info)
{
	*info = device->info;
}

static bool aligned_512(const void *p)
{
	return ((uintptr_t)p & (KAPSEL_BLK_SECTOR_BYTES - 1)) == 0;
}

/* Shape checks shared by both drivers (bounds and read-only are the
 * hypervisor's to enforce). */
static int check_request(const struct kg_block_device *device,
			 const struct kg_block_request *request)
{
	uint32_t count = request->segment_count;
	switch (request->op) {
	case KAPSEL_BLK_OP_READ:
	case KAPSEL_BLK_OP_WRITE:
		if (count == 0 || count > device->info.max_segments)
			return -KAPSEL_EINVAL;
		break;
	case KAPSEL_BLK_OP_GET_INFO:
		if (count != 1)
			return -KAPSEL_EINVAL;
		break;
	case KAPSEL_BLK_OP_FLUSH:
	case KAPSEL_BLK_OP_DISCARD:
	case KAPSEL_BLK_OP_WRITE_ZEROES:
		if (count != 0)
			return -KAPSEL_EINVAL;
		break;
	default:
		return -KAPSEL_EINVAL;
	}
	for (uint32_t i = 0; i < count; i++) {
		const struct kg_block_segment *seg = &request->segments[i];
		if (!seg->buffer || !aligned_512(seg->buffer) || seg->length_bytes == 0 ||
		    seg->length_bytes % KAPSEL_BLK_SECTOR_BYTES)
			return -KAPSEL_EINVAL;
	}
	return 0;
}

unsigned kg_block_queue_here(const struct kg_block_device *device)
{
	return device->queue_count > 1 ? kg_cpu_id() % device->queue_count : 0;
}

int kg_block_submit(struct kg_block_device *device, struct kg_block_request *request)
{
	int err = check_request(device, request);
	if (err)
		return err;
	unsigned q = kg_block_queue_here(device);
	if (__atomic_load_n(&device->queue_in_flight[q], __ATOMIC_RELAXED) >=
	    device->info.queue_depth)
		return -KAPSEL_EAGAIN;
	err = device->ops->submit(device, request);
	if (err)
		return err;
	__atomic_fetch_add(&device->queue_in_flight[q], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&device->in_flight, 1, __ATOMIC_RELAXED);
	KG_BLOCK_COUNT(device, requests);
	return 0;
}

void kg_block_kick(struct kg_block_device *device)
{
	device->ops->kick(device);
}

/* wake_count as the driver's reap: 0 does not wait. */
static unsigned reap(struct kg_block_device *device, struct kg_block_request **done, unsigned max,
		     unsigned wake_count)
{
	unsigned q = kg_block_queue_here(device);
	if (__atomic_load_n(&device->queue_in_flight[q], __ATOMIC_RELAXED) == 0)
		return 0;
	unsigned n = device->ops->reap(device, done, max, wake_count);
	__atomic_fetch_sub(&device->queue_in_flight[q], n, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&device->in_flight, n, __ATOMIC_RELAXED);
	return n;
}

unsigned kg_block_reap(struct kg_block_device *device, struct kg_block_request **done, unsigned max,
		       bool wait)
{
	return reap(device, done, max, wait ? 1 : 0);
}

unsigned kg_block_reap_batch(struct kg_block_device *device, struct kg_block_request **done,
			     unsigned max, unsigned wake_count)
{
	return reap(device, done, max, wake_count ? wake_count : 1);
}

unsigned kg_block_in_flight(struct kg_block_device *device)
{
	return __atomic_load_n(&device->queue_in_flight[kg_block_queue_here(device)],
			       __ATOMIC_RELAXED);
}

unsigned kg_block_queue_count(struct kg_block_device *device)
{
	return device->queue_count;
}

void kg_block_get_stats(struct kg_block_device *device, struct kg_block_stats *stats)
{
	*stats = device->stats;
}

void kg_block_set_poll_ns(struct kg_block_device *device, uint64_t poll_ns)
{
	device->poll_ns = poll_ns;
}

/* ---- Synchronous helpers: one request at a time on submit/kick/reap ---- */

static int run_one(struct kg_block_device *device, struct kg_block_request *request)
{
	int err = kg_block_submit(device, request);
	if (err)
		return err;
	/* No kg_block_kick: reap publishes it, and on the PV path the kick
	 * may go with the sleep (one exit for both). */
	struct kg_block_request *done = 0;
	while (kg_block_reap(device, &done, 1, true) == 0)
		;
	return done == request ? request->status : -KAPSEL_EIO;
}

/*
 * Split [buffer, buffer + bytes) into segments of guest-physically
 * contiguous memory (pages may be scattered in a real kernel) and issue it
 * as requests of at most max_segments segments and SYNC_REQUEST_MAX_BYTES.
 */
static int transfer(struct kg_block_device *device, enum kapsel_blk_op op, uint64_t sector,
		    uint8_t *buffer, uint64_t bytes)
{
	if (kg_block_in_flight(device))
		return -KAPSEL_EBUSY; /* would steal asynchronous completions */
	if (!aligned_512(buffer))
		return -KAPSEL_EINVAL;
	while (bytes) {
		struct kg_block_request request = { .op = op, .sector = sector };
		uint64_t request_bytes = 0;
		while (bytes && request_bytes < SYNC_REQUEST_MAX_BYTES) {
			/* Up to the end of this page, then merge following pages
			 * while they are physically adjacent. */
			uint8_t *start = buffer;
			uint64_t phys = kg_os_virt_to_phys(start);
			uint64_t len = PAGE_BYTES - ((uintptr_t)start & (PAGE_BYTES - 1));
			while (len < bytes && request_bytes + len < SYNC_REQUEST_MAX_BYTES &&
			       kg_os_virt_to_phys(start + len) == phys + len)
				len += PAGE_BYTES;
			if (len > bytes)
				len = bytes;
			if (request_bytes + len > SYNC_REQUEST_MAX_BYTES)
				len = SYNC_REQUEST_MAX_BYTES - request_bytes;
			struct kg_block_segment *seg = &request.segments[request.segment_count++];
			seg->buffer = start;
			seg->length_bytes = (uint32_t)len;
			buffer += len;
			bytes -= len;
			request_bytes += len;
			if (request.segment_count == device->info.max_segments)
				break;
		}
		int err = run_one(device, &request);
		if (err)
			return err;
		sector += request_bytes / KAPSEL_BLK_SECTOR_BYTES;
	}
	return 0;
}

int kg_block_read(struct kg_block_device *device, uint64_t sector, void *buffer,
		  uint32_t sector_count)
{
	return transfer(device, KAPSEL_BLK_OP_READ, sector, buffer,
			(uint64_t)sector_count * KAPSEL_BLK_SECTOR_BYTES);
}

int kg_block_write(struct kg_block_device *device, uint64_t sector, const void *buffer,
		   uint32_t sector_count)
{
	/* The driver only reads a write's buffer. */
	return transfer(device, KAPSEL_BLK_OP_WRITE, sector, (uint8_t *)(uintptr_t)buffer,
			(uint64_t)sector_count * KAPSEL_BLK_SECTOR_BYTES);
}

static int range_op(struct kg_block_device *device, enum kapsel_blk_op op, uint64_t sector,
		    uint64_t sector_count)
{
	if (device->in_flight)
		return -KAPSEL_EBUSY;
	struct kg_block_request request = { .op = op,
					    .sector = sector,
					    .sector_count = sector_count };
	return run_one(device, &request);
}

int kg_block_flush(struct kg_block_device *device)
{
	return range_op(device, KAPSEL_BLK_OP_FLUSH, 0, 0);
}

int kg_block_write_zeroes(struct kg_block_device *device, uint64_t sector, uint64_t sector_count)
{
	return range_op(device, KAPSEL_BLK_OP_WRITE_ZEROES, sector, sector_count);
}

int kg_block_discard(struct kg_block_device *device, uint64_t sector, uint64_t sector_count)
{
	return range_op(device, KAPSEL_BLK_OP_DISCARD, sector, sector_count);
}
