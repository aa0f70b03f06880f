/* Running a VM until it stops: signals, the save helper thread, the save/snapshot/migrate control verbs, incoming migration. */
#define _GNU_SOURCE
#include "cli/run_supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "control/control.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/output_gate.h"
#include "core/sandbox.h"
#include "core/vm.h"
#include "state/migrate.h"
#include "state/memory_check.h"
#include "state/migrate_transport.h"
#include "state/progress.h"
#include "state/snapshot.h"

/* ---- Saving a running VM -------------------------------------------------- */

struct state_runner {
	struct kapsel_vm *vm;
	char *save_dir;
	bool stop_after_save;
	int pipe_fds[2];
	pthread_t thread;
	bool thread_started;
	bool stopped_by_save;
	pthread_mutex_t lock; /* one save at a time (signal and control verb) */
};

static struct state_runner runner = { .pipe_fds = { -1, -1 }, .lock = PTHREAD_MUTEX_INITIALIZER };

/*
 * A save or migration carries the guest's memory out of the VM: after a
 * lazy restore it waits for that memory's check (output_gate.h), so that
 * a damaged memory.img is never written again under a fresh checksum.
 * Returns 0, or -EIO with a message when the check failed.
 */
static int wait_for_memory_check(struct kapsel_vm *vm, const char *what, char *error,
				 size_t error_len)
{
	if (output_gate_wait() == 0)
		return 0;
	snprintf(error, error_len,
		 "VM '%s' was restored from a memory.img that failed its check; no %s of that memory is made",
		 vm->config->name, what);
	return -EIO;
}

/*
 * Pause, save, then resume or stop.  Returns 0 or -errno with a message.
 * Runs on a thread that is not the vCPU's.
 */
static int save_running_vm(struct kapsel_vm *vm, const char *dir, bool stop, bool snapshot,
			   FILE *report, char *error, size_t error_len)
{
	int err = wait_for_memory_check(vm, snapshot ? "snapshot" : "save", error, error_len);
	if (err)
		return err;
	pthread_mutex_lock(&runner.lock);
	uint64_t start_ns = monotonic_ns();
	err = vm_pause(vm);
	bool was_paused = err == -EALREADY;
	if (err && !was_paused) {
		pthread_mutex_unlock(&runner.lock);
		snprintf(error, error_len, "VM '%s' is not running; nothing to save",
			 vm->config->name);
		return err;
	}
	uint64_t paused_ns = monotonic_ns();
	struct snapshot_save_stats stats;
	state_progress_begin(snapshot ? "snapshot" : "save", 0);
	err = snapshot ? snapshot_take(vm, dir, &stats, error, error_len)
		       : snapshot_save(vm, dir, &stats, error, error_len);
	state_progress_end(err);
	uint64_t saved_ns = monotonic_ns();
	if (!err && stop) {
		runner.stopped_by_save = true;
		vm_request_stop_for(vm, VM_STOP_SAVED);
	}
	if (!was_paused)
		vm_resume(vm);
	uint64_t resumed_ns = monotonic_ns();
	pthread_mutex_unlock(&runner.lock);
	if (!err && report)
		fprintf(report,
			"%s VM '%s' to %s: memory %llu MiB (%llu MiB data), state %llu bytes; pause %.3f ms, write %.3f ms, vCPU stopped %.3f ms%s\n",
			snapshot ? "snapshot of" : "saved", vm->config->name, dir,
			(unsigned long long)(stats.memory_bytes >> 20),
			(unsigned long long)(stats.memory_data_bytes >> 20),
			(unsigned long long)stats.state_bytes, (paused_ns - start_ns) / 1e6,
			(saved_ns - paused_ns) / 1e6, (resumed_ns - start_ns) / 1e6,
			stop ? "; VM stopped" : "");
	return err;
}

static void on_save_signal(int signo)
{
	(void)signo;
	char byte = 's';
	ssize_t n = write(runner.pipe_fds[1], &byte, 1);
	(void)n;
}

