/* `kapsel bench` reports: the terminal table, the JSON document and the gnuplot chart. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "core/json_writer.h"

/* 2: CPU rows (kind "cpu"), the metrics lat_max_us, us_per_op, deliver_p50_us,
 * deliver_p99_us, rows[].cpu, ratios.cost_pv_native and the top-level cpu.
 * 3: the paths qemu-virtio and qemu-ide, ratios.pv_qemu_virtio and
 * ratios.emulated_qemu_ide, the top-level qemu. */
#define KAPSEL_BENCH_SCHEMA 3
#define KAPSEL_BENCH_VERSION KAPSEL_VERSION /* from meson.build */

/* ---- Goals --------------------------------------------------------------- */

struct bench_goal {
	char text[96];
	char row[64];
	double target, measured;
	bool at_most; /* measured <= target meets it (else >=) */
};

#define MAX_GOALS 64u

static void row_label(const struct bench_row *row, char *out, size_t len)
{
	if (row->workload->kind == BENCH_KIND_CONSOLE)
		snprintf(out, len, "%s", row->workload->name);
	else if (row->workload->kind == BENCH_KIND_NET)
		snprintf(out, len, "%s", row->workload->name);
	else
		snprintf(out, len, "%s qd=%u cache=%s", row->workload->name, row->iodepth,
			 bench_cache_name(row->cache));
}

static double pv_median(const struct bench_row *row, enum bench_metric metric)
{
	const struct bench_path_result *pv = &row->paths[BENCH_PATH_PV];
	return pv->status == BENCH_STATUS_OK ? pv->stats[metric].median : NAN;
}

/* Issue 18's goals for a net row: rr p50 within 2x of native, stream >= 0.8
 * of native frames/s, stream exits per frame <= 0.05.  At most 2 goals. */
static unsigned net_goals(const struct bench_options *options, const struct bench_row *row,
			  struct bench_goal *goals)
{
	unsigned n = 0;
	const struct bench_path_result *native = &row->paths[BENCH_PATH_NATIVE];
	bool have_native = options->paths[BENCH_PATH_NATIVE] && native->status == BENCH_STATUS_OK;
	if (!row->workload->net_stream) {
		struct bench_goal *g = &goals[n++];
		snprintf(g->text, sizeof(g->text),
			 "PV round trip p50 <= 2x native over the same link");
		snprintf(g->row, sizeof(g->row), "%s", row->workload->name);
		g->target = 2.0;
		double pv = pv_median(row, BENCH_M_LAT_P50_US);
		g->measured = have_native && native->stats[BENCH_M_LAT_P50_US].median > 0
				      ? pv / native->stats[BENCH_M_LAT_P50_US].median
				      : NAN;
		g->at_most = true;
		return n;
	}
	struct bench_goal *g = &goals[n++];
	snprintf(g->text, sizeof(g->text), "PV stream >= 80%% of native frames/s");
	snprintf(g->row, sizeof(g->row), "%s", row->workload->name);
	g->target = 0.8;
	g->measured = row->ratio_pv_native;
	g->at_most = false;
	g = &goals[n++];
	snprintf(g->text, sizeof(g->text), "PV exits/frame <= 0.05 when streaming");
	snprintf(g->row, sizeof(g->row), "%s", row->workload->name);
	g->target = 0.05;
	g->measured = pv_median(row, BENCH_M_EXITS_PER_OP);
	g->at_most = true;
	return n;
}

static unsigned compute_goals(const struct bench_options *options,
			      const struct bench_results *results, struct bench_goal *goals)
{
	unsigned n = 0;
	if (!options->paths[BENCH_PATH_PV])
		return 0;
	for (unsigned i = 0; i < results->row_count && n + 3 <= MAX_GOALS; i++) {
		const struct bench_row *row = &results->rows[i];
		const struct bench_workload *w = row->workload;
		if (w->kind == BENCH_KIND_NET) {
			n += net_goals(options, row, goals + n);
			continue;
		}
		if (w->kind != BENCH_KIND_BLOCK)
			continue;
		char label[64];
		row_label(row, label, sizeof(label));
		if (options->paths[BENCH_PATH_QEMU_VIRTIO]) {
			/* Issue 15: Kapsel's PV at or above QEMU's virtio-blk. */
			struct bench_goal *g = &goals[n++];
			snprintf(g->text, sizeof(g->text), "PV >= QEMU virtio-blk MB/s");
			snprintf(g->row, sizeof(g->row), "%s", label);
			g->target = 1.0;
			g->measured = row->ratio_pv_qemu_virtio;
			g->at_most = false;
		}
		if (!w->random && w->block_bytes == (1u << 20) &&
		    options->paths[BENCH_PATH_NATIVE]) {
			struct bench_goal *g = &goals[n++];
			snprintf(g->text, sizeof(g->text),
				 "PV sequential 1M %s >= 90%% of native MB/s",
				 w->read_percent ? "read" : "write");
			snprintf(g->row, sizeof(g->row), "%s", label);
			g->target = 0.9;
			g->measured = row->ratio_pv_native;
			g->at_most = false;
		}
		if (w->random && w->block_bytes == 4096 && row->iodepth == 32 &&
		    (w->read_percent == 100 || w->read_percent == 0) &&
		    options->paths[BENCH_PATH_NATIVE]) {
			struct bench_goal *g = &goals[n++];
			snprintf(g->text, sizeof(g->text),
				 "PV random 4K %s iodepth=32 >= 70%% of native IOPS",
				 w->read_percent ? "read" : "write");
			snprintf(g->row, sizeof(g->row), "%s", label);
			g->target = 0.7;
			g->measured = row->ratio_pv_native;
			g->at_most = false;
		}
		if (row->iodepth == 32 || row->iodepth == 1) {
			struct bench_goal *g = &goals[n++];
			snprintf(g->text, sizeof(g->text), "PV exits/op <= %s at iodepth=%u",
				 row->iodepth == 32 ? "0.05" : "1", row->iodepth);
			snprintf(g->row, sizeof(g->row), "%s", label);
			g->target = row->iodepth == 32 ? 0.05 : 1.0;
			g->measured = pv_median(row, BENCH_M_EXITS_PER_OP);
			g->at_most = true;
		}
	}
	if (results->boot.ran && n < MAX_GOALS) {
		/* Issue 15: Kapsel's boot at most a tenth of QEMU microvm's. */
		struct bench_goal *g = &goals[n++];
		snprintf(g->text, sizeof(g->text), "Kapsel boot <= 0.1x QEMU microvm's");
		snprintf(g->row, sizeof(g->row), "boot (hello.elf)");
		g->target = 0.1;
		g->measured = results->boot.ratio_kapsel_microvm;
		g->at_most = true;
	}
	return n;
}

static int goal_met(const struct bench_goal *g)
{
	if (!isfinite(g->measured))
		return -1;
	return g->at_most ? g->measured <= g->target : g->measured >= g->target;
}

/* ---- Number formatting --------------------------------------------------- */

static const char *num(char *buffer, size_t len, double v)
{
	if (!isfinite(v))
		snprintf(buffer, len, "-");
	else if (v == 0)
		snprintf(buffer, len, "0");
	else if (fabs(v) >= 10000)
		snprintf(buffer, len, "%.0f", v);
	else if (fabs(v) >= 100)
		snprintf(buffer, len, "%.1f", v);
	else if (fabs(v) >= 1)
		snprintf(buffer, len, "%.2f", v);
	else if (fabs(v) >= 0.001)
		snprintf(buffer, len, "%.3f", v);
	else
		snprintf(buffer, len, "%.1e", v);
	return buffer;
}

