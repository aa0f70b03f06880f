/* The minikernel: boots, loads its user programs into address spaces, and checks how each one ended. */
#include "kernel.h"

#include "kapsel_guest/cpu.h"
#include "kapsel_guest/libc.h"
#include "kapsel_guest/mmu.h"
#include "kapsel_guest/runtime.h"

/*
 * A reference multitasking kernel on the PV MMU and PV CPU (porting.md
 * chapter 11).  Command line (all optional):
 *   tick_ms=N   scheduler tick (default 10)
 *   rounds=N    rounds of the "counter" program (default 30); "sleeper"
 *               wakes up 2/3 as often, 30 ms apart, so both last as long
 *   break=cow   a deliberate bug: fork shares writable pages, so a test
 *               can see the kernel notice a wrong result and exit 1
 * Prints one line per process with how it ended and exits 0 only if each
 * ended as the table below expects and no frame leaked.
 */

extern const uint8_t user_image_start[];
extern volatile uint64_t user_counter_canary;
typedef void user_program(uint64_t arg);
extern user_program user_hello, user_spin, user_sleeper, user_counter, user_forker, user_disk,
	user_peek, user_poke, user_cli, user_hlt, user_inport, user_hypercall, user_wrmsr,
	user_movcr3, user_jmpkernel, user_forkbomb;

static const struct program programs[] = {
	{ "hello", user_hello, EXPECT_EXIT, 0, CHILD_NONE },
	{ "spin", user_spin, EXPECT_EXIT, 0, CHILD_NONE },
	{ "spin", user_spin, EXPECT_EXIT, 0, CHILD_NONE },
	{ "sleeper", user_sleeper, EXPECT_EXIT, 0, CHILD_NONE },
	{ "counter", user_counter, EXPECT_EXIT, 0, CHILD_NONE },
	{ "forker", user_forker, EXPECT_EXIT, 0, 42 },
	{ "disk", user_disk, EXPECT_EXIT, 0, CHILD_NONE },
	{ "peek", user_peek, EXPECT_KILLED, 14, CHILD_NONE },
	{ "poke", user_poke, EXPECT_KILLED, 14, CHILD_NONE },
	{ "cli", user_cli, EXPECT_KILLED, 13, CHILD_NONE },
	{ "hlt", user_hlt, EXPECT_KILLED, 13, CHILD_NONE },
	{ "inport", user_inport, EXPECT_KILLED, 13, CHILD_NONE },
	{ "hypercall", user_hypercall, EXPECT_KILLED, 13, CHILD_NONE },
	{ "wrmsr", user_wrmsr, EXPECT_KILLED, 13, CHILD_NONE },
	{ "movcr3", user_movcr3, EXPECT_KILLED, 13, CHILD_NONE },
	{ "jmpkernel", user_jmpkernel, EXPECT_KILLED, 14, CHILD_NONE },
	{ "forkbomb", user_forkbomb, EXPECT_FORK_REFUSALS, 0, CHILD_ANY_EXIT },
};
#define PROGRAM_COUNT (sizeof(programs) / sizeof(programs[0]))

static uint64_t user_va_of(const volatile void *kernel_image_address)
{
	return USER_IMAGE_VA + (uint64_t)((const uint8_t *)kernel_image_address - user_image_start);
}

static uint64_t option(const char *key, uint64_t fallback)
{
	char word[24];
	uint64_t value;
	if (kg_cmdline_get(key, word, sizeof(word)) < 0)
		return fallback;
	if (kg_parse_u64(word, &value) < 0 || value == 0)
		kg_panic("%s=%s is not a positive number", key, word);
	return value;
}

/* Did o end as its program says?  Writes what was expected into why. */
static bool outcome_ok(const struct outcome *o, char *why, size_t why_size)
{
	const struct program *pr = o->program;
	if (o->is_child) {
		if (pr->child_exit == CHILD_ANY_EXIT && !o->killed)
			return true;
		if (pr->child_exit >= 0 && !o->killed && o->status == (uint64_t)pr->child_exit)
			return true;
		kg_snprintf(why, why_size, "a child of %s must exit%s", pr->name,
			    pr->child_exit >= 0 ? " 42" : "");
		return false;
	}
	switch (pr->expect) {
	case EXPECT_EXIT:
		kg_snprintf(why, why_size, "exit %llu", (unsigned long long)pr->value);
		return !o->killed && o->status == pr->value;
	case EXPECT_KILLED:
		kg_snprintf(why, why_size, "killed by %s", vector_name(pr->value));
		return o->killed && o->status == pr->value;
	case EXPECT_FORK_REFUSALS: {
		unsigned refusals = o->family <= PROC_MAX ? family_fork_refusals[o->family] : 0;
		kg_snprintf(why, why_size, "exit with its family's %u fork refusals (more than 0)",
			    refusals);
		return !o->killed && refusals > 0 && o->status == refusals;
	}
	}
	return false;
}

