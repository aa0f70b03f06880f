/* The saved-VM format: a typed, checksummed record stream, the sparse memory file and the atomic state directory. */
#ifndef KAPSEL_VM_STATE_H
#define KAPSEL_VM_STATE_H

/*
 * One format for save files, snapshots, clones and the live-migration
 * stream (docs/state.md: the record table, the definition's XML).  A stream is a sequence of records; each record is
 *
 *   struct vm_state_record_header (24 bytes) + length_bytes of payload
 *
 * All fields are little-endian and fixed width (Kapsel only runs on
 * x86-64, so structures are written as they are laid out in memory and
 * locked with _Static_assert).  The first record is VM_STATE_BEGIN (magic,
 * format version, stream kind), the last is VM_STATE_END (how many records
 * came before).  A record whose flags have VM_STATE_RECORD_MANDATORY set
 * must be understood by the loader: an unknown mandatory record makes the
 * whole stream unusable, an unknown optional record is skipped.  That is
 * the extension rule: a newer Kapsel adds optional records freely; adding a
 * mandatory record, or changing an existing payload, bumps
 * VM_STATE_FORMAT_VERSION, which older loaders refuse.
 *
 * A saved VM is a directory:
 *   domain.xml   the definition as kapsel dumpxml shows it (informational:
 *                a restore reads the copy in state.bin)
 *   memory.img   guest RAM, flat, holes where pages are zero
 *   state.bin    record stream: VM info, definition, vCPU, event channels,
 *                devices, disks
 *   manifest     record stream: sizes and CRC32C of the files above; it is
 *                written last, so a directory without one is incomplete
 * The directory is built next to its final place and swapped in with one
 * atomic rename (see vm_state_dir_commit), so a crash mid-save leaves the
 * previous save intact.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define VM_STATE_MAGIC "KAPSELST"
/* 2: the definition is domain XML (VM_STATE_DEFINITION).  Readers also
 * take VM_STATE_FORMAT_VERSION_OLDEST (1: the text record
 * VM_STATE_CONFIG_TEXT) for one version; then that record goes. */
#define VM_STATE_FORMAT_VERSION 2u
#define VM_STATE_FORMAT_VERSION_OLDEST 1u
/* No record payload may be larger: bounds what a reader allocates. */
#define VM_STATE_MAX_RECORD_BYTES (64ull << 20)
/* What a reader keeps of a stream besides guest RAM (vm_state_records_keep):
 * the largest real record is an ATA sector buffer (64 KiB), so these leave
 * room to grow while a hostile file or peer cannot make a reader hoard. */
#define VM_STATE_MAX_OPTIONAL_RECORD_BYTES (1ull << 20)
#define VM_STATE_MAX_KEPT_BYTES (16ull << 20)
#define VM_STATE_MAX_KEPT_RECORDS 4096u

#define VM_STATE_RECORD_MANDATORY (1u << 0)

struct vm_state_record_header {
	uint32_t type;	       /* enum vm_state_record_type */
	uint32_t flags;	       /* VM_STATE_RECORD_* */
	uint64_t length_bytes; /* payload length */
	uint32_t payload_crc;  /* CRC32C of the payload */
	uint32_t header_crc;   /* CRC32C of the 20 bytes above */
};
_Static_assert(sizeof(struct vm_state_record_header) == 24, "record header layout");

/*
 * Record types.  Numbers are never reused.  Ranges:
 *   0x0001-0x00ff  stream framing and manifest
 *   0x0100-0x01ff  VM-wide records
 *   0x0200-0x02ff  vCPU (payloads are the Linux KVM UAPI structs, which are
 *                  fixed-layout on x86-64)
 *   0x0300-0x03ff  memory (migration stream)
 *   0x0400-0x04ff  disks
 *   0x1000-0x1fff  device private state, written by a device's save op;
 *                  they follow the VM_STATE_DEVICE record of their device
 */
enum vm_state_record_type {
	VM_STATE_BEGIN = 0x0001,	 /* struct vm_state_begin */
	VM_STATE_END = 0x0002,		 /* struct vm_state_end */
	VM_STATE_MANIFEST_FILE = 0x0010, /* struct vm_state_manifest_file */

