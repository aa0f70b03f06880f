/* The saved-VM format: a typed, checksummed record stream, the sparse memory file and the atomic state directory. */
#define _GNU_SOURCE
#include "state/vm_state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error_text.h"
#include "state/progress.h"

#define PAGE_BYTES 4096u
#define IO_CHUNK_BYTES (1u << 20)

/* ---- CRC32C ----------------------------------------------------------------- */

#define CRC32C_POLY_REFLECTED 0x82f63b78u

static uint32_t crc32c_table[8][256];
static int crc32c_hardware = -1; /* -1: not decided yet */

static void crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ ((c & 1) ? CRC32C_POLY_REFLECTED : 0);
		crc32c_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc32c_table[t][i] = (crc32c_table[t - 1][i] >> 8) ^
					     crc32c_table[0][crc32c_table[t - 1][i] & 0xff];
	__builtin_cpu_init();
	crc32c_hardware = __builtin_cpu_supports("sse4.2") ? 1 : 0;
}

/* Slicing-by-8 software version, on the pre-inverted value. */
static uint32_t crc32c_software(uint32_t c, const uint8_t *p, size_t n)
{
	while (n && ((uintptr_t)p & 7)) {
		c = (c >> 8) ^ crc32c_table[0][(c ^ *p++) & 0xff];
		n--;
	}
	while (n >= 8) {
		uint64_t word;
		memcpy(&word, p, 8);
		word ^= c;
		c = crc32c_table[7][word & 0xff] ^ crc32c_table[6][(word >> 8) & 0xff] ^
		    crc32c_table[5][(word >> 16) & 0xff] ^ crc32c_table[4][(word >> 24) & 0xff] ^
		    crc32c_table[3][(word >> 32) & 0xff] ^ crc32c_table[2][(word >> 40) & 0xff] ^
		    crc32c_table[1][(word >> 48) & 0xff] ^ crc32c_table[0][word >> 56];
		p += 8;
		n -= 8;
	}
	while (n--)
		c = (c >> 8) ^ crc32c_table[0][(c ^ *p++) & 0xff];
	return c;
}

/* The SSE4.2 crc32 instruction computes exactly CRC32C.  Three independent
 * streams hide the instruction's 3-cycle latency on long buffers. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t c, const uint8_t *p,
							       size_t n)
{
	uint64_t c0 = c;
	while (n && ((uintptr_t)p & 7)) {
		c0 = __builtin_ia32_crc32qi((uint32_t)c0, *p++);
		n--;
	}
	while (n >= 8) {
		uint64_t word;
		memcpy(&word, p, 8);
		c0 = __builtin_ia32_crc32di(c0, word);
		p += 8;
		n -= 8;
	}
	while (n--)
		c0 = __builtin_ia32_crc32qi((uint32_t)c0, *p++);
	return (uint32_t)c0;
}

uint32_t vm_state_crc32c(uint32_t crc, const void *data, size_t length_bytes)
{
	if (crc32c_hardware < 0)
		crc32c_init();
	uint32_t c = ~crc;
	if (crc32c_hardware)
		c = crc32c_sse42(c, data, length_bytes);
	else
		c = crc32c_software(c, data, length_bytes);
	return ~c;
}

/* GF(2) 32x32 matrices, one column per word: the CRC register update for
 * zero input is linear, so n zero bytes are the matrix M^n (squaring). */
static uint32_t gf2_times(const uint32_t matrix[32], uint32_t vector)
{
	uint32_t sum = 0;
	for (int i = 0; vector; i++, vector >>= 1)
		if (vector & 1)
			sum ^= matrix[i];
	return sum;
}

static void gf2_square(uint32_t square[32], const uint32_t matrix[32])
{
	for (int i = 0; i < 32; i++)
		square[i] = gf2_times(matrix, matrix[i]);
}

uint32_t vm_state_crc32c_zeros(uint32_t crc, uint64_t length_bytes)
{
	static const uint8_t zeros[256];
	if (length_bytes <= sizeof(zeros))
		return vm_state_crc32c(crc, zeros, (size_t)length_bytes);
	uint32_t odd[32], even[32];
	odd[0] = CRC32C_POLY_REFLECTED; /* one zero bit */
	for (int i = 1; i < 32; i++)
		odd[i] = 1u << (i - 1);
	gf2_square(even, odd); /* two zero bits */
	gf2_square(odd, even); /* four */
	uint32_t c = ~crc;     /* the register, before the final inversion */
	do {
		gf2_square(even, odd); /* 8, 32, 128, ... bits: 1, 4, 16 ... bytes */
		if (length_bytes & 1)
			c = gf2_times(even, c);
		length_bytes >>= 1;
		if (!length_bytes)
			break;
		gf2_square(odd, even);
		if (length_bytes & 1)
			c = gf2_times(odd, c);
		length_bytes >>= 1;
	} while (length_bytes);
	return ~c;
}

/* ---- Writer ----------------------------------------------------------------- */

void vm_state_writer_init_fd(struct vm_state_writer *w, int fd)
{
	memset(w, 0, sizeof(*w));
	w->fd = fd;
}

void vm_state_writer_init_io(struct vm_state_writer *w,
			     int (*write_fn)(void *context, const void *data, size_t length_bytes),
			     void *context)
{
	memset(w, 0, sizeof(*w));
	w->fd = -1;
	w->write_fn = write_fn;
	w->io_context = context;
}

void vm_state_writer_init_buffer(struct vm_state_writer *w)
{
	memset(w, 0, sizeof(*w));
	w->fd = -1;
}

void vm_state_writer_free(struct vm_state_writer *w)
{
	free(w->buffer);
	w->buffer = NULL;
	w->buffer_bytes = w->buffer_capacity = 0;
}

static int write_all(int fd, const void *data, size_t length)
{
	const uint8_t *p = data;
	while (length) {
		ssize_t n = write(fd, p, length);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		length -= (size_t)n;
	}
	return 0;
}

