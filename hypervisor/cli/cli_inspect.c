/* `kapsel inspect`: check a saved VM state directory completely and decode it for a reader. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/error_text.h"
#include "core/guest_memory.h"
#include "core/json_writer.h"
#include "core/log.h"
#include "core/pv_cpu.h"
#include "core/pv_mmu.h"
#include "devices/devices.h"
#include "devices/device.h"
#include "state/snapshot.h"
#include "state/snapshot_chain.h"
#include "state/vcpu_state.h"
#include "state/vm_state.h"

void cli_inspect_usage(FILE *out)
{
	fprintf(out, "Usage: kapsel inspect [--records] [--json] DIR\n"
		     "\n"
		     "Check a saved VM state directory completely (manifest, checksums of every\n"
		     "file, every record) and decode it: VM, definition, vCPU registers, event\n"
		     "channels, devices with their ring indices and counters, disks.  Exits 0\n"
		     "if the state is valid and restorable, 1 (with the reason) if not.\n"
		     "\n"
		     "  --records   also list every record (type, flags, size)\n"
		     "  --json      print one JSON object instead (schema kapsel.inspect/1,\n"
		     "              docs/control.md; records always included, registers not)\n");
}

static void print_hex(FILE *out, const uint8_t *data, uint64_t length)
{
	for (uint64_t i = 0; i < length && i < 64; i++)
		fprintf(out, "%s%02x", i % 32 == 0 ? "\n      " : " ", data[i]);
	fprintf(out, "%s\n", length > 64 ? " ..." : "");
}

static void print_device_record(FILE *out, const struct vm_state_stored_record *rec)
{
	const char *name = vm_state_record_name(rec->type);
	fprintf(out, "    %s (type %#x, %llu bytes)", name ? name : "device record", rec->type,
		(unsigned long long)rec->length_bytes);
	if (rec->type == VM_STATE_DEV_UART16550 &&
	    rec->length_bytes == sizeof(struct vm_state_uart16550)) {
		struct vm_state_uart16550 u;
		memcpy(&u, rec->payload, sizeof(u));
		fprintf(out,
			": ier %#x lcr %#x mcr %#x fcr %#x scr %#x divisor %u, loopback %u bytes, bytes out %llu in %llu\n",
			u.ier, u.lcr, u.mcr, u.fcr, u.scr, u.dll | (u.dlm << 8), u.loopback_count,
			(unsigned long long)u.bytes_out, (unsigned long long)u.bytes_in);
		return;
	}
	if (rec->type == VM_STATE_DEV_BLOCK_PV &&
	    rec->length_bytes == sizeof(struct vm_state_block_pv)) {
		struct vm_state_block_pv b;
		memcpy(&b, rec->payload, sizeof(b));
		fprintf(out,
			": queue %u, ring gpa %#llx (%u pages, order %u), req_cons %u, rsp_prod %u%s\n",
			b.queue, (unsigned long long)b.ring_gpa, b.ring_pages, b.order, b.req_cons,
			b.rsp_prod, b.broken ? ", ring broken" : "");
		return;
	}
	if (rec->type == VM_STATE_DEV_ATA_DISK &&
	    rec->length_bytes >= sizeof(struct vm_state_ata_disk)) {
		struct vm_state_ata_disk a;
		memcpy(&a, rec->payload, sizeof(a));
		fprintf(out,
			": status %#x error %#x device %#x, command %#x %s, lba %#llx, %llu of %llu sectors left, buffer %u/%u bytes, %llu sectors read, %llu written\n",
			a.status, a.error, a.device, a.command,
			a.transfer == 1	  ? "reading"
			: a.transfer == 2 ? "writing"
					  : "idle",
			(unsigned long long)a.command_lba, (unsigned long long)a.sectors_left,
			(unsigned long long)a.command_sectors, a.buffer_pos, a.buffer_bytes,
			(unsigned long long)a.counters[2], (unsigned long long)a.counters[3]);
		return;
	}
	if (rec->type == VM_STATE_DEV_NET_PV &&
	    rec->length_bytes == sizeof(struct vm_state_net_pv)) {
		struct vm_state_net_pv n;
		memcpy(&n, rec->payload, sizeof(n));
		for (unsigned q = 0; q < 2; q++)
			fprintf(out, "%s%s ring gpa %#llx (%u pages), req_cons %u, rsp_prod %u%s",
				q ? "; " : ": ", q ? "rx" : "tx",
				(unsigned long long)n.queues[q].ring_gpa, n.queues[q].ring_pages,
				n.queues[q].req_cons, n.queues[q].rsp_prod,
				n.queues[q].broken ? ", broken" : "");
		fprintf(out, "; %llu frame(s) dropped at the save, frames out %llu in %llu\n",
			(unsigned long long)n.frames_dropped_at_save,
			(unsigned long long)n.counters[0], (unsigned long long)n.counters[2]);
		return;
	}
	if (rec->type == VM_STATE_DEV_NE2000 &&
	    rec->length_bytes == sizeof(struct vm_state_ne2000)) {
		const struct vm_state_ne2000 *n = (const void *)rec->payload;
		uint64_t dropped, counters[VM_STATE_NET_COUNTERS];
		memcpy(&dropped, &n->frames_dropped_at_save, sizeof(dropped));
		memcpy(counters, n->counters, sizeof(counters));
		fprintf(out,
			": cr %#x isr %#x imr %#x rcr %#x, ring pages %#x-%#x curr %#x bnry %#x; %llu frame(s) dropped at the save, frames out %llu in %llu\n",
			n->cr, n->isr, n->imr, n->rcr, n->pstart, n->pstop, n->curr, n->bnry,
			(unsigned long long)dropped, (unsigned long long)counters[0],
			(unsigned long long)counters[2]);
		return;
	}
	print_hex(out, rec->payload, rec->length_bytes);
}

static void print_state(const struct vm_state_dir *dir, bool list_records, FILE *out)
{
	const struct vm_state_vm_info *info = dir->info;
	char when[64] = "?";
	time_t secs = (time_t)(dir->state.begin.created_unix_ns / 1000000000ull);
	struct tm tm;
	if (localtime_r(&secs, &tm))
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(out, "state %s: format %u, written by %.32s at %s\n", dir->path,
		dir->state.begin.format_version, dir->state.begin.writer, when);
	fprintf(out, "files:\n");
	for (unsigned i = 0; i < dir->file_count; i++)
		fprintf(out, "  %-12s %12llu bytes (%llu data), crc32c %08x\n", dir->files[i].name,
			(unsigned long long)dir->files[i].size_bytes,
			(unsigned long long)dir->files[i].data_bytes, dir->files[i].crc32c);
	const struct vm_state_stored_record *save_rec =
		vm_state_find(&dir->state, VM_STATE_SAVE_INFO, NULL);
	if (save_rec && save_rec->length_bytes == sizeof(struct vm_state_save_info)) {
		struct vm_state_save_info s;
		memcpy(&s, save_rec->payload, sizeof(s));
		if (s.flags & VM_STATE_SAVE_LIVE)
			fprintf(out,
				"save: live, %u pre-copy rounds, %llu MiB written to memory.img, %llu pages while stopped, vCPU stopped %.3f ms\n",
				s.rounds, (unsigned long long)(s.memory_written_bytes >> 20),
				(unsigned long long)s.final_pages, s.vcpu_stopped_ns / 1e6);
	}
	fprintf(out, "vm:\n  name %.64s\n  uuid ", info->name);
	for (int i = 0; i < 16; i++)
		fprintf(out, "%02x%s", info->uuid[i],
			(i == 3 || i == 5 || i == 7 || i == 9) ? "-" : "");
	fprintf(out,
		"\n  memory %llu MiB\n  generation %llu\n  clock %.6f s\n  tsc %llu kHz\n  exits %llu\n",
		(unsigned long long)(info->memory_bytes >> 20),
		(unsigned long long)info->generation, info->clock_ns / 1e9,
		(unsigned long long)info->tsc_khz, (unsigned long long)info->exits_total);
	const struct vm_state_stored_record *config =
		vm_state_find(&dir->state, VM_STATE_DEFINITION, NULL);
	if (!config)
		config = vm_state_find(&dir->state, VM_STATE_CONFIG_TEXT, NULL);
	if (config) {
		fprintf(out, "definition:\n");
		const char *p = (const char *)config->payload;
		const char *end = p + config->length_bytes;
		while (p < end) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
			fprintf(out, "  %.*s\n", (int)n, p);
			p += n + 1;
		}
	}
	fprintf(out, "vcpu 0:\n");
	vcpu_state_print(&dir->state, out);
	pv_cpu_state_print(&dir->state, out);
	pv_mmu_state_print(&dir->state, out);

	const struct vm_state_stored_record *ev = vm_state_find(&dir->state, VM_STATE_EVTCHN, NULL);
	if (ev && ev->length_bytes == sizeof(struct vm_state_evtchn)) {
		struct vm_state_evtchn e;
		memcpy(&e, ev->payload, sizeof(e));
		fprintf(out, "event channels:");
		unsigned shown = 0;
		for (unsigned p = 0; p < e.count && p < 256; p++) {
			if (!e.entries[p].allocated)
				continue;
			if (e.entries[p].bound_device >= 0)
				fprintf(out, " %u->device %d", p, e.entries[p].bound_device);
			else
				fprintf(out, " %u", p);
			shown++;
		}
		fprintf(out, "%s\n", shown ? "" : " none");
	}
	fprintf(out, "devices:\n");
	for (size_t i = 0; i < dir->state.count; i++) {
		const struct vm_state_stored_record *rec = &dir->state.records[i];
		if (rec->type == VM_STATE_DEVICE &&
		    rec->length_bytes == sizeof(struct vm_state_device)) {
			struct vm_state_device d;
			struct kapsel_device_desc desc;
			memcpy(&d, rec->payload, sizeof(d));
			memcpy(&desc, d.desc, sizeof(desc));
			fprintf(out, "  %u %-10s (%s)", d.index, devices_type_name(d.type), d.name);
			if (d.evtchn_port != UINT32_MAX)
				fprintf(out, " event channel %u", d.evtchn_port);
			if (desc.io_base)
				fprintf(out, " ports %#x", desc.io_base);
			if (desc.doorbell_port)
				fprintf(out, " doorbell %#x", desc.doorbell_port);
			if (desc.capacity_sectors)
				fprintf(out, " %llu sectors",
					(unsigned long long)desc.capacity_sectors);
			fprintf(out, ", %llu exits\n", (unsigned long long)d.exits);
		} else if (rec->type >= VM_STATE_DEVICE_FIRST &&
			   rec->type <= VM_STATE_DEVICE_LAST) {
			print_device_record(out, rec);
		}
	}
	size_t position = 0;
	const struct vm_state_stored_record *rec;
	while ((rec = vm_state_find(&dir->state, VM_STATE_DISK, &position)) != NULL) {
		struct vm_state_disk disk;
		if (rec->length_bytes < sizeof(disk))
			continue;
		memcpy(&disk, rec->payload, sizeof(disk));
		fprintf(out, "disk %u: %.*s, %llu bytes, bus %s%s%s%s\n", disk.index,
			(int)(rec->length_bytes - sizeof(disk)),
			(const char *)rec->payload + sizeof(disk),
			(unsigned long long)disk.size_bytes, disk.bus ? "ata" : "pv",
			disk.readonly ? ", read-only" : "",
			(disk.flags & VM_STATE_DISK_OVERLAY) ? ", overlay" : "",
			(disk.flags & VM_STATE_DISK_FROZEN) ? ", frozen" : "");
	}
	if (list_records) {
		fprintf(out, "records:\n");
		for (size_t i = 0; i < dir->state.count; i++) {
			const struct vm_state_stored_record *r = &dir->state.records[i];
			const char *name = vm_state_record_name(r->type);
			fprintf(out, "  %3zu %-18s type %#06x %s %llu bytes\n", i + 1,
				name ? name : "(unknown)", r->type,
				(r->flags & VM_STATE_RECORD_MANDATORY) ? "mandatory" : "optional ",
				(unsigned long long)r->length_bytes);
		}
	}
}

/* A fixed-size char array of the state as a C string. */
static void json_fixed_string(struct json_writer *w, const char *key, const char *chars,
			      size_t size)
{
	char text[129];
	snprintf(text, sizeof(text), "%.*s", (int)(size < 128 ? size : 128), chars);
	json_writer_string(w, key, text);
}

