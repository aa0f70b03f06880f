/* One disk image from a chain of copy-on-write overlays (kapsel merge): a single overlay over the chain's base, or a raw copy, checked block by block against the chain. */
#ifndef KAPSEL_DISK_FLATTEN_H
#define KAPSEL_DISK_FLATTEN_H

#include <stddef.h>
#include <stdint.h>

#include "devices/block/disk.h"

enum disk_flatten_form {
	/* One overlay (disk_overlay.h) over the chain's bottom base, the raw
	 * image under every overlay: it holds every block some overlay of the
	 * chain holds, with the topmost one's content; the other blocks stay
	 * the base's. */
	DISK_FLATTEN_OVERLAY = 0,
	/* The whole virtual disk as a raw image, needing neither the chain
	 * nor its base. */
	DISK_FLATTEN_RAW = 1,
};

struct disk_flatten_result {
	unsigned overlays;	  /* overlays in the source chain above its base */
	uint64_t virtual_bytes;	  /* the disk the guest sees */
	uint64_t blocks;	  /* blocks the new image holds (raw: all of them) */
	uint64_t file_bytes;	  /* size of the new file */
	uint64_t data_bytes;	  /* of it written (zero blocks are left as holes) */
	uint32_t file_crc;	  /* CRC32C of the whole new file, holes as zeros */
	uint64_t blocks_compared; /* read back and found equal to the chain's */
};

/*
 * Write the virtual disk of source into out_fd, an empty regular file
 * opened read-write whose path is out_path, in form.  source is open
 * read-only (disk_image_open: raw, or an overlay whose chain was opened
 * link by link with its base identity checks); nothing of the chain is
 * written.  A block whose content is all zeros is left a hole (in an
 * overlay its bit is still set if the chain holds it, so it reads as
 * zeros, not as the base's bytes).  The new overlay names its base by
 * the path the chain opened it at and records the identity (device,
 * inode, size, mtime) of the descriptor that was read.
 *
 * Then the file is synced and checked before it is relied on: its CRC32C
 * read back (result->file_crc); opened afresh from out_path as a restore
 * opens it (header checksum, base identity, and the bitmap must be the
 * one meant); every block it holds read through it and compared, by
 * CRC32C, with the same block read again through the chain.  Blocks
 * neither holds come from the same base file in both and are not read.
 *
 * Returns 0 or -errno with a message naming out_path; after a failure the
 * file's content is meaningless (the caller removes it).
 */
int disk_image_flatten(struct disk_image *source, enum disk_flatten_form form, int out_fd,
		       const char *out_path, struct disk_flatten_result *result, char *error,
		       size_t error_len);

/* Overlays above the base in disk's chain (0 for a raw image). */
unsigned disk_image_chain_overlays(const struct disk_image *disk);

/* The raw image at the bottom of disk's chain (disk itself if raw); a
 * flattened overlay names it as its base. */
const struct disk_image *disk_image_chain_base(const struct disk_image *disk);

#endif
