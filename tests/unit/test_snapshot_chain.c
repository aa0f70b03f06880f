/* Unit tests of diff-snapshot chains: parent records parsed and refused when forged, chains opened, layered and merged, every broken link refused with a clear error. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cunit_main.h"
#include "config/config.h"
#include "core/guest_memory.h"
#include "state/snapshot.h"
#include "state/snapshot_chain.h"
#include "state/vm_state.h"

#define RAM_BYTES (1u << 20)
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
	CU_ASSERT_EQUAL(snapshot_put_definition(&definition, &w, error, sizeof(error)), 0);
	vm_config_free(&definition);
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
	CU_ASSERT_EQUAL_FATAL(snapshot_chain_merge(d2_path, merged, &stats, error, sizeof(error)),
			      0);
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
		{ "cleanup", cleanup },
	};
	return UNIT_RUN("snapshot_chain", tests);
}
