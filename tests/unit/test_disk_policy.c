/* Unit tests of the disk policy: bounds with overflow, read-only, token buckets on a fake clock, image open errors. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cunit_main.h"
#include "core/output_gate.h"
#include "devices/block/disk.h"
#include "kapsel/abi.h"

#define NS 1000000000ull

static struct disk_image fake_disk(uint64_t capacity_sectors, bool readonly)
{
	struct disk_image disk;
	memset(&disk, 0, sizeof(disk));
	disk.fd = -1;
	disk.capacity_sectors = capacity_sectors;
	disk.readonly = readonly;
	pthread_mutex_init(&disk.lock, NULL);
	return disk;
}

static void test_bounds(void)
{
	struct disk_image d = fake_disk(1000, false);
	const enum kapsel_blk_op R = KAPSEL_BLK_OP_READ, W = KAPSEL_BLK_OP_WRITE;
	CU_ASSERT_EQUAL(disk_policy_check(&d, R, 0, 1000), 0);
	CU_ASSERT_EQUAL(disk_policy_check(&d, W, 999, 1), 0);
	CU_ASSERT_EQUAL(disk_policy_check(&d, R, 1000, 0), 0); /* empty, at the end */
	CU_ASSERT_EQUAL(disk_policy_check(&d, R, 1000, 1), -KAPSEL_ERANGE);
	CU_ASSERT_EQUAL(disk_policy_check(&d, R, 1, 1000), -KAPSEL_ERANGE);
	CU_ASSERT_EQUAL(disk_policy_check(&d, W, 1001, 0), -KAPSEL_ERANGE);
	/* Sums that overflow 64 bits must not wrap into range. */
	CU_ASSERT_EQUAL(disk_policy_check(&d, R, UINT64_MAX, 1), -KAPSEL_ERANGE);
	CU_ASSERT_EQUAL(disk_policy_check(&d, R, 10, UINT64_MAX - 5), -KAPSEL_ERANGE);
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_DISCARD, 2, UINT64_MAX),
			-KAPSEL_ERANGE);
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_WRITE_ZEROES, 999, 2), -KAPSEL_ERANGE);
	/* Flush and get_info carry no range. */
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_FLUSH, UINT64_MAX, UINT64_MAX), 0);
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_GET_INFO, 5000, 0), 0);
	CU_ASSERT_EQUAL(disk_policy_check(&d, (enum kapsel_blk_op)KAPSEL_BLK_OP_COUNT, 0, 0),
			-KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(disk_policy_check(&d, (enum kapsel_blk_op)200, 0, 0), -KAPSEL_EINVAL);
	/* Counted: 7 out of range, 2 malformed. */
	CU_ASSERT_EQUAL(d.stats.denied_bounds, 7);
	CU_ASSERT_EQUAL(d.stats.denied_malformed, 2);
	CU_ASSERT_EQUAL(d.stats.errors, 9);
	disk_stats_malformed(&d);
	CU_ASSERT_EQUAL(d.stats.denied_malformed, 3);
	CU_ASSERT_EQUAL(d.stats.errors, 10);
	pthread_mutex_destroy(&d.lock);
}

static void test_readonly(void)
{
	struct disk_image d = fake_disk(100, true);
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_READ, 0, 100), 0);
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_FLUSH, 0, 0), 0);
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_GET_INFO, 0, 0), 0);
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_WRITE, 0, 1), -KAPSEL_EROFS);
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_DISCARD, 0, 1), -KAPSEL_EROFS);
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_WRITE_ZEROES, 0, 1), -KAPSEL_EROFS);
	/* Read-only wins over out of range: the guest learns the real reason. */
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_WRITE, 500, 1), -KAPSEL_EROFS);
	CU_ASSERT_EQUAL(d.stats.denied_readonly, 4);
	CU_ASSERT_EQUAL(d.stats.denied_bounds, 0);
	pthread_mutex_destroy(&d.lock);
}

