/* The seccomp allow-list of each thread role, built with libseccomp into BPF programs. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <termios.h>
#include <unistd.h>

#include "core/sandbox.h"

/*
 * Lists of system call names, grouped by what they are for.  A role is a
 * set of groups (roles[] below).  To let a thread do something new, add
 * the call to the group that says why, or a group to its role.  Names
 * this architecture lacks are skipped.  Calls whose arguments are checked
 * (ioctl, clone, rt_sigaction, tgkill, prctl) are in add_checked_rules().
 */

/* What glibc and every thread need: memory, locks, signals, time, exit. */
static const char *const group_base[] = {
	"read",
	"write",
	"readv",
	"writev",
	"pread64",
	"pwrite64",
	"close",
	"lseek",
	"fstat",
	"newfstatat",
	"statx",
	"fcntl",
	"dup",
	"dup3",
	"poll",
	"ppoll",
	"futex",
	"futex_waitv",
	"get_robust_list",
	"set_robust_list",
	"rseq",
	"mmap",
	"munmap",
	"mprotect",
	"mremap",
	"madvise",
	"brk",
	"rt_sigprocmask",
	"rt_sigreturn",
	"sigaltstack",
	"rt_sigtimedwait",
	"clock_gettime",
	"clock_getres",
	"clock_nanosleep",
	"nanosleep",
	"gettimeofday",
	"time",
	"getpid",
	"gettid",
	"getuid",
	"geteuid",
	"getgid",
	"getegid",
	"sched_yield",
	"sched_getaffinity",
	"getrusage",
	"getrandom",
	"exit",
	"exit_group",
	"restart_syscall",
	NULL,
};

/* Eventfds: doorbells, wake-ups (read/write are in base); creating one. */
static const char *const group_eventfd[] = { "eventfd2", NULL };

/* Block I/O on already open files (emulated ATA on the vCPU, PV block). */
static const char *const group_block_io[] = {
	"preadv",    "pwritev",	  "preadv2", "pwritev2", "fsync",
	"fdatasync", "fallocate", "flock",   NULL,
};

/* io_uring of the PV block backend. */
static const char *const group_io_uring[] = { "io_uring_enter", "io_uring_register", NULL };

/* Frames on already open sockets and taps (PV net, NE2000). */
static const char *const group_net_io[] = {
	"sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", NULL,
};

/* Opening, creating and removing files and directories by path. */
static const char *const group_files[] = {
	"openat",   "open",	"mkdir",	   "mkdirat",	   "rmdir",	"unlink",
	"unlinkat", "rename",	"renameat",	   "renameat2",	   "ftruncate", "getdents64",
	"fchmod",   "readlink", "readlinkat",	   "access",	   "faccessat", "faccessat2",
	"getcwd",   "umask",	"copy_file_range", "memfd_create", NULL,
};

/* Removing the control socket, lock and datagram-socket files at teardown. */
static const char *const group_teardown[] = { "unlink", "unlinkat", NULL };

/* Serving and making socket connections (control socket, migration). */
static const char *const group_sockets[] = {
	"socket",      "connect",     "bind",	    "listen",	  "accept", "accept4", "shutdown",
	"getsockname", "getpeername", "getsockopt", "setsockopt", "pipe2",  "uname",   NULL,
};

/* The per-vCPU PV timer (core/pv_cpu.c): a POSIX timer signalling the vCPU
 * thread, created on the guest's first TIMER_SET. */
static const char *const group_vcpu_timer[] = {
	"timer_create", "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete", NULL,
};

/* Flags of the checked rules a role gets. */
enum {
	CHECK_IOCTL_KVM = 1u << 0,	  /* ioctl with a KVM request (type 0xAE) */
	CHECK_IOCTL_TTY = 1u << 1,	  /* terminal queries and modes */
	CHECK_CLONE_THREAD = 1u << 2,	  /* clone for threads only; clone3 says ENOSYS */
	CHECK_URING_UNREGISTER = 1u << 3, /* teardown of a PV block ring: unregister only */
	CHECK_IOCTL_TUNSETIFF =
		1u << 4, /* control, with a tap NIC: a failed migration attaches it again */
};

struct role_definition {
	const char *const *groups[8];
	unsigned checks;
};

static const struct role_definition roles[SANDBOX_ROLE_COUNT] = {
	[SANDBOX_ROLE_VCPU] = {
		.groups = { group_base, group_eventfd, group_block_io, group_net_io,
			    group_teardown, group_vcpu_timer },
		.checks = CHECK_IOCTL_KVM | CHECK_IOCTL_TTY | CHECK_URING_UNREGISTER,
	},
	[SANDBOX_ROLE_IO] = {
		.groups = { group_base, group_eventfd, group_block_io, group_io_uring,
			    group_net_io },
	},
	[SANDBOX_ROLE_CONTROL] = {
		.groups = { group_base, group_eventfd, group_block_io, group_io_uring,
			    group_net_io, group_files, group_sockets, group_vcpu_timer },
		.checks = CHECK_IOCTL_KVM | CHECK_CLONE_THREAD,
	},
	[SANDBOX_ROLE_SAVE] = {
		.groups = { group_base, group_eventfd, group_block_io, group_io_uring,
			    group_files },
		.checks = CHECK_IOCTL_KVM,
	},
	[SANDBOX_ROLE_CONSOLE] = {
		.groups = { group_base },
		.checks = CHECK_IOCTL_TTY,
	},
	/* pread and lseek(SEEK_DATA) on memory.img, open before; fcntl for
	 * its read lease, madvise to copy RAM out of it, sigwaitinfo for the
	 * lease break; a vCPU kick (tgkill, in every role) when it is damaged. */
	[SANDBOX_ROLE_MEMORY_CHECK] = {
		.groups = { group_base },
	},
};

