/* Unit tests: every shared structure and constant of the ABI headers against the layout docs/abi.md
 * documents. */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "cunit_main.h"
#include "kapsel/abi.h"
#include "kapsel/blk.h"
#include "kapsel/ring.h"

/*
 * The tables below are copied from docs/abi.md (offset and size columns),
 * not from the headers: a header change that the document does not follow
 * fails here.  Each table lists every field of its struct in order, so the
 * test also checks that the fields tile the struct without hidden padding.
 */
struct field {
	const char *name;
	size_t actual_offset, actual_size;
	size_t documented_offset, documented_size;
};

#define FIELD(type, member, offset, size)                                \
	{                                                                \
#type "." #member, offsetof(struct type, member),        \
			sizeof(((struct type *)0)->member), offset, size \
	}

static void check_layout(const char *name, size_t actual_size, size_t documented_size,
			 const struct field *fields, size_t count)
{
	size_t next = 0;
	for (size_t i = 0; i < count; i++) {
		const struct field *f = &fields[i];
		if (f->actual_offset != f->documented_offset ||
		    f->actual_size != f->documented_size) {
			fprintf(stderr,
				"\n  %s: header offset %zu size %zu, docs/abi.md offset %zu size %zu\n",
				f->name, f->actual_offset, f->actual_size, f->documented_offset,
				f->documented_size);
			CU_FAIL("field differs from docs/abi.md");
		}
		/* The document itself is consistent: each field starts where
		 * the previous one ended. */
		if (f->documented_offset != next) {
			fprintf(stderr, "\n  %s: documented at %zu, previous field ends at %zu\n",
				f->name, f->documented_offset, next);
			CU_FAIL("gap or overlap in docs/abi.md");
		}
		next = f->documented_offset + f->documented_size;
	}
	if (actual_size != documented_size || next != documented_size) {
		fprintf(stderr, "\n  %s: sizeof %zu, documented %zu, fields end at %zu\n", name,
			actual_size, documented_size, next);
		CU_FAIL("struct size differs from docs/abi.md");
	}
}

#define CHECK_LAYOUT(type, documented_size, fields)                       \
	check_layout(#type, sizeof(struct type), documented_size, fields, \
		     sizeof(fields) / sizeof(fields[0]))

