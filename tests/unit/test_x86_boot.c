/* Unit tests: the boot tables x86_boot builds (page tables, GDT, IDT, TSS, I/O bitmap), walked as
 * the CPU would. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_main.h"
#include "kapsel/abi.h"
#include "state/vcpu_state.h"
#include "core/x86_boot.h"

#define RAM_BYTES (64ull << 20)
#define PTE_P 0x1ull
#define PTE_W 0x2ull
#define PTE_U 0x4ull
#define PTE_PS 0x80ull
#define PTE_ADDR 0x000ffffffffff000ull

static struct guest_memory mem;

static uint64_t read_u64(uint64_t gpa)
{
	const uint64_t *p = guest_memory_translate(&mem, gpa, 8);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	return *p;
}

struct walk {
	int present;
	int user;     /* effective: every level has U */
	int writable; /* effective: every level has W */
	uint64_t gpa;
	uint64_t page_bytes;
};

/* A 4-level walk of virtual address va from CR3 = X86_GPA_PML4. */
static struct walk walk(uint64_t va)
{
	struct walk w = { .user = 1, .writable = 1 };
	uint64_t table = X86_GPA_PML4;
	static const unsigned shifts[] = { 39, 30, 21, 12 };
	for (unsigned level = 0; level < 4; level++) {
		uint64_t entry = read_u64(table + ((va >> shifts[level]) & 511) * 8);
		if (!(entry & PTE_P))
			return (struct walk){ 0 };
		w.user &= !!(entry & PTE_U);
		w.writable &= !!(entry & PTE_W);
		int leaf = level == 3 || (level > 0 && (entry & PTE_PS));
		if (leaf) {
			uint64_t page = 1ull << shifts[level];
			w.present = 1;
			w.page_bytes = page;
			w.gpa = (entry & PTE_ADDR & ~(page - 1)) | (va & (page - 1));
			return w;
		}
		table = entry & PTE_ADDR;
	}
	return (struct walk){ 0 };
}

static int setup(void)
{
	if (guest_memory_create(&mem, RAM_BYTES, "x86-boot-test") != 0)
		return 1;
	return x86_boot_build_tables(&mem) != 0;
}

static void expect_identity(uint64_t va, int user, uint64_t page_bytes)
{
	struct walk w = walk(va);
	if (!w.present || w.gpa != va || w.user != user || w.page_bytes != page_bytes)
		fprintf(stderr, "\n  va %#llx: present %d gpa %#llx user %d page %#llx\n",
			(unsigned long long)va, w.present, (unsigned long long)w.gpa, w.user,
			(unsigned long long)w.page_bytes);
	CU_ASSERT(w.present);
	CU_ASSERT_EQUAL(w.gpa, va);
	CU_ASSERT_EQUAL(w.user, user);
	CU_ASSERT(w.writable);
	CU_ASSERT_EQUAL(w.page_bytes, page_bytes);
}

static void test_page_tables(void)
{
	CU_ASSERT_FATAL(setup() == 0);
	/* Page 0 is unmapped: NULL dereferences fault. */
	CU_ASSERT(!walk(0).present);
	CU_ASSERT(!walk(0xfff).present);
	/* Hypervisor pages: mapped for the CPL0 stub, closed to CPL3. */
	static const uint64_t supervisor[] = {
		X86_GPA_GDT,
		X86_GPA_IDT,
		X86_GPA_TSS,
		X86_GPA_TSS + 0x2000,
		X86_GPA_EXCEPTION_STUBS,
		0x9000,
		X86_GPA_EXCEPTION_STACK_TOP - 8,
		X86_GPA_PML4,
		X86_GPA_PDPT,
		X86_GPA_PT_LOW,
		X86_GPA_PD_BASE,
		KAPSEL_GPA_LOW_FREE - 1,
	};
	for (size_t i = 0; i < sizeof(supervisor) / sizeof(supervisor[0]); i++)
		expect_identity(supervisor[i], 0, 4096);
	/* Start info and event page: user read/write. */
	expect_identity(KAPSEL_GPA_START_INFO, 1, 4096);
	expect_identity(KAPSEL_GPA_START_INFO + 4095, 1, 4096);
	expect_identity(KAPSEL_GPA_EVENT_PAGE, 1, 4096);
	expect_identity(KAPSEL_GPA_EVENT_PAGE + 4095, 1, 4096);
	/* Free low memory, the initial stack, the image: user, 4 KiB pages. */
	expect_identity(KAPSEL_GPA_LOW_FREE, 1, 4096);
	expect_identity(KAPSEL_GPA_INITIAL_STACK - 8, 1, 4096);
	expect_identity(KAPSEL_GPA_IMAGE_MIN, 1, 4096);
	expect_identity((2ull << 20) - 1, 1, 4096);
	/* Above 2 MiB: 2 MiB pages, identity, up to the last byte of RAM. */
	expect_identity(2ull << 20, 1, 2ull << 20);
	expect_identity((2ull << 20) + 0x12345, 1, 2ull << 20);
	expect_identity(RAM_BYTES / 2 + 0xabc, 1, 2ull << 20);
	expect_identity(RAM_BYTES - 1, 1, 2ull << 20);
	/* Nothing past RAM, nothing in the upper half, nothing above 512 GiB. */
	CU_ASSERT(!walk(RAM_BYTES).present);
	CU_ASSERT(!walk(1ull << 30).present);
	CU_ASSERT(!walk(1ull << 39).present);
	CU_ASSERT(!walk(0xffff800000000000ull).present);
	CU_ASSERT(!walk(0xffffffff80000000ull).present);
	guest_memory_destroy(&mem);
}

