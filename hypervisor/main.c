/* The `kapsel` command: dispatches to its verbs (run, bench, ...). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "kapsel/abi.h"

#define KAPSEL_VERSION "0.1.0"

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: kapsel COMMAND [OPTIONS]\n"
		"\n"
		"Kapsel is a thin paravirtualizing hypervisor on Linux KVM.\n"
		"\n"
		"Commands:\n"
		"  run       boot a guest kernel and run it until it powers off\n"
		"  version   print Kapsel's version and hypercall ABI version\n"
		"  help      show this help, or 'kapsel help COMMAND' for a command's\n"
		"\n"
		"Run 'kapsel COMMAND --help' for the options of a command.\n");
}

struct verb {
	const char *name;
	int (*main)(int argc, char **argv);
	void (*usage)(FILE *out);
};

static const struct verb verbs[] = {
	{ "run", cli_run, cli_run_usage },
};

static const struct verb *find_verb(const char *name)
{
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (strcmp(verbs[i].name, name) == 0)
			return &verbs[i];
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *name = argv[1];
	if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "help") == 0) {
		if (argc > 2 && find_verb(argv[2])) {
			find_verb(argv[2])->usage(stdout);
			return 0;
		}
		usage(stdout);
		return 0;
	}
	if (strcmp(name, "version") == 0 || strcmp(name, "--version") == 0) {
		printf("kapsel %s (hypercall ABI %u.%u)\n", KAPSEL_VERSION, KAPSEL_ABI_MAJOR,
		       KAPSEL_ABI_MINOR);
		return 0;
	}
	const struct verb *verb = find_verb(name);
	if (!verb) {
		fprintf(stderr, "kapsel: '%s' is not a command; see 'kapsel --help'\n", name);
		return 2;
	}
	return verb->main(argc - 1, argv + 1);
}
