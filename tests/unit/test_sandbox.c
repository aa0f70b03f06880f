/* Unit tests of the sandbox's seccomp allow-lists: each role, in a forked child, permits and refuses what it should. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cunit_main.h"
#include "core/sandbox.h"

/* What the child tries once its role's filter is in place. */
enum probe {
	PROBE_NOTHING,
	PROBE_OPENAT,
	PROBE_SOCKET,
	PROBE_EXECVE,
	PROBE_FORK,
	PROBE_THREAD,
	PROBE_IOCTL_KVM,
	PROBE_IOCTL_OTHER,
	PROBE_IO_URING_ENTER,
	PROBE_SIGACTION_SIGSYS,
	PROBE_SIGACTION_OTHER,
	PROBE_KILL_OTHER_PROCESS,
	PROBE_MOUNT,
	PROBE_PTRACE,
	PROBE_UNSHARE,
	PROBE_PRCTL_OTHER,
	PROBE_IOCTL_TUNSETIFF,
};

static void *thread_main(void *opaque)
{
	return opaque;
}

static void run_probe(enum probe probe)
{
	switch (probe) {
	case PROBE_NOTHING:
		break;
	case PROBE_OPENAT:
		syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY | O_CLOEXEC);
		break;
	case PROBE_SOCKET:
		syscall(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		break;
	case PROBE_EXECVE: {
		static char *const argv[] = { "/bin/true", NULL };
		syscall(SYS_execve, "/bin/true", argv, argv + 1);
		_exit(99); /* not reached whether refused (trap) or allowed (exec) */
	}
	case PROBE_FORK: {
		pid_t pid = fork();
		if (pid == 0)
			_exit(0);
		if (pid > 0)
			waitpid(pid, NULL, 0);
		break;
	}
	case PROBE_THREAD: {
		pthread_t thread;
		if (pthread_create(&thread, NULL, thread_main, NULL) != 0)
			_exit(98);
		pthread_join(thread, NULL);
		break;
	}
	case PROBE_IOCTL_KVM:
		syscall(SYS_ioctl, -1, KVM_GET_API_VERSION, 0);
		break;
	case PROBE_IOCTL_OTHER:
		syscall(SYS_ioctl, -1, TIOCSTI, "x");
		break;
	case PROBE_IO_URING_ENTER:
		syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0);
		break;
	case PROBE_SIGACTION_SIGSYS: {
		struct sigaction sa = { .sa_handler = SIG_IGN };
		sigaction(SIGSYS, &sa, NULL);
		break;
	}
	case PROBE_SIGACTION_OTHER: {
		struct sigaction sa = { .sa_handler = SIG_IGN };
		sigaction(SIGHUP, &sa, NULL);
		break;
	}
	case PROBE_KILL_OTHER_PROCESS:
		syscall(SYS_tgkill, getppid(), getppid(), 0);
		break;
	case PROBE_MOUNT:
		syscall(SYS_mount, "none", "/nonexistent", "tmpfs", 0, NULL);
		break;
	case PROBE_PTRACE:
		syscall(SYS_ptrace, PTRACE_PEEKDATA, getppid(), NULL, NULL);
		break;
	case PROBE_UNSHARE:
		syscall(SYS_unshare, CLONE_NEWUSER);
		break;
	case PROBE_PRCTL_OTHER:
		syscall(SYS_prctl, PR_SET_DUMPABLE, 1, 0, 0, 0);
		break;
	case PROBE_IOCTL_TUNSETIFF:
		syscall(SYS_ioctl, -1, TUNSETIFF, NULL);
		break;
	}
}

/*
 * Fork; the child installs role's filter and runs probe.  Returns the
 * child's exit status (0: the probe was allowed; KAPSEL_EXIT_SANDBOX_VIOLATION:
 * refused) and its stderr in message.
 */
