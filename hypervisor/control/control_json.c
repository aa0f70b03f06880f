/* The JSON form of the control protocol: request parser (jansson), reply framing and the stats text-to-JSON conversion. */
#define _GNU_SOURCE
#include "control/control_json.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "control/control_internal.h"
#include "core/error_text.h"

static bool valid_name(const char *s, size_t max, bool key)
{
	size_t n = strlen(s);
	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		      (key && c == '_')))
			return false;
	}
	return true;
}

/* Append s (and its NUL) to storage; NULL when it does not fit. */
static const char *pack(char *storage, size_t storage_len, size_t *used, const char *s)
{
	size_t n = strlen(s) + 1;
	if (n > storage_len - *used)
		return NULL;
	char *p = storage + *used;
	memcpy(p, s, n);
	*used += n;
	return p;
}

static bool has_control_character(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return true;
	return false;
}

/* The id's JSON text into id; -EINVAL when it is not an integer or a
 * short string. */
static int read_id(json_t *value, char *id, size_t id_len, char *error, size_t error_len)
{
	if (!value)
		return 0;
	if (!json_is_integer(value) && !json_is_string(value))
		return kapsel_fail(error, error_len, -EINVAL,
				   "member 'id' must be an integer or a string");
	char *text = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
	if (!text)
		return kapsel_fail(error, error_len, -ENOMEM, "out of memory");
	int err = 0;
	if (strlen(text) > CONTROL_JSON_ID_MAX || strlen(text) >= id_len)
		err = kapsel_fail(error, error_len, -EINVAL,
				  "member 'id' is longer than %u bytes of JSON",
				  CONTROL_JSON_ID_MAX);
	else
		snprintf(id, id_len, "%s", text);
	free(text);
	return err;
}

static int read_args(json_t *args, char *storage, size_t storage_len, size_t *used,
		     struct control_request *request, char *error, size_t error_len)
{
	if (!json_is_object(args))
		return kapsel_fail(error, error_len, -EINVAL,
				   "member 'args' must be an object of \"key\": value");
	if (json_object_size(args) > CONTROL_MAX_ARGS)
		return kapsel_fail(error, error_len, -EINVAL, "more than %u arguments",
				   CONTROL_MAX_ARGS);
	const char *key;
	json_t *value;
	json_object_foreach(args, key, value)
	{
		if (!valid_name(key, 64, true))
			return kapsel_fail(
				error, error_len, -EINVAL,
				"argument name '%.40s' is empty, too long or has characters other than a-z, 0-9, '-' and '_'",
				key);
		char number[32];
		const char *text;
		if (json_is_string(value)) {
			text = json_string_value(value);
			if (has_control_character(text))
				return kapsel_fail(
					error, error_len, -EINVAL,
					"argument '%s' contains a control character; only printable characters are allowed",
					key);
		} else if (json_is_integer(value) && json_integer_value(value) >= 0) {
			snprintf(number, sizeof(number), "%" JSON_INTEGER_FORMAT,
				 json_integer_value(value));
			text = number;
		} else if (json_is_boolean(value)) {
			text = json_is_true(value) ? "yes" : "no";
		} else {
			return kapsel_fail(
				error, error_len, -EINVAL,
				"argument '%s' must be a string, a non-negative integer or a boolean",
				key);
		}
		struct control_arg *arg = &request->args[request->arg_count];
		arg->key = pack(storage, storage_len, used, key);
		arg->value = arg->key ? pack(storage, storage_len, used, text) : NULL;
		if (!arg->value)
			return kapsel_fail(error, error_len, -E2BIG,
					   "the request's strings do not fit in %zu bytes",
					   storage_len);
		request->arg_count++;
	}
	return 0;
}

int control_json_request_parse(const char *line, char *storage, size_t storage_len,
			       struct control_request *request, char *id, size_t id_len,
			       char *error, size_t error_len)
{
	memset(request, 0, sizeof(*request));
	snprintf(id, id_len, "null");
	json_error_t parse_error;
	/* Duplicate members are refused, as duplicate text arguments are;
	 * jansson refuses "\u0000" inside strings and bytes that are not
	 * UTF-8 by itself. */
	json_t *root = json_loads(line, JSON_REJECT_DUPLICATES, &parse_error);
	if (!root)
		return kapsel_fail(error, error_len, -EINVAL, "malformed JSON at column %d: %s",
				   parse_error.column, parse_error.text);
	int err = 0;
	size_t used = 0;
	if (!json_is_object(root)) {
		err = kapsel_fail(error, error_len, -EINVAL,
				  "a JSON request is one object: {\"version\":%d,\"verb\":\"...\"}",
				  CONTROL_JSON_VERSION);
		goto out;
	}
	err = read_id(json_object_get(root, "id"), id, id_len, error, error_len);
	if (err)
		goto out;
	const char *key;
	json_t *value;
	json_object_foreach(root, key, value)
	{
		if (strcmp(key, "version") && strcmp(key, "verb") && strcmp(key, "args") &&
		    strcmp(key, "id")) {
			err = kapsel_fail(
				error, error_len, -EINVAL,
				"unknown member '%.40s'; a request has version, verb, args and id",
				key);
			goto out;
		}
	}
	json_t *version = json_object_get(root, "version");
	if (!version) {
		err = kapsel_fail(error, error_len, -EINVAL,
				  "member 'version' is missing; this Kapsel speaks version %d",
				  CONTROL_JSON_VERSION);
		goto out;
	}
	if (!json_is_integer(version) || json_integer_value(version) != CONTROL_JSON_VERSION) {
		err = kapsel_fail(
			error, error_len, -EPROTO,
			"protocol version %.20s is not supported; this Kapsel speaks version %d",
			json_is_integer(version) ? "given" : "(not an integer)",
			CONTROL_JSON_VERSION);
		goto out;
	}
	json_t *verb = json_object_get(root, "verb");
	if (!json_is_string(verb)) {
		err = kapsel_fail(
			error, error_len, -EINVAL,
			"member 'verb' is missing or not a string; send {\"version\":%d,\"verb\":\"help\"} for the list",
			CONTROL_JSON_VERSION);
		goto out;
	}
	if (!valid_name(json_string_value(verb), CONTROL_VERB_MAX, false)) {
		err = kapsel_fail(
			error, error_len, -EINVAL,
			"'%.40s' is not a request name (1 to %u lower-case letters, digits and '-')",
			json_string_value(verb), CONTROL_VERB_MAX);
		goto out;
	}
	request->verb = pack(storage, storage_len, &used, json_string_value(verb));
	if (!request->verb) {
		err = kapsel_fail(error, error_len, -E2BIG,
				  "the request's strings do not fit in %zu bytes", storage_len);
		goto out;
	}
	json_t *args = json_object_get(root, "args");
	if (args)
		err = read_args(args, storage, storage_len, &used, request, error, error_len);
out:
	json_decref(root);
	if (err)
		memset(request, 0, sizeof(*request));
	return err;
}

