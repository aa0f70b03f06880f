/* Host side of the guest console: one output sink and one input queue shared by PV and UART. */
#ifndef KAPSEL_CONSOLE_H
#define KAPSEL_CONSOLE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define CONSOLE_INPUT_BYTES 4096u

struct console {
	int output_fd; /* stdout, a file or a pty */
	int owns_output_fd;
	int input_fd; /* host input, -1 for none */
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
 * created or appended to.  input_fd is the host input (usually 0) or -1.
 * Returns 0 or -errno with the output path named in the log.
 */
int console_open(struct console *console, const char *output_path, int input_fd);

/* Start the thread that reads host input, calling on_input when bytes
 * arrive.  Harmless when input_fd is -1. */
int console_start_input(struct console *console, void (*on_input)(void *), void *opaque);

/* Write guest output; never blocks the guest on a slow reader for long. */
void console_write(struct console *console, const void *data, size_t length);

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

void console_close(struct console *console);

#endif
