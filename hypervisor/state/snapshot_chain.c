/* Dirty-only (diff) snapshots: a state holding only the pages changed since its parent, the parent check, layering a chain back into guest RAM, merging a chain into one full state. */
#define _GNU_SOURCE
#include "state/snapshot_chain.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error_text.h"
#include "core/guest_memory.h"
#include "core/vm.h"
#include "state/precopy.h"
#include "state/snapshot.h"

#define PAGE_BYTES PRECOPY_PAGE_BYTES

int snapshot_parent_parse(const struct vm_state_records *state, struct vm_state_parent *parent,
			  char name[VM_STATE_PARENT_NAME_MAX + 1], char *error, size_t error_len)
{
	size_t position = 0;
	const struct vm_state_stored_record *rec = vm_state_find(state, VM_STATE_PARENT, &position);
	if (!rec)
		return 0;
	if (vm_state_find(state, VM_STATE_PARENT, &position))
		return kapsel_fail(error, error_len, -EPROTO,
				   "the state names more than one parent; it is damaged or forged");
	if (rec->length_bytes < sizeof(*parent))
		return kapsel_fail(error, error_len, -EPROTO,
				   "the state's parent record is malformed (%llu bytes)",
				   (unsigned long long)rec->length_bytes);
	memcpy(parent, rec->payload, sizeof(*parent));
	if (parent->name_bytes == 0 || parent->name_bytes > VM_STATE_PARENT_NAME_MAX ||
	    parent->name_bytes != rec->length_bytes - sizeof(*parent))
		return kapsel_fail(error, error_len, -EPROTO,
				   "the state's parent record is malformed (name of %u bytes)",
				   parent->name_bytes);
	memcpy(name, rec->payload + sizeof(*parent), parent->name_bytes);
	name[parent->name_bytes] = '\0';
	/* A plain name in the diff's own directory: nothing else is opened. */
	if (memchr(name, '\0', parent->name_bytes) || strchr(name, '/') || name[0] == '.')
		return kapsel_fail(
			error, error_len, -EPROTO,
			"the state's parent is not a plain directory name next to it; it is damaged or forged (a state never chooses a host path)");
	for (const unsigned char *c = (const unsigned char *)name; *c; c++)
		if (*c < 0x20 || *c == 0x7f)
			return kapsel_fail(
				error, error_len, -EPROTO,
				"the state's parent name holds control characters; it is damaged or forged");
	if (parent->depth == 0 || parent->depth > VM_STATE_CHAIN_MAX_DEPTH)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the state says it is diff %u of a chain; at most %u are allowed",
				   parent->depth, VM_STATE_CHAIN_MAX_DEPTH);
	return 1;
}

const uint8_t *snapshot_state_id(const struct vm_state_records *state)
{
	const struct vm_state_stored_record *rec = vm_state_find(state, VM_STATE_SAVE_INFO, NULL);
	if (!rec || rec->length_bytes != sizeof(struct vm_state_save_info))
		return NULL;
	return rec->payload + offsetof(struct vm_state_save_info, state_id);
}

int snapshot_state_memory_crc(const struct vm_state_dir *dir, uint32_t *crc, char *error,
			      size_t error_len)
{
	struct vm_state_parent parent;
	char name[VM_STATE_PARENT_NAME_MAX + 1];
	int is_diff = snapshot_parent_parse(&dir->state, &parent, name, error, error_len);
	if (is_diff < 0)
		return is_diff;
	if (is_diff) {
		*crc = parent.memory_crc;
		return 0;
	}
	const struct vm_state_manifest_file *memory = vm_state_dir_file(dir, VM_STATE_FILE_MEMORY);
	if (!memory)
		return kapsel_fail(error, error_len, -EPROTO, "%s has no memory.img", dir->path);
	*crc = memory->crc32c;
	return 0;
}

int64_t snapshot_memory_map_count(const uint8_t *map, uint64_t size_bytes, uint64_t page_count,
				  char *error, size_t error_len)
{
	if (size_bytes != (page_count + 7) / 8)
		return kapsel_fail(error, error_len, -EPROTO,
				   "memory.map is %llu bytes; %llu pages need %llu",
				   (unsigned long long)size_bytes, (unsigned long long)page_count,
				   (unsigned long long)((page_count + 7) / 8));
	if (page_count % 8 && (map[size_bytes - 1] >> (page_count % 8)))
		return kapsel_fail(error, error_len, -EPROTO,
				   "memory.map lists pages past the end of RAM");
	int64_t count = 0;
	for (uint64_t i = 0; i < size_bytes; i++)
		count += __builtin_popcount(map[i]);
	return count;
}