	VM_STATE_VM_INFO = 0x0100, /* struct vm_state_vm_info */
	/* Format 1 only (read, never written): the definition as
	 * "key=value\n" lines, without network interfaces. */
	VM_STATE_CONFIG_TEXT = 0x0101,
	VM_STATE_EVTCHN = 0x0102, /* struct vm_state_evtchn */
	VM_STATE_DEVICE = 0x0103, /* struct vm_state_device */
	VM_STATE_NOTE = 0x0104,	  /* optional free text (who saved, why) */
	/* Format 2: the definition as libvirt domain XML with Kapsel's
	 * namespace (vm_config_format_xml, VM_CONFIG_XML_STATE; docs/state.md),
	 * UTF-8, at most VM_CONFIG_XML_MAX_BYTES.  Mandatory. */
	VM_STATE_DEFINITION = 0x0105,
	/* struct vm_state_save_info: how the state was taken (live, rounds,
	 * vCPU-stopped time) and its id.  Optional, informational. */
	VM_STATE_SAVE_INFO = 0x0106,
	/* struct vm_state_parent + the parent directory's name: this state is
	 * a diff (a dirty-only snapshot): memory.img holds only the pages
	 * memory.map lists, the rest is the parent's.  Mandatory. */
	VM_STATE_PARENT = 0x0107,

	VM_STATE_VCPU_REGS = 0x0200,	  /* struct kvm_regs */
	VM_STATE_VCPU_SREGS = 0x0201,	  /* struct kvm_sregs */
	VM_STATE_VCPU_FPU = 0x0202,	  /* struct kvm_fpu */
	VM_STATE_VCPU_XSAVE = 0x0203,	  /* struct kvm_xsave (4096 bytes) */
	VM_STATE_VCPU_XCRS = 0x0204,	  /* struct kvm_xcrs */
	VM_STATE_VCPU_MSRS = 0x0205,	  /* struct vm_state_msr[] */
	VM_STATE_VCPU_EVENTS = 0x0206,	  /* struct kvm_vcpu_events */
	VM_STATE_VCPU_DEBUGREGS = 0x0207, /* struct kvm_debugregs */
	VM_STATE_VCPU_MP_STATE = 0x0208,  /* struct kvm_mp_state */
	/* struct vm_state_pv_cpu (pv_cpu.h): trap table, upcall callback,
	 * timer; written (mandatory) only for guests that use the PV CPU. */
	VM_STATE_VCPU_PV_CPU = 0x0209,
	/* struct vm_state_pv_mmu (pv_mmu.h): mode, current address space,
	 * kernel stack, syscall entry; and struct vm_state_pv_mmu_mapping[]
	 * in as many mapping records as needed.  Written (mandatory) only
	 * for guests that use the PV MMU. */
	VM_STATE_VCPU_PV_MMU = 0x020a,
	VM_STATE_PV_MMU_MAPPINGS = 0x020b,
	/* struct vm_state_vcpu_group: vCPU 1.. of an SMP VM.  The register
	 * records (0x0200-0x0208) right after it, up to the next record of
	 * another type, are that vCPU's; those before any group are vCPU 0's.
	 * Mandatory: a Kapsel without SMP cannot load the state. */
	VM_STATE_VCPU_GROUP = 0x020c,

	VM_STATE_MEMORY_PAGES = 0x0300, /* struct vm_state_memory_pages + data */
	VM_STATE_MEMORY_ZERO = 0x0301,	/* struct vm_state_memory_pages, no data */
	VM_STATE_MEMORY_DONE = 0x0302,	/* struct vm_state_memory_done */

	VM_STATE_DISK = 0x0400, /* struct vm_state_disk + path */

	VM_STATE_DEVICE_FIRST = 0x1000,
	VM_STATE_DEV_UART16550 = 0x1000, /* struct vm_state_uart16550 */
	VM_STATE_DEV_BLOCK_PV = 0x1010,	 /* owned by blk_pv_persist.c */
	VM_STATE_DEV_ATA_DISK = 0x1020,	 /* owned by dev_ata.c */
	VM_STATE_DEV_RNG_PV = 0x1030,	 /* struct vm_state_rng_pv (rng_pv_model.h) */
	VM_STATE_DEV_NET_PV = 0x1040,	 /* struct vm_state_net_pv (dev_net_pv.c) */
	VM_STATE_DEV_NE2000 = 0x1050,	 /* struct vm_state_ne2000 (ne2000.c) */
	VM_STATE_DEVICE_LAST = 0x1fff,
};

