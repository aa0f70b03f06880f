/* virtio-blk driver over virtio-mmio (QEMU microvm; legacy and version 2 transports): one split virtqueue, completions polled, no interrupts. */
#include "block_internal.h"

#include "kapsel_guest/arch.h"
#include "kapsel_guest/libc.h"
#include "kapsel_guest/os_hooks.h"

/* Where QEMU's microvm puts its virtio-mmio transports (0x200 bytes each). */
#define VIRTIO_MMIO_BASE 0xfeb00000ull
#define VIRTIO_MMIO_STRIDE 0x200ull
#define VIRTIO_MMIO_SLOTS 24u

/* Registers (virtio 1.x, 4.2.2). */
#define VMMIO_MAGIC 0x000
#define VMMIO_VERSION 0x004
#define VMMIO_DEVICE_ID 0x008
#define VMMIO_DEVICE_FEATURES 0x010
#define VMMIO_DEVICE_FEATURES_SEL 0x014
#define VMMIO_DRIVER_FEATURES 0x020
#define VMMIO_DRIVER_FEATURES_SEL 0x024
#define VMMIO_QUEUE_SEL 0x030
#define VMMIO_QUEUE_NUM_MAX 0x034
#define VMMIO_GUEST_PAGE_SIZE 0x028 /* legacy */
#define VMMIO_QUEUE_NUM 0x038
#define VMMIO_QUEUE_ALIGN 0x03c /* legacy */
#define VMMIO_QUEUE_PFN 0x040	/* legacy */
#define VMMIO_QUEUE_READY 0x044
#define VMMIO_QUEUE_NOTIFY 0x050
#define VMMIO_STATUS 0x070
#define VMMIO_QUEUE_DESC_LOW 0x080
#define VMMIO_QUEUE_DESC_HIGH 0x084
#define VMMIO_QUEUE_DRIVER_LOW 0x090
#define VMMIO_QUEUE_DRIVER_HIGH 0x094
#define VMMIO_QUEUE_DEVICE_LOW 0x0a0
#define VMMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VMMIO_CONFIG_GENERATION 0x0fc
#define VMMIO_CONFIG 0x100

#define VIRTIO_MAGIC 0x74726976u /* "virt" */
#define VIRTIO_ID_BLOCK 2u

#define STATUS_ACKNOWLEDGE 1u
#define STATUS_DRIVER 2u
#define STATUS_DRIVER_OK 4u
#define STATUS_FEATURES_OK 8u
#define STATUS_FAILED 128u

#define VIRTIO_BLK_F_RO (1ull << 5)
#define VIRTIO_BLK_F_FLUSH (1ull << 9)
#define VIRTIO_F_VERSION_1 (1ull << 32)

#define VIRTIO_BLK_T_IN 0u
#define VIRTIO_BLK_T_OUT 1u
#define VIRTIO_BLK_T_FLUSH 4u
#define VIRTIO_BLK_S_OK 0u
#define VIRTIO_BLK_S_UNSUPP 2u

#define VIRTQ_DESC_F_NEXT 1u
#define VIRTQ_DESC_F_WRITE 2u
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1u
#define VIRTQ_USED_F_NO_NOTIFY 1u

/* Queue entries used; each request takes a fixed group of descriptors:
 * header, up to KAPSEL_BLK_MAX_SEGMENTS data, status. */