static int writer_emit(struct vm_state_writer *w, const void *data, size_t length)
{
	if (w->error)
		return w->error;
	if (!length)
		return 0;
	if (w->fd >= 0 || w->write_fn) {
		int err = w->write_fn ? w->write_fn(w->io_context, data, length)
				      : write_all(w->fd, data, length);
		if (err) {
			w->error = err;
			return err;
		}
	} else {
		if (w->buffer_bytes + length > w->buffer_capacity) {
			size_t capacity = w->buffer_capacity ? w->buffer_capacity : 4096;
			while (capacity < w->buffer_bytes + length)
				capacity *= 2;
			uint8_t *grown = realloc(w->buffer, capacity);
			if (!grown) {
				w->error = -ENOMEM;
				return w->error;
			}
			w->buffer = grown;
			w->buffer_capacity = capacity;
		}
		memcpy(w->buffer + w->buffer_bytes, data, length);
		w->buffer_bytes += length;
	}
	w->stream_crc = vm_state_crc32c(w->stream_crc, data, length);
	w->offset_bytes += length;
	return 0;
}

int vm_state_putv(struct vm_state_writer *w, uint32_t type, uint32_t flags, const struct iovec *iov,
		  int iov_count)
{
	if (w->error)
		return w->error;
	struct vm_state_record_header header = { .type = type, .flags = flags };
	for (int i = 0; i < iov_count; i++)
		header.length_bytes += iov[i].iov_len;
	if (header.length_bytes > VM_STATE_MAX_RECORD_BYTES) {
		w->error = -EMSGSIZE;
		return w->error;
	}
	for (int i = 0; i < iov_count; i++)
		header.payload_crc =
			vm_state_crc32c(header.payload_crc, iov[i].iov_base, iov[i].iov_len);
	header.header_crc =
		vm_state_crc32c(0, &header, offsetof(struct vm_state_record_header, header_crc));
	int err = writer_emit(w, &header, sizeof(header));
	for (int i = 0; !err && i < iov_count; i++)
		err = writer_emit(w, iov[i].iov_base, iov[i].iov_len);
	if (!err)
		w->record_count++;
	return err;
}

int vm_state_put(struct vm_state_writer *w, uint32_t type, uint32_t flags, const void *payload,
		 uint64_t length_bytes)
{
	struct iovec iov = { .iov_base = (void *)payload, .iov_len = (size_t)length_bytes };
	return vm_state_putv(w, type, flags, &iov, length_bytes ? 1 : 0);
}

int vm_state_put_begin(struct vm_state_writer *w, enum vm_state_stream_kind kind)
{
	struct vm_state_begin begin = {
		.format_version = VM_STATE_FORMAT_VERSION,
		.kind = kind,
	};
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	begin.created_unix_ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
	memcpy(begin.magic, VM_STATE_MAGIC, sizeof(begin.magic));
	snprintf(begin.writer, sizeof(begin.writer), "kapsel %s", KAPSEL_VERSION);
	return vm_state_put(w, VM_STATE_BEGIN, VM_STATE_RECORD_MANDATORY, &begin, sizeof(begin));
}

int vm_state_put_end(struct vm_state_writer *w)
{
	struct vm_state_end end = { .record_count = w->record_count };
	return vm_state_put(w, VM_STATE_END, VM_STATE_RECORD_MANDATORY, &end, sizeof(end));
}

/* ---- Reader ----------------------------------------------------------------- */

static void reader_init(struct vm_state_reader *r, const char *what,
			enum vm_state_stream_kind expected_kind, char *error, size_t error_len)
{
	memset(r, 0, sizeof(*r));
	r->fd = -1;
	r->what = what;
	r->expected_kind = expected_kind;
	r->error = error;
	r->error_len = error_len;
	if (error && error_len)
		error[0] = '\0';
}

void vm_state_reader_init_fd(struct vm_state_reader *r, int fd, const char *what,
			     enum vm_state_stream_kind expected_kind, char *error, size_t error_len)
{
	reader_init(r, what, expected_kind, error, error_len);
	r->fd = fd;
}

void vm_state_reader_init_io(struct vm_state_reader *r,
			     ssize_t (*read_fn)(void *context, void *data, size_t length_bytes),
			     void *context, const char *what,
			     enum vm_state_stream_kind expected_kind, char *error, size_t error_len)
{
	reader_init(r, what, expected_kind, error, error_len);
	r->read_fn = read_fn;
	r->io_context = context;
}

void vm_state_reader_init_buffer(struct vm_state_reader *r, const void *data, size_t length_bytes,
				 const char *what, enum vm_state_stream_kind expected_kind,
				 char *error, size_t error_len)
{
	reader_init(r, what, expected_kind, error, error_len);
	r->buffer = data;
	r->buffer_bytes = length_bytes;
}

void vm_state_reader_free(struct vm_state_reader *r)
{
	free(r->payload);
	r->payload = NULL;
	r->payload_capacity = 0;
}

int vm_state_fail(struct vm_state_reader *r, int err, const char *fmt, ...)
{
	if (r->error && r->error_len) {
		char detail[400];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(detail, sizeof(detail), fmt, ap);
		va_end(ap);
		snprintf(r->error, r->error_len, "%s: %s", r->what ? r->what : "state stream",
			 detail);
	}
	return err;
}

/* Read exactly length bytes; returns length, or fewer at the end of the
 * stream, or -errno. */
static bool reader_from_buffer(const struct vm_state_reader *r)
{
	return r->fd < 0 && !r->read_fn;
}

