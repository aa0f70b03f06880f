/* One disk image from a chain of copy-on-write overlays (kapsel merge): a single overlay over the chain's base, or a raw copy, checked block by block against the chain. */
#define _GNU_SOURCE
#include "devices/block/disk_flatten.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error_text.h"
#include "devices/block/disk_overlay.h"
#include "state/vm_state.h"

unsigned disk_image_chain_overlays(const struct disk_image *disk)
{
	unsigned count = 0;
	for (; disk->overlay; disk = disk->overlay->base)
		count++;
	return count;
}

const struct disk_image *disk_image_chain_base(const struct disk_image *disk)
{
	while (disk->overlay)
		disk = disk->overlay->base;
	return disk;
}

/* Whether some overlay of disk's chain holds a byte of [offset, offset + length). */
static bool chain_holds(const struct disk_image *disk, uint64_t offset, uint64_t length)
{
	for (; disk->overlay; disk = disk->overlay->base) {
		const struct disk_overlay *o = disk->overlay;
		uint64_t first = offset / o->block_bytes;
		uint64_t last = (offset + length - 1) / o->block_bytes;
		for (uint64_t b = first; b <= last && b / 8 < o->bitmap_bytes; b++)
			if ((o->bitmap[b / 8] >> (b % 8)) & 1)
				return true;
	}
	return false;
}

static bool all_zero(const uint8_t *data, size_t length)
{
	return length == 0 || (data[0] == 0 && memcmp(data, data + 1, length - 1) == 0);
}

static int write_all(int fd, const void *buffer, size_t length, uint64_t offset)
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

