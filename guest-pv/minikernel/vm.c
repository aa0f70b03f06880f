/* The minikernel's memory: per-process address spaces, image loading, demand-zero, copy-on-write, fork. */
#include "kernel.h"

#include "kapsel_guest/libc.h"
#include "kapsel_guest/mmu.h"
#include "kapsel_guest/runtime.h"

/*
 * Each process has a PV MMU address space (docs/abi.md §18) and a list of
 * the pages it maps (struct user_page): the hypervisor holds the page
 * tables, so this list is the kernel's only record.  The kernel never
 * dereferences a user pointer: it finds the page in the list and uses the
 * frame's guest-physical address, which kernel mode sees identity-mapped.
 * So a bad user pointer is an error code, never a kernel fault, and the
 * kernel can reach any process's memory, not only the current one's.
 */

/* The user programs' image (user.c), placed by minikernel.ld: text and
 * read-only data, then writable data, each page aligned. */
extern const uint8_t user_image_start[], user_data_start[], user_image_end[];

bool break_cow;
static int hardware_as[CPU_MAX]; /* what AS_SWITCH last made current, per vCPU */
static struct kapsel_mmu_op ops[PROC_PAGES_MAX];

void vm_switch_to(int as)
{
	unsigned cpu = this_cpu();
	if (as == hardware_as[cpu])
		return;
	int rc = kg_as_switch(as);
	if (rc != 0)
		kg_panic("AS_SWITCH(%d) refused: %d", as, rc);
	hardware_as[cpu] = as;
}

int vm_current_as(void)
{
	return hardware_as[this_cpu()];
}

static struct user_page *find_page(struct process *p, uint64_t va)
{
	for (unsigned i = 0; i < p->page_count; i++)
		if (p->pages[i].va == va)
			return &p->pages[i];
	return 0;
}

uint64_t vm_gpa_of(struct process *p, uint64_t va)
{
	struct user_page *page = find_page(p, va & ~(uint64_t)(PAGE_BYTES - 1));
	return page ? page->gpa + (va & (PAGE_BYTES - 1)) : 0;
}

/* Map a fresh or given frame at va in p (the frame's reference is p's). */
static int add_page(struct process *p, uint64_t va, uint64_t gpa, uint32_t prot)
{
	if (p->page_count == PROC_PAGES_MAX)
		return -USER_EFAULT;
	int rc = kg_mmu_map(p->as, va, gpa, prot);
	if (rc != 0) {
		kg_printf("kernel: MMU_UPDATE map 0x%llx for pid %d refused: %d\n",
			  (unsigned long long)va, p->pid, rc);
		return -USER_EFAULT;
	}
	p->pages[p->page_count++] = (struct user_page){ .va = va, .gpa = gpa, .prot = prot };
	return 0;
}

int vm_load_image(struct process *p)
{
	int as = kg_as_create();
	if (as < 0)
		return as;
	p->as = as;
	for (const uint8_t *src = user_image_start; src < user_image_end; src += PAGE_BYTES) {
		uint64_t frame = frame_alloc();
		if (!frame)
			return -USER_EAGAIN;
		memcpy((void *)(uintptr_t)frame, src, PAGE_BYTES);
		uint32_t prot = src < user_data_start ? KAPSEL_PROT_EXEC : KAPSEL_PROT_WRITE;
		uint64_t va = USER_IMAGE_VA + (uint64_t)(src - user_image_start);
		if (add_page(p, va, frame, prot) != 0) {
			frame_unref(frame);
			return -USER_EAGAIN;
		}
	}
	return 0;
}

static bool in_demand_zero(uint64_t va)
{
	return (va >= USER_HEAP_VA && va < USER_HEAP_END_VA) ||
	       (va >= USER_STACK_BOTTOM_VA && va < USER_STACK_TOP_VA);
}

/* A private copy of a shared page (or the page itself, writable, when p
 * is its last user). */
static bool break_cow_page(struct process *p, struct user_page *page)
{
	if (frame_refcount(page->gpa) == 1) {
		if (kg_mmu_protect(p->as, page->va, page->prot) != 0)
			return false;
		page->cow = 0;
		return true;
	}
	uint64_t copy = frame_alloc();
	if (!copy)
		return false;
	memcpy((void *)(uintptr_t)copy, (const void *)(uintptr_t)page->gpa, PAGE_BYTES);
	if (kg_mmu_map(p->as, page->va, copy, page->prot) != 0) {
		frame_unref(copy);
		return false;
	}
	frame_unref(page->gpa);
	page->gpa = copy;
	page->cow = 0;
	return true;
}

bool vm_handle_fault(struct process *p, uint64_t va, bool write, bool exec)
{
	va &= ~(uint64_t)(PAGE_BYTES - 1);
	if (va < KAPSEL_USER_VA_MIN || va >= KAPSEL_USER_VA_END)
		return false;
	struct user_page *page = find_page(p, va);
	if (!page) {
		if (exec || !in_demand_zero(va))
			return false;
		uint64_t frame = frame_alloc();
		if (!frame)
			return false;
		if (add_page(p, va, frame, KAPSEL_PROT_WRITE) != 0) {
			frame_unref(frame);
			return false;
		}
		return true;
	}
	if (write && page->cow && (page->prot & KAPSEL_PROT_WRITE))
		return break_cow_page(p, page);
	return false; /* a real protection violation */
}

