/* A VM's definition: defaults, lifecycle action names, the vCPU count check and the --disk option syntax. */
#include "config/config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/byte_size.h"
#include "kapsel/abi.h"
#include "config/config_options.h"
#include "core/error_text.h"
#include "kapsel/abi.h"

_Static_assert(VM_CONFIG_MAX_VCPUS == KAPSEL_MAX_VCPUS,
	       "a VM has at most the vCPUs the ABI's vCPU info area holds");

void vm_config_init(struct vm_config *config)
{
	memset(config, 0, sizeof(*config));
	snprintf(config->name, sizeof(config->name), "kapsel");
	config->memory_bytes = 64ull << 20;
	config->vcpus = 1;
	config->on_poweroff = VM_ACTION_DESTROY;
	config->on_reboot = VM_ACTION_RESTART;
	config->on_crash = VM_ACTION_DESTROY;
	config->console_mode = VM_CONSOLE_AUTO;
	config->console_input = true;
	config->console_output_max_bytes = VM_CONSOLE_OUTPUT_DEFAULT_MAX_BYTES;
}

/* The one table of lifecycle action names. */
static const char *const lifecycle_action_names[] = {
	[VM_ACTION_DESTROY] = "destroy",
	[VM_ACTION_RESTART] = "restart",
	[VM_ACTION_PRESERVE] = "preserve",
};

const char *vm_lifecycle_action_name(enum vm_lifecycle_action action)
{
	size_t count = sizeof(lifecycle_action_names) / sizeof(lifecycle_action_names[0]);
	if ((size_t)action >= count || !lifecycle_action_names[action])
		return lifecycle_action_names[VM_ACTION_DESTROY];
	return lifecycle_action_names[action];
}

int vm_lifecycle_action_parse(const char *name, enum vm_lifecycle_action *action)
{
	size_t count = sizeof(lifecycle_action_names) / sizeof(lifecycle_action_names[0]);
	for (size_t i = 0; i < count; i++) {
		if (lifecycle_action_names[i] && strcmp(name, lifecycle_action_names[i]) == 0) {
			*action = (enum vm_lifecycle_action)i;
			return 0;
		}
	}
	return -EINVAL;
}

void vm_config_free(struct vm_config *config)
{
	free(config->kernel_path);
	free(config->cmdline);
	free(config->console_output_path);
	free(config->stats_path);
	free(config->source_xml_path);
	for (unsigned i = 0; i < config->disk_count; i++)
		free(config->disks[i].path);
	for (unsigned i = 0; i < config->net_count; i++)
		vm_net_config_free(&config->nets[i]);
	memset(config, 0, sizeof(*config));
}

int vm_config_check_name(const char *name, char *error, size_t error_len)
{
	size_t length = strnlen(name, VM_CONFIG_NAME_MAX);
	bool bad = length == 0 || length >= VM_CONFIG_NAME_MAX || name[0] == '.';
	for (size_t i = 0; i < length && !bad; i++) {
		unsigned char c = (unsigned char)name[i];
		bad = c <= 0x20 || c >= 0x7f || c == '/' || c == '\\';
	}
	if (!bad)
		return 0;
	if (!error)
		return -EINVAL;
	/* Show what was given without passing control bytes to a terminal. */
	char shown[4 * 40 + 4];
	size_t used = 0;
	for (size_t i = 0; i < length && i < 40; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c > 0x20 && c < 0x7f && c != '\\')
			shown[used++] = (char)c;
		else
			used += (size_t)snprintf(shown + used, sizeof(shown) - used, "\\x%02x", c);
	}
	if (length > 40)
		used += (size_t)snprintf(shown + used, sizeof(shown) - used, "...");
	shown[used] = '\0';
	return kapsel_fail(
		error, error_len, -EINVAL,
		"VM name '%s' is not valid: use 1-%u printable characters without spaces, '/' or '\\', not starting with '.'",
		shown, VM_CONFIG_NAME_MAX - 1);
}

