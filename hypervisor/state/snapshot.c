/* Save a VM to a state directory and bring it back: memory, vCPU, event channels, devices, disk references. */
#define _GNU_SOURCE
#include "state/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "devices/block/disk_overlay.h"
#include "core/clock.h"
#include "core/error_text.h"
#include "core/log.h"
#include "state/precopy.h"
#include "state/snapshot_chain.h"
#include "state/memory_check.h"
#include "state/progress.h"
#include "state/vcpu_state.h"
#include "core/vm.h"

static char *absolute_path(const char *path)
{
	char *resolved = realpath(path, NULL);
	return resolved ? resolved : strdup(path);
}

/* ---- Saving ----------------------------------------------------------------- */

void snapshot_quiesce_devices(struct kapsel_vm *vm)
{
	for (unsigned i = 0; i < vm->device_count; i++)
		if (vm->devices[i]->ops->quiesce)
			vm->devices[i]->ops->quiesce(vm->devices[i]);
}

void snapshot_resume_devices(struct kapsel_vm *vm)
{
	for (unsigned i = 0; i < vm->device_count; i++)
		if (vm->devices[i]->ops->resume)
			vm->devices[i]->ops->resume(vm->devices[i]);
}

/* A snapshot in progress: the frozen image of each disk (NULL: none)
 * and whether that frozen file is an overlay. */
static const char *const *frozen_disk_paths;
static const bool *frozen_disk_overlays;

static void write_disk_records(struct kapsel_vm *vm, struct vm_state_writer *out)
{
	for (unsigned i = 0; i < vm->config->disk_count; i++) {
		const struct vm_disk_config *d = &vm->config->disks[i];
		bool frozen = frozen_disk_paths && frozen_disk_paths[i];
		char *path = absolute_path(frozen ? frozen_disk_paths[i] : d->path);
		const char *p = path ? path : d->path;
		struct vm_state_disk rec = {
			.index = i,
			.bus = d->bus,
			.readonly = d->readonly,
			.flags = (frozen ? VM_STATE_DISK_FROZEN : 0) |
				 ((frozen ? frozen_disk_overlays[i]
					  : d->format == VM_DISK_FORMAT_OVERLAY)
					  ? VM_STATE_DISK_OVERLAY
					  : 0),
			.path_bytes = (uint32_t)strlen(p),
		};
		struct stat st;
		if (stat(p, &st) == 0) {
			rec.size_bytes = (uint64_t)st.st_size;
			rec.mtime_ns =
				(int64_t)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
		}
		struct iovec iov[2] = { { &rec, sizeof(rec) }, { (void *)p, rec.path_bytes } };
		vm_state_putv(out, VM_STATE_DISK, VM_STATE_RECORD_MANDATORY, iov, 2);
		free(path);
	}
}

int snapshot_write_vm_header(struct kapsel_vm *vm, struct vm_state_writer *out, char *error,
			     size_t error_len)
{
	const uint32_t M = VM_STATE_RECORD_MANDATORY;
	struct vm_state_vm_info info = {
		.memory_bytes = vm->mem.size_bytes,
		.generation = vm->generation, /* not the guest-writable start info copy */
		.clock_ns = vm_clock_ns(vm),
		.tsc_khz = vm->tsc_khz,
		.device_count = vm->device_count,
		.disk_count = vm->config->disk_count,
		.run_state = 1,
	};
	snprintf(info.name, sizeof(info.name), "%s", vm->config->name);
	memcpy(info.uuid, vm->config->uuid, sizeof(info.uuid));
	for (unsigned i = 0; i < VM_EXIT_COUNTER_COUNT; i++)
		info.exits_total += vm_exits(vm, (enum vm_exit_counter)i);
	vm_state_put(out, VM_STATE_VM_INFO, M, &info, sizeof(info));

	int err = snapshot_put_definition(vm->config, out, error, error_len);
	if (err)
		return err;
	return out->error ? kapsel_fail(error, error_len, out->error,
					"cannot write the VM state: %s", strerror(-out->error))
			  : 0;
}

int snapshot_write_vm_body(struct kapsel_vm *vm, struct vm_state_writer *out, char *error,
			   size_t error_len)
{
	const uint32_t M = VM_STATE_RECORD_MANDATORY;
	int err = vcpu_state_save(vm, out, error, error_len);
	if (err)
		return err;

	struct vm_state_evtchn evtchn = { .count = KAPSEL_EVTCHN_COUNT };
	for (unsigned p = 0; p < KAPSEL_EVTCHN_COUNT; p++) {
		evtchn.entries[p].allocated = vm->evtchn[p].allocated;
		evtchn.entries[p].vcpu = (uint8_t)vm->evtchn[p].vcpu;
		evtchn.entries[p].bound_device = (int16_t)vm->evtchn[p].bound_device;
	}
	vm_state_put(out, VM_STATE_EVTCHN, M, &evtchn, sizeof(evtchn));
	pv_cpu_save(vm, out); /* traps, callback, timer: only if the guest uses them */
	pv_mmu_save(vm, out); /* address spaces, mode: only if the guest uses them */

	for (unsigned i = 0; i < vm->device_count; i++) {
		struct kapsel_device *dev = vm->devices[i];
		struct vm_state_device rec = {
			.index = (uint16_t)i,
			.type = (uint16_t)dev->desc.type,
			.evtchn_port = __atomic_load_n(&dev->evtchn_port, __ATOMIC_ACQUIRE),
			.exits = dev->exits,
		};
		snprintf(rec.name, sizeof(rec.name), "%s", dev->ops->name);
		memcpy(rec.desc, &dev->desc, sizeof(rec.desc));
		vm_state_put(out, VM_STATE_DEVICE, M, &rec, sizeof(rec));
		if (dev->ops->save) {
			err = dev->ops->save(dev, out);
			if (err)
				return kapsel_fail(error, error_len, err,
						   "device %u (%s) cannot save its state: %s", i,
						   dev->ops->name, strerror(-err));
		}
	}
	write_disk_records(vm, out);
	if (out->error)
		return kapsel_fail(error, error_len, out->error, "cannot write the VM state: %s",
				   strerror(-out->error));
	return 0;
}

int snapshot_write_vm_records(struct kapsel_vm *vm, struct vm_state_writer *out, char *error,
			      size_t error_len)
{
	int err = snapshot_write_vm_header(vm, out, error, error_len);
	return err ? err : snapshot_write_vm_body(vm, out, error, error_len);
}

static void write_domain_xml(struct kapsel_vm *vm, struct vm_state_dir_txn *txn)
{
	char *xml = NULL;
	size_t length = 0;
	char error[256];
	FILE *out = open_memstream(&xml, &length);
	if (!out)
		return;
	int err = vm_config_write_xml(vm->config, out, error, sizeof(error));
	if (fclose(out) != 0 && !err)
		err = -ENOMEM;
	struct vm_state_manifest_file entry;
	if (!err && vm_state_write_file(txn->dirfd, VM_STATE_FILE_DOMAIN, xml, length, &entry) == 0)
		vm_state_dir_add(txn, &entry);
	else if (err)
		kapsel_warn("saving without domain.xml: %s", error);
	free(xml);
}

int snapshot_save(struct kapsel_vm *vm, const char *path, struct snapshot_save_stats *stats,
		  char *error, size_t error_len)
{
	struct vm_state_dir_txn txn;
	struct vm_state_writer w;
	struct vm_state_manifest_file entry;
	uint64_t start_ns = monotonic_ns();
	int err;

	if (stats)
		memset(stats, 0, sizeof(*stats));
	err = vm_state_dir_begin(&txn, path, error, error_len);
	if (err)
		return err;
	snapshot_quiesce_devices(vm);

	state_progress_pass("memory", vm->mem.size_bytes, 0, 0);
	err = vm_state_write_memory_file(txn.dirfd, VM_STATE_FILE_MEMORY, vm->mem.host_base,
					 vm->mem.size_bytes, vm->mem.memfd, &entry);
	if (err) {
		kapsel_fail(error, error_len, err, "cannot write %s.new/memory.img: %s", path,
			    strerror(-err));
		goto abort;
	}
	vm_state_dir_add(&txn, &entry);
	if (stats) {
		stats->memory_bytes = entry.size_bytes;
		stats->memory_data_bytes = entry.data_bytes;
	}

	state_progress_phase("state");
	vm_state_writer_init_buffer(&w);
	vm_state_put_begin(&w, VM_STATE_KIND_STATE);
	err = snapshot_write_vm_records(vm, &w, error, error_len);
	vm_state_put_end(&w);
	if (!err && w.error)
		err = kapsel_fail(error, error_len, w.error, "cannot build state.bin: %s",
				  strerror(-w.error));
	if (!err) {
		err = vm_state_write_file(txn.dirfd, VM_STATE_FILE_STATE, w.buffer, w.buffer_bytes,
					  &entry);
		if (err)
			kapsel_fail(error, error_len, err, "cannot write %s.new/state.bin: %s",
				    path, strerror(-err));
		else
			vm_state_dir_add(&txn, &entry);
		if (stats)
			stats->state_bytes = w.buffer_bytes;
	}
	vm_state_writer_free(&w);
	if (err)
		goto abort;
	snapshot_resume_devices(vm);
	write_domain_xml(vm, &txn);
	err = vm_state_dir_commit(&txn, error, error_len);
	if (stats)
		stats->total_ns = monotonic_ns() - start_ns;
	return err;

abort:
	snapshot_resume_devices(vm);
	vm_state_dir_abort(&txn);
	return err;
}

