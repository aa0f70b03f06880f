/* Example guest: several vCPUs write and verify a disk at once, each on its own PV block queue; `hostile` checks refused queue setups and a garbage ring beside a working one. */
#include "kapsel/blk.h"
#include "kapsel/ring.h"
#include "kapsel_guest/arch.h"
#include "kapsel_guest/block.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/ring.h"
#include "kapsel_guest/runtime.h"
#include "kapsel_guest/smp.h"

#include "args.h"
#include "pattern.h"

/*
 * Command line:  [run] [seed=N] [sectors=N] [qd=N]  or  hostile
 *                or  bench [qd=N] [ms=N] [sectors=N] [seed=N]
 *
 * run (the default): vCPU 0 opens disk 0 on the PV path and starts every
 * other vCPU.  vCPU k writes the pattern (pattern.h, seed) to its own
 * range [k * sectors, (k + 1) * sectors), 8 sectors per request, qd
 * requests in flight, on its own queue; each request records the vCPU
 * that submitted it and the completion path checks it is reaped on that
 * vCPU.  Then every vCPU reads its range back the same way and compares.
 * vCPU 0 waits for all, then reads every range again synchronously
 * (through its own queue: the rings share one disk) and prints
 * "blkmq ok: N vCPUs, Q queues, ..." or "blkmq FAILED: why" (exit 1).
 *
 * hostile (1 vCPU, a disk with queues=2 or more): DEVICE_SETUP of a queue
 * index >= the device's queue_count, of queue 1 with the control channel
 * or a channel out of range must be refused (-EINVAL); then queue 1 gets
 * a ring whose req_prod is garbage and a kick, and queue 0 must still
 * write and read back a pattern.  Prints "blkmq hostile ok".
 *
 * bench (`kapsel bench`, workload mq-randread-4K): every vCPU reads
 * random 4 KiB blocks of the first `sectors` sectors at depth qd on its
 * own queue for ms milliseconds; vCPU 0 prints
 * "blkmq bench: vcpus V queues Q ops N ns T".
 */

#define SECTOR 512u
#define REQUEST_SECTORS 8u
#define MAX_QD 64u
#define STACK_BYTES 32768u
#define PAGE_BYTES 4096u

struct cpu_result {
	uint64_t requests;
	uint64_t wrong_cpu; /* completions reaped on another vCPU */
	uint64_t mismatches;
	int error;
	unsigned queue;
};

static uint8_t cpu_stacks[KG_MAX_CPUS][STACK_BYTES] __attribute__((aligned(16)));
static struct kg_block_device *disk;
static struct cpu_result results[KG_MAX_CPUS];
static unsigned finished;
static uint64_t seed, sectors_each, qd;
static uint32_t done_port;

/* Write (or read and compare) vCPU me's range at depth qd on its queue. */
static void pass(unsigned me, bool write, uint8_t *buffers)
{
	struct cpu_result *r = &results[me];
	struct kg_block_request requests[MAX_QD];
	uint64_t first = me * sectors_each, next = first, end = first + sectors_each;
	unsigned in_flight = 0;
	while (next < end || in_flight) {
		while (next < end && in_flight < qd) {
			/* A free request: the lowest index not in flight. */
			unsigned i = 0;
			while (requests[i].user_data)
				i++;
			uint8_t *buffer = buffers + (uint64_t)i * REQUEST_SECTORS * SECTOR;
			uint64_t n = end - next < REQUEST_SECTORS ? end - next : REQUEST_SECTORS;
			if (write)
				for (uint64_t s = 0; s < n; s++)
					pattern_fill_sector((uint64_t *)(buffer + s * SECTOR), seed,
							    next + s);
			requests[i] = (struct kg_block_request){
				.op = write ? KAPSEL_BLK_OP_WRITE : KAPSEL_BLK_OP_READ,
				.sector = next,
				.segment_count = 1,
				.segments = { { buffer, (uint32_t)(n * SECTOR) } },
				/* The submitting vCPU, + 1 (0 marks a free request). */
				.user_data = (void *)(uintptr_t)(me + 1),
			};
			int err = kg_block_submit(disk, &requests[i]);
			if (err) {
				r->error = err;
				requests[i].user_data = 0;
				return;
			}
			in_flight++;
			next += n;
		}
		kg_block_kick(disk);
		struct kg_block_request *done[MAX_QD];
		unsigned got = kg_block_reap(disk, done, MAX_QD, true);
		for (unsigned d = 0; d < got; d++) {
			struct kg_block_request *req = done[d];
			/* The completion path: on the vCPU that submitted. */
			if ((uintptr_t)req->user_data != kg_cpu_id() + 1)
				r->wrong_cpu++;
			if (req->status)
				r->error = req->status;
			if (!write) {
				const uint8_t *buffer = req->segments[0].buffer;
				uint64_t n = req->segments[0].length_bytes / SECTOR;
				for (uint64_t s = 0; s < n; s++) {
					uint64_t want[PATTERN_WORDS_PER_SECTOR];
					pattern_fill_sector(want, seed, req->sector + s);
					if (memcmp(want, buffer + s * SECTOR, SECTOR) != 0)
						r->mismatches++;
				}
			}
			req->user_data = 0;
			r->requests++;
			in_flight--;
		}
	}
}

