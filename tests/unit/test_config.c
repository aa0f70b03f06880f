/* Unit tests: VM config defaults and the --disk option syntax (vm_config_parse_disk). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cunit_main.h"
#include "config/config.h"
#include "config/config_options.h"

static char error[512];

static void test_defaults(void)
{
	struct vm_config config;
	vm_config_init(&config);
	CU_ASSERT_STRING_EQUAL(config.name, "kapsel");
	CU_ASSERT_EQUAL(config.memory_bytes, 64ull << 20);
	CU_ASSERT_EQUAL(config.vcpus, 1);
	CU_ASSERT_EQUAL(config.on_poweroff, VM_ACTION_DESTROY);
	CU_ASSERT_EQUAL(config.on_reboot, VM_ACTION_RESTART);
	CU_ASSERT_EQUAL(config.on_crash, VM_ACTION_DESTROY);
	CU_ASSERT_EQUAL(config.console_mode, VM_CONSOLE_AUTO);
	CU_ASSERT(config.console_input);
	CU_ASSERT_PTR_NULL(config.kernel_path);
	CU_ASSERT_EQUAL(config.disk_count, 0);
	vm_config_free(&config);
}

static void test_disk_path_only(void)
{
	struct vm_disk_config disk;
	CU_ASSERT_EQUAL_FATAL(vm_config_parse_disk("/var/disk.img", &disk, error, sizeof(error)),
			      0);
	CU_ASSERT_STRING_EQUAL(disk.path, "/var/disk.img");
	CU_ASSERT(!disk.readonly);
	CU_ASSERT_EQUAL(disk.bus, VM_DISK_BUS_PV);
	CU_ASSERT_EQUAL(disk.cache, VM_DISK_CACHE_WRITEBACK);
	CU_ASSERT_EQUAL(disk.ops_limit.rate_per_second, 0);
	CU_ASSERT_EQUAL(disk.bytes_limit.rate_per_second, 0);
	CU_ASSERT(!disk.poll);
	free(disk.path);
}

static void test_disk_all_options(void)
{
	struct vm_disk_config disk;
	CU_ASSERT_EQUAL_FATAL(
		vm_config_parse_disk("d.img,readonly,bus=ata,cache=none,iops=1000,iops_burst=50,bps="
				     "1048576,bps_burst=65536,poll=200,queues=3",
				     &disk, error, sizeof(error)),
		0);
	CU_ASSERT_STRING_EQUAL(disk.path, "d.img");
	CU_ASSERT(disk.readonly);
	CU_ASSERT_EQUAL(disk.bus, VM_DISK_BUS_ATA);
	CU_ASSERT_EQUAL(disk.cache, VM_DISK_CACHE_NONE);
	CU_ASSERT_EQUAL(disk.ops_limit.rate_per_second, 1000);
	CU_ASSERT_EQUAL(disk.ops_limit.burst, 50);
	CU_ASSERT_EQUAL(disk.bytes_limit.rate_per_second, 1048576);
	CU_ASSERT_EQUAL(disk.bytes_limit.burst, 65536);
	CU_ASSERT(disk.poll);
	CU_ASSERT_EQUAL(disk.poll_us, 200);
	CU_ASSERT_EQUAL(disk.queues, 3);
	free(disk.path);

	/* Aliases and explicit values. */
	CU_ASSERT_EQUAL_FATAL(vm_config_parse_disk("d.img,ro,bus=ide,cache=direct", &disk, error,
						   sizeof(error)),
			      0);
	CU_ASSERT(disk.readonly);
	CU_ASSERT_EQUAL(disk.bus, VM_DISK_BUS_ATA);
	CU_ASSERT_EQUAL(disk.cache, VM_DISK_CACHE_NONE);
	free(disk.path);
	CU_ASSERT_EQUAL_FATAL(vm_config_parse_disk("d.img,readonly=off,bus=xen,cache=writeback",
						   &disk, error, sizeof(error)),
			      0);
	CU_ASSERT(!disk.readonly);
	CU_ASSERT_EQUAL(disk.bus, VM_DISK_BUS_PV);
	CU_ASSERT_EQUAL(disk.cache, VM_DISK_CACHE_WRITEBACK);
	free(disk.path);
	CU_ASSERT_EQUAL_FATAL(vm_config_parse_disk("d.img,readonly=yes,bus=pv", &disk, error,
						   sizeof(error)),
			      0);
	CU_ASSERT(disk.readonly);
	free(disk.path);

	/* poll=0 means no polling; poll is capped at one second. */
	CU_ASSERT_EQUAL_FATAL(vm_config_parse_disk("d.img,poll=0", &disk, error, sizeof(error)), 0);
	CU_ASSERT(!disk.poll);
	free(disk.path);
	CU_ASSERT_EQUAL_FATAL(vm_config_parse_disk("d.img,poll=99999999", &disk, error,
						   sizeof(error)),
			      0);
	CU_ASSERT(disk.poll);
	CU_ASSERT_EQUAL(disk.poll_us, 1000000);
	free(disk.path);
}

