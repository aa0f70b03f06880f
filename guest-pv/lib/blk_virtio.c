/* virtio-blk driver over virtio-mmio (QEMU microvm; legacy and version 2 transports): one split virtqueue, completions polled, no interrupts. */
#include "block_internal.h"

#include "kapsel_guest/arch.h"
#include "kapsel_guest/libc.h"
#include "kapsel_guest/os_hooks.h"
#include "virtio_mmio.h"

#define VIRTIO_BLK_F_RO (1ull << 5)
#define VIRTIO_BLK_F_FLUSH (1ull << 9)

#define VIRTIO_BLK_T_IN 0u
#define VIRTIO_BLK_T_OUT 1u
#define VIRTIO_BLK_T_FLUSH 4u
#define VIRTIO_BLK_S_OK 0u
#define VIRTIO_BLK_S_UNSUPP 2u

/* A request is a chain of descriptors: header, up to
 * KAPSEL_BLK_MAX_SEGMENTS data, status.  With VIRTIO_F_RING_INDIRECT_DESC
 * (virtio 1.x, 2.7.5.3) the chain lives in a table of the request's own
 * and takes one ring entry, so every entry can be a request in flight;
 * without it each request owns a fixed group of ring entries. */
#define VIRTIO_F_RING_INDIRECT_DESC (1ull << 28)
#define VIRTQ_DESC_F_INDIRECT 4u
#define DESCRIPTORS_PER_REQUEST (KAPSEL_BLK_MAX_SEGMENTS + 2u)
#define REQUESTS_MAX VIRTQ_SIZE_MAX
#define PAGE_BYTES 4096u
/* Indirect tables, whole ones per page (each must be contiguous). */
#define TABLE_BYTES (DESCRIPTORS_PER_REQUEST * sizeof(struct virtq_desc))
#define TABLES_PER_PAGE (PAGE_BYTES / TABLE_BYTES)
#define TABLE_PAGES ((REQUESTS_MAX + TABLES_PER_PAGE - 1) / TABLES_PER_PAGE)

