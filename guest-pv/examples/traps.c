/* Example guest: handles #UD, #BP, #DE, #GP and #PF in its own handlers and continues after each. */
#include "kapsel_guest/cpu.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

/*
 * Command line: traps [hostile-registrations | fault-in-handler | stack-overflow]
 *
 * Default: raise each exception, let the handler record the frame and
 * resume at a recovery label, and check vector, error code, CR2 and that
 * the general registers came back intact; exit 0 only if all match.
 * The other modes are hostile: bad registrations must be refused, a
 * fault inside a handler and a vector without a handler must end the VM
 * with a crash report naming the guest's handler chain.
 */

static uint8_t trap_stack[16384] __attribute__((aligned(16)));
/* Where the handler resumes the interrupted code (set by each trigger). */
volatile uint64_t traps_recover_rip;
static struct kapsel_trap_frame seen;
static volatile unsigned handled;
static volatile unsigned nested_ok;

static void trigger_page_fault_read(uint64_t address);

static void on_trap(struct kapsel_trap_frame *frame)
{
	seen = *frame;
	handled++;
	frame->rip = traps_recover_rip;
	/* A nested delivery: a #PF taken inside the #UD handler, on the same
	 * stack, comes back here and then to the #UD frame. */
	if (frame->vector == 6 && !nested_ok) {
		struct kapsel_trap_frame outer = seen;
		uint64_t recover = traps_recover_rip;
		unsigned before = handled;
		trigger_page_fault_read(0x20);
		if (handled == before + 1 && seen.vector == 14 && seen.cr2 == 0x20)
			nested_ok = 1;
		seen = outer;
		traps_recover_rip = recover;
	}
}

#define RECOVER_AT_1 "leaq 1f(%%rip), %%rax\n\tmovq %%rax, traps_recover_rip(%%rip)\n\t"

static uint64_t trigger_ud(void)
{
	register uint64_t r12 __asm__("r12") = 0x1234567887654321ull;
	__asm__ volatile(RECOVER_AT_1 "ud2\n1:" : "+r"(r12) : : "rax", "memory");
	return r12;
}

static void trigger_bp(void)
{
	__asm__ volatile(RECOVER_AT_1 "int3\n1:" : : : "rax", "memory");
}

static void trigger_de(void)
{
	__asm__ volatile(RECOVER_AT_1 "xorl %%edx, %%edx\n\tmovl $7, %%eax\n\txorl %%ecx, %%ecx\n\t"
				      "divl %%ecx\n1:"
			 :
			 :
			 : "rax", "rcx", "rdx", "memory");
}

static void trigger_gp_hlt(void)
{
	__asm__ volatile(RECOVER_AT_1 "hlt\n1:" : : : "rax", "memory");
}

static void trigger_gp_selector(void)
{
	/* Selector 0x43: index 8 lies past the GDT's limit -> #GP(0x40). */
	__asm__ volatile(RECOVER_AT_1 "movw $0x43, %%cx\n\tmovw %%cx, %%fs\n1:"
			 :
			 :
			 : "rax", "rcx", "memory");
}

static void trigger_page_fault_read(uint64_t address)
{
	__asm__ volatile(RECOVER_AT_1 "movl (%%rcx), %%edx\n1:"
			 :
			 : "c"(address)
			 : "rax", "rdx", "memory");
}

static void trigger_page_fault_write(uint64_t address)
{
	__asm__ volatile(RECOVER_AT_1 "movl %%edx, (%%rcx)\n1:"
			 :
			 : "c"(address), "d"(0)
			 : "rax", "memory");
}

static int failures;

static void expect(const char *what, uint64_t vector, uint64_t error_code, uint64_t cr2,
		   unsigned before)
{
	bool ok = handled == before + 1 && seen.vector == vector && seen.error_code == error_code &&
		  seen.cr2 == cr2 && seen.cs == 0x23 && seen.ss == 0x1b;
	kg_printf("trap %s: vector %llu error 0x%llx cr2 0x%llx %s\n", what,
		  (unsigned long long)seen.vector, (unsigned long long)seen.error_code,
		  (unsigned long long)seen.cr2, ok ? "ok" : "WRONG");
	if (!ok)
		failures++;
}

