/* Host side of the guest console: one output sink and one input queue shared by PV and UART. */
#include "devices/console/console.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/output_gate.h"
#include "core/sandbox.h"

#define NS_PER_MS 1000000ull

static void *console_writer_main(void *opaque);

int console_open_fd(struct console *console, int output_fd, uint64_t max_bytes,
		    uint64_t already_bytes, int input_fd)
{
	memset(console, 0, sizeof(*console));
	console->output = malloc(CONSOLE_OUTPUT_BUFFER_BYTES);
	if (!console->output)
		return -ENOMEM;
	pthread_mutex_init(&console->lock, NULL);
	pthread_mutex_init(&console->output_lock, NULL);
	/* Drain deadlines are on CLOCK_MONOTONIC: a clock step cannot stretch them. */
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&console->output_cond, &attr);
	pthread_condattr_destroy(&attr);
	console->input_fd = input_fd;
	console->output_fd = output_fd;
	console->output_max_bytes = max_bytes;
	console->output_file_bytes = already_bytes;
	/* A reader that goes away (kapsel run | head) must not kill the VMM:
	 * the writer then sees EPIPE and drops the output. */
	signal(SIGPIPE, SIG_IGN);
	int err = pthread_create(&console->writer_thread, NULL, console_writer_main, console);
	if (err) {
		kapsel_error("cannot start the console output thread: %s", strerror(err));
		pthread_cond_destroy(&console->output_cond);
		pthread_mutex_destroy(&console->output_lock);
		pthread_mutex_destroy(&console->lock);
		free(console->output);
		console->output = NULL;
		return -err;
	}
	console->writer_running = true;
	return 0;
}

int console_open(struct console *console, const char *output_path, uint64_t max_bytes, int input_fd)
{
	if (!output_path)
		return console_open_fd(console, STDOUT_FILENO, 0, 0, input_fd);
	int fd = open(output_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0) {
		int err = -errno;
		kapsel_error("cannot open console output '%s': %s; check the directory exists and is writable",
			     output_path, strerror(errno));
		return err;
	}
	/* The cap bounds the file, so what an earlier run left counts. */
	struct stat st;
	uint64_t already = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
	char *path_copy = strdup(output_path);
	int err = path_copy ? console_open_fd(console, fd, max_bytes, already, input_fd) : -ENOMEM;
	if (err) {
		free(path_copy);
		close(fd);
		return err;
	}
	console->owns_output_fd = 1;
	console->output_path = path_copy;
	if (max_bytes && already >= max_bytes)
		kapsel_warn("console output '%s' already holds %llu bytes, at or over its cap of %llu; "
			    "guest output will be dropped: remove or rotate the file, or raise the cap "
			    "with --console-output FILE,max=SIZE",
			    output_path, (unsigned long long)already,
			    (unsigned long long)max_bytes);
	return 0;
}

void console_set_output_tap(struct console *console,
			    void (*tap)(void *opaque, const void *data, size_t length),
			    void *opaque)
{
	console->output_tap_opaque = opaque;
	__atomic_store_n(&console->output_tap, tap, __ATOMIC_RELEASE);
}

/* Copy into the output ring.  Precondition: output_lock held, length fits. */
static void output_enqueue_locked(struct console *console, const uint8_t *data, size_t length)
{
	while (length) {
		size_t at = (size_t)(console->output_head % CONSOLE_OUTPUT_BUFFER_BYTES);
		size_t chunk = CONSOLE_OUTPUT_BUFFER_BYTES - at;
		if (chunk > length)
			chunk = length;
		memcpy(console->output + at, data, chunk);
		console->output_head += chunk;
		data += chunk;
		length -= chunk;
	}
}

static size_t output_free_locked(const struct console *console)
{
	return CONSOLE_OUTPUT_BUFFER_BYTES - (size_t)(console->output_head - console->output_tail);
}

