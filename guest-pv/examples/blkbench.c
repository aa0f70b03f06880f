/* Bench guest: drives disk 0 (PV ring or emulated ATA) or the console with one workload and reports BENCH lines to `kapsel bench`. */
#include "kapsel_guest/arch.h"
#include "kapsel_guest/block.h"
#include "kapsel_guest/console.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/os_hooks.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

/* Shared with the host side of the bench, so both issue the same offsets,
 * write the same bytes and bucket latencies alike. */
#include "kapsel/bench_pattern.h"

#include "bench_sync.h"

/*
 * Command line (key=value, all numbers decimal or 0x-hex):
 *   mode=blk|console   what to drive (default blk)
 *   path=pv|ata|virtio|auto
 *                      block path for disk 0 (default auto); off Kapsel
 *                      (QEMU, `kapsel bench`'s qemu-* paths) ata or virtio
 *   random=0|1 readpct=N bs=BYTES qd=N region=BYTES seed=N gen=N
 *                      the workload (kapsel/bench_pattern.h describes the stream)
 *   warmup_ms=N runtime_ms=N
 *                      time-based phases, or
 *   warmup_ops=N ops=N fixed operation counts (ops > 0 wins over runtime)
 *   sink=pv|uart line_bytes=N
 *                      console mode: which console path the payload takes
 *                      (not "console=", which the runtime itself reads)
 *   poll_ns=N          spin up to N ns for a completion before sleeping in
 *                      the hypervisor (kg_block_set_poll_ns; default 0)
 *   wake_pct=N         when the guest sleeps for completions, it sleeps
 *                      until N% of the queue depth are complete
 *                      (kg_block_reap_batch; default 75, 0: at the first)
 *   sync=1             after each "BENCH mark=..." line wait for a line on
 *                      the console input before going on, so the host can
 *                      read its counters at the mark (what `kapsel bench`
 *                      does); sync=0 runs straight through
 *
 * Output: "BENCH key=value ..." lines on the console (kg_printf, the PV
 * console when offered).  The host merges the keys of all BENCH lines; the
 * last line carries done=1.  Exit code 0, or 3 when the requested disk
 * path does not exist, 2 for a bad command line, 1 for other failures.
 */

#define EXIT_BAD_ARGS 2
#define EXIT_NO_DEVICE 3

struct params {
	int console_mode; /* 0: block workload, 1: console workload */
	enum kg_block_path path;
	uint64_t random, read_percent, block_bytes, queue_depth, region_bytes;
	uint64_t seed, generation;
	uint64_t warmup_ms, runtime_ms, warmup_ops, ops;
	uint64_t sync;
	uint64_t poll_ns;
	uint64_t wake_percent;
	int console_uart;
	uint64_t line_bytes;
};

struct slot {
	struct kg_block_request request;
	uint8_t *buffer;
	uint64_t submit_tsc; /* ours, in case the library leaves it 0 */
	int clobbered;	     /* a read overwrote the pattern filler */
};

struct phase {
	uint64_t ops, reads, writes, bytes, errors;
	int first_error;
	uint64_t elapsed_ns;
	uint64_t latency_sum_ticks, latency_max_ticks;
	uint64_t timed_ops; /* completions with all PV timestamps */
	uint64_t submit_pickup_ticks, pickup_complete_ticks, complete_reap_ticks;
	uint64_t verify_sectors, verify_errors;
	uint64_t hist_total;
};

static struct params params;
static struct kg_block_device *device;
static struct slot *slots;
static struct kg_block_request **done_list;
static uint32_t queue_depth;
static uint32_t wake_count; /* completions a sleep waits for */
static struct bench_stream stream;
static uint32_t histogram[BENCH_HIST_BUCKETS];

static uint64_t ticks_to_ns(uint64_t ticks)
{
	return kg_time_ticks_to_ns(ticks);
}

