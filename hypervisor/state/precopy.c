/* Pre-copy of guest RAM with KVM dirty logging while the vCPU runs, shared by live migration (pages into a stream) and live save (pages into memory.img). */
#define _GNU_SOURCE
#include "state/precopy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/vm.h"
#include "state/progress.h"
#include "state/vm_state.h"

#define PAGE_BYTES PRECOPY_PAGE_BYTES

int precopy_set_dirty_logging(struct kapsel_vm *vm, bool on)
{
	struct kvm_userspace_memory_region region = {
		.slot = 0,
		.flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0,
		.guest_phys_addr = 0,
		.memory_size = vm->mem.size_bytes,
		.userspace_addr = (uint64_t)(uintptr_t)vm->mem.host_base,
	};
	return ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0 ? -errno : 0;
}

int64_t precopy_get_dirty_log(struct kapsel_vm *vm, uint64_t *bitmap, size_t bitmap_bytes)
{
	memset(bitmap, 0, bitmap_bytes);
	struct kvm_dirty_log log = { .slot = 0, .dirty_bitmap = bitmap };
	if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
		return -errno;
	int64_t count = 0;
	for (size_t i = 0; i < bitmap_bytes / 8; i++)
		count += __builtin_popcountll(bitmap[i]);
	return count;
}

const struct precopy_log_ops precopy_kvm_log = {
	.set = precopy_set_dirty_logging,
	.take = precopy_get_dirty_log,
};

int precopy_init(struct precopy *pc, struct kapsel_vm *vm, const struct precopy_sink_ops *ops,
		 void *context, const struct precopy_options *options)
{
	memset(pc, 0, sizeof(*pc));
	pc->vm = vm;
	pc->ops = ops;
	pc->context = context;
	pc->options = *options;
	pc->page_count = vm->mem.size_bytes / PAGE_BYTES;
	pc->bitmap_bytes = ((pc->page_count + 63) / 64) * 8;
	pc->bitmap = calloc(1, pc->bitmap_bytes);
	pc->sent_crc = malloc(pc->page_count * sizeof(uint32_t));
	pc->batch = malloc((size_t)PRECOPY_BATCH_PAGES * PAGE_BYTES);
	if (!pc->bitmap || !pc->sent_crc || !pc->batch) {
		precopy_free(pc);
		return -ENOMEM;
	}
	static const uint8_t zero_page[PAGE_BYTES];
	pc->zero_crc = vm_state_crc32c(0, zero_page, PAGE_BYTES);
	pc->log = &precopy_kvm_log;
	const char *verify = getenv("KAPSEL_PRECOPY_VERIFY");
	pc->verify = verify && *verify && strcmp(verify, "0") != 0;
	/* The destination starts with zeros (fresh RAM, a sparse file). */
	for (uint64_t p = 0; p < pc->page_count; p++)
		pc->sent_crc[p] = pc->zero_crc;
	return 0;
}

static bool keep_logging;
/* What the pre-copy that left the log running knew (precopy_resume_logging). */
static bool kept_tracked;
static uint64_t kept_clears;

void precopy_keep_logging(void)
{
	__atomic_store_n(&keep_logging, true, __ATOMIC_RELEASE);
}

void precopy_kept_log_from(const struct precopy *pc)
{
	kept_tracked = pc->tracked;
	kept_clears = pc->clears;
}

bool precopy_logging_kept(void)
{
	return __atomic_load_n(&keep_logging, __ATOMIC_ACQUIRE);
}

void precopy_stop_logging(struct precopy *pc)
{
	if (pc->logging && !precopy_logging_kept())
		pc->log->set(pc->vm, false);
	pc->logging = false;
}

void precopy_free(struct precopy *pc)
{
	if (pc->vm)
		precopy_stop_logging(pc);
	free(pc->bitmap);
	free(pc->sent_crc);
	free(pc->batch);
	pc->bitmap = NULL;
	pc->sent_crc = NULL;
	pc->batch = NULL;
}