/* ---- Snapshots: freeze the disks, go on on overlays -------------------------- */

/* "<stem>@<unix ms>[-n].kovl" next to path, where stem is path without an
 * earlier "@....kovl" suffix: a new overlay file that does not exist yet. */
static char *overlay_name(const char *path, const char *tag)
{
	char *stem = strdup(path);
	if (!stem)
		return NULL;
	char *at = strrchr(stem, '@');
	size_t len = strlen(stem);
	if (at && len > 5 && strcmp(stem + len - 5, ".kovl") == 0 && !strchr(at, '/'))
		*at = '\0';
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	unsigned long long ms = (unsigned long long)now.tv_sec * 1000ull +
				(unsigned long long)now.tv_nsec / 1000000ull;
	char *name = NULL;
	for (unsigned n = 0; n < 1000; n++) {
		free(name);
		name = NULL;
		if (asprintf(&name, "%s@%s%s%llu%s%.0u.kovl", stem, tag ? tag : "", tag ? "-" : "",
			     ms, n ? "-" : "", n) < 0) {
			name = NULL;
			break;
		}
		if (access(name, F_OK) != 0)
			break;
	}
	free(stem);
	return name;
}

/* Every writable disk of vm goes on on a new overlay over its current
 * file, which is frozen (frozen[unit], owned[unit] to free; overlay[unit]:
 * the frozen file is itself an overlay).  Devices are quiesced. */
static int freeze_disks(struct kapsel_vm *vm, const char *frozen[VM_CONFIG_MAX_DISKS],
			bool frozen_overlay[VM_CONFIG_MAX_DISKS], char *owned[VM_CONFIG_MAX_DISKS],
			char *error, size_t error_len)
{
	int err = 0;
	for (unsigned i = 0; i < vm->device_count && !err; i++) {
		struct kapsel_device *dev = vm->devices[i];
		unsigned unit = dev->desc.unit;
		if (!dev->ops->disk_image || unit >= vm->config->disk_count)
			continue;
		struct disk_image *disk = dev->ops->disk_image(dev);
		if (!disk)
			continue;
		owned[unit] = strdup(disk->path);
		frozen_overlay[unit] = disk->overlay != NULL;
		if (disk->readonly) {
			/* Nothing changes a read-only disk: it is frozen as is. */
			frozen[unit] = owned[unit];
			continue;
		}
		char *overlay = overlay_name(disk->path, NULL);
		char *config_path = overlay ? strdup(overlay) : NULL;
		if (!overlay || !config_path || !owned[unit]) {
			free(overlay);
			free(config_path);
			err = kapsel_fail(error, error_len, -ENOMEM, "out of memory");
			break;
		}
		char detail[512];
		err = disk_image_push_overlay(disk, overlay, detail, sizeof(detail));
		free(overlay);
		if (err) {
			free(config_path);
			kapsel_fail(error, error_len, err, "disk %u: %s", unit, detail);
			break;
		}
		free(vm->config->disks[unit].path);
		vm->config->disks[unit].path = config_path;
		vm->config->disks[unit].format = VM_DISK_FORMAT_OVERLAY;
		frozen[unit] = owned[unit];
		kapsel_debug("disk %u: '%s' frozen for the snapshot, the VM goes on on '%s'", unit,
			     owned[unit], config_path);
	}
	return err;
}

int snapshot_take(struct kapsel_vm *vm, const char *path, struct snapshot_save_stats *stats,
		  char *error, size_t error_len)
{
	const char *frozen[VM_CONFIG_MAX_DISKS] = { 0 };
	bool frozen_overlay[VM_CONFIG_MAX_DISKS] = { 0 };
	char *owned[VM_CONFIG_MAX_DISKS] = { 0 };

	snapshot_quiesce_devices(vm);
	int err = freeze_disks(vm, frozen, frozen_overlay, owned, error, error_len);
	if (!err) {
		frozen_disk_paths = frozen;
		frozen_disk_overlays = frozen_overlay;
		err = snapshot_save(vm, path, stats, error, error_len);
		frozen_disk_paths = NULL;
		frozen_disk_overlays = NULL;
	}
	snapshot_resume_devices(vm);
	for (unsigned i = 0; i < VM_CONFIG_MAX_DISKS; i++)
		free(owned[i]);
	return err;
}

/* ---- Live save: memory.img written by pre-copy while the vCPU runs ---------- */

/* memory.img as a pre-copy sink: pages at their offsets, zero runs as holes. */
struct memory_file_sink {
	int fd;
	uint64_t written_bytes;
	uint8_t *present; /* a diff: bit p set once page p is written (or NULL) */
};

static void mark_present(struct memory_file_sink *f, uint64_t first_page, uint32_t count)
{
	if (f->present)
		for (uint64_t p = first_page; p < first_page + count; p++)
			f->present[p / 8] |= (uint8_t)(1u << (p % 8));
}

static int file_write_pages(void *context, uint64_t first_page, uint32_t count, uint32_t round,
			    const uint8_t *data)
{
	(void)round;
	struct memory_file_sink *f = context;
	uint64_t offset = first_page * PRECOPY_PAGE_BYTES;
	size_t length = (size_t)count * PRECOPY_PAGE_BYTES;
	mark_present(f, first_page, count);
	while (length) {
		ssize_t n = pwrite(f->fd, data, length, (off_t)offset);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		data += n;
		offset += (uint64_t)n;
		length -= (size_t)n;
		f->written_bytes += (uint64_t)n;
	}
	return 0;
}

static int file_write_zeros(void *context, uint64_t first_page, uint32_t count, uint32_t round)
{
	(void)round;
	struct memory_file_sink *f = context;
	mark_present(f, first_page, count);
	off_t offset = (off_t)(first_page * PRECOPY_PAGE_BYTES);
	off_t length = (off_t)count * PRECOPY_PAGE_BYTES;
	if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0)
		return 0;
	if (errno != EOPNOTSUPP)
		return -errno;
	/* A file system without holes: write the zeros. */
	static const uint8_t zeros[PRECOPY_PAGE_BYTES];
	for (uint32_t i = 0; i < count; i++) {
		int err = file_write_pages(f, first_page + i, 1, round, zeros);
		if (err)
			return err;
	}
	return 0;
}

static uint64_t file_bytes_written(void *context)
{
	return ((struct memory_file_sink *)context)->written_bytes;
}

static const struct precopy_sink_ops memory_file_sink_ops = {
	.write_pages = file_write_pages,
	.write_zeros = file_write_zeros,
	.bytes_written = file_bytes_written,
};

/* A random id for a new state (its save.info record). */
static void new_state_id(uint8_t id[16])
{
	if (getrandom(id, 16, 0) != 16) {
		/* No entropy source: time and address, unique enough to tell
		 * states apart (nothing secret rests on it). */
		uint64_t words[2] = { monotonic_ns(),
				      (uint64_t)(uintptr_t)id ^ (uint64_t)time(NULL) };
		memcpy(id, words, 16);
	}
}

/* Bytes of fd that are not holes (SEEK_DATA/SEEK_HOLE). */
static uint64_t file_data_bytes(int fd, uint64_t size_bytes)
{
	uint64_t total = 0;
	off_t pos = 0;
	for (;;) {
		off_t data = lseek(fd, pos, SEEK_DATA);
		if (data < 0 || (uint64_t)data >= size_bytes)
			break;
		off_t hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0 || (uint64_t)hole > size_bytes)
			hole = (off_t)size_bytes;
		total += (uint64_t)(hole - data);
		pos = hole;
	}
	return total;
}