char *config_next_field(char **cursor)
{
	char *field = *cursor;
	while (field && *field == ',')
		field++;
	if (!field || !*field) {
		*cursor = NULL;
		return NULL;
	}
	char *comma = strchr(field, ',');
	if (comma)
		*comma = '\0';
	*cursor = comma ? comma + 1 : NULL;
	return field;
}

char *config_next_option(char **cursor, char **value)
{
	char *key = config_next_field(cursor);
	*value = key ? strchr(key, '=') : NULL;
	if (*value)
		*(*value)++ = '\0';
	return key;
}

int config_parse_u64(const char *text, uint64_t *value)
{
	char *end;
	if (!text || !*text || *text == '-')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*value = v;
	return 0;
}

int vm_config_parse_vcpus(const char *text, unsigned *vcpus)
{
	if (!text || !*text)
		return -EINVAL;
	unsigned long long count = 0;
	for (const char *p = text; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		/* Past the limit already: keep reading digits, no overflow. */
		if (count <= VM_CONFIG_MAX_VCPUS)
			count = count * 10 + (unsigned)(*p - '0');
	}
	if (count < 1 || count > VM_CONFIG_MAX_VCPUS)
		return -ERANGE;
	*vcpus = (unsigned)count;
	return 0;
}

int config_unknown_option(char *error, size_t error_len, const char *flag, const char *text,
			  const char *key, const char *value, const char *help)
{
	return kapsel_fail(error, error_len, -EINVAL,
			   "%s '%s': option '%s%s%s' is unknown or lacks a valid value; %s", flag,
			   text, key, value ? "=" : "", value ? value : "", help);
}

