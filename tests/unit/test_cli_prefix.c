/* Unit tests: naming each console line of 'kapsel clone --count N' (lines split across reads, long lines, the end of the stream). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit_main.h"
#include "cli/cli_prefix.h"

static char *output;
static size_t output_len;

static FILE *open_output(void)
{
	free(output);
	output = NULL;
	output_len = 0;
	return open_memstream(&output, &output_len);
}

static void test_lines_split_across_reads(void)
{
	struct line_prefixer a, b;
	line_prefixer_init(&a, "web-1");
	line_prefixer_init(&b, "web-2");
	FILE *out = open_output();
	line_prefixer_feed(&a, "hel", 3, out);
	line_prefixer_feed(&b, "other\nsec", 9, out);
	line_prefixer_feed(&a, "lo\nworld\n", 9, out);
	line_prefixer_feed(&b, "ond", 3, out);
	line_prefixer_flush(&a, out);
	line_prefixer_flush(&b, out);
	fclose(out);
	CU_ASSERT_STRING_EQUAL(output, "web-2| other\n"
				       "web-1| hello\n"
				       "web-1| world\n"
				       "web-2| second\n");
}

static void test_empty_lines_and_nothing(void)
{
	struct line_prefixer a;
	line_prefixer_init(&a, "x-1");
	FILE *out = open_output();
	line_prefixer_feed(&a, "\n\n", 2, out);
	line_prefixer_feed(&a, "", 0, out);
	line_prefixer_flush(&a, out);
	line_prefixer_flush(&a, out);
	fclose(out);
	CU_ASSERT_STRING_EQUAL(output, "x-1| \nx-1| \n");
}

static void test_long_line_is_cut(void)
{
	struct line_prefixer a;
	line_prefixer_init(&a, "long-1");
	size_t n = LINE_PREFIXER_MAX_LINE + 10;
	char *data = malloc(n + 1);
	memset(data, 'a', n);
	data[n] = '\n';
	FILE *out = open_output();
	line_prefixer_feed(&a, data, n + 1, out);
	fclose(out);
	/* Two lines: the first LINE_PREFIXER_MAX_LINE bytes, then the rest. */
	CU_ASSERT_EQUAL(output_len, 2 * strlen("long-1| ") + n + 2);
	CU_ASSERT_EQUAL(strncmp(output, "long-1| aaa", 11), 0);
	char *second = output + strlen("long-1| ") + LINE_PREFIXER_MAX_LINE + 1;
	CU_ASSERT_STRING_EQUAL(second, "long-1| aaaaaaaaaa\n");
	free(data);
}

static void test_long_name_is_cut(void)
{
	struct line_prefixer a;
	char name[200];
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	line_prefixer_init(&a, name);
	CU_ASSERT_EQUAL(strlen(a.prefix), 64 + 2);
	CU_ASSERT_STRING_EQUAL(a.prefix + 64, "| ");
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "lines split across reads", test_lines_split_across_reads },
		{ "empty lines, empty reads", test_empty_lines_and_nothing },
		{ "a long line is cut", test_long_line_is_cut },
		{ "a long name is cut", test_long_name_is_cut },
	};
	int status = UNIT_RUN("cli_prefix", tests);
	free(output);
	return status;
}
