/* Unit tests of the guest's virtio-mmio transport setup and split-virtqueue helpers (guest-pv/lib/virtio_mmio.c) against a register file in host memory. */
#include <stdlib.h>
#include <string.h>

#include "cunit_main.h"
#include "kapsel/abi.h"
#include "../../guest-pv/lib/virtio_mmio.h"

/* ---- OS hooks the library file needs ------------------------------------ */

static unsigned pages_allocated;
static char last_log[200];

void *kg_os_alloc_pages(size_t count)
{
	pages_allocated += (unsigned)count;
	return aligned_alloc(4096, count * 4096);
}

uint64_t kg_os_virt_to_phys(const void *address)
{
	return (uint64_t)(uintptr_t)address;
}

void kg_os_log(const char *message)
{
	snprintf(last_log, sizeof(last_log), "%s", message);
}

/* ---- A device's register file: reads see what was written last ---------- */

static uint32_t regs[0x200 / 4] __attribute__((aligned(8)));

static uint32_t reg(uint32_t offset)
{
	return regs[offset / 4];
}

static void device_reset(uint32_t version, uint32_t feature_word, uint32_t queue_max)
{
	memset(regs, 0, sizeof(regs));
	regs[0x000 / 4] = 0x74726976u;
	regs[0x004 / 4] = version;
	regs[0x008 / 4] = VIRTIO_ID_BLOCK;
	regs[0x010 / 4] = feature_word; /* the same word for both selectors */
	regs[0x034 / 4] = queue_max;
	last_log[0] = '\0';
}

static void test_begin_negotiates(void)
{
	struct virtio_mmio t;
	/* Bit 0 in both words: bit 32 is VIRTIO_F_VERSION_1. */
	device_reset(2, (1u << 0) | (1u << 9), 256);
	CU_ASSERT_EQUAL_FATAL(kg_virtio_mmio_begin(&t, (uintptr_t)regs, 1ull << 9, "test"), 0);
	CU_ASSERT_FALSE(t.legacy);
	CU_ASSERT_EQUAL(t.features, VIRTIO_F_VERSION_1 | (1ull << 9));
	CU_ASSERT_EQUAL(reg(0x070), 1u | 2u | 8u); /* ACKNOWLEDGE, DRIVER, FEATURES_OK */
	CU_ASSERT_EQUAL(reg(0x020), 1u);	   /* the high word, written last: VERSION_1 */

	/* A version 2 device without VERSION_1 is refused, and marked FAILED. */
	device_reset(2, 1u << 9, 256);
	regs[0x010 / 4] = 1u << 9;
	CU_ASSERT_EQUAL(kg_virtio_mmio_begin(&t, (uintptr_t)regs, 1ull << 9, "test"),
			-KAPSEL_ENODEV);
	CU_ASSERT_STRING_EQUAL(last_log, "test: the device does not offer VIRTIO_F_VERSION_1");
	CU_ASSERT(reg(0x070) & 128u);

	/* Legacy: no VERSION_1, no FEATURES_OK, the guest page size set. */
	device_reset(1, 1u << 9, 256);
	CU_ASSERT_EQUAL_FATAL(kg_virtio_mmio_begin(&t, (uintptr_t)regs, 1ull << 9, "test"), 0);
	CU_ASSERT_TRUE(t.legacy);
	CU_ASSERT_EQUAL(t.features, 1ull << 9);
	CU_ASSERT_EQUAL(reg(0x070), 1u | 2u);
	CU_ASSERT_EQUAL(reg(0x028), 4096u);

	device_reset(3, 0, 256);
	CU_ASSERT_EQUAL(kg_virtio_mmio_begin(&t, (uintptr_t)regs, 0, "test"), -KAPSEL_ENODEV);
	CU_ASSERT_STRING_EQUAL(last_log, "test: unknown virtio-mmio version");
}