static int add_group(scmp_filter_ctx ctx, const char *const *names)
{
	for (; *names; names++) {
		int nr = seccomp_syscall_resolve_name(*names);
		if (nr == __NR_SCMP_ERROR)
			continue; /* not on this architecture */
		int err = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
		if (err < 0)
			return err;
	}
	return 0;
}

static int add_checked_rules(scmp_filter_ctx ctx, unsigned checks)
{
	int err = 0;
	/* No thread may replace the SIGSYS reporter (it would hide a violation). */
	err = err
		      ?: seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(rt_sigaction), 1,
					  SCMP_A0(SCMP_CMP_NE, SIGSYS));
	/* Signals only to threads of this process (pthread_kill, cancel). */
	err = err
		      ?: seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
					  SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid()));
	/* Thread names only. */
	err = err
		      ?: seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
					  SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME));
	if (checks & CHECK_IOCTL_KVM)
		err = err
			      ?: seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
						  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xff00u, KVMIO << 8));
	if (checks & CHECK_IOCTL_TUNSETIFF)
		err = err
			      ?: seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
						  SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)TUNSETIFF));
	if (checks & CHECK_IOCTL_TTY) {
		static const unsigned long requests[] = { TCGETS,  TCSETS,     TCSETSW,
							  TCSETSF, TIOCGWINSZ, FIONREAD };
		for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++)
			err = err
				      ?: seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
							  SCMP_A1(SCMP_CMP_EQ, requests[i]));
	}
	if (checks & CHECK_URING_UNREGISTER) {
		/* liburing's io_uring_queue_exit and io_uring_unregister_files. */
		err = err
			      ?: seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(io_uring_register),
						  1, SCMP_A1(SCMP_CMP_EQ, IORING_UNREGISTER_FILES));
		err = err
			      ?: seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(io_uring_register),
						  1,
						  SCMP_A1(SCMP_CMP_EQ, IORING_UNREGISTER_RING_FDS));
	}
	/* clone3's flags are behind a pointer: refused, so glibc falls back to clone. */
	err = err ?: seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (checks & CHECK_CLONE_THREAD) {
		/* A thread shares everything; a new process or namespace traps. */
		err = err
			      ?: seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
						  SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD,
							  CLONE_THREAD));
	} else {
		/* pthread_create blocks every signal around clone, so a trap there
		 * could not report: a role that starts no thread gets an error. */
		err = err
			      ?: seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
						  SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD,
							  CLONE_THREAD));
	}
	return err;
}

static int add_role(scmp_filter_ctx ctx, enum sandbox_role role,
		    const struct sandbox_options *options)
{
	const struct role_definition *def = &roles[role];
	int err = 0;
	for (unsigned i = 0; !err && i < sizeof(def->groups) / sizeof(def->groups[0]); i++)
		if (def->groups[i])
			err = add_group(ctx, def->groups[i]);
	unsigned checks = def->checks;
	/* --stats-file: the vCPU thread writes the counters to a new file. */
	if (!err && role == SANDBOX_ROLE_VCPU && options && options->vcpu_writes_files)
		err = add_group(ctx, group_files);
	/* A VM with a tap NIC: a failed migration attaches it again (only
	 * then: TUNSETIFF also attaches other taps or, privileged, makes new
	 * ones). */
	if (role == SANDBOX_ROLE_CONTROL && options && options->control_attaches_tap)
		checks |= CHECK_IOCTL_TUNSETIFF;
	return err ?: add_checked_rules(ctx, checks);
}

int sandbox_build_filter(enum sandbox_role role, const struct sandbox_options *options,
			 struct sock_fprog *out)
{
	if ((unsigned)role >= SANDBOX_ROLE_COUNT)
		return -EINVAL;
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);
	if (!ctx)
		return -ENOMEM;
	int err = 0, fd = -1;
	/* Threads install their own filters; no_new_privs is set by the caller. */
	err = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	if (role == SANDBOX_ROLE_NONE) {
		/* A thread that never named its role may do what any role may. */
		unsigned checks = 0;
		for (unsigned r = SANDBOX_ROLE_VCPU; !err && r < SANDBOX_ROLE_COUNT; r++) {
			const struct role_definition *def = &roles[r];
			for (unsigned i = 0;
			     !err && i < sizeof(def->groups) / sizeof(def->groups[0]); i++)
				if (def->groups[i])
					err = add_group(ctx, def->groups[i]);
			checks |= def->checks;
		}
		if (options && options->control_attaches_tap)
			checks |= CHECK_IOCTL_TUNSETIFF;
		err = err ?: add_group(ctx, group_files);
		err = err ?: add_checked_rules(ctx, checks);
	} else {
		err = err ?: add_role(ctx, role, options);
	}
	if (err)
		goto out;
	fd = memfd_create("kapsel-seccomp", MFD_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	err = seccomp_export_bpf(ctx, fd);
	if (err)
		goto out;
	off_t size = lseek(fd, 0, SEEK_END);
	if (size <= 0 || size % (off_t)sizeof(struct sock_filter) ||
	    size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
		err = -E2BIG;
		goto out;
	}
	struct sock_filter *program = malloc((size_t)size);
	if (!program) {
		err = -ENOMEM;
		goto out;
	}
	if (pread(fd, program, (size_t)size, 0) != size) {
		free(program);
		err = -EIO;
		goto out;
	}
	out->filter = program;
	out->len = (unsigned short)(size / (off_t)sizeof(struct sock_filter));
out:
	if (fd >= 0)
		close(fd);
	seccomp_release(ctx);
	return err;
}
