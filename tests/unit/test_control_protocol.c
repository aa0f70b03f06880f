/* Unit tests: the control protocol's request parser, argument helpers, errno names, verb table and the info verb's vCPU lines. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control/control.h"
#include "control/control_client.h"
#include "control/control_internal.h"
#include "core/vm.h"
#include "cunit_main.h"

static char error[512];

/* Parse text (copied, since the parser writes into its line). */
static int parse(const char *text, struct control_request *request, char *line, size_t len)
{
	snprintf(line, len, "%s", text);
	error[0] = '\0';
	return control_request_parse(line, request, error, sizeof(error));
}

static void test_verb_only(void)
{
	char line[128];
	struct control_request r;
	CU_ASSERT_EQUAL_FATAL(parse("info", &r, line, sizeof(line)), 0);
	CU_ASSERT_STRING_EQUAL(r.verb, "info");
	CU_ASSERT_EQUAL(r.arg_count, 0);
	CU_ASSERT_PTR_NULL(control_request_arg(&r, "timeout"));
}

static void test_arguments(void)
{
	char line[256];
	struct control_request r;
	CU_ASSERT_EQUAL_FATAL(parse("  set-limits\tdisk=0  iops=500 readonly=yes ", &r, line,
				    sizeof(line)),
			      0);
	CU_ASSERT_STRING_EQUAL(r.verb, "set-limits");
	CU_ASSERT_EQUAL(r.arg_count, 3);
	CU_ASSERT_STRING_EQUAL(control_request_arg(&r, "disk"), "0");
	CU_ASSERT_STRING_EQUAL(control_request_arg(&r, "iops"), "500");
	CU_ASSERT_STRING_EQUAL(control_request_arg(&r, "readonly"), "yes");
	uint64_t iops = 7;
	bool readonly = false;
	CU_ASSERT_EQUAL(control_arg_u64(&r, "iops", &iops, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(iops, 500);
	CU_ASSERT_EQUAL(control_arg_bool(&r, "readonly", &readonly, error, sizeof(error)), 0);
	CU_ASSERT(readonly);
	/* Absent keys leave the value alone. */
	uint64_t bps = 42;
	CU_ASSERT_EQUAL(control_arg_u64(&r, "bps", &bps, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(bps, 42);
}

static void test_empty_value_and_escapes(void)
{
	char line[256];
	struct control_request r;
	CU_ASSERT_EQUAL_FATAL(parse("save path=/tmp/my%20vm%25x note=", &r, line, sizeof(line)), 0);
	CU_ASSERT_STRING_EQUAL(control_request_arg(&r, "path"), "/tmp/my vm%x");
	CU_ASSERT_STRING_EQUAL(control_request_arg(&r, "note"), "");
}

static void test_rejects(void)
{
	static const struct {
		const char *text;
		const char *message_part;
	} cases[] = {
		{ "", "empty request" },
		{ "   ", "empty request" },
		{ "INFO", "is not a request name" },
		{ "in/fo", "is not a request name" },
		{ "info extra", "is not key=value" },
		{ "info =x", "is not key=value" },
		{ "pause a=1 a=2", "given twice" },
		{ "pause K=1", "characters other than" },
		{ "save path=%4", "bad escape" },
		{ "save path=%zz", "bad escape" },
		{ "save path=%0a", "control character" },
		{ "info \x01", "byte 0x01" },
		{ "info \xff", "byte 0xff" },
		{ "averyveryveryveryveryverylongrequestname", "longer than" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char line[256];
		struct control_request r;
		int err = parse(cases[i].text, &r, line, sizeof(line));
		CU_ASSERT_EQUAL(err, -EINVAL);
		if (!strstr(error, cases[i].message_part)) {
			fprintf(stderr, "case '%s': message '%s' lacks '%s'\n", cases[i].text,
				error, cases[i].message_part);
			CU_FAIL("error message");
		}
	}
}

static void test_too_many_arguments(void)
{
	char text[1024] = "x";
	size_t used = 1;
	for (unsigned i = 0; i <= CONTROL_MAX_ARGS; i++)
		used += (size_t)snprintf(text + used, sizeof(text) - used, " k%u=%u", i, i);
	char line[1024];
	struct control_request r;
	CU_ASSERT_EQUAL(parse(text, &r, line, sizeof(line)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "more than"));
	/* Exactly the limit is fine. */
	char *last = strrchr(text, ' ');
	*last = '\0';
	CU_ASSERT_EQUAL(parse(text, &r, line, sizeof(line)), 0);
	CU_ASSERT_EQUAL(r.arg_count, CONTROL_MAX_ARGS);
}

static void test_number_and_bool_errors(void)
{
	char line[256];
	struct control_request r;
	CU_ASSERT_EQUAL_FATAL(parse("x a=-1 b=12x c=maybe d=99999999999999999999999 e=off", &r,
				    line, sizeof(line)),
			      0);
	uint64_t v = 0;
	bool b = true;
	CU_ASSERT_EQUAL(control_arg_u64(&r, "a", &v, error, sizeof(error)), -EINVAL);
	CU_ASSERT_EQUAL(control_arg_u64(&r, "b", &v, error, sizeof(error)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "b='12x'"));
	CU_ASSERT_EQUAL(control_arg_bool(&r, "c", &b, error, sizeof(error)), -EINVAL);
	CU_ASSERT_EQUAL(control_arg_u64(&r, "d", &v, error, sizeof(error)), -EINVAL);
	CU_ASSERT_EQUAL(control_arg_bool(&r, "e", &b, error, sizeof(error)), 0);
	CU_ASSERT(!b);
}

static void test_check_keys(void)
{
	char line[256];
	struct control_request r;
	static const char *const allowed[] = { "timeout", "mode", NULL };
	static const char *const none[] = { NULL };
	CU_ASSERT_EQUAL_FATAL(parse("shutdown timeout=3", &r, line, sizeof(line)), 0);
	CU_ASSERT_EQUAL(control_request_check_keys(&r, allowed, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL_FATAL(parse("shutdown timout=3", &r, line, sizeof(line)), 0);
	CU_ASSERT_EQUAL(control_request_check_keys(&r, allowed, error, sizeof(error)), -EINVAL);
	CU_ASSERT_STRING_EQUAL(error,
			       "unknown argument 'timout' for shutdown; it takes timeout, mode");
	CU_ASSERT_EQUAL_FATAL(parse("pause now=1", &r, line, sizeof(line)), 0);
	CU_ASSERT_EQUAL(control_request_check_keys(&r, none, error, sizeof(error)), -EINVAL);
	CU_ASSERT_STRING_EQUAL(error, "pause takes no arguments (got 'now')");
}

static void test_errno_names(void)
{
	CU_ASSERT_STRING_EQUAL(control_errno_name(EINVAL), "EINVAL");
	CU_ASSERT_STRING_EQUAL(control_errno_name(EALREADY), "EALREADY");
	CU_ASSERT_STRING_EQUAL(control_errno_name(E2BIG), "E2BIG");
	CU_ASSERT_STRING_EQUAL(control_errno_name(9999), "EIO");
	/* The names on the wire are the C names of the errno values: checked
	 * both ways against that spelling, not by a round trip through the
	 * table (a round trip passes with two names swapped). */
	static const struct {
		int errnum;
		const char *name;
	} spelled[] = {
		{ EPERM, "EPERM" },   { ESRCH, "ESRCH" },	  { EIO, "EIO" },
		{ EACCES, "EACCES" }, { EBUSY, "EBUSY" },	  { EEXIST, "EEXIST" },
		{ ENOSYS, "ENOSYS" }, { ETIMEDOUT, "ETIMEDOUT" }, { EROFS, "EROFS" },
		{ ENOSPC, "ENOSPC" }, { ERANGE, "ERANGE" },	  { ENOENT, "ENOENT" },
	};
	for (size_t i = 0; i < sizeof(spelled) / sizeof(spelled[0]); i++) {
		CU_ASSERT_STRING_EQUAL(control_errno_name(spelled[i].errnum), spelled[i].name);
		CU_ASSERT_EQUAL(control_errno_from_name(spelled[i].name), spelled[i].errnum);
	}
	CU_ASSERT_EQUAL(control_errno_from_name("ENOTANERRNO"), EIO);
}

static int dummy_verb(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
		      char *err, size_t err_len)
{
	(void)vm;
	(void)request;
	(void)err;
	(void)err_len;
	fprintf(out, "dummy\n");
	return 0;
}

static void test_verb_table(void)
{
	CU_ASSERT_EQUAL(control_register_verb("unit-save", dummy_verb, "unit-save  test"), 0);
	CU_ASSERT_EQUAL(control_register_verb("unit-save", dummy_verb, "again"), -EEXIST);
	CU_ASSERT_EQUAL(control_register_verb("console", dummy_verb, "reserved"), -EEXIST);
	CU_ASSERT_EQUAL(control_register_verb("Bad", dummy_verb, "x"), -EINVAL);
	CU_ASSERT_EQUAL(control_register_verb("", dummy_verb, "x"), -EINVAL);
	CU_ASSERT_EQUAL(control_register_verb("ok", NULL, "x"), -EINVAL);
	CU_ASSERT_PTR_EQUAL(control_find_verb("unit-save"), dummy_verb);
	CU_ASSERT_PTR_NULL(control_find_verb("unit-missing"));
	/* The built-ins register once and then refuse a clash. */
	CU_ASSERT_EQUAL(control_register_builtin_verbs(), 0);
	CU_ASSERT_EQUAL(control_register_builtin_verbs(), 0);
	CU_ASSERT_PTR_NOT_NULL(control_find_verb("info"));
	CU_ASSERT_EQUAL(control_register_verb("info", dummy_verb, "x"), -EEXIST);
	/* The table fills up with -ENOSPC, never overflows. */
	int last = 0;
	for (unsigned i = 0; i < CONTROL_MAX_VERBS + 1 && !last; i++) {
		char name[32];
		snprintf(name, sizeof(name), "fill-%u", i);
		last = control_register_verb(name, dummy_verb, "fill");
	}
	CU_ASSERT_EQUAL(last, -ENOSPC);
}

/* Finish a received line the way the server does: bytes up to (not
 * including) the '\n', then parse. */
static int finish_and_parse(const char *bytes, size_t len, struct control_request *r, char *line)
{
	memcpy(line, bytes, len);
	line[len] = '\n';
	error[0] = '\0';
	int err = control_line_finish(line, len, error, sizeof(error));
	if (err)
		return err;
	return control_request_parse(line, r, error, sizeof(error));
}

static void test_crlf_accepted(void)
{
	char line[64];
	struct control_request r;
	/* A CRLF client (telnet, a Windows tool) gets its request served. */
	CU_ASSERT_EQUAL_FATAL(finish_and_parse("info\r", 5, &r, line), 0);
	CU_ASSERT_STRING_EQUAL(r.verb, "info");
	CU_ASSERT_EQUAL_FATAL(finish_and_parse("pause timeout=5\r", 16, &r, line), 0);
	CU_ASSERT_STRING_EQUAL(r.verb, "pause");
	CU_ASSERT_STRING_EQUAL(control_request_arg(&r, "timeout"), "5");
	/* A bare LF line is unchanged. */
	CU_ASSERT_EQUAL_FATAL(finish_and_parse("info", 4, &r, line), 0);
	CU_ASSERT_STRING_EQUAL(r.verb, "info");
	/* Only one CR is a line end; a second one is a control byte. */
	CU_ASSERT_EQUAL(finish_and_parse("info\r\r", 6, &r, line), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "0x0d"));
}

static void test_nul_refused(void)
{
	char line[64];
	struct control_request r;
	CU_ASSERT_EQUAL(finish_and_parse("in\0fo", 6, &r, line), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "NUL byte"));
	CU_ASSERT_EQUAL(finish_and_parse("info\0\r", 6, &r, line), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "NUL byte"));
}

/* 'info' on a VM that never ran (no KVM needed): one "vcpu K" line per
 * vCPU with its power, blocked flag, exit total, CPU time and host CPU;
 * the VM-wide lines still speak for vCPU 0. */
static void test_info_vcpu_lines(void)
{
	static struct kapsel_vm vm;
	struct vm_config config;
	memset(&vm, 0, sizeof(vm));
	vm_config_init(&config);
	config.vcpus = 3;
	vm.config = &config;
	vm.state = VM_STATE_RUNNING;
	vm.mem.size_bytes = 64ull << 20;
	vm.events = calloc(1, sizeof(*vm.events));
	CU_ASSERT_PTR_NOT_NULL_FATAL(vm.events);
	pthread_mutex_init(&vm.pause_lock, NULL);
	vm.vcpu_count = 3;
	for (unsigned k = 0; k < 3; k++)
		vm.vcpus[k] = (struct kapsel_vcpu){ .vm = &vm, .id = k, .fd = -1 };
	/* vCPU 0: this thread, blocked, with exits of three kinds. */
	vm.vcpus[0].power = VCPU_POWER_UP;
	vm.vcpus[0].blocked = 1;
	vm.vcpus[0].tid = (int)gettid();
	vm.vcpus[0].exits[VM_EXIT_IO_HYPERCALL] = 40;
	vm.vcpus[0].exits[VM_EXIT_HLT] = 2;
	vm.vcpus[0].exits[VM_EXIT_OTHER] = 1;
	/* vCPU 1: asked up, its thread not running yet. */
	vm.vcpus[1].power = VCPU_POWER_STARTING;
	vm.vcpus[1].exits[VM_EXIT_IO_DEVICE] = 7;
	/* vCPU 2: down; a tid of another process (init) is never read. */
	vm.vcpus[2].power = VCPU_POWER_DOWN;
	vm.vcpus[2].tid = 1;

	CU_ASSERT_EQUAL_FATAL(control_register_builtin_verbs(), 0);
	control_verb_fn info = control_find_verb("info");
	CU_ASSERT_PTR_NOT_NULL_FATAL(info);
	char line[16] = "info";
	struct control_request request;
	CU_ASSERT_EQUAL_FATAL(control_request_parse(line, &request, error, sizeof(error)), 0);
	char *payload = NULL;
	size_t payload_len = 0;
	FILE *out = open_memstream(&payload, &payload_len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(out);
	CU_ASSERT_EQUAL(info(&vm, &request, out, error, sizeof(error)), 0);
	fclose(out);

	char value[256];
	CU_ASSERT(control_payload_get(payload, "vcpus", value, sizeof(value)));
	CU_ASSERT_STRING_EQUAL(value, "3");
	CU_ASSERT(control_payload_get(payload, "vcpu_blocked", value, sizeof(value)));
	CU_ASSERT_STRING_EQUAL(value, "yes");
	CU_ASSERT(control_payload_get(payload, "vcpu 0", value, sizeof(value)));
	unsigned long long exits = 0, cpu_time = 0;
	int host_cpu = -2;
	char power[16] = "", blocked[8] = "";
	CU_ASSERT_EQUAL(sscanf(value,
			       "power %15s blocked %7s exits %llu cpu_time_ns %llu host_cpu %d",
			       power, blocked, &exits, &cpu_time, &host_cpu),
			5);
	CU_ASSERT_STRING_EQUAL(power, "up");
	CU_ASSERT_STRING_EQUAL(blocked, "yes");
	CU_ASSERT_EQUAL(exits, 43);
	CU_ASSERT(cpu_time > 0); /* this thread has run */
	CU_ASSERT(host_cpu >= 0);
	CU_ASSERT(control_payload_get(payload, "vcpu 1", value, sizeof(value)));
	CU_ASSERT_STRING_EQUAL(value,
			       "power starting blocked no exits 7 cpu_time_ns 0 host_cpu -1");
	CU_ASSERT(control_payload_get(payload, "vcpu 2", value, sizeof(value)));
	CU_ASSERT_STRING_EQUAL(value, "power down blocked no exits 0 cpu_time_ns 0 host_cpu -1");
	CU_ASSERT(!control_payload_get(payload, "vcpu 3", value, sizeof(value)));
	/* The lines come right after "vcpus", in order. */
	const char *v = strstr(payload, "\nvcpus 3\nvcpu 0 power up ");
	CU_ASSERT_PTR_NOT_NULL(v);
	CU_ASSERT(v && strstr(v, "\nvcpu 1 power starting ") < strstr(v, "\nvcpu 2 power down "));
	free(payload);
	free(vm.events);
	pthread_mutex_destroy(&vm.pause_lock);
	vm_config_free(&config);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "verb only", test_verb_only },
		{ "arguments", test_arguments },
		{ "empty value and escapes", test_empty_value_and_escapes },
		{ "malformed requests rejected with a reason", test_rejects },
		{ "argument count limit", test_too_many_arguments },
		{ "number and boolean errors", test_number_and_bool_errors },
		{ "allowed keys", test_check_keys },
		{ "errno names", test_errno_names },
		{ "verb table", test_verb_table },
		{ "CRLF line end accepted", test_crlf_accepted },
		{ "NUL byte refused", test_nul_refused },
		{ "info: one line per vCPU", test_info_vcpu_lines },
	};
	return UNIT_RUN("control_protocol", tests);
}
