/* Unit tests: the ELF guest image loader against valid, hostile, truncated and fuzzed images. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cunit_main.h"
#include "core/elf_loader.h"
#include "kapsel/abi.h"

#define RAM_BYTES (4ull << 20)

/*
 * The test image, built independently of the loader:
 *   0x0000  ELF header
 *   0x0040  program headers (up to MAX_PHDRS)
 *   0x1000  text bytes (TEXT_FILE bytes), loaded at TEXT_GPA, R X
 *   0x1100  data bytes (DATA_FILE bytes), loaded at DATA_GPA, RW, with BSS
 *   0x1200  symbol table
 *   0x1400  string table
 *   0x1500  section headers: null, .symtab, .strtab
 */
#define MAX_PHDRS 20
#define TEXT_OFFSET 0x1000u
#define TEXT_FILE 0x100u
#define TEXT_GPA 0x100000u
#define DATA_OFFSET 0x1100u
#define DATA_FILE 0x20u
#define DATA_MEM 0x2000u
#define DATA_GPA 0x101000u
#define SYMTAB_OFFSET 0x1200u
#define STRTAB_OFFSET 0x1400u
#define SHDR_OFFSET 0x1500u
#define IMAGE_BYTES (SHDR_OFFSET + 3 * sizeof(Elf64_Shdr))

struct test_image {
	uint8_t bytes[IMAGE_BYTES];
	Elf64_Ehdr *eh;
	Elf64_Phdr *ph;
	Elf64_Shdr *sh;
	Elf64_Sym *sym;
	unsigned symbol_count;
	size_t strtab_bytes;
};

struct test_symbol {
	const char *name;
	uint64_t value, size;
	unsigned char type;
};

/* _start [0x100000, +0x10), main [0x100010, +0x40), a data object that is
 * not a function, and helper at 0x100080 with size 0 (an assembly label). */
static const struct test_symbol test_symbols[] = {
	{ "_start", TEXT_GPA, 0x10, STT_FUNC },
	{ "main", TEXT_GPA + 0x10, 0x40, STT_FUNC },
	{ "data_object", DATA_GPA, 0x20, STT_OBJECT },
	{ "helper", TEXT_GPA + 0x80, 0, STT_FUNC },
};
#define TEST_SYMBOL_COUNT (sizeof(test_symbols) / sizeof(test_symbols[0]))

static void image_set_segment(struct test_image *im, unsigned i, uint32_t flags, uint64_t offset,
			      uint64_t gpa, uint64_t file_bytes, uint64_t memory_bytes)
{
	Elf64_Phdr *p = &im->ph[i];
	memset(p, 0, sizeof(*p));
	p->p_type = PT_LOAD;
	p->p_flags = flags;
	p->p_offset = offset;
	p->p_vaddr = p->p_paddr = gpa;
	p->p_filesz = file_bytes;
	p->p_memsz = memory_bytes;
	p->p_align = 0x1000;
}

