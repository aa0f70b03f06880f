/* Entering the sandbox at the end of setup: jail, user and capability drop, per-thread seccomp filters. */
#define _GNU_SOURCE
#include "core/sandbox.h"

#include <cap-ng.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

struct sandbox_options sandbox_options = { .enabled = true };

static const char *const role_names[SANDBOX_ROLE_COUNT] = {
	[SANDBOX_ROLE_NONE] = "unnamed",
	[SANDBOX_ROLE_VCPU] = "vcpu",
	[SANDBOX_ROLE_IO] = "io",
	[SANDBOX_ROLE_CONTROL] = "control",
	[SANDBOX_ROLE_SAVE] = "save",
	[SANDBOX_ROLE_CONSOLE] = "console",
	[SANDBOX_ROLE_MEMORY_CHECK] = "memory-check",
};

#define SANDBOX_SYSCALL_NAMES 512
#define SANDBOX_MAX_THREADS 256
#define SANDBOX_ARM_TIMEOUT_S 30     /* only a thread that never answers waits this long */
#define ARM_WAIT_SLICE_NS 100000000L /* how often the wait looks for threads that are gone */

static __thread enum sandbox_role thread_role;
static bool active;
static struct sock_fprog programs[SANDBOX_ROLE_COUNT];
static char *syscall_names[SANDBOX_SYSCALL_NAMES]; /* for the SIGSYS report */
static enum sandbox_role test_violation_role;	   /* KAPSEL_SANDBOX_TEST_VIOLATION */
static sem_t arm_done;
static int arm_failures;		      /* atomic: threads whose filter did not install */
static pid_t armed_tids[SANDBOX_MAX_THREADS]; /* threads that answered, for error messages */
static unsigned armed_count;		      /* atomic */

/* The signal that asks a thread to install its own filter (filters are per thread). */
static int arm_signal(void)
{
	return SIGRTMIN + 4;
}

const char *sandbox_role_name(enum sandbox_role role)
{
	return (unsigned)role < SANDBOX_ROLE_COUNT ? role_names[role] : "unknown";
}

bool sandbox_active(void)
{
	return active;
}

int sandbox_parse_user(struct sandbox_options *options, const char *spec, char *error,
		       size_t error_len)
{
	char *end;
	errno = 0;
	unsigned long uid = strtoul(spec, &end, 10);
	if (end != spec && !errno && uid < (unsigned long)(uid_t)-1 &&
	    (*end == '\0' || *end == ':')) {
		unsigned long gid = uid;
		if (*end == ':') {
			const char *g = end + 1;
			gid = strtoul(g, &end, 10);
			if (end == g || *end || errno || gid >= (unsigned long)(gid_t)-1)
				goto bad;
		} else {
			struct passwd *pw = getpwuid((uid_t)uid);
			if (pw)
				gid = pw->pw_gid;
		}
		options->uid = (uid_t)uid;
		options->gid = (gid_t)gid;
		options->change_user = true;
		return 0;
	}
	struct passwd *pw = getpwnam(spec);
	if (pw) {
		options->uid = pw->pw_uid;
		options->gid = pw->pw_gid;
		options->change_user = true;
		return 0;
	}
bad:
	snprintf(error, error_len,
		 "--user '%s' is neither a user of this host nor UID[:GID]; give e.g. --user nobody or --user 1000:1000",
		 spec);
	return -EINVAL;
}

/* ---- What runs in each thread (async-signal-safe) ----------------------- */

static size_t append(char *buf, size_t at, size_t size, const char *text)
{
	while (*text && at + 1 < size)
		buf[at++] = *text++;
	return at;
}

static size_t append_number(char *buf, size_t at, size_t size, unsigned long value)
{
	char digits[24];
	int n = 0;
	do
		digits[n++] = (char)('0' + value % 10);
	while ((value /= 10) && n < (int)sizeof(digits));
	while (n > 0 && at + 1 < size)
		buf[at++] = digits[--n];
	return at;
}

/* A forbidden system call: say which thread made which call, and stop. */
static void on_sigsys(int signo, siginfo_t *info, void *context)
{
	(void)signo;
	(void)context;
	char line[512];
	size_t at = 0;
	unsigned nr = (unsigned)info->si_syscall;
	at = append(line, at, sizeof(line), "kapsel: sandbox: the ");
	at = append(line, at, sizeof(line), sandbox_role_name(thread_role));
	at = append(line, at, sizeof(line), " thread (tid ");
	at = append_number(line, at, sizeof(line), (unsigned long)syscall(SYS_gettid));
	at = append(line, at, sizeof(line), ") made the system call ");
	at = append(line, at, sizeof(line),
		    nr < SANDBOX_SYSCALL_NAMES && syscall_names[nr] ? syscall_names[nr] : "?");
	at = append(line, at, sizeof(line), " (");
	at = append_number(line, at, sizeof(line), nr);
	at = append(
		line, at, sizeof(line),
		"), which its seccomp allow-list forbids; the VM is stopped (exit status 122). "
		"If Kapsel itself needs this call, report it; --no-sandbox turns the sandbox off for debugging only.\n");
	ssize_t written = write(STDERR_FILENO, line, at);
	(void)written;
	_exit(KAPSEL_EXIT_SANDBOX_VIOLATION);
}

