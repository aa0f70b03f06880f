/* Example guest: a running counter and checksum in memory (and on disk) for save/restore, clone and migration tests. */
#include "kapsel_guest/arch.h"
#include "kapsel_guest/block.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

/*
 * Command line: counter [ticks=N] [interval_ms=N] [pattern_mb=N] [late_pattern_mb=N]
 *                       [disk=0|1] [disk_check=0|1] [churn_mb=N] [churn_mbps=N]
 *
 * Every interval_ms the guest advances its counter and folds it into a
 * running checksum:  sum(n) = mix64(sum(n-1) ^ n),  sum(0) = 0,
 * with mix64 the splitmix64 finalizer; it prints
 *   "tick N sum HEX gen G"
 * and, when it has a disk (disk=1, the default when one is offered), writes
 * one 512-byte record per tick at sector N:
 *   uint64 magic "KCOUNTER", tick, sum, generation, then words
 *   mix64(sum ^ i) up to the end of the sector.
 * A test recomputes the chain on the host, so a lost, repeated or
 * corrupted tick, in the output or on the disk, is caught.
 *
 * Memory checks: a pattern region of pattern_mb MiB (word i =
 * mix64(seed ^ i)) and a history of the last HISTORY sums stay in RAM;
 * when the generation changes (the VM was restored, cloned or migrated)
 * the guest verifies both, prints "memory ok ..." or panics, derives a new
 * unique id and prints "new generation G name NAME id HEX".
 *
 * Disk check (disk_check=1): at a new generation the guest also reads its
 * disk back: the records of ticks 1..N (N its counter) must all be there
 * and right, and none for tick N+1, which it had not written when the
 * state was taken; it prints "disk ok: N records" or panics.  So a restore
 * from a snapshot shows the disk as it was at that snapshot.
 *
 * Dirtying memory (live save and migration tests): with churn_mb=N the
 * guest also rewrites a region of N MiB, page after page round the
 * region, churn_mbps MiB per second (default 16) spread over the ticks.
 * Page p written with stamp v holds words mix64(v ^ p << 12 ^ i); its
 * stamp goes to a separate array, marked "in progress" before the page is
 * written and cleared after, so a save taken at any instruction sees at
 * most one page in progress.  The memory check verifies every other page
 * against its stamp: a save or migration that missed a page the guest
 * dirtied (or took a page and its stamp at different times) is caught.
 *
 * A late pattern of late_pattern_mb MiB (default 0; printed as "counter:
 * late pattern of N MiB at GPA") is written at the start and read only
 * once, after the last tick ("late memory ok ..."): after a lazy restore
 * its pages are first touched long after the guest started, so a test can
 * change what backs them (save over or remove the state directory, damage
 * the file) in between.
 */

#define HISTORY 1024u
#define SECTOR_BYTES 512u
#define RECORD_MAGIC 0x52455443554f434bull /* "KCOUNTER" */

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* The state a save must carry over.  volatile: the host changes memory
 * behind the compiler's back only between ticks, but keep every update a
 * real store so the saved RAM is the truth. */
static volatile uint64_t counter, checksum;
static uint64_t history[HISTORY];
static uint64_t *pattern;
static uint64_t pattern_words, pattern_seed;
static uint64_t *late_pattern;
static uint64_t late_pattern_words;
static uint64_t unique_id;
static volatile uint64_t generation_seen;
static uint64_t *churn;		       /* churn_pages pages */
static volatile uint64_t *churn_stamp; /* per page: its stamp, CHURN_BUSY while written */
static uint64_t churn_pages, churn_cursor, churn_next_stamp, churn_written;
#define CHURN_BUSY (1ull << 63)
static struct kg_block_device *disk;
static uint64_t disk_capacity;
static uint64_t *disk_check_buffer; /* one page: 8 sectors; NULL: no check */

static uint64_t option(const char *key, uint64_t fallback)
{
	char word[24];
	uint64_t value;
	int length = kg_cmdline_get(key, word, sizeof(word));
	if (length == -KAPSEL_ENOENT)
		return fallback;
	if (length < 0 || kg_parse_u64(word, &value) < 0)
		kg_panic("option %s=%s is not a number", key, word);
	return value;
}

