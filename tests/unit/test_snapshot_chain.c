/* Unit tests of diff-snapshot chains: parent records parsed and refused when forged, chains opened, layered and merged (disks flattened too), every broken link refused with a clear error. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cunit_main.h"
#include "config/config.h"
#include "core/guest_memory.h"
#include "devices/block/disk.h"
#include "devices/block/disk_overlay.h"
#include "state/snapshot.h"
#include "state/snapshot_chain.h"
#include "state/vm_state.h"

#define RAM_BYTES (4u << 20) /* the least a definition may say */
#define PAGES (RAM_BYTES / 4096u)

static char root[256];

static void make_root(void)
{
	if (root[0])
		return;
	snprintf(root, sizeof(root), "%s/kapsel-chain-test.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(root));
}

static void fill_page(uint8_t *ram, unsigned page, uint8_t seed)
{
	for (unsigned i = 0; i < 4096; i++)
		ram[page * 4096 + i] = (uint8_t)(seed + page * 3 + i);
}

/* How a test state is written; zero fields are the honest values. */
struct layer {
	const char *name;	    /* directory under root */
	const uint8_t *ram;	    /* the whole memory this state stands for */
	uint8_t id[16];		    /* its save.info id */
	const struct layer *parent; /* NULL: a full state */
	const uint8_t *present;	    /* diff: pages it holds (NULL: those differing from parent) */
	/* Forgeries. */
	const char *parent_name; /* instead of parent->name */
	int parent_id_flip;	 /* flip a byte of the recorded parent id */
	int depth_delta;	 /* added to the honest depth */
	int memory_crc_flip;	 /* flip a bit of the recorded layered CRC */
	int pages_delta;	 /* added to the page count */
	int two_parents;	 /* write the parent record twice */
	uint32_t name_bytes_override;
	/* A disk 0 (PV) whose record names this image with these flags. */
	const char *disk_path;
	uint32_t disk_flags;
	uint32_t depth; /* filled: 0 full, 1.. diff */
};

static uint32_t crc_of(const uint8_t *data, size_t n)
{
	return vm_state_crc32c(0, data, n);
}

static int write_layer(struct layer *l, uint8_t *present_out)
{
	char path[512], error[512];
	snprintf(path, sizeof(path), "%s/%s", root, l->name);
	struct vm_state_dir_txn txn;
	struct vm_state_manifest_file entry;
	int err = vm_state_dir_begin(&txn, path, error, sizeof(error));
	if (err)
		return err;
	uint8_t present[PAGES / 8] = { 0 };
	uint8_t *file = calloc(1, RAM_BYTES);
	uint64_t pages = 0;
	if (l->parent) {
		for (unsigned p = 0; p < PAGES; p++) {
			bool take = l->present ? (l->present[p / 8] >> (p % 8) & 1)
					       : memcmp(l->ram + p * 4096,
							l->parent->ram + p * 4096, 4096) != 0;
			if (take) {
				present[p / 8] |= (uint8_t)(1u << (p % 8));
				memcpy(file + p * 4096, l->ram + p * 4096, 4096);
				pages++;
			}
		}
	} else {
		memcpy(file, l->ram, RAM_BYTES);
	}
	if (present_out)
		memcpy(present_out, present, sizeof(present));
	CU_ASSERT_EQUAL(vm_state_write_memory_file(txn.dirfd, VM_STATE_FILE_MEMORY, file, RAM_BYTES,
						   -1, &entry),
			0);
	vm_state_dir_add(&txn, &entry);
	free(file);
	if (l->parent) {
		CU_ASSERT_EQUAL(vm_state_write_file(txn.dirfd, VM_STATE_FILE_MEMORY_MAP, present,
						    sizeof(present), &entry),
				0);
		vm_state_dir_add(&txn, &entry);
	}
	struct vm_state_writer w;
	vm_state_writer_init_buffer(&w);
	vm_state_put_begin(&w, VM_STATE_KIND_STATE);
	struct vm_state_vm_info info = { .memory_bytes = RAM_BYTES, .generation = 1 };
	snprintf(info.name, sizeof(info.name), "chain");
	vm_state_put(&w, VM_STATE_VM_INFO, VM_STATE_RECORD_MANDATORY, &info, sizeof(info));
	struct vm_config definition;
	vm_config_init(&definition);
	snprintf(definition.name, sizeof(definition.name), "chain");
	definition.has_uuid = true;
	definition.memory_bytes = RAM_BYTES;
	definition.kernel_path = strdup("/nonexistent/k.elf");
	if (l->disk_path) {
		definition.disk_count = 1;
		definition.disks[0].path = strdup(l->disk_path);
		definition.disks[0].format = (l->disk_flags & VM_STATE_DISK_OVERLAY)
						     ? VM_DISK_FORMAT_OVERLAY
						     : VM_DISK_FORMAT_RAW;
	}
	CU_ASSERT_EQUAL(snapshot_put_definition(&definition, &w, error, sizeof(error)), 0);
	vm_config_free(&definition);
	if (l->disk_path) {
		struct vm_state_disk disk = { .index = 0,
					      .bus = VM_DISK_BUS_PV,
					      .flags = l->disk_flags,
					      .path_bytes = (uint32_t)strlen(l->disk_path) };
		struct stat st;
		if (stat(l->disk_path, &st) == 0) {
			disk.size_bytes = (uint64_t)st.st_size;
			disk.mtime_ns =
				(int64_t)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
		}
		struct iovec iov[2] = { { &disk, sizeof(disk) },
					{ (void *)l->disk_path, disk.path_bytes } };
		vm_state_putv(&w, VM_STATE_DISK, VM_STATE_RECORD_MANDATORY, iov, 2);
	}
	struct vm_state_save_info save = { .flags = VM_STATE_SAVE_LIVE };
	memcpy(save.state_id, l->id, 16);
	vm_state_put(&w, VM_STATE_SAVE_INFO, 0, &save, sizeof(save));
	l->depth = 0;
	if (l->parent) {
		const char *name = l->parent_name ? l->parent_name : l->parent->name;
		l->depth = l->parent->depth + 1;
		struct vm_state_parent rec = {
			.parent_memory_crc = crc_of(l->parent->ram, RAM_BYTES),
			.memory_crc = crc_of(l->ram, RAM_BYTES) ^ (uint32_t)l->memory_crc_flip,
			.depth = (uint32_t)((int)l->depth + l->depth_delta),
			.name_bytes = l->name_bytes_override ? l->name_bytes_override
							     : (uint32_t)strlen(name),
			.pages = (uint64_t)((int64_t)pages + l->pages_delta),
		};
		memcpy(rec.parent_id, l->parent->id, 16);
		rec.parent_id[3] ^= (uint8_t)l->parent_id_flip;
		struct iovec iov[2] = { { &rec, sizeof(rec) }, { (void *)name, strlen(name) } };
		for (int i = 0; i <= l->two_parents; i++)
			vm_state_putv(&w, VM_STATE_PARENT, VM_STATE_RECORD_MANDATORY, iov, 2);
	}
	vm_state_put_end(&w);
	CU_ASSERT_EQUAL(vm_state_write_file(txn.dirfd, VM_STATE_FILE_STATE, w.buffer,
					    w.buffer_bytes, &entry),
			0);
	vm_state_dir_add(&txn, &entry);
	vm_state_writer_free(&w);
	return vm_state_dir_commit(&txn, error, sizeof(error));
}

/* Open name's chain and layer it; 0 and ram filled, or -errno with error. */
static int layer_chain(const char *name, uint8_t *ram, char *error, size_t error_len)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", root, name);
	struct vm_state_dir dir;
	int err = vm_state_dir_open(&dir, path, true, error, error_len);
	if (err)
		return err;
	struct snapshot_chain chain;
	err = snapshot_chain_open(&dir, &chain, error, error_len);
	if (!err) {
		struct guest_memory mem = { .memfd = -1,
					    .host_base = ram,
					    .size_bytes = RAM_BYTES };
		memset(ram, 0, RAM_BYTES);
		err = snapshot_chain_load_memory(&chain, &mem, error, error_len);
		snapshot_chain_close(&chain);
	}
	vm_state_dir_close(&dir);
	return err;
}