/*
 * Take the dirty pages since the last call into pc->bitmap: KVM's log (the
 * guest's writes) and the VMM's marks (its own).  Returns how many pages
 * or -errno.
 */
static int64_t collect_dirty(struct precopy *pc)
{
	int64_t logged = pc->log->take(pc->vm, pc->bitmap, pc->bitmap_bytes);
	if (logged < 0)
		return logged;
	if (!guest_memory_take_written(&pc->vm->mem, pc->bitmap))
		return logged;
	int64_t count = 0;
	for (size_t i = 0; i < pc->bitmap_bytes / 8; i++)
		count += __builtin_popcountll(pc->bitmap[i]);
	return count;
}

/* From here on every change is in the log or the marks, unless RAM is
 * cleared (counted) or has no marks at all. */
static void start_tracking(struct precopy *pc, uint64_t clears)
{
	pc->logging = true;
	pc->clears = clears;
	pc->tracked = pc->vm->mem.written != NULL;
}

int precopy_start_logging(struct precopy *pc)
{
	int err = pc->log->set(pc->vm, true);
	if (err)
		return err;
	/* Counted before the log and the marks are cleared: a clear after
	 * this changes the count. */
	start_tracking(pc, __atomic_load_n(&pc->vm->mem.clears, __ATOMIC_SEQ_CST));
	/* Everything after this point is dirty.  A log left running for a
	 * later diff loses what it held: that diff compares every page. */
	kept_tracked = false;
	int64_t cleared = collect_dirty(pc);
	return cleared < 0 ? (int)cleared : 0;
}

int precopy_resume_logging(struct precopy *pc)
{
	if (!precopy_logging_kept())
		return -ENOENT;
	start_tracking(pc, kept_clears);
	pc->tracked = pc->tracked && kept_tracked;
	/* Used up: if this pre-copy's state is not committed, the log holds
	 * neither the changes since the old parent nor since a new one. */
	kept_tracked = false;
	return 0;
}

/* ---- Batching pages for the sink ---------------------------------------------- */

static void flush_pages(struct precopy *pc)
{
	if (!pc->batch_pages)
		return;
	if (!pc->error)
		pc->error = pc->ops->write_pages(pc->context, pc->batch_first, pc->batch_pages,
						 pc->round, pc->batch);
	pc->pages_sent += pc->batch_pages;
	pc->batch_pages = 0;
}

static void flush_zeros(struct precopy *pc)
{
	if (!pc->zero_pages)
		return;
	if (!pc->error)
		pc->error = pc->ops->write_zeros(pc->context, pc->zero_first, pc->zero_pages,
						 pc->round);
	pc->zero_pages_sent += pc->zero_pages;
	pc->zero_pages = 0;
}

static void flush_batch(struct precopy *pc)
{
	flush_pages(pc);
	flush_zeros(pc);
}

/* Progress every 4096 pages walked (16 MiB): cheap, yet a few times a second. */
static void note_scanned(const struct precopy *pc, uint64_t pages_walked)
{
	if ((pages_walked & 4095) == 0)
		state_progress_update(pages_walked * PAGE_BYTES,
				      pc->ops->bytes_written(pc->context));
}

static bool is_zero(const uint8_t *page)
{
	const uint64_t *w = (const uint64_t *)page;
	for (unsigned i = 0; i < PAGE_BYTES / 8; i += 4)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
			return false;
	return true;
}

static void add_zero_page(struct precopy *pc, uint64_t page)
{
	flush_pages(pc);
	if (pc->zero_pages && pc->zero_first + pc->zero_pages != page)
		flush_zeros(pc);
	if (!pc->zero_pages)
		pc->zero_first = page;
	pc->zero_pages++;
}

/*
 * Send page if it differs from what the destination has (or force).  The
 * page is copied first (see precopy.h).  Returns whether it was sent.
 */
