/* VM-state verbs of the `kapsel` command (restore, inspect, clone) and the save trigger of a running VM. */
#define _GNU_SOURCE
#include "cli/cli_state.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "control/control.h"
#include "control/control_client.h"
#include "core/log.h"
#include "state/migrate.h"
#include "state/migrate_transport.h"
#include "state/snapshot.h"
#include "state/vcpu_state.h"
#include "core/vm.h"
#include "state/vm_state.h"
#include "core/sandbox.h"
#include "core/pv_cpu.h"

static uint64_t monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

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
 * Pause, save, then resume or stop.  Returns 0 or -errno with a message.
 * Runs on a thread that is not the vCPU's.
 */
static int save_running_vm(struct kapsel_vm *vm, const char *dir, bool stop, bool snapshot,
			   FILE *report, char *error, size_t error_len)
{
	pthread_mutex_lock(&runner.lock);
	uint64_t start_ns = monotonic_ns();
	int err = vm_pause(vm);
	bool was_paused = err == -EALREADY;
	if (err && !was_paused) {
		pthread_mutex_unlock(&runner.lock);
		snprintf(error, error_len, "VM '%s' is not running; nothing to save",
			 vm->config->name);
		return err;
	}
	uint64_t paused_ns = monotonic_ns();
	struct snapshot_save_stats stats;
	err = snapshot ? snapshot_take(vm, dir, &stats, error, error_len)
		       : snapshot_save(vm, dir, &stats, error, error_len);
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
	const char *uri = control_request_arg(request, "uri");
	if (!uri || !*uri) {
		snprintf(error, error_len,
			 "migrate needs uri=tcp:HOST:PORT (where 'kapsel run --incoming' listens)");
		return -EINVAL;
	}
	uint64_t downtime = 0, rounds = 0;
	if ((err = control_arg_u64(request, "max_downtime_ms", &downtime, error, error_len)) ||
	    (err = control_arg_u64(request, "max_rounds", &rounds, error, error_len)))
		return err;
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
	err = migrate_send(vm, uri, &options, &stats, error, error_len);
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

void state_register_control_verbs(void)
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
}

