/* Host side of the guest console: one output sink and one input queue shared by PV and UART. */
#include "console.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "sandbox.h"

int console_open(struct console *console, const char *output_path, int input_fd)
{
	memset(console, 0, sizeof(*console));
	pthread_mutex_init(&console->lock, NULL);
	console->input_fd = input_fd;
	/* A reader that goes away (kapsel run | head) must not kill the VMM:
	 * console_write then sees EPIPE and drops the output. */
	signal(SIGPIPE, SIG_IGN);
	if (!output_path) {
		console->output_fd = STDOUT_FILENO;
		return 0;
	}
	console->output_fd = open(output_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (console->output_fd < 0) {
		int err = -errno;
		kapsel_error("cannot open console output '%s': %s; check the directory exists and is writable",
			     output_path, strerror(errno));
		return err;
	}
	console->owns_output_fd = 1;
	return 0;
}

void console_set_output_tap(struct console *console,
			    void (*tap)(void *opaque, const void *data, size_t length),
			    void *opaque)
{
	console->output_tap_opaque = opaque;
	__atomic_store_n(&console->output_tap, tap, __ATOMIC_RELEASE);
}

void console_write(struct console *console, const void *data, size_t length)
{
	const uint8_t *p = data;
	void (*tap)(void *, const void *, size_t) =
		__atomic_load_n(&console->output_tap, __ATOMIC_ACQUIRE);
	if (tap && length)
		tap(console->output_tap_opaque, data, length);
	while (length) {
		ssize_t n = write(console->output_fd, p, length);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* output gone: drop, the guest keeps running */
		p += n;
		length -= (size_t)n;
		__atomic_add_fetch(&console->bytes_out, (uint64_t)n, __ATOMIC_RELAXED);
	}
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

void console_close(struct console *console)
{
	if (console->input_thread_running) {
		/* The thread may sit in read(): cancel it, it holds no lock there. */
		pthread_cancel(console->input_thread);
		pthread_join(console->input_thread, NULL);
		console->input_thread_running = 0;
	}
	if (console->owns_output_fd)
		close(console->output_fd);
	console->owns_output_fd = 0;
}