static void test_page_tables_for_sizes(void)
{
	/* RAM of 1 GiB + 2 MiB needs a second page directory. */
	const uint64_t ram = (1ull << 30) + (2ull << 20);
	CU_ASSERT_EQUAL_FATAL(guest_memory_create(&mem, ram, "x86-boot-test"), 0);
	CU_ASSERT_EQUAL_FATAL(x86_boot_build_tables(&mem), 0);
	expect_identity((1ull << 30) - 1, 1, 2ull << 20);
	expect_identity(1ull << 30, 1, 2ull << 20);
	expect_identity(ram - 1, 1, 2ull << 20);
	CU_ASSERT(!walk(ram).present);
	CU_ASSERT(!walk(2ull << 30).present);
	guest_memory_destroy(&mem);

	/* Too small to hold the tables: refused, nothing written. */
	struct guest_memory tiny = { .memfd = -1, .size_bytes = X86_GPA_PML4 };
	tiny.host_base = calloc(1, tiny.size_bytes);
	CU_ASSERT_EQUAL(x86_boot_build_tables(&tiny), -EFAULT);
	free(tiny.host_base);
}

struct descriptor {
	uint32_t base, limit;
	unsigned type, s, dpl, present, l, db, g;
};

static struct descriptor decode(uint64_t d)
{
	struct descriptor out;
	out.limit = (uint32_t)((d & 0xffff) | (((d >> 48) & 0xf) << 16));
	out.base = (uint32_t)(((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24));
	out.type = (d >> 40) & 0xf;
	out.s = (d >> 44) & 1;
	out.dpl = (d >> 45) & 3;
	out.present = (d >> 47) & 1;
	out.l = (d >> 53) & 1;
	out.db = (d >> 54) & 1;
	out.g = (d >> 55) & 1;
	return out;
}

static void test_gdt(void)
{
	CU_ASSERT_FATAL(setup() == 0);
	CU_ASSERT_EQUAL(read_u64(X86_GPA_GDT), 0); /* null descriptor */
	/* Selectors as the ABI documents them. */
	CU_ASSERT_EQUAL(X86_SEL_KERNEL_CS, 0x08);
	CU_ASSERT_EQUAL(X86_SEL_KERNEL_DS, 0x10);
	CU_ASSERT_EQUAL(X86_SEL_USER_DS, 0x1b);
	CU_ASSERT_EQUAL(X86_SEL_USER_CS, 0x23);
	CU_ASSERT_EQUAL(X86_SEL_TSS, 0x28);

	struct descriptor kcs = decode(read_u64(X86_GPA_GDT + (X86_SEL_KERNEL_CS & ~7u)));
	CU_ASSERT(kcs.present && kcs.s && kcs.l && !kcs.db);
	CU_ASSERT_EQUAL(kcs.dpl, 0);
	CU_ASSERT(kcs.type & 0x8); /* code */
	struct descriptor kds = decode(read_u64(X86_GPA_GDT + (X86_SEL_KERNEL_DS & ~7u)));
	CU_ASSERT(kds.present && kds.s);
	CU_ASSERT_EQUAL(kds.dpl, 0);
	CU_ASSERT_EQUAL(kds.type & 0xa, 0x2); /* data, writable */
	struct descriptor ucs = decode(read_u64(X86_GPA_GDT + (X86_SEL_USER_CS & ~7u)));
	CU_ASSERT(ucs.present && ucs.s && ucs.l && !ucs.db);
	CU_ASSERT_EQUAL(ucs.dpl, 3);
	CU_ASSERT(ucs.type & 0x8);
	struct descriptor uds = decode(read_u64(X86_GPA_GDT + (X86_SEL_USER_DS & ~7u)));
	CU_ASSERT(uds.present && uds.s);
	CU_ASSERT_EQUAL(uds.dpl, 3);
	CU_ASSERT_EQUAL(uds.type & 0xa, 0x2);
	/* The RPL of the user selectors matches their DPL. */
	CU_ASSERT_EQUAL(X86_SEL_USER_CS & 3, 3);
	CU_ASSERT_EQUAL(X86_SEL_USER_DS & 3, 3);

	/* 64-bit TSS descriptor: 16 bytes, base 0x3000, limit covers the
	 * bitmap and its terminating byte. */
	uint64_t low = read_u64(X86_GPA_GDT + X86_SEL_TSS);
	uint64_t high = read_u64(X86_GPA_GDT + X86_SEL_TSS + 8);
	struct descriptor tss = decode(low);
	CU_ASSERT(tss.present && !tss.s && !tss.g);
	CU_ASSERT_EQUAL(tss.type, 0x9); /* available 64-bit TSS */
	CU_ASSERT_EQUAL(tss.dpl, 0);
	CU_ASSERT_EQUAL(tss.base, X86_GPA_TSS);
	CU_ASSERT_EQUAL(high, 0); /* base[63:32] */
	CU_ASSERT_EQUAL(tss.limit, 104 + 65536 / 8);
	guest_memory_destroy(&mem);
}

/*
 * SMP: every vCPU has its own pair of TSSes and its own exception stack;
 * all kernel-mode TSSes reach the one I/O bitmap, no two vCPUs share a
 * stack, and nothing reaches guest-owned memory.
 */
static void test_per_vcpu_tss(void)
{
	CU_ASSERT_FATAL(setup() == 0);
	const uint8_t *bitmap =
		guest_memory_translate(&mem, X86_GPA_TSS + X86_TSS_IOMAP_OFFSET, X86_TSS_IOMAP_BYTES);
	for (unsigned v = 0; v < KAPSEL_MAX_VCPUS; v++) {
		struct descriptor kernel = decode(read_u64(X86_GPA_GDT + x86_sel_tss(v, 0)));
		struct descriptor user = decode(read_u64(X86_GPA_GDT + x86_sel_tss(v, 1)));
		CU_ASSERT(kernel.present && !kernel.s && kernel.type == 0x9 && kernel.dpl == 0);
		CU_ASSERT(user.present && !user.s && user.type == 0x9 && user.dpl == 0);
		CU_ASSERT_EQUAL(kernel.base, x86_tss_base(v));
		CU_ASSERT_EQUAL(user.base, x86_user_tss_base(v));
		CU_ASSERT_EQUAL(user.limit, 103); /* no bitmap: every port closed */
		const uint8_t *tss = guest_memory_translate(&mem, x86_tss_base(v), 104);
		uint64_t rsp0;
		uint16_t iomap;
		memcpy(&rsp0, tss + 4, 8);
		memcpy(&iomap, tss + 102, 2);
		CU_ASSERT_EQUAL(rsp0, x86_exception_stack_top(v));
		/* The bitmap offset lands on the shared bitmap, and the limit
		 * covers it and its terminating byte. */
		CU_ASSERT_EQUAL(x86_tss_base(v) + iomap, X86_GPA_TSS + X86_TSS_IOMAP_OFFSET);
		CU_ASSERT_EQUAL(kernel.limit, iomap + 8192u);
		const uint8_t *utss = guest_memory_translate(&mem, x86_user_tss_base(v), 104);
		memcpy(&rsp0, utss + 4, 8);
		CU_ASSERT_EQUAL(rsp0, x86_exception_stack_top(v));
		/* Headers do not overlap each other or the bitmap. */
		CU_ASSERT(x86_tss_base(v) + 104 <= X86_GPA_TSS + X86_TSS_IOMAP_OFFSET);
		for (unsigned w = 0; w < v; w++) {
			CU_ASSERT(x86_tss_base(w) + 104 <= x86_tss_base(v) ||
				  x86_tss_base(v) + 104 <= x86_tss_base(w));
			CU_ASSERT(x86_exception_stack_top(w) - x86_exception_stack_top(v) >= 1024);
		}
		/* Supervisor-only pages: guest code can reach none of it. */
		CU_ASSERT(x86_exception_stack_top(v) - X86_EXCEPTION_STACK_BYTES >=
			  KAPSEL_GPA_EVENT_PAGE + 4096);
		CU_ASSERT(x86_exception_stack_top(v) <= KAPSEL_GPA_LOW_FREE);
	}
	/* Opening a port opens it for every vCPU: one bitmap. */
	CU_ASSERT(!x86_boot_port_is_open(&mem, 0x3f8));
	x86_boot_open_port(&mem, 0x3f8);
	CU_ASSERT_EQUAL(bitmap[0x3f8 / 8] & (1u << (0x3f8 % 8)), 0);
	/* The GDT limit covers the last vCPU's descriptors. */
	struct kvm_sregs sregs;
	memset(&sregs, 0, sizeof(sregs));
	x86_boot_set_system_registers(&sregs, KAPSEL_MAX_VCPUS - 1);
	CU_ASSERT(sregs.gdt.limit >= x86_sel_tss(KAPSEL_MAX_VCPUS - 1, 1) + 15u);
	CU_ASSERT_EQUAL(sregs.tr.base, x86_tss_base(KAPSEL_MAX_VCPUS - 1));
	CU_ASSERT_EQUAL(sregs.tr.selector, x86_sel_tss(KAPSEL_MAX_VCPUS - 1, 0));
	guest_memory_destroy(&mem);
}

static void test_idt_and_stubs(void)
{
	CU_ASSERT_FATAL(setup() == 0);
	for (unsigned v = 0; v < 32; v++) {
		uint64_t low = read_u64(X86_GPA_IDT + v * 16);
		uint64_t high = read_u64(X86_GPA_IDT + v * 16 + 8);
		uint64_t handler = (low & 0xffff) | (((low >> 48) & 0xffff) << 16) | (high << 32);
		CU_ASSERT_EQUAL(handler, X86_GPA_EXCEPTION_STUBS + v * 16ull);
		CU_ASSERT_EQUAL((low >> 16) & 0xffff, X86_SEL_KERNEL_CS);
		/* Present interrupt gate, DPL 0; #BP has DPL 3 so that int3
		 * from CPL3 code is a #BP (handed to the guest), not a #GP. */
		CU_ASSERT_EQUAL((low >> 40) & 0xff, v == 3 ? 0xee : 0x8e);
		CU_ASSERT_EQUAL((low >> 32) & 7, 0); /* IST 0 */
		/* The stub: [push $0] push $v; push %rax; push %rdx;
		 * mov $0x518, %dx; out %al, %dx; hlt */
		const uint8_t *stub = guest_memory_translate(&mem, handler, 16);
		int has_error_code =
			v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21 || v == 29 || v == 30;
		size_t at = 0;
		if (!has_error_code) {
			CU_ASSERT(stub[0] == 0x6a && stub[1] == 0);
			at = 2;
		}
		CU_ASSERT(stub[at] == 0x6a && stub[at + 1] == v);
		CU_ASSERT(stub[at + 2] == 0x50 && stub[at + 3] == 0x52);
		CU_ASSERT(stub[at + 4] == 0x66 && stub[at + 5] == 0xba);
		CU_ASSERT_EQUAL(stub[at + 6] | (stub[at + 7] << 8), KAPSEL_PORT_FAULT);
		CU_ASSERT(stub[at + 8] == 0xee && stub[at + 9] == 0xf4);
	}
	/* Vectors past 31 are outside the IDT (its limit is 32 gates). */
	CU_ASSERT_EQUAL(read_u64(X86_GPA_IDT + 32 * 16), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(x86_exception_name(14), "#PF"));
	CU_ASSERT_PTR_NOT_NULL(strstr(x86_exception_name(13), "#GP"));
	CU_ASSERT_STRING_EQUAL(x86_exception_name(15), "reserved exception vector");
	CU_ASSERT_STRING_EQUAL(x86_exception_name(1000), "reserved exception vector");
	guest_memory_destroy(&mem);
}

static void test_tss_and_io_bitmap(void)
{
	CU_ASSERT_FATAL(setup() == 0);
	const uint8_t *tss = guest_memory_translate(&mem, X86_GPA_TSS, X86_TSS_LIMIT + 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(tss);
	uint64_t rsp0;
	uint16_t iomap;
	memcpy(&rsp0, tss + 4, 8);
	memcpy(&iomap, tss + 102, 2);
	CU_ASSERT_EQUAL(rsp0, X86_GPA_EXCEPTION_STACK_TOP);
	CU_ASSERT_EQUAL(iomap, 104);
	const uint8_t *bitmap = tss + iomap;
	/* All 65536 ports closed, and the byte after the bitmap is 0xff. */
	size_t open = 0;
	for (unsigned i = 0; i < 8192; i++)
		open += bitmap[i] != 0xff;
	CU_ASSERT_EQUAL(open, 0);
	CU_ASSERT_EQUAL(bitmap[8192], 0xff);
	CU_ASSERT_EQUAL(X86_TSS_LIMIT, 104 + 8192);

	/* Open single ports: exactly one bit each changes. */
	static const uint16_t ports[] = { 0, 7, 8, 0x3f8, 0x3ff, 0x510, 0xfffe, 0xffff };
	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		CU_ASSERT(!x86_boot_port_is_open(&mem, ports[i]));
		x86_boot_open_port(&mem, ports[i]);
		CU_ASSERT(x86_boot_port_is_open(&mem, ports[i]));
		CU_ASSERT_EQUAL(bitmap[ports[i] / 8] & (1u << (ports[i] % 8)), 0);
	}
	CU_ASSERT_EQUAL(bitmap[0], 0x7e);	  /* ports 0 and 7 */
	CU_ASSERT_EQUAL(bitmap[1], 0xfe);	  /* port 8 */
	CU_ASSERT_EQUAL(bitmap[0x3f8 / 8], 0x7e); /* 0x3f8 and 0x3ff */
	CU_ASSERT_EQUAL(bitmap[8191], 0x3f);	  /* 0xfffe and 0xffff */
	CU_ASSERT(!x86_boot_port_is_open(&mem, 0x3f9));
	CU_ASSERT(!x86_boot_port_is_open(&mem, 0x511));
	CU_ASSERT(!x86_boot_port_is_open(&mem, 0xfffd));
	CU_ASSERT(!x86_boot_port_is_open(&mem, KAPSEL_PORT_FAULT));
	/* Opening port 0xffff must not touch the terminating byte. */
	CU_ASSERT_EQUAL(bitmap[8192], 0xff);
	/* Opening twice is harmless. */
	x86_boot_open_port(&mem, 0x3f8);
	CU_ASSERT_EQUAL(bitmap[0x3f8 / 8], 0x7e);
	size_t open_bits = 0;
	for (unsigned port = 0; port < 65536; port++)
		open_bits += (size_t)x86_boot_port_is_open(&mem, (uint16_t)port);
	CU_ASSERT_EQUAL(open_bits, sizeof(ports) / sizeof(ports[0]));

	/* Rebuilding the tables closes every port again. */
	CU_ASSERT_EQUAL(x86_boot_build_tables(&mem), 0);
	CU_ASSERT(!x86_boot_port_is_open(&mem, 0x3f8));
	CU_ASSERT(!x86_boot_port_is_open(&mem, 0xffff));
	guest_memory_destroy(&mem);
}

/* A user-mode vCPU as Kapsel boots it, as saved state would carry it. */
static void saved_user_vcpu(struct kvm_sregs *sregs, struct kvm_regs *regs)
{
	memset(sregs, 0, sizeof(*sregs));
	memset(regs, 0, sizeof(*regs));
	sregs->cs.selector = X86_SEL_USER_CS;
	sregs->cs.dpl = 3;
	sregs->ss.selector = X86_SEL_USER_DS;
	sregs->ss.dpl = 3;
	sregs->cr3 = X86_GPA_PML4;
	regs->rflags = 0x202;
}

static void test_restored_vcpu_checks(void)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	char error[200];