void console_write(struct console *console, const void *data, size_t length)
{
	/* Held until a lazily restored guest's memory passed its check,
	 * dropped if it failed (output_gate.h). */
	if (length && output_gate_wait() < 0)
		return;
	void (*tap)(void *, const void *, size_t) =
		__atomic_load_n(&console->output_tap, __ATOMIC_ACQUIRE);
	if (tap && length)
		tap(console->output_tap_opaque, data, length);
	if (!length)
		return;

	char note[160];
	int note_len = 0;
	bool warn_cap = false, warn_full = false;
	pthread_mutex_lock(&console->output_lock);
	if (console->sink_gone || console->output_closing) {
		console->dropped_closed_bytes += length;
		pthread_mutex_unlock(&console->output_lock);
		return;
	}
	size_t accept = length;
	if (console->output_max_bytes) {
		/* The guest may fill the file up to the cap less room for the
		 * one line that says output stops there. */
		note_len = snprintf(note, sizeof(note),
				    "\n[kapsel: console output reached its cap of %llu bytes; "
				    "further output is dropped]\n",
				    (unsigned long long)console->output_max_bytes);
		uint64_t limit = console->output_max_bytes > (uint64_t)note_len
					 ? console->output_max_bytes - (uint64_t)note_len
					 : 0;
		uint64_t room =
			limit > console->output_file_bytes ? limit - console->output_file_bytes : 0;
		if (accept > room)
			accept = (size_t)room;
		if (accept < length) {
			console->dropped_cap_bytes += length - accept;
			if (!console->output_capped) {
				console->output_capped = true;
				warn_cap = true;
			}
		}
	}
	size_t free_bytes = output_free_locked(console);
	if (accept > free_bytes) {
		console->dropped_full_bytes += accept - free_bytes;
		accept = free_bytes;
		if (!console->full_warned) {
			console->full_warned = true;
			warn_full = true;
		}
	}
	output_enqueue_locked(console, data, accept);
	console->output_file_bytes += accept;
	/* The note goes in once, when the cap is reached, if the file has
	 * room for it (it had none when an earlier run filled it). */
	if (warn_cap &&
	    console->output_file_bytes + (uint64_t)note_len <= console->output_max_bytes &&
	    (size_t)note_len <= output_free_locked(console)) {
		output_enqueue_locked(console, (const uint8_t *)note, (size_t)note_len);
		console->output_file_bytes += (uint64_t)note_len;
	}
	pthread_cond_broadcast(&console->output_cond);
	pthread_mutex_unlock(&console->output_lock);

	/* Logged after the lock: stderr may itself be slow. */
	if (warn_cap)
		kapsel_warn("console output '%s' reached its cap of %llu bytes; further guest output "
			    "is dropped and counted (console_dropped_cap_bytes in stats); raise the "
			    "cap with --console-output FILE,max=SIZE",
			    console->output_path ? console->output_path : "(descriptor)",
			    (unsigned long long)console->output_max_bytes);
	if (warn_full)
		kapsel_warn("the console output reader is not keeping up; guest output that does "
			    "not fit in the %u KiB buffer is dropped and counted "
			    "(console_dropped_full_bytes in stats)",
			    CONSOLE_OUTPUT_BUFFER_BYTES >> 10);
}

/*
 * The writer: takes output from the ring and writes it to the sink,
 * without the lock, so only this thread ever waits for a slow reader.
 * Cancellation (console_close giving up on a stuck sink) is enabled only
 * inside write(), where the thread holds no lock.
 */
static void *console_writer_main(void *opaque)
{
	struct console *console = opaque;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	/* After the mask: it lets the sandbox's signals back in. */
	sandbox_thread_role(SANDBOX_ROLE_CONSOLE);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_mutex_lock(&console->output_lock);
	for (;;) {
		while (console->output_head == console->output_tail && !console->output_closing)
			pthread_cond_wait(&console->output_cond, &console->output_lock);
		if (console->output_head == console->output_tail)
			break; /* closing and drained */
		size_t at = (size_t)(console->output_tail % CONSOLE_OUTPUT_BUFFER_BYTES);
		size_t chunk = (size_t)(console->output_head - console->output_tail);
		if (chunk > CONSOLE_OUTPUT_BUFFER_BYTES - at)
			chunk = CONSOLE_OUTPUT_BUFFER_BYTES - at;
		pthread_mutex_unlock(&console->output_lock);
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		ssize_t n = write(console->output_fd, console->output + at, chunk);
		int saved_errno = errno;
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
		pthread_mutex_lock(&console->output_lock);
		if (n < 0 && saved_errno == EINTR)
			continue;
		if (n <= 0) {
			/* Output gone (EPIPE, disk full...): drop it all from
			 * now on; the guest keeps running. */
			console->sink_gone = true;
			console->dropped_closed_bytes +=
				console->output_head - console->output_tail;
			console->output_tail = console->output_head;
		} else {
			console->output_tail += (uint64_t)n;
			__atomic_add_fetch(&console->bytes_out, (uint64_t)n, __ATOMIC_RELAXED);
		}
		pthread_cond_broadcast(&console->output_cond);
	}
	pthread_mutex_unlock(&console->output_lock);
	return NULL;
}

