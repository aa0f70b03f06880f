/* Host disk images and the access policy every block device enforces: bounds, read-only, rate limits, counters. */
#define _GNU_SOURCE
#include "devices/block/disk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devices/block/disk_overlay.h"
#include "core/error_text.h"
#include "core/output_gate.h"
#include "kapsel/abi.h"

static disk_lock_holder_fn lock_holder_lookup;

void disk_set_lock_holder_lookup(disk_lock_holder_fn lookup)
{
	lock_holder_lookup = lookup;
}

int disk_image_open(struct disk_image *disk, const struct vm_disk_config *config, uint64_t now_ns,
		    char *error, size_t error_len)
{
	return disk_image_open_depth(disk, config, now_ns, 0, NULL, error, error_len);
}

int disk_image_open_depth(struct disk_image *disk, const struct vm_disk_config *config,
			  uint64_t now_ns, unsigned depth,
			  const struct disk_overlay_base_identity *expect, char *error,
			  size_t error_len)
{
	struct stat st;
	int flags = O_CLOEXEC | (config->readonly ? O_RDONLY : O_RDWR);
	int err;

	memset(disk, 0, sizeof(*disk));
	disk->fd = -1;
	if (config->cache == VM_DISK_CACHE_NONE)
		flags |= O_DIRECT;
	disk->fd = open(config->path, flags);
	if (disk->fd < 0) {
		err = -errno;
		if (errno == ENOENT)
			return kapsel_fail(
				error, error_len, err,
				"disk image '%s' does not exist; create it (e.g. truncate -s 256M '%s')",
				config->path, config->path);
		if ((errno == EACCES || errno == EROFS || errno == EPERM) && !config->readonly)
			return kapsel_fail(
				error, error_len, err,
				"disk image '%s' is not writable; use readonly (--disk %s,readonly or <readonly/>) or chmod u+w",
				config->path, config->path);
		if (errno == EINVAL && (flags & O_DIRECT))
			return kapsel_fail(
				error, error_len, err,
				"disk image '%s': its file system does not support O_DIRECT; use cache=writeback",
				config->path);
		return kapsel_fail(error, error_len, err, "cannot open disk image '%s': %s",
				   config->path, strerror(errno));
	}
	if (fstat(disk->fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
		err = kapsel_fail(error, error_len, -EINVAL,
				  "disk image '%s' is not a regular file or block device",
				  config->path);
		goto fail;
	}
	if (expect &&
	    ((uint64_t)st.st_dev != expect->device || (uint64_t)st.st_ino != expect->inode ||
	     (uint64_t)st.st_size != expect->size_bytes ||
	     (int64_t)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec != expect->mtime_ns)) {
		err = kapsel_fail(error, error_len, -ESTALE,
				  "the file is not the one the overlay was made over");
		goto fail;
	}
	disk->size_bytes = (uint64_t)st.st_size;
	if (S_ISBLK(st.st_mode)) {
		off_t end = lseek(disk->fd, 0, SEEK_END);
		disk->size_bytes = end > 0 ? (uint64_t)end : 0;
	}
	if (disk->size_bytes < KAPSEL_BLK_SECTOR_BYTES) {
		err = kapsel_fail(
			error, error_len, -EINVAL,
			"disk image '%s' is %llu bytes, smaller than one 512-byte sector; grow it with truncate -s",
			config->path, (unsigned long long)disk->size_bytes);
		goto fail;
	}
	if (flock(disk->fd, (config->readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
		char who[128];
		if (lock_holder_lookup && lock_holder_lookup(config->path, who, sizeof(who)))
			err = kapsel_fail(
				error, error_len, -EBUSY,
				"disk image '%s' is in use by %s (locked); stop that VM or give this one a copy",
				config->path, who);
		else
			err = kapsel_fail(
				error, error_len, -EBUSY,
				"disk image '%s' is in use by another VM (locked); stop that VM or give this one a copy",
				config->path);
		goto fail;
	}
	/* A copy-on-write overlay reads through to its base chain.  Only the
	 * definition says an image is one: a raw image's bytes are the
	 * guest's, whatever they look like. */
	if (config->format == VM_DISK_FORMAT_OVERLAY) {
		err = disk_overlay_attach(disk, config, depth, error, error_len);
		if (err)
			goto fail;
	}
	disk->path = strdup(config->path);
	disk->readonly = config->readonly;
	disk->direct = config->cache == VM_DISK_CACHE_NONE;
	/* A trailing partial sector is not addressable. */
	disk->capacity_sectors = disk->size_bytes / KAPSEL_BLK_SECTOR_BYTES;
	token_bucket_init(&disk->ops_bucket, &config->ops_limit, now_ns);
	token_bucket_init(&disk->bytes_bucket, &config->bytes_limit, now_ns);
	pthread_mutex_init(&disk->lock, NULL);
	return 0;
fail:
	close(disk->fd);
	disk->fd = -1;
	return err;
}

void disk_image_close(struct disk_image *disk)
{
	if (disk->fd >= 0) {
		/* Unlock explicitly: io_uring may keep a reference to the file
		 * for a moment after close, and the lock lives as long as the
		 * file does (a restarted VM would find its image locked). */
		disk_overlay_detach(disk);
		flock(disk->fd, LOCK_UN);
		close(disk->fd);
		pthread_mutex_destroy(&disk->lock);
	}
	disk->fd = -1;
	free(disk->path);
	disk->path = NULL;
}

int disk_policy_check(struct disk_image *disk, enum kapsel_blk_op op, uint64_t sector,
		      uint64_t sector_count)
{
	int err = 0;
	uint64_t *counter = NULL;

	if ((unsigned)op >= KAPSEL_BLK_OP_COUNT) {
		err = -KAPSEL_EINVAL;
		counter = &disk->stats.denied_malformed;
	} else if (disk->readonly && (op == KAPSEL_BLK_OP_WRITE || op == KAPSEL_BLK_OP_DISCARD ||
				      op == KAPSEL_BLK_OP_WRITE_ZEROES)) {
		err = -KAPSEL_EROFS;
		counter = &disk->stats.denied_readonly;
	} else if ((op == KAPSEL_BLK_OP_READ || op == KAPSEL_BLK_OP_WRITE ||
		    op == KAPSEL_BLK_OP_DISCARD || op == KAPSEL_BLK_OP_WRITE_ZEROES) &&
		   (sector > disk->capacity_sectors ||
		    sector_count > disk->capacity_sectors - sector)) {
		err = -KAPSEL_ERANGE;
		counter = &disk->stats.denied_bounds;
	} else if (op != KAPSEL_BLK_OP_READ && output_gate_wait() < 0) {
		/* Nothing reaches the image from a guest whose restored memory
		 * failed its check (output_gate.h); writes wait for the verdict. */
		err = -KAPSEL_EIO; /* an error, but none of the denials above */
	}
	if (err) {
		pthread_mutex_lock(&disk->lock);
		if (counter)
			(*counter)++;
		disk->stats.errors++;
		pthread_mutex_unlock(&disk->lock);
	}
	return err;
}

void disk_stats_malformed(struct disk_image *disk)
{
	pthread_mutex_lock(&disk->lock);
	disk->stats.denied_malformed++;
	disk->stats.errors++;
	pthread_mutex_unlock(&disk->lock);
}

uint64_t disk_rate_limit(struct disk_image *disk, uint64_t length_bytes, uint64_t now_ns)
{
	pthread_mutex_lock(&disk->lock);
	uint64_t wait = token_bucket_take_request(&disk->ops_bucket, &disk->bytes_bucket,
						  length_bytes, now_ns);
	if (wait)
		disk->stats.rate_limited++;
	pthread_mutex_unlock(&disk->lock);
	return wait;
}

static unsigned latency_bucket(uint64_t latency_ns)
{
	uint64_t us = latency_ns / 1000;
	unsigned bucket = 0;
	while (us > 1 && bucket < DISK_LATENCY_BUCKETS - 1) {
		us >>= 1;
		bucket++;
	}
	return bucket;
}

void disk_stats_complete(struct disk_image *disk, enum kapsel_blk_op op, uint64_t length_bytes,
			 int status, uint64_t latency_ns)
{
	pthread_mutex_lock(&disk->lock);
	if ((unsigned)op < KAPSEL_BLK_OP_COUNT && status == 0) {
		disk->stats.ops[op]++;
		disk->stats.bytes[op] += length_bytes;
	} else if (status != 0) {
		disk->stats.errors++;
	}
	disk->stats.latency_us[latency_bucket(latency_ns)]++;
	pthread_mutex_unlock(&disk->lock);
}

void disk_set_limits(struct disk_image *disk, const struct vm_rate_limit *ops,
		     const struct vm_rate_limit *bytes, uint64_t now_ns)
{
	pthread_mutex_lock(&disk->lock);
	if (ops)
		token_bucket_init(&disk->ops_bucket, ops, now_ns);
	if (bytes)
		token_bucket_init(&disk->bytes_bucket, bytes, now_ns);
	pthread_mutex_unlock(&disk->lock);
}

void disk_stats_print(struct disk_image *disk, FILE *out)
{
	static const char *const op_names[KAPSEL_BLK_OP_COUNT] = {
		"read", "write", "flush", "discard", "write_zeroes", "get_info",
	};
	pthread_mutex_lock(&disk->lock);
	struct disk_stats s = disk->stats;
	pthread_mutex_unlock(&disk->lock);
	fprintf(out, "  image: %s%s%s\n", disk->path, disk->readonly ? " (read-only)" : "",
		disk->direct ? " (O_DIRECT)" : "");
	for (unsigned op = 0; op < KAPSEL_BLK_OP_COUNT; op++)
		if (s.ops[op])
			fprintf(out, "  ops_%s: %llu\n  bytes_%s: %llu\n", op_names[op],
				(unsigned long long)s.ops[op], op_names[op],
				(unsigned long long)s.bytes[op]);
	fprintf(out,
		"  errors: %llu\n  denied_bounds: %llu\n  denied_readonly: %llu\n"
		"  denied_malformed: %llu\n  rate_limited: %llu\n  in_flight: %llu\n"
		"  kicks_received: %llu\n  notifications_sent: %llu\n",
		(unsigned long long)s.errors, (unsigned long long)s.denied_bounds,
		(unsigned long long)s.denied_readonly, (unsigned long long)s.denied_malformed,
		(unsigned long long)s.rate_limited, (unsigned long long)s.in_flight,
		(unsigned long long)s.kicks_received, (unsigned long long)s.notifications_sent);
	fprintf(out, "  latency_us_histogram:");
	for (unsigned i = 0; i < DISK_LATENCY_BUCKETS; i++)
		if (s.latency_us[i])
			fprintf(out, " [%llu,%llu):%llu", i ? 1ull << i : 0ull, 1ull << (i + 1),
				(unsigned long long)s.latency_us[i]);
	fputc('\n', out);
}
