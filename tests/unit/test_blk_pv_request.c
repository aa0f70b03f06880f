/* Unit tests of the PV block request checks (blk_pv_request.c): hostile descriptors against a fake guest RAM and disk, no KVM. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "devices/block/blk_pv_request.h"
#include "cunit_main.h"
#include "kapsel/abi.h"

#define RAM_BYTES (256u * 1024u)
#define FLOOR_GPA 0x4000u
#define DISK_SECTORS 1000u

static uint8_t *ram;
static struct guest_memory mem;
static struct disk_image disk;

static void fresh(bool readonly)
{
	if (!ram)
		ram = calloc(1, RAM_BYTES);
	mem = (struct guest_memory){
		.memfd = -1, .host_base = ram, .size_bytes = RAM_BYTES, .guest_floor_gpa = FLOOR_GPA
	};
	memset(&disk, 0, sizeof(disk));
	disk.fd = -1;
	disk.readonly = readonly;
	disk.capacity_sectors = DISK_SECTORS;
	disk.size_bytes = DISK_SECTORS * 512ull;
	pthread_mutex_init(&disk.lock, NULL);
}

static struct kapsel_blk_request data_request(uint8_t op, uint64_t sector, uint64_t gpa,
					      uint32_t length)
{
	struct kapsel_blk_request r = { .op = op, .sector = sector, .segment_count = 1 };
	r.segments[0] = (struct kapsel_blk_segment){ gpa, length, 0 };
	return r;
}

static int check(const struct kapsel_blk_request *r, struct blk_pv_transfer *t, bool *counted)
{
	memset(t, 0xcc, sizeof(*t));
	return blk_pv_request_check(r, &mem, &disk, t, counted);
}

static void test_valid_requests(void)
{
	fresh(false);
	struct blk_pv_transfer t;
	bool counted = true;
	struct kapsel_blk_request r = data_request(KAPSEL_BLK_OP_READ, 7, 0x8000, 1024);
	r.segment_count = 2;
	r.segments[1] = (struct kapsel_blk_segment){ RAM_BYTES - 512, 512, 0 };
	CU_ASSERT_EQUAL(check(&r, &t, &counted), 0);
	CU_ASSERT_FALSE(counted);
	CU_ASSERT_EQUAL(t.iov_count, 2);
	CU_ASSERT_PTR_EQUAL(t.iov[0].iov_base, ram + 0x8000);
	CU_ASSERT_EQUAL(t.iov[0].iov_len, 1024);
	CU_ASSERT_PTR_EQUAL(t.iov[1].iov_base, ram + RAM_BYTES - 512);
	CU_ASSERT_EQUAL(t.offset_bytes, 7 * 512);
	CU_ASSERT_EQUAL(t.remaining_bytes, 1536);
	CU_ASSERT_EQUAL(t.length_bytes, 1536);

	/* The last sectors of the disk, exactly. */
	r = data_request(KAPSEL_BLK_OP_WRITE, DISK_SECTORS - 2, FLOOR_GPA, 1024);
	CU_ASSERT_EQUAL(check(&r, &t, &counted), 0);
	CU_ASSERT_EQUAL(t.offset_bytes + t.remaining_bytes, DISK_SECTORS * 512ull);

	/* FLUSH and GET_INFO ignore the sector, whatever it says. */
	r = (struct kapsel_blk_request){ .op = KAPSEL_BLK_OP_FLUSH, .sector = UINT64_MAX };
	CU_ASSERT_EQUAL(check(&r, &t, &counted), 0);
	CU_ASSERT_EQUAL(t.offset_bytes, 0);
	CU_ASSERT_EQUAL(t.remaining_bytes, 0);
	CU_ASSERT_EQUAL(t.iov_count, 0);
	r = data_request(KAPSEL_BLK_OP_GET_INFO, UINT64_MAX / 3, 0x9000, 512);
	CU_ASSERT_EQUAL(check(&r, &t, &counted), 0);
	CU_ASSERT_EQUAL(t.offset_bytes, 0);
	CU_ASSERT_EQUAL(t.length_bytes, 0);
	CU_ASSERT(t.iov[0].iov_len >= sizeof(struct kapsel_blk_info));

	/* DISCARD / WRITE_ZEROES take sector_count. */
	r = (struct kapsel_blk_request){ .op = KAPSEL_BLK_OP_WRITE_ZEROES,
					 .sector = 10,
					 .sector_count = DISK_SECTORS - 10 };
	CU_ASSERT_EQUAL(check(&r, &t, &counted), 0);
	CU_ASSERT_EQUAL(t.offset_bytes, 5120);
	CU_ASSERT_EQUAL(t.remaining_bytes, (DISK_SECTORS - 10) * 512ull);
	CU_ASSERT_EQUAL(disk.stats.errors, 0);
}

static void expect_refused(struct kapsel_blk_request r, int status, uint64_t *counter)
{
	struct blk_pv_transfer t;
	bool counted = false;
	uint64_t before = *counter, errors = disk.stats.errors;
	CU_ASSERT_EQUAL(check(&r, &t, &counted), status);
	CU_ASSERT_TRUE(counted);
	CU_ASSERT_EQUAL(*counter, before + 1);
	CU_ASSERT_EQUAL(disk.stats.errors, errors + 1);
}

