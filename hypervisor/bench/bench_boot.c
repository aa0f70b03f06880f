/* `kapsel bench` boot row: one guest (hello.elf) from process start to exit on Kapsel, QEMU -M microvm and QEMU -M pc. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "bench.h"

/*
 * What is timed is what a user waits for: fork, exec of the hypervisor,
 * its setup, the guest's boot and its run to the exit, and the
 * hypervisor's teardown, until waitpid returns.  The guest is
 * hello.elf, which prints one line and exits: on Kapsel through the
 * shutdown hypercall, on QEMU through the reference runtime's PVH entry
 * and isa-debug-exit.  Output goes to a file, so no terminal is timed.
 */

#define BOOT_TIMEOUT_NS 60000000000ull
#define BOOT_GREETING "Hello from a Kapsel guest!"

static const char *const setup_names[BENCH_BOOT_SETUPS] = { "kapsel", "qemu-microvm", "qemu-pc" };

const char *bench_boot_setup_name(unsigned setup)
{
	return setup < BENCH_BOOT_SETUPS ? setup_names[setup] : "?";
}

/* hello.elf next to blkbench.elf (the same build or install directory). */
static char *hello_path(const struct bench_options *options)
{
	return bench_sibling_file(options->guest_path ? options->guest_path
						      : options->cpu_guest_path,
				  "hello.elf");
}

/* Does file hold the greeting?  (The guest really ran.) */
static bool greeted(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[512];
	bool found = false;
	while (f && !found && fgets(line, sizeof(line), f))
		found = strstr(line, BOOT_GREETING) != NULL;
	if (f)
		fclose(f);
	return found;
}

