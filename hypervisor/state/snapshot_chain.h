/* Dirty-only (diff) snapshots: a state holding only the pages changed since its parent, the parent check, layering a chain back into guest RAM, merging a chain into one full state with its disks flattened. */
#ifndef KAPSEL_SNAPSHOT_CHAIN_H
#define KAPSEL_SNAPSHOT_CHAIN_H

/*
 * A diff state is a state directory whose state.bin has a state.parent
 * record (struct vm_state_parent + the parent's directory name) and whose
 * memory.img holds only the pages memory.map lists (a listed page that is
 * a hole is zero); every other page is the parent's.  The parent is
 * itself a full state or a diff, VM_STATE_CHAIN_MAX_DEPTH diffs at most.
 *
 * A state file is untrusted, so the parent reference never chooses a host
 * path: the parent is only ever looked for as the directory of that plain
 * name (no '/', not starting with '.') next to the diff, itself a
 * directory and not a symlink, and used only if its save.info state id
 * and its whole memory's CRC32C are the ones the diff recorded.  After
 * layering, the CRC32C of the whole memory must be the diff's memory_crc.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "state/vm_state.h"

struct guest_memory;

/*
 * The parent record of state, checked: at most one, its length, a name of
 * 1-255 bytes without '/', NUL or a leading '.', a depth of 1 to
 * VM_STATE_CHAIN_MAX_DEPTH.  Returns 1 with *parent and name (NUL
 * terminated) filled for a diff, 0 for a full state (no record), or
 * -EPROTO with a message that names the problem.
 */
int snapshot_parent_parse(const struct vm_state_records *state, struct vm_state_parent *parent,
			  char name[VM_STATE_PARENT_NAME_MAX + 1], char *error, size_t error_len);

/* The state id of its save.info record, or NULL (no or a malformed record). */
const uint8_t *snapshot_state_id(const struct vm_state_records *state);

/*
 * The CRC32C of dir's whole memory: memory.img's for a full state, the
 * parent record's memory_crc for a diff.  -EPROTO with a message if the
 * state is malformed.
 */
int snapshot_state_memory_crc(const struct vm_state_dir *dir, uint32_t *crc, char *error,
			      size_t error_len);

/* A diff and its ancestors, opened and checked. */
struct snapshot_chain {
	unsigned count; /* layers: [0] the full state .. [count - 1] the top */
	const struct vm_state_dir *layers[VM_STATE_CHAIN_MAX_DEPTH + 1];
	bool owned[VM_STATE_CHAIN_MAX_DEPTH + 1]; /* opened here (the top is the caller's) */
	uint32_t memory_crc;			  /* of the top's layered memory */
};

/*
 * Open top's ancestors (top itself may be a full state: a chain of one)
 * and check every link as described above; every layer's memory.img and
 * memory.map checksums are checked while loading.  Returns 0 or -ENOENT
 * (a parent is missing) / -EPROTO (a parent does not match, a record or
 * file is malformed) with a message naming the directory and the fix.
 */
int snapshot_chain_open(const struct vm_state_dir *top, struct snapshot_chain *chain, char *error,
			size_t error_len);
void snapshot_chain_close(struct snapshot_chain *chain);

/*
 * Layer the chain's memory into mem (which reads as zeros everywhere on
 * entry): the full state's memory.img, then each diff's listed pages,
 * oldest first; then check the CRC32C of the whole of mem against the
 * top's.  Returns 0 or -EPROTO / -errno with a message.
 */
int snapshot_chain_load_memory(const struct snapshot_chain *chain, struct guest_memory *mem,
			       char *error, size_t error_len);

/*
 * Parse a memory.map of size_bytes for page_count pages: the right size,
 * no bit set past the last page.  Returns the number of pages it lists,
 * or -EPROTO with a message.
 */
int64_t snapshot_memory_map_count(const uint8_t *map, uint64_t size_bytes, uint64_t page_count,
				  char *error, size_t error_len);

struct kapsel_vm;
struct snapshot_restore_options;

/*
 * snapshot_restore of a diff state: open and check its chain, layer its
 * memory into vm's RAM (copied; a copy-on-write mapping, as clones use,
 * is refused: merge the chain first), then the rest of the state as
 * snapshot_restore does.  Returns 0 or -errno with a message.
 */
int snapshot_chain_restore(struct kapsel_vm *vm, const struct vm_state_dir *dir,
			   const struct snapshot_restore_options *options, char *error,
			   size_t error_len);

/* What kapsel merge makes of the disks the chain's snapshots froze. */
enum snapshot_merge_disks {
	/* Each frozen disk as one overlay over the base under its chain
	 * (NEWDIR/diskN.kovl); the default. */
	SNAPSHOT_MERGE_DISKS_OVERLAY = 0,
	/* Each frozen disk as a raw copy of the whole disk (NEWDIR/diskN.img). */
	SNAPSHOT_MERGE_DISKS_RAW = 1,
	/* Memory only: the disk records keep naming the frozen images. */
	SNAPSHOT_MERGE_DISKS_KEEP = 2,
};

struct snapshot_host_files;

struct snapshot_merge_options {
	enum snapshot_merge_disks disks;
	/* --disk N=PATH[,format=raw|overlay]: the frozen image of disk N that
	 * the top state's disk record names (may be NULL); a disk not named
	 * must be a file inside the top's directory (snapshot_bind_disks). */
	const struct snapshot_host_files *files;
};

struct snapshot_merge_disk_stats {
	bool flattened; /* false: not frozen (a save's disk), or --keep-disks */
	unsigned overlays;
	char file[VM_STATE_FILE_NAME_MAX]; /* in out */
	uint64_t virtual_bytes, file_bytes, data_bytes;
	uint64_t blocks, blocks_compared;
};

struct snapshot_merge_stats {
	unsigned layers;
	uint64_t memory_bytes, memory_data_bytes;
	unsigned disk_count;
	struct snapshot_merge_disk_stats disks[VM_CONFIG_MAX_DISKS];
};

/*
 * `kapsel merge`: write the state at path (a diff with its chain, or a
 * full state) as one full state at out (created, or replaced atomically
 * as a save is): memory layered into one memory.img, state.bin without
 * the parent record, domain.xml.
 *
 * Disks (options->disks, options NULL: overlay, no file named): each disk
 * a snapshot froze (record flag VM_STATE_DISK_FROZEN) is opened from the
 * file the operator named or a file inside path (never from the record's
 * path alone), read-only, its overlay chain link by link with the base
 * identity checks (at most DISK_OVERLAY_MAX_CHAIN deep); its size must be
 * the recorded one.  It is flattened into out (disk_flatten.h: one
 * overlay over the chain's base, or a raw copy), read back and compared
 * with the chain, and its record and the definition then name that file
 * by its plain name, which a restore finds inside the directory with no
 * --disk.  Disks no snapshot froze keep their records.  Nothing of the
 * inputs is written.  Everything, disk images included, is written to
 * "<out>.new" and committed in one rename; a failure leaves out as it
 * was (or absent).  Returns 0 or -errno with a message naming the disk,
 * the file and the fix.
 */
int snapshot_chain_merge(const char *path, const char *out,
			 const struct snapshot_merge_options *options,
			 struct snapshot_merge_stats *stats, char *error, size_t error_len);

#endif
