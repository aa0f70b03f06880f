/* Example guest: a seeded random block I/O sequence checked against a model, on one disk or on a PV and an ATA disk at once. */
#include "kapsel_guest/arch.h"
#include "kapsel_guest/block.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

#include "args.h"
#include "pattern.h"

/*
 * Usage (the command line):
 *   model [disk=N] [path=pv|ata|auto] seed=S ops=N [max_sectors=X] [qd=Q]
 *         [bad=K] [prior_seed=P prior_ops=M prior_max_sectors=Y] [hold=1]
 *       One disk.  With prior_*, first read the whole disk and check that
 *       it holds what sequence P (M ops) left on a zero disk; then run
 *       sequence S; then flush, read the whole disk back and check it.
 *   mixed seed=S ops=N [max_sectors=X] seed1=T ops1=M [max_sectors1=Y]
 *         [qd=Q] [bad=K] [hold=1]
 *       Disk 0 on the PV path runs sequence S with up to Q requests in
 *       flight while disk 1 on the ATA path runs sequence T; ATA requests
 *       are issued while PV requests are in flight.  Then both are
 *       flushed and read back whole.
 *   max_sectors (1-16, default 16) bounds a request of the sequence (ATA
 *   writes cost an exit per 4 bytes here: keep them small there).
 *   bad=K: after every K-th op, one bad request (out of range; on ATA
 *   also raw device commands past the end and an unsupported command)
 *   that must be answered with an error while the sequence goes on.
 *   hold=1: at the end print "blkmodel: flush acknowledged" and wait to
 *   be killed.
 *
 * The sequence, which tests/integration/block_mixed.sh replays in python3
 * to compute the image the disk must hold afterwards:
 *   fin(z)  = the splitmix64 finalizer: z = (z ^ z >> 30) * 0xbf58476d1ce4e5b9;
 *             z = (z ^ z >> 27) * 0x94d049bb133111eb; z ^ z >> 31
 *   rng     = splitmix64 seeded with S: state += G; output fin(state),
 *             G = 0x9e3779b97f4a7c15
 *   op i (from 0) draws r, c, f in that order: count = 1 + c % max_sectors,
 *             first = f % (capacity_sectors - count + 1); r % 100 below
 *             40 is a READ, below 80 a WRITE, below 92 a WRITE_ZEROES,
 *             else a FLUSH (which ignores first and count)
 *   WRITE op i stores pattern(S ^ (i + 1) * G); pattern(v) of sector s is
 *             64 little-endian words, word j = mix(mix(v) ^ (s * 64 + j)),
 *             mix(x) = fin(x + G) (blktest's pattern, pattern.h); WRITE_ZEROES
 *             zeroes.
 *   The disk starts zero.  A request is issued only when none in flight
 *   overlaps it and in sequence order, so the final image is the ops
 *   applied one after the other whatever the queue depth.
 * Every READ is checked against the model when it completes.
 */

#define SECTOR 512u
#define WORDS_PER_SECTOR (SECTOR / 8u)
_Static_assert(WORDS_PER_SECTOR == PATTERN_WORDS_PER_SECTOR, "pattern.h sectors");
#define PAGE_BYTES 4096u
#define MAX_QD 64u
#define MAX_OP_SECTORS 16u
#define VERIFY_CHUNK_SECTORS 128u

/* Per-sector model state. */
#define SECTOR_WRITTEN 1u /* holds a pattern (else zero) */
#define SECTOR_BUSY 2u	  /* a request in flight covers it */

/* ATA registers and values for the raw bad commands (drive 0, LBA28). */
#define ATA_REG_ERROR 1u
#define ATA_REG_COUNT 2u
#define ATA_REG_LBA_LOW 3u
#define ATA_REG_LBA_MID 4u
#define ATA_REG_LBA_HIGH 5u
#define ATA_REG_DEVICE 6u
#define ATA_REG_STATUS 7u
#define ATA_STATUS_ERR 0x01u
#define ATA_STATUS_DRQ 0x08u
#define ATA_STATUS_BSY 0x80u
#define ATA_ERROR_ABRT 0x04u
#define ATA_ERROR_IDNF 0x10u
#define ATA_CMD_READ_SECTORS 0x20u
#define ATA_CMD_WRITE_SECTORS 0x30u
#define ATA_CMD_READ_DMA 0xc8u /* not emulated: must abort */

