/* Progress of save, snapshot and migrate on the client side: parse the VM's 'progress' reply, compute rate and time left, draw a line on stderr. */
#define _GNU_SOURCE
#include "cli/cli_progress.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "control/control.h"
#include "control/control_client.h"
#include "core/clock.h"

#define PROGRESS_FIRST_MS 100 /* the first sample: soon, yet after the verb began */
#define PROGRESS_INTERVAL_MS 250
#define PROGRESS_REPLY_TIMEOUT_MS 2000

static uint64_t payload_u64(const char *payload, const char *key)
{
	char value[64];
	if (!control_payload_get(payload, key, value, sizeof(value)))
		return 0;
	return strtoull(value, NULL, 10);
}

static void payload_text(const char *payload, const char *key, char *out, size_t len)
{
	if (!control_payload_get(payload, key, out, len))
		out[0] = '\0';
}

int cli_progress_parse(const char *payload, struct state_progress *p)
{
	memset(p, 0, sizeof(*p));
	char value[64];
	if (!payload || !control_payload_get(payload, "sequence", value, sizeof(value)))
		return -EPROTO;
	p->sequence = strtoull(value, NULL, 10);
	payload_text(payload, "operation", p->operation, sizeof(p->operation));
	payload_text(payload, "state", p->state, sizeof(p->state));
	payload_text(payload, "phase", p->phase, sizeof(p->phase));
	p->scanned_bytes = payload_u64(payload, "scanned_bytes");
	p->total_bytes = payload_u64(payload, "total_bytes");
	p->written_bytes = payload_u64(payload, "written_bytes");
	p->round = (uint32_t)payload_u64(payload, "round");
	p->max_rounds = (uint32_t)payload_u64(payload, "max_rounds");
	p->dirty_bytes = payload_u64(payload, "dirty_bytes");
	p->elapsed_ns = payload_u64(payload, "elapsed_ns");
	return 0;
}

static bool same_pass(const struct state_progress *a, const struct state_progress *b)
{
	return a->sequence == b->sequence && a->round == b->round &&
	       strcmp(a->phase, b->phase) == 0 && a->total_bytes == b->total_bytes;
}

void cli_progress_rate(const struct state_progress *prev, const struct state_progress *cur,
		       uint64_t elapsed_ns, uint64_t *bytes_per_s, uint64_t *left_ns)
{
	*bytes_per_s = 0;
	*left_ns = UINT64_MAX;
	if (!prev || prev->sequence != cur->sequence || elapsed_ns == 0)
		return;
	if (cur->written_bytes >= prev->written_bytes)
		*bytes_per_s = (uint64_t)((double)(cur->written_bytes - prev->written_bytes) * 1e9 /
					  (double)elapsed_ns);
	if (!same_pass(prev, cur) || cur->scanned_bytes <= prev->scanned_bytes)
		return;
	uint64_t walked = cur->scanned_bytes - prev->scanned_bytes;
	uint64_t remaining =
		cur->total_bytes > cur->scanned_bytes ? cur->total_bytes - cur->scanned_bytes : 0;
	*left_ns = (uint64_t)((double)remaining * (double)elapsed_ns / (double)walked + 0.5);
}

void cli_format_bytes(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
	if (bytes < 1024) {
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
		return;
	}
	double value = (double)bytes / 1024.0;
	unsigned unit = 0;
	while (value >= 1024.0 && unit + 1 < sizeof(units) / sizeof(units[0])) {
		value /= 1024.0;
		unit++;
	}
	snprintf(buf, len, "%.1f %s", value, units[unit]);
}

void cli_format_duration(uint64_t ns, char *buf, size_t len)
{
	uint64_t tenths = (ns + 50000000ull) / 100000000ull;
	if (tenths < 600) {
		snprintf(buf, len, "%llu.%llu s", (unsigned long long)(tenths / 10),
			 (unsigned long long)(tenths % 10));
		return;
	}
	uint64_t s = (ns + 500000000ull) / 1000000000ull;
	if (s < 3600)
		snprintf(buf, len, "%llum%02llus", (unsigned long long)(s / 60),
			 (unsigned long long)(s % 60));
	else
		snprintf(buf, len, "%lluh%02llum", (unsigned long long)(s / 3600),
			 (unsigned long long)(s % 3600 / 60));
}

