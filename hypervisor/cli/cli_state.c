/* VM-state verbs of the `kapsel` command: save, snapshot and migrate a running VM, restore and clone a saved one. */
#define _GNU_SOURCE
#include "cli/cli_state.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_prefix.h"
#include "cli/cli_progress.h"
#include "cli/run_supervisor.h"
#include "control/control.h"
#include "control/control_client.h"
#include "core/clock.h"
#include "core/log.h"
#include "devices/block/disk_overlay.h"
#include "state/snapshot.h"
#include "state/snapshot_chain.h"
#include "core/vm.h"
#include "state/memory_check.h"
#include "state/migrate.h"
#include "state/vm_state.h"
#include "core/sandbox.h"
#include "core/pv_cpu.h"

struct restore_settings {
	const char *dir;
	const char *name; /* new name, or NULL */
	bool clone;	  /* new identity */
	bool copy_memory; /* --copy-memory: read memory.img in, checked, before the start */
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
		.map_private = !settings->copy_memory,
		.new_identity = settings->clone || settings->name,
		.clone = settings->clone,
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
		memory_check_finish(1);
		vm_destroy(&vm);
		goto out_dir;
	}
	vm_state_dir_close(&dir);
	if (settings->timing)
		fprintf(stderr, "kapsel: restored '%s' in %.3f ms (generation %llu)\n", config.name,
			(monotonic_ns() - start_ns) / 1e6, (unsigned long long)vm.generation);

	status = run_supervisor_until_stopped(&vm, control, settings->save_dir, settings->save_stop,
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
	fprintf(out,
		"Usage: kapsel restore [OPTIONS] DIR\n"
		"\n"
		"Bring back a VM saved in the state directory DIR and run it from exactly\n"
		"where it was.  The guest sees its restore generation go up by one.\n"
		"Everything in DIR is checked; a truncated, corrupted, foreign or\n"
		"mismatched state is refused.  Guest memory is mapped from DIR/memory.img\n"
		"(copy-on-write) and the guest starts at once, while the file's checksum is\n"
		"checked in the background: until it passes, nothing the guest writes to\n"
		"its disks, sends or prints leaves the VM, and if it fails the VM is\n"
		"stopped with an error naming the file.  DIR may be saved over or removed\n"
		"meanwhile; do not modify DIR/memory.img in place while the VM runs\n"
		"(use --copy-memory to be independent of it).\n"
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
		"      --net N=SPEC         the link of network interface N (0 = first), SPEC\n"
		"                           as kapsel run's --net (socket=PATH,peer=PATH or\n"
		"                           tap=NAME, the saved model); the MAC stays\n"
		"  -n, --name NAME          run it under a new name\n"
		"      --clone              new identity (name, UUID, MACs)\n"
		"      --copy-memory        read DIR/memory.img into the VM's own memory and\n"
		"                           check it before the guest starts (the old way:\n"
		"                           time grows with the memory's size)\n"
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
		OPT_NO_CONTROL,
		OPT_NET,
		OPT_COPY_MEMORY
	};
	static const struct option options[] = {
		{ "kernel", required_argument, NULL, 'k' },
		{ "disk", required_argument, NULL, 'd' },
		{ "net", required_argument, NULL, OPT_NET },
		{ "name", required_argument, NULL, 'n' },
		{ "clone", no_argument, NULL, OPT_CLONE },
		{ "copy-memory", no_argument, NULL, OPT_COPY_MEMORY },
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
		case OPT_NET:
			if (snapshot_parse_net_mapping(optarg, &files, detail, sizeof(detail)) <
			    0) {
				kapsel_error("%s", detail);
				return 2;
			}
			break;
		case 'n':
			if (vm_config_check_name(optarg, detail, sizeof(detail)) < 0) {
				kapsel_error("--name: %s", detail);
				return KAPSEL_EXIT_USAGE;
			}
			settings.name = optarg;
			break;
		case OPT_CLONE:
			settings.clone = true;
			break;
		case OPT_COPY_MEMORY:
			settings.copy_memory = true;
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
	files.new_identity = settings.clone;
	int status = restore_and_run(&settings);
	snapshot_host_files_free(&files);
	return status;
}

/* ---- save (through the control socket) -------------------------------------- */

void cli_save_usage(FILE *out)
{
	fprintf(out,
		"Usage: kapsel save [--stop] [--live|--no-live] [--max-rounds N] [--max-downtime MS]\n"
		"                   [--track] [--diff] [--progress|--no-progress] NAME DIR\n"
		"\n"
		"Save the running VM NAME to the state directory DIR (created, or replaced\n"
		"atomically: a crash mid-save leaves the previous state there intact), then\n"
		"let it continue, or stop it with --stop.  Bring it back with\n"
		"'kapsel restore DIR'.\n"
		"\n"
		"A save that lets the VM continue is live by default: memory is written\n"
		"while the vCPU runs (rounds of what it dirtied, as a migration does) and\n"
		"the vCPU stops only for the last dirty pages and the device state; the\n"
		"state is the VM at that stop, the end of the save.  With --stop the save\n"
		"is plain by default: the vCPU stops at once and memory is written once.\n"
		"The output says how long the vCPU was stopped.\n"
		"\n"
		"  --live, --no-live   choose (see above)\n"
		"  --max-rounds N      live: pre-copy rounds after the first full copy, at most\n"
		"                      (1-%u, default %u)\n"
		"  --max-downtime MS   live: stop the vCPU once the dirty rest would take less\n"
		"                      than MS ms to write (1-%u, default %u)\n"
		"  --track             live: keep tracking dirty pages afterwards; this state is\n"
		"                      the parent of a later --diff\n"
		"  --diff              live: a dirty-only state: only the pages changed since the\n"
		"                      last tracked state, which must be a directory next to DIR;\n"
		"                      restored by layering over it (see 'kapsel merge')\n"
		"  --progress          show progress (bytes, rate, time left) on stderr even when\n"
		"                      it is not a terminal (one line per sample then)\n"
		"  --no-progress       never show it (by default: only on a terminal)\n",
		MIGRATE_MAX_ROUNDS_LIMIT, SNAPSHOT_LIVE_DEFAULT_MAX_ROUNDS,
		MIGRATE_MAX_DOWNTIME_MS_LIMIT, SNAPSHOT_LIVE_DEFAULT_MAX_DOWNTIME_MS);
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
	fprintf(out,
		"Usage: kapsel snapshot [--live|--no-live] [--max-rounds N] [--max-downtime MS]\n"
		"                       [--track] [--diff] [--progress|--no-progress] NAME DIR\n"
		"\n"
		"Take a snapshot of the running VM NAME into the state directory DIR: its\n"
		"memory and device state, and its disks frozen as they are.  The VM goes\n"
		"on at once, writing to new copy-on-write overlay files next to its disks\n"
		"(IMAGE@TIME.kovl).  'kapsel restore DIR' starts from the snapshot, on an\n"
		"overlay of its own, as often as wanted (roll back, or branch).\n"
		"\n"
		"Live by default: memory is written while the vCPU runs; the vCPU stops\n"
		"only for the last dirty pages, the device state and the freezing of the\n"
		"disks, which happens there, so disks and memory are of the same moment.\n"
		"\n"
		"  --live, --no-live   live (the default) or plain (the vCPU stops throughout)\n"
		"  --max-rounds N      pre-copy rounds after the first full copy (1-%u, default %u)\n"
		"  --max-downtime MS   stop the vCPU once the dirty rest would take less than\n"
		"                      MS ms to write (1-%u, default %u)\n"
		"  --track             keep tracking dirty pages afterwards: this snapshot is the\n"
		"                      parent of a later --diff snapshot\n"
		"  --diff              a dirty-only snapshot (as Firecracker's diff snapshots):\n"
		"                      only the pages changed since the last tracked snapshot,\n"
		"                      which must be a directory next to DIR; restored by\n"
		"                      layering over it; 'kapsel merge' makes a chain one state\n"
		"  --progress          show progress on stderr even when it is not a terminal\n"
		"  --no-progress       never show it (by default: only on a terminal)\n",
		MIGRATE_MAX_ROUNDS_LIMIT, SNAPSHOT_LIVE_DEFAULT_MAX_ROUNDS,
		MIGRATE_MAX_DOWNTIME_MS_LIMIT, SNAPSHOT_LIVE_DEFAULT_MAX_DOWNTIME_MS);
}

/* --max-rounds N / --max-downtime MS (--max-downtime-ms) of save,
 * snapshot and migrate: the pre-copy limits. */
static bool is_precopy_limit(const char *arg)
{
	return strcmp(arg, "--max-downtime-ms") == 0 || strcmp(arg, "--max-downtime") == 0 ||
	       strcmp(arg, "--max-rounds") == 0;
}

/* Parse argv[*i]'s value into *rounds or *downtime and step past it;
 * -EINVAL after saying why. */
static int parse_precopy_limit(int argc, char **argv, int *i, const char *verb, uint32_t *rounds,
			       uint32_t *downtime)
{
	bool is_rounds = strcmp(argv[*i], "--max-rounds") == 0;
	char detail[256];
	if (*i + 1 >= argc) {
		kapsel_error("%s needs a value; see 'kapsel %s --help'", argv[*i], verb);
		return -EINVAL;
	}
	if (cli_parse_u32_range(argv[*i], argv[*i + 1], 1,
				is_rounds ? MIGRATE_MAX_ROUNDS_LIMIT
					  : MIGRATE_MAX_DOWNTIME_MS_LIMIT,
				is_rounds ? rounds : downtime, detail, sizeof(detail)) < 0) {
		kapsel_error("%s", detail);
		return -EINVAL;
	}
	(*i)++;
	return 0;
}

static int save_or_snapshot(int argc, char **argv, bool snapshot)
{
	const char *verb = snapshot ? "snapshot" : "save";
	bool stop = false, track = false, diff = false;
	int live = -1;
	uint32_t rounds = 0, downtime = 0;
	const char *args[2] = { NULL, NULL };
	unsigned count = 0;
	enum cli_progress_mode progress = CLI_PROGRESS_AUTO;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--stop") == 0 && !snapshot) {
			stop = true;
		} else if (strcmp(argv[i], "--live") == 0) {
			live = 1;
		} else if (strcmp(argv[i], "--no-live") == 0) {
			live = 0;
		} else if (strcmp(argv[i], "--track") == 0) {
			track = true;
		} else if (strcmp(argv[i], "--diff") == 0) {
			diff = true;
		} else if (is_precopy_limit(argv[i])) {
			if (parse_precopy_limit(argc, argv, &i, verb, &rounds, &downtime) < 0)
				return 2;
		} else if (strcmp(argv[i], "--progress") == 0) {
			progress = CLI_PROGRESS_ALWAYS;
		} else if (strcmp(argv[i], "--no-progress") == 0) {
			progress = CLI_PROGRESS_NEVER;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			(snapshot ? cli_snapshot_usage : cli_save_usage)(stdout);
			return 0;
		} else if (argv[i][0] == '-' || count == 2) {
			kapsel_error("unexpected argument '%s'; see 'kapsel %s --help'", argv[i],
				     verb);
			return 2;
		} else {
			args[count++] = argv[i];
		}
	}
	if (count != 2) {
		kapsel_error("%s needs a VM name and a directory; see 'kapsel %s --help'", verb,
			     verb);
		return 2;
	}
	if ((track || diff) && live == 0) {
		kapsel_error("%s: --track and --diff need a live save (its pre-copy keeps the dirty log and the page checksums); leave out --no-live",
			     verb);
		return 2;
	}
	if ((rounds || downtime) && live == 0) {
		kapsel_error("%s: --max-rounds and --max-downtime bound a live save's pre-copy; leave them out with --no-live",
			     verb);
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
		return KAPSEL_EXIT_FAILED;
	char request[CONTROL_REQUEST_MAX_BYTES];
	size_t used = (size_t)snprintf(request, sizeof(request), "%s", verb);
	if (!snapshot)
		used += (size_t)snprintf(request + used, sizeof(request) - used, " stop=%s",
					 stop ? "yes" : "no");
	if (live >= 0)
		used += (size_t)snprintf(request + used, sizeof(request) - used, " live=%s",
					 live ? "yes" : "no");
	if (rounds)
		used += (size_t)snprintf(request + used, sizeof(request) - used, " max_rounds=%u",
					 rounds);
	if (downtime)
		used += (size_t)snprintf(request + used, sizeof(request) - used,
					 " max_downtime_ms=%u", downtime);
	if (track)
		used += (size_t)snprintf(request + used, sizeof(request) - used, " track=yes");
	if (diff)
		used += (size_t)snprintf(request + used, sizeof(request) - used, " diff=yes");
	used += (size_t)snprintf(request + used, sizeof(request) - used, " dir=");
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
	int err = cli_call_with_progress(args[0], request, &reply, progress);
	if (err)
		return cli_connect_error(args[0], err);
	int status = 0;
	if (reply.errnum) {
		kapsel_error("%s of '%s' failed: %s", verb, args[0],
			     reply.message ? reply.message : "");
		status = 1;
	} else if (reply.payload) {
		fputs(reply.payload, stdout);
	}
	control_reply_free(&reply);
	return status;
}

