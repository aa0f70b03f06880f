/* Unit tests: PV MMU address spaces, op validation, table sharing, pool exhaustion and teardown. */
#include <stdlib.h>
#include <string.h>

#include "cunit_main.h"
#include "core/guest_memory.h"
#include "core/pv_mmu.h"
#include "core/x86_boot.h"

#define RAM_BYTES (8ull << 20)
#define POOL_GPA (4ull << 30)
#define VA(n) (KAPSEL_USER_VA_MIN + (uint64_t)(n)*4096u)

static struct guest_memory mem;
static struct pv_mmu *mmu;
static uint8_t *pool;

static void setup(void)
{
	CU_ASSERT_EQUAL_FATAL(guest_memory_create(&mem, RAM_BYTES, "pv-mmu-test"), 0);
	mem.guest_floor_gpa = KAPSEL_GPA_LOW_FREE;
	pool = calloc(KAPSEL_MMU_TABLE_PAGES, 4096);
	mmu = calloc(1, sizeof(*mmu));
	CU_ASSERT_PTR_NOT_NULL_FATAL(pool);
	CU_ASSERT_PTR_NOT_NULL_FATAL(mmu);
	pv_mmu_init(mmu, pool, POOL_GPA);
}

static void teardown(void)
{
	free(pool);
	free(mmu);
	guest_memory_destroy(&mem);
}

static int op(unsigned as, uint32_t kind, uint64_t va, uint64_t gpa, unsigned prot)
{
	struct kapsel_mmu_op o = { .va = va, .gpa = gpa, .op = kind, .prot = prot };
	return pv_mmu_apply(mmu, &mem, as, &o);
}

static void test_spaces(void)
{
	setup();
	CU_ASSERT_EQUAL(pv_mmu_pages_used(mmu), 0);
	int a = pv_mmu_space_create(mmu);
	int b = pv_mmu_space_create(mmu);
	CU_ASSERT_EQUAL(a, 1);
	CU_ASSERT_EQUAL(b, 2);
	CU_ASSERT_EQUAL(pv_mmu_pages_used(mmu), 4); /* two roots each */
	/* Ids run out at KAPSEL_AS_MAX - 1. */
	for (unsigned i = 3; i < KAPSEL_AS_MAX; i++)
		CU_ASSERT_EQUAL(pv_mmu_space_create(mmu), (int)i);
	CU_ASSERT_EQUAL(pv_mmu_space_create(mmu), -KAPSEL_ENOSPC);
	/* Destroy: bad ids, then a real one (id reused).  A space some vCPU
	 * runs on is refused by the hypercall, which sees every vCPU. */
	CU_ASSERT_EQUAL(pv_mmu_space_destroy(mmu, 0), -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(pv_mmu_space_destroy(mmu, KAPSEL_AS_MAX), -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(pv_mmu_space_destroy(mmu, 2), 0);
	CU_ASSERT_EQUAL(pv_mmu_space_destroy(mmu, 2), -KAPSEL_ENOENT);
	CU_ASSERT_EQUAL(pv_mmu_space_create(mmu), 2);
	teardown();
}

static void test_op_validation(void)
{
	setup();
	int as = pv_mmu_space_create(mmu);
	const uint64_t frame = 0x200000;
	/* Good. */
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(0), frame, KAPSEL_PROT_WRITE), 0);
	/* va: unaligned, below the user half (the kernel's identity map),
	 * at or past its end, non-canonical. */
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(0) + 8, frame, 0), -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, 0x200000, frame, 0), -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, KAPSEL_USER_VA_MIN - 4096, frame, 0),
			-KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, KAPSEL_USER_VA_END, frame, 0), -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, 0xffff800000000000ull, frame, 0), -KAPSEL_EINVAL);
	/* frames: unaligned, the hypervisor's pages, the shared pages, past
	 * RAM, the last page that would straddle the end, the pool itself. */
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(1), frame + 1, 0), -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(1), X86_GPA_PML4, 0), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(1), X86_GPA_GDT, 0), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(1), X86_GPA_TSS, 0), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(1), X86_GPA_USER_TSS, 0), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(1), KAPSEL_GPA_EVENT_PAGE, 0), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(1), KAPSEL_GPA_START_INFO, 0), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(1), RAM_BYTES, 0), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(1), POOL_GPA, 0), -KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(1), RAM_BYTES - 4096, 0), 0);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(1), KAPSEL_GPA_LOW_FREE, 0), 0);
	/* prot and kind. */
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(2), frame, 4), -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(op(as, 0, VA(2), frame, 0), -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(op(as, 4, VA(2), frame, 0), -KAPSEL_EINVAL);
	/* PROTECT of a hole; UNMAP of a hole is fine. */
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_PROTECT, VA(3), 0, 0), -KAPSEL_ENOENT);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_PROTECT, VA(1) + (1ull << 39), 0, 0), -KAPSEL_ENOENT);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_UNMAP, VA(3), 0, 0), 0);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_UNMAP, VA(3) + (5ull << 39), 0, 0), 0);
	teardown();
}

