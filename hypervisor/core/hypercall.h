/* Hypercall dispatch: a table indexed by call number, with per-call counters. */
#ifndef KAPSEL_HYPERCALL_H
#define KAPSEL_HYPERCALL_H

#include <stddef.h>
#include <stdint.h>

#include "kapsel/abi.h"

struct log_limit;

struct kapsel_vcpu;

#define HYPERCALL_TABLE_SIZE 64u
#define HYPERCALL_ARG_COUNT 5u

/*
 * A hypercall handler, run on the thread of vcpu, the vCPU that made the
 * call (vcpu->vm is its VM).  args are the guest's rdi, rsi, rcx, r8, r9,
 * as the guest supplied them (untrusted).  Returns the value for the
 * guest's rax: >= 0 on success, a negative KAPSEL_E* errno on failure.
 */
typedef int64_t (*hypercall_fn)(struct kapsel_vcpu *vcpu, const uint64_t args[HYPERCALL_ARG_COUNT]);

struct hypercall_entry {
	hypercall_fn fn;
	const char *name;
	uint64_t calls;
};

struct hypercall_table {
	struct hypercall_entry entries[HYPERCALL_TABLE_SIZE];
	uint64_t unknown_calls;	     /* numbers nobody registered */
	struct log_limit *log_limit; /* the VM's guest log limiter, or NULL (no limit) */
};

/* Zero the table. */
void hypercall_table_init(struct hypercall_table *table);

/*
 * Register fn as call number nr.  Returns 0, -ERANGE if nr is outside the
 * table, -EEXIST if nr is taken, or -EINVAL if fn or name is NULL.
 */
int hypercall_register(struct hypercall_table *table, uint64_t nr, const char *name,
		       hypercall_fn fn);

/* One call of a subsystem's table (hypercall_register_all). */
struct hypercall_def {
	uint64_t nr;
	const char *name;
	hypercall_fn fn;
};

/* Register each of calls[0 .. count); on the first failure print which
 * call could not be registered and return its error. */
int hypercall_register_all(struct hypercall_table *table, const struct hypercall_def *calls,
			   size_t count);

/*
 * Run call nr.  Unknown numbers return -KAPSEL_ENOSYS, are counted and
 * logged through table->log_limit (a guest cannot flood the log).
 */
int64_t hypercall_dispatch(struct hypercall_table *table, struct kapsel_vcpu *vcpu, uint64_t nr,
			   const uint64_t args[HYPERCALL_ARG_COUNT]);

/* Register the core ABI v1 calls (hypercall_core.c, and pv_cpu.c for minor 3).
 * Returns 0 or -errno. */
int hypercall_register_core(struct hypercall_table *table);

#endif