static void test_bucket_basic(void)
{
	struct token_bucket b;
	struct vm_rate_limit limit = { .rate_per_second = 10, .burst = 5 };
	uint64_t t0 = 1000;
	token_bucket_init(&b, &limit, t0);
	for (int i = 0; i < 5; i++)
		CU_ASSERT_EQUAL(token_bucket_take(&b, 1, t0), 0);
	/* Empty: one token comes every 100 ms. */
	CU_ASSERT_EQUAL(token_bucket_take(&b, 1, t0), NS / 10);
	CU_ASSERT_EQUAL(token_bucket_take(&b, 1, t0 + NS / 10 - 1), 1);
	CU_ASSERT_EQUAL(token_bucket_take(&b, 2, t0 + NS / 20), NS / 10 + NS / 20);
	CU_ASSERT_EQUAL(token_bucket_take(&b, 1, t0 + NS / 10), 0);
	CU_ASSERT_EQUAL(token_bucket_take(&b, 1, t0 + NS / 10), NS / 10);
	/* Idle for an hour: the bucket holds its burst, not more. */
	uint64_t later = t0 + 3600 * NS;
	for (int i = 0; i < 5; i++)
		CU_ASSERT_EQUAL(token_bucket_take(&b, 1, later), 0);
	CU_ASSERT_EQUAL(token_bucket_take(&b, 1, later), NS / 10);
	/* A clock that goes backwards earns nothing. */
	CU_ASSERT_NOT_EQUAL(token_bucket_take(&b, 1, t0), 0);
}

static void test_bucket_fractions(void)
{
	/* 3 tokens per second: after t seconds floor(3 t) tokens have come,
	 * however the takes are spaced. */
	struct token_bucket b;
	struct vm_rate_limit limit = { .rate_per_second = 3, .burst = 1000 };
	token_bucket_init(&b, &limit, 0);
	CU_ASSERT_EQUAL(token_bucket_take(&b, 1000, 0), 0); /* drain: never full again */
	uint64_t granted = 0;
	/* Look every 0.1 s for 10 s: exactly 30 more tokens. */
	for (uint64_t t = NS / 10; t <= 10 * NS; t += NS / 10)
		if (token_bucket_take(&b, 1, t) == 0)
			granted++;
	CU_ASSERT_EQUAL(granted, 30);
	/* Takes spaced just above a third of a second: one each time, also
	 * with a bucket of one that is full at every take. */
	limit.burst = 1;
	token_bucket_init(&b, &limit, 0);
	CU_ASSERT_EQUAL(token_bucket_take(&b, 1, 0), 0);
	for (uint64_t k = 1; k <= 30; k++)
		CU_ASSERT_EQUAL(token_bucket_take(&b, 1, k * (NS / 3 + 1)), 0);
}

static void test_bucket_oversize_debt(void)
{
	/* 1000 bytes/s, burst 1000: a 5000-byte request goes at once from a
	 * full bucket, then the bucket owes 4000 bytes (4 s). */
	struct token_bucket b;
	struct vm_rate_limit limit = { .rate_per_second = 1000, .burst = 1000 };
	token_bucket_init(&b, &limit, 0);
	CU_ASSERT_EQUAL(token_bucket_take(&b, 5000, 0), 0);
	CU_ASSERT_EQUAL(token_bucket_take(&b, 1, 0), 4 * NS + NS / 1000);
	CU_ASSERT_EQUAL(token_bucket_take(&b, 1, 4 * NS), NS / 1000);
	CU_ASSERT_EQUAL(token_bucket_take(&b, 1, 4 * NS + NS / 1000), 0);
	/* Over 100 s a stream of oversize requests gets ~1000 bytes/s. */
	token_bucket_init(&b, &limit, 0);
	uint64_t now = 0, bytes = 0;
	while (now < 100 * NS) {
		uint64_t wait = token_bucket_take(&b, 3000, now);
		if (wait)
			now += wait;
		else
			bytes += 3000;
	}
	/* Burst (1000) plus rate * time, within one request. */
	CU_ASSERT_TRUE(bytes <= 1000 + 100 * 1000 + 3000);
	CU_ASSERT_TRUE(bytes >= 100 * 1000 - 3000);
}