static bool send_page(struct precopy *pc, uint64_t page, bool force)
{
	uint8_t copy[PAGE_BYTES] __attribute__((aligned(64)));
	memcpy(copy, pc->vm->mem.host_base + page * PAGE_BYTES, PAGE_BYTES);
	uint32_t crc = vm_state_crc32c(0, copy, PAGE_BYTES);
	if (crc == pc->sent_crc[page] && !force)
		return false;
	pc->sent_crc[page] = crc;
	if (page < pc->first_sent)
		pc->first_sent = page;
	if (crc == pc->zero_crc && is_zero(copy)) {
		add_zero_page(pc, page);
		return true;
	}
	flush_zeros(pc);
	if (pc->batch_pages && pc->batch_first + pc->batch_pages != page)
		flush_pages(pc);
	if (!pc->batch_pages)
		pc->batch_first = page;
	memcpy(pc->batch + (size_t)pc->batch_pages * PAGE_BYTES, copy, PAGE_BYTES);
	if (++pc->batch_pages == PRECOPY_BATCH_PAGES)
		flush_pages(pc);
	return true;
}

/* A page that reads as zero without being touched (a hole of the memfd). */
static void send_zero_page(struct precopy *pc, uint64_t page)
{
	if (pc->sent_crc[page] == pc->zero_crc)
		return;
	pc->sent_crc[page] = pc->zero_crc;
	if (page < pc->first_sent)
		pc->first_sent = page;
	add_zero_page(pc, page);
}

/*
 * The next range [*start, *end) at or after from that may hold data, page
 * aligned: an extent of the memfd backing guest RAM (SEEK_DATA), so that
 * never-used RAM is neither read nor, by reading it, allocated.  Returns
 * false when only zeros follow.
 */
static bool data_extent(const struct guest_memory *mem, uint64_t from, uint64_t *start,
			uint64_t *end)
{
	if (from >= mem->size_bytes)
		return false;
	if (mem->memfd < 0) {
		*start = from;
		*end = mem->size_bytes;
		return true;
	}
	off_t data = lseek(mem->memfd, (off_t)from, SEEK_DATA);
	if (data < 0)
		return false;
	off_t hole = lseek(mem->memfd, data, SEEK_HOLE);
	*start = (uint64_t)data & ~(uint64_t)(PAGE_BYTES - 1);
	*end = hole < 0 || (uint64_t)hole > mem->size_bytes ? mem->size_bytes : (uint64_t)hole;
	*end = (*end + PAGE_BYTES - 1) & ~(uint64_t)(PAGE_BYTES - 1);
	if (*start < from)
		*start = from;
	return *start < *end;
}

uint32_t precopy_memory_crc(const struct guest_memory *mem)
{
	uint32_t crc = 0;
	uint64_t pos = 0, start, end;
	while (data_extent(mem, pos, &start, &end)) {
		crc = vm_state_crc32c_zeros(crc, start - pos);
		crc = vm_state_crc32c(crc, mem->host_base + start, (size_t)(end - start));
		pos = end;
	}
	return vm_state_crc32c_zeros(crc, mem->size_bytes - pos);
}

/*
 * CRC32C of A followed by a page B is L(crc(A)) ^ crc(B), where L, the
 * effect of 4 KiB on the CRC register, is linear over GF(2): tabulated
 * per byte of its argument from its value on the 32 unit vectors
 * (vm_state_crc32c_zeros(x, n) ^ vm_state_crc32c_zeros(0, n) is L(x)).
 */
struct page_shift {
	uint32_t table[4][256];
};

static void page_shift_init(struct page_shift *s)
{
	uint32_t base = vm_state_crc32c_zeros(0, PAGE_BYTES);
	uint32_t unit[32];
	for (unsigned bit = 0; bit < 32; bit++)
		unit[bit] = vm_state_crc32c_zeros(1u << bit, PAGE_BYTES) ^ base;
	for (unsigned byte = 0; byte < 4; byte++)
		for (unsigned value = 0; value < 256; value++) {
			uint32_t r = 0;
			for (unsigned bit = 0; bit < 8; bit++)
				if (value & (1u << bit))
					r ^= unit[byte * 8 + bit];
			s->table[byte][value] = r;
		}
}