/* The decoded state as members of the object w is in (kapsel.inspect/1). */
static void state_json(struct json_writer *w, const struct vm_state_dir *dir)
{
	const struct vm_state_vm_info *info = dir->info;
	json_writer_u64(w, "format", dir->state.begin.format_version);
	json_fixed_string(w, "writer", dir->state.begin.writer, sizeof(dir->state.begin.writer));
	json_writer_u64(w, "created_unix_ns", dir->state.begin.created_unix_ns);
	json_writer_open(w, "files", '[');
	for (unsigned i = 0; i < dir->file_count; i++) {
		char crc[16];
		snprintf(crc, sizeof(crc), "%08x", dir->files[i].crc32c);
		json_writer_open(w, NULL, '{');
		json_fixed_string(w, "name", dir->files[i].name, sizeof(dir->files[i].name));
		json_writer_u64(w, "size_bytes", dir->files[i].size_bytes);
		json_writer_u64(w, "data_bytes", dir->files[i].data_bytes);
		json_writer_string(w, "crc32c", crc);
		json_writer_close(w, '}');
	}
	json_writer_close(w, ']');
	char uuid[37];
	const uint8_t *u = info->uuid;
	snprintf(uuid, sizeof(uuid),
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
		 u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
		 u[15]);
	const struct vm_state_stored_record *save_rec =
		vm_state_find(&dir->state, VM_STATE_SAVE_INFO, NULL);
	if (save_rec && save_rec->length_bytes == sizeof(struct vm_state_save_info)) {
		struct vm_state_save_info s;
		memcpy(&s, save_rec->payload, sizeof(s));
		json_writer_open(w, "save", '{');
		json_writer_bool(w, "live", (s.flags & VM_STATE_SAVE_LIVE) != 0);
		json_writer_u64(w, "rounds", s.rounds);
		json_writer_u64(w, "memory_written_bytes", s.memory_written_bytes);
		json_writer_u64(w, "final_pages", s.final_pages);
		json_writer_u64(w, "vcpu_stopped_ns", s.vcpu_stopped_ns);
		json_writer_close(w, '}');
	}
	json_writer_open(w, "vm", '{');
	json_fixed_string(w, "name", info->name, sizeof(info->name));
	json_writer_string(w, "uuid", uuid);
	json_writer_u64(w, "memory_bytes", info->memory_bytes);
	json_writer_u64(w, "generation", info->generation);
	json_writer_u64(w, "clock_ns", info->clock_ns);
	json_writer_u64(w, "tsc_khz", info->tsc_khz);
	json_writer_u64(w, "exits_total", info->exits_total);
	json_writer_bool(w, "was_running", info->run_state == 1);
	json_writer_close(w, '}');
	const struct vm_state_stored_record *config =
		vm_state_find(&dir->state, VM_STATE_DEFINITION, NULL);
	if (!config)
		config = vm_state_find(&dir->state, VM_STATE_CONFIG_TEXT, NULL);
	if (config) {
		char *text = strndup((const char *)config->payload, config->length_bytes);
		json_writer_string(w, "definition", text);
		free(text);
	} else {
		json_writer_null(w, "definition");
	}
	json_writer_open(w, "event_channels", '[');
	const struct vm_state_stored_record *ev = vm_state_find(&dir->state, VM_STATE_EVTCHN, NULL);
	if (ev && ev->length_bytes == sizeof(struct vm_state_evtchn)) {
		struct vm_state_evtchn e;
		memcpy(&e, ev->payload, sizeof(e));
		for (unsigned p = 0; p < e.count && p < 256; p++) {
			if (!e.entries[p].allocated)
				continue;
			json_writer_open(w, NULL, '{');
			json_writer_u64(w, "port", p);
			if (e.entries[p].bound_device >= 0)
				json_writer_i64(w, "device", e.entries[p].bound_device);
			else
				json_writer_null(w, "device");
			json_writer_close(w, '}');
		}
	}
	json_writer_close(w, ']');
	json_writer_open(w, "devices", '[');
	for (size_t i = 0; i < dir->state.count; i++) {
		const struct vm_state_stored_record *rec = &dir->state.records[i];
		if (rec->type != VM_STATE_DEVICE ||
		    rec->length_bytes != sizeof(struct vm_state_device))
			continue;
		struct vm_state_device d;
		struct kapsel_device_desc desc;
		memcpy(&d, rec->payload, sizeof(d));
		memcpy(&desc, d.desc, sizeof(desc));
		json_writer_open(w, NULL, '{');
		json_writer_u64(w, "index", d.index);
		json_writer_string(w, "type", devices_type_name(d.type));
		json_fixed_string(w, "name", d.name, sizeof(d.name));
		if (d.evtchn_port != UINT32_MAX)
			json_writer_u64(w, "event_channel", d.evtchn_port);
		else
			json_writer_null(w, "event_channel");
		json_writer_u64(w, "io_base", desc.io_base);
		json_writer_u64(w, "doorbell_port", desc.doorbell_port);
		json_writer_u64(w, "capacity_sectors", desc.capacity_sectors);
		json_writer_u64(w, "exits", d.exits);
		json_writer_close(w, '}');
	}
	json_writer_close(w, ']');
	json_writer_open(w, "disks", '[');
	size_t position = 0;
	const struct vm_state_stored_record *rec;
	while ((rec = vm_state_find(&dir->state, VM_STATE_DISK, &position)) != NULL) {
		struct vm_state_disk disk;
		if (rec->length_bytes < sizeof(disk))
			continue;
		memcpy(&disk, rec->payload, sizeof(disk));
		char *path = strndup((const char *)rec->payload + sizeof(disk),
				     rec->length_bytes - sizeof(disk));
		json_writer_open(w, NULL, '{');
		json_writer_u64(w, "index", disk.index);
		json_writer_string(w, "path", path);
		json_writer_u64(w, "size_bytes", disk.size_bytes);
		json_writer_string(w, "bus", disk.bus ? "ata" : "pv");
		json_writer_bool(w, "readonly", disk.readonly != 0);
		json_writer_bool(w, "overlay", (disk.flags & VM_STATE_DISK_OVERLAY) != 0);
		json_writer_bool(w, "frozen", (disk.flags & VM_STATE_DISK_FROZEN) != 0);
		json_writer_close(w, '}');
		free(path);
	}
	json_writer_close(w, ']');
	json_writer_open(w, "records", '[');
	for (size_t i = 0; i < dir->state.count; i++) {
		const struct vm_state_stored_record *r = &dir->state.records[i];
		json_writer_open(w, NULL, '{');
		json_writer_u64(w, "type", r->type);
		json_writer_string(w, "name", vm_state_record_name(r->type));
		json_writer_bool(w, "mandatory", (r->flags & VM_STATE_RECORD_MANDATORY) != 0);
		json_writer_u64(w, "length_bytes", r->length_bytes);
		json_writer_close(w, '}');
	}
	json_writer_close(w, ']');
}