/* ---- merge ------------------------------------------------------------------ */

void cli_merge_usage(FILE *out)
{
	fprintf(out,
		"Usage: kapsel merge [--disk N=PATH[,format=raw|overlay]]... [--disk-format overlay|raw]\n"
		"                    [--keep-disks] DIR NEWDIR\n"
		"\n"
		"Write the saved state DIR, a diff snapshot (kapsel snapshot --diff) with\n"
		"the chain of states below it, or any snapshot, as one full state NEWDIR\n"
		"(created, or replaced atomically; NEWDIR may be DIR itself): memory layered\n"
		"into one memory.img, the state without its parent, and every disk the\n"
		"snapshots froze flattened into one image inside NEWDIR.  Every link of the\n"
		"chain is checked (each parent next to its diff, with the id and memory\n"
		"checksum the diff recorded), and so is the result: each new disk image is\n"
		"read back and compared with its overlay chain block by block before NEWDIR\n"
		"is committed.  Nothing of DIR, its chain or the disk images is changed.\n"
		"Restore NEWDIR with only --kernel (and --net): its disks are found inside it.\n"
		"\n"
		"  -d, --disk N=PATH[,format=raw|overlay]\n"
		"                      the image disk N of DIR is frozen in, as 'kapsel inspect\n"
		"                      DIR' shows it (a state never chooses host files; an image\n"
		"                      inside DIR is found without it); format=overlay when it is\n"
		"                      one.  Its chain of overlays is opened with every base's\n"
		"                      identity checked, at most %u deep\n"
		"      --disk-format overlay|raw\n"
		"                      overlay (default): NEWDIR/diskN.kovl, one overlay over the\n"
		"                      raw base under the chain, holding every block any overlay\n"
		"                      holds; the base must stay.  raw: NEWDIR/diskN.img, a full\n"
		"                      copy of the disk (zero blocks left as holes), needing\n"
		"                      neither the chain nor its base\n"
		"      --keep-disks    merge the memory only; the disk records keep naming the\n"
		"                      frozen images, which restore needs named with --disk\n"
		"  -v, --verbose       log more\n",
		DISK_OVERLAY_MAX_CHAIN);
}

