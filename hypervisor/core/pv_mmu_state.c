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

static bool vcpu_in_use(const struct pv_mmu_vcpu *v)
{
	return v->kernel_stack.stack_top || v->current;
}

static bool in_use(const struct kapsel_vm *vm)
{
	const struct pv_mmu *m = &vm->pv_mmu;
	if (m->syscall_entry)
		return true;
	for (unsigned i = 0; i < vm->vcpu_count; i++)
		if (vcpu_in_use(&vm->vcpus[i].pv_mmu))
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
	if (!in_use(vm))
		return;
	struct vm_state_pv_mmu rec;
	memset(&rec, 0, sizeof(rec));
	rec.syscall_entry = m->syscall_entry;
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
	/* vCPU 0's record first (the restore rebuilds the spaces from it),
	 * then one per other vCPU with a space or a kernel stack. */
	for (unsigned i = 0; i < vm->vcpu_count; i++) {
		const struct pv_mmu_vcpu *v = &vm->vcpus[i].pv_mmu;
		if (i > 0 && !vcpu_in_use(v))
			continue;
		rec.vcpu = i;
		rec.current = v->current;
		rec.user_mode = v->user_mode;
		rec.kernel_stack_top = v->kernel_stack.stack_top;
		rec.kernel_stack_bytes = v->kernel_stack.stack_bytes;
		vm_state_put(out, VM_STATE_VCPU_PV_MMU, VM_STATE_RECORD_MANDATORY, &rec,
			     sizeof(rec));
	}
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

/* A record's own fields, checked against this VM (not its mappings). */
static int check_record(struct kapsel_vm *vm, const struct vm_state_stored_record *found,
			struct vm_state_pv_mmu *rec, char *error, size_t error_len)
{
	if (found->length_bytes != sizeof(*rec))
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved PV MMU record has %llu bytes, expected %zu",
				   (unsigned long long)found->length_bytes, sizeof(*rec));
	memcpy(rec, found->payload, sizeof(*rec));
	if (rec->vcpu >= vm->vcpu_count || rec->user_mode > 1 || (rec->spaces_mask & 1) ||
	    rec->current >= KAPSEL_AS_MAX ||
	    (rec->current && !(rec->spaces_mask & (1ull << rec->current))) ||
	    (rec->user_mode && !rec->current) || rec->mapping_count > PV_MMU_STATE_MAPPINGS_MAX)
		return kapsel_fail(
			error, error_len, -EPROTO,
			"the saved PV MMU record is inconsistent (vCPU %u of %u, current space %u, user mode %u, spaces %#llx); the state is damaged or forged",
			rec->vcpu, vm->vcpu_count, rec->current, rec->user_mode,
			(unsigned long long)rec->spaces_mask);
	if (rec->kernel_stack_top &&
	    pv_cpu_check_stack(&vm->mem, rec->kernel_stack_top, rec->kernel_stack_bytes))
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved kernel stack [%#llx, %#llx) is not in this VM's guest RAM",
				   (unsigned long long)(rec->kernel_stack_top -
							rec->kernel_stack_bytes),
				   (unsigned long long)rec->kernel_stack_top);
	if (rec->user_mode && !rec->kernel_stack_top)
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved vCPU runs in user mode without a kernel stack");
	if (rec->syscall_entry && !guest_memory_translate_guest(&vm->mem, rec->syscall_entry, 1))
		return kapsel_fail(error, error_len, -EPROTO,
				   "the saved syscall entry %#llx is not in this VM's guest RAM",
				   (unsigned long long)rec->syscall_entry);
	return 0;
}

/* The address spaces and their mappings, from vCPU 0's record. */
static int load_spaces(struct kapsel_vm *vm, const struct vm_state_records *state,
		       const struct vm_state_pv_mmu *rec, char *error, size_t error_len)
{
	struct pv_mmu *m = &vm->pv_mmu;
	for (unsigned as = 1; as < KAPSEL_AS_MAX; as++)
		if ((rec->spaces_mask & (1ull << as)) && pv_mmu_space_create_at(m, as))
			return kapsel_fail(error, error_len, -EPROTO,
					   "no room for the saved address spaces");
	int err = load_mappings(vm, state, rec, error, error_len);
	if (err)
		return err;
	if (rec->syscall_entry && pv_mmu_set_syscall_msrs(vm_boot_vcpu(vm)))
		return kapsel_fail(error, error_len, -EIO,
				   "cannot restore the guest's syscall entry");
	m->syscall_entry = rec->syscall_entry;
	return 0;
}

