/* Live migration over TCP: pre-copy of guest RAM with KVM dirty logging, then stop-and-copy of the rest, in the VM-state record stream. */
#define _GNU_SOURCE
#include "state/migrate.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "devices/devices.h"
#include "devices/block/disk.h"
#include "core/error_text.h"
#include "core/log.h"
#include "state/migrate_transport.h"
#include "state/precopy.h"
#include "state/progress.h"
#include "state/snapshot.h"
#include "core/vm.h"
#include "state/vm_state.h"

#define PAGE_BYTES PRECOPY_PAGE_BYTES

enum migrate_code {
	MIGRATE_PREPARED = 1,
	MIGRATE_RELEASED = 2,
	MIGRATE_RUNNING = 3,
	MIGRATE_FAILED = 4,
};

#define MIGRATE_MESSAGE_MAGIC "KAPSMIGR"
struct migrate_message {
	char magic[8];
	uint32_t code;	  /* enum migrate_code */
	uint32_t crc;	  /* CRC32C of the message with this field 0 */
	char detail[240]; /* FAILED: why, NUL terminated */
};
_Static_assert(sizeof(struct migrate_message) == 256, "migrate message layout");

int migrate_parse_uri(const char *uri, char *host, size_t host_len, char *port, size_t port_len)
{
	if (strncmp(uri, "tcp:", 4) != 0)
		return -EINVAL;
	const char *rest = uri + 4;
	const char *colon = strrchr(rest, ':');
	if (!colon || colon == rest || !colon[1])
		return -EINVAL;
	const char *h = rest, *h_end = colon;
	if (*h == '[' && h_end[-1] == ']') {
		h++;
		h_end--;
	}
	if ((size_t)(h_end - h) >= host_len || strlen(colon + 1) >= port_len)
		return -EINVAL;
	memcpy(host, h, (size_t)(h_end - h));
	host[h_end - h] = '\0';
	snprintf(port, port_len, "%s", colon + 1);
	for (const char *p = port; *p; p++)
		if (*p < '0' || *p > '9')
			return -EINVAL;
	return 0;
}

/* ---- Messages ------------------------------------------------------------------ */

static int send_message(struct migrate_transport *t, enum migrate_code code, const char *detail)
{
	struct migrate_message m;
	memset(&m, 0, sizeof(m));
	memcpy(m.magic, MIGRATE_MESSAGE_MAGIC, 8);
	m.code = code;
	if (detail)
		snprintf(m.detail, sizeof(m.detail), "%s", detail);
	m.crc = vm_state_crc32c(0, &m, sizeof(m));
	return migrate_transport_write(t, &m, sizeof(m));
}

/* Wait for one message within timeout_ms; fills *m.  -ETIMEDOUT, -EPIPE
 * (closed), -EPROTO (garbled). */
static int receive_message(struct migrate_transport *t, struct migrate_message *m, int timeout_ms)
{
	migrate_transport_set_timeout(t, timeout_ms);
	int err = migrate_transport_read_exact(t, m, sizeof(*m));
	if (err)
		return err;
	uint32_t crc = m->crc;
	m->crc = 0;
	if (memcmp(m->magic, MIGRATE_MESSAGE_MAGIC, 8) != 0 ||
	    vm_state_crc32c(0, m, sizeof(*m)) != crc)
		return -EPROTO;
	m->detail[sizeof(m->detail) - 1] = '\0';
	return 0;
}

/* ---- Source ------------------------------------------------------------------- */

/* The migration stream as a pre-copy sink: memory.pages / memory.zero records. */
static int stream_write_pages(void *context, uint64_t first_page, uint32_t count, uint32_t round,
			      const uint8_t *data)
{
	struct vm_state_writer *w = context;
	struct vm_state_memory_pages h = { .gpa = first_page * PRECOPY_PAGE_BYTES,
					   .page_count = count,
					   .round = round };
	struct iovec iov[2] = { { &h, sizeof(h) },
				{ (void *)data, (size_t)count * PRECOPY_PAGE_BYTES } };
	return vm_state_putv(w, VM_STATE_MEMORY_PAGES, VM_STATE_RECORD_MANDATORY, iov, 2);
}

