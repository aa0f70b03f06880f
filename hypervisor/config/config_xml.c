/* libvirt domain XML to a VM definition and back, with libxml2. */
#define _GNU_SOURCE
#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlwriter.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config/config.h"
#include "config/config_xml_net.h"
#include "config/config_xml_rng.h"
#include "core/guest_memory.h"
#include "kapsel/abi.h"
#include "core/error_text.h"
#include "core/log.h"

/* Kapsel's own settings libvirt has no element for live in <metadata>. */

struct xml_context {
	struct vm_config *config;
	char *error;
	size_t error_len;
	const char *path;
	char *base_dir; /* directory of the XML file: relative paths start there */
	bool have_memory;
	uint64_t current_memory_bytes; /* 0: no <currentMemory> */
	bool saw_serial, saw_console_pv, saw_console_serial;
	char *chardev_path; /* file of the first file-backed <serial>/<console> */
	bool chardev_stdio; /* a stdio/pty one was seen */
	char *bootloader;   /* /domain/bootloader, if any (Xen's pygrub) */
	char *ignored;	    /* the paths warned about so far, one per line */
	/*
	 * Every problem is collected, so that a definition written for
	 * another hypervisor (virt-install's) is refused once with the whole
	 * list, not once per element.  line is where the element being read
	 * starts (0: the document as a whole).  The first problem is kept in
	 * first_problem (no allocation: most callers return at once); from
	 * the second on, problems holds one "  line N: DETAIL\n" for each.
	 */
	long line;
	unsigned problem_count;
	char first_problem[400];
	long first_problem_line;
	char *problems;
	size_t problems_len;
};

/* At most this many problems are listed; the count still says how many. */
#define XML_PROBLEMS_LISTED 40

/* ctx->error from the problems so far: one problem on one line, as it
 * always was; several as a count and one line each. */
static void xml_render_problems(struct xml_context *ctx)
{
	if (ctx->problem_count == 1) {
		snprintf(ctx->error, ctx->error_len, "domain XML '%s': %s", ctx->path,
			 ctx->first_problem);
		return;
	}
	unsigned unlisted = ctx->problem_count > XML_PROBLEMS_LISTED
				    ? ctx->problem_count - XML_PROBLEMS_LISTED
				    : 0;
	int n = snprintf(ctx->error, ctx->error_len,
			 "domain XML '%s': %u problems; Kapsel runs it once all are fixed:\n%s",
			 ctx->path, ctx->problem_count, ctx->problems ? ctx->problems : "");
	if (unlisted && n >= 0 && (size_t)n < ctx->error_len)
		snprintf(ctx->error + n, ctx->error_len - (size_t)n, "  ... and %u more\n",
			 unlisted);
	/* No trailing newline: the caller prints the message as one. */
	size_t len = strlen(ctx->error);
	if (len && ctx->error[len - 1] == '\n')
		ctx->error[len - 1] = '\0';
}

/* One "  line N: DETAIL" more in ctx->problems (nothing if out of memory). */
static void xml_list_problem(struct xml_context *ctx, long line, const char *detail)
{
	char *text = NULL;
	int n = line > 0 ? asprintf(&text, "  line %ld: %s\n", line, detail)
			 : asprintf(&text, "  %s\n", detail);
	if (n < 0)
		return;
	char *grown = realloc(ctx->problems, ctx->problems_len + (size_t)n + 1);
	if (grown) {
		memcpy(grown + ctx->problems_len, text, (size_t)n + 1);
		ctx->problems = grown;
		ctx->problems_len += (size_t)n;
	}
	free(text);
}

/* Record one problem (DETAIL names the element and the fix); -EINVAL. */
static int xml_problem(struct xml_context *ctx, const char *detail)
{
	ctx->problem_count++;
	if (ctx->problem_count == 1) {
		snprintf(ctx->first_problem, sizeof(ctx->first_problem), "%s", detail);
		ctx->first_problem_line = ctx->line;
	} else {
		if (ctx->problem_count == 2)
			xml_list_problem(ctx, ctx->first_problem_line, ctx->first_problem);
		if (ctx->problem_count <= XML_PROBLEMS_LISTED)
			xml_list_problem(ctx, ctx->line, detail);
	}
	/* Past the listed ones only the count changes: vm_config_parse_xml
	 * renders it once at the end (a 1 MiB file of bad elements must not
	 * cost a rendering each). */
	if (ctx->problem_count <= XML_PROBLEMS_LISTED)
		xml_render_problems(ctx);
	return -EINVAL;
}