/* Every vCPU's mode and space: vCPU 0's record first, which describes the
 * VM's spaces; the others must agree with it. */
static int load_records(struct kapsel_vm *vm, const struct vm_state_records *state, char *error,
			size_t error_len)
{
	struct vm_state_pv_mmu first, rec;
	memset(&first, 0, sizeof(first));
	bool seen[KAPSEL_MAX_VCPUS] = { false };
	bool have_first = false;
	size_t position = 0;
	const struct vm_state_stored_record *found;
	while ((found = vm_state_find(state, VM_STATE_VCPU_PV_MMU, &position))) {
		int err = check_record(vm, found, &rec, error, error_len);
		if (err)
			return err;
		bool is_first = !have_first;
		if (is_first && rec.vcpu != 0)
			return kapsel_fail(error, error_len, -EPROTO,
					   "the first saved PV MMU record is vCPU %u's, not vCPU 0's",
					   rec.vcpu);
		if (seen[rec.vcpu])
			return kapsel_fail(error, error_len, -EPROTO,
					   "the saved state has two PV MMU records for vCPU %u",
					   rec.vcpu);
		if (is_first) {
			first = rec;
			have_first = true;
			err = load_spaces(vm, state, &first, error, error_len);
			if (err)
				return err;
		} else if (rec.spaces_mask != first.spaces_mask ||
			   rec.syscall_entry != first.syscall_entry ||
			   rec.mapping_count != first.mapping_count) {
			return kapsel_fail(
				error, error_len, -EPROTO,
				"the saved PV MMU record of vCPU %u disagrees with vCPU 0's about the VM's address spaces; the state is damaged or forged",
				rec.vcpu);
		}
		seen[rec.vcpu] = true;
		struct pv_mmu_vcpu *v = &vm->vcpus[rec.vcpu].pv_mmu;
		v->current = rec.current;
		v->user_mode = rec.user_mode;
		v->kernel_stack = (struct pv_handler){ .stack_top = rec.kernel_stack_top,
						       .stack_bytes = rec.kernel_stack_bytes };
	}
	return 0;
}

static void clear_all(struct kapsel_vm *vm)
{
	pv_mmu_clear(&vm->pv_mmu);
	for (unsigned i = 0; i < KAPSEL_MAX_VCPUS; i++)
		pv_mmu_vcpu_clear(&vm->vcpus[i].pv_mmu);
}

int pv_mmu_load(struct kapsel_vm *vm, const struct vm_state_records *state, char *error,
		size_t error_len)
{
	clear_all(vm);
	const struct vm_state_stored_record *found =
		vm_state_find(state, VM_STATE_VCPU_PV_MMU, NULL);
	int err = 0;
	if (found)
		err = load_records(vm, state, error, error_len);
	else if (vm_state_find(state, VM_STATE_PV_MMU_MAPPINGS, NULL))
		err = kapsel_fail(error, error_len, -EPROTO,
				  "the saved state has PV MMU mappings but no PV MMU record");
	if (err) {
		clear_all(vm);
		return err;
	}
	/* CR3, TR and EFER for each restored mode, through the switch stub. */
	if (found)
		for (unsigned i = 0; i < vm->vcpu_count; i++)
			__atomic_store_n(&vm->vcpus[i].pv_mmu.reload_pending, 1, __ATOMIC_SEQ_CST);
	return 0;
}

void pv_mmu_state_print(const struct vm_state_records *state, FILE *out)
{
	const struct vm_state_stored_record *found;
	size_t position = 0;
	while ((found = vm_state_find(state, VM_STATE_VCPU_PV_MMU, &position))) {
		struct vm_state_pv_mmu rec;
		if (found->length_bytes != sizeof(rec))
			continue;
		memcpy(&rec, found->payload, sizeof(rec));
		if (rec.vcpu)
			fprintf(out,
				"  vcpu %u pv_mmu: current %u, %s mode; kernel stack top %#llx\n",
				rec.vcpu, rec.current, rec.user_mode ? "user" : "kernel",
				(unsigned long long)rec.kernel_stack_top);
		else
			fprintf(out,
				"  vcpu.pv_mmu: %u address space(s), %llu mapping(s); current %u, %s mode; syscall entry %#llx; kernel stack top %#llx\n",
				(unsigned)__builtin_popcountll(rec.spaces_mask),
				(unsigned long long)rec.mapping_count, rec.current,
				rec.user_mode ? "user" : "kernel",
				(unsigned long long)rec.syscall_entry,
				(unsigned long long)rec.kernel_stack_top);
	}
}