/*
 * Dirty tracking for diff snapshots: the last state a tracked live save
 * wrote (the parent of the next diff) and the CRC32C of each of its
 * pages, as its memory (layered, for a diff) holds them.  One VM per
 * process, so one record.
 */
static struct {
	struct kapsel_vm *vm; /* NULL: no tracked state */
	uint8_t state_id[16];
	uint32_t memory_crc; /* of the whole memory */
	uint32_t depth;	     /* 0: a full state, else its diff depth */
	char *dir_real;	     /* realpath of its directory */
	uint32_t *page_crc;
	uint64_t page_count;
} tracking;

static void tracking_forget(void)
{
	free(tracking.dir_real);
	free(tracking.page_crc);
	memset(&tracking, 0, sizeof(tracking));
}

/* The last component of path (trailing '/' ignored) into name. */
static void last_component(const char *path, char *name, size_t name_len)
{
	size_t end = strlen(path);
	while (end > 1 && path[end - 1] == '/')
		end--;
	size_t start = end;
	while (start > 0 && path[start - 1] != '/')
		start--;
	snprintf(name, name_len, "%.*s", (int)(end - start), path + start);
}

/* realpath of the directory path will be in (path itself may not exist). */
static char *directory_of(const char *path)
{
	char *copy = strdup(path);
	if (!copy)
		return NULL;
	size_t end = strlen(copy);
	while (end > 1 && copy[end - 1] == '/')
		copy[--end] = '\0';
	char *slash = strrchr(copy, '/');
	char *real;
	if (!slash)
		real = realpath(".", NULL);
	else if (slash == copy)
		real = strdup("/");
	else {
		*slash = '\0';
		real = realpath(copy, NULL);
	}
	free(copy);
	return real;
}

/* A diff at path is possible: a tracked parent of this VM, next to path. */
static int check_diff_target(struct kapsel_vm *vm, const char *path, char *error, size_t error_len)
{
	if (tracking.vm != vm || !tracking.page_crc)
		return kapsel_fail(
			error, error_len, -EINVAL,
			"a diff snapshot needs a parent: first take a live snapshot or save with tracking (--track, track=yes), then diffs over it");
	if (tracking.page_count != vm->mem.size_bytes / PRECOPY_PAGE_BYTES)
		return kapsel_fail(
			error, error_len, -EINVAL,
			"the tracked parent has another RAM size; take a new --track snapshot");
	if (tracking.depth + 1 > VM_STATE_CHAIN_MAX_DEPTH)
		return kapsel_fail(
			error, error_len, -EINVAL,
			"the chain over '%s' has %u diffs, the most it may; take a full snapshot with --track (or merge the chain: kapsel merge)",
			tracking.dir_real, tracking.depth);
	struct stat st;
	if (lstat(tracking.dir_real, &st) < 0 || !S_ISDIR(st.st_mode))
		return kapsel_fail(error, error_len, -ENOENT,
				   "the parent '%s' of a diff is gone; take a new snapshot with --track",
				   tracking.dir_real);
	char *dir = directory_of(path);
	char *parent_dir = directory_of(tracking.dir_real);
	char name[NAME_MAX + 1], parent_name[NAME_MAX + 1];
	last_component(path, name, sizeof(name));
	last_component(tracking.dir_real, parent_name, sizeof(parent_name));
	int err = 0;
	if (!dir || !parent_dir || strcmp(dir, parent_dir) != 0)
		err = kapsel_fail(
			error, error_len, -EINVAL,
			"a diff snapshot is written next to its parent, in '%s' (its parent is '%s'); choose a directory there",
			parent_dir ? parent_dir : "?", tracking.dir_real);
	else if (strcmp(name, parent_name) == 0 || name[0] == '.' || !name[0])
		err = kapsel_fail(
			error, error_len, -EINVAL,
			"a diff snapshot needs a name of its own next to its parent '%s' (not starting with '.')",
			tracking.dir_real);
	free(dir);
	free(parent_dir);
	return err;
}

int snapshot_save_live(struct kapsel_vm *vm, const char *path, bool snapshot,
		       const struct snapshot_save_options *options,
		       struct snapshot_save_stats *stats, char *error, size_t error_len)
{
	struct snapshot_save_stats local_stats;
	if (!stats)
		stats = &local_stats;
	memset(stats, 0, sizeof(*stats));
	stats->live = true;
	uint64_t start_ns = monotonic_ns();
	const struct precopy_options precopy_options = {
		.max_rounds = options->max_rounds ? options->max_rounds
						  : SNAPSHOT_LIVE_DEFAULT_MAX_ROUNDS,
		.max_downtime_ms = options->max_downtime_ms ? options->max_downtime_ms
							    : SNAPSHOT_LIVE_DEFAULT_MAX_DOWNTIME_MS,
		/* A guest must not keep a change out of its saved state by
		 * crafting a CRC collision; rewriting a page of a file is cheap. */
		.write_logged_pages = true,
	};
	const char *frozen[VM_CONFIG_MAX_DISKS] = { 0 };
	bool frozen_overlay[VM_CONFIG_MAX_DISKS] = { 0 };
	char *owned[VM_CONFIG_MAX_DISKS] = { 0 };
	struct vm_state_dir_txn txn;
	struct vm_state_writer w;
	struct vm_state_manifest_file entry;
	struct memory_file_sink sink = { .fd = -1 };
	struct precopy pc;
	bool paused_here = false, quiesced = false;
	uint64_t pause_ns = 0;
	uint8_t *present = NULL;
	size_t present_bytes = (vm->mem.size_bytes / PRECOPY_PAGE_BYTES + 7) / 8;
	int err;

	if (options->diff && (err = check_diff_target(vm, path, error, error_len)))
		return err;
	err = vm_state_dir_begin(&txn, path, error, error_len);
	if (err)
		return err;
	vm_state_writer_init_buffer(&w);
	err = precopy_init(&pc, vm, &memory_file_sink_ops, &sink, &precopy_options);
	if (!err && options->diff) {
		/* The file starts as "the parent's pages": only what differs
		 * from them is written, and memory.map lists it. */
		present = calloc(1, present_bytes);
		if (!present)
			err = -ENOMEM;
		else
			memcpy(pc.sent_crc, tracking.page_crc, pc.page_count * sizeof(uint32_t));
		sink.present = present;
	}
	if (err) {
		precopy_free(&pc);
		vm_state_dir_abort(&txn);
		vm_state_writer_free(&w);
		return kapsel_fail(error, error_len, err, "out of memory");
	}
	sink.fd = openat(txn.dirfd, VM_STATE_FILE_MEMORY, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			 0600);
	if (sink.fd < 0 || ftruncate(sink.fd, (off_t)vm->mem.size_bytes) < 0) {
		err = kapsel_fail(error, error_len, -errno, "cannot create %s.new/memory.img: %s",
				  path, strerror(errno));
		goto out;
	}
	if (options->diff && precopy_logging_kept()) {
		/* The log has run since the parent's final pass: round 1
		 * takes the pages dirtied since, without reading the rest. */
		precopy_resume_logging(&pc);
		precopy_rounds(&pc);
	} else {
		err = precopy_start_logging(&pc);
		if (err) {
			kapsel_fail(error, error_len, err,
				    "KVM dirty logging (KVM_MEM_LOG_DIRTY_PAGES) failed: %s",
				    strerror(-err));
			goto out;
		}
		/* While the vCPU runs: everything once (a diff: what differs
		 * from the parent), then what it dirtied. */
		if (!precopy_first_pass(&pc))
			precopy_rounds(&pc);
	}
	if (pc.error) {
		err = kapsel_fail(error, error_len, pc.error, "cannot write %s.new/memory.img: %s",
				  path, strerror(-pc.error));
		goto out;
	}