static void test_entries(void)
{
	setup();
	int as = pv_mmu_space_create(mmu);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(7), 0x300000, KAPSEL_PROT_WRITE), 0);
	uint64_t e = pv_mmu_lookup(mmu, as, VA(7));
	CU_ASSERT_EQUAL(e & 0x000ffffffffff000ull, 0x300000);
	CU_ASSERT(e & 1);	   /* present */
	CU_ASSERT(e & 2);	   /* writable */
	CU_ASSERT(e & 4);	   /* user */
	CU_ASSERT((e >> 63) == 1); /* no-execute without PROT_EXEC */
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_PROTECT, VA(7), 0, KAPSEL_PROT_EXEC), 0);
	e = pv_mmu_lookup(mmu, as, VA(7));
	CU_ASSERT_EQUAL(e & 0x000ffffffffff000ull, 0x300000);
	CU_ASSERT_FALSE(e & 2);
	CU_ASSERT_EQUAL(e >> 63, 0);
	/* MAP replaces. */
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(7), 0x301000, 0), 0);
	CU_ASSERT_EQUAL(pv_mmu_lookup(mmu, as, VA(7)) & 0x000ffffffffff000ull, 0x301000);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_UNMAP, VA(7), 0, 0), 0);
	CU_ASSERT_EQUAL(pv_mmu_lookup(mmu, as, VA(7)), 0);
	/* Another space does not see it. */
	int other = pv_mmu_space_create(mmu);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(9), 0x300000, 0), 0);
	CU_ASSERT_EQUAL(pv_mmu_lookup(mmu, other, VA(9)), 0);
	teardown();
}

/* The roots: user mode sees the system-only low map, kernel mode the
 * identity map, and both share the user half's tables. */