static void register_all(void)
{
	static const unsigned vectors[] = { 0, 3, 6, 13, 14 };
	for (unsigned i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		int rc = kg_trap_register(vectors[i], on_trap, trap_stack, sizeof(trap_stack));
		if (rc)
			kg_panic("kg_trap_register(%u) -> %d", vectors[i], rc);
	}
}

static int hostile_registrations(void)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	uint64_t entry = (uint64_t)(uintptr_t)kg_cpu_entry;
	uint64_t top = (uint64_t)(uintptr_t)(trap_stack + sizeof(trap_stack));
	struct {
		const char *what;
		unsigned vector;
		uint64_t entry, top, bytes;
		int64_t expected;
	} cases[] = {
		{ "stack past the end of RAM", 6, entry, si->ram_bytes + 0x10000, 0x4000,
		  -KAPSEL_EFAULT },
		{ "stack in hypervisor page tables", 6, entry, 0x14000, 0x4000, -KAPSEL_EFAULT },
		{ "stack on the event page", 6, entry, 0x9000, 0x1000, -KAPSEL_EFAULT },
		{ "stack wrapping below 0", 6, entry, 0x1000, 0x4000, -KAPSEL_EFAULT },
		{ "handler in the CPL0 stubs", 6, 0x6000, top, 0x4000, -KAPSEL_EFAULT },
		{ "handler past the end of RAM", 6, si->ram_bytes, top, 0x4000, -KAPSEL_EFAULT },
		{ "stack too small", 6, entry, top, 64, -KAPSEL_EINVAL },
		{ "double fault vector", 8, entry, top, 0x4000, -KAPSEL_EINVAL },
		{ "vector 300", 300, entry, top, 0x4000, -KAPSEL_EINVAL },
	};
	int wrong = 0;
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t rc = kg_hc_set_trap(cases[i].vector, cases[i].entry, cases[i].top,
					    cases[i].bytes);
		kg_printf("register %s -> %lld\n", cases[i].what, (long long)rc);
		if (rc != cases[i].expected)
			wrong++;
	}
	int64_t rc = kg_hc_set_callback(0, entry, si->ram_bytes + 0x10000, 0x4000);
	kg_printf("callback stack past the end of RAM -> %lld\n", (long long)rc);
	if (rc != -KAPSEL_EFAULT)
		wrong++;
	rc = kg_hc_set_callback(3, entry, top, 0x4000);
	kg_printf("callback for vCPU 3 -> %lld\n", (long long)rc);
	if (rc != -KAPSEL_EINVAL)
		wrong++;
	/* IRET of a frame that is not in guest RAM, or names a bad rip. */
	rc = kg_hypercall(KAPSEL_HC_IRET, 0x8000, 0, 0, 0, 0);
	kg_printf("iret of a frame in the event page -> %lld\n", (long long)rc);
	if (rc != -KAPSEL_EFAULT)
		wrong++;
	static struct kapsel_trap_frame bogus __attribute__((aligned(16)));
	bogus.vector = 6;
	bogus.rip = 0x0000800000000000ull; /* not canonical */
	rc = kg_hypercall(KAPSEL_HC_IRET, (uint64_t)(uintptr_t)&bogus, 0, 0, 0, 0);
	kg_printf("iret to a non-canonical rip -> %lld\n", (long long)rc);
	if (rc != -KAPSEL_EINVAL)
		wrong++;
	rc = kg_hc_timer_set(0, 0, 1000);
	kg_printf("timer period of 1 us -> %lld\n", (long long)rc);
	if (rc != -KAPSEL_EINVAL)
		wrong++;
	kg_printf("hostile registrations %s\n", wrong ? "NOT REFUSED" : "refused");
	return wrong;
}