static uint64_t rng_next(uint64_t *state)
{
	*state += PATTERN_GOLDEN;
	return pattern_finalize(*state);
}

static void *alloc_bytes(uint64_t bytes)
{
	void *p = kg_os_alloc_pages((bytes + PAGE_BYTES - 1) / PAGE_BYTES);
	if (!p)
		kg_panic("blkmodel: out of guest memory for %llu bytes; give the VM more --memory",
			 (unsigned long long)bytes);
	return p;
}

/* ---- the sequence -------------------------------------------------------- */

enum model_kind {
	MODEL_READ,
	MODEL_WRITE,
	MODEL_ZEROES,
	MODEL_FLUSH
};

struct model_op {
	uint64_t index;
	enum model_kind kind;
	uint64_t first;
	uint32_t count;
};

static void sequence_next(uint64_t *rng, uint64_t index, uint64_t capacity, uint32_t max_sectors,
			  struct model_op *op)
{
	uint64_t r = rng_next(rng), c = rng_next(rng), f = rng_next(rng);
	unsigned percent = (unsigned)(r % 100);
	op->index = index;
	op->count = 1 + (uint32_t)(c % max_sectors);
	op->first = f % (capacity - op->count + 1);
	op->kind = percent < 40	  ? MODEL_READ
		   : percent < 80 ? MODEL_WRITE
		   : percent < 92 ? MODEL_ZEROES
				  : MODEL_FLUSH;
}

/* ---- one disk under test --------------------------------------------------- */

struct model_slot {
	struct kg_block_request request;
	struct model_op op;
	uint64_t *buffer; /* MAX_OP_SECTORS sectors */
	bool busy;
	bool bad; /* an injected bad request: must fail with -ERANGE */
};

struct model_disk {
	unsigned index;
	const char *path_name;
	struct kg_block_device *dev;
	struct kg_block_info info;
	const struct kapsel_device_desc *ata_desc; /* ATA path: for raw commands */
	uint64_t seed, ops, qd, bad_every;
	uint32_t max_sectors; /* of one request of the sequence */
	uint64_t rng;
	uint64_t generated;	 /* ops drawn from the rng */
	struct model_op pending; /* drawn, waiting to be issued */
	bool has_pending;
	bool bad_due;
	uint64_t completed;
	uint64_t *version_seed; /* per sector, when SECTOR_WRITTEN */
	uint8_t *state;		/* SECTOR_* */
	struct model_slot *slots;
	uint64_t reads, writes, zeroes, flushes, sectors_checked;
	uint64_t bad_issued, bad_refused, bad_device_bounds;
};

static bool model_finished(const struct model_disk *m)
{
	return m->completed == m->ops && !m->bad_due && kg_block_in_flight(m->dev) == 0;
}

static uint32_t max_sectors_option(const char *key)
{
	uint64_t value = args_number(key, MAX_OP_SECTORS);
	if (value < 1 || value > MAX_OP_SECTORS)
		kg_panic("%s=%llu: use 1 to %u", key, (unsigned long long)value, MAX_OP_SECTORS);
	return (uint32_t)value;
}

static void model_open(struct model_disk *m, unsigned index, enum kg_block_path path, uint64_t seed,
		       uint64_t ops, uint32_t max_sectors, uint64_t qd, uint64_t bad_every)
{
	int err = kg_block_open(index, path, &m->dev);
	if (err) {
		kg_printf("blkmodel: cannot open disk %u: error %d\n", index, err);
		kg_exit(2);
	}
	kg_block_get_info(m->dev, &m->info);
	m->index = index;
	m->path_name = m->info.path == KG_BLOCK_PV ? "pv" : "ata";
	if (m->info.path == KG_BLOCK_ATA) {
		m->ata_desc = kg_platform_find_device(KAPSEL_DEV_ATA_DISK, 0);
		kg_assert(m->ata_desc != 0);
	}
	uint64_t capacity = m->info.capacity_sectors;
	/* Raw bad commands use LBA28, as the driver does on small disks; the
	 * model keeps 9 bytes per sector. */
	if (capacity < 2 * MAX_OP_SECTORS || capacity >= (1ull << 24))
		kg_panic("blkmodel: disk %u has %llu sectors; use 16 KiB to 8 GiB", index,
			 (unsigned long long)capacity);
	m->seed = seed;
	m->ops = ops;
	m->max_sectors = max_sectors;
	m->qd = qd < 1 ? 1 : qd > MAX_QD ? MAX_QD : qd;
	if (m->qd > m->info.queue_depth)
		m->qd = m->info.queue_depth;
	m->bad_every = bad_every;
	m->rng = seed;
	m->version_seed = alloc_bytes(capacity * sizeof(uint64_t));
	m->state = alloc_bytes(capacity);
	m->slots = alloc_bytes(m->qd * sizeof(struct model_slot));
	for (uint64_t i = 0; i < m->qd; i++)
		m->slots[i].buffer = alloc_bytes(MAX_OP_SECTORS * SECTOR);
}