static uint8_t base_ram[RAM_BYTES], d1_ram[RAM_BYTES], d2_ram[RAM_BYTES];
static struct layer base = { .name = "base", .ram = base_ram, .id = { 1 } };
static struct layer d1 = { .name = "d1", .ram = d1_ram, .id = { 2 }, .parent = &base };
static struct layer d2 = { .name = "d2", .ram = d2_ram, .id = { 3 }, .parent = &d1 };

static void make_chain(void)
{
	make_root();
	for (unsigned p = 0; p < PAGES; p += 3)
		fill_page(base_ram, p, 1);
	memcpy(d1_ram, base_ram, RAM_BYTES);
	fill_page(d1_ram, 4, 2);	    /* a hole gets data */
	fill_page(d1_ram, 6, 2);	    /* data changes */
	memset(d1_ram + 9 * 4096, 0, 4096); /* data becomes zero */
	memcpy(d2_ram, d1_ram, RAM_BYTES);
	fill_page(d2_ram, 6, 3);
	fill_page(d2_ram, PAGES - 1, 3);
	CU_ASSERT_EQUAL_FATAL(write_layer(&base, NULL), 0);
	uint8_t present[PAGES / 8];
	CU_ASSERT_EQUAL_FATAL(write_layer(&d1, present), 0);
	CU_ASSERT_EQUAL(present[0], (1u << 4) | (1u << 6)); /* pages 4 and 6 */
	CU_ASSERT_EQUAL(present[1], 1u << 1);		    /* page 9 */
	CU_ASSERT_EQUAL_FATAL(write_layer(&d2, NULL), 0);
}

static void test_chain_layers_and_merges(void)
{
	char error[1024];
	make_chain();
	uint8_t *ram = malloc(RAM_BYTES);
	CU_ASSERT_EQUAL(layer_chain("d2", ram, error, sizeof(error)), 0);
	CU_ASSERT(memcmp(ram, d2_ram, RAM_BYTES) == 0);
	CU_ASSERT_EQUAL(layer_chain("d1", ram, error, sizeof(error)), 0);
	CU_ASSERT(memcmp(ram, d1_ram, RAM_BYTES) == 0);
	CU_ASSERT_EQUAL(layer_chain("base", ram, error, sizeof(error)), 0); /* a chain of one */
	CU_ASSERT(memcmp(ram, base_ram, RAM_BYTES) == 0);

	/* Merged: one full state with the same memory and no parent. */
	char d2_path[512], merged[512];
	snprintf(d2_path, sizeof(d2_path), "%s/d2", root);
	snprintf(merged, sizeof(merged), "%s/merged", root);
	struct snapshot_merge_stats stats;
	int merged_err = snapshot_chain_merge(d2_path, merged, NULL, &stats, error, sizeof(error));
	if (merged_err)
		fprintf(stderr, "\n  merge: %s\n", error);
	CU_ASSERT_EQUAL_FATAL(merged_err, 0);
	CU_ASSERT_EQUAL(stats.layers, 3);
	struct vm_state_dir dir;
	CU_ASSERT_EQUAL_FATAL(vm_state_dir_open(&dir, merged, true, error, sizeof(error)), 0);
	CU_ASSERT_PTR_NULL(vm_state_find(&dir.state, VM_STATE_PARENT, NULL));
	CU_ASSERT_PTR_NULL(vm_state_dir_file(&dir, VM_STATE_FILE_MEMORY_MAP));
	CU_ASSERT_EQUAL(vm_state_dir_file(&dir, VM_STATE_FILE_MEMORY)->crc32c,
			crc_of(d2_ram, RAM_BYTES));
	vm_state_dir_close(&dir);
	CU_ASSERT_EQUAL(layer_chain("merged", ram, error, sizeof(error)), 0);
	CU_ASSERT(memcmp(ram, d2_ram, RAM_BYTES) == 0);
	free(ram);
}

