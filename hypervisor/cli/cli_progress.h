/* Progress of save, snapshot and migrate on the client side: parse the VM's 'progress' reply, compute rate and time left, draw a line on stderr. */
#ifndef KAPSEL_CLI_PROGRESS_H
#define KAPSEL_CLI_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state/progress.h"

struct control_reply;

/* When to draw: by default only when stderr is a terminal. */
enum cli_progress_mode {
	CLI_PROGRESS_AUTO,   /* if stderr is a terminal */
	CLI_PROGRESS_ALWAYS, /* --progress */
	CLI_PROGRESS_NEVER,  /* --no-progress */
};

/*
 * Fill p from the payload of a 'progress' reply (docs/control.md).
 * Missing numbers stay 0.  Returns 0, or -EPROTO when the payload has no
 * sequence line.  Pure function: unit-tested.
 */
int cli_progress_parse(const char *payload, struct state_progress *p);

/*
 * Rate and time left between two samples of one operation taken
 * elapsed_ns apart (prev may be NULL, or from another pass): the bytes
 * written per second (0 when unknown), and the time the current pass
 * needs at the rate it walks RAM (UINT64_MAX when unknown: a new pass, no
 * movement yet).  Pure function: unit-tested.
 */
void cli_progress_rate(const struct state_progress *prev, const struct state_progress *cur,
		       uint64_t elapsed_ns, uint64_t *bytes_per_s, uint64_t *left_ns);

/*
 * One line for people: operation, phase, bytes, percentage of the pass,
 * rate, time left; migrations add the round and the dirty data.  No
 * newline.  Pure function: unit-tested.
 */
void cli_progress_format(const struct state_progress *p, uint64_t bytes_per_s, uint64_t left_ns,
			 char *buf, size_t len);

/*
 * "12.5 MiB"-style size (B, KiB, MiB, GiB, TiB; one decimal from KiB on)
 * and "1.5 s"/"2m05s"-style duration into buf.  Pure functions.
 */
void cli_format_bytes(uint64_t bytes, char *buf, size_t len);
void cli_format_duration(uint64_t ns, char *buf, size_t len);

/*
 * A whole number from min to max for option (for its message): returns 0
 * with *value set, or -EINVAL with "OPTION 'TEXT' ... use MIN to MAX" in
 * error.  Pure function: unit-tested.
 */
int cli_parse_u32_range(const char *option, const char *text, uint32_t min, uint32_t max,
			uint32_t *value, char *error, size_t error_len);

/*
 * Send request to VM name and wait for its reply, as control_call does;
 * meanwhile, if mode says so, ask the VM for 'progress' on a second
 * connection a few times a second and draw it on stderr (one line redrawn
 * on a terminal; a line per sample otherwise), ending with the final
 * figures.  Returns as control_call.
 */
int cli_call_with_progress(const char *name, const char *request, struct control_reply *reply,
			   enum cli_progress_mode mode);

#endif