static void print_size(char *text, size_t text_len, uint64_t bytes)
{
	if (bytes >= (10ull << 20))
		snprintf(text, text_len, "%llu MiB", (unsigned long long)(bytes >> 20));
	else
		snprintf(text, text_len, "%llu KiB", (unsigned long long)((bytes + 1023) >> 10));
}

int cli_merge(int argc, char **argv)
{
	enum {
		OPT_DISK_FORMAT = 256,
		OPT_KEEP_DISKS
	};
	static const struct option options[] = {
		{ "disk", required_argument, NULL, 'd' },
		{ "disk-format", required_argument, NULL, OPT_DISK_FORMAT },
		{ "keep-disks", no_argument, NULL, OPT_KEEP_DISKS },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct snapshot_host_files files = { 0 };
	struct snapshot_merge_options merge = { .files = &files };
	bool format_given = false, keep = false, disk_given = false;
	char error[1024];
	int opt, status = 2;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "d:vh", options, NULL)) != -1) {
		switch (opt) {
		case 'd':
			if (snapshot_parse_disk_mapping(optarg, &files, error, sizeof(error)) < 0) {
				kapsel_error("%s", error);
				goto out;
			}
			disk_given = true;
			break;
		case OPT_DISK_FORMAT:
			if (strcmp(optarg, "overlay") == 0) {
				merge.disks = SNAPSHOT_MERGE_DISKS_OVERLAY;
			} else if (strcmp(optarg, "raw") == 0) {
				merge.disks = SNAPSHOT_MERGE_DISKS_RAW;
			} else {
				kapsel_error("--disk-format '%s': overlay or raw", optarg);
				goto out;
			}
			format_given = true;
			break;
		case OPT_KEEP_DISKS:
			keep = true;
			break;
		case 'v':
			kapsel_log_set_verbose(true);
			break;
		case 'h':
			cli_merge_usage(stdout);
			status = 0;
			goto out;
		default:
			fprintf(stderr, "Try 'kapsel merge --help'.\n");
			goto out;
		}
	}
	if (keep && (format_given || disk_given)) {
		kapsel_error(
			"--keep-disks leaves the disks as they are: it takes no --disk or --disk-format");
		goto out;
	}
	if (keep)
		merge.disks = SNAPSHOT_MERGE_DISKS_KEEP;
	if (argc - optind != 2) {
		kapsel_error(
			"merge needs a state directory and a new one; see 'kapsel merge --help'");
		goto out;
	}
	const char *dir = argv[optind], *out = argv[optind + 1];
	struct snapshot_merge_stats stats;
	if (snapshot_chain_merge(dir, out, &merge, &stats, error, sizeof(error)) < 0) {
		kapsel_error("merge of '%s' failed: %s", dir, error);
		status = 1;
		goto out;
	}
	printf("merged %u layer%s of %s into %s: memory %llu MiB (%llu MiB data)\n", stats.layers,
	       stats.layers == 1 ? "" : "s", dir, out,
	       (unsigned long long)(stats.memory_bytes >> 20),
	       (unsigned long long)(stats.memory_data_bytes >> 20));
	for (unsigned i = 0; i < stats.disk_count; i++) {
		const struct snapshot_merge_disk_stats *d = &stats.disks[i];
		if (!d->flattened) {
			printf("disk %u: %s\n", i,
			       keep ? "kept: its record names the image the snapshot froze"
				    : "not frozen by a snapshot (the VM went on writing it): kept as it is");
			continue;
		}
		char disk_size[32], data[32];
		print_size(disk_size, sizeof(disk_size), d->virtual_bytes);
		print_size(data, sizeof(data), d->data_bytes);
		if (merge.disks == SNAPSHOT_MERGE_DISKS_RAW)
			printf("disk %u: %u overlay%s and their base copied into %s/%s (raw, %s disk, %s data); all %llu blocks read back and compared with the chain\n",
			       i, d->overlays, d->overlays == 1 ? "" : "s", out, d->file, disk_size,
			       data, (unsigned long long)d->blocks_compared);
		else
			printf("disk %u: %u overlay%s flattened into %s/%s, one overlay over their base (%llu blocks, %s data); read back and compared with the chain\n",
			       i, d->overlays, d->overlays == 1 ? "" : "s", out, d->file,
			       (unsigned long long)d->blocks, data);
	}
	status = 0;