/* ---- Opening a chain ------------------------------------------------------------ */

/* realpath of the directory holding path, or NULL. */
static char *containing_directory(const char *path)
{
	char *real = realpath(path, NULL);
	if (!real)
		return NULL;
	char *slash = strrchr(real, '/');
	if (slash == real)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	return real;
}

void snapshot_chain_close(struct snapshot_chain *chain)
{
	for (unsigned i = 0; i < chain->count; i++)
		if (chain->owned[i] && chain->layers[i]) {
			struct vm_state_dir *mine = (struct vm_state_dir *)chain->layers[i];
			vm_state_dir_close(mine);
			free(mine);
		}
	memset(chain, 0, sizeof(*chain));
}

int snapshot_chain_open(const struct vm_state_dir *top, struct snapshot_chain *chain, char *error,
			size_t error_len)
{
	const struct vm_state_dir *stack[VM_STATE_CHAIN_MAX_DEPTH + 1];
	bool owned[VM_STATE_CHAIN_MAX_DEPTH + 1];
	unsigned count = 0;
	int err = 0;
	char detail[512];

	memset(chain, 0, sizeof(*chain));
	err = snapshot_state_memory_crc(top, &chain->memory_crc, error, error_len);
	if (err)
		return err;
	stack[count] = top;
	owned[count++] = false;
	for (;;) {
		const struct vm_state_dir *child = stack[count - 1];
		struct vm_state_parent parent;
		char name[VM_STATE_PARENT_NAME_MAX + 1];
		int is_diff =
			snapshot_parent_parse(&child->state, &parent, name, detail, sizeof(detail));
		if (is_diff < 0) {
			err = kapsel_fail(error, error_len, is_diff, "%s: %s", child->path, detail);
			break;
		}
		if (!is_diff)
			break; /* the full state at the bottom */
		if (!vm_state_dir_file(child, VM_STATE_FILE_MEMORY_MAP)) {
			err = kapsel_fail(error, error_len, -EPROTO,
					  "%s is a diff but its manifest lists no memory.map",
					  child->path);
			break;
		}
		/* The child's depth says how many links follow: they run out
		 * before any loop could. */
		unsigned expected_depth = count == 1 ? parent.depth : 0;
		if (count > 1) {
			struct vm_state_parent above;
			char above_name[VM_STATE_PARENT_NAME_MAX + 1];
			snapshot_parent_parse(&stack[count - 2]->state, &above, above_name, detail,
					      sizeof(detail));
			expected_depth = above.depth - 1;
		}
		if (parent.depth != expected_depth || count > VM_STATE_CHAIN_MAX_DEPTH) {
			err = kapsel_fail(
				error, error_len, -EPROTO,
				"%s says it is diff %u of its chain, its child expects %u; the chain is damaged",
				child->path, parent.depth, expected_depth);
			break;
		}
		char *dir = containing_directory(child->path);
		char *candidate = NULL;
		if (!dir || asprintf(&candidate, "%s/%s", strcmp(dir, "/") ? dir : "", name) < 0) {
			free(dir);
			err = kapsel_fail(error, error_len, -ENOMEM, "out of memory");
			break;
		}
		free(dir);
		struct stat st;
		bool exists = lstat(candidate, &st) == 0;
		if (!exists || !S_ISDIR(st.st_mode)) {
			err = kapsel_fail(
				error, error_len, -ENOENT,
				"%s is a diff snapshot over '%s', which is %s; keep a diff next to its parent (kapsel merge turns a chain into one full state)",
				child->path, candidate,
				exists ? "not a directory (a symlink is not followed)" : "missing");
			free(candidate);
			break;
		}
		struct vm_state_dir *up = calloc(1, sizeof(*up));
		if (!up) {
			free(candidate);
			err = kapsel_fail(error, error_len, -ENOMEM, "out of memory");
			break;
		}
		err = vm_state_dir_open(up, candidate, false, detail, sizeof(detail));
		free(candidate);
		if (err) {
			free(up);
			kapsel_fail(error, error_len, err, "the parent of %s: %s", child->path,
				    detail);
			break;
		}
		stack[count] = up;
		owned[count++] = true;
		const uint8_t *id = snapshot_state_id(&up->state);
		uint32_t crc = 0;
		err = snapshot_state_memory_crc(up, &crc, detail, sizeof(detail));
		if (err) {
			kapsel_fail(error, error_len, err, "the parent of %s: %s", child->path,
				    detail);
			break;
		}
		if (!id || memcmp(id, parent.parent_id, 16) != 0 ||
		    crc != parent.parent_memory_crc) {
			err = kapsel_fail(
				error, error_len, -EPROTO,
				"%s is not the state %s was taken over (%s differs); it was replaced or rewritten",
				up->path, child->path,
				!id || memcmp(id, parent.parent_id, 16) ? "its id"
									: "its memory checksum");
			break;
		}
		if (up->info->memory_bytes != child->info->memory_bytes) {
			err = kapsel_fail(error, error_len, -EPROTO,
					  "%s has %llu bytes of RAM, its diff %s %llu", up->path,
					  (unsigned long long)up->info->memory_bytes, child->path,
					  (unsigned long long)child->info->memory_bytes);
			break;
		}
	}
	if (!err) {
		struct vm_state_parent last;
		char last_name[VM_STATE_PARENT_NAME_MAX + 1];
		if (count > 1 && (snapshot_parent_parse(&stack[count - 2]->state, &last, last_name,
							detail, sizeof(detail)) != 1 ||
				  last.depth != 1))
			err = kapsel_fail(error, error_len, -EPROTO,
					  "%s: the chain ends at a full state too early; it is damaged",
					  stack[count - 2]->path);
	}
	/* Bottom first. */
	for (unsigned i = 0; i < count; i++) {
		chain->layers[i] = stack[count - 1 - i];
		chain->owned[i] = owned[count - 1 - i];
	}
	chain->count = count;
	if (err)
		snapshot_chain_close(chain);
	return err;
}

