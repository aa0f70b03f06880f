/* `kapsel bench` native path of the network rows: two host threads run bench_net.h's client and server over the link the VMs use (Unix datagram sockets, 1 MiB buffers, a full peer drops the frame). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kapsel/bench_net.h"

#include "bench.h"

/* The socket backend's buffer size (hypervisor/devices/net/net_backend.c). */
#define NATIVE_SOCKET_BUFFER_BYTES (1 << 20)

struct native_end {
	struct bench_net_link link; /* first: the link's context is the end */
	int fd;
	struct sockaddr_un peer;
	socklen_t peer_len;
	int stop_fd;	    /* eventfd: the client is done, stop receiving */
	uint64_t drops_out; /* EAGAIN: the peer's queue was full, as the backend counts */
	struct bench_net_result result;
	int status;
};

static uint64_t native_now(void *context)
{
	(void)context;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* As the socket backend sends: one sendto per frame, nonblocking; a frame
 * the peer has no room for is dropped and counted (it returns 0). */
static int native_send(void *context, const uint8_t *frame, uint32_t length)
{
	struct native_end *end = context;
	for (;;) {
		ssize_t n = sendto(end->fd, frame, length, 0, (struct sockaddr *)&end->peer,
				   end->peer_len);
		if (n == (ssize_t)length)
			return 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == ENOENT || errno == ECONNREFUSED)) {
			end->drops_out++;
			return 0;
		}
		return -EIO;
	}
}

static int native_recv(void *context, uint8_t *buffer, uint32_t max_bytes, uint64_t deadline_ns)
{
	struct native_end *end = context;
	for (;;) {
		ssize_t n = recv(end->fd, buffer, max_bytes, MSG_DONTWAIT);
		if (n >= 0)
			return (int)n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -EIO;
		uint64_t now = native_now(NULL);
		if (now >= deadline_ns)
			return 0;
		uint64_t wait_ms = (deadline_ns - now + 999999) / 1000000;
		struct pollfd pfd[2] = { { .fd = end->fd, .events = POLLIN },
					 { .fd = end->stop_fd, .events = POLLIN } };
		poll(pfd, end->stop_fd >= 0 ? 2 : 1, wait_ms > 1000 ? 1000 : (int)wait_ms);
		if (end->stop_fd >= 0 && pfd[1].revents)
			return 0; /* as a deadline that passed */
	}
}