static const char *status_name(enum bench_status status)
{
	switch (status) {
	case BENCH_STATUS_OK:
		return "ok";
	case BENCH_STATUS_UNAVAILABLE:
		return "unavailable";
	case BENCH_STATUS_FAILED:
		return "failed";
	default:
		return "skipped";
	}
}

/* ---- Table --------------------------------------------------------------- */

static void table_path_line(FILE *out, const struct bench_path_result *r, enum bench_path path,
			    bool first_unavailable)
{
	char a[24], b[24], c[24], d[24], e[24], f[24], g[24], h[24], k[24];
	fprintf(out, "%-26s %-11s", "", bench_path_name(path));
	if (r->status != BENCH_STATUS_OK) {
		if (r->status == BENCH_STATUS_UNAVAILABLE && !first_unavailable)
			fprintf(out, " unavailable (see above)\n");
		else
			fprintf(out, " %s: %s\n", status_name(r->status), r->message);
		return;
	}
	double spread = bench_stat_spread(&r->stats[BENCH_M_MBPS]);
	char spread_text[24] = "-";
	if (isfinite(spread) && r->stats[BENCH_M_MBPS].n > 1)
		snprintf(spread_text, sizeof(spread_text), "%.1f%%", spread * 100);
	fprintf(out, " %9s %6s %9s %8s %8s %8s %9s %8s %9s %9s%s%s\n",
		num(a, sizeof(a), r->stats[BENCH_M_MBPS].median), spread_text,
		num(b, sizeof(b), r->stats[BENCH_M_IOPS].median),
		num(c, sizeof(c), r->stats[BENCH_M_LAT_P50_US].median),
		num(d, sizeof(d), r->stats[BENCH_M_LAT_P99_US].median),
		num(e, sizeof(e), r->stats[BENCH_M_LAT_P999_US].median),
		path == BENCH_PATH_NATIVE
			? "-"
			: num(f, sizeof(f), r->stats[BENCH_M_EXITS_PER_OP].median),
		path == BENCH_PATH_NATIVE
			? "-"
			: num(g, sizeof(g), r->stats[BENCH_M_NOTIFICATIONS_PER_OP].median),
		num(h, sizeof(h), r->stats[BENCH_M_CPU_US_PER_OP].median),
		path == BENCH_PATH_NATIVE
			? "-"
			: num(k, sizeof(k), r->stats[BENCH_M_VCPU_CPU_US_PER_OP].median),
		r->message[0] ? "  note: " : "", r->message);
}

static void exits_text(const struct bench_path_result *r, char *out, size_t len)
{
	size_t used = 0;
	out[0] = '\0';
	if (r->status != BENCH_STATUS_OK || !r->ops_total) {
		snprintf(out, len, "-");
		return;
	}
	/* Largest first. */
	bool done[BENCH_MAX_COUNTERS] = { false };
	for (unsigned k = 0; k < r->exit_reasons.count; k++) {
		int best = -1;
		for (unsigned i = 0; i < r->exit_reasons.count; i++)
			if (!done[i] && (best < 0 || r->exit_reasons.items[i].value >
							     r->exit_reasons.items[best].value))
				best = (int)i;
		if (best < 0)
			break;
		done[best] = true;
		char v[24];
		int n = snprintf(out + used, len - used, "%s%s %s", used ? ", " : "",
				 r->exit_reasons.items[best].name,
				 num(v, sizeof(v),
				     (double)r->exit_reasons.items[best].value / r->ops_total));
		if (n < 0 || (size_t)n >= len - used)
			break;
		used += (size_t)n;
	}
	if (!used)
		snprintf(out, len, "none");
}

/* ---- CPU rows ------------------------------------------------------------ */

static bool has_kind(const struct bench_results *results, bool cpu)
{
	for (unsigned i = 0; i < results->row_count; i++)
		if ((results->rows[i].workload->kind == BENCH_KIND_CPU) == cpu)
			return true;
	return false;
}

static void table_cpu_path_line(FILE *out, const struct bench_row *row, enum bench_path path,
				bool first_unavailable)
{
	const struct bench_path_result *r = &row->paths[path];
	const struct bench_cpu_info *info = &bench_cpu_info[row->workload->cpu_op];
	char a[24], b[24], c[24], d[24], e[24], f[24], g[24], h[24];
	fprintf(out, "%-16s %-7s", "", bench_path_name(path));
	if (r->status != BENCH_STATUS_OK) {
		if (r->status == BENCH_STATUS_UNAVAILABLE && !first_unavailable)
			fprintf(out, " unavailable (see above)\n");
		else
			fprintf(out, " %s: %s\n", status_name(r->status), r->message);
		return;
	}
	bool native = path == BENCH_PATH_NATIVE;
	fprintf(out, " %8s %8s %8s %8s %8s %8s %8s %9s  %s\n",
		num(b, sizeof(b), r->stats[BENCH_M_LAT_P50_US].median),
		num(c, sizeof(c), r->stats[BENCH_M_LAT_P99_US].median),
		num(d, sizeof(d), r->stats[BENCH_M_LAT_MAX_US].median),
		info->timer ? "-" : num(a, sizeof(a), r->stats[BENCH_M_US_PER_OP].median),
		num(e, sizeof(e), r->stats[BENCH_M_DELIVER_P50_US].median),
		num(f, sizeof(f), r->stats[BENCH_M_DELIVER_P99_US].median),
		native ? "-" : num(g, sizeof(g), r->stats[BENCH_M_EXITS_PER_OP].median),
		num(h, sizeof(h), r->stats[BENCH_M_CPU_US_PER_OP].median),
		native ? info->native_op : info->guest_op);
}

/* The process rows side by side, as SOSP'03 (Xen and the Art of
 * Virtualization) Table 3 shows lmbench: one column per operation, p50 us. */
static void table_proc(FILE *out, const struct bench_results *results, double exit_us)
{
	const struct bench_row *rows[BENCH_CPU_OP_COUNT];
	unsigned n = 0;
	for (unsigned i = 0; i < results->row_count && n < BENCH_CPU_OP_COUNT; i++)
		if (results->rows[i].workload->kind == BENCH_KIND_CPU &&
		    bench_cpu_info[results->rows[i].workload->cpu_op].proc)
			rows[n++] = &results->rows[i];
	if (!n)
		return;
	char a[24];
	fprintf(out,
		"\nProcesses, lmbench style (SOSP'03 Table 3 layout; p50 us per operation):\n");
	fprintf(out, "%-14s", "");
	for (unsigned c = 0; c < n; c++)
		fprintf(out, " %12s", bench_cpu_info[rows[c]->workload->cpu_op].lmbench);
	fprintf(out, "\n%-14s", "native");
	for (unsigned c = 0; c < n; c++)
		fprintf(out, " %12s",
			num(a, sizeof(a), bench_cpu_value(rows[c], BENCH_PATH_NATIVE)));
	fprintf(out, "\n%-14s", "Kapsel PV");
	for (unsigned c = 0; c < n; c++)
		fprintf(out, " %12s", num(a, sizeof(a), bench_cpu_value(rows[c], BENCH_PATH_PV)));
	fprintf(out, "\n%-14s", "pv/native");
	for (unsigned c = 0; c < n; c++)
		fprintf(out, " %12s", num(a, sizeof(a), rows[c]->cost_ratio_pv_native));
	fprintf(out, "\n%-14s", "pv exits/op");
	for (unsigned c = 0; c < n; c++)
		fprintf(out, " %12s",
			num(a, sizeof(a),
			    rows[c]->paths[BENCH_PATH_PV].status == BENCH_STATUS_OK
				    ? rows[c]->paths[BENCH_PATH_PV].stats[BENCH_M_EXITS_PER_OP].median
				    : NAN));
	/* How much of each PV operation its exits explain at this host's
	 * exit cost: what a faster exit path (or fewer exits) would buy. */
	fprintf(out, "\n%-14s", "exits x cost");
	for (unsigned c = 0; c < n; c++) {
		const struct bench_path_result *pv = &rows[c]->paths[BENCH_PATH_PV];
		double v = pv->status == BENCH_STATUS_OK && isfinite(exit_us)
				   ? pv->stats[BENCH_M_EXITS_PER_OP].median * exit_us
				   : NAN;
		fprintf(out, " %12s", num(a, sizeof(a), v));
	}
	fprintf(out,
		"\n(exits x cost = exits per operation times %s us per exit, from null-hypercall;\n"
		"* not in Table 3: the PV MMU's own operations, beside the host's nearest)\n",
		num(a, sizeof(a), exit_us));
}

