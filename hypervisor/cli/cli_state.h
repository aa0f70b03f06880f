/* VM-state verbs of the `kapsel` command (restore, inspect, clone) and the save trigger of a running VM. */
#ifndef KAPSEL_CLI_STATE_H
#define KAPSEL_CLI_STATE_H

#include <stdbool.h>
#include <stdio.h>

struct kapsel_vm;

int cli_save(int argc, char **argv);
void cli_save_usage(FILE *out);
int cli_snapshot(int argc, char **argv);
void cli_snapshot_usage(FILE *out);
int cli_migrate(int argc, char **argv);
void cli_migrate_usage(FILE *out);
int cli_restore(int argc, char **argv);
void cli_restore_usage(FILE *out);
int cli_inspect(int argc, char **argv);
void cli_inspect_usage(FILE *out);
int cli_clone(int argc, char **argv);
void cli_clone_usage(FILE *out);

/*
 * Saving a running VM on SIGHUP (`--save-on-signal DIR`): start a helper
 * thread that, on each SIGHUP, pauses the vCPU, saves to save_dir and then
 * resumes it, or stops the VM when stop_after_save is set.  Also registers
 * the control socket verb 'save'.  Precondition: vm was created and
 * vm_run is about to be called on this thread.  save_dir may be NULL (only
 * the control verb then).  Returns 0 or a negative errno (message printed).
 */
int state_runner_start(struct kapsel_vm *vm, const char *save_dir, bool stop_after_save);

/*
 * After vm_run returned: stop the helper thread.  Returns true if the VM
 * stopped because a save asked it to (the run then succeeded: exit 0).
 */
bool state_runner_stop(struct kapsel_vm *vm);

/*
 * Run vm on this thread until it stops, then release it: SIGINT and SIGTERM
 * ask it to stop, SIGUSR1 prints its counters, SIGHUP saves it to save_dir
 * (as state_runner_start).  Afterwards stops control (may be NULL), prints
 * the counters to stderr when print_stats, and destroys vm.  Precondition:
 * vm was created (and restored, if so) and control, if any, is attached to
 * it.  Returns the exit status.
 */
struct control_server;
int state_run_until_stopped(struct kapsel_vm *vm, struct control_server *control,
			    const char *save_dir, bool save_stop, bool print_stats);

/*
 * `kapsel run --incoming URI`: wait for a live migration on URI, then run
 * the VM that arrived until it stops.  overrides carries the command
 * line's name (if any, else the stream's), console and stats settings.
 * Returns the exit status.
 */
struct vm_config;
int state_run_incoming(const char *uri, const struct vm_config *overrides, bool use_control);

/* Register the control socket verbs of this module ('save'); idempotent. */
void state_register_control_verbs(void);

#endif
