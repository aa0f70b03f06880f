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

/* What a save, snapshot or live save is asked to do. */
struct save_request {
	const char *dir;
	bool stop;     /* stop the VM after the save */
	bool snapshot; /* freeze the disks; the VM goes on on overlays */
	/* Live (pre-copy while the vCPU runs): 1 yes, 0 no, -1 the default,
	 * which is live unless the VM stops after the save: a VM that goes
	 * on gains from running meanwhile; one that stops gains nothing, and
	 * a plain save writes memory once instead of in rounds. */
	int live;
	uint32_t max_rounds, max_downtime_ms; /* live: 0 for the defaults */
	bool track;			      /* live: keep tracking dirty pages for a later diff */
	bool diff; /* live: only the pages changed since the tracked state */
};

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
 * Save, then resume or stop.  Returns 0 or -errno with a message.  Runs
 * on a thread that is not the vCPU's.
 */
static int save_running_vm(struct kapsel_vm *vm, const struct save_request *req, FILE *report,
			   char *error, size_t error_len)
{
	int err = wait_for_memory_check(vm, req->snapshot ? "snapshot" : "save", error, error_len);
	if (err)
		return err;
	bool live = req->live < 0 ? !req->stop : req->live != 0;
	pthread_mutex_lock(&runner.lock);
	uint64_t start_ns = monotonic_ns();
	struct snapshot_save_stats stats;
	uint64_t paused_ns = start_ns, saved_ns, resumed_ns;
	if (live) {
		state_progress_begin(req->snapshot ? "snapshot" : "save",
				     req->max_rounds ? req->max_rounds
						     : SNAPSHOT_LIVE_DEFAULT_MAX_ROUNDS);
		struct snapshot_save_options options = { .max_rounds = req->max_rounds,
							 .max_downtime_ms = req->max_downtime_ms,
							 .keep_paused = req->stop,
							 .track = req->track,
							 .diff = req->diff };
		err = snapshot_save_live(vm, req->dir, req->snapshot, &options, &stats, error,
					 error_len);
		if (err == -ESRCH)
			snprintf(error, error_len, "VM '%s' is not running; nothing to save",
				 vm->config->name);
		state_progress_end(err);
		saved_ns = monotonic_ns();
		if (!err && req->stop) {
			runner.stopped_by_save = true;
			vm_request_stop_for(vm, VM_STOP_SAVED);
		}
		if (stats.left_paused) {
			vm_resume(vm);
			stats.vcpu_stopped_ns = monotonic_ns() - stats.pause_start_ns;
		}
		resumed_ns = monotonic_ns();
	} else {
		err = vm_pause(vm);
		bool was_paused = err == -EALREADY;
		if (err && !was_paused) {
			pthread_mutex_unlock(&runner.lock);
			snprintf(error, error_len, "VM '%s' is not running; nothing to save",
				 vm->config->name);
			return err;
		}
		paused_ns = monotonic_ns();
		state_progress_begin(req->snapshot ? "snapshot" : "save", 0);
		err = req->snapshot ? snapshot_take(vm, req->dir, &stats, error, error_len)
				    : snapshot_save(vm, req->dir, &stats, error, error_len);
		state_progress_end(err);
		saved_ns = monotonic_ns();
		if (!err && req->stop) {
			runner.stopped_by_save = true;
			vm_request_stop_for(vm, VM_STOP_SAVED);
		}
		if (!was_paused)
			vm_resume(vm);
		resumed_ns = monotonic_ns();
		stats.vcpu_stopped_ns = was_paused ? 0 : resumed_ns - start_ns;
	}
	pthread_mutex_unlock(&runner.lock);
	if (err || !report)
		return err;
	const char *what = req->snapshot ? "snapshot of" : "saved";
	char diff[96] = "";
	if (live && stats.diff)
		snprintf(diff, sizeof(diff), ", diff %u of its chain: %llu pages", stats.depth,
			 (unsigned long long)stats.diff_pages);
	if (live)
		fprintf(report,
			"%s VM '%s' to %s: memory %llu MiB (%llu MiB data), state %llu bytes; live%s, %u rounds, %llu MiB written, %llu pages while stopped; vCPU stopped %.3f ms, total %.3f ms%s\n",
			what, vm->config->name, req->dir,
			(unsigned long long)(stats.memory_bytes >> 20),
			(unsigned long long)(stats.memory_data_bytes >> 20),
			(unsigned long long)stats.state_bytes, diff, stats.rounds,
			(unsigned long long)(stats.memory_written_bytes >> 20),
			(unsigned long long)stats.final_pages, stats.vcpu_stopped_ns / 1e6,
			(resumed_ns - start_ns) / 1e6, req->stop ? "; VM stopped" : "");
	else
		fprintf(report,
			"%s VM '%s' to %s: memory %llu MiB (%llu MiB data), state %llu bytes; pause %.3f ms, write %.3f ms, vCPU stopped %.3f ms%s\n",
			what, vm->config->name, req->dir,
			(unsigned long long)(stats.memory_bytes >> 20),
			(unsigned long long)(stats.memory_data_bytes >> 20),
			(unsigned long long)stats.state_bytes, (paused_ns - start_ns) / 1e6,
			(saved_ns - paused_ns) / 1e6, stats.vcpu_stopped_ns / 1e6,
			req->stop ? "; VM stopped" : "");
	return 0;
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
		/* The plain save on a signal, as before live saves existed. */
		struct save_request req = { .dir = runner.save_dir,
					    .stop = runner.stop_after_save,
					    .live = 0 };
		int err = save_running_vm(runner.vm, &req, report, error, sizeof(error));
		if (report)
			fclose(report);
		if (err)
			kapsel_error("save on signal failed: %s", error);
		else
			fprintf(stderr, "kapsel: %s", line);
	}
	return NULL;
}