static int stream_write_zeros(void *context, uint64_t first_page, uint32_t count, uint32_t round)
{
	struct vm_state_writer *w = context;
	struct vm_state_memory_pages h = { .gpa = first_page * PRECOPY_PAGE_BYTES,
					   .page_count = count,
					   .round = round };
	return vm_state_put(w, VM_STATE_MEMORY_ZERO, VM_STATE_RECORD_MANDATORY, &h, sizeof(h));
}

static uint64_t stream_bytes_written(void *context)
{
	return ((struct vm_state_writer *)context)->offset_bytes;
}

static const struct precopy_sink_ops stream_sink = {
	.write_pages = stream_write_pages,
	.write_zeros = stream_write_zeros,
	.bytes_written = stream_bytes_written,
};

/* Disk locks: the destination takes them over between RELEASED and
 * RUNNING. */
static void disks_unlock(struct kapsel_vm *vm)
{
	for (unsigned i = 0; i < vm->device_count; i++) {
		struct kapsel_device *dev = vm->devices[i];
		struct disk_image *disk = dev->ops->disk_image ? dev->ops->disk_image(dev) : NULL;
		if (disk && disk->fd >= 0)
			flock(disk->fd, LOCK_UN);
	}
}

/* Returns false if a disk could not be locked again (the destination has
 * it: it may be running). */