/* Write a forged diff over d1 as "forged" and expect layering it to fail
 * with text in the message. */
static void expect_forged(struct layer *forged, const char *text)
{
	char error[1024] = "";
	forged->name = "forged";
	forged->ram = d2_ram;
	forged->id[0] = 9;
	if (!forged->parent)
		forged->parent = &d1;
	CU_ASSERT_EQUAL_FATAL(write_layer(forged, NULL), 0);
	uint8_t *ram = malloc(RAM_BYTES);
	int err = layer_chain("forged", ram, error, sizeof(error));
	CU_ASSERT(err < 0);
	if (!strstr(error, text))
		fprintf(stderr, "\n  expected '%s' in: %s\n", text, error);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, text));
	free(ram);
}

static void test_forged_links_refused(void)
{
	make_chain();
	/* The parent reference never names a path. */
	expect_forged(&(struct layer){ .parent_name = "../base" }, "not a plain directory name");
	expect_forged(&(struct layer){ .parent_name = "/etc" }, "not a plain directory name");
	expect_forged(&(struct layer){ .parent_name = ".hidden" }, "not a plain directory name");
	expect_forged(&(struct layer){ .parent_name = "missing" }, "is missing");
	expect_forged(&(struct layer){ .two_parents = 1 }, "more than one parent");
	expect_forged(&(struct layer){ .name_bytes_override = 300 }, "malformed");
	/* The parent must be the state the diff was taken over. */
	expect_forged(&(struct layer){ .parent_id_flip = 0x10 }, "its id");
	expect_forged(&(struct layer){ .parent = &base, .parent_name = "d1" }, "its id");
	expect_forged(&(struct layer){ .depth_delta = 1 }, "its child expects");
	expect_forged(&(struct layer){ .depth_delta = 100 }, "at most 64");
	/* The content must add up. */
	expect_forged(&(struct layer){ .memory_crc_flip = 1 }, "layered memory's CRC32C");
	expect_forged(&(struct layer){ .pages_delta = 1 }, "disagree on the page count");
	/* A symlink next to the diff is not followed. */
	char link[512], target[512];
	snprintf(link, sizeof(link), "%s/viaLink", root);
	snprintf(target, sizeof(target), "%s/d1", root);
	CU_ASSERT_EQUAL(symlink(target, link), 0);
	expect_forged(&(struct layer){ .parent_name = "viaLink" }, "a symlink is not followed");
	unlink(link);
	/* A replaced parent (rewritten with other memory) is found out. */
	uint8_t *other = malloc(RAM_BYTES);
	memcpy(other, d1_ram, RAM_BYTES);
	fill_page(other, 20, 7);
	struct layer replaced = d1;
	replaced.ram = other;
	CU_ASSERT_EQUAL_FATAL(write_layer(&replaced, NULL), 0); /* same name and id */
	char error[1024] = "";
	uint8_t *ram = malloc(RAM_BYTES);
	CU_ASSERT(layer_chain("d2", ram, error, sizeof(error)) < 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "its memory checksum"));
	free(ram);
	free(other);
	CU_ASSERT_EQUAL_FATAL(write_layer(&d1, NULL), 0); /* put it back */
}

/* ---- Disks: merge flattens a snapshot's overlay chain ------------------------- */

#define BLOCK_BYTES DISK_OVERLAY_BLOCK_BYTES
#define DISK_BLOCKS 65u
#define DISK_BYTES (64u * BLOCK_BYTES + 4096u) /* the last block is partial */

/*
 * A VM's disk through four snapshots, as freeze_disks leaves it: the raw
 * base, then overlays 1, 2 and 3, each frozen by the next snapshot; the
 * state under test is the one that froze overlay 3 (three overlays over
 * the base), and the VM went on writing overlay 4 after it.
 */
struct disk_chain {
	char dir[300];
	char base[400];
	char overlay[5][420];		 /* [1] .. [4] */
	uint8_t at_snapshot[DISK_BYTES]; /* the disk as overlay 3 was frozen */
	bool held[DISK_BLOCKS];		 /* blocks overlay 1, 2 or 3 holds */
	char s0[64], s1[64];		 /* its states: full, then a diff */
};

static struct disk_chain disk_chain;
static char merge_error[1024];

static void fill(uint8_t *data, size_t length, uint8_t seed)
{
	for (size_t i = 0; i < length; i++)
		data[i] = seed ? (uint8_t)(seed + i * 7 + (i >> 9)) : 0;
}

static void chain_write(struct disk_chain *c, struct disk_image *disk, uint64_t offset,
			size_t length, uint8_t seed, bool before_snapshot)
{
	uint8_t *data = malloc(length);
	CU_ASSERT_PTR_NOT_NULL_FATAL(data);
	fill(data, length, seed);
	CU_ASSERT_EQUAL_FATAL(disk_image_pwrite(disk, data, length, offset), 0);
	if (before_snapshot) {
		memcpy(c->at_snapshot + offset, data, length);
		for (uint64_t b = offset / BLOCK_BYTES; b <= (offset + length - 1) / BLOCK_BYTES;
		     b++)
			c->held[b] = true;
	}
	free(data);
}

/* The chain under root/name and its two states name-s0 (full, the base
 * frozen) and name-s1 (a diff, overlay 3 frozen).  extra: that many more
 * empty overlays pushed after overlay 4, the last of them frozen by s1
 * instead (a chain too deep to read). */
