/* The PV entropy device's definition: the --rng option syntax. */
#include "config/config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_options.h"

#define RNG_SYNTAX "--rng or --rng=[bps=N][,bps_burst=N][,iops=N][,iops_burst=N]"

int vm_config_parse_rng(const char *text, struct vm_rng_config *rng, char *error, size_t error_len)
{
	struct vm_rng_config parsed = { .enabled = true };
	if (!text || !*text) {
		*rng = parsed;
		return 0;
	}
	char *copy = strdup(text), *cursor = copy;
	if (!copy)
		return -ENOMEM;
	int err = 0;
	char *opt, *value;
	while (!err && (opt = config_next_option(&cursor, &value))) {
		uint64_t number = 0;
		uint64_t *field = NULL;
		if (strcmp(opt, "bps") == 0)
			field = &parsed.bytes_limit.rate_per_second;
		else if (strcmp(opt, "bps_burst") == 0)
			field = &parsed.bytes_limit.burst;
		else if (strcmp(opt, "iops") == 0)
			field = &parsed.requests_limit.rate_per_second;
		else if (strcmp(opt, "iops_burst") == 0)
			field = &parsed.requests_limit.burst;
		if (field && config_parse_u64(value, &number) == 0)
			*field = number;
		else
			err = config_unknown_option(
				error, error_len, "--rng", text, opt, value,
				"syntax: " RNG_SYNTAX
				" (bytes and requests per second the guest may draw)");
	}
	free(copy);
	if (!err)
		*rng = parsed;
	return err;
}
