/* The `kapsel` command: dispatches to its verbs (run, bench, ...). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_state.h"
#include "control/control_client.h"
#include "control/control_json.h"
#include "core/json_writer.h"
#include "core/sandbox.h"
#include "core/vm.h"
#include "devices/block/disk.h"
#include "kapsel/abi.h"
#include "state/vm_state.h"

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: kapsel COMMAND [OPTIONS]\n"
		"\n"
		"Kapsel is a thin paravirtualizing hypervisor on Linux KVM.\n"
		"\n"
		"Commands:\n"
		"  run       boot a guest kernel and run it until it powers off\n"
		"  bench     measure native vs paravirtualized vs emulated I/O side by side\n"
		"\n"
		"  list      list the VMs running (or waiting for a migration) on this host\n"
		"  info      show a VM's state, memory, devices and disks\n"
		"  pause     stop a VM's vCPU\n"
		"  resume    let a paused VM run again\n"
		"  shutdown  ask a VM's guest to power off; destroy it after a timeout\n"
		"  destroy   end a VM at once\n"
		"  reboot    ask a VM's guest to shut down and boot again\n"
		"  stats     print a VM's exit and device counters, once or repeatedly\n"
		"  console   attach to a VM's console (Ctrl-] detaches; a script's EOF ends it)\n"
		"  dumpxml   print a VM's definition as libvirt domain XML\n"
		"  control   send any request to a VM's control socket\n"
		"\n"
		"  save      save a running VM to a state directory (stop or continue)\n"
		"  snapshot  save a running VM and freeze its disks; it goes on on overlays\n"
		"  restore   run a saved VM from exactly where it was\n"
		"  clone     start N copies of a saved VM that share its memory\n"
		"  migrate   live-migrate a running VM to 'kapsel run --incoming' elsewhere\n"
		"  inspect   check and decode a saved VM state offline\n"
		"  merge     make a snapshot chain one full state, its disks one image each\n"
		"\n"
		"  version   print Kapsel's version and hypercall ABI version (--json: as JSON)\n"
		"  help      show this help, or 'kapsel help COMMAND' for a command's options\n"
		"\n"
		"Run 'kapsel COMMAND --help' for the options of a command.  list, info,\n"
		"stats, inspect and version take --json: one JSON object with a versioned\n"
		"\"schema\" (docs/control.md, \"JSON output\").\n"
		"\n"
		"Exit status:\n"
		"  0    success; run, restore, clone: the guest powered off with 0;\n"
		"       run --daemon: the VM runs (its own end is not reported)\n"
		"  N    run, restore, clone: the guest powered off with exit code N\n"
		"  1    the command failed (no such VM, the VM refused, a bench path\n"
		"       that could not be measured, an invalid state directory)\n"
		"  2    wrong command line (unknown command or option, bad value, missing\n"
		"       argument); nothing was done\n"
		"  %d  the VM was stopped by the sandbox (a forbidden system call)\n"
		"  %d  the VM was stopped from outside before its guest powered off\n"
		"       (kapsel destroy, a shutdown deadline, SIGINT or SIGTERM)\n"
		"  %d  Kapsel could not start or run the VM\n"
		"  %d  the guest crashed\n"
		"  130  kapsel bench was interrupted (it reports what it measured)\n",
		KAPSEL_EXIT_SANDBOX_VIOLATION, KAPSEL_EXIT_STOPPED, KAPSEL_EXIT_VMM_ERROR,
		KAPSEL_EXIT_GUEST_CRASH);
}

/* kapsel version [--json] */
static int version(int argc, char **argv)
{
	bool json = argc == 2 && strcmp(argv[1], "--json") == 0;
	if (argc > 1 && !json) {
		fprintf(stderr, "kapsel version: unexpected argument '%s'; it takes only --json\n",
			argv[1]);
		return KAPSEL_EXIT_USAGE;
	}
	if (!json) {
		printf("kapsel %s (hypercall ABI %u.%u)\n", KAPSEL_VERSION, KAPSEL_ABI_MAJOR,
		       KAPSEL_ABI_MINOR);
		return 0;
	}
	struct json_writer w;
	json_writer_init(&w, stdout, true);
	json_writer_open(&w, NULL, '{');
	json_writer_string(&w, "schema", "kapsel.version/1");
	json_writer_string(&w, "version", KAPSEL_VERSION);
	json_writer_open(&w, "hypercall_abi", '{');
	json_writer_u64(&w, "major", KAPSEL_ABI_MAJOR);
	json_writer_u64(&w, "minor", KAPSEL_ABI_MINOR);
	json_writer_close(&w, '}');
	json_writer_u64(&w, "control_json_protocol", CONTROL_JSON_VERSION);
	json_writer_u64(&w, "state_format", VM_STATE_FORMAT_VERSION);
	json_writer_close(&w, '}');
	putchar('\n');
	return 0;
}

struct verb {
	const char *name;
	int (*main)(int argc, char **argv);
	void (*usage)(FILE *out);
};

static const struct verb verbs[] = {
	{ "run", cli_run, cli_run_usage },
	{ "bench", cli_bench, cli_bench_usage },
	{ "list", cli_list, cli_list_usage },
	{ "info", cli_info, cli_info_usage },
	{ "pause", cli_pause, cli_pause_usage },
	{ "resume", cli_resume, cli_resume_usage },
	{ "shutdown", cli_shutdown, cli_shutdown_usage },
	{ "destroy", cli_destroy, cli_destroy_usage },
	{ "reboot", cli_reboot, cli_reboot_usage },
	{ "stats", cli_stats, cli_stats_usage },
	{ "console", cli_console, cli_console_usage },
	{ "dumpxml", cli_dumpxml, cli_dumpxml_usage },
	{ "control", cli_control, cli_control_usage },
	{ "save", cli_save, cli_save_usage },
	{ "snapshot", cli_snapshot, cli_snapshot_usage },
	{ "migrate", cli_migrate, cli_migrate_usage },
	{ "restore", cli_restore, cli_restore_usage },
	{ "clone", cli_clone, cli_clone_usage },
	{ "inspect", cli_inspect, cli_inspect_usage },
	{ "merge", cli_merge, cli_merge_usage },
};

static const struct verb *find_verb(const char *name)
{
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (strcmp(verbs[i].name, name) == 0)
			return &verbs[i];
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return KAPSEL_EXIT_USAGE;
	}
	const char *name = argv[1];
	if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "help") == 0) {
		if (argc > 2 && find_verb(argv[2])) {
			find_verb(argv[2])->usage(stdout);
			return 0;
		}
		usage(stdout);
		return 0;
	}
	if (strcmp(name, "version") == 0 || strcmp(name, "--version") == 0)
		return version(argc - 1, argv + 1);
	const struct verb *verb = find_verb(name);
	if (!verb) {
		fprintf(stderr, "kapsel: '%s' is not a command; see 'kapsel --help'\n", name);
		return KAPSEL_EXIT_USAGE;
	}
	/* A locked disk's message names the VM holding it (asked over the
	 * control sockets here, in the front end, never by the devices). */
	disk_set_lock_holder_lookup(control_find_disk_holder);
	/* The verb sees itself as argv[0], named as the user typed it, so that
	 * getopt's own messages read "kapsel run: unrecognized option ...". */
	char verb_argv0[64];
	snprintf(verb_argv0, sizeof(verb_argv0), "kapsel %s", verb->name);
	argv[1] = verb_argv0;
	return verb->main(argc - 1, argv + 1);
}