void console_output_stats(struct console *console, struct console_output_stats *stats)
{
	pthread_mutex_lock(&console->output_lock);
	*stats = (struct console_output_stats){
		.written_bytes = __atomic_load_n(&console->bytes_out, __ATOMIC_RELAXED),
		.dropped_full_bytes = console->dropped_full_bytes,
		.dropped_cap_bytes = console->dropped_cap_bytes,
		.dropped_closed_bytes = console->dropped_closed_bytes,
		.max_bytes = console->output_max_bytes,
		.capped = console->output_capped,
	};
	pthread_mutex_unlock(&console->output_lock);
}

void console_inject_input(struct console *console, const void *data, size_t length)
{
	const uint8_t *p = data;
	pthread_mutex_lock(&console->lock);
	for (size_t i = 0; i < length; i++) {
		if (console->input_head - console->input_tail == CONSOLE_INPUT_BYTES)
			break; /* full: drop, as a UART FIFO overrun would */
		console->input[console->input_head++ % CONSOLE_INPUT_BYTES] = p[i];
		console->bytes_in++;
	}
	pthread_mutex_unlock(&console->lock);
	if (console->on_input)
		console->on_input(console->on_input_opaque);
}

size_t console_read(struct console *console, void *data, size_t length)
{
	uint8_t *p = data;
	size_t n = 0;
	pthread_mutex_lock(&console->lock);
	while (n < length && console->input_tail != console->input_head)
		p[n++] = console->input[console->input_tail++ % CONSOLE_INPUT_BYTES];
	pthread_mutex_unlock(&console->lock);
	return n;
}

size_t console_input_pending(struct console *console)
{
	pthread_mutex_lock(&console->lock);
	size_t n = console->input_head - console->input_tail;
	pthread_mutex_unlock(&console->lock);
	return n;
}

static void *console_input_main(void *opaque)
{
	struct console *console = opaque;
	uint8_t buffer[256];
	sigset_t all;
	/* Signals (stop, stats) must reach the vCPU thread and interrupt KVM_RUN. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	sandbox_thread_role(SANDBOX_ROLE_CONSOLE);
	for (;;) {
		ssize_t n = read(console->input_fd, buffer, sizeof(buffer));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return NULL; /* EOF or error: no more input */
		console_inject_input(console, buffer, (size_t)n);
	}
}

int console_start_input(struct console *console, void (*on_input)(void *), void *opaque)
{
	console->on_input = on_input;
	console->on_input_opaque = opaque;
	if (console->input_fd < 0)
		return 0;
	int err = pthread_create(&console->input_thread, NULL, console_input_main, console);
	if (err)
		return -err;
	console->input_thread_running = 1;
	return 0;
}

/* Give the writer until CONSOLE_DRAIN_MS to empty the ring; then stop it. */
static void console_stop_writer(struct console *console)
{
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	uint64_t ns = (uint64_t)deadline.tv_nsec + (uint64_t)CONSOLE_DRAIN_MS * NS_PER_MS;
	deadline.tv_sec += (time_t)(ns / 1000000000ull);
	deadline.tv_nsec = (long)(ns % 1000000000ull);

	pthread_mutex_lock(&console->output_lock);
	console->output_closing = true;
	pthread_cond_broadcast(&console->output_cond);
	int rc = 0;
	while (console->output_head != console->output_tail && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&console->output_cond, &console->output_lock,
					    &deadline);
	uint64_t stuck = console->output_head - console->output_tail;
	pthread_mutex_unlock(&console->output_lock);
	if (stuck) {
		/* The sink stopped reading: the writer sits in write(). */
		pthread_cancel(console->writer_thread);
	}
	pthread_join(console->writer_thread, NULL);
	console->writer_running = false;
	pthread_mutex_lock(&console->output_lock);
	stuck = console->output_head - console->output_tail;
	console->dropped_closed_bytes += stuck;
	console->output_tail = console->output_head;
	pthread_mutex_unlock(&console->output_lock);
	if (stuck)
		kapsel_warn("the console output reader took nothing for %u ms; the last %llu bytes "
			    "of guest output were dropped",
			    CONSOLE_DRAIN_MS, (unsigned long long)stuck);
}

void console_close(struct console *console)
{
	if (console->input_thread_running) {
		/* The thread may sit in read(): cancel it, it holds no lock there. */
		pthread_cancel(console->input_thread);
		pthread_join(console->input_thread, NULL);
		console->input_thread_running = 0;
	}
	if (console->writer_running)
		console_stop_writer(console);
	if (console->owns_output_fd)
		close(console->output_fd);
	console->owns_output_fd = 0;
	free(console->output_path);
	console->output_path = NULL;
	free(console->output);
	console->output = NULL;
}
