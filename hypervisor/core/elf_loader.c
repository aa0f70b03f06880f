/* Guest image loader: validates an ELF64 x86-64 executable and symbolizes addresses. */
#include "core/elf_loader.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error_text.h"
#include "kapsel/abi.h"

/* The largest guest image we read (a guest kernel, not a disk). */
#define ELF_IMAGE_MAX_FILE_BYTES (256u << 20)

/* True if [offset, offset + length) lies inside a buffer of size bytes. */
static int range_inside(uint64_t offset, uint64_t length, uint64_t size)
{
	return offset <= size && length <= size - offset;
}

static int symbol_compare(const void *a, const void *b)
{
	const struct elf_symbol *x = a, *y = b;
	return (x->address > y->address) - (x->address < y->address);
}

/* Collect function symbols; a missing or broken symbol table is not an
 * error (the image still runs), it only makes crash reports poorer. */
static void parse_symbols(struct elf_image *image)
{
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)image->data;
	uint64_t size = image->size_bytes;

	if (eh->e_shoff == 0 || eh->e_shentsize != sizeof(Elf64_Shdr))
		return;
	if (!range_inside(eh->e_shoff, (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr), size))
		return;
	/* Section headers and symbols are copied out one by one: the file
	 * gives no alignment. */
	const uint8_t *section_headers = image->data + eh->e_shoff;
	for (unsigned i = 0; i < eh->e_shnum; i++) {
		Elf64_Shdr symtab, strtab;
		memcpy(&symtab, section_headers + (size_t)i * sizeof(symtab), sizeof(symtab));
		if (symtab.sh_type != SHT_SYMTAB || symtab.sh_link >= eh->e_shnum)
			continue;
		memcpy(&strtab, section_headers + (size_t)symtab.sh_link * sizeof(strtab),
		       sizeof(strtab));
		if (symtab.sh_entsize != sizeof(Elf64_Sym) ||
		    !range_inside(symtab.sh_offset, symtab.sh_size, size) ||
		    !range_inside(strtab.sh_offset, strtab.sh_size, size) || strtab.sh_size == 0)
			return;
		const uint8_t *symbols = image->data + symtab.sh_offset;
		size_t count = symtab.sh_size / sizeof(Elf64_Sym);
		const char *names = (const char *)image->data + strtab.sh_offset;
		/* Names must be NUL-terminated inside the string table. */
		if (names[strtab.sh_size - 1] != '\0')
			return;
		image->symbols = calloc(count ? count : 1, sizeof(*image->symbols));
		if (!image->symbols)
			return;
		for (size_t s = 0; s < count; s++) {
			Elf64_Sym sym;
			memcpy(&sym, symbols + s * sizeof(sym), sizeof(sym));
			if (ELF64_ST_TYPE(sym.st_info) != STT_FUNC || sym.st_name >= strtab.sh_size)
				continue;
			struct elf_symbol *out = &image->symbols[image->symbol_count++];
			out->address = sym.st_value;
			out->size_bytes = sym.st_size;
			out->name = names + sym.st_name;
		}
		qsort(image->symbols, image->symbol_count, sizeof(*image->symbols), symbol_compare);
		return;
	}
}

int elf_image_parse(const void *data, size_t size_bytes, uint64_t ram_bytes,
		    struct elf_image *image, char *error, size_t error_len)
{
	const Elf64_Ehdr *eh;
	int err;