static void work(unsigned me)
{
	results[me].queue = kg_cpu_id() % kg_block_queue_count(disk);
	uint8_t *buffers = kg_os_alloc_pages(MAX_QD * REQUEST_SECTORS * SECTOR / PAGE_BYTES);
	if (!buffers) {
		results[me].error = -KAPSEL_ENOMEM;
		return;
	}
	pass(me, true, buffers);
	if (!results[me].error)
		pass(me, false, buffers);
}

/* ---- bench: random 4 KiB reads for a while ---- */

static uint64_t bench_deadline_ns;
static uint64_t bench_ops[KG_MAX_CPUS];
static bool bench_mode;

static uint64_t next_random(uint64_t *state)
{
	*state += PATTERN_GOLDEN;
	return pattern_finalize(*state);
}

static void bench_work(unsigned me)
{
	uint8_t *buffers = kg_os_alloc_pages(qd);
	struct kg_block_request *requests = kg_os_alloc_pages(
		(qd * sizeof(struct kg_block_request) + PAGE_BYTES - 1) / PAGE_BYTES);
	if (!buffers || !requests) {
		results[me].error = -KAPSEL_ENOMEM;
		return;
	}
	uint64_t state = seed * 7919 + me, blocks = sectors_each / 8, ops = 0;
	unsigned in_flight = 0;
	struct kg_block_request *done[MAX_QD];
	for (unsigned i = 0; i < qd; i++) {
		requests[i] = (struct kg_block_request){
			.op = KAPSEL_BLK_OP_READ,
			.sector = (next_random(&state) % blocks) * 8,
			.segment_count = 1,
			.segments = { { buffers + (uint64_t)i * PAGE_BYTES, PAGE_BYTES } },
		};
		if (kg_block_submit(disk, &requests[i]) == 0)
			in_flight++;
	}
	kg_block_kick(disk);
	while (in_flight) {
		unsigned got = kg_block_reap(disk, done, MAX_QD, true);
		bool more = kg_time_now_ns() < bench_deadline_ns;
		for (unsigned d = 0; d < got; d++) {
			in_flight--;
			if (done[d]->status) {
				results[me].error = done[d]->status;
				more = false;
			}
			ops++;
			if (!more)
				continue;
			done[d]->sector = (next_random(&state) % blocks) * 8;
			done[d]->status = 0;
			if (kg_block_submit(disk, done[d]) == 0)
				in_flight++;
		}
		kg_block_kick(disk);
	}
	bench_ops[me] = ops;
}

static void worker(void *arg)
{
	(void)arg;
	if (bench_mode)
		bench_work(kg_cpu_id());
	else
		work(kg_cpu_id());
	__atomic_fetch_add(&finished, 1u, __ATOMIC_ACQ_REL);
	kg_hc_evtchn_send(done_port); /* wakes vCPU 0 */
}