/* Drop this thread's capabilities, set no_new_privs, install role's filter. */
static int install_on_this_thread(enum sandbox_role role)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &header, data) < 0)
		return -errno;
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); /* none raised: no error */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &programs[role]) < 0)
		return -errno;
	return 0;
}

/* KAPSEL_SANDBOX_TEST_VIOLATION=ROLE: that thread makes a forbidden call once filtered. */
static void run_test_violation(enum sandbox_role role)
{
	if (role == SANDBOX_ROLE_NONE || role != test_violation_role)
		return;
	if (role == SANDBOX_ROLE_CONTROL || role == SANDBOX_ROLE_SAVE) {
		/* These may open files; none may start a program. */
		static char *const argv[] = { "/bin/true", NULL };
		syscall(SYS_execve, "/bin/true", argv, argv + 1);
	} else {
		int fd = (int)syscall(SYS_openat, AT_FDCWD, "/etc/passwd", O_RDONLY | O_CLOEXEC);
		if (fd >= 0)
			close(fd);
	}
}

static void on_arm_signal(int signo, siginfo_t *info, void *context)
{
	(void)signo;
	(void)info;
	int saved_errno = errno;
	/* A trap while SIGSYS is blocked kills without a report: unblock it
	 * now and in the mask this thread returns to. */
	sigset_t sigsys;
	sigemptyset(&sigsys);
	sigaddset(&sigsys, SIGSYS);
	pthread_sigmask(SIG_UNBLOCK, &sigsys, NULL);
	sigdelset(&((ucontext_t *)context)->uc_sigmask, SIGSYS);
	if (install_on_this_thread(thread_role) < 0)
		__atomic_add_fetch(&arm_failures, 1, __ATOMIC_SEQ_CST);
	unsigned slot = __atomic_fetch_add(&armed_count, 1, __ATOMIC_SEQ_CST);
	if (slot < SANDBOX_MAX_THREADS)
		armed_tids[slot] = (pid_t)syscall(SYS_gettid);
	sem_post(&arm_done);
	run_test_violation(thread_role);
	errno = saved_errno;
}

void sandbox_thread_role(enum sandbox_role role)
{
	thread_role = role;
	if (__atomic_load_n(&active, __ATOMIC_ACQUIRE)) {
		sigset_t sigsys;
		sigemptyset(&sigsys);
		sigaddset(&sigsys, SIGSYS);
		pthread_sigmask(SIG_UNBLOCK, &sigsys, NULL);
		/* Started after setup: add this role's filter to the inherited one. */
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &programs[role]) == 0)
			run_test_violation(role);
		return;
	}
	/* sandbox_enter() signals this thread to install its filter; SIGSYS
	 * must get through to report a violation. */
	sigset_t arm;
	sigemptyset(&arm);
	sigaddset(&arm, arm_signal());
	sigaddset(&arm, SIGSYS);
	pthread_sigmask(SIG_UNBLOCK, &arm, NULL);
}

/* ---- Entering the sandbox (main thread) --------------------------------- */

static int prepare_programs(const struct sandbox_options *options)
{
	for (unsigned r = 0; r < SANDBOX_ROLE_COUNT; r++) {
		if (programs[r].filter)
			continue;
		int err = sandbox_build_filter((enum sandbox_role)r, options, &programs[r]);
		if (err)
			return err;
	}
	for (unsigned nr = 0; nr < SANDBOX_SYSCALL_NAMES; nr++)
		if (!syscall_names[nr])
			syscall_names[nr] =
				seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, (int)nr);
	struct sigaction sa = { .sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSYS, &sa, NULL) < 0)
		return -errno;
	return 0;
}

int sandbox_install_self(enum sandbox_role role, const struct sandbox_options *options)
{
	if ((unsigned)role >= SANDBOX_ROLE_COUNT)
		return -EINVAL;
	int err = prepare_programs(options);
	if (err)
		return err;
	thread_role = role;
	sigset_t sigsys;
	sigemptyset(&sigsys);
	sigaddset(&sigsys, SIGSYS);
	pthread_sigmask(SIG_UNBLOCK, &sigsys, NULL);
	return install_on_this_thread(role);
}

