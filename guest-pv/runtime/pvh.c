/* PVH boot shim, long-mode half: turns QEMU's hvm_start_info into a kapsel_start_info, builds kapsel's CPU tables and enters the guest at CPL3. */
#include <stdarg.h>
#include <stdint.h>

#include "kapsel/abi.h"
#include "kapsel_guest/arch.h"
#include "kapsel_guest/libc.h"
#include "kapsel_guest/platform.h"
#include "pvh.h"

/* What QEMU hands over in ebx (Xen's PVH boot ABI, version 1). */
struct hvm_start_info {
	uint32_t magic; /* PVH_START_INFO_MAGIC */
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr; /* NUL-terminated, or 0 */
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr; /* version >= 1 */
	uint32_t memmap_entries;
	uint32_t reserved;
};
_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info layout");

struct hvm_memmap_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type; /* E820 types: 1 = RAM */
	uint32_t reserved;
};
_Static_assert(sizeof(struct hvm_memmap_entry) == 24, "hvm memmap entry layout");
#define HVM_MEMMAP_RAM 1u
/* The firmware's memory map entries the shim reads; more are ignored. */
#define PVH_MEMMAP_READ_MAX 32u

/* What pvh.S pushes before calling kg_pvh_exception. */
struct pvh_exception_frame {
	uint64_t vector, error_code, rip, cs, rflags, rsp, ss;
};

#define PTE_PRESENT 0x1ull
#define PTE_WRITE 0x2ull
#define PTE_USER 0x4ull
#define PTE_WRITE_THROUGH 0x8ull
#define PTE_CACHE_DISABLE 0x10ull
#define PTE_HUGE 0x80ull
#define PAGE_BYTES 4096ull
#define GIB (1ull << 30)
#define MIB2 (1ull << 21)

/* The ports the emulated drivers use: 16550, primary ATA, NE2000, and
 * isa-debug-exit for the exit code. */
static const struct {
	uint16_t first, count;
} pvh_open_ports[] = {
	{ 0x3f8, 8 },		   /* COM1 16550 (uart16550.c) */
	{ 0x1f0, 8 },		   /* primary ATA command block (blk_ata.c) */
	{ 0x3f6, 1 },		   /* primary ATA control (blk_ata.c) */
	{ 0x300, 0x20 },	   /* NE2000 (net_ne2000.c) */
	{ KG_DEBUG_EXIT_PORT, 4 }, /* isa-debug-exit (platform.c) */
};

extern char __bss_start[], _end[], _start[];
extern char kg_pvh_exception_stubs[];

__attribute__((noreturn)) void kg_pvh_enter_user(uint64_t entry, uint64_t stack_top,
						 uint64_t argument);
__attribute__((noreturn)) void kg_pvh_main(uint32_t hvm_start_info_address);
__attribute__((noreturn)) void kg_pvh_exception(const struct pvh_exception_frame *frame);

static struct kapsel_start_info pvh_start_info __attribute__((aligned(4096)));
/* The rsp _start finds (it moves to the runtime's own stack at once). */
static char pvh_user_stack[4096] __attribute__((aligned(16)));

/* ---- Console for the shim's own messages (COM1, CPL0) -------------------- */

static void pvh_print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void pvh_print(const char *fmt, ...)
{
	char buffer[256];
	va_list ap;
	va_start(ap, fmt);
	int n = kg_vsnprintf(buffer, sizeof(buffer), fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(buffer))
		n = sizeof(buffer) - 1;
	for (int i = 0; i < n; i++) {
		/* LSR bit 5: transmit holding register empty. */
		for (unsigned spin = 0; spin < 100000 && !(kg_inb(0x3f8 + 5) & 0x20); spin++)
			;
		kg_outb(0x3f8, (uint8_t)buffer[i]);
	}
}

__attribute__((noreturn)) static void pvh_halt(uint32_t exit_code)
{
	kg_outl(KG_DEBUG_EXIT_PORT, exit_code); /* QEMU ends here if it has the device */
	for (;;)
		__asm__ volatile("cli; hlt");
}

/* ---- hvm_start_info -> kapsel_start_info --------------------------------- */

static uint64_t page_down(uint64_t a)
{
	return a & ~(PAGE_BYTES - 1);
}
static uint64_t page_up(uint64_t a)
{
	return (a + PAGE_BYTES - 1) & ~(PAGE_BYTES - 1);
}

