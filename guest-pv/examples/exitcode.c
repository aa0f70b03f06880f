/* Example guest: exits with the code given on its command line ("exitcode N"). */
#include "kapsel_guest/runtime.h"

int main(int argc, char **argv)
{
	uint64_t code = 0;
	for (int i = 1; i < argc; i++)
		if (kg_parse_u64(argv[i], &code) == 0)
			break;
	kg_printf("exiting with code %llu\n", (unsigned long long)code);
	return (int)code;
}
