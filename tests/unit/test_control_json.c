/* Unit tests: the control socket's JSON form — request parser (malformed and hostile input), reply framing, stats conversion. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_main.h"
#include "control/control.h"
#include "control/control_json.h"

static char storage[CONTROL_REQUEST_MAX_BYTES + 1];
static struct control_request request;
static char id[CONTROL_JSON_ID_MAX + 1];
static char error[512];

static int parse(const char *line)
{
	error[0] = '\0';
	return control_json_request_parse(line, storage, sizeof(storage), &request, id, sizeof(id),
					  error, sizeof(error));
}

static void test_good_requests(void)
{
	CU_ASSERT_EQUAL(parse("{\"version\":1,\"verb\":\"info\"}"), 0);
	CU_ASSERT_STRING_EQUAL(request.verb, "info");
	CU_ASSERT_EQUAL(request.arg_count, 0);
	CU_ASSERT_STRING_EQUAL(id, "null");

	CU_ASSERT_EQUAL(parse(" {\"id\": 42, \"verb\": \"set-limits\", \"version\": 1, \"args\": "
			      "{\"disk\": 0, \"readonly\": true, \"wait\": false, "
			      "\"dir\": \"/tmp/a b/\\u00e9\"}}"),
			0);
	CU_ASSERT_STRING_EQUAL(request.verb, "set-limits");
	CU_ASSERT_STRING_EQUAL(id, "42");
	CU_ASSERT_EQUAL(request.arg_count, 4);
	CU_ASSERT_STRING_EQUAL(control_request_arg(&request, "disk"), "0");
	CU_ASSERT_STRING_EQUAL(control_request_arg(&request, "readonly"), "yes");
	CU_ASSERT_STRING_EQUAL(control_request_arg(&request, "wait"), "no");
	/* A space needs no escape in JSON; UTF-8 arrives as UTF-8. */
	CU_ASSERT_STRING_EQUAL(control_request_arg(&request, "dir"), "/tmp/a b/\xc3\xa9");
	/* Strings live in storage, not in the parser's memory. */
	CU_ASSERT_TRUE(request.verb >= storage && request.verb < storage + sizeof(storage));

	CU_ASSERT_EQUAL(parse("{\"version\":1,\"verb\":\"stats\",\"id\":\"job-7\"}"), 0);
	CU_ASSERT_STRING_EQUAL(id, "\"job-7\"");
}

/* Each malformed request is refused with -EINVAL (or -EPROTO) and a
 * message that names the problem. */
static void expect_refused(const char *line, int expected, const char *message_part)
{
	int err = parse(line);
	CU_ASSERT_EQUAL(err, expected);
	if (!strstr(error, message_part))
		fprintf(stderr, "\n'%s': error '%s' lacks '%s'\n", line, error, message_part);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, message_part));
	CU_ASSERT_PTR_NULL(request.verb);
}

