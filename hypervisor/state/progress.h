/* How far the running save, snapshot or migration is: counters the state code updates and the 'progress' control verb reports. */
#ifndef KAPSEL_STATE_PROGRESS_H
#define KAPSEL_STATE_PROGRESS_H

#include <stdint.h>

/*
 * One record per process (a process runs one VM), so the state code need
 * not carry a pointer through every layer.  One long operation runs at a
 * time (control.h: background verbs); after it ends the record keeps its
 * last values with state "done" or "failed" until the next one begins.
 * All functions are thread-safe and cheap (one mutex); call the update
 * functions at most every few hundred KiB, not per page.
 */

struct state_progress {
	uint64_t sequence;	/* 0: no operation yet; +1 per operation begun */
	char operation[16];	/* "save", "snapshot", "migrate" or "" */
	char state[8];		/* "running", "done", "failed" or "" */
	char phase[16];		/* "memory", "precopy", "stop-copy", "state", "handover" */
	uint64_t scanned_bytes; /* of guest RAM walked in this pass */
	uint64_t total_bytes;	/* guest RAM to walk in this pass */
	uint64_t written_bytes; /* written to the file or stream, all passes */
	uint32_t round;		/* migration pre-copy round (0: the first full copy) */
	uint32_t max_rounds;	/* the round limit (0 for save and snapshot) */
	uint64_t dirty_bytes;	/* dirty RAM found at the start of this round */
	uint64_t elapsed_ns;	/* since the operation began (until its end once done) */
};

/* A new operation (name: "save", "snapshot", "migrate") begins. */
void state_progress_begin(const char *operation, uint32_t max_rounds);
/* A new pass over RAM: phase, how many bytes of RAM it walks, for a
 * migration round its number and the dirty bytes it found. */
void state_progress_pass(const char *phase, uint64_t total_bytes, uint32_t round,
			 uint64_t dirty_bytes);
/* Within the pass: scanned_bytes of RAM walked so far, written_bytes in all. */
void state_progress_update(uint64_t scanned_bytes, uint64_t written_bytes);
/* Phase change without a RAM pass (writing device state, the hand-over). */
void state_progress_phase(const char *phase);
/* The operation ended (err 0: done, else failed). */
void state_progress_end(int err);
/* A consistent copy of the record. */
void state_progress_read(struct state_progress *out);

#endif
