/* The minikernel's process ABI: user address layout, syscall numbers and error codes. */
#ifndef MINIKERNEL_USER_ABI_H
#define MINIKERNEL_USER_ABI_H

/*
 * Shared by the kernel and the user programs (user.c).  A process calls
 * `syscall` with the number in rax and arguments in rdi, rsi, rdx; the
 * result comes back in rax, negative USER_E* on failure.  Every other
 * register is preserved (rcx and r11 hold what the instruction left).
 */

/* Where a process's memory lives (all in the PV MMU's user half). */
#define USER_IMAGE_VA 0x8000000000ull	     /* program image: text, then data */
#define USER_HEAP_VA 0x8000100000ull	     /* demand-zero heap ... */
#define USER_HEAP_END_VA 0x8000200000ull     /* ... 1 MiB */
#define USER_STACK_BOTTOM_VA 0x80003f0000ull /* demand-zero stack ... */
#define USER_STACK_TOP_VA 0x8000400000ull    /* ... 64 KiB below this */

#define SYS_EXIT 0	   /* (status) -> does not return */
#define SYS_WRITE 1	   /* (buffer, length <= 256) -> length: to the console */
#define SYS_YIELD 2	   /* () -> 0: the next runnable process goes first */
#define SYS_SLEEP 3	   /* (milliseconds) -> 0 */
#define SYS_GETPID 4	   /* () -> pid */
#define SYS_FORK 5	   /* () -> child pid in the parent, 0 in the child */
#define SYS_WAIT 6	   /* (status pointer or 0) -> pid of an exited child */
#define SYS_READ_SECTOR 7  /* (sector, 512-byte buffer) -> 0 */
#define SYS_WRITE_SECTOR 8 /* (sector, 512-byte buffer) -> 0 */
#define SYS_TICKS 9	   /* () -> how often the timer interrupted this process */
#define SYS_PREEMPTIONS 10 /* () -> how often the timer gave its CPU to another process */

#define USER_EIO 5
#define USER_ECHILD 10
#define USER_EAGAIN 11
#define USER_EFAULT 14
#define USER_ENODEV 19
#define USER_EINVAL 22
#define USER_ENOSYS 38

#define USER_WRITE_MAX 256u
#define USER_SECTOR_BYTES 512u

#endif
