/* Copy-on-write disk overlays on plain files (snapshots, clones) and the block I/O that reads through them. */
#define _GNU_SOURCE
#include "devices/block/disk_overlay.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error_text.h"
#include "core/log.h"
#include "state/vm_state.h"

static int full_pread(int fd, void *buffer, size_t length, uint64_t offset)
{
	uint8_t *p = buffer;
	while (length) {
		ssize_t n = pread(fd, p, length, (off_t)offset);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* the image shrank under us */
		p += n;
		offset += (uint64_t)n;
		length -= (size_t)n;
	}
	return 0;
}

static int full_pwrite(int fd, const void *buffer, size_t length, uint64_t offset)
{
	const uint8_t *p = buffer;
	while (length) {
		ssize_t n = pwrite(fd, p, length, (off_t)offset);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -ENOSPC;
		p += n;
		offset += (uint64_t)n;
		length -= (size_t)n;
	}
	return 0;
}

static uint32_t header_crc(const struct disk_overlay_header *h)
{
	struct disk_overlay_header copy = *h;
	copy.header_crc = 0;
	return vm_state_crc32c(0, &copy, sizeof(copy));
}

/* Virtual size and identity of the base image at path, read in the format
 * the caller says it has (raw: its size; overlay: its header). */
static int base_virtual_bytes(const char *path, enum vm_disk_format format, uint64_t *bytes,
			      struct disk_overlay_base_identity *identity, char *error,
			      size_t error_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kapsel_fail(error, error_len, -errno, "base image '%s': %s", path,
				   strerror(errno));
	struct stat st;
	struct disk_overlay_header h;
	int err = 0;
	if (fstat(fd, &st) < 0) {
		err = kapsel_fail(error, error_len, -errno, "base image '%s': %s", path,
				  strerror(errno));
	} else if (format == VM_DISK_FORMAT_OVERLAY) {
		if ((size_t)st.st_size < sizeof(h) || full_pread(fd, &h, sizeof(h), 0) != 0 ||
		    memcmp(h.magic, DISK_OVERLAY_MAGIC, 8) != 0 || header_crc(&h) != h.header_crc)
			err = kapsel_fail(error, error_len, -EINVAL,
					  "base image '%s' is not a valid Kapsel overlay", path);
		else
			*bytes = h.virtual_bytes;
	} else if (S_ISBLK(st.st_mode)) {
		off_t end = lseek(fd, 0, SEEK_END);
		*bytes = end > 0 ? (uint64_t)end : 0;
	} else {
		*bytes = (uint64_t)st.st_size;
	}
	if (!err)
		disk_overlay_identity_of(&st, identity);
	close(fd);
	return err;
}

void disk_overlay_identity_of(const struct stat *st, struct disk_overlay_base_identity *identity)
{
	identity->device = (uint64_t)st->st_dev;
	identity->inode = (uint64_t)st->st_ino;
	identity->size_bytes = (uint64_t)st->st_size;
	identity->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000ll + st->st_mtim.tv_nsec;
}

int disk_overlay_header_init(struct disk_overlay_header *h, const char *base_path,
			     enum vm_disk_format base_format, uint64_t virtual_bytes,
			     const struct disk_overlay_base_identity *base)
{
	memset(h, 0, sizeof(*h));
	size_t path_bytes = strlen(base_path);
	if (path_bytes >= sizeof(h->base_path))
		return -ENAMETOOLONG;
	memcpy(h->magic, DISK_OVERLAY_MAGIC, 8);
	h->version = DISK_OVERLAY_VERSION;
	h->block_bytes = DISK_OVERLAY_BLOCK_BYTES;
	h->virtual_bytes = virtual_bytes;
	h->base_identity = *base;
	h->base_format = (uint32_t)base_format;
	uint64_t blocks = (virtual_bytes + h->block_bytes - 1) / h->block_bytes;
	h->bitmap_offset = DISK_OVERLAY_HEADER_BYTES;
	h->bitmap_bytes = (blocks + 7) / 8;
	h->data_offset =
		(h->bitmap_offset + h->bitmap_bytes + (1u << 20) - 1) & ~((1ull << 20) - 1);
	h->base_path_bytes = (uint32_t)path_bytes;
	memcpy(h->base_path, base_path, path_bytes);
	h->header_crc = header_crc(h);
	return 0;
}

