/* Unit tests of the saved-VM format: record stream round trip, every corruption refused, the state directory. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cunit_main.h"
#include "config/config.h"
#include "state/snapshot.h"
#include "state/vm_state.h"

/* ---- helpers ----------------------------------------------------------------- */

/* Bitwise CRC32C, the definition itself: an independent reference. */
static uint32_t reference_crc32c(const uint8_t *p, size_t n)
{
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
	}
	return ~c;
}

/* The reference continued from a previous CRC value. */
static uint32_t reference_crc32c_from(uint32_t crc, const uint8_t *p, size_t n)
{
	uint32_t c = ~crc;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
	}
	return ~c;
}

struct sample {
	uint32_t type, flags;
	size_t length;
	uint8_t data[300];
};

static const struct sample samples[] = {
	{ VM_STATE_VM_INFO, VM_STATE_RECORD_MANDATORY, 0, { 0 } },
	{ VM_STATE_NOTE, 0, 5, { 'h', 'e', 'l', 'l', 'o' } },
	{ VM_STATE_VCPU_REGS, VM_STATE_RECORD_MANDATORY, 300, { 1, 2, 3 } },
	{ 0x7777, 0, 1, { 0xaa } },
};
#define SAMPLE_COUNT (sizeof(samples) / sizeof(samples[0]))

/* A valid stream of the samples; caller frees w. */
static void build_stream(struct vm_state_writer *w)
{
	vm_state_writer_init_buffer(w);
	CU_ASSERT_EQUAL(vm_state_put_begin(w, VM_STATE_KIND_STATE), 0);
	for (size_t i = 0; i < SAMPLE_COUNT; i++)
		CU_ASSERT_EQUAL(vm_state_put(w, samples[i].type, samples[i].flags, samples[i].data,
					     samples[i].length),
				0);
	CU_ASSERT_EQUAL(vm_state_put_end(w), 0);
	CU_ASSERT_EQUAL(w->error, 0);
}

/* Read the whole stream; returns what vm_state_read_all returned. */
static int read_stream(const uint8_t *data, size_t length, struct vm_state_records *records,
		       char *error, size_t error_len)
{
	struct vm_state_reader r;
	vm_state_reader_init_buffer(&r, data, length, "test", VM_STATE_KIND_STATE, error,
				    error_len);
	int err = vm_state_read_all(&r, records);
	vm_state_reader_free(&r);
	return err;
}

/* ---- CRC ----------------------------------------------------------------------- */

static void test_crc32c(void)
{
	/* The check value of CRC-32C (iSCSI) for "123456789". */
	CU_ASSERT_EQUAL(vm_state_crc32c(0, "123456789", 9), 0xe3069283u);
	uint8_t buffer[5000];
	for (size_t i = 0; i < sizeof(buffer); i++)
		buffer[i] = (uint8_t)(i * 7 + 3);
	for (size_t n = 0; n < sizeof(buffer); n += 331)
		CU_ASSERT_EQUAL(vm_state_crc32c(0, buffer + 1, n), reference_crc32c(buffer + 1, n));
	/* Incremental equals one-shot, and zeros equal a zero buffer. */
	uint32_t split = vm_state_crc32c(vm_state_crc32c(0, buffer, 1000), buffer + 1000, 4000);
	CU_ASSERT_EQUAL(split, reference_crc32c(buffer, 5000));
	static uint8_t zeros[1 << 20];
	static const size_t lengths[] = { 0,	 1,	255,	256, 257, 1000, 4096 * 3 + 5,
					  65536, 70000, 1 << 20 };
	for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		CU_ASSERT_EQUAL(vm_state_crc32c_zeros(0x1234, lengths[i]),
				reference_crc32c_from(0x1234, zeros, lengths[i]));
		CU_ASSERT_EQUAL(vm_state_crc32c_zeros(0, lengths[i]),
				vm_state_crc32c(0, zeros, lengths[i]));
	}
}

/* ---- Streams ------------------------------------------------------------------ */

static void test_round_trip(void)
{
	struct vm_state_writer w;
	struct vm_state_records records;
	char error[512];
	build_stream(&w);
	CU_ASSERT_EQUAL_FATAL(read_stream(w.buffer, w.buffer_bytes, &records, error, sizeof(error)),
			      0);
	CU_ASSERT_EQUAL_FATAL(records.count, SAMPLE_COUNT);
	for (size_t i = 0; i < SAMPLE_COUNT; i++) {
		CU_ASSERT_EQUAL(records.records[i].type, samples[i].type);
		CU_ASSERT_EQUAL(records.records[i].flags, samples[i].flags);
		CU_ASSERT_EQUAL(records.records[i].length_bytes, samples[i].length);
		CU_ASSERT(memcmp(records.records[i].payload, samples[i].data, samples[i].length) ==
			  0);
	}
	CU_ASSERT(memcmp(records.begin.magic, VM_STATE_MAGIC, 8) == 0);
	CU_ASSERT_EQUAL(records.begin.format_version, VM_STATE_FORMAT_VERSION);
	/* Size: 24-byte headers plus payloads plus begin and end. */
	size_t expected = 6 * sizeof(struct vm_state_record_header) +
			  sizeof(struct vm_state_begin) + sizeof(struct vm_state_end);
	for (size_t i = 0; i < SAMPLE_COUNT; i++)
		expected += samples[i].length;
	CU_ASSERT_EQUAL(w.buffer_bytes, expected);
	CU_ASSERT(vm_state_find(&records, VM_STATE_VCPU_REGS, NULL) == &records.records[2]);
	CU_ASSERT(vm_state_find(&records, VM_STATE_DISK, NULL) == NULL);
	vm_state_records_free(&records);
	vm_state_writer_free(&w);
}

static void test_truncated_everywhere(void)
{
	struct vm_state_writer w;
	char error[512];
	build_stream(&w);
	/* Every prefix, at record boundaries and inside headers and payloads. */
	for (size_t cut = 0; cut < w.buffer_bytes; cut++) {
		struct vm_state_records records;
		error[0] = '\0';
		int err = read_stream(w.buffer, cut, &records, error, sizeof(error));
		CU_ASSERT_EQUAL(err, -EPROTO);
		CU_ASSERT(error[0] != '\0');
		if (err == 0)
			vm_state_records_free(&records);
	}
	/* A cut exactly after a record says the end record is missing. */
	size_t after_first = sizeof(struct vm_state_record_header) + sizeof(struct vm_state_begin);
	struct vm_state_records records;
	read_stream(w.buffer, after_first, &records, error, sizeof(error));
	CU_ASSERT(strstr(error, "truncated") != NULL);
	vm_state_writer_free(&w);
}

