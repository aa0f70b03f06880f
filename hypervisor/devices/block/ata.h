/* Emulated ATA (IDE) disk: the register-level state machine of one channel with drive 0, no KVM inside. */
#ifndef KAPSEL_ATA_H
#define KAPSEL_ATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "devices/block/disk.h"

/*
 * Registers, addressed by their offset from the command block base
 * (0x1f0 on the primary channel); the control block register (0x3f6)
 * is ATA_REG_CONTROL.  Where a register means one thing when read and
 * another when written, both names are given.
 */
enum ata_register {
	ATA_REG_DATA = 0,
	ATA_REG_ERROR_FEATURE = 1,
	ATA_REG_COUNT = 2,
	ATA_REG_LBA_LOW = 3,
	ATA_REG_LBA_MID = 4,
	ATA_REG_LBA_HIGH = 5,
	ATA_REG_DEVICE = 6,
	ATA_REG_STATUS_COMMAND = 7,
	ATA_REG_CONTROL = 8, /* read: alternate status; write: device control */
	ATA_REG_COUNT_ALL = 9
};

/* Status register. */
#define ATA_STATUS_ERR 0x01u
#define ATA_STATUS_DRQ 0x08u
#define ATA_STATUS_DSC 0x10u /* seek complete: obsolete, set as drives do */
#define ATA_STATUS_DF 0x20u
#define ATA_STATUS_DRDY 0x40u
#define ATA_STATUS_BSY 0x80u

/* Error register. */
#define ATA_ERROR_ABRT 0x04u
#define ATA_ERROR_IDNF 0x10u
#define ATA_ERROR_UNC 0x40u

/* Device register. */
#define ATA_DEVICE_DEV 0x10u /* drive 1 selected */
#define ATA_DEVICE_LBA 0x40u
#define ATA_DEVICE_LBA_HIGH_MASK 0x0fu /* LBA28 bits 27:24, or CHS head */

/* Device control register. */
#define ATA_CONTROL_NIEN 0x02u
#define ATA_CONTROL_SRST 0x04u
#define ATA_CONTROL_HOB 0x80u

/* Commands. */
#define ATA_CMD_READ_SECTORS 0x20u
#define ATA_CMD_READ_SECTORS_NORETRY 0x21u
#define ATA_CMD_READ_SECTORS_EXT 0x24u
#define ATA_CMD_READ_MULTIPLE_EXT 0x29u
#define ATA_CMD_WRITE_SECTORS 0x30u
#define ATA_CMD_WRITE_SECTORS_NORETRY 0x31u
#define ATA_CMD_WRITE_SECTORS_EXT 0x34u
#define ATA_CMD_WRITE_MULTIPLE_EXT 0x39u
#define ATA_CMD_READ_VERIFY 0x40u
#define ATA_CMD_READ_VERIFY_EXT 0x42u
#define ATA_CMD_EXECUTE_DIAGNOSTIC 0x90u
#define ATA_CMD_READ_MULTIPLE 0xc4u
#define ATA_CMD_WRITE_MULTIPLE 0xc5u
#define ATA_CMD_SET_MULTIPLE_MODE 0xc6u
#define ATA_CMD_STANDBY_IMMEDIATE 0xe0u
#define ATA_CMD_IDLE_IMMEDIATE 0xe1u
#define ATA_CMD_STANDBY 0xe2u
#define ATA_CMD_IDLE 0xe3u
#define ATA_CMD_CHECK_POWER_MODE 0xe5u
#define ATA_CMD_FLUSH_CACHE 0xe7u
#define ATA_CMD_FLUSH_CACHE_EXT 0xeau
#define ATA_CMD_IDENTIFY_DEVICE 0xecu
#define ATA_CMD_SET_FEATURES 0xefu

/* SET FEATURES subcommands (feature register). */
#define ATA_FEATURE_ENABLE_WRITE_CACHE 0x02u
#define ATA_FEATURE_SET_TRANSFER_MODE 0x03u
#define ATA_FEATURE_DISABLE_READ_LOOKAHEAD 0x55u
#define ATA_FEATURE_DISABLE_REVERTING 0x66u
#define ATA_FEATURE_DISABLE_WRITE_CACHE 0x82u
#define ATA_FEATURE_ENABLE_READ_LOOKAHEAD 0xaau
#define ATA_FEATURE_ENABLE_REVERTING 0xccu

/* IDENTIFY DEVICE words the host side fills (see ata_build_identify). */
#define ATA_ID_WORDS 256u
#define ATA_ID_SERIAL_WORD 10u
#define ATA_ID_SERIAL_CHARS 20u
#define ATA_ID_FIRMWARE_WORD 23u
#define ATA_ID_FIRMWARE_CHARS 8u
#define ATA_ID_MODEL_WORD 27u
#define ATA_ID_MODEL_CHARS 40u
#define ATA_ID_MODEL "KAPSEL EMULATED ATA DISK"
#define ATA_ID_FIRMWARE "KAPSEL1"

#define ATA_LBA28_MAX_SECTORS 0x0fffffffull /* words 60-61 saturate here */
#define ATA_LBA48_MAX_SECTORS 0xffffffffffffull
/* Largest READ/WRITE MULTIPLE block (IDENTIFY word 47). */
#define ATA_MAX_MULTIPLE_SECTORS 128u
/* Sectors the host buffers between the data register and the image. */
#define ATA_BUFFER_SECTORS 128u
/* CHS geometry reported for legacy software (words 1, 3, 6, 54-58). */
#define ATA_CHS_HEADS 16u
#define ATA_CHS_SECTORS_PER_TRACK 63u
#define ATA_CHS_MAX_CYLINDERS 16383u