/* Apply a sequence's writes to the model without I/O (what an earlier VM
 * left on the disk). */
static void model_replay(struct model_disk *m, uint64_t seed, uint64_t ops, uint32_t max_sectors)
{
	uint64_t rng = seed;
	for (uint64_t i = 0; i < ops; i++) {
		struct model_op op;
		sequence_next(&rng, i, m->info.capacity_sectors, max_sectors, &op);
		for (uint32_t k = 0; k < op.count; k++) {
			uint64_t s = op.first + k;
			if (op.kind == MODEL_WRITE) {
				m->state[s] |= SECTOR_WRITTEN;
				m->version_seed[s] = seed ^ ((i + 1) * PATTERN_GOLDEN);
			} else if (op.kind == MODEL_ZEROES) {
				m->state[s] &= (uint8_t)~SECTOR_WRITTEN;
			}
		}
	}
}

/* Check one sector read back against the model; a mismatch ends the VM
 * with the sector and word printed. */
static void model_check_sector(struct model_disk *m, const uint64_t *words, uint64_t sector,
			       const char *what)
{
	uint64_t want[WORDS_PER_SECTOR];
	if (m->state[sector] & SECTOR_WRITTEN)
		pattern_fill_sector(want, m->version_seed[sector], sector);
	else
		memset(want, 0, sizeof(want));
	for (unsigned j = 0; j < WORDS_PER_SECTOR; j++) {
		if (words[j] != want[j]) {
			kg_printf("blkmodel: disk %u (%s) sector %llu word %u differs from the model (%s)\n",
				  m->index, m->path_name, (unsigned long long)sector, j, what);
			kg_assert(words[j] == want[j]);
		}
	}
	m->sectors_checked++;
}

static struct model_slot *free_slot(struct model_disk *m)
{
	for (uint64_t i = 0; i < m->qd; i++)
		if (!m->slots[i].busy)
			return &m->slots[i];
	kg_panic("blkmodel: no free slot with %u requests in flight", kg_block_in_flight(m->dev));
}

static bool overlaps_busy(const struct model_disk *m, const struct model_op *op)
{
	if (op->kind == MODEL_FLUSH)
		return false;
	for (uint32_t k = 0; k < op->count; k++)
		if (m->state[op->first + k] & SECTOR_BUSY)
			return true;
	return false;
}

static void submit_slot(struct model_disk *m, struct model_slot *slot)
{
	slot->busy = true;
	slot->request.user_data = slot;
	int err = kg_block_submit(m->dev, &slot->request);
	if (err)
		kg_panic("blkmodel: disk %u submit failed: %d", m->index, err);
}

