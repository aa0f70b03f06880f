/* Example guest: dereferences a bad pointer so the host's crash report can be tested. */
#include "kapsel_guest/runtime.h"

/* noinline keeps these frames in the backtrace the host prints. */
__attribute__((noinline)) static int read_through(volatile int *pointer)
{
	return *pointer;
}

__attribute__((noinline)) int fault_trigger(uint64_t address)
{
	return read_through((volatile int *)(uintptr_t)address) + 1;
}

int main(int argc, char **argv)
{
	uint64_t address = 0x10; /* page 0 is never mapped */
	for (int i = 1; i < argc; i++)
		kg_parse_u64(argv[i], &address);
	kg_printf("about to read 0x%llx\n", (unsigned long long)address);
	return fault_trigger(address);
}