static void test_flipped_bytes(void)
{
	struct vm_state_writer w;
	char error[512];
	build_stream(&w);
	uint8_t *copy = malloc(w.buffer_bytes);
	for (size_t at = 0; at < w.buffer_bytes; at++) {
		for (int bit = 0; bit < 8; bit += 3) {
			struct vm_state_records records;
			memcpy(copy, w.buffer, w.buffer_bytes);
			copy[at] ^= (uint8_t)(1u << bit);
			int err = read_stream(copy, w.buffer_bytes, &records, error, sizeof(error));
			CU_ASSERT(err < 0);
			if (err == 0) {
				fprintf(stderr, "flip at byte %zu bit %d accepted\n", at, bit);
				vm_state_records_free(&records);
			}
		}
	}
	free(copy);
	vm_state_writer_free(&w);
}

static void test_garbage_after_end(void)
{
	struct vm_state_writer w;
	struct vm_state_records records;
	char error[512];
	build_stream(&w);
	uint8_t *longer = calloc(1, w.buffer_bytes + 8);
	memcpy(longer, w.buffer, w.buffer_bytes);
	CU_ASSERT_EQUAL(read_stream(longer, w.buffer_bytes + 8, &records, error, sizeof(error)),
			-EPROTO);
	CU_ASSERT(strstr(error, "after the end") != NULL);
	free(longer);
	vm_state_writer_free(&w);
}

/* A stream whose begin record says what the test wants. */
static void build_with_begin(struct vm_state_writer *w, uint32_t version, uint32_t kind,
			     const char *magic)
{
	struct vm_state_begin begin = { .format_version = version, .kind = kind };
	memcpy(begin.magic, magic, 8);
	vm_state_writer_init_buffer(w);
	vm_state_put(w, VM_STATE_BEGIN, VM_STATE_RECORD_MANDATORY, &begin, sizeof(begin));
	vm_state_put(w, VM_STATE_NOTE, 0, "x", 1);
	vm_state_put_end(w);
}

