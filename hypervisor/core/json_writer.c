/* A small streaming JSON writer: escaping (control characters, quotes, backslash, bytes that are not UTF-8), nesting, pretty or one-line output. */
#include "core/json_writer.h"

#include <inttypes.h>
#include <math.h>

void json_writer_init(struct json_writer *w, FILE *out, bool pretty)
{
	*w = (struct json_writer){ .out = out, .pretty = pretty };
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0 when p does not
 * start one.  p is NUL-terminated, so a truncated sequence stops at the
 * NUL (which is no continuation byte). */
static int utf8_sequence_length(const unsigned char *p)
{
	unsigned char c = p[0];
	if (c < 0x80)
		return 1;
	int length;
	unsigned char low = 0x80, high = 0xbf; /* allowed range of the second byte */
	if (c >= 0xc2 && c <= 0xdf) {
		length = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		length = 3;
		if (c == 0xe0)
			low = 0xa0; /* overlong */
		else if (c == 0xed)
			high = 0x9f; /* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		length = 4;
		if (c == 0xf0)
			low = 0x90; /* overlong */
		else if (c == 0xf4)
			high = 0x8f; /* above U+10FFFF */
	} else {
		return 0;
	}
	if (p[1] < low || p[1] > high)
		return 0;
	for (int i = 2; i < length; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return length;
}

void json_write_escaped(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p;) {
		switch (*p) {
		case '"':
			fputs("\\\"", out);
			break;
		case '\\':
			fputs("\\\\", out);
			break;
		case '\n':
			fputs("\\n", out);
			break;
		case '\r':
			fputs("\\r", out);
			break;
		case '\t':
			fputs("\\t", out);
			break;
		default:
			if (*p < 0x20 || *p == 0x7f) {
				fprintf(out, "\\u%04x", *p);
			} else if (*p >= 0x80) {
				int length = utf8_sequence_length(p);
				if (length == 0) {
					fputs("\\ufffd", out);
					p++;
				} else {
					fwrite(p, 1, (size_t)length, out);
					p += length;
				}
				continue;
			} else {
				fputc(*p, out);
			}
		}
		p++;
	}
	fputc('"', out);
}

void json_writer_key(struct json_writer *w, const char *key)
{
	if (w->error)
		return;
	if (w->need_comma[w->depth])
		fputc(',', w->out);
	w->need_comma[w->depth] = true;
	if (w->pretty && w->depth > 0) {
		fputc('\n', w->out);
		for (int i = 0; i < w->depth; i++)
			fputs("  ", w->out);
	}
	if (key) {
		json_write_escaped(w->out, key);
		fputs(w->pretty ? ": " : ":", w->out);
	}
}

void json_writer_open(struct json_writer *w, const char *key, char bracket)
{
	if (w->depth >= JSON_WRITER_MAX_DEPTH)
		w->error = true;
	json_writer_key(w, key);
	if (w->error)
		return;
	fputc(bracket, w->out);
	w->depth++;
	w->need_comma[w->depth] = false;
}

void json_writer_close(struct json_writer *w, char bracket)
{
	if (w->depth <= 0)
		w->error = true;
	if (w->error)
		return;
	bool had_members = w->need_comma[w->depth];
	w->depth--;
	if (w->pretty && had_members) {
		fputc('\n', w->out);
		for (int i = 0; i < w->depth; i++)
			fputs("  ", w->out);
	}
	fputc(bracket, w->out);
}

void json_writer_string(struct json_writer *w, const char *key, const char *value)
{
	json_writer_key(w, key);
	if (w->error)
		return;
	if (value)
		json_write_escaped(w->out, value);
	else
		fputs("null", w->out);
}

void json_writer_u64(struct json_writer *w, const char *key, uint64_t value)
{
	json_writer_key(w, key);
	if (!w->error)
		fprintf(w->out, "%" PRIu64, value);
}

void json_writer_i64(struct json_writer *w, const char *key, int64_t value)
{
	json_writer_key(w, key);
	if (!w->error)
		fprintf(w->out, "%" PRId64, value);
}

void json_writer_double(struct json_writer *w, const char *key, double value)
{
	json_writer_key(w, key);
	if (w->error)
		return;
	if (isfinite(value))
		fprintf(w->out, "%.6g", value);
	else
		fputs("null", w->out);
}

void json_writer_bool(struct json_writer *w, const char *key, int value)
{
	json_writer_key(w, key);
	if (!w->error)
		fputs(value < 0 ? "null" : value ? "true" : "false", w->out);
}

void json_writer_null(struct json_writer *w, const char *key)
{
	json_writer_key(w, key);
	if (!w->error)
		fputs("null", w->out);
}
