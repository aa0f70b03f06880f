/* Unit tests: hypercall table registration and dispatch. */
#include <errno.h>

#include "cunit_main.h"
#include "core/hypercall.h"

static int64_t handler_calls;
static uint64_t handler_last_arg;

static int64_t echo_handler(struct kapsel_vcpu *vcpu, const uint64_t args[])
{
	(void)vcpu;
	handler_calls++;
	handler_last_arg = args[4];
	return (int64_t)(args[0] + args[1]);
}

static void test_register_and_dispatch(void)
{
	struct hypercall_table table;
	hypercall_table_init(&table);
	CU_ASSERT_EQUAL(hypercall_register(&table, 5, "echo", echo_handler), 0);
	uint64_t args[HYPERCALL_ARG_COUNT] = { 40, 2, 0, 0, 99 };
	handler_calls = 0;
	CU_ASSERT_EQUAL(hypercall_dispatch(&table, NULL, 5, args), 42);
	CU_ASSERT_EQUAL(handler_calls, 1);
	CU_ASSERT_EQUAL(handler_last_arg, 99);
	CU_ASSERT_EQUAL(table.entries[5].calls, 1);
}

static void test_register_refuses_duplicates_and_range(void)
{
	struct hypercall_table table;
	hypercall_table_init(&table);
	CU_ASSERT_EQUAL(hypercall_register(&table, 3, "a", echo_handler), 0);
	CU_ASSERT_EQUAL(hypercall_register(&table, 3, "b", echo_handler), -EEXIST);
	CU_ASSERT_EQUAL(hypercall_register(&table, HYPERCALL_TABLE_SIZE, "c", echo_handler),
			-ERANGE);
	CU_ASSERT_EQUAL(hypercall_register(&table, UINT64_MAX, "d", echo_handler), -ERANGE);
	CU_ASSERT_EQUAL(hypercall_register(&table, 4, NULL, echo_handler), -EINVAL);
	CU_ASSERT_EQUAL(hypercall_register(&table, 4, "e", NULL), -EINVAL);
	/* The first registration is untouched. */
	CU_ASSERT_STRING_EQUAL(table.entries[3].name, "a");
}

static void test_unknown_numbers_get_enosys(void)
{
	struct hypercall_table table;
	hypercall_table_init(&table);
	uint64_t args[HYPERCALL_ARG_COUNT] = { 0 };
	CU_ASSERT_EQUAL(hypercall_dispatch(&table, NULL, 7, args), -KAPSEL_ENOSYS);
	CU_ASSERT_EQUAL(hypercall_dispatch(&table, NULL, HYPERCALL_TABLE_SIZE, args),
			-KAPSEL_ENOSYS);
	CU_ASSERT_EQUAL(hypercall_dispatch(&table, NULL, UINT64_MAX, args), -KAPSEL_ENOSYS);
	CU_ASSERT_EQUAL(table.unknown_calls, 3);
}

static void test_core_table_covers_abi(void)
{
	struct hypercall_table table;
	hypercall_table_init(&table);
	CU_ASSERT_EQUAL(hypercall_register_core(&table), 0);
	/* Every number below KAPSEL_HC_COUNT is implemented. */
	for (unsigned nr = 0; nr < KAPSEL_HC_COUNT; nr++)
		CU_ASSERT_PTR_NOT_NULL(table.entries[nr].fn);
	for (unsigned nr = KAPSEL_HC_COUNT; nr < HYPERCALL_TABLE_SIZE; nr++)
		CU_ASSERT_PTR_NULL(table.entries[nr].fn);
	/* Registering the core twice fails. */
	CU_ASSERT_NOT_EQUAL(hypercall_register_core(&table), 0);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "register and dispatch", test_register_and_dispatch },
		{ "duplicates and range refused", test_register_refuses_duplicates_and_range },
		{ "unknown numbers get -ENOSYS", test_unknown_numbers_get_enosys },
		{ "core table covers the ABI", test_core_table_covers_abi },
	};
	return UNIT_RUN("hypercall table", tests);
}