static void test_abi_structs(void)
{
	static const struct field abi_info[] = {
		FIELD(kapsel_abi_info, magic, 0, 4),
		FIELD(kapsel_abi_info, major, 4, 2),
		FIELD(kapsel_abi_info, minor, 6, 2),
		FIELD(kapsel_abi_info, features, 8, 8),
		FIELD(kapsel_abi_info, hypercall_count, 16, 4),
		FIELD(kapsel_abi_info, _reserved0, 20, 4),
		FIELD(kapsel_abi_info, _reserved, 24, 32),
	};
	CHECK_LAYOUT(kapsel_abi_info, 56, abi_info);

	static const struct field time_info[] = {
		FIELD(kapsel_time_info, now_ns, 0, 8),
		FIELD(kapsel_time_info, tsc, 8, 8),
		FIELD(kapsel_time_info, tsc_khz, 16, 8),
		FIELD(kapsel_time_info, _reserved, 24, 8),
	};
	CHECK_LAYOUT(kapsel_time_info, 32, time_info);

	static const struct field event_page[] = {
		FIELD(kapsel_event_page, magic, 0, 4),
		FIELD(kapsel_event_page, revision, 4, 4),
		FIELD(kapsel_event_page, control_request, 8, 4),
		FIELD(kapsel_event_page, _pad0a, 12, 4),
		FIELD(kapsel_event_page, control_deadline_ns, 16, 8),
		FIELD(kapsel_event_page, _pad0, 24, 40),
		FIELD(kapsel_event_page, pending, 64, 32),
		FIELD(kapsel_event_page, _pad1, 96, 32),
		FIELD(kapsel_event_page, mask, 128, 32),
		FIELD(kapsel_event_page, _pad2, 160, 32),
	};
	CHECK_LAYOUT(kapsel_event_page, 192, event_page);

	static const struct field device_desc[] = {
		FIELD(kapsel_device_desc, type, 0, 2),
		FIELD(kapsel_device_desc, index, 2, 2),
		FIELD(kapsel_device_desc, flags, 4, 4),
		FIELD(kapsel_device_desc, io_base, 8, 2),
		FIELD(kapsel_device_desc, io_ctl, 10, 2),
		FIELD(kapsel_device_desc, doorbell_port, 12, 2),
		FIELD(kapsel_device_desc, unit, 14, 2),
		FIELD(kapsel_device_desc, capacity_sectors, 16, 8),
		FIELD(kapsel_device_desc, mac, 24, 6),
		FIELD(kapsel_device_desc, mtu_bytes, 30, 2),
		FIELD(kapsel_device_desc, queue_count, 32, 2),
		FIELD(kapsel_device_desc, _reserved0, 34, 2),
		FIELD(kapsel_device_desc, _reserved, 36, 4),
	};
	CHECK_LAYOUT(kapsel_device_desc, 40, device_desc);

	static const struct field memmap[] = {
		FIELD(kapsel_memmap_entry, gpa, 0, 8),
		FIELD(kapsel_memmap_entry, length_bytes, 8, 8),
		FIELD(kapsel_memmap_entry, type, 16, 4),
		FIELD(kapsel_memmap_entry, _pad, 20, 4),
	};
	CHECK_LAYOUT(kapsel_memmap_entry, 24, memmap);

	static const struct field start_info[] = {
		FIELD(kapsel_start_info, magic, 0, 4),
		FIELD(kapsel_start_info, revision, 4, 4),
		FIELD(kapsel_start_info, abi_major, 8, 2),
		FIELD(kapsel_start_info, abi_minor, 10, 2),
		FIELD(kapsel_start_info, _pad0, 12, 4),
		FIELD(kapsel_start_info, features, 16, 8),
		FIELD(kapsel_start_info, ram_bytes, 24, 8),
		FIELD(kapsel_start_info, tsc_khz, 32, 8),
		FIELD(kapsel_start_info, event_page_gpa, 40, 8),
		FIELD(kapsel_start_info, generation, 48, 8),
		FIELD(kapsel_start_info, boot_ns, 56, 8),
		FIELD(kapsel_start_info, memmap_count, 64, 4),
		FIELD(kapsel_start_info, device_count, 68, 4),
		FIELD(kapsel_start_info, memmap, 72, 192),
		FIELD(kapsel_start_info, devices, 264, 640),
		FIELD(kapsel_start_info, cmdline, 904, 512),
		FIELD(kapsel_start_info, uuid, 1416, 16),
		FIELD(kapsel_start_info, name, 1432, 64),
		FIELD(kapsel_start_info, vcpu_count, 1496, 4),
		FIELD(kapsel_start_info, _reserved0b, 1500, 4),
		FIELD(kapsel_start_info, _reserved, 1504, 120),
	};
	CHECK_LAYOUT(kapsel_start_info, 1624, start_info);
	/* Array sizes as documented: 8 memmap entries, 16 devices. */
	CU_ASSERT_EQUAL(KAPSEL_MEMMAP_MAX, 8);
	CU_ASSERT_EQUAL(KAPSEL_MAX_DEVICES, 16);
	CU_ASSERT_EQUAL(KAPSEL_CMDLINE_MAX, 512);
	/* Both host pages fit a page. */
	CU_ASSERT(sizeof(struct kapsel_start_info) <= 4096);
	CU_ASSERT(sizeof(struct kapsel_event_page) <= 4096);

	static const struct field device_setup[] = {
		FIELD(kapsel_device_setup, magic, 0, 4),
		FIELD(kapsel_device_setup, revision, 4, 4),
		FIELD(kapsel_device_setup, ring_gpa, 8, 8),
		FIELD(kapsel_device_setup, ring_pages, 16, 4),
		FIELD(kapsel_device_setup, evtchn_port, 20, 4),
		FIELD(kapsel_device_setup, queue, 24, 4),
		FIELD(kapsel_device_setup, _reserved0, 28, 4),
		FIELD(kapsel_device_setup, _reserved, 32, 24),
	};
	CHECK_LAYOUT(kapsel_device_setup, 56, device_setup);
}

