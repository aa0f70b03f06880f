/* Dirty-only (diff) snapshots: a state holding only the pages changed since its parent, the parent check, layering a chain back into guest RAM, merging a chain into one full state with its disks flattened. */
#define _GNU_SOURCE
#include "state/snapshot_chain.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error_text.h"
#include "core/guest_memory.h"
#include "core/vm.h"
#include "devices/block/disk_flatten.h"
#include "devices/block/disk_overlay.h"
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

/* The frozen disks of a merge: the chains opened, and what became of them. */
struct merge_disks {
	struct vm_config config; /* the top's definition, disks bound */
	unsigned count;
	bool frozen[VM_CONFIG_MAX_DISKS];
	bool opened[VM_CONFIG_MAX_DISKS];
	struct disk_image sources[VM_CONFIG_MAX_DISKS];
	struct vm_state_disk records[VM_CONFIG_MAX_DISKS]; /* the top's, then the new ones */
	char names[VM_CONFIG_MAX_DISKS][VM_STATE_FILE_NAME_MAX];
};

static void merge_disks_close(struct merge_disks *m)
{
	for (unsigned i = 0; i < VM_CONFIG_MAX_DISKS; i++)
		if (m->opened[i])
			disk_image_close(&m->sources[i]);
	vm_config_free(&m->config);
}

/* Whether the file at path is directly in directory dir (both resolved). */
static bool file_in_directory(const char *path, const char *dir)
{
	char *dir_real = realpath(dir, NULL);
	char *file_real = realpath(path, NULL);
	bool inside = false;
	if (dir_real && file_real) {
		char *slash = strrchr(file_real, '/');
		if (slash) {
			*slash = '\0';
			inside = strcmp(slash == file_real ? "/" : file_real, dir_real) == 0;
		}
	}
	free(dir_real);
	free(file_real);
	return inside;
}

/*
 * Bind and open every frozen disk of top before anything is written: the
 * operator's --disk or a file inside top's directory, of the recorded
 * size and mtime, its chain opened read-only with every base identity
 * checked.  A flattened overlay must not be over a file of out (or of
 * out.new), which the merge removes.
 */
static int merge_open_disks(const struct vm_state_dir *top, const char *out,
			    const struct snapshot_merge_options *options, struct merge_disks *m,
			    char *error, size_t error_len)
{
	char detail[1024];
	int err = snapshot_config_from_records(&top->state, &m->config, detail, sizeof(detail));
	if (err)
		return kapsel_fail(error, error_len, err, "%s: %s", top->path, detail);
	m->count = m->config.disk_count;
	if (options->disks == SNAPSHOT_MERGE_DISKS_KEEP)
		return 0;
	err = snapshot_bind_disks(&top->state, top->path, options->files, true, &m->config, detail,
				  sizeof(detail));
	if (err)
		return kapsel_fail(error, error_len, err, "%s%s", detail,
				   err == -EPERM ? "; or merge the memory only (--keep-disks)"
						 : "");
	size_t position = 0;
	const struct vm_state_stored_record *rec;
	while ((rec = vm_state_find(&top->state, VM_STATE_DISK, &position)) != NULL) {
		struct vm_state_disk disk;
		char recorded[PATH_MAX];
		err = snapshot_parse_disk_record(rec, &disk, recorded, error, error_len);
		if (err)
			return err;
		if (disk.index >= m->count || m->frozen[disk.index])
			return kapsel_fail(error, error_len, -EPROTO,
					   "%s: the disk records do not match the definition (%u disks)",
					   top->path, m->count);
		m->records[disk.index] = disk;
		if (!(disk.flags & VM_STATE_DISK_FROZEN))
			continue;
		m->frozen[disk.index] = true;
		struct vm_disk_config config = m->config.disks[disk.index];
		struct stat st;
		if (stat(config.path, &st) < 0)
			return kapsel_fail(error, error_len, -ENOENT,
					   "disk %u: image '%s' is missing (%s); nothing was written",
					   disk.index, config.path, strerror(errno));
		if ((uint64_t)st.st_size != disk.size_bytes)
			return kapsel_fail(
				error, error_len, -EPROTO,
				"disk %u: '%s' is %llu bytes, the image the snapshot froze was %llu; name the file the state records (kapsel inspect %s shows it) with --disk %u=PATH",
				disk.index, config.path, (unsigned long long)st.st_size,
				(unsigned long long)disk.size_bytes, top->path, disk.index);
		/* Nothing writes a frozen image after its record is taken (a
		 * snapshot goes on on an overlay over it): another mtime is
		 * another file, or this one changed since. */
		int64_t mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
		if (mtime_ns != disk.mtime_ns)
			return kapsel_fail(
				error, error_len, -EPROTO,
				"disk %u: '%s' is not the image the snapshot froze: it was modified since, or it is another file of the same size (its mtime is not the recorded one); name the file the state records (kapsel inspect %s shows it) with --disk %u=PATH",
				disk.index, config.path, top->path, disk.index);
		/* Only read: shared locks, so a VM still writing a file of the
		 * chain (an exclusive lock) makes the merge fail, not race. */
		config.readonly = true;
		config.cache = VM_DISK_CACHE_WRITEBACK;
		err = disk_image_open(&m->sources[disk.index], &config, 0, detail, sizeof(detail));
		if (err == -ELOOP)
			return kapsel_fail(
				error, error_len, err,
				"disk %u: %s; Kapsel reads at most %u overlays under a disk and every snapshot adds one: merge (or restore and merge) an earlier snapshot of the chain, whose disk is not this deep; nothing was written",
				disk.index, detail, DISK_OVERLAY_MAX_CHAIN);
		if (err)
			return kapsel_fail(error, error_len, err,
					   "disk %u: %s; nothing was written", disk.index, detail);
		m->opened[disk.index] = true;
		char *temp = NULL;
		if (asprintf(&temp, "%s.new", out) < 0)
			return kapsel_fail(error, error_len, -ENOMEM, "out of memory");
		const char *base = disk_image_chain_base(&m->sources[disk.index])->path;
		bool doomed = options->disks == SNAPSHOT_MERGE_DISKS_OVERLAY &&
			      (file_in_directory(base, out) || file_in_directory(base, temp));
		free(temp);
		if (doomed)
			return kapsel_fail(
				error, error_len, -EBUSY,
				"disk %u: the base image under its chain is a file of '%s', which the merge replaces, so an overlay over it would lose its base; merge into another directory, or copy the disk whole (--disk-format raw); nothing was written",
				disk.index, out);
	}
	return 0;
}

