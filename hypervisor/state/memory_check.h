/* The background check of a lazily restored memory.img: its CRC32C is verified while the guest already runs, with its outputs held. */
#ifndef KAPSEL_MEMORY_CHECK_H
#define KAPSEL_MEMORY_CHECK_H

#include <stddef.h>
#include <stdint.h>

struct kapsel_vm;

/*
 * A lazy restore maps memory.img privately and starts the guest at once;
 * this checks the file against the manifest's size and CRC32C on a thread
 * of its own (sandbox role "memory-check"), reading fd (the file the
 * mapping came from: a later save into the same directory or its removal
 * does not change what is checked).  The output gate (core/output_gate.h)
 * is closed now and opened when the check passes.  On a mismatch the
 * thread prints one error naming path and what is wrong, refuses every
 * output, and stops vm (VM_STOP_MEMORY_DAMAGED).  At most one check per
 * process.  fd is duplicated, not taken.  Returns 0 or -errno with a
 * message in error (no thread then; the gate stays as it was).
 */
int memory_check_start(struct kapsel_vm *vm, int fd, const char *path, uint64_t size_bytes,
		       uint32_t crc32c, char *error, size_t error_len);

/* Give the check up (async-signal-safe): it ends at its next chunk with
 * the outputs refused.  No-op without a check. */
void memory_check_abandon(void);

/*
 * Wait for the verdict of the check memory_check_start began and join its
 * thread; abandons the check first when abandon is set (the VM stopped:
 * its outputs are refused then).  No-op without a check.  Call before the
 * VM is destroyed.  Returns 0 (passed, or there was none), -EPROTO (the
 * file is damaged; the error was printed) or -ECANCELED (abandoned).
 */
int memory_check_finish(int abandon);

#endif