static void test_ring_and_block_structs(void)
{
	static const struct field ring[] = {
		FIELD(kapsel_ring_header, magic, 0, 4),
		FIELD(kapsel_ring_header, revision, 4, 2),
		FIELD(kapsel_ring_header, _pad0, 6, 2),
		FIELD(kapsel_ring_header, order, 8, 4),
		FIELD(kapsel_ring_header, request_bytes, 12, 2),
		FIELD(kapsel_ring_header, response_bytes, 14, 2),
		FIELD(kapsel_ring_header, requests_offset, 16, 4),
		FIELD(kapsel_ring_header, responses_offset, 20, 4),
		FIELD(kapsel_ring_header, _pad1, 24, 40),
		FIELD(kapsel_ring_header, req_prod, 64, 4),
		FIELD(kapsel_ring_header, rsp_event, 68, 4),
		FIELD(kapsel_ring_header, _pad2, 72, 56),
		FIELD(kapsel_ring_header, rsp_prod, 128, 4),
		FIELD(kapsel_ring_header, req_event, 132, 4),
		FIELD(kapsel_ring_header, _pad3, 136, 56),
	};
	CHECK_LAYOUT(kapsel_ring_header, 192, ring);

	static const struct field segment[] = {
		FIELD(kapsel_blk_segment, gpa, 0, 8),
		FIELD(kapsel_blk_segment, length_bytes, 8, 4),
		FIELD(kapsel_blk_segment, _pad, 12, 4),
	};
	CHECK_LAYOUT(kapsel_blk_segment, 16, segment);

	static const struct field request[] = {
		FIELD(kapsel_blk_request, id, 0, 8),
		FIELD(kapsel_blk_request, op, 8, 1),
		FIELD(kapsel_blk_request, segment_count, 9, 1),
		FIELD(kapsel_blk_request, flags, 10, 2),
		FIELD(kapsel_blk_request, _pad, 12, 4),
		FIELD(kapsel_blk_request, sector, 16, 8),
		FIELD(kapsel_blk_request, sector_count, 24, 8),
		FIELD(kapsel_blk_request, submit_tsc, 32, 8),
		FIELD(kapsel_blk_request, _reserved, 40, 8),
		FIELD(kapsel_blk_request, segments, 48, 256),
	};
	CHECK_LAYOUT(kapsel_blk_request, 304, request);

	static const struct field response[] = {
		FIELD(kapsel_blk_response, id, 0, 8),
		FIELD(kapsel_blk_response, status, 8, 4),
		FIELD(kapsel_blk_response, _pad, 12, 4),
		FIELD(kapsel_blk_response, submit_tsc, 16, 8),
		FIELD(kapsel_blk_response, pickup_tsc, 24, 8),
		FIELD(kapsel_blk_response, complete_tsc, 32, 8),
		FIELD(kapsel_blk_response, _reserved, 40, 24),
	};
	CHECK_LAYOUT(kapsel_blk_response, 64, response);

	static const struct field info[] = {
		FIELD(kapsel_blk_info, magic, 0, 4),
		FIELD(kapsel_blk_info, revision, 4, 4),
		FIELD(kapsel_blk_info, capacity_sectors, 8, 8),
		FIELD(kapsel_blk_info, logical_sector_bytes, 16, 4),
		FIELD(kapsel_blk_info, physical_sector_bytes, 20, 4),
		FIELD(kapsel_blk_info, readonly, 24, 4),
		FIELD(kapsel_blk_info, max_segments, 28, 4),
		FIELD(kapsel_blk_info, features, 32, 8),
		FIELD(kapsel_blk_info, _reserved, 40, 32),
	};
	CHECK_LAYOUT(kapsel_blk_info, 72, info);
	CU_ASSERT_EQUAL(KAPSEL_BLK_MAX_SEGMENTS, 16);
	CU_ASSERT_EQUAL(KAPSEL_BLK_SECTOR_BYTES, 512);
}

/* "KSTI" -> 0x4b535449: the first character is the most significant byte,
 * as docs/abi.md writes the magics. */
static uint32_t magic_of(const char *four)
{
	return (uint32_t)(unsigned char)four[0] << 24 | (uint32_t)(unsigned char)four[1] << 16 |
	       (uint32_t)(unsigned char)four[2] << 8 | (uint32_t)(unsigned char)four[3];
}