static void *runner_thread(void *opaque)
{
	(void)opaque;
	sandbox_thread_role(SANDBOX_ROLE_SAVE);
	for (;;) {
		char byte;
		ssize_t n = read(runner.pipe_fds[0], &byte, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || byte == 'q')
			break;
		char error[512];
		char line[512];
		FILE *report = fmemopen(line, sizeof(line), "w");
		int err = save_running_vm(runner.vm, runner.save_dir, runner.stop_after_save, false,
					  report, error, sizeof(error));
		if (report)
			fclose(report);
		if (err)
			kapsel_error("save on signal failed: %s", error);
		else
			fprintf(stderr, "kapsel: %s", line);
	}
	return NULL;
}

static int control_save(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
			char *error, size_t error_len)
{
	const char *dir = control_request_arg(request, "dir");
	bool stop = false;
	if (!dir || !*dir) {
		snprintf(error, error_len, "save needs dir=PATH (the state directory to write)");
		return -EINVAL;
	}
	int err = control_arg_bool(request, "stop", &stop, error, error_len);
	if (err)
		return err;
	return save_running_vm(vm, dir, stop, false, out, error, error_len);
}

static int control_snapshot(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
			    char *error, size_t error_len)
{
	const char *dir = control_request_arg(request, "dir");
	if (!dir || !*dir) {
		snprintf(error, error_len,
			 "snapshot needs dir=PATH (the state directory to write)");
		return -EINVAL;
	}
	return save_running_vm(vm, dir, false, true, out, error, error_len);
}

static int control_migrate(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
			   char *error, size_t error_len)
{
	static const char *const keys[] = { "uri", "max_downtime_ms", "max_rounds",
					    "psk", "insecure",	      NULL };
	int err = control_request_check_keys(request, keys, error, error_len);
	if (err)
		return err;
	if ((err = wait_for_memory_check(vm, "migration", error, error_len)))
		return err;
	const char *uri = control_request_arg(request, "uri");
	if (!uri || !*uri) {
		snprintf(error, error_len,
			 "migrate needs uri=tcp:HOST:PORT (where 'kapsel run --incoming' listens)");
		return -EINVAL;
	}
	uint64_t downtime = MIGRATE_DEFAULT_MAX_DOWNTIME_MS, rounds = MIGRATE_DEFAULT_MAX_ROUNDS;
	if ((err = control_arg_u64(request, "max_downtime_ms", &downtime, error, error_len)) ||
	    (err = control_arg_u64(request, "max_rounds", &rounds, error, error_len)))
		return err;
	if (downtime < 1 || downtime > MIGRATE_MAX_DOWNTIME_MS_LIMIT) {
		snprintf(error, error_len,
			 "migrate: max_downtime_ms=%llu is out of range; use 1 to %u",
			 (unsigned long long)downtime, MIGRATE_MAX_DOWNTIME_MS_LIMIT);
		return -EINVAL;
	}
	if (rounds < 1 || rounds > MIGRATE_MAX_ROUNDS_LIMIT) {
		snprintf(error, error_len, "migrate: max_rounds=%llu is out of range; use 1 to %u",
			 (unsigned long long)rounds, MIGRATE_MAX_ROUNDS_LIMIT);
		return -EINVAL;
	}
	/* The operator chooses the protection: a key file or, explicitly, none. */
	struct migrate_security chosen = { .mode = MIGRATE_SECURITY_UNSET };
	bool insecure = false;
	const char *psk = control_request_arg(request, "psk");
	if ((err = control_arg_bool(request, "insecure", &insecure, error, error_len)))
		return err;
	if (psk && insecure) {
		snprintf(error, error_len, "migrate takes psk=FILE or insecure=yes, not both");
		return -EINVAL;
	}
	if (psk) {
		if (psk[0] != '/' || strlen(psk) >= sizeof(chosen.psk_path)) {
			snprintf(error, error_len,
				 "migrate: psk= needs an absolute path to the key file (got '%s')",
				 psk);
			return -EINVAL;
		}
		chosen.mode = MIGRATE_SECURITY_PSK;
		snprintf(chosen.psk_path, sizeof(chosen.psk_path), "%s", psk);
	} else if (insecure) {
		chosen.mode = MIGRATE_SECURITY_INSECURE;
	}
	struct migrate_options options = { .max_downtime_ms = (uint32_t)downtime,
					   .max_rounds = (uint32_t)rounds,
					   .security = &chosen };
	struct migrate_stats stats;
	pthread_mutex_lock(&runner.lock);
	state_progress_begin("migrate", options.max_rounds);
	err = migrate_send(vm, uri, &options, &stats, error, error_len);
	state_progress_end(err);
	if (!err)
		runner.stopped_by_save = true; /* it runs elsewhere now: success */
	pthread_mutex_unlock(&runner.lock);
	if (err)
		return err;
	fprintf(out,
		"migrated VM '%s' to %s: %u rounds, %llu pages (%llu zero), %llu in the final round, %llu bytes; downtime %.3f ms, total %.3f ms\n",
		vm->config->name, uri, stats.rounds, (unsigned long long)stats.pages_sent,
		(unsigned long long)stats.zero_pages_sent, (unsigned long long)stats.final_pages,
		(unsigned long long)stats.bytes_sent, stats.downtime_ns / 1e6,
		stats.total_ns / 1e6);
	return 0;
}