static ssize_t reader_read(struct vm_state_reader *r, void *data, size_t length)
{
	if (reader_from_buffer(r)) {
		size_t left = r->buffer_bytes - (size_t)r->offset_bytes;
		size_t n = length < left ? length : left;
		memcpy(data, r->buffer + r->offset_bytes, n);
		r->offset_bytes += n;
		return (ssize_t)n;
	}
	size_t done = 0;
	while (done < length) {
		ssize_t n = r->read_fn ? r->read_fn(r->io_context, (uint8_t *)data + done,
						    length - done)
				       : read(r->fd, (uint8_t *)data + done, length - done);
		if (r->read_fn && n < 0) {
			errno = (int)-n;
			n = -1;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	r->offset_bytes += done;
	return (ssize_t)done;
}

/* Read one raw record, checking framing and checksums only. */
static int reader_raw(struct vm_state_reader *r, struct vm_state_record *rec)
{
	struct vm_state_record_header header;
	uint64_t offset = r->offset_bytes;
	ssize_t n = reader_read(r, &header, sizeof(header));
	if (n < 0)
		return vm_state_fail(r, -EIO, "read error at byte %llu: %s",
				     (unsigned long long)offset, strerror((int)-n));
	if (n == 0)
		return vm_state_fail(
			r, -EPROTO,
			"truncated: the stream ends at byte %llu after %llu records, without its end record; the save or transfer did not finish",
			(unsigned long long)offset, (unsigned long long)r->record_count);
	if ((size_t)n < sizeof(header))
		return vm_state_fail(r, -EPROTO,
				     "truncated inside the header of record %llu at byte %llu",
				     (unsigned long long)r->record_count,
				     (unsigned long long)offset);
	uint32_t header_crc =
		vm_state_crc32c(0, &header, offsetof(struct vm_state_record_header, header_crc));
	if (header_crc != header.header_crc)
		return vm_state_fail(
			r, -EPROTO,
			"record %llu at byte %llu has a corrupt header (checksum %#x, expected %#x)",
			(unsigned long long)r->record_count, (unsigned long long)offset, header_crc,
			header.header_crc);
	if (header.length_bytes > VM_STATE_MAX_RECORD_BYTES)
		return vm_state_fail(
			r, -EPROTO,
			"record %llu (type %#x) claims %llu bytes, over the %llu-byte limit",
			(unsigned long long)r->record_count, header.type,
			(unsigned long long)header.length_bytes,
			(unsigned long long)VM_STATE_MAX_RECORD_BYTES);
	if (reader_from_buffer(r) && header.length_bytes > r->buffer_bytes - r->offset_bytes)
		return vm_state_fail(
			r, -EPROTO,
			"truncated inside record %llu (type %#x): %llu payload bytes announced, %llu present",
			(unsigned long long)r->record_count, header.type,
			(unsigned long long)header.length_bytes,
			(unsigned long long)(r->buffer_bytes - r->offset_bytes));
	if (header.length_bytes > r->payload_capacity) {
		size_t capacity = r->payload_capacity ? r->payload_capacity : 4096;
		while (capacity < header.length_bytes)
			capacity *= 2;
		uint8_t *grown = realloc(r->payload, capacity);
		if (!grown)
			return vm_state_fail(r, -ENOMEM, "out of memory for a %llu-byte record",
					     (unsigned long long)header.length_bytes);
		r->payload = grown;
		r->payload_capacity = capacity;
	}
	n = reader_read(r, r->payload, (size_t)header.length_bytes);
	if (n < 0)
		return vm_state_fail(r, -EIO, "read error in record %llu: %s",
				     (unsigned long long)r->record_count, strerror((int)-n));
	if ((uint64_t)n < header.length_bytes)
		return vm_state_fail(
			r, -EPROTO,
			"truncated inside record %llu (type %#x): %llu payload bytes announced, %zd present",
			(unsigned long long)r->record_count, header.type,
			(unsigned long long)header.length_bytes, n);
	uint32_t payload_crc = vm_state_crc32c(0, r->payload, (size_t)header.length_bytes);
	if (payload_crc != header.payload_crc)
		return vm_state_fail(
			r, -EPROTO,
			"record %llu (%s, type %#x) at byte %llu is corrupt: payload checksum %#x, expected %#x",
			(unsigned long long)r->record_count,
			vm_state_record_name(header.type) ? vm_state_record_name(header.type)
							  : "unknown",
			header.type, (unsigned long long)offset, payload_crc, header.payload_crc);
	rec->type = header.type;
	rec->flags = header.flags;
	rec->length_bytes = header.length_bytes;
	rec->payload = r->payload;
	rec->offset_bytes = offset;
	rec->index = r->record_count++;
	return 1;
}

static const char *kind_name(uint32_t kind)
{
	switch (kind) {
	case VM_STATE_KIND_STATE:
		return "VM state";
	case VM_STATE_KIND_MANIFEST:
		return "manifest";
	case VM_STATE_KIND_MIGRATION:
		return "migration stream";
	}
	return "unknown kind";
}

static int reader_begin(struct vm_state_reader *r)
{
	struct vm_state_record rec;
	if (r->offset_bytes == 0 && reader_from_buffer(r) && r->buffer_bytes == 0)
		return vm_state_fail(r, -EPROTO, "is empty; it is not a Kapsel state file");
	int rc = reader_raw(r, &rec);
	if (rc < 0)
		return rc; /* the message says what is wrong with the first record */
	if (rec.type != VM_STATE_BEGIN || rec.length_bytes != sizeof(struct vm_state_begin))
		return vm_state_fail(
			r, -EPROTO,
			"does not start with a begin record; it is not a Kapsel state stream");
	memcpy(&r->begin, rec.payload, sizeof(r->begin));
	if (memcmp(r->begin.magic, VM_STATE_MAGIC, sizeof(r->begin.magic)) != 0)
		return vm_state_fail(r, -EPROTO, "bad magic; it is not a Kapsel state stream");
	if (r->begin.format_version < VM_STATE_FORMAT_VERSION_OLDEST ||
	    r->begin.format_version > VM_STATE_FORMAT_VERSION)
		return vm_state_fail(
			r, -EPROTO,
			"format version %u, but this Kapsel reads versions %u to %u only; use the Kapsel that wrote it",
			r->begin.format_version, VM_STATE_FORMAT_VERSION_OLDEST,
			VM_STATE_FORMAT_VERSION);
	if (r->begin.kind != r->expected_kind)
		return vm_state_fail(r, -EPROTO, "is a %s, expected a %s", kind_name(r->begin.kind),
				     kind_name(r->expected_kind));
	r->began = true;
	return 0;
}

int vm_state_next(struct vm_state_reader *r, struct vm_state_record *rec)
{
	if (r->ended)
		return 0;
	if (!r->began) {
		int err = reader_begin(r);
		if (err)
			return err;
	}
	int rc = reader_raw(r, rec);
	if (rc < 0)
		return rc;
	if (rec->type == VM_STATE_BEGIN)
		return vm_state_fail(r, -EPROTO, "a second begin record at byte %llu",
				     (unsigned long long)rec->offset_bytes);
	if (rec->type != VM_STATE_END)
		return 1;
	struct vm_state_end end;
	if (rec->length_bytes != sizeof(end))
		return vm_state_fail(r, -EPROTO, "malformed end record");
	memcpy(&end, rec->payload, sizeof(end));
	if (end.record_count != rec->index)
		return vm_state_fail(
			r, -EPROTO,
			"the end record counts %llu records but %llu came before it; records are missing or were added",
			(unsigned long long)end.record_count, (unsigned long long)rec->index);
	if (reader_from_buffer(r) && r->offset_bytes != r->buffer_bytes)
		return vm_state_fail(r, -EPROTO, "%llu bytes of garbage after the end record",
				     (unsigned long long)(r->buffer_bytes - r->offset_bytes));
	r->ended = true;
	return 0;
}

int vm_state_unknown_record(struct vm_state_reader *r, const struct vm_state_record *rec)
{
	if (!(rec->flags & VM_STATE_RECORD_MANDATORY))
		return 0;
	return vm_state_fail(
		r, -EPROTO,
		"record %llu has type %#x, which this Kapsel does not know and which is marked mandatory; it was written by a newer Kapsel",
		(unsigned long long)rec->index, rec->type);
}

/* ---- Records in memory ------------------------------------------------------- */

int vm_state_records_keep(struct vm_state_reader *r, struct vm_state_records *list,
			  const struct vm_state_record *rec)
{
	bool optional = !(rec->flags & VM_STATE_RECORD_MANDATORY);
	if (optional && rec->length_bytes > VM_STATE_MAX_OPTIONAL_RECORD_BYTES)
		return vm_state_fail(
			r, -EFBIG,
			"%s: optional record %llu (type %#x) is %llu bytes; the limit for an optional record is %llu",
			r->what, (unsigned long long)rec->index, rec->type,
			(unsigned long long)rec->length_bytes,
			(unsigned long long)VM_STATE_MAX_OPTIONAL_RECORD_BYTES);
	if (list->count >= VM_STATE_MAX_KEPT_RECORDS ||
	    rec->length_bytes > VM_STATE_MAX_KEPT_BYTES - list->payload_bytes)
		return vm_state_fail(
			r, -EFBIG,
			"%s: the records besides guest RAM exceed %u records or %llu bytes (at record %llu); the stream is not a VM's state",
			r->what, VM_STATE_MAX_KEPT_RECORDS,
			(unsigned long long)VM_STATE_MAX_KEPT_BYTES,
			(unsigned long long)rec->index);
	if (list->count == list->capacity) {
		size_t capacity = list->capacity ? list->capacity * 2 : 32;
		struct vm_state_stored_record *grown =
			realloc(list->records, capacity * sizeof(*grown));
		if (!grown)
			return vm_state_fail(r, -ENOMEM, "out of memory");
		list->records = grown;
		list->capacity = capacity;
	}
	struct vm_state_stored_record *s = &list->records[list->count];
	s->payload = malloc(rec->length_bytes ? (size_t)rec->length_bytes : 1);
	if (!s->payload)
		return vm_state_fail(r, -ENOMEM, "out of memory");
	memcpy(s->payload, rec->payload, (size_t)rec->length_bytes);
	s->type = rec->type;
	s->flags = rec->flags;
	s->length_bytes = rec->length_bytes;
	list->payload_bytes += rec->length_bytes;
	list->count++;
	return 0;
}

int vm_state_read_all(struct vm_state_reader *r, struct vm_state_records *out)
{
	struct vm_state_record rec;
	int rc;

	memset(out, 0, sizeof(*out));
	while ((rc = vm_state_next(r, &rec)) == 1) {
		rc = vm_state_records_keep(r, out, &rec);
		if (rc < 0)
			break;
	}
	out->begin = r->begin;
	if (rc < 0)
		vm_state_records_free(out);
	return rc < 0 ? rc : 0;
}

void vm_state_records_free(struct vm_state_records *records)
{
	for (size_t i = 0; i < records->count; i++)
		free(records->records[i].payload);
	free(records->records);
	memset(records, 0, sizeof(*records));
}

const struct vm_state_stored_record *vm_state_find(const struct vm_state_records *records,
						   uint32_t type, size_t *position)
{
	for (size_t i = position ? *position : 0; i < records->count; i++) {
		if (records->records[i].type == type) {
			if (position)
				*position = i + 1;
			return &records->records[i];
		}
	}
	return NULL;
}

const char *vm_state_record_name(uint32_t type)
{
	switch (type) {
	case VM_STATE_BEGIN:
		return "begin";
	case VM_STATE_END:
		return "end";
	case VM_STATE_MANIFEST_FILE:
		return "manifest.file";
	case VM_STATE_VM_INFO:
		return "vm.info";
	case VM_STATE_CONFIG_TEXT:
		return "vm.config";
	case VM_STATE_DEFINITION:
		return "vm.definition";
	case VM_STATE_EVTCHN:
		return "vm.evtchn";
	case VM_STATE_DEVICE:
		return "device";
	case VM_STATE_NOTE:
		return "note";
	case VM_STATE_SAVE_INFO:
		return "save.info";
	case VM_STATE_PARENT:
		return "state.parent";
	case VM_STATE_VCPU_REGS:
		return "vcpu.regs";
	case VM_STATE_VCPU_SREGS:
		return "vcpu.sregs";
	case VM_STATE_VCPU_FPU:
		return "vcpu.fpu";
	case VM_STATE_VCPU_XSAVE:
		return "vcpu.xsave";
	case VM_STATE_VCPU_XCRS:
		return "vcpu.xcrs";
	case VM_STATE_VCPU_MSRS:
		return "vcpu.msrs";
	case VM_STATE_VCPU_EVENTS:
		return "vcpu.events";
	case VM_STATE_VCPU_DEBUGREGS:
		return "vcpu.debugregs";
	case VM_STATE_VCPU_MP_STATE:
		return "vcpu.mp_state";
	case VM_STATE_VCPU_PV_CPU:
		return "vcpu.pv_cpu";
	case VM_STATE_VCPU_GROUP:
		return "vcpu.group";
	case VM_STATE_VCPU_PV_MMU:
		return "vcpu.pv_mmu";
	case VM_STATE_PV_MMU_MAPPINGS:
		return "pv_mmu.mappings";
	case VM_STATE_MEMORY_PAGES:
		return "memory.pages";
	case VM_STATE_MEMORY_ZERO:
		return "memory.zero";
	case VM_STATE_MEMORY_DONE:
		return "memory.done";
	case VM_STATE_DISK:
		return "disk";
	case VM_STATE_DEV_UART16550:
		return "device.uart16550";
	case VM_STATE_DEV_BLOCK_PV:
		return "device.block_pv";
	case VM_STATE_DEV_ATA_DISK:
		return "device.ata_disk";
	case VM_STATE_DEV_RNG_PV:
		return "device.rng_pv";
	case VM_STATE_DEV_NET_PV:
		return "device.net_pv";
	case VM_STATE_DEV_NE2000:
		return "device.ne2000";
	}
	return NULL;
}

bool vm_state_record_known(uint32_t type)
{
	if (type >= VM_STATE_DEVICE_FIRST && type <= VM_STATE_DEVICE_LAST)
		return true; /* the device that owns it decides */
	return vm_state_record_name(type) != NULL;
}

/* ---- Files ------------------------------------------------------------------ */

static void manifest_entry(struct vm_state_manifest_file *entry, const char *name)
{
	memset(entry, 0, sizeof(*entry));
	snprintf(entry->name, sizeof(entry->name), "%s", name);
}

int vm_state_write_file(int dirfd, const char *name, const void *data, size_t length_bytes,
			struct vm_state_manifest_file *entry)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int err = write_all(fd, data, length_bytes);
	if (!err && fsync(fd) < 0)
		err = -errno;
	close(fd);
	if (err)
		return err;
	manifest_entry(entry, name);
	entry->size_bytes = length_bytes;
	entry->data_bytes = length_bytes;
	entry->crc32c = vm_state_crc32c(0, data, length_bytes);
	return 0;
}

static bool page_is_zero(const uint8_t *page)
{
	const uint64_t *words = (const uint64_t *)page;
	for (unsigned i = 0; i < PAGE_BYTES / 8; i += 4)
		if (words[i] | words[i + 1] | words[i + 2] | words[i + 3])
			return false;
	return true;
}

static int pwrite_all(int fd, const uint8_t *data, uint64_t length, uint64_t offset)
{
	while (length) {
		size_t chunk = length > (1u << 30) ? (1u << 30) : (size_t)length;
		ssize_t n = pwrite(fd, data, chunk, (off_t)offset);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		data += n;
		offset += (uint64_t)n;
		length -= (uint64_t)n;
	}
	return 0;
}

int vm_state_write_memory_file(int dirfd, const char *name, const uint8_t *base,
			       uint64_t size_bytes, int memfd, struct vm_state_manifest_file *entry)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int err = 0;
	uint32_t crc = 0;
	uint64_t data_bytes = 0;
	uint64_t crc_done = 0; /* CRC covers [0, crc_done) */

	if (ftruncate(fd, (off_t)size_bytes) < 0) {
		err = -errno;
		goto out;
	}
	uint64_t offset = 0;
	while (offset < size_bytes) {
		/* Ranges the memfd never had a page for are holes: skip them
		 * without touching (and so allocating) the memory. */
		uint64_t extent_end = size_bytes;
		if (memfd >= 0) {
			off_t data = lseek(memfd, (off_t)offset, SEEK_DATA);
			if (data < 0) {
				offset = size_bytes; /* ENXIO: only holes remain */
				break;
			}
			offset = (uint64_t)data;
			off_t hole = lseek(memfd, data, SEEK_HOLE);
			extent_end = hole < 0 ? size_bytes : (uint64_t)hole;
			if (extent_end > size_bytes)
				extent_end = size_bytes;
		}
		/* Within an extent: write runs of non-zero pages. */
		while (offset < extent_end) {
			while (offset < extent_end && page_is_zero(base + offset))
				offset += PAGE_BYTES;
			uint64_t run = offset;
			while (run < extent_end && !page_is_zero(base + run) &&
			       run - offset < (16ull << 20)) /* progress every 16 MiB */
				run += PAGE_BYTES;
			if (run == offset)
				continue;
			err = pwrite_all(fd, base + offset, run - offset, offset);
			if (err)
				goto out;
			crc = vm_state_crc32c_zeros(crc, offset - crc_done);
			crc = vm_state_crc32c(crc, base + offset, (size_t)(run - offset));
			crc_done = run;
			data_bytes += run - offset;
			offset = run;
			state_progress_update(offset, data_bytes);
		}
		state_progress_update(offset, data_bytes);
	}
	crc = vm_state_crc32c_zeros(crc, size_bytes - crc_done);
	if (fsync(fd) < 0)
		err = -errno;
out:
	close(fd);
	if (err)
		return err;
	manifest_entry(entry, name);
	entry->size_bytes = size_bytes;
	entry->crc32c = crc;
	entry->data_bytes = data_bytes;
	return 0;
}

