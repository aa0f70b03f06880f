/* Guest RAM: one memfd mapped into the VMM, and the only GPA-to-host translator. */
#ifndef KAPSEL_GUEST_MEMORY_H
#define KAPSEL_GUEST_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct guest_memory {
	int memfd;	     /* backing file: can be saved, shared, cloned */
	uint8_t *host_base;  /* MAP_SHARED mapping of the whole memfd */
	uint64_t size_bytes; /* guest RAM size, GPA 0 .. size_bytes-1 */
	/* Guest-supplied addresses below this belong to the hypervisor's
	 * tables (page tables, GDT, IDT, TSS): see guest_memory_translate_guest. */
	uint64_t guest_floor_gpa;
	/*
	 * Pages the VMM itself wrote through host_base (hypercall results,
	 * PV block reads, received frames, ring responses) since they were
	 * last taken: KVM's dirty log records only the guest's own writes, so
	 * a pre-copy needs both.  One bit per page, set atomically after the
	 * bytes are written (guest_memory_mark_written); NULL where RAM was
	 * set up by hand (tools, tests).
	 */
	uint64_t *written;
	/* Times guest_memory_clear emptied RAM (a reboot): every page
	 * changed at once, without a mark. */
	uint64_t clears;
	/* RAM may change behind both KVM's log and the marks from now on
	 * (it is mapped from a file another process may write, and the
	 * write could not be fenced off): pre-copies compare every page. */
	bool unmarked_changes;
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
 * Record that the VMM wrote [gpa, gpa + length_bytes) of guest RAM through
 * its own mapping.  Call it after the bytes are written (and, for an
 * asynchronous write such as an io_uring read, after it completed): a
 * pre-copy that takes the mark copies the page after that, so it copies
 * the new bytes.  Every VMM write into guest RAM outside the hypervisor's
 * tables (below KAPSEL_GPA_LOW_FREE, which a pre-copy always compares)
 * must be marked, or a live save or migration can miss it; the tests run
 * with KAPSEL_PRECOPY_VERIFY=1, which finds a write that was not.  A
 * range outside RAM is ignored (it was never translated).
 */
void guest_memory_mark_written(const struct guest_memory *mem, uint64_t gpa, uint64_t length_bytes);

/* The same for a host pointer that guest_memory_translate returned (or one
 * inside such a range); pointers outside guest RAM are ignored, so a
 * buffer that is sometimes the VMM's own (a zero buffer) can be passed. */
void guest_memory_mark_written_host(const struct guest_memory *mem, const void *host,
				    uint64_t length_bytes);

/*
 * OR the pages marked since the last call into bitmap (one bit per page,
 * words 64-bit, ceil(pages / 64) of them) and clear the marks.  Returns
 * how many marked pages were taken.
 */
uint64_t guest_memory_take_written(const struct guest_memory *mem, uint64_t *bitmap);

/*
 * Parse a memory size such as "64M", "1G", "65536K" or "67108864" (bytes)
 * into bytes.  Returns 0 or -EINVAL (bad syntax) / -ERANGE (out of range
 * or not a multiple of 2 MiB); the caller prints the message.
 */
int guest_memory_parse_size(const char *text, uint64_t *size_bytes);

#endif
