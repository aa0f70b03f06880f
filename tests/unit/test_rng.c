/* Unit tests of the PV entropy device model (rng_pv_model.c) and --rng parsing: hostile requests, rate limits, ring serving and the state record against a fake guest RAM, no KVM. */
#include <stdlib.h>
#include <string.h>

#include "kapsel_guest/ring.h"
#include "cunit_main.h"
#include "devices/rng/rng_pv_model.h"

#define RAM_BYTES (256u * 1024u)
#define FLOOR_GPA 0x4000u
#define RING_GPA 0x10000u
#define BUFFER_GPA 0x20000u
#define ORDER 3u

static uint8_t *ram;
static struct guest_memory mem;
static struct rng_pv_model model;
static struct kg_ring frontend;
static unsigned fills;
static int fill_result;

/* A deterministic "random" source: counts calls, writes 0xa5. */
static int fake_fill(void *opaque, void *buffer, uint32_t length_bytes)
{
	(void)opaque;
	fills++;
	if (fill_result)
		return fill_result;
	memset(buffer, 0xa5, length_bytes);
	return 0;
}

static void fresh(const struct vm_rng_config *config)
{
	if (!ram)
		ram = calloc(1, RAM_BYTES);
	memset(ram, 0, RAM_BYTES);
	mem = (struct guest_memory){
		.memfd = -1, .host_base = ram, .size_bytes = RAM_BYTES, .guest_floor_gpa = FLOOR_GPA
	};
	static const struct vm_rng_config unlimited = { .enabled = true };
	fills = 0;
	fill_result = 0;
	rng_pv_model_init(&model, &mem, config ? config : &unlimited, 0, fake_fill, NULL);
}

static struct kapsel_device_setup ring_setup(void)
{
	kg_ring_init(&frontend, ram + RING_GPA, ORDER, sizeof(struct kapsel_rng_request),
		     sizeof(struct kapsel_rng_response), 0);
	return (struct kapsel_device_setup){
		.magic = KAPSEL_DEVICE_SETUP_MAGIC,
		.revision = 1,
		.ring_gpa = RING_GPA,
		.ring_pages = kg_ring_pages(ORDER, sizeof(struct kapsel_rng_request),
					    sizeof(struct kapsel_rng_response)),
	};
}

static struct kapsel_rng_response answer(uint64_t gpa, uint32_t length, uint64_t now_ns)
{
	struct kapsel_rng_request req = { .id = 9, .gpa = gpa, .length_bytes = length };
	struct kapsel_rng_response rsp;
	memset(&rsp, 0xcc, sizeof(rsp));
	rng_pv_answer(&model, &req, now_ns, &rsp);
	CU_ASSERT_EQUAL(rsp.id, 9);
	return rsp;
}

