/* The `kapsel` command's verbs; each takes argc/argv from its verb on and returns the exit status. */
#ifndef KAPSEL_CLI_H
#define KAPSEL_CLI_H

#include <stdio.h>

int cli_run(int argc, char **argv);
void cli_run_usage(FILE *out);

/* cli_inspect.c: check and decode a saved VM state directory. */
int cli_inspect(int argc, char **argv);
void cli_inspect_usage(FILE *out);

/* cli_bench.c: native vs PV vs emulated I/O benchmark. */
int cli_bench(int argc, char **argv);
void cli_bench_usage(FILE *out);

/* cli_control.c: verbs that talk to running VMs' control sockets. */
int cli_list(int argc, char **argv);
void cli_list_usage(FILE *out);
int cli_info(int argc, char **argv);
void cli_info_usage(FILE *out);
int cli_pause(int argc, char **argv);
void cli_pause_usage(FILE *out);
int cli_resume(int argc, char **argv);
void cli_resume_usage(FILE *out);
int cli_shutdown(int argc, char **argv);
void cli_shutdown_usage(FILE *out);
int cli_destroy(int argc, char **argv);
void cli_destroy_usage(FILE *out);
int cli_reboot(int argc, char **argv);
void cli_reboot_usage(FILE *out);

/* Explain a failure (negative errno) to reach VM name (a name, domain id
 * or UUID) on stderr; returns the exit status 1. */
int cli_connect_error(const char *name, int err);
/* Write all len bytes to fd (EINTR retried); 0 or a negative errno. */
int cli_write_all(int fd, const char *data, size_t len);
int cli_stats(int argc, char **argv);
void cli_stats_usage(FILE *out);
int cli_console(int argc, char **argv);
void cli_console_usage(FILE *out);
int cli_dumpxml(int argc, char **argv);
void cli_dumpxml_usage(FILE *out);
int cli_control(int argc, char **argv);
void cli_control_usage(FILE *out);

#endif
