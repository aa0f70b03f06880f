/* A small streaming JSON writer shared by `kapsel bench`, the CLI's --json output and the control socket's JSON replies. */
#ifndef KAPSEL_JSON_WRITER_H
#define KAPSEL_JSON_WRITER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_WRITER_MAX_DEPTH 40

/*
 * Writes one JSON value to out, member by member.  Pretty output puts every
 * member on its own line, indented two spaces per level; compact output is
 * one line with no spaces (the control socket's replies, where one line is
 * one message).  Inside an object every call needs a key; inside an array
 * (and for the top-level value) key must be NULL.
 *
 * Strings: '"', '\\' and control characters (below 0x20, and 0x7f) are
 * escaped; well-formed UTF-8 passes unchanged; every byte that is not part
 * of well-formed UTF-8 (a VM name or a path is a byte string) becomes
 * U+FFFD, so the output is always valid JSON.  Misuse (nesting deeper than
 * JSON_WRITER_MAX_DEPTH, closing more than was opened) sets error and
 * writes nothing more.
 */
struct json_writer {
	FILE *out;
	bool pretty;
	bool error;
	int depth;
	bool need_comma[JSON_WRITER_MAX_DEPTH + 1];
};

/* Start a writer on out (not owned). */
void json_writer_init(struct json_writer *w, FILE *out, bool pretty);

/* Write s as a JSON string (quotes included) with the escaping above. */
void json_write_escaped(FILE *out, const char *s);

/* Open an object ('{') or an array ('['), as member key of the enclosing
 * object (key NULL in an array or at the top). */
void json_writer_open(struct json_writer *w, const char *key, char bracket);
/* Close what the last open opened; bracket is '}' or ']'. */
void json_writer_close(struct json_writer *w, char bracket);

/* Members.  A NULL string and a non-finite double are written as null;
 * json_writer_bool writes null for a negative value ("unknown"). */
void json_writer_string(struct json_writer *w, const char *key, const char *value);
void json_writer_u64(struct json_writer *w, const char *key, uint64_t value);
void json_writer_i64(struct json_writer *w, const char *key, int64_t value);
void json_writer_double(struct json_writer *w, const char *key, double value);
void json_writer_bool(struct json_writer *w, const char *key, int value);
void json_writer_null(struct json_writer *w, const char *key);
/* Write the key (and separator) only; the caller writes the value itself
 * as already-encoded JSON text to w->out. */
void json_writer_key(struct json_writer *w, const char *key);

#endif