/* ---- Layering ------------------------------------------------------------------- */

static int read_small_file(int dirfd, const char *name, uint64_t size_bytes, uint8_t **data)
{
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	uint8_t *buffer = malloc(size_bytes ? (size_t)size_bytes : 1);
	int err = buffer ? 0 : -ENOMEM;
	uint64_t done = 0;
	while (!err && done < size_bytes) {
		ssize_t n = pread(fd, buffer + done, (size_t)(size_bytes - done), (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			err = n < 0 ? -errno : -EPROTO;
		else
			done += (uint64_t)n;
	}
	close(fd);
	if (err) {
		free(buffer);
		return err;
	}
	*data = buffer;
	return 0;
}

/* Copy the pages map lists from dir's memory.img into mem. */
static int apply_diff(const struct vm_state_dir *dir, struct guest_memory *mem, char *error,
		      size_t error_len)
{
	const struct vm_state_manifest_file *memory = vm_state_dir_file(dir, VM_STATE_FILE_MEMORY);
	const struct vm_state_manifest_file *map_entry =
		vm_state_dir_file(dir, VM_STATE_FILE_MEMORY_MAP);
	struct vm_state_parent parent;
	char name[VM_STATE_PARENT_NAME_MAX + 1];
	uint64_t pages = mem->size_bytes / PAGE_BYTES;
	char detail[512];
	int err = 0;

	if (snapshot_parent_parse(&dir->state, &parent, name, error, error_len) != 1)
		return -EPROTO;
	/* Both files whole, before a byte of them is used. */
	err = vm_state_load_flat_file(dir->dirfd, VM_STATE_FILE_MEMORY, NULL, memory->size_bytes,
				      memory->crc32c, false, detail, sizeof(detail));
	if (err)
		return kapsel_fail(error, error_len, err, "%s/%s", dir->path, detail);
	uint8_t *map = NULL;
	err = read_small_file(dir->dirfd, VM_STATE_FILE_MEMORY_MAP, map_entry->size_bytes, &map);
	if (err)
		return kapsel_fail(error, error_len, err, "%s/memory.map: %s", dir->path,
				   strerror(-err));
	if (vm_state_crc32c(0, map, map_entry->size_bytes) != map_entry->crc32c) {
		free(map);
		return kapsel_fail(error, error_len, -EPROTO,
				   "%s/memory.map is corrupt (its CRC32C is not the manifest's)",
				   dir->path);
	}
	int64_t listed = snapshot_memory_map_count(map, map_entry->size_bytes, pages, detail,
						   sizeof(detail));
	if (listed < 0 || (uint64_t)listed != parent.pages) {
		free(map);
		return kapsel_fail(
			error, error_len, -EPROTO, "%s: %s", dir->path,
			listed < 0 ? detail
				   : "memory.map and the parent record disagree on the page count");
	}
	int fd = openat(dir->dirfd, VM_STATE_FILE_MEMORY, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(map);
		return kapsel_fail(error, error_len, -errno, "%s/memory.img: %s", dir->path,
				   strerror(errno));
	}
	for (uint64_t p = 0; p < pages && !err;) {
		if (!(map[p / 8] >> (p % 8) & 1)) {
			p++;
			continue;
		}
		uint64_t run = p;
		while (run < pages && (map[run / 8] >> (run % 8) & 1) && run - p < 4096)
			run++;
		/* A hole in memory.img reads as zeros: a page that became zero. */
		uint64_t offset = p * PAGE_BYTES, length = (run - p) * PAGE_BYTES;
		while (length) {
			ssize_t n =
				pread(fd, mem->host_base + offset, (size_t)length, (off_t)offset);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				err = kapsel_fail(error, error_len, n < 0 ? -errno : -EPROTO,
						  "%s/memory.img: read error at byte %llu",
						  dir->path, (unsigned long long)offset);
				break;
			}
			offset += (uint64_t)n;
			length -= (uint64_t)n;
		}
		p = run;
	}
	close(fd);
	free(map);
	return err;
}

int snapshot_chain_load_memory(const struct snapshot_chain *chain, struct guest_memory *mem,
			       char *error, size_t error_len)
{
	const struct vm_state_dir *base = chain->layers[0];
	const struct vm_state_manifest_file *memory = vm_state_dir_file(base, VM_STATE_FILE_MEMORY);
	char detail[512];
	if (!memory || memory->size_bytes != mem->size_bytes)
		return kapsel_fail(error, error_len, -EPROTO,
				   "%s/memory.img does not match the VM's RAM size", base->path);
	int err = vm_state_load_flat_file(base->dirfd, VM_STATE_FILE_MEMORY, mem->host_base,
					  memory->size_bytes, memory->crc32c, false, detail,
					  sizeof(detail));
	if (err)
		return kapsel_fail(error, error_len, err, "%s/%s", base->path, detail);
	for (unsigned i = 1; i < chain->count; i++) {
		err = apply_diff(chain->layers[i], mem, error, error_len);
		if (err)
			return err;
	}
	uint32_t crc = precopy_memory_crc(mem);
	if (crc != chain->memory_crc)
		return kapsel_fail(
			error, error_len, -EPROTO,
			"%s: the layered memory's CRC32C is %#x, the state says %#x; a layer is damaged",
			chain->layers[chain->count - 1]->path, crc, chain->memory_crc);
	return 0;
}

int snapshot_chain_restore(struct kapsel_vm *vm, const struct vm_state_dir *dir,
			   const struct snapshot_restore_options *options, char *error,
			   size_t error_len)
{
	/* Layers cannot be mapped as one file: a chain is read in and checked
	 * first, whatever map_private asks (lazy restores map full states).
	 * Clones are meant to share one mapped memory.img: merge first. */
	if (options->clone)
		return kapsel_fail(
			error, error_len, -EOPNOTSUPP,
			"%s is a diff snapshot: clones map one memory.img copy-on-write; make it a full state first (kapsel merge %s NEWDIR)",
			dir->path, dir->path);
	struct snapshot_chain chain;
	int err = snapshot_chain_open(dir, &chain, error, error_len);
	if (err)
		return err;
	if (dir->info->memory_bytes != vm->mem.size_bytes)
		err = kapsel_fail(error, error_len, -EPROTO,
				  "memory.img does not match the VM's RAM size");
	if (!err) {
		/* Everything vm_create wrote goes; holes stay unallocated. */
		guest_memory_clear(&vm->mem);
		err = snapshot_chain_load_memory(&chain, &vm->mem, error, error_len);
	}
	snapshot_chain_close(&chain);
	if (err)
		return err;
	return snapshot_apply_vm_records(vm, &dir->state, options->new_identity, error, error_len);
}

/* ---- Merging ---------------------------------------------------------------------- */

int snapshot_chain_merge(const char *path, const char *out, struct snapshot_merge_stats *stats,
			 char *error, size_t error_len)
{
	struct vm_state_dir top;
	struct snapshot_chain chain;
	struct vm_state_dir_txn txn;
	struct vm_state_manifest_file entry;
	struct vm_state_writer w;
	char detail[512];
	int err = vm_state_dir_open(&top, path, false, error, error_len);
	if (err)
		return err;
	err = snapshot_chain_open(&top, &chain, error, error_len);
	if (err) {
		vm_state_dir_close(&top);
		return err;
	}
	struct guest_memory mem = { .memfd = -1, .size_bytes = top.info->memory_bytes };
	mem.host_base = mmap(NULL, mem.size_bytes, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem.host_base == MAP_FAILED) {
		err = kapsel_fail(error, error_len, -errno, "cannot map %llu bytes: %s",
				  (unsigned long long)mem.size_bytes, strerror(errno));
		mem.host_base = NULL;
		goto out;
	}
	err = snapshot_chain_load_memory(&chain, &mem, error, error_len);
	if (err)
		goto out;
	err = vm_state_dir_begin(&txn, out, error, error_len);
	if (err)
		goto out;
	err = vm_state_write_memory_file(txn.dirfd, VM_STATE_FILE_MEMORY, mem.host_base,
					 mem.size_bytes, -1, &entry);
	if (err) {
		kapsel_fail(error, error_len, err, "cannot write %s.new/memory.img: %s", out,
			    strerror(-err));
		vm_state_dir_abort(&txn);
		goto out;
	}
	if (entry.crc32c != chain.memory_crc) {
		err = kapsel_fail(error, error_len, -EIO,
				  "%s.new/memory.img came out with another checksum than the chain's",
				  out);
		vm_state_dir_abort(&txn);
		goto out;
	}
	vm_state_dir_add(&txn, &entry);
	if (stats) {
		stats->layers = chain.count;
		stats->memory_bytes = entry.size_bytes;
		stats->memory_data_bytes = entry.data_bytes;
	}
	/* state.bin: the top's records, without the parent. */
	vm_state_writer_init_buffer(&w);
	vm_state_put_begin(&w, VM_STATE_KIND_STATE);
	for (size_t i = 0; i < top.state.count; i++) {
		const struct vm_state_stored_record *r = &top.state.records[i];
		if (r->type != VM_STATE_PARENT)
			vm_state_put(&w, r->type, r->flags, r->payload, r->length_bytes);
	}
	vm_state_put_end(&w);
	err = w.error;
	if (!err)
		err = vm_state_write_file(txn.dirfd, VM_STATE_FILE_STATE, w.buffer, w.buffer_bytes,
					  &entry);
	vm_state_writer_free(&w);
	if (err) {
		kapsel_fail(error, error_len, err, "cannot write %s.new/state.bin: %s", out,
			    strerror(-err));
		vm_state_dir_abort(&txn);
		goto out;
	}
	vm_state_dir_add(&txn, &entry);
	/* domain.xml, for people and tools, as the top has it. */
	const struct vm_state_manifest_file *domain = vm_state_dir_file(&top, VM_STATE_FILE_DOMAIN);
	uint8_t *xml = NULL;
	if (domain && domain->size_bytes < (1u << 20) &&
	    read_small_file(top.dirfd, VM_STATE_FILE_DOMAIN, domain->size_bytes, &xml) == 0) {
		if (vm_state_crc32c(0, xml, domain->size_bytes) == domain->crc32c &&
		    vm_state_write_file(txn.dirfd, VM_STATE_FILE_DOMAIN, xml, domain->size_bytes,
					&entry) == 0)
			vm_state_dir_add(&txn, &entry);
		free(xml);
	}
	err = vm_state_dir_commit(&txn, detail, sizeof(detail));
	if (err)
		kapsel_fail(error, error_len, err, "%s", detail);
out:
	if (mem.host_base)
		munmap(mem.host_base, mem.size_bytes);
	snapshot_chain_close(&chain);
	vm_state_dir_close(&top);
	return err;
}
