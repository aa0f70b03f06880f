/* Fuzz target: the saved-VM record stream reader (vm_state.c) from memory and from a file descriptor, and the VM definition read back from it (definition.c). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config/config.h"
#include "fuzz_common.h"
#include "core/log.h"
#include "state/snapshot.h"
#include "state/vm_state.h"

/*
 * Input byte 0: bit 0 picks raw mode (the rest is the stream, checksums
 * and all, so mostly refused early) or built mode (the rest describes
 * records that are framed with correct checksums here, so the fuzzer gets
 * past them); bits 1-2 the stream kind the reader expects.
 * Built mode: a begin byte (bit 7: its kind from bits 0-1 instead of the
 * expected one; bit 6: format version 1, whose definition is text), then
 * records of [u8 type pick][u8 flags][u16 length][payload]
 * until the input ends, then framing quirks from the last record's
 * pick: no END, a wrong END count, a corrupted byte, trailing bytes.
 */

static const uint32_t record_types[] = {
	VM_STATE_BEGIN,	       VM_STATE_END,	      VM_STATE_MANIFEST_FILE,
	VM_STATE_VM_INFO,      VM_STATE_CONFIG_TEXT,  VM_STATE_EVTCHN,
	VM_STATE_DEVICE,       VM_STATE_NOTE,	      VM_STATE_VCPU_REGS,
	VM_STATE_VCPU_SREGS,   VM_STATE_VCPU_MSRS,    VM_STATE_MEMORY_PAGES,
	VM_STATE_MEMORY_DONE,  VM_STATE_DISK,	      VM_STATE_DEV_UART16550,
	VM_STATE_DEV_BLOCK_PV, VM_STATE_DEV_ATA_DISK, 0x7777,
	VM_STATE_DEFINITION,
};

static int memfd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	kapsel_log_set_quiet(true);
	memfd = memfd_create("kapsel-fuzz-state", MFD_CLOEXEC);
	FUZZ_CHECK(memfd >= 0);
	return 0;
}

/* Frame the described records into a stream. */
static void build(struct fuzz_input *in, enum vm_state_stream_kind kind, struct vm_state_writer *w)
{
	vm_state_writer_init_buffer(w);
	uint8_t quirks = 0;
	uint8_t begin_kind = fuzz_u8(in);
	enum vm_state_stream_kind begin_as =
		begin_kind & 0x80 ? (enum vm_state_stream_kind)(begin_kind & 3) : kind;
	if (begin_kind & 0x40) {
		struct vm_state_begin begin = { .format_version = VM_STATE_FORMAT_VERSION_OLDEST,
						.kind = begin_as };
		memcpy(begin.magic, VM_STATE_MAGIC, sizeof(begin.magic));
		vm_state_put(w, VM_STATE_BEGIN, VM_STATE_RECORD_MANDATORY, &begin, sizeof(begin));
	} else {
		vm_state_put_begin(w, begin_as);
	}
	while (fuzz_left(in) >= 4) {
		uint8_t pick = fuzz_u8(in), flags = fuzz_u8(in);
		uint16_t length = fuzz_u16(in);
		uint8_t *payload = malloc(length ? length : 1);
		fuzz_bytes(in, payload, length);
		quirks = pick;
		vm_state_put(w,
			     record_types[pick % (sizeof(record_types) / sizeof(record_types[0]))],
			     flags & 1, payload, length);
		free(payload);
	}
	if (!(quirks & 0x20)) {
		struct vm_state_end end = { .record_count =
						    w->record_count - (quirks & 0x40 ? 1 : 0) };
		vm_state_put(w, VM_STATE_END, VM_STATE_RECORD_MANDATORY, &end, sizeof(end));
	}
	if (w->buffer_bytes && (quirks & 0x10))
		w->buffer[(size_t)quirks * 7 % w->buffer_bytes] ^= 1;
	if (quirks & 0x08) {
		uint8_t garbage[3] = { 1, 2, 3 };
		vm_state_put(w, VM_STATE_NOTE, 0, garbage, 0); /* after END */
	}
}

static int read_stream(struct vm_state_reader *r, size_t *count)
{
	struct vm_state_records records;
	int rc = vm_state_read_all(r, &records);
	*count = records.count;
	if (rc == 0) {
		for (size_t i = 0; i < records.count; i++) {
			const struct vm_state_stored_record *s = &records.records[i];
			(void)vm_state_record_name(s->type);
			(void)vm_state_record_known(s->type);
			FUZZ_CHECK(s->length_bytes <= VM_STATE_MAX_RECORD_BYTES);
		}
		/* The definition a restore would create the VM from. */
		struct vm_config config;
		char error[512] = "";
		vm_config_init(&config);
		int err = snapshot_config_from_records(&records, &config, error, sizeof(error));
		FUZZ_CHECK(err == 0 || (err < 0 && error[0] != '\0'));
		if (err == 0)
			FUZZ_CHECK(config.kernel_path != NULL &&
				   config.disk_count <= VM_CONFIG_MAX_DISKS);
		vm_config_free(&config);
	}
	vm_state_records_free(&records);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (memfd < 0)
		LLVMFuzzerInitialize(NULL, NULL);
	struct fuzz_input in = { data, size, 0 };
	uint8_t mode = fuzz_u8(&in);
	enum vm_state_stream_kind kind = (enum vm_state_stream_kind)(1 + (mode >> 1) % 3);
	struct vm_state_writer w = { 0 };
	const uint8_t *stream = in.data + in.pos;
	size_t stream_bytes = fuzz_left(&in);
	if (mode & 1) {
		build(&in, kind, &w);
		stream = w.buffer;
		stream_bytes = w.buffer_bytes;
	}

	/* From memory ... */
	char error[512] = "";
	struct vm_state_reader r;
	vm_state_reader_init_buffer(&r, stream, stream_bytes, "fuzz.bin", kind, error,
				    sizeof(error));
	size_t buffer_count;
	int buffer_rc = read_stream(&r, &buffer_count);
	vm_state_reader_free(&r);
	FUZZ_CHECK(buffer_rc == 0 || (buffer_rc < 0 && error[0] != '\0'));

	/* ... and from a file descriptor: the same verdict, except that only
	 * a buffer knows what follows the end record. */
	FUZZ_CHECK(ftruncate(memfd, 0) == 0);
	FUZZ_CHECK(pwrite(memfd, stream, stream_bytes, 0) == (ssize_t)stream_bytes);
	FUZZ_CHECK(lseek(memfd, 0, SEEK_SET) == 0);
	char fd_error[512] = "";
	vm_state_reader_init_fd(&r, memfd, "fuzz.bin", kind, fd_error, sizeof(fd_error));
	size_t fd_count;
	int fd_rc = read_stream(&r, &fd_count);
	vm_state_reader_free(&r);
	FUZZ_CHECK(fd_rc == 0 || (fd_rc < 0 && fd_error[0] != '\0'));
	if (buffer_rc == 0)
		FUZZ_CHECK(fd_rc == 0 && fd_count == buffer_count);
	if (fd_rc < 0)
		FUZZ_CHECK(buffer_rc < 0);

	vm_state_writer_free(&w);
	return 0;
}
