/* virtio-mmio transport and split virtqueues for the virtio drivers (blk_virtio.c, net_virtio.c), polled, off Kapsel. */
#ifndef KAPSEL_GUEST_VIRTIO_MMIO_H
#define KAPSEL_GUEST_VIRTIO_MMIO_H

#include <stdbool.h>
#include <stdint.h>

#define VIRTIO_ID_NET 1u
#define VIRTIO_ID_BLOCK 2u
#define VIRTIO_F_VERSION_1 (1ull << 32)
/* Notification suppression by ring indices (virtio 1.x, 2.7.7/2.7.10):
 * the transport asks for it on every device; the doorbell is rung only
 * when the device's avail_event says it waits for the entries published. */
#define VIRTIO_F_EVENT_IDX (1ull << 29)

#define VIRTQ_DESC_F_NEXT 1u
#define VIRTQ_DESC_F_WRITE 2u
/* Entries of every queue the drivers set up (the device may offer more). */
#define VIRTQ_SIZE_MAX 128u

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

/* One queue's rings, two pages, laid out as a legacy device expects too
 * (avail right after desc, used on the next 4 KiB boundary). */
struct virtq_rings {
	struct virtq_desc desc[VIRTQ_SIZE_MAX];
	struct {
		uint16_t flags, idx, ring[VIRTQ_SIZE_MAX], used_event;
	} avail;
	uint8_t _pad[4096 - 16 * VIRTQ_SIZE_MAX - 2 * (VIRTQ_SIZE_MAX + 3)];
	struct {
		uint16_t flags, idx;
		struct virtq_used_elem ring[VIRTQ_SIZE_MAX];
		uint16_t avail_event;
	} used;
};
_Static_assert(__builtin_offsetof(struct virtq_rings, used) == 4096, "used ring page");

struct virtq {
	struct virtq_rings *rings; /* kg_os_alloc_pages, zeroed */
	uint16_t size;		   /* entries, a power of two <= VIRTQ_SIZE_MAX */
	uint16_t index;		   /* queue number */
	uint16_t avail_idx;	   /* next avail entry the driver fills */
	uint16_t used_seen;	   /* used entries the driver consumed */
	uint16_t notified_idx;	   /* avail_idx at the last kg_virtq_notify */
	bool event_idx;		   /* VIRTIO_F_EVENT_IDX negotiated */
};

struct virtio_mmio {
	uintptr_t regs;
	bool legacy;	   /* version 1 transport (QEMU's default) */
	uint64_t features; /* negotiated */
	uint32_t status;
};

/* Base of the index-th virtio-mmio transport (QEMU microvm's window at
 * 0xfeb00000, which must be mapped) whose device is device_id, or 0. */
uintptr_t kg_virtio_mmio_find(uint32_t device_id, unsigned index);

/* Reset the device at base, acknowledge it and negotiate offered & wanted
 * (VIRTIO_F_VERSION_1 is required of a version 2 transport;
 * VIRTIO_F_EVENT_IDX is taken whenever offered).  0 or -KAPSEL_ENODEV,
 * after logging why. */
int kg_virtio_mmio_begin(struct virtio_mmio *t, uintptr_t base, uint64_t wanted, const char *name);

/* Set up queue q with at most VIRTQ_SIZE_MAX entries (allocates its
 * rings), interrupts suppressed.  0 or negative KAPSEL_E*. */
int kg_virtio_mmio_queue(struct virtio_mmio *t, struct virtq *queue, uint16_t q);

/* DRIVER_OK: the device may start. */
void kg_virtio_mmio_ready(struct virtio_mmio *t);

/* 32-bit read of the device config space at offset. */
uint32_t kg_virtio_mmio_config32(const struct virtio_mmio *t, uint32_t offset);
/* 8-bit read of the device config space at offset. */
uint8_t kg_virtio_mmio_config8(const struct virtio_mmio *t, uint32_t offset);

/* Publish the chain starting at descriptor head; then kick with notify. */
void kg_virtq_publish(struct virtq *queue, uint16_t head);
/* Ring the queue's doorbell for what was published since the last call,
 * unless the device said it does not need it (its avail_event with
 * VIRTIO_F_EVENT_IDX, else the used ring's NO_NOTIFY flag).  True if it
 * rang (a VM exit on a hypervisor), false if suppressed. */
bool kg_virtq_notify(const struct virtio_mmio *t, struct virtq *queue);
/* Take the next used element into *element; false if there is none. */
bool kg_virtq_take_used(struct virtq *queue, struct virtq_used_elem *element);

#endif
