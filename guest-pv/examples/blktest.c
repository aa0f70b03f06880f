/* Example guest: writes, verifies and stresses a disk through the block API (PV or ATA), checked against a model. */
#include "kapsel_guest/arch.h"
#include "kapsel_guest/block.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

#include "args.h"
#include "pattern.h"

/*
 * Usage (the command line):
 *   blktest MODE [disk=N] [path=pv|ata|auto] [seed=N] [sectors=N] [start=N] ...
 * Modes:
 *   info                       print capacity and flags
 *   write  seed= sectors= [start=] [hold=1]
 *                              write the pattern, flush; hold=1 then prints
 *                              "flush acknowledged" and waits to be killed
 *   verify seed= sectors= [start=]   read back and compare
 *   random ops= qd= seed= [sectors=] random reads/writes at depth qd,
 *                              checked against an in-guest model
 *   zeroes seed= sectors=      write_zeroes, discard and multi-segment I/O
 *   rocheck                    on a read-only disk: reads work, writes fail
 *   range                      out-of-range requests fail, the disk goes on
 *   perf   op=read|write qd= ops= bs=   throughput and exits per request
 * The pattern of a sector is 64 words, word i = mix(mix(seed) ^ (sector*64+i))
 * with mix = the splitmix64 finalizer (tests recompute it on the host).
 */

#define SECTOR 512u
#define WORDS_PER_SECTOR (SECTOR / 8u)
_Static_assert(WORDS_PER_SECTOR == PATTERN_WORDS_PER_SECTOR, "pattern.h sectors");
#define PAGE_BYTES 4096u
#define CHUNK_SECTORS 256u /* 128 KiB per synchronous request */
#define MAX_QD 256u
#define RANDOM_MAX_SECTORS 16u

static void *alloc_bytes(uint64_t bytes)
{
	void *p = kg_os_alloc_pages((bytes + PAGE_BYTES - 1) / PAGE_BYTES);
	kg_assert(p != 0);
	return p;
}

static const char *path_name(enum kg_block_path path)
{
	return path == KG_BLOCK_PV	 ? "pv"
	       : path == KG_BLOCK_ATA	 ? "ata"
	       : path == KG_BLOCK_VIRTIO ? "virtio"
					 : "auto";
}

static struct kg_block_device *open_disk(struct kg_block_info *info)
{
	enum kg_block_path path = KG_BLOCK_AUTO;
	const char *p = args_text("path");
	if (p && strcmp(p, "pv") == 0)
		path = KG_BLOCK_PV;
	else if (p && strcmp(p, "ata") == 0)
		path = KG_BLOCK_ATA;
	else if (p && strcmp(p, "virtio") == 0)
		path = KG_BLOCK_VIRTIO;
	else if (p && strcmp(p, "auto") != 0)
		kg_panic("path=%s is unknown; use pv, ata, virtio or auto", p);
	unsigned index = (unsigned)args_number("disk", 0);
	struct kg_block_device *dev;
	int err = kg_block_open(index, path, &dev);
	if (err) {
		kg_printf("blktest: cannot open disk %u on path %s: error %d\n", index,
			  path_name(path), err);
		kg_exit(2);
	}
	kg_block_get_info(dev, info);
	kg_block_set_poll_ns(dev, args_number("poll_ns", 0));
	return dev;
}

static void print_stats(struct kg_block_device *dev)
{
	struct kg_block_stats s;
	kg_block_get_stats(dev, &s);
	kg_printf("blktest stats: requests %llu kicks %llu suppressed %llu blocks %llu polls %llu kicks_in_block %llu\n",
		  (unsigned long long)s.requests, (unsigned long long)s.kicks,
		  (unsigned long long)s.kicks_suppressed, (unsigned long long)s.blocks,
		  (unsigned long long)s.polls, (unsigned long long)s.kicks_in_block);
}

/* ---- write / verify ------------------------------------------------------ */