static int parse_args(int argc, char **argv)
{
	params = (struct params){
		.path = KG_BLOCK_AUTO,
		.read_percent = 100,
		.block_bytes = 4096,
		.queue_depth = 1,
		.region_bytes = 16u << 20,
		.seed = 1,
		.generation = 1,
		.warmup_ms = 200,
		.runtime_ms = 1000,
		.line_bytes = 80,
		.wake_percent = 75,
	};
	for (int i = 1; i < argc; i++) {
		char *arg = argv[i];
		char *value = arg;
		while (*value && *value != '=')
			value++;
		if (!*value) {
			kg_printf("BENCH error=bad-argument argument=%s\n", arg);
			return -1;
		}
		*value++ = '\0';
		uint64_t number = 0;
		int numeric = kg_parse_u64(value, &number) == 0;
		static const struct {
			const char *key;
			uint64_t *field;
		} numbers[] = {
			{ "random", &params.random },
			{ "readpct", &params.read_percent },
			{ "bs", &params.block_bytes },
			{ "qd", &params.queue_depth },
			{ "region", &params.region_bytes },
			{ "seed", &params.seed },
			{ "gen", &params.generation },
			{ "warmup_ms", &params.warmup_ms },
			{ "runtime_ms", &params.runtime_ms },
			{ "warmup_ops", &params.warmup_ops },
			{ "ops", &params.ops },
			{ "sync", &params.sync },
			{ "poll_ns", &params.poll_ns },
			{ "wake_pct", &params.wake_percent },
			{ "line_bytes", &params.line_bytes },
		};
		int known = 0;
		for (unsigned k = 0; k < sizeof(numbers) / sizeof(numbers[0]); k++) {
			if (strcmp(arg, numbers[k].key) == 0) {
				if (!numeric) {
					kg_printf("BENCH error=bad-number key=%s\n", arg);
					return -1;
				}
				*numbers[k].field = number;
				known = 1;
			}
		}
		if (known)
			continue;
		if (strcmp(arg, "mode") == 0 && strcmp(value, "blk") == 0)
			params.console_mode = 0;
		else if (strcmp(arg, "mode") == 0 && strcmp(value, "console") == 0)
			params.console_mode = 1;
		else if (strcmp(arg, "path") == 0 && strcmp(value, "pv") == 0)
			params.path = KG_BLOCK_PV;
		else if (strcmp(arg, "path") == 0 && strcmp(value, "ata") == 0)
			params.path = KG_BLOCK_ATA;
		else if (strcmp(arg, "path") == 0 && strcmp(value, "virtio") == 0)
			params.path = KG_BLOCK_VIRTIO;
		else if (strcmp(arg, "path") == 0 && strcmp(value, "auto") == 0)
			params.path = KG_BLOCK_AUTO;
		else if (strcmp(arg, "sink") == 0 && strcmp(value, "uart") == 0)
			params.console_uart = 1;
		else if (strcmp(arg, "sink") == 0 && strcmp(value, "pv") == 0)
			params.console_uart = 0;
		else if (strcmp(arg, "console") == 0)
			continue; /* the runtime's own option */
		else {
			kg_printf("BENCH error=bad-argument argument=%s=%s\n", arg, value);
			return -1;
		}
	}
	if (params.block_bytes == 0 || params.block_bytes % 4096 ||
	    params.block_bytes > (16u << 20) || params.queue_depth == 0 ||
	    params.queue_depth > 1024 || params.read_percent > 100 ||
	    params.region_bytes < params.block_bytes || params.line_bytes < 16 ||
	    params.line_bytes > 4096 || params.wake_percent > 100) {
		kg_printf("BENCH error=bad-parameters\n");
		return -1;
	}
	return 0;
}

/* ---- Block workload ------------------------------------------------------ */

static void prepare(struct slot *slot)
{
	int is_write = 0;
	uint64_t block = bench_stream_next(&stream, &is_write);
	uint64_t sector = block * (params.block_bytes / BENCH_SECTOR_BYTES);
	struct kg_block_request *request = &slot->request;

	memset(request, 0, sizeof(*request));
	request->op = is_write ? KAPSEL_BLK_OP_WRITE : KAPSEL_BLK_OP_READ;
	request->sector = sector;
	request->segment_count = 1;
	request->segments[0].buffer = slot->buffer;
	request->segments[0].length_bytes = (uint32_t)params.block_bytes;
	request->user_data = slot;
	if (is_write) {
		if (slot->clobbered)
			bench_pattern_fill(slot->buffer, (uint32_t)params.block_bytes, sector,
					   (uint32_t)params.generation);
		else
			bench_pattern_stamp(slot->buffer, (uint32_t)params.block_bytes, sector,
					    (uint32_t)params.generation);
		slot->clobbered = 0;
	} else {
		slot->clobbered = 1;
	}
}