/* A valid two-segment image with a symbol table. */
static void image_build(struct test_image *im)
{
	memset(im, 0, sizeof(*im));
	im->eh = (Elf64_Ehdr *)im->bytes;
	im->ph = (Elf64_Phdr *)(im->bytes + sizeof(Elf64_Ehdr));
	im->sh = (Elf64_Shdr *)(im->bytes + SHDR_OFFSET);
	im->sym = (Elf64_Sym *)(im->bytes + SYMTAB_OFFSET);

	Elf64_Ehdr *eh = im->eh;
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_version = EV_CURRENT;
	eh->e_entry = TEXT_GPA;
	eh->e_phoff = sizeof(Elf64_Ehdr);
	eh->e_shoff = SHDR_OFFSET;
	eh->e_ehsize = sizeof(Elf64_Ehdr);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = 2;
	eh->e_shentsize = sizeof(Elf64_Shdr);
	eh->e_shnum = 3;

	image_set_segment(im, 0, PF_R | PF_X, TEXT_OFFSET, TEXT_GPA, TEXT_FILE, TEXT_FILE);
	image_set_segment(im, 1, PF_R | PF_W, DATA_OFFSET, DATA_GPA, DATA_FILE, DATA_MEM);
	for (unsigned i = 0; i < TEXT_FILE; i++)
		im->bytes[TEXT_OFFSET + i] = (uint8_t)(0x90 + i);
	for (unsigned i = 0; i < DATA_FILE; i++)
		im->bytes[DATA_OFFSET + i] = (uint8_t)(0x40 + i);

	/* Symbol 0 is the null symbol, as in every ELF symbol table. */
	char *strtab = (char *)im->bytes + STRTAB_OFFSET;
	size_t used = 1;
	im->symbol_count = 1;
	for (unsigned i = 0; i < TEST_SYMBOL_COUNT; i++) {
		Elf64_Sym *s = &im->sym[im->symbol_count++];
		s->st_name = (uint32_t)used;
		s->st_value = test_symbols[i].value;
		s->st_size = test_symbols[i].size;
		s->st_info = ELF64_ST_INFO(STB_GLOBAL, test_symbols[i].type);
		s->st_shndx = 1;
		strcpy(strtab + used, test_symbols[i].name);
		used += strlen(test_symbols[i].name) + 1;
	}
	im->strtab_bytes = used;

	im->sh[1].sh_type = SHT_SYMTAB;
	im->sh[1].sh_offset = SYMTAB_OFFSET;
	im->sh[1].sh_size = im->symbol_count * sizeof(Elf64_Sym);
	im->sh[1].sh_entsize = sizeof(Elf64_Sym);
	im->sh[1].sh_link = 2;
	im->sh[2].sh_type = SHT_STRTAB;
	im->sh[2].sh_offset = STRTAB_OFFSET;
	im->sh[2].sh_size = used;
}

static char error[512];

static int parse_bytes(const void *bytes, size_t size, struct elf_image *out)
{
	error[0] = '\0';
	return elf_image_parse(bytes, size, RAM_BYTES, out, error, sizeof(error));
}

static int parse(struct test_image *im, struct elf_image *out)
{
	return parse_bytes(im->bytes, sizeof(im->bytes), out);
}

/* Parse im, expect failure with err and a message containing text. */
static void expect_failure(struct test_image *im, int err, const char *text)
{
	struct elf_image out;
	int rc = parse(im, &out);
	CU_ASSERT_EQUAL(rc, err);
	if (!strstr(error, text)) {
		fprintf(stderr, "\n  message '%s' lacks '%s'\n", error, text);
		CU_FAIL("error message");
	}
	/* A failed parse leaves nothing to free, and freeing is harmless. */
	CU_ASSERT_PTR_NULL(out.data);
	CU_ASSERT_PTR_NULL(out.symbols);
	elf_image_free(&out);
}

static void test_valid_image(void)
{
	struct test_image im;
	struct elf_image out;
	image_build(&im);
	CU_ASSERT_EQUAL_FATAL(parse(&im, &out), 0);
	CU_ASSERT_EQUAL(out.entry, TEXT_GPA);
	CU_ASSERT_EQUAL(out.segment_count, 2);
	CU_ASSERT_EQUAL(out.segments[0].gpa, TEXT_GPA);
	CU_ASSERT_EQUAL(out.segments[0].file_offset, TEXT_OFFSET);
	CU_ASSERT_EQUAL(out.segments[0].file_bytes, TEXT_FILE);
	CU_ASSERT_EQUAL(out.segments[0].memory_bytes, TEXT_FILE);
	CU_ASSERT_EQUAL(out.segments[0].flags, PF_R | PF_X);
	CU_ASSERT_EQUAL(out.segments[1].gpa, DATA_GPA);
	CU_ASSERT_EQUAL(out.segments[1].memory_bytes, DATA_MEM);
	CU_ASSERT_EQUAL(out.image_start, TEXT_GPA);
	CU_ASSERT_EQUAL(out.image_end, DATA_GPA + DATA_MEM);
	/* The loader keeps its own copy: changing ours changes nothing. */
	memset(im.bytes, 0, sizeof(im.bytes));
	CU_ASSERT_EQUAL(out.data[TEXT_OFFSET], 0x90);

	/* Copy into guest RAM: file bytes land at their GPA, BSS is zeroed. */
	struct guest_memory mem;
	CU_ASSERT_EQUAL_FATAL(guest_memory_create(&mem, RAM_BYTES, "elf-test"), 0);
	memset(mem.host_base, 0xcc, mem.size_bytes);
	CU_ASSERT_EQUAL(elf_image_copy_to_guest(&out, &mem), 0);
	for (unsigned i = 0; i < TEXT_FILE; i++)
		CU_ASSERT_EQUAL(mem.host_base[TEXT_GPA + i], (uint8_t)(0x90 + i));
	for (unsigned i = 0; i < DATA_FILE; i++)
		CU_ASSERT_EQUAL(mem.host_base[DATA_GPA + i], (uint8_t)(0x40 + i));
	size_t nonzero_bss = 0;
	for (unsigned i = DATA_FILE; i < DATA_MEM; i++)
		nonzero_bss += mem.host_base[DATA_GPA + i] != 0;
	CU_ASSERT_EQUAL(nonzero_bss, 0);
	/* Bytes around the segments are untouched. */
	CU_ASSERT_EQUAL(mem.host_base[TEXT_GPA - 1], 0xcc);
	CU_ASSERT_EQUAL(mem.host_base[TEXT_GPA + TEXT_FILE], 0xcc);
	CU_ASSERT_EQUAL(mem.host_base[DATA_GPA + DATA_MEM], 0xcc);
	guest_memory_destroy(&mem);
	elf_image_free(&out);
	CU_ASSERT_PTR_NULL(out.data);
}