/* The verdict: valid (the directory and its records check out),
 * restorable (and its disks too) and a message (NULL when both hold). */
static void verdict_json(struct json_writer *w, bool valid, bool restorable, const char *message)
{
	json_writer_bool(w, "valid", valid);
	json_writer_bool(w, "restorable", restorable);
	json_writer_string(w, "message", message);
	json_writer_close(w, '}');
	putchar('\n');
}

/*
 * A diff state's chain (snapshot_chain.h): open and check every parent,
 * layer the memory (into an anonymous mapping) and check its checksum;
 * list the layers, bottom first, as text or JSON.  Returns 0 (also for a
 * full state) or -errno with a message in error.
 */
static int check_chain(const struct vm_state_dir *dir, struct json_writer *w, FILE *out,
		       char *error, size_t error_len)
{
	struct vm_state_parent parent;
	char name[VM_STATE_PARENT_NAME_MAX + 1];
	int err = snapshot_parent_parse(&dir->state, &parent, name, error, error_len);
	if (err <= 0)
		return err;
	if (out)
		fprintf(out, "chain: diff %u over '%s' (%llu pages in this layer)\n", parent.depth,
			name, (unsigned long long)parent.pages);
	struct snapshot_chain chain;
	err = snapshot_chain_open(dir, &chain, error, error_len);
	if (err)
		return err;
	struct guest_memory mem = { .memfd = -1, .size_bytes = dir->info->memory_bytes };
	mem.host_base = mmap(NULL, mem.size_bytes, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem.host_base == MAP_FAILED) {
		snapshot_chain_close(&chain);
		return kapsel_fail(error, error_len, -errno, "cannot map the chain's memory: %s",
				   strerror(errno));
	}
	err = snapshot_chain_load_memory(&chain, &mem, error, error_len);
	munmap(mem.host_base, mem.size_bytes);
	if (w)
		json_writer_open(w, "chain", '[');
	for (unsigned i = 0; i < chain.count; i++) {
		const struct vm_state_dir *layer = chain.layers[i];
		struct vm_state_parent p = { 0 };
		char n[VM_STATE_PARENT_NAME_MAX + 1];
		bool diff = snapshot_parent_parse(&layer->state, &p, n, NULL, 0) == 1;
		uint32_t crc = 0;
		snapshot_state_memory_crc(layer, &crc, NULL, 0);
		if (out)
			fprintf(out, "  %u %s: %s, memory crc32c %08x%s\n", i, layer->path,
				diff ? "diff" : "full state", crc,
				i + 1 == chain.count ? " (this state)" : "");
		if (w) {
			char hex[16];
			snprintf(hex, sizeof(hex), "%08x", crc);
			json_writer_open(w, NULL, '{');
			json_writer_string(w, "path", layer->path);
			json_writer_bool(w, "diff", diff);
			json_writer_u64(w, "pages", diff ? p.pages : 0);
			json_writer_string(w, "memory_crc32c", hex);
			json_writer_close(w, '}');
		}
	}
	if (w)
		json_writer_close(w, ']');
	if (out && !err)
		fprintf(out, "  layered memory checks out (%u layers)\n", chain.count);
	snapshot_chain_close(&chain);
	return err;
}