static void do_write(struct kg_block_device *dev, struct kg_block_info *info)
{
	uint64_t seed = args_number("seed", 1), start = args_number("start", 0);
	uint64_t sectors = args_number("sectors", 2048);
	kg_assert(start + sectors <= info->capacity_sectors);
	uint64_t *buffer = alloc_bytes(CHUNK_SECTORS * SECTOR);
	for (uint64_t done = 0; done < sectors;) {
		uint32_t n =
			sectors - done < CHUNK_SECTORS ? (uint32_t)(sectors - done) : CHUNK_SECTORS;
		for (uint32_t i = 0; i < n; i++)
			pattern_fill_sector(buffer + i * WORDS_PER_SECTOR, seed, start + done + i);
		int err = kg_block_write(dev, start + done, buffer, n);
		if (err)
			kg_panic("write of sectors %llu+%u failed: %d",
				 (unsigned long long)(start + done), n, err);
		done += n;
	}
	int err = kg_block_flush(dev);
	kg_assert(err == 0);
	kg_printf("blktest write: %llu sectors from %llu, seed %llu, flushed\n",
		  (unsigned long long)sectors, (unsigned long long)start, (unsigned long long)seed);
	if (args_number("hold", 0)) {
		kg_printf("blktest: flush acknowledged\n");
		for (;;)
			kg_time_sleep_ns(1000000000ull);
	}
}

static void do_verify(struct kg_block_device *dev, struct kg_block_info *info)
{
	uint64_t seed = args_number("seed", 1), start = args_number("start", 0);
	uint64_t sectors = args_number("sectors", 2048);
	kg_assert(start + sectors <= info->capacity_sectors);
	uint64_t *buffer = alloc_bytes(CHUNK_SECTORS * SECTOR);
	for (uint64_t done = 0; done < sectors;) {
		uint32_t n =
			sectors - done < CHUNK_SECTORS ? (uint32_t)(sectors - done) : CHUNK_SECTORS;
		int err = kg_block_read(dev, start + done, buffer, n);
		kg_assert(err == 0);
		for (uint32_t i = 0; i < n; i++) {
			uint64_t sector = start + done + i;
			int word =
				pattern_check_sector(buffer + i * WORDS_PER_SECTOR, seed, sector);
			if (word >= 0)
				kg_printf("blktest verify: sector %llu word %d differs\n",
					  (unsigned long long)sector, word);
			kg_assert(word < 0);
		}
		done += n;
	}
	kg_printf("blktest verify: %llu sectors from %llu, seed %llu, all match\n",
		  (unsigned long long)sectors, (unsigned long long)start, (unsigned long long)seed);
}

/* ---- random I/O against a model ------------------------------------------ */

struct random_slot {
	struct kg_block_request request;
	uint64_t *buffer;
	uint64_t first;
	uint32_t count;
	uint32_t version; /* writes: the version written */
	bool busy;
};

static uint64_t rng_state;
static uint64_t rng_next(void)
{
	return pattern_mix(rng_state++);
}

static uint64_t version_seed(uint64_t seed, uint32_t version)
{
	return seed ^ ((uint64_t)version * 0x9e3779b97f4a7c15ull);
}

