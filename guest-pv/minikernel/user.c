/* The minikernel's user programs: position-independent code the kernel copies into each process. */
#include <stdint.h>

#include "user_abi.h"

/*
 * Built with -fpie into its own library, which minikernel.ld places as
 * one page-aligned block (text and read-only data, then writable data) in
 * the kernel image: the kernel copies the block to USER_IMAGE_VA in each
 * process, so every reference here must be rip-relative (no pointer in
 * initialized data, no call into the kernel or its library).  Each
 * program is an entry `void user_NAME(uint64_t arg)` that ends in
 * SYS_EXIT; it starts with rsp 8 below a 16-byte boundary, as after a call.
 */

typedef void user_program(uint64_t arg);
user_program user_hello, user_spin, user_sleeper, user_counter, user_forker, user_disk, user_peek,
	user_poke, user_cli, user_hlt, user_inport, user_hypercall, user_wrmsr, user_movcr3,
	user_jmpkernel, user_forkbomb;

/* The word pid "poke" tries to overwrite in "counter" (kernel: poke's arg). */
volatile uint64_t user_counter_canary = 0x600d600dull;

static int64_t sys(uint64_t number, uint64_t a, uint64_t b)
{
	int64_t result;
	__asm__ volatile("syscall"
			 : "=a"(result)
			 : "a"(number), "D"(a), "S"(b)
			 : "rcx", "r11", "memory");
	return result;
}

__attribute__((noreturn)) static void sys_exit(uint64_t status)
{
	sys(SYS_EXIT, status, 0);
	for (;;)
		__asm__ volatile("ud2"); /* exit never returns */
}

/* A line of output built on the stack, written with one syscall. */
struct line {
	char text[160];
	unsigned length;
};

static void put(struct line *l, const char *s)
{
	while (*s && l->length < sizeof(l->text) - 1)
		l->text[l->length++] = *s++;
}

