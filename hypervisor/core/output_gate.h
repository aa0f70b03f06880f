/* The output gate: holds what a guest sends out of the VM (disk writes, frames, console) until its memory is known good. */
#ifndef KAPSEL_OUTPUT_GATE_H
#define KAPSEL_OUTPUT_GATE_H

#include <stdbool.h>

/*
 * One gate per process (a process runs one VM).  It is open unless a
 * lazy restore closed it: guest RAM then maps memory.img and runs before
 * the file's checksum has been checked (state/memory_check.c).  Every
 * path by which the guest's work leaves the VM asks the gate first:
 * writes, flushes and discards of a disk, transmitted frames, console
 * output and a crash report.  So a guest running on damaged memory may
 * compute, but nothing it produces is kept or seen before the verdict;
 * after a bad verdict nothing ever is.
 */

/* Close the gate: outputs wait (before the vCPU first runs). */
void output_gate_close(void);

/* The memory is good: let everything through, wake the waiters. */
void output_gate_open(void);

/* The memory is bad (or the check was abandoned): refuse every held and
 * later output, wake the waiters. */
void output_gate_refuse(void);

/*
 * Wait until the gate is open (returns 0) or refusing (returns -EIO).
 * The common case, an open gate, is one atomic load.  May block for as
 * long as the check takes: call it only where the caller may sleep (a
 * vCPU or I/O thread), never with a lock a check would need.
 */
int output_gate_wait(void);

/* True while outputs are held (the verdict is still out). */
bool output_gate_closed(void);

#endif
