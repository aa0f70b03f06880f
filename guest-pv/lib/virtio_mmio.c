/* virtio-mmio transport (legacy and version 2) and split-virtqueue helpers shared by the virtio drivers. */
#include "virtio_mmio.h"

#include "kapsel/abi.h"
#include "kapsel_guest/libc.h"
#include "kapsel_guest/os_hooks.h"

/* Where QEMU's microvm puts its virtio-mmio transports (0x200 bytes each). */
#define VIRTIO_MMIO_BASE 0xfeb00000ull
#define VIRTIO_MMIO_STRIDE 0x200ull
#define VIRTIO_MMIO_SLOTS 24u

/* Registers (virtio 1.x, 4.2.2; "legacy" ones from 4.2.4). */
#define VMMIO_MAGIC 0x000
#define VMMIO_VERSION 0x004
#define VMMIO_DEVICE_ID 0x008
#define VMMIO_DEVICE_FEATURES 0x010
#define VMMIO_DEVICE_FEATURES_SEL 0x014
#define VMMIO_DRIVER_FEATURES 0x020
#define VMMIO_DRIVER_FEATURES_SEL 0x024
#define VMMIO_GUEST_PAGE_SIZE 0x028 /* legacy */
#define VMMIO_QUEUE_SEL 0x030
#define VMMIO_QUEUE_NUM_MAX 0x034
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

#define STATUS_ACKNOWLEDGE 1u
#define STATUS_DRIVER 2u
#define STATUS_DRIVER_OK 4u
#define STATUS_FEATURES_OK 8u
#define STATUS_FAILED 128u

#define VIRTQ_AVAIL_F_NO_INTERRUPT 1u
#define VIRTQ_USED_F_NO_NOTIFY 1u
#define PAGE_BYTES 4096u

static uint32_t reg_read(uintptr_t regs, uint32_t offset)
{
	return *(volatile uint32_t *)(regs + offset);
}

static void reg_write(uintptr_t regs, uint32_t offset, uint32_t value)
{
	*(volatile uint32_t *)(regs + offset) = value;
}

uintptr_t kg_virtio_mmio_find(uint32_t device_id, unsigned index)
{
	for (unsigned i = 0; i < VIRTIO_MMIO_SLOTS; i++) {
		uintptr_t base = (uintptr_t)(VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE);
		if (reg_read(base, VMMIO_MAGIC) != VIRTIO_MAGIC ||
		    reg_read(base, VMMIO_DEVICE_ID) != device_id)
			continue;
		if (index-- == 0)
			return base;
	}
	return 0;
}

static int fail(struct virtio_mmio *t, const char *name, const char *why)
{
	reg_write(t->regs, VMMIO_STATUS, t->status | STATUS_FAILED);
	char line[160];
	kg_snprintf(line, sizeof(line), "%s: %s", name, why);
	kg_os_log(line);
	return -KAPSEL_ENODEV;
}

int kg_virtio_mmio_begin(struct virtio_mmio *t, uintptr_t base, uint64_t wanted, const char *name)
{
	memset(t, 0, sizeof(*t));
	t->regs = base;
	uint32_t version = reg_read(base, VMMIO_VERSION);
	if (version != 1 && version != 2)
		return fail(t, name, "unknown virtio-mmio version");
	t->legacy = version == 1;	  /* QEMU's default unless force-legacy=false */
	reg_write(base, VMMIO_STATUS, 0); /* reset */
	t->status = STATUS_ACKNOWLEDGE | STATUS_DRIVER;
	reg_write(base, VMMIO_STATUS, STATUS_ACKNOWLEDGE);
	reg_write(base, VMMIO_STATUS, t->status);
	reg_write(base, VMMIO_DEVICE_FEATURES_SEL, 0);
	uint64_t offered = reg_read(base, VMMIO_DEVICE_FEATURES);
	reg_write(base, VMMIO_DEVICE_FEATURES_SEL, 1);
	offered |= (uint64_t)reg_read(base, VMMIO_DEVICE_FEATURES) << 32;
	if (!t->legacy && !(offered & VIRTIO_F_VERSION_1))
		return fail(t, name, "the device does not offer VIRTIO_F_VERSION_1");
	t->features =
		offered & (wanted | VIRTIO_F_EVENT_IDX | (t->legacy ? 0 : VIRTIO_F_VERSION_1));
	reg_write(base, VMMIO_DRIVER_FEATURES_SEL, 0);
	reg_write(base, VMMIO_DRIVER_FEATURES, (uint32_t)t->features);
	reg_write(base, VMMIO_DRIVER_FEATURES_SEL, 1);
	reg_write(base, VMMIO_DRIVER_FEATURES, (uint32_t)(t->features >> 32));
	if (!t->legacy) { /* a legacy device has no FEATURES_OK handshake */
		t->status |= STATUS_FEATURES_OK;
		reg_write(base, VMMIO_STATUS, t->status);
		if (!(reg_read(base, VMMIO_STATUS) & STATUS_FEATURES_OK))
			return fail(t, name, "the device refused our features");
	}
	if (t->legacy)
		reg_write(base, VMMIO_GUEST_PAGE_SIZE, PAGE_BYTES);
	return 0;
}