void cli_progress_format(const struct state_progress *p, uint64_t bytes_per_s, uint64_t left_ns,
			 char *buf, size_t len)
{
	char scanned[32], total[32], written[32], rate[40], left[48], dirty[32], elapsed[32];
	cli_format_bytes(p->scanned_bytes, scanned, sizeof(scanned));
	cli_format_bytes(p->total_bytes, total, sizeof(total));
	cli_format_bytes(p->written_bytes, written, sizeof(written));
	cli_format_bytes(p->dirty_bytes, dirty, sizeof(dirty));
	cli_format_duration(p->elapsed_ns, elapsed, sizeof(elapsed));
	unsigned percent = p->total_bytes ? (unsigned)(p->scanned_bytes * 100 / p->total_bytes)
					  : (strcmp(p->state, "done") == 0 ? 100u : 0u);
	bool done = strcmp(p->state, "running") != 0;
	if (bytes_per_s) {
		cli_format_bytes(bytes_per_s, rate, sizeof(rate));
		strcat(rate, "/s");
	} else if (done && p->elapsed_ns) {
		cli_format_bytes((uint64_t)((double)p->written_bytes * 1e9 / (double)p->elapsed_ns),
				 rate, sizeof(rate));
		strcat(rate, "/s");
	} else {
		snprintf(rate, sizeof(rate), "-- B/s");
	}
	if (done)
		snprintf(left, sizeof(left), "%s", p->state);
	else if (left_ns == UINT64_MAX)
		snprintf(left, sizeof(left), "left --");
	else {
		char d[24];
		cli_format_duration(left_ns, d, sizeof(d));
		snprintf(left, sizeof(left), "left %s", d);
	}
	size_t used;
	bool migrate = strcmp(p->operation, "migrate") == 0;
	if (migrate || p->max_rounds) { /* a migration or a live save: rounds */
		char round[80];
		if (done)
			snprintf(round, sizeof(round), "%u round%s", p->round,
				 p->round == 1 ? "" : "s");
		else if (strcmp(p->phase, "precopy") == 0 && p->round)
			snprintf(round, sizeof(round), "round %u/%u, %s dirty", p->round,
				 p->max_rounds, dirty);
		else if (strcmp(p->phase, "precopy") == 0)
			snprintf(round, sizeof(round), "round 0/%u", p->max_rounds);
		else if (strcmp(p->phase, "connect") == 0)
			snprintf(round, sizeof(round), "to the destination");
		else
			snprintf(round, sizeof(round), "after %u round%s", p->round,
				 p->round == 1 ? "" : "s");
		used = (size_t)snprintf(buf, len, "%s: %s%s%s, %s of %s (%u%%), %s %s",
					p->operation, done ? "" : p->phase, done ? "" : " ", round,
					scanned, total, percent, written,
					migrate ? "sent" : "written");
	} else {
		/* Once done, the phase it ended in says nothing. */
		used = (size_t)snprintf(buf, len, "%s: %s%s%s of %s (%u%%), %s written",
					p->operation, done ? "" : p->phase, done ? "" : " ",
					scanned, total, percent, written);
	}
	if (used < len)
		snprintf(buf + used, len - used, ", %s, %s, %s", rate, elapsed, left);
}

int cli_parse_u32_range(const char *option, const char *text, uint32_t min, uint32_t max,
			uint32_t *value, char *error, size_t error_len)
{
	char *end = NULL;
	errno = 0;
	unsigned long long number = strtoull(text, &end, 10);
	if (!isdigit((unsigned char)text[0]) || *end || errno || number < min || number > max) {
		snprintf(error, error_len, "%s '%s' is not valid; use a whole number from %u to %u",
			 option, text, min, max);
		return -EINVAL;
	}
	*value = (uint32_t)number;
	return 0;
}

/* ---- The poller ---------------------------------------------------------------- */

struct progress_poller {
	const char *name;
	uint64_t first_sequence; /* the last operation before ours */
	bool tty;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop;
	bool drawn; /* a line is on the terminal */
	struct state_progress last;
	uint64_t last_ns;
	bool have_last;
};