/* The firmware's RAM ranges, copied before the shim writes low memory. */
static struct hvm_memmap_entry pvh_ram[PVH_MEMMAP_READ_MAX];
static uint32_t pvh_ram_count;

static void read_firmware_info(const struct hvm_start_info *hsi, struct kapsel_start_info *si)
{
	if (hsi->cmdline_paddr && hsi->cmdline_paddr < 4 * GIB) {
		const char *line = (const char *)(uintptr_t)hsi->cmdline_paddr;
		size_t n = 0;
		while (n < KAPSEL_CMDLINE_MAX - 1 && line[n])
			n++;
		memcpy(si->cmdline, line, n);
		si->cmdline[n] = '\0';
		if (line[n])
			pvh_print("pvh: command line longer than %u bytes, cut\n",
				  KAPSEL_CMDLINE_MAX - 1);
	}
	if (hsi->version < 1 || !hsi->memmap_paddr || hsi->memmap_paddr >= 4 * GIB) {
		pvh_print("pvh: no memory map in hvm_start_info (version %u)\n", hsi->version);
		return;
	}
	const struct hvm_memmap_entry *map =
		(const struct hvm_memmap_entry *)(uintptr_t)hsi->memmap_paddr;
	uint32_t count = hsi->memmap_entries;
	if (count > PVH_MEMMAP_READ_MAX) {
		pvh_print("pvh: memory map has %u entries, reading the first %u\n", count,
			  PVH_MEMMAP_READ_MAX);
		count = PVH_MEMMAP_READ_MAX;
	}
	for (uint32_t i = 0; i < count; i++) {
		struct hvm_memmap_entry e = map[i];
		if (e.type != HVM_MEMMAP_RAM || e.addr + e.size < e.addr)
			continue;
		pvh_ram[pvh_ram_count++] = e;
		si->ram_bytes += e.size;
	}
}

/* The end of the RAM range holding [start, end), or 0 if none holds it. */
static uint64_t ram_end_around(uint64_t start, uint64_t end)
{
	for (uint32_t i = 0; i < pvh_ram_count; i++)
		if (pvh_ram[i].addr <= start && end <= pvh_ram[i].addr + pvh_ram[i].size)
			return pvh_ram[i].addr + pvh_ram[i].size;
	return 0;
}

static void add_memmap(struct kapsel_start_info *si, uint64_t gpa, uint64_t length, uint32_t type)
{
	if (length == 0 || si->memmap_count == KAPSEL_MEMMAP_MAX)
		return;
	si->memmap[si->memmap_count++] =
		(struct kapsel_memmap_entry){ .gpa = gpa, .length_bytes = length, .type = type };
}

/* Kapsel's memory map shape: tables, free low memory, the image, the RAM
 * after it, then any further RAM range (above the PCI hole). */
static void build_memmap(struct kapsel_start_info *si)
{
	uint64_t image_start = KAPSEL_GPA_IMAGE_MIN;
	uint64_t image_end = page_up((uintptr_t)_end);
	add_memmap(si, 0, KAPSEL_GPA_LOW_FREE, KAPSEL_MEMMAP_RESERVED);
	uint64_t low_end = ram_end_around(KAPSEL_GPA_LOW_FREE, KAPSEL_GPA_LOW_FREE + 1);
	if (low_end > KAPSEL_GPA_LOW_FREE)
		add_memmap(si, KAPSEL_GPA_LOW_FREE,
			   page_down(low_end < image_start ? low_end : image_start) -
				   KAPSEL_GPA_LOW_FREE,
			   KAPSEL_MEMMAP_RAM);
	add_memmap(si, image_start, image_end - image_start, KAPSEL_MEMMAP_IMAGE);
	uint64_t after_image = ram_end_around(image_start, image_end);
	if (after_image > image_end)
		add_memmap(si, image_end, page_down(after_image) - image_end, KAPSEL_MEMMAP_RAM);
	else
		pvh_print("pvh: no RAM range holds the image [0x%llx, 0x%llx)\n",
			  (unsigned long long)image_start, (unsigned long long)image_end);
	for (uint32_t i = 0; i < pvh_ram_count; i++) {
		uint64_t start = page_up(pvh_ram[i].addr);
		uint64_t end = page_down(pvh_ram[i].addr + pvh_ram[i].size);
		if (start >= after_image && end > start)
			add_memmap(si, start, end - start, KAPSEL_MEMMAP_RAM);
	}
}

/* ---- A clock: the TSC's rate, measured against the PIT ------------------ */