int state_runner_start(struct kapsel_vm *vm, const char *save_dir, bool stop_after_save)
{
	state_register_control_verbs();
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

bool state_runner_stop(struct kapsel_vm *vm)
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

static struct kapsel_vm *running_vm; /* for the signal handlers */

static void on_stop_signal(int signo)
{
	(void)signo;
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
static int state_enter_sandbox(struct kapsel_vm *vm)
{
	char error[512];
	sandbox_options.vcpu_writes_files = vm->config->stats_path != NULL;
	int err = sandbox_enter(&sandbox_options, error, sizeof(error));
	if (err)
		kapsel_error("cannot sandbox the VM (--no-sandbox runs it without, for debugging only): %s",
			     error);
	return err;
}

int state_run_until_stopped(struct kapsel_vm *vm, struct control_server *control,
			    const char *save_dir, bool save_stop, bool print_stats)
{
	int status = KAPSEL_EXIT_VMM_ERROR;
	running_vm = vm;
	struct sigaction stop = { .sa_handler = on_stop_signal };
	sigemptyset(&stop.sa_mask);
	sigaction(SIGINT, &stop, NULL);
	sigaction(SIGTERM, &stop, NULL);
	struct sigaction stats = { .sa_handler = on_stats_signal };
	sigemptyset(&stats.sa_mask);
	sigaction(SIGUSR1, &stats, NULL);
	if (state_runner_start(vm, save_dir, save_stop) == 0 && state_enter_sandbox(vm) == 0) {
		status = vm_run(vm);
		if (state_runner_stop(vm))
			status = 0; /* stopped by --save-stop after a save */
	}
	control_server_stop(control);
	if (print_stats)
		vm_print_stats(vm, stderr);
	running_vm = NULL;
	vm_destroy(vm);
	return status;
}

struct restore_settings {
	const char *dir;
	const char *name; /* new name, or NULL */
	bool clone;	  /* new identity, private memory mapping */
	bool memory_verified;
	const char *console_output;	 /* a plain path (clones' --console-dir) */
	const char *console_output_spec; /* --console-output FILE[,max=SIZE] */
	bool console_input;
	bool print_stats;
	const char *stats_path;
	const char *save_dir; /* --save-on-signal */
	bool save_stop;
	bool timing;				 /* print how long the restore took */
	bool use_control;			 /* serve a control socket */
	const struct snapshot_host_files *files; /* --kernel, --disk N=PATH */
};

static void random_uuid(uint8_t uuid[16])
{
	if (getrandom(uuid, 16, 0) != 16) {
		uint64_t t = monotonic_ns() ^ ((uint64_t)getpid() << 32);
		memcpy(uuid, &t, 8);
		memcpy(uuid + 8, &t, 8);
	}
	uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40); /* version 4 */
	uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}

static char *dup_or_null(const char *text)
{
	return text ? strdup(text) : NULL;
}

/* Restore settings->dir and run it until it stops; returns the exit status. */
static int restore_and_run(const struct restore_settings *settings)
{
	struct vm_state_dir dir;
	struct vm_config config;
	struct kapsel_vm vm;
	char error[1024];
	int status = KAPSEL_EXIT_VMM_ERROR;
	uint64_t start_ns = monotonic_ns();

	vm_config_init(&config);
	if (vm_state_dir_open(&dir, settings->dir, false, error, sizeof(error)) < 0) {
		kapsel_error("cannot restore: %s", error);
		vm_config_free(&config);
		return status;
	}
	/* The state names no host file we open: the kernel and disks are the
	 * operator's (--kernel, --disk N=PATH) or files inside the directory. */
	if (snapshot_config_from_records(&dir.state, &config, error, sizeof(error)) < 0 ||
	    snapshot_bind_host_files(&dir.state, settings->dir, settings->files, &config, error,
				     sizeof(error)) < 0 ||
	    snapshot_check_disks(&dir.state, &config, error, sizeof(error)) < 0) {
		kapsel_error("cannot restore %s: %s", settings->dir, error);
		goto out_dir;
	}
	if (settings->name) {
		if (vm_config_check_name(settings->name, error, sizeof(error)) < 0) {
			kapsel_error("cannot restore %s: %s", settings->dir, error);
			goto out_dir;
		}
		snprintf(config.name, sizeof(config.name), "%s", settings->name);
	}
	/* Frozen disks (snapshots), and every disk of a clone, run on a new
	 * copy-on-write overlay of their own. */
	if (snapshot_prepare_disks(&dir.state, &config, settings->clone, config.name, error,
				   sizeof(error)) < 0) {
		kapsel_error("cannot restore %s: %s", settings->dir, error);
		goto out_dir;
	}
	if (settings->clone)
		random_uuid(config.uuid);
	config.console_output_path = dup_or_null(settings->console_output);
	if (settings->console_output_spec &&
	    vm_config_parse_console_output(settings->console_output_spec, &config, error,
					   sizeof(error)) < 0) {
		kapsel_error("%s", error);
		goto out_dir;
	}
	config.console_input = settings->console_input;
	config.print_stats = settings->print_stats;
	config.stats_path = dup_or_null(settings->stats_path);

	struct control_server *control = NULL;
	if (settings->use_control &&
	    control_server_start(&control, config.name, error, sizeof(error)) < 0) {
		kapsel_error("%s", error);
		goto out_dir;
	}
	if (vm_create(&vm, &config) < 0) {
		control_server_stop(control);
		goto out_dir;
	}
	struct snapshot_restore_options options = {
		.map_private = settings->clone,
		.memory_verified = settings->memory_verified,
		.new_identity = settings->clone || settings->name,
	};
	if (snapshot_restore(&vm, &dir, &options, error, sizeof(error)) < 0) {
		kapsel_error("cannot restore %s: %s; the VM was not started", settings->dir, error);
		control_server_stop(control);
		vm_destroy(&vm);
		goto out_dir;
	}
	if (control && control_server_attach(control, &vm, error, sizeof(error)) < 0) {
		kapsel_error("%s", error);
		control_server_stop(control);
		vm_destroy(&vm);
		goto out_dir;
	}
	vm_state_dir_close(&dir);
	if (settings->timing)
		fprintf(stderr, "kapsel: restored '%s' in %.3f ms (generation %llu)\n", config.name,
			(monotonic_ns() - start_ns) / 1e6, (unsigned long long)vm.generation);

	status = state_run_until_stopped(&vm, control, settings->save_dir, settings->save_stop,
					 config.print_stats);
	vm_config_free(&config);
	return status;

out_dir:
	vm_state_dir_close(&dir);
	vm_config_free(&config);
	return status;
}

void cli_restore_usage(FILE *out)
{
	fprintf(out, "Usage: kapsel restore [OPTIONS] DIR\n"
		     "\n"
		     "Bring back a VM saved in the state directory DIR and run it from exactly\n"
		     "where it was.  The guest sees its restore generation go up by one.\n"
		     "Everything in DIR is checked first; a truncated, corrupted, foreign or\n"
		     "mismatched state is refused and no VM is started.\n"
		     "\n"
		     "A saved state never chooses host files: name the kernel and each disk\n"
		     "image (as on the 'kapsel run' command line that saved it) unless they are\n"
		     "inside DIR.\n"
		     "\n"
		     "Options:\n"
		     "  -k, --kernel FILE        the guest kernel\n"
		     "  -d, --disk N=PATH[,format=raw|overlay]\n"
		     "                           the image of disk N (0 = first); format=overlay\n"
		     "                           for a copy-on-write overlay\n"
		     "  -n, --name NAME          run it under a new name\n"
		     "      --clone              new identity (name, UUID) and copy-on-write\n"
		     "                           memory mapped from DIR/memory.img\n"
		     "      --console-output FILE[,max=SIZE]\n"
		     "                           append guest console output to FILE; it stops\n"
		     "                           growing at SIZE (default 64M, 0: no cap)\n"
		     "      --no-console-input   do not forward standard input to the guest\n"
		     "      --save-on-signal DIR on SIGHUP, save the VM to DIR and continue\n"
		     "      --save-stop          with --save-on-signal: stop after saving\n"
		     "      --stats              print counters when the VM stops\n"
		     "      --stats-file FILE    on SIGUSR1, write counters to FILE\n"
		     "      --timing             print how long the restore took\n"
		     "      --no-control         do not serve a control socket\n" SANDBOX_USAGE
		     "  -v, --verbose            log what Kapsel does\n");
}

int cli_restore(int argc, char **argv)
{
	enum {
		OPT_CLONE = 256,
		OPT_CONSOLE_OUTPUT,
		OPT_NO_INPUT,
		OPT_STATS,
		OPT_STATS_FILE,
		OPT_SAVE,
		OPT_SAVE_STOP,
		OPT_TIMING,
		OPT_NO_CONTROL
	};
	static const struct option options[] = {
		{ "kernel", required_argument, NULL, 'k' },
		{ "disk", required_argument, NULL, 'd' },
		{ "name", required_argument, NULL, 'n' },
		{ "clone", no_argument, NULL, OPT_CLONE },
		{ "console-output", required_argument, NULL, OPT_CONSOLE_OUTPUT },
		{ "no-console-input", no_argument, NULL, OPT_NO_INPUT },
		{ "save-on-signal", required_argument, NULL, OPT_SAVE },
		{ "save-stop", no_argument, NULL, OPT_SAVE_STOP },
		{ "stats", no_argument, NULL, OPT_STATS },
		{ "stats-file", required_argument, NULL, OPT_STATS_FILE },
		{ "timing", no_argument, NULL, OPT_TIMING },
		{ "no-control", no_argument, NULL, OPT_NO_CONTROL },
		SANDBOX_LONG_OPTIONS,
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static struct snapshot_host_files files;
	struct restore_settings settings = { .console_input = true,
					     .use_control = true,
					     .files = &files };
	char detail[512];
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "k:d:n:vh", options, NULL)) != -1) {
		switch (opt) {
		case 'k':
			files.kernel_path = optarg;
			break;
		case 'd':
			if (snapshot_parse_disk_mapping(optarg, &files, detail, sizeof(detail)) <
			    0) {
				kapsel_error("%s", detail);
				return 2;
			}
			break;
		case 'n':
			if (vm_config_check_name(optarg, detail, sizeof(detail)) < 0) {
				kapsel_error("--name: %s", detail);
				return KAPSEL_EXIT_VMM_ERROR;
			}
			settings.name = optarg;
			break;
		case OPT_CLONE:
			settings.clone = true;
			break;
		case OPT_CONSOLE_OUTPUT:
			settings.console_output_spec = optarg;
			break;
		case OPT_NO_INPUT:
			settings.console_input = false;
			break;
		case OPT_SAVE:
			settings.save_dir = optarg;
			break;
		case OPT_SAVE_STOP:
			settings.save_stop = true;
			break;
		case OPT_STATS:
			settings.print_stats = true;
			break;
		case OPT_STATS_FILE:
			settings.stats_path = optarg;
			break;
		case OPT_TIMING:
			settings.timing = true;
			break;
		case OPT_NO_CONTROL:
			settings.use_control = false;
			break;
		case SANDBOX_OPT_NO_SANDBOX:
		case SANDBOX_OPT_USER:
		case SANDBOX_OPT_JAIL:
			if (sandbox_cli_option(opt, optarg) < 0)
				return 2;
			break;
		case 'v':
			kapsel_log_set_verbose(true);
			break;
		case 'h':
			cli_restore_usage(stdout);
			return 0;
		default:
			fprintf(stderr, "Try 'kapsel restore --help'.\n");
			return 2;
		}
	}
	if (optind != argc - 1) {
		kapsel_error(
			"restore needs exactly one state directory; see 'kapsel restore --help'");
		return 2;
	}
	settings.dir = argv[optind];
	int status = restore_and_run(&settings);
	snapshot_host_files_free(&files);
	return status;
}

