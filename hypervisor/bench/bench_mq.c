/* `kapsel bench` multi-queue row (mq-randread-4K): random 4 KiB reads at qd 32, 1 vCPU on 1 queue against 2 vCPUs on 2 queues (blkmq.elf), beside the host's CPU count and load. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define MQ_QD 32u

struct mq_result {
	bool ok;
	unsigned vcpus, queues;
	unsigned long long ops, ns;
	double load_before, load_after;
	char error[256];
};

static double mq_load(void)
{
	double load[1];
	return getloadavg(load, 1) == 1 ? load[0] : NAN;
}

/* blkmq.elf next to blkbench.elf (the same build or install directory). */
static char *mq_guest_path(const struct bench_options *options)
{
	return bench_sibling_file(options->guest_path, "blkmq.elf");
}

static void mq_run(const struct bench_options *options, const char *guest, const char *disk_path,
		   const char *work_dir, unsigned vcpus, struct mq_result *r)
{
	memset(r, 0, sizeof(*r));
	r->vcpus = vcpus;
	r->queues = vcpus; /* as configured; the guest's report confirms it */
	char out_path[PATH_MAX], disk[PATH_MAX + 64], vcpu_text[16], cmdline[128];
	snprintf(out_path, sizeof(out_path), "%s/mq-%u.out", work_dir, vcpus);
	snprintf(disk, sizeof(disk), "%s,cache=none,queues=%u", disk_path, vcpus);
	snprintf(vcpu_text, sizeof(vcpu_text), "%u", vcpus);
	uint64_t ms = options->runtime_ns / 1000000u;
	snprintf(cmdline, sizeof(cmdline), "bench qd=%u ms=%llu sectors=%llu seed=%llu", MQ_QD,
		 (unsigned long long)(ms ? ms : 1),
		 (unsigned long long)(options->size_bytes / 512u),
		 (unsigned long long)options->seed);
	char *argv[] = { options->kapsel_path,
			 "run",
			 "--kernel",
			 (char *)guest,
			 "--vcpus",
			 vcpu_text,
			 "--disk",
			 disk,
			 "--cmdline",
			 cmdline,
			 "--no-control",
			 "--no-console-input",
			 NULL };
	bench_echo_argv(options, argv, "");
	r->load_before = mq_load();
	pid_t pid = bench_spawn_to_file(argv, out_path, false);
	if (pid < 0) {
		snprintf(r->error, sizeof(r->error), "fork: %s", strerror((int)-pid));
		return;
	}
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	r->load_after = mq_load();
	FILE *f = fopen(out_path, "r");
	char line[512];
	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "blkmq bench: vcpus %u queues %u ops %llu ns %llu", &r->vcpus,
			   &r->queues, &r->ops, &r->ns) == 4 &&
		    r->ns)
			r->ok = true;
		else if (strstr(line, "FAILED"))
			snprintf(r->error, sizeof(r->error), "%.200s", line);
	}
	if (f)
		fclose(f);
	if (!r->ok && !r->error[0])
		snprintf(r->error, sizeof(r->error),
			 "the guest printed no result (kapsel exit status %d; output in %.150s)",
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1, out_path);
	r->error[strcspn(r->error, "\n")] = '\0';
}

bool bench_mq_report(const struct bench_options *options, const char *disk_path,
		     const char *work_dir, FILE *out)
{
	char *guest = mq_guest_path(options);
	fprintf(out,
		"\nmulti-queue PV block, randread-4K qd=%u per vCPU (blkmq.elf); host: %ld CPUs\n",
		MQ_QD, sysconf(_SC_NPROCESSORS_ONLN));
	if (!guest) {
		fprintf(out,
			"  not run: blkmq.elf not found next to blkbench.elf (build it: ninja -C BUILD)\n");
		return false;
	}
	struct mq_result one, two;
	mq_run(options, guest, disk_path, work_dir, 1, &one);
	mq_run(options, guest, disk_path, work_dir, 2, &two);
	free(guest);
	fprintf(out, "  %-22s %12s %10s %16s\n", "setup", "IOPS", "vs 1 queue", "host load 1m");
	const struct mq_result *rows[] = { &one, &two };
	for (unsigned i = 0; i < 2; i++) {
		const struct mq_result *r = rows[i];
		char setup[32];
		snprintf(setup, sizeof(setup), "%u vCPU%s, %u queue%s", r->vcpus,
			 r->vcpus == 1 ? "" : "s", r->queues, r->queues == 1 ? "" : "s");
		if (!r->ok) {
			fprintf(out, "  %-22s failed: %s\n", setup, r->error);
			continue;
		}
		double iops = r->ops / (r->ns / 1e9);
		double base = one.ok ? one.ops / (one.ns / 1e9) : NAN;
		fprintf(out, "  %-22s %12.0f %9.2fx %7.2f -> %5.2f\n", setup, iops,
			isnan(base) ? NAN : iops / base, r->load_before, r->load_after);
	}
	fprintf(out, "  (vCPU threads and the one I/O thread share the host's CPUs: "
		     "see docs/benchmarks.md)\n");
	return one.ok && two.ok;
}
