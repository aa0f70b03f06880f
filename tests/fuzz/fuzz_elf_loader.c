/* Fuzz target: elf_image_parse on arbitrary bytes, then symbolize and copy the accepted images into a guest RAM of exactly the checked size. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/elf_loader.h"
#include "fuzz_common.h"
#include "kapsel/abi.h"

#define FUZZ_RAM_BYTES (4u << 20)

static uint8_t *ram;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct elf_image image;
	char error[256] = "";

	if (!ram)
		ram = malloc(FUZZ_RAM_BYTES); /* ASan catches a byte past it */
	int err = elf_image_parse(data, size, FUZZ_RAM_BYTES, &image, error, sizeof(error));
	if (err) {
		/* Bad input gets a message saying what is wrong. */
		FUZZ_CHECK(err < 0 && error[0] != '\0');
		return 0;
	}
	/* What the loader promised about an accepted image. */
	FUZZ_CHECK(image.segment_count > 0 && image.segment_count <= ELF_IMAGE_MAX_SEGMENTS);
	FUZZ_CHECK(image.image_start >= KAPSEL_GPA_IMAGE_MIN && image.image_end <= FUZZ_RAM_BYTES);
	int entry_inside = 0;
	for (unsigned i = 0; i < image.segment_count; i++) {
		const struct elf_segment *s = &image.segments[i];
		FUZZ_CHECK(s->file_bytes <= s->memory_bytes);
		FUZZ_CHECK(s->gpa >= image.image_start &&
			   s->memory_bytes <= image.image_end - s->gpa);
		FUZZ_CHECK(s->file_offset <= image.size_bytes &&
			   s->file_bytes <= image.size_bytes - s->file_offset);
		entry_inside |= image.entry >= s->gpa && image.entry - s->gpa < s->file_bytes;
	}
	FUZZ_CHECK(entry_inside);

	struct guest_memory mem = { .memfd = -1, .host_base = ram, .size_bytes = FUZZ_RAM_BYTES };
	FUZZ_CHECK(elf_image_copy_to_guest(&image, &mem) == 0);

	/* Symbols: every name is a C string inside the file. */
	uint64_t offset;
	elf_image_symbolize(&image, image.entry, &offset);
	elf_image_symbolize(&image, 0, &offset);
	elf_image_symbolize(&image, UINT64_MAX, &offset);
	for (size_t i = 0; i < image.symbol_count && i < 64; i++) {
		const struct elf_symbol *s = &image.symbols[i];
		FUZZ_CHECK(s->name >= (const char *)image.data &&
			   s->name < (const char *)image.data + image.size_bytes);
		FUZZ_CHECK(memchr(s->name, 0,
				  (size_t)((const char *)image.data + image.size_bytes -
					   s->name)) != NULL);
		const char *name = elf_image_symbolize(&image, s->address, &offset);
		FUZZ_CHECK(name != NULL && offset == 0);
		elf_image_symbolize(&image, s->address + s->size_bytes, &offset);
		(void)elf_image_lookup(&image, s->name);
	}
	elf_image_free(&image);
	return 0;
}