/* One boot: argv until it exits; returns wall ns or 0 with error set. */
static uint64_t boot_once(char *const argv[], const char *out_path, bool qemu, char *error,
			  size_t error_len)
{
	uint64_t start = monotonic_ns();
	pid_t pid = bench_spawn_to_file(argv, out_path, true);
	if (pid < 0) {
		snprintf(error, error_len, "fork: %s", strerror((int)-pid));
		return 0;
	}
	int status = 0;
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (r < 0 && errno != EINTR) {
			snprintf(error, error_len, "waitpid: %s", strerror(errno));
			return 0;
		}
		if (monotonic_ns() - start > BOOT_TIMEOUT_NS || bench_interrupted()) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			snprintf(error, error_len, "the guest did not exit in %llu s",
				 BOOT_TIMEOUT_NS / 1000000000ull);
			return 0;
		}
		struct timespec pause = { 0, 50000 };
		nanosleep(&pause, NULL);
	}
	uint64_t elapsed = monotonic_ns() - start;
	int code = qemu ? bench_qemu_guest_code(status)
			: (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	if (code != 0 || !greeted(out_path)) {
		char line[200] = "";
		FILE *f = fopen(out_path, "r");
		while (f && fgets(line, sizeof(line), f))
			;
		if (f)
			fclose(f);
		line[strcspn(line, "\n")] = '\0';
		snprintf(error, error_len, "%s exited with %s %d%s%s", qemu ? "QEMU" : "kapsel run",
			 qemu ? "guest code" : "status", code, line[0] ? ": " : "", line);
		return 0;
	}
	return elapsed;
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

void bench_boot_run(const struct bench_options *options, struct bench_results *results,
		    const char *work_dir)
{
	struct bench_boot *boot = &results->boot;
	memset(boot, 0, sizeof(*boot));
	boot->ran = true;
	char *guest = hello_path(options);
	if (!guest) {
		for (unsigned s = 0; s < BENCH_BOOT_SETUPS; s++)
			snprintf(boot->setups[s].error, sizeof(boot->setups[s].error),
				 "hello.elf not found next to blkbench.elf (build it: ninja -C BUILD)");
		return;
	}
	snprintf(boot->guest, sizeof(boot->guest), "%s", guest);
	unsigned runs = options->repeat < 3 ? 3 : options->repeat + 2;
	if (runs > BENCH_BOOT_MAX_RUNS)
		runs = BENCH_BOOT_MAX_RUNS;
	char out_path[PATH_MAX];
	snprintf(out_path, sizeof(out_path), "%s/boot.out", work_dir);
	for (unsigned s = 0; s < BENCH_BOOT_SETUPS && !bench_interrupted(); s++) {
		struct bench_boot_setup *setup = &boot->setups[s];
		bool qemu = s != BENCH_BOOT_KAPSEL;
		if (qemu && !results->qemu_accel) {
			snprintf(setup->error, sizeof(setup->error),
				 "no QEMU: not installed, or --paths without qemu");
			continue;
		}
		if (!qemu && !options->paths[BENCH_PATH_PV]) {
			snprintf(setup->error, sizeof(setup->error),
				 "the pv path is not asked for");
			continue;
		}
		char *argv[32];
		unsigned argc = 0;
		if (qemu) {
			argv[argc++] = (char *)results->qemu_binary;
			argv[argc++] = "-M";
			argv[argc++] = s == BENCH_BOOT_QEMU_MICROVM ? "microvm" : "pc";
			argv[argc++] = "-accel";
			argv[argc++] = (char *)results->qemu_accel;
			argv[argc++] = "-m";
			argv[argc++] = "64M";
			argv[argc++] = "-nodefaults";
			argv[argc++] = "-no-user-config";
			argv[argc++] = "-display";
			argv[argc++] = "none";
			argv[argc++] = "-no-reboot";
			argv[argc++] = "-serial";
			argv[argc++] = "stdio";
			argv[argc++] = "-device";
			argv[argc++] = "isa-debug-exit,iobase=0xf4,iosize=0x04";
			argv[argc++] = "-kernel";
			argv[argc++] = guest;
		} else {
			argv[argc++] = options->kapsel_path;
			argv[argc++] = "run";
			argv[argc++] = "--kernel";
			argv[argc++] = guest;
			argv[argc++] = "--memory";
			argv[argc++] = "64M";
			argv[argc++] = "--no-control";
			argv[argc++] = "--no-console-input";
		}
		argv[argc] = NULL;
		bench_join_argv(setup->command, sizeof(setup->command), argv);
		for (unsigned r = 0; r < runs && !bench_interrupted(); r++) {
			uint64_t ns =
				boot_once(argv, out_path, qemu, setup->error, sizeof(setup->error));
			if (!ns) {
				setup->run_count = 0;
				break;
			}
			setup->run_ns[setup->run_count++] = ns;
			setup->error[0] = '\0';
		}
		if (setup->run_count) {
			uint64_t sorted[BENCH_BOOT_MAX_RUNS];
			memcpy(sorted, setup->run_ns, setup->run_count * sizeof(sorted[0]));
			qsort(sorted, setup->run_count, sizeof(sorted[0]), compare_u64);
			setup->ok = true;
			setup->median_ms = sorted[setup->run_count / 2] / 1e6;
			setup->min_ms = sorted[0] / 1e6;
			setup->max_ms = sorted[setup->run_count - 1] / 1e6;
		}
		if (options->verbose)
			fprintf(stderr, "    boot %s: %s %.1f ms (median of %u)%s%s\n",
				setup_names[s], setup->ok ? "ok" : "FAILED", setup->median_ms,
				setup->run_count, setup->error[0] ? " - " : "", setup->error);
	}
	unlink(out_path);
	free(guest);
	const struct bench_boot_setup *kapsel = &boot->setups[BENCH_BOOT_KAPSEL],
				      *microvm = &boot->setups[BENCH_BOOT_QEMU_MICROVM];
	boot->ratio_kapsel_microvm = kapsel->ok && microvm->ok && microvm->median_ms > 0
					     ? kapsel->median_ms / microvm->median_ms
					     : NAN;
}

bool bench_boot_failed(const struct bench_results *results)
{
	const struct bench_boot *boot = &results->boot;
	if (!boot->ran)
		return false;
	for (unsigned s = 0; s < BENCH_BOOT_SETUPS; s++)
		if (!boot->setups[s].ok && boot->setups[s].run_count == 0 &&
		    strncmp(boot->setups[s].error, "no QEMU", 7) != 0 &&
		    strncmp(boot->setups[s].error, "the pv path", 11) != 0)
			return true;
	return false;
}