static void verify_memory(void)
{
	for (uint64_t i = 0; i < pattern_words; i++)
		if (pattern[i] != mix64(pattern_seed ^ i))
			kg_panic("pattern word %llu is %llx, expected %llx", (unsigned long long)i,
				 (unsigned long long)pattern[i],
				 (unsigned long long)mix64(pattern_seed ^ i));
	/* The history holds sum(n) at n % HISTORY for the last HISTORY ticks. */
	uint64_t first = counter > HISTORY - 1 ? counter - (HISTORY - 1) : 1;
	for (uint64_t n = first + 1; n <= counter; n++)
		if (history[n % HISTORY] != mix64(history[(n - 1) % HISTORY] ^ n))
			kg_panic("history broken at tick %llu", (unsigned long long)n);
	if (counter && history[counter % HISTORY] != checksum)
		kg_panic("checksum %llx does not match the history", (unsigned long long)checksum);
	uint64_t busy = 0;
	for (uint64_t p = 0; p < churn_pages; p++) {
		uint64_t stamp = churn_stamp[p];
		if (stamp & CHURN_BUSY) {
			busy++;
			continue;
		}
		const uint64_t *page = churn + p * 512;
		for (uint64_t i = 0; i < 512; i++)
			if (page[i] != (stamp ? mix64(stamp ^ p << 12 ^ i) : 0))
				kg_panic("churn page %llu word %llu is %llx, its stamp %llu says %llx",
					 (unsigned long long)p, (unsigned long long)i,
					 (unsigned long long)page[i], (unsigned long long)stamp,
					 (unsigned long long)(stamp ? mix64(stamp ^ p << 12 ^ i)
								    : 0));
	}
	if (busy > 1)
		kg_panic("%llu churn pages in progress at once", (unsigned long long)busy);
	if (churn_pages)
		kg_printf("churn ok: %llu pages, %llu written so far\n",
			  (unsigned long long)churn_pages, (unsigned long long)churn_written);
	kg_printf("memory ok: %llu pattern words, %llu history entries at tick %llu\n",
		  (unsigned long long)pattern_words,
		  (unsigned long long)(counter >= first ? counter - first + 1 : 0),
		  (unsigned long long)counter);
}

/* The late pattern: its own seed, so it is no copy of the first one. */
static uint64_t late_word(uint64_t i)
{
	return mix64(pattern_seed ^ 0x4c415445ull ^ (i << 1));
}

static void verify_late_memory(void)
{
	if (!late_pattern_words)
		return;
	for (uint64_t i = 0; i < late_pattern_words; i++)
		if (late_pattern[i] != late_word(i))
			kg_panic("late pattern word %llu is %llx, expected %llx",
				 (unsigned long long)i, (unsigned long long)late_pattern[i],
				 (unsigned long long)late_word(i));
	kg_printf("late memory ok: %llu words\n", (unsigned long long)late_pattern_words);
}

/* One record as write_record wrote it for tick n with running sum sum. */
static void check_record(const uint64_t *record, uint64_t n, uint64_t sum)
{
	if (record[0] != RECORD_MAGIC || record[1] != n || record[2] != sum)
		kg_panic("disk sector %llu: magic %llx tick %llu sum %llx, expected tick %llu sum %llx",
			 (unsigned long long)n, (unsigned long long)record[0],
			 (unsigned long long)record[1], (unsigned long long)record[2],
			 (unsigned long long)n, (unsigned long long)sum);
	for (unsigned i = 4; i < SECTOR_BYTES / 8; i++)
		if (record[i] != mix64(sum ^ i))
			kg_panic("disk sector %llu: word %u corrupt", (unsigned long long)n, i);
}

static void verify_disk(void)
{
	const unsigned per_read = 4096 / SECTOR_BYTES;
	uint64_t last = counter < disk_capacity ? counter : disk_capacity - 1;
	uint64_t sum = 0;
	for (uint64_t n = 1; n <= last; n += per_read) {
		uint32_t count = last - n + 1 < per_read ? (uint32_t)(last - n + 1) : per_read;
		int err = kg_block_read(disk, n, disk_check_buffer, count);
		if (err)
			kg_panic("disk read of sectors %llu+%u failed: %d", (unsigned long long)n,
				 count, err);
		for (uint32_t j = 0; j < count; j++) {
			sum = mix64(sum ^ (n + j));
			check_record(disk_check_buffer + j * (SECTOR_BYTES / 8), n + j, sum);
		}
	}
	if (last + 1 < disk_capacity) {
		int err = kg_block_read(disk, last + 1, disk_check_buffer, 1);
		if (err)
			kg_panic("disk read of sector %llu failed: %d",
				 (unsigned long long)(last + 1), err);
		if (disk_check_buffer[0] == RECORD_MAGIC)
			kg_panic("disk sector %llu holds tick %llu, written after this state was taken",
				 (unsigned long long)(last + 1),
				 (unsigned long long)disk_check_buffer[1]);
	}
	kg_printf("disk ok: %llu records\n", (unsigned long long)last);
}

static void on_new_generation(uint64_t generation)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	verify_memory();
	if (disk && disk_check_buffer && disk_capacity > 1)
		verify_disk();
	/* What must be unique per instance is derived again here. */
	unique_id =
		mix64(kg_rdtsc() ^ generation ^ mix64((uint64_t)si->uuid[0] << 8 | si->uuid[1]));
	generation_seen = generation;
	kg_printf("new generation %llu name %s id %016llx\n", (unsigned long long)generation,
		  si->name, (unsigned long long)unique_id);
}

/* Rewrite count pages of the churn region, round it. */
static void churn_pages_write(uint64_t count)
{
	for (uint64_t n = 0; n < count && churn_pages; n++) {
		uint64_t p = churn_cursor;
		churn_cursor = (churn_cursor + 1) % churn_pages;
		uint64_t stamp = ++churn_next_stamp;
		churn_stamp[p] = stamp | CHURN_BUSY;
		uint64_t *page = churn + p * 512;
		for (uint64_t i = 0; i < 512; i++)
			page[i] = mix64(stamp ^ p << 12 ^ i);
		churn_stamp[p] = stamp;
		churn_written++;
	}
}