enum vm_state_stream_kind {
	VM_STATE_KIND_STATE = 1,     /* state.bin */
	VM_STATE_KIND_MANIFEST = 2,  /* manifest */
	VM_STATE_KIND_MIGRATION = 3, /* live-migration stream */
};

struct vm_state_begin {
	char magic[8];		 /* VM_STATE_MAGIC, not NUL terminated */
	uint32_t format_version; /* VM_STATE_FORMAT_VERSION (written) */
	uint32_t kind;		 /* enum vm_state_stream_kind */
	uint64_t created_unix_ns;
	char writer[32]; /* "kapsel VERSION", NUL padded (informational) */
};
_Static_assert(sizeof(struct vm_state_begin) == 56, "begin layout");

struct vm_state_end {
	uint64_t record_count; /* records before this one, BEGIN included */
	uint64_t _reserved;
};
_Static_assert(sizeof(struct vm_state_end) == 16, "end layout");

#define VM_STATE_FILE_NAME_MAX 32u
struct vm_state_manifest_file {
	char name[VM_STATE_FILE_NAME_MAX]; /* NUL terminated, no '/' */
	uint64_t size_bytes;
	uint32_t crc32c; /* of the whole logical content (holes read as 0) */
	uint32_t _pad;
	uint64_t data_bytes; /* informational: bytes that are not holes */
};
_Static_assert(sizeof(struct vm_state_manifest_file) == 56, "manifest file layout");

struct vm_state_vm_info {
	char name[64];
	uint8_t uuid[16];
	uint64_t memory_bytes;
	uint64_t generation; /* the generation the guest saw when saved */
	uint64_t clock_ns;   /* Kapsel clock when saved */
	uint64_t tsc_khz;
	uint32_t device_count;
	uint32_t disk_count;
	uint32_t run_state; /* 1 = was running (resumable) */
	uint32_t _pad;
	uint64_t exits_total; /* informational */
	uint64_t _reserved[4];
};
_Static_assert(sizeof(struct vm_state_vm_info) == 168, "vm info layout");

#define VM_STATE_SAVE_LIVE (1u << 0) /* memory written while the vCPU ran */
struct vm_state_save_info {
	uint8_t state_id[16]; /* random, new for every state written */
	uint32_t flags;	      /* VM_STATE_SAVE_* */
	uint32_t rounds;      /* live: pre-copy rounds after the first pass */
	/* live: from the pause until the state was complete (the vCPU ran
	 * again right after, unless the VM stopped) */
	uint64_t vcpu_stopped_ns;
	uint64_t memory_written_bytes; /* to memory.img, all passes */
	uint64_t final_pages;	       /* live: written with the vCPU paused */
	uint64_t _reserved[4];
};
_Static_assert(sizeof(struct vm_state_save_info) == 80, "save info layout");

/*
 * A diff state's parent (snapshot_chain.h).  The parent is the directory
 * named (a plain name, no '/') next to this one; it is used only if its
 * save.info state id is parent_id and its whole memory's CRC32C is
 * parent_memory_crc.  memory_crc is the CRC32C of this state's whole
 * memory once layered (parent, then this diff's pages), which a restore
 * checks after layering.
 */
#define VM_STATE_PARENT_NAME_MAX 255u
#define VM_STATE_CHAIN_MAX_DEPTH 64u
struct vm_state_parent {
	uint8_t parent_id[16];
	uint32_t parent_memory_crc;
	uint32_t memory_crc; /* of this state's layered memory */
	uint32_t depth;	     /* diffs from the full state up to this one: 1.. */
	uint32_t name_bytes; /* the parent's directory name follows, no NUL */
	uint64_t pages;	     /* pages this diff holds (memory.map's bits set) */
	uint64_t _reserved[2];
};
_Static_assert(sizeof(struct vm_state_parent) == 56, "parent layout");