static bool disks_relock(struct kapsel_vm *vm)
{
	bool all = true;
	for (unsigned i = 0; i < vm->device_count; i++) {
		struct kapsel_device *dev = vm->devices[i];
		struct disk_image *disk = dev->ops->disk_image ? dev->ops->disk_image(dev) : NULL;
		if (disk && disk->fd >= 0 &&
		    flock(disk->fd, (disk->readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0)
			all = false;
	}
	return all;
}

/* Host endpoints of devices (a NIC's socket path or tap): the destination
 * opens them from its own definition between RELEASED and RUNNING. */
static int devices_release_host(struct kapsel_vm *vm, char *error, size_t error_len)
{
	for (unsigned i = 0; i < vm->device_count; i++) {
		struct kapsel_device *dev = vm->devices[i];
		char detail[512];
		int err = dev->ops->host_release
				  ? dev->ops->host_release(dev, detail, sizeof(detail))
				  : 0;
		if (err)
			return kapsel_fail(error, error_len, err,
					   "device %u (%s) cannot hand its host end over: %s", i,
					   dev->ops->name, detail);
	}
	return 0;
}

/* The migration failed after devices_release_host: take them back, by
 * what release kept, never by a path (this process may be in a jail now,
 * and nothing the destination said is used).  Returns false (after
 * logging why) if one could not be taken back: the destination may hold
 * it, and be running. */
static bool devices_reacquire_host(struct kapsel_vm *vm)
{
	bool all = true;
	for (unsigned i = 0; i < vm->device_count; i++) {
		struct kapsel_device *dev = vm->devices[i];
		char detail[512];
		if (dev->ops->host_reacquire &&
		    dev->ops->host_reacquire(dev, detail, sizeof(detail)) < 0) {
			kapsel_error("device %u (%s): %s", i, dev->ops->name, detail);
			all = false;
		}
	}
	return all;
}

int migrate_send(struct kapsel_vm *vm, const char *uri, const struct migrate_options *options,
		 struct migrate_stats *stats, char *error, size_t error_len)
{
	struct migrate_options opt = { .max_rounds = MIGRATE_DEFAULT_MAX_ROUNDS,
				       .max_downtime_ms = MIGRATE_DEFAULT_MAX_DOWNTIME_MS,
				       .timeout_ms = 30000 };
	if (options) {
		if (options->max_rounds)
			opt.max_rounds = options->max_rounds;
		if (options->max_downtime_ms)
			opt.max_downtime_ms = options->max_downtime_ms;
		if (options->timeout_ms)
			opt.timeout_ms = options->timeout_ms;
		opt.security = options->security;
	}
	struct migrate_stats local_stats;
	if (!stats)
		stats = &local_stats;
	memset(stats, 0, sizeof(*stats));
	uint64_t start_ns = monotonic_ns();
	struct vm_state_writer w;
	struct precopy pc;
	bool paused = false, was_paused = false, quiesced = false;
	bool released = false, handed_over = false, destination_failed = false;
	uint64_t pause_ns = 0;
	int err;

	const struct precopy_options precopy_options = {
		.max_rounds = opt.max_rounds,
		.max_downtime_ms = opt.max_downtime_ms,
		.write_logged_pages = false, /* bandwidth: equal CRC, not sent again */
	};
	if (precopy_init(&pc, vm, &stream_sink, &w, &precopy_options) < 0)
		return kapsel_fail(error, error_len, -ENOMEM, "out of memory");

	struct migrate_transport *t = NULL;
	state_progress_phase("connect");
	err = migrate_transport_connect(uri, opt.security, (int)opt.timeout_ms, &t, error,
					error_len);
	if (err)
		goto out_free;
	vm_state_writer_init_io(&w, migrate_transport_write_io, t);

	err = precopy_start_logging(&pc);
	if (err) {
		kapsel_fail(error, error_len, err,
			    "KVM dirty logging (KVM_MEM_LOG_DIRTY_PAGES) failed: %s",
			    strerror(-err));
		goto out_close;
	}
	vm_state_put_begin(&w, VM_STATE_KIND_MIGRATION);
	err = snapshot_write_vm_header(vm, &w, error, error_len);
	if (err)
		goto out_close;
	/* Round 0 sends what RAM holds (holes are zero on both sides
	 * already), then the rounds of what the guest dirtied meanwhile. */
	if (!precopy_first_pass(&pc))
		precopy_rounds(&pc);
	stats->rounds = pc.rounds;
	if (pc.error) {
		err = pc.error;
		if (w.error)
			kapsel_fail(error, error_len, err, "the migration stream broke: %s",
				    migrate_transport_error(t)[0] ? migrate_transport_error(t)
								  : strerror(-err));
		else
			kapsel_fail(error, error_len, err, "KVM_GET_DIRTY_LOG failed: %s",
				    strerror(-err));
		goto out_close;
	}

	/* Stop and copy. */
	pause_ns = monotonic_ns();
	err = vm_pause(vm);
	if (err == -EALREADY) {
		was_paused = true;
	} else if (err) {
		kapsel_fail(error, error_len, err, "the VM stopped during the migration");
		goto out_close;
	}
	paused = true;
	snapshot_quiesce_devices(vm);
	quiesced = true;
	if (precopy_final_pass(&pc) && !w.error) {
		err = kapsel_fail(error, error_len, pc.error, "the final memory pass failed: %s",
				  strerror(-pc.error));
		goto out_close;
	}
	/* What the destination holds, from the per-page CRCs: reading all of
	 * RAM again here would keep the vCPU stopped for it. */
	uint32_t ram_crc = precopy_destination_crc(&pc, NULL);
	stats->pages_sent = pc.pages_sent;
	stats->zero_pages_sent = pc.zero_pages_sent;
	stats->final_pages = pc.final_pages;
	state_progress_update(vm->mem.size_bytes, w.offset_bytes);
	state_progress_phase("state");
	err = snapshot_write_vm_body(vm, &w, error, error_len);
	if (err)
		goto out_close;
	err = snapshot_write_vm_header(vm, &w, error, error_len); /* final clock */
	if (err)
		goto out_close;
	struct vm_state_memory_done done = { .memory_bytes = vm->mem.size_bytes,
					     .crc32c = ram_crc,
					     .rounds = pc.round };
	vm_state_put(&w, VM_STATE_MEMORY_DONE, VM_STATE_RECORD_MANDATORY, &done, sizeof(done));
	vm_state_put_end(&w);
	if (w.error) {
		err = kapsel_fail(error, error_len, w.error, "the migration stream broke: %s",
				  migrate_transport_error(t)[0] ? migrate_transport_error(t)
								: strerror(-w.error));
		goto out_close;
	}
	stats->bytes_sent = w.offset_bytes;
	state_progress_update(vm->mem.size_bytes, w.offset_bytes);
	state_progress_phase("handover");

	struct migrate_message m;
	err = receive_message(t, &m, (int)opt.timeout_ms);
	if (err || m.code != MIGRATE_PREPARED) {
		err = err ? err : -EPROTO;
		kapsel_fail(error, error_len, err, "the destination did not accept the VM: %s",
			    m.code == MIGRATE_FAILED && !err ? m.detail : strerror(-err));
		goto out_close;
	}
	disks_unlock(vm);
	released = true;
	err = devices_release_host(vm, error, error_len);
	if (err)
		goto out_close;
	/* From here the destination may run the VM (a send that failed may
	 * still have delivered RELEASED), unless it says FAILED. */
	handed_over = true;
	err = send_message(t, MIGRATE_RELEASED, NULL);
	if (!err)
		err = receive_message(t, &m, (int)opt.timeout_ms);
	if (err || m.code != MIGRATE_RUNNING) {
		destination_failed = !err && m.code == MIGRATE_FAILED;
		err = err ? err : -EPROTO;
		kapsel_fail(error, error_len, err, "the destination did not start the VM: %s",
			    m.code == MIGRATE_FAILED ? m.detail : strerror(-err));
		goto out_close;
	}
	/* The destination runs the VM now: this one ends. */
	stats->downtime_ns = monotonic_ns() - pause_ns;
	stats->total_ns = monotonic_ns() - start_ns;
	vm_request_stop_for(vm, VM_STOP_MIGRATED);
	vm_resume(vm);
	migrate_transport_close(t);
	precopy_free(&pc);
	return 0;

out_close:
	migrate_transport_close(t);
	if (released && (!disks_relock(vm) || !devices_reacquire_host(vm))) {
		/* The destination holds a disk or a host link: it may be
		 * running.  Two copies must never run, so this one stops. */
		kapsel_error("migration to %s: the destination took the disks or links and then failed to confirm; stopping this copy of the VM",
			     uri);
		kapsel_fail(error, error_len, -ENOTRECOVERABLE,
			    "the destination took the VM's disks or links but did not confirm it runs; this copy stopped (the VM may run at %s)",
			    uri);
		err = -ENOTRECOVERABLE;
		vm_request_stop(vm);
		if (paused && !was_paused)
			vm_resume(vm);
		paused = false;
	} else if (handed_over && !destination_failed) {
		/* Nothing exclusive tells whether the destination runs it (a
		 * VM without disks or links), and its answer was lost: resuming
		 * could make two copies.  This one stays paused for the
		 * operator to decide. */
		kapsel_fail(error, error_len, -EINPROGRESS,
			    "the destination's answer after the hand-over was lost (%s): it may be running the VM, so this copy stays paused; 'kapsel resume %s' if %s does not run it, else 'kapsel destroy %s'",
			    strerror(-err), vm->config->name, uri, vm->config->name);
		kapsel_error("migration to %s: %s", uri, error);
		err = -EINPROGRESS;
		paused = false; /* left paused: not resumed below */
	}
	if (quiesced)
		snapshot_resume_devices(vm);
	precopy_stop_logging(&pc);
	if (paused && !was_paused)
		vm_resume(vm);
out_free:
	precopy_free(&pc);
	return err;
}

/* ---- Destination ---------------------------------------------------------------- */

/*
 * Device order on the destination.  The saved state names devices by index
 * (apply_devices in snapshot.c, the guest's device table in start info,
 * doorbell ports), so an incoming VM must get the canonical order a created
 * or restored one gets: console, UART, disks, NICs, entropy (devices_attach).
 * Its disks may be opened only once the source has released them (flock),
 * i.e. after MIGRATE_RELEASED.  Two ways to honour both: reserve each disk's
 * slot early and open its image late, or attach every device late.  We
 * attach every device late, with the one devices_attach: a disk's
 * descriptor (capacity, read-only flag) and its PV block I/O thread come
 * from the opened image, so a reserved-but-closed disk would be a half-built
 * device every disk model had to handle, for no gain.  The cost: a NIC
 * backend or entropy device that cannot be set up is found after the memory
 * transfer rather than before it; the destination then reports FAILED and
 * the source takes its disks back and runs on, as for a disk that does not
 * open.  Memory arrives into a VM without devices: nothing touches guest
 * RAM meanwhile, and vm_add_device rewrites the start-info device table
 * with the same entries the source's memory holds (apply_devices checks).
 */
int migrate_receive(const char *uri, const struct vm_config *overrides, struct kapsel_vm *vm,
		    struct vm_config *config, char *error, size_t error_len)
{
	struct vm_state_records header = { 0 }, final = { 0 };
	struct vm_state_reader r;
	struct vm_state_record rec;
	bool created = false, memory_started = false, memory_done = false;
	char detail[512];
	int err;
	struct migrate_transport *conn = NULL;

	vm_config_init(config);
	/* uri carries the security options: "tcp:ADDR:PORT,psk=FILE". */
	err = migrate_transport_accept(uri, 30000, &conn, error, error_len);
	if (err)
		return err;
	uint64_t start_ns = monotonic_ns();

	vm_state_reader_init_io(&r, migrate_transport_read_io, conn, "migration stream",
				VM_STATE_KIND_MIGRATION, error, error_len);
	while ((err = vm_state_next(&r, &rec)) == 1) {
		if (rec.type == VM_STATE_MEMORY_PAGES || rec.type == VM_STATE_MEMORY_ZERO) {
			if (!memory_started) {
				/* The definition is complete: create the VM, its
				 * devices later (the source still holds the disks). */
				struct vm_state_vm_info info;
				const struct vm_state_stored_record *i =
					vm_state_find(&header, VM_STATE_VM_INFO, NULL);
				if (!i || i->length_bytes != sizeof(info)) {
					err = vm_state_fail(&r, -EPROTO,
							    "no VM information before the memory");
					break;
				}
				memcpy(&info, i->payload, sizeof(info));
				header.begin = r.begin; /* the format decides the record */
				err = snapshot_config_from_records(&header, config, detail,
								   sizeof(detail));
				if (err) {
					vm_state_fail(&r, err, "%s", detail);
					break;
				}
				if (info.memory_bytes != config->memory_bytes) {
					err = vm_state_fail(
						&r, -EPROTO,
						"the VM information and definition disagree on the RAM size");
					break;
				}
				err = snapshot_adopt_local_definition(overrides, config, detail,
								      sizeof(detail));
				if (err) {
					vm_state_fail(&r, err, "%s", detail);
					break;
				}
				if (overrides) {
					if (overrides->name[0])
						snprintf(config->name, sizeof(config->name), "%s",
							 overrides->name);
					if (overrides->console_output_path)
						config->console_output_path =
							strdup(overrides->console_output_path);
					config->console_output_max_bytes =
						overrides->console_output_max_bytes;
					config->console_input = overrides->console_input;
					config->print_stats = overrides->print_stats;
					if (overrides->stats_path)
						config->stats_path = strdup(overrides->stats_path);
				}
				err = vm_create_without_devices(vm, config);
				if (err) {
					vm_state_fail(&r, err, "cannot create the VM (see above)");
					break;
				}
				created = true;
				vm->incoming = true;
				guest_memory_clear(&vm->mem);
				memory_started = true;
			}
			struct vm_state_memory_pages h;
			if (rec.length_bytes < sizeof(h)) {
				err = vm_state_fail(&r, -EPROTO, "malformed memory record");
				break;
			}
			memcpy(&h, rec.payload, sizeof(h));
			uint64_t bytes = (uint64_t)h.page_count * PAGE_BYTES;
			uint8_t *dest = guest_memory_translate(&vm->mem, h.gpa, bytes);
			bool data = rec.type == VM_STATE_MEMORY_PAGES;
			if (!dest || h.gpa % PAGE_BYTES || h.page_count == 0 ||
			    rec.length_bytes != sizeof(h) + (data ? bytes : 0)) {
				err = vm_state_fail(
					&r, -EPROTO,
					"memory record for %u pages at %#llx is outside the VM's RAM or malformed",
					h.page_count, (unsigned long long)h.gpa);
				break;
			}
			if (data)
				memcpy(dest, rec.payload + sizeof(h), (size_t)bytes);
			else
				memset(dest, 0, (size_t)bytes);
			continue;
		}
		if (rec.type == VM_STATE_MEMORY_DONE) {
			struct vm_state_memory_done d;
			if (!created || rec.length_bytes != sizeof(d)) {
				err = vm_state_fail(&r, -EPROTO, "malformed memory end record");
				break;
			}
			memcpy(&d, rec.payload, sizeof(d));
			uint32_t crc = precopy_memory_crc(&vm->mem);
			if (d.memory_bytes != vm->mem.size_bytes || crc != d.crc32c) {
				err = vm_state_fail(
					&r, -EPROTO,
					"the received RAM does not match the source's (CRC32C %#x, source %#x)",
					crc, d.crc32c);
				break;
			}
			memory_done = true;
			continue;
		}
		if (!vm_state_record_known(rec.type)) {
			err = vm_state_unknown_record(&r, &rec);
			if (err)
				break;
			continue;
		}
		/* Kept in order for the final apply, within the reader's caps
		 * (nothing is authenticated yet: a peer must not make us hoard). */
		err = vm_state_records_keep(&r, memory_started ? &final : &header, &rec);
		if (err)
			break;
	}
	vm_state_reader_free(&r);
	if (err < 0 && migrate_transport_error(conn)[0]) {
		/* Why the connection failed (e.g. a TLS record changed on the way). */
		size_t used = strlen(error);
		snprintf(error + used, error_len - used, " (%s)", migrate_transport_error(conn));
	}
	if (err == 0 && !memory_done)
		err = kapsel_fail(error, error_len, -EPROTO,
				  "migration stream: it ended without the memory end record");
	if (err)
		goto fail;

	/* Everything arrived: the source may let go of the disks. */
	err = snapshot_check_disks(&final, config, detail, sizeof(detail));
	if (err) {
		kapsel_fail(error, error_len, err, "%s", detail);
		goto fail;
	}
	struct migrate_message m;
	err = send_message(conn, MIGRATE_PREPARED, NULL);
	if (!err)
		err = receive_message(conn, &m, 30000);
	if (err || m.code != MIGRATE_RELEASED) {
		kapsel_fail(error, error_len, err ? err : -EPROTO,
			    "the source did not hand over the disks: %s",
			    strerror(err ? -err : EPROTO));
		goto fail;
	}
	err = devices_attach(vm);
	if (err) {
		kapsel_fail(error, error_len, err,
			    "cannot attach the VM's devices (disks, network, see above)");
		goto fail;
	}
	err = snapshot_apply_vm_records(vm, &final, false, detail, sizeof(detail));
	if (err) {
		kapsel_fail(error, error_len, err, "%s", detail);
		goto fail;
	}
	err = send_message(conn, MIGRATE_RUNNING, NULL);
	if (err) {
		kapsel_fail(error, error_len, err, "the source went away before the hand-over: %s",
			    strerror(-err));
		goto fail;
	}
	/* The VM is ours now: what the source's devices left (a socket
	 * moved aside) is no longer to be given back. */
	for (unsigned i = 0; i < vm->device_count; i++)
		if (vm->devices[i]->ops->host_confirm)
			vm->devices[i]->ops->host_confirm(vm->devices[i]);
	vm->incoming = false;
	kapsel_debug("migration received in %.3f ms", (monotonic_ns() - start_ns) / 1e6);
	migrate_transport_close(conn);
	vm_state_records_free(&header);
	vm_state_records_free(&final);
	return 0;

fail:
	/* Let go of what this side opened (disk locks, a NIC's tap; a NIC's
	 * socket path gets the source's socket back) before saying FAILED:
	 * the source takes them back as soon as it reads it, and finding them
	 * still held it would stop (disks, taps) or run on without its link
	 * (sockets). */
	if (created)
		vm_destroy(vm);
	if (conn) {
		send_message(conn, MIGRATE_FAILED, error);
		migrate_transport_close(conn);
	}
	vm_state_records_free(&header);
	vm_state_records_free(&final);
	return err;
}