	memset(image, 0, sizeof(*image));
	if (size_bytes < sizeof(Elf64_Ehdr))
		return kapsel_fail(error, error_len, -ENOEXEC,
				   "file is %zu bytes, too short for an ELF header", size_bytes);
	if (size_bytes > ELF_IMAGE_MAX_FILE_BYTES)
		return kapsel_fail(error, error_len, -E2BIG,
				   "file is %zu bytes; guest images are limited to %u MiB",
				   size_bytes, ELF_IMAGE_MAX_FILE_BYTES >> 20);
	/* Headers are copied out before use: the file gives no alignment. */
	Elf64_Ehdr header;
	memcpy(&header, data, sizeof(header));
	eh = &header;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
		return kapsel_fail(error, error_len, -ENOEXEC, "not an ELF file (bad magic)");
	if (eh->e_ident[EI_CLASS] != ELFCLASS64)
		return kapsel_fail(error, error_len, -ENOEXEC,
				   "ELF class %u is not ELFCLASS64; build the guest for x86-64",
				   eh->e_ident[EI_CLASS]);
	if (eh->e_ident[EI_DATA] != ELFDATA2LSB)
		return kapsel_fail(error, error_len, -ENOEXEC,
				   "ELF data encoding %u is not little-endian",
				   eh->e_ident[EI_DATA]);
	if (eh->e_ident[EI_VERSION] != EV_CURRENT || eh->e_version != EV_CURRENT)
		return kapsel_fail(error, error_len, -ENOEXEC, "unknown ELF version");
	if (eh->e_machine != EM_X86_64)
		return kapsel_fail(error, error_len, -ENOEXEC, "ELF machine %u is not x86-64 (62)",
				   eh->e_machine);
	if (eh->e_type != ET_EXEC)
		return kapsel_fail(
			error, error_len, -ENOEXEC,
			"ELF type %u is not an executable (ET_EXEC); link the guest statically at a fixed address",
			eh->e_type);
	if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0)
		return kapsel_fail(error, error_len, -ENOEXEC,
				   "ELF program header table is missing or has entry size %u",
				   eh->e_phentsize);
	if (!range_inside(eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr), size_bytes))
		return kapsel_fail(
			error, error_len, -ENOEXEC,
			"ELF program headers (offset %#llx, %u entries) run past the end of the file",
			(unsigned long long)eh->e_phoff, eh->e_phnum);

	uint64_t total = 0;
	image->image_start = UINT64_MAX;
	for (unsigned i = 0; i < eh->e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, (const uint8_t *)data + eh->e_phoff + (uint64_t)i * sizeof(ph),
		       sizeof(ph));
		if (ph.p_type != PT_LOAD)
			continue;
		if (ph.p_filesz > ph.p_memsz)
			return kapsel_fail(error, error_len, -ENOEXEC,
					   "segment %u: file size %#llx exceeds memory size %#llx",
					   i, (unsigned long long)ph.p_filesz,
					   (unsigned long long)ph.p_memsz);
		if (ph.p_memsz == 0)
			continue;
		if (image->segment_count == ELF_IMAGE_MAX_SEGMENTS)
			return kapsel_fail(error, error_len, -ENOEXEC,
					   "more than %d loadable segments",
					   ELF_IMAGE_MAX_SEGMENTS);
		if (!range_inside(ph.p_offset, ph.p_filesz, size_bytes))
			return kapsel_fail(
				error, error_len, -ENOEXEC,
				"segment %u: file bytes [%#llx, +%#llx) run past the end of the %zu-byte file (truncated image?)",
				i, (unsigned long long)ph.p_offset, (unsigned long long)ph.p_filesz,
				size_bytes);
		if (ph.p_vaddr != ph.p_paddr)
			return kapsel_fail(
				error, error_len, -ENOEXEC,
				"segment %u: virtual address %#llx differs from physical %#llx; Kapsel guests start identity mapped",
				i, (unsigned long long)ph.p_vaddr, (unsigned long long)ph.p_paddr);
		if (ph.p_paddr < KAPSEL_GPA_IMAGE_MIN)
			return kapsel_fail(
				error, error_len, -ERANGE,
				"segment %u at %#llx is below %#x, where the hypervisor's tables live",
				i, (unsigned long long)ph.p_paddr, KAPSEL_GPA_IMAGE_MIN);
		if (!range_inside(ph.p_paddr, ph.p_memsz, ram_bytes))
			return kapsel_fail(
				error, error_len, -ERANGE,
				"segment %u [%#llx, +%#llx) does not fit in %llu MiB of guest memory; give the VM more memory",
				i, (unsigned long long)ph.p_paddr, (unsigned long long)ph.p_memsz,
				(unsigned long long)(ram_bytes >> 20));
		struct elf_segment *seg = &image->segments[image->segment_count];
		seg->gpa = ph.p_paddr;
		seg->file_offset = ph.p_offset;
		seg->file_bytes = ph.p_filesz;
		seg->memory_bytes = ph.p_memsz;
		seg->flags = ph.p_flags;
		for (unsigned j = 0; j < image->segment_count; j++) {
			const struct elf_segment *other = &image->segments[j];
			if (seg->gpa < other->gpa + other->memory_bytes &&
			    other->gpa < seg->gpa + seg->memory_bytes)
				return kapsel_fail(error, error_len, -ENOEXEC,
						   "segments overlap at %#llx",
						   (unsigned long long)seg->gpa);
		}
		total += seg->memory_bytes;
		if (seg->gpa < image->image_start)
			image->image_start = seg->gpa;
		if (seg->gpa + seg->memory_bytes > image->image_end)
			image->image_end = seg->gpa + seg->memory_bytes;
		image->segment_count++;
	}
	if (image->segment_count == 0)
		return kapsel_fail(error, error_len, -ENOEXEC, "no loadable segments");
	if (total > ram_bytes)
		return kapsel_fail(error, error_len, -E2BIG,
				   "image needs %llu bytes, more than the guest's %llu",
				   (unsigned long long)total, (unsigned long long)ram_bytes);

	int entry_ok = 0;
	for (unsigned i = 0; i < image->segment_count; i++) {
		const struct elf_segment *seg = &image->segments[i];
		if ((seg->flags & PF_X) && eh->e_entry >= seg->gpa &&
		    eh->e_entry < seg->gpa + seg->file_bytes)
			entry_ok = 1;
	}
	if (!entry_ok)
		return kapsel_fail(error, error_len, -ENOEXEC,
				   "entry point %#llx is not inside an executable loaded segment",
				   (unsigned long long)eh->e_entry);
	image->entry = eh->e_entry;

	image->data = malloc(size_bytes);
	if (!image->data) {
		err = kapsel_fail(error, error_len, -ENOMEM, "out of memory");
		goto out;
	}
	memcpy(image->data, data, size_bytes);
	image->size_bytes = size_bytes;
	parse_symbols(image);
	return 0;
