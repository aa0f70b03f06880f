/* PV CPU state in saved VMs and migration streams: trap table, upcall callback, VIRQ bindings, armed timer. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/error_text.h"
#include "core/pv_cpu.h"
#include "core/vm.h"
#include "state/vm_state.h"
#include "core/x86_boot.h"

static bool in_use(const struct pv_cpu_vcpu *c)
{
	if (c->callback.entry || c->timer_deadline_ns != KAPSEL_TIMER_STOP || c->active_vectors)
		return true;
	for (unsigned i = 0; i < KAPSEL_VIRQ_COUNT; i++)
		if (c->virq_port[i] != UINT32_MAX)
			return true;
	for (unsigned v = 0; v < KAPSEL_TRAP_VECTOR_COUNT; v++)
		if (c->traps[v].entry)
			return true;
	return false;
}

static void save_vcpu(const struct kapsel_vcpu *vcpu, struct vm_state_writer *out)
{
	const struct pv_cpu_vcpu *c = &vcpu->pv_cpu;
	if (!in_use(c))
		return;
	struct vm_state_pv_cpu rec;
	memset(&rec, 0, sizeof(rec));
	rec.vcpu = vcpu->id;
	rec.active_vectors = c->active_vectors;
	for (unsigned v = 0; v < KAPSEL_TRAP_VECTOR_COUNT; v++)
		rec.traps[v] =
			(struct vm_state_pv_handler){ c->traps[v].entry, c->traps[v].stack_top,
						      c->traps[v].stack_bytes };
	rec.callback = (struct vm_state_pv_handler){ c->callback.entry, c->callback.stack_top,
						     c->callback.stack_bytes };
	rec.timer_deadline_ns = c->timer_deadline_ns;
	rec.timer_period_ns = c->timer_period_ns;
	for (unsigned i = 0; i < 4; i++)
		rec.virq_port[i] = i < KAPSEL_VIRQ_COUNT ? c->virq_port[i] : UINT32_MAX;
	vm_state_put(out, VM_STATE_VCPU_PV_CPU, VM_STATE_RECORD_MANDATORY, &rec, sizeof(rec));
}

void pv_cpu_save(struct kapsel_vm *vm, struct vm_state_writer *out)
{
	/* A down vCPU has none (VCPU_UP starts it afresh); vCPU 0 is never down. */
	for (unsigned i = 0; i < vm->vcpu_count; i++)
		if (i == 0 ||
		    __atomic_load_n(&vm->vcpus[i].power, __ATOMIC_SEQ_CST) != VCPU_POWER_DOWN)
			save_vcpu(&vm->vcpus[i], out);
}

static int check_handler(struct kapsel_vm *vm, const struct vm_state_pv_handler *saved,
			 struct pv_handler *out, const char *what, char *error, size_t error_len)
{
	*out = (struct pv_handler){ saved->entry, saved->stack_top, saved->stack_bytes };
	if (!saved->entry)
		return 0;
	if (pv_cpu_check_handler(&vm->mem, out) < 0)
		return kapsel_fail(
			error, error_len, -EPROTO,
			"the saved PV CPU state names a %s at %#llx with stack [%#llx, %#llx) that is not in this VM's guest RAM; the state is damaged or forged",
			what, (unsigned long long)saved->entry,
			(unsigned long long)(saved->stack_top - saved->stack_bytes),
			(unsigned long long)saved->stack_top);
	return 0;
}

/* The PV CPU state a record describes, checked against this VM. */
static int load_record(struct kapsel_vm *vm, const struct vm_state_pv_cpu *saved,
		       struct pv_cpu_vcpu *next, char *error, size_t error_len)
{
	struct vm_state_pv_cpu rec = *saved;
	if (rec.active_vectors & ~KAPSEL_TRAP_VECTORS_ALLOWED)
		return kapsel_fail(
			error, error_len, -EPROTO,
			"the saved PV CPU record of vCPU %u has deliveries %#x in progress; those vectors cannot be delivered",
			rec.vcpu, rec.active_vectors);
	for (unsigned v = 0; v < KAPSEL_TRAP_VECTOR_COUNT; v++) {
		if (rec.traps[v].entry && !(KAPSEL_TRAP_VECTORS_ALLOWED & (1u << v)))
			return kapsel_fail(
				error, error_len, -EPROTO,
				"the saved PV CPU record has a handler for vector %u, which guests cannot handle",
				v);
		int err = check_handler(vm, &rec.traps[v], &next->traps[v], x86_exception_name(v),
					error, error_len);
		if (err)
			return err;
	}
	int err = check_handler(vm, &rec.callback, &next->callback, "upcall callback", error,
				error_len);
	if (err)
		return err;
	if (rec.timer_deadline_ns != KAPSEL_TIMER_STOP && rec.timer_period_ns &&
	    rec.timer_period_ns < KAPSEL_TIMER_MIN_PERIOD_NS)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved timer period of %llu ns is below the %llu ns minimum",
				   (unsigned long long)rec.timer_period_ns,
				   (unsigned long long)KAPSEL_TIMER_MIN_PERIOD_NS);
	for (unsigned i = 0; i < KAPSEL_VIRQ_COUNT; i++) {
		uint32_t port = rec.virq_port[i];
		if (port != UINT32_MAX &&
		    (port >= KAPSEL_EVTCHN_COUNT || port == KAPSEL_EVTCHN_CONTROL ||
		     !vm->evtchn[port].allocated || vm->evtchn[port].bound_device >= 0))
			return kapsel_fail(
				error, error_len, -EPROTO,
				"the saved PV CPU record binds VIRQ %u to event channel %u, which the saved VM did not allocate for it",
				i, port);
		next->virq_port[i] = port;
	}
	next->active_vectors = rec.active_vectors;
	next->timer_deadline_ns = rec.timer_deadline_ns;
	next->timer_period_ns =
		rec.timer_deadline_ns == KAPSEL_TIMER_STOP ? 0 : rec.timer_period_ns;
	return 0;
}