static void table_cpu(FILE *out, const struct bench_options *options,
		      const struct bench_results *results)
{
	char a[24], b[24], c[24];
	bool shown_unavailable[BENCH_PATH_COUNT] = { false };
	fprintf(out,
		"\nCPU operations: the PV guest (cpubench.elf) beside the closest operation of this\n"
		"host's own kernel, timed alike with the TSC; %s.\n"
		"p50/p99/max us = one operation, a round trip; for timer rows how late the handler\n"
		"ran after the deadline (--timer-delay %.0f us); mean = measured window / operations\n"
		"(preemptions included); to h p50/p99 = from the cause (ud2, send, signal) to the\n"
		"handler's first instruction; pv/native compares the p50s.\n\n",
		options->ops ? "fixed operation counts (--ops)" : "medians of the runs",
		options->timer_delay_ns / 1e3);
	fprintf(out, "%-16s %-7s %8s %8s %8s %8s %8s %8s %8s %9s  %s\n", "row", "path", "p50 us",
		"p99 us", "max us", "mean us", "to h p50", "to h p99", "exits/op", "cpu us/op",
		"operation");
	for (unsigned i = 0; i < results->row_count; i++) {
		const struct bench_row *row = &results->rows[i];
		if (row->workload->kind != BENCH_KIND_CPU)
			continue;
		fprintf(out, "%s\n", row->workload->name);
		for (unsigned p = 0; p < BENCH_PATH_COUNT; p++) {
			if (!options->paths[p] || p == BENCH_PATH_EMULATED || bench_path_is_qemu(p))
				continue;
			bool first = !shown_unavailable[p];
			if (row->paths[p].status == BENCH_STATUS_UNAVAILABLE)
				shown_unavailable[p] = true;
			table_cpu_path_line(out, row, (enum bench_path)p, first);
		}
		char exits[256];
		exits_text(&row->paths[BENCH_PATH_PV], exits, sizeof(exits));
		fprintf(out, "%-16s pv/native %s%s   pv exits/op: %s\n", "",
			num(a, sizeof(a), row->cost_ratio_pv_native),
			isfinite(row->cost_ratio_pv_native) ? "x" : "", exits);
	}

	double exit_us = bench_cpu_exit_cost_us(results);
	if (isfinite(exit_us)) {
		fprintf(out,
			"\nexit cost on this machine: %s us per exit to the VMM (p50 of null-hypercall: one\n"
			"ABI_INFO port write per call, guest -> kapsel in user space -> guest)\n",
			num(a, sizeof(a), exit_us));
		/* How much of a trap its two exits explain (the CPL0 stub's
		 * report and the IRET): what a bounce inside the guest would save. */
		for (unsigned i = 0; i < results->row_count; i++) {
			const struct bench_row *row = &results->rows[i];
			if (row->workload->kind != BENCH_KIND_CPU ||
			    row->workload->cpu_op != BENCH_CPU_TRAP)
				continue;
			double us = bench_cpu_value(row, BENCH_PATH_PV);
			double exits = row->paths[BENCH_PATH_PV].stats[BENCH_M_EXITS_PER_OP].median;
			if (!isfinite(us) || !isfinite(exits))
				continue;
			double rest = us - exits * exit_us;
			char d[24];
			fprintf(out, "trap: %s exits = %s us of its %s us; ",
				num(a, sizeof(a), exits), num(b, sizeof(b), exits * exit_us),
				num(c, sizeof(c), us));
			if (rest > 0)
				fprintf(out,
					"the other %s us are the CPL0 stub, KVM_GET/SET_SREGS and the handler\n",
					num(d, sizeof(d), rest));
			else
				fprintf(out, "the exits are all of it\n");
		}
	}
	table_proc(out, results, exit_us);
	if (results->nested)
		fprintf(out,
			"note: this machine is itself a VM and its KVM is nested, where an exit costs\n"
			"many times what it does on bare metal with VT-x/SVM (1-3 us) and CPL0 code may\n"
			"be emulated; under scripts/nested-kvm.sh (QEMU TCG) every figure here is\n"
			"emulation, not performance (docs/benchmarks.md, CPU rows).\n");
}

/* The boot row: one guest from process start to exit per setup. */
static void table_boot(FILE *out, const struct bench_results *results)
{
	const struct bench_boot *boot = &results->boot;
	if (!boot->ran)
		return;
	char a[24], b[24], c[24];
	fprintf(out,
		"\nBoot: %s from process start to exit (fork, exec, setup, boot, run,\n"
		"teardown; median of the runs, ms)\n",
		boot->guest[0] ? boot->guest : "hello.elf");
	fprintf(out, "  %-14s %9s %9s %9s %5s\n", "setup", "median", "min", "max", "runs");
	for (unsigned s = 0; s < BENCH_BOOT_SETUPS; s++) {
		const struct bench_boot_setup *setup = &boot->setups[s];
		if (!setup->ok) {
			fprintf(out, "  %-14s %s\n", bench_boot_setup_name(s),
				setup->error[0] ? setup->error : "not run");
			continue;
		}
		fprintf(out, "  %-14s %9s %9s %9s %5u\n", bench_boot_setup_name(s),
			num(a, sizeof(a), setup->median_ms), num(b, sizeof(b), setup->min_ms),
			num(c, sizeof(c), setup->max_ms), setup->run_count);
	}
	fprintf(out, "  kapsel/qemu-microvm %s%s\n", num(a, sizeof(a), boot->ratio_kapsel_microvm),
		results->qemu_accel && strcmp(results->qemu_accel, "tcg") == 0
			? " (QEMU under TCG: not comparable)"
			: "");
}