/* One event channel: allocated, the device it is bound to (or -1). */
struct vm_state_evtchn_entry {
	uint8_t allocated;
	uint8_t vcpu; /* the vCPU it is bound to (SMP; 0 before) */
	int16_t bound_device;
};

/* Payload of VM_STATE_VCPU_GROUP (little-endian, fixed layout). */
struct vm_state_vcpu_group {
	uint32_t vcpu;	/* 1 .. vcpu_count - 1 */
	uint32_t power; /* enum vcpu_power: 0 down, 1 starting, 2 up */
	/* STARTING: where VCPU_UP asked it to start (it has no registers yet). */
	uint64_t start_rip, start_rsp, start_rdi, start_rsi;
	uint64_t _reserved[2];
};
_Static_assert(sizeof(struct vm_state_vcpu_group) == 56, "vcpu group layout");
struct vm_state_evtchn {
	uint32_t count; /* KAPSEL_EVTCHN_COUNT */
	uint32_t _pad;
	struct vm_state_evtchn_entry entries[256];
};
_Static_assert(sizeof(struct vm_state_evtchn) == 8 + 4 * 256, "evtchn layout");

struct vm_state_device {
	uint16_t index;
	uint16_t type;	      /* enum kapsel_device_type */
	uint32_t evtchn_port; /* bound channel or UINT32_MAX */
	char name[32];	      /* ops->name, informational */
	uint8_t desc[40];     /* struct kapsel_device_desc as the guest saw it */
	uint64_t exits;
};
_Static_assert(sizeof(struct vm_state_device) == 88, "device layout");

struct vm_state_msr {
	uint32_t index;
	uint32_t _pad;
	uint64_t data;
};
_Static_assert(sizeof(struct vm_state_msr) == 16, "msr layout");

struct vm_state_uart16550 {
	uint8_t ier, lcr, mcr, scr, fcr, dll, dlm, loopback_count;
	uint8_t loopback[16];
	uint64_t bytes_out, bytes_in;
};
_Static_assert(sizeof(struct vm_state_uart16550) == 40, "uart layout");

/* PV block device (blk_pv_persist.c), saved after quiesce: no request is in
 * flight, so rsp_prod (private == published) trails req_cons by nothing. */
struct vm_state_block_pv {
	uint64_t ring_gpa; /* 0: the guest has not set the ring up */
	uint32_t ring_pages;
	uint32_t order;
	uint32_t req_cons; /* requests the backend has taken */
	uint32_t rsp_prod; /* responses it has published */
	uint32_t broken;   /* 1: the guest broke the ring protocol */
	uint32_t bad_req_prod;
	/* Multi-queue: one record per queue, in any order; 0 and the device's
	 * channel in records written before queues existed. */
	uint32_t queue;
	uint32_t evtchn_port; /* queue > 0: its completion channel, UINT32_MAX = none */
	uint64_t _reserved;
};
_Static_assert(sizeof(struct vm_state_block_pv) == 48, "block pv layout");

/* Emulated ATA disk (dev_ata.c): the task file, settings and a PIO
 * command in progress (it cannot be drained: the guest moves the data),
 * followed by buffer_saved_bytes of the sector buffer. */
struct vm_state_ata_disk {
	uint8_t feature, feature_hob, count, count_hob;
	uint8_t lba_low, lba_low_hob, lba_mid, lba_mid_hob;
	uint8_t lba_high, lba_high_hob, device, status;
	uint8_t error, control, multiple_sectors, write_cache;
	uint8_t command, transfer, op, disk_op_open;
	uint8_t held_by_rate_limit, _pad[3];
	uint64_t held_until_ns; /* Kapsel clock, which a restore continues */
	uint64_t command_start_ns;
	uint64_t command_lba;
	uint64_t command_sectors;
	uint64_t sectors_left;
	uint32_t block_sectors;
	uint32_t block_bytes_left;
	uint64_t buffer_lba;
	uint32_t buffer_bytes;
	uint32_t buffer_pos;
	uint32_t block_start_pos;
	uint32_t buffer_saved_bytes; /* bytes of buffer that follow */
	uint64_t counters[6];	     /* struct ata_counters, in order */
	uint64_t _reserved[2];
};
_Static_assert(sizeof(struct vm_state_ata_disk) == 160, "ata layout");