static void build_disk_chain(struct disk_chain *c, const char *name, unsigned extra)
{
	char error[1024];
	make_chain(); /* the memory layers' RAM */
	memset(c, 0, sizeof(*c));
	snprintf(c->dir, sizeof(c->dir), "%s/%s", root, name);
	CU_ASSERT_EQUAL_FATAL(mkdir(c->dir, 0700), 0);
	snprintf(c->base, sizeof(c->base), "%s/disk.img", c->dir);
	fill(c->at_snapshot, 10 * BLOCK_BYTES, 0x11); /* data in blocks 0-9, zeros after */
	int fd = open(c->base, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL_FATAL(write(fd, c->at_snapshot, DISK_BYTES), (ssize_t)DISK_BYTES);
	close(fd);

	struct vm_disk_config config = { .path = c->base };
	struct disk_image disk;
	CU_ASSERT_EQUAL_FATAL(disk_image_open(&disk, &config, 0, error, sizeof(error)), 0);
	char frozen_top[420] = "";
	for (unsigned i = 1; i <= 4 + extra; i++) {
		char path[420];
		snprintf(path, sizeof(path), "%s@%u.kovl", c->base, i);
		if (i <= 4)
			snprintf(c->overlay[i], sizeof(c->overlay[i]), "%s", path);
		if (i == 4 + extra - (extra ? 1 : 0) && extra)
			snprintf(frozen_top, sizeof(frozen_top), "%s", path);
		CU_ASSERT_EQUAL_FATAL(disk_image_push_overlay(&disk, path, error, sizeof(error)),
				      0);
		switch (i) {
		case 1: /* three blocks */
			chain_write(c, &disk, 1 * BLOCK_BYTES, BLOCK_BYTES, 0x21, true);
			chain_write(c, &disk, 2 * BLOCK_BYTES, BLOCK_BYTES, 0x22, true);
			chain_write(c, &disk, 3 * BLOCK_BYTES, BLOCK_BYTES, 0x23, true);
			break;
		case 2: /* block 1 again, block 3 zeroed, a sector in empty block 20 */
			chain_write(c, &disk, 1 * BLOCK_BYTES, BLOCK_BYTES, 0x31, true);
			chain_write(c, &disk, 3 * BLOCK_BYTES, BLOCK_BYTES, 0, true);
			chain_write(c, &disk, 20 * BLOCK_BYTES + 1000, 512, 0x32, true);
			break;
		case 3: /* block 1 a third time, a sector of base block 9, the tail */
			chain_write(c, &disk, 1 * BLOCK_BYTES, BLOCK_BYTES, 0x41, true);
			chain_write(c, &disk, 9 * BLOCK_BYTES + 4096, 512, 0x42, true);
			chain_write(c, &disk, 64 * BLOCK_BYTES, 4096, 0x43, true);
			break;
		case 4: /* after the snapshot: in no merged image */
			chain_write(c, &disk, 5 * BLOCK_BYTES, BLOCK_BYTES, 0x51, false);
			chain_write(c, &disk, 1 * BLOCK_BYTES, 512, 0x52, false);
			break;
		}
	}
	disk_image_close(&disk);

	snprintf(c->s0, sizeof(c->s0), "%s-s0", name);
	snprintf(c->s1, sizeof(c->s1), "%s-s1", name);
	struct layer full = { .name = c->s0,
			      .ram = base_ram,
			      .id = { 0x40 },
			      .disk_path = c->base,
			      .disk_flags = VM_STATE_DISK_FROZEN };
	struct layer diff = { .name = c->s1,
			      .ram = d1_ram,
			      .id = { 0x41 },
			      .parent = &full,
			      .disk_path = extra ? frozen_top : c->overlay[3],
			      .disk_flags = VM_STATE_DISK_FROZEN | VM_STATE_DISK_OVERLAY };
	CU_ASSERT_EQUAL_FATAL(write_layer(&full, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(write_layer(&diff, NULL), 0);
}

/* snapshot_chain_merge of root/from into root/to, disk 0 named as an
 * overlay at disk (NULL: not named); merge_error holds the message. */
static int merge_disk(const char *from, const char *to, const char *disk,
		      enum snapshot_merge_disks form, struct snapshot_merge_stats *stats)
{
	struct snapshot_host_files files = { 0 };
	if (disk) {
		char spec[600];
		snprintf(spec, sizeof(spec), "0=%s,format=overlay", disk);
		CU_ASSERT_EQUAL_FATAL(snapshot_parse_disk_mapping(spec, &files, merge_error,
								  sizeof(merge_error)),
				      0);
	}
	struct snapshot_merge_options options = { .disks = form, .files = &files };
	char from_path[512], to_path[512];
	snprintf(from_path, sizeof(from_path), "%s/%s", root, from);
	snprintf(to_path, sizeof(to_path), "%s/%s", root, to);
	merge_error[0] = '\0';
	int err = snapshot_chain_merge(from_path, to_path, &options, stats, merge_error,
				       sizeof(merge_error));
	snapshot_host_files_free(&files);
	return err;
}

static bool exists_in_root(const char *name)
{
	char path[512];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", root, name);
	return lstat(path, &st) == 0;
}

/* Size, mtime and CRC32C of a file: equal before and after means untouched. */
struct fingerprint {
	uint64_t size_bytes;
	int64_t mtime_ns;
	uint32_t mode;
	uint32_t crc;
};

static struct fingerprint fingerprint_of(const char *path)
{
	struct fingerprint f = { 0 };
	struct stat st;
	CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
	f.size_bytes = (uint64_t)st.st_size;
	f.mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
	f.mode = st.st_mode;
	uint8_t *data = malloc((size_t)st.st_size);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	CU_ASSERT_FATAL(data && fd >= 0);
	CU_ASSERT_EQUAL(pread(fd, data, (size_t)st.st_size, 0), st.st_size);
	f.crc = vm_state_crc32c(0, data, (size_t)st.st_size);
	close(fd);
	free(data);
	return f;
}

/* Whether this file system reports holes (SEEK_DATA skips them). */
static bool reports_holes(void)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/sparse-probe", root);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	bool holes = fd >= 0 && ftruncate(fd, 1 << 20) == 0 && pwrite(fd, "x", 1, 1 << 19) == 1 &&
		     lseek(fd, 0, SEEK_DATA) > 0;
	if (fd >= 0)
		close(fd);
	unlink(path);
	return holes;
}

/* Bytes [offset, offset + length) of fd are a hole (no data starts there). */
static bool is_hole(int fd, uint64_t offset, uint64_t length)
{
	off_t next = lseek(fd, (off_t)offset, SEEK_DATA);
	return next < 0 || (uint64_t)next >= offset + length;
}

/* root/state/disk0.kovl is the chain as at the snapshot, one overlay deep. */
static void check_flattened_overlay(const struct disk_chain *c, const char *state)
{
	char path[512], error[1024];
	snprintf(path, sizeof(path), "%s/%s/disk0.kovl", root, state);
	struct vm_disk_config config = { .path = path,
					 .format = VM_DISK_FORMAT_OVERLAY,
					 .readonly = true };
	struct disk_image disk;
	CU_ASSERT_EQUAL_FATAL(disk_image_open(&disk, &config, 0, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(disk.size_bytes, DISK_BYTES);
	CU_ASSERT_PTR_NOT_NULL_FATAL(disk.overlay);
	CU_ASSERT_PTR_NULL(disk.overlay->base->overlay); /* over the raw base itself */
	/* Exactly the blocks some overlay of the chain held. */
	for (unsigned b = 0; b < DISK_BLOCKS; b++)
		CU_ASSERT_EQUAL((disk.overlay->bitmap[b / 8] >> (b % 8)) & 1, c->held[b]);
	/* Topmost wins (block 1), a zeroed block reads zeros over the base's
	 * data (3), the rest is the base's; nothing written after the snapshot. */
	uint8_t *content = malloc(DISK_BYTES);
	CU_ASSERT_EQUAL_FATAL(disk_image_pread(&disk, content, DISK_BYTES, 0), 0);
	CU_ASSERT(memcmp(content, c->at_snapshot, DISK_BYTES) == 0);
	free(content);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	CU_ASSERT_FATAL(fd >= 0);
	if (reports_holes()) {
		uint64_t data = disk.overlay->data_offset;
		CU_ASSERT(is_hole(fd, data + 3 * BLOCK_BYTES, BLOCK_BYTES)); /* held, zero */
		CU_ASSERT(is_hole(fd, data + 5 * BLOCK_BYTES, BLOCK_BYTES)); /* not held */
		CU_ASSERT(is_hole(fd, data + 30 * BLOCK_BYTES, BLOCK_BYTES));
		CU_ASSERT(!is_hole(fd, data + 1 * BLOCK_BYTES, BLOCK_BYTES));
	}
	/* It names the base the chain ends in. */
	struct disk_overlay_header h;
	CU_ASSERT_EQUAL(pread(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	char *real = realpath(c->base, NULL);
	CU_ASSERT_STRING_EQUAL(h.base_path, real);
	free(real);
	struct stat st;
	CU_ASSERT_EQUAL(fstat(fd, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 0777, 0444); /* frozen */
	close(fd);
	disk_image_close(&disk);
}

/* A restore of root/state finds its disk inside it, with nothing named. */
static void check_restore_binds(const char *state, const char *file, enum vm_disk_format format)
{
	char path[512], expected[600], error[1024];
	snprintf(path, sizeof(path), "%s/%s", root, state);
	snprintf(expected, sizeof(expected), "%s/%s", path, file);
	struct vm_state_dir dir;
	CU_ASSERT_EQUAL_FATAL(vm_state_dir_open(&dir, path, true, error, sizeof(error)), 0);
	const struct vm_state_manifest_file *listed = vm_state_dir_file(&dir, file);
	CU_ASSERT_PTR_NOT_NULL(listed);
	const struct vm_state_stored_record *rec = vm_state_find(&dir.state, VM_STATE_DISK, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
	struct vm_state_disk disk;
	char recorded[PATH_MAX];
	CU_ASSERT_EQUAL_FATAL(snapshot_parse_disk_record(rec, &disk, recorded, error,
							 sizeof(error)),
			      0);
	CU_ASSERT_STRING_EQUAL(recorded, file); /* a plain name: wherever the directory goes */
	CU_ASSERT_EQUAL(disk.flags,
			VM_STATE_DISK_FROZEN |
				(format == VM_DISK_FORMAT_OVERLAY ? VM_STATE_DISK_OVERLAY : 0));
	struct vm_config config;
	vm_config_init(&config);
	CU_ASSERT_EQUAL_FATAL(snapshot_config_from_records(&dir.state, &config, error,
							   sizeof(error)),
			      0);
	struct snapshot_host_files files = { .kernel_path = "/nonexistent/k.elf" };
	int err = snapshot_bind_host_files(&dir.state, path, &files, &config, error, sizeof(error));
	if (err)
		fprintf(stderr, "\n  bind: %s\n", error);
	CU_ASSERT_EQUAL_FATAL(err, 0);
	char *real = realpath(expected, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(real);
	CU_ASSERT_STRING_EQUAL(config.disks[0].path, real);
	CU_ASSERT_EQUAL(config.disks[0].format, format);
	CU_ASSERT_EQUAL(snapshot_check_disks(&dir.state, &config, error, sizeof(error)), 0);
	free(real);
	vm_config_free(&config);
	vm_state_dir_close(&dir);
}

static void test_merge_flattens_disks(void)
{
	struct disk_chain *c = &disk_chain;
	build_disk_chain(c, "flat", 0);
	struct fingerprint before[5];
	const char *inputs[5] = { c->base, c->overlay[1], c->overlay[2], c->overlay[3],
				  c->overlay[4] };
	for (int i = 0; i < 5; i++)
		before[i] = fingerprint_of(inputs[i]);

	/* Not named and not inside the state: refused, nothing written. */
	struct snapshot_merge_stats stats;
	CU_ASSERT_EQUAL(merge_disk(c->s1, "flat-m", NULL, SNAPSHOT_MERGE_DISKS_OVERLAY, &stats),
			-EPERM);
	CU_ASSERT_PTR_NOT_NULL(strstr(merge_error, "--disk 0="));
	CU_ASSERT_PTR_NOT_NULL(strstr(merge_error, "--keep-disks"));
	CU_ASSERT(!exists_in_root("flat-m") && !exists_in_root("flat-m.new"));
	/* The running overlay (same size, written later) is not the frozen one. */
	CU_ASSERT_EQUAL(merge_disk(c->s1, "flat-m", c->overlay[4], SNAPSHOT_MERGE_DISKS_OVERLAY,
				   &stats),
			-EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(merge_error, "is not the image the snapshot froze"));
	CU_ASSERT(!exists_in_root("flat-m") && !exists_in_root("flat-m.new"));

	/* Named: one overlay over the base, the memory layered as before. */
	int err = merge_disk(c->s1, "flat-m", c->overlay[3], SNAPSHOT_MERGE_DISKS_OVERLAY, &stats);
	if (err)
		fprintf(stderr, "\n  merge: %s\n", merge_error);
	CU_ASSERT_EQUAL_FATAL(err, 0);
	CU_ASSERT_EQUAL(stats.layers, 2);
	CU_ASSERT_EQUAL(stats.disk_count, 1);
	CU_ASSERT(stats.disks[0].flattened);
	CU_ASSERT_EQUAL(stats.disks[0].overlays, 3);
	CU_ASSERT_EQUAL(stats.disks[0].blocks, 6); /* 1, 2, 3, 9, 20, 64 */
	CU_ASSERT_EQUAL(stats.disks[0].blocks_compared, 6);
	CU_ASSERT_STRING_EQUAL(stats.disks[0].file, "disk0.kovl");
	check_flattened_overlay(c, "flat-m");
	check_restore_binds("flat-m", "disk0.kovl", VM_DISK_FORMAT_OVERLAY);
	uint8_t *ram = malloc(RAM_BYTES);
	char error[1024];
	CU_ASSERT_EQUAL(layer_chain("flat-m", ram, error, sizeof(error)), 0);
	CU_ASSERT(memcmp(ram, d1_ram, RAM_BYTES) == 0);
	free(ram);

	/* The directory moves as one: its disk is still found inside. */
	char from[512], to[512];
	snprintf(from, sizeof(from), "%s/flat-m", root);
	snprintf(to, sizeof(to), "%s/flat-moved", root);
	CU_ASSERT_EQUAL_FATAL(rename(from, to), 0);
	check_restore_binds("flat-moved", "disk0.kovl", VM_DISK_FORMAT_OVERLAY);
	check_flattened_overlay(c, "flat-moved");

	/* Merged again in place, nothing named: the image inside is used. */
	CU_ASSERT_EQUAL(merge_disk("flat-moved", "flat-moved", NULL, SNAPSHOT_MERGE_DISKS_OVERLAY,
				   &stats),
			0);
	CU_ASSERT_EQUAL(stats.disks[0].overlays, 1);
	check_flattened_overlay(c, "flat-moved");
	check_restore_binds("flat-moved", "disk0.kovl", VM_DISK_FORMAT_OVERLAY);

	/* A raw copy: the whole disk, zero blocks as holes. */
	CU_ASSERT_EQUAL_FATAL(merge_disk(c->s1, "flat-raw", c->overlay[3], SNAPSHOT_MERGE_DISKS_RAW,
					 &stats),
			      0);
	CU_ASSERT_EQUAL(stats.disks[0].blocks, DISK_BLOCKS);
	CU_ASSERT_EQUAL(stats.disks[0].blocks_compared, DISK_BLOCKS);
	check_restore_binds("flat-raw", "disk0.img", VM_DISK_FORMAT_RAW);
	char raw_path[512];
	snprintf(raw_path, sizeof(raw_path), "%s/flat-raw/disk0.img", root);
	struct fingerprint raw = fingerprint_of(raw_path);
	CU_ASSERT_EQUAL(raw.size_bytes, DISK_BYTES);
	CU_ASSERT_EQUAL(raw.crc, vm_state_crc32c(0, c->at_snapshot, DISK_BYTES));
	if (reports_holes()) {
		int fd = open(raw_path, O_RDONLY | O_CLOEXEC);
		CU_ASSERT(is_hole(fd, 3 * BLOCK_BYTES, BLOCK_BYTES));
		CU_ASSERT(is_hole(fd, 30 * BLOCK_BYTES, BLOCK_BYTES));
		CU_ASSERT(!is_hole(fd, 9 * BLOCK_BYTES, BLOCK_BYTES));
		close(fd);
	}

	/* In place, an overlay over its own raw image would lose its base
	 * with the old directory: refused; a raw copy again is fine. */
	CU_ASSERT_EQUAL(merge_disk("flat-raw", "flat-raw", NULL, SNAPSHOT_MERGE_DISKS_OVERLAY,
				   &stats),
			-EBUSY);
	CU_ASSERT_PTR_NOT_NULL(strstr(merge_error, "which the merge replaces"));
	CU_ASSERT_PTR_NOT_NULL(strstr(merge_error, "--disk-format raw"));
	CU_ASSERT_EQUAL(fingerprint_of(raw_path).crc, raw.crc);
	CU_ASSERT_EQUAL(merge_disk("flat-raw", "flat-raw", NULL, SNAPSHOT_MERGE_DISKS_RAW, &stats),
			0);
	CU_ASSERT_EQUAL(stats.disks[0].overlays, 0);
	CU_ASSERT_EQUAL(fingerprint_of(raw_path).crc, raw.crc);
	check_restore_binds("flat-raw", "disk0.img", VM_DISK_FORMAT_RAW);
	/* Into another directory, it is an overlay over that raw image. */
	CU_ASSERT_EQUAL(merge_disk("flat-raw", "flat-raw-ovl", NULL, SNAPSHOT_MERGE_DISKS_OVERLAY,
				   &stats),
			0);
	check_restore_binds("flat-raw-ovl", "disk0.kovl", VM_DISK_FORMAT_OVERLAY);

	/* --keep-disks: the record still names the frozen overlay. */
	CU_ASSERT_EQUAL_FATAL(merge_disk(c->s1, "flat-keep", NULL, SNAPSHOT_MERGE_DISKS_KEEP,
					 &stats),
			      0);
	CU_ASSERT(!stats.disks[0].flattened);
	char keep_path[512];
	snprintf(keep_path, sizeof(keep_path), "%s/flat-keep", root);
	struct vm_state_dir dir;
	CU_ASSERT_EQUAL_FATAL(vm_state_dir_open(&dir, keep_path, false, error, sizeof(error)), 0);
	struct vm_state_disk disk;
	char recorded[PATH_MAX];
	CU_ASSERT_EQUAL(snapshot_parse_disk_record(vm_state_find(&dir.state, VM_STATE_DISK, NULL),
						   &disk, recorded, error, sizeof(error)),
			0);
	CU_ASSERT_STRING_EQUAL(recorded, c->overlay[3]);
	vm_state_dir_close(&dir);

	/* None of the inputs changed. */
	for (int i = 0; i < 5; i++) {
		struct fingerprint after = fingerprint_of(inputs[i]);
		CU_ASSERT(memcmp(&after, &before[i], sizeof(after)) == 0);
	}
}

static void test_merge_refuses_changed_chain(void)
{
	struct disk_chain *c = &disk_chain;
	struct snapshot_merge_stats stats;
	/* The base swapped for another file of the same size. */
	build_disk_chain(c, "swap", 0);
	CU_ASSERT_EQUAL_FATAL(unlink(c->base), 0);
	int fd = open(c->base, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(ftruncate(fd, DISK_BYTES), 0);
	close(fd);
	CU_ASSERT_EQUAL(merge_disk(c->s1, "swap-m", c->overlay[3], SNAPSHOT_MERGE_DISKS_OVERLAY,
				   &stats),
			-ESTALE);
	CU_ASSERT_PTR_NOT_NULL(strstr(merge_error, "disk 0: overlay '"));
	CU_ASSERT_PTR_NOT_NULL(strstr(merge_error, c->overlay[3]));
	CU_ASSERT_PTR_NOT_NULL(strstr(merge_error, "restore the base"));
	CU_ASSERT_PTR_NOT_NULL(strstr(merge_error, "nothing was written"));
	CU_ASSERT(!exists_in_root("swap-m") && !exists_in_root("swap-m.new"));

	/* An overlay in the middle written after the next was made over it. */
	build_disk_chain(c, "mid", 0);
	CU_ASSERT_EQUAL_FATAL(chmod(c->overlay[1], 0600), 0);
	fd = open(c->overlay[1], O_WRONLY | O_CLOEXEC);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(pwrite(fd, "x", 1, (1u << 20) + 2 * BLOCK_BYTES), 1);
	close(fd);
	CU_ASSERT_EQUAL(merge_disk(c->s1, "mid-m", c->overlay[3], SNAPSHOT_MERGE_DISKS_RAW, &stats),
			-ESTALE);
	CU_ASSERT_PTR_NOT_NULL(strstr(merge_error, "not the file the overlay was made over"));
	CU_ASSERT(!exists_in_root("mid-m") && !exists_in_root("mid-m.new"));

	/* Deeper than Kapsel reads: refused, saying what to do. */
	build_disk_chain(c, "deep", DISK_OVERLAY_MAX_CHAIN);
	CU_ASSERT_EQUAL(merge_disk(c->s1, "deep-m", NULL, SNAPSHOT_MERGE_DISKS_OVERLAY, &stats),
			-EPERM); /* its image is outside the state: named below */
	char top[600];
	snprintf(top, sizeof(top), "%.500s@%u.kovl", c->base, 3 + DISK_OVERLAY_MAX_CHAIN);
	CU_ASSERT_EQUAL(merge_disk(c->s1, "deep-m", top, SNAPSHOT_MERGE_DISKS_OVERLAY, &stats),
			-ELOOP);
	CU_ASSERT_PTR_NOT_NULL(strstr(merge_error, top));
	CU_ASSERT_PTR_NOT_NULL(strstr(merge_error, "longer than 32"));
	CU_ASSERT_PTR_NOT_NULL(strstr(merge_error, "an earlier snapshot"));
	CU_ASSERT(!exists_in_root("deep-m") && !exists_in_root("deep-m.new"));
}

static void test_merge_failure_leaves_no_newdir(void)
{
	struct disk_chain *c = &disk_chain;
	struct snapshot_merge_stats stats;
	build_disk_chain(c, "atomic", 0);
	CU_ASSERT_EQUAL_FATAL(merge_disk(c->s1, "atomic-old", c->overlay[3],
					 SNAPSHOT_MERGE_DISKS_OVERLAY, &stats),
			      0);
	char manifest[512];
	snprintf(manifest, sizeof(manifest), "%s/atomic-old/manifest", root);
	struct fingerprint old_manifest = fingerprint_of(manifest);

	/* Files may grow to 4.5 MiB: memory.img (4 MiB) is written, then
	 * the flattened disk fails at its last block (at 5 MiB), half done. */
	struct rlimit saved, small = { .rlim_cur = RAM_BYTES + (512u << 10) };
	CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_FSIZE, &saved), 0);
	small.rlim_max = saved.rlim_max;
	signal(SIGXFSZ, SIG_IGN);
	CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_FSIZE, &small), 0);
	int fresh = merge_disk(c->s1, "atomic-new", c->overlay[3], SNAPSHOT_MERGE_DISKS_OVERLAY,
			       &stats);
	char fresh_error[1024];
	snprintf(fresh_error, sizeof(fresh_error), "%s", merge_error);
	int replace = merge_disk(c->s1, "atomic-old", c->overlay[3], SNAPSHOT_MERGE_DISKS_OVERLAY,
				 &stats);
	CU_ASSERT_EQUAL(setrlimit(RLIMIT_FSIZE, &saved), 0);
	signal(SIGXFSZ, SIG_DFL);

	CU_ASSERT_EQUAL(fresh, -EFBIG);
	CU_ASSERT_PTR_NOT_NULL(strstr(fresh_error, "disk 0: cannot write"));
	CU_ASSERT_PTR_NOT_NULL(strstr(fresh_error, "atomic-new.new/disk0.kovl"));
	CU_ASSERT(!exists_in_root("atomic-new") && !exists_in_root("atomic-new.new"));
	/* A state already there stays as it was. */
	CU_ASSERT_EQUAL(replace, -EFBIG);
	CU_ASSERT(!exists_in_root("atomic-old.new"));
	struct fingerprint after = fingerprint_of(manifest);
	CU_ASSERT(memcmp(&after, &old_manifest, sizeof(after)) == 0);
	check_flattened_overlay(c, "atomic-old");
	check_restore_binds("atomic-old", "disk0.kovl", VM_DISK_FORMAT_OVERLAY);
}

static void test_parent_parse(void)
{
	struct vm_state_records records = { 0 };
	struct vm_state_parent parent;
	char name[VM_STATE_PARENT_NAME_MAX + 1], error[256];
	/* No record: a full state. */
	CU_ASSERT_EQUAL(snapshot_parent_parse(&records, &parent, name, error, sizeof(error)), 0);
	/* A record shorter than its header. */
	struct vm_state_stored_record short_rec = { .type = VM_STATE_PARENT,
						    .length_bytes = 8,
						    .payload = (uint8_t *)"12345678" };
	records.records = &short_rec;
	records.count = 1;
	CU_ASSERT_EQUAL(snapshot_parent_parse(&records, &parent, name, error, sizeof(error)),
			-EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "malformed"));
	/* A name with a NUL or a control character in it. */
	uint8_t buffer[sizeof(struct vm_state_parent) + 4];
	struct vm_state_parent rec = { .depth = 1, .name_bytes = 4 };
	memcpy(buffer, &rec, sizeof(rec));
	memcpy(buffer + sizeof(rec), "ab\0c", 4);
	struct vm_state_stored_record nul_rec = { .type = VM_STATE_PARENT,
						  .length_bytes = sizeof(buffer),
						  .payload = buffer };
	records.records = &nul_rec;
	CU_ASSERT_EQUAL(snapshot_parent_parse(&records, &parent, name, error, sizeof(error)),
			-EPROTO);
	memcpy(buffer + sizeof(rec), "ab\nc", 4);
	CU_ASSERT_EQUAL(snapshot_parent_parse(&records, &parent, name, error, sizeof(error)),
			-EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "control characters"));
	memcpy(buffer + sizeof(rec), "abcd", 4);
	CU_ASSERT_EQUAL(snapshot_parent_parse(&records, &parent, name, error, sizeof(error)), 1);
	CU_ASSERT_STRING_EQUAL(name, "abcd");
	rec.depth = 0;
	memcpy(buffer, &rec, sizeof(rec));
	CU_ASSERT_EQUAL(snapshot_parent_parse(&records, &parent, name, error, sizeof(error)),
			-EPROTO);
}

static void test_memory_map_count(void)
{
	char error[256];
	uint8_t map[3] = { 0x0f, 0x00, 0x01 };
	CU_ASSERT_EQUAL(snapshot_memory_map_count(map, 3, 17, error, sizeof(error)), 5);
	CU_ASSERT_EQUAL(snapshot_memory_map_count(map, 3, 24, error, sizeof(error)), 5);
	CU_ASSERT_EQUAL(snapshot_memory_map_count(map, 2, 17, error, sizeof(error)), -EPROTO);
	map[2] = 0x02; /* page 17 of 17 pages: past the end */
	CU_ASSERT_EQUAL(snapshot_memory_map_count(map, 3, 17, error, sizeof(error)), -EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "past the end"));
}

static void cleanup(void)
{
	if (!root[0])
		return;
	char command[600];
	snprintf(command, sizeof(command), "rm -rf '%s'", root);
	CU_ASSERT_EQUAL(system(command), 0);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "parent_parse", test_parent_parse },
		{ "memory_map_count", test_memory_map_count },
		{ "chain_layers_and_merges", test_chain_layers_and_merges },
		{ "forged_links_refused", test_forged_links_refused },
		{ "merge_flattens_disks", test_merge_flattens_disks },
		{ "merge_refuses_changed_chain", test_merge_refuses_changed_chain },
		{ "merge_failure_leaves_no_newdir", test_merge_failure_leaves_no_newdir },
		{ "cleanup", cleanup },
	};
	return UNIT_RUN("snapshot_chain", tests);
}