void bench_report_table(FILE *out, const struct bench_options *options,
			const struct bench_results *results)
{
	char a[24], b[24], c[24], d[24], e[24], f[24], g[24], h[24];
	bool shown_unavailable[BENCH_PATH_COUNT][2] = { { false } };
	bool io = has_kind(results, false) || !results->row_count;

	if (!io) {
		fprintf(out, "kapsel bench: PV CPU operations vs the host's own\n");
		fprintf(out, "machine:  %s\n", results->host);
		fprintf(out, "load:     %.2f before, %.2f after (1-minute average)\n",
			results->load_start, results->load_end);
		if (options->ops)
			fprintf(out,
				"runs:     %u per path, %llu operations each after %llu warm-up operations\n",
				options->repeat, (unsigned long long)options->ops,
				(unsigned long long)options->warmup_ops);
		else
			fprintf(out,
				"runs:     %u per path, %.0f ms measured after %.0f ms warm-up\n",
				options->repeat, options->cpu_runtime_ns / 1e6,
				options->cpu_warmup_ns / 1e6);
		table_cpu(out, options, results);
		goto footer;
	}
	fprintf(out, "kapsel bench: native vs paravirtualized (pv) vs emulated I/O\n");
	fprintf(out, "machine:  %s\n", results->host);
	fprintf(out,
		"load:     %.2f before, %.2f after (1-minute average; other work on these CPUs\n"
		"          slows the PV path's polling threads most)\n",
		results->load_start, results->load_end);
	bool net_rows = false, disk_rows = false;
	for (unsigned i = 0; i < results->row_count; i++) {
		enum bench_kind kind = results->rows[i].workload->kind;
		net_rows |= kind == BENCH_KIND_NET;
		disk_rows |= kind == BENCH_KIND_BLOCK || kind == BENCH_KIND_CONSOLE;
	}
	if (disk_rows)
		fprintf(out, "image:    %s, region %llu MiB%s\n", results->disk_path,
			(unsigned long long)(results->size_bytes >> 20),
			results->disk_temporary ? " (temporary, deleted at the end)" : "");
	if (options->ops)
		fprintf(out,
			"runs:     %u per path, %llu operations each after %llu warm-up operations; median, spread = (max-min)/median\n",
			options->repeat, (unsigned long long)options->ops,
			(unsigned long long)options->warmup_ops);
	else
		fprintf(out,
			"runs:     %u per path, %.0f ms measured after %.0f ms warm-up; median, spread = (max-min)/median\n"
			"          emulated path: %.0f ms after %.0f ms (it costs about one VM exit per sector or register access)\n",
			options->repeat, options->runtime_ns / 1e6, options->warmup_ns / 1e6,
			options->emulated_runtime_ns / 1e6, options->emulated_warmup_ns / 1e6);
	char backend_poll[64];
	if (options->pv_backend_poll_ns >= 1000)
		snprintf(backend_poll, sizeof(backend_poll), "polls %.0f us before sleeping",
			 options->pv_backend_poll_ns / 1e3);
	else
		snprintf(backend_poll, sizeof(backend_poll), "polls adaptively after completions");
	if (disk_rows)
		fprintf(out,
			"paths:    native = host io_uring on the image; pv = blkbench.elf, disk on bus=pv\n"
			"          (guest polls adaptively up to %.0f us before sleeping, and sleeps\n"
			"          until 3/4 of its queue depth completed; backend %s);\n"
			"          emulated = the same guest, disk on bus=ata (PIO, no queue: depth 1)\n",
			options->pv_guest_poll_ns / 1e3, backend_poll);
	if (disk_rows &&
	    (options->paths[BENCH_PATH_QEMU_VIRTIO] || options->paths[BENCH_PATH_QEMU_IDE]))
		fprintf(out,
			"qemu:     %s, accel %s: qemu-virtio = the same guest on -M microvm,\n"
			"          virtio-blk (virtio-mmio, polled); qemu-ide = -M pc, IDE (PIO, depth 1);\n"
			"          image raw, aio=io_uring, same cache mode; exits/op from KVM's debugfs\n"
			"          when readable (root), else '-'%s\n",
			results->qemu_version, results->qemu_accel ? results->qemu_accel : "?",
			results->qemu_accel && strcmp(results->qemu_accel, "tcg") == 0
				? ";\n          UNDER TCG: QEMU's figures are emulation, not comparable"
				: "");
	if (net_rows)
		fprintf(out,
			"net rows: native = two host threads on Unix datagram sockets; pv = two VMs\n"
			"          (netbench.elf) with PV NICs on the socket link; emulated = the same\n"
			"          VMs with NE2000 NICs; IOPS = round trips/s (rr) or frames received\n"
			"          intact/s (stream); exits, notifications and cpu per op count both\n"
			"          ends; every frame's bytes are checked\n");
	fputc('\n', out);

	fprintf(out, "%-26s %-11s %9s %6s %9s %8s %8s %8s %9s %8s %9s %9s\n", "workload", "path",
		"MB/s", "spread", "IOPS", "p50 us", "p99 us", "p99.9 us", "exits/op", "notif/op",
		"cpu us/op", "vcpu us/op");
	for (unsigned i = 0; i < results->row_count; i++) {
		const struct bench_row *row = &results->rows[i];
		if (row->workload->kind == BENCH_KIND_CPU)
			continue; /* their own table, below */
		char label[64];
		row_label(row, label, sizeof(label));
		fprintf(out, "%s\n", label);
		unsigned kind = row->workload->kind == BENCH_KIND_CONSOLE;
		for (unsigned p = 0; p < BENCH_PATH_COUNT; p++) {
			if (!options->paths[p])
				continue;
			const struct bench_path_result *r = &row->paths[p];
			if (bench_path_is_qemu(p) && r->status == BENCH_STATUS_SKIPPED)
				continue; /* not a block row */
			bool first = !shown_unavailable[p][kind];
			if (r->status == BENCH_STATUS_UNAVAILABLE)
				shown_unavailable[p][kind] = true;
			table_path_line(out, r, (enum bench_path)p, first);
		}
		fprintf(out, "%-26s pv/native %s  pv/emulated %s", "",
			num(a, sizeof(a), row->ratio_pv_native),
			num(b, sizeof(b), row->ratio_pv_emulated));
		if (row->workload->kind == BENCH_KIND_BLOCK &&
		    (options->paths[BENCH_PATH_QEMU_VIRTIO] || options->paths[BENCH_PATH_QEMU_IDE]))
			fprintf(out, "  pv/qemu-virtio %s  emulated/qemu-ide %s",
				num(f, sizeof(f), row->ratio_pv_qemu_virtio),
				num(g, sizeof(g), row->ratio_emulated_qemu_ide));
		if (row->fio.ran && row->fio.ok) {
			double native = row->paths[BENCH_PATH_NATIVE].stats[BENCH_M_MBPS].median;
			fprintf(out, "  fio %s MB/s %s IOPS (native/fio %s)",
				num(c, sizeof(c), row->fio.mb_per_s),
				num(d, sizeof(d), row->fio.iops),
				num(e, sizeof(e),
				    row->fio.mb_per_s > 0 ? native / row->fio.mb_per_s : NAN));
		} else if (row->fio.ran) {
			fprintf(out, "  fio: %s", row->fio.error);
		}
		fputc('\n', out);
	}

	fprintf(out, "\nPV cost per request (median us; guest TSC stamps carried in the ring):\n");
	fprintf(out, "%-26s %14s %16s %14s %10s %10s %9s %9s %9s\n", "workload", "submit->pickup",
		"pickup->complete", "complete->reap", "latency", "native p50", "kicks/op",
		"suppr/op", "sleeps/op");
	fprintf(out, "%-26s %14s %16s %14s %10s\n", "", "(notify+queue)", "(backend+device)",
		"(completion)", "(mean)");
	for (unsigned i = 0; i < results->row_count; i++) {
		const struct bench_row *row = &results->rows[i];
		const struct bench_path_result *pv = &row->paths[BENCH_PATH_PV];
		if (row->workload->kind != BENCH_KIND_BLOCK || pv->status != BENCH_STATUS_OK)
			continue;
		char label[64];
		row_label(row, label, sizeof(label));
		fprintf(out, "%-26s %14s %16s %14s %10s %10s %9s %9s %9s\n", label,
			num(a, sizeof(a), pv->stats[BENCH_M_SUBMIT_PICKUP_US].median),
			num(b, sizeof(b), pv->stats[BENCH_M_PICKUP_COMPLETE_US].median),
			num(c, sizeof(c), pv->stats[BENCH_M_COMPLETE_REAP_US].median),
			num(d, sizeof(d), pv->stats[BENCH_M_LAT_MEAN_US].median),
			num(e, sizeof(e),
			    row->paths[BENCH_PATH_NATIVE].status == BENCH_STATUS_OK
				    ? row->paths[BENCH_PATH_NATIVE].stats[BENCH_M_LAT_P50_US].median
				    : NAN),
			num(f, sizeof(f), pv->stats[BENCH_M_KICKS_PER_OP].median),
			num(g, sizeof(g), pv->stats[BENCH_M_KICKS_SUPPRESSED_PER_OP].median),
			num(h, sizeof(h), pv->stats[BENCH_M_BLOCKS_PER_OP].median));
	}

	fprintf(out,
		"\nVM exits per operation by reason (doorbell = ioeventfd kick, handled in the host kernel):\n");
	for (unsigned i = 0; i < results->row_count; i++) {
		const struct bench_row *row = &results->rows[i];
		char label[64], pv[256], emu[256], qv[256], qi[256];
		if (row->workload->kind == BENCH_KIND_CPU)
			continue;
		row_label(row, label, sizeof(label));
		exits_text(&row->paths[BENCH_PATH_PV], pv, sizeof(pv));
		exits_text(&row->paths[BENCH_PATH_EMULATED], emu, sizeof(emu));
		fprintf(out, "%-26s pv: %s | emulated: %s", label, pv, emu);
		if (row->workload->kind == BENCH_KIND_BLOCK &&
		    (options->paths[BENCH_PATH_QEMU_VIRTIO] ||
		     options->paths[BENCH_PATH_QEMU_IDE])) {
			/* KVM's count only where its debugfs can be read (root). */
			for (unsigned q = 0; q < 2; q++) {
				const struct bench_path_result *r =
					&row->paths[q ? BENCH_PATH_QEMU_IDE
						      : BENCH_PATH_QEMU_VIRTIO];
				char *text = q ? qi : qv;
				if (r->status == BENCH_STATUS_OK && !r->exit_reasons.count)
					snprintf(text, sizeof(qv), "unavailable");
				else
					exits_text(r, text, sizeof(qv));
			}
			fprintf(out, " | qemu-virtio: %s | qemu-ide: %s", qv, qi);
		}
		fputc('\n', out);
	}

	bool any_checksum = false;
	for (unsigned i = 0; i < results->row_count; i++)
		any_checksum |= results->rows[i].checksum_reset_valid;
	if (any_checksum) {
		fprintf(out,
			"\nData written (CRC-32 of the region after each path; fixed-size runs write the same sectors):\n");
		for (unsigned i = 0; i < results->row_count; i++) {
			const struct bench_row *row = &results->rows[i];
			if (!row->checksum_reset_valid)
				continue;
			char label[64];
			row_label(row, label, sizeof(label));
			fprintf(out, "%-26s before %08x", label, row->checksum_reset);
			uint32_t first = 0;
			bool have = false, same = true;
			for (unsigned p = 0; p < BENCH_PATH_COUNT; p++) {
				const struct bench_path_result *r = &row->paths[p];
				if (!options->paths[p])
					continue;
				if (!r->checksum_valid) {
					fprintf(out, "  %s -", bench_path_name((enum bench_path)p));
					continue;
				}
				fprintf(out, "  %s %08x", bench_path_name((enum bench_path)p),
					r->checksum);
				if (have && r->checksum != first)
					same = false;
				first = r->checksum;
				have = true;
			}
			fprintf(out, "  %s\n", !have ? "" : same ? "same" : "DIFFERENT");
		}
	}
	if (disk_rows)
		fprintf(out,
			"\nRead verification (sectors whose header did not name their own number):");
	for (unsigned p = 0; p < BENCH_PATH_COUNT && disk_rows; p++) {
		uint64_t sectors = 0, bad = 0;
		for (unsigned i = 0; i < results->row_count; i++) {
			if (results->rows[i].paths[p].copied_from_iodepth ||
			    results->rows[i].workload->kind == BENCH_KIND_NET)
				continue; /* counted in the row it was measured in; frames below */
			sectors += results->rows[i].paths[p].verify_sectors;
			bad += results->rows[i].paths[p].verify_errors;
		}
		if (options->paths[p])
			fprintf(out, " %s %llu of %llu", bench_path_name((enum bench_path)p),
				(unsigned long long)bad, (unsigned long long)sectors);
	}
	if (disk_rows)
		fputc('\n', out);
	if (net_rows) {
		fprintf(out,
			"\nFrame verification (frames that failed the check, of frames checked):");
		for (unsigned p = 0; p < BENCH_PATH_COUNT; p++) {
			uint64_t frames = 0, bad = 0;
			for (unsigned i = 0; i < results->row_count; i++) {
				if (results->rows[i].workload->kind != BENCH_KIND_NET)
					continue;
				frames += results->rows[i].paths[p].verify_sectors;
				bad += results->rows[i].paths[p].verify_errors;
			}
			if (options->paths[p])
				fprintf(out, " %s %llu of %llu",
					bench_path_name((enum bench_path)p),
					(unsigned long long)bad, (unsigned long long)frames);
		}
		fputc('\n', out);
	}

	struct bench_goal goals[MAX_GOALS];
	unsigned goal_count = compute_goals(options, results, goals);
	if (goal_count) {
		fprintf(out, "\nGoals (targets, not assertions):\n");
		for (unsigned i = 0; i < goal_count; i++) {
			int met = goal_met(&goals[i]);
			fprintf(out, "  %-52s %-30s measured %-8s %s\n", goals[i].text,
				goals[i].row, num(a, sizeof(a), goals[i].measured),
				met < 0 ? "not measured"
				: met	? "met"
					: "MISSED");
		}
	}
	fprintf(out,
		"\nconsole row: one operation = one %u-byte line; pv = PV console hypercall, emulated = 16550 UART\n"
		"(one exit per register access), native = write(2) to the same sink file.\n",
		options->workload_count ? 80u : 80u);
	fprintf(out,
		"exits/op counts exits to the VMM by reason plus doorbell kicks, minus the bench's own\n"
		"handshake; cpu us/op is the CPU time of the whole process (VMM with its vCPU and I/O\n"
		"threads, or the native runner) per operation in the measured window.\n");
	if (has_kind(results, true))
		table_cpu(out, options, results);
footer:
	table_boot(out, results);
	fprintf(out, "results:  %s/results.json, %s/results.txt%s%s%s%s%s\n", options->output_dir,
		options->output_dir, results->chart_path[0] ? ", chart " : "", results->chart_path,
		results->chart_path[0] && !results->chart_note[0] ? " (and .png)" : "",
		results->chart_note[0] ? "; " : "", results->chart_note);
	fprintf(out, "took %.1f s\n", results->total_seconds);
}