	/* Stop: the last dirty pages, the pages the VMM wrote, the rest. */
	pause_ns = monotonic_ns();
	err = vm_pause(vm);
	if (err && err != -EALREADY) {
		kapsel_fail(error, error_len, err, "the VM stopped during the save");
		goto out;
	}
	paused_here = err == 0;
	err = 0;
	snapshot_quiesce_devices(vm);
	quiesced = true;
	if (snapshot) {
		/* The disks are frozen here, where memory is taken: what the
		 * guest wrote before is in them, what it writes after is not. */
		err = freeze_disks(vm, frozen, frozen_overlay, owned, error, error_len);
		if (err)
			goto out;
	}
	if (precopy_final_pass(&pc)) {
		err = kapsel_fail(error, error_len, pc.error, "cannot write %s.new/memory.img: %s",
				  path, strerror(-pc.error));
		goto out;
	}
	state_progress_phase("state");
	vm_state_put_begin(&w, VM_STATE_KIND_STATE);
	frozen_disk_paths = snapshot ? frozen : NULL;
	frozen_disk_overlays = snapshot ? frozen_overlay : NULL;
	err = snapshot_write_vm_records(vm, &w, error, error_len);
	frozen_disk_paths = NULL;
	frozen_disk_overlays = NULL;
	if (err)
		goto out;
	/* Everything is taken: the guest may go on while the files are synced
	 * and committed (unless the caller stops it after the save). */
	snapshot_resume_devices(vm);
	quiesced = false;
	uint64_t taken_ns = monotonic_ns() - pause_ns;
	if (paused_here && !options->keep_paused) {
		vm_resume(vm);
		paused_here = false;
		stats->vcpu_stopped_ns = monotonic_ns() - pause_ns;
	}
	if (options->track || options->diff)
		precopy_keep_logging(); /* for the next diff */
	precopy_stop_logging(&pc);
	uint32_t memory_crc = precopy_destination_crc(&pc, NULL);
	struct vm_state_save_info info = {
		.flags = VM_STATE_SAVE_LIVE,
		.rounds = pc.rounds,
		.vcpu_stopped_ns = stats->vcpu_stopped_ns ? stats->vcpu_stopped_ns : taken_ns,
		.memory_written_bytes = sink.written_bytes,
		.final_pages = pc.final_pages,
	};
	new_state_id(info.state_id);
	vm_state_put(&w, VM_STATE_SAVE_INFO, 0, &info, sizeof(info));
	uint64_t diff_pages = 0;
	if (options->diff) {
		char parent_name[NAME_MAX + 1];
		last_component(tracking.dir_real, parent_name, sizeof(parent_name));
		for (size_t i = 0; i < present_bytes; i++)
			diff_pages += (uint64_t)__builtin_popcount(present[i]);
		struct vm_state_parent parent = {
			.parent_memory_crc = tracking.memory_crc,
			.memory_crc = memory_crc,
			.depth = tracking.depth + 1,
			.name_bytes = (uint32_t)strlen(parent_name),
			.pages = diff_pages,
		};
		memcpy(parent.parent_id, tracking.state_id, 16);
		struct iovec iov[2] = { { &parent, sizeof(parent) },
					{ parent_name, parent.name_bytes } };
		vm_state_putv(&w, VM_STATE_PARENT, VM_STATE_RECORD_MANDATORY, iov, 2);
	}
	vm_state_put_end(&w);
	if (w.error) {
		err = kapsel_fail(error, error_len, w.error, "cannot build state.bin: %s",
				  strerror(-w.error));
		goto out;
	}

	stats->rounds = pc.rounds;
	stats->final_pages = pc.final_pages;
	stats->memory_bytes = vm->mem.size_bytes;
	stats->memory_written_bytes = sink.written_bytes;
	if (fsync(sink.fd) < 0) {
		err = kapsel_fail(error, error_len, -errno, "cannot write %s.new/memory.img: %s",
				  path, strerror(errno));
		goto out;
	}
	memset(&entry, 0, sizeof(entry));
	snprintf(entry.name, sizeof(entry.name), "%s", VM_STATE_FILE_MEMORY);
	entry.size_bytes = vm->mem.size_bytes;
	/* Of what the file holds: every page's CRC is of the bytes written
	 * (a diff holds only the pages memory.map lists, zeros elsewhere). */
	entry.crc32c = options->diff ? precopy_destination_crc(&pc, present) : memory_crc;
	entry.data_bytes = file_data_bytes(sink.fd, vm->mem.size_bytes);
	stats->memory_data_bytes = entry.data_bytes;
	vm_state_dir_add(&txn, &entry);
	err = vm_state_write_file(txn.dirfd, VM_STATE_FILE_STATE, w.buffer, w.buffer_bytes, &entry);
	if (err) {
		kapsel_fail(error, error_len, err, "cannot write %s.new/state.bin: %s", path,
			    strerror(-err));
		goto out;
	}
	vm_state_dir_add(&txn, &entry);
	stats->state_bytes = w.buffer_bytes;
	if (options->diff) {
		err = vm_state_write_file(txn.dirfd, VM_STATE_FILE_MEMORY_MAP, present,
					  present_bytes, &entry);
		if (err) {
			kapsel_fail(error, error_len, err, "cannot write %s.new/memory.map: %s",
				    path, strerror(-err));
			goto out;
		}
		vm_state_dir_add(&txn, &entry);
		stats->diff = true;
		stats->diff_pages = diff_pages;
		stats->depth = tracking.depth + 1;
	}
	write_domain_xml(vm, &txn);
	close(sink.fd);
	sink.fd = -1;
	err = vm_state_dir_commit(&txn, error, error_len);
	if (!err && (options->track || options->diff)) {
		/* This state is the parent of the next diff. */
		char *real = realpath(path, NULL);
		if (real) {
			uint32_t depth = options->diff ? tracking.depth + 1 : 0;
			tracking_forget();
			tracking.vm = vm;
			memcpy(tracking.state_id, info.state_id, 16);
			tracking.memory_crc = memory_crc;
			tracking.depth = depth;
			tracking.dir_real = real;
			tracking.page_crc = pc.sent_crc;
			tracking.page_count = pc.page_count;
			pc.sent_crc = NULL; /* kept */
			precopy_kept_log_from(&pc);
		}
	}
	goto done;

out:
	vm_state_dir_abort(&txn);
done:
	if (quiesced)
		snapshot_resume_devices(vm);
	if (paused_here && (err || !options->keep_paused)) {
		vm_resume(vm);
		paused_here = false;
		stats->vcpu_stopped_ns = monotonic_ns() - pause_ns;
	}
	stats->left_paused = paused_here;
	if (paused_here)
		stats->pause_start_ns = pause_ns;
	if (sink.fd >= 0)
		close(sink.fd);
	precopy_free(&pc);
	free(present);
	vm_state_writer_free(&w);
	for (unsigned i = 0; i < VM_CONFIG_MAX_DISKS; i++)
		free(owned[i]);
	stats->total_ns = monotonic_ns() - start_ns;
	return err;
}

int snapshot_prepare_disks(const struct vm_state_records *state, struct vm_config *config,
			   bool overlay_all, const char *tag, char *error, size_t error_len)
{
	size_t position = 0;
	const struct vm_state_stored_record *rec;
	while ((rec = vm_state_find(state, VM_STATE_DISK, &position)) != NULL) {
		struct vm_state_disk disk;
		if (rec->length_bytes < sizeof(disk))
			return kapsel_fail(error, error_len, -EPROTO, "a disk record is malformed");
		memcpy(&disk, rec->payload, sizeof(disk));
		if (disk.index >= config->disk_count ||
		    disk.path_bytes != rec->length_bytes - sizeof(disk))
			return kapsel_fail(error, error_len, -EPROTO,
					   "disk record %u does not match the saved definition",
					   disk.index);
		if (!(disk.flags & VM_STATE_DISK_FROZEN) && !overlay_all)
			continue;
		if (disk.readonly)
			continue; /* shared as is */
		/* The base is the file bound to the disk (snapshot_bind_host_files),
		 * never the path the record carries. */
		struct vm_disk_config *d = &config->disks[disk.index];
		char *overlay = overlay_name(d->path, tag);
		if (!overlay)
			return -ENOMEM;
		char detail[512];
		int err = disk_overlay_create(overlay, d->path, d->format, detail, sizeof(detail));
		if (err) {
			free(overlay);
			return kapsel_fail(error, error_len, err, "disk %u: %s", disk.index,
					   detail);
		}
		kapsel_debug("disk %u: running on the new overlay '%s'", disk.index, overlay);
		free(d->path);
		d->path = overlay;
		d->format = VM_DISK_FORMAT_OVERLAY;
	}
	return 0;
}

/* ---- Restoring ------------------------------------------------------------- */

int snapshot_parse_disk_record(const struct vm_state_stored_record *rec, struct vm_state_disk *disk,
			       char path[PATH_MAX], char *error, size_t error_len)
{
	if (rec->length_bytes < sizeof(*disk))
		return kapsel_fail(error, error_len, -EPROTO, "a disk record is malformed");
	memcpy(disk, rec->payload, sizeof(*disk));
	if (disk->path_bytes != rec->length_bytes - sizeof(*disk) || disk->path_bytes == 0 ||
	    disk->path_bytes >= PATH_MAX)
		return kapsel_fail(error, error_len, -EPROTO, "a disk record is malformed");
	memcpy(path, rec->payload + sizeof(*disk), disk->path_bytes);
	path[disk->path_bytes] = '\0';
	if (memchr(path, '\0', disk->path_bytes))
		return kapsel_fail(error, error_len, -EPROTO, "a disk record is malformed");
	return 0;
}

