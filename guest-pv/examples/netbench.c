/* The guest of `kapsel bench`'s network rows: the client (measured) or server end of frame-rr / frame-stream over the guest library's net API (PV or NE2000). */
#include "kapsel_guest/arch.h"
#include "kapsel_guest/net.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

#include "kapsel/bench_net.h"

#include "args.h"
#include "bench_sync.h"

/*
 * Usage (guest command line, key=value):
 *   role=client pattern=rr|stream size=BYTES [warmup_ms=N runtime_ms=N]
 *               [warmup_ops=N ops=N] [sync=1]
 *   role=server
 * Common: path=auto|pv|ne2000 (the library picks the driver: AUTO takes
 * what the interface is offered as), poll_us=N (PV receive busy-poll).
 * The pattern and the frames are hypercall-abi/kapsel/bench_net.h's, the
 * same code the host's native path runs.  The client prints "BENCH k=v"
 * lines for hypervisor/bench/bench_guest.c; exit 3 = no such interface.
 */

#define EXIT_NO_DEVICE 3

static struct kg_net_device *net;
static struct bench_net_link link;
static uint32_t histogram[BENCH_HIST_BUCKETS];
static struct kg_net_stats window_before, window_after; /* at the marks */

static int guest_send(void *context, const uint8_t *frame, uint32_t length)
{
	(void)context;
	return kg_net_send(net, frame, length);
}

static int guest_recv(void *context, uint8_t *buffer, uint32_t max_bytes, uint64_t deadline_ns)
{
	(void)context;
	return kg_net_recv_until(net, buffer, max_bytes, deadline_ns);
}

static uint64_t guest_now(void *context)
{
	(void)context;
	return kg_time_now_ns();
}

static void guest_mark(void *context, const char *name)
{
	(void)context;
	if (strcmp(name, "end") == 0)
		kg_net_get_stats(net, &window_after);
	bench_sync_mark(name);
	if (strcmp(name, "start") == 0)
		kg_net_get_stats(net, &window_before);
}

int main(int argc, char **argv)
{
	args_init(argc, argv, 0);
	const char *role = args_text("role");
	enum kg_net_path path = args_net_path("netbench");
	bool client = role && strcmp(role, "client") == 0;
	if (!client && !(role && strcmp(role, "server") == 0))
		kg_panic("netbench: give role=client or role=server");

	int err = kg_net_open(0, path, &net);
	if (err) {
		kg_printf("BENCH error=no-device status=%d\n", err);
		return EXIT_NO_DEVICE;
	}
	kg_net_set_poll_ns(net, args_number("poll_us", 0) * 1000);
	kg_net_mac(net, link.mac);
	link.send = guest_send;
	link.recv = guest_recv;
	link.now_ns = guest_now;
	struct bench_net_result r = { 0 };
	if (!client) {
		kg_printf("netbench: server path=%s\n", kg_net_path_name(kg_net_path_of(net)));
		int status = bench_net_server(&link, &r);
		kg_printf("netbench: server measured_frames=%llu verified=%llu bad=%llu seq_gaps=%llu%s%s\n",
			  (unsigned long long)r.ops, (unsigned long long)r.verified,
			  (unsigned long long)r.bad, (unsigned long long)r.seq_gaps,
			  status ? " error=" : "", status ? r.error_text : "");
		return status ? 1 : 0;
	}

	const char *pattern = args_text("pattern");
	struct bench_net_params params = {
		.stream = pattern && strcmp(pattern, "stream") == 0,
		.frame_bytes = (uint32_t)args_number("size", 64),
		.warmup_ns = args_number("warmup_ms", 100) * 1000000ull,
		.runtime_ns = args_number("runtime_ms", 1000) * 1000000ull,
		.warmup_ops = args_number("warmup_ops", 0),
		.ops = args_number("ops", 0),
	};
	if (!pattern || (!params.stream && strcmp(pattern, "rr") != 0))
		kg_panic("netbench: pattern='%s' is unknown; use rr or stream",
			 pattern ? pattern : "");
	if (params.frame_bytes < BENCH_NET_FRAME_MIN || params.frame_bytes > BENCH_NET_FRAME_MAX)
		kg_panic("netbench: size=%u must be %u-%u", params.frame_bytes, BENCH_NET_FRAME_MIN,
			 BENCH_NET_FRAME_MAX);
	bench_sync_setup(args_number("sync", 0));
	link.mark = guest_mark;
	r.histogram = histogram;
	kg_printf("BENCH ready=1 device_path=%s pattern=%s frame_bytes=%u\n",
		  kg_net_path_name(kg_net_path_of(net)), params.stream ? "stream" : "rr",
		  params.frame_bytes);

	bench_net_client(&link, &params, &r);
	if (r.error) {
		/* No end mark came: the host sees no window and reports this. */
		kg_printf("BENCH error=net status=-5 verify_errors=%llu\n",
			  (unsigned long long)r.bad);
		kg_printf("netbench: client failed: %s\n", r.error_text ? r.error_text : "?");
		return 1;
	}
	/* Library counters of the measured window: kicks are doorbell exits
	 * the VMM never sees (ioeventfd), so the host adds them. */
	const struct kg_net_stats *before = &window_before, *after = &window_after;
	uint64_t ok = r.hist_total ? r.hist_total : 1;
	kg_printf("BENCH ops=%llu sent=%llu bytes=%llu elapsed_ns=%llu errors=0 warmup_ops=%llu retries=%llu lost=%llu seq_gaps=%llu\n",
		  (unsigned long long)r.ops, (unsigned long long)r.sent,
		  (unsigned long long)r.bytes, (unsigned long long)r.elapsed_ns,
		  (unsigned long long)r.warmup_ops, (unsigned long long)r.retries,
		  (unsigned long long)r.lost, (unsigned long long)r.seq_gaps);
	if (r.hist_total)
		kg_printf("BENCH lat_p50_ns=%llu lat_p99_ns=%llu lat_p999_ns=%llu lat_mean_ns=%llu lat_max_ns=%llu\n",
			  (unsigned long long)bench_hist_percentile(histogram, r.hist_total, 5000),
			  (unsigned long long)bench_hist_percentile(histogram, r.hist_total, 9900),
			  (unsigned long long)bench_hist_percentile(histogram, r.hist_total, 9990),
			  (unsigned long long)(r.latency_sum_ns / ok),
			  (unsigned long long)r.latency_max_ns);
	kg_printf("BENCH kicks=%llu kicks_suppressed=%llu blocks=%llu all_frames=%llu\n",
		  (unsigned long long)(after->kicks - before->kicks),
		  (unsigned long long)(after->kicks_suppressed - before->kicks_suppressed),
		  (unsigned long long)(after->blocks - before->blocks),
		  (unsigned long long)(after->frames_sent - before->frames_sent +
				       after->frames_received - before->frames_received));
	kg_printf("BENCH verify_frames=%llu verify_errors=%llu done=1\n",
		  (unsigned long long)r.verified, (unsigned long long)r.bad);
	return 0;
}