/* ---- JSON ---------------------------------------------------------------- */

static void json_stat(struct json_writer *j, const char *key, const struct bench_stat *s)
{
	json_writer_open(j, key, '{');
	json_writer_double(j, "median", s->median);
	json_writer_double(j, "min", s->min);
	json_writer_double(j, "max", s->max);
	json_writer_double(j, "spread", bench_stat_spread(s));
	json_writer_u64(j, "n", s->n);
	json_writer_close(j, '}');
}

static void json_path(struct json_writer *j, const struct bench_options *options,
		      const struct bench_row *row, enum bench_path path)
{
	const struct bench_path_result *r = &row->paths[path];
	json_writer_open(j, bench_path_name(path), '{');
	json_writer_string(j, "status", options->paths[path] ? status_name(r->status) : "skipped");
	json_writer_string(j, "message", r->message);
	json_writer_u64(j, "runs", r->run_count);
	json_writer_u64(j, "runs_ok", r->ok_count);
	json_writer_double(j, "runtime_s", r->runtime_ns / 1e9);
	json_writer_u64(j, "queue_depth_used", r->queue_depth_used);
	json_writer_u64(j, "copied_from_iodepth", r->copied_from_iodepth);
	json_writer_open(j, "metrics", '{');
	for (unsigned m = 0; m < BENCH_M_COUNT; m++)
		json_stat(j, bench_metric_info[m].key, &r->stats[m]);
	json_writer_close(j, '}');
	json_writer_open(j, "exits_per_op_by_reason", '{');
	for (unsigned i = 0; i < r->exit_reasons.count && r->ops_total; i++)
		json_writer_double(j, r->exit_reasons.items[i].name,
				   (double)r->exit_reasons.items[i].value / r->ops_total);
	json_writer_close(j, '}');
	json_writer_open(j, "verify", '{');
	/* Net rows count frames checked (both ends), block rows sectors. */
	json_writer_u64(j, row->workload->kind == BENCH_KIND_NET ? "frames" : "sectors",
			r->verify_sectors);
	json_writer_u64(j, "errors", r->verify_errors);
	json_writer_close(j, '}');
	if (r->checksum_valid) {
		char crc[16];
		snprintf(crc, sizeof(crc), "%08x", r->checksum);
		json_writer_string(j, "checksum_crc32", crc);
	} else {
		json_writer_string(j, "checksum_crc32", NULL);
	}
	json_writer_open(j, "run_values", '[');
	for (unsigned i = 0; i < r->run_count && r->runs; i++) {
		const struct bench_run *run = &r->runs[i];
		json_writer_open(j, NULL, '{');
		json_writer_bool(j, "ok", run->ok);
		json_writer_string(j, "error", run->error);
		json_writer_u64(j, "ops", run->ops);
		json_writer_u64(j, "reads", run->reads);
		json_writer_u64(j, "writes", run->writes);
		json_writer_u64(j, "bytes", run->bytes);
		json_writer_u64(j, "errors", run->errors);
		json_writer_double(j, "elapsed_s", run->elapsed_ns / 1e9);
		json_writer_double(j, "host_window_s",
				   run->host_window_ns ? run->host_window_ns / 1e9 : NAN);
		json_writer_double(j, "cpu_s", run->cpu_ns / 1e9);
		json_writer_u64(j, "timed_ops", run->timed_ops);
		for (unsigned m = 0; m < BENCH_M_COUNT; m++)
			json_writer_double(j, bench_metric_info[m].key, run->metrics[m]);
		json_writer_open(j, "exits", '{');
		for (unsigned k = 0; k < run->exits.count; k++)
			json_writer_u64(j, run->exits.items[k].name, run->exits.items[k].value);
		json_writer_close(j, '}');
		json_writer_open(j, "counters", '{');
		for (unsigned k = 0; k < run->counters.count; k++)
			json_writer_u64(j, run->counters.items[k].name,
					run->counters.items[k].value);
		json_writer_close(j, '}');
		json_writer_close(j, '}');
	}
	json_writer_close(j, ']');
	json_writer_close(j, '}');
}