int pv_cpu_load(struct kapsel_vm *vm, const struct vm_state_records *state, char *error,
		size_t error_len)
{
	/* Everything unregistered, unless a record says otherwise. */
	struct pv_cpu_vcpu next[KAPSEL_MAX_VCPUS];
	bool seen[KAPSEL_MAX_VCPUS] = { false };
	for (unsigned i = 0; i < vm->vcpu_count; i++) {
		next[i] = vm->vcpus[i].pv_cpu;
		memset(next[i].traps, 0, sizeof(next[i].traps));
		memset(&next[i].callback, 0, sizeof(next[i].callback));
		next[i].active_vectors = 0;
		next[i].timer_deadline_ns = KAPSEL_TIMER_STOP;
		next[i].timer_period_ns = 0;
		for (unsigned v = 0; v < KAPSEL_VIRQ_COUNT; v++)
			next[i].virq_port[v] = UINT32_MAX;
	}
	const struct vm_state_stored_record *found;
	size_t position = 0;
	while ((found = vm_state_find(state, VM_STATE_VCPU_PV_CPU, &position))) {
		struct vm_state_pv_cpu rec;
		if (found->length_bytes != sizeof(rec))
			return kapsel_fail(error, error_len, -EPROTO,
					   "the saved PV CPU record has %llu bytes, expected %zu",
					   (unsigned long long)found->length_bytes, sizeof(rec));
		memcpy(&rec, found->payload, sizeof(rec));
		if (rec.vcpu >= vm->vcpu_count || seen[rec.vcpu])
			return kapsel_fail(
				error, error_len, -EPROTO,
				"the saved PV CPU record names vCPU %u, but this VM has %u vCPUs%s; the state is damaged or forged",
				rec.vcpu, vm->vcpu_count,
				rec.vcpu < vm->vcpu_count ? " and that vCPU has two records" : "");
		seen[rec.vcpu] = true;
		int err = load_record(vm, &rec, &next[rec.vcpu], error, error_len);
		if (err)
			return err;
	}
	for (unsigned i = 0; i < vm->vcpu_count; i++) {
		vm->vcpus[i].pv_cpu = next[i];
		vm->vcpus[i].pv_cpu.timer_restored = next[i].timer_deadline_ns != KAPSEL_TIMER_STOP;
		__atomic_store_n(&vm->vcpus[i].pv_cpu.timer_fired, 0, __ATOMIC_SEQ_CST);
	}
	return 0;
}

void pv_cpu_state_print(const struct vm_state_records *state, FILE *out)
{
	const struct vm_state_stored_record *found;
	size_t position = 0;
	while ((found = vm_state_find(state, VM_STATE_VCPU_PV_CPU, &position))) {
		struct vm_state_pv_cpu rec;
		if (found->length_bytes != sizeof(rec))
			continue;
		memcpy(&rec, found->payload, sizeof(rec));
		fprintf(out, "  vcpu%s", rec.vcpu ? "" : ".pv_cpu");
		if (rec.vcpu)
			fprintf(out, " %u pv_cpu", rec.vcpu);
		fprintf(out, ": trap handlers for");
		unsigned count = 0;
		for (unsigned v = 0; v < KAPSEL_TRAP_VECTOR_COUNT; v++)
			if (rec.traps[v].entry)
				fprintf(out, "%s %u", count++ ? "," : "", v);
		if (!count)
			fprintf(out, " none");
		fprintf(out, "; upcall callback %#llx; active %#x\n",
			(unsigned long long)rec.callback.entry, rec.active_vectors);
		if (rec.timer_deadline_ns == KAPSEL_TIMER_STOP)
			fprintf(out, "  timer: stopped\n");
		else
			fprintf(out, "  timer: deadline %llu ns, period %llu ns, VIRQ port %d\n",
				(unsigned long long)rec.timer_deadline_ns,
				(unsigned long long)rec.timer_period_ns,
				rec.virq_port[KAPSEL_VIRQ_TIMER] == UINT32_MAX
					? -1
					: (int)rec.virq_port[KAPSEL_VIRQ_TIMER]);
	}
}