static void expect_symbol(const struct elf_image *image, uint64_t address, const char *name,
			  uint64_t offset)
{
	uint64_t got = UINT64_MAX;
	const char *found = elf_image_symbolize(image, address, &got);
	if (!name) {
		CU_ASSERT_PTR_NULL(found);
		return;
	}
	CU_ASSERT_PTR_NOT_NULL_FATAL(found);
	CU_ASSERT_STRING_EQUAL(found, name);
	CU_ASSERT_EQUAL(got, offset);
}

/* A symbol whose address + size passes 2^64 (a hostile symbol table)
 * still covers its bytes: the end was computed with a wrapping sum. */
static void test_symbolize_top_of_address_space(void)
{
	struct elf_symbol symbols[] = {
		{ .address = 0x1000, .size_bytes = 0x10, .name = "low" },
		{ .address = UINT64_MAX - 3, .size_bytes = 16, .name = "top" },
	};
	struct elf_image image = { .symbols = symbols, .symbol_count = 2 };
	expect_symbol(&image, UINT64_MAX - 3, "top", 0);
	expect_symbol(&image, UINT64_MAX, "top", 3);
	expect_symbol(&image, UINT64_MAX - 4, NULL, 0);
	expect_symbol(&image, 0x100f, "low", 0xf);
}

static void test_symbolize(void)
{
	struct test_image im;
	struct elf_image out;
	image_build(&im);
	CU_ASSERT_EQUAL_FATAL(parse(&im, &out), 0);
	/* Functions only: the data object is left out. */
	CU_ASSERT_EQUAL(out.symbol_count, 3);
	expect_symbol(&out, TEXT_GPA, "_start", 0);
	expect_symbol(&out, TEXT_GPA + 0xf, "_start", 0xf);
	expect_symbol(&out, TEXT_GPA + 0x10, "main", 0);
	expect_symbol(&out, TEXT_GPA + 0x4f, "main", 0x3f);
	/* Past main's size and before helper: nobody's. */
	expect_symbol(&out, TEXT_GPA + 0x50, NULL, 0);
	expect_symbol(&out, TEXT_GPA + 0x7f, NULL, 0);
	/* Size 0 reaches up to the next symbol (here: everything above). */
	expect_symbol(&out, TEXT_GPA + 0x80, "helper", 0);
	expect_symbol(&out, TEXT_GPA + 0x95, "helper", 0x15);
	/* Below the first symbol. */
	expect_symbol(&out, TEXT_GPA - 1, NULL, 0);
	expect_symbol(&out, 0, NULL, 0);
	/* offset_bytes may be NULL. */
	CU_ASSERT_STRING_EQUAL(elf_image_symbolize(&out, TEXT_GPA + 0x20, NULL), "main");
	CU_ASSERT_EQUAL(elf_image_lookup(&out, "main"), TEXT_GPA + 0x10);
	CU_ASSERT_EQUAL(elf_image_lookup(&out, "helper"), TEXT_GPA + 0x80);
	CU_ASSERT_EQUAL(elf_image_lookup(&out, "data_object"), 0);
	CU_ASSERT_EQUAL(elf_image_lookup(&out, "absent"), 0);
	elf_image_free(&out);

	/* An image without section headers runs but has no symbols. */
	image_build(&im);
	im.eh->e_shoff = 0;
	im.eh->e_shnum = 0;
	CU_ASSERT_EQUAL_FATAL(parse(&im, &out), 0);
	CU_ASSERT_EQUAL(out.symbol_count, 0);
	expect_symbol(&out, TEXT_GPA, NULL, 0);
	elf_image_free(&out);
}