static void *cancel_probe(void *opaque)
{
	__atomic_store_n((pid_t *)opaque, (pid_t)syscall(SYS_gettid), __ATOMIC_SEQ_CST);
	for (;;)
		pause();
	return NULL;
}

/* True while thread tid of this process still exists (it may be exiting:
 * pthread_join returns before the kernel has released the thread, which
 * /proc/self/task then still lists). */
static bool thread_exists(pid_t tid)
{
	return syscall(SYS_tgkill, getpid(), tid, 0) == 0 || errno != ESRCH;
}

/*
 * glibc loads its unwinder (libgcc_s) on the first pthread_cancel, which
 * needs open() and may find no library inside a jail: load it now.
 */
static void preload_cancel_support(void)
{
	pthread_t thread;
	pid_t tid = 0;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int err = pthread_create(&thread, NULL, cancel_probe, &tid);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		return;
	while (!__atomic_load_n(&tid, __ATOMIC_SEQ_CST))
		sched_yield();
	pthread_cancel(thread);
	pthread_join(thread, NULL);
	/* Gone for good before sandbox_enter lists the threads to arm: an
	 * exiting thread would be listed and never answer (seen on loaded
	 * hosts as "thread 'kapsel' did not install its seccomp filter"). */
	for (int i = 0; i < 10000 && thread_exists(tid); i++)
		usleep(100);
}

static void thread_name(pid_t tid, char *name, size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/comm", (int)tid);
	snprintf(name, len, "?");
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	if (fgets(name, (int)len, f))
		name[strcspn(name, "\n")] = '\0';
	fclose(f);
}

static bool thread_armed(pid_t tid)
{
	unsigned answered = __atomic_load_n(&armed_count, __ATOMIC_SEQ_CST);
	for (unsigned j = 0; j < answered && j < SANDBOX_MAX_THREADS; j++)
		if (armed_tids[j] == tid)
			return true;
	return false;
}

/* The listed threads that still exist and have not installed a filter. */
static unsigned unarmed_living_threads(const pid_t *tids, unsigned count)
{
	unsigned left = 0;
	for (unsigned i = 0; i < count; i++)
		left += !thread_armed(tids[i]) && thread_exists(tids[i]);
	return left;
}

static int report_silent_threads(const pid_t *tids, char (*names)[16], unsigned count, char *error,
				 size_t error_len)
{
	const char *silent = "?";
	for (unsigned i = 0; i < count; i++) {
		if (!thread_armed(tids[i]) && thread_exists(tids[i])) {
			silent = names[i];
			break;
		}
	}
	snprintf(error, error_len,
		 "thread '%s' did not install its seccomp filter within %d s: it blocks signals; call sandbox_thread_role() at the start of its thread function",
		 silent, SANDBOX_ARM_TIMEOUT_S);
	return -ETIMEDOUT;
}

int sandbox_cli_option(int option, const char *arg)
{
	char error[256];
	switch (option) {
	case SANDBOX_OPT_NO_SANDBOX:
		sandbox_options.enabled = false;
		return 0;
	case SANDBOX_OPT_USER:
		if (sandbox_parse_user(&sandbox_options, arg, error, sizeof(error)) < 0) {
			fprintf(stderr, "kapsel: %s\n", error);
			return -EINVAL;
		}
		return 0;
	case SANDBOX_OPT_JAIL: {
		struct stat st;
		if (arg[0] != '/' || stat(arg, &st) < 0 || !S_ISDIR(st.st_mode)) {
			fprintf(stderr,
				"kapsel: --jail '%s' must be an absolute path to an existing directory (the VMM's new root)\n",
				arg);
			return -EINVAL;
		}
		/* Still one thread: every thread made later shares this private mount namespace. */
		if (unshare(CLONE_NEWNS) < 0 ||
		    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
			fprintf(stderr,
				"kapsel: --jail needs its own mount namespace and could not make one: %s (start Kapsel as root)\n",
				strerror(errno));
			return -errno;
		}
		sandbox_options.jail_dir = arg;
		return 0;
	}
	}
	return -EINVAL;
}

