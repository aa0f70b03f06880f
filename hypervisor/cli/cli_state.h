/* VM-state verbs of the `kapsel` command: save, snapshot and migrate a running VM, restore and clone a saved one. */
#ifndef KAPSEL_CLI_STATE_H
#define KAPSEL_CLI_STATE_H

#include <stdio.h>

int cli_save(int argc, char **argv);
void cli_save_usage(FILE *out);
int cli_snapshot(int argc, char **argv);
void cli_snapshot_usage(FILE *out);
/* Write a diff snapshot and its chain as one full state. */
int cli_merge(int argc, char **argv);
void cli_merge_usage(FILE *out);
int cli_migrate(int argc, char **argv);
void cli_migrate_usage(FILE *out);
int cli_restore(int argc, char **argv);
void cli_restore_usage(FILE *out);
int cli_clone(int argc, char **argv);
void cli_clone_usage(FILE *out);

#endif