static int xml_fail(struct xml_context *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int xml_fail(struct xml_context *ctx, const char *fmt, ...)
{
	char detail[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	return xml_problem(ctx, detail);
}

/* A device parser of its own file (config_xml_net.c, config_xml_rng.c)
 * wrote "domain XML 'PATH': DETAIL" into helper_error: record DETAIL. */
static int xml_helper_problem(struct xml_context *ctx, int err, const char *helper_error)
{
	if (!err)
		return 0;
	const char *detail = helper_error;
	size_t prefix = strlen("domain XML '") + strlen(ctx->path) + strlen("': ");
	if (strncmp(helper_error, "domain XML '", 12) == 0 && strlen(helper_error) >= prefix)
		detail = helper_error + prefix;
	return xml_problem(ctx, detail);
}

/* Warn that element_path is ignored, once per path (libvirt writes a
 * keyboard and a mouse, several controllers: one line says it). */
static void xml_ignore(struct xml_context *ctx, const char *element_path, const char *why)
{
	size_t len = strlen(element_path);
	for (const char *p = ctx->ignored; p && (p = strstr(p, element_path)); p++)
		if ((p == ctx->ignored || p[-1] == '\n') && p[len] == '\n')
			return;
	kapsel_warn("domain XML '%s': ignoring %s (%s)", ctx->path, element_path, why);
	size_t have = ctx->ignored ? strlen(ctx->ignored) : 0;
	char *grown = realloc(ctx->ignored, have + len + 2);
	if (grown) {
		memcpy(grown + have, element_path, len);
		grown[have + len] = '\n';
		grown[have + len + 1] = '\0';
		ctx->ignored = grown;
	}
}

/* Where node starts, for the problem list. */
static void xml_at(struct xml_context *ctx, const xmlNode *node)
{
	ctx->line = xmlGetLineNo(node);
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
	while (end > start &&
	       (end[-1] == ' ' || end[-1] == '\n' || end[-1] == '\t' || end[-1] == '\r'))
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

static bool attr_is(const xmlNode *node, const char *name, const char *value)
{
	char *text = node_attr(node, name);
	bool same = text && strcmp(text, value) == 0;
	free(text);
	return same;
}

/* A path from the XML: relative ones are relative to the XML file's folder. */
static char *resolve_path(struct xml_context *ctx, char *path)
{
	if (!path || path[0] == '/' || !ctx->base_dir)
		return path;
	char *joined = NULL;
	if (asprintf(&joined, "%s/%s", ctx->base_dir, path) < 0)
		joined = NULL;
	free(path);
	return joined;
}

/* <memory unit='MiB'>64</memory>: libvirt's default unit is KiB. */
static int parse_memory(struct xml_context *ctx, const xmlNode *node, uint64_t *bytes)
{
	char *text = node_text(node), *unit = node_attr(node, "unit"), *end;
	int err = 0;
	errno = 0;
	unsigned long long value = strtoull(text, &end, 10);
	uint64_t scale = 1024;
	if (!*text || *end || errno || text[0] == '-')
		err = xml_fail(ctx, "/domain/%s value '%s' is not a whole number", node->name,
			       text);
	if (!err && unit) {
		static const struct {
			const char *name;
			uint64_t scale;
		} units[] = {
			{ "b", 1 },	     { "bytes", 1 },	    { "KB", 1000 },
			{ "k", 1024 },	     { "KiB", 1024 },	    { "MB", 1000000 },
			{ "M", 1 << 20 },    { "MiB", 1 << 20 },    { "GB", 1000000000 },
			{ "G", 1 << 30 },    { "GiB", 1 << 30 },    { "TB", 1000000000000ull },
			{ "T", 1ull << 40 }, { "TiB", 1ull << 40 },
		};
		bool found = false;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (strcmp(unit, units[i].name) == 0) {
				scale = units[i].scale;
				found = true;
			}
		if (!found)
			err = xml_fail(ctx, "/domain/%s unit='%s' is unknown; use KiB, MiB or GiB",
				       node->name, unit);
	}
	if (!err && value > UINT64_MAX / scale)
		err = xml_fail(ctx, "/domain/%s value is too large", node->name);
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
	enum vm_lifecycle_action parsed;
	/* Only a crashed guest can be kept for inspection. */
	if (vm_lifecycle_action_parse(text, &parsed) == 0 &&
	    (parsed != VM_ACTION_PRESERVE || is_element(node, "on_crash")))
		*action = parsed;
	else
		err = xml_fail(ctx, "/domain/%s '%s' is not supported; use destroy or restart%s",
			       node->name, text,
			       is_element(node, "on_crash") ? " (or preserve)" : "");
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
			return xml_fail(ctx, "/domain/uuid '%s' is not a UUID", text);
		if (n >= 32)
			return xml_fail(ctx, "/domain/uuid '%s' is too long", text);
		if (n % 2 == 0)
			uuid[n / 2] = (uint8_t)(digit << 4);
		else
			uuid[n / 2] |= (uint8_t)digit;
		n++;
	}
	if (n != 32)
		return xml_fail(ctx, "/domain/uuid '%s' must have 32 hex digits", text);
	return 0;
}

static int parse_os(struct xml_context *ctx, const xmlNode *os)
{
	int result = 0;
	char *firmware = node_attr(os, "firmware");
	if (firmware)
		result = xml_fail(
			ctx,
			"/domain/os firmware='%s' is not supported: Kapsel boots an ELF kernel directly (use <kernel>)",
			firmware);
	free(firmware);
	for (const xmlNode *n = os->children; n; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		xml_at(ctx, n);
		int err = 0;
		if (is_element(n, "kernel")) {
			free(ctx->config->kernel_path);
			ctx->config->kernel_path = resolve_path(ctx, node_text(n));
		} else if (is_element(n, "cmdline")) {
			char *cmdline = node_text(n);
			if (strlen(cmdline) >= KAPSEL_CMDLINE_MAX) {
				free(cmdline);
				err = xml_fail(ctx, "/domain/os/cmdline is longer than %u bytes",
					       KAPSEL_CMDLINE_MAX - 1);
			} else {
				free(ctx->config->cmdline);
				ctx->config->cmdline = cmdline;
			}
		} else if (is_element(n, "type")) {
			char *arch = node_attr(n, "arch"), *text = node_text(n);
			bool bad_arch = arch && strcmp(arch, "x86_64") != 0;
			/* hvm (KVM, Xen HVM), xen and linux (Xen PV; libvirt's
			 * libxl driver writes linux): all run as a Kapsel guest. */
			bool bad_type = strcmp(text, "hvm") != 0 && strcmp(text, "xen") != 0 &&
					strcmp(text, "linux") != 0;
			if (bad_arch)
				err = xml_fail(ctx,
					       "/domain/os/type arch='%s' is not supported; use x86_64",
					       arch);
			else if (bad_type)
				err = xml_fail(ctx,
					       "/domain/os/type '%s' is not supported; use hvm",
					       text);
			free(arch);
			free(text);
		} else if (is_element(n, "boot") || is_element(n, "bootmenu")) {
			/* virt-install writes <boot dev='hd'/> into every
			 * definition; with <kernel> the boot order picks nothing. */
			xml_ignore(ctx,
				   is_element(n, "boot") ? "/domain/os/boot"
							 : "/domain/os/bootmenu",
				   "Kapsel boots /domain/os/kernel, there is no boot order");
		} else if (is_element(n, "initrd")) {
			err = xml_fail(
				ctx,
				"/domain/os/initrd is not supported: Kapsel boots an ELF kernel directly (use <kernel>)");
		} else if (is_element(n, "loader") || is_element(n, "nvram") ||
			   is_element(n, "smbios") || is_element(n, "bios") ||
			   is_element(n, "dtb") || is_element(n, "acpi") || is_element(n, "init") ||
			   is_element(n, "firmware")) {
			err = xml_fail(
				ctx,
				"/domain/os/%s is not supported: Kapsel boots an ELF kernel directly (use <kernel>)",
				n->name);
		} else {
			err = xml_fail(ctx, "/domain/os/%s is not supported by Kapsel; remove it",
				       n->name);
		}
		if (err)
			result = err;
	}
	return result;
}

static int parse_iotune(struct xml_context *ctx, const xmlNode *iotune, struct vm_disk_config *disk)
{
	int result = 0;
	for (const xmlNode *t = iotune->children; t; t = t->next) {
		if (t->type != XML_ELEMENT_NODE)
			continue;
		char *text = node_text(t), *end;
		errno = 0;
		unsigned long long v = strtoull(text, &end, 10);
		int err = 0;
		if (!*text || *end || errno || text[0] == '-')
			err = xml_fail(ctx,
				       "/domain/devices/disk/iotune/%s '%s' is not a whole number",
				       t->name, text);
		else if (is_element(t, "total_iops_sec"))
			disk->ops_limit.rate_per_second = v;
		else if (is_element(t, "total_iops_sec_max"))
			disk->ops_limit.burst = v;
		else if (is_element(t, "total_bytes_sec"))
			disk->bytes_limit.rate_per_second = v;
		else if (is_element(t, "total_bytes_sec_max"))
			disk->bytes_limit.burst = v;
		else
			err = xml_fail(
				ctx,
				"/domain/devices/disk/iotune/%s is not supported; use total_iops_sec, total_iops_sec_max, total_bytes_sec, total_bytes_sec_max",
				t->name);
		free(text);
		if (err)
			result = err;
	}
	if (result)
		return result;
	if ((disk->ops_limit.burst && !disk->ops_limit.rate_per_second) ||
	    (disk->bytes_limit.burst && !disk->bytes_limit.rate_per_second))
		return xml_fail(
			ctx,
			"/domain/devices/disk/iotune: a *_max burst needs its rate (total_iops_sec or total_bytes_sec) too");
	return 0;
}

static int parse_disk_driver(struct xml_context *ctx, const xmlNode *n, struct vm_disk_config *disk)
{
	int err = 0;
	char *cache = node_attr(n, "cache"), *format = node_attr(n, "type");
	if (cache && (strcmp(cache, "none") == 0 || strcmp(cache, "directsync") == 0))
		disk->cache = VM_DISK_CACHE_NONE;
	else if (cache && strcmp(cache, "writeback") != 0 && strcmp(cache, "default") != 0)
		err = xml_fail(
			ctx,
			"/domain/devices/disk/driver cache='%s' is not supported; use none or writeback",
			cache);
	/* The format is the definition's word, never guessed from the image. */
	if (!err && format && strcmp(format, "raw") == 0)
		disk->format = VM_DISK_FORMAT_RAW;
	else if (!err && format && strcmp(format, "kovl") == 0)
		disk->format = VM_DISK_FORMAT_OVERLAY;
	else if (!err && format)
		err = xml_fail(
			ctx,
			"/domain/devices/disk/driver type='%s' is not supported; use raw or kovl (a Kapsel overlay)",
			format);
	/* queues='N': libvirt's spelling for virtio-blk's queue count; the
	 * PV block device's rings (blk.h "Several queues"). */
	char *queues = node_attr(n, "queues"), *end = NULL;
	if (!err && queues) {
		unsigned long count = strtoul(queues, &end, 10);
		if (!*queues || *end || count < 1 || count > KAPSEL_MAX_VCPUS)
			err = xml_fail(ctx, "/domain/devices/disk/driver queues='%s' must be 1-%u",
				       queues, KAPSEL_MAX_VCPUS);
		else
			disk->queues = (uint32_t)count;
	}
	free(queues);
	free(cache);
	free(format);
	/* name, io, discard, detect_zeroes are host-side choices: accepted. */
	return err;
}

static int parse_disk(struct xml_context *ctx, const xmlNode *node)
{
	struct vm_config *config = ctx->config;
	char *type = node_attr(node, "type"), *device = node_attr(node, "device");
	int err = 0;
	if (!type || strcmp(type, "file") != 0)
		err = xml_fail(ctx,
			       "/domain/devices/disk type='%s' is not supported; use type='file'",
			       type ? type : "");
	else if (device && strcmp(device, "disk") != 0)
		err = xml_fail(
			ctx,
			"/domain/devices/disk device='%s' is not supported: Kapsel has only disks; remove it, or attach the image as device='disk' with <readonly/>",
			device);
	free(type);
	free(device);
	if (err)
		return err;
	if (config->disk_count == VM_CONFIG_MAX_DISKS)
		return xml_fail(ctx, "/domain/devices/disk: more than %u disks",
				VM_CONFIG_MAX_DISKS);
	struct vm_disk_config disk = { 0 };
	char *target_dev = NULL;
	bool bad = false; /* a child was refused: report them all, then drop the disk */
	for (const xmlNode *n = node->children; n; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		xml_at(ctx, n);
		if (err)
			bad = true;
		err = 0;
		if (is_element(n, "source")) {
			free(disk.path);
			disk.path = resolve_path(ctx, node_attr(n, "file"));
		} else if (is_element(n, "readonly")) {
			disk.readonly = true;
		} else if (is_element(n, "driver")) {
			err = parse_disk_driver(ctx, n, &disk);
		} else if (is_element(n, "target")) {
			char *bus = node_attr(n, "bus");
			free(target_dev);
			target_dev = node_attr(n, "dev");
			if (!bus || strcmp(bus, "xen") == 0)
				disk.bus = VM_DISK_BUS_PV;
			else if (strcmp(bus, "ide") == 0)
				disk.bus = VM_DISK_BUS_ATA;
			else
				err = xml_fail(
					ctx,
					"/domain/devices/disk/target bus='%s' is not supported; use bus='xen' (PV) or bus='ide' (emulated ATA)",
					bus);
			free(bus);
		} else if (is_element(n, "iotune")) {
			err = parse_iotune(ctx, n, &disk);
		} else if (is_element(n, "alias") || is_element(n, "address") ||
			   is_element(n, "boot")) {
			xml_ignore(ctx,
				   is_element(n, "alias")     ? "/domain/devices/disk/alias"
				   : is_element(n, "address") ? "/domain/devices/disk/address"
							      : "/domain/devices/disk/boot",
				   "Kapsel numbers disks in the order they are listed");
		} else if (is_element(n, "shareable")) {
			err = xml_fail(
				ctx,
				"/domain/devices/disk/shareable is not supported: Kapsel locks a writable image for one VM; use <readonly/> on every VM that shares it");
		} else {
			err = xml_fail(ctx,
				       "/domain/devices/disk/%s is not supported by Kapsel; remove it",
				       n->name);
		}
	}
	xml_at(ctx, node);
	if (bad && !err)
		err = -EINVAL;
	if (!err && !disk.path)
		err = xml_fail(ctx, "/domain/devices/disk needs <source file='...'/>");
	if (!err && !target_dev)
		err = xml_fail(ctx, "/domain/devices/disk needs <target dev='...' bus='xen|ide'/>");
	if (!err && disk.bus == VM_DISK_BUS_ATA && strcmp(target_dev, "hda") != 0)
		err = xml_fail(
			ctx,
			"/domain/devices/disk/target dev='%s' bus='ide': Kapsel emulates one ATA drive, the primary master; use dev='hda'",
			target_dev);
	for (unsigned i = 0; !err && i < config->disk_count; i++) {
		if (disk.bus == VM_DISK_BUS_ATA && config->disks[i].bus == VM_DISK_BUS_ATA)
			err = xml_fail(
				ctx,
				"/domain/devices/disk/target: two disks with bus='ide'; Kapsel emulates one ATA drive, attach the others with bus='xen'");
	}
	if (!err) {
		/* The target names of earlier disks, for the duplicate check. */
		for (const xmlNode *prev = node->prev; prev && !err; prev = prev->prev) {
			if (!is_element(prev, "disk"))
				continue;
			for (const xmlNode *t = prev->children; t; t = t->next)
				if (is_element(t, "target") && attr_is(t, "dev", target_dev))
					err = xml_fail(
						ctx,
						"/domain/devices/disk/target dev='%s' is used by two disks",
						target_dev);
		}
	}
	free(target_dev);
	if (err) {
		free(disk.path);
		return err;
	}
	config->disks[config->disk_count++] = disk;
	return 0;
}

/* <serial> (the 16550 UART) and <console> (PV console with target type
 * 'xen', or a view of the serial port): both end in the one console sink. */
static int parse_chardev(struct xml_context *ctx, const xmlNode *node)
{
	char *type = node_attr(node, "type");
	int err = 0;
	char *path = NULL;
	if (!type || strcmp(type, "stdio") == 0 || strcmp(type, "pty") == 0) {
		if (type && strcmp(type, "pty") == 0)
			xml_ignore(ctx, "pty in /domain/devices/console or serial",
				   "the console is on kapsel's standard output and 'kapsel console NAME'");
		ctx->chardev_stdio = true;
	} else if (strcmp(type, "file") == 0) {
		for (const xmlNode *s = node->children; s; s = s->next)
			if (is_element(s, "source")) {
				free(path);
				path = resolve_path(ctx, node_attr(s, "path"));
			}
		if (!path)
			err = xml_fail(ctx,
				       "/domain/devices/%s type='file' needs <source path='...'/>",
				       node->name);
	} else if (strcmp(type, "null") == 0) {
		path = strdup("/dev/null");
	} else {
		err = xml_fail(
			ctx,
			"/domain/devices/%s type='%s' is not supported; use stdio, pty, file or null",
			node->name, type);
	}
	free(type);
	for (const xmlNode *t = node->children; t && !err; t = t->next) {
		if (!is_element(t, "target"))
			continue;
		char *target = node_attr(t, "type");
		if (is_element(node, "console")) {
			if (!target || strcmp(target, "xen") == 0)
				ctx->saw_console_pv = true;
			else if (strcmp(target, "serial") == 0)
				ctx->saw_console_serial = true;
			else
				err = xml_fail(
					ctx,
					"/domain/devices/console/target type='%s' is not supported; use xen (PV console) or serial",
					target);
		} else if (target && strcmp(target, "isa-serial") != 0) {
			err = xml_fail(
				ctx,
				"/domain/devices/serial/target type='%s' is not supported; Kapsel emulates an ISA 16550",
				target);
		}
		free(target);
	}
	if (is_element(node, "serial"))
		ctx->saw_serial = true;
	else if (!ctx->saw_console_pv && !ctx->saw_console_serial)
		ctx->saw_console_pv = true; /* a <console> without <target> */
	if (!err && path) {
		if (ctx->chardev_path && strcmp(ctx->chardev_path, path) != 0)
			err = xml_fail(
				ctx,
				"/domain/devices/%s/source path='%s' differs from '%s': Kapsel has one console, give all <serial>/<console> the same file",
				node->name, path, ctx->chardev_path);
		else if (!ctx->chardev_path) {
			ctx->chardev_path = path;
			path = NULL;
		}
	}
	free(path);
	return err;
}

static int parse_devices(struct xml_context *ctx, const xmlNode *devices)
{
	int result = 0;
	for (const xmlNode *n = devices->children; n; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		xml_at(ctx, n);
		int err = 0;
		char helper_error[512];
		if (is_element(n, "disk")) {
			err = parse_disk(ctx, n);
		} else if (is_element(n, "interface")) {
			err = xml_helper_problem(ctx,
						 config_xml_parse_interface(n, ctx->config,
									    ctx->path, helper_error,
									    sizeof(helper_error)),
						 helper_error);
		} else if (is_element(n, "rng")) {
			err = xml_helper_problem(ctx,
						 config_xml_parse_rng(n, ctx->config, ctx->path,
								      helper_error,
								      sizeof(helper_error)),
						 helper_error);
		} else if (is_element(n, "console") || is_element(n, "serial")) {
			err = parse_chardev(ctx, n);
		} else if (is_element(n, "emulator")) {
			xml_ignore(ctx, "/domain/devices/emulator", "Kapsel is the emulator");
		} else if (is_element(n, "controller")) {
			xml_ignore(ctx, "/domain/devices/controller",
				   "Kapsel's devices need no controller");
		} else if (is_element(n, "memballoon")) {
			/* libvirt adds one to every KVM and Xen domain; with
			 * currentMemory equal to memory (checked) it would never
			 * take memory away, so there is nothing to emulate. */
			if (!attr_is(n, "model", "none"))
				xml_ignore(ctx, "/domain/devices/memballoon",
					   "Kapsel has no balloon: the guest keeps all of /domain/memory");
		} else if (is_element(n, "input")) {
			/* libvirt adds a keyboard and a mouse beside a display:
			 * without one they have nothing to do. */
			xml_ignore(ctx, "/domain/devices/input",
				   "Kapsel has no display; the guest's console is its input");
		} else if (is_element(n, "graphics") || is_element(n, "video")) {
			err = xml_fail(
				ctx,
				"/domain/devices/%s is not supported: Kapsel has no display (the console is kapsel's standard output and 'kapsel console NAME'); remove it",
				n->name);
		} else {
			err = xml_fail(ctx,
				       "/domain/devices/%s is not supported by Kapsel; remove it",
				       n->name);
		}
		if (err)
			result = err;
	}
	return result;
}

/* <kapsel:disk index='N' poll_us='US'/>: the PV backend's polling. */
static int parse_kapsel_disk(struct xml_context *ctx, const xmlNode *d)
{
	char *index = node_attr(d, "index"), *poll = node_attr(d, "poll_us"), *end;
	int err = 0;
	errno = 0;
	unsigned long i = index ? strtoul(index, &end, 10) : 0;
	if (!index || !*index || *end || errno || index[0] == '-' || i >= ctx->config->disk_count)
		err = xml_fail(
			ctx,
			"/domain/metadata/kapsel:domain/disk index='%s' names no disk (metadata must come after <devices>)",
			index ? index : "");
	unsigned long us = poll ? strtoul(poll, &end, 10) : 0;
	if (!err && (!poll || !*poll || *end || poll[0] == '-' || us > 1000000))
		err = xml_fail(ctx,
			       "/domain/metadata/kapsel:domain/disk poll_us='%s' must be 0-1000000",
			       poll ? poll : "");
	if (!err) {
		ctx->config->disks[i].poll = us > 0;
		ctx->config->disks[i].poll_us = (uint32_t)us;
	}
	free(index);
	free(poll);
	return err;
}

/* One pass over <kapsel:domain>'s children: socket interfaces first (they
 * take positions among the interfaces), then what refers to devices. */
static int parse_kapsel_domain(struct xml_context *ctx, const xmlNode *domain, bool sockets)
{
	for (const xmlNode *d = domain->children; d; d = d->next) {
		if (d->type != XML_ELEMENT_NODE)
			continue;
		int err = 0;
		char helper_error[512];
		if (!d->ns || !d->ns->href ||
		    strcmp((const char *)d->ns->href, VM_CONFIG_XML_NAMESPACE) != 0)
			err = xml_fail(
				ctx,
				"/domain/metadata/kapsel:domain/%s is not in the Kapsel namespace '%s'",
				d->name, VM_CONFIG_XML_NAMESPACE);
		else if (is_element(d, "interface"))
			err = xml_helper_problem(ctx,
						 config_xml_parse_kapsel_interface(
							 d, sockets, ctx->config, ctx->path,
							 helper_error, sizeof(helper_error)),
						 helper_error);
		else if (sockets)
			continue;
		else if (is_element(d, "disk"))
			err = parse_kapsel_disk(ctx, d);
		else if (is_element(d, "rng"))
			err = xml_helper_problem(ctx,
						 config_xml_parse_kapsel_rng(d, ctx->config,
									     ctx->path,
									     helper_error,
									     sizeof(helper_error)),
						 helper_error);
		else
			err = xml_fail(
				ctx,
				"/domain/metadata/kapsel:domain/%s is unknown; Kapsel knows disk, interface and rng",
				d->name);
		if (err)
			return err;
	}
	return 0;
}

/* <metadata><kapsel:domain xmlns:kapsel=NS>: Kapsel's settings that
 * libvirt has no element for (docs/state.md); read after <devices>. */
static int parse_metadata(struct xml_context *ctx, const xmlNode *metadata)
{
	const xmlNode *kapsel = NULL;
	for (const xmlNode *n = metadata->children; n; n = n->next) {
		if (n->type != XML_ELEMENT_NODE || !n->ns || !n->ns->href)
			continue;
		const char *href = (const char *)n->ns->href;
		if (strcmp(href, VM_CONFIG_XML_NAMESPACE) != 0) {
			if (strncmp(href, VM_CONFIG_XML_NAMESPACE_PREFIX,
				    strlen(VM_CONFIG_XML_NAMESPACE_PREFIX)) == 0)
				return xml_fail(
					ctx,
					"/domain/metadata/%s is in namespace '%s', another version of Kapsel's; this Kapsel reads '%s' (use the Kapsel that wrote it)",
					n->name, href, VM_CONFIG_XML_NAMESPACE);
			continue; /* other applications' metadata */
		}
		if (!is_element(n, "domain"))
			return xml_fail(ctx,
					"/domain/metadata/kapsel:%s is unknown; use kapsel:domain",
					n->name);
		if (kapsel)
			return xml_fail(ctx, "/domain/metadata has two kapsel:domain elements");
		kapsel = n;
	}
	if (!kapsel)
		return 0;
	int err = parse_kapsel_domain(ctx, kapsel, true);
	return err ? err : parse_kapsel_domain(ctx, kapsel, false);
}

/*
 * <vcpu placement='static' current='M'>N</vcpu>: N vCPUs, 1 to
 * VM_CONFIG_MAX_VCPUS.  vCPU 0 boots and the guest brings the others up
 * itself (KAPSEL_HC_VCPU_UP); libvirt's current= (fewer online, the rest
 * for the host to hot-plug later) has no meaning here, so it must equal N.
 */
static int parse_vcpu(struct xml_context *ctx, const xmlNode *node)
{
	char *text = node_text(node), *current = node_attr(node, "current");
	unsigned count = 0, online = 0;
	int err = 0;
	if (vm_config_parse_vcpus(text, &count) < 0)
		err = xml_fail(ctx, "/domain/vcpu is '%s'; Kapsel runs 1 to %u vCPUs per VM", text,
			       VM_CONFIG_MAX_VCPUS);
	else if (current && vm_config_parse_vcpus(current, &online) < 0)
		err = xml_fail(ctx, "/domain/vcpu current='%s' is not a vCPU count from 1 to %u",
			       current, VM_CONFIG_MAX_VCPUS);
	else if (current && online != count)
		err = xml_fail(
			ctx,
			"/domain/vcpu current='%s' differs from the count %u; Kapsel has no vCPU hot-plug (the guest brings up the vCPUs it wants), remove current= or make it %u",
			current, count, count);
	else
		ctx->config->vcpus = count;
	free(text);
	free(current);
	return err;
}

static int parse_name(struct xml_context *ctx, const xmlNode *node)
{
	char *name = node_text(node);
	char detail[256];
	int err = 0;
	if (vm_config_check_name(name, detail, sizeof(detail)) < 0)
		err = xml_fail(ctx, "/domain/name: %s", detail);
	else
		snprintf(ctx->config->name, sizeof(ctx->config->name), "%s", name);
	free(name);
	return err;
}

/* Top-level elements that only inform or tune the host side. */
static const char *const ignored_top_level[] = {
	"title",     "description", "features",	      "clock",	   "pm",       "seclabel",
	"iothreads", "cputune",	    "memtune",	      "blkiotune", "numatune", "memoryBacking",
	"resource",  "perf",	    "on_lockfailure", "keywrap",   NULL,
};

/*
 * <domain type='...'>: kvm (and kapsel) as they are.  xen is accepted for
 * a paravirtualized guest's definition (virt-install --paravirt), with one
 * warning for what differs: Kapsel runs the kernel on KVM through its own
 * PV interface (docs/abi.md), so only a kernel built for Kapsel boots, not
 * a Xen PV kernel; a disk on bus='xen' is Kapsel's PV block device, the
 * console target 'xen' its PV console.
 */
static int parse_domain_type(struct xml_context *ctx, const xmlNode *root)
{
	char *type = node_attr(root, "type");
	int err = 0;
	if (type && strcmp(type, "xen") == 0)
		kapsel_warn("domain XML '%s': /domain type='xen' runs as a Kapsel guest on KVM: the kernel must be built for Kapsel's PV interface (a Xen PV kernel does not boot), bus='xen' disks and the 'xen' console are Kapsel's PV devices, and kapsel dumpxml writes type='kvm'",
			    ctx->path);
	else if (!type || (strcmp(type, "kvm") != 0 && strcmp(type, "kapsel") != 0))
		err = xml_fail(
			ctx,
			"/domain type='%s' is not supported; use type='kvm' (or 'xen' for a paravirtualized guest)",
			type ? type : "");
	free(type);
	return err;
}

/* One top-level element; -EINVAL after recording a problem. */
static int parse_top_level(struct xml_context *ctx, const xmlNode *n, bool *have_name)
{
	struct vm_config *config = ctx->config;
	if (is_element(n, "name")) {
		*have_name = true;
		return parse_name(ctx, n);
	}
	if (is_element(n, "uuid")) {
		char *text = node_text(n);
		int err = parse_uuid(ctx, text, config->uuid);
		config->has_uuid = !err;
		free(text);
		return err;
	}
	if (is_element(n, "memory")) {
		ctx->have_memory = true;
		return parse_memory(ctx, n, &config->memory_bytes);
	}
	if (is_element(n, "currentMemory"))
		return parse_memory(ctx, n, &ctx->current_memory_bytes);
	if (is_element(n, "maxMemory"))
		return xml_fail(ctx,
				"/domain/maxMemory is not supported: Kapsel has no memory hotplug");
	if (is_element(n, "vcpu"))
		return parse_vcpu(ctx, n);
	if (is_element(n, "os"))
		return parse_os(ctx, n);
	if (is_element(n, "on_poweroff"))
		return parse_action(ctx, n, &config->on_poweroff);
	if (is_element(n, "on_reboot"))
		return parse_action(ctx, n, &config->on_reboot);
	if (is_element(n, "on_crash"))
		return parse_action(ctx, n, &config->on_crash);
	if (is_element(n, "devices"))
		return parse_devices(ctx, n);
	if (is_element(n, "metadata"))
		return 0; /* read after the devices it refers to */
	if (is_element(n, "bootloader")) {
		/* Xen's pygrub: whether that is a problem depends on <kernel>. */
		free(ctx->bootloader);
		ctx->bootloader = node_text(n);
		return 0;
	}
	if (is_element(n, "bootloader_args"))
		return 0; /* goes with <bootloader> */
	for (const char *const *i = ignored_top_level; *i; i++) {
		if (is_element(n, *i)) {
			char where[96];
			snprintf(where, sizeof(where), "/domain/%s", n->name);
			xml_ignore(ctx, where, "it does not change what the guest sees on Kapsel");
			return 0;
		}
	}
	return xml_fail(ctx, "/domain/%s is not supported by Kapsel; remove it", n->name);
}

static int parse_domain(struct xml_context *ctx, const xmlNode *root)
{
	struct vm_config *config = ctx->config;
	bool have_name = false;

	if (!is_element(root, "domain"))
		return xml_fail(ctx, "root element is <%s>, expected <domain>", root->name);
	xml_at(ctx, root);
	parse_domain_type(ctx, root);
	for (const xmlNode *n = root->children; n; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		xml_at(ctx, n);
		parse_top_level(ctx, n, &have_name);
	}
	/* Kapsel's metadata refers to devices by their index: after a refused
	 * device the indices are off, and its messages would mislead. */
	if (ctx->problem_count == 0) {
		for (const xmlNode *n = root->children; n; n = n->next) {
			if (is_element(n, "metadata")) {
				xml_at(ctx, n);
				parse_metadata(ctx, n);
			}
		}
	}
	/* What is missing or inconsistent is about the document as a whole. */
	ctx->line = 0;
	if (!have_name)
		xml_fail(ctx, "/domain/name is missing; every VM needs a unique name");
	if (!config->kernel_path && ctx->bootloader)
		xml_fail(ctx,
			 "/domain/bootloader '%s' is not supported: Kapsel runs no bootloader; copy the guest's kernel out of its image and name it in /domain/os/kernel",
			 ctx->bootloader);
	else if (!config->kernel_path)
		xml_fail(ctx, "/domain/os/kernel is missing; Kapsel boots an ELF kernel");
	else if (ctx->bootloader)
		xml_ignore(ctx, "/domain/bootloader", "Kapsel boots /domain/os/kernel directly");
	if (!ctx->have_memory)
		xml_fail(ctx, "/domain/memory is missing");
	else if (ctx->current_memory_bytes && ctx->current_memory_bytes != config->memory_bytes)
		xml_fail(ctx,
			 "/domain/currentMemory differs from /domain/memory; Kapsel has no balloon, make them equal");
	else if (config->memory_bytes % (2ull << 20) ||
		 config->memory_bytes < GUEST_MEMORY_MIN_BYTES ||
		 config->memory_bytes > GUEST_MEMORY_MAX_BYTES)
		xml_fail(ctx,
			 "/domain/memory must be a multiple of 2 MiB between 4 MiB and 64 GiB");
	/* Which consoles the guest is offered: a <serial> alone means the
	 * UART only; a PV console (console target 'xen') means both. */
	if (ctx->saw_serial && !ctx->saw_console_pv)
		config->console_mode = VM_CONSOLE_UART;
	else if (ctx->saw_console_serial && !ctx->saw_console_pv)
		config->console_mode = VM_CONSOLE_UART;
	else
		config->console_mode = VM_CONSOLE_AUTO;
	if (ctx->chardev_path && ctx->chardev_stdio)
		xml_fail(ctx,
			 "/domain/devices: one console is a file ('%s') and another stdio; Kapsel has one console, make them the same",
			 ctx->chardev_path);
	if (ctx->problem_count)
		return -EINVAL;
	if (ctx->chardev_path) {
		free(config->console_output_path);
		config->console_output_path = ctx->chardev_path;
		ctx->chardev_path = NULL;
	}
	return 0;
}

/* libxml2's messages end in a newline: the first line, trimmed. */
static void libxml_message(char *out, size_t out_len, const xmlError *x)
{
	out[0] = '\0';
	if (x && x->message)
		snprintf(out, out_len, ": %s", x->message);
	size_t len = strlen(out);
	while (len && (out[len - 1] == '\n' || out[len - 1] == ' '))
		out[--len] = '\0';
}

int vm_config_parse_xml(const char *data, size_t length_bytes, const char *name,
			const char *base_dir, struct vm_config *config, char *error,
			size_t error_len)
{
	struct xml_context ctx = {
		.config = config, .error = error, .error_len = error_len, .path = name
	};
	if (length_bytes > VM_CONFIG_XML_MAX_BYTES)
		return xml_fail(&ctx, "is %zu bytes, more than a definition may be (%u)",
				length_bytes, VM_CONFIG_XML_MAX_BYTES);
	if (length_bytes == 0)
		return xml_fail(&ctx, "is empty; a definition needs a <domain> element");
	/* Domain XML needs no DTD: without one there are no entities to
	 * expand (billion laughs) and no external ones to fetch (XXE).  The
	 * check after parsing catches a DOCTYPE in another encoding. */
	if (memmem(data, length_bytes, "<!DOCTYPE", 9) || memmem(data, length_bytes, "<!ENTITY", 8))
		return xml_fail(&ctx,
				"has a <!DOCTYPE> or <!ENTITY>; domain XML needs none, remove it");
	if (base_dir) {
		ctx.base_dir = strdup(base_dir);
		if (!ctx.base_dir)
			return -ENOMEM;
	}
	/* No network, no DTD loading, no entity substitution (no
	 * XML_PARSE_NOENT), no XInclude (never processed), libxml2's own
	 * size limits (no XML_PARSE_HUGE). */
	xmlDoc *doc = xmlReadMemory(data, (int)length_bytes, NULL, NULL,
				    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	int err;
	if (!doc) {
		const xmlError *x = xmlGetLastError();
		char message[256];
		libxml_message(message, sizeof(message), x);
		err = xml_fail(&ctx, "not well-formed XML%s (line %d)", message, x ? x->line : 0);
	} else if (doc->intSubset || doc->extSubset) {
		err = xml_fail(&ctx, "has a <!DOCTYPE>; domain XML needs none, remove it");
		xmlFreeDoc(doc);
	} else {
		xmlNode *root = xmlDocGetRootElement(doc);
		err = root ? parse_domain(&ctx, root)
			   : xml_fail(&ctx, "has no root element; expected <domain>");
		xmlFreeDoc(doc);
	}
	if (ctx.problem_count > XML_PROBLEMS_LISTED)
		xml_render_problems(&ctx);
	free(ctx.chardev_path);
	free(ctx.base_dir);
	free(ctx.bootloader);
	free(ctx.ignored);
	free(ctx.problems);
	return err;
}

/* The whole file at path, at most VM_CONFIG_XML_MAX_BYTES (+1 to notice more). */
static int read_xml_file(const char *path, char **data, size_t *length, char *error,
			 size_t error_len)
{
	struct xml_context ctx = { .error = error, .error_len = error_len, .path = path };
	FILE *in = fopen(path, "re");
	if (!in)
		return xml_fail(&ctx, "cannot read it: %s", strerror(errno));
	size_t capacity = VM_CONFIG_XML_MAX_BYTES + 1;
	char *buffer = malloc(capacity);
	if (!buffer) {
		fclose(in);
		return -ENOMEM;
	}
	size_t got = fread(buffer, 1, capacity, in);
	int failed = ferror(in);
	int saved = errno;
	fclose(in);
	if (failed) {
		free(buffer);
		return xml_fail(&ctx, "cannot read it: %s", strerror(saved));
	}
	*data = buffer;
	*length = got;
	return 0;
}

int vm_config_load_xml(const char *path, struct vm_config *config, char *error, size_t error_len)
{
	char *base_dir = NULL;
	char *copy = strdup(path);
	if (!copy)
		return -ENOMEM;
	char *slash = strrchr(copy, '/');
	if (slash == copy)
		base_dir = strdup("/");
	else if (slash) {
		*slash = '\0';
		base_dir = strdup(copy);
	} /* else the current directory: relative paths stay relative */
	free(copy);
	char *data = NULL;
	size_t length = 0;
	int err = read_xml_file(path, &data, &length, error, error_len);
	if (!err)
		err = vm_config_parse_xml(data, length, path, base_dir, config, error, error_len);
	free(data);
	free(base_dir);
	if (!err) {
		free(config->source_xml_path);
		config->source_xml_path = strdup(path);
	}
	return err;
}

/* ---- Writing: the definition as libvirt domain XML ----------------------- */

/* path made absolute against the current directory (the file need not exist). */
static char *absolute_path(const char *path)
{
	if (!path)
		return NULL;
	char *resolved = realpath(path, NULL);
	if (resolved)
		return resolved;
	if (path[0] == '/')
		return strdup(path);
	char cwd[4096];
	if (!getcwd(cwd, sizeof(cwd)))
		return strdup(path);
	char *joined = NULL;
	if (asprintf(&joined, "%s/%s", cwd, path) < 0)
		return NULL;
	return joined;
}

#define W(call)                    \
	do {                       \
		if ((call) < 0)    \
			goto fail; \
	} while (0)

static int write_element_u64(xmlTextWriterPtr w, const char *name, uint64_t value)
{
	return xmlTextWriterWriteFormatElement(w, BAD_CAST name, "%llu", (unsigned long long)value);
}

static int write_disk(xmlTextWriterPtr w, const struct vm_disk_config *disk, unsigned index,
		      unsigned unit)
{
	char *path = absolute_path(disk->path);
	char dev[16];
	if (disk->bus == VM_DISK_BUS_ATA)
		snprintf(dev, sizeof(dev), "hd%c", 'a' + unit);
	else
		snprintf(dev, sizeof(dev), "xvd%c", 'a' + unit);
	(void)index;
	W(xmlTextWriterStartElement(w, BAD_CAST "disk"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "type", BAD_CAST "file"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "device", BAD_CAST "disk"));
	W(xmlTextWriterStartElement(w, BAD_CAST "driver"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "name", BAD_CAST "qemu"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "type",
				      BAD_CAST(disk->format == VM_DISK_FORMAT_OVERLAY ? "kovl"
										      : "raw")));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "cache",
				      BAD_CAST(disk->cache == VM_DISK_CACHE_NONE ? "none"
										 : "writeback")));
	if (disk->queues)
		W(xmlTextWriterWriteFormatAttribute(w, BAD_CAST "queues", "%u", disk->queues));
	W(xmlTextWriterEndElement(w));
	W(xmlTextWriterStartElement(w, BAD_CAST "source"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "file", BAD_CAST(path ? path : disk->path)));
	W(xmlTextWriterEndElement(w));
	W(xmlTextWriterStartElement(w, BAD_CAST "target"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "dev", BAD_CAST dev));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "bus",
				      BAD_CAST(disk->bus == VM_DISK_BUS_ATA ? "ide" : "xen")));
	W(xmlTextWriterEndElement(w));
	if (disk->ops_limit.rate_per_second || disk->bytes_limit.rate_per_second) {
		W(xmlTextWriterStartElement(w, BAD_CAST "iotune"));
		if (disk->bytes_limit.rate_per_second)
			W(write_element_u64(w, "total_bytes_sec",
					    disk->bytes_limit.rate_per_second));
		if (disk->ops_limit.rate_per_second)
			W(write_element_u64(w, "total_iops_sec", disk->ops_limit.rate_per_second));
		if (disk->bytes_limit.rate_per_second && disk->bytes_limit.burst)
			W(write_element_u64(w, "total_bytes_sec_max", disk->bytes_limit.burst));
		if (disk->ops_limit.rate_per_second && disk->ops_limit.burst)
			W(write_element_u64(w, "total_iops_sec_max", disk->ops_limit.burst));
		W(xmlTextWriterEndElement(w));
	}
	if (disk->readonly)
		W(xmlTextWriterWriteElement(w, BAD_CAST "readonly", NULL));
	W(xmlTextWriterEndElement(w));
	free(path);
	return 0;