static void test_header_checks(void)
{
	struct test_image im;
	struct elf_image out;

	image_build(&im);
	CU_ASSERT_EQUAL(parse_bytes(im.bytes, sizeof(Elf64_Ehdr) - 1, &out), -ENOEXEC);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "63 bytes, too short for an ELF header"));
	CU_ASSERT_EQUAL(parse_bytes(im.bytes, 0, &out), -ENOEXEC);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "too short"));

	image_build(&im);
	im.eh->e_ident[EI_MAG1] = 'F';
	expect_failure(&im, -ENOEXEC, "not an ELF file (bad magic)");

	image_build(&im);
	im.eh->e_ident[EI_CLASS] = ELFCLASS32;
	expect_failure(&im, -ENOEXEC, "ELF class 1 is not ELFCLASS64");

	image_build(&im);
	im.eh->e_ident[EI_DATA] = ELFDATA2MSB;
	expect_failure(&im, -ENOEXEC, "ELF data encoding 2 is not little-endian");

	image_build(&im);
	im.eh->e_version = 2;
	expect_failure(&im, -ENOEXEC, "unknown ELF version");

	image_build(&im);
	im.eh->e_machine = EM_386;
	expect_failure(&im, -ENOEXEC, "ELF machine 3 is not x86-64");

	image_build(&im);
	im.eh->e_type = ET_DYN;
	expect_failure(&im, -ENOEXEC, "ELF type 3 is not an executable (ET_EXEC)");

	image_build(&im);
	im.eh->e_phentsize = 32;
	expect_failure(&im, -ENOEXEC, "has entry size 32");

	image_build(&im);
	im.eh->e_phnum = 0;
	expect_failure(&im, -ENOEXEC, "program header table is missing");
}

static void test_program_headers_past_end(void)
{
	struct test_image im;

	image_build(&im);
	im.eh->e_phoff = IMAGE_BYTES - sizeof(Elf64_Phdr);
	expect_failure(&im, -ENOEXEC, "run past the end of the file");

	image_build(&im);
	im.eh->e_phoff = IMAGE_BYTES + 1;
	expect_failure(&im, -ENOEXEC, "run past the end of the file");

	/* offset + size overflows 64 bits: must not wrap into the file. */
	image_build(&im);
	im.eh->e_phoff = UINT64_MAX - 8;
	expect_failure(&im, -ENOEXEC, "run past the end of the file");
	image_build(&im);
	im.eh->e_phoff = UINT64_MAX - 2 * sizeof(Elf64_Phdr) + 1;
	expect_failure(&im, -ENOEXEC, "run past the end of the file");

	/* More entries than the file holds. */
	image_build(&im);
	im.eh->e_phnum = 0xffff;
	expect_failure(&im, -ENOEXEC, "65535 entries) run past the end of the file");
}

