/* The CLI's --json plumbing: JSON requests to a VM's control socket (docs/control.md) and printing JSON documents. */
#define _GNU_SOURCE
#include "cli/cli_json.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/clock.h"
#include "control/control.h"
#include "control/control_json.h"

#define REPLY_TIMEOUT_MS 30000
#define REPLY_MAX_BYTES (16u << 20) /* a reply line longer than this is refused */

/* Read one '\n'-terminated line into a malloc'd NUL-terminated string. */
static int read_line(int fd, char **line_out)
{
	size_t len = 0, cap = 4096;
	char *line = malloc(cap);
	if (!line)
		return -ENOMEM;
	uint64_t deadline = monotonic_ns() / 1000000u + REPLY_TIMEOUT_MS;
	for (;;) {
		uint64_t now = monotonic_ns() / 1000000u;
		if (now >= deadline) {
			free(line);
			return -ETIMEDOUT;
		}
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int rc = poll(&p, 1, (int)(deadline - now));
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			continue;
		if (len + 1 >= cap) {
			if (cap >= REPLY_MAX_BYTES) {
				free(line);
				return -EPROTO;
			}
			char *bigger = realloc(line, cap * 2);
			if (!bigger) {
				free(line);
				return -ENOMEM;
			}
			line = bigger;
			cap *= 2;
		}
		/* One request per connection: reading past the line is harmless. */
		ssize_t n = read(fd, line + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(line);
			return -ECONNRESET;
		}
		char *newline = memchr(line + len, '\n', (size_t)n);
		len += (size_t)n;
		if (newline) {
			*newline = '\0';
			*line_out = line;
			return 0;
		}
	}
}

int cli_json_exchange(const char *name, json_t *request, json_t **reply_out)
{
	*reply_out = NULL;
	char *text = json_dumps(request, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!text)
		return -ENOMEM;
	if (strlen(text) >= CONTROL_REQUEST_MAX_BYTES) {
		free(text);
		return -E2BIG;
	}
	int fd = control_connect(name);
	if (fd < 0) {
		free(text);
		return fd;
	}
	char *line = NULL;
	int err = cli_write_all(fd, text, strlen(text));
	if (!err)
		err = cli_write_all(fd, "\n", 1);
	free(text);
	if (!err)
		err = read_line(fd, &line);
	close(fd);
	if (err)
		return err;
	json_error_t parse_error;
	json_t *reply = json_loads(line, 0, &parse_error);
	free(line);
	if (!json_is_object(reply)) {
		json_decref(reply);
		return -EPROTO;
	}
	*reply_out = reply;
	return 0;
}

int cli_json_request(const char *name, const char *verb, json_t **result, char *message,
		     size_t message_len)
{
	*result = NULL;
	message[0] = '\0';
	json_t *request = json_pack("{s:i, s:s}", "version", CONTROL_JSON_VERSION, "verb", verb);
	if (!request)
		return -ENOMEM;
	json_t *reply;
	int err = cli_json_exchange(name, request, &reply);
	json_decref(request);
	if (err)
		return err;
	if (json_is_true(json_object_get(reply, "ok"))) {
		*result = json_incref(json_object_get(reply, "result"));
		json_decref(reply);
		return *result ? 0 : -EPROTO;
	}
	json_t *error = json_object_get(reply, "error");
	const char *text = json_string_value(json_object_get(error, "message"));
	json_int_t code = json_integer_value(json_object_get(error, "code"));
	snprintf(message, message_len, "%s", text ? text : "the VM refused the request");
	json_decref(reply);
	return code > 0 ? -(int)code : -EIO;
}

int cli_json_call(const char *name, const char *verb, json_t **result)
{
	char message[1024];
	int err = cli_json_request(name, verb, result, message, sizeof(message));
	if (!err)
		return 0;
	if (message[0]) {
		fprintf(stderr, "kapsel: %s: %s\n", name, message);
		return 1;
	}
	return cli_connect_error(name, err);
}

void cli_json_print(json_t *value, bool one_line)
{
	json_dumpf(value, stdout, (one_line ? JSON_COMPACT : JSON_INDENT(2)) | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
	fflush(stdout);
}