static void issue_op(struct model_disk *m, const struct model_op *op)
{
	struct model_slot *slot = free_slot(m);
	struct kg_block_request *r = &slot->request;
	slot->op = *op;
	slot->bad = false;
	*r = (struct kg_block_request){ .sector = op->first };
	switch (op->kind) {
	case MODEL_FLUSH:
		r->op = KAPSEL_BLK_OP_FLUSH;
		r->sector = 0;
		break;
	case MODEL_ZEROES:
		r->op = KAPSEL_BLK_OP_WRITE_ZEROES;
		r->sector_count = op->count;
		break;
	case MODEL_READ:
	case MODEL_WRITE: {
		r->op = op->kind == MODEL_WRITE ? KAPSEL_BLK_OP_WRITE : KAPSEL_BLK_OP_READ;
		if (op->kind == MODEL_WRITE)
			for (uint32_t k = 0; k < op->count; k++)
				pattern_fill_sector(slot->buffer + k * WORDS_PER_SECTOR,
						    m->seed ^ ((op->index + 1) * PATTERN_GOLDEN),
						    op->first + k);
		else
			memset(slot->buffer, 0x5a, op->count * SECTOR); /* stale data shows */
		/* 1 to 3 segments on sector boundaries (no rng: the model
		 * does not care how a request is cut). */
		uint32_t segments = 1 + (uint32_t)(op->index % 3);
		if (segments > op->count)
			segments = op->count;
		for (uint32_t s = 0, given = 0; s < segments; s++) {
			uint32_t n = s + 1 == segments ? op->count - given : 1;
			r->segments[s].buffer = slot->buffer + given * WORDS_PER_SECTOR;
			r->segments[s].length_bytes = n * SECTOR;
			given += n;
		}
		r->segment_count = segments;
		break;
	}
	}
	if (op->kind != MODEL_FLUSH)
		for (uint32_t k = 0; k < op->count; k++)
			m->state[op->first + k] |= SECTOR_BUSY;
	submit_slot(m, slot);
}

/* ---- bad requests ----------------------------------------------------------- */

/* One raw LBA28 command on the ATA device; returns the final status. */
static uint8_t ata_raw_command(struct model_disk *m, uint8_t command, uint64_t lba, uint8_t count,
			       uint8_t *error)
{
	uint16_t base = m->ata_desc->io_base;
	uint8_t status;
	/* 0xe0 | LBA 27:24: what the driver writes for these LBAs, so its
	 * cached copy of the device register stays true. */
	kg_outb((uint16_t)(base + ATA_REG_DEVICE), (uint8_t)(0xe0u | ((lba >> 24) & 0x0fu)));
	kg_outb((uint16_t)(base + ATA_REG_COUNT), count);
	kg_outb((uint16_t)(base + ATA_REG_LBA_LOW), (uint8_t)lba);
	kg_outb((uint16_t)(base + ATA_REG_LBA_MID), (uint8_t)(lba >> 8));
	kg_outb((uint16_t)(base + ATA_REG_LBA_HIGH), (uint8_t)(lba >> 16));
	kg_outb((uint16_t)(base + ATA_REG_STATUS), command);
	while ((status = kg_inb((uint16_t)(base + ATA_REG_STATUS))) & ATA_STATUS_BSY)
		kg_cpu_relax();
	*error = kg_inb((uint16_t)(base + ATA_REG_ERROR));
	return status;
}

/*
 * Raw bad commands straight to the ATA device (the driver refuses these
 * before the device sees them):
 *   0: WRITE SECTORS of 4 at capacity - 2: IDNF before any data; should
 *      the device ask for data anyway, it gets a garbage pattern, which
 *      the host's image check then finds in the last two sectors
 *   1: READ SECTORS at capacity: IDNF
 *   2: READ DMA (not emulated): ABRT
 */
static void ata_raw_bad(struct model_disk *m, unsigned kind)
{
	uint64_t capacity = m->info.capacity_sectors;
	uint16_t data_port = m->ata_desc->io_base;
	uint8_t error, status;
	if (kind == 0) {
		status = ata_raw_command(m, ATA_CMD_WRITE_SECTORS, capacity - 2, 4, &error);
		static uint16_t garbage[SECTOR / 2];
		for (unsigned i = 0; i < SECTOR / 2; i++)
			garbage[i] = 0xa5a5;
		for (int sectors = 0; sectors < 4 && (status & ATA_STATUS_DRQ); sectors++) {
			kg_outsw(data_port, garbage, SECTOR / 2);
			while ((status = kg_inb((uint16_t)(data_port + ATA_REG_STATUS))) &
			       ATA_STATUS_BSY)
				kg_cpu_relax();
			error = kg_inb((uint16_t)(data_port + ATA_REG_ERROR));
		}
	} else if (kind == 1) {
		status = ata_raw_command(m, ATA_CMD_READ_SECTORS, capacity, 1, &error);
	} else {
		status = ata_raw_command(m, ATA_CMD_READ_DMA, 0, 1, &error);
	}
	uint8_t want_error = kind == 2 ? ATA_ERROR_ABRT : ATA_ERROR_IDNF;
	if (!(status & ATA_STATUS_ERR) || (status & ATA_STATUS_DRQ) || !(error & want_error)) {
		kg_printf("blkmodel: disk %u (ata) raw bad command %u -> status 0x%x error 0x%x\n",
			  m->index, kind, status, error);
		kg_assert(!"raw bad ATA command not refused");
	}
	if (kind < 2)
		m->bad_device_bounds++;
	m->bad_refused++;
}