#define PIT_HZ 1193182u
#define PIT_CALIBRATE_TICKS 11932u /* 10 ms */
#define PIT_POLLS_MAX 2000000u	   /* gives up when no PIT counts down */

static uint16_t pit_channel0_count(void)
{
	kg_outb(0x43, 0x00); /* latch channel 0 */
	uint8_t low = kg_inb(0x40);
	return (uint16_t)(low | kg_inb(0x40) << 8);
}

/* kHz of the TSC, or 0 when there is no PIT to measure against.  Channel 0
 * counts down from 0xffff once (mode 0); interrupts stay off throughout. */
static uint64_t measure_tsc_khz(void)
{
	kg_outb(0x43, 0x30); /* channel 0, low then high byte, mode 0 */
	kg_outb(0x40, 0xff);
	kg_outb(0x40, 0xff);
	uint16_t first = pit_channel0_count();
	uint64_t tsc_first = kg_rdtsc();
	for (unsigned polls = 0; polls < PIT_POLLS_MAX; polls++) {
		uint16_t now = pit_channel0_count();
		if (now > first)
			return 0; /* wrapped or not a PIT */
		unsigned elapsed = (unsigned)first - now;
		if (elapsed >= PIT_CALIBRATE_TICKS) {
			uint64_t tsc_ticks = kg_rdtsc() - tsc_first;
			return tsc_ticks * PIT_HZ / elapsed / 1000u;
		}
	}
	return 0;
}

/* ---- CPU tables in low memory (the layout of hypervisor/core/x86_boot.c) - */

static uint64_t *table_at(uint64_t gpa)
{
	return (uint64_t *)(uintptr_t)gpa;
}

static int range_is_ram(uint64_t start, uint64_t end)
{
	for (uint32_t i = 0; i < pvh_ram_count; i++)
		if (start < pvh_ram[i].addr + pvh_ram[i].size && pvh_ram[i].addr < end)
			return 1;
	return 0;
}

/* Identity map of max(4 GiB, top of RAM), all user pages, except the first
 * 2 MiB in 4 KiB pages: page 0 absent (NULL faults), the tables below
 * KAPSEL_GPA_LOW_FREE supervisor-only.  2 MiB ranges with no RAM (MMIO)
 * are mapped uncached. */
static void build_page_tables(void)
{
	uint64_t top = 4 * GIB;
	for (uint32_t i = 0; i < pvh_ram_count; i++)
		if (pvh_ram[i].addr + pvh_ram[i].size > top)
			top = pvh_ram[i].addr + pvh_ram[i].size;
	uint64_t gib = (top + GIB - 1) / GIB;
	if (gib > PVH_MAX_GIB) {
		pvh_print("pvh: mapping only the first %u GiB of RAM\n", PVH_MAX_GIB);
		gib = PVH_MAX_GIB;
	}
	uint64_t *pml4 = table_at(PVH_GPA_PML4), *pdpt = table_at(PVH_GPA_PDPT);
	memset(pml4, 0, PAGE_BYTES);
	memset(pdpt, 0, PAGE_BYTES);
	pml4[0] = PVH_GPA_PDPT | PTE_PRESENT | PTE_WRITE | PTE_USER;
	for (uint64_t g = 0; g < gib; g++) {
		uint64_t pd_gpa = PVH_GPA_PD_BASE + g * PAGE_BYTES;
		uint64_t *pd = table_at(pd_gpa);
		pdpt[g] = pd_gpa | PTE_PRESENT | PTE_WRITE | PTE_USER;
		for (uint64_t e = 0; e < 512; e++) {
			uint64_t gpa = g * GIB + e * MIB2;
			uint64_t cache = range_is_ram(gpa, gpa + MIB2)
						 ? 0
						 : PTE_CACHE_DISABLE | PTE_WRITE_THROUGH;
			pd[e] = gpa | PTE_PRESENT | PTE_WRITE | PTE_USER | PTE_HUGE | cache;
		}
	}
	uint64_t *pt_low = table_at(PVH_GPA_PT_LOW);
	table_at(PVH_GPA_PD_BASE)[0] = PVH_GPA_PT_LOW | PTE_PRESENT | PTE_WRITE | PTE_USER;
	for (uint64_t p = 0; p < 512; p++) {
		uint64_t gpa = p * PAGE_BYTES;
		uint64_t flags = PTE_PRESENT | PTE_WRITE;
		if (gpa >= KAPSEL_GPA_LOW_FREE)
			flags |= PTE_USER;
		pt_low[p] = gpa == 0 ? 0 : gpa | flags;
	}
}