static void test_request_checks(void)
{
	fresh(NULL);
	struct kapsel_rng_response r = answer(BUFFER_GPA, 100, 0);
	CU_ASSERT_EQUAL(r.status, 0);
	CU_ASSERT_EQUAL(r.length_bytes, 100);
	CU_ASSERT_EQUAL(ram[BUFFER_GPA + 99], 0xa5);
	CU_ASSERT_EQUAL(ram[BUFFER_GPA + 100], 0); /* not one byte more */
	/* The whole of RAM's last bytes, and one past it. */
	CU_ASSERT_EQUAL(answer(RAM_BYTES - 16, 16, 0).status, 0);
	CU_ASSERT_EQUAL(answer(RAM_BYTES - 15, 16, 0).status, -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(answer(RAM_BYTES, 1, 0).status, -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(answer(UINT64_MAX - 3, 16, 0).status, -KAPSEL_EFAULT);
	/* The hypervisor's low memory (tables, start info) is not the guest's. */
	CU_ASSERT_EQUAL(answer(0, 16, 0).status, -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(answer(FLOOR_GPA - 8, 16, 0).status, -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(answer(FLOOR_GPA, 16, 0).status, 0);
	/* Lengths. */
	CU_ASSERT_EQUAL(answer(BUFFER_GPA, 0, 0).status, -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(answer(BUFFER_GPA, KAPSEL_RNG_REQUEST_MAX_BYTES, 0).status, 0);
	CU_ASSERT_EQUAL(answer(BUFFER_GPA, KAPSEL_RNG_REQUEST_MAX_BYTES + 1, 0).status,
			-KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(answer(BUFFER_GPA, UINT32_MAX, 0).status, -KAPSEL_EINVAL);
	/* Flags and reserved must be zero. */
	struct kapsel_rng_request req = { .gpa = BUFFER_GPA, .length_bytes = 4, .flags = 1 };
	struct kapsel_rng_response rsp;
	rng_pv_answer(&model, &req, 0, &rsp);
	CU_ASSERT_EQUAL(rsp.status, -KAPSEL_EINVAL);
	req.flags = 0;
	req._reserved = 1;
	rng_pv_answer(&model, &req, 0, &rsp);
	CU_ASSERT_EQUAL(rsp.status, -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(rsp.length_bytes, 0);
	/* A failing source is -EIO, nothing claimed written. */
	fill_result = -KAPSEL_EIO;
	r = answer(BUFFER_GPA, 8, 0);
	CU_ASSERT_EQUAL(r.status, -KAPSEL_EIO);
	CU_ASSERT_EQUAL(r.length_bytes, 0);
	struct rng_pv_stats s;
	rng_pv_model_stats(&model, &s);
	CU_ASSERT_EQUAL(s.requests, 4);
	CU_ASSERT_EQUAL(s.bytes, 100 + 16 + 16 + KAPSEL_RNG_REQUEST_MAX_BYTES);
	CU_ASSERT_EQUAL(s.errors, 11);
	CU_ASSERT_EQUAL(s.throttled, 0);
	/* Refused requests never reach the source. */
	CU_ASSERT_EQUAL(fills, 5);
}

static void test_rate_limits(void)
{
	/* 1000 bytes/s, bucket 1000: 1000 bytes now, then EAGAIN with the wait. */
	struct vm_rng_config config = { .enabled = true,
					.bytes_limit = { .rate_per_second = 1000, .burst = 1000 } };
	fresh(&config);
	CU_ASSERT_EQUAL(answer(BUFFER_GPA, 600, 0).status, 0);
	CU_ASSERT_EQUAL(answer(BUFFER_GPA, 400, 0).status, 0);
	struct kapsel_rng_response r = answer(BUFFER_GPA, 500, 0);
	CU_ASSERT_EQUAL(r.status, -KAPSEL_EAGAIN);
	CU_ASSERT_EQUAL(r.length_bytes, 0);
	CU_ASSERT_EQUAL(r.retry_after_ns, 500000000ull);
	CU_ASSERT_EQUAL(fills, 2); /* nothing written while throttled */
	/* Half a second later the tokens are there. */
	CU_ASSERT_EQUAL(answer(BUFFER_GPA, 500, 500000000ull).status, 0);

	/* 2 requests/s, bucket 1: the second request at once waits 0.5 s. */
	struct vm_rng_config ops = { .enabled = true,
				     .requests_limit = { .rate_per_second = 2, .burst = 1 } };
	fresh(&ops);
	CU_ASSERT_EQUAL(answer(BUFFER_GPA, 1, 0).status, 0);
	r = answer(BUFFER_GPA, 1, 0);
	CU_ASSERT_EQUAL(r.status, -KAPSEL_EAGAIN);
	CU_ASSERT_EQUAL(r.retry_after_ns, 500000000ull);
	/* Invalid requests cost no tokens. */
	CU_ASSERT_EQUAL(answer(BUFFER_GPA, 1, 500000000ull - 1).status, -KAPSEL_EAGAIN);
	CU_ASSERT_EQUAL(answer(0, 1, 500000000ull).status, -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(answer(BUFFER_GPA, 1, 500000000ull).status, 0);
	struct rng_pv_stats s;
	rng_pv_model_stats(&model, &s);
	CU_ASSERT_EQUAL(s.throttled, 2);
	CU_ASSERT_EQUAL(s.requests, 2);
}

/* Publish one request through the frontend. */
static void push(uint64_t id, uint64_t gpa, uint32_t length)
{
	struct kapsel_rng_request *slot = kg_ring_next_request(&frontend);
	CU_ASSERT_PTR_NOT_NULL_FATAL(slot);
	*slot = (struct kapsel_rng_request){ .id = id, .gpa = gpa, .length_bytes = length };
	kg_ring_push_request(&frontend);
}

static void test_ring_serving(void)
{
	fresh(NULL);
	CU_ASSERT_FALSE(rng_pv_model_serve(&model, 0)); /* no ring: nothing */
	struct kapsel_device_setup setup = ring_setup();
	/* The skeleton sets the queue up (pv_device_setup checks setup.queue;
	 * test_pv_device.c); here the model serves it. */
	CU_ASSERT_EQUAL(pv_queue_setup(&model.queue, &mem, &setup), 0);
	/* A full ring of good and bad requests, all answered in one kick, in order. */
	for (uint64_t i = 0; i < (1u << ORDER); i++)
		push(i, i % 2 ? 0x100 : BUFFER_GPA + i * 64, 64);
	CU_ASSERT_TRUE(kg_ring_publish(&frontend));
	rng_pv_model_serve(&model, 0);
	for (uint64_t i = 0; i < (1u << ORDER); i++) {
		const struct kapsel_rng_response *rsp = kg_ring_peek_response(&frontend);
		CU_ASSERT_PTR_NOT_NULL_FATAL(rsp);
		CU_ASSERT_EQUAL(rsp->id, i);
		CU_ASSERT_EQUAL(rsp->status, i % 2 ? -KAPSEL_EFAULT : 0);
		kg_ring_consume_response(&frontend);
	}
	CU_ASSERT_PTR_NULL(kg_ring_peek_response(&frontend));
	/* The host asked for the next kick: the next publish says to kick. */
	push(100, BUFFER_GPA, 8);
	CU_ASSERT_TRUE(kg_ring_publish(&frontend));
	rng_pv_model_serve(&model, 0);
	CU_ASSERT_PTR_NOT_NULL(kg_ring_peek_response(&frontend));
	kg_ring_consume_response(&frontend);

	/* Save and load the record: the ring goes on where it was. */
	struct vm_state_rng_pv rec;
	rng_pv_model_save(&model, &rec);
	CU_ASSERT_EQUAL(rec.ring_gpa, RING_GPA);
	CU_ASSERT_EQUAL(rec.order, ORDER);
	CU_ASSERT_EQUAL(rec.index, (1u << ORDER) + 1);
	char error[256] = "";
	struct vm_state_rng_pv bad = rec;
	bad.index += 1;
	CU_ASSERT_EQUAL(rng_pv_model_load(&model, &bad, error, sizeof(error)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "is not a valid ring in the saved memory"));
	bad = rec;
	bad.order = ORDER + 1;
	CU_ASSERT_EQUAL(rng_pv_model_load(&model, &bad, error, sizeof(error)), -EINVAL);
	bad = rec;
	bad.ring_gpa = RAM_BYTES - 4096;
	CU_ASSERT_EQUAL(rng_pv_model_load(&model, &bad, error, sizeof(error)), -EINVAL);
	bad = rec;
	bad.broken = 7;
	CU_ASSERT_EQUAL(rng_pv_model_load(&model, &bad, error, sizeof(error)), -EINVAL);
	CU_ASSERT_EQUAL(rng_pv_model_load(&model, &rec, error, sizeof(error)), 0);
	push(101, BUFFER_GPA, 8);
	kg_ring_publish(&frontend);
	rng_pv_model_serve(&model, 0);
	const struct kapsel_rng_response *rsp = kg_ring_peek_response(&frontend);
	CU_ASSERT_PTR_NOT_NULL_FATAL(rsp);
	CU_ASSERT_EQUAL(rsp->id, 101);
	CU_ASSERT_EQUAL(rsp->status, 0);
	kg_ring_consume_response(&frontend);

	/* An impossible producer index stops the ring: no more answers. */
	frontend.header->req_prod += 1000;
	CU_ASSERT_FALSE(rng_pv_model_serve(&model, 0));
	CU_ASSERT_PTR_NULL(kg_ring_peek_response(&frontend));
	struct rng_pv_stats s;
	rng_pv_model_stats(&model, &s);
	CU_ASSERT_EQUAL(s.errors, 4 + 1);
	rng_pv_model_save(&model, &rec);
	CU_ASSERT_EQUAL(rec.broken, 1);
	/* A reboot forgets the ring. */
	pv_queue_install(&model.queue, NULL, 0, 0);
	rng_pv_model_save(&model, &rec);
	CU_ASSERT_EQUAL(rec.ring_gpa, 0);
}

static void test_parse_option(void)
{
	struct vm_rng_config rng;
	char error[512];
	CU_ASSERT_EQUAL(vm_config_parse_rng(NULL, &rng, error, sizeof(error)), 0);
	CU_ASSERT_TRUE(rng.enabled);
	CU_ASSERT_EQUAL(rng.bytes_limit.rate_per_second, 0);
	CU_ASSERT_EQUAL(vm_config_parse_rng("bps=4096,iops=10,bps_burst=8192,iops_burst=2", &rng,
					    error, sizeof(error)),
			0);
	CU_ASSERT_EQUAL(rng.bytes_limit.rate_per_second, 4096);
	CU_ASSERT_EQUAL(rng.bytes_limit.burst, 8192);
	CU_ASSERT_EQUAL(rng.requests_limit.rate_per_second, 10);
	CU_ASSERT_EQUAL(rng.requests_limit.burst, 2);
	CU_ASSERT_EQUAL(vm_config_parse_rng("bps=-1", &rng, error, sizeof(error)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "--rng 'bps=-1'"));
	CU_ASSERT_EQUAL(vm_config_parse_rng("path=/dev/random", &rng, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "syntax: --rng"));
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "request checks", test_request_checks },
		{ "rate limits", test_rate_limits },
		{ "ring serving and state record", test_ring_serving },
		{ "--rng option", test_parse_option },
	};
	return unit_run("rng", tests, sizeof(tests) / sizeof(tests[0]));
}
