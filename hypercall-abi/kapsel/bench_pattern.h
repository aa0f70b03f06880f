/* What the bench guest and the host-side bench share: offset streams, the data pattern and the latency histogram (freestanding). */
#ifndef KAPSEL_BENCH_PATTERN_H
#define KAPSEL_BENCH_PATTERN_H

/*
 * Included by the hypervisor (hosted) and by guest-pv/examples/blkbench.c
 * (freestanding), so both sides issue the same offsets, write the same
 * bytes and bucket latencies the same way.  Only <stdint.h>; everything is
 * static inline.  docs/benchmarks.md describes the pattern so other tools
 * (the integration test's Python) can recompute it.
 */

#include <stdint.h>

#define BENCH_SECTOR_BYTES 512u
/* Bytes 8..15 of every sector the bench writes: this magic | generation. */
#define BENCH_PATTERN_MAGIC 0x4b42454e43480000ull /* "KBENCH\0\0" */
#define BENCH_PATTERN_HEADER_BYTES 16u

/* ---- Pseudo-random numbers: splitmix64 ----------------------------------- */

struct bench_rng {
	uint64_t state;
};

static inline uint64_t bench_rng_next(struct bench_rng *rng)
{
	uint64_t z = (rng->state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* ---- The operation stream ------------------------------------------------ */

/*
 * One workload's sequence of operations: which block (in units of the
 * block size) and whether it reads or writes.  Sequential streams walk the
 * region from block 0 and wrap; random ones draw uniformly.  Given the same
 * parameters and seed, every runner produces the same sequence.
 */
struct bench_stream {
	uint64_t region_blocks; /* region size / block size, > 0 */
	uint64_t next_block;	/* sequential position */
	uint32_t random;	/* 1: uniform random blocks */
	uint32_t read_percent;	/* 100 reads, 0 writes, else a mix */
	struct bench_rng rng;
};

static inline void bench_stream_init(struct bench_stream *stream, uint64_t region_blocks,
				     uint32_t random, uint32_t read_percent, uint64_t seed)
{
	stream->region_blocks = region_blocks ? region_blocks : 1;
	stream->next_block = 0;
	stream->random = random;
	stream->read_percent = read_percent > 100 ? 100 : read_percent;
	stream->rng.state = seed;
}

/* Next operation: returns its block number; *is_write says its direction. */
static inline uint64_t bench_stream_next(struct bench_stream *stream, int *is_write)
{
	uint64_t block;
	if (stream->random) {
		block = bench_rng_next(&stream->rng) % stream->region_blocks;
	} else {
		block = stream->next_block;
		stream->next_block = (block + 1) % stream->region_blocks;
	}
	if (stream->read_percent >= 100)
		*is_write = 0;
	else if (stream->read_percent == 0)
		*is_write = 1;
	else
		*is_write = bench_rng_next(&stream->rng) % 100 >= stream->read_percent;
	return block;
}

/* ---- The data pattern ---------------------------------------------------- */

/*
 * Every 512-byte sector the bench writes is
 *   bytes 0..7    the sector's number on the disk (little endian)
 *   bytes 8..15   BENCH_PATTERN_MAGIC | (generation & 0xffff) (little endian)
 *   bytes 16..511 byte j = (j * 7 + generation * 13 + 1) & 0xff
 * so a reader can check any sector by its number alone, and the contents
 * of a region after a run depend only on which sectors were written.
 */
static inline void bench_pattern_put_u64(uint8_t *p, uint64_t v)
{
	for (unsigned i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t bench_pattern_get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Write the sector headers of a buffer that will land at first_sector.
 * Precondition: length_bytes is a multiple of 512; the filler is already
 * there (bench_pattern_fill once per buffer and generation). */
static inline void bench_pattern_stamp(void *buffer, uint32_t length_bytes, uint64_t first_sector,
				       uint32_t generation)
{
	uint8_t *p = buffer;
	for (uint32_t off = 0; off < length_bytes; off += BENCH_SECTOR_BYTES) {
		bench_pattern_put_u64(p + off, first_sector + off / BENCH_SECTOR_BYTES);
		bench_pattern_put_u64(p + off + 8, BENCH_PATTERN_MAGIC | (generation & 0xffffu));
	}
}

/* Fill a whole buffer (filler and headers). */
static inline void bench_pattern_fill(void *buffer, uint32_t length_bytes, uint64_t first_sector,
				      uint32_t generation)
{
	uint8_t *p = buffer;
	for (uint32_t off = 0; off < length_bytes; off += BENCH_SECTOR_BYTES)
		for (uint32_t j = BENCH_PATTERN_HEADER_BYTES; j < BENCH_SECTOR_BYTES; j++)
			p[off + j] = (uint8_t)(j * 7u + generation * 13u + 1u);
	bench_pattern_stamp(buffer, length_bytes, first_sector, generation);
}

/* Sectors of a buffer read from first_sector whose header does not name
 * their own sector number (0 when the data is the bench's). */
static inline uint32_t bench_pattern_check(const void *buffer, uint32_t length_bytes,
					   uint64_t first_sector)
{
	const uint8_t *p = buffer;
	uint32_t bad = 0;
	for (uint32_t off = 0; off < length_bytes; off += BENCH_SECTOR_BYTES)
		if (bench_pattern_get_u64(p + off) != first_sector + off / BENCH_SECTOR_BYTES ||
		    (bench_pattern_get_u64(p + off + 8) & ~0xffffull) != BENCH_PATTERN_MAGIC)
			bad++;
	return bad;
}

/* ---- Latency histogram --------------------------------------------------- */

/*
 * Log-linear buckets: values below 64 ns get a bucket each; above, every
 * power of two is split into 32 buckets (relative error below 3.2%).
 * Values from 2^40 ns (18 minutes) on share the last bucket.
 */
#define BENCH_HIST_SUB_BITS 5u
#define BENCH_HIST_MAX_EXPONENT 40u
#define BENCH_HIST_BUCKETS \
	((BENCH_HIST_MAX_EXPONENT - BENCH_HIST_SUB_BITS + 1u) << BENCH_HIST_SUB_BITS)

static inline uint32_t bench_hist_index(uint64_t value_ns)
{
	if (value_ns < (2ull << BENCH_HIST_SUB_BITS))
		return (uint32_t)value_ns;
	uint32_t exponent = 63u - (uint32_t)__builtin_clzll(value_ns);
	if (exponent >= BENCH_HIST_MAX_EXPONENT)
		return BENCH_HIST_BUCKETS - 1u;
	uint32_t mantissa = (uint32_t)(value_ns >> (exponent - BENCH_HIST_SUB_BITS));
	return ((exponent - BENCH_HIST_SUB_BITS) << BENCH_HIST_SUB_BITS) + mantissa;
}

/* Smallest value that falls in bucket index. */
static inline uint64_t bench_hist_bucket_low(uint32_t index)
{
	uint32_t q = index >> BENCH_HIST_SUB_BITS;
	if (q < 2)
		return index;
	uint64_t mantissa =
		(index & ((1u << BENCH_HIST_SUB_BITS) - 1u)) + (1u << BENCH_HIST_SUB_BITS);
	return mantissa << (q - 1u);
}

/* Values in bucket index are [low, low + width). */
static inline uint64_t bench_hist_bucket_width(uint32_t index)
{
	uint32_t q = index >> BENCH_HIST_SUB_BITS;
	return q < 2 ? 1u : 1ull << (q - 1u);
}

/*
 * The value below which basis_points/10000 of the samples lie (nearest
 * rank; 5000 = p50, 9990 = p99.9), reported as the middle of its bucket;
 * 0 for an empty histogram.  counts has BENCH_HIST_BUCKETS entries and
 * total is their sum.
 */
static inline uint64_t bench_hist_percentile(const uint32_t *counts, uint64_t total,
					     uint32_t basis_points)
{
	if (!total)
		return 0;
	/* rank = ceil(total * basis_points / 10000), at least 1. */
	uint64_t rank = (total * basis_points + 9999u) / 10000u;
	if (rank == 0)
		rank = 1;
	uint64_t seen = 0;
	for (uint32_t i = 0; i < BENCH_HIST_BUCKETS; i++) {
		seen += counts[i];
		if (seen >= rank)
			return bench_hist_bucket_low(i) + bench_hist_bucket_width(i) / 2;
	}
	return bench_hist_bucket_low(BENCH_HIST_BUCKETS - 1u);
}

#endif /* KAPSEL_BENCH_COMMON_H */