/* ---- save (through the control socket) -------------------------------------- */

void cli_save_usage(FILE *out)
{
	fprintf(out, "Usage: kapsel save [--stop] NAME DIR\n"
		     "\n"
		     "Save the running VM NAME to the state directory DIR (created, or replaced\n"
		     "atomically: a crash mid-save leaves the previous state there intact).\n"
		     "The vCPU is paused while the state is written, then continues, or the VM\n"
		     "stops with --stop.  Bring it back with 'kapsel restore DIR'.\n");
}

static int save_or_snapshot(int argc, char **argv, bool snapshot);

int cli_save(int argc, char **argv)
{
	return save_or_snapshot(argc, argv, false);
}

int cli_snapshot(int argc, char **argv)
{
	return save_or_snapshot(argc, argv, true);
}

void cli_snapshot_usage(FILE *out)
{
	fprintf(out, "Usage: kapsel snapshot NAME DIR\n"
		     "\n"
		     "Take a snapshot of the running VM NAME into the state directory DIR: its\n"
		     "memory and device state, and its disks frozen as they are.  The VM goes\n"
		     "on at once, writing to new copy-on-write overlay files next to its disks\n"
		     "(IMAGE@TIME.kovl).  'kapsel restore DIR' starts from the snapshot, on an\n"
		     "overlay of its own, as often as wanted (roll back, or branch).\n");
}