/* The arguments save and snapshot share: dir=, live=, max_rounds=,
 * max_downtime_ms= (and stop= for save). */
static int parse_save_request(const char *verb, const struct control_request *request,
			      struct save_request *req, char *error, size_t error_len)
{
	static const char *const keys[] = {
		"dir", "stop", "live", "max_rounds", "max_downtime_ms", "track", "diff", NULL
	};
	static const char *const snapshot_keys[] = {
		"dir", "live", "max_rounds", "max_downtime_ms", "track", "diff", NULL
	};
	int err = control_request_check_keys(request, req->snapshot ? snapshot_keys : keys, error,
					     error_len);
	if (err)
		return err;
	req->dir = control_request_arg(request, "dir");
	if (!req->dir || !*req->dir) {
		snprintf(error, error_len, "%s needs dir=PATH (the state directory to write)",
			 verb);
		return -EINVAL;
	}
	if (!req->snapshot &&
	    (err = control_arg_bool(request, "stop", &req->stop, error, error_len)))
		return err;
	req->live = -1;
	if (control_request_arg(request, "live")) {
		bool live = false;
		if ((err = control_arg_bool(request, "live", &live, error, error_len)))
			return err;
		req->live = live;
	}
	uint64_t rounds = SNAPSHOT_LIVE_DEFAULT_MAX_ROUNDS;
	uint64_t downtime = SNAPSHOT_LIVE_DEFAULT_MAX_DOWNTIME_MS;
	if ((err = control_arg_u64(request, "max_rounds", &rounds, error, error_len)) ||
	    (err = control_arg_u64(request, "max_downtime_ms", &downtime, error, error_len)))
		return err;
	if (rounds < 1 || rounds > MIGRATE_MAX_ROUNDS_LIMIT) {
		snprintf(error, error_len, "%s: max_rounds=%llu is out of range; use 1 to %u", verb,
			 (unsigned long long)rounds, MIGRATE_MAX_ROUNDS_LIMIT);
		return -EINVAL;
	}
	if (downtime < 1 || downtime > MIGRATE_MAX_DOWNTIME_MS_LIMIT) {
		snprintf(error, error_len, "%s: max_downtime_ms=%llu is out of range; use 1 to %u",
			 verb, (unsigned long long)downtime, MIGRATE_MAX_DOWNTIME_MS_LIMIT);
		return -EINVAL;
	}
	if ((control_request_arg(request, "max_rounds") ||
	     control_request_arg(request, "max_downtime_ms")) &&
	    req->live == 0) {
		snprintf(error, error_len,
			 "%s: max_rounds and max_downtime_ms bound a live save's pre-copy; they make no sense with live=no",
			 verb);
		return -EINVAL;
	}
	req->max_rounds = (uint32_t)rounds;
	req->max_downtime_ms = (uint32_t)downtime;
	if ((err = control_arg_bool(request, "track", &req->track, error, error_len)) ||
	    (err = control_arg_bool(request, "diff", &req->diff, error, error_len)))
		return err;
	if ((req->track || req->diff) && req->live == 0) {
		snprintf(error, error_len,
			 "%s: track and diff need a live save (the dirty log and the per-page checksums come from its pre-copy); leave out live=no",
			 verb);
		return -EINVAL;
	}
	if (req->track || req->diff)
		req->live = 1;
	return 0;
}

static int control_save(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
			char *error, size_t error_len)
{
	struct save_request req = { .snapshot = false };
	int err = parse_save_request("save", request, &req, error, error_len);
	return err ? err : save_running_vm(vm, &req, out, error, error_len);
}

static int control_snapshot(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
			    char *error, size_t error_len)
{
	struct save_request req = { .snapshot = true };
	int err = parse_save_request("snapshot", request, &req, error, error_len);
	return err ? err : save_running_vm(vm, &req, out, error, error_len);
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
		"save dir=PATH [stop=yes|no] [live=yes|no] [max_rounds=N] [max_downtime_ms=N] [track=yes] [diff=yes]  save the VM's state to a directory, then continue or stop (live: memory written while the vCPU runs; the default unless stop=yes)");
	if (err && err != -EEXIST)
		kapsel_warn("cannot register the control verb 'save': %s", strerror(-err));
	err = control_register_background_verb(
		"migrate", control_migrate,
		"migrate uri=tcp:HOST:PORT psk=/KEYFILE|insecure=yes [max_downtime_ms=N] [max_rounds=N]  live-migrate the VM (pre-copy; TLS with a pre-shared key)");
	if (err && err != -EEXIST)
		kapsel_warn("cannot register the control verb 'migrate': %s", strerror(-err));
	err = control_register_background_verb(
		"snapshot", control_snapshot,
		"snapshot dir=PATH [live=yes|no] [max_rounds=N] [max_downtime_ms=N] [track=yes] [diff=yes]  save the VM and freeze its disks; it goes on on copy-on-write overlays (live by default)");
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
