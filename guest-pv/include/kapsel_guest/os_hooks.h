/* The few services libkapsel-guest needs from the guest kernel that links it. */
#ifndef KAPSEL_GUEST_OS_HOOKS_H
#define KAPSEL_GUEST_OS_HOOKS_H

/*
 * Several vCPUs: the library may call these hooks from any vCPU (never
 * from an upcall); a kernel that starts other vCPUs makes them safe for
 * that (the reference runtime's allocator takes a lock).
 */

#include <stddef.h>
#include <stdint.h>

/*
 * A guest kernel implements these (the reference runtime in
 * guest-pv/runtime/ does; see docs/porting.md).  The library calls them
 * from normal (non-interrupt) context only.
 */

/* Allocate count contiguous, zeroed, 4 KiB-aligned pages that stay mapped
 * for the life of the guest.  Returns NULL when out of memory. */
void *kg_os_alloc_pages(size_t count);

/* Guest-physical address of a kernel virtual address the library got from
 * kg_os_alloc_pages or from its caller (I/O buffers). */
uint64_t kg_os_virt_to_phys(const void *address);

/* Print a diagnostic line (no trailing newline needed). */
void kg_os_log(const char *message);

/* Stop the guest after an unrecoverable library error; never returns. */
__attribute__((noreturn)) void kg_os_panic(const char *message);

#endif