static void test_magics_and_discovery(void)
{
	CU_ASSERT_EQUAL(KAPSEL_START_INFO_MAGIC, magic_of("KSTI"));
	CU_ASSERT_EQUAL(KAPSEL_EVENT_PAGE_MAGIC, magic_of("KEVN"));
	CU_ASSERT_EQUAL(KAPSEL_ABI_INFO_MAGIC, magic_of("KABL"));
	CU_ASSERT_EQUAL(KAPSEL_DEVICE_SETUP_MAGIC, magic_of("KDSU"));
	CU_ASSERT_EQUAL(KAPSEL_RING_MAGIC, magic_of("KRIN"));
	CU_ASSERT_EQUAL(KAPSEL_BLK_INFO_MAGIC, magic_of("KBLK"));
	CU_ASSERT_EQUAL(KAPSEL_START_INFO_REVISION, 1);
	CU_ASSERT_EQUAL(KAPSEL_RING_REVISION, 1);

	/* ebx, ecx, edx of leaf 0x40000000 spell "KapselKapsel" in memory order. */
	uint32_t regs[3] = { KAPSEL_CPUID_SIGNATURE_EBX, KAPSEL_CPUID_SIGNATURE_ECX,
			     KAPSEL_CPUID_SIGNATURE_EDX };
	char signature[13] = { 0 };
	memcpy(signature, regs, 12);
	CU_ASSERT_STRING_EQUAL(signature, "KapselKapsel");
	CU_ASSERT_EQUAL(KAPSEL_CPUID_BASE, 0x40000000u);
	CU_ASSERT_EQUAL(KAPSEL_CPUID_INFO, 0x40000001u);

	/* Version 1.7, published as major << 16 | minor. */
	CU_ASSERT_EQUAL(KAPSEL_ABI_MAJOR, 1);
	CU_ASSERT_EQUAL(KAPSEL_ABI_MINOR, 7);
	CU_ASSERT_EQUAL(KAPSEL_ABI_VERSION, 0x00010007u);

	/* Fixed ports and guest-physical addresses. */
	CU_ASSERT_EQUAL(KAPSEL_PORT_HYPERCALL, 0x510);
	CU_ASSERT_EQUAL(KAPSEL_PORT_DOORBELL(0), 0x520);
	CU_ASSERT_EQUAL(KAPSEL_PORT_DOORBELL(5), 0x520 + 2 * 5);
	/* The doorbells of all 16 devices stay clear of the hypercall and
	 * fault ports. */
	CU_ASSERT(KAPSEL_PORT_DOORBELL(0) > KAPSEL_PORT_FAULT);
	CU_ASSERT(KAPSEL_PORT_FAULT >= KAPSEL_PORT_HYPERCALL + 4);
	CU_ASSERT_EQUAL(KAPSEL_GPA_START_INFO, 0x7000);
	CU_ASSERT_EQUAL(KAPSEL_GPA_EVENT_PAGE, 0x8000);
	CU_ASSERT_EQUAL(KAPSEL_GPA_LOW_FREE, 0x60000);
	CU_ASSERT_EQUAL(KAPSEL_GPA_INITIAL_STACK, 0xf0000);
	CU_ASSERT_EQUAL(KAPSEL_GPA_IMAGE_MIN, 0x100000);
}