/*
 * Inject the next bad request.  Returns false if it has to wait (queue
 * full; raw ATA commands wait for an idle driver).
 *   PV kinds (all reach the host's bounds check):
 *     0 READ 1 at capacity; 1 WRITE 8 at capacity - 4; 2 WRITE_ZEROES 2
 *     at capacity - 1; 3 READ 4 at 2^64 - 2; 4 DISCARD 2^64 - 1 at 1
 *   ATA kinds: 0-2 raw commands (ata_raw_bad), 3 WRITE 8 at capacity - 4
 *     through the driver (refused by the driver itself)
 */
static bool inject_bad(struct model_disk *m)
{
	uint64_t capacity = m->info.capacity_sectors;
	unsigned kind;
	if (m->ata_desc) {
		if (kg_block_in_flight(m->dev))
			return false;
		kind = (unsigned)(m->bad_issued % 4);
		m->bad_issued++;
		if (kind < 3) {
			ata_raw_bad(m, kind);
			return true;
		}
		kind = 1; /* the straddling write, through the driver */
	} else {
		if (kg_block_in_flight(m->dev) >= m->qd)
			return false;
		kind = (unsigned)(m->bad_issued % 5);
		m->bad_issued++;
	}
	struct model_slot *slot = free_slot(m);
	struct kg_block_request *r = &slot->request;
	slot->bad = true;
	memset(slot->buffer, 0xa5, MAX_OP_SECTORS * SECTOR);
	*r = (struct kg_block_request){ .segment_count = 1,
					.segments = { { slot->buffer, SECTOR } } };
	switch (kind) {
	case 0:
		r->op = KAPSEL_BLK_OP_READ;
		r->sector = capacity;
		break;
	case 1:
		r->op = KAPSEL_BLK_OP_WRITE;
		r->sector = capacity - 4;
		r->segments[0].length_bytes = 8 * SECTOR;
		break;
	case 2:
		r->op = KAPSEL_BLK_OP_WRITE_ZEROES;
		r->segment_count = 0;
		r->sector = capacity - 1;
		r->sector_count = 2;
		break;
	case 3:
		r->op = KAPSEL_BLK_OP_READ;
		r->sector = UINT64_MAX - 1;
		r->segments[0].length_bytes = 4 * SECTOR;
		break;
	default:
		r->op = KAPSEL_BLK_OP_DISCARD;
		r->segment_count = 0;
		r->sector = 1;
		r->sector_count = UINT64_MAX;
		break;
	}
	submit_slot(m, slot);
	return true;
}

/* ---- issue and reap ------------------------------------------------------- */

/* Issue up to max requests in sequence order; returns how many. */
static unsigned model_issue(struct model_disk *m, unsigned max)
{
	unsigned issued = 0;
	while (issued < max) {
		if (m->bad_due) {
			if (!inject_bad(m))
				break;
			m->bad_due = false;
			issued++;
			continue;
		}
		if (!m->has_pending) {
			if (m->generated == m->ops)
				break;
			sequence_next(&m->rng, m->generated, m->info.capacity_sectors,
				      m->max_sectors, &m->pending);
			m->generated++;
			m->has_pending = true;
		}
		if (kg_block_in_flight(m->dev) >= m->qd || overlaps_busy(m, &m->pending))
			break; /* the rest waits, in order */
		issue_op(m, &m->pending);
		m->has_pending = false;
		issued++;
		if (m->bad_every && m->generated % m->bad_every == 0)
			m->bad_due = true;
	}
	if (issued)
		kg_block_kick(m->dev);
	return issued;
}