static void expect_disk_error(const char *text, const char *message)
{
	struct vm_disk_config disk;
	error[0] = '\0';
	CU_ASSERT_EQUAL(vm_config_parse_disk(text, &disk, error, sizeof(error)), -EINVAL);
	if (!strstr(error, message)) {
		fprintf(stderr, "\n  '%s': message '%s' lacks '%s'\n", text, error, message);
		CU_FAIL("error message");
	}
	/* Nothing is left allocated on failure. */
	CU_ASSERT_PTR_NULL(disk.path);
}

static void test_disk_errors(void)
{
	expect_disk_error("d.img,frobnicate",
			  "--disk 'd.img,frobnicate': option 'frobnicate' is "
			  "unknown or lacks a valid value; known: format=raw|overlay, readonly");
	expect_disk_error("d.img,speed=9", "option 'speed=9' is unknown");
	expect_disk_error("d.img,bus=scsi",
			  "--disk 'd.img,bus=scsi': bus 'scsi' is unknown; use bus=pv or bus=ata");
	expect_disk_error("d.img,cache=unsafe",
			  "cache 'unsafe' is unknown; use cache=none or cache=writeback");
	/* Options that need a value, without one or with a bad one. */
	expect_disk_error("d.img,bus", "option 'bus' is unknown or lacks a valid value");
	expect_disk_error("d.img,iops", "option 'iops' is unknown or lacks a valid value");
	expect_disk_error("d.img,iops=-5", "option 'iops=-5' is unknown or lacks a valid value");
	expect_disk_error("d.img,iops=12abc", "option 'iops=12abc'");
	expect_disk_error("d.img,bps=", "option 'bps='");
	expect_disk_error("d.img,bps=99999999999999999999999",
			  "option 'bps=99999999999999999999999'");
	expect_disk_error("d.img,queues=0", "--disk 'd.img,queues=0': queues '0' must be 1-16");
	expect_disk_error("d.img,queues=17", "queues '17' must be 1-16");
	expect_disk_error("d.img,queues=2x", "queues '2x' must be 1-16");
	/* A bad option after good ones still fails the whole spec. */
	expect_disk_error("d.img,readonly,bus=ata,nope", "option 'nope' is unknown");
	/* Missing path. */
	expect_disk_error("", "--disk needs a path");
	expect_disk_error(",readonly", "--disk needs a path");
	expect_disk_error(",,,", "--disk needs a path");
}

/* The list splitter both --disk and --net use: empty fields skipped, a
 * value only after '=', the path field (config_next_field) not split. */