static void on_page_fault_faulting(struct kapsel_trap_frame *frame)
{
	(void)frame;
	/* Faults again while the #PF delivery is in progress. */
	trigger_page_fault_read(0x30);
}

/* The #UD handler uses up its stack until less room is left than a nested
 * frame needs, then takes a #PF on the same stack: the hypervisor must
 * refuse to deliver it (no frame written below the stack). */
static uint8_t small_stack[4096] __attribute__((aligned(16)));

__attribute__((noinline)) static void fault_with_little_stack_left(void)
{
	uint64_t rsp;
	__asm__ volatile("mov %%rsp, %0" : "=r"(rsp));
	uint64_t bottom = (uint64_t)(uintptr_t)small_stack;
	/* Leave 192 bytes: less than the 128-byte gap plus a 256-byte frame. */
	volatile uint8_t *used = __builtin_alloca(rsp - bottom - 192);
	used[0] = 1;
	trigger_page_fault_read(0x10);
	(void)used[0];
}

static void on_trap_nest_deeper(struct kapsel_trap_frame *frame)
{
	kg_printf("stack-overflow: vector %llu, frame at 0x%llx, stack [0x%llx, 0x%llx)\n",
		  (unsigned long long)frame->vector, (unsigned long long)(uintptr_t)frame,
		  (unsigned long long)(uintptr_t)small_stack,
		  (unsigned long long)(uintptr_t)(small_stack + sizeof(small_stack)));
	fault_with_little_stack_left();
}

int main(int argc, char **argv)
{
	kg_assert(kg_platform_is_kapsel());
	if (!kg_cpu_available()) {
		kg_printf("no PV CPU in this hypervisor\n");
		return 2;
	}
	const char *mode = argc > 1 ? argv[1] : "";
	if (strcmp(mode, "hostile-registrations") == 0) {
		kg_assert(kg_trap_register(14, on_trap, trap_stack, sizeof(trap_stack)) == 0);
		if (hostile_registrations())
			return 1;
		/* #UD has no handler: the crash report lists the #PF one. */
		trigger_ud();
		return 3;
	}
	if (strcmp(mode, "stack-overflow") == 0) {
		kg_assert(kg_trap_register(6, on_trap_nest_deeper, small_stack,
					   sizeof(small_stack)) == 0);
		kg_assert(kg_trap_register(14, on_trap, small_stack, sizeof(small_stack)) == 0);
		trigger_ud();
		return 3;
	}
	if (strcmp(mode, "fault-in-handler") == 0) {
		kg_assert(kg_trap_register(14, on_page_fault_faulting, trap_stack,
					   sizeof(trap_stack)) == 0);
		trigger_page_fault_read(0x10);
		return 3;
	}

	register_all();
	unsigned before = handled;
	uint64_t r12 = trigger_ud();
	expect("#UD", 6, 0, 0, before + 1); /* + the nested #PF */
	if (r12 != 0x1234567887654321ull || !nested_ok) {
		kg_printf("#UD: r12 0x%llx after resume, nested #PF %s\n", (unsigned long long)r12,
			  nested_ok ? "ok" : "WRONG");
		failures++;
	}
	before = handled;
	trigger_bp();
	expect("#BP", 3, 0, 0, before);
	before = handled;
	trigger_de();
	expect("#DE", 0, 0, 0, before);
	before = handled;
	trigger_gp_hlt();
	expect("#GP (hlt)", 13, 0, 0, before);
	before = handled;
	trigger_gp_selector();
	expect("#GP (selector)", 13, 0x40, 0, before);
	before = handled;
	trigger_page_fault_read(0x10);
	expect("#PF (read, not present)", 14, 0x4, 0x10, before);
	before = handled;
	trigger_page_fault_write(0x10000);
	expect("#PF (write, supervisor page)", 14, 0x7, 0x10000, before);
	if (failures) {
		kg_printf("traps: %d wrong\n", failures);
		return 1;
	}
	kg_printf("traps ok: %u handled\n", handled);
	return 0;
}