static void test_wrong_version_kind_magic(void)
{
	struct vm_state_writer w;
	struct vm_state_records records;
	char error[512];

	build_with_begin(&w, VM_STATE_FORMAT_VERSION, VM_STATE_KIND_STATE, VM_STATE_MAGIC);
	CU_ASSERT_EQUAL(read_stream(w.buffer, w.buffer_bytes, &records, error, sizeof(error)), 0);
	vm_state_records_free(&records);
	vm_state_writer_free(&w);

	build_with_begin(&w, VM_STATE_FORMAT_VERSION + 1, VM_STATE_KIND_STATE, VM_STATE_MAGIC);
	CU_ASSERT_EQUAL(read_stream(w.buffer, w.buffer_bytes, &records, error, sizeof(error)),
			-EPROTO);
	CU_ASSERT(strstr(error, "format version 3") != NULL);
	CU_ASSERT(strstr(error, "versions 1 to 2") != NULL);
	vm_state_writer_free(&w);

	/* Format 1 is still read (for one version); nothing older. */
	build_with_begin(&w, VM_STATE_FORMAT_VERSION_OLDEST, VM_STATE_KIND_STATE, VM_STATE_MAGIC);
	CU_ASSERT_EQUAL(read_stream(w.buffer, w.buffer_bytes, &records, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(records.begin.format_version, 1);
	vm_state_records_free(&records);
	vm_state_writer_free(&w);
	build_with_begin(&w, 0, VM_STATE_KIND_STATE, VM_STATE_MAGIC);
	CU_ASSERT_EQUAL(read_stream(w.buffer, w.buffer_bytes, &records, error, sizeof(error)),
			-EPROTO);
	vm_state_writer_free(&w);

	build_with_begin(&w, VM_STATE_FORMAT_VERSION, VM_STATE_KIND_MIGRATION, VM_STATE_MAGIC);
	CU_ASSERT_EQUAL(read_stream(w.buffer, w.buffer_bytes, &records, error, sizeof(error)),
			-EPROTO);
	CU_ASSERT(strstr(error, "migration stream") != NULL);
	vm_state_writer_free(&w);

	build_with_begin(&w, VM_STATE_FORMAT_VERSION, VM_STATE_KIND_STATE, "NOTKAPSL");
	CU_ASSERT_EQUAL(read_stream(w.buffer, w.buffer_bytes, &records, error, sizeof(error)),
			-EPROTO);
	CU_ASSERT(strstr(error, "magic") != NULL);
	vm_state_writer_free(&w);

	/* Not a stream at all. */
	const char text[] = "this is a text file, not a Kapsel state stream at all....";
	CU_ASSERT_EQUAL(read_stream((const uint8_t *)text, sizeof(text), &records, error,
				    sizeof(error)),
			-EPROTO);
	CU_ASSERT_EQUAL(read_stream((const uint8_t *)text, 0, &records, error, sizeof(error)),
			-EPROTO);
}

static void test_unknown_records(void)
{
	struct vm_state_writer w;
	struct vm_state_reader r;
	struct vm_state_record rec;
	char error[512];

	vm_state_writer_init_buffer(&w);
	vm_state_put_begin(&w, VM_STATE_KIND_STATE);
	vm_state_put(&w, 0x9999, 0, "opt", 3);
	vm_state_put(&w, 0x9998, VM_STATE_RECORD_MANDATORY, "man", 3);
	vm_state_put_end(&w);
	vm_state_reader_init_buffer(&r, w.buffer, w.buffer_bytes, "test", VM_STATE_KIND_STATE,
				    error, sizeof(error));
	CU_ASSERT_EQUAL(vm_state_next(&r, &rec), 1);
	CU_ASSERT_FALSE(vm_state_record_known(rec.type));
	CU_ASSERT_EQUAL(vm_state_unknown_record(&r, &rec), 0); /* optional: skipped */
	CU_ASSERT_EQUAL(vm_state_next(&r, &rec), 1);
	CU_ASSERT_EQUAL(vm_state_unknown_record(&r, &rec), -EPROTO);
	CU_ASSERT(strstr(error, "mandatory") != NULL);
	CU_ASSERT_EQUAL(vm_state_next(&r, &rec), 0);
	vm_state_reader_free(&r);
	vm_state_writer_free(&w);
}

static void test_oversize_record_refused(void)
{
	struct vm_state_writer w;
	vm_state_writer_init_buffer(&w);
	CU_ASSERT_EQUAL(vm_state_put(&w, VM_STATE_NOTE, 0, NULL, VM_STATE_MAX_RECORD_BYTES + 1),
			-EMSGSIZE);
	/* Sticky. */
	CU_ASSERT_EQUAL(vm_state_put(&w, VM_STATE_NOTE, 0, "x", 1), -EMSGSIZE);
	vm_state_writer_free(&w);
	/* A header claiming a huge payload is refused before allocating. */
	struct vm_state_record_header h = { .type = VM_STATE_BEGIN, .length_bytes = 1ull << 40 };
	h.header_crc = vm_state_crc32c(0, &h, 20);
	struct vm_state_records records;
	char error[512];
	CU_ASSERT_EQUAL(read_stream((const uint8_t *)&h, sizeof(h), &records, error, sizeof(error)),
			-EPROTO);
	CU_ASSERT(strstr(error, "limit") != NULL);
}

/* ---- The directory --------------------------------------------------------------- */

#define TEST_RAM_BYTES (4u << 20)

static char test_root[256];

static void make_root(void)
{
	if (test_root[0])
		return;
	snprintf(test_root, sizeof(test_root), "%s/kapsel-state-test.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(test_root));
}

static uint8_t *test_memory(uint8_t seed)
{
	uint8_t *ram = calloc(1, TEST_RAM_BYTES);
	/* A few non-zero pages with holes between them. */
	for (unsigned page = 3; page < TEST_RAM_BYTES / 4096; page += 97)
		for (unsigned i = 0; i < 4096; i += 8)
			ram[page * 4096 + i] = (uint8_t)(seed + page + i);
	return ram;
}

/* Write a small saved state with memory ram and generation into path. */
static int write_test_dir(const char *path, const uint8_t *ram, uint64_t generation,
			  uint32_t extra_type, uint32_t extra_flags)
{
	struct vm_state_dir_txn txn;
	struct vm_state_manifest_file entry;
	char error[512];
	int err = vm_state_dir_begin(&txn, path, error, sizeof(error));
	if (err)
		return err;
	CU_ASSERT_EQUAL(vm_state_write_memory_file(txn.dirfd, VM_STATE_FILE_MEMORY, ram,
						   TEST_RAM_BYTES, -1, &entry),
			0);
	vm_state_dir_add(&txn, &entry);
	struct vm_state_writer w;
	vm_state_writer_init_buffer(&w);
	vm_state_put_begin(&w, VM_STATE_KIND_STATE);
	struct vm_state_vm_info info = { .memory_bytes = TEST_RAM_BYTES, .generation = generation };
	snprintf(info.name, sizeof(info.name), "unit");
	vm_state_put(&w, VM_STATE_VM_INFO, VM_STATE_RECORD_MANDATORY, &info, sizeof(info));
	struct vm_config definition;
	vm_config_init(&definition);
	snprintf(definition.name, sizeof(definition.name), "unit");
	definition.has_uuid = true;
	definition.memory_bytes = TEST_RAM_BYTES;
	definition.kernel_path = strdup("/nonexistent/k.elf");
	CU_ASSERT_EQUAL(snapshot_put_definition(&definition, &w, error, sizeof(error)), 0);
	vm_config_free(&definition);
	if (extra_type)
		vm_state_put(&w, extra_type, extra_flags, "new", 3);
	vm_state_put_end(&w);
	CU_ASSERT_EQUAL(vm_state_write_file(txn.dirfd, VM_STATE_FILE_STATE, w.buffer,
					    w.buffer_bytes, &entry),
			0);
	vm_state_dir_add(&txn, &entry);
	vm_state_writer_free(&w);
	return vm_state_dir_commit(&txn, error, sizeof(error));
}

static int open_test_dir(const char *path, bool check_memory, char *error, size_t error_len)
{
	struct vm_state_dir dir;
	int err = vm_state_dir_open(&dir, path, check_memory, error, error_len);
	if (!err)
		vm_state_dir_close(&dir);
	return err;
}

static void file_path(char *out, size_t len, const char *dir, const char *name)
{
	snprintf(out, len, "%s/%s", dir, name);
}

static void flip_byte(const char *path, off_t offset)
{
	int fd = open(path, O_RDWR);
	CU_ASSERT_FATAL(fd >= 0);
	uint8_t byte = 0;
	CU_ASSERT_EQUAL(pread(fd, &byte, 1, offset), 1);
	byte ^= 0x40;
	CU_ASSERT_EQUAL(pwrite(fd, &byte, 1, offset), 1);
	close(fd);
}

static void test_dir_round_trip(void)
{
	char path[512], error[512];
	make_root();
	snprintf(path, sizeof(path), "%s/rt", test_root);
	uint8_t *ram = test_memory(1);
	CU_ASSERT_EQUAL_FATAL(write_test_dir(path, ram, 7, 0, 0), 0);

	struct vm_state_dir dir;
	CU_ASSERT_EQUAL_FATAL(vm_state_dir_open(&dir, path, true, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(dir.info->generation, 7);
	CU_ASSERT_EQUAL(dir.info->memory_bytes, TEST_RAM_BYTES);
	const struct vm_state_manifest_file *mem = vm_state_dir_file(&dir, VM_STATE_FILE_MEMORY);
	CU_ASSERT_PTR_NOT_NULL_FATAL(mem);
	CU_ASSERT_EQUAL(mem->crc32c, reference_crc32c(ram, TEST_RAM_BYTES));
	unsigned data_pages = 0;
	for (unsigned page = 3; page < TEST_RAM_BYTES / 4096; page += 97)
		data_pages++;
	CU_ASSERT_EQUAL(mem->data_bytes, data_pages * 4096ull);

	/* Loaded back: same bytes, holes zeroed over garbage. */
	uint8_t *back = malloc(TEST_RAM_BYTES);
	memset(back, 0x5a, TEST_RAM_BYTES);
	CU_ASSERT_EQUAL(vm_state_load_flat_file(dir.dirfd, VM_STATE_FILE_MEMORY, back,
						TEST_RAM_BYTES, mem->crc32c, true, error,
						sizeof(error)),
			0);
	CU_ASSERT(memcmp(back, ram, TEST_RAM_BYTES) == 0);
	free(back);

	/* Sparse on disk: the holes take no blocks. */
	struct stat st;
	CU_ASSERT_EQUAL(fstatat(dir.dirfd, VM_STATE_FILE_MEMORY, &st, 0), 0);
	CU_ASSERT((uint64_t)st.st_blocks * 512 < TEST_RAM_BYTES / 4);

	/* The definition comes back. */
	struct vm_config config;
	vm_config_init(&config);
	CU_ASSERT_EQUAL(snapshot_config_from_records(&dir.state, &config, error, sizeof(error)), 0);
	CU_ASSERT_STRING_EQUAL(config.name, "unit");
	CU_ASSERT_EQUAL(config.memory_bytes, TEST_RAM_BYTES);
	CU_ASSERT_STRING_EQUAL(config.kernel_path, "/nonexistent/k.elf");
	vm_config_free(&config);
	vm_state_dir_close(&dir);
	free(ram);
}

/* The disk images a merge writes are the only other names a state
 * directory may hold (what a save replaces or removes). */
static void test_disk_file_names(void)
{
	const char *ours[] = { "disk0.kovl", "disk0.img", "disk7.kovl", "disk15.img" };
	for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
		CU_ASSERT(vm_state_is_disk_file_name(ours[i]));
	const char *others[] = {
		"disk.kovl",   "disk16.kovl", "disk01.kovl", "disk0.kovl.tmp", "disk0@x.kovl",
		"disk0.qcow2", "disk-1.img",  "Disk0.img",   "disk123.img",    "",
		"disk",	       "disk0"
	};
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		CU_ASSERT(!vm_state_is_disk_file_name(others[i]));
}

static void test_dir_replace_is_atomic(void)
{
	char path[512], temp[600], error[512];
	make_root();
	snprintf(path, sizeof(path), "%s/replace", test_root);
	uint8_t *first = test_memory(1), *second = test_memory(2);
	CU_ASSERT_EQUAL_FATAL(write_test_dir(path, first, 1, 0, 0), 0);
	CU_ASSERT_EQUAL_FATAL(write_test_dir(path, second, 2, 0, 0), 0);
	struct vm_state_dir dir;
	CU_ASSERT_EQUAL_FATAL(vm_state_dir_open(&dir, path, true, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(dir.info->generation, 2);
	vm_state_dir_close(&dir);
	snprintf(temp, sizeof(temp), "%s.new", path);
	CU_ASSERT_EQUAL(access(temp, F_OK), -1); /* the old one was removed */

	/* A save that dies before commit leaves the previous one intact. */
	struct vm_state_dir_txn txn;
	struct vm_state_manifest_file entry;
	CU_ASSERT_EQUAL_FATAL(vm_state_dir_begin(&txn, path, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(vm_state_write_memory_file(txn.dirfd, VM_STATE_FILE_MEMORY, first,
						   TEST_RAM_BYTES, -1, &entry),
			0);
	/* "crash": the process never gets to commit */
	close(txn.dirfd);
	free(txn.final_path);
	free(txn.temp_path);
	CU_ASSERT_EQUAL(access(temp, F_OK), 0);
	CU_ASSERT_EQUAL(vm_state_dir_open(&dir, path, true, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(dir.info->generation, 2);
	vm_state_dir_close(&dir);
	/* An unfinished directory itself is refused (no manifest). */
	CU_ASSERT_EQUAL(open_test_dir(temp, false, error, sizeof(error)), -EPROTO);
	CU_ASSERT(strstr(error, "no manifest") != NULL);
	/* The next save cleans it up. */
	CU_ASSERT_EQUAL(write_test_dir(path, first, 3, 0, 0), 0);
	CU_ASSERT_EQUAL(access(temp, F_OK), -1);
	/* A directory with other files is never replaced (nor emptied). */
	char foreign[600], keep[700];
	snprintf(foreign, sizeof(foreign), "%s/foreign", test_root);
	CU_ASSERT_EQUAL(mkdir(foreign, 0700), 0);
	snprintf(keep, sizeof(keep), "%s/precious.txt", foreign);
	int fd = open(keep, O_WRONLY | O_CREAT, 0600);
	CU_ASSERT(fd >= 0);
	close(fd);
	CU_ASSERT_EQUAL(write_test_dir(foreign, first, 1, 0, 0), -EEXIST);
	CU_ASSERT_EQUAL(access(keep, F_OK), 0);
	free(first);
	free(second);
}

static void test_dir_corruptions(void)
{
	char path[512], file[600], other[512], error[512];
	make_root();
	uint8_t *ram = test_memory(3);
	snprintf(other, sizeof(other), "%s/other", test_root);
	uint8_t *other_ram = test_memory(4);
	CU_ASSERT_EQUAL_FATAL(write_test_dir(other, other_ram, 1, 0, 0), 0);
	snprintf(path, sizeof(path), "%s/bad", test_root);

	/* Truncated memory file. */
	CU_ASSERT_EQUAL_FATAL(write_test_dir(path, ram, 1, 0, 0), 0);
	file_path(file, sizeof(file), path, VM_STATE_FILE_MEMORY);
	CU_ASSERT_EQUAL(truncate(file, TEST_RAM_BYTES - 4096), 0);
	CU_ASSERT_EQUAL(open_test_dir(path, false, error, sizeof(error)), -EPROTO);
	CU_ASSERT(strstr(error, "memory.img") && strstr(error, "truncated"));

	/* A flipped byte in memory: found by the checksum. */
	CU_ASSERT_EQUAL_FATAL(write_test_dir(path, ram, 1, 0, 0), 0);
	flip_byte(file, 3 * 4096 + 8);
	CU_ASSERT_EQUAL(open_test_dir(path, false, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(open_test_dir(path, true, error, sizeof(error)), -EPROTO);
	CU_ASSERT(strstr(error, "corrupt") != NULL);
	/* Also a flip inside a hole (a zero page that became non-zero). */
	CU_ASSERT_EQUAL_FATAL(write_test_dir(path, ram, 1, 0, 0), 0);
	flip_byte(file, 50 * 4096);
	CU_ASSERT_EQUAL(open_test_dir(path, true, error, sizeof(error)), -EPROTO);

	/* Every byte of state.bin flipped in turn. */
	CU_ASSERT_EQUAL_FATAL(write_test_dir(path, ram, 1, 0, 0), 0);
	file_path(file, sizeof(file), path, VM_STATE_FILE_STATE);
	struct stat st;
	CU_ASSERT_EQUAL_FATAL(stat(file, &st), 0);
	for (off_t at = 0; at < st.st_size; at++) {
		flip_byte(file, at);
		CU_ASSERT_EQUAL(open_test_dir(path, false, error, sizeof(error)), -EPROTO);
		flip_byte(file, at);
	}
	CU_ASSERT_EQUAL(open_test_dir(path, true, error, sizeof(error)), 0);

	/* Every byte of the manifest flipped in turn. */
	file_path(file, sizeof(file), path, VM_STATE_FILE_MANIFEST);
	CU_ASSERT_EQUAL_FATAL(stat(file, &st), 0);
	for (off_t at = 0; at < st.st_size; at++) {
		flip_byte(file, at);
		CU_ASSERT(open_test_dir(path, true, error, sizeof(error)) < 0);
		flip_byte(file, at);
	}
	/* Manifest truncated at every length. */
	uint8_t manifest[4096];
	int fd = open(file, O_RDONLY);
	ssize_t manifest_bytes = read(fd, manifest, sizeof(manifest));
	close(fd);
	CU_ASSERT_FATAL(manifest_bytes > 0);
	for (ssize_t cut = 0; cut < manifest_bytes; cut++) {
		CU_ASSERT_EQUAL(truncate(file, cut), 0);
		CU_ASSERT_EQUAL(open_test_dir(path, true, error, sizeof(error)), -EPROTO);
	}
	fd = open(file, O_WRONLY | O_TRUNC);
	CU_ASSERT_EQUAL(write(fd, manifest, (size_t)manifest_bytes), manifest_bytes);
	close(fd);
	CU_ASSERT_EQUAL(open_test_dir(path, true, error, sizeof(error)), 0);

	/* Files from another save (same size, other content) are mismatched. */
	char from[600];
	file_path(from, sizeof(from), other, VM_STATE_FILE_MEMORY);
	file_path(file, sizeof(file), path, VM_STATE_FILE_MEMORY);
	CU_ASSERT_EQUAL(rename(from, file), 0);
	CU_ASSERT_EQUAL(open_test_dir(path, true, error, sizeof(error)), -EPROTO);
	CU_ASSERT_EQUAL_FATAL(write_test_dir(path, ram, 1, 0, 0), 0);
	file_path(from, sizeof(from), other, VM_STATE_FILE_STATE);
	file_path(file, sizeof(file), path, VM_STATE_FILE_STATE);
	CU_ASSERT_EQUAL(rename(from, file), 0);
	CU_ASSERT_EQUAL(open_test_dir(path, false, error, sizeof(error)), -EPROTO);

	/* Missing files. */
	CU_ASSERT_EQUAL_FATAL(write_test_dir(path, ram, 1, 0, 0), 0);
	file_path(file, sizeof(file), path, VM_STATE_FILE_STATE);
	CU_ASSERT_EQUAL(unlink(file), 0);
	CU_ASSERT_EQUAL(open_test_dir(path, false, error, sizeof(error)), -EPROTO);
	CU_ASSERT(strstr(error, "missing") != NULL);
	CU_ASSERT_EQUAL(open_test_dir("/nonexistent/state", false, error, sizeof(error)), -ENOENT);

	free(ram);
	free(other_ram);
}

static void test_dir_unknown_records(void)
{
	char path[512], error[512];
	make_root();
	uint8_t *ram = test_memory(5);
	snprintf(path, sizeof(path), "%s/unknown", test_root);
	/* An optional record from a newer Kapsel is skipped ... */
	CU_ASSERT_EQUAL_FATAL(write_test_dir(path, ram, 1, 0x0777, 0), 0);
	CU_ASSERT_EQUAL(open_test_dir(path, true, error, sizeof(error)), 0);
	/* ... a mandatory one is refused. */
	CU_ASSERT_EQUAL_FATAL(write_test_dir(path, ram, 1, 0x0777, VM_STATE_RECORD_MANDATORY), 0);
	CU_ASSERT_EQUAL(open_test_dir(path, true, error, sizeof(error)), -EPROTO);
	CU_ASSERT(strstr(error, "0x777") && strstr(error, "mandatory"));
	free(ram);
}

/* Records with one definition record of type, in a stream of version. */
static void one_definition(struct vm_state_records *records, struct vm_state_stored_record *rec,
			   uint32_t type, uint32_t version, const char *payload)
{
	memset(records, 0, sizeof(*records));
	memset(rec, 0, sizeof(*rec));
	rec->type = type;
	rec->payload = (uint8_t *)payload;
	rec->length_bytes = strlen(payload);
	records->records = rec;
	records->count = 1;
	records->begin.format_version = version;
}

static void test_config_record_malformed(void)
{
	struct vm_state_records records;
	struct vm_state_stored_record rec;
	struct vm_config config;
	char error[512];
	const char *bad[] = {
		"name=x\nkernel=/k\nlifecycle=7 0 0\n", /* action out of range */
		"name=x\nkernel=/k\nuuid=12\n",		/* short uuid */
		"name=x\nnoequals\nkernel=/k\n",
		"name=x\nkernel=/k%zz\n", /* bad escape */
		"name=x\n",		  /* no kernel */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		one_definition(&records, &rec, VM_STATE_CONFIG_TEXT, 1, bad[i]);
		vm_config_init(&config);
		CU_ASSERT_EQUAL(snapshot_config_from_records(&records, &config, error,
							     sizeof(error)),
				-EPROTO);
		vm_config_free(&config);
	}
	const char *good = "name=a%2db\nkernel=/k\ncmdline=x%0ay\nfuture_key=1\n";
	one_definition(&records, &rec, VM_STATE_CONFIG_TEXT, 1, good);
	vm_config_init(&config);
	CU_ASSERT_EQUAL(snapshot_config_from_records(&records, &config, error, sizeof(error)), 0);
	CU_ASSERT_STRING_EQUAL(config.name, "a-b");
	CU_ASSERT_STRING_EQUAL(config.cmdline, "x\ny");
	vm_config_free(&config);

	/* The text record belongs to format 1: in a format-2 stream it is
	 * refused, whatever it says. */
	one_definition(&records, &rec, VM_STATE_CONFIG_TEXT, 2, good);
	vm_config_init(&config);
	CU_ASSERT_EQUAL(snapshot_config_from_records(&records, &config, error, sizeof(error)),
			-EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "format-1 text definition"));
	vm_config_free(&config);
}

/* A definition with every kind of device and every setting away from its
 * default: three vCPUs, three disks, a tap and a socket NIC, the rng. */
static void full_definition(struct vm_config *a)
{
	vm_config_init(a);
	snprintf(a->name, sizeof(a->name), "full-1");
	a->has_uuid = true;
	for (unsigned i = 0; i < 16; i++)
		a->uuid[i] = (uint8_t)(0xf0 - i * 7);
	a->memory_bytes = 96ull << 20;
	a->vcpus = 3;
	a->kernel_path = strdup("/srv/k/guest.elf");
	a->cmdline = strdup("x=<1> & y='2' z=\"3\"");
	a->on_poweroff = VM_ACTION_RESTART;
	a->on_reboot = VM_ACTION_DESTROY;
	a->on_crash = VM_ACTION_PRESERVE;
	a->console_mode = VM_CONSOLE_UART;
	a->console_output_path = strdup("/var/log/kapsel/full-1.log");
	a->disk_count = 3;
	a->disks[0] = (struct vm_disk_config){ .path = strdup("/img/root.img"),
					       .bus = VM_DISK_BUS_PV,
					       .cache = VM_DISK_CACHE_NONE,
					       .ops_limit = { 1000, 2000 },
					       .bytes_limit = { 1 << 20, 4 << 20 },
					       .poll = true,
					       .poll_us = 75 };
	a->disks[1] = (struct vm_disk_config){ .path = strdup("/img/data.img@9.kovl"),
					       .format = VM_DISK_FORMAT_OVERLAY,
					       .bus = VM_DISK_BUS_PV,
					       .readonly = true };
	a->disks[2] = (struct vm_disk_config){ .path = strdup("/img/legacy.img"),
					       .bus = VM_DISK_BUS_ATA,
					       .ops_limit = { 50, 0 } };
	a->net_count = 3;
	a->nets[0] = (struct vm_net_config){ .model = VM_NET_MODEL_PV,
					     .backend = VM_NET_BACKEND_SOCKET,
					     .path = strdup("/run/k/a.sock"),
					     .peer = strdup("/run/k/b.sock"),
					     .frames_limit = { 100, 200 } };
	a->nets[1] = (struct vm_net_config){ .model = VM_NET_MODEL_PV,
					     .backend = VM_NET_BACKEND_TAP,
					     .path = strdup("ktap0"),
					     .has_mac = true,
					     .mac = { 0x52, 0x54, 0, 1, 2, 3 },
					     .bytes_limit = { 1000000, 0 } };
	a->nets[2] = (struct vm_net_config){ .model = VM_NET_MODEL_NE2000,
					     .backend = VM_NET_BACKEND_SOCKET,
					     .path = strdup("/run/k/c.sock"),
					     .peer = strdup("/run/k/d.sock"),
					     .has_mac = true,
					     .mac = { 0x02, 0, 0, 0, 0, 9 } };
	a->rng = (struct vm_rng_config){ .enabled = true,
					 .requests_limit = { 7, 9 },
					 .bytes_limit = { 3000, 700 } };
}

static void assert_same_definition(const struct vm_config *a, const struct vm_config *b)
{
	CU_ASSERT_STRING_EQUAL(b->name, a->name);
	CU_ASSERT(b->has_uuid);
	CU_ASSERT_EQUAL(memcmp(b->uuid, a->uuid, 16), 0);
	CU_ASSERT_EQUAL(b->memory_bytes, a->memory_bytes);
	CU_ASSERT_EQUAL(b->vcpus, a->vcpus);
	CU_ASSERT_STRING_EQUAL(b->kernel_path, a->kernel_path);
	CU_ASSERT_STRING_EQUAL(b->cmdline, a->cmdline);
	CU_ASSERT_EQUAL(b->on_poweroff, a->on_poweroff);
	CU_ASSERT_EQUAL(b->on_reboot, a->on_reboot);
	CU_ASSERT_EQUAL(b->on_crash, a->on_crash);
	CU_ASSERT_EQUAL(b->console_mode, a->console_mode);
	CU_ASSERT_EQUAL_FATAL(b->disk_count, a->disk_count);
	for (unsigned i = 0; i < a->disk_count; i++) {
		const struct vm_disk_config *x = &a->disks[i], *y = &b->disks[i];
		CU_ASSERT_STRING_EQUAL(y->path, x->path);
		CU_ASSERT_EQUAL(y->format, x->format);
		CU_ASSERT_EQUAL(y->bus, x->bus);
		CU_ASSERT_EQUAL(y->cache, x->cache);
		CU_ASSERT_EQUAL(y->readonly, x->readonly);
		CU_ASSERT_EQUAL(y->poll, x->poll);
		CU_ASSERT_EQUAL(y->poll_us, x->poll_us);
		CU_ASSERT_EQUAL(y->ops_limit.rate_per_second, x->ops_limit.rate_per_second);
		CU_ASSERT_EQUAL(y->ops_limit.burst, x->ops_limit.burst);
		CU_ASSERT_EQUAL(y->bytes_limit.rate_per_second, x->bytes_limit.rate_per_second);
		CU_ASSERT_EQUAL(y->bytes_limit.burst, x->bytes_limit.burst);
	}
	CU_ASSERT_EQUAL_FATAL(b->net_count, a->net_count);
	for (unsigned i = 0; i < a->net_count; i++) {
		const struct vm_net_config *x = &a->nets[i], *y = &b->nets[i];
		CU_ASSERT_EQUAL(y->model, x->model);
		CU_ASSERT_EQUAL(y->backend, x->backend);
		CU_ASSERT_STRING_EQUAL(y->path, x->path);
		if (x->peer)
			CU_ASSERT_STRING_EQUAL(y->peer, x->peer);
		CU_ASSERT_PTR_EQUAL(y->peer == NULL, x->peer == NULL);
		CU_ASSERT_EQUAL(y->has_mac, x->has_mac);
		CU_ASSERT_EQUAL(memcmp(y->mac, x->mac, 6), 0);
		CU_ASSERT_EQUAL(y->frames_limit.rate_per_second, x->frames_limit.rate_per_second);
		CU_ASSERT_EQUAL(y->frames_limit.burst, x->frames_limit.burst);
		CU_ASSERT_EQUAL(y->bytes_limit.rate_per_second, x->bytes_limit.rate_per_second);
		CU_ASSERT_EQUAL(y->bytes_limit.burst, x->bytes_limit.burst);
	}
	CU_ASSERT_EQUAL(b->rng.enabled, a->rng.enabled);
	CU_ASSERT_EQUAL(b->rng.requests_limit.rate_per_second,
			a->rng.requests_limit.rate_per_second);
	CU_ASSERT_EQUAL(b->rng.requests_limit.burst, a->rng.requests_limit.burst);
	CU_ASSERT_EQUAL(b->rng.bytes_limit.rate_per_second, a->rng.bytes_limit.rate_per_second);
	CU_ASSERT_EQUAL(b->rng.bytes_limit.burst, a->rng.bytes_limit.burst);
}

static void test_definition_round_trip(void)
{
	struct vm_config a, b;
	char error[512];
	full_definition(&a);
	struct vm_state_writer w;
	vm_state_writer_init_buffer(&w);
	vm_state_put_begin(&w, VM_STATE_KIND_STATE);
	CU_ASSERT_EQUAL_FATAL(snapshot_put_definition(&a, &w, error, sizeof(error)), 0);
	vm_state_put_end(&w);
	CU_ASSERT_EQUAL_FATAL(w.error, 0);

	struct vm_state_records records;
	CU_ASSERT_EQUAL_FATAL(read_stream(w.buffer, w.buffer_bytes, &records, error, sizeof(error)),
			      0);
	const struct vm_state_stored_record *rec =
		vm_state_find(&records, VM_STATE_DEFINITION, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
	CU_ASSERT(rec->flags & VM_STATE_RECORD_MANDATORY);
	/* The record is the domain XML kapsel dumpxml writes, with the
	 * Kapsel namespace for what libvirt lacks. */
	char *xml = strndup((const char *)rec->payload, (size_t)rec->length_bytes);
	CU_ASSERT_PTR_NOT_NULL(strstr(xml, "<domain type='kvm'>"));
	CU_ASSERT_PTR_NOT_NULL(strstr(xml, "xmlns:kapsel='" VM_CONFIG_XML_NAMESPACE "'"));
	CU_ASSERT_PTR_NOT_NULL(strstr(xml, "<kapsel:interface index='0' socket='/run/k/a.sock'"));
	CU_ASSERT_PTR_NOT_NULL(strstr(xml, "<kapsel:rng iops='7'"));
	CU_ASSERT_PTR_NOT_NULL(strstr(xml, "<target dev='ktap0'/>"));
	/* A state never names a console file: the restorer chooses its own. */
	CU_ASSERT_PTR_NULL(strstr(xml, "full-1.log"));
	free(xml);

	vm_config_init(&b);
	CU_ASSERT_EQUAL_FATAL(snapshot_config_from_records(&records, &b, error, sizeof(error)), 0);
	assert_same_definition(&a, &b);
	CU_ASSERT_PTR_NULL(b.console_output_path);
	vm_config_free(&b);

	/* The same XML through --xml's path (a file) gives the same, plus the
	 * console file the dump form keeps. */
	char path[512];
	make_root();
	snprintf(path, sizeof(path), "%s/full.xml", test_root);
	FILE *out = fopen(path, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(out);
	CU_ASSERT_EQUAL(vm_config_write_xml(&a, out, error, sizeof(error)), 0);
	fclose(out);
	vm_config_init(&b);
	CU_ASSERT_EQUAL_FATAL(vm_config_load_xml(path, &b, error, sizeof(error)), 0);
	assert_same_definition(&a, &b);
	CU_ASSERT_STRING_EQUAL(b.console_output_path, a.console_output_path);
	vm_config_free(&b);

	vm_state_records_free(&records);
	vm_state_writer_free(&w);
	vm_config_free(&a);
}

/* The format-1 definition record, laid out as Kapsel 1 wrote it
 * (config_to_text in snapshot.c before format 2): key=value lines, '%'
 * and control characters as %XX, enums as positional numbers. */
static const char format1_definition[] = "name=old-vm\n"
					 "uuid=00112233445566778899aabbccddeeff\n"
					 "memory_bytes=4194304\n"
					 "vcpus=1\n"
					 "kernel=/srv/old/k.elf\n"
					 "cmdline=quiet a%3db%25\n"
					 "lifecycle=1 0 2\n"
					 "console_mode=1\n"
					 "disk=/srv/old/root.img\n"
					 "disk_options=0 0 1 1 40\n"
					 "disk_format=raw\n"
					 "disk_limits=100 200 0 0\n"
					 "disk=/srv/old/ide.img@5.kovl\n"
					 "disk_options=1 1 0 0 0\n"
					 "disk_format=overlay\n"
					 "disk_limits=0 0 4096 8192\n"
					 "rng_limits=5 6 7 8\n";

static void test_definition_format1(void)
{
	char path[512], error[512];
	make_root();
	snprintf(path, sizeof(path), "%s/format1", test_root);
	uint8_t *ram = test_memory(9);

	/* A whole format-1 state directory, as Kapsel 1 wrote it. */
	struct vm_state_dir_txn txn;
	struct vm_state_manifest_file entry;
	CU_ASSERT_EQUAL_FATAL(vm_state_dir_begin(&txn, path, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(vm_state_write_memory_file(txn.dirfd, VM_STATE_FILE_MEMORY, ram,
						   TEST_RAM_BYTES, -1, &entry),
			0);
	vm_state_dir_add(&txn, &entry);
	struct vm_state_writer w;
	struct vm_state_begin begin = { .format_version = 1, .kind = VM_STATE_KIND_STATE };
	memcpy(begin.magic, VM_STATE_MAGIC, 8);
	vm_state_writer_init_buffer(&w);
	vm_state_put(&w, VM_STATE_BEGIN, VM_STATE_RECORD_MANDATORY, &begin, sizeof(begin));
	struct vm_state_vm_info info = { .memory_bytes = TEST_RAM_BYTES, .generation = 3 };
	snprintf(info.name, sizeof(info.name), "old-vm");
	vm_state_put(&w, VM_STATE_VM_INFO, VM_STATE_RECORD_MANDATORY, &info, sizeof(info));
	vm_state_put(&w, VM_STATE_CONFIG_TEXT, VM_STATE_RECORD_MANDATORY, format1_definition,
		     sizeof(format1_definition) - 1);
	vm_state_put_end(&w);
	CU_ASSERT_EQUAL(vm_state_write_file(txn.dirfd, VM_STATE_FILE_STATE, w.buffer,
					    w.buffer_bytes, &entry),
			0);
	vm_state_dir_add(&txn, &entry);
	vm_state_writer_free(&w);
	CU_ASSERT_EQUAL_FATAL(vm_state_dir_commit(&txn, error, sizeof(error)), 0);

	struct vm_state_dir dir;
	CU_ASSERT_EQUAL_FATAL(vm_state_dir_open(&dir, path, true, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(dir.state.begin.format_version, 1);
	struct vm_config c;
	vm_config_init(&c);
	CU_ASSERT_EQUAL_FATAL(snapshot_config_from_records(&dir.state, &c, error, sizeof(error)),
			      0);
	CU_ASSERT_STRING_EQUAL(c.name, "old-vm");
	CU_ASSERT(c.has_uuid);
	CU_ASSERT_EQUAL(c.uuid[0], 0x00);
	CU_ASSERT_EQUAL(c.uuid[15], 0xff);
	CU_ASSERT_EQUAL(c.memory_bytes, TEST_RAM_BYTES);
	CU_ASSERT_STRING_EQUAL(c.kernel_path, "/srv/old/k.elf");
	CU_ASSERT_STRING_EQUAL(c.cmdline, "quiet a=b%");
	CU_ASSERT_EQUAL(c.on_poweroff, VM_ACTION_RESTART);
	CU_ASSERT_EQUAL(c.on_reboot, VM_ACTION_DESTROY);
	CU_ASSERT_EQUAL(c.on_crash, VM_ACTION_PRESERVE);
	CU_ASSERT_EQUAL(c.console_mode, VM_CONSOLE_UART);
	CU_ASSERT_EQUAL_FATAL(c.disk_count, 2);
	CU_ASSERT_STRING_EQUAL(c.disks[0].path, "/srv/old/root.img");
	CU_ASSERT_EQUAL(c.disks[0].bus, VM_DISK_BUS_PV);
	CU_ASSERT_EQUAL(c.disks[0].cache, VM_DISK_CACHE_NONE);
	CU_ASSERT(c.disks[0].poll);
	CU_ASSERT_EQUAL(c.disks[0].poll_us, 40);
	CU_ASSERT_EQUAL(c.disks[0].ops_limit.rate_per_second, 100);
	CU_ASSERT_EQUAL(c.disks[0].ops_limit.burst, 200);
	CU_ASSERT_EQUAL(c.disks[1].format, VM_DISK_FORMAT_OVERLAY);
	CU_ASSERT(c.disks[1].readonly);
	CU_ASSERT_EQUAL(c.disks[1].bus, VM_DISK_BUS_ATA);
	CU_ASSERT_EQUAL(c.disks[1].bytes_limit.rate_per_second, 4096);
	CU_ASSERT_EQUAL(c.disks[1].bytes_limit.burst, 8192);
	CU_ASSERT(c.rng.enabled);
	CU_ASSERT_EQUAL(c.rng.requests_limit.rate_per_second, 5);
	CU_ASSERT_EQUAL(c.rng.bytes_limit.burst, 8);
	CU_ASSERT_EQUAL(c.net_count, 0); /* format 1 had no interfaces */

	/* Saved again, it is format 2 and gives the same definition. */
	vm_state_writer_init_buffer(&w);
	vm_state_put_begin(&w, VM_STATE_KIND_STATE);
	CU_ASSERT_EQUAL(snapshot_put_definition(&c, &w, error, sizeof(error)), 0);
	vm_state_put_end(&w);
	struct vm_state_records again;
	CU_ASSERT_EQUAL_FATAL(read_stream(w.buffer, w.buffer_bytes, &again, error, sizeof(error)),
			      0);
	CU_ASSERT_EQUAL(again.begin.format_version, VM_STATE_FORMAT_VERSION);
	CU_ASSERT_PTR_NULL(vm_state_find(&again, VM_STATE_CONFIG_TEXT, NULL));
	struct vm_config d;
	vm_config_init(&d);
	CU_ASSERT_EQUAL(snapshot_config_from_records(&again, &d, error, sizeof(error)), 0);
	assert_same_definition(&c, &d);
	vm_config_free(&d);
	vm_state_records_free(&again);
	vm_state_writer_free(&w);

	vm_config_free(&c);
	vm_state_dir_close(&dir);
	free(ram);
}

static void cleanup(void)
{
	if (test_root[0]) {
		char command[600];
		snprintf(command, sizeof(command), "rm -rf '%s'", test_root);
		CU_ASSERT_EQUAL(system(command), 0);
	}
}

/* The background check of a lazy restore reads an open memory.img: it
 * passes on the saved content, names the file when a byte changed, and
 * stops when told to. */
static void test_memory_file_check(void)
{
	make_root();
	char path[300];
	snprintf(path, sizeof(path), "%s/check", test_root);
	CU_ASSERT_EQUAL_FATAL(mkdir(path, 0700), 0);
	int dirfd = open(path, O_RDONLY | O_DIRECTORY);
	CU_ASSERT_FATAL(dirfd >= 0);
	uint8_t *ram = test_memory(7);
	struct vm_state_manifest_file entry;
	CU_ASSERT_EQUAL_FATAL(vm_state_write_memory_file(dirfd, VM_STATE_FILE_MEMORY, ram,
							 TEST_RAM_BYTES, -1, &entry),
			      0);
	int fd = openat(dirfd, VM_STATE_FILE_MEMORY, O_RDWR);
	CU_ASSERT_FATAL(fd >= 0);
	char error[512] = "";
	CU_ASSERT_EQUAL(vm_state_check_flat_fd(fd, VM_STATE_FILE_MEMORY, TEST_RAM_BYTES,
					       entry.crc32c, NULL, error, sizeof(error)),
			0);
	int cancel = 1;
	CU_ASSERT_EQUAL(vm_state_check_flat_fd(fd, VM_STATE_FILE_MEMORY, TEST_RAM_BYTES,
					       entry.crc32c, &cancel, error, sizeof(error)),
			-ECANCELED);
	CU_ASSERT_EQUAL(vm_state_check_flat_fd(fd, VM_STATE_FILE_MEMORY, TEST_RAM_BYTES + 4096,
					       entry.crc32c, NULL, error, sizeof(error)),
			-EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "memory.img is 4194304 bytes"));
	/* One byte of a data page changes: found, and the file is named. */
	uint8_t byte = (uint8_t)~ram[100 * 4096 + 8];
	CU_ASSERT_EQUAL_FATAL(pwrite(fd, &byte, 1, 100 * 4096 + 8), 1);
	CU_ASSERT_EQUAL(vm_state_check_flat_fd(fd, VM_STATE_FILE_MEMORY, TEST_RAM_BYTES,
					       entry.crc32c, NULL, error, sizeof(error)),
			-EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "memory.img is corrupt"));
	close(fd);
	close(dirfd);
	free(ram);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "crc32c", test_crc32c },
		{ "round_trip", test_round_trip },
		{ "truncated_everywhere", test_truncated_everywhere },
		{ "flipped_bytes", test_flipped_bytes },
		{ "garbage_after_end", test_garbage_after_end },
		{ "wrong_version_kind_magic", test_wrong_version_kind_magic },
		{ "unknown_records", test_unknown_records },
		{ "oversize_record_refused", test_oversize_record_refused },
		{ "dir_round_trip", test_dir_round_trip },
		{ "disk_file_names", test_disk_file_names },
		{ "dir_replace_is_atomic", test_dir_replace_is_atomic },
		{ "dir_corruptions", test_dir_corruptions },
		{ "dir_unknown_records", test_dir_unknown_records },
		{ "config_record_malformed", test_config_record_malformed },
		{ "definition_round_trip", test_definition_round_trip },
		{ "definition_format1", test_definition_format1 },
		{ "memory_file_check", test_memory_file_check },
		{ "cleanup", cleanup },
	};
	return UNIT_RUN("vm_state", tests);
}
