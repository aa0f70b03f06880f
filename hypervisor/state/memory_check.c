/* The background check of a lazily restored memory.img (memory_check.h). */
#define _GNU_SOURCE
#include "state/memory_check.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error_text.h"
#include "core/log.h"
#include "core/output_gate.h"
#include "core/sandbox.h"
#include "core/vm.h"
#include "state/vm_state.h"

static struct {
	pthread_t thread;
	bool running; /* a thread was started and not joined */
	struct kapsel_vm *vm;
	int fd;
	char *path;
	uint64_t size_bytes;
	uint32_t crc32c;
	int abandon; /* atomic: stop reading */
	int result;  /* the verdict: 0, -EPROTO, -ECANCELED, -errno */
} check = { .fd = -1 };

static void *check_thread(void *opaque)
{
	(void)opaque;
	sigset_t all;
	sigfillset(&all);
	/* Signals are for the vCPU and the supervisor; the sandbox's arming
	 * signal gets through (sandbox_thread_role). */
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	sandbox_thread_role(SANDBOX_ROLE_MEMORY_CHECK);

	uint64_t start_ns = monotonic_ns();
	char error[512];
	int err = vm_state_check_flat_fd(check.fd, VM_STATE_FILE_MEMORY, check.size_bytes,
					 check.crc32c, &check.abandon, error, sizeof(error));
	check.result = err;
	if (!err) {
		output_gate_open();
		kapsel_debug("memory.img checked in %.1f ms while the guest ran",
			     (monotonic_ns() - start_ns) / 1e6);
		return NULL;
	}
	if (err != -ECANCELED) {
		kapsel_error("restored VM '%s' stopped: %s/%s; the guest ran on this memory for %.1f ms, but none of its disk writes, frames or console output left the VM; restore an intact copy of the state",
			     check.vm->config->name, check.path, error,
			     (monotonic_ns() - start_ns) / 1e6);
		/* The stop request comes first, so that a vCPU held at the gate
		 * (a crash report, say) sees it and neither reports nor reboots. */
		vm_request_stop_for(check.vm, VM_STOP_MEMORY_DAMAGED);
	}
	/* Nothing the guest made may leave it. */
	output_gate_refuse();
	return NULL;
}

int memory_check_start(struct kapsel_vm *vm, int fd, const char *path, uint64_t size_bytes,
		       uint32_t crc32c, char *error, size_t error_len)
{
	if (check.running)
		return kapsel_fail(error, error_len, -EBUSY, "a memory check already runs");
	check.fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (check.fd < 0)
		return kapsel_fail(error, error_len, -errno, "memory.img: %s", strerror(errno));
	check.path = strdup(path);
	if (!check.path) {
		close(check.fd);
		check.fd = -1;
		return kapsel_fail(error, error_len, -ENOMEM, "out of memory");
	}
	check.vm = vm;
	check.size_bytes = size_bytes;
	check.crc32c = crc32c;
	check.abandon = 0;
	check.result = 0;
	output_gate_close();
	int err = pthread_create(&check.thread, NULL, check_thread, NULL);
	if (err) {
		output_gate_open();
		close(check.fd);
		check.fd = -1;
		free(check.path);
		check.path = NULL;
		return kapsel_fail(error, error_len, -err, "cannot start the memory check: %s",
				   strerror(err));
	}
	check.running = true;
	return 0;
}

int memory_check_finish(int abandon)
{
	if (!check.running)
		return 0;
	if (abandon)
		__atomic_store_n(&check.abandon, 1, __ATOMIC_RELAXED);
	pthread_join(check.thread, NULL);
	check.running = false;
	close(check.fd);
	check.fd = -1;
	free(check.path);
	check.path = NULL;
	check.vm = NULL;
	return check.result == 0 ? 0 : check.result == -ECANCELED ? -ECANCELED : -EPROTO;
}