int kg_virtio_mmio_queue(struct virtio_mmio *t, struct virtq *queue, uint16_t q)
{
	memset(queue, 0, sizeof(*queue));
	reg_write(t->regs, VMMIO_QUEUE_SEL, q);
	uint32_t max = reg_read(t->regs, VMMIO_QUEUE_NUM_MAX);
	if (max == 0)
		return -KAPSEL_ENODEV;
	/* The largest power of two the device and we both take. */
	uint16_t size = VIRTQ_SIZE_MAX;
	while (size > max)
		size /= 2;
	struct virtq_rings *rings =
		kg_os_alloc_pages((sizeof(*rings) + PAGE_BYTES - 1) / PAGE_BYTES);
	if (!rings)
		return -KAPSEL_ENOMEM;
	memset(rings, 0, sizeof(*rings));
	/* Polled: ask the device not to interrupt (interrupts are off anyway). */
	rings->avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
	queue->rings = rings;
	queue->size = size;
	queue->index = q;
	queue->event_idx = (t->features & VIRTIO_F_EVENT_IDX) != 0;
	reg_write(t->regs, VMMIO_QUEUE_NUM, size);
	uint64_t desc = kg_os_virt_to_phys(rings->desc), avail = kg_os_virt_to_phys(&rings->avail),
		 used = kg_os_virt_to_phys(&rings->used);
	if (t->legacy) {
		reg_write(t->regs, VMMIO_QUEUE_ALIGN, PAGE_BYTES);
		reg_write(t->regs, VMMIO_QUEUE_PFN, (uint32_t)(desc / PAGE_BYTES));
	} else {
		reg_write(t->regs, VMMIO_QUEUE_DESC_LOW, (uint32_t)desc);
		reg_write(t->regs, VMMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
		reg_write(t->regs, VMMIO_QUEUE_DRIVER_LOW, (uint32_t)avail);
		reg_write(t->regs, VMMIO_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
		reg_write(t->regs, VMMIO_QUEUE_DEVICE_LOW, (uint32_t)used);
		reg_write(t->regs, VMMIO_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
		reg_write(t->regs, VMMIO_QUEUE_READY, 1);
	}
	return 0;
}

void kg_virtio_mmio_ready(struct virtio_mmio *t)
{
	t->status |= STATUS_DRIVER_OK;
	reg_write(t->regs, VMMIO_STATUS, t->status);
}

/* Config reads are repeated until the config generation (0 on legacy) is
 * the same before and after: the device may change config meanwhile. */
uint32_t kg_virtio_mmio_config32(const struct virtio_mmio *t, uint32_t offset)
{
	for (;;) {
		uint32_t generation = t->legacy ? 0 : reg_read(t->regs, VMMIO_CONFIG_GENERATION);
		uint32_t value = reg_read(t->regs, VMMIO_CONFIG + offset);
		if (t->legacy || generation == reg_read(t->regs, VMMIO_CONFIG_GENERATION))
			return value;
	}
}

uint8_t kg_virtio_mmio_config8(const struct virtio_mmio *t, uint32_t offset)
{
	return *(volatile uint8_t *)(t->regs + VMMIO_CONFIG + offset);
}

void kg_virtq_publish(struct virtq *queue, uint16_t head)
{
	queue->rings->avail.ring[queue->avail_idx % queue->size] = head;
	queue->avail_idx++;
	/* The descriptors and ring entry are visible before the index. */
	__atomic_store_n(&queue->rings->avail.idx, queue->avail_idx, __ATOMIC_RELEASE);
}

/* The device's avail_event: after the used ring's size entries (so not at
 * a fixed place in struct virtq_rings when the queue is smaller). */
static uint16_t avail_event(const struct virtq *queue)
{
	const uint8_t *used = (const uint8_t *)&queue->rings->used;
	return __atomic_load_n((const uint16_t *)(used + 4 + 8u * queue->size), __ATOMIC_ACQUIRE);
}

bool kg_virtq_notify(const struct virtio_mmio *t, struct virtq *queue)
{
	uint16_t old = queue->notified_idx, now = queue->avail_idx;
	queue->notified_idx = now;
	if (old == now)
		return false; /* nothing new was published */
	/* The index store is globally visible before we read the device's
	 * hint and write the doorbell. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	bool wanted;
	if (queue->event_idx) {
		/* Ring if the device's event index is among the entries
		 * published since the last call: [old, now). */
		uint16_t event = avail_event(queue);
		wanted = (uint16_t)(now - event - 1u) < (uint16_t)(now - old);
	} else {
		wanted = !(__atomic_load_n(&queue->rings->used.flags, __ATOMIC_ACQUIRE) &
			   VIRTQ_USED_F_NO_NOTIFY);
	}
	if (wanted)
		reg_write(t->regs, VMMIO_QUEUE_NOTIFY, queue->index);
	return wanted;
}

bool kg_virtq_take_used(struct virtq *queue, struct virtq_used_elem *element)
{
	uint16_t used_idx = __atomic_load_n(&queue->rings->used.idx, __ATOMIC_ACQUIRE);
	if (queue->used_seen == used_idx)
		return false;
	/* Copied out once: the device owns the ring. */
	*element = queue->rings->used.ring[queue->used_seen % queue->size];
	queue->used_seen++;
	return true;
}