/* Counters of a network interface (struct net_stats, net_backend.h), in
 * this order, in the NIC records below: a restored VM counts on. */
#define VM_STATE_NET_COUNTERS 11u

/* One ring of the PV network device (TX or RX), saved quiesced: every
 * request taken was answered and published (req_cons == rsp_prod). */
struct vm_state_net_pv_queue {
	uint64_t ring_gpa; /* 0: the guest has not set this ring up */
	uint32_t ring_pages;
	uint32_t order;
	uint32_t req_cons;
	uint32_t rsp_prod;
	uint32_t broken; /* 1: the guest broke the ring protocol */
	uint32_t bad_req_prod;
};
_Static_assert(sizeof(struct vm_state_net_pv_queue) == 32, "net pv queue layout");

/* PV network device (dev_net_pv.c).  The link (socket, peer, tap) is never
 * in it: the restoring or destination VM's own definition names it.
 * Frames that waited in the backend's queue at the save were dropped and
 * counted (frames_dropped_at_save, also in counters' drops_save). */
struct vm_state_net_pv {
	struct vm_state_net_pv_queue queues[2]; /* KAPSEL_NET_QUEUE_TX, _RX */
	uint64_t frames_dropped_at_save;	/* by this save */
	uint64_t counters[VM_STATE_NET_COUNTERS];
	uint64_t _reserved[2];
};
_Static_assert(sizeof(struct vm_state_net_pv) == 64 + 8 + 88 + 16, "net pv layout");

/* Emulated NE2000 (ne2000.c, dev_ne2000.c): the DP8390 registers, the
 * 16 KiB of card RAM with the receive ring in it, counters.  The PROM is
 * not saved: it holds the MAC, which comes from the definition (a clone's
 * new one). */
struct vm_state_ne2000 {
	uint8_t cr, isr, imr, dcr, rcr, tcr, tsr, rsr;
	uint8_t pstart, pstop, bnry, curr, tpsr, _pad0[3];
	uint16_t tbcr, rsar, rbcr, _pad1;
	uint8_t par[6], _pad2[2];
	uint8_t mar[8];
	uint64_t card_counters[9]; /* struct ne2000_counters, in order */
	uint64_t frames_dropped_at_save;
	uint64_t counters[VM_STATE_NET_COUNTERS];
	uint64_t _reserved[2];
	uint8_t ram[0x4000]; /* NE2000_RAM_BYTES: pages 0x40-0x7f */
};
_Static_assert(sizeof(struct vm_state_ne2000) == 40 + 72 + 8 + 88 + 16 + 0x4000, "ne2000 layout");

/* Migration: page_count pages from gpa; MEMORY_PAGES carries their bytes. */
struct vm_state_memory_pages {
	uint64_t gpa;
	uint32_t page_count;
	uint32_t round; /* pre-copy round (0 = first full pass) */
};
_Static_assert(sizeof(struct vm_state_memory_pages) == 16, "memory pages layout");

struct vm_state_memory_done {
	uint64_t memory_bytes;
	uint32_t crc32c; /* of the whole guest RAM at stop-and-copy */
	uint32_t rounds;
};
_Static_assert(sizeof(struct vm_state_memory_done) == 16, "memory done layout");

#define VM_STATE_DISK_OVERLAY 1u /* path is a copy-on-write overlay */
#define VM_STATE_DISK_FROZEN 2u	 /* path is frozen (snapshot): run on an overlay of it */
struct vm_state_disk {
	uint32_t index; /* disk order in the definition */
	uint32_t bus;	/* enum vm_disk_bus */
	uint32_t flags; /* VM_STATE_DISK_* */
	uint32_t readonly;
	uint64_t size_bytes; /* image size at save time */
	int64_t mtime_ns;    /* informational: image mtime at save time */
	uint32_t path_bytes; /* followed by the path, no NUL */
	uint32_t _pad;
};
_Static_assert(sizeof(struct vm_state_disk) == 40, "disk layout");

/* ---- CRC32C (Castagnoli) --------------------------------------------------- */

/* Continue crc over data; start with 0.  Uses SSE4.2 when the CPU has it. */
uint32_t vm_state_crc32c(uint32_t crc, const void *data, size_t length_bytes);