/* Flatten disk i into txn's directory and make its record and definition
 * name the new file. */
static int merge_write_disk(struct merge_disks *m, unsigned i, enum snapshot_merge_disks form,
			    struct vm_state_dir_txn *txn, const char *out,
			    struct snapshot_merge_disk_stats *stats, char *error, size_t error_len)
{
	bool raw = form == SNAPSHOT_MERGE_DISKS_RAW;
	char *name = m->names[i];
	snprintf(name, VM_STATE_FILE_NAME_MAX,
		 raw ? VM_STATE_FILE_DISK_RAW_FORMAT : VM_STATE_FILE_DISK_OVERLAY_FORMAT, i);
	char *temp_path = NULL, *final_path = NULL;
	if (asprintf(&temp_path, "%s/%s", txn->temp_path, name) < 0) {
		temp_path = NULL;
		return kapsel_fail(error, error_len, -ENOMEM, "out of memory");
	}
	int err = 0;
	int fd = openat(txn->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = kapsel_fail(error, error_len, -errno, "cannot create '%s': %s", temp_path,
				  strerror(errno));
		free(temp_path);
		return err;
	}
	struct disk_flatten_result result;
	char detail[1024];
	err = disk_image_flatten(&m->sources[i], raw ? DISK_FLATTEN_RAW : DISK_FLATTEN_OVERLAY, fd,
				 temp_path, &result, detail, sizeof(detail));
	if (err)
		kapsel_fail(error, error_len, err, "disk %u: %s", i, detail);
	struct stat st;
	/* Frozen as a snapshot's images are: nothing writes it again (a
	 * restore runs on an overlay of its own over it). */
	if (!err && (fchmod(fd, 0444) < 0 || fstat(fd, &st) < 0))
		err = kapsel_fail(error, error_len, -errno, "'%s': %s", temp_path, strerror(errno));
	close(fd);
	free(temp_path);
	if (err)
		return err;
	struct vm_state_manifest_file entry = {
		.size_bytes = result.file_bytes,
		.crc32c = result.file_crc,
		.data_bytes = result.data_bytes,
	};
	snprintf(entry.name, sizeof(entry.name), "%s", name);
	vm_state_dir_add(txn, &entry);

	struct vm_state_disk *rec = &m->records[i];
	rec->flags = VM_STATE_DISK_FROZEN | (raw ? 0 : VM_STATE_DISK_OVERLAY);
	rec->size_bytes = (uint64_t)st.st_size;
	rec->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
	rec->path_bytes = (uint32_t)strlen(name);
	/* The definition, for people and tools, says where the file is
	 * once committed; a restore goes by the record's plain name. */
	if (asprintf(&final_path, "%s/%s", out, name) < 0)
		return kapsel_fail(error, error_len, -ENOMEM, "out of memory");
	free(m->config.disks[i].path);
	m->config.disks[i].path = final_path;
	m->config.disks[i].format = raw ? VM_DISK_FORMAT_RAW : VM_DISK_FORMAT_OVERLAY;

	stats->flattened = true;
	stats->overlays = result.overlays;
	snprintf(stats->file, sizeof(stats->file), "%s", name);
	stats->virtual_bytes = result.virtual_bytes;
	stats->file_bytes = result.file_bytes;
	stats->data_bytes = result.data_bytes;
	stats->blocks = result.blocks;
	stats->blocks_compared = result.blocks_compared;
	return 0;
}

/* state.bin of the merged state: the top's records without the parent,
 * the definition written again, the flattened disks' records new. */