/* realpath(path) if it lies inside the directory whose realpath is dir_real, else NULL. */
static char *inside_directory(const char *path, const char *dir_real)
{
	char *real = realpath(path, NULL);
	size_t n = strlen(dir_real);
	if (real && strncmp(real, dir_real, n) == 0 && real[n] == '/' && real[n + 1])
		return real;
	free(real);
	return NULL;
}

/*
 * The file a saved path names inside the state directory (realpath
 * dir_real), resolved, or NULL: an absolute path counts if it resolves
 * inside it; a plain file name (no '/': how a merged state records the
 * disk images it holds) is that file of the directory, wherever the
 * directory was moved; any other relative path is nobody's.
 */
static char *state_dir_file(const char *recorded, const char *dir_real)
{
	if (!recorded || !recorded[0])
		return NULL;
	if (recorded[0] == '/')
		return inside_directory(recorded, dir_real);
	if (strchr(recorded, '/') || strcmp(recorded, ".") == 0 || strcmp(recorded, "..") == 0)
		return NULL;
	char *joined = NULL;
	if (asprintf(&joined, "%s/%s", dir_real, recorded) < 0)
		return NULL;
	char *real = inside_directory(joined, dir_real);
	free(joined);
	return real;
}

int snapshot_parse_disk_mapping(const char *text, struct snapshot_host_files *files, char *error,
				size_t error_len)
{
	char *end;
	unsigned long index = strtoul(text, &end, 10);
	if (end == text || *end != '=' || index >= VM_CONFIG_MAX_DISKS || !end[1] || end[1] == ',')
		return kapsel_fail(
			error, error_len, -EINVAL,
			"--disk '%s' is not INDEX=PATH[,format=raw|overlay] (INDEX 0-%u, the disk's place in the saved definition)",
			text, VM_CONFIG_MAX_DISKS - 1);
	char *path = strdup(end + 1);
	if (!path)
		return -ENOMEM;
	char *comma = strchr(path, ',');
	bool format_given = false;
	enum vm_disk_format format = VM_DISK_FORMAT_RAW;
	if (comma) {
		*comma = '\0';
		if (strcmp(comma + 1, "format=raw") == 0) {
			format_given = true;
		} else if (strcmp(comma + 1, "format=overlay") == 0 ||
			   strcmp(comma + 1, "format=kovl") == 0) {
			format_given = true;
			format = VM_DISK_FORMAT_OVERLAY;
		} else {
			free(path);
			return kapsel_fail(
				error, error_len, -EINVAL,
				"--disk '%s': only format=raw or format=overlay may follow the path",
				text);
		}
	}
	free(files->disk_paths[index]);
	files->disk_paths[index] = path;
	files->disk_formats[index] = format;
	files->disk_format_given[index] = format_given;
	return 0;
}

int snapshot_parse_net_mapping(const char *text, struct snapshot_host_files *files, char *error,
			       size_t error_len)
{
	char *end;
	unsigned long index = strtoul(text, &end, 10);
	if (end == text || *end != '=' || index >= VM_CONFIG_MAX_NETS || !end[1])
		return kapsel_fail(
			error, error_len, -EINVAL,
			"--net '%s' is not INDEX=SPEC (INDEX 0-%u, the interface's place in the saved definition; SPEC as kapsel run's --net, e.g. 0=socket=PATH,peer=PATH)",
			text, VM_CONFIG_MAX_NETS - 1);
	struct vm_net_config net;
	char detail[512];
	memset(&net, 0, sizeof(net));
	if (vm_config_parse_net(end + 1, &net, detail, sizeof(detail)) < 0)
		return kapsel_fail(error, error_len, -EINVAL, "--net %lu=...: %s", index, detail);
	if (files->net_given[index])
		vm_net_config_free(&files->nets[index]);
	files->nets[index] = net;
	files->net_given[index] = true;
	return 0;
}

/* text with every SNAPSHOT_CLONE_NUMBER replaced by number (malloc'd), or NULL. */
static char *expand_clone_number(const char *text, unsigned long number)
{
	char digits[24];
	int digits_len = snprintf(digits, sizeof(digits), "%lu", number);
	size_t marker_len = strlen(SNAPSHOT_CLONE_NUMBER), count = 0;
	for (const char *p = strstr(text, SNAPSHOT_CLONE_NUMBER); p;
	     p = strstr(p + marker_len, SNAPSHOT_CLONE_NUMBER))
		count++;
	char *out = malloc(strlen(text) + count * (size_t)digits_len + 1);
	if (!out)
		return NULL;
	char *w = out;
	for (const char *p = text; *p;) {
		if (strncmp(p, SNAPSHOT_CLONE_NUMBER, marker_len) == 0) {
			memcpy(w, digits, (size_t)digits_len);
			w += digits_len;
			p += marker_len;
		} else {
			*w++ = *p++;
		}
	}
	*w = '\0';
	return out;
}

int snapshot_parse_clone_net_mapping(const char *text, unsigned long clone_number,
				     unsigned long clone_count, struct snapshot_host_files *files,
				     char *error, size_t error_len)
{
	char *mine = expand_clone_number(text, clone_number);
	if (!mine)
		return kapsel_fail(error, error_len, -ENOMEM, "out of memory");
	int err = snapshot_parse_net_mapping(mine, files, error, error_len);
	free(mine);
	if (err || clone_count < 2)
		return err;
	/* Two clones would bind one socket (or share one tap): the endpoint
	 * must differ between clone numbers. */
	char *other_text = expand_clone_number(text, clone_number == 1 ? 2 : 1);
	struct snapshot_host_files other;
	memset(&other, 0, sizeof(other));
	err = other_text ? snapshot_parse_net_mapping(other_text, &other, error, error_len)
			 : kapsel_fail(error, error_len, -ENOMEM, "out of memory");
	free(other_text);
	if (err)
		return err;
	unsigned long index = strtoul(text, NULL, 10);
	const struct vm_net_config *a = &files->nets[index], *b = &other.nets[index];
	if (strcmp(a->path, b->path) == 0)
		err = kapsel_fail(
			error, error_len, -EINVAL,
			"--net %lu=...: the %lu clones would all use %s '%s'; put %s (each clone's number) in it, e.g. %s=%s%s",
			index, clone_count, a->backend == VM_NET_BACKEND_TAP ? "tap" : "socket",
			a->path, SNAPSHOT_CLONE_NUMBER,
			a->backend == VM_NET_BACKEND_TAP ? "tap" : "socket", a->path,
			SNAPSHOT_CLONE_NUMBER);
	else if (a->has_mac)
		err = kapsel_fail(
			error, error_len, -EINVAL,
			"--net %lu=...: mac= would give the %lu clones one MAC; leave it out, each clone derives its own",
			index, clone_count);
	snapshot_host_files_free(&other);
	return err;
}

void snapshot_host_files_free(struct snapshot_host_files *files)
{
	for (unsigned i = 0; i < VM_CONFIG_MAX_DISKS; i++)
		free(files->disk_paths[i]);
	for (unsigned i = 0; i < VM_CONFIG_MAX_NETS; i++)
		if (files->net_given[i])
			vm_net_config_free(&files->nets[i]);
	memset(files, 0, sizeof(*files));
}

static const char *net_model_option(enum vm_net_model model)
{
	return model == VM_NET_MODEL_NE2000 ? "model=ne2000" : "model=pv";
}