/* Continue crc over length_bytes of zeros (a hole in a sparse file). */
uint32_t vm_state_crc32c_zeros(uint32_t crc, uint64_t length_bytes);

/* ---- Writing records ----------------------------------------------------- */

/*
 * A record sink: a file descriptor (file or socket) or a growing memory
 * buffer (tests).  Errors are sticky: after the first failure every call
 * returns it and nothing more is written.
 */
struct vm_state_writer {
	int fd; /* -1: write to buffer (or through write_fn) */
	/* Set by vm_state_writer_init_io: writes all of data or returns -errno. */
	int (*write_fn)(void *context, const void *data, size_t length_bytes);
	void *io_context;
	uint8_t *buffer;
	size_t buffer_bytes, buffer_capacity;
	uint64_t offset_bytes; /* bytes written so far */
	uint64_t record_count;
	uint32_t stream_crc; /* CRC32C of every byte written */
	int error;	     /* first -errno, or 0 */
};

/* Write to fd (not closed by the writer). */
void vm_state_writer_init_fd(struct vm_state_writer *w, int fd);
/* Write through write_fn(context, ...) (e.g. a TLS session); it must
 * write everything or return a negative errno. */
void vm_state_writer_init_io(struct vm_state_writer *w,
			     int (*write_fn)(void *context, const void *data, size_t length_bytes),
			     void *context);
/* Write to a buffer the writer grows; free it with vm_state_writer_free. */
void vm_state_writer_init_buffer(struct vm_state_writer *w);
void vm_state_writer_free(struct vm_state_writer *w);

/* Append one record whose payload is the concatenation of iov.  Returns 0
 * or the sticky -errno (-EMSGSIZE for a payload over the limit). */
int vm_state_putv(struct vm_state_writer *w, uint32_t type, uint32_t flags, const struct iovec *iov,
		  int iov_count);
/* Same with one contiguous payload (may be NULL when length_bytes is 0). */
int vm_state_put(struct vm_state_writer *w, uint32_t type, uint32_t flags, const void *payload,
		 uint64_t length_bytes);
/* The first record of a stream. */
int vm_state_put_begin(struct vm_state_writer *w, enum vm_state_stream_kind kind);
/* The last record of a stream. */
int vm_state_put_end(struct vm_state_writer *w);

/* ---- Reading records ----------------------------------------------------- */

struct vm_state_record {
	uint32_t type;
	uint32_t flags;
	uint64_t length_bytes;
	const uint8_t *payload; /* valid until the next read */
	uint64_t offset_bytes;	/* of the header in the stream */
	uint64_t index;		/* 0 = BEGIN */
};

struct vm_state_reader {
	int fd; /* -1: read from buffer (or through read_fn) */
	/* Set by vm_state_reader_init_io: returns bytes read (0 at the end of
	 * the stream) or -errno. */
	ssize_t (*read_fn)(void *context, void *data, size_t length_bytes);
	void *io_context;
	const uint8_t *buffer;
	size_t buffer_bytes;
	const char *what; /* name used in messages, e.g. "state.bin" */
	uint32_t expected_kind;
	uint64_t offset_bytes;
	uint64_t record_count; /* records read, BEGIN included */
	struct vm_state_begin begin;
	bool began, ended;
	uint8_t *payload; /* owned scratch buffer */
	size_t payload_capacity;
	char *error; /* message for the user */
	size_t error_len;
};

/* Read from fd (not closed).  what names the stream in messages;
 * expected_kind is the kind BEGIN must announce. */
void vm_state_reader_init_fd(struct vm_state_reader *r, int fd, const char *what,
			     enum vm_state_stream_kind expected_kind, char *error,
			     size_t error_len);
/* Read through read_fn(context, ...) (e.g. a TLS session). */
void vm_state_reader_init_io(struct vm_state_reader *r,
			     ssize_t (*read_fn)(void *context, void *data, size_t length_bytes),
			     void *context, const char *what,
			     enum vm_state_stream_kind expected_kind, char *error,
			     size_t error_len);
/* Read from memory (data must outlive the reader). */
void vm_state_reader_init_buffer(struct vm_state_reader *r, const void *data, size_t length_bytes,
				 const char *what, enum vm_state_stream_kind expected_kind,
				 char *error, size_t error_len);
