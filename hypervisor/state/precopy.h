/* Pre-copy of guest RAM with KVM dirty logging while the vCPU runs, shared by live migration (pages into a stream) and live save (pages into memory.img). */
#ifndef KAPSEL_PRECOPY_H
#define KAPSEL_PRECOPY_H

/*
 * A copy of guest RAM kept at a destination (a migration peer's RAM, or
 * memory.img) is brought up to date in passes:
 *
 *   precopy_first_pass    every page that may hold data (the memfd's
 *                         extents), with dirty logging already on
 *   precopy_rounds        the pages KVM_GET_DIRTY_LOG reports, round after
 *                         round, until the rest is small (convergence
 *                         rules below)
 *   precopy_final_pass    the vCPU is paused: the last dirty pages and
 *                         the hypervisor's tables (below the guest
 *                         floor, written through long-held pointers)
 *
 * A page is dirty when KVM's log has it (the guest wrote it) or the VMM
 * marked it (guest_memory_mark_written: hypercall results, PV block reads,
 * received frames, ring responses), so no pass reads pages that did not
 * change.  Where the marks cannot be trusted to be complete (RAM was
 * cleared by a reboot since logging began, or RAM has no mark bitmap)
 * the final pass compares every page against what the destination holds
 * instead, which also finds ranges that became holes.  With
 * KAPSEL_PRECOPY_VERIFY=1 in the environment (the test suites set it) the
 * final pass does both and fails if the full comparison found a page the
 * marks missed: a VMM write that was not marked.
 *
 * The destination starts all zeros.  Each page is copied before it is
 * checksummed and handed to the sink, so the CRC32C kept per page
 * (sent_crc) describes exactly the bytes the destination got, even while
 * the guest writes the page (a torn copy is dirty again and goes next
 * round).  A page whose CRC equals the one sent is skipped unless it is
 * forced (see write_logged_pages).  Contiguous pages are handed over in
 * batches of up to PRECOPY_BATCH_PAGES; zero pages as runs without data.
 *
 * Convergence (precopy_rounds): stop when the round found at most
 * PRECOPY_SMALL_DIRTY_PAGES dirty pages or its dirty data would take at
 * most max_downtime_ms at the rate just measured (at least 64 MiB/s is
 * assumed: an idle round says nothing), after max_rounds rounds, when
 * PRECOPY_STALL_ROUNDS rounds in a row did not shrink the dirty set, or
 * when the VM is being stopped.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kapsel_vm;
struct guest_memory;

#define PRECOPY_PAGE_BYTES 4096u
#define PRECOPY_BATCH_PAGES 256u      /* pages per sink call */
#define PRECOPY_SMALL_DIRTY_PAGES 64u /* few enough to stop and copy at once */
#define PRECOPY_STALL_ROUNDS 5u	      /* rounds without shrinking the dirty set */

/* Where the pages go.  Each call returns 0 or a negative errno, which
 * ends the copy (it is kept in precopy.error). */
struct precopy_sink_ops {
	/* count pages starting at first_page; data holds count * 4 KiB. */
	int (*write_pages)(void *context, uint64_t first_page, uint32_t count, uint32_t round,
			   const uint8_t *data);
	/* count pages starting at first_page are zero now. */
	int (*write_zeros)(void *context, uint64_t first_page, uint32_t count, uint32_t round);
	/* Bytes the sink has written so far (rate and progress). */
	uint64_t (*bytes_written)(void *context);
};

/* The guest's dirty log: KVM's (precopy_kvm_log) outside tests. */
struct precopy_log_ops {
	/* Turn logging of vm's RAM on or off.  Returns 0 or -errno. */
	int (*set)(struct kapsel_vm *vm, bool on);
	/* The pages written since the last call, into bitmap (which it
	 * overwrites); the log is cleared.  Returns the count or -errno. */
	int64_t (*take)(struct kapsel_vm *vm, uint64_t *bitmap, size_t bitmap_bytes);
};
extern const struct precopy_log_ops precopy_kvm_log;

struct precopy_options {
	uint32_t max_rounds;	  /* precopy_rounds: at most this many rounds */
	uint32_t max_downtime_ms; /* the dirty rest must fit this at the measured rate */
	/*
	 * Write every page the dirty log reports, even if its CRC32C equals
	 * the one written (a save: a guest must not be able to keep a
	 * change out of its saved state by crafting a CRC collision; cheap
	 * for a file).  A migration skips them: bandwidth.  Pages not in
	 * the log (the final pass's VMM writes) are always compared by CRC.
	 */
	bool write_logged_pages;
};