static void test_malformed(void)
{
	expect_refused("{", -EINVAL, "malformed JSON at column");
	expect_refused("{\"version\":1,\"verb\":\"info\"} x", -EINVAL, "malformed JSON");
	expect_refused("{\"version\":1,\"verb\":\"info\",}", -EINVAL, "malformed JSON");
	expect_refused("[1,2]", -EINVAL, "one object");
	expect_refused("{\"verb\":\"info\"}", -EINVAL, "'version' is missing");
	expect_refused("{\"version\":2,\"verb\":\"info\"}", -EPROTO, "speaks version 1");
	expect_refused("{\"version\":\"1\",\"verb\":\"info\"}", -EPROTO, "not an integer");
	expect_refused("{\"version\":1}", -EINVAL, "'verb' is missing");
	expect_refused("{\"version\":1,\"verb\":7}", -EINVAL, "'verb' is missing or not a string");
	expect_refused("{\"version\":1,\"verb\":\"Info\"}", -EINVAL, "not a request name");
	expect_refused("{\"version\":1,\"verb\":\"\"}", -EINVAL, "not a request name");
	expect_refused("{\"version\":1,\"verb\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", -EINVAL,
		       "not a request name");
	expect_refused("{\"version\":1,\"verb\":\"info\",\"extra\":1}", -EINVAL,
		       "unknown member 'extra'");
	expect_refused("{\"version\":1,\"verb\":\"info\",\"verb\":\"stats\"}", -EINVAL,
		       "malformed JSON");
	expect_refused("{\"version\":1,\"verb\":\"info\",\"args\":[]}", -EINVAL,
		       "'args' must be an object");
	expect_refused("{\"version\":1,\"verb\":\"x\",\"args\":{\"Bad Key\":1}}", -EINVAL,
		       "argument name 'Bad Key'");
	expect_refused("{\"version\":1,\"verb\":\"x\",\"args\":{\"n\":-1}}", -EINVAL,
		       "argument 'n' must be");
	expect_refused("{\"version\":1,\"verb\":\"x\",\"args\":{\"n\":1.5}}", -EINVAL,
		       "argument 'n' must be");
	expect_refused("{\"version\":1,\"verb\":\"x\",\"args\":{\"n\":null}}", -EINVAL,
		       "argument 'n' must be");
	expect_refused("{\"version\":1,\"verb\":\"x\",\"args\":{\"n\":{}}}", -EINVAL,
		       "argument 'n' must be");
	expect_refused("{\"version\":1,\"verb\":\"x\",\"args\":{\"s\":\"a\\nb\"}}", -EINVAL,
		       "control character");
	/* NUL inside a string, and bytes that are not UTF-8. */
	expect_refused("{\"version\":1,\"verb\":\"x\",\"args\":{\"s\":\"a\\u0000b\"}}", -EINVAL,
		       "malformed JSON");
	expect_refused("{\"version\":1,\"verb\":\"x\",\"args\":{\"s\":\"\xff\"}}", -EINVAL,
		       "malformed JSON");
	expect_refused("{\"version\":1,\"verb\":\"x\",\"id\":[1]}", -EINVAL,
		       "'id' must be an integer or a string");
	expect_refused("{\"version\":1,\"verb\":\"x\",\"id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
		       -EINVAL, "'id' is longer");
	/* The id of a request refused later is kept for the error reply. */
	CU_ASSERT_EQUAL(parse("{\"version\":9,\"verb\":\"x\",\"id\":5}"), -EPROTO);
	CU_ASSERT_STRING_EQUAL(id, "5");
}

static void test_too_many_args(void)
{
	char line[1024];
	int n = snprintf(line, sizeof(line), "{\"version\":1,\"verb\":\"x\",\"args\":{");
	for (unsigned i = 0; i <= CONTROL_MAX_ARGS; i++)
		n += snprintf(line + n, sizeof(line) - (size_t)n, "%s\"k%u\":1", i ? "," : "", i);
	snprintf(line + n, sizeof(line) - (size_t)n, "}}");
	expect_refused(line, -EINVAL, "more than 16 arguments");
}

static void test_small_storage(void)
{
	char small[7]; /* "dumpxml" needs 8 */
	CU_ASSERT_EQUAL(control_json_request_parse("{\"version\":1,\"verb\":\"dumpxml\"}", small,
						   sizeof(small), &request, id, sizeof(id), error,
						   sizeof(error)),
			-E2BIG);
}

/* Parse a reply line back with jansson. */
static json_t *reply_of(void (*write)(FILE *))
{
	char *text = NULL;
	size_t length = 0;
	FILE *f = open_memstream(&text, &length);
	write(f);
	fclose(f);
	CU_ASSERT_TRUE(length > 0 && text[length - 1] == '\n');
	CU_ASSERT_PTR_NULL(memchr(text, '\n', length - 1)); /* one line */
	json_error_t e;
	json_t *root = json_loads(text, 0, &e);
	if (!root)
		fprintf(stderr, "\nnot JSON: %s (%s)\n", text, e.text);
	free(text);
	return root;
}

static void write_lines_reply(FILE *f)
{
	static const char payload[] = "<domain>\n  \"x\"\n\n</domain>\n";
	control_json_reply_ok(f, "\"a\"", "dumpxml", payload, strlen(payload), false);
}