/* vm_state_load_flat_file on an open file; gives up with -ECANCELED once
 * *cancel (may be NULL) is set. */
static int load_flat_fd(int fd, const char *name, uint8_t *dest, uint64_t size_bytes,
			uint32_t expected_crc, bool zero_holes, const int *cancel, char *error,
			size_t error_len)
{
	int err = 0;
	struct stat st;
	uint8_t *scratch = NULL;
	if (fstat(fd, &st) < 0) {
		err = kapsel_fail(error, error_len, -errno, "%s: %s", name, strerror(errno));
		goto out;
	}
	if ((uint64_t)st.st_size != size_bytes) {
		err = kapsel_fail(
			error, error_len, -EPROTO,
			"%s is %llu bytes, the state says %llu; the file is truncated or belongs to another save",
			name, (unsigned long long)st.st_size, (unsigned long long)size_bytes);
		goto out;
	}
	if (!dest) {
		scratch = malloc(IO_CHUNK_BYTES);
		if (!scratch) {
			err = -ENOMEM;
			goto out;
		}
	}
	uint32_t crc = 0;
	uint64_t offset = 0;
	while (offset < size_bytes) {
		off_t data = lseek(fd, (off_t)offset, SEEK_DATA);
		uint64_t data_start = data < 0 ? size_bytes : (uint64_t)data;
		if (data < 0 && errno != ENXIO) {
			err = kapsel_fail(error, error_len, -errno, "%s: SEEK_DATA: %s", name,
					  strerror(errno));
			goto out;
		}
		if (data_start > offset) {
			if (dest && zero_holes)
				memset(dest + offset, 0, (size_t)(data_start - offset));
			crc = vm_state_crc32c_zeros(crc, data_start - offset);
			offset = data_start;
			if (offset >= size_bytes)
				break;
		}
		off_t hole = lseek(fd, (off_t)offset, SEEK_HOLE);
		uint64_t data_end = hole < 0 ? size_bytes : (uint64_t)hole;
		if (data_end > size_bytes)
			data_end = size_bytes;
		while (offset < data_end) {
			if (cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED)) {
				err = kapsel_fail(error, error_len, -ECANCELED,
						  "%s: the check was abandoned at byte %llu", name,
						  (unsigned long long)offset);
				goto out;
			}
			size_t chunk = data_end - offset > IO_CHUNK_BYTES
					       ? IO_CHUNK_BYTES
					       : (size_t)(data_end - offset);
			uint8_t *target = dest ? dest + offset : scratch;
			ssize_t n = pread(fd, target, chunk, (off_t)offset);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				err = kapsel_fail(error, error_len, n < 0 ? -errno : -EPROTO,
						  "%s: read error at byte %llu: %s", name,
						  (unsigned long long)offset,
						  n < 0 ? strerror(errno)
							: "unexpected end of file");
				goto out;
			}
			crc = vm_state_crc32c(crc, target, (size_t)n);
			offset += (uint64_t)n;
		}
	}
	if (crc != expected_crc)
		err = kapsel_fail(error, error_len, -EPROTO,
				  "%s is corrupt: its CRC32C is %#x, the manifest says %#x", name,
				  crc, expected_crc);