static void account(struct phase *phase, struct slot *slot, int measure)
{
	struct kg_block_request *request = &slot->request;
	uint64_t reap = request->reap_tsc ? request->reap_tsc : kg_rdtsc();
	uint64_t submit = request->submit_tsc ? request->submit_tsc : slot->submit_tsc;
	int is_write = request->op == KAPSEL_BLK_OP_WRITE;

	phase->ops++;
	if (request->status < 0) {
		if (!phase->errors)
			phase->first_error = request->status;
		phase->errors++;
		return;
	}
	if (is_write)
		phase->writes++;
	else
		phase->reads++;
	phase->bytes += params.block_bytes;
	if (!is_write) {
		phase->verify_sectors += params.block_bytes / BENCH_SECTOR_BYTES;
		phase->verify_errors +=
			bench_pattern_check(slot->buffer, (uint32_t)params.block_bytes,
					    request->sector);
	}
	if (!measure)
		return;
	uint64_t latency = reap > submit ? reap - submit : 0;
	phase->latency_sum_ticks += latency;
	if (latency > phase->latency_max_ticks)
		phase->latency_max_ticks = latency;
	histogram[bench_hist_index(ticks_to_ns(latency))]++;
	phase->hist_total++;
	/* PV timestamps: submit <= pickup <= complete <= reap when present. */
	uint64_t pickup = request->pickup_tsc, complete = request->complete_tsc;
	if (pickup && complete && submit <= pickup && pickup <= complete && complete <= reap) {
		phase->timed_ops++;
		phase->submit_pickup_ticks += pickup - submit;
		phase->pickup_complete_ticks += complete - pickup;
		phase->complete_reap_ticks += reap - complete;
	}
}

static int submit(struct phase *phase, struct slot *slot)
{
	slot->submit_tsc = kg_rdtsc();
	int err = kg_block_submit(device, &slot->request);
	if (err < 0) {
		if (!phase->errors)
			phase->first_error = err;
		phase->errors++;
	}
	return err;
}

/* Keep queue_depth requests in flight until the time or the operation
 * budget is spent, then drain. */
static void run_phase(struct phase *phase, uint64_t duration_ns, uint64_t max_ops, int measure)
{
	memset(phase, 0, sizeof(*phase));
	uint64_t start = kg_time_now_ns();
	uint64_t deadline = max_ops ? UINT64_MAX : start + duration_ns;
	uint64_t issued = 0;
	int stop = !max_ops && duration_ns == 0;

	for (uint32_t i = 0; i < queue_depth && !stop; i++) {
		if (max_ops && issued >= max_ops)
			break;
		prepare(&slots[i]);
		if (submit(phase, &slots[i]) < 0) {
			stop = 1;
			break;
		}
		issued++;
	}
	/* No kg_block_kick: the reap publishes what was submitted, and the
	 * kick may then go with its sleep. */
	while (kg_block_in_flight(device) > 0) {
		unsigned n = kg_block_reap_batch(device, done_list, queue_depth, wake_count);
		if (!stop && (kg_time_now_ns() >= deadline || (max_ops && issued >= max_ops)))
			stop = 1;
		for (unsigned i = 0; i < n; i++) {
			struct slot *slot = done_list[i]->user_data;
			account(phase, slot, measure);
			if (stop || (max_ops && issued >= max_ops))
				continue;
			prepare(slot);
			if (submit(phase, slot) < 0) {
				stop = 1;
				continue;
			}
			issued++;
		}
	}
	phase->elapsed_ns = kg_time_now_ns() - start;
}