enum ata_transfer {
	ATA_TRANSFER_NONE = 0,
	ATA_TRANSFER_IN,  /* device -> host: reads, IDENTIFY */
	ATA_TRANSFER_OUT, /* host -> device: writes */
};

struct ata_counters {
	uint64_t commands;	  /* command register writes executed */
	uint64_t commands_failed; /* ended with ERR */
	uint64_t sectors_read;	  /* moved through the data register */
	uint64_t sectors_written;
	uint64_t software_resets;
	uint64_t rate_limit_waits; /* commands held BSY by the rate limiter */
};

/*
 * One ATA channel with one drive (drive 0, "master").  Drive 1 is absent:
 * with DEV set, status reads 0 and commands are ignored, as ATA says device
 * 0 answers for a missing device 1.  All state is private to ata.c; fields
 * are visible only so callers can embed the struct and tests can look.
 */
struct ata_state {
	struct disk_image *disk;
	uint64_t (*now_ns)(void *clock_context);
	void *clock_context;
	char serial[ATA_ID_SERIAL_CHARS + 1];

	/* Task file.  The command block registers are 2-deep FIFOs: a write
	 * moves the current value to the _hob ("high order byte") copy. */
	uint8_t feature, feature_hob;
	uint8_t count, count_hob;
	uint8_t lba_low, lba_low_hob;
	uint8_t lba_mid, lba_mid_hob;
	uint8_t lba_high, lba_high_hob;
	uint8_t device;
	uint8_t status;
	uint8_t error;
	uint8_t control;

	/* Settings. */
	uint8_t multiple_sectors; /* 0: READ/WRITE MULTIPLE are refused */
	bool write_cache;	  /* off: every write is made durable */

	/* The command in progress. */
	uint8_t command;
	enum ata_transfer transfer;
	enum kapsel_blk_op op;
	bool disk_op_open;	 /* admitted, not yet in the disk statistics */
	bool held_by_rate_limit; /* BSY until held_until_ns */
	uint64_t held_until_ns;
	uint64_t command_start_ns;
	uint64_t command_lba;	   /* first sector of the command */
	uint64_t command_sectors;  /* the whole command */
	uint64_t sectors_left;	   /* not yet moved through the data register */
	uint32_t block_sectors;	   /* sectors per DRQ block */
	uint32_t block_bytes_left; /* of the current DRQ block */

	/* Sectors between image and data register: buffer_lba is the first
	 * sector in the buffer, buffer_bytes how much it holds (reads) or has
	 * received (writes), buffer_pos the data register's position. */
	uint8_t *buffer;
	uint64_t buffer_lba;
	uint32_t buffer_bytes;
	uint32_t buffer_pos;
	uint32_t block_start_pos; /* buffer_pos where this DRQ block began */

	struct ata_counters counters;
};

/*
 * Set up ata for disk (already open, outlives ata) in the power-on state.
 * now_ns(clock_context) is the clock for latencies and rate limits.
 * serial_seed picks the serial number (e.g. a hash of the image path).
 * Returns 0 or -ENOMEM.
 */
int ata_init(struct ata_state *ata, struct disk_image *disk,
	     uint64_t (*now_ns)(void *clock_context), void *clock_context, uint32_t serial_seed);

/* Release the buffer (does not close the disk).  Writes that were
 * accepted through the data register are written first. */
void ata_destroy(struct ata_state *ata);

/*
 * A guest read of size (1, 2 or 4) bytes at register reg.  The data
 * register moves size bytes; other registers are 8 bits wide and a wider
 * access reads reg, reg + 1, ... one byte each (as an ISA bus splits it).
 * Returns the value (little-endian).  reg < ATA_REG_COUNT_ALL.
 */
uint32_t ata_io_read(struct ata_state *ata, unsigned reg, unsigned size);

/* A guest write of size bytes at register reg; see ata_io_read. */
void ata_io_write(struct ata_state *ata, unsigned reg, unsigned size, uint32_t value);

/*
 * Move length_bytes through the data register in one go (rep insw / rep
 * outsw, or a single 16/32-bit access).  Reads with DRQ clear return
 * ones; writes with DRQ clear are dropped.  When a DRQ block ends the next
 * one is ready at once, so one string instruction may span blocks.
 */
void ata_data_read(struct ata_state *ata, void *data, size_t length_bytes);
void ata_data_write(struct ata_state *ata, const void *data, size_t length_bytes);

/*
 * Check a state that did not come from the registers (dev_ata.c fills the
 * fields from a snapshot file, then calls this before the guest runs):
 * buffer indices inside the buffer, multiple and block sizes the buffer
 * divides, and for a command in progress its place in the buffer and on
 * the disk as ata.c leaves them, so that what it still reads or writes
 * lies inside the range it was admitted for, inside the disk, and writes
 * only go to a writable disk.  Every state ata.c reaches from the
 * registers passes.  ata->disk must be set.  Returns NULL if the state is
 * usable, else a short name of the first impossible part for a message.
 */
const char *ata_state_check(const struct ata_state *ata);

/* Nanoseconds the rate limiter still holds the current command BSY, or 0. */
uint64_t ata_busy_remaining_ns(const struct ata_state *ata);

/*
 * Fill words[256] with IDENTIFY DEVICE data for the current settings
 * (capacity from the disk, multiple mode, write cache), checksum in word
 * 255.  Exposed for tests.
 */
void ata_build_identify(const struct ata_state *ata, uint16_t words[ATA_ID_WORDS]);

/* Print the counters, "  name: value" per line (device exits come from
 * the caller, to compute exits per sector). */
void ata_print_stats(const struct ata_state *ata, uint64_t device_exits, FILE *out);

#endif
