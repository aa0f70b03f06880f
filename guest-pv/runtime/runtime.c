/* The reference guest runtime: entry, printf, allocator, exit and asserts for example guests. */
#include "kapsel_guest/runtime.h"

#include "kapsel_guest/console.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/smp.h"

#define RUNTIME_MAX_ARGS 32
#define PAGE_BYTES 4096u

extern char _end[]; /* linker script: end of the image */

static char runtime_cmdline[KAPSEL_CMDLINE_MAX];
static uintptr_t heap_next, heap_limit;
/* Both allocators bump heap_next; vCPUs allocate one at a time. */
static struct kg_spinlock heap_lock;

/* ---- OS hooks for libkapsel-guest ---------------------------------------- */

void *kg_os_alloc_pages(size_t count)
{
	unsigned long flags = kg_spin_lock_irqsave(&heap_lock);
	uintptr_t start = (heap_next + PAGE_BYTES - 1) & ~(uintptr_t)(PAGE_BYTES - 1);
	void *pages = 0;
	if (start <= heap_limit && count <= (heap_limit - start) / PAGE_BYTES) {
		heap_next = start + count * PAGE_BYTES;
		/* Fresh guest RAM is zero; the allocator never hands memory out twice. */
		pages = (void *)start;
	}
	kg_spin_unlock_irqrestore(&heap_lock, flags);
	return pages;
}

uint64_t kg_os_virt_to_phys(const void *address)
{
	return (uint64_t)(uintptr_t)address; /* identity mapped */
}

void kg_os_log(const char *message)
{
	kg_printf("%s\n", message);
}

void kg_os_panic(const char *message)
{
	kg_panic("%s", message);
}

/* ---- Runtime services ---------------------------------------------------- */

void *kg_malloc(size_t size_bytes)
{
	unsigned long flags = kg_spin_lock_irqsave(&heap_lock);
	uintptr_t start = (heap_next + 15) & ~(uintptr_t)15;
	void *memory = 0;
	if (start <= heap_limit && size_bytes <= heap_limit - start) {
		heap_next = start + size_bytes;
		memory = (void *)start;
	}
	kg_spin_unlock_irqrestore(&heap_lock, flags);
	return memory;
}

size_t kg_heap_pages_left(void)
{
	unsigned long flags = kg_spin_lock_irqsave(&heap_lock);
	uintptr_t start = (heap_next + PAGE_BYTES - 1) & ~(uintptr_t)(PAGE_BYTES - 1);
	size_t pages = start < heap_limit ? (heap_limit - start) / PAGE_BYTES : 0;
	kg_spin_unlock_irqrestore(&heap_lock, flags);
	return pages;
}

int kg_printf(const char *fmt, ...)
{
	char buffer[512];
	va_list ap;
	va_start(ap, fmt);
	int n = kg_vsnprintf(buffer, sizeof(buffer), fmt, ap);
	va_end(ap);
	kg_console_write(buffer, n < (int)sizeof(buffer) ? (size_t)n : sizeof(buffer) - 1);
	return n;
}

void kg_exit(int exit_code)
{
	kg_platform_shutdown(KAPSEL_SHUTDOWN_POWEROFF, exit_code);
}

void kg_panic(const char *fmt, ...)
{
	char buffer[400];
	va_list ap;
	va_start(ap, fmt);
	kg_vsnprintf(buffer, sizeof(buffer), fmt, ap);
	va_end(ap);
	kg_printf("guest panic: %s\n", buffer);
	kg_platform_shutdown(KAPSEL_SHUTDOWN_CRASH, 1);
}

int kg_cmdline_get(const char *key, char *value, size_t value_size)
{
	return kg_cmdline_value(runtime_cmdline, key, value, value_size);
}

static void heap_init(const struct kapsel_start_info *si)
{
	heap_next = (uintptr_t)_end;
	heap_limit = heap_next;
	if (!si)
		return;
	/* Use the RAM entry of the memory map that follows the image. */
	for (uint32_t i = 0; i < si->memmap_count && i < KAPSEL_MEMMAP_MAX; i++) {
		const struct kapsel_memmap_entry *m = &si->memmap[i];
		if (m->type == KAPSEL_MEMMAP_RAM && m->gpa <= heap_next &&
		    heap_next < m->gpa + m->length_bytes)
			heap_limit = (uintptr_t)(m->gpa + m->length_bytes);
	}
}

/* Split the command line in place; "console=..." values stay in argv. */
static int split_args(char *line, char **argv)
{
	int argc = 0;
	argv[argc++] = "guest";
	while (*line && argc < RUNTIME_MAX_ARGS) {
		while (*line == ' ')
			*line++ = '\0';
		if (!*line)
			break;
		argv[argc++] = line;
		while (*line && *line != ' ')
			line++;
		if (*line) /* end this argument even when argv is now full */
			*line++ = '\0';
	}
	argv[argc] = 0;
	return argc;
}

__attribute__((noreturn)) void kg_runtime_start(const struct kapsel_start_info *si);

void kg_runtime_start(const struct kapsel_start_info *si)
{
	static char args_storage[KAPSEL_CMDLINE_MAX];
	static char *argv[RUNTIME_MAX_ARGS + 1];

	kg_platform_init(si);
	/* Kapsel's start info, or the one the PVH shim (pvh.c) made from what
	 * QEMU handed over: either holds the command line and memory map. */
	bool usable =
		si && si->magic == KAPSEL_START_INFO_MAGIC && si->abi_major == KAPSEL_ABI_MAJOR;
	if (usable) {
		memcpy(runtime_cmdline, si->cmdline, sizeof(runtime_cmdline));
		runtime_cmdline[sizeof(runtime_cmdline) - 1] = '\0';
	}
	heap_init(usable ? si : 0);
	char console[8];
	enum kg_console_mode mode = KG_CONSOLE_AUTO;
	if (kg_cmdline_get("console", console, sizeof(console)) >= 0) {
		if (strcmp(console, "uart") == 0)
			mode = KG_CONSOLE_UART;
		else if (strcmp(console, "pv") == 0)
			mode = KG_CONSOLE_PV;
		else if (strcmp(console, "virtio") == 0)
			mode = KG_CONSOLE_VIRTIO;
	}
	if (kg_console_init(mode) < 0)
		kg_console_init(KG_CONSOLE_AUTO);

	memcpy(args_storage, runtime_cmdline, sizeof(args_storage));
	int argc = split_args(args_storage, argv);
	kg_exit(main(argc, argv));
}