static int block_main(void)
{
	int err = kg_block_open(0, params.path, &device);
	if (err < 0) {
		kg_printf("BENCH error=%s path=%s status=%d\n",
			  err == -KAPSEL_ENODEV ? "no-device" : "open-failed",
			  params.path == KG_BLOCK_PV	   ? "pv"
			  : params.path == KG_BLOCK_ATA	   ? "ata"
			  : params.path == KG_BLOCK_VIRTIO ? "virtio"
							   : "auto",
			  err);
		return err == -KAPSEL_ENODEV ? EXIT_NO_DEVICE : 1;
	}
	struct kg_block_info info;
	kg_block_get_info(device, &info);
	kg_block_set_poll_ns(device, params.poll_ns);
	queue_depth = (uint32_t)params.queue_depth;
	if (info.queue_depth && queue_depth > info.queue_depth)
		queue_depth = info.queue_depth;
	if (!info.queue_depth)
		queue_depth = 1;
	wake_count = (uint32_t)(queue_depth * params.wake_percent / 100);
	if (wake_count == 0)
		wake_count = 1;
	kg_printf("BENCH ready=1 device_path=%s capacity_sectors=%llu queue_depth=%u device_queue_depth=%u max_segments=%u features=%llu\n",
		  info.path == KG_BLOCK_PV	 ? "pv"
		  : info.path == KG_BLOCK_ATA	 ? "ata"
		  : info.path == KG_BLOCK_VIRTIO ? "virtio"
						 : "other",
		  (unsigned long long)info.capacity_sectors, queue_depth, info.queue_depth,
		  info.max_segments, (unsigned long long)info.features);
	if (params.region_bytes / BENCH_SECTOR_BYTES > info.capacity_sectors) {
		kg_printf("BENCH error=region-too-large capacity_sectors=%llu\n",
			  (unsigned long long)info.capacity_sectors);
		return 1;
	}

	slots = kg_malloc(queue_depth * sizeof(*slots));
	done_list = kg_malloc(queue_depth * sizeof(*done_list));
	if (!slots || !done_list) {
		kg_printf("BENCH error=out-of-memory\n");
		return 1;
	}
	for (uint32_t i = 0; i < queue_depth; i++) {
		slots[i].buffer = kg_os_alloc_pages(params.block_bytes / 4096);
		if (!slots[i].buffer) {
			kg_printf("BENCH error=out-of-memory need_bytes=%llu\n",
				  (unsigned long long)(queue_depth * params.block_bytes));
			return 1;
		}
		bench_pattern_fill(slots[i].buffer, (uint32_t)params.block_bytes, 0,
				   (uint32_t)params.generation);
	}
	bench_stream_init(&stream, params.region_bytes / params.block_bytes,
			  (uint32_t)params.random, (uint32_t)params.read_percent, params.seed);

	struct phase warmup, measured;
	run_phase(&warmup, params.warmup_ms * 1000000ull, params.ops ? params.warmup_ops : 0, 0);
	if (params.ops && !params.warmup_ops)
		warmup = (struct phase){ 0 };

	struct kg_block_stats before, after;
	bench_sync_mark("start");
	kg_block_get_stats(device, &before);
	run_phase(&measured, params.runtime_ms * 1000000ull, params.ops, 1);
	kg_block_get_stats(device, &after);
	bench_sync_mark("end");

	uint64_t timed = measured.timed_ops ? measured.timed_ops : 1;
	uint64_t measured_ok = measured.ops - measured.errors;
	kg_printf("BENCH ops=%llu reads=%llu writes=%llu bytes=%llu elapsed_ns=%llu errors=%llu first_error=%d warmup_ops=%llu warmup_errors=%llu\n",
		  (unsigned long long)measured.ops, (unsigned long long)measured.reads,
		  (unsigned long long)measured.writes, (unsigned long long)measured.bytes,
		  (unsigned long long)measured.elapsed_ns, (unsigned long long)measured.errors,
		  measured.errors ? measured.first_error : warmup.first_error,
		  (unsigned long long)warmup.ops, (unsigned long long)warmup.errors);
	kg_printf("BENCH lat_p50_ns=%llu lat_p99_ns=%llu lat_p999_ns=%llu lat_mean_ns=%llu lat_max_ns=%llu\n",
		  (unsigned long long)bench_hist_percentile(histogram, measured.hist_total, 5000),
		  (unsigned long long)bench_hist_percentile(histogram, measured.hist_total, 9900),
		  (unsigned long long)bench_hist_percentile(histogram, measured.hist_total, 9990),
		  (unsigned long long)(measured_ok ? ticks_to_ns(measured.latency_sum_ticks) /
							     measured_ok
						   : 0),
		  (unsigned long long)ticks_to_ns(measured.latency_max_ticks));
	kg_printf("BENCH requests=%llu kicks=%llu kicks_suppressed=%llu blocks=%llu polls=%llu kicks_in_block=%llu wake_count=%u\n",
		  (unsigned long long)(after.requests - before.requests),
		  (unsigned long long)(after.kicks - before.kicks),
		  (unsigned long long)(after.kicks_suppressed - before.kicks_suppressed),
		  (unsigned long long)(after.blocks - before.blocks),
		  (unsigned long long)(after.polls - before.polls),
		  (unsigned long long)(after.kicks_in_block - before.kicks_in_block), wake_count);
	kg_printf("BENCH timed_ops=%llu submit_pickup_ns=%llu pickup_complete_ns=%llu complete_reap_ns=%llu\n",
		  (unsigned long long)measured.timed_ops,
		  (unsigned long long)ticks_to_ns(measured.submit_pickup_ticks / timed),
		  (unsigned long long)ticks_to_ns(measured.pickup_complete_ticks / timed),
		  (unsigned long long)ticks_to_ns(measured.complete_reap_ticks / timed));
	kg_printf("BENCH verify_sectors=%llu verify_errors=%llu done=1\n",
		  (unsigned long long)(measured.verify_sectors + warmup.verify_sectors),
		  (unsigned long long)(measured.verify_errors + warmup.verify_errors));
	return 0;
}