fail:
	free(path);
	return -EIO;
}

/* <serial>/<console> of one type: stdio, or file with a path. */
static int write_chardev(xmlTextWriterPtr w, const char *element, const char *path,
			 const char *target_type)
{
	W(xmlTextWriterStartElement(w, BAD_CAST element));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "type", BAD_CAST(path ? "file" : "stdio")));
	if (path) {
		W(xmlTextWriterStartElement(w, BAD_CAST "source"));
		W(xmlTextWriterWriteAttribute(w, BAD_CAST "path", BAD_CAST path));
		W(xmlTextWriterEndElement(w));
	}
	W(xmlTextWriterStartElement(w, BAD_CAST "target"));
	if (target_type)
		W(xmlTextWriterWriteAttribute(w, BAD_CAST "type", BAD_CAST target_type));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "port", BAD_CAST "0"));
	W(xmlTextWriterEndElement(w));
	W(xmlTextWriterEndElement(w));
	return 0;
fail:
	return -EIO;
}

static bool kapsel_metadata_needed(const struct vm_config *config)
{
	for (unsigned i = 0; i < config->disk_count; i++)
		if (config->disks[i].poll)
			return true;
	for (unsigned i = 0; i < config->net_count; i++)
		if (config_xml_kapsel_interface_needed(&config->nets[i]))
			return true;
	return config_xml_kapsel_rng_needed(&config->rng);
}