static int poll_once(int fd, struct state_progress *p)
{
	struct control_reply reply;
	int err = control_client_request(fd, "progress", &reply, PROGRESS_REPLY_TIMEOUT_MS);
	if (err)
		return err;
	err = reply.errnum ? -reply.errnum : cli_progress_parse(reply.payload, p);
	control_reply_free(&reply);
	return err;
}

static void draw(struct progress_poller *poller, const struct state_progress *p, uint64_t now_ns)
{
	uint64_t rate, left;
	cli_progress_rate(poller->have_last ? &poller->last : NULL, p, now_ns - poller->last_ns,
			  &rate, &left);
	char line[256];
	cli_progress_format(p, rate, left, line, sizeof(line));
	if (poller->tty)
		fprintf(stderr, "\r%s\033[K", line);
	else
		fprintf(stderr, "%s\n", line);
	fflush(stderr);
	poller->drawn = poller->tty;
	poller->last = *p;
	poller->last_ns = now_ns;
	poller->have_last = true;
}

static void *poller_main(void *opaque)
{
	struct progress_poller *poller = opaque;
	int fd = control_connect(poller->name);
	long interval_ms = PROGRESS_FIRST_MS; /* then PROGRESS_INTERVAL_MS */
	pthread_mutex_lock(&poller->lock);
	while (!poller->stop && fd >= 0) {
		struct timespec deadline;
		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_nsec += interval_ms * 1000000L;
		interval_ms = PROGRESS_INTERVAL_MS;
		if (deadline.tv_nsec >= 1000000000L) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&poller->wake, &poller->lock, &deadline);
		if (poller->stop)
			break;
		pthread_mutex_unlock(&poller->lock);
		struct state_progress p;
		int err = poll_once(fd, &p);
		pthread_mutex_lock(&poller->lock);
		if (err)
			break; /* the VM went away or is not ours to watch: stay quiet */
		if (p.sequence > poller->first_sequence && strcmp(p.state, "running") == 0 &&
		    !poller->stop)
			draw(poller, &p, monotonic_ns());
	}
	pthread_mutex_unlock(&poller->lock);
	if (fd >= 0)
		close(fd);
	return NULL;
}

int cli_call_with_progress(const char *name, const char *request, struct control_reply *reply,
			   enum cli_progress_mode mode)
{
	bool tty = isatty(STDERR_FILENO);
	if (mode == CLI_PROGRESS_NEVER || (mode == CLI_PROGRESS_AUTO && !tty))
		return control_call(name, request, reply, -1);
	struct progress_poller poller = { .name = name, .tty = tty };
	pthread_mutex_init(&poller.lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&poller.wake, &attr);
	pthread_condattr_destroy(&attr);
	/* Which operation is ours: the first one after what ran before. */
	struct state_progress before;
	int fd = control_connect(name);
	bool watch = fd >= 0 && poll_once(fd, &before) == 0;
	if (fd >= 0)
		close(fd);
	pthread_t thread;
	if (watch) {
		poller.first_sequence = before.sequence;
		watch = pthread_create(&thread, NULL, poller_main, &poller) == 0;
	}
	int err = control_call(name, request, reply, -1);
	if (!watch)
		goto out;
	pthread_mutex_lock(&poller.lock);
	poller.stop = true;
	pthread_cond_signal(&poller.wake);
	pthread_mutex_unlock(&poller.lock);
	pthread_join(thread, NULL);
	/* The final figures (a migrated VM has no socket any more: then the
	 * last sample stays). */
	struct state_progress last;
	fd = control_connect(name);
	if (fd >= 0 && poll_once(fd, &last) == 0 && last.sequence > poller.first_sequence) {
		poller.have_last = false; /* the average over the whole run */
		draw(&poller, &last, monotonic_ns());
	} else if (poller.have_last) {
		last = poller.last;
		snprintf(last.state, sizeof(last.state), "%s",
			 err || reply->errnum ? "failed" : "done");
		if (!err && !reply->errnum)
			last.scanned_bytes = last.total_bytes;
		poller.have_last = false;
		draw(&poller, &last, monotonic_ns());
	}
	if (fd >= 0)
		close(fd);
	if (poller.drawn)
		fputc('\n', stderr);
out:
	pthread_cond_destroy(&poller.wake);
	pthread_mutex_destroy(&poller.lock);
	return err;
}