#define QUEUE_SIZE_MAX 128u
#define DESCRIPTORS_PER_REQUEST (KAPSEL_BLK_MAX_SEGMENTS + 2u)
#define REQUESTS_MAX (QUEUE_SIZE_MAX / DESCRIPTORS_PER_REQUEST)
#define PAGE_BYTES 4096u

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};
struct virtio_blk_header {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

/* Shared with the device: one page-aligned allocation, laid out as a
 * legacy device expects too (avail right after desc, used on the next
 * 4 KiB boundary). */
struct virtio_blk_shared {
	struct virtq_desc desc[QUEUE_SIZE_MAX]; /* 2 KiB, 16-byte aligned */
	struct {
		uint16_t flags, idx, ring[QUEUE_SIZE_MAX], used_event;
	} avail;
	uint8_t _pad[4096 - 16 * QUEUE_SIZE_MAX - 2 * (QUEUE_SIZE_MAX + 3)];
	struct {
		uint16_t flags, idx;
		struct virtq_used_elem ring[QUEUE_SIZE_MAX];
		uint16_t avail_event;
	} used; /* 4-byte aligned: at the start of the second page */
	struct virtio_blk_header headers[REQUESTS_MAX];
	uint8_t status[REQUESTS_MAX];
};
_Static_assert(__builtin_offsetof(struct virtio_blk_shared, used) == 4096, "used ring page");

struct virtio_blk {
	uintptr_t regs;
	struct virtio_blk_shared *shared;
	uint16_t queue_size;
	uint16_t avail_idx;  /* next avail ring entry we fill */
	uint16_t used_seen;  /* used ring entries consumed */
	uint64_t features;   /* negotiated */
	struct kg_block_request *slots[REQUESTS_MAX]; /* in flight, by group */
};

static uint32_t reg_read(const struct virtio_blk *v, uint32_t offset)
{
	return *(volatile uint32_t *)(v->regs + offset);
}

static void reg_write(const struct virtio_blk *v, uint32_t offset, uint32_t value)
{
	*(volatile uint32_t *)(v->regs + offset) = value;
}

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

	struct virtio_blk_shared *s = v->shared;
	uint16_t first = (uint16_t)(slot * DESCRIPTORS_PER_REQUEST), d = first;
	s->headers[slot] = (struct virtio_blk_header){ .type = type, .sector = request->sector };
	s->status[slot] = 0xff; /* the device overwrites it */
	s->desc[d] = (struct virtq_desc){ .addr = kg_os_virt_to_phys(&s->headers[slot]),
					  .len = sizeof(s->headers[slot]),
					  .flags = VIRTQ_DESC_F_NEXT,
					  .next = (uint16_t)(d + 1) };
	d++;
	for (uint32_t i = 0; i < request->segment_count; i++, d++)
		s->desc[d] = (struct virtq_desc){
			.addr = kg_os_virt_to_phys(request->segments[i].buffer),
			.len = request->segments[i].length_bytes,
			.flags = (uint16_t)(VIRTQ_DESC_F_NEXT |
					    (type == VIRTIO_BLK_T_IN ? VIRTQ_DESC_F_WRITE : 0)),
			.next = (uint16_t)(d + 1)
		};
	s->desc[d] = (struct virtq_desc){ .addr = kg_os_virt_to_phys(&s->status[slot]),
					  .len = 1,
					  .flags = VIRTQ_DESC_F_WRITE };

	request->submit_tsc = kg_rdtsc();
	request->pickup_tsc = request->complete_tsc = 0;
	v->slots[slot] = request;
	s->avail.ring[v->avail_idx % v->queue_size] = first;
	v->avail_idx++;
	/* The descriptors and ring entry are visible before the index. */
	__atomic_store_n(&s->avail.idx, v->avail_idx, __ATOMIC_RELEASE);
	return 0;
}