/* Minor 3: the PV CPU structures a guest's assembly entry code relies on. */
static void test_pv_cpu_layout(void)
{
	CU_ASSERT_EQUAL(sizeof(struct kapsel_trap_frame), 256);
	/* 16-byte multiple: a frame placed on a 16-byte boundary keeps the
	 * stack aligned for the C handler the entry stub calls. */
	CU_ASSERT_EQUAL(sizeof(struct kapsel_trap_frame) % 16, 0);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_trap_frame, vector), 0);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_trap_frame, error_code), 8);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_trap_frame, cr2), 16);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_trap_frame, flags), 24);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_trap_frame, rip), 32);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_trap_frame, rflags), 48);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_trap_frame, rsp), 56);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_trap_frame, rax), 72);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_trap_frame, rdi), 112);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_trap_frame, r15), 184);
	CU_ASSERT_EQUAL(sizeof(struct kapsel_vcpu_info), 64);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_vcpu_info, upcall_pending), 0);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_vcpu_info, upcall_mask), 1);
	/* The per-vCPU area lies past the event page structure, in its page. */
	CU_ASSERT(KAPSEL_VCPU_INFO_OFFSET >= sizeof(struct kapsel_event_page));
	CU_ASSERT(KAPSEL_VCPU_INFO_OFFSET + KAPSEL_MAX_VCPUS * sizeof(struct kapsel_vcpu_info) <=
		  4096);
	/* Vectors a guest may never take over: #DF, #TS, #MC, NMI. */
	CU_ASSERT_EQUAL(KAPSEL_TRAP_VECTORS_ALLOWED &
				((1u << 8) | (1u << 10) | (1u << 18) | (1u << 2)),
			0);
	CU_ASSERT_EQUAL(__builtin_popcount(KAPSEL_TRAP_VECTORS_ALLOWED), 14);
	CU_ASSERT(KAPSEL_TRAP_VECTOR_UPCALL >= KAPSEL_TRAP_VECTOR_COUNT);
	CU_ASSERT_EQUAL(KAPSEL_TIMER_MIN_PERIOD_NS, 100000);
	/* PV MMU (minor 5). */
	CU_ASSERT_EQUAL(sizeof(struct kapsel_mmu_op), 32);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_mmu_op, va), 0);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_mmu_op, gpa), 8);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_mmu_op, op), 16);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_mmu_op, prot), 20);
	CU_ASSERT_EQUAL(offsetof(struct kapsel_mmu_op, result), 24);
	CU_ASSERT_EQUAL(KAPSEL_TRAP_VECTOR_SYSCALL, 0x101);
	CU_ASSERT_EQUAL(KAPSEL_TRAP_FRAME_USER, 2);
	CU_ASSERT_EQUAL(KAPSEL_USER_VA_MIN, 512ull << 30);
	CU_ASSERT_EQUAL(KAPSEL_USER_VA_END, 128ull << 40);
	CU_ASSERT_EQUAL(KAPSEL_MMU_BATCH_MAX, 512);
	/* SMP (minor 6): the vCPU count sits in what was start info's reserved area. */
	CU_ASSERT_EQUAL(offsetof(struct kapsel_start_info, vcpu_count), 1496);
	CU_ASSERT_EQUAL(sizeof(struct kapsel_start_info), 1624);
	CU_ASSERT_EQUAL(KAPSEL_MAX_VCPUS, 16);
}

static void test_call_numbers(void)
{
	/* Numbers from docs/abi.md section 8: never reused, never moved. */
	static const struct {
		unsigned actual, documented;
	} calls[] = {
		{ KAPSEL_HC_ABI_INFO, 0 },
		{ KAPSEL_HC_CONSOLE_WRITE, 1 },
		{ KAPSEL_HC_CONSOLE_READ, 2 },
		{ KAPSEL_HC_SHUTDOWN, 3 },
		{ KAPSEL_HC_TIME_INFO, 4 },
		{ KAPSEL_HC_BLOCK, 5 },
		{ KAPSEL_HC_EVTCHN_ALLOC, 6 },
		{ KAPSEL_HC_EVTCHN_BIND_DEVICE, 7 },
		{ KAPSEL_HC_EVTCHN_SEND, 8 },
		{ KAPSEL_HC_EVTCHN_MASK, 9 },
		{ KAPSEL_HC_DEVICE_SETUP, 10 },
		{ KAPSEL_HC_EVTCHN_CLOSE, 11 },
		{ KAPSEL_HC_SET_TRAP, 12 },
		{ KAPSEL_HC_SET_CALLBACK, 13 },
		{ KAPSEL_HC_IRET, 14 },
		{ KAPSEL_HC_TIMER_SET, 15 },
		{ KAPSEL_HC_EVTCHN_BIND_VIRQ, 16 },
		{ KAPSEL_HC_AS_CREATE, 17 },
		{ KAPSEL_HC_AS_DESTROY, 18 },
		{ KAPSEL_HC_MMU_UPDATE, 19 },
		{ KAPSEL_HC_AS_SWITCH, 20 },
		{ KAPSEL_HC_SET_SYSCALL, 21 },
		{ KAPSEL_HC_KERNEL_STACK, 22 },
		{ KAPSEL_HC_VCPU_UP, 23 },
		{ KAPSEL_HC_VCPU_DOWN, 24 },
		{ KAPSEL_HC_VCPU_STATUS, 25 },
		{ KAPSEL_HC_EVTCHN_BIND_VCPU, 26 },
		{ KAPSEL_HC_KICK_AND_BLOCK, 27 },
	};
	const size_t count = sizeof(calls) / sizeof(calls[0]);
	unsigned seen = 0;
	for (size_t i = 0; i < count; i++) {
		CU_ASSERT_EQUAL(calls[i].actual, calls[i].documented);
		CU_ASSERT(calls[i].actual < 32);
		/* Distinct: each number appears once. */
		CU_ASSERT_EQUAL(seen & (1u << calls[i].actual), 0);
		seen |= 1u << calls[i].actual;
	}
	CU_ASSERT_EQUAL(KAPSEL_HC_COUNT, count);
	CU_ASSERT_EQUAL(seen, (1u << count) - 1); /* dense: 0 .. count-1 */

	CU_ASSERT_EQUAL(KAPSEL_SHUTDOWN_POWEROFF, 0);
	CU_ASSERT_EQUAL(KAPSEL_SHUTDOWN_REBOOT, 1);
	CU_ASSERT_EQUAL(KAPSEL_SHUTDOWN_CRASH, 2);
}