out:
	snapshot_host_files_free(&files);
	return status;
}

/* ---- migrate ------------------------------------------------------------------ */

void cli_migrate_usage(FILE *out)
{
	fprintf(out,
		"Usage: kapsel migrate (--psk FILE | --insecure) [OPTIONS] NAME tcp:HOST:PORT\n"
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
		"  --max-rounds N       pre-copy rounds after the first full copy, at most\n"
		"                       (1-%u, default %u); then the vCPU stops and the rest goes\n"
		"  --max-downtime MS    stop the vCPU once the dirty rest would take less than MS\n"
		"                       milliseconds to send (1-%u, default %u; also spelt\n"
		"                       --max-downtime-ms)\n"
		"  --progress           show progress (round, bytes, rate, time left of the pass)\n"
		"                       on stderr even when it is not a terminal\n"
		"  --no-progress        never show it (by default: only on a terminal)\n",
		MIGRATE_MAX_ROUNDS_LIMIT, MIGRATE_DEFAULT_MAX_ROUNDS, MIGRATE_MAX_DOWNTIME_MS_LIMIT,
		MIGRATE_DEFAULT_MAX_DOWNTIME_MS);
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
	uint32_t downtime = 0, rounds = 0;
	enum cli_progress_mode progress = CLI_PROGRESS_AUTO;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			cli_migrate_usage(stdout);
			return 0;
		} else if (is_precopy_limit(argv[i])) {
			if (parse_precopy_limit(argc, argv, &i, "migrate", &rounds, &downtime) < 0)
				return 2;
		} else if (strcmp(argv[i], "--progress") == 0) {
			progress = CLI_PROGRESS_ALWAYS;
		} else if (strcmp(argv[i], "--no-progress") == 0) {
			progress = CLI_PROGRESS_NEVER;
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
					 " max_downtime_ms=%u", downtime);
	if (rounds)
		used += (size_t)snprintf(request + used, sizeof(request) - used, " max_rounds=%u",
					 rounds);
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
	int err = cli_call_with_progress(args[0], request, &reply, progress);
	if (err)
		return cli_connect_error(args[0], err);
	int status = 0;
	if (reply.errnum) {
		/* The message says where the VM is when it is not here, running
		 * (migrate_send: stopped, or paused with the outcome unknown). */
		bool elsewhere = reply.errnum == ENOTRECOVERABLE || reply.errnum == EINPROGRESS;
		kapsel_error("migration of '%s' failed: %s%s", args[0],
			     reply.message ? reply.message : "",
			     elsewhere ? "" : "; the VM runs on here");
		status = 1;
	} else if (reply.payload) {
		fputs(reply.payload, stdout);
	}
	control_reply_free(&reply);
	return status;
}

