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

#include "config/config.h"
#include "devices/block/disk.h"

#define DISK_OVERLAY_MAGIC "KAPSOVL1"
#define DISK_OVERLAY_VERSION 2u /* 2: the base's identity is recorded and checked */
#define DISK_OVERLAY_BLOCK_BYTES (64u * 1024u)
#define DISK_OVERLAY_HEADER_BYTES 4096u
#define DISK_OVERLAY_MAX_CHAIN 32u

/* Which file an overlay was made over: a base path that now names another
 * file (swapped, planted, replaced) does not match. */
struct disk_overlay_base_identity {
	uint64_t device;
	uint64_t inode;
	uint64_t size_bytes;
	int64_t mtime_ns;
};

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
	struct disk_overlay_base_identity base_identity; /* fstat of the base at creation */
	uint32_t base_format;				 /* enum vm_disk_format of the base */
	uint32_t _pad;
	char base_path[DISK_OVERLAY_HEADER_BYTES - 96]; /* absolute, NUL padded */
};
_Static_assert(sizeof(struct disk_overlay_header) == DISK_OVERLAY_HEADER_BYTES,
	       "overlay header layout");
_Static_assert(offsetof(struct disk_overlay_header, base_identity) == 56, "overlay header layout");

struct disk_overlay {
	struct disk_image *base; /* opened read-only, owned */
	uint8_t *bitmap;	 /* in memory, written through */
	uint64_t bitmap_offset, bitmap_bytes, data_offset;
	uint32_t block_bytes;
	uint64_t virtual_bytes;
	uint8_t *block_buffer; /* one block, for copy-up */
};

struct stat;

/* The identity an overlay records of its base, from the base's fstat. */
void disk_overlay_identity_of(const struct stat *st, struct disk_overlay_base_identity *identity);

/*
 * Fill h (every field, the CRC last) for an overlay of virtual_bytes over
 * the base at base_path (absolute; shorter than h->base_path), of
 * base_format, whose identity is base: blocks of DISK_OVERLAY_BLOCK_BYTES,
 * the bitmap after the header, the data from the next MiB boundary.
 * Returns 0 or -ENAMETOOLONG.
 */
int disk_overlay_header_init(struct disk_overlay_header *h, const char *base_path,
			     enum vm_disk_format base_format, uint64_t virtual_bytes,
			     const struct disk_overlay_base_identity *base);

/*
 * Create the overlay file overlay_path over base_path, whose format the
 * caller knows (from the operator or Kapsel's own records; the base's
 * bytes are not probed).  The base must exist; its virtual size becomes
 * the overlay's, and its identity (device, inode, size, mtime) is recorded
 * so that a later open refuses any other file at that path.  Fails with
 * -EEXIST if overlay_path exists.  Returns 0 or -errno with a message
 * naming the file in error.
 */
int disk_overlay_create(const char *overlay_path, const char *base_path,
			enum vm_disk_format base_format, char *error, size_t error_len);

/*
 * Called by disk_image_open for an image the configuration says is an
 * overlay (config->format): check the header, open the recorded base
 * read-only, check that it is the very file the overlay was made over
 * (identity in the header) and make disk an overlay (size = virtual
 * size).  Returns 0 or -errno with a message (not an overlay, corrupt
 * header, base missing or replaced, chain too long).  Messages never name
 * the base path: it comes from the file, not from the operator.
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
