/* Example guest: idles in the hypervisor until the operator asks it to power off (control-plane tests). */
#include "kapsel_guest/console.h"
#include "kapsel_guest/hypercall.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

/*
 * Command line: [tick_ms=N] [ignore-shutdown].  Prints "idle: ready" once,
 * then sleeps in ticks; on a poweroff request it prints "idle: poweroff
 * requested" and exits 0 (reboot requests exit 0 as well, as a reboot).
 * With ignore-shutdown it never reacts, to test the forced end.  Console
 * input is echoed a line at a time as "idle: input 'LINE'".
 */
int main(int argc, char **argv)
{
	uint64_t tick_ms = 100;
	int ignore = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "ignore-shutdown") == 0)
			ignore = 1;
	}
	char tick[24];
	if (kg_cmdline_get("tick_ms", tick, sizeof(tick)) >= 0)
		kg_parse_u64(tick, &tick_ms);
	kg_assert(kg_platform_is_kapsel());
	if (!ignore)
		kg_assert(kg_platform_control_enable() == 0);
	kg_printf("idle: ready\n");
	char line[128];
	size_t used = 0;
	for (uint64_t ticks = 0;; ticks++) {
		char c;
		while (kg_console_read(&c, 1) == 1) {
			if (c == '\r' || c == '\n') {
				line[used] = '\0';
				if (used)
					kg_printf("idle: input '%s'\n", line);
				used = 0;
			} else if (used < sizeof(line) - 1) {
				line[used++] = c;
			}
		}
		if (!ignore) {
			uint64_t deadline_ns;
			enum kapsel_control_request request =
				kg_platform_control_request(&deadline_ns);
			if (request == KAPSEL_CONTROL_POWEROFF) {
				kg_printf("idle: poweroff requested after %llu ticks\n",
					  (unsigned long long)ticks);
				return 0;
			}
			if (request == KAPSEL_CONTROL_REBOOT) {
				kg_printf("idle: reboot requested\n");
				kg_hc_shutdown(KAPSEL_SHUTDOWN_REBOOT, 0);
			}
		}
		kg_time_sleep_ns(tick_ms * 1000000ull);
	}
}
