/* `kapsel bench` cross-check: runs fio with a row's parameters on the same file and reads its JSON output. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define JSON_PATH_MAX 256u
#define JSON_DEPTH_MAX 32u
#define FIO_OUTPUT_MAX (8u << 20)

/* ---- A small JSON walker --------------------------------------------------- */

struct json_walker {
	const char *p;
	char path[JSON_PATH_MAX];
	size_t path_len;
	unsigned depth;
	void (*fn)(const char *path, double value, void *opaque);
	void *opaque;
};

static void skip_space(struct json_walker *w)
{
	while (*w->p == ' ' || *w->p == '\n' || *w->p == '\r' || *w->p == '\t')
		w->p++;
}

/* Parse a string; copy up to out_len - 1 bytes of it into out (escapes
 * are kept as the escaped character, \uXXXX as '?'). */
static int parse_string(struct json_walker *w, char *out, size_t out_len)
{
	size_t n = 0;
	if (*w->p != '"')
		return -EINVAL;
	w->p++;
	while (*w->p && *w->p != '"') {
		char c = *w->p++;
		if (c == '\\') {
			c = *w->p++;
			if (!c)
				return -EINVAL;
			if (c == 'u') {
				for (int i = 0; i < 4; i++)
					if (!*w->p++)
						return -EINVAL;
				c = '?';
			}
		}
		if (out && n + 1 < out_len)
			out[n++] = c;
	}
	if (*w->p != '"')
		return -EINVAL;
	w->p++;
	if (out)
		out[n] = '\0';
	return 0;
}

static int parse_value(struct json_walker *w);

static int push_path(struct json_walker *w, const char *name, size_t *saved)
{
	*saved = w->path_len;
	int n = snprintf(w->path + w->path_len, sizeof(w->path) - w->path_len, "%s%s",
			 w->path_len ? "." : "", name);
	if (n < 0 || (size_t)n >= sizeof(w->path) - w->path_len)
		return -EINVAL;
	w->path_len += (size_t)n;
	return 0;
}

static int parse_container(struct json_walker *w, bool object)
{
	char close = object ? '}' : ']';
	if (++w->depth > JSON_DEPTH_MAX)
		return -EINVAL;
	w->p++;
	skip_space(w);
	if (*w->p == close) {
		w->p++;
		w->depth--;
		return 0;
	}
	for (unsigned index = 0;; index++) {
		char name[128];
		skip_space(w);
		if (object) {
			if (parse_string(w, name, sizeof(name)) < 0)
				return -EINVAL;
			skip_space(w);
			if (*w->p++ != ':')
				return -EINVAL;
		} else {
			snprintf(name, sizeof(name), "%u", index);
		}
		size_t saved;
		if (push_path(w, name, &saved) < 0)
			return -EINVAL;
		int err = parse_value(w);
		w->path_len = saved;
		w->path[saved] = '\0';
		if (err)
			return err;
		skip_space(w);
		if (*w->p == ',') {
			w->p++;
			continue;
		}
		if (*w->p == close) {
			w->p++;
			w->depth--;
			return 0;
		}
		return -EINVAL;
	}
}

static int parse_value(struct json_walker *w)
{
	skip_space(w);
	switch (*w->p) {
	case '{':
		return parse_container(w, true);
	case '[':
		return parse_container(w, false);
	case '"':
		return parse_string(w, NULL, 0);
	case 't':
		if (strncmp(w->p, "true", 4))
			return -EINVAL;
		w->p += 4;
		return 0;
	case 'f':
		if (strncmp(w->p, "false", 5))
			return -EINVAL;
		w->p += 5;
		return 0;
	case 'n':
		if (strncmp(w->p, "null", 4))
			return -EINVAL;
		w->p += 4;
		return 0;
	default: {
		char *end;
		double value = strtod(w->p, &end);
		if (end == w->p)
			return -EINVAL;
		w->p = end;
		if (w->fn)
			w->fn(w->path, value, w->opaque);
		return 0;
	}
	}
}

int bench_json_walk(const char *text, void (*fn)(const char *path, double value, void *opaque),
		    void *opaque)
{
	struct json_walker w = { .p = text, .fn = fn, .opaque = opaque };
	int err = parse_value(&w);
	if (err)
		return err;
	skip_space(&w);
	return *w.p ? -EINVAL : 0;
}

/* ---- fio ------------------------------------------------------------------- */

bool bench_fio_available(void)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/bin:/bin";
	char *copy = strdup(path), *save = NULL;
	bool found = false;
	for (char *dir = copy ? strtok_r(copy, ":", &save) : NULL; dir && !found;
	     dir = strtok_r(NULL, ":", &save)) {
		char file[4096];
		snprintf(file, sizeof(file), "%s/fio", dir);
		found = access(file, X_OK) == 0;
	}
	free(copy);
	return found;
}

struct fio_numbers {
	double bw_bytes[2], iops[2], lat_p50_ns[2], lat_p99_ns[2];
	bool seen[2];
};

