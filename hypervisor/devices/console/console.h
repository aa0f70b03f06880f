/* Host side of the guest console: one output sink and one input queue shared by PV and UART. */
#ifndef KAPSEL_CONSOLE_H
#define KAPSEL_CONSOLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONSOLE_INPUT_BYTES 4096u
/* Guest output waiting for a slow sink; beyond it output is dropped. */
#define CONSOLE_OUTPUT_BUFFER_BYTES (256u << 10)
/* How long closing the console waits for a stuck sink to take the rest. */
#define CONSOLE_DRAIN_MS 1000u

/* Counters of guest output (a snapshot). */
struct console_output_stats {
	uint64_t written_bytes;	       /* handed to the sink */
	uint64_t dropped_full_bytes;   /* the buffer was full: the sink did not keep up */
	uint64_t dropped_cap_bytes;    /* over the output file's cap */
	uint64_t dropped_closed_bytes; /* the sink was gone, or still stuck at the end */
	uint64_t max_bytes;	       /* the file's cap, 0 for none */
	bool capped;		       /* the cap was reached */
};

struct console {
	int output_fd; /* stdout, a file or a pty */
	int owns_output_fd;
	/*
	 * Guest output goes through a bounded ring drained by a writer
	 * thread: the vCPU only copies into it (and drops what does not fit,
	 * counted), so a sink that stops reading blocks only the writer.
	 */
	pthread_mutex_t output_lock;
	pthread_cond_t output_cond;	   /* data queued, data written, closing */
	uint8_t *output;		   /* CONSOLE_OUTPUT_BUFFER_BYTES */
	uint64_t output_head, output_tail; /* free-running byte counts */
	pthread_t writer_thread;
	bool writer_running;
	bool output_closing;
	bool sink_gone;		    /* a write failed: drop from now on */
	uint64_t output_max_bytes;  /* 0: no cap */
	uint64_t output_file_bytes; /* the file's size: at open plus what was queued */
	bool output_capped;
	bool full_warned;
	uint64_t dropped_full_bytes, dropped_cap_bytes, dropped_closed_bytes;
	char *output_path; /* for messages; NULL for stdout or a caller's fd */
	int input_fd;	   /* host input, -1 for none */
	pthread_t input_thread;
	int input_thread_running;
	pthread_mutex_t lock;
	uint8_t input[CONSOLE_INPUT_BYTES]; /* ring of pending input */
	uint32_t input_head, input_tail;    /* free-running */
	/* Called (from the input thread) when input arrives. */
	void (*on_input)(void *opaque);
	void *on_input_opaque;
	uint64_t bytes_out, bytes_in;
	/* Optional copy of all guest output (control socket console clients). */
	void (*output_tap)(void *opaque, const void *data, size_t length);
	void *output_tap_opaque;
};

/*
 * Open the console.  output_path NULL means stdout; otherwise the file is
 * created or appended to, and grows to at most max_bytes (0: no cap; the
 * bytes already in the file count).  input_fd is the host input (usually
 * 0) or -1.  Starts the output writer thread.  Returns 0 or -errno with
 * the output path named in the log.
 */
int console_open(struct console *console, const char *output_path, uint64_t max_bytes,
		 int input_fd);

/*
 * Open the console on an output descriptor the caller keeps owning (tests,
 * or stdout), with a cap of max_bytes (0: none) counted from
 * already_bytes.  Returns 0 or -errno.
 */
int console_open_fd(struct console *console, int output_fd, uint64_t max_bytes,
		    uint64_t already_bytes, int input_fd);

/* Start the thread that reads host input, calling on_input when bytes
 * arrive.  Harmless when input_fd is -1. */
int console_start_input(struct console *console, void (*on_input)(void *), void *opaque);

/*
 * Queue guest output; never blocks on the sink.  What does not fit in the
 * buffer, or goes over the file's cap, is dropped and counted; what is
 * queued keeps its order.  The first drop of each kind is logged once,
 * and reaching the cap also writes one line saying so into the file.
 */
void console_write(struct console *console, const void *data, size_t length);

/* Output counters (thread-safe). */
void console_output_stats(struct console *console, struct console_output_stats *stats);

/* Take up to length bytes of pending input; returns how many. */
size_t console_read(struct console *console, void *data, size_t length);

/* Bytes of input waiting. */
size_t console_input_pending(struct console *console);

/* Feed bytes as if typed on the host (tests, control socket). */
void console_inject_input(struct console *console, const void *data, size_t length);

/*
 * Also hand every piece of guest output to tap (called on the thread that
 * writes output, usually the vCPU; it must not block).  NULL removes it.
 * Precondition: set or cleared while no guest output is being written
 * (before vm_run or after it returned).
 */
void console_set_output_tap(struct console *console,
			    void (*tap)(void *opaque, const void *data, size_t length),
			    void *opaque);

/*
 * Stop the input thread, give the sink up to CONSOLE_DRAIN_MS to take the
 * queued output (the rest is dropped and counted), stop the writer and
 * close an output file.  Never blocks longer than that on the sink.
 */
void console_close(struct console *console);

#endif
