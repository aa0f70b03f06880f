/* Fuzz target: vm_config_load_xml on arbitrary bytes in a temporary file; an accepted definition must survive writing it out and reading it back, as a file and in the state form from memory. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "fuzz_common.h"
#include "core/log.h"

static char input_path[256], output_path[256];

static void cleanup(void)
{
	unlink(input_path);
	unlink(output_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	kapsel_log_set_quiet(true);
	const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm"
			  : getenv("TMPDIR")		? getenv("TMPDIR")
							: "/tmp";
	snprintf(input_path, sizeof(input_path), "%s/kapsel-fuzz-xml-XXXXXX", dir);
	snprintf(output_path, sizeof(output_path), "%s/kapsel-fuzz-xml-out-XXXXXX", dir);
	int fd = mkstemp(input_path), out = mkstemp(output_path);
	FUZZ_CHECK(fd >= 0 && out >= 0);
	close(fd);
	close(out);
	atexit(cleanup);
	return 0;
}

static void write_file(const char *path, const void *data, size_t size)
{
	FILE *file = fopen(path, "wb");
	FUZZ_CHECK(file != NULL);
	FUZZ_CHECK(fwrite(data, 1, size, file) == size || size == 0);
	FUZZ_CHECK(fclose(file) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!input_path[0])
		LLVMFuzzerInitialize(NULL, NULL);
	write_file(input_path, data, size);

	struct vm_config config;
	char error[1024] = "";
	vm_config_init(&config);
	int err = vm_config_load_xml(input_path, &config, error, sizeof(error));
	if (err) {
		/* Refused with a message that names the file. */
		FUZZ_CHECK(err < 0 && strstr(error, input_path) != NULL);
		vm_config_free(&config);
		return 0;
	}
	/* Accepted: what it says is within Kapsel's limits ... */
	FUZZ_CHECK(config.name[0] != '\0' && memchr(config.name, 0, sizeof(config.name)));
	FUZZ_CHECK(config.disk_count <= VM_CONFIG_MAX_DISKS);
	FUZZ_CHECK(config.kernel_path != NULL);
	for (unsigned i = 0; i < config.disk_count; i++)
		FUZZ_CHECK(config.disks[i].path != NULL);

	/* ... and writing it as XML and loading that gives it back. */
	FILE *out = fopen(output_path, "w");
	FUZZ_CHECK(out != NULL);
	char write_error[1024] = "";
	int werr = vm_config_write_xml(&config, out, write_error, sizeof(write_error));
	FUZZ_CHECK(fclose(out) == 0);
	if (werr == 0) {
		struct vm_config again;
		char again_error[1024] = "";
		vm_config_init(&again);
		int rerr =
			vm_config_load_xml(output_path, &again, again_error, sizeof(again_error));
		if (rerr)
			fprintf(stderr, "written XML refused: %s\n", again_error);
		FUZZ_CHECK(rerr == 0);
		FUZZ_CHECK(strcmp(again.name, config.name) == 0);
		FUZZ_CHECK(again.memory_bytes == config.memory_bytes);
		FUZZ_CHECK(again.disk_count == config.disk_count);
		FUZZ_CHECK(memcmp(again.uuid, config.uuid, sizeof(config.uuid)) == 0);
		for (unsigned i = 0; i < config.disk_count; i++) {
			FUZZ_CHECK(again.disks[i].readonly == config.disks[i].readonly);
			FUZZ_CHECK(again.disks[i].bus == config.disks[i].bus);
		}
		vm_config_free(&again);
	}

	/* The state form (a state file's definition) parses back from memory
	 * with every device: interfaces and the rng included. */
	char *xml = NULL;
	size_t xml_bytes = 0;
	if (vm_config_format_xml(&config, VM_CONFIG_XML_STATE, &xml, &xml_bytes, write_error,
				 sizeof(write_error)) == 0) {
		struct vm_config again;
		char again_error[1024] = "";
		vm_config_init(&again);
		int rerr = vm_config_parse_xml(xml, xml_bytes, "state", NULL, &again, again_error,
					       sizeof(again_error));
		if (rerr)
			fprintf(stderr, "state form refused: %s\n", again_error);
		FUZZ_CHECK(rerr == 0);
		FUZZ_CHECK(again.has_uuid && again.console_output_path == NULL);
		FUZZ_CHECK(again.disk_count == config.disk_count);
		FUZZ_CHECK(again.net_count == config.net_count);
		for (unsigned i = 0; i < config.net_count; i++) {
			FUZZ_CHECK(again.nets[i].model == config.nets[i].model);
			FUZZ_CHECK(strcmp(again.nets[i].path, config.nets[i].path) == 0);
		}
		FUZZ_CHECK(again.rng.enabled == config.rng.enabled);
		if (config.rng.enabled) {
			const struct vm_rng_config *x = &config.rng, *y = &again.rng;
			FUZZ_CHECK(y->requests_limit.rate_per_second ==
					   x->requests_limit.rate_per_second &&
				   y->requests_limit.burst == x->requests_limit.burst &&
				   y->bytes_limit.rate_per_second ==
					   x->bytes_limit.rate_per_second &&
				   y->bytes_limit.burst == x->bytes_limit.burst);
		}
		vm_config_free(&again);
		free(xml);
	}
	vm_config_free(&config);
	return 0;
}
