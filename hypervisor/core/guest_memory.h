/* Guest RAM: one memfd mapped into the VMM, and the only GPA-to-host translator. */
#ifndef KAPSEL_GUEST_MEMORY_H
#define KAPSEL_GUEST_MEMORY_H

#include <stddef.h>
#include <stdint.h>

struct guest_memory {
	int memfd;	     /* backing file: can be saved, shared, cloned */
	uint8_t *host_base;  /* MAP_SHARED mapping of the whole memfd */
	uint64_t size_bytes; /* guest RAM size, GPA 0 .. size_bytes-1 */
	/* Guest-supplied addresses below this belong to the hypervisor's
	 * tables (page tables, GDT, IDT, TSS): see guest_memory_translate_guest. */
	uint64_t guest_floor_gpa;
};

/* Smallest and largest RAM a VM may have. */
#define GUEST_MEMORY_MIN_BYTES (4ull << 20)
#define GUEST_MEMORY_MAX_BYTES (64ull << 30)

/*
 * Create guest RAM of size_bytes (a multiple of 2 MiB, within the limits
 * above) backed by a fresh memfd named after the VM.  Returns 0 or a
 * negative errno; on failure mem is left zeroed.
 */
int guest_memory_create(struct guest_memory *mem, uint64_t size_bytes, const char *name);

/* Unmap and close; safe on a zeroed or already destroyed struct. */
void guest_memory_destroy(struct guest_memory *mem);

/*
 * Make all of guest RAM read as zeros again (a reboot), giving the host
 * memory back where the kernel can.  mem must have been created.
 */
void guest_memory_clear(struct guest_memory *mem);

/*
 * Translate [gpa, gpa + length_bytes) to a host pointer, or NULL if any
 * byte of the range is outside guest RAM or the sum overflows.  A zero
 * length is valid for any gpa <= size.  This is the only translator:
 * every guest-supplied address goes through it.
 */
void *guest_memory_translate(const struct guest_memory *mem, uint64_t gpa, uint64_t length_bytes);

/*
 * Translate an address the guest supplied (hypercall argument, ring,
 * DMA segment): as guest_memory_translate, but also refuses any range that
 * starts below guest_floor_gpa, so a guest can never make the hypervisor
 * write its page tables, descriptor tables or TSS I/O bitmap for it.
 */
void *guest_memory_translate_guest(const struct guest_memory *mem, uint64_t gpa,
				   uint64_t length_bytes);

/*
 * Parse a memory size such as "64M", "1G", "65536K" or "67108864" (bytes)
 * into bytes.  Returns 0 or -EINVAL (bad syntax) / -ERANGE (out of range
 * or not a multiple of 2 MiB); the caller prints the message.
 */
int guest_memory_parse_size(const char *text, uint64_t *size_bytes);

#endif
