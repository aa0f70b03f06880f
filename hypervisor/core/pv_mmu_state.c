/* PV MMU state in saved VMs and migration streams: address spaces as mappings, mode, kernel entry. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/error_text.h"
#include "core/log.h"
#include "core/pv_cpu.h"
#include "core/pv_mmu.h"
#include "core/vm.h"
#include "state/vm_state.h"

static bool in_use(const struct pv_mmu *m)
{
	if (m->syscall_entry || m->kernel_stack.stack_top || m->current)
		return true;
	for (unsigned as = 1; as < KAPSEL_AS_MAX; as++)
		if (m->spaces[as].used)
			return true;
	return false;
}

struct collect {
	struct vm_state_writer *out;
	struct vm_state_pv_mmu_mapping *chunk;
	unsigned as, filled;
	uint64_t total;
};

static void flush(struct collect *c)
{
	if (c->filled)
		vm_state_put(c->out, VM_STATE_PV_MMU_MAPPINGS, VM_STATE_RECORD_MANDATORY, c->chunk,
			     (uint64_t)c->filled * sizeof(*c->chunk));
	c->filled = 0;
}

static void count_one(uint64_t va, uint64_t gpa, unsigned prot, void *arg)
{
	(void)va, (void)gpa, (void)prot;
	(*(uint64_t *)arg)++;
}

static void collect_one(uint64_t va, uint64_t gpa, unsigned prot, void *arg)
{
	struct collect *c = arg;
	c->chunk[c->filled++] =
		(struct vm_state_pv_mmu_mapping){ .as = c->as, .prot = prot, .va = va, .gpa = gpa };
	c->total++;
	if (c->filled == PV_MMU_STATE_MAPPINGS_PER_RECORD)
		flush(c);
}

void pv_mmu_save(struct kapsel_vm *vm, struct vm_state_writer *out)
{
	const struct pv_mmu *m = &vm->pv_mmu;
	if (!in_use(m))
		return;
	struct vm_state_pv_mmu rec;
	memset(&rec, 0, sizeof(rec));
	rec.current = m->current;
	rec.user_mode = m->user_mode;
	rec.syscall_entry = m->syscall_entry;
	rec.kernel_stack_top = m->kernel_stack.stack_top;
	rec.kernel_stack_bytes = m->kernel_stack.stack_bytes;
	for (unsigned as = 1; as < KAPSEL_AS_MAX; as++) {
		if (!m->spaces[as].used)
			continue;
		rec.spaces_mask |= 1ull << as;
		pv_mmu_each_mapping(m, as, count_one, &rec.mapping_count);
	}
	if (rec.mapping_count > PV_MMU_STATE_MAPPINGS_MAX) {
		kapsel_error("the guest has %llu page mappings; a saved VM holds at most %u (unmap memory in the guest, or save it later)",
			     (unsigned long long)rec.mapping_count, PV_MMU_STATE_MAPPINGS_MAX);
		if (!out->error)
			out->error = -EFBIG;
		return;
	}
	vm_state_put(out, VM_STATE_VCPU_PV_MMU, VM_STATE_RECORD_MANDATORY, &rec, sizeof(rec));
	struct collect c = { .out = out };
	c.chunk = malloc(PV_MMU_STATE_MAPPINGS_PER_RECORD * sizeof(*c.chunk));
	if (!c.chunk) {
		if (!out->error)
			out->error = -ENOMEM;
		return;
	}
	for (unsigned as = 1; as < KAPSEL_AS_MAX; as++) {
		c.as = as;
		pv_mmu_each_mapping(m, as, collect_one, &c);
	}
	flush(&c);
	free(c.chunk);
}

static int load_mappings(struct kapsel_vm *vm, const struct vm_state_records *state,
			 const struct vm_state_pv_mmu *rec, char *error, size_t error_len)
{
	struct pv_mmu *m = &vm->pv_mmu;
	uint64_t seen = 0;
	size_t position = 0;
	const struct vm_state_stored_record *found;
	while ((found = vm_state_find(state, VM_STATE_PV_MMU_MAPPINGS, &position))) {
		const size_t size = sizeof(struct vm_state_pv_mmu_mapping);
		if (found->length_bytes % size ||
		    found->length_bytes / size > PV_MMU_STATE_MAPPINGS_PER_RECORD)
			return kapsel_fail(
				error, error_len, -EPROTO,
				"a saved PV MMU mapping record has %llu bytes; the state is damaged or forged",
				(unsigned long long)found->length_bytes);
		for (uint64_t i = 0; i < found->length_bytes / size; i++) {
			struct vm_state_pv_mmu_mapping map;
			memcpy(&map, (const uint8_t *)found->payload + i * size, size);
			if (map.as == 0 || map.as >= KAPSEL_AS_MAX ||
			    !(rec->spaces_mask & (1ull << map.as)))
				return kapsel_fail(
					error, error_len, -EPROTO,
					"a saved PV MMU mapping names address space %u, which the saved VM did not have",
					map.as);
			struct kapsel_mmu_op op = {
				.va = map.va, .gpa = map.gpa, .op = KAPSEL_MMU_MAP, .prot = map.prot
			};
			int err = pv_mmu_apply(m, &vm->mem, map.as, &op);
			if (err)
				return kapsel_fail(
					error, error_len, -EPROTO,
					"a saved PV MMU mapping of %#llx to %#llx in address space %u is refused (%s); the state is damaged or forged",
					(unsigned long long)map.va, (unsigned long long)map.gpa,
					map.as, strerror(-err));
			if (++seen > rec->mapping_count)
				break;
		}
	}
	if (seen != rec->mapping_count)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved PV MMU state announces %llu mappings but holds %llu",
				   (unsigned long long)rec->mapping_count,
				   (unsigned long long)seen);
	return 0;
}

static int load_record(struct kapsel_vm *vm, const struct vm_state_records *state,
		       const struct vm_state_stored_record *found, char *error, size_t error_len)
{
	struct pv_mmu *m = &vm->pv_mmu;
	struct vm_state_pv_mmu rec;
	if (found->length_bytes != sizeof(rec))
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved PV MMU record has %llu bytes, expected %zu",
				   (unsigned long long)found->length_bytes, sizeof(rec));
	memcpy(&rec, found->payload, sizeof(rec));
	if (rec.vcpu != 0 || rec.user_mode > 1 || (rec.spaces_mask & 1) ||
	    rec.current >= KAPSEL_AS_MAX ||
	    (rec.current && !(rec.spaces_mask & (1ull << rec.current))) ||
	    (rec.user_mode && !rec.current) || rec.mapping_count > PV_MMU_STATE_MAPPINGS_MAX)
		return kapsel_fail(
			error, error_len, -EPROTO,
			"the saved PV MMU record is inconsistent (vCPU %u, current space %u, user mode %u, spaces %#llx); the state is damaged or forged",
			rec.vcpu, rec.current, rec.user_mode, (unsigned long long)rec.spaces_mask);
	if (rec.kernel_stack_top &&
	    pv_cpu_check_stack(&vm->mem, rec.kernel_stack_top, rec.kernel_stack_bytes))
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved kernel stack [%#llx, %#llx) is not in this VM's guest RAM",
				   (unsigned long long)(rec.kernel_stack_top -
							rec.kernel_stack_bytes),
				   (unsigned long long)rec.kernel_stack_top);
	if (rec.user_mode && !rec.kernel_stack_top)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved vCPU runs in user mode without a kernel stack");
	if (rec.syscall_entry && !guest_memory_translate_guest(&vm->mem, rec.syscall_entry, 1))
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved syscall entry %#llx is not in this VM's guest RAM",
				   (unsigned long long)rec.syscall_entry);
	for (unsigned as = 1; as < KAPSEL_AS_MAX; as++)
		if ((rec.spaces_mask & (1ull << as)) && pv_mmu_space_create_at(m, as))
			return kapsel_fail(error, error_len, -EPROTO,
					   "no room for the saved address spaces");
	int err = load_mappings(vm, state, &rec, error, error_len);
	if (err)
		return err;
	if (rec.syscall_entry && pv_mmu_set_syscall_msrs(vm_boot_vcpu(vm)))
		return kapsel_fail(error, error_len, -EIO,
				   "cannot restore the guest's syscall entry");
	m->current = rec.current;
	m->user_mode = rec.user_mode;
	m->syscall_entry = rec.syscall_entry;
	m->kernel_stack = (struct pv_handler){ .stack_top = rec.kernel_stack_top,
					       .stack_bytes = rec.kernel_stack_bytes };
	return 0;
}

int pv_mmu_load(struct kapsel_vm *vm, const struct vm_state_records *state, char *error,
		size_t error_len)
{
	struct pv_mmu *m = &vm->pv_mmu;
	pv_mmu_clear(m);
	const struct vm_state_stored_record *found =
		vm_state_find(state, VM_STATE_VCPU_PV_MMU, NULL);
	int err = 0;
	if (found)
		err = load_record(vm, state, found, error, error_len);
	else if (vm_state_find(state, VM_STATE_PV_MMU_MAPPINGS, NULL))
		err = kapsel_fail(error, error_len, -EPROTO,
				  "the saved state has PV MMU mappings but no PV MMU record");
	if (err) {
		pv_mmu_clear(m);
		return err;
	}
	/* CR3, TR and EFER for the restored mode, through the switch stub. */
	m->reload_pending = found != NULL;
	return 0;
}

void pv_mmu_state_print(const struct vm_state_records *state, FILE *out)
{
	const struct vm_state_stored_record *found =
		vm_state_find(state, VM_STATE_VCPU_PV_MMU, NULL);
	struct vm_state_pv_mmu rec;
	if (!found || found->length_bytes != sizeof(rec))
		return;
	memcpy(&rec, found->payload, sizeof(rec));
	fprintf(out,
		"  vcpu.pv_mmu: %u address space(s), %llu mapping(s); current %u, %s mode; syscall entry %#llx; kernel stack top %#llx\n",
		(unsigned)__builtin_popcountll(rec.spaces_mask),
		(unsigned long long)rec.mapping_count, rec.current,
		rec.user_mode ? "user" : "kernel", (unsigned long long)rec.syscall_entry,
		(unsigned long long)rec.kernel_stack_top);
}
