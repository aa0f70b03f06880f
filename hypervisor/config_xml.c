/* libvirt domain XML to a VM definition, parsed with libxml2. */
#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "guest_memory.h"
#include "log.h"

struct xml_context {
	struct vm_config *config;
	char *error;
	size_t error_len;
	const char *path;
};

static int xml_fail(struct xml_context *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int xml_fail(struct xml_context *ctx, const char *fmt, ...)
{
	char detail[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	snprintf(ctx->error, ctx->error_len, "domain XML '%s': %s", ctx->path, detail);
	return -EINVAL;
}

static bool is_element(const xmlNode *node, const char *name)
{
	return node->type == XML_ELEMENT_NODE && strcmp((const char *)node->name, name) == 0;
}

/* Text content of node, trimmed; caller frees. */
static char *node_text(const xmlNode *node)
{
	xmlChar *raw = xmlNodeGetContent(node);
	if (!raw)
		return strdup("");
	char *start = (char *)raw;
	while (*start == ' ' || *start == '\n' || *start == '\t' || *start == '\r')
		start++;
	char *end = start + strlen(start);
	while (end > start && (end[-1] == ' ' || end[-1] == '\n' || end[-1] == '\t' || end[-1] == '\r'))
		end--;
	char *text = strndup(start, (size_t)(end - start));
	xmlFree(raw);
	return text;
}

static char *node_attr(const xmlNode *node, const char *name)
{
	xmlChar *raw = xmlGetProp(node, (const xmlChar *)name);
	if (!raw)
		return NULL;
	char *text = strdup((const char *)raw);
	xmlFree(raw);
	return text;
}

/* <memory unit='MiB'>64</memory>: libvirt's default unit is KiB. */
static int parse_memory(struct xml_context *ctx, const xmlNode *node, uint64_t *bytes)
{
	char *text = node_text(node), *unit = node_attr(node, "unit"), *end;
	int err = 0;
	errno = 0;
	unsigned long long value = strtoull(text, &end, 10);
	uint64_t scale = 1024;
	if (!*text || *end || errno)
		err = xml_fail(ctx, "<%s> value '%s' is not a whole number", node->name, text);
	if (!err && unit) {
		static const struct { const char *name; uint64_t scale; } units[] = {
			{ "b", 1 }, { "bytes", 1 }, { "KB", 1000 }, { "k", 1024 }, { "KiB", 1024 },
			{ "MB", 1000000 }, { "M", 1 << 20 }, { "MiB", 1 << 20 },
			{ "GB", 1000000000 }, { "G", 1 << 30 }, { "GiB", 1 << 30 },
		};
		bool found = false;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (strcmp(unit, units[i].name) == 0) {
				scale = units[i].scale;
				found = true;
			}
		if (!found)
			err = xml_fail(ctx, "<%s unit='%s'>: unknown unit; use KiB, MiB or GiB",
				       node->name, unit);
	}
	if (!err && value > UINT64_MAX / scale)
		err = xml_fail(ctx, "<%s> value is too large", node->name);
	if (!err)
		*bytes = value * scale;
	free(text);
	free(unit);
	return err;
}

static int parse_action(struct xml_context *ctx, const xmlNode *node,
			enum vm_lifecycle_action *action)
{
	char *text = node_text(node);
	int err = 0;
	if (strcmp(text, "destroy") == 0)
		*action = VM_ACTION_DESTROY;
	else if (strcmp(text, "restart") == 0)
		*action = VM_ACTION_RESTART;
	else
		err = xml_fail(ctx, "<%s>%s</%s> is not supported; use destroy or restart",
			       node->name, text, node->name);
	free(text);
	return err;
}

static int parse_uuid(struct xml_context *ctx, const char *text, uint8_t uuid[16])
{
	unsigned n = 0;
	for (const char *p = text; *p; p++) {
		if (*p == '-')
			continue;
		int digit;
		if (*p >= '0' && *p <= '9')
			digit = *p - '0';
		else if (*p >= 'a' && *p <= 'f')
			digit = *p - 'a' + 10;
		else if (*p >= 'A' && *p <= 'F')
			digit = *p - 'A' + 10;
		else
			return xml_fail(ctx, "<uuid> '%s' is not a UUID", text);
		if (n >= 32)
			return xml_fail(ctx, "<uuid> '%s' is too long", text);
		if (n % 2 == 0)
			uuid[n / 2] = (uint8_t)(digit << 4);
		else
			uuid[n / 2] |= (uint8_t)digit;
		n++;
	}
	if (n != 32)
		return xml_fail(ctx, "<uuid> '%s' must have 32 hex digits", text);
	return 0;
}

static int parse_os(struct xml_context *ctx, const xmlNode *os)
{
	for (const xmlNode *n = os->children; n; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		if (is_element(n, "kernel")) {
			free(ctx->config->kernel_path);
			ctx->config->kernel_path = node_text(n);
		} else if (is_element(n, "cmdline")) {
			free(ctx->config->cmdline);
			ctx->config->cmdline = node_text(n);
		} else if (is_element(n, "type")) {
			char *arch = node_attr(n, "arch");
			bool bad = arch && strcmp(arch, "x86_64") != 0;
			free(arch);
			if (bad)
				return xml_fail(ctx, "/domain/os/type: only arch='x86_64' is supported");
		} else if (is_element(n, "initrd") || is_element(n, "loader") ||
			   is_element(n, "boot")) {
			return xml_fail(ctx, "/domain/os/%s is not supported: Kapsel boots an ELF kernel directly (use <kernel>)",
					n->name);
		} else {
			kapsel_warn("domain XML '%s': ignoring /domain/os/%s", ctx->path, n->name);
		}
	}
	return 0;
}

static int parse_disk(struct xml_context *ctx, const xmlNode *node)
{
	struct vm_config *config = ctx->config;
	char *type = node_attr(node, "type"), *device = node_attr(node, "device");
	int err = 0;
	if (!type || strcmp(type, "file") != 0 || (device && strcmp(device, "disk") != 0))
		err = xml_fail(ctx, "/domain/devices/disk: only type='file' device='disk' is supported");
	free(type);
	free(device);
	if (err)
		return err;
	if (config->disk_count == VM_CONFIG_MAX_DISKS)
		return xml_fail(ctx, "more than %u disks", VM_CONFIG_MAX_DISKS);
	struct vm_disk_config disk = { 0 };
	bool have_target = false;
	for (const xmlNode *n = node->children; n && !err; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		if (is_element(n, "source")) {
			free(disk.path);
			disk.path = node_attr(n, "file");
		} else if (is_element(n, "readonly")) {
			disk.readonly = true;
		} else if (is_element(n, "driver")) {
			char *cache = node_attr(n, "cache");
			if (cache && (strcmp(cache, "none") == 0 || strcmp(cache, "directsync") == 0))
				disk.cache = VM_DISK_CACHE_NONE;
			else if (cache && strcmp(cache, "writeback") != 0 && strcmp(cache, "default") != 0)
				err = xml_fail(ctx, "/domain/devices/disk/driver cache='%s' is not supported; use none or writeback", cache);
			free(cache);
			char *format = node_attr(n, "type");
			if (format && strcmp(format, "raw") != 0)
				err = xml_fail(ctx, "/domain/devices/disk/driver type='%s': only raw images are supported", format);
			free(format);
		} else if (is_element(n, "target")) {
			char *bus = node_attr(n, "bus");
			have_target = true;
			if (!bus || strcmp(bus, "xen") == 0)
				disk.bus = VM_DISK_BUS_PV;
			else if (strcmp(bus, "ide") == 0)
				disk.bus = VM_DISK_BUS_ATA;
			else
				err = xml_fail(ctx, "/domain/devices/disk/target bus='%s' is not supported; use bus='xen' (PV) or bus='ide' (emulated ATA)", bus);
			free(bus);
		} else if (is_element(n, "iotune")) {
			for (const xmlNode *t = n->children; t && !err; t = t->next) {
				if (t->type != XML_ELEMENT_NODE)
					continue;
				char *text = node_text(t), *end;
				unsigned long long v = strtoull(text, &end, 10);
				if (!*text || *end)
					err = xml_fail(ctx, "/domain/devices/disk/iotune/%s '%s' is not a number", t->name, text);
				else if (is_element(t, "total_iops_sec"))
					disk.ops_limit.rate_per_second = v;
				else if (is_element(t, "total_iops_sec_max"))
					disk.ops_limit.burst = v;
				else if (is_element(t, "total_bytes_sec"))
					disk.bytes_limit.rate_per_second = v;
				else if (is_element(t, "total_bytes_sec_max"))
					disk.bytes_limit.burst = v;
				else
					err = xml_fail(ctx, "/domain/devices/disk/iotune/%s is not supported; use total_iops_sec, total_iops_sec_max, total_bytes_sec, total_bytes_sec_max", t->name);
				free(text);
			}
		} else if (is_element(n, "address") || is_element(n, "alias") || is_element(n, "serial")) {
			/* informational */
		} else {
			err = xml_fail(ctx, "/domain/devices/disk/%s is not supported", n->name);
		}
	}
	if (!err && !disk.path)
		err = xml_fail(ctx, "/domain/devices/disk needs <source file='...'/>");
	if (!err && !have_target)
		err = xml_fail(ctx, "/domain/devices/disk needs <target dev='...' bus='xen|ide'/>");
	if (err) {
		free(disk.path);
		return err;
	}
	config->disks[config->disk_count++] = disk;
	return 0;
}

static int parse_devices(struct xml_context *ctx, const xmlNode *devices)
{
	for (const xmlNode *n = devices->children; n; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		int err = 0;
		if (is_element(n, "disk"))
			err = parse_disk(ctx, n);
		else if (is_element(n, "console") || is_element(n, "serial")) {
			char *type = node_attr(n, "type");
			if (type && strcmp(type, "file") == 0) {
				for (const xmlNode *s = n->children; s; s = s->next)
					if (is_element(s, "source")) {
						free(ctx->config->console_output_path);
						ctx->config->console_output_path = node_attr(s, "path");
					}
			} else if (type && strcmp(type, "stdio") != 0 && strcmp(type, "pty") != 0) {
				err = xml_fail(ctx, "/domain/devices/%s type='%s' is not supported; use stdio or file",
					       n->name, type);
			}
			free(type);
		} else if (is_element(n, "emulator") || is_element(n, "memballoon") ||
			   is_element(n, "controller") || is_element(n, "input") ||
			   is_element(n, "graphics") || is_element(n, "video")) {
			kapsel_warn("domain XML '%s': ignoring /domain/devices/%s", ctx->path, n->name);
		} else {
			err = xml_fail(ctx, "/domain/devices/%s is not supported by Kapsel", n->name);
		}
		if (err)
			return err;
	}
	return 0;
}

static int parse_domain(struct xml_context *ctx, const xmlNode *root)
{
	struct vm_config *config = ctx->config;
	int err = 0;
	bool have_memory = false;

	if (!is_element(root, "domain"))
		return xml_fail(ctx, "root element is <%s>, expected <domain>", root->name);
	char *type = node_attr(root, "type");
	if (type && strcmp(type, "kvm") != 0 && strcmp(type, "kapsel") != 0)
		err = xml_fail(ctx, "/domain type='%s' is not supported; use type='kvm'", type);
	free(type);
	for (const xmlNode *n = root->children; n && !err; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		if (is_element(n, "name")) {
			char *name = node_text(n);
			if (!*name || strlen(name) >= sizeof(config->name) || strchr(name, '/'))
				err = xml_fail(ctx, "/domain/name '%s' must be 1-%zu characters without '/'",
					       name, sizeof(config->name) - 1);
			else
				snprintf(config->name, sizeof(config->name), "%s", name);
			free(name);
		} else if (is_element(n, "uuid")) {
			char *text = node_text(n);
			err = parse_uuid(ctx, text, config->uuid);
			config->has_uuid = !err;
			free(text);
		} else if (is_element(n, "memory")) {
			err = parse_memory(ctx, n, &config->memory_bytes);
			have_memory = true;
		} else if (is_element(n, "currentMemory")) {
			uint64_t current = 0;
			err = parse_memory(ctx, n, &current);
			if (!err && have_memory && current != config->memory_bytes)
				err = xml_fail(ctx, "/domain/currentMemory differs from /domain/memory; Kapsel has no balloon, make them equal");
		} else if (is_element(n, "vcpu")) {
			char *text = node_text(n);
			if (strcmp(text, "1") != 0)
				err = xml_fail(ctx, "/domain/vcpu is '%s'; Kapsel runs one vCPU per VM", text);
			free(text);
		} else if (is_element(n, "os")) {
			err = parse_os(ctx, n);
		} else if (is_element(n, "on_poweroff")) {
			err = parse_action(ctx, n, &config->on_poweroff);
		} else if (is_element(n, "on_reboot")) {
			err = parse_action(ctx, n, &config->on_reboot);
		} else if (is_element(n, "on_crash")) {
			err = parse_action(ctx, n, &config->on_crash);
		} else if (is_element(n, "devices")) {
			err = parse_devices(ctx, n);
		} else if (is_element(n, "title") || is_element(n, "description") ||
			   is_element(n, "metadata") || is_element(n, "features") ||
			   is_element(n, "clock") || is_element(n, "pm")) {
			kapsel_warn("domain XML '%s': ignoring /domain/%s", ctx->path, n->name);
		} else {
			err = xml_fail(ctx, "/domain/%s is not supported by Kapsel", n->name);
		}
	}
	if (err)
		return err;
	if (!config->kernel_path)
		return xml_fail(ctx, "/domain/os/kernel is missing; Kapsel boots an ELF kernel");
	if (config->memory_bytes % (2ull << 20) || config->memory_bytes < GUEST_MEMORY_MIN_BYTES ||
	    config->memory_bytes > GUEST_MEMORY_MAX_BYTES)
		return xml_fail(ctx, "/domain/memory must be a multiple of 2 MiB between 4 MiB and 64 GiB");
	return 0;
}

int vm_config_load_xml(const char *path, struct vm_config *config, char *error,
		       size_t error_len)
{
	struct xml_context ctx = { config, error, error_len, path };
	xmlDoc *doc = xmlReadFile(path, NULL, XML_PARSE_NONET | XML_PARSE_NOERROR |
					       XML_PARSE_NOWARNING);
	if (!doc) {
		const xmlError *x = xmlGetLastError();
		return xml_fail(&ctx, "not well-formed XML%s%s (line %d)", x ? ": " : "",
				x && x->message ? x->message : "", x ? x->line : 0);
	}
	int err = parse_domain(&ctx, xmlDocGetRootElement(doc));
	if (!err) {
		free(config->source_xml_path);
		config->source_xml_path = strdup(path);
	}
	xmlFreeDoc(doc);
	return err;
}