static void complete_op(struct model_disk *m, struct model_slot *slot, int status)
{
	const struct model_op *op = &slot->op;
	if (status != 0)
		kg_panic("blkmodel: disk %u (%s) op %llu (kind %d, sectors %llu+%u) failed: %d",
			 m->index, m->path_name, (unsigned long long)op->index, op->kind,
			 (unsigned long long)op->first, op->count, status);
	if (op->kind == MODEL_FLUSH) {
		m->flushes++;
	} else {
		for (uint32_t k = 0; k < op->count; k++) {
			uint64_t s = op->first + k;
			if (op->kind == MODEL_READ) {
				model_check_sector(m, slot->buffer + k * WORDS_PER_SECTOR, s,
						   "random read");
			} else if (op->kind == MODEL_WRITE) {
				m->state[s] |= SECTOR_WRITTEN;
				m->version_seed[s] = m->seed ^ ((op->index + 1) * PATTERN_GOLDEN);
			} else {
				m->state[s] &= (uint8_t)~SECTOR_WRITTEN;
			}
			m->state[s] &= (uint8_t)~SECTOR_BUSY;
		}
		if (op->kind == MODEL_READ)
			m->reads++;
		else if (op->kind == MODEL_WRITE)
			m->writes++;
		else
			m->zeroes++;
	}
	m->completed++;
}

/* Reap what completed (wait: sleep until something does); returns how
 * many requests came back. */
static unsigned model_reap(struct model_disk *m, bool wait)
{
	struct kg_block_request *done[MAX_QD];
	unsigned n = kg_block_reap(m->dev, done, MAX_QD, wait);
	for (unsigned k = 0; k < n; k++) {
		struct model_slot *slot = done[k]->user_data;
		if (slot->bad) {
			if (done[k]->status != -KAPSEL_ERANGE) {
				kg_printf("blkmodel: disk %u (%s) bad request op %d at %llu -> %d, not -ERANGE\n",
					  m->index, m->path_name, done[k]->op,
					  (unsigned long long)done[k]->sector, done[k]->status);
				kg_assert(done[k]->status == -KAPSEL_ERANGE);
			}
			m->bad_refused++;
			if (!m->ata_desc)
				m->bad_device_bounds++;
		} else {
			complete_op(m, slot, done[k]->status);
		}
		slot->busy = false;
	}
	return n;
}

/* Read the whole disk synchronously and check every sector. */
static void model_verify_all(struct model_disk *m, const char *what)
{
	uint64_t capacity = m->info.capacity_sectors;
	static uint64_t *chunk;
	if (!chunk)
		chunk = alloc_bytes(VERIFY_CHUNK_SECTORS * SECTOR);
	kg_assert(kg_block_in_flight(m->dev) == 0);
	for (uint64_t s = 0; s < capacity; s += VERIFY_CHUNK_SECTORS) {
		uint32_t n = capacity - s < VERIFY_CHUNK_SECTORS ? (uint32_t)(capacity - s)
								 : VERIFY_CHUNK_SECTORS;
		memset(chunk, 0x5a, n * SECTOR);
		int err = kg_block_read(m->dev, s, chunk, n);
		if (err)
			kg_panic("blkmodel: disk %u read of %llu+%u failed: %d", m->index,
				 (unsigned long long)s, n, err);
		for (uint32_t k = 0; k < n; k++)
			model_check_sector(m, chunk + k * WORDS_PER_SECTOR, s + k, what);
	}
	kg_printf("blkmodel: disk %u (%s): all %llu sectors match the model (%s)\n", m->index,
		  m->path_name, (unsigned long long)capacity, what);
}

static void model_finish(struct model_disk *m)
{
	int err = kg_block_flush(m->dev);
	if (err)
		kg_panic("blkmodel: disk %u final flush failed: %d", m->index, err);
	model_verify_all(m, "after the sequence");
	kg_assert(m->bad_refused == m->bad_issued);
	kg_printf("blkmodel: disk %u (%s): %llu ops (%llu reads, %llu writes, %llu write_zeroes, "
		  "%llu flushes) at qd %llu, %llu sectors checked; %llu bad requests refused, "
		  "%llu by the device's bounds check\n",
		  m->index, m->path_name, (unsigned long long)m->completed,
		  (unsigned long long)m->reads, (unsigned long long)m->writes,
		  (unsigned long long)m->zeroes, (unsigned long long)m->flushes,
		  (unsigned long long)m->qd, (unsigned long long)m->sectors_checked,
		  (unsigned long long)m->bad_refused, (unsigned long long)m->bad_device_bounds);
}