/* ---- Console workload ---------------------------------------------------- */

static uint16_t uart_base;

static void console_line(char *line, uint64_t sequence)
{
	int n = kg_snprintf(line, (size_t)params.line_bytes, "KCON %08llu ",
			    (unsigned long long)sequence);
	for (uint64_t i = (uint64_t)n; i + 1 < params.line_bytes; i++)
		line[i] = (char)('a' + (sequence + i) % 26);
	line[params.line_bytes - 1] = '\n';
}

static void console_put(const char *line)
{
	if (params.console_uart) {
		kg_uart_write(uart_base, line, params.line_bytes);
		return;
	}
	uint64_t done = 0;
	while (done < params.line_bytes) {
		int64_t n = kg_hc_console_write(line + done, params.line_bytes - done);
		if (n <= 0)
			kg_panic("PV console write failed: %lld", (long long)n);
		done += (uint64_t)n;
	}
}

static uint64_t console_phase(char *line, uint64_t *sequence, uint64_t duration_ns,
			      uint64_t max_lines, uint64_t *elapsed_ns)
{
	uint64_t start = kg_time_now_ns();
	uint64_t lines = 0;
	while (max_lines ? lines < max_lines : kg_time_now_ns() - start < duration_ns) {
		console_line(line, (*sequence)++);
		console_put(line);
		lines++;
	}
	*elapsed_ns = kg_time_now_ns() - start;
	return lines;
}

static int console_main(void)
{
	const struct kapsel_device_desc *uart = kg_platform_find_device(KAPSEL_DEV_UART16550, 0);
	if (params.console_uart) {
		if (!uart) {
			kg_printf("BENCH error=no-device path=uart\n");
			return EXIT_NO_DEVICE;
		}
		uart_base = uart->io_base;
		kg_uart_init(uart_base);
	} else if (!kg_platform_find_device(KAPSEL_DEV_CONSOLE_PV, 0)) {
		kg_printf("BENCH error=no-device path=pv-console\n");
		return EXIT_NO_DEVICE;
	}
	char *line = kg_malloc(params.line_bytes);
	if (!line)
		return 1;
	kg_printf("BENCH ready=1 device_path=%s line_bytes=%llu\n",
		  params.console_uart ? "uart" : "pv-console",
		  (unsigned long long)params.line_bytes);
	uint64_t sequence = 0, elapsed = 0;
	console_phase(line, &sequence, params.warmup_ms * 1000000ull,
		      params.ops ? params.warmup_ops : 0, &elapsed);
	bench_sync_mark("start");
	uint64_t lines = console_phase(line, &sequence, params.runtime_ms * 1000000ull, params.ops,
				       &elapsed);
	bench_sync_mark("end");
	uint64_t per_line = lines ? elapsed / lines : 0;
	kg_printf("BENCH ops=%llu writes=%llu bytes=%llu elapsed_ns=%llu errors=0 lat_mean_ns=%llu done=1\n",
		  (unsigned long long)lines, (unsigned long long)lines,
		  (unsigned long long)(lines * params.line_bytes), (unsigned long long)elapsed,
		  (unsigned long long)per_line);
	return 0;
}

int main(int argc, char **argv)
{
	if (parse_args(argc, argv) < 0)
		return EXIT_BAD_ARGS;
	/* Off Kapsel (QEMU) the block rows run on virtio-blk or IDE, timed by
	 * the TSC rate the boot shim measured; there is no PV console to
	 * answer marks on, so the host reads its clocks as the marks arrive. */
	bool kapsel = kg_platform_is_kapsel();
	if (!kapsel && (params.console_mode || params.path == KG_BLOCK_PV)) {
		kg_printf("BENCH error=not-kapsel\n");
		return 1;
	}
	params.sync = kapsel ? bench_sync_setup(params.sync) : 0;
	return params.console_mode ? console_main() : block_main();
}