struct virtio_blk_header {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

struct virtio_blk {
	struct virtio_mmio transport;
	struct virtq queue;
	/* Read and written by the device: one per request group. */
	struct virtio_blk_header headers[REQUESTS_MAX];
	uint8_t status[REQUESTS_MAX];
	struct kg_block_request *slots[REQUESTS_MAX]; /* in flight, by group */
	bool indirect;				      /* VIRTIO_F_RING_INDIRECT_DESC */
	struct virtq_desc *tables[TABLE_PAGES];	      /* indirect: the table pages */
};
_Static_assert(sizeof(struct virtio_blk) <= PAGE_BYTES, "driver state fits a page");

static struct virtio_blk *to_driver(struct kg_block_device *device)
{
	return device->driver;
}

static int virtio_status(uint8_t status)
{
	if (status == VIRTIO_BLK_S_OK)
		return 0;
	return status == VIRTIO_BLK_S_UNSUPP ? -KAPSEL_ENOSYS : -KAPSEL_EIO;
}

static int virtio_submit(struct kg_block_device *device, struct kg_block_request *request)
{
	struct virtio_blk *v = to_driver(device);
	uint32_t type;
	switch (request->op) {
	case KAPSEL_BLK_OP_READ:
		type = VIRTIO_BLK_T_IN;
		break;
	case KAPSEL_BLK_OP_WRITE:
		if (device->info.readonly)
			return -KAPSEL_EROFS;
		type = VIRTIO_BLK_T_OUT;
		break;
	case KAPSEL_BLK_OP_FLUSH:
		type = VIRTIO_BLK_T_FLUSH;
		break;
	default:
		return -KAPSEL_ENOSYS; /* discard, write-zeroes, get-info: not offered */
	}
	uint64_t bytes = 0;
	for (uint32_t i = 0; i < request->segment_count; i++)
		bytes += request->segments[i].length_bytes;
	if (request->sector > device->info.capacity_sectors ||
	    bytes / KAPSEL_BLK_SECTOR_BYTES > device->info.capacity_sectors - request->sector)
		return -KAPSEL_ERANGE;

	unsigned slot = 0;
	while (slot < device->info.queue_depth && v->slots[slot])
		slot++;
	if (slot == device->info.queue_depth)
		return -KAPSEL_EAGAIN;

	struct virtq_desc *ring = v->queue.rings->desc, *desc = ring;
	uint16_t first = (uint16_t)(slot * DESCRIPTORS_PER_REQUEST), d = first;
	if (v->indirect) {
		/* The chain goes in the slot's table; ring entry slot points at it. */
		desc = v->tables[slot / TABLES_PER_PAGE] +
		       (slot % TABLES_PER_PAGE) * DESCRIPTORS_PER_REQUEST;
		first = (uint16_t)slot;
		d = 0;
	}
	v->headers[slot] = (struct virtio_blk_header){ .type = type, .sector = request->sector };
	v->status[slot] = 0xff; /* the device overwrites it */
	desc[d] = (struct virtq_desc){ .addr = kg_os_virt_to_phys(&v->headers[slot]),
				       .len = sizeof(v->headers[slot]),
				       .flags = VIRTQ_DESC_F_NEXT,
				       .next = (uint16_t)(d + 1) };
	d++;
	for (uint32_t i = 0; i < request->segment_count; i++, d++)
		desc[d] = (struct virtq_desc){
			.addr = kg_os_virt_to_phys(request->segments[i].buffer),
			.len = request->segments[i].length_bytes,
			.flags = (uint16_t)(VIRTQ_DESC_F_NEXT |
					    (type == VIRTIO_BLK_T_IN ? VIRTQ_DESC_F_WRITE : 0)),
			.next = (uint16_t)(d + 1)
		};
	desc[d] = (struct virtq_desc){ .addr = kg_os_virt_to_phys(&v->status[slot]),
				       .len = 1,
				       .flags = VIRTQ_DESC_F_WRITE };
	if (v->indirect)
		ring[first] = (struct virtq_desc){
			.addr = kg_os_virt_to_phys(desc),
			.len = (uint32_t)((d + 1u) * sizeof(struct virtq_desc)),
			.flags = VIRTQ_DESC_F_INDIRECT,
		};

	request->submit_tsc = kg_rdtsc();
	request->pickup_tsc = request->complete_tsc = 0;
	v->slots[slot] = request;
	kg_virtq_publish(&v->queue, first);
	return 0;
}

static void virtio_kick(struct kg_block_device *device)
{
	struct virtio_blk *v = to_driver(device);
	if (v->queue.avail_idx == v->queue.notified_idx)
		return; /* nothing published since the last kick */
	if (kg_virtq_notify(&v->transport, &v->queue))
		KG_BLOCK_COUNT(device, kicks);
	else
		KG_BLOCK_COUNT(device, kicks_suppressed);
}

static unsigned virtio_reap(struct kg_block_device *device, struct kg_block_request **done,
			    unsigned max, unsigned wake_count)
{
	struct virtio_blk *v = to_driver(device);
	bool wait = wake_count > 0; /* completions are polled: no batching */
	if (wait)
		virtio_kick(device); /* what the caller queued, before waiting for it */
	unsigned n = 0;
	for (;;) {
		struct virtq_used_elem e;
		while (n < max && kg_virtq_take_used(&v->queue, &e)) {
			unsigned group = v->indirect ? 1u : DESCRIPTORS_PER_REQUEST;
			unsigned slot = e.id / group;
			/* A device that names a chain we never gave it is broken. */
			if (e.id % group || slot >= device->info.queue_depth || !v->slots[slot]) {
				kg_os_log("virtio-blk: the device completed an unknown chain");
				continue;
			}
			struct kg_block_request *r = v->slots[slot];
			v->slots[slot] = 0;
			r->status = virtio_status(v->status[slot]);
			r->reap_tsc = kg_rdtsc();
			done[n++] = r;
		}
		if (n || !wait)
			return n;
		kg_cpu_relax();
	}
}

static const struct kg_block_driver_ops virtio_driver_ops = {
	.submit = virtio_submit,
	.kick = virtio_kick,
	.reap = virtio_reap,
};

int kg_blk_virtio_open(unsigned index, struct kg_block_device *device)
{
	uintptr_t base = kg_virtio_mmio_find(VIRTIO_ID_BLOCK, index);
	if (!base)
		return -KAPSEL_ENODEV;
	struct virtio_blk *v = kg_os_alloc_pages(1);
	if (!v)
		return -KAPSEL_ENOMEM;
	memset(v, 0, sizeof(*v));
	int err = kg_virtio_mmio_begin(&v->transport, base,
				       VIRTIO_BLK_F_RO | VIRTIO_BLK_F_FLUSH |
					       VIRTIO_F_RING_INDIRECT_DESC,
				       "virtio-blk");
	if (err)
		return err;
	v->indirect = (v->transport.features & VIRTIO_F_RING_INDIRECT_DESC) != 0;
	for (unsigned i = 0; v->indirect && i < TABLE_PAGES; i++) {
		v->tables[i] = kg_os_alloc_pages(1);
		if (!v->tables[i])
			return -KAPSEL_ENOMEM;
	}
	err = kg_virtio_mmio_queue(&v->transport, &v->queue, 0);
	if (err)
		return err;
	if (v->queue.size < DESCRIPTORS_PER_REQUEST) {
		kg_os_log("virtio-blk: queue 0 is too small for one request");
		return -KAPSEL_ENODEV;
	}
	kg_virtio_mmio_ready(&v->transport);
	/* Config space: the capacity in 512-byte sectors. */
	uint64_t capacity = kg_virtio_mmio_config32(&v->transport, 0) |
			    (uint64_t)kg_virtio_mmio_config32(&v->transport, 4) << 32;
	uint64_t features = v->transport.features;

	memset(device, 0, sizeof(*device));
	device->ops = &virtio_driver_ops;
	device->driver = v;
	device->info.capacity_sectors = capacity;
	device->info.logical_sector_bytes = KAPSEL_BLK_SECTOR_BYTES;
	device->info.physical_sector_bytes = KAPSEL_BLK_SECTOR_BYTES;
	device->info.readonly = (features & VIRTIO_BLK_F_RO) != 0;
	device->info.max_segments = KAPSEL_BLK_MAX_SEGMENTS;
	device->info.queue_depth =
		v->indirect ? v->queue.size : v->queue.size / DESCRIPTORS_PER_REQUEST;
	device->info.features = features & VIRTIO_BLK_F_FLUSH ? KAPSEL_BLK_FEATURE_FLUSH : 0;
	device->info.path = KG_BLOCK_VIRTIO;

	char line[128];
	kg_snprintf(line, sizeof(line),
		    "virtio-blk: disk at 0x%llx (%s): %llu sectors, queue %u, depth %u%s%s%s%s",
		    (unsigned long long)base, v->transport.legacy ? "legacy" : "virtio 1",
		    (unsigned long long)capacity, v->queue.size, device->info.queue_depth,
		    features & VIRTIO_F_EVENT_IDX ? ", event-idx" : "",
		    v->indirect ? ", indirect" : "", features & VIRTIO_BLK_F_FLUSH ? ", flush" : "",
		    device->info.readonly ? ", read-only" : "");
	kg_os_log(line);
	return 0;
}