static void test_segment_checks(void)
{
	struct test_image im;

	image_build(&im);
	im.ph[1].p_offset = IMAGE_BYTES - 0x10;
	expect_failure(&im, -ENOEXEC, "segment 1: file bytes");
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "truncated image?"));

	image_build(&im);
	im.ph[0].p_offset = UINT64_MAX - 0x10;
	expect_failure(&im, -ENOEXEC, "segment 0: file bytes");

	image_build(&im);
	im.ph[1].p_filesz = DATA_MEM + 1;
	expect_failure(&im, -ENOEXEC, "segment 1: file size 0x2001 exceeds memory size 0x2000");

	/* Even a segment with no memory may not claim file bytes. */
	image_build(&im);
	im.ph[1].p_memsz = 0;
	expect_failure(&im, -ENOEXEC, "exceeds memory size 0");

	image_build(&im);
	im.ph[1].p_vaddr = 0xffffffff80101000ull;
	expect_failure(&im, -ENOEXEC,
		       "segment 1: virtual address 0xffffffff80101000 differs from physical 0x101000");

	image_build(&im);
	image_set_segment(&im, 0, PF_R | PF_X, TEXT_OFFSET, KAPSEL_GPA_IMAGE_MIN - 0x1000,
			  TEXT_FILE, TEXT_FILE);
	im.eh->e_entry = KAPSEL_GPA_IMAGE_MIN - 0x1000;
	expect_failure(&im, -ERANGE, "segment 0 at 0xff000 is below 0x100000");

	image_build(&im);
	image_set_segment(&im, 1, PF_R | PF_W, DATA_OFFSET, RAM_BYTES - 0x1000, DATA_FILE, 0x1001);
	expect_failure(&im, -ERANGE, "does not fit in 4 MiB of guest memory");

	/* Ending exactly at the end of RAM is fine. */
	image_build(&im);
	image_set_segment(&im, 1, PF_R | PF_W, DATA_OFFSET, RAM_BYTES - 0x1000, DATA_FILE, 0x1000);
	struct elf_image out;
	CU_ASSERT_EQUAL(parse(&im, &out), 0);
	CU_ASSERT_EQUAL(out.image_end, RAM_BYTES);
	elf_image_free(&out);

	/* p_paddr + p_memsz wraps around 2^64: must not look small. */
	image_build(&im);
	image_set_segment(&im, 1, PF_R | PF_W, DATA_OFFSET, UINT64_MAX - 0xfff, DATA_FILE, 0x2000);
	expect_failure(&im, -ERANGE, "does not fit in 4 MiB");
	image_build(&im);
	image_set_segment(&im, 1, PF_R | PF_W, DATA_OFFSET, DATA_GPA, DATA_FILE,
			  UINT64_MAX - DATA_GPA + 2);
	expect_failure(&im, -ERANGE, "does not fit in 4 MiB");

	/* Overlap in either order and for a segment inside another. */
	image_build(&im);
	im.ph[1].p_vaddr = im.ph[1].p_paddr = TEXT_GPA + TEXT_FILE - 1;
	expect_failure(&im, -ENOEXEC, "segments overlap at 0x1000ff");
	image_build(&im);
	im.ph[0].p_vaddr = im.ph[0].p_paddr = DATA_GPA + 0x10;
	im.ph[0].p_memsz = im.ph[0].p_filesz = 0x10;
	im.eh->e_entry = DATA_GPA + 0x10;
	/* The first one is accepted; the second (data) overlaps it. */
	expect_failure(&im, -ENOEXEC, "segments overlap at 0x101000");
	/* Touching is not overlapping. */
	image_build(&im);
	im.ph[1].p_vaddr = im.ph[1].p_paddr = TEXT_GPA + TEXT_FILE;
	CU_ASSERT_EQUAL(parse(&im, &out), 0);
	elf_image_free(&out);
}