struct precopy {
	struct kapsel_vm *vm;
	const struct precopy_sink_ops *ops;
	void *context;
	struct precopy_options options;
	uint64_t page_count;
	uint32_t *sent_crc; /* CRC32C of each page as the destination has it */
	uint64_t *bitmap;   /* KVM's dirty log of the last round */
	size_t bitmap_bytes;
	uint8_t *batch;	      /* PRECOPY_BATCH_PAGES pages being collected */
	uint64_t batch_first; /* first page of the batch */
	uint32_t batch_pages;
	uint64_t zero_first; /* a run of zero pages to announce */
	uint32_t zero_pages;
	uint32_t round; /* 0: the first pass; the final pass keeps the last */
	uint32_t zero_crc;
	bool logging;
	bool tracked;			   /* every change since logging began is in log or marks */
	uint64_t clears;		   /* the RAM's clear count when logging began */
	bool verify;			   /* KAPSEL_PRECOPY_VERIFY: check the marks (see above) */
	const struct precopy_log_ops *log; /* KVM's (precopy_kvm_log); tests replace it */
	int error;			   /* first sink or KVM error (sticky), or 0 */
	/* Figures. */
	uint32_t rounds;     /* rounds after the first pass */
	uint64_t pages_sent; /* with data, all passes */
	uint64_t zero_pages_sent;
	uint64_t final_pages; /* data and zero pages of the final pass */
	uint64_t final_read;  /* pages the final pass read (all of RAM without marks) */
	bool final_tracked;   /* the final pass read only dirty pages */
	uint64_t first_sent;  /* lowest page sent since reset (the check's report) */
};

/*
 * Set up pc for vm's RAM (allocates the per-page CRCs, the dirty bitmap
 * and the batch).  Nothing is logged yet.  Returns 0 or -ENOMEM.
 */
int precopy_init(struct precopy *pc, struct kapsel_vm *vm, const struct precopy_sink_ops *ops,
		 void *context, const struct precopy_options *options);

/* Turn dirty logging off if it is on, free everything. */
void precopy_free(struct precopy *pc);

/* Turn KVM dirty logging on (KVM_MEM_LOG_DIRTY_PAGES) and clear the log.
 * Returns 0 or -errno. */
int precopy_start_logging(struct precopy *pc);

/* Turn it off again (also done by precopy_free). */
void precopy_stop_logging(struct precopy *pc);

/* Round 0: every page of the memfd's data extents (holes are zero at the
 * destination already).  Returns 0 or pc->error. */
int precopy_first_pass(struct precopy *pc);

/* Rounds 1..: see the convergence rules above.  Returns 0 or pc->error. */
int precopy_rounds(struct precopy *pc);

/* The vCPU is paused (and devices quiesced): the last dirty pages and
 * every page that differs from what was sent.  Returns 0 or pc->error. */
int precopy_final_pass(struct precopy *pc);

/* CRC32C of all of guest RAM as it is now, holes counted as zeros
 * without reading them. */
uint32_t precopy_memory_crc(const struct guest_memory *mem);

/* CRC32C of the whole destination copy, from the per-page CRCs (no page
 * is read again): what a reader of memory.img computes.  With only (a
 * bitmap, bit p of byte p / 8), pages whose bit is clear count as zeros:
 * a diff file that holds only those pages. */
uint32_t precopy_destination_crc(const struct precopy *pc, const uint8_t *only);

/* Take up a dirty log that a previous pre-copy of this process left
 * running (precopy_keep_logging) as if this one had started it: the
 * destination must hold what that pre-copy's final pass left (sent_crc
 * copied from it).  Returns 0 or -errno. */
int precopy_resume_logging(struct precopy *pc);

/* Leave dirty logging on when a pre-copy ends (precopy_stop_logging and
 * precopy_free then only forget it): a tracked save keeps the log and the
 * VMM's marks running so that the next diff save finds the pages dirtied
 * since without reading all of RAM.  Process-wide (a process runs one VM). */
void precopy_keep_logging(void);

/* The kept log and marks now hold exactly the changes since pc's final
 * pass, whose result is committed (the parent of the next diff): a diff
 * that resumes the log may read only those pages.  Until this is called
 * again, a pre-copy that used the log (precopy_start_logging, a migration;
 * precopy_resume_logging, a diff that may still fail) leaves it
 * incomplete, and the next resuming diff compares every page. */
void precopy_kept_log_from(const struct precopy *pc);
bool precopy_logging_kept(void);

/* Take KVM's dirty bitmap of vm's RAM (and clear it) into bitmap.
 * Returns the number of dirty pages or -errno. */
int64_t precopy_get_dirty_log(struct kapsel_vm *vm, uint64_t *bitmap, size_t bitmap_bytes);

/* Turn dirty logging of vm's RAM on or off.  Returns 0 or -errno. */
int precopy_set_dirty_logging(struct kapsel_vm *vm, bool on);

#endif
