/* Prefixing each line of a byte stream with a name: how 'kapsel clone --count N' tells its clones' consoles apart on one stdout. */
#ifndef KAPSEL_CLI_PREFIX_H
#define KAPSEL_CLI_PREFIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define LINE_PREFIXER_MAX_LINE 4096u /* a longer line is cut into pieces this long */

struct line_prefixer {
	char prefix[80]; /* written before every line, e.g. "web-1| " */
	char line[LINE_PREFIXER_MAX_LINE];
	size_t used; /* bytes of an unfinished line held back */
};

/* Start with the prefix "NAME| " (name is cut to fit). */
void line_prefixer_init(struct line_prefixer *lp, const char *name);

/*
 * Write every complete line in data (and what came before it) to out,
 * each whole line with the prefix in one fwrite, so that lines of several
 * streams never mix within a line.  An unfinished line is held back until
 * its '\n' comes, or written as a line of its own once it is
 * LINE_PREFIXER_MAX_LINE bytes long.  Pure (writes only to out): unit-tested.
 */
void line_prefixer_feed(struct line_prefixer *lp, const void *data, size_t length, FILE *out);

/* At the end of the stream: write an unfinished line, with a '\n'. */
void line_prefixer_flush(struct line_prefixer *lp, FILE *out);

#endif