void kernel_finish(void)
{
	kg_timer_stop();
	unsigned wrong = 0, boot_seen[PROGRAM_COUNT] = { 0 };
	kg_printf("minikernel: every process ended; outcomes:\n");
	for (unsigned i = 0; i < outcome_count; i++) {
		const struct outcome *o = &outcomes[i];
		char how[96], why[96];
		if (o->killed)
			kg_snprintf(how, sizeof(how), "killed by %s", vector_name(o->status));
		else
			kg_snprintf(how, sizeof(how), "exit %llu", (unsigned long long)o->status);
		bool ok = outcome_ok(o, why, sizeof(why));
		if (!o->is_child)
			boot_seen[o->program - programs]++;
		kg_printf("process %d %s%s: %s: %s%s%s\n", o->pid, o->program->name,
			  o->is_child ? "/child" : "", how, ok ? "ok" : "WRONG (expected ",
			  ok ? "" : why, ok ? "" : ")");
		wrong += !ok;
	}
	for (unsigned i = 0; i < PROGRAM_COUNT; i++)
		if (boot_seen[i] != 1) {
			kg_printf("minikernel: program %u (%s) ended %u times: WRONG\n", i,
				  programs[i].name, boot_seen[i]);
			wrong++;
		}
	size_t leaked = frames_in_use();
	kg_printf("minikernel: %u processes, %u context switches, %zu of %zu frames still in use\n",
		  outcome_count, sched_context_switches(), leaked, frames_total());
	for (unsigned cpu = 0; cpu < sched_cpu_count(); cpu++)
		kg_printf("minikernel: vCPU %u switched to a process %u times\n", cpu,
			  sched_cpu_picks(cpu));
	if (leaked) {
		kg_printf("minikernel: frames leaked: WRONG\n");
		wrong++;
	}
	if (wrong) {
		kg_printf("minikernel: %u WRONG\n", wrong);
		kg_exit(1);
	}
	kg_printf("minikernel: all %u processes ended as expected\n", outcome_count);
	kg_exit(0);
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	if (!kg_cpu_available() || !kg_mmu_available()) {
		kg_printf("minikernel: needs the PV CPU and PV MMU (ABI 1.5)\n");
		return 2;
	}
	uint64_t tick_ms = option("tick_ms", 10), rounds = option("rounds", 30);
	char word[16];
	if (kg_cmdline_get("break", word, sizeof(word)) >= 0) {
		if (strcmp(word, "cow") != 0)
			kg_panic("break=%s: the only deliberate bug is break=cow", word);
		break_cow = true;
		kg_printf("minikernel: break=cow: fork shares writable pages (a deliberate bug)\n");
	}
	syscall_init(); /* the disk driver allocates first ... */
	frames_init();	/* ... then the frames take the rest of the heap */
	sched_init(tick_ms * 1000000u);

	struct process *counter = 0;
	for (unsigned i = 0; i < PROGRAM_COUNT; i++) {
		struct process *p = process_alloc(0, 0);
		if (!p)
			kg_panic("too many programs for the process table");
		p->program = &programs[i];
		int rc = vm_load_image(p);
		if (rc != 0)
			kg_panic("loading %s failed: %d", programs[i].name, rc);
		uint64_t arg = 0;
		if (programs[i].entry == user_counter) {
			counter = p;
			arg = rounds;
		}
		if (programs[i].entry == user_sleeper)
			arg = rounds * 2 / 3 > 3 ? rounds * 2 / 3 : 3;
		if (programs[i].entry == user_poke)
			arg = counter ? vm_gpa_of(counter, user_va_of(&user_counter_canary)) : 0;
		p->frame = (struct kapsel_trap_frame){
			.vector = KAPSEL_TRAP_VECTOR_SYSCALL,
			.rip = user_va_of((const void *)programs[i].entry),
			.rsp = USER_STACK_TOP_VA - 8,
			.rflags = 0x2,
			.rdi = arg,
		};
		p->state = PROC_RUNNABLE;
		kg_printf("kernel: pid %d %s in address space %d, %u pages\n", p->pid,
			  programs[i].name, p->as, p->page_count);
	}
	sched_start();
}
