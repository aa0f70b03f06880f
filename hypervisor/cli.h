/* The `kapsel` command's verbs; each takes argc/argv from its verb on and returns the exit status. */
#ifndef KAPSEL_CLI_H
#define KAPSEL_CLI_H

#include <stdio.h>

int cli_run(int argc, char **argv);
void cli_run_usage(FILE *out);

#endif