out:
	free(scratch);
	return err;
}

int vm_state_load_flat_file(int dirfd, const char *name, uint8_t *dest, uint64_t size_bytes,
			    uint32_t expected_crc, bool zero_holes, char *error, size_t error_len)
{
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kapsel_fail(error, error_len, -errno, "%s: cannot open: %s", name,
				   strerror(errno));
	int err = load_flat_fd(fd, name, dest, size_bytes, expected_crc, zero_holes, NULL, error,
			       error_len);
	close(fd);
	return err;
}

int vm_state_check_flat_fd(int fd, const char *name, uint64_t size_bytes, uint32_t expected_crc,
			   const int *cancel, char *error, size_t error_len)
{
	return load_flat_fd(fd, name, NULL, size_bytes, expected_crc, false, cancel, error,
			    error_len);
}

/* ---- The directory ------------------------------------------------------------ */

bool vm_state_is_disk_file_name(const char *name)
{
	if (strncmp(name, "disk", 4) != 0)
		return false;
	const char *p = name + 4;
	unsigned index = 0, digits = 0;
	for (; *p >= '0' && *p <= '9' && digits < 3; p++, digits++)
		index = index * 10 + (unsigned)(*p - '0');
	if (digits == 0 || (digits > 1 && name[4] == '0') || index >= VM_STATE_MAX_DISK_FILES)
		return false;
	return strcmp(p, ".kovl") == 0 || strcmp(p, ".img") == 0;
}

