/* Host disk images and the access policy every block device enforces: bounds, read-only, rate limits, counters. */
#ifndef KAPSEL_DISK_H
#define KAPSEL_DISK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"
#include "devices/rate_limit.h"
#include "kapsel/blk.h"

#define DISK_LATENCY_BUCKETS 32 /* bucket i: [2^i, 2^(i+1)) microseconds */

struct disk_stats {
	uint64_t ops[KAPSEL_BLK_OP_COUNT];
	uint64_t bytes[KAPSEL_BLK_OP_COUNT];
	uint64_t errors;	   /* requests answered with an error */
	uint64_t denied_bounds;	   /* past the end of the disk */
	uint64_t denied_readonly;  /* writes to a read-only disk */
	uint64_t denied_malformed; /* bad descriptor, segment or buffer */
	uint64_t rate_limited;	   /* requests that had to wait for tokens */
	uint64_t in_flight;
	uint64_t kicks_received;     /* guest -> host notifications */
	uint64_t notifications_sent; /* host -> guest event channel signals */
	uint64_t exits;		     /* VM exits attributable to this disk */
	uint64_t latency_us[DISK_LATENCY_BUCKETS];
};

struct disk_overlay;

struct disk_image {
	char *path;
	int fd;
	struct disk_overlay *overlay; /* copy-on-write overlay (disk_overlay.h), or NULL */
	bool readonly;
	bool direct; /* O_DIRECT (cache=none) */
	uint64_t size_bytes;
	uint64_t capacity_sectors;
	struct token_bucket ops_bucket;
	struct token_bucket bytes_bucket;
	pthread_mutex_t lock; /* protects stats and buckets */
	struct disk_stats stats;
};

/*
 * Open the disk image of config in its configured format (raw, or an
 * overlay: config->format; the content never decides): O_RDWR (or O_RDONLY when readonly),
 * O_DIRECT for cache=none, and an exclusive lock (shared for read-only) so
 * two VMs cannot write one image.  Errors (missing, too small, locked,
 * unwritable, O_DIRECT unsupported) are returned as -errno with a message
 * in error that names the image and the fix.
 */
int disk_image_open(struct disk_image *disk, const struct vm_disk_config *config, uint64_t now_ns,
		    char *error, size_t error_len);

/*
 * Who holds a disk image's lock: the front end (the CLI) may register a
 * lookup that writes a description of the VM using path ("VM 'web'
 * (domain id 3)") into who and returns true; the message for a locked
 * image then names it.  The devices never ask VMs themselves.
 */
typedef bool (*disk_lock_holder_fn)(const char *path, char *who, size_t who_len);
void disk_set_lock_holder_lookup(disk_lock_holder_fn lookup);

struct disk_overlay_base_identity;

/* disk_image_open for the depth-th base of an overlay chain (disk_overlay.c);
 * with expect set, the opened file must have that identity (-ESTALE). */
int disk_image_open_depth(struct disk_image *disk, const struct vm_disk_config *config,
			  uint64_t now_ns, unsigned depth,
			  const struct disk_overlay_base_identity *expect, char *error,
			  size_t error_len);

void disk_image_close(struct disk_image *disk);

/*
 * Policy check for one request: op known, writes not on a read-only disk,
 * [sector, sector + sector_count) inside the disk without overflow.
 * Returns 0 or -KAPSEL_EROFS / -KAPSEL_ERANGE / -KAPSEL_EINVAL and counts
 * the denial.
 */
int disk_policy_check(struct disk_image *disk, enum kapsel_blk_op op, uint64_t sector,
		      uint64_t sector_count);

/* Count a request refused before any policy check because its descriptor,
 * a segment or a buffer was malformed (also counted as an error). */
void disk_stats_malformed(struct disk_image *disk);

/* Rate limits for a request of length_bytes at now_ns: 0 if it may go,
 * else nanoseconds to wait (counted as rate_limited). */
uint64_t disk_rate_limit(struct disk_image *disk, uint64_t length_bytes, uint64_t now_ns);

/* Record a completed request (status 0 or negative errno). */
void disk_stats_complete(struct disk_image *disk, enum kapsel_blk_op op, uint64_t length_bytes,
			 int status, uint64_t latency_ns);

/* Print the counters, "  name: value" per line. */
void disk_stats_print(struct disk_image *disk, FILE *out);

/* Change rate limits at run time. */
void disk_set_limits(struct disk_image *disk, const struct vm_rate_limit *ops,
		     const struct vm_rate_limit *bytes, uint64_t now_ns);

#endif