static void do_random(struct kg_block_device *dev, struct kg_block_info *info)
{
	uint64_t ops = args_number("ops", 1000), qd = args_number("qd", 32),
		 seed = args_number("seed", 1);
	uint64_t region = args_number("sectors", 8192);
	if (region > info->capacity_sectors)
		region = info->capacity_sectors;
	if (qd > info->queue_depth)
		qd = info->queue_depth;
	if (qd > MAX_QD)
		qd = MAX_QD;
	kg_assert(qd >= 1 && region >= RANDOM_MAX_SECTORS);
	rng_state = seed;

	uint32_t *versions = alloc_bytes(region * sizeof(uint32_t)); /* 0: unknown */
	uint8_t *busy = alloc_bytes(region);
	struct random_slot *slots = alloc_bytes(qd * sizeof(struct random_slot));
	for (uint64_t i = 0; i < qd; i++)
		slots[i].buffer = alloc_bytes(RANDOM_MAX_SECTORS * SECTOR);

	uint64_t issued = 0, completed = 0, reads = 0, writes = 0, checked = 0;
	uint32_t next_version = 0;
	struct kg_block_request *done[MAX_QD];
	while (completed < ops) {
		while (issued < ops && kg_block_in_flight(dev) < qd) {
			uint32_t count = 1 + (uint32_t)(rng_next() % RANDOM_MAX_SECTORS);
			uint64_t first = rng_next() % (region - count + 1);
			bool overlap = false;
			for (uint32_t i = 0; i < count; i++)
				overlap |= busy[first + i] != 0;
			if (overlap)
				break; /* let in-flight requests finish first */
			struct random_slot *slot = 0;
			for (uint64_t i = 0; i < qd && !slot; i++)
				if (!slots[i].busy)
					slot = &slots[i];
			kg_assert(slot != 0);
			bool write = rng_next() & 1;
			slot->busy = true;
			slot->first = first;
			slot->count = count;
			for (uint32_t i = 0; i < count; i++)
				busy[first + i] = 1;
			struct kg_block_request *r = &slot->request;
			*r = (struct kg_block_request){
				.op = write ? KAPSEL_BLK_OP_WRITE : KAPSEL_BLK_OP_READ,
				.sector = first,
				.user_data = slot,
			};
			if (write) {
				slot->version = ++next_version;
				for (uint32_t i = 0; i < count; i++)
					pattern_fill_sector(slot->buffer + i * WORDS_PER_SECTOR,
							    version_seed(seed, slot->version),
							    first + i);
			}
			/* 1 to 3 segments on sector boundaries. */
			uint32_t segments = 1 + (uint32_t)(rng_next() % 3);
			if (segments > count)
				segments = count;
			uint32_t given = 0;
			for (uint32_t s = 0; s < segments; s++) {
				uint32_t n = s + 1 == segments ? count - given : 1;
				r->segments[s].buffer = slot->buffer + given * WORDS_PER_SECTOR;
				r->segments[s].length_bytes = n * SECTOR;
				given += n;
			}
			r->segment_count = segments;
			int err = kg_block_submit(dev, r);
			kg_assert(err == 0);
			issued++;
		}
		kg_block_kick(dev);
		unsigned n = kg_block_reap(dev, done, MAX_QD, true);
		for (unsigned k = 0; k < n; k++) {
			struct random_slot *slot = done[k]->user_data;
			if (done[k]->status != 0)
				kg_panic("request on sectors %llu+%u failed: %d",
					 (unsigned long long)slot->first, slot->count,
					 done[k]->status);
			for (uint32_t i = 0; i < slot->count; i++) {
				uint64_t sector = slot->first + i;
				if (done[k]->op == KAPSEL_BLK_OP_WRITE) {
					versions[sector] = slot->version;
				} else if (versions[sector]) {
					int word =
						pattern_check_sector(slot->buffer +
									     i * WORDS_PER_SECTOR,
								     version_seed(seed,
										  versions[sector]),
								     sector);
					if (word >= 0)
						kg_printf("blktest random: sector %llu word %d differs from version %u\n",
							  (unsigned long long)sector, word,
							  versions[sector]);
					kg_assert(word < 0);
					checked++;
				}
				busy[sector] = 0;
			}
			if (done[k]->op == KAPSEL_BLK_OP_WRITE)
				writes++;
			else
				reads++;
			slot->busy = false;
			completed++;
		}
	}
	print_stats(dev);
	kg_printf("blktest random: %llu ops (%llu reads, %llu writes, %llu sectors checked) at qd %llu ok\n",
		  (unsigned long long)completed, (unsigned long long)reads,
		  (unsigned long long)writes, (unsigned long long)checked, (unsigned long long)qd);
}

/* ---- write_zeroes, discard, multi-segment ------------------------------ */