static void test_entry_and_segment_counts(void)
{
	struct test_image im;
	struct elf_image out;

	image_build(&im);
	im.eh->e_entry = DATA_GPA; /* not executable */
	expect_failure(&im, -ENOEXEC,
		       "entry point 0x101000 is not inside an executable loaded segment");
	image_build(&im);
	im.eh->e_entry = TEXT_GPA + TEXT_FILE; /* one past the text */
	expect_failure(&im, -ENOEXEC, "entry point 0x100100 is not inside");
	image_build(&im);
	im.eh->e_entry = TEXT_GPA - 1;
	expect_failure(&im, -ENOEXEC, "entry point 0xfffff is not inside");
	image_build(&im);
	im.eh->e_entry = TEXT_GPA + TEXT_FILE - 1; /* last text byte */
	CU_ASSERT_EQUAL(parse(&im, &out), 0);
	CU_ASSERT_EQUAL(out.entry, TEXT_GPA + TEXT_FILE - 1);
	elf_image_free(&out);

	image_build(&im);
	im.ph[0].p_type = PT_NOTE;
	im.ph[1].p_type = PT_GNU_STACK;
	expect_failure(&im, -ENOEXEC, "no loadable segments");

	/* Empty PT_LOADs are skipped, not counted. */
	image_build(&im);
	im.ph[0].p_memsz = im.ph[0].p_filesz = 0;
	im.ph[1].p_memsz = im.ph[1].p_filesz = 0;
	expect_failure(&im, -ENOEXEC, "no loadable segments");

	/* 16 segments are the limit; 17 are refused. */
	for (unsigned count = ELF_IMAGE_MAX_SEGMENTS; count <= ELF_IMAGE_MAX_SEGMENTS + 1;
	     count++) {
		image_build(&im);
		im.eh->e_phnum = (uint16_t)count;
		for (unsigned i = 0; i < count; i++)
			image_set_segment(&im, i, PF_R | PF_X, TEXT_OFFSET,
					  TEXT_GPA + i * 0x1000ull, 0x10, 0x10);
		if (count == ELF_IMAGE_MAX_SEGMENTS) {
			CU_ASSERT_EQUAL(parse(&im, &out), 0);
			CU_ASSERT_EQUAL(out.segment_count, ELF_IMAGE_MAX_SEGMENTS);
			CU_ASSERT_EQUAL(out.image_end,
					TEXT_GPA + (ELF_IMAGE_MAX_SEGMENTS - 1) * 0x1000ull + 0x10);
			elf_image_free(&out);
		} else {
			expect_failure(&im, -ENOEXEC, "more than 16 loadable segments");
		}
	}
}

/* The guests carry a PT_NOTE (the PVH entry QEMU boots them by, inside
 * the rodata load): kapsel loads the same segments as without it, and
 * does not check a note's addresses as it checks a load's. */
static void test_note_segment_ignored(void)
{
	struct test_image im;
	struct elf_image out;

	image_build(&im);
	im.eh->e_phnum = 3;
	Elf64_Phdr *note = &im.ph[2];
	memset(note, 0, sizeof(*note));
	note->p_type = PT_NOTE;
	note->p_flags = PF_R;
	note->p_offset = TEXT_OFFSET + 0x20;
	note->p_vaddr = note->p_paddr = TEXT_GPA + 0x20;
	note->p_filesz = note->p_memsz = 0x18;
	note->p_align = 4;
	CU_ASSERT_EQUAL_FATAL(parse(&im, &out), 0);
	CU_ASSERT_EQUAL(out.segment_count, 2);
	CU_ASSERT_EQUAL(out.entry, TEXT_GPA);
	CU_ASSERT_EQUAL(out.image_start, TEXT_GPA);
	CU_ASSERT_EQUAL(out.image_end, DATA_GPA + DATA_MEM);
	elf_image_free(&out);

	/* Below the image minimum and past the file's end: still not loaded. */
	note->p_vaddr = note->p_paddr = 0x1000;
	note->p_offset = IMAGE_BYTES * 2;
	CU_ASSERT_EQUAL_FATAL(parse(&im, &out), 0);
	CU_ASSERT_EQUAL(out.segment_count, 2);
	elf_image_free(&out);
}

/* The image parses with that many symbols (SIZE_MAX: any), all sane. */
static void expect_parses_with_symbols(struct test_image *im, size_t symbols)
{
	struct elf_image out;
	CU_ASSERT_EQUAL_FATAL(parse(im, &out), 0);
	if (symbols != SIZE_MAX)
		CU_ASSERT_EQUAL(out.symbol_count, symbols);
	/* Every name it kept is a terminated string inside the image copy. */
	for (size_t i = 0; i < out.symbol_count; i++) {
		const char *name = out.symbols[i].name;
		CU_ASSERT(name >= (const char *)out.data &&
			  name < (const char *)out.data + out.size_bytes);
		CU_ASSERT(memchr(name, '\0',
				 (size_t)((const char *)out.data + out.size_bytes - name)) != NULL);
	}
	elf_image_symbolize(&out, TEXT_GPA + 0x20, NULL);
	elf_image_free(&out);
}

