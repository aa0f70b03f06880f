/* Copy-on-write disk overlays on plain files (snapshots, clones) and the block I/O that reads through them. */
#ifndef KAPSEL_DISK_OVERLAY_H
#define KAPSEL_DISK_OVERLAY_H

/*
 * An overlay is one sparse file over a read-only base image (raw or
 * another overlay, so overlays chain):
 *
 *   0               struct disk_overlay_header (4 KiB): magic, version,
 *                   block size, virtual size, where the bitmap and data
 *                   are, the base image's absolute path, CRC32C
 *   bitmap_offset   one bit per block: 1 = the block lives in this file
 *   data_offset     the virtual disk, raw and sparse: block b at
 *                   data_offset + b * block_bytes
 *
 * Reading a block takes it from this file if its bit is set, else from
 * the base (recursively).  Writing a block whose bit is clear copies it up
 * first (whole block: base content merged with the new bytes), then sets
 * the bit; the bit is written after the data, so a crash before a flush at
 * worst loses the unflushed write.  Nothing needs reflink: any file system
 * with sparse files (ext4) works, and a new overlay costs a few KiB.
 */

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "config.h"
#include "disk.h"

#define DISK_OVERLAY_MAGIC "KAPSOVL1"
#define DISK_OVERLAY_VERSION 1u
#define DISK_OVERLAY_BLOCK_BYTES (64u * 1024u)
#define DISK_OVERLAY_HEADER_BYTES 4096u
#define DISK_OVERLAY_MAX_CHAIN 32u

struct disk_overlay_header {
	char magic[8];	  /* DISK_OVERLAY_MAGIC */
	uint32_t version; /* DISK_OVERLAY_VERSION */
	uint32_t block_bytes;
	uint64_t virtual_bytes; /* the disk the guest sees (= the base's size) */
	uint64_t bitmap_offset;
	uint64_t bitmap_bytes;
	uint64_t data_offset;
	uint32_t base_path_bytes;
	uint32_t header_crc; /* CRC32C of the 4 KiB header with this field 0 */
	char base_path[DISK_OVERLAY_HEADER_BYTES - 56]; /* absolute, NUL padded */
};
_Static_assert(sizeof(struct disk_overlay_header) == DISK_OVERLAY_HEADER_BYTES,
	       "overlay header layout");

struct disk_overlay {
	struct disk_image *base; /* opened read-only, owned */
	uint8_t *bitmap;	 /* in memory, written through */
	uint64_t bitmap_offset, bitmap_bytes, data_offset;
	uint32_t block_bytes;
	uint64_t virtual_bytes;
	uint8_t *block_buffer; /* one block, for copy-up */
};

/*
 * Create the overlay file overlay_path over base_path (which must exist;
 * its size becomes the virtual size; an overlay base is read through its
 * header).  Fails with -EEXIST if overlay_path exists.  Returns 0 or
 * -errno with a message naming the file in error.
 */
int disk_overlay_create(const char *overlay_path, const char *base_path, char *error,
			size_t error_len);

/*
 * Called by disk_image_open on every image it opened: if the file starts
 * with the overlay magic, check the header, open the base chain read-only
 * and make disk an overlay (size = virtual size).  Returns 0 (a raw image
 * is left alone) or -errno with a message (corrupt header, missing base,
 * base of another size, chain too long).
 */
int disk_overlay_attach(struct disk_image *disk, const struct vm_disk_config *config,
			unsigned depth, char *error, size_t error_len);

/* Release disk->overlay and its base chain (disk_image_close does this). */
void disk_overlay_detach(struct disk_image *disk);

/*
 * Freeze disk's current file and go on writing to a new overlay at
 * overlay_path over it: the old file becomes the (read-only, shared-locked
 * and chmod a-w) base.  Counters and limits stay.  Precondition: no I/O in
 * flight on disk (the device is quiesced).  Returns 0 or -errno with a
 * message; on failure disk is unchanged.
 */
int disk_image_push_overlay(struct disk_image *disk, const char *overlay_path, char *error,
			    size_t error_len);

/* Block I/O through disk (raw or overlay); whole length or an error.
 * Offsets and lengths are bytes within the virtual disk. */
int disk_image_pread(struct disk_image *disk, void *buffer, size_t length_bytes,
		     uint64_t offset_bytes);
int disk_image_pwrite(struct disk_image *disk, const void *buffer, size_t length_bytes,
		      uint64_t offset_bytes);
/* Vectored; returns the bytes moved (all of them) or -errno. */
ssize_t disk_image_preadv(struct disk_image *disk, const struct iovec *iov, int iov_count,
			  uint64_t offset_bytes);
ssize_t disk_image_pwritev(struct disk_image *disk, const struct iovec *iov, int iov_count,
			   uint64_t offset_bytes);
int disk_image_write_zeroes(struct disk_image *disk, uint64_t offset_bytes, uint64_t length_bytes);
/* Make completed writes durable (fdatasync of the top file). */
int disk_image_sync(struct disk_image *disk);

/* Blocks present in disk's own overlay file (0 for a raw image). */
uint64_t disk_overlay_blocks_present(const struct disk_image *disk);

#endif
