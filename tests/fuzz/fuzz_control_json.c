/* Fuzz target: hostile JSON request lines on the control socket (control_json.c), their replies, and the stats text-to-JSON conversion. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "control/control.h"
#include "control/control_json.h"

/*
 * The input is one request line as the server hands it to the parser: at
 * most CONTROL_REQUEST_MAX_BYTES - 1 bytes without NUL (the server refuses
 * NUL before parsing).  Properties: a parsed request's verb and arguments
 * lie in the storage buffer, are NUL-terminated there and follow the
 * documented rules; the id is at most CONTROL_JSON_ID_MAX bytes; every
 * reply is exactly one '\n'-terminated line; the stats conversion of the
 * same bytes leaves the writer balanced and without error.
 */

static void check_string(const char *s, const char *storage, size_t storage_len)
{
	FUZZ_CHECK(s >= storage && s < storage + storage_len);
	FUZZ_CHECK(memchr(s, '\0', (size_t)(storage + storage_len - s)) != NULL);
}

static void check_one_line(const char *text, size_t length)
{
	FUZZ_CHECK(length > 0 && text[length - 1] == '\n');
	FUZZ_CHECK(memchr(text, '\n', length - 1) == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size >= CONTROL_REQUEST_MAX_BYTES || memchr(data, '\0', size))
		return 0;
	char line[CONTROL_REQUEST_MAX_BYTES];
	memcpy(line, data, size);
	line[size] = '\0';
	static char storage[CONTROL_REQUEST_MAX_BYTES + 1];
	struct control_request request;
	char id[CONTROL_JSON_ID_MAX + 1], error[512];
	int err = control_json_request_parse(line, storage, sizeof(storage), &request, id,
					     sizeof(id), error, sizeof(error));
	FUZZ_CHECK(strlen(id) <= CONTROL_JSON_ID_MAX);
	char *reply = NULL;
	size_t reply_len = 0;
	FILE *out = open_memstream(&reply, &reply_len);
	FUZZ_CHECK(out != NULL);
	if (err) {
		FUZZ_CHECK(err == -EINVAL || err == -EPROTO || err == -E2BIG || err == -ENOMEM);
		FUZZ_CHECK(request.verb == NULL && request.arg_count == 0);
		control_json_reply_error(out, id, -err, error);
	} else {
		check_string(request.verb, storage, sizeof(storage));
		size_t verb_len = strlen(request.verb);
		FUZZ_CHECK(verb_len >= 1 && verb_len <= CONTROL_VERB_MAX);
		FUZZ_CHECK(request.arg_count <= CONTROL_MAX_ARGS);
		for (unsigned i = 0; i < request.arg_count; i++) {
			check_string(request.args[i].key, storage, sizeof(storage));
			check_string(request.args[i].value, storage, sizeof(storage));
			for (const unsigned char *p = (const unsigned char *)request.args[i].value;
			     *p; p++)
				FUZZ_CHECK(*p >= 0x20 && *p != 0x7f);
		}
		/* The request's own bytes as a text payload and as a JSON one. */
		control_json_reply_ok(out, id, request.verb, line, size, false);
	}
	fclose(out);
	check_one_line(reply, reply_len);
	free(reply);

	reply = NULL;
	out = open_memstream(&reply, &reply_len);
	FUZZ_CHECK(out != NULL);
	struct json_writer w;
	json_writer_init(&w, out, false);
	json_writer_open(&w, NULL, '{');
	control_json_stats_from_text(&w, line);
	json_writer_close(&w, '}');
	FUZZ_CHECK(!w.error && w.depth == 0);
	fputc('\n', out);
	fclose(out);
	check_one_line(reply, reply_len);
	free(reply);
	return 0;
}