int disk_overlay_create(const char *overlay_path, const char *base_path,
			enum vm_disk_format base_format, char *error, size_t error_len)
{
	char *base = realpath(base_path, NULL);
	if (!base)
		return kapsel_fail(error, error_len, -errno, "base image '%s': %s", base_path,
				   strerror(errno));
	struct disk_overlay_header h;
	struct disk_overlay_base_identity identity;
	uint64_t virtual_bytes = 0;
	int err =
		base_virtual_bytes(base, base_format, &virtual_bytes, &identity, error, error_len);
	if (!err && disk_overlay_header_init(&h, base, base_format, virtual_bytes, &identity) < 0)
		err = kapsel_fail(error, error_len, -ENAMETOOLONG,
				  "base image path '%s' is too long", base);
	free(base);
	if (err)
		return err;

	int fd = open(overlay_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return kapsel_fail(error, error_len, -errno, "cannot create overlay '%s': %s",
				   overlay_path, strerror(errno));
	err = full_pwrite(fd, &h, sizeof(h), 0);
	if (!err && ftruncate(fd, (off_t)(h.data_offset + virtual_bytes)) < 0)
		err = -errno;
	if (!err && fsync(fd) < 0)
		err = -errno;
	close(fd);
	if (err) {
		unlink(overlay_path);
		return kapsel_fail(error, error_len, err, "cannot write overlay '%s': %s",
				   overlay_path, strerror(-err));
	}
	return 0;
}

int disk_overlay_attach(struct disk_image *disk, const struct vm_disk_config *config,
			unsigned depth, char *error, size_t error_len)
{
	struct disk_overlay_header h;
	struct stat st;
	disk->overlay = NULL;
	if (fstat(disk->fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size < sizeof(h))
		return kapsel_fail(
			error, error_len, -EINVAL,
			"disk image '%s' is configured as an overlay but is not one (too small); drop format=overlay if it is a raw image",
			config->path);
	/* Aligned, whole-page read: fine with O_DIRECT too. */
	int flags = fcntl(disk->fd, F_GETFL);
	uint8_t *raw = aligned_alloc(4096, sizeof(h));
	if (!raw)
		return -ENOMEM;
	int err = full_pread(disk->fd, raw, sizeof(h), 0);
	memcpy(&h, raw, sizeof(h));
	free(raw);
	if (err)
		return kapsel_fail(error, error_len, err, "disk image '%s': %s", config->path,
				   strerror(-err));
	if (memcmp(h.magic, DISK_OVERLAY_MAGIC, 8) != 0)
		return kapsel_fail(
			error, error_len, -EINVAL,
			"disk image '%s' is configured as an overlay but is not one; drop format=overlay if it is a raw image",
			config->path);

	const char *path = config->path;
	if (header_crc(&h) != h.header_crc)
		return kapsel_fail(error, error_len, -EINVAL,
				   "overlay '%s' has a corrupt header (checksum)", path);
	if (h.version != DISK_OVERLAY_VERSION)
		return kapsel_fail(
			error, error_len, -EINVAL,
			"overlay '%s' has version %u; this Kapsel reads %u (version 1 overlays do not record which file their base is and cannot be opened safely)",
			path, h.version, DISK_OVERLAY_VERSION);
	uint64_t blocks = h.block_bytes ? (h.virtual_bytes + h.block_bytes - 1) / h.block_bytes : 0;
	if (h.block_bytes < 4096 || h.block_bytes > (16u << 20) ||
	    (h.block_bytes & (h.block_bytes - 1)) || h.bitmap_offset < sizeof(h) ||
	    h.bitmap_bytes != (blocks + 7) / 8 || h.bitmap_bytes > (256u << 20) ||
	    h.data_offset < h.bitmap_offset + h.bitmap_bytes || h.data_offset % 4096 ||
	    h.base_path_bytes == 0 || h.base_path_bytes >= sizeof(h.base_path) ||
	    h.base_path[h.base_path_bytes] != '\0' || h.base_path[0] != '/' ||
	    (h.base_format != VM_DISK_FORMAT_RAW && h.base_format != VM_DISK_FORMAT_OVERLAY))
		return kapsel_fail(error, error_len, -EINVAL,
				   "overlay '%s' has an impossible header", path);
	if (depth >= DISK_OVERLAY_MAX_CHAIN)
		return kapsel_fail(error, error_len, -ELOOP,
				   "overlay '%s': the chain of bases is longer than %u (a loop?)",
				   path, DISK_OVERLAY_MAX_CHAIN);
	if (flags >= 0 && (flags & O_DIRECT))
		fcntl(disk->fd, F_SETFL, flags & ~O_DIRECT); /* byte-sized bitmap writes */

	struct disk_overlay *o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->block_bytes = h.block_bytes;
	o->virtual_bytes = h.virtual_bytes;
	o->bitmap_offset = h.bitmap_offset;
	o->bitmap_bytes = h.bitmap_bytes;
	o->data_offset = h.data_offset;
	o->bitmap = calloc(1, h.bitmap_bytes ? h.bitmap_bytes : 1);
	o->block_buffer = malloc(h.block_bytes);
	o->base = calloc(1, sizeof(*o->base));
	if (!o->bitmap || !o->block_buffer || !o->base) {
		err = -ENOMEM;
		goto fail;
	}
	err = full_pread(disk->fd, o->bitmap, h.bitmap_bytes, h.bitmap_offset);
	if (err) {
		kapsel_fail(error, error_len, err, "overlay '%s': cannot read its bitmap: %s", path,
			    strerror(-err));
		goto fail;
	}
	struct vm_disk_config base_config = *config;
	base_config.path = h.base_path;
	base_config.format = (enum vm_disk_format)h.base_format;
	base_config.readonly = true;
	base_config.cache = VM_DISK_CACHE_WRITEBACK;
	char detail[512];
	err = disk_image_open_depth(o->base, &base_config, 0, depth + 1, &h.base_identity, detail,
				    sizeof(detail));
	/* The base path comes from the file, not from the operator: no message
	 * names it or tells what is there (a planted header must not learn
	 * whether, or how large, some host file is). */
	if (err == -ELOOP) {
		free(o->base);
		o->base = NULL;
		kapsel_fail(error, error_len, err,
			    "overlay '%s': the chain of bases is longer than %u (a loop?)", path,
			    DISK_OVERLAY_MAX_CHAIN);
		goto fail;
	}
	if (err) {
		free(o->base);
		o->base = NULL;
		kapsel_debug("overlay '%s': its base does not open: error %d", path, err);
		err = -ESTALE;
		kapsel_fail(error, error_len, err,
			    "overlay '%s': its base image cannot be opened or is not the file the overlay was made over (moved, replaced or changed since); restore the base or recreate the overlay",
			    path);
		goto fail;
	}
	if (o->base->size_bytes != h.virtual_bytes) {
		err = kapsel_fail(
			error, error_len, -ESTALE,
			"overlay '%s' does not match the size of its base image; the base was replaced",
			path);
		goto fail;
	}
	disk->overlay = o;
	disk->size_bytes = h.virtual_bytes;
	return 0;

fail:
	if (o->base) {
		disk_image_close(o->base);
		free(o->base);
	}
	free(o->bitmap);
	free(o->block_buffer);
	free(o);
	return err;
}

void disk_overlay_detach(struct disk_image *disk)
{
	struct disk_overlay *o = disk->overlay;
	if (!o)
		return;
	disk->overlay = NULL;
	if (o->base) {
		disk_image_close(o->base);
		free(o->base);
	}
	free(o->bitmap);
	free(o->block_buffer);
	free(o);
}

static bool block_present(const struct disk_overlay *o, uint64_t block)
{
	return (o->bitmap[block / 8] >> (block % 8)) & 1;
}

/* Read [offset, offset + length) of the virtual disk. */
int disk_image_pread(struct disk_image *disk, void *buffer, size_t length_bytes,
		     uint64_t offset_bytes)
{
	struct disk_overlay *o = disk->overlay;
	if (!o)
		return full_pread(disk->fd, buffer, length_bytes, offset_bytes);
	uint8_t *p = buffer;
	while (length_bytes) {
		uint64_t block = offset_bytes / o->block_bytes;
		uint64_t in_block = offset_bytes % o->block_bytes;
		size_t n = o->block_bytes - in_block;
		if (n > length_bytes)
			n = length_bytes;
		/* Runs of blocks with the same source go in one call. */
		bool present = block_present(o, block);
		while (n < length_bytes &&
		       (offset_bytes + n) / o->block_bytes < o->bitmap_bytes * 8 &&
		       block_present(o, (offset_bytes + n) / o->block_bytes) == present) {
			size_t more = length_bytes - n < o->block_bytes ? length_bytes - n
									: o->block_bytes;
			n += more;
		}
		int err = present ? full_pread(disk->fd, p, n, o->data_offset + offset_bytes)
				  : disk_image_pread(o->base, p, n, offset_bytes);
		if (err)
			return err;
		p += n;
		offset_bytes += n;
		length_bytes -= n;
	}
	return 0;
}

static int set_present(struct disk_image *disk, uint64_t block)
{
	struct disk_overlay *o = disk->overlay;
	o->bitmap[block / 8] |= (uint8_t)(1u << (block % 8));
	return full_pwrite(disk->fd, &o->bitmap[block / 8], 1, o->bitmap_offset + block / 8);
}

int disk_image_pwrite(struct disk_image *disk, const void *buffer, size_t length_bytes,
		      uint64_t offset_bytes)
{
	struct disk_overlay *o = disk->overlay;
	if (!o)
		return full_pwrite(disk->fd, buffer, length_bytes, offset_bytes);
	const uint8_t *p = buffer;
	while (length_bytes) {
		uint64_t block = offset_bytes / o->block_bytes;
		uint64_t block_start = block * o->block_bytes;
		uint64_t in_block = offset_bytes - block_start;
		size_t n = o->block_bytes - in_block;
		if (n > length_bytes)
			n = length_bytes;
		int err;
		if (block_present(o, block)) {
			err = full_pwrite(disk->fd, p, n, o->data_offset + offset_bytes);
		} else {
			/* Copy up: the whole block, base content and new bytes. */
			uint64_t block_len = o->virtual_bytes - block_start < o->block_bytes
						     ? o->virtual_bytes - block_start
						     : o->block_bytes;
			if (n < block_len) {
				err = disk_image_pread(o->base, o->block_buffer, block_len,
						       block_start);
				if (err)
					return err;
			}
			memcpy(o->block_buffer + in_block, p, n);
			err = full_pwrite(disk->fd, o->block_buffer, block_len,
					  o->data_offset + block_start);
			if (!err)
				err = set_present(disk, block); /* after the data */
		}
		if (err)
			return err;
		p += n;
		offset_bytes += n;
		length_bytes -= n;
	}
	return 0;
}

/* One segment after another through the single-buffer path above. */
static ssize_t disk_image_transfer_iov(struct disk_image *disk, const struct iovec *iov,
				       int iov_count, uint64_t offset_bytes, bool write)
{
	uint64_t done = 0;
	for (int i = 0; i < iov_count; i++) {
		int err = write ? disk_image_pwrite(disk, iov[i].iov_base, iov[i].iov_len,
						    offset_bytes + done)
				: disk_image_pread(disk, iov[i].iov_base, iov[i].iov_len,
						   offset_bytes + done);
		if (err)
			return err;
		done += iov[i].iov_len;
	}
	return (ssize_t)done;
}

ssize_t disk_image_preadv(struct disk_image *disk, const struct iovec *iov, int iov_count,
			  uint64_t offset_bytes)
{
	return disk_image_transfer_iov(disk, iov, iov_count, offset_bytes, false);
}

ssize_t disk_image_pwritev(struct disk_image *disk, const struct iovec *iov, int iov_count,
			   uint64_t offset_bytes)
{
	return disk_image_transfer_iov(disk, iov, iov_count, offset_bytes, true);
}

int disk_image_write_zeroes(struct disk_image *disk, uint64_t offset_bytes, uint64_t length_bytes)
{
	static const uint8_t zeros[65536];
	while (length_bytes) {
		size_t n = length_bytes < sizeof(zeros) ? (size_t)length_bytes : sizeof(zeros);
		int err = disk_image_pwrite(disk, zeros, n, offset_bytes);
		if (err)
			return err;
		offset_bytes += n;
		length_bytes -= n;
	}
	return 0;
}

int disk_image_sync(struct disk_image *disk)
{
	if (disk->readonly)
		return 0;
	while (fdatasync(disk->fd) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

uint64_t disk_overlay_blocks_present(const struct disk_image *disk)
{
	const struct disk_overlay *o = disk->overlay;
	uint64_t count = 0;
	for (uint64_t i = 0; o && i < o->bitmap_bytes; i++)
		count += (uint64_t)__builtin_popcount(o->bitmap[i]);
	return count;
}

int disk_image_push_overlay(struct disk_image *disk, const char *overlay_path, char *error,
			    size_t error_len)
{
	int err = disk_overlay_create(overlay_path, disk->path,
				      disk->overlay ? VM_DISK_FORMAT_OVERLAY : VM_DISK_FORMAT_RAW,
				      error, error_len);
	if (err)
		return err;
	int fd = open(overlay_path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		err = kapsel_fail(error, error_len, -errno, "overlay '%s': %s", overlay_path,
				  strerror(errno));
		unlink(overlay_path);
		return err;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		err = kapsel_fail(error, error_len, -EBUSY, "overlay '%s' is locked", overlay_path);
		goto fail_fd;
	}
	/* The current file becomes the base: same descriptor, shared lock
	 * (other VMs restored from the snapshot read it too), no more
	 * writes, and a file mode that says so. */
	struct disk_image *base = calloc(1, sizeof(*base));
	char *path = strdup(overlay_path);
	if (!base || !path) {
		free(base);
		free(path);
		err = -ENOMEM;
		goto fail_fd;
	}
	base->path = disk->path;
	base->fd = disk->fd;
	base->overlay = disk->overlay;
	base->readonly = true;
	base->size_bytes = disk->size_bytes;
	base->capacity_sectors = disk->capacity_sectors;
	pthread_mutex_init(&base->lock, NULL);
	if (!disk->readonly)
		disk_image_sync(disk);
	flock(base->fd, LOCK_SH | LOCK_NB);
	fchmod(base->fd, 0444);

	struct disk_overlay_header h;
	err = full_pread(fd, &h, sizeof(h), 0);
	struct disk_overlay *o = calloc(1, sizeof(*o));
	if (err || !o) {
		free(o);
		err = err ? err : -ENOMEM;
		goto fail_base;
	}
	o->block_bytes = h.block_bytes;
	o->virtual_bytes = h.virtual_bytes;
	o->bitmap_offset = h.bitmap_offset;
	o->bitmap_bytes = h.bitmap_bytes;
	o->data_offset = h.data_offset;
	o->bitmap = calloc(1, h.bitmap_bytes ? h.bitmap_bytes : 1);
	o->block_buffer = malloc(h.block_bytes);
	if (!o->bitmap || !o->block_buffer) {
		free(o->bitmap);
		free(o->block_buffer);
		free(o);
		err = -ENOMEM;
		goto fail_base;
	}
	o->base = base;
	disk->fd = fd;
	disk->path = path;
	disk->overlay = o;
	return 0;

fail_base:
	/* Undo: the disk keeps its file, writable again. */
	fchmod(base->fd, 0600);
	flock(base->fd, LOCK_EX | LOCK_NB);
	pthread_mutex_destroy(&base->lock);
	free(base);
	free(path);
	if (!err)
		err = -ENOMEM;
	kapsel_fail(error, error_len, err, "cannot switch to overlay '%s': %s", overlay_path,
		    strerror(-err));
fail_fd:
	close(fd);
	unlink(overlay_path);
	return err;
}