static void write_result_reply(FILE *f)
{
	static const char payload[] = "{\"schema\":\"kapsel.info/1\"}\n";
	control_json_reply_ok(f, "3", "info", payload, strlen(payload), true);
}

static void write_error_reply(FILE *f)
{
	control_json_reply_error(f, NULL, EINVAL, "bad \"thing\"\n\xff");
}

static void test_replies(void)
{
	json_t *r = reply_of(write_lines_reply);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(r, "version")), 1);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r, "id")), "a");
	CU_ASSERT_TRUE(json_is_true(json_object_get(r, "ok")));
	json_t *lines = json_object_get(r, "lines");
	CU_ASSERT_EQUAL(json_array_size(lines), 4);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_array_get(lines, 1)), "  \"x\"");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_array_get(lines, 2)), "");
	json_decref(r);

	r = reply_of(write_result_reply);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(r, "id")), 3);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r, "verb")), "info");
	CU_ASSERT_STRING_EQUAL(json_string_value(
				       json_object_get(json_object_get(r, "result"), "schema")),
			       "kapsel.info/1");
	json_decref(r);

	r = reply_of(write_error_reply);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_TRUE(json_is_null(json_object_get(r, "id")));
	CU_ASSERT_TRUE(json_is_false(json_object_get(r, "ok")));
	json_t *e = json_object_get(r, "error");
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e, "errno")), "EINVAL");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(e, "code")), EINVAL);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e, "message")),
			       "bad \"thing\"\n\xef\xbf\xbd");
	json_decref(r);
}

static const char stats_text[] = "vm web: uptime_ns 5000\n"
				 "  exits_total: 12\n"
				 "  vcpu0_power: up\n"
				 "device 0 console:\n"
				 "  exits: 3\n"
				 "device 1 block-pv0:\n"
				 "  ops_read: 7\n"
				 "  latency_us_histogram: [0,2):1\n"
				 "stray line\n";

static void write_stats(FILE *f)
{
	struct json_writer w;
	json_writer_init(&w, f, false);
	json_writer_open(&w, NULL, '{');
	control_json_stats_from_text(&w, stats_text);
	json_writer_close(&w, '}');
	CU_ASSERT_FALSE(w.error);
	fputc('\n', f);
}

static void write_stats_without_devices(FILE *f)
{
	struct json_writer w;
	json_writer_init(&w, f, false);
	json_writer_open(&w, NULL, '{');
	control_json_stats_from_text(&w, "vm a: uptime_ns 1\n  exits_total: 0\n");
	json_writer_close(&w, '}');
	CU_ASSERT_FALSE(w.error);
	fputc('\n', f);
}

static void test_stats_conversion(void)
{
	json_t *r = reply_of(write_stats);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r, "name")), "web");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(r, "uptime_ns")), 5000);
	json_t *counters = json_object_get(r, "counters");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(counters, "exits_total")), 12);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(counters, "vcpu0_power")), "up");
	json_t *devices = json_object_get(r, "devices");
	CU_ASSERT_EQUAL_FATAL(json_array_size(devices), 2);
	json_t *d1 = json_array_get(devices, 1);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(d1, "index")), 1);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(d1, "name")), "block-pv0");
	json_t *c1 = json_object_get(d1, "counters");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(c1, "ops_read")), 7);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(c1, "latency_us_histogram")),
			       "[0,2):1");
	CU_ASSERT_EQUAL(json_integer_value(
				json_object_get(json_object_get(json_array_get(devices, 0),
								"counters"),
						"exits")),
			3);
	json_decref(r);

	r = reply_of(write_stats_without_devices);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(json_array_size(json_object_get(r, "devices")), 0);
	json_decref(r);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "well-formed requests", test_good_requests },
		{ "malformed requests name the problem", test_malformed },
		{ "too many arguments", test_too_many_args },
		{ "strings that do not fit", test_small_storage },
		{ "ok, lines and error replies are one JSON line", test_replies },
		{ "stats text becomes counters and devices", test_stats_conversion },
	};
	return UNIT_RUN("control_json", tests);
}
