/* Guest image loader: validates an ELF64 x86-64 executable and symbolizes addresses. */
#ifndef KAPSEL_ELF_LOADER_H
#define KAPSEL_ELF_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "core/guest_memory.h"

#define ELF_IMAGE_MAX_SEGMENTS 16

struct elf_segment {
	uint64_t gpa; /* where it is loaded (identity mapped) */
	uint64_t file_offset;
	uint64_t file_bytes;
	uint64_t memory_bytes; /* >= file_bytes; the rest is zeroed */
	uint32_t flags;	       /* PF_X | PF_W | PF_R */
};

struct elf_symbol {
	uint64_t address;
	uint64_t size_bytes;
	const char *name; /* points into elf_image.data */
};

struct elf_image {
	uint8_t *data; /* the whole file, owned */
	size_t size_bytes;
	uint64_t entry;
	uint64_t image_start; /* lowest loaded GPA */
	uint64_t image_end;   /* one past the highest loaded GPA */
	unsigned segment_count;
	struct elf_segment segments[ELF_IMAGE_MAX_SEGMENTS];
	struct elf_symbol *symbols; /* functions, sorted by address */
	size_t symbol_count;
};

/*
 * Validate an in-memory ELF image for a guest with ram_bytes of RAM.  On
 * success takes ownership of nothing (data is copied) and returns 0.  On
 * failure returns -ENOEXEC (malformed: error names the field and value) or
 * -E2BIG / -ERANGE (does not fit the guest's memory), with a one-line
 * message in error[error_len].
 */
int elf_image_parse(const void *data, size_t size_bytes, uint64_t ram_bytes,
		    struct elf_image *image, char *error, size_t error_len);

/* Read path and parse it as above; a missing or unreadable file gets its
 * own message. */
int elf_image_load_file(const char *path, uint64_t ram_bytes, struct elf_image *image, char *error,
			size_t error_len);

/* Copy every segment into guest RAM and zero its BSS.  The image must have
 * been parsed for this memory size.  Returns 0 or -EFAULT. */
int elf_image_copy_to_guest(const struct elf_image *image, struct guest_memory *mem);

/* Name the function containing address, or NULL; *offset_bytes gets the
 * distance from its start. */
const char *elf_image_symbolize(const struct elf_image *image, uint64_t address,
				uint64_t *offset_bytes);

/* Find a symbol's address by name; returns 0 if absent. */
uint64_t elf_image_lookup(const struct elf_image *image, const char *name);

void elf_image_free(struct elf_image *image);

#endif
