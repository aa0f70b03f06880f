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
	CU_ASSERT(strstr(error, "format version 2") != NULL);
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
	const char config[] = "name=unit\nmemory_bytes=4194304\nkernel=/nonexistent/k.elf\n";
	vm_state_put(&w, VM_STATE_CONFIG, VM_STATE_RECORD_MANDATORY, config, sizeof(config) - 1);
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

static void test_config_record_malformed(void)
{
	struct vm_state_records records = { 0 };
	struct vm_state_stored_record rec = { .type = VM_STATE_CONFIG };
	struct vm_config config;
	char error[512];
	const char *bad[] = {
		"name=x\nkernel=/k\nlifecycle=7 0 0\n", /* action out of range */
		"name=x\nkernel=/k\nuuid=12\n",		/* short uuid */
		"name=x\nnoequals\nkernel=/k\n",
		"name=x\nkernel=/k%zz\n", /* bad escape */
		"name=x\n",		  /* no kernel */
	};
	records.records = &rec;
	records.count = 1;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		rec.payload = (uint8_t *)bad[i];
		rec.length_bytes = strlen(bad[i]);
		vm_config_init(&config);
		CU_ASSERT_EQUAL(snapshot_config_from_records(&records, &config, error,
							     sizeof(error)),
				-EPROTO);
		vm_config_free(&config);
	}
	const char *good = "name=a%2db\nkernel=/k\ncmdline=x%0ay\nfuture_key=1\n";
	rec.payload = (uint8_t *)good;
	rec.length_bytes = strlen(good);
	vm_config_init(&config);
	CU_ASSERT_EQUAL(snapshot_config_from_records(&records, &config, error, sizeof(error)), 0);
	CU_ASSERT_STRING_EQUAL(config.name, "a-b");
	CU_ASSERT_STRING_EQUAL(config.cmdline, "x\ny");
	vm_config_free(&config);
}

static void cleanup(void)
{
	if (test_root[0]) {
		char command[600];
		snprintf(command, sizeof(command), "rm -rf '%s'", test_root);
		CU_ASSERT_EQUAL(system(command), 0);
	}
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
		{ "dir_replace_is_atomic", test_dir_replace_is_atomic },
		{ "dir_corruptions", test_dir_corruptions },
		{ "dir_unknown_records", test_dir_unknown_records },
		{ "config_record_malformed", test_config_record_malformed },
		{ "cleanup", cleanup },
	};
	return UNIT_RUN("vm_state", tests);
}