/* Interface i of a saved definition takes the operator's link (spec). */
static int bind_net(struct vm_config *config, unsigned i, const struct vm_net_config *spec,
		    bool new_identity, char *error, size_t error_len)
{
	struct vm_net_config *saved = &config->nets[i];
	if (spec->model != saved->model)
		return kapsel_fail(
			error, error_len, -EPROTO,
			"--net %u=...: the saved VM's interface %u is a %s NIC; a restore keeps the model: add %s",
			i, i, saved->model == VM_NET_MODEL_NE2000 ? "NE2000" : "PV",
			net_model_option(saved->model));
	uint8_t mac[6];
	vm_config_net_mac(config, i, mac);
	if (!new_identity && spec->has_mac && memcmp(spec->mac, mac, 6) != 0)
		return kapsel_fail(
			error, error_len, -EPROTO,
			"--net %u=...: mac= differs from the saved VM's %02x:%02x:%02x:%02x:%02x:%02x, which its guest and peers know; leave mac= out (a clone, --clone, gets a MAC of its own)",
			i, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
	char *path = strdup(spec->path);
	char *peer = spec->peer ? strdup(spec->peer) : NULL;
	if (!path || (spec->peer && !peer)) {
		free(path);
		free(peer);
		return -ENOMEM;
	}
	vm_net_config_free(saved);
	*saved = *spec;
	saved->path = path;
	saved->peer = peer;
	if (!new_identity) {
		/* The same VM: the MAC its guest knows. */
		memcpy(saved->mac, mac, 6);
		saved->has_mac = true;
	}
	/* A clone: the operator's mac=, else derived from its new uuid. */
	return 0;
}

/* --disk N=... for a disk the saved VM does not have is refused. */
static int check_disk_count(const struct snapshot_host_files *files, const struct vm_config *config,
			    char *error, size_t error_len)
{
	for (unsigned i = config->disk_count; i < VM_CONFIG_MAX_DISKS && files; i++)
		if (files->disk_paths[i])
			return kapsel_fail(error, error_len, -EINVAL,
					   "--disk %u=...: the saved VM has %u disk(s)", i,
					   config->disk_count);
	return 0;
}

/* The disk half of snapshot_bind_host_files (dir_real: the state
 * directory's realpath, or NULL); see snapshot_bind_disks. */
static int bind_disks(const struct vm_state_records *state, const char *dir_real,
		      const struct snapshot_host_files *files, bool frozen_only,
		      struct vm_config *config, char *error, size_t error_len)
{
	/* Every disk record's flags say which disks were overlays; a frozen
	 * disk (a snapshot's) is restored from its frozen file, the one its
	 * record names, in the format the record holds, not the file and
	 * format the VM went on with (which its definition has). */
	bool record_overlay[VM_CONFIG_MAX_DISKS] = { 0 };
	bool record_frozen[VM_CONFIG_MAX_DISKS] = { 0 };
	char *record_path[VM_CONFIG_MAX_DISKS] = { 0 };
	size_t position = 0;
	const struct vm_state_stored_record *rec;
	int err = 0;
	while ((rec = vm_state_find(state, VM_STATE_DISK, &position)) != NULL) {
		struct vm_state_disk disk;
		char path[PATH_MAX];
		err = snapshot_parse_disk_record(rec, &disk, path, error, error_len);
		if (err)
			goto out;
		if (disk.index >= config->disk_count) {
			err = kapsel_fail(error, error_len, -EPROTO,
					  "disk record %u does not match the saved definition",
					  disk.index);
			goto out;
		}
		record_overlay[disk.index] = (disk.flags & VM_STATE_DISK_OVERLAY) != 0;
		record_frozen[disk.index] = (disk.flags & VM_STATE_DISK_FROZEN) != 0;
		free(record_path[disk.index]);
		record_path[disk.index] = strdup(path);
		if (!record_path[disk.index]) {
			err = kapsel_fail(error, error_len, -ENOMEM, "out of memory");
			goto out;
		}
	}

	for (unsigned i = 0; i < config->disk_count; i++) {
		struct vm_disk_config *d = &config->disks[i];
		const char *named = files ? files->disk_paths[i] : NULL;
		char *bound = NULL;
		if (frozen_only && !record_frozen[i]) {
			if (named) {
				err = kapsel_fail(
					error, error_len, -EINVAL,
					"--disk %u=...: disk %u is not a frozen image of a snapshot (the saved VM went on writing it), so it is kept as it is; leave out --disk %u",
					i, i, i);
				goto out;
			}
			continue;
		}
		if (named) {
			/* The operator's file in the operator's format; a saved
			 * overlay must be named as one (the format is never
			 * taken from untrusted input alone). */
			bool format_given = files->disk_format_given[i];
			enum vm_disk_format format = files->disk_formats[i];
			if (!format_given &&
			    (record_overlay[i] ||
			     (!record_frozen[i] && d->format != VM_DISK_FORMAT_RAW))) {
				err = kapsel_fail(
					error, error_len, -EINVAL,
					"disk %u was a copy-on-write overlay when saved; if '%s' is that overlay, say so: --disk %u=%s,format=overlay",
					i, named, i, named);
				goto out;
			}
			bound = strdup(named);
			d->format = format;
		} else if (dir_real) {
			bound = state_dir_file(record_frozen[i] ? record_path[i] : d->path,
					       dir_real);
			if (bound)
				d->format = record_overlay[i] ? VM_DISK_FORMAT_OVERLAY
							      : VM_DISK_FORMAT_RAW;
		}
		if (!bound) {
			err = kapsel_fail(
				error, error_len, -EPERM,
				"disk %u: its image is not in the state directory; name it with --disk %u=PATH[,format=raw|overlay] (a saved state or migration stream never chooses host files)",
				i, i);
			goto out;
		}
		free(d->path);
		d->path = bound;
	}
out:
	for (unsigned i = 0; i < VM_CONFIG_MAX_DISKS; i++)
		free(record_path[i]);
	return err;
}

int snapshot_bind_disks(const struct vm_state_records *state, const char *state_dir,
			const struct snapshot_host_files *files, bool frozen_only,
			struct vm_config *config, char *error, size_t error_len)
{
	char *dir_real = state_dir ? realpath(state_dir, NULL) : NULL;
	if (state_dir && !dir_real)
		return kapsel_fail(error, error_len, -errno, "state directory '%s': %s", state_dir,
				   strerror(errno));
	int err = check_disk_count(files, config, error, error_len);
	if (!err)
		err = bind_disks(state, dir_real, files, frozen_only, config, error, error_len);
	free(dir_real);
	return err;
}

int snapshot_bind_host_files(const struct vm_state_records *state, const char *state_dir,
			     const struct snapshot_host_files *files, struct vm_config *config,
			     char *error, size_t error_len)
{
	char *dir_real = state_dir ? realpath(state_dir, NULL) : NULL;
	if (state_dir && !dir_real)
		return kapsel_fail(error, error_len, -errno, "state directory '%s': %s", state_dir,
				   strerror(errno));
	int err = check_disk_count(files, config, error, error_len);
	if (err)
		goto out;

	/* A network interface is a host endpoint (a tap device, a socket to
	 * bind and one to send to): the operator names each (--net N=SPEC);
	 * the state's own are never used. */
	for (unsigned i = config->net_count; i < VM_CONFIG_MAX_NETS && files; i++)
		if (files->net_given[i]) {
			err = kapsel_fail(error, error_len, -EINVAL,
					  "--net %u=...: the saved VM has %u network interface(s)",
					  i, config->net_count);
			goto out;
		}
	for (unsigned i = 0; i < config->net_count; i++) {
		if (!files || !files->net_given[i]) {
			err = kapsel_fail(
				error, error_len, -EPERM,
				"the saved VM has %u network interface(s); name the link of interface %u with --net %u=socket=PATH,peer=PATH or --net %u=tap=NAME (as on kapsel run; a saved state never chooses host endpoints)%s",
				config->net_count, i, i, i,
				files && files->new_identity
					? "; for several clones put " SNAPSHOT_CLONE_NUMBER
					  ", the clone's number, in socket= or tap= (kapsel clone --net)"
					: "");
			goto out;
		}
		err = bind_net(config, i, &files->nets[i], files->new_identity, error, error_len);
		if (err)
			goto out;
	}

	/* The kernel: named by the operator, or a file in the state directory. */
	char *kernel = NULL;
	if (files && files->kernel_path)
		kernel = strdup(files->kernel_path);
	else if (dir_real && config->kernel_path)
		kernel = inside_directory(config->kernel_path, dir_real);
	if (!kernel) {
		err = kapsel_fail(
			error, error_len, -EPERM,
			"the saved VM's kernel is not in the state directory; name it with --kernel FILE (a saved state or migration stream never chooses host files)");
		goto out;
	}
	free(config->kernel_path);
	config->kernel_path = kernel;

	err = bind_disks(state, dir_real, files, false, config, error, error_len);
out:
	free(dir_real);
	return err;
}

int snapshot_adopt_local_definition(const struct vm_config *local, struct vm_config *incoming,
				    char *error, size_t error_len)
{
	if (!local || !local->kernel_path)
		return kapsel_fail(
			error, error_len, -EPERM,
			"the destination has no definition of its own; start it with the VM's --kernel, --memory, --vcpus and --disk options (or its domain XML), as on the source: a migration stream never chooses host files");
	if (local->memory_bytes != incoming->memory_bytes)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the incoming VM has %llu bytes of RAM, this definition %llu",
				   (unsigned long long)incoming->memory_bytes,
				   (unsigned long long)local->memory_bytes);
	if (local->vcpus != incoming->vcpus)
		return kapsel_fail(
			error, error_len, -EPROTO,
			"the incoming VM has %u vCPU(s), this definition %u; start the destination with --vcpus %u (or <vcpu>%u</vcpu>)",
			incoming->vcpus, local->vcpus, incoming->vcpus, incoming->vcpus);
	if (local->disk_count != incoming->disk_count)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the incoming VM has %u disk(s), this definition %u",
				   incoming->disk_count, local->disk_count);
	for (unsigned i = 0; i < local->disk_count; i++)
		if (local->disks[i].bus != incoming->disks[i].bus ||
		    local->disks[i].readonly != incoming->disks[i].readonly)
			return kapsel_fail(
				error, error_len, -EPROTO,
				"disk %u: the incoming VM has it on another bus or with other access (read-only or not) than this definition",
				i);
	if (local->net_count != incoming->net_count)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the incoming VM has %u network interface(s), this definition %u",
				   incoming->net_count, local->net_count);
	uint8_t macs[VM_CONFIG_MAX_NETS][6];
	for (unsigned i = 0; i < local->net_count; i++) {
		if (local->nets[i].model != incoming->nets[i].model)
			return kapsel_fail(
				error, error_len, -EPROTO,
				"network interface %u: the incoming VM has another model (PV or NE2000) than this definition",
				i);
		/* The migrated guest and its peers know this MAC: it stays. */
		vm_config_net_mac(incoming, i, macs[i]);
		if (local->nets[i].has_mac && memcmp(local->nets[i].mac, macs[i], 6) != 0)
			return kapsel_fail(
				error, error_len, -EPROTO,
				"network interface %u: this definition's mac= differs from the incoming VM's %02x:%02x:%02x:%02x:%02x:%02x; leave mac= out or give that one",
				i, macs[i][0], macs[i][1], macs[i][2], macs[i][3], macs[i][4],
				macs[i][5]);
	}
	/* Compatible: every host file and endpoint is the destination's own. */
	char *kernel = strdup(local->kernel_path);
	if (!kernel)
		return -ENOMEM;
	free(incoming->kernel_path);
	incoming->kernel_path = kernel;
	for (unsigned i = 0; i < local->disk_count; i++) {
		char *path = strdup(local->disks[i].path);
		if (!path)
			return -ENOMEM;
		free(incoming->disks[i].path);
		incoming->disks[i] = local->disks[i];
		incoming->disks[i].path = path;
	}
	for (unsigned i = 0; i < local->net_count; i++) {
		const struct vm_net_config *mine = &local->nets[i];
		char *path = strdup(mine->path), *peer = mine->peer ? strdup(mine->peer) : NULL;
		if (!path || (mine->peer && !peer)) {
			free(path);
			free(peer);
			return -ENOMEM;
		}
		vm_net_config_free(&incoming->nets[i]);
		incoming->nets[i] = *mine;
		incoming->nets[i].path = path;
		incoming->nets[i].peer = peer;
		memcpy(incoming->nets[i].mac, macs[i], 6);
		incoming->nets[i].has_mac = true;
	}
	return 0;
}