/* True if path is a directory holding nothing but the files a save or a
 * merge writes (or nothing at all): the only kind this code replaces or
 * removes. */
static bool is_state_dir(const char *path)
{
	static const char *const names[] = { VM_STATE_FILE_MANIFEST, VM_STATE_FILE_MANIFEST ".tmp",
					     VM_STATE_FILE_STATE,    VM_STATE_FILE_MEMORY,
					     VM_STATE_FILE_DOMAIN,   VM_STATE_FILE_MEMORY_MAP };
	DIR *d = opendir(path);
	if (!d)
		return false;
	bool ours = true;
	struct dirent *e;
	while (ours && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		bool known = false;
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			known |= strcmp(e->d_name, names[i]) == 0;
		known |= vm_state_is_disk_file_name(e->d_name);
		ours = known;
	}
	closedir(d);
	return ours;
}

/* Remove a state directory we made: only regular files directly in it. */
static void remove_state_dir(const char *path)
{
	if (!is_state_dir(path))
		return;
	DIR *d = opendir(path);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			unlinkat(dirfd(d), e->d_name, 0);
		}
		closedir(d);
	}
	rmdir(path);
}

static char *parent_of(const char *path)
{
	char *copy = strdup(path);
	if (!copy)
		return NULL;
	size_t len = strlen(copy);
	while (len > 1 && copy[len - 1] == '/')
		copy[--len] = '\0';
	char *slash = strrchr(copy, '/');
	if (!slash) {
		free(copy);
		return strdup(".");
	}
	if (slash == copy)
		slash[1] = '\0';
	else
		*slash = '\0';
	return copy;
}