static int save_or_snapshot(int argc, char **argv, bool snapshot)
{
	bool stop = false;
	const char *args[2] = { NULL, NULL };
	unsigned count = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--stop") == 0 && !snapshot) {
			stop = true;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			(snapshot ? cli_snapshot_usage : cli_save_usage)(stdout);
			return 0;
		} else if (argv[i][0] == '-' || count == 2) {
			kapsel_error("unexpected argument '%s'; see 'kapsel %s --help'", argv[i],
				     snapshot ? "snapshot" : "save");
			return 2;
		} else {
			args[count++] = argv[i];
		}
	}
	if (count != 2) {
		kapsel_error("%s needs a VM name and a directory; see 'kapsel %s --help'",
			     snapshot ? "snapshot" : "save", snapshot ? "snapshot" : "save");
		return 2;
	}
	/* The VM resolves the path in its own working directory: send it
	 * absolute, with spaces and '%' escaped for the line protocol. */
	char *absolute = NULL;
	if (args[1][0] == '/') {
		absolute = strdup(args[1]);
	} else {
		char *cwd = getcwd(NULL, 0);
		if (cwd && asprintf(&absolute, "%s/%s", cwd, args[1]) < 0)
			absolute = NULL;
		free(cwd);
	}
	if (!absolute)
		return KAPSEL_EXIT_VMM_ERROR;
	char request[CONTROL_REQUEST_MAX_BYTES];
	size_t used = snapshot ? (size_t)snprintf(request, sizeof(request), "snapshot dir=")
			       : (size_t)snprintf(request, sizeof(request),
						  "save stop=%s dir=", stop ? "yes" : "no");
	for (const char *p = absolute; *p && used + 4 < sizeof(request); p++) {
		if (*p == ' ' || *p == '%' || (unsigned char)*p < 0x20)
			used += (size_t)snprintf(request + used, sizeof(request) - used, "%%%02x",
						 (unsigned char)*p);
		else
			request[used++] = *p;
	}
	request[used] = '\0';
	free(absolute);
	struct control_reply reply;
	int err = control_call(args[0], request, &reply, -1);
	if (err) {
		kapsel_error("cannot reach VM '%s': %s", args[0], strerror(-err));
		return 1;
	}
	int status = 0;
	if (reply.errnum) {
		kapsel_error("%s of '%s' failed: %s", snapshot ? "snapshot" : "save", args[0],
			     reply.message ? reply.message : "");
		status = 1;
	} else if (reply.payload) {
		fputs(reply.payload, stdout);
	}
	control_reply_free(&reply);
	return status;
}

/* ---- migrate ------------------------------------------------------------------ */

void cli_migrate_usage(FILE *out)
{
	fprintf(out,
		"Usage: kapsel migrate (--psk FILE | --insecure) [--max-downtime-ms N] NAME tcp:HOST:PORT\n"
		"\n"
		"Live-migrate the running VM NAME to the Kapsel waiting with\n"
		"'kapsel run --incoming tcp:ADDR:PORT,psk=FILE' there: guest RAM is copied while\n"
		"the VM runs (KVM dirty logging, rounds until the rest fits the downtime), then\n"
		"the vCPU stops and the rest and the device state follow.  The destination\n"
		"opens the kernel and disk images its own definition names (they must hold\n"
		"the same content: shared storage).  If anything goes wrong the VM runs\n"
		"on here unharmed.  Prints the rounds, bytes and downtime.\n"
		"\n"
		"  --psk FILE     protect the migration with TLS 1.3 and the pre-shared key in\n"
		"                 FILE (one line [IDENTITY:]HEXKEY, 16-64 bytes, mode 0600); the\n"
		"                 destination must use the same key.  Make one with:\n"
		"                 (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \\n' > FILE)\n"
		"  --insecure     plain TCP, INSECURE: anyone on the path reads and can change\n"
		"                 guest memory, anyone who reaches the port can send a VM\n"
		"  --max-downtime-ms N  the longest the vCPU may stop (default 30)\n");
}

/* Append value to request with the control protocol's %-escapes. */
static size_t append_escaped(char *request, size_t used, size_t size, const char *value)
{
	for (const char *p = value; *p && used + 4 < size; p++) {
		if (*p == ' ' || *p == '%' || (unsigned char)*p < 0x20)
			used += (size_t)snprintf(request + used, size - used, "%%%02x",
						 (unsigned char)*p);
		else
			request[used++] = *p;
	}
	request[used] = '\0';
	return used;
}

