/* An out-of-tree guest, built only from an installed SDK and pkg-config (tests/integration/sdk.sh). */
#include <kapsel/abi.h>
#include <kapsel_guest/console.h>
#include <kapsel_guest/platform.h>
#include <kapsel_guest/runtime.h>

/* Prints what it learned from the platform and exits with the code given
 * as its first argument, so the test sees both output and exit status
 * cross the installed runtime. */
int main(int argc, char **argv)
{
	const struct kapsel_start_info *si = kg_platform_start_info();
	if (!si) {
		kg_printf("sdk-hello: not running on Kapsel\n");
		return 1;
	}
	kg_printf("sdk-hello: ABI %u.%u (built against %u.%u), %llu MiB, console %s\n",
		  si->abi_major, si->abi_minor, KAPSEL_ABI_MAJOR, KAPSEL_ABI_MINOR,
		  (unsigned long long)(si->ram_bytes >> 20),
		  kg_console_mode() == KG_CONSOLE_PV ? "pv" : "uart");
	uint64_t code = 0;
	if (argc > 1 && kg_parse_u64(argv[1], &code) != 0)
		kg_panic("sdk-hello: '%s' is not an exit code", argv[1]);
	return (int)code;
}