void vm_state_reader_free(struct vm_state_reader *r);

/*
 * Read the next record after BEGIN.  BEGIN is read and checked (magic,
 * version, kind) on the first call; END is checked (record count and, for
 * files and buffers, that nothing follows it).  Returns 1 with *rec
 * filled, 0 after a valid END, or a negative errno with a message in the
 * reader's error buffer: -EPROTO (corrupt, foreign or incomplete stream),
 * -EIO (read error).
 */
int vm_state_next(struct vm_state_reader *r, struct vm_state_record *rec);

/*
 * What to do with a record the caller does not understand: returns 0
 * (skip) if it is optional, or -EPROTO with a message if it is mandatory.
 */
int vm_state_unknown_record(struct vm_state_reader *r, const struct vm_state_record *rec);

/* Set the reader's error message (printf style) and return err. */
int vm_state_fail(struct vm_state_reader *r, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- A whole stream in memory -------------------------------------------- */

struct vm_state_stored_record {
	uint32_t type, flags;
	uint64_t length_bytes;
	uint8_t *payload; /* owned */
};

struct vm_state_records {
	struct vm_state_stored_record *records;
	size_t count, capacity;
	uint64_t payload_bytes; /* sum of the kept payloads */
	struct vm_state_begin begin;
};

/*
 * Keep a copy of rec in list, within the caps above: an optional record
 * over VM_STATE_MAX_OPTIONAL_RECORD_BYTES, or a record that would take the
 * list past VM_STATE_MAX_KEPT_BYTES or VM_STATE_MAX_KEPT_RECORDS, is
 * refused with -EFBIG and a message in r's error buffer (-ENOMEM likewise).
 */
int vm_state_records_keep(struct vm_state_reader *r, struct vm_state_records *list,
			  const struct vm_state_record *rec);

/*
 * Read every record of a stream (BEGIN and END excluded) into out.
 * Returns 0 or a negative errno with the message in r's error buffer.
 */
int vm_state_read_all(struct vm_state_reader *r, struct vm_state_records *out);
void vm_state_records_free(struct vm_state_records *records);
/* The first record of type at or after *position (which is advanced past
 * it), or NULL.  Pass position NULL to search from the start. */
const struct vm_state_stored_record *vm_state_find(const struct vm_state_records *records,
						   uint32_t type, size_t *position);

/* A human-readable name for a record type ("vcpu.regs"), or NULL. */
const char *vm_state_record_name(uint32_t type);

/* ---- Files --------------------------------------------------------------- */

/*
 * Write size_bytes of guest memory at base to a new file name in dirfd,
 * leaving holes where 4 KiB pages are zero; memfd (or -1) lets it skip
 * never-touched ranges with SEEK_DATA.  Fsyncs the file.  Fills the
 * manifest entry (name, size, CRC32C, data bytes).  Returns 0 or -errno.
 */
int vm_state_write_memory_file(int dirfd, const char *name, const uint8_t *base,
			       uint64_t size_bytes, int memfd,
			       struct vm_state_manifest_file *entry);

/*
 * Write data to a new file name in dirfd and fsync it; fills entry.
 * Returns 0 or -errno.
 */
int vm_state_write_file(int dirfd, const char *name, const void *data, size_t length_bytes,
			struct vm_state_manifest_file *entry);

/*
 * Read the file name in dirfd into dest (size_bytes, which must equal the
 * file's size), reading only its data extents and zeroing holes
 * (zero_holes false: dest is known to be zero already), and check its
 * CRC32C against expected_crc.  dest NULL only checks.  Returns 0, or
 * -EPROTO (size or checksum mismatch) / -errno with a message in error.
 */
int vm_state_load_flat_file(int dirfd, const char *name, uint8_t *dest, uint64_t size_bytes,
			    uint32_t expected_crc, bool zero_holes, char *error, size_t error_len);

/*
 * Check the open file fd (not closed; name is for messages) as
 * vm_state_load_flat_file with dest NULL: size, then CRC32C, reading only
 * data extents.  Gives up with -ECANCELED once *cancel (may be NULL)
 * becomes non-zero.  Returns 0, -EPROTO, -ECANCELED or -errno with a
 * message in error.
 */
int vm_state_check_flat_fd(int fd, const char *name, uint64_t size_bytes, uint32_t expected_crc,
			   const int *cancel, char *error, size_t error_len);

/* ---- The state directory -------------------------------------------------- */

#define VM_STATE_FILE_MANIFEST "manifest"
#define VM_STATE_FILE_STATE "state.bin"
#define VM_STATE_FILE_MEMORY "memory.img"
#define VM_STATE_FILE_DOMAIN "domain.xml"
/* A diff's page map: bit p (byte p / 8, bit p % 8) set if memory.img
 * holds page p (zero if it is a hole there). */
#define VM_STATE_FILE_MEMORY_MAP "memory.map"
/* A merged state's disk N (kapsel merge, snapshot_chain.h): "diskN.kovl",
 * the overlay its chain was flattened into, or "diskN.img", a raw copy. */
#define VM_STATE_FILE_DISK_OVERLAY_FORMAT "disk%u.kovl"
#define VM_STATE_FILE_DISK_RAW_FORMAT "disk%u.img"
#define VM_STATE_MAX_DISK_FILES 16u
/* 16: the files above and one disk image for each of the VM's disks. */
#define VM_STATE_MAX_FILES 16u

/* Whether name is one of the disk files above: "disk", a decimal number
 * below VM_STATE_MAX_DISK_FILES without leading zeros, ".kovl" or ".img". */
bool vm_state_is_disk_file_name(const char *name);

/* A save in progress: files go to "<path>.new" until commit. */
struct vm_state_dir_txn {
	char *final_path;
	char *temp_path;
	int dirfd;
	struct vm_state_manifest_file files[VM_STATE_MAX_FILES];
	unsigned file_count;
};

/*
 * Start writing the state directory path: removes a stale "<path>.new"
 * left by a crashed save and creates it afresh.  Returns 0 or -errno with
 * a message in error.
 */
int vm_state_dir_begin(struct vm_state_dir_txn *txn, const char *path, char *error,
		       size_t error_len);

/* Record a file written into txn->dirfd for the manifest. */
int vm_state_dir_add(struct vm_state_dir_txn *txn, const struct vm_state_manifest_file *entry);

/*
 * Write the manifest (last), fsync the directory, then atomically put it
 * in place: renameat2(RENAME_EXCHANGE) with an existing save (whose old
 * files are then removed) or a plain rename; fsync the parent.  On any
 * failure before the swap the previous save at path is untouched.
 * Returns 0 or -errno with a message in error; releases txn either way.
 */
int vm_state_dir_commit(struct vm_state_dir_txn *txn, char *error, size_t error_len);

/* Give up: remove "<path>.new" and release txn. */
void vm_state_dir_abort(struct vm_state_dir_txn *txn);

/* A verified saved directory: manifest checked, state.bin read. */
struct vm_state_dir {
	int dirfd;
	char *path;
	struct vm_state_manifest_file files[VM_STATE_MAX_FILES];
	unsigned file_count;
	struct vm_state_records state;	     /* state.bin */
	const struct vm_state_vm_info *info; /* points into state */
};

/*
 * Open and verify a saved directory: manifest magic, version, records and
 * CRCs; every listed file present with the listed size; state.bin's CRC
 * and its records (BEGIN/END, CRCs, known mandatory records, VM_INFO
 * present and consistent with memory.img's size).  memory.img's content
 * checksum is checked later, while it is loaded (vm_state_load_flat_file),
 * unless check_memory is set.  Returns 0 or -EPROTO / -errno with a
 * message in error that names the file and what is wrong.
 */
int vm_state_dir_open(struct vm_state_dir *dir, const char *path, bool check_memory, char *error,
		      size_t error_len);
void vm_state_dir_close(struct vm_state_dir *dir);

/* The manifest entry for name, or NULL. */
const struct vm_state_manifest_file *vm_state_dir_file(const struct vm_state_dir *dir,
						       const char *name);

/*
 * True if type is a record this version understands (the loader refuses
 * unknown mandatory records with that list).  Device records are checked
 * by their device.
 */
bool vm_state_record_known(uint32_t type);

#endif