int cli_migrate(int argc, char **argv)
{
	const char *args[2] = { NULL, NULL };
	const char *psk = NULL;
	bool insecure = false;
	unsigned count = 0;
	unsigned long downtime = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			cli_migrate_usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--max-downtime-ms") == 0 && i + 1 < argc) {
			downtime = strtoul(argv[++i], NULL, 10);
		} else if (strcmp(argv[i], "--psk") == 0 && i + 1 < argc) {
			psk = argv[++i];
		} else if (strcmp(argv[i], "--insecure") == 0) {
			insecure = true;
		} else if (argv[i][0] == '-' || count == 2) {
			kapsel_error("unexpected argument '%s'; see 'kapsel migrate --help'",
				     argv[i]);
			return 2;
		} else {
			args[count++] = argv[i];
		}
	}
	if (count != 2 || strchr(args[1], ' ') || strchr(args[1], '%')) {
		kapsel_error(
			"migrate needs a VM name and tcp:HOST:PORT; see 'kapsel migrate --help'");
		return 2;
	}
	if (!psk == !insecure) {
		kapsel_error(
			psk ? "migrate: --psk and --insecure exclude each other"
			    : "migrate needs --psk FILE (TLS with a pre-shared key that the destination's 'kapsel run --incoming tcp:ADDR:PORT,psk=FILE' also has) or, on a network you trust completely, --insecure (plain TCP); see 'kapsel migrate --help'");
		return 2;
	}
	char request[CONTROL_REQUEST_MAX_BYTES];
	size_t used = (size_t)snprintf(request, sizeof(request), "migrate uri=%s", args[1]);
	if (downtime)
		used += (size_t)snprintf(request + used, sizeof(request) - used,
					 " max_downtime_ms=%lu", downtime);
	if (insecure) {
		used += (size_t)snprintf(request + used, sizeof(request) - used, " insecure=yes");
	} else {
		/* The VMM opens the key file: give it an absolute path. */
		char *absolute = realpath(psk, NULL);
		if (!absolute) {
			kapsel_error("cannot find the PSK file '%s': %s", psk, strerror(errno));
			return 2;
		}
		used += (size_t)snprintf(request + used, sizeof(request) - used, " psk=");
		used = append_escaped(request, used, sizeof(request), absolute);
		free(absolute);
	}
	struct control_reply reply;
	int err = control_call(args[0], request, &reply, -1);
	if (err) {
		kapsel_error("cannot reach VM '%s': %s", args[0], strerror(-err));
		return 1;
	}
	int status = 0;
	if (reply.errnum) {
		kapsel_error("migration of '%s' failed: %s; the VM runs on here", args[0],
			     reply.message ? reply.message : "");
		status = 1;
	} else if (reply.payload) {
		fputs(reply.payload, stdout);
	}
	control_reply_free(&reply);
	return status;
}