static int write_kapsel_metadata(xmlTextWriterPtr w, const struct vm_config *config)
{
	W(xmlTextWriterStartElement(w, BAD_CAST "metadata"));
	W(xmlTextWriterStartElementNS(w, BAD_CAST "kapsel", BAD_CAST "domain",
				      BAD_CAST VM_CONFIG_XML_NAMESPACE));
	for (unsigned i = 0; i < config->disk_count; i++) {
		if (!config->disks[i].poll)
			continue;
		W(xmlTextWriterStartElementNS(w, BAD_CAST "kapsel", BAD_CAST "disk", NULL));
		W(xmlTextWriterWriteFormatAttribute(w, BAD_CAST "index", "%u", i));
		W(xmlTextWriterWriteFormatAttribute(w, BAD_CAST "poll_us", "%u",
						    config->disks[i].poll_us));
		W(xmlTextWriterEndElement(w));
	}
	for (unsigned i = 0; i < config->net_count; i++)
		if (config_xml_kapsel_interface_needed(&config->nets[i]))
			W(config_xml_write_kapsel_interface(w, &config->nets[i], i));
	if (config_xml_kapsel_rng_needed(&config->rng))
		W(config_xml_write_kapsel_rng(w, &config->rng));
	W(xmlTextWriterEndElement(w));
	W(xmlTextWriterEndElement(w));
	return 0;
fail:
	return -EIO;
}