static void put_u64(struct line *l, uint64_t value)
{
	char digits[20];
	unsigned n = 0;
	do {
		digits[n++] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	while (n && l->length < sizeof(l->text) - 1)
		l->text[l->length++] = digits[--n];
}

static void put_hex(struct line *l, uint64_t value)
{
	put(l, "0x");
	char digits[16];
	unsigned n = 0;
	do {
		digits[n++] = "0123456789abcdef"[value & 15];
		value >>= 4;
	} while (value);
	while (n && l->length < sizeof(l->text) - 1)
		l->text[l->length++] = digits[--n];
}

static void say(struct line *l)
{
	l->text[l->length++] = '\n';
	sys(SYS_WRITE, (uint64_t)(uintptr_t)l->text, l->length);
	l->length = 0;
}

static void say1(const char *prefix, const char *text)
{
	struct line l;
	l.length = 0;
	put(&l, prefix);
	put(&l, text);
	say(&l);
}

static void spin_a_while(void)
{
	for (volatile uint64_t i = 0; i < (1u << 18); i++)
		;
}

/* hello: the syscalls answer, and bad arguments are refused. */
void user_hello(uint64_t arg)
{
	(void)arg;
	uint64_t wrong = 0;
	int64_t pid = sys(SYS_GETPID, 0, 0);
	struct line l;
	l.length = 0;
	put(&l, "hello: pid ");
	put_u64(&l, (uint64_t)pid);
	put(&l, " says hello from its own address space");
	say(&l);
	if (sys(SYS_WRITE, 0x100000, 16) != -USER_EFAULT) /* kernel memory */
		wrong |= 1;
	if (sys(SYS_WRITE, 0x7ffffffffff0ull, 64) != -USER_EFAULT) /* past the user half */
		wrong |= 2;
	if (sys(SYS_WRITE, USER_HEAP_END_VA, 8) != -USER_EFAULT) /* nothing mapped there */
		wrong |= 4;
	if (sys(SYS_WRITE, (uint64_t)(uintptr_t)l.text, 100000) != -USER_EINVAL)
		wrong |= 8;
	if (sys(SYS_WAIT, 0, 0) != -USER_ECHILD)
		wrong |= 16;
	if (sys(99, 0, 0) != -USER_ENOSYS)
		wrong |= 32;
	if (sys(SYS_YIELD, 0, 0) != 0 || sys(SYS_GETPID, 0, 0) != pid)
		wrong |= 64;
	say1("hello: ", wrong ? "a bad argument was not refused" : "bad pointers refused");
	sys_exit(wrong);
}

/* spin: computes without syscalls until the timer has given its CPU to
 * another process three times (preemption, not politeness); exits 1 if
 * 200 timer ticks came and went without that. */
void user_spin(uint64_t arg)
{
	(void)arg;
	int64_t preempted, ticks = 0;
	while ((preempted = sys(SYS_PREEMPTIONS, 0, 0)) < 3 && (ticks = sys(SYS_TICKS, 0, 0)) < 200)
		spin_a_while();
	struct line l;
	l.length = 0;
	put(&l, "spin: pid ");
	put_u64(&l, (uint64_t)sys(SYS_GETPID, 0, 0));
	put(&l, " was preempted ");
	put_u64(&l, (uint64_t)preempted);
	put(&l, " times in ");
	put_u64(&l, (uint64_t)sys(SYS_TICKS, 0, 0));
	put(&l, " timer ticks");
	say(&l);
	sys_exit(preempted >= 3 ? 0 : 1);
}

/* sleeper: arg wake-ups 30 ms apart (as long as counter runs). */
void user_sleeper(uint64_t wakeups)
{
	for (uint64_t i = 1; i <= wakeups; i++) {
		sys(SYS_SLEEP, 30, 0);
		struct line l;
		l.length = 0;
		put(&l, "sleeper: woke up ");
		put_u64(&l, i);
		say(&l);
	}
	sys_exit(0);
}

/* counter: arg rounds of "print, sleep"; the test saves the VM during
 * them.  Exits 1 if its canary changed (pid "poke" aims at it). */
void user_counter(uint64_t rounds)
{
	for (uint64_t i = 1; i <= rounds; i++) {
		struct line l;
		l.length = 0;
		put(&l, "counter: round ");
		put_u64(&l, i);
		say(&l);
		sys(SYS_SLEEP, 20, 0);
	}
	if (user_counter_canary != 0x600d600dull) {
		say1("counter: ", "my canary was overwritten");
		sys_exit(1);
	}
	say1("counter: ", "done, canary intact");
	sys_exit(0);
}

static volatile uint64_t forker_word = 1;

/* forker: fork shares memory copy-on-write; the child's writes (data,
 * heap, stack) stay its own; wait blocks until the child exits. */
void user_forker(uint64_t arg)
{
	(void)arg;
	volatile uint64_t *heap = (volatile uint64_t *)USER_HEAP_VA;
	volatile uint64_t on_stack = 5;
	*heap = 7; /* a demand-zero page, shared after the fork */
	int64_t child = sys(SYS_FORK, 0, 0);
	if (child == 0) {
		sys(SYS_SLEEP, 50, 0); /* the parent is in wait meanwhile */
		uint64_t saw = forker_word + *heap + on_stack;
		forker_word = 2;
		*heap = 8;
		on_stack = 6;
		sys_exit(saw == 1 + 7 + 5 && forker_word == 2 && *heap == 8 ? 42 : 43);
	}
	if (child < 0) {
		say1("forker: ", "fork failed");
		sys_exit(2);
	}
	uint64_t status = 0;
	int64_t waited = sys(SYS_WAIT, (uint64_t)(uintptr_t)&status, 0);
	struct line l;
	l.length = 0;
	put(&l, "forker: child ");
	put_u64(&l, (uint64_t)waited);
	put(&l, " exited ");
	put_u64(&l, status);
	put(&l, ", my word ");
	put_u64(&l, forker_word);
	put(&l, ", my heap ");
	put_u64(&l, *heap);
	put(&l, ", my stack ");
	put_u64(&l, on_stack);
	say(&l);
	uint64_t wrong =
		waited != child || status != 42 || forker_word != 1 || *heap != 7 || on_stack != 5;
	forker_word = 3; /* its last user now: the page just becomes writable */
	wrong |= forker_word != 3;
	sys_exit(wrong);
}

static uint8_t disk_buffer[USER_SECTOR_BYTES] __attribute__((aligned(512)));
static uint8_t disk_check[USER_SECTOR_BYTES] __attribute__((aligned(512)));

static unsigned fill_sector(uint8_t *buffer, uint64_t sector, uint64_t pid)
{
	struct line l;
	l.length = 0;
	put(&l, "minikernel sector ");
	put_u64(&l, sector);
	put(&l, " written by pid ");
	put_u64(&l, pid);
	l.text[l.length++] = '\n';
	for (unsigned i = 0; i < USER_SECTOR_BYTES; i++)
		buffer[i] = i < l.length ? (uint8_t)l.text[i] : 0;
	return l.length;
}

/* disk: sector I/O through the kernel, with its buffers checked. */
void user_disk(uint64_t arg)
{
	(void)arg;
	uint64_t wrong = 0, pid = (uint64_t)sys(SYS_GETPID, 0, 0);
	uint64_t buffer = (uint64_t)(uintptr_t)disk_buffer;
	if (sys(SYS_READ_SECTOR, 0, buffer) != 0) {
		say1("disk: ", "cannot read sector 0");
		sys_exit(100);
	}
	struct line l;
	l.length = 0;
	put(&l, "disk: sector 0 says '");
	for (unsigned i = 0; i < 40 && disk_buffer[i] >= ' ' && disk_buffer[i] < 127; i++)
		l.text[l.length++] = (char)disk_buffer[i];
	put(&l, "'");
	say(&l);
	for (uint64_t s = 1; s <= 3; s++) {
		fill_sector(disk_buffer, s, pid);
		if (sys(SYS_WRITE_SECTOR, s, buffer) != 0)
			wrong |= 1;
	}
	for (uint64_t s = 1; s <= 3; s++) {
		fill_sector(disk_buffer, s, pid);
		if (sys(SYS_READ_SECTOR, s, (uint64_t)(uintptr_t)disk_check) != 0)
			wrong |= 2;
		for (unsigned i = 0; i < USER_SECTOR_BYTES; i++)
			if (disk_check[i] != disk_buffer[i])
				wrong |= 4;
	}
	if (sys(SYS_READ_SECTOR, 0, 0x100000) != -USER_EFAULT) /* into kernel memory */
		wrong |= 8;
	if (sys(SYS_READ_SECTOR, 0, USER_IMAGE_VA) != -USER_EFAULT) /* into its own code */
		wrong |= 16;
	if (sys(SYS_WRITE_SECTOR, 1, 0x100000) != -USER_EFAULT) /* from kernel memory */
		wrong |= 32;
	if (sys(SYS_READ_SECTOR, 1ull << 40, buffer) != -USER_EINVAL) /* past the disk */
		wrong |= 64;
	l.length = 0;
	put(&l, "disk: wrote and read back sectors 1-3, bad buffers refused: ");
	put(&l, wrong ? "WRONG " : "ok");
	if (wrong)
		put_hex(&l, wrong);
	say(&l);
	sys_exit(wrong);
}

/* ---- Hostile programs: each must be killed by the kernel ---------------- */

void user_peek(uint64_t arg)
{
	(void)arg;
	say1("peek: ", "reading kernel memory at 0x100000");
	uint64_t value = *(volatile uint64_t *)0x100000;
	sys_exit(value | 1);
}

/* arg: where pid "counter"'s canary lives in guest-physical memory. */
void user_poke(uint64_t arg)
{
	struct line l;
	l.length = 0;
	put(&l, "poke: writing another process's memory at ");
	put_hex(&l, arg);
	say(&l);
	*(volatile uint64_t *)(uintptr_t)arg = 0xbad;
	sys_exit(0);
}

void user_cli(uint64_t arg)
{
	(void)arg;
	say1("cli: ", "disabling interrupts");
	__asm__ volatile("cli");
	sys_exit(0);
}

void user_hlt(uint64_t arg)
{
	(void)arg;
	say1("hlt: ", "halting the CPU");
	__asm__ volatile("hlt");
	sys_exit(0);
}

void user_inport(uint64_t arg)
{
	(void)arg;
	say1("inport: ", "reading the ATA status port 0x1f7");
	uint8_t value;
	/* Port numbers above 0xff need dx: an immediate would be cut to 0xf7. */
	__asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"((uint16_t)0x1f7));
	sys_exit(value);
}

/* The hypercall port: asks the hypervisor to power the VM off. */
void user_hypercall(uint64_t arg)
{
	(void)arg;
	say1("hypercall: ", "writing the hypercall port 0x510");
	__asm__ volatile("outl %%eax, %%dx" ::"a"(3), "d"(0x510), "D"(0), "S"(0));
	sys_exit(0);
}

void user_wrmsr(uint64_t arg)
{
	(void)arg;
	say1("wrmsr: ", "rewriting the syscall entry MSR");
	__asm__ volatile("wrmsr" ::"c"(0xc0000082u), "a"(0), "d"(0));
	sys_exit(0);
}

void user_movcr3(uint64_t arg)
{
	(void)arg;
	say1("movcr3: ", "loading its own page tables");
	__asm__ volatile("mov %0, %%cr3" ::"r"(0x10000ull));
	sys_exit(0);
}

void user_jmpkernel(uint64_t arg)
{
	(void)arg;
	say1("jmpkernel: ", "jumping into kernel text at 0x100000");
	__asm__ volatile("jmp *%0" ::"r"(0x100000ull));
	sys_exit(0);
}

/* forkbomb: every process forks in a loop; a fork the kernel refuses is
 * counted.  Each waits for its children and exits with the refusals in
 * its subtree, so the first one's status is the family's total. */
void user_forkbomb(uint64_t arg)
{
	(void)arg;
	say1("forkbomb: ", "forking 2^7 processes");
	uint64_t refused = 0, status;
	for (int i = 0; i < 7; i++) {
		int64_t child = sys(SYS_FORK, 0, 0);
		if (child < 0)
			refused++;
		else if (child == 0)
			refused = 0; /* a new process: its own count */
	}
	while (sys(SYS_WAIT, (uint64_t)(uintptr_t)&status, 0) > 0)
		refused += status;
	sys_exit(refused);
}