static void collect(const char *path, double value, void *opaque)
{
	struct fio_numbers *n = opaque;
	static const char *const dirs[2] = { "jobs.0.read.", "jobs.0.write." };
	for (int d = 0; d < 2; d++) {
		size_t len = strlen(dirs[d]);
		if (strncmp(path, dirs[d], len) != 0)
			continue;
		const char *key = path + len;
		if (strcmp(key, "bw_bytes") == 0) {
			n->bw_bytes[d] = value;
			n->seen[d] = true;
		} else if (strcmp(key, "iops") == 0) {
			n->iops[d] = value;
		} else if (strcmp(key, "lat_ns.percentile.50.000000") == 0) {
			n->lat_p50_ns[d] = value;
		} else if (strcmp(key, "lat_ns.percentile.99.000000") == 0) {
			n->lat_p99_ns[d] = value;
		}
	}
}

int bench_fio_run(const struct bench_job *job, struct bench_fio_result *result)
{
	const struct bench_workload *w = job->workload;
	char filename[1100], size[48], rw[32], bs[32], iodepth[32], direct[16], runtime[48];
	char ramp[48], mix[32], count[48], seed[48];

	memset(result, 0, sizeof(*result));
	result->ran = true;
	/* fio treats ':' in a file name as a separator: escape it. */
	size_t n = 0;
	n += (size_t)snprintf(filename, sizeof(filename), "--filename=");
	for (const char *p = job->disk_path; *p && n + 3 < sizeof(filename); p++) {
		if (*p == ':')
			filename[n++] = '\\';
		filename[n++] = *p;
	}
	filename[n] = '\0';
	snprintf(size, sizeof(size), "--size=%llu", (unsigned long long)job->region_bytes);
	snprintf(rw, sizeof(rw), "--rw=%s", w->rw);
	snprintf(bs, sizeof(bs), "--bs=%u", w->block_bytes);
	snprintf(iodepth, sizeof(iodepth), "--iodepth=%u", job->iodepth);
	snprintf(direct, sizeof(direct), "--direct=%d", job->cache == BENCH_CACHE_NONE);
	snprintf(mix, sizeof(mix), "--rwmixread=%u", w->read_percent);
	snprintf(seed, sizeof(seed), "--randseed=%llu", (unsigned long long)job->seed);
	char *argv[32];
	unsigned argc = 0;
	argv[argc++] = "fio";
	argv[argc++] = "--name=kapsel-bench";
	argv[argc++] = filename;
	argv[argc++] = size;
	argv[argc++] = rw;
	argv[argc++] = bs;
	argv[argc++] = iodepth;
	argv[argc++] = "--ioengine=io_uring";
	argv[argc++] = direct;
	argv[argc++] = mix;
	argv[argc++] = seed;
	argv[argc++] = "--lat_percentiles=1";
	argv[argc++] = "--percentile_list=50:99";
	argv[argc++] = "--output-format=json";
	argv[argc++] = "--allow_file_create=0";
	if (job->ops) {
		snprintf(count, sizeof(count), "--number_ios=%llu", (unsigned long long)job->ops);
		argv[argc++] = count;
		argv[argc++] = "--time_based=0";
		argv[argc++] = "--loops=1000";
	} else {
		/* fio's runtime has a granularity of milliseconds. */
		snprintf(runtime, sizeof(runtime), "--runtime=%llums",
			 (unsigned long long)(job->runtime_ns / 1000000 ? job->runtime_ns / 1000000
									: 1));
		snprintf(ramp, sizeof(ramp), "--ramp_time=%llums",
			 (unsigned long long)(job->warmup_ns / 1000000));
		argv[argc++] = runtime;
		argv[argc++] = "--time_based";
		if (job->warmup_ns >= 1000000)
			argv[argc++] = ramp;
	}
	argv[argc] = NULL;

	int out[2];
	if (pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int err = -errno;
		close(out[0]);
		close(out[1]);
		return err;
	}
	if (pid == 0) {
		dup2(out[1], 1);
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 2);
		}
		execvp("fio", argv);
		_exit(127);
	}
	close(out[1]);
	size_t cap = 65536, len = 0;
	char *text = malloc(cap);
	for (;;) {
		if (!text)
			break;
		if (len + 1 >= cap && cap < FIO_OUTPUT_MAX) {
			char *bigger = realloc(text, cap * 2);
			if (!bigger) {
				free(text);
				text = NULL;
				break;
			}
			text = bigger;
			cap *= 2;
		}
		if (len + 1 >= cap)
			break;
		ssize_t got = read(out[0], text + len, cap - len - 1);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		len += (size_t)got;
	}
	close(out[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	if (!text)
		return -ENOMEM;
	text[len] = '\0';
	int err = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		err = -EIO;
		snprintf(result->error, sizeof(result->error), "fio exited with status %d",
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		goto out;
	}
	/* fio may print notes before the JSON document. */
	const char *start = strchr(text, '{');
	struct fio_numbers numbers = { 0 };
	if (!start || bench_json_walk(start, collect, &numbers) < 0 ||
	    !(numbers.seen[0] || numbers.seen[1])) {
		err = -EINVAL;
		snprintf(result->error, sizeof(result->error), "could not read fio's JSON output");
		goto out;
	}
	result->ok = true;
	result->mb_per_s = (numbers.bw_bytes[0] + numbers.bw_bytes[1]) / 1e6;
	result->iops = numbers.iops[0] + numbers.iops[1];
	/* Latency of the main direction: reads unless the job only writes. */
	int d = w->read_percent > 0 ? 0 : 1;
	result->lat_p50_us = numbers.lat_p50_ns[d] / 1e3;
	result->lat_p99_us = numbers.lat_p99_ns[d] / 1e3;
out:
	free(text);
	return err;
}