/* True when text can be XML character data: UTF-8, and no control
 * character but tab, newline and carriage return (XML 1.0 has no way to
 * write the others, not even as a character reference). */
static bool xml_text_ok(const char *text)
{
	const unsigned char *p = (const unsigned char *)text;
	while (p && *p) {
		unsigned follow;
		if (*p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r')
			return false;
		if (*p < 0x80)
			follow = 0;
		else if (*p >= 0xc2 && *p <= 0xdf)
			follow = 1;
		else if (*p >= 0xe0 && *p <= 0xef)
			follow = 2;
		else if (*p >= 0xf0 && *p <= 0xf4)
			follow = 3;
		else
			return false;
		p++;
		for (unsigned i = 0; i < follow; i++, p++)
			if ((*p & 0xc0) != 0x80)
				return false;
	}
	return true;
}

/* Every string the XML will hold, checked before writing it. */
static int check_xml_strings(const struct vm_config *config, char *error, size_t error_len)
{
	const char *what = NULL;
	if (!xml_text_ok(config->kernel_path))
		what = "the kernel path";
	else if (!xml_text_ok(config->cmdline))
		what = "the kernel command line";
	else if (!xml_text_ok(config->console_output_path))
		what = "the console output path";
	for (unsigned i = 0; !what && i < config->disk_count; i++)
		if (!xml_text_ok(config->disks[i].path))
			what = "a disk path";
	for (unsigned i = 0; !what && i < config->net_count; i++)
		if (!xml_text_ok(config->nets[i].path) || !xml_text_ok(config->nets[i].peer))
			what = "a network interface's name or socket path";
	if (what)
		return kapsel_fail(
			error, error_len, -EINVAL,
			"cannot write the definition as domain XML: %s is not UTF-8 or has a control character",
			what);
	return 0;
}

int vm_config_format_xml(const struct vm_config *config, enum vm_config_xml_form form, char **xml,
			 size_t *length_bytes, char *error, size_t error_len)
{
	int checked = check_xml_strings(config, error, error_len);
	if (checked)
		return checked;
	xmlBufferPtr buffer = xmlBufferCreate();
	xmlTextWriterPtr w = buffer ? xmlNewTextWriterMemory(buffer, 0) : NULL;
	char *kernel = absolute_path(config->kernel_path);
	/* A state file's definition never names a host file to write. */
	char *console_path =
		form == VM_CONFIG_XML_STATE ? NULL : absolute_path(config->console_output_path);
	int err = -EIO;
	if (!w)
		goto fail;
	W(xmlTextWriterSetIndent(w, 1));
	W(xmlTextWriterSetIndentString(w, BAD_CAST "  "));
	W(xmlTextWriterSetQuoteChar(w, '\''));
	W(xmlTextWriterStartElement(w, BAD_CAST "domain"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "type", BAD_CAST "kvm"));
	W(xmlTextWriterWriteElement(w, BAD_CAST "name", BAD_CAST config->name));
	if (config->has_uuid || form == VM_CONFIG_XML_STATE) {
		const uint8_t *u = config->uuid;
		W(xmlTextWriterWriteFormatElement(
			w, BAD_CAST "uuid",
			"%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11],
			u[12], u[13], u[14], u[15]));
	}
	if (kapsel_metadata_needed(config))
		W(write_kapsel_metadata(w, config));
	W(xmlTextWriterStartElement(w, BAD_CAST "memory"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "unit", BAD_CAST "KiB"));
	W(xmlTextWriterWriteFormatString(w, "%llu",
					 (unsigned long long)(config->memory_bytes >> 10)));
	W(xmlTextWriterEndElement(w));
	W(xmlTextWriterStartElement(w, BAD_CAST "currentMemory"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "unit", BAD_CAST "KiB"));
	W(xmlTextWriterWriteFormatString(w, "%llu",
					 (unsigned long long)(config->memory_bytes >> 10)));
	W(xmlTextWriterEndElement(w));
	W(xmlTextWriterStartElement(w, BAD_CAST "vcpu"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "placement", BAD_CAST "static"));
	W(xmlTextWriterWriteFormatString(w, "%u", config->vcpus ? config->vcpus : 1));
	W(xmlTextWriterEndElement(w));
	W(xmlTextWriterStartElement(w, BAD_CAST "os"));
	W(xmlTextWriterStartElement(w, BAD_CAST "type"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "arch", BAD_CAST "x86_64"));
	W(xmlTextWriterWriteString(w, BAD_CAST "hvm"));
	W(xmlTextWriterEndElement(w));
	if (kernel)
		W(xmlTextWriterWriteElement(w, BAD_CAST "kernel", BAD_CAST kernel));
	if (config->cmdline && *config->cmdline)
		W(xmlTextWriterWriteElement(w, BAD_CAST "cmdline", BAD_CAST config->cmdline));
	W(xmlTextWriterEndElement(w));
	W(xmlTextWriterWriteElement(w, BAD_CAST "on_poweroff",
				    BAD_CAST vm_lifecycle_action_name(config->on_poweroff)));
	W(xmlTextWriterWriteElement(w, BAD_CAST "on_reboot",
				    BAD_CAST vm_lifecycle_action_name(config->on_reboot)));
	W(xmlTextWriterWriteElement(w, BAD_CAST "on_crash",
				    BAD_CAST vm_lifecycle_action_name(config->on_crash)));
	W(xmlTextWriterStartElement(w, BAD_CAST "devices"));
	unsigned pv_unit = 0, ata_unit = 0;
	for (unsigned i = 0; i < config->disk_count; i++) {
		const struct vm_disk_config *disk = &config->disks[i];
		unsigned unit = disk->bus == VM_DISK_BUS_ATA ? ata_unit++ : pv_unit++;
		W(write_disk(w, disk, i, unit));
	}
	for (unsigned i = 0; i < config->net_count; i++)
		W(config_xml_write_interface(w, &config->nets[i], i));
	W(config_xml_write_rng(w, &config->rng));
	/* libvirt's model: <serial> is the 16550 UART; a <console> with
	 * target type 'xen' is the PV console (offered in mode auto). */
	W(write_chardev(w, "serial", console_path, NULL));
	W(write_chardev(w, "console", console_path,
			config->console_mode == VM_CONSOLE_UART ? "serial" : "xen"));
	W(xmlTextWriterEndElement(w)); /* devices */
	W(xmlTextWriterEndElement(w)); /* domain */
	W(xmlTextWriterEndDocument(w));
	xmlFreeTextWriter(w);
	w = NULL;
	*length_bytes = (size_t)xmlBufferLength(buffer);
	*xml = strndup((const char *)xmlBufferContent(buffer), *length_bytes);
	err = *xml ? 0 : -ENOMEM;
fail:
	if (err)
		snprintf(error, error_len, "cannot write the domain XML (libxml2 writer failed)");
	if (w)
		xmlFreeTextWriter(w);
	if (buffer)
		xmlBufferFree(buffer);
	free(kernel);
	free(console_path);
	return err;
}

int vm_config_write_xml(const struct vm_config *config, FILE *out, char *error, size_t error_len)
{
	char *xml = NULL;
	size_t length = 0;
	int err = vm_config_format_xml(config, VM_CONFIG_XML_DUMP, &xml, &length, error, error_len);
	if (!err && fwrite(xml, 1, length, out) != length)
		err = kapsel_fail(error, error_len, -EIO, "cannot write the domain XML: %s",
				  strerror(errno));
	free(xml);
	return err;
}