static void do_zeroes(struct kg_block_device *dev, struct kg_block_info *info)
{
	uint64_t seed = args_number("seed", 1), sectors = args_number("sectors", 256);
	kg_assert(sectors >= 64 && sectors <= CHUNK_SECTORS && sectors <= info->capacity_sectors);
	uint64_t *buffer = alloc_bytes(CHUNK_SECTORS * SECTOR);
	for (uint32_t i = 0; i < sectors; i++)
		pattern_fill_sector(buffer + i * WORDS_PER_SECTOR, seed, i);
	kg_assert(kg_block_write(dev, 0, buffer, (uint32_t)sectors) == 0);

	/* Zero [8, 24) and discard [32, 40); the rest keeps the pattern. */
	kg_assert(kg_block_write_zeroes(dev, 8, 16) == 0);
	int err = kg_block_discard(dev, 32, 8);
	kg_assert(err == 0);
	/* A write_zeroes of nothing is fine too. */
	kg_assert(kg_block_write_zeroes(dev, 0, 0) == 0);
	kg_assert(kg_block_flush(dev) == 0);

	/* Read everything back with one 4-segment request into scattered
	 * pieces (the segments are written to disk back to back). */
	uint64_t *pieces[4];
	uint32_t piece_sectors = (uint32_t)sectors / 4;
	struct kg_block_request r = { .op = KAPSEL_BLK_OP_READ, .sector = 0, .segment_count = 4 };
	for (int s = 0; s < 4; s++)
		pieces[s] = alloc_bytes(piece_sectors * SECTOR + PAGE_BYTES);
	for (int s = 0; s < 4; s++) {
		r.segments[s].buffer = pieces[3 - s]; /* out of memory order on purpose */
		r.segments[s].length_bytes = piece_sectors * SECTOR;
	}
	kg_assert(kg_block_submit(dev, &r) == 0);
	kg_block_kick(dev);
	struct kg_block_request *done = 0;
	while (kg_block_reap(dev, &done, 1, true) == 0)
		;
	kg_assert(done == &r && r.status == 0);
	static const uint64_t zero_sector[WORDS_PER_SECTOR];
	for (uint32_t i = 0; i < piece_sectors * 4; i++) {
		const uint64_t *words =
			pieces[3 - i / piece_sectors] + (i % piece_sectors) * WORDS_PER_SECTOR;
		if (i >= 8 && i < 24)
			kg_assert(memcmp(words, zero_sector, SECTOR) == 0);
		else if (i >= 32 && i < 40)
			; /* discarded: contents unspecified */
		else
			kg_assert(pattern_check_sector(words, seed, i) < 0);
	}
	kg_printf("blktest zeroes: write_zeroes, discard and a 4-segment read of %u sectors ok\n",
		  piece_sectors * 4);
}

/* ---- policy from the guest's side ------------------------------------ */

static void do_rocheck(struct kg_block_device *dev, struct kg_block_info *info)
{
	uint64_t *buffer = alloc_bytes(8 * SECTOR);
	kg_assert(info->readonly);
	kg_assert(kg_block_read(dev, 0, buffer, 8) == 0);
	int err = kg_block_write(dev, 0, buffer, 8);
	kg_printf("blktest rocheck: write -> %d\n", err);
	kg_assert(err == -KAPSEL_EROFS);
	kg_assert(kg_block_write_zeroes(dev, 0, 8) == -KAPSEL_EROFS);
	kg_assert(kg_block_discard(dev, 0, 8) == -KAPSEL_EROFS);
	kg_assert(kg_block_flush(dev) == 0);
	kg_assert(kg_block_read(dev, info->capacity_sectors - 8, buffer, 8) == 0);
	kg_printf("blktest rocheck: writes refused with -EROFS, reads ok\n");
}

static void do_range(struct kg_block_device *dev, struct kg_block_info *info)
{
	uint64_t *buffer = alloc_bytes(8 * SECTOR);
	uint64_t cap = info->capacity_sectors;
	int err = kg_block_read(dev, cap, buffer, 1);
	kg_printf("blktest range: read at the end -> %d\n", err);
	kg_assert(err == -KAPSEL_ERANGE);
	kg_assert(kg_block_read(dev, cap - 1, buffer, 2) == -KAPSEL_ERANGE);
	kg_assert(kg_block_write(dev, cap - 4, buffer, 8) == -KAPSEL_ERANGE);
	kg_assert(kg_block_read(dev, UINT64_MAX - 1, buffer, 4) == -KAPSEL_ERANGE);
	kg_assert(kg_block_read(dev, 1ull << 60, buffer, 1) == -KAPSEL_ERANGE);
	kg_assert(kg_block_write_zeroes(dev, cap - 1, 2) == -KAPSEL_ERANGE);
	kg_assert(kg_block_discard(dev, 1, UINT64_MAX) == -KAPSEL_ERANGE);
	/* The disk still works, up to its last sector. */
	kg_assert(kg_block_read(dev, cap - 1, buffer, 1) == 0);
	kg_assert(kg_block_read(dev, 0, buffer, 8) == 0);
	kg_printf("blktest range: out-of-range requests refused with -ERANGE, disk still works\n");
}

/* ---- throughput ----------------------------------------------------------- */