/* 'progress': how far the running (or the last) save, snapshot or
 * migration is.  Fast: served on the control thread while the long verb
 * runs on its worker (docs/control.md). */
static int control_progress(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
			    char *error, size_t error_len)
{
	(void)vm;
	static const char *const keys[] = { NULL };
	int err = control_request_check_keys(request, keys, error, error_len);
	if (err)
		return err;
	struct state_progress p;
	state_progress_read(&p);
	if (!p.sequence) {
		fprintf(out, "sequence 0\noperation none\nstate idle\n");
		return 0;
	}
	fprintf(out,
		"sequence %llu\noperation %s\nstate %s\nphase %s\nscanned_bytes %llu\n"
		"total_bytes %llu\nwritten_bytes %llu\nround %u\nmax_rounds %u\n"
		"dirty_bytes %llu\nelapsed_ns %llu\n",
		(unsigned long long)p.sequence, p.operation, p.state,
		p.phase[0] ? p.phase : "start", (unsigned long long)p.scanned_bytes,
		(unsigned long long)p.total_bytes, (unsigned long long)p.written_bytes, p.round,
		p.max_rounds, (unsigned long long)p.dirty_bytes, (unsigned long long)p.elapsed_ns);
	return 0;
}

void run_supervisor_register_control_verbs(void)
{
	static bool registered;
	if (registered)
		return;
	registered = true;
	/* These take long: on worker threads, so that the control socket keeps
	 * answering (info, stats, pause) while they run. */
	int err = control_register_background_verb(
		"save", control_save,
		"save dir=PATH [stop=yes|no]  save the VM's state to a directory, then continue or stop");
	if (err && err != -EEXIST)
		kapsel_warn("cannot register the control verb 'save': %s", strerror(-err));
	err = control_register_background_verb(
		"migrate", control_migrate,
		"migrate uri=tcp:HOST:PORT psk=/KEYFILE|insecure=yes [max_downtime_ms=N] [max_rounds=N]  live-migrate the VM (pre-copy; TLS with a pre-shared key)");
	if (err && err != -EEXIST)
		kapsel_warn("cannot register the control verb 'migrate': %s", strerror(-err));
	err = control_register_background_verb(
		"snapshot", control_snapshot,
		"snapshot dir=PATH  save the VM and freeze its disks; it goes on on copy-on-write overlays");
	if (err && err != -EEXIST)
		kapsel_warn("cannot register the control verb 'snapshot': %s", strerror(-err));
	err = control_register_verb(
		"progress", control_progress,
		"progress  how far the running (or last) save, snapshot or migration is");
	if (err && err != -EEXIST)
		kapsel_warn("cannot register the control verb 'progress': %s", strerror(-err));
}