static uint64_t segment_descriptor(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
	return (uint64_t)(limit & 0xffff) | ((uint64_t)(base & 0xffffff) << 16) |
	       ((uint64_t)access << 40) | ((uint64_t)((limit >> 16) & 0xf) << 48) |
	       ((uint64_t)(flags & 0xf) << 52) | ((uint64_t)(base >> 24) << 56);
}

static void build_gdt(void)
{
	uint64_t *gdt = table_at(PVH_GPA_GDT);
	memset(gdt, 0, PAGE_BYTES);
	gdt[PVH_SEL_KERNEL_CS >> 3] = segment_descriptor(0, 0xfffff, 0x9a, 0xa);
	gdt[PVH_SEL_KERNEL_DS >> 3] = segment_descriptor(0, 0xfffff, 0x92, 0xc);
	gdt[PVH_SEL_USER_DS >> 3] = segment_descriptor(0, 0xfffff, 0xf2, 0xc);
	gdt[PVH_SEL_USER_CS >> 3] = segment_descriptor(0, 0xfffff, 0xfa, 0xa);
	/* 64-bit available TSS; the next slot holds base[63:32] = 0. */
	gdt[PVH_SEL_TSS >> 3] = segment_descriptor(PVH_GPA_TSS, PVH_TSS_LIMIT, 0x89, 0x0);
	gdt[(PVH_SEL_TSS >> 3) + 1] = 0;
}

static void build_tss(void)
{
	uint8_t *tss = (uint8_t *)(uintptr_t)PVH_GPA_TSS;
	uint64_t rsp0 = PVH_GPA_EXCEPTION_STACK_TOP;
	uint16_t iomap = PVH_TSS_IOMAP_OFFSET;
	memset(tss, 0, PVH_TSS_IOMAP_OFFSET);
	memcpy(tss + 4, &rsp0, sizeof(rsp0));
	memcpy(tss + 102, &iomap, sizeof(iomap));
	/* Every port closed (the byte after the bitmap must be all ones too),
	 * then open the drivers' ports: bit clear = CPL3 may use it. */
	uint8_t *bitmap = tss + PVH_TSS_IOMAP_OFFSET;
	memset(bitmap, 0xff, PVH_TSS_IOMAP_BYTES + 1);
	for (unsigned r = 0; r < sizeof(pvh_open_ports) / sizeof(pvh_open_ports[0]); r++)
		for (unsigned p = 0; p < pvh_open_ports[r].count; p++) {
			unsigned port = pvh_open_ports[r].first + p;
			bitmap[port / 8] &= (uint8_t) ~(1u << (port % 8));
		}
}

static void build_idt(void)
{
	uint64_t *idt = table_at(PVH_GPA_IDT);
	memset(idt, 0, PAGE_BYTES);
	for (unsigned v = 0; v < 32; v++) {
		uint64_t handler = (uintptr_t)kg_pvh_exception_stubs + 16u * v;
		/* Interrupt gate, DPL 0, except #BP, which CPL3 raises with int3. */
		uint64_t type = v == 3 ? 0xeeull : 0x8eull;
		idt[v * 2] = (handler & 0xffff) | ((uint64_t)PVH_SEL_KERNEL_CS << 16) |
			     (type << 40) | (((handler >> 16) & 0xffff) << 48);
		idt[v * 2 + 1] = handler >> 32;
	}
}

struct __attribute__((packed)) descriptor_pointer {
	uint16_t limit;
	uint64_t base;
};

