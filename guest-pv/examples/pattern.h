/* The sector pattern the block example guests (blktest, blkmodel) write and check, and the tests recompute on the host. */
#ifndef KAPSEL_EXAMPLES_PATTERN_H
#define KAPSEL_EXAMPLES_PATTERN_H

#include <stdint.h>

/*
 * A 512-byte sector holds 64 words; word i of sector s for seed v is
 * pattern_mix(pattern_mix(v) ^ (s * 64 + i)), with pattern_mix(x) =
 * pattern_finalize(x + PATTERN_GOLDEN), the splitmix64 output function.
 */
#define PATTERN_WORDS_PER_SECTOR 64u
#define PATTERN_GOLDEN 0x9e3779b97f4a7c15ull

/* The splitmix64 finalizer. */
static inline uint64_t pattern_finalize(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t pattern_mix(uint64_t x)
{
	return pattern_finalize(x + PATTERN_GOLDEN);
}

/* Fill words[PATTERN_WORDS_PER_SECTOR] with sector's pattern for seed. */
static inline void pattern_fill_sector(uint64_t *words, uint64_t seed, uint64_t sector)
{
	uint64_t key = pattern_mix(seed);
	for (uint64_t i = 0; i < PATTERN_WORDS_PER_SECTOR; i++)
		words[i] = pattern_mix(key ^ (sector * PATTERN_WORDS_PER_SECTOR + i));
}

/* Index of the first word of words[PATTERN_WORDS_PER_SECTOR] that differs
 * from sector's pattern for seed, or -1. */
static inline int pattern_check_sector(const uint64_t *words, uint64_t seed, uint64_t sector)
{
	uint64_t key = pattern_mix(seed);
	for (uint64_t i = 0; i < PATTERN_WORDS_PER_SECTOR; i++)
		if (words[i] != pattern_mix(key ^ (sector * PATTERN_WORDS_PER_SECTOR + i)))
			return (int)i;
	return -1;
}

#endif
