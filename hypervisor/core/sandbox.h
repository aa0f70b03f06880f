/* The VMM's sandbox: per-thread seccomp allow-lists by role, no_new_privs, privilege drop and jail. */
#ifndef KAPSEL_SANDBOX_H
#define KAPSEL_SANDBOX_H

#include <linux/filter.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* What `kapsel run` exits with when a thread made a system call its role forbids. */
#define KAPSEL_EXIT_SANDBOX_VIOLATION 122

/*
 * What a thread does decides which system calls it may make once the VM
 * runs (sandbox_filters.c holds the lists).  A thread names its role with
 * sandbox_thread_role() when it starts; the main thread becomes the vCPU.
 */
enum sandbox_role {
	SANDBOX_ROLE_NONE,    /* a thread that never named a role: union of all roles */
	SANDBOX_ROLE_VCPU,    /* the main thread: KVM_RUN, emulated devices, teardown */
	SANDBOX_ROLE_IO,      /* PV block and PV net backends: io_uring, sockets, eventfds */
	SANDBOX_ROLE_CONTROL, /* control socket server; runs save, snapshot and migrate verbs */
	SANDBOX_ROLE_SAVE,    /* --save-on-signal writer: VM state files */
	SANDBOX_ROLE_CONSOLE, /* console input (and output) threads */
	/* the check of a lazily restored memory.img: reads an open file */
	SANDBOX_ROLE_MEMORY_CHECK,
	SANDBOX_ROLE_COUNT
};

struct sandbox_options {
	bool enabled;		/* default true; --no-sandbox (debugging only) clears it */
	bool change_user;	/* --user given: switch to uid/gid */
	uid_t uid;		/* with change_user */
	gid_t gid;		/* with change_user */
	const char *jail_dir;	/* --jail DIR, or NULL */
	bool vcpu_writes_files; /* --stats-file: the vCPU thread creates and renames a file */
	/* A tap NIC: the control thread may TUNSETIFF (a failed migration
	 * attaches the tap again). */
	bool control_attaches_tap;
};

/* The options of this process, filled by the command line (defaults: enabled, no jail). */
extern struct sandbox_options sandbox_options;

/* Command-line options of `kapsel run` and `kapsel restore` (getopt_long values). */
enum {
	SANDBOX_OPT_NO_SANDBOX = 0x5b00,
	SANDBOX_OPT_USER,
	SANDBOX_OPT_JAIL
};
#define SANDBOX_LONG_OPTIONS                                           \
	{ "no-sandbox", no_argument, NULL, SANDBOX_OPT_NO_SANDBOX },   \
		{ "user", required_argument, NULL, SANDBOX_OPT_USER }, \
	{                                                              \
		"jail", required_argument, NULL, SANDBOX_OPT_JAIL      \
	}
#define SANDBOX_USAGE                                                                        \
	"      --user USER|UID[:GID]  started as root: run as this user once the VM's\n"     \
	"                           files are open (default: stay uid 0, no capabilities)\n" \
	"      --jail DIR           chroot into DIR (own mount namespace) after setup;\n"    \
	"                           paths named later (save dir=...) are inside DIR\n"       \
	"      --no-sandbox         no seccomp filters, no privilege drop (debugging only)\n"

/*
 * Handle one of SANDBOX_LONG_OPTIONS into sandbox_options (--jail makes a
 * private mount namespace now: call while the process has one thread).
 * Prints what is wrong and returns a negative errno on a bad value.
 */
int sandbox_cli_option(int option, const char *arg);

/* "vcpu", "io", ... for messages. */
const char *sandbox_role_name(enum sandbox_role role);

/*
 * Parse --user USER or --user UID[:GID] into options (a name is looked up
 * in the password database now, before any jail).  Returns 0, or -EINVAL
 * with a message in error.
 */
int sandbox_parse_user(struct sandbox_options *options, const char *spec, char *error,
		       size_t error_len);

/*
 * Name the calling thread's role and let the sandbox reach it.  Call first
 * thing in a thread's start routine (after it sets its signal mask).  If the
 * sandbox is already in force, installs the role's filter on this thread
 * now (on top of what it inherited); otherwise sandbox_enter() does it.
 */
void sandbox_thread_role(enum sandbox_role role);

/*
 * End of setup, on the main thread, with every file, device and socket
 * the VM needs open: enter the jail (chroot, if configured), switch user,
 * drop every capability in every thread, set no_new_privs and install in
 * each thread of the process the seccomp filter of its role; the main
 * thread takes SANDBOX_ROLE_VCPU.  A forbidden system call then traps: the
 * process prints the thread's role and the call, and exits with
 * KAPSEL_EXIT_SANDBOX_VIOLATION.  Does nothing when options are disabled.
 * Returns 0, or a negative errno with a message in error (the caller must
 * then not run the guest).
 */
int sandbox_enter(const struct sandbox_options *options, char *error, size_t error_len);

/* True once sandbox_enter() succeeded with the sandbox enabled. */
bool sandbox_active(void);

/*
 * Build the BPF program of role (a malloc'd filter in out->filter; free
 * it).  Exposed for tests.  Returns 0 or a negative errno.
 */
int sandbox_build_filter(enum sandbox_role role, const struct sandbox_options *options,
			 struct sock_fprog *out);

/*
 * Install role's filter on the calling thread only, with the SIGSYS
 * reporter and no_new_privs; for tests in a forked single-threaded child.
 * Returns 0 or a negative errno.
 */
int sandbox_install_self(enum sandbox_role role, const struct sandbox_options *options);

#endif
