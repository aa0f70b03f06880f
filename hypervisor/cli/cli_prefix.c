/* Prefixing each line of a byte stream with a name: how 'kapsel clone --count N' tells its clones' consoles apart on one stdout. */
#include "cli/cli_prefix.h"

#include <string.h>

void line_prefixer_init(struct line_prefixer *lp, const char *name)
{
	snprintf(lp->prefix, sizeof(lp->prefix), "%.64s| ", name);
	lp->used = 0;
}

static void emit(struct line_prefixer *lp, FILE *out, bool add_newline)
{
	char whole[sizeof(lp->prefix) + LINE_PREFIXER_MAX_LINE + 1];
	size_t prefix_len = strlen(lp->prefix);
	memcpy(whole, lp->prefix, prefix_len);
	memcpy(whole + prefix_len, lp->line, lp->used);
	size_t total = prefix_len + lp->used;
	if (add_newline)
		whole[total++] = '\n';
	fwrite(whole, 1, total, out);
	lp->used = 0;
}

void line_prefixer_feed(struct line_prefixer *lp, const void *data, size_t length, FILE *out)
{
	const char *bytes = data;
	for (size_t i = 0; i < length; i++) {
		lp->line[lp->used++] = bytes[i];
		if (bytes[i] == '\n')
			emit(lp, out, false);
		else if (lp->used == sizeof(lp->line))
			emit(lp, out, true);
	}
	fflush(out);
}

void line_prefixer_flush(struct line_prefixer *lp, FILE *out)
{
	if (lp->used)
		emit(lp, out, true);
	fflush(out);
}