static void load_cpu_state(void)
{
	struct descriptor_pointer gdtr = { PAGE_BYTES - 1, PVH_GPA_GDT };
	struct descriptor_pointer idtr = { 32 * 16 - 1, PVH_GPA_IDT };
	__asm__ volatile("lgdt %0" : : "m"(gdtr) : "memory");
	__asm__ volatile("lidt %0" : : "m"(idtr) : "memory");
	/* Reload cs and the data segments from the new GDT (same selectors). */
	__asm__ volatile("pushq %0\n\t"
			 "leaq 1f(%%rip), %%rax\n\t"
			 "pushq %%rax\n\t"
			 "lretq\n"
			 "1:\n\t"
			 "mov %1, %%ds\n\t"
			 "mov %1, %%es\n\t"
			 "mov %1, %%ss"
			 :
			 : "i"(PVH_SEL_KERNEL_CS), "r"((uint32_t)PVH_SEL_KERNEL_DS)
			 : "rax", "memory");
	__asm__ volatile("ltr %w0" : : "r"((uint16_t)PVH_SEL_TSS) : "memory");
	__asm__ volatile("mov %0, %%cr3" : : "r"((uint64_t)PVH_GPA_PML4) : "memory");
	/* kapsel's control registers: SSE usable, write protection on. */
	uint64_t cr0, cr4;
	__asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
	cr0 &= ~(uint64_t)(PVH_CR0_EM | PVH_CR0_TS);
	cr0 |= PVH_CR0_MP | PVH_CR0_NE | PVH_CR0_WP;
	__asm__ volatile("mov %0, %%cr0" : : "r"(cr0) : "memory");
	__asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
	cr4 |= PVH_CR4_OSFXSR | PVH_CR4_OSXMMEXCPT;
	__asm__ volatile("mov %0, %%cr4" : : "r"(cr4) : "memory");
	uint32_t mxcsr = 0x1f80;
	__asm__ volatile("fninit\n\tldmxcsr %0" : : "m"(mxcsr));
}

void kg_pvh_main(uint32_t hvm_start_info_address)
{
	const struct hvm_start_info *hsi =
		(const struct hvm_start_info *)(uintptr_t)hvm_start_info_address;
	if (!hsi || hsi->magic != PVH_START_INFO_MAGIC) {
		pvh_print("pvh: ebx 0x%x holds no hvm_start_info (magic 0x%x, want 0x%x); "
			  "boot with a PVH loader (qemu -kernel)\n",
			  hvm_start_info_address, hsi ? hsi->magic : 0, PVH_START_INFO_MAGIC);
		pvh_halt(KG_EXIT_CODE_CRASH);
	}
	struct kapsel_start_info *si = &pvh_start_info;
	si->magic = KAPSEL_START_INFO_MAGIC;
	si->revision = KAPSEL_START_INFO_REVISION;
	si->abi_major = KAPSEL_ABI_MAJOR;
	si->abi_minor = KAPSEL_ABI_MINOR;
	/* No features, no event page, no devices: the platform code finds no
	 * Kapsel CPUID leaf and the drivers use the emulated devices. */
	read_firmware_info(hsi, si);
	build_memmap(si);
	memcpy(si->name, "pvh", 4);
	si->tsc_khz = measure_tsc_khz();
	if (!si->tsc_khz)
		pvh_print(
			"pvh: no PIT to measure the TSC against: no clock, sleeps return at once\n");

	/* Low memory is free now: the firmware's data was copied out. */
	build_page_tables();
	build_gdt();
	build_tss();
	build_idt();
	load_cpu_state();
	kg_pvh_enter_user((uintptr_t)_start, (uintptr_t)(pvh_user_stack + sizeof(pvh_user_stack)),
			  (uintptr_t)si);
}

static const char *exception_name(uint64_t vector)
{
	static const char *const names[32] = {
		[0] = "divide error (#DE)",
		[1] = "debug (#DB)",
		[2] = "NMI",
		[3] = "breakpoint (#BP)",
		[4] = "overflow (#OF)",
		[5] = "bound range (#BR)",
		[6] = "invalid opcode (#UD)",
		[7] = "device not available (#NM)",
		[8] = "double fault (#DF)",
		[10] = "invalid TSS (#TS)",
		[11] = "segment not present (#NP)",
		[12] = "stack fault (#SS)",
		[13] = "general protection (#GP)",
		[14] = "page fault (#PF)",
		[16] = "x87 error (#MF)",
		[17] = "alignment check (#AC)",
		[18] = "machine check (#MC)",
		[19] = "SIMD error (#XM)",
	};
	return vector < 32 && names[vector] ? names[vector] : "reserved vector";
}

void kg_pvh_exception(const struct pvh_exception_frame *frame)
{
	uint64_t cr2;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	pvh_print("\npvh: guest exception %llu, %s, at rip 0x%llx (cpl %llu), error code 0x%llx, "
		  "cr2 0x%llx, rsp 0x%llx\n",
		  (unsigned long long)frame->vector, exception_name(frame->vector),
		  (unsigned long long)frame->rip, (unsigned long long)(frame->cs & 3),
		  (unsigned long long)frame->error_code, (unsigned long long)cr2,
		  (unsigned long long)frame->rsp);
	pvh_halt(KG_EXIT_CODE_CRASH);
}
