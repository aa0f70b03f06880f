/* Unit tests: the shared JSON writer's escaping (quotes, backslash, control characters, bytes that are not UTF-8) and nesting. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_main.h"
#include "core/json_writer.h"

/* s written as a JSON string, in a static buffer. */
static const char *escaped(const char *s)
{
	static char buf[256];
	FILE *f = fmemopen(buf, sizeof(buf), "w");
	json_write_escaped(f, s);
	fclose(f);
	return buf;
}

static void test_escapes(void)
{
	CU_ASSERT_STRING_EQUAL(escaped("plain"), "\"plain\"");
	CU_ASSERT_STRING_EQUAL(escaped("a\"b\\c"), "\"a\\\"b\\\\c\"");
	CU_ASSERT_STRING_EQUAL(escaped("l1\nl2\r\t"), "\"l1\\nl2\\r\\t\"");
	CU_ASSERT_STRING_EQUAL(escaped("\x01\x1f\x7f"), "\"\\u0001\\u001f\\u007f\"");
	CU_ASSERT_STRING_EQUAL(escaped(""), "\"\"");
}

static void test_utf8(void)
{
	/* Well-formed UTF-8 of every length passes unchanged. */
	CU_ASSERT_STRING_EQUAL(escaped("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x99\x82"),
			       "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x99\x82\"");
	/* A lone continuation byte, a Latin-1 byte, a truncated sequence at
	 * the end, an overlong '/', a UTF-16 surrogate and a code point above
	 * U+10FFFF: each offending byte becomes U+FFFD, the rest is kept. */
	CU_ASSERT_STRING_EQUAL(escaped("a\x80z"), "\"a\\ufffdz\"");
	CU_ASSERT_STRING_EQUAL(escaped("vm-\xe9t\xe9"), "\"vm-\\ufffdt\\ufffd\"");
	CU_ASSERT_STRING_EQUAL(escaped("x\xe2\x82"), "\"x\\ufffd\\ufffd\"");
	CU_ASSERT_STRING_EQUAL(escaped("\xc0\xaf"), "\"\\ufffd\\ufffd\"");
	CU_ASSERT_STRING_EQUAL(escaped("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");
	CU_ASSERT_STRING_EQUAL(escaped("\xf4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
}

static char *write_document(bool pretty)
{
	char *text = NULL;
	size_t length = 0;
	FILE *f = open_memstream(&text, &length);
	struct json_writer w;
	json_writer_init(&w, f, pretty);
	json_writer_open(&w, NULL, '{');
	json_writer_string(&w, "name", "web \"1\"");
	json_writer_u64(&w, "big", UINT64_MAX);
	json_writer_i64(&w, "cpu", -1);
	json_writer_double(&w, "rate", 2.5);
	json_writer_double(&w, "nan", NAN);
	json_writer_bool(&w, "yes", 1);
	json_writer_bool(&w, "unknown", -1);
	json_writer_string(&w, "none", NULL);
	json_writer_open(&w, "list", '[');
	json_writer_u64(&w, NULL, 1);
	json_writer_open(&w, NULL, '{');
	json_writer_close(&w, '}');
	json_writer_close(&w, ']');
	json_writer_close(&w, '}');
	CU_ASSERT_FALSE(w.error);
	fclose(f);
	return text;
}

static void test_compact_document(void)
{
	char *text = write_document(false);
	CU_ASSERT_STRING_EQUAL(
		text,
		"{\"name\":\"web \\\"1\\\"\",\"big\":18446744073709551615,\"cpu\":-1,\"rate\":2.5,"
		"\"nan\":null,\"yes\":true,\"unknown\":null,\"none\":null,\"list\":[1,{}]}");
	free(text);
}

static void test_pretty_document(void)
{
	char *text = write_document(true);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "{\n  \"name\": \"web \\\"1\\\"\",\n  \"big\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"list\": [\n    1,\n    {}\n  ]\n}"));
	free(text);
}

static void test_misuse(void)
{
	char buf[4096];
	FILE *f = fmemopen(buf, sizeof(buf), "w");
	struct json_writer w;
	json_writer_init(&w, f, false);
	json_writer_close(&w, '}'); /* nothing open */
	CU_ASSERT_TRUE(w.error);
	json_writer_init(&w, f, false);
	for (int i = 0; i <= JSON_WRITER_MAX_DEPTH; i++)
		json_writer_open(&w, NULL, '[');
	CU_ASSERT_TRUE(w.error);
	CU_ASSERT_EQUAL(w.depth, JSON_WRITER_MAX_DEPTH);
	fclose(f);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "quotes, backslash, control characters", test_escapes },
		{ "UTF-8 kept, other bytes become U+FFFD", test_utf8 },
		{ "a compact document", test_compact_document },
		{ "a pretty document", test_pretty_document },
		{ "closing too much, nesting too deep", test_misuse },
	};
	return UNIT_RUN("json_writer", tests);
}
