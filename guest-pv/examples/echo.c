/* Example guest: echoes console input back, line by line, until it reads "quit". */
#include "kapsel_guest/console.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

#define LINE_BYTES 256u
#define POLL_SLEEP_NS 1000000ull     /* 1 ms between polls of the console */
#define IDLE_LIMIT_NS 20000000000ull /* give up after 20 s without input */

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	char line[LINE_BYTES];
	size_t used = 0;
	uint64_t last_input_ns = kg_time_now_ns();

	kg_printf("echo ready (console %s)\n", kg_console_mode() == KG_CONSOLE_PV	? "pv"
					       : kg_console_mode() == KG_CONSOLE_VIRTIO ? "virtio"
											: "uart");
	for (;;) {
		char c;
		if (kg_console_read(&c, 1) == 0) {
			if (kg_time_now_ns() - last_input_ns > IDLE_LIMIT_NS) {
				kg_printf("echo: no input, giving up\n");
				return 3;
			}
			kg_time_sleep_ns(POLL_SLEEP_NS);
			continue;
		}
		last_input_ns = kg_time_now_ns();
		if (c == '\r')
			continue;
		if (c != '\n' && used < LINE_BYTES - 1) {
			line[used++] = c;
			continue;
		}
		line[used] = '\0';
		if (strcmp(line, "quit") == 0) {
			kg_printf("echo: bye\n");
			return 0;
		}
		kg_printf("echo: %s\n", line);
		used = 0;
	}
}