static void test_feature_bits(void)
{
	static const struct {
		uint64_t actual;
		unsigned documented_bit;
	} features[] = {
		{ KAPSEL_FEATURE_CONSOLE_PV, 0 }, { KAPSEL_FEATURE_EVTCHN, 1 },
		{ KAPSEL_FEATURE_DOORBELL, 2 },	  { KAPSEL_FEATURE_BLOCK_PV, 3 },
		{ KAPSEL_FEATURE_GENERATION, 4 }, { KAPSEL_FEATURE_CONTROL, 5 },
		{ KAPSEL_FEATURE_NET_PV, 6 },	  { KAPSEL_FEATURE_RNG_PV, 7 },
		{ KAPSEL_FEATURE_PV_CPU, 8 },	  { KAPSEL_FEATURE_PV_MMU, 9 },
		{ KAPSEL_FEATURE_SMP, 10 },	  { KAPSEL_FEATURE_KICK_AND_BLOCK, 11 },
	};
	uint64_t all = 0;
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++) {
		CU_ASSERT_EQUAL(features[i].actual, 1ull << features[i].documented_bit);
		CU_ASSERT_EQUAL(all & features[i].actual, 0); /* distinct */
		all |= features[i].actual;
	}
	/* The hypervisor offers exactly the documented bits, and all of them
	 * fit the 32 bits CPUID 0x40000001.ebx carries. */
	CU_ASSERT_EQUAL(KAPSEL_FEATURES_V1, all);
	CU_ASSERT_EQUAL(KAPSEL_FEATURES_V1 >> 32, 0);

	CU_ASSERT_EQUAL(KAPSEL_BLK_FEATURE_FLUSH, 1ull << 0);
	CU_ASSERT_EQUAL(KAPSEL_BLK_FEATURE_DISCARD, 1ull << 1);
	CU_ASSERT_EQUAL(KAPSEL_BLK_FEATURE_WRITE_ZEROES, 1ull << 2);
	CU_ASSERT_EQUAL(KAPSEL_BLK_FEATURE_TIMESTAMPS, 1ull << 3);
	CU_ASSERT_EQUAL(KAPSEL_DEVICE_FLAG_READONLY, 1u << 0);
	CU_ASSERT_EQUAL(KAPSEL_DEVICE_FLAG_PREFER_EMULATED, 1u << 1);
}

static void test_enumerations(void)
{
	CU_ASSERT_EQUAL(KAPSEL_DEV_NONE, 0);
	CU_ASSERT_EQUAL(KAPSEL_DEV_CONSOLE_PV, 1);
	CU_ASSERT_EQUAL(KAPSEL_DEV_BLOCK_PV, 2);
	CU_ASSERT_EQUAL(KAPSEL_DEV_UART16550, 3);
	CU_ASSERT_EQUAL(KAPSEL_DEV_ATA_DISK, 4);
	CU_ASSERT_EQUAL(KAPSEL_DEV_NE2000, 5);
	CU_ASSERT_EQUAL(KAPSEL_DEV_NET_PV, 6);
	CU_ASSERT_EQUAL(KAPSEL_MEMMAP_RAM, 1);
	CU_ASSERT_EQUAL(KAPSEL_MEMMAP_RESERVED, 2);
	CU_ASSERT_EQUAL(KAPSEL_MEMMAP_IMAGE, 3);
	CU_ASSERT_EQUAL(KAPSEL_MEMMAP_SHARED, 4);
	CU_ASSERT_EQUAL(KAPSEL_EVTCHN_COUNT, 256);
	CU_ASSERT_EQUAL(KAPSEL_EVTCHN_CONTROL, 255);
	CU_ASSERT_EQUAL(KAPSEL_CONTROL_NONE, 0);
	CU_ASSERT_EQUAL(KAPSEL_CONTROL_POWEROFF, 1);
	CU_ASSERT_EQUAL(KAPSEL_CONTROL_REBOOT, 2);
	CU_ASSERT_EQUAL(KAPSEL_BLK_OP_READ, 0);
	CU_ASSERT_EQUAL(KAPSEL_BLK_OP_WRITE, 1);
	CU_ASSERT_EQUAL(KAPSEL_BLK_OP_FLUSH, 2);
	CU_ASSERT_EQUAL(KAPSEL_BLK_OP_DISCARD, 3);
	CU_ASSERT_EQUAL(KAPSEL_BLK_OP_WRITE_ZEROES, 4);
	CU_ASSERT_EQUAL(KAPSEL_BLK_OP_GET_INFO, 5);
	CU_ASSERT_EQUAL(KAPSEL_BLK_OP_COUNT, 6);
	CU_ASSERT_EQUAL(KAPSEL_RING_PAGE_BYTES, 4096);
	CU_ASSERT_EQUAL(KAPSEL_RING_MAX_ORDER, 10);
}