int vm_state_dir_begin(struct vm_state_dir_txn *txn, const char *path, char *error,
		       size_t error_len)
{
	memset(txn, 0, sizeof(*txn));
	txn->dirfd = -1;
	txn->final_path = strdup(path);
	if (!txn->final_path || asprintf(&txn->temp_path, "%s.new", path) < 0) {
		free(txn->final_path);
		txn->temp_path = NULL;
		return kapsel_fail(error, error_len, -ENOMEM, "out of memory");
	}
	struct stat st;
	if (stat(path, &st) == 0 && (!S_ISDIR(st.st_mode) || !is_state_dir(path))) {
		int err = kapsel_fail(
			error, error_len, -EEXIST,
			"'%s' exists and is not a saved Kapsel state (other files are in it); choose a new path",
			path);
		free(txn->temp_path);
		free(txn->final_path);
		memset(txn, 0, sizeof(*txn));
		txn->dirfd = -1;
		return err;
	}
	if (stat(txn->temp_path, &st) == 0 &&
	    (!S_ISDIR(st.st_mode) || !is_state_dir(txn->temp_path))) {
		int err = kapsel_fail(
			error, error_len, -EEXIST,
			"'%s' is in the way of the save (a save writes there first); move it",
			txn->temp_path);
		free(txn->temp_path);
		free(txn->final_path);
		memset(txn, 0, sizeof(*txn));
		txn->dirfd = -1;
		return err;
	}
	remove_state_dir(txn->temp_path); /* left by a save that crashed */
	if (mkdir(txn->temp_path, 0700) < 0) {
		int err = kapsel_fail(
			error, error_len, -errno,
			"cannot create '%s': %s; check that the parent directory exists and is writable",
			txn->temp_path, strerror(errno));
		vm_state_dir_abort(txn);
		return err;
	}
	txn->dirfd = open(txn->temp_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (txn->dirfd < 0) {
		int err = kapsel_fail(error, error_len, -errno, "cannot open '%s': %s",
				      txn->temp_path, strerror(errno));
		vm_state_dir_abort(txn);
		return err;
	}
	return 0;
}

int vm_state_dir_add(struct vm_state_dir_txn *txn, const struct vm_state_manifest_file *entry)
{
	if (txn->file_count == VM_STATE_MAX_FILES)
		return -ENOSPC;
	txn->files[txn->file_count++] = *entry;
	return 0;
}

static void txn_release(struct vm_state_dir_txn *txn)
{
	if (txn->dirfd >= 0)
		close(txn->dirfd);
	free(txn->final_path);
	free(txn->temp_path);
	memset(txn, 0, sizeof(*txn));
	txn->dirfd = -1;
}

void vm_state_dir_abort(struct vm_state_dir_txn *txn)
{
	if (txn->temp_path)
		remove_state_dir(txn->temp_path);
	txn_release(txn);
}

static int fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int err = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return err;
}

int vm_state_dir_commit(struct vm_state_dir_txn *txn, char *error, size_t error_len)
{
	struct vm_state_writer w;
	int err;

	vm_state_writer_init_buffer(&w);
	vm_state_put_begin(&w, VM_STATE_KIND_MANIFEST);
	for (unsigned i = 0; i < txn->file_count; i++)
		vm_state_put(&w, VM_STATE_MANIFEST_FILE, VM_STATE_RECORD_MANDATORY, &txn->files[i],
			     sizeof(txn->files[i]));
	vm_state_put_end(&w);
	err = w.error;
	if (!err) {
		/* The manifest goes in through its own temporary name, so a
		 * directory never has a half-written manifest. */
		struct vm_state_manifest_file entry;
		err = vm_state_write_file(txn->dirfd, VM_STATE_FILE_MANIFEST ".tmp", w.buffer,
					  w.buffer_bytes, &entry);
		if (!err && renameat(txn->dirfd, VM_STATE_FILE_MANIFEST ".tmp", txn->dirfd,
				     VM_STATE_FILE_MANIFEST) < 0)
			err = -errno;
	}
	vm_state_writer_free(&w);
	if (!err && fsync(txn->dirfd) < 0)
		err = -errno;
	if (err) {
		kapsel_fail(error, error_len, err, "cannot write the manifest in '%s': %s",
			    txn->temp_path, strerror(-err));
		vm_state_dir_abort(txn);
		return err;
	}

	bool replaced = false;
	if (renameat2(AT_FDCWD, txn->temp_path, AT_FDCWD, txn->final_path, RENAME_EXCHANGE) == 0) {
		replaced = true;
	} else if (errno == ENOENT) {
		if (rename(txn->temp_path, txn->final_path) < 0)
			err = -errno;
	} else {
		err = -errno;
	}
	if (err) {
		kapsel_fail(error, error_len, err,
			    "cannot move the new state into '%s': %s; the previous state there is unchanged",
			    txn->final_path, strerror(-err));
		vm_state_dir_abort(txn);
		return err;
	}
	char *parent = parent_of(txn->final_path);
	if (parent) {
		err = fsync_path(parent);
		free(parent);
	}
	/* After the exchange the previous save sits at the temporary name. */
	if (replaced)
		remove_state_dir(txn->temp_path);
	txn_release(txn);
	if (err)
		return kapsel_fail(error, error_len, err,
				   "cannot sync the directory holding the state: %s",
				   strerror(-err));
	return 0;
}

/* ---- Opening a saved directory ------------------------------------------------ */

static int read_whole_file(int dirfd, const char *name, uint8_t **data, size_t *length)
{
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size > (off_t)(256u << 20)) {
		int err = st.st_size > (off_t)(256u << 20) ? -EFBIG : -errno;
		close(fd);
		return err;
	}
	uint8_t *buffer = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buffer) {
		close(fd);
		return -ENOMEM;
	}
	size_t done = 0;
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, buffer + done, (size_t)st.st_size - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	close(fd);
	*data = buffer;
	*length = done;
	return 0;
}

const struct vm_state_manifest_file *vm_state_dir_file(const struct vm_state_dir *dir,
						       const char *name)
{
	for (unsigned i = 0; i < dir->file_count; i++)
		if (strcmp(dir->files[i].name, name) == 0)
			return &dir->files[i];
	return NULL;
}

static int read_manifest(struct vm_state_dir *dir, char *error, size_t error_len)
{
	uint8_t *data = NULL;
	size_t length = 0;
	int err = read_whole_file(dir->dirfd, VM_STATE_FILE_MANIFEST, &data, &length);
	if (err == -ENOENT)
		return kapsel_fail(
			error, error_len, -EPROTO,
			"'%s' has no manifest: it is not a saved Kapsel VM, or its save never finished",
			dir->path);
	if (err)
		return kapsel_fail(error, error_len, err, "%s/manifest: %s", dir->path,
				   strerror(-err));

	struct vm_state_reader r;
	struct vm_state_record rec;
	char what[300];
	snprintf(what, sizeof(what), "%s/manifest", dir->path);
	vm_state_reader_init_buffer(&r, data, length, what, VM_STATE_KIND_MANIFEST, error,
				    error_len);
	while ((err = vm_state_next(&r, &rec)) == 1) {
		if (rec.type != VM_STATE_MANIFEST_FILE) {
			err = vm_state_unknown_record(&r, &rec);
			if (err)
				break;
			continue;
		}
		struct vm_state_manifest_file entry;
		if (rec.length_bytes != sizeof(entry)) {
			err = vm_state_fail(&r, -EPROTO, "malformed file entry");
			break;
		}
		memcpy(&entry, rec.payload, sizeof(entry));
		if (memchr(entry.name, '\0', sizeof(entry.name)) == NULL || !entry.name[0] ||
		    strchr(entry.name, '/') || strcmp(entry.name, "..") == 0 ||
		    strcmp(entry.name, ".") == 0) {
			err = vm_state_fail(&r, -EPROTO, "a file entry has an invalid name");
			break;
		}
		if (dir->file_count == VM_STATE_MAX_FILES) {
			err = vm_state_fail(&r, -EPROTO, "lists too many files");
			break;
		}
		dir->files[dir->file_count++] = entry;
	}
	vm_state_reader_free(&r);
	free(data);
	return err < 0 ? err : 0;
}