int sandbox_enter(const struct sandbox_options *options, char *error, size_t error_len)
{
	if (!options->enabled)
		return 0;
	const char *test_role = getenv("KAPSEL_SANDBOX_TEST_VIOLATION");
	for (unsigned r = 1; test_role && r < SANDBOX_ROLE_COUNT; r++)
		if (strcmp(test_role, role_names[r]) == 0)
			test_violation_role = (enum sandbox_role)r;

	int err = prepare_programs(options);
	if (err) {
		snprintf(error, error_len, "cannot build the seccomp filters: %s", strerror(-err));
		return err;
	}
	preload_cancel_support();
	struct sigaction sa = { .sa_sigaction = on_arm_signal,
				.sa_flags = SA_RESTART | SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	if (sigaction(arm_signal(), &sa, NULL) < 0 || sem_init(&arm_done, 0, 0) < 0) {
		snprintf(error, error_len, "cannot set up the sandbox signal: %s", strerror(errno));
		return -errno;
	}

	/* The other threads, listed while /proc is still in view. */
	pid_t tids[SANDBOX_MAX_THREADS];
	char names[SANDBOX_MAX_THREADS][16];
	unsigned count = 0;
	pid_t self = (pid_t)syscall(SYS_gettid);
	DIR *tasks = opendir("/proc/self/task");
	if (!tasks) {
		snprintf(error, error_len,
			 "cannot list this process's threads in /proc/self/task: %s; is /proc mounted?",
			 strerror(errno));
		return -errno;
	}
	for (struct dirent *e; (e = readdir(tasks));) {
		pid_t tid = (pid_t)atoi(e->d_name);
		if (tid <= 0 || tid == self)
			continue;
		if (count == SANDBOX_MAX_THREADS) {
			closedir(tasks);
			snprintf(error, error_len, "more than %d threads: cannot sandbox them all",
				 SANDBOX_MAX_THREADS);
			return -E2BIG;
		}
		thread_name(tid, names[count], sizeof(names[count]));
		tids[count++] = tid;
	}
	closedir(tasks);

	if (options->jail_dir) {
		if (chroot(options->jail_dir) < 0 || chdir("/") < 0) {
			snprintf(error, error_len,
				 "cannot enter the jail --jail '%s': %s (needs root)",
				 options->jail_dir, strerror(errno));
			return -errno;
		}
	}
	if (options->change_user) {
		capng_clear(CAPNG_SELECT_BOTH);
		if (capng_change_id((int)options->uid, (int)options->gid,
				    CAPNG_DROP_SUPP_GRP | CAPNG_CLEAR_BOUNDING) < 0) {
			snprintf(error, error_len,
				 "cannot switch to uid %u gid %u (--user): Kapsel must start as root to change user",
				 (unsigned)options->uid, (unsigned)options->gid);
			return -EPERM;
		}
	} else if (geteuid() == 0) {
		/* Root stays uid 0 but keeps no capability (see docs/sandbox.md). */
		capng_clear(CAPNG_SELECT_BOTH);
		if (capng_apply(CAPNG_SELECT_BOTH) < 0) {
			snprintf(error, error_len, "cannot drop capabilities");
			return -EPERM;
		}
	}

	/* Each thread installs its own filter: seccomp filters are per thread. */
	unsigned signalled = 0;
	for (unsigned i = 0; i < count; i++)
		if (syscall(SYS_tgkill, getpid(), tids[i], arm_signal()) == 0)
			signalled++;
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += SANDBOX_ARM_TIMEOUT_S;
	/* Wait for every signalled thread to answer, or to be gone: a thread
	 * that was exiting when it was listed never answers. */
	for (unsigned answered = 0; answered < signalled;) {
		struct timespec slice;
		clock_gettime(CLOCK_REALTIME, &slice);
		slice.tv_nsec += ARM_WAIT_SLICE_NS;
		if (slice.tv_nsec >= 1000000000L) {
			slice.tv_sec++;
			slice.tv_nsec -= 1000000000L;
		}
		bool last = slice.tv_sec > deadline.tv_sec ||
			    (slice.tv_sec == deadline.tv_sec && slice.tv_nsec >= deadline.tv_nsec);
		if (sem_timedwait(&arm_done, last ? &deadline : &slice) == 0) {
			answered++;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (unarmed_living_threads(tids, count) == 0)
			break;
		if (last)
			return report_silent_threads(tids, names, count, error, error_len);
	}
	if (__atomic_load_n(&arm_failures, __ATOMIC_SEQ_CST)) {
		snprintf(error, error_len,
			 "%d threads could not install their seccomp filter; does this kernel have seccomp filters (CONFIG_SECCOMP_FILTER)?",
			 arm_failures);
		return -EPERM;
	}
	thread_role = SANDBOX_ROLE_VCPU;
	err = install_on_this_thread(SANDBOX_ROLE_VCPU);
	if (err) {
		snprintf(error, error_len, "cannot install the vCPU thread's seccomp filter: %s",
			 strerror(-err));
		return err;
	}
	__atomic_store_n(&active, true, __ATOMIC_RELEASE);
	run_test_violation(SANDBOX_ROLE_VCPU);
	return 0;
}