static void hold_if_asked(void)
{
	if (!args_number("hold", 0))
		return;
	kg_printf("blkmodel: flush acknowledged\n");
	for (;;)
		kg_time_sleep_ns(1000000000ull);
}

/* ---- modes -------------------------------------------------------------------- */

static enum kg_block_path path_option(void)
{
	const char *p = args_text("path");
	if (!p || strcmp(p, "auto") == 0)
		return KG_BLOCK_AUTO;
	if (strcmp(p, "pv") == 0)
		return KG_BLOCK_PV;
	if (strcmp(p, "ata") == 0)
		return KG_BLOCK_ATA;
	kg_panic("path=%s is unknown; use pv, ata or auto", p);
}

static void do_model(void)
{
	static struct model_disk m;
	model_open(&m, (unsigned)args_number("disk", 0), path_option(), args_number("seed", 1),
		   args_number("ops", 1000), max_sectors_option("max_sectors"),
		   args_number("qd", 32), args_number("bad", 0));
	uint64_t prior_ops = args_number("prior_ops", 0);
	if (prior_ops) {
		model_replay(&m, args_number("prior_seed", 1), prior_ops,
			     max_sectors_option("prior_max_sectors"));
		model_verify_all(&m, "left by the prior sequence");
	}
	while (!model_finished(&m)) {
		unsigned progress = model_issue(&m, ~0u);
		progress += model_reap(&m, true);
		if (!progress)
			kg_panic("blkmodel: no progress with %u requests in flight",
				 kg_block_in_flight(m.dev));
	}
	model_finish(&m);
	hold_if_asked();
}

static void do_mixed(void)
{
	static struct model_disk pv, ata;
	uint64_t qd = args_number("qd", 16), bad = args_number("bad", 0);
	model_open(&pv, 0, KG_BLOCK_PV, args_number("seed", 1), args_number("ops", 2000),
		   max_sectors_option("max_sectors"), qd, bad);
	model_open(&ata, 1, KG_BLOCK_ATA, args_number("seed1", 2), args_number("ops1", 400),
		   max_sectors_option("max_sectors1"), 1, bad);
	/* New PV requests per ATA request, so both sequences end together. */
	unsigned pv_per_ata = ata.ops ? (unsigned)((pv.ops + ata.ops - 1) / ata.ops) : ~0u;
	if (pv_per_ata < 1)
		pv_per_ata = 1;
	uint64_t ata_with_pv = 0, ata_requests = 0, most_pv_in_flight = 0;
	while (!model_finished(&pv) || !model_finished(&ata)) {
		unsigned progress = model_issue(&pv, model_finished(&ata) ? ~0u : pv_per_ata);
		/* The ATA request runs now, in this vCPU, while the PV backend
		 * works on what is in flight. */
		unsigned pv_in_flight = kg_block_in_flight(pv.dev);
		unsigned n = model_issue(&ata, 1);
		if (n) {
			ata_requests++;
			if (pv_in_flight)
				ata_with_pv++;
			if (pv_in_flight > most_pv_in_flight)
				most_pv_in_flight = pv_in_flight;
		}
		progress += n + model_reap(&ata, false);
		progress += model_reap(&pv, progress == 0);
		if (!progress && !(model_finished(&pv) && model_finished(&ata)))
			kg_panic("blkmodel: mixed: no progress");
	}
	kg_printf("blkmodel mixed: %llu of %llu ATA requests ran with PV requests in flight "
		  "(up to %llu)\n",
		  (unsigned long long)ata_with_pv, (unsigned long long)ata_requests,
		  (unsigned long long)most_pv_in_flight);
	model_finish(&pv);
	model_finish(&ata);
	hold_if_asked();
}

int main(int argc, char **argv)
{
	const char *mode = args_init(argc, argv, "");
	if (strcmp(mode, "model") == 0) {
		do_model();
	} else if (strcmp(mode, "mixed") == 0) {
		do_mixed();
	} else {
		kg_printf("blkmodel: unknown mode '%s'; use model or mixed\n", mode);
		return 2;
	}
	return 0;
}
