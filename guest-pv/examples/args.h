/* The command line of the block example guests: MODE and key=value arguments (one translation unit each). */
#ifndef KAPSEL_EXAMPLES_ARGS_H
#define KAPSEL_EXAMPLES_ARGS_H

#include <stdbool.h>
#include <stdint.h>

#include "kapsel_guest/libc.h"
#include "kapsel_guest/net.h"
#include "kapsel_guest/runtime.h"

static int args_count;
static char **args_values;

/* Keep the command line for args_text and args_number, and return the
 * mode: the first argument without '=', or fallback. */
static inline const char *args_init(int argc, char **argv, const char *fallback)
{
	args_count = argc;
	args_values = argv;
	for (int i = 1; i < argc; i++) {
		bool is_option = false;
		for (const char *c = argv[i]; *c; c++)
			is_option |= *c == '=';
		if (!is_option)
			return argv[i];
	}
	return fallback;
}

/* The value of the first "key=value" argument, or NULL. */
static inline const char *args_text(const char *key)
{
	size_t len = strlen(key);
	for (int i = 1; i < args_count; i++)
		if (strncmp(args_values[i], key, len) == 0 && args_values[i][len] == '=')
			return args_values[i] + len + 1;
	return 0;
}

/* The number of "key=N", fallback without one; panics on a non-number. */
static inline uint64_t args_number(const char *key, uint64_t fallback)
{
	const char *text = args_text(key);
	uint64_t value;
	if (!text)
		return fallback;
	if (kg_parse_u64(text, &value) < 0)
		kg_panic("option %s=%s is not a number", key, text);
	return value;
}

/* The network path "path=auto|pv|ne2000|virtio" asks for (auto without
 * one); panics naming program on another word. */
static inline enum kg_net_path args_net_path(const char *program)
{
	const char *text = args_text("path");
	enum kg_net_path path = KG_NET_AUTO;
	if (text && kg_net_path_parse(text, &path) < 0)
		kg_panic("%s: path='%s' is unknown; use auto, pv, ne2000 or virtio", program, text);
	return path;
}

#endif