static void test_bucket_unlimited(void)
{
	struct token_bucket b;
	token_bucket_init(&b, NULL, 0);
	CU_ASSERT_EQUAL(token_bucket_take(&b, UINT64_MAX, 0), 0);
	struct vm_rate_limit limit = { .rate_per_second = 0, .burst = 10 };
	token_bucket_init(&b, &limit, 0);
	CU_ASSERT_EQUAL(token_bucket_take(&b, 1ull << 40, 0), 0);
	/* burst 0 means one second's worth. */
	limit = (struct vm_rate_limit){ .rate_per_second = 50, .burst = 0 };
	token_bucket_init(&b, &limit, 0);
	for (int i = 0; i < 50; i++)
		CU_ASSERT_EQUAL(token_bucket_take(&b, 1, 0), 0);
	CU_ASSERT_NOT_EQUAL(token_bucket_take(&b, 1, 0), 0);
	/* Enormous rates do not overflow. */
	limit = (struct vm_rate_limit){ .rate_per_second = UINT64_MAX / 2, .burst = 1 };
	token_bucket_init(&b, &limit, 0);
	CU_ASSERT_EQUAL(token_bucket_take(&b, 1, 0), 0);
	CU_ASSERT_EQUAL(token_bucket_take(&b, 1, UINT64_MAX - 1), 0);
}

static void test_disk_rate_limit(void)
{
	struct disk_image d = fake_disk(100, false);
	struct vm_rate_limit ops = { .rate_per_second = 2, .burst = 2 };
	struct vm_rate_limit bytes = { .rate_per_second = 4096, .burst = 4096 };
	disk_set_limits(&d, &ops, &bytes, 0);
	CU_ASSERT_EQUAL(disk_rate_limit(&d, 1024, 0), 0);
	/* Bytes run out first: the op token is given back. */
	CU_ASSERT_EQUAL(disk_rate_limit(&d, 4096, 0), NS / 4);
	CU_ASSERT_EQUAL(d.stats.rate_limited, 1);
	CU_ASSERT_EQUAL(disk_rate_limit(&d, 3072, 0), 0); /* the second op token is there */
	/* Now ops are out: 0.5 s for the next one. */
	CU_ASSERT_EQUAL(disk_rate_limit(&d, 0, 0), NS / 2);
	CU_ASSERT_EQUAL(disk_rate_limit(&d, 0, NS / 2), 0);
	CU_ASSERT_EQUAL(d.stats.rate_limited, 2);
	pthread_mutex_destroy(&d.lock);
}

/* ---- image open errors (the exact text a user sees) --------------------------- */

static char temp_dir[64];

static void make_file(const char *path, off_t size)
{
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(ftruncate(fd, size) == 0);
	close(fd);
}