static void do_perf(struct kg_block_device *dev, struct kg_block_info *info)
{
	const char *op_text = args_text("op");
	bool write = op_text && strcmp(op_text, "write") == 0;
	uint64_t qd = args_number("qd", 32), ops = args_number("ops", 20000),
		 bs = args_number("bs", 4096);
	uint64_t region = args_number("sectors", info->capacity_sectors);
	if (qd > info->queue_depth)
		qd = info->queue_depth;
	if (qd > MAX_QD)
		qd = MAX_QD;
	kg_assert(bs % SECTOR == 0 && bs >= SECTOR && region * SECTOR > bs);
	struct kg_block_request *requests = alloc_bytes(qd * sizeof(struct kg_block_request));
	uint8_t *buffers = alloc_bytes(qd * bs);
	struct kg_block_request *done[MAX_QD];
	uint64_t blocks = region / (bs / SECTOR);
	rng_state = args_number("seed", 1);
	uint64_t issued = 0, completed = 0, latency_tsc = 0;
	uint64_t start_ns = kg_time_now_ns();
	for (uint64_t i = 0; i < qd; i++) {
		requests[i] = (struct kg_block_request){
			.op = write ? KAPSEL_BLK_OP_WRITE : KAPSEL_BLK_OP_READ,
			.segment_count = 1,
			.segments = { { buffers + i * bs, (uint32_t)bs } },
		};
	}
	struct kg_block_request *free_list[MAX_QD];
	unsigned free_count = 0;
	for (uint64_t i = 0; i < qd; i++)
		free_list[free_count++] = &requests[i];
	while (completed < ops) {
		while (issued < ops && free_count) {
			struct kg_block_request *r = free_list[--free_count];
			r->sector = (rng_next() % blocks) * (bs / SECTOR);
			kg_assert(kg_block_submit(dev, r) == 0);
			issued++;
		}
		kg_block_kick(dev);
		unsigned n = kg_block_reap(dev, done, MAX_QD, true);
		for (unsigned k = 0; k < n; k++) {
			kg_assert(done[k]->status == 0);
			latency_tsc += done[k]->reap_tsc - done[k]->submit_tsc;
			free_list[free_count++] = done[k];
		}
		completed += n;
	}
	uint64_t elapsed_ns = kg_time_now_ns() - start_ns;
	struct kg_block_stats s;
	kg_block_get_stats(dev, &s);
	uint64_t khz = kg_platform_start_info() ? kg_platform_start_info()->tsc_khz : 0;
	uint64_t mean_us = khz ? latency_tsc / ops * 1000 / khz : 0;
	kg_printf("blktest perf: %s bs %llu qd %llu: %llu ops in %llu us = %llu IOPS, %llu KiB/s, "
		  "mean latency %llu us, kicks/op %llu.%03llu, blocks/op %llu.%03llu\n",
		  write ? "write" : "read", (unsigned long long)bs, (unsigned long long)qd,
		  (unsigned long long)ops, (unsigned long long)(elapsed_ns / 1000),
		  (unsigned long long)(ops * 1000000000ull / (elapsed_ns ? elapsed_ns : 1)),
		  (unsigned long long)(ops * bs / 1024 * 1000000000ull /
				       (elapsed_ns ? elapsed_ns : 1)),
		  (unsigned long long)mean_us, (unsigned long long)(s.kicks / ops),
		  (unsigned long long)(s.kicks * 1000 / ops % 1000),
		  (unsigned long long)(s.blocks / ops),
		  (unsigned long long)(s.blocks * 1000 / ops % 1000));
	print_stats(dev);
}

int main(int argc, char **argv)
{
	const char *mode = args_init(argc, argv, "info");
	struct kg_block_info info;
	struct kg_block_device *dev = open_disk(&info);
	if (strcmp(mode, "info") == 0) {
		kg_printf("blktest info: path %s, %llu sectors, %s, max %u segments, queue depth %u\n",
			  path_name(info.path), (unsigned long long)info.capacity_sectors,
			  info.readonly ? "read-only" : "read-write", info.max_segments,
			  info.queue_depth);
	} else if (strcmp(mode, "write") == 0) {
		do_write(dev, &info);
	} else if (strcmp(mode, "verify") == 0) {
		do_verify(dev, &info);
	} else if (strcmp(mode, "random") == 0) {
		do_random(dev, &info);
	} else if (strcmp(mode, "zeroes") == 0) {
		do_zeroes(dev, &info);
	} else if (strcmp(mode, "rocheck") == 0) {
		do_rocheck(dev, &info);
	} else if (strcmp(mode, "range") == 0) {
		do_range(dev, &info);
	} else if (strcmp(mode, "perf") == 0) {
		do_perf(dev, &info);
	} else {
		kg_printf("blktest: unknown mode '%s'\n", mode);
		return 2;
	}
	return 0;
}