int vm_config_parse_disk(const char *text, struct vm_disk_config *disk, char *error,
			 size_t error_len)
{
	char *copy = strdup(text), *cursor = copy;
	int err = 0;

	memset(disk, 0, sizeof(*disk));
	if (!copy)
		return -ENOMEM;
	char *path = config_next_field(&cursor);
	/* Empty fields are skipped: ",readonly" must not become path
	 * "readonly". */
	if (!path || !*path || text[0] == ',') {
		free(copy);
		return kapsel_fail(
			error, error_len, -EINVAL,
			"--disk needs a path: --disk PATH[,format=raw|overlay][,readonly][,bus=pv|ata][,cache=none|writeback]");
	}
	disk->path = strdup(path);
	char *opt, *value;
	while (!err && (opt = config_next_option(&cursor, &value))) {
		uint64_t number = 0;
		if (strcmp(opt, "format") == 0 && value) {
			if (strcmp(value, "raw") == 0)
				disk->format = VM_DISK_FORMAT_RAW;
			else if (strcmp(value, "overlay") == 0 || strcmp(value, "kovl") == 0)
				disk->format = VM_DISK_FORMAT_OVERLAY;
			else
				err = kapsel_fail(
					error, error_len, -EINVAL,
					"--disk '%s': format '%s' is unknown; use format=raw or format=overlay",
					text, value);
		} else if (strcmp(opt, "readonly") == 0 || strcmp(opt, "ro") == 0) {
			disk->readonly =
				!value || strcmp(value, "on") == 0 || strcmp(value, "yes") == 0;
		} else if (strcmp(opt, "bus") == 0 && value) {
			if (strcmp(value, "pv") == 0 || strcmp(value, "xen") == 0)
				disk->bus = VM_DISK_BUS_PV;
			else if (strcmp(value, "ata") == 0 || strcmp(value, "ide") == 0)
				disk->bus = VM_DISK_BUS_ATA;
			else
				err = kapsel_fail(
					error, error_len, -EINVAL,
					"--disk '%s': bus '%s' is unknown; use bus=pv or bus=ata",
					text, value);
		} else if (strcmp(opt, "cache") == 0 && value) {
			if (strcmp(value, "none") == 0 || strcmp(value, "direct") == 0)
				disk->cache = VM_DISK_CACHE_NONE;
			else if (strcmp(value, "writeback") == 0)
				disk->cache = VM_DISK_CACHE_WRITEBACK;
			else
				err = kapsel_fail(
					error, error_len, -EINVAL,
					"--disk '%s': cache '%s' is unknown; use cache=none or cache=writeback",
					text, value);
		} else if (strcmp(opt, "queues") == 0 && value) {
			if (config_parse_u64(value, &number) != 0 || number < 1 ||
			    number > KAPSEL_MAX_VCPUS)
				err = kapsel_fail(
					error, error_len, -EINVAL,
					"--disk '%s': queues '%s' must be 1-%u (PV rings; default one per vCPU)",
					text, value, KAPSEL_MAX_VCPUS);
			else
				disk->queues = (uint32_t)number;
		} else if (config_parse_u64(value, &number) == 0 &&
			   (strcmp(opt, "iops") == 0 || strcmp(opt, "iops_burst") == 0 ||
			    strcmp(opt, "bps") == 0 || strcmp(opt, "bps_burst") == 0 ||
			    strcmp(opt, "poll") == 0)) {
			if (strcmp(opt, "iops") == 0)
				disk->ops_limit.rate_per_second = number;
			else if (strcmp(opt, "iops_burst") == 0)
				disk->ops_limit.burst = number;
			else if (strcmp(opt, "bps") == 0)
				disk->bytes_limit.rate_per_second = number;
			else if (strcmp(opt, "bps_burst") == 0)
				disk->bytes_limit.burst = number;
			else {
				disk->poll = number > 0;
				disk->poll_us = (uint32_t)(number > 1000000 ? 1000000 : number);
			}
		} else {
			err = config_unknown_option(
				error, error_len, "--disk", text, opt, value,
				"known: format=raw|overlay, readonly, bus=pv|ata, cache=none|writeback, iops=N, iops_burst=N, bps=N, bps_burst=N, poll=MICROSECONDS, queues=N");
		}
	}
	free(copy);
	if (err) {
		free(disk->path);
		disk->path = NULL;
	}
	return err;
}

int vm_config_parse_console_output(const char *text, struct vm_config *config, char *error,
				   size_t error_len)
{
	char *copy = strdup(text), *cursor = copy;
	if (!copy)
		return -ENOMEM;
	char *path = config_next_field(&cursor);
	if (!path || !*path || text[0] == ',') {
		free(copy);
		return kapsel_fail(error, error_len, -EINVAL,
				   "--console-output needs a file: --console-output FILE[,max=SIZE]");
	}
	uint64_t max_bytes = VM_CONSOLE_OUTPUT_DEFAULT_MAX_BYTES;
	int err = 0;
	char *opt, *value;
	while (!err && (opt = config_next_option(&cursor, &value))) {
		if (strcmp(opt, "max") == 0 && byte_size_parse(value, &max_bytes) == 0) {
			if (max_bytes && max_bytes < VM_CONSOLE_OUTPUT_MIN_MAX_BYTES)
				err = kapsel_fail(
					error, error_len, -EINVAL,
					"--console-output '%s': max=%s is below the smallest cap, %llu bytes; give max=4K or more (max=0 for no cap)",
					text, value, VM_CONSOLE_OUTPUT_MIN_MAX_BYTES);
		} else {
			err = config_unknown_option(
				error, error_len, "--console-output", text, opt, value,
				"known: max=SIZE (bytes, or with K, M or G; 0 for no cap)");
		}
	}
	if (!err) {
		char *owned = strdup(path);
		if (!owned) {
			err = -ENOMEM;
		} else {
			free(config->console_output_path);
			config->console_output_path = owned;
			config->console_output_max_bytes = max_bytes;
		}
	}
	free(copy);
	return err;
}
