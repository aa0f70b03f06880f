/* `kapsel bench`: native vs paravirtualized vs emulated I/O side by side (the work is in bench/). */
#include <stdio.h>

#include "bench/bench.h"
#include "cli/cli.h"

void cli_bench_usage(FILE *out)
{
	bench_usage(out);
}

int cli_bench(int argc, char **argv)
{
	struct bench_options options;
	char error[512];

	bench_options_init(&options);
	int err = bench_options_parse(&options, argc, argv, stdout, error, sizeof(error));
	if (err) {
		bench_options_free(&options);
		if (err > 0)
			return 0; /* --help */
		fprintf(stderr, "kapsel bench: %s\n", error);
		return 2;
	}
	int status = bench_main(&options);
	bench_options_free(&options);
	return status;
}