/* ---- clone ------------------------------------------------------------------ */

void cli_clone_usage(FILE *out)
{
	fprintf(out,
		"Usage: kapsel clone [OPTIONS] DIR\n"
		"\n"
		"Start N VMs from the saved state DIR at once.  Each clone maps\n"
		"DIR/memory.img copy-on-write (pages are shared until written) and checks\n"
		"it in the background as 'kapsel restore' does, gets its own name\n"
		"(PREFIX-1 .. PREFIX-N), UUID and MACs, and sees its generation go up.\n"
		"Exits when all clones have stopped: 0 if every clone exited 0.\n"
		"\n"
		"Options:\n"
		"  -c, --count N            how many clones (default 1)\n"
		"  -p, --prefix PREFIX      name prefix (default: the saved VM's name)\n"
		"  -k, --kernel FILE        the guest kernel (unless inside DIR)\n"
		"  -d, --disk N=PATH[,format=raw|overlay]\n"
		"                           the image of disk N (unless inside DIR); each\n"
		"                           clone runs on an overlay of its own over it\n"
		"      --net N=SPEC         the link of network interface N of every clone,\n"
		"                           SPEC as kapsel run's --net (socket=PATH,peer=PATH\n"
		"                           or tap=NAME, the saved model), where {i} stands\n"
		"                           for the clone's number: with N > 1 clones it must\n"
		"                           be in socket= or tap=, e.g.\n"
		"                           0=socket=/run/vm{i}.sock,peer=/run/switch.sock\n"
		"      --console-dir DIR    write clone i's console to DIR/PREFIX-i.log; without\n"
		"                           it, with N > 1, every console line on stdout starts\n"
		"                           with its clone's name: 'PREFIX-i| '\n"
		"      --timing             print each clone's time from start to running\n"
		"  -v, --verbose            log what Kapsel does\n");
}

