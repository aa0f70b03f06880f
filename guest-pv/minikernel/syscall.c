/* The minikernel's system calls: console, processes, time and block I/O for user programs. */
#include "kernel.h"

#include "kapsel_guest/block.h"
#include "kapsel_guest/console.h"
#include "kapsel_guest/libc.h"
#include "kapsel_guest/mmu.h"
#include "kapsel_guest/platform.h"
#include "kapsel_guest/runtime.h"

static struct kg_block_device *disk;
static struct kg_block_info disk_info;
/* The disk never sees a user address: data goes through this buffer. */
static uint8_t bounce[USER_SECTOR_BYTES] __attribute__((aligned(4096)));

void syscall_init(void)
{
	/* Before frames_init takes the heap: the driver allocates its ring. */
	if (kg_block_open(0, KG_BLOCK_AUTO, &disk) != 0) {
		disk = 0;
		kg_printf("kernel: no disk; the sector syscalls answer -ENODEV\n");
		return;
	}
	kg_block_get_info(disk, &disk_info);
	kg_printf("kernel: disk of %llu sectors via %s\n",
		  (unsigned long long)disk_info.capacity_sectors,
		  disk_info.path == KG_BLOCK_ATA ? "ata" : "pv");
}

static int64_t sys_write(struct process *p, uint64_t buffer, uint64_t length)
{
	char text[USER_WRITE_MAX];
	if (length > USER_WRITE_MAX)
		return -USER_EINVAL;
	if (vm_copy_from_user(p, text, buffer, length) != 0)
		return -USER_EFAULT;
	kg_console_write(text, length);
	return (int64_t)length;
}

static void count_refusal(const struct process *parent)
{
	if (parent->family > 0 && parent->family <= PROC_MAX)
		family_fork_refusals[parent->family]++;
}

static int64_t sys_fork(struct process *parent)
{
	if (process_family_count(parent->family) >= FAMILY_PROCS_MAX) {
		count_refusal(parent);
		kg_printf("kernel: fork by pid %d (%s) refused: its family holds %u processes, the limit\n",
			  parent->pid, parent->program->name, FAMILY_PROCS_MAX);
		return -USER_EAGAIN;
	}
	struct process *child = process_alloc(parent->pid, parent->family);
	if (!child) {
		count_refusal(parent);
		kg_printf("kernel: fork by pid %d refused: process table full\n", parent->pid);
		return -USER_EAGAIN;
	}
	child->program = parent->program;
	child->is_child = true;
	if (vm_fork(parent, child) != 0) {
		count_refusal(parent);
		vm_release(child);
		child->state = PROC_FREE;
		kg_printf("kernel: fork by pid %d refused: no address space left\n", parent->pid);
		return -USER_EAGAIN;
	}
	child->frame = parent->frame;
	child->frame.rax = 0;
	child->state = PROC_RUNNABLE;
	return child->pid;
}

/* SYS_WAIT: reap a zombie child; block (and run again later) while the
 * children live; -ECHILD without children.  rax stays the call number
 * while blocked, so the restarted instruction makes the same call. */
static bool sys_wait(struct process *p, uint64_t status_va, int64_t *result)
{
	bool children = false;
	for (unsigned i = 0; i < PROC_MAX; i++) {
		struct process *c = &processes[i];
		if (c->state == PROC_FREE || c->parent_pid != p->pid)
			continue;
		children = true;
		if (c->state != PROC_ZOMBIE)
			continue;
		if (status_va &&
		    vm_copy_to_user(p, status_va, &c->exit_status, sizeof(c->exit_status)) != 0) {
			*result = -USER_EFAULT;
			return true;
		}
		*result = c->pid;
		c->state = PROC_FREE;
		return true;
	}
	if (!children) {
		*result = -USER_ECHILD;
		return true;
	}
	sched_block_restart(p);
	return false;
}

static int64_t sys_sector(struct process *p, bool write, uint64_t sector, uint64_t buffer)
{
	if (!disk)
		return -USER_ENODEV;
	if (sector >= disk_info.capacity_sectors)
		return -USER_EINVAL;
	if (write) {
		if (vm_copy_from_user(p, bounce, buffer, USER_SECTOR_BYTES) != 0)
			return -USER_EFAULT;
		int rc = kg_block_write(disk, sector, bounce, 1);
		kg_irq_disable(); /* a wait in the hypervisor unmasks upcalls */
		return rc ? -USER_EIO : 0;
	}
	/* Check the destination before the disk moves anything. */
	if (vm_user_writable(p, buffer, USER_SECTOR_BYTES) != 0)
		return -USER_EFAULT;
	int rc = kg_block_read(disk, sector, bounce, 1);
	kg_irq_disable();
	if (rc)
		return -USER_EIO;
	return vm_copy_to_user(p, buffer, bounce, USER_SECTOR_BYTES);
}

void on_syscall(struct kapsel_trap_frame *frame)
{
	sched_enter(frame);
	struct process *p = current;
	struct kapsel_trap_frame *f = &p->frame;
	int64_t result = -USER_ENOSYS;
	bool rotate = false;
	switch (f->rax) {
	case SYS_EXIT:
		process_end(p, false, f->rdi, f->rip, 0);
		sched_leave(frame, true);
		return;
	case SYS_WRITE:
		result = sys_write(p, f->rdi, f->rsi);
		break;
	case SYS_YIELD:
		result = 0;
		rotate = true;
		break;
	case SYS_SLEEP:
		p->wake_ns = kg_time_now_ns() + f->rdi * 1000000u;
		p->state = PROC_SLEEPING;
		result = 0;
		break;
	case SYS_GETPID:
		result = p->pid;
		break;
	case SYS_FORK:
		result = sys_fork(p);
		break;
	case SYS_WAIT:
		if (!sys_wait(p, f->rdi, &result)) {
			sched_leave(frame, true);
			return;
		}
		break;
	case SYS_READ_SECTOR:
	case SYS_WRITE_SECTOR:
		result = sys_sector(p, f->rax == SYS_WRITE_SECTOR, f->rdi, f->rsi);
		break;
	case SYS_TICKS:
		result = (int64_t)p->timer_ticks;
		break;
	case SYS_PREEMPTIONS:
		result = (int64_t)p->preemptions;
		break;
	default:
		break;
	}
	f->rax = (uint64_t)result;
	sched_leave(frame, rotate);
}