/* The CRC32C of every listed file besides state.bin and memory.img (which
 * vm_state_dir_open checked): domain.xml, memory.map, a merged state's
 * disk images. */
static int check_other_files(const struct vm_state_dir *dir, char *error, size_t error_len)
{
	for (unsigned i = 0; i < dir->file_count; i++) {
		const struct vm_state_manifest_file *f = &dir->files[i];
		if (strcmp(f->name, VM_STATE_FILE_STATE) == 0 ||
		    strcmp(f->name, VM_STATE_FILE_MEMORY) == 0)
			continue;
		int fd = openat(dir->dirfd, f->name, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return kapsel_fail(error, error_len, -errno, "%s/%s: %s", dir->path,
					   f->name, strerror(errno));
		char detail[512];
		int err = vm_state_check_flat_fd(fd, f->name, f->size_bytes, f->crc32c, NULL,
						 detail, sizeof(detail));
		close(fd);
		if (err)
			return kapsel_fail(error, error_len, err, "%s/%s", dir->path, detail);
	}
	return 0;
}

int cli_inspect(int argc, char **argv)
{
	bool list_records = false, json = false;
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--records") == 0) {
			list_records = true;
		} else if (strcmp(argv[i], "--json") == 0) {
			json = true;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			cli_inspect_usage(stdout);
			return 0;
		} else if (argv[i][0] == '-' || path) {
			kapsel_error("unexpected argument '%s'; see 'kapsel inspect --help'",
				     argv[i]);
			return 2;
		} else {
			path = argv[i];
		}
	}
	if (!path) {
		kapsel_error("inspect needs a state directory; see 'kapsel inspect --help'");
		return 2;
	}
	struct vm_state_dir dir;
	char error[1024];
	struct json_writer w;
	if (json) {
		json_writer_init(&w, stdout, true);
		json_writer_open(&w, NULL, '{');
		json_writer_string(&w, "schema", "kapsel.inspect/1");
		json_writer_string(&w, "path", path);
	}
	if (vm_state_dir_open(&dir, path, true, error, sizeof(error)) < 0) {
		kapsel_error("invalid state: %s", error);
		if (json)
			verdict_json(&w, false, false, error);
		return 1;
	}
	if (check_other_files(&dir, error, sizeof(error)) < 0) {
		kapsel_error("invalid state: %s", error);
		if (json)
			verdict_json(&w, false, false, error);
		vm_state_dir_close(&dir);
		return 1;
	}
	if (json)
		state_json(&w, &dir);
	else
		print_state(&dir, list_records, stdout);
	char chain_error[1024];
	int chain_err = check_chain(&dir, json ? &w : NULL, json ? NULL : stdout, chain_error,
				    sizeof(chain_error));
	if (chain_err) {
		if (json)
			verdict_json(&w, false, false, chain_error);
		else
			printf("NOT restorable: %s\n", chain_error);
		vm_state_dir_close(&dir);
		return 1;
	}
	struct vm_config config;
	vm_config_init(&config);
	int err = snapshot_config_from_records(&dir.state, &config, error, sizeof(error));
	/* Only files inside the directory are looked at: the state's other
	 * paths are the restorer's to name (--kernel, --disk N=PATH). */
	bool needs_files = false;
	if (!err) {
		err = snapshot_bind_host_files(&dir.state, path, NULL, &config, error,
					       sizeof(error));
		needs_files = err == -EPERM;
	}
	if (!err)
		err = snapshot_check_disks(&dir.state, &config, error, sizeof(error));
	if (json) {
		/* A state that needs files from outside is valid, and restorable
		 * once they are named. */
		verdict_json(&w, true, !err || needs_files, err ? error : NULL);
		vm_config_free(&config);
		vm_state_dir_close(&dir);
		return err && !needs_files ? 1 : 0;
	}
	if (needs_files) {
		printf("state is valid; to restore it, %s\n", error);
		vm_config_free(&config);
		vm_state_dir_close(&dir);
		return 0;
	}
	vm_config_free(&config);
	vm_state_dir_close(&dir);
	if (err) {
		printf("NOT restorable: %s\n", error);
		return 1;
	}
	printf("state is valid\n");
	return 0;
}