int vm_state_dir_open(struct vm_state_dir *dir, const char *path, bool check_memory, char *error,
		      size_t error_len)
{
	int err;

	memset(dir, 0, sizeof(*dir));
	dir->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir->dirfd < 0)
		return kapsel_fail(error, error_len, -errno, "cannot open the saved state '%s': %s",
				   path, strerror(errno));
	dir->path = strdup(path);
	if (!dir->path) {
		err = -ENOMEM;
		goto fail;
	}
	err = read_manifest(dir, error, error_len);
	if (err)
		goto fail;

	const char *required[] = { VM_STATE_FILE_STATE, VM_STATE_FILE_MEMORY };
	for (size_t i = 0; i < 2; i++) {
		if (!vm_state_dir_file(dir, required[i])) {
			err = kapsel_fail(error, error_len, -EPROTO,
					  "%s/manifest does not list %s; the save is incomplete",
					  path, required[i]);
			goto fail;
		}
	}
	/* Every listed file must be there with its size. */
	for (unsigned i = 0; i < dir->file_count; i++) {
		struct stat st;
		if (fstatat(dir->dirfd, dir->files[i].name, &st, 0) < 0) {
			err = kapsel_fail(error, error_len, -EPROTO,
					  "%s/%s is missing (%s); the saved state is incomplete",
					  path, dir->files[i].name, strerror(errno));
			goto fail;
		}
		if ((uint64_t)st.st_size != dir->files[i].size_bytes) {
			err = kapsel_fail(
				error, error_len, -EPROTO,
				"%s/%s is %llu bytes but the manifest says %llu; it is truncated or from another save",
				path, dir->files[i].name, (unsigned long long)st.st_size,
				(unsigned long long)dir->files[i].size_bytes);
			goto fail;
		}
	}

	/* state.bin: whole-file checksum, then its records. */
	const struct vm_state_manifest_file *state_entry =
		vm_state_dir_file(dir, VM_STATE_FILE_STATE);
	uint8_t *data = NULL;
	size_t length = 0;
	err = read_whole_file(dir->dirfd, VM_STATE_FILE_STATE, &data, &length);
	if (err) {
		kapsel_fail(error, error_len, err, "%s/state.bin: %s", path, strerror(-err));
		goto fail;
	}
	uint32_t crc = vm_state_crc32c(0, data, length);
	if (length != state_entry->size_bytes || crc != state_entry->crc32c) {
		free(data);
		err = kapsel_fail(
			error, error_len, -EPROTO,
			"%s/state.bin is corrupt or from another save: CRC32C %#x, the manifest says %#x",
			path, crc, state_entry->crc32c);
		goto fail;
	}
	char what[300];
	snprintf(what, sizeof(what), "%s/state.bin", path);
	struct vm_state_reader r;
	vm_state_reader_init_buffer(&r, data, length, what, VM_STATE_KIND_STATE, error, error_len);
	err = vm_state_read_all(&r, &dir->state);
	vm_state_reader_free(&r);
	free(data);
	if (err)
		goto fail;

	for (size_t i = 0; i < dir->state.count; i++) {
		const struct vm_state_stored_record *s = &dir->state.records[i];
		if (!vm_state_record_known(s->type) && (s->flags & VM_STATE_RECORD_MANDATORY)) {
			err = kapsel_fail(
				error, error_len, -EPROTO,
				"%s/state.bin: record %zu has type %#x, which this Kapsel does not know and which is marked mandatory; it was written by a newer Kapsel",
				path, i + 1, s->type);
			goto fail;
		}
	}
	const struct vm_state_stored_record *info =
		vm_state_find(&dir->state, VM_STATE_VM_INFO, NULL);
	if (!info || info->length_bytes != sizeof(struct vm_state_vm_info)) {
		err = kapsel_fail(error, error_len, -EPROTO,
				  "%s/state.bin has no valid VM information record", path);
		goto fail;
	}
	dir->info = (const struct vm_state_vm_info *)info->payload;
	const struct vm_state_manifest_file *memory = vm_state_dir_file(dir, VM_STATE_FILE_MEMORY);
	if (memory->size_bytes != dir->info->memory_bytes) {
		err = kapsel_fail(
			error, error_len, -EPROTO,
			"%s: memory.img holds %llu bytes but the VM had %llu; the files do not belong together",
			path, (unsigned long long)memory->size_bytes,
			(unsigned long long)dir->info->memory_bytes);
		goto fail;
	}
	if (check_memory) {
		err = vm_state_load_flat_file(dir->dirfd, VM_STATE_FILE_MEMORY, NULL,
					      memory->size_bytes, memory->crc32c, false, error,
					      error_len);
		if (err) {
			char detail[400];
			snprintf(detail, sizeof(detail), "%s", error);
			kapsel_fail(error, error_len, err, "%s/%s", path, detail);
			goto fail;
		}
	}
	return 0;

fail:
	vm_state_dir_close(dir);
	return err;
}

void vm_state_dir_close(struct vm_state_dir *dir)
{
	if (dir->dirfd > 0)
		close(dir->dirfd);
	vm_state_records_free(&dir->state);
	free(dir->path);
	memset(dir, 0, sizeof(*dir));
	dir->dirfd = -1;
}