/*
 * Saving on SIGHUP: start the helper thread that, on each SIGHUP, pauses
 * the vCPU, saves to save_dir and then resumes it, or stops the VM when
 * stop_after_save.  Also registers the control verbs.  save_dir may be
 * NULL (only the control verbs then).  Precondition: vm_run is about to
 * be called on this thread.  Returns 0 or a negative errno (message printed).
 */
static int state_runner_start(struct kapsel_vm *vm, const char *save_dir, bool stop_after_save)
{
	run_supervisor_register_control_verbs();
	runner.vm = vm;
	runner.stopped_by_save = false;
	if (!save_dir)
		return 0;
	runner.save_dir = strdup(save_dir);
	runner.stop_after_save = stop_after_save;
	if (!runner.save_dir || pipe2(runner.pipe_fds, O_CLOEXEC) < 0) {
		kapsel_error("cannot set up saving on a signal: %s", strerror(errno));
		return -errno;
	}
	int err = pthread_create(&runner.thread, NULL, runner_thread, NULL);
	if (err) {
		kapsel_error("cannot start the save thread: %s", strerror(err));
		return -err;
	}
	runner.thread_started = true;
	struct sigaction sa = { .sa_handler = on_save_signal, .sa_flags = SA_RESTART };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGHUP, &sa, NULL);
	return 0;
}

/* After vm_run returned: stop the helper thread.  True if a save or a
 * migration stopped the VM (the run then succeeded). */
static bool state_runner_stop(struct kapsel_vm *vm)
{
	(void)vm;
	if (runner.thread_started) {
		signal(SIGHUP, SIG_IGN);
		char byte = 'q';
		ssize_t n = write(runner.pipe_fds[1], &byte, 1);
		(void)n;
		pthread_join(runner.thread, NULL);
		runner.thread_started = false;
	}
	for (int i = 0; i < 2; i++) {
		if (runner.pipe_fds[i] >= 0)
			close(runner.pipe_fds[i]);
		runner.pipe_fds[i] = -1;
	}
	free(runner.save_dir);
	runner.save_dir = NULL;
	/* A save or migration that stopped the VM may still be finishing on
	 * the control thread: its verdict counts. */
	pthread_mutex_lock(&runner.lock);
	bool stopped_by_save = runner.stopped_by_save;
	runner.vm = NULL;
	pthread_mutex_unlock(&runner.lock);
	return stopped_by_save;
}

/* ---- Running a VM until it stops ------------------------------------------ */

static struct kapsel_vm *running_vm;	     /* for the signal handlers */
static volatile sig_atomic_t stop_signalled; /* SIGINT or SIGTERM asked the VM to stop */

static void on_stop_signal(int signo)
{
	(void)signo;
	stop_signalled = 1;
	/* A vCPU held at the output gate would wait for the whole check. */
	memory_check_abandon();
	if (running_vm)
		vm_request_stop(running_vm);
}

static void on_stats_signal(int signo)
{
	(void)signo;
	if (running_vm)
		vm_request_stats(running_vm);
}

/* End of setup: everything is open; the threads take their sandbox (sandbox.c). */
static int enter_sandbox(struct kapsel_vm *vm)
{
	char error[512];
	sandbox_options.vcpu_writes_files = vm->config->stats_path != NULL;
	sandbox_options.control_attaches_tap = false;
	for (unsigned i = 0; i < vm->config->net_count; i++)
		if (vm->config->nets[i].backend == VM_NET_BACKEND_TAP)
			sandbox_options.control_attaches_tap = true;
	int err = sandbox_enter(&sandbox_options, error, sizeof(error));
	if (err)
		kapsel_error("cannot sandbox the VM (--no-sandbox runs it without, for debugging only): %s",
			     error);
	return err;
}

static int (*on_prepare_fn)(void *opaque);
static void (*on_running_fn)(void *opaque);
static void *on_running_opaque;

void run_supervisor_on_running(int (*prepare)(void *opaque), void (*running)(void *opaque),
			       void *opaque)
{
	on_prepare_fn = prepare;
	on_running_fn = running;
	on_running_opaque = opaque;
}