out:
	elf_image_free(image);
	return err;
}

int elf_image_load_file(const char *path, uint64_t ram_bytes, struct elf_image *image, char *error,
			size_t error_len)
{
	struct stat st;
	int fd, err;
	uint8_t *buffer;

	memset(image, 0, sizeof(*image));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return kapsel_fail(
			error, error_len, -ENOENT,
			"cannot open guest image '%s': No such file or directory; give the path of a guest ELF kernel (built ones are in build/guest-pv/examples/)",
			path);
	if (fd < 0)
		return kapsel_fail(
			error, error_len, -errno,
			"cannot open guest image '%s': %s; check the path and its permissions",
			path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return kapsel_fail(error, error_len, -EINVAL,
				   "guest image '%s' is not a regular file", path);
	}
	if ((uint64_t)st.st_size > ELF_IMAGE_MAX_FILE_BYTES) {
		close(fd);
		return kapsel_fail(error, error_len, -E2BIG,
				   "guest image '%s' is %lld bytes; the limit is %u MiB", path,
				   (long long)st.st_size, ELF_IMAGE_MAX_FILE_BYTES >> 20);
	}
	buffer = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buffer) {
		close(fd);
		return kapsel_fail(error, error_len, -ENOMEM, "out of memory");
	}
	size_t done = 0;
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, buffer + done, (size_t)st.st_size - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			free(buffer);
			close(fd);
			return kapsel_fail(error, error_len, err, "cannot read guest image '%s'",
					   path);
		}
		done += (size_t)n;
	}
	close(fd);
	char detail[256];
	err = elf_image_parse(buffer, done, ram_bytes, image, detail, sizeof(detail));
	free(buffer);
	if (err)
		return kapsel_fail(error, error_len, err, "guest image '%s': %s", path, detail);
	return 0;
}

int elf_image_copy_to_guest(const struct elf_image *image, struct guest_memory *mem)
{
	for (unsigned i = 0; i < image->segment_count; i++) {
		const struct elf_segment *seg = &image->segments[i];
		uint8_t *dst = guest_memory_translate(mem, seg->gpa, seg->memory_bytes);
		if (!dst)
			return -EFAULT;
		memcpy(dst, image->data + seg->file_offset, seg->file_bytes);
		memset(dst + seg->file_bytes, 0, seg->memory_bytes - seg->file_bytes);
	}
	return 0;
}

const char *elf_image_symbolize(const struct elf_image *image, uint64_t address,
				uint64_t *offset_bytes)
{
	size_t lo = 0, hi = image->symbol_count;

	/* Find the last symbol starting at or below address. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (image->symbols[mid].address <= address)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	const struct elf_symbol *sym = &image->symbols[lo - 1];
	/* Size 0 (assembly labels) matches up to the next symbol.  Written
	 * without address + size, which a symbol near 2^64 overflows. */
	if (sym->size_bytes && address - sym->address >= sym->size_bytes)
		return NULL;
	if (offset_bytes)
		*offset_bytes = address - sym->address;
	return sym->name;
}

uint64_t elf_image_lookup(const struct elf_image *image, const char *name)
{
	for (size_t i = 0; i < image->symbol_count; i++)
		if (strcmp(image->symbols[i].name, name) == 0)
			return image->symbols[i].address;
	return 0;
}

void elf_image_free(struct elf_image *image)
{
	free(image->data);
	free(image->symbols);
	memset(image, 0, sizeof(*image));
}