void bench_report_json(FILE *out, const struct bench_options *options,
		       const struct bench_results *results)
{
	struct json_writer j;
	json_writer_init(&j, out, true);
	json_writer_open(&j, NULL, '{');
	json_writer_string(&j, "tool", "kapsel bench");
	json_writer_string(&j, "version", KAPSEL_BENCH_VERSION);
	json_writer_u64(&j, "schema", KAPSEL_BENCH_SCHEMA);
	json_writer_string(&j, "machine", results->host);
	json_writer_double(&j, "load_average_start", results->load_start);
	json_writer_double(&j, "load_average_end", results->load_end);
	json_writer_open(&j, "options", '{');
	json_writer_string(&j, "disk", results->disk_path[0] ? results->disk_path : NULL);
	json_writer_bool(&j, "disk_temporary", results->disk_temporary);
	json_writer_u64(&j, "size_bytes", results->size_bytes);
	json_writer_double(&j, "runtime_s", options->runtime_ns / 1e9);
	json_writer_double(&j, "warmup_s", options->warmup_ns / 1e9);
	json_writer_double(&j, "emulated_runtime_s", options->emulated_runtime_ns / 1e9);
	json_writer_double(&j, "emulated_warmup_s", options->emulated_warmup_ns / 1e9);
	json_writer_u64(&j, "ops", options->ops);
	json_writer_u64(&j, "warmup_ops", options->warmup_ops);
	json_writer_u64(&j, "repeat", options->repeat);
	json_writer_u64(&j, "seed", options->seed);
	json_writer_bool(&j, "quick", options->quick);
	json_writer_double(&j, "pv_guest_poll_us", options->pv_guest_poll_ns / 1e3);
	json_writer_double(&j, "pv_backend_poll_us", options->pv_backend_poll_ns / 1e3);
	json_writer_double(&j, "cpu_runtime_s", options->cpu_runtime_ns / 1e9);
	json_writer_double(&j, "cpu_warmup_s", options->cpu_warmup_ns / 1e9);
	json_writer_double(&j, "timer_delay_us", options->timer_delay_ns / 1e3);
	json_writer_open(&j, "iodepths", '[');
	for (unsigned i = 0; i < options->iodepth_count; i++)
		json_writer_u64(&j, NULL, options->iodepths[i]);
	json_writer_close(&j, ']');
	json_writer_open(&j, "cache", '[');
	for (unsigned c = 0; c < BENCH_CACHE_COUNT; c++)
		if (options->cache[c])
			json_writer_string(&j, NULL, bench_cache_name((enum bench_cache)c));
	json_writer_close(&j, ']');
	json_writer_open(&j, "paths", '[');
	for (unsigned p = 0; p < BENCH_PATH_COUNT; p++)
		if (options->paths[p])
			json_writer_string(&j, NULL, bench_path_name((enum bench_path)p));
	json_writer_close(&j, ']');
	json_writer_open(&j, "workloads", '[');
	for (unsigned w = 0; w < options->workload_count; w++)
		json_writer_string(&j, NULL, options->workloads[w].name);
	json_writer_close(&j, ']');
	json_writer_close(&j, '}');

	json_writer_open(&j, "metric_units", '{');
	for (unsigned m = 0; m < BENCH_M_COUNT; m++)
		json_writer_string(&j, bench_metric_info[m].key, bench_metric_info[m].unit);
	json_writer_close(&j, '}');

	json_writer_open(&j, "rows", '[');
	for (unsigned i = 0; i < results->row_count; i++) {
		const struct bench_row *row = &results->rows[i];
		const struct bench_workload *w = row->workload;
		json_writer_open(&j, NULL, '{');
		json_writer_string(&j, "workload", w->name);
		json_writer_string(&j, "kind",
				   w->kind == BENCH_KIND_CPU	   ? "cpu"
				   : w->kind == BENCH_KIND_CONSOLE ? "console"
				   : w->kind == BENCH_KIND_NET	   ? "net"
								   : "block");
		json_writer_string(&j, "rw", w->rw);
		json_writer_u64(&j, "block_bytes", w->block_bytes);
		json_writer_u64(&j, "read_percent", w->read_percent);
		json_writer_u64(&j, "iodepth", row->iodepth);
		json_writer_string(&j, "cache",
				   w->kind != BENCH_KIND_BLOCK ? NULL
							       : bench_cache_name(row->cache));
		if (w->kind == BENCH_KIND_CPU) {
			const struct bench_cpu_info *info = &bench_cpu_info[w->cpu_op];
			json_writer_open(&j, "cpu", '{');
			json_writer_string(&j, "operation", info->guest_op);
			json_writer_string(&j, "native_operation", info->native_op);
			json_writer_bool(&j, "timer", info->timer);
			json_writer_bool(&j, "process", info->proc);
			json_writer_string(&j, "lmbench", info->lmbench);
			json_writer_string(&j, "value_metric",
					   info->timer ? "lat_p50_us" : "us_per_op");
			json_writer_double(&j, "pv_value", bench_cpu_value(row, BENCH_PATH_PV));
			json_writer_double(&j, "native_value",
					   bench_cpu_value(row, BENCH_PATH_NATIVE));
			json_writer_close(&j, '}');
		} else {
			json_writer_key(&j, "cpu");
			fputs("null", j.out);
		}
		if (w->kind == BENCH_KIND_NET) {
			json_writer_open(&j, "net", '{');
			json_writer_string(&j, "pattern", w->net_stream ? "stream" : "rr");
			json_writer_u64(&j, "frame_bytes", w->block_bytes);
			json_writer_u64(&j, "outstanding", 1);
			json_writer_string(&j, "ops_are",
					   w->net_stream ? "frames received intact"
							 : "round trips");
			json_writer_string(&j, "link",
					   "unix datagram sockets (kapsel socket link)");
			json_writer_close(&j, '}');
		} else {
			json_writer_key(&j, "net");
			fputs("null", j.out);
		}
		json_writer_open(&j, "paths", '{');
		for (unsigned p = 0; p < BENCH_PATH_COUNT; p++)
			json_path(&j, options, row, (enum bench_path)p);
		json_writer_close(&j, '}');
		json_writer_open(&j, "ratios", '{');
		json_writer_double(&j, "pv_native", row->ratio_pv_native);
		json_writer_double(&j, "pv_emulated", row->ratio_pv_emulated);
		json_writer_double(&j, "pv_qemu_virtio", row->ratio_pv_qemu_virtio);
		json_writer_double(&j, "emulated_qemu_ide", row->ratio_emulated_qemu_ide);
		json_writer_double(&j, "cost_pv_native", row->cost_ratio_pv_native);
		json_writer_close(&j, '}');
		json_writer_open(&j, "checksums", '{');
		char crc[16];
		snprintf(crc, sizeof(crc), "%08x", row->checksum_reset);
		json_writer_string(&j, "before_crc32", row->checksum_reset_valid ? crc : NULL);
		int match = -1;
		uint32_t first = 0;
		for (unsigned p = 0; p < BENCH_PATH_COUNT && row->checksum_reset_valid; p++) {
			const struct bench_path_result *r = &row->paths[p];
			if (!options->paths[p] || !r->checksum_valid)
				continue;
			if (match < 0)
				match = 1, first = r->checksum;
			else if (r->checksum != first)
				match = 0;
		}
		json_writer_bool(&j, "all_paths_match", match);
		json_writer_close(&j, '}');
		json_writer_open(&j, "fio", '{');
		json_writer_bool(&j, "ran", row->fio.ran);
		json_writer_bool(&j, "ok", row->fio.ok);
		json_writer_string(&j, "error", row->fio.error);
		json_writer_double(&j, "mb_per_s", row->fio.ok ? row->fio.mb_per_s : NAN);
		json_writer_double(&j, "iops", row->fio.ok ? row->fio.iops : NAN);
		json_writer_double(&j, "lat_p50_us", row->fio.ok ? row->fio.lat_p50_us : NAN);
		json_writer_double(&j, "lat_p99_us", row->fio.ok ? row->fio.lat_p99_us : NAN);
		double native = row->paths[BENCH_PATH_NATIVE].status == BENCH_STATUS_OK
					? row->paths[BENCH_PATH_NATIVE].stats[BENCH_M_MBPS].median
					: NAN;
		json_writer_double(&j, "native_over_fio",
				   row->fio.ok && row->fio.mb_per_s > 0 ? native / row->fio.mb_per_s
									: NAN);
		json_writer_close(&j, '}');
		json_writer_close(&j, '}');
	}
	json_writer_close(&j, ']');

	struct bench_goal goals[MAX_GOALS];
	unsigned goal_count = compute_goals(options, results, goals);
	json_writer_open(&j, "goals", '[');
	for (unsigned i = 0; i < goal_count; i++) {
		json_writer_open(&j, NULL, '{');
		json_writer_string(&j, "goal", goals[i].text);
		json_writer_string(&j, "row", goals[i].row);
		json_writer_double(&j, "target", goals[i].target);
		json_writer_double(&j, "measured", goals[i].measured);
		json_writer_bool(&j, "met", goal_met(&goals[i]));
		json_writer_close(&j, '}');
	}
	json_writer_close(&j, ']');
	json_writer_open(&j, "cpu", '{');
	json_writer_double(&j, "exit_cost_us", bench_cpu_exit_cost_us(results));
	json_writer_string(&j, "exit_cost_row", "null-hypercall");
	json_writer_bool(&j, "nested", results->nested);
	json_writer_close(&j, '}');
	json_writer_bool(&j, "fio_available", results->fio_available);
	json_writer_open(&j, "qemu", '{');
	bool qemu_ran = results->qemu_accel != NULL;
	json_writer_string(&j, "binary", qemu_ran ? results->qemu_binary : NULL);
	json_writer_string(&j, "version", qemu_ran ? results->qemu_version : NULL);
	json_writer_string(&j, "accel", results->qemu_accel);
	json_writer_string(&j, "command_qemu_virtio",
			   results->qemu_command[0][0] ? results->qemu_command[0] : NULL);
	json_writer_string(&j, "command_qemu_ide",
			   results->qemu_command[1][0] ? results->qemu_command[1] : NULL);
	json_writer_close(&j, '}');
	json_writer_open(&j, "boot", '{');
	json_writer_bool(&j, "ran", results->boot.ran);
	json_writer_string(&j, "guest", results->boot.guest[0] ? results->boot.guest : NULL);
	json_writer_double(&j, "ratio_kapsel_qemu_microvm", results->boot.ratio_kapsel_microvm);
	for (unsigned s = 0; s < BENCH_BOOT_SETUPS && results->boot.ran; s++) {
		const struct bench_boot_setup *setup = &results->boot.setups[s];
		json_writer_open(&j, bench_boot_setup_name(s), '{');
		json_writer_bool(&j, "ok", setup->ok);
		json_writer_string(&j, "error", setup->error[0] ? setup->error : NULL);
		json_writer_double(&j, "median_ms", setup->ok ? setup->median_ms : NAN);
		json_writer_double(&j, "min_ms", setup->ok ? setup->min_ms : NAN);
		json_writer_double(&j, "max_ms", setup->ok ? setup->max_ms : NAN);
		json_writer_open(&j, "runs_ms", '[');
		for (unsigned r = 0; r < setup->run_count; r++)
			json_writer_double(&j, NULL, setup->run_ns[r] / 1e6);
		json_writer_close(&j, ']');
		json_writer_string(&j, "command", setup->command[0] ? setup->command : NULL);
		json_writer_close(&j, '}');
	}
	json_writer_close(&j, '}');
	json_writer_string(&j, "chart", results->chart_path[0] ? results->chart_path : NULL);
	json_writer_string(&j, "chart_note", results->chart_note);
	json_writer_double(&j, "total_seconds", results->total_seconds);
	json_writer_close(&j, '}');
	fputc('\n', out);
}