int snapshot_check_disks(const struct vm_state_records *state, const struct vm_config *config,
			 char *error, size_t error_len)
{
	size_t position = 0;
	unsigned seen = 0;
	const struct vm_state_stored_record *rec;
	while ((rec = vm_state_find(state, VM_STATE_DISK, &position)) != NULL) {
		struct vm_state_disk disk;
		char recorded[PATH_MAX];
		int err = snapshot_parse_disk_record(rec, &disk, recorded, error, error_len);
		if (err)
			return err;
		if (disk.index != seen || disk.index >= config->disk_count)
			return kapsel_fail(error, error_len, -EPROTO,
					   "the disk records do not match the definition (%u disks)",
					   config->disk_count);
		seen++;
		const struct vm_disk_config *d = &config->disks[disk.index];
		if (disk.bus != (uint32_t)d->bus || (disk.readonly != 0) != d->readonly)
			return kapsel_fail(
				error, error_len, -EPROTO,
				"disk %u: the saved state has it on another bus or with other access (read-only or not) than this definition",
				disk.index);
		/* The file this side bound to the disk, not the recorded path. */
		const char *path = d->path;
		struct stat st;
		if (stat(path, &st) < 0)
			return kapsel_fail(
				error, error_len, -ENOENT,
				"disk %u: image '%s' is missing (%s); the saved VM needs it with the content it had when saved",
				disk.index, path, strerror(errno));
		if ((uint64_t)st.st_size != disk.size_bytes)
			return kapsel_fail(
				error, error_len, -EPROTO,
				"disk %u: image '%s' is %llu bytes but was %llu when the VM was saved; it is another image, or was replaced or resized",
				disk.index, path, (unsigned long long)st.st_size,
				(unsigned long long)disk.size_bytes);
		int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
		if (mtime != disk.mtime_ns)
			kapsel_debug("disk %u: '%s' changed since the save (the VM went on writing it)",
				     disk.index, path);
	}
	if (seen != config->disk_count)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved state describes %u of %u disks", seen,
				   config->disk_count);
	return 0;
}

static int apply_devices(struct kapsel_vm *vm, const struct vm_state_records *state, char *error,
			 size_t error_len)
{
	const struct vm_state_vm_info *info = NULL;
	const struct vm_state_stored_record *info_rec =
		vm_state_find(state, VM_STATE_VM_INFO, NULL);
	if (info_rec && info_rec->length_bytes == sizeof(*info))
		info = (const struct vm_state_vm_info *)info_rec->payload;
	if (!info)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved state has no VM information record");
	if (info->device_count != vm->device_count)
		return kapsel_fail(
			error, error_len, -EPROTO,
			"the saved VM had %u devices, this one has %u; the definition changed",
			info->device_count, vm->device_count);

	const struct vm_state_stored_record *evtchn_rec =
		vm_state_find(state, VM_STATE_EVTCHN, NULL);
	struct vm_state_evtchn evtchn;
	if (!evtchn_rec || evtchn_rec->length_bytes != sizeof(evtchn))
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved state's event channel record is missing or malformed");
	memcpy(&evtchn, evtchn_rec->payload, sizeof(evtchn));
	if (evtchn.count != KAPSEL_EVTCHN_COUNT)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved state has %u event channels, expected %u",
				   evtchn.count, KAPSEL_EVTCHN_COUNT);

	/* Walk the records in order: a device record, then its own records. */
	struct kapsel_device *current = NULL;
	unsigned seen = 0;
	for (size_t i = 0; i < state->count; i++) {
		const struct vm_state_stored_record *rec = &state->records[i];
		if (rec->type == VM_STATE_DEVICE) {
			struct vm_state_device d;
			if (rec->length_bytes != sizeof(d))
				return kapsel_fail(error, error_len, -EPROTO,
						   "a device record is malformed");
			memcpy(&d, rec->payload, sizeof(d));
			if (d.index != seen || d.index >= vm->device_count)
				return kapsel_fail(error, error_len, -EPROTO,
						   "device records are out of order (index %u)",
						   d.index);
			current = vm->devices[d.index];
			struct kapsel_device_desc saved_desc;
			memcpy(&saved_desc, d.desc, sizeof(saved_desc));
			if (d.type != current->desc.type)
				return kapsel_fail(
					error, error_len, -EPROTO,
					"device %u was a %s (type %u) when saved but is a %s now; the definition changed",
					d.index, d.name[0] ? d.name : "?", d.type,
					current->ops->name);
			if (saved_desc.io_base != current->desc.io_base ||
			    saved_desc.doorbell_port != current->desc.doorbell_port ||
			    saved_desc.capacity_sectors != current->desc.capacity_sectors ||
			    saved_desc.flags != current->desc.flags)
				return kapsel_fail(
					error, error_len, -EPROTO,
					"device %u (%s) differs from the saved one (ports, capacity or flags); the guest would see a different device",
					d.index, current->ops->name);
			if (d.evtchn_port != UINT32_MAX &&
			    (d.evtchn_port >= KAPSEL_EVTCHN_COUNT ||
			     evtchn.entries[d.evtchn_port].bound_device != (int16_t)d.index))
				return kapsel_fail(
					error, error_len, -EPROTO,
					"device %u is bound to event channel %u, which the channel table does not agree with",
					d.index, d.evtchn_port);
			__atomic_store_n(&current->evtchn_port, d.evtchn_port, __ATOMIC_RELEASE);
			current->exits = d.exits;
			seen++;
			continue;
		}
		if (rec->type < VM_STATE_DEVICE_FIRST || rec->type > VM_STATE_DEVICE_LAST)
			continue;
		int err = -ENOENT;
		char detail[256] = "";
		if (current && current->ops->load)
			err = current->ops->load(current, rec->type, rec->payload,
						 rec->length_bytes, detail, sizeof(detail));
		if (err == -ENOENT) {
			if (rec->flags & VM_STATE_RECORD_MANDATORY)
				return kapsel_fail(
					error, error_len, -EPROTO,
					"record type %#x (device %s) is mandatory and this Kapsel's device cannot load it",
					rec->type, current ? current->ops->name : "none");
			continue;
		}
		if (err)
			return kapsel_fail(error, error_len, err, "device %s: %s",
					   current ? current->ops->name : "?", detail);
	}
	if (seen != vm->device_count)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved state describes %u of %u devices", seen,
				   vm->device_count);

	for (unsigned p = 0; p < KAPSEL_EVTCHN_COUNT; p++) {
		int bound = evtchn.entries[p].bound_device;
		if (bound < -1 || bound >= (int)vm->device_count ||
		    (bound >= 0 && vm->devices[bound]->evtchn_port != p))
			return kapsel_fail(
				error, error_len, -EPROTO,
				"event channel %u is bound to device %d, which does not match the devices",
				p, bound);
		if (evtchn.entries[p].vcpu >= vm->vcpu_count)
			return kapsel_fail(
				error, error_len, -EPROTO,
				"event channel %u is bound to vCPU %u, but the VM has %u vCPUs; the state is damaged or forged",
				p, evtchn.entries[p].vcpu, vm->vcpu_count);
		vm->evtchn[p].allocated = evtchn.entries[p].allocated != 0;
		vm->evtchn[p].bound_device = bound;
		vm->evtchn[p].vcpu = evtchn.entries[p].vcpu;
	}
	return 0;
}