static void test_queue_setup(void)
{
	struct virtio_mmio t;
	struct virtq q;
	device_reset(2, 1, 256);
	CU_ASSERT_EQUAL_FATAL(kg_virtio_mmio_begin(&t, (uintptr_t)regs, 0, "test"), 0);
	CU_ASSERT_EQUAL_FATAL(kg_virtio_mmio_queue(&t, &q, 1), 0);
	CU_ASSERT_EQUAL(q.size, VIRTQ_SIZE_MAX); /* the device offers more */
	CU_ASSERT_EQUAL(reg(0x030), 1u);
	CU_ASSERT_EQUAL(reg(0x038), VIRTQ_SIZE_MAX);
	uint64_t desc = (uintptr_t)q.rings->desc;
	CU_ASSERT_EQUAL(reg(0x080) | (uint64_t)reg(0x084) << 32, desc);
	CU_ASSERT_EQUAL(reg(0x090) | (uint64_t)reg(0x094) << 32, (uintptr_t)&q.rings->avail);
	CU_ASSERT_EQUAL(reg(0x0a0) | (uint64_t)reg(0x0a4) << 32, desc + 4096);
	CU_ASSERT_EQUAL(reg(0x044), 1u);
	CU_ASSERT_EQUAL(q.rings->avail.flags, 1u); /* no interrupts */
	free(q.rings);

	/* A smaller device: the largest power of two it takes. */
	device_reset(1, 0, 100);
	CU_ASSERT_EQUAL_FATAL(kg_virtio_mmio_begin(&t, (uintptr_t)regs, 0, "test"), 0);
	CU_ASSERT_EQUAL_FATAL(kg_virtio_mmio_queue(&t, &q, 0), 0);
	CU_ASSERT_EQUAL(q.size, 64);
	CU_ASSERT_EQUAL(reg(0x040), (uint32_t)((uintptr_t)q.rings->desc / 4096));
	CU_ASSERT_EQUAL(reg(0x03c), 4096u);
	free(q.rings);

	device_reset(2, 1, 0); /* no such queue */
	CU_ASSERT_EQUAL_FATAL(kg_virtio_mmio_begin(&t, (uintptr_t)regs, 0, "test"), 0);
	CU_ASSERT_EQUAL(kg_virtio_mmio_queue(&t, &q, 5), -KAPSEL_ENODEV);
}

/* Publishing and taking across the 16-bit index wrap and the ring's end. */
static void test_rings_wrap(void)
{
	struct virtio_mmio t;
	struct virtq q;
	device_reset(2, 1, 8);
	CU_ASSERT_EQUAL_FATAL(kg_virtio_mmio_begin(&t, (uintptr_t)regs, 0, "test"), 0);
	CU_ASSERT_EQUAL_FATAL(kg_virtio_mmio_queue(&t, &q, 0), 0);
	CU_ASSERT_EQUAL_FATAL(q.size, 8);
	q.avail_idx = q.used_seen = 65533;
	q.rings->used.idx = 65533;
	for (uint16_t i = 0; i < 6; i++)
		kg_virtq_publish(&q, (uint16_t)(10 + i));
	CU_ASSERT_EQUAL(q.rings->avail.idx, (uint16_t)(65533 + 6));
	/* Entry n goes to slot n % 8: 65533 % 8 = 5, then 6, 7, 0, 1, 2. */
	CU_ASSERT_EQUAL(q.rings->avail.ring[5], 10);
	CU_ASSERT_EQUAL(q.rings->avail.ring[7], 12);
	CU_ASSERT_EQUAL(q.rings->avail.ring[0], 13);
	CU_ASSERT_EQUAL(q.rings->avail.ring[2], 15);

	struct virtq_used_elem e;
	CU_ASSERT_FALSE(kg_virtq_take_used(&q, &e)); /* nothing used yet */
	for (uint16_t i = 0; i < 6; i++)
		q.rings->used.ring[(uint16_t)(65533 + i) % 8] =
			(struct virtq_used_elem){ .id = 10u + i, .len = 100u + i };
	q.rings->used.idx = (uint16_t)(65533 + 6);
	for (uint16_t i = 0; i < 6; i++) {
		CU_ASSERT_TRUE_FATAL(kg_virtq_take_used(&q, &e));
		CU_ASSERT_EQUAL(e.id, 10u + i);
		CU_ASSERT_EQUAL(e.len, 100u + i);
	}
	CU_ASSERT_FALSE(kg_virtq_take_used(&q, &e));
	CU_ASSERT_EQUAL(q.used_seen, (uint16_t)(65533 + 6));

	/* The doorbell names the queue, unless the device asked for none. */
	regs[0x050 / 4] = 0xffff;
	kg_virtq_notify(&t, &q);
	CU_ASSERT_EQUAL(reg(0x050), 0u);
	regs[0x050 / 4] = 0xffff;
	q.rings->used.flags = 1;
	kg_virtq_notify(&t, &q);
	CU_ASSERT_EQUAL(reg(0x050), 0xffffu);
	free(q.rings);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "feature negotiation, modern and legacy", test_begin_negotiates },
		{ "queue setup", test_queue_setup },
		{ "ring indexes wrap", test_rings_wrap },
	};
	return UNIT_RUN("virtio_queue", tests);
}
