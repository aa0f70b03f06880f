/* The minikernel's internal interfaces: frames, processes, address spaces, scheduler and syscalls. */
#ifndef MINIKERNEL_KERNEL_H
#define MINIKERNEL_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kapsel/abi.h"
#include "user_abi.h"

#define PAGE_BYTES 4096u
#define PROC_MAX 40	   /* process slots (zombies hold one until reaped) */
#define PROC_PAGES_MAX 64  /* user pages a process may have mapped */
#define FAMILY_PROCS_MAX 8 /* slots one boot program and its descendants may hold */
#define OUTCOME_MAX 160	   /* processes the final report can list */
#define CPU_MAX 4	   /* vCPUs the kernel schedules on (more stay down) */

/* ---- frames.c: guest RAM frames for processes, reference counted ------ */

/* Take every page the runtime heap has left (minus a reserve) as frames. */
void frames_init(void);
/* A zeroed frame's guest-physical address (== kernel virtual), or 0. */
uint64_t frame_alloc(void);
void frame_ref(uint64_t gpa);
/* Drop one reference; the last one frees the frame. */
void frame_unref(uint64_t gpa);
unsigned frame_refcount(uint64_t gpa);
size_t frames_in_use(void);
size_t frames_total(void);

/* ---- process.c: the process table ------------------------------------- */

enum proc_state {
	PROC_FREE = 0,
	PROC_RUNNABLE,
	PROC_SLEEPING,
	PROC_WAITING, /* in SYS_WAIT: its syscall restarts when a child exits */
	PROC_ZOMBIE,  /* exited; its parent has not waited for it yet */
};

/* One user page the process has, as the kernel knows it (the hypervisor
 * holds the real tables and the kernel cannot read them, docs/abi.md §18.6). */
struct user_page {
	uint64_t va;
	uint64_t gpa;
	uint32_t prot; /* what the process may do: KAPSEL_PROT_WRITE / _EXEC */
	uint32_t cow;  /* shared after fork: mapped read-only until written */
};

struct program;

struct process {
	enum proc_state state;
	int pid, parent_pid;
	int family; /* pid of the boot process it descends from */
	int as;	    /* PV MMU address space id; 0 once released */
	const struct program *program;
	bool is_child; /* made by fork */
	uint64_t wake_ns;
	uint64_t timer_ticks; /* timer upcalls that interrupted it in user mode */
	uint64_t preemptions; /* ... and gave the CPU to another process */
	uint64_t exit_status;
	unsigned page_count;
	struct user_page pages[PROC_PAGES_MAX];
	/* Its user context while it does not run (saved-frame design). */
	struct kapsel_trap_frame frame;
	bool running;	      /* a vCPU runs it (or is about to resume it) */
	unsigned running_cpu; /* which, while running */
};

/* How each process ended, kept after its slot is reused. */
struct outcome {
	int pid, parent_pid;
	const struct program *program;
	int family;
	bool is_child;
	bool killed;
	uint64_t status; /* exit status, or the vector that killed it */
	uint64_t rip, address;
};

extern struct process processes[PROC_MAX];
/* The process each vCPU runs (NULL before its first); `current` is the
 * calling vCPU's.  Everything in the kernel runs under the kernel lock. */
extern struct process *cpu_current[CPU_MAX];
unsigned this_cpu(void);
#define current (cpu_current[this_cpu()])
extern struct outcome outcomes[OUTCOME_MAX];
extern unsigned outcome_count;
extern unsigned family_fork_refusals[PROC_MAX + 1]; /* by family pid */

struct process *process_alloc(int parent_pid, int family);
struct process *process_by_pid(int pid);
unsigned process_family_count(int family);
/* End p (exit or kill): record the outcome, release its memory and
 * address space, hand it to its parent or free it.  p may be current. */
void process_end(struct process *p, bool killed, uint64_t status, uint64_t rip, uint64_t address);
bool processes_alive(void);

/* ---- vm.c: address spaces, user memory, faults, fork ------------------ */

extern bool break_cow; /* kernel argument break=cow: fork shares writable pages */

/* A fresh address space with the user image copied in; 0 or -errno. */
int vm_load_image(struct process *p);
/* Resolve a user page fault of p at va (demand-zero, copy-on-write):
 * true when the access may be retried. */
bool vm_handle_fault(struct process *p, uint64_t va, bool write, bool exec);
/* Copy between kernel memory and p's user memory, through p's own page
 * records (never a raw user pointer); 0 or -USER_EFAULT. */
int vm_copy_from_user(struct process *p, void *to, uint64_t va, size_t length);
/* Make [va, va + length) of p present, private and writable; 0 or -USER_EFAULT. */
int vm_user_writable(struct process *p, uint64_t va, size_t length);
int vm_copy_to_user(struct process *p, uint64_t va, const void *from, size_t length);
/* child gets p's pages, shared copy-on-write; 0 or -errno. */
int vm_fork(struct process *parent, struct process *child);
/* Drop every page and the address space. */
void vm_release(struct process *p);
/* The gpa behind a va of p (0 if not mapped). */
uint64_t vm_gpa_of(struct process *p, uint64_t va);
/* The address space the hardware uses now (kg_as_switch). */
void vm_switch_to(int as);
int vm_current_as(void);

/* ---- sched.c: the scheduler and the entry paths ----------------------- */

void sched_init(uint64_t period_ns);
/* Start the first process; does not return. */
__attribute__((noreturn)) void sched_start(void);
/* Entry from user mode: save the frame into current->frame. */
void sched_enter(struct kapsel_trap_frame *frame);
/* Leave to user mode: pick a process (another one first if rotate) and
 * put its context into frame. */
void sched_leave(struct kapsel_trap_frame *frame, bool rotate);
/* Context switches so far (for the final report). */
unsigned sched_context_switches(void);
/* vCPUs the kernel schedules on, and how often vCPU cpu switched to a process. */
unsigned sched_cpu_count(void);
unsigned sched_cpu_picks(unsigned cpu);
/* Block current until a child exits: its syscall runs again then. */
void sched_block_restart(struct process *p);

/* ---- syscall.c -------------------------------------------------------- */

void syscall_init(void);
void on_syscall(struct kapsel_trap_frame *frame);

/* ---- main.c ----------------------------------------------------------- */

enum expect_kind {
	EXPECT_EXIT,	      /* exits with status value */
	EXPECT_KILLED,	      /* killed by exception vector value */
	EXPECT_FORK_REFUSALS, /* exits with the number of forks its family was refused, > 0 */
};

#define CHILD_NONE (-1)	    /* makes no children */
#define CHILD_ANY_EXIT (-2) /* its children exit (any status), none is killed */

struct program {
	const char *name;
	void (*entry)(uint64_t arg);
	enum expect_kind expect;
	uint64_t value;
	int64_t child_exit; /* a status, or CHILD_NONE / CHILD_ANY_EXIT */
};

/* Everything ended: print the report, check it, power off. */
__attribute__((noreturn)) void kernel_finish(void);
const char *vector_name(uint64_t vector);

#endif