static void write_record(struct kg_block_device *disk, uint64_t *sector_buffer)
{
	sector_buffer[0] = RECORD_MAGIC;
	sector_buffer[1] = counter;
	sector_buffer[2] = checksum;
	sector_buffer[3] = generation_seen;
	for (unsigned i = 4; i < SECTOR_BYTES / 8; i++)
		sector_buffer[i] = mix64(checksum ^ i);
	int err = kg_block_write(disk, counter, sector_buffer, 1);
	if (err)
		kg_panic("disk write of tick %llu failed: %d", (unsigned long long)counter, err);
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	kg_assert(kg_platform_is_kapsel());
	uint64_t ticks = option("ticks", 1000);
	uint64_t interval_ns = option("interval_ms", 10) * 1000000ull;
	uint64_t pattern_mb = option("pattern_mb", 4);
	const struct kapsel_start_info *si = kg_platform_start_info();

	pattern_words = pattern_mb * (1u << 20) / 8;
	pattern = kg_os_alloc_pages(pattern_mb * 256);
	if (pattern_words && !pattern)
		kg_panic("no memory for a %llu MiB pattern", (unsigned long long)pattern_mb);
	pattern_seed = mix64(0x1234);
	for (uint64_t i = 0; i < pattern_words; i++)
		pattern[i] = mix64(pattern_seed ^ i);
	uint64_t late_pattern_mb = option("late_pattern_mb", 0);
	late_pattern_words = late_pattern_mb * (1u << 20) / 8;
	if (late_pattern_words) {
		late_pattern = kg_os_alloc_pages(late_pattern_mb * 256);
		if (!late_pattern)
			kg_panic("no memory for a %llu MiB late pattern",
				 (unsigned long long)late_pattern_mb);
		for (uint64_t i = 0; i < late_pattern_words; i++)
			late_pattern[i] = late_word(i);
		kg_printf("counter: late pattern of %llu MiB at 0x%llx\n",
			  (unsigned long long)late_pattern_mb,
			  (unsigned long long)kg_os_virt_to_phys(late_pattern));
	}

	churn_pages = option("churn_mb", 0) * 256;
	/* Pages per tick: churn_mbps MiB/s over ticks of interval_ns. */
	uint64_t churn_per_tick =
		option("churn_mbps", 16) * 256 * (interval_ns / 1000000) / 1000 + 1;
	if (churn_pages) {
		churn = kg_os_alloc_pages(churn_pages);
		churn_stamp = kg_os_alloc_pages((churn_pages * 8 + 4095) / 4096);
		if (!churn || !churn_stamp)
			kg_panic("no memory for a %llu MiB churn region",
				 (unsigned long long)(churn_pages / 256));
		for (uint64_t p = 0; p < churn_pages; p++)
			churn_stamp[p] = 0; /* zero pages: stamp 0 */
	}

	uint64_t capacity = 0;
	uint64_t *sector_buffer = kg_os_alloc_pages(1);
	if (option("disk", 1) && kg_block_open(0, KG_BLOCK_AUTO, &disk) == 0) {
		struct kg_block_info info;
		kg_block_get_info(disk, &info);
		capacity = info.capacity_sectors;
		kg_printf("counter: disk of %llu sectors via %s\n", (unsigned long long)capacity,
			  info.path == KG_BLOCK_PV ? "pv" : "ata");
		disk_capacity = capacity;
		if (option("disk_check", 0)) {
			disk_check_buffer = kg_os_alloc_pages(1);
			if (!disk_check_buffer)
				kg_panic("no memory for the disk check");
		}
	}
	generation_seen = kg_platform_generation();
	unique_id = mix64(kg_rdtsc() ^ generation_seen);
	kg_platform_on_new_generation(on_new_generation);
	kg_printf("counter: start name %s gen %llu ticks %llu\n", si->name,
		  (unsigned long long)generation_seen, (unsigned long long)ticks);

	uint64_t next_ns = kg_time_now_ns();
	while (counter < ticks) {
		kg_platform_check_generation();
		uint64_t n = counter + 1;
		uint64_t sum = mix64(checksum ^ n);
		history[n % HISTORY] = sum;
		checksum = sum;
		counter = n;
		kg_printf("tick %llu sum %016llx gen %llu\n", (unsigned long long)n,
			  (unsigned long long)sum, (unsigned long long)generation_seen);
		if (disk && n < capacity)
			write_record(disk, sector_buffer);
		churn_pages_write(churn_per_tick);
		next_ns += interval_ns;
		uint64_t now = kg_time_now_ns();
		if (next_ns > now)
			kg_time_sleep_ns(next_ns - now);
		else
			next_ns = now; /* fell behind (paused): do not burst */
	}
	if (disk && kg_block_flush(disk) != 0)
		kg_panic("final disk flush failed");
	verify_memory();
	verify_late_memory();
	kg_printf("counter done %llu sum %016llx gen %llu\n", (unsigned long long)counter,
		  (unsigned long long)checksum, (unsigned long long)generation_seen);
	return 0;
}