static void test_broken_symbol_tables(void)
{
	struct test_image im;

	image_build(&im);
	im.sh[1].sh_link = 3; /* == e_shnum */
	expect_parses_with_symbols(&im, 0);
	image_build(&im);
	im.sh[1].sh_link = 0xffffffffu;
	expect_parses_with_symbols(&im, 0);

	/* One name past the string table: that symbol is dropped. */
	image_build(&im);
	im.sym[2].st_name = (uint32_t)im.strtab_bytes;
	expect_parses_with_symbols(&im, 2);
	image_build(&im);
	im.sym[2].st_name = 0xffffffffu;
	expect_parses_with_symbols(&im, 2);

	/* A string table without its final NUL is not trusted at all. */
	image_build(&im);
	im.bytes[STRTAB_OFFSET + im.strtab_bytes - 1] = 'x';
	expect_parses_with_symbols(&im, 0);
	image_build(&im);
	im.sh[2].sh_size = 0;
	expect_parses_with_symbols(&im, 0);

	/* Tables outside the file, odd entry sizes, broken section headers. */
	image_build(&im);
	im.sh[1].sh_offset = UINT64_MAX - 0x10;
	expect_parses_with_symbols(&im, 0);
	image_build(&im);
	im.sh[1].sh_size = IMAGE_BYTES;
	expect_parses_with_symbols(&im, 0);
	image_build(&im);
	im.sh[2].sh_offset = IMAGE_BYTES;
	im.sh[2].sh_size = 1;
	expect_parses_with_symbols(&im, 0);
	image_build(&im);
	im.sh[1].sh_entsize = 16;
	expect_parses_with_symbols(&im, 0);
	image_build(&im);
	im.eh->e_shoff = UINT64_MAX - 0x40;
	expect_parses_with_symbols(&im, 0);
	image_build(&im);
	im.eh->e_shnum = 0xffff;
	expect_parses_with_symbols(&im, 0);
	image_build(&im);
	im.eh->e_shentsize = 40;
	expect_parses_with_symbols(&im, 0);
	/* A symtab that is its own string table: junk names, but every one
	 * of them inside the file and terminated. */
	image_build(&im);
	im.sh[1].sh_link = 1;
	expect_parses_with_symbols(&im, SIZE_MAX);
}

/* Cut a valid image at every length: never a crash, and it parses exactly
 * when every segment's file bytes are present. */
static void test_truncated_images(void)
{
	struct test_image im;
	image_build(&im);
	size_t needed = DATA_OFFSET + DATA_FILE;
	for (size_t length = 0; length <= IMAGE_BYTES; length++) {
		struct elf_image out;
		int rc = parse_bytes(im.bytes, length, &out);
		if (length >= needed) {
			CU_ASSERT_EQUAL(rc, 0);
			if (rc == 0) {
				CU_ASSERT_EQUAL(out.entry, TEXT_GPA);
				CU_ASSERT_EQUAL(out.segment_count, 2);
				/* Symbols only once all tables are in the file. */
				CU_ASSERT_EQUAL(out.symbol_count, length == IMAGE_BYTES ? 3 : 0);
			}
		} else {
			CU_ASSERT(rc < 0);
			CU_ASSERT(error[0] != '\0');
		}
		elf_image_free(&out);
	}
}

/* xorshift64: a fixed sequence, so a failure is reproducible. */
static uint64_t fuzz_state = 0x6b617073656c3031ull;
static uint64_t fuzz_next(void)
{
	fuzz_state ^= fuzz_state << 13;
	fuzz_state ^= fuzz_state >> 7;
	fuzz_state ^= fuzz_state << 17;
	return fuzz_state;
}