uint32_t precopy_destination_crc(const struct precopy *pc, const uint8_t *only)
{
	struct page_shift *s = malloc(sizeof(*s));
	if (!s)
		return 0; /* the manifest check then fails loudly */
	page_shift_init(s);
	uint32_t crc = 0;
	for (uint64_t p = 0; p < pc->page_count; p++)
		crc = (s->table[0][crc & 0xff] ^ s->table[1][(crc >> 8) & 0xff] ^
		       s->table[2][(crc >> 16) & 0xff] ^ s->table[3][crc >> 24]) ^
		      (!only || (only[p / 8] >> (p % 8) & 1) ? pc->sent_crc[p] : pc->zero_crc);
	free(s);
	return crc;
}

/* ---- The passes -------------------------------------------------------------------- */

int precopy_first_pass(struct precopy *pc)
{
	struct guest_memory *mem = &pc->vm->mem;
	pc->round = 0;
	state_progress_pass("precopy", mem->size_bytes, 0, mem->size_bytes);
	uint64_t pos = 0, start, end;
	while (!pc->error && data_extent(mem, pos, &start, &end)) {
		for (uint64_t p = start / PAGE_BYTES; p < end / PAGE_BYTES && !pc->error; p++) {
			send_page(pc, p, false);
			note_scanned(pc, p + 1);
		}
		state_progress_update(end, pc->ops->bytes_written(pc->context));
		pos = end;
	}
	flush_batch(pc);
	return pc->error;
}

/* Every page set in pc->bitmap (a round's dirty pages), forced as the
 * options say; walked counts on from there.  Returns the pages walked. */
static uint64_t send_bitmap(struct precopy *pc, uint64_t walked)
{
	for (uint64_t word = 0; word < pc->bitmap_bytes / 8 && !pc->error; word++)
		for (uint64_t bits = pc->bitmap[word]; bits; bits &= bits - 1) {
			send_page(pc, word * 64 + (uint64_t)__builtin_ctzll(bits),
				  pc->options.write_logged_pages);
			note_scanned(pc, ++walked);
		}
	flush_batch(pc);
	return walked;
}

int precopy_rounds(struct precopy *pc)
{
	struct kapsel_vm *vm = pc->vm;
	uint64_t best = UINT64_MAX;
	unsigned stall = 0;
	/* A VM being stopped (or destroyed) ends the rounds; the caller's
	 * pause then fails. */
	for (pc->round = 1; pc->round <= pc->options.max_rounds && !pc->error &&
			    !__atomic_load_n(&vm->stop_requested, __ATOMIC_SEQ_CST);
	     pc->round++) {
		uint64_t round_start = monotonic_ns();
		uint64_t bytes_before = pc->ops->bytes_written(pc->context);
		int64_t dirty = collect_dirty(pc);
		if (dirty < 0) {
			pc->error = (int)dirty;
			break;
		}
		state_progress_pass("precopy", (uint64_t)dirty * PAGE_BYTES, pc->round,
				    (uint64_t)dirty * PAGE_BYTES);
		send_bitmap(pc, 0);
		pc->rounds = pc->round;
		uint64_t round_ns = monotonic_ns() - round_start + 1;
		uint64_t bytes_per_s = (pc->ops->bytes_written(pc->context) - bytes_before) *
				       1000000000ull / round_ns;
		if (bytes_per_s < (64ull << 20))
			bytes_per_s = 64ull << 20; /* a floor: idle rounds say nothing */
		uint64_t expected_ms = (uint64_t)dirty * PAGE_BYTES * 1000ull / bytes_per_s;
		kapsel_debug("pre-copy round %u: %lld dirty pages, ~%llu ms to copy", pc->round,
			     (long long)dirty, (unsigned long long)expected_ms);
		if ((uint64_t)dirty <= PRECOPY_SMALL_DIRTY_PAGES ||
		    expected_ms <= pc->options.max_downtime_ms)
			break;
		if ((uint64_t)dirty < best) {
			best = (uint64_t)dirty;
			stall = 0;
		} else if (++stall >= PRECOPY_STALL_ROUNDS) {
			break;
		}
	}
	if (pc->round > pc->options.max_rounds)
		pc->round = pc->options.max_rounds;
	return pc->error;
}