static int probe_in_child_with(enum sandbox_role role, const struct sandbox_options *options,
			       enum probe probe, char *message, size_t len)
{
	int pipe_fds[2];
	message[0] = '\0';
	if (pipe(pipe_fds) < 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		dup2(pipe_fds[1], STDERR_FILENO);
		close(pipe_fds[0]);
		if (sandbox_install_self(role, options) < 0)
			_exit(97);
		run_probe(probe);
		_exit(0);
	}
	close(pipe_fds[1]);
	size_t used = 0;
	ssize_t n;
	while (used + 1 < len && (n = read(pipe_fds[0], message + used, len - 1 - used)) > 0)
		used += (size_t)n;
	message[used] = '\0';
	close(pipe_fds[0]);
	int status;
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int probe_in_child(enum sandbox_role role, enum probe probe, char *message, size_t len)
{
	static const struct sandbox_options options = { .enabled = true };
	return probe_in_child_with(role, &options, probe, message, len);
}

static void expect_status(enum sandbox_role role, enum probe probe, int expected)
{
	char message[1024];
	int status = probe_in_child(role, probe, message, sizeof(message));
	if (status != expected)
		fprintf(stderr, "\nrole %s probe %d: status %d (%s)\n", sandbox_role_name(role),
			probe, status, message);
	CU_ASSERT_EQUAL(status, expected);
}

static void expect(enum sandbox_role role, enum probe probe, bool allowed)
{
	expect_status(role, probe, allowed ? 0 : KAPSEL_EXIT_SANDBOX_VIOLATION);
}

static void test_vcpu_role(void)
{
	expect(SANDBOX_ROLE_VCPU, PROBE_NOTHING, true);
	expect(SANDBOX_ROLE_VCPU, PROBE_IOCTL_KVM, true);
	expect(SANDBOX_ROLE_VCPU, PROBE_SIGACTION_OTHER, true);
	expect(SANDBOX_ROLE_VCPU, PROBE_OPENAT, false);
	expect(SANDBOX_ROLE_VCPU, PROBE_SOCKET, false);
	expect(SANDBOX_ROLE_VCPU, PROBE_IOCTL_OTHER, false);
	expect(SANDBOX_ROLE_VCPU, PROBE_IO_URING_ENTER, false);
	/* Refused with an error: pthread_create fails (the child exits 98). */
	expect_status(SANDBOX_ROLE_VCPU, PROBE_THREAD, 98);
	expect(SANDBOX_ROLE_VCPU, PROBE_FORK, false);
}

static void test_io_role(void)
{
	expect(SANDBOX_ROLE_IO, PROBE_IO_URING_ENTER, true);
	expect(SANDBOX_ROLE_IO, PROBE_IOCTL_KVM, false);
	expect(SANDBOX_ROLE_IO, PROBE_OPENAT, false);
	expect(SANDBOX_ROLE_IO, PROBE_SOCKET, false);
}

static void test_control_role(void)
{
	expect(SANDBOX_ROLE_CONTROL, PROBE_OPENAT, true);
	expect(SANDBOX_ROLE_CONTROL, PROBE_SOCKET, true);
	expect(SANDBOX_ROLE_CONTROL, PROBE_IOCTL_KVM, true);
	expect(SANDBOX_ROLE_CONTROL, PROBE_THREAD, true);
	expect(SANDBOX_ROLE_CONTROL, PROBE_FORK, false);
	expect(SANDBOX_ROLE_CONTROL, PROBE_IOCTL_OTHER, false);
}

static void test_save_and_console_roles(void)
{
	expect(SANDBOX_ROLE_SAVE, PROBE_OPENAT, true);
	expect(SANDBOX_ROLE_SAVE, PROBE_SOCKET, false);
	expect(SANDBOX_ROLE_CONSOLE, PROBE_NOTHING, true);
	expect(SANDBOX_ROLE_CONSOLE, PROBE_OPENAT, false);
	expect(SANDBOX_ROLE_CONSOLE, PROBE_IOCTL_KVM, false);
	/* The memory check reads a file it was given, nothing else. */
	expect(SANDBOX_ROLE_MEMORY_CHECK, PROBE_NOTHING, true);
	expect(SANDBOX_ROLE_MEMORY_CHECK, PROBE_OPENAT, false);
	expect(SANDBOX_ROLE_MEMORY_CHECK, PROBE_IOCTL_KVM, false);
	expect(SANDBOX_ROLE_MEMORY_CHECK, PROBE_SOCKET, false);
}

/* What no thread may do, whatever its role. */
static void test_every_role_refuses_escapes(void)
{
	static const enum probe refused[] = { PROBE_EXECVE,	      PROBE_MOUNT,
					      PROBE_PTRACE,	      PROBE_UNSHARE,
					      PROBE_SIGACTION_SIGSYS, PROBE_KILL_OTHER_PROCESS,
					      PROBE_PRCTL_OTHER };
	for (unsigned role = 0; role < SANDBOX_ROLE_COUNT; role++)
		for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
			expect((enum sandbox_role)role, refused[i], false);
}

/* The report names the thread's role and the call, so an operator knows what happened. */
static void test_violation_message(void)
{
	char message[1024];
	int status = probe_in_child(SANDBOX_ROLE_IO, PROBE_OPENAT, message, sizeof(message));
	CU_ASSERT_EQUAL(status, KAPSEL_EXIT_SANDBOX_VIOLATION);
	CU_ASSERT_PTR_NOT_NULL(strstr(message, "the io thread"));
	CU_ASSERT_PTR_NOT_NULL(strstr(message, "system call openat"));
}

/* Threads that block every signal (control, PV backends) still report a violation. */
static void test_violation_reported_with_signals_blocked(void)
{
	int pipe_fds[2];
	CU_ASSERT_EQUAL_FATAL(pipe(pipe_fds), 0);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(pipe_fds[1], STDERR_FILENO);
		sigset_t all;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, NULL);
		struct sandbox_options options = { .enabled = true };
		if (sandbox_install_self(SANDBOX_ROLE_CONTROL, &options) < 0)
			_exit(97);
		run_probe(PROBE_EXECVE);
		_exit(0);
	}
	close(pipe_fds[1]);
	char message[1024];
	ssize_t n = read(pipe_fds[0], message, sizeof(message) - 1);
	message[n > 0 ? n : 0] = '\0';
	close(pipe_fds[0]);
	int status = 0;
	CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
	CU_ASSERT_TRUE(WIFEXITED(status));
	CU_ASSERT_EQUAL(WEXITSTATUS(status), KAPSEL_EXIT_SANDBOX_VIOLATION);
	CU_ASSERT_PTR_NOT_NULL(strstr(message, "the control thread"));
}