static void test_option_list_splitting(void)
{
	char list[] = ",a=b=c,,flag,empty=,/p=q";
	char *cursor = list, *value = (char *)"untouched";
	char *key = config_next_option(&cursor, &value);
	CU_ASSERT_STRING_EQUAL_FATAL(key, "a");
	CU_ASSERT_STRING_EQUAL(value, "b=c");
	key = config_next_option(&cursor, &value);
	CU_ASSERT_STRING_EQUAL_FATAL(key, "flag");
	CU_ASSERT_PTR_NULL(value);
	key = config_next_option(&cursor, &value);
	CU_ASSERT_STRING_EQUAL_FATAL(key, "empty");
	CU_ASSERT_STRING_EQUAL(value, "");
	CU_ASSERT_STRING_EQUAL(config_next_field(&cursor), "/p=q");
	CU_ASSERT_PTR_NULL(config_next_option(&cursor, &value));
	CU_ASSERT_PTR_NULL(config_next_field(&cursor));

	uint64_t number = 7;
	CU_ASSERT_EQUAL(config_parse_u64("18446744073709551615", &number), 0);
	CU_ASSERT_EQUAL(number, UINT64_MAX);
	CU_ASSERT_EQUAL(config_parse_u64(NULL, &number), -EINVAL);
	CU_ASSERT_EQUAL(config_parse_u64("-1", &number), -EINVAL);
	CU_ASSERT_EQUAL(number, UINT64_MAX);
}

