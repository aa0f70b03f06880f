/* PV block requests: the checks a guest's request passes before the backend touches guest memory or the disk (no KVM, no threads). */
#ifndef KAPSEL_BLK_PV_REQUEST_H
#define KAPSEL_BLK_PV_REQUEST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "devices/block/disk.h"
#include "core/guest_memory.h"
#include "kapsel/blk.h"

/* What a checked request asks the backend to do. */
struct blk_pv_transfer {
	struct iovec iov[KAPSEL_BLK_MAX_SEGMENTS]; /* host views of the segments, in order */
	uint8_t iov_count;			   /* 0 for FLUSH, DISCARD, WRITE_ZEROES */
	uint64_t offset_bytes;	  /* disk offset of the first byte (0 when unused) */
	uint64_t remaining_bytes; /* bytes to move, discard or zero */
	uint64_t length_bytes;	  /* for counters and rate limits; 0 for GET_INFO */
};

/*
 * Check req, a private copy of a guest's request (read once from the
 * ring; nothing here looks at shared memory again): op, flags and segment
 * count; every segment 512-byte aligned, a non-zero multiple of 512 bytes
 * and inside guest RAM above the hypervisor's tables
 * (guest_memory_translate_guest); the disk policy (disk_policy_check:
 * bounds without overflow, read-only).  On success fills *out, so that
 * every iovec lies inside guest RAM and [offset_bytes, offset_bytes +
 * remaining_bytes) inside the disk, and returns 0.  Otherwise returns the
 * negative KAPSEL_E* status for the guest (the denial is counted in
 * disk's statistics).  *counted is false only on success (the completion
 * still has to be counted).  Precondition: disk is open or at least has
 * capacity_sectors, readonly and an initialised lock.
 */
int blk_pv_request_check(const struct kapsel_blk_request *req, const struct guest_memory *mem,
			 struct disk_image *disk, struct blk_pv_transfer *out, bool *counted);

#endif