int state_run_incoming(const char *uri, const struct vm_config *overrides, bool use_control)
{
	struct kapsel_vm vm;
	struct vm_config config;
	char error[1024];
	int status = KAPSEL_EXIT_VMM_ERROR;

	if (migrate_receive(uri, overrides, &vm, &config, error, sizeof(error)) < 0) {
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
	status = state_run_until_stopped(&vm, control, NULL, false, config.print_stats);
	vm_config_free(&config);
	return status;
}

/* ---- clone ------------------------------------------------------------------ */

void cli_clone_usage(FILE *out)
{
	fprintf(out, "Usage: kapsel clone [OPTIONS] DIR\n"
		     "\n"
		     "Start N VMs from the saved state DIR at once.  Each clone maps\n"
		     "DIR/memory.img copy-on-write (pages are shared until written), gets its\n"
		     "own name (PREFIX-1 .. PREFIX-N) and UUID, and sees its generation go up.\n"
		     "Exits when all clones have stopped: 0 if every clone exited 0.\n"
		     "\n"
		     "Options:\n"
		     "  -c, --count N            how many clones (default 1)\n"
		     "  -p, --prefix PREFIX      name prefix (default: the saved VM's name)\n"
		     "  -k, --kernel FILE        the guest kernel (unless inside DIR)\n"
		     "  -d, --disk N=PATH[,format=raw|overlay]\n"
		     "                           the image of disk N (unless inside DIR); each\n"
		     "                           clone runs on an overlay of its own over it\n"
		     "      --console-dir DIR    write clone i's console to DIR/PREFIX-i.log\n"
		     "      --timing             print each clone's time from start to running\n"
		     "  -v, --verbose            log what Kapsel does\n");
}

int cli_clone(int argc, char **argv)
{
	static const struct option options[] = {
		{ "count", required_argument, NULL, 'c' },
		{ "prefix", required_argument, NULL, 'p' },
		{ "kernel", required_argument, NULL, 'k' },
		{ "disk", required_argument, NULL, 'd' },
		{ "console-dir", required_argument, NULL, 'o' },
		{ "timing", no_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	unsigned long count = 1;
	const char *prefix = NULL, *console_dir = NULL;
	bool timing = false;
	static struct snapshot_host_files files;
	char detail[512];
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:p:k:d:vh", options, NULL)) != -1) {
		switch (opt) {
		case 'k':
			files.kernel_path = optarg;
			break;
		case 'd':
			if (snapshot_parse_disk_mapping(optarg, &files, detail, sizeof(detail)) <
			    0) {
				kapsel_error("%s", detail);
				return 2;
			}
			break;
		case 'c': {
			char *end;
			count = strtoul(optarg, &end, 10);
			if (*end || count == 0 || count > 256) {
				kapsel_error("--count '%s' must be a number from 1 to 256", optarg);
				return 2;
			}
			break;
		}
		case 'p':
			prefix = optarg;
			break;
		case 'o':
			console_dir = optarg;
			break;
		case 't':
			timing = true;
			break;
		case 'v':
			kapsel_log_set_verbose(true);
			break;
		case 'h':
			cli_clone_usage(stdout);
			return 0;
		default:
			fprintf(stderr, "Try 'kapsel clone --help'.\n");
			return 2;
		}
	}
	if (optind != argc - 1) {
		kapsel_error("clone needs exactly one state directory; see 'kapsel clone --help'");
		return 2;
	}
	const char *path = argv[optind];

	/* Check the whole snapshot once (memory checksum included), so the
	 * clones can map it without reading it first. */
	struct vm_state_dir dir;
	char error[1024];
	uint64_t verify_start = monotonic_ns();
	if (vm_state_dir_open(&dir, path, true, error, sizeof(error)) < 0) {
		kapsel_error("cannot clone: %s", error);
		return KAPSEL_EXIT_VMM_ERROR;
	}
	char base_name[VM_CONFIG_NAME_MAX];
	snprintf(base_name, sizeof(base_name), "%s", dir.info->name);
	vm_state_dir_close(&dir);
	if (timing)
		fprintf(stderr, "kapsel: verified %s in %.3f ms\n", path,
			(monotonic_ns() - verify_start) / 1e6);
	if (!prefix)
		prefix = base_name;

	pid_t *children = calloc(count, sizeof(pid_t));
	if (!children)
		return KAPSEL_EXIT_VMM_ERROR;
	fflush(NULL);
	for (unsigned long i = 0; i < count; i++) {
		char name[VM_CONFIG_NAME_MAX];
		snprintf(name, sizeof(name), "%.40s-%lu", prefix, i + 1);
		pid_t pid = fork();
		if (pid < 0) {
			kapsel_error("cannot start clone %lu: %s", i + 1, strerror(errno));
			break;
		}
		if (pid == 0) {
			char console[4096];
			struct restore_settings settings = {
				.dir = path,
				.name = name,
				.clone = true,
				.memory_verified = true,
				.console_input = false,
				.timing = timing,
				.use_control = true,
				.files = &files,
			};
			if (console_dir) {
				snprintf(console, sizeof(console), "%s/%s.log", console_dir, name);
				settings.console_output = console;
			}
			_exit(restore_and_run(&settings));
		}
		children[i] = pid;
	}
	int status = 0;
	for (unsigned long i = 0; i < count; i++) {
		if (children[i] <= 0) {
			status = KAPSEL_EXIT_VMM_ERROR;
			continue;
		}
		int wstatus;
		while (waitpid(children[i], &wstatus, 0) < 0 && errno == EINTR)
			;
		int code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : KAPSEL_EXIT_VMM_ERROR;
		if (code && !status)
			status = code;
	}
	free(children);
	return status;
}

/* ---- inspect ------------------------------------------------------------------ */

void cli_inspect_usage(FILE *out)
{
	fprintf(out, "Usage: kapsel inspect [--records] DIR\n"
		     "\n"
		     "Check a saved VM state directory completely (manifest, checksums of every\n"
		     "file, every record) and decode it: VM, definition, vCPU registers, event\n"
		     "channels, devices with their ring indices and counters, disks.  Exits 0\n"
		     "if the state is valid and restorable, 1 (with the reason) if not.\n"
		     "\n"
		     "  --records   also list every record (type, flags, size)\n");
}

static void print_hex(FILE *out, const uint8_t *data, uint64_t length)
{
	for (uint64_t i = 0; i < length && i < 64; i++)
		fprintf(out, "%s%02x", i % 32 == 0 ? "\n      " : " ", data[i]);
	fprintf(out, "%s\n", length > 64 ? " ..." : "");
}

static void print_device_record(FILE *out, const struct vm_state_stored_record *rec)
{
	const char *name = vm_state_record_name(rec->type);
	fprintf(out, "    %s (type %#x, %llu bytes)", name ? name : "device record", rec->type,
		(unsigned long long)rec->length_bytes);
	if (rec->type == VM_STATE_DEV_UART16550 &&
	    rec->length_bytes == sizeof(struct vm_state_uart16550)) {
		struct vm_state_uart16550 u;
		memcpy(&u, rec->payload, sizeof(u));
		fprintf(out,
			": ier %#x lcr %#x mcr %#x fcr %#x scr %#x divisor %u, loopback %u bytes, bytes out %llu in %llu\n",
			u.ier, u.lcr, u.mcr, u.fcr, u.scr, u.dll | (u.dlm << 8), u.loopback_count,
			(unsigned long long)u.bytes_out, (unsigned long long)u.bytes_in);
		return;
	}
	if (rec->type == VM_STATE_DEV_BLOCK_PV &&
	    rec->length_bytes == sizeof(struct vm_state_block_pv)) {
		struct vm_state_block_pv b;
		memcpy(&b, rec->payload, sizeof(b));
		fprintf(out, ": ring gpa %#llx (%u pages, order %u), req_cons %u, rsp_prod %u%s\n",
			(unsigned long long)b.ring_gpa, b.ring_pages, b.order, b.req_cons,
			b.rsp_prod, b.broken ? ", ring broken" : "");
		return;
	}
	if (rec->type == VM_STATE_DEV_ATA_DISK &&
	    rec->length_bytes >= sizeof(struct vm_state_ata_disk)) {
		struct vm_state_ata_disk a;
		memcpy(&a, rec->payload, sizeof(a));
		fprintf(out,
			": status %#x error %#x device %#x, command %#x %s, lba %#llx, %llu of %llu sectors left, buffer %u/%u bytes, %llu sectors read, %llu written\n",
			a.status, a.error, a.device, a.command,
			a.transfer == 1	  ? "reading"
			: a.transfer == 2 ? "writing"
					  : "idle",
			(unsigned long long)a.command_lba, (unsigned long long)a.sectors_left,
			(unsigned long long)a.command_sectors, a.buffer_pos, a.buffer_bytes,
			(unsigned long long)a.counters[2], (unsigned long long)a.counters[3]);
		return;
	}
	print_hex(out, rec->payload, rec->length_bytes);
}

static const char *device_type_name(unsigned type)
{
	switch (type) {
	case KAPSEL_DEV_CONSOLE_PV:
		return "console-pv";
	case KAPSEL_DEV_BLOCK_PV:
		return "block-pv";
	case KAPSEL_DEV_UART16550:
		return "uart16550";
	case KAPSEL_DEV_ATA_DISK:
		return "ata-disk";
	case KAPSEL_DEV_NE2000:
		return "ne2000";
	}
	return "unknown";
}

static void print_state(const struct vm_state_dir *dir, bool list_records, FILE *out)
{
	const struct vm_state_vm_info *info = dir->info;
	char when[64] = "?";
	time_t secs = (time_t)(dir->state.begin.created_unix_ns / 1000000000ull);
	struct tm tm;
	if (localtime_r(&secs, &tm))
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(out, "state %s: format %u, written by %.32s at %s\n", dir->path,
		dir->state.begin.format_version, dir->state.begin.writer, when);
	fprintf(out, "files:\n");
	for (unsigned i = 0; i < dir->file_count; i++)
		fprintf(out, "  %-12s %12llu bytes (%llu data), crc32c %08x\n", dir->files[i].name,
			(unsigned long long)dir->files[i].size_bytes,
			(unsigned long long)dir->files[i].data_bytes, dir->files[i].crc32c);
	fprintf(out, "vm:\n  name %.64s\n  uuid ", info->name);
	for (int i = 0; i < 16; i++)
		fprintf(out, "%02x%s", info->uuid[i],
			(i == 3 || i == 5 || i == 7 || i == 9) ? "-" : "");
	fprintf(out,
		"\n  memory %llu MiB\n  generation %llu\n  clock %.6f s\n  tsc %llu kHz\n  exits %llu\n",
		(unsigned long long)(info->memory_bytes >> 20),
		(unsigned long long)info->generation, info->clock_ns / 1e9,
		(unsigned long long)info->tsc_khz, (unsigned long long)info->exits_total);
	const struct vm_state_stored_record *config =
		vm_state_find(&dir->state, VM_STATE_CONFIG, NULL);
	if (config) {
		fprintf(out, "definition:\n");
		const char *p = (const char *)config->payload;
		const char *end = p + config->length_bytes;
		while (p < end) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
			fprintf(out, "  %.*s\n", (int)n, p);
			p += n + 1;
		}
	}
	fprintf(out, "vcpu 0:\n");
	vcpu_state_print(&dir->state, out);
	pv_cpu_state_print(&dir->state, out);

	const struct vm_state_stored_record *ev = vm_state_find(&dir->state, VM_STATE_EVTCHN, NULL);
	if (ev && ev->length_bytes == sizeof(struct vm_state_evtchn)) {
		struct vm_state_evtchn e;
		memcpy(&e, ev->payload, sizeof(e));
		fprintf(out, "event channels:");
		unsigned shown = 0;
		for (unsigned p = 0; p < e.count && p < 256; p++) {
			if (!e.entries[p].allocated)
				continue;
			if (e.entries[p].bound_device >= 0)
				fprintf(out, " %u->device %d", p, e.entries[p].bound_device);
			else
				fprintf(out, " %u", p);
			shown++;
		}
		fprintf(out, "%s\n", shown ? "" : " none");
	}
	fprintf(out, "devices:\n");
	for (size_t i = 0; i < dir->state.count; i++) {
		const struct vm_state_stored_record *rec = &dir->state.records[i];
		if (rec->type == VM_STATE_DEVICE &&
		    rec->length_bytes == sizeof(struct vm_state_device)) {
			struct vm_state_device d;
			struct kapsel_device_desc desc;
			memcpy(&d, rec->payload, sizeof(d));
			memcpy(&desc, d.desc, sizeof(desc));
			fprintf(out, "  %u %-10s (%s)", d.index, device_type_name(d.type), d.name);
			if (d.evtchn_port != UINT32_MAX)
				fprintf(out, " event channel %u", d.evtchn_port);
			if (desc.io_base)
				fprintf(out, " ports %#x", desc.io_base);
			if (desc.doorbell_port)
				fprintf(out, " doorbell %#x", desc.doorbell_port);
			if (desc.capacity_sectors)
				fprintf(out, " %llu sectors",
					(unsigned long long)desc.capacity_sectors);
			fprintf(out, ", %llu exits\n", (unsigned long long)d.exits);
		} else if (rec->type >= VM_STATE_DEVICE_FIRST &&
			   rec->type <= VM_STATE_DEVICE_LAST) {
			print_device_record(out, rec);
		}
	}
	size_t position = 0;
	const struct vm_state_stored_record *rec;
	while ((rec = vm_state_find(&dir->state, VM_STATE_DISK, &position)) != NULL) {
		struct vm_state_disk disk;
		if (rec->length_bytes < sizeof(disk))
			continue;
		memcpy(&disk, rec->payload, sizeof(disk));
		fprintf(out, "disk %u: %.*s, %llu bytes, bus %s%s%s\n", disk.index,
			(int)(rec->length_bytes - sizeof(disk)),
			(const char *)rec->payload + sizeof(disk),
			(unsigned long long)disk.size_bytes, disk.bus ? "ata" : "pv",
			disk.readonly ? ", read-only" : "",
			(disk.flags & VM_STATE_DISK_OVERLAY) ? ", overlay" : "");
	}
	if (list_records) {
		fprintf(out, "records:\n");
		for (size_t i = 0; i < dir->state.count; i++) {
			const struct vm_state_stored_record *r = &dir->state.records[i];
			const char *name = vm_state_record_name(r->type);
			fprintf(out, "  %3zu %-18s type %#06x %s %llu bytes\n", i + 1,
				name ? name : "(unknown)", r->type,
				(r->flags & VM_STATE_RECORD_MANDATORY) ? "mandatory" : "optional ",
				(unsigned long long)r->length_bytes);
		}
	}
}

int cli_inspect(int argc, char **argv)
{
	bool list_records = false;
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--records") == 0) {
			list_records = true;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			cli_inspect_usage(stdout);
			return 0;
		} else if (argv[i][0] == '-' || path) {
			kapsel_error("unexpected argument '%s'; see 'kapsel inspect --help'",
				     argv[i]);
			return 2;
		} else {
			path = argv[i];
		}
	}
	if (!path) {
		kapsel_error("inspect needs a state directory; see 'kapsel inspect --help'");
		return 2;
	}
	struct vm_state_dir dir;
	char error[1024];
	if (vm_state_dir_open(&dir, path, true, error, sizeof(error)) < 0) {
		kapsel_error("invalid state: %s", error);
		return 1;
	}
	print_state(&dir, list_records, stdout);
	struct vm_config config;
	vm_config_init(&config);
	int err = snapshot_config_from_records(&dir.state, &config, error, sizeof(error));
	/* Only files inside the directory are looked at: the state's other
	 * paths are the restorer's to name (--kernel, --disk N=PATH). */
	bool needs_files = false;
	if (!err) {
		err = snapshot_bind_host_files(&dir.state, path, NULL, &config, error,
					       sizeof(error));
		needs_files = err == -EPERM;
	}
	if (!err)
		err = snapshot_check_disks(&dir.state, &config, error, sizeof(error));
	if (needs_files) {
		printf("state is valid; to restore it, %s\n", error);
		vm_config_free(&config);
		vm_state_dir_close(&dir);
		return 0;
	}
	vm_config_free(&config);
	vm_state_dir_close(&dir);
	if (err) {
		printf("NOT restorable: %s\n", error);
		return 1;
	}
	printf("state is valid\n");
	return 0;
}