/* --net reports an unknown option with its own flag and syntax line. */
static void test_net_unknown_option(void)
{
	struct vm_net_config net;
	CU_ASSERT_EQUAL(vm_config_parse_net("tap=kt0,speed=9", &net, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(
		strstr(error, "--net 'tap=kt0,speed=9': option 'speed=9' is unknown or lacks a "
			      "valid value; syntax: --net socket=PATH"));
	CU_ASSERT_EQUAL(vm_config_parse_net("tap=kt0,,pps=5", &net, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(net.frames_limit.rate_per_second, 5);
	vm_net_config_free(&net);
}

/* --console-output FILE[,max=SIZE]: the file gets a cap by default. */
static void test_console_output(void)
{
	struct vm_config config;
	vm_config_init(&config);
	CU_ASSERT_EQUAL(config.console_output_max_bytes, VM_CONSOLE_OUTPUT_DEFAULT_MAX_BYTES);
	CU_ASSERT(config.console_output_max_bytes > 0);
	CU_ASSERT_EQUAL_FATAL(vm_config_parse_console_output("/tmp/c.log", &config, error,
							     sizeof(error)),
			      0);
	CU_ASSERT_STRING_EQUAL(config.console_output_path, "/tmp/c.log");
	CU_ASSERT_EQUAL(config.console_output_max_bytes, VM_CONSOLE_OUTPUT_DEFAULT_MAX_BYTES);
	CU_ASSERT_EQUAL_FATAL(vm_config_parse_console_output("out.log,max=10M", &config, error,
							     sizeof(error)),
			      0);
	CU_ASSERT_STRING_EQUAL(config.console_output_path, "out.log");
	CU_ASSERT_EQUAL(config.console_output_max_bytes, 10ull << 20);
	CU_ASSERT_EQUAL(vm_config_parse_console_output("o,max=65536", &config, error,
						       sizeof(error)),
			0);
	CU_ASSERT_EQUAL(config.console_output_max_bytes, 65536);
	CU_ASSERT_EQUAL(vm_config_parse_console_output("o,max=0", &config, error, sizeof(error)),
			0);
	CU_ASSERT_EQUAL(config.console_output_max_bytes, 0);
	/* Refused, and the config keeps what it had. */
	CU_ASSERT_EQUAL(vm_config_parse_console_output("x,max=100", &config, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "below the smallest cap"));
	CU_ASSERT_EQUAL(vm_config_parse_console_output("x,max=9Q", &config, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "option 'max=9Q' is unknown or lacks a valid value"));
	CU_ASSERT_EQUAL(vm_config_parse_console_output("x,rotate", &config, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_EQUAL(vm_config_parse_console_output(",max=1M", &config, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "needs a file"));
	CU_ASSERT_STRING_EQUAL(config.console_output_path, "o");
	CU_ASSERT_EQUAL(config.console_output_max_bytes, 0);
	vm_config_free(&config);
}

/* One table names the lifecycle actions for XML and 'info': names and
 * values map both ways, and nothing else parses. */
static void test_lifecycle_action_names(void)
{
	static const struct {
		enum vm_lifecycle_action action;
		const char *name;
	} expected[] = {
		{ VM_ACTION_DESTROY, "destroy" },
		{ VM_ACTION_RESTART, "restart" },
		{ VM_ACTION_PRESERVE, "preserve" },
	};
	for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
		enum vm_lifecycle_action parsed = (enum vm_lifecycle_action)99;
		CU_ASSERT_STRING_EQUAL(vm_lifecycle_action_name(expected[i].action),
				       expected[i].name);
		CU_ASSERT_EQUAL(vm_lifecycle_action_parse(expected[i].name, &parsed), 0);
		CU_ASSERT_EQUAL(parsed, expected[i].action);
	}
	enum vm_lifecycle_action untouched = VM_ACTION_RESTART;
	CU_ASSERT_EQUAL(vm_lifecycle_action_parse("Destroy", &untouched), -EINVAL);
	CU_ASSERT_EQUAL(vm_lifecycle_action_parse("", &untouched), -EINVAL);
	CU_ASSERT_EQUAL(vm_lifecycle_action_parse("coredump-destroy", &untouched), -EINVAL);
	CU_ASSERT_EQUAL(untouched, VM_ACTION_RESTART);
	/* A value outside the enum is what Kapsel does with it: destroy. */
	CU_ASSERT_STRING_EQUAL(vm_lifecycle_action_name((enum vm_lifecycle_action)7), "destroy");
}

/* The one vCPU count check (--vcpus, <vcpu>, a state's definition). */
static void test_vcpu_counts(void)
{
	static const struct {
		const char *text;
		int err;
		unsigned vcpus;
	} cases[] = {
		{ "1", 0, 1 },
		{ "2", 0, 2 },
		{ "16", 0, 16 },
		{ "016", 0, 16 },
		{ "0", -ERANGE, 0 },
		{ "17", -ERANGE, 0 },
		{ "4294967297", -ERANGE, 0 }, /* 2^32 + 1: no wrap to 1 */
		{ "99999999999999999999999999", -ERANGE, 0 },
		{ "", -EINVAL, 0 },
		{ "-1", -EINVAL, 0 },
		{ "+2", -EINVAL, 0 },
		{ " 2", -EINVAL, 0 },
		{ "2 ", -EINVAL, 0 },
		{ "2x", -EINVAL, 0 },
		{ "0x2", -EINVAL, 0 },
		{ "2.0", -EINVAL, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned vcpus = 77;
		int err = vm_config_parse_vcpus(cases[i].text, &vcpus);
		if (err != cases[i].err)
			fprintf(stderr, "\n'%s': got %d, want %d\n", cases[i].text, err,
				cases[i].err);
		CU_ASSERT_EQUAL(err, cases[i].err);
		CU_ASSERT_EQUAL(vcpus,
				cases[i].err ? 77u : cases[i].vcpus); /* untouched on error */
	}
	unsigned vcpus = 77;
	CU_ASSERT_EQUAL(vm_config_parse_vcpus(NULL, &vcpus), -EINVAL);
	CU_ASSERT_EQUAL(vcpus, 77);
	CU_ASSERT_EQUAL(VM_CONFIG_MAX_VCPUS, 16);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "config defaults", test_defaults },
		{ "disk: path only", test_disk_path_only },
		{ "disk: every option", test_disk_all_options },
		{ "disk: errors name the bad part", test_disk_errors },
		{ "option lists: splitting and numbers", test_option_list_splitting },
		{ "net: unknown option message", test_net_unknown_option },
		{ "console output file and its cap", test_console_output },
		{ "lifecycle action names", test_lifecycle_action_names },
		{ "vCPU counts: one check", test_vcpu_counts },
	};
	return UNIT_RUN("config", tests);
}