static void test_fuzzed_images(void)
{
	static const struct {
		size_t start, length;
	} regions[] = {
		{ 0, sizeof(Elf64_Ehdr) + 2 * sizeof(Elf64_Phdr) }, /* headers */
		{ SYMTAB_OFFSET, IMAGE_BYTES - SYMTAB_OFFSET },	    /* symbols, sections */
		{ 0, IMAGE_BYTES },				    /* anywhere */
	};
	struct test_image valid, im;
	unsigned parsed = 0, refused = 0;
	image_build(&valid);
	for (unsigned iteration = 0; iteration < 10000; iteration++) {
		memcpy(&im, &valid, sizeof(im));
		unsigned flips = 1 + (unsigned)(fuzz_next() % 4);
		for (unsigned f = 0; f < flips; f++) {
			uint64_t r = fuzz_next();
			const size_t region = (size_t)(r % 3);
			size_t at =
				regions[region].start + (size_t)((r >> 8) % regions[region].length);
			im.bytes[at] = (uint8_t)(r >> 40);
		}
		struct elf_image out;
		if (parse(&im, &out) != 0) {
			refused++;
			CU_ASSERT(error[0] != '\0');
			continue;
		}
		parsed++;
		/* Whatever was accepted keeps the loader's promises. */
		CU_ASSERT(out.segment_count >= 1 && out.segment_count <= ELF_IMAGE_MAX_SEGMENTS);
		CU_ASSERT(out.image_start >= KAPSEL_GPA_IMAGE_MIN);
		CU_ASSERT(out.image_end <= RAM_BYTES);
		int entry_ok = 0;
		for (unsigned i = 0; i < out.segment_count; i++) {
			const struct elf_segment *s = &out.segments[i];
			CU_ASSERT(s->file_bytes <= s->memory_bytes);
			CU_ASSERT(s->file_offset <= out.size_bytes &&
				  s->file_bytes <= out.size_bytes - s->file_offset);
			if ((s->flags & PF_X) && out.entry >= s->gpa &&
			    out.entry < s->gpa + s->file_bytes)
				entry_ok = 1;
		}
		CU_ASSERT(entry_ok);
		for (uint64_t a = TEXT_GPA - 0x10; a < TEXT_GPA + 0x100; a += 7)
			elf_image_symbolize(&out, a, NULL);
		elf_image_lookup(&out, "main");
		elf_image_free(&out);
	}
	/* Both outcomes happen, or the fuzzing tested nothing. */
	CU_ASSERT(parsed > 100);
	CU_ASSERT(refused > 100);
}

static void test_load_file_errors(void)
{
	struct elf_image out;
	char path[] = "/tmp/kapsel-elf-test.XXXXXX";
	CU_ASSERT_EQUAL(elf_image_load_file("/nonexistent/guest.elf", RAM_BYTES, &out, error,
					    sizeof(error)),
			-ENOENT);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "cannot open guest image '/nonexistent/guest.elf'"));
	CU_ASSERT_EQUAL(elf_image_load_file("/", RAM_BYTES, &out, error, sizeof(error)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "guest image '/' is not a regular file"));

	int fd = mkstemp(path);
	CU_ASSERT_FATAL(fd >= 0);
	struct test_image im;
	image_build(&im);
	CU_ASSERT_EQUAL((size_t)write(fd, im.bytes, 100), 100);
	close(fd);
	CU_ASSERT_EQUAL(elf_image_load_file(path, RAM_BYTES, &out, error, sizeof(error)), -ENOEXEC);
	/* The file is named, then the parser's reason. */
	CU_ASSERT_PTR_NOT_NULL(strstr(error, path));
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "run past the end of the file"));

	fd = open(path, O_WRONLY | O_TRUNC);
	CU_ASSERT_EQUAL((size_t)write(fd, im.bytes, sizeof(im.bytes)), sizeof(im.bytes));
	close(fd);
	CU_ASSERT_EQUAL(elf_image_load_file(path, RAM_BYTES, &out, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(out.entry, TEXT_GPA);
	CU_ASSERT_EQUAL(out.symbol_count, 3);
	elf_image_free(&out);
	unlink(path);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "valid image parses and loads", test_valid_image },
		{ "symbolization", test_symbolize },
		{ "symbol at the top of the address space", test_symbolize_top_of_address_space },
		{ "ELF header checks", test_header_checks },
		{ "program headers past the end", test_program_headers_past_end },
		{ "a PT_NOTE segment is not loaded", test_note_segment_ignored },
		{ "segment checks", test_segment_checks },
		{ "entry point and segment counts", test_entry_and_segment_counts },
		{ "broken symbol tables yield no symbols", test_broken_symbol_tables },
		{ "truncated images", test_truncated_images },
		{ "10000 fuzzed images", test_fuzzed_images },
		{ "load_file errors", test_load_file_errors },
	};
	return UNIT_RUN("elf loader", tests);
}
