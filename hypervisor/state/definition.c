/* The VM definition inside a state file or migration stream: domain XML written and read back, and the format-1 text record read for one version. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/error_text.h"
#include "state/snapshot.h"
#include "state/vm_state.h"

/* ---- Format 2: domain XML (VM_STATE_DEFINITION) ------------------------------ */

int snapshot_put_definition(const struct vm_config *config, struct vm_state_writer *out,
			    char *error, size_t error_len)
{
	char *xml = NULL;
	size_t length = 0;
	int err =
		vm_config_format_xml(config, VM_CONFIG_XML_STATE, &xml, &length, error, error_len);
	if (err)
		return err;
	if (length > VM_CONFIG_XML_MAX_BYTES)
		err = kapsel_fail(
			error, error_len, -EMSGSIZE,
			"the VM definition is %zu bytes of XML, more than a state file holds (%u)",
			length, VM_CONFIG_XML_MAX_BYTES);
	else
		vm_state_put(out, VM_STATE_DEFINITION, VM_STATE_RECORD_MANDATORY, xml, length);
	free(xml);
	return err;
}

/* What a saved definition may not carry over: host files to write to. */
static void drop_host_outputs(struct vm_config *config)
{
	free(config->console_output_path);
	config->console_output_path = NULL;
	free(config->source_xml_path);
	config->source_xml_path = NULL;
	free(config->stats_path);
	config->stats_path = NULL;
}

static int config_from_xml(const struct vm_state_stored_record *rec, struct vm_config *config,
			   char *error, size_t error_len)
{
	struct vm_config parsed;
	char detail[768];
	vm_config_init(&parsed);
	/* Relative paths stay relative (no base directory): they are bound
	 * or refused later (snapshot_bind_host_files), never opened here. */
	int err = vm_config_parse_xml((const char *)rec->payload, (size_t)rec->length_bytes,
				      "saved definition", NULL, &parsed, detail, sizeof(detail));
	if (err) {
		vm_config_free(&parsed);
		return kapsel_fail(error, error_len, -EPROTO, "%s", detail);
	}
	drop_host_outputs(&parsed);
	/* A definition written by Kapsel always carries the uuid. */
	if (!parsed.has_uuid) {
		vm_config_free(&parsed);
		return kapsel_fail(
			error, error_len, -EPROTO,
			"domain XML 'saved definition': /domain/uuid is missing; Kapsel always saves it");
	}
	vm_config_free(config);
	*config = parsed;
	return 0;
}

/* ---- Format 1: "key=value" lines (VM_STATE_CONFIG_TEXT), read only ------------ */

static int unescape(char *value)
{
	char *out = value;
	for (char *p = value; *p; p++) {
		if (*p != '%') {
			*out++ = *p;
			continue;
		}
		unsigned byte;
		if (sscanf(p + 1, "%2x", &byte) != 1 || !p[1] || !p[2] || byte == 0)
			return -EINVAL;
		*out++ = (char)byte;
		p += 2;
	}
	*out = '\0';
	return 0;
}

