/* `kapsel bench` arithmetic: counter tables, the VMM's stats text, medians and spreads, CRC-32. */
#define _GNU_SOURCE
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

const struct bench_metric_info bench_metric_info[BENCH_M_COUNT] = {
	[BENCH_M_MBPS] = { "mb_per_s", "MB/s", "MB/s" },
	[BENCH_M_IOPS] = { "iops", "IOPS", "1/s" },
	[BENCH_M_LAT_P50_US] = { "lat_p50_us", "p50 us", "us" },
	[BENCH_M_LAT_P99_US] = { "lat_p99_us", "p99 us", "us" },
	[BENCH_M_LAT_P999_US] = { "lat_p99_9_us", "p99.9 us", "us" },
	[BENCH_M_LAT_MEAN_US] = { "lat_mean_us", "mean us", "us" },
	[BENCH_M_EXITS_PER_OP] = { "exits_per_op", "exits/op", "1/op" },
	[BENCH_M_NOTIFICATIONS_PER_OP] = { "notifications_per_op", "notif/op", "1/op" },
	[BENCH_M_KICKS_PER_OP] = { "kicks_per_op", "kicks/op", "1/op" },
	[BENCH_M_KICKS_SUPPRESSED_PER_OP] = { "kicks_suppressed_per_op", "kick-supp/op", "1/op" },
	[BENCH_M_EVENTS_PER_OP] = { "events_per_op", "events/op", "1/op" },
	[BENCH_M_BLOCKS_PER_OP] = { "blocks_per_op", "sleeps/op", "1/op" },
	[BENCH_M_CPU_US_PER_OP] = { "cpu_us_per_op", "cpu us/op", "us/op" },
	[BENCH_M_VCPU_CPU_US_PER_OP] = { "vcpu_cpu_us_per_op", "vcpu us/op", "us/op" },
	[BENCH_M_SUBMIT_PICKUP_US] = { "submit_to_pickup_us", "sub->pick us", "us" },
	[BENCH_M_PICKUP_COMPLETE_US] = { "pickup_to_complete_us", "pick->done us", "us" },
	[BENCH_M_COMPLETE_REAP_US] = { "complete_to_reap_us", "done->reap us", "us" },
	[BENCH_M_LAT_MAX_US] = { "lat_max_us", "max us", "us" },
	[BENCH_M_US_PER_OP] = { "us_per_op", "us/op", "us/op" },
	[BENCH_M_DELIVER_P50_US] = { "deliver_p50_us", "to handler p50", "us" },
	[BENCH_M_DELIVER_P99_US] = { "deliver_p99_us", "to handler p99", "us" },
};

void bench_run_clear(struct bench_run *run)
{
	memset(run, 0, sizeof(*run));
	for (unsigned m = 0; m < BENCH_M_COUNT; m++)
		run->metrics[m] = NAN;
}

void bench_counters_add(struct bench_counters *counters, const char *name, uint64_t value)
{
	for (unsigned i = 0; i < counters->count; i++) {
		if (strcmp(counters->items[i].name, name) == 0) {
			counters->items[i].value += value;
			return;
		}
	}
	if (counters->count == BENCH_MAX_COUNTERS)
		return;
	struct bench_counter *c = &counters->items[counters->count++];
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->value = value;
}

uint64_t bench_counters_get(const struct bench_counters *counters, const char *name)
{
	for (unsigned i = 0; i < counters->count; i++)
		if (strcmp(counters->items[i].name, name) == 0)
			return counters->items[i].value;
	return 0;
}

void bench_counters_take_off(struct bench_counters *counters, const char *name, uint64_t count)
{
	for (unsigned i = 0; i < counters->count; i++) {
		struct bench_counter *c = &counters->items[i];
		if (strcmp(c->name, name) == 0)
			c->value = c->value > count ? c->value - count : 0;
	}
}

