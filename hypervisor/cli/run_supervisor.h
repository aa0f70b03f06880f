/* Running a VM until it stops: signals, the save helper thread, the save/snapshot/migrate control verbs, incoming migration. */
#ifndef KAPSEL_RUN_SUPERVISOR_H
#define KAPSEL_RUN_SUPERVISOR_H

#include <stdbool.h>

struct kapsel_vm;
struct control_server;
struct vm_config;

/*
 * Run vm on this thread until it stops, then release it: SIGINT and SIGTERM
 * ask it to stop, SIGUSR1 prints its counters, SIGHUP saves it to save_dir
 * (when not NULL; then continues, or stops the VM when save_stop is set).
 * Registers the control verbs of run_supervisor_register_control_verbs
 * and enters the sandbox before the vCPU runs.  Afterwards stops control
 * (may be NULL), prints the counters to stderr when print_stats, and
 * destroys vm.  Precondition: vm was created (and restored, if so) and
 * control, if any, is attached to it.  Returns the exit status (0 when a
 * save or migration stopped the VM).
 */
int run_supervisor_until_stopped(struct kapsel_vm *vm, struct control_server *control,
				 const char *save_dir, bool save_stop, bool print_stats);

/*
 * `kapsel run --incoming URI`: wait for a live migration on URI, then run
 * the VM that arrived until it stops.  overrides carries the command
 * line's name (if any, else the stream's), console and stats settings.
 * Returns the exit status.
 */
int run_supervisor_incoming(const char *uri, const struct vm_config *overrides, bool use_control);

/*
 * Hooks for `kapsel run --daemon` and --pidfile: prepare(opaque) once the
 * VM is set up, before the sandbox is entered (so it may still open and
 * rename files; a non-zero return stops the VM before it runs, exit status
 * KAPSEL_EXIT_VMM_ERROR), and running(opaque) once the sandbox is in
 * place, just before the vCPU runs (only the sandbox's base set of system
 * calls: write, close, dup3, ...).  Either may be NULL; all NULL clears.
 */
void run_supervisor_on_running(int (*prepare)(void *opaque), void (*running)(void *opaque),
			       void *opaque);

/* Register the control socket verbs of a running VM ('save', 'snapshot',
 * 'migrate'); idempotent. */
void run_supervisor_register_control_verbs(void);

#endif
