/* Unit tests of the PV block device's per-queue state records (blk_pv_record_parse): sizes, queue indexes the device lacks, channels. */
#include <string.h>

#include "cunit_main.h"
#include "devices/block/blk_pv.h"
#include "kapsel/abi.h"

static char error[512];

static struct vm_state_block_pv record(uint32_t queue, uint64_t ring_gpa, uint32_t port)
{
	return (struct vm_state_block_pv){ .ring_gpa = ring_gpa,
					   .ring_pages = 2,
					   .order = 4,
					   .queue = queue,
					   .evtchn_port = port };
}

static int parse(const struct vm_state_block_pv *in, uint64_t length, unsigned queues,
		 struct vm_state_block_pv *out)
{
	error[0] = 0;
	return blk_pv_record_parse(in, length, queues, out, error, sizeof(error));
}

static void test_records_of_existing_queues(void)
{
	struct vm_state_block_pv out;
	/* A record written before queues existed: queue 0, port 0 (reserved). */
	struct vm_state_block_pv in = record(0, 0x10000, 0);
	CU_ASSERT_EQUAL(parse(&in, sizeof(in), 1, &out), 0);
	CU_ASSERT_EQUAL(out.queue, 0);
	CU_ASSERT_EQUAL(out.ring_gpa, 0x10000);
	/* Queue 0 with no ring: the guest set nothing up. */
	in = record(0, 0, 0);
	CU_ASSERT_EQUAL(parse(&in, sizeof(in), 2, &out), 0);
	/* The last queue of a 4-queue device, with its channel or none. */
	in = record(3, 0x20000, 17);
	CU_ASSERT_EQUAL(parse(&in, sizeof(in), 4, &out), 0);
	CU_ASSERT_EQUAL(out.queue, 3);
	CU_ASSERT_EQUAL(out.evtchn_port, 17);
	CU_ASSERT_EQUAL(out.ring_pages, 2);
	in = record(1, 0x20000, UINT32_MAX);
	CU_ASSERT_EQUAL(parse(&in, sizeof(in), 2, &out), 0);
	CU_ASSERT_EQUAL(out.evtchn_port, UINT32_MAX);
}

static void test_records_refused(void)
{
	struct vm_state_block_pv out;
	struct vm_state_block_pv in = record(1, 0x20000, 5);
	/* Queue 1 of a device restored with one queue (fewer vCPUs). */
	CU_ASSERT_EQUAL(parse(&in, sizeof(in), 1, &out), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "PV block record is for queue 1 but this disk has 1 "
					     "queue; restore with as many vCPUs"));
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "queues='N'/>) to at least 2"));
	in = record(16, 0x20000, 5);
	CU_ASSERT_EQUAL(parse(&in, sizeof(in), 16, &out), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "queue 16 but this disk has 16 queues"));
	in = record(UINT32_MAX, 0x20000, 5);
	CU_ASSERT_EQUAL(parse(&in, sizeof(in), 16, &out), -EINVAL);
	/* A channel out of range. */
	in = record(1, 0x20000, KAPSEL_EVTCHN_COUNT);
	CU_ASSERT_EQUAL(parse(&in, sizeof(in), 2, &out), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "names event channel"));
	/* Only queue 0 is saved without a ring. */
	in = record(1, 0, 5);
	CU_ASSERT_EQUAL(parse(&in, sizeof(in), 2, &out), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "queue 1 has no ring"));
	/* Wrong sizes. */
	in = record(0, 0x10000, 0);
	CU_ASSERT_EQUAL(parse(&in, sizeof(in) - 8, 2, &out), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "PV block record is 40 bytes, expected 48"));
	uint8_t big[64] = { 0 };
	CU_ASSERT_EQUAL(parse((const void *)big, sizeof(big), 2, &out), -EINVAL);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "records of queues the device has load", test_records_of_existing_queues },
		{ "records of queues it lacks, bad channels and sizes are refused",
		  test_records_refused },
	};
	return UNIT_RUN("blk_pv_persist", tests);
}