static void test_roots_and_cr3(void)
{
	setup();
	struct pv_mmu_vcpu vcpu, other;
	pv_mmu_vcpu_clear(&vcpu);
	pv_mmu_vcpu_clear(&other);
	CU_ASSERT_EQUAL(pv_mmu_cr3(mmu, &vcpu), X86_GPA_PML4);
	int as = pv_mmu_space_create(mmu);
	CU_ASSERT_EQUAL(op(as, KAPSEL_MMU_MAP, VA(0), 0x300000, 0), 0);
	vcpu.current = (unsigned)as;
	uint64_t kernel_cr3 = pv_mmu_cr3(mmu, &vcpu);
	vcpu.user_mode = true;
	uint64_t user_cr3 = pv_mmu_cr3(mmu, &vcpu);
	/* Each vCPU has its own mode: another one still on no space. */
	CU_ASSERT_EQUAL(pv_mmu_cr3(mmu, &other), X86_GPA_PML4);
	other.current = (unsigned)as;
	CU_ASSERT_EQUAL(pv_mmu_cr3(mmu, &other), kernel_cr3);
	CU_ASSERT_NOT_EQUAL(kernel_cr3, user_cr3);
	CU_ASSERT(kernel_cr3 >= POOL_GPA &&
		  kernel_cr3 < POOL_GPA + KAPSEL_MMU_TABLE_PAGES * 4096ull);
	CU_ASSERT(user_cr3 >= POOL_GPA && user_cr3 < POOL_GPA + KAPSEL_MMU_TABLE_PAGES * 4096ull);
	const uint64_t *user_root = (const uint64_t *)(pool + (user_cr3 - POOL_GPA));
	const uint64_t *kernel_root = (const uint64_t *)(pool + (kernel_cr3 - POOL_GPA));
	CU_ASSERT_EQUAL(user_root[0] & 0x000ffffffffff000ull, X86_GPA_SYS_PDPT);
	CU_ASSERT_FALSE(user_root[0] & 4); /* supervisor only */
	CU_ASSERT_EQUAL(kernel_root[0] & 0x000ffffffffff000ull, X86_GPA_PDPT);
	CU_ASSERT_EQUAL(user_root[1], kernel_root[1]);
	CU_ASSERT(user_root[1] & 1);
	for (unsigned i = 256; i < 512; i++)
		CU_ASSERT_EQUAL(user_root[i] | kernel_root[i], 0);
	teardown();
}

static void count_mapping(uint64_t va, uint64_t gpa, unsigned prot, void *arg)
{
	unsigned *n = arg;
	CU_ASSERT_EQUAL(gpa, 0x300000 + (va - KAPSEL_USER_VA_MIN) / (1ull << 30) % 256 * 4096);
	CU_ASSERT_EQUAL(prot, KAPSEL_PROT_WRITE);
	(*n)++;
}

/* Pages 1 GiB apart each need their own page directory and table: the
 * pool runs out with -ENOMEM, and destroying the space returns it all. */
static void test_pool_exhaustion_and_teardown(void)
{
	setup();
	int as = pv_mmu_space_create(mmu);
	unsigned mapped = 0;
	int err = 0;
	for (unsigned i = 0; i < KAPSEL_MMU_TABLE_PAGES && !err; i++) {
		err = op(as, KAPSEL_MMU_MAP, KAPSEL_USER_VA_MIN + (uint64_t)i * (1ull << 30),
			 0x300000 + (uint64_t)(i % 256) * 4096, KAPSEL_PROT_WRITE);
		if (!err)
			mapped++;
	}
	CU_ASSERT_EQUAL(err, -KAPSEL_ENOMEM);
	CU_ASSERT(mapped > KAPSEL_MMU_TABLE_PAGES / 3);
	CU_ASSERT(pv_mmu_pages_used(mmu) >= KAPSEL_MMU_TABLE_PAGES - 2);
	unsigned seen = 0;
	pv_mmu_each_mapping(mmu, (unsigned)as, count_mapping, &seen);
	CU_ASSERT_EQUAL(seen, mapped);
	/* Other spaces cannot be created while the pool is empty... */
	CU_ASSERT_EQUAL(pv_mmu_space_create(mmu), -KAPSEL_ENOMEM);
	/* ...and all of it comes back. */
	CU_ASSERT_EQUAL(pv_mmu_space_destroy(mmu, (uint64_t)as), 0);
	CU_ASSERT_EQUAL(pv_mmu_pages_used(mmu), 0);
	teardown();
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "address spaces: create, destroy, limits", test_spaces },
		{ "ops: every refused address and frame", test_op_validation },
		{ "entries: protection, NX, replace, unmap, isolation", test_entries },
		{ "roots: user and kernel views, CR3", test_roots_and_cr3 },
		{ "pool exhaustion and teardown", test_pool_exhaustion_and_teardown },
	};
	return unit_run("pv_mmu", tests, sizeof(tests) / sizeof(tests[0]));
}