static void reply_head(struct json_writer *w, const char *id, bool ok)
{
	json_writer_open(w, NULL, '{');
	json_writer_u64(w, "version", CONTROL_JSON_VERSION);
	json_writer_key(w, "id");
	fputs(id && *id ? id : "null", w->out);
	json_writer_bool(w, "ok", ok);
}

void control_json_reply_ok(FILE *out, const char *id, const char *verb, const char *payload,
			   size_t payload_len, bool payload_is_json)
{
	struct json_writer w;
	json_writer_init(&w, out, false);
	reply_head(&w, id, true);
	json_writer_string(&w, "verb", verb);
	if (payload_is_json) {
		/* A handler's JSON value is one line: drop its trailing newline. */
		while (payload_len && (payload[payload_len - 1] == '\n'))
			payload_len--;
		json_writer_key(&w, "result");
		if (payload_len)
			fwrite(payload, 1, payload_len, out);
		else
			fputs("null", out);
	} else {
		json_writer_open(&w, "lines", '[');
		size_t start = 0;
		for (size_t i = 0; i <= payload_len; i++) {
			if (i < payload_len && payload[i] != '\n')
				continue;
			if (i > start || i < payload_len) {
				char *line = strndup(payload + start, i - start);
				json_writer_string(&w, NULL, line ? line : "");
				free(line);
			}
			start = i + 1;
		}
		json_writer_close(&w, ']');
	}
	json_writer_close(&w, '}');
	fputc('\n', out);
}

void control_json_reply_error(FILE *out, const char *id, int errnum, const char *message)
{
	struct json_writer w;
	json_writer_init(&w, out, false);
	reply_head(&w, id, false);
	json_writer_open(&w, "error", '{');
	json_writer_string(&w, "errno", control_errno_name(errnum));
	json_writer_u64(&w, "code", (uint64_t)errnum);
	json_writer_string(&w, "message", message);
	json_writer_close(&w, '}');
	json_writer_close(&w, '}');
	fputc('\n', out);
}

/* value as a number when it is all decimal digits (and fits), else a string. */
static void stats_value(struct json_writer *w, const char *key, const char *value)
{
	char *end;
	errno = 0;
	unsigned long long number = strtoull(value, &end, 10);
	if (value[0] >= '0' && value[0] <= '9' && *end == '\0' && errno == 0)
		json_writer_u64(w, key, number);
	else
		json_writer_string(w, key, value);
}

void control_json_stats_from_text(struct json_writer *w, const char *text)
{
	enum {
		NOTHING_OPEN,
		VM_COUNTERS,
		DEVICE_COUNTERS
	} state = NOTHING_OPEN;
	bool devices_open = false;
	char *copy = strdup(text ? text : "");
	if (!copy)
		return;
	char *save = NULL;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t n = strlen(line);
		unsigned index;
		int name_at = 0;
		if (strncmp(line, "  ", 2) == 0) {
			char *colon = strstr(line + 2, ": ");
			if (state == NOTHING_OPEN || !colon)
				continue;
			*colon = '\0';
			stats_value(w, line + 2, colon + 2);
		} else if (strncmp(line, "vm ", 3) == 0 && state == NOTHING_OPEN && !devices_open) {
			char *colon = strstr(line, ": uptime_ns ");
			if (!colon)
				continue;
			*colon = '\0';
			json_writer_string(w, "name", line + 3);
			stats_value(w, "uptime_ns", colon + 12);
			json_writer_open(w, "counters", '{');
			state = VM_COUNTERS;
		} else if (sscanf(line, "device %u %n", &index, &name_at) == 1 && name_at > 0 &&
			   n > (size_t)name_at + 1 && line[n - 1] == ':') {
			line[n - 1] = '\0';
			if (state != NOTHING_OPEN)
				json_writer_close(w, '}'); /* the VM's or a device's counters */
			if (state == DEVICE_COUNTERS)
				json_writer_close(w, '}'); /* the previous device */
			if (!devices_open)
				json_writer_open(w, "devices", '[');
			devices_open = true;
			json_writer_open(w, NULL, '{');
			json_writer_u64(w, "index", index);
			json_writer_string(w, "name", line + name_at);
			json_writer_open(w, "counters", '{');
			state = DEVICE_COUNTERS;
		}
	}
	free(copy);
	if (state != NOTHING_OPEN)
		json_writer_close(w, '}');
	if (state == DEVICE_COUNTERS)
		json_writer_close(w, '}');
	if (!devices_open)
		json_writer_open(w, "devices", '[');
	json_writer_close(w, ']');
}