static void test_hostile_requests(void)
{
	fresh(false);
	uint64_t *malformed = &disk.stats.denied_malformed, *bounds = &disk.stats.denied_bounds;
	struct kapsel_blk_request r;

	r = data_request(77, 0, 0x8000, 512);
	expect_refused(r, -KAPSEL_EINVAL, malformed);
	r = data_request(KAPSEL_BLK_OP_READ, 0, 0x8000, 512);
	r.segment_count = KAPSEL_BLK_MAX_SEGMENTS + 1;
	expect_refused(r, -KAPSEL_EINVAL, malformed);
	r = data_request(KAPSEL_BLK_OP_READ, 0, 0x8000, 512);
	r.flags = 1;
	expect_refused(r, -KAPSEL_EINVAL, malformed);
	r = data_request(KAPSEL_BLK_OP_READ, 0, 0x8000, 512);
	r.segment_count = 0;
	expect_refused(r, -KAPSEL_EINVAL, malformed);
	r = data_request(KAPSEL_BLK_OP_DISCARD, 0, 0x8000, 512);
	expect_refused(r, -KAPSEL_EINVAL, malformed); /* discard with a segment */
	r = data_request(KAPSEL_BLK_OP_GET_INFO, 0, 0x8000, 512);
	r.segment_count = 2;
	r.segments[1] = r.segments[0];
	expect_refused(r, -KAPSEL_EINVAL, malformed);
	expect_refused(data_request(KAPSEL_BLK_OP_READ, 0, 0x8000 + 8, 512), -KAPSEL_EINVAL,
		       malformed);
	expect_refused(data_request(KAPSEL_BLK_OP_READ, 0, 0x8000, 100), -KAPSEL_EINVAL, malformed);
	expect_refused(data_request(KAPSEL_BLK_OP_READ, 0, 0x8000, 0), -KAPSEL_EINVAL, malformed);

	/* Guest addresses: beyond RAM, across its end, wrapping, and below
	 * the floor (the hypervisor's own tables). */
	expect_refused(data_request(KAPSEL_BLK_OP_READ, 0, RAM_BYTES, 512), -KAPSEL_EFAULT,
		       malformed);
	expect_refused(data_request(KAPSEL_BLK_OP_READ, 0, RAM_BYTES - 512, 1024), -KAPSEL_EFAULT,
		       malformed);
	expect_refused(data_request(KAPSEL_BLK_OP_WRITE, 0, 0xfffffffffffffe00ull, 0x400),
		       -KAPSEL_EFAULT, malformed);
	expect_refused(data_request(KAPSEL_BLK_OP_READ, 0, 0, 512), -KAPSEL_EFAULT, malformed);
	expect_refused(data_request(KAPSEL_BLK_OP_GET_INFO, 0, FLOOR_GPA - 512, 512),
		       -KAPSEL_EFAULT, malformed);
	expect_refused(data_request(KAPSEL_BLK_OP_READ, 0, FLOOR_GPA - 512, 1024), -KAPSEL_EFAULT,
		       malformed);

	/* Disk bounds, with the sums that overflow 64 bits. */
	expect_refused(data_request(KAPSEL_BLK_OP_READ, DISK_SECTORS, 0x8000, 512), -KAPSEL_ERANGE,
		       bounds);
	expect_refused(data_request(KAPSEL_BLK_OP_READ, DISK_SECTORS - 1, 0x8000, 1024),
		       -KAPSEL_ERANGE, bounds);
	expect_refused(data_request(KAPSEL_BLK_OP_READ, UINT64_MAX, 0x8000, 512), -KAPSEL_ERANGE,
		       bounds);
	expect_refused(data_request(KAPSEL_BLK_OP_WRITE, UINT64_MAX / 512 + 1, 0x8000, 512),
		       -KAPSEL_ERANGE, bounds);
	r = (struct kapsel_blk_request){ .op = KAPSEL_BLK_OP_WRITE_ZEROES,
					 .sector = 8,
					 .sector_count = UINT64_MAX - 4 };
	expect_refused(r, -KAPSEL_ERANGE, bounds);
	r = (struct kapsel_blk_request){ .op = KAPSEL_BLK_OP_DISCARD, .sector = DISK_SECTORS + 1 };
	expect_refused(r, -KAPSEL_ERANGE, bounds);

	fresh(true);
	expect_refused(data_request(KAPSEL_BLK_OP_WRITE, 0, 0x8000, 512), -KAPSEL_EROFS,
		       &disk.stats.denied_readonly);
	r = (struct kapsel_blk_request){ .op = KAPSEL_BLK_OP_DISCARD,
					 .sector = 0,
					 .sector_count = 1 };
	expect_refused(r, -KAPSEL_EROFS, &disk.stats.denied_readonly);
	struct blk_pv_transfer t;
	bool counted;
	r = data_request(KAPSEL_BLK_OP_READ, 0, 0x8000, 512);
	CU_ASSERT_EQUAL(check(&r, &t, &counted), 0);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "valid requests map into guest RAM and the disk", test_valid_requests },
		{ "hostile requests are refused and counted", test_hostile_requests },
	};
	int status = UNIT_RUN("blk_pv_request", tests);
	free(ram);
	return status;
}