	/* A forged state moves the TSS into guest-writable memory and sets
	 * IOPL 3: both come back as the hypervisor's. */
	saved_user_vcpu(&sregs, &regs);
	sregs.tr.base = 0x200000;
	sregs.tr.limit = 0xffff;
	sregs.gdt.base = 0x300000;
	sregs.idt.base = 0x400000;
	sregs.idt.limit = 0xfff;
	regs.rflags = 0x3202;
	CU_ASSERT_EQUAL(x86_boot_check_restored_vcpu(&sregs, &regs, 0, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(sregs.tr.base, X86_GPA_TSS);
	CU_ASSERT_EQUAL(sregs.tr.limit, X86_TSS_LIMIT);
	CU_ASSERT_EQUAL(sregs.tr.selector, X86_SEL_TSS);
	CU_ASSERT_EQUAL(sregs.gdt.base, X86_GPA_GDT);
	CU_ASSERT_EQUAL(sregs.idt.base, X86_GPA_IDT);
	CU_ASSERT_EQUAL(sregs.idt.limit, 32 * 16 - 1);
	CU_ASSERT_EQUAL(regs.rflags, 0x202);
	/* Another vCPU gets its own TSS back, not vCPU 0's. */
	saved_user_vcpu(&sregs, &regs);
	CU_ASSERT_EQUAL(x86_boot_check_restored_vcpu(&sregs, &regs, 3, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(sregs.tr.base, x86_tss_base(3));
	CU_ASSERT_EQUAL(sregs.tr.selector, x86_sel_tss(3, 0));

	/* Kernel code segment: the guest would run at CPL0. */
	saved_user_vcpu(&sregs, &regs);
	sregs.cs.selector = X86_SEL_KERNEL_CS;
	sregs.cs.dpl = 0;
	CU_ASSERT_EQUAL(x86_boot_check_restored_vcpu(&sregs, &regs, 0, error, sizeof(error)), -EPROTO);
	CU_ASSERT_STRING_EQUAL(
		error,
		"the saved vCPU runs with code segment 0x8 (DPL 0), not the guest's CPL3 segments; the state is corrupt or forged");

	/* Right selector, wrong privilege. */
	saved_user_vcpu(&sregs, &regs);
	sregs.ss.dpl = 0;
	CU_ASSERT_EQUAL(x86_boot_check_restored_vcpu(&sregs, &regs, 0, error, sizeof(error)), -EPROTO);

	/* Page tables the guest wrote itself. */
	saved_user_vcpu(&sregs, &regs);
	sregs.cr3 = 0x200000;
	CU_ASSERT_EQUAL(x86_boot_check_restored_vcpu(&sregs, &regs, 0, error, sizeof(error)), -EPROTO);
	CU_ASSERT_STRING_EQUAL(
		error,
		"the saved vCPU's page-table root 0x200000 is not the hypervisor's; the state is corrupt or forged");
}

static void test_privileged_entry_msrs(void)
{
	static const uint32_t entries[] = { 0x174,	0x175,	    0x176,     0xc0000081,
					    0xc0000082, 0xc0000083, 0xc0000084 };
	for (unsigned i = 0; i < sizeof(entries) / sizeof(entries[0]); i++)
		CU_ASSERT(vcpu_state_msr_is_privileged_entry(entries[i]));
	/* State the guest owns is restored. */
	CU_ASSERT(!vcpu_state_msr_is_privileged_entry(0x10));	    /* TSC */
	CU_ASSERT(!vcpu_state_msr_is_privileged_entry(0xc0000100)); /* FS base */
	CU_ASSERT(!vcpu_state_msr_is_privileged_entry(0xc0000102)); /* kernel GS base */
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "page tables", test_page_tables },
		{ "page tables above 1 GiB and too-small RAM", test_page_tables_for_sizes },
		{ "GDT descriptors", test_gdt },
		{ "per-vCPU TSSes and exception stacks", test_per_vcpu_tss },
		{ "IDT gates and exception stubs", test_idt_and_stubs },
		{ "TSS and I/O permission bitmap", test_tss_and_io_bitmap },
		{ "restored vCPU forced onto the hypervisor's tables", test_restored_vcpu_checks },
		{ "saved syscall entry MSRs never applied", test_privileged_entry_msrs },
	};
	return UNIT_RUN("x86 boot", tests);
}