/* Every page against what the destination holds: pages that changed
 * without a mark, and holes punched since.  Returns the pages it read. */
static uint64_t compare_all(struct precopy *pc, bool logged)
{
	struct guest_memory *mem = &pc->vm->mem;
	uint64_t read = 0, pos = 0, start, end;
	while (!pc->error) {
		bool more = data_extent(mem, pos, &start, &end);
		if (!more)
			start = end = mem->size_bytes;
		for (uint64_t p = pos / PAGE_BYTES; p < start / PAGE_BYTES; p++)
			send_zero_page(pc, p); /* a hole now (a reboot punched it) */
		for (uint64_t p = start / PAGE_BYTES; p < end / PAGE_BYTES && !pc->error; p++) {
			bool force = logged && pc->options.write_logged_pages &&
				     (pc->bitmap[p / 64] >> (p % 64) & 1);
			send_page(pc, p, force);
			note_scanned(pc, p + 1);
		}
		read += end / PAGE_BYTES - start / PAGE_BYTES;
		state_progress_update(end, pc->ops->bytes_written(pc->context));
		if (!more)
			break;
		pos = end;
	}
	flush_batch(pc);
	return read;
}

/* Only the dirty pages (pc->bitmap) and the hypervisor's tables below the
 * guest floor, which the VMM writes through pointers it keeps.  Returns
 * the pages it read. */
static uint64_t send_dirty(struct precopy *pc)
{
	uint64_t floor_pages = pc->vm->mem.guest_floor_gpa / PAGE_BYTES, read = 0;
	for (uint64_t p = 0; p < floor_pages && p < pc->page_count && !pc->error; p++)
		if (!(pc->bitmap[p / 64] >> (p % 64) & 1)) {
			send_page(pc, p, false);
			read++;
		}
	return send_bitmap(pc, read);
}

int precopy_final_pass(struct precopy *pc)
{
	struct guest_memory *mem = &pc->vm->mem;
	bool logged = pc->logging;
	if (logged) {
		int64_t dirty = collect_dirty(pc);
		if (dirty < 0)
			return pc->error = (int)dirty;
	}
	uint64_t clears = __atomic_load_n(&mem->clears, __ATOMIC_SEQ_CST);
	pc->final_tracked = logged && pc->tracked && clears == pc->clears &&
			    !__atomic_load_n(&mem->unmarked_changes, __ATOMIC_SEQ_CST);
	state_progress_pass("stop-copy", mem->size_bytes, pc->round, 0);
	uint64_t before = pc->pages_sent + pc->zero_pages_sent;
	if (!pc->final_tracked) {
		pc->final_read = compare_all(pc, logged);
	} else {
		pc->final_read = send_dirty(pc);
		uint64_t tracked = pc->pages_sent + pc->zero_pages_sent;
		if (pc->verify && !pc->error) {
			pc->first_sent = UINT64_MAX;
			pc->final_read += compare_all(pc, false);
			uint64_t missed = pc->pages_sent + pc->zero_pages_sent - tracked;
			if (missed && !pc->error) {
				kapsel_error("pre-copy check (KAPSEL_PRECOPY_VERIFY): %llu page(s) "
					     "changed without a dirty log entry or a VMM mark, the "
					     "first at GPA 0x%llx; a VMM write into guest RAM lacks "
					     "guest_memory_mark_written",
					     (unsigned long long)missed,
					     (unsigned long long)pc->first_sent * PAGE_BYTES);
				pc->error = -EFAULT;
			}
		}
	}
	/* A later pre-copy resuming this log starts from this moment. */
	pc->clears = clears;
	if (pc->logging)
		pc->tracked = mem->written != NULL;
	pc->final_pages = pc->pages_sent + pc->zero_pages_sent - before;
	kapsel_debug("pre-copy final pass: %s, %llu pages read, %llu sent",
		     pc->final_tracked ? "dirty pages only" : "every page",
		     (unsigned long long)pc->final_read, (unsigned long long)pc->final_pages);
	return pc->error;
}
