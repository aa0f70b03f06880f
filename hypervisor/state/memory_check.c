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
#include <sys/mman.h>
#include <sys/syscall.h>
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
	int abandon; /* atomic: stop reading, and stop watching the file */
	int result;  /* the verdict: 0, -EPROTO, -ECANCELED, -errno */
	bool leased; /* a read lease on fd tells us before anyone writes the file */
} check = { .fd = -1 };

/* The signal a lease break (another process opening memory.img to write
 * or truncate it) sends to the checking thread; also its wake-up. */
static int lease_signal(void)
{
	return SIGRTMIN + 6;
}

static void release_lease(void)
{
	if (check.leased)
		fcntl(check.fd, F_SETLEASE, F_UNLCK);
	check.leased = false;
}

/*
 * Take a read lease on memory.img: a process that opens it for writing
 * (or truncates it) then waits, up to /proc/sys/fs/lease-break-time
 * seconds, until this thread has let go, and this thread is told first
 * (lease_signal, to this thread only).  Needs the file to be ours (or
 * CAP_LEASE); where it is not, the VM runs without this protection.
 */
static void take_lease(void)
{
	struct f_owner_ex owner = { .type = F_OWNER_TID, .pid = (pid_t)syscall(SYS_gettid) };
	const char *step = "F_SETLEASE";
	if (fcntl(check.fd, F_SETSIG, lease_signal()) == 0 &&
	    fcntl(check.fd, F_SETLEASE, F_RDLCK) == 0) {
		check.leased = true;
		/* The owner after the lease: taking a lease makes the whole
		 * process the file's owner, and the signal is for this thread. */
		step = "F_SETOWN_EX";
		if (fcntl(check.fd, F_SETOWN_EX, &owner) == 0)
			return;
	}
	kapsel_debug("no read lease on %s/memory.img (%s: %s): a write into it while the VM runs would go unnoticed",
		     check.path, step, strerror(errno));
	/* Such a write would change RAM without a dirty page: live saves and
	 * migrations compare every page instead. */
	__atomic_store_n(&check.vm->mem.unmarked_changes, true, __ATOMIC_SEQ_CST);
	release_lease();
}

/*
 * Someone is about to write memory.img: make the VM independent of it by
 * giving every page of RAM a private copy (MADV_POPULATE_WRITE breaks
 * copy-on-write without changing content), then let the writer go.
 * Returns 0 or -errno.
 */
static int detach_from_file(void)
{
	struct kapsel_vm *vm = check.vm;
	uint64_t start_ns = monotonic_ns();
	int err = 0;
	if (madvise(vm->mem.host_base, vm->mem.size_bytes, MADV_POPULATE_WRITE) < 0)
		err = -errno;
	if (err)
		__atomic_store_n(&vm->mem.unmarked_changes, true, __ATOMIC_SEQ_CST);
	release_lease();
	if (err)
		kapsel_error("%s/memory.img is being opened for writing while VM '%s' runs on it, and its memory cannot be copied out of the file (%s); the VM may see the new content",
			     check.path, vm->config->name, strerror(-err));
	else
		kapsel_warn("%s/memory.img is being opened for writing while VM '%s' runs on it: copied the VM's memory out of the file in %.1f ms first",
			    check.path, vm->config->name, (monotonic_ns() - start_ns) / 1e6);
	return err;
}

/* After the verdict: wait for a lease break (then detach) or for
 * memory_check_finish. */
static void watch_lease(void)
{
	sigset_t wake;
	sigemptyset(&wake);
	sigaddset(&wake, lease_signal());
	while (check.leased && !__atomic_load_n(&check.abandon, __ATOMIC_ACQUIRE)) {
		siginfo_t info;
		if (sigwaitinfo(&wake, &info) < 0)
			continue;
		if (__atomic_load_n(&check.abandon, __ATOMIC_ACQUIRE))
			break;
		/* A lease break names our fd; the wake-up from
		 * memory_check_finish comes with SI_TKILL. */
		if (info.si_code != SI_TKILL && info.si_fd == check.fd)
			detach_from_file();
	}
}

static void *check_thread(void *opaque)
{
	(void)opaque;
	sigset_t all;
	sigfillset(&all);
	/* Signals are for the vCPU and the supervisor; the sandbox's arming
	 * signal gets through (sandbox_thread_role). */
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	sandbox_thread_role(SANDBOX_ROLE_MEMORY_CHECK);
	take_lease();

	uint64_t start_ns = monotonic_ns();
	char error[512];
	int err = vm_state_check_flat_fd(check.fd, VM_STATE_FILE_MEMORY, check.size_bytes,
					 check.crc32c, &check.abandon, error, sizeof(error));
	check.result = err;
	if (!err) {
		output_gate_open();
		kapsel_debug("memory.img checked in %.1f ms while the guest ran",
			     (monotonic_ns() - start_ns) / 1e6);
		/* A write that came during the check waited for it (the lease):
		 * the checked content is what the VM keeps. */
		watch_lease();
		release_lease();
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
	release_lease();
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
	check.leased = false;
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

void memory_check_abandon(void)
{
	__atomic_store_n(&check.abandon, 1, __ATOMIC_RELEASE);
}

int memory_check_finish(int abandon)
{
	if (!check.running)
		return 0;
	if (abandon)
		__atomic_store_n(&check.abandon, 1, __ATOMIC_RELEASE);
	/* Wait for the verdict, then end the lease watch after it. */
	output_gate_wait();
	__atomic_store_n(&check.abandon, 1, __ATOMIC_RELEASE);
	pthread_kill(check.thread, lease_signal());
	pthread_join(check.thread, NULL);
	check.running = false;
	close(check.fd);
	check.fd = -1;
	free(check.path);
	check.path = NULL;
	check.vm = NULL;
	return check.result == 0 ? 0 : check.result == -ECANCELED ? -ECANCELED : -EPROTO;
}