/* The page of p holding va, made present (and private and writable if
 * write), for the kernel to access; 0 if p may not. */
static struct user_page *user_page_for(struct process *p, uint64_t va, bool write)
{
	uint64_t base = va & ~(uint64_t)(PAGE_BYTES - 1);
	struct user_page *page = find_page(p, base);
	if (!page) {
		if (!vm_handle_fault(p, base, write, false))
			return 0;
		page = find_page(p, base);
	}
	if (write && !(page->prot & KAPSEL_PROT_WRITE))
		return 0;
	if (write && page->cow && !break_cow_page(p, page))
		return 0;
	return page;
}

static bool user_range_ok(uint64_t va, size_t length)
{
	return va >= KAPSEL_USER_VA_MIN && va < KAPSEL_USER_VA_END &&
	       length <= KAPSEL_USER_VA_END - va;
}

int vm_copy_from_user(struct process *p, void *to, uint64_t va, size_t length)
{
	if (!user_range_ok(va, length))
		return -USER_EFAULT;
	uint8_t *out = to;
	while (length) {
		struct user_page *page = user_page_for(p, va, false);
		if (!page)
			return -USER_EFAULT;
		size_t offset = va & (PAGE_BYTES - 1), n = PAGE_BYTES - offset;
		if (n > length)
			n = length;
		memcpy(out, (const void *)(uintptr_t)(page->gpa + offset), n);
		out += n;
		va += n;
		length -= n;
	}
	return 0;
}

int vm_user_writable(struct process *p, uint64_t va, size_t length)
{
	if (!user_range_ok(va, length))
		return -USER_EFAULT;
	for (uint64_t at = va & ~(uint64_t)(PAGE_BYTES - 1); at < va + length; at += PAGE_BYTES)
		if (!user_page_for(p, at, true))
			return -USER_EFAULT;
	return 0;
}

int vm_copy_to_user(struct process *p, uint64_t va, const void *from, size_t length)
{
	/* Check the whole range first, so a refused copy writes nothing. */
	if (vm_user_writable(p, va, length) != 0)
		return -USER_EFAULT;
	const uint8_t *in = from;
	while (length) {
		struct user_page *page = find_page(p, va & ~(uint64_t)(PAGE_BYTES - 1));
		size_t offset = va & (PAGE_BYTES - 1), n = PAGE_BYTES - offset;
		if (n > length)
			n = length;
		memcpy((void *)(uintptr_t)(page->gpa + offset), in, n);
		in += n;
		va += n;
		length -= n;
	}
	return 0;
}

int vm_fork(struct process *parent, struct process *child)
{
	int as = kg_as_create();
	if (as < 0)
		return -USER_EAGAIN;
	child->as = as;
	/* The parent's writable pages become read-only (one batch), the
	 * child maps the same frames read-only (another batch); the first
	 * write on either side copies (break_cow_page). */
	unsigned n_parent = 0;
	for (unsigned i = 0; i < parent->page_count; i++) {
		struct user_page *page = &parent->pages[i];
		child->pages[i] = *page;
		frame_ref(page->gpa);
		if (!(page->prot & KAPSEL_PROT_WRITE) || break_cow)
			continue;
		if (!page->cow)
			ops[n_parent++] =
				(struct kapsel_mmu_op){ .va = page->va,
							.op = KAPSEL_MMU_PROTECT,
							.prot = page->prot & ~KAPSEL_PROT_WRITE };
		page->cow = 1;
		child->pages[i].cow = 1;
	}
	child->page_count = parent->page_count;
	if (kg_mmu_update(parent->as, ops, n_parent) != n_parent)
		kg_panic("fork: write-protecting pid %d's pages was refused", parent->pid);
	for (unsigned i = 0; i < child->page_count; i++) {
		struct user_page *page = &child->pages[i];
		ops[i] = (struct kapsel_mmu_op){ .va = page->va,
						 .gpa = page->gpa,
						 .op = KAPSEL_MMU_MAP,
						 .prot = page->cow ? page->prot & ~KAPSEL_PROT_WRITE
								   : page->prot };
	}
	if (kg_mmu_update(child->as, ops, child->page_count) != child->page_count)
		kg_panic("fork: mapping pid %d's pages was refused", child->pid);
	return 0;
}

void vm_release(struct process *p)
{
	for (unsigned i = 0; i < p->page_count; i++)
		frame_unref(p->pages[i].gpa);
	p->page_count = 0;
	if (!p->as)
		return;
	/* The current space cannot be destroyed: leave it first.  Another
	 * vCPU never has it: an idle vCPU leaves its space (sched.c). */
	if (vm_current_as() == p->as)
		vm_switch_to(0);
	int rc = kg_as_destroy(p->as);
	if (rc != 0)
		kg_panic("AS_DESTROY(%d) refused: %d", p->as, rc);
	p->as = 0;
}