static int config_from_text_v1(const struct vm_state_stored_record *rec, struct vm_config *config,
			       char *error, size_t error_len)
{
	char *text = strndup((const char *)rec->payload, (size_t)rec->length_bytes);
	if (!text)
		return -ENOMEM;
	int err = 0;
	char *save = NULL;
	struct vm_disk_config *disk = NULL;
	for (char *line = strtok_r(text, "\n", &save); line && !err;
	     line = strtok_r(NULL, "\n", &save)) {
		char *value = strchr(line, '=');
		if (!value || unescape(value + 1) < 0) {
			err = -EPROTO;
			break;
		}
		*value++ = '\0';
		if (strcmp(line, "name") == 0) {
			/* The name becomes file names: the one check for names. */
			if (vm_config_check_name(value, error, error_len) < 0) {
				free(text);
				return -EPROTO;
			}
			snprintf(config->name, sizeof(config->name), "%s", value);
		} else if (strcmp(line, "uuid") == 0) {
			if (strlen(value) != 32)
				err = -EPROTO;
			for (int i = 0; !err && i < 16; i++) {
				unsigned byte;
				if (sscanf(value + 2 * i, "%2x", &byte) != 1)
					err = -EPROTO;
				config->uuid[i] = (uint8_t)byte;
			}
			config->has_uuid = true;
		} else if (strcmp(line, "memory_bytes") == 0) {
			unsigned long long bytes;
			if (sscanf(value, "%llu", &bytes) != 1)
				err = -EPROTO;
			config->memory_bytes = bytes;
		} else if (strcmp(line, "vcpus") == 0) {
			/* The one check for a vCPU count, as for --vcpus and <vcpu>. */
			int bad = vm_config_parse_vcpus(value, &config->vcpus);
			if (bad == -ERANGE) /* digits only: safe to show */
				kapsel_fail(error, error_len, -EPROTO,
					    "the saved VM definition has vcpus=%.20s; Kapsel runs 1 to %u vCPUs per VM",
					    value, VM_CONFIG_MAX_VCPUS);
			else if (bad)
				kapsel_fail(error, error_len, -EPROTO,
					    "the saved VM definition's vcpus is not a whole number; Kapsel runs 1 to %u vCPUs per VM",
					    VM_CONFIG_MAX_VCPUS);
			if (bad) {
				free(text);
				return -EPROTO;
			}
		} else if (strcmp(line, "kernel") == 0) {
			free(config->kernel_path);
			config->kernel_path = strdup(value);
		} else if (strcmp(line, "cmdline") == 0) {
			free(config->cmdline);
			config->cmdline = strdup(value);
		} else if (strcmp(line, "lifecycle") == 0) {
			int a, b, c;
			if (sscanf(value, "%d %d %d", &a, &b, &c) != 3 || a < 0 || a > 2 || b < 0 ||
			    b > 2 || c < 0 || c > 2)
				err = -EPROTO;
			config->on_poweroff = (enum vm_lifecycle_action)a;
			config->on_reboot = (enum vm_lifecycle_action)b;
			config->on_crash = (enum vm_lifecycle_action)c;
		} else if (strcmp(line, "console_mode") == 0) {
			int mode;
			if (sscanf(value, "%d", &mode) != 1 || mode < 0 || mode > 1)
				err = -EPROTO;
			config->console_mode = (enum vm_console_mode)mode;
		} else if (strcmp(line, "disk") == 0) {
			if (config->disk_count == VM_CONFIG_MAX_DISKS) {
				err = -EPROTO;
				break;
			}
			disk = &config->disks[config->disk_count++];
			memset(disk, 0, sizeof(*disk));
			disk->path = strdup(value);
		} else if (strcmp(line, "disk_options") == 0 && disk) {
			int readonly, bus, cache;
			unsigned poll, poll_us;
			if (sscanf(value, "%d %d %d %u %u", &readonly, &bus, &cache, &poll,
				   &poll_us) != 5 ||
			    bus < 0 || bus > 1 || cache < 0 || cache > 1)
				err = -EPROTO;
			disk->readonly = readonly != 0;
			disk->bus = (enum vm_disk_bus)bus;
			disk->cache = (enum vm_disk_cache)cache;
			disk->poll = poll != 0;
			disk->poll_us = poll_us;
		} else if (strcmp(line, "disk_format") == 0 && disk) {
			if (strcmp(value, "raw") == 0)
				disk->format = VM_DISK_FORMAT_RAW;
			else if (strcmp(value, "overlay") == 0)
				disk->format = VM_DISK_FORMAT_OVERLAY;
			else
				err = -EPROTO;
		} else if (strcmp(line, "disk_limits") == 0 && disk) {
			unsigned long long a, b, c, d;
			if (sscanf(value, "%llu %llu %llu %llu", &a, &b, &c, &d) != 4)
				err = -EPROTO;
			disk->ops_limit = (struct vm_rate_limit){ a, b };
			disk->bytes_limit = (struct vm_rate_limit){ c, d };
		} else if (strcmp(line, "rng_limits") == 0) {
			unsigned long long a, b, c, d;
			if (sscanf(value, "%llu %llu %llu %llu", &a, &b, &c, &d) != 4)
				err = -EPROTO;
			config->rng = (struct vm_rng_config){ .enabled = true,
							      .requests_limit = { a, b },
							      .bytes_limit = { c, d } };
		}
		/* Unknown keys come from a newer Kapsel: the definition is
		 * still usable without them. */
	}
	free(text);
	if (err)
		return kapsel_fail(error, error_len, err,
				   "the saved VM definition record is malformed");
	if (!config->kernel_path)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved VM definition names no kernel");
	return 0;
}

int snapshot_config_from_records(const struct vm_state_records *state, struct vm_config *config,
				 char *error, size_t error_len)
{
	const struct vm_state_stored_record *xml = vm_state_find(state, VM_STATE_DEFINITION, NULL);
	const struct vm_state_stored_record *text =
		vm_state_find(state, VM_STATE_CONFIG_TEXT, NULL);
	unsigned count = 0;
	for (size_t i = 0; i < state->count; i++)
		count += state->records[i].type == VM_STATE_DEFINITION ||
			 state->records[i].type == VM_STATE_CONFIG_TEXT;
	if (count > 1)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved state has more than one VM definition record");
	if (xml)
		return config_from_xml(xml, config, error, error_len);
	if (!text)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved state has no VM definition record");
	/* The text record is format 1's; a newer stream with one is forged
	 * or broken. */
	if (state->begin.format_version != 1)
		return kapsel_fail(
			error, error_len, -EPROTO,
			"the saved state is format %u but carries a format-1 text definition; it was not written by Kapsel",
			state->begin.format_version);
	return config_from_text_v1(text, config, error, error_len);
}