/* The vCPU may write files only when --stats-file asks it to. */
static void test_vcpu_stats_file_option(void)
{
	pid_t pid = fork();
	if (pid == 0) {
		struct sandbox_options options = { .enabled = true, .vcpu_writes_files = true };
		if (sandbox_install_self(SANDBOX_ROLE_VCPU, &options) < 0)
			_exit(97);
		run_probe(PROBE_OPENAT);
		_exit(0);
	}
	int status = 0;
	CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
	CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* TUNSETIFF (attach a tap, or create one when privileged) only on the
 * control thread of a VM with a tap NIC, which reattaches it after a
 * failed migration; no other thread and no tapless VM's control thread. */
static void test_tunsetiff_only_for_a_tap(void)
{
	char message[1024];
	for (unsigned role = 0; role < SANDBOX_ROLE_COUNT; role++)
		expect((enum sandbox_role)role, PROBE_IOCTL_TUNSETIFF, false);
	static const struct sandbox_options tap = { .enabled = true, .control_attaches_tap = true };
	CU_ASSERT_EQUAL(probe_in_child_with(SANDBOX_ROLE_CONTROL, &tap, PROBE_IOCTL_TUNSETIFF,
					    message, sizeof(message)),
			0);
	CU_ASSERT_EQUAL(probe_in_child_with(SANDBOX_ROLE_IO, &tap, PROBE_IOCTL_TUNSETIFF, message,
					    sizeof(message)),
			KAPSEL_EXIT_SANDBOX_VIOLATION);
	CU_ASSERT_EQUAL(probe_in_child_with(SANDBOX_ROLE_VCPU, &tap, PROBE_IOCTL_TUNSETIFF, message,
					    sizeof(message)),
			KAPSEL_EXIT_SANDBOX_VIOLATION);
}

static void test_parse_user(void)
{
	struct sandbox_options options = { .enabled = true };
	char error[256];
	CU_ASSERT_EQUAL(sandbox_parse_user(&options, "1234:5678", error, sizeof(error)), 0);
	CU_ASSERT_TRUE(options.change_user);
	CU_ASSERT_EQUAL(options.uid, 1234);
	CU_ASSERT_EQUAL(options.gid, 5678);
	CU_ASSERT_EQUAL(sandbox_parse_user(&options, "root", error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(options.uid, 0);
	CU_ASSERT_EQUAL(sandbox_parse_user(&options, "no-such-user-here", error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "no-such-user-here"));
	CU_ASSERT_EQUAL(sandbox_parse_user(&options, "12:x", error, sizeof(error)), -EINVAL);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "vcpu role", test_vcpu_role },
		{ "io role", test_io_role },
		{ "control role", test_control_role },
		{ "save and console roles", test_save_and_console_roles },
		{ "every role refuses escapes", test_every_role_refuses_escapes },
		{ "violation message", test_violation_message },
		{ "violation reported with signals blocked",
		  test_violation_reported_with_signals_blocked },
		{ "vcpu stats file option", test_vcpu_stats_file_option },
		{ "parse user", test_parse_user },
		{ "TUNSETIFF only for a VM with a tap", test_tunsetiff_only_for_a_tap },
	};
	return UNIT_RUN("sandbox", tests);
}