static void test_error_codes_are_linux_errno(void)
{
	/* The documented values, and the host's own errno agreeing. */
	static const struct {
		int actual, documented, host;
	} codes[] = {
		{ KAPSEL_EPERM, 1, EPERM },    { KAPSEL_ENOENT, 2, ENOENT },
		{ KAPSEL_EIO, 5, EIO },	       { KAPSEL_E2BIG, 7, E2BIG },
		{ KAPSEL_EAGAIN, 11, EAGAIN }, { KAPSEL_ENOMEM, 12, ENOMEM },
		{ KAPSEL_EFAULT, 14, EFAULT }, { KAPSEL_EBUSY, 16, EBUSY },
		{ KAPSEL_EEXIST, 17, EEXIST }, { KAPSEL_ENODEV, 19, ENODEV },
		{ KAPSEL_EINVAL, 22, EINVAL }, { KAPSEL_ENOSPC, 28, ENOSPC },
		{ KAPSEL_EROFS, 30, EROFS },   { KAPSEL_ERANGE, 34, ERANGE },
		{ KAPSEL_ENOSYS, 38, ENOSYS }, { KAPSEL_ETIMEDOUT, 110, ETIMEDOUT },
	};
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		CU_ASSERT_EQUAL(codes[i].actual, codes[i].documented);
		CU_ASSERT_EQUAL(codes[i].actual, codes[i].host);
	}
}

static void test_ring_helpers(void)
{
	/* need_notify: true exactly when event lies in (old, new], with
	 * wrap-around, computed here by walking the range. */
	static const uint32_t olds[] = { 0, 5, 0xfffffffeu, 0x7fffffffu };
	for (size_t i = 0; i < sizeof(olds) / sizeof(olds[0]); i++) {
		for (uint32_t moved = 0; moved < 4; moved++) {
			uint32_t old = olds[i], new = old + moved;
			for (uint32_t delta = 0; delta < 8; delta++) {
				uint32_t event = old - 2 + delta;
				int inside = 0;
				for (uint32_t k = 1; k <= moved; k++)
					inside |= event == old + k;
				CU_ASSERT_EQUAL(!!kapsel_ring_need_notify(event, old, new), inside);
			}
		}
	}
	/* Ring bytes: header page + each slot array rounded up to pages. */
	CU_ASSERT_EQUAL(kapsel_ring_bytes(1, 304, 64), 4096 + 4096 + 4096);
	CU_ASSERT_EQUAL(kapsel_ring_bytes(5, 304, 64), 4096 + 12288 + 4096);
	CU_ASSERT_EQUAL(kapsel_ring_bytes(10, 304, 64), 4096 + 311296 + 65536);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "ABI structs match docs/abi.md", test_abi_structs },
		{ "ring and block structs match docs/abi.md", test_ring_and_block_structs },
		{ "magics, CPUID signature, fixed addresses", test_magics_and_discovery },
		{ "hypercall numbers are distinct and stable", test_call_numbers },
		{ "PV CPU frame and vCPU info layout", test_pv_cpu_layout },
		{ "feature bits", test_feature_bits },
		{ "enumerations", test_enumerations },
		{ "error codes are Linux errno", test_error_codes_are_linux_errno },
		{ "ring helpers", test_ring_helpers },
	};
	return UNIT_RUN("abi layout", tests);
}