/* ---- Chart --------------------------------------------------------------- */

/* Write one value; returns whether it can be drawn. */
static bool data_value(FILE *out, const struct bench_path_result *r, enum bench_metric m)
{
	double v = r->status == BENCH_STATUS_OK ? r->stats[m].median : NAN;
	/* Log scales cannot show 0: leave those out, as missing. */
	if (isfinite(v) && v > 0) {
		fprintf(out, " %.6g", v);
		return true;
	}
	fputs(" ?", out);
	return false;
}

static int run_gnuplot(const char *script)
{
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
		}
		execlp("gnuplot", "gnuplot", script, (char *)NULL);
		_exit(127);
	}
	int status;
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	if (!WIFEXITED(status))
		return -EIO;
	return WEXITSTATUS(status) == 127 ? -ENOENT : WEXITSTATUS(status) ? -EIO : 0;
}

int bench_report_chart(const char *dir, const struct bench_results *results, char *chart_path,
		       size_t chart_path_len, char *note, size_t note_len)
{
	char data_path[4096], script_path[4096], cpu_path[4096];
	snprintf(data_path, sizeof(data_path), "%s/bench-data.dat", dir);
	snprintf(cpu_path, sizeof(cpu_path), "%s/bench-cpu.dat", dir);
	snprintf(script_path, sizeof(script_path), "%s/bench.gp", dir);
	snprintf(chart_path, chart_path_len, "%s/bench.svg", dir);

	FILE *data = fopen(data_path, "w");
	if (!data) {
		snprintf(note, note_len, "cannot write %s: %s", data_path, strerror(errno));
		return -errno;
	}
	/* Columns 2.. : MB/s per path, then exits/op per path. */
	enum {
		MBPS_COLUMN = 2,
		EXITS_COLUMN = MBPS_COLUMN + BENCH_PATH_COUNT
	};
	bool have[EXITS_COLUMN + BENCH_PATH_COUNT] = { false };
	fprintf(data, "# row");
	for (unsigned p = 0; p < BENCH_PATH_COUNT; p++)
		fprintf(data, " %s_MBps", bench_path_name((enum bench_path)p));
	for (unsigned p = 0; p < BENCH_PATH_COUNT; p++)
		fprintf(data, " %s_exits", bench_path_name((enum bench_path)p));
	fputc('\n', data);
	for (unsigned i = 0; i < results->row_count; i++) {
		const struct bench_row *row = &results->rows[i];
		if (row->workload->kind == BENCH_KIND_CPU)
			continue; /* their own panel */
		if (row->workload->kind == BENCH_KIND_CONSOLE ||
		    row->workload->kind == BENCH_KIND_NET)
			fprintf(data, "\"%s\"", row->workload->name);
		else
			fprintf(data, "\"%s qd%u %s\"", row->workload->name, row->iodepth,
				row->cache == BENCH_CACHE_NONE ? "direct" : "cached");
		for (unsigned p = 0; p < BENCH_PATH_COUNT; p++)
			have[MBPS_COLUMN + p] |= data_value(data, &row->paths[p], BENCH_M_MBPS);
		for (unsigned p = 0; p < BENCH_PATH_COUNT; p++)
			have[EXITS_COLUMN + p] |=
				data_value(data, &row->paths[p], BENCH_M_EXITS_PER_OP);
		fputc('\n', data);
	}
	fclose(data);

	/* CPU rows: columns 2-3 the native and pv value (us/op, timers late p50). */
	bool have_cpu[BENCH_PATH_COUNT] = { false };
	bool io = has_kind(results, false), cpu = has_kind(results, true);
	if (cpu) {
		data = fopen(cpu_path, "w");
		if (!data) {
			snprintf(note, note_len, "cannot write %s: %s", cpu_path, strerror(errno));
			return -errno;
		}
		fprintf(data, "# row native_us pv_us (timer rows: late by, p50)\n");
		for (unsigned i = 0; i < results->row_count; i++) {
			const struct bench_row *row = &results->rows[i];
			if (row->workload->kind != BENCH_KIND_CPU)
				continue;
			fprintf(data, "\"%s%s\"", row->workload->name,
				bench_cpu_info[row->workload->cpu_op].timer ? " (late)" : "");
			for (unsigned p = 0; p < BENCH_PATH_EMULATED; p++) {
				double v = bench_cpu_value(row, (enum bench_path)p);
				if (isfinite(v) && v > 0) {
					fprintf(data, " %.6g", v);
					have_cpu[p] = true;
				} else {
					fputs(" ?", data);
				}
			}
			fputc('\n', data);
		}
		fclose(data);
	}

	FILE *gp = fopen(script_path, "w");
	if (!gp) {
		snprintf(note, note_len, "cannot write %s: %s", script_path, strerror(errno));
		return -errno;
	}
	static const char *const colors[BENCH_PATH_COUNT] = { "#4c72b0", "#55a868", "#c44e52",
							      "#8172b2", "#ccb974" };
	/* The same chart twice: SVG for browsers and documents, PNG (cairo) for
	 * image viewers, whose SVG renderers often misplace rotated labels. */
	char png_path[4096];
	snprintf(png_path, sizeof(png_path), "%.*s.png",
		 (int)(strlen(chart_path) > 4 ? strlen(chart_path) - 4 : strlen(chart_path)),
		 chart_path);
	fprintf(gp,
		"# kapsel bench chart: gnuplot %s\n"
		"set datafile missing '?'\n"
		"set style data histogram\n"
		"set style histogram clustered gap 1\n"
		"set style fill solid 0.85 border -1\n"
		"set boxwidth 0.9\n"
		"set logscale y\n"
		"set grid ytics\n"
		"set xtics rotate by -35 left scale 0 font ',9'\n"
		"set bmargin 8\n"
		"set key outside right top\n",
		script_path);
	for (unsigned terminal = 0; terminal < 2; terminal++) {
		/* 500 pixels a panel, two at the least. */
		unsigned height = io && cpu ? 1500u : 1000u;
		fprintf(gp,
			"set terminal %s size 1400,%u %snoenhanced font 'sans,11' background rgb 'white'\n"
			"set output '%s'\n",
			terminal ? "pngcairo" : "svg", height, terminal ? "" : "dynamic ",
			terminal ? png_path : chart_path);
		fprintf(gp,
			"set multiplot layout %u,1 title 'kapsel bench: native vs PV vs emulated (median of runs)'\n",
			(io ? 2u : 0u) + (cpu ? 1u : 0u));
		for (unsigned panel = 0; panel < 2 && io; panel++) {
			unsigned first_column = panel ? EXITS_COLUMN : MBPS_COLUMN;
			fprintf(gp, "set title '%s'\nset ylabel '%s'\n",
				panel ? "VM exits per operation (native has none)" : "Throughput",
				panel ? "exits/op (log scale)" : "MB/s (log scale)");
			bool any = false;
			for (unsigned p = 0; p < BENCH_PATH_COUNT; p++) {
				if (!have[first_column + p])
					continue;
				fprintf(gp, "%s '%s' using %u:xtic(1) title '%s' lc rgb '%s'",
					any ? "," : "plot", data_path, first_column + p,
					bench_path_name((enum bench_path)p), colors[p]);
				any = true;
			}
			if (!any)
				fprintf(gp,
					"unset logscale y\nset yrange [0:1]\nset label 1 'no data' at graph 0.5, graph 0.5 center\n"
					"plot 2 notitle lc rgb 'white'\nunset label 1\nset autoscale y\nset logscale y");
			fputc('\n', gp);
		}
		if (cpu) {
			fprintf(gp,
				"set title 'CPU operations: PV guest vs the host kernel (timers: how late)'\n"
				"set ylabel 'microseconds (log scale)'\n");
			bool any = false;
			for (unsigned p = 0; p < BENCH_PATH_EMULATED; p++) {
				if (!have_cpu[p])
					continue;
				fprintf(gp, "%s '%s' using %u:xtic(1) title '%s' lc rgb '%s'",
					any ? "," : "plot", cpu_path, 2 + p,
					bench_path_name((enum bench_path)p), colors[p]);
				any = true;
			}
			if (!any)
				fprintf(gp,
					"unset logscale y\nset yrange [0:1]\nset label 1 'no data' at graph 0.5, graph 0.5 center\n"
					"plot 2 notitle lc rgb 'white'\nunset label 1\nset autoscale y\nset logscale y");
			fputc('\n', gp);
		}
		fprintf(gp, "unset multiplot\n");
	}
	fclose(gp);
	int err = run_gnuplot(script_path);
	if (err == -ENOENT)
		snprintf(note, note_len, "gnuplot not installed: chart data in %s, script %s",
			 data_path, script_path);
	else if (err)
		snprintf(note, note_len, "gnuplot failed on %s", script_path);
	else
		note[0] = '\0';
	return err;
}