static bool same_file(int a, int b)
{
	struct stat sa, sb;
	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

/* The layout of the file being written. */
struct flatten_plan {
	enum disk_flatten_form form;
	uint64_t virtual_bytes;
	uint64_t blocks;
	uint64_t data_offset; /* of block 0 in the file */
	uint64_t file_bytes;
	uint8_t *present; /* overlay: the new bitmap */
	uint64_t bitmap_bytes;
};

static bool plan_holds(const struct flatten_plan *plan, uint64_t block)
{
	return plan->form == DISK_FLATTEN_RAW || ((plan->present[block / 8] >> (block % 8)) & 1);
}

static size_t block_length(const struct flatten_plan *plan, uint64_t block)
{
	uint64_t start = block * DISK_OVERLAY_BLOCK_BYTES;
	uint64_t left = plan->virtual_bytes - start;
	return left < DISK_OVERLAY_BLOCK_BYTES ? (size_t)left : DISK_OVERLAY_BLOCK_BYTES;
}

/* The header and bitmap of the new overlay, written; *crc covers them and
 * the zeros up to the data. */
static int write_overlay_header(struct disk_image *source, struct flatten_plan *plan, int out_fd,
				const char *out_path, uint32_t *crc, uint64_t *data_bytes,
				char *error, size_t error_len)
{
	const struct disk_image *base = disk_image_chain_base(source);
	struct stat st;
	if (fstat(base->fd, &st) < 0)
		return kapsel_fail(error, error_len, -errno, "the chain's base image: %s",
				   strerror(errno));
	struct disk_overlay_base_identity identity;
	disk_overlay_identity_of(&st, &identity);
	/* An overlay's base path is absolute; the base of a chain was opened at
	 * the absolute path its overlay records, a raw source at the
	 * operator's path. */
	char *base_path = realpath(base->path, NULL);
	if (!base_path)
		return kapsel_fail(
			error, error_len, -ESTALE,
			"the chain's base image is no longer where its overlay says (moved or removed while merging)");
	struct disk_overlay_header h;
	int err = disk_overlay_header_init(&h, base_path, VM_DISK_FORMAT_RAW, plan->virtual_bytes,
					   &identity);
	free(base_path);
	if (err)
		return kapsel_fail(error, error_len, err,
				   "the chain's base image has too long a path for an overlay");
	plan->data_offset = h.data_offset;
	plan->file_bytes = h.data_offset + plan->virtual_bytes;
	plan->bitmap_bytes = h.bitmap_bytes;
	plan->present = calloc(1, h.bitmap_bytes ? h.bitmap_bytes : 1);
	if (!plan->present)
		return -ENOMEM;
	for (uint64_t b = 0; b < plan->blocks; b++)
		if (chain_holds(source, b * DISK_OVERLAY_BLOCK_BYTES, block_length(plan, b)))
			plan->present[b / 8] |= (uint8_t)(1u << (b % 8));
	err = write_all(out_fd, &h, sizeof(h), 0);
	if (!err)
		err = write_all(out_fd, plan->present, h.bitmap_bytes, h.bitmap_offset);
	if (err)
		return kapsel_fail(error, error_len, err, "cannot write '%s': %s", out_path,
				   strerror(-err));
	*crc = vm_state_crc32c(0, &h, sizeof(h));
	*crc = vm_state_crc32c(*crc, plan->present, h.bitmap_bytes);
	*crc = vm_state_crc32c_zeros(*crc, h.data_offset - h.bitmap_offset - h.bitmap_bytes);
	*data_bytes = sizeof(h) + h.bitmap_bytes;
	return 0;
}

/* Every block the new file holds, read through the chain and written. */
static int copy_blocks(struct disk_image *source, const struct flatten_plan *plan, int out_fd,
		       const char *out_path, uint8_t *buffer, uint32_t *crc,
		       struct disk_flatten_result *result, char *error, size_t error_len)
{
	uint64_t zeros = 0; /* not yet folded into *crc */
	for (uint64_t b = 0; b < plan->blocks; b++) {
		size_t length = block_length(plan, b);
		uint64_t offset = b * DISK_OVERLAY_BLOCK_BYTES;
		if (!plan_holds(plan, b)) {
			zeros += length;
			continue;
		}
		result->blocks++;
		int err = disk_image_pread(source, buffer, length, offset);
		if (err)
			return kapsel_fail(error, error_len, err,
					   "cannot read byte %llu of the disk through its chain: %s",
					   (unsigned long long)offset, strerror(-err));
		if (all_zero(buffer, length)) {
			zeros += length; /* a hole reads as zeros */
			continue;
		}
		*crc = vm_state_crc32c_zeros(*crc, zeros);
		zeros = 0;
		*crc = vm_state_crc32c(*crc, buffer, length);
		err = write_all(out_fd, buffer, length, plan->data_offset + offset);
		if (err)
			return kapsel_fail(error, error_len, err, "cannot write '%s': %s", out_path,
					   strerror(-err));
		result->data_bytes += length;
	}
	*crc = vm_state_crc32c_zeros(*crc, zeros);
	if (ftruncate(out_fd, (off_t)plan->file_bytes) < 0 || fsync(out_fd) < 0)
		return kapsel_fail(error, error_len, -errno, "cannot write '%s': %s", out_path,
				   strerror(errno));
	return 0;
}

/* Open out_path afresh as a restore would and compare it with the chain. */
static int compare_with_chain(struct disk_image *source, const struct flatten_plan *plan,
			      const char *out_path, uint8_t *mine, uint8_t *theirs,
			      struct disk_flatten_result *result, char *error, size_t error_len)
{
	struct vm_disk_config config = {
		.path = (char *)out_path,
		.format = plan->form == DISK_FLATTEN_OVERLAY ? VM_DISK_FORMAT_OVERLAY
							     : VM_DISK_FORMAT_RAW,
		.readonly = true,
		.cache = VM_DISK_CACHE_WRITEBACK,
	};
	struct disk_image copy;
	char detail[512];
	int err = disk_image_open(&copy, &config, 0, detail, sizeof(detail));
	if (err)
		return kapsel_fail(error, error_len, err,
				   "the image just written does not open: %s", detail);
	if (copy.size_bytes != plan->virtual_bytes) {
		err = kapsel_fail(error, error_len, -EIO,
				  "'%s' came out as a disk of %llu bytes, the chain's is %llu",
				  out_path, (unsigned long long)copy.size_bytes,
				  (unsigned long long)plan->virtual_bytes);
	} else if (plan->form == DISK_FLATTEN_OVERLAY &&
		   (copy.overlay->bitmap_bytes != plan->bitmap_bytes ||
		    memcmp(copy.overlay->bitmap, plan->present, plan->bitmap_bytes) != 0 ||
		    copy.overlay->base->overlay ||
		    !same_file(copy.overlay->base->fd, disk_image_chain_base(source)->fd))) {
		err = kapsel_fail(
			error, error_len, -EIO,
			"'%s' read back with another block map or base than was written; the file was changed while merging",
			out_path);
	}
	for (uint64_t b = 0; !err && b < plan->blocks; b++) {
		if (!plan_holds(plan, b))
			continue;
		size_t length = block_length(plan, b);
		uint64_t offset = b * DISK_OVERLAY_BLOCK_BYTES;
		err = disk_image_pread(&copy, mine, length, offset);
		if (err) {
			kapsel_fail(error, error_len, err, "cannot read back '%s' at byte %llu: %s",
				    out_path, (unsigned long long)offset, strerror(-err));
			break;
		}
		err = disk_image_pread(source, theirs, length, offset);
		if (err) {
			kapsel_fail(error, error_len, err,
				    "cannot read byte %llu of the disk through its chain: %s",
				    (unsigned long long)offset, strerror(-err));
			break;
		}
		if (vm_state_crc32c(0, mine, length) != vm_state_crc32c(0, theirs, length)) {
			err = kapsel_fail(
				error, error_len, -EIO,
				"'%s' differs from the chain at byte %llu after writing (CRC32C of the %zu-byte block); the disk or file system lost a write",
				out_path, (unsigned long long)offset, length);
			break;
		}
		result->blocks_compared++;
	}
	disk_image_close(&copy);
	return err;
}

int disk_image_flatten(struct disk_image *source, enum disk_flatten_form form, int out_fd,
		       const char *out_path, struct disk_flatten_result *result, char *error,
		       size_t error_len)
{
	memset(result, 0, sizeof(*result));
	struct flatten_plan plan = {
		.form = form,
		.virtual_bytes = source->size_bytes,
		.blocks = (source->size_bytes + DISK_OVERLAY_BLOCK_BYTES - 1) /
			  DISK_OVERLAY_BLOCK_BYTES,
		.file_bytes = source->size_bytes,
	};
	result->overlays = disk_image_chain_overlays(source);
	result->virtual_bytes = plan.virtual_bytes;
	uint8_t *buffer = malloc(DISK_OVERLAY_BLOCK_BYTES);
	uint8_t *other = malloc(DISK_OVERLAY_BLOCK_BYTES);
	uint32_t crc = 0;
	int err = buffer && other ? 0 : -ENOMEM;
	if (!err && form == DISK_FLATTEN_OVERLAY)
		err = write_overlay_header(source, &plan, out_fd, out_path, &crc,
					   &result->data_bytes, error, error_len);
	if (!err)
		err = copy_blocks(source, &plan, out_fd, out_path, buffer, &crc, result, error,
				  error_len);
	if (!err) {
		/* What is on disk is what was meant: the whole file's CRC32C
		 * read back, then the disk it holds compared with the chain's. */
		char detail[512];
		err = vm_state_check_flat_fd(out_fd, out_path, plan.file_bytes, crc, NULL, detail,
					     sizeof(detail));
		if (err)
			kapsel_fail(error, error_len, err,
				    "read back, the new image is not what was written (%s); the disk or file system lost a write",
				    detail);
	}
	if (!err)
		err = compare_with_chain(source, &plan, out_path, buffer, other, result, error,
					 error_len);
	if (!err) {
		result->file_bytes = plan.file_bytes;
		result->file_crc = crc;
	}
	if (err == -ENOMEM)
		kapsel_fail(error, error_len, err, "out of memory");
	free(plan.present);
	free(buffer);
	free(other);
	return err;
}
