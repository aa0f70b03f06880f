/* Example guest: prints a greeting with what it learned from the platform, exits 0 (or, with "flood", prints forever). */
#include "kapsel_guest/console.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

/* "hello flood": print numbered lines forever, as fast as the console takes them. */
static void flood(void)
{
	for (unsigned long long line = 0;; line++)
		kg_printf("flood line %llu: the quick brown fox jumps over the lazy dog\n", line);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "flood") == 0)
			flood();
	const struct kapsel_start_info *si = kg_platform_start_info();
	kg_printf("Hello from a Kapsel guest!\n");
	if (si)
		kg_printf("ABI %u.%u, %llu MiB RAM, %u devices, console %s, name '%s'\n",
			  si->abi_major, si->abi_minor, (unsigned long long)(si->ram_bytes >> 20),
			  si->device_count, kg_console_mode() == KG_CONSOLE_PV ? "pv" : "uart",
			  si->name);
	else
		kg_printf("not running on Kapsel\n");
	return 0;
}