static int native_open(struct native_end *end, const char *self, const char *peer, uint8_t mac_last)
{
	memset(end, 0, sizeof(*end));
	end->stop_fd = -1;
	end->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (end->fd < 0)
		return -errno;
	struct sockaddr_un own = { .sun_family = AF_UNIX };
	if (strlen(self) >= sizeof(own.sun_path) || strlen(peer) >= sizeof(end->peer.sun_path))
		return -ENAMETOOLONG;
	strcpy(own.sun_path, self);
	unlink(self);
	if (bind(end->fd, (struct sockaddr *)&own, sizeof(own)) < 0)
		return -errno;
	int bytes = NATIVE_SOCKET_BUFFER_BYTES;
	setsockopt(end->fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
	setsockopt(end->fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
	end->peer.sun_family = AF_UNIX;
	strcpy(end->peer.sun_path, peer);
	end->peer_len = sizeof(end->peer);
	static const uint8_t base[6] = { 0x02, 0x6b, 0x62, 0x6e, 0x00, 0x00 };
	memcpy(end->link.mac, base, sizeof(base));
	end->link.mac[5] = mac_last;
	end->link.context = end;
	end->link.send = native_send;
	end->link.recv = native_recv;
	end->link.now_ns = native_now;
	return 0;
}

static void *native_server(void *opaque)
{
	struct native_end *end = opaque;
	end->status = bench_net_server(&end->link, &end->result);
	return NULL;
}

struct native_marks {
	uint64_t cpu_start, cpu_end;
};

static uint64_t process_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct native_marks *current_marks; /* one native run at a time */

static void native_mark(void *context, const char *name)
{
	(void)context;
	if (strcmp(name, "start") == 0)
		current_marks->cpu_start = process_cpu_ns();
	else
		current_marks->cpu_end = process_cpu_ns();
}

int bench_net_native_run(const struct bench_job *job, struct bench_run *run)
{
	bench_run_clear(run);
	const struct bench_workload *w = job->workload;
	char path_a[512], path_b[512];
	snprintf(path_a, sizeof(path_a), "%s/native-client.sock", job->work_dir);
	snprintf(path_b, sizeof(path_b), "%s/native-server.sock", job->work_dir);
	struct native_end *client = calloc(1, sizeof(*client));
	struct native_end *server = calloc(1, sizeof(*server));
	uint32_t *histogram = calloc(BENCH_HIST_BUCKETS, sizeof(*histogram));
	struct native_marks marks = { 0, 0 };
	int err = -ENOMEM;
	bool started = false;
	pthread_t thread;
	if (!client || !server || !histogram)
		goto out;
	err = native_open(client, path_a, path_b, 1);
	if (!err)
		err = native_open(server, path_b, path_a, 2);
	if (err) {
		snprintf(run->error, sizeof(run->error),
			 "cannot set up the native socket pair in %s: %s", job->work_dir,
			 strerror(-err));
		goto out;
	}
	server->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (server->stop_fd < 0) {
		err = -errno;
		snprintf(run->error, sizeof(run->error), "eventfd: %s", strerror(errno));
		goto out;
	}
	err = -pthread_create(&thread, NULL, native_server, server);
	if (err) {
		snprintf(run->error, sizeof(run->error), "cannot start the server thread: %s",
			 strerror(-err));
		goto out;
	}
	started = true;
	struct bench_net_params params = {
		.stream = w->net_stream,
		.frame_bytes = w->block_bytes,
		.warmup_ns = job->warmup_ns,
		.runtime_ns = job->runtime_ns,
		.warmup_ops = job->warmup_ops,
		.ops = job->ops,
	};
	current_marks = &marks;
	client->link.mark = native_mark;
	client->result.histogram = histogram;
	bench_net_client(&client->link, &params, &client->result);
	/* Done (REPORT received) or failed: the server's receive sees the end
	 * at once instead of lingering for a repeated END. */
	uint64_t one = 1;
	if (write(server->stop_fd, &one, sizeof(one)) != sizeof(one))
		shutdown(server->fd, SHUT_RDWR);
	pthread_join(thread, NULL);
	started = false;
	const struct bench_net_result *r = &client->result;
	if (r->error || server->status) {
		err = -EIO;
		snprintf(run->error, sizeof(run->error), "native %s: %s",
			 r->error ? "client" : "server",
			 r->error ? r->error_text : server->result.error_text);
		goto out;
	}
	run->ops = r->ops;
	run->bytes = r->bytes;
	run->elapsed_ns = r->elapsed_ns;
	run->host_window_ns = r->elapsed_ns;
	run->verify_sectors = r->verified + server->result.verified; /* frames, for net rows */
	run->verify_errors = r->bad + server->result.bad;
	run->queue_depth_used = 1;
	bench_counters_add(&run->counters, "frames_sent", r->sent);
	bench_counters_add(&run->counters, "frames_lost", r->lost);
	bench_counters_add(&run->counters, "retries", r->retries);
	bench_counters_add(&run->counters, "seq_gaps", r->seq_gaps);
	bench_counters_add(&run->counters, "drops_out", client->drops_out + server->drops_out);
	double seconds = r->elapsed_ns / 1e9;
	double *m = run->metrics;
	if (seconds > 0 && r->ops) {
		m[BENCH_M_IOPS] = r->ops / seconds;
		m[BENCH_M_MBPS] = r->bytes / seconds / 1e6;
	}
	if (r->hist_total) {
		m[BENCH_M_LAT_P50_US] = bench_hist_percentile(histogram, r->hist_total, 5000) / 1e3;
		m[BENCH_M_LAT_P99_US] = bench_hist_percentile(histogram, r->hist_total, 9900) / 1e3;
		m[BENCH_M_LAT_P999_US] =
			bench_hist_percentile(histogram, r->hist_total, 9990) / 1e3;
		m[BENCH_M_LAT_MEAN_US] = r->latency_sum_ns / 1e3 / r->hist_total;
	}
	if (r->ops && marks.cpu_end > marks.cpu_start) {
		run->cpu_ns = marks.cpu_end - marks.cpu_start;
		m[BENCH_M_CPU_US_PER_OP] = run->cpu_ns / 1e3 / r->ops;
	}
	run->ok = true;
	err = 0;
out:
	if (started)
		pthread_join(thread, NULL);
	if (client && client->fd > 0)
		close(client->fd);
	if (server && server->fd > 0)
		close(server->fd);
	if (server && server->stop_fd > 0)
		close(server->stop_fd);
	unlink(path_a);
	unlink(path_b);
	free(client);
	free(server);
	free(histogram);
	return err;
}