int run_supervisor_until_stopped(struct kapsel_vm *vm, struct control_server *control,
				 const char *save_dir, bool save_stop, bool print_stats)
{
	int status = KAPSEL_EXIT_VMM_ERROR;
	running_vm = vm;
	stop_signalled = 0;
	struct sigaction stop = { .sa_handler = on_stop_signal };
	sigemptyset(&stop.sa_mask);
	sigaction(SIGINT, &stop, NULL);
	sigaction(SIGTERM, &stop, NULL);
	struct sigaction stats = { .sa_handler = on_stats_signal };
	sigemptyset(&stats.sa_mask);
	sigaction(SIGUSR1, &stats, NULL);
	if (state_runner_start(vm, save_dir, save_stop) == 0 &&
	    (!on_prepare_fn || on_prepare_fn(on_running_opaque) == 0) && enter_sandbox(vm) == 0) {
		if (on_running_fn)
			on_running_fn(on_running_opaque);
		status = vm_run(vm);
		if (state_runner_stop(vm))
			status = 0; /* stopped by --save-stop after a save */
		else if (status == KAPSEL_EXIT_VMM_ERROR &&
			 __atomic_load_n(&vm->stop_requested, __ATOMIC_SEQ_CST) ==
				 VM_STOP_REQUESTED &&
			 (stop_signalled || control_server_destroyed(control)))
			status = KAPSEL_EXIT_STOPPED; /* the operator ended it, not a failure */
		/* What `kapsel control VM wait` reports is what we exit with. */
		vm->exit_code = status;
	}
	/* A lazy restore's memory check: its verdict outranks how the guest
	 * ended (a guest on damaged memory may well crash).  An operator's
	 * stop abandons it. */
	int stop_reason = __atomic_load_n(&vm->stop_requested, __ATOMIC_SEQ_CST);
	if (memory_check_finish(stop_reason == VM_STOP_REQUESTED) == -EPROTO)
		vm->exit_code = status = KAPSEL_EXIT_VMM_ERROR;
	control_server_stop(control);
	if (print_stats)
		vm_print_stats(vm, stderr);
	running_vm = NULL;
	vm_destroy(vm);
	return status;
}

/* ---- An incoming live migration ------------------------------------------- */

int run_supervisor_incoming(const char *uri, const struct vm_config *overrides, bool use_control)
{
	struct kapsel_vm vm;
	struct vm_config config;
	char error[1024];
	int status = KAPSEL_EXIT_VMM_ERROR;

	/* While it waits, 'kapsel list' shows it as "incoming". */
	struct control_incoming *waiting = NULL;
	if (use_control &&
	    control_incoming_register(&waiting, overrides->name, overrides->memory_bytes,
				      overrides->vcpus, uri, error, sizeof(error)) < 0)
		kapsel_warn("'kapsel list' will not show this VM while it waits: %s", error);
	int err = migrate_receive(uri, overrides, &vm, &config, error, sizeof(error));
	control_incoming_unregister(waiting);
	if (err < 0) {
		kapsel_error("incoming migration failed: %s; no VM was started", error);
		vm_config_free(&config);
		return status;
	}
	/* The name is free once the source has stopped, a moment after the
	 * hand-over. */
	struct control_server *control = NULL;
	for (int attempt = 0; use_control && attempt < 40; attempt++) {
		if (control_server_start(&control, config.name, error, sizeof(error)) == 0)
			break;
		control = NULL;
		usleep(50000);
	}
	if (use_control && !control)
		kapsel_warn("the migrated VM runs without a control socket: %s", error);
	if (control && control_server_attach(control, &vm, error, sizeof(error)) < 0) {
		kapsel_warn("the migrated VM runs without a control socket: %s", error);
		control_server_stop(control);
		control = NULL;
	}
	status = run_supervisor_until_stopped(&vm, control, NULL, false, config.print_stats);
	vm_config_free(&config);
	return status;
}