int snapshot_apply_vm_records(struct kapsel_vm *vm, const struct vm_state_records *state,
			      bool new_identity, char *error, size_t error_len)
{
	const struct vm_state_stored_record *info_rec =
		vm_state_find(state, VM_STATE_VM_INFO, NULL);
	struct vm_state_vm_info info;
	if (!info_rec || info_rec->length_bytes != sizeof(info))
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved state has no VM information record");
	memcpy(&info, info_rec->payload, sizeof(info));
	if (info.memory_bytes != vm->mem.size_bytes)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved VM had %llu bytes of RAM, this one %llu",
				   (unsigned long long)info.memory_bytes,
				   (unsigned long long)vm->mem.size_bytes);
	int err = apply_devices(vm, state, error, error_len);
	if (err)
		return err;
	/* The memory image came from a file or a peer: never trust its copy
	 * of the pages only the hypervisor writes. */
	err = vm_rebuild_hypervisor_pages(vm);
	if (err)
		return kapsel_fail(error, error_len, err,
				   "guest memory too small for the hypervisor's tables");
	err = vcpu_state_load(vm, state, error, error_len);
	if (!err)
		err = pv_cpu_load(vm, state, error, error_len); /* after the event channels */
	if (!err)
		err = pv_mmu_load(vm, state, error, error_len);
	if (err)
		return err;
	if (info.tsc_khz && vm->tsc_khz && info.tsc_khz != vm->tsc_khz)
		kapsel_warn("the saved VM's TSC ran at %llu kHz, this host's at %llu kHz; the guest recalibrates on the new generation",
			    (unsigned long long)info.tsc_khz, (unsigned long long)vm->tsc_khz);

	/* The Kapsel clock goes on from where it stopped: paused time, time
	 * on disk and migration downtime are invisible to the guest. */
	vm->boot_monotonic_ns = monotonic_ns() - info.clock_ns;
	/* A restored or cloned guest must re-derive what has to be unique;
	 * it sees the bump in start info (KAPSEL_FEATURE_GENERATION). */
	vm->generation = info.generation + 1;
	__atomic_store_n(&vm->start_info->generation, vm->generation, __ATOMIC_RELEASE);
	if (new_identity) {
		memset(vm->start_info->name, 0, sizeof(vm->start_info->name));
		snprintf(vm->start_info->name, sizeof(vm->start_info->name), "%s",
			 vm->config->name);
		memcpy(vm->start_info->uuid, vm->config->uuid, sizeof(vm->start_info->uuid));
	}
	return 0;
}

/*
 * Replace guest RAM with a private (copy-on-write) mapping of memory.img,
 * open as fd: pages are read when first touched and shared, until written,
 * with the page cache and every VM mapping the file.  The mapping holds
 * the file (its inode), not its name: a later save into the same
 * directory puts a new memory.img in place and unlinks this one, which
 * lives on until the VM ends; only a write into this very file (not
 * something Kapsel does) would change pages not yet touched.
 */
static int map_memory_private(struct kapsel_vm *vm, int fd, char *error, size_t error_len)
{
	void *mapped = mmap(vm->mem.host_base, vm->mem.size_bytes, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd, 0);
	int err = mapped == MAP_FAILED ? -errno : 0;
	if (err)
		return kapsel_fail(error, error_len, err, "cannot map memory.img: %s",
				   strerror(-err));
	/* The memfd no longer backs guest RAM. */
	if (vm->mem.memfd >= 0)
		close(vm->mem.memfd);
	vm->mem.memfd = -1;
	/* Tell KVM again where RAM is; its MMU notifiers already dropped the
	 * old pages when the mapping was replaced. */
	struct kvm_userspace_memory_region region = {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = vm->mem.size_bytes,
		.userspace_addr = (uint64_t)(uintptr_t)vm->mem.host_base,
	};
	if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		return kapsel_fail(error, error_len, -errno, "KVM_SET_USER_MEMORY_REGION: %s",
				   strerror(errno));
	return 0;
}

int snapshot_restore(struct kapsel_vm *vm, const struct vm_state_dir *dir,
		     const struct snapshot_restore_options *options, char *error, size_t error_len)
{
	const struct vm_state_manifest_file *memory = vm_state_dir_file(dir, VM_STATE_FILE_MEMORY);
	struct vm_state_parent parent;
	char parent_name[VM_STATE_PARENT_NAME_MAX + 1];
	int err = snapshot_parent_parse(&dir->state, &parent, parent_name, error, error_len);
	if (err < 0)
		return err;
	if (err) /* a diff: its memory is layered over its parents' */
		return snapshot_chain_restore(vm, dir, options, error, error_len);

	if (!memory || memory->size_bytes != vm->mem.size_bytes)
		return kapsel_fail(error, error_len, -EPROTO,
				   "memory.img does not match the VM's RAM size");
	if (!options->map_private) {
		/* Everything vm_create wrote goes; holes stay unallocated. */
		guest_memory_clear(&vm->mem);
		err = vm_state_load_flat_file(dir->dirfd, VM_STATE_FILE_MEMORY, vm->mem.host_base,
					      memory->size_bytes, memory->crc32c, false, error,
					      error_len);
		if (err)
			return err;
		return snapshot_apply_vm_records(vm, &dir->state, options->new_identity, error,
						 error_len);
	}

	/* Lazily: map the file, check it in the background while the guest
	 * runs with its outputs held (memory_check.h). */
	int fd = openat(dir->dirfd, VM_STATE_FILE_MEMORY, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kapsel_fail(error, error_len, -errno, "memory.img: %s", strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != memory->size_bytes) {
		close(fd);
		return kapsel_fail(
			error, error_len, -EPROTO,
			"memory.img changed size since the state directory was opened; restore again");
	}
	err = map_memory_private(vm, fd, error, error_len);
	if (!err)
		err = snapshot_apply_vm_records(vm, &dir->state, options->new_identity, error,
						error_len);
	if (err && !options->memory_verified) {
		/* The records may have failed because the memory they point
		 * into is damaged: if so, that is the news. */
		char detail[512];
		if (vm_state_check_flat_fd(fd, VM_STATE_FILE_MEMORY, memory->size_bytes,
					   memory->crc32c, NULL, detail, sizeof(detail)) < 0)
			err = kapsel_fail(error, error_len, -EPROTO, "%s", detail);
	}
	if (!err && !options->memory_verified) {
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s", dir->path ? dir->path : ".");
		err = memory_check_start(vm, fd, path, memory->size_bytes, memory->crc32c, error,
					 error_len);
	}
	close(fd);
	return err;
}
