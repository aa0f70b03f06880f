/* The minikernel's process table: allocation, families, exit, zombies and the outcome record. */
#include "kernel.h"

#include "kapsel_guest/libc.h"
#include "kapsel_guest/runtime.h"

struct process processes[PROC_MAX];
struct process *cpu_current[CPU_MAX];
struct outcome outcomes[OUTCOME_MAX];
unsigned outcome_count;
unsigned family_fork_refusals[PROC_MAX + 1];

static int next_pid = 1;

struct process *process_alloc(int parent_pid, int family)
{
	for (unsigned i = 0; i < PROC_MAX; i++) {
		struct process *p = &processes[i];
		if (p->state != PROC_FREE)
			continue;
		memset(p, 0, sizeof(*p));
		p->pid = next_pid++;
		p->parent_pid = parent_pid;
		p->family = family ? family : p->pid;
		return p;
	}
	return 0;
}

struct process *process_by_pid(int pid)
{
	for (unsigned i = 0; i < PROC_MAX; i++)
		if (processes[i].state != PROC_FREE && processes[i].pid == pid)
			return &processes[i];
	return 0;
}

/* Slots a family holds, zombies included (they hold a slot too). */
unsigned process_family_count(int family)
{
	unsigned n = 0;
	for (unsigned i = 0; i < PROC_MAX; i++)
		if (processes[i].state != PROC_FREE && processes[i].family == family)
			n++;
	return n;
}

bool processes_alive(void)
{
	for (unsigned i = 0; i < PROC_MAX; i++)
		if (processes[i].state != PROC_FREE && processes[i].state != PROC_ZOMBIE)
			return true;
	return false;
}

static void record_outcome(struct process *p, bool killed, uint64_t status, uint64_t rip,
			   uint64_t address)
{
	if (outcome_count == OUTCOME_MAX)
		kg_panic("more than %u processes ended; raise OUTCOME_MAX", OUTCOME_MAX);
	outcomes[outcome_count++] = (struct outcome){ .pid = p->pid,
						      .parent_pid = p->parent_pid,
						      .family = p->family,
						      .program = p->program,
						      .is_child = p->is_child,
						      .killed = killed,
						      .status = status,
						      .rip = rip,
						      .address = address };
}

void process_end(struct process *p, bool killed, uint64_t status, uint64_t rip, uint64_t address)
{
	record_outcome(p, killed, status, rip, address);
	vm_release(p);
	p->exit_status = killed ? 128 + status : status;
	/* Its children lose their parent: zombies go now, the others when
	 * they end (nobody will wait for them). */
	for (unsigned i = 0; i < PROC_MAX; i++) {
		struct process *c = &processes[i];
		if (c->state == PROC_FREE || c->parent_pid != p->pid)
			continue;
		c->parent_pid = 0;
		if (c->state == PROC_ZOMBIE)
			c->state = PROC_FREE;
	}
	struct process *parent = p->parent_pid ? process_by_pid(p->parent_pid) : 0;
	if (parent && parent->state != PROC_ZOMBIE) {
		p->state = PROC_ZOMBIE;
		if (parent->state == PROC_WAITING)
			parent->state = PROC_RUNNABLE; /* its SYS_WAIT runs again */
	} else {
		p->state = PROC_FREE;
	}
}