static int run_mode(void)
{
	unsigned cpus = kg_cpu_count();
	seed = args_number("seed", 7);
	sectors_each = args_number("sectors", 2048);
	qd = args_number("qd", 32);
	if (qd < 1 || qd > MAX_QD) {
		kg_printf("blkmq FAILED: qd must be 1-%u\n", MAX_QD);
		return 2;
	}
	int err = kg_block_open(0, KG_BLOCK_PV, &disk);
	if (err) {
		kg_printf("blkmq FAILED: no PV disk 0 (%d)\n", err);
		return 1;
	}
	struct kg_block_info info;
	kg_block_get_info(disk, &info);
	/* run: a range per vCPU; bench: every vCPU reads the same range. */
	uint64_t needed = bench_mode ? sectors_each : cpus * sectors_each;
	if (sectors_each < REQUEST_SECTORS || info.capacity_sectors < needed) {
		kg_printf("blkmq FAILED: the disk has %llu sectors, %llu needed\n",
			  (unsigned long long)info.capacity_sectors, (unsigned long long)needed);
		return 1;
	}
	kg_printf("blkmq: %u vCPUs, %u queues, %llu sectors each, qd %llu\n", cpus,
		  kg_block_queue_count(disk), (unsigned long long)sectors_each,
		  (unsigned long long)qd);
	int64_t port = kg_hc_evtchn_alloc();
	kg_assert(port >= 0);
	done_port = (uint32_t)port;
	uint64_t bench_start = kg_time_now_ns();
	bench_deadline_ns = bench_start + args_number("ms", 1000) * 1000000ull;
	for (unsigned k = 1; k < cpus; k++) {
		err = kg_cpu_start(k, worker, 0, cpu_stacks[k], STACK_BYTES);
		if (err) {
			kg_printf("blkmq FAILED: kg_cpu_start(%u) = %d\n", k, err);
			return 1;
		}
	}
	if (bench_mode)
		bench_work(0);
	else
		work(0);
	uint64_t give_up = kg_time_now_ns() + 120000000000ull;
	while (__atomic_load_n(&finished, __ATOMIC_ACQUIRE) < cpus - 1) {
		kg_evtchn_test_and_clear(done_port);
		if (__atomic_load_n(&finished, __ATOMIC_ACQUIRE) >= cpus - 1)
			break;
		if (kg_time_now_ns() > give_up) {
			kg_printf("blkmq FAILED: the other vCPUs did not finish in 120 s\n");
			return 1;
		}
		kg_hc_block(kg_time_now_ns() + 10000000ull);
	}
	if (bench_mode) {
		uint64_t ns = kg_time_now_ns() - bench_start, ops = 0;
		for (unsigned k = 0; k < cpus; k++) {
			ops += bench_ops[k];
			if (results[k].error) {
				kg_printf("blkmq FAILED: vCPU %u: error %d\n", k, results[k].error);
				return 1;
			}
		}
		kg_printf("blkmq bench: vcpus %u queues %u ops %llu ns %llu\n", cpus,
			  kg_block_queue_count(disk), (unsigned long long)ops,
			  (unsigned long long)ns);
		return 0;
	}
	unsigned bad = 0;
	for (unsigned k = 0; k < cpus; k++) {
		const struct cpu_result *r = &results[k];
		kg_printf("blkmq: vCPU %u queue %u: %llu requests, %llu reaped elsewhere, %llu "
			  "sectors differ, error %d\n",
			  k, r->queue, (unsigned long long)r->requests,
			  (unsigned long long)r->wrong_cpu, (unsigned long long)r->mismatches,
			  r->error);
		if (r->wrong_cpu || r->mismatches || r->error ||
		    r->requests < 2 * ((sectors_each + REQUEST_SECTORS - 1) / REQUEST_SECTORS))
			bad++;
	}
	/* Every range once more from vCPU 0: what the other rings wrote. */
	uint8_t *buffer = kg_os_alloc_pages(REQUEST_SECTORS * SECTOR / PAGE_BYTES);
	kg_assert(buffer != 0);
	uint64_t differ = 0;
	for (uint64_t s = 0; s < cpus * sectors_each; s += REQUEST_SECTORS) {
		if (kg_block_read(disk, s, buffer, REQUEST_SECTORS) != 0) {
			differ++;
			continue;
		}
		for (unsigned i = 0; i < REQUEST_SECTORS; i++) {
			uint64_t want[PATTERN_WORDS_PER_SECTOR];
			pattern_fill_sector(want, seed, s + i);
			if (memcmp(want, buffer + i * SECTOR, SECTOR) != 0)
				differ++;
		}
	}
	struct kg_block_stats stats;
	kg_block_get_stats(disk, &stats);
	if (bad || differ) {
		kg_printf("blkmq FAILED: %u vCPUs failed, %llu sectors differ on vCPU 0's re-read\n",
			  bad, (unsigned long long)differ);
		return 1;
	}
	kg_printf("blkmq ok: %u vCPUs, %u queues, %llu sectors written and verified, "
		  "%llu requests, %llu kicks, %llu sleeps\n",
		  cpus, kg_block_queue_count(disk), (unsigned long long)(cpus * sectors_each),
		  (unsigned long long)stats.requests, (unsigned long long)stats.kicks,
		  (unsigned long long)stats.blocks);
	return 0;
}

/* ---- hostile ---- */

static unsigned hostile_failures;

static void expect_rc(const char *what, int64_t got, int64_t want)
{
	if (got == want)
		return;
	kg_printf("blkmq FAILED: %s returned %lld, expected %lld\n", what, (long long)got,
		  (long long)want);
	hostile_failures++;
}