/* One clone's console, read from a pipe and written to stdout line by line. */
struct clone_output {
	int fd; /* read end, -1 once closed */
	struct line_prefixer lines;
};

static volatile sig_atomic_t clone_stop_signal; /* SIGINT or SIGTERM to pass on */

static void on_clone_signal(int signo)
{
	clone_stop_signal = signo;
}

/* Copy every clone's console to stdout, each line with its name, until
 * all have closed theirs; SIGINT and SIGTERM are passed on to the clones. */
static void copy_clone_outputs(struct clone_output *outputs, const pid_t *children,
			       unsigned long count)
{
	struct sigaction sa = { .sa_handler = on_clone_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	struct pollfd *fds = calloc(count, sizeof(*fds));
	if (!fds)
		return;
	for (;;) {
		unsigned long open = 0;
		for (unsigned long i = 0; i < count; i++) {
			fds[i] = (struct pollfd){ .fd = outputs[i].fd, .events = POLLIN };
			open += outputs[i].fd >= 0;
		}
		if (!open)
			break;
		int ready = poll(fds, count, -1);
		if (clone_stop_signal) {
			for (unsigned long i = 0; i < count; i++)
				if (children[i] > 0)
					kill(children[i], (int)clone_stop_signal);
			clone_stop_signal = 0;
		}
		if (ready < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (unsigned long i = 0; i < count; i++) {
			if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			char buf[4096];
			ssize_t n = read(outputs[i].fd, buf, sizeof(buf));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				line_prefixer_flush(&outputs[i].lines, stdout);
				close(outputs[i].fd);
				outputs[i].fd = -1;
				continue;
			}
			line_prefixer_feed(&outputs[i].lines, buf, (size_t)n, stdout);
		}
	}
	free(fds);
	for (unsigned long i = 0; i < count; i++)
		if (outputs[i].fd >= 0)
			close(outputs[i].fd);
}

int cli_clone(int argc, char **argv)
{
	static const struct option options[] = {
		{ "count", required_argument, NULL, 'c' },
		{ "prefix", required_argument, NULL, 'p' },
		{ "kernel", required_argument, NULL, 'k' },
		{ "disk", required_argument, NULL, 'd' },
		{ "net", required_argument, NULL, 'N' },
		{ "console-dir", required_argument, NULL, 'o' },
		{ "timing", no_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	unsigned long count = 1;
	const char *prefix = NULL, *console_dir = NULL;
	bool timing = false;
	static struct snapshot_host_files files = { .new_identity = true };
	/* --net N=SPEC as given: expanded for each clone (its number for {i}). */
	const char *net_specs[2 * VM_CONFIG_MAX_NETS];
	unsigned net_spec_count = 0;
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
		case 'N':
			if (net_spec_count == sizeof(net_specs) / sizeof(net_specs[0])) {
				kapsel_error("too many --net options (a VM has at most %u interfaces)",
					     VM_CONFIG_MAX_NETS);
				return 2;
			}
			net_specs[net_spec_count++] = optarg;
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
	/* Every clone's links are checked now, before any clone starts: the
	 * first clone's, and that they differ between clones. */
	for (unsigned i = 0; i < net_spec_count; i++) {
		struct snapshot_host_files probe;
		memset(&probe, 0, sizeof(probe));
		int err = snapshot_parse_clone_net_mapping(net_specs[i], 1, count, &probe, detail,
							   sizeof(detail));
		snapshot_host_files_free(&probe);
		if (err) {
			kapsel_error("%s", detail);
			return 2;
		}
	}

	/* Check the snapshot once (memory.img's checksum is checked by each
	 * clone in the background, while it runs: memory_check.h), so that a
	 * bad one is refused before any clone starts. */
	struct vm_state_dir dir;
	char error[1024];
	uint64_t verify_start = monotonic_ns();
	if (vm_state_dir_open(&dir, path, false, error, sizeof(error)) < 0) {
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
	struct clone_output *outputs = calloc(count, sizeof(*outputs));
	if (!children || !outputs) {
		free(children);
		free(outputs);
		return KAPSEL_EXIT_VMM_ERROR;
	}
	/* Several consoles on one stdout: each line carries its clone's name. */
	bool prefix_lines = count > 1 && !console_dir;
	for (unsigned long i = 0; i < count; i++)
		outputs[i].fd = -1;
	fflush(NULL);
	for (unsigned long i = 0; i < count; i++) {
		char name[VM_CONFIG_NAME_MAX];
		snprintf(name, sizeof(name), "%.40s-%lu", prefix, i + 1);
		int pipe_fds[2] = { -1, -1 };
		if (prefix_lines && pipe2(pipe_fds, O_CLOEXEC) < 0) {
			kapsel_error("cannot start clone '%s': %s", name, strerror(errno));
			break;
		}
		pid_t pid = fork();
		if (pid < 0) {
			kapsel_error("cannot start clone '%s': %s", name, strerror(errno));
			if (prefix_lines) {
				close(pipe_fds[0]);
				close(pipe_fds[1]);
			}
			break;
		}
		if (pid == 0 && prefix_lines) {
			dup2(pipe_fds[1], STDOUT_FILENO);
			for (unsigned long j = 0; j < i; j++)
				close(outputs[j].fd);
		}
		if (pid == 0) {
			for (unsigned n = 0; n < net_spec_count; n++)
				if (snapshot_parse_clone_net_mapping(net_specs[n], i + 1, count,
								     &files, detail,
								     sizeof(detail)) < 0) {
					kapsel_error("clone '%s': %s", name, detail);
					_exit(2);
				}
			char console[4096];
			struct restore_settings settings = {
				.dir = path,
				.name = name,
				.clone = true,
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
		if (prefix_lines) {
			close(pipe_fds[1]);
			outputs[i].fd = pipe_fds[0];
			line_prefixer_init(&outputs[i].lines, name);
		}
	}
	if (prefix_lines)
		copy_clone_outputs(outputs, children, count);
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
		if (code && count > 1)
			kapsel_warn("clone '%.40s-%lu' exited with status %d", prefix, i + 1, code);
		if (code && !status)
			status = code;
	}
	free(children);
	free(outputs);
	return status;
}
