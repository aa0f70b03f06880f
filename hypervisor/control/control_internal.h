/* Internals shared by the control server (control.c), its parser (control_protocol.c) and built-in verbs (control_verbs.c). */
#ifndef KAPSEL_CONTROL_INTERNAL_H
#define KAPSEL_CONTROL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "control/control.h"

#define CONTROL_MAX_VERBS 48u

/* The registered handler for name, or NULL. */
control_verb_fn control_find_verb(const char *name);

/* Whether name was registered with control_register_background_verb. */
bool control_verb_is_background(const char *name);

/* Whether name was registered with control_register_json_verb. */
bool control_verb_is_json(const char *name);

/* Print every registered verb's help line. */
void control_print_verbs(FILE *out);

/* The errno whose control_errno_name is name (EIO when unknown). */
int control_errno_from_name(const char *name);

/* Register info, pause, resume, shutdown, destroy, stats, set-limits,
 * dumpxml and help (once per process; later calls return 0). */
int control_register_builtin_verbs(void);

/*
 * Arm the forced end of a graceful shutdown: when the Kapsel clock passes
 * deadline_ns and the VM still runs, the control thread destroys it.
 * Precondition: called from a verb (the control thread) of vm's server.
 */
void control_server_set_deadline(struct kapsel_vm *vm, uint64_t deadline_ns);

/* Record that the VM is being destroyed (the 'wait' reply says so). */
void control_server_mark_destroyed(struct kapsel_vm *vm);

/* Seconds since the Unix epoch when the server started (info). */
uint64_t control_server_started_unix(struct kapsel_vm *vm);

/* This server's domain id (xenctrl mapping, docs/xenctrl.md), or 0. */
unsigned control_server_domid(struct kapsel_vm *vm);

#endif