static int hostile_mode(void)
{
	const struct kapsel_device_desc *desc =
		kg_platform_find_unit(0, KAPSEL_DEV_BLOCK_PV, KAPSEL_DEV_NONE);
	if (!desc || desc->queue_count < 2) {
		kg_printf(
			"blkmq FAILED: hostile needs PV disk 0 with 2 queues or more (queues=2)\n");
		return 2;
	}
	/* Opening on 1 vCPU sets up ring 0 only: queue 1 is ours to abuse. */
	int err = kg_block_open(0, KG_BLOCK_PV, &disk);
	kg_assert(err == 0);
	kg_assert(kg_block_queue_count(disk) == 1);

	/* A real ring for queue 1 (order 1: two slots, the smallest), kept for the end. */
	static struct kg_ring kr;
	uint32_t pages = kg_ring_pages(1, sizeof(struct kapsel_blk_request),
				       sizeof(struct kapsel_blk_response));
	uint8_t *mem = kg_os_alloc_pages(pages);
	kg_assert(mem != 0);
	kg_ring_init(&kr, mem, 1, sizeof(struct kapsel_blk_request),
		     sizeof(struct kapsel_blk_response), 0);
	int64_t port = kg_hc_evtchn_alloc();
	kg_assert(port >= 0);
	static struct kapsel_device_setup setup;
	setup = (struct kapsel_device_setup){
		.magic = KAPSEL_DEVICE_SETUP_MAGIC,
		.revision = 1,
		.ring_gpa = kg_os_virt_to_phys(mem),
		.ring_pages = pages,
		.evtchn_port = (uint32_t)port,
		.queue = desc->queue_count,
	};
	expect_rc("DEVICE_SETUP of queue == queue_count", kg_hc_device_setup(desc->index, &setup),
		  -KAPSEL_EINVAL);
	setup.queue = 0xffffffffu;
	expect_rc("DEVICE_SETUP of queue 0xffffffff", kg_hc_device_setup(desc->index, &setup),
		  -KAPSEL_EINVAL);
	setup.queue = 1;
	setup.evtchn_port = KAPSEL_EVTCHN_CONTROL;
	expect_rc("DEVICE_SETUP of queue 1 with the control channel",
		  kg_hc_device_setup(desc->index, &setup), -KAPSEL_EINVAL);
	setup.evtchn_port = KAPSEL_EVTCHN_COUNT + 5;
	expect_rc("DEVICE_SETUP of queue 1 with a channel out of range",
		  kg_hc_device_setup(desc->index, &setup), -KAPSEL_EINVAL);
	setup.evtchn_port = (uint32_t)port + 1; /* never allocated */
	expect_rc("DEVICE_SETUP of queue 1 with a channel not allocated",
		  kg_hc_device_setup(desc->index, &setup), -KAPSEL_EINVAL);

	/* Queue 1 with its own channel, then garbage in its ring. */
	setup.evtchn_port = (uint32_t)port;
	expect_rc("DEVICE_SETUP of queue 1", kg_hc_device_setup(desc->index, &setup), 0);
	struct kapsel_ring_header *header = (struct kapsel_ring_header *)mem;
	__atomic_store_n(&header->req_prod, 0x7fff0000u, __ATOMIC_RELEASE);
	kg_outw(desc->doorbell_port, 1);

	/* Queue 0 goes on. */
	uint8_t *buffer = kg_os_alloc_pages(4);
	kg_assert(buffer != 0);
	for (unsigned s = 0; s < 32; s++)
		pattern_fill_sector((uint64_t *)(buffer + s * SECTOR), 99, 500 + s);
	expect_rc("a write on queue 0 after queue 1 broke", kg_block_write(disk, 500, buffer, 32),
		  0);
	for (unsigned i = 0; i < 4 * PAGE_BYTES; i++)
		buffer[i] = 0;
	expect_rc("a read on queue 0", kg_block_read(disk, 500, buffer, 32), 0);
	for (unsigned s = 0; s < 32; s++) {
		uint64_t want[PATTERN_WORDS_PER_SECTOR];
		pattern_fill_sector(want, 99, 500 + s);
		if (memcmp(want, buffer + s * SECTOR, SECTOR) != 0) {
			kg_printf("blkmq FAILED: sector %u differs after queue 1 broke\n", 500 + s);
			hostile_failures++;
			break;
		}
	}
	if (hostile_failures) {
		kg_printf("blkmq FAILED: %u hostile checks failed\n", hostile_failures);
		return 1;
	}
	kg_printf("blkmq hostile ok: bad queue setups refused, queue 0 served beside a broken "
		  "queue 1\n");
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = args_init(argc, argv, "run");
	kg_assert(kg_platform_is_kapsel());
	if (strcmp(mode, "hostile") == 0)
		return hostile_mode();
	bench_mode = strcmp(mode, "bench") == 0;
	if (strcmp(mode, "run") != 0 && !bench_mode) {
		kg_printf("blkmq FAILED: unknown mode %s (run, hostile or bench)\n", mode);
		return 2;
	}
	return run_mode();
}