/* "  key: 123" -> key and 123; false for anything else. */
static bool parse_counter_line(const char *line, size_t length, char *key, size_t key_len,
			       uint64_t *value)
{
	size_t i = 0;
	while (i < length && line[i] == ' ')
		i++;
	if (i == 0)
		return false;
	size_t start = i;
	while (i < length && line[i] != ':' && line[i] != ' ')
		i++;
	if (i == length || line[i] != ':' || i == start || i - start >= key_len)
		return false;
	memcpy(key, line + start, i - start);
	key[i - start] = '\0';
	i++;
	while (i < length && line[i] == ' ')
		i++;
	if (i == length || !isdigit((unsigned char)line[i]))
		return false;
	uint64_t v = 0;
	for (; i < length && isdigit((unsigned char)line[i]); i++)
		v = v * 10 + (uint64_t)(line[i] - '0');
	while (i < length && (line[i] == ' ' || line[i] == '\r'))
		i++;
	if (i != length)
		return false;
	*value = v;
	return true;
}

void bench_counters_parse_stats(struct bench_counters *counters, const char *text)
{
	char scope[BENCH_NAME_MAX] = "";
	while (*text) {
		const char *end = strchr(text, '\n');
		size_t length = end ? (size_t)(end - text) : strlen(text);
		char key[BENCH_NAME_MAX];
		uint64_t value;
		if (length > 7 && strncmp(text, "device ", 7) == 0) {
			/* "device 2 blk-pv:" */
			const char *name = memchr(text + 7, ' ', length - 7);
			size_t n = name ? length - (size_t)(name + 1 - text) : 0;
			if (name && n > 1 && name[n] == ':' && n < sizeof(scope) - 5)
				snprintf(scope, sizeof(scope), "dev.%.*s.", (int)(n - 1), name + 1);
			else
				scope[0] = '\0';
		} else if (length > 3 && strncmp(text, "vm ", 3) == 0) {
			scope[0] = '\0';
		} else if (parse_counter_line(text, length, key, sizeof(key), &value)) {
			char name[BENCH_NAME_MAX * 2];
			snprintf(name, sizeof(name), "%s%s", scope, key);
			bench_counters_add(counters, name, value);
		}
		text += length;
		if (*text == '\n')
			text++;
	}
}

void bench_counters_delta(struct bench_counters *delta, const struct bench_counters *before,
			  const struct bench_counters *after)
{
	memset(delta, 0, sizeof(*delta));
	for (unsigned i = 0; i < after->count; i++) {
		uint64_t b = bench_counters_get(before, after->items[i].name);
		uint64_t a = after->items[i].value;
		bench_counters_add(delta, after->items[i].name, a > b ? a - b : 0);
	}
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y ? 1 : 0;
}

struct bench_stat bench_stat_of(const double *values, unsigned count)
{
	struct bench_stat stat = { NAN, NAN, NAN, 0 };
	double sorted[BENCH_MAX_REPEAT * 4];
	unsigned n = 0;
	for (unsigned i = 0; i < count && n < sizeof(sorted) / sizeof(sorted[0]); i++)
		if (isfinite(values[i]))
			sorted[n++] = values[i];
	if (!n)
		return stat;
	qsort(sorted, n, sizeof(sorted[0]), compare_doubles);
	stat.n = n;
	stat.min = sorted[0];
	stat.max = sorted[n - 1];
	stat.median = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
	return stat;
}

double bench_stat_spread(const struct bench_stat *stat)
{
	if (stat->n == 0 || !(stat->median != 0))
		return NAN;
	return (stat->max - stat->min) / fabs(stat->median);
}

uint32_t bench_crc32(uint32_t crc, const void *data, size_t length)
{
	static uint32_t table[256];
	static int ready;
	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;
			for (int k = 0; k < 8; k++)
				c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
			table[i] = c;
		}
		__atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
	}
	const uint8_t *p = data;
	crc = ~crc;
	for (size_t i = 0; i < length; i++)
		crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}