static void test_open_errors(void)
{
	char path[128], expected[512], error[512];
	struct disk_image disk;
	struct vm_disk_config config = { 0 };
	strcpy(temp_dir, "/tmp/kapsel-disk-test.XXXXXX");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(temp_dir));

	snprintf(path, sizeof(path), "%s/missing.img", temp_dir);
	config.path = path;
	CU_ASSERT_EQUAL(disk_image_open(&disk, &config, 0, error, sizeof(error)), -ENOENT);
	snprintf(expected, sizeof(expected),
		 "disk image '%s' does not exist; create it (e.g. truncate -s 256M '%s')", path,
		 path);
	CU_ASSERT_STRING_EQUAL(error, expected);

	snprintf(path, sizeof(path), "%s/small.img", temp_dir);
	make_file(path, 100);
	CU_ASSERT_EQUAL(disk_image_open(&disk, &config, 0, error, sizeof(error)), -EINVAL);
	snprintf(expected, sizeof(expected),
		 "disk image '%s' is 100 bytes, smaller than one 512-byte sector; grow it with truncate -s",
		 path);
	CU_ASSERT_STRING_EQUAL(error, expected);

	/* A trailing partial sector is not addressable. */
	snprintf(path, sizeof(path), "%s/odd.img", temp_dir);
	make_file(path, 512 * 10 + 100);
	CU_ASSERT_EQUAL_FATAL(disk_image_open(&disk, &config, 0, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(disk.capacity_sectors, 10);
	CU_ASSERT_EQUAL(disk.size_bytes, 512 * 10 + 100);
	/* A second writer is refused while the first holds the image. */
	struct disk_image second;
	CU_ASSERT_EQUAL(disk_image_open(&second, &config, 0, error, sizeof(error)), -EBUSY);
	snprintf(expected, sizeof(expected),
		 "disk image '%s' is in use by another VM (locked); stop that VM or give this one a copy",
		 path);
	CU_ASSERT_STRING_EQUAL(error, expected);
	/* Readers do not share with a writer either. */
	config.readonly = true;
	CU_ASSERT_EQUAL(disk_image_open(&second, &config, 0, error, sizeof(error)), -EBUSY);
	disk_image_close(&disk);
	/* Two readers may share. */
	CU_ASSERT_EQUAL_FATAL(disk_image_open(&disk, &config, 0, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(disk_image_open(&second, &config, 0, error, sizeof(error)), 0);
	CU_ASSERT_TRUE(second.readonly);
	disk_image_close(&second);
	disk_image_close(&disk);
	config.readonly = false;

	CU_ASSERT_EQUAL(disk_image_open(&disk, &(struct vm_disk_config){ .path = temp_dir }, 0,
					error, sizeof(error)),
			-EISDIR);

	unlink(path);
	snprintf(path, sizeof(path), "%s/small.img", temp_dir);
	unlink(path);
	rmdir(temp_dir);
}

static void *wait_at_gate(void *result)
{
	*(int *)result = output_gate_wait();
	return NULL;
}

/* The output gate of a lazy restore: while it is closed a waiter sleeps,
 * opening lets it through, refusing turns it and every later write away;
 * a disk's reads never wait. */
static void test_output_gate(void)
{
	struct disk_image d = fake_disk(1000, false);
	CU_ASSERT_FALSE(output_gate_closed());
	CU_ASSERT_EQUAL(output_gate_wait(), 0);

	output_gate_close();
	CU_ASSERT_TRUE(output_gate_closed());
	int result = 1;
	pthread_t waiter;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&waiter, NULL, wait_at_gate, &result), 0);
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_READ, 0, 8), 0);
	output_gate_open();
	pthread_join(waiter, NULL);
	CU_ASSERT_EQUAL(result, 0);
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_WRITE, 0, 8), 0);

	output_gate_close();
	result = 1;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&waiter, NULL, wait_at_gate, &result), 0);
	output_gate_refuse();
	pthread_join(waiter, NULL);
	CU_ASSERT_EQUAL(result, -EIO);
	CU_ASSERT_FALSE(output_gate_closed());
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_WRITE, 0, 8), -KAPSEL_EIO);
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_FLUSH, 0, 0), -KAPSEL_EIO);
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_DISCARD, 0, 8), -KAPSEL_EIO);
	CU_ASSERT_EQUAL(disk_policy_check(&d, KAPSEL_BLK_OP_READ, 0, 8), 0);
	CU_ASSERT_EQUAL(d.stats.errors, 3);
	output_gate_open(); /* for the tests after this one */
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "bounds and overflow", test_bounds },
		{ "read-only", test_readonly },
		{ "token bucket basics", test_bucket_basic },
		{ "token bucket fractions", test_bucket_fractions },
		{ "token bucket oversize debt", test_bucket_oversize_debt },
		{ "token bucket unlimited", test_bucket_unlimited },
		{ "disk rate limit (ops and bytes)", test_disk_rate_limit },
		{ "image open errors", test_open_errors },
		{ "output gate: writes wait, then pass or are refused", test_output_gate },
	};
	return UNIT_RUN("disk_policy", tests);
}