static void virtio_kick(struct kg_block_device *device)
{
	struct virtio_blk *v = to_driver(device);
	/* The index store is globally visible before we read the device's
	 * "no notify" hint and write the doorbell. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!(__atomic_load_n(&v->shared->used.flags, __ATOMIC_ACQUIRE) & VIRTQ_USED_F_NO_NOTIFY))
		reg_write(v, VMMIO_QUEUE_NOTIFY, 0);
}

static unsigned virtio_reap(struct kg_block_device *device, struct kg_block_request **done,
			    unsigned max, bool wait)
{
	struct virtio_blk *v = to_driver(device);
	struct virtio_blk_shared *s = v->shared;
	unsigned n = 0;
	for (;;) {
		/* Read the device's index once; entries below it are complete. */
		uint16_t used_idx = __atomic_load_n(&s->used.idx, __ATOMIC_ACQUIRE);
		while (n < max && v->used_seen != used_idx) {
			struct virtq_used_elem e = s->used.ring[v->used_seen % v->queue_size];
			v->used_seen++;
			unsigned slot = e.id / DESCRIPTORS_PER_REQUEST;
			/* A device that names a chain we never gave it is broken. */
			if (e.id % DESCRIPTORS_PER_REQUEST || slot >= device->info.queue_depth ||
			    !v->slots[slot]) {
				kg_os_log("virtio-blk: the device completed an unknown chain");
				continue;
			}
			struct kg_block_request *r = v->slots[slot];
			v->slots[slot] = 0;
			r->status = virtio_status(s->status[slot]);
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

/* The index-th virtio-mmio transport holding a block device, or 0. */
static uintptr_t find_transport(unsigned index)
{
	for (unsigned i = 0; i < VIRTIO_MMIO_SLOTS; i++) {
		uintptr_t base = (uintptr_t)(VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE);
		struct virtio_blk probe = { .regs = base };
		if (reg_read(&probe, VMMIO_MAGIC) != VIRTIO_MAGIC ||
		    reg_read(&probe, VMMIO_DEVICE_ID) != VIRTIO_ID_BLOCK)
			continue;
		if (index-- == 0)
			return base;
	}
	return 0;
}

static int fail(struct virtio_blk *v, const char *why)
{
	reg_write(v, VMMIO_STATUS, reg_read(v, VMMIO_STATUS) | STATUS_FAILED);
	kg_os_log(why);
	return -KAPSEL_ENODEV;
}

int kg_blk_virtio_open(unsigned index, struct kg_block_device *device)
{
	uintptr_t base = find_transport(index);
	if (!base)
		return -KAPSEL_ENODEV;
	struct virtio_blk *v = kg_os_alloc_pages(1);
	struct virtio_blk_shared *s =
		kg_os_alloc_pages((sizeof(*s) + PAGE_BYTES - 1) / PAGE_BYTES);
	if (!v || !s)
		return -KAPSEL_ENOMEM;
	memset(v, 0, sizeof(*v));
	memset(s, 0, sizeof(*s));
	v->regs = base;
	v->shared = s;

	uint32_t version = reg_read(v, VMMIO_VERSION);
	if (version != 1 && version != 2) {
		kg_os_log("virtio-blk: unknown virtio-mmio version");
		return -KAPSEL_ENODEV;
	}
	bool legacy = version == 1; /* QEMU's default unless force-legacy=false */
	reg_write(v, VMMIO_STATUS, 0); /* reset */
	reg_write(v, VMMIO_STATUS, STATUS_ACKNOWLEDGE);
	reg_write(v, VMMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
	reg_write(v, VMMIO_DEVICE_FEATURES_SEL, 0);
	uint64_t offered = reg_read(v, VMMIO_DEVICE_FEATURES);
	reg_write(v, VMMIO_DEVICE_FEATURES_SEL, 1);
	offered |= (uint64_t)reg_read(v, VMMIO_DEVICE_FEATURES) << 32;
	if (!legacy && !(offered & VIRTIO_F_VERSION_1))
		return fail(v, "virtio-blk: the device does not offer VIRTIO_F_VERSION_1");
	v->features = offered & (VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_RO | VIRTIO_BLK_F_FLUSH);
	reg_write(v, VMMIO_DRIVER_FEATURES_SEL, 0);
	reg_write(v, VMMIO_DRIVER_FEATURES, (uint32_t)v->features);
	reg_write(v, VMMIO_DRIVER_FEATURES_SEL, 1);
	reg_write(v, VMMIO_DRIVER_FEATURES, (uint32_t)(v->features >> 32));
	uint32_t status = STATUS_ACKNOWLEDGE | STATUS_DRIVER;
	if (!legacy) { /* a legacy device has no FEATURES_OK handshake */
		status |= STATUS_FEATURES_OK;
		reg_write(v, VMMIO_STATUS, status);
		if (!(reg_read(v, VMMIO_STATUS) & STATUS_FEATURES_OK))
			return fail(v, "virtio-blk: the device refused our features");
	}

	reg_write(v, VMMIO_QUEUE_SEL, 0);
	uint32_t max = reg_read(v, VMMIO_QUEUE_NUM_MAX);
	if (max < DESCRIPTORS_PER_REQUEST)
		return fail(v, "virtio-blk: queue 0 is too small for one request");
	v->queue_size = (uint16_t)(max < QUEUE_SIZE_MAX ? max : QUEUE_SIZE_MAX);
	reg_write(v, VMMIO_QUEUE_NUM, v->queue_size);
	/* Polled: ask the device not to interrupt (interrupts are off anyway). */
	s->avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
	uint64_t desc = kg_os_virt_to_phys(s->desc), avail = kg_os_virt_to_phys(&s->avail),
		 used = kg_os_virt_to_phys(&s->used);
	if (legacy) {
		reg_write(v, VMMIO_GUEST_PAGE_SIZE, PAGE_BYTES);
		reg_write(v, VMMIO_QUEUE_ALIGN, PAGE_BYTES);
		reg_write(v, VMMIO_QUEUE_PFN, (uint32_t)(desc / PAGE_BYTES));
	} else {
		reg_write(v, VMMIO_QUEUE_DESC_LOW, (uint32_t)desc);
		reg_write(v, VMMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
		reg_write(v, VMMIO_QUEUE_DRIVER_LOW, (uint32_t)avail);
		reg_write(v, VMMIO_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
		reg_write(v, VMMIO_QUEUE_DEVICE_LOW, (uint32_t)used);
		reg_write(v, VMMIO_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
		reg_write(v, VMMIO_QUEUE_READY, 1);
	}
	reg_write(v, VMMIO_STATUS, status | STATUS_DRIVER_OK);

	/* Config space: the capacity in 512-byte sectors, read until the
	 * device's config generation (0 on legacy) is stable across it. */
	uint64_t capacity;
	uint32_t generation;
	do {
		generation = legacy ? 0 : reg_read(v, VMMIO_CONFIG_GENERATION);
		capacity = reg_read(v, VMMIO_CONFIG) |
			   (uint64_t)reg_read(v, VMMIO_CONFIG + 4) << 32;
	} while (!legacy && generation != reg_read(v, VMMIO_CONFIG_GENERATION));

	memset(device, 0, sizeof(*device));
	device->ops = &virtio_driver_ops;
	device->driver = v;
	device->info.capacity_sectors = capacity;
	device->info.logical_sector_bytes = KAPSEL_BLK_SECTOR_BYTES;
	device->info.physical_sector_bytes = KAPSEL_BLK_SECTOR_BYTES;
	device->info.readonly = (v->features & VIRTIO_BLK_F_RO) != 0;
	device->info.max_segments = KAPSEL_BLK_MAX_SEGMENTS;
	device->info.queue_depth = v->queue_size / DESCRIPTORS_PER_REQUEST;
	device->info.features = v->features & VIRTIO_BLK_F_FLUSH ? KAPSEL_BLK_FEATURE_FLUSH : 0;
	device->info.path = KG_BLOCK_VIRTIO;

	char line[128];
	kg_snprintf(line, sizeof(line),
		    "virtio-blk: disk at 0x%llx (%s): %llu sectors, queue %u, depth %u%s%s",
		    (unsigned long long)base, legacy ? "legacy" : "virtio 1", (unsigned long long)capacity, v->queue_size,
		    device->info.queue_depth, v->features & VIRTIO_BLK_F_FLUSH ? ", flush" : "",
		    device->info.readonly ? ", read-only" : "");
	kg_os_log(line);
	return 0;
}
