/* Unit tests: device type names come from the devices' own ops, one for every ABI device type. */
#include <string.h>

#include "cunit_main.h"
#include "devices/device.h"
#include "devices/devices.h"

/* Every device type the ABI defines has a device with that type and a name. */
static void test_every_abi_type_named(void)
{
	for (uint32_t type = KAPSEL_DEV_CONSOLE_PV; type <= KAPSEL_DEV_RNG_PV; type++) {
		const char *name = devices_type_name(type);
		CU_ASSERT_PTR_NOT_NULL_FATAL(name);
		CU_ASSERT_STRING_NOT_EQUAL(name, "unknown");
	}
}

/* The name is the one the device prints in its counters and 'info'. */
static void test_names_are_the_devices_own(void)
{
	const struct kapsel_device_ops *ops[] = { &console_pv_ops, &uart16550_ops,  &dev_ata_ops,
						  &blk_pv_ops,	   &dev_ne2000_ops, &net_pv_ops,
						  &rng_pv_ops };
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		CU_ASSERT_STRING_EQUAL(devices_type_name(ops[i]->type), ops[i]->name);
	/* inspect used to say "block-pv" while the device says "blk-pv". */
	CU_ASSERT_STRING_EQUAL(devices_type_name(KAPSEL_DEV_BLOCK_PV), "blk-pv");
	CU_ASSERT_STRING_EQUAL(devices_type_name(KAPSEL_DEV_NET_PV), "net-pv");
}

/* A type from a hostile state file is just unknown. */
static void test_unknown_types(void)
{
	CU_ASSERT_STRING_EQUAL(devices_type_name(KAPSEL_DEV_NONE), "unknown");
	CU_ASSERT_STRING_EQUAL(devices_type_name(0xffff), "unknown");
	CU_ASSERT_STRING_EQUAL(devices_type_name(UINT32_MAX), "unknown");
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "every ABI device type has a name", test_every_abi_type_named },
		{ "names are the devices' own", test_names_are_the_devices_own },
		{ "unknown types", test_unknown_types },
	};
	return UNIT_RUN("device_names", tests);
}