static int merge_write_state(const struct vm_state_dir *top, struct merge_disks *m,
			     struct vm_state_dir_txn *txn, const char *out, char *error,
			     size_t error_len)
{
	struct vm_state_writer w;
	struct vm_state_manifest_file entry;
	char detail[512];
	bool definition_written = false;
	int err = 0;
	vm_state_writer_init_buffer(&w);
	vm_state_put_begin(&w, VM_STATE_KIND_STATE);
	for (size_t i = 0; i < top->state.count && !err; i++) {
		const struct vm_state_stored_record *r = &top->state.records[i];
		if (r->type == VM_STATE_PARENT)
			continue;
		if (r->type == VM_STATE_DEFINITION || r->type == VM_STATE_CONFIG_TEXT) {
			/* Where it was; as domain XML even from a format-1 state. */
			if (!definition_written)
				err = snapshot_put_definition(&m->config, &w, error, error_len);
			definition_written = true;
			continue;
		}
		if (r->type == VM_STATE_DISK) {
			struct vm_state_disk disk = { .index = UINT32_MAX };
			if (r->length_bytes >= sizeof(disk))
				memcpy(&disk, r->payload, sizeof(disk));
			if (disk.index < m->count && m->names[disk.index][0]) {
				const char *name = m->names[disk.index];
				struct iovec iov[2] = {
					{ &m->records[disk.index], sizeof(m->records[disk.index]) },
					{ (void *)name, strlen(name) },
				};
				vm_state_putv(&w, VM_STATE_DISK, r->flags, iov, 2);
				continue;
			}
		}
		vm_state_put(&w, r->type, r->flags, r->payload, r->length_bytes);
	}
	vm_state_put_end(&w);
	if (!err)
		err = w.error;
	if (!err)
		err = vm_state_write_file(txn->dirfd, VM_STATE_FILE_STATE, w.buffer, w.buffer_bytes,
					  &entry);
	vm_state_writer_free(&w);
	if (err)
		return kapsel_fail(error, error_len, err, "cannot write %s.new/state.bin: %s", out,
				   strerror(-err));
	vm_state_dir_add(txn, &entry);

	/* domain.xml, for people and tools: the definition as merged. */
	char *xml = NULL;
	size_t length = 0;
	FILE *text = open_memstream(&xml, &length);
	if (text) {
		int xml_err = vm_config_write_xml(&m->config, text, detail, sizeof(detail));
		if (fclose(text) == 0 && !xml_err &&
		    vm_state_write_file(txn->dirfd, VM_STATE_FILE_DOMAIN, xml, length, &entry) == 0)
			vm_state_dir_add(txn, &entry);
		free(xml);
	}
	return 0;
}

int snapshot_chain_merge(const char *path, const char *out,
			 const struct snapshot_merge_options *options,
			 struct snapshot_merge_stats *stats, char *error, size_t error_len)
{
	static const struct snapshot_merge_options defaults = { 0 };
	struct vm_state_dir top;
	struct snapshot_chain chain;
	struct vm_state_dir_txn txn;
	struct vm_state_manifest_file entry;
	struct snapshot_merge_stats local_stats;
	char detail[512];
	if (!options)
		options = &defaults;
	if (!stats)
		stats = &local_stats;
	memset(stats, 0, sizeof(*stats));
	struct merge_disks *m = calloc(1, sizeof(*m));
	if (!m)
		return kapsel_fail(error, error_len, -ENOMEM, "out of memory");
	vm_config_init(&m->config);
	int err = vm_state_dir_open(&top, path, false, error, error_len);
	if (err) {
		merge_disks_close(m);
		free(m);
		return err;
	}
	err = snapshot_chain_open(&top, &chain, error, error_len);
	if (err) {
		vm_state_dir_close(&top);
		merge_disks_close(m);
		free(m);
		return err;
	}
	struct guest_memory mem = { .memfd = -1, .size_bytes = top.info->memory_bytes };
	/* Every input is checked before anything is written. */
	err = merge_open_disks(&top, out, options, m, error, error_len);
	if (err)
		goto out;
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
		goto abort;
	}
	if (entry.crc32c != chain.memory_crc) {
		err = kapsel_fail(error, error_len, -EIO,
				  "%s.new/memory.img came out with another checksum than the chain's",
				  out);
		goto abort;
	}
	vm_state_dir_add(&txn, &entry);
	stats->layers = chain.count;
	stats->memory_bytes = entry.size_bytes;
	stats->memory_data_bytes = entry.data_bytes;
	stats->disk_count = m->count;
	for (unsigned i = 0; i < m->count; i++) {
		if (!m->opened[i])
			continue;
		err = merge_write_disk(m, i, options->disks, &txn, out, &stats->disks[i], error,
				       error_len);
		if (err)
			goto abort;
	}
	err = merge_write_state(&top, m, &txn, out, error, error_len);
	if (err)
		goto abort;
	err = vm_state_dir_commit(&txn, detail, sizeof(detail));
	if (err)
		kapsel_fail(error, error_len, err, "%s", detail);
	goto out;
abort:
	vm_state_dir_abort(&txn);
out:
	if (mem.host_base)
		munmap(mem.host_base, mem.size_bytes);
	merge_disks_close(m);
	free(m);
	snapshot_chain_close(&chain);
	vm_state_dir_close(&top);
	return err;
}
