/* Diagnostics: one-line messages to stderr, prefixed with the program name. */
#ifndef KAPSEL_LOG_H
#define KAPSEL_LOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Print "kapsel: error: ..." to stderr. */
void kapsel_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "kapsel: warning: ..." to stderr. */
void kapsel_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "kapsel: ..." to stderr when verbose logging is on. */
void kapsel_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Turn --verbose logging on or off (off by default). */
void kapsel_log_set_verbose(bool verbose);
/* Silence warnings (used by unit tests that provoke them on purpose). */
void kapsel_log_set_quiet(bool quiet);
/* Send log lines to stream instead of stderr (NULL: stderr again; for tests). */
void kapsel_log_set_stream(FILE *stream);

/*
 * A token bucket for log lines a guest can trigger (one per VM): a guest
 * that breaks a ring in a loop must not fill the host's logs.  Up to
 * burst lines pass at once, then per_second lines a second; the lines in
 * between are counted, and the next line that passes is preceded by
 * "N guest-triggered messages suppressed".
 */
#define LOG_LIMIT_DEFAULT_BURST 20u
#define LOG_LIMIT_DEFAULT_PER_SECOND 5u

struct log_limit {
	pthread_mutex_t lock;
	uint64_t burst;		    /* lines that may pass at once (>= 1) */
	uint64_t per_second;	    /* refill rate (>= 1) */
	uint64_t credit;	    /* tokens, in units of 1/1e9 token */
	uint64_t last_ns;	    /* clock reading of the last refill */
	uint64_t suppressed;	    /* lines dropped since the last one passed */
	uint64_t suppressed_total;  /* lines dropped ever */
	uint64_t (*clock_ns)(void); /* CLOCK_MONOTONIC; tests put a fake clock here */
};

/* Start full (burst lines may pass).  burst and per_second of 0 mean the defaults. */
void log_limit_init(struct log_limit *limit, unsigned burst, unsigned per_second);

/* Release the lock.  Precondition: no thread uses limit any more. */
void log_limit_destroy(struct log_limit *limit);

/*
 * Take one token.  Returns true when a line may be printed now and sets
 * *suppressed_before to the lines dropped since the last one that passed
 * (then reset to 0); returns false and counts the line otherwise.
 * Thread-safe.
 */
bool log_limit_admit(struct log_limit *limit, uint64_t *suppressed_before);

/* Lines this limiter has dropped so far (thread-safe). */
uint64_t log_limit_suppressed_total(struct log_limit *limit);

/*
 * A warning a guest can cause, passed through limit (NULL: no limit, for
 * code running without a VM, e.g. unit tests).  When lines were dropped
 * before it, a line "N guest-triggered messages suppressed (rate limit)"
 * comes first.
 */
void kapsel_guest_warn(struct log_limit *limit, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Report lines dropped since the last one that passed, if any (at the end
 * of a VM, so the count is not lost).  Thread-safe.
 */
void log_limit_flush(struct log_limit *limit);

#endif
