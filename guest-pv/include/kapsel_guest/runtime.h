/* The reference guest runtime: entry, printf, allocator, exit and asserts for example guests. */
#ifndef KAPSEL_GUEST_RUNTIME_H
#define KAPSEL_GUEST_RUNTIME_H

/*
 * Several vCPUs (docs/porting.md §12.4): kg_printf, kg_malloc,
 * kg_heap_pages_left, kg_panic, kg_exit and kg_cmdline_get are safe on any
 * vCPU (the heap takes a lock; kg_exit and kg_panic end the whole VM).
 */

#include <stddef.h>
#include <stdint.h>

#include "kapsel_guest/libc.h"

/* A guest program defines main; argv comes from the start info command
 * line, split at spaces (argv[0] is "guest").  Its return value is the
 * VM's exit code.  Runtime options on the command line (console=uart,
 * console=pv) are seen by the runtime and passed on too. */
int main(int argc, char **argv);

int kg_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Power off with exit_code (0-255). */
__attribute__((noreturn)) void kg_exit(int exit_code);

/* Print "guest panic: ..." and stop the VM as crashed. */
__attribute__((noreturn, format(printf, 1, 2))) void kg_panic(const char *fmt, ...);

/* Zeroed memory from a bump allocator; never freed.  NULL when exhausted. */
void *kg_malloc(size_t size_bytes);

/* Whole free pages left on that allocator's heap (the rest of the RAM
 * region after the image): a kernel that manages its own frames takes
 * them with kg_os_alloc_pages(count) (os_hooks.h) after its drivers have
 * made their allocations. */
size_t kg_heap_pages_left(void);

/* The value of "key=value" on the VM's command line, copied into value as
 * kg_cmdline_value (libc.h) does: returns its length or a negative
 * KAPSEL_E* code.  Precondition: called after the runtime started main. */
int kg_cmdline_get(const char *key, char *value, size_t value_size);

/* Guest asserts report file:line to the host and crash the VM. */
#define kg_assert(expr)                                                                       \
	do {                                                                                  \
		if (!(expr))                                                                  \
			kg_panic("assertion failed at %s:%d: %s", __FILE__, __LINE__, #expr); \
	} while (0)

#endif
